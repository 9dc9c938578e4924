/* patch on a device (src/jobs/job_patch.c): one pass runs kn copies of a
 * prompt of n rows, copy c taking piece p0 + c of the other run's values
 * src [n, w]: the whole site (every row and unit), one position (row p0 + c,
 * none past n), one head (units [p*hd, (p+1)*hd) of every row) or one
 * neuron (unit p of every row). Every copy's piece has the same rows x
 * units, so a thread per element of kn pieces, grid-stride, copies values:
 * the CPU op's result exactly. */
#include "ss_cuda.cuh"
#include "subscope/backend.h"

SS_KERNEL(ss_k_patch_pieces, (float *, x), (int64_t, ld), (const float *, src), (int64_t, n), (int64_t, w),
          (int64_t, kn), (int, per), (int64_t, p0), (int64_t, hd), (int64_t, R), (int64_t, C)) {
    const int64_t total = kn * R * C;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t c = i / (R * C), r = (i / C) % R, k = i % C, p = p0 + c;
        int64_t t = r, u = k;
        if (per == SS_PIECE_POSITION) t = p;
        else if (per == SS_PIECE_HEAD) u = p * hd + k;
        else if (per == SS_PIECE_NEURON) u = p;
        if (t < n) x[(c * n + t) * ld + u] = src[t * w + u];
    }
}

SS_EXTERN_C int ss_cuda_patch_pieces(float *x, int64_t ld, const float *src, int64_t n, int64_t w, int kn, int per,
                                     int64_t p0, int64_t hd, cudaStream_t stream) {
    if (kn <= 0 || n <= 0 || w <= 0) return 0;
    if (ld < w || per < SS_PIECE_SITE || per > SS_PIECE_NEURON || (per == SS_PIECE_HEAD && hd <= 0)) return 1;
    const int64_t R = per == SS_PIECE_POSITION ? 1 : n,
                  C = per == SS_PIECE_HEAD ? hd : per == SS_PIECE_NEURON ? 1 : w;
    int64_t blocks = ss_cdiv((int64_t)kn * R * C, 256);
    if (blocks > 65536) blocks = 65536;
    SS_LAUNCH(ss_k_patch_pieces, blocks, 256, 0, stream, x, ld, src, n, w, (int64_t)kn, per, p0, hd, R, C);
    return SS_LAUNCH_STATUS();
}
