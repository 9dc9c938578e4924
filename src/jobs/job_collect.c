/* `collect`: streaming mean / covariance / correlation / principal components
 * of the activations at chosen sites, over all prompts and per label.
 *
 * Every prompt's selected rows are added to fp64 moments (stats.h) in input
 * order, whatever the batch size, so batching changes nothing but the forward
 * pass's own rounding. A checkpoint holds the moments and how many prompts
 * they cover, with the identity of the model, data and options, and is
 * written atomically; --resume continues from it and refuses a mismatch.
 *
 * With several ranks (docs/DISTRIBUTED.md) the prompts go in rounds: a round
 * is the stretch between two checkpoints (the whole input without them),
 * split into contiguous blocks of whole batches, one per rank, so every batch
 * holds the same prompts as in one process. At the end of a round rank 0
 * merges the other ranks' moments of that round into its own, in rank order,
 * with the same Chan update (ss_moments_merge), and writes the checkpoint; a
 * checkpoint therefore always covers a prefix of the input, and a run can
 * resume it with any number of ranks. With --pipeline P, copies of the
 * pipeline split a round the same way; each stage's moments are those of its
 * own sites (zero counts elsewhere), so the same merge adds them up. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "subscope/dist.h"
#include "subscope/forward.h"
#include "subscope/gguf_model.h"
#include "subscope/h5out.h"
#include "subscope/hash.h"
#include "subscope/jobs.h"
#include "subscope/prompts.h"
#include "subscope/stats.h"
#include "subscope/util.h"

typedef struct {
    int want_cov, want_corr;
    int64_t pca_k;           /* 0: none */
} stat_set;

typedef struct {
    int64_t from, to;        /* half-open; to < 0: to the end */
    int last;
} pos_filter;

typedef struct {
    const ss_config *cfg;
    int n_sites;             /* selected */
    int *site_ids;           /* [n_sites] */
    int *slot_of;            /* by site id: index into site_ids, or -1 */
    int n_groups;            /* 1 + number of labels when grouping */
    char **labels;           /* [n_groups]; labels[0] = NULL (all prompts) */
    ss_moments *mom;         /* [n_groups * n_sites] */
    const int *group_of;     /* group of each prompt of the batch (1..), 0 when not grouping */
    pos_filter pf;
    int skip_bos;
    /* device reduction (a GPU backend with moments_chunk) */
    const ss_backend *be;
    int64_t *rows;           /* scratch row list */
    double *mean, *m2;       /* scratch chunk moments */
    ss_dev_moments **acc;    /* [n_groups * n_sites]: running totals on the device (moments_acc_*), made on a
                              * (group, site)'s first rows; NULL: merged on the host batch by batch */
} collect_ctx;

static ss_status parse_stats(const char *spec, stat_set *s) {
    memset(s, 0, sizeof *s);
    /* an empty list (--stats '') would run the default but record "" as what was asked */
    if (spec && !spec[strspn(spec, ", ")])
        return ss_errorf(SS_ERR_ARG, "--stats is empty: give any of mean, cov, corr, pca:K (default mean,cov)");
    char *copy = ss_strdup(spec ? spec : "mean,cov"), *save = NULL;
    if (!copy) return SS_ERR_NOMEM;
    ss_status st = SS_OK;
    for (char *t = strtok_r(copy, ",", &save); t && !st; t = strtok_r(NULL, ",", &save)) {
        if (!strcmp(t, "mean")) continue;
        if (!strcmp(t, "cov")) s->want_cov = 1;
        else if (!strcmp(t, "corr")) s->want_corr = 1;
        else if (!strncmp(t, "pca:", 4)) {
            int64_t k;
            if (!ss_parse_int(t + 4, &k) || k < 1 || k > 1 << 20)
                st = ss_errorf(SS_ERR_ARG, "--stats: '%s' needs a number of components in 1..%d, e.g. pca:16 (K is capped "
                                           "at each site's width)", t, 1 << 20);
            else if (s->pca_k && s->pca_k != k) /* the last one won, without a word */
                st = ss_errorf(SS_ERR_ARG, "--stats '%s' asks for pca twice, with %lld and %lld components: give one pca:K",
                               spec, (long long)s->pca_k, (long long)k);
            else
                s->pca_k = k;
        } else {
            st = ss_errorf(SS_ERR_ARG, "--stats: unknown statistic '%s' (mean, cov, corr, pca:K)", t);
        }
    }
    free(copy);
    return st;
}

static ss_status parse_positions(const char *spec, pos_filter *pf) {
    pf->from = 0;
    pf->to = -1;
    pf->last = 0;
    if (!spec || !*spec || !strcmp(spec, "all")) return SS_OK;
    if (!strcmp(spec, "last")) {
        pf->last = 1;
        return SS_OK;
    }
    const char *colon = strchr(spec, ':');
    if (!colon) return ss_errorf(SS_ERR_ARG, "--positions must be all, last or FROM:TO, got '%s'", spec);
    /* FROM and TO: digits only (ss_parse_int: no space, no '+'; a number past int64, such as
     * 99999999999999999999, is refused rather than read as INT64_MAX) */
    const size_t nf = (size_t)(colon - spec), nt = strlen(colon + 1);
    if (colon != spec && (!ss_parse_int_n(spec, nf, &pf->from) || pf->from < 0))
        return ss_errorf(SS_ERR_ARG, "--positions: FROM in '%s' %s", spec,
                         strspn(spec, "0123456789") == nf ? "is out of range" : "must be a whole number of at least 0 (digits only)");
    if (colon[1]) {
        if (!ss_parse_int(colon + 1, &pf->to) || pf->to < 0)
            return ss_errorf(SS_ERR_ARG, "--positions: TO in '%s' %s", spec,
                             strspn(colon + 1, "0123456789") == nt ? "is out of range"
                                                                   : "must be a whole number of at least 0 (digits only)");
        if (pf->to <= pf->from) return ss_errorf(SS_ERR_ARG, "--positions: '%s' selects no position", spec);
    }
    return SS_OK;
}

