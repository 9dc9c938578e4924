/* Chan's merge of one batch's statistics into a running total, on the
 * device, so that collect's float64 state (mean [d], co-moments [d,d]) stays
 * in GPU memory for a whole round of batches instead of travelling to the
 * host after every batch (d = 3072: 75 MB of fp64 and a host loop over 4.7M
 * entries, per site, per batch; d = 16384: 2 GiB).
 *
 * The batch comes as cov_lower / Ssyrk leave it: its exact mean mean_b
 * (fp64, ss_cuda_colmean), the fp32 mean m32 it was centred on, and the
 * products about m32, C (fp32, lower triangle). The arithmetic is the
 * host's (cuda_backend.c's moments_chunk, then ss_moments_add_partial):
 *   e_i = mean_b_i - m32_i, the batch co-moment B_ij = C_ij - nb e_i e_j;
 *   with na rows so far (n = na + nb, fb = nb / n), delta = mean_b - mean_a,
 *   M2_ij = (M2_ij + B_ij) + na fb delta_i delta_j, mean_a += fb delta;
 *   and with na = 0: M2 = B, mean_a = mean_b.
 * Only the lower triangle (j <= i) of M2 is read or written, like C's.
 *
 * Design: ss_k_mm_delta (one thread per unit) writes e and delta into ws
 * [2d] and then updates the mean, so that the second kernel reads the old
 * mean's delta and not a half-updated mean; ss_k_mm_m2: 32 x 32 tiles of
 * the lower triangle, one block of 32 x 8 threads per tile on or below the
 * diagonal (decoded from the linear block index), each thread 4 rows of a
 * column, so a warp reads 32 consecutive j of one row of C and M2
 * (coalesced). fp64 throughout except C. Limits: d^2 < 2^62, tiles < 2^31. */
#include "ss_cuda.cuh"

#define MM_T 32
#define MM_ROWS 8

SS_KERNEL(ss_k_mm_delta, (double *, mean_a), (double *, ws), (const double *, mean_b), (const float *, m32),
          (int64_t, d), (double, fb), (int, first)) {
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= d) return;
    const double mb = mean_b[i], delta = first ? 0.0 : mb - mean_a[i];
    ws[i] = delta;
    ws[d + i] = mb - (double)m32[i];
    mean_a[i] = first ? mb : mean_a[i] + delta * fb;
}

SS_KERNEL(ss_k_mm_m2, (double *, m2), (int64_t, ldm), (const float *, c), (int64_t, ldc), (const double *, ws),
          (int64_t, d), (double, nb), (double, alpha), (int, first)) {
    const int64_t b = blockIdx.x;
    int64_t ti = (int64_t)((sqrt(8.0 * (double)b + 1.0) - 1.0) * 0.5);
    while (ti * (ti + 1) / 2 > b) ti--;
    while ((ti + 1) * (ti + 2) / 2 <= b) ti++;
    const int64_t tj = b - ti * (ti + 1) / 2;
    const int64_t j = tj * MM_T + threadIdx.x;
    if (j >= d) return;
    const double *delta = ws, *e = ws + d;
    const double dj = delta[j], ej = e[j];
    for (int r = threadIdx.y; r < MM_T; r += MM_ROWS) {
        const int64_t i = ti * MM_T + r;
        if (i >= d || j > i) continue;
        const double bij = (double)c[i * ldc + j] - nb * e[i] * ej;
        double *dst = m2 + i * ldm + j;
        *dst = first ? bij : (*dst + bij) + alpha * delta[i] * dj;
    }
}

SS_EXTERN_C int ss_cuda_moments_merge(double *mean_a, double *m2, int64_t ldm, const double *mean_b, const float *m32,
                                      const float *c, int64_t ldc, int64_t d, int64_t na, int64_t nb, double *ws,
                                      cudaStream_t stream) {
    if (d <= 0 || nb <= 0) return 0;
    if (na < 0 || !mean_a || !mean_b || !m32 || !ws || (m2 && (!c || ldm < d || ldc < d))) return 1;
    const int64_t t = ss_cdiv(d, MM_T), tiles = t * (t + 1) / 2;
    if (tiles > 0x7fffffff) return 1;
    const double n = (double)na + (double)nb, fb = (double)nb / n;
    SS_LAUNCH(ss_k_mm_delta, ss_cdiv(d, 256), 256, 0, stream, mean_a, ws, mean_b, m32, d, fb, na == 0);
    if (m2)
        SS_LAUNCH(ss_k_mm_m2, tiles, SS_DIM3(MM_T, MM_ROWS, 1), 0, stream, m2, ldm, c, ldc, ws, d, (double)nb,
                  (double)na * fb, na == 0);
    return SS_LAUNCH_STATUS();
}
