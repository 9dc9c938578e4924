/* Model configuration from a Hugging Face config.json. */
#ifndef SUBSCOPE_CONFIG_H
#define SUBSCOPE_CONFIG_H

#include <stddef.h>
#include <stdint.h>
#include "subscope/error.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum ss_act { SS_ACT_GELU_TANH, SS_ACT_GELU_ERF } ss_act;

typedef struct ss_config {
    char arch[64];          /* "gpt2" */
    int64_t n_layer, n_head, n_embd, n_positions, vocab_size, n_inner; /* n_inner: MLP width (default 4*n_embd) */
    double ln_eps;          /* layer_norm_epsilon (default 1e-5) */
    ss_act act;             /* activation_function: gelu_new/gelu_pytorch_tanh -> TANH, gelu -> ERF */
    int tie_word_embeddings;/* default 1 */
    int scale_attn_weights; /* default 1: scores / sqrt(d_head) */
    int64_t bos_token_id, eos_token_id; /* -1 if absent */
} ss_config;

/* Parses config.json text; path is used in messages. Missing required keys,
 * wrong types, non-positive sizes, n_embd not divisible by n_head,
 * unsupported model_type/activation are errors naming the key. */
ss_status ss_config_parse(const char *text, size_t len, const char *path, ss_config *cfg);
ss_status ss_config_load(const char *path, ss_config *cfg);
/* d_head = n_embd / n_head */
static inline int64_t ss_config_d_head(const ss_config *c) { return c->n_embd / c->n_head; }

#ifdef __cplusplus
}
#endif
#endif
