/* GPT-2: loading a Hugging Face directory into fp32 weights and placing them
 * on a backend (the forward pass is in forward.c). */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/stat.h>

#include "subscope/backward.h"
#include "subscope/gguf_model.h"
#include "subscope/hash.h"
#include "subscope/model.h"
#include "subscope/util.h"
#include "subscope/dist.h"

/* Resolves a tensor by name (a GPT-2 name also with the "transformer."
 * prefix) and checks its shape against the config. */
static ss_status find_tensor(ss_model *m, const char *name, int ndim, const int64_t *shape, const ss_tensor_info **out) {
    char full[256];
    const ss_tensor_info *t = ss_weights_find(m->weights, name);
    if (!t && m->cfg.family == SS_FAMILY_GPT2) {
        snprintf(full, sizeof full, "transformer.%s", name);
        t = ss_weights_find(m->weights, full);
        if (t) m->has_prefix = 1;
    }
    if (!t)
        return ss_errorf(SS_ERR_FORMAT, "%s: weights have no tensor '%s'%s%s%s", m->dir, name,
                         m->cfg.family == SS_FAMILY_GPT2 ? " (nor 'transformer." : "",
                         m->cfg.family == SS_FAMILY_GPT2 ? name : "", m->cfg.family == SS_FAMILY_GPT2 ? "')" : "");
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
    /* Refused here, not first at conversion: info (which converts nothing)
     * would otherwise describe the model as loadable. */
    if (t->dtype != SS_DTYPE_F32 && t->dtype != SS_DTYPE_F16 && t->dtype != SS_DTYPE_BF16 && t->dtype != SS_DTYPE_F64)
        return ss_errorf(SS_ERR_UNSUPPORTED, "%s: tensor '%s' has dtype %s; weights must be F32, F16, BF16 or F64",
                         t->file, t->name, ss_dtype_name(t->dtype));
    const char *dn = ss_dtype_name(t->dtype);
    if (!strstr(m->weight_dtypes, dn) && strlen(m->weight_dtypes) + strlen(dn) + 2 < sizeof m->weight_dtypes) {
        if (m->weight_dtypes[0]) strcat(m->weight_dtypes, ",");
        strcat(m->weight_dtypes, dn);
    }
    size_t n;
    SS_TRY(ss_dims_product(shape, ndim, &n, t->name));
    m->n_params += (int64_t)n;
    *out = t;
    return SS_OK;
}

/* A float buffer the model owns (freed with it). */
static float *owned_floats(ss_model *m, size_t n, const char *what) {
    size_t bytes;
    if (!ss_mul_ok(n, sizeof(float), &bytes)) {
        ss_errorf(SS_ERR_NOMEM, "%s: %s is too large", m->dir, what);
        return NULL;
    }
    float **no = ss_realloc(m->owned, (m->n_owned + 1) * sizeof *no, "weight list");
    if (!no) return NULL;
    m->owned = no;
    float *buf = ss_malloc(bytes ? bytes : 1, what);
    if (buf) m->owned[m->n_owned++] = buf;
    return buf;
}

/* A weight pointer whose conversion waits (ss_model_load_deferred): the
 * file tensors that fill it, several stacked along their first axis for
 * Llama's q|k|v and gate|up. */
typedef struct ss_weight_src {
    const void **slot;
    const ss_tensor_info *part[3];
    size_t part_n[3]; /* elements of each part */
    int n_parts;
    size_t count;
} ss_weight_src;

static ss_status defer(ss_model *m, const void **slot, const ss_tensor_info *const *parts, const size_t *part_n,
                       int n_parts) {
    if (!ss_grow(&m->srcs, &m->cap_srcs, m->n_srcs + 1, sizeof *m->srcs))
        return ss_errorf(SS_ERR_NOMEM, "%s: out of memory for the weight list", m->dir);
    ss_weight_src *w = &m->srcs[m->n_srcs++];
    memset(w, 0, sizeof *w);
    w->slot = slot;
    w->n_parts = n_parts;
    for (int i = 0; i < n_parts; i++) w->part[i] = parts[i], w->part_n[i] = part_n[i], w->count += part_n[i];
    *slot = parts[0]->data; /* marks the weight present; not float32 until converted */
    return SS_OK;
}

/* Elements [first, first + len) of a waiting weight, in float32. */
static ss_status src_to_f32(const ss_weight_src *w, size_t first, size_t len, float *dst) {
    for (int i = 0; i < w->n_parts && len; i++) {
        if (first >= w->part_n[i]) {
            first -= w->part_n[i];
            continue;
        }
        const size_t take = w->part_n[i] - first < len ? w->part_n[i] - first : len;
        SS_TRY(ss_tensor_to_f32_range(w->part[i], w->part_n[i], first, take, dst));
        dst += take, len -= take, first = 0;
    }
    return SS_OK;
}

static ss_status check_weights(ss_model *m);

