/* `attribute`: scores every unit of the chosen sites by how much it drives a
 * per-prompt metric, from one forward and one backward pass per batch
 * (grad, gradxact, atp) or per integration step (ig).
 *
 * With several ranks (docs/DISTRIBUTED.md) each rank takes a contiguous
 * block of whole batches of the one-process run, so every prompt's
 * attributions come from the same passes as in one process. Rank 0 alone
 * writes the file: at step k it writes its own k-th batch, then receives
 * the k-th batch of every other rank in rank order (the ranks move in step,
 * as in forward). Per-prompt metrics (and IG's baseline metrics and
 * completeness errors) are gathered at the end; sums over prompts
 * (--reduce prompts, and the table's scores) are each rank's float64 sums
 * added at rank 0 in rank order. With --pipeline P, copies of the pipeline
 * split the batches the same way, each site's attributions coming from the
 * stage of its copy that computes it, and the stages run the batches (ig:
 * a batch's integration steps) one forward, one backward (1F1B). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "subscope/backward.h"
#include "subscope/dist.h"
#include "subscope/h5out.h"
#include "subscope/jobs.h"
#include "subscope/util.h"

typedef enum { A_GRAD, A_GRADXACT, A_ATP, A_IG } attr_method;
typedef enum { R_NONE, R_POSITIONS, R_PROMPTS } attr_reduce;

/* Integrated gradients: the value at one site becomes baseline + alpha·(value - baseline),
 * by the ig_point op of be (the CPU's on host rows, the device's on a device path). */
typedef struct {
    const ss_backend *be;
    int site;
    const float *clean;     /* packed [rows, width] */
    const double *baseline; /* [width], NULL: zero */
    double alpha;
} ig_point;

static ss_status ig_hook(void *vctx, const ss_site *s, float *data, int64_t ld, const ss_packing *pk,
                         const int64_t *pattern_off) {
    (void)pattern_off;
    const ig_point *p = vctx;
    if (s->id != p->site) return SS_OK;
    return p->be->ig_point(p->be, data, ld, p->clean, p->baseline, p->alpha, pk->rows, s->width);
}

/* A step's gradient at the site into the sums (a backward hook): sum += g. */
typedef struct {
    const ss_backend *be;
    int site;
    double *sum;            /* [rows, width] */
} ig_sum;

static ss_status ig_add_hook(void *vctx, const ss_site *s, float *g, int64_t ld, const ss_packing *pk,
                             const int64_t *pattern_off) {
    (void)pattern_off;
    const ig_sum *p = vctx;
    if (s->id != p->site) return SS_OK;
    return p->be->ig_add(p->be, p->sum, g, ld, pk->rows, s->width);
}

static ss_status parse_method(const char *s, attr_method *m, int *steps) {
    *steps = 0;
    if (!s || !strcmp(s, "gradxact")) *m = A_GRADXACT;
    else if (!strcmp(s, "grad")) *m = A_GRAD;
    else if (!strcmp(s, "atp")) *m = A_ATP;
    else if (!strncmp(s, "ig", 2) && (!s[2] || s[2] == ':')) {
        *m = A_IG;
        *steps = 32;
        if (s[2] == ':') {
            int64_t v;
            if (!ss_parse_int(s + 3, &v) || v < 1 || v > 100000)
                return ss_errorf(SS_ERR_ARG, "--method ig:STEPS needs 1..100000 steps, got '%s'", s);
            *steps = (int)v;
        }
    } else {
        return ss_errorf(SS_ERR_ARG, "unknown --method '%s' (expected grad, gradxact, atp or ig[:STEPS])", s);
    }
    return SS_OK;
}

/* A unit's name in the table: "371", or "h3.7" (head, dimension) for q/k/v/z. */
static void unit_name(const ss_site *s, int64_t u, char *buf, size_t n) {
    if (s->ndim == 2) snprintf(buf, n, "h%lld.%lld", (long long)(u / s->dims[1]), (long long)(u % s->dims[1]));
    else snprintf(buf, n, "%lld", (long long)u);
}

typedef struct {
    double v;
    int64_t u;
} scored;

static int by_magnitude(const void *a, const void *b) {
    double x = fabs(((const scored *)a)->v), y = fabs(((const scored *)b)->v);
    if (x != y) return x < y ? 1 : -1;
    return ((const scored *)a)->u < ((const scored *)b)->u ? -1 : 1;
}

static ss_status attribute(const ss_attribute_job *job, ss_comm *comm);

/* A batch's host work on one site's rows, on the thread pool: a batch of
 * 16 prompts of 1024 tokens at an MLP site of GPT-2 small is 50M values,
 * which one thread takes tens of milliseconds over while a GPU waits for
 * the next batch. Each item is a range of columns (or of elements), and
 * within it every sum adds its terms in the order one thread would, so the
 * results do not depend on the number of threads. */
typedef enum { H_PRODUCT, H_POSITIONS, H_TABLE, H_PROMPTS } host_op;
typedef struct {
    host_op op;
    float *attr;              /* [rows, w] */
    const float *g, *a, *c;   /* H_PRODUCT: attr = g * a, or (c - a) * g with c */
    const ss_packing *pk;
    const double *metric;     /* the batch's; a prompt with a NaN metric adds nothing to the sums */
    int64_t w, n, chunk;      /* n: elements (H_PRODUCT, H_PROMPTS) or columns */
    float *out;               /* H_POSITIONS: [n_seq, w] */
    double *sum;              /* H_TABLE: [w] += over prompts and positions; H_PROMPTS: [T*w] += over prompts */
} host_work;

static void host_item(void *vctx, int64_t item) {
    const host_work *h = vctx;
    const ss_packing *pk = h->pk;
    const int64_t lo = item * h->chunk, hi = lo + h->chunk < h->n ? lo + h->chunk : h->n, w = h->w;
    switch (h->op) {
    case H_PRODUCT:
        if (h->c)
            for (int64_t q = lo; q < hi; q++) h->attr[q] = (h->c[q] - h->a[q]) * h->g[q];
        else
            for (int64_t q = lo; q < hi; q++) h->attr[q] = h->g[q] * h->a[q];
        break;
    case H_POSITIONS:
        for (int64_t i = 0; i < pk->n_seq; i++)
            for (int64_t u = lo; u < hi; u++) {
                double sum = 0;
                for (int64_t t = 0; t < pk->len[i]; t++) sum += h->attr[(pk->start[i] + t) * w + u];
                h->out[i * w + u] = (float)sum;
            }
        break;
    case H_TABLE:
        for (int64_t i = 0; i < pk->n_seq; i++) {
            if (isnan(h->metric[i])) continue;
            for (int64_t t = 0; t < pk->len[i]; t++)
                for (int64_t u = lo; u < hi; u++) h->sum[u] += h->attr[(pk->start[i] + t) * w + u];
        }
        break;
    case H_PROMPTS:
        for (int64_t i = 0; i < pk->n_seq; i++) {
            if (isnan(h->metric[i])) continue;
            const int64_t end = pk->len[i] * w < hi ? pk->len[i] * w : hi;
            for (int64_t q = lo; q < end; q++) h->sum[q] += h->attr[pk->start[i] * w + q];
        }
        break;
    }
}

