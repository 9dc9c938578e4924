/* subscope discover: candidate sub-models (groups of units) from a collect
 * file's statistics and, optionally, an attribute file's attributions;
 * written as HDF5 and as masks for `ablate --masks`. */
#include "subscope/discover.h"
#include "subscope/jobs.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/stat.h>
#include <unistd.h>

#include "subscope/h5out.h"
#include "subscope/json.h"
#include "subscope/hash.h"
#include "subscope/masks.h"
#include "subscope/sites.h"
#include "subscope/util.h"
#include "subscope/version.h"

#define NAME_MAX_LEN 63 /* ss_mask names hold 63 bytes */

typedef struct part {          /* one site of a sub-model */
    char *site;
    int64_t n;
    int64_t *units;
    double *mean, *std;        /* the unit's overall statistics ([n]; std NaN without cov) */
    double *stat;              /* within-cluster correlation, or Cohen's d */
    double *attr;              /* summed |attribution| ([n]; NULL without --attr) */
    double *mean_a, *mean_b, *std_a, *std_b; /* contrast only */
} part;

typedef struct submodel {
    char name[NAME_MAX_LEN + 1];
    double score;
    double cohesion;           /* cluster */
    double attr_share;         /* cluster with --attr: the site's attribution mass it holds */
    double mean_abs_effect, max_abs_effect; /* contrast */
    part *parts;
    int n_parts;
} submodel;

typedef struct sm_list {
    submodel *v;
    int n, cap;
} sm_list;

static void part_free(part *p) {
    free(p->site);
    free(p->units);
    free(p->mean);
    free(p->std);
    free(p->stat);
    free(p->attr);
    free(p->mean_a);
    free(p->mean_b);
    free(p->std_a);
    free(p->std_b);
}

static void sm_list_free(sm_list *l) {
    for (int i = 0; i < l->n; i++) {
        for (int j = 0; j < l->v[i].n_parts; j++) part_free(&l->v[i].parts[j]);
        free(l->v[i].parts);
    }
    free(l->v);
    memset(l, 0, sizeof *l);
}

static submodel *sm_push(sm_list *l) {
    if (l->n == l->cap) {
        int cap = l->cap ? l->cap * 2 : 16;
        submodel *v = ss_realloc(l->v, (size_t)cap * sizeof *v, "sub-model list");
        if (!v) return NULL;
        l->v = v;
        l->cap = cap;
    }
    submodel *s = &l->v[l->n++];
    memset(s, 0, sizeof *s);
    return s;
}

static part *sm_add_part(submodel *s, const char *site, int64_t n, int with_attr, int contrast) {
    part *np = ss_realloc(s->parts, (size_t)(s->n_parts + 1) * sizeof *np, "sub-model sites");
    if (!np) return NULL;
    s->parts = np;
    part *p = &np[s->n_parts++];
    memset(p, 0, sizeof *p);
    size_t b = (size_t)(n ? n : 1) * sizeof(double);
    p->site = ss_strdup(site);
    p->n = n;
    p->units = ss_malloc((size_t)(n ? n : 1) * sizeof(int64_t), "sub-model units");
    p->mean = ss_malloc(b, "sub-model statistics");
    p->std = ss_malloc(b, "sub-model statistics");
    p->stat = ss_malloc(b, "sub-model statistics");
    int ok = p->site && p->units && p->mean && p->std && p->stat;
    if (with_attr) ok = ok && (p->attr = ss_malloc(b, "sub-model attributions"));
    if (contrast) {
        p->mean_a = ss_malloc(b, "sub-model statistics");
        p->mean_b = ss_malloc(b, "sub-model statistics");
        p->std_a = ss_malloc(b, "sub-model statistics");
        p->std_b = ss_malloc(b, "sub-model statistics");
        ok = ok && p->mean_a && p->mean_b && p->std_a && p->std_b;
    }
    return ok ? p : NULL;
}

/* ---- inputs ------------------------------------------------------------ */

typedef struct site_data {     /* what one site's statistics give */
    int64_t d, count;
    double *mean;              /* [d] */
    double *var;               /* [d]: the cov diagonal, or NULL */
    double *corr;              /* [d,d] or NULL */
} site_data;

static void site_data_free(site_data *s) {
    free(s->mean);
    free(s->var);
    free(s->corr);
    memset(s, 0, sizeof *s);
}

/* Reads <prefix>/<site>/{count,mean,cov,corr}; corr and cov only if asked
 * (want_cov: 1 required, 2 when the file has it; want_corr: corr from the
 * file, or computed from cov when it is absent). Of cov only the diagonal is
 * kept, read a block of rows at a time: a whole [d,d] is held only for corr
 * (2 GiB at d = 16384; cov whole as well was 2 GiB more, 6 GiB for contrast). */
