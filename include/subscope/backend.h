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

/* Element types of weight matrices (the values equal SS_DTYPE_F32/F16/BF16
 * and the kernels' SS_CUDA_F32/F16/BF16). */
enum { SS_WDTYPE_F32 = 0, SS_WDTYPE_F16 = 1, SS_WDTYPE_BF16 = 2 };
/* For ss_model_place: the files' own 16-bit type on a GPU (BF16 or F16
 * checkpoints stay in it), float32 on the CPU and for F32 or quantised files. */
enum { SS_WDTYPE_AUTO = -1 };

typedef struct ss_backend ss_backend;

/* One mask at one site, in the backend's terms (the semantics are
 * ss_mask_apply's, include/subscope/masks.h; mode values equal ss_mask_mode's
 * for zero .. negnoise). Modes resample and patch are not here: they read
 * other prompts' clean rows, which live on the host (see job_ablate.c). */
enum { SS_BMASK_NONE = -1, SS_BMASK_ZERO = 0, SS_BMASK_MEAN = 1, SS_BMASK_SCALE = 2, SS_BMASK_NOISE = 3,
       SS_BMASK_NEGNOISE = 4 };
/* What one of patch's pieces is (the backend's patch_pieces). */
enum { SS_PIECE_SITE = 0, SS_PIECE_POSITION = 1, SS_PIECE_HEAD = 2, SS_PIECE_NEURON = 3 };

typedef struct ss_backend_mask {
    int mode;                        /* SS_BMASK_*; NONE: leaves its sequences alone */
    int sigma_relative;              /* NOISE/NEGNOISE: sigma x std[unit] */
    double factor, sigma;
    uint64_t seed;
    const int64_t *units; int64_t n_units;         /* sorted, distinct, < width; NULL/0 = all */
    const int64_t *positions; int64_t n_positions; /* sorted, distinct, >= 0; NULL/0 = all */
    const double *mean, *std;        /* [width] host arrays, where the mode needs them */
} ss_backend_mask;
/* A set of masks prepared for one site on a backend (device copies of the
 * unit lists and statistics), made once and applied to many forwards. */
typedef struct ss_mask_program ss_mask_program;
typedef struct ss_dev_moments ss_dev_moments; /* running statistics in a backend's memory */

/* The output product that follows an attention op where nothing reads z or
 * the product's own output (no hook on hook_z or attn_out, no backward
 * pass): x += z · op(W) + bias, z [rows, H*dh], x [rows, d], W as matmul_add
 * takes it. An attention op given one runs it itself and leaves z's contents
 * unspecified, so with z16 set a backend may hand z to the product in the
 * weights' 16-bit type without an fp32 copy and a conversion pass. */
typedef struct ss_attn_out {
    float *x;
    const void *w;
    int wdtype;
    const float *bias;
    int64_t rows, d;
    int trans_b;
    int z16;
} ss_attn_out;

/* The optional 16-bit paths for models with 16-bit weights, bits of
 * ss_backend.lowp16 (docs/DECISIONS.md, "What the fourth H100 run decided" and
 * "GPT-2 takes the 16-bit paths too"). */
enum {
    SS_LOWP16_QKV = 1,  /* attention_lowp_qkv */
    SS_LOWP16_NORM = 2, /* norm_matmul, and mlp_add normalising itself */
    SS_LOWP16_MLP = 4,  /* mlp_add */
    SS_LOWP16_Z = 8,    /* ss_attn_out.z16 */
};

/* Backend options: a TF32 switch for float32 matrix products on GPUs. */
typedef struct ss_backend_opts {
    int tf32;
} ss_backend_opts;

struct ss_backend {
    const char *name;     /* "cpu", "cuda:0", ... */
    const char *description; /* the hardware, e.g. "NVIDIA H100 80GB HBM3" */
    void *impl;           /* backend state (streams, library handles) */
    int host_memory;      /* 1 if buffers are ordinary host memory */
    /* Which of the optional 16-bit paths the forward pass takes (SS_LOWP16_*
     * bits) for models with 16-bit weights; the hooks they name must be
     * non-NULL too. */
    unsigned lowp16;
    /* 1 if float32 matrix products may use TF32 tensor-core math (a GPU
     * backend made with ss_backend_opts.tf32); recorded in every file. */
    int tf32;

