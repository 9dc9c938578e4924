/* The forward pass of GPT-2 and the Llama family with site hooks, on any backend. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "forward_internal.h"
#include "subscope/dist.h"
#include "subscope/util.h"

/* ---- handing sites to hooks ---- */

int ss_hook_wants(const ss_hook_ctx *f, ss_site_kind kind, int layer) {
    if (!f->o || !f->o->want || !f->o->hook) return 0;
    const int id = ss_site_id(&f->m->cfg, kind, layer);
    return id >= 0 && f->o->want[id];
}

/* ---- captures that outlive a pass (ss_capture) ---- */

typedef struct {
    const ss_backend *be;
    const ss_config *cfg;
    ss_hook_fn hook;
    void *hook_ctx;
    float *dev, *host;  /* the gathered sites, on the device and (once copied) in pinned memory */
    size_t cap;         /* floats each */
    int64_t *off;       /* by site id: offset in the buffers, or -1 */
    int n_sites;
    void *ticket;       /* the copy to the host, while in flight */
    int pending;        /* copied or copying, not yet handed to the hook */
    int64_t *seq;       /* the batch's start, len and pattern offsets: 3 n_seq */
    int64_t seq_cap;
    ss_packing pk;
} capture_slot;

struct ss_capture {
    capture_slot slot[2];
    int cur; /* the slot the next pass gathers into */
};

ss_status ss_capture_open(ss_capture **out) {
    *out = ss_calloc(1, sizeof **out, "capture");
    return *out ? SS_OK : SS_ERR_NOMEM;
}

/* Waits for the slot's copy and hands its sites to the hook, in site order. */
static ss_status capture_deliver(capture_slot *sl) {
    if (!sl->pending) return SS_OK;
    sl->pending = 0;
    void *t = sl->ticket;
    sl->ticket = NULL;
    SS_TRY(sl->be->wait_copy(sl->be, t));
    ss_site s;
    for (int i = 0; i < sl->n_sites; i++) {
        if (sl->off[i] < 0) continue;
        ss_site_get(sl->cfg, i, &s);
        SS_TRY(sl->hook(sl->hook_ctx, &s, sl->host + sl->off[i], s.per_token ? s.width : 0, &sl->pk,
                        sl->seq + 2 * sl->pk.n_seq));
    }
    return SS_OK;
}

ss_status ss_capture_flush(ss_capture *cap) {
    /* At most one slot is pending; the other was handed over when it started. */
    for (int k = 0; k < 2; k++) SS_TRY(capture_deliver(&cap->slot[(cap->cur + k) % 2]));
    return SS_OK;
}

void ss_capture_close(ss_capture *cap) {
    if (!cap) return;
    for (int k = 0; k < 2; k++) {
        capture_slot *sl = &cap->slot[k];
        if (sl->ticket) sl->be->wait_copy(sl->be, sl->ticket); /* nothing may write freed memory */
        if (sl->dev) sl->be->release(sl->be, sl->dev);
        if (sl->host) sl->be->release_host(sl->be, sl->host);
        free(sl->off);
        free(sl->seq);
    }
    free(cap);
}

/* Makes the capture's current slot this pass's arena of `total` floats. */
static ss_status capture_take(ss_hook_ctx *f, ss_capture *cap, size_t total) {
    const ss_config *c = &f->m->cfg;
    const int ns = ss_sites_count(c);
    capture_slot *sl = &cap->slot[cap->cur];
    if (sl->be && sl->be != f->be)
        return ss_errorf(SS_ERR_ARG, "a capture serves one backend (%s), not also %s", sl->be->name, f->be->name);
    SS_TRY(capture_deliver(sl)); /* left pending when an earlier pass failed before handing it over */
    if (sl->n_sites != ns) {
        free(sl->off);
        if (!(sl->off = ss_malloc((size_t)ns * sizeof(int64_t), "site offsets"))) {
            sl->n_sites = 0;
            return SS_ERR_NOMEM;
        }
        sl->n_sites = ns;
    }
    if (total > sl->cap) {
        if (sl->dev) f->be->release(f->be, sl->dev);
        if (sl->host) f->be->release_host(f->be, sl->host);
        sl->dev = sl->host = NULL;
        sl->cap = 0;
        SS_TRY(f->be->alloc(f->be, total * sizeof(float), "captured sites", (void **)&sl->dev));
        SS_TRY(f->be->alloc_host(f->be, total * sizeof(float), "captured sites", (void **)&sl->host));
        sl->cap = total;
    }
    if (sl->seq_cap < 3 * f->pk->n_seq) {
        free(sl->seq);
        sl->seq_cap = 0;
        if (!(sl->seq = ss_malloc((size_t)(3 * f->pk->n_seq) * sizeof(int64_t) + 1, "batch packing"))) return SS_ERR_NOMEM;
        sl->seq_cap = 3 * f->pk->n_seq;
    }
    sl->be = f->be;
    sl->cfg = c;
    sl->hook = f->o->hook;
    sl->hook_ctx = f->o->hook_ctx;
    for (int i = 0; i < ns; i++) sl->off[i] = -1;
    f->cap = cap;
    f->arena = sl->dev;
    f->arena_host = sl->host;
    f->arena_off = sl->off;
    return SS_OK;
}

/* The pass's sites start for the host; the previous pass's go to the hook. */
static ss_status capture_pass_done(ss_hook_ctx *f) {
    ss_capture *cap = f->cap;
    capture_slot *sl = &cap->slot[cap->cur];
    const ss_packing *pk = f->pk;
    cap->cur ^= 1;
    if (f->arena_used) {
        const int64_t n = pk->n_seq;
        memcpy(sl->seq, pk->start, (size_t)n * sizeof(int64_t));
        memcpy(sl->seq + n, pk->len, (size_t)n * sizeof(int64_t));
        memcpy(sl->seq + 2 * n, f->pattern_off, (size_t)n * sizeof(int64_t));
        sl->pk = (ss_packing){n, pk->rows, sl->seq, sl->seq + n, pk->first};
        SS_TRY(f->be->download_async(f->be, sl->host, sl->dev, f->arena_used * sizeof(float), &sl->ticket));
        sl->pending = 1;
        f->arena_used = 0;
    }
    return capture_deliver(&cap->slot[cap->cur]);
}

