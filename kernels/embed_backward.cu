/* Embedding backward: a scatter-add of the rows' gradients into the token
 * and position tables, dwte[tokens[i],:] += dx[i,:], dwpe[pos[i],:] += dx[i,:].
 *
 * Design: one warp per row, 8 rows per 256-thread block, the lanes striding
 * over d (coalesced reads of dx and coalesced atomics into the table row).
 * Rows that share an id (repeated tokens; every sequence's position 0) add
 * into the same table row, so the adds are float atomicAdd: NOT
 * deterministic -- the order of the adds, and so the last bits of the sums,
 * may change from run to run. That is accepted here: embedding-table
 * gradients are a training quantity, attributions use the gradients of
 * the activations, which no atomic touches. An id outside the table skips
 * that table's add for the row (memory-safe; the host validates ids).
 * Limits: n < 2^31 * 8. */
#include "ss_cuda.cuh"

#define EB_WARPS 8

SS_KERNEL(ss_k_embed_bwd, (float *, dwte), (float *, dwpe), (const float *, dx), (const int32_t *, tokens),
          (const int32_t *, pos), (int64_t, n_vocab), (int64_t, n_pos), (int64_t, n), (int64_t, d)) {
    int lane = threadIdx.x & 31;
    int64_t r = (int64_t)blockIdx.x * EB_WARPS + (threadIdx.x >> 5);
    if (r >= n) return;
    const float *g = dx + r * d;
    if (dwte) {
        int64_t t = tokens[r];
        if (t >= 0 && t < n_vocab)
            for (int64_t c = lane; c < d; c += 32) atomicAdd(dwte + t * d + c, g[c]);
    }
    if (dwpe) {
        int64_t p = pos[r];
        if (p >= 0 && p < n_pos)
            for (int64_t c = lane; c < d; c += 32) atomicAdd(dwpe + p * d + c, g[c]);
    }
}

SS_EXTERN_C int ss_cuda_embed_backward(float *dwte, float *dwpe, const float *dx, const int32_t *tokens,
                                       const int32_t *pos, int64_t n_vocab, int64_t n_pos, int64_t n, int64_t d,
                                       cudaStream_t stream) {
    if (n <= 0 || d <= 0 || (!dwte && !dwpe)) return 0;
    if ((dwte && !tokens) || (dwpe && !pos) || ss_cdiv(n, EB_WARPS) > 0x7fffffff) return 1;
    SS_LAUNCH(ss_k_embed_bwd, ss_cdiv(n, EB_WARPS), 32 * EB_WARPS, 0, stream, dwte, dwpe, dx, tokens, pos, n_vocab,
              n_pos, n, d);
    return SS_LAUNCH_STATUS();
}
