/* GELU backward: dx = dy * gelu'(x), for GPT-2's tanh approximation
 * (gelu_new) and the exact erf form.
 *   tanh: with u = k (x + 0.044715 x^3), t = tanh u, k = sqrt(2/pi):
 *         gelu' = 0.5 (1 + t) + 0.5 x (1 - t^2) k (1 + 3 * 0.044715 x^2)
 *   erf:  gelu' = Phi(x) + x phi(x) = 0.5 (1 + erf(x/sqrt2)) + x exp(-x^2/2)/sqrt(2 pi)
 * Design: elementwise grid-stride loop, 256 threads per block, float4 when
 * n % 4 == 0 and all three pointers are 16-byte aligned; accurate tanhf /
 * erff / expf (bandwidth-bound, so accuracy is free). dx may equal dy (each
 * element is read before it is written by the same thread).
 * Deterministic. Limits: n < 2^62. */
#include "ss_cuda.cuh"

#define GB_THREADS 256

SS_DEV float ss_gelu_grad(float x, int act) {
    if (act == SS_CUDA_GELU_ERF)
        return 0.5f * (1.f + erff(x * 0.7071067811865476f)) + x * expf(-0.5f * x * x) * 0.3989422804014327f;
    const float k = 0.7978845608028654f, c = 0.044715f;
    float t = tanhf(k * (x + c * x * x * x));
    return 0.5f * (1.f + t) + 0.5f * x * (1.f - t * t) * k * (1.f + 3.f * c * x * x);
}

SS_KERNEL(ss_k_gelu_bwd, (float *, dx), (const float *, dy), (const float *, x), (int64_t, n), (int, act),
          (int, vec)) {
    int64_t stride = (int64_t)gridDim.x * blockDim.x;
    int64_t i0 = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (vec) {
        for (int64_t i = i0; i < n / 4; i += stride) {
            float4 g = ((const float4 *)dy)[i], v = ((const float4 *)x)[i];
            ((float4 *)dx)[i] = make_float4(g.x * ss_gelu_grad(v.x, act), g.y * ss_gelu_grad(v.y, act),
                                            g.z * ss_gelu_grad(v.z, act), g.w * ss_gelu_grad(v.w, act));
        }
        return;
    }
    for (int64_t i = i0; i < n; i += stride) dx[i] = dy[i] * ss_gelu_grad(x[i], act);
}

SS_EXTERN_C int ss_cuda_gelu_backward(float *dx, const float *dy, const float *x, int64_t n, int act,
                                      cudaStream_t stream) {
    if (n <= 0) return 0;
    if (act != SS_CUDA_GELU_TANH && act != SS_CUDA_GELU_ERF) return 1;
    int vec = n % 4 == 0 && ss_aligned16(dx) && ss_aligned16(dy) && ss_aligned16(x);
    SS_LAUNCH(ss_k_gelu_bwd, ss_grid_1d(vec ? n / 4 : n, GB_THREADS), GB_THREADS, 0, stream, dx, dy, x, n, act, vec);
    return SS_LAUNCH_STATUS();
}
