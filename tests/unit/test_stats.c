/* Streaming moments and PCA (src/stats/) against straightforward two-pass
 * formulas and matrices with known eigenpairs. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../src/stats/stats_internal.h"
#include "subscope/backend.h"
#include "subscope/stats.h"
#include "subscope/util.h"
#include "test.h"

static uint64_t rng_next(uint64_t *s) { /* splitmix64 */
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
static double urand(uint64_t *s) { return (double)(rng_next(s) >> 11) * 0x1.0p-53 * 2.0 - 1.0; } /* [-1, 1) */

/* n rows of d correlated units: x = offset + scale * (A z), with unit 0
 * a copy of unit 1 plus noise so some correlations are near 1. */
static float *make_data(int64_t n, int64_t d, double offset, double scale, uint64_t seed) {
    float *x = malloc(sizeof(float) * (size_t)(n * d));
    double *a = malloc(sizeof(double) * (size_t)(d * d)), *z = malloc(sizeof(double) * (size_t)d);
    for (int64_t i = 0; i < d * d; i++) a[i] = urand(&seed);
    for (int64_t r = 0; r < n; r++) {
        for (int64_t j = 0; j < d; j++) z[j] = urand(&seed);
        for (int64_t i = 0; i < d; i++) {
            double v = 0;
            for (int64_t j = 0; j < d; j++) v += a[i * d + j] * z[j];
            x[r * d + i] = (float)(offset + (double)i + scale * v);
        }
    }
    free(a);
    free(z);
    return x;
}

/* Two-pass reference in long double: mean, then sum of centred products. */
static void ref_moments(const float *x, int64_t n, int64_t d, double *mean, double *cov) {
    long double *m = calloc((size_t)d, sizeof(long double));
    for (int64_t r = 0; r < n; r++)
        for (int64_t i = 0; i < d; i++) m[i] += x[r * d + i];
    for (int64_t i = 0; i < d; i++) m[i] /= n, mean[i] = (double)m[i];
    for (int64_t i = 0; i < d; i++)
        for (int64_t j = 0; j < d; j++) {
            long double s = 0;
            for (int64_t r = 0; r < n; r++) s += (x[r * d + i] - m[i]) * (x[r * d + j] - m[j]);
            cov[i * d + j] = (double)(s / (n - 1));
        }
    free(m);
}

/* max over i,j of |a - b| / sqrt(ref_ii ref_jj): relative to the units' scale,
 * so near-zero covariances are not divided by ~0. */
static double cov_rel_err(const double *a, const double *ref, int64_t d) {
    double e = 0;
    for (int64_t i = 0; i < d; i++)
        for (int64_t j = 0; j < d; j++) {
            double s = sqrt(ref[i * d + i] * ref[j * d + j]);
            double v = fabs(a[i * d + j] - ref[i * d + j]) / s;
            if (!(v <= e)) e = v;
        }
    return e;
}
static double vec_rel_err(const double *a, const double *ref, int64_t n) {
    double e = 0, mx = 0;
    for (int64_t i = 0; i < n; i++) {
        double v = fabs(a[i] - ref[i]);
        if (!(v <= e)) e = v;
        if (fabs(ref[i]) > mx) mx = fabs(ref[i]);
    }
    return e / (mx > 0 ? mx : 1);
}

/* Accumulates x in chunks of `chunk` rows (0: all at once). */
static ss_status moments_chunked(ss_moments *m, const float *x, int64_t n, int64_t d, int64_t chunk) {
    if (chunk <= 0) chunk = n;
    for (int64_t r = 0; r < n; r += chunk) {
        int64_t b = n - r < chunk ? n - r : chunk;
        ss_status st = ss_moments_add_f32(m, x + r * d, b, d);
        if (st != SS_OK) return st;
    }
    return SS_OK;
}

