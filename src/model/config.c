/* config.json of GPT-2 and the Llama family. Options that would change the model's math and that the
 * forward pass does not implement are refused by name rather than ignored,
 * so a run never silently computes a different function than Hugging Face. */
#include "subscope/config.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "subscope/json.h"
#include "subscope/util.h"

/* Hugging Face's ACT2FN names whose math is exactly one of our two GELUs.
 * gelu_fast writes sqrt(2/pi) as 0.7978845608 and factors x out of the cubic
 * term: the same function, with a constant that differs from sqrt(2/pi) by
 * 3e-12, far below fp32 resolution. gelu_10 (clipped), quick_gelu (sigmoid)
 * and the rest are different functions. */
static const struct {
    const char *name;
    ss_act act;
} act_table[] = {
    {"gelu_new", SS_ACT_GELU_TANH},         {"gelu_pytorch_tanh", SS_ACT_GELU_TANH},
    {"gelu_python_tanh", SS_ACT_GELU_TANH}, {"gelu_fast", SS_ACT_GELU_TANH},
    {"gelu_accurate", SS_ACT_GELU_TANH},    {"gelu", SS_ACT_GELU_ERF},
    {"gelu_python", SS_ACT_GELU_ERF},
};

static ss_status req_pos_int(const ss_json *root, const char *path, const char *key, int64_t *out) {
    const ss_json *v = ss_json_get(root, key);
    if (!v) return ss_errorf(SS_ERR_FORMAT, "%s: missing required key \"%s\"", path, key);
    if (v->type != SS_JSON_NUMBER || !v->is_int || v->i <= 0)
        return ss_errorf(SS_ERR_FORMAT, "%s: \"%s\" must be a positive integer", path, key);
    *out = v->i;
    return SS_OK;
}

static ss_status opt_bool(const ss_json *root, const char *path, const char *key, int dflt, int *out) {
    *out = dflt;
    const ss_json *v = ss_json_get(root, key);
    if (!v || v->type == SS_JSON_NULL) return SS_OK;
    if (v->type != SS_JSON_BOOL) return ss_errorf(SS_ERR_FORMAT, "%s: \"%s\" must be true or false", path, key);
    *out = v->boolean;
    return SS_OK;
}

/* Token ids: absent or null -> -1; a list (some configs give several EOS
 * ids) -> its first entry. */
static ss_status opt_token_id(const ss_json *root, const char *path, const char *key, int64_t *out) {
    *out = -1;
    const ss_json *v = ss_json_get(root, key);
    if (!v || v->type == SS_JSON_NULL) return SS_OK;
    if (v->type == SS_JSON_ARRAY && v->len > 0) v = &v->items[0];
    if (v->type != SS_JSON_NUMBER || !v->is_int || v->i < 0)
        return ss_errorf(SS_ERR_FORMAT, "%s: \"%s\" must be a non-negative integer", path, key);
    *out = v->i;
    return SS_OK;
}

/* eos_token_id: an id or a list of ids (every one is an end of sequence). */
static ss_status opt_eos_ids(const ss_json *root, const char *path, ss_config *cfg) {
    cfg->eos_token_id = -1, cfg->n_eos = 0;
    const ss_json *v = ss_json_get(root, "eos_token_id");
    if (!v || v->type == SS_JSON_NULL) return SS_OK;
    const size_t n = v->type == SS_JSON_ARRAY ? v->len : 1;
    if (n > SS_MAX_EOS_IDS)
        return ss_errorf(SS_ERR_FORMAT, "%s: \"eos_token_id\" lists %zu ids, more than the %d taken", path, n, SS_MAX_EOS_IDS);
    for (size_t k = 0; k < n; k++) {
        const ss_json *e = v->type == SS_JSON_ARRAY ? &v->items[k] : v;
        if (e->type != SS_JSON_NUMBER || !e->is_int || e->i < 0)
            return ss_errorf(SS_ERR_FORMAT, "%s: \"eos_token_id\" must be a non-negative integer or a list of them", path);
        cfg->eos_ids[cfg->n_eos++] = e->i;
    }
    if (cfg->n_eos) cfg->eos_token_id = cfg->eos_ids[0];
    return SS_OK;
}