/* The positions [from, to) of a prompt of length n that count. */
static void selected(const collect_ctx *c, int64_t n, int64_t *from, int64_t *to) {
    *from = c->pf.from;
    *to = c->pf.to < 0 || c->pf.to > n ? n : c->pf.to;
    if (c->pf.last) *from = n - 1, *to = n;
    if (c->skip_bos && *from < 1) *from = 1;
}

/* The device's running totals into the host's, at the end of a round (before
 * the ranks merge and a checkpoint is written): one download per site and
 * group instead of one per batch. */
static ss_status take_device_totals(collect_ctx *c) {
    for (int i = 0; c->acc && i < c->n_groups * c->n_sites; i++) {
        if (!c->acc[i]) continue; /* no rows yet (another stage's site, a group absent from this share) */
        ss_moments *m = &c->mom[i];
        /* Nothing on the host yet (a job's first round): the totals are the
         * host's as they come, with no pass over d^2 to add them to zeros (the
         * device keeps zeros above the diagonal, like the host); else a partial */
        const int empty = m->count == 0;
        double *mean = empty ? m->mean : c->mean, *m2 = !m->want_m2 ? NULL : empty ? m->m2 : c->m2;
        int64_t n;
        SS_TRY(c->be->moments_acc_take(c->be, c->acc[i], &n, mean, m2));
        if (empty) m->count = n;
        else SS_TRY(ss_moments_add_partial(m, n, mean, m2));
    }
    return SS_OK;
}

static void free_device_totals(collect_ctx *c) {
    for (int i = 0; c->acc && i < c->n_groups * c->n_sites; i++)
        if (c->acc[i]) c->be->moments_acc_free(c->be, c->acc[i]);
    free(c->acc);
    c->acc = NULL;
}

/* Running totals on the device where the backend keeps them: the table here,
 * each accumulator when its (group, site) first has rows, so that a pipeline
 * stage holds only its own sites'. */
static ss_status make_device_totals(collect_ctx *c) {
    const ss_backend *be = c->be;
    if (!be->moments_acc_create || !be->moments_acc_add || !be->moments_acc_take || !be->moments_acc_free) return SS_OK;
    c->acc = ss_calloc((size_t)(c->n_groups * c->n_sites), sizeof *c->acc, "device statistics");
    return c->acc ? SS_OK : SS_ERR_NOMEM;
}

/* The device ran out of memory for the running totals (or beside them):
 * every total so far goes to the host, and the rest of the job merges batch
 * by batch there. */
static ss_status give_up_device_totals(collect_ctx *c) {
    ss_eprintf("subscope: %s; merging each batch's statistics on the host instead\n", ss_last_error());
    ss_status st = take_device_totals(c);
    free_device_totals(c);
    return st;
}

/* Rows into slot i's running totals on the device, made on its first batch.
 * *done = 0: they must go the host's way (the device had no room; an add
 * that fails for memory leaves the totals as they were). */
static ss_status add_device_totals(collect_ctx *c, int i, const float *data, int64_t ld, int64_t n, int *done) {
    *done = 0;
    ss_status st = SS_OK;
    if (!c->acc[i]) {
        const ss_moments *m = &c->mom[i];
        st = c->be->moments_acc_create(c->be, m->d, m->want_m2, &c->acc[i]);
    }
    if (!st) st = c->be->moments_acc_add(c->be, c->acc[i], data, ld, c->rows, n);
    if (st == SS_ERR_NOMEM) return give_up_device_totals(c);
    *done = !st;
    return st;
}

/* GPU: one reduction per group per batch on the device, merged here in fp64. */
static ss_status add_rows_device(void *vctx, const ss_site *s, float *data, int64_t ld, const ss_packing *pk,
                                 const int64_t *pattern_off) {
    collect_ctx *c = vctx;
    int slot = c->slot_of[s->id];
    if (slot < 0) return SS_OK;
    ss_moments *all = &c->mom[slot];
    for (int g = 0; g < (c->group_of ? c->n_groups : 1); g++) {
        int64_t n = 0;
        for (int64_t q = 0; q < pk->n_seq; q++) {
            if (g > 0 && c->group_of[q] != g) continue;
            int64_t from, to;
            selected(c, pk->len[q], &from, &to);
            for (int64_t t = from; t < to; t++) c->rows[n++] = pk->start[q] + t;
        }
        if (!n) continue;
        int done = 0;
        if (c->acc) SS_TRY(add_device_totals(c, g * c->n_sites + slot, data, ld, n, &done));
        if (done) continue;
        SS_TRY(c->be->moments_chunk(c->be, data, ld, c->rows, n, s->width, c->mean, all->want_m2 ? c->m2 : NULL));
        SS_TRY(ss_moments_add_partial(&c->mom[g * c->n_sites + slot], n, c->mean, all->want_m2 ? c->m2 : NULL));
    }
    return SS_OK;
}

static ss_status add_rows(void *vctx, const ss_site *s, float *data, int64_t ld, const ss_packing *pk,
                          const int64_t *pattern_off) {
    collect_ctx *c = vctx;
    int slot = c->slot_of[s->id];
    if (slot < 0) return SS_OK;
    for (int64_t q = 0; q < pk->n_seq; q++) {
        int64_t from, to;
        selected(c, pk->len[q], &from, &to);
        if (from >= to) continue;
        const float *rows = data + (pk->start[q] + from) * ld;
        SS_TRY(ss_moments_add_f32(&c->mom[slot], rows, to - from, ld));
        if (c->group_of && c->group_of[q] > 0)
            SS_TRY(ss_moments_add_f32(&c->mom[c->group_of[q] * c->n_sites + slot], rows, to - from, ld));
    }
    return SS_OK;
}