TEST(stats_moments_match_two_pass) {
    const int64_t n = 300, d = 11;
    float *x = make_data(n, d, 3.0, 0.7, 1);
    double mean[11], ref_cov[121], ref_mean[11], cov[121];
    ref_moments(x, n, d, ref_mean, ref_cov);
    ss_moments m;
    CHECK_OK(ss_moments_init(&m, d, 1));
    CHECK_OK(ss_moments_add_f32(&m, x, n, d));
    CHECK(m.count == n);
    memcpy(mean, m.mean, sizeof mean);
    CHECK_OK(ss_moments_cov(&m, cov));
    ss_moments_free(&m);
    free(x);
    CHECK_MSG(vec_rel_err(mean, ref_mean, d) <= 1e-14, "mean rel err %g", vec_rel_err(mean, ref_mean, d));
    CHECK_MSG(cov_rel_err(cov, ref_cov, d) <= 1e-13, "cov rel err %g", cov_rel_err(cov, ref_cov, d));
    for (int64_t i = 0; i < d; i++)
        for (int64_t j = 0; j < d; j++) CHECK(cov[i * d + j] == cov[j * d + i]);
}

/* Covariance and correlation fill their upper triangle by a tiled mirror
 * (32 x 32): at widths around and across the tile edges every entry must be
 * the two-pass reference, and exactly symmetric. */
TEST(stats_cov_corr_whole_matrix_across_tiles) {
    const int64_t widths[4] = {1, 32, 33, 70}, n = 120;
    for (int w = 0; w < 4; w++) {
        const int64_t d = widths[w];
        float *x = make_data(n, d, -1.0, 2.0, 5 + w);
        double *ref_cov = malloc(sizeof(double) * (size_t)(d * d)), *ref_mean = malloc(sizeof(double) * (size_t)d);
        double *cov = malloc(sizeof(double) * (size_t)(d * d)), *corr = malloc(sizeof(double) * (size_t)(d * d));
        ref_moments(x, n, d, ref_mean, ref_cov);
        ss_moments m;
        CHECK_OK(ss_moments_init(&m, d, 1));
        CHECK_OK(ss_moments_add_f32(&m, x, n, d));
        for (int64_t i = 0; i < d * d; i++) cov[i] = corr[i] = NAN;
        CHECK_OK(ss_moments_cov(&m, cov));
        CHECK_OK(ss_moments_corr(&m, corr));
        CHECK_MSG(cov_rel_err(cov, ref_cov, d) <= 1e-13, "d %lld: cov rel err %g", (long long)d, cov_rel_err(cov, ref_cov, d));
        int bad = 0;
        for (int64_t i = 0; i < d; i++)
            for (int64_t j = 0; j < d; j++) {
                double r = ref_cov[i * d + j] / sqrt(ref_cov[i * d + i] * ref_cov[j * d + j]);
                bad += cov[i * d + j] != cov[j * d + i] || corr[i * d + j] != corr[j * d + i] ||
                       !(fabs(corr[i * d + j] - r) <= 1e-12);
            }
        CHECK_MSG(bad == 0, "d %lld: %d entries asymmetric or off the reference", (long long)d, bad);
        /* in place (out = m2, which the header allows): the same matrices */
        ss_moments m_in;
        CHECK_OK(ss_moments_init(&m_in, d, 1));
        CHECK_OK(ss_moments_merge(&m_in, &m));
        CHECK_OK(ss_moments_corr(&m_in, m_in.m2));
        CHECK_MSG(!memcmp(m_in.m2, corr, sizeof(double) * (size_t)(d * d)), "d %lld: corr in place differs", (long long)d);
        CHECK_OK(ss_moments_cov(&m, m.m2));
        CHECK_MSG(!memcmp(m.m2, cov, sizeof(double) * (size_t)(d * d)), "d %lld: cov in place differs", (long long)d);
        ss_moments_free(&m_in);
        ss_moments_free(&m);
        free(x), free(ref_cov), free(ref_mean), free(cov), free(corr);
    }
}

