/* `ablate`: rerun the model with masks applied at sites and measure, per
 * prompt and per label, what changes against the clean run.
 *
 * Each batch of prompts runs clean once, then the masks run K at a time: one
 * forward over K copies of the batch's rows, copy k carrying mask k (its
 * rows are [k*R, (k+1)*R) of the packed rows; the model never mixes
 * sequences, so each copy is the masked run of its mask alone). Masks are
 * sorted by the first block they touch and a group of K starts at its
 * earliest one, from the clean run's residual stream there replicated K
 * times, since everything before is the clean computation. K is 1 on the
 * CPU and, on a device, chosen so a forward holds about 4096 rows within a
 * memory budget (--mask-batch overrides it); K = 1 is the one-mask-at-a-time
 * run. The clean logits of
 * the batch are kept for the KL metric.
 *
 * With several ranks (docs/DISTRIBUTED.md) each rank takes a contiguous
 * block of whole batches of the one-process run, so every prompt's metrics
 * come from the same forwards as in one process; rank 0 gathers them in
 * input order and alone writes the file and prints the table. What a mask
 * needs from the whole input is made whole first: the unit statistics of
 * mean / relative-noise masks (each rank's blocks of a fixed tree over the
 * prompts, merged at rank 0 into the tree one process builds, and broadcast:
 * the same bits as one process) and the resample donors
 * (each rank's clean rows, gathered at rank 0 and broadcast: every rank
 * keeps every prompt's rows). Patch sources are the rank's own pairs. With
 * --pipeline P, copies of the pipeline split the batches the same way; the
 * ranks of one stage share donors among themselves, and the copies' last
 * stages (which score the logits) gather the values. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "subscope/dist.h"
#include "subscope/forward.h"
#include "subscope/h5out.h"
#include "subscope/hash.h"
#include "subscope/jobs.h"
#include "subscope/masks.h"
#include "subscope/util.h"

enum { M_LOSS, M_ACC, M_KEYWORD, M_LOGITDIFF, M_KL, M_COUNT };
static const char *const metric_names[M_COUNT] = {"loss", "acc", "keyword", "logitdiff", "kl"};

static ss_status parse_metrics(const char *spec, int *want) {
    memset(want, 0, M_COUNT * sizeof *want);
    char *copy = ss_strdup(spec && *spec ? spec : "loss,acc,kl"), *save = NULL;
    if (!copy) return SS_ERR_NOMEM;
    ss_status st = SS_OK;
    for (char *t = strtok_r(copy, ",", &save); t && !st; t = strtok_r(NULL, ",", &save)) {
        int k = 0;
        while (k < M_COUNT && strcmp(t, metric_names[k])) k++;
        if (k == M_COUNT) st = ss_errorf(SS_ERR_ARG, "--metrics: unknown metric '%s' (loss, acc, keyword, logitdiff, kl)", t);
        else want[k] = 1;
    }
    free(copy);
    int any = 0;
    for (int k = 0; k < M_COUNT; k++) any |= want[k];
    if (!st && !any) st = ss_errorf(SS_ERR_ARG, "--metrics '%s' names no metric (loss, acc, keyword, logitdiff, kl)", spec);
    return st;
}

/* Keyword ids: vocabulary entries whose text, without a leading space and
 * lowercased, equals a line of the keywords file (lowercased). */
static ss_status read_keywords(const char *path, const ss_tokenizer *tok, int64_t V, uint8_t **out) {
    if (!tok) return ss_errorf(SS_ERR_ARG, "--keywords needs a model with a tokenizer");
    char *data;
    size_t len;
    SS_TRY(ss_input_read(path, &data, &len));
    uint8_t *is_kw = ss_calloc((size_t)V, 1, "keyword table");
    if (!is_kw) { free(data); return SS_ERR_NOMEM; }
    int64_t n_words = 0, n_ids = 0, n_unmatched = 0;
    /* (a UTF-8 byte-order mark would make the first word match nothing) */
    char *start = data + ss_utf8_bom(data, len);
    for (char *line = start, *next; line && *line; line = next) {
        next = strchr(line, '\n');
        if (next) *next++ = 0;
        while (*line == ' ' || *line == '\t') line++; /* (the vocabulary's own leading space is ignored below) */
        size_t l = strlen(line);
        while (l && (line[l - 1] == '\r' || line[l - 1] == ' ' || line[l - 1] == '\t')) line[--l] = 0;
        if (!l) continue;
        n_words++;
        const int64_t ids_before = n_ids;
        for (size_t i = 0; i < l; i++) line[i] = (char)(line[i] >= 'A' && line[i] <= 'Z' ? line[i] + 32 : line[i]);
        for (int32_t id = 0; id < V && id < ss_tokenizer_vocab_size(tok); id++) {
            char *txt = NULL;
            size_t tl = 0;
            if (ss_tokenizer_decode(tok, &id, 1, &txt, &tl) != SS_OK) { ss_error_clear(); continue; }
            const char *t = txt[0] == ' ' ? txt + 1 : txt;
            size_t k = strlen(t);
            int same = k == l;
            for (size_t i = 0; same && i < k; i++)
                same = (t[i] >= 'A' && t[i] <= 'Z' ? t[i] + 32 : t[i]) == line[i];
            if (same && !is_kw[id]) is_kw[id] = 1, n_ids++;
            free(txt);
        }
        /* a word no entry spells (a typo, a word the tokenizer splits) would otherwise count for nothing unseen */
        if (n_ids == ids_before && ++n_unmatched <= 5)
            ss_eprintf("ablate: note: %s: '%s' is no single vocabulary entry (with or without a leading space); it is not counted\n",
                       path, line);
    }
    if (n_unmatched > 5) ss_eprintf("ablate: note: %s: %lld words in all match no vocabulary entry\n", path, (long long)n_unmatched);
    free(data);
    if (!n_words || !n_ids) {
        free(is_kw);
        return ss_errorf(SS_ERR_ARG, "%s: no keyword matches a vocabulary entry (%lld words read)", path, (long long)n_words);
    }
    *out = is_kw;
    return SS_OK;
}

typedef struct {
    const int *want;
    const uint8_t *is_kw;
    const int32_t *answer, *wrong; /* per prompt of the batch, -1 if absent */
} metric_ctx;

/* What a forward's logits give the metrics, computed where the logits are
 * (the backend's logit_scores and gather) so that only a few numbers per row
 * leave a device: per row its log-partition, the logit of the next token,
 * the best token (acc, keyword) and, for masked runs, the KL from the clean
 * row; per sequence the answer's and the wrong token's logits at its last
 * row. The clean run's logits and log-partitions stay on the backend for
 * the KL of the masked runs. Gathered values: g[r] is row r's next-token
 * logit (rows without a next token gather column 0, unused), then
 * g[rows + 2s] and g[rows + 2s + 1] sequence s's answer and wrong logits. */
typedef struct {
    const ss_backend *be;
    const metric_ctx *mc;
    int want_best, want_kl;
    int64_t cap_rows, cap_seq, R;          /* R: the clean run's rows */
    double *d_lz, *d_kl, *d_clean_lz;      /* backend buffers */
    int32_t *d_best;
    float *d_g, *d_clean;
    int64_t *d_idx;
    double *lz, *kl;                       /* host copies of the last forward's */
    int32_t *best;
    float *g;
    int64_t *idx;
    int clean;                             /* the next forward is the clean run */
    int64_t rows, n_seq;                   /* of the next forward */
} scorer;

static ss_status scorer_open(scorer *sc, const ss_backend *be, const metric_ctx *mc, int64_t V, int64_t cap_rows,
                             int64_t cap_seq, int64_t clean_rows) {
    *sc = (scorer){.be = be, .mc = mc, .want_best = mc->want[M_ACC] || mc->want[M_KEYWORD], .want_kl = mc->want[M_KL],
                   .cap_rows = cap_rows, .cap_seq = cap_seq};
    const int64_t n_g = cap_rows + 2 * cap_seq;
    SS_TRY(be->alloc(be, (size_t)cap_rows * sizeof(double), "log-partitions", (void **)&sc->d_lz));
    SS_TRY(be->alloc(be, (size_t)n_g * sizeof(float), "gathered logits", (void **)&sc->d_g));
    SS_TRY(be->alloc(be, (size_t)n_g * sizeof(int64_t), "gathered logits", (void **)&sc->d_idx));
    if (sc->want_best) SS_TRY(be->alloc(be, (size_t)cap_rows * sizeof(int32_t), "best tokens", (void **)&sc->d_best));
    if (sc->want_kl) {
        size_t bytes;
        if (!ss_mul_ok((size_t)clean_rows * sizeof(float), (size_t)V, &bytes))
            return ss_errorf(SS_ERR_ARG, "ablate: the clean logits of %lld rows are too large", (long long)clean_rows);
        SS_TRY(be->alloc(be, (size_t)cap_rows * sizeof(double), "KL divergences", (void **)&sc->d_kl));
        SS_TRY(be->alloc(be, bytes, "clean logits", (void **)&sc->d_clean));
        SS_TRY(be->alloc(be, (size_t)clean_rows * sizeof(double), "log-partitions", (void **)&sc->d_clean_lz));
    }
    sc->lz = ss_malloc((size_t)cap_rows * sizeof(double), "log-partitions");
    sc->kl = ss_malloc((size_t)cap_rows * sizeof(double), "KL divergences");
    sc->best = ss_malloc((size_t)cap_rows * sizeof(int32_t), "best tokens");
    sc->g = ss_malloc((size_t)n_g * sizeof(float), "gathered logits");
    sc->idx = ss_malloc((size_t)n_g * sizeof(int64_t), "gathered logits");
    return sc->lz && sc->kl && sc->best && sc->g && sc->idx ? SS_OK : SS_ERR_NOMEM;
}

static void scorer_close(scorer *sc) {
    const ss_backend *be = sc->be;
    if (!be) return;
    void *dev[] = {sc->d_lz, sc->d_kl, sc->d_clean_lz, sc->d_best, sc->d_g, sc->d_clean, sc->d_idx};
    for (size_t i = 0; i < sizeof dev / sizeof *dev; i++)
        if (dev[i]) be->release(be, dev[i]);
    free(sc->lz), free(sc->kl), free(sc->best), free(sc->g), free(sc->idx);
}