    /* Buffers in the backend's memory. alloc sets a message naming `what`. */
    ss_status (*alloc)(const ss_backend *be, size_t bytes, const char *what, void **out);
    void (*release)(const ss_backend *be, void *p);
    ss_status (*upload)(const ss_backend *be, void *dst, const void *src, size_t bytes);
    ss_status (*download)(const ss_backend *be, void *dst, const void *src, size_t bytes);
    /* Waits until every op issued so far has finished; reports deferred errors. */
    ss_status (*sync)(const ss_backend *be);
    /* Starts copying bytes from backend buffer src to host memory dst (from
     * alloc_host) once every op issued so far has finished, without waiting
     * for it: later ops run while the copy proceeds. dst must not be read,
     * nor src reused, until wait_copy(*ticket) has returned; wait_copy frees
     * the ticket, also when it reports an error. Backends that compute on
     * the host copy at once and give a NULL ticket. */
    ss_status (*download_async)(const ss_backend *be, void *dst, const void *src, size_t bytes, void **ticket);
    ss_status (*wait_copy)(const ss_backend *be, void *ticket);
    /* Host memory the backend copies to and from fastest (pinned for CUDA). */
    ss_status (*alloc_host)(const ss_backend *be, size_t bytes, const char *what, void **out);
    void (*release_host)(const ss_backend *be, void *p);
    /* Bytes of backend memory allocated now and at most so far (0, 0 where
     * the backend does not track it, as on the CPU). */
    void (*memory_stats)(const ss_backend *be, size_t *in_use, size_t *peak);
    /* Optional (NULL where the host does it better, as on the CPU): the mean
     * (float64) and, if m2 is non-NULL, the co-moment about it (lower
     * triangle of [d,d], float64) of rows row_idx[0..n) of x (backend buffer,
     * row stride ld; row_idx is a host array), reduced on the device and
     * returned to the host, for merging with ss_moments_add_partial. */
    ss_status (*moments_chunk)(const ss_backend *be, const float *x, int64_t ld, const int64_t *row_idx, int64_t n,
                               int64_t d, double *mean, double *m2);
    /* Optional (NULL: moments_chunk for every batch): running statistics kept
     * on the device across batches, so that only a round's totals travel to
     * the host. create: an empty accumulator for d units (want_m2: with
     * co-moments). add: rows row_idx[0..n) of x (as moments_chunk), merged
     * with Chan's update in float64 on the device. take: the count, mean [d]
     * and co-moments ([d,d] float64, the lower triangle with zeros above it;
     * m2 may be NULL) so far, to host arrays, for ss_moments_add_partial or,
     * into an empty ss_moments, as its state; the accumulator starts again
     * from empty. */
    ss_status (*moments_acc_create)(const ss_backend *be, int64_t d, int want_m2, ss_dev_moments **out);
    ss_status (*moments_acc_add)(const ss_backend *be, ss_dev_moments *acc, const float *x, int64_t ld,
                                 const int64_t *row_idx, int64_t n);
    ss_status (*moments_acc_take)(const ss_backend *be, ss_dev_moments *acc, int64_t *count, double *mean,
                                  double *m2);
    void (*moments_acc_free)(const ss_backend *be, ss_dev_moments *acc);
    /* Optional (NULL: ss_pca_top on the host): the k largest eigenvalues and
     * their eigenvectors of the symmetric [d,d] float64 matrix sym (host
     * memory, lower triangle read), computed on the device and returned as
     * ss_pca_top returns them (descending, rows, same sign convention). */
    ss_status (*pca_top)(const ss_backend *be, const double *sym, int64_t d, int64_t k, double *values,
                         double *vectors);
    /* dst[r, 0:width] = src[r*ld_src + 0:width] for r < rows, both backend buffers. */
    ss_status (*copy_rows)(const ss_backend *be, float *dst, const float *src, int64_t ld_src, int64_t rows,
                           int64_t width);

