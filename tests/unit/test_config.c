/* GPT-2 config.json parsing: defaults, variants and every refusal. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "subscope/config.h"
#include "subscope/util.h"
#include "test.h"

/* The keys of Hugging Face's gpt2 config.json (abridged). */
#define GPT2_BASE                                                                                       \
    "\"activation_function\": \"gelu_new\", \"architectures\": [\"GPT2LMHeadModel\"], "                 \
    "\"attn_pdrop\": 0.1, \"bos_token_id\": 50256, \"embd_pdrop\": 0.1, \"eos_token_id\": 50256, "      \
    "\"initializer_range\": 0.02, \"layer_norm_epsilon\": 1e-05, \"n_ctx\": 1024, \"n_embd\": 768, "    \
    "\"n_head\": 12, \"n_layer\": 12, \"n_positions\": 1024, \"resid_pdrop\": 0.1, "                    \
    "\"summary_activation\": null, \"task_specific_params\": {\"text-generation\": {\"do_sample\": true}}, " \
    "\"vocab_size\": 50257"

static ss_status parse(const char *text, ss_config *c) { return ss_config_parse(text, strlen(text), "cfg/config.json", c); }

TEST(config_gpt2_hf) {
    ss_config c;
    CHECK_OK(parse("{\"model_type\": \"gpt2\", " GPT2_BASE "}", &c));
    CHECK(strcmp(c.arch, "gpt2") == 0);
    CHECK(c.n_layer == 12 && c.n_head == 12 && c.n_embd == 768 && c.n_positions == 1024 && c.vocab_size == 50257);
    CHECK(c.n_inner == 3072);
    CHECK(c.ln_eps == 1e-5);
    CHECK(c.act == SS_ACT_GELU_TANH);
    CHECK(c.tie_word_embeddings == 1 && c.scale_attn_weights == 1);
    CHECK(c.bos_token_id == 50256 && c.eos_token_id == 50256);
    CHECK(ss_config_d_head(&c) == 64);
}

TEST(config_defaults_and_variants) {
    ss_config c;
    /* Minimal: architectures instead of model_type, n_ctx instead of n_positions. */
    CHECK_OK(parse("{\"architectures\": [\"Foo\", \"GPT2Model\"], \"n_layer\": 2, \"n_head\": 4, \"n_embd\": 32,"
                   " \"n_ctx\": 64, \"vocab_size\": 100}", &c));
    CHECK(c.n_positions == 64 && c.n_inner == 128 && c.ln_eps == 1e-5 && c.act == SS_ACT_GELU_TANH);
    CHECK(c.tie_word_embeddings == 1 && c.scale_attn_weights == 1 && c.bos_token_id == -1 && c.eos_token_id == -1);

    /* n_positions wins over n_ctx; explicit options. */
    CHECK_OK(parse("{\"model_type\": \"gpt2\", \"n_layer\": 1, \"n_head\": 2, \"n_embd\": 8, \"n_ctx\": 5,"
                   " \"n_positions\": 16, \"vocab_size\": 11, \"n_inner\": 20, \"layer_norm_epsilon\": 0.001,"
                   " \"activation_function\": \"gelu\", \"tie_word_embeddings\": false,"
                   " \"scale_attn_weights\": false, \"reorder_and_upcast_attn\": true,"
                   " \"scale_attn_by_inverse_layer_idx\": false, \"add_cross_attention\": false,"
                   " \"bos_token_id\": null, \"eos_token_id\": [7, 8]}", &c));
    CHECK(c.n_positions == 16 && c.n_inner == 20 && c.ln_eps == 0.001 && c.act == SS_ACT_GELU_ERF);
    CHECK(c.tie_word_embeddings == 0 && c.scale_attn_weights == 0);
    CHECK(c.bos_token_id == -1 && c.eos_token_id == 7);
    CHECK(c.n_eos == 2 && c.eos_ids[1] == 8 && ss_config_is_eos(&c, 8) && ss_config_is_eos(&c, 7) && !ss_config_is_eos(&c, 9));

    CHECK_OK(parse("{\"model_type\": \"gpt2\", \"n_layer\": 1, \"n_head\": 1, \"n_embd\": 8, \"n_positions\": 4,"
                   " \"vocab_size\": 3, \"n_inner\": null}", &c));
    CHECK(c.n_inner == 32);

    static const struct { const char *name; ss_act act; } acts[] = {
        {"gelu_new", SS_ACT_GELU_TANH}, {"gelu_pytorch_tanh", SS_ACT_GELU_TANH}, {"gelu_fast", SS_ACT_GELU_TANH},
        {"gelu_python_tanh", SS_ACT_GELU_TANH}, {"gelu_accurate", SS_ACT_GELU_TANH},
        {"gelu", SS_ACT_GELU_ERF}, {"gelu_python", SS_ACT_GELU_ERF},
    };
    for (size_t i = 0; i < sizeof acts / sizeof acts[0]; i++) {
        char buf[512];
        snprintf(buf, sizeof buf,
                 "{\"model_type\": \"gpt2\", \"n_layer\": 1, \"n_head\": 1, \"n_embd\": 8, \"n_positions\": 4,"
                 " \"vocab_size\": 3, \"activation_function\": \"%s\"}", acts[i].name);
        CHECK_OK(parse(buf, &c));
        CHECK_MSG(c.act == acts[i].act, "activation %s mapped wrongly", acts[i].name);
    }
}

