/* attribute's reductions: --reduce positions and --reduce prompts are the
 * sums of the unreduced attributions (padding excluded), for every method's
 * output shape (a per-unit site and a [head, d_head] one). */
#include <math.h>
#include <stdlib.h>

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