    /* Masks (ablate's masked forwards, hook_on_device). mask_program_create
     * copies n masks for site site_id (width units per row; the host arrays
     * may be freed afterwards); SS_ERR_ARG for a unit >= width, a negative
     * position, an unknown mode or a missing mean/std. apply_masks applies
     * them to data [rows, width] (backend buffer, row stride ld) for n_seq
     * packed sequences (host arrays): sequence q has len[q] rows from
     * start[q], is prompt[q] of the input (the noise's prompt index) and
     * gets mask which[q] of the program (-1: none). Bit for bit what
     * ss_mask_apply does on the CPU (on a GPU noise may differ in the last
     * float ulp: the device's double log/cos are not the host libm's). */
    ss_status (*mask_program_create)(const ss_backend *be, const ss_backend_mask *masks, int n, int site_id,
                                     int64_t width, ss_mask_program **out);
    void (*mask_program_free)(const ss_backend *be, ss_mask_program *p);
    ss_status (*apply_masks)(const ss_backend *be, const ss_mask_program *p, float *data, int64_t ld, int64_t rows,
                             int64_t n_seq, const int64_t *start, const int64_t *len, const int64_t *prompt,
                             const int32_t *which);

    /* The ops. Pointers are backend buffers except where noted; they may be
     * queued and run later (sync/download order them). */
    /* C[M,N] = A[M,K] · op(B) (+ bias[N] if non-NULL), op(B) = B[K,N] or, with
     * trans_b, B[N,K] transposed. B holds b_dtype elements; with
     * SS_WDTYPE_BF16 the product is a bf16 one (A rounded to bf16, products
     * accumulated in fp32), as on tensor cores. */
    ss_status (*matmul)(const ss_backend *be, float *C, const float *A, const void *B, int b_dtype,
                        const float *bias, int64_t M, int64_t N, int64_t K, int trans_b);
    /* Per row of x[rows,d]: (x - mean) / sqrt(var + eps) * w + b. */
    ss_status (*layernorm)(const ss_backend *be, float *out, const float *x, const float *w, const float *b,
                           int64_t rows, int64_t d, float eps);
    ss_status (*gelu)(const ss_backend *be, float *out, const float *x, int64_t n, ss_act act);
    /* Optional (NULL: matmul, then gelu): C = act(A · op(B) + bias), what
     * matmul followed by gelu gives, without writing the pre-activation
     * anywhere; the forward uses it when no one reads the MLP's
     * pre-activation (no hook on hook_pre, no backward pass). */
    ss_status (*matmul_gelu)(const ss_backend *be, float *C, const float *A, const void *B, int b_dtype,
                             const float *bias, int64_t M, int64_t N, int64_t K, int trans_b, ss_act act);
    /* Optional (NULL: the separate ops): an MLP where nothing reads its sites
     * (hook_pre, hook_pre_linear, hook_post, mlp_out): x += act(a · op(W1) +
     * b1) · op(W2) + b2, x [rows,d], a [rows,d], the hidden width dm; act a
     * GELU (GPT-2) or SS_ACT_SILU (Llama's SwiGLU, W1 the gate|up [2dm] product).
     * With nw non-NULL the input is norm(x) instead (LayerNorm with nb,
     * RMSNorm with rms; nothing reads it either) and a is the fp32 buffer the
     * norm would fill, for the backend's own use. The backend may keep the
     * activation's output, and the normalised rows, in the weights' 16-bit
     * type, into which the products round them anyway; pre [rows, dm or 2dm]
     * and post [rows,dm] are scratch it may use. */
    ss_status (*mlp_add)(const ss_backend *be, float *x, float *pre, float *post, float *a, const float *nw,
                         const float *nb, float eps, int rms, const void *w1, const float *b1, const void *w2,
                         const float *b2, int wdtype, int64_t rows, int64_t d, int64_t dm, int trans_b, ss_act act);
    /* Optional (NULL: the norm, then matmul or matmul_gelu): C = act(norm(x)
     * · op(W) + bias), x [M,K], C [M,N], where nothing reads norm(x) (no hook
     * on the norm's site, no backward pass); with 16-bit weights the backend
     * may write the normalised rows straight in that type, into which the
     * product rounds them anyway. rms: RMSNorm (nw), else LayerNorm (nw, nb);
     * gelu: 0 no activation, else act (a GELU); scratch [M,K] is the fp32
     * buffer the norm would otherwise fill, for the backend's own use. */
    ss_status (*norm_matmul)(const ss_backend *be, float *C, float *scratch, const float *x, const float *nw,
                             const float *nb, float eps, int rms, const void *W, int wdtype, const float *bias,
                             int64_t M, int64_t N, int64_t K, int trans_b, int gelu, ss_act act);
    /* Optional (NULL: the norm, the QKV product, the rotation, then
     * attention_lowp): z [R, H*dh] = attention of qkv = a · op(W) + bias
     * [R, (H+2Hkv)dh] with a = x, or with nw a = norm(x) (LayerNorm with nb,
     * RMSNorm with rms), q and k rotated as rope rotates them when pos and
     * inv_freq are given (the Llama family; NULL: no rotation, GPT-2), where
     * nothing reads a, q, k, v, their rotations or the pattern: the backend
     * may write qkv in bf16 for a tensor-core attention that scales the scores
     * itself, and rotate the bf16 values. qkv and ln are the fp32 buffers
     * [R, (H+2Hkv)dh] and [R, d] the separate ops would fill, for the
     * backend's own use. out (or NULL): the output product, run by the op
     * (ss_attn_out). */
    ss_status (*attention_lowp_qkv)(const ss_backend *be, float *z, float *qkv, float *ln, const float *x,
                                    const float *nw, const float *nb, float eps, int rms, const void *W, int wdtype,
                                    const float *bias, int trans_b, int64_t R, int64_t d, int64_t n_seq,
                                    const int64_t *start, const int64_t *len, int64_t H, int64_t Hkv, int64_t dh,
                                    float scale, const int32_t *pos, const float *inv_freq, const ss_attn_out *out);
    /* Optional (NULL: matmul into scratch, then add): C += A · op(B) + bias, for
     * the products that end a block's halves where nothing reads their output
     * (no hook on attn_out / mlp_out): the residual stream takes them directly. */
    ss_status (*matmul_add)(const ss_backend *be, float *C, const float *A, const void *B, int b_dtype,
                            const float *bias, int64_t M, int64_t N, int64_t K, int trans_b);
    ss_status (*add)(const ss_backend *be, float *out, const float *a, const float *b, int64_t n);
    /* tok_out[i,:] = wte[tokens[i],:] and pos_out[i,:] = wpe[pos[i],:] for n rows
     * (tokens and pos are backend buffers; the tables hold wdtype elements).
     * With wpe NULL (rotary models) only tok_out is written (pos_out may be NULL). */
    ss_status (*embed)(const ss_backend *be, float *tok_out, float *pos_out, const int32_t *tokens,
                       const int32_t *pos, const void *wte, const void *wpe, int wdtype, int64_t n, int64_t d);
    /* Causal multi-head attention over n_seq sequences packed one after
     * another: sequence s has len[s] rows starting at row start[s] (start, len
     * and pattern_off are host arrays). q is [rows, H*dh], k and v are
     * [rows, Hkv*dh], all with row stride ld_qkv; query head h reads key/value
     * head h / (H/Hkv) (grouped-query attention; Hkv divides H, Hkv = H is
     * ordinary multi-head attention). z is [rows, H*dh]. If pattern_out is
     * non-NULL, sequence s's probabilities are written to pattern_out +
     * pattern_off[s] as [H, len, len] (zeros above the diagonal). */
    ss_status (*attention)(const ss_backend *be, float *z, const float *q, const float *k, const float *v,
                           int64_t ld_qkv, int64_t n_seq, const int64_t *start, const int64_t *len, int64_t H,
                           int64_t Hkv, int64_t dh, float scale, float *pattern_out, const int64_t *pattern_off);
    /* Optional (NULL: use attention): attention as above without the pattern,
     * for a model whose matrix products already round their inputs to bf16;
     * an implementation may round Q, K, V and the probabilities to bf16 too
     * (fp32 accumulation and softmax), e.g. to use tensor cores. out (or
     * NULL): the output product, run by the op (ss_attn_out). */
    ss_status (*attention_lowp)(const ss_backend *be, float *z, const float *q, const float *k, const float *v,
                                int64_t ld_qkv, int64_t n_seq, const int64_t *start, const int64_t *len, int64_t H,
                                int64_t Hkv, int64_t dh, float scale, const ss_attn_out *out);
    /* Per row of x[rows,d]: x / sqrt(mean(x^2) + eps) * w (RMSNorm; w fp32). */
    ss_status (*rmsnorm)(const ss_backend *be, float *out, const float *x, const float *w, int64_t rows, int64_t d,
                         float eps);
    /* Rotary position embedding in place on the first n_heads heads (width
     * dh) of each row of x (row stride ld), Hugging Face's rotate-half
     * convention: for i < dh/2 and a = pos[r] * inv_freq[i] (both fp32, the
     * product rounded to fp32 as in transformers), (x_i, x_{i+dh/2}) becomes
     * (x_i cos a - x_{i+dh/2} sin a, x_{i+dh/2} cos a + x_i sin a). With
     * inverse, the rotation by -a (the transpose: the backward pass). pos
     * [rows] and inv_freq [dh/2] are backend buffers. */
    ss_status (*rope)(const ss_backend *be, float *x, int64_t ld, int64_t rows, int64_t n_heads, int64_t dh,
                      const int32_t *pos, const float *inv_freq, int inverse);
    /* SwiGLU: out[r,c] = silu(gu[r,c]) * gu[r,dm+c] for gu [rows, 2*dm] (the
     * gate projection, then the up projection), out [rows, dm]. */
    ss_status (*swiglu)(const ss_backend *be, float *out, const float *gu, int64_t rows, int64_t dm);

