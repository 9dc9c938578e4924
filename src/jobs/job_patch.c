/* `patch`: activation patching between paired prompts. For each pair (line i
 * of --clean and of --corrupt, the same number of tokens) the model runs on
 * the corrupt prompt with one piece of one site replaced by its value in the
 * clean run (or the reverse with --denoise), and the metric's movement is
 * normalised: (patched - corrupt) / (clean - corrupt). 1 means the piece
 * carries the whole difference, 0 none of it.
 *
 * Several ranks (mpirun -np N, or copies of a --pipeline P on a multiple of P
 * ranks) split the pairs into contiguous blocks; each pair's passes are
 * those of one process, so the values are the same bits, and the last stage
 * of the first copy gathers them in pair order and writes the file. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "subscope/dist.h"
#include "subscope/forward.h"
#include "subscope/h5out.h"
#include "subscope/jobs.h"
#include "subscope/util.h"

typedef struct {
    float **rows;        /* by site id: the run's [T, width] values, or NULL */
    int64_t T;
} site_store;

static ss_status keep_rows(void *vctx, const ss_site *s, float *data, int64_t ld, const ss_packing *pk,
                           const int64_t *pattern_off) {
    site_store *st = vctx;
    if (!st->rows[s->id]) return SS_OK;
    for (int64_t t = 0; t < pk->len[0]; t++)
        memcpy(st->rows[s->id] + t * s->width, data + t * ld, (size_t)s->width * sizeof(float));
    return SS_OK;
}

typedef struct {
    const float *src;    /* the other run's [T, width] at the patched site */
    int site_id;
    int64_t pos;         /* -1: all positions */
    int64_t from, to;    /* units [from, to) */
} patch_piece;

static ss_status patch_hook(void *vctx, const ss_site *s, float *data, int64_t ld, const ss_packing *pk,
                            const int64_t *pattern_off) {
    const patch_piece *p = vctx;
    if (s->id != p->site_id) return SS_OK;
    for (int64_t t = 0; t < pk->len[0]; t++) {
        if (p->pos >= 0 && t != p->pos) continue;
        memcpy(data + t * ld + p->from, p->src + t * s->width + p->from, (size_t)(p->to - p->from) * sizeof(float));
    }
    return SS_OK;
}

/* The metric of a run, scored where the logits are (the backend's gather and
 * logit_scores) so that a few numbers leave a device instead of the logits:
 * logitdiff = logit(answer) - logit(wrong) at the last position (the
 * unembedding runs for that row alone, SS_LOGITS_LAST), or loss = the mean
 * next-token cross-entropy over the prompt against the clean prompt's tokens
 * (ss_loss_scorer, as forward --loss). Buffers for prompts of up to cap tokens. */
typedef struct {
    const ss_backend *be;
    int logitdiff;
    int32_t answer, wrong;    /* logitdiff: of the current pair */
    const int32_t *targets;   /* loss: the clean prompt's tokens */
    int64_t *idx, *d_idx;     /* logitdiff: the two logits to gather */
    float *g, *d_g;
    ss_loss_scorer loss;
    double value;             /* the last run's metric; NaN on a stage without the head */
} scorer;

static ss_status scorer_open(scorer *sc, const ss_backend *be, int logitdiff, int64_t cap) {
    *sc = (scorer){.be = be, .logitdiff = logitdiff};
    if (!logitdiff) return ss_loss_open(&sc->loss, be, cap, 1);
    SS_TRY(be->alloc(be, 2 * sizeof(int64_t), "logit indices", (void **)&sc->d_idx));
    SS_TRY(be->alloc(be, 2 * sizeof(float), "gathered logits", (void **)&sc->d_g));
    sc->idx = ss_malloc(2 * sizeof(int64_t), "logit indices");
    sc->g = ss_malloc(2 * sizeof(float), "gathered logits");
    return sc->idx && sc->g ? SS_OK : SS_ERR_NOMEM;
}

