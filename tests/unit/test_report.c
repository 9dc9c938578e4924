#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "subscope/h5out.h"
#include "subscope/jobs.h"
#include "subscope/report.h"
#include "subscope/util.h"
#include "test.h"

TEST(report_index_formula) {
    int t;
    /* target 1.0; others 0.01, 0.02, 0 -> eps = max(1e-3, 0.01) = 0.01; denominator mean(0.01, 0.02, 0.01) */
    double a[] = {0.01, 1.0, 0.02, 0.0};
    CHECK_NEAR(ss_report_index(a, 4, &t), 1.0 / (0.04 / 3), 1e-12);
    CHECK(t == 1);
    /* every other topic improves: the floor eps caps the index at 1 / 0.01 */
    double b[] = {2.0, -1.0, -0.5};
    CHECK_NEAR(ss_report_index(b, 3, &t), 100.0, 1e-12);
    CHECK(t == 0);
    /* tiny effects: the absolute floor 1e-3 keeps them from looking specific */
    double c[] = {2e-4, 0.0, 0.0};
    CHECK_NEAR(ss_report_index(c, 3, &t), 0.2, 1e-12);
    /* uniform: index 1 */
    double u[] = {0.5, 0.5, 0.5, 0.5};
    CHECK_NEAR(ss_report_index(u, 4, &t), 1.0, 1e-12);
    CHECK(t == 0); /* first on ties */
    /* nothing impaired: 0 */
    double z[] = {-0.1, -0.2};
    CHECK(ss_report_index(z, 2, &t) == 0 && t == 0);
    /* NaN topics (no prompts) are left out; fewer than two finite topics: NaN */
    double n1[] = {NAN, 0.3, 0.1, NAN};
    CHECK_NEAR(ss_report_index(n1, 4, &t), 3.0, 1e-12);
    CHECK(t == 1);
    double n2[] = {NAN, 0.3};
    CHECK(isnan(ss_report_index(n2, 2, &t)) && t == -1);
    double one[] = {0.7};
    CHECK(isnan(ss_report_index(one, 1, &t)) && t == -1);
}

TEST(report_verdicts) {
    int t, n;
    double mean, sd;
    /* planted: a strong hit on one topic, controls hit all topics alike */
    double planted[] = {0.02, 0.9, 0.01, 0.015};
    double idx = ss_report_index(planted, 4, &t);
    CHECK(t == 1 && idx > 50);
    double weak_ctrl[3][4] = {{0.05, 0.06, 0.04, 0.05}, {0.03, 0.02, 0.04, 0.03}, {0.1, 0.08, 0.09, 0.11}};
    double ci[3];
    for (int k = 0; k < 3; k++) ci[k] = ss_report_index(weak_ctrl[k], 4, &t);
    CHECK(ss_report_judge(idx, ci, 3, &mean, &sd, &n) == SS_VERDICT_SPECIFIC);
    CHECK(n == 3 && mean > 1 && mean < 2 && sd > 0);

    /* the same sub-model whose random controls are as specific: not specific */
    double strong_ctrl[3][4] = {{0.02, 0.8, 0.01, 0.02}, {0.01, 0.01, 0.9, 0.01}, {0.95, 0.02, 0.01, 0.01}};
    for (int k = 0; k < 3; k++) ci[k] = ss_report_index(strong_ctrl[k], 4, &t);
    CHECK(ss_report_judge(idx, ci, 3, &mean, &sd, &n) == SS_VERDICT_NONE);

    /* uniform impairment: no topic-specific effect whatever the controls */
    double uniform[] = {0.5, 0.52, 0.49, 0.5};
    double ui = ss_report_index(uniform, 4, &t);
    double zero_ctrl[] = {0.0, 0.0, 0.0};
    CHECK(ss_report_judge(ui, zero_ctrl, 3, &mean, &sd, &n) == SS_VERDICT_NONE);

    /* the thresholds: index 3 exactly passes the first; > mean + 2 sd strictly */
    double c2[] = {1.0, 1.0};
    CHECK(ss_report_judge(3.0, c2, 2, &mean, &sd, &n) == SS_VERDICT_SPECIFIC && sd == 0);
    CHECK(ss_report_judge(2.999, c2, 2, &mean, &sd, &n) == SS_VERDICT_NONE);
    double c3[] = {1.0, 3.0}; /* mean 2, sd sqrt(2): bar 4.83 */
    CHECK(ss_report_judge(4.8, c3, 2, &mean, &sd, &n) == SS_VERDICT_NONE);
    CHECK(ss_report_judge(4.9, c3, 2, &mean, &sd, &n) == SS_VERDICT_SPECIFIC);
    CHECK_NEAR(sd, sqrt(2.0), 1e-12);

    /* too few controls: never "specific"; NaN control indices do not count */
    double c1[] = {1.0, NAN};
    CHECK(ss_report_judge(50, c1, 2, &mean, &sd, &n) == SS_VERDICT_UNTESTED && n == 1);
    CHECK(ss_report_judge(50, NULL, 0, &mean, &sd, &n) == SS_VERDICT_UNTESTED && isnan(mean));
    /* one topic: no index, no verdict of specificity */
    CHECK(ss_report_judge(NAN, c2, 2, &mean, &sd, &n) == SS_VERDICT_ONE_TOPIC);
}