int ss_config_is_eos(const ss_config *cfg, int64_t id) {
    for (int k = 0; k < cfg->n_eos; k++)
        if (cfg->eos_ids[k] == id) return 1;
    return 0;
}

static ss_status parse_gpt2(const ss_json *root, const char *path, ss_config *cfg) {

    snprintf(cfg->arch, sizeof cfg->arch, "gpt2");

    SS_TRY(req_pos_int(root, path, "n_layer", &cfg->n_layer));
    SS_TRY(req_pos_int(root, path, "n_head", &cfg->n_head));
    SS_TRY(req_pos_int(root, path, "n_embd", &cfg->n_embd));
    SS_TRY(req_pos_int(root, path, "vocab_size", &cfg->vocab_size));
    if (ss_json_get(root, "n_positions"))
        SS_TRY(req_pos_int(root, path, "n_positions", &cfg->n_positions));
    else if (ss_json_get(root, "n_ctx"))
        SS_TRY(req_pos_int(root, path, "n_ctx", &cfg->n_positions));
    else
        return ss_errorf(SS_ERR_FORMAT, "%s: missing required key \"n_positions\" (or \"n_ctx\")", path);
    if (cfg->n_embd % cfg->n_head != 0)
        return ss_errorf(SS_ERR_FORMAT, "%s: \"n_embd\" %lld is not divisible by \"n_head\" %lld", path,
                         (long long)cfg->n_embd, (long long)cfg->n_head);
    cfg->family = SS_FAMILY_GPT2;
    cfg->n_kv_head = cfg->n_head;
    cfg->d_head = cfg->n_embd / cfg->n_head;

    const ss_json *ni = ss_json_get(root, "n_inner");
    if (!ni || ni->type == SS_JSON_NULL) {
        /* n_embd <= 2^63-1 from JSON; 4*n_embd must still fit. */
        if (cfg->n_embd > INT64_MAX / 4)
            return ss_errorf(SS_ERR_FORMAT, "%s: \"n_embd\" is too large (4*n_embd overflows)", path);
        cfg->n_inner = 4 * cfg->n_embd;
    } else {
        SS_TRY(req_pos_int(root, path, "n_inner", &cfg->n_inner));
    }

    cfg->ln_eps = 1e-5;
    const ss_json *eps = ss_json_get(root, "layer_norm_epsilon");
    if (eps) {
        if (eps->type != SS_JSON_NUMBER || !isfinite(eps->num) || !(eps->num > 0))
            return ss_errorf(SS_ERR_FORMAT, "%s: \"layer_norm_epsilon\" must be a positive number", path);
        cfg->ln_eps = eps->num;
    }

    cfg->act = SS_ACT_GELU_TANH; /* GPT2Config's default is gelu_new */
    const ss_json *af = ss_json_get(root, "activation_function");
    if (af) {
        if (af->type != SS_JSON_STRING)
            return ss_errorf(SS_ERR_FORMAT, "%s: \"activation_function\" must be a string", path);
        size_t i, n = sizeof act_table / sizeof act_table[0];
        for (i = 0; i < n; i++)
            if (strlen(act_table[i].name) == af->len && strcmp(act_table[i].name, af->str) == 0) break;
        if (i == n)
            return ss_errorf(SS_ERR_UNSUPPORTED,
                             "%s: \"activation_function\" \"%.60s\" is not supported (gelu_new, "
                             "gelu_pytorch_tanh, gelu_fast or gelu)",
                             path, af->str);
        cfg->act = act_table[i].act;
    }

    SS_TRY(opt_bool(root, path, "tie_word_embeddings", 1, &cfg->tie_word_embeddings));
    SS_TRY(opt_bool(root, path, "scale_attn_weights", 1, &cfg->scale_attn_weights));

    /* Options that change the function the model computes. */
    int flag;
    SS_TRY(opt_bool(root, path, "scale_attn_by_inverse_layer_idx", 0, &flag));
    if (flag)
        return ss_errorf(SS_ERR_UNSUPPORTED, "%s: \"scale_attn_by_inverse_layer_idx\": true is not supported",
                         path);
    SS_TRY(opt_bool(root, path, "add_cross_attention", 0, &flag));
    if (flag) return ss_errorf(SS_ERR_UNSUPPORTED, "%s: \"add_cross_attention\": true is not supported", path);
    /* reorder_and_upcast_attn only makes Hugging Face compute q.k and the
     * softmax in fp32 when running in fp16: the same function, and what our
     * fp32 path always does. Accepted, but it must still be a boolean. */
    SS_TRY(opt_bool(root, path, "reorder_and_upcast_attn", 0, &flag));

    SS_TRY(opt_token_id(root, path, "bos_token_id", &cfg->bos_token_id));
    return opt_eos_ids(root, path, cfg);
}


