/* GPT-2: loading a Hugging Face directory into fp32 weights, and the forward
 * pass with site hooks. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "subscope/forward.h"
#include "subscope/model.h"
#include "subscope/util.h"

/* Resolves a tensor by its GPT-2 name with or without the "transformer."
 * prefix, checks its shape against the config and returns fp32 data:
 * a pointer into the mapping when possible, else a converted copy. */
static ss_status get_tensor(ss_model *m, const char *name, int ndim, const int64_t *shape, const void **out) {
    char full[256];
    const ss_tensor_info *t = ss_weights_find(m->weights, name);
    if (!t) {
        snprintf(full, sizeof full, "transformer.%s", name);
        t = ss_weights_find(m->weights, full);
        if (t) m->has_prefix = 1;
    }
    if (!t) return ss_errorf(SS_ERR_FORMAT, "%s: weights have no tensor '%s' (nor 'transformer.%s')", m->dir, name, name);
    int same = t->ndim == ndim;
    for (int i = 0; same && i < ndim; i++) same = t->shape[i] == shape[i];
    if (!same) {
        char want[96] = "", got[96] = "";
        for (int i = 0; i < ndim; i++)
            snprintf(want + strlen(want), sizeof want - strlen(want), "%s%lld", i ? "," : "", (long long)shape[i]);
        for (int i = 0; i < t->ndim; i++)
            snprintf(got + strlen(got), sizeof got - strlen(got), "%s%lld", i ? "," : "", (long long)t->shape[i]);
        return ss_errorf(SS_ERR_FORMAT, "%s: tensor '%s' has shape [%s] but config.json implies [%s]", t->file, t->name,
                         got, want);
    }
    const char *dn = ss_dtype_name(t->dtype);
    if (!strstr(m->weight_dtypes, dn) && strlen(m->weight_dtypes) + strlen(dn) + 2 < sizeof m->weight_dtypes) {
        if (m->weight_dtypes[0]) strcat(m->weight_dtypes, ",");
        strcat(m->weight_dtypes, dn);
    }
    size_t n;
    SS_TRY(ss_dims_product(shape, ndim, &n, t->name));
    m->n_params += (int64_t)n;
    if (t->dtype == SS_DTYPE_F32 && ((uintptr_t)t->data % sizeof(float)) == 0) {
        *out = t->data;
        return SS_OK;
    }
    size_t bytes;
    if (!ss_mul_ok(n, sizeof(float), &bytes)) return ss_errorf(SS_ERR_NOMEM, "%s: tensor too large", t->name);
    float *buf = ss_malloc(bytes, t->name);
    if (!buf) return SS_ERR_NOMEM;
    float **no = ss_realloc(m->owned, (m->n_owned + 1) * sizeof *no, "weight list");
    if (!no) { free(buf); return SS_ERR_NOMEM; }
    m->owned = no;
    m->owned[m->n_owned++] = buf;
    ss_status st = ss_tensor_to_f32(t, buf, n);
    if (st) return ss_error_context(st, "%s", t->file);
    *out = buf;
    return SS_OK;
}

static ss_status load_weights(ss_model *m) {
    const ss_config *c = &m->cfg;
    int64_t d = c->n_embd, V = c->vocab_size, dm = c->n_inner;
    char nm[128];
#define T1(name, a, dst) do { int64_t s_[1] = {a}; SS_TRY(get_tensor(m, name, 1, s_, &(dst))); } while (0)
#define T2(name, a, b, dst) do { int64_t s_[2] = {a, b}; SS_TRY(get_tensor(m, name, 2, s_, &(dst))); } while (0)
    T2("wte.weight", V, d, m->w.wte);
    T2("wpe.weight", c->n_positions, d, m->w.wpe);
    T1("ln_f.weight", d, m->w.lnf_w);
    T1("ln_f.bias", d, m->w.lnf_b);
    m->w.layers = ss_calloc((size_t)c->n_layer, sizeof *m->w.layers, "layers");
    if (!m->w.layers) return SS_ERR_NOMEM;
    for (int64_t l = 0; l < c->n_layer; l++) {
        ss_gpt2_layer *L = &m->w.layers[l];
#define LN(suffix) (snprintf(nm, sizeof nm, "h.%lld.%s", (long long)l, suffix), nm)
        T1(LN("ln_1.weight"), d, L->ln1_w);
        T1(LN("ln_1.bias"), d, L->ln1_b);
        T2(LN("attn.c_attn.weight"), d, 3 * d, L->attn_w);
        T1(LN("attn.c_attn.bias"), 3 * d, L->attn_b);
        T2(LN("attn.c_proj.weight"), d, d, L->proj_w);
        T1(LN("attn.c_proj.bias"), d, L->proj_b);
        T1(LN("ln_2.weight"), d, L->ln2_w);
        T1(LN("ln_2.bias"), d, L->ln2_b);
        T2(LN("mlp.c_fc.weight"), d, dm, L->fc_w);
        T1(LN("mlp.c_fc.bias"), dm, L->fc_b);
        T2(LN("mlp.c_proj.weight"), dm, d, L->fc2_w);
        T1(LN("mlp.c_proj.bias"), d, L->fc2_b);
#undef LN
    }
    if (c->tie_word_embeddings) {
        m->w.lm_head = m->w.wte;
    } else {
        /* lm_head never carries the transformer. prefix in Hugging Face files. */
        const ss_tensor_info *t = ss_weights_find(m->weights, "lm_head.weight");
        if (!t) return ss_errorf(SS_ERR_FORMAT, "%s: tie_word_embeddings is false but the weights have no 'lm_head.weight'", m->dir);
        T2("lm_head.weight", V, d, m->w.lm_head);
    }
#undef T1
#undef T2
    return SS_OK;
}