static ss_status read_site(ss_h5_reader *r, const char *prefix, const char *site, int want_cov, int want_corr,
                           site_data *out) {
    memset(out, 0, sizeof *out);
    const char *file = ss_h5_reader_path(r);
    char p[1024];
    snprintf(p, sizeof p, "%s/%s/count", prefix, site);
    ss_status st;
    int64_t *cnt = NULL;
    size_t n;
    if (!ss_h5_exists(r, p)) return ss_errorf(SS_ERR_FORMAT, "%s: no %s (not a collect file?)", file, p);
    /* the size checked before reading: a small file can declare billions of values */
    if ((st = ss_h5_read_want(r, p, SS_H5_I64, 1, (void **)&cnt, NULL))) return st;
    out->count = cnt[0];
    free(cnt);
    if (out->count < 0) return ss_errorf(SS_ERR_FORMAT, "%s: %s is not a scalar count", file, p);
    if (out->count > ((int64_t)1 << 53)) /* beyond doubles' integers: no collect wrote it */
        return ss_errorf(SS_ERR_FORMAT, "%s: %s is %lld, not a count of vectors", file, p, (long long)out->count);
    snprintf(p, sizeof p, "%s/%s/mean", prefix, site);
    ss_h5_info info;
    /* written whole by collect: one never written would be read as fill values */
    if ((st = ss_h5_dset_written(r, p)) || (st = ss_h5_read_f64(r, p, &out->mean, &n, &info))) goto fail;
    if (info.ndim != 1 || info.dims[0] < 1) {
        st = ss_errorf(SS_ERR_FORMAT, "%s: %s is not a non-empty vector", file, p);
        goto fail;
    }
    out->d = info.dims[0];
    int64_t d = out->d;
    if (out->count < 2) {
        st = ss_errorf(SS_ERR_ARG, "%s: %s/%s has %lld vector(s): no covariance or correlation to work from", file,
                       prefix, site, (long long)out->count);
        goto fail;
    }
    char pc[1024];
    snprintf(pc, sizeof pc, "%s/%s/corr", prefix, site);
    const int have_corr = want_corr && ss_h5_exists(r, pc);
    snprintf(p, sizeof p, "%s/%s/cov", prefix, site);
    int have_cov = ss_h5_exists(r, p);
    if (have_cov && (want_cov || want_corr)) {
        if (!(out->var = ss_malloc((size_t)d * sizeof(double), "variances"))) {
            st = SS_ERR_NOMEM;
            goto fail;
        }
        if (want_corr && !have_corr) {
            /* corr from the whole cov, in cov's own buffer; the same definition as
             * collect's corr: NaN for zero-variance units. */
            if ((st = ss_h5_dset_written(r, p)) || (st = ss_h5_read_f64(r, p, &out->corr, &n, &info))) goto fail;
            if (info.ndim != 2 || info.dims[0] != d || info.dims[1] != d) {
                st = ss_errorf(SS_ERR_FORMAT, "%s: %s is not [%lld, %lld]", file, p, (long long)d, (long long)d);
                goto fail;
            }
            double *c = out->corr;
            for (int64_t i = 0; i < d; i++) out->var[i] = c[i * d + i];
            for (int64_t i = 0; i < d; i++)
                for (int64_t j = 0; j < d; j++) {
                    double a = out->var[i], b = out->var[j];
                    c[i * d + j] = !(a > 0) || !(b > 0) ? NAN : i == j ? 1.0 : fmax(-1.0, fmin(1.0, c[i * d + j] / sqrt(a * b)));
                }
        } else if ((st = ss_h5_read_diag(r, p, d, out->var))) {
            goto fail;
        }
    } else if (want_cov == 1) {
        st = ss_errorf(SS_ERR_ARG, "%s: no %s (collect with --stats mean,cov)", file, p);
        goto fail;
    }
    if (want_corr) {
        if (have_corr) {
            if ((st = ss_h5_dset_written(r, pc)) || (st = ss_h5_read_f64(r, pc, &out->corr, &n, &info))) goto fail;
            if (info.ndim != 2 || info.dims[0] != d || info.dims[1] != d) {
                st = ss_errorf(SS_ERR_FORMAT, "%s: %s is not [%lld, %lld]", file, pc, (long long)d, (long long)d);
                goto fail;
            }
        } else if (!out->corr) {
            st = ss_errorf(SS_ERR_ARG, "%s: %s/%s has neither corr nor cov (collect with --stats mean,cov,corr)", file,
                           prefix, site);
            goto fail;
        }
    }
    return SS_OK;
fail:
    site_data_free(out);
    return st;
}

/* The distinct site names under /stats of a collect file, sorted. */
static ss_status stats_sites(ss_h5_reader *r, char ***sites, int *n_sites) {
    *sites = NULL;
    *n_sites = 0;
    const char *file = ss_h5_reader_path(r);
    if (!ss_h5_exists(r, "/stats"))
        return ss_errorf(SS_ERR_FORMAT, "%s: no /stats group (is it a `subscope collect` output?)", file);
    char **paths;
    size_t n;
    SS_TRY(ss_h5_list(r, "/stats", 1, &paths, &n));
    char **v = ss_calloc(n ? n : 1, sizeof *v, "site names");
    int k = 0;
    ss_status st = v ? SS_OK : SS_ERR_NOMEM;
    for (size_t i = 0; i < n && st == SS_OK; i++) {
        const char *s = paths[i] + strlen("/stats/");
        const char *e = strchr(s, '/');
        if (!e) continue;
        size_t len = (size_t)(e - s);
        if (k && strlen(v[k - 1]) == len && !strncmp(v[k - 1], s, len)) continue;
        if (!(v[k] = ss_strndup(s, len))) st = SS_ERR_NOMEM;
        else k++;
    }
    ss_h5_free_names(paths, n);
    if (st == SS_OK && !k) st = ss_errorf(SS_ERR_FORMAT, "%s: /stats holds no sites", file);
    if (st != SS_OK) {
        if (v) ss_h5_free_names(v, (size_t)k);
        return st;
    }
    *sites = v;
    *n_sites = k;
    return SS_OK;
}

/* A short comma-separated list of names for error messages. */
static void name_list(char *buf, size_t cap, char **names, int n) {
    buf[0] = 0;
    for (int i = 0; i < n; i++) {
        size_t l = strlen(buf);
        if (l + strlen(names[i]) + 8 >= cap) {
            snprintf(buf + l, cap - l, ", ...");
            return;
        }
        snprintf(buf + l, cap - l, "%s%s", i ? ", " : "", names[i]);
    }
}

/* Applies the comma-separated globs to the file's sites; a glob matching
 * none is an error naming it and what the file has. sel[n_sites]. */
static ss_status select_sites(const char *globs, const char *file, char **sites, int n_sites, uint8_t *sel,
                              int *n_sel) {
    memset(sel, 0, (size_t)n_sites);
    *n_sel = 0;
    char *copy = ss_strdup(globs);
    if (!copy) return SS_ERR_NOMEM;
    ss_status st = SS_OK;
    char *save = NULL;
    int any = 0;
    for (char *g = strtok_r(copy, ",", &save); g && st == SS_OK; g = strtok_r(NULL, ",", &save)) {
        while (*g == ' ') g++;
        if (!*g) continue;
        any = 1;
        int hit = 0;
        for (int i = 0; i < n_sites; i++)
            if (ss_glob_match(g, sites[i])) {
                hit = 1;
                sel[i] = 1;
            }
        if (!hit) {
            char have[512];
            name_list(have, sizeof have, sites, n_sites);
            st = ss_errorf(SS_ERR_ARG, "--sites: '%s' matches no site in %s (it has: %s)", g, file, have);
        }
    }
    free(copy);
    if (st == SS_OK && !any) st = ss_errorf(SS_ERR_ARG, "--sites: no site given");
    for (int i = 0; i < n_sites; i++) *n_sel += sel[i];
    return st;
}

