/* RMSNorm (Llama): out = x / sqrt(mean(x^2) + eps) * w, all in fp32 (Hugging
 * Face casts the normalised row to the weight dtype before the product; we
 * keep fp32 activations throughout, so results match an fp32 evaluation).
 *
 * Design: as layernorm.cu: one warp per row, 4 rows per 128-thread block, no
 * shared memory; two sweeps (sum of squares, output), float4 when d % 4 == 0
 * and x/out are 16-byte aligned. Limits: rows < 2^31 * 4. Rows that fit in
 * registers (d % 4 == 0, aligned, d <= 4 * RMS_V * 1024) take
 * ss_k_rmsnorm_reg: a block per row, read from memory once (layernorm.cu).
 * ss_cuda_rmsnorm_to writes fp16 or bf16, as ss_cuda_layernorm_to does. */
#include "ss_cuda.cuh"

#define RMS_WARPS 4

SS_KERNEL(ss_k_rmsnorm, (void *, out), (int, odt), (const float *, x), (const void *, w), (int, wdt),
          (int64_t, rows), (int64_t, d), (float, eps), (int, vec)) {
    int lane = threadIdx.x & 31;
    int64_t row = (int64_t)blockIdx.x * RMS_WARPS + (threadIdx.x >> 5);
    if (row >= rows) return;
    const float *xr = x + row * d;
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
        ss_store_act4(out, odt, row * (d / 4) + i,
                      make_float4(v.x * r * ss_load_weight(w, wdt, e), v.y * r * ss_load_weight(w, wdt, e + 1),
                                  v.z * r * ss_load_weight(w, wdt, e + 2), v.w * r * ss_load_weight(w, wdt, e + 3)));
    }
    for (int64_t i = d4 * 4 + lane; i < d; i += 32) ss_store_act(out, odt, row * d + i, xr[i] * r * ss_load_weight(w, wdt, i));
}

#define RMS_V 4

SS_KERNEL(ss_k_rmsnorm_reg, (void *, out), (int, odt), (const float *, x), (const void *, w), (int, wdt),
          (int64_t, d), (float, eps)) {
    __shared__ float red[32];
    const float4 *xr = (const float4 *)(x + (int64_t)blockIdx.x * d);
    const int64_t d4 = d / 4;
    const int t = threadIdx.x, T = blockDim.x;
    float4 v[RMS_V];
    float ss = 0.f;
    SS_UNROLL
    for (int k = 0; k < RMS_V; k++) {
        const int64_t i = t + (int64_t)k * T;
        v[k] = i < d4 ? xr[i] : make_float4(0.f, 0.f, 0.f, 0.f);
        ss += (v[k].x * v[k].x + v[k].y * v[k].y) + (v[k].z * v[k].z + v[k].w * v[k].w);
    }
    const float r = rsqrtf(ss_block_sum(ss, red) / (float)d + eps);
    const int w4 = ss_weight_vec4(w, wdt);
    SS_UNROLL
    for (int k = 0; k < RMS_V; k++) {
        const int64_t i = t + (int64_t)k * T;
        if (i < d4) {
            const float4 g = ss_load_weight4(w, wdt, 4 * i, w4);
            ss_store_act4(out, odt, (int64_t)blockIdx.x * d4 + i,
                          make_float4(v[k].x * r * g.x, v[k].y * r * g.y, v[k].z * r * g.z, v[k].w * r * g.w));
        }
    }
}

SS_EXTERN_C int ss_cuda_rmsnorm_to(void *out, int out_dtype, const float *x, const void *w, int wdtype, int64_t rows,
                                   int64_t d, float eps, cudaStream_t stream) {
    if (rows <= 0 || d <= 0) return 0;
    if (wdtype < SS_CUDA_F32 || wdtype > SS_CUDA_BF16 || out_dtype < SS_CUDA_F32 || out_dtype > SS_CUDA_BF16 ||
        ss_cdiv(rows, RMS_WARPS) > 0x7fffffff)
        return 1;
    int vec = d % 4 == 0 && ss_aligned16(x) && ss_aligned16(out);
    if (vec && d / 4 <= 1024 * RMS_V && rows <= 0x7fffffff) {
        const int threads = (int)(ss_cdiv(ss_cdiv(d / 4, RMS_V), 32) * 32);
        SS_LAUNCH(ss_k_rmsnorm_reg, rows, threads, 0, stream, out, out_dtype, x, w, wdtype, d, eps);
        return SS_LAUNCH_STATUS();
    }
    SS_LAUNCH(ss_k_rmsnorm, ss_cdiv(rows, RMS_WARPS), 32 * RMS_WARPS, 0, stream, out, out_dtype, x, w, wdtype, rows, d,
              eps, vec);
    return SS_LAUNCH_STATUS();
}

SS_EXTERN_C int ss_cuda_rmsnorm(float *out, const float *x, const void *w, int wdtype, int64_t rows, int64_t d,
                                float eps, cudaStream_t stream) {
    return ss_cuda_rmsnorm_to(out, SS_CUDA_F32, x, w, wdtype, rows, d, eps, stream);
}