    /* ---- The backward pass (attribution, training). Gradients are fp32
     * backend buffers; "+=" ops accumulate into what the buffer holds. ---- */
    /* p[0..bytes) = 0. */
    ss_status (*zero)(const ss_backend *be, void *p, size_t bytes);
    /* C[K,N] (+)= A[M,K]^T · B[M,N]: weight gradients; accumulate 0 overwrites C. */
    ss_status (*matmul_tn)(const ss_backend *be, float *C, const float *A, const float *B, int64_t M, int64_t N,
                           int64_t K, int accumulate);
    /* out[N] += sum over the M rows of x[M,N]: bias gradients. */
    ss_status (*sum_rows)(const ss_backend *be, float *out, const float *x, int64_t M, int64_t N);
    /* For y = layernorm(x; w, b) (see layernorm): dx += dL/dx given dy;
     * dw += sum_r dy·xhat and db += sum_r dy when non-NULL. */
    ss_status (*layernorm_backward)(const ss_backend *be, float *dx, float *dw, float *db, const float *dy,
                                    const float *x, const float *w, int64_t rows, int64_t d, float eps);
    /* dx = dy · act'(x) for n elements (dx may alias dy). */
    ss_status (*gelu_backward)(const ss_backend *be, float *dx, const float *dy, const float *x, int64_t n, ss_act act);
    /* The gradients of attention (arguments as for attention) with respect to
     * q, k and v given dz [rows, H*dh]: written (not accumulated) to dq, dk,
     * dv, row stride ld_dqkv; dk and dv of a key/value head sum over the
     * query heads that share it. The probabilities are recomputed from q and k. */
    ss_status (*attention_backward)(const ss_backend *be, float *dq, float *dk, float *dv, int64_t ld_dqkv,
                                    const float *dz, const float *q, const float *k, const float *v, int64_t ld_qkv,
                                    int64_t n_seq, const int64_t *start, const int64_t *len, int64_t H, int64_t Hkv,
                                    int64_t dh, float scale);
    /* For y = rmsnorm(x; w): dx += dL/dx given dy; dw += sum_r dy·x·rstd when non-NULL. */
    ss_status (*rmsnorm_backward)(const ss_backend *be, float *dx, float *dw, const float *dy, const float *x,
                                  const float *w, int64_t rows, int64_t d, float eps);
    /* For out = swiglu(gu): writes dgu [rows, 2*dm] (gate gradients, then up
     * gradients) given dy [rows, dm]. */
    ss_status (*swiglu_backward)(const ss_backend *be, float *dgu, const float *dy, const float *gu, int64_t rows,
                                 int64_t dm);
    /* dwte[tokens[i],:] += dx[i,:] and dwpe[pos[i],:] += dx[i,:] for n rows
     * (either table may be NULL; tokens, pos are backend buffers). */
    ss_status (*embed_backward)(const ss_backend *be, float *dwte, float *dwpe, const float *dx, const int32_t *tokens,
                                const int32_t *pos, int64_t n, int64_t d);
    /* Per row r of logits[rows,V] with targets[r] >= 0: loss[r] = logsumexp(row)
     * - row[target] and drow = weights[r]·(softmax(row) - onehot(target));
     * rows with targets[r] < 0 get loss 0 and a zero gradient. dlogits may
     * alias logits; targets, weights and loss are backend buffers. */
    ss_status (*softmax_xent)(const ss_backend *be, float *dlogits, float *loss, const float *logits,
                              const int32_t *targets, const float *weights, int64_t rows, int64_t V);
    /* Scores of the rows of logits[rows,V] for the metrics of `ablate`, so that
     * the logits need not leave the backend: lz[r] = log sum_v exp(row[v]) in
     * fp64; best[r] (if best is not NULL) = the first index of the row's
     * largest value; kl[r] (if kl is not NULL) = sum_v p(v)(log p(v) - log q(v))
     * in fp64, q the row's softmax and p that of ref[r % ref_rows], whose
     * log-partition is ref_lz[r % ref_rows]. Every pointer is a backend buffer. */
    ss_status (*logit_scores)(const ss_backend *be, double *lz, int32_t *best, double *kl, const float *logits,
                              int64_t rows, int64_t V, const float *ref, const double *ref_lz, int64_t ref_rows);
    /* out[i] = src[idx[i]] for i < n (backend buffers; idx within src). */
    ss_status (*gather)(const ss_backend *be, float *out, const float *src, const int64_t *idx, int64_t n);
    /* attribute's products, on rows [rows, w]: out = (c - a) * g with c,
     * g * a with a alone, g without either, elementwise in fp32 in that
     * order; g has row stride ldg, out, a and c stride w. */
    ss_status (*attr_product)(const ss_backend *be, float *out, const float *g, int64_t ldg, const float *a,
                              const float *c, int64_t rows, int64_t w);
    /* out[s*w+u] = sum over t < len[s] of x[(start[s]+t)*w+u] in fp64, t in
     * order, for s < n_seq (start and len are backend buffers). */
    ss_status (*seq_sums)(const ss_backend *be, double *out, const float *x, int64_t w, int64_t n_seq,
                          const int64_t *start, const int64_t *len);
    /* Integrated gradients on rows [rows, w] (attribute --method ig), b =
     * base[u] in fp64 (NULL: 0), clean stride w:
     * ig_point: a step's point on the path, x[r*ldx+u] = (float)(b + alpha *
     *   ((double)clean[r*w+u] - b));
     * ig_add: a step's gradient into the sum, sum[r*w+u] += g[r*ldg+u] in fp64;
     * ig_attr: out[r*w+u] = (float)(((double)clean[r*w+u] - b) * sum[r*w+u] / steps).
     * Each is the host's arithmetic in its order, without fused multiply-adds. */
    ss_status (*ig_point)(const ss_backend *be, float *x, int64_t ldx, const float *clean, const double *base,
                          double alpha, int64_t rows, int64_t w);
    ss_status (*ig_add)(const ss_backend *be, double *sum, const float *g, int64_t ldg, int64_t rows, int64_t w);
    ss_status (*ig_attr)(const ss_backend *be, float *out, const float *clean, const double *base, const double *sum,
                         int steps, int64_t rows, int64_t w);
    /* patch's pieces: kn copies of a prompt of n rows one after another in x
     * (row stride ld), copy c taking piece p0 + c from src [n, w]: per
     * SS_PIECE_SITE every row and unit, SS_PIECE_POSITION row p0 + c (none
     * past n), SS_PIECE_HEAD units [p*hd, (p+1)*hd) and SS_PIECE_NEURON unit p
     * of every row. A copy of values, exact. */
    ss_status (*patch_pieces)(const ss_backend *be, float *x, int64_t ld, const float *src, int64_t n, int64_t w,
                              int kn, int per, int64_t p0, int64_t hd);
    /* Optional (NULL: no key/value cache; predict --generate recomputes the
     * prompt): causal attention of n_q new query rows against cached keys and
     * values, in attention's fp32 arithmetic. Query row i (q [n_q, H*dh], row
     * stride ld_q) is at position q0 + i and attends keys 0..q0+i of k and v
     * ([q0 + n_q, Hkv*dh], row stride ld_kv; grouped heads as in attention;
     * elements of kv_dtype, SS_WDTYPE_F32/F16/BF16, widened exactly).
     * z is [n_q, H*dh]. */
    ss_status (*attention_kv)(const ss_backend *be, float *z, const float *q, int64_t ld_q, const void *k,
                              const void *v, int kv_dtype, int64_t ld_kv, int64_t n_q, int64_t q0, int64_t H,
                              int64_t Hkv, int64_t dh, float scale);
    /* Optional (NULL: a key/value cache is fp32 whatever the model's dtype):
     * copy_rows writing dst in dtype (SS_WDTYPE_F16 or _BF16, rounded to
     * nearest even). A backend that has it keeps a 16-bit model's cache in
     * the weights' dtype (ss_kv_cache_open). */
    ss_status (*copy_rows16)(const ss_backend *be, void *dst, int dtype, const float *src, int64_t ld_src,
                             int64_t rows, int64_t width);

