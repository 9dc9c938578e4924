/* The CPU forward-mode ops (norm_jvp, swiglu_jvp, attention_jvp; trace's
 * attribution pass) against the backward ops by the adjoint identity: for a
 * Jacobian J, u.(J dx) = (J^T u).dx for every dx and u, so a tangent op and
 * the gradient op of the same function agree on those two numbers (in fp64
 * here, from fp32 outputs). Random x, dx, u; shapes with one row, widths
 * not multiples of anything, grouped heads, several sequences. The
 * tolerance: both sides are fp32 vectors of O(1) entries summed in fp64, so
 * their difference is a few fp32 roundings of the sum's terms: 1e-5 of the
 * sum of the terms' magnitudes. Whole-model checks (forward mode against
 * the prefixes' backward passes, and finite differences) are in
 * tests/cli/test_trace.sh. */
#include <math.h>
#include <stdlib.h>

#include "subscope/backend.h"
#include "test.h"

static double dot(const float *a, const float *b, int64_t n, double *mag) {
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += (double)a[i] * b[i], *mag += fabs((double)a[i] * b[i]);
    return s;
}

static int adjoint_ok(const char *what, double l, double r, double mag) {
    const int ok = fabs(l - r) <= 1e-5 * mag + 1e-9;
    if (!ok) printf("\n    %s: u.(J dx) = %.9g, (J^T u).dx = %.9g (terms' magnitude %.3g)", what, l, r, mag);
    return ok;
}

TEST(cpu_norm_jvp_is_the_adjoint_of_the_norms_backward) {
    const ss_backend *be = ss_backend_cpu();
    CHECK(be->norm_jvp);
    const int64_t shapes[][2] = {{1, 1}, {1, 8}, {3, 33}, {7, 100}, {2, 768}};
    for (int si = 0; si < 5; si++)
        for (int rms = 0; rms < 2; rms++) {
            const int64_t rows = shapes[si][0], d = shapes[si][1], n = rows * d;
            float *x = ss_test_rvec(n, 1 + (unsigned)si, 1.f), *dx = ss_test_rvec(n, 2, 1.f), *u = ss_test_rvec(n, 3, 1.f);
            float *w = ss_test_rvec(d, 4, 1.5f), *jdx = ss_test_fvec(n, NAN), *ju = ss_test_fvec(n, 0.f);
            if (rows > 1)
                for (int64_t i = 0; i < d; i++) x[d + i] += 50.f; /* rstd ~ 1/50 in row 1 for LayerNorm: small var */
            CHECK_OK(be->norm_jvp(be, jdx, dx, x, w, rows, d, 1e-5f, rms));
            if (rms) CHECK_OK(be->rmsnorm_backward(be, ju, NULL, u, x, w, rows, d, 1e-5f));
            else CHECK_OK(be->layernorm_backward(be, ju, NULL, NULL, u, x, w, rows, d, 1e-5f));
            double mag = 0, l = dot(u, jdx, n, &mag), r = dot(ju, dx, n, &mag);
            char nm[64];
            snprintf(nm, sizeof nm, "%s %lldx%lld", rms ? "rmsnorm" : "layernorm", (long long)rows, (long long)d);
            CHECK(adjoint_ok(nm, l, r, mag));
            /* rows are independent: the first row's tangent does not change with the others' */
            if (rows > 1) {
                float *one = ss_test_fvec(d, NAN);
                CHECK_OK(be->norm_jvp(be, one, dx, x, w, 1, d, 1e-5f, rms));
                CHECK(memcmp(one, jdx, (size_t)d * sizeof(float)) == 0);
                free(one);
            }
            free(x), free(dx), free(u), free(w), free(jdx), free(ju);
        }
}

