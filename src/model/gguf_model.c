/* llama-architecture GGUF files as Hugging Face models: the llama.*
 * hyper-parameters become an ss_config, the tensors become fp32 tensors under
 * Hugging Face's names, and tokenizer.ggml.* becomes a tokenizer.json document
 * that the tokenizer module loads. What the Llama forward pass cannot compute
 * exactly (partial rotary, YaRN, mixtures of experts, unknown tensors, other
 * tokenizers) is refused by name rather than approximated. */
#include "subscope/gguf_model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "subscope/json.h"
#include "subscope/util.h"

/* ---------------------------------------------------------------- config */

static ss_status pos_int(const ss_gguf *g, const char *key, int have_default, int64_t dflt, int64_t *out) {
    if (have_default && !ss_gguf_find(g, key)) {
        *out = dflt;
        return SS_OK;
    }
    SS_TRY(ss_gguf_get_int(g, key, out));
    if (*out <= 0)
        return ss_errorf(SS_ERR_FORMAT, "%s: \"%s\" is %lld; it must be positive", ss_gguf_path(g), key, (long long)*out);
    return SS_OK;
}

static ss_status pos_float(const ss_gguf *g, const char *key, int have_default, double dflt, double *out) {
    if (have_default && !ss_gguf_find(g, key)) {
        *out = dflt;
        return SS_OK;
    }
    SS_TRY(ss_gguf_get_float(g, key, out));
    if (!(*out > 0) || *out > 1e300)
        return ss_errorf(SS_ERR_FORMAT, "%s: \"%s\" is %g; it must be a positive number", ss_gguf_path(g), key, *out);
    return SS_OK;
}

/* Token ids from tokenizer.ggml.*_token_id, -1 when absent. */
static ss_status token_id(const ss_gguf *g, const char *key, int64_t *out) {
    *out = -1;
    if (!ss_gguf_find(g, key)) return SS_OK;
    SS_TRY(ss_gguf_get_int(g, key, out));
    if (*out < 0) return ss_errorf(SS_ERR_FORMAT, "%s: \"%s\" is negative", ss_gguf_path(g), key);
    return SS_OK;
}

static ss_status rope_scaling(const ss_gguf *g, ss_config *c) {
    const char *path = ss_gguf_path(g);
    c->rope_type = SS_ROPE_NONE;
    const ss_gguf_value *ty = ss_gguf_find(g, "llama.rope.scaling.type");
    if (ty) {
        const ss_gguf_str *s;
        SS_TRY(ss_gguf_get_str(g, "llama.rope.scaling.type", &s));
        if (!strcmp(s->s, "none")) return SS_OK;
        if (strcmp(s->s, "linear"))
            return ss_errorf(SS_ERR_UNSUPPORTED,
                             "%s: \"llama.rope.scaling.type\" \"%.40s\" is not supported (only \"none\" and \"linear\")",
                             path, s->s);
        c->rope_type = SS_ROPE_LINEAR;
        SS_TRY(pos_float(g, "llama.rope.scaling.factor", 0, 0, &c->rope_factor));
    } else if (ss_gguf_find(g, "llama.rope.scale_linear")) {
        /* The key older converters wrote for linear scaling. */
        double f;
        SS_TRY(pos_float(g, "llama.rope.scale_linear", 0, 0, &f));
        if (f == 1.0) return SS_OK;
        c->rope_type = SS_ROPE_LINEAR;
        c->rope_factor = f;
    } else {
        return SS_OK;
    }
    if (!(c->rope_factor >= 1))
        return ss_errorf(SS_ERR_FORMAT, "%s: the rope scaling factor %g is below 1", path, c->rope_factor);
    return SS_OK;
}

