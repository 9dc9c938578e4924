/* A loaded model: config, fp32 weights (zero-copy from the mapping when the
 * file holds aligned F32, converted otherwise) and, if present, its tokenizer. */
#ifndef SUBSCOPE_MODEL_H
#define SUBSCOPE_MODEL_H

#include <stddef.h>
#include <stdint.h>
#include "subscope/config.h"
#include "subscope/error.h"
#include "subscope/safetensors.h"
#include "subscope/tokenizer.h"

#ifdef __cplusplus
extern "C" {
#endif

/* One block of either family. Matrices (the _w of projections, wte, wpe,
 * lm_head) hold elements of the weights' wdtype; vectors (norm weights,
 * biases) are always float32; a bias the model lacks is NULL.
 * GPT-2 keeps Conv1D's [in, out] layout; the Llama family keeps nn.Linear's
 * [out, in] (ss_gpt2_weights.trans), with q/k/v fused into one
 * [(H + 2 Hkv) d_head, d] matrix and gate/up into one [2 d_mlp, d] at load. */
typedef struct ss_gpt2_layer {
    const void *ln1_w, *ln1_b;      /* [d]; RMSNorm: no bias */
    const void *attn_w, *attn_b;    /* GPT-2 c_attn [d, 3d]; Llama q|k|v [(H+2Hkv)dh, d] */
    const void *proj_w, *proj_b;    /* GPT-2 attn.c_proj [d, d]; Llama o_proj [d, H dh] */
    const void *ln2_w, *ln2_b;      /* [d] */
    const void *fc_w, *fc_b;        /* GPT-2 mlp.c_fc [d, d_mlp]; Llama gate|up [2 d_mlp, d] */
    const void *fc2_w, *fc2_b;      /* GPT-2 mlp.c_proj [d_mlp, d]; Llama down_proj [d, d_mlp] */
} ss_gpt2_layer;

/* The forward pass's weights, as pointers valid on one backend. */
typedef struct ss_gpt2_weights {
    int wdtype;                     /* SS_WDTYPE_F32 or SS_WDTYPE_BF16: the matrices' element type */
    int trans;                      /* 1: matrices are [out, in] (Llama family), 0: [in, out] (GPT-2) */
    const void *wte, *wpe;          /* [V, d], [n_positions, d]; wpe NULL for rotary models */
    const void *lnf_w, *lnf_b;      /* [d] */
    const void *lm_head;            /* [V, d]; == wte when tied */
    const float *rope_inv_freq;     /* [d_head / 2] rotary frequencies (not a parameter); NULL for GPT-2 */
    ss_gpt2_layer *layers;          /* n_layer */
} ss_gpt2_weights;

struct ss_backend;

/* A block of bytes to or from a neighbouring pipeline stage (at most
 * SS_PIPE_HELD held or fetched ahead at a time, and SS_PIPE_SENDING sent in
 * the background and not yet taken). */
#define SS_PIPE_HELD 4
#define SS_PIPE_SENDING 2
typedef struct ss_pipe_block {
    void *buf;
    size_t bytes;
    int peer, tag;
} ss_pipe_block;

typedef struct ss_model {
    char *dir;
    ss_config cfg;
    ss_weights *weights;
    ss_tokenizer *tok;              /* NULL if the directory has no tokenizer */
    ss_gpt2_weights w;              /* in host memory */
    /* A copy in one non-host backend's memory, made by ss_model_place. */
    const struct ss_backend *placed_on;
    ss_gpt2_weights placed;
    void *placed_block;
    int64_t n_params;               /* parameters used by the forward pass */
    int has_prefix;                 /* names carried "transformer." */
    char weight_dtypes[64];         /* e.g. "F32" or "F16" as found in the files */
    float **owned;                  /* converted buffers we must free */
    size_t n_owned;
    /* Weights not converted yet (ss_model_load_deferred): each records the
     * weight pointer it fills and the file tensors it comes from; until
     * ss_model_place, those pointers point at the files' bytes. */
    struct ss_weight_src *srcs;
    size_t n_srcs, cap_srcs;
    /* The blocks whose weights were loaded: [0, n_layer) unless the model
     * was loaded for one stage of a pipeline (ss_model_load_layers); the
     * embeddings come with block 0, the final norm and lm_head with the last. */
    int first_layer, end_layer;
    /* Pipeline parallelism (ss_model_set_pipeline): stage `stage` of
     * n_stages runs blocks [first_layer, end_layer), receives the residual
     * stream from stage - 1 and sends it to stage + 1 through pipe; only the
     * last stage produces logits. NULL: the whole model in this process. */
    struct ss_comm *pipe;
    int stage, n_stages;
    /* Data parallelism over pipelines: this stage's pipeline is copy
     * `replica` of n_replicas, each running its own share of the prompts
     * (1 copy: every rank is one stage). pipe_owned: pipe was made for this
     * model (a group of the world's ranks) and goes with it. */
    int replica, n_replicas, pipe_owned;
    int *stage_first;               /* [n_stages + 1]: the first block of each stage, then n_layer */
    /* A stage's time in the pipeline: from its first pass's start (pipe_t0)
     * to the end of its last pass or wait for a neighbour (pipe_t1), of which
     * pipe_wait_s went waiting for a neighbour; the rest is its own work
     * (passes forward and backward, and the job's work between them). */
    double pipe_wait_s, pipe_t0, pipe_t1;
    /* ss_forward's seconds before its closing device sync (the host queueing
     * the pass and doing its own work) and inside it (waiting for the device):
     * where the device waits for the host, the second is near zero. */
    double fwd_host_s, fwd_sync_s;
    /* pipe_hold: a block a pass sends to a neighbour is held until
     * ss_model_pipe_release, which may also fetch the next pass's first
     * block (ahead), for schedules that alternate forward and backward. */
    int pipe_hold;
    ss_pipe_block held[SS_PIPE_HELD], ahead[SS_PIPE_HELD];
    int n_held, n_ahead;
    /* Blocks in flight to a neighbour where the communicator sends in the
     * background (oldest first), each with its request. */
    ss_pipe_block sending[SS_PIPE_SENDING];
    struct ss_comm_req *send_req[SS_PIPE_SENDING];
    int n_sending;
    int inspect_only;               /* ss_model_inspect: weights checked, not converted; cannot run */
    int finite_checked;             /* every weight scanned for NaN and infinities (check_weights) */
} ss_model;

/* Loads config.json, the weights and (optionally) the tokenizer from dir, or
 * all three from a llama-architecture GGUF file when dir ends in ".gguf". */
ss_status ss_model_load(const char *dir, ss_model **out);
/* The same with only blocks [first, end) (and the embeddings or the head
 * when the range touches the first or last block): one pipeline stage's
 * weights. end < 0 means n_layer. */
ss_status ss_model_load_layers(const char *dir, int first, int end, ss_model **out);
/* The same, with every tensor that needs converting (16-bit, or unaligned
 * float32) left in the files until ss_model_place: a GPU placement then goes
 * from the mapped files straight into device memory, a chunk of each tensor
 * at a time, with no float32 copy of the model in host memory (a BF16 or F16
 * checkpoint placed in its own dtype is copied as it is); a host float32
 * placement converts the whole model then, as ss_model_load_layers does. A
 * GGUF file is dequantised when opened either way. What the jobs and
 * `predict` load. */
ss_status ss_model_load_deferred(const char *dir, int first, int end, ss_model **out);
/* Config, tokenizer and every tensor's presence and shape checked, without
 * converting any weights to fp32 (what `info` needs, at any size); the model
 * cannot be placed or run. */
ss_status ss_model_inspect(const char *dir, ss_model **out);
/* What a model's results depend on, as 64 hex characters: for a .gguf file,
 * the file; for a directory, the names, sizes and contents
 * (ss_file_fingerprint) of its config.json, weights (*.safetensors and the
 * index) and tokenizer files, in name order, so a copy of the directory
 * elsewhere has the same one and any change to those files another. *bytes:
 * how much was read. For checkpoints that must not resume on other weights. */
ss_status ss_model_fingerprint(const char *path, char out[65], int64_t *bytes);
/* Makes m one stage of a pipeline over the ranks of comm (rank = stage):
 * stage s runs blocks [first_of[s], first_of[s+1]) (ss_pipeline_split), and
 * m must hold exactly this rank's. */
ss_status ss_model_set_pipeline(ss_model *m, struct ss_comm *comm, const int *first_of);
/* With m->pipe_hold set, the blocks a pass sends to a neighbouring stage
 * wait for this, called between passes with what comes next: a forward
 * pass (n_passes of them on the same rows: ATP's corrupt and clean runs)
 * or the backward pass of a batch of `rows` rows and n_seq prompts whose
 * metric comes first (0: a pass without one) and then, if grad, the
 * gradient (ss_backward_gets_grad: a pass that stops above this stage has
 * none to hand down), or nothing. If the next pass first receives from the stage the held blocks go
 * to, they are exchanged for its blocks, which it then finds here;
 * otherwise they are sent as they are. One-forward-one-backward schedules
 * need it (src/model/forward.c). A no-op without a pipeline. */
typedef enum { SS_PIPE_NEXT_NONE, SS_PIPE_NEXT_FORWARD, SS_PIPE_NEXT_BACKWARD } ss_pipe_next;
ss_status ss_model_pipe_release(ss_model *m, ss_pipe_next next, int64_t rows, int64_t n_seq, int n_passes, int grad);
/* Waits until every block this stage sent in the background has been taken
 * (the time counts as waiting); its error if a send failed. A no-op without
 * a pipeline. ss_pipeline_report and ss_model_free call it. */
ss_status ss_model_pipe_flush(ss_model *m);
/* Marks the start (end 0: the first call counts) or the end (end 1: the
 * latest counts) of this stage's part of the pipeline; passes call it. A
 * no-op without a pipeline. */
void ss_model_pipe_mark(ss_model *m, int end);
/* The split of c's blocks over n_stages pipeline stages, as
 * first_of[n_stages+1] (first_of[0] = 0, first_of[n_stages] = n_layer).
 * `blocks` lists each stage's block count ("9,3"; every stage at least one,
 * summing to n_layer), or is "even" (contiguous shares as even as the count
 * allows, the first stages one more), or NULL: balanced by cost, as even
 * unless `logits` says the job's last stage scores the logits of every
 * position, whose d*V multiply-adds per token (ss_config_block_macs: GPT-2
 * small's head costs 5.4 blocks) then take blocks off the last stage. With
 * max_bytes > 0 a split whose stages each hold at most that many bytes of
 * fp32 weights comes first, if there is one. The error names what is wrong
 * with `blocks`. */
ss_status ss_pipeline_split(const ss_config *c, int n_stages, const char *blocks, int logits,
                            int64_t max_bytes, int *first_of);
/* Bytes of weights this process holds in host memory as fp32 (what
 * --max-memory limits). */
int64_t ss_model_weight_bytes(const ss_model *m);
void ss_model_free(ss_model *m);
/* Makes the weights available to backend be with matrices in wdtype
 * (SS_WDTYPE_F32, SS_WDTYPE_BF16, SS_WDTYPE_F16 on GPUs only, or
 * SS_WDTYPE_AUTO: the files' dtype on a GPU, float32 on the CPU): a no-op
 * for float32 on a host-memory backend; otherwise one conversion and upload,
 * kept until ss_model_free. */
ss_status ss_model_place(ss_model *m, const struct ss_backend *be, int wdtype);
/* The weights as seen by be, or NULL if ss_model_place was not called for it. */
const ss_gpt2_weights *ss_model_weights(const ss_model *m, const struct ss_backend *be);

#ifdef __cplusplus
}
#endif
#endif