/* Everything a checkpoint must match to be resumed. */
static char *identity(const ss_collect_job *j, const char *model_fp, const char *data_sha, int64_t max_len) {
    return ss_strfmt("model=%s data=%s sites=%s stats=%s positions=%s skip_bos=%d group_by=%s max_len=%lld "
                     "truncate=%d dtype=%d",
                     model_fp, data_sha, j->sites ? j->sites : "", j->stats ? j->stats : "mean,cov",
                     j->positions ? j->positions : "all", j->skip_bos, j->group_by ? j->group_by : "",
                     (long long)max_len, j->run.truncate, j->run.wdtype);
}

/* (a label is at most SS_MAX_LABEL bytes: "/groups/<label>/stats" fits 600 bytes, and that
 * plus a site and "/pca/explained_variance_ratio" the 800 of a path) */
static const char *group_prefix(const collect_ctx *c, int g, char *buf, size_t n) {
    if (g == 0) snprintf(buf, n, "/stats");
    else snprintf(buf, n, "/groups/%s/stats", c->labels[g]);
    return buf;
}

/* A checksum of a checkpoint's state, stored in it and checked on --resume:
 * HDF5's checksums cover its metadata, not the data, so a flipped bit in a
 * mean or a value edited by hand would otherwise resume silently. SHA-256
 * over the identity, the prompt count, and for each statistic its row count
 * and the ss_hash64 of its values' little-endian bytes (the co-moments of a
 * wide site are 75 MB: ss_hash64 takes them at GB/s, SHA-256 at 0.2 GB/s). */
static void put_u64(ss_sha256 *h, uint64_t v) {
    uint8_t le[8];
    for (int i = 0; i < 8; i++) le[i] = (uint8_t)(v >> (8 * i));
    ss_sha256_update(h, le, 8);
}

static void state_hash(const collect_ctx *c, const char *id, int64_t done, char out[65]) {
    ss_sha256 h;
    ss_sha256_init(&h);
    ss_sha256_update(&h, id, strlen(id) + 1);
    put_u64(&h, (uint64_t)done);
    for (int k = 0; k < c->n_groups * c->n_sites; k++) {
        const ss_moments *m = &c->mom[k];
        put_u64(&h, (uint64_t)m->count);
        put_u64(&h, ss_hash64(m->mean, (size_t)m->d * sizeof(double), 1));
        if (m->want_m2) put_u64(&h, ss_hash64(m->m2, (size_t)(m->d * m->d) * sizeof(double), 2));
    }
    ss_sha256_hex(&h, out);
}

static ss_status write_checkpoint(const collect_ctx *c, const char *path, const char *id, int64_t done) {
    ss_h5 *h;
    char sum[65];
    state_hash(c, id, done, sum);
    SS_TRY(ss_h5_create(path, &h));
    /* Checkpoints are temporary and written often: speed over size. */
    ss_status st = ss_h5_set_deflate(h, 0);
    if (!st) st = ss_h5_attr_str(h, "/", "identity", id);
    if (!st) st = ss_h5_attr_i64(h, "/", "prompts_done", done);
    if (!st) st = ss_h5_attr_str(h, "/", "state_checksum", sum);
    char base[600], p[800];
    for (int g = 0; g < c->n_groups && !st; g++)
        for (int i = 0; i < c->n_sites && !st; i++) {
            const ss_moments *m = &c->mom[g * c->n_sites + i];
            ss_site s;
            ss_site_get(c->cfg, c->site_ids[i], &s);
            group_prefix(c, g, base, sizeof base);
            int64_t one = 1, d = m->d, dd[2] = {m->d, m->d};
            snprintf(p, sizeof p, "%s/%s/count", base, s.name);
            st = ss_h5_write_array(h, p, SS_H5_I64, 1, &one, NULL, &m->count);
            snprintf(p, sizeof p, "%s/%s/mean", base, s.name);
            if (!st) st = ss_h5_write_array(h, p, SS_H5_F64, 1, &d, NULL, m->mean);
            snprintf(p, sizeof p, "%s/%s/m2", base, s.name);
            if (!st && m->want_m2) st = ss_h5_write_array(h, p, SS_H5_F64, 2, dd, NULL, m->m2);
        }
    if (st) {
        ss_h5_abort(h);
        return ss_error_context(st, "writing checkpoint %s", path);
    }
    return ss_h5_commit(h);
}

