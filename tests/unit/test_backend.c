/* Every CPU op against a straightforward double-precision evaluation. */
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../../src/backend/cpu_internal.h"
#include "blas_rows.h"
#include "subscope/backend.h"
#include "subscope/json.h"
#include "subscope/stats.h"
#include "subscope/util.h"
#include "test.h"

TEST(cpu_matmul_matches_naive_all_layouts) {
    const ss_backend *be = ss_backend_cpu();
    int64_t shapes[][3] = {{1, 1, 1}, {3, 5, 7}, {17, 33, 9}, {40, 3, 65}};
    for (int si = 0; si < 4; si++) {
        int64_t M = shapes[si][0], N = shapes[si][1], K = shapes[si][2];
        float *A = ss_test_rvec(M * K, 1, 1.0f), *B = ss_test_rvec(K * N, 2, 1.0f), *bias = ss_test_rvec(N, 3, 1.0f);
        float *C = malloc((size_t)(M * N) * sizeof(float)), *C2 = malloc((size_t)(M * N) * sizeof(float));
        for (int tb = 0; tb < 2; tb++) {
            for (int wb = 0; wb < 2; wb++) {
                be->matmul(be, C, A, B, SS_WDTYPE_F32, wb ? bias : NULL, M, N, K, tb);
                ss_matmul_builtin(C2, A, B, wb ? bias : NULL, M, N, K, tb);
                for (int64_t i = 0; i < M; i++)
                    for (int64_t j = 0; j < N; j++) {
                        double ref = wb ? bias[j] : 0;
                        for (int64_t k = 0; k < K; k++) ref += (double)A[i * K + k] * (tb ? B[j * K + k] : B[k * N + j]);
                        CHECK_NEAR(C[i * N + j], ref, 1e-5 + 1e-5 * fabs(ref));
                        CHECK_NEAR(C2[i * N + j], ref, 1e-5 + 1e-5 * fabs(ref));
                    }
            }
        }
        free(A); free(B); free(bias); free(C); free(C2);
    }
}

/* bf16 weights: the product widens B a panel of columns at a time (cpu_ops.c,
 * matmul_bf16). Against the whole-matrix way it replaced, A rounded to bf16 and
 * all of B widened, then one fp32 product: every element within 2^-20 of the
 * sum of its terms' magnitudes, fp32 summation order (a lost or doubled term,
 * about 1/K of that sum here, is far outside; the largest error measured was
 * 1.1% of the bound). Without BLAS the sums are the built-in product's, the same
 * bits. With OpenBLAS, the panels' shapes change which kernel sums an element
 * (its edge and small-matrix kernels take another order), as the old
 * product's own split among threads did, so the bits are counted, not
 * required. Shapes: M, N or K of 1, N not a multiple of the panel (682
 * columns at K 768, 524 at K 1000, at most N / threads), rows enough that the
 * whole-matrix product splits by rows, and K 9000, taken in slices of K. */
TEST(cpu_matmul_bf16_panels_match_whole_matrix) {
    const ss_backend *be = ss_backend_cpu();
    const int64_t P = ss_num_threads();
    int64_t shapes[][3] = {{1, 1, 1}, {1, 1500, 768}, {5, 1, 1000}, {7, 300, 1}, {64 * P + 3, 1000, 1000},
                           {3, 64 * P + 6, 9000}};
    for (int si = 0; si < 6; si++) {
        int64_t M = shapes[si][0], N = shapes[si][1], K = shapes[si][2], same = 0;
        float *A = ss_test_rvec(M * K, 21, 1.0f), *Bf = ss_test_rvec(K * N, 22, 1.0f), *bias = ss_test_rvec(N, 23, 1.0f);
        float *Ar = malloc((size_t)(M * K) * sizeof(float));
        uint16_t *B = malloc((size_t)(K * N) * sizeof(uint16_t));
        for (int64_t i = 0; i < M * K; i++) Ar[i] = ss_bf16_to_f32(ss_f32_to_bf16(A[i]));
        for (int64_t i = 0; i < K * N; i++) B[i] = ss_f32_to_bf16(Bf[i]), Bf[i] = ss_bf16_to_f32(B[i]);
        float *C = malloc((size_t)(M * N) * sizeof(float)), *Cw = malloc((size_t)(M * N) * sizeof(float));
        for (int tb = 0; tb < 2; tb++)
            for (int wb = 0; wb < 2; wb++) {
                CHECK_OK(be->matmul(be, C, A, B, SS_WDTYPE_BF16, wb ? bias : NULL, M, N, K, tb));
                CHECK_OK(be->matmul(be, Cw, Ar, Bf, SS_WDTYPE_F32, wb ? bias : NULL, M, N, K, tb));
                for (int64_t i = 0; i < M; i++)
                    for (int64_t j = 0; j < N; j++) {
                        double mag = wb ? fabs(bias[j]) : 0;
                        for (int64_t k = 0; k < K; k++) mag += fabs((double)Ar[i * K + k] * (tb ? Bf[j * K + k] : Bf[k * N + j]));
                        CHECK_NEAR(C[i * N + j], Cw[i * N + j], ldexp(mag, -20));
                    }
                same += !memcmp(C, Cw, (size_t)(M * N) * sizeof(float));
#ifndef SS_HAVE_BLAS
                CHECK(!memcmp(C, Cw, (size_t)(M * N) * sizeof(float)));
#endif
            }
        printf("\n    M %lld N %lld K %lld: %lld of 4 layouts bit for bit", (long long)M, (long long)N, (long long)K,
               (long long)same);
        free(A); free(Bf); free(bias); free(Ar); free(B); free(C); free(Cw);
    }
}

