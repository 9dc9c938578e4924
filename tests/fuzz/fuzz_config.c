/* libFuzzer target: the input is a config.json. An accepted config must
 * satisfy the invariants the model code relies on. */
#include <stdint.h>
#include <string.h>

#include "subscope/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    ss_config c;
    if (ss_config_parse((const char *)data, size, "fuzz/config.json", &c) != SS_OK) return 0;
    if (c.n_layer <= 0 || c.n_head <= 0 || c.n_embd <= 0 || c.n_positions <= 0 || c.vocab_size <= 0 ||
        c.n_inner <= 0 || !(c.ln_eps > 0) || c.bos_token_id < -1 || c.eos_token_id < -1)
        __builtin_trap();
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
    return 0;
}
