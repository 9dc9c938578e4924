/* Forward mode of SwiGLU (trace's attribution pass): for out = silu(g) u
 * (swiglu.cu) and the tangent dgu [rows, 2*dm] (gate tangents in columns
 * [0,dm), up tangents in [dm,2dm)), writes
 *   dout [rows, dm] = dg u silu'(g) + du silu(g),
 * s = sigmoid(g), silu(g) = g s, silu'(g) = s (1 + g (1 - s)), with 1 - s
 * formed as in swiglu_backward.cu (e s for g >= 0). fp32, precise expf; the
 * CPU op evaluates the same in double.
 *
 * Design: swiglu_backward's: 2D grid, x over 256-column chunks, y over rows
 * (striding beyond 65535); every element written once, deterministic. dout
 * must not overlap dgu or gu. Limits: dm < 2^31 * 256. */
#include "ss_cuda.cuh"

#define SWIGLUJ_THREADS 256

SS_KERNEL(ss_k_swiglu_jvp, (float *, dout), (const float *, dgu), (const float *, gu), (int64_t, rows), (int64_t, dm)) {
    const int64_t c = (int64_t)blockIdx.x * SWIGLUJ_THREADS + threadIdx.x;
    if (c >= dm) return;
    for (int64_t r = blockIdx.y; r < rows; r += gridDim.y) {
        const float g = gu[r * 2 * dm + c], u = gu[r * 2 * dm + dm + c];
        const float dg = dgu[r * 2 * dm + c], du = dgu[r * 2 * dm + dm + c];
        const float e = expf(-g), s = 1.0f / (1.0f + e), om = g >= 0.f ? e * s : 1.0f - s;
        dout[r * dm + c] = dg * u * s * (1.0f + g * om) + du * (g * s);
    }
}

SS_EXTERN_C int ss_cuda_swiglu_jvp(float *dout, const float *dgu, const float *gu, int64_t rows, int64_t dm,
                                   cudaStream_t stream) {
    if (rows <= 0 || dm <= 0) return 0;
    if (ss_cdiv(dm, SWIGLUJ_THREADS) > 0x7fffffff) return 1;
    SS_LAUNCH(ss_k_swiglu_jvp, SS_DIM3(ss_cdiv(dm, SWIGLUJ_THREADS), SS_MIN(rows, (int64_t)65535), 1), SWIGLUJ_THREADS,
              0, stream, dout, dgu, gu, rows, dm);
    return SS_LAUNCH_STATUS();
}