TEST(stats_strided_rows_and_mean_only) {
    /* rows with ld > d; and want_m2 = 0 gives the same mean without m2 */
    const int64_t n = 50, d = 5, ld = 8;
    float *x = make_data(n, ld, -2.0, 1.0, 2);
    float *packed = malloc(sizeof(float) * (size_t)(n * d));
    for (int64_t r = 0; r < n; r++) memcpy(packed + r * d, x + r * ld, sizeof(float) * (size_t)d);
    ss_moments a, b, c;
    CHECK_OK(ss_moments_init(&a, d, 1));
    CHECK_OK(ss_moments_init(&b, d, 1));
    CHECK_OK(ss_moments_init(&c, d, 0));
    CHECK(c.m2 == NULL);
    CHECK_OK(ss_moments_add_f32(&a, x, n, ld));
    CHECK_OK(ss_moments_add_f32(&b, packed, n, d));
    CHECK_OK(ss_moments_add_f32(&c, x, n, ld));
    for (int64_t i = 0; i < d; i++) {
        CHECK(a.mean[i] == b.mean[i]);
        CHECK(c.mean[i] == a.mean[i]);
        for (int64_t j = 0; j <= i; j++) CHECK(a.m2[i * d + j] == b.m2[i * d + j]);
    }
    double cov[25];
    CHECK_ERR(ss_moments_cov(&c, cov), SS_ERR_ARG, "mean-only");
    ss_moments_reset(&a);
    CHECK(a.count == 0 && a.mean[3] == 0 && a.m2[3 * d + 2] == 0);
    ss_moments_free(&a);
    ss_moments_free(&b);
    ss_moments_free(&c);
    free(x);
    free(packed);
}

TEST(stats_chunking_and_merge_order_invariance) {
    const int64_t n = 203, d = 9;
    float *x = make_data(n, d, 50.0, 2.0, 3);
    const int64_t chunks[] = {0, 1, 7, 64};
    double base_mean[9], base_cov[81], cov[81];
    for (size_t c = 0; c < sizeof chunks / sizeof chunks[0]; c++) {
        ss_moments m;
        CHECK_OK(ss_moments_init(&m, d, 1));
        CHECK_OK(moments_chunked(&m, x, n, d, chunks[c]));
        CHECK_OK(ss_moments_cov(&m, cov));
        if (c == 0) {
            memcpy(base_mean, m.mean, sizeof base_mean);
            memcpy(base_cov, cov, sizeof base_cov);
        } else {
            CHECK_MSG(vec_rel_err(m.mean, base_mean, d) <= 1e-12, "chunk %lld: mean rel err %g", (long long)chunks[c],
                      vec_rel_err(m.mean, base_mean, d));
            CHECK_MSG(cov_rel_err(cov, base_cov, d) <= 1e-12, "chunk %lld: cov rel err %g", (long long)chunks[c],
                      cov_rel_err(cov, base_cov, d));
        }
        ss_moments_free(&m);
    }
    /* Three accumulators over uneven slices, merged in two orders. */
    const int64_t cut[4] = {0, 17, 150, n};
    ss_moments part[3], ab, ba;
    for (int p = 0; p < 3; p++) {
        CHECK_OK(ss_moments_init(&part[p], d, 1));
        CHECK_OK(moments_chunked(&part[p], x + cut[p] * d, cut[p + 1] - cut[p], d, 5));
    }
    CHECK_OK(ss_moments_init(&ab, d, 1));
    CHECK_OK(ss_moments_init(&ba, d, 1));
    for (int p = 0; p < 3; p++) CHECK_OK(ss_moments_merge(&ab, &part[p]));
    for (int p = 2; p >= 0; p--) CHECK_OK(ss_moments_merge(&ba, &part[p]));
    CHECK(ab.count == n && ba.count == n);
    CHECK_OK(ss_moments_cov(&ab, cov));
    CHECK_MSG(cov_rel_err(cov, base_cov, d) <= 1e-12, "merge a,b,c: cov rel err %g", cov_rel_err(cov, base_cov, d));
    CHECK(vec_rel_err(ab.mean, base_mean, d) <= 1e-12);
    CHECK_OK(ss_moments_cov(&ba, cov));
    CHECK_MSG(cov_rel_err(cov, base_cov, d) <= 1e-12, "merge c,b,a: cov rel err %g", cov_rel_err(cov, base_cov, d));
    CHECK(vec_rel_err(ba.mean, base_mean, d) <= 1e-12);
    /* merging an empty accumulator changes nothing */
    ss_moments empty;
    CHECK_OK(ss_moments_init(&empty, d, 1));
    CHECK_OK(ss_moments_merge(&ba, &empty));
    CHECK(ba.count == n);
    ss_moments_free(&empty);
    for (int p = 0; p < 3; p++) ss_moments_free(&part[p]);
    ss_moments_free(&ab);
    ss_moments_free(&ba);
    free(x);
}