/* The labels under /groups of a collect file. */
static ss_status stats_labels(ss_h5_reader *r, char ***labels, int *n_labels) {
    *labels = NULL;
    *n_labels = 0;
    if (!ss_h5_exists(r, "/groups")) return SS_OK;
    char **paths;
    size_t n;
    SS_TRY(ss_h5_list(r, "/groups", 1, &paths, &n));
    char **v = ss_calloc(n ? n : 1, sizeof *v, "labels");
    int k = 0;
    ss_status st = v ? SS_OK : SS_ERR_NOMEM;
    for (size_t i = 0; i < n && st == SS_OK; i++) {
        const char *s = paths[i] + strlen("/groups/");
        const char *e = strchr(s, '/');
        if (!e) continue;
        size_t len = (size_t)(e - s);
        int seen = 0;
        for (int j = 0; j < k && !seen; j++) seen = strlen(v[j]) == len && !strncmp(v[j], s, len);
        if (seen) continue;
        if (!(v[k] = ss_strndup(s, len))) st = SS_ERR_NOMEM;
        else k++;
    }
    ss_h5_free_names(paths, n);
    if (st != SS_OK) {
        if (v) ss_h5_free_names(v, (size_t)k);
        return st;
    }
    *labels = v;
    *n_labels = k;
    return SS_OK;
}

/* Per-unit sum of |attribution| over every prompt and position of
 * /attr/<site> (NaN padding left out): the leading axes are what --reduce
 * left (2 for none, 1 for positions or prompts), the rest is the unit. */
static ss_status read_attr(ss_h5_reader *r, int lead, const char *site, int64_t d, double **out) {
    *out = NULL;
    const char *file = ss_h5_reader_path(r);
    char p[1024];
    snprintf(p, sizeof p, "/attr/%s", site);
    if (!ss_h5_exists(r, p))
        return ss_errorf(SS_ERR_ARG, "%s: no %s (run `subscope attribute` with --sites covering %s)", file, p, site);
    ss_h5_info info;
    SS_TRY(ss_h5_dset_info(r, p, &info));
    if (info.ndim <= lead) return ss_errorf(SS_ERR_FORMAT, "%s: %s has %d axes, want more than %d", file, p, info.ndim, lead);
    size_t rows, width;
    SS_TRY(ss_dims_product(info.dims, lead, &rows, p));
    SS_TRY(ss_dims_product(info.dims + lead, info.ndim - lead, &width, p));
    if ((int64_t)width != d)
        return ss_errorf(SS_ERR_FORMAT, "%s: %s has %zu units per token, the statistics have %lld", file, p, width,
                         (long long)d);
    /* attribute writes every row (NaN past a prompt's end): one storing far less than it declares
     * was never written, and would be read block by block as fill values */
    SS_TRY(ss_h5_dset_written(r, p));
    /* In blocks of about 16 MB: whole prompts (or entries of the one axis left) when one
     * fits, else positions of one prompt. [N, T, d] for a large run does not fit in memory,
     * and a read per row costs 0.2 ms (an hour for 10M rows). */
    const int64_t n0 = info.dims[0], n1 = lead == 2 ? info.dims[1] : 1; /* rows = n0 * n1 */
    const size_t budget = ((size_t)16 << 20) / sizeof(double) / width; /* rows a block holds */
    const int64_t take = budget < 1 ? 1 : (int64_t)budget;
    const int whole = take >= n1; /* blocks of whole entries of the first axis */
    const int64_t step = whole ? (take / n1 < n0 ? take / n1 : n0) : take; /* entries, or rows of one */
    double *a = ss_calloc((size_t)d, sizeof(double), "attributions");
    double *row = rows ? ss_malloc((size_t)(whole ? step * n1 : step) * width * sizeof(double), "attributions") : NULL;
    ss_status st = a && (row || !rows) ? SS_OK : SS_ERR_NOMEM;
    int64_t start[SS_H5_MAX_DIMS] = {0}, count[SS_H5_MAX_DIMS];
    for (int i = 0; i < info.ndim; i++) count[i] = info.dims[i];
    for (int64_t q = 0; q < n0 && rows && st == SS_OK; q += whole ? step : 1)
        for (int64_t t = 0; t < n1 && st == SS_OK; t += whole ? n1 : step) {
            start[0] = q;
            count[0] = whole ? (q + step <= n0 ? step : n0 - q) : 1;
            if (lead == 2) start[1] = t, count[1] = whole ? n1 : (t + step <= n1 ? step : n1 - t);
            if ((st = ss_h5_read_slab(r, p, SS_H5_F64, start, count, row))) break;
            const int64_t nr = count[0] * (lead == 2 ? count[1] : 1);
            for (int64_t v = 0; v < nr; v++)
                for (int64_t u = 0; u < d; u++)
                    if (!isnan(row[v * d + u])) a[u] += fabs(row[v * d + u]);
        }
    free(row);
    if (st != SS_OK) {
        free(a);
        return st;
    }
    *out = a;
    return SS_OK;
}

/* ---- the two methods --------------------------------------------------- */

typedef struct ctx {
    const ss_discover_job *job;
    ss_h5_reader *stats, *attr;
    int attr_lead;
    char **sites;
    uint8_t *sel;
    int n_sites;
    const char *label_a, *label_b;
    sm_list out;
} ctx;

static ss_status set_name(submodel *s, const char *a, const char *b, const char *c) {
    int n = snprintf(s->name, sizeof s->name, "%s%s%s", a, b, c);
    if (n < 0 || n > NAME_MAX_LEN)
        return ss_errorf(SS_ERR_ARG, "sub-model name '%s%s%s' is longer than %d bytes (mask names are limited to that)",
                         a, b, c, NAME_MAX_LEN);
    return SS_OK;
}

static int64_t units_for(double fraction, int64_t d) {
    int64_t k = (int64_t)llround(fraction * (double)d);
    return k < 1 ? 1 : k > d ? d : k;
}

typedef struct cl_entry {
    int64_t first, n;
    double score, cohesion, share;
} cl_entry;

static int cmp_cl(const void *pa, const void *pb) {
    const cl_entry *a = pa, *b = pb;
    if (a->score != b->score) return a->score > b->score ? -1 : 1;
    return (a->first > b->first) - (a->first < b->first);
}