TEST(cpu_swiglu_jvp_is_the_adjoint_of_swiglu_backward) {
    const ss_backend *be = ss_backend_cpu();
    CHECK(be->swiglu_jvp);
    const int64_t shapes[][2] = {{1, 1}, {3, 37}, {5, 300}};
    for (int si = 0; si < 3; si++) {
        const int64_t rows = shapes[si][0], dm = shapes[si][1], n = rows * dm;
        float *gu = ss_test_rvec(2 * n, 5 + (unsigned)si, 4.f), *dgu = ss_test_rvec(2 * n, 6, 1.f);
        float *u = ss_test_rvec(n, 7, 1.f), *jd = ss_test_fvec(n, NAN), *ju = ss_test_fvec(2 * n, NAN);
        CHECK_OK(be->swiglu_jvp(be, jd, dgu, gu, rows, dm));
        CHECK_OK(be->swiglu_backward(be, ju, u, gu, rows, dm));
        double mag = 0, l = dot(u, jd, n, &mag), r = dot(ju, dgu, 2 * n, &mag);
        char nm[64];
        snprintf(nm, sizeof nm, "swiglu %lldx%lld", (long long)rows, (long long)dm);
        CHECK(adjoint_ok(nm, l, r, mag));
        free(gu), free(dgu), free(u), free(jd), free(ju);
    }
}

TEST(cpu_attention_jvp_is_the_adjoint_of_attention_backward) {
    const ss_backend *be = ss_backend_cpu();
    CHECK(be->attention_jvp);
    /* H, Hkv, dh, sequences (lengths) */
    const struct { int64_t H, Hkv, dh, n_seq, len[3]; } cs[] = {
        {1, 1, 1, 1, {1}}, {2, 2, 5, 1, {7}}, {4, 2, 6, 3, {5, 1, 9}}, {4, 1, 16, 2, {33, 20}}};
    for (int ci = 0; ci < 4; ci++) {
        const int64_t H = cs[ci].H, Hkv = cs[ci].Hkv, dh = cs[ci].dh, zw = H * dh, qw = (H + 2 * Hkv) * dh;
        int64_t start[3], rows = 0;
        for (int64_t s = 0; s < cs[ci].n_seq; s++) start[s] = rows, rows += cs[ci].len[s];
        float *qkv = ss_test_rvec(rows * qw, 8 + (unsigned)ci, 1.5f), *dqkv = ss_test_rvec(rows * qw, 9, 1.f);
        float *u = ss_test_rvec(rows * zw, 10, 1.f), *jz = ss_test_fvec(rows * zw, NAN), *ju = ss_test_fvec(rows * qw, NAN);
        const float scale = 1.f / sqrtf((float)dh);
        CHECK_OK(be->attention_jvp(be, jz, dqkv, dqkv + zw, dqkv + zw + Hkv * dh, qw, qkv, qkv + zw, qkv + zw + Hkv * dh,
                                   qw, cs[ci].n_seq, start, cs[ci].len, H, Hkv, dh, scale));
        CHECK_OK(be->attention_backward(be, ju, ju + zw, ju + zw + Hkv * dh, qw, u, qkv, qkv + zw, qkv + zw + Hkv * dh, qw,
                                        cs[ci].n_seq, start, cs[ci].len, H, Hkv, dh, scale));
        double mag = 0, l = dot(u, jz, rows * zw, &mag), r = dot(ju, dqkv, rows * qw, &mag);
        char nm[64];
        snprintf(nm, sizeof nm, "attention H%lld Hkv%lld dh%lld", (long long)H, (long long)Hkv, (long long)dh);
        CHECK(adjoint_ok(nm, l, r, mag));
        free(qkv), free(dqkv), free(u), free(jz), free(ju);
    }
    /* GQA heads that do not divide are refused */
    float none[1] = {0};
    int64_t s0 = 0, l1 = 1;
    CHECK_ERR(be->attention_jvp(be, none, none, none, none, 1, none, none, none, 1, 1, &s0, &l1, 3, 2, 1, 1.f),
              SS_ERR_ARG, "attention_jvp: 2 key/value heads do not divide 3 heads");
}