ss_status ss_hook_ctx_open(ss_hook_ctx *f, const ss_model *m, const ss_backend *be, const ss_forward_opts *o,
                           const ss_packing *pk) {
    const ss_config *c = &m->cfg;
    *f = (ss_hook_ctx){.m = m, .be = be, .o = o && o->want && o->hook ? o : NULL, .pk = pk};
    if (!(f->pattern_off = ss_malloc((size_t)pk->n_seq * sizeof(int64_t) + 1, "pattern offsets"))) return SS_ERR_NOMEM;
    for (int64_t s = 0; s < pk->n_seq; s++) {
        f->pattern_off[s] = f->pat_total;
        f->pat_total += c->n_head * pk->len[s] * pk->len[s];
    }
    if (!f->o) return SS_OK;
    int want_pattern = 0;
    for (int l = 0; l < c->n_layer; l++) want_pattern |= ss_hook_wants(f, SS_SITE_PATTERN, l);
    if (want_pattern) SS_TRY(be->alloc(be, (size_t)f->pat_total * sizeof(float), "attention pattern", (void **)&f->pattern));
    const size_t Rs = (size_t)pk->rows;
    if (be->host_memory || o->hook_on_device) return SS_OK;
    if (o->read_only) {
        size_t total = 0;
        ss_site s;
        for (int i = 0; i < ss_sites_count(c); i++) {
            if (!o->want[i]) continue;
            ss_site_get(c, i, &s);
            total += s.per_token ? Rs * (size_t)s.width : (size_t)f->pat_total;
        }
        if (o->capture) return capture_take(f, o->capture, total);
        if (!(f->arena_off = ss_malloc((size_t)ss_sites_count(c) * sizeof(int64_t), "site offsets"))) return SS_ERR_NOMEM;
        for (int i = 0; i < ss_sites_count(c); i++) f->arena_off[i] = -1;
        SS_TRY(be->alloc(be, total * sizeof(float), "captured sites", (void **)&f->arena));
        return be->alloc_host(be, total * sizeof(float), "captured sites", (void **)&f->arena_host);
    }
    const ss_dims D = ss_model_dims(c);
    int64_t wmax = D.qw > D.pw ? D.qw : D.pw;
    if (D.d > wmax) wmax = D.d;
    size_t widest = Rs * (size_t)wmax;
    size_t stage = (size_t)f->pat_total > widest ? (size_t)f->pat_total : widest;
    if (!(f->stage = ss_malloc(stage * sizeof(float), "site staging buffer"))) return SS_ERR_NOMEM;
    return SS_OK;
}

/* On a device backend, a hook that may edit sees the rows through a host
 * staging buffer and back, so that its edits reach the model. */
ss_status ss_hook_site(ss_hook_ctx *f, ss_site_kind kind, int layer, float *buf, size_t n_floats, int64_t offset,
                       int64_t ld) {
    if (!ss_hook_wants(f, kind, layer)) return SS_OK;
    int id = ss_site_id(&f->m->cfg, kind, layer);
    ss_site s;
    ss_site_get(&f->m->cfg, id, &s);
    if (f->be->host_memory || f->o->hook_on_device)
        return f->o->hook(f->o->hook_ctx, &s, buf + offset, ld, f->pk, f->pattern_off);
    if (f->arena) { /* read-only: gather now, hand over after the pass */
        int64_t rows = s.per_token ? f->pk->rows : 1, width = s.per_token ? s.width : (int64_t)n_floats;
        SS_TRY(f->be->copy_rows(f->be, f->arena + f->arena_used, buf + offset, s.per_token ? ld : width, rows, width));
        f->arena_off[id] = (int64_t)f->arena_used;
        f->arena_used += (size_t)(rows * width);
        return SS_OK;
    }
    /* buf holds n_floats (the site's rows, interleaved with others when ld > width). */
    size_t bytes = n_floats * sizeof(float);
    SS_TRY(f->be->download(f->be, f->stage, buf, bytes));
    SS_TRY(f->o->hook(f->o->hook_ctx, &s, f->stage + offset, ld, f->pk, f->pattern_off));
    return f->be->upload(f->be, buf, f->stage, bytes);
}

ss_status ss_hook_ctx_deliver(ss_hook_ctx *f) {
    if (f->cap) {
        if (f->delivered) return SS_OK;
        f->delivered = 1;
        return capture_pass_done(f);
    }
    if (!f->arena || !f->arena_used) return SS_OK;
    const ss_config *c = &f->m->cfg;
    SS_TRY(f->be->download(f->be, f->arena_host, f->arena, f->arena_used * sizeof(float)));
    ss_site s;
    for (int i = 0; i < ss_sites_count(c); i++) {
        if (f->arena_off[i] < 0) continue;
        ss_site_get(c, i, &s);
        SS_TRY(f->o->hook(f->o->hook_ctx, &s, f->arena_host + f->arena_off[i], s.per_token ? s.width : 0, f->pk,
                          f->pattern_off));
        f->arena_off[i] = -1;
    }
    f->arena_used = 0;
    return SS_OK;
}

void ss_hook_ctx_close(ss_hook_ctx *f) {
    if (f->pattern) f->be->release(f->be, f->pattern);
    if (!f->cap) { /* a capture's slot stays with the capture */
        if (f->arena) f->be->release(f->be, f->arena);
        if (f->arena_host) f->be->release_host(f->be, f->arena_host);
        free(f->arena_off);
    }
    free(f->stage);
    free(f->pattern_off);
    memset(f, 0, sizeof *f);
}

ss_status ss_packing_check(const ss_model *m, const int32_t *tokens, const ss_packing *pk) {
    const ss_config *c = &m->cfg;
    int64_t rows = 0;
    for (int64_t s = 0; s < pk->n_seq; s++) {
        if (pk->len[s] < 1 || pk->len[s] > c->n_positions || pk->start[s] != rows)
            return ss_errorf(SS_ERR_ARG, "sequence %lld has length %lld; lengths must be 1..%lld (n_positions)",
                             (long long)s, (long long)pk->len[s], (long long)c->n_positions);
        rows += pk->len[s];
    }
    if (rows != pk->rows)
        return ss_errorf(SS_ERR_INTERNAL, "packing rows %lld != sum of lengths %lld", (long long)pk->rows, (long long)rows);
    for (int64_t r = 0; r < rows; r++)
        if (tokens[r] < 0 || tokens[r] >= c->vocab_size)
            return ss_errorf(SS_ERR_ARG, "token id %d is outside the vocabulary (0..%lld)", tokens[r],
                             (long long)c->vocab_size - 1);
    return SS_OK;
}

/* ---- the key/value cache (ss_kv_cache) ---- */

struct ss_kv_cache {
    const ss_backend *be;
    const ss_model *m;
    void *buf;      /* [n_layer][n_ctx][w]: each position's keys, then its values */
    int dtype;      /* buf's elements: SS_WDTYPE_F32, or a 16-bit model's F16/BF16 */
    int64_t n_ctx, w, len;
};