static ss_status opt_num(const ss_json *root, const char *path, const char *key, double dflt, double *out) {
    *out = dflt;
    const ss_json *v = ss_json_get(root, key);
    if (!v || v->type == SS_JSON_NULL) return SS_OK;
    if (v->type != SS_JSON_NUMBER || !isfinite(v->num) || !(v->num > 0))
        return ss_errorf(SS_ERR_FORMAT, "%s: \"%s\" must be a positive number", path, key);
    *out = v->num;
    return SS_OK;
}

static ss_status opt_pos_int(const ss_json *root, const char *path, const char *key, int64_t dflt, int64_t *out) {
    const ss_json *v = ss_json_get(root, key);
    if (!v || v->type == SS_JSON_NULL) {
        *out = dflt;
        return SS_OK;
    }
    return req_pos_int(root, path, key, out);
}

/* A rope scaling object: {"rope_type" (or "type"): ..., "factor": ...}. In
 * transformers >= 5 it is "rope_parameters" and carries rope_theta too. */
static ss_status parse_rope_scaling(const ss_json *rs, const char *path, const char *key, ss_config *cfg) {
    cfg->rope_type = SS_ROPE_NONE;
    if (!rs || rs->type == SS_JSON_NULL) return SS_OK;
    if (rs->type != SS_JSON_OBJECT) return ss_errorf(SS_ERR_FORMAT, "%s: \"%s\" must be an object or null", path, key);
    const ss_json *t = ss_json_get(rs, "rope_type");
    if (!t) t = ss_json_get(rs, "type");
    if (!t) return SS_OK; /* rope_parameters holding only rope_theta */
    if (t->type != SS_JSON_STRING) return ss_errorf(SS_ERR_FORMAT, "%s: %s \"rope_type\" must be a string", path, key);
    if (!strcmp(t->str, "default")) return SS_OK;
    if (!strcmp(t->str, "linear")) cfg->rope_type = SS_ROPE_LINEAR;
    else if (!strcmp(t->str, "llama3")) cfg->rope_type = SS_ROPE_LLAMA3;
    else
        return ss_errorf(SS_ERR_UNSUPPORTED, "%s: %s type \"%.40s\" is not supported (only \"linear\" and \"llama3\")",
                         path, key, t->str);
    const ss_json *f = ss_json_get(rs, "factor");
    if (!f || f->type != SS_JSON_NUMBER || !isfinite(f->num) || !(f->num >= 1))
        return ss_errorf(SS_ERR_FORMAT, "%s: %s \"factor\" must be a number >= 1", path, key);
    cfg->rope_factor = f->num;
    if (cfg->rope_type != SS_ROPE_LLAMA3) return SS_OK;
    SS_TRY(opt_num(rs, path, "low_freq_factor", 1.0, &cfg->rope_low_freq_factor));
    SS_TRY(opt_num(rs, path, "high_freq_factor", 4.0, &cfg->rope_high_freq_factor));
    if (!(cfg->rope_high_freq_factor > cfg->rope_low_freq_factor))
        return ss_errorf(SS_ERR_FORMAT, "%s: %s \"high_freq_factor\" must exceed \"low_freq_factor\"", path, key);
    return req_pos_int(rs, path, "original_max_position_embeddings", &cfg->rope_original_max_positions);
}