/* ---- the whole forward-mode pass (ss_jvp_logprob) against backward passes of the prefixes ---- */

#include "subscope/backward.h"
#include "subscope/masks.h"

typedef struct {
    float *rows[256];
} kept;

static ss_status keep_rows(void *vctx, const ss_site *s, float *data, int64_t ld, const ss_packing *pk,
                           const int64_t *pattern_off) {
    (void)pattern_off;
    kept *k = vctx;
    if (s->id >= 256) return SS_OK;
    float *c = malloc((size_t)(pk->rows * s->width) * sizeof(float));
    if (!c) return SS_ERR_NOMEM;
    for (int64_t i = 0; i < pk->rows; i++) memcpy(c + i * s->width, data + i * ld, (size_t)s->width * sizeof(float));
    free(k->rows[s->id]);
    k->rows[s->id] = c;
    return SS_OK;
}

/* For the test models of both families (GPT-2 with and without a tied head; Llama with
 * llama3 rotary scaling and grouped heads, head size 6 with q/k/v and MLP biases, Qwen2's
 * biases with a tied head, Mistral), one sub-model per per-token site (units 0, 1 and 3 at
 * positions 1 and 4) and one over three sites at every position: ss_jvp_logprob's tangent of
 * log p(target_t) at every t equals the sum over the covered units at positions <= t of
 * activation x gradient from a backward pass of each prefix (all n prefixes packed in one
 * batch), within 1e-6 + 1e-4 of the sum of the terms' magnitudes (the same products in fp32
 * through every layer in another order: measured up to 1.5e-5 of it on rotated q, and 1e-8 on
 * values of 2e-6 whose gradients cancel), as test_trace.sh's comparison; and its log p
 * equals the backward pass's metric (1e-5 relative). Tokens are given as ids: these models have no
 * tokenizer, which the CLI's trace needs (tests/cli/test_trace.sh has the CLI's checks). */