/* Bytes of one element of the cache. */
static size_t kv_elem_bytes(const ss_kv_cache *kv) { return kv->dtype == SS_WDTYPE_F32 ? sizeof(float) : 2; }

ss_status ss_kv_cache_open(const ss_model *m, const ss_backend *be, int64_t n_ctx, ss_kv_cache **out) {
    *out = NULL;
    if (!be->attention_kv)
        return ss_errorf(SS_ERR_UNSUPPORTED, "backend %s has no key/value cache (attention_kv)", be->name);
    const ss_dims D = ss_model_dims(&m->cfg);
    if (n_ctx < 1 || n_ctx > m->cfg.n_positions)
        return ss_errorf(SS_ERR_ARG, "key/value cache of %lld positions; 1..%lld (n_positions)", (long long)n_ctx,
                         (long long)m->cfg.n_positions);
    const ss_gpt2_weights *w = ss_model_weights(m, be);
    if (!w) return ss_errorf(SS_ERR_INTERNAL, "model weights were not placed on backend %s", be->name);
    ss_kv_cache *kv = ss_calloc(1, sizeof *kv, "key/value cache");
    if (!kv) return SS_ERR_NOMEM;
    /* A backend that writes 16-bit rows keeps a 16-bit model's keys and values
     * in its dtype, half fp32's bytes (docs/DECISIONS.md, "The key/value cache") */
    const int dt = be->copy_rows16 && (w->wdtype == SS_WDTYPE_BF16 || w->wdtype == SS_WDTYPE_F16) ? w->wdtype
                                                                                                : SS_WDTYPE_F32;
    *kv = (ss_kv_cache){.be = be, .m = m, .dtype = dt, .n_ctx = n_ctx, .w = 2 * D.Hkv * D.dh};
    ss_status st = be->alloc(be, (size_t)(m->cfg.n_layer * n_ctx * kv->w) * kv_elem_bytes(kv), "key/value cache",
                             &kv->buf);
    if (st) {
        free(kv);
        return st;
    }
    *out = kv;
    return SS_OK;
}

int64_t ss_kv_cache_len(const ss_kv_cache *kv) { return kv->len; }

int ss_kv_cache_dtype(const ss_kv_cache *kv) { return kv->dtype; }

void ss_kv_cache_close(ss_kv_cache *kv) {
    if (!kv) return;
    if (kv->buf) kv->be->release(kv->be, kv->buf);
    free(kv);
}

/* Appends the pass's keys and values (adjacent in qkv) to layer l's cache and
 * attends to everything cached. The first pass (the prompt, nothing cached)
 * is ordinary attention over its own rows: attention_kv reads each key once
 * per query row, where the tiled kernels share a tile of keys among rows (on
 * the CPU the two are one task, so the numbers are the same). */
static ss_status attention_cached(ss_hook_ctx *f, int l, const ss_block_bufs *b, float scale) {
    const ss_backend *be = f->be;
    const ss_dims D = ss_model_dims(&f->m->cfg);
    ss_kv_cache *kv = f->kv;
    const ss_packing *pk = f->pk;
    const int64_t R = pk->rows, kvw = D.Hkv * D.dh;
    const size_t eb = kv_elem_bytes(kv);
    char *layer = (char *)kv->buf + (size_t)(l * kv->n_ctx * kv->w) * eb, *end = layer + (size_t)(kv->len * kv->w) * eb;
    if (kv->dtype == SS_WDTYPE_F32)
        SS_TRY(be->copy_rows(be, (float *)end, b->qkv + D.zw, D.qw, R, kv->w));
    else
        SS_TRY(be->copy_rows16(be, end, kv->dtype, b->qkv + D.zw, D.qw, R, kv->w));
    if (!kv->len)
        return be->attention(be, b->z, b->qkv, b->qkv + D.zw, b->qkv + D.zw + kvw, D.qw, pk->n_seq, pk->start, pk->len,
                              D.H, D.Hkv, D.dh, scale, NULL, NULL);
    return be->attention_kv(be, b->z, b->qkv, D.qw, layer, layer + (size_t)kvw * eb, kv->dtype, kv->w, R, kv->len,
                            D.H, D.Hkv, D.dh, scale);
}

/* ---- one block ---- */

/* Layer norm of either family: LayerNorm (GPT-2) or RMSNorm (Llama). */
static ss_status norm(const ss_backend *be, const ss_config *c, float *out, const float *x, const void *w,
                      const void *b, int64_t R, int64_t d) {
    return c->family == SS_FAMILY_LLAMA ? be->rmsnorm(be, out, x, w, R, d, (float)c->ln_eps)
                                        : be->layernorm(be, out, x, w, b, R, d, (float)c->ln_eps);
}

/* The attention half of a block up to z: the norm, the QKV product, q/k/v's
 * hooks and rotation, attention (with the pattern when wp). norm16: the
 * backend's norm_matmul may take the norm and the product. *z_done: the
 * attention op also ran the output product into x (nothing reads z or
 * attn_out), and z's contents are unspecified. */
