/* Model configuration from a Hugging Face config.json. */
#ifndef SUBSCOPE_CONFIG_H
#define SUBSCOPE_CONFIG_H

#include <stddef.h>
#include <stdint.h>
#include "subscope/error.h"

#ifdef __cplusplus
extern "C" {
#endif

/* SS_ACT_SILU is the gate of the Llama family's SwiGLU MLP. */
typedef enum ss_act { SS_ACT_GELU_TANH, SS_ACT_GELU_ERF, SS_ACT_SILU } ss_act;

/* The two layouts the forward pass implements. GPT-2: learned positions,
 * LayerNorm, fused c_attn, GELU MLP, Conv1D weights [in, out]. Llama (and
 * Mistral, Qwen2, SmolLM2): rotary positions, RMSNorm, grouped-query
 * attention, SwiGLU MLP, nn.Linear weights [out, in]. */
typedef enum ss_family { SS_FAMILY_GPT2, SS_FAMILY_LLAMA } ss_family;

/* rope_scaling types: none, "linear" (positions / factor) and "llama3"
 * (long wavelengths divided by factor, a smooth blend in between). */
typedef enum ss_rope_type { SS_ROPE_NONE, SS_ROPE_LINEAR, SS_ROPE_LLAMA3 } ss_rope_type;

#define SS_MAX_EOS_IDS 16

typedef struct ss_config {
    char arch[64];          /* model_type: "gpt2", "llama", "mistral", "qwen2" */
    ss_family family;
    /* n_embd = hidden_size, n_inner = intermediate_size (GPT-2 default
     * 4*n_embd), n_positions = max_position_embeddings. */
    int64_t n_layer, n_head, n_embd, n_positions, vocab_size, n_inner;
    int64_t n_kv_head;      /* key/value heads (grouped-query attention); n_head for GPT-2 */
    int64_t d_head;         /* head_dim; n_embd / n_head unless the config says otherwise */
    double ln_eps;          /* layer_norm_epsilon (default 1e-5) or rms_norm_eps (default 1e-6) */
    ss_act act;             /* activation_function: gelu_new/gelu_pytorch_tanh -> TANH, gelu -> ERF; Llama: SILU */
    int tie_word_embeddings;/* GPT-2 default 1, Llama default 0 */
    int scale_attn_weights; /* default 1: scores / sqrt(d_head) */
    int qkv_bias;           /* Llama family: q/k/v projections have biases (Qwen2; attention_bias) */
    int o_bias;             /* Llama family: o_proj has a bias (attention_bias) */
    int mlp_bias;           /* Llama family: gate/up/down have biases (mlp_bias) */
    double rope_theta;      /* default 10000 */
    ss_rope_type rope_type;
    double rope_factor, rope_low_freq_factor, rope_high_freq_factor; /* rope_scaling */
    int64_t rope_original_max_positions;                           /* llama3 scaling */
    int64_t bos_token_id, eos_token_id; /* -1 if absent; eos_token_id is eos_ids[0] */
    int64_t eos_ids[SS_MAX_EOS_IDS];    /* every end-of-sequence id: a list eos_token_id (Llama 3's
                                         * instruct models end a turn with <|eot_id|>, its third),
                                         * or GGUF's eos and eot ids */
    int n_eos;
} ss_config;

/* Whether id is one of the config's end-of-sequence ids. */
int ss_config_is_eos(const ss_config *cfg, int64_t id);

/* Parses config.json text; path is used in messages. Missing required keys,
 * wrong types, non-positive sizes, n_embd not divisible by n_head,
 * unsupported model_type/activation are errors naming the key. */
ss_status ss_config_parse(const char *text, size_t len, const char *path, ss_config *cfg);
ss_status ss_config_load(const char *path, ss_config *cfg);
/* The same, but a config that names no model type (neither "model_type" nor
 * "architectures") is read as GPT-2's: the small configs `train` (GPT-2 only)
 * takes, which `info --config` plans for too. */
ss_status ss_config_parse_gpt2_default(const char *text, size_t len, const char *path, ss_config *cfg);
ss_status ss_config_load_gpt2_default(const char *path, ss_config *cfg);
static inline int64_t ss_config_d_head(const ss_config *c) { return c->d_head ? c->d_head : c->n_embd / c->n_head; }
/* Key/value heads (n_head when the config does not set them). */
static inline int64_t ss_config_kv_heads(const ss_config *c) { return c->n_kv_head ? c->n_kv_head : c->n_head; }
/* Parameters the forward pass uses (a tied lm_head counted once), from the
 * config alone; equals a loaded model's n_params. */
int64_t ss_config_n_params(const ss_config *c);
/* SS_ERR_FORMAT, naming path, unless every size is at most 2^24 and the
 * parameter count (in floating point) at most 2^60, so that the counts and
 * products the program forms from them cannot overflow. ss_config_parse and
 * the GGUF reader call it. */
ss_status ss_config_check_sizes(const ss_config *c, const char *path);
/* Parameters a pipeline stage running blocks [first, end) holds: its blocks,
 * the embeddings on the first stage, the final norm and the head on the last
 * (a tied head's wte counted there too when the last stage is not also the
 * first). ss_config_stage_params(c, 0, n_layer) = ss_config_n_params(c). */
int64_t ss_config_stage_params(const ss_config *c, int64_t first, int64_t end);
/* Multiply-adds per token of one block's matrix products (q, k, v, o and the
 * MLP), the cost model of the pipeline split; attention's scores and the
 * norms are left out. */
int64_t ss_config_block_macs(const ss_config *c);
/* Floats per token that the forward pass holds in flight (residual stream,
 * scratch, q|k|v, z, MLP buffers), and that a backward pass keeps per layer
 * on its tape; logits (vocab_size per kept row) come on top. */
int64_t ss_config_floats_per_token(const ss_config *c);
int64_t ss_config_tape_floats_per_token_layer(const ss_config *c);
/* The rotary inverse frequencies of one head, [d_head / 2], computed in
 * float32 as Hugging Face does (with rope_scaling applied). */
void ss_config_rope_inv_freq(const ss_config *c, float *inv_freq);

#ifdef __cplusplus
}
#endif
#endif