TEST(report_control_units_draw) {
    int64_t a[40], b[40];
    /* count, range, distinct (ascending), deterministic */
    CHECK_OK(ss_ablate_control_units(7, 0, 5, 100, 40, a));
    for (int i = 0; i < 40; i++) CHECK(a[i] >= 0 && a[i] < 100 && (i == 0 || a[i] > a[i - 1]));
    CHECK_OK(ss_ablate_control_units(7, 0, 5, 100, 40, b));
    CHECK(!memcmp(a, b, sizeof a));
    /* k, seed and site change the draw */
    CHECK_OK(ss_ablate_control_units(7, 1, 5, 100, 40, b));
    CHECK(memcmp(a, b, sizeof a));
    CHECK_OK(ss_ablate_control_units(8, 0, 5, 100, 40, b));
    CHECK(memcmp(a, b, sizeof a));
    CHECK_OK(ss_ablate_control_units(7, 0, 6, 100, 40, b));
    CHECK(memcmp(a, b, sizeof a));
    /* n = width - 1: every unit but one */
    CHECK_OK(ss_ablate_control_units(1, 2, 0, 41, 40, a));
    for (int i = 0; i < 40; i++) CHECK(a[i] >= 0 && a[i] < 41 && (i == 0 || a[i] > a[i - 1]));
    /* uniform: over many seeds every unit is drawn, about n/width of the time each */
    enum { W = 10, N = 3, R = 20000 };
    int count[W] = {0};
    for (int s = 0; s < R; s++) {
        int64_t u[N];
        CHECK_OK(ss_ablate_control_units((uint64_t)s, 0, 3, W, N, u));
        for (int i = 0; i < N; i++) count[u[i]]++;
    }
    for (int i = 0; i < W; i++) CHECK_MSG(fabs(count[i] - R * N / (double)W) < 0.05 * R * N / W, "unit %d drawn %d times", i, count[i]);
    /* no control of a whole site; nothing to draw */
    CHECK_ERR(ss_ablate_control_units(1, 0, 0, 10, 10, a), SS_ERR_ARG, "1 .. 9 units");
    CHECK_ERR(ss_ablate_control_units(1, 0, 0, 10, 0, a), SS_ERR_ARG, "asked for 0");
}