/* Before a forward over copies [0, K) of a batch (packing pk, tokens tok,
 * prompts b0..b0+nb-1): the indices of the logits to gather. */
static void scorer_prepare(scorer *sc, int clean, int K, const ss_packing *pk, const int32_t *tok, int64_t b0,
                           int64_t V) {
    const metric_ctx *mc = sc->mc;
    const int64_t R = pk->rows, rows = K * R, nb = pk->n_seq;
    sc->clean = clean, sc->rows = rows, sc->n_seq = K * nb;
    if (clean) sc->R = R;
    for (int64_t r = 0; r < R; r++) sc->idx[r] = r * V; /* column 0 unless the row has a next token */
    for (int64_t q = 0; q < nb; q++) {
        const int64_t s0 = pk->start[q], n = pk->len[q], last = n > 0 ? (s0 + n - 1) * V : 0; /* prompts have tokens */
        for (int64_t t = 0; t + 1 < n; t++) sc->idx[s0 + t] = (s0 + t) * V + tok[s0 + t + 1];
        const int32_t a = mc->answer[b0 + q], w = mc->wrong[b0 + q];
        sc->idx[rows + 2 * q] = last + (a >= 0 ? a : 0);
        sc->idx[rows + 2 * q + 1] = last + (w >= 0 ? w : 0);
    }
    /* the copies repeat the first one's indices, R rows further each */
    for (int k = 1; k < K; k++) {
        for (int64_t r = 0; r < R; r++) sc->idx[k * R + r] = sc->idx[r] + k * R * V;
        for (int64_t q = 0; q < 2 * nb; q++) sc->idx[rows + 2 * k * nb + q] = sc->idx[rows + q] + k * R * V;
    }
}

/* The forward's logits hook. */
static ss_status score_logits(void *vctx, const float *lg, int64_t n, int64_t V) {
    scorer *sc = vctx;
    const ss_backend *be = sc->be;
    const int64_t n_g = sc->rows + 2 * sc->n_seq;
    if (n != sc->rows)
        return ss_errorf(SS_ERR_INTERNAL, "ablate: %lld rows of logits, %lld expected", (long long)n, (long long)sc->rows);
    const int kl = sc->want_kl && !sc->clean;
    double *lz = sc->clean && sc->want_kl ? sc->d_clean_lz : sc->d_lz;
    SS_TRY(be->upload(be, sc->d_idx, sc->idx, (size_t)n_g * sizeof(int64_t)));
    SS_TRY(be->gather(be, sc->d_g, lg, sc->d_idx, n_g));
    SS_TRY(be->logit_scores(be, lz, sc->want_best ? sc->d_best : NULL, kl ? sc->d_kl : NULL, lg, n, V, sc->d_clean,
                            sc->d_clean_lz, sc->R));
    if (sc->clean && sc->want_kl) SS_TRY(be->copy_rows(be, sc->d_clean, lg, V, n, V));
    SS_TRY(be->download(be, sc->g, sc->d_g, (size_t)n_g * sizeof(float)));
    SS_TRY(be->download(be, sc->lz, lz, (size_t)n * sizeof(double)));
    if (sc->want_best) SS_TRY(be->download(be, sc->best, sc->d_best, (size_t)n * sizeof(int32_t)));
    if (kl) SS_TRY(be->download(be, sc->kl, sc->d_kl, (size_t)n * sizeof(double)));
    return SS_OK;
}

/* Metrics of copy k's prompt q (global index gi) from the last forward's
 * scores. Undefined values are NaN; the clean run's KL is 0. */
static void prompt_metrics(const scorer *sc, const ss_packing *pk, const int32_t *tok, int k, int64_t q, int64_t gi,
                           float *out) {
    const metric_ctx *mc = sc->mc;
    const int64_t s0 = pk->start[q], n = pk->len[q], r0 = k * pk->rows + s0, sq = k * pk->n_seq + q;
    double loss = 0, acc = 0, kw = 0, kl = 0;
    int64_t nkw = 0;
    for (int64_t t = 0; t + 1 < n; t++) {
        const int32_t next = tok[s0 + t + 1];
        const int hit = sc->want_best && sc->best[r0 + t] == next;
        loss += sc->lz[r0 + t] - sc->g[r0 + t];
        acc += hit;
        if (mc->is_kw && mc->is_kw[next]) kw += hit, nkw++;
    }
    if (mc->want[M_KL] && !sc->clean)
        for (int64_t t = 0; t < n; t++) kl += sc->kl[r0 + t];
    const float *ld = sc->g + sc->rows + 2 * sq;
    out[M_LOSS] = n > 1 ? (float)(loss / (double)(n - 1)) : NAN;
    out[M_ACC] = n > 1 ? (float)(acc / (double)(n - 1)) : NAN;
    out[M_KEYWORD] = nkw ? (float)(kw / (double)nkw) : NAN;
    out[M_LOGITDIFF] = mc->answer[gi] >= 0 && mc->wrong[gi] >= 0 ? ld[0] - ld[1] : NAN;
    out[M_KL] = sc->clean ? 0.f : (float)(kl / (double)n);
}

/* The metrics of every prompt of the last forward: copy k's go to slot[k]. */
static void score_prompts(const scorer *sc, const ss_packing *pk, const int32_t *tok, int64_t b0, int K,
                          const int *slot, float *(*vals)[M_COUNT]) {
    for (int k = 0; k < K; k++)
        for (int64_t q = 0; q < pk->n_seq; q++) {
            float out[M_COUNT];
            prompt_metrics(sc, pk, tok, k, q, b0 + q, out);
            for (int mt = 0; mt < M_COUNT; mt++)
                if (sc->mc->want[mt]) vals[slot[k]][mt][b0 + q] = out[mt];
        }
}

/* Masks per forward when --mask-batch is not given. On the CPU one: the
 * products already run near full speed at a batch's rows, and the benchmark
 * (bench/results/cpu-ablate-*.json) measured K = 1 faster than 32 copies
 * (0.8x) on both models. On a device about 4096 rows, where one large
 * forward beats many small launches, fewer if the forward's buffers would
 * pass 1 GiB. Per row: the residual stream and three activation buffers,
 * q/k/v, two MLP buffers, the logits and the replicated start residual, in
 * float. */
static int auto_mask_batch(const ss_backend *be, const ss_config *c, int64_t rows) {
    if (be->host_memory) return 1;
    const double budget = 1024.0 * 1024 * 1024, target_rows = 4096;
    double per_row = 4.0 * (double)(8 * c->n_embd + 2 * c->n_inner + c->vocab_size) + 24;
    double k = floor(target_rows / (double)rows), kmem = floor(budget / ((double)rows * per_row));
    if (kmem < k) k = kmem;
    return k < 1 ? 1 : k > 4096 ? 4096 : (int)k;
}

/* RESAMPLE's donors for one mask: its seed picks them. */
typedef struct donor_store donor_store;
typedef struct {
    const donor_store *d;
    uint64_t seed;
    int paired;                    /* PATCH: the paired prompt itself, from the --patch-from store */
} donor_ref;

/* The masks of one forward: copy k of the batch's R rows gets masks[k]. */
typedef struct {
    const ss_mask *const *masks;
    int K;
    const ss_mask_stats *stats;    /* by site id */
    donor_ref *donor;              /* per copy */
    const ss_packing *pk;          /* one copy */
    const int64_t *prompt_index;
} mask_hook_ctx;

static ss_status mask_hook(void *vctx, const ss_site *s, float *data, int64_t ld, const ss_packing *pk,
                           const int64_t *pattern_off) {
    const mask_hook_ctx *c = vctx;
    if (pk->rows != c->K * c->pk->rows)
        return ss_errorf(SS_ERR_INTERNAL, "mask hook: %lld rows for %d copies of %lld", (long long)pk->rows, c->K,
                         (long long)c->pk->rows);
    for (int k = 0; k < c->K; k++) {
        ss_mask_stats st = c->stats[s->id];
        st.source_ctx = &c->donor[k];
        SS_TRY(ss_mask_apply(c->masks[k], s, data + k * c->pk->rows * ld, ld, c->pk, c->prompt_index, &st));
    }
    return SS_OK;
}

/* On a device, a group whose masks all have modes the backend applies
 * (zero, mean, scale, noise, negnoise) runs with hook_on_device: the hook
 * hands each masked site's rows, where they are, to the backend's
 * apply_masks, with the group's programs made once before the first batch
 * (by site: copy k's mask there, or none). Resample and patch stay on the
 * host path (mask_hook): their values are other prompts' clean rows, kept
 * in host memory for the whole input (every prompt's, for resample), which
 * a device would need in full or per forward. */
typedef struct {
    const ss_backend *be;
    ss_mask_program *const *prog;  /* by site id: the group's program, or NULL */
    int64_t n_seq;                 /* K copies x nb prompts */
    const int64_t *prompt;         /* per sequence: its prompt's global index */
    const int32_t *which;          /* per sequence: its copy (the program's mask) */
} dev_mask_ctx;

static ss_status dev_mask_hook(void *vctx, const ss_site *s, float *data, int64_t ld, const ss_packing *pk,
                               const int64_t *pattern_off) {
    const dev_mask_ctx *c = vctx;
    if (!c->prog[s->id]) return SS_OK;
    if (pk->n_seq != c->n_seq)
        return ss_errorf(SS_ERR_INTERNAL, "mask hook: %lld sequences, the masks were set up for %lld",
                         (long long)pk->n_seq, (long long)c->n_seq);
    ss_status st = c->be->apply_masks(c->be, c->prog[s->id], data, ld, pk->rows, pk->n_seq, pk->start, pk->len,
                                      c->prompt, c->which);
    return st ? ss_error_context(st, "masks at %s", s->name) : SS_OK;
}

static int device_mode(ss_mask_mode m) {
    return m == SS_MASK_ZERO || m == SS_MASK_MEAN || m == SS_MASK_SCALE || m == SS_MASK_NOISE || m == SS_MASK_NEGNOISE;
}

