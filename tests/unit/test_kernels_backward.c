/* The backward ops of the CUDA backend (src/backend/cuda_backend.c and
 * kernels/{sum_rows,layernorm_backward,rmsnorm_backward,gelu_backward,
 * swiglu_backward,attention_backward,embed_backward,softmax_xent}.cu,
 * cuBLAS for matmul_tn), and the backend entries of the Llama forward ops
 * (rmsnorm, rope, swiglu, embed without positions), run through the
 * emulated runtime/cuBLAS/kernels, against the CPU backend's ops and
 * against double-precision loops written here from the math (two
 * independent references: the CPU ops are themselves new).
 *
 * Every comparison passes when |got - ref| <= atol + rtol*|ref| elementwise
 * and prints the NMSE sum((got-ref)^2)/sum(ref^2) and the largest error; the
 * tolerance of each op is given and justified where it is checked. Every
 * case runs twice, emulated threads resumed in forward and in reverse
 * order, and the two results must be bitwise equal (a missing barrier or an
 * order-dependent reduction shows up), except embed_backward, whose float
 * atomics are order-dependent by design. Accumulating outputs start from
 * non-zero values, overwritten ones from NaN (an unwritten element fails).
 * Shapes are small: every emulated thread is a fiber. */
#include <stdlib.h>

#include "../../kernels/emu/cuda_emu.h"
#include "subscope/backend.h"
#include "subscope/cuda_kernels.h"
#include "test.h"

static float *dupv(const float *x, int64_t n) {
    float *v = ss_test_fvec(n, 0);
    memcpy(v, x, (size_t)n * sizeof(float));
    return v;
}

/* ---- running an op on the emulated device ------------------------------ */

static ss_backend *g_gpu;

static const ss_backend *gpu(void) {
    if (!g_gpu && ss_backend_cuda_open(0, NULL, &g_gpu)) return NULL;
    return g_gpu;
}

/* A second emulated GPU whose attention_backward always recomputes the
 * probabilities (SUBSCOPE_ATTN_BWD_WORKSPACE_MB=0 when it is opened). */
static ss_backend *g_gpu_rc;
static const ss_backend *gpu_rc(void) {
    if (!g_gpu_rc) {
        setenv("SUBSCOPE_ATTN_BWD_WORKSPACE_MB", "0", 1);
        ss_status st = ss_backend_cuda_open(0, NULL, &g_gpu_rc);
        unsetenv("SUBSCOPE_ATTN_BWD_WORKSPACE_MB");
        if (st) return NULL;
    }
    return g_gpu_rc;
}

/* A third whose attention_backward goes through cuBLAS for every length
 * (SUBSCOPE_ATTN_GEMM_MIN_LEN=1), with a workspace of 0.05 MB (13107
 * floats: one head's P and dS at 70 tokens, three at 45), so that heads go
 * in batches of one to three. */
static ss_backend *g_gpu_gemm;
static const ss_backend *gpu_gemm(void) {
    if (!g_gpu_gemm) {
        setenv("SUBSCOPE_ATTN_GEMM_MIN_LEN", "1", 1);
        setenv("SUBSCOPE_ATTN_BWD_WORKSPACE_MB", "0.05", 1);
        ss_status st = ss_backend_cuda_open(0, NULL, &g_gpu_gemm);
        unsetenv("SUBSCOPE_ATTN_GEMM_MIN_LEN");
        unsetenv("SUBSCOPE_ATTN_BWD_WORKSPACE_MB");
        if (st) return NULL;
    }
    return g_gpu_gemm;
}

__attribute__((destructor)) static void close_gpu(void) {
    ss_backend_cuda_close(g_gpu);
    ss_backend_cuda_close(g_gpu_rc);
    ss_backend_cuda_close(g_gpu_gemm);
}

static void *dev_put(const void *h, size_t bytes) {
    const ss_backend *be = gpu();
    void *d = NULL;
    if (!be || be->alloc(be, bytes, "test buffer", &d)) return NULL;
    if (h && be->upload(be, d, h, bytes)) return NULL;
    return d;
}

static void dev_free(void *d) {
    if (d) gpu()->release(gpu(), d);
}

/* A device output: its initial contents (NULL: NaN), its size in floats,
 * and the host array that receives the result of the first run. */
typedef struct {
    float *dev;
    const float *init;
    int64_t n;
    float *got;
} dout;

typedef ss_status (*op_fn)(void *ctx);

/* Runs the op in forward and reverse thread order from the same initial
 * outputs; the results must agree bitwise when `same` is set. Returns 0
 * when both runs succeeded (and agreed). */
static int run_both(op_fn fn, void *ctx, dout *o, int no, int same) {
    const ss_backend *be = gpu();
    int ok = 1;
    for (int pass = 0; pass < 2 && ok; pass++) {
        for (int i = 0; i < no; i++) {
            float *init = o[i].init ? dupv(o[i].init, o[i].n) : ss_test_fvec(o[i].n, NAN);
            ss_status st = be->upload(be, o[i].dev, init, (size_t)o[i].n * sizeof(float));
            free(init);
            if (st) return 0;
        }
        ss_emu_set_schedule(pass ? SS_EMU_REVERSE : SS_EMU_FORWARD, 0);
        ss_status st = fn(ctx);
        ss_emu_set_schedule(SS_EMU_FORWARD, 0);
        if (st) {
            printf("\n    op failed: %s", ss_last_error());
            return 0;
        }
        if (be->sync(be)) return 0;
        for (int i = 0; i < no; i++) {
            float *dst = pass ? ss_test_fvec(o[i].n, 0) : o[i].got;
            if (be->download(be, dst, o[i].dev, (size_t)o[i].n * sizeof(float))) return 0;
            if (pass) {
                if (same && memcmp(dst, o[i].got, (size_t)o[i].n * sizeof(float))) ok = 0;
                free(dst);
            }
        }
    }
    if (!ok) printf("\n    results differ between forward and reverse thread order");
    return ok;
}

/* ---- zero, matmul_tn, sum_rows ----------------------------------------- */

TEST(cuda_bwd_zero) {
    const ss_backend *be = gpu();
    CHECK(be && be->zero);
    unsigned char h[52], g[52];
    for (int i = 0; i < 52; i++) h[i] = (unsigned char)(i + 1);
    unsigned char *d = dev_put(h, sizeof h);
    CHECK(d);
    CHECK_OK(be->zero(be, d + 4, 30)); /* a byte count that is not a whole number of floats */
    CHECK_OK(be->zero(be, d, 0));
    CHECK_OK(be->download(be, g, d, sizeof g));
    for (int i = 0; i < 52; i++) CHECK_MSG(g[i] == (i >= 4 && i < 34 ? 0 : h[i]), "byte %d is %d", i, g[i]);
    dev_free(d);
}

typedef struct { float *C; const float *A, *B; int64_t M, N, K; int acc; } mtn_ctx;
static ss_status op_mtn(void *v) {
    mtn_ctx *c = v;
    return gpu()->matmul_tn(gpu(), c->C, c->A, c->B, c->M, c->N, c->K, c->acc);
}

/* matmul_tn and sum_rows: fp32 sums of M products of values in [-1,1]
 * against double; |C| ~ sqrt(M)/3 and the fp32 error of a length-M sum is
 * below M * 2^-24 * sum|a b| <= 1e-5 for M <= 80: atol 2e-5 + rtol 1e-5. */
TEST(cuda_bwd_matmul_tn_vs_reference) {
    const ss_backend *be = gpu(), *cpu = ss_backend_cpu();
    CHECK(be && be->matmul_tn);
    int64_t shapes[][3] = {{1, 1, 1}, {7, 33, 5}, {64, 48, 40}, {80, 3, 130}, {0, 4, 6}};
    for (int si = 0; si < 5; si++)
        for (int acc = 0; acc < 2; acc++) {
            int64_t M = shapes[si][0], N = shapes[si][1], K = shapes[si][2];
            float *A = ss_test_rvec(M * K + 1, 1, 1.f), *B = ss_test_rvec(M * N + 1, 2, 1.f), *C0 = ss_test_rvec(K * N, 3, 1.f);
            float *ref = ss_test_fvec(K * N, 0), *got = ss_test_fvec(K * N, 0);
            for (int64_t k = 0; k < K; k++)
                for (int64_t n = 0; n < N; n++) {
                    double s = acc ? C0[k * N + n] : 0;
                    for (int64_t m = 0; m < M; m++) s += (double)A[m * K + k] * B[m * N + n];
                    ref[k * N + n] = (float)s;
                }
            float *dA = dev_put(A, (size_t)(M * K + 1) * 4), *dB = dev_put(B, (size_t)(M * N + 1) * 4),
                  *dC = dev_put(NULL, (size_t)(K * N) * 4);
            mtn_ctx c = {dC, dA, dB, M, N, K, acc};
            dout o = {dC, C0, K * N, got};
            CHECK(run_both(op_mtn, &c, &o, 1, 1));
            char nm[96];
            snprintf(nm, sizeof nm, "matmul_tn M=%lld N=%lld K=%lld %s", (long long)M, (long long)N, (long long)K,
                     acc ? "accumulate" : "overwrite");
            CHECK(ss_test_compare(nm, got, ref, K * N, 2e-5, 1e-5) == 0);
            if (cpu->matmul_tn) {
                float *cc = dupv(C0, K * N);
                CHECK_OK(cpu->matmul_tn(cpu, cc, A, B, M, N, K, acc));
                snprintf(nm, sizeof nm, "  vs cpu op");
                CHECK(ss_test_compare(nm, got, cc, K * N, 2e-5, 1e-5) == 0);
                free(cc);
            }
            dev_free(dA), dev_free(dB), dev_free(dC);
            free(A), free(B), free(C0), free(ref), free(got);
        }
}

typedef struct { float *out; const float *x; int64_t M, N; } sr_ctx;
static ss_status op_sr(void *v) {
    sr_ctx *c = v;
    return gpu()->sum_rows(gpu(), c->out, c->x, c->M, c->N);
}

TEST(cuda_bwd_sum_rows_vs_reference) {
    const ss_backend *be = gpu(), *cpu = ss_backend_cpu();
    CHECK(be && be->sum_rows);
    int64_t shapes[][2] = {{1, 1}, {1, 33}, {7, 100}, {300, 37}, {9, 64}};
    for (int si = 0; si < 5; si++) {
        int64_t M = shapes[si][0], N = shapes[si][1];
        float *x = ss_test_rvec(M * N, 4, 1.1f), *o0 = ss_test_rvec(N, 5, 1.f), *ref = ss_test_fvec(N, 0), *got = ss_test_fvec(N, 0);
        for (int64_t n = 0; n < N; n++) {
            double s = o0[n];
            for (int64_t m = 0; m < M; m++) s += x[m * N + n];
            ref[n] = (float)s;
        }
        float *dx = dev_put(x, (size_t)(M * N) * 4), *dout_ = dev_put(NULL, (size_t)N * 4);
        sr_ctx c = {dout_, dx, M, N};
        dout o = {dout_, o0, N, got};
        CHECK(run_both(op_sr, &c, &o, 1, 1));
        char nm[96];
        snprintf(nm, sizeof nm, "sum_rows %lldx%lld (+= into non-zero)", (long long)M, (long long)N);
        CHECK(ss_test_compare(nm, got, ref, N, 2e-5, 1e-5) == 0);
        if (cpu->sum_rows) {
            float *cc = dupv(o0, N);
            CHECK_OK(cpu->sum_rows(cpu, cc, x, M, N));
            CHECK(ss_test_compare("  vs cpu op", got, cc, N, 2e-5, 1e-5) == 0);
            free(cc);
        }
        dev_free(dx), dev_free(dout_);
        free(x), free(o0), free(ref), free(got);
    }
}

/* ---- attr_product, seq_sums (attribute on the device) ------------------- */

/* Both equal the CPU ops bit for bit: one fp32 subtraction and product per
 * element, fp64 sums in row order. Gradient rows strided (ldg > w, as a
 * site inside q|k|v is), every mode, sequences of length 0 and 1. */
