/* Forward mode of the norms (trace's attribution pass, src/model/jvp.c):
 * dy = J(x) dx per row of x [rows, d], for
 *   LayerNorm (rms 0): dy = w rstd (dx - mean(dx) - xhat mean(dx xhat)),
 *                      xhat = (x - mean) rstd, rstd = 1/sqrt(var + eps);
 *   RMSNorm   (rms 1): dy = w rstd (dx - x rstd^2 mean(dx x)),
 *                      rstd = 1/sqrt(mean(x^2) + eps).
 *
 * Design: one warp per row, 4 rows per 128-thread block (as layernorm.cu);
 * the row statistics in fp64 per lane and a fp64 shuffle tree (the CPU op
 * sums in fp64 too; a simple kernel, speed second: it runs once per block
 * half per sub-model). Every element written once; deterministic. dy must
 * not overlap dx or x. Limits: rows < 2^31 * 4. */
#include "ss_cuda.cuh"

#define NJ_WARPS 4

SS_DEV double nj_warp_sum(double v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(SS_FULL_MASK, v, o);
    return v;
}

SS_KERNEL(ss_k_norm_jvp, (float *, dy), (const float *, dx), (const float *, x), (const float *, w), (int64_t, rows),
          (int64_t, d), (float, eps), (int, rms)) {
    const int lane = threadIdx.x & 31;
    const int64_t row = (int64_t)blockIdx.x * NJ_WARPS + (threadIdx.x >> 5);
    if (row >= rows) return;
    const float *xr = x + row * d, *tr = dx + row * d;
    float *o = dy + row * d;
    if (rms) {
        double ss = 0, gx = 0;
        for (int64_t i = lane; i < d; i += 32) ss += (double)xr[i] * xr[i], gx += (double)tr[i] * xr[i];
        ss = nj_warp_sum(ss);
        gx = nj_warp_sum(gx);
        const double rstd = 1.0 / sqrt(ss / (double)d + (double)eps), k = rstd * rstd * gx / (double)d;
        for (int64_t i = lane; i < d; i += 32) o[i] = (float)((double)w[i] * rstd * ((double)tr[i] - xr[i] * k));
        return;
    }
    double s = 0;
    for (int64_t i = lane; i < d; i += 32) s += xr[i];
    const double mean = nj_warp_sum(s) / (double)d;
    double v = 0;
    for (int64_t i = lane; i < d; i += 32) v += (xr[i] - mean) * (xr[i] - mean);
    const double rstd = 1.0 / sqrt(nj_warp_sum(v) / (double)d + (double)eps);
    double mg = 0, mgx = 0;
    for (int64_t i = lane; i < d; i += 32) mg += tr[i], mgx += (double)tr[i] * (xr[i] - mean) * rstd;
    mg = nj_warp_sum(mg) / (double)d;
    mgx = nj_warp_sum(mgx) / (double)d;
    for (int64_t i = lane; i < d; i += 32)
        o[i] = (float)((double)w[i] * rstd * ((double)tr[i] - mg - (xr[i] - mean) * rstd * mgx));
}

SS_EXTERN_C int ss_cuda_norm_jvp(float *dy, const float *dx, const float *x, const float *w, int64_t rows, int64_t d,
                                 float eps, int rms, cudaStream_t stream) {
    if (rows <= 0 || d <= 0) return 0;
    if (ss_cdiv(rows, NJ_WARPS) > 0x7fffffff) return 1;
    SS_LAUNCH(ss_k_norm_jvp, ss_cdiv(rows, NJ_WARPS), 32 * NJ_WARPS, 0, stream, dy, dx, x, w, rows, d, eps, rms);
    return SS_LAUNCH_STATUS();
}
