/* `forward`: run prompts through the model and store tokens, logits and the
 * requested sites, batch by batch, so memory holds one batch at a time.
 *
 * With several ranks (docs/DISTRIBUTED.md) each rank runs a contiguous block
 * of whole batches (the batches of one process, so every prompt's values are
 * computed with the same batch-mates) and rank 0 alone writes the one output
 * file: it runs its own k-th batch, then takes the k-th batch of every other
 * rank in rank order, as (dataset, hyperslab, bytes) messages that go to the
 * same writer queue as its own. The ranks thus move in step, one batch apart
 * at most, which bounds both the memory held for rank 0 and any rank's wait.
 * With --pipeline P the same holds for copies of the pipeline (P ranks each);
 * the writer is the first copy's last stage, and the other ranks' blocks
 * reach it without blocking (held, then sent after each batch). On a GPU
 * every rank's sites reach its hook one batch late, copied out while the
 * next batch computes (ss_capture); a rank that sends to the writer ends
 * each batch accordingly one pass late. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "subscope/dist.h"
#include "subscope/forward.h"
#include "subscope/gguf_model.h"
#include "subscope/h5out.h"
#include "subscope/h5queue.h"
#include "subscope/jobs.h"
#include "subscope/prompts.h"
#include "subscope/util.h"
#include "subscope/version.h"

ss_status ss_write_provenance_base(ss_h5 *h, const char *command_line) {
    char when[64];
    time_t now = time(NULL);
    struct tm tmv;
    gmtime_r(&now, &tmv);
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tmv);
    SS_TRY(ss_h5_attr_str(h, "/", "format", "subscope"));
    SS_TRY(ss_h5_attr_str(h, "/", "format_version", SS_FORMAT_VERSION));
    SS_TRY(ss_h5_attr_str(h, "/", "subscope_version", ss_version()));
    SS_TRY(ss_h5_attr_str(h, "/", "git_commit", ss_git_commit()));
    SS_TRY(ss_h5_attr_str(h, "/", "command_line", command_line ? command_line : ""));
    return ss_h5_attr_str(h, "/", "created", when);
}

ss_status ss_write_tokens(ss_h5 *h, const ss_prompts *p, int64_t T) {
    const int64_t N = p->n;
    int32_t *tok = ss_malloc((size_t)(N * T) * sizeof(int32_t) + 1, "token table");
    int32_t *lens = ss_malloc((size_t)N * sizeof(int32_t) + 1, "lengths");
    ss_status st = SS_ERR_NOMEM;
    if (tok && lens) {
        for (int64_t i = 0; i < N; i++) {
            lens[i] = (int32_t)p->items[i].n_tokens;
            for (int64_t t = 0; t < T; t++) tok[i * T + t] = t < lens[i] ? p->items[i].tokens[t] : -1;
        }
        int64_t d2[2] = {N, T};
        const char *n2[2] = {"prompt", "position"};
        st = ss_h5_write_array(h, "/tokens", SS_H5_I32, 2, d2, n2, tok);
        if (!st) st = ss_h5_write_array(h, "/lengths", SS_H5_I32, 1, d2, n2, lens);
    }
    free(tok);
    free(lens);
    return st;
}

ss_status ss_model_config_text(const ss_model *m, char **out) {
    *out = NULL;
    if (ss_model_path_is_gguf(m->dir)) return ss_gguf_config_json(&m->cfg, out);
    char *cfg_path = ss_path_join(m->dir, "config.json");
    size_t len;
    if (!cfg_path) return SS_ERR_NOMEM;
    ss_status st = ss_file_read(cfg_path, out, &len);
    free(cfg_path);
    return st;
}

ss_status ss_write_provenance(ss_h5 *h, const ss_model *m, const char *command_line, const ss_backend *be) {
    SS_TRY(ss_write_provenance_base(h, command_line));
    char device[320];
    snprintf(device, sizeof device, "%s (%s)", be->name, be->description);
    SS_TRY(ss_h5_attr_str(h, "/", "device", device));
    SS_TRY(ss_h5_attr_i64(h, "/", "tf32", be->tf32));
    const ss_gpt2_weights *w = ss_model_weights(m, be);
    SS_TRY(ss_h5_attr_str(h, "/", "dtype", w && w->wdtype == SS_WDTYPE_BF16  ? "bfloat16 products, float32 activations"
                                           : w && w->wdtype == SS_WDTYPE_F16 ? "float16 products, float32 activations"
                                                                             : "float32"));
    SS_TRY(ss_h5_attr_str(h, "/", "model_path", m->dir));
    SS_TRY(ss_h5_attr_str(h, "/", "model_arch", m->cfg.arch));
    SS_TRY(ss_h5_attr_str(h, "/", "model_weight_dtypes", m->weight_dtypes));
    /* a pipeline stage holds only its blocks: the file describes the whole model */
    SS_TRY(ss_h5_attr_i64(h, "/", "model_n_params", m->pipe ? ss_config_n_params(&m->cfg) : m->n_params));
    if (ss_model_path_is_gguf(m->dir)) {
        /* A Llama 3.x GGUF file's rotary divisors, which no config key
         * holds, are recorded beside the config. */
        const ss_tensor_info *rf = m->weights ? ss_weights_find(m->weights, SS_GGUF_ROPE_FREQS) : NULL;
        if (rf && rf->dtype == SS_DTYPE_F32) {
            size_t n = rf->nbytes / sizeof(float);
            double *v = ss_malloc(n * sizeof(double) + 1, "rope_freqs");
            if (!v) return SS_ERR_NOMEM;
            for (size_t i = 0; i < n; i++) v[i] = ((const float *)rf->data)[i];
            ss_status st = ss_h5_attr_f64_array(h, "/", "model_rope_freqs", v, n);
            free(v);
            SS_TRY(st);
        }
    }
    char *cfg = NULL;
    SS_TRY(ss_model_config_text(m, &cfg));
    ss_status st = ss_h5_attr_str(h, "/", "model_config", cfg);
    free(cfg);
    return st;
}