static ss_status block_attention(ss_hook_ctx *f, const ss_gpt2_weights *w, int l, float *x, const ss_block_bufs *b,
                                 int norm16, int wp, int *z_done) {
    const ss_backend *be = f->be;
    const ss_config *c = &f->m->cfg;
    const ss_packing *pk = f->pk;
    const ss_gpt2_layer *L = &w->layers[l];
    const ss_dims D = ss_model_dims(c);
    const int64_t d = D.d, R = pk->rows, kvw = D.Hkv * D.dh;
    const size_t Rd = (size_t)(R * d), Rq = (size_t)(R * D.qw);
    const float scale = c->scale_attn_weights ? (float)(1.0 / sqrt((double)D.dh)) : 1.0f;
    /* nobody reads z or the output product's result: a low-precision attention op may run
     * that product itself (ss_attn_out) */
    const unsigned l16 = be->lowp16;
    const ss_attn_out out = {x, L->proj_w, w->wdtype, L->proj_b, R, d, w->trans, (l16 & SS_LOWP16_Z) != 0};
    const ss_attn_out *op = be->matmul_add && !ss_hook_wants(f, SS_SITE_Z, l) && !ss_hook_wants(f, SS_SITE_ATTN_OUT, l)
                                ? &out
                                : NULL;
    *z_done = 0;
    /* nobody reads q, k, v or their rotations, nor the pattern, nor a backward pass: the
     * QKV product may write them in bf16 for a tensor-core attention (rotating them there),
     * normalising x itself unless the norm's site is wanted */
    if (be->attention_lowp_qkv && (l16 & SS_LOWP16_QKV) && w->wdtype == SS_WDTYPE_BF16 && !wp && !b->keep_pre && !f->kv &&
        !ss_hook_wants(f, SS_SITE_Q, l) && !ss_hook_wants(f, SS_SITE_K, l) && !ss_hook_wants(f, SS_SITE_V, l) &&
        !(D.llama && (ss_hook_wants(f, SS_SITE_ROT_Q, l) || ss_hook_wants(f, SS_SITE_ROT_K, l)))) {
        const int ln_wanted = ss_hook_wants(f, SS_SITE_LN1, l);
        if (ln_wanted) {
            SS_TRY(norm(be, c, b->ln1, x, L->ln1_w, L->ln1_b, R, d));
            SS_TRY(ss_hook_site(f, SS_SITE_LN1, l, b->ln1, Rd, 0, d));
        }
        SS_TRY(be->attention_lowp_qkv(be, b->z, b->qkv, b->ln1, ln_wanted ? b->ln1 : x, ln_wanted ? NULL : L->ln1_w,
                                      L->ln1_b, (float)c->ln_eps, D.llama, L->attn_w, w->wdtype, L->attn_b, w->trans,
                                      R, d, pk->n_seq, pk->start, pk->len, D.H, D.Hkv, D.dh, scale,
                                      D.llama ? f->pos_b : NULL, D.llama ? w->rope_inv_freq : NULL, op));
        *z_done = op != NULL;
    } else {
        if (norm16 && !ss_hook_wants(f, SS_SITE_LN1, l)) {
            SS_TRY(be->norm_matmul(be, b->qkv, b->ln1, x, L->ln1_w, L->ln1_b, (float)c->ln_eps, D.llama, L->attn_w,
                                   w->wdtype, L->attn_b, R, D.qw, d, w->trans, 0, c->act));
        } else {
            SS_TRY(norm(be, c, b->ln1, x, L->ln1_w, L->ln1_b, R, d));
            SS_TRY(ss_hook_site(f, SS_SITE_LN1, l, b->ln1, Rd, 0, d));
            SS_TRY(ss_linear(be, w, b->qkv, b->ln1, L->attn_w, L->attn_b, R, D.qw, d));
        }
        /* q, k and v share one buffer; each hook sees it whole with its own offset. */
        SS_TRY(ss_hook_site(f, SS_SITE_Q, l, b->qkv, Rq, 0, D.qw));
        SS_TRY(ss_hook_site(f, SS_SITE_K, l, b->qkv, Rq, D.zw, D.qw));
        SS_TRY(ss_hook_site(f, SS_SITE_V, l, b->qkv, Rq, D.zw + kvw, D.qw));
        if (D.llama) {
            /* q and k are adjacent: one rotation covers the H + Hkv heads. */
            SS_TRY(be->rope(be, b->qkv, D.qw, R, D.H + D.Hkv, D.dh, f->pos_b, w->rope_inv_freq, 0));
            SS_TRY(ss_hook_site(f, SS_SITE_ROT_Q, l, b->qkv, Rq, 0, D.qw));
            SS_TRY(ss_hook_site(f, SS_SITE_ROT_K, l, b->qkv, Rq, D.zw, D.qw));
        }
        /* A bf16 model's attention may round its operands to bf16 as its products
         * do (tensor cores on a GPU), unless its pattern is wanted or a backward
         * pass, which differentiates fp32 attention, will read this block. */
        if (f->kv) {
            SS_TRY(attention_cached(f, l, b, scale));
        } else if (be->attention_lowp && w->wdtype == SS_WDTYPE_BF16 && !wp && !b->keep_pre) {
            SS_TRY(be->attention_lowp(be, b->z, b->qkv, b->qkv + D.zw, b->qkv + D.zw + kvw, D.qw, pk->n_seq, pk->start,
                                      pk->len, D.H, D.Hkv, D.dh, scale, op));
            *z_done = op != NULL;
        } else
            SS_TRY(be->attention(be, b->z, b->qkv, b->qkv + D.zw, b->qkv + D.zw + kvw, D.qw, pk->n_seq, pk->start,
                                 pk->len, D.H, D.Hkv, D.dh, scale, wp ? f->pattern : NULL, f->pattern_off));
    }
    return SS_OK;
}

/* The product that ends a block's half, x += a · W + bias (a [R, K]): added
 * straight into the residual stream where nobody reads its site (attn_out or
 * mlp_out), else into out, reported there, then added. */
static ss_status residual_product(ss_hook_ctx *f, const ss_gpt2_weights *w, int l, float *x, const float *a,
                                  const void *W, const void *bias, int64_t K, ss_site_kind site, float *out) {
    const ss_backend *be = f->be;
    const int64_t R = f->pk->rows, d = ss_model_dims(&f->m->cfg).d;
    if (be->matmul_add && !ss_hook_wants(f, site, l))
        return be->matmul_add(be, x, a, W, w->wdtype, bias, R, d, K, w->trans);
    SS_TRY(ss_linear(be, w, out, a, W, bias, R, d, K));
    SS_TRY(ss_hook_site(f, site, l, out, (size_t)(R * d), 0, d));
    return be->add(be, x, x, out, R * d);
}

