/* Jobs: whole runs that read a model and prompts and write an HDF5 file. */
#ifndef SUBSCOPE_JOBS_H
#define SUBSCOPE_JOBS_H

#include <stdint.h>
#include <stdio.h>
#include "subscope/error.h"
#include "subscope/forward.h"
#include "subscope/masks.h"
#include "subscope/model.h"
#include "subscope/prompts.h"

struct ss_h5;

#ifdef __cplusplus
extern "C" {
#endif

typedef void (*ss_progress_fn)(void *ctx, int64_t done, int64_t total);

/* What every job that runs the model over a prompt file needs. */
typedef struct ss_run_opts {
    const char *model_dir;
    const char *input;          /* prompt file (JSONL or text) */
    int64_t batch;              /* prompts per forward call (0: 16) */
    int64_t max_len;            /* 0: n_positions */
    int truncate;               /* cut longer prompts instead of failing */
    const char *device;         /* backend spec: "cpu", "cuda[:N]", "auto" (NULL = auto) */
    struct ss_backend *backend; /* if set, used instead of `device` (the caller keeps it) */
    int tf32;                   /* allow TF32 for float32 products on GPUs */
    int wdtype;                 /* SS_WDTYPE_F32 or SS_WDTYPE_BF16 matrix products */
    /* Pipeline parallelism: the model's blocks split over this many ranks
     * (all of the communicator's), each loading only its own (0 or 1: none).
     * Honoured by every job that runs the model. */
    int pipeline;
    const char *pipeline_blocks; /* each stage's block count, "9,3" or "even" (NULL: balanced, ss_pipeline_split) */
    int no_logits;              /* the job never scores logits: its pipeline's last stage has no head to run */
    int64_t max_memory;         /* > 0: refuse to hold more bytes of weights than this per rank */
    /* Set by jobs that run several copies of a pipeline side by side (the
     * ranks a multiple of `pipeline`; ss_model_open_stage). */
    int pipeline_replicas;
    /* Leave the prompts untokenized (T = 0, no packing buffer): the job calls
     * ss_run_tokenize for the prompts it will run, so that data-parallel
     * ranks do not each tokenize the whole input. */
    int lazy_tokenize;
} ss_run_opts;

/* The backend, model and tokenized prompts of a run, and one batch's packing. */
typedef struct ss_run {
    struct ss_backend *be;
    int owns_be;
    ss_model *m;
    ss_prompts *p;
    int64_t max_len, T, B;      /* length limit, longest prompt, batch size */
    int32_t *packed;
    int64_t *start, *len;
    double t_open, t_backend, t_model, t_prompts; /* ss_run_open's start and the seconds of its parts */
    char input_sha[65];         /* with several ranks: the prompt file's SHA-256 (ss_run_same_files); else "" */
    int64_t input_size;
} ss_run;

/* Opens the backend, loads the model and reads and tokenizes the prompts;
 * the weights are not placed yet, so a job can check its other inputs first.
 * With SUBSCOPE_TIMING set, ss_run_place prints how long each part and the
 * placing took (the benchmarks' fixed cost, taken apart). */
ss_status ss_run_open(const ss_run_opts *o, ss_run *r);
/* 1 if this process computes site s: always, except on a pipeline stage
 * that does not run its block (the embeddings belong to the first stage,
 * the final norm to the last). */
int ss_model_computes_site(const ss_model *m, const ss_site *s);
/* The pipeline stage that computes site s (0 without a pipeline). */
int ss_model_stage_of(const ss_model *m, const ss_site *s);
/* The model for a job: whole, or with o->pipeline > 1 this rank's stage of
 * it (ss_model_load_layers + ss_model_set_pipeline), the blocks split as
 * ss_pipeline_split does with o->pipeline_blocks, o->no_logits and
 * o->max_memory. The process's communicator must have exactly `pipeline`
 * ranks, or, with o->pipeline_replicas, a multiple of it: ranks q*P ..
 * q*P+P-1 are then copy q of the pipeline (a group communicator), which the
 * job runs on its own share of the prompts. max_memory > 0 refuses more
 * bytes of weights than that. Uses o's model_dir and the fields named. */
ss_status ss_model_open_stage(const ss_run_opts *o, ss_model **out);
/* The share of the prompts this rank runs: part `*part` of `*parts`
 * (ss_comm_shard): the rank among all ranks, or, on a pipeline stage, its
 * pipeline's copy among the copies. */
void ss_model_data_part(const ss_model *m, const struct ss_comm *world, int *part, int *parts);
/* The ranks that split the prompts between them and run the same blocks:
 * the world without a pipeline, else this stage in every copy of the
 * pipeline, in copy order (a group, *owned set: free it with ss_comm_free). */
ss_status ss_model_data_comm(const ss_model *m, struct ss_comm *world, struct ss_comm **out, int *owned);
/* The ranks of c each hold elements [lo, hi) of n_arr arrays of N elements
 * of elem bytes (their share of the prompts: ss_comm_shard by batches of B,
 * in rank order); rank 0 of c receives every rank's share, in place. */
ss_status ss_gather_shares(struct ss_comm *c, void *const *arr, int n_arr, size_t elem, int64_t N, int64_t B, int64_t lo,
                           int64_t hi);
/* Tokenizes (and checks) prompts [first, end) of a run opened with
 * lazy_tokenize; T grows to their longest and the packing buffer with it. */
ss_status ss_run_tokenize(ss_run *r, const ss_run_opts *o, int64_t first, int64_t end);
/* With --pipeline: every stage's blocks and busy/waiting seconds go to rank
 * root, which stores them as root attributes of h (when non-NULL:
 * pipeline_first_block, pipeline_busy_seconds, pipeline_wait_seconds,
 * pipeline_bubble_fraction) and, with print, reports them on stderr.
 * Every rank calls it; a no-op without a pipeline. */
ss_status ss_pipeline_report(const ss_model *m, int root, struct ss_h5 *h, int print);
/* Places the weights on the run's backend (ss_model_place). */
ss_status ss_run_place(ss_run *r, const ss_run_opts *o);
/* Packs prompts [b0, b0+nb) into the batch buffers and describes them in pk. */
void ss_run_pack(ss_run *r, int64_t b0, int64_t nb, ss_packing *pk);
void ss_run_close(ss_run *r);
/* SUBSCOPE_TIMING is set and not "0": jobs say on stderr where their time
 * went (the benchmarks read it). */
int ss_timing_on(void);
/* forward's and attribute's line: the first batch (from t_start to t_first)
 * and the later ones (to now), with their prompts; rank named when size > 1. */
void ss_timing_batches(const char *job, int rank, int size, double t_start, double t_first, int64_t first_prompts,
                       int64_t later_prompts);

/* Reads and tokenizes a prompt file paired line by line with the run's
 * prompts: the same count, and each pair the same number of tokens. With
 * several ranks, every rank must read the same file (ss_run_same_files). */
ss_status ss_run_read_paired(const ss_run *r, const char *path, int truncate, ss_prompts **out);
/* Several ranks must read the same files: a rank that reads another copy (a
 * node's stale one) would mix other prompts into the result. Compares every
 * rank's SHA-256 of n files (sha[i]: 64 hex digits) with rank 0's and names
 * the first rank and file that differ (what[i] says what file i is). Every
 * rank calls it; a no-op in one process. ss_run_open checks the prompt file. */
ss_status ss_run_same_files(struct ss_comm *comm, int n, const char *const *sha, const char *const *what);

/* The first token id of text as the tokenizer encodes it (-1 when it encodes to no token):
 * what an answer is scored by (ss_prompt_answer_ids; trace's --answer). */
ss_status ss_answer_token_id(const ss_tokenizer *tok, const char *text, int32_t *id);
/* The first token ids of a prompt's "answer" and "wrong" (logit differences
 * are taken on them; wrong may be NULL where only the answer is needed);
 * errors name the file and line. */
ss_status ss_prompt_answer_ids(const ss_tokenizer *tok, const ss_prompts *p, const ss_prompt *it, int32_t *answer,
                               int32_t *wrong);
/* A note on out (one line, none when there is nothing to say) when some prompt's "answer"
 * (or, with_wrong, "wrong") encodes to more than one token: metric (logitdiff, logprob)
 * scores only its first, which may be a fragment such as " con" of " congratulations".
 * It counts them and names the first. Encoding errors are left to ss_prompt_answer_ids. */
void ss_note_multi_token_answers(const ss_tokenizer *tok, const ss_prompts *p, int with_wrong, const char *cmd,
                                 const char *metric, FILE *out);
/* Each prompt's mean next-token cross-entropy over its real positions
 * (log-partition minus the next token's logit per row), scored where the
 * logits are (the backend's gather and logit_scores), so that two numbers
 * per row leave a device instead of the logits; NaN for a one-token prompt
 * (forward --loss, patch's loss metric). Set tok (the batch's packed
 * tokens) and pk before each pass; ss_loss_score is a forward logits hook
 * (ctx: the scorer) and may be called directly on logits the backend holds. */
typedef struct ss_loss_scorer {
    const struct ss_backend *be; /* where the logits are */
    int64_t cap;              /* rows */
    const int32_t *tok;
    const ss_packing *pk;
    int64_t *idx, *d_idx;     /* row r's next-token logit: r*V + tok[r+1] (column 0 for a prompt's last row) */
    float *g, *d_g;
    double *lz, *d_lz;
    double *loss;             /* [n_seq] of the last batch scored */
    int scored;               /* set by each scoring (a pipeline's last stage scores; clear it before a pass) */
} ss_loss_scorer;
ss_status ss_loss_open(ss_loss_scorer *sc, const struct ss_backend *be, int64_t cap_rows, int64_t cap_seq);
void ss_loss_close(ss_loss_scorer *sc);
ss_status ss_loss_score(void *sc, const float *logits, int64_t n, int64_t V);
/* log(sum_v exp(x_v)) of each of rows x V logits (float64). */
void ss_log_partition(const float *lg, int64_t rows, int64_t V, double *lz);

typedef struct ss_forward_job {
    ss_run_opts run;
    const char *out;          /* HDF5 path; written as <out>.tmp.<host>.<pid> (beside the file a link names), renamed when complete */
    const char *sites;        /* comma-separated globs, NULL or "": none */
    int no_logits;
    int loss;                 /* also store /loss [N]: each prompt's mean next-token cross-entropy */
    int compress;             /* deflate level 0..9 for float datasets (0: none) */
    const char *command_line; /* recorded in the file */
    ss_progress_fn progress;
    void *progress_ctx;
} ss_forward_job;

ss_status ss_job_forward(const ss_forward_job *job);

typedef struct ss_h5 ss_h5;
/* Root attributes every output file carries: format and subscope versions,
 * git commit, command line, model path and config, dtype, device, time. */
struct ss_backend;
ss_status ss_write_provenance(ss_h5 *h, const ss_model *m, const char *command_line, const struct ss_backend *be);
/* The part of it that needs no model: format, versions, command line, time. */
ss_status ss_write_provenance_base(ss_h5 *h, const char *command_line);
/* The model's config as the files' model_config attribute holds it: the
 * directory's config.json, or the equivalent one of a GGUF file (malloc'd). */
ss_status ss_model_config_text(const ss_model *m, char **out);
/* A forward hook (ss_hook_fn) that copies each per-token site with rows[id]
 * non-NULL into rows[id] as packed [rows, width] (ctx: ss_site_rows). */
typedef struct ss_site_rows {
    float **rows; /* by site id */
} ss_site_rows;
ss_status ss_keep_rows_hook(void *ctx, const ss_site *s, float *data, int64_t ld, const ss_packing *pk,
                            const int64_t *pattern_off);

/* Per-unit means (and, if std is non-NULL, standard deviations from the
 * covariance diagonal) of m's sites with need[id] set, from a collect file,
 * into mean[id] / std[id] (malloc'd). require: 0 skips sites the file lacks,
 * 1 requires their means, 2 their means and covariances. A file collected
 * from a model with another config gets a warning on stderr: its widths
 * may still fit, but its statistics describe another model. */
ss_status ss_read_unit_stats(const char *path, const ss_model *m, const uint8_t *need, int require, double **mean,
                             double **std);

/* /tokens [N, T] (-1 past each prompt's end) and /lengths [N] of a prompt file. */
ss_status ss_write_tokens(ss_h5 *h, const ss_prompts *p, int64_t T);

typedef struct ss_collect_job {
    ss_run_opts run;
    const char *out;
    const char *sites;         /* globs; sites without a per-token vector are refused */
    const char *stats;         /* "mean,cov,corr,pca:K" (NULL: "mean,cov") */
    const char *positions;     /* "all" (NULL), "last", or "FROM:TO" (half-open, either side optional) */
    int skip_bos;              /* leave out position 0 */
    const char *group_by;      /* "label": statistics per value of the JSONL "label" too */
    int64_t checkpoint_every;  /* prompts between checkpoints (0: none) */
    int resume;                /* continue from OUT's checkpoint if there is one */
    int compress;              /* deflate level 0..9 for the output (checkpoints are never compressed) */
    const char *command_line;
    ss_progress_fn progress;
    void *progress_ctx;
    void *results_progress_ctx; /* progress's ctx for the results, site by site (done, total: sites) */
} ss_collect_job;

ss_status ss_job_collect(const ss_collect_job *job);

typedef struct ss_ablate_job {
    ss_run_opts run;
    const char *out;
    const char *const *mask_specs; /* --mask SPEC values */
    int n_mask_specs;
    const char *masks_file;       /* --masks FILE (JSONL) */
    const char *metrics;          /* "loss,acc,keyword,logitdiff,kl" (NULL: "loss,acc,kl") */
    const char *keywords;         /* file, one word per line, for the keyword metric */
    const char *stats;            /* collect file with mean and cov for mean / relative-noise masks */
    const char *patch_from;       /* patch masks: prompts paired line by line with run.input (same token counts) */
    int mask_batch;               /* masks per forward, at most (0: about 4096 rows within 1 GiB) */
    int controls;                 /* control masks per mask (ss_ablate_control); 0: none */
    const char *command_line;
    FILE *table;                  /* where to print the summary table and notes (NULL: nowhere) */
    ss_progress_fn progress;
    void *progress_ctx;
} ss_ablate_job;

ss_status ss_job_ablate(const ss_ablate_job *job);

/* The units of a control: n distinct units of [0, width), uniformly without
 * replacement, written to out[] ascending. The draw is a partial
 * Fisher-Yates shuffle of 0..width-1: with
 *   s   = mix(mix(mix(seed) ^ (k + 1)) ^ site_id)
 *   r_i = mix(s ^ i),   j_i = i + r_i mod (width - i)
 * positions i and j_i are swapped for i = 0 .. n-1 and the first n entries
 * kept (mix as in ss_mask_noise; the modulo bias is below width / 2^64).
 * SS_ERR_ARG when n is not in [1, width - 1]: a control of a whole site
 * would be the mask itself. */
ss_status ss_ablate_control_units(uint64_t seed, int k, int site_id, int64_t width, int64_t n, int64_t *out);

/* Control k (0-based) of mask m: the same sites, positions, mode, factor,
 * sigma, relative and seed, and at each site as many units as m has there,
 * drawn by ss_ablate_control_units from m's seed, k and the site; named
 * "<m.name>~ctrl<k>". SS_ERR_ARG, naming the mask and the site, when m
 * covers all units of one of its sites (no control exists) or the name
 * would pass 63 bytes. out is freed with ss_mask_free. */
ss_status ss_ablate_control(const ss_config *cfg, const ss_mask *m, int k, ss_mask *out);

/* The identity of a mask's units, as ablate records it (attribute
 * units_sha256): SHA-256 (hex) of the text "<site>:<units>;" for each
 * target in site order, <units> the comma-separated unit indices (or "all"),
 * followed by "pos:<positions>" when the mask is restricted to positions.
 * Masks that differ only in mode / intensity / seed share it. */
void ss_mask_units_sha256(const ss_config *cfg, const ss_mask *m, char out[65]);

typedef struct ss_patch_job {
    ss_run_opts run;              /* run.input: the clean prompts */
    const char *corrupt;          /* the corrupt prompts, paired line by line, same token counts */
    const char *out;
    const char *sites;
    const char *per;              /* "site" (NULL), "position", "head" or "neuron" */
    const char *metric;           /* "logitdiff" (NULL; answer/wrong of the clean line) or "loss" (on the clean tokens) */
    int denoise;                  /* patch the corrupt run's pieces into the clean run instead */
    int64_t batch;                /* patched copies of a prompt per forward pass, each with its own piece
                                   * (0: about 2048 rows a pass, within 512 MB of the pass's buffers) */
    const char *command_line;
    FILE *table;
    ss_progress_fn progress;
    void *progress_ctx;
} ss_patch_job;


ss_status ss_job_patch(const ss_patch_job *job);

typedef struct ss_attribute_job {
    ss_run_opts run;
    const char *out;
    const char *sites;            /* globs; hook_pattern is left out of globs and refused by name */
    const char *metric;           /* "loss" (NULL), "logitdiff" or "logprob" */
    const char *method;           /* "gradxact" (NULL), "grad", "atp" or "ig[:STEPS]" (32 steps) */
    const char *corrupt;          /* atp: prompts paired line by line with run.input, same token counts */
    const char *reduce;           /* "none" (NULL), "positions" or "prompts": what /attr sums over */
    const char *stats;            /* ig: a collect file whose means are the baseline (NULL: zero) */
    int recompute;                /* recompute each block in the backward pass instead of keeping it */
    /* With --pipeline P: batches (ig: steps of a batch) whose forward passes
     * a stage runs before their backward passes, each keeping its
     * activations (0: 2P). */
    int micro_batches;
    int top;                      /* units per site in the table (0: 10) */
    int compress;                 /* deflate level 0..9 for the output (0: none) */
    const char *command_line;
    FILE *table;
    ss_progress_fn progress;
    void *progress_ctx;
} ss_attribute_job;

ss_status ss_job_attribute(const ss_attribute_job *job);

typedef struct ss_trace_job {
    const char *model_dir;
    const char *prompt;           /* the text to trace */
    const char *submodels;        /* masks JSONL (as `discover` exports and `ablate --masks` reads) */
    const char *answer;           /* if set, the tracked prediction at the last position (its first token) */
    const char *stats;            /* collect file: means/stds for mean masks and standardised activity */
    const char *out;              /* HDF5 (NULL: table only) */
    const char *device;
    int tf32, wdtype;
    int pipeline;                 /* stages (ss_run_opts.pipeline); the last writes and prints */
    const char *pipeline_blocks;  /* as ss_run_opts.pipeline_blocks */
    int64_t max_memory;
    const char *command_line;
    FILE *table;
    /* How the attribution is computed: SS_TRACE_PASS_AUTO (forward mode where it is cheaper and possible),
     * _FORWARD (one tangent pass per sub-model; refused where it cannot run) or _PREFIXES (a backward
     * pass of every prefix). */
    int attribution_pass;
    ss_progress_fn progress;      /* after each batch of prefixes, or each sub-model's tangent pass, of the
                                     attribution (done, total: positions) */
    void *progress_ctx;
} ss_trace_job;

enum { SS_TRACE_PASS_AUTO = 0, SS_TRACE_PASS_FORWARD = 1, SS_TRACE_PASS_PREFIXES = 2 };
/* "auto", "forward" or "prefixes" (--attribution-pass). */
ss_status ss_trace_pass_parse(const char *s, int *out);

ss_status ss_job_trace(const ss_trace_job *job);

/* Prints a readable summary of a subscope HDF5 file to out: provenance,
 * every dataset with its shape and axis names, and for forward files the
 * model's top next-token guess after each of the first max_prompts prompts
 * (0: the default, 8) and, for MLP neuron sites, the most active neurons.
 * A max_prompts above 0 for a file that is not a forward file is refused
 * (SS_ERR_ARG, naming the file's kind) before anything is printed. */
ss_status ss_job_show(const char *path, int64_t max_prompts, FILE *out);
/* The same, with progress (may be NULL) called as an attribute file's rows are read one prompt
 * (or position) at a time, every dataset's together: (ctx, rows read, rows in all), at most
 * five times a second and not in the first half second (a small file says nothing), and once
 * at the end where it said anything. */
ss_status ss_job_show_progress(const char *path, int64_t max_prompts, FILE *out,
                               void (*progress)(void *ctx, int64_t done, int64_t total), void *ctx);

#ifdef __cplusplus
}
#endif
#endif