typedef struct {
    ss_h5_queue *q;         /* the writer thread: HDF5 runs beside the compute */
    const ss_model *m;
    const ss_prompts *p;    /* the prompts' lengths: other ranks send packed rows (see packing) */
    int64_t T;              /* padded length */
    ss_h5_dset **acts;      /* by site id (NULL where not requested) */
    ss_h5_dset *logits;
    ss_h5_dset *loss;       /* --loss: [N] */
    int n_sites;
    ss_comm *comm;
    int rank, writer;       /* the writer (rank 0; a pipeline's last stage) has the file */
    int piped;              /* pipeline stages: blocks wait here until the stage's batch is done */
    struct outgoing *head, *tail; /* a stage's blocks for the writer, oldest first */
    int64_t batch;          /* this stage's batch number */
} fwd_job_ctx;

/* A block a pipeline stage sends the writer: held during its batch, then in
 * flight (nonblocking) while the stage goes on; the stage waits for it only
 * a pipeline's depth of batches later. */
struct outgoing {
    int64_t hdr[12];
    void *buf;              /* NULL: the header alone (the end of a batch) */
    int64_t batch;
    int sent;
    ss_comm_req *rh, *rb;
    struct outgoing *next;
};

/* Messages from a rank to rank 0: a header, then (unless it ends the batch) the block. */
enum { TAG_HEADER = 1, TAG_BLOCK = 2 };
enum { DS_LOSS = -3, DS_END = -2, DS_LOGITS = -1 };
enum { H_DS, H_NDIM, H_START, H_COUNT = H_START + 4, H_BYTES = H_COUNT + 4, H_LEN };

/* The dataset a block number names (NULL: none such in this job). */
static ss_h5_dset *dset_of(const fwd_job_ctx *c, int64_t ds) {
    return ds == DS_LOGITS ? c->logits : ds == DS_LOSS ? c->loss : ds >= 0 && ds < c->n_sites ? c->acts[ds] : NULL;
}

/* Writes buf (malloc'd, consumed) to hyperslab [start, start+count) of
 * dataset ds: queued on rank 0, sent to rank 0 elsewhere. */
