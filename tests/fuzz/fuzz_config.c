/* libFuzzer target: the input is a config.json, read as ss_config_parse and
 * as ss_config_parse_gpt2_default do. An accepted config must satisfy the
 * invariants the model code relies on, eos_token_id lists included. */
#include <stdint.h>
#include <string.h>

#include "subscope/config.h"

static void check(const ss_config *cp) {
    const ss_config c = *cp;
    if (c.n_layer <= 0 || c.n_head <= 0 || c.n_embd <= 0 || c.n_positions <= 0 || c.vocab_size <= 0 ||
        c.n_inner <= 0 || !(c.ln_eps > 0) || c.bos_token_id < -1 || c.eos_token_id < -1)
        __builtin_trap();
    /* eos_token_id (an id or a list): the first listed id, or -1 with none listed */
    if (c.n_eos < 0 || c.n_eos > SS_MAX_EOS_IDS || c.eos_token_id != (c.n_eos ? c.eos_ids[0] : -1)) __builtin_trap();
    for (int k = 0; k < c.n_eos; k++)
        if (c.eos_ids[k] < 0 || !ss_config_is_eos(&c, c.eos_ids[k])) __builtin_trap();
    if (ss_config_is_eos(&c, -1)) __builtin_trap();
    if (c.family == SS_FAMILY_GPT2) {
        if (c.n_embd % c.n_head != 0 || strcmp(c.arch, "gpt2") != 0 || ss_config_kv_heads(&c) != c.n_head ||
            (c.act != SS_ACT_GELU_TANH && c.act != SS_ACT_GELU_ERF))
            __builtin_trap();
    } else {
        /* the Llama family: whole key/value groups, even heads for the rotation, a usable rotary setting */
        const int64_t dh = ss_config_d_head(&c), kv = ss_config_kv_heads(&c);
        if (c.family != SS_FAMILY_LLAMA || kv <= 0 || c.n_head % kv != 0 || dh <= 0 || dh % 2 || c.act != SS_ACT_SILU ||
            !(c.rope_theta > 0) || (c.rope_type != SS_ROPE_NONE && !(c.rope_factor >= 1)) ||
            (c.rope_type == SS_ROPE_LLAMA3 && (!(c.rope_high_freq_factor > c.rope_low_freq_factor) ||
                                                c.rope_original_max_positions <= 0)))
            __builtin_trap();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    ss_config c;
    const ss_status st = ss_config_parse((const char *)data, size, "fuzz/config.json", &c);
    if (st == SS_OK) check(&c);
    /* train's and info --config's reading: a config naming no model type is GPT-2's */
    const ss_status st2 = ss_config_parse_gpt2_default((const char *)data, size, "fuzz/config.json", &c);
    if (st2 == SS_OK) check(&c);
    if (st == SS_OK && st2 != SS_OK) __builtin_trap(); /* the default only adds configs */
    return 0;
}
