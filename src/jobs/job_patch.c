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

/* One forward pass patches kn copies of the base prompt (n rows each, one
 * after another): copy c takes piece p0 + c of the site from the other run,
 * by be's patch_pieces (the CPU's on host rows; a device's on its own rows,
 * from the other run's values uploaded there, hook_on_device). */
typedef struct {
    const ss_backend *be;
    const float *src;    /* the other run's [n, width] at the patched site */
    int site_id;
    int per;             /* SS_PIECE_* */
    int64_t head_dim;    /* per head: the units of one head */
    int64_t n, p0;
    int kn;
} patch_batch;

static ss_status patch_hook(void *vctx, const ss_site *s, float *data, int64_t ld, const ss_packing *pk,
                            const int64_t *pattern_off) {
    const patch_batch *b = vctx;
    if (s->id != b->site_id) return SS_OK;
    if (pk->rows != b->kn * b->n)
        return ss_errorf(SS_ERR_INTERNAL, "patch hook: %lld rows for %d copies of %lld", (long long)pk->rows, b->kn,
                         (long long)b->n);
    return b->be->patch_pieces(b->be, data, ld, b->src, b->n, s->width, b->kn, b->per, b->p0, b->head_dim);
}

/* The block a patched pass starts at: the site's own (its input, the base
 * run's blocks.L.hook_resid_pre, is the same in every copy), 0 for the
 * embeddings, the last block for ln_final. */
static int patch_start(const ss_config *cfg, const ss_site *s) {
    if (s->kind == SS_SITE_EMBED || s->kind == SS_SITE_POS_EMBED) return 0;
    return s->layer >= 0 ? s->layer : (int)cfg->n_layer - 1;
}

/* The default copies per pass for prompts of up to n tokens: about 2048
 * rows within a budget for the pass's buffers (loss: every row's logits). */
static int64_t auto_batch(const ss_config *cfg, int64_t n, int loss) {
    if (n < 1) n = 1;
    /* per row: the residual stream, q/k/v, three activation buffers, two MLP
     * buffers in float, and with loss a row of logits */
    const double budget = 512.0 * 1024 * 1024,
                 per_row = 4.0 * (double)(8 * cfg->n_embd + 2 * cfg->n_inner + (loss ? cfg->vocab_size : 0));
    double k = floor(2048.0 / (double)n), kmem = floor(budget / ((double)n * per_row));
    if (kmem < k) k = kmem;
    return k < 1 ? 1 : (int64_t)k;
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
    const int32_t *targets;   /* loss: the clean prompt's tokens, once per copy */
    int64_t *idx, *d_idx;     /* logitdiff: the two logits of each copy to gather */
    float *g, *d_g;
    ss_loss_scorer loss;
    int64_t copies;           /* of the prompt in the last run */
    double *value;            /* [copies]: the last run's metrics; NaN on a stage without the head */
} scorer;

/* Buffers for up to K copies of a prompt of up to cap tokens. */
static ss_status scorer_open(scorer *sc, const ss_backend *be, int logitdiff, int64_t cap, int64_t K) {
    *sc = (scorer){.be = be, .logitdiff = logitdiff};
    if (!(sc->value = ss_malloc((size_t)K * sizeof(double), "metrics"))) return SS_ERR_NOMEM;
    if (!logitdiff) return ss_loss_open(&sc->loss, be, cap * K, K);
    SS_TRY(be->alloc(be, (size_t)(2 * K) * sizeof(int64_t), "logit indices", (void **)&sc->d_idx));
    SS_TRY(be->alloc(be, (size_t)(2 * K) * sizeof(float), "gathered logits", (void **)&sc->d_g));
    sc->idx = ss_malloc((size_t)(2 * K) * sizeof(int64_t), "logit indices");
    sc->g = ss_malloc((size_t)(2 * K) * sizeof(float), "gathered logits");
    return sc->idx && sc->g ? SS_OK : SS_ERR_NOMEM;
}

static void scorer_close(scorer *sc) {
    if (!sc->be) return;
    if (sc->d_idx) sc->be->release(sc->be, sc->d_idx);
    if (sc->d_g) sc->be->release(sc->be, sc->d_g);
    free(sc->idx), free(sc->g), free(sc->value);
    ss_loss_close(&sc->loss);
}

