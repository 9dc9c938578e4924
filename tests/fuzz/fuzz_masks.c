/* libFuzzer target: masks, as `ablate --masks FILE` (JSONL) and `--mask SPEC`
 * take them. The first byte picks the model's shape (bit 0: a GPT-2 with 4
 * heads, or a Llama with 6 query heads over 2 key/value heads, where k and v
 * are narrower than q) and the form (bit 1: the rest is a JSONL file, or a
 * command-line spec). An accepted mask must satisfy what ss_mask_apply and
 * the CUDA mask program rely on: each target a distinct per-token site,
 * units sorted, distinct and inside the site's width, positions sorted,
 * distinct and inside the context, a known mode, a scale factor in [0,1], a
 * noise sigma in [0, SS_MASK_SIGMA_MAX] (relative only for noise). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "subscope/config.h"
#include "subscope/masks.h"
#include "subscope/sites.h"

static const char gpt2_cfg[] =
    "{\"model_type\": \"gpt2\", \"architectures\": [\"GPT2LMHeadModel\"], \"n_embd\": 32, \"n_head\": 4,"
    " \"n_layer\": 2, \"n_positions\": 32, \"vocab_size\": 100, \"layer_norm_epsilon\": 1e-5,"
    " \"activation_function\": \"gelu_new\"}";
static const char llama_cfg[] =
    "{\"model_type\": \"llama\", \"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": 48,"
    " \"intermediate_size\": 80, \"num_attention_heads\": 6, \"num_key_value_heads\": 2, \"head_dim\": 8,"
    " \"num_hidden_layers\": 2, \"max_position_embeddings\": 40, \"vocab_size\": 113, \"rms_norm_eps\": 1e-5,"
    " \"hidden_act\": \"silu\", \"rope_theta\": 10000.0}";

static void check(const ss_config *cfg, const ss_mask *m) {
    const char *mode = ss_mask_mode_name(m->mode);
    if (!mode || m->n_targets < 1 || !memchr(m->name, 0, sizeof m->name)) __builtin_trap();
    if (m->mode == SS_MASK_SCALE && !(m->factor >= 0 && m->factor <= 1)) __builtin_trap();
    /* noise within float32's range, as the mask kernels assume; relative only for noise */
    const int noisy = m->mode == SS_MASK_NOISE || m->mode == SS_MASK_NEGNOISE;
    if (noisy && !(m->sigma >= 0 && m->sigma <= SS_MASK_SIGMA_MAX)) __builtin_trap();
    if (!noisy && m->sigma_relative) __builtin_trap();
    for (int i = 0; i < m->n_targets; i++) {
        const ss_mask_target *t = &m->targets[i];
        if (t->site_id < 0 || t->site_id >= ss_sites_count(cfg)) __builtin_trap();
        ss_site s;
        ss_site_get(cfg, t->site_id, &s);
        if (!s.per_token) __builtin_trap();
        for (int j = 0; j < i; j++)
            if (m->targets[j].site_id == t->site_id) __builtin_trap();
        if ((t->n_units > 0) != (t->units != NULL)) __builtin_trap();
        for (int64_t u = 0; u < t->n_units; u++)
            if (t->units[u] < 0 || t->units[u] >= s.width || (u && t->units[u] <= t->units[u - 1])) __builtin_trap();
    }
    if ((m->n_positions > 0) != (m->positions != NULL)) __builtin_trap();
    for (int64_t p = 0; p < m->n_positions; p++)
        if (m->positions[p] < 0 || m->positions[p] >= cfg->n_positions ||
            (p && m->positions[p] <= m->positions[p - 1]))
            __builtin_trap();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    const int llama = data[0] & 1, spec = data[0] & 2;
    const char *text = llama ? llama_cfg : gpt2_cfg;
    ss_config cfg;
    if (ss_config_parse(text, strlen(text), "fuzz/config.json", &cfg) != SS_OK) __builtin_trap();
    data++, size--;
    if (spec) {
        char *s = malloc(size + 1);
        if (!s) return 0;
        memcpy(s, data, size);
        s[size] = 0;
        ss_mask m;
        memset(&m, 0, sizeof m);
        if (ss_mask_parse_spec(&cfg, s, &m) == SS_OK) {
            check(&cfg, &m);
            ss_mask_free(&m);
        }
        free(s);
        return 0;
    }
    ss_mask *ms = NULL;
    int n = 0;
    if (ss_masks_parse_jsonl(&cfg, (const char *)data, size, "fuzz/masks.jsonl", &ms, &n) == SS_OK) {
        if (n < 1) __builtin_trap();
        for (int i = 0; i < n; i++) {
            check(&cfg, &ms[i]);
            for (int j = 0; j < i; j++)
                if (!strcmp(ms[i].name, ms[j].name)) __builtin_trap();
        }
        ss_masks_free(ms, n);
    }
    return 0;
}
