/* Element type conversion between fp32, fp16 and bf16 (weights for mixed-
 * precision GEMMs, activations to bf16 for tensor-core GEMMs, captures).
 * Narrowing rounds to nearest even, as CUDA's __float2half/__float2bfloat16;
 * widening is exact; equal types copy.
 *
 * Design: grid-stride loop, 256 threads per block, one element per step
 * (the 2-byte types make vectorising depend on alignment; a bandwidth-bound
 * copy of this kind reaches most of peak with scalar coalesced accesses).
 * Limits: none beyond n < 2^62. */
#include "ss_cuda.cuh"

#define CV_THREADS 256

SS_KERNEL(ss_k_convert, (void *, dst), (int, ddt), (const void *, src), (int, sdt), (int64_t, n)) {
    int64_t stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        if (ddt == sdt && ddt != SS_CUDA_F32) {
            ((uint16_t *)dst)[i] = ((const uint16_t *)src)[i];
            continue;
        }
        float v = ss_load_weight(src, sdt, i);
        if (ddt == SS_CUDA_F32)
            ((float *)dst)[i] = v;
        else if (ddt == SS_CUDA_F16)
            ((__half *)dst)[i] = __float2half_rn(v);
        else
            ((__nv_bfloat16 *)dst)[i] = __float2bfloat16_rn(v);
    }
}

SS_EXTERN_C int ss_cuda_convert(void *dst, int dst_dtype, const void *src, int src_dtype, int64_t n,
                                cudaStream_t stream) {
    if (n <= 0) return 0;
    if (dst_dtype < SS_CUDA_F32 || dst_dtype > SS_CUDA_BF16 || src_dtype < SS_CUDA_F32 || src_dtype > SS_CUDA_BF16)
        return 1;
    SS_LAUNCH(ss_k_convert, ss_grid_1d(n, CV_THREADS), CV_THREADS, 0, stream, dst, dst_dtype, src, src_dtype, n);
    return SS_LAUNCH_STATUS();
}