TEST(stats_cancellation_mean_1e4_times_spread) {
    /* Units centred at ~1e4 with spread ~1. The naive one-pass formula
     * (sum x^2 - n mean^2)/(n-1) in fp64 subtracts two numbers of ~n*1e8
     * whose difference is ~n: it keeps about 16 - 8 = 8 digits, and the check
     * below shows it misses by far more than our bound. */
    const int64_t n = 400, d = 6;
    float *x = make_data(n, d, 1e4, 0.5, 4);
    double ref_mean[6], ref_cov[36], cov[36], naive[36];
    ref_moments(x, n, d, ref_mean, ref_cov);
    const int64_t chunks[] = {0, 1, 7};
    for (size_t c = 0; c < 3; c++) {
        ss_moments m;
        CHECK_OK(ss_moments_init(&m, d, 1));
        CHECK_OK(moments_chunked(&m, x, n, d, chunks[c]));
        CHECK_OK(ss_moments_cov(&m, cov));
        double e = cov_rel_err(cov, ref_cov, d);
        CHECK_MSG(e <= 1e-9, "chunk %lld: cov rel err %g", (long long)chunks[c], e);
        CHECK(vec_rel_err(m.mean, ref_mean, d) <= 1e-14);
        ss_moments_free(&m);
    }
    double s[6] = {0}, ss[36] = {0};
    for (int64_t r = 0; r < n; r++)
        for (int64_t i = 0; i < d; i++) {
            s[i] += x[r * d + i];
            for (int64_t j = 0; j < d; j++) ss[i * d + j] += (double)x[r * d + i] * x[r * d + j];
        }
    for (int64_t i = 0; i < d; i++)
        for (int64_t j = 0; j < d; j++) naive[i * d + j] = (ss[i * d + j] - s[i] * s[j] / n) / (n - 1);
    double en = cov_rel_err(naive, ref_cov, d);
    CHECK_MSG(en > 1e-9, "naive formula unexpectedly accurate (rel err %g): the test no longer shows cancellation", en);
    free(x);
}

TEST(stats_add_partial_equals_add_f32) {
    const int64_t n = 120, d = 7;
    float *x = make_data(n, d, 10.0, 1.0, 5);
    ss_moments direct, via;
    CHECK_OK(ss_moments_init(&direct, d, 1));
    CHECK_OK(ss_moments_init(&via, d, 1));
    CHECK_OK(moments_chunked(&direct, x, n, d, 40));
    for (int64_t r = 0; r < n; r += 40) {
        /* a partial reduced "elsewhere": count, mean and co-moment of 40 rows,
         * upper triangle poisoned to show only the lower one is read */
        ss_moments chunk;
        CHECK_OK(ss_moments_init(&chunk, d, 1));
        CHECK_OK(ss_moments_add_f32(&chunk, x + r * d, 40, d));
        for (int64_t i = 0; i < d; i++)
            for (int64_t j = i + 1; j < d; j++) chunk.m2[i * d + j] = NAN;
        CHECK_OK(ss_moments_add_partial(&via, chunk.count, chunk.mean, chunk.m2));
        ss_moments_free(&chunk);
    }
    CHECK(via.count == n);
    for (int64_t i = 0; i < d; i++) {
        CHECK_NEAR(via.mean[i], direct.mean[i], 1e-13 * fabs(direct.mean[i]));
        for (int64_t j = 0; j <= i; j++)
            CHECK_NEAR(via.m2[i * d + j], direct.m2[i * d + j], 1e-12 * sqrt(direct.m2[i * d + i] * direct.m2[j * d + j]));
    }
    CHECK_OK(ss_moments_add_partial(&via, 0, NULL, NULL)); /* empty partial: no-op */
    CHECK(via.count == n);
    CHECK_ERR(ss_moments_add_partial(&via, -1, via.mean, via.m2), SS_ERR_ARG, "negative count");
    CHECK_ERR(ss_moments_add_partial(&via, 3, via.mean, NULL), SS_ERR_ARG, "co-moment");
    ss_moments_free(&direct);
    ss_moments_free(&via);
    free(x);
}

