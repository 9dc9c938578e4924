/* GPT-2 config.json. Options that would change the model's math and that the
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

static int has_gpt2_architecture(const ss_json *root) {
    const ss_json *a = ss_json_get(root, "architectures");
    if (!a || a->type != SS_JSON_ARRAY) return 0;
    for (size_t i = 0; i < a->len; i++)
        if (a->items[i].type == SS_JSON_STRING &&
            (strcmp(a->items[i].str, "GPT2LMHeadModel") == 0 || strcmp(a->items[i].str, "GPT2Model") == 0))
            return 1;
    return 0;
}

static ss_status parse_root(const ss_json *root, const char *path, ss_config *cfg) {
    if (root->type != SS_JSON_OBJECT) return ss_errorf(SS_ERR_FORMAT, "%s: not a JSON object", path);

    const ss_json *mt = ss_json_get(root, "model_type");
    if (mt && mt->type != SS_JSON_STRING)
        return ss_errorf(SS_ERR_FORMAT, "%s: \"model_type\" must be a string", path);
    if (mt) {
        if (strlen(mt->str) != mt->len || strcmp(mt->str, "gpt2") != 0)
            return ss_errorf(SS_ERR_UNSUPPORTED, "%s: \"model_type\" \"%.60s\" is not supported (only \"gpt2\")",
                             path, mt->str);
    } else if (!has_gpt2_architecture(root)) {
        return ss_errorf(SS_ERR_UNSUPPORTED,
                         "%s: no \"model_type\", and \"architectures\" names neither GPT2LMHeadModel nor "
                         "GPT2Model",
                         path);
    }
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
    SS_TRY(opt_token_id(root, path, "eos_token_id", &cfg->eos_token_id));
    return SS_OK;
}

ss_status ss_config_parse(const char *text, size_t len, const char *path, ss_config *cfg) {
    if (!path) path = "config.json";
    memset(cfg, 0, sizeof *cfg);
    ss_json_doc *doc = NULL;
    SS_TRY(ss_json_parse(text, len, path, &doc));
    ss_status s = parse_root(ss_json_root(doc), path, cfg);
    ss_json_free(doc);
    if (s != SS_OK) memset(cfg, 0, sizeof *cfg);
    return s;
}

ss_status ss_config_load(const char *path, ss_config *cfg) {
    char *text = NULL;
    size_t len = 0;
    memset(cfg, 0, sizeof *cfg);
    SS_TRY(ss_file_read(path, &text, &len));
    ss_status s = ss_config_parse(text, len, path, cfg);
    free(text);
    return s;
}