TEST(cuda_attr_product_and_seq_sums_equal_the_cpu_ops) {
    const ss_backend *be = gpu(), *cpu = ss_backend_cpu();
    CHECK(be && be->attr_product && be->seq_sums && cpu->attr_product && cpu->seq_sums);
    int64_t shapes[][3] = {{1, 1, 1}, {7, 33, 33}, {300, 37, 45}, {65, 129, 200}};
    for (int si = 0; si < 4; si++) {
        const int64_t rows = shapes[si][0], w = shapes[si][1], ldg = shapes[si][2];
        float *g = ss_test_rvec(rows * ldg, 11, 2.f), *a = ss_test_rvec(rows * w, 12, 3.f), *c = ss_test_rvec(rows * w, 13, 3.f);
        float *dg = dev_put(g, (size_t)(rows * ldg) * 4), *da = dev_put(a, (size_t)(rows * w) * 4),
              *dc = dev_put(c, (size_t)(rows * w) * 4), *dout_ = dev_put(NULL, (size_t)(rows * w) * 4);
        float *ref = ss_test_fvec(rows * w, 0), *got = ss_test_fvec(rows * w, 0);
        for (int mode = 0; mode < 3; mode++) { /* gradient, gradient x activation, attribution patching */
            const float *ha = mode ? a : NULL, *hc = mode == 2 ? c : NULL;
            CHECK_OK(cpu->attr_product(cpu, ref, g, ldg, ha, hc, rows, w));
            CHECK_OK(be->attr_product(be, dout_, dg, ldg, mode ? da : NULL, mode == 2 ? dc : NULL, rows, w));
            CHECK_OK(be->download(be, got, dout_, (size_t)(rows * w) * 4));
            CHECK_MSG(!memcmp(got, ref, (size_t)(rows * w) * 4), "attr_product %lldx%lld ldg %lld mode %d differs",
                      (long long)rows, (long long)w, (long long)ldg, mode);
            if (mode == 2) { /* the arithmetic itself, against the plain expression */
                int ok = 1;
                for (int64_t r = 0; r < rows; r++)
                    for (int64_t u = 0; u < w; u++) ok &= ref[r * w + u] == (c[r * w + u] - a[r * w + u]) * g[r * ldg + u];
                CHECK(ok);
            }
        }
        /* sequences over the rows: lengths 0, 1 and the rest */
        int64_t start[4] = {0, 0, rows > 1 ? 1 : 0, rows > 1 ? 1 : 0}, len[4] = {0, rows > 0, rows > 1 ? rows - 1 : 0, 0};
        int64_t *dst = dev_put(start, sizeof start), *dln = dev_put(len, sizeof len);
        double *dsum = dev_put(NULL, (size_t)(4 * w) * sizeof(double));
        double *sref = calloc((size_t)(4 * w), sizeof(double)), *sgot = calloc((size_t)(4 * w), sizeof(double));
        CHECK_OK(cpu->seq_sums(cpu, sref, ref, w, 4, start, len));
        CHECK_OK(be->seq_sums(be, dsum, dout_, w, 4, dst, dln));
        CHECK_OK(be->download(be, sgot, dsum, (size_t)(4 * w) * sizeof(double)));
        CHECK_MSG(!memcmp(sgot, sref, (size_t)(4 * w) * sizeof(double)), "seq_sums %lldx%lld differ", (long long)rows,
                  (long long)w);
        double direct = 0;
        for (int64_t t = 0; t < len[2]; t++) direct += ref[(start[2] + t) * w + w - 1];
        CHECK(sref[2 * w + w - 1] == direct && sref[0] == 0 && sref[3 * w] == 0);
        dev_free(dst), dev_free(dln), dev_free(dsum), free(sref), free(sgot);
        dev_free(dg), dev_free(da), dev_free(dc), dev_free(dout_);
        free(g), free(a), free(c), free(ref), free(got);
    }
}

/* ---- ig_point, ig_add, ig_attr (integrated gradients on the device) ---- */

/* All three equal the CPU ops bit for bit, with and without a baseline,
 * on strided rows (ldx > w); the CPU ops equal the plain expressions, and
 * the path's ends are the baseline (alpha 0) and the clean rows (alpha 1). */
TEST(cuda_ig_ops_equal_the_cpu_ops) {
    const ss_backend *be = gpu(), *cpu = ss_backend_cpu();
    CHECK(be && be->ig_point && be->ig_add && be->ig_attr && cpu->ig_point && cpu->ig_add && cpu->ig_attr);
    int64_t shapes[][3] = {{1, 1, 1}, {7, 33, 40}, {300, 37, 37}, {65, 129, 200}};
    for (int si = 0; si < 4; si++) {
        const int64_t rows = shapes[si][0], w = shapes[si][1], ld = shapes[si][2], n = rows * w;
        float *clean = ss_test_rvec(n, 21, 3.f), *g = ss_test_rvec(rows * ld, 22, 2.f), *x = ss_test_fvec(rows * ld, 0);
        float *got = ss_test_fvec(rows * ld, 0), *attr = ss_test_fvec(n, 0), *gattr = ss_test_fvec(n, 0);
        double *base = malloc((size_t)w * sizeof(double)), *sum = calloc((size_t)n, sizeof(double)),
               *gsum = calloc((size_t)n, sizeof(double));
        for (int64_t u = 0; u < w; u++) base[u] = 0.1 * (double)u - 0.7;
        float *dclean = dev_put(clean, (size_t)n * 4), *dg = dev_put(g, (size_t)(rows * ld) * 4),
              *dx = dev_put(x, (size_t)(rows * ld) * 4), *dattr = dev_put(NULL, (size_t)n * 4);
        double *dbase = dev_put(base, (size_t)w * sizeof(double)), *dsum = dev_put(sum, (size_t)n * sizeof(double));
        for (int wb = 0; wb < 2; wb++) {
            const double *hb = wb ? base : NULL, *db = wb ? dbase : NULL;
            const double alphas[3] = {0, 0.3125, 1};
            for (int ai = 0; ai < 3; ai++) {
                CHECK_OK(cpu->ig_point(cpu, x, ld, clean, hb, alphas[ai], rows, w));
                CHECK_OK(be->ig_point(be, dx, ld, dclean, db, alphas[ai], rows, w));
                CHECK_OK(be->download(be, got, dx, (size_t)(rows * ld) * 4));
                CHECK_MSG(!memcmp(got, x, (size_t)(rows * ld) * 4), "ig_point %lldx%lld ld %lld alpha %g base %d differs",
                          (long long)rows, (long long)w, (long long)ld, alphas[ai], wb);
                int ends = 1;
                for (int64_t r = 0; r < rows && ai != 1; r++)
                    for (int64_t u = 0; u < w; u++)
                        ends &= x[r * ld + u] == (ai == 2 ? clean[r * w + u] : (float)(hb ? hb[u] : 0.0));
                CHECK_MSG(ends, "ig_point alpha %g is not the path's end", alphas[ai]);
                /* a step's gradient into the sums (three steps, so the sums carry) */
                CHECK_OK(cpu->ig_add(cpu, sum, g, ld, rows, w));
                CHECK_OK(be->ig_add(be, dsum, dg, ld, rows, w));
            }
            CHECK_OK(be->download(be, gsum, dsum, (size_t)n * sizeof(double)));
            CHECK_MSG(!memcmp(gsum, sum, (size_t)n * sizeof(double)), "ig_add %lldx%lld differs", (long long)rows,
                      (long long)w);
            int sums = 1;
            for (int64_t r = 0; r < rows; r++)
                for (int64_t u = 0; u < w; u++) sums &= sum[r * w + u] == (double)g[r * ld + u] * 3 * (wb + 1);
            CHECK(sums);
            CHECK_OK(cpu->ig_attr(cpu, attr, clean, hb, sum, 7, rows, w));
            CHECK_OK(be->ig_attr(be, dattr, dclean, db, dsum, 7, rows, w));
            CHECK_OK(be->download(be, gattr, dattr, (size_t)n * 4));
            CHECK_MSG(!memcmp(gattr, attr, (size_t)n * 4), "ig_attr %lldx%lld base %d differs", (long long)rows,
                      (long long)w, wb);
            int plain = 1;
            for (int64_t r = 0; r < rows; r++)
                for (int64_t u = 0; u < w; u++) {
                    const int64_t i = r * w + u;
                    plain &= attr[i] == (float)(((double)clean[i] - (hb ? hb[u] : 0.0)) * sum[i] / 7);
                }
            CHECK(plain);
        }
        dev_free(dclean), dev_free(dg), dev_free(dx), dev_free(dattr), dev_free(dbase), dev_free(dsum);
        free(clean), free(g), free(x), free(got), free(attr), free(gattr), free(base), free(sum), free(gsum);
    }
}

/* ---- layernorm_backward ------------------------------------------------ */

static void ln_bwd_ref(float *dx, float *dw, float *db, const float *dy, const float *x, const float *w, int64_t rows,
                       int64_t d, float eps) {
    double *xh = malloc((size_t)d * sizeof(double));
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * d, *gr = dy + r * d;
        double mean = 0, var = 0, mg = 0, mgx = 0;
        for (int64_t i = 0; i < d; i++) mean += xr[i];
        mean /= (double)d;
        for (int64_t i = 0; i < d; i++) var += (xr[i] - mean) * (xr[i] - mean);
        double rstd = 1.0 / sqrt(var / (double)d + eps);
        for (int64_t i = 0; i < d; i++) {
            xh[i] = (xr[i] - mean) * rstd;
            mg += (double)gr[i] * w[i];
            mgx += (double)gr[i] * w[i] * xh[i];
        }
        mg /= (double)d, mgx /= (double)d;
        for (int64_t i = 0; i < d; i++) {
            if (dx) dx[r * d + i] = (float)(dx[r * d + i] + rstd * ((double)gr[i] * w[i] - mg - xh[i] * mgx));
            if (dw) dw[i] = (float)(dw[i] + (double)gr[i] * xh[i]);
            if (db) db[i] = (float)(db[i] + (double)gr[i]);
        }
    }
    free(xh);
}

typedef struct { float *dx, *dw, *db; const float *dy, *x, *w; int64_t rows, d; } lnb_ctx;
static ss_status op_lnb(void *v) {
    lnb_ctx *c = v;
    return gpu()->layernorm_backward(gpu(), c->dx, c->dw, c->db, c->dy, c->x, c->w, c->rows, c->d, 1e-5f);
}

/* dx: per row fp32 sums of d terms (warp trees) for mean, variance, mean(g)
 * and mean(g xhat) against double; rstd ~ 1.7 for x uniform in [-1,1]; the
 * row with a common offset of 100 loses ~100 * 2^-24 * rstd to the fp32
 * mean: atol 2e-5 + rtol 1e-4. dw/db: fp32 column sums of `rows` terms,
 * accumulated in fp32 onto a non-zero start (the double reference rounds
 * once per row, as the CPU op would): atol 2e-5 + rtol 1e-5. */
TEST(cuda_bwd_layernorm_vs_reference) {
    const ss_backend *be = gpu(), *cpu = ss_backend_cpu();
    CHECK(be && be->layernorm_backward);
    int64_t shapes[][2] = {{1, 1}, {1, 8}, {1, 33}, {5, 24}, {7, 100}, {9, 130}, {3, 768}};
    for (int si = 0; si < 7; si++)
        for (int with_w = 0; with_w < 2; with_w++) {
            int64_t rows = shapes[si][0], d = shapes[si][1], n = rows * d;
            float *x = ss_test_rvec(n, 6, 1.f), *dy = ss_test_rvec(n, 7, 1.1f), *w = ss_test_rvec(d, 8, 1.f);
            if (rows > 1)
                for (int64_t i = 0; i < d; i++) x[d + i] += 100.f; /* a large common offset in row 1 */
            float *dx0 = ss_test_rvec(n, 9, 1.f), *dw0 = ss_test_rvec(d, 10, 1.f), *db0 = ss_test_rvec(d, 11, 1.f);
            float *rdx = dupv(dx0, n), *rdw = dupv(dw0, d), *rdb = dupv(db0, d);
            ln_bwd_ref(rdx, with_w ? rdw : NULL, with_w ? rdb : NULL, dy, x, w, rows, d, 1e-5f);
            float *gdx = ss_test_fvec(n, 0), *gdw = ss_test_fvec(d, 0), *gdb = ss_test_fvec(d, 0);
            float *ddx = dev_put(NULL, (size_t)n * 4), *ddw = dev_put(NULL, (size_t)d * 4),
                  *ddb = dev_put(NULL, (size_t)d * 4), *ddy = dev_put(dy, (size_t)n * 4),
                  *dxx = dev_put(x, (size_t)n * 4), *dwt = dev_put(w, (size_t)d * 4);
            lnb_ctx c = {ddx, with_w ? ddw : NULL, with_w ? ddb : NULL, ddy, dxx, dwt, rows, d};
            dout o[3] = {{ddx, dx0, n, gdx}, {ddw, dw0, d, gdw}, {ddb, db0, d, gdb}};
            CHECK(run_both(op_lnb, &c, o, 3, 1));
            char nm[96];
            snprintf(nm, sizeof nm, "layernorm_backward %lldx%lld dx%s", (long long)rows, (long long)d,
                     with_w ? "" : " (dw, db NULL)");
            CHECK(ss_test_compare(nm, gdx, rdx, n, 2e-5, 1e-4) == 0);
            if (with_w) {
                CHECK(ss_test_compare("  dw", gdw, rdw, d, 2e-5, 1e-5) == 0);
                CHECK(ss_test_compare("  db", gdb, rdb, d, 2e-5, 1e-5) == 0);
            } else {
                CHECK(memcmp(gdw, dw0, (size_t)d * 4) == 0 && memcmp(gdb, db0, (size_t)d * 4) == 0);
            }
            if (cpu->layernorm_backward) {
                float *cdx = dupv(dx0, n), *cdw = dupv(dw0, d), *cdb = dupv(db0, d);
                CHECK_OK(cpu->layernorm_backward(cpu, cdx, with_w ? cdw : NULL, with_w ? cdb : NULL, dy, x, w, rows, d,
                                                 1e-5f));
                CHECK(ss_test_compare("  dx vs cpu op", gdx, cdx, n, 2e-5, 1e-4) == 0);
                CHECK(ss_test_compare("  dw vs cpu op", gdw, cdw, d, 2e-5, 1e-5) == 0);
                CHECK(ss_test_compare("  db vs cpu op", gdb, cdb, d, 2e-5, 1e-5) == 0);
                free(cdx), free(cdw), free(cdb);
            }
            dev_free(ddx), dev_free(ddw), dev_free(ddb), dev_free(ddy), dev_free(dxx), dev_free(dwt);
            free(x), free(dy), free(w), free(dx0), free(dw0), free(db0), free(rdx), free(rdw), free(rdb);
            free(gdx), free(gdw), free(gdb);
        }
}

/* ---- rmsnorm_backward, swiglu_backward --------------------------------- */

static void rms_bwd_ref(float *dx, float *dw, const float *dy, const float *x, const float *w, int64_t rows,
                        int64_t d, float eps) {
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * d, *gr = dy + r * d;
        double ss = 0, gx = 0;
        for (int64_t i = 0; i < d; i++) ss += (double)xr[i] * xr[i], gx += (double)gr[i] * w[i] * xr[i];
        double rstd = 1.0 / sqrt(ss / (double)d + eps), k = rstd * rstd * gx / (double)d;
        for (int64_t i = 0; i < d; i++) {
            if (dx) dx[r * d + i] = (float)(dx[r * d + i] + rstd * ((double)gr[i] * w[i] - xr[i] * k));
            if (dw) dw[i] = (float)(dw[i] + (double)gr[i] * xr[i] * rstd);
        }
    }
}

