/* Training a GPT-2 from scratch: writable float32 models, GPT-2
 * initialisation, a safetensors writer, and the `subscope train` job
 * (AdamW, warm-up + cosine schedule, gradient clipping, all seeded). */
#ifndef SUBSCOPE_TRAIN_H
#define SUBSCOPE_TRAIN_H

#include <stdint.h>
#include <stdio.h>
#include "subscope/config.h"
#include "subscope/error.h"
#include "subscope/model.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A small seeded generator (splitmix64): the same seed gives the same
 * numbers on every platform. */
typedef struct ss_rng {
    uint64_t s;
} ss_rng;
void ss_rng_seed(ss_rng *r, uint64_t seed);
uint64_t ss_rng_next(ss_rng *r);
/* Uniform in [0, n) (n >= 1), without modulo bias. */
uint64_t ss_rng_below(ss_rng *r, uint64_t n);
/* Standard normal (Box-Muller, computed in float64). */
double ss_rng_normal(ss_rng *r);

/* One parameter tensor of a GPT-2, as Hugging Face's GPT2LMHeadModel names
 * and shapes it (Conv1D layout: c_attn.weight is [d, 3d]). */
typedef struct ss_param {
    char name[64];      /* "transformer.h.0.attn.c_attn.weight", "lm_head.weight" */
    int ndim;
    int64_t shape[2];
    size_t count;
    int decay;          /* 1 for the projection matrices AdamW decays */
    const void **slot;  /* the pointer inside the ss_gpt2_weights it was listed from */
} ss_param;

/* Number of parameter tensors: 4 + 12·n_layer, + 1 for an untied lm_head. */
int ss_gpt2_param_count(const ss_config *c);
/* Lists w's tensors in a fixed order (wte, wpe, ln_f, then each layer,
 * then an untied lm_head) into out[ss_gpt2_param_count(c)]. */
void ss_gpt2_params(const ss_config *c, ss_gpt2_weights *w, ss_param *out);

/* A model with zeroed, writable float32 host weights for cfg (tied as
 * cfg->tie_word_embeddings says) and no tokenizer; ss_model_free frees it. */
ss_status ss_model_create(const ss_config *cfg, ss_model **out);
/* GPT-2's initialisation, seeded: matrices and embeddings normal(0, 0.02),
 * the attention and MLP output projections (c_proj) normal(0, 0.02/sqrt(2·n_layer)),
 * biases 0, layer-norm weights 1. m must come from ss_model_create. */
void ss_model_init_gpt2(ss_model *m, uint64_t seed);

/* One float32 tensor for the safetensors writer. */
typedef struct ss_st_write {
    const char *name;
    int ndim;                      /* 0..SS_MAX_DIMS */
    const int64_t *shape;
    const float *data;             /* host memory, product(shape) floats */
} ss_st_write;

/* Writes a safetensors file of F32 tensors (in the order given) with
 * __metadata__ {"format": "pt"}; the header is padded with spaces so the
 * data starts 8-byte aligned. Written to <path>.tmp.<host>.<pid> and renamed,
 * so a failure never leaves a file at path; a path that is a symbolic link is
 * written through (ss_out_target). */
ss_status ss_safetensors_write_f32(const char *path, const ss_st_write *t, int n);
/* The model's host float32 weights as <path> with Hugging Face's GPT-2 names
 * (transformer.* and, untied, lm_head.weight). */
ss_status ss_model_write_safetensors(const ss_model *m, const char *path);

typedef struct ss_train_result {
    double first_loss, last_loss;  /* training loss of the first and last step */
    double val_loss;               /* held-out loss at the end (NaN: no held-out part) */
    int64_t n_tokens, n_train_windows, n_val_windows;
    double seconds;
    double tokenizer_seconds;      /* training the tokenizer (vocab_size given), else 0 */
} ss_train_result;

typedef struct ss_train_job {
    const char *config;       /* GPT-2 config.json */
    const char *data;         /* text or JSONL prompt file */
    const char *tokenizer;    /* directory with tokenizer.json or vocab.json + merges.txt (NULL: data must be token ids) */
    int64_t vocab_size;       /* > 0 (instead of tokenizer): train a byte-level BPE tokenizer of exactly this many ids
                                 on the data first (ss_bpe_trainer); the config's vocab_size must equal it */
    const char *out;          /* output directory (created if missing; its parent must exist) */
    int64_t steps;            /* >= 1 */
    int64_t batch;            /* windows per step (0: 8) */
    int64_t seq;              /* tokens per window (0: n_positions) */
    double lr;                /* peak learning rate (0: 1e-3) */
    int64_t warmup;           /* linear warm-up steps (< 0: min(100, steps/10)) */
    double weight_decay;      /* decoupled, projection matrices only (< 0: 0.1) */
    double clip;              /* global gradient-norm limit (< 0: 1.0; 0: none) */
    uint64_t seed;
    const char *device;       /* "cpu", "cuda[:N]", "auto" (NULL: cpu) */
    struct ss_backend *backend; /* if set, used instead of device (the caller keeps it) */
    int64_t log_every;        /* steps between progress lines (0: 10) */
    FILE *log;                /* progress lines go here (NULL: nowhere) */
    const char *command_line; /* recorded in subscope_train.json */
    double *losses;           /* if set: the training loss of every step, [steps] */
    ss_train_result *result;  /* if set: filled in */
    ss_model **model_out;     /* if set: receives the trained model (host weights) */
} ss_train_job;

ss_status ss_job_train(const ss_train_job *job);

#ifdef __cplusplus
}
#endif
#endif
