/* attribute's reductions: --reduce positions and --reduce prompts are the
 * sums of the unreduced attributions (padding excluded), for every method's
 * output shape (a per-unit site and a [head, d_head] one). */
#include <math.h>
#include <stdlib.h>

#include "subscope/backend.h"
#include "subscope/h5out.h"
#include "subscope/jobs.h"
#include "subscope/util.h"
#include "test.h"

static ss_status run_reduce(const char *input, const char *reduce, const char *out) {
    ss_attribute_job j = {.run = {.model_dir = "models/tiny-gpt2", .input = input, .batch = 3, .device = "cpu"},
                          .out = out, .sites = "blocks.1.mlp.hook_post,blocks.2.attn.hook_z", .metric = "logitdiff",
                          .method = "gradxact", .reduce = reduce};
    return ss_job_attribute(&j);
}

TEST(attribute_reduce_positions_and_prompts_are_sums) {
    char input[512], paths[3][600];
    snprintf(input, sizeof input, "%s/patch/clean.jsonl", ss_test_data_dir());
    const char *modes[3] = {"none", "positions", "prompts"};
    for (int i = 0; i < 3; i++) {
        snprintf(paths[i], sizeof paths[i], "%s/attr_%s.h5", ss_test_tmp_dir(), modes[i]);
        CHECK_OK(run_reduce(input, modes[i], paths[i]));
    }
    const char *sites[2] = {"/attr/blocks.1.mlp.hook_post", "/attr/blocks.2.attn.hook_z"};
    for (int k = 0; k < 2; k++) {
        float *a[3];
        size_t n[3];
        ss_h5_info info[3];
        for (int i = 0; i < 3; i++) {
            ss_h5_reader *r;
            CHECK_OK(ss_h5_open_read(paths[i], &r));
            CHECK_OK(ss_h5_read_f32(r, sites[k], &a[i], &n[i], &info[i]));
            ss_h5_close_read(r);
        }
        const int64_t N = info[0].dims[0], T = info[0].dims[1], W = (int64_t)(n[0] / (size_t)(N * T));
        CHECK(n[1] == (size_t)(N * W) && n[2] == (size_t)(T * W));
        CHECK(info[1].ndim == info[0].ndim - 1 && info[2].ndim == info[0].ndim - 1);
        double worst = 0;
        for (int64_t i = 0; i < N; i++)
            for (int64_t u = 0; u < W; u++) {
                double s = 0;
                for (int64_t t = 0; t < T; t++) {
                    float v = a[0][(i * T + t) * W + u];
                    if (!isnan(v)) s += v;
                }
                worst = fmax(worst, fabs(s - a[1][i * W + u]));
            }
        for (int64_t t = 0; t < T; t++)
            for (int64_t u = 0; u < W; u++) {
                double s = 0;
                for (int64_t i = 0; i < N; i++) {
                    float v = a[0][(i * T + t) * W + u];
                    if (!isnan(v)) s += v;
                }
                worst = fmax(worst, fabs(s - a[2][t * W + u]));
            }
        /* float32 outputs of sums done in float64: a few ulps of values ~1e-2. */
        CHECK_MSG(worst < 1e-6, "%s: reduced outputs differ from sums of the unreduced by %g", sites[k], worst);
        for (int i = 0; i < 3; i++) free(a[i]);
    }
}

/* On a device, attribute forms the attributions there (attr_product; ig:
 * ig_point, ig_add and ig_attr) and brings back the sums over positions
 * (seq_sums) or the attributions: the same files as the CPU's within the
 * products' rounding, for every method and reduction (ig with a zero and a
 * mean baseline), with the device ops counted through a copy of the
 * emulated backend so that the test fails if the path is not taken. */
static const ss_backend *gpu_real;
static int n_products, n_sums, n_ig;
static ss_status count_product(const ss_backend *be, float *out, const float *g, int64_t ldg, const float *a,
                               const float *c, int64_t rows, int64_t w) {
    n_products++;
    return gpu_real->attr_product(be, out, g, ldg, a, c, rows, w);
}
static ss_status count_sums(const ss_backend *be, double *out, const float *x, int64_t w, int64_t n_seq,
                            const int64_t *start, const int64_t *len) {
    n_sums++;
    return gpu_real->seq_sums(be, out, x, w, n_seq, start, len);
}
static ss_status count_ig_point(const ss_backend *be, float *x, int64_t ldx, const float *clean, const double *base,
                                double alpha, int64_t rows, int64_t w) {
    n_ig++;
    return gpu_real->ig_point(be, x, ldx, clean, base, alpha, rows, w);
}
static ss_status count_ig_add(const ss_backend *be, double *sum, const float *g, int64_t ldg, int64_t rows, int64_t w) {
    n_ig++;
    return gpu_real->ig_add(be, sum, g, ldg, rows, w);
}
static ss_status count_ig_attr(const ss_backend *be, float *out, const float *clean, const double *base,
                               const double *sum, int steps, int64_t rows, int64_t w) {
    n_ig++;
    return gpu_real->ig_attr(be, out, clean, base, sum, steps, rows, w);
}