TEST(jvp_logprob_equals_prefix_backward_passes) {
    const char *names[] = {"prefix-f32", "noprefix-odd-untied", "llama-gqa-llama3", "llama-hd6-bias", "qwen2-bias-tied",
                           "mistral-small"};
    static const int32_t toks[9] = {5, 17, 3, 60, 0, 44, 12, 12, 7};
    const int64_t n = 9;
    for (int mi = 0; mi < 6; mi++) {
        char dir[512];
        snprintf(dir, sizeof dir, "%s/models/%s", ss_test_data_dir(), names[mi]);
        ss_model *m = NULL;
        CHECK_OK(ss_model_load(dir, &m));
        if (!m) return;
        const ss_config *c = &m->cfg;
        const int ns = ss_sites_count(c);
        CHECK(ns <= 256);
        int32_t targets[9];
        for (int64_t t = 0; t < n; t++) targets[t] = (int32_t)((toks[(t + 1) % n] * 7 + 3) % c->vocab_size);
        /* the sub-models */
        ss_mask masks[64];
        ss_mask_target tg[64 + 3];
        int64_t units[3] = {0, 1, 3}, pos[2] = {1, 4};
        int nm = 0;
        uint8_t *want = calloc((size_t)ns, 1);
        for (int i = 0; i < ns && nm < 63; i++) {
            ss_site s;
            ss_site_get(c, i, &s);
            if (!s.per_token) continue;
            want[i] = 1;
            tg[nm] = (ss_mask_target){i, units, 3};
            masks[nm] = (ss_mask){.targets = &tg[nm], .n_targets = 1, .positions = pos, .n_positions = 2};
            snprintf(masks[nm].name, sizeof masks[nm].name, "%s", s.name);
            nm++;
        }
        tg[nm] = (ss_mask_target){ss_site_id(c, SS_SITE_Q, 0), NULL, 0};
        tg[nm + 1] = (ss_mask_target){ss_site_id(c, SS_SITE_MLP_POST, 0), units, 3};
        tg[nm + 2] = (ss_mask_target){ss_site_id(c, SS_SITE_RESID_PRE, c->n_layer - 1), NULL, 0};
        masks[nm] = (ss_mask){.name = "three", .targets = &tg[nm], .n_targets = 3};
        nm++;
        double *out = calloc((size_t)(n * nm), sizeof(double)), lp[9];
        CHECK_OK(ss_jvp_check(m, ss_backend_cpu(), masks, nm));
        CHECK_OK(ss_jvp_logprob(m, ss_backend_cpu(), toks, n, targets, masks, nm, out, lp, NULL, NULL));
        /* the prefixes 1..n packed, each scored at its last position */
        int64_t start[9], len[9], rows = 0;
        int32_t packed[45];
        for (int64_t s = 0; s < n; s++) {
            start[s] = rows, len[s] = s + 1;
            memcpy(packed + rows, toks, (size_t)(s + 1) * sizeof(int32_t));
            rows += s + 1;
        }
        ss_packing pk = {n, rows, start, len, 0};
        kept acts = {{0}}, grads = {{0}};
        ss_forward_opts fo = {.want = want, .hook = keep_rows, .hook_ctx = &acts, .read_only = 1};
        ss_grad_opts go = {.want = want, .hook = keep_rows, .hook_ctx = &grads};
        ss_metric mt = {SS_METRIC_LOGPROB, targets, NULL};
        double metric[9];
        CHECK_OK(ss_forward_backward(m, ss_backend_cpu(), packed, &pk, &fo, &mt, &go, metric));
        int bad = 0;
        for (int k = 0; k < nm; k++)
            for (int64_t s = 0; s < n; s++) {
                double ref = 0, mag = 1e-6;
                for (int q = 0; q < masks[k].n_targets; q++) {
                    ss_site si;
                    ss_site_get(c, masks[k].targets[q].site_id, &si);
                    const int64_t nu = masks[k].targets[q].n_units ? masks[k].targets[q].n_units : si.width;
                    for (int64_t t = 0; t <= s; t++) {
                        if (masks[k].n_positions && t != 1 && t != 4) continue;
                        const float *a = acts.rows[si.id] + (start[s] + t) * si.width,
                                    *g = grads.rows[si.id] + (start[s] + t) * si.width;
                        for (int64_t j = 0; j < nu; j++) {
                            const int64_t u = masks[k].targets[q].n_units ? masks[k].targets[q].units[j] : j;
                            ref += (double)a[u] * g[u], mag += fabs((double)a[u] * g[u]);
                        }
                    }
                }
                if (!(fabs(out[s * nm + k] - ref) <= 1e-6 + 1e-4 * mag)) {
                    if (bad++ < 5)
                        printf("\n    %s, sub-model %s, position %lld: forward mode %.9g, prefixes %.9g (magnitude %.3g)",
                               names[mi], masks[k].name, (long long)s, out[s * nm + k], ref, mag);
                }
            }
        for (int64_t s = 0; s < n; s++)
            if (!(fabs(lp[s] - metric[s]) <= 1e-5 * (1 + fabs(metric[s])))) bad++;
        CHECK_MSG(bad == 0, "%s: %d values differ", names[mi], bad);
        for (int i = 0; i < 256; i++) free(acts.rows[i]), free(grads.rows[i]);
        free(out), free(want);
        ss_model_free(m);
    }
}

/* Targets outside the vocabulary are refused naming the position. */
TEST(jvp_logprob_refuses_a_target_outside_the_vocabulary) {
    char dir[512];
    snprintf(dir, sizeof dir, "%s/models/prefix-f32", ss_test_data_dir());
    ss_model *m = NULL;
    CHECK_OK(ss_model_load(dir, &m));
    if (!m) return;
    int32_t toks[3] = {1, 2, 3}, targets[3] = {4, (int32_t)m->cfg.vocab_size, 5};
    int64_t units[1] = {0};
    ss_mask_target tg = {ss_site_id(&m->cfg, SS_SITE_MLP_POST, 0), units, 1};
    ss_mask mk = {.name = "m", .targets = &tg, .n_targets = 1};
    double out[3];
    CHECK_ERR(ss_jvp_logprob(m, ss_backend_cpu(), toks, 3, targets, &mk, 1, out, NULL, NULL, NULL), SS_ERR_ARG,
              "target 97 at position 1 is outside the vocabulary");
    ss_model_free(m);
}

