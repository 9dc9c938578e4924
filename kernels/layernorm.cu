/* LayerNorm over the last dimension: out = (x - mean)/sqrt(var + eps)*w + b.
 *
 * Design: one warp per row, 4 rows (128 threads) per block, no shared memory
 * and no __syncthreads, so a warp whose row is past the end simply returns.
 * Three sweeps over the row, as the fp32 reference does: the sum (mean),
 * the sum of squared deviations from that mean (a true two-pass variance, so
 * a large common offset costs no precision), then the normalised output.
 * The second and third sweeps hit L1/L2 (a 768..8192-float row per warp), so
 * DRAM traffic is one read and one write. float4 loads/stores when d % 4 == 0
 * and x/out are 16-byte aligned; fp32 accumulation per lane then a shuffle
 * tree; weights (fp32/fp16/bf16) read scalar, they stay cache resident.
 * Limits: rows < 2^31 * 4; b may be NULL. */
#include "ss_cuda.cuh"

#define LN_WARPS 4

SS_KERNEL(ss_k_layernorm, (float *, out), (const float *, x), (const void *, w), (const void *, b), (int, wdt),
          (int64_t, rows), (int64_t, d), (float, eps), (int, vec)) {
    int lane = threadIdx.x & 31;
    int64_t row = (int64_t)blockIdx.x * LN_WARPS + (threadIdx.x >> 5);
    if (row >= rows) return;
    const float *xr = x + row * d;
    float *o = out + row * d;
    int64_t d4 = vec ? d / 4 : 0;
    float s = 0.f;
    for (int64_t i = lane; i < d4; i += 32) {
        float4 v = ((const float4 *)xr)[i];
        s += (v.x + v.y) + (v.z + v.w);
    }
    for (int64_t i = d4 * 4 + lane; i < d; i += 32) s += xr[i];
    float mean = ss_warp_sum(s) / (float)d;
    float ss = 0.f;
    for (int64_t i = lane; i < d4; i += 32) {
        float4 v = ((const float4 *)xr)[i];
        float a0 = v.x - mean, a1 = v.y - mean, a2 = v.z - mean, a3 = v.w - mean;
        ss += (a0 * a0 + a1 * a1) + (a2 * a2 + a3 * a3);
    }
    for (int64_t i = d4 * 4 + lane; i < d; i += 32) {
        float a0 = xr[i] - mean;
        ss += a0 * a0;
    }
    float rstd = rsqrtf(ss_warp_sum(ss) / (float)d + eps);
    for (int64_t i = lane; i < d4; i += 32) {
        float4 v = ((const float4 *)xr)[i];
        int64_t e = 4 * i;
        float4 r;
        r.x = (v.x - mean) * rstd * ss_load_weight(w, wdt, e) + (b ? ss_load_weight(b, wdt, e) : 0.f);
        r.y = (v.y - mean) * rstd * ss_load_weight(w, wdt, e + 1) + (b ? ss_load_weight(b, wdt, e + 1) : 0.f);
        r.z = (v.z - mean) * rstd * ss_load_weight(w, wdt, e + 2) + (b ? ss_load_weight(b, wdt, e + 2) : 0.f);
        r.w = (v.w - mean) * rstd * ss_load_weight(w, wdt, e + 3) + (b ? ss_load_weight(b, wdt, e + 3) : 0.f);
        ((float4 *)o)[i] = r;
    }
    for (int64_t i = d4 * 4 + lane; i < d; i += 32)
        o[i] = (xr[i] - mean) * rstd * ss_load_weight(w, wdt, i) + (b ? ss_load_weight(b, wdt, i) : 0.f);
}

SS_EXTERN_C int ss_cuda_layernorm(float *out, const float *x, const void *w, const void *b, int wdtype, int64_t rows,
                                  int64_t d, float eps, cudaStream_t stream) {
    if (rows <= 0 || d <= 0) return 0;
    if (wdtype < SS_CUDA_F32 || wdtype > SS_CUDA_BF16 || ss_cdiv(rows, LN_WARPS) > 0x7fffffff) return 1;
    int vec = d % 4 == 0 && ss_aligned16(x) && ss_aligned16(out);
    SS_LAUNCH(ss_k_layernorm, ss_cdiv(rows, LN_WARPS), 32 * LN_WARPS, 0, stream, out, x, w, b, wdtype, rows, d, eps,
              vec);
    return SS_LAUNCH_STATUS();
}