static ss_status cluster_site(ctx *c, const char *site) {
    const ss_discover_job *job = c->job;
    site_data sd;
    SS_TRY(read_site(c->stats, "/stats", site, 0, 1, &sd));
    int64_t d = sd.d;
    double *attr = NULL;
    int64_t *label = ss_malloc((size_t)d * sizeof(int64_t), "cluster labels");
    int64_t *order = ss_malloc((size_t)d * sizeof(int64_t), "cluster members");
    cl_entry *cl = NULL;
    ss_status st = label && order ? SS_OK : SS_ERR_NOMEM;
    if (st == SS_OK && c->attr) st = read_attr(c->attr, c->attr_lead, site, d, &attr);
    int64_t k = 0, cap = units_for(job->fraction, d);
    if (cap < 2) cap = 2;
    if (st == SS_OK) st = ss_cluster_corr(sd.corr, d, cap, job->min_corr, label, &k);
    if (st == SS_OK && !(cl = ss_calloc((size_t)(k ? k : 1), sizeof *cl, "clusters"))) st = SS_ERR_NOMEM;
    if (st != SS_OK) goto out;
    /* Members of each cluster in unit order (counting sort by label). */
    {
        int64_t *pos = ss_calloc((size_t)k + 1, sizeof(int64_t), "clusters");
        if (!pos) {
            st = SS_ERR_NOMEM;
            goto out;
        }
        for (int64_t u = 0; u < d; u++)
            if (label[u] >= 0) pos[label[u] + 1]++;
        for (int64_t i = 0; i < k; i++) pos[i + 1] += pos[i];
        for (int64_t i = 0; i < k; i++) {
            cl[i].first = pos[i];
            cl[i].n = pos[i + 1] - pos[i];
        }
        for (int64_t u = 0; u < d; u++)
            if (label[u] >= 0) order[pos[label[u]]++] = u;
        free(pos);
    }
    double attr_total = 0;
    if (attr)
        for (int64_t u = 0; u < d; u++)
            if (label[u] >= 0) attr_total += attr[u];
    int64_t n_real = 0;
    for (int64_t i = 0; i < k; i++) {
        if (cl[i].n < 2) continue; /* a lone unit is no group */
        cl_entry e = cl[i];
        e.cohesion = ss_cluster_cohesion(sd.corr, d, order + e.first, e.n, NULL);
        e.score = e.cohesion;
        e.share = NAN;
        if (attr) {
            double a = 0;
            for (int64_t j = 0; j < e.n; j++) a += attr[order[e.first + j]];
            e.share = attr_total > 0 ? a / attr_total : 0.0;
            e.score = e.cohesion * e.share;
        }
        cl[n_real++] = e;
    }
    qsort(cl, (size_t)n_real, sizeof *cl, cmp_cl);
    int64_t keep = n_real < job->top ? n_real : job->top;
    for (int64_t i = 0; i < keep && st == SS_OK; i++) {
        submodel *s = sm_push(&c->out);
        if (!s) {
            st = SS_ERR_NOMEM;
            break;
        }
        char num[32];
        snprintf(num, sizeof num, "cluster%lld@", (long long)(i + 1));
        if ((st = set_name(s, num, site, ""))) break;
        s->score = cl[i].score;
        s->cohesion = cl[i].cohesion;
        s->attr_share = cl[i].share;
        s->mean_abs_effect = s->max_abs_effect = NAN;
        part *p = sm_add_part(s, site, cl[i].n, attr != NULL, 0);
        if (!p) {
            st = SS_ERR_NOMEM;
            break;
        }
        memcpy(p->units, order + cl[i].first, (size_t)cl[i].n * sizeof(int64_t));
        ss_cluster_cohesion(sd.corr, d, p->units, p->n, p->stat);
        for (int64_t j = 0; j < p->n; j++) {
            int64_t u = p->units[j];
            p->mean[j] = sd.mean[u];
            p->std[j] = sd.var ? sqrt(sd.var[u]) : NAN;
            if (attr) p->attr[j] = attr[u];
        }
    }
out:
    free(label);
    free(order);
    free(cl);
    free(attr);
    site_data_free(&sd);
    return st;
}

static ss_status contrast_site(ctx *c, const char *site, int all_idx) {
    const ss_discover_job *job = c->job;
    char pa[1024], pb[1024];
    snprintf(pa, sizeof pa, "/groups/%s/stats", c->label_a);
    snprintf(pb, sizeof pb, "/groups/%s/stats", c->label_b);
    site_data A = {0}, B = {0}, O = {0};
    double *attr = NULL, *eff = NULL, *score = NULL;
    int64_t *idx = NULL;
    ss_status st = read_site(c->stats, pa, site, 1, 0, &A);
    if (st == SS_OK) st = read_site(c->stats, pb, site, 1, 0, &B);
    if (st == SS_OK) st = read_site(c->stats, "/stats", site, 2, 0, &O); /* cov, if any: each unit's std */
    if (st != SS_OK) goto out;
    int64_t d = A.d;
    if (B.d != d || O.d != d) {
        st = ss_errorf(SS_ERR_FORMAT, "%s: %s has %lld units in group '%s', %lld in '%s' and %lld overall",
                       ss_h5_reader_path(c->stats), site, (long long)d, c->label_a, (long long)B.d, c->label_b,
                       (long long)O.d);
        goto out;
    }
    if (c->attr && (st = read_attr(c->attr, c->attr_lead, site, d, &attr))) goto out;
    eff = ss_malloc((size_t)d * sizeof(double), "effect sizes");
    score = ss_malloc((size_t)d * sizeof(double), "effect sizes");
    idx = ss_malloc((size_t)d * sizeof(int64_t), "effect sizes");
    double *va = ss_malloc((size_t)d * sizeof(double), "variances"), *vb = ss_malloc((size_t)d * sizeof(double), "variances");
    if (!eff || !score || !idx || !va || !vb) {
        free(va);
        free(vb);
        st = SS_ERR_NOMEM;
        goto out;
    }
    for (int64_t u = 0; u < d; u++) {
        va[u] = A.var[u];
        vb[u] = B.var[u];
    }
    st = ss_cohens_d(A.count, A.mean, va, B.count, B.mean, vb, d, eff);
    free(va);
    free(vb);
    if (st != SS_OK) goto out;
    /* With attributions, a unit's |d| is weighted by how much more than the
     * site's average unit it is attributed (1 for an average unit). */
    double amean = 0;
    if (attr) {
        for (int64_t u = 0; u < d; u++) amean += attr[u];
        amean /= (double)d;
    }
    for (int64_t u = 0; u < d; u++) score[u] = fabs(eff[u]) * (attr ? (amean > 0 ? attr[u] / amean : 0.0) : 1.0);
    int64_t k;
    if ((st = ss_top_units(score, d, units_for(job->fraction, d), idx, &k))) goto out;
    if (!k) {
        st = ss_errorf(SS_ERR_ARG, "%s: no unit of %s has a defined effect size between '%s' and '%s' (zero variance)",
                       ss_h5_reader_path(c->stats), site, c->label_a, c->label_b);
        goto out;
    }
    /* Units in index order in the sub-model (masks want them sorted). */
    for (int64_t i = 1; i < k; i++)
        for (int64_t j = i; j > 0 && idx[j - 1] > idx[j]; j--) {
            int64_t t = idx[j];
            idx[j] = idx[j - 1];
            idx[j - 1] = t;
        }
    submodel *s = sm_push(&c->out);
    if (!s) {
        st = SS_ERR_NOMEM;
        goto out;
    }
    /* sm_push may move the list, hence the index. */
    submodel *all = all_idx >= 0 ? &c->out.v[all_idx] : NULL;
    char pre[2 * NAME_MAX_LEN + 8];
    snprintf(pre, sizeof pre, "%s_vs_%s@", c->label_a, c->label_b);
    if ((st = set_name(s, pre, site, ""))) goto out;
    part *p[2] = {sm_add_part(s, site, k, attr != NULL, 1), all ? sm_add_part(all, site, k, attr != NULL, 1) : NULL};
    if (!p[0] || (all && !p[1])) {
        st = SS_ERR_NOMEM;
        goto out;
    }
    double sum_s = 0, sum_e = 0, max_e = 0;
    for (int64_t j = 0; j < k; j++) {
        int64_t u = idx[j];
        sum_s += score[u];
        sum_e += fabs(eff[u]);
        if (fabs(eff[u]) > max_e) max_e = fabs(eff[u]);
        for (int w = 0; w < 2; w++) {
            part *q = p[w];
            if (!q) continue;
            q->units[j] = u;
            q->mean[j] = O.mean[u];
            q->std[j] = O.var ? sqrt(O.var[u]) : NAN;
            q->stat[j] = eff[u];
            q->mean_a[j] = A.mean[u];
            q->mean_b[j] = B.mean[u];
            q->std_a[j] = sqrt(A.var[u]);
            q->std_b[j] = sqrt(B.var[u]);
            if (attr) q->attr[j] = attr[u];
        }
    }
    s->score = sum_s / (double)k;
    s->mean_abs_effect = sum_e / (double)k;
    s->max_abs_effect = max_e;
    s->cohesion = s->attr_share = NAN;
out:
    free(attr);
    free(eff);
    free(score);
    free(idx);
    site_data_free(&A);
    site_data_free(&B);
    site_data_free(&O);
    return st;
}

