/* `trace`: one prompt, position by position: what the model predicts next,
 * and for each sub-model (a mask of the masks JSONL that `discover` writes
 * and `ablate` reads) how active it is, how much it contributes to that
 * prediction (gradient × activation of the prediction's log-probability,
 * summed over the sub-model's units at every position up to this one) and
 * what ablating it does to the prediction's log-probability.
 *
 * The model is causal, so one masked forward over the whole prompt gives the
 * ablated prediction at every position, and one forward-mode (tangent) pass
 * per sub-model gives its attribution at every position (ss_jvp_logprob,
 * src/model/jvp.c): the derivative of log p(prediction_t) when its
 * activations are scaled by (1 + e). Where that pass cannot run (a pipeline
 * of stages), costs more (very short prompts) or runs out of memory under auto,
 * or with --attribution-pass prefixes, attribution takes one backward pass per position instead; they
 * run as packed batches of the prompt's prefixes (lengths 1..n), each with
 * its own last-token metric, at most TRACE_ROWS rows a batch (or one prefix):
 * the n(n+1)/2 rows of all of them at once would need, for a 1024-token
 * prompt, 6 GB per GPT-2-small MLP site for activations and as much again
 * for gradients, besides the backward pass's own tape. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "subscope/backward.h"
#include "subscope/h5out.h"
#include "subscope/dist.h"
#include "subscope/jobs.h"
#include "subscope/masks.h"
#include "subscope/util.h"

typedef struct {
    const ss_mask *m;
    double **mean, **std; /* per site id, NULL where the stats file has none */
} mask_hook;

static ss_status apply_mask(void *vctx, const ss_site *s, float *data, int64_t ld, const ss_packing *pk,
                            const int64_t *pattern_off) {
    (void)pattern_off;
    const mask_hook *h = vctx;
    ss_mask_stats st = {.mean = h->mean[s->id], .std = h->std[s->id]};
    return ss_mask_apply(h->m, s, data, ld, pk, NULL, &st);
}

static int in_positions(const ss_mask *m, int64_t t) {
    if (!m->n_positions) return 1;
    for (int64_t i = 0; i < m->n_positions; i++)
        if (m->positions[i] == t) return 1;
    return 0;
}

/* log p(id) from one row of logits. */
static double logprob(const float *row, int64_t V, int32_t id) {
    double lz;
    ss_log_partition(row, 1, V, &lz);
    return row[id] - lz;
}

static void print_token(FILE *f, const ss_tokenizer *tok, int32_t id, int width) {
    char *txt = NULL, buf[16];
    size_t n = 0;
    ss_sbuf b = {0};
    /* (cut at a whole character or escape, closing quote kept; invalid UTF-8 as \xNN) */
    if (tok && ss_tokenizer_decode(tok, &id, 1, &txt, &n) == SS_OK) ss_sb_quoted_cut(&b, txt, n, '\'', width);
    if (!b.p || b.oom) snprintf(buf, sizeof buf, "#%d", id);
    free(txt);
    ss_fput_col(f, b.p && !b.oom ? b.p : buf, width);
    free(b.p);
}

static ss_status trace(const ss_trace_job *job);

/* Rows of one attribution batch of prefixes (a prefix longer than this goes alone). */
#define TRACE_ROWS 4096

static const char *const pass_names[] = {"auto", "forward", "prefixes"};

ss_status ss_trace_pass_parse(const char *s, int *out) {
    for (int i = 0; i < 3; i++)
        if (s && !strcmp(s, pass_names[i])) {
            *out = i;
            return SS_OK;
        }
    return ss_errorf(SS_ERR_ARG, "--attribution-pass: unknown value '%s' (expected auto, forward or prefixes)", s ? s : "");
}

/* The forward-mode pass's progress (sub-models done) as positions, as the prefixes report it. */
typedef struct {
    const ss_trace_job *job;
    int64_t n;
} fwd_progress;

static void fwd_progress_fn(void *vctx, int64_t done, int64_t total) {
    const fwd_progress *fp = vctx;
    fp->job->progress(fp->job->progress_ctx, total > 0 ? done * fp->n / total : fp->n, fp->n);
}

/* With --pipeline every stage runs the same passes on its own blocks; the
 * per-sub-model sums are added over the stages, and the last stage (which
 * has the logits) writes and prints. An error on any stage stops them all. */
/* A sub-model's activity is in standard units only where the statistics hold the mean and std of
 * every one of its sites, so that its mean is over units of one kind (a mean over some units
 * standardised and others raw means nothing): the first site they lack, or -1 if none. */