#define MIN_KEYS "\"n_layer\": 1, \"n_head\": 2, \"n_embd\": 8, \"n_positions\": 4, \"vocab_size\": 3"

TEST(config_errors) {
    ss_config c;
    CHECK_ERR(parse("{\"model_type\": \"falcon\", " MIN_KEYS "}", &c), SS_ERR_UNSUPPORTED,
              "cfg/config.json: \"model_type\" \"falcon\" is not supported");
    CHECK_ERR(parse("{\"model_type\": 2, " MIN_KEYS "}", &c), SS_ERR_FORMAT, "cfg/config.json: \"model_type\" must be a string");
    CHECK_ERR(parse("{" MIN_KEYS "}", &c), SS_ERR_UNSUPPORTED, "cfg/config.json: no \"model_type\"");
    CHECK_ERR(parse("{\"architectures\": [\"FalconForCausalLM\"], " MIN_KEYS "}", &c), SS_ERR_UNSUPPORTED,
              "\"architectures\" names no supported model");
    CHECK_ERR(parse("{\"architectures\": [\"LlamaForCausalLM\"], " MIN_KEYS "}", &c), SS_ERR_FORMAT,
              "missing required key \"num_hidden_layers\"");
    CHECK_ERR(parse("{\"model_type\": \"gpt2\", \"n_head\": 2, \"n_embd\": 8, \"n_positions\": 4, \"vocab_size\": 3}", &c),
              SS_ERR_FORMAT, "cfg/config.json: missing required key \"n_layer\"");
    CHECK_ERR(parse("{\"model_type\": \"gpt2\", \"n_layer\": 1, \"n_head\": 0, \"n_embd\": 8, \"n_positions\": 4, \"vocab_size\": 3}", &c),
              SS_ERR_FORMAT, "\"n_head\" must be a positive integer");
    CHECK_ERR(parse("{\"model_type\": \"gpt2\", \"n_layer\": 1, \"n_head\": 2, \"n_embd\": 8.0, \"n_positions\": 4, \"vocab_size\": 3}", &c),
              SS_ERR_FORMAT, "\"n_embd\" must be a positive integer");
    CHECK_ERR(parse("{\"model_type\": \"gpt2\", \"n_layer\": 1, \"n_head\": 2, \"n_embd\": 8, \"n_positions\": 4, \"vocab_size\": \"3\"}", &c),
              SS_ERR_FORMAT, "\"vocab_size\" must be a positive integer");
    CHECK_ERR(parse("{\"model_type\": \"gpt2\", \"n_layer\": 1, \"n_head\": 2, \"n_embd\": 8, \"vocab_size\": 3}", &c),
              SS_ERR_FORMAT, "missing required key \"n_positions\" (or \"n_ctx\")");
    CHECK_ERR(parse("{\"model_type\": \"gpt2\", \"n_layer\": 1, \"n_head\": 2, \"n_embd\": 8, \"n_ctx\": -4, \"vocab_size\": 3}", &c),
              SS_ERR_FORMAT, "\"n_ctx\" must be a positive integer");
    CHECK_ERR(parse("{\"model_type\": \"gpt2\", \"n_layer\": 1, \"n_head\": 3, \"n_embd\": 8, \"n_positions\": 4, \"vocab_size\": 3}", &c),
              SS_ERR_FORMAT, "cfg/config.json: \"n_embd\" 8 is not divisible by \"n_head\" 3");
    CHECK_ERR(parse("{\"model_type\": \"gpt2\", \"n_layer\": 1, \"n_head\": 1, \"n_embd\": 4611686018427387904, \"n_positions\": 4, \"vocab_size\": 3}", &c),
              SS_ERR_FORMAT, "\"n_embd\" is too large");
    CHECK_ERR(parse("{\"model_type\": \"gpt2\", " MIN_KEYS ", \"n_inner\": 0}", &c), SS_ERR_FORMAT,
              "\"n_inner\" must be a positive integer");
    CHECK_ERR(parse("{\"model_type\": \"gpt2\", " MIN_KEYS ", \"layer_norm_epsilon\": 0}", &c), SS_ERR_FORMAT,
              "\"layer_norm_epsilon\" must be a positive number");
    CHECK_ERR(parse("{\"model_type\": \"gpt2\", " MIN_KEYS ", \"layer_norm_epsilon\": \"1e-5\"}", &c), SS_ERR_FORMAT,
              "\"layer_norm_epsilon\"");
    CHECK_ERR(parse("{\"model_type\": \"gpt2\", " MIN_KEYS ", \"activation_function\": \"relu\"}", &c),
              SS_ERR_UNSUPPORTED, "\"activation_function\" \"relu\" is not supported");
    CHECK_ERR(parse("{\"model_type\": \"gpt2\", " MIN_KEYS ", \"activation_function\": \"quick_gelu\"}", &c),
              SS_ERR_UNSUPPORTED, "\"quick_gelu\"");
    CHECK_ERR(parse("{\"model_type\": \"gpt2\", " MIN_KEYS ", \"activation_function\": \"gelu_10\"}", &c),
              SS_ERR_UNSUPPORTED, "\"gelu_10\"");
    CHECK_ERR(parse("{\"model_type\": \"gpt2\", " MIN_KEYS ", \"activation_function\": null}", &c), SS_ERR_FORMAT,
              "\"activation_function\" must be a string");
    CHECK_ERR(parse("{\"model_type\": \"gpt2\", " MIN_KEYS ", \"scale_attn_by_inverse_layer_idx\": true}", &c),
              SS_ERR_UNSUPPORTED, "cfg/config.json: \"scale_attn_by_inverse_layer_idx\": true is not supported");
    CHECK_ERR(parse("{\"model_type\": \"gpt2\", " MIN_KEYS ", \"add_cross_attention\": true}", &c),
              SS_ERR_UNSUPPORTED, "\"add_cross_attention\": true is not supported");
    CHECK_ERR(parse("{\"model_type\": \"gpt2\", " MIN_KEYS ", \"tie_word_embeddings\": \"yes\"}", &c),
              SS_ERR_FORMAT, "cfg/config.json: \"tie_word_embeddings\" must be true or false");
    CHECK_ERR(parse("{\"model_type\": \"gpt2\", " MIN_KEYS ", \"reorder_and_upcast_attn\": 1}", &c),
              SS_ERR_FORMAT, "\"reorder_and_upcast_attn\" must be true or false");
    CHECK_ERR(parse("{\"model_type\": \"gpt2\", " MIN_KEYS ", \"eos_token_id\": -3}", &c), SS_ERR_FORMAT,
              "\"eos_token_id\" must be a non-negative integer");
    CHECK_ERR(parse("{\"model_type\": \"gpt2\", " MIN_KEYS ", \"eos_token_id\": [2, -3]}", &c), SS_ERR_FORMAT,
              "\"eos_token_id\" must be a non-negative integer or a list of them");
    CHECK_ERR(parse("{\"model_type\": \"gpt2\", " MIN_KEYS ", \"bos_token_id\": \"a\"}", &c), SS_ERR_FORMAT,
              "\"bos_token_id\"");
    CHECK_ERR(parse("[1]", &c), SS_ERR_FORMAT, "cfg/config.json: not a JSON object");
    CHECK_ERR(parse("{\"model_type\": \"gpt2\",", &c), SS_ERR_FORMAT, "cfg/config.json:1:");
}