static ss_status read_config(const ss_gguf *g, ss_config *c) {
    const char *path = ss_gguf_path(g);
    memset(c, 0, sizeof *c);
    const ss_gguf_str *arch;
    SS_TRY(ss_gguf_get_str(g, "general.architecture", &arch));
    if (strcmp(arch->s, "llama"))
        return ss_errorf(SS_ERR_UNSUPPORTED, "%s: general.architecture \"%.40s\" is not supported (only \"llama\")", path,
                         arch->s);
    snprintf(c->arch, sizeof c->arch, "llama");
    c->family = SS_FAMILY_LLAMA;
    c->act = SS_ACT_SILU;
    c->scale_attn_weights = 1;
    int64_t experts = 0;
    if (ss_gguf_find(g, "llama.expert_count")) SS_TRY(ss_gguf_get_int(g, "llama.expert_count", &experts));
    if (experts > 0)
        return ss_errorf(SS_ERR_UNSUPPORTED, "%s: \"llama.expert_count\" is %lld: mixtures of experts are not supported",
                         path, (long long)experts);
    SS_TRY(pos_int(g, "llama.block_count", 0, 0, &c->n_layer));
    SS_TRY(pos_int(g, "llama.embedding_length", 0, 0, &c->n_embd));
    SS_TRY(pos_int(g, "llama.feed_forward_length", 0, 0, &c->n_inner));
    SS_TRY(pos_int(g, "llama.attention.head_count", 0, 0, &c->n_head));
    SS_TRY(pos_int(g, "llama.attention.head_count_kv", 1, c->n_head, &c->n_kv_head));
    SS_TRY(pos_int(g, "llama.context_length", 0, 0, &c->n_positions));
    if (c->n_head % c->n_kv_head)
        return ss_errorf(SS_ERR_FORMAT, "%s: llama.attention.head_count %lld is not a multiple of head_count_kv %lld", path,
                         (long long)c->n_head, (long long)c->n_kv_head);
    if (ss_gguf_find(g, "llama.attention.key_length")) {
        SS_TRY(pos_int(g, "llama.attention.key_length", 0, 0, &c->d_head));
    } else {
        if (c->n_embd % c->n_head)
            return ss_errorf(SS_ERR_FORMAT, "%s: llama.embedding_length %lld is not divisible by head_count %lld", path,
                             (long long)c->n_embd, (long long)c->n_head);
        c->d_head = c->n_embd / c->n_head;
    }
    int64_t v_len;
    SS_TRY(pos_int(g, "llama.attention.value_length", 1, c->d_head, &v_len));
    if (v_len != c->d_head)
        return ss_errorf(SS_ERR_UNSUPPORTED, "%s: llama.attention.value_length %lld differs from key_length %lld", path,
                         (long long)v_len, (long long)c->d_head);
    if (c->d_head % 2)
        return ss_errorf(SS_ERR_FORMAT, "%s: head dimension %lld is odd; rotary embeddings need it even", path,
                         (long long)c->d_head);
    int64_t rot;
    SS_TRY(pos_int(g, "llama.rope.dimension_count", 1, c->d_head, &rot));
    if (rot != c->d_head)
        return ss_errorf(SS_ERR_UNSUPPORTED,
                         "%s: llama.rope.dimension_count %lld is not the head dimension %lld: partial rotary embeddings "
                         "are not supported",
                         path, (long long)rot, (long long)c->d_head);
    SS_TRY(pos_float(g, "llama.attention.layer_norm_rms_epsilon", 0, 0, &c->ln_eps));
    /* llama.cpp's default when the key is absent, as LlamaConfig's. */
    SS_TRY(pos_float(g, "llama.rope.freq_base", 1, 10000.0, &c->rope_theta));
    SS_TRY(rope_scaling(g, c));
    SS_TRY(token_id(g, "tokenizer.ggml.bos_token_id", &c->bos_token_id));
    SS_TRY(token_id(g, "tokenizer.ggml.eos_token_id", &c->eos_token_id));
    /* llama.cpp's generation also stops at the end-of-turn id (Llama 3's <|eot_id|>) */
    int64_t eot;
    SS_TRY(token_id(g, "tokenizer.ggml.eot_token_id", &eot));
    c->n_eos = 0;
    if (c->eos_token_id >= 0) c->eos_ids[c->n_eos++] = c->eos_token_id;
    if (eot >= 0 && eot != c->eos_token_id) c->eos_ids[c->n_eos++] = eot;
    if (c->n_eos) c->eos_token_id = c->eos_ids[0]; /* (an eot alone is the end id, as config.json's first) */
    return ss_config_check_sizes(c, path);
}

/* --------------------------------------------------------------- tensors */

enum { G_ALWAYS, G_QKV_BIAS, G_O_BIAS, G_MLP_BIAS };
enum { D_D, D_Q, D_KV, D_MLP }; /* dimension codes: d, H*dh, Hkv*dh, d_mlp */