/* LlamaConfig and the configs that share its layout (MistralConfig,
 * Qwen2Config); defaults are those of transformers' config classes. */
static ss_status parse_llama(const ss_json *root, const char *path, const char *model_type, ss_config *cfg) {
    cfg->family = SS_FAMILY_LLAMA;
    snprintf(cfg->arch, sizeof cfg->arch, "%s", model_type);
    SS_TRY(req_pos_int(root, path, "num_hidden_layers", &cfg->n_layer));
    SS_TRY(req_pos_int(root, path, "num_attention_heads", &cfg->n_head));
    SS_TRY(req_pos_int(root, path, "hidden_size", &cfg->n_embd));
    SS_TRY(req_pos_int(root, path, "vocab_size", &cfg->vocab_size));
    SS_TRY(req_pos_int(root, path, "intermediate_size", &cfg->n_inner));
    /* MistralConfig's defaults differ from LlamaConfig's: 8 key/value heads, 4096 * 32
     * positions and a 4096-token sliding window (below); Qwen2Config's: 32 key/value heads
     * and 32768 positions. An explicit null num_key_value_heads means num_attention_heads
     * in all three. */
    const int mistral = !strcmp(model_type, "mistral"), qwen2 = !strcmp(model_type, "qwen2");
    const int64_t kv_default = !ss_json_get(root, "num_key_value_heads") && mistral  ? 8
                               : !ss_json_get(root, "num_key_value_heads") && qwen2 ? 32
                                                                                    : cfg->n_head;
    SS_TRY(opt_pos_int(root, path, "num_key_value_heads", kv_default, &cfg->n_kv_head));
    SS_TRY(opt_pos_int(root, path, "max_position_embeddings", mistral ? 4096 * 32 : qwen2 ? 32768 : 2048,
                       &cfg->n_positions));
    if (cfg->n_head % cfg->n_kv_head)
        return ss_errorf(SS_ERR_FORMAT, "%s: \"num_attention_heads\" %lld is not a multiple of \"num_key_value_heads\" %lld",
                         path, (long long)cfg->n_head, (long long)cfg->n_kv_head);
    const ss_json *hd = ss_json_get(root, "head_dim");
    if (hd && hd->type != SS_JSON_NULL) {
        SS_TRY(req_pos_int(root, path, "head_dim", &cfg->d_head));
    } else {
        if (cfg->n_embd % cfg->n_head)
            return ss_errorf(SS_ERR_FORMAT, "%s: \"hidden_size\" %lld is not divisible by \"num_attention_heads\" %lld",
                             path, (long long)cfg->n_embd, (long long)cfg->n_head);
        cfg->d_head = cfg->n_embd / cfg->n_head;
    }
    if (cfg->d_head % 2) return ss_errorf(SS_ERR_FORMAT, "%s: head_dim %lld is odd; rotary embeddings need it even", path,
                                          (long long)cfg->d_head);
    SS_TRY(opt_num(root, path, "rms_norm_eps", 1e-6, &cfg->ln_eps));
    const ss_json *rp = ss_json_get(root, "rope_parameters");
    if (rp && rp->type != SS_JSON_NULL) {
        SS_TRY(parse_rope_scaling(rp, path, "rope_parameters", cfg));
        SS_TRY(opt_num(rp, path, "rope_theta", 10000.0, &cfg->rope_theta));
    } else {
        SS_TRY(parse_rope_scaling(ss_json_get(root, "rope_scaling"), path, "rope_scaling", cfg));
        SS_TRY(opt_num(root, path, "rope_theta", 10000.0, &cfg->rope_theta));
    }
    SS_TRY(opt_bool(root, path, "tie_word_embeddings", 0, &cfg->tie_word_embeddings));
    cfg->scale_attn_weights = 1;
    cfg->act = SS_ACT_SILU;
    const ss_json *act = ss_json_get(root, "hidden_act");
    if (act && (act->type != SS_JSON_STRING || strcmp(act->str, "silu")))
        return ss_errorf(SS_ERR_UNSUPPORTED, "%s: \"hidden_act\" %s%.40s%s is not supported (only \"silu\")", path,
                         act->type == SS_JSON_STRING ? "\"" : "", act->type == SS_JSON_STRING ? act->str : "(not a string)",
                         act->type == SS_JSON_STRING ? "\"" : "");
    int flag;
    if (qwen2) {
        cfg->qkv_bias = 1; /* Qwen2 always has q/k/v biases and none elsewhere */
        SS_TRY(opt_bool(root, path, "use_sliding_window", 0, &flag));
        if (flag) return ss_errorf(SS_ERR_UNSUPPORTED, "%s: \"use_sliding_window\": true is not supported", path);
    } else {
        SS_TRY(opt_bool(root, path, "attention_bias", 0, &flag));
        cfg->qkv_bias = cfg->o_bias = flag;
        SS_TRY(opt_bool(root, path, "mlp_bias", 0, &cfg->mlp_bias));
    }
    /* Mistral's sliding window only masks keys further back than the window:
     * sequences no longer than it are computed exactly, so the window bounds
     * the context instead of being approximated. */
    const ss_json *sw = ss_json_get(root, "sliding_window");
    if (sw && sw->type != SS_JSON_NULL && !qwen2) {
        int64_t win;
        SS_TRY(req_pos_int(root, path, "sliding_window", &win));
        if (win < cfg->n_positions) cfg->n_positions = win;
    } else if (!sw && mistral && cfg->n_positions > 4096) {
        cfg->n_positions = 4096; /* MistralConfig's default window; null means none */
    }
    const ss_json *pt = ss_json_get(root, "partial_rotary_factor");
    if (!pt && rp && rp->type == SS_JSON_OBJECT) pt = ss_json_get(rp, "partial_rotary_factor");
    if (pt && pt->type != SS_JSON_NULL && !(pt->type == SS_JSON_NUMBER && pt->num == 1.0))
        return ss_errorf(SS_ERR_UNSUPPORTED, "%s: \"partial_rotary_factor\" other than 1 is not supported", path);
    SS_TRY(opt_token_id(root, path, "bos_token_id", &cfg->bos_token_id));
    return opt_eos_ids(root, path, cfg);
}