static void scorer_close(scorer *sc) {
    if (!sc->be) return;
    if (sc->d_idx) sc->be->release(sc->be, sc->d_idx);
    if (sc->d_g) sc->be->release(sc->be, sc->d_g);
    free(sc->idx), free(sc->g);
    ss_loss_close(&sc->loss);
}

/* The forward's logits hook for logitdiff: the last row. */
static ss_status score_logitdiff(void *vctx, const float *lg, int64_t n, int64_t V) {
    (void)n, (void)V;
    scorer *sc = vctx;
    const ss_backend *be = sc->be;
    sc->idx[0] = sc->answer, sc->idx[1] = sc->wrong;
    SS_TRY(be->upload(be, sc->d_idx, sc->idx, 2 * sizeof(int64_t)));
    SS_TRY(be->gather(be, sc->d_g, lg, sc->d_idx, 2));
    SS_TRY(be->download(be, sc->g, sc->d_g, 2 * sizeof(float)));
    sc->value = (double)sc->g[0] - sc->g[1];
    return SS_OK;
}

/* One forward pass of one prompt; *metric its metric (NaN on a pipeline
 * stage without the head, or for a one-token prompt's loss). */
static ss_status run_one(ss_run *r, scorer *sc, const int32_t *tok, int64_t n, const uint8_t *want, ss_hook_fn hook,
                         void *ctx, double *metric) {
    int64_t start = 0;
    ss_packing pk = {1, n, &start, &n, 0};
    ss_forward_opts o = {.want = want, .hook = hook, .hook_ctx = ctx, .logits = SS_LOGITS_LAST,
                         .logits_hook = score_logitdiff, .logits_ctx = sc};
    if (!sc->logitdiff) {
        o.logits = SS_LOGITS_ALL, o.logits_hook = ss_loss_score, o.logits_ctx = &sc->loss;
        sc->loss.tok = sc->targets, sc->loss.pk = &pk, sc->loss.scored = 0;
    }
    sc->value = NAN;
    ss_status st = ss_forward(r->m, r->be, tok, &pk, &o, NULL);
    *metric = sc->logitdiff ? sc->value : sc->loss.scored ? sc->loss.loss[0] : NAN;
    return st;
}

static ss_status patch(const ss_patch_job *job, ss_comm *comm);

/* With --pipeline the stages run every pair together and the last one, which
 * has the logits, writes the file; an error on any rank stops them all. */
ss_status ss_job_patch(const ss_patch_job *job) {
    ss_comm *comm;
    SS_TRY(ss_comm_world(&comm));
    return ss_comm_check(comm, patch(job, comm));
}

