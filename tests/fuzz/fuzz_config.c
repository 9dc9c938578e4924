/* libFuzzer target: the input is a config.json. An accepted config must
 * satisfy the invariants the model code relies on. */
#include <stdint.h>
#include <string.h>

#include "subscope/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    ss_config c;
    if (ss_config_parse((const char *)data, size, "fuzz/config.json", &c) != SS_OK) return 0;
    if (c.n_layer <= 0 || c.n_head <= 0 || c.n_embd <= 0 || c.n_positions <= 0 || c.vocab_size <= 0 ||
        c.n_inner <= 0 || c.n_embd % c.n_head != 0 || !(c.ln_eps > 0) || strcmp(c.arch, "gpt2") != 0 ||
        (c.act != SS_ACT_GELU_TANH && c.act != SS_ACT_GELU_ERF) || c.bos_token_id < -1 || c.eos_token_id < -1)
        __builtin_trap();
    return 0;
}