ss_status ss_block_forward(ss_hook_ctx *f, const ss_gpt2_weights *w, int l, float *x, const ss_block_bufs *b) {
    const ss_backend *be = f->be;
    const ss_config *c = &f->m->cfg;
    const ss_packing *pk = f->pk;
    const ss_gpt2_layer *L = &w->layers[l];
    const ss_dims D = ss_model_dims(c);
    const int64_t d = D.d, R = pk->rows;
    const size_t Rd = (size_t)(R * d), Rpw = (size_t)(R * D.pw), Rdm = (size_t)(R * D.dm);

    if (!b->resumed) SS_TRY(ss_hook_site(f, SS_SITE_RESID_PRE, l, x, Rd, 0, d));
    if (b->save_pre) SS_TRY(be->copy_rows(be, b->save_pre, x, d, R, d));
    /* nobody reads the normalised rows: the backend may write them in the product's 16 bits */
    const unsigned l16 = be->lowp16;
    const int norm16 = be->norm_matmul && (l16 & SS_LOWP16_NORM) &&
                       (w->wdtype == SS_WDTYPE_BF16 || w->wdtype == SS_WDTYPE_F16) && !b->keep_pre;
    const int wp = ss_hook_wants(f, SS_SITE_PATTERN, l);
    int z_done;
    SS_TRY(block_attention(f, w, l, x, b, norm16, wp, &z_done));
    /* The pattern is reported after z is computed from it, so editing it has no effect. */
    if (wp) SS_TRY(ss_hook_site(f, SS_SITE_PATTERN, l, f->pattern, (size_t)f->pat_total, 0, 0));
    if (!z_done) { /* else the attention op added its output product into x already */
        SS_TRY(ss_hook_site(f, SS_SITE_Z, l, b->z, (size_t)(R * D.zw), 0, D.zw));
        SS_TRY(residual_product(f, w, l, x, b->z, L->proj_w, L->proj_b, D.zw, SS_SITE_ATTN_OUT, b->attn_out));
    }
    SS_TRY(ss_hook_site(f, SS_SITE_RESID_MID, l, x, Rd, 0, d));
    if (b->save_mid) SS_TRY(be->copy_rows(be, b->save_mid, x, d, R, d));
    const int mlp16 = be->mlp_add && (l16 & SS_LOWP16_MLP) && !b->keep_pre && !ss_hook_wants(f, SS_SITE_MLP_PRE, l) &&
                      !(D.llama && ss_hook_wants(f, SS_SITE_MLP_PRE_LINEAR, l)) &&
                      !ss_hook_wants(f, SS_SITE_MLP_POST, l) && !ss_hook_wants(f, SS_SITE_MLP_OUT, l);
    /* nobody reads the normalised rows: the MLP's first product (or mlp_add) takes them in 16 bits */
    const int ln2_16 = norm16 && !ss_hook_wants(f, SS_SITE_LN2, l);
    if (!ln2_16) {
        SS_TRY(norm(be, c, b->ln2, x, L->ln2_w, L->ln2_b, R, d));
        SS_TRY(ss_hook_site(f, SS_SITE_LN2, l, b->ln2, Rd, 0, d));
    }
    if (mlp16) {
        /* nobody reads the MLP's insides: the backend may keep them in 16 bits */
        SS_TRY(be->mlp_add(be, x, b->pre, b->post, b->ln2, ln2_16 ? L->ln2_w : NULL, L->ln2_b, (float)c->ln_eps,
                           D.llama, L->fc_w, L->fc_b, L->fc2_w, L->fc2_b, w->wdtype, R, d, D.dm, w->trans,
                           D.llama ? SS_ACT_SILU : c->act));
        return ss_hook_site(f, SS_SITE_RESID_POST, l, x, Rd, 0, d);
    }
    if (!D.llama && be->matmul_gelu && !b->keep_pre && !ss_hook_wants(f, SS_SITE_MLP_PRE, l)) {
        /* nobody reads the pre-activation: the backend may fuse the GELU into the product */
        if (ln2_16)
            SS_TRY(be->norm_matmul(be, b->post, b->ln2, x, L->ln2_w, L->ln2_b, (float)c->ln_eps, 0, L->fc_w, w->wdtype,
                                   L->fc_b, R, D.dm, d, w->trans, 1, c->act));
        else
            SS_TRY(be->matmul_gelu(be, b->post, b->ln2, L->fc_w, w->wdtype, L->fc_b, R, D.dm, d, w->trans, c->act));
    } else {
        if (ln2_16)
            SS_TRY(be->norm_matmul(be, b->pre, b->ln2, x, L->ln2_w, L->ln2_b, (float)c->ln_eps, D.llama, L->fc_w,
                                   w->wdtype, L->fc_b, R, D.pw, d, w->trans, 0, c->act));
        else
            SS_TRY(ss_linear(be, w, b->pre, b->ln2, L->fc_w, L->fc_b, R, D.pw, d));
        SS_TRY(ss_hook_site(f, SS_SITE_MLP_PRE, l, b->pre, Rpw, 0, D.pw));
        if (D.llama) {
            SS_TRY(ss_hook_site(f, SS_SITE_MLP_PRE_LINEAR, l, b->pre, Rpw, D.dm, D.pw));
            SS_TRY(be->swiglu(be, b->post, b->pre, R, D.dm));
        } else {
            SS_TRY(be->gelu(be, b->post, b->pre, R * D.dm, c->act));
        }
    }
    SS_TRY(ss_hook_site(f, SS_SITE_MLP_POST, l, b->post, Rdm, 0, D.dm));
    SS_TRY(residual_product(f, w, l, x, b->post, L->fc2_w, L->fc2_b, D.dm, SS_SITE_MLP_OUT, b->mlp_out));
    return ss_hook_site(f, SS_SITE_RESID_POST, l, x, Rd, 0, d);
}

/* ---- the whole model ---- */

/* ---- pipeline stages: the residual stream between neighbours ---- */

/* Counts a wait for a neighbour that began at t0 and ends now. */
static void waited(ss_model *m, double t0) {
    const double t = ss_now();
    m->pipe_wait_s += t - t0;
    m->pipe_t1 = t;
}

void ss_model_pipe_mark(ss_model *m, int end) {
    if (!m->pipe) return;
    const double t = ss_now();
    if (end) m->pipe_t1 = t;
    else if (m->pipe_t0 == 0) m->pipe_t0 = t;
}

/* Blocks between neighbouring stages. Normally each is sent as the pass
 * reaches it: in the background where the communicator can move it while
 * this stage computes (MPI with its sender thread; up to SS_PIPE_SENDING
 * blocks in flight, so a stage runs ahead of a neighbour that is briefly
 * slower instead of waiting for it), blocking otherwise. With m->pipe_hold
 * (attribute's 1F1B schedule) the blocks a pass sends are held, and
 * ss_model_pipe_release exchanges them, between passes, for the blocks the
 * next pass will receive from the same neighbour: both sides post
 * everything before they wait, so a stage sending batch k+1's residual
 * stream forward and its neighbour sending batch k's gradient back cannot
 * wait on each other, and every transfer completes inside the exchange (no
 * send left to progress while the stage computes, where the communicator
 * cannot progress it itself). */
static ss_status send_now(ss_model *m, int to, int tag, const void *buf, size_t bytes) {
    const double t0 = ss_now();
    ss_status st = ss_comm_send(m->pipe, to, tag, buf, bytes);
    waited(m, t0);
    return st ? ss_error_context(st, "pipeline stage %d sending to stage %d", m->stage, to) : SS_OK;
}