typedef struct { float *dx, *dw; const float *dy, *x, *w; int64_t rows, d; } rmsb_ctx;
static ss_status op_rmsb(void *v) {
    rmsb_ctx *c = v;
    return gpu()->rmsnorm_backward(gpu(), c->dx, c->dw, c->dy, c->x, c->w, c->rows, c->d, 1e-5f);
}

/* dx: per row fp32 sums of d terms (warp trees) for mean(x^2) and mean(g x)
 * against double: atol 2e-5 + rtol 1e-4, as layernorm_backward. dw: fp32
 * column sums of `rows` terms onto a non-zero start (8 row-strided partials
 * in a fixed order): atol 2e-5 + rtol 1e-5. Row 1 is offset by 100 (rstd
 * ~0.01). 40 rows exceed the column kernel's 8 row-striding warps. */
TEST(cuda_bwd_rmsnorm_vs_reference) {
    const ss_backend *be = gpu(), *cpu = ss_backend_cpu();
    CHECK(be && be->rmsnorm_backward);
    int64_t shapes[][2] = {{1, 1}, {1, 8}, {1, 33}, {5, 24}, {7, 100}, {9, 130}, {3, 768}, {40, 37}};
    for (int si = 0; si < 8; si++)
        for (int with_w = 0; with_w < 2; with_w++) {
            int64_t rows = shapes[si][0], d = shapes[si][1], n = rows * d;
            float *x = ss_test_rvec(n, 16, 1.f), *dy = ss_test_rvec(n, 17, 1.1f), *w = ss_test_rvec(d, 18, 1.f);
            if (rows > 1)
                for (int64_t i = 0; i < d; i++) x[d + i] += 100.f;
            float *dx0 = ss_test_rvec(n, 19, 1.f), *dw0 = ss_test_rvec(d, 20, 1.f);
            float *rdx = dupv(dx0, n), *rdw = dupv(dw0, d);
            rms_bwd_ref(rdx, with_w ? rdw : NULL, dy, x, w, rows, d, 1e-5f);
            float *gdx = ss_test_fvec(n, 0), *gdw = ss_test_fvec(d, 0);
            float *ddx = dev_put(NULL, (size_t)n * 4), *ddw = dev_put(NULL, (size_t)d * 4),
                  *ddy = dev_put(dy, (size_t)n * 4), *dxx = dev_put(x, (size_t)n * 4), *dwt = dev_put(w, (size_t)d * 4);
            rmsb_ctx c = {ddx, with_w ? ddw : NULL, ddy, dxx, dwt, rows, d};
            dout o[2] = {{ddx, dx0, n, gdx}, {ddw, dw0, d, gdw}};
            CHECK(run_both(op_rmsb, &c, o, 2, 1));
            char nm[96];
            snprintf(nm, sizeof nm, "rmsnorm_backward %lldx%lld dx%s", (long long)rows, (long long)d,
                     with_w ? "" : " (dw NULL)");
            CHECK(ss_test_compare(nm, gdx, rdx, n, 2e-5, 1e-4) == 0);
            if (with_w) CHECK(ss_test_compare("  dw", gdw, rdw, d, 2e-5, 1e-5) == 0);
            else CHECK(memcmp(gdw, dw0, (size_t)d * 4) == 0);
            float *cdx = dupv(dx0, n), *cdw = dupv(dw0, d);
            CHECK_OK(cpu->rmsnorm_backward(cpu, cdx, with_w ? cdw : NULL, dy, x, w, rows, d, 1e-5f));
            CHECK(ss_test_compare("  dx vs cpu op", gdx, cdx, n, 2e-5, 1e-4) == 0);
            CHECK(ss_test_compare("  dw vs cpu op", gdw, cdw, d, 2e-5, 1e-5) == 0);
            /* dw only (dx NULL) */
            if (with_w && si == 5) {
                rmsb_ctx c2 = {NULL, ddw, ddy, dxx, dwt, rows, d};
                dout o2 = {ddw, dw0, d, gdw};
                CHECK(run_both(op_rmsb, &c2, &o2, 1, 1));
                CHECK(ss_test_compare("  dw with dx NULL", gdw, rdw, d, 2e-5, 1e-5) == 0);
            }
            free(cdx), free(cdw);
            dev_free(ddx), dev_free(ddw), dev_free(ddy), dev_free(dxx), dev_free(dwt);
            free(x), free(dy), free(w), free(dx0), free(dw0), free(rdx), free(rdw), free(gdx), free(gdw);
        }
}

/* A workspace past size_t's bytes (2^62 rows: 2^62 floats, 2^64 bytes) is refused naming it;
 * its byte count wrapped to 0 before, a 1-byte block was taken as its 2^62 floats and kept
 * as the capacity of the next calls. The next call of a fitting size is right. */
TEST(cuda_bwd_workspace_past_size_t_is_refused) {
    const ss_backend *be = gpu(), *cpu = ss_backend_cpu();
    CHECK(be && be->rmsnorm_backward);
    if (!be) return;
    float none[1] = {0};
    CHECK_ERR(be->rmsnorm_backward(be, none, none, none, none, none, (int64_t)1 << 62, 1, 1e-5f), SS_ERR_NOMEM,
              "rmsnorm_backward workspace");
    CHECK(strstr(ss_last_error(), "4611686018427387904 floats"));
    const int64_t rows = 40, d = 37, n = rows * d;
    float *x = ss_test_rvec(n, 16, 1.f), *dy = ss_test_rvec(n, 17, 1.1f), *w = ss_test_rvec(d, 18, 1.f);
    float *gdx = ss_test_fvec(n, 0), *gdw = ss_test_fvec(d, 0), *cdx = ss_test_fvec(n, 0), *cdw = ss_test_fvec(d, 0);
    float *ddx = dev_put(gdx, (size_t)n * 4), *ddw = dev_put(gdw, (size_t)d * 4), *ddy = dev_put(dy, (size_t)n * 4),
          *dxx = dev_put(x, (size_t)n * 4), *dwt = dev_put(w, (size_t)d * 4);
    CHECK_OK(be->rmsnorm_backward(be, ddx, ddw, ddy, dxx, dwt, rows, d, 1e-5f));
    CHECK_OK(be->download(be, gdw, ddw, (size_t)d * 4));
    CHECK_OK(cpu->rmsnorm_backward(cpu, cdx, cdw, dy, x, w, rows, d, 1e-5f));
    CHECK(ss_test_compare("rmsnorm_backward dw after the refusal", gdw, cdw, d, 2e-5, 1e-5) == 0);
    dev_free(ddx), dev_free(ddw), dev_free(ddy), dev_free(dxx), dev_free(dwt);
    free(x), free(dy), free(w), free(gdx), free(gdw), free(cdx), free(cdw);
}

/* Workspace sizes that overflow int64 before cu_workspace sees them are refused naming the op and
 * the sizes: layernorm_backward's 2 x rows, attention_backward's (recomputing) 3 x rows x H past
 * size_t, and the rows' end, start + len (each a signed overflow before: 2^63 + 6 floats for the
 * attention's, refused by cu_workspace as if asked for). */
TEST(cuda_bwd_workspace_products_overflow_refused) {
    const ss_backend *be = gpu(), *rc = gpu_rc();
    CHECK(be && rc);
    if (!be || !rc) return;
    float none[1] = {0};
    CHECK_ERR(be->layernorm_backward(be, none, none, none, none, none, none, (int64_t)1 << 62, 1, 1e-5f), SS_ERR_NOMEM,
              "layernorm_backward: a workspace of 2 x 4611686018427387904 rows overflows");
    int64_t start = (int64_t)1 << 62, len = 1;
    CHECK_ERR(rc->attention_backward(rc, none, none, none, 4, none, none, none, none, 4, 1, &start, &len, 2, 2, 2, 1.f),
              SS_ERR_NOMEM, "attention_backward: row statistics of 3 x 4611686018427387905 rows x 2 heads overflow");
    start = INT64_MAX;
    CHECK_ERR(rc->attention_backward(rc, none, none, none, 4, none, none, none, none, 4, 1, &start, &len, 1, 1, 4, 1.f),
              SS_ERR_ARG, "attention_backward: sequence 0 (start 9223372036854775807, len 1) is outside rows");
}

/* A sequence outside the rows (a negative start or len, or start + len past INT64_MAX) is refused by
 * ss_attn_seqs_check, as the forward's are, before any row is read: through cuBLAS first (which checked
 * none: start -1 ran and returned ok, reading and writing the row before q and dq), then the kernels'
 * (which refused a negative len as "too long" and the others in a message of their own). q, k, v and
 * dq, dk, dv start a row into their buffers, so that row -1 is inside them. */
TEST(cuda_bwd_attention_refuses_sequences_outside_the_rows) {
    const ss_backend *paths[2] = {gpu_gemm(), gpu()};
    CHECK(paths[0] && paths[1]);
    if (!paths[0] || !paths[1]) return;
    const int64_t dh = 4, ld = 3 * dh;
    float *in = dev_put(NULL, (size_t)(8 * ld) * 4), *out = dev_put(NULL, (size_t)(4 * ld) * 4);
    CHECK(in && out);
    if (!in || !out) return;
    CHECK_OK(gpu()->zero(gpu(), in, (size_t)(8 * ld) * 4));
    float *q = in + ld, *dz = in + 5 * ld, *dq = out + ld;
    const int64_t bad[3][2] = {{-1, 2}, {1, -1}, {INT64_MAX - 1, 2}};
    const char *want[3] = {"attention_backward: sequence 1 (start -1, len 2) is outside rows 0..9223372036854775807",
                           "attention_backward: sequence 1 (start 1, len -1) is outside rows",
                           "attention_backward: sequence 1 (start 9223372036854775806, len 2) is outside rows"};
    for (int p = 0; p < 2; p++)
        for (int b = 0; b < 3; b++) {
            const ss_backend *be = paths[p];
            int64_t start[2] = {0, bad[b][0]}, len[2] = {1, bad[b][1]};
            CHECK_ERR(be->attention_backward(be, dq, dq + dh, dq + 2 * dh, ld, dz, q, q + dh, q + 2 * dh, ld, 2, start,
                                             len, 1, 1, dh, 0.5f),
                      SS_ERR_ARG, want[b]);
        }
    dev_free(in), dev_free(out);
}

typedef struct { float *dgu; const float *dy, *gu; int64_t rows, dm; } swb_ctx;
static ss_status op_swb(void *v) {
    swb_ctx *c = v;
    return gpu()->swiglu_backward(gpu(), c->dgu, c->dy, c->gu, c->rows, c->dm);
}

/* Against a double loop and the CPU op (itself double inside). Gates span
 * [-12, 12] plus -100 and 100 (exp overflow and underflow); fp32 sigmoid
 * with precise expf and 1 - s formed without cancellation: atol 1e-6 +
 * rtol 1e-5 (values O(1); near silu's minimum, g ~ -1.28, silu' crosses 0
 * and only the absolute error is small). dm = 300 and 513 leave partial
 * 256-column blocks. */
TEST(cuda_bwd_swiglu_vs_reference) {
    const ss_backend *be = gpu(), *cpu = ss_backend_cpu();
    CHECK(be && be->swiglu_backward);
    int64_t shapes[][2] = {{1, 1}, {3, 37}, {5, 300}, {2, 513}};
    for (int si = 0; si < 4; si++) {
        int64_t rows = shapes[si][0], dm = shapes[si][1], n = rows * dm;
        float *gu = ss_test_rvec(2 * n, 21 + (unsigned)si, 1.f), *dy = ss_test_rvec(n, 22, 1.1f);
        for (int64_t r = 0; r < rows; r++)
            for (int64_t c = 0; c < dm; c++) gu[r * 2 * dm + c] *= 12.f;
        if (dm > 2) gu[0] = -100.f, gu[1] = 100.f;
        float *ref = ss_test_fvec(2 * n, 0), *got = ss_test_fvec(2 * n, 0), *cc = ss_test_fvec(2 * n, NAN);
        for (int64_t r = 0; r < rows; r++)
            for (int64_t c = 0; c < dm; c++) {
                double g = gu[r * 2 * dm + c], u = gu[r * 2 * dm + dm + c], s = 1 / (1 + exp(-g));
                ref[r * 2 * dm + c] = (float)(dy[r * dm + c] * u * s * (1 + g * (1 - s)));
                ref[r * 2 * dm + dm + c] = (float)(dy[r * dm + c] * g * s);
            }
        float *dgu = dev_put(NULL, (size_t)(2 * n) * 4), *ddy = dev_put(dy, (size_t)n * 4),
              *dg = dev_put(gu, (size_t)(2 * n) * 4);
        swb_ctx c = {dgu, ddy, dg, rows, dm};
        dout o = {dgu, NULL, 2 * n, got};
        CHECK(run_both(op_swb, &c, &o, 1, 1));
        char nm[96];
        snprintf(nm, sizeof nm, "swiglu_backward %lldx%lld dgate,dup", (long long)rows, (long long)dm);
        CHECK(ss_test_compare(nm, got, ref, 2 * n, 1e-6, 1e-5) == 0);
        CHECK_OK(cpu->swiglu_backward(cpu, cc, dy, gu, rows, dm));
        CHECK(ss_test_compare("  vs cpu op", got, cc, 2 * n, 1e-6, 1e-5) == 0);
        dev_free(dgu), dev_free(ddy), dev_free(dg);
        free(gu), free(dy), free(ref), free(got), free(cc);
    }
}

/* ---- the Llama forward ops through the CUDA backend -------------------- */