static int has_architecture(const ss_json *root, const char *const *names) {
    const ss_json *a = ss_json_get(root, "architectures");
    if (!a || a->type != SS_JSON_ARRAY) return 0;
    for (size_t i = 0; i < a->len; i++)
        for (int j = 0; names[j]; j++)
            if (a->items[i].type == SS_JSON_STRING && strcmp(a->items[i].str, names[j]) == 0) return 1;
    return 0;
}

static ss_status parse_root(const ss_json *root, const char *path, ss_config *cfg) {
    if (root->type != SS_JSON_OBJECT) return ss_errorf(SS_ERR_FORMAT, "%s: not a JSON object", path);
    static const char *const gpt2_arch[] = {"GPT2LMHeadModel", "GPT2Model", NULL};
    static const char *const llama_arch[] = {"LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", NULL};
    static const char *const llama_types[] = {"llama", "mistral", "qwen2", NULL};
    const ss_json *mt = ss_json_get(root, "model_type");
    if (mt && (mt->type != SS_JSON_STRING || strlen(mt->str) != mt->len))
        return ss_errorf(SS_ERR_FORMAT, "%s: \"model_type\" must be a string", path);
    if (mt) {
        if (!strcmp(mt->str, "gpt2")) return parse_gpt2(root, path, cfg);
        for (int j = 0; llama_types[j]; j++)
            if (!strcmp(mt->str, llama_types[j])) return parse_llama(root, path, llama_types[j], cfg);
        return ss_errorf(SS_ERR_UNSUPPORTED,
                         "%s: \"model_type\" \"%.60s\" is not supported (gpt2, llama, mistral or qwen2)", path, mt->str);
    }
    if (has_architecture(root, gpt2_arch)) return parse_gpt2(root, path, cfg);
    if (has_architecture(root, llama_arch)) return parse_llama(root, path, "llama", cfg);
    return ss_errorf(SS_ERR_UNSUPPORTED,
                     "%s: no \"model_type\", and \"architectures\" names no supported model (GPT2LMHeadModel, "
                     "LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM)",
                     path);
}