static ss_status send_block(fwd_job_ctx *c, const int64_t *hdr, void *buf) {
    ss_status st = ss_comm_send(c->comm, c->writer, TAG_HEADER, hdr, H_LEN * sizeof(int64_t));
    if (!st) st = ss_comm_send(c->comm, c->writer, TAG_BLOCK, buf, (size_t)hdr[H_BYTES]);
    free(buf);
    return st;
}

static ss_status hold(fwd_job_ctx *c, const int64_t *hdr, void *buf) {
    struct outgoing *o = ss_calloc(1, sizeof *o, "block for the writer");
    if (!o) {
        free(buf);
        return SS_ERR_NOMEM;
    }
    memcpy(o->hdr, hdr, H_LEN * sizeof(int64_t));
    o->buf = buf;
    o->batch = c->batch;
    if (c->tail) c->tail->next = o;
    else c->head = o;
    c->tail = o;
    return SS_OK;
}

/* Waits for (and frees) the sends of batches up to `upto`; all with upto < 0. */
static ss_status retire(fwd_job_ctx *c, int64_t upto) {
    ss_status st = SS_OK;
    while (c->head && c->head->sent && (upto < 0 || c->head->batch <= upto)) {
        struct outgoing *o = c->head;
        ss_status a = ss_comm_wait(c->comm, o->rh), b = ss_comm_wait(c->comm, o->rb);
        if (!st) st = a ? a : b;
        c->head = o->next;
        if (!c->head) c->tail = NULL;
        free(o->buf);
        free(o);
    }
    return st;
}

static void drop_outgoing(fwd_job_ctx *c) {
    while (c->head) { /* after an error: the job is stopping, requests are abandoned to the abort */
        struct outgoing *o = c->head;
        c->head = o->next;
        free(o->buf);
        free(o);
    }
    c->tail = NULL;
}

/* The end of this rank's batch (on a device, called one pass late: see
 * `deferred`). A pipeline stage starts sending its held
 * blocks and the end mark, and waits only for those of the batch one
 * pipeline's depth back: the writer takes a batch's blocks after its own
 * part of that batch, and the stage goes on meanwhile. */
static ss_status end_batch(fwd_job_ctx *c) {
    int64_t hdr[H_LEN] = {DS_END};
    if (!c->piped) return ss_comm_send(c->comm, c->writer, TAG_HEADER, hdr, sizeof hdr);
    SS_TRY(hold(c, hdr, NULL));
    for (struct outgoing *o = c->head; o; o = o->next) {
        if (o->sent) continue;
        o->sent = 1;
        SS_TRY(ss_comm_isend(c->comm, c->writer, TAG_HEADER, o->hdr, H_LEN * sizeof(int64_t), &o->rh));
        if (o->buf) SS_TRY(ss_comm_isend(c->comm, c->writer, TAG_BLOCK, o->buf, (size_t)o->hdr[H_BYTES], &o->rb));
    }
    const int64_t depth = c->m->n_stages; /* how far a stage can run ahead of the writer */
    c->batch++;
    return retire(c, c->batch - 1 - depth);
}

/* How dataset ds comes to the writer: each prompt's own, as packed rows
 * ([B, T, ...]: the logits and the per-token sites, [len, ...] a prompt) or
 * squares ([B, H, T, T]: the patterns, [H, len, len] a prompt, as the forward
 * holds them), their padding the dataset's fill value, NaN (a NaN-padded copy
 * of the batch would only hold memory); or whole (the losses). */
enum { WHOLE, ROWS, SQUARES };
static int packing(const fwd_job_ctx *c, int64_t ds) {
    if (ds == DS_LOGITS) return ROWS;
    if (ds < 0 || ds >= c->n_sites) return WHOLE;
    ss_site s;
    ss_site_get(&c->m->cfg, (int)ds, &s);
    return s.per_token ? ROWS : SQUARES;
}

/* Queues buf (consumed) on the writer as packing(ds) says: lens, the batch's
 * prompts' lengths, where packed. */
static ss_status queue(fwd_job_ctx *c, int64_t ds, int nd, const int64_t *start, const int64_t *count, void *buf,
                       size_t bytes, const int64_t *lens) {
    const int k = packing(c, ds);
    if (k == SQUARES) return ss_h5_queue_write_squares(c->q, dset_of(c, ds), nd, start, count, lens, buf, bytes);
    return ss_h5_queue_write_rows(c->q, dset_of(c, ds), nd, start, count, k == ROWS ? lens : NULL, buf, bytes);
}