TEST(stats_corr_and_constant_units) {
    const int64_t n = 80, d = 4;
    float *x = make_data(n, d, 0.0, 1.0, 6);
    for (int64_t r = 0; r < n; r++) x[r * d + 2] = 3.25f; /* unit 2 is constant */
    ss_moments m;
    CHECK_OK(ss_moments_init(&m, d, 1));
    CHECK_OK(moments_chunked(&m, x, n, d, 9));
    double cov[16], corr[16];
    CHECK_OK(ss_moments_cov(&m, cov));
    CHECK_OK(ss_moments_corr(&m, corr));
    CHECK(cov[2 * d + 2] == 0.0);
    for (int64_t i = 0; i < d; i++)
        for (int64_t j = 0; j < d; j++) {
            if (i == 2 || j == 2) {
                CHECK_MSG(isnan(corr[i * d + j]), "corr[%lld][%lld] = %g, want NaN", (long long)i, (long long)j,
                          corr[i * d + j]);
            } else if (i == j) {
                CHECK(corr[i * d + j] == 1.0);
            } else {
                double want = cov[i * d + j] / sqrt(cov[i * d + i] * cov[j * d + j]);
                CHECK_NEAR(corr[i * d + j], want, 1e-14);
                CHECK(corr[i * d + j] == corr[j * d + i]);
            }
        }
    ss_moments_free(&m);
    free(x);
}

TEST(stats_moments_errors) {
    ss_moments m;
    CHECK_ERR(ss_moments_init(&m, 0, 1), SS_ERR_ARG, "must be positive");
    CHECK_ERR(ss_moments_init(&m, -3, 0), SS_ERR_ARG, "d = -3");
    CHECK_ERR(ss_moments_init(&m, (int64_t)1 << 31, 1), SS_ERR_NOMEM, "overflows");
#if !defined(__SANITIZE_ADDRESS__)
    /* 2^24 units: a 2 PiB matrix; the message names its shape and size.
     * (Skipped under ASan, whose allocator aborts on such a request.) */
    CHECK_ERR(ss_moments_init(&m, (int64_t)1 << 24, 1), SS_ERR_NOMEM, "[16777216, 16777216] (2048.0 TiB)");
#endif
    CHECK_OK(ss_moments_init(&m, 3, 1));
    float row[3] = {1, 2, 3};
    double cov[9], mean[3] = {0};
    CHECK_ERR(ss_moments_cov(&m, cov), SS_ERR_ARG, "at least 2 rows, have 0");
    CHECK_OK(ss_moments_add_f32(&m, row, 1, 3));
    CHECK_ERR(ss_moments_cov(&m, cov), SS_ERR_ARG, "at least 2 rows, have 1");
    CHECK_ERR(ss_moments_corr(&m, cov), SS_ERR_ARG, "at least 2 rows");
    CHECK_ERR(ss_moments_add_f32(&m, row, 1, 2), SS_ERR_ARG, "stride 2");
    CHECK_ERR(ss_moments_add_f32(&m, row, -1, 3), SS_ERR_ARG, "negative row count");
    CHECK_OK(ss_moments_add_f32(&m, row, 0, 3));
    CHECK(m.count == 1);
    ss_moments other, meanonly;
    CHECK_OK(ss_moments_init(&other, 4, 1));
    CHECK_OK(ss_moments_init(&meanonly, 3, 0));
    CHECK_ERR(ss_moments_merge(&m, &other), SS_ERR_ARG, "d = 4 into d = 3");
    CHECK_ERR(ss_moments_merge(&m, &meanonly), SS_ERR_ARG, "mean-only");
    CHECK_OK(ss_moments_add_partial(&meanonly, 2, mean, NULL)); /* mean-only needs no m2 */
    ss_moments_free(&other);
    ss_moments_free(&meanonly);
    ss_moments_free(&m);
}

/* ---- PCA ----------------------------------------------------------------- */

/* A random orthogonal Q (rows = eigenvectors) by Gram-Schmidt, twice. */
static void random_orthogonal(double *q, int64_t d, uint64_t seed) {
    for (int64_t i = 0; i < d * d; i++) q[i] = urand(&seed);
    for (int pass = 0; pass < 2; pass++)
        for (int64_t i = 0; i < d; i++) {
            for (int64_t j = 0; j < i; j++) {
                double dot = 0;
                for (int64_t t = 0; t < d; t++) dot += q[i * d + t] * q[j * d + t];
                for (int64_t t = 0; t < d; t++) q[i * d + t] -= dot * q[j * d + t];
            }
            double nn = 0;
            for (int64_t t = 0; t < d; t++) nn += q[i * d + t] * q[i * d + t];
            nn = sqrt(nn);
            for (int64_t t = 0; t < d; t++) q[i * d + t] /= nn;
        }
}