    /* ---- Forward mode: tangents (directional derivatives) pushed through the
     * ops, for trace's attribution pass (src/model/jvp.c). Optional: a backend
     * without all three has trace run its prefixes instead. Tangents are fp32
     * backend buffers, written (not accumulated). The GELU's tangent is
     * gelu_backward's product (an elementwise Jacobian is its own transpose);
     * linear maps and the rotation take their tangents through matmul and rope. ---- */
    /* dy = J(x)·dx per row of x[rows,d] for y = layernorm(x; w, b) (rms 0):
     * dy = w·rstd·(dx - mean(dx) - xhat·mean(dx·xhat)), xhat = (x - mean)·rstd;
     * or y = rmsnorm(x; w) (rms 1): dy = w·rstd·(dx - x·rstd²·mean(dx·x)).
     * Row statistics in fp64, as the forward's. */
    ss_status (*norm_jvp)(const ss_backend *be, float *dy, const float *dx, const float *x, const float *w,
                          int64_t rows, int64_t d, float eps, int rms);
    /* For out = swiglu(gu) (gu [rows, 2*dm], gate then up): dout [rows, dm] =
     * silu'(g)·dg·u + silu(g)·du given the tangent dgu [rows, 2*dm]. */
    ss_status (*swiglu_jvp)(const ss_backend *be, float *dout, const float *dgu, const float *gu, int64_t rows,
                            int64_t dm);
    /* The tangent of attention's output (arguments as for attention; causal,
     * grouped heads) given tangents dq, dk, dv (row stride ld_dqkv): per query
     * row i of head h, with p the probabilities and
     * ds_j = scale·(dq_i·k_j + q_i·dk_j), dz_i = sum_j p_j·(ds_j - D)·v_j +
     * sum_j p_j·dv_j, D = sum_j p_j·ds_j. dz is [rows, H*dh], written. */
    ss_status (*attention_jvp)(const ss_backend *be, float *dz, const float *dq, const float *dk, const float *dv,
                               int64_t ld_dqkv, const float *q, const float *k, const float *v, int64_t ld_qkv,
                               int64_t n_seq, const int64_t *start, const int64_t *len, int64_t H, int64_t Hkv,
                               int64_t dh, float scale);
};

