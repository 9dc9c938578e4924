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
static ss_status get_tensor(ss_model *m, const char *name, int ndim, const int64_t *shape, const float **out) {
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
    T2("wte.weight", V, d, m->wte);
    T2("wpe.weight", c->n_positions, d, m->wpe);
    T1("ln_f.weight", d, m->lnf_w);
    T1("ln_f.bias", d, m->lnf_b);
    m->layers = ss_calloc((size_t)c->n_layer, sizeof *m->layers, "layers");
    if (!m->layers) return SS_ERR_NOMEM;
    for (int64_t l = 0; l < c->n_layer; l++) {
        ss_gpt2_layer *L = &m->layers[l];
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
        m->lm_head = m->wte;
    } else {
        /* lm_head never carries the transformer. prefix in Hugging Face files. */
        const ss_tensor_info *t = ss_weights_find(m->weights, "lm_head.weight");
        if (!t) return ss_errorf(SS_ERR_FORMAT, "%s: tie_word_embeddings is false but the weights have no 'lm_head.weight'", m->dir);
        T2("lm_head.weight", V, d, m->lm_head);
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
    free(m->layers);
    ss_tokenizer_free(m->tok);
    ss_weights_free(m->weights);
    free(m->dir);
    free(m);
}

/* ---- forward ---- */

typedef struct {
    const ss_model *m;
    const ss_forward_opts *o;
    const ss_packing *pk;
    const int64_t *pattern_off;
} fwd_ctx;

static ss_status hook_at(const fwd_ctx *f, ss_site_kind kind, int layer, float *data, int64_t ld) {
    if (!f->o || !f->o->want || !f->o->hook) return SS_OK;
    int id = ss_site_id(&f->m->cfg, kind, layer);
    if (!f->o->want[id]) return SS_OK;
    ss_site s;
    ss_site_get(&f->m->cfg, id, &s);
    return f->o->hook(f->o->hook_ctx, &s, data, ld, f->pk, f->pattern_off);
}

static int wants(const fwd_ctx *f, ss_site_kind kind, int layer) {
    return f->o && f->o->want && f->o->hook && f->o->want[ss_site_id(&f->m->cfg, kind, layer)];
}

ss_status ss_forward(const ss_model *m, const ss_backend *be, const int32_t *tokens, const ss_packing *pk,
                     const ss_forward_opts *opts, float **logits) {
    const ss_config *c = &m->cfg;
    const int64_t d = c->n_embd, H = c->n_head, dh = d / H, dm = c->n_inner, V = c->vocab_size, R = pk->rows;
    if (logits) *logits = NULL;
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

    fwd_ctx f = {m, opts, pk, NULL};
    ss_status st = SS_ERR_NOMEM;
    size_t Rs = (size_t)R;
    int want_pattern = 0;
    for (int l = 0; l < c->n_layer; l++) want_pattern |= wants(&f, SS_SITE_PATTERN, l);
    int64_t *pat_off = ss_malloc((size_t)pk->n_seq * sizeof(int64_t) + 1, "pattern offsets");
    int32_t *pos = ss_malloc(Rs * sizeof(int32_t), "positions");
    float *x = ss_malloc(Rs * (size_t)d * sizeof(float), "residual stream");
    float *tmp = ss_malloc(Rs * (size_t)d * sizeof(float), "activations");
    float *ln = ss_malloc(Rs * (size_t)d * sizeof(float), "activations");
    float *qkv = ss_malloc(Rs * (size_t)(3 * d) * sizeof(float), "q/k/v");
    float *z = ss_malloc(Rs * (size_t)d * sizeof(float), "attention output");
    float *hbuf = ss_malloc(Rs * (size_t)dm * sizeof(float), "MLP activations");
    float *h2 = ss_malloc(Rs * (size_t)dm * sizeof(float), "MLP activations");
    float *pattern = want_pattern ? ss_malloc((size_t)pat_total * sizeof(float), "attention pattern") : NULL;
    float *lg = NULL;
    if (!pat_off || !pos || !x || !tmp || !ln || !qkv || !z || !hbuf || !h2 || (want_pattern && !pattern)) goto done;
    for (int64_t s = 0, off = 0; s < pk->n_seq; s++) {
        pat_off[s] = off;
        off += H * pk->len[s] * pk->len[s];
        for (int64_t i = 0; i < pk->len[s]; i++) pos[pk->start[s] + i] = (int32_t)i;
    }
    f.pattern_off = pat_off;

    be->embed(tmp, ln, tokens, pos, m->wte, m->wpe, R, d);
    if ((st = hook_at(&f, SS_SITE_EMBED, -1, tmp, d))) goto done;
    if ((st = hook_at(&f, SS_SITE_POS_EMBED, -1, ln, d))) goto done;
    be->add(x, tmp, ln, R * d);

    const float scale = c->scale_attn_weights ? (float)(1.0 / sqrt((double)dh)) : 1.0f;
    for (int l = 0; l < c->n_layer; l++) {
        const ss_gpt2_layer *L = &m->layers[l];
        if ((st = hook_at(&f, SS_SITE_RESID_PRE, l, x, d))) goto done;
        be->layernorm(ln, x, L->ln1_w, L->ln1_b, R, d, (float)c->ln_eps);
        if ((st = hook_at(&f, SS_SITE_LN1, l, ln, d))) goto done;
        be->matmul(qkv, ln, L->attn_w, L->attn_b, R, 3 * d, d, 0);
        if ((st = hook_at(&f, SS_SITE_Q, l, qkv, 3 * d))) goto done;
        if ((st = hook_at(&f, SS_SITE_K, l, qkv + d, 3 * d))) goto done;
        if ((st = hook_at(&f, SS_SITE_V, l, qkv + 2 * d, 3 * d))) goto done;
        int wp = wants(&f, SS_SITE_PATTERN, l);
        if ((st = be->attention(z, qkv, qkv + d, qkv + 2 * d, 3 * d, pk->n_seq, pk->start, pk->len, H, dh, scale,
                                wp ? pattern : NULL, pat_off)))
            goto done;
        /* The pattern is reported after z is computed from it, so editing it
         * has no effect yet; interventions on patterns arrive with ablation. */
        if (wp && (st = hook_at(&f, SS_SITE_PATTERN, l, pattern, 0))) goto done;
        if ((st = hook_at(&f, SS_SITE_Z, l, z, d))) goto done;
        be->matmul(tmp, z, L->proj_w, L->proj_b, R, d, d, 0);
        if ((st = hook_at(&f, SS_SITE_ATTN_OUT, l, tmp, d))) goto done;
        be->add(x, x, tmp, R * d);
        if ((st = hook_at(&f, SS_SITE_RESID_MID, l, x, d))) goto done;
        be->layernorm(ln, x, L->ln2_w, L->ln2_b, R, d, (float)c->ln_eps);
        if ((st = hook_at(&f, SS_SITE_LN2, l, ln, d))) goto done;
        be->matmul(hbuf, ln, L->fc_w, L->fc_b, R, dm, d, 0);
        if ((st = hook_at(&f, SS_SITE_MLP_PRE, l, hbuf, dm))) goto done;
        be->gelu(h2, hbuf, R * dm, c->act);
        if ((st = hook_at(&f, SS_SITE_MLP_POST, l, h2, dm))) goto done;
        be->matmul(tmp, h2, L->fc2_w, L->fc2_b, R, d, dm, 0);
        if ((st = hook_at(&f, SS_SITE_MLP_OUT, l, tmp, d))) goto done;
        be->add(x, x, tmp, R * d);
        if ((st = hook_at(&f, SS_SITE_RESID_POST, l, x, d))) goto done;
    }
    be->layernorm(ln, x, m->lnf_w, m->lnf_b, R, d, (float)c->ln_eps);
    if ((st = hook_at(&f, SS_SITE_LNF, -1, ln, d))) goto done;

    st = SS_OK;
    if (logits && opts && opts->logits != SS_LOGITS_NONE) {
        int64_t nrows = opts->logits == SS_LOGITS_ALL ? R : pk->n_seq;
        size_t bytes;
        if (!ss_mul_ok((size_t)nrows, (size_t)V, &bytes) || !ss_mul_ok(bytes, sizeof(float), &bytes)) {
            st = ss_errorf(SS_ERR_NOMEM, "logits buffer size overflows");
            goto done;
        }
        lg = ss_malloc(bytes, "logits");
        if (!lg) { st = SS_ERR_NOMEM; goto done; }
        const float *src = ln;
        if (opts->logits == SS_LOGITS_LAST) {
            for (int64_t s = 0; s < pk->n_seq; s++)
                memcpy(tmp + s * d, ln + (pk->start[s] + pk->len[s] - 1) * d, (size_t)d * sizeof(float));
            src = tmp;
        }
        be->matmul(lg, src, m->lm_head, NULL, nrows, V, d, 1);
        *logits = lg;
    }
done: /* every failing path above has set the message */
    free(pat_off);
    free(pos);
    free(x);
    free(tmp);
    free(ln);
    free(qkv);
    free(z);
    free(hbuf);
    free(h2);
    free(pattern);
    return st;
}