static ss_status read_checkpoint(collect_ctx *c, const char *path, const char *id, int64_t *done) {
    ss_h5_reader *r;
    SS_TRY(ss_h5_open_read(path, &r));
    char *have = NULL;
    ss_status st = ss_h5_read_attr_str(r, "/", "identity", &have);
    if (!st && strcmp(have, id) != 0)
        st = ss_errorf(SS_ERR_ARG,
                       "%s was made with a different model, data file or options; refusing to resume (delete it or "
                       "run without --resume). Checkpoint: %s; this run: %s",
                       path, have, id);
    if (!st) st = ss_h5_read_attr_i64(r, "/", "prompts_done", done);
    if (!st && *done < 0) st = ss_errorf(SS_ERR_FORMAT, "%s: prompts_done is %lld", path, (long long)*done);
    char base[600], p[800];
    for (int g = 0; g < c->n_groups && !st; g++)
        for (int i = 0; i < c->n_sites && !st; i++) {
            ss_moments *m = &c->mom[g * c->n_sites + i];
            ss_site s;
            ss_site_get(c->cfg, c->site_ids[i], &s);
            group_prefix(c, g, base, sizeof base);
            int64_t *cnt = NULL;
            double *v = NULL;
            snprintf(p, sizeof p, "%s/%s/count", base, s.name);
            /* sizes checked before reading: a small file can declare billions of values */
            st = ss_h5_read_want(r, p, SS_H5_I64, 1, (void **)&cnt, NULL);
            if (!st && cnt[0] < 0)
                st = ss_errorf(SS_ERR_FORMAT, "%s: %s is not one count of zero or more", path, p);
            if (!st) m->count = cnt[0];
            free(cnt);
            snprintf(p, sizeof p, "%s/%s/mean", base, s.name);
            if (!st && !(st = ss_h5_read_want(r, p, SS_H5_F64, (size_t)m->d, (void **)&v, NULL))) {
                memcpy(m->mean, v, (size_t)m->d * sizeof(double));
                free(v);
            }
            /* The co-moments straight into their totals: a copy read first was one d x d matrix
             * more at the peak (2 GiB at d = 16384). */
            snprintf(p, sizeof p, "%s/%s/m2", base, s.name);
            ss_h5_info info;
            if (!st && m->want_m2 && !(st = ss_h5_dset_info(r, p, &info))) {
                if (info.ndim != 2 || info.dims[0] != m->d || info.dims[1] != m->d)
                    st = ss_errorf(SS_ERR_FORMAT, "%s: %s has the wrong size", path, p);
                else st = ss_h5_read_slab(r, p, SS_H5_F64, (const int64_t[2]){0, 0}, info.dims, m->m2);
            }
        }
    /* The state read must be the state written (state_hash). A checkpoint from
     * before the checksum has none: resumed as before, with a note. */
    char *want = NULL, got[65];
    if (!st && ss_h5_attr_exists(r, "/", "state_checksum")) {
        if (!(st = ss_h5_read_attr_str(r, "/", "state_checksum", &want))) {
            state_hash(c, id, *done, got);
            if (strcmp(want, got) != 0)
                st = ss_errorf(SS_ERR_FORMAT,
                               "%s: its statistics do not match the checksum written with them (the file was damaged or "
                               "edited); refusing to resume (delete it, or run without --resume to start over)",
                               path);
        }
    } else if (!st) {
        ss_eprintf("collect: note: %s has no state_checksum (written before checkpoints had one): resumed unchecked\n",
                   path);
    }
    free(want);
    free(have);
    ss_h5_close_read(r);
    return st;
}

/* Axis names for a site's vector: its own unit name, flattened head-major for
 * q/k/v/z ("head_d_head"), and a second name for the other axis of d x d. */
static void unit_dims(const ss_site *s, char a[32], char b[40]) {
    /* dim_names are short fixed words (d_model, d_mlp, head, d_head). */
    if (s->ndim == 2) snprintf(a, 32, "%.12s_%.12s", s->dim_names[0], s->dim_names[1]);
    else snprintf(a, 32, "%.24s", s->dim_names[0]);
    snprintf(b, 40, "%s_j", a);
}

/* Principal components on the device where the backend can (cuSOLVER), else
 * on the host; a device without room for the matrix falls back to the host.
 * cov is lost: the host's solver works in it rather than in a copy (one d x d
 * matrix less at the peak, 2 GiB at d = 16384). */
static ss_status pca_top(const ss_backend *be, double *cov, int64_t d, int64_t k, double *vals, double *vecs) {
    if (be && be->pca_top) {
        ss_status st = be->pca_top(be, cov, d, k, vals, vecs);
        if (st != SS_ERR_NOMEM) return st;
        ss_eprintf("subscope: %s; computing the principal components on the host instead\n", ss_last_error());
    }
    /* dsyevr runs alone here: on OpenBLAS's threads, as many as the pool's (one took 2.4 s a
     * site at d 3072, 10 minutes at d 16384) */
    ss_cpu_blas_threads(1);
    ss_status st = ss_pca_top_destroy(cov, d, k, vals, vecs);
    ss_cpu_blas_threads(0);
    return st;
}

/* progress (may be NULL) after each site of each group: the covariance, PCA and correlation of a
 * wide site take long (12 MLP sites at d 3072 with pca:8: 35 s) */