typedef struct { int which; float *out, *out2; const float *in; const int32_t *ids, *pos; const float *w; } llf_ctx;
static ss_status op_llf(void *v) {
    llf_ctx *c = v;
    const ss_backend *be = gpu();
    switch (c->which) {
    case 0: return be->rmsnorm(be, c->out, c->in, c->w, 5, 33, 1e-5f);
    case 1: return be->rope(be, c->out, 40, 6, 3, 8, c->pos, c->w, 1);
    case 2: return be->swiglu(be, c->out, c->in, 3, 37);
    case 3: return be->embed(be, c->out, c->out2, c->ids, c->pos, c->w, NULL, SS_WDTYPE_F32, 4, 12);
    default: { /* grouped-query attention, H=4 Hkv=2 dh=6, sequences of 5 and 3 rows of [q|k|v] (ld 48) */
        static const int64_t start[2] = {0, 5}, len[2] = {5, 3}, poff[2] = {0, 100};
        return be->attention(be, c->out, c->in, c->in + 24, c->in + 36, 48, 2, start, len, 4, 2, 6, 0.4f,
                             c->which == 5 ? c->out2 : NULL, poff);
    }
    }
}

/* The backend's entries (not only the kernels) for rmsnorm, rope (inverse,
 * in rows wider than the rotated heads), swiglu, embed without a position
 * table and grouped-query attention: same tolerances as the kernel tests in
 * test_kernels.c.
 * The embedding must leave pos_out alone (NaN fill) when wpe is NULL. */
TEST(cuda_llama_forward_ops_through_backend) {
    const ss_backend *be = gpu(), *cpu = ss_backend_cpu();
    CHECK(be && be->rmsnorm && be->rope && be->swiglu);
    float *x = ss_test_rvec(384, 23, 1.f), *w = ss_test_rvec(50, 24, 1.f), *ref = ss_test_fvec(240, 0);
    float *got = ss_test_fvec(240, 0), *got2 = ss_test_fvec(240, 0);
    int32_t pos[6] = {0, 3, 4000, 17, 1, 100000}, ids[4] = {3, 0, 2, 3}; /* ids < 4: w holds 4 rows of 12 */
    float inv[4];
    for (int i = 0; i < 4; i++) inv[i] = (float)(1.0 / pow(10000.0, i / 4.0));
    float *dx = dev_put(x, 384 * 4), *dw = dev_put(w, 50 * 4), *dinv = dev_put(inv, sizeof inv),
          *dout_ = dev_put(NULL, 240 * 4), *dout2 = dev_put(NULL, 240 * 4);
    int32_t *dpos = dev_put(pos, sizeof pos), *dids = dev_put(ids, sizeof ids);
    llf_ctx c = {0, dout_, dout2, dx, dids, dpos, dw};
    dout o = {dout_, NULL, 165, got};
    CHECK(run_both(op_llf, &c, &o, 1, 1));
    CHECK_OK(cpu->rmsnorm(cpu, ref, x, w, 5, 33, 1e-5f));
    CHECK(ss_test_compare("backend rmsnorm 5x33", got, ref, 165, 1e-5, 1e-5) == 0);
    c.which = 1, c.w = dinv;
    o = (dout){dout_, x, 240, got};
    CHECK(run_both(op_llf, &c, &o, 1, 1));
    memcpy(ref, x, 240 * 4);
    CHECK_OK(cpu->rope(cpu, ref, 40, 6, 3, 8, pos, inv, 1));
    CHECK(ss_test_compare("backend rope inverse rows=6 heads=3 dh=8 ld=40", got, ref, 240, 1e-6, 1e-5) == 0);
    c.which = 2;
    o = (dout){dout_, NULL, 111, got};
    CHECK(run_both(op_llf, &c, &o, 1, 1));
    CHECK_OK(cpu->swiglu(cpu, ref, x, 3, 37));
    CHECK(ss_test_compare("backend swiglu 3x37", got, ref, 111, 1e-6, 1e-5) == 0);
    c.which = 3, c.w = dw;
    dout o2[2] = {{dout_, NULL, 48, got}, {dout2, NULL, 48, got2}};
    CHECK(run_both(op_llf, &c, o2, 2, 1));
    CHECK_OK(cpu->embed(cpu, ref, NULL, ids, NULL, w, NULL, SS_WDTYPE_F32, 4, 12));
    CHECK(ss_test_compare("backend embed, no position table", got, ref, 48, 0, 0) == 0);
    for (int i = 0; i < 48; i++) CHECK_MSG(isnan(got2[i]), "pos_out[%d] written without a position table", i);
    /* grouped-query attention through the backend: flash, then with the pattern */
    static const int64_t st2[2] = {0, 5}, ln2[2] = {5, 3}, po2[2] = {0, 100};
    float *patr = ss_test_fvec(136, 0);
    CHECK_OK(cpu->attention(cpu, ref, x, x + 24, x + 36, 48, 2, st2, ln2, 4, 2, 6, 0.4f, patr, po2));
    for (int flash = 1; flash >= 0; flash--) {
        c.which = flash ? 4 : 5, c.in = dx;
        dout o3[2] = {{dout_, NULL, 192, got}, {dout2, NULL, 136, got2}};
        CHECK(run_both(op_llf, &c, o3, flash ? 1 : 2, 1));
        CHECK(ss_test_compare(flash ? "backend attention (flash) H=4 Hkv=2" : "backend attention (pattern) H=4 Hkv=2 z",
                              got, ref, 192, 1e-5, 1e-4) == 0);
        if (!flash) CHECK(ss_test_compare("  pattern", got2, patr, 136, 1e-6, 1e-4) == 0);
    }
    free(patr);
    CHECK_ERR(be->attention(be, dout_, dx, dx, dx, 48, 2, st2, ln2, 4, 3, 6, 0.4f, NULL, NULL), SS_ERR_ARG, "attention");
    CHECK_ERR(be->rope(be, dout_, 40, 6, 3, 7, dpos, dinv, 0), SS_ERR_ARG, "rope");
    dev_free(dx), dev_free(dw), dev_free(dinv), dev_free(dout_), dev_free(dout2), dev_free(dpos), dev_free(dids);
    free(x), free(w), free(ref), free(got), free(got2);
}

/* ---- gelu_backward ----------------------------------------------------- */

static double gelu_grad_ref(double x, ss_act act) {
    if (act == SS_ACT_GELU_ERF) return 0.5 * (1 + erf(x / sqrt(2.0))) + x * exp(-0.5 * x * x) / sqrt(2 * 3.14159265358979323846);
    const double k = sqrt(2.0 / 3.14159265358979323846), c = 0.044715;
    double t = tanh(k * (x + c * x * x * x));
    return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * k * (1 + 3 * c * x * x);
}

typedef struct { float *dx; const float *dy, *x; int64_t n; ss_act act; } gb_ctx;
static ss_status op_gb(void *v) {
    gb_ctx *c = v;
    return gpu()->gelu_backward(gpu(), c->dx, c->dy, c->x, c->n, c->act);
}

/* One product of fp32 tanhf/erff/expf results (a few ulps each) with dy:
 * atol 1e-6 + rtol 1e-5. x spans [-6,6] so both tails (derivative -> 0
 * and -> 1, and the slight negative dip near -1.5) are covered. */
TEST(cuda_bwd_gelu_vs_reference) {
    const ss_backend *be = gpu(), *cpu = ss_backend_cpu();
    CHECK(be && be->gelu_backward);
    int64_t sizes[] = {1, 7, 1000, 4099};
    for (int si = 0; si < 4; si++)
        for (int act = SS_ACT_GELU_TANH; act <= SS_ACT_GELU_ERF; act++)
            for (int mode = 0; mode < 3; mode++) { /* aligned, misaligned view, in place (dx == dy) */
                int64_t n = sizes[si], mis = mode == 1;
                float *x = ss_test_rvec(n + 1, 12, 6.f), *dy = ss_test_rvec(n + 1, 13, 1.f), *ref = ss_test_fvec(n, 0), *got = ss_test_fvec(n, 0);
                for (int64_t i = 0; i < n; i++) ref[i] = (float)(dy[i + mis] * gelu_grad_ref(x[i + mis], (ss_act)act));
                float *dxx = dev_put(x, (size_t)(n + 1) * 4), *ddy = dev_put(dy, (size_t)(n + 1) * 4),
                      *ddx = dev_put(NULL, (size_t)(n + 1) * 4);
                gb_ctx c = {mode == 2 ? ddy : ddx + mis, ddy + mis, dxx + mis, n, (ss_act)act};
                /* in place, dy is the output and is re-uploaded before each run */
                dout o = mode == 2 ? (dout){ddy, dy, n, got} : (dout){ddx + mis, NULL, n, got};
                CHECK(run_both(op_gb, &c, &o, 1, 1));
                char nm[96];
                snprintf(nm, sizeof nm, "gelu_backward %s n=%lld%s", act == SS_ACT_GELU_ERF ? "erf" : "tanh",
                         (long long)n, mode == 1 ? " misaligned" : mode == 2 ? " in place" : "");
                CHECK(ss_test_compare(nm, got, ref, n, 1e-6, 1e-5) == 0);
                if (cpu->gelu_backward) {
                    float *cc = ss_test_fvec(n, 0);
                    CHECK_OK(cpu->gelu_backward(cpu, cc, dy + mis, x + mis, n, (ss_act)act));
                    CHECK(ss_test_compare("  vs cpu op", got, cc, n, 1e-6, 1e-5) == 0);
                    free(cc);
                }
                dev_free(dxx), dev_free(ddy), dev_free(ddx);
                free(x), free(dy), free(ref), free(got);
            }
}

/* ---- attention_backward ------------------------------------------------ */

/* Double-precision gradients from the definitions (backend.h): P from q,k;
 * dP = dz v^T; dS = P (dP - rowsum(P dP)); dq = scale dS k, dk = scale
 * dS^T q, dv = P^T dz. Query head h uses key/value head h / (H/Hkv); dk and
 * dv of a key/value head sum over the query heads sharing it. */
static void attn_bwd_ref(float *dq, float *dk, float *dv, int64_t ldd, const float *dz, const float *q, const float *k,
                         const float *v, int64_t ld, int64_t n_seq, const int64_t *start, const int64_t *len,
                         int64_t H, int64_t Hkv, int64_t dh, float scale) {
    const int64_t group = H / Hkv;
    for (int64_t s = 0; s < n_seq; s++) {
        int64_t L = len[s], r0 = start[s];
        double *P = calloc((size_t)(L * L), sizeof(double)), *dS = calloc((size_t)(L * L), sizeof(double));
        double *ak = calloc((size_t)(L * Hkv * dh), sizeof(double)), *av = calloc((size_t)(L * Hkv * dh), sizeof(double));
        for (int64_t h = 0; h < H; h++) {
            int64_t col = h * dh, kcol = h / group * dh;
            for (int64_t i = 0; i < L; i++) {
                double mx = -INFINITY, sum = 0, D = 0;
                for (int64_t j = 0; j <= i; j++) {
                    double sc = 0;
                    for (int64_t e = 0; e < dh; e++) sc += (double)q[(r0 + i) * ld + col + e] * k[(r0 + j) * ld + kcol + e];
                    P[i * L + j] = sc * scale;
                    if (P[i * L + j] > mx) mx = P[i * L + j];
                }
                for (int64_t j = 0; j <= i; j++) sum += (P[i * L + j] = exp(P[i * L + j] - mx));
                for (int64_t j = 0; j <= i; j++) {
                    P[i * L + j] /= sum;
                    double dp = 0;
                    for (int64_t e = 0; e < dh; e++)
                        dp += (double)dz[(r0 + i) * H * dh + col + e] * v[(r0 + j) * ld + kcol + e];
                    dS[i * L + j] = dp;
                    D += P[i * L + j] * dp;
                }
                for (int64_t j = 0; j <= i; j++) dS[i * L + j] = P[i * L + j] * (dS[i * L + j] - D);
                for (int64_t e = 0; e < dh; e++) {
                    double a = 0;
                    for (int64_t j = 0; j <= i; j++) a += dS[i * L + j] * k[(r0 + j) * ld + kcol + e];
                    dq[(r0 + i) * ldd + col + e] = (float)(scale * a);
                }
            }
            for (int64_t j = 0; j < L; j++)
                for (int64_t e = 0; e < dh; e++)
                    for (int64_t i = j; i < L; i++) {
                        ak[(j * Hkv + h / group) * dh + e] += dS[i * L + j] * q[(r0 + i) * ld + col + e];
                        av[(j * Hkv + h / group) * dh + e] += P[i * L + j] * dz[(r0 + i) * H * dh + col + e];
                    }
        }
        for (int64_t j = 0; j < L; j++)
            for (int64_t e = 0; e < Hkv * dh; e++) {
                dk[(r0 + j) * ldd + e] = (float)(scale * ak[j * Hkv * dh + e]);
                dv[(r0 + j) * ldd + e] = (float)av[j * Hkv * dh + e];
            }
        free(P), free(dS), free(ak), free(av);
    }
}

/* The output buffer: fused rows [dq (H heads) | dk (Hkv) | dv (Hkv)] with
 * ldd = (H + 2 Hkv) dh, or three planes of row stride H*dh (dk and dv then
 * fill the first Hkv*dh columns of theirs). */
typedef struct {
    float *dqkv;
    const float *dz, *qkv;
    int64_t ldd, ld, n_seq, H, Hkv, dh, rows;
    const int64_t *start, *len;
    float scale;
    int fused;
    const ss_backend *be; /* the emulated GPU, or one that recomputes the probabilities */
} ab_ctx;
static void ab_outs(const ab_ctx *c, float *base, float **dq, float **dk, float **dv) {
    int64_t d = c->H * c->dh, dkv = c->Hkv * c->dh;
    *dq = base;
    *dk = base + (c->fused ? d : c->rows * d);
    *dv = base + (c->fused ? d + dkv : 2 * c->rows * d);
}
static ss_status op_ab(void *v) {
    ab_ctx *c = v;
    float *dq, *dk, *dv;
    ab_outs(c, c->dqkv, &dq, &dk, &dv);
    const float *q = c->qkv, *k = q + c->H * c->dh, *vv = k + c->Hkv * c->dh;
    return c->be->attention_backward(c->be, dq, dk, dv, c->ldd, c->dz, q, k, vv, c->ld, c->n_seq, c->start, c->len,
                                     c->H, c->Hkv, c->dh, c->scale);
}