TEST(cpu_layernorm_and_gelu) {
    const ss_backend *be = ss_backend_cpu();
    int64_t rows = 5, d = 24;
    float *x = ss_test_rvec(rows * d, 4, 1.0f), *w = ss_test_rvec(d, 5, 1.0f), *b = ss_test_rvec(d, 6, 1.0f), *o = malloc(sizeof(float) * 120);
    for (int64_t i = 0; i < d; i++) x[d + i] += 1000.f; /* a large common offset must not hurt */
    be->layernorm(be, o, x, w, b, rows, d, 1e-5f);
    for (int64_t r = 0; r < rows; r++) {
        double mu = 0, var = 0;
        for (int64_t i = 0; i < d; i++) mu += x[r * d + i];
        mu /= d;
        for (int64_t i = 0; i < d; i++) var += (x[r * d + i] - mu) * (x[r * d + i] - mu);
        var /= d;
        for (int64_t i = 0; i < d; i++)
            CHECK_NEAR(o[r * d + i], (x[r * d + i] - mu) / sqrt(var + 1e-5) * w[i] + b[i], 2e-5);
    }
    float in[5] = {-3.f, -0.5f, 0.f, 0.7f, 4.f}, out[5];
    be->gelu(be, out, in, 5, SS_ACT_GELU_ERF);
    for (int i = 0; i < 5; i++) CHECK_NEAR(out[i], 0.5 * in[i] * (1 + erf(in[i] / sqrt(2.0))), 1e-6);
    be->gelu(be, out, in, 5, SS_ACT_GELU_TANH);
    for (int i = 0; i < 5; i++)
        CHECK_NEAR(out[i], 0.5 * in[i] * (1 + tanh(sqrt(2 / 3.14159265358979323846) * (in[i] + 0.044715 * pow(in[i], 3)))), 1e-6);
    CHECK_NEAR(out[2], 0.0, 0.0);
    free(x); free(w); free(b); free(o);
}

/* A sequence outside the rows is refused, naming it, its start, len and the
 * rows (the op is not told its rows: those that start + len can reach), before
 * any row is read: start -1 read the row before q (here inside the buffer), and
 * start + len past INT64_MAX overflowed. */
TEST(cpu_attention_refuses_sequences_outside_the_rows) {
    const ss_backend *be = ss_backend_cpu();
    const int64_t H = 1, dh = 4, ld = 3 * H * dh;
    float *buf = ss_test_rvec(4 * ld, 5, 1.0f), *qkv = buf + ld, z[3 * 4];
    int64_t start[2] = {0, -1}, len[2] = {1, 2};
    CHECK_ERR(be->attention(be, z, qkv, qkv + 4, qkv + 8, ld, 2, start, len, H, H, dh, 0.5f, NULL, NULL), SS_ERR_ARG,
              "cpu: attention: sequence 1 (start -1, len 2) is outside rows 0..9223372036854775807");
    start[1] = INT64_MAX - 1;
    CHECK_ERR(be->attention(be, z, qkv, qkv + 4, qkv + 8, ld, 2, start, len, H, H, dh, 0.5f, NULL, NULL), SS_ERR_ARG,
              "sequence 1 (start 9223372036854775806, len 2) is outside rows");
    start[1] = 1, len[1] = -1;
    CHECK_ERR(be->attention(be, z, qkv, qkv + 4, qkv + 8, ld, 2, start, len, H, H, dh, 0.5f, NULL, NULL), SS_ERR_ARG,
              "sequence 1 (start 1, len -1)");
    free(buf);
}

/* The backward's sequences as the forward's (it checked none: start -1 ran, reading and writing the row
 * before q and dq, which start a row into their buffers here so that the test fails rather than crashes). */
TEST(cpu_attention_backward_refuses_sequences_outside_the_rows) {
    const ss_backend *be = ss_backend_cpu();
    const int64_t H = 1, dh = 4, ld = 3 * H * dh;
    float *in = ss_test_rvec(8 * ld, 6, 1.0f), *out = ss_test_fvec(4 * ld, 0), *q = in + ld, *dz = in + 5 * ld,
          *dq = out + ld;
    int64_t start[2] = {0, -1}, len[2] = {1, 2};
    CHECK_ERR(be->attention_backward(be, dq, dq + 4, dq + 8, ld, dz, q, q + 4, q + 8, ld, 2, start, len, H, H, dh, 0.5f),
              SS_ERR_ARG, "cpu: attention_backward: sequence 1 (start -1, len 2) is outside rows 0..9223372036854775807");
    start[1] = 1, len[1] = -1;
    CHECK_ERR(be->attention_backward(be, dq, dq + 4, dq + 8, ld, dz, q, q + 4, q + 8, ld, 2, start, len, H, H, dh, 0.5f),
              SS_ERR_ARG, "sequence 1 (start 1, len -1)");
    start[1] = INT64_MAX - 1, len[1] = 2;
    CHECK_ERR(be->attention_backward(be, dq, dq + 4, dq + 8, ld, dz, q, q + 4, q + 8, ld, 2, start, len, H, H, dh, 0.5f),
              SS_ERR_ARG, "sequence 1 (start 9223372036854775806, len 2) is outside rows");
    free(in), free(out);
}

