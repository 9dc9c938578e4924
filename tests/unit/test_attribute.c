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

/* On a device, attribute forms the attributions there (attr_product) and
 * brings back the sums over positions (seq_sums) or the attributions: the
 * same files as the CPU's within the products' rounding, for every method
 * and reduction, with the device ops counted through a copy of the
 * emulated backend so that the test fails if the path is not taken. */
static const ss_backend *gpu_real;
static int n_products, n_sums;
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

TEST(attribute_on_the_emulated_gpu_matches_the_cpu) {
    ss_backend *gpu = NULL;
    CHECK_OK(ss_backend_cuda_open(0, NULL, &gpu));
    if (!gpu) return;
    gpu_real = gpu;
    ss_backend counted = *gpu;
    counted.attr_product = count_product, counted.seq_sums = count_sums;
    char clean[512], corrupt[512], a[600], b[600];
    snprintf(clean, sizeof clean, "%s/patch/clean.jsonl", ss_test_data_dir());
    snprintf(corrupt, sizeof corrupt, "%s/patch/corrupt.jsonl", ss_test_data_dir());
    const char *methods[3] = {"grad", "gradxact", "atp"}, *reduces[3] = {"none", "positions", "prompts"};
    const char *sites[2] = {"/attr/blocks.1.mlp.hook_post", "/attr/blocks.2.attn.hook_z"};
    for (int mi = 0; mi < 3; mi++)
        for (int ri = 0; ri < 3; ri++) {
            snprintf(a, sizeof a, "%s/attr_cpu.h5", ss_test_tmp_dir());
            snprintf(b, sizeof b, "%s/attr_gpu.h5", ss_test_tmp_dir());
            ss_attribute_job j = {.run = {.model_dir = "models/tiny-gpt2", .input = clean, .batch = 3, .device = "cpu"},
                                  .out = a, .sites = "blocks.1.mlp.hook_post,blocks.2.attn.hook_z",
                                  .metric = "logitdiff", .method = methods[mi], .reduce = reduces[ri],
                                  .corrupt = mi == 2 ? corrupt : NULL};
            CHECK_OK(ss_job_attribute(&j));
            j.run.device = NULL, j.run.backend = &counted, j.out = b;
            n_products = n_sums = 0;
            ss_status st = ss_job_attribute(&j);
            CHECK_MSG(st == SS_OK, "%s %s on the GPU: %s", methods[mi], reduces[ri], ss_last_error());
            CHECK_MSG(n_products > 0 && (n_sums > 0) == (ri == 1), "%s %s: %d products, %d sums on the device",
                      methods[mi], reduces[ri], n_products, n_sums);
            for (int k = 0; k < 2 && st == SS_OK; k++) {
                float *x, *y;
                size_t nx, ny;
                ss_h5_reader *r;
                CHECK_OK(ss_h5_open_read(a, &r));
                CHECK_OK(ss_h5_read_f32(r, sites[k], &x, &nx, NULL));
                ss_h5_close_read(r);
                CHECK_OK(ss_h5_open_read(b, &r));
                CHECK_OK(ss_h5_read_f32(r, sites[k], &y, &ny, NULL));
                ss_h5_close_read(r);
                CHECK(nx == ny && nx > 0);
                /* gradients ~1e-3..1 through different products: 1e-5 + 1e-4 relative (the forward's bound) */
                size_t bad = 0;
                for (size_t i = 0; i < nx && nx == ny; i++)
                    if (isnan(x[i]) != isnan(y[i]) || (!isnan(x[i]) && fabs((double)x[i] - y[i]) > 1e-5 + 1e-4 * fabs(x[i])))
                        bad++;
                CHECK_MSG(!bad, "%s %s %s: %zu of %zu values differ", methods[mi], reduces[ri], sites[k], bad, nx);
                free(x), free(y);
            }
        }
    ss_backend_cuda_close(gpu);
}