typedef struct {
    const char *gguf, *hf;
    int group;
    int ndim;
    int dims[2];
    int permute; /* 0, or the D_Q / D_KV of the heads whose rows llama.cpp interleaved */
} layer_tensor;

static const layer_tensor layer_tensors[] = {
    {"attn_norm.weight", "input_layernorm.weight", G_ALWAYS, 1, {D_D}, 0},
    {"attn_q.weight", "self_attn.q_proj.weight", G_ALWAYS, 2, {D_Q, D_D}, D_Q},
    {"attn_q.bias", "self_attn.q_proj.bias", G_QKV_BIAS, 1, {D_Q}, D_Q},
    {"attn_k.weight", "self_attn.k_proj.weight", G_ALWAYS, 2, {D_KV, D_D}, D_KV},
    {"attn_k.bias", "self_attn.k_proj.bias", G_QKV_BIAS, 1, {D_KV}, D_KV},
    {"attn_v.weight", "self_attn.v_proj.weight", G_ALWAYS, 2, {D_KV, D_D}, 0},
    {"attn_v.bias", "self_attn.v_proj.bias", G_QKV_BIAS, 1, {D_KV}, 0},
    {"attn_output.weight", "self_attn.o_proj.weight", G_ALWAYS, 2, {D_D, D_Q}, 0},
    {"attn_output.bias", "self_attn.o_proj.bias", G_O_BIAS, 1, {D_D}, 0},
    {"ffn_norm.weight", "post_attention_layernorm.weight", G_ALWAYS, 1, {D_D}, 0},
    {"ffn_gate.weight", "mlp.gate_proj.weight", G_ALWAYS, 2, {D_MLP, D_D}, 0},
    {"ffn_gate.bias", "mlp.gate_proj.bias", G_MLP_BIAS, 1, {D_MLP}, 0},
    {"ffn_up.weight", "mlp.up_proj.weight", G_ALWAYS, 2, {D_MLP, D_D}, 0},
    {"ffn_up.bias", "mlp.up_proj.bias", G_MLP_BIAS, 1, {D_MLP}, 0},
    {"ffn_down.weight", "mlp.down_proj.weight", G_ALWAYS, 2, {D_D, D_MLP}, 0},
    {"ffn_down.bias", "mlp.down_proj.bias", G_MLP_BIAS, 1, {D_D}, 0},
};
#define N_LAYER_TENSORS (sizeof layer_tensors / sizeof layer_tensors[0])

typedef struct {
    const ss_gguf *g;
    const ss_config *c;
    ss_weights *w;
    const ss_gguf_tensor **used; /* tensors consumed, to find ones nobody expects */
    size_t n_used;
} loader;

static int64_t dim_of(const ss_config *c, int code) {
    switch (code) {
    case D_Q: return c->n_head * c->d_head;
    case D_KV: return c->n_kv_head * c->d_head;
    case D_MLP: return c->n_inner;
    default: return c->n_embd;
    }
}

static void shape_str(char *buf, size_t cap, int ndim, const int64_t *shape) {
    size_t o = 0;
    buf[0] = 0;
    for (int i = 0; i < ndim && o < cap; i++)
        o += (size_t)snprintf(buf + o, cap - o, "%s%lld", i ? ", " : "", (long long)shape[i]);
}

/* llama.cpp's converter stores row h*dh + 2*i + s of attn_q/attn_k where
 * Hugging Face has row h*dh + s*dh/2 + i (its permute: reshape(n_head, 2,
 * dh/2, ...).swapaxes(1, 2)), so that its rotary kernel can rotate adjacent
 * pairs; Hugging Face rotates the two halves of each head. */
static void unpermute_rows(const float *src, float *dst, int64_t n_heads, int64_t dh, int64_t row_len) {
    const int64_t half = dh / 2;
    for (int64_t h = 0; h < n_heads; h++)
        for (int64_t i = 0; i < half; i++)
            for (int64_t s = 0; s < 2; s++)
                memcpy(dst + (size_t)(h * dh + s * half + i) * (size_t)row_len,
                       src + (size_t)(h * dh + 2 * i + s) * (size_t)row_len, (size_t)row_len * sizeof *dst);
}

/* Converts one GGUF tensor (checked against the expected shape) and adds it to
 * the weights under hf_name. n_perm_heads > 0 undoes the rotary permutation. */