/* ---- output ------------------------------------------------------------ */

static int cmp_sm(const void *pa, const void *pb) {
    const submodel *a = pa, *b = pb;
    int na = isnan(a->score), nb = isnan(b->score);
    if (na != nb) return na - nb;
    if (!na && a->score != b->score) return a->score > b->score ? -1 : 1;
    return strcmp(a->name, b->name);
}

static int64_t sm_size(const submodel *s) {
    int64_t n = 0;
    for (int i = 0; i < s->n_parts; i++) n += s->parts[i].n;
    return n;
}

static char *sm_sites(const submodel *s) {
    size_t len = 1;
    for (int i = 0; i < s->n_parts; i++) len += strlen(s->parts[i].site) + 1;
    char *v = ss_malloc(len, "site list");
    if (!v) return NULL;
    v[0] = 0;
    for (int i = 0; i < s->n_parts; i++) {
        if (i) strcat(v, ",");
        strcat(v, s->parts[i].site);
    }
    return v;
}

static ss_status write_vec(ss_h5 *h, const char *grp, const char *name, ss_h5_type t, int64_t n, const void *v) {
    if (!v) return SS_OK;
    char p[1200];
    snprintf(p, sizeof p, "%s/%s", grp, name);
    return ss_h5_write_array(h, p, t, 1, &n, NULL, v);
}

static ss_status write_file_attrs(ss_h5 *h, const char *key, const char *path) {
    char sha[65];
    int64_t size;
    SS_TRY(ss_file_sha256(path, sha, &size));
    char k[64];
    snprintf(k, sizeof k, "%s_path", key);
    SS_TRY(ss_h5_attr_str(h, "/", k, path));
    snprintf(k, sizeof k, "%s_sha256", key);
    SS_TRY(ss_h5_attr_str(h, "/", k, sha));
    snprintf(k, sizeof k, "%s_size", key);
    return ss_h5_attr_i64(h, "/", k, size);
}

