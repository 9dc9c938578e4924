/* Residual add: out = a + b over n floats.
 *
 * Design: grid-stride loop, 256 threads per block, float4 loads and stores
 * when the three pointers are 16-byte aligned (the scalar loop finishes the
 * last n % 4 elements), scalar otherwise. Pure bandwidth: 12 bytes moved per
 * element. Limits: none beyond n < 2^62; out may alias a or b. */
#include "ss_cuda.cuh"

#define ADD_THREADS 256

SS_KERNEL(ss_k_add, (float *, out), (const float *, a), (const float *, b), (int64_t, n), (int, vec)) {
    int64_t stride = (int64_t)gridDim.x * blockDim.x;
    int64_t i0 = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    int64_t tail = 0;
    if (vec) {
        int64_t n4 = n / 4;
        for (int64_t i = i0; i < n4; i += stride) {
            float4 x = ((const float4 *)a)[i], y = ((const float4 *)b)[i];
            ((float4 *)out)[i] = make_float4(x.x + y.x, x.y + y.y, x.z + y.z, x.w + y.w);
        }
        tail = n4 * 4;
    }
    for (int64_t i = tail + i0; i < n; i += stride) out[i] = a[i] + b[i];
}

SS_EXTERN_C int ss_cuda_add(float *out, const float *a, const float *b, int64_t n, cudaStream_t stream) {
    if (n <= 0) return 0;
    int vec = ss_aligned16(out) && ss_aligned16(a) && ss_aligned16(b);
    int64_t blocks = ss_grid_1d(vec ? (n + 3) / 4 : n, ADD_THREADS);
    SS_LAUNCH(ss_k_add, blocks, ADD_THREADS, 0, stream, out, a, b, n, vec);
    return SS_LAUNCH_STATUS();
}