TEST(cpu_attention_causal_packed_sequences) {
    const ss_backend *be = ss_backend_cpu();
    const int64_t H = 3, dh = 4, d = H * dh, ld = 3 * d;
    int64_t start[3] = {0, 1, 6}, len[3] = {1, 5, 3}, rows = 9, poff[3];
    float *qkv = ss_test_rvec(rows * ld, 7, 1.0f), *z = malloc(sizeof(float) * (size_t)(rows * d));
    int64_t pt = 0;
    for (int s = 0; s < 3; s++) poff[s] = pt, pt += H * len[s] * len[s];
    float *pat = malloc(sizeof(float) * (size_t)pt);
    float scale = 0.5f;
    CHECK_OK(be->attention(be, z, qkv, qkv + d, qkv + 2 * d, ld, 3, start, len, H, H, dh, scale, pat, poff));
    for (int s = 0; s < 3; s++)
        for (int64_t h = 0; h < H; h++)
            for (int64_t i = 0; i < len[s]; i++) {
                double sc[8], mx = -1e300, sum = 0;
                for (int64_t j = 0; j <= i; j++) {
                    double dot = 0;
                    for (int64_t e = 0; e < dh; e++)
                        dot += (double)qkv[(start[s] + i) * ld + h * dh + e] * qkv[(start[s] + j) * ld + d + h * dh + e];
                    sc[j] = dot * scale;
                    mx = sc[j] > mx ? sc[j] : mx;
                }
                for (int64_t j = 0; j <= i; j++) sum += (sc[j] = exp(sc[j] - mx));
                for (int64_t j = 0; j < len[s]; j++) {
                    double p = j <= i ? sc[j] / sum : 0.0;
                    CHECK_NEAR(pat[poff[s] + (h * len[s] + i) * len[s] + j], p, 1e-6);
                }
                for (int64_t e = 0; e < dh; e++) {
                    double ref = 0;
                    for (int64_t j = 0; j <= i; j++) ref += sc[j] / sum * qkv[(start[s] + j) * ld + 2 * d + h * dh + e];
                    CHECK_NEAR(z[(start[s] + i) * d + h * dh + e], ref, 1e-6);
                }
            }
    free(qkv); free(z); free(pat);
}

TEST(cpu_embed_and_add) {
    const ss_backend *be = ss_backend_cpu();
    float *wte = ss_test_rvec(10 * 4, 8, 1.0f), *wpe = ss_test_rvec(6 * 4, 9, 1.0f), t[12], p[12], s[12];
    int32_t tok[3] = {9, 0, 4}, pos[3] = {0, 1, 5};
    be->embed(be, t, p, tok, pos, wte, wpe, SS_WDTYPE_F32, 3, 4);
    be->add(be, s, t, p, 12);
    for (int i = 0; i < 3; i++)
        for (int e = 0; e < 4; e++) {
            CHECK(t[i * 4 + e] == wte[tok[i] * 4 + e] && p[i * 4 + e] == wpe[pos[i] * 4 + e]);
            CHECK(s[i * 4 + e] == t[i * 4 + e] + p[i * 4 + e]);
        }
    free(wte); free(wpe);
}

TEST(cpu_rowwise_ops_split_across_threads_match) {
    /* Sizes that span several parallel tasks, with ragged last tasks. */
    const ss_backend *be = ss_backend_cpu();
    int64_t n = 100003, rows = 77, d = 16;
    float *x = ss_test_rvec(n, 11, 1.0f), *o = malloc((size_t)n * sizeof(float));
    be->gelu(be, o, x, n, SS_ACT_GELU_TANH);
    for (int64_t i = 0; i < n; i += 997)
        CHECK_NEAR(o[i], 0.5 * x[i] * (1 + tanh(sqrt(2 / 3.14159265358979323846) * (x[i] + 0.044715 * pow(x[i], 3)))), 1e-6);
    CHECK_NEAR(o[n - 1], 0.5 * x[n - 1] * (1 + tanh(sqrt(2 / 3.14159265358979323846) * (x[n - 1] + 0.044715 * pow(x[n - 1], 3)))), 1e-6);
    float w[16], b[16];
    for (int i = 0; i < 16; i++) w[i] = 1.f, b[i] = 0.f;
    be->layernorm(be, o, x, w, b, rows, d, 1e-5f);
    for (int64_t r = 0; r < rows; r++) {
        double mu = 0, ss = 0;
        for (int64_t i = 0; i < d; i++) mu += o[r * d + i];
        for (int64_t i = 0; i < d; i++) ss += o[r * d + i] * o[r * d + i];
        CHECK_NEAR(mu / d, 0.0, 1e-5);
        CHECK_NEAR(ss / d, 1.0, 1e-3);
    }
    free(x);
    free(o);
}

/* The same op run nested in a pool task, where ss_parallel_for runs it on one thread. */
typedef struct {
    const ss_backend *be;
    float *out;
    const float *gu;
    int64_t rows, dm;
} swiglu_args;

static void swiglu_serial(void *vctx, int64_t i) {
    const swiglu_args *a = vctx;
    if (i == 0) a->be->swiglu(a->be, a->out, a->gu, a->rows, a->dm);
}

TEST(cpu_swiglu_split_across_threads_matches_one_thread) {
    const ss_backend *be = ss_backend_cpu();
    /* a ragged last task of rows (GELU_CHUNK / dm rows a task), and rows wider than a task */
    const int64_t shapes[][2] = {{77, 1000}, {3, 40000}, {1, 5}};
    for (int k = 0; k < 3; k++) {
        const int64_t rows = shapes[k][0], dm = shapes[k][1], n = rows * dm;
        float *gu = ss_test_rvec(2 * n, 21 + k, 6.0f), *par = ss_test_fvec(n, NAN), *one = ss_test_fvec(n, NAN);
        CHECK_OK(be->swiglu(be, par, gu, rows, dm));
        swiglu_args a = {be, one, gu, rows, dm};
        ss_parallel_for(2, swiglu_serial, &a);
        for (int64_t r = 0; r < rows; r++)
            for (int64_t i = 0; i < dm; i++) {
                const float g = gu[r * 2 * dm + i], u = gu[r * 2 * dm + dm + i];
                CHECK_MSG(!memcmp(&par[r * dm + i], &one[r * dm + i], sizeof(float)), "[%lld, %lld]: %.9g threaded, %.9g on one thread",
                          (long long)r, (long long)i, par[r * dm + i], one[r * dm + i]);
                CHECK_NEAR(par[r * dm + i], g / (1.0 + exp(-(double)g)) * u, 1e-6 + 1e-6 * fabs(g * u));
            }
        free(gu), free(par), free(one);
    }
}