/* The written elements of an output buffer (dq rows, then dk, then dv rows)
 * packed densely; every other element must still hold the NaN fill. */
static int64_t ab_pack(const ab_ctx *c, const float *buf, int64_t nbuf, float *packed, int64_t *stray) {
    float *dq, *dk, *dv;
    ab_outs(c, (float *)buf, &dq, &dk, &dv);
    int64_t d = c->H * c->dh, dkv = c->Hkv * c->dh, n = 0;
    unsigned char *mark = calloc((size_t)nbuf, 1);
    for (int64_t r = 0; r < c->rows; r++)
        for (int64_t e = 0; e < d; e++) packed[n++] = dq[r * c->ldd + e], mark[dq + r * c->ldd + e - buf] = 1;
    for (int64_t r = 0; r < c->rows; r++)
        for (int64_t e = 0; e < dkv; e++) packed[n++] = dk[r * c->ldd + e], mark[dk + r * c->ldd + e - buf] = 1;
    for (int64_t r = 0; r < c->rows; r++)
        for (int64_t e = 0; e < dkv; e++) packed[n++] = dv[r * c->ldd + e], mark[dv + r * c->ldd + e - buf] = 1;
    *stray = 0;
    for (int64_t i = 0; i < nbuf; i++) *stray += !mark[i] && !isnan(buf[i]);
    free(mark);
    return n;
}

/* The same op on another emulated GPU (be: one that recomputes P, or goes
 * through cuBLAS), into the same device buffers, in both thread orders; its
 * written elements packed as ab_pack does (NULL if it failed or wrote
 * outside dq, dk, dv: the test fails). The caller frees the result. */
static float *ab_variant(ab_ctx *c, const ss_backend *be, int64_t nout, int64_t npk, const char *what) {
    const ss_backend *keep = c->be;
    float *raw = ss_test_fvec(nout, 0), *packed = ss_test_fvec(npk, 0);
    dout o = {c->dqkv, NULL, nout, raw};
    int64_t stray = 0;
    c->be = be;
    int ok = be && run_both(op_ab, c, &o, 1, 1);
    c->be = keep;
    if (ok) ab_pack(c, raw, nout, packed, &stray);
    if (!ok) ss_test_fail(__FILE__, __LINE__, "%s: the op failed", what);
    if (stray) ss_test_fail(__FILE__, __LINE__, "%s: %lld elements written outside dq, dk, dv", what, (long long)stray);
    free(raw);
    if (!ok || stray) {
        free(packed);
        return NULL;
    }
    return packed;
}

/* fp32 dot products of dh terms, an fp32 softmax, and fp32 sums of up to len
 * terms (times H/Hkv heads for dk, dv) for D, dq, dk, dv, against double.
 * Inputs uniform in [-amp, amp]; amp = 2.5 makes scores reach ~+-10 (peaked
 * rows, where a masking or softmax error cannot hide in an average). The
 * gradients are O(0.1..1); the error of an fp32 sum of len terms is ~
 * sqrt(len) 2^-24 |terms|, and the probabilities carry the relative error
 * of expf of a score ~10 (1e-6): atol 2e-5 + rtol 1e-4, as the forward
 * attention's z. A query head paired with the wrong key/value head, or a
 * group's sum missing a head, is off by O(0.1..1). */
TEST(cuda_bwd_attention_vs_reference) {
    const ss_backend *be = gpu(), *cpu = ss_backend_cpu();
    CHECK(be && be->attention_backward);
    struct {
        int n_seq;
        int64_t len[4];
        int64_t H, Hkv, dh;
        float amp;
        int fused;
    } cases[] = {
        {1, {1}, 1, 1, 8, 1.f, 1},            /* one token: P = 1, dq = dk = 0, dv = dz */
        {3, {1, 37, 70}, 2, 2, 16, 1.f, 1},   /* packed, different lengths; 70 > 2 warps' chunks of 32 */
        {2, {33, 5}, 1, 1, 1, 2.5f, 0},       /* dh = 1; separate dq/dk/dv planes (ld = H*dh) */
        {2, {9, 45}, 3, 3, 7, 2.5f, 1},       /* odd dh */
        {2, {20, 3}, 1, 1, 40, 2.5f, 0},      /* dh not a multiple of 32 */
        {1, {6}, 2, 2, 256, 1.f, 1},          /* the largest dh */
        {2, {35, 7}, 8, 2, 16, 2.5f, 1},      /* grouped-query: 4 query heads per key/value head, odd lengths */
        {3, {1, 41, 33}, 4, 1, 24, 2.5f, 0},  /* multi-query (one key/value head), planes */
        {1, {1}, 4, 2, 8, 1.f, 1},            /* grouped-query, one token: dv = sum of the group's dz */
    };
    int nc = (int)(sizeof cases / sizeof cases[0]);
    for (int ci = 0; ci < nc; ci++) {
        int64_t H = cases[ci].H, Hkv = cases[ci].Hkv, dh = cases[ci].dh, d = H * dh, dkv = Hkv * dh;
        int64_t ld = d + 2 * dkv, n_seq = cases[ci].n_seq;
        int64_t start[4], len[4], rows = 0;
        char lens[48] = "";
        for (int s = 0; s < n_seq; s++) {
            start[s] = rows;
            len[s] = cases[ci].len[s];
            rows += len[s];
            snprintf(lens + strlen(lens), sizeof lens - strlen(lens), "%s%lld", s ? "," : "", (long long)len[s]);
        }
        int fused = cases[ci].fused;
        int64_t ldd = fused ? ld : d, nout = fused ? rows * ld : 3 * rows * d, npk = rows * (d + 2 * dkv);
        float scale = (float)(1.0 / sqrt((double)dh));
        float *qkv = ss_test_rvec(rows * ld, 20 + (unsigned)ci, cases[ci].amp), *dz = ss_test_rvec(rows * d, 30 + (unsigned)ci, 1.f);
        float *ref = ss_test_fvec(nout, NAN), *got = ss_test_fvec(nout, 0);
        float *pref = ss_test_fvec(npk, 0), *pgot = ss_test_fvec(npk, 0);
        ab_ctx c = {NULL, NULL, NULL, ldd, ld, n_seq, H, Hkv, dh, rows, start, len, scale, fused, gpu()};
        float *rq, *rk, *rv;
        ab_outs(&c, ref, &rq, &rk, &rv);
        attn_bwd_ref(rq, rk, rv, ldd, dz, qkv, qkv + d, qkv + d + dkv, ld, n_seq, start, len, H, Hkv, dh, scale);
        float *dqkv = dev_put(NULL, (size_t)nout * 4), *ddz = dev_put(dz, (size_t)(rows * d) * 4),
              *dq = dev_put(qkv, (size_t)(rows * ld) * 4);
        c.dqkv = dqkv, c.dz = ddz, c.qkv = dq;
        dout o = {dqkv, NULL, nout, got};
        CHECK(run_both(op_ab, &c, &o, 1, 1));
        int64_t stray = 0;
        ab_pack(&c, ref, nout, pref, &stray);
        ab_pack(&c, got, nout, pgot, &stray);
        CHECK_MSG(stray == 0, "%lld elements written outside dq, dk, dv", (long long)stray);
        char nm[128];
        snprintf(nm, sizeof nm, "attention_backward seqs=[%s] H=%lld Hkv=%lld dh=%lld %s dq,dk,dv", lens, (long long)H,
                 (long long)Hkv, (long long)dh, fused ? "fused" : "planes");
        CHECK(ss_test_compare(nm, pgot, pref, npk, 2e-5, 1e-4) == 0);
        /* The variant that recomputes P (kernels/attention_backward_rc.cu, what a
         * backend with no room for P and dS runs): the same arithmetic in the
         * same order, so the same bits here. */
        float *pv = ab_variant(&c, gpu_rc(), nout, npk, "recompute variant");
        CHECK_MSG(pv && !memcmp(pv, pgot, (size_t)npk * sizeof(float)), "%s: the recompute variant differs", nm);
        free(pv);
        /* Through cuBLAS (cuda_backend.c's attention_backward_gemm_seq: P again,
         * dP = dZ V^T, the causal softmax's backward kernel, three products;
         * dK, dV summed over a group with beta 1): the same bound against the
         * reference. */
        pv = ab_variant(&c, gpu_gemm(), nout, npk, "cuBLAS path");
        CHECK(pv && ss_test_compare("  through cuBLAS", pv, pref, npk, 2e-5, 1e-4) == 0);
        free(pv);
        if (cases[ci].len[0] == 1 && n_seq == 1) { /* one token: exact zeros for dq, dk; dv = the group's sum of dz */
            for (int64_t e = 0; e < d; e++) CHECK(pgot[e] == 0.f);
            for (int64_t e = 0; e < dkv; e++) CHECK(pgot[d + e] == 0.f);
            for (int64_t hk = 0; hk < Hkv; hk++)
                for (int64_t e = 0; e < dh; e++) {
                    float sum = 0.f; /* the group's heads in order, as the kernel adds them */
                    for (int64_t h = hk * (H / Hkv); h < (hk + 1) * (H / Hkv); h++) sum += dz[h * dh + e];
                    CHECK(pgot[d + dkv + hk * dh + e] == sum);
                }
        }
        if (cpu->attention_backward) {
            float *cc = ss_test_fvec(nout, NAN), *pcc = ss_test_fvec(npk, 0), *cq, *ck, *cv;
            ab_outs(&c, cc, &cq, &ck, &cv);
            CHECK_OK(cpu->attention_backward(cpu, cq, ck, cv, ldd, dz, qkv, qkv + d, qkv + d + dkv, ld, n_seq, start,
                                             len, H, Hkv, dh, scale));
            ab_pack(&c, cc, nout, pcc, &stray);
            CHECK(ss_test_compare("  vs cpu op", pgot, pcc, npk, 2e-5, 1e-4) == 0);
            free(cc), free(pcc);
        }
        dev_free(dqkv), dev_free(ddz), dev_free(dq);
        free(qkv), free(dz), free(ref), free(got), free(pref), free(pgot);
    }
    /* what the kernel cannot do is refused with the op's name, not mis-computed */
    int64_t st0 = 0, ln1 = 1;
    float *buf = dev_put(NULL, 3 * 257 * 4);
    CHECK_ERR(be->attention_backward(be, buf, buf, buf, 257, buf, buf, buf, buf, 3 * 257, 1, &st0, &ln1, 1, 1, 257, 1.f),
              SS_ERR_UNSUPPORTED, "attention_backward");
    CHECK_ERR(be->attention_backward(be, buf, buf, buf, 12, buf, buf, buf, buf, 12, 1, &st0, &ln1, 4, 3, 3, 1.f),
              SS_ERR_ARG, "attention_backward");
    dev_free(buf);
}

/* ---- embed_backward ---------------------------------------------------- */

typedef struct { float *dwte, *dwpe; const float *dx; const int32_t *tok, *pos; int64_t n, d; } eb_ctx;
static ss_status op_eb(void *v) {
    eb_ctx *c = v;
    return gpu()->embed_backward(gpu(), c->dwte, c->dwpe, c->dx, c->tok, c->pos, c->n, c->d);
}

/* Sums of a few fp32 rows (repeated ids) onto a non-zero table, in the
 * atomics' order, against double: atol 1e-6 + rtol 1e-6. The thread orders
 * may change the order of the adds (that is the atomics' nature), so they
 * are compared with that tolerance, not bitwise. */
TEST(cuda_bwd_embed_vs_reference) {
    const ss_backend *be = gpu(), *cpu = ss_backend_cpu();
    CHECK(be && be->embed_backward);
    int64_t shapes[][4] = {{50, 40, 1, 8}, {50, 40, 13, 48}, {7, 5, 30, 30}, {50, 40, 9, 33}};
    for (int si = 0; si < 4; si++)
        for (int which = 0; which < 3; which++) { /* both tables, only wte, only wpe */
            int64_t V = shapes[si][0], P = shapes[si][1], n = shapes[si][2], d = shapes[si][3];
            float *dx = ss_test_rvec(n * d, 40, 1.1f), *te0 = ss_test_rvec(V * d, 41, 1.f), *pe0 = ss_test_rvec(P * d, 42, 1.f);
            int32_t *tok = malloc((size_t)n * 4), *pos = malloc((size_t)n * 4);
            for (int64_t i = 0; i < n; i++) tok[i] = (int32_t)((i * 17 + 3) % V), pos[i] = (int32_t)(i % 4 % P);
            int wt = which != 2, wp = which != 1;
            float *rte = ss_test_fvec(V * d, 0), *rpe = ss_test_fvec(P * d, 0);
            for (int64_t t = 0; t < V; t++)
                for (int64_t c2 = 0; c2 < d; c2++) {
                    double s = te0[t * d + c2];
                    for (int64_t i = 0; i < n; i++) s += wt && tok[i] == t ? dx[i * d + c2] : 0;
                    rte[t * d + c2] = (float)s;
                }
            for (int64_t p = 0; p < P; p++)
                for (int64_t c2 = 0; c2 < d; c2++) {
                    double s = pe0[p * d + c2];
                    for (int64_t i = 0; i < n; i++) s += wp && pos[i] == p ? dx[i * d + c2] : 0;
                    rpe[p * d + c2] = (float)s;
                }
            float *gte = ss_test_fvec(V * d, 0), *gpe = ss_test_fvec(P * d, 0);
            float *dte = dev_put(NULL, (size_t)(V * d) * 4), *dpe = dev_put(NULL, (size_t)(P * d) * 4),
                  *ddx = dev_put(dx, (size_t)(n * d) * 4);
            int32_t *dtok = dev_put(tok, (size_t)n * 4), *dpos = dev_put(pos, (size_t)n * 4);
            eb_ctx c = {wt ? dte : NULL, wp ? dpe : NULL, ddx, dtok, dpos, n, d};
            dout o[2] = {{dte, te0, V * d, gte}, {dpe, pe0, P * d, gpe}};
            CHECK(run_both(op_eb, &c, o, 2, 0));
            char nm[96];
            snprintf(nm, sizeof nm, "embed_backward V=%lld P=%lld n=%lld d=%lld %s", (long long)V, (long long)P,
                     (long long)n, (long long)d, which == 0 ? "wte+wpe" : which == 1 ? "wte only" : "wpe only");
            CHECK(ss_test_compare(nm, gte, rte, V * d, 1e-6, 1e-6) == 0);
            CHECK(ss_test_compare("  wpe", gpe, rpe, P * d, 1e-6, 1e-6) == 0);
            if (cpu->embed_backward) {
                float *cte = dupv(te0, V * d), *cpe = dupv(pe0, P * d);
                CHECK_OK(cpu->embed_backward(cpu, wt ? cte : NULL, wp ? cpe : NULL, dx, tok, pos, n, d));
                CHECK(ss_test_compare("  wte vs cpu op", gte, cte, V * d, 1e-6, 1e-6) == 0);
                CHECK(ss_test_compare("  wpe vs cpu op", gpe, cpe, P * d, 1e-6, 1e-6) == 0);
                free(cte), free(cpe);
            }
            dev_free(dte), dev_free(dpe), dev_free(ddx), dev_free(dtok), dev_free(dpos);
            free(dx), free(te0), free(pe0), free(tok), free(pos), free(rte), free(rpe), free(gte), free(gpe);
        }
}