/* Writes buf (malloc'd, consumed) to hyperslab [start, start+count) of
 * dataset ds, or where packed (see packing), the prompts' rows or squares
 * (lens, from the batch's packing): queued on the writer, sent to it
 * elsewhere. A pipeline stage holds its blocks until its part of the batch is
 * done: sending them during the pass would wait for the writer, which waits
 * for this stage's residual stream. */
static ss_status emit(fwd_job_ctx *c, int64_t ds, int nd, const int64_t *start, const int64_t *count, void *buf,
                      size_t bytes, const int64_t *lens) {
    if (c->rank == c->writer) return queue(c, ds, nd, start, count, buf, bytes, lens);
    int64_t hdr[H_LEN] = {ds, nd};
    for (int i = 0; i < nd; i++) hdr[H_START + i] = start[i], hdr[H_COUNT + i] = count[i];
    hdr[H_BYTES] = (int64_t)bytes;
    if (!c->piped) return send_block(c, hdr, buf);
    return hold(c, hdr, buf);
}

/* The writer: rank r's blocks of prompts [b0, b0+nb), checked, into the writer queue. */
static ss_status receive_batch(fwd_job_ctx *c, int r, int64_t b0, int64_t nb) {
    for (;;) {
        int64_t hdr[H_LEN];
        SS_TRY(ss_comm_recv(c->comm, r, TAG_HEADER, hdr, sizeof hdr));
        if (hdr[H_DS] == DS_END) return SS_OK;
        int64_t ds = hdr[H_DS], nd = hdr[H_NDIM];
        int known = dset_of(c, ds) != NULL;
        /* fewer axes would be queued with a zero count, and write nothing */
        if (known && nd != ss_h5_dset_ndim(dset_of(c, ds)))
            return ss_errorf(SS_ERR_INTERNAL, "rank %d (host %s) sent a block of %lld axes for %s, which has %d", r,
                             ss_comm_host(c->comm, r), (long long)nd, ss_h5_dset_path(dset_of(c, ds)),
                             ss_h5_dset_ndim(dset_of(c, ds)));
        const int k = known ? packing(c, ds) : WHOLE;
        size_t bytes = sizeof(float);
        int64_t *lens = NULL; /* packed rows or squares: each prompt's own (see emit) */
        if (k != WHOLE && nd >= (k == SQUARES ? 3 : 2) && nd <= 4 && hdr[H_START] == b0 && hdr[H_COUNT] == nb) {
            if (!(lens = ss_malloc((size_t)nb * sizeof(int64_t) + 1, "prompt lengths"))) return SS_ERR_NOMEM;
            size_t items = 0; /* rows, or squares' entries */
            for (int64_t i = 0; i < nb; i++) {
                lens[i] = c->p->items[b0 + i].n_tokens;
                items += (size_t)lens[i] * (k == SQUARES ? (size_t)lens[i] : 1);
            }
            if (!ss_mul_ok(bytes, items, &bytes)) known = 0;
        }
        if (k != WHOLE && !lens) known = 0;
        /* the axes that the lengths leave whole */
        const int64_t lo = !lens ? 0 : k == SQUARES ? 1 : 2, hi = lens && k == SQUARES ? nd - 2 : nd;
        for (int64_t i = lo; known && nd >= 1 && nd <= 4 && i < hi; i++)
            if (hdr[H_COUNT + i] < 0 || !ss_mul_ok(bytes, (size_t)hdr[H_COUNT + i], &bytes)) known = 0;
        if (!known || nd < 1 || nd > 4 || hdr[H_START] != b0 || hdr[H_COUNT] != nb || (int64_t)bytes != hdr[H_BYTES]) {
            free(lens);
            return ss_errorf(SS_ERR_INTERNAL, "rank %d (host %s) sent a block that is not part of its batch at prompt %lld",
                             r, ss_comm_host(c->comm, r), (long long)b0);
        }
        void *buf = ss_malloc(bytes ? bytes : 1, "block from another rank");
        ss_status st = buf ? ss_comm_recv(c->comm, r, TAG_BLOCK, buf, bytes) : SS_ERR_NOMEM;
        if (st) {
            free(buf);
            free(lens);
            return st;
        }
        st = queue(c, ds, (int)nd, hdr + H_START, hdr + H_COUNT, buf, bytes, lens);
        free(lens);
        SS_TRY(st);
    }
}