/* S = sum_i lambda_i q_i q_i^T, upper triangle poisoned (only the lower is
 * read, as for ss_moments.m2). */
static double *known_matrix(const double *q, const double *lambda, int64_t d) {
    double *s = calloc((size_t)(d * d), sizeof(double));
    for (int64_t i = 0; i < d; i++)
        for (int64_t j = 0; j < d; j++) {
            if (j > i) {
                s[i * d + j] = NAN;
                continue;
            }
            double v = 0;
            for (int64_t e = 0; e < d; e++) v += lambda[e] * q[e * d + i] * q[e * d + j];
            s[i * d + j] = v;
        }
    return s;
}

typedef ss_status (*pca_fn)(const double *, int64_t, int64_t, double *, double *);

static int check_pca(pca_fn fn, const char *name, int64_t d, int64_t k, uint64_t seed) {
    double *q = malloc(sizeof(double) * (size_t)(d * d)), *lambda = malloc(sizeof(double) * (size_t)d);
    random_orthogonal(q, d, seed);
    /* distinct eigenvalues, one negative, given in scrambled order */
    for (int64_t e = 0; e < d; e++) lambda[e] = (double)((e * 7) % d) * 1.5 - 2.0;
    double *s = known_matrix(q, lambda, d);
    double *vals = malloc(sizeof(double) * (size_t)k), *vecs = malloc(sizeof(double) * (size_t)(k * d));
    int ok = 1;
    ss_status st = fn(s, d, k, vals, vecs);
    if (st != SS_OK) {
        ss_test_fail(__FILE__, __LINE__, "%s d=%lld k=%lld: %s", name, (long long)d, (long long)k, ss_last_error());
        ok = 0;
    }
    for (int64_t r = 0; ok && r < k; r++) {
        /* the r-th largest eigenvalue is (d-1-r)*1.5 - 2, whose vector is the
         * e with (e*7) % d == d-1-r */
        double want = (double)(d - 1 - r) * 1.5 - 2.0;
        int64_t e = 0;
        while ((e * 7) % d != d - 1 - r) e++;
        if (fabs(vals[r] - want) > 1e-12 * 1.5 * (double)d) {
            ss_test_fail(__FILE__, __LINE__, "%s: value %lld = %.17g, want %.17g", name, (long long)r, vals[r], want);
            ok = 0;
            break;
        }
        const double *v = vecs + r * d;
        double dot = 0;
        int64_t big = 0;
        for (int64_t t = 0; t < d; t++) {
            dot += v[t] * q[e * d + t];
            if (fabs(v[t]) > fabs(v[big])) big = t;
        }
        if (fabs(fabs(dot) - 1.0) > 1e-10 || !(v[big] > 0)) {
            ss_test_fail(__FILE__, __LINE__, "%s: vector %lld: |<v,q>| = %.17g, largest component %g", name, (long long)r,
                         fabs(dot), v[big]);
            ok = 0;
        }
        if (r > 0 && !(vals[r] < vals[r - 1])) {
            ss_test_fail(__FILE__, __LINE__, "%s: values not descending at %lld", name, (long long)r);
            ok = 0;
        }
    }
    free(q);
    free(lambda);
    free(s);
    free(vals);
    free(vecs);
    return ok;
}

/* ss_pca_top_destroy through the pca_fn signature: on a copy it may spoil. */
static ss_status pca_destroy_copy(const double *sym, int64_t d, int64_t k, double *values, double *vectors) {
    double *a = malloc(sizeof(double) * (size_t)(d > 0 ? d * d : 1));
    if (d > 0) memcpy(a, sym, sizeof(double) * (size_t)(d * d));
    ss_status st = ss_pca_top_destroy(a, d, k, values, vectors);
    free(a);
    return st;
}