static ss_status take(loader *L, const ss_gguf_tensor *t, const char *hf_name, int ndim, const int64_t *shape,
                      int64_t n_perm_heads) {
    const char *path = ss_gguf_path(L->g);
    int same = t->n_dims == ndim;
    for (int i = 0; same && i < ndim; i++) same = t->shape[i] == shape[i];
    if (!same) {
        char want[96], got[96];
        shape_str(want, sizeof want, ndim, shape);
        shape_str(got, sizeof got, t->n_dims, t->shape);
        return ss_errorf(SS_ERR_FORMAT, "%s: tensor \"%s\" has shape [%s] but the llama.* metadata imply [%s]", path,
                         t->name, got, want);
    }
    size_t bytes;
    if (!ss_mul_ok(t->n_elements, sizeof(float), &bytes))
        return ss_errorf(SS_ERR_FORMAT, "%s: tensor \"%s\" is too large", path, t->name);
    float *buf = ss_malloc(bytes ? bytes : 1, t->name);
    if (!buf) return SS_ERR_NOMEM;
    ss_status s = ss_gguf_tensor_to_f32(L->g, t, buf);
    if (s == SS_OK && n_perm_heads > 0) {
        const int64_t dh = L->c->d_head, row_len = ndim == 2 ? shape[1] : 1;
        float *out = ss_malloc(bytes ? bytes : 1, t->name);
        if (!out) s = SS_ERR_NOMEM;
        else {
            unpermute_rows(buf, out, n_perm_heads, dh, row_len);
            free(buf);
            buf = out;
        }
    }
    if (s != SS_OK) {
        free(buf);
        return s;
    }
    L->used[L->n_used++] = t;
    return ss_weights_add_f32(L->w, hf_name, ndim, shape, buf, path);
}

static ss_status missing(const loader *L, const char *gguf_name, const char *hf_name) {
    return ss_errorf(SS_ERR_FORMAT, "%s: tensor \"%s\" (Hugging Face \"%s\") is missing", ss_gguf_path(L->g), gguf_name,
                     hf_name);
}

/* rope_freqs.weight: how llama.cpp's converter stores Llama 3.x's llama3 rope
 * scaling (the file has no rope_scaling metadata for it): one divisor per
 * rotary frequency, which llama.cpp's rope kernels apply to the angle
 * (theta / freq_factors[i]). Kept under its GGUF name; the model loader
 * divides the config's inverse frequencies by it. Every factor must be a
 * finite positive number. */
static ss_status take_rope_freqs(loader *L, const ss_config *c) {
    const ss_gguf_tensor *t = ss_gguf_find_tensor(L->g, SS_GGUF_ROPE_FREQS);
    if (!t) return SS_OK;
    const int64_t half[1] = {c->d_head / 2};
    SS_TRY(take(L, t, SS_GGUF_ROPE_FREQS, 1, half, 0));
    const ss_tensor_info *ti = ss_weights_find(L->w, SS_GGUF_ROPE_FREQS);
    const float *f = ti ? (const float *)ti->data : NULL;
    if (!f) return ss_errorf(SS_ERR_INTERNAL, "%s: rope_freqs.weight was not kept", ss_gguf_path(L->g));
    for (int64_t i = 0; i < half[0]; i++)
        if (!(f[i] > 0) || !isfinite(f[i]))
            return ss_errorf(SS_ERR_FORMAT,
                             "%s: tensor \"%s\": factor %lld is %g; rotary frequency divisors must be finite and "
                             "positive", ss_gguf_path(L->g), SS_GGUF_ROPE_FREQS, (long long)i, (double)f[i]);
    return SS_OK;
}

/* What the config takes from the tensors rather than the metadata: the
 * vocabulary (token_embd's rows), tied embeddings (no output.weight) and the
 * optional biases (read off layer 0; load_tensors checks every layer agrees). */
