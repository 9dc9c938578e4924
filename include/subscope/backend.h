/* The backend ops table: every op the forward pass needs, behind one
 * interface. The CPU implementation (src/backend/cpu_*.c) is the fp32
 * reference that other backends are tested against. All tensors are
 * row-major fp32; sizes are 64-bit. */
#ifndef SUBSCOPE_BACKEND_H
#define SUBSCOPE_BACKEND_H

#include <stdint.h>
#include "subscope/config.h"
#include "subscope/error.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ss_backend {
    const char *name;
    /* C[M,N] = A[M,K] · op(B) (+ bias[N] if non-NULL), op(B) = B[K,N] or, with
     * trans_b, B[N,K] transposed. */
    void (*matmul)(float *C, const float *A, const float *B, const float *bias,
                   int64_t M, int64_t N, int64_t K, int trans_b);
    /* Per row of x[rows,d]: (x - mean) / sqrt(var + eps) * w + b. */
    void (*layernorm)(float *out, const float *x, const float *w, const float *b,
                      int64_t rows, int64_t d, float eps);
    void (*gelu)(float *out, const float *x, int64_t n, ss_act act);
    void (*add)(float *out, const float *a, const float *b, int64_t n);
    /* out[i,:] = wte[tokens[i],:] (and pos_out[i,:] = wpe[pos[i],:]) for n rows. */
    void (*embed)(float *tok_out, float *pos_out, const int32_t *tokens, const int32_t *pos,
                  const float *wte, const float *wpe, int64_t n, int64_t d);
    /* Causal multi-head attention over n_seq sequences packed one after
     * another: sequence s has len[s] rows starting at row start[s].
     * q,k,v,z are [rows, H*dh] with row stride ld_qkv (q,k,v) and H*dh (z).
     * If pattern_out is non-NULL, sequence s's probabilities are written to
     * pattern_out + pattern_off[s] as [H, len, len] (zeros above the diagonal). */
    ss_status (*attention)(float *z, const float *q, const float *k, const float *v, int64_t ld_qkv,
                      int64_t n_seq, const int64_t *start, const int64_t *len,
                      int64_t H, int64_t dh, float scale, float *pattern_out, const int64_t *pattern_off);
} ss_backend;

const ss_backend *ss_backend_cpu(void);
/* The built-in blocked GEMM (what the CPU backend uses when built without
 * BLAS); exported so tests can check it against BLAS and a naive loop. */
void ss_matmul_builtin(float *C, const float *A, const float *B, const float *bias, int64_t M, int64_t N, int64_t K,
                       int trans_b);

/* Runs fn(ctx, i) for i in [0,n) on up to ss_num_threads() threads. */
void ss_parallel_for(int64_t n, void (*fn)(void *ctx, int64_t i), void *ctx);

#ifdef __cplusplus
}
#endif
#endif