TEST(stats_pca_known_eigenpairs) {
    const int64_t ds[] = {1, 2, 9, 40};
    for (size_t i = 0; i < 4; i++) {
        int64_t d = ds[i];
        CHECK(check_pca(ss_pca_top_jacobi, "jacobi", d, d, 10 + i));
        CHECK(check_pca(ss_pca_top_jacobi, "jacobi", d, 1, 20 + i));
        CHECK(check_pca(ss_pca_top, "ss_pca_top", d, d, 30 + i));
        CHECK(check_pca(ss_pca_top, "ss_pca_top", d, 1, 40 + i));
        if (d > 3) CHECK(check_pca(ss_pca_top, "ss_pca_top", d, 3, 50 + i));
        if (ss_stats_have_lapack()) CHECK(check_pca(ss_pca_top_lapack, "lapack", d, d, 60 + i));
        CHECK(check_pca(pca_destroy_copy, "ss_pca_top_destroy", d, d, 70 + i));
        if (d > 3) CHECK(check_pca(pca_destroy_copy, "ss_pca_top_destroy", d, 3, 80 + i));
    }
}

/* collect runs the eigen-solver on OpenBLAS's own threads (ss_cpu_blas_threads): as many as the
 * pool's (one under an address-space limit), then one again; the eigenpairs are right there and
 * agree with one thread's to rounding. */
int openblas_get_num_threads(void) __attribute__((weak));
TEST(stats_pca_on_blas_threads) {
    const int64_t d = 500, k = 4;
    const int n = ss_cpu_blas_threads(1);
    if (openblas_get_num_threads) {
        CHECK_MSG(n == (ss_address_space_limit() ? 1 : ss_parallel_width()), "%d BLAS threads, pool %d", n,
                  ss_parallel_width());
        CHECK(openblas_get_num_threads() == n);
    }
    double *q = malloc(sizeof(double) * (size_t)(d * d)), *lambda = malloc(sizeof(double) * (size_t)d);
    random_orthogonal(q, d, 91);
    for (int64_t e = 0; e < d; e++) lambda[e] = (double)((e * 7) % d) * 1.5 - 2.0;
    double *s = known_matrix(q, lambda, d);
    double v1[4], vn[4], *x1 = malloc(sizeof(double) * (size_t)(k * d)), *xn = malloc(sizeof(double) * (size_t)(k * d));
    const int wide_ok = check_pca(pca_destroy_copy, "ss_pca_top_destroy on the BLAS's threads", d, k, 91);
    ss_status st = pca_destroy_copy(s, d, k, vn, xn);
    const int one = ss_cpu_blas_threads(0);
    if (!st) st = pca_destroy_copy(s, d, k, v1, x1);
    double dv = 0, dx = 0;
    for (int64_t r = 0; r < k; r++) dv = fmax(dv, fabs(vn[r] - v1[r]) / fabs(v1[r]));
    for (int64_t i = 0; i < k * d; i++) dx = fmax(dx, fabs(xn[i] - x1[i]));
    free(q);
    free(lambda);
    free(s);
    free(x1);
    free(xn);
    CHECK(wide_ok);
    CHECK_OK(st);
    CHECK(one == 1);
    if (openblas_get_num_threads) CHECK(openblas_get_num_threads() == 1);
    CHECK_MSG(dv < 1e-13 && dx < 1e-12, "values differ by %g (relative), vectors by %g", dv, dx);
}

TEST(stats_pca_sign_convention_and_ties) {
    /* diag(1, 3, 2): vectors are unit axes, each positive; then the matrix
     * [[2,0],[0,2]] rotated: degenerate, but the convention still holds */
    double s[9] = {1, 0, 0, 0, 3, 0, 0, 0, 2}, vals[3], vecs[9];
    pca_fn fns[2] = {ss_pca_top_jacobi, ss_pca_top};
    for (int f = 0; f < 2; f++) {
        CHECK_OK(fns[f](s, 3, 3, vals, vecs));
        CHECK_NEAR(vals[0], 3, 1e-15);
        CHECK_NEAR(vals[1], 2, 1e-15);
        CHECK_NEAR(vals[2], 1, 1e-15);
        CHECK_NEAR(vecs[0 * 3 + 1], 1, 1e-15);
        CHECK_NEAR(vecs[1 * 3 + 2], 1, 1e-15);
        CHECK_NEAR(vecs[2 * 3 + 0], 1, 1e-15);
        /* [[2,1],[1,2]]: top vector (1,1)/sqrt2, the tie goes to index 0 */
        double t[4] = {2, 1, 1, 2}, tv[2], tvec[4];
        CHECK_OK(fns[f](t, 2, 2, tv, tvec));
        CHECK_NEAR(tv[0], 3, 1e-14);
        CHECK(tvec[0] > 0 && tvec[1] > 0);
        CHECK_NEAR(tvec[0], sqrt(0.5), 1e-14);
        /* second vector (1,-1)/sqrt2: Jacobi's single rotation gives exactly
         * equal magnitudes, so the tie rule (index 0 positive) decides */
        if (f == 0) CHECK(tvec[2] > 0 && tvec[3] < 0 && tvec[2] == -tvec[3]);
    }
}