/* add, rope and swiglu_backward the same way: threaded against nested in a pool task. */
typedef struct {
    const ss_backend *be;
    int op; /* 0 add, 1 rope, 2 rope inverse, 3 swiglu_backward */
    float *out;
    const float *a, *b, *inv_freq;
    const int32_t *pos;
    int64_t n, ld, rows, heads, dh;
    ss_status st;
} ew_args;

static ss_status ew_run(const ew_args *a) {
    const ss_backend *be = a->be;
    if (a->op == 0) return be->add(be, a->out, a->a, a->b, a->n);
    if (a->op == 3) return be->swiglu_backward(be, a->out, a->b, a->a, a->rows, a->dh);
    return be->rope(be, a->out, a->ld, a->rows, a->heads, a->dh, a->pos, a->inv_freq, a->op == 2);
}

static void ew_serial(void *vctx, int64_t i) {
    ew_args *a = vctx;
    if (i == 0) a->st = ew_run(a);
}

/* Runs the op threaded into par and nested into one (both start as init, n floats) and compares bit for bit. */
static void ew_both(ew_args a, float *par, float *one, const float *init, int64_t n) {
    memcpy(par, init, (size_t)n * sizeof(float)), memcpy(one, init, (size_t)n * sizeof(float));
    a.out = par;
    CHECK_OK(ew_run(&a));
    a.out = one, a.st = SS_ERR_INTERNAL;
    ss_parallel_for(2, ew_serial, &a);
    CHECK_OK(a.st);
    for (int64_t i = 0; i < n; i++)
        CHECK_MSG(!memcmp(&par[i], &one[i], sizeof(float)), "op %d, [%lld]: %.9g threaded, %.9g on one thread", a.op,
                  (long long)i, par[i], one[i]);
}

TEST(cpu_add_rope_swiglu_backward_split_across_threads_match_one_thread) {
    const ss_backend *be = ss_backend_cpu();
    /* add: several tasks of GELU_CHUNK with a ragged last one, out aliasing a as the residual adds do */
    const int64_t n = 100003;
    float *x = ss_test_rvec(n, 31, 2.0f), *y = ss_test_rvec(n, 32, 2.0f), *par = malloc(n * sizeof(float)),
          *one = malloc(n * sizeof(float));
    ew_both((ew_args){.be = be, .op = 0, .a = x, .b = y, .n = n}, par, one, x, n);
    for (int64_t i = 0; i < n; i++) CHECK(par[i] == x[i] + y[i]);
    memcpy(par, x, n * sizeof(float));
    CHECK_OK(be->add(be, par, par, y, n));
    CHECK(!memcmp(par, one, n * sizeof(float)));
    free(x), free(y), free(par), free(one);

    /* rope: rows of GELU_CHUNK / (heads·dh) a task with a ragged last one, padded rows (ld > heads·dh) whose
     * padding stays, and rows wider than a task; both directions */
    const int64_t shapes[][4] = {{77, 5, 8, 48}, {3, 2, 20000, 40001}, {1, 1, 2, 2}}; /* rows, heads, dh, ld */
    for (int k = 0; k < 3; k++) {
        const int64_t rows = shapes[k][0], heads = shapes[k][1], dh = shapes[k][2], ld = shapes[k][3], m = rows * ld;
        float *q = ss_test_rvec(m, 41 + k, 1.0f), *inv = malloc((size_t)dh / 2 * sizeof(float));
        float *p1 = malloc(m * sizeof(float)), *o1 = malloc(m * sizeof(float));
        int32_t *pos = malloc((size_t)rows * sizeof(int32_t));
        for (int64_t i = 0; i < dh / 2; i++) inv[i] = powf(10000.0f, -2.0f * (float)i / (float)dh);
        for (int64_t r = 0; r < rows; r++) pos[r] = (int32_t)((r * 37) % 101);
        for (int inverse = 0; inverse < 2; inverse++) {
            ew_both((ew_args){.be = be, .op = 1 + inverse, .inv_freq = inv, .pos = pos, .ld = ld, .rows = rows,
                              .heads = heads, .dh = dh},
                    p1, o1, q, m);
            for (int64_t r = 0; r < rows; r++) {
                for (int64_t h = 0; h < heads; h++)
                    for (int64_t i = 0; i < dh / 2; i++) {
                        const double a = (double)(float)((float)pos[r] * inv[i]) * (inverse ? -1 : 1);
                        const float *x0 = q + r * ld + h * dh;
                        const double r0 = x0[i] * cos(a) - x0[i + dh / 2] * sin(a),
                                     r1 = x0[i + dh / 2] * cos(a) + x0[i] * sin(a);
                        CHECK_NEAR(p1[r * ld + h * dh + i], r0, 1e-5);
                        CHECK_NEAR(p1[r * ld + h * dh + i + dh / 2], r1, 1e-5);
                    }
                for (int64_t e = heads * dh; e < ld; e++) CHECK(p1[r * ld + e] == q[r * ld + e]);
            }
        }
        free(q), free(inv), free(p1), free(o1), free(pos);
    }

    /* swiglu_backward: the swiglu test's shapes */
    const int64_t sw[][2] = {{77, 1000}, {3, 40000}, {1, 5}};
    for (int k = 0; k < 3; k++) {
        const int64_t rows = sw[k][0], dm = sw[k][1], m = rows * dm;
        float *gu = ss_test_rvec(2 * m, 51 + k, 6.0f), *dy = ss_test_rvec(m, 54 + k, 1.0f), *init = ss_test_fvec(2 * m, NAN);
        float *p1 = malloc(2 * m * sizeof(float)), *o1 = malloc(2 * m * sizeof(float));
        ew_both((ew_args){.be = be, .op = 3, .a = gu, .b = dy, .rows = rows, .dh = dm}, p1, o1, init, 2 * m);
        for (int64_t r = 0; r < rows; r++)
            for (int64_t i = 0; i < dm; i++) {
                const double g = gu[r * 2 * dm + i], u = gu[r * 2 * dm + dm + i], d = dy[r * dm + i];
                const double sg = 1 / (1 + exp(-g));
                CHECK_NEAR(p1[r * 2 * dm + i], d * u * sg * (1 + g * (1 - sg)), 1e-6 + 1e-6 * fabs(d * u));
                CHECK_NEAR(p1[r * 2 * dm + dm + i], d * g * sg, 1e-6 + 1e-6 * fabs(d * g));
            }
        free(gu), free(dy), free(init), free(p1), free(o1);
    }
}

