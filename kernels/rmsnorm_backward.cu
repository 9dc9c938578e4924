/* RMSNorm backward: for y = x rstd w with rstd = 1/sqrt(mean(x^2) + eps),
 * given dy: dx += rstd (g - x rstd^2 mean(g x)) with g = dy w; and, when dw
 * is non-NULL, dw[c] += sum_r dy x rstd.
 *
 * Design: layernorm_backward.cu's, two kernels, deterministic (no atomics):
 *  1. Rows: one warp per row, 4 rows per 128-thread block: one sweep for
 *     sum(x^2) and sum(g x) (fp32 per lane, shuffle tree), then the
 *     read-modify-write of dx. When dw is wanted it stores the row's rstd
 *     in the workspace.
 *  2. Columns (only with dw): a block owns 32 columns and all rows, 8 warps
 *     striding over the rows (coalesced 32-float reads), the 8 partials of
 *     a column added in warp order. Summation order depends only on the
 *     shape.
 * Limits: rows < 2^31 * 4, d/32 < 2^31; dx must not overlap dy or x (dx
 * NULL: only dw). */
#include "ss_cuda.cuh"

#define RMSB_WARPS 4
#define RMSB_COLROWS 8

SS_KERNEL(ss_k_rmsnorm_bwd_rows, (float *, dx), (float *, rstd_out), (const float *, dy), (const float *, x),
          (const float *, w), (int64_t, rows), (int64_t, d), (float, eps)) {
    const int lane = threadIdx.x & 31;
    const int64_t row = (int64_t)blockIdx.x * RMSB_WARPS + (threadIdx.x >> 5);
    if (row >= rows) return;
    const float *xr = x + row * d, *gr = dy + row * d;
    float ss = 0.f, sgx = 0.f;
    for (int64_t i = lane; i < d; i += 32) {
        const float xv = xr[i];
        ss += xv * xv;
        sgx += gr[i] * w[i] * xv;
    }
    const float rstd = rsqrtf(ss_warp_sum(ss) / (float)d + eps);
    const float k = rstd * rstd * (ss_warp_sum(sgx) / (float)d);
    if (dx) {
        float *o = dx + row * d;
        for (int64_t i = lane; i < d; i += 32) o[i] += rstd * (gr[i] * w[i] - xr[i] * k);
    }
    if (rstd_out && lane == 0) rstd_out[row] = rstd;
}

SS_KERNEL(ss_k_rmsnorm_bwd_cols, (float *, dw), (const float *, rstd), (const float *, dy), (const float *, x),
          (int64_t, rows), (int64_t, d)) {
    __shared__ float pw[RMSB_COLROWS][32];
    const int tx = threadIdx.x, ty = threadIdx.y;
    const int64_t c = (int64_t)blockIdx.x * 32 + tx;
    float sw = 0.f;
    if (c < d)
        for (int64_t r = ty; r < rows; r += RMSB_COLROWS) sw += dy[r * d + c] * x[r * d + c] * rstd[r];
    pw[ty][tx] = sw;
    __syncthreads();
    if (ty == 0 && c < d) {
        float t = pw[0][tx];
        for (int i = 1; i < RMSB_COLROWS; i++) t += pw[i][tx];
        dw[c] += t;
    }
}

SS_EXTERN_C int64_t ss_cuda_rmsnorm_backward_ws(int64_t rows) { return rows > 0 ? rows : 0; }

SS_EXTERN_C int ss_cuda_rmsnorm_backward(float *dx, float *dw, const float *dy, const float *x, const float *w,
                                         int64_t rows, int64_t d, float eps, float *ws, cudaStream_t stream) {
    if (rows <= 0 || d <= 0) return 0;
    if ((dw && !ws) || ss_cdiv(rows, RMSB_WARPS) > 0x7fffffff || ss_cdiv(d, 32) > 0x7fffffff) return 1;
    SS_LAUNCH(ss_k_rmsnorm_bwd_rows, ss_cdiv(rows, RMSB_WARPS), 32 * RMSB_WARPS, 0, stream, dx, dw ? ws : NULL, dy, x,
              w, rows, d, eps);
    int st = SS_LAUNCH_STATUS();
    if (st || !dw) return st;
    SS_LAUNCH(ss_k_rmsnorm_bwd_cols, ss_cdiv(d, 32), SS_DIM3(32, RMSB_COLROWS, 1), 0, stream, dw, ws, dy, x, rows, d);
    return SS_LAUNCH_STATUS();
}