TEST(report_control_mask) {
    ss_config c = {0};
    c.n_layer = 2, c.n_head = 4, c.n_embd = 32, c.n_inner = 128, c.n_positions = 16, c.vocab_size = 50;
    const char *text =
        "{\"name\": \"two\", \"sites\": [{\"site\": \"blocks.1.mlp.hook_post\", \"units\": [3, 4, 5]}, "
        "{\"site\": \"blocks.0.attn.hook_z\", \"heads\": [1]}], \"positions\": [2], \"mode\": \"noise\", \"sigma\": 0.5, "
        "\"relative\": true, \"seed\": 9}\n"
        "{\"name\": \"whole\", \"site\": \"blocks.0.hook_resid_pre\"}\n"
        "{\"name\": \"two_swapped\", \"sites\": [{\"site\": \"blocks.0.attn.hook_z\", \"heads\": [1]}, "
        "{\"site\": \"blocks.1.mlp.hook_post\", \"units\": [5, 3, 4]}], \"positions\": [2], \"mode\": \"zero\"}\n";
    ss_mask *ms;
    int n;
    CHECK_OK(ss_masks_parse_jsonl(&c, text, strlen(text), "m.jsonl", &ms, &n));
    CHECK(n == 3);
    ss_mask k0, k0b, k1;
    CHECK_OK(ss_ablate_control(&c, &ms[0], 0, &k0));
    CHECK(!strcmp(k0.name, "two~ctrl0") && k0.mode == SS_MASK_NOISE && k0.sigma == 0.5 && k0.sigma_relative && k0.seed == 9);
    CHECK(k0.n_targets == 2 && k0.n_positions == 1 && k0.positions[0] == 2);
    for (int t = 0; t < 2; t++) {
        CHECK(k0.targets[t].site_id == ms[0].targets[t].site_id && k0.targets[t].n_units == ms[0].targets[t].n_units);
        ss_site s;
        ss_site_get(&c, k0.targets[t].site_id, &s);
        int64_t prev = -1;
        for (int64_t i = 0; i < k0.targets[t].n_units; i++) {
            CHECK(k0.targets[t].units[i] > prev && k0.targets[t].units[i] < s.width);
            prev = k0.targets[t].units[i];
        }
    }
    CHECK_OK(ss_ablate_control(&c, &ms[0], 0, &k0b));
    CHECK(!memcmp(k0.targets[0].units, k0b.targets[0].units, (size_t)k0.targets[0].n_units * sizeof(int64_t)));
    CHECK_OK(ss_ablate_control(&c, &ms[0], 1, &k1));
    CHECK(!strcmp(k1.name, "two~ctrl1"));
    CHECK(memcmp(k0.targets[1].units, k1.targets[1].units, (size_t)k0.targets[1].n_units * sizeof(int64_t)));
    /* identity: the same units in another site order and mode share it; a control's differs */
    char h0[65], h2[65], hc[65];
    ss_mask_units_sha256(&c, &ms[0], h0);
    ss_mask_units_sha256(&c, &ms[2], h2);
    ss_mask_units_sha256(&c, &k0, hc);
    CHECK(!strcmp(h0, h2) && strcmp(h0, hc) && strlen(h0) == 64);
    ss_mask_free(&k0);
    ss_mask_free(&k0b);
    ss_mask_free(&k1);
    CHECK_ERR(ss_ablate_control(&c, &ms[1], 0, &k0), SS_ERR_ARG, "covers all 32 units of blocks.0.hook_resid_pre");
    /* a name too long for its suffix */
    memset(ms[1].name, 'x', 60);
    ms[1].name[60] = 0;
    ms[1].targets[0].n_units = 0;
    CHECK_ERR(ss_ablate_control(&c, &ms[1], 0, &k0), SS_ERR_ARG, "would pass 63 bytes");
    ss_masks_free(ms, n);
}

/* A synthetic ablate output: 4 prompts, one per topic A..D, clean loss 2;
 * each mask's change per topic as given. */
static const char *const topics4[4] = {"A", "B", "C", "D"};