const ss_backend *ss_backend_cpu(void);

/* Opens a backend by name: "cpu", "cuda", "cuda:N", or "auto" (a GPU when
 * this build has CUDA and one is visible, else cpu). "cuda" and "auto" take
 * GPU local_rank % devices, local_rank from the launcher (ss_local_rank), so
 * ranks started together on a node use different GPUs; "cuda:N" is GPU N. Unknown
 * names and devices this build or machine lacks are errors saying why. */
ss_status ss_backend_open(const char *spec, const ss_backend_opts *opts, ss_backend **out);
/* This process's rank among the ranks of its node (OMPI_COMM_WORLD_LOCAL_RANK,
 * SLURM_LOCALID or MPI_LOCALRANKID; 0 without a launcher), and the GPU it
 * takes among n_devices. */
int ss_local_rank(void);
int ss_device_for_rank(int local_rank, int n_devices);
/* The attention ops' sequences, checked before an op indexes rows with them:
 * sequence s's rows [start[s], start[s] + len[s]) within 0..rows (rows < 0:
 * an op not told its rows, INT64_MAX, so that start + len cannot overflow).
 * An SS_ERR_ARG error names the backend, op, sequence, start, len and rows. */
ss_status ss_attn_seqs_check(const ss_backend *be, const char *op, int64_t n_seq, const int64_t *start,
                             const int64_t *len, int64_t rows);
