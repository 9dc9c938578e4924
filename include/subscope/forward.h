/* The forward pass with hooks at named sites. */
#ifndef SUBSCOPE_FORWARD_H
#define SUBSCOPE_FORWARD_H

#include <stdint.h>
#include "subscope/backend.h"
#include "subscope/model.h"
#include "subscope/sites.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Sequences are packed: sequence s has len[s] tokens (>= 1) starting at row
 * start[s] of every per-token buffer; there is no padding, so no real
 * position can ever see another sequence or a pad. */
typedef struct ss_packing {
    int64_t n_seq, rows;
    const int64_t *start, *len;
    int64_t first; /* the caller's label for the batch (its first prompt's index), handed back to hooks */
} ss_packing;

/* A capture that outlives one pass, so that read-only hooks on a device
 * backend overlap the next batch: the sites of pass i are gathered on the
 * device into one of two buffers and start their copy to pinned host
 * memory as the pass ends; the hook sees them during pass i+1, once that
 * pass's work is queued and the device is busy with it, or at
 * ss_capture_flush. Hooks therefore run one batch late, so they must take
 * what they need of a batch from the ss_packing they are given (its
 * `first`, start, len), not from state the caller changes between batches.
 * On a host backend the hook runs inside the pass, as without a capture.
 * The model, backend and hook must outlive the batches handed to them. */
typedef struct ss_capture ss_capture;
ss_status ss_capture_open(ss_capture **out);
/* Hands the batch still in flight, if any, to its hook. */
ss_status ss_capture_flush(ss_capture *cap);
/* Waits for copies in flight, drops a batch not yet handed over and frees
 * the buffers (NULL: nothing). */
void ss_capture_close(ss_capture *cap);

/* Called at every requested site as soon as its value exists, before the
 * model consumes it; the hook may read or change data in place.
 * Per-token sites: data holds `rows` rows of site->width values, row r at
 * data + r*ld. hook_pattern: data holds, for each sequence s, [H, len, len]
 * at data + pattern_off[s] (ld = 0). */
typedef ss_status (*ss_hook_fn)(void *ctx, const ss_site *site, float *data, int64_t ld,
                                const ss_packing *pk, const int64_t *pattern_off);

typedef enum ss_logits_mode { SS_LOGITS_NONE, SS_LOGITS_ALL, SS_LOGITS_LAST } ss_logits_mode;

typedef struct ss_forward_opts {
    const uint8_t *want;       /* ss_sites_count() flags, NULL: no sites */
    ss_hook_fn hook;
    void *hook_ctx;
    ss_logits_mode logits;     /* ALL: [rows, V]; LAST: [n_seq, V] (each sequence's last token) */
    /* The hook only reads. On a device backend the sites are then gathered
     * into device memory as the pass goes (no synchronisation) and handed to
     * the hook, contiguous (ld = width), after the pass, from one copy into
     * pinned host memory. Otherwise each site makes a round trip through the
     * host so that the hook's edits reach the model. */
    int read_only;
    /* With read_only on a device backend: deliver through this capture, one
     * batch late (see ss_capture). NULL: before the pass returns. */
    ss_capture *capture;
    /* The hook takes the backend's own buffers (device pointers on a GPU) and
     * works on them only through the backend's ops; no copy is made. */
    int hook_on_device;
    /* Start at block start_layer from a given residual stream (host memory,
     * [rows, d_model]: the value of blocks.<start_layer>.hook_resid_pre of an
     * earlier run on the same tokens) instead of from the embeddings. Sites
     * before that block are not produced. 0: the whole model. */
    int start_layer;
    const float *start_resid;
    /* With start_resid: it holds the rows of one copy, [rows / start_copies,
     * d_model], and the batch is start_copies copies of them one after
     * another (ablate's K masked copies of a batch). The rows go to a device
     * once and are copied there. 0 or 1: start_resid holds every row. */
    int64_t start_copies;
    /* With logits requested: called (on the pipeline's last stage) with the
     * logits where the backend holds them, [n, V] rows as `logits` says,
     * before they are released; they are then not returned. The hook works
     * on them through the backend's ops (logit_scores, gather), so that only
     * what it keeps leaves a device. */
    ss_status (*logits_hook)(void *ctx, const float *logits, int64_t n, int64_t V);
    void *logits_ctx;
    /* Continue the positions in this key/value cache (greedy generation): one
     * sequence whose rows are positions len.. of the cache, attending to the
     * cached keys and values too; their keys and values are appended. Without
     * sites, a tape, start_layer or pipeline stages. NULL: positions from 0. */
    struct ss_kv_cache *kv;
} ss_forward_opts;

/* Each layer's keys (rotated, in the Llama family) and values of the
 * positions run so far, in backend memory: a forward pass with opts.kv then
 * runs only the new rows through the blocks. */
typedef struct ss_kv_cache ss_kv_cache;
/* Room for n_ctx (1..n_positions) positions, the weights placed on be.
 * SS_ERR_UNSUPPORTED when the backend has no attention_kv (both the CPU and
 * the CUDA backends have it). The elements are fp32, or bf16/fp16 for a
 * model placed in that dtype on a backend with copy_rows16 (CUDA). */
ss_status ss_kv_cache_open(const ss_model *m, const ss_backend *be, int64_t n_ctx, ss_kv_cache **out);
/* The positions cached so far. */
int64_t ss_kv_cache_len(const ss_kv_cache *kv);
/* The cache's element type: SS_WDTYPE_F32, _F16 or _BF16. */
int ss_kv_cache_dtype(const ss_kv_cache *kv);
void ss_kv_cache_close(ss_kv_cache *kv);

/* Runs the model over packed tokens. *logits (if requested) is malloc'd.
 * Token ids and lengths are validated (id < vocab, len <= n_positions). */
ss_status ss_forward(const ss_model *m, const ss_backend *be, const int32_t *tokens, const ss_packing *pk,
                     const ss_forward_opts *opts, float **logits);

#ifdef __cplusplus
}
#endif
#endif
