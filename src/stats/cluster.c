/* Grouping units for `subscope discover`: capped average-linkage clustering
 * on correlations, Cohen's d between two groups' statistics, top-k choice.
 *
 * Why average linkage rather than spectral clustering + k-means: it needs no
 * random start (the result is a function of the matrix alone), the size cap
 * gives clusters of "about --fraction of the units" directly instead of by
 * post-hoc splitting, and the min_corr floor keeps uncorrelated units out of
 * every cluster instead of forcing each into its nearest centroid. */
#include "subscope/discover.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "subscope/util.h"

static double corr_at(const double *c, int64_t d, int64_t i, int64_t j) {
    double v = c[i * d + j];
    return isnan(v) ? 0.0 : v;
}

typedef struct {
    double *s;         /* [n,n] average similarity between active clusters */
    int64_t n;
    int64_t *size;     /* 0: merged away */
    int64_t *nn;       /* best feasible partner (-1: none) */
    double *nn_s;
    int64_t cap;
    double floor_s;
} linkage;

/* The best partner of active cluster i: highest similarity above the floor
 * among clusters it may merge with without exceeding the cap; ties go to
 * the lowest index. */
static void find_nn(linkage *L, int64_t i) {
    int64_t best = -1;
    double bs = 0;
    const double *row = L->s + i * L->n;
    for (int64_t j = 0; j < L->n; j++) {
        if (j == i || !L->size[j] || L->size[i] + L->size[j] > L->cap) continue;
        double v = row[j];
        if (!(v > L->floor_s)) continue;
        if (best < 0 || v > bs) {
            best = j;
            bs = v;
        }
    }
    L->nn[i] = best;
    L->nn_s[i] = bs;
}

ss_status ss_cluster_corr(const double *corr, int64_t d, int64_t max_size, double min_corr, int64_t *label,
                          int64_t *n_clusters) {
    *n_clusters = 0;
    if (d <= 0) return ss_errorf(SS_ERR_ARG, "cluster: no units (d = %lld)", (long long)d);
    if (max_size < 1) return ss_errorf(SS_ERR_ARG, "cluster: maximum cluster size %lld < 1", (long long)max_size);
    if (isnan(min_corr)) return ss_errorf(SS_ERR_ARG, "cluster: min_corr is NaN");
    /* Compact the kept units so the working matrix has no holes. */
    int64_t *keep = ss_malloc((size_t)d * sizeof(int64_t), "cluster: unit list");
    if (!keep) return SS_ERR_NOMEM;
    int64_t n = 0;
    for (int64_t i = 0; i < d; i++) {
        label[i] = -1;
        if (isfinite(corr[i * d + i])) keep[n++] = i;
    }
    if (!n) {
        free(keep);
        return SS_OK;
    }
    size_t nn2;
    if (!ss_mul_ok((size_t)n, (size_t)n, &nn2) || !ss_mul_ok(nn2, sizeof(double), &nn2)) {
        free(keep);
        return ss_errorf(SS_ERR_NOMEM, "cluster: %lld units are too many", (long long)n);
    }
    linkage L = {.n = n, .cap = max_size, .floor_s = min_corr};
    L.s = ss_malloc(nn2, "cluster: similarity matrix");
    L.size = ss_malloc((size_t)n * sizeof(int64_t), "cluster: sizes");
    L.nn = ss_malloc((size_t)n * sizeof(int64_t), "cluster: neighbours");
    L.nn_s = ss_malloc((size_t)n * sizeof(double), "cluster: neighbours");
    int64_t *next = ss_malloc((size_t)n * sizeof(int64_t), "cluster: members"); /* member chains */
    int64_t *tail = ss_malloc((size_t)n * sizeof(int64_t), "cluster: members");
    ss_status st = SS_OK;
    if (!L.s || !L.size || !L.nn || !L.nn_s || !next || !tail) {
        st = SS_ERR_NOMEM;
        goto out;
    }
    for (int64_t a = 0; a < n; a++) {
        for (int64_t b = 0; b < n; b++) L.s[a * n + b] = a == b ? 1.0 : corr_at(corr, d, keep[a], keep[b]);
        L.size[a] = 1;
        next[a] = -1;
        tail[a] = a;
    }
    for (int64_t a = 0; a < n; a++) find_nn(&L, a);

    for (;;) {
        int64_t i = -1;
        for (int64_t a = 0; a < n; a++)
            if (L.size[a] && L.nn[a] >= 0 && (i < 0 || L.nn_s[a] > L.nn_s[i])) i = a;
        if (i < 0) break;
        int64_t a = i < L.nn[i] ? i : L.nn[i], b = i < L.nn[i] ? L.nn[i] : i;
        /* Lance-Williams for average linkage: the merged cluster's mean
         * similarity to c is the size-weighted mean of its parts'. */
        double wa = (double)L.size[a], wb = (double)L.size[b];
        for (int64_t c = 0; c < n; c++) {
            if (!L.size[c] || c == a || c == b) continue;
            double v = (wa * L.s[a * n + c] + wb * L.s[b * n + c]) / (wa + wb);
            L.s[a * n + c] = v;
            L.s[c * n + a] = v;
        }
        L.size[a] += L.size[b];
        L.size[b] = 0;
        next[tail[a]] = b;
        tail[a] = tail[b];
        /* Only pairs involving a or b changed: clusters that pointed at either
         * look again; the rest may now prefer the grown a. */
        find_nn(&L, a);
        for (int64_t c = 0; c < n; c++) {
            if (!L.size[c] || c == a) continue;
            if (L.nn[c] == a || L.nn[c] == b) {
                find_nn(&L, c);
            } else if (L.size[c] + L.size[a] <= L.cap) {
                double v = L.s[c * n + a];
                if (v > L.floor_s && (L.nn[c] < 0 || v > L.nn_s[c] || (v == L.nn_s[c] && a < L.nn[c]))) {
                    L.nn[c] = a;
                    L.nn_s[c] = v;
                }
            }
        }
    }
    /* Number clusters by their lowest unit: a root's chain starts at the
     * root, which is its lowest compact index (merges keep the lower one). */
    int64_t k = 0;
    for (int64_t a = 0; a < n; a++) {
        if (!L.size[a]) continue;
        for (int64_t m = a; m >= 0; m = next[m]) label[keep[m]] = k;
        k++;
    }
    *n_clusters = k;
out:
    free(L.s);
    free(L.size);
    free(L.nn);
    free(L.nn_s);
    free(next);
    free(tail);
    free(keep);
    return st;
}