static void put_mask(ss_h5 *h, const char *name, const char *uid, double factor, const char *control_of, const double *chg) {
    char p[256];
    float v[4];
    int64_t n = 4;
    for (int i = 0; i < 4; i++) v[i] = (float)(2 + chg[i]);
    snprintf(p, sizeof p, "/ablate/%s/loss", name);
    CHECK_OK(ss_h5_write_array(h, p, SS_H5_F32, 1, &n, NULL, v));
    snprintf(p, sizeof p, "/ablate/%s", name);
    CHECK_OK(ss_h5_attr_str(h, p, "mode", "scale"));
    CHECK_OK(ss_h5_attr_f64(h, p, "factor", factor));
    CHECK_OK(ss_h5_attr_f64(h, p, "sigma", NAN));
    CHECK_OK(ss_h5_attr_i64(h, p, "relative", 0));
    CHECK_OK(ss_h5_attr_i64(h, p, "seed", 0));
    CHECK_OK(ss_h5_attr_str(h, p, "sites", "blocks.0.mlp.hook_post"));
    CHECK_OK(ss_h5_attr_i64(h, p, "n_units_total", 4));
    CHECK_OK(ss_h5_attr_i64(h, p, "n_positions", 0));
    CHECK_OK(ss_h5_attr_str(h, p, "units_sha256", uid));
    if (control_of) CHECK_OK(ss_h5_attr_str(h, p, "control_of", control_of));
    for (int t = 0; t < 4; t++) {
        double x = 2 + chg[t];
        snprintf(p, sizeof p, "/by_label/%s/ablate/%s/loss", topics4[t], name);
        CHECK_OK(ss_h5_write_array(h, p, SS_H5_F64, 0, NULL, NULL, &x));
    }
}