/* sum_rows and the norms' backward the same way, and also bit for bit against the one-thread loops they replaced
 * (nb_before), so that splitting them changed no result. */
typedef struct {
    const ss_backend *be;
    int op; /* 0 sum_rows, 1 layernorm_backward, 2 rmsnorm_backward */
    float *dx, *dw, *db;
    const float *dy, *x, *w;
    int64_t rows, d;
    ss_status st;
} nb_args;

static ss_status nb_run(const nb_args *a) {
    const ss_backend *be = a->be;
    if (a->op == 0) return be->sum_rows(be, a->dw, a->dy, a->rows, a->d);
    if (a->op == 1) return be->layernorm_backward(be, a->dx, a->dw, a->db, a->dy, a->x, a->w, a->rows, a->d, 1e-5f);
    return be->rmsnorm_backward(be, a->dx, a->dw, a->dy, a->x, a->w, a->rows, a->d, 1e-5f);
}

static void nb_serial(void *vctx, int64_t i) {
    nb_args *a = vctx;
    if (i == 0) a->st = nb_run(a);
}

/* The CPU backend's one-thread loops before they were split (layernorm's dx had its own row tasks already). */
static void nb_before(const nb_args *a) {
    const int64_t rows = a->rows, d = a->d;
    double *acc = calloc((size_t)(2 * d) + 1, sizeof(double));
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = a->x + r * d, *dyr = a->dy + r * d;
        if (a->op == 0) {
            for (int64_t j = 0; j < d; j++) acc[j] += dyr[j];
        } else if (a->op == 1) {
            double mean = 0, var = 0;
            for (int64_t i = 0; i < d; i++) mean += xr[i];
            mean /= (double)d;
            for (int64_t i = 0; i < d; i++) var += (xr[i] - mean) * (xr[i] - mean);
            const double rstd = 1.0 / sqrt(var / (double)d + (double)1e-5f);
            for (int64_t i = 0; i < d; i++) {
                acc[i] += (double)dyr[i] * (xr[i] - mean) * rstd;
                acc[d + i] += dyr[i];
            }
            double mg = 0, mgx = 0;
            for (int64_t i = 0; i < d; i++) {
                double g = (double)dyr[i] * a->w[i];
                mg += g;
                mgx += g * (xr[i] - mean) * rstd;
            }
            mg /= (double)d;
            mgx /= (double)d;
            if (a->dx)
                for (int64_t i = 0; i < d; i++) {
                    double g = (double)dyr[i] * a->w[i], xh = (xr[i] - mean) * rstd;
                    a->dx[r * d + i] += (float)(rstd * (g - mg - xh * mgx));
                }
        } else {
            double ss = 0, gx = 0;
            for (int64_t i = 0; i < d; i++) {
                ss += (double)xr[i] * xr[i];
                gx += (double)dyr[i] * a->w[i] * xr[i];
            }
            const double rstd = 1.0 / sqrt(ss / (double)d + (double)1e-5f), k = rstd * rstd * gx / (double)d;
            if (a->dx)
                for (int64_t i = 0; i < d; i++) a->dx[r * d + i] += (float)(rstd * ((double)dyr[i] * a->w[i] - xr[i] * k));
            if (a->dw)
                for (int64_t i = 0; i < d; i++) a->dw[i] += (float)((double)dyr[i] * xr[i] * rstd);
        }
    }
    if (a->op < 2)
        for (int64_t i = 0; i < d; i++) {
            if (a->dw) a->dw[i] += (float)acc[i];
            if (a->db) a->db[i] += (float)acc[d + i];
        }
    free(acc);
}

static void nb_same(const char *what, int op, const float *par, const float *one, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        CHECK_MSG(!memcmp(&par[i], &one[i], sizeof(float)), "op %d, %s[%lld]: %.9g threaded, %.9g against", op, what,
                  (long long)i, par[i], one[i]);
}

/* ss_test_rvec's values lie on a grid of 2^-15, where short sums are exact in any order: divided by 7 they are not. */
static float *offgrid_rvec(int64_t n, unsigned seed, float amp) {
    float *v = ss_test_rvec(n, seed, amp);
    for (int64_t i = 0; i < n; i++) v[i] /= 7.0f;
    return v;
}