/* Waits for the oldest block in flight and frees it. */
static ss_status sent_oldest(ss_model *m) {
    const double t0 = ss_now();
    ss_status st = ss_comm_wait(m->pipe, m->send_req[0]);
    waited(m, t0);
    if (st) st = ss_error_context(st, "pipeline stage %d sending to stage %d", m->stage, m->sending[0].peer);
    free(m->sending[0].buf);
    m->n_sending--;
    memmove(m->sending, m->sending + 1, (size_t)m->n_sending * sizeof *m->sending);
    memmove(m->send_req, m->send_req + 1, (size_t)m->n_sending * sizeof *m->send_req);
    return st;
}

/* Sends `owned` (malloc'd; the model frees it) in the background. */
static ss_status send_background(ss_model *m, int to, int tag, void *owned, size_t bytes) {
    ss_status st = m->n_sending == SS_PIPE_SENDING ? sent_oldest(m) : SS_OK;
    ss_comm_req *rq = NULL;
    if (!st) st = ss_comm_isend(m->pipe, to, tag, owned, bytes, &rq);
    if (st) {
        free(owned);
        return ss_error_context(st, "pipeline stage %d sending to stage %d", m->stage, to);
    }
    m->sending[m->n_sending] = (ss_pipe_block){owned, bytes, to, tag};
    m->send_req[m->n_sending++] = rq;
    return SS_OK;
}

ss_status ss_model_pipe_flush(ss_model *m) {
    ss_status st = SS_OK;
    while (m->n_sending) {
        ss_status w = sent_oldest(m);
        if (!st) st = w;
    }
    return st;
}

static ss_status send_held(ss_model *m) {
    ss_status st = SS_OK;
    for (int i = 0; i < m->n_held; i++) {
        if (!st) st = send_now(m, m->held[i].peer, m->held[i].tag, m->held[i].buf, m->held[i].bytes);
        free(m->held[i].buf);
    }
    m->n_held = 0;
    return st;
}

/* Holds `owned` (malloc'd; the model frees it) for the exchange; blocks for
 * another neighbour (none in a 1F1B pass) go first. */
static ss_status hold(ss_model *m, int to, int tag, void *owned, size_t bytes) {
    ss_status st = m->n_held && (m->held[0].peer != to || m->n_held == SS_PIPE_HELD) ? send_held(m) : SS_OK;
    if (st) {
        free(owned);
        return st;
    }
    m->held[m->n_held++] = (ss_pipe_block){owned, bytes, to, tag};
    return SS_OK;
}

/* Whether a block sent now goes in the background (then the model takes a copy). */
static int background(const ss_model *m) { return !m->pipe_hold && ss_comm_sends_in_background(m->pipe); }

ss_status ss_pipe_send_bytes(const ss_model *m, int to, int tag, const void *buf, size_t bytes) {
    ss_model *mm = (ss_model *)m; /* the wait counters and blocks in transit are the model's only mutable state */
    if (!m->pipe_hold && !background(m)) return send_now(mm, to, tag, buf, bytes);
    void *copy = ss_malloc(bytes + 1, "a block for a neighbouring stage");
    if (!copy) return SS_ERR_NOMEM;
    memcpy(copy, buf, bytes);
    return m->pipe_hold ? hold(mm, to, tag, copy, bytes) : send_background(mm, to, tag, copy, bytes);
}

ss_status ss_pipe_recv_bytes(const ss_model *m, int from, int tag, void *buf, size_t bytes) {
    ss_model *mm = (ss_model *)m;
    for (int i = 0; i < mm->n_ahead; i++) {
        ss_pipe_block *a = &mm->ahead[i];
        if (a->peer != from || a->tag != tag) continue;
        if (a->bytes != bytes)
            return ss_errorf(SS_ERR_INTERNAL, "pipeline stage %d: %zu bytes fetched from stage %d, %zu expected", m->stage,
                             a->bytes, from, bytes);
        memcpy(buf, a->buf, bytes);
        free(a->buf);
        memmove(a, a + 1, (size_t)(mm->n_ahead - i - 1) * sizeof *a);
        mm->n_ahead--;
        return SS_OK;
    }
    const double t0 = ss_now();
    ss_status st = ss_comm_recv(m->pipe, from, tag, buf, bytes);
    waited(mm, t0);
    return st ? ss_error_context(st, "pipeline stage %d receiving from stage %d", m->stage, from) : SS_OK;
}

ss_status ss_pipe_recv(const ss_model *m, const ss_backend *be, int from, int tag, float *x, size_t n) {
    float *h = be->host_memory ? x : ss_malloc(n * sizeof(float), "residual stream from the previous stage");
    if (!h) return SS_ERR_NOMEM;
    ss_status st = ss_pipe_recv_bytes(m, from, tag, h, n * sizeof(float));
    if (!st && h != x) st = be->upload(be, x, h, n * sizeof(float));
    if (h != x) free(h);
    return st;
}

ss_status ss_pipe_send(const ss_model *m, const ss_backend *be, int to, int tag, const float *x, size_t n) {
    if (be->host_memory) return ss_pipe_send_bytes(m, to, tag, x, n * sizeof(float));
    float *h = ss_malloc(n * sizeof(float) + 1, "residual stream for the next stage");
    if (!h) return SS_ERR_NOMEM;
    ss_status st = be->download(be, h, x, n * sizeof(float));
    /* The download is the copy that a held or background send needs. */
    if (!st && m->pipe_hold) return hold((ss_model *)m, to, tag, h, n * sizeof(float));
    if (!st && background(m)) return send_background((ss_model *)m, to, tag, h, n * sizeof(float));
    if (!st) st = ss_pipe_send_bytes(m, to, tag, h, n * sizeof(float));
    free(h);
    return st;
}

/* The exchange: every held block out, the next pass's blocks from the same
 * neighbour in (`want` of them, in the order the pass receives them). */
static ss_status exchange(ss_model *m, int from, int n_want, const int *tags, const size_t *bytes) {
    ss_comm_req *req[SS_PIPE_HELD] = {0};
    ss_status st = m->n_ahead + n_want > SS_PIPE_HELD
                       ? ss_errorf(SS_ERR_INTERNAL, "pipeline stage %d: blocks fetched ahead were not used", m->stage)
                       : SS_OK;
    int posted = 0;
    const double t0 = ss_now();
    for (; posted < m->n_held && !st; posted++)
        st = ss_comm_isend(m->pipe, m->held[posted].peer, m->held[posted].tag, m->held[posted].buf, m->held[posted].bytes,
                           &req[posted]);
    for (int i = 0; i < n_want && !st; i++) {
        void *in = ss_malloc(bytes[i] + 1, "a block from a neighbouring stage");
        if (!in) { st = SS_ERR_NOMEM; break; }
        if ((st = ss_comm_recv(m->pipe, from, tags[i], in, bytes[i]))) { free(in); break; }
        m->ahead[m->n_ahead++] = (ss_pipe_block){in, bytes[i], from, tags[i]};
    }
    for (int i = 0; i < posted; i++) { /* every posted send is waited for, even after an error */
        ss_status w = ss_comm_wait(m->pipe, req[i]);
        if (!st) st = w;
    }
    waited(m, t0);
    for (int i = 0; i < m->n_held; i++) free(m->held[i].buf);
    m->n_held = 0;
    return st ? ss_error_context(st, "pipeline stage %d exchanging blocks with stage %d", m->stage, from) : SS_OK;
}