static ss_status config_from_tensors(const ss_gguf *g, ss_config *c) {
    const ss_gguf_tensor *emb = ss_gguf_find_tensor(g, "token_embd.weight");
    if (!emb)
        return ss_errorf(SS_ERR_FORMAT, "%s: tensor \"token_embd.weight\" (Hugging Face \"model.embed_tokens.weight\") is "
                         "missing", ss_gguf_path(g));
    if (emb->n_dims != 2 || emb->shape[1] != c->n_embd || emb->shape[0] <= 0) {
        char got[96];
        shape_str(got, sizeof got, emb->n_dims, emb->shape);
        return ss_errorf(SS_ERR_FORMAT, "%s: tensor \"token_embd.weight\" has shape [%s], not [vocab, %lld]",
                         ss_gguf_path(g), got, (long long)c->n_embd);
    }
    c->vocab_size = emb->shape[0];
    c->tie_word_embeddings = ss_gguf_find_tensor(g, "output.weight") == NULL;
    c->qkv_bias = ss_gguf_find_tensor(g, "blk.0.attn_q.bias") != NULL;
    c->o_bias = ss_gguf_find_tensor(g, "blk.0.attn_output.bias") != NULL;
    c->mlp_bias = ss_gguf_find_tensor(g, "blk.0.ffn_up.bias") != NULL;
    return SS_OK;
}

static ss_status load_tensors(loader *L, ss_config *c) {
    const ss_gguf *g = L->g;
    const char *path = ss_gguf_path(g);
    SS_TRY(take_rope_freqs(L, c));
    SS_TRY(config_from_tensors(g, c));
    const ss_gguf_tensor *emb = ss_gguf_find_tensor(g, "token_embd.weight"), *out = ss_gguf_find_tensor(g, "output.weight");
    const int groups[] = {1, c->qkv_bias, c->o_bias, c->mlp_bias};

    int64_t shape[2] = {c->vocab_size, c->n_embd};
    SS_TRY(take(L, emb, "model.embed_tokens.weight", 2, shape, 0));
    char gname[96], hname[128];
    for (int64_t l = 0; l < c->n_layer; l++) {
        for (size_t k = 0; k < N_LAYER_TENSORS; k++) {
            const layer_tensor *e = &layer_tensors[k];
            snprintf(gname, sizeof gname, "blk.%lld.%s", (long long)l, e->gguf);
            snprintf(hname, sizeof hname, "model.layers.%lld.%s", (long long)l, e->hf);
            const ss_gguf_tensor *t = ss_gguf_find_tensor(g, gname);
            if (!groups[e->group]) {
                if (t)
                    return ss_errorf(SS_ERR_FORMAT, "%s: tensor \"%s\" exists but layer 0 has no \"blk.0.%s\"", path,
                                     gname, e->gguf);
                continue;
            }
            if (!t) return missing(L, gname, hname);
            for (int i = 0; i < e->ndim; i++) shape[i] = dim_of(c, e->dims[i]);
            int64_t heads = e->permute == D_Q ? c->n_head : e->permute == D_KV ? c->n_kv_head : 0;
            SS_TRY(take(L, t, hname, e->ndim, shape, heads));
        }
    }
    const ss_gguf_tensor *norm = ss_gguf_find_tensor(g, "output_norm.weight");
    if (!norm) return missing(L, "output_norm.weight", "model.norm.weight");
    shape[0] = c->n_embd;
    SS_TRY(take(L, norm, "model.norm.weight", 1, shape, 0));
    if (out) {
        shape[0] = c->vocab_size;
        shape[1] = c->n_embd;
        SS_TRY(take(L, out, "lm_head.weight", 2, shape, 0));
    }
    if (L->n_used != ss_gguf_tensor_count(g))
        for (size_t i = 0; i < ss_gguf_tensor_count(g); i++) {
            const ss_gguf_tensor *t = ss_gguf_tensor_at(g, i);
            size_t j = 0;
            while (j < L->n_used && L->used[j] != t) j++;
            if (j == L->n_used)
                return ss_errorf(SS_ERR_UNSUPPORTED,
                                 "%s: tensor \"%s\" is not part of a llama model this loader knows (%lld layers)", path,
                                 t->name, (long long)c->n_layer);
        }
    return SS_OK;
}

/* ------------------------------------------------------------- tokenizer */

enum { TT_NORMAL = 1, TT_UNKNOWN = 2, TT_CONTROL = 3, TT_USER_DEFINED = 4, TT_UNUSED = 5, TT_BYTE = 6 };

ss_status ss_gguf_model_config(const ss_gguf *g, ss_config *c) {
    memset(c, 0, sizeof *c);
    ss_status st = read_config(g, c);
    if (!st) st = config_from_tensors(g, c);
    if (st) memset(c, 0, sizeof *c);
    return st;
}