double ss_cluster_cohesion(const double *corr, int64_t d, const int64_t *idx, int64_t n, double *per_unit) {
    if (n < 2) {
        if (per_unit && n == 1) per_unit[0] = NAN;
        return NAN;
    }
    double total = 0;
    for (int64_t a = 0; a < n; a++) {
        double s = 0;
        for (int64_t b = 0; b < n; b++)
            if (a != b) s += corr_at(corr, d, idx[a], idx[b]);
        if (per_unit) per_unit[a] = s / (double)(n - 1);
        total += s;
    }
    return total / ((double)n * (double)(n - 1));
}

ss_status ss_cohens_d(int64_t na, const double *mean_a, const double *var_a, int64_t nb, const double *mean_b,
                      const double *var_b, int64_t d, double *effect) {
    if (na < 2 || nb < 2)
        return ss_errorf(SS_ERR_ARG, "Cohen's d needs at least 2 vectors per group (have %lld and %lld)",
                         (long long)na, (long long)nb);
    double dof = (double)(na + nb - 2);
    for (int64_t i = 0; i < d; i++) {
        double pooled = ((double)(na - 1) * var_a[i] + (double)(nb - 1) * var_b[i]) / dof;
        double s = sqrt(pooled);
        effect[i] = s > 0 && isfinite(s) ? (mean_a[i] - mean_b[i]) / s : NAN;
    }
    return SS_OK;
}

typedef struct {
    double v;
    int64_t i;
} scored;

static int cmp_scored(const void *pa, const void *pb) {
    const scored *a = pa, *b = pb;
    if (a->v != b->v) return a->v > b->v ? -1 : 1;
    return (a->i > b->i) - (a->i < b->i);
}

ss_status ss_top_units(const double *score, int64_t d, int64_t k, int64_t *idx, int64_t *n_out) {
    *n_out = 0;
    if (d < 0 || k < 0) return ss_errorf(SS_ERR_ARG, "top units: d = %lld, k = %lld", (long long)d, (long long)k);
    if (!d || !k) return SS_OK;
    scored *s = ss_malloc((size_t)d * sizeof *s, "top units");
    if (!s) return SS_ERR_NOMEM;
    int64_t n = 0;
    for (int64_t i = 0; i < d; i++)
        if (!isnan(score[i])) s[n++] = (scored){score[i], i};
    qsort(s, (size_t)n, sizeof *s, cmp_scored);
    if (k > n) k = n;
    for (int64_t i = 0; i < k; i++) idx[i] = s[i].i;
    *n_out = k;
    free(s);
    return SS_OK;
}