/* The same pass on the CUDA backend (emulated: the kernels norm_jvp, swiglu_jvp and
 * attention_jvp, cuBLAS's products, the seeds through host copies) against the CPU's, on
 * GPT-2, the grouped-query Llama with llama3 rotary scaling and the one with biases and heads
 * of 6 (three of the six above: the emulation is slow), with a sub-model per per-token site
 * (units 0, 1, 3; positions 1, 4): 2e-5 +
 * 1e-4 relative, as the emulated plugin's other comparisons with the CPU (products summed in
 * another order). */
TEST(cuda_jvp_logprob_equals_cpu) {
    const char *names[] = {"prefix-f32", "llama-gqa-llama3", "llama-hd6-bias"};
    static const int32_t toks[7] = {5, 17, 3, 60, 0, 44, 12};
    const int64_t n = 7;
    ss_backend *gpu = NULL;
    CHECK_OK(ss_backend_cuda_open(0, NULL, &gpu));
    if (!gpu) return;
    for (int mi = 0; mi < 3; mi++) {
        char dir[512];
        snprintf(dir, sizeof dir, "%s/models/%s", ss_test_data_dir(), names[mi]);
        ss_model *m = NULL;
        CHECK_OK(ss_model_load(dir, &m));
        if (!m) break;
        ss_status st = ss_model_place(m, gpu, SS_WDTYPE_F32);
        if (st) {
            ss_model_free(m);
            CHECK_OK(st);
            break;
        }
        const ss_config *c = &m->cfg;
        const int ns = ss_sites_count(c);
        int32_t targets[7];
        for (int64_t t = 0; t < n; t++) targets[t] = (int32_t)((toks[(t + 2) % n] * 5 + 1) % c->vocab_size);
        ss_mask masks[64];
        ss_mask_target tg[64];
        int64_t units[3] = {0, 1, 3}, pos[2] = {1, 4};
        int nm = 0;
        for (int i = 0; i < ns && nm < 64; i++) {
            ss_site s;
            ss_site_get(c, i, &s);
            if (!s.per_token) continue;
            tg[nm] = (ss_mask_target){i, units, 3};
            masks[nm] = (ss_mask){.targets = &tg[nm], .n_targets = 1, .positions = pos, .n_positions = 2};
            snprintf(masks[nm].name, sizeof masks[nm].name, "%s", s.name);
            nm++;
        }
        double *a = calloc((size_t)(n * nm), sizeof(double)), *b = calloc((size_t)(n * nm), sizeof(double));
        CHECK_OK(ss_jvp_logprob(m, ss_backend_cpu(), toks, n, targets, masks, nm, a, NULL, NULL, NULL));
        CHECK_OK(ss_jvp_logprob(m, gpu, toks, n, targets, masks, nm, b, NULL, NULL, NULL));
        int bad = 0;
        double big = 0;
        for (int64_t i = 0; i < n * nm; i++) {
            if (fabs(a[i]) > big) big = fabs(a[i]);
            if (!(fabs(a[i] - b[i]) <= 2e-5 + 1e-4 * fabs(a[i])) && bad++ < 5)
                printf("\n    %s, %s, position %lld: cpu %.9g, cuda %.9g", names[mi], masks[i % nm].name,
                       (long long)(i / nm), a[i], b[i]);
        }
        CHECK_MSG(bad == 0 && big > 1e-2, "%s: %d values differ (largest |value| %.3g)", names[mi], bad, big);
        free(a), free(b);
        ss_model_free(m);
    }
    ss_backend_cuda_close(gpu);
}
