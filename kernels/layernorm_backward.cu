/* LayerNorm backward: for y = (x - mean) rstd w + b (rstd = 1/sqrt(var +
 * eps)), given dy: dx += rstd (g - mean(g) - xhat mean(g xhat)) with
 * g = dy w and xhat = (x - mean) rstd; dw += sum_r dy xhat, db += sum_r dy.
 *
 * Design: two kernels, both deterministic (no atomics).
 *  1. Rows: one warp per row, 4 rows per 128-thread block, as the forward
 *     kernel (layernorm.cu): the two-pass mean and variance, then one sweep
 *     for sum(g) and sum(g xhat) (fp32 per lane, shuffle tree), then the
 *     read-modify-write of dx. When dw/db are wanted it stores the row's
 *     (mean, rstd) in the workspace.
 *  2. Columns (only with dw or db): a block owns 32 columns and all rows,
 *     8 warps striding over the rows (coalesced 32-float reads), xhat
 *     recomputed from the stored (mean, rstd); the 8 partials of a column
 *     are added in warp order. Summation order depends only on the shape.
 * The row sweeps after the first hit L1/L2. Limits: rows < 2^31 * 4,
 * d/32 < 2^31; dx must not overlap dy or x (dx NULL: only dw/db). */
#include "ss_cuda.cuh"

#define LNB_WARPS 4
#define LNB_COLROWS 8

SS_KERNEL(ss_k_layernorm_bwd_rows, (float *, dx), (float *, stats), (const float *, dy), (const float *, x),
          (const float *, w), (int64_t, rows), (int64_t, d), (float, eps)) {
    int lane = threadIdx.x & 31;
    int64_t row = (int64_t)blockIdx.x * LNB_WARPS + (threadIdx.x >> 5);
    if (row >= rows) return;
    const float *xr = x + row * d, *gr = dy + row * d;
    float s = 0.f;
    for (int64_t i = lane; i < d; i += 32) s += xr[i];
    const float mean = ss_warp_sum(s) / (float)d;
    float ss = 0.f;
    for (int64_t i = lane; i < d; i += 32) {
        float a = xr[i] - mean;
        ss += a * a;
    }
    const float rstd = rsqrtf(ss_warp_sum(ss) / (float)d + eps);
    float sg = 0.f, sgx = 0.f;
    for (int64_t i = lane; i < d; i += 32) {
        float g = gr[i] * w[i];
        sg += g;
        sgx += g * (xr[i] - mean) * rstd;
    }
    const float mg = ss_warp_sum(sg) / (float)d, mgx = ss_warp_sum(sgx) / (float)d;
    if (dx) {
        float *o = dx + row * d;
        for (int64_t i = lane; i < d; i += 32) {
            float xh = (xr[i] - mean) * rstd;
            o[i] += rstd * (gr[i] * w[i] - mg - xh * mgx);
        }
    }
    if (stats && lane == 0) {
        stats[2 * row] = mean;
        stats[2 * row + 1] = rstd;
    }
}

SS_KERNEL(ss_k_layernorm_bwd_cols, (float *, dw), (float *, db), (const float *, stats), (const float *, dy),
          (const float *, x), (int64_t, rows), (int64_t, d)) {
    __shared__ float pw[LNB_COLROWS][32], pb[LNB_COLROWS][32];
    const int tx = threadIdx.x, ty = threadIdx.y;
    const int64_t c = (int64_t)blockIdx.x * 32 + tx;
    float sw = 0.f, sb = 0.f;
    if (c < d)
        for (int64_t r = ty; r < rows; r += LNB_COLROWS) {
            float g = dy[r * d + c];
            sw += g * (x[r * d + c] - stats[2 * r]) * stats[2 * r + 1];
            sb += g;
        }
    pw[ty][tx] = sw;
    pb[ty][tx] = sb;
    __syncthreads();
    if (ty == 0 && c < d) {
        float tw = pw[0][tx], tb = pb[0][tx];
        for (int i = 1; i < LNB_COLROWS; i++) tw += pw[i][tx], tb += pb[i][tx];
        if (dw) dw[c] += tw;
        if (db) db[c] += tb;
    }
}

SS_EXTERN_C int64_t ss_cuda_layernorm_backward_ws(int64_t rows) {
    return rows <= 0 ? 0 : rows > INT64_MAX / 2 ? -1 : 2 * rows;
}

SS_EXTERN_C int ss_cuda_layernorm_backward(float *dx, float *dw, float *db, const float *dy, const float *x,
                                           const float *w, int64_t rows, int64_t d, float eps, float *ws,
                                           cudaStream_t stream) {
    if (rows <= 0 || d <= 0) return 0;
    int cols = dw || db;
    if ((cols && !ws) || ss_cdiv(rows, LNB_WARPS) > 0x7fffffff || ss_cdiv(d, 32) > 0x7fffffff) return 1;
    SS_LAUNCH(ss_k_layernorm_bwd_rows, ss_cdiv(rows, LNB_WARPS), 32 * LNB_WARPS, 0, stream, dx, cols ? ws : NULL, dy,
              x, w, rows, d, eps);
    int st = SS_LAUNCH_STATUS();
    if (st || !cols) return st;
    SS_LAUNCH(ss_k_layernorm_bwd_cols, ss_cdiv(d, 32), SS_DIM3(32, LNB_COLROWS, 1), 0, stream, dw, db, ws, dy, x, rows,
              d);
    return SS_LAUNCH_STATUS();
}
