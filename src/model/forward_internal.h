/* What the backward pass shares with the forward pass (src/model/forward.c):
 * running one block, handing sites to hooks, and a tape of the activations
 * the backward pass reads. Internal to src/model. */
#ifndef SUBSCOPE_FORWARD_INTERNAL_H
#define SUBSCOPE_FORWARD_INTERNAL_H

#include "subscope/forward.h"

/* Hands sites to a hook (see ss_forward_opts for read_only / hook_on_device). */
typedef struct ss_hook_ctx {
    const ss_model *m;
    const ss_backend *be;
    const ss_forward_opts *o; /* NULL: no hooks */
    const ss_packing *pk;
    const int32_t *pos_b;  /* backend buffer: each row's position (rotary embeddings) */
    int64_t *pattern_off;  /* per sequence: where its [H, len, len] starts in pattern */
    int64_t pat_total;
    float *pattern;        /* backend buffer for hook_pattern, NULL when no layer wants it */
    float *stage;          /* host staging for sites of a device backend */
    float *arena;          /* device: sites gathered for read-only hooks */
    float *arena_host;
    int64_t *arena_off;    /* by site id: offset in the arena, or -1 */
    size_t arena_used;     /* floats */
    struct ss_capture *cap; /* the arena is a slot of this capture (opts->capture), not the pass's own */
    int delivered;         /* the capture has had this pass (ss_hook_ctx_deliver ran) */
    struct ss_kv_cache *kv; /* the pass continues this cache (ss_forward_opts.kv) */
} ss_hook_ctx;

/* Allocates what handing sites to o's hook on be needs (o may be NULL). */
ss_status ss_hook_ctx_open(ss_hook_ctx *f, const ss_model *m, const ss_backend *be, const ss_forward_opts *o,
                           const ss_packing *pk);
/* Hands the site (kind, layer) to the hook if it is wanted: buf holds n_floats
 * floats, the site's rows at buf + offset with row stride ld. */
ss_status ss_hook_site(ss_hook_ctx *f, ss_site_kind kind, int layer, float *buf, size_t n_floats, int64_t offset,
                       int64_t ld);
int ss_hook_wants(const ss_hook_ctx *f, ss_site_kind kind, int layer);
/* Read-only hooks on a device: one copy of everything gathered, then the
 * hooks in order; with a capture, the copy starts and the previous pass's
 * sites go to the hooks instead. Only the first call of a pass acts. */
ss_status ss_hook_ctx_deliver(ss_hook_ctx *f);
void ss_hook_ctx_close(ss_hook_ctx *f);

/* The widths a block's buffers have in either family. */
typedef struct ss_dims {
    int64_t d, H, Hkv, dh;
    int64_t qw;  /* the fused q|k|v row: (H + 2 Hkv) dh (GPT-2: 3d) */
    int64_t zw;  /* z: H dh */
    int64_t dm;  /* d_mlp */
    int64_t pw;  /* the MLP's first projection: d_mlp (GPT-2) or gate|up 2 d_mlp (Llama) */
    int llama;
} ss_dims;

static inline ss_dims ss_model_dims(const ss_config *c) {
    ss_dims x = {.d = c->n_embd, .H = c->n_head, .Hkv = ss_config_kv_heads(c), .dh = ss_config_d_head(c),
                 .dm = c->n_inner, .llama = c->family == SS_FAMILY_LLAMA};
    x.qw = (x.H + 2 * x.Hkv) * x.dh;
    x.zw = x.H * x.dh;
    x.pw = x.llama ? 2 * x.dm : x.dm;
    return x;
}

/* The projections of a block, y[R, n_out] = x[R, n_in]·W (+ b) with W as
 * the family stores it, and their gradients: dx = dy·Wᵀ and dW += the
 * outer products (stored like W). */
