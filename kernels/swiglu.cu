/* SwiGLU (Llama's MLP activation): out[r,c] = silu(g) * u with g = gu[r,c]
 * (the gate projection) and u = gu[r,dm+c] (the up projection), for gu
 * [rows, 2*dm] and out [rows, dm]; silu(g) = g / (1 + exp(-g)), evaluated
 * exactly as the CPU op does (fp32, precise expf; g -> -inf gives -0).
 *
 * Design: elementwise; 2D grid: x over column chunks of 256 threads, y over
 * rows (striding by gridDim.y when rows > 65535), so there is no division
 * per element and a warp reads 32 consecutive gate and up values. Plain
 * fp32 loads (2*dm is rarely the point of a float4 path: the op is a
 * fraction of the matrix products around it). Deterministic. out must not
 * overlap gu. Limits: dm < 2^31 * 256.
 *
 * ss_cuda_swiglu_16 writes the same fp32 value rounded to fp16 or bf16 (to
 * nearest even, as ss_cuda_convert rounds), for a down projection with
 * 16-bit weights that would round it so anyway (the backend's mlp_add);
 * ss_cuda_swiglu_16from16 also reads gu in that 16-bit type (the gate|up
 * product's 16-bit output, SUBSCOPE_GU16), widened to fp32 exactly. */
#include "ss_cuda.cuh"

#define SWIGLU_THREADS 256

SS_DEV float ss_swiglu_of(float g, float u) { return g / (1.0f + expf(-g)) * u; }

SS_DEV float ss_swiglu_at(const float *gu, int64_t r, int64_t c, int64_t dm) {
    return ss_swiglu_of(gu[r * 2 * dm + c], gu[r * 2 * dm + dm + c]);
}

SS_KERNEL(ss_k_swiglu, (float *, out), (const float *, gu), (int64_t, rows), (int64_t, dm)) {
    const int64_t c = (int64_t)blockIdx.x * SWIGLU_THREADS + threadIdx.x;
    if (c >= dm) return;
    for (int64_t r = blockIdx.y; r < rows; r += gridDim.y) out[r * dm + c] = ss_swiglu_at(gu, r, c, dm);
}

SS_KERNEL(ss_k_swiglu16, (void *, out), (int, odt), (const float *, gu), (int64_t, rows), (int64_t, dm)) {
    const int64_t c = (int64_t)blockIdx.x * SWIGLU_THREADS + threadIdx.x;
    if (c >= dm) return;
    for (int64_t r = blockIdx.y; r < rows; r += gridDim.y) ss_store_act(out, odt, r * dm + c, ss_swiglu_at(gu, r, c, dm));
}

SS_KERNEL(ss_k_swiglu16_16, (void *, out), (int, dt), (const void *, gu), (int64_t, rows), (int64_t, dm)) {
    const int64_t c = (int64_t)blockIdx.x * SWIGLU_THREADS + threadIdx.x;
    if (c >= dm) return;
    for (int64_t r = blockIdx.y; r < rows; r += gridDim.y)
        ss_store_act(out, dt, r * dm + c,
                     ss_swiglu_of(ss_load_weight(gu, dt, r * 2 * dm + c), ss_load_weight(gu, dt, r * 2 * dm + dm + c)));
}

SS_EXTERN_C int ss_cuda_swiglu_16from16(void *out, int dtype, const void *gu, int64_t rows, int64_t dm,
                                        cudaStream_t stream) {
    if (rows <= 0 || dm <= 0) return 0;
    if ((dtype != SS_CUDA_F16 && dtype != SS_CUDA_BF16) || ss_cdiv(dm, SWIGLU_THREADS) > 0x7fffffff) return 1;
    SS_LAUNCH(ss_k_swiglu16_16, SS_DIM3(ss_cdiv(dm, SWIGLU_THREADS), SS_MIN(rows, (int64_t)65535), 1), SWIGLU_THREADS,
              0, stream, out, dtype, gu, rows, dm);
    return SS_LAUNCH_STATUS();
}

SS_EXTERN_C int ss_cuda_swiglu_16(void *out, int out_dtype, const float *gu, int64_t rows, int64_t dm,
                                  cudaStream_t stream) {
    if (rows <= 0 || dm <= 0) return 0;
    if ((out_dtype != SS_CUDA_F16 && out_dtype != SS_CUDA_BF16) || ss_cdiv(dm, SWIGLU_THREADS) > 0x7fffffff) return 1;
    SS_LAUNCH(ss_k_swiglu16, SS_DIM3(ss_cdiv(dm, SWIGLU_THREADS), SS_MIN(rows, (int64_t)65535), 1), SWIGLU_THREADS, 0,
              stream, out, out_dtype, gu, rows, dm);
    return SS_LAUNCH_STATUS();
}

SS_EXTERN_C int ss_cuda_swiglu(float *out, const float *gu, int64_t rows, int64_t dm, cudaStream_t stream) {
    if (rows <= 0 || dm <= 0) return 0;
    if (ss_cdiv(dm, SWIGLU_THREADS) > 0x7fffffff) return 1;
    SS_LAUNCH(ss_k_swiglu, SS_DIM3(ss_cdiv(dm, SWIGLU_THREADS), SS_MIN(rows, (int64_t)65535), 1), SWIGLU_THREADS, 0,
              stream, out, gu, rows, dm);
    return SS_LAUNCH_STATUS();
}
