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