/* ---- softmax_xent ------------------------------------------------------ */

static void xent_ref(float *dl, float *loss, const float *x, const int32_t *t, const float *w, int64_t rows, int64_t V) {
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * V;
        if (t[r] < 0) {
            loss[r] = 0;
            for (int64_t i = 0; i < V; i++) dl[r * V + i] = 0;
            continue;
        }
        double mx = -INFINITY, s = 0;
        for (int64_t i = 0; i < V; i++) mx = xr[i] > mx ? xr[i] : mx;
        for (int64_t i = 0; i < V; i++) s += exp(xr[i] - mx);
        loss[r] = (float)(log(s) + mx - xr[t[r]]);
        double wr = w ? w[r] : 1.0;
        for (int64_t i = 0; i < V; i++) dl[r * V + i] = (float)(wr * (exp(xr[i] - mx) / s - (i == t[r])));
    }
}

typedef struct { float *dl, *loss; const float *x; const int32_t *t; const float *w; int64_t rows, V; } sx_ctx;
static ss_status op_sx(void *v) {
    sx_ctx *c = v;
    return gpu()->softmax_xent(gpu(), c->dl, c->loss, c->x, c->t, c->w, c->rows, c->V);
}

/* logits uniform in [-8,8] (probabilities from ~1e-7 to ~0.5). Loss: fp32
 * sums of V exps (relative error ~ log2(V) 2^-24) and one logf, O(1..10):
 * atol 1e-5 + rtol 1e-5. Gradient: expf(x - max)/sum per element, a few
 * ulps relative, plus the fp32 subtraction of 1 at the target: atol 1e-7
 * + rtol 1e-5. */
TEST(cuda_bwd_softmax_xent_vs_reference) {
    const ss_backend *be = gpu(), *cpu = ss_backend_cpu();
    CHECK(be && be->softmax_xent);
    int64_t shapes[][2] = {{1, 1}, {4, 50}, {3, 1000}, {2, 257}};
    for (int si = 0; si < 4; si++)
        for (int mode = 0; mode < 3; mode++) { /* weights; no weights (1); in place (dlogits == logits) */
            int64_t rows = shapes[si][0], V = shapes[si][1], n = rows * V;
            float *x = ss_test_rvec(n, 50 + (unsigned)si, 8.f), *w = ss_test_rvec(rows, 51, 1.f);
            int32_t *t = malloc((size_t)rows * 4);
            for (int64_t r = 0; r < rows; r++) t[r] = r == 1 ? -1 : (int32_t)((r * 37 + 5) % V); /* row 1 unscored */
            float *wv = mode == 1 ? NULL : w;
            float *rdl = ss_test_fvec(n, 0), *rl = ss_test_fvec(rows, 0), *gdl = ss_test_fvec(n, 0), *gl = ss_test_fvec(rows, 0);
            xent_ref(rdl, rl, x, t, wv, rows, V);
            float *dxx = dev_put(x, (size_t)n * 4), *ddl = dev_put(NULL, (size_t)n * 4),
                  *dl = dev_put(NULL, (size_t)rows * 4), *dw = dev_put(w, (size_t)rows * 4);
            int32_t *dt = dev_put(t, (size_t)rows * 4);
            sx_ctx c = {mode == 2 ? dxx : ddl, dl, dxx, dt, mode == 1 ? NULL : dw, rows, V};
            /* in place: the logits buffer is the output (re-uploaded before each run) */
            dout o[2] = {{mode == 2 ? dxx : ddl, mode == 2 ? x : NULL, n, gdl}, {dl, NULL, rows, gl}};
            CHECK(run_both(op_sx, &c, o, 2, 1));
            char nm[96];
            snprintf(nm, sizeof nm, "softmax_xent %lldx%lld %s loss", (long long)rows, (long long)V,
                     mode == 0 ? "weighted" : mode == 1 ? "weights NULL" : "in place");
            CHECK(ss_test_compare(nm, gl, rl, rows, 1e-5, 1e-5) == 0);
            CHECK(ss_test_compare("  dlogits", gdl, rdl, n, 1e-7, 1e-5) == 0);
            if (cpu->softmax_xent && mode != 1) {
                float *cdl = dupv(x, n), *cl = ss_test_fvec(rows, NAN);
                CHECK_OK(cpu->softmax_xent(cpu, cdl, cl, cdl, t, w, rows, V)); /* in place on the CPU too */
                CHECK(ss_test_compare("  loss vs cpu op", gl, cl, rows, 1e-5, 1e-5) == 0);
                CHECK(ss_test_compare("  dlogits vs cpu op", gdl, cdl, n, 1e-7, 1e-5) == 0);
                free(cdl), free(cl);
            }
            dev_free(dxx), dev_free(ddl), dev_free(dl), dev_free(dw), dev_free(dt);
            free(x), free(w), free(t), free(rdl), free(rl), free(gdl), free(gl);
        }
}

/* ---- logit_scores, gather ---------------------------------------------- */

typedef struct {
    double *lz, *kl;
    int32_t *best;
    const float *x, *ref;
    const double *ref_lz;
    int64_t rows, V, ref_rows;
    float *g;
    const int64_t *idx;
    int64_t n_idx;
} ls_ctx;
static ss_status op_ls(void *v) {
    ls_ctx *c = v;
    SS_TRY(gpu()->logit_scores(gpu(), c->lz, c->best, c->kl, c->x, c->rows, c->V, c->ref, c->ref_lz, c->ref_rows));
    return gpu()->gather(gpu(), c->g, c->x, c->idx, c->n_idx);
}

static int close_d(const char *what, const double *got, const double *want, int64_t n, double atol, double rtol) {
    for (int64_t i = 0; i < n; i++)
        if (got[i] != want[i] && !(fabs(got[i] - want[i]) <= atol + rtol * fabs(want[i]))) { /* equal: also inf */
            printf("\n    %s[%lld]: %.17g, expected %.17g", what, (long long)i, got[i], want[i]);
            return 0;
        }
    return 1;
}

/* The CPU op against closed forms: a constant row of V values has
 * log-partition c + log V and its first index as the best; V = 2 rows
 * (0, 0) against (log 3, 0) have KL 0.5 log(4/3). */
TEST(cpu_logit_scores_closed_forms) {
    const ss_backend *cpu = ss_backend_cpu();
    CHECK(cpu->logit_scores && cpu->gather);
    float x[1000], p2[2] = {0.f, 0.f}, q2[2] = {(float)log(3.0), 0.f};
    for (int i = 0; i < 1000; i++) x[i] = 2.5f;
    double lz, lzp, lzq, kl, kl0;
    int32_t best = -1;
    CHECK_OK(cpu->logit_scores(cpu, &lz, &best, NULL, x, 1, 1000, NULL, NULL, 0));
    CHECK(fabs(lz - (2.5 + log(1000.0))) < 1e-12 && best == 0);
    CHECK_OK(cpu->logit_scores(cpu, &lzp, NULL, NULL, p2, 1, 2, NULL, NULL, 0));
    CHECK_OK(cpu->logit_scores(cpu, &lzq, NULL, &kl, q2, 1, 2, p2, &lzp, 1));
    CHECK_MSG(fabs(kl - 0.5 * log(4.0 / 3.0)) < 1e-7, "KL %.17g", kl); /* log 3 rounded to fp32 */
    CHECK_OK(cpu->logit_scores(cpu, &lzp, NULL, &kl0, p2, 1, 2, p2, &lzp, 1));
    CHECK(kl0 == 0.0);
    CHECK_ERR(cpu->logit_scores(cpu, &lz, NULL, &kl, x, 1, 1000, NULL, NULL, 0), SS_ERR_INTERNAL, "reference");
    int64_t idx[3] = {999, 0, 17};
    float g[3];
    x[17] = -1.f;
    CHECK_OK(cpu->gather(cpu, g, x, idx, 3));
    CHECK(g[0] == 2.5f && g[1] == 2.5f && g[2] == -1.f);
}

/* The kernel against the CPU op. Logits uniform in [-8, 8], with ties for
 * the largest value (the first index must win), rows holding -inf, a
 * constant row, and more rows than reference rows (row r compares with
 * reference row r % ref_rows). Both compute in fp64 from the same fp32
 * values and differ only in the order of the sums: lz within 1e-12
 * relative; KL, a sum of V terms of either sign, within 1e-12 + 1e-9
 * relative; best and the gathered values exactly. Forward and reverse
 * thread orders give the same bits (fixed-order merges). */
TEST(cuda_logit_scores_vs_cpu) {
    const ss_backend *be = gpu(), *cpu = ss_backend_cpu();
    CHECK(be && be->logit_scores && be->gather);
    int64_t shapes[][3] = {{1, 1, 1}, {3, 50, 3}, {5, 1000, 2}, {4, 257, 4}, {2, 3001, 1}};
    for (int si = 0; si < 5; si++) {
        int64_t rows = shapes[si][0], V = shapes[si][1], rr = shapes[si][2], n = rows * V;
        float *x = ss_test_rvec(n, 70 + (unsigned)si, 8.f), *ref = ss_test_rvec(rr * V, 80 + (unsigned)si, 8.f);
        if (V >= 50) {
            x[V + 3] = x[V + 40] = 20.f;                 /* row 1: a tie, first index 3 */
            for (int64_t v = 0; v < V; v += 7) x[v] = -INFINITY; /* row 0: -inf entries */
            if (rows > 2)
                for (int64_t v = 0; v < V; v++) x[2 * V + v] = 1.5f; /* row 2: constant */
        }
        int64_t n_idx = rows + 3, *idx = malloc((size_t)n_idx * sizeof(int64_t));
        for (int64_t i = 0; i < n_idx; i++) idx[i] = (i * 7919 + 13) % n;
        double *rlz = malloc((size_t)rr * 8), *clz = malloc((size_t)rows * 8), *ckl = malloc((size_t)rows * 8),
               *glz = malloc((size_t)rows * 8), *gkl = malloc((size_t)rows * 8);
        int32_t *cbest = malloc((size_t)rows * 4), *gbest = malloc((size_t)rows * 4);
        float *cg = malloc((size_t)n_idx * 4), *gg = malloc((size_t)n_idx * 4);
        CHECK_OK(cpu->logit_scores(cpu, rlz, NULL, NULL, ref, rr, V, NULL, NULL, 0));
        CHECK_OK(cpu->logit_scores(cpu, clz, cbest, ckl, x, rows, V, ref, rlz, rr));
        CHECK_OK(cpu->gather(cpu, cg, x, idx, n_idx));
        float *dx = dev_put(x, (size_t)n * 4), *dref = dev_put(ref, (size_t)(rr * V) * 4), *dg = dev_put(NULL, (size_t)n_idx * 4);
        double *drlz = dev_put(rlz, (size_t)rr * 8), *dlz = dev_put(NULL, (size_t)rows * 8), *dkl = dev_put(NULL, (size_t)rows * 8);
        int32_t *dbest = dev_put(NULL, (size_t)rows * 4);
        int64_t *didx = dev_put(idx, (size_t)n_idx * 8);
        ls_ctx c = {dlz, dkl, dbest, dx, dref, drlz, rows, V, rr, dg, didx, n_idx};
        dout o[4] = {{(float *)dlz, NULL, 2 * rows, (float *)glz}, {(float *)dkl, NULL, 2 * rows, (float *)gkl},
                     {(float *)dbest, NULL, rows, (float *)gbest}, {dg, NULL, n_idx, gg}};
        CHECK(run_both(op_ls, &c, o, 4, 1));
        printf(" [%lldx%lld]", (long long)rows, (long long)V);
        CHECK(close_d("lz", glz, clz, rows, 0, 1e-12));
        CHECK(close_d("kl", gkl, ckl, rows, 1e-12, 1e-9));
        CHECK(memcmp(gbest, cbest, (size_t)rows * 4) == 0);
        CHECK(memcmp(gg, cg, (size_t)n_idx * 4) == 0);
        if (V >= 50) CHECK(gbest[1] == 3 && (rows <= 2 || gbest[2] == 0));
        /* no best, no KL: lz alone */
        CHECK_OK(be->logit_scores(be, dlz, NULL, NULL, dx, rows, V, NULL, NULL, 0));
        CHECK_OK(be->download(be, glz, dlz, (size_t)rows * 8));
        CHECK(close_d("lz alone", glz, clz, rows, 0, 1e-12));
        dev_free(dx), dev_free(dref), dev_free(dg), dev_free(drlz), dev_free(dlz), dev_free(dkl), dev_free(dbest), dev_free(didx);
        free(x), free(ref), free(idx), free(rlz), free(clz), free(ckl), free(glz), free(gkl), free(cbest), free(gbest);
        free(cg), free(gg);
    }
}