ss_status ss_model_load(const char *dir, ss_model **out) {
    *out = NULL;
    ss_model *m = ss_calloc(1, sizeof *m, "model");
    if (!m) return SS_ERR_NOMEM;
    ss_status st = SS_ERR_NOMEM;
    char *cfg_path = NULL;
    if (!(m->dir = ss_strdup(dir)) || !(cfg_path = ss_path_join(dir, "config.json"))) goto fail;
    if ((st = ss_config_load(cfg_path, &m->cfg))) goto fail;
    if ((st = ss_weights_open(dir, &m->weights))) goto fail;
    if ((st = load_weights(m))) goto fail;
    st = ss_tokenizer_load_dir(dir, &m->tok);
    if (st == SS_ERR_IO && !m->tok) {
        /* No tokenizer files: the model still runs on token ids. */
        st = SS_OK;
        m->tok = NULL;
    }
    if (st) goto fail;
    if (m->tok && ss_tokenizer_vocab_size(m->tok) > m->cfg.vocab_size) {
        st = ss_errorf(SS_ERR_FORMAT, "%s: tokenizer has %d ids but config.json vocab_size is %lld", dir,
                       ss_tokenizer_vocab_size(m->tok), (long long)m->cfg.vocab_size);
        goto fail;
    }
    free(cfg_path);
    *out = m;
    return SS_OK;
fail:
    free(cfg_path);
    ss_model_free(m);
    return st;
}

void ss_model_free(ss_model *m) {
    if (!m) return;
    for (size_t i = 0; i < m->n_owned; i++) free(m->owned[i]);
    free(m->owned);
    if (m->placed_block) m->placed_on->release(m->placed_on, m->placed_block);
    free(m->placed.layers);
    free(m->w.layers);
    ss_tokenizer_free(m->tok);
    ss_weights_free(m->weights);
    free(m->dir);
    free(m);
}

/* ---- placement ---- */

/* Every weight pointer of a model in one fixed order, with its element count
 * and whether it is a matrix (stored in the placement's wdtype). */
typedef struct {
    const void **ptr;
    size_t count;
    int matrix;
} weight_slot;

static int weight_slots(const ss_config *c, ss_gpt2_weights *w, weight_slot *slots) {
    int64_t d = c->n_embd, V = c->vocab_size, dm = c->n_inner;
    int n = 0;
#define SLOT(p, cnt, mat) (slots[n++] = (weight_slot){&(p), (size_t)(cnt), mat})
    SLOT(w->wte, V * d, 1);
    SLOT(w->wpe, c->n_positions * d, 1);
    SLOT(w->lnf_w, d, 0);
    SLOT(w->lnf_b, d, 0);
    for (int64_t l = 0; l < c->n_layer; l++) {
        ss_gpt2_layer *L = &w->layers[l];
        SLOT(L->ln1_w, d, 0); SLOT(L->ln1_b, d, 0);
        SLOT(L->attn_w, d * 3 * d, 1); SLOT(L->attn_b, 3 * d, 0);
        SLOT(L->proj_w, d * d, 1); SLOT(L->proj_b, d, 0);
        SLOT(L->ln2_w, d, 0); SLOT(L->ln2_b, d, 0);
        SLOT(L->fc_w, d * dm, 1); SLOT(L->fc_b, dm, 0);
        SLOT(L->fc2_w, dm * d, 1); SLOT(L->fc2_b, d, 0);
    }
    /* A tied lm_head is wte itself and is not stored twice. */
    if (w->lm_head != w->wte) SLOT(w->lm_head, V * d, 1);
#undef SLOT
    return n;
}