/* The program of masks[0..kn) at site `site` (a mask without a target there: none). */
static ss_status make_program(const ss_backend *be, const ss_config *cfg, const ss_mask *const *masks, int kn, int site,
                              const ss_mask_stats *stats, ss_mask_program **out) {
    ss_backend_mask *bm = ss_calloc((size_t)kn, sizeof *bm, "mask program");
    if (!bm) return SS_ERR_NOMEM;
    ss_site s;
    ss_site_get(cfg, site, &s);
    for (int k = 0; k < kn; k++) {
        const ss_mask *m = masks[k];
        const ss_mask_target *t = NULL;
        for (int i = 0; i < m->n_targets; i++)
            if (m->targets[i].site_id == site) t = &m->targets[i];
        bm[k].mode = SS_BMASK_NONE;
        if (!t) continue;
        int need_mean, need_std;
        ss_mask_needs_stats(m, &need_mean, &need_std);
        bm[k] = (ss_backend_mask){.mode = (int)m->mode, .sigma_relative = m->sigma_relative, .factor = m->factor,
                                  .sigma = m->sigma, .seed = m->seed, .units = t->units, .n_units = t->n_units,
                                  .positions = m->positions, .n_positions = m->n_positions,
                                  .mean = need_mean ? stats[site].mean : NULL, .std = need_std ? stats[site].std : NULL};
    }
    ss_status st = be->mask_program_create(be, bm, kn, site, s.width, out);
    free(bm);
    if (st) {
        if (kn == 1) return ss_error_context(st, "mask '%s' at %s", masks[0]->name, s.name);
        return ss_error_context(st, "masks '%s' .. '%s' at %s", masks[0]->name, masks[kn - 1]->name, s.name);
    }
    return SS_OK;
}

/* Per-unit mean and standard deviation at the sites the masks need them,
 * from a collect file or, without one, from a pass over the input.
 *
 * The pass sums the same way whatever the ranks, so that the means (which a
 * mean mask rounds to float32) are the same bits with any number of ranks:
 * each prompt's rows give a leaf (count, mean, M2; Welford), and leaves are
 * merged (Chan's update) along a fixed binary tree over the prompts' indices,
 * whose nodes are the aligned blocks [k 2^j, (k+1) 2^j): a rank builds the
 * largest such blocks inside its prompts, rank 0 merges every rank's blocks
 * into the same tree, and the blocks of the last partial level are merged
 * from the smallest up. One process builds that tree too. Merging in rank
 * order instead made a unit's mean differ from one process's in its last
 * float64 bits, which moved some units' float32 mean by a step. */
enum { TREE_DEPTH = 130 }; /* 2 x 64 levels: a rank's blocks grow, then shrink */
typedef struct {
    int64_t lo, hi, count;         /* prompts [lo, hi), their rows */
    double *mean, *m2;             /* [width], allocated on first use */
} tree_node;
typedef struct {
    int64_t width;
    int depth;
    tree_node node[TREE_DEPTH];
} stats_tree;

typedef struct {
    double **mean, **std;          /* by site id */
    double **m2;                   /* pass over the input: sums of squares */
    int64_t *count;
    stats_tree *tree;              /* pass over the input: by site id */
} unit_stats;

/* (na, ma, m2a) merged with (nb, mb, m2b): Chan's update, the one collect uses. */
static void chan_merge(int64_t w, int64_t *na, double *ma, double *m2a, int64_t nb, const double *mb,
                       const double *m2b) {
    if (!nb) return;
    const int64_t n = *na + nb;
    if (!*na) { /* an exact copy, not ma + (mb - ma) */
        memcpy(ma, mb, (size_t)w * sizeof(double));
        memcpy(m2a, m2b, (size_t)w * sizeof(double));
    } else {
        const double fb = (double)nb / (double)n, fab = (double)*na * (double)nb / (double)n;
        for (int64_t u = 0; u < w; u++) {
            double dlt = mb[u] - ma[u];
            ma[u] += dlt * fb;
            m2a[u] += m2b[u] + dlt * dlt * fab;
        }
    }
    *na = n;
}

/* The free node above the top, its arrays allocated. */
static ss_status tree_next(stats_tree *t, tree_node **out) {
    if (t->depth == TREE_DEPTH) return ss_errorf(SS_ERR_INTERNAL, "unit statistics: tree deeper than %d", TREE_DEPTH);
    tree_node *nd = &t->node[t->depth];
    if (!nd->mean) nd->mean = ss_malloc((size_t)t->width * sizeof(double), "unit statistics");
    if (!nd->m2) nd->m2 = ss_malloc((size_t)t->width * sizeof(double), "unit statistics");
    if (!nd->mean || !nd->m2) return SS_ERR_NOMEM;
    *out = nd;
    return SS_OK;
}

/* Pushes the node tree_next gave, merging the top two while they are the two
 * halves of one aligned block. */
static void tree_push(stats_tree *t) {
    t->depth++;
    while (t->depth >= 2) {
        tree_node *a = &t->node[t->depth - 2], *b = &t->node[t->depth - 1];
        const int64_t size = b->hi - b->lo;
        if (a->hi != b->lo || a->hi - a->lo != size || a->lo % (2 * size)) break;
        chan_merge(t->width, &a->count, a->mean, a->m2, b->count, b->mean, b->m2);
        a->hi = b->hi;
        t->depth--;
    }
}

/* The whole: the blocks left on the stack merged from the top (the smallest) down. */
static void tree_fold(stats_tree *t, int64_t *count, double *mean, double *m2) {
    for (; t->depth >= 2; t->depth--) {
        tree_node *a = &t->node[t->depth - 2], *b = &t->node[t->depth - 1];
        chan_merge(t->width, &a->count, a->mean, a->m2, b->count, b->mean, b->m2);
        a->hi = b->hi;
    }
    *count = 0;
    if (t->depth) chan_merge(t->width, count, mean, m2, t->node[0].count, t->node[0].mean, t->node[0].m2);
}

/* A leaf per prompt: Welford over its rows. */
static ss_status stats_pass_hook(void *vctx, const ss_site *s, float *data, int64_t ld, const ss_packing *pk,
                                 const int64_t *pattern_off) {
    stats_tree *t = &((unit_stats *)vctx)->tree[s->id];
    for (int64_t q = 0; q < pk->n_seq; q++) {
        tree_node *nd;
        SS_TRY(tree_next(t, &nd));
        double *mean = nd->mean, *m2 = nd->m2;
        memset(mean, 0, (size_t)s->width * sizeof(double));
        memset(m2, 0, (size_t)s->width * sizeof(double));
        nd->lo = pk->first + q, nd->hi = nd->lo + 1, nd->count = 0;
        for (int64_t r = pk->start[q]; r < pk->start[q] + pk->len[q]; r++) {
            int64_t n = ++nd->count;
            for (int64_t i = 0; i < s->width; i++) { /* Welford, per unit */
                double x = data[r * ld + i], dlt = x - mean[i];
                mean[i] += dlt / (double)n;
                m2[i] += dlt * (x - mean[i]);
            }
        }
        tree_push(t);
    }
    return SS_OK;
}

static int cmp_node_lo(const void *a, const void *b) {
    const double x = (*(const double *const *)a)[0], y = (*(const double *const *)b)[0];
    return (x > y) - (x < y);
}

/* The trees' blocks of every rank to rank 0 (lo, hi, count, mean[w], M2[w] each,
 * after each needed site's block count), merged there into one tree per site
 * and folded; the totals (count, mean, M2) broadcast, so every rank masks with
 * the same bits, those of one process. */
static ss_status merge_unit_stats(ss_comm *comm, const ss_config *cfg, const uint8_t *need, unit_stats *us) {
    const int size = ss_comm_size(comm), rank = ss_comm_rank(comm), ns = ss_sites_count(cfg);
    if (size == 1) {
        for (int i = 0; i < ns; i++)
            if (need[i]) tree_fold(&us->tree[i], &us->count[i], us->mean[i], us->m2[i]);
        return SS_OK;
    }
    size_t L = 0, Lt = 0; /* doubles: this rank's blocks, the totals */
    for (int i = 0; i < ns; i++) {
        if (!need[i]) continue;
        const size_t w = (size_t)us->tree[i].width;
        L += 1 + (size_t)us->tree[i].depth * (3 + 2 * w), Lt += 1 + 2 * w;
    }
    double *buf = ss_malloc((L > Lt ? L : Lt) * sizeof(double), "unit statistics"), *all = NULL;
    const double **nodes = NULL;
    size_t *counts = rank == 0 ? ss_malloc((size_t)size * sizeof *counts, "unit statistics") : NULL;
    ss_status st = !buf || (rank == 0 && !counts) ? SS_ERR_NOMEM : SS_OK;
    size_t o = 0;
    for (int i = 0; !st && i < ns; i++) {
        if (!need[i]) continue;
        const stats_tree *t = &us->tree[i];
        buf[o++] = t->depth;
        for (int d = 0; d < t->depth; d++) {
            buf[o++] = (double)t->node[d].lo, buf[o++] = (double)t->node[d].hi, buf[o++] = (double)t->node[d].count;
            memcpy(buf + o, t->node[d].mean, (size_t)t->width * sizeof(double)), o += (size_t)t->width;
            memcpy(buf + o, t->node[d].m2, (size_t)t->width * sizeof(double)), o += (size_t)t->width;
        }
    }
    if (!st) st = ss_comm_gatherv(comm, buf, L * sizeof(double), (void **)&all, counts);
    if (!st && rank == 0) {
        /* every rank's blocks of one site at a time, in the order of their prompts */
        size_t n_all = 0, *cur = ss_calloc((size_t)size, sizeof *cur, "unit statistics");
        for (int r = 0; r < size; r++) n_all += counts[r] / sizeof(double);
        nodes = ss_malloc((n_all + 1) * sizeof *nodes, "unit statistics");
        if (!cur || !nodes) st = SS_ERR_NOMEM;
        o = 0;
        for (int i = 0; !st && i < ns; i++) {
            if (!need[i]) continue;
            stats_tree *t = &us->tree[i];
            const size_t w = (size_t)t->width;
            int n = 0;
            size_t base = 0;
            for (int r = 0; r < size; base += counts[r] / sizeof(double), r++) {
                const double *b = all + base + cur[r];
                const int k = (int)b[0];
                for (int d = 0; d < k; d++) nodes[n++] = b + 1 + (size_t)d * (3 + 2 * w);
                cur[r] += 1 + (size_t)k * (3 + 2 * w);
            }
            qsort(nodes, (size_t)n, sizeof *nodes, cmp_node_lo);
            t->depth = 0;
            for (int d = 0; !st && d < n; d++) {
                tree_node *nd;
                if ((st = tree_next(t, &nd))) break;
                nd->lo = (int64_t)nodes[d][0], nd->hi = (int64_t)nodes[d][1], nd->count = (int64_t)nodes[d][2];
                memcpy(nd->mean, nodes[d] + 3, w * sizeof(double));
                memcpy(nd->m2, nodes[d] + 3 + w, w * sizeof(double));
                tree_push(t);
            }
            if (st) break;
            tree_fold(t, &us->count[i], us->mean[i], us->m2[i]);
            buf[o++] = (double)us->count[i]; /* the totals */
            memcpy(buf + o, us->mean[i], w * sizeof(double)), o += w;
            memcpy(buf + o, us->m2[i], w * sizeof(double)), o += w;
        }
        free(cur);
    }
    if ((st = ss_comm_check(comm, st))) goto done;
    if ((st = ss_comm_bcast(comm, buf, Lt * sizeof(double), 0))) goto done;
    o = 0;
    for (int i = 0; rank != 0 && i < ns; i++) {
        if (!need[i]) continue;
        const size_t w = (size_t)us->tree[i].width;
        us->count[i] = (int64_t)buf[o++];
        memcpy(us->mean[i], buf + o, w * sizeof(double)), o += w;
        memcpy(us->m2[i], buf + o, w * sizeof(double)), o += w;
    }
done:
    free(buf), free(all), free(nodes), free(counts);
    return st ? ss_error_context(st, "merging the unit statistics of the ranks") : SS_OK;
}