/* Converts every waiting weight into a float32 buffer the model owns. */
static ss_status materialize(ss_model *m) {
    SS_TRY(check_weights(m));
    const int tied = m->w.lm_head && m->w.lm_head == m->w.wte;
    for (size_t i = 0; i < m->n_srcs; i++) {
        const ss_weight_src *w = &m->srcs[i];
        float *buf = owned_floats(m, w->count, w->part[0]->name);
        if (!buf) return SS_ERR_NOMEM;
        SS_TRY(src_to_f32(w, 0, w->count, buf));
        for (int j = 0; j < w->n_parts; j++) {
            ss_weights_drop_pages(m->weights, w->part[j]->data, w->part[j]->nbytes); /* a file's: copied */
            if (w->n_parts > 1) ss_weights_release(m->weights, w->part[j]->name); /* a GGUF copy: not needed twice */
        }
        *w->slot = buf;
    }
    if (tied) m->w.lm_head = m->w.wte;
    free(m->srcs);
    m->srcs = NULL;
    m->n_srcs = m->cap_srcs = 0;
    return SS_OK;
}

/* A tensor's data: a pointer into the mapping when the file holds aligned
 * F32, else recorded for conversion (materialize, or ss_model_place). */
static ss_status get_tensor(ss_model *m, const char *name, int ndim, const int64_t *shape, const void **out) {
    const ss_tensor_info *t;
    SS_TRY(find_tensor(m, name, ndim, shape, &t));
    size_t n;
    SS_TRY(ss_dims_product(shape, ndim, &n, t->name));
    /* inspect_only: checked, not converted; the slot only marks the tensor present */
    if (m->inspect_only || (t->dtype == SS_DTYPE_F32 && ((uintptr_t)t->data % sizeof(float)) == 0)) {
        *out = t->data;
        return SS_OK;
    }
    return defer(m, out, &t, &n, 1);
}

/* Several [rows_i, cols] tensors (or [rows_i] vectors, cols 0) stacked along
 * their first axis into one weight: Llama's q|k|v and gate|up. */
static ss_status get_stacked(ss_model *m, int n_parts, char names[][128], const int64_t *rows, int64_t cols,
                             const void **out) {
    const ss_tensor_info *parts[3];
    size_t part_n[3];
    for (int i = 0; i < n_parts; i++) {
        int64_t shape[2] = {rows[i], cols};
        SS_TRY(find_tensor(m, names[i], cols ? 2 : 1, shape, &parts[i]));
        part_n[i] = (size_t)rows[i] * (size_t)(cols ? cols : 1);
    }
    if (m->inspect_only) {
        *out = parts[0]->data;
        return SS_OK;
    }
    return defer(m, out, parts, part_n, n_parts);
}