static ss_status write_h5(ss_h5 *h, const ctx *c) {
    const ss_discover_job *job = c->job;
    SS_TRY(ss_write_provenance_base(h, job->command_line));
    SS_TRY(write_file_attrs(h, "stats", job->stats));
    if (job->attr) SS_TRY(write_file_attrs(h, "attr", job->attr));
    /* The model the statistics came from, when the collect file says. */
    char *mp = NULL;
    if (ss_h5_read_attr_str(c->stats, "/", "model_path", &mp) == SS_OK) {
        ss_status st = ss_h5_attr_str(h, "/", "model_path", mp);
        free(mp);
        SS_TRY(st);
    }
    ss_error_clear();
    SS_TRY(ss_h5_attr_str(h, "/", "method", job->method));
    SS_TRY(ss_h5_attr_str(h, "/", "sites", job->sites));
    SS_TRY(ss_h5_attr_f64(h, "/", "fraction", job->fraction));
    SS_TRY(ss_h5_attr_str(h, "/", "mask_mode", job->mode ? job->mode : "zero"));
    if (!strcmp(job->method, "cluster")) {
        SS_TRY(ss_h5_attr_i64(h, "/", "top", job->top));
        SS_TRY(ss_h5_attr_f64(h, "/", "min_corr", job->min_corr));
    } else {
        SS_TRY(ss_h5_attr_str(h, "/", "contrast", job->contrast));
    }
    size_t len = 1;
    for (int i = 0; i < c->out.n; i++) len += strlen(c->out.v[i].name) + 1;
    char *names = ss_malloc(len, "sub-model names");
    if (!names) return SS_ERR_NOMEM;
    names[0] = 0;
    for (int i = 0; i < c->out.n; i++) {
        if (i) strcat(names, ",");
        strcat(names, c->out.v[i].name);
    }
    ss_status st = ss_h5_attr_str(h, "/", "submodels", names);
    free(names);
    SS_TRY(st);
    SS_TRY(ss_h5_group_create(h, "/submodels"));
    for (int i = 0; i < c->out.n; i++) {
        const submodel *s = &c->out.v[i];
        char g[256];
        snprintf(g, sizeof g, "/submodels/%s", s->name);
        SS_TRY(ss_h5_group_create(h, g));
        SS_TRY(ss_h5_attr_str(h, g, "name", s->name));
        SS_TRY(ss_h5_attr_str(h, g, "method", job->method));
        SS_TRY(ss_h5_attr_f64(h, g, "score", s->score));
        SS_TRY(ss_h5_attr_i64(h, g, "rank", i + 1));
        SS_TRY(ss_h5_attr_i64(h, g, "n_units", sm_size(s)));
        char *sites = sm_sites(s);
        if (!sites) return SS_ERR_NOMEM;
        st = ss_h5_attr_str(h, g, "sites", sites);
        free(sites);
        SS_TRY(st);
        if (!strcmp(job->method, "cluster")) {
            SS_TRY(ss_h5_attr_f64(h, g, "cohesion", s->cohesion));
            if (job->attr) SS_TRY(ss_h5_attr_f64(h, g, "attr_share", s->attr_share));
        } else {
            SS_TRY(ss_h5_attr_str(h, g, "label_a", c->label_a));
            SS_TRY(ss_h5_attr_str(h, g, "label_b", c->label_b));
            SS_TRY(ss_h5_attr_f64(h, g, "mean_abs_effect", s->mean_abs_effect));
            SS_TRY(ss_h5_attr_f64(h, g, "max_abs_effect", s->max_abs_effect));
        }
        for (int j = 0; j < s->n_parts; j++) {
            const part *p = &s->parts[j];
            char pg[1100];
            snprintf(pg, sizeof pg, "%s/%s", g, p->site);
            SS_TRY(write_vec(h, pg, "units", SS_H5_I64, p->n, p->units));
            SS_TRY(write_vec(h, pg, "mean", SS_H5_F64, p->n, p->mean));
            SS_TRY(write_vec(h, pg, "std", SS_H5_F64, p->n, p->std));
            SS_TRY(write_vec(h, pg, p->mean_a ? "effect_size" : "within_corr", SS_H5_F64, p->n, p->stat));
            SS_TRY(write_vec(h, pg, "attr", SS_H5_F64, p->n, p->attr));
            SS_TRY(write_vec(h, pg, "mean_a", SS_H5_F64, p->n, p->mean_a));
            SS_TRY(write_vec(h, pg, "mean_b", SS_H5_F64, p->n, p->mean_b));
            SS_TRY(write_vec(h, pg, "std_a", SS_H5_F64, p->n, p->std_a));
            SS_TRY(write_vec(h, pg, "std_b", SS_H5_F64, p->n, p->std_b));
        }
    }
    return SS_OK;
}


static void json_units(FILE *f, const part *p) {
    fputc('[', f);
    for (int64_t j = 0; j < p->n; j++) fprintf(f, "%s%lld", j ? ", " : "", (long long)p->units[j]);
    fputc(']', f);
}

static ss_status write_masks(const char *path, const ctx *c) {
    const ss_discover_job *job = c->job;
    FILE *f = fopen(path, "w");
    if (!f) return ss_errorf(SS_ERR_IO, "%s: cannot create: %s", path, strerror(errno));
    const char *mode = job->mode ? job->mode : "zero";
    for (int i = 0; i < c->out.n; i++) {
        const submodel *s = &c->out.v[i];
        fputs("{\"name\": ", f);
        ss_json_write_str(f, s->name, strlen(s->name));
        if (s->n_parts == 1) {
            fputs(", \"site\": ", f);
            ss_json_write_str(f, s->parts[0].site, strlen(s->parts[0].site));
            fputs(", \"units\": ", f);
            json_units(f, &s->parts[0]);
        } else {
            fputs(", \"sites\": [", f);
            for (int j = 0; j < s->n_parts; j++) {
                fputs(j ? ", {\"site\": " : "{\"site\": ", f);
                ss_json_write_str(f, s->parts[j].site, strlen(s->parts[j].site));
                fputs(", \"units\": ", f);
                json_units(f, &s->parts[j]);
                fputc('}', f);
            }
            fputc(']', f);
        }
        fprintf(f, ", \"mode\": \"%s\"", mode);
        if (job->has_factor) fprintf(f, ", \"factor\": %.17g", job->factor);
        if (job->has_sigma) fprintf(f, ", \"sigma\": %.17g", job->sigma);
        fputs("}\n", f);
    }
    /* On the disk before it is renamed into place, as the HDF5 output is (a crash
     * after the rename must not leave an empty file under the masks' name). */
    int ok = !ferror(f) && fflush(f) == 0 && ss_fsync(fileno(f)) == 0;
    int err = errno; /* the failing call's: fclose and unlink may set it again */
    if (fclose(f) != 0 && ok) ok = 0, err = errno;
    if (!ok) {
        unlink(path);
        return ss_errorf(SS_ERR_IO, "%s: write failed: %s", path, strerror(err));
    }
    return SS_OK;
}

static void print_table(FILE *t, const ctx *c) {
    int contrast = strcmp(c->job->method, "cluster") != 0;
    fprintf(t, "%-4s %-44s %-28s %6s %10s %10s\n", "rank", "sub-model", "sites", "units", "score",
            contrast ? "mean|d|" : "cohesion");
    for (int i = 0; i < c->out.n; i++) {
        const submodel *s = &c->out.v[i];
        char *sites = sm_sites(s);
        char shown[29];
        if (s->n_parts > 1) snprintf(shown, sizeof shown, "%d sites", s->n_parts);
        else snprintf(shown, sizeof shown, "%s", sites ? sites : "?");
        fprintf(t, "%-4d ", i + 1);
        ss_fput_pad(t, s->name, 44); /* a name holds the labels, which need not be ASCII: padded by columns */
        fprintf(t, " %-28s %6lld %10.4g %10.4g\n", shown, (long long)sm_size(s), s->score,
                contrast ? s->mean_abs_effect : s->cohesion);
        free(sites);
    }
}

/* ---- the job ----------------------------------------------------------- */

char *ss_discover_masks_path(const char *out) {
    size_t n = strlen(out);
    if (n > 3 && !strcmp(out + n - 3, ".h5")) return ss_strfmt("%.*s.masks.jsonl", (int)(n - 3), out);
    return ss_strfmt("%s.masks.jsonl", out);
}

static ss_status check_label(const char *lab, const char *what) {
    if (!*lab) return ss_errorf(SS_ERR_ARG, "--contrast: %s label is empty (want LABEL_A:LABEL_B)", what);
    if (strchr(lab, '/') || strchr(lab, ','))
        return ss_errorf(SS_ERR_ARG, "--contrast: label '%s' contains '/' or ','", lab);
    return SS_OK;
}