TEST(config_load_file) {
    char *path = ss_path_join(ss_test_tmp_dir(), "config.json");
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL);
    fputs("{\n  \"model_type\": \"gpt2\",\n  " MIN_KEYS ",\n  \"n_layer\": 3\n}\n", f);
    fclose(f);
    ss_config c;
    ss_status s = ss_config_load(path, &c);
    if (s != SS_OK) free(path);
    CHECK_OK(s);
    CHECK(c.n_layer == 3); /* a repeated key: the last one wins, as in Python's json */
    f = fopen(path, "wb");
    if (f) {
        fputs("{\n  \"model_type\": \"gpt2\",\n  \"n_layer\": true\n}\n", f);
        fclose(f);
    }
    ss_error_clear();
    s = ss_config_load(path, &c);
    int ok = s == SS_ERR_FORMAT && strstr(ss_last_error(), path) && strstr(ss_last_error(), "\"n_layer\"");
    free(path);
    CHECK_MSG(ok, "got %s: %s", ss_status_name(s), ss_last_error());
    CHECK_ERR(ss_config_load("/nonexistent/config.json", &c), SS_ERR_IO, "/nonexistent/config.json");
}

/* SmolLM2-135M's config.json (abridged to the keys that matter). */
#define SMOLLM2                                                                                          \
    "\"architectures\": [\"LlamaForCausalLM\"], \"bos_token_id\": 1, \"eos_token_id\": 2, "               \
    "\"hidden_act\": \"silu\", \"hidden_size\": 576, \"intermediate_size\": 1536, "                      \
    "\"max_position_embeddings\": 8192, \"model_type\": \"llama\", \"num_attention_heads\": 9, "         \
    "\"num_hidden_layers\": 30, \"num_key_value_heads\": 3, \"pretraining_tp\": 1, "                     \
    "\"rms_norm_eps\": 1e-05, \"rope_scaling\": null, \"rope_theta\": 100000, "                          \
    "\"tie_word_embeddings\": true, \"vocab_size\": 49152"

