/* Models made here rather than loaded: writable float32 GPT-2 weights, their
 * initialisation, and writing them as a safetensors file Hugging Face loads. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "subscope/backend.h"
#include "subscope/json.h"
#include "subscope/safetensors.h"
#include "subscope/train.h"
#include "subscope/util.h"

/* ---- random numbers ---- */

void ss_rng_seed(ss_rng *r, uint64_t seed) { r->s = seed ^ 0x5ca1ab1e0ddba11ULL; }

uint64_t ss_rng_next(ss_rng *r) {
    uint64_t z = (r->s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

uint64_t ss_rng_below(ss_rng *r, uint64_t n) {
    /* Rejecting the top partial block keeps every value equally likely. */
    uint64_t lim = UINT64_MAX - UINT64_MAX % n, x;
    do x = ss_rng_next(r);
    while (x >= lim);
    return x % n;
}

double ss_rng_normal(ss_rng *r) {
    /* 53-bit uniforms; u1 in (0, 1] so the log is finite. */
    double u1 = ((double)(ss_rng_next(r) >> 11) + 1.0) * 0x1.0p-53, u2 = (double)(ss_rng_next(r) >> 11) * 0x1.0p-53;
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586476925 * u2);
}

/* ---- parameter list ---- */

int ss_gpt2_param_count(const ss_config *c) { return 4 + 12 * (int)c->n_layer + (c->tie_word_embeddings ? 0 : 1); }

void ss_gpt2_params(const ss_config *c, ss_gpt2_weights *w, ss_param *out) {
    const int64_t d = c->n_embd, V = c->vocab_size, dm = c->n_inner;
    int n = 0;
#define P(nm, p, a, b, dec)                                                                                        \
    do {                                                                                                           \
        ss_param *q_ = &out[n++];                                                                                  \
        memset(q_, 0, sizeof *q_);                                                                                 \
        snprintf(q_->name, sizeof q_->name, "%s", nm);                                                             \
        const int64_t a_ = (a), b_ = (b);                                                                          \
        q_->ndim = b_ ? 2 : 1, q_->shape[0] = a_, q_->shape[1] = b_;                                               \
        q_->count = (size_t)(a_ * (b_ ? b_ : 1)), q_->decay = dec, q_->slot = &(p);                                \
    } while (0)
    char nm[64];
    P("transformer.wte.weight", w->wte, V, d, 0);
    P("transformer.wpe.weight", w->wpe, c->n_positions, d, 0);
    P("transformer.ln_f.weight", w->lnf_w, d, 0, 0);
    P("transformer.ln_f.bias", w->lnf_b, d, 0, 0);
    for (int64_t l = 0; l < c->n_layer; l++) {
        ss_gpt2_layer *L = &w->layers[l];
#define LN(s) (snprintf(nm, sizeof nm, "transformer.h.%lld.%s", (long long)l, s), nm)
        P(LN("ln_1.weight"), L->ln1_w, d, 0, 0);
        P(LN("ln_1.bias"), L->ln1_b, d, 0, 0);
        P(LN("attn.c_attn.weight"), L->attn_w, d, 3 * d, 1);
        P(LN("attn.c_attn.bias"), L->attn_b, 3 * d, 0, 0);
        P(LN("attn.c_proj.weight"), L->proj_w, d, d, 1);
        P(LN("attn.c_proj.bias"), L->proj_b, d, 0, 0);
        P(LN("ln_2.weight"), L->ln2_w, d, 0, 0);
        P(LN("ln_2.bias"), L->ln2_b, d, 0, 0);
        P(LN("mlp.c_fc.weight"), L->fc_w, d, dm, 1);
        P(LN("mlp.c_fc.bias"), L->fc_b, dm, 0, 0);
        P(LN("mlp.c_proj.weight"), L->fc2_w, dm, d, 1);
        P(LN("mlp.c_proj.bias"), L->fc2_b, d, 0, 0);
#undef LN
    }
    /* The unembedding is treated as the embedding it usually is: not decayed. */
    if (!c->tie_word_embeddings) P("lm_head.weight", w->lm_head, V, d, 0);
#undef P
}

/* ---- a writable model ---- */

ss_status ss_model_create(const ss_config *cfg, ss_model **out) {
    *out = NULL;
    ss_model *m = ss_calloc(1, sizeof *m, "model");
    if (!m) return SS_ERR_NOMEM;
    m->cfg = *cfg;
    m->end_layer = (int)cfg->n_layer;
    m->w.wdtype = SS_WDTYPE_F32;
    const int np = ss_gpt2_param_count(cfg);
    ss_param *ps = ss_malloc((size_t)np * sizeof *ps, "parameter list");
    m->dir = ss_strdup("(new model)");
    m->w.layers = ss_calloc((size_t)cfg->n_layer, sizeof *m->w.layers, "layers");
    m->owned = ss_calloc(1, sizeof *m->owned, "weight list");
    ss_status st = SS_ERR_NOMEM;
    if (!ps || !m->dir || !m->w.layers || !m->owned) goto fail;
    ss_gpt2_params(cfg, &m->w, ps);
    /* One block, each tensor starting on a 64-byte boundary. */
    size_t total = 0;
    for (int i = 0; i < np; i++) {
        size_t bytes;
        if (!ss_mul_ok(ps[i].count, sizeof(float), &bytes) || !ss_add_ok(total, (bytes + 63) & ~(size_t)63, &total)) {
            st = ss_errorf(SS_ERR_NOMEM, "a model of this config is too large (tensor %s)", ps[i].name);
            goto fail;
        }
    }
    float *block = NULL;
    if (posix_memalign((void **)&block, 64, total ? total : 64)) {
        st = ss_errorf(SS_ERR_NOMEM, "out of memory for %zu bytes of model weights", total);
        goto fail;
    }
    memset(block, 0, total);
    m->owned[0] = block;
    m->n_owned = 1;
    char *p = (char *)block;
    for (int i = 0; i < np; i++) {
        *ps[i].slot = p;
        p += (ps[i].count * sizeof(float) + 63) & ~(size_t)63;
        m->n_params += (int64_t)ps[i].count;
    }
    if (cfg->tie_word_embeddings) m->w.lm_head = m->w.wte;
    snprintf(m->weight_dtypes, sizeof m->weight_dtypes, "F32");
    m->has_prefix = 1;
    free(ps);
    *out = m;
    return SS_OK;
fail:
    free(ps);
    ss_model_free(m);
    return st;
}

void ss_model_init_gpt2(ss_model *m, uint64_t seed) {
    const ss_config *c = &m->cfg;
    const int np = ss_gpt2_param_count(c);
    ss_param *ps = malloc((size_t)np * sizeof *ps);
    if (!ps) return; /* a few hundred bytes; ss_model_create just allocated far more */
    ss_gpt2_params(c, &m->w, ps);
    ss_rng r;
    ss_rng_seed(&r, seed);
    const double proj_std = 0.02 / sqrt(2.0 * (double)c->n_layer);
    for (int i = 0; i < np; i++) {
        float *x = (float *)*ps[i].slot;
        const char *nm = ps[i].name;
        size_t len = strlen(nm);
        int is_bias = len > 5 && !strcmp(nm + len - 5, ".bias");
        int is_ln = strstr(nm, ".ln_") != NULL;
        if (is_bias) {
            memset(x, 0, ps[i].count * sizeof(float));
        } else if (is_ln) {
            for (size_t j = 0; j < ps[i].count; j++) x[j] = 1.0f;
        } else {
            double sd = strstr(nm, ".c_proj.weight") ? proj_std : 0.02;
            for (size_t j = 0; j < ps[i].count; j++) x[j] = (float)(sd * ss_rng_normal(&r));
        }
    }
    free(ps);
}

/* ---- safetensors writer ---- */


ss_status ss_safetensors_write_f32(const char *path, const ss_st_write *t, int n) {
    const uint16_t probe = 1;
    if (*(const uint8_t *)&probe != 1)
        return ss_errorf(SS_ERR_UNSUPPORTED, "%s: writing safetensors needs a little-endian host", path);
    ss_sbuf h = {0};
    size_t off = 0;
    ss_status st = SS_OK;
    ss_sb_put(&h, "{", 1);
    for (int i = 0; i < n; i++) {
        if (t[i].ndim < 0 || t[i].ndim > SS_MAX_DIMS) {
            st = ss_errorf(SS_ERR_ARG, "%s: tensor %s has %d dimensions", path, t[i].name, t[i].ndim);
            goto out;
        }
        size_t count, bytes;
        if ((st = ss_dims_product(t[i].shape, t[i].ndim, &count, t[i].name))) goto out;
        if (!ss_mul_ok(count, sizeof(float), &bytes) || !ss_add_ok(off, bytes, &bytes)) {
            st = ss_errorf(SS_ERR_NOMEM, "%s: tensor %s is too large", path, t[i].name);
            goto out;
        }
        if (i) ss_sb_put(&h, ",", 1);
        ss_json_sb_str(&h, t[i].name, strlen(t[i].name));
        ss_sb_str(&h, ":{\"dtype\":\"F32\",\"shape\":[");
        for (int k = 0; k < t[i].ndim; k++) ss_sb_printf(&h, "%s%lld", k ? "," : "", (long long)t[i].shape[k]);
        ss_sb_printf(&h, "],\"data_offsets\":[%zu,%zu]}", off, bytes);
        off = bytes;
    }
    ss_sb_str(&h, n ? ",\"__metadata__\":{\"format\":\"pt\"}}" : "\"__metadata__\":{\"format\":\"pt\"}}");
    while (!h.oom && h.n % 8) ss_sb_put(&h, " ", 1); /* so the data after the 8-byte length starts 8-byte aligned */
    if (h.oom) {
        st = ss_errorf(SS_ERR_NOMEM, "%s: out of memory for the header", path);
        goto out;
    }
    char *target = NULL, *tmp = NULL; /* a link is written through: its target is replaced, not it */
    if ((st = ss_out_target(path, &target)) || !(tmp = ss_tmp_name(target))) {
        if (!st) st = SS_ERR_NOMEM;
        free(target);
        goto out;
    }
    ss_tmp_register(tmp);
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        st = ss_errorf(SS_ERR_IO, "%s: cannot create: %s", tmp, strerror(errno));
        ss_tmp_unregister(tmp);
        free(tmp), free(target);
        goto out;
    }
    uint64_t hl = (uint64_t)h.n;
    uint8_t le[8];
    for (int k = 0; k < 8; k++) le[k] = (uint8_t)(hl >> (8 * k));
    int ok = fwrite(le, 1, 8, f) == 8 && fwrite(h.p, 1, h.n, f) == h.n;
    for (int i = 0; ok && i < n; i++) {
        size_t count;
        ss_dims_product(t[i].shape, t[i].ndim, &count, t[i].name);
        ok = fwrite(t[i].data, sizeof(float), count, f) == count;
    }
    if (ok) ok = fflush(f) == 0 && ss_fsync(fileno(f)) == 0;
    int err = errno;
    if (fclose(f) != 0 && ok) ok = 0, err = errno;
    if (ok && rename(tmp, target) != 0) ok = 0, err = errno;
    if (!ok) {
        st = ss_errorf(SS_ERR_IO, "%s: write failed: %s", path, strerror(err));
        unlink(tmp);
    }
    ss_tmp_unregister(tmp);
    free(tmp), free(target);
out:
    free(h.p);
    return st;
}

ss_status ss_model_write_safetensors(const ss_model *m, const char *path) {
    if (m->w.wdtype != SS_WDTYPE_F32)
        return ss_errorf(SS_ERR_UNSUPPORTED, "%s: only float32 host weights can be written", path);
    const int np = ss_gpt2_param_count(&m->cfg);
    ss_param *ps = ss_malloc((size_t)np * sizeof *ps, "parameter list");
    ss_st_write *tw = ss_malloc((size_t)np * sizeof *tw, "tensor list");
    ss_status st = SS_ERR_NOMEM;
    if (ps && tw) {
        ss_gpt2_weights w = m->w; /* listing takes writable slots; these are copies of the pointers */
        ss_gpt2_params(&m->cfg, &w, ps);
        for (int i = 0; i < np; i++) tw[i] = (ss_st_write){ps[i].name, ps[i].ndim, ps[i].shape, *ps[i].slot};
        st = ss_safetensors_write_f32(path, tw, np);
    }
    free(ps);
    free(tw);
    return st;
}