static ss_status check_job(const ss_discover_job *job, char **la, char **lb) {
    if (!job->stats) return ss_errorf(SS_ERR_ARG, "--stats: missing");
    if (!job->out) return ss_errorf(SS_ERR_ARG, "--out: missing");
    if (!job->sites || !*job->sites) return ss_errorf(SS_ERR_ARG, "--sites: missing");
    if (!job->method || (strcmp(job->method, "cluster") && strcmp(job->method, "contrast")))
        return ss_errorf(SS_ERR_ARG, "--method: want cluster or contrast, got '%s'", job->method ? job->method : "");
    if (!(job->fraction > 0 && job->fraction <= 1))
        return ss_errorf(SS_ERR_ARG, "--fraction %g is outside (0, 1]", job->fraction);
    if (job->top < 1) return ss_errorf(SS_ERR_ARG, "--top %lld: want at least 1", (long long)job->top);
    if (!(job->min_corr >= -1 && job->min_corr < 1))
        return ss_errorf(SS_ERR_ARG, "--min-corr %g is outside [-1, 1)", job->min_corr);
    ss_mask_mode mode = SS_MASK_ZERO;
    if (job->mode && ss_mask_mode_parse(job->mode, &mode))
        return ss_errorf(SS_ERR_ARG, "--mode: unknown mode '%s' (zero, mean, scale, noise, negnoise, resample, patch)", job->mode);
    if (job->has_factor && !(job->factor >= 0 && job->factor <= 1))
        return ss_errorf(SS_ERR_ARG, "--factor %g is outside [0, 1]", job->factor);
    if (mode == SS_MASK_SCALE && !job->has_factor) return ss_errorf(SS_ERR_ARG, "--mode scale needs --factor in [0, 1]");
    if (job->has_sigma && !(job->sigma >= 0)) return ss_errorf(SS_ERR_ARG, "--sigma %g is negative", job->sigma);
    if (job->has_sigma && job->sigma > SS_MASK_SIGMA_MAX)
        return ss_errorf(SS_ERR_ARG, "--sigma %g is above %g", job->sigma, SS_MASK_SIGMA_MAX);
    if (job->has_factor && mode != SS_MASK_SCALE)
        return ss_errorf(SS_ERR_ARG, "--factor is for --mode scale, not %s", ss_mask_mode_name(mode));
    if (job->has_sigma && mode != SS_MASK_NOISE && mode != SS_MASK_NEGNOISE)
        return ss_errorf(SS_ERR_ARG, "--sigma is for --mode noise or negnoise, not %s", ss_mask_mode_name(mode));
    if ((mode == SS_MASK_NOISE || mode == SS_MASK_NEGNOISE) && !job->has_sigma)
        return ss_errorf(SS_ERR_ARG, "--mode %s needs --sigma", job->mode);
    if (!strcmp(job->method, "contrast")) {
        if (!job->contrast) return ss_errorf(SS_ERR_ARG, "--method contrast needs --contrast LABEL_A:LABEL_B");
        const char *colon = strchr(job->contrast, ':');
        if (!colon || strchr(colon + 1, ':'))
            return ss_errorf(SS_ERR_ARG, "--contrast '%s': want LABEL_A:LABEL_B (one ':'; a label with ':' cannot be contrasted)", job->contrast);
        *la = ss_strndup(job->contrast, (size_t)(colon - job->contrast));
        *lb = ss_strdup(colon + 1);
        if (!*la || !*lb) return SS_ERR_NOMEM;
        SS_TRY(check_label(*la, "the first"));
        SS_TRY(check_label(*lb, "the second"));
        if (!strcmp(*la, *lb)) return ss_errorf(SS_ERR_ARG, "--contrast '%s': the two labels are the same", job->contrast);
    } else if (job->contrast) {
        return ss_errorf(SS_ERR_ARG, "--contrast goes with --method contrast");
    }
    return SS_OK;
}