/* Releases a backend from ss_backend_open (the CPU backend is static: closing it
 * gives the released blocks it keeps for reuse back to malloc). */
void ss_backend_close(ss_backend *be);
/* What this process can do with GPUs, in words for `info --dist`: the CUDA
 * backend not in this build, or linked in, or its plugin loaded (it is
 * loaded to find out), with the devices it sees; or why the plugin cannot
 * be loaded. Written to buf (n bytes), which is returned. */
const char *ss_backend_cuda_status(char *buf, size_t n);

/* The CUDA backend (src/backend/cuda_backend.c), when built. */
ss_status ss_backend_cuda_open(int device, const ss_backend_opts *opts, ss_backend **out);
void ss_backend_cuda_close(ss_backend *be);
int ss_cuda_device_count(void);
/* The CPU backend's BLAS, ready: SS_OK, or (under an address-space limit,
 * ulimit -v) an error where OpenBLAS's work buffers do not fit; set up once
 * (src/backend/cpu_ops.c says why). ss_backend_open reports it. */
ss_status ss_cpu_blas_ready(void);
/* wide 1: OpenBLAS's own threads for the large BLAS/LAPACK calls that follow, made by one thread
 * while nothing else runs BLAS (as many as the pool's, ss_parallel_width; one under an
 * address-space limit); wide 0: back to one thread, as the CPU backend runs it. Returns the
 * number now set (1 where the BLAS is not OpenBLAS). Results can change in the last bits with
 * that number, as products do with the thread count (docs/DECISIONS.md). */