ss_status ss_model_pipe_release(ss_model *m, ss_pipe_next next, int64_t rows, int64_t n_seq, int n_passes, int grad) {
    if (!m->pipe) return SS_OK;
    const size_t rb = (size_t)(rows * m->cfg.n_embd) * sizeof(float);
    int tags[SS_PIPE_HELD], from = -1, n = 0;
    size_t bytes[SS_PIPE_HELD];
    if (next == SS_PIPE_NEXT_FORWARD && m->stage > 0) { /* each pass's residual stream, from the previous stage */
        from = m->stage - 1;
        for (; n < n_passes && n < SS_PIPE_HELD; n++) tags[n] = SS_PIPE_TAG_RESID, bytes[n] = rb;
    } else if (next == SS_PIPE_NEXT_BACKWARD && m->stage + 1 < m->n_stages) { /* the metric if any, then the gradient */
        from = m->stage + 1;
        if (n_seq > 0) tags[n] = SS_PIPE_TAG_METRIC, bytes[n++] = (size_t)n_seq * sizeof(double);
        if (grad) tags[n] = SS_PIPE_TAG_GRAD, bytes[n++] = rb;
    }
    if (!m->n_held) return SS_OK;
    if (from < 0 || from != m->held[0].peer) return send_held(m);
    return exchange(m, from, n, tags, bytes);
}

enum { B_TOK, B_POS, B_X, B_TMP, B_LN, B_QKV, B_Z, B_H, B_H2, B_LOGITS, B_COUNT };

ss_status ss_forward(const ss_model *m, const ss_backend *be, const int32_t *tokens, const ss_packing *pk,
                     const ss_forward_opts *opts, float **logits) {
    return ss_forward_taped(m, be, tokens, pk, opts, logits, NULL);
}