static ss_status patch(const ss_patch_job *job, ss_comm *comm) {
    ss_run clean;
    ss_prompts *kps = NULL;      /* the corrupt prompts */
    ss_status st;
    uint8_t *want = NULL, *one = NULL;
    site_store sc = {0}, sk = {0};
    float **effect = NULL, **patched = NULL, *m_clean = NULL, *m_corrupt = NULL;
    scorer scr = {0};
    int *site_ids = NULL, n_sites = 0;
    int64_t *n_pieces = NULL;
    ss_h5 *h = NULL;
    ss_comm *dcomm = NULL;
    int dcomm_owned = 0;

    const char *per = job->per ? job->per : "site";
    int per_site = !strcmp(per, "site"), per_pos = !strcmp(per, "position"), per_head = !strcmp(per, "head"),
        per_unit = !strcmp(per, "neuron");
    if (!per_site && !per_pos && !per_head && !per_unit)
        return ss_errorf(SS_ERR_ARG, "--per must be site, position, head or neuron, got '%s'", per);
    const char *metric = job->metric ? job->metric : "logitdiff";
    int logitdiff = !strcmp(metric, "logitdiff");
    if (!logitdiff && strcmp(metric, "loss")) return ss_errorf(SS_ERR_ARG, "--metric must be logitdiff or loss, got '%s'", metric);

    if (!job->corrupt) return ss_errorf(SS_ERR_ARG, "--corrupt FILE is required");
    ss_run_opts ro = job->run;
    ro.pipeline_replicas = 1; /* copies of a pipeline each run their share of the pairs */
    if ((st = ss_run_open(&ro, &clean))) return st;
    const ss_config *cfg = &clean.m->cfg;
    const int last_stage = clean.m->end_layer == cfg->n_layer; /* has the logits (or is the only process) */
    const int64_t N = clean.p->n, T = clean.T;
    /* This rank's pairs [lo, hi): a share of its own, or of its copy of the
     * pipeline; dcomm: the ranks that run the same blocks on other shares. */
    int part, parts;
    ss_model_data_part(clean.m, comm, &part, &parts);
    int64_t lo, hi;
    ss_comm_shard(N, 1, part, parts, &lo, &hi);
    if ((st = ss_model_data_comm(clean.m, comm, &dcomm, &dcomm_owned))) goto out;
    const int writer = last_stage && ss_comm_rank(dcomm) == 0;
    if ((st = ss_run_read_paired(&clean, job->corrupt, job->run.truncate, &kps))) goto out;
    if ((st = scorer_open(&scr, clean.be, logitdiff, T))) goto out;

    /* Sites, and how many pieces each is cut into. */
    int ns = ss_sites_count(cfg), nsel;
    want = ss_calloc((size_t)ns, 1, "sites");
    one = ss_calloc((size_t)ns, 1, "sites");
    site_ids = ss_malloc((size_t)ns * sizeof *site_ids, "sites");
    n_pieces = ss_malloc((size_t)ns * sizeof *n_pieces, "sites");
    sc.rows = ss_calloc((size_t)ns, sizeof *sc.rows, "site values");
    sk.rows = ss_calloc((size_t)ns, sizeof *sk.rows, "site values");
    if (!want || !one || !site_ids || !n_pieces || !sc.rows || !sk.rows) { st = SS_ERR_NOMEM; goto out; }
    if (!job->sites || !*job->sites) { st = ss_errorf(SS_ERR_ARG, "--sites is required"); goto out; }
    if ((st = ss_sites_select(cfg, job->sites, want, &nsel))) goto out;
    for (int i = 0; i < ns; i++) {
        if (!want[i]) continue;
        ss_site s;
        ss_site_get(cfg, i, &s);
        if (!s.per_token) { st = ss_errorf(SS_ERR_ARG, "site %s cannot be patched (no per-token vector)", s.name); goto out; }
        if (per_head && s.ndim != 2) { st = ss_errorf(SS_ERR_ARG, "--per head: site %s has no heads (use q/k/v/z sites)", s.name); goto out; }
        n_pieces[n_sites] = per_site ? 1 : per_pos ? T : per_head ? s.dims[0] : s.width;
        site_ids[n_sites++] = i;
        if (!(sc.rows[i] = ss_malloc((size_t)(T * s.width) * sizeof(float), "clean values")) ||
            !(sk.rows[i] = ss_malloc((size_t)(T * s.width) * sizeof(float), "corrupt values"))) { st = SS_ERR_NOMEM; goto out; }
    }
    sc.T = sk.T = T;
    if ((st = ss_run_place(&clean, &job->run))) goto out;

    effect = ss_calloc((size_t)n_sites, sizeof *effect, "effects");
    patched = ss_calloc((size_t)n_sites, sizeof *patched, "effects");
    m_clean = ss_malloc((size_t)N * sizeof(float), "metrics");
    m_corrupt = ss_malloc((size_t)N * sizeof(float), "metrics");
    if (!effect || !patched || !m_clean || !m_corrupt) { st = SS_ERR_NOMEM; goto out; }
    for (int k = 0; k < n_sites; k++) {
        size_t n = (size_t)(N * n_pieces[k]);
        if (!(effect[k] = ss_malloc(n * sizeof(float), "effects")) || !(patched[k] = ss_malloc(n * sizeof(float), "effects"))) {
            st = SS_ERR_NOMEM;
            goto out;
        }
        for (size_t q = 0; q < n; q++) effect[k][q] = patched[k][q] = NAN;
    }

    int64_t total = 0, done = 0;
    for (int k = 0; k < n_sites; k++) total += n_pieces[k];
    total *= hi - lo;
    /* SUBSCOPE_TIMING=1: the first pair (lazy module loads, cuBLAS's first
     * choices) and the later ones timed apart, as forward and attribute time
     * their batches (each pass ends with its metric on the host) */
    const int timing = ss_timing_on();
    const double t_start = ss_now();
    double t_first = 0;
    for (int64_t i = lo; i < hi; i++) {
        if (timing && i == lo + 1) t_first = ss_now();
        const ss_prompt *cp = &clean.p->items[i], *kp = &kps->items[i];
        int64_t n = cp->n_tokens;
        int32_t answer = -1, wrong = -1;
        if (logitdiff && (st = ss_prompt_answer_ids(clean.m->tok, clean.p, cp, &answer, &wrong))) goto out;
        /* Both runs, keeping every selected site. */
        scr.answer = answer, scr.wrong = wrong, scr.targets = cp->tokens;
        double mc, mk;
        if ((st = run_one(&clean, &scr, cp->tokens, n, want, keep_rows, &sc, &mc))) goto out;
        if ((st = run_one(&clean, &scr, kp->tokens, n, want, keep_rows, &sk, &mk))) goto out;
        m_clean[i] = (float)mc;
        m_corrupt[i] = (float)mk;
        /* The base run takes pieces from the other one. */
        const int32_t *base = job->denoise ? cp->tokens : kp->tokens;
        site_store *from = job->denoise ? &sk : &sc;
        for (int k = 0; k < n_sites; k++) {
            ss_site s;
            ss_site_get(cfg, site_ids[k], &s);
            memset(one, 0, (size_t)ns);
            one[s.id] = 1;
            for (int64_t p = 0; p < n_pieces[k]; p++) {
                patch_piece pc = {from->rows[s.id], s.id, -1, 0, s.width};
                if (per_pos) {
                    if (p >= n) break; /* positions past this prompt stay NaN */
                    pc.pos = p;
                } else if (per_head) {
                    pc.from = p * s.dims[1], pc.to = (p + 1) * s.dims[1];
                } else if (per_unit) {
                    pc.from = p, pc.to = p + 1;
                }
                double mp;
                if ((st = run_one(&clean, &scr, base, n, one, patch_hook, &pc, &mp))) goto out;
                patched[k][i * n_pieces[k] + p] = (float)mp;
                effect[k][i * n_pieces[k] + p] = mc != mk ? (float)((mp - mk) / (mc - mk)) : NAN;
            }
            done += n_pieces[k];
            if (job->progress && writer) job->progress(job->progress_ctx, done, total);
        }
    }

    if (timing && hi > lo)
        ss_timing_batches("patch", ss_comm_rank(comm), ss_comm_size(comm), t_start, hi - lo > 1 ? t_first : ss_now(), 1,
                          hi - lo - 1);
    if (clean.m->pipe && (st = ss_pipeline_report(clean.m, clean.m->n_stages - 1, NULL, 0))) goto out;
    /* The last stages gather every share, in pair order, on the writer. */
    if (last_stage) {
        void *metrics[2] = {m_clean, m_corrupt};
        if ((st = ss_gather_shares(dcomm, metrics, 2, sizeof(float), N, 1, lo, hi))) goto out;
        for (int k = 0; k < n_sites; k++) {
            void *arr[2] = {effect[k], patched[k]};
            if ((st = ss_gather_shares(dcomm, arr, 2, (size_t)n_pieces[k] * sizeof(float), N, 1, lo, hi))) goto out;
        }
    }
    if (!writer) goto out;
    if ((st = ss_h5_create(job->out, &h))) goto out;
    if ((st = ss_write_provenance(h, clean.m, job->command_line, clean.be))) goto out;
    if ((st = ss_h5_attr_str(h, "/", "clean_path", job->run.input)) || (st = ss_h5_attr_str(h, "/", "corrupt_path", job->corrupt)) ||
        (st = ss_h5_attr_str(h, "/", "metric", metric)) || (st = ss_h5_attr_str(h, "/", "per", per)) ||
        (st = ss_h5_attr_str(h, "/", "direction", job->denoise ? "corrupt into clean (--denoise)" : "clean into corrupt")) ||
        (st = ss_h5_attr_i64(h, "/", "ranks", ss_comm_size(comm))) ||
        (st = ss_h5_attr_i64(h, "/", "pipeline_stages", clean.m->pipe ? clean.m->n_stages : 1)))
        goto out;
    const char *dn1[1] = {"pair"};
    if ((st = ss_h5_write_array(h, "/clean_metric", SS_H5_F32, 1, &N, dn1, m_clean)) ||
        (st = ss_h5_write_array(h, "/corrupt_metric", SS_H5_F32, 1, &N, dn1, m_corrupt)))
        goto out;
    for (int k = 0; k < n_sites; k++) {
        ss_site s;
        ss_site_get(cfg, site_ids[k], &s);
        char p[256], axis[32];
        snprintf(axis, sizeof axis, "%s", per_site ? "all" : per_pos ? "position" : per_head ? "head" : s.dim_names[0]);
        if (per_unit && s.ndim == 2) snprintf(axis, sizeof axis, "unit_%lld", (long long)s.width);
        int64_t dims[2] = {N, n_pieces[k]};
        const char *names[2] = {"pair", axis};
        snprintf(p, sizeof p, "/effect/%s", s.name);
        if ((st = ss_h5_write_array(h, p, SS_H5_F32, 2, dims, names, effect[k]))) goto out;
        snprintf(p, sizeof p, "/patched_metric/%s", s.name);
        if ((st = ss_h5_write_array(h, p, SS_H5_F32, 2, dims, names, patched[k]))) goto out;
    }
    if ((st = ss_h5_commit(h))) { h = NULL; goto out; }
    h = NULL;

    /* The summary: mean normalised effect per site and piece. */
    if (job->table) {
        FILE *t = job->table;
        fprintf(t, "\nnormalised effect (patched - corrupt) / (clean - corrupt), mean over %lld pairs; per %s\n",
                (long long)N, per);
        for (int k = 0; k < n_sites; k++) {
            ss_site s;
            ss_site_get(cfg, site_ids[k], &s);
            fprintf(t, "%-28s", s.name);
            int64_t shown = n_pieces[k] < 24 ? n_pieces[k] : 24;
            for (int64_t p = 0; p < shown; p++) {
                double sum = 0;
                int64_t c = 0;
                for (int64_t i = 0; i < N; i++) {
                    float v = effect[k][i * n_pieces[k] + p];
                    if (!isnan(v)) sum += v, c++;
                }
                if (c) fprintf(t, " %5.2f", sum / (double)c);
                else fprintf(t, "     -");
            }
            fprintf(t, "%s\n", n_pieces[k] > shown ? " ..." : "");
        }
    }
out:
    if (dcomm_owned) ss_comm_free(dcomm);
    if (h) ss_h5_abort(h);
    for (int k = 0; effect && k < n_sites; k++) free(effect[k]);
    for (int k = 0; patched && k < n_sites; k++) free(patched[k]);
    free(effect);
    free(patched);
    free(m_clean);
    free(m_corrupt);
    for (int i = 0; sc.rows && i < ss_sites_count(&clean.m->cfg); i++) free(sc.rows[i]);
    for (int i = 0; sk.rows && i < ss_sites_count(&clean.m->cfg); i++) free(sk.rows[i]);
    free(sc.rows);
    free(sk.rows);
    free(want);
    free(one);
    free(site_ids);
    free(n_pieces);
    scorer_close(&scr);
    ss_prompts_free(kps);
    ss_run_close(&clean);
    return st;
}