/* Rows the sums must get exactly: a row equal to its reference row has KL 0
 * (the kernel's one-sweep form sum p (ref - x) + (z - zp) sum p is 0 term by
 * term there, as the CPU's is, when the reference's log-partition comes
 * from the same kernel, as in ablate), and a row of -inf alone has a NaN
 * log-partition on both sides (exp(-inf - -inf)), best index 0. V = 1031:
 * more than four values a thread, and a remainder. */
TEST(cuda_logit_scores_exact_rows) {
    const ss_backend *be = gpu(), *cpu = ss_backend_cpu();
    const int64_t V = 1031;
    float *x = ss_test_rvec(2 * V, 71, 8.f);
    for (int64_t v = 0; v < V; v++) x[V + v] = -INFINITY;
    double rlz, clz[2], ckl[2], glz[2], gkl[2];
    int32_t cbest[2], gbest[2];
    CHECK_OK(cpu->logit_scores(cpu, &rlz, NULL, NULL, x, 1, V, NULL, NULL, 0));
    CHECK_OK(cpu->logit_scores(cpu, clz, cbest, ckl, x, 2, V, x, &rlz, 1));
    /* the reference's log-partition from the device, as ablate has it */
    float *dx = dev_put(x, (size_t)(2 * V) * 4);
    double *drlz = dev_put(NULL, 8), *dlz = dev_put(NULL, 16), *dkl = dev_put(NULL, 16);
    int32_t *dbest = dev_put(NULL, 8);
    CHECK_OK(be->logit_scores(be, drlz, NULL, NULL, dx, 1, V, NULL, NULL, 0));
    CHECK_OK(be->logit_scores(be, dlz, dbest, dkl, dx, 2, V, dx, drlz, 1));
    CHECK_OK(be->download(be, glz, dlz, 16));
    CHECK_OK(be->download(be, gkl, dkl, 16));
    CHECK_OK(be->download(be, gbest, dbest, 8));
    CHECK_MSG(ckl[0] == 0.0 && gkl[0] == 0.0, "KL of a row with itself: CPU %.17g, device %.17g", ckl[0], gkl[0]);
    CHECK(close_d("lz", glz, clz, 1, 0, 1e-12));
    CHECK(isnan(clz[1]) && isnan(glz[1]));
    CHECK(gbest[0] == cbest[0] && gbest[1] == 0 && cbest[1] == 0);
    dev_free(dx), dev_free(drlz), dev_free(dlz), dev_free(dkl), dev_free(dbest);
    free(x);
}

/* ---- the whole backward pass on the emulated device --------------------- */

#include "subscope/backward.h"

typedef struct {
    float *store[128];
} site_grads;

static ss_status keep_grad(void *vctx, const ss_site *s, float *data, int64_t ld, const ss_packing *pk,
                           const int64_t *pattern_off) {
    (void)pattern_off;
    site_grads *g = vctx;
    float *c = malloc((size_t)(pk->rows * s->width) * sizeof(float));
    if (!c) return SS_ERR_NOMEM;
    for (int64_t i = 0; i < pk->rows; i++) memcpy(c + i * s->width, data + i * ld, (size_t)s->width * sizeof(float));
    free(g->store[s->id]);
    g->store[s->id] = c;
    return SS_OK;
}

/* Bytes of the weight-gradient block of ss_grads_alloc: every tensor
 * rounded up to 256 bytes, wte first (the layout is the same on both
 * backends, so the blocks compare element for element). */
static size_t grad_block_floats(const ss_model *m) {
    const ss_config *c = &m->cfg;
    int64_t d = c->n_embd, dm = c->n_inner, V = c->vocab_size;
    int64_t sizes[16] = {V * d, c->n_positions * d, d, d, m->w.lm_head == m->w.wte ? 0 : V * d};
    int64_t lay[12] = {d, d, 3 * d * d, 3 * d, d * d, d, d, d, d * dm, dm, dm * d, d};
    size_t total = 0;
    for (int i = 0; i < 5; i++) total += ((size_t)sizes[i] * 4 + 255) & ~(size_t)255;
    for (int64_t l = 0; l < c->n_layer; l++)
        for (int i = 0; i < 12; i++) total += ((size_t)lay[i] * 4 + 255) & ~(size_t)255;
    return total / 4;
}

/* The emulated GPU the whole-model tests below run on: the default one, or
 * (cuda_bwd_forward_backward_through_cublas_attention) the one whose
 * attention backward goes through cuBLAS. */
static const ss_backend *(*model_gpu)(void) = gpu;

/* ss_forward_backward on "cuda:0" (emulated kernels and cuBLAS) against the
 * CPU reference: the metric, the gradient at every per-token site and every
 * weight gradient. The kernels reduce in other orders than the CPU ops, and
 * the differences compound through the layers of the toy models: metric
 * atol 1e-5, gradients atol 1e-5 + rtol 1e-4 (gradients here are O(1e-3..1);
 * a few fp32 ulps of each op's output, amplified through the layernorm and
 * softmax Jacobians of 2-3 layers, measure ~2e-6 at most). */
static void backward_matches_cpu(const char *model, ss_metric_kind kind) {
    char dir[512];
    snprintf(dir, sizeof dir, "%s/models/%s", ss_test_data_dir(), model);
    ss_model *m = NULL;
    CHECK_OK(ss_model_load(dir, &m));
    const ss_backend *be = model_gpu(), *cpu = ss_backend_cpu();
    CHECK(be);
    ss_status st = ss_model_place(m, be, SS_WDTYPE_F32);
    if (st) { ss_model_free(m); CHECK_OK(st); }
    const int32_t toks[12] = {5, 17, 3, 60, 0, 44, 12, 12, 7, 1, 9, 30};
    int64_t start[3] = {0, 1, 5}, len[3] = {1, 4, 7};
    const int32_t answer[3] = {7, 11, 2}, wrong[3] = {2, 40, 9};
    ss_packing pk = {3, 12, start, len, 0};
    ss_metric mt = {kind, answer, wrong};
    int ns = ss_sites_count(&m->cfg);
    uint8_t *want = calloc((size_t)ns, 1);
    for (int i = 0; i < ns; i++) {
        ss_site s;
        ss_site_get(&m->cfg, i, &s);
        want[i] = (uint8_t)s.per_token;
    }
    site_grads ga = {{0}}, gb = {{0}};
    ss_gpt2_weights wa, wb;
    CHECK_OK(ss_grads_alloc(m, cpu, &wa));
    CHECK_OK(ss_grads_alloc(m, be, &wb));
    ss_grad_opts oa = {.want = want, .hook = keep_grad, .hook_ctx = &ga, .wgrad = &wa},
                 ob = {.want = want, .hook = keep_grad, .hook_ctx = &gb, .wgrad = &wb};
    double ma[3], mb[3];
    CHECK_OK(ss_forward_backward(m, cpu, toks, &pk, NULL, &mt, &oa, ma));
    CHECK_OK(ss_forward_backward(m, be, toks, &pk, NULL, &mt, &ob, mb));
    for (int s = 0; s < 3; s++)
        CHECK_MSG(fabs(ma[s] - mb[s]) <= 1e-5 || (isnan(ma[s]) && isnan(mb[s])), "%s %s seq %d: cpu %.9g cuda %.9g",
                  model, ss_metric_name(kind), s, ma[s], mb[s]);
    printf("\n    %s %s", model, ss_metric_name(kind));
    for (int i = 0; i < ns; i++) {
        if (!want[i]) continue;
        ss_site s;
        ss_site_get(&m->cfg, i, &s);
        CHECK_MSG(ga.store[i] && gb.store[i], "no gradient at %s", s.name);
        char nm[96];
        snprintf(nm, sizeof nm, "  d/d %s", s.name);
        CHECK_MSG(ss_test_compare(nm, gb.store[i], ga.store[i], 12 * s.width, 1e-5, 1e-4) == 0, "%s: site %s", model, s.name);
    }
    size_t nw = grad_block_floats(m);
    float *hw = malloc(nw * sizeof(float));
    CHECK_OK(be->download(be, hw, wb.wte, nw * sizeof(float)));
    CHECK(ss_test_compare("  weight gradients (all tensors)", hw, (const float *)wa.wte, (int64_t)nw, 1e-5, 1e-4) == 0);
    free(hw);
    for (int i = 0; i < 128; i++) free(ga.store[i]), free(gb.store[i]);
    ss_grads_free(cpu, &wa);
    ss_grads_free(be, &wb);
    free(want);
    ss_model_free(m);
}

TEST(cuda_bwd_forward_backward_matches_cpu) {
    backward_matches_cpu("prefix-f32", SS_METRIC_LOSS);
    backward_matches_cpu("noprefix-odd-untied", SS_METRIC_LOGITDIFF);
}

/* One weight-gradient tensor of both backends (the CUDA one downloaded). */
static int grad_tensor_matches(const char *model, const char *what, const void *cpu_g, const void *dev_g, int64_t n) {
    if (!cpu_g && !dev_g) return 1;
    if (!cpu_g || !dev_g) {
        printf("\n    %s: gradient %s on one backend only", model, what);
        return 0;
    }
    float *h = malloc((size_t)n * sizeof(float));
    int ok = !gpu()->download(gpu(), h, dev_g, (size_t)n * sizeof(float));
    char nm[96];
    snprintf(nm, sizeof nm, "  weight gradient %s", what);
    ok = ok && ss_test_compare(nm, h, cpu_g, n, 1e-5, 1e-4) == 0;
    free(h);
    return ok;
}

/* ss_forward_backward of a Llama-family model (RMSNorm, rotary q/k,
 * grouped-query attention, SwiGLU) on "cuda:0" (emulated kernels and
 * cuBLAS) against the CPU: the metric, the gradient at every per-token site
 * and every weight gradient tensor, tolerances as backward_matches_cpu
 * above. This runs rmsnorm, rope (forward and inverse), swiglu, the
 * grouped-query attention kernels and their backward kernels together, as
 * the model code issues them. */
static void llama_backward_matches_cpu(const char *model, ss_metric_kind kind) {
    char dir[512];
    snprintf(dir, sizeof dir, "%s/models/%s", ss_test_data_dir(), model);
    ss_model *m = NULL;
    CHECK_OK(ss_model_load(dir, &m));
    const ss_backend *be = model_gpu(), *cpu = ss_backend_cpu();
    CHECK(be);
    ss_status st = ss_model_place(m, be, SS_WDTYPE_F32);
    if (st) { ss_model_free(m); CHECK_OK(st); }
    const ss_config *cf = &m->cfg;
    int32_t toks[12];
    for (int i = 0; i < 12; i++) toks[i] = (int32_t)((i * 37 + 5) % cf->vocab_size);
    int64_t start[3] = {0, 1, 5}, len[3] = {1, 4, 7};
    const int32_t answer[3] = {7, 11, 2}, wrong[3] = {2, 40 % (int32_t)cf->vocab_size, 9};
    ss_packing pk = {3, 12, start, len, 0};
    ss_metric mt = {kind, answer, wrong};
    int ns = ss_sites_count(cf);
    uint8_t *want = calloc((size_t)ns, 1);
    for (int i = 0; i < ns; i++) {
        ss_site s;
        ss_site_get(cf, i, &s);
        want[i] = (uint8_t)s.per_token;
    }
    site_grads ga = {{0}}, gb = {{0}};
    ss_gpt2_weights wa, wb;
    CHECK_OK(ss_grads_alloc(m, cpu, &wa));
    CHECK_OK(ss_grads_alloc(m, be, &wb));
    ss_grad_opts oa = {.want = want, .hook = keep_grad, .hook_ctx = &ga, .wgrad = &wa},
                 ob = {.want = want, .hook = keep_grad, .hook_ctx = &gb, .wgrad = &wb};
    double ma[3], mb[3];
    CHECK_OK(ss_forward_backward(m, cpu, toks, &pk, NULL, &mt, &oa, ma));
    CHECK_OK(ss_forward_backward(m, be, toks, &pk, NULL, &mt, &ob, mb));
    for (int s = 0; s < 3; s++)
        CHECK_MSG(fabs(ma[s] - mb[s]) <= 1e-5 || (isnan(ma[s]) && isnan(mb[s])), /* loss of 1 token: NaN */
                  "%s %s seq %d: cpu %.9g cuda %.9g", model, ss_metric_name(kind), s, ma[s], mb[s]);
    printf("\n    %s %s (H=%lld Hkv=%lld dh=%lld)", model, ss_metric_name(kind), (long long)cf->n_head,
           (long long)ss_config_kv_heads(cf), (long long)ss_config_d_head(cf));
    for (int i = 0; i < ns; i++) {
        if (!want[i]) continue;
        ss_site s;
        ss_site_get(cf, i, &s);
        CHECK_MSG(ga.store[i] && gb.store[i], "no gradient at %s", s.name);
        char nm[96];
        snprintf(nm, sizeof nm, "  d/d %s", s.name);
        CHECK_MSG(ss_test_compare(nm, gb.store[i], ga.store[i], 12 * s.width, 1e-5, 1e-4) == 0, "%s: site %s", model,
                  s.name);
    }
    int64_t d = cf->n_embd, dh = ss_config_d_head(cf), H = cf->n_head, Hkv = ss_config_kv_heads(cf),
            dm = cf->n_inner, V = cf->vocab_size, dq = (H + 2 * Hkv) * dh;
    CHECK(grad_tensor_matches(model, "wte", wa.wte, wb.wte, V * d));
    CHECK(grad_tensor_matches(model, "norm (final)", wa.lnf_w, wb.lnf_w, d));
    if (wa.lm_head != wa.wte) CHECK(grad_tensor_matches(model, "lm_head", wa.lm_head, wb.lm_head, V * d));
    for (int64_t l = 0; l < cf->n_layer; l++) {
        const ss_gpt2_layer *a = &wa.layers[l], *b = &wb.layers[l];
        CHECK(grad_tensor_matches(model, "input_layernorm (RMSNorm dw)", a->ln1_w, b->ln1_w, d));
        CHECK(grad_tensor_matches(model, "q|k|v", a->attn_w, b->attn_w, dq * d));
        CHECK(grad_tensor_matches(model, "q|k|v bias", a->attn_b, b->attn_b, dq));
        CHECK(grad_tensor_matches(model, "o_proj", a->proj_w, b->proj_w, d * H * dh));
        CHECK(grad_tensor_matches(model, "o_proj bias", a->proj_b, b->proj_b, d));
        CHECK(grad_tensor_matches(model, "post_attention_layernorm (RMSNorm dw)", a->ln2_w, b->ln2_w, d));
        CHECK(grad_tensor_matches(model, "gate|up", a->fc_w, b->fc_w, 2 * dm * d));
        CHECK(grad_tensor_matches(model, "gate|up bias", a->fc_b, b->fc_b, 2 * dm));
        CHECK(grad_tensor_matches(model, "down_proj", a->fc2_w, b->fc2_w, d * dm));
        CHECK(grad_tensor_matches(model, "down_proj bias", a->fc2_b, b->fc2_b, d));
    }
    for (int i = 0; i < 128; i++) free(ga.store[i]), free(gb.store[i]);
    ss_grads_free(cpu, &wa);
    ss_grads_free(be, &wb);
    free(want);
    ss_model_free(m);
}