TEST(config_llama_family) {
    ss_config c;
    CHECK_OK(parse("{" SMOLLM2 "}", &c));
    CHECK(c.family == SS_FAMILY_LLAMA && !strcmp(c.arch, "llama") && c.act == SS_ACT_SILU);
    CHECK(c.n_layer == 30 && c.n_head == 9 && c.n_kv_head == 3 && ss_config_d_head(&c) == 64 && c.n_inner == 1536);
    CHECK(c.n_positions == 8192 && c.vocab_size == 49152 && c.ln_eps == 1e-5 && c.rope_theta == 100000);
    CHECK(c.rope_type == SS_ROPE_NONE && c.tie_word_embeddings && !c.qkv_bias && !c.o_bias && !c.mlp_bias);
    CHECK(c.bos_token_id == 1 && c.eos_token_id == 2);
    /* Llama defaults: untied, eps 1e-6, theta 1e4, kv heads = heads, context 2048. */
    CHECK_OK(parse("{\"model_type\": \"llama\", \"hidden_size\": 8, \"intermediate_size\": 4, \"num_hidden_layers\": 1, "
                   "\"num_attention_heads\": 2, \"vocab_size\": 5}", &c));
    CHECK(!c.tie_word_embeddings && c.ln_eps == 1e-6 && c.rope_theta == 1e4 && c.n_kv_head == 2 && c.n_positions == 2048);
#define LL "\"model_type\": \"llama\", \"hidden_size\": 8, \"intermediate_size\": 4, \"num_hidden_layers\": 1, " \
           "\"num_attention_heads\": 2, \"vocab_size\": 5"
    /* transformers 5's rope_parameters; head_dim; attention_bias; Qwen2's q/k/v-only biases */
    CHECK_OK(parse("{" LL ", \"head_dim\": 6, \"attention_bias\": true, \"rope_parameters\": {\"rope_type\": \"llama3\", "
                   "\"rope_theta\": 500000.0, \"factor\": 8.0, \"original_max_position_embeddings\": 16}}", &c));
    CHECK(ss_config_d_head(&c) == 6 && c.qkv_bias && c.o_bias && c.rope_type == SS_ROPE_LLAMA3 && c.rope_theta == 5e5);
    CHECK(c.rope_factor == 8 && c.rope_low_freq_factor == 1 && c.rope_high_freq_factor == 4 &&
          c.rope_original_max_positions == 16);
    CHECK_OK(parse("{" LL ", \"model_type\": \"qwen2\", \"num_key_value_heads\": 2}", &c)); /* a duplicate key: the last one wins, as in Python */
    CHECK(!strcmp(c.arch, "qwen2") && c.qkv_bias && !c.o_bias);
    /* Mistral's sliding window bounds the context rather than being approximated. */
    CHECK_OK(parse("{" LL ", \"model_type\": \"mistral\", \"num_key_value_heads\": 2, \"max_position_embeddings\": 32768, \"sliding_window\": 4096}", &c));
    CHECK(c.n_positions == 4096);
    /* MistralConfig's and Qwen2Config's own defaults, not LlamaConfig's: without the keys,
     * transformers runs a Mistral with 8 key/value heads, 131072 positions and a 4096-token
     * window (so prompts past 4096 tokens are refused, not computed without the window), a
     * Qwen2 with 32 key/value heads and 32768 positions; null heads mean num_attention_heads. */
#define L16 "\"hidden_size\": 64, \"intermediate_size\": 4, \"num_hidden_layers\": 1, \"num_attention_heads\": 32, \"vocab_size\": 5"
    CHECK_OK(parse("{" L16 ", \"model_type\": \"mistral\"}", &c));
    CHECK(c.n_kv_head == 8 && c.n_positions == 4096);
    CHECK_OK(parse("{" L16 ", \"model_type\": \"mistral\", \"sliding_window\": null, \"num_key_value_heads\": null}", &c));
    CHECK(c.n_kv_head == 32 && c.n_positions == 131072);
    CHECK_OK(parse("{" L16 ", \"model_type\": \"qwen2\", \"num_attention_heads\": 64, \"hidden_size\": 128}", &c));
    CHECK(c.n_kv_head == 32 && c.n_positions == 32768);
    CHECK_OK(parse("{" L16 ", \"model_type\": \"llama\"}", &c));
    CHECK(c.n_kv_head == 32 && c.n_positions == 2048);
#undef L16
    /* What would change the function is refused by name. */
    CHECK_ERR(parse("{" LL ", \"hidden_act\": \"gelu\"}", &c), SS_ERR_UNSUPPORTED, "\"hidden_act\" \"gelu\"");
    CHECK_ERR(parse("{" LL ", \"rope_scaling\": {\"rope_type\": \"yarn\", \"factor\": 4.0}}", &c), SS_ERR_UNSUPPORTED,
              "rope_scaling type \"yarn\" is not supported");
    CHECK_ERR(parse("{" LL ", \"rope_parameters\": {\"rope_type\": \"dynamic\", \"factor\": 2.0}}", &c),
              SS_ERR_UNSUPPORTED, "rope_parameters type \"dynamic\"");
    CHECK_ERR(parse("{" LL ", \"model_type\": \"qwen2\", \"num_key_value_heads\": 2, \"use_sliding_window\": true}", &c), SS_ERR_UNSUPPORTED,
              "use_sliding_window");
    CHECK_ERR(parse("{" LL ", \"partial_rotary_factor\": 0.5}", &c), SS_ERR_UNSUPPORTED, "partial_rotary_factor");
    CHECK_ERR(parse("{" LL ", \"num_key_value_heads\": 3, \"num_attention_heads\": 4, \"hidden_size\": 8}", &c),
              SS_ERR_FORMAT, "not a multiple of \"num_key_value_heads\"");
    CHECK_ERR(parse("{" LL ", \"head_dim\": 5}", &c), SS_ERR_FORMAT, "head_dim 5 is odd");
    CHECK_ERR(parse("{" LL ", \"rope_scaling\": {\"rope_type\": \"llama3\", \"factor\": 8.0}}", &c), SS_ERR_FORMAT,
              "original_max_position_embeddings");
    CHECK_ERR(parse("{" LL ", \"rope_scaling\": {\"rope_type\": \"linear\", \"factor\": 0.5}}", &c), SS_ERR_FORMAT,
              "\"factor\" must be a number >= 1");
#undef LL
}