/* h5 dataset `path` of files a and b: equal within 1e-5 + 1e-4 relative, NaN where NaN */
static void check_close_f32(const char *a, const char *b, const char *path, const char *what) {
    float *x = NULL, *y = NULL;
    size_t nx = 0, ny = 0;
    ss_h5_reader *r;
    CHECK_OK(ss_h5_open_read(a, &r));
    CHECK_OK(ss_h5_read_f32(r, path, &x, &nx, NULL));
    ss_h5_close_read(r);
    CHECK_OK(ss_h5_open_read(b, &r));
    CHECK_OK(ss_h5_read_f32(r, path, &y, &ny, NULL));
    ss_h5_close_read(r);
    CHECK(nx == ny && nx > 0);
    /* gradients ~1e-3..1 through different products: 1e-5 + 1e-4 relative (the forward's bound) */
    size_t bad = 0;
    for (size_t i = 0; i < nx && nx == ny; i++)
        if (isnan(x[i]) != isnan(y[i]) || (!isnan(x[i]) && fabs((double)x[i] - y[i]) > 1e-5 + 1e-4 * fabs(x[i]))) bad++;
    CHECK_MSG(!bad, "%s %s: %zu of %zu values differ", what, path, bad, nx);
    free(x), free(y);
}

TEST(attribute_on_the_emulated_gpu_matches_the_cpu) {
    ss_backend *gpu = NULL;
    CHECK_OK(ss_backend_cuda_open(0, NULL, &gpu));
    if (!gpu) return;
    gpu_real = gpu;
    ss_backend counted = *gpu;
    counted.attr_product = count_product, counted.seq_sums = count_sums;
    counted.ig_point = count_ig_point, counted.ig_add = count_ig_add, counted.ig_attr = count_ig_attr;
    char clean[512], corrupt[512], a[600], b[600], stats[600], what[64];
    snprintf(clean, sizeof clean, "%s/patch/clean.jsonl", ss_test_data_dir());
    snprintf(corrupt, sizeof corrupt, "%s/patch/corrupt.jsonl", ss_test_data_dir());
    snprintf(stats, sizeof stats, "%s/attr_stats.h5", ss_test_tmp_dir());
    const ss_collect_job cj = {.run = {.model_dir = "models/tiny-gpt2", .input = clean, .device = "cpu"}, .out = stats,
                               .sites = "blocks.1.mlp.hook_post,blocks.2.attn.hook_z", .stats = "mean"};
    CHECK_OK(ss_job_collect(&cj));
    const char *methods[5] = {"grad", "gradxact", "atp", "ig:3", "ig:2"}, *reduces[3] = {"none", "positions", "prompts"};
    const char *sites[2] = {"blocks.1.mlp.hook_post", "blocks.2.attn.hook_z"};
    for (int mi = 0; mi < 5; mi++)
        for (int ri = 0; ri < 3; ri++) {
            if ((mi == 3 && ri != 1) || (mi == 4 && ri != 0)) continue; /* ig's many passes: two cases */
            snprintf(a, sizeof a, "%s/attr_cpu.h5", ss_test_tmp_dir());
            snprintf(b, sizeof b, "%s/attr_gpu.h5", ss_test_tmp_dir());
            ss_attribute_job j = {.run = {.model_dir = "models/tiny-gpt2", .input = clean, .batch = 3, .device = "cpu"},
                                  .out = a, .sites = "blocks.1.mlp.hook_post,blocks.2.attn.hook_z",
                                  .metric = "logitdiff", .method = methods[mi], .reduce = reduces[ri],
                                  .corrupt = mi == 2 ? corrupt : NULL, .stats = mi == 4 ? stats : NULL};
            CHECK_OK(ss_job_attribute(&j));
            j.run.device = NULL, j.run.backend = &counted, j.out = b;
            n_products = n_sums = n_ig = 0;
            ss_status st = ss_job_attribute(&j);
            snprintf(what, sizeof what, "%s%s %s", methods[mi], mi == 4 ? " (mean)" : "", reduces[ri]);
            CHECK_MSG(st == SS_OK, "%s on the GPU: %s", what, ss_last_error());
            /* ig: per site and batch (2 of 5 prompts), steps + 1 points, steps sums and one attr_product */
            const int ig = mi >= 3, steps = mi == 3 ? 3 : 2;
            CHECK_MSG(ig ? n_ig == 2 * 2 * (2 * steps + 2) && n_products == 0 && n_sums == 0
                         : n_products > 0 && (n_sums > 0) == (ri == 1) && n_ig == 0,
                      "%s: %d products, %d sums, %d ig ops on the device", what, n_products, n_sums, n_ig);
            char path[160];
            for (int k = 0; k < 2 && st == SS_OK; k++) {
                snprintf(path, sizeof path, "/attr/%s", sites[k]);
                check_close_f32(a, b, path, what);
                if (ig) {
                    snprintf(path, sizeof path, "/ig/%s/baseline_metric", sites[k]);
                    check_close_f32(a, b, path, what);
                }
            }
        }
    ss_backend_cuda_close(gpu);
}