/* The writer: step k's blocks of every other rank, copy by copy (a copy: one
 * rank, or the P stages of a pipeline), counting the step's prompts. */
static ss_status receive_step(fwd_job_ctx *c, int64_t k, int parts, int P, int64_t N, int64_t B, int64_t *written) {
    for (int q = 0; q < parts; q++) {
        int64_t qlo, qhi;
        ss_comm_shard(N, B, q, parts, &qlo, &qhi);
        const int64_t qb0 = qlo + k * B;
        if (qb0 >= qhi) continue;
        const int64_t qnb = qhi - qb0 < B ? qhi - qb0 : B;
        for (int r = q * P; r < (q + 1) * P; r++) {
            if (r == c->writer) continue;
            ss_status st = receive_batch(c, r, qb0, qnb);
            if (st)
                return ss_error_context(st, "receiving the outputs of rank %d for prompts %lld..%lld", r, (long long)qb0,
                                        (long long)(qb0 + qnb - 1));
        }
        *written += qnb;
    }
    return SS_OK;
}

/* Copies one site's packed rows or a pattern's squares out (see packing) and
 * queues them as one write. */
static ss_status capture(void *vctx, const ss_site *s, float *data, int64_t ld, const ss_packing *pk,
                         const int64_t *pattern_off) {
    fwd_job_ctx *c = vctx;
    const int64_t B = pk->n_seq, T = c->T;
    int64_t start[4] = {pk->first, 0, 0, 0}, count[4] = {B, T, s->dims[0], s->dims[1]};
    if (s->per_token) {
        int64_t rows = 0;
        for (int64_t b = 0; b < B; b++) rows += pk->len[b];
        float *buf = ss_malloc((size_t)(rows * s->width) * sizeof(float) + 1, s->name);
        if (!buf) return SS_ERR_NOMEM;
        float *dst = buf;
        for (int64_t b = 0; b < B; b++)
            for (int64_t t = 0; t < pk->len[b]; t++, dst += s->width)
                memcpy(dst, data + (pk->start[b] + t) * ld, (size_t)s->width * sizeof(float));
        return emit(c, s->id, 2 + s->ndim, start, count, buf, (size_t)(rows * s->width) * sizeof(float), pk->len);
    }
    const int64_t H = s->dims[0];
    count[1] = H;
    count[2] = T;
    count[3] = T;
    size_t total = 0; /* each prompt's [H, len, len], as the forward holds them */
    for (int64_t b = 0; b < B; b++) total += (size_t)(H * pk->len[b] * pk->len[b]);
    float *buf = ss_malloc(total * sizeof(float) + 1, s->name);
    if (!buf) return SS_ERR_NOMEM;
    float *dst = buf;
    for (int64_t b = 0; b < B; b++) {
        const size_t n = (size_t)(H * pk->len[b] * pk->len[b]);
        memcpy(dst, data + pattern_off[b], n * sizeof(float));
        dst += n;
    }
    return emit(c, s->id, 4, start, count, buf, total * sizeof(float), pk->len);
}