/* The rotary frequencies transformers computes, in float32 (printed by
 * torch: LlamaRotaryEmbedding(config).inv_freq for these configs). */
TEST(config_rope_inv_freq) {
    ss_config c = {.family = SS_FAMILY_LLAMA, .n_embd = 8, .n_head = 1, .d_head = 8, .rope_theta = 500000.0};
    float f[4];
    ss_config_rope_inv_freq(&c, f);
    const float plain[4] = {1.0f, 0.037606031f, 0.0014142134f, 5.3182957e-05f};
    for (int i = 0; i < 4; i++) CHECK_NEAR(f[i], plain[i], 2e-7 * plain[i]);
    c.rope_type = SS_ROPE_LLAMA3, c.rope_factor = 8, c.rope_low_freq_factor = 1, c.rope_high_freq_factor = 4;
    c.rope_original_max_positions = 16;
    ss_config_rope_inv_freq(&c, f);
    /* wavelengths 6.3 (between 4 and 16: blended), 167, 4443, 118145 (above 16: divided by 8) */
    const float l3[4] = {0.57605636f, 0.0047007538f, 0.00017677668f, 6.6478697e-06f};
    for (int i = 0; i < 4; i++) CHECK_NEAR(f[i], l3[i], 2e-7 * l3[i]);
}