TEST(cpu_norm_backward_and_sum_rows_split_across_threads_match_one_thread) {
    const ss_backend *be = ss_backend_cpu();
    /* rows: several row tasks (32 a task) with a ragged last one, and one; columns: blocks of the columns over the
     * threads (at least 64) with a ragged last one, a single short block; and one large enough that the threads
     * overlap */
    const int64_t shapes[][2] = {{77, 200}, {1, 130}, {40, 5}, {1000, 600}};
    for (int k = 0; k < 4; k++) {
        const int64_t rows = shapes[k][0], d = shapes[k][1], n = rows * d;
        float *x = offgrid_rvec(n, 61 + k, 3.0f), *dy = offgrid_rvec(n, 64 + k, 1.0f), *w = offgrid_rvec(d, 67 + k, 1.0f);
        float *dx0 = offgrid_rvec(n, 70 + k, 0.5f), *dw0 = offgrid_rvec(d, 73 + k, 0.5f), *db0 = offgrid_rvec(d, 76 + k, 0.5f);
        for (int op = 0; op < 3; op++)
            for (int which = 0; which < 3; which++) { /* all outputs, the weight gradients alone, dx alone */
                if (op == 0 && which) continue;
                float *p[3], *o[3], *b[3];
                const float *init[3] = {dx0, dw0, db0};
                const int64_t len[3] = {n, d, d};
                for (int t = 0; t < 3; t++) {
                    const int on = t == 0 ? op && which != 1 : t == 1 ? which != 2 : op == 1 && which != 2;
                    p[t] = on ? malloc((size_t)len[t] * sizeof(float)) : NULL;
                    o[t] = on ? malloc((size_t)len[t] * sizeof(float)) : NULL;
                    b[t] = on ? malloc((size_t)len[t] * sizeof(float)) : NULL;
                    if (on)
                        for (int64_t i = 0; i < len[t]; i++) p[t][i] = o[t][i] = b[t][i] = init[t][i];
                }
                nb_args a = {be, op, p[0], p[1], p[2], dy, x, w, rows, d, SS_OK};
                CHECK_OK(nb_run(&a));
                a.dx = o[0], a.dw = o[1], a.db = o[2], a.st = SS_ERR_INTERNAL;
                ss_parallel_for(2, nb_serial, &a);
                CHECK_OK(a.st);
                a.dx = b[0], a.dw = b[1], a.db = b[2];
                nb_before(&a);
                const char *names[3] = {"dx", "dw", "db"};
                for (int t = 0; t < 3; t++)
                    if (p[t]) {
                        nb_same(names[t], op, p[t], o[t], len[t]);
                        nb_same(names[t], op, p[t], b[t], len[t]);
                    }
                for (int t = 0; t < 3; t++) free(p[t]), free(o[t]), free(b[t]);
            }
        free(x), free(dy), free(w), free(dx0), free(dw0), free(db0);
    }
}

static long minor_faults(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_minflt;
}

/* A released block is kept and handed out again: a pass that allocates the
 * same buffers as the last one does not fault their pages in afresh. */
/* bf16 products in blocks of A's rows and wide panels (cpu_ops.c,
 * ss_cpu_matmul_bf16) against one block of all the rows in 2 MiB panels, the
 * way the product was before the blocks: the same bits, every element, with
 * or without BLAS (OpenBLAS sums in the same order whatever the call's shape
 * outside its small-matrix kernels, which the blocks stay out of). Values
 * off the 2^-15 grid, so a sum in another order shows. Blocks of 30 or 31
 * rows (a ragged count), panels of 256 columns (ragged last ones of 88 and
 * 89) where the old way's were 174, and K 9000 in slices with a ragged
 * last slice and panel, at 2 threads; N 160 where the per-thread clamp
 * makes the wide panels as narrow as the 2 MiB ones (used[2]: each thread's
 * scratch is one panel's columns over its slice of K, at most the whole K,
 * not 256 columns' worth); the product must keep to the old
 * way's one block where a block's calls would be small (M 300, K 100,
 * blocks of 20 rows, and a small product). */
