/* SwiGLU backward: for out = silu(g) u (swiglu.cu), given dy [rows, dm],
 * writes dgu [rows, 2*dm]: the gate gradients dy u silu'(g) in columns
 * [0,dm), the up gradients dy silu(g) in [dm,2dm), with
 *   s = sigmoid(g), silu(g) = g s, silu'(g) = s (1 + g (1 - s)).
 * 1 - s is formed as e s (e = exp(-g)) for g >= 0, where 1 - s would cancel,
 * and as 1 - s for g < 0 (s < 1/2: exact enough; e may be inf, s = 0). The
 * CPU op evaluates the same in double; here fp32 with precise expf.
 *
 * Design: the forward's: 2D grid, x over 256-column chunks, y over rows
 * (striding beyond 65535); every element written once, no atomics,
 * deterministic. dgu must not overlap dy or gu. Limits: dm < 2^31 * 256. */
#include "ss_cuda.cuh"

#define SWIGLUB_THREADS 256

SS_KERNEL(ss_k_swiglu_bwd, (float *, dgu), (const float *, dy), (const float *, gu), (int64_t, rows), (int64_t, dm)) {
    const int64_t c = (int64_t)blockIdx.x * SWIGLUB_THREADS + threadIdx.x;
    if (c >= dm) return;
    for (int64_t r = blockIdx.y; r < rows; r += gridDim.y) {
        const float g = gu[r * 2 * dm + c], u = gu[r * 2 * dm + dm + c], d = dy[r * dm + c];
        const float e = expf(-g), s = 1.0f / (1.0f + e), om = g >= 0.f ? e * s : 1.0f - s;
        dgu[r * 2 * dm + c] = d * u * s * (1.0f + g * om);
        dgu[r * 2 * dm + dm + c] = d * (g * s);
    }
}

SS_EXTERN_C int ss_cuda_swiglu_backward(float *dgu, const float *dy, const float *gu, int64_t rows, int64_t dm,
                                        cudaStream_t stream) {
    if (rows <= 0 || dm <= 0) return 0;
    if (ss_cdiv(dm, SWIGLUB_THREADS) > 0x7fffffff) return 1;
    SS_LAUNCH(ss_k_swiglu_bwd, SS_DIM3(ss_cdiv(dm, SWIGLUB_THREADS), SS_MIN(rows, (int64_t)65535), 1), SWIGLUB_THREADS,
              0, stream, dgu, dy, gu, rows, dm);
    return SS_LAUNCH_STATUS();
}