static ss_status write_results(ss_h5 *h, const collect_ctx *c, const stat_set *ss, ss_progress_fn progress,
                               void *progress_ctx) {
    char base[600], p[800], da[32], db[40];
    double *buf = NULL, *vals = NULL, *vecs = NULL;
    size_t buf_cap = 0;
    ss_status st = SS_OK;
    const int64_t n_done = (int64_t)c->n_groups * c->n_sites;
    if (progress) progress(progress_ctx, 0, n_done);
    for (int g = 0; g < c->n_groups && !st; g++)
        for (int i = 0; i < c->n_sites && !st; i++) {
            if (progress && g * c->n_sites + i > 0) progress(progress_ctx, g * c->n_sites + i, n_done);
            const ss_moments *m = &c->mom[g * c->n_sites + i];
            ss_site s;
            ss_site_get(c->cfg, c->site_ids[i], &s);
            unit_dims(&s, da, db);
            group_prefix(c, g, base, sizeof base);
            int64_t d = m->d, dd[2] = {d, d};
            const char *n1[1] = {da}, *n2[2] = {da, db};
            snprintf(p, sizeof p, "%s/%s/count", base, s.name);
            if ((st = ss_h5_write_array(h, p, SS_H5_I64, 0, NULL, NULL, &m->count))) break;
            snprintf(p, sizeof p, "%s/%s/mean", base, s.name);
            if (!m->count) { /* no rows, no mean: NaN, not the zeros the totals start from */
                if (g == 0)
                    ss_eprintf("collect: note: %s saw no rows (are --positions%s past every prompt?): its mean is NaN\n",
                               s.name, c->skip_bos ? " and --skip-bos" : "");
                double *nan_mean = ss_malloc((size_t)d * sizeof(double), "mean");
                if (!nan_mean) { st = SS_ERR_NOMEM; break; }
                for (int64_t u = 0; u < d; u++) nan_mean[u] = NAN;
                st = ss_h5_write_array(h, p, SS_H5_F64, 1, &d, n1, nan_mean);
                free(nan_mean);
                snprintf(p, sizeof p, "%s/%s", base, s.name);
                if (st || (st = ss_h5_attr_str(h, p, "note", "no rows: mean NaN; no covariance, correlation or PCA"))) break;
                continue;
            }
            if ((st = ss_h5_write_array(h, p, SS_H5_F64, 1, &d, n1, m->mean))) break;
            if (!m->want_m2) continue;
            if (m->count < 2) {
                /* A group too small for a covariance: say so in the file rather than invent numbers. */
                snprintf(p, sizeof p, "%s/%s", base, s.name);
                if ((st = ss_h5_attr_str(h, p, "note", "fewer than 2 rows: no covariance, correlation or PCA"))) break;
                continue;
            }
            /* one buffer for every site, grown to the widest: a fresh one per site
             * cost a page fault per 4 KiB written (75 MB a site at d 3072) */
            if ((size_t)(d * d) > buf_cap) {
                free(buf);
                buf_cap = 0;
                if (!(buf = ss_malloc((size_t)(d * d) * sizeof(double), "covariance"))) { st = SS_ERR_NOMEM; break; }
                buf_cap = (size_t)(d * d);
            }
            if ((st = ss_moments_cov(m, buf))) break;
            if (ss->want_cov) {
                snprintf(p, sizeof p, "%s/%s/cov", base, s.name);
                if ((st = ss_h5_write_array(h, p, SS_H5_F64, 2, dd, n2, buf))) break;
            }
            if (ss->pca_k) {
                int64_t k = ss->pca_k < d ? ss->pca_k : d, kd[2] = {k, d};
                vals = ss_malloc((size_t)k * sizeof(double), "PCA");
                vecs = ss_malloc((size_t)(k * d) * sizeof(double), "PCA");
                if (!vals || !vecs) { st = SS_ERR_NOMEM; break; }
                /* Share of the total variance (the covariance's trace) per
                 * component: the trace first, as pca_top overwrites buf. */
                double trace = 0;
                for (int64_t u = 0; u < d; u++) trace += buf[u * d + u];
                if ((st = pca_top(c->be, buf, d, k, vals, vecs))) break;
                /* K is clamped to each site's width, so the axis is named per unit kind. */
                char dk[80];
                snprintf(dk, sizeof dk, "component_%s", da);
                const char *nk[1] = {dk}, *nkd[2] = {dk, da};
                snprintf(p, sizeof p, "%s/%s/pca/values", base, s.name);
                if ((st = ss_h5_write_array(h, p, SS_H5_F64, 1, &k, nk, vals))) break;
                snprintf(p, sizeof p, "%s/%s/pca/vectors", base, s.name);
                if ((st = ss_h5_write_array(h, p, SS_H5_F64, 2, kd, nkd, vecs))) break;
                for (int64_t q = 0; q < k; q++) vals[q] = trace > 0 ? vals[q] / trace : NAN;
                snprintf(p, sizeof p, "%s/%s/pca/explained_variance_ratio", base, s.name);
                if ((st = ss_h5_write_array(h, p, SS_H5_F64, 1, &k, nk, vals))) break;
                if (!(trace > 0)) { /* no spread at all (identical rows): 0/0, said where the ratios are */
                    snprintf(p, sizeof p, "%s/%s/pca", base, s.name);
                    if ((st = ss_h5_attr_str(h, p, "note",
                                             "every unit's variance is 0 (the rows are identical): the values are 0, the "
                                             "vectors arbitrary and explained_variance_ratio NaN (0/0)")))
                        break;
                }
                free(vals);
                free(vecs);
                vals = vecs = NULL;
            }
            if (ss->want_corr) {
                if ((st = ss_moments_corr(m, buf))) break;
                snprintf(p, sizeof p, "%s/%s/corr", base, s.name);
                if ((st = ss_h5_write_array(h, p, SS_H5_F64, 2, dd, n2, buf))) break;
            }
        }
    if (progress && !st) progress(progress_ctx, n_done, n_done);
    free(buf);
    free(vals);
    free(vecs);
    return st;
}

/* One rank's moments (count, mean, co-moments) to another, and back. */
static ss_status send_moments(collect_ctx *c, ss_comm *comm, int to) {
    for (int i = 0; i < c->n_groups * c->n_sites; i++) {
        ss_moments *m = &c->mom[i];
        ss_status st = ss_comm_send(comm, to, 1, &m->count, sizeof m->count);
        if (!st && m->count) st = ss_comm_send(comm, to, 2, m->mean, (size_t)m->d * sizeof(double));
        if (!st && m->count && m->want_m2) st = ss_comm_send(comm, to, 3, m->m2, (size_t)(m->d * m->d) * sizeof(double));
        if (st) return ss_error_context(st, "sending this rank's statistics to rank %d", to);
        ss_moments_reset(m);
    }
    return SS_OK;
}