ss_status ss_gguf_tokenizer_json(const ss_gguf *g, char **json, size_t *len) {
    *json = NULL;
    *len = 0;
    const char *path = ss_gguf_path(g);
    const ss_gguf_str *model, *pre = NULL;
    SS_TRY(ss_gguf_get_str(g, "tokenizer.ggml.model", &model));
    if (strcmp(model->s, "gpt2"))
        return ss_errorf(SS_ERR_UNSUPPORTED,
                         "%s: tokenizer.ggml.model \"%.40s\" is not supported (only \"gpt2\", byte-level BPE)", path,
                         model->s);
    if (!ss_gguf_find(g, "tokenizer.ggml.pre"))
        return ss_errorf(SS_ERR_UNSUPPORTED,
                         "%s: no tokenizer.ggml.pre: the pre-tokenizer cannot be told (\"smollm\" and \"gpt-2\" are "
                         "supported)",
                         path);
    SS_TRY(ss_gguf_get_str(g, "tokenizer.ggml.pre", &pre));
    int digits;
    if (!strcmp(pre->s, "smollm")) digits = 1;
    else if (!strcmp(pre->s, "gpt-2")) digits = 0;
    else
        return ss_errorf(SS_ERR_UNSUPPORTED,
                         "%s: tokenizer.ggml.pre \"%.40s\" is not supported (only \"smollm\" and \"gpt-2\")", path,
                         pre->s);
    int add_bos = 0;
    if (ss_gguf_find(g, "tokenizer.ggml.add_bos_token")) SS_TRY(ss_gguf_get_bool(g, "tokenizer.ggml.add_bos_token", &add_bos));
    if (add_bos)
        return ss_errorf(SS_ERR_UNSUPPORTED,
                         "%s: tokenizer.ggml.add_bos_token is true: prepending a BOS token on encoding is not supported",
                         path);
    const ss_gguf_str *tokens, *merges;
    size_t n_tok, n_merge;
    SS_TRY(ss_gguf_get_strings(g, "tokenizer.ggml.tokens", &tokens, &n_tok));
    SS_TRY(ss_gguf_get_strings(g, "tokenizer.ggml.merges", &merges, &n_merge));
    const ss_gguf_value *types = NULL;
    if (ss_gguf_find(g, "tokenizer.ggml.token_type")) {
        SS_TRY(ss_gguf_get_array(g, "tokenizer.ggml.token_type", &types));
        if (types->count != n_tok)
            return ss_errorf(SS_ERR_FORMAT, "%s: tokenizer.ggml.token_type has %llu entries for %zu tokens", path,
                             (unsigned long long)types->count, n_tok);
    }

    ss_sbuf b = {0};
    char num[64];
    ss_sb_str(&b, "{\"version\":\"1.0\",\"truncation\":null,\"padding\":null,\"added_tokens\":[");
    int first = 1;
    for (size_t i = 0; i < n_tok && types; i++) {
        ss_gguf_value v;
        if (!ss_gguf_array_get(types, i, &v) || (v.type != SS_GGUF_INT32 && v.type != SS_GGUF_UINT32 &&
                                                 v.type != SS_GGUF_INT8 && v.type != SS_GGUF_UINT8 &&
                                                 v.type != SS_GGUF_INT16 && v.type != SS_GGUF_UINT16)) {
            free(b.p);
            return ss_errorf(SS_ERR_FORMAT, "%s: tokenizer.ggml.token_type must be an array of integers", path);
        }
        int64_t ty = v.type == SS_GGUF_INT32 || v.type == SS_GGUF_INT8 || v.type == SS_GGUF_INT16 ? v.i : (int64_t)v.u;
        if (ty != TT_CONTROL && ty != TT_USER_DEFINED) continue;
        snprintf(num, sizeof num, "%s{\"id\":%zu,\"content\":", first ? "" : ",", i);
        ss_sb_str(&b, num);
        ss_json_sb_str(&b, tokens[i].s, tokens[i].len);
        ss_sb_str(&b, ",\"single_word\":false,\"lstrip\":false,\"rstrip\":false,\"normalized\":false,\"special\":");
        ss_sb_str(&b, ty == TT_CONTROL ? "true}" : "false}");
        first = 0;
    }
    ss_sb_str(&b, "],\"normalizer\":null,\"pre_tokenizer\":");
    if (digits)
        ss_sb_str(&b, "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Digits\",\"individual_digits\":true},");
    ss_sb_str(&b, "{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"trim_offsets\":true,\"use_regex\":true}");
    if (digits) ss_sb_str(&b, "]}");
    ss_sb_str(&b, ",\"post_processor\":null,\"decoder\":{\"type\":\"ByteLevel\",\"add_prefix_space\":true,"
               "\"trim_offsets\":true,\"use_regex\":true},");
    /* No unk token: every byte has a token in a byte-level vocabulary (HF drops
     * a byte that has none, and so does the tokenizer module). */
    ss_sb_str(&b, "\"model\":{\"type\":\"BPE\",\"dropout\":null,\"unk_token\":null,\"continuing_subword_prefix\":null,"
               "\"end_of_word_suffix\":null,\"fuse_unk\":false,\"byte_fallback\":false,\"ignore_merges\":false,"
               "\"vocab\":{");
    for (size_t i = 0; i < n_tok; i++) {
        if (i) ss_sb_put(&b, ",", 1);
        ss_json_sb_str(&b, tokens[i].s, tokens[i].len);
        snprintf(num, sizeof num, ":%zu", i);
        ss_sb_str(&b, num);
    }
    ss_sb_str(&b, "},\"merges\":[");
    for (size_t i = 0; i < n_merge; i++) {
        if (i) ss_sb_put(&b, ",", 1);
        ss_json_sb_str(&b, merges[i].s, merges[i].len);
    }
    ss_sb_str(&b, "]}}");
    if (b.oom) {
        free(b.p);
        return ss_errorf(SS_ERR_NOMEM, "%s: out of memory building the tokenizer", path);
    }
    *json = b.p;
    *len = b.n;
    return SS_OK;
}