static int unstandardised_site(const ss_mask *mk, double *const *mean, double *const *std) {
    for (int q = 0; q < mk->n_targets; q++)
        if (!mean[mk->targets[q].site_id] || !std[mk->targets[q].site_id]) return mk->targets[q].site_id;
    return -1;
}

ss_status ss_job_trace(const ss_trace_job *job) {
    if (job->pipeline <= 1) return trace(job);
    ss_comm *comm;
    SS_TRY(ss_comm_world(&comm));
    return ss_comm_check(comm, trace(job));
}

static ss_status trace(const ss_trace_job *job) {
    if (!job->prompt || !*job->prompt) return ss_errorf(SS_ERR_ARG, "--prompt is required");
    if (!job->submodels) return ss_errorf(SS_ERR_ARG, "--submodels FILE is required");
    ss_backend *be = NULL;
    ss_model *m = NULL;
    ss_mask *masks = NULL;
    int n_masks = 0;
    int32_t *tok = NULL, *packed = NULL, *preds = NULL, answer = -1;
    size_t n_tok = 0;
    float *lg = NULL, *lgm = NULL;
    ss_site_rows acts = {0}, pacts = {0}, grads = {0};
    double **mean = NULL, **std = NULL, *lp_clean = NULL, *activity = NULL, *attrib = NULL, *delta = NULL;
    int64_t *start = NULL, *len = NULL;
    uint8_t *want = NULL;
    ss_h5 *h = NULL;
    int ns = 0;
    ss_status st;
    ss_backend_opts bo = {.tf32 = job->tf32};
    if ((st = ss_backend_open(job->device, &bo, &be))) return st;
    const ss_run_opts ro = {.model_dir = job->model_dir, .pipeline = job->pipeline,
                            .pipeline_blocks = job->pipeline_blocks, .max_memory = job->max_memory};
    if ((st = ss_model_open_stage(&ro, &m))) goto out;
    const ss_config *cfg = &m->cfg;
    ss_comm *comm = m->pipe; /* NULL: one process */
    const int last_stage = m->end_layer == cfg->n_layer;
    const int64_t V = cfg->vocab_size;
    ns = ss_sites_count(cfg);
    if (!m->tok) { st = ss_errorf(SS_ERR_ARG, "%s has no tokenizer; trace needs one", job->model_dir); goto out; }
    if ((st = ss_tokenizer_encode(m->tok, job->prompt, strlen(job->prompt), &tok, &n_tok))) {
        ss_error_context(st, "--prompt");
        goto out;
    }
    if (!n_tok) { st = ss_errorf(SS_ERR_ARG, "--prompt is empty after tokenizing"); goto out; }
    if ((int64_t)n_tok > cfg->n_positions) {
        st = ss_errorf(SS_ERR_ARG, "--prompt has %zu tokens; the model takes at most %lld", n_tok, (long long)cfg->n_positions);
        goto out;
    }
    if (job->answer) {
        if ((st = ss_answer_token_id(m->tok, job->answer, &answer))) { /* as a prompt file's "answer" */
            ss_error_context(st, "--answer");
            goto out;
        }
        if (answer < 0) { st = ss_errorf(SS_ERR_ARG, "--answer is empty after tokenizing"); goto out; }
    }
    if ((st = ss_masks_read_jsonl(cfg, job->submodels, &masks, &n_masks))) goto out;
    if (!n_masks) { st = ss_errorf(SS_ERR_ARG, "%s holds no sub-models", job->submodels); goto out; }

    /* the rows of the largest batch of prefixes: all n(n+1)/2 if no more than TRACE_ROWS, else
     * TRACE_ROWS (or the longest prefix, n, if longer) */
    const int64_t n = (int64_t)n_tok, all_rows = n * (n + 1) / 2;
    /* Which attribution pass (docs/DECISIONS.md, "trace's attribution in forward mode"): the
     * prefixes cost about n(n+1)/2 rows of a forward and a backward pass (3 forwards' work a
     * row), forward mode n rows of the primal forward and, per sub-model, of a tangent pass
     * (about 2 forwards' work a row). */
    int use_fwd = 0;
    if (job->attribution_pass == SS_TRACE_PASS_FORWARD || job->attribution_pass == SS_TRACE_PASS_AUTO) {
        ss_status why = ss_jvp_check(m, be, masks, n_masks);
        if (why && job->attribution_pass == SS_TRACE_PASS_FORWARD) {
            st = ss_error_context(why, "--attribution-pass forward");
            goto out;
        }
        if (why) {
            if (last_stage) ss_eprintf("trace: attribution by prefixes (forward mode cannot run: %s)\n", ss_last_error());
            ss_error_clear();
        } else {
            use_fwd = job->attribution_pass == SS_TRACE_PASS_FORWARD || n * (1 + 2 * (int64_t)n_masks) < 3 * all_rows;
        }
    }
    const int64_t prefix_rows = all_rows <= TRACE_ROWS ? all_rows : n > TRACE_ROWS ? n : TRACE_ROWS;
    want = ss_calloc((size_t)ns, 1, "sites");
    acts.rows = ss_calloc((size_t)ns, sizeof(float *), "activations");
    pacts.rows = ss_calloc((size_t)ns, sizeof(float *), "activations");
    grads.rows = ss_calloc((size_t)ns, sizeof(float *), "gradients");
    mean = ss_calloc((size_t)ns, sizeof(double *), "means");
    std = ss_calloc((size_t)ns, sizeof(double *), "stds");
    if (!want || !acts.rows || !pacts.rows || !grads.rows || !mean || !std) { st = SS_ERR_NOMEM; goto out; }
    for (int k = 0; k < n_masks; k++) {
        if (masks[k].mode == SS_MASK_RESAMPLE || masks[k].mode == SS_MASK_PATCH) {
            st = ss_errorf(SS_ERR_ARG, "%s: sub-model '%s' uses mode %s, which needs other prompts; trace runs one",
                           job->submodels, masks[k].name, ss_mask_mode_name(masks[k].mode));
            goto out;
        }
        for (int q = 0; q < masks[k].n_targets; q++) want[masks[k].targets[q].site_id] = 1;
    }
    for (int i = 0; i < ns; i++) {
        if (!want[i]) continue;
        ss_site s;
        ss_site_get(cfg, i, &s);
        if (!(acts.rows[i] = ss_malloc((size_t)(n * s.width) * sizeof(float), "activations"))) {
            st = SS_ERR_NOMEM;
            goto out;
        }
    }
    /* Per-unit mean and std of the sub-models' sites, for mean masks and activity in standard units. */
    if (job->stats && (st = ss_read_unit_stats(job->stats, m, want, 0, mean, std))) goto out;
    for (int k = 0; k < n_masks; k++) {
        int need_mean, need_std;
        ss_mask_needs_stats(&masks[k], &need_mean, &need_std);
        if ((need_mean || need_std) && !job->stats) {
            st = ss_errorf(SS_ERR_ARG, "sub-model '%s' (mode %s) needs --stats", masks[k].name, ss_mask_mode_name(masks[k].mode));
            goto out;
        }
        for (int q = 0; q < masks[k].n_targets && job->stats; q++) {
            const int id = masks[k].targets[q].site_id;
            if ((need_mean && !mean[id]) || (need_std && !std[id])) {
                ss_site s;
                ss_site_get(&m->cfg, id, &s);
                st = ss_errorf(SS_ERR_ARG, "sub-model '%s' (mode %s): %s has no /stats/%s/%s (%s)", masks[k].name,
                               ss_mask_mode_name(masks[k].mode), job->stats, s.name, !mean[id] ? "mean" : "cov",
                               !mean[id] ? "collect the site" : "collect it with --stats mean,cov");
                goto out;
            }
        }
    }
    if ((st = ss_model_place(m, be, job->wdtype))) goto out;

    /* Clean pass: predictions and the sub-models' activations. */
    {
        int64_t s0 = 0, ln = n;
        ss_packing pk = {1, n, &s0, &ln, 0};
        ss_forward_opts fo = {.want = want, .hook = ss_keep_rows_hook, .hook_ctx = &acts, .read_only = 1, .logits = SS_LOGITS_ALL};
        if ((st = ss_forward(m, be, tok, &pk, &fo, &lg))) goto out;
    }
    preds = ss_malloc((size_t)n * sizeof(int32_t), "predictions");
    lp_clean = ss_malloc((size_t)n * sizeof(double), "log-probabilities");
    activity = ss_calloc((size_t)(n * n_masks), sizeof(double), "activity");
    attrib = ss_calloc((size_t)(n * n_masks), sizeof(double), "attribution");
    delta = ss_malloc((size_t)(n * n_masks) * sizeof(double), "ablation");
    if (!preds || !lp_clean || !activity || !attrib || !delta) { st = SS_ERR_NOMEM; goto out; }
    for (int64_t t = 0; t < n && last_stage; t++) {
        const float *row = lg + t * V;
        int32_t best = 0;
        for (int64_t v = 1; v < V; v++)
            if (row[v] > row[best]) best = (int32_t)v;
        preds[t] = t == n - 1 && answer >= 0 ? answer : best;
        lp_clean[t] = logprob(row, V, preds[t]);
    }
    /* Every stage needs the predictions: they are the attribution's targets. */
    if (comm && ((st = ss_comm_bcast(comm, preds, (size_t)n * sizeof *preds, m->n_stages - 1)) ||
                 (st = ss_comm_bcast(comm, lp_clean, (size_t)n * sizeof *lp_clean, m->n_stages - 1))))
        goto out;
    /* Sums and counts first (a pipeline stage has only its own sites'), then the means. */
    double *act_cnt = ss_calloc((size_t)(n * n_masks), sizeof(double), "activity");
    if (!act_cnt) { st = SS_ERR_NOMEM; goto out; }
    for (int k = 0; k < n_masks; k++) {
        const ss_mask *mk = &masks[k];
        const int z = unstandardised_site(mk, mean, std) < 0;
        for (int64_t t = 0; t < n; t++) {
            double sum = 0;
            int64_t cnt = 0;
            for (int q = 0; q < mk->n_targets; q++) {
                ss_site s;
                ss_site_get(cfg, mk->targets[q].site_id, &s);
                if (!ss_model_computes_site(m, &s)) continue;
                const float *row = acts.rows[s.id] + t * s.width;
                int64_t nu = mk->targets[q].n_units ? mk->targets[q].n_units : s.width;
                for (int64_t j = 0; j < nu; j++) {
                    int64_t u = mk->targets[q].n_units ? mk->targets[q].units[j] : j;
                    double a = row[u];
                    if (z) a = std[s.id][u] > 0 ? (a - mean[s.id][u]) / std[s.id][u] : 0;
                    sum += a, cnt++;
                }
            }
            activity[t * n_masks + k] = sum;
            act_cnt[t * n_masks + k] = (double)cnt;
        }
    }
    if (comm && ((st = ss_comm_allreduce_f64(comm, activity, (size_t)(n * n_masks))) ||
                 (st = ss_comm_allreduce_f64(comm, act_cnt, (size_t)(n * n_masks))))) {
        free(act_cnt);
        goto out;
    }
    for (int64_t q = 0; q < n * n_masks; q++) activity[q] = act_cnt[q] > 0 ? activity[q] / act_cnt[q] : NAN;
    free(act_cnt);

    /* Attribution in forward mode: one tangent pass per sub-model gives every position. */
    if (use_fwd) {
        fwd_progress fp = {job, n};
        if (job->progress) job->progress(job->progress_ctx, 0, n);
        st = ss_jvp_logprob(m, be, tok, n, preds, masks, n_masks, attrib, NULL, job->progress ? fwd_progress_fn : NULL,
                            &fp);
        /* Its taped forward holds every block's intermediates and all n logits at once, where the
         * prefixes take batches of about TRACE_ROWS rows (one prefix's at least) with one row of
         * logits a prefix: a long prompt or a wide vocabulary can fit the one and not the other.
         * auto chose forward mode for speed, not memory: out of memory, it falls back (the pass
         * released what it held). */
        if (st == SS_ERR_NOMEM && job->attribution_pass == SS_TRACE_PASS_AUTO) {
            ss_eprintf("trace: attribution by prefixes (forward mode ran out of memory: %s)\n", ss_last_error());
            ss_error_clear();
            st = SS_OK;
            use_fwd = 0;
        } else if (st)
            goto out;
    }
    /* Attribution: the prefixes of lengths 1..n in batches of about TRACE_ROWS rows, each
     * prefix scored on its own prediction and summed over its positions into its row of attrib. */
    if (!use_fwd) {
        for (int i = 0; i < ns; i++) {
            if (!want[i]) continue;
            ss_site s;
            ss_site_get(cfg, i, &s);
            if (!(pacts.rows[i] = ss_malloc((size_t)(prefix_rows * s.width) * sizeof(float), "activations")) ||
                !(grads.rows[i] = ss_malloc((size_t)(prefix_rows * s.width) * sizeof(float), "gradients"))) {
                st = SS_ERR_NOMEM;
                goto out;
            }
        }
        packed = ss_malloc((size_t)prefix_rows * sizeof(int32_t), "prefixes");
        start = ss_malloc((size_t)n * sizeof(int64_t), "prefixes");
        len = ss_malloc((size_t)n * sizeof(int64_t), "prefixes");
        if (!packed || !start || !len) { st = SS_ERR_NOMEM; goto out; }
        if (job->progress && last_stage) job->progress(job->progress_ctx, 0, n);
        for (int64_t s0 = 0, s1; s0 < n; s0 = s1) {
            int64_t r = 0;
            for (s1 = s0; s1 < n && r + s1 + 1 <= prefix_rows; s1++) {
                start[s1 - s0] = r, len[s1 - s0] = s1 + 1;
                memcpy(packed + r, tok, (size_t)(s1 + 1) * sizeof(int32_t));
                r += s1 + 1;
            }
            ss_packing pk = {s1 - s0, r, start, len, 0};
            ss_forward_opts fo = {.want = want, .hook = ss_keep_rows_hook, .hook_ctx = &pacts, .read_only = 1};
            ss_grad_opts go = {.want = want, .hook = ss_keep_rows_hook, .hook_ctx = &grads};
            ss_metric mt = {SS_METRIC_LOGPROB, preds + s0, NULL};
            if ((st = ss_forward_backward(m, be, packed, &pk, &fo, &mt, &go, NULL))) goto out;
            for (int k = 0; k < n_masks; k++) {
                const ss_mask *mk = &masks[k];
                for (int64_t s = s0; s < s1; s++) {
                    double sum = 0;
                    for (int q = 0; q < mk->n_targets; q++) {
                        ss_site si;
                        ss_site_get(cfg, mk->targets[q].site_id, &si);
                        if (!ss_model_computes_site(m, &si)) continue;
                        int64_t nu = mk->targets[q].n_units ? mk->targets[q].n_units : si.width;
                        for (int64_t t = 0; t <= s; t++) {
                            if (!in_positions(mk, t)) continue;
                            const int64_t row = start[s - s0] + t;
                            const float *a = pacts.rows[si.id] + row * si.width, *g = grads.rows[si.id] + row * si.width;
                            for (int64_t j = 0; j < nu; j++) {
                                int64_t u = mk->targets[q].n_units ? mk->targets[q].units[j] : j;
                                sum += (double)a[u] * g[u];
                            }
                        }
                    }
                    attrib[s * n_masks + k] = sum;
                }
            }
            if (job->progress && last_stage) job->progress(job->progress_ctx, s1, n);
        }
        if (comm && (st = ss_comm_allreduce_f64(comm, attrib, (size_t)(n * n_masks)))) goto out;
    }

    /* Ablation: one masked pass per sub-model gives every position at once. */
    for (int k = 0; k < n_masks; k++) {
        int64_t s0 = 0, ln = n;
        ss_packing pk = {1, n, &s0, &ln, 0};
        mask_hook mh = {&masks[k], mean, std};
        uint8_t *mw = ss_calloc((size_t)ns, 1, "sites");
        if (!mw) { st = SS_ERR_NOMEM; goto out; }
        for (int q = 0; q < masks[k].n_targets; q++) mw[masks[k].targets[q].site_id] = 1;
        ss_forward_opts fo = {.want = mw, .hook = apply_mask, .hook_ctx = &mh, .logits = SS_LOGITS_ALL};
        free(lgm);
        lgm = NULL;
        st = ss_forward(m, be, tok, &pk, &fo, &lgm);
        free(mw);
        if (st) goto out;
        for (int64_t t = 0; t < n && lgm; t++) delta[t * n_masks + k] = logprob(lgm + t * V, V, preds[t]) - lp_clean[t];
    }
    if (!last_stage) goto out; /* the last stage has the ablation deltas: it writes and prints */

    if (job->out) {
        if ((st = ss_h5_create(job->out, &h))) goto out;
        if ((st = ss_write_provenance(h, m, job->command_line, be)) || (st = ss_h5_attr_str(h, "/", "prompt", job->prompt)) ||
            (st = ss_h5_attr_str(h, "/", "submodels_path", job->submodels)) ||
            (st = ss_h5_attr_str(h, "/", "attribution_pass", use_fwd ? "forward" : "prefixes")) ||
            (job->answer && (st = ss_h5_attr_str(h, "/", "answer", job->answer))) ||
            (job->stats && (st = ss_h5_attr_str(h, "/", "stats_path", job->stats))) ||
            /* as the other jobs' files record them (FORMAT.md): a pipeline's P ranks, one per stage */
            (st = ss_h5_attr_i64(h, "/", "ranks", comm ? ss_comm_size(comm) : 1)) ||
            (st = ss_h5_attr_i64(h, "/", "pipeline_stages", comm ? m->n_stages : 1)))
            goto out;
        const char *dn[1] = {"position"};
        float *f = ss_malloc((size_t)n * sizeof(float), "output");
        if (!f) { st = SS_ERR_NOMEM; goto out; }
        if (!(st = ss_h5_write_array(h, "/tokens", SS_H5_I32, 1, &n, dn, tok)) &&
            !(st = ss_h5_write_array(h, "/prediction/token", SS_H5_I32, 1, &n, dn, preds))) {
            for (int64_t t = 0; t < n; t++) f[t] = (float)lp_clean[t];
            st = ss_h5_write_array(h, "/prediction/logprob", SS_H5_F32, 1, &n, dn, f);
        }
        const char *names[3] = {"activity", "attribution", "ablation_delta_logprob"};
        const double *vals[3] = {activity, attrib, delta};
        for (int k = 0; k < n_masks && !st; k++)
            for (int v = 0; v < 3 && !st; v++) {
                char p[192];
                snprintf(p, sizeof p, "/submodels/%s/%s", masks[k].name, names[v]);
                for (int64_t t = 0; t < n; t++) f[t] = (float)vals[v][t * n_masks + k];
                st = ss_h5_write_array(h, p, SS_H5_F32, 1, &n, dn, f);
                if (!st && v == 0) st = ss_h5_attr_i64(h, p, "standardised", unstandardised_site(&masks[k], mean, std) < 0);
            }
        free(f);
        if (st) goto out;
        st = ss_h5_commit(h);
        h = NULL;
        if (st) goto out;
    }

    if (job->table) {
        FILE *t = job->table;
        fprintf(t, "\nper position: the next-token prediction and, per sub-model, act = mean activation of its units%s,\n"
                   "attr = gradient x activation of log p(prediction) over its units at positions <= this one (and among\n"
                   "its mask's positions, where it names some),\n"
                   "dlogp = change in log p(prediction) when it is ablated (mode from %s); sub-models:\n",
                job->stats ? " (standardised by --stats)" : "", job->submodels);
        for (int k = 0; k < n_masks; k++) {
            const int raw = job->stats ? unstandardised_site(&masks[k], mean, std) : -1;
            ss_site s;
            if (raw >= 0) ss_site_get(cfg, raw, &s);
            fprintf(t, "  [%d] %s", k + 1, masks[k].name);
            if (raw >= 0) fprintf(t, " (act raw: %s has no mean and cov of %s)", job->stats, s.name);
            fputc('\n', t);
        }
        fprintf(t, "\n%4s %-14s %-14s %7s", "pos", "token", "prediction", "p");
        for (int k = 0; k < n_masks; k++) {
            char lab[16];
            snprintf(lab, sizeof lab, "[%d]", k + 1);
            fprintf(t, " | %-24s", lab);
        }
        fprintf(t, "\n%4s %-14s %-14s %7s", "", "", "", "");
        for (int k = 0; k < n_masks; k++) fprintf(t, " | %7s %7s %8s", "act", "attr", "dlogp");
        fprintf(t, "\n");
        for (int64_t p = 0; p < n; p++) {
            fprintf(t, "%4lld ", (long long)p);
            print_token(t, m->tok, tok[p], 14);
            fprintf(t, " ");
            print_token(t, m->tok, preds[p], 14);
            fprintf(t, " %7.3f", exp(lp_clean[p]));
            for (int k = 0; k < n_masks; k++)
                fprintf(t, " | %7.3f %+7.3f %+8.3f", activity[p * n_masks + k], attrib[p * n_masks + k], delta[p * n_masks + k]);
            fprintf(t, "\n");
        }
    }
out:
    if (h) ss_h5_abort(h);
    for (int i = 0; i < ns; i++) {
        if (acts.rows) free(acts.rows[i]);
        if (pacts.rows) free(pacts.rows[i]);
        if (grads.rows) free(grads.rows[i]);
        if (mean) free(mean[i]);
        if (std) free(std[i]);
    }
    free(acts.rows), free(pacts.rows), free(grads.rows), free(mean), free(std), free(want);
    free(tok), free(packed), free(preds), free(start), free(len), free(lg), free(lgm);
    free(lp_clean), free(activity), free(attrib), free(delta);
    ss_masks_free(masks, n_masks);
    ss_model_free(m);
    ss_backend_close(be);
    return st;
}
