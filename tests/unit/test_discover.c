/* discover: clustering of planted co-activating groups, Cohen's d, top-k,
 * and the whole job on small synthetic collect / attribute files. */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "subscope/discover.h"
#include "subscope/h5out.h"
#include "subscope/stats.h"
#include "subscope/util.h"
#include "test.h"

static uint64_t mix64(uint64_t x) {
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

static double gauss(uint64_t *s) {
    uint64_t a = mix64((*s)++), b = mix64((*s)++);
    double u1 = ((double)(a >> 11) + 1.0) * 0x1.0p-53, u2 = (double)(b >> 11) * 0x1.0p-53;
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

/* Correlation of n samples of d units where unit u belongs to planted group
 * group[u] (>= 0: x_u = f_g + 0.5 e_u, correlation 0.8 within a group),
 * is noise (-1: x_u = e_u) or is constant (-2: zero variance, NaN row). */
static double *planted_corr(const int *group, int64_t d, int64_t n, uint64_t seed) {
    ss_moments m;
    if (ss_moments_init(&m, d, 1)) return NULL;
    float *row = malloc((size_t)d * sizeof(float));
    double f[64];
    uint64_t s = seed;
    for (int64_t t = 0; t < n; t++) {
        for (int g = 0; g < 64; g++) f[g] = gauss(&s);
        for (int64_t u = 0; u < d; u++)
            row[u] = group[u] == -2 ? 3.0f : (float)((group[u] >= 0 ? f[group[u]] : 0.0) + (group[u] >= 0 ? 0.5 : 1.0) * gauss(&s));
        ss_moments_add_f32(&m, row, 1, d);
    }
    double *c = malloc((size_t)(d * d) * sizeof(double));
    ss_moments_corr(&m, c);
    ss_moments_free(&m);
    free(row);
    return c;
}

/* Every planted group is exactly one cluster (same label, nobody else in
 * it); zero-variance units get -1; with exclusive set, noise units are alone. */
static int recovered(const int *group, const int64_t *label, int64_t d, int n_groups, int exclusive) {
    for (int g = 0; g < n_groups; g++) {
        int64_t lab = -1;
        for (int64_t u = 0; u < d; u++)
            if (group[u] == g) {
                if (lab < 0) lab = label[u];
                if (label[u] != lab || lab < 0) return 0;
            }
        for (int64_t u = 0; u < d; u++)
            if (group[u] != g && label[u] == lab) return 0;
    }
    for (int64_t u = 0; u < d; u++) {
        if (group[u] == -2 && label[u] != -1) return 0;
        if (group[u] != -2 && label[u] < 0) return 0;
        if (exclusive && group[u] == -1)
            for (int64_t v = 0; v < d; v++)
                if (v != u && label[v] == label[u]) return 0;
    }
    return 1;
}

/* Scatters planted groups over the units (so that the recovery does not
 * lean on neighbouring indices): group g has `size` members. */
static void plant(int *group, int64_t d, int n_groups, int size, int zero_unit) {
    for (int64_t u = 0; u < d; u++) group[u] = -1;
    for (int g = 0; g < n_groups; g++)
        for (int k = 0; k < size; k++) group[(int64_t)((g * size + k) * 7919 % d)] = g;
    if (zero_unit >= 0) group[zero_unit] = -2;
}

/* The default --masks-out (discover --help, FORMAT.md): .h5 replaced, else appended. */
TEST(discover_masks_path_default) {
    const char *in[] = {"out/c.h5", "c.hdf5", "x", ".h5"}, *want[] = {"out/c.masks.jsonl", "c.hdf5.masks.jsonl",
                                                                   "x.masks.jsonl", ".h5.masks.jsonl"};
    for (int i = 0; i < 4; i++) {
        char *p = ss_discover_masks_path(in[i]);
        CHECK_MSG(p && !strcmp(p, want[i]), "%s -> %s, want %s", in[i], p ? p : "(null)", want[i]);
        free(p);
    }
}

TEST(discover_cluster_recovers_planted_groups_at_the_cap) {
    /* d = 60: 5 groups of 6 = the cap (fraction 0.1), 29 noise units, one
     * constant unit. Groups fill to the cap, so nothing else can join. */
    int64_t d = 60;
    int group[60];
    plant(group, d, 5, 6, 11);
    CHECK(group[11] == -2);
    double *c = planted_corr(group, d, 1000, 1);
    CHECK(c);
    int64_t label[60], k;
    CHECK_OK(ss_cluster_corr(c, d, 6, 0.1, label, &k));
    CHECK_MSG(recovered(group, label, d, 5, 0), "planted groups not recovered (d = 60)");
    /* Cohesion of a planted group is near 0.8 = 1 / (1 + 0.5^2). */
    int64_t idx[6], n = 0;
    for (int64_t u = 0; u < d; u++)
        if (group[u] == 0) idx[n++] = u;
    double per[6];
    double coh = ss_cluster_cohesion(c, d, idx, n, per);
    CHECK_NEAR(coh, 0.8, 0.05);
    CHECK_NEAR(per[0], 0.8, 0.07);
    free(c);
}

TEST(discover_cluster_keeps_noise_out_of_smaller_groups) {
    /* d = 300 (fraction 0.02 -> cap 6): 8 groups of 4, under the cap, so only
     * min_corr keeps noise units out; with 1000 samples noise correlations
     * stay below ~0.15, the floor is 0.3. Every noise unit stays alone. */
    int64_t d = 300;
    int *group = malloc((size_t)d * sizeof(int));
    plant(group, d, 8, 4, 299);
    double *c = planted_corr(group, d, 1000, 7);
    CHECK(c);
    int64_t *label = malloc((size_t)d * sizeof(int64_t)), k;
    CHECK_OK(ss_cluster_corr(c, d, 6, 0.3, label, &k));
    CHECK_MSG(recovered(group, label, d, 8, 1), "planted groups not recovered (d = 300)");
    CHECK(k == 8 + (300 - 32 - 1)); /* 8 groups + singletons, constant unit left out */
    /* Determinism: the same matrix gives the same labels. */
    int64_t *again = malloc((size_t)d * sizeof(int64_t)), k2;
    CHECK_OK(ss_cluster_corr(c, d, 6, 0.3, again, &k2));
    CHECK(k2 == k && !memcmp(again, label, (size_t)d * sizeof(int64_t)));
    free(again);
    free(label);
    free(group);
    free(c);
}

TEST(discover_cluster_cap_and_order) {
    /* Four units all correlated 0.9: the cap of 2 makes two pairs, (0,1) then
     * (2,3) by the lowest-index tie rule; clusters numbered by lowest unit. */
    double c[16];
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++) c[i * 4 + j] = i == j ? 1.0 : 0.9;
    int64_t label[4], k;
    CHECK_OK(ss_cluster_corr(c, 4, 2, 0.0, label, &k));
    CHECK(k == 2 && label[0] == 0 && label[1] == 0 && label[2] == 1 && label[3] == 1);
    /* Average linkage: {0,1} joins 2 only if the mean over both pairs clears
     * the floor. c02 = 0.5, c12 = 0.1 -> mean 0.3. */
    double e[9] = {1, 0.8, 0.5, 0.8, 1, 0.1, 0.5, 0.1, 1};
    CHECK_OK(ss_cluster_corr(e, 3, 3, 0.35, label, &k));
    CHECK(k == 2 && label[0] == 0 && label[1] == 0 && label[2] == 1);
    CHECK_OK(ss_cluster_corr(e, 3, 3, 0.25, label, &k));
    CHECK(k == 1 && label[2] == 0);
    /* All units constant: nothing to cluster, no crash. */
    double z[4] = {NAN, NAN, NAN, NAN};
    CHECK_OK(ss_cluster_corr(z, 2, 2, 0.0, label, &k));
    CHECK(k == 0 && label[0] == -1 && label[1] == -1);
    CHECK_ERR(ss_cluster_corr(c, 4, 0, 0.0, label, &k), SS_ERR_ARG, "maximum cluster size");
}

TEST(discover_cohens_d_and_top_units) {
    double ma[3] = {1.0, 0.0, 5.0}, mb[3] = {0.0, 0.0, 5.0}, va[3] = {1.0, 4.0, 0.0}, vb[3] = {1.0, 4.0, 0.0}, e[3];
    CHECK_OK(ss_cohens_d(10, ma, va, 30, mb, vb, 3, e));
    CHECK_NEAR(e[0], 1.0, 1e-12);
    CHECK_NEAR(e[1], 0.0, 1e-12);
    CHECK(isnan(e[2]));
    /* Unequal variances: pooled by degrees of freedom. */
    double va2[1] = {4.0}, vb2[1] = {1.0}, m1[1] = {3.0}, m0[1] = {0.0};
    CHECK_OK(ss_cohens_d(11, m1, va2, 21, m0, vb2, 1, e));
    CHECK_NEAR(e[0], 3.0 / sqrt((10 * 4.0 + 20 * 1.0) / 30.0), 1e-12);
    CHECK_ERR(ss_cohens_d(1, ma, va, 5, mb, vb, 3, e), SS_ERR_ARG, "at least 2");
    double s[6] = {0.5, NAN, 2.0, 0.5, -1.0, 2.0};
    int64_t idx[6], n;
    CHECK_OK(ss_top_units(s, 6, 4, idx, &n));
    CHECK(n == 4 && idx[0] == 2 && idx[1] == 5 && idx[2] == 0 && idx[3] == 3);
    CHECK_OK(ss_top_units(s, 6, 10, idx, &n));
    CHECK(n == 5 && idx[4] == 4);
}

/* ---- the job on synthetic files --------------------------------------- */

static char *tmp(const char *name) { return ss_path_join(ss_test_tmp_dir(), name); }

static ss_status put_stats(ss_h5 *h, const char *prefix, const char *site, int64_t count, const double *mean,
                           const double *cov, const double *corr, int64_t d) {
    char p[256];
    snprintf(p, sizeof p, "%s/%s/count", prefix, site);
    SS_TRY(ss_h5_write_array(h, p, SS_H5_I64, 0, NULL, NULL, &count));
    snprintf(p, sizeof p, "%s/%s/mean", prefix, site);
    SS_TRY(ss_h5_write_array(h, p, SS_H5_F64, 1, &d, NULL, mean));
    int64_t dd[2] = {d, d};
    if (cov) {
        snprintf(p, sizeof p, "%s/%s/cov", prefix, site);
        SS_TRY(ss_h5_write_array(h, p, SS_H5_F64, 2, dd, NULL, cov));
    }
    if (corr) {
        snprintf(p, sizeof p, "%s/%s/corr", prefix, site);
        SS_TRY(ss_h5_write_array(h, p, SS_H5_F64, 2, dd, NULL, corr));
    }
    return SS_OK;
}

/* Two sites of d = 50 units, labels A and B. Unit u of site k has variance 1
 * in both groups and mean 0 in B; in A the planted units are shifted by
 * `shift` standard deviations (site s0: units 3, 17, 42 by +2, +1.5, -3;
 * site s1: units 8 and 30 by +2.5, -1.2), everything else by 0.1 * u / d. */
static ss_status write_grouped(const char *path) {
    int64_t d = 50;
    double *mean = calloc((size_t)d, sizeof(double)), *ma = calloc((size_t)d, sizeof(double));
    double *cov = calloc((size_t)(d * d), sizeof(double));
    for (int64_t u = 0; u < d; u++) cov[u * d + u] = 1.0;
    ss_h5 *h;
    ss_status st = ss_h5_create(path, &h);
    if (st) return st;
    const char *sites[2] = {"s0.hook_post", "s1.hook_post"};
    for (int k = 0; k < 2 && !st; k++) {
        for (int64_t u = 0; u < d; u++) ma[u] = 0.1 * (double)u / (double)d;
        if (k == 0) ma[3] = 2.0, ma[17] = 1.5, ma[42] = -3.0;
        else ma[8] = 2.5, ma[30] = -1.2;
        st = put_stats(h, "/stats", sites[k], 200, mean, cov, cov, d);
        if (!st) st = put_stats(h, "/groups/A/stats", sites[k], 100, ma, cov, NULL, d);
        if (!st) st = put_stats(h, "/groups/B/stats", sites[k], 100, mean, cov, NULL, d);
    }
    if (!st) st = ss_h5_commit(h);
    else ss_h5_abort(h);
    free(mean);
    free(ma);
    free(cov);
    return st;
}

static int read_units(const char *path, const char *dset, int64_t *out, int64_t max) {
    ss_h5_reader *r;
    if (ss_h5_open_read(path, &r)) return -1;
    int64_t *v;
    size_t n;
    int rc = ss_h5_read_i64(r, dset, &v, &n, NULL) ? -1 : (int)n;
    if (rc > 0) memcpy(out, v, (size_t)(rc < max ? rc : max) * sizeof(int64_t));
    if (rc >= 0) free(v);
    ss_h5_close_read(r);
    return rc;
}

TEST(discover_contrast_finds_planted_units) {
    char *st = tmp("grouped.h5"), *out = tmp("contrast.h5"), *masks = tmp("contrast.masks.jsonl");
    CHECK_OK(write_grouped(st));
    ss_discover_job j = {.stats = st, .sites = "s*", .method = "contrast", .fraction = 0.06, .contrast = "A:B",
                         .top = 10, .out = out};
    CHECK_OK(ss_job_discover(&j));
    int64_t u[8];
    /* 0.06 * 50 = 3 units per site: the planted ones (s1 has only 2 planted;
     * the third is the largest of the 0.1*u/d drift, unit 49). */
    CHECK(read_units(out, "/submodels/A_vs_B@s0.hook_post/s0.hook_post/units", u, 8) == 3);
    CHECK(u[0] == 3 && u[1] == 17 && u[2] == 42);
    CHECK(read_units(out, "/submodels/A_vs_B@s1.hook_post/s1.hook_post/units", u, 8) == 3);
    CHECK(u[0] == 8 && u[1] == 30 && u[2] == 49);
    CHECK(read_units(out, "/submodels/A_vs_B/s1.hook_post/units", u, 8) == 3);
    ss_h5_reader *r;
    CHECK_OK(ss_h5_open_read(out, &r));
    double *e;
    size_t n;
    CHECK_OK(ss_h5_read_f64(r, "/submodels/A_vs_B@s0.hook_post/s0.hook_post/effect_size", &e, &n, NULL));
    CHECK(n == 3);
    CHECK_NEAR(e[0], 2.0, 1e-12);
    CHECK_NEAR(e[1], 1.5, 1e-12);
    CHECK_NEAR(e[2], -3.0, 1e-12);
    free(e);
    double score;
    CHECK_OK(ss_h5_read_attr_f64(r, "/submodels/A_vs_B@s0.hook_post", "score", &score));
    CHECK_NEAR(score, (2.0 + 1.5 + 3.0) / 3, 1e-12);
    char *names;
    CHECK_OK(ss_h5_read_attr_str(r, "/", "submodels", &names));
    CHECK_MSG(!strcmp(names, "A_vs_B@s0.hook_post,A_vs_B,A_vs_B@s1.hook_post"), "order: %s", names);
    free(names);
    char *sha;
    CHECK_OK(ss_h5_read_attr_str(r, "/", "stats_sha256", &sha));
    CHECK(strlen(sha) == 64);
    free(sha);
    ss_h5_close_read(r);
    char *text;
    size_t len;
    CHECK_OK(ss_file_read(masks, &text, &len));
    CHECK_MSG(strstr(text, "{\"name\": \"A_vs_B\", \"sites\": [{\"site\": \"s0.hook_post\", \"units\": [3, 17, 42]}, "
                           "{\"site\": \"s1.hook_post\", \"units\": [8, 30, 49]}], \"mode\": \"zero\"}\n"),
              "masks: %s", text);
    free(text);

    /* Refusals leave no output. */
    unlink(out);
    unlink(masks);
    j.contrast = "A:C";
    CHECK_ERR(ss_job_discover(&j), SS_ERR_ARG, "label 'C' is not in");
    j.contrast = "A:B";
    j.sites = "s0.hook_post,blocks.9.mlp.hook_post";
    CHECK_ERR(ss_job_discover(&j), SS_ERR_ARG, "'blocks.9.mlp.hook_post' matches no site");
    j.sites = "s*";
    j.fraction = 1.5;
    CHECK_ERR(ss_job_discover(&j), SS_ERR_ARG, "outside (0, 1]");
    j.fraction = 0.06;
    j.contrast = "AB";
    CHECK_ERR(ss_job_discover(&j), SS_ERR_ARG, "LABEL_A:LABEL_B");
    CHECK(!ss_file_exists(out) && !ss_file_exists(masks));
    free(st);
    free(out);
    free(masks);
}

/* Site "c.hook_post": d = 40, planted groups {0..4} (corr 0.9) and
 * {10..14} (corr 0.7), unit 39 constant, the rest uncorrelated. */
static void block_corr(double *c, int64_t d) {
    for (int64_t i = 0; i < d; i++)
        for (int64_t j = 0; j < d; j++) {
            double v = i == j ? 1.0 : 0.0;
            if (i != j && i < 5 && j < 5) v = 0.9;
            if (i != j && i >= 10 && i < 15 && j >= 10 && j < 15) v = 0.7;
            if (i == 39 || j == 39) v = NAN;
            c[i * d + j] = v;
        }
}

TEST(discover_cluster_job_and_attribution_ranking) {
    int64_t d = 40;
    char *st = tmp("corr.h5"), *at = tmp("attr.h5"), *out = tmp("clusters.h5"), *masks = tmp("cl.jsonl");
    double *c = malloc((size_t)(d * d) * sizeof(double)), *mean = calloc((size_t)d, sizeof(double));
    block_corr(c, d);
    ss_h5 *h;
    CHECK_OK(ss_h5_create(st, &h));
    CHECK_OK(put_stats(h, "/stats", "c.hook_post", 100, mean, NULL, c, d));
    CHECK_OK(ss_h5_commit(h));
    /* Attributions [N = 2, d] (reduce positions): large on the second group. */
    double a[80];
    for (int i = 0; i < 80; i++) a[i] = (i % 40 >= 10 && i % 40 < 15) ? -5.0 : 0.1;
    a[3] = NAN;
    int64_t ad[2] = {2, d};
    CHECK_OK(ss_h5_create(at, &h));
    CHECK_OK(ss_h5_attr_str(h, "/", "reduce", "positions"));
    CHECK_OK(ss_h5_write_array(h, "/attr/c.hook_post", SS_H5_F64, 2, ad, NULL, a));
    CHECK_OK(ss_h5_commit(h));

    ss_discover_job j = {.stats = st, .sites = "c.*", .method = "cluster", .fraction = 0.125, .top = 5,
                         .min_corr = 0.1, .out = out, .masks_out = masks};
    CHECK_OK(ss_job_discover(&j));
    int64_t u[8];
    CHECK(read_units(out, "/submodels/cluster1@c.hook_post/c.hook_post/units", u, 8) == 5);
    CHECK(u[0] == 0 && u[4] == 4);
    CHECK(read_units(out, "/submodels/cluster2@c.hook_post/c.hook_post/units", u, 8) == 5);
    CHECK(u[0] == 10 && u[4] == 14);
    ss_h5_reader *r;
    CHECK_OK(ss_h5_open_read(out, &r));
    CHECK(!ss_h5_exists(r, "/submodels/cluster3@c.hook_post")); /* noise units stay alone */
    double score;
    CHECK_OK(ss_h5_read_attr_f64(r, "/submodels/cluster1@c.hook_post", "score", &score));
    CHECK_NEAR(score, 0.9, 1e-12);
    ss_h5_close_read(r);

    /* With attributions the second group carries most of the mass and wins. */
    unlink(out);
    j.attr = at;
    CHECK_OK(ss_job_discover(&j));
    CHECK(read_units(out, "/submodels/cluster1@c.hook_post/c.hook_post/units", u, 8) == 5);
    CHECK(u[0] == 10);
    CHECK_OK(ss_h5_open_read(out, &r));
    double share;
    CHECK_OK(ss_h5_read_attr_f64(r, "/submodels/cluster1@c.hook_post", "attr_share", &share));
    /* 5 units x 2 prompts x 5 over (that + 34 other units' 0.1s, one NaN left out). */
    CHECK_NEAR(share, 50.0 / (50.0 + 0.1 * (2 * 34 - 1)), 1e-12);
    ss_h5_close_read(r);

    /* Masks: scale mode carries its factor; mode scale without it is refused. */
    unlink(out);
    j.mode = "scale";
    CHECK_ERR(ss_job_discover(&j), SS_ERR_ARG, "needs --factor");
    j.has_factor = 1;
    j.factor = 0.5;
    CHECK_OK(ss_job_discover(&j));
    char *text;
    size_t len;
    CHECK_OK(ss_file_read(masks, &text, &len));
    CHECK_MSG(strstr(text, "\"units\": [10, 11, 12, 13, 14], \"mode\": \"scale\", \"factor\": 0.5}"), "masks: %s", text);
    free(text);
    /* The masks file is synced as the HDF5 file is: on a file system without fsync
     * the run succeeds; on a failing disk it fails and leaves neither file. */
    unlink(out), unlink(masks);
    ss_test_fsync_errno = EINVAL;
    ss_error_clear();
    ss_status fst = ss_job_discover(&j);
    ss_test_fsync_errno = 0;
    CHECK_MSG(fst == SS_OK && ss_file_exists(masks), "fsync EINVAL: %s", ss_last_error());
    unlink(out), unlink(masks);
    ss_test_fsync_errno = EIO;
    ss_error_clear();
    fst = ss_job_discover(&j);
    ss_test_fsync_errno = 0;
    CHECK_MSG(fst == SS_ERR_IO && strstr(ss_last_error(), "Input/output error"), "fsync EIO: %s", ss_last_error());
    CHECK(!ss_file_exists(out) && !ss_file_exists(masks));
    /* The message carries fsync's errno, not that of the clean-up after it (strerror(errno)
     * was read after fclose and unlink): here the temporary's unlink fails too. */
    ss_test_fsync_errno = EIO;
    ss_test_unlink_errno = EACCES;
    ss_error_clear();
    fst = ss_job_discover(&j);
    ss_test_fsync_errno = 0, ss_test_unlink_errno = 0;
    CHECK_MSG(fst == SS_ERR_IO && strstr(ss_last_error(), "write failed: Input/output error"), "fsync EIO, unlink EACCES: %s",
              ss_last_error());
    char *mt = ss_tmp_name(masks);
    if (mt) unlink(mt), free(mt);
    CHECK(!ss_file_exists(out) && !ss_file_exists(masks));
    /* A site whose file has neither corr nor cov. */
    unlink(out);
    CHECK_OK(ss_h5_create(st, &h));
    CHECK_OK(put_stats(h, "/stats", "c.hook_post", 100, mean, NULL, NULL, d));
    CHECK_OK(ss_h5_commit(h));
    CHECK_ERR(ss_job_discover(&j), SS_ERR_ARG, "neither corr nor cov");
    CHECK(!ss_file_exists(out));
    free(c);
    free(mean);
    free(st);
    free(at);
    free(out);
    free(masks);
}