TEST(cpu_matmul_bf16_row_blocks_match_one_block) {
    int64_t shapes[][4] = {{151, 600, 3000, 32}, {151, 601, 3000, 32}, {700, 134, 9000, 300}, {151, 160, 3000, 32},
                           {300, 300, 100, 20}, {40, 10, 30, 16}};
    for (int si = 0; si < 6; si++) {
        const int64_t M = shapes[si][0], N = shapes[si][1], K = shapes[si][2], a_block = shapes[si][3] * K;
        float *A = offgrid_rvec(M * K, 81, 1.0f), *Bf = offgrid_rvec(K * N, 82, 1.0f), *bias = offgrid_rvec(N, 83, 1.0f);
        uint16_t *B = malloc((size_t)(K * N) * sizeof(uint16_t));
        for (int64_t i = 0; i < K * N; i++) B[i] = ss_f32_to_bf16(Bf[i]);
        float *C = malloc((size_t)(M * N) * sizeof(float)), *C1 = malloc((size_t)(M * N) * sizeof(float));
        int64_t used[3], used1[3];
        /* the same bits where the BLAS gives a row the same bits in a call of a block's rows
         * (blas_rows.h), or where one block was used; else within fp32 rounding */
        int exact = -1;
        for (int tb = 0; tb < 2; tb++)
            for (int wb = 0; wb < 2; wb++) {
                CHECK_OK(ss_cpu_matmul_bf16(C, A, B, wb ? bias : NULL, M, N, K, tb, a_block, 1, used));
                CHECK_OK(ss_cpu_matmul_bf16(C1, A, B, wb ? bias : NULL, M, N, K, tb, M * K, 0, used1));
                if (exact < 0 && !(exact = used[0] == 1 || blas_rows_invariant()))
                    printf("\n    M %lld N %lld K %lld: kernels not known to keep a row's bits by its call's rows (blas_rows.h): within rounding",
                           (long long)M, (long long)N, (long long)K);
                int64_t diff = 0;
                for (int64_t i = 0; i < M * N; i++)
                    diff += exact ? memcmp(&C[i], &C1[i], sizeof(float)) != 0
                                  : !(fabsf(C[i] - C1[i]) <= 1e-5f * (1.0f + fabsf(C1[i])));
                CHECK_MSG(!diff, "M %lld N %lld K %lld trans_b %d bias %d: %lld elements differ", (long long)M,
                          (long long)N, (long long)K, tb, wb, (long long)diff);
                CHECK(used1[0] == 1);
                CHECK(si < 4 ? used[0] > 1 : used[0] == 1);
                for (int w = 0; w < 2; w++) {
                    const int64_t *u = w ? used1 : used;
                    CHECK_MSG(u[2] % u[1] == 0 && u[2] / u[1] <= K, "M %lld N %lld K %lld: scratch of %lld floats for panels of %lld columns",
                              (long long)M, (long long)N, (long long)K, (long long)u[2], (long long)u[1]);
                }
            }
        printf("\n    M %lld N %lld K %lld: %lld blocks, panels of %lld columns, %lld floats (one block: %lld, %lld)",
               (long long)M, (long long)N, (long long)K, (long long)used[0], (long long)used[1], (long long)used[2],
               (long long)used1[1], (long long)used1[2]);
        free(A); free(Bf); free(bias); free(B); free(C); free(C1);
    }
}

TEST(cpu_released_blocks_are_reused) {
    const ss_backend *be = ss_backend_cpu();
    const size_t big = (size_t)32 << 20, pages = big / 4096;
    ss_cpu_cache_drop();
    void *a, *b, *c;
    CHECK_OK(be->alloc(be, big, "a", &a));
    memset(a, 1, big);
    be->release(be, a);
    CHECK(ss_cpu_cached_bytes() >= big);
    long f0 = minor_faults();
    CHECK_OK(be->alloc(be, big - 4096, "b", &b)); /* a little less fits it too */
    memset(b, 2, big - 4096);
    long faults = minor_faults() - f0;
    CHECK_MSG(faults < (long)pages / 4, "%ld page faults touching a reused block of %zu pages", faults, pages);
    CHECK(ss_cpu_cached_bytes() == 0);
    be->release(be, b);
    /* A request that no kept block fits (it is not twice as large) gives them back first. */
    CHECK_OK(be->alloc(be, big / 4, "c", &c));
    CHECK(ss_cpu_cached_bytes() == 0);
    be->release(be, c);
    CHECK(ss_cpu_cached_bytes() >= big / 4);
    /* Small blocks go straight back to malloc; closing the backend gives back the rest. */
    const size_t kept = ss_cpu_cached_bytes();
    CHECK_OK(be->alloc(be, 1000, "small", &a));
    be->release(be, a);
    CHECK(ss_cpu_cached_bytes() == kept);
    ss_backend_close((ss_backend *)be);
    CHECK(ss_cpu_cached_bytes() == 0);
}

#if defined(__GLIBC__) && !defined(__SANITIZE_ADDRESS__)
/* Kept blocks give way to any allocation that fails, not only to the backend's own: under an
 * address-space limit (ulimit -v) with no room for 64 MiB beside a kept block of 64 MiB, an
 * ss_malloc, ss_calloc or ss_realloc of 64 MiB is made once the block is given back (collect's
 * covariance after its passes failed so). In a child: the limit is the process's. Not under
 * AddressSanitizer, whose allocator does not return NULL. */
/* In a child: keeps a block of big bytes and limits the address space to the child's now (the
 * kept block's included) and half of big, so that a second block of big fits only once the kept
 * one is given back. 0, or the child's exit status (8: the hard limit leaves no room). */
static int keep_under_limit(size_t big) {
    const ss_backend *be = ss_backend_cpu();
    long pages = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f || fscanf(f, "%ld", &pages) != 1) return 3;
    fclose(f);
    void *p;
    if (be->alloc(be, big, "kept", &p)) return 4;
    memset(p, 1, big);
    be->release(be, p);
    if (ss_cpu_cached_bytes() < big) return 5;
    struct rlimit rl;
    if (getrlimit(RLIMIT_AS, &rl)) return 6;
    rl.rlim_cur = (rlim_t)pages * (rlim_t)sysconf(_SC_PAGESIZE) + big + (big >> 1);
    if (rl.rlim_max != RLIM_INFINITY && rl.rlim_cur > rl.rlim_max) return 8;
    if (setrlimit(RLIMIT_AS, &rl)) return 6;
    return 0;
}

/* Runs child(big) in a forked process after keep_under_limit(big), and checks it exited 0;
 * its stderr is the failure's message. */
static void under_limit(size_t big, int (*child)(size_t big)) {
    int fds[2];
    CHECK(pipe(fds) == 0);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        dup2(fds[1], 2);
        close(fds[0]);
        const int kept = keep_under_limit(big);
        _exit(kept ? kept : child(big));
    }
    close(fds[1]);
    char buf[8192];
    const int status = ss_test_child_wait(pid, fds[0], buf, sizeof buf);
    if (WIFEXITED(status) && WEXITSTATUS(status) == 8) {
        printf("\n    not run: the hard address-space limit leaves no room for the test");
        return;
    }
    CHECK_MSG(WIFEXITED(status) && WEXITSTATUS(status) == 0, "status %d: %.300s", status, buf);
}

