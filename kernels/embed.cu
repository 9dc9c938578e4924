/* Token and position embeddings: for row i, tok = wte[tokens[i]], pos =
 * wpe[pos[i]], sum = tok + pos (the first residual stream); each output is
 * optional, so the forward pass writes hook_embed / hook_pos_embed only when
 * they are captured and otherwise just the sum.
 *
 * Design: one warp per row, 8 rows per 256-thread block; the lanes stride
 * over d, so the gathered table rows are read contiguously. fp32 tables use
 * float4 when d % 4 == 0 and every base pointer is 16-byte aligned; fp16 and
 * bf16 tables are read element by element and converted (exactly) to fp32.
 * An id outside the table gives a row of NaN instead of reading out of
 * bounds (the host validates ids; this keeps a bug visible and memory-safe).
 * Rotary models have no position table: with wpe NULL, pos is not read,
 * pos_out must be NULL, and sum_out (if given) receives the token rows.
 * Limits: n < 2^31 * 8. */
#include "ss_cuda.cuh"

#define EMB_WARPS 8

SS_DEV void ss_emb_store(float *p, int64_t i, float v) {
    if (p) p[i] = v;
}

SS_KERNEL(ss_k_embed, (float *, tok_out), (float *, pos_out), (float *, sum_out), (const int32_t *, tokens),
          (const int32_t *, pos), (const void *, wte), (const void *, wpe), (int, wdt), (int64_t, n_vocab),
          (int64_t, n_pos), (int64_t, n), (int64_t, d), (int, vec)) {
    int lane = threadIdx.x & 31;
    int64_t r = (int64_t)blockIdx.x * EMB_WARPS + (threadIdx.x >> 5);
    if (r >= n) return;
    const int has_pos = wpe != NULL;
    int64_t t = tokens[r], p = has_pos ? pos[r] : 0;
    int bad = t < 0 || t >= n_vocab || (has_pos && (p < 0 || p >= n_pos));
    int64_t o = r * d;
    if (vec && !bad) {
        const float4 *te = (const float4 *)((const float *)wte + t * d);
        const float4 *pe = has_pos ? (const float4 *)((const float *)wpe + p * d) : NULL;
        for (int64_t c = lane; c < d / 4; c += 32) {
            float4 a = te[c], b = pe ? pe[c] : make_float4(0.f, 0.f, 0.f, 0.f);
            if (tok_out) ((float4 *)(tok_out + o))[c] = a;
            if (pos_out) ((float4 *)(pos_out + o))[c] = b;
            if (sum_out) ((float4 *)(sum_out + o))[c] = pe ? make_float4(a.x + b.x, a.y + b.y, a.z + b.z, a.w + b.w) : a;
        }
        return;
    }
    for (int64_t c = lane; c < d; c += 32) {
        float a = bad ? NAN : ss_load_weight(wte, wdt, t * d + c);
        float b = bad ? NAN : has_pos ? ss_load_weight(wpe, wdt, p * d + c) : 0.f;
        ss_emb_store(tok_out, o + c, a);
        ss_emb_store(pos_out, o + c, b);
        ss_emb_store(sum_out, o + c, has_pos ? a + b : a);
    }
}

SS_EXTERN_C int ss_cuda_embed(float *tok_out, float *pos_out, float *sum_out, const int32_t *tokens,
                              const int32_t *pos, const void *wte, const void *wpe, int wdtype, int64_t n_vocab,
                              int64_t n_pos, int64_t n, int64_t d, cudaStream_t stream) {
    if (n <= 0 || d <= 0) return 0;
    if (wdtype < SS_CUDA_F32 || wdtype > SS_CUDA_BF16 || ss_cdiv(n, EMB_WARPS) > 0x7fffffff || (!wpe && pos_out))
        return 1;
    int vec = wdtype == SS_CUDA_F32 && d % 4 == 0 && ss_aligned16(wte) && ss_aligned16(wpe) &&
              (!tok_out || ss_aligned16(tok_out)) && (!pos_out || ss_aligned16(pos_out)) &&
              (!sum_out || ss_aligned16(sum_out));
    SS_LAUNCH(ss_k_embed, ss_cdiv(n, EMB_WARPS), 32 * EMB_WARPS, 0, stream, tok_out, pos_out, sum_out, tokens, pos, wte,
              wpe, wdtype, n_vocab, n_pos, n, d, vec);
    return SS_LAUNCH_STATUS();
}
