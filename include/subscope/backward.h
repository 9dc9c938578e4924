/* The backward pass: gradients of a per-prompt metric with respect to the
 * activations at any site and (optionally) the weights. */
#ifndef SUBSCOPE_BACKWARD_H
#define SUBSCOPE_BACKWARD_H

#include <stdint.h>
#include "subscope/forward.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The scalar each prompt contributes. The gradient is that of the sum over
 * prompts; prompts never see each other, so the gradient at a prompt's rows
 * is the gradient of its own metric. */
typedef enum ss_metric_kind {
    SS_METRIC_LOSS,      /* mean next-token cross-entropy over the prompt's real positions (NaN for 1 token) */
    SS_METRIC_LOGITDIFF, /* logit(answer) - logit(wrong) at the last position */
    SS_METRIC_LOGPROB,   /* log p(answer) at the last position */
} ss_metric_kind;

typedef struct ss_metric {
    ss_metric_kind kind;
    const int32_t *answer, *wrong; /* per sequence (LOGITDIFF: both; LOGPROB: answer) */
} ss_metric;

/* Parses "loss", "logitdiff" or "logprob". */
ss_status ss_metric_parse(const char *s, ss_metric_kind *out);
const char *ss_metric_name(ss_metric_kind k);

typedef struct ss_grad_opts {
    /* Gradients at sites: hook is called, in backward order, with the
     * gradient with respect to each wanted site's value (the value a forward
     * hook at that site sees), laid out as that value is. Read-only; host
     * memory unless hook_on_device. hook_pattern cannot be asked for. */
    const uint8_t *want;
    ss_hook_fn hook;
    void *hook_ctx;
    int hook_on_device;
    /* Keep only each block's input from the forward pass and recompute the
     * rest of the block during the backward pass: memory O(n_layer·rows·d)
     * instead of O(n_layer·rows·(8d + 2·d_mlp)), for one more forward's
     * compute. The forward hooks run again for the recomputed block and
     * must give the same values. */
    int recompute;
    /* Weight gradients, accumulated (+=) into buffers in the backend's memory
     * from ss_grads_alloc; NULL: none are computed. */
    ss_gpt2_weights *wgrad;
} ss_grad_opts;

/* Runs the forward pass over packed tokens (fwd: its site hooks, which may
 * read or edit as in ss_forward; fwd->logits is ignored), the metric of
 * every sequence into metric_out[n_seq] (float64, may be NULL), and, when g
 * is non-NULL, the backward pass. */
ss_status ss_forward_backward(const ss_model *m, const ss_backend *be, const int32_t *tokens, const ss_packing *pk,
                              const ss_forward_opts *fwd, const ss_metric *metric, const ss_grad_opts *g,
                              double *metric_out);

/* The same in two halves, so that a pipeline stage can run the forward
 * passes of several batches before their backward passes. ss_fb_forward
 * runs the forward pass (and, on the last stage, the metric) and keeps what
 * the backward pass needs, with its own copy of tokens' packing; the
 * caller's hook contexts, metric_out and the buffers the backward hooks
 * write must stay valid until ss_fb_backward, which runs the rest (on a
 * pipeline: the metric to every stage, then the gradients) and frees the
 * pass, also on error. The stages of a pipeline must call both halves for
 * the same batches in the same order. ss_fb_free drops a pass unfinished. */
typedef struct ss_fb_pass ss_fb_pass;
/* The backward pass stops below the deepest wanted site (without weight
 * gradients): whether, with g, a pipeline stage gets a gradient from the
 * stage after it, which ss_model_pipe_release must know. 0 on the last
 * stage and without a pipeline. */
int ss_backward_gets_grad(const ss_model *m, const ss_grad_opts *g);
ss_status ss_fb_forward(const ss_model *m, const ss_backend *be, const int32_t *tokens, const ss_packing *pk,
                        const ss_forward_opts *fwd, const ss_metric *metric, const ss_grad_opts *g, double *metric_out,
                        ss_fb_pass **out);
ss_status ss_fb_backward(ss_fb_pass *ps);
void ss_fb_free(ss_fb_pass *ps);

/* Zeroed float32 buffers shaped as the model's weights, in be's memory (one
 * block; wte and lm_head share a buffer when the model ties them). */
ss_status ss_grads_alloc(const ss_model *m, const ss_backend *be, ss_gpt2_weights *g);
void ss_grads_free(const ss_backend *be, ss_gpt2_weights *g);

/* Forward mode (src/model/jvp.c): for one prompt of n tokens and each mask k
 * (a sub-model; its mode is ignored), out[t * n_masks + k] = the derivative,
 * at e = 0, of log p(targets[t]) at position t when every activation the mask
 * covers (its sites' units at its positions) is replaced by (1 + e) times
 * itself: sum over the covered units at positions <= t of activation x
 * gradient of log p(targets[t]), what a backward pass of each prefix gives
 * (trace's attribution), from one primal forward and one tangent pass per
 * mask. logp_out[t] (or NULL): log p(targets[t]). progress (or NULL) is
 * called after each mask with (k + 1, n_masks). */
struct ss_mask;
/* SS_OK where the pass can run (the backend has the forward-mode ops, the
 * model is whole in this process, every mask site is a per-token site); else
 * SS_ERR_UNSUPPORTED with a message saying why. */
ss_status ss_jvp_check(const ss_model *m, const ss_backend *be, const struct ss_mask *masks, int n_masks);
ss_status ss_jvp_logprob(const ss_model *m, const ss_backend *be, const int32_t *tokens, int64_t n,
                         const int32_t *targets, const struct ss_mask *masks, int n_masks, double *out,
                         double *logp_out, void (*progress)(void *ctx, int64_t done, int64_t total),
                         void *progress_ctx);

#ifdef __cplusplus
}
#endif
#endif