void ss_config_rope_inv_freq(const ss_config *c, float *inv_freq) {
    const int64_t dh = ss_config_d_head(c), half = dh / 2;
    const float two_pi = 6.2831853071795865f;
    for (int64_t i = 0; i < half; i++) {
        /* transformers: 1 / base ** (arange(0, dim, 2).float() / dim), in float32 */
        float f = 1.0f / powf((float)c->rope_theta, (float)(2 * i) / (float)dh);
        if (c->rope_type == SS_ROPE_LINEAR) {
            f = f / (float)c->rope_factor;
        } else if (c->rope_type == SS_ROPE_LLAMA3) {
            const float factor = (float)c->rope_factor, lo = (float)c->rope_low_freq_factor,
                        hi = (float)c->rope_high_freq_factor, old = (float)c->rope_original_max_positions;
            const float wavelen = two_pi / f, lo_wavelen = old / lo, hi_wavelen = old / hi;
            float g = wavelen > lo_wavelen ? f / factor : f;
            if (!(wavelen < hi_wavelen) && !(wavelen > lo_wavelen)) {
                const float smooth = (old / wavelen - lo) / (hi - lo);
                g = (1 - smooth) * g / factor + smooth * g;
            }
            f = g;
        }
        inv_freq[i] = f;
    }
}

static ss_status parse_text(const char *text, size_t len, const char *path, int gpt2_default, ss_config *cfg) {
    if (!path) path = "config.json";
    memset(cfg, 0, sizeof *cfg);
    ss_json_doc *doc = NULL;
    SS_TRY(ss_json_parse(text, len, path, &doc));
    const ss_json *root = ss_json_root(doc);
    ss_status s = gpt2_default && root->type == SS_JSON_OBJECT && !ss_json_get(root, "model_type") &&
                          !ss_json_get(root, "architectures")
                      ? parse_gpt2(root, path, cfg)
                      : parse_root(root, path, cfg);
    ss_json_free(doc);
    if (s == SS_OK) s = ss_config_check_sizes(cfg, path);
    if (s != SS_OK) memset(cfg, 0, sizeof *cfg);
    return s;
}

ss_status ss_config_parse(const char *text, size_t len, const char *path, ss_config *cfg) {
    return parse_text(text, len, path, 0, cfg);
}

ss_status ss_config_parse_gpt2_default(const char *text, size_t len, const char *path, ss_config *cfg) {
    return parse_text(text, len, path, 1, cfg);
}

static ss_status load(const char *path, int gpt2_default, ss_config *cfg) {
    char *text = NULL;
    size_t len = 0;
    memset(cfg, 0, sizeof *cfg);
    SS_TRY(ss_file_read(path, &text, &len));
    ss_status s = parse_text(text, len, path, gpt2_default, cfg);
    free(text);
    return s;
}

ss_status ss_config_load(const char *path, ss_config *cfg) { return load(path, 0, cfg); }
ss_status ss_config_load_gpt2_default(const char *path, ss_config *cfg) { return load(path, 1, cfg); }

static int64_t layer_params(const ss_config *c) {
    const int64_t d = c->n_embd, dm = c->n_inner, dh = ss_config_d_head(c);
    const int64_t qw = (c->n_head + 2 * ss_config_kv_heads(c)) * dh, zw = c->n_head * dh;
    if (c->family == SS_FAMILY_GPT2) return 4 * d + d * 3 * d + 3 * d + d * d + d + d * dm + dm + dm * d + d;
    return 2 * d + qw * d + zw * d + 3 * dm * d + (c->qkv_bias ? qw : 0) + (c->o_bias ? d : 0) +
           (c->mlp_bias ? 2 * dm + d : 0);
}