static ss_status fold_moments(collect_ctx *c, ss_comm *comm, int from) {
    ss_moments part = {0};
    ss_status st = SS_OK;
    for (int i = 0; i < c->n_groups * c->n_sites && !st; i++) {
        ss_moments *m = &c->mom[i];
        if (part.d != m->d || part.want_m2 != m->want_m2) {
            ss_moments_free(&part);
            if ((st = ss_moments_init(&part, m->d, m->want_m2))) break;
        }
        if ((st = ss_comm_recv(comm, from, 1, &part.count, sizeof part.count)) || !part.count) continue;
        if (part.count < 0) {
            st = ss_errorf(SS_ERR_INTERNAL, "rank %d sent a negative row count", from);
            break;
        }
        if ((st = ss_comm_recv(comm, from, 2, part.mean, (size_t)m->d * sizeof(double)))) break;
        if (m->want_m2 && (st = ss_comm_recv(comm, from, 3, part.m2, (size_t)(m->d * m->d) * sizeof(double)))) break;
        st = ss_moments_merge(m, &part);
    }
    ss_moments_free(&part);
    return st ? ss_error_context(st, "merging the statistics of rank %d", from) : st;
}

/* The ranks' moments (of this round) folded into rank 0's by a binomial
 * tree: at level k, rank r with bit k set sends to r - 2^k, which folds them
 * into its own; log2(size) levels whose folds run side by side, instead of
 * rank 0 folding every rank's in turn (docs/SCALING.md). The order is fixed
 * by the rank count, so a run gives the same bits every time; the others
 * start the next round from zero. */
static ss_status merge_ranks(collect_ctx *c, ss_comm *comm) {
    const int rank = ss_comm_rank(comm), size = ss_comm_size(comm);
    for (int step = 1; step < size; step *= 2) {
        if (rank % (2 * step) == step) return send_moments(c, comm, rank - step);
        if (rank % (2 * step) == 0 && rank + step < size) SS_TRY(fold_moments(c, comm, rank + step));
    }
    return SS_OK;
}