/* Sizes past 2^24, or a parameter count past 2^60, are refused by name, so no
 * count or product formed from them overflows; GPT-3's shape passes. */
TEST(config_sizes_bounded) {
    ss_config c;
    CHECK_ERR(parse("{\"model_type\": \"gpt2\", \"n_layer\": 1099511627776, \"n_head\": 2, \"n_embd\": 16, "
                    "\"n_positions\": 16, \"vocab_size\": 100}", &c),
              SS_ERR_FORMAT, "layers 1099511627776 is beyond what subscope handles");
    CHECK_ERR(parse("{\"model_type\": \"gpt2\", \"n_layer\": 2, \"n_head\": 2, \"n_embd\": 16, "
                    "\"n_positions\": 16, \"vocab_size\": 2147483648}", &c),
              SS_ERR_FORMAT, "vocabulary 2147483648");
    CHECK_ERR(parse("{\"model_type\": \"gpt2\", \"n_layer\": 16777216, \"n_head\": 4, \"n_embd\": 4194304, "
                    "\"n_inner\": 16, \"n_positions\": 16, \"vocab_size\": 100}", &c),
              SS_ERR_FORMAT, "parameters, beyond what subscope handles");
    CHECK_ERR(parse("{\"model_type\": \"llama\", \"num_hidden_layers\": 2, \"num_attention_heads\": 2, \"hidden_size\": 16, "
                    "\"intermediate_size\": 32, \"vocab_size\": 100, \"head_dim\": 33554432}", &c),
              SS_ERR_FORMAT, "head dimension 33554432");
    CHECK_OK(parse("{\"model_type\": \"gpt2\", \"n_layer\": 96, \"n_head\": 96, \"n_embd\": 12288, "
                   "\"n_positions\": 2048, \"vocab_size\": 50257}", &c));
    CHECK(ss_config_n_params(&c) > 170000000000LL);
}