TEST(report_end_to_end_verdicts) {
    char path[512], html[512], sum[512];
    snprintf(path, sizeof path, "%s/synthetic_ablate.h5", ss_test_tmp_dir());
    snprintf(html, sizeof html, "%s/synthetic.html", ss_test_tmp_dir());
    snprintf(sum, sizeof sum, "%s/synthetic.txt", ss_test_tmp_dir());
    ss_h5 *h;
    CHECK_OK(ss_h5_create(path, &h));
    CHECK_OK(ss_h5_attr_str(h, "/", "format", "subscope"));
    float clean[4] = {2, 2, 2, 2};
    int64_t n = 4;
    CHECK_OK(ss_h5_write_array(h, "/clean/loss", SS_H5_F32, 1, &n, NULL, clean));
    for (int t = 0; t < 4; t++) {
        char p[128];
        double x = 2;
        snprintf(p, sizeof p, "/by_label/%s/clean/loss", topics4[t]);
        CHECK_OK(ss_h5_write_array(h, p, SS_H5_F64, 0, NULL, NULL, &x));
    }
    /* "spec": specific to A at its strongest setting (factor 0); its controls
     * there hit everything alike. The weaker setting's controls are specific
     * on purpose: the verdict must use the strongest setting's controls. */
    const double spec0[4] = {1.0, 0.02, 0.01, 0.02}, spec50[4] = {0.05, 0.01, 0.01, 0.01};
    const double flatc[3][4] = {{0.05, 0.06, 0.04, 0.05}, {0.03, 0.02, 0.04, 0.03}, {0.1, 0.08, 0.09, 0.11}};
    const double sharpc[3][4] = {{0.9, 0.01, 0.01, 0.01}, {0.01, 0.8, 0.01, 0.01}, {0.01, 0.01, 0.01, 0.7}};
    put_mask(h, "spec0", "u1", 0, NULL, spec0);
    put_mask(h, "spec50", "u1", 0.5, NULL, spec50);
    /* "copy": the same effect, but its random controls are as specific */
    put_mask(h, "copy", "u2", 0, NULL, spec0);
    /* "flat": hurts every topic alike */
    const double flat[4] = {0.5, 0.52, 0.49, 0.5};
    put_mask(h, "flat", "u3", 0, NULL, flat);
    /* "solo": specific, but no controls */
    put_mask(h, "solo", "u4", 0, NULL, spec0);
    /* "tiny": spec0's pattern at a hundredth: a large ratio of changes under 1% of clean */
    const double tiny[4] = {0.01 * spec0[0], 0.01 * spec0[1], 0.01 * spec0[2], 0.01 * spec0[3]};
    put_mask(h, "tiny", "u5", 0, NULL, tiny);
    for (int k = 0; k < 3; k++) {
        char nm[64];
        double tc[4];
        for (int t = 0; t < 4; t++) tc[t] = 0.01 * flatc[k][t];
        snprintf(nm, sizeof nm, "tiny~ctrl%d", k);
        put_mask(h, nm, "c", 0, "tiny", tc);
        snprintf(nm, sizeof nm, "spec0~ctrl%d", k);
        put_mask(h, nm, "c", 0, "spec0", flatc[k]);
        snprintf(nm, sizeof nm, "spec50~ctrl%d", k);
        put_mask(h, nm, "c", 0.5, "spec50", sharpc[k]);
        snprintf(nm, sizeof nm, "copy~ctrl%d", k);
        put_mask(h, nm, "c", 0, "copy", sharpc[k]);
        snprintf(nm, sizeof nm, "flat~ctrl%d", k);
        put_mask(h, nm, "c", 0, "flat", flatc[k]);
    }
    CHECK_OK(ss_h5_commit(h));

    FILE *f = fopen(sum, "w");
    CHECK(f != NULL);
    if (!f) return;
    const char *in[1] = {path};
    ss_report_job j = {.inputs = in, .n_inputs = 1, .out = html, .summary = f};
    CHECK_OK(ss_job_report(&j));
    fclose(f);
    char *text = NULL;
    size_t len;
    CHECK_OK(ss_file_read(sum, &text, &len));
    if (!text) return;
    /* sub-models in order of first appearance in the (name-sorted) file: copy, flat, solo, spec */
    CHECK_MSG(strstr(text, "S1 copy (blocks.0.mlp.hook_post, 4 units): target A, index 60, controls 80 +- 10 (n=3)") != NULL, "%s", text);
    CHECK(strstr(text, "S1 copy") && strstr(strstr(text, "S1 copy"), "-> no topic-specific effect\n"));
    CHECK(strstr(text, "S2 flat") && strstr(strstr(text, "S2 flat"), "-> no topic-specific effect\n"));
    CHECK(strstr(text, "S3 solo") && strstr(strstr(text, "S3 solo"), "controls none -> untested: index >= 3 for A"));
    CHECK(strstr(text, "S4 spec (blocks.0.mlp.hook_post, 4 units): target A, index 60, controls 1.34 +- 0.146 (n=3)") &&
          strstr(strstr(text, "S4 spec"), "-> topic-specific to A\n"));
    CHECK_MSG(strstr(text, "S5 tiny") && strstr(strstr(text, "S5 tiny"), "-> no topic-specific effect (too small"), "%s", text);
    CHECK(strstr(text, "1 of 5 sub-models topic-specific\n") != NULL);
    free(text);
    CHECK_OK(ss_file_read(html, &text, &len));
    if (text) {
        CHECK(strstr(text, "1 of 5 sub-models is topic-specific: S4 (A).") != NULL);
        CHECK(!strstr(text, "http"));
        free(text);
    }
    /* The page is synced as an HDF5 output is: on a file system without fsync it is
     * written; on a failing disk the run fails and leaves no page. */
    unlink(html);
    j.summary = NULL;
    ss_test_fsync_errno = EINVAL;
    ss_error_clear();
    ss_status fst = ss_job_report(&j);
    ss_test_fsync_errno = 0;
    CHECK_MSG(fst == SS_OK && ss_file_exists(html), "fsync EINVAL: %s", ss_last_error());
    unlink(html);
    ss_test_fsync_errno = EIO;
    ss_error_clear();
    fst = ss_job_report(&j);
    ss_test_fsync_errno = 0;
    CHECK_MSG(fst == SS_ERR_IO && strstr(ss_last_error(), "Input/output error"), "fsync EIO: %s", ss_last_error());
    CHECK(!ss_file_exists(html));
}
