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