int64_t ss_config_stage_params(const ss_config *c, int64_t first, int64_t end) {
    const int64_t d = c->n_embd, V = c->vocab_size;
    int64_t n = (end - first) * layer_params(c);
    if (first == 0) n += V * d + (c->family == SS_FAMILY_GPT2 ? c->n_positions * d : 0); /* wte (+ wpe) */
    if (end == c->n_layer) {
        n += c->family == SS_FAMILY_GPT2 ? 2 * d : d; /* the final norm */
        if (!c->tie_word_embeddings || first > 0) n += V * d; /* lm_head, or the tied wte once more */
    }
    return n;
}

int64_t ss_config_n_params(const ss_config *c) { return ss_config_stage_params(c, 0, c->n_layer); }

ss_status ss_config_check_sizes(const ss_config *c, const char *path) {
    const int64_t max = (int64_t)1 << 24;
    const struct {
        const char *what;
        int64_t v;
    } dims[] = {{"layers", c->n_layer},         {"heads", c->n_head},           {"key/value heads", ss_config_kv_heads(c)},
                {"width", c->n_embd},           {"MLP width", c->n_inner},      {"head dimension", ss_config_d_head(c)},
                {"vocabulary", c->vocab_size},  {"positions", c->n_positions}};
    for (size_t i = 0; i < sizeof dims / sizeof dims[0]; i++)
        if (dims[i].v > max)
            return ss_errorf(SS_ERR_FORMAT, "%s: %s %lld is beyond what subscope handles (at most %lld)", path, dims[i].what,
                             (long long)dims[i].v, (long long)max);
    /* the parameter count's terms in floating point, before any int64 product */
    const double d = (double)c->n_embd, dm = (double)c->n_inner, dh = (double)ss_config_d_head(c),
                 heads = (double)(c->n_head + 2 * ss_config_kv_heads(c)), V = (double)c->vocab_size;
    const double per_layer = 4 * d * d + heads * dh * d + 3 * dm * d + 3 * dm + 10 * d + heads * dh;
    const double total = (double)c->n_layer * per_layer + 2 * V * d + (double)c->n_positions * d;
    if (!(total <= 0x1p60))
        return ss_errorf(SS_ERR_FORMAT, "%s: %lld layers of width %lld (MLP %lld, vocabulary %lld) make %.3g parameters, beyond what subscope handles",
                         path, (long long)c->n_layer, (long long)c->n_embd, (long long)c->n_inner, (long long)c->vocab_size, total);
    return SS_OK;
}

int64_t ss_config_block_macs(const ss_config *c) {
    const int64_t d = c->n_embd, dh = ss_config_d_head(c);
    const int64_t attn = (2 * c->n_head + 2 * ss_config_kv_heads(c)) * dh * d; /* q, k, v and o */
    return attn + (c->family == SS_FAMILY_LLAMA ? 3 : 2) * c->n_inner * d;
}

/* The MLP's first projection and its output: gate|up and post, or pre and post. */
static int64_t mlp_floats(const ss_config *c) { return (c->family == SS_FAMILY_LLAMA ? 3 : 2) * c->n_inner; }
static int64_t attn_floats(const ss_config *c) {
    const int64_t dh = ss_config_d_head(c);
    return (c->n_head + 2 * ss_config_kv_heads(c)) * dh + c->n_head * dh; /* q|k|v and z */
}

int64_t ss_config_floats_per_token(const ss_config *c) {
    /* the residual stream, a scratch row, the norm's output */
    return 3 * c->n_embd + attn_floats(c) + mlp_floats(c);
}

int64_t ss_config_tape_floats_per_token_layer(const ss_config *c) {
    /* resid_pre, ln1, resid_mid, ln2 */
    return 4 * c->n_embd + attn_floats(c) + mlp_floats(c);
}