TEST(stats_pca_of_zero_matrix) {
    /* A site with no variance (one position of hook_pos_embed, a dead unit
     * group): eigenvalues 0 and still unit vectors, the axes in order, as the
     * Jacobi solver gives them (LAPACK's dsyevr returned zero vectors). */
    double z[16] = {0}, vals[4], vecs[16];
    pca_fn fns[4] = {ss_pca_top_jacobi, ss_pca_top, pca_destroy_copy, ss_pca_top_lapack};
    for (int f = 0; f < (ss_stats_have_lapack() ? 4 : 3); f++)
        for (int64_t k = 1; k <= 4; k++) {
            CHECK_OK(fns[f](z, 4, k, vals, vecs));
            for (int64_t r = 0; r < k; r++) {
                CHECK(vals[r] == 0);
                for (int64_t u = 0; u < 4; u++) CHECK(vecs[r * 4 + u] == (u == r ? 1.0 : 0.0));
            }
        }
}

TEST(stats_pca_errors) {
    double s[4] = {1, 0, 0, 1}, v[2], vec[4];
    CHECK_ERR(ss_pca_top(s, 0, 1, v, vec), SS_ERR_ARG, "d = 0");
    CHECK_ERR(ss_pca_top(s, 2, 3, v, vec), SS_ERR_ARG, "k = 3");
    CHECK_ERR(ss_pca_top(s, 2, 0, v, vec), SS_ERR_ARG, "k = 0");
    CHECK_ERR(ss_pca_top_destroy(s, 2, 3, v, vec), SS_ERR_ARG, "k = 3");
    CHECK_ERR(ss_pca_top_jacobi(s, -1, 1, v, vec), SS_ERR_ARG, "d = -1");
    CHECK_ERR(ss_pca_top_jacobi(s, 2, 3, v, vec), SS_ERR_ARG, "must be in 1..d");
    CHECK_ERR(ss_pca_top_jacobi(s, SS_JACOBI_MAX_D + 1, 1, v, vec), SS_ERR_UNSUPPORTED, "Jacobi");
    if (!ss_stats_have_lapack()) CHECK_ERR(ss_pca_top_lapack(s, 2, 1, v, vec), SS_ERR_UNSUPPORTED, "no LAPACK");
}

TEST(stats_pca_of_collected_covariance) {
    /* End to end: the top component of data stretched along a known axis. */
    const int64_t n = 500, d = 5;
    float *x = malloc(sizeof(float) * (size_t)(n * d));
    uint64_t seed = 7;
    const double axis[5] = {0.8, -0.4, 0.4, 0.2, 0.0}; /* unit, largest component positive */
    for (int64_t r = 0; r < n; r++) {
        double t = 10.0 * urand(&seed);
        for (int64_t i = 0; i < d; i++) x[r * d + i] = (float)(100.0 + t * axis[i] + 0.01 * urand(&seed));
    }
    ss_moments m;
    CHECK_OK(ss_moments_init(&m, d, 1));
    CHECK_OK(moments_chunked(&m, x, n, d, 33));
    double cov[25], val, vec[5];
    CHECK_OK(ss_moments_cov(&m, cov));
    CHECK_OK(ss_pca_top(m.m2, d, 1, &val, vec)); /* lower triangle of m2 suffices */
    for (int64_t i = 0; i < d; i++) CHECK_NEAR(vec[i], axis[i], 1e-4);
    CHECK_OK(ss_pca_top(cov, d, 1, &val, vec));
    CHECK(val > 30.0);
    ss_moments_free(&m);
    free(x);
}