static inline ss_status ss_linear(const ss_backend *be, const ss_gpt2_weights *w, float *y, const float *x,
                                  const void *W, const void *b, int64_t R, int64_t n_out, int64_t n_in) {
    return be->matmul(be, y, x, W, w->wdtype, b, R, n_out, n_in, w->trans);
}
static inline ss_status ss_linear_dx(const ss_backend *be, const ss_gpt2_weights *w, float *dx, const float *dy,
                                     const void *W, int64_t R, int64_t n_out, int64_t n_in) {
    return be->matmul(be, dx, dy, W, w->wdtype, NULL, R, n_in, n_out, !w->trans);
}
static inline ss_status ss_linear_dw(const ss_backend *be, const ss_gpt2_weights *w, void *dW, const float *x,
                                     const float *dy, int64_t R, int64_t n_out, int64_t n_in) {
    return w->trans ? be->matmul_tn(be, (float *)dW, dy, x, R, n_in, n_out, 1)
                    : be->matmul_tn(be, (float *)dW, x, dy, R, n_out, n_in, 1);
}

/* A block's buffers (backend memory, [rows, width] each). x enters as
 * resid_pre and leaves as resid_post; save_pre and save_mid, when non-NULL,
 * receive copies of resid_pre and resid_mid as the block sees them (after
 * their hooks). attn_out and mlp_out may be the same scratch buffer. */
typedef struct ss_block_bufs {
    float *ln1, *qkv, *z, *attn_out, *ln2, *pre, *post, *mlp_out; /* widths d, qw, zw, d, d, pw, dm, d */
    float *save_pre, *save_mid;
    int resumed; /* x is a saved resid_pre, its hook already applied: do not run it again */
    int keep_pre; /* pre must hold the MLP's pre-activation: a backward pass reads this block (its attention stays fp32) */
} ss_block_bufs;

ss_status ss_block_forward(ss_hook_ctx *f, const ss_gpt2_weights *w, int l, float *x, const ss_block_bufs *b);

/* The activations a backward pass reads, in backend memory; the caller
 * allocates every buffer. With recompute only resid_pre (per layer),
 * resid_final, lnf, logits, tokens and positions are kept; otherwise the
 * forward writes each layer's intermediates straight into blocks[l]. */
typedef struct ss_tape {
    int recompute;
    ss_block_bufs *blocks;      /* n_layer; blocks[l].save_pre (and save_mid) are the kept copies */
    float *resid_final, *lnf;   /* [rows, d] */
    float *logits;              /* [n_lrows, V] by the forward opts' logits mode */
    int32_t *tok_b, *pos_b;     /* [rows] */
} ss_tape;

/* ss_forward, keeping what the tape asks for (tape may be NULL). With a tape,
 * the logits stay in tape->logits and *logits is not set. */
ss_status ss_forward_taped(const ss_model *m, const ss_backend *be, const int32_t *tokens, const ss_packing *pk,
                           const ss_forward_opts *opts, float **logits, ss_tape *tape);

/* Pipeline stages (ss_model.pipe): blocks of floats between neighbours,
 * through host memory, timed into the model's wait counter. */
enum { SS_PIPE_TAG_RESID = 4000, SS_PIPE_TAG_GRAD = 4002, SS_PIPE_TAG_METRIC = 4003 };
ss_status ss_pipe_recv(const ss_model *m, const ss_backend *be, int from, int tag, float *x, size_t n);
ss_status ss_pipe_send(const ss_model *m, const ss_backend *be, int to, int tag, const float *x, size_t n);
/* The same for host bytes (the metric of a batch). */
ss_status ss_pipe_recv_bytes(const ss_model *m, int from, int tag, void *buf, size_t bytes);
ss_status ss_pipe_send_bytes(const ss_model *m, int to, int tag, const void *buf, size_t bytes);

/* Validates a packing and its tokens. */
ss_status ss_packing_check(const ss_model *m, const int32_t *tokens, const ss_packing *pk);

#endif
