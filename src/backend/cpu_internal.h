/* The CPU backend's backward ops (cpu_backward.c) and mask ops (cpu_masks.c), for its ops table in cpu_ops.c. */
#ifndef SUBSCOPE_CPU_INTERNAL_H
#define SUBSCOPE_CPU_INTERNAL_H

#include "subscope/backend.h"

/* The CPU backend's cache of released blocks (cpu_ops.c): gives them all back
 * to malloc (the backend's close), and the bytes it holds now. */
void ss_cpu_cache_drop(void);
size_t ss_cpu_cached_bytes(void);

/* The bf16 product (the ops table's matmul with bf16 weights), with its
 * block of A's rows (a_block floats, 0: the default) and its wide panels
 * (wide 0: the 2 MiB panels only); used, if not NULL, gets the blocks of
 * rows run, the panels' width and the floats of each thread's scratch. a_block == M * K and wide 0 is the way of
 * one block of all rows, as the product was before the blocks. */
ss_status ss_cpu_matmul_bf16(float *C, const float *A, const uint16_t *B, const float *bias, int64_t M, int64_t N,
                             int64_t K, int trans_b, int64_t a_block, int wide, int64_t used[3]);
ss_status ss_cpu_zero(const ss_backend *be, void *p, size_t bytes);
ss_status ss_cpu_matmul_tn(const ss_backend *be, float *C, const float *A, const float *B, int64_t M, int64_t N,
                           int64_t K, int accumulate);
ss_status ss_cpu_sum_rows(const ss_backend *be, float *out, const float *x, int64_t M, int64_t N);
ss_status ss_cpu_layernorm_backward(const ss_backend *be, float *dx, float *dw, float *db, const float *dy,
                                    const float *x, const float *w, int64_t rows, int64_t d, float eps);
ss_status ss_cpu_gelu_backward(const ss_backend *be, float *dx, const float *dy, const float *x, int64_t n,
                               ss_act act);
ss_status ss_cpu_attention_backward(const ss_backend *be, float *dq, float *dk, float *dv, int64_t ld_dqkv,
                                    const float *dz, const float *q, const float *k, const float *v, int64_t ld_qkv,
                                    int64_t n_seq, const int64_t *start, const int64_t *len, int64_t H, int64_t Hkv,
                                    int64_t dh, float scale);
ss_status ss_cpu_rmsnorm_backward(const ss_backend *be, float *dx, float *dw, const float *dy, const float *x,
                                  const float *w, int64_t rows, int64_t d, float eps);
ss_status ss_cpu_swiglu_backward(const ss_backend *be, float *dgu, const float *dy, const float *gu, int64_t rows,
                                 int64_t dm);
ss_status ss_cpu_norm_jvp(const ss_backend *be, float *dy, const float *dx, const float *x, const float *w,
                          int64_t rows, int64_t d, float eps, int rms);
ss_status ss_cpu_swiglu_jvp(const ss_backend *be, float *dout, const float *dgu, const float *gu, int64_t rows,
                            int64_t dm);
ss_status ss_cpu_attention_jvp(const ss_backend *be, float *dz, const float *dq, const float *dk, const float *dv,
                               int64_t ld_dqkv, const float *q, const float *k, const float *v, int64_t ld_qkv,
                               int64_t n_seq, const int64_t *start, const int64_t *len, int64_t H, int64_t Hkv,
                               int64_t dh, float scale);
ss_status ss_cpu_embed_backward(const ss_backend *be, float *dwte, float *dwpe, const float *dx,
                                const int32_t *tokens, const int32_t *pos, int64_t n, int64_t d);
ss_status ss_cpu_softmax_xent(const ss_backend *be, float *dlogits, float *loss, const float *logits,
                              const int32_t *targets, const float *weights, int64_t rows, int64_t V);

/* Masks (cpu_masks.c): the CPU backend's ops, and the checks of a mask
 * program and of the sequences it is applied to that every backend shares. */
ss_status ss_cpu_mask_program_create(const ss_backend *be, const ss_backend_mask *masks, int n, int site_id,
                                     int64_t width, ss_mask_program **out);
void ss_cpu_mask_program_free(const ss_backend *be, ss_mask_program *p);
ss_status ss_cpu_apply_masks(const ss_backend *be, const ss_mask_program *p, float *data, int64_t ld, int64_t rows,
                             int64_t n_seq, const int64_t *start, const int64_t *len, const int64_t *prompt,
                             const int32_t *which);
ss_status ss_backend_masks_check(const ss_backend *be, const ss_backend_mask *masks, int n, int64_t width);
ss_status ss_backend_masks_check_seqs(const ss_backend *be, int n_masks, int64_t ld, int64_t width, int64_t rows,
                                      int64_t n_seq, const int64_t *start, const int64_t *len, const int32_t *which);

#endif