/* Clean activations of every prompt at the sites resample masks use: the donors. */
struct donor_store {
    float **rows;                  /* by site id: [prompts first.., T, width], or NULL */
    const int64_t *len;            /* prompt lengths */
    int64_t N, T, b0;              /* b0: first prompt of the batch being captured */
    int64_t first;                 /* the first prompt rows holds (patch: the rank's block) */
};

static ss_status donor_hook(void *vctx, const ss_site *s, float *data, int64_t ld, const ss_packing *pk,
                            const int64_t *pattern_off) {
    donor_store *d = vctx;
    for (int64_t q = 0; q < pk->n_seq; q++)
        for (int64_t t = 0; t < pk->len[q]; t++)
            memcpy(d->rows[s->id] + ((d->b0 - d->first + q) * d->T + t) * s->width, data + (pk->start[q] + t) * ld,
                   (size_t)s->width * sizeof(float));
    return SS_OK;
}

static const float *donor_row(void *vctx, const ss_site *s, int64_t prompt, int64_t pos) {
    const donor_ref *ref = vctx;
    const donor_store *d = ref->d;
    int64_t j = ref->paired ? prompt : ss_mask_resample_source(ref->seed, prompt, d->N);
    if (j < 0 || !d->rows[s->id]) return NULL;
    int64_t t = pos < d->len[j] ? pos : d->len[j] - 1;
    return d->rows[s->id] + ((j - d->first) * d->T + t) * s->width;
}

/* Several ranks: each computed the donor rows of its own prompts
 * [lo, hi); rank 0 gathers the blocks (contiguous in input order, so they
 * arrive as the whole array) and broadcasts them to every rank. */
static ss_status share_donors(ss_comm *comm, const ss_config *cfg, donor_store *d, int64_t lo, int64_t hi) {
    if (ss_comm_size(comm) == 1) return SS_OK;
    for (int i = 0; i < ss_sites_count(cfg); i++) {
        if (!d->rows[i]) continue;
        ss_site s;
        ss_site_get(cfg, i, &s);
        const size_t per = (size_t)(d->T * s.width) * sizeof(float);
        void *all = NULL;
        size_t total = 0, n_ranks = (size_t)ss_comm_size(comm), *counts = ss_malloc(n_ranks * sizeof *counts, "ranks");
        ss_status st = counts ? SS_OK : SS_ERR_NOMEM;
        if (!st) st = ss_comm_gatherv(comm, d->rows[i] + lo * d->T * s.width, (size_t)(hi - lo) * per, &all, counts);
        for (size_t r = 0; !st && ss_comm_rank(comm) == 0 && r < n_ranks; r++) total += counts[r];
        if (!st && ss_comm_rank(comm) == 0) {
            if (total != (size_t)d->N * per) st = ss_errorf(SS_ERR_INTERNAL, "the ranks sent %zu bytes of donor rows, not %zu", total, (size_t)d->N * per);
            else memcpy(d->rows[i], all, total);
        }
        free(all);
        free(counts);
        if (!st) st = ss_comm_bcast(comm, d->rows[i], (size_t)d->N * per, 0);
        if (st) return ss_error_context(st, "sharing the resample donors of %s between the ranks", s.name);
    }
    return SS_OK;
}

/* The clean run's residual stream entering the blocks where masks begin, so
 * each masked run starts there instead of recomputing the clean prefix. */
typedef struct {
    float **resid;                 /* by layer: [rows, d] of the current batch, or NULL */
    int64_t d;
} prefix_store;

static ss_status prefix_hook(void *vctx, const ss_site *s, float *data, int64_t ld, const ss_packing *pk,
                             const int64_t *pattern_off) {
    prefix_store *p = vctx;
    for (int64_t r = 0; r < pk->rows; r++) memcpy(p->resid[s->layer] + r * p->d, data + r * ld, (size_t)p->d * sizeof(float));
    return SS_OK;
}

/* The first block a mask touches; 0 when it touches the embeddings. */
static int first_layer(const ss_mask *m, const ss_config *cfg) {
    int first = (int)cfg->n_layer - 1;
    for (int t = 0; t < m->n_targets; t++) {
        ss_site s;
        ss_site_get(cfg, m->targets[t].site_id, &s);
        if (s.kind == SS_SITE_EMBED || s.kind == SS_SITE_POS_EMBED) return 0;
        if (s.layer >= 0 && s.layer < first) first = s.layer;
    }
    return first;
}

static ss_status write_metrics(ss_h5 *h, const char *group, const int *want, float *const *vals, int64_t N, int clean) {
    char p[512];
    const char *dn[1] = {"prompt"};
    for (int k = 0; k < M_COUNT; k++) {
        if (!want[k] || (clean && k == M_KL)) continue; /* KL of clean to itself is 0 by definition */
        snprintf(p, sizeof p, "%s/%s", group, metric_names[k]);
        SS_TRY(ss_h5_write_array(h, p, SS_H5_F32, 1, &N, dn, vals[k]));
    }
    return SS_OK;
}

/* Mean of the non-NaN values of v over prompts with group g (g < 0: all). */
static double mean_over(const float *v, const int *group, int g, int64_t N) {
    double s = 0;
    int64_t n = 0;
    for (int64_t i = 0; i < N; i++)
        if ((g < 0 || group[i] == g) && !isnan(v[i])) s += v[i], n++;
    return n ? s / (double)n : NAN;
}