ss_status ss_forward_taped(const ss_model *m, const ss_backend *be, const int32_t *tokens, const ss_packing *pk,
                           const ss_forward_opts *opts, float **logits, ss_tape *tape) {
    const ss_config *c = &m->cfg;
    const ss_dims D = ss_model_dims(c);
    const int64_t d = c->n_embd, V = c->vocab_size, R = pk->rows;
    if (logits) *logits = NULL;
    const ss_gpt2_weights *w = ss_model_weights(m, be);
    if (!w) return ss_errorf(SS_ERR_INTERNAL, "model weights were not placed on backend %s", be->name);
    if (D.llama && (!be->rmsnorm || !be->rope || !be->swiglu))
        return ss_errorf(SS_ERR_UNSUPPORTED, "backend %s lacks the Llama family's ops (rmsnorm, rope, swiglu)", be->name);
    SS_TRY(ss_packing_check(m, tokens, pk));
    ss_kv_cache *kv = opts ? opts->kv : NULL;
    if (kv && (kv->m != m || kv->be != be || pk->n_seq != 1 || kv->len + R > kv->n_ctx || tape || opts->start_layer ||
               (opts->want && opts->hook) || m->pipe || m->first_layer || m->end_layer < c->n_layer))
        return ss_errorf(SS_ERR_ARG,
                         "forward: a key/value cache takes one sequence of this model and backend that fits its %lld "
                         "positions (%lld cached, %lld new), on the whole model, without sites, a backward pass or "
                         "start_layer",
                         (long long)kv->n_ctx, (long long)kv->len, (long long)R);
    const int64_t p0 = kv ? kv->len : 0; /* the first row's position */
    const double t_start = ss_now();
    ss_model_pipe_mark((ss_model *)m, 0);
    /* Only the last stage of a pipeline has the head. */
    const int head = opts && opts->logits != SS_LOGITS_NONE && (logits || tape || opts->logits_hook) &&
                     m->end_layer >= c->n_layer;
    const int64_t n_lrows = !head ? 0 : opts->logits == SS_LOGITS_ALL ? R : pk->n_seq;
    /* With a tape, its buffers stand in for the forward's own. */
    const int own_layers = !tape || tape->recompute;
    const size_t Rs = (size_t)R;
    size_t bytes[B_COUNT] = {
        [B_TOK] = tape ? 0 : Rs * sizeof(int32_t), [B_POS] = tape ? 0 : Rs * sizeof(int32_t),
        [B_X] = tape ? 0 : Rs * (size_t)d * sizeof(float), [B_TMP] = Rs * (size_t)d * sizeof(float),
        [B_LN] = own_layers ? Rs * (size_t)d * sizeof(float) : 0,
        [B_QKV] = own_layers ? Rs * (size_t)D.qw * sizeof(float) : 0,
        [B_Z] = own_layers ? Rs * (size_t)D.zw * sizeof(float) : 0,
        [B_H] = own_layers ? Rs * (size_t)D.pw * sizeof(float) : 0,
        [B_H2] = own_layers ? Rs * (size_t)D.dm * sizeof(float) : 0,
        [B_LOGITS] = tape ? 0 : (size_t)n_lrows * (size_t)V * sizeof(float),
    };
    static const char *const what[B_COUNT] = {"tokens", "positions", "residual stream", "activations", "activations",
                                              "q/k/v", "attention output", "MLP activations", "MLP activations",
                                              "logits"};
    void *buf[B_COUNT] = {0};
    ss_hook_ctx f = {0};
    int32_t *pos = ss_malloc(Rs * sizeof(int32_t) + 1, "positions");
    float *lg = NULL;
    ss_status st = SS_ERR_NOMEM;
    if (!pos) goto done;
    for (int i = 0; i < B_COUNT; i++)
        if (bytes[i] && (st = be->alloc(be, bytes[i], what[i], &buf[i]))) goto done;
    if ((st = ss_hook_ctx_open(&f, m, be, opts, pk))) goto done;
    f.kv = kv;
    int32_t *tok_b = tape ? tape->tok_b : buf[B_TOK], *pos_b = tape ? tape->pos_b : buf[B_POS];
    f.pos_b = pos_b;
    float *x = tape ? tape->resid_final : buf[B_X], *tmp = buf[B_TMP], *ln = tape ? tape->lnf : buf[B_LN];
    float *out_logits = tape ? tape->logits : buf[B_LOGITS];
    for (int64_t s = 0; s < pk->n_seq; s++)
        for (int64_t i = 0; i < pk->len[s]; i++) pos[pk->start[s] + i] = (int32_t)(p0 + i);
    if ((st = be->upload(be, tok_b, tokens, Rs * sizeof(int32_t))) || (st = be->upload(be, pos_b, pos, Rs * sizeof(int32_t))))
        goto done;

    const size_t Rd = Rs * (size_t)d;
#define RUN(call) do { if ((st = (call))) goto done; } while (0)
    const int first = opts && opts->start_layer > 0 ? opts->start_layer : 0;
    const int64_t copies = first && opts->start_copies > 1 ? opts->start_copies : 1;
    if (first > c->n_layer || (first && !opts->start_resid) || (first && tape) || R % copies) {
        st = ss_errorf(SS_ERR_ARG,
                       "forward: start_layer %d needs a residual, at most %lld layers, no backward pass and rows (%lld) "
                       "a multiple of its copies (%lld)",
                       first, (long long)c->n_layer, (long long)R, (long long)copies);
        goto done;
    }
    /* One stage of a pipeline runs its own blocks: the residual stream comes
     * from the previous stage (unless this stage holds the start) and goes to
     * the next. Every stage is called for every batch, in the same order. */
    const int last_stage = m->end_layer == c->n_layer;
    const int l0 = first > m->first_layer ? first : m->first_layer;
    if (m->end_layer <= first && !last_stage) goto finished; /* the start lies past this stage */
    if ((first > 0 && first >= m->first_layer) || (first == 0 && m->first_layer == 0)) {
        if (first) {
            /* Resume from an earlier run's residual stream: the blocks before are skipped. */
            const int64_t rc = R / copies; /* rows of one copy; copied on the backend, doubling */
            RUN(be->upload(be, x, opts->start_resid, (size_t)(rc * d) * sizeof(float)));
            for (int64_t have = rc; have < R; have += have < R - have ? have : R - have)
                RUN(be->copy_rows(be, x + have * d, x, d, have < R - have ? have : R - have, d));
        } else if (D.llama) { /* rotary models: the residual stream starts as the token embedding */
            RUN(be->embed(be, x, NULL, tok_b, pos_b, w->wte, NULL, w->wdtype, R, d));
            RUN(ss_hook_site(&f, SS_SITE_EMBED, -1, x, Rd, 0, d));
        } else {
            RUN(be->embed(be, tmp, ln, tok_b, pos_b, w->wte, w->wpe, w->wdtype, R, d));
            RUN(ss_hook_site(&f, SS_SITE_EMBED, -1, tmp, Rd, 0, d));
            RUN(ss_hook_site(&f, SS_SITE_POS_EMBED, -1, ln, Rd, 0, d));
            RUN(be->add(be, x, tmp, ln, R * d));
        }
    } else if (m->pipe) {
        RUN(ss_pipe_recv(m, be, m->stage - 1, SS_PIPE_TAG_RESID, x, Rd));
    } else {
        st = ss_errorf(SS_ERR_INTERNAL, "%s: blocks %d.. are not loaded in this process", m->dir, first);
        goto done;
    }
    ss_block_bufs shared = {.ln1 = buf[B_LN], .qkv = buf[B_QKV], .z = buf[B_Z], .attn_out = tmp, .ln2 = buf[B_LN],
                            .pre = buf[B_H], .post = buf[B_H2], .mlp_out = tmp};
    for (int l = l0; l < m->end_layer; l++) {
        ss_block_bufs b = shared;
        if (tape) {
            if (tape->recompute) b.save_pre = tape->blocks[l].save_pre;
            else b = tape->blocks[l];
            b.attn_out = b.mlp_out = tmp;
            b.keep_pre = 1; /* the backward pass reads it */
        }
        RUN(ss_block_forward(&f, w, l, x, &b));
    }
    if (!last_stage) {
        RUN(ss_pipe_send(m, be, m->stage + 1, SS_PIPE_TAG_RESID, x, Rd));
        goto finished;
    }
    RUN(norm(be, c, ln, x, w->lnf_w, w->lnf_b, R, d));
    RUN(ss_hook_site(&f, SS_SITE_LNF, -1, ln, Rd, 0, d));

    if (n_lrows) {
        const float *src = ln;
        if (opts->logits == SS_LOGITS_LAST) {
            /* Gather each sequence's last row. */
            for (int64_t s = 0; s < pk->n_seq; s++)
                RUN(be->copy_rows(be, tmp + s * d, ln + (pk->start[s] + pk->len[s] - 1) * d, d, 1, d));
            src = tmp;
        }
        RUN(be->matmul(be, out_logits, src, w->lm_head, w->wdtype, NULL, n_lrows, V, d, 1));
        if (opts->logits_hook && !tape) RUN(opts->logits_hook(opts->logits_ctx, out_logits, n_lrows, V));
    }
    /* With a capture, the previous batch's sites go to the hook here, while
     * the device still computes this one (the logits' download waits for it). */
    RUN(ss_hook_ctx_deliver(&f));
    if (n_lrows) {
        if (tape || opts->logits_hook) {
            /* stays on the backend: for the backward pass, or the hook has taken what it needs */
        } else if (be->host_memory) {
            lg = buf[B_LOGITS];
            buf[B_LOGITS] = NULL; /* handed to the caller */
        } else {
            if (!(lg = ss_malloc(bytes[B_LOGITS], "logits"))) { st = SS_ERR_NOMEM; goto done; }
            RUN(be->download(be, lg, buf[B_LOGITS], bytes[B_LOGITS]));
        }
    }
finished:
    RUN(ss_hook_ctx_deliver(&f));
    const double t_sync = ss_now();
    RUN(be->sync(be));
#undef RUN
    ((ss_model *)m)->fwd_host_s += t_sync - t_start;
    ((ss_model *)m)->fwd_sync_s += ss_now() - t_sync;
    if (logits) *logits = lg;
    lg = NULL;
    if (kv) kv->len += R; /* every layer has cached the rows */
    ss_model_pipe_mark((ss_model *)m, 1);
done: /* every failing path above has set the message */
    for (int i = 0; i < B_COUNT; i++)
        if (buf[i]) be->release(be, buf[i]);
    free(lg);
    ss_hook_ctx_close(&f);
    free(pos);
    return st;
}