ss_status ss_job_discover(const ss_discover_job *job) {
    ctx c = {.job = job};
    char *la = NULL, *lb = NULL, *masks_path = NULL, *masks_tmp = NULL, **labels = NULL;
    char *masks_target = NULL, *out_target = NULL; /* what the renames replace: a link's target (ss_out_target) */
    int n_labels = 0, n_sel = 0;
    ss_h5 *h = NULL;
    ss_status st = check_job(job, &la, &lb);
    if (st) goto out;
    c.label_a = la;
    c.label_b = lb;
    masks_path = job->masks_out ? ss_strdup(job->masks_out) : ss_discover_masks_path(job->out);
    if (!masks_path) {
        st = SS_ERR_NOMEM;
        goto out;
    }
    /* Named, as the CLI names an output that is an existing input (these need not exist yet). */
    const char *mlabel = job->masks_out ? "--masks-out" : "the masks file (named after --out)";
    if (ss_same_out(masks_path, job->out))
        st = ss_errorf(SS_ERR_ARG, "--out %s and %s %s are one file: give two names", job->out, mlabel, masks_path);
    for (int k = 0; k < 4 && !st; k++) {
        const char *o = k < 2 ? job->out : masks_path, *in = k % 2 ? job->attr : job->stats;
        if (in && !strcmp(o, in))
            st = ss_errorf(SS_ERR_ARG, "%s %s is the same file as --%s %s: it would be overwritten", k < 2 ? "--out" : mlabel, o,
                           k % 2 ? "attr" : "stats", in);
    }
    if (st) goto out;
    /* Refused now: renamed last, after --out is in place, a masks path that is a
     * folder would fail there, after the whole run (the earlier --out then put back). */
    struct stat msb;
    if (stat(masks_path, &msb) == 0 && S_ISDIR(msb.st_mode)) {
        st = ss_errorf(SS_ERR_ARG, "%s: is a directory, not an output file name", masks_path);
        goto out;
    }
    if ((st = ss_out_target(masks_path, &masks_target)) || (st = ss_out_target(job->out, &out_target))) goto out;
    if ((st = ss_h5_open_read(job->stats, &c.stats))) goto out;
    if ((st = stats_sites(c.stats, &c.sites, &c.n_sites))) goto out;
    if (!(c.sel = ss_malloc((size_t)c.n_sites, "site selection"))) {
        st = SS_ERR_NOMEM;
        goto out;
    }
    if ((st = select_sites(job->sites, job->stats, c.sites, c.n_sites, c.sel, &n_sel))) goto out;
    if (job->attr) {
        if ((st = ss_h5_open_read(job->attr, &c.attr))) goto out;
        char *reduce = NULL;
        if (ss_h5_read_attr_str(c.attr, "/", "reduce", &reduce) == SS_OK) {
            c.attr_lead = !strcmp(reduce, "none") ? 2 : (!strcmp(reduce, "positions") || !strcmp(reduce, "prompts")) ? 1 : -1;
            if (c.attr_lead < 0) st = ss_errorf(SS_ERR_FORMAT, "%s: unknown reduce attribute '%s'", job->attr, reduce);
            free(reduce);
            if (st) goto out;
        } else if (ss_h5_exists(c.attr, "/attr")) {
            c.attr_lead = 2; /* files from before --reduce existed */
            ss_error_clear();
        } else {
            st = ss_errorf(SS_ERR_FORMAT, "%s: no /attr group (is it a `subscope attribute` output?)", job->attr);
            goto out;
        }
        /* Attributions of another model weigh units they say nothing of: said, as ablate and
         * trace say of a --stats file of another model (their widths may still agree). */
        char *cs = NULL, *ca = NULL, *ps = NULL, *pa = NULL;
        if (ss_h5_read_attr_str(c.stats, "/", "model_config", &cs) == SS_OK &&
            ss_h5_read_attr_str(c.attr, "/", "model_config", &ca) == SS_OK && strcmp(cs, ca)) {
            if (ss_h5_read_attr_str(c.stats, "/", "model_path", &ps) != SS_OK) ps = NULL;
            if (ss_h5_read_attr_str(c.attr, "/", "model_path", &pa) != SS_OK) pa = NULL;
            ss_eprintf("subscope: warning: %s was computed on %s and %s on %s, whose configs differ: the "
                       "attributions describe another model\n",
                       job->attr, pa ? pa : "another model", job->stats, ps ? ps : "another model");
        }
        ss_error_clear(); /* files without the attributes (older, or not ours) are no error */
        free(cs), free(ca), free(ps), free(pa);
    }
    /* a site can take a while (cluster at d 16384: 45 s): progress site by site, from 0 */
    if (job->progress) job->progress(job->progress_ctx, 0, n_sel);
    if (!strcmp(job->method, "contrast")) {
        if ((st = stats_labels(c.stats, &labels, &n_labels))) goto out;
        const char *want[2] = {la, lb};
        for (int w = 0; w < 2; w++) {
            int found = 0;
            for (int i = 0; i < n_labels && !found; i++) found = !strcmp(labels[i], want[w]);
            if (!found) {
                char have[512];
                name_list(have, sizeof have, labels, n_labels);
                st = n_labels ? ss_errorf(SS_ERR_ARG, "--contrast: label '%s' is not in %s (its labels: %s)", want[w],
                                          job->stats, have)
                              : ss_errorf(SS_ERR_ARG, "--contrast: %s has no per-label statistics (collect with --group-by label)",
                                          job->stats);
                goto out;
            }
        }
        submodel *all = sm_push(&c.out);
        if (!all) {
            st = SS_ERR_NOMEM;
            goto out;
        }
        if ((st = set_name(all, la, "_vs_", lb))) goto out;
        for (int i = 0, done = 0; i < c.n_sites && st == SS_OK; i++)
            if (c.sel[i] && !(st = contrast_site(&c, c.sites[i], 0)) && job->progress)
                job->progress(job->progress_ctx, ++done, n_sel);
        if (st) goto out;
        submodel *a = &c.out.v[0];
        double se = 0, me = 0, tot = 0;
        int64_t n = 0;
        for (int j = 0; j < a->n_parts; j++) {
            const part *p = &a->parts[j];
            for (int64_t u = 0; u < p->n; u++) {
                double e = fabs(p->stat[u]);
                se += e;
                if (e > me) me = e;
            }
            n += p->n;
        }
        /* Each per-site score is a mean over its units, so the size-weighted
         * mean of them is the mean over all the units. */
        for (int i = 1; i < c.out.n; i++) tot += c.out.v[i].score * (double)sm_size(&c.out.v[i]);
        a->score = tot / (double)n;
        a->mean_abs_effect = se / (double)n;
        a->max_abs_effect = me;
        a->cohesion = a->attr_share = NAN;
    } else {
        for (int i = 0, done = 0; i < c.n_sites && st == SS_OK; i++)
            if (c.sel[i] && !(st = cluster_site(&c, c.sites[i])) && job->progress)
                job->progress(job->progress_ctx, ++done, n_sel);
        if (st) goto out;
        if (!c.out.n) {
            st = ss_errorf(SS_ERR_ARG,
                           "no cluster of two or more units was found at the chosen sites (all correlations are "
                           "at or below --min-corr %g?)", job->min_corr);
            goto out;
        }
    }
    qsort(c.out.v, (size_t)c.out.n, sizeof *c.out.v, cmp_sm);

    if (!(masks_tmp = ss_tmp_name(masks_target))) {
        st = SS_ERR_NOMEM;
        goto out;
    }
    ss_tmp_sweep(masks_target); /* a killed run's masks temporary */
    ss_tmp_register(masks_tmp);
    if ((st = write_masks(masks_tmp, &c))) goto out;
    if ((st = ss_h5_create(job->out, &h))) goto out;
    if ((st = ss_h5_set_deflate(h, 0))) goto out;
    if ((st = write_h5(h, &c))) goto out;
    /* --out and the masks file go into place with the signals held: one that comes between the two
     * renames takes effect after the second (or after the earlier --out is put back), not with a
     * new file beside an old one. A masks rename that fails puts the earlier --out back, or removes
     * the new one where there was none (ss_replace). */
    ss_signals_held held;
    ss_replace rep = {0};
    st = ss_h5_commit_held(h, &held, &rep);
    h = NULL;
    if (!st) st = ss_replace_file(&rep, masks_tmp, masks_target, masks_path);
    if (st) ss_replace_undo(&rep);
    else ss_replace_done(&rep);
    ss_signals_release(&held);
    if (st) goto out;
    if (job->table) print_table(job->table, &c);
out:
    if (h) ss_h5_abort(h);
    if (masks_tmp) unlink(masks_tmp), ss_tmp_unregister(masks_tmp);
    free(masks_tmp);
    free(masks_path);
    free(masks_target), free(out_target);
    if (labels) ss_h5_free_names(labels, (size_t)n_labels);
    if (c.sites) ss_h5_free_names(c.sites, (size_t)c.n_sites);
    free(c.sel);
    sm_list_free(&c.out);
    if (c.stats) ss_h5_close_read(c.stats);
    if (c.attr) ss_h5_close_read(c.attr);
    free(la);
    free(lb);
    return st;
}
