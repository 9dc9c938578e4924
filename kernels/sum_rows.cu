/* Column sums accumulated into out: out[c] += sum_r x[r,c] (bias
 * gradients).
 *
 * Design: a block owns 32 columns (one per lane of threadIdx.x) and all M
 * rows; its 8 warps take rows y, y+8, ... so each warp reads 32 consecutive
 * floats per row (coalesced), then the 8 partial sums of a column are added
 * in warp order through shared memory. The order of every addition is fixed
 * by the shape alone: deterministic, no atomics, no workspace. Parallelism is
 * N/32 blocks, enough for the widths it serves (d_model, 4*d_model, vocab);
 * the kernel is bandwidth-bound. Limits: N/32 < 2^31. */
#include "ss_cuda.cuh"

#define SR_ROWS 8

SS_KERNEL(ss_k_sum_rows, (float *, out), (const float *, x), (int64_t, M), (int64_t, N)) {
    __shared__ float part[SR_ROWS][32];
    const int tx = threadIdx.x, ty = threadIdx.y;
    const int64_t c = (int64_t)blockIdx.x * 32 + tx;
    float s = 0.f;
    if (c < N)
        for (int64_t r = ty; r < M; r += SR_ROWS) s += x[r * N + c];
    part[ty][tx] = s;
    __syncthreads();
    if (ty == 0 && c < N) {
        float t = part[0][tx];
        for (int i = 1; i < SR_ROWS; i++) t += part[i][tx];
        out[c] += t;
    }
}

SS_EXTERN_C int ss_cuda_sum_rows(float *out, const float *x, int64_t M, int64_t N, cudaStream_t stream) {
    if (M <= 0 || N <= 0) return 0;
    if (ss_cdiv(N, 32) > 0x7fffffff) return 1;
    SS_LAUNCH(ss_k_sum_rows, ss_cdiv(N, 32), SS_DIM3(32, SR_ROWS, 1), 0, stream, out, x, M, N);
    return SS_LAUNCH_STATUS();
}
