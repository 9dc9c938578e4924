/* A llama-architecture model from a GGUF file (llama.cpp's format), turned
 * into what a Hugging Face directory gives: an ss_config, fp32 weights under
 * Hugging Face's tensor names and shapes (dequantised, with the rotary row
 * permutation llama.cpp's converter applies to q_proj/k_proj undone) and the
 * byte-level BPE tokenizer stored in tokenizer.ggml.*. docs/GGUF.md has the
 * mapping and what is refused. */
#ifndef SUBSCOPE_GGUF_MODEL_H
#define SUBSCOPE_GGUF_MODEL_H

#include "subscope/config.h"
#include "subscope/error.h"
#include "subscope/gguf.h"
#include "subscope/safetensors.h"
#include "subscope/tokenizer.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The per-frequency rotary divisors of a Llama 3.x GGUF (llama.cpp's
 * rope_freqs.weight, [d_head / 2] F32): ss_gguf_model_open keeps the tensor
 * under this name, and the model loader divides each inverse frequency by
 * its factor (as llama.cpp divides the rotary angle). */
#define SS_GGUF_ROPE_FREQS "rope_freqs.weight"

/* Opens path (general.architecture "llama"). *weights holds every tensor as
 * F32 under its Hugging Face name (model.embed_tokens.weight,
 * model.layers.{l}.self_attn.q_proj.weight, ..., lm_head.weight unless tied)
 * and, if the file has one, SS_GGUF_ROPE_FREQS.
 * *tok is NULL when the file has no tokenizer.ggml.model; pass tok = NULL to
 * skip the tokenizer. On failure nothing is returned and the message names
 * the file and the key or tensor at fault. */
ss_status ss_gguf_model_open(const char *path, ss_config *cfg, ss_weights **weights, ss_tokenizer **tok);

/* The config of an open llama-architecture GGUF (what ss_gguf_model_open
 * fills), from its metadata and its tensors' shapes, without reading any
 * weights; refusals name the key or tensor. */
ss_status ss_gguf_model_config(const ss_gguf *g, ss_config *c);

/* The tokenizer of an open GGUF: tokenizer.ggml.model "gpt2" (byte-level BPE)
 * with tokenizer.ggml.pre "smollm" (Digits then ByteLevel, as SmolLM2's
 * tokenizer.json) or "gpt-2" (ByteLevel alone); CONTROL and USER_DEFINED
 * tokens become added tokens (CONTROL ones special). Encodes as Hugging Face
 * `tokenizers` does with the model's tokenizer.json. Other tokenizer models
 * and pre-tokenizers are refused by name. */
ss_status ss_gguf_tokenizer_load(const ss_gguf *g, ss_tokenizer **out);

/* The tokenizer.json document that ss_gguf_tokenizer_load builds (malloc'd,
 * NUL-terminated, *len bytes), for inspection and for saving next to a model. */
ss_status ss_gguf_tokenizer_json(const ss_gguf *g, char **json, size_t *len);

/* The ggml types of the file's tensors, distinct, in file order, comma-separated
 * ("Q8_0,F32,Q4_1"), into buf (cap bytes; truncated at a type boundary). */
void ss_gguf_type_list(const ss_gguf *g, char *buf, size_t cap);

/* 1 if path names a GGUF file (ends in ".gguf"), which ss_model_load opens
 * with ss_gguf_model_open instead of as a Hugging Face directory. */
int ss_model_path_is_gguf(const char *path);

/* The tokenizer of a --model path without loading the model: the one inside a
 * .gguf file (an error naming it when it has none), else ss_tokenizer_load_dir's. */
ss_status ss_model_tokenizer_load(const char *path, ss_tokenizer **out);

/* A Hugging Face config.json document (LlamaConfig keys) describing a
 * Llama-family config, such that ss_config_parse gives the config back:
 * what a GGUF model records as its configuration. malloc'd, NUL-terminated. */
ss_status ss_gguf_config_json(const ss_config *c, char **json);

#ifdef __cplusplus
}
#endif
#endif