static ss_status load_weights(ss_model *m) {
    const ss_config *c = &m->cfg;
    int64_t d = c->n_embd, V = c->vocab_size, dm = c->n_inner;
    char nm[128];
#define T1(name, a, dst) do { int64_t s_[1] = {a}; SS_TRY(get_tensor(m, name, 1, s_, &(dst))); } while (0)
#define T2(name, a, b, dst) do { int64_t s_[2] = {a, b}; SS_TRY(get_tensor(m, name, 2, s_, &(dst))); } while (0)
    const int first = m->first_layer == 0, last = m->end_layer == c->n_layer;
    if (first || (last && c->tie_word_embeddings)) T2("wte.weight", V, d, m->w.wte);
    if (first) T2("wpe.weight", c->n_positions, d, m->w.wpe);
    if (last) T1("ln_f.weight", d, m->w.lnf_w);
    if (last) T1("ln_f.bias", d, m->w.lnf_b);
    m->w.layers = ss_calloc((size_t)c->n_layer, sizeof *m->w.layers, "layers");
    if (!m->w.layers) return SS_ERR_NOMEM;
    for (int64_t l = m->first_layer; l < m->end_layer; l++) {
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
    if (!last) {
        /* another stage has the head */
    } else if (c->tie_word_embeddings) {
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


static ss_status set_layer_range(ss_model *m, int first, int end) {
    if (end < 0) end = (int)m->cfg.n_layer;
    if (first < 0 || first >= end || end > m->cfg.n_layer)
        return ss_errorf(SS_ERR_ARG, "%s: blocks %d..%d do not lie within the model's %lld", m->dir, first, end - 1,
                         (long long)m->cfg.n_layer);
    m->first_layer = first;
    m->end_layer = end;
    return SS_OK;
}

/* nm[i] = "model.layers.<l>.<suffix i>" for the non-NULL suffixes: the
 * names of the tensors that load_weights_llama stacks into one matrix. */
static void layer_names(char nm[][128], int64_t l, const char *s0, const char *s1, const char *s2) {
    const char *sfx[3] = {s0, s1, s2};
    for (int i = 0; i < 3; i++)
        if (sfx[i]) snprintf(nm[i], 128, "model.layers.%lld.%s", (long long)l, sfx[i]);
}

/* Hugging Face LlamaForCausalLM names (Mistral and Qwen2 use the same). */
static ss_status load_weights_llama(ss_model *m) {
    const ss_config *c = &m->cfg;
    const int64_t d = c->n_embd, V = c->vocab_size, dm = c->n_inner, dh = ss_config_d_head(c);
    const int64_t H = c->n_head, Hkv = ss_config_kv_heads(c);
    char nm[3][128];
    m->w.trans = 1;
#define T1(name, a, dst) do { int64_t s_[1] = {a}; SS_TRY(get_tensor(m, name, 1, s_, &(dst))); } while (0)
#define T2(name, a, b, dst) do { int64_t s_[2] = {a, b}; SS_TRY(get_tensor(m, name, 2, s_, &(dst))); } while (0)
#define NM(i, suffix) (snprintf(nm[i], sizeof nm[i], "model.layers.%lld.%s", (long long)l, suffix), nm[i])
    const int first = m->first_layer == 0, last = m->end_layer == c->n_layer;
    if (first || (last && c->tie_word_embeddings)) T2("model.embed_tokens.weight", V, d, m->w.wte);
    if (last) T1("model.norm.weight", d, m->w.lnf_w);
    m->w.layers = ss_calloc((size_t)c->n_layer, sizeof *m->w.layers, "layers");
    if (!m->w.layers) return SS_ERR_NOMEM;
    const int64_t qkv_rows[3] = {H * dh, Hkv * dh, Hkv * dh}, gu_rows[2] = {dm, dm};
    for (int64_t l = m->first_layer; l < m->end_layer; l++) {
        ss_gpt2_layer *L = &m->w.layers[l];
        T1(NM(0, "input_layernorm.weight"), d, L->ln1_w);
        layer_names(nm, l, "self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight");
        SS_TRY(get_stacked(m, 3, nm, qkv_rows, d, &L->attn_w));
        if (c->qkv_bias) {
            layer_names(nm, l, "self_attn.q_proj.bias", "self_attn.k_proj.bias", "self_attn.v_proj.bias");
            SS_TRY(get_stacked(m, 3, nm, qkv_rows, 0, &L->attn_b));
        }
        T2(NM(0, "self_attn.o_proj.weight"), d, H * dh, L->proj_w);
        if (c->o_bias) T1(NM(0, "self_attn.o_proj.bias"), d, L->proj_b);
        T1(NM(0, "post_attention_layernorm.weight"), d, L->ln2_w);
        layer_names(nm, l, "mlp.gate_proj.weight", "mlp.up_proj.weight", NULL);
        SS_TRY(get_stacked(m, 2, nm, gu_rows, d, &L->fc_w));
        if (c->mlp_bias) {
            layer_names(nm, l, "mlp.gate_proj.bias", "mlp.up_proj.bias", NULL);
            SS_TRY(get_stacked(m, 2, nm, gu_rows, 0, &L->fc_b));
        }
        T2(NM(0, "mlp.down_proj.weight"), d, dm, L->fc2_w);
        if (c->mlp_bias) T1(NM(0, "mlp.down_proj.bias"), d, L->fc2_b);
    }
#undef NM
    if (!last) {
        /* another stage has the head */
    } else if (c->tie_word_embeddings) {
        m->w.lm_head = m->w.wte;
    } else {
        if (!ss_weights_find(m->weights, "lm_head.weight"))
            return ss_errorf(SS_ERR_FORMAT, "%s: tie_word_embeddings is false but the weights have no 'lm_head.weight'",
                             m->dir);
        T2("lm_head.weight", V, d, m->w.lm_head);
    }
#undef T1
#undef T2
    float *inv = owned_floats(m, (size_t)(dh / 2), "rotary frequencies");
    if (!inv) return SS_ERR_NOMEM;
    ss_config_rope_inv_freq(c, inv);
    /* A Llama 3.x GGUF's rope_freqs.weight (its form of llama3 scaling):
     * llama.cpp divides each rotary angle by the factor. (Only GGUF files:
     * a Hugging Face directory's scaling is in its config.json.) */
    const ss_tensor_info *rf = ss_model_path_is_gguf(m->dir) ? ss_weights_find(m->weights, SS_GGUF_ROPE_FREQS) : NULL;
    if (rf) {
        if (rf->ndim != 1 || rf->shape[0] != dh / 2)
            return ss_errorf(SS_ERR_FORMAT, "%s: tensor '%s' must have shape [%lld] (d_head / 2)", m->dir, rf->name,
                             (long long)(dh / 2));
        float *ff = owned_floats(m, (size_t)(dh / 2), rf->name);
        if (!ff) return SS_ERR_NOMEM;
        SS_TRY(ss_tensor_to_f32(rf, ff, (size_t)(dh / 2)));
        for (int64_t i = 0; i < dh / 2; i++) inv[i] /= ff[i];
    }
    m->w.rope_inv_freq = inv;
    return SS_OK;
}

enum { LOAD_NOW, LOAD_INSPECT, LOAD_DEFERRED };
static ss_status load(const char *dir, int first, int end, int mode, ss_model **out);

ss_status ss_model_load(const char *dir, ss_model **out) { return load(dir, 0, -1, LOAD_NOW, out); }
ss_status ss_model_load_layers(const char *dir, int first, int end, ss_model **out) {
    return load(dir, first, end, LOAD_NOW, out);
}
ss_status ss_model_load_deferred(const char *dir, int first, int end, ss_model **out) {
    return load(dir, first, end, LOAD_DEFERRED, out);
}
ss_status ss_model_inspect(const char *dir, ss_model **out) { return load(dir, 0, -1, LOAD_INSPECT, out); }

static ss_status load(const char *dir, int first, int end, int mode, ss_model **out) {
    *out = NULL;
    ss_model *m = ss_calloc(1, sizeof *m, "model");
    if (!m) return SS_ERR_NOMEM;
    m->inspect_only = mode == LOAD_INSPECT;
    ss_status st = SS_ERR_NOMEM;
    char *cfg_path = NULL;
    if (!(m->dir = ss_strdup(dir))) goto fail;
    if (ss_model_path_is_gguf(dir)) {
        /* A llama.cpp file: config, weights and tokenizer all come from it. */
        if ((st = ss_gguf_model_open(dir, &m->cfg, &m->weights, &m->tok))) goto fail;
        if ((st = set_layer_range(m, first, end))) goto fail;
        if ((st = load_weights_llama(m)) || (st = materialize(m))) goto fail;
        /* What the file holds, not the float32 copies made of it. */
        ss_gguf *g = NULL;
        if (ss_gguf_open(dir, &g) == SS_OK) ss_gguf_type_list(g, m->weight_dtypes, sizeof m->weight_dtypes);
        ss_gguf_free(g);
        *out = m;
        return SS_OK;
    }
    if (!(cfg_path = ss_path_join(dir, "config.json"))) goto fail;
    if ((st = ss_config_load(cfg_path, &m->cfg))) goto fail;
    if ((st = set_layer_range(m, first, end))) goto fail;
    if ((st = ss_weights_open(dir, &m->weights))) goto fail;
    if ((st = m->cfg.family == SS_FAMILY_LLAMA ? load_weights_llama(m) : load_weights(m))) goto fail;
    if (mode == LOAD_NOW && (st = materialize(m))) goto fail;
    /* No tokenizer files: m->tok NULL, and the model still runs on token ids. */
    if ((st = ss_tokenizer_load_dir_opt(dir, &m->tok))) goto fail;
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
    for (int i = 0; i < m->n_held; i++) free(m->held[i].buf); /* a job that failed between passes */
    for (int i = 0; i < m->n_ahead; i++) free(m->ahead[i].buf);
    (void)ss_model_pipe_flush(m); /* a failed send was reported by whoever got its error */
    if (m->pipe_owned) ss_comm_free(m->pipe);
    free(m->stage_first);
    for (size_t i = 0; i < m->n_owned; i++) free(m->owned[i]);
    free(m->owned);
    free(m->srcs);
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

/* At most this many slots. */
static int max_slots(const ss_config *c) { return 6 + 12 * (int)c->n_layer; }

/* Pointers the model lacks (biases of the Llama family, wpe of rotary
 * models) have no slot. */
static int weight_slots(const ss_config *c, ss_gpt2_weights *w, weight_slot *slots) {
    const int64_t d = c->n_embd, V = c->vocab_size, dm = c->n_inner, dh = ss_config_d_head(c);
    const int llama = c->family == SS_FAMILY_LLAMA;
    /* widths of the fused q|k|v, of z and of the MLP's first projection */
    const int64_t qw = (c->n_head + 2 * ss_config_kv_heads(c)) * dh, zw = c->n_head * dh, pw = llama ? 2 * dm : dm;
    int n = 0;
#define SLOT(p, cnt, mat) do { if (p) slots[n++] = (weight_slot){(const void **)&(p), (size_t)(cnt), mat}; } while (0)
    SLOT(w->wte, V * d, 1);
    SLOT(w->wpe, c->n_positions * d, 1);
    SLOT(w->lnf_w, d, 0);
    SLOT(w->lnf_b, d, 0);
    SLOT(w->rope_inv_freq, dh / 2, 0);
    for (int64_t l = 0; l < c->n_layer; l++) {
        ss_gpt2_layer *L = &w->layers[l];
        SLOT(L->ln1_w, d, 0); SLOT(L->ln1_b, d, 0);
        SLOT(L->attn_w, d * qw, 1); SLOT(L->attn_b, qw, 0);
        SLOT(L->proj_w, zw * d, 1); SLOT(L->proj_b, d, 0);
        SLOT(L->ln2_w, d, 0); SLOT(L->ln2_b, d, 0);
        SLOT(L->fc_w, d * pw, 1); SLOT(L->fc_b, pw, 0);
        SLOT(L->fc2_w, dm * d, 1); SLOT(L->fc2_b, d, 0);
    }
    /* A tied lm_head is wte itself and is not stored twice. */
    if (w->lm_head != w->wte) SLOT(w->lm_head, V * d, 1);
#undef SLOT
    return n;
}

/* The file source of a deferred weight slot, or NULL if the slot holds its values. */
static const ss_weight_src *file_src(const ss_model *m, const void *const *slot) {
    for (size_t j = 0; j < m->n_srcs; j++)
        if (m->srcs[j].slot == slot) return &m->srcs[j];
    return NULL;
}

/* A NaN or an infinity in a weight spreads to every output it reaches,
 * silently. So each weight's file tensors are scanned once, before they are
 * converted or uploaded: their pages are read then anyway. */
static ss_status check_tensor(const ss_tensor_info *t) {
    size_t at;
    const char *bad = ss_tensor_nonfinite(t, &at);
    if (!bad) return SS_OK;
    char where[64] = "";
    if (t->ndim == 2 && t->shape[1] > 0)
        snprintf(where, sizeof where, " (row %zu, column %zu)", at / (size_t)t->shape[1], at % (size_t)t->shape[1]);
    return ss_errorf(SS_ERR_FORMAT, "%s: tensor '%s' holds %s at element %zu%s; the weights are corrupt", t->file,
                     t->name, bad, at, where);
}

/* The file tensors behind one weight slot: a deferred weight's parts, or
 * the F32 tensor used in place. A buffer of the model's own (converted and
 * so checked already, or computed) has none. */
static ss_status check_slot(const ss_model *m, const void *const *slot) {
    const ss_weight_src *w = file_src(m, slot);
    for (int j = 0; w && j < w->n_parts; j++) SS_TRY(check_tensor(w->part[j]));
    for (size_t i = 0; !w && i < ss_weights_count(m->weights); i++) {
        const ss_tensor_info *t = ss_weights_at(m->weights, i);
        if (t->data && t->data == *slot) return check_tensor(t);
    }
    return SS_OK;
}

static ss_status check_weights(ss_model *m) {
    if (m->finite_checked) return SS_OK;
    weight_slot *slots = ss_malloc((size_t)max_slots(&m->cfg) * sizeof *slots, "weight list");
    if (!slots) return SS_ERR_NOMEM;
    ss_status st = SS_OK;
    const int n = weight_slots(&m->cfg, &m->w, slots);
    for (int i = 0; i < n && !st; i++) st = check_slot(m, slots[i].ptr);
    free(slots);
    m->finite_checked = !st;
    return st;
}

ss_status ss_model_place(ss_model *m, const ss_backend *be, int wdtype) {
    if (wdtype == SS_WDTYPE_AUTO)
        wdtype = be->host_memory                        ? SS_WDTYPE_F32
                 : strstr(m->weight_dtypes, "BF16")     ? SS_WDTYPE_BF16
                 : strstr(m->weight_dtypes, "F16") == m->weight_dtypes || strstr(m->weight_dtypes, ",F16")
                     ? SS_WDTYPE_F16
                     : SS_WDTYPE_F32;
    if (m->inspect_only) return ss_errorf(SS_ERR_INTERNAL, "%s: opened for inspection only; load it to run it", m->dir);
    if (wdtype != SS_WDTYPE_F32 && wdtype != SS_WDTYPE_BF16 && wdtype != SS_WDTYPE_F16)
        return ss_errorf(SS_ERR_UNSUPPORTED, "%s: weights can be placed as float32, bfloat16 or float16 only", m->dir);
    /* The CPU computes in float32 (or bfloat16, as a check of the GPU's products); float16 is a GPU placement. */
    if (be->host_memory && wdtype == SS_WDTYPE_F16)
        return ss_errorf(SS_ERR_UNSUPPORTED, "%s: float16 weights are for GPUs; the CPU computes in float32", m->dir);
    if (m->placed_on == be && m->placed.wdtype == wdtype) return SS_OK;
    if (be->host_memory && wdtype == SS_WDTYPE_F32) return materialize(m); /* a no-op unless deferred */
    if (m->placed_on)
        return ss_errorf(SS_ERR_UNSUPPORTED, "%s: weights are already placed on %s; one model serves one placement",
                         m->dir, m->placed_on->name);
    int nmax = max_slots(&m->cfg);
    weight_slot *src = ss_malloc((size_t)nmax * sizeof *src, "weight list");
    weight_slot *dst = ss_malloc((size_t)nmax * sizeof *dst, "weight list");
    /* Conversions go through two small buffers, a chunk of a tensor at a time. */
    enum { CHUNK = 1 << 20 };
    float *f32 = ss_malloc(CHUNK * sizeof *f32, "weight conversion");
    uint16_t *h16 = ss_malloc(CHUNK * sizeof *h16, "weight conversion");
    m->placed = m->w;
    m->placed.wdtype = wdtype;
    m->placed.layers = ss_malloc((size_t)m->cfg.n_layer * sizeof *m->placed.layers, "layers");
    ss_status st = SS_ERR_NOMEM;
    if (!src || !dst || !f32 || !h16 || !m->placed.layers) goto out;
    memcpy(m->placed.layers, m->w.layers, (size_t)m->cfg.n_layer * sizeof *m->placed.layers);
    int n = weight_slots(&m->cfg, &m->w, src);
    weight_slots(&m->cfg, &m->placed, dst);
    /* One block for everything, each tensor 256-byte aligned. */
    const size_t esz = wdtype == SS_WDTYPE_F32 ? 4 : 2;
    const ss_dtype own16 = wdtype == SS_WDTYPE_F16 ? SS_DTYPE_F16 : SS_DTYPE_BF16;
    size_t total = 0;
    for (int i = 0; i < n; i++) total += ((src[i].count * (src[i].matrix ? esz : 4)) + 255) & ~(size_t)255;
    if ((st = be->alloc(be, total, "model weights", &m->placed_block))) goto out;
    m->placed_on = be;
    char *p = m->placed_block;
    for (int i = 0; i < n && !st; i++) {
        const ss_weight_src *w = file_src(m, src[i].ptr); /* still in the files (ss_model_load_deferred) */
        /* the next tensor's pages come from disk while this one is copied (a cold page cache) */
        const ss_weight_src *next = i + 1 < n ? file_src(m, src[i + 1].ptr) : NULL;
        for (int j = 0; next && j < next->n_parts; j++)
            ss_weights_prefetch(m->weights, next->part[j]->data, next->part[j]->nbytes);
        const size_t count = src[i].count, es = src[i].matrix ? esz : 4, bytes = count * es;
        if (!m->finite_checked && (st = check_slot(m, src[i].ptr))) break;
        if (w && w->count != count) {
            st = ss_errorf(SS_ERR_INTERNAL, "%s: '%s' holds %zu elements, not %zu", m->dir, w->part[0]->name, w->count,
                           count);
        } else if (w && es == 2 && w->n_parts == 1 && w->part[0]->dtype == own16) {
            st = be->upload(be, p, w->part[0]->data, bytes); /* the file's own 16-bit values */
        } else if (!w && es == 4) {
            st = be->upload(be, p, *src[i].ptr, bytes);
        } else {
            for (size_t off = 0; off < count && !st; off += CHUNK) {
                const size_t len = count - off < CHUNK ? count - off : CHUNK;
                const float *from = w ? f32 : (const float *)*src[i].ptr + off;
                if (w && (st = src_to_f32(w, off, len, f32))) break;
                if (es == 2) {
                    for (size_t j = 0; j < len; j++)
                        h16[j] = wdtype == SS_WDTYPE_F16 ? ss_f32_to_f16(from[j]) : ss_f32_to_bf16(from[j]);
                    st = be->upload(be, p + off * 2, h16, len * 2);
                } else {
                    st = be->upload(be, p + off * 4, from, len * 4);
                }
            }
        }
        /* What came from the files is on the device now: their pages can leave host memory. */
        if (w)
            for (int j = 0; j < w->n_parts; j++) ss_weights_drop_pages(m->weights, w->part[j]->data, w->part[j]->nbytes);
        else
            ss_weights_drop_pages(m->weights, *src[i].ptr, count * 4);
        *dst[i].ptr = p;
        p += (bytes + 255) & ~(size_t)255;
    }
    if (st) goto out;
    m->finite_checked = 1;
    if (m->w.lm_head == m->w.wte) m->placed.lm_head = m->placed.wte;
    st = be->sync(be);
out:
    free(src);
    free(dst);
    free(f32);
    free(h16);
    return st;
}

const ss_gpt2_weights *ss_model_weights(const ss_model *m, const ss_backend *be) {
    if (m->inspect_only) return NULL;
    if (m->placed_on == be) return &m->placed;
    return be->host_memory && !m->n_srcs ? &m->w : NULL; /* deferred weights are not float32 yet */
}

ss_status ss_grads_alloc(const ss_model *m, const ss_backend *be, ss_gpt2_weights *g) {
    const int nmax = max_slots(&m->cfg);
    weight_slot *slots = ss_malloc((size_t)nmax * sizeof *slots, "weight list");
    *g = m->w; /* the same pointers, so the same tying and absent biases, until replaced below */
    g->wdtype = SS_WDTYPE_F32;
    g->rope_inv_freq = NULL; /* fixed, not a parameter */
    g->layers = ss_malloc((size_t)m->cfg.n_layer * sizeof *g->layers, "layers");
    ss_status st = SS_ERR_NOMEM;
    void *block = NULL;
    if (!slots || !g->layers) goto fail;
    memcpy(g->layers, m->w.layers, (size_t)m->cfg.n_layer * sizeof *g->layers);
    const int n = weight_slots(&m->cfg, g, slots);
    size_t total = 0;
    for (int i = 0; i < n; i++) total += (slots[i].count * sizeof(float) + 255) & ~(size_t)255;
    if ((st = be->alloc(be, total, "weight gradients", &block)) || (st = be->zero(be, block, total))) goto fail;
    const int tied = m->w.lm_head == m->w.wte;
    char *p = block;
    for (int i = 0; i < n; i++) { /* wte comes first, so g->wte is the block ss_grads_free releases */
        *slots[i].ptr = p;
        p += (slots[i].count * sizeof(float) + 255) & ~(size_t)255;
    }
    if (tied) g->lm_head = g->wte;
    free(slots);
    return SS_OK;
fail:
    if (block) be->release(be, block);
    free(slots);
    free(g->layers);
    memset(g, 0, sizeof *g);
    return st;
}

void ss_grads_free(const ss_backend *be, ss_gpt2_weights *g) {
    if (g->wte) be->release(be, (void *)g->wte);
    free(g->layers);
    memset(g, 0, sizeof *g);
}

/* ---- pipeline stages ---- */

/* The split that --pipeline-blocks leaves to us: every stage but the last
 * takes an even share of the blocks the last leaves (the first stages one
 * more), and the last takes the count k that makes the slowest stage
 * fastest, counting its head's d*V multiply-adds per token when it scores
 * logits. A split whose stages all keep their fp32 weights within max_bytes
 * (> 0) comes before any that does not; among equally fast ones, the one
 * with the fewest stages at the slowest's cost, then the smaller k. Without
 * a head that is the even split. */
static void balance_split(const ss_config *c, int n_stages, int logits, int64_t max_bytes, int *first_of) {
    /* Costs in multiply-adds per token, exact in int64. */
    const int64_t L = c->n_layer, P = n_stages, b = ss_config_block_macs(c), h = logits ? c->n_embd * c->vocab_size : 0;
    int64_t best_k = 0, best_cost = 0, best_at_max = 0;
    int best_fits = 0;
    for (int64_t k = 1; k <= L - (P - 1); k++) {
        const int64_t rest = L - k, base = rest / (P - 1), extra = rest % (P - 1);
        const int64_t last = k * b + h, other = (base + (extra ? 1 : 0)) * b, cost = last > other ? last : other;
        const int64_t at_max = (other == cost ? (extra ? extra : P - 1) : 0) + (last == cost);
        int fits = 1;
        if (max_bytes > 0) /* the first stage holds at least as much as the middle ones */
            fits = 4 * ss_config_stage_params(c, 0, base + (extra ? 1 : 0)) <= max_bytes &&
                   4 * ss_config_stage_params(c, L - k, L) <= max_bytes;
        if (!best_k || fits > best_fits ||
            (fits == best_fits && (cost < best_cost || (cost == best_cost && at_max < best_at_max)))) {
            best_k = k, best_cost = cost, best_at_max = at_max, best_fits = fits;
        }
    }
    const int64_t rest = L - best_k, base = rest / (P - 1), extra = rest % (P - 1);
    first_of[0] = 0;
    for (int s = 0; s + 1 < n_stages; s++) first_of[s + 1] = (int)(first_of[s] + base + (s < extra ? 1 : 0));
    first_of[n_stages] = (int)L;
}

ss_status ss_pipeline_split(const ss_config *c, int n_stages, const char *blocks, int logits, int64_t max_bytes,
                            int *first_of) {
    const int64_t n_layer = c->n_layer;
    if (n_stages < 1 || n_stages > n_layer)
        return ss_errorf(SS_ERR_ARG, "--pipeline %d: the model has only %lld blocks", n_stages, (long long)n_layer);
    first_of[0] = 0;
    if (n_stages == 1) {
        first_of[1] = (int)n_layer;
        return SS_OK;
    }
    if (!blocks || !strcmp(blocks, "even")) {
        balance_split(c, n_stages, !blocks && logits, blocks ? 0 : max_bytes, first_of);
        return SS_OK;
    }
    const char *p = blocks;
    for (int s = 0; s < n_stages; s++) {
        const char *end = p + strcspn(p, ",");
        int64_t v;
        if (!ss_parse_int_n(p, (size_t)(end - p), &v) || v < 1 || v > n_layer || (s + 1 < n_stages && *end != ','))
            return ss_errorf(SS_ERR_ARG, "--pipeline-blocks '%s': expected %d block counts of at least 1, separated "
                             "by commas (one per stage of --pipeline %d)", blocks, n_stages, n_stages);
        if (s + 1 == n_stages && *end)
            return ss_errorf(SS_ERR_ARG, "--pipeline-blocks '%s': more block counts than the %d stages of --pipeline %d",
                             blocks, n_stages, n_stages);
        first_of[s + 1] = first_of[s] + (int)v; /* at most 4096 * n_layer: no overflow */
        p = end + 1;
    }
    if (first_of[n_stages] != n_layer)
        return ss_errorf(SS_ERR_ARG, "--pipeline-blocks '%s': the counts add up to %d, but the model has %lld blocks",
                         blocks, first_of[n_stages], (long long)n_layer);
    return SS_OK;
}

ss_status ss_model_set_pipeline(ss_model *m, struct ss_comm *comm, const int *first_of) {
    const int stage = ss_comm_rank(comm), n = ss_comm_size(comm);
    if (n > m->cfg.n_layer)
        return ss_errorf(SS_ERR_ARG, "%s: a pipeline of %d stages needs at least %d blocks; the model has %lld", m->dir, n,
                         n, (long long)m->cfg.n_layer);
    const int first = first_of[stage], end = first_of[stage + 1];
    if (first != m->first_layer || end != m->end_layer)
        return ss_errorf(SS_ERR_INTERNAL, "%s: stage %d runs blocks %d..%d but blocks %d..%d were loaded", m->dir, stage,
                         first, end - 1, m->first_layer, m->end_layer - 1);
    int *copy = ss_malloc((size_t)(n + 1) * sizeof *copy, "pipeline split");
    if (!copy) return SS_ERR_NOMEM;
    memcpy(copy, first_of, (size_t)(n + 1) * sizeof *copy);
    free(m->stage_first);
    m->stage_first = copy;
    m->pipe = n > 1 ? comm : NULL;
    m->stage = stage;
    m->n_stages = n;
    if (!m->n_replicas) m->n_replicas = 1;
    return SS_OK;
}

int64_t ss_model_weight_bytes(const ss_model *m) {
    int64_t bytes = 0;
    weight_slot *slots = ss_malloc((size_t)max_slots(&m->cfg) * sizeof *slots, "weight list");
    if (!slots) return -1;
    ss_gpt2_weights w = m->w;
    const int n = weight_slots(&m->cfg, &w, slots);
    for (int i = 0; i < n; i++) bytes += (int64_t)(slots[i].count * sizeof(float));
    free(slots);
    return bytes;
}

/* ------------------------------------------------------------ fingerprint */

/* The files of a model directory that the loader reads. */
static int model_file(const char *name) {
    static const char *const exact[] = {"config.json", "model.safetensors.index.json", "tokenizer.json", "vocab.json",
                                        "encoder.json", "merges.txt", "vocab.bpe", "special_tokens_map.json"};
    for (size_t i = 0; i < sizeof exact / sizeof exact[0]; i++)
        if (!strcmp(name, exact[i])) return 1;
    size_t n = strlen(name), k = strlen(".safetensors");
    return n > k && !strcmp(name + n - k, ".safetensors");
}

static int cmp_names(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

ss_status ss_model_fingerprint(const char *path, char out[65], int64_t *bytes) {
    *bytes = 0;
    if (ss_model_path_is_gguf(path)) return ss_file_fingerprint(path, out, bytes);
    DIR *d = opendir(path);
    if (!d) return ss_errorf(SS_ERR_IO, "%s: cannot open the model directory: %s", path, strerror(errno));
    char **names = NULL;
    size_t n = 0, cap = 0;
    ss_status st = SS_OK;
    for (struct dirent *e; !st && (e = readdir(d));) {
        if (!model_file(e->d_name)) continue;
        if (!ss_grow(&names, &cap, n + 1, sizeof *names) || !(names[n] = ss_strdup(e->d_name))) st = SS_ERR_NOMEM;
        else n++;
    }
    closedir(d);
    if (!st) qsort(names, n, sizeof *names, cmp_names);
    ss_sha256 s;
    ss_sha256_init(&s);
    for (size_t i = 0; i < n && !st; i++) {
        char *file = ss_path_join(path, names[i]), fp[65];
        int64_t size = 0;
        if (!file) st = SS_ERR_NOMEM;
        else if (!(st = ss_file_fingerprint(file, fp, &size))) {
            char line[600];
            int k = snprintf(line, sizeof line, "%s %lld %s\n", names[i], (long long)size, fp);
            ss_sha256_update(&s, line, (size_t)k < sizeof line ? (size_t)k : sizeof line - 1);
            *bytes += size;
        }
        free(file);
    }
    for (size_t i = 0; i < n; i++) free(names[i]);
    free(names);
    if (!st) ss_sha256_hex(&s, out);
    return st;
}