ss_status ss_model_place(ss_model *m, const ss_backend *be, int wdtype) {
    if (wdtype != SS_WDTYPE_F32 && wdtype != SS_WDTYPE_BF16)
        return ss_errorf(SS_ERR_UNSUPPORTED, "%s: weights can be placed as float32 or bfloat16 only", m->dir);
    if (m->placed_on == be && m->placed.wdtype == wdtype) return SS_OK;
    if (be->host_memory && wdtype == SS_WDTYPE_F32) return SS_OK;
    if (m->placed_on)
        return ss_errorf(SS_ERR_UNSUPPORTED, "%s: weights are already placed on %s; one model serves one placement",
                         m->dir, m->placed_on->name);
    int nmax = 5 + 12 * (int)m->cfg.n_layer;
    weight_slot *src = ss_malloc((size_t)nmax * sizeof *src, "weight list");
    weight_slot *dst = ss_malloc((size_t)nmax * sizeof *dst, "weight list");
    uint16_t *tmp = NULL;
    m->placed = m->w;
    m->placed.wdtype = wdtype;
    m->placed.layers = ss_malloc((size_t)m->cfg.n_layer * sizeof *m->placed.layers, "layers");
    ss_status st = SS_ERR_NOMEM;
    if (!src || !dst || !m->placed.layers) goto out;
    memcpy(m->placed.layers, m->w.layers, (size_t)m->cfg.n_layer * sizeof *m->placed.layers);
    int n = weight_slots(&m->cfg, &m->w, src);
    weight_slots(&m->cfg, &m->placed, dst);
    /* One block for everything, each tensor 256-byte aligned. */
    size_t esz = wdtype == SS_WDTYPE_BF16 ? 2 : 4, total = 0, largest = 0;
    for (int i = 0; i < n; i++) {
        total += ((src[i].count * (src[i].matrix ? esz : 4)) + 255) & ~(size_t)255;
        if (src[i].matrix && src[i].count > largest) largest = src[i].count;
    }
    if (esz == 2 && !(tmp = ss_malloc(largest * sizeof *tmp, "bf16 conversion"))) goto out;
    if ((st = be->alloc(be, total, "model weights", &m->placed_block))) goto out;
    m->placed_on = be;
    char *p = m->placed_block;
    for (int i = 0; i < n; i++) {
        const float *from = *src[i].ptr;
        size_t bytes = src[i].count * (src[i].matrix ? esz : 4);
        if (src[i].matrix && esz == 2) {
            for (size_t j = 0; j < src[i].count; j++) tmp[j] = ss_f32_to_bf16(from[j]);
            st = be->upload(be, p, tmp, bytes);
        } else {
            st = be->upload(be, p, from, bytes);
        }
        if (st) goto out;
        *dst[i].ptr = p;
        p += (bytes + 255) & ~(size_t)255;
    }
    if (m->w.lm_head == m->w.wte) m->placed.lm_head = m->placed.wte;
    st = be->sync(be);
out:
    free(src);
    free(dst);
    free(tmp);
    return st;
}

const ss_gpt2_weights *ss_model_weights(const ss_model *m, const ss_backend *be) {
    if (m->placed_on == be) return &m->placed;
    return be->host_memory ? &m->w : NULL;
}

/* ---- forward ---- */

typedef struct {
    const ss_model *m;
    const ss_backend *be;
    const ss_forward_opts *o;
    const ss_packing *pk;
    const int64_t *pattern_off;
    float *stage;          /* host staging for sites of a device backend */
    float *arena;          /* device: sites gathered for read-only hooks */
    int64_t *arena_off;    /* by site id: offset in the arena, or -1 */
    size_t arena_used;     /* floats */
} fwd_ctx;

/* Hands a site to the hook. On a device backend the rows go through a host
 * staging buffer and back, so a hook that edits values edits the model's. */