int ss_cpu_blas_threads(int wide);
/* The kernels OpenBLAS runs ("Prescott", "SkylakeX", ...; openblas_get_corename), or NULL where
 * the BLAS is not OpenBLAS. */
const char *ss_cpu_blas_core(void);
/* Where OpenBLAS runs one of its generic or pre-AVX2 cores on a CPU (and OS) that supports more:
 * the core to ask for with OPENBLAS_CORETYPE ("Cooperlake" with AVX-512 BF16, "SkylakeX" with
 * AVX-512 F/VL/BW/DQ, "Haswell" with AVX2 and FMA); else NULL. A core OpenBLAS recognised
 * (AVX2 or newer) is never replaced. main.c acts on it (docs/DECISIONS.md). */
const char *ss_cpu_blas_core_better(void);
/* One line for subscope info: the BLAS, its kernels and who chose them. Written to buf. */
const char *ss_cpu_blas_describe(char *buf, size_t n);
/* The built-in blocked GEMM (what the CPU backend uses when built without
 * BLAS); exported so tests can check it against BLAS and a naive loop. */
void ss_matmul_builtin(float *C, const float *A, const float *B, const float *bias, int64_t M, int64_t N, int64_t K,
                       int trans_b);

/* ss_parallel_for: include/subscope/util.h */

#ifdef __cplusplus
}
#endif
#endif