static int alloc_beside_kept(size_t big) {
    const ss_backend *be = ss_backend_cpu();
    void *p;
    for (int which = 0; which < 3; which++) {
        void *q = which == 0 ? ss_malloc(big, "test") : which == 1 ? ss_calloc(1, big, "test")
                                                                    : ss_realloc(NULL, big, "test");
        if (!q) {
            fprintf(stderr, "%s failed: %s\n", which == 0 ? "ss_malloc" : which == 1 ? "ss_calloc" : "ss_realloc",
                    ss_last_error());
            return 1;
        }
        memset(q, 2, big);
        free(q);
        if (be->alloc(be, big, "kept", &p)) return 7; /* a block kept again for the next */
        be->release(be, p);
    }
    return 0;
}

TEST(cpu_kept_blocks_give_way_to_a_failed_allocation) { under_limit((size_t)64 << 20, alloc_beside_kept); }

/* The library's own large host buffers give way too: collect's fp64 co-moment matrix (d x d)
 * was a plain calloc, refused beside a kept block with no retry. */
static int moments_beside_kept(size_t big) {
    (void)big;
    ss_moments m;
    memset(&m, 0, sizeof m);
    if (ss_moments_init(&m, 2896, 1)) { /* 2896^2 doubles: 64.0 MiB */
        fprintf(stderr, "ss_moments_init failed: %s\n", ss_last_error());
        return 1;
    }
    ss_moments_free(&m);
    return 0;
}

TEST(cpu_kept_blocks_give_way_to_the_co_moment_matrix) { under_limit((size_t)64 << 20, moments_beside_kept); }

/* And the JSON parser's (tokenizer.json, config.json; the tokenizer and the BPE trainer allocate
 * as it does): a string of 40 MiB is one block of the document's arena, a plain malloc refused
 * beside a kept block with no retry. The text is the parent's, made before the limit. */
static char *json_text;
static size_t json_len;
static int json_beside_kept(size_t big) {
    (void)big;
    ss_json_doc *doc = NULL;
    if (ss_json_parse(json_text, json_len, "big.json", &doc)) {
        fprintf(stderr, "ss_json_parse failed: %s\n", ss_last_error());
        return 1;
    }
    const ss_json *r = ss_json_root(doc);
    const int ok = r->type == SS_JSON_STRING && r->len == json_len - 2;
    ss_json_free(doc);
    return ok ? 0 : 9;
}

TEST(cpu_kept_blocks_give_way_to_a_json_document) {
    json_len = ((size_t)40 << 20) + 2;
    json_text = malloc(json_len);
    CHECK(json_text);
    if (!json_text) return;
    memset(json_text, 'a', json_len);
    json_text[0] = json_text[json_len - 1] = '"';
    under_limit((size_t)64 << 20, json_beside_kept);
    free(json_text);
}
#endif

#if defined(__SANITIZE_ADDRESS__)
/* Under AddressSanitizer a kept block is poisoned, and a reused one is addressable only as
 * far as its request: a read after its release, or past the request, is reported. */
TEST(cpu_kept_blocks_stay_poisoned_under_asan) {
    const size_t mib = (size_t)1 << 20;
    for (int which = 0; which < 2; which++) {
        int fds[2];
        CHECK(pipe(fds) == 0);
        pid_t pid = fork();
        CHECK(pid >= 0);
        if (pid == 0) {
            dup2(fds[1], 2);
            close(fds[0]);
            const ss_backend *be = ss_backend_cpu();
            void *p, *q;
            if (be->alloc(be, mib, "p", &p)) _exit(3);
            memset(p, 1, mib);
            be->release(be, p);
            if (which == 1 && (be->alloc(be, mib - 4096, "q", &q) || q != p)) _exit(4); /* the same block again */
            volatile char *v = p;
            _exit(v[mib - 100] == 1 ? 0 : 2);
        }
        close(fds[1]);
        char buf[8192];
        const int status = ss_test_child_wait(pid, fds[0], buf, sizeof buf);
        CHECK_MSG(!(WIFEXITED(status) && (WEXITSTATUS(status) == 0 || WEXITSTATUS(status) >= 3)),
                  "case %d: the read went unreported (status %d)", which, status);
        CHECK_MSG(strstr(buf, "AddressSanitizer: use-after-poison") != NULL, "case %d: no report: \"%.300s\"", which,
                  buf);
    }
}
#endif

/* Ranks started together on a node take different GPUs under "cuda"/"auto". */
TEST(backend_local_rank_picks_the_gpu) {
    const char *keep = getenv("OMPI_COMM_WORLD_LOCAL_RANK");
    char saved[32] = "";
    if (keep) snprintf(saved, sizeof saved, "%s", keep);
    setenv("OMPI_COMM_WORLD_LOCAL_RANK", "5", 1);
    CHECK(ss_local_rank() == 5);
    CHECK(ss_device_for_rank(5, 8) == 5 && ss_device_for_rank(5, 4) == 1 && ss_device_for_rank(5, 0) == 0);
    setenv("OMPI_COMM_WORLD_LOCAL_RANK", "x", 1); /* not a number: the next variable, or 0 */
    CHECK(ss_local_rank() == 0 || getenv("SLURM_LOCALID") || getenv("MPI_LOCALRANKID"));
    if (keep) setenv("OMPI_COMM_WORLD_LOCAL_RANK", saved, 1);
    else unsetenv("OMPI_COMM_WORLD_LOCAL_RANK");
}