ss_status ss_job_collect(const ss_collect_job *job) {
    ss_run run;
    ss_h5 *h = NULL;
    uint8_t *want = NULL;
    collect_ctx c = {0};
    int *group_of = NULL;
    char *id = NULL, *ckpt = NULL;
    stat_set ss;
    ss_status st;
    ss_comm *comm;

    /* Every rank reads the whole prompt file (each needs the same groups and
     * batch boundaries) but tokenizes only its own batches; an error anywhere
     * stops all ranks (ss_comm_check). */
    if ((st = ss_comm_world(&comm))) return st;
    const int rank = ss_comm_rank(comm), size = ss_comm_size(comm);
    if ((st = parse_stats(job->stats, &ss)) || (st = parse_positions(job->positions, &c.pf))) return st;
    c.skip_bos = job->skip_bos;
    if (job->group_by && *job->group_by && strcmp(job->group_by, "label") != 0)
        return ss_errorf(SS_ERR_ARG, "--group-by: only 'label' (the JSONL \"label\" field) is supported, got '%s'",
                         job->group_by);
    int grouping = job->group_by && *job->group_by;
    /* Each rank tokenizes only the prompts it will run (below). */
    ss_run_opts ro = job->run;
    ro.lazy_tokenize = 1;
    ro.pipeline_replicas = 1; /* stages merge like ranks: copies of a pipeline need nothing more */
    ro.no_logits = 1;
    if ((st = ss_run_open(&ro, &run))) return ss_comm_check(comm, st);
    ss_model *m = run.m;
    ss_prompts *p = run.p;
    const ss_config *cfg = &m->cfg;
    c.cfg = cfg;
    c.be = run.be;

    /* Sites: every per-token vector works; patterns have none. */
    int ns = ss_sites_count(cfg), nsel = 0;
    if (!job->sites || !*job->sites) { st = ss_errorf(SS_ERR_ARG, "--sites is required (e.g. 'blocks.*.mlp.hook_post')"); goto out; }
    if (!(want = ss_calloc((size_t)ns, 1, "site flags"))) { st = SS_ERR_NOMEM; goto out; }
    if ((st = ss_sites_select(cfg, job->sites, want, &nsel))) goto out;
    c.site_ids = ss_malloc((size_t)nsel * sizeof(int), "sites");
    c.slot_of = ss_malloc((size_t)ns * sizeof(int), "sites");
    if (!c.site_ids || !c.slot_of) { st = SS_ERR_NOMEM; goto out; }
    for (int i = 0; i < ns; i++) {
        c.slot_of[i] = -1;
        if (!want[i]) continue;
        ss_site s;
        ss_site_get(cfg, i, &s);
        if (!s.per_token) {
            /* Named outright, it is a mistake; swept up by a glob such as '*', it is left out. */
            if (ss_sites_list_names(job->sites, s.name)) {
                st = ss_errorf(SS_ERR_ARG, "site %s has no per-token vector to collect statistics of (try blocks.%d.attn.hook_z)",
                               s.name, s.layer);
                goto out;
            }
            want[i] = 0;
            continue;
        }
        c.slot_of[i] = c.n_sites;
        c.site_ids[c.n_sites++] = i;
    }
    if (!c.n_sites) { st = ss_errorf(SS_ERR_ARG, "--sites '%s' selects no site with a per-token vector", job->sites); goto out; }

    /* Groups, in order of first appearance. */
    c.n_groups = 1;
    if (!(c.labels = ss_calloc((size_t)p->n + 1, sizeof(char *), "labels"))) { st = SS_ERR_NOMEM; goto out; }
    if (!(group_of = ss_calloc((size_t)p->n, sizeof(int), "labels"))) { st = SS_ERR_NOMEM; goto out; }
    for (int64_t i = 0; grouping && i < p->n; i++) {
        const char *lab = p->items[i].label;
        if (!lab) { st = ss_errorf(SS_ERR_FORMAT, "%s:%lld: --group-by label but this line has no \"label\"", p->path, (long long)p->items[i].line); goto out; }
        if ((st = ss_prompt_label_check(p, &p->items[i]))) goto out;
        int g = 1;
        while (g < c.n_groups && strcmp(c.labels[g], lab)) g++;
        if (g == c.n_groups) c.labels[c.n_groups++] = (char *)lab;
        group_of[i] = g;
    }
    int need_m2 = ss.want_cov || ss.want_corr || ss.pca_k;
    if (!(c.mom = ss_calloc((size_t)(c.n_groups * c.n_sites), sizeof *c.mom, "statistics"))) { st = SS_ERR_NOMEM; goto out; }
    for (int g = 0; g < c.n_groups; g++)
        for (int i = 0; i < c.n_sites; i++) {
            ss_site s;
            ss_site_get(cfg, c.site_ids[i], &s);
            if ((st = ss_moments_init(&c.mom[g * c.n_sites + i], s.width, need_m2))) {
                ss_error_context(st, "statistics of %s", s.name);
                goto out;
            }
        }

    /* Identity of this run, for checkpoints and the output's provenance. */
    char data_sha[65], cfg_sha[65];
    int64_t data_size, cfg_size;
    /* A GGUF file holds its config: the whole file is the model's identity. */
    char *cfg_path = ss_model_path_is_gguf(job->run.model_dir) ? ss_strdup(job->run.model_dir)
                                                               : ss_path_join(job->run.model_dir, "config.json");
    if (!cfg_path) { st = SS_ERR_NOMEM; goto out; }
    st = ss_file_sha256(cfg_path, cfg_sha, &cfg_size);
    free(cfg_path);
    if (st) goto out;
    /* (several ranks: ss_run_open hashed the input and compared it between them) */
    if (run.input_sha[0]) memcpy(data_sha, run.input_sha, sizeof data_sha), data_size = run.input_size;
    else if ((st = ss_prompts_sha256(p, data_sha, &data_size))) goto out;
    /* Ranks that read different files would merge nonsense. */
    const char *cfg_shas[1] = {cfg_sha}, *cfg_what[1] = {"config.json"};
    if ((st = ss_run_same_files(comm, 1, cfg_shas, cfg_what))) goto out;
    /* A checkpoint's model is its files' contents (config, weights, tokenizer),
     * not its path: another model with the same config must not resume it. */
    char model_fp[65] = "-";
    if (rank == 0 && (job->resume || job->checkpoint_every > 0)) {
        const double t0 = ss_now();
        int64_t fp_bytes;
        if ((st = ss_model_fingerprint(job->run.model_dir, model_fp, &fp_bytes))) goto out;
        if (ss_now() - t0 > 2)
            ss_eprintf("collect: the model's fingerprint for checkpoints: %.1f GB read in %.1f s\n", (double)fp_bytes / 1e9,
                       ss_now() - t0);
    }
    if (!(id = identity(job, model_fp, data_sha, run.max_len)) || !(ckpt = ss_strfmt("%s.ckpt", job->out))) { st = SS_ERR_NOMEM; goto out; }
    int64_t done = 0;
    int resumed = 0; /* a checkpoint was read (--resume with none starts from the first prompt) */
    if (rank == 0) ss_tmp_sweep(ckpt); /* a killed run's half-written checkpoint (the output's: when it is created) */
    /* Rank 0 alone holds the running totals; the others add up one round at a time. */
    if (rank == 0 && job->resume && ss_file_exists(ckpt)) {
        if ((st = read_checkpoint(&c, ckpt, id, &done))) goto out;
        resumed = 1;
        if (done > p->n) { st = ss_errorf(SS_ERR_FORMAT, "%s covers %lld prompts but the input has %lld", ckpt, (long long)done, (long long)p->n); goto out; }
        if (job->progress) ss_eprintf("resuming from %s: %lld of %lld prompts done\n", ckpt, (long long)done, (long long)p->n);
    }
    if (size > 1 && (st = ss_comm_bcast(comm, &done, sizeof done, 0))) goto out;
    ss_progress_fn progress = rank == 0 ? job->progress : NULL;
    const int piped = m->pipe != NULL;
    /* This rank's share: its own, or its pipeline copy's (every stage of a
     * copy runs the copy's batches, each its own blocks). */
    int part, parts;
    ss_model_data_part(m, comm, &part, &parts);
    /* The blocks this rank runs, round by round, as the loop below cuts them. */
    for (int64_t r0 = done, r1; r0 < p->n; r0 = r1) {
        r1 = job->checkpoint_every > 0 && job->checkpoint_every < p->n - r0 ? r0 + job->checkpoint_every : p->n;
        int64_t lo, hi;
        ss_comm_shard(r1 - r0, run.B, part, parts, &lo, &hi);
        if (hi > lo && (st = ss_run_tokenize(&run, &ro, r0 + lo, r0 + hi))) goto out;
    }
    if ((st = ss_run_place(&run, &job->run))) goto out;
    const int64_t B = run.B, T = run.T ? run.T : 1; /* (a rank with no prompts has T = 0) */
    ss_forward_opts fo = {.want = want, .hook = add_rows, .hook_ctx = &c, .logits = SS_LOGITS_NONE, .read_only = 1};
    if (!c.be->host_memory && c.be->moments_chunk) {
        int64_t wmax = 0;
        for (int i = 0; i < c.n_sites; i++) {
            ss_site s;
            ss_site_get(cfg, c.site_ids[i], &s);
            wmax = s.width > wmax ? s.width : wmax;
        }
        c.rows = ss_malloc((size_t)(B * T) * sizeof(int64_t), "row list");
        c.mean = ss_malloc((size_t)wmax * sizeof(double), "chunk means");
        c.m2 = need_m2 ? ss_malloc((size_t)(wmax * wmax) * sizeof(double), "chunk co-moments") : NULL;
        if (!c.rows || !c.mean || (need_m2 && !c.m2)) { st = SS_ERR_NOMEM; goto out; }
        if ((st = make_device_totals(&c))) goto out;
        fo.hook = add_rows_device;
        fo.hook_on_device = 1;
    }
    if (progress) progress(job->progress_ctx, done, p->n);
    /* SUBSCOPE_TIMING=1: where the time went, on stderr (benchmarks read it) */
    const int timing = ss_timing_on();
    double t_batches = 0, t_totals = 0, t_write = 0, t_mark = ss_now();
    /* Rounds end at checkpoints; batches start at the round's start, every B
     * prompts, as in one process; each rank takes a block of whole batches. */
    for (int64_t r0 = done, r1; r0 < p->n; r0 = r1) {
        r1 = job->checkpoint_every > 0 && job->checkpoint_every < p->n - r0 ? r0 + job->checkpoint_every : p->n;
        int64_t lo, hi;
        ss_comm_shard(r1 - r0, B, part, parts, &lo, &hi);
        for (int64_t b0 = r0 + lo, nb; b0 < r0 + hi; b0 += nb) {
            nb = r0 + hi - b0 < B ? r0 + hi - b0 : B;
            ss_packing pk;
            ss_run_pack(&run, b0, nb, &pk);
            c.group_of = grouping ? group_of + b0 : NULL;
            if ((st = ss_forward(m, c.be, run.packed, &pk, &fo, NULL))) goto out;
            /* Rank 0 sees only its own block: it reports the round as going at its pace. */
            int64_t est = r0 + (b0 + nb - r0 - lo) * parts;
            if (progress && est < r1) progress(job->progress_ctx, est, p->n);
        }
        if (timing && (st = c.be->sync(c.be))) goto out; /* the batches' device work counts as theirs */
        double t_taken = ss_now();
        t_batches += t_taken - t_mark;
        if ((st = take_device_totals(&c))) goto out;
        t_mark = ss_now();
        t_totals += t_mark - t_taken;
        if (size > 1 && (st = merge_ranks(&c, comm))) goto out;
        if (progress) progress(job->progress_ctx, r1, p->n);
        if (rank == 0 && job->checkpoint_every > 0 && r1 < p->n && (st = write_checkpoint(&c, ckpt, id, r1))) goto out;
    }
    if (piped && rank != 0 && (st = ss_pipeline_report(m, 0, NULL, 0))) goto out;
    if (rank != 0) goto out; /* rank 0 writes the result */

    if ((st = ss_h5_create(job->out, &h))) goto out;
    if ((st = ss_h5_set_deflate(h, job->compress))) goto out;
    if ((st = ss_write_provenance(h, m, job->command_line, c.be))) goto out;
    if (piped && (st = ss_pipeline_report(m, 0, h, job->progress != NULL))) goto out;
    if ((st = ss_h5_attr_str(h, "/", "data_path", job->run.input)) || (st = ss_h5_attr_i64(h, "/", "data_size", data_size)) ||
        (st = ss_h5_attr_str(h, "/", "data_sha256", data_sha)) || (st = ss_h5_attr_i64(h, "/", "n_prompts", p->n)) ||
        (st = ss_h5_attr_str(h, "/", "sites", job->sites)) ||
        (st = ss_h5_attr_str(h, "/", "stats", job->stats ? job->stats : "mean,cov")) ||
        (st = ss_h5_attr_str(h, "/", "positions", job->positions ? job->positions : "all")) ||
        (st = ss_h5_attr_i64(h, "/", "skip_bos", job->skip_bos)) || (st = ss_h5_attr_i64(h, "/", "ranks", size)) ||
        (st = ss_h5_attr_i64(h, "/", "pipeline_stages", piped ? m->n_stages : 1)))
        goto out;
    if (grouping && (st = ss_h5_attr_str(h, "/", "group_by", job->group_by))) goto out;
    /* Where the totals started: a resumed run names its checkpoint and the prompts it held. */
    if (resumed && ((st = ss_h5_attr_i64(h, "/", "resumed", 1)) || (st = ss_h5_attr_str(h, "/", "checkpoint_path", ckpt)) ||
                    (st = ss_h5_attr_i64(h, "/", "resumed_prompts", done))))
        goto out;
    t_mark = ss_now();
    if ((st = write_results(h, &c, &ss, job->progress, job->results_progress_ctx))) goto out;
    ss_signals_held held; /* a signal between the two takes effect after both: no checkpoint beside the result */
    st = ss_h5_commit_held(h, &held, NULL);
    h = NULL;
    if (!st) unlink(ckpt); /* the result is whole: the checkpoint has served */
    ss_signals_release(&held);
    t_write = ss_now() - t_mark;
    if (timing)
        ss_eprintf("subscope collect: timing: batches (forward and statistics) %.3f s, device totals to the host %.3f s, "
                   "results and file %.3f s\n", t_batches, t_totals, t_write);
out:
    if (h) ss_h5_abort(h);
    free_device_totals(&c);
    for (int i = 0; c.mom && i < c.n_groups * c.n_sites; i++) ss_moments_free(&c.mom[i]);
    free(c.mom);
    free(c.site_ids);
    free(c.slot_of);
    free(c.labels);
    free(c.rows);
    free(c.mean);
    free(c.m2);
    free(group_of);
    free(want);
    free(id);
    free(ckpt);
    ss_run_close(&run);
    return ss_comm_check(comm, st);
}