/* The forward's logits hook for logitdiff: each copy's last row. */
static ss_status score_logitdiff(void *vctx, const float *lg, int64_t n, int64_t V) {
    scorer *sc = vctx;
    const ss_backend *be = sc->be;
    if (n != sc->copies)
        return ss_errorf(SS_ERR_INTERNAL, "logitdiff: %lld last rows for %lld copies", (long long)n, (long long)sc->copies);
    for (int64_t c = 0; c < n; c++) sc->idx[2 * c] = c * V + sc->answer, sc->idx[2 * c + 1] = c * V + sc->wrong;
    SS_TRY(be->upload(be, sc->d_idx, sc->idx, (size_t)(2 * n) * sizeof(int64_t)));
    SS_TRY(be->gather(be, sc->d_g, lg, sc->d_idx, 2 * n));
    SS_TRY(be->download(be, sc->g, sc->d_g, (size_t)(2 * n) * sizeof(float)));
    for (int64_t c = 0; c < n; c++) sc->value[c] = (double)sc->g[2 * c] - sc->g[2 * c + 1];
    return SS_OK;
}

/* How run_copies's hook sees the sites. */
enum { HOOK_READS, HOOK_EDITS, HOOK_ON_DEVICE };

/* One forward pass of kn copies of a prompt of n tokens, tok holding them
 * one after another (and the scorer's targets as many copies of the clean
 * prompt's), from block `start` with the base run's residual stream there
 * (resid [n, d]; start 0: from the tokens); metric[c] is copy c's metric
 * (NaN on a pipeline stage without the head, or for a one-token prompt's
 * loss). seq: room for 2 kn offsets. */