static ss_status hook_at(fwd_ctx *f, ss_site_kind kind, int layer, float *buf, size_t n_floats, int64_t offset,
                         int64_t ld) {
    if (!f->o || !f->o->want || !f->o->hook) return SS_OK;
    int id = ss_site_id(&f->m->cfg, kind, layer);
    if (!f->o->want[id]) return SS_OK;
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

static int wants(const fwd_ctx *f, ss_site_kind kind, int layer) {
    return f->o && f->o->want && f->o->hook && f->o->want[ss_site_id(&f->m->cfg, kind, layer)];
}

enum { B_TOK, B_POS, B_X, B_TMP, B_LN, B_QKV, B_Z, B_H, B_H2, B_PAT, B_LOGITS, B_COUNT };

ss_status ss_forward(const ss_model *m, const ss_backend *be, const int32_t *tokens, const ss_packing *pk,
                     const ss_forward_opts *opts, float **logits) {
    const ss_config *c = &m->cfg;
    const int64_t d = c->n_embd, H = c->n_head, dh = d / H, dm = c->n_inner, V = c->vocab_size, R = pk->rows;
    if (logits) *logits = NULL;
    const ss_gpt2_weights *w = ss_model_weights(m, be);
    if (!w) return ss_errorf(SS_ERR_INTERNAL, "model weights were not placed on backend %s", be->name);
    /* Validate the packing and tokens: a bad id would index outside wte. */
    int64_t rows = 0, pat_total = 0;
    for (int64_t s = 0; s < pk->n_seq; s++) {
        if (pk->len[s] < 1 || pk->len[s] > c->n_positions || pk->start[s] != rows)
            return ss_errorf(SS_ERR_ARG, "sequence %lld has length %lld; lengths must be 1..%lld (n_positions)",
                             (long long)s, (long long)pk->len[s], (long long)c->n_positions);
        rows += pk->len[s];
        pat_total += H * pk->len[s] * pk->len[s];
    }
    if (rows != R) return ss_errorf(SS_ERR_INTERNAL, "packing rows %lld != sum of lengths %lld", (long long)R, (long long)rows);
    for (int64_t r = 0; r < R; r++)
        if (tokens[r] < 0 || tokens[r] >= V)
            return ss_errorf(SS_ERR_ARG, "token id %d is outside the vocabulary (0..%lld)", tokens[r], (long long)V - 1);

    fwd_ctx f = {.m = m, .be = be, .o = opts, .pk = pk};
    int want_pattern = 0;
    for (int l = 0; l < c->n_layer; l++) want_pattern |= wants(&f, SS_SITE_PATTERN, l);
    const int64_t n_lrows = !opts || opts->logits == SS_LOGITS_NONE || !logits ? 0
                            : opts->logits == SS_LOGITS_ALL                     ? R
                                                                                : pk->n_seq;
    size_t Rs = (size_t)R, widest = (size_t)(3 * d > dm ? 3 * d : dm);
    size_t bytes[B_COUNT] = {
        [B_TOK] = Rs * sizeof(int32_t), [B_POS] = Rs * sizeof(int32_t),
        [B_X] = Rs * (size_t)d * sizeof(float), [B_TMP] = Rs * (size_t)d * sizeof(float),
        [B_LN] = Rs * (size_t)d * sizeof(float), [B_QKV] = Rs * (size_t)(3 * d) * sizeof(float),
        [B_Z] = Rs * (size_t)d * sizeof(float), [B_H] = Rs * (size_t)dm * sizeof(float),
        [B_H2] = Rs * (size_t)dm * sizeof(float),
        [B_PAT] = want_pattern ? (size_t)pat_total * sizeof(float) : 0,
        [B_LOGITS] = (size_t)n_lrows * (size_t)V * sizeof(float),
    };
    static const char *const what[B_COUNT] = {"tokens", "positions", "residual stream", "activations", "activations",
                                              "q/k/v", "attention output", "MLP activations", "MLP activations",
                                              "attention pattern", "logits"};
    void *buf[B_COUNT] = {0};
    int64_t *pat_off = ss_malloc((size_t)pk->n_seq * sizeof(int64_t) + 1, "pattern offsets");
    int32_t *pos = ss_malloc(Rs * sizeof(int32_t) + 1, "positions");
    float *lg = NULL, *arena_host = NULL;
    ss_status st = SS_ERR_NOMEM;
    if (!pat_off || !pos) goto done;
    for (int i = 0; i < B_COUNT; i++)
        if (bytes[i] && (st = be->alloc(be, bytes[i], what[i], &buf[i]))) goto done;
    if (!be->host_memory && opts && opts->read_only && !opts->hook_on_device && opts->want && opts->hook) {
        size_t total = 0;
        ss_site s;
        for (int i = 0; i < ss_sites_count(c); i++) {
            if (!opts->want[i]) continue;
            ss_site_get(c, i, &s);
            total += s.per_token ? Rs * (size_t)s.width : (size_t)pat_total;
        }
        if (!(f.arena_off = ss_malloc((size_t)ss_sites_count(c) * sizeof(int64_t), "site offsets"))) { st = SS_ERR_NOMEM; goto done; }
        for (int i = 0; i < ss_sites_count(c); i++) f.arena_off[i] = -1;
        if ((st = be->alloc(be, total * sizeof(float), "captured sites", (void **)&f.arena))) goto done;
        if ((st = be->alloc_host(be, total * sizeof(float), "captured sites", (void **)&arena_host))) goto done;
    } else if (!be->host_memory && !(opts && opts->hook_on_device)) {
        size_t stage = (size_t)pat_total > Rs * widest ? (size_t)pat_total : Rs * widest;
        if (!(f.stage = ss_malloc(stage * sizeof(float), "site staging buffer"))) { st = SS_ERR_NOMEM; goto done; }
    }
    int32_t *tok_b = buf[B_TOK], *pos_b = buf[B_POS];
    float *x = buf[B_X], *tmp = buf[B_TMP], *ln = buf[B_LN], *qkv = buf[B_QKV], *z = buf[B_Z], *hbuf = buf[B_H],
          *h2 = buf[B_H2], *pattern = buf[B_PAT];
    for (int64_t s = 0, off = 0; s < pk->n_seq; s++) {
        pat_off[s] = off;
        off += H * pk->len[s] * pk->len[s];
        for (int64_t i = 0; i < pk->len[s]; i++) pos[pk->start[s] + i] = (int32_t)i;
    }
    f.pattern_off = pat_off;
    if ((st = be->upload(be, tok_b, tokens, bytes[B_TOK])) || (st = be->upload(be, pos_b, pos, bytes[B_POS]))) goto done;

    const size_t Rd = Rs * (size_t)d, Rdm = Rs * (size_t)dm, R3d = Rs * (size_t)(3 * d);
#define RUN(call) do { if ((st = (call))) goto done; } while (0)
    const int first = opts && opts->start_layer > 0 ? opts->start_layer : 0;
    if (first > c->n_layer || (first && !opts->start_resid)) {
        st = ss_errorf(SS_ERR_ARG, "forward: start_layer %d needs a residual and at most %lld layers", first,
                       (long long)c->n_layer);
        goto done;
    }
    if (first) {
        /* Resume from an earlier run's residual stream: the blocks before are skipped. */
        RUN(be->upload(be, x, opts->start_resid, Rd * sizeof(float)));
    } else {
        RUN(be->embed(be, tmp, ln, tok_b, pos_b, w->wte, w->wpe, w->wdtype, R, d));
        RUN(hook_at(&f, SS_SITE_EMBED, -1, tmp, Rd, 0, d));
        RUN(hook_at(&f, SS_SITE_POS_EMBED, -1, ln, Rd, 0, d));
        RUN(be->add(be, x, tmp, ln, R * d));
    }

    const float scale = c->scale_attn_weights ? (float)(1.0 / sqrt((double)dh)) : 1.0f;
    const float eps = (float)c->ln_eps;
    for (int l = first; l < c->n_layer; l++) {
        const ss_gpt2_layer *L = &w->layers[l];
        RUN(hook_at(&f, SS_SITE_RESID_PRE, l, x, Rd, 0, d));
        RUN(be->layernorm(be, ln, x, L->ln1_w, L->ln1_b, R, d, eps));
        RUN(hook_at(&f, SS_SITE_LN1, l, ln, Rd, 0, d));
        RUN(be->matmul(be, qkv, ln, L->attn_w, w->wdtype, L->attn_b, R, 3 * d, d, 0));
        /* q, k and v share one buffer; each hook sees it whole with its own offset. */
        RUN(hook_at(&f, SS_SITE_Q, l, qkv, R3d, 0, 3 * d));
        RUN(hook_at(&f, SS_SITE_K, l, qkv, R3d, d, 3 * d));
        RUN(hook_at(&f, SS_SITE_V, l, qkv, R3d, 2 * d, 3 * d));
        int wp = wants(&f, SS_SITE_PATTERN, l);
        RUN(be->attention(be, z, qkv, qkv + d, qkv + 2 * d, 3 * d, pk->n_seq, pk->start, pk->len, H, dh, scale,
                          wp ? pattern : NULL, pat_off));
        /* The pattern is reported after z is computed from it, so editing it
         * has no effect yet; interventions on patterns arrive with ablation. */
        if (wp) RUN(hook_at(&f, SS_SITE_PATTERN, l, pattern, (size_t)pat_total, 0, 0));
        RUN(hook_at(&f, SS_SITE_Z, l, z, Rd, 0, d));
        RUN(be->matmul(be, tmp, z, L->proj_w, w->wdtype, L->proj_b, R, d, d, 0));
        RUN(hook_at(&f, SS_SITE_ATTN_OUT, l, tmp, Rd, 0, d));
        RUN(be->add(be, x, x, tmp, R * d));
        RUN(hook_at(&f, SS_SITE_RESID_MID, l, x, Rd, 0, d));
        RUN(be->layernorm(be, ln, x, L->ln2_w, L->ln2_b, R, d, eps));
        RUN(hook_at(&f, SS_SITE_LN2, l, ln, Rd, 0, d));
        RUN(be->matmul(be, hbuf, ln, L->fc_w, w->wdtype, L->fc_b, R, dm, d, 0));
        RUN(hook_at(&f, SS_SITE_MLP_PRE, l, hbuf, Rdm, 0, dm));
        RUN(be->gelu(be, h2, hbuf, R * dm, c->act));
        RUN(hook_at(&f, SS_SITE_MLP_POST, l, h2, Rdm, 0, dm));
        RUN(be->matmul(be, tmp, h2, L->fc2_w, w->wdtype, L->fc2_b, R, d, dm, 0));
        RUN(hook_at(&f, SS_SITE_MLP_OUT, l, tmp, Rd, 0, d));
        RUN(be->add(be, x, x, tmp, R * d));
        RUN(hook_at(&f, SS_SITE_RESID_POST, l, x, Rd, 0, d));
    }
    RUN(be->layernorm(be, ln, x, w->lnf_w, w->lnf_b, R, d, eps));
    RUN(hook_at(&f, SS_SITE_LNF, -1, ln, Rd, 0, d));

    if (n_lrows) {
        const float *src = ln;
        if (opts->logits == SS_LOGITS_LAST) {
            /* Gather each sequence's last row; on a device this is a few small copies. */
            for (int64_t s = 0; s < pk->n_seq; s++) {
                const float *row = ln + (pk->start[s] + pk->len[s] - 1) * d;
                if (be->host_memory) {
                    memcpy(tmp + s * d, row, (size_t)d * sizeof(float));
                } else {
                    RUN(be->download(be, f.stage, row, (size_t)d * sizeof(float)));
                    RUN(be->upload(be, tmp + s * d, f.stage, (size_t)d * sizeof(float)));
                }
            }
            src = tmp;
        }
        RUN(be->matmul(be, buf[B_LOGITS], src, w->lm_head, w->wdtype, NULL, n_lrows, V, d, 1));
        if (be->host_memory) {
            lg = buf[B_LOGITS];
            buf[B_LOGITS] = NULL; /* handed to the caller */
        } else {
            if (!(lg = ss_malloc(bytes[B_LOGITS], "logits"))) { st = SS_ERR_NOMEM; goto done; }
            RUN(be->download(be, lg, buf[B_LOGITS], bytes[B_LOGITS]));
        }
    }
    if (f.arena && f.arena_used) {
        /* One copy of every gathered site, then the hooks in forward order. */
        RUN(be->download(be, arena_host, f.arena, f.arena_used * sizeof(float)));
        ss_site s;
        for (int i = 0; i < ss_sites_count(c); i++) {
            if (f.arena_off[i] < 0) continue;
            ss_site_get(c, i, &s);
            RUN(opts->hook(opts->hook_ctx, &s, arena_host + f.arena_off[i], s.per_token ? s.width : 0, pk, pat_off));
        }
    }
    RUN(be->sync(be));
#undef RUN
    if (logits) *logits = lg;
    lg = NULL;
done: /* every failing path above has set the message */
    for (int i = 0; i < B_COUNT; i++)
        if (buf[i]) be->release(be, buf[i]);
    free(lg);
    free(f.stage);
    free(f.arena_off);
    if (f.arena) be->release(be, f.arena);
    if (arena_host) be->release_host(be, arena_host);
    free(pat_off);
    free(pos);
    return st;
}