TEST(cuda_bwd_llama_forward_backward_matches_cpu) {
    llama_backward_matches_cpu("llama-gqa-llama3", SS_METRIC_LOSS);
    llama_backward_matches_cpu("qwen2-bias-tied", SS_METRIC_LOGITDIFF);
    llama_backward_matches_cpu("llama-hd6-bias", SS_METRIC_LOSS);
}

/* The same whole-model gradients with every attention (forward and
 * backward) through cuBLAS: a GPT-2 and a grouped-query Llama model. */
TEST(cuda_bwd_forward_backward_through_cublas_attention) {
    model_gpu = gpu_gemm;
    backward_matches_cpu("prefix-f32", SS_METRIC_LOSS);
    llama_backward_matches_cpu("llama-gqa-llama3", SS_METRIC_LOGITDIFF);
    model_gpu = gpu;
}

/* A target outside the vocabulary: the CPU op reports an error (it can
 * check before computing); the kernel cannot stop the stream, so it writes
 * NaN for that row's loss and gradient instead of reading out of bounds. */
TEST(cuda_bwd_softmax_xent_bad_target_is_nan) {
    const ss_backend *be = gpu();
    CHECK(be && be->softmax_xent);
    float x[10] = {1, 2, 3, 4, 5, 1, 2, 3, 4, 5}, g[10], l[2];
    int32_t t[2] = {5, 0};
    float *dx = dev_put(x, sizeof x), *dl = dev_put(NULL, sizeof l);
    int32_t *dt = dev_put(t, sizeof t);
    CHECK_OK(be->softmax_xent(be, dx, dl, dx, dt, NULL, 2, 5));
    CHECK_OK(be->download(be, g, dx, sizeof g));
    CHECK_OK(be->download(be, l, dl, sizeof l));
    CHECK(isnan(l[0]) && !isnan(l[1]) && l[1] > 0);
    for (int i = 0; i < 5; i++) CHECK(isnan(g[i]) && !isnan(g[5 + i]));
    dev_free(dx), dev_free(dl), dev_free(dt);
}

/* ---- forward mode: norm_jvp, swiglu_jvp, attention_jvp ------------------ */

typedef struct { float *out; const float *a, *b, *c; int64_t rows, d; int rms; } nj_ctx;
static ss_status op_nj(void *v) {
    nj_ctx *c = v;
    return gpu()->norm_jvp(gpu(), c->out, c->a, c->b, c->c, c->rows, c->d, 1e-5f, c->rms);
}

/* Against the CPU op (itself checked against layernorm_backward/rmsnorm_backward by the adjoint
 * identity in test_jvp.c). Both keep the row statistics in fp64 and differ only in the order of
 * the sums (32 lanes and a tree vs one sweep): atol 1e-6 + rtol 1e-5 on O(1) values. Row 1 is
 * offset by 50 (a small variance relative to the mean); 40 rows fill 10 blocks of 4 warps, one
 * short; widths 1, 33 and 100 leave lanes idle. */
TEST(cuda_jvp_norm_vs_cpu) {
    const ss_backend *be = gpu(), *cpu = ss_backend_cpu();
    CHECK(be && be->norm_jvp);
    if (!be) return;
    int64_t shapes[][2] = {{1, 1}, {1, 33}, {5, 24}, {7, 100}, {3, 768}, {40, 37}};
    for (int si = 0; si < 6; si++)
        for (int rms = 0; rms < 2; rms++) {
            int64_t rows = shapes[si][0], d = shapes[si][1], n = rows * d;
            float *x = ss_test_rvec(n, 31, 1.f), *dx = ss_test_rvec(n, 32, 1.f), *w = ss_test_rvec(d, 33, 1.5f);
            if (rows > 1)
                for (int64_t i = 0; i < d; i++) x[d + i] += 50.f;
            float *got = ss_test_fvec(n, 0), *ref = ss_test_fvec(n, NAN);
            float *dy = dev_put(NULL, (size_t)n * 4), *ddx = dev_put(dx, (size_t)n * 4), *dxx = dev_put(x, (size_t)n * 4),
                  *dw = dev_put(w, (size_t)d * 4);
            nj_ctx c = {dy, ddx, dxx, dw, rows, d, rms};
            dout o = {dy, NULL, n, got};
            CHECK(run_both(op_nj, &c, &o, 1, 1));
            CHECK_OK(cpu->norm_jvp(cpu, ref, dx, x, w, rows, d, 1e-5f, rms));
            char nm[96];
            snprintf(nm, sizeof nm, "norm_jvp %s %lldx%lld", rms ? "rms" : "layer", (long long)rows, (long long)d);
            CHECK(ss_test_compare(nm, got, ref, n, 1e-6, 1e-5) == 0);
            dev_free(dy), dev_free(ddx), dev_free(dxx), dev_free(dw);
            free(x), free(dx), free(w), free(got), free(ref);
        }
}

typedef struct { float *out; const float *dgu, *gu; int64_t rows, dm; } swj_ctx;
static ss_status op_swj(void *v) {
    swj_ctx *c = v;
    return gpu()->swiglu_jvp(gpu(), c->out, c->dgu, c->gu, c->rows, c->dm);
}

/* Against a double loop and the CPU op: as swiglu_backward's test (gates in [-12, 12] plus
 * -100 and 100; fp32 with precise expf), the sum of two terms of up to ~12 may cancel (an fp32
 * rounding of each is ~1e-6; measured 1.9e-6): atol 5e-6 + rtol 1e-5. dm = 300 and 513 leave
 * partial 256-column blocks. */
TEST(cuda_jvp_swiglu_vs_reference) {
    const ss_backend *be = gpu(), *cpu = ss_backend_cpu();
    CHECK(be && be->swiglu_jvp);
    if (!be) return;
    int64_t shapes[][2] = {{1, 1}, {3, 37}, {5, 300}, {2, 513}};
    for (int si = 0; si < 4; si++) {
        int64_t rows = shapes[si][0], dm = shapes[si][1], n = rows * dm;
        float *gu = ss_test_rvec(2 * n, 41 + (unsigned)si, 1.f), *dgu = ss_test_rvec(2 * n, 42, 1.1f);
        for (int64_t r = 0; r < rows; r++)
            for (int64_t c = 0; c < dm; c++) gu[r * 2 * dm + c] *= 12.f;
        if (dm > 2) gu[0] = -100.f, gu[1] = 100.f;
        float *ref = ss_test_fvec(n, 0), *got = ss_test_fvec(n, 0), *cc = ss_test_fvec(n, NAN);
        for (int64_t r = 0; r < rows; r++)
            for (int64_t c = 0; c < dm; c++) {
                double g = gu[r * 2 * dm + c], u = gu[r * 2 * dm + dm + c], s = 1 / (1 + exp(-g));
                ref[r * dm + c] = (float)(dgu[r * 2 * dm + c] * u * s * (1 + g * (1 - s)) + dgu[r * 2 * dm + dm + c] * g * s);
            }
        float *dout_ = dev_put(NULL, (size_t)n * 4), *dd = dev_put(dgu, (size_t)(2 * n) * 4),
              *dg = dev_put(gu, (size_t)(2 * n) * 4);
        swj_ctx c = {dout_, dd, dg, rows, dm};
        dout o = {dout_, NULL, n, got};
        CHECK(run_both(op_swj, &c, &o, 1, 1));
        char nm[96];
        snprintf(nm, sizeof nm, "swiglu_jvp %lldx%lld", (long long)rows, (long long)dm);
        CHECK(ss_test_compare(nm, got, ref, n, 5e-6, 1e-5) == 0);
        CHECK_OK(cpu->swiglu_jvp(cpu, cc, dgu, gu, rows, dm));
        CHECK(ss_test_compare("  vs cpu op", got, cc, n, 5e-6, 1e-5) == 0);
        dev_free(dout_), dev_free(dd), dev_free(dg);
        free(gu), free(dgu), free(ref), free(got), free(cc);
    }
}

typedef struct {
    float *dz;
    const float *dqkv, *qkv;
    int64_t ld, n_seq, H, Hkv, dh;
    const int64_t *start, *len;
} atj_ctx;
static ss_status op_atj(void *v) {
    atj_ctx *c = v;
    const int64_t zw = c->H * c->dh, kvw = c->Hkv * c->dh;
    return gpu()->attention_jvp(gpu(), c->dz, c->dqkv, c->dqkv + zw, c->dqkv + zw + kvw, c->ld, c->qkv, c->qkv + zw,
                                c->qkv + zw + kvw, c->ld, c->n_seq, c->start, c->len, c->H, c->Hkv, c->dh,
                                1.f / sqrtf((float)c->dh));
}

/* Against the CPU op (checked against attention_backward by the adjoint identity in test_jvp.c):
 * the same fp32 scores in the same order, fp64 softmax and sums in another order (block trees,
 * tiles of 128 keys): atol 2e-6 + rtol 1e-5 on O(1) values. Shapes: one row; grouped heads
 * (H 4, Hkv 2) over three packed sequences; a sequence of 150 rows (two tiles of keys, the last
 * partial); dh 130 (past the 128 threads: a thread owns two output columns). q|k|v rows carry 3
 * spare columns (ld > the heads' width). */
TEST(cuda_jvp_attention_vs_cpu) {
    const ss_backend *be = gpu(), *cpu = ss_backend_cpu();
    CHECK(be && be->attention_jvp);
    if (!be) return;
    const struct { int64_t H, Hkv, dh, n_seq, len[3]; } cs[] = {
        {1, 1, 4, 1, {1}}, {4, 2, 6, 3, {5, 1, 9}}, {2, 1, 8, 1, {150}}, {1, 1, 130, 1, {6}}};
    for (int ci = 0; ci < 4; ci++) {
        const int64_t H = cs[ci].H, Hkv = cs[ci].Hkv, dh = cs[ci].dh, zw = H * dh, ld = (H + 2 * Hkv) * dh + 3;
        int64_t start[3], rows = 0;
        for (int64_t s = 0; s < cs[ci].n_seq; s++) start[s] = rows, rows += cs[ci].len[s];
        float *qkv = ss_test_rvec(rows * ld, 51 + (unsigned)ci, 1.5f), *dqkv = ss_test_rvec(rows * ld, 52, 1.f);
        float *got = ss_test_fvec(rows * zw, 0), *ref = ss_test_fvec(rows * zw, NAN);
        float *dz = dev_put(NULL, (size_t)(rows * zw) * 4), *dq = dev_put(dqkv, (size_t)(rows * ld) * 4),
              *dqk = dev_put(qkv, (size_t)(rows * ld) * 4);
        atj_ctx c = {dz, dq, dqk, ld, cs[ci].n_seq, H, Hkv, dh, start, cs[ci].len};
        dout o = {dz, NULL, rows * zw, got};
        CHECK(run_both(op_atj, &c, &o, 1, 1));
        const int64_t kvw = Hkv * dh;
        CHECK_OK(cpu->attention_jvp(cpu, ref, dqkv, dqkv + zw, dqkv + zw + kvw, ld, qkv, qkv + zw, qkv + zw + kvw, ld,
                                    cs[ci].n_seq, start, cs[ci].len, H, Hkv, dh, 1.f / sqrtf((float)dh)));
        char nm[96];
        snprintf(nm, sizeof nm, "attention_jvp H%lld Hkv%lld dh%lld rows %lld", (long long)H, (long long)Hkv,
                 (long long)dh, (long long)rows);
        CHECK(ss_test_compare(nm, got, ref, rows * zw, 2e-6, 1e-5) == 0);
        dev_free(dz), dev_free(dq), dev_free(dqk);
        free(qkv), free(dqkv), free(got), free(ref);
    }
}