static void host_run(host_work *h, int64_t chunk) {
    h->chunk = chunk;
    ss_parallel_for((h->n + chunk - 1) / chunk, host_item, h);
}

ss_status ss_job_attribute(const ss_attribute_job *job) {
    ss_comm *comm;
    SS_TRY(ss_comm_world(&comm));
    return ss_comm_check(comm, attribute(job, comm));
}

/* Rank 0: the outputs of rank r's batch at prompts [b0, b0+nb), one block per site, into the datasets. */
static ss_status receive_batch(ss_comm *comm, int r, const ss_config *cfg, const int *site_ids, int n_sites,
                               ss_h5_dset **dsets, int per_position, int64_t T, int64_t b0, int64_t nb, float *buf) {
    for (int k = 0; k < n_sites; k++) {
        ss_site s;
        ss_site_get(cfg, site_ids[k], &s);
        int64_t start[4] = {b0, 0, 0, 0}, count[4] = {nb, 0, 0, 0};
        int nd = 1;
        if (per_position) count[nd++] = T;
        for (int e = 0; e < s.ndim; e++) count[nd++] = s.dims[e];
        const size_t n = (size_t)(nb * (per_position ? T : 1) * s.width);
        SS_TRY(ss_comm_recv(comm, r, k, buf, n * sizeof(float)));
        SS_TRY(ss_h5_dset_write(dsets[k], start, count, buf));
    }
    return SS_OK;
}

/* Rank 0 of a pipeline: site s's block of prompts [b0, b0+nb) from the rank (a stage of some copy) that computed it. */
static ss_status receive_site(ss_comm *comm, int from, const ss_site *s, ss_h5_dset *dset, int per_position, int64_t T,
                              int64_t b0, int64_t nb, float *buf) {
    int64_t start[4] = {b0, 0, 0, 0}, count[4] = {nb, 0, 0, 0};
    int nd = 1;
    if (per_position) count[nd++] = T;
    for (int e = 0; e < s->ndim; e++) count[nd++] = s->dims[e];
    const size_t n = (size_t)(nb * (per_position ? T : 1) * s->width);
    ss_status st = ss_comm_recv(comm, from, s->id, buf, n * sizeof(float));
    if (!st) st = ss_h5_dset_write(dset, start, count, buf);
    return st ? ss_error_context(st, "attributions at %s from rank %d", s->name, from) : SS_OK;
}

/* On a device, for every method but ig, a site's rows stay there: the
 * forward hook copies the activations into device buffers of the batch's
 * slot (dev_keep), the gradient hook forms the attributions from them into
 * a device buffer per site (dev_attr_hook: the backend's attr_product, the
 * host loop's arithmetic), and after the pass only the sums over positions
 * ([prompts, d], seq_sums) or, for the other reductions, the attributions
 * come back: not the activations and the gradients both. */
typedef struct {
    const ss_backend *be;
    float **rows;             /* by site id: [B*T, width] device buffers (NULL: not kept here) */
} dev_rows;

static ss_status dev_keep(void *vctx, const ss_site *s, float *data, int64_t ld, const ss_packing *pk,
                          const int64_t *pattern_off) {
    (void)pattern_off;
    const dev_rows *k = vctx;
    return k->rows[s->id] ? k->be->copy_rows(k->be, k->rows[s->id], data, ld, pk->rows, s->width) : SS_OK;
}

typedef struct {
    const ss_backend *be;
    float **attr;             /* by site id: the attributions [B*T, width] */
    float *const *a, *const *c; /* the slot whose backward pass runs: its (corrupt) activations; NULL: none */
} dev_attr;

static ss_status dev_attr_hook(void *vctx, const ss_site *s, float *g, int64_t ld, const ss_packing *pk,
                               const int64_t *pattern_off) {
    (void)pattern_off;
    const dev_attr *d = vctx;
    if (!d->attr[s->id]) return SS_OK;
    return d->be->attr_product(d->be, d->attr[s->id], g, ld, d->a ? d->a[s->id] : NULL, d->c ? d->c[s->id] : NULL,
                               pk->rows, s->width);
}

/* A batch between its forward and its backward pass (a pipeline stage keeps several). */
typedef struct {
    ss_fb_pass *ps;
    ss_packing pk;
    int64_t *seq;             /* pk's start and len */
    ss_site_rows acts, cacts; /* its activations (slot 0: the job's own buffers) */
    dev_rows dacts, dcacts;   /* on a device: the same in device memory */
} slot_t;