ss_status ss_gguf_tokenizer_load(const ss_gguf *g, ss_tokenizer **out) {
    *out = NULL;
    char *json;
    size_t len;
    SS_TRY(ss_gguf_tokenizer_json(g, &json, &len));
    char *what = ss_strfmt("%s: tokenizer.ggml.*", ss_gguf_path(g));
    ss_status s = what ? ss_tokenizer_load_json_mem(json, len, what, out) : SS_ERR_NOMEM;
    free(what);
    free(json);
    return s;
}

/* ----------------------------------------------------------------- model */

void ss_gguf_type_list(const ss_gguf *g, char *buf, size_t cap) {
    if (!cap) return;
    buf[0] = 0;
    for (size_t i = 0; i < ss_gguf_tensor_count(g); i++) {
        const char *name = ss_ggml_type_name(ss_gguf_tensor_at(g, i)->type);
        if (!name) name = "?";
        size_t n = strlen(name), have = strlen(buf);
        int seen = 0;
        for (const char *p = buf; !seen && (p = strstr(p, name)); p += n)
            seen = (p == buf || p[-1] == ',') && (p[n] == ',' || p[n] == 0);
        if (seen || have + n + 2 > cap) continue;
        snprintf(buf + have, cap - have, "%s%s", have ? "," : "", name);
    }
}

int ss_model_path_is_gguf(const char *path) {
    size_t n = path ? strlen(path) : 0;
    return n > 5 && !strcmp(path + n - 5, ".gguf");
}

ss_status ss_model_tokenizer_load(const char *path, ss_tokenizer **out) {
    *out = NULL;
    if (!ss_model_path_is_gguf(path)) return ss_tokenizer_load_dir(path, out);
    ss_gguf *g;
    SS_TRY(ss_gguf_open(path, &g));
    ss_status st = ss_gguf_find(g, "tokenizer.ggml.model") ? ss_gguf_tokenizer_load(g, out)
                                                           : ss_errorf(SS_ERR_FORMAT, "%s has no tokenizer (no tokenizer.ggml.model)", path);
    ss_gguf_free(g);
    return st;
}

