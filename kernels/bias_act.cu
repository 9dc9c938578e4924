/* Bias + activation: out[r,c] = act(x[r,c] + bias[c]), act = GELU with the
 * tanh approximation (GPT-2's gelu_new), exact GELU (erf), or none (a plain
 * broadcast bias add).
 *
 * Design: elementwise grid-stride loop, 256 threads per block; float4 when
 * cols % 4 == 0 and x/out are 16-byte aligned (then a vector never straddles
 * two rows and the bias index is (4i) % cols). tanhf/erff are the accurate
 * CUDA library functions, not the tanh.approx instruction: the kernel is
 * bandwidth-bound, so accuracy costs nothing measurable. The activation is
 * uniform per launch, so the switch does not diverge. out may equal x.
 * Limits: none beyond rows*cols < 2^62. */
#include "ss_cuda.cuh"

#define BA_THREADS 256

SS_DEV float ss_act_apply(float v, int act) {
    if (act == SS_CUDA_GELU_TANH) {
        const float k = 0.7978845608028654f; /* sqrt(2/pi) */
        return 0.5f * v * (1.f + tanhf(k * (v + 0.044715f * v * v * v)));
    }
    if (act == SS_CUDA_GELU_ERF) return 0.5f * v * (1.f + erff(v * 0.7071067811865476f));
    return v;
}

SS_KERNEL(ss_k_bias_act, (float *, out), (const float *, x), (const void *, bias), (int, wdt), (int64_t, cols),
          (int64_t, n), (int, act), (int, vec)) {
    int64_t stride = (int64_t)gridDim.x * blockDim.x;
    int64_t i0 = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (vec) {
        for (int64_t i = i0; i < n / 4; i += stride) {
            float4 v = ((const float4 *)x)[i];
            int64_t c = (4 * i) % cols;
            if (bias) {
                v.x += ss_load_weight(bias, wdt, c);
                v.y += ss_load_weight(bias, wdt, c + 1);
                v.z += ss_load_weight(bias, wdt, c + 2);
                v.w += ss_load_weight(bias, wdt, c + 3);
            }
            ((float4 *)out)[i] =
                make_float4(ss_act_apply(v.x, act), ss_act_apply(v.y, act), ss_act_apply(v.z, act), ss_act_apply(v.w, act));
        }
        return;
    }
    for (int64_t i = i0; i < n; i += stride) {
        float v = x[i] + (bias ? ss_load_weight(bias, wdt, i % cols) : 0.f);
        out[i] = ss_act_apply(v, act);
    }
}

SS_EXTERN_C int ss_cuda_bias_act(float *out, const float *x, const void *bias, int wdtype, int64_t rows, int64_t cols,
                                 int act, cudaStream_t stream) {
    if (rows <= 0 || cols <= 0) return 0;
    if (wdtype < SS_CUDA_F32 || wdtype > SS_CUDA_BF16 || act < SS_CUDA_GELU_TANH || act > SS_CUDA_ACT_NONE) return 1;
    int64_t n = rows * cols;
    int vec = cols % 4 == 0 && ss_aligned16(x) && ss_aligned16(out);
    SS_LAUNCH(ss_k_bias_act, ss_grid_1d(vec ? n / 4 : n, BA_THREADS), BA_THREADS, 0, stream, out, x, bias, wdtype,
              cols, n, act, vec);
    return SS_LAUNCH_STATUS();
}