ss_status ss_job_forward(const ss_forward_job *job) {
    ss_run run;
    ss_h5 *h = NULL;
    uint8_t *want = NULL;
    float *lg = NULL;
    fwd_job_ctx c = {0};
    ss_loss_scorer ls = {0};
    ss_capture *cap = NULL;
    int ns = 0;
    ss_status st;
    ss_comm *comm;

    if ((st = ss_comm_world(&comm))) return st;
    const int rank = ss_comm_rank(comm), size = ss_comm_size(comm);
    c.comm = comm;
    c.rank = rank;
    ss_run_opts ro = job->run;
    ro.pipeline_replicas = 1; /* copies of a pipeline each run their share */
    ro.no_logits = job->no_logits && !job->loss; /* --loss needs the head even where /logits is not stored */
    if ((st = ss_run_open(&ro, &run))) return ss_comm_check(comm, st);
    c.piped = run.m->pipe != NULL;
    /* Ranks per copy of the model; the writer is the first copy's last stage (rank 0 without a pipeline). */
    const int P = c.piped ? run.m->n_stages : 1;
    c.writer = P - 1;
    ss_model *m = run.m;
    ss_prompts *p = run.p;
    ss_backend *be = run.be;
    const ss_config *cfg = &m->cfg;
    const int64_t V = cfg->vocab_size, N = p->n, T = run.T, B = run.B;

    int n_sel = 0;
    ns = ss_sites_count(cfg);
    if (!(want = ss_calloc((size_t)ns, 1, "site flags"))) { st = SS_ERR_NOMEM; goto out; }
    if (job->sites && *job->sites && (st = ss_sites_select(cfg, job->sites, want, &n_sel))) goto out;
    /* Inputs are checked before the weights go to the device. */
    if ((st = ss_run_place(&run, &job->run))) goto out;
    c.m = m;
    c.p = p;
    c.T = T;
    c.n_sites = ns;
    if (!(c.acts = ss_calloc((size_t)ns, sizeof *c.acts, "site datasets"))) { st = SS_ERR_NOMEM; goto out; }
    if (rank != c.writer) goto compute; /* the writer alone has the file */

    if ((st = ss_h5_create(job->out, &h))) goto out;
    if ((st = ss_h5_set_deflate(h, job->compress))) goto out;
    if ((st = ss_write_provenance(h, m, job->command_line, be))) goto out;
    if ((st = ss_h5_attr_str(h, "/", "input_path", job->run.input))) goto out;
    if ((st = ss_h5_attr_i64(h, "/", "n_prompts", N))) goto out;
    if ((st = ss_h5_attr_str(h, "/", "sites", job->sites ? job->sites : ""))) goto out;
    if ((st = ss_h5_attr_i64(h, "/", "ranks", size))) goto out;
    if ((st = ss_h5_attr_i64(h, "/", "pipeline_stages", P))) goto out;

    if ((st = ss_write_tokens(h, p, T))) goto out;
    if (!job->no_logits) {
        int64_t d3[3] = {N, T, V};
        const char *n3[3] = {"prompt", "position", "vocab"};
        if ((st = ss_h5_dset_create(h, "/logits", SS_H5_F32, 3, d3, n3, &c.logits))) goto out;
    }
    if (job->loss) {
        const char *n1[1] = {"prompt"};
        if ((st = ss_h5_dset_create(h, "/loss", SS_H5_F32, 1, &N, n1, &c.loss))) goto out;
    }
    /* One dataset per requested site; the bytes one batch adds to them all
     * bound the writer's queue. */
    size_t batch_bytes = (job->no_logits ? 0 : (size_t)(T * V) * sizeof(float)) + (job->loss ? sizeof(float) : 0);
    for (int i = 0; i < ns; i++) {
        if (!want[i]) continue;
        ss_site s;
        ss_site_get(cfg, i, &s);
        char path[128];
        snprintf(path, sizeof path, "/acts/%s", s.name);
        int64_t dims[4] = {N, T, s.dims[0], s.dims[1]};
        const char *names[4] = {"prompt", "position", s.dim_names[0], s.dim_names[1]};
        int nd = 2 + s.ndim;
        size_t per = (size_t)(T * s.width);
        if (!s.per_token) {
            dims[1] = s.dims[0];
            dims[2] = dims[3] = T;
            names[1] = "head";
            names[2] = "query_position";
            names[3] = "key_position";
            nd = 4;
            per = (size_t)(s.dims[0] * T * T);
        }
        if ((st = ss_h5_dset_create(h, path, SS_H5_F32, nd, dims, names, &c.acts[i]))) goto out;
        batch_bytes += per * sizeof(float);
    }
    /* Up to two batches of output wait for the writer; more would only hold
     * memory. Counted padded: the packed rows and squares of short prompts take less. */
    if (!ss_mul_ok(batch_bytes, (size_t)(2 * B), &batch_bytes)) { st = ss_errorf(SS_ERR_NOMEM, "output of one batch overflows; use a smaller --batch"); goto out; }
    if ((st = ss_h5_queue_start(batch_bytes, &c.q))) goto out;

compute:;
    /* --loss: scored on the device where the logits stay there, else from
     * the host copy that /logits takes anyway. */
    if (job->loss && (st = ss_loss_open(&ls, job->no_logits ? be : ss_backend_cpu(), B * T, B))) goto out;
    /* On a GPU, a batch's sites reach the hook while the next batch computes. */
    if ((st = ss_capture_open(&cap))) goto out;
    ss_forward_opts fo = {.want = want, .hook = capture, .hook_ctx = &c,
                          .logits = job->no_logits && !job->loss ? SS_LOGITS_NONE : SS_LOGITS_ALL, .read_only = 1,
                          .capture = cap};
    if (job->loss && job->no_logits) fo.logits_hook = ss_loss_score, fo.logits_ctx = &ls;
    ss_progress_fn progress = rank == c.writer ? job->progress : NULL;
    if (progress) progress(job->progress_ctx, 0, N);
    /* Step k: every copy of the model its k-th batch (a copy is one rank, or
     * the P stages of a pipeline, each stage running every batch of its
     * copy). The writer then takes step k's blocks from every other rank:
     * its own copy's first stages, then the other copies' ranks in order. */
    int part, parts;
    ss_model_data_part(m, comm, &part, &parts);
    int64_t lo, hi, written = 0;
    ss_comm_shard(N, B, part, parts, &lo, &hi);
    /* On a device a batch's sites reach the hook during the next pass
     * (ss_capture), so a rank that sends its blocks to the writer ends batch
     * k once pass k+1 has handed them over, and its last batch after the loop. */
    const int deferred = !be->host_memory;
    int64_t steps = 0; /* the writer's batches so far */
    /* SUBSCOPE_TIMING=1: the first batch (lazy module loads, cuBLAS's first
     * choices) and the later ones timed apart, the device synchronised at each
     * mark, on stderr: benchmarks read the steady rate from it */
    const int timing = ss_timing_on();
    double t_start = ss_now(), t_first = 0, host0 = 0, sync0 = 0;
    int64_t first_prompts = 0;
    for (int64_t k = 0;; k++) {
        int64_t b0 = lo + k * B;
        if (b0 >= hi) break; /* copy 0 has the most batches: the writer never stops before the others */
        int64_t nb = hi - b0 < B ? hi - b0 : B;
        ss_packing pk;
        ss_run_pack(&run, b0, nb, &pk);
        ls.tok = run.packed, ls.pk = &pk, ls.scored = 0;
        if ((st = ss_forward(m, be, run.packed, &pk, &fo, job->no_logits ? NULL : &lg))) goto out;
        if (job->loss && lg && (st = ss_loss_score(&ls, lg, pk.rows, V))) goto out;
        if (ls.scored) { /* this rank has the head */
            float *lb = ss_malloc((size_t)nb * sizeof(float), "loss");
            if (!lb) { st = SS_ERR_NOMEM; goto out; }
            for (int64_t i = 0; i < nb; i++) lb[i] = (float)ls.loss[i];
            if ((st = emit(&c, DS_LOSS, 1, &b0, &nb, lb, (size_t)nb * sizeof(float), NULL))) goto out;
        }
        if (timing && k == 0) {
            if ((st = be->sync(be))) goto out;
            t_first = ss_now();
            first_prompts = nb;
            host0 = m->fwd_host_s, sync0 = m->fwd_sync_s;
        }
        if (rank != c.writer && deferred && k > 0 && (st = end_batch(&c))) goto out; /* batch k-1's sites came in this pass */
        if (lg) { /* the packed rows go to the writer as they are (see emit) */
            int64_t s3[3] = {b0, 0, 0}, n3[3] = {nb, T, V};
            float *rows = lg;
            lg = NULL;
            if ((st = emit(&c, DS_LOGITS, 3, s3, n3, rows, (size_t)(pk.rows * V) * sizeof(float), pk.len))) goto out;
        }
        if (rank != c.writer) { /* the batch's blocks must all precede its end marker */
            if (!deferred && (st = end_batch(&c))) goto out;
            continue;
        }
        /* The writer takes a step's blocks from the other ranks after its own
         * pass of that step, or, deferred, of the next one: the others end a
         * batch only once their next pass has handed its sites over, and a
         * pipeline stage's next pass needs the writer's. */
        if (deferred ? k > 0 && (st = receive_step(&c, k - 1, parts, P, N, B, &written))
                     : (st = receive_step(&c, k, parts, P, N, B, &written)))
            goto out;
        steps = k + 1;
        if (progress) progress(job->progress_ctx, written, N);
    }
    if ((st = ss_capture_flush(cap))) goto out;
    if (timing && hi > lo) {
        if ((st = be->sync(be))) goto out;
        ss_timing_batches("forward", rank, size, t_start, t_first, first_prompts, hi - lo - first_prompts);
        ss_eprintf("subscope forward: timing: later batches: %.4f s in ss_forward before its closing device sync, "
                   "%.4f s waiting in it\n",
                   m->fwd_host_s - host0, m->fwd_sync_s - sync0);
    }
    if (rank != c.writer && deferred && hi > lo && (st = end_batch(&c))) goto out;
    if (rank == c.writer && deferred && steps > 0) {
        if ((st = receive_step(&c, steps - 1, parts, P, N, B, &written))) goto out;
        if (progress) progress(job->progress_ctx, written, N);
    }
    if (c.piped && rank != c.writer && (st = retire(&c, -1))) goto out;
    /* The writer thread is done before the pipeline's report writes its attributes: only it
     * calls HDF5 while the queue runs (h5queue.h). */
    if (rank == c.writer) {
        st = ss_h5_queue_finish(c.q);
        c.q = NULL;
        if (st) goto out;
    }
    if (c.piped && (st = ss_pipeline_report(run.m, P - 1, h, rank == c.writer && job->progress))) goto out;
    if (rank != c.writer) goto out;
    for (int i = 0; i < ns; i++) {
        if (c.acts[i] && (st = ss_h5_dset_close(c.acts[i]))) { c.acts[i] = NULL; goto out; }
        c.acts[i] = NULL;
    }
    ss_h5_dset **ds1[] = {&c.logits, &c.loss};
    for (size_t i = 0; i < sizeof ds1 / sizeof *ds1; i++) {
        if (!*ds1[i]) continue;
        st = ss_h5_dset_close(*ds1[i]);
        *ds1[i] = NULL;
        if (st) goto out;
    }
    size_t in_use, peak;
    be->memory_stats(be, &in_use, &peak);
    if (peak) {
        if ((st = ss_h5_attr_i64(h, "/", "device_memory_peak_bytes", (int64_t)peak))) goto out;
        if (job->progress) ss_eprintf("%s: peak device memory %.1f MiB\n", be->name, (double)peak / 1048576.0);
    }
    const int64_t host_peak = ss_peak_host_bytes(); /* this process: the writer's, weights and queue included */
    if (host_peak) {
        if ((st = ss_h5_attr_i64(h, "/", "host_memory_peak_bytes", host_peak))) goto out;
        if (job->progress) ss_eprintf("host: peak resident memory %.1f MiB\n", (double)host_peak / 1048576.0);
    }
    st = ss_h5_commit(h);
    h = NULL;
out: /* on failure: stop the writer, close what is open, then drop the temporary file */
    if (c.q) {
        char saved[SS_ERROR_MAX]; /* the queue's own message must not replace the first error's */
        snprintf(saved, sizeof saved, "%s", ss_last_error());
        ss_h5_queue_finish(c.q);
        ss_errorf(st, "%s", saved);
    }
    for (int i = 0; c.acts && i < ns; i++)
        if (c.acts[i]) ss_h5_dset_close(c.acts[i]);
    if (c.logits) ss_h5_dset_close(c.logits);
    if (c.loss) ss_h5_dset_close(c.loss);
    if (h) ss_h5_abort(h);
    ss_loss_close(&ls);
    ss_capture_close(cap);
    drop_outgoing(&c);
    free(c.acts);
    free(lg);
    free(want);
    ss_run_close(&run);
    return ss_comm_check(comm, st);
}