ss_status ss_gguf_config_json(const ss_config *c, char **json) {
    *json = NULL;
    if (c->family != SS_FAMILY_LLAMA)
        return ss_errorf(SS_ERR_ARG, "config of a %s model: only the Llama family is written as config.json", c->arch);
    /* Hugging Face's attention_bias covers q/k/v and o together; q/k/v alone
     * is Qwen2's layout. */
    const int qwen2 = c->qkv_bias && !c->o_bias;
    char scaling[256] = "null", ids[64 + 24 * SS_MAX_EOS_IDS] = "";
    if (c->rope_type == SS_ROPE_LINEAR)
        snprintf(scaling, sizeof scaling, "{\"rope_type\": \"linear\", \"factor\": %.17g}", c->rope_factor);
    else if (c->rope_type == SS_ROPE_LLAMA3)
        snprintf(scaling, sizeof scaling,
                 "{\"rope_type\": \"llama3\", \"factor\": %.17g, \"low_freq_factor\": %.17g, \"high_freq_factor\": "
                 "%.17g, \"original_max_position_embeddings\": %lld}",
                 c->rope_factor, c->rope_low_freq_factor, c->rope_high_freq_factor,
                 (long long)c->rope_original_max_positions);
    if (c->bos_token_id >= 0) snprintf(ids, sizeof ids, ", \"bos_token_id\": %lld", (long long)c->bos_token_id);
    if (c->n_eos == 1)
        snprintf(ids + strlen(ids), sizeof ids - strlen(ids), ", \"eos_token_id\": %lld", (long long)c->eos_ids[0]);
    for (int k = 0; c->n_eos > 1 && k < c->n_eos; k++) /* a list, as Llama 3's configs give eos and eot */
        snprintf(ids + strlen(ids), sizeof ids - strlen(ids), "%s%lld%s", k ? ", " : ", \"eos_token_id\": [",
                 (long long)c->eos_ids[k], k == c->n_eos - 1 ? "]" : "");
    *json = ss_strfmt("{\"architectures\": [\"%s\"], \"model_type\": \"%s\", \"hidden_size\": %lld, "
                      "\"intermediate_size\": %lld, \"num_hidden_layers\": %lld, \"num_attention_heads\": %lld, "
                      "\"num_key_value_heads\": %lld, \"head_dim\": %lld, \"max_position_embeddings\": %lld, "
                      "\"vocab_size\": %lld, \"rms_norm_eps\": %.17g, \"rope_theta\": %.17g, \"rope_scaling\": %s, "
                      "\"hidden_act\": \"silu\", \"tie_word_embeddings\": %s, \"attention_bias\": %s, "
                      "\"mlp_bias\": %s%s}\n",
                      qwen2 ? "Qwen2ForCausalLM" : "LlamaForCausalLM", qwen2 ? "qwen2" : "llama",
                      (long long)c->n_embd, (long long)c->n_inner, (long long)c->n_layer, (long long)c->n_head,
                      (long long)ss_config_kv_heads(c), (long long)ss_config_d_head(c), (long long)c->n_positions,
                      (long long)c->vocab_size, c->ln_eps, c->rope_theta, scaling,
                      c->tie_word_embeddings ? "true" : "false", c->o_bias ? "true" : "false",
                      c->mlp_bias ? "true" : "false", ids);
    return *json ? SS_OK : ss_errorf(SS_ERR_NOMEM, "config.json: out of memory");
}

ss_status ss_gguf_model_open(const char *path, ss_config *cfg, ss_weights **weights, ss_tokenizer **tok) {
    *weights = NULL;
    if (tok) *tok = NULL;
    memset(cfg, 0, sizeof *cfg);
    ss_gguf *g = NULL;
    SS_TRY(ss_gguf_open(path, &g));
    loader L = {.g = g, .c = cfg};
    ss_tokenizer *t = NULL;
    ss_status s = read_config(g, cfg);
    if (s == SS_OK) s = ss_weights_new(&L.w);
    if (s == SS_OK) {
        size_t n = ss_gguf_tensor_count(g);
        L.used = ss_calloc(n ? n : 1, sizeof *L.used, "GGUF tensor list");
        s = L.used ? load_tensors(&L, cfg) : SS_ERR_NOMEM;
    }
    if (s == SS_OK && tok && ss_gguf_find(g, "tokenizer.ggml.model")) {
        s = ss_gguf_tokenizer_load(g, &t);
        if (s == SS_OK && ss_tokenizer_vocab_size(t) > cfg->vocab_size)
            s = ss_errorf(SS_ERR_FORMAT, "%s: the tokenizer has %d ids but token_embd.weight only %lld rows", path,
                          ss_tokenizer_vocab_size(t), (long long)cfg->vocab_size);
    }
    free(L.used);
    ss_gguf_free(g);
    if (s != SS_OK) {
        ss_tokenizer_free(t);
        ss_weights_free(L.w);
        memset(cfg, 0, sizeof *cfg);
        return s;
    }
    *weights = L.w;
    if (tok) *tok = t;
    return SS_OK;
}