static uint64_t mix64(uint64_t z) { /* splitmix64's finaliser, as in ss_mask_noise */
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

ss_status ss_ablate_control_units(uint64_t seed, int k, int site_id, int64_t width, int64_t n, int64_t *out) {
    if (width < 2 || n < 1 || n >= width)
        return ss_errorf(SS_ERR_ARG, "a control needs 1 .. %lld units of the site's %lld (asked for %lld)",
                         (long long)(width - 1), (long long)width, (long long)n);
    int64_t *a = ss_malloc((size_t)width * sizeof *a, "control units");
    if (!a) return SS_ERR_NOMEM;
    for (int64_t i = 0; i < width; i++) a[i] = i;
    uint64_t s = mix64(mix64(mix64(seed) ^ (uint64_t)(k + 1)) ^ (uint64_t)site_id);
    for (int64_t i = 0; i < n; i++) {
        int64_t j = i + (int64_t)(mix64(s ^ (uint64_t)i) % (uint64_t)(width - i)), t = a[i];
        a[i] = a[j], a[j] = t;
    }
    memcpy(out, a, (size_t)n * sizeof *out);
    free(a);
    qsort(out, (size_t)n, sizeof *out, cmp_i64);
    return SS_OK;
}

ss_status ss_ablate_control(const ss_config *cfg, const ss_mask *m, int k, ss_mask *out) {
    memset(out, 0, sizeof *out);
    if (snprintf(out->name, sizeof out->name, "%s~ctrl%d", m->name, k) >= (int)sizeof out->name)
        return ss_errorf(SS_ERR_ARG, "mask '%s': the name of its control '%s~ctrl%d' would pass %zu bytes", m->name,
                         m->name, k, sizeof out->name - 1);
    out->mode = m->mode;
    out->factor = m->factor;
    out->sigma = m->sigma;
    out->sigma_relative = m->sigma_relative;
    out->seed = m->seed;
    if (m->n_positions) {
        if (!(out->positions = ss_malloc((size_t)m->n_positions * sizeof *out->positions, "control positions")))
            return SS_ERR_NOMEM;
        memcpy(out->positions, m->positions, (size_t)m->n_positions * sizeof *out->positions);
        out->n_positions = m->n_positions;
    }
    if (!(out->targets = ss_calloc((size_t)(m->n_targets ? m->n_targets : 1), sizeof *out->targets, "control targets"))) {
        ss_mask_free(out);
        return SS_ERR_NOMEM;
    }
    for (int t = 0; t < m->n_targets; t++) {
        ss_site s;
        ss_site_get(cfg, m->targets[t].site_id, &s);
        int64_t n = m->targets[t].n_units ? m->targets[t].n_units : s.width;
        if (n >= s.width) {
            ss_mask_free(out);
            return ss_errorf(SS_ERR_ARG, "mask '%s' covers all %lld units of %s: it has no control (same units)", m->name,
                             (long long)s.width, s.name);
        }
        ss_mask_target *ct = &out->targets[out->n_targets++];
        ct->site_id = m->targets[t].site_id;
        ss_status st = SS_OK;
        if (!(ct->units = ss_malloc((size_t)n * sizeof *ct->units, "control units"))) st = SS_ERR_NOMEM;
        else if ((st = ss_ablate_control_units(m->seed, k, ct->site_id, s.width, n, ct->units)) == SS_OK) ct->n_units = n;
        if (st) {
            ss_mask_free(out);
            return ss_error_context(st, "mask '%s', site %s", m->name, s.name);
        }
    }
    return SS_OK;
}

static void sha_text(ss_sha256 *h, const char *s) { ss_sha256_update(h, s, strlen(s)); }

static void sha_list(ss_sha256 *h, const int64_t *v, int64_t n) {
    char b[32];
    for (int64_t i = 0; i < n; i++) {
        snprintf(b, sizeof b, "%s%lld", i ? "," : "", (long long)v[i]);
        sha_text(h, b);
    }
}

void ss_mask_units_sha256(const ss_config *cfg, const ss_mask *m, char out[65]) {
    ss_sha256 h;
    ss_sha256_init(&h);
    int ns = ss_sites_count(cfg);
    for (int id = 0; id < ns; id++) /* site order, whatever order the JSONL listed them in */
        for (int t = 0; t < m->n_targets; t++) {
            if (m->targets[t].site_id != id) continue;
            ss_site s;
            ss_site_get(cfg, id, &s);
            sha_text(&h, s.name);
            sha_text(&h, ":");
            if (m->targets[t].n_units) sha_list(&h, m->targets[t].units, m->targets[t].n_units);
            else sha_text(&h, "all");
            sha_text(&h, ";");
        }
    if (m->n_positions) {
        sha_text(&h, "pos:");
        sha_list(&h, m->positions, m->n_positions);
    }
    ss_sha256_hex(&h, out);
}

/* The attributes of /ablate/<mask> that let `report` place it: mode and
 * intensity, its sites and units, and what it is a control of. */
static ss_status mask_attrs(ss_h5 *h, const char *g, const ss_config *cfg, const ss_mask *m, const ss_mask *control_of,
                            int n_controls) {
    SS_TRY(ss_h5_attr_str(h, g, "mode", ss_mask_mode_name(m->mode)));
    SS_TRY(ss_h5_attr_f64(h, g, "factor", m->mode == SS_MASK_SCALE ? m->factor : NAN));
    SS_TRY(ss_h5_attr_f64(h, g, "sigma", m->mode == SS_MASK_NOISE || m->mode == SS_MASK_NEGNOISE ? m->sigma : NAN));
    SS_TRY(ss_h5_attr_i64(h, g, "relative", m->sigma_relative ? 1 : 0));
    SS_TRY(ss_h5_attr_i64(h, g, "seed", (int64_t)m->seed));
    char sites[4096] = "";
    int64_t n_units[64], total = 0;
    size_t used = 0;
    int nt = m->n_targets < 64 ? m->n_targets : 64, written = 0;
    for (int id = 0; id < ss_sites_count(cfg); id++)
        for (int t = 0; t < m->n_targets; t++) {
            if (m->targets[t].site_id != id) continue;
            ss_site s;
            ss_site_get(cfg, id, &s);
            int64_t n = m->targets[t].n_units ? m->targets[t].n_units : s.width;
            total += n;
            if (written < nt) n_units[written++] = n;
            if (used < sizeof sites) used += (size_t)snprintf(sites + used, sizeof sites - used, "%s%s", used ? "," : "", s.name);
        }
    if (m->n_targets > 64 || used >= sizeof sites)
        return ss_errorf(SS_ERR_ARG, "mask '%s': %d sites, too many to record", m->name, m->n_targets);
    SS_TRY(ss_h5_attr_str(h, g, "sites", sites));
    SS_TRY(ss_h5_attr_i64_array(h, g, "n_units", n_units, (size_t)nt));
    SS_TRY(ss_h5_attr_i64(h, g, "n_units_total", total));
    SS_TRY(ss_h5_attr_i64(h, g, "n_positions", m->n_positions));
    char id[65];
    ss_mask_units_sha256(cfg, m, id);
    SS_TRY(ss_h5_attr_str(h, g, "units_sha256", id));
    if (control_of) return ss_h5_attr_str(h, g, "control_of", control_of->name);
    return ss_h5_attr_i64(h, g, "n_controls", n_controls);
}

/* A site whose units the mask all covers (filled into *s), 0 if none. */
static int whole_site(const ss_config *cfg, const ss_mask *m, ss_site *s) {
    for (int t = 0; t < m->n_targets; t++) {
        ss_site_get(cfg, m->targets[t].site_id, s);
        if (!m->targets[t].n_units || m->targets[t].n_units >= s->width) return 1;
    }
    return 0;
}

/* Each mask followed by its k controls (masks covering a whole site get
 * none, with a note): the new array replaces *masks; ctrl_of[i] is the index
 * of mask i's original (-1 for originals), n_ctrl[i] its control count. */
static ss_status add_controls(const ss_config *cfg, int k, ss_mask **masks, int *n_masks, int **ctrl_of, int **n_ctrl,
                              FILE *notes) {
    int n = *n_masks, cap = n * (1 + k);
    if ((int64_t)n * (1 + k) > 512)
        return ss_errorf(SS_ERR_ARG, "%d masks with %d controls each are %lld masks: at most 512 per run", n, k,
                         (long long)n * (1 + k));
    ss_mask *all = ss_calloc((size_t)cap, sizeof *all, "masks");
    int *of = ss_malloc((size_t)cap * sizeof *of, "masks"), *nc = ss_calloc((size_t)cap, sizeof *nc, "masks");
    if (!all || !of || !nc) { free(all); free(of); free(nc); return SS_ERR_NOMEM; }
    int m = 0;
    ss_status st = SS_OK;
    for (int i = 0; i < n && !st; i++) {
        int orig = m;
        all[m] = (*masks)[i];
        memset(&(*masks)[i], 0, sizeof **masks); /* moved */
        of[m++] = -1;
        ss_site whole;
        if (whole_site(cfg, &all[orig], &whole)) {
            if (notes) fprintf(notes, "note: mask '%s' covers all units of %s: it has no controls\n", all[orig].name, whole.name);
            continue;
        }
        for (int c = 0; c < k && !st; c++) {
            if ((st = ss_ablate_control(cfg, &all[orig], c, &all[m]))) break;
            of[m++] = orig;
            nc[orig]++;
        }
    }
    ss_masks_free(*masks, n);
    if (st) { ss_masks_free(all, m); free(of); free(nc); *masks = NULL; *n_masks = 0; return st; }
    *masks = all;
    *n_masks = m;
    *ctrl_of = of;
    *n_ctrl = nc;
    return SS_OK;
}

ss_status ss_job_ablate(const ss_ablate_job *job) {
    ss_run run;
    ss_mask *masks = NULL;
    int n_masks = 0;
    int want[M_COUNT];
    uint8_t *is_kw = NULL, *need_stats = NULL, *touched = NULL;
    unit_stats us = {0};
    ss_mask_stats *mstats = NULL;
    float *vals[1 + 512][M_COUNT];
    scorer sc = {0};
    int32_t *answer = NULL, *wrong = NULL;
    int *group = NULL;
    char **labels = NULL;
    int n_labels = 0;
    int64_t *prompt_index = NULL, *lens = NULL;
    donor_store donors = {0}, paired = {0};
    ss_prompts *pps = NULL;
    int32_t *ptok = NULL;
    prefix_store prefix = {0};
    uint8_t *prefix_want = NULL;
    int *start_of = NULL, *order = NULL, *kslot = NULL;
    int32_t *ktok = NULL;
    int64_t *kstart = NULL, *klen = NULL;
    uint8_t *kwant = NULL;
    const ss_mask **kmasks = NULL;
    donor_ref *kdonor = NULL;
    ss_h5 *h = NULL;
    int *ctrl_of = NULL, *n_ctrl = NULL;  /* with --controls: see add_controls */
    ss_mask_program **progs = NULL;      /* [n_groups * ns], device groups only */
    int n_prog_groups = 0;
    uint8_t *dev_group = NULL;
    int64_t *kprompt = NULL;
    int32_t *kwhich = NULL;
    ss_status st;
    ss_comm *comm, *dcomm = NULL;
    int dcomm_owned = 0;
    memset(vals, 0, sizeof vals);

    if ((st = ss_comm_world(&comm))) return st;
    const int rank = ss_comm_rank(comm), size = ss_comm_size(comm);
    if ((st = parse_metrics(job->metrics, want))) return ss_comm_check(comm, st);
    if (want[M_KEYWORD] && !job->keywords)
        return ss_comm_check(comm, ss_errorf(SS_ERR_ARG, "--metrics keyword needs --keywords FILE"));
    if (!want[M_KEYWORD] && job->keywords) /* else read for nothing: refused, as --patch-from without patch masks */
        return ss_comm_check(comm, ss_errorf(SS_ERR_ARG, "--keywords is used by --metrics keyword only"));
    ss_run_opts ro = job->run;
    ro.pipeline_replicas = 1; /* copies of a pipeline each run their share */
    if ((st = ss_run_open(&ro, &run))) return ss_comm_check(comm, st);
    const ss_config *cfg = &run.m->cfg;
    const int64_t N = run.p->n, V = cfg->vocab_size, B = run.B;
    int ns = ss_sites_count(cfg);
    /* This rank's prompts: whole batches of the one-process run, a share of
     * its own or of its copy of the pipeline, whose stages all run every
     * prompt of the copy (masks act on the stage that computes their site; the
     * last stage scores the logits). dcomm: the ranks that split the prompts
     * and run the same blocks (the world, or this stage in every copy). */
    const int piped = run.m->pipe != NULL, last_stage = run.m->end_layer == cfg->n_layer;
    int part, parts;
    ss_model_data_part(run.m, comm, &part, &parts);
    int64_t lo, hi;
    ss_comm_shard(N, B, part, parts, &lo, &hi);
    if ((st = ss_model_data_comm(run.m, comm, &dcomm, &dcomm_owned))) goto out;
    ss_progress_fn progress = rank == 0 ? job->progress : NULL;

    /* Masks: from the file, then the command line's. */
    if (job->masks_file && (st = ss_masks_read_jsonl(cfg, job->masks_file, &masks, &n_masks))) goto out;
    if (job->n_mask_specs) {
        ss_mask *grown = ss_realloc(masks, (size_t)(n_masks + job->n_mask_specs) * sizeof *masks, "masks");
        if (!grown) { st = SS_ERR_NOMEM; goto out; }
        masks = grown;
        for (int i = 0; i < job->n_mask_specs; i++) {
            if ((st = ss_mask_parse_spec(cfg, job->mask_specs[i], &masks[n_masks]))) goto out;
            n_masks++;
        }
    }
    if (!n_masks) { st = ss_errorf(SS_ERR_ARG, "no masks: give --mask SPEC or --masks FILE"); goto out; }
    if (job->controls < 0) { st = ss_errorf(SS_ERR_ARG, "--controls %d: must be >= 0", job->controls); goto out; }
    if (job->controls > 0 && (st = add_controls(cfg, job->controls, &masks, &n_masks, &ctrl_of, &n_ctrl, rank == 0 ? job->table : NULL)))
        goto out;
    if (n_masks > 512) { st = ss_errorf(SS_ERR_ARG, "%d masks: at most 512 per run", n_masks); goto out; }
    for (int i = 0; i < n_masks; i++) {
        if (strchr(masks[i].name, '/')) { st = ss_errorf(SS_ERR_ARG, "mask name '%s' contains '/'", masks[i].name); goto out; }
        for (int j = 0; j < i; j++)
            if (!strcmp(masks[i].name, masks[j].name)) { st = ss_errorf(SS_ERR_ARG, "two masks are named '%s'", masks[i].name); goto out; }
    }

    /* A mask whose positions all lie past the longest prompt changes nothing: said, as a
     * position list written for other prompts is the likely cause. */
    if (rank == 0 && job->table) {
        int64_t longest = 0;
        for (int64_t i = 0; i < N; i++)
            if (run.p->items[i].n_tokens > longest) longest = run.p->items[i].n_tokens;
        for (int i = 0; i < n_masks; i++)
            if (masks[i].n_positions && masks[i].positions[0] >= longest)
                fprintf(job->table,
                        "note: mask '%s': its positions (from %lld) lie past every prompt (the longest has %lld "
                        "tokens): it changes nothing\n",
                        masks[i].name, (long long)masks[i].positions[0], (long long)longest);
    }

    if (rank == 0 && job->table && want[M_LOGITDIFF])
        ss_note_multi_token_answers(run.m->tok, run.p, 1, "ablate", "logitdiff", stderr);

    /* Which sites need per-unit statistics, and which each mask touches. */
    need_stats = ss_calloc((size_t)ns, 1, "sites");
    touched = ss_calloc((size_t)(ns * n_masks), 1, "sites");
    us.mean = ss_calloc((size_t)ns, sizeof *us.mean, "unit stats");
    us.std = ss_calloc((size_t)ns, sizeof *us.std, "unit stats");
    mstats = ss_calloc((size_t)ns, sizeof *mstats, "unit stats");
    if (!need_stats || !touched || !us.mean || !us.std || !mstats) { st = SS_ERR_NOMEM; goto out; }
    int any_stats = 0, any_resample = 0, any_patch = 0;
    if (!(donors.rows = ss_calloc((size_t)ns, sizeof *donors.rows, "donor rows")) ||
        !(paired.rows = ss_calloc((size_t)ns, sizeof *paired.rows, "paired rows"))) { st = SS_ERR_NOMEM; goto out; }
    for (int k = 0; k < n_masks; k++)
        for (int i = 0; i < ns; i++) {
            if (!ss_mask_touches(&masks[k], i)) continue;
            touched[k * ns + i] = 1;
            const int rs = masks[k].mode == SS_MASK_RESAMPLE, pt = masks[k].mode == SS_MASK_PATCH;
            donor_store *ds = rs ? &donors : pt ? &paired : NULL;
            if (ds && !ds->rows[i]) {
                ss_site s;
                ss_site_get(cfg, i, &s);
                size_t n; /* resample: every prompt's rows; patch: the rank's own pairs */
                if (!ss_mul_ok((size_t)((rs ? N : hi - lo) * run.T), (size_t)s.width, &n) ||
                    !(ds->rows[i] = ss_malloc(n * sizeof(float) + 1, s.name)))
                    { st = ss_error_context(SS_ERR_NOMEM, "keeping every prompt's %s for %s", s.name, rs ? "resampling" : "patching"); goto out; }
                any_resample |= rs, any_patch |= pt;
            }
            int need_mean, need_std;
            ss_mask_needs_stats(&masks[k], &need_mean, &need_std);
            if (need_mean || need_std) need_stats[i] = 1, any_stats = 1;
        }

    if (any_patch && !job->patch_from) {
        st = ss_errorf(SS_ERR_ARG, "patch masks need --patch-from FILE (prompts paired line by line with %s)", job->run.input);
        goto out;
    }
    if (!any_patch && job->patch_from) { st = ss_errorf(SS_ERR_ARG, "--patch-from is used by masks of mode patch only"); goto out; }
    if (!any_stats && job->stats) { /* else never read, yet recorded as shaping the result */
        st = ss_errorf(SS_ERR_ARG, "--stats is used by masks of mode mean and relative noise/negnoise only");
        goto out;
    }
    if (any_patch && (st = ss_run_read_paired(&run, job->patch_from, job->run.truncate, &pps))) goto out;

    /* Per-prompt answers, labels. */
    answer = ss_malloc((size_t)N * sizeof *answer, "answers");
    wrong = ss_malloc((size_t)N * sizeof *wrong, "answers");
    group = ss_calloc((size_t)N, sizeof *group, "labels");
    labels = ss_calloc((size_t)N + 1, sizeof *labels, "labels");
    prompt_index = ss_malloc((size_t)B * sizeof *prompt_index, "prompt index");
    if (!answer || !wrong || !group || !labels || !prompt_index) { st = SS_ERR_NOMEM; goto out; }
    for (int64_t i = 0; i < N; i++) {
        const ss_prompt *it = &run.p->items[i];
        answer[i] = wrong[i] = -1;
        if (want[M_LOGITDIFF] && (st = ss_prompt_answer_ids(run.m->tok, run.p, it, &answer[i], &wrong[i]))) goto out;
        group[i] = -1;
        if (it->label) {
            int g = 0;
            while (g < n_labels && strcmp(labels[g], it->label)) g++;
            if (g == n_labels) {
                /* labels name HDF5 groups (/by_label/<label>): refused here, naming the line,
                 * rather than by the writer once every mask has run */
                if ((st = ss_prompt_label_check(run.p, it))) goto out;
                labels[n_labels++] = it->label;
            }
            group[i] = g;
        }
    }
    if (want[M_KEYWORD] && (st = read_keywords(job->keywords, run.m->tok, V, &is_kw))) goto out;
    if ((st = ss_run_place(&run, &job->run))) goto out;

    /* Per-unit statistics for mean / relative-noise masks. */
    if (any_stats) {
        if (job->stats) {
            if ((st = ss_read_unit_stats(job->stats, run.m, need_stats, 2, us.mean, us.std))) goto out;
        } else {
            us.m2 = ss_calloc((size_t)ns, sizeof *us.m2, "unit stats");
            us.count = ss_calloc((size_t)ns, sizeof *us.count, "unit stats");
            us.tree = ss_calloc((size_t)ns, sizeof *us.tree, "unit stats");
            if (!us.m2 || !us.count || !us.tree) { st = SS_ERR_NOMEM; goto out; }
            for (int i = 0; i < ns; i++) {
                if (!need_stats[i]) continue;
                ss_site s;
                ss_site_get(cfg, i, &s);
                us.mean[i] = ss_calloc((size_t)s.width, sizeof(double), "unit mean");
                us.m2[i] = ss_calloc((size_t)s.width, sizeof(double), "unit variance");
                us.std[i] = ss_calloc((size_t)s.width, sizeof(double), "unit std");
                us.tree[i].width = s.width;
                if (!us.mean[i] || !us.m2[i] || !us.std[i]) { st = SS_ERR_NOMEM; goto out; }
            }
            ss_forward_opts so = {.want = need_stats, .hook = stats_pass_hook, .hook_ctx = &us, .read_only = 1};
            for (int64_t b0 = lo; b0 < hi; b0 += B) {
                ss_packing pk;
                ss_run_pack(&run, b0, hi - b0 < B ? hi - b0 : B, &pk);
                if ((st = ss_forward(run.m, run.be, run.packed, &pk, &so, NULL))) goto out;
            }
            if ((st = merge_unit_stats(comm, cfg, need_stats, &us))) goto out;
            for (int i = 0; i < ns; i++) {
                if (!need_stats[i]) continue;
                ss_site s;
                ss_site_get(cfg, i, &s);
                for (int64_t k = 0; k < s.width; k++)
                    us.std[i][k] = us.count[i] > 1 ? sqrt(us.m2[i][k] / (double)(us.count[i] - 1)) : 0;
            }
        }
        for (int i = 0; i < ns; i++) mstats[i].mean = us.mean[i], mstats[i].std = us.std[i];
    }

    if (any_resample && N < 2) { st = ss_errorf(SS_ERR_ARG, "resample masks need at least 2 prompts to draw from"); goto out; }
    if (any_resample || any_patch) {
        if (!(lens = ss_malloc((size_t)N * sizeof *lens, "lengths"))) { st = SS_ERR_NOMEM; goto out; }
        for (int64_t i = 0; i < N; i++) lens[i] = run.p->items[i].n_tokens;
        donors.len = paired.len = lens;
        donors.N = paired.N = N;
        donors.T = paired.T = run.T;
        paired.first = lo;
    }
    /* Patch sources: a clean pass over the paired prompts (same lengths, so the same packing). */
    if (any_patch) {
        uint8_t *pwant = need_stats; /* reuse as the flags of patched sites */
        memset(pwant, 0, (size_t)ns);
        for (int i = 0; i < ns; i++) pwant[i] = paired.rows[i] != NULL;
        if (!(ptok = ss_malloc((size_t)(B * run.T) * sizeof *ptok, "paired tokens"))) { st = SS_ERR_NOMEM; goto out; }
        ss_forward_opts pfo = {.want = pwant, .hook = donor_hook, .hook_ctx = &paired, .read_only = 1};
        for (int64_t b0 = lo; b0 < hi; b0 += B) {
            ss_packing pk;
            ss_run_pack(&run, b0, hi - b0 < B ? hi - b0 : B, &pk);
            for (int64_t q = 0; q < pk.n_seq; q++)
                memcpy(ptok + pk.start[q], pps->items[b0 + q].tokens, (size_t)pk.len[q] * sizeof *ptok);
            paired.b0 = b0;
            if ((st = ss_forward(run.m, run.be, ptok, &pk, &pfo, NULL))) goto out;
        }
        for (int i = 0; i < ns; i++)
            if (paired.rows[i]) mstats[i].source_row = donor_row;
    }
    /* Resample donors: a clean pass that keeps every prompt's rows at those sites. */
    if (any_resample) {
        uint8_t *dwant = need_stats; /* reuse as the flags of donor sites */
        memset(dwant, 0, (size_t)ns);
        for (int i = 0; i < ns; i++) dwant[i] = donors.rows[i] != NULL;
        ss_forward_opts dfo = {.want = dwant, .hook = donor_hook, .hook_ctx = &donors, .read_only = 1};
        for (int64_t b0 = lo; b0 < hi; b0 += B) {
            ss_packing pk;
            ss_run_pack(&run, b0, hi - b0 < B ? hi - b0 : B, &pk);
            donors.b0 = b0;
            if ((st = ss_forward(run.m, run.be, run.packed, &pk, &dfo, NULL))) goto out;
        }
        /* Every rank of a stage's group gets every prompt's donors (a pipeline:
         * only the stage that computes a site needs its donors). */
        if ((st = share_donors(dcomm, cfg, &donors, lo, hi))) goto out;
        for (int i = 0; i < ns; i++)
            if (donors.rows[i]) mstats[i].source_row = donor_row;
    }

    /* Masks in order of the first block they touch, run in groups of K
     * consecutive ones; a group starts at its first mask's block. */
    int64_t rows_max = 1;
    for (int64_t b0 = 0; b0 < N; b0 += B) {
        int64_t r = 0;
        for (int64_t i = b0; i < N && i < b0 + B; i++) r += run.p->items[i].n_tokens;
        if (r > rows_max) rows_max = r;
    }
    start_of = ss_malloc((size_t)n_masks * sizeof *start_of, "mask start layers");
    order = ss_malloc((size_t)n_masks * sizeof *order, "mask order");
    prefix_want = ss_calloc((size_t)ns, 1, "sites");
    prefix.resid = ss_calloc((size_t)cfg->n_layer, sizeof *prefix.resid, "clean residuals");
    prefix.d = cfg->n_embd;
    if (!start_of || !order || !prefix_want || !prefix.resid) { st = SS_ERR_NOMEM; goto out; }
    for (int k = 0; k < n_masks; k++) {
        start_of[k] = first_layer(&masks[k], cfg);
        int j = k; /* insertion sort: stable, and n_masks is small */
        while (j > 0 && start_of[order[j - 1]] > start_of[k]) order[j] = order[j - 1], j--;
        order[j] = k;
    }
    int K = job->mask_batch > 0 ? job->mask_batch : auto_mask_batch(run.be, cfg, rows_max);
    if (K > n_masks) K = n_masks;
    const int n_groups = (n_masks + K - 1) / K;
    K = (n_masks + n_groups - 1) / n_groups; /* the same work with groups of even size */
    for (int g = 0; g < n_groups; g++) {
        int l = start_of[order[g * K]];
        if (l > 0 && !prefix.resid[l]) {
            if (!(prefix.resid[l] = ss_malloc((size_t)(rows_max * cfg->n_embd) * sizeof(float), "clean residuals")))
                { st = SS_ERR_NOMEM; goto out; }
            prefix_want[ss_site_id(cfg, SS_SITE_RESID_PRE, l)] = 1;
        }
    }
    size_t krows;
    if (!ss_mul_ok((size_t)K, (size_t)rows_max, &krows)) { st = ss_errorf(SS_ERR_ARG, "--mask-batch %d: too many rows", K); goto out; }
    ktok = ss_malloc(krows * sizeof *ktok, "mask batch tokens");
    kstart = ss_malloc((size_t)(K * B) * sizeof *kstart, "mask batch packing");
    klen = ss_malloc((size_t)(K * B) * sizeof *klen, "mask batch packing");
    kwant = ss_malloc((size_t)ns, "sites");
    kmasks = ss_malloc((size_t)K * sizeof *kmasks, "mask batch");
    kdonor = ss_malloc((size_t)K * sizeof *kdonor, "mask batch");
    kslot = ss_malloc((size_t)K * sizeof *kslot, "mask batch");
    if (!ktok || !kstart || !klen || !kwant || !kmasks || !kdonor || !kslot) { st = SS_ERR_NOMEM; goto out; }
    /* Device groups: their programs, made once for every batch. */
    if (!run.be->host_memory && run.be->apply_masks && run.be->mask_program_create && run.be->mask_program_free) {
        dev_group = ss_calloc((size_t)n_groups, 1, "mask groups");
        progs = ss_calloc((size_t)n_groups * (size_t)ns, sizeof *progs, "mask programs");
        kprompt = ss_malloc((size_t)(K * B) * sizeof *kprompt, "mask batch packing");
        kwhich = ss_malloc((size_t)(K * B) * sizeof *kwhich, "mask batch packing");
        if (!dev_group || !progs || !kprompt || !kwhich) { st = SS_ERR_NOMEM; goto out; }
        n_prog_groups = n_groups;
        for (int g = 0; g < n_groups; g++) {
            int k0 = g * K, kn = n_masks - k0 < K ? n_masks - k0 : K, ok = 1;
            for (int k = 0; k < kn; k++) {
                kmasks[k] = &masks[order[k0 + k]];
                ok &= device_mode(kmasks[k]->mode);
            }
            if (!(dev_group[g] = (uint8_t)ok)) continue;
            for (int i = 0; i < ns; i++) {
                int any = 0;
                for (int k = 0; k < kn; k++) any |= touched[order[k0 + k] * ns + i];
                if (any && (st = make_program(run.be, cfg, kmasks, kn, i, mstats, &progs[(size_t)g * ns + i]))) goto out;
            }
        }
    }

    /* The runs: per batch of prompts, clean then the groups of masks. */
    for (int k = 0; k <= n_masks; k++)
        for (int mt = 0; mt < M_COUNT; mt++)
            if (want[mt] && !(vals[k][mt] = ss_malloc((size_t)N * sizeof(float), "metrics"))) { st = SS_ERR_NOMEM; goto out; }
    metric_ctx mc = {want, is_kw, answer, wrong};
    if (last_stage && (st = scorer_open(&sc, run.be, &mc, V, (int64_t)krows, (int64_t)K * B, rows_max))) goto out;
    /* Progress: rank 0's own share (the other ranks have as many prompts or one batch fewer). */
    const int64_t work = (hi - lo) * (n_masks + 1);
    if (progress) progress(job->progress_ctx, 0, work);
    /* SUBSCOPE_TIMING=1: the passes' time (clean and masked, every batch; the
     * device synchronised at the end) on stderr, for the benchmarks */
    const int timing = ss_timing_on();
    const double t_passes = ss_now();
    /* SUBSCOPE_TIMING's split: the clean and the masked forwards, and the first of these
     * alone (a process's first forward of a shape pays for loading its kernels) */
    double t_clean = 0, t_masked = 0, t_first = 0, t_batch1 = 0, t0;
    long n_masked = 0;
    /* ... and the passes past the first batch of prompts, which has paid
     * every first-use cost: a sweep's steady cost per batch */
    for (int64_t b0 = lo; b0 < hi; b0 += B) {
        if (b0 == lo + B) t_batch1 = ss_now() - t_passes;
        int64_t nb = hi - b0 < B ? hi - b0 : B;
        ss_packing pk;
        ss_run_pack(&run, b0, nb, &pk);
        const int64_t R = pk.rows;
        for (int64_t q = 0; q < nb; q++) prompt_index[q] = b0 + q;
        ss_forward_opts cfo = {.want = prefix_want, .hook = prefix_hook, .hook_ctx = &prefix,
                               .logits = SS_LOGITS_ALL, .read_only = 1, .logits_hook = score_logits, .logits_ctx = &sc};
        if (last_stage) scorer_prepare(&sc, 1, 1, &pk, run.packed, b0, V);
        t0 = ss_now();
        if ((st = ss_forward(run.m, run.be, run.packed, &pk, &cfo, NULL))) goto out;
        t_clean += ss_now() - t0;
        const int clean_slot = 0;
        if (last_stage) score_prompts(&sc, &pk, run.packed, b0, 1, &clean_slot, vals);
        int64_t done = (b0 - lo) * (n_masks + 1) + nb;
        if (progress) progress(job->progress_ctx, done, work);

        for (int g = 0; g < n_groups; g++) {
            int k0 = g * K, kn = n_masks - k0 < K ? n_masks - k0 : K, first = start_of[order[k0]];
            memset(kwant, 0, (size_t)ns);
            for (int k = 0; k < kn; k++) {
                int mi = order[k0 + k];
                kmasks[k] = &masks[mi];
                kdonor[k] = masks[mi].mode == SS_MASK_PATCH ? (donor_ref){&paired, 0, 1} : (donor_ref){&donors, masks[mi].seed, 0};
                kslot[k] = 1 + mi;
                for (int i = 0; i < ns; i++) kwant[i] |= touched[mi * ns + i];
                memcpy(ktok + k * R, run.packed, (size_t)R * sizeof *ktok);
                for (int64_t q = 0; q < nb; q++) kstart[k * nb + q] = k * R + pk.start[q], klen[k * nb + q] = pk.len[q];
            }
            ss_packing kpk = {kn * nb, kn * R, kstart, klen, 0};
            mask_hook_ctx hc = {kmasks, kn, mstats, kdonor, &pk, prompt_index};
            ss_forward_opts fo = {.want = kwant, .hook = mask_hook, .hook_ctx = &hc, .logits = SS_LOGITS_ALL,
                                  .start_layer = first, .start_resid = first > 0 ? prefix.resid[first] : NULL,
                                  .start_copies = kn, .logits_hook = score_logits, .logits_ctx = &sc};
            dev_mask_ctx dc = {run.be, progs ? progs + (size_t)g * ns : NULL, kn * nb, kprompt, kwhich};
            if (dev_group && dev_group[g]) {
                for (int k = 0; k < kn; k++)
                    for (int64_t q = 0; q < nb; q++) kprompt[k * nb + q] = b0 + q, kwhich[k * nb + q] = k;
                fo.hook = dev_mask_hook;
                fo.hook_ctx = &dc;
                fo.hook_on_device = 1;
            }
            if (last_stage) scorer_prepare(&sc, 0, kn, &pk, run.packed, b0, V);
            t0 = ss_now();
            if ((st = ss_forward(run.m, run.be, ktok, &kpk, &fo, NULL))) {
                if (kn == 1) ss_error_context(st, "mask '%s'", kmasks[0]->name);
                else ss_error_context(st, "masks '%s' .. '%s' (run together)", kmasks[0]->name, kmasks[kn - 1]->name);
                goto out;
            }
            t0 = ss_now() - t0;
            if (!n_masked) t_first = t0;
            t_masked += t0, n_masked++;
            if (last_stage) score_prompts(&sc, &pk, run.packed, b0, kn, kslot, vals);
            done += kn * nb;
            if (progress) progress(job->progress_ctx, done, work);
        }
    }
    if (timing) {
        if ((st = run.be->sync(run.be))) goto out;
        const double t_all = ss_now() - t_passes;
        ss_eprintf("subscope ablate%s: timing: passes %.4f s (%lld prompts, %d masks): clean forwards %.4f s, "
                   "%ld masked forwards %.4f s, the rest %.4f s; the first masked forward %.4f s; "
                   "past the first batch of prompts %.4f s (%lld batches)\n",
                   size > 1 ? " (a rank)" : "", t_all, (long long)(hi - lo), n_masks, t_clean, n_masked, t_masked,
                   t_all - t_clean - t_masked, t_first, hi - lo > B ? t_all - t_batch1 : 0.0,
                   (long long)((hi - lo + B - 1) / B));
    }

    /* Every copy's last stage (every rank without a pipeline) has its share
     * of the values: the first of them takes the others', in input order. */
    if (parts > 1 && last_stage) {
        void *arr[(1 + 512) * M_COUNT];
        int n_arr = 0;
        for (int k = 0; k <= n_masks; k++)
            for (int mt = 0; mt < M_COUNT; mt++)
                if (vals[k][mt]) arr[n_arr++] = vals[k][mt];
        if ((st = ss_gather_shares(dcomm, arr, n_arr, sizeof(float), N, B, lo, hi))) {
            ss_error_context(st, "gathering the per-prompt metrics");
            goto out;
        }
    }
    /* The first copy's last stage has every value: it sends them to rank 0. */
    if (piped) {
        const int last = run.m->n_stages - 1;
        for (int k = 0; k <= n_masks && !st && (rank == 0 || rank == last); k++)
            for (int mt = 0; mt < M_COUNT && !st; mt++) {
                if (!vals[k][mt]) continue;
                if (rank == last) st = ss_comm_send(comm, 0, 1, vals[k][mt], (size_t)N * sizeof(float));
                else st = ss_comm_recv(comm, last, 1, vals[k][mt], (size_t)N * sizeof(float));
            }
        if (st) { ss_error_context(st, "taking the metrics from the last pipeline stage"); goto out; }
    }
    /* Each stage's timing goes to the first stage of its copy; rank 0 records its copy's in the file. */
    if (rank != 0) {
        if (piped && (st = ss_pipeline_report(run.m, 0, NULL, 0))) ss_error_context(st, "reporting the pipeline's timing");
        goto out;
    }

    /* The file. */
    if ((st = ss_h5_create(job->out, &h))) goto out;
    if ((st = ss_write_provenance(h, run.m, job->command_line, run.be))) goto out;
    if ((st = ss_h5_attr_str(h, "/", "input_path", job->run.input)) || (st = ss_h5_attr_i64(h, "/", "n_prompts", N)) ||
        (st = ss_h5_attr_i64(h, "/", "n_masks", n_masks)) || (st = ss_h5_attr_i64(h, "/", "controls", job->controls)) ||
        (st = ss_h5_attr_i64(h, "/", "ranks", size)) ||
        (st = ss_h5_attr_i64(h, "/", "pipeline_stages", piped ? run.m->n_stages : 1)))
        goto out;
    if ((job->patch_from && (st = ss_h5_attr_str(h, "/", "patch_from_path", job->patch_from))) ||
        (job->masks_file && (st = ss_h5_attr_str(h, "/", "masks_path", job->masks_file))) ||
        (job->stats && (st = ss_h5_attr_str(h, "/", "stats_path", job->stats))) ||
        (job->keywords && (st = ss_h5_attr_str(h, "/", "keywords_path", job->keywords))))
        goto out;
    if (piped && (st = ss_pipeline_report(run.m, 0, h, job->progress != NULL))) goto out;
    if ((st = write_metrics(h, "/clean", want, vals[0], N, 1))) goto out;
    for (int k = 0; k < n_masks; k++) {
        char g[160];
        snprintf(g, sizeof g, "/ablate/%s", masks[k].name);
        if ((st = write_metrics(h, g, want, vals[k + 1], N, 0))) goto out;
        const ss_mask *orig = ctrl_of && ctrl_of[k] >= 0 ? &masks[ctrl_of[k]] : NULL;
        if ((st = mask_attrs(h, g, cfg, &masks[k], orig, n_ctrl ? n_ctrl[k] : 0))) goto out;
    }
    for (int g = 0; g < n_labels; g++)
        for (int k = 0; k <= n_masks; k++)
            for (int mt = 0; mt < M_COUNT; mt++) {
                if (!want[mt] || (!k && mt == M_KL)) continue;
                char p[SS_MAX_LABEL + 256]; /* (a mask's name is at most 63 bytes) */
                if (k) snprintf(p, sizeof p, "/by_label/%s/ablate/%s/%s", labels[g], masks[k - 1].name, metric_names[mt]);
                else snprintf(p, sizeof p, "/by_label/%s/clean/%s", labels[g], metric_names[mt]);
                double v = mean_over(vals[k][mt], group, g, N);
                if ((st = ss_h5_write_array(h, p, SS_H5_F64, 0, NULL, NULL, &v))) goto out;
            }
    if ((st = ss_h5_commit(h))) { h = NULL; goto out; }
    h = NULL;

    /* The table: each mask's change from clean, overall and per label. */
    if (job->table) {
        FILE *t = job->table;
        fprintf(t, "\n%d mask%s, %d per forward at most (%d forward%s per batch of prompts after the clean one)\n", n_masks,
                n_masks == 1 ? "" : "s", K, n_groups, n_groups == 1 ? "" : "s");
        /* columns as wide as the longest name and label in characters (a mask's controls differ at the end) */
        int wn = 7, wl = 5;
        /* columns, as a terminal shows them (a CJK character 2, a combining accent 0) */
        for (int k = 0; k < n_masks; k++)
            wn = ss_display_width_str(masks[k].name) > wn ? ss_display_width_str(masks[k].name) : wn;
        for (int g = 0; g < n_labels; g++) wl = ss_display_width_str(labels[g]) > wl ? ss_display_width_str(labels[g]) : wl;
        wn = wn < 120 ? wn : 120, wl = wl < 40 ? wl : 40;
        fprintf(t, "\nchange from clean (mean over prompts; clean value in the first row)\n%-*s %-*s", wn, "mask", wl, "label");
        for (int mt = 0; mt < M_COUNT; mt++)
            if (want[mt]) fprintf(t, " %10s", metric_names[mt]);
        fputc('\n', t);
        int any_nan = 0;
        for (int k = 0; k <= n_masks; k++)
            for (int g = -1; g < n_labels; g++) {
                ss_fput_col(t, k ? masks[k - 1].name : "(clean)", wn);
                fputc(' ', t);
                ss_fput_col(t, g < 0 ? "all" : labels[g], wl);
                for (int mt = 0; mt < M_COUNT; mt++) {
                    if (!want[mt]) continue;
                    double v = mean_over(vals[k][mt], group, g, N);
                    if (k) v -= mean_over(vals[0][mt], group, g, N);
                    if (isnan(v)) fprintf(t, " %10s", "nan"), any_nan = 1; /* not "+nan" or "-nan": no sign */
                    else fprintf(t, k ? " %+10.4f" : " %10.4f", v);
                }
                fputc('\n', t);
            }
        if (any_nan)
            fprintf(t, "nan: undefined, NaN in the file too: no prompt of the label has a value of the metric (a one-token\n"
                       "     prompt has no loss or acc, one without a keyword position no keyword), or its values are NaN\n");
    }
out:
    if (h) ss_h5_abort(h);
    if (dcomm_owned) ss_comm_free(dcomm);
    for (size_t j = 0; progs && j < (size_t)n_prog_groups * (size_t)ns; j++)
        if (progs[j]) run.be->mask_program_free(run.be, progs[j]);
    free(progs);
    free(dev_group);
    free(kprompt);
    free(kwhich);
    for (int k = 0; k <= 512; k++)
        for (int mt = 0; mt < M_COUNT; mt++) free(vals[k][mt]);
    for (int i = 0; i < ns; i++) {
        if (us.mean) free(us.mean[i]);
        if (us.std) free(us.std[i]);
        if (us.m2) free(us.m2[i]);
        for (int d = 0; us.tree && d < TREE_DEPTH; d++) free(us.tree[i].node[d].mean), free(us.tree[i].node[d].m2);
    }
    free(us.tree);
    free(us.mean);
    free(us.std);
    free(us.m2);
    free(us.count);
    for (int i = 0; donors.rows && i < ns; i++) free(donors.rows[i]);
    for (int i = 0; paired.rows && i < ns; i++) free(paired.rows[i]);
    free(paired.rows);
    free(ptok);
    ss_prompts_free(pps);
    for (int64_t l = 0; prefix.resid && l < cfg->n_layer; l++) free(prefix.resid[l]);
    free(prefix.resid);
    free(prefix_want);
    free(start_of);
    free(order);
    free(kslot);
    free(ktok);
    free(kstart);
    free(klen);
    free(kwant);
    free(kmasks);
    free(kdonor);
    free(donors.rows);
    free(lens);
    free(mstats);
    free(need_stats);
    free(touched);
    free(is_kw);
    scorer_close(&sc);
    free(answer);
    free(wrong);
    free(group);
    free(labels);
    free(prompt_index);
    free(ctrl_of);
    free(n_ctrl);
    ss_masks_free(masks, n_masks);
    ss_run_close(&run);
    return ss_comm_check(comm, st);
}
