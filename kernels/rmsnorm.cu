/* RMSNorm (Llama): out = x / sqrt(mean(x^2) + eps) * w, all in fp32 (Hugging
 * Face casts the normalised row to the weight dtype before the product; we
 * keep fp32 activations throughout, so results match an fp32 evaluation).
 *
 * Design: as layernorm.cu: one warp per row, 4 rows per 128-thread block, no
 * shared memory; two sweeps (sum of squares, output), float4 when d % 4 == 0
 * and x/out are 16-byte aligned. Limits: rows < 2^31 * 4. */
#include "ss_cuda.cuh"

#define RMS_WARPS 4

SS_KERNEL(ss_k_rmsnorm, (float *, out), (const float *, x), (const void *, w), (int, wdt), (int64_t, rows),
          (int64_t, d), (float, eps), (int, vec)) {
    int lane = threadIdx.x & 31;
    int64_t row = (int64_t)blockIdx.x * RMS_WARPS + (threadIdx.x >> 5);
    if (row >= rows) return;
    const float *xr = x + row * d;
    float *o = out + row * d;
    int64_t d4 = vec ? d / 4 : 0;
    float ss = 0.f;
    for (int64_t i = lane; i < d4; i += 32) {
        float4 v = ((const float4 *)xr)[i];
        ss += (v.x * v.x + v.y * v.y) + (v.z * v.z + v.w * v.w);
    }
    for (int64_t i = d4 * 4 + lane; i < d; i += 32) ss += xr[i] * xr[i];
    float r = rsqrtf(ss_warp_sum(ss) / (float)d + eps);
    for (int64_t i = lane; i < d4; i += 32) {
        float4 v = ((const float4 *)xr)[i];
        int64_t e = 4 * i;
        ((float4 *)o)[i] = make_float4(v.x * r * ss_load_weight(w, wdt, e), v.y * r * ss_load_weight(w, wdt, e + 1),
                                       v.z * r * ss_load_weight(w, wdt, e + 2),
                                       v.w * r * ss_load_weight(w, wdt, e + 3));
    }
    for (int64_t i = d4 * 4 + lane; i < d; i += 32) o[i] = xr[i] * r * ss_load_weight(w, wdt, i);
}

SS_EXTERN_C int ss_cuda_rmsnorm(float *out, const float *x, const void *w, int wdtype, int64_t rows, int64_t d,
                                float eps, cudaStream_t stream) {
    if (rows <= 0 || d <= 0) return 0;
    if (wdtype < SS_CUDA_F32 || wdtype > SS_CUDA_BF16 || ss_cdiv(rows, RMS_WARPS) > 0x7fffffff) return 1;
    int vec = d % 4 == 0 && ss_aligned16(x) && ss_aligned16(out);
    SS_LAUNCH(ss_k_rmsnorm, ss_cdiv(rows, RMS_WARPS), 32 * RMS_WARPS, 0, stream, out, x, w, wdtype, rows, d, eps, vec);
    return SS_LAUNCH_STATUS();
}