static ss_status run_copies(ss_run *r, scorer *sc, const int32_t *tok, int64_t n, int kn, int start,
                            const float *resid, const uint8_t *want, ss_hook_fn hook, void *ctx, int64_t *seq,
                            double *metric, int hook_kind) {
    for (int c = 0; c < kn; c++) seq[c] = c * n, seq[kn + c] = n;
    ss_packing pk = {kn, kn * n, seq, seq + kn, 0};
    ss_forward_opts o = {.want = want, .hook = hook, .hook_ctx = ctx, .logits = SS_LOGITS_LAST,
                         .logits_hook = score_logitdiff, .logits_ctx = sc, .start_layer = start,
                         .start_resid = start > 0 ? resid : NULL, .start_copies = kn,
                         .read_only = hook_kind == HOOK_READS, .hook_on_device = hook_kind == HOOK_ON_DEVICE};
    if (!sc->logitdiff) {
        o.logits = SS_LOGITS_ALL, o.logits_hook = ss_loss_score, o.logits_ctx = &sc->loss;
        sc->loss.tok = sc->targets, sc->loss.pk = &pk, sc->loss.scored = 0;
    }
    sc->copies = kn;
    for (int c = 0; c < kn; c++) sc->value[c] = NAN;
    ss_status st = ss_forward(r->m, r->be, tok, &pk, &o, NULL);
    for (int c = 0; c < kn; c++) metric[c] = sc->logitdiff ? sc->value[c] : sc->loss.scored ? sc->loss.loss[c] : NAN;
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
    int64_t *n_pieces = NULL, *kseq = NULL, most = 1, widest = 0; /* the most pieces, the widest site */
    float *d_src = NULL; /* on a device: the other run's values at the site being patched */
    int32_t *ktok = NULL, *ktarget = NULL;
    double *mp = NULL;
    ss_h5 *h = NULL;
    ss_comm *dcomm = NULL;
    int dcomm_owned = 0;

    const char *per = job->per ? job->per : "site";
    int per_site = !strcmp(per, "site"), per_pos = !strcmp(per, "position"), per_head = !strcmp(per, "head"),
        per_unit = !strcmp(per, "neuron");
    if (!per_site && !per_pos && !per_head && !per_unit)
        return ss_errorf(SS_ERR_ARG, "--per must be site, position, head or neuron, got '%s'", per);
    const int per_kind = per_site ? SS_PIECE_SITE : per_pos ? SS_PIECE_POSITION : per_head ? SS_PIECE_HEAD : SS_PIECE_NEURON;
    if (job->batch < 0) return ss_errorf(SS_ERR_ARG, "--batch must be at least 1, got %lld", (long long)job->batch);
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
        if (!s.per_token) {
            /* Named outright, it is a mistake; swept up by a glob such as '*', it is left out
             * (as collect and attribute do). */
            if (ss_sites_list_names(job->sites, s.name)) {
                st = ss_errorf(SS_ERR_ARG, "site %s cannot be patched (no per-token vector)", s.name);
                goto out;
            }
            want[i] = 0;
            continue;
        }
        if (per_head && s.ndim != 2) { st = ss_errorf(SS_ERR_ARG, "--per head: site %s has no heads (use q/k/v/z sites)", s.name); goto out; }
        n_pieces[n_sites] = per_site ? 1 : per_pos ? T : per_head ? s.dims[0] : s.width;
        most = n_pieces[n_sites] > most ? n_pieces[n_sites] : most;
        widest = s.width > widest ? s.width : widest;
        site_ids[n_sites++] = i;
        if (!(sc.rows[i] = ss_malloc((size_t)(T * s.width) * sizeof(float), "clean values")) ||
            !(sk.rows[i] = ss_malloc((size_t)(T * s.width) * sizeof(float), "corrupt values"))) { st = SS_ERR_NOMEM; goto out; }
    }
    /* Both runs also keep the residual stream entering each patched site's
     * block: the base run's is where its patched passes start. */
    for (int k = 0; k < n_sites; k++) {
        ss_site s;
        ss_site_get(cfg, site_ids[k], &s);
        const int L = patch_start(cfg, &s), r = L > 0 ? ss_site_id(cfg, SS_SITE_RESID_PRE, L) : -1;
        if (r < 0 || sc.rows[r]) continue;
        want[r] = 1;
        if (!(sc.rows[r] = ss_malloc((size_t)(T * cfg->n_embd) * sizeof(float), "clean values")) ||
            !(sk.rows[r] = ss_malloc((size_t)(T * cfg->n_embd) * sizeof(float), "corrupt values"))) { st = SS_ERR_NOMEM; goto out; }
    }
    if (!n_sites) { st = ss_errorf(SS_ERR_ARG, "--sites '%s' selects no site with a per-token vector", job->sites); goto out; }
    sc.T = sk.T = T;
    /* Copies of a prompt per patched pass (no more than a site has pieces):
     * the same on every rank, so that a pair's values do not depend on which
     * rank ran it. */
    int64_t K = job->batch > 0 ? job->batch : auto_batch(cfg, T, !logitdiff);
    if (K > most) K = most;
    if ((st = scorer_open(&scr, clean.be, logitdiff, T, K))) goto out;
    kseq = ss_malloc((size_t)(2 * K) * sizeof *kseq, "packing");
    ktok = ss_malloc((size_t)(K * T) * sizeof *ktok, "tokens");
    ktarget = ss_malloc((size_t)(K * T) * sizeof *ktarget, "tokens");
    mp = ss_malloc((size_t)K * sizeof *mp, "metrics");
    if (!kseq || !ktok || !ktarget || !mp) { st = SS_ERR_NOMEM; goto out; }
    if ((st = ss_run_place(&clean, &job->run))) goto out;
    /* On a device the pieces are written there (patch_pieces) from the other
     * run's values, uploaded once per pair and site: the K copies' rows stay. */
    const ss_backend *pb_be = clean.be->host_memory || !clean.be->patch_pieces ? ss_backend_cpu() : clean.be;
    if (pb_be != ss_backend_cpu() &&
        (st = clean.be->alloc(clean.be, (size_t)(T * widest) * sizeof(float), "patch values", (void **)&d_src)))
        goto out;

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
    if (logitdiff && writer && job->table)
        ss_note_multi_token_answers(clean.m->tok, clean.p, 1, "patch", "logitdiff", stderr);
    if (job->progress && writer) job->progress(job->progress_ctx, 0, total); /* the clock starts before the first pair */
    for (int64_t i = lo; i < hi; i++) {
        if (timing && i == lo + 1) t_first = ss_now();
        const ss_prompt *cp = &clean.p->items[i], *kp = &kps->items[i];
        int64_t n = cp->n_tokens;
        int32_t answer = -1, wrong = -1;
        if (logitdiff && (st = ss_prompt_answer_ids(clean.m->tok, clean.p, cp, &answer, &wrong))) goto out;
        /* Both runs, keeping every selected site. */
        scr.answer = answer, scr.wrong = wrong, scr.targets = ktarget;
        for (int64_t c = 0; c < K; c++) memcpy(ktarget + c * n, cp->tokens, (size_t)n * sizeof *ktarget);
        double mc, mk;
        if ((st = run_copies(&clean, &scr, cp->tokens, n, 1, 0, NULL, want, keep_rows, &sc, kseq, &mc, HOOK_READS)) ||
            (st = run_copies(&clean, &scr, kp->tokens, n, 1, 0, NULL, want, keep_rows, &sk, kseq, &mk, HOOK_READS)))
            goto out;
        m_clean[i] = (float)mc;
        m_corrupt[i] = (float)mk;
        /* The base run takes pieces from the other one, K of them (one per copy) a pass. */
        const int32_t *base = job->denoise ? cp->tokens : kp->tokens;
        const site_store *from = job->denoise ? &sk : &sc, *into = job->denoise ? &sc : &sk;
        for (int64_t c = 0; c < K; c++) memcpy(ktok + c * n, base, (size_t)n * sizeof *ktok);
        for (int k = 0; k < n_sites; k++) {
            ss_site s;
            ss_site_get(cfg, site_ids[k], &s);
            memset(one, 0, (size_t)ns);
            one[s.id] = 1;
            const int L = patch_start(cfg, &s);
            const float *resid = L > 0 ? into->rows[ss_site_id(cfg, SS_SITE_RESID_PRE, L)] : NULL;
            /* positions past this prompt stay NaN */
            const int64_t np = per_pos && n_pieces[k] > n ? n : n_pieces[k];
            const float *src = from->rows[s.id];
            if (d_src && ss_model_computes_site(clean.m, &s)) {
                if ((st = clean.be->upload(clean.be, d_src, src, (size_t)(n * s.width) * sizeof(float)))) goto out;
                src = d_src;
            }
            for (int64_t p0 = 0; p0 < np; p0 += K) {
                const int kn = (int)(np - p0 < K ? np - p0 : K);
                patch_batch pb = {pb_be, src, s.id, per_kind, per_head ? s.dims[1] : 0, n, p0, kn};
                if ((st = run_copies(&clean, &scr, ktok, n, kn, L, resid, one, patch_hook, &pb, kseq, mp,
                                     d_src ? HOOK_ON_DEVICE : HOOK_EDITS)))
                    goto out;
                for (int c = 0; c < kn; c++) {
                    patched[k][i * n_pieces[k] + p0 + c] = (float)mp[c];
                    effect[k][i * n_pieces[k] + p0 + c] = mc != mk ? (float)((mp[c] - mk) / (mc - mk)) : NAN;
                }
                if (job->progress && writer) job->progress(job->progress_ctx, done + p0 + kn, total);
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
        (st = ss_h5_attr_i64(h, "/", "batch", K)) || (st = ss_h5_attr_i64(h, "/", "ranks", ss_comm_size(comm))) ||
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
        /* --per head: the site's own head axis (kv_head at a Llama's k/v sites, as in forward files) */
        snprintf(axis, sizeof axis, "%s", per_site ? "all" : per_pos ? "position" : s.dim_names[0]);
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
        /* A piece's mean is over the pairs with a value there: a position past a pair's
         * length, or a pair whose clean and corrupt metrics are equal, has none. Where a
         * piece has fewer than all N, a row says how many (a position only the longest pair
         * reaches is one pair's effect, not a mean over N). */
        int uneven = 0;
        for (int k = 0; k < n_sites && !uneven; k++)
            for (int64_t p = 0; p < n_pieces[k] && p < 24 && !uneven; p++)
                for (int64_t i = 0; i < N; i++)
                    if (isnan(effect[k][i * n_pieces[k] + p])) { uneven = 1; break; }
        if (uneven)
            fprintf(t, "\nnormalised effect (patched - corrupt) / (clean - corrupt), mean over the pairs with a value "
                       "(of %lld; a row '(pairs)' counts them); per %s\n",
                    (long long)N, per);
        else
            fprintf(t, "\nnormalised effect (patched - corrupt) / (clean - corrupt), mean over %lld pairs; per %s\n",
                    (long long)N, per);
        for (int k = 0; k < n_sites; k++) {
            ss_site s;
            ss_site_get(cfg, site_ids[k], &s);
            int64_t shown = n_pieces[k] < 24 ? n_pieces[k] : 24;
            /* the counts row, before the first site and again wherever a site's counts differ
             * from the row above (they depend on the pairs alone, so once in practice) */
            int same = k > 0 && n_pieces[k] == n_pieces[k - 1];
            for (int64_t p = 0; p < shown && same; p++)
                for (int64_t i = 0; i < N; i++)
                    if (isnan(effect[k][i * n_pieces[k] + p]) != isnan(effect[k - 1][i * n_pieces[k - 1] + p])) {
                        same = 0;
                        break;
                    }
            if (uneven && !same) {
                fprintf(t, "%-28s", "(pairs)");
                for (int64_t p = 0; p < shown; p++) {
                    int64_t c = 0;
                    for (int64_t i = 0; i < N; i++) c += !isnan(effect[k][i * n_pieces[k] + p]);
                    fprintf(t, " %5lld", (long long)c);
                }
                fprintf(t, "%s\n", n_pieces[k] > shown ? " ..." : "");
            }
            fprintf(t, "%-28s", s.name);
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
    free(kseq), free(ktok), free(ktarget), free(mp);
    if (d_src) clean.be->release(clean.be, d_src);
    scorer_close(&scr);
    ss_prompts_free(kps);
    ss_run_close(&clean);
    return st;
}