static ss_status attribute(const ss_attribute_job *job, ss_comm *comm) {
    const int rank = ss_comm_rank(comm), size = ss_comm_size(comm);
    ss_run run;
    ss_status st;
    attr_method method;
    int steps;
    ss_metric_kind mk = SS_METRIC_LOSS;
    attr_reduce red = R_NONE;
    SS_TRY(parse_method(job->method, &method, &steps));
    if (job->metric) SS_TRY(ss_metric_parse(job->metric, &mk));
    if (job->reduce && !strcmp(job->reduce, "positions")) red = R_POSITIONS;
    else if (job->reduce && !strcmp(job->reduce, "prompts")) red = R_PROMPTS;
    else if (job->reduce && strcmp(job->reduce, "none"))
        return ss_errorf(SS_ERR_ARG, "--reduce must be none, positions or prompts, got '%s'", job->reduce);
    if (method == A_ATP && !job->corrupt) return ss_errorf(SS_ERR_ARG, "--method atp needs --corrupt FILE");
    if (method != A_ATP && job->corrupt) return ss_errorf(SS_ERR_ARG, "--corrupt is used by --method atp only");
    if (method != A_IG && job->stats) return ss_errorf(SS_ERR_ARG, "--stats (a mean baseline) is used by --method ig only");
    if (!job->sites || !*job->sites) return ss_errorf(SS_ERR_ARG, "--sites is required");
    if (job->micro_batches > 0 && job->run.pipeline <= 1)
        return ss_errorf(SS_ERR_ARG, "--micro-batches %d: only a pipeline (--pipeline P) runs several batches' forward "
                         "passes before their backward passes", job->micro_batches);

    ss_run_opts ro = job->run;
    ro.pipeline_replicas = 1; /* copies of a pipeline each run their share */
    if ((st = ss_run_open(&ro, &run))) return st;
    ss_model *m = run.m;
    const ss_config *cfg = &m->cfg;
    const int64_t N = run.p->n, T = run.T, B = run.B;
    const int ns = ss_sites_count(cfg);
    /* This rank's prompts: whole batches of the one-process run, a share of
     * its own or of its copy of the pipeline. A pipeline's stages all run
     * every prompt of their copy; each site's attributions come from the
     * stage that computes it and go to rank 0 site by site. dcomm: the ranks
     * that split the prompts and run the same blocks. */
    const int piped = m->pipe != NULL, P = piped ? m->n_stages : 1;
    int part, parts, dcomm_owned = 0;
    ss_comm *dcomm = NULL;
    ss_model_data_part(m, comm, &part, &parts);
    int64_t lo, hi;
    ss_comm_shard(N, B, part, parts, &lo, &hi);
    if ((st = ss_model_data_comm(m, comm, &dcomm, &dcomm_owned))) {
        ss_run_close(&run);
        return st;
    }
    ss_progress_fn progress = rank == 0 ? job->progress : NULL;
    ss_prompts *kps = NULL;
    uint8_t *want = NULL, *one = NULL;
    int *site_ids = NULL, n_sites = 0;
    ss_site_rows acts = {0}, grads = {0}, cacts = {0};
    dev_attr dattr = {0};     /* the device path's attributions, sums and their packing */
    int64_t *d_seq = NULL;
    double *d_sums = NULL, *hsum = NULL;
    slot_t *slots = NULL;
    int W = 1, Wig = 1;
    ig_point *ig_pts = NULL;
    ss_fb_pass **ig_pass = NULL;
    double **base = NULL, **red_sum = NULL, **red_cnt = NULL, *metric = NULL, *site_rel = NULL, *base_metric = NULL, *complete = NULL, *gsum = NULL, **dbase = NULL;
    float *metric_f = NULL, *outbuf = NULL;
    int32_t *answer = NULL, *wrong = NULL;
    ss_h5 *h = NULL;
    ss_h5_dset **dsets = NULL;

    int nsel;
    want = ss_calloc((size_t)ns, 1, "sites");
    one = ss_calloc((size_t)ns, 1, "sites");
    site_ids = ss_malloc((size_t)ns * sizeof *site_ids, "sites");
    acts.rows = ss_calloc((size_t)ns, sizeof(float *), "activations");
    grads.rows = ss_calloc((size_t)ns, sizeof(float *), "gradients");
    cacts.rows = ss_calloc((size_t)ns, sizeof(float *), "corrupt activations");
    base = ss_calloc((size_t)ns, sizeof(double *), "baselines");
    red_sum = ss_calloc((size_t)ns, sizeof(double *), "sums");
    red_cnt = ss_calloc((size_t)ns, sizeof(double *), "sums");
    dsets = ss_calloc((size_t)ns, sizeof *dsets, "datasets");
    metric = ss_malloc((size_t)N * sizeof(double), "metrics");
    metric_f = ss_malloc((size_t)N * sizeof(float) * 3, "metrics");
    base_metric = ss_malloc((size_t)(N * ns) * sizeof(double) + 1, "metrics");
    complete = ss_malloc((size_t)(N * ns) * sizeof(double) + 1, "metrics");
    site_rel = ss_calloc((size_t)ns, sizeof(double), "completeness");
    answer = ss_malloc((size_t)B * sizeof(int32_t), "answers");
    wrong = ss_malloc((size_t)B * sizeof(int32_t), "answers");
    if (!want || !one || !site_ids || !acts.rows || !grads.rows || !cacts.rows || !base || !red_sum || !red_cnt || !dsets ||
        !metric || !metric_f || !site_rel || !base_metric || !complete || !answer || !wrong) {
        st = SS_ERR_NOMEM;
        goto out;
    }
    if ((st = ss_sites_select(cfg, job->sites, want, &nsel))) goto out;
    for (int i = 0; i < ns; i++) {
        if (!want[i]) continue;
        ss_site s;
        ss_site_get(cfg, i, &s);
        if (!s.per_token) {
            /* A glob that sweeps up hook_pattern leaves it out; naming it is an error
             * (also beside globs: 'blocks.0.attn.hook_pattern,blocks.1.*'). */
            if (!ss_sites_list_names(job->sites, s.name)) {
                want[i] = 0;
                continue;
            }
            st = ss_errorf(SS_ERR_ARG, "site %s has no per-token vector to attribute to (use attn.hook_q/k or hook_z)", s.name);
            goto out;
        }
        site_ids[n_sites++] = i;
    }
    if (!n_sites) { st = ss_errorf(SS_ERR_ARG, "--sites '%s' selects no per-token site", job->sites); goto out; }
    if (method == A_ATP && (st = ss_run_read_paired(&run, job->corrupt, job->run.truncate, &kps))) goto out;
    if (method == A_IG && job->stats) {
        /* read by site id, kept by position in site_ids */
        double **by_id = ss_calloc((size_t)ns, sizeof(double *), "baselines");
        if (!by_id) { st = SS_ERR_NOMEM; goto out; }
        st = ss_read_unit_stats(job->stats, run.m, want, 1, by_id, NULL);
        for (int k = 0; k < n_sites; k++) base[k] = by_id[site_ids[k]], by_id[site_ids[k]] = NULL;
        for (int i = 0; i < ns; i++) free(by_id[i]);
        free(by_id);
        if (st) goto out;
    }
    if (mk != SS_METRIC_LOSS)
        for (int64_t i = 0; i < N; i++) { /* every line's answer is checked before any compute */
            int32_t a, w;
            if ((st = ss_prompt_answer_ids(m->tok, run.p, &run.p->items[i], &a, mk == SS_METRIC_LOGITDIFF ? &w : NULL)))
                goto out;
        }
    if (mk != SS_METRIC_LOSS && rank == 0 && job->table)
        ss_note_multi_token_answers(m->tok, run.p, mk == SS_METRIC_LOGITDIFF, "attribute", ss_metric_name(mk), stderr);
    /* the device path (dev_rows): on a device backend with the ops */
    const int dpath = !run.be->host_memory && run.be->attr_product && run.be->seq_sums &&
                      (method != A_IG || (run.be->ig_point && run.be->ig_add && run.be->ig_attr));
    /* integrated gradients' steps: the device's ops there, else the CPU's on host rows */
    const ss_backend *ib = dpath ? run.be : ss_backend_cpu();
    /* on the device path with --reduce positions only the sums over positions come back (not for ig,
     * whose completeness errors add each prompt's attributions as the host does) */
    const int dsum_all = dpath && red == R_POSITIONS && method != A_IG;
    int64_t widest = 0;
    for (int k = 0; k < n_sites; k++) {
        ss_site s;
        ss_site_get(cfg, site_ids[k], &s);
        size_t n = (size_t)(B * T * s.width);
        widest = s.width > widest ? s.width : widest;
        if (!dsum_all && !(grads.rows[s.id] = ss_malloc(n * sizeof(float), "gradients"))) { st = SS_ERR_NOMEM; goto out; }
        if (!dpath && method != A_GRAD && !(acts.rows[s.id] = ss_malloc(n * sizeof(float), "activations"))) { st = SS_ERR_NOMEM; goto out; }
        if (!dpath && method == A_ATP && !(cacts.rows[s.id] = ss_malloc(n * sizeof(float), "activations"))) { st = SS_ERR_NOMEM; goto out; }
        /* Sums over prompts: the output (--reduce prompts, [T, width]), else the table's scores ([width]). */
        if (!(red_sum[k] = ss_calloc((size_t)((red == R_PROMPTS ? T : 1) * s.width), sizeof(double), "sums"))) { st = SS_ERR_NOMEM; goto out; }
        /* --reduce prompts: how many prompts with a metric reach each position (none: NaN, not 0) */
        if (red == R_PROMPTS && !(red_cnt[k] = ss_calloc((size_t)T, sizeof(double), "sums"))) { st = SS_ERR_NOMEM; goto out; }
    }
    if (!(outbuf = ss_malloc((size_t)(B * T * widest) * sizeof(float), "attributions"))) {
        st = SS_ERR_NOMEM;
        goto out;
    }
    if ((st = ss_run_place(&run, &job->run))) goto out;
    if (method == A_IG) { /* the steps' gradient sums and the baselines where the steps run */
        if (!(dbase = ss_calloc((size_t)n_sites, sizeof *dbase, "baselines"))) { st = SS_ERR_NOMEM; goto out; }
        if ((st = ib->alloc(ib, (size_t)(B * T * widest) * sizeof(double), "gradient sums", (void **)&gsum))) goto out;
        for (int k = 0; k < n_sites; k++) {
            ss_site s;
            ss_site_get(cfg, site_ids[k], &s);
            if (!base[k]) continue; /* a zero baseline */
            if (!dpath) dbase[k] = base[k];
            else if ((st = ib->alloc(ib, (size_t)s.width * sizeof(double), "baselines", (void **)&dbase[k])) ||
                     (st = ib->upload(ib, dbase[k], base[k], (size_t)s.width * sizeof(double))))
                goto out;
        }
    }
    if (dpath) {
        dattr = (dev_attr){.be = run.be, .attr = ss_calloc((size_t)ns, sizeof(float *), "attributions")};
        if (!dattr.attr || !(hsum = ss_malloc((size_t)(B * widest) * sizeof(double), "sums over positions"))) {
            st = SS_ERR_NOMEM;
            goto out;
        }
        if ((st = run.be->alloc(run.be, (size_t)(2 * B) * sizeof(int64_t), "batch packing", (void **)&d_seq)) ||
            (st = run.be->alloc(run.be, (size_t)(B * widest) * sizeof(double), "sums over positions", (void **)&d_sums)))
            goto out;
        for (int k = 0; k < n_sites; k++) {
            ss_site s;
            ss_site_get(cfg, site_ids[k], &s);
            if (ss_model_computes_site(m, &s) &&
                (st = run.be->alloc(run.be, (size_t)(B * T * s.width) * sizeof(float), "attributions",
                                    (void **)&dattr.attr[s.id])))
                goto out;
        }
    }

    /* The file and its datasets, written batch by batch (rank 0 alone has the file). */
    if (rank != 0) goto compute;
    if ((st = ss_h5_create(job->out, &h)) || (st = ss_h5_set_deflate(h, job->compress))) goto out;
    if ((st = ss_write_provenance(h, m, job->command_line, run.be)) ||
        (st = ss_h5_attr_str(h, "/", "input_path", job->run.input)) ||
        (st = ss_h5_attr_str(h, "/", "sites", job->sites)) ||
        (st = ss_h5_attr_str(h, "/", "metric", ss_metric_name(mk))) ||
        (st = ss_h5_attr_str(h, "/", "method", job->method ? job->method : "gradxact")) ||
        (st = ss_h5_attr_str(h, "/", "reduce", red == R_NONE ? "none" : red == R_POSITIONS ? "positions" : "prompts")) ||
        (st = ss_h5_attr_i64(h, "/", "ranks", size)) || (st = ss_h5_attr_i64(h, "/", "pipeline_stages", P)))
        goto out;
    if (kps && (st = ss_h5_attr_str(h, "/", "corrupt_path", job->corrupt))) goto out;
    if (method == A_IG && ((st = ss_h5_attr_i64(h, "/", "ig_steps", steps)) ||
                           (st = ss_h5_attr_str(h, "/", "ig_baseline", job->stats ? "mean" : "zero")) ||
                           (job->stats && (st = ss_h5_attr_str(h, "/", "stats_path", job->stats)))))
        goto out;
    if ((st = ss_write_tokens(h, run.p, T))) goto out;
    for (int k = 0; k < n_sites && red != R_PROMPTS; k++) {
        ss_site s;
        ss_site_get(cfg, site_ids[k], &s);
        char path[160];
        snprintf(path, sizeof path, "/attr/%s", s.name);
        int64_t dims[4];
        const char *names[4];
        int nd = 0;
        dims[nd] = N, names[nd++] = "prompt";
        if (red == R_NONE) dims[nd] = T, names[nd++] = "position";
        for (int e = 0; e < s.ndim; e++) dims[nd] = s.dims[e], names[nd++] = s.dim_names[e];
        if ((st = ss_h5_dset_create(h, path, SS_H5_F32, nd, dims, names, &dsets[k]))) goto out;
    }

compute:;
    const ss_metric mt = {mk, answer, wrong};
    const int64_t passes = method == A_IG ? 1 + (int64_t)n_sites * (steps + 1) : method == A_ATP ? 2 : 1;
    /* Progress: rank 0's own share (the other ranks have as many prompts or one batch fewer). */
    if (progress) progress(job->progress_ctx, 0, (hi - lo) * passes);
    /* A pipeline stage runs its batches one forward, one backward (1F1B):
     * stage s starts P-s forward passes, then alternates the backward pass of
     * its oldest batch in flight with the next forward pass, and ends with
     * the backward passes left. The bubble is about (P-1)/(M+P-1) for a
     * copy's M batches, and stage s keeps at most P-s batches' activations
     * (--micro-batches W: max(1, W-s); 1: one batch at a time). Between passes,
     * blocks for a neighbour are exchanged for what the next pass needs from
     * it (ss_model_pipe_release), which plain blocking sends would deadlock
     * on. Integrated gradients, with their many passes per batch, run one
     * batch at a time and its steps 1F1B. */
    const int w_all = !piped || method == A_IG ? 1 : job->micro_batches > 0 ? job->micro_batches : P;
    /* Each stage one batch fewer than the one before, down to 1: the exchanges
     * then pair up (with equal depths >= 2 a stage's exchange would wait for
     * a block its neighbour only makes after handing rank 0 this batch). */
    W = (w_all < P ? w_all : P) - m->stage;
    if (W < 1) W = 1;
    /* Integrated gradients run the steps of a batch 1F1B instead, as deep. */
    const int w_ig = !piped || method != A_IG ? 1 : job->micro_batches > 0 ? job->micro_batches : P;
    Wig = (w_ig < P ? w_ig : P) - m->stage;
    if (Wig < 1) Wig = 1;
    ig_pts = ss_malloc((size_t)Wig * sizeof *ig_pts, "integrated-gradient steps");
    ig_pass = ss_calloc((size_t)Wig, sizeof *ig_pass, "integrated-gradient steps");
    if (!ig_pts || !ig_pass) { st = SS_ERR_NOMEM; goto out; }
    if (!(slots = ss_calloc((size_t)W, sizeof *slots, "batches in flight"))) { st = SS_ERR_NOMEM; goto out; }
    slots[0].acts = acts;
    slots[0].cacts = cacts;
    for (int j = 0; j < W; j++) {
        slot_t *sl = &slots[j];
        if (!(sl->seq = ss_malloc((size_t)(2 * B) * sizeof(int64_t), "batch packing"))) { st = SS_ERR_NOMEM; goto out; }
        if (dpath) { /* the slot's activations in device memory, for this stage's sites */
            sl->dacts = (dev_rows){run.be, ss_calloc((size_t)ns, sizeof(float *), "activations")};
            sl->dcacts = (dev_rows){run.be, ss_calloc((size_t)ns, sizeof(float *), "activations")};
            if (!sl->dacts.rows || !sl->dcacts.rows) { st = SS_ERR_NOMEM; goto out; }
            for (int k = 0; k < n_sites; k++) {
                ss_site s;
                ss_site_get(cfg, site_ids[k], &s);
                const size_t n = (size_t)(B * T * s.width) * sizeof(float);
                if (!ss_model_computes_site(m, &s)) continue;
                if ((method != A_GRAD && (st = run.be->alloc(run.be, n, "activations", (void **)&sl->dacts.rows[s.id]))) ||
                    (method == A_ATP && (st = run.be->alloc(run.be, n, "activations", (void **)&sl->dcacts.rows[s.id]))))
                    goto out;
            }
        }
        if (j == 0) continue;
        sl->acts.rows = ss_calloc((size_t)ns, sizeof(float *), "activations");
        sl->cacts.rows = ss_calloc((size_t)ns, sizeof(float *), "corrupt activations");
        if (!sl->acts.rows || !sl->cacts.rows) { st = SS_ERR_NOMEM; goto out; }
        for (int k = 0; k < n_sites; k++) {
            const int id = site_ids[k];
            ss_site s;
            ss_site_get(cfg, id, &s);
            const size_t n = (size_t)(B * T * s.width) * sizeof(float);
            if ((acts.rows[id] && !(sl->acts.rows[id] = ss_malloc(n, "activations"))) ||
                (cacts.rows[id] && !(sl->cacts.rows[id] = ss_malloc(n, "activations")))) {
                st = SS_ERR_NOMEM;
                goto out;
            }
        }
    }
    /* fk: the next batch to run forward, bk: the next backward (batch k in slot k % W). */
    const int64_t n_steps = hi > lo ? (hi - lo + B - 1) / B : 0;
    /* SUBSCOPE_TIMING=1: the first batch (forward, backward and its attributions)
     * and the later ones timed apart, as forward does (benchmarks read it) */
    const int timing = ss_timing_on();
    double t_start = ss_now(), t_first = 0;
    int64_t first_prompts = 0;
    m->pipe_hold = w_all > 1; /* every stage, the last too: its neighbour's exchange waits for its receive */
    for (int64_t fk = 0, bk = 0; bk < n_steps;) {
        const int forward = fk < n_steps && fk - bk < W;
        if (forward) {
            slot_t *sl = &slots[fk % W];
            const int64_t b0 = lo + fk * B, nb = hi - b0 < B ? hi - b0 : B;
            fk++;
            ss_packing rp;
            ss_run_pack(&run, b0, nb, &rp);
            memcpy(sl->seq, rp.start, (size_t)nb * sizeof(int64_t));
            memcpy(sl->seq + nb, rp.len, (size_t)nb * sizeof(int64_t));
            sl->pk = (ss_packing){nb, rp.rows, sl->seq, sl->seq + nb, b0};
            for (int64_t i = 0; i < nb && mk != SS_METRIC_LOSS; i++)
                if ((st = ss_prompt_answer_ids(m->tok, run.p, &run.p->items[b0 + i], &answer[i],
                                               mk == SS_METRIC_LOGITDIFF ? &wrong[i] : NULL)))
                    goto out;
            if (method == A_ATP) {
                /* The corrupt run first: same lengths, so the same packing. */
                int32_t *ctok = ss_malloc((size_t)rp.rows * sizeof(int32_t), "corrupt tokens");
                if (!ctok) { st = SS_ERR_NOMEM; goto out; }
                for (int64_t i = 0; i < nb; i++)
                    memcpy(ctok + rp.start[i], kps->items[b0 + i].tokens, (size_t)rp.len[i] * sizeof(int32_t));
                ss_forward_opts fo = {.want = want, .hook = ss_keep_rows_hook, .hook_ctx = &sl->cacts, .read_only = 1};
                if (dpath) fo.hook = dev_keep, fo.hook_ctx = &sl->dcacts, fo.hook_on_device = 1;
                st = ss_forward(m, run.be, ctok, &rp, &fo, NULL);
                free(ctok);
                if (st) goto out;
            }
            /* The clean pass: metric, activations (gradxact, atp, ig) and gradients (all but ig). */
            ss_forward_opts fo = {.want = want, .hook = ss_keep_rows_hook, .hook_ctx = &sl->acts, .read_only = 1};
            ss_grad_opts go = {.want = want, .hook = ss_keep_rows_hook, .hook_ctx = &grads, .recompute = job->recompute};
            if (dpath) {
                fo.hook = dev_keep, fo.hook_ctx = &sl->dacts, fo.hook_on_device = 1;
                go.hook = dev_attr_hook, go.hook_ctx = &dattr, go.hook_on_device = 1;
            }
            if ((st = ss_fb_forward(m, run.be, run.packed, &rp, method == A_GRAD ? NULL : &fo, &mt,
                                    method == A_IG ? NULL : &go, metric + b0, &sl->ps)))
                goto out;
        } else {
            dattr.a = slots[bk % W].dacts.rows, dattr.c = slots[bk % W].dcacts.rows; /* the batch whose gradients come */
            st = ss_fb_backward(slots[bk % W].ps);
            slots[bk % W].ps = NULL;
            if (st) goto out;
        }
        if (m->pipe_hold) { /* what this pass sends goes now, with what the next one receives */
            const int64_t nbk = forward ? bk : bk + 1;
            int64_t rows = 0, n_seq = 0;
            ss_pipe_next next = SS_PIPE_NEXT_NONE;
            if (nbk < n_steps && fk < n_steps && fk - nbk < W) {
                const int64_t b0 = lo + fk * B;
                n_seq = hi - b0 < B ? hi - b0 : B;
                for (int64_t i = 0; i < n_seq; i++) rows += run.p->items[b0 + i].n_tokens;
                next = SS_PIPE_NEXT_FORWARD;
            } else if (nbk < n_steps) {
                rows = slots[nbk % W].pk.rows, n_seq = slots[nbk % W].pk.n_seq;
                next = SS_PIPE_NEXT_BACKWARD;
            }
            const ss_grad_opts gw = {.want = want}; /* the batches' backward passes (none for ig) */
            if ((st = ss_model_pipe_release(m, next, rows, n_seq, method == A_ATP ? 2 : 1,
                                            method != A_IG && ss_backward_gets_grad(m, &gw))))
                goto out;
        }
        if (forward) continue;
        {
            const int64_t step = bk;
            slot_t *sl = &slots[bk % W];
            bk++;
            const ss_packing pk = sl->pk;
            const int64_t b0 = pk.first, nb = pk.n_seq;
            /* the device's sums over positions read the batch's starts and lengths (sl->seq, one array) */
            if (dpath && red == R_POSITIONS &&
                (st = run.be->upload(run.be, d_seq, sl->seq, (size_t)(2 * nb) * sizeof(int64_t))))
                goto out;
            for (int k = 0; k < n_sites; k++) {
                ss_site s;
                ss_site_get(cfg, site_ids[k], &s);
                const int64_t w = s.width, n = pk.rows * w;
                const int mine = ss_model_computes_site(m, &s); /* (a pipeline stage: else another stage's site) */
                const float *g = grads.rows[s.id], *a = sl->acts.rows[s.id], *c = sl->cacts.rows[s.id];
                float *attr = grads.rows[s.id]; /* computed in place */
                const int dsum = dsum_all && mine;
                if (method == A_IG) {
                    /* Midpoint rule over alpha in (0, 1), then (a - baseline) · mean gradient. */
                    memset(one, 0, (size_t)ns);
                    one[s.id] = 1;
                    const float *clean = dpath ? sl->dacts.rows[s.id] : a;
                    if (mine && (st = ib->zero(ib, gsum, (size_t)n * sizeof(double)))) goto out;
                    ig_sum igs = {ib, s.id, gsum};
                    ss_grad_opts go = {.want = one, .hook = ig_add_hook, .hook_ctx = &igs, .hook_on_device = dpath,
                                       .recompute = job->recompute};
                    /* The steps' passes are independent: a pipeline runs them one
                     * forward, one backward like the batches (each step its own alpha,
                     * as the editing hook sees it in both halves; step i in slot i % Wig),
                     * adding each step's gradient in step order. */
                    m->pipe_hold = w_ig > 1;
                    for (int fi = 0, bi = 0; bi < steps;) {
                        if (fi < steps && fi - bi < Wig) {
                            ig_pts[fi % Wig] = (ig_point){ib, s.id, clean, dbase[k], (fi + 0.5) / steps};
                            ss_forward_opts fo = {.want = one, .hook = ig_hook, .hook_ctx = &ig_pts[fi % Wig],
                                                  .hook_on_device = dpath};
                            if ((st = ss_fb_forward(m, run.be, run.packed, &pk, &fo, &mt, &go, NULL, &ig_pass[fi % Wig])))
                                goto out;
                            fi++;
                        } else {
                            st = ss_fb_backward(ig_pass[bi % Wig]);
                            ig_pass[bi % Wig] = NULL;
                            if (st) goto out;
                            bi++;
                            if (progress)
                                progress(job->progress_ctx, (b0 - lo) * passes + nb * (1 + k * (steps + 1) + bi),
                                         (hi - lo) * passes);
                        }
                        if (m->pipe_hold) { /* the steps carry no metric between the stages */
                            const ss_pipe_next next = bi >= steps                  ? SS_PIPE_NEXT_NONE
                                                      : fi < steps && fi - bi < Wig ? SS_PIPE_NEXT_FORWARD
                                                                                    : SS_PIPE_NEXT_BACKWARD;
                            if ((st = ss_model_pipe_release(m, next, pk.rows, 0, 1, ss_backward_gets_grad(m, &go))))
                                goto out;
                        }
                    }
                    m->pipe_hold = 0;
                    ig_point pt = {ib, s.id, clean, dbase[k], 0};
                    ss_forward_opts fo = {.want = one, .hook = ig_hook, .hook_ctx = &pt, .hook_on_device = dpath};
                    if ((st = ss_forward_backward(m, run.be, run.packed, &pk, &fo, &mt, NULL, base_metric + k * N + b0)))
                        goto out;
                    if (mine && ((st = ib->ig_attr(ib, dpath ? dattr.attr[s.id] : attr, clean, dbase[k], gsum, steps,
                                                   pk.rows, w)) ||
                                 (dpath && (st = run.be->download(run.be, attr, dattr.attr[s.id], (size_t)n * sizeof(float))))))
                        goto out;
                    /* Completeness: the attributions of a prompt add up to metric - metric(baseline). */
                    for (int64_t i = 0; i < nb && mine; i++) {
                        double sum = 0;
                        for (int64_t q = pk.start[i] * w; q < (pk.start[i] + pk.len[i]) * w; q++) sum += attr[q];
                        complete[k * N + b0 + i] = sum - (metric[b0 + i] - base_metric[k * N + b0 + i]);
                    }
                } else if (dpath && mine && !dsum) {
                    if ((st = run.be->download(run.be, attr, dattr.attr[s.id], (size_t)n * sizeof(float)))) goto out;
                } else if (dsum) {
                    if ((st = run.be->seq_sums(run.be, d_sums, dattr.attr[s.id], w, nb, d_seq, d_seq + nb)) ||
                        (st = run.be->download(run.be, hsum, d_sums, (size_t)(nb * w) * sizeof(double))))
                        goto out;
                } else if ((method == A_GRADXACT || method == A_ATP) && mine) {
                    host_work hw = {.op = H_PRODUCT, .attr = attr, .g = g, .a = a, .c = method == A_ATP ? c : NULL, .n = n};
                    host_run(&hw, 1 << 16);
                }
                if (!mine) {
                    /* Rank 0 takes this site's block from the stage that computed it, now, in site order. */
                    if (rank == 0 && red != R_PROMPTS &&
                        (st = receive_site(comm, ss_model_stage_of(m, &s), &s, dsets[k], red == R_NONE, T, b0, nb, outbuf)))
                        goto out;
                    continue;
                }
                /* A prompt without a metric (the loss of one token) has no attributions either. */
                for (int64_t i = 0; i < nb && !dsum; i++)
                    if (isnan(metric[b0 + i]))
                        for (int64_t q = pk.start[i] * w; q < (pk.start[i] + pk.len[i]) * w; q++) attr[q] = NAN;
                /* Out: NaN-padded [nb, T, ...], or summed over positions or over prompts. */
                if (red == R_PROMPTS) {
                    host_work hw = {.op = H_PROMPTS, .attr = attr, .pk = &pk, .metric = metric + b0, .w = w,
                                    .n = T * w, .sum = red_sum[k]};
                    host_run(&hw, 1 << 14);
                    for (int64_t i = 0; i < nb; i++)
                        for (int64_t t = 0; t < pk.len[i] && !isnan(metric[b0 + i]); t++) red_cnt[k][t] += 1;
                    continue;
                }
                int64_t start[4] = {b0, 0, 0, 0}, count[4] = {nb, 0, 0, 0};
                int nd = 1;
                if (red == R_NONE) {
                    for (int64_t q = 0; q < nb * T * w; q++) outbuf[q] = NAN;
                    for (int64_t i = 0; i < nb; i++)
                        memcpy(outbuf + i * T * w, attr + pk.start[i] * w, (size_t)(pk.len[i] * w) * sizeof(float));
                    count[nd++] = T;
                } else if (dsum) { /* the device's sums; NaN for a prompt without a metric */
                    for (int64_t i = 0; i < nb; i++)
                        for (int64_t u = 0; u < w; u++)
                            outbuf[i * w + u] = isnan(metric[b0 + i]) ? NAN : (float)hsum[i * w + u];
                } else {
                    host_work hw = {.op = H_POSITIONS, .attr = attr, .pk = &pk, .w = w, .n = w, .out = outbuf};
                    host_run(&hw, 64);
                }
                for (int e = 0; e < s.ndim; e++) count[nd++] = s.dims[e];
                if (rank == 0) st = ss_h5_dset_write(dsets[k], start, count, outbuf);
                else
                    st = ss_comm_send(comm, 0, piped ? s.id : k, outbuf,
                                      (size_t)(nb * (red == R_NONE ? T : 1) * w) * sizeof(float));
                if (st) goto out;
                /* The table's scores: the sum over prompts and positions, kept in red_sum when not reducing
                 * prompts (on the device path, of each prompt's sum over positions). */
                if (dsum) {
                    for (int64_t i = 0; i < nb; i++)
                        for (int64_t u = 0; u < w && !isnan(metric[b0 + i]); u++) red_sum[k][u] += hsum[i * w + u];
                    continue;
                }
                host_work hw = {.op = H_TABLE, .attr = attr, .pk = &pk, .metric = metric + b0, .w = w, .n = w,
                                .sum = red_sum[k]};
                host_run(&hw, 64);
            }
            if (progress) progress(job->progress_ctx, (b0 - lo + nb) * passes, (hi - lo) * passes);
            /* Rank 0: the step's batch of every other rank or copy of the pipeline,
             * in order (outbuf is free again); a copy's sites from their stages. */
            for (int q = 1; rank == 0 && red != R_PROMPTS && q < parts; q++) {
                int64_t qlo, qhi;
                ss_comm_shard(N, B, q, parts, &qlo, &qhi);
                const int64_t qb0 = qlo + step * B, qnb = qhi - qb0 < B ? qhi - qb0 : B;
                if (qb0 >= qhi) continue;
                if (!piped) st = receive_batch(comm, q, cfg, site_ids, n_sites, dsets, red == R_NONE, T, qb0, qnb, outbuf);
                for (int k = 0; piped && !st && k < n_sites; k++) {
                    ss_site s;
                    ss_site_get(cfg, site_ids[k], &s);
                    st = receive_site(comm, q * P + ss_model_stage_of(m, &s), &s, dsets[k], red == R_NONE, T, qb0, qnb,
                                      outbuf);
                }
                if (st) {
                    ss_error_context(st, "receiving the attributions of %s %d for prompts %lld..%lld",
                                     piped ? "pipeline copy" : "rank", q, (long long)qb0, (long long)(qb0 + qnb - 1));
                    goto out;
                }
            }
            if (timing && step == 0) {
                if ((st = run.be->sync(run.be))) goto out;
                t_first = ss_now();
                first_prompts = nb;
            }
        }
    }
    m->pipe_hold = 0; /* the last pass's blocks went with its release */
    if (timing && n_steps > 0) {
        if ((st = run.be->sync(run.be))) goto out;
        ss_timing_batches("attribute", rank, size, t_start, t_first, first_prompts, hi - lo - first_prompts);
    }

    /* Rank 0 takes the per-prompt metrics (IG: and baseline metrics, completeness
     * errors) of every rank in input order, and the sums over prompts of all
     * ranks, added in rank order (a site's sums are zero where it is not
     * computed). First within each group of dcomm: its rank 0 then holds every
     * prompt's values of what its stage has (every stage has the metrics; a
     * site's completeness errors come from its stage); then, in a pipeline,
     * each site's owner stage of the first copy hands its errors to rank 0. */
    {
        double **arr = ss_malloc((size_t)(1 + 2 * n_sites) * sizeof *arr, "metrics to gather");
        int n_arr = 0;
        if (!arr) { st = SS_ERR_NOMEM; goto out; }
        arr[n_arr++] = metric;
        for (int k = 0; method == A_IG && k < n_sites; k++) {
            ss_site s;
            ss_site_get(cfg, site_ids[k], &s);
            arr[n_arr++] = base_metric + k * N;
            if (ss_model_computes_site(m, &s)) arr[n_arr++] = complete + k * N;
        }
        st = ss_gather_shares(dcomm, (void *const *)arr, n_arr, sizeof(double), N, B, lo, hi);
        free(arr);
    }
    for (int k = 0; !st && piped && method == A_IG && k < n_sites; k++) {
        ss_site s;
        ss_site_get(cfg, site_ids[k], &s);
        const int owner = ss_model_stage_of(m, &s);
        if (owner == 0) continue;
        if (rank == owner) st = ss_comm_send(comm, 0, 1, complete + k * N, (size_t)N * sizeof(double));
        else if (rank == 0) st = ss_comm_recv(comm, owner, 1, complete + k * N, (size_t)N * sizeof(double));
    }
    for (int k = 0; !st && size > 1 && k < n_sites; k++) {
        ss_site s;
        ss_site_get(cfg, site_ids[k], &s);
        st = ss_comm_allreduce_f64(comm, red_sum[k], (size_t)((red == R_PROMPTS ? T : 1) * s.width));
        if (!st && red == R_PROMPTS) st = ss_comm_allreduce_f64(comm, red_cnt[k], (size_t)T);
    }
    if (piped && !st) st = ss_pipeline_report(m, 0, h, 0);
    if (st) { ss_error_context(st, "gathering the metrics and sums of the ranks at rank 0"); goto out; }
    if (rank != 0) goto out;

    /* Metrics, reductions over prompts, completeness. */
    const char *dn[1] = {"prompt"};
    for (int64_t i = 0; i < N; i++) metric_f[i] = (float)metric[i];
    if ((st = ss_h5_write_array(h, "/metric", SS_H5_F32, 1, &N, dn, metric_f))) goto out;
    double worst_rel = 0;
    for (int k = 0; k < n_sites; k++) {
        ss_site s;
        ss_site_get(cfg, site_ids[k], &s);
        char path[192];
        if (red == R_PROMPTS) {
            float *v = ss_malloc((size_t)(T * s.width) * sizeof(float), "attributions");
            if (!v) { st = SS_ERR_NOMEM; goto out; }
            /* a sum over no prompt (every one reaching position t has a NaN metric) is undefined: NaN */
            for (int64_t q = 0; q < T * s.width; q++) v[q] = red_cnt[k][q / s.width] > 0 ? (float)red_sum[k][q] : NAN;
            int64_t dims[3] = {T, s.dims[0], s.dims[1]};
            const char *names[3] = {"position", s.dim_names[0], s.dim_names[1]};
            snprintf(path, sizeof path, "/attr/%s", s.name);
            st = ss_h5_write_array(h, path, SS_H5_F32, 1 + s.ndim, dims, names, v);
            free(v);
            if (st) goto out;
        } else {
            st = ss_h5_dset_close(dsets[k]);
            dsets[k] = NULL;
            if (st) goto out;
        }
        if (method != A_IG) continue;
        for (int64_t i = 0; i < N; i++) metric_f[i] = (float)base_metric[k * N + i];
        snprintf(path, sizeof path, "/ig/%s/baseline_metric", s.name);
        if ((st = ss_h5_write_array(h, path, SS_H5_F32, 1, &N, dn, metric_f))) goto out;
        site_rel[k] = 0;
        for (int64_t i = 0; i < N; i++) {
            metric_f[i] = (float)complete[k * N + i];
            double diff = fabs(metric[i] - base_metric[k * N + i]), rel = diff > 0 ? fabs(complete[k * N + i]) / diff : 0;
            site_rel[k] = rel > site_rel[k] ? rel : site_rel[k];
        }
        worst_rel = site_rel[k] > worst_rel ? site_rel[k] : worst_rel;
        snprintf(path, sizeof path, "/ig/%s/completeness_error", s.name);
        if ((st = ss_h5_write_array(h, path, SS_H5_F32, 1, &N, dn, metric_f))) goto out;
        snprintf(path, sizeof path, "/ig/%s", s.name);
        if ((st = ss_h5_attr_f64(h, path, "completeness_max_rel_error", site_rel[k]))) goto out;
    }
    if (method == A_IG && (st = ss_h5_attr_f64(h, "/", "ig_completeness_max_rel_error", worst_rel))) goto out;
    if ((st = ss_h5_commit(h))) { h = NULL; goto out; }
    h = NULL;

    if (job->table) {
        FILE *t = job->table;
        double msum = 0;
        int64_t mn = 0;
        for (int64_t i = 0; i < N; i++)
            if (!isnan(metric[i])) msum += metric[i], mn++;
        fprintf(t, "\n%s over %lld prompts: mean %.4f; method %s\n", ss_metric_name(mk), (long long)N,
                mn ? msum / (double)mn : NAN, job->method ? job->method : "gradxact");
        if (method == A_IG)
            fprintf(t, "integrated gradients, %d steps, %s baseline; [c ...]: the largest completeness error of a prompt,\n"
                       "|sum of attributions - (metric - metric at baseline)| / |metric - metric at baseline|\n",
                    steps, job->stats ? "mean" : "zero");
        int top = job->top > 0 ? job->top : 10;
        /* the number the table keeps: no more than the widest site has, and said when a site has fewer */
        int64_t wmin = INT64_MAX, wmax = 0;
        for (int k = 0; k < n_sites; k++) {
            ss_site s;
            ss_site_get(cfg, site_ids[k], &s);
            wmin = s.width < wmin ? s.width : wmin, wmax = s.width > wmax ? s.width : wmax;
        }
        if (top > wmax) top = (int)wmax;
        if (top == wmin && top == wmax)
            fprintf(t, "all %d units per site by |sum of attributions over prompts and positions| (the sum shown):\n",
                    top);
        else
            fprintf(t, "top %d units per site%s by |sum of attributions over prompts and positions| (the sum shown):\n",
                    top,
                    top > wmin ? " (all the units of a site with fewer)" : "");
        for (int k = 0; k < n_sites; k++) {
            ss_site s;
            ss_site_get(cfg, site_ids[k], &s);
            if (!mn) { /* no prompt with a metric: sums over none, not scores of 0 (show: no values) */
                fprintf(t, "%-28s (no values: every prompt's %s is NaN)\n", s.name, ss_metric_name(mk));
                continue;
            }
            scored *sc = ss_malloc((size_t)s.width * sizeof *sc, "scores");
            if (!sc) { st = SS_ERR_NOMEM; goto out; }
            for (int64_t u = 0; u < s.width; u++) {
                double v = 0;
                if (red == R_PROMPTS)
                    for (int64_t q = 0; q < T; q++) v += red_sum[k][q * s.width + u];
                else
                    v = red_sum[k][u];
                sc[u] = (scored){v, u};
            }
            qsort(sc, (size_t)s.width, sizeof *sc, by_magnitude);
            fprintf(t, "%-28s", s.name);
            if (method == A_IG) fprintf(t, " [c %5.2g%%]", 100 * site_rel[k]);
            for (int q = 0; q < top && q < s.width; q++) {
                char un[32];
                unit_name(&s, sc[q].u, un, sizeof un);
                fprintf(t, " %6s %+.3g", un, sc[q].v);
            }
            fprintf(t, "\n");
            free(sc);
        }
    }
out:
    for (int j = 0; slots && j < W; j++) {
        ss_fb_free(slots[j].ps);
        free(slots[j].seq);
        for (int i = 0; i < ns; i++) {
            if (slots[j].dacts.rows && slots[j].dacts.rows[i]) run.be->release(run.be, slots[j].dacts.rows[i]);
            if (slots[j].dcacts.rows && slots[j].dcacts.rows[i]) run.be->release(run.be, slots[j].dcacts.rows[i]);
        }
        free(slots[j].dacts.rows);
        free(slots[j].dcacts.rows);
        if (j == 0) continue; /* the job's own buffers, freed below */
        for (int i = 0; i < ns; i++) {
            if (slots[j].acts.rows) free(slots[j].acts.rows[i]);
            if (slots[j].cacts.rows) free(slots[j].cacts.rows[i]);
        }
        free(slots[j].acts.rows);
        free(slots[j].cacts.rows);
    }
    free(slots);
    for (int i = 0; ig_pass && i < Wig; i++) ss_fb_free(ig_pass[i]);
    free(ig_pass);
    free(ig_pts);
    if (dcomm_owned) ss_comm_free(dcomm);
    for (int k = 0; dsets && k < n_sites; k++)
        if (dsets[k]) ss_h5_dset_close(dsets[k]);
    if (h) ss_h5_abort(h);
    for (int i = 0; dattr.attr && i < ns; i++)
        if (dattr.attr[i]) run.be->release(run.be, dattr.attr[i]);
    free(dattr.attr);
    if (d_seq) run.be->release(run.be, d_seq);
    if (d_sums) run.be->release(run.be, d_sums);
    if (gsum) ib->release(ib, gsum);
    for (int k = 0; dbase && dpath && k < n_sites; k++)
        if (dbase[k]) ib->release(ib, dbase[k]);
    free(dbase);
    free(hsum);
    for (int i = 0; i < ns; i++) {
        if (acts.rows) free(acts.rows[i]);
        if (grads.rows) free(grads.rows[i]);
        if (cacts.rows) free(cacts.rows[i]);
        if (base) free(base[i]);
        if (red_sum) free(red_sum[i]);
        if (red_cnt) free(red_cnt[i]);
    }
    free(acts.rows), free(grads.rows), free(cacts.rows), free(base), free(red_sum), free(red_cnt), free(dsets);
    free(want), free(one), free(site_ids), free(metric), free(metric_f), free(base_metric), free(complete), free(site_rel);
    free(outbuf), free(answer), free(wrong);
    ss_prompts_free(kps);
    ss_run_close(&run);
    return st;
}
