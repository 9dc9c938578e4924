/* kernel_check: every CUDA kernel of kernels/ run natively on a GPU against
 * the CPU reference ops of libsubscope (or double-precision loops where the
 * CPU backend has no such op), at the shapes of tests/unit/test_kernels.c
 * and at model-sized shapes (GPT-2 small to large widths, 1024-token
 * sequences, dh 64/128/256, packed sequences), with fp32/fp16/bf16 weights
 * where the launcher takes a weight dtype.
 *
 *   kernel_check [--quick] [--filter SUBSTR] [--device N]
 *
 * --quick keeps only the small shapes (for compute-sanitizer, which slows
 * kernels down by 10-100x); --filter runs the cases whose name contains
 * SUBSTR. Every case prints one line:
 *
 *   CASE <name> n=<elements> nmse=<x> max_err=<x> gpu_ms=<x> ok|FAIL ...
 *
 * and the run ends with "kernel_check: N cases, M failed". A case passes when
 * every element satisfies |got - ref| <= atol + rtol*|ref| (NaN fails) and
 * two launches give bitwise-equal results: apart from embed_backward
 * (float atomics, compared with a tolerance only) no kernel uses atomics,
 * so a difference means a race or a read of uninitialised memory. The
 * backward ops' cases are named "bwd ..." (--filter bwd runs them all);
 * accumulating outputs start from the same non-zero values each launch. Outputs are
 * filled with NaN bytes (0xff) before each launch, so an element a kernel
 * forgets to write fails too. Exit 0 if every case passed, 1 otherwise, 2 on
 * a CUDA error that leaves the device unusable (the run stops there).
 *
 * This file is separate from test_kernels.c on purpose: that one runs under
 * the emulation (host memory, both thread orders, tiny shapes), this one
 * needs device buffers and timing; they share only the tolerances' reasoning
 * (see the comments there). */
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "subscope/backend.h"
#include "subscope/stats.h"
#include "subscope/cuda_kernels.h"
#include "subscope/cov_blk.h"
#include "subscope/masks.h"
#include "subscope/util.h"
#include "../unit/ref_softmax.h"

static int g_quick, g_cases, g_failed;
static const char *g_filter;
static cudaStream_t g_stream;
static cudaEvent_t g_ev0, g_ev1;
/* Byte the outputs are filled with before each launch: 0xff (NaN) so an
 * unwritten element fails; 0 where the expected value is NaN itself. */
static int g_fill = 0xff;

/* ---- host and device buffers ------------------------------------------ */

static void die_cuda(cudaError_t e, const char *what) {
    fflush(stdout);
    fprintf(stderr, "kernel_check: CUDA error in %s: %s (%s)\n", what, cudaGetErrorString(e), cudaGetErrorName(e));
    printf("kernel_check: %d cases, %d failed; stopped by a CUDA error in %s: %s\n", g_cases, g_failed + 1, what,
           cudaGetErrorString(e));
    exit(2);
}

#define CU(call, what)                                 \
    do {                                               \
        cudaError_t e_ = (call);                       \
        if (e_ != cudaSuccess) die_cuda(e_, what);     \
    } while (0)

static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) {
        fprintf(stderr, "kernel_check: out of host memory (%zu bytes)\n", n);
        exit(2);
    }
    return p;
}

/* Uniform in [-1, 1) on a 2^-15 grid: a counter through a 32-bit finaliser
 * (murmur3's). The linear congruential step this replaced repeated its
 * middle bits with a period of 2^24, so that the columns of a 4096 x 3072
 * matrix (a stride of 3 * 2^10) summed to hundreds instead of tens: column
 * sums then carried rounding errors far above what their tolerances assume
 * for random data (the first H100 run of sum_rows and embed_backward). */
static float frand(unsigned *s) {
    uint32_t z = (*s += 0x9e3779b9u);
    z = (z ^ (z >> 16)) * 0x85ebca6bu;
    z = (z ^ (z >> 13)) * 0xc2b2ae35u;
    z ^= z >> 16;
    return (float)(z >> 16) / 32768.0f - 1.0f;
}

static float *rvec(int64_t n, unsigned seed, float scale) {
    float *v = xmalloc((size_t)n * sizeof(float));
    for (int64_t i = 0; i < n; i++) v[i] = frand(&seed) * scale;
    return v;
}

static float *fvec(int64_t n, float val) {
    float *v = xmalloc((size_t)n * sizeof(float));
    for (int64_t i = 0; i < n; i++) v[i] = val;
    return v;
}

static void *dalloc(size_t bytes) {
    void *p = NULL;
    CU(cudaMalloc(&p, bytes ? bytes : 1), "cudaMalloc");
    return p;
}

static void *dup_to_dev(const void *h, size_t bytes) {
    void *p = dalloc(bytes);
    CU(cudaMemcpy(p, h, bytes, cudaMemcpyHostToDevice), "copy to device");
    return p;
}

static void to_host(void *h, const void *d, size_t bytes) {
    CU(cudaMemcpy(h, d, bytes, cudaMemcpyDeviceToHost), "copy to host");
}

static void dfree(void *p) { CU(cudaFree(p), "cudaFree"); }

/* Weights as fp32/fp16/bf16 on the device, and the fp32 values they hold. */
static void *weights_dev(const float *x, int64_t n, int dt, float *as_f32) {
    if (dt == SS_CUDA_F32) {
        memcpy(as_f32, x, (size_t)n * sizeof(float));
        return dup_to_dev(x, (size_t)n * sizeof(float));
    }
    uint16_t *p = xmalloc((size_t)n * 2);
    for (int64_t i = 0; i < n; i++) {
        p[i] = dt == SS_CUDA_F16 ? ss_f32_to_f16(x[i]) : ss_f32_to_bf16(x[i]);
        as_f32[i] = dt == SS_CUDA_F16 ? ss_f16_to_f32(p[i]) : ss_bf16_to_f32(p[i]);
    }
    void *d = dup_to_dev(p, (size_t)n * 2);
    free(p);
    return d;
}

static const char *dt_name[] = {"f32", "f16", "bf16"};

/* ---- running and checking a case -------------------------------------- */

static int selected(const char *name) {
    return !g_filter || strstr(name, g_filter) != NULL;
}

/* A launch of one case: writes its outputs (device buffers). Returns the
 * launcher's status. */
typedef int (*launch_fn)(void *ctx);

typedef struct {
    void *dev;
    size_t bytes;
    void *host; /* receives the result of the first launch */
} out_buf;

/* Fills the outputs with 0xff (NaN), launches twice and checks that both
 * launches wrote the same bytes. Returns 0 if both launches succeeded and
 * agree; prints why not otherwise. */
static int run_twice(const char *name, launch_fn fn, void *ctx, out_buf *outs, int nout, double *ms) {
    void *second[4];
    int same = 1;
    for (int pass = 0; pass < 2; pass++) {
        for (int o = 0; o < nout; o++) CU(cudaMemsetAsync(outs[o].dev, g_fill, outs[o].bytes, g_stream), "memset");
        CU(cudaEventRecord(g_ev0, g_stream), "event");
        int rc = fn(ctx);
        if (rc != 0) {
            printf("CASE %s FAIL (launcher returned %d: %s)\n", name, rc, cudaGetErrorString((cudaError_t)rc));
            return 1;
        }
        CU(cudaEventRecord(g_ev1, g_stream), "event");
        CU(cudaStreamSynchronize(g_stream), name);
        CU(cudaGetLastError(), name);
        if (pass == 0) {
            float f = 0;
            CU(cudaEventElapsedTime(&f, g_ev0, g_ev1), "event time");
            *ms = f;
        }
        for (int o = 0; o < nout; o++) {
            if (pass == 0) {
                to_host(outs[o].host, outs[o].dev, outs[o].bytes);
            } else {
                second[o] = xmalloc(outs[o].bytes);
                to_host(second[o], outs[o].dev, outs[o].bytes);
                if (memcmp(second[o], outs[o].host, outs[o].bytes)) same = 0;
                free(second[o]);
            }
        }
    }
    if (!same) {
        printf("CASE %s FAIL (two launches wrote different results: a race or an uninitialised read)\n", name);
        return 1;
    }
    return 0;
}

/* Elementwise |got - ref| <= atol + rtol*|ref| (NaN fails unless both are
 * NaN and nan_ok), with the NMSE and the largest error. Prints the CASE
 * line and counts the case. */
static int check(const char *name, const float *got, const float *ref, int64_t n, double atol, double rtol, double ms,
                 int nan_ok) {
    double se = 0, sr = 0, maxe = 0;
    int64_t bad = 0, first = -1;
    for (int64_t i = 0; i < n; i++) {
        if (nan_ok && isnan(ref[i]) && isnan(got[i])) continue;
        double e = got[i] == ref[i] ? 0.0 : fabs((double)got[i] - ref[i]); /* equal infinities: 0 */
        if (e == e) {
            se += e * e;
            if (e > maxe) maxe = e;
        }
        sr += (double)ref[i] * ref[i];
        if (e != 0 && !(e <= atol + rtol * fabs(ref[i]))) {
            if (first < 0) first = i;
            bad++;
        }
    }
    g_cases++;
    printf("CASE %-62s n=%-9lld nmse=%.2e max_err=%.2e gpu_ms=%.3f tol=%.0e+%.0e*|ref| %s", name, (long long)n,
           sr > 0 ? se / sr : se, maxe, ms, atol, rtol, bad ? "FAIL" : "ok");
    if (bad) {
        printf(" (%lld outside tolerance; first [%lld] got %.9g ref %.9g)", (long long)bad, (long long)first,
               got[first], ref[first]);
        g_failed++;
    }
    printf("\n");
    fflush(stdout);
    return bad != 0;
}

static void fail_case(void) {
    g_cases++;
    g_failed++;
}

/* Defined with the backward cases below; the rope case (in place) uses them too. */
static int run_twice_from(const char *name, launch_fn fn, void *ctx, out_buf *outs, const float **init, int nout,
                          int same, double *ms);
static void cpu_ref_failed(const char *name);

/* ---- residual add ------------------------------------------------------ */

typedef struct { float *out; const float *a, *b; int64_t n; } add_ctx;
static int launch_add(void *v) { add_ctx *c = v; return ss_cuda_add(c->out, c->a, c->b, c->n, g_stream); }

static void case_add(void) {
    int64_t sizes[] = {1, 7, 1000, 4099, 768 * 4096, (1 << 22) + 3};
    int ns = g_quick ? 4 : 6;
    for (int si = 0; si < ns; si++) {
        for (int mis = 0; mis < 2; mis++) {
            int64_t n = sizes[si];
            char name[96];
            snprintf(name, sizeof name, "add n=%lld%s", (long long)n, mis ? " misaligned" : "");
            if (!selected(name)) continue;
            float *a = rvec(n + 1, 1, 1.f), *b = rvec(n + 1, 2, 1.f), *got = fvec(n, 0), *ref = fvec(n, 0);
            for (int64_t i = 0; i < n; i++) ref[i] = a[i + mis] + b[i + mis];
            float *da = dup_to_dev(a, (size_t)(n + 1) * 4), *db = dup_to_dev(b, (size_t)(n + 1) * 4);
            float *dout = dalloc((size_t)(n + 1) * 4);
            add_ctx c = {dout + mis, da + mis, db + mis, n};
            out_buf ob = {dout + mis, (size_t)n * 4, got};
            double ms = 0;
            if (run_twice(name, launch_add, &c, &ob, 1, &ms)) fail_case();
            else check(name, got, ref, n, 0, 0, ms, 0);
            /* in place (out == a) */
            snprintf(name, sizeof name, "add n=%lld%s in place", (long long)n, mis ? " misaligned" : "");
            if (ss_cuda_add(da + mis, da + mis, db + mis, n, g_stream) != 0) fail_case();
            else {
                CU(cudaStreamSynchronize(g_stream), name);
                to_host(got, da + mis, (size_t)n * 4);
                check(name, got, ref, n, 0, 0, 0, 0);
            }
            dfree(da), dfree(db), dfree(dout);
            free(a), free(b), free(got), free(ref);
        }
    }
}

/* ---- capture ----------------------------------------------------------- */

typedef struct { float *dst; const float *src; int64_t ld; const int64_t *idx; int64_t rows, cols; } cap_ctx;
static int launch_cap(void *v) {
    cap_ctx *c = v;
    return ss_cuda_capture(c->dst, c->src, c->ld, c->idx, c->rows, c->cols, g_stream);
}

static void case_capture(void) {
    /* (rows, cols, ld): q of a fused qkv (ld = 3 cols), odd widths (scalar
     * path), GPT-2 small/large sized */
    int64_t shapes[][3] = {{1, 4, 12}, {9, 64, 192}, {5, 37, 111}, {17, 40, 41}, {4096, 768, 2304}, {1000, 1601, 4803}};
    int ns = g_quick ? 4 : 6;
    for (int si = 0; si < ns; si++) {
        for (int use_idx = 0; use_idx < 2; use_idx++) {
            int64_t rows = shapes[si][0], cols = shapes[si][1], ld = shapes[si][2], src_rows = rows + 3;
            char name[96];
            snprintf(name, sizeof name, "capture %lldx%lld ld=%lld%s", (long long)rows, (long long)cols,
                     (long long)ld, use_idx ? " row list" : "");
            if (!selected(name)) continue;
            float *src = rvec(src_rows * ld + 1, 5, 1.f), *got = fvec(rows * cols, 0), *ref = fvec(rows * cols, 0);
            int64_t *idx = xmalloc((size_t)rows * sizeof(int64_t));
            for (int64_t r = 0; r < rows; r++) idx[r] = use_idx ? (r * 7 + 2) % src_rows : r;
            for (int64_t r = 0; r < rows; r++)
                for (int64_t c = 0; c < cols; c++) ref[r * cols + c] = src[idx[r] * ld + c + 1];
            float *dsrc = dup_to_dev(src, (size_t)(src_rows * ld + 1) * 4), *ddst = dalloc((size_t)(rows * cols) * 4);
            int64_t *didx = dup_to_dev(idx, (size_t)rows * sizeof(int64_t));
            cap_ctx c = {ddst, dsrc + 1, ld, use_idx ? didx : NULL, rows, cols};
            out_buf ob = {ddst, (size_t)(rows * cols) * 4, got};
            double ms = 0;
            if (run_twice(name, launch_cap, &c, &ob, 1, &ms)) fail_case();
            else check(name, got, ref, rows * cols, 0, 0, ms, 0);
            dfree(dsrc), dfree(ddst), dfree(didx);
            free(src), free(got), free(ref), free(idx);
        }
    }
    if (selected("capture ld < cols")) {
        int rc = ss_cuda_capture(NULL, NULL, 3, NULL, 2, 4, g_stream);
        g_cases++;
        printf("CASE %-62s %s (launcher returned %d, want 1)\n", "capture ld < cols is refused", rc == 1 ? "ok" : "FAIL",
               rc);
        if (rc != 1) g_failed++;
    }
}

/* ---- convert ----------------------------------------------------------- */

static int half_isnan(uint16_t h, int dt) {
    return dt == SS_CUDA_F16 ? (h & 0x7c00) == 0x7c00 && (h & 0x3ff) : (h & 0x7f80) == 0x7f80 && (h & 0x7f);
}

static void case_convert(void) {
    int64_t sizes[] = {517, (1 << 22) + 1};
    for (int si = 0; si < (g_quick ? 1 : 2); si++) {
        int64_t n = sizes[si];
        float *x = rvec(n, 6, 1.f);
        /* the cases rounding must get right: ties to even, subnormal halves,
         * overflow to inf, signed zero, NaN */
        float special[] = {1.0f + 1.0f / 256, 1.0f + 3.0f / 256, 1.0f + 1.0f / 2048, 6e-8f, 3e-5f, 70000.f, -0.f, NAN,
                           -INFINITY, 65520.f, 3.3895314e38f};
        for (int i = 0; i < 11; i++) x[i] = special[i];
        for (int64_t i = 11; i < n; i++) x[i] *= (float)(1 << (i % 20)) / 1024.f;
        float *dx = dup_to_dev(x, (size_t)n * 4);
        for (int dt = SS_CUDA_F16; dt <= SS_CUDA_BF16; dt++) {
            char name[96];
            snprintf(name, sizeof name, "convert f32->%s->f32 n=%lld", dt_name[dt], (long long)n);
            if (!selected(name)) continue;
            uint16_t *dh = dalloc((size_t)n * 2), *h = xmalloc((size_t)n * 2), *h2 = xmalloc((size_t)n * 2);
            float *dback = dalloc((size_t)n * 4), *back = fvec(n, 0), *ref = fvec(n, 0);
            int rc = ss_cuda_convert(dh, dt, dx, SS_CUDA_F32, n, g_stream);
            if (!rc) rc = ss_cuda_convert(dback, SS_CUDA_F32, dh, dt, n, g_stream);
            if (rc) {
                printf("CASE %s FAIL (launcher returned %d)\n", name, rc);
                fail_case();
            } else {
                CU(cudaStreamSynchronize(g_stream), name);
                to_host(h, dh, (size_t)n * 2);
                to_host(back, dback, (size_t)n * 4);
                /* CUDA makes every NaN the canonical one; the host keeps the
                 * payload: NaN-ness is what must agree. */
                int64_t mism = 0, first = -1;
                for (int64_t i = 0; i < n; i++) {
                    uint16_t want = dt == SS_CUDA_F16 ? ss_f32_to_f16(x[i]) : ss_f32_to_bf16(x[i]);
                    int ok = half_isnan(want, dt) ? half_isnan(h[i], dt) : h[i] == want;
                    if (!ok && first < 0) first = i;
                    mism += !ok;
                }
                for (int64_t i = 0; i < n; i++) ref[i] = dt == SS_CUDA_F16 ? ss_f16_to_f32(h[i]) : ss_bf16_to_f32(h[i]);
                g_cases++;
                printf("CASE %-62s n=%-9lld %s", name, (long long)n, mism ? "FAIL" : "ok");
                if (mism)
                    printf(" (%lld of %lld differ from the host's round-to-nearest-even; first [%lld] %.9g -> 0x%04x, "
                           "want 0x%04x)",
                           (long long)mism, (long long)n, (long long)first, x[first], h[first],
                           dt == SS_CUDA_F16 ? ss_f32_to_f16(x[first]) : ss_f32_to_bf16(x[first]));
                printf("\n");
                if (mism) g_failed++;
                snprintf(name, sizeof name, "convert %s->f32 widening n=%lld", dt_name[dt], (long long)n);
                check(name, back, ref, n, 0, 0, 0, 1);
                /* same type: a copy */
                uint16_t *dh2 = dalloc((size_t)n * 2);
                if (ss_cuda_convert(dh2, dt, dh, dt, n, g_stream)) fail_case();
                else {
                    CU(cudaStreamSynchronize(g_stream), name);
                    to_host(h2, dh2, (size_t)n * 2);
                    snprintf(name, sizeof name, "convert %s->%s copy n=%lld", dt_name[dt], dt_name[dt], (long long)n);
                    int same = !memcmp(h, h2, (size_t)n * 2);
                    g_cases++;
                    printf("CASE %-62s n=%-9lld %s\n", name, (long long)n, same ? "ok" : "FAIL");
                    if (!same) g_failed++;
                }
                dfree(dh2);
            }
            dfree(dh), dfree(dback);
            free(h), free(h2), free(back), free(ref);
        }
        dfree(dx);
        free(x);
    }
}

/* ---- the covariance paths' centring ----------------------------------- */

/* ss_cuda_cov_center (cov_lower.cu: the centred operand of the blocked and
 * tensor-core triangles) against the host, bit for bit: x - mean in fp32,
 * kept or rounded to bf16 (nearest even), zeros past n rows and d columns.
 * Rows and means 16-byte aligned (the kernel's 16-byte loads) and x one
 * element off (a load a value); d = 37 leaves a ragged last chunk. "rows":
 * the batch's rows from a row list (x's rows shuffled, some twice, some left
 * out), as collect gathers them. */
static void case_cov_center(void) {
    const int64_t shapes[][3] = {{13, 16, 37}, {4096, 4096, 3072}}; /* n, n_pad, d */
    for (int si = 0; si < (g_quick ? 1 : 2); si++)
        for (int with_rows = 0; with_rows <= 1; with_rows++)
        for (int dt = SS_CUDA_F32; dt <= SS_CUDA_BF16; dt++)
            for (int odt = SS_CUDA_F32; odt <= SS_CUDA_BF16; odt += SS_CUDA_BF16 - SS_CUDA_F32)
                for (int off = 0; off <= 1; off++) {
                    const int64_t n = shapes[si][0], n_pad = shapes[si][1], d = shapes[si][2];
                    const int64_t per = odt == SS_CUDA_F32 ? 4 : 8, ldw = (d + per - 1) / per * per;
                    const int64_t ldx = off ? d + 1 : (d + 7) / 8 * 8, xrows = n + 4 * with_rows, nx = xrows * ldx + 1;
                    char name[96];
                    snprintf(name, sizeof name, "cov_center %s->%s n=%lld d=%lld %s%s", dt_name[dt], dt_name[odt],
                             (long long)n, (long long)d, off ? "unaligned" : "aligned", with_rows ? " rows" : "");
                    if (!selected(name)) continue;
                    int64_t *rows = xmalloc((size_t)n * sizeof(int64_t));
                    for (int64_t r = 0; r < n; r++) rows[r] = with_rows ? (r * 7 + 3) % xrows : r;
                    int64_t *drows = with_rows ? dup_to_dev(rows, (size_t)n * sizeof(int64_t)) : NULL;
                    float *x = rvec(nx, 61 + (unsigned)si, 3.f), *xv = fvec(nx, 0), *m = rvec(d, 62, 1.f);
                    char *dx = weights_dev(x, nx, dt, xv);
                    float *dm = dup_to_dev(m, (size_t)d * 4);
                    const size_t oes = odt == SS_CUDA_F32 ? 4 : 2, esz = dt == SS_CUDA_F32 ? 4 : 2;
                    void *dout = dalloc((size_t)(n_pad * ldw) * oes), *out = xmalloc((size_t)(n_pad * ldw) * oes);
                    int rc = ss_cuda_cov_center(dout, odt, ldw, dx + (off ? esz : 0), dt, ldx, drows, dm, n, n_pad, d,
                                                g_stream);
                    if (rc) {
                        printf("CASE %-62s FAIL (launcher returned %d)\n", name, rc);
                        fail_case();
                    } else {
                        CU(cudaStreamSynchronize(g_stream), name);
                        to_host(out, dout, (size_t)(n_pad * ldw) * oes);
                        const float *xs = xv + (off ? 1 : 0);
                        int64_t bad = 0;
                        for (int64_t r = 0; r < n_pad; r++)
                            for (int64_t c = 0; c < ldw; c++) {
                                const float v = r < n && c < d ? xs[rows[r] * ldx + c] - m[c] : 0.f;
                                const size_t at = (size_t)(r * ldw + c);
                                bad += odt == SS_CUDA_F32 ? memcmp((float *)out + at, &v, 4) != 0
                                                          : ((uint16_t *)out)[at] != ss_f32_to_bf16(v);
                            }
                        g_cases++;
                        printf("CASE %-62s n=%-9lld %s", name, (long long)(n_pad * ldw), bad ? "FAIL" : "ok");
                        if (bad) printf(" (%lld values differ from the host's)", (long long)bad);
                        printf("\n");
                        if (bad) g_failed++;
                    }
                    dfree(dx), dfree(dm), dfree(dout);
                    if (drows) dfree(drows);
                    free(x), free(xv), free(m), free(out), free(rows);
                }
}

/* ---- embeddings -------------------------------------------------------- */

typedef struct {
    float *t, *p, *s;
    const int32_t *tok, *pos;
    const void *wte, *wpe;
    int dt;
    int64_t V, P, n, d;
} emb_ctx;
static int launch_emb(void *v) {
    emb_ctx *c = v;
    return ss_cuda_embed(c->t, c->p, c->s, c->tok, c->pos, c->wte, c->wpe, c->dt, c->V, c->P, c->n, c->d, g_stream);
}

static void case_embed(void) {
    const ss_backend *be = ss_backend_cpu();
    /* (V, P, n, d): one row, the scalar path (d = 30), GPT-2 small and a
     * ragged width */
    int64_t shapes[][4] = {{50, 40, 1, 8}, {50, 40, 13, 48}, {50, 40, 9, 30}, {50257, 1024, 4096, 768},
                           {1001, 300, 777, 1602}};
    int ns = g_quick ? 3 : 5;
    for (int si = 0; si < ns; si++) {
        int64_t V = shapes[si][0], P = shapes[si][1], n = shapes[si][2], d = shapes[si][3], nd = n * d;
        for (int dt = SS_CUDA_F32; dt <= SS_CUDA_BF16; dt++) {
            char name[96];
            snprintf(name, sizeof name, "embed %s V=%lld n=%lld d=%lld tok/pos/sum", dt_name[dt], (long long)V,
                     (long long)n, (long long)d);
            if (!selected(name)) continue;
            float *wte = rvec(V * d, 7, 1.f), *wpe = rvec(P * d, 8, 1.f), *wte32 = fvec(V * d, 0),
                  *wpe32 = fvec(P * d, 0);
            void *dwte = weights_dev(wte, V * d, dt, wte32), *dwpe = weights_dev(wpe, P * d, dt, wpe32);
            int32_t *tok = xmalloc((size_t)n * 4), *pos = xmalloc((size_t)n * 4);
            for (int64_t i = 0; i < n; i++) tok[i] = (int32_t)((i * 17 + 3) % V), pos[i] = (int32_t)(i % P);
            float *rt = fvec(nd, 0), *rp = fvec(nd, 0), *rs = fvec(nd, 0);
            float *gt = fvec(nd, 0), *gp = fvec(nd, 0), *gs = fvec(nd, 0);
            if (be->embed(be, rt, rp, tok, pos, wte32, wpe32, SS_WDTYPE_F32, n, d) || be->add(be, rs, rt, rp, nd)) {
                printf("CASE %s FAIL (CPU reference: %s)\n", name, ss_last_error());
                fail_case();
            } else {
                int32_t *dtok = dup_to_dev(tok, (size_t)n * 4), *dpos = dup_to_dev(pos, (size_t)n * 4);
                float *dt_ = dalloc((size_t)nd * 4), *dp = dalloc((size_t)nd * 4), *ds = dalloc((size_t)nd * 4);
                emb_ctx c = {dt_, dp, ds, dtok, dpos, dwte, dwpe, dt, V, P, n, d};
                out_buf ob[3] = {{dt_, (size_t)nd * 4, gt}, {dp, (size_t)nd * 4, gp}, {ds, (size_t)nd * 4, gs}};
                double ms = 0;
                if (run_twice(name, launch_emb, &c, ob, 3, &ms)) fail_case();
                else {
                    /* gathers and one fp32 add: exact */
                    float *all_g = fvec(3 * nd, 0), *all_r = fvec(3 * nd, 0);
                    memcpy(all_g, gt, (size_t)nd * 4), memcpy(all_g + nd, gp, (size_t)nd * 4);
                    memcpy(all_g + 2 * nd, gs, (size_t)nd * 4);
                    memcpy(all_r, rt, (size_t)nd * 4), memcpy(all_r + nd, rp, (size_t)nd * 4);
                    memcpy(all_r + 2 * nd, rs, (size_t)nd * 4);
                    check(name, all_g, all_r, 3 * nd, 0, 0, ms, 0);
                    free(all_g), free(all_r);
                }
                /* only the sum; the last id out of range gives a NaN row, not a read */
                snprintf(name, sizeof name, "embed %s V=%lld n=%lld d=%lld sum only, bad id", dt_name[dt],
                         (long long)V, (long long)n, (long long)d);
                tok[n - 1] = (int32_t)V;
                CU(cudaMemcpy(dtok, tok, (size_t)n * 4, cudaMemcpyHostToDevice), "copy");
                for (int64_t c2 = 0; c2 < d; c2++) rs[(n - 1) * d + c2] = NAN;
                emb_ctx c2 = {NULL, NULL, ds, dtok, dpos, dwte, dwpe, dt, V, P, n, d};
                out_buf ob2 = {ds, (size_t)nd * 4, gs};
                g_fill = 0;
                if (run_twice(name, launch_emb, &c2, &ob2, 1, &ms)) fail_case();
                else check(name, gs, rs, nd, 0, 0, ms, 1);
                g_fill = 0xff;
                /* no position table (rotary models): tok and sum are the token rows, pos is not read */
                snprintf(name, sizeof name, "embed %s V=%lld n=%lld d=%lld no position table", dt_name[dt],
                         (long long)V, (long long)n, (long long)d);
                tok[n - 1] = 0;
                CU(cudaMemcpy(dtok, tok, (size_t)n * 4, cudaMemcpyHostToDevice), "copy");
                if (be->embed(be, rt, NULL, tok, NULL, wte32, NULL, SS_WDTYPE_F32, n, d)) cpu_ref_failed(name);
                else {
                    emb_ctx c3 = {dt_, NULL, ds, dtok, NULL, dwte, NULL, dt, V, P, n, d};
                    out_buf ob3[2] = {{dt_, (size_t)nd * 4, gt}, {ds, (size_t)nd * 4, gs}};
                    if (run_twice(name, launch_emb, &c3, ob3, 2, &ms)) fail_case();
                    else {
                        float *all_g = fvec(2 * nd, 0), *all_r = fvec(2 * nd, 0);
                        memcpy(all_g, gt, (size_t)nd * 4), memcpy(all_g + nd, gs, (size_t)nd * 4);
                        memcpy(all_r, rt, (size_t)nd * 4), memcpy(all_r + nd, rt, (size_t)nd * 4);
                        check(name, all_g, all_r, 2 * nd, 0, 0, ms, 0);
                        free(all_g), free(all_r);
                    }
                }
                dfree(dtok), dfree(dpos), dfree(dt_), dfree(dp), dfree(ds);
            }
            dfree(dwte), dfree(dwpe);
            free(wte), free(wpe), free(wte32), free(wpe32), free(tok), free(pos);
            free(rt), free(rp), free(rs), free(gt), free(gp), free(gs);
        }
    }
}

/* A kernel's 16-bit output: d16 (n bf16 values, from a launch that returned
 * rc) must equal the fp32 result got rounded to bf16, bit for bit. */
static void check_bf16_rounded(const char *name, int rc, const uint16_t *d16, const float *got, int64_t n) {
    if (!rc) rc = (int)cudaStreamSynchronize(g_stream);
    if (rc) {
        printf("CASE %s FAIL (%s)\n", name, cudaGetErrorString((cudaError_t)rc));
        fail_case();
        return;
    }
    uint16_t *h16 = malloc((size_t)n * 2);
    float *g16 = fvec(n, 0), *r16 = fvec(n, 0);
    to_host(h16, d16, (size_t)n * 2);
    for (int64_t i = 0; i < n; i++) g16[i] = ss_bf16_to_f32(h16[i]), r16[i] = ss_bf16_to_f32(ss_f32_to_bf16(got[i]));
    check(name, g16, r16, n, 0, 0, 0, 0);
    free(h16), free(g16), free(r16);
}

/* ---- layernorm / RMSNorm ----------------------------------------------- */

/* plan: 0 ss_cuda_layernorm's own choice, else that kernel (ss_cuda_layernorm_plan) */
typedef struct { float *out; const float *x; const void *w, *b; int dt; int64_t rows, d; int rms, plan; } norm_ctx;
static int launch_norm(void *v) {
    norm_ctx *c = v;
    if (c->rms) return ss_cuda_rmsnorm(c->out, c->x, c->w, c->dt, c->rows, c->d, 1e-5f, g_stream);
    if (c->plan)
        return ss_cuda_layernorm_plan(c->out, SS_CUDA_F32, c->x, c->w, c->b, c->dt, c->rows, c->d, 1e-5f, c->plan,
                                      g_stream);
    return ss_cuda_layernorm(c->out, c->x, c->w, c->b, c->dt, c->rows, c->d, 1e-5f, g_stream);
}

/* Tolerances as in test_kernels.c: fp32 sums of d/32 terms per lane and a
 * warp tree against double: atol = rtol = 1e-5; the shape whose second row
 * has a common offset of 1000 loses ~3e-5/std(x) to cancellation: 2e-4.
 * rsqrtf is within 2 ulp on the GPU. */
static void case_norm(void) {
    const ss_backend *be = ss_backend_cpu();
    int64_t shapes[][2] = {{5, 24},    {1, 1},     {1, 768},   {7, 33},    {6, 100},   {9, 130},
                           {3, 1600},  {4096, 768}, {2048, 1024}, {1024, 1600}, {512, 4099}, {64, 8192}};
    int ns = g_quick ? 7 : 12;
    for (int si = 0; si < ns; si++) {
        int64_t rows = shapes[si][0], d = shapes[si][1], n = rows * d;
        for (int dt = SS_CUDA_F32; dt <= SS_CUDA_BF16; dt++) {
            for (int rms = 0; rms < 2; rms++) {
                char name[96];
                snprintf(name, sizeof name, "%s %s %lldx%lld", rms ? "rmsnorm" : "layernorm", dt_name[dt],
                         (long long)rows, (long long)d);
                if (!selected(name)) continue;
                float *x = rvec(n, 9, 1.f), *w = rvec(d, 10, 1.f), *b = rvec(d, 11, 1.f), *w32 = fvec(d, 0),
                      *b32 = fvec(d, 0);
                if (si == 0)
                    for (int64_t i = 0; i < d; i++) x[d + i] += 1000.f;
                void *dw = weights_dev(w, d, dt, w32), *db = weights_dev(b, d, dt, b32);
                float *ref = fvec(n, 0), *got = fvec(n, 0);
                double atol = si == 0 ? 2e-4 : 1e-5;
                if (!rms) {
                    if (be->layernorm(be, ref, x, w32, b32, rows, d, 1e-5f)) {
                        printf("CASE %s FAIL (CPU reference: %s)\n", name, ss_last_error());
                        fail_case();
                        goto next;
                    }
                } else {
                    for (int64_t r = 0; r < rows; r++) {
                        double ss = 0;
                        for (int64_t i = 0; i < d; i++) ss += (double)x[r * d + i] * x[r * d + i];
                        double inv = 1.0 / sqrt(ss / (double)d + 1e-5);
                        for (int64_t i = 0; i < d; i++) ref[r * d + i] = (float)(x[r * d + i] * inv * w32[i]);
                    }
                    atol = 1e-5;
                }
                {
                    float *dx = dup_to_dev(x, (size_t)n * 4), *dout = dalloc((size_t)n * 4);
                    norm_ctx c = {dout, dx, dw, db, dt, rows, d, rms, 0};
                    out_buf ob = {dout, (size_t)n * 4, got};
                    double ms = 0;
                    if (run_twice(name, launch_norm, &c, &ob, 1, &ms)) fail_case();
                    else check(name, got, ref, n, atol, 1e-5, ms, 0);
                    if (dt == SS_CUDA_F32) { /* the bf16 output (norm_matmul's): the fp32 rows rounded, bit for bit */
                        char n16[112];
                        snprintf(n16, sizeof n16, "%s to bf16 %lldx%lld = rounded fp32", rms ? "rmsnorm" : "layernorm",
                                 (long long)rows, (long long)d);
                        uint16_t *d16 = dalloc((size_t)n * 2);
                        int rc = rms ? ss_cuda_rmsnorm_to(d16, SS_CUDA_BF16, dx, dw, dt, rows, d, 1e-5f, g_stream)
                                     : ss_cuda_layernorm_to(d16, SS_CUDA_BF16, dx, dw, db, dt, rows, d, 1e-5f, g_stream);
                        check_bf16_rounded(n16, rc, d16, got, n);
                        dfree(d16);
                    }
                    /* each layernorm kernel the shape allows, by name (the default is one of them; after the
                     * bf16 check, which compares with the default's fp32 rows in got) */
                    for (c.plan = SS_CUDA_LN_WARP; !rms && dt == SS_CUDA_F32 && c.plan <= SS_CUDA_LN_SWEEP; c.plan++) {
                        static const char *const plan_name[] = {"", "warp", "block", "sweep"};
                        if (c.plan != SS_CUDA_LN_SWEEP && (d % 4 || d > (c.plan == SS_CUDA_LN_WARP ? 1024 : 16384)))
                            continue;
                        char np[112];
                        snprintf(np, sizeof np, "layernorm.%s f32 %lldx%lld", plan_name[c.plan], (long long)rows,
                                 (long long)d);
                        if (!selected(np)) continue;
                        if (run_twice(np, launch_norm, &c, &ob, 1, &ms)) fail_case();
                        else check(np, got, ref, n, atol, 1e-5, ms, 0);
                    }
                    dfree(dx), dfree(dout);
                }
            next:
                dfree(dw), dfree(db);
                free(x), free(w), free(b), free(w32), free(b32), free(ref), free(got);
            }
        }
    }
}

/* ---- rotary embeddings, SwiGLU ----------------------------------------- */

typedef struct { float *x; int64_t ld, rows, nh, dh; const int32_t *pos; const float *inv; int inverse; } rope_ctx;
static int launch_rope(void *v) {
    rope_ctx *c = v;
    return ss_cuda_rope(c->x, c->ld, c->rows, c->nh, c->dh, c->pos, c->inv, c->inverse, g_stream);
}

/* In place: run_twice_from resets x before each launch. Against the CPU op
 * (glibc cosf/sinf of the same fp32 angle); CUDA's precise cosf/sinf are
 * within 2 ulp, and the GPU may fuse the products into FMAs: atol 1e-6 +
 * rtol 1e-5 for |x| <= 1. Positions reach 131071 (angles of 1e5 rad, where
 * __cosf would be useless). Columns past n_heads*dh (v of a fused qkv row)
 * are compared too: they must come back unchanged. */
static void case_rope(void) {
    const ss_backend *be = ss_backend_cpu();
    /* rows, n_heads (H + Hkv: q and k of a fused qkv row), dh, ld, theta */
    struct { int64_t rows, nh, dh, ld; double theta; int quick; } cases[] = {
        {5, 1, 2, 2, 1e4, 1}, {7, 3, 64, 256, 1e4, 1}, {9, 10, 16, 192, 5e5, 1}, {3, 1, 256, 300, 1e4, 1},
        {6, 5, 6, 31, 1e6, 1}, {4096, 40, 128, 6144, 5e5, 0}, /* Llama-3-8B: q 32 + k 8 heads of a fused row */
        {2048, 12, 64, 960, 1e5, 0},                          /* SmolLM2-135M: 9 + 3 heads */
    };
    const int32_t posv[] = {0, 4000, 1, 8191, 100000, 37, 2047, 131071, 12};
    for (int ci = 0; ci < (int)(sizeof cases / sizeof cases[0]); ci++) {
        if (g_quick && !cases[ci].quick) continue;
        int64_t rows = cases[ci].rows, nh = cases[ci].nh, dh = cases[ci].dh, ld = cases[ci].ld, n = rows * ld;
        for (int inverse = 0; inverse < 2; inverse++) {
            char name[128];
            snprintf(name, sizeof name, "rope%s rows=%lld heads=%lld dh=%lld ld=%lld", inverse ? " inverse" : "",
                     (long long)rows, (long long)nh, (long long)dh, (long long)ld);
            if (!selected(name)) continue;
            float *x = rvec(n, 100 + (unsigned)ci, 1.f), *ref = fvec(n, 0), *got = fvec(n, 0), *inv = fvec(dh / 2, 0);
            int32_t *pos = xmalloc((size_t)rows * 4);
            for (int64_t r = 0; r < rows; r++) pos[r] = r < 9 ? posv[(r + ci) % 9] : (int32_t)(r * 31 % 131072);
            for (int64_t i = 0; i < dh / 2; i++)
                inv[i] = (float)(1.0 / pow(cases[ci].theta, (double)(2 * i) / (double)dh));
            memcpy(ref, x, (size_t)n * 4);
            if (be->rope(be, ref, ld, rows, nh, dh, pos, inv, inverse)) cpu_ref_failed(name);
            else {
                float *dx = dalloc((size_t)n * 4), *dinv = dup_to_dev(inv, (size_t)(dh / 2) * 4);
                int32_t *dpos = dup_to_dev(pos, (size_t)rows * 4);
                rope_ctx c = {dx, ld, rows, nh, dh, dpos, dinv, inverse};
                out_buf ob = {dx, (size_t)n * 4, got};
                const float *init[1] = {x};
                double ms = 0;
                if (run_twice_from(name, launch_rope, &c, &ob, init, 1, 1, &ms)) fail_case();
                else check(name, got, ref, n, 1e-6, 1e-5, ms, 0);
                dfree(dx), dfree(dinv), dfree(dpos);
            }
            free(x), free(ref), free(got), free(inv), free(pos);
        }
    }
}

typedef struct { uint16_t *x; int64_t ld, rows, nh, dh; const int32_t *pos; const float *inv; } rope16_ctx;
static int launch_rope16(void *v) {
    rope16_ctx *c = v;
    return ss_cuda_rope_bf16(c->x, c->ld, c->rows, c->nh, c->dh, c->pos, c->inv, g_stream);
}

/* The bf16 rotation (a product's 16-bit q|k, SUBSCOPE_QKV16 for Llama) in
 * place: against the CPU op on the same bf16 values, rounded to bf16. The
 * GPU's FMAs and 2-ulp cosf/sinf move a value before its rounding by ~1e-7
 * relative, which can flip the rounding by one bf16 step: atol 1e-6 + rtol
 * 2^-7 (bf16 keeps 8 significant bits, so one step is at most 2^-7 of the
 * value; 2^-8, this case's first bound, failed 355 of 25M values by exactly one
 * step on an H100); v's columns must come back unchanged. */
static void case_rope16(void) {
    const ss_backend *be = ss_backend_cpu();
    struct { int64_t rows, nh, dh, ld; double theta; int quick; } cases[] = {
        {9, 6, 64, 512, 1e4, 1}, {5, 3, 128, 512, 5e5, 1}, {4096, 40, 128, 6144, 5e5, 0}, {2048, 12, 64, 960, 1e5, 0},
    };
    const int32_t posv[] = {0, 4000, 1, 8191, 100000, 37, 2047, 131071, 12};
    for (int ci = 0; ci < (int)(sizeof cases / sizeof cases[0]); ci++) {
        if (g_quick && !cases[ci].quick) continue;
        const int64_t rows = cases[ci].rows, nh = cases[ci].nh, dh = cases[ci].dh, ld = cases[ci].ld, n = rows * ld;
        char name[128];
        snprintf(name, sizeof name, "rope bf16 rows=%lld heads=%lld dh=%lld ld=%lld", (long long)rows, (long long)nh,
                 (long long)dh, (long long)ld);
        if (!selected(name)) continue;
        float *x = rvec(n, 140 + (unsigned)ci, 2.f), *ref = fvec(n, 0), *got = fvec(n, 0), *inv = fvec(dh / 2, 0);
        uint16_t *h = xmalloc((size_t)n * 2), *g16 = xmalloc((size_t)n * 2);
        int32_t *pos = xmalloc((size_t)rows * 4);
        for (int64_t r = 0; r < rows; r++) pos[r] = r < 9 ? posv[(r + ci) % 9] : (int32_t)(r * 31 % 131072);
        for (int64_t i = 0; i < dh / 2; i++) inv[i] = (float)(1.0 / pow(cases[ci].theta, (double)(2 * i) / (double)dh));
        for (int64_t i = 0; i < n; i++) h[i] = ss_f32_to_bf16(x[i]), ref[i] = ss_bf16_to_f32(h[i]);
        if (be->rope(be, ref, ld, rows, nh, dh, pos, inv, 0)) {
            cpu_ref_failed(name);
        } else {
            for (int64_t i = 0; i < n; i++) ref[i] = ss_bf16_to_f32(ss_f32_to_bf16(ref[i]));
            uint16_t *dx = dalloc((size_t)n * 2);
            float *dinv = dup_to_dev(inv, (size_t)(dh / 2) * 4);
            int32_t *dpos = dup_to_dev(pos, (size_t)rows * 4);
            rope16_ctx c = {dx, ld, rows, nh, dh, dpos, dinv};
            out_buf ob = {dx, (size_t)n * 2, (float *)g16};
            const float *init[1] = {(const float *)h};
            double ms = 0;
            if (run_twice_from(name, launch_rope16, &c, &ob, init, 1, 1, &ms)) {
                fail_case();
            } else {
                for (int64_t i = 0; i < n; i++) got[i] = ss_bf16_to_f32(g16[i]);
                check(name, got, ref, n, 1e-6, 1.0 / 128, ms, 0);
            }
            dfree(dx), dfree(dinv), dfree(dpos);
        }
        free(x), free(ref), free(got), free(inv), free(h), free(g16), free(pos);
    }
}

typedef struct { float *out; const float *gu; int64_t rows, dm; } swiglu_ctx;
static int launch_swiglu(void *v) {
    swiglu_ctx *c = v;
    return ss_cuda_swiglu(c->out, c->gu, c->rows, c->dm, g_stream);
}

/* One precise expf, a division and a product against the CPU op's same
 * fp32 expression: atol 1e-6 + rtol 1e-5 (gates in [-12, 12]). */
static void case_swiglu(void) {
    const ss_backend *be = ss_backend_cpu();
    int64_t shapes[][2] = {{1, 1}, {3, 37}, {5, 300}, {2, 513}, {4096, 14336}, {2048, 1536}, {70000, 3}};
    int ns = g_quick ? 4 : 7;
    for (int si = 0; si < ns; si++) {
        int64_t rows = shapes[si][0], dm = shapes[si][1], n = rows * dm;
        char name[96];
        snprintf(name, sizeof name, "swiglu %lldx%lld", (long long)rows, (long long)dm);
        if (!selected(name)) continue;
        float *gu = rvec(2 * n, 110 + (unsigned)si, 1.f), *ref = fvec(n, 0), *got = fvec(n, 0);
        for (int64_t r = 0; r < rows; r++)
            for (int64_t c = 0; c < dm; c++) gu[r * 2 * dm + c] *= 12.f;
        if (be->swiglu(be, ref, gu, rows, dm)) cpu_ref_failed(name);
        else {
            float *dgu = dup_to_dev(gu, (size_t)(2 * n) * 4), *dout = dalloc((size_t)n * 4);
            swiglu_ctx c = {dout, dgu, rows, dm};
            out_buf ob = {dout, (size_t)n * 4, got};
            double ms = 0;
            if (run_twice(name, launch_swiglu, &c, &ob, 1, &ms)) fail_case();
            else check(name, got, ref, n, 1e-6, 1e-5, ms, 0);
            /* the bf16 output (mlp_add's): the GPU's fp32 result rounded, bit for bit */
            char n16[112];
            snprintf(n16, sizeof n16, "swiglu_16 bf16 %lldx%lld = rounded swiglu", (long long)rows, (long long)dm);
            uint16_t *d16 = dalloc((size_t)n * 2);
            check_bf16_rounded(n16, ss_cuda_swiglu_16(d16, SS_CUDA_BF16, dgu, rows, dm, g_stream), d16, got, n);
            /* from a bf16 gate|up (SUBSCOPE_GU16): the fp32 kernel's result on the widened
             * values, rounded, bit for bit */
            snprintf(n16, sizeof n16, "swiglu_16from16 bf16 %lldx%lld = rounded swiglu", (long long)rows, (long long)dm);
            uint16_t *gu16 = xmalloc((size_t)(2 * n) * 2);
            float *wide = fvec(2 * n, 0), *got_w = fvec(n, 0);
            for (int64_t i = 0; i < 2 * n; i++) gu16[i] = ss_f32_to_bf16(gu[i]), wide[i] = ss_bf16_to_f32(gu16[i]);
            CU(cudaMemcpy(dgu, wide, (size_t)(2 * n) * 4, cudaMemcpyHostToDevice), "copy to device");
            int rc = ss_cuda_swiglu(dout, dgu, rows, dm, g_stream);
            if (!rc) rc = (int)cudaStreamSynchronize(g_stream);
            if (!rc) to_host(got_w, dout, (size_t)n * 4);
            uint16_t *dgu16 = dup_to_dev(gu16, (size_t)(2 * n) * 2);
            check_bf16_rounded(n16, rc ? rc : ss_cuda_swiglu_16from16(d16, SS_CUDA_BF16, dgu16, rows, dm, g_stream), d16,
                               got_w, n);
            dfree(dgu16), free(gu16), free(wide), free(got_w);
            dfree(d16);
            dfree(dgu), dfree(dout);
        }
        free(gu), free(ref), free(got);
    }
}

/* ---- bias + GELU ------------------------------------------------------- */

typedef struct { float *out; const float *x; const void *bias; int dt; int64_t rows, cols; int act; } ba_ctx;
static int launch_ba(void *v) {
    ba_ctx *c = v;
    return ss_cuda_bias_act(c->out, c->x, c->bias, c->dt, c->rows, c->cols, c->act, g_stream);
}

/* Tolerance: CUDA's tanhf/erff are within 2 ulp; the reference is the CPU
 * op (or the fp32 sum) from the same fp32 x + bias: atol 1e-6, rtol 1e-5. */
static void case_bias_act(void) {
    const ss_backend *be = ss_backend_cpu();
    static const char *an[] = {"gelu_tanh", "gelu_erf", "bias only"};
    int64_t shapes[][2] = {{1, 1}, {3, 64}, {5, 37}, {2, 1000}, {4096, 3072}, {1000, 3073}, {2048, 6400}};
    int ns = g_quick ? 4 : 7;
    for (int si = 0; si < ns; si++) {
        int64_t rows = shapes[si][0], cols = shapes[si][1], n = rows * cols;
        float *x = rvec(n, 12, 4.f), *bias = rvec(cols, 13, 1.f), *b32 = fvec(cols, 0);
        float *dx = dup_to_dev(x, (size_t)n * 4), *dout = dalloc((size_t)n * 4);
        float *got = fvec(n, 0), *ref = fvec(n, 0), *sum = fvec(n, 0);
        for (int act = SS_CUDA_GELU_TANH; act <= SS_CUDA_ACT_NONE; act++) {
            for (int dt = SS_CUDA_F32; dt <= SS_CUDA_BF16; dt++) {
                char name[96];
                snprintf(name, sizeof name, "bias+%s bias %s %lldx%lld", an[act], dt_name[dt], (long long)rows,
                         (long long)cols);
                if (!selected(name)) continue;
                void *db = weights_dev(bias, cols, dt, b32);
                for (int64_t i = 0; i < n; i++) sum[i] = x[i] + b32[i % cols];
                if (act == SS_CUDA_ACT_NONE) memcpy(ref, sum, (size_t)n * 4);
                else if (be->gelu(be, ref, sum, n, (ss_act)act)) {
                    printf("CASE %s FAIL (CPU reference: %s)\n", name, ss_last_error());
                    fail_case();
                    dfree(db);
                    continue;
                }
                ba_ctx c = {dout, dx, db, dt, rows, cols, act};
                out_buf ob = {dout, (size_t)n * 4, got};
                double ms = 0;
                if (run_twice(name, launch_ba, &c, &ob, 1, &ms)) fail_case();
                else check(name, got, ref, n, 1e-6, 1e-5, ms, 0);
                dfree(db);
            }
            if (act == SS_CUDA_ACT_NONE) continue;
            /* no bias, in place (as the forward pass calls it) */
            char name[96];
            snprintf(name, sizeof name, "%s no bias, in place %lldx%lld", an[act], (long long)rows, (long long)cols);
            if (!selected(name)) continue;
            if (be->gelu(be, ref, x, n, (ss_act)act)) {
                fail_case();
                continue;
            }
            float *dio = dup_to_dev(x, (size_t)n * 4);
            int rc = ss_cuda_bias_act(dio, dio, NULL, SS_CUDA_F32, rows, cols, act, g_stream);
            if (rc) {
                printf("CASE %s FAIL (launcher returned %d)\n", name, rc);
                fail_case();
            } else {
                CU(cudaStreamSynchronize(g_stream), name);
                to_host(got, dio, (size_t)n * 4);
                check(name, got, ref, n, 1e-6, 1e-5, 0, 0);
            }
            dfree(dio);
        }
        dfree(dx), dfree(dout);
        free(x), free(bias), free(b32), free(got), free(ref), free(sum);
    }
}

/* ---- softmax ----------------------------------------------------------- */

typedef struct { float *out; const float *x; int64_t rows, cols; } sm_ctx;
static int launch_sm(void *v) { sm_ctx *c = v; return ss_cuda_softmax(c->out, c->x, c->rows, c->cols, g_stream); }

/* Tolerance: expf within 2 ulp, fp32 sums of cols/32 terms per lane:
 * rtol 1e-5, atol 1e-8 for tiny probabilities. */
static void case_softmax(void) {
    int64_t shapes[][2] = {{1, 1}, {3, 5}, {4, 64}, {5, 333}, {2, 1000}, {4096, 1024}, {64, 50257}, {12 * 1024, 1024}};
    int ns = g_quick ? 5 : 8;
    for (int si = 0; si < ns; si++) {
        int64_t rows = shapes[si][0], cols = shapes[si][1], n = rows * cols;
        char name[96];
        snprintf(name, sizeof name, "softmax %lldx%lld", (long long)rows, (long long)cols);
        if (!selected(name)) continue;
        float *x = rvec(n, 14, 6.f), *got = fvec(n, 0), *ref = fvec(n, 0);
        /* odd rows: one logit 50 above the rest; a masked (-inf) entry */
        for (int64_t i = 0; i < n; i++) x[i] += (i % cols == 0 ? 50.f : 0.f) * (float)(i / cols % 2);
        if (rows > 1 && cols > 2) x[cols + 2] = -INFINITY;
        for (int64_t r = 0; r < rows; r++) {
            double mx = -INFINITY, s = 0;
            for (int64_t j = 0; j < cols; j++) mx = fmax(mx, x[r * cols + j]);
            for (int64_t j = 0; j < cols; j++) s += exp((double)x[r * cols + j] - mx);
            for (int64_t j = 0; j < cols; j++) ref[r * cols + j] = (float)(exp((double)x[r * cols + j] - mx) / s);
        }
        float *dx = dup_to_dev(x, (size_t)n * 4), *dout = dalloc((size_t)n * 4);
        sm_ctx c = {dout, dx, rows, cols};
        out_buf ob = {dout, (size_t)n * 4, got};
        double ms = 0;
        if (run_twice(name, launch_sm, &c, &ob, 1, &ms)) fail_case();
        else check(name, got, ref, n, 1e-8, 1e-5, ms, 0);
        snprintf(name, sizeof name, "softmax %lldx%lld in place", (long long)rows, (long long)cols);
        if (ss_cuda_softmax(dx, dx, rows, cols, g_stream)) fail_case();
        else {
            CU(cudaStreamSynchronize(g_stream), name);
            to_host(got, dx, (size_t)n * 4);
            check(name, got, ref, n, 1e-8, 1e-5, 0, 0);
        }
        dfree(dx), dfree(dout);
        free(x), free(got), free(ref);
    }
}

typedef struct { float *x; int64_t rows, L; } smc_ctx;
static int launch_smc(void *v) { smc_ctx *c = v; return ss_cuda_softmax_causal(c->x, c->rows, c->L, g_stream); }

/* The causal softmax of the cuBLAS attention path, in place over [H, L, L]
 * blocks (row r sees keys 0..r % L, zeros beyond): the softmax's tolerance. */
static void case_softmax_causal(void) {
    int64_t shapes[][2] = {{1, 1}, {3, 5}, {2, 33}, {12, 1024}, {32, 2048}}; /* heads, L */
    int ns = g_quick ? 3 : 5;
    for (int si = 0; si < ns; si++) {
        int64_t L = shapes[si][1], rows = shapes[si][0] * L, n = rows * L;
        char name[96];
        snprintf(name, sizeof name, "softmax_causal %lld heads, L=%lld", (long long)shapes[si][0], (long long)L);
        if (!selected(name)) continue;
        float *x = rvec(n, 15, 6.f), *got = fvec(n, 0), *ref = fvec(n, 0);
        ss_ref_softmax_causal(ref, x, rows, L);
        float *dx = dalloc((size_t)n * 4);
        smc_ctx c = {dx, rows, L};
        out_buf ob = {dx, (size_t)n * 4, got};
        const float *init[1] = {x};
        double ms = 0;
        if (run_twice_from(name, launch_smc, &c, &ob, init, 1, 1, &ms)) fail_case();
        else check(name, got, ref, n, 1e-8, 1e-5, ms, 0);
        dfree(dx);
        free(x), free(got), free(ref);
    }
}

typedef struct { float *ds; const float *p; int64_t rows, L; float scale; } smcb_ctx;
static int launch_smcb(void *v) {
    smcb_ctx *c = v;
    return ss_cuda_softmax_causal_backward(c->ds, c->p, c->rows, c->L, c->scale, g_stream);
}

/* Its backward (the cuBLAS attention backward): dP (1e3 above the diagonal,
 * which must become 0) into scale P (dP - rowsum(P dP)) in place, against
 * double; fp32 sums of up to L terms |P dP| <= 1: atol 1e-6 + rtol 1e-5. */
static void case_softmax_causal_backward(void) {
    int64_t shapes[][2] = {{1, 1}, {3, 5}, {2, 33}, {12, 1024}, {32, 2048}}; /* heads, L */
    int ns = g_quick ? 3 : 5;
    const float scale = 0.125f;
    for (int si = 0; si < ns; si++) {
        int64_t L = shapes[si][1], rows = shapes[si][0] * L, n = rows * L;
        char name[96];
        snprintf(name, sizeof name, "softmax_causal_backward %lld heads, L=%lld", (long long)shapes[si][0],
                 (long long)L);
        if (!selected(name)) continue;
        float *sc = rvec(n, 16, 4.f), *dp = rvec(n, 17, 1.f), *p = fvec(n, 0), *got = fvec(n, 0), *ref = fvec(n, 0);
        ss_ref_softmax_causal(p, sc, rows, L);
        for (int64_t r = 0; r < rows; r++)
            for (int64_t j = r % L + 1; j < L; j++) dp[r * L + j] = 1e3f;
        ss_ref_softmax_causal_backward(ref, p, dp, rows, L, scale);
        float *dds = dalloc((size_t)n * 4), *dpp = dup_to_dev(p, (size_t)n * 4);
        smcb_ctx c = {dds, dpp, rows, L, scale};
        out_buf ob = {dds, (size_t)n * 4, got};
        const float *init[1] = {dp};
        double ms = 0;
        if (run_twice_from(name, launch_smcb, &c, &ob, init, 1, 1, &ms)) fail_case();
        else check(name, got, ref, n, 1e-6, 1e-5, ms, 0);
        dfree(dds), dfree(dpp);
        free(sc), free(dp), free(p), free(got), free(ref);
    }
}

/* ---- attention --------------------------------------------------------- */

typedef struct {
    float *z, *pat;
    const float *qkv;
    int64_t ld, n_seq, max_len, H, Hkv, dh;
    const int64_t *start, *len, *poff;
    float scale;
    int flash;
} att_ctx;
/* qkv rows are [q (H heads) | k (Hkv heads) | v (Hkv heads)]. */
static int launch_att(void *v) {
    att_ctx *c = v;
    const float *q = c->qkv, *k = q + c->H * c->dh, *vv = k + c->Hkv * c->dh;
    if (c->flash)
        return ss_cuda_attention_flash(c->z, q, k, vv, c->ld, c->n_seq, c->start, c->len, c->max_len, c->H, c->Hkv,
                                       c->dh, c->scale, g_stream);
    return ss_cuda_attention_pattern(c->z, c->pat, q, k, vv, c->ld, c->n_seq, c->start, c->len, c->poff, c->max_len,
                                     c->H, c->Hkv, c->dh, c->scale, g_stream);
}

/* Tolerance: fp32 dot products of dh terms and an fp32 (online) softmax
 * against the CPU op's double accumulation. Inputs are uniform in
 * [-amp, amp]; with amp = 2.5 the scores reach ~+-10 so patterns are peaked
 * (a softmax or masking error cannot hide in a near-uniform average):
 * z atol 1e-5 rtol 1e-4 (z = O(1)), pattern atol 1e-6 rtol 1e-4. */
/* The tensor-core kernel (kernels/flash_attention_tc.cu) against the CPU op
 * given the same bf16 operands (q*scale, k, v rounded; scale 1): only the
 * probabilities' rounding before P.V remains, |dz| <= 2 * 2^-9 * max|v| =
 * 4e-3 (as in test_kernels.c). q and k are scaled by 3 so that a masking or
 * fragment-layout error moves z by O(0.1). */
typedef struct {
    float *z;
    const float *qkv;
    int64_t ld, n_seq, max_len, n_rows, H, Hkv, dh;
    const int64_t *start, *len;
    float scale;
    void *ws; /* the kernel's bf16 Q, K, V */
    int qt;   /* query tiles per warp */
} tc_ctx;
static int launch_tc(void *v) {
    tc_ctx *c = v;
    const float *q = c->qkv, *k = q + c->H * c->dh, *vv = k + c->Hkv * c->dh;
    return ss_cuda_attention_flash_bf16(c->z, SS_CUDA_F32, q, k, vv, c->ld, c->n_seq, c->start, c->len, c->max_len, c->n_rows,
                                        c->H, c->Hkv, c->dh, c->scale, c->ws, c->qt, g_stream);
}

/* The same attention from bf16 rows a product wrote (ss_cuda_attention_flash_bf16_from16,
 * SUBSCOPE_QKV16): q unscaled, the scores scaled in fp32. */
typedef struct { float *z; const uint16_t *qkv16; int64_t ld, n_seq, max_len, H, Hkv, dh; const int64_t *start, *len; float scale; int qt; } tc16_ctx;
static int launch_tc16(void *v) {
    tc16_ctx *c = v;
    return ss_cuda_attention_flash_bf16_from16(c->z, SS_CUDA_F32, c->qkv16, c->ld, c->n_seq, c->start, c->len, c->max_len,
                                               c->H, c->Hkv, c->dh, c->scale, c->qt, g_stream);
}

static void case_attention_tc(void) {
    const ss_backend *be = ss_backend_cpu();
    struct { int n_seq; int64_t len[6]; int64_t H, Hkv, dh; int quick; } cases[] = {
        {1, {1}, 2, 2, 64, 1},
        {3, {1, 37, 70}, 2, 1, 64, 1},
        {2, {20, 65}, 2, 2, 128, 1},
        {1, {1024}, 12, 12, 64, 0},
        {6, {1, 100, 1024, 33, 517, 2}, 12, 12, 64, 0},
        {2, {1024, 333}, 32, 8, 128, 0},
        {1, {777}, 9, 3, 64, 0},
    };
    for (int ci = 0; ci < (int)(sizeof cases / sizeof cases[0]); ci++) {
        if (g_quick && !cases[ci].quick) continue;
        int64_t H = cases[ci].H, Hkv = cases[ci].Hkv, dh = cases[ci].dh, d = H * dh, ld = (H + 2 * Hkv) * dh;
        int64_t n_seq = cases[ci].n_seq, start[6], len[6], rows = 0, max_len = 0;
        for (int sq = 0; sq < n_seq; sq++) {
            len[sq] = cases[ci].len[sq], start[sq] = rows, rows += len[sq];
            if (len[sq] > max_len) max_len = len[sq];
        }
        const float scale = (float)(1.0 / sqrt((double)dh));
        float *qkv = rvec(rows * ld, 40 + (unsigned)ci, 1.f), *r = fvec(rows * ld, 0), *zr = fvec(rows * d, 0),
              *z = fvec(rows * d, 0), *z1 = fvec(rows * d, NAN), *r16 = fvec(rows * ld, 0), *zr16 = fvec(rows * d, 0),
              *z16 = fvec(rows * d, 0);
        uint16_t *h16 = xmalloc((size_t)(rows * ld) * 2);
        for (int64_t i = 0; i < rows; i++)
            for (int64_t e = 0; e < ld; e++) {
                const float x = qkv[i * ld + e] * (e < d + Hkv * dh ? 3.f : 1.f);
                qkv[i * ld + e] = x;
                r[i * ld + e] = ss_bf16_to_f32(ss_f32_to_bf16(e < d ? x * scale : x));
                h16[i * ld + e] = ss_f32_to_bf16(x), r16[i * ld + e] = ss_bf16_to_f32(h16[i * ld + e]);
            }
        int ref_done = 0, have1 = 0, ref16_done = 0;
        /* one and two 16-row query tiles per warp (SUBSCOPE_ATTN_QT): two must equal one bit for bit */
        for (int qt = 1; qt <= 2; qt++) {
            char name[160];
            snprintf(name, sizeof name, "attention tc bf16 seqs=%d max_len=%lld H=%lld Hkv=%lld dh=%lld qt=%d",
                     (int)n_seq, (long long)max_len, (long long)H, (long long)Hkv, (long long)dh, qt);
            if (!selected(name)) continue;
            if (!ref_done && be->attention(be, zr, r, r + d, r + d + Hkv * dh, ld, n_seq, start, len, H, Hkv, dh, 1.f,
                                           NULL, NULL)) {
                cpu_ref_failed(name);
                break;
            }
            ref_done = 1;
            float *dqkv = dup_to_dev(qkv, (size_t)(rows * ld) * 4), *dz = dalloc((size_t)(rows * d) * 4);
            int64_t meta[12];
            for (int sq = 0; sq < n_seq; sq++) meta[sq] = start[sq], meta[n_seq + sq] = len[sq];
            int64_t *dmeta = dup_to_dev(meta, (size_t)(2 * n_seq) * sizeof(int64_t));
            void *ws = dalloc((size_t)ss_cuda_attention_flash_bf16_ws(rows, H, Hkv, dh) * 2);
            tc_ctx c = {dz, dqkv, ld, n_seq, max_len, rows, H, Hkv, dh, dmeta, dmeta + n_seq, scale, ws, qt};
            out_buf ob = {dz, (size_t)(rows * d) * 4, z};
            double ms = 0;
            if (run_twice(name, launch_tc, &c, &ob, 1, &ms)) {
                fail_case();
            } else if (qt == 2 && have1 && memcmp(z, z1, (size_t)(rows * d) * 4)) {
                printf("CASE %-62s FAIL (differs from qt=1, whose arithmetic per row is the same)\n", name);
                fail_case();
            } else {
                check(name, z, zr, rows * d, 4e-3, 0, ms, 0);
                if (qt == 1) memcpy(z1, z, (size_t)(rows * d) * 4), have1 = 1;
            }
            /* from bf16 rows as the QKV product writes them (q unscaled): against the CPU op on
             * those rows within the same bound, and at heads of 64 (a scale of 1/8, which
             * commutes with rounding) equal to the packed path's z bit for bit */
            snprintf(name, sizeof name, "attention tc from16 seqs=%d max_len=%lld H=%lld Hkv=%lld dh=%lld qt=%d",
                     (int)n_seq, (long long)max_len, (long long)H, (long long)Hkv, (long long)dh, qt);
            if (!ref16_done && be->attention(be, zr16, r16, r16 + d, r16 + d + Hkv * dh, ld, n_seq, start, len, H, Hkv,
                                             dh, scale, NULL, NULL)) {
                cpu_ref_failed(name);
            } else {
                ref16_done = 1;
                uint16_t *d16 = dup_to_dev(h16, (size_t)(rows * ld) * 2);
                tc16_ctx c16 = {dz, d16, ld, n_seq, max_len, H, Hkv, dh, dmeta, dmeta + n_seq, scale, qt};
                out_buf ob16 = {dz, (size_t)(rows * d) * 4, z16};
                if (run_twice(name, launch_tc16, &c16, &ob16, 1, &ms)) {
                    fail_case();
                } else if (dh == 64 && memcmp(z16, z, (size_t)(rows * d) * 4)) {
                    printf("CASE %-62s FAIL (differs from the packed path's z at a scale of 1/8)\n", name);
                    fail_case();
                } else {
                    check(name, z16, zr16, rows * d, 4e-3, 0, ms, 0);
                }
                dfree(d16);
            }
            dfree(ws);
            dfree(dqkv), dfree(dz), dfree(dmeta);
        }
        free(qkv), free(r), free(zr), free(z), free(z1), free(r16), free(zr16), free(z16), free(h16);
    }
}

static void case_attention(void) {
    const ss_backend *be = ss_backend_cpu();
    struct {
        int n_seq;
        int64_t len[6];
        int64_t H, Hkv, dh;
        float amp;
        int quick;
    } cases[] = {
        {1, {1}, 1, 1, 8, 1.f, 1},                      /* one token */
        {3, {1, 37, 70}, 2, 2, 16, 1.f, 1},             /* packed; 70 spans 3 tiles of 32 */
        {2, {33, 5}, 1, 1, 40, 1.f, 1},                 /* dh not a multiple of 32 */
        {1, {45}, 2, 2, 64, 1.f, 1},
        {2, {20, 3}, 1, 1, 136, 1.f, 1},                /* > 48 KB of shared memory (opt-in) */
        {4, {130, 64, 2, 97}, 3, 3, 32, 1.f, 1},
        {2, {40, 65}, 2, 2, 256, 2.5f, 1},              /* the largest dh */
        {2, {35, 7}, 8, 2, 16, 2.5f, 1},                /* grouped-query, 4 query heads per key/value head */
        {3, {1, 41, 33}, 4, 1, 24, 2.5f, 1},            /* multi-query */
        {1, {1}, 12, 12, 64, 2.5f, 0},                  /* GPT-2 small heads */
        {1, {100}, 12, 12, 64, 2.5f, 0},
        {1, {1024}, 12, 12, 64, 2.5f, 0},
        {1, {1024}, 12, 12, 128, 2.5f, 0},
        {6, {1, 100, 1024, 33, 517, 2}, 12, 12, 64, 2.5f, 0}, /* several packed sequences */
        {3, {300, 1, 777}, 8, 8, 128, 2.5f, 0},
        {2, {257, 500}, 4, 4, 256, 2.5f, 0},
        {3, {200, 31, 129}, 5, 5, 40, 2.5f, 0},
        {2, {1024, 333}, 32, 8, 128, 2.5f, 0},          /* Llama-3-8B-shaped heads */
        {1, {777}, 9, 3, 64, 2.5f, 0},                  /* SmolLM2-135M-shaped heads */
        {2, {512, 100}, 14, 2, 64, 2.5f, 0},            /* Qwen2-0.5B-shaped heads */
    };
    int nc = (int)(sizeof cases / sizeof cases[0]);
    for (int ci = 0; ci < nc; ci++) {
        if (g_quick && !cases[ci].quick) continue;
        int64_t H = cases[ci].H, Hkv = cases[ci].Hkv, dh = cases[ci].dh, d = H * dh, ld = (H + 2 * Hkv) * dh;
        int64_t n_seq = cases[ci].n_seq;
        int64_t start[6], len[6], poff[6], rows = 0, pt = 0, max_len = 0;
        char lens[64] = "";
        for (int s = 0; s < n_seq; s++) {
            len[s] = cases[ci].len[s];
            start[s] = rows;
            rows += len[s];
            poff[s] = pt;
            pt += H * len[s] * len[s];
            if (len[s] > max_len) max_len = len[s];
            snprintf(lens + strlen(lens), sizeof lens - strlen(lens), "%s%lld", s ? "," : "", (long long)len[s]);
        }
        char base[96];
        if (Hkv == H) snprintf(base, sizeof base, "seqs=[%s] H=%lld dh=%lld", lens, (long long)H, (long long)dh);
        else
            snprintf(base, sizeof base, "seqs=[%s] H=%lld Hkv=%lld dh=%lld", lens, (long long)H, (long long)Hkv,
                     (long long)dh);
        char name_p[128], name_f[128];
        snprintf(name_p, sizeof name_p, "attention+pattern %s", base);
        snprintf(name_f, sizeof name_f, "flash attention %s", base);
        if (!selected(name_p) && !selected(name_f)) continue;
        float *qkv = rvec(rows * ld, 15 + (unsigned)ci, cases[ci].amp), *zr = fvec(rows * d, 0), *patr = fvec(pt, 0);
        float *z = fvec(rows * d, 0), *pat = fvec(pt, 0);
        float scale = (float)(1.0 / sqrt((double)dh));
        if (be->attention(be, zr, qkv, qkv + d, qkv + d + Hkv * dh, ld, n_seq, start, len, H, Hkv, dh, scale, patr,
                          poff)) {
            printf("CASE %s FAIL (CPU reference: %s)\n", name_p, ss_last_error());
            fail_case();
        } else {
            float *dqkv = dup_to_dev(qkv, (size_t)(rows * ld) * 4), *dz = dalloc((size_t)(rows * d) * 4);
            float *dpat = dalloc((size_t)pt * 4);
            int64_t meta[18];
            for (int s = 0; s < n_seq; s++) meta[s] = start[s], meta[n_seq + s] = len[s], meta[2 * n_seq + s] = poff[s];
            int64_t *dmeta = dup_to_dev(meta, (size_t)(3 * n_seq) * sizeof(int64_t));
            att_ctx c = {dz, dpat, dqkv, ld, n_seq, max_len, H, Hkv, dh, dmeta, dmeta + n_seq, dmeta + 2 * n_seq,
                         scale, 0};
            double ms = 0;
            if (selected(name_p)) {
                out_buf ob[2] = {{dz, (size_t)(rows * d) * 4, z}, {dpat, (size_t)pt * 4, pat}};
                if (run_twice(name_p, launch_att, &c, ob, 2, &ms)) fail_case();
                else {
                    char nm[160];
                    snprintf(nm, sizeof nm, "%s z", name_p);
                    check(nm, z, zr, rows * d, 1e-5, 1e-4, ms, 0);
                    snprintf(nm, sizeof nm, "%s pattern", name_p);
                    check(nm, pat, patr, pt, 1e-6, 1e-4, ms, 0);
                }
            }
            if (selected(name_f)) {
                c.flash = 1;
                out_buf ob = {dz, (size_t)(rows * d) * 4, z};
                if (run_twice(name_f, launch_att, &c, &ob, 1, &ms)) fail_case();
                else check(name_f, z, zr, rows * d, 1e-5, 1e-4, ms, 0);
            }
            dfree(dqkv), dfree(dz), dfree(dpat), dfree(dmeta);
        }
        free(qkv), free(zr), free(patr), free(z), free(pat);
    }
    if (selected("attention dh > 256")) {
        /* dh above the register budget is refused, not mis-computed */
        int64_t meta[2] = {0, 1}, *dmeta = dup_to_dev(meta, sizeof meta);
        int rc1 = ss_cuda_attention_flash(NULL, NULL, NULL, NULL, 3 * 257, 1, dmeta, dmeta + 1, 1, 1, 1, 257, 1.f,
                                          g_stream);
        int rc2 = ss_cuda_attention_pattern(NULL, NULL, NULL, NULL, NULL, 3 * 257, 1, dmeta, dmeta + 1, dmeta, 1, 1, 1,
                                            257, 1.f, g_stream);
        g_cases++;
        int ok = rc1 == 1 && rc2 == 1;
        printf("CASE %-62s %s (launchers returned %d and %d, want 1)\n", "attention dh > 256 is refused",
               ok ? "ok" : "FAIL", rc1, rc2);
        if (!ok) g_failed++;
        dfree(dmeta);
    }
}

/* ---- attention against a key/value cache (kernels/attention_kv.cu) ---- */

typedef struct {
    float *z;
    const float *q;
    const void *kv; /* dt elements */
    int dt;
    int64_t ld_q, ld_kv, n_q, q0, H, Hkv, dh;
    float scale;
    int64_t splits; /* 1: a block per (row, head); more: the keys split, partials in ws */
    float *ws;
} akv_ctx;
/* kv rows are [k (Hkv heads) | v (Hkv heads)], the forward's cache layout;
 * q rows are the queries of a fused projection (stride ld_q). */
static int launch_akv(void *v) {
    akv_ctx *c = v;
    const size_t eb = c->dt == SS_CUDA_F32 ? 4 : 2;
    return ss_cuda_attention_kv(c->z, c->q, c->ld_q, c->kv, (const char *)c->kv + (size_t)(c->Hkv * c->dh) * eb, c->dt,
                                c->ld_kv, c->n_q, c->q0, c->H, c->Hkv, c->dh, c->scale, c->splits, c->ws, g_stream);
}

/* One case: splits 1 (a block per (row, head)), 0 (the count the backend
 * asks for, ss_cuda_attention_kv_splits, which reads the GPU's SM count) or
 * that many at most; the name gives the splits made. dt SS_CUDA_BF16 or F16:
 * a 16-bit model's cache (the name says which), the CPU op given the same. */
static void akv_case(const ss_backend *be, int ci, int64_t n_q, int64_t q0, int64_t H, int64_t Hkv, int64_t dh,
                     int64_t splits, int dt) {
    const int64_t nk = q0 + n_q, ld_q = (H + 2 * Hkv) * dh, ld_kv = 2 * Hkv * dh, nz = n_q * H * dh;
    const int auto_s = splits == 0;
    if (auto_s) splits = ss_cuda_attention_kv_splits(n_q, q0, H);
    const int64_t nws = ss_cuda_attention_kv_ws(n_q, q0, H, dh, splits), made = nws ? nws / (n_q * H * (dh + 2)) : 1;
    const char *dts = dt == SS_CUDA_BF16 ? " bf16" : dt == SS_CUDA_F16 ? " fp16" : "";
    char name[128];
    if (splits == 1 && !auto_s)
        snprintf(name, sizeof name, "attention_kv%s n_q=%lld q0=%lld H=%lld Hkv=%lld dh=%lld", dts, (long long)n_q,
                 (long long)q0, (long long)H, (long long)Hkv, (long long)dh);
    else
        snprintf(name, sizeof name, "attention_kv%s n_q=%lld q0=%lld H=%lld Hkv=%lld dh=%lld split %s%lld", dts,
                 (long long)n_q, (long long)q0, (long long)H, (long long)Hkv, (long long)dh, auto_s ? "auto " : "",
                 (long long)made);
    if (!selected(name)) return;
    float *q = rvec(n_q * ld_q, 70 + (unsigned)ci, 2.5f), *kv = rvec(nk * ld_kv, 90 + (unsigned)ci, 2.5f);
    float *z = fvec(nz, 0), *zr = fvec(nz, 0);
    const float scale = (float)(1.0 / sqrt((double)dh));
    const size_t eb = dt == SS_CUDA_F32 ? 4 : 2;
    uint16_t *kv16 = NULL;
    if (dt != SS_CUDA_F32) {
        kv16 = malloc((size_t)(nk * ld_kv) * 2);
        if (!kv16) {
            fprintf(stderr, "out of memory\n");
            exit(1);
        }
        for (int64_t i = 0; i < nk * ld_kv; i++) kv16[i] = dt == SS_CUDA_BF16 ? ss_f32_to_bf16(kv[i]) : ss_f32_to_f16(kv[i]);
    }
    const void *hkv = kv16 ? (const void *)kv16 : (const void *)kv;
    if (be->attention_kv(be, zr, q, ld_q, hkv, (const char *)hkv + (size_t)(Hkv * dh) * eb, dt, ld_kv, n_q, q0, H, Hkv,
                         dh, scale)) {
        cpu_ref_failed(name);
    } else {
        float *dq = dup_to_dev(q, (size_t)(n_q * ld_q) * 4), *dkv = dup_to_dev(hkv, (size_t)(nk * ld_kv) * eb),
              *dz = dalloc((size_t)nz * 4), *dws = nws ? dalloc((size_t)nws * 4) : NULL;
        akv_ctx c = {dz, dq, dkv, dt, ld_q, ld_kv, n_q, q0, H, Hkv, dh, scale, splits, dws};
        out_buf ob = {dz, (size_t)nz * 4, z};
        double ms = 0;
        if (run_twice(name, launch_akv, &c, &ob, 1, &ms)) fail_case();
        else check(name, z, zr, nz, 1e-5, 1e-4, ms, 0);
        dfree(dq), dfree(dkv), dfree(dz);
        if (dws) dfree(dws);
    }
    free(q), free(kv), free(kv16), free(z), free(zr);
}

/* Against the CPU op, attention's tolerance (atol 1e-5, rtol 1e-4; inputs of
 * amplitude 2.5 for peaked patterns): one and several new rows, nothing and
 * much cached, key counts off the 32-key chunks and the block's 128, GQA
 * groups, dh 7 to 256; then model-sized steps: GPT-2 small after 1023
 * tokens, a prompt pass of 211, Llama-3-8B heads at 4096 and 32768 keys,
 * dh 80 heads, and a 16-row step of Qwen2-0.5B heads. Each with a block per
 * (row, head), and again with the backend's automatic split of the keys
 * where it makes one (on this GPU's SM count: 16 under the emulation). Then
 * the split forced: 201 keys in 2, 3 and 4 splits (the last of 9 keys), a
 * split of one key, 40 prompt rows whose first rows have empty later splits,
 * GQA, dh 7 to 256; GPT-2 small's heads at 4096 keys in 4 to 64 splits,
 * Llama-3-8B's at 32768 in 64. */
static void case_attention_kv(void) {
    const ss_backend *be = ss_backend_cpu();
    struct { int64_t n_q, q0, H, Hkv, dh; int quick; } cases[] = {
        {1, 0, 1, 1, 8, 1},      {1, 200, 4, 2, 64, 1},    {5, 37, 6, 3, 80, 1},
        {3, 130, 2, 2, 128, 1},  {33, 0, 2, 1, 7, 1},      {1, 999, 8, 2, 16, 1},
        {2, 40, 2, 1, 256, 1},   {1, 1023, 12, 12, 64, 0}, {211, 0, 12, 12, 64, 0},
        {1, 4095, 32, 8, 128, 0}, {1, 32767, 32, 8, 128, 0}, {3, 2000, 32, 32, 80, 0},
        {16, 1000, 14, 2, 64, 0},
    };
    for (int ci = 0; ci < (int)(sizeof cases / sizeof cases[0]); ci++) {
        if (g_quick && !cases[ci].quick) continue;
        akv_case(be, ci, cases[ci].n_q, cases[ci].q0, cases[ci].H, cases[ci].Hkv, cases[ci].dh, 1, SS_CUDA_F32);
        if (ss_cuda_attention_kv_splits(cases[ci].n_q, cases[ci].q0, cases[ci].H) > 1)
            akv_case(be, ci, cases[ci].n_q, cases[ci].q0, cases[ci].H, cases[ci].Hkv, cases[ci].dh, 0, SS_CUDA_F32);
    }
    struct { int64_t n_q, q0, H, Hkv, dh, splits; int quick; } forced[] = {
        {1, 200, 4, 2, 64, 2, 1},   {1, 200, 4, 2, 64, 3, 1},    {1, 200, 4, 2, 64, 5, 1},
        {1, 32, 2, 1, 16, 2, 1},    {40, 0, 2, 2, 8, 2, 1},      {5, 37, 6, 3, 80, 4, 1},
        {3, 130, 2, 2, 128, 3, 1},  {33, 0, 2, 1, 7, 2, 1},      {1, 999, 8, 2, 16, 7, 1},
        {2, 40, 2, 1, 256, 2, 1},   {1, 4095, 12, 12, 64, 4, 0}, {1, 4095, 12, 12, 64, 8, 0},
        {1, 4095, 12, 12, 64, 16, 0}, {1, 4095, 12, 12, 64, 32, 0}, {1, 4095, 12, 12, 64, 64, 0},
        {1, 32767, 32, 8, 128, 64, 0},
    };
    for (int ci = 0; ci < (int)(sizeof forced / sizeof forced[0]); ci++) {
        if (g_quick && !forced[ci].quick) continue;
        akv_case(be, 100 + ci, forced[ci].n_q, forced[ci].q0, forced[ci].H, forced[ci].Hkv, forced[ci].dh,
                 forced[ci].splits, SS_CUDA_F32);
    }
    /* a 16-bit model's cache (bf16, fp16), unsplit, split automatically and forced */
    struct { int64_t n_q, q0, H, Hkv, dh, splits; int dt, quick; } c16[] = {
        {1, 200, 4, 2, 64, 1, SS_CUDA_BF16, 1},     {1, 200, 4, 2, 64, 3, SS_CUDA_BF16, 1},
        {33, 0, 2, 1, 7, 2, SS_CUDA_F16, 1},        {5, 37, 6, 3, 80, 4, SS_CUDA_F16, 1},
        {1, 4095, 12, 12, 64, 0, SS_CUDA_BF16, 0},  {1, 32767, 32, 8, 128, 0, SS_CUDA_BF16, 0},
        {1, 32767, 32, 8, 128, 0, SS_CUDA_F16, 0},
    };
    for (int ci = 0; ci < (int)(sizeof c16 / sizeof c16[0]); ci++) {
        if (g_quick && !c16[ci].quick) continue;
        akv_case(be, 200 + ci, c16[ci].n_q, c16[ci].q0, c16[ci].H, c16[ci].Hkv, c16[ci].dh, c16[ci].splits, c16[ci].dt);
    }
    if (selected("attention_kv refuses")) {
        /* dh above 256, key/value heads not dividing H and a split without its workspace are
         * refused, not mis-computed */
        int rc1 = ss_cuda_attention_kv(NULL, NULL, 3 * 257, NULL, NULL, SS_CUDA_F32, 2 * 257, 1, 0, 1, 1, 257, 1.f, 1,
                                       NULL, g_stream);
        int rc2 = ss_cuda_attention_kv(NULL, NULL, 16, NULL, NULL, SS_CUDA_F32, 8, 1, 0, 4, 3, 4, 1.f, 1, NULL, g_stream);
        int rc3 = ss_cuda_attention_kv(NULL, NULL, 16, NULL, NULL, SS_CUDA_F32, 8, 1, 63, 4, 1, 4, 1.f, 2, NULL, g_stream);
        g_cases++;
        int ok = rc1 == 1 && rc2 == 1 && rc3 == 1;
        printf("CASE %-62s %s (launchers returned %d, %d and %d, want 1)\n",
               "attention_kv refuses dh > 256, Hkv not dividing H, no split ws", ok ? "ok" : "FAIL", rc1, rc2, rc3);
        if (!ok) g_failed++;
    }
}

/* ---- batch covariance: column means and lower-triangular X^T X --------- */

typedef struct { double *m64; float *m32; const void *x; int dt; int64_t ld, n, d; double *ws; } cm_ctx;
static int launch_cm(void *v) {
    cm_ctx *c = v;
    return ss_cuda_colmean(c->m64, c->m32, c->x, c->dt, c->ld, NULL, c->n, c->d, c->ws, g_stream);
}

typedef struct {
    float *c;
    int64_t ldc;
    const void *x;
    int dt;
    int64_t ldx;
    const float *mean;
    int64_t n, d;
    void *ws; /* the kernel's workspace */
} cv_ctx;
static int launch_cv(void *v) {
    cv_ctx *c = v;
    return ss_cuda_cov_lower(c->c, c->ldc, c->x, c->dt, c->ldx, c->mean, c->n, c->d, c->ws, g_stream);
}
static int launch_cv_tc(void *v) {
    cv_ctx *c = v;
    return ss_cuda_cov_lower_tc(c->c, c->ldc, c->x, c->dt, c->ldx, c->mean, c->n, c->d, c->ws, g_stream);
}
static int launch_cv_wg(void *v) {
    cv_ctx *c = v;
    return ss_cuda_cov_lower_wg(c->c, c->ldc, c->x, c->dt, c->ldx, c->mean, c->n, c->d, c->ws, g_stream);
}
/* the blocked triangle through cuBLAS (cov_blk.h), its default block width: blk's plan (its rows
 * in the default slices, or in `splits`), or rec's */
static int launch_cv_blocks(cv_ctx *c, int rec, int64_t splits) {
    static cublasHandle_t h;
    if (!h && (cublasCreate(&h) != CUBLAS_STATUS_SUCCESS || cublasSetStream(h, g_stream) != CUBLAS_STATUS_SUCCESS))
        return 1;
    cublasStatus_t bs = CUBLAS_STATUS_SUCCESS;
    int e = ss_cov_lower_blk(h, rec, c->c, c->ldc, c->x, c->dt, c->ldx, c->mean, c->n, c->d, 0, splits, c->ws,
                             g_stream, &bs);
    if (e == -1)
        fprintf(stderr, "%s: %s\n", rec ? "cublasGemmStridedBatchedEx" : "cublasGemmBatchedEx", cublasGetStatusString(bs));
    return e;
}
static int launch_cv_blk(void *v) { return launch_cv_blocks(v, 0, 0); }
static int launch_cv_rec(void *v) { return launch_cv_blocks(v, 1, 0); }
#define CV_BLK_SPLITS 3 /* kernel 5: blk with its rows in this many slices, whatever the default */
static int launch_cv_blk_split(void *v) { return launch_cv_blocks(v, 0, CV_BLK_SPLITS); }

/* One shape: the means from ss_cuda_colmean against fp64 sums (rtol 1e-12,
 * and mean32 == (float)mean64), then C centred on the device's mean32
 * against fp64 sums of the same products, per element within 2(n+2)2^-24
 * S_ij, S_ij = sum_r |x_ri - m_i||x_rj - m_j| (the reasoning is in
 * tests/unit/test_kernels.c). Small shapes check every element; large ones
 * a sample (all tile-edge rows/columns 0, 127, 128, d-1 crossed, plus 4096
 * random pairs; the fp64 reference of the whole of C would take the host
 * minutes). Above the diagonal and past d in a row of ldc, every element
 * must keep the NaN fill. With tc 1 or 2, the tensor-core kernels
 * (cov_lower_tc.cu, mma.sync; cov_lower_wg.cu, wgmma: skipped where
 * unsupported) against the same sums of their bf16 operands, bf16(x - m32), the same bound
 * (products of bf16 values are exact in fp32); the means are not rechecked. tc 3 and 4: the
 * blocked triangle (cov_lower_blk.cu, cuBLAS's batched bf16 products; plans blk and rec),
 * the same sums and bound, which may also write the upper halves of its diagonal blocks; tc 5:
 * blk with its rows cut into CV_BLK_SPLITS slices (partial triangles summed after). */
static void cov_one(int64_t n, int64_t d, int64_t ldx, int64_t ldc, int dt, int tc) {
    char name[96];
    snprintf(name, sizeof name, "cov_lower%s %s n=%lld d=%lld ldx=%lld ldc=%lld",
             tc == 5 ? "_blk_split" : tc == 4 ? "_rec" : tc == 3 ? "_blk" : tc == 2 ? "_wg" : tc ? "_tc" : "",
             dt_name[dt],
             (long long)n, (long long)d, (long long)ldx, (long long)ldc);
    char mname[96];
    snprintf(mname, sizeof mname, "colmean %s n=%lld d=%lld ldx=%lld%s", dt_name[dt], (long long)n, (long long)d,
             (long long)ldx, ss_cuda_colmean_ws(n, d) ? " slices" : "");
    if (!selected(name) && (tc || !selected(mname))) return;
    if (tc == 2 && !ss_cuda_cov_lower_wg_supported()) {
        printf("CASE %-62s skipped (wgmma: needs compute capability 9.0 and a CUDA_ARCH=90 build)\n", name);
        return;
    }
    float *x = rvec(n * ldx, 41 + (unsigned)d, 2.f), *xv = fvec(n * ldx, 0);
    for (int64_t i = 0; i < n * ldx; i++) x[i] += 3.f * (float)(i % 5);
    void *dx = weights_dev(x, n * ldx, dt, xv);
    double *m64 = xmalloc((size_t)d * 8);
    float *m32 = fvec(d, 0);
    double *dm64 = dalloc((size_t)d * 8);
    float *dm32 = dalloc((size_t)d * 4);
    /* means */
    const int64_t cmwsb = ss_cuda_colmean_ws(n, d); /* the rows in slices where n > 1024 */
    double *dcmws = cmwsb ? dalloc((size_t)cmwsb) : NULL;
    cm_ctx mc = {dm64, dm32, dx, dt, ldx, n, d, dcmws};
    out_buf mo[2] = {{dm64, (size_t)d * 8, m64}, {dm32, (size_t)d * 4, m32}};
    double ms = 0;
    if (run_twice(mname, launch_cm, &mc, mo, 2, &ms)) {
        fail_case();
    } else if (!tc) {
        int64_t bad = 0;
        double maxe = 0;
        for (int64_t j = 0; j < d; j++) {
            double s = 0;
            for (int64_t r = 0; r < n; r++) s += xv[r * ldx + j];
            s /= (double)n;
            double e = fabs(m64[j] - s);
            if (e > maxe) maxe = e;
            bad += !(e <= 1e-12 * fabs(s)) || m32[j] != (float)m64[j];
        }
        g_cases++;
        printf("CASE %-62s n=%-9lld max_err=%.2e gpu_ms=%.3f tol=1e-12*|ref| (fp64) %s\n", mname, (long long)d, maxe,
               ms, bad ? "FAIL" : "ok");
        if (bad) g_failed++;
    }
    /* C */
    size_t cbytes = (size_t)d * (size_t)ldc * 4;
    float *c = xmalloc(cbytes), *dc = dalloc(cbytes);
    void *dws = dalloc((size_t)(tc == 4   ? ss_cuda_cov_lower_rec_ws(n, d)
                                : tc == 5 ? ss_cuda_cov_lower_blk_ws(n, d, 0, CV_BLK_SPLITS)
                                : tc == 3 ? ss_cuda_cov_lower_blk_ws(n, d, 0, 0)
                                : tc == 2 ? ss_cuda_cov_lower_wg_ws(n, d)
                                : tc      ? ss_cuda_cov_lower_tc_ws(n, d)
                                          : ss_cuda_cov_lower_ws(n, d)));
    cv_ctx cc = {dc, ldc, dx, dt, ldx, dm32, n, d, dws};
    out_buf co = {dc, cbytes, c};
    if (run_twice(name,
                  tc == 5   ? launch_cv_blk_split
                  : tc == 4 ? launch_cv_rec
                  : tc == 3 ? launch_cv_blk
                  : tc == 2 ? launch_cv_wg
                  : tc      ? launch_cv_tc
                            : launch_cv,
                  &cc, &co, 1, &ms)) {
        fail_case();
    } else {
        int full = d <= 512;
        int64_t above = 0, bad = 0, checked = 0,
                leaf = tc == 4 ? ss_cuda_cov_rec_leaf(d, 0) : tc >= 3 ? ss_cuda_cov_blk_leaf(d, 0) : 1;
        for (int64_t i = 0; i < d; i++)
            for (int64_t j = i + 1; j < ldc; j++) above += !isnan(c[i * ldc + j]) && !(tc >= 3 && j < d && i / leaf == j / leaf);
        int64_t edges[] = {0, 1, 127, 128, 129, d / 2, d - 2, d - 1};
        unsigned s = 7;
        int64_t npairs = full ? d * (d + 1) / 2 : 64 + 4096;
        double maxr = 0, bound = 2.0 * (double)(n + 2) * 0x1p-24;
        for (int64_t p = 0, fi = 0, fj = 0; p < npairs; p++) {
            int64_t i, j;
            if (full) {
                i = fi, j = fj;
                if (++fj > fi) fi++, fj = 0;
            } else if (p < 64) {
                i = edges[p / 8], j = edges[p % 8];
            } else {
                s = s * 1664525u + 1013904223u;
                i = (int64_t)(s % (uint32_t)d);
                s = s * 1664525u + 1013904223u;
                j = (int64_t)(s % (uint32_t)d);
            }
            if (i < 0 || j < 0 || i >= d || j >= d) continue;
            if (j > i) { int64_t t = i; i = j; j = t; }
            double ref = 0, sa = 0;
            for (int64_t r = 0; r < n; r++) {
                double a = (double)xv[r * ldx + i] - m32[i], b = (double)xv[r * ldx + j] - m32[j];
                if (tc)
                    a = ss_bf16_to_f32(ss_f32_to_bf16(xv[r * ldx + i] - m32[i])),
                    b = ss_bf16_to_f32(ss_f32_to_bf16(xv[r * ldx + j] - m32[j]));
                ref += a * b;
                sa += fabs(a * b);
            }
            double e = fabs((double)c[i * ldc + j] - ref);
            if (sa > 0 && e / sa > maxr) maxr = e / sa;
            bad += !(e <= bound * sa);
            checked++;
        }
        g_cases++;
        printf("CASE %-62s n=%-9lld max_err/S=%.2e gpu_ms=%.3f tol=%.1e*S %s", name, (long long)checked, maxr, ms,
               bound, bad || above ? "FAIL" : "ok");
        if (bad || above) {
            printf(" (%lld outside tolerance, %lld written above the diagonal)", (long long)bad, (long long)above);
            g_failed++;
        }
        printf("\n");
        fflush(stdout);
    }
    dfree(dx), dfree(dm64), dfree(dm32), dfree(dc);
    if (dcmws) dfree(dcmws);
    dfree(dws);
    free(x), free(xv), free(m64), free(m32), free(c);
}

/* The unit tests' shapes; one whose rows every kernel splits (3 tiles: the
 * mma.sync kernel over 8 blocks, the fp32 one over 16); then model-sized:
 * GPT-2 small's MLP width with a 4096-row batch, 777 wide (split over 4
 * and 7), and d = 16384 (C = 1 GiB) with a few rows. --quick: the first 5. */
static const int64_t cov_shapes[8][4] = {{37, 70, 70, 73},      {130, 33, 35, 33},      {5, 1, 1, 1},
                                         {9, 129, 131, 130},    {2048, 200, 200, 201},  {4096, 3072, 3072, 3072},
                                         {1000, 777, 781, 777}, {8, 16384, 16384, 16384}};
/* kernels 0 (fp32) and 1 (mma.sync) here; 2 (wgmma) in case_cov_wg, run
 * last (main): a fault in a kernel never yet run on a GPU leaves a sticky
 * error that fails every later case */
static void cov_cases(int first, int last) {
    for (int si = 0; si < (g_quick ? 5 : 8); si++)
        for (int dt = SS_CUDA_F32; dt <= SS_CUDA_BF16; dt += 2)
            for (int k = first; k <= last; k++)
                cov_one(cov_shapes[si][0], cov_shapes[si][1], cov_shapes[si][2], cov_shapes[si][3], dt, k);
}
/* the blocked triangle (3, 4, 5) not in --quick, the sanitizers' run: its products are cuBLAS's,
 * whose Hopper kernels the sanitizers misreport (case_backend_matmul16) */
static void case_cov(void) {
    cov_cases(0, 1);
    if (!g_quick) cov_cases(3, 5);
}
static void case_cov_wg(void) { cov_cases(2, 2); }

/* collect's merge on the device (kernels/moments_merge.cu) against the same
 * formula on the host in fp64 (the arithmetic of ss_moments_add_partial):
 * both do the same fp64 operations, the device perhaps fused into FMAs, so
 * each entry agrees to 1e-13 of the sum of its terms' magnitudes. The first
 * merge (na = 0) overwrites; above the diagonal the NaN fill must stay. */
static void case_moments_merge(void) {
    const int64_t shapes[][3] = {{1, 0, 3}, {37, 0, 9}, {37, 5, 9}, {300, 1000, 77}, {1031, 12, 4096}};
    for (int si = 0; si < 5; si++) {
        const int64_t d = shapes[si][0], na = shapes[si][1], nb = shapes[si][2];
        char name[96];
        snprintf(name, sizeof name, "moments_merge d=%lld na=%lld nb=%lld", (long long)d, (long long)na, (long long)nb);
        if (!selected(name)) continue;
        unsigned s = 99 + (unsigned)si;
        double *ma = xmalloc((size_t)d * 8), *mb = xmalloc((size_t)d * 8), *m2 = xmalloc((size_t)(d * d) * 8);
        double *want_m = xmalloc((size_t)d * 8), *want = xmalloc((size_t)(d * d) * 8), *mag = xmalloc((size_t)(d * d) * 8);
        float *m32 = xmalloc((size_t)d * 4), *c = xmalloc((size_t)(d * d) * 4);
        for (int64_t i = 0; i < d; i++) {
            ma[i] = 5.0 + frand(&s), mb[i] = 5.0 + frand(&s);
            m32[i] = (float)mb[i] + 1e-3f * frand(&s);
        }
        for (int64_t i = 0; i < d * d; i++) {
            m2[i] = (double)nb * (1.0 + frand(&s)) * 0.5;
            c[i] = (float)nb * frand(&s);
            if (i % d > i / d) m2[i] = NAN; /* above the diagonal */
        }
        const double n = (double)na + (double)nb, fb = (double)nb / n, alpha = (double)na * fb;
        for (int64_t i = 0; i < d; i++) want_m[i] = na ? ma[i] + (mb[i] - ma[i]) * fb : mb[i];
        for (int64_t i = 0; i < d; i++)
            for (int64_t j = 0; j <= i; j++) {
                const double ei = mb[i] - m32[i], ej = mb[j] - m32[j], di = na ? mb[i] - ma[i] : 0, dj = na ? mb[j] - ma[j] : 0;
                const double bij = (double)c[i * d + j] - (double)nb * ei * ej;
                want[i * d + j] = na ? (m2[i * d + j] + bij) + alpha * di * dj : bij;
                mag[i * d + j] = fabs((double)c[i * d + j]) + fabs((double)nb * ei * ej) +
                                 (na ? fabs(m2[i * d + j]) + fabs(alpha * di * dj) : 0);
            }
        double *dma = dup_to_dev(ma, (size_t)d * 8), *dmb = dup_to_dev(mb, (size_t)d * 8);
        double *dm2 = dup_to_dev(m2, (size_t)(d * d) * 8), *dws = dalloc((size_t)(2 * d) * 8);
        float *dm32 = dup_to_dev(m32, (size_t)d * 4), *dc = dup_to_dev(c, (size_t)(d * d) * 4);
        double t0 = ss_now();
        int rc = ss_cuda_moments_merge(dma, dm2, d, dmb, dm32, dc, d, d, na, nb, dws, g_stream);
        CU(cudaStreamSynchronize(g_stream), name);
        double ms = 1e3 * (ss_now() - t0);
        to_host(ma, dma, (size_t)d * 8);
        to_host(m2, dm2, (size_t)(d * d) * 8);
        int64_t bad = 0, above = 0;
        double maxr = 0;
        for (int64_t i = 0; i < d; i++) bad += !(fabs(ma[i] - want_m[i]) <= 1e-13 * fabs(want_m[i]));
        for (int64_t i = 0; i < d; i++)
            for (int64_t j = 0; j < d; j++) {
                if (j > i) {
                    above += !isnan(m2[i * d + j]);
                    continue;
                }
                const double diff = fabs(m2[i * d + j] - want[i * d + j]), e = mag[i * d + j] > 0 ? diff / mag[i * d + j] : diff;
                maxr = e > maxr ? e : maxr;
                bad += !(e <= 1e-13);
            }
        g_cases++;
        const int fail = rc != 0 || bad || above;
        printf("CASE %-62s n=%-9lld max_err/sum|terms|=%.2e ms=%.3f tol=1e-13 %s", name, (long long)d, maxr, ms,
               fail ? "FAIL" : "ok");
        if (fail) {
            printf(" (launcher %d, %lld outside tolerance, %lld written above the diagonal)", rc, (long long)bad,
                   (long long)above);
            g_failed++;
        }
        printf("\n");
        fflush(stdout);
        dfree(dma), dfree(dmb), dfree(dm2), dfree(dws), dfree(dm32), dfree(dc);
        free(ma), free(mb), free(m2), free(want_m), free(want), free(mag), free(m32), free(c);
    }
}

/* ---- the backward pass ------------------------------------------------- */

/* run_twice for ops that accumulate: every output is reset to its initial
 * contents (init[o], or the NaN fill when NULL) before each launch. With
 * same == 0 the two launches are not compared bitwise (float atomics). */
static int run_twice_from(const char *name, launch_fn fn, void *ctx, out_buf *outs, const float **init, int nout,
                          int same, double *ms) {
    int differ = 0;
    for (int pass = 0; pass < 2; pass++) {
        for (int o = 0; o < nout; o++) {
            if (init[o]) CU(cudaMemcpyAsync(outs[o].dev, init[o], outs[o].bytes, cudaMemcpyHostToDevice, g_stream), "copy");
            else CU(cudaMemsetAsync(outs[o].dev, g_fill, outs[o].bytes, g_stream), "memset");
        }
        CU(cudaStreamSynchronize(g_stream), "copy");
        CU(cudaEventRecord(g_ev0, g_stream), "event");
        int rc = fn(ctx);
        if (rc != 0) {
            printf("CASE %s FAIL (launcher returned %d: %s)\n", name, rc, cudaGetErrorString((cudaError_t)rc));
            return 1;
        }
        CU(cudaEventRecord(g_ev1, g_stream), "event");
        CU(cudaStreamSynchronize(g_stream), name);
        CU(cudaGetLastError(), name);
        if (pass == 0) {
            float f = 0;
            CU(cudaEventElapsedTime(&f, g_ev0, g_ev1), "event time");
            *ms = f;
        }
        for (int o = 0; o < nout; o++) {
            if (pass == 0) {
                to_host(outs[o].host, outs[o].dev, outs[o].bytes);
            } else if (same) {
                void *second = xmalloc(outs[o].bytes);
                to_host(second, outs[o].dev, outs[o].bytes);
                differ |= memcmp(second, outs[o].host, outs[o].bytes) != 0;
                free(second);
            }
        }
    }
    if (differ) {
        printf("CASE %s FAIL (two launches wrote different results: a race or an uninitialised read)\n", name);
        return 1;
    }
    return 0;
}

static void cpu_ref_failed(const char *name) {
    printf("CASE %s FAIL (CPU reference: %s)\n", name, ss_last_error());
    fail_case();
}

typedef struct { float *out; const float *x; int64_t M, N; } sr_ctx;
static int launch_sr(void *v) {
    sr_ctx *c = v;
    return ss_cuda_sum_rows(c->out, c->x, c->M, c->N, g_stream);
}

/* Column sums of M values in [-1.1,1.1] onto a non-zero start, fp32 in a
 * fixed order against the CPU op: the error grows as sqrt(M) 2^-24 times
 * the partial sums (~sqrt(M)/2): atol 1e-7 M + rtol 1e-5 (4e-4 at M=4096,
 * far above that, far below a missing or doubled row). */
static void case_sum_rows(void) {
    const ss_backend *be = ss_backend_cpu();
    int64_t shapes[][2] = {{1, 1}, {1, 33}, {7, 100}, {300, 37}, {4096, 768}, {4096, 3072}, {64, 50257}};
    int ns = g_quick ? 4 : 7;
    for (int si = 0; si < ns; si++) {
        int64_t M = shapes[si][0], N = shapes[si][1];
        char name[96];
        snprintf(name, sizeof name, "bwd sum_rows %lldx%lld", (long long)M, (long long)N);
        if (!selected(name)) continue;
        float *x = rvec(M * N, 60, 1.1f), *o0 = rvec(N, 61, 1.f), *ref = fvec(N, 0), *got = fvec(N, 0);
        memcpy(ref, o0, (size_t)N * 4);
        if (be->sum_rows(be, ref, x, M, N)) cpu_ref_failed(name);
        else {
            float *dx = dup_to_dev(x, (size_t)(M * N) * 4), *dout = dalloc((size_t)N * 4);
            sr_ctx c = {dout, dx, M, N};
            out_buf ob = {dout, (size_t)N * 4, got};
            const float *init[1] = {o0};
            double ms = 0;
            if (run_twice_from(name, launch_sr, &c, &ob, init, 1, 1, &ms)) fail_case();
            else check(name, got, ref, N, 1e-7 * (double)M, 1e-5, ms, 0);
            dfree(dx), dfree(dout);
        }
        free(x), free(o0), free(ref), free(got);
    }
}

/* fp64 results that must equal the CPU's bit for bit */
static void check_exact_f64(const char *name, const double *got, const double *ref, int64_t n, double ms) {
    int64_t bad = 0;
    for (int64_t i = 0; i < n; i++) bad += memcmp(&got[i], &ref[i], sizeof(double)) != 0;
    g_cases++;
    printf("CASE %-62s n=%-9lld gpu_ms=%.3f exact %s\n", name, (long long)n, ms, bad ? "FAIL" : "ok");
    if (bad) g_failed++;
    fflush(stdout);
}

typedef struct { float *out; const float *g, *a, *c; int64_t ldg, rows, w; } ap_ctx;
static int launch_ap(void *v) {
    ap_ctx *c = v;
    return ss_cuda_attr_product(c->out, c->g, c->ldg, c->a, c->c, c->rows, c->w, g_stream);
}
typedef struct { double *out; const float *x; int64_t w, n_seq; const int64_t *start, *len; } ss_ctx;
static int launch_ss(void *v) {
    ss_ctx *c = v;
    return ss_cuda_seq_sums(c->out, c->x, c->w, c->n_seq, c->start, c->len, g_stream);
}

/* attribute's device ops: the products (one fp32 subtraction and product)
 * and the per-sequence fp64 sums (rows in order, no product to fuse) equal
 * the CPU ops bit for bit; gradient rows strided (ldg > w); the last shape
 * is a batch of 16 x 1024 tokens at an MLP site of GPT-2 small. */
static void case_attr(void) {
    const ss_backend *be = ss_backend_cpu();
    int64_t shapes[][3] = {{1, 1, 1}, {7, 33, 33}, {300, 37, 45}, {16384, 3072, 3072}};
    int ns = g_quick ? 3 : 4;
    for (int si = 0; si < ns; si++) {
        const int64_t rows = shapes[si][0], w = shapes[si][1], ldg = shapes[si][2];
        float *g = rvec(rows * ldg, 70, 2.f), *a = rvec(rows * w, 71, 3.f), *c = rvec(rows * w, 72, 3.f);
        float *ref = fvec(rows * w, 0), *got = fvec(rows * w, 0);
        float *dg = dup_to_dev(g, (size_t)(rows * ldg) * 4), *da = dup_to_dev(a, (size_t)(rows * w) * 4),
              *dc = dup_to_dev(c, (size_t)(rows * w) * 4), *dout = dalloc((size_t)(rows * w) * 4);
        for (int mode = 0; mode < 3; mode++) {
            char name[96];
            snprintf(name, sizeof name, "attr_product %s %lldx%lld ldg %lld", mode == 0 ? "grad" : mode == 1 ? "gradxact" : "atp",
                     (long long)rows, (long long)w, (long long)ldg);
            if (!selected(name)) continue;
            if (be->attr_product(be, ref, g, ldg, mode ? a : NULL, mode == 2 ? c : NULL, rows, w)) { cpu_ref_failed(name); continue; }
            ap_ctx cx = {dout, dg, mode ? da : NULL, mode == 2 ? dc : NULL, ldg, rows, w};
            out_buf ob = {dout, (size_t)(rows * w) * 4, got};
            double ms = 0;
            if (run_twice(name, launch_ap, &cx, &ob, 1, &ms)) fail_case();
            else check(name, got, ref, rows * w, 0, 0, ms, 0);
        }
        char name[96];
        snprintf(name, sizeof name, "seq_sums %lldx%lld", (long long)rows, (long long)w);
        if (selected(name)) { /* sequences of the rows: 0, 1, most, the rest */
            int64_t n_seq = 4, st4[4] = {0, 0, rows > 1 ? 1 : 0, rows > 1 ? 1 + (rows - 1) / 2 : 0};
            int64_t ln4[4] = {0, rows > 0, rows > 1 ? (rows - 1) / 2 : 0, rows > 1 ? rows - 1 - (rows - 1) / 2 : 0};
            double *sref = xmalloc((size_t)(n_seq * w) * sizeof(double)), *sgot = xmalloc((size_t)(n_seq * w) * sizeof(double));
            int64_t *dst = dup_to_dev(st4, sizeof st4), *dln = dup_to_dev(ln4, sizeof ln4);
            double *dsum = dalloc((size_t)(n_seq * w) * sizeof(double));
            if (be->seq_sums(be, sref, a, w, n_seq, st4, ln4)) cpu_ref_failed(name);
            else {
                ss_ctx cx = {dsum, da, w, n_seq, dst, dln};
                out_buf ob = {dsum, (size_t)(n_seq * w) * sizeof(double), sgot};
                double ms = 0;
                if (run_twice(name, launch_ss, &cx, &ob, 1, &ms)) fail_case();
                else check_exact_f64(name, sgot, sref, n_seq * w, ms);
            }
            dfree(dst), dfree(dln), dfree(dsum), free(sref), free(sgot);
        }
        dfree(dg), dfree(da), dfree(dc), dfree(dout);
        free(g), free(a), free(c), free(ref), free(got);
    }
}

typedef struct {
    int op; /* 0 point, 1 add, 2 attr */
    float *x;
    double *sum;
    const float *src;
    const double *base, *csum;
    double alpha;
    int steps;
    int64_t ld, rows, w;
} ig_ctx;
static int launch_ig(void *v) {
    ig_ctx *c = v;
    return c->op == 0   ? ss_cuda_ig_point(c->x, c->ld, c->src, c->base, c->alpha, c->rows, c->w, g_stream)
           : c->op == 1 ? ss_cuda_ig_add(c->sum, c->src, c->ld, c->rows, c->w, g_stream)
                        : ss_cuda_ig_attr(c->x, c->src, c->base, c->csum, c->steps, c->rows, c->w, g_stream);
}

/* Integrated gradients' device ops (attribute --method ig): a step's point
 * on the path (into strided rows, the columns past w kept), a step's
 * gradient into fp64 sums, the attributions from the sums; with a mean
 * baseline. fp64 with the rounding intrinsics: the CPU's values bit for
 * bit. The last shape is a batch of 16 x 1024 tokens at an MLP site of
 * GPT-2 small. */
static void case_ig(void) {
    const ss_backend *be = ss_backend_cpu();
    int64_t shapes[][3] = {{1, 1, 1}, {7, 33, 40}, {300, 37, 37}, {16384, 3072, 3072}};
    int ns = g_quick ? 3 : 4;
    for (int si = 0; si < ns; si++) {
        const int64_t rows = shapes[si][0], w = shapes[si][1], ld = shapes[si][2], n = rows * w;
        float *clean = rvec(n, 73, 3.f), *g = rvec(rows * ld, 74, 2.f), *x0 = rvec(rows * ld, 75, 1.f);
        float *ref = fvec(rows * ld, 0), *got = fvec(rows * ld, 0);
        double *base = xmalloc((size_t)w * sizeof(double)), *sum0 = xmalloc((size_t)n * sizeof(double)),
               *sref = xmalloc((size_t)n * sizeof(double)), *sgot = xmalloc((size_t)n * sizeof(double));
        for (int64_t u = 0; u < w; u++) base[u] = 0.1 * (double)(u % 17) - 0.7;
        for (int64_t i = 0; i < n; i++) sum0[i] = 5.0 * g[(i / w) * ld + i % w] + 0.25 * clean[i];
        float *dclean = dup_to_dev(clean, (size_t)n * 4), *dg = dup_to_dev(g, (size_t)(rows * ld) * 4),
              *dx = dalloc((size_t)(rows * ld) * 4);
        double *dbase = dup_to_dev(base, (size_t)w * sizeof(double)), *dsum = dalloc((size_t)n * sizeof(double)),
               *dsum0 = dup_to_dev(sum0, (size_t)n * sizeof(double));
        for (int op = 0; op < 3; op++) {
            char name[96];
            snprintf(name, sizeof name, "ig_%s %lldx%lld ld %lld", op == 0 ? "point" : op == 1 ? "add" : "attr",
                     (long long)rows, (long long)w, (long long)ld);
            if (!selected(name)) continue;
            ig_ctx cx = {op, dx, dsum, op == 1 ? dg : dclean, dbase, dsum0, 0.3125, 7, ld, rows, w};
            double ms = 0;
            if (op == 0) { /* into x0's rows: the columns past w stay */
                memcpy(ref, x0, (size_t)(rows * ld) * 4);
                if (be->ig_point(be, ref, ld, clean, base, cx.alpha, rows, w)) { cpu_ref_failed(name); continue; }
                out_buf ob = {dx, (size_t)(rows * ld) * 4, got};
                const float *init[1] = {x0};
                if (run_twice_from(name, launch_ig, &cx, &ob, init, 1, 1, &ms)) fail_case();
                else check(name, got, ref, rows * ld, 0, 0, ms, 0);
            } else if (op == 1) { /* onto sums already there */
                memcpy(sref, sum0, (size_t)n * sizeof(double));
                if (be->ig_add(be, sref, g, ld, rows, w)) { cpu_ref_failed(name); continue; }
                out_buf ob = {dsum, (size_t)n * sizeof(double), sgot};
                const float *init[1] = {(const float *)sum0};
                if (run_twice_from(name, launch_ig, &cx, &ob, init, 1, 1, &ms)) fail_case();
                else check_exact_f64(name, sgot, sref, n, ms);
            } else {
                if (be->ig_attr(be, ref, clean, base, sum0, cx.steps, rows, w)) { cpu_ref_failed(name); continue; }
                out_buf ob = {dx, (size_t)n * 4, got};
                if (run_twice(name, launch_ig, &cx, &ob, 1, &ms)) fail_case();
                else check(name, got, ref, n, 0, 0, ms, 0);
            }
        }
        dfree(dclean), dfree(dg), dfree(dx), dfree(dbase), dfree(dsum), dfree(dsum0);
        free(clean), free(g), free(x0), free(ref), free(got), free(base), free(sum0), free(sref), free(sgot);
    }
}

typedef struct { float *x; const float *src; int64_t ld, n, w, p0, hd; int kn, per; } pp_ctx;
static int launch_pp(void *v) {
    pp_ctx *c = v;
    return ss_cuda_patch_pieces(c->x, c->ld, c->src, c->n, c->w, c->kn, c->per, c->p0, c->hd, g_stream);
}

/* patch's pieces written into K copies of a prompt: every kind of piece,
 * exactly the CPU op's values (a copy), the other rows and columns kept;
 * the last shape is 128 copies of 16 tokens at an MLP site of GPT-2 small. */
static void case_patch_pieces(void) {
    const ss_backend *be = ss_backend_cpu();
    int64_t shapes[][4] = {{1, 1, 1, 1}, {7, 24, 30, 5}, {16, 3072, 3072, 128}}; /* n, w, ld, copies */
    int ns = g_quick ? 2 : 3;
    for (int si = 0; si < ns; si++) {
        const int64_t n = shapes[si][0], w = shapes[si][1], ld = shapes[si][2], total = shapes[si][3] * n * ld;
        const int kn = (int)shapes[si][3];
        float *src = rvec(n * w, 76, 1.f), *x0 = rvec(total, 77, 1.f), *ref = fvec(total, 0), *got = fvec(total, 0);
        float *dsrc = dup_to_dev(src, (size_t)(n * w) * 4), *dx = dalloc((size_t)total * 4);
        const char *kinds[4] = {"site", "position", "head", "neuron"};
        for (int per = SS_PIECE_SITE; per <= SS_PIECE_NEURON; per++) {
            const int64_t hd = w % 4 ? 1 : w / 4, p0 = per == SS_PIECE_NEURON ? w - kn / 2 - 1 : per == SS_PIECE_POSITION ? n / 2 : 0;
            const int k = per == SS_PIECE_HEAD ? (int)(w / hd < kn ? w / hd : kn) : per == SS_PIECE_NEURON ? kn / 2 + 1 : kn;
            char name[96];
            snprintf(name, sizeof name, "patch_pieces %s n=%lld w=%lld x%d", kinds[per], (long long)n, (long long)w, k);
            if (!selected(name)) continue;
            memcpy(ref, x0, (size_t)total * 4);
            if (be->patch_pieces(be, ref, ld, src, n, w, k, per, p0, hd)) { cpu_ref_failed(name); continue; }
            pp_ctx cx = {dx, dsrc, ld, n, w, p0, hd, k, per};
            out_buf ob = {dx, (size_t)total * 4, got};
            const float *init[1] = {x0};
            double ms = 0;
            if (run_twice_from(name, launch_pp, &cx, &ob, init, 1, 1, &ms)) fail_case();
            else check(name, got, ref, total, 0, 0, ms, 0);
        }
        dfree(dsrc), dfree(dx);
        free(src), free(x0), free(ref), free(got);
    }
}

typedef struct { float *dx, *dw, *db; const float *dy, *x, *w; int64_t rows, d; float *ws; } lnb_ctx;
static int launch_lnb(void *v) {
    lnb_ctx *c = v;
    return ss_cuda_layernorm_backward(c->dx, c->dw, c->db, c->dy, c->x, c->w, c->rows, c->d, 1e-5f, c->ws, g_stream);
}

/* dx: fp32 per-row sums of d terms against the CPU op: atol 2e-5 + rtol
 * 1e-4 (test_kernels_backward.c). dw/db: column sums of `rows` terms, fp32
 * in a fixed order onto a non-zero start: atol 1e-7 rows + 2e-5, rtol 1e-5. */
static void case_layernorm_bwd(void) {
    const ss_backend *be = ss_backend_cpu();
    int64_t shapes[][2] = {{1, 1}, {1, 8}, {5, 24}, {7, 33}, {9, 130}, {3, 1600}, {4096, 768}, {1024, 1600}, {512, 4099}};
    int ns = g_quick ? 6 : 9;
    for (int si = 0; si < ns; si++)
        for (int with_w = 0; with_w < 2; with_w++) {
            int64_t rows = shapes[si][0], d = shapes[si][1], n = rows * d;
            char name[96];
            snprintf(name, sizeof name, "bwd layernorm_backward %lldx%lld%s", (long long)rows, (long long)d,
                     with_w ? " dx,dw,db" : " dx only");
            if (!selected(name)) continue;
            float *x = rvec(n, 62, 1.f), *dy = rvec(n, 63, 1.1f), *w = rvec(d, 64, 1.f);
            float *dx0 = rvec(n, 65, 1.f), *dw0 = rvec(d, 66, 1.f), *db0 = rvec(d, 67, 1.f);
            float *rdx = fvec(n, 0), *rdw = fvec(d, 0), *rdb = fvec(d, 0), *gdx = fvec(n, 0), *gdw = fvec(d, 0),
                  *gdb = fvec(d, 0);
            memcpy(rdx, dx0, (size_t)n * 4), memcpy(rdw, dw0, (size_t)d * 4), memcpy(rdb, db0, (size_t)d * 4);
            if (be->layernorm_backward(be, rdx, with_w ? rdw : NULL, with_w ? rdb : NULL, dy, x, w, rows, d, 1e-5f)) {
                cpu_ref_failed(name);
            } else {
                float *ddx = dalloc((size_t)n * 4), *ddw = dalloc((size_t)d * 4), *ddb = dalloc((size_t)d * 4);
                float *ddy = dup_to_dev(dy, (size_t)n * 4), *dxx = dup_to_dev(x, (size_t)n * 4),
                      *dwt = dup_to_dev(w, (size_t)d * 4);
                float *dws = dalloc((size_t)ss_cuda_layernorm_backward_ws(rows) * 4);
                lnb_ctx c = {ddx, with_w ? ddw : NULL, with_w ? ddb : NULL, ddy, dxx, dwt, rows, d, dws};
                out_buf ob[3] = {{ddx, (size_t)n * 4, gdx}, {ddw, (size_t)d * 4, gdw}, {ddb, (size_t)d * 4, gdb}};
                const float *init[3] = {dx0, dw0, db0};
                double ms = 0;
                if (run_twice_from(name, launch_lnb, &c, ob, init, 3, 1, &ms)) fail_case();
                else {
                    char nm[128];
                    snprintf(nm, sizeof nm, "%s: dx", name);
                    check(nm, gdx, rdx, n, 2e-5, 1e-4, ms, 0);
                    snprintf(nm, sizeof nm, "%s: dw", name);
                    check(nm, gdw, rdw, d, 2e-5 + 1e-7 * (double)rows, 1e-5, ms, 0);
                    snprintf(nm, sizeof nm, "%s: db", name);
                    check(nm, gdb, rdb, d, 2e-5 + 1e-7 * (double)rows, 1e-5, ms, 0);
                }
                dfree(ddx), dfree(ddw), dfree(ddb), dfree(ddy), dfree(dxx), dfree(dwt), dfree(dws);
            }
            free(x), free(dy), free(w), free(dx0), free(dw0), free(db0);
            free(rdx), free(rdw), free(rdb), free(gdx), free(gdw), free(gdb);
        }
}

typedef struct { float *dx, *dw; const float *dy, *x, *w; int64_t rows, d; float *ws; } rmsb_ctx;
static int launch_rmsb(void *v) {
    rmsb_ctx *c = v;
    return ss_cuda_rmsnorm_backward(c->dx, c->dw, c->dy, c->x, c->w, c->rows, c->d, 1e-5f, c->ws, g_stream);
}

/* As layernorm_backward: dx atol 2e-5 + rtol 1e-4; dw column sums of `rows`
 * terms, fp32 in a fixed order onto a non-zero start: atol 1e-7 rows +
 * 2e-5, rtol 1e-5. */
static void case_rmsnorm_bwd(void) {
    const ss_backend *be = ss_backend_cpu();
    int64_t shapes[][2] = {{1, 1}, {1, 8}, {5, 24}, {7, 33}, {9, 130}, {40, 37}, {4096, 4096}, {2048, 576}, {512, 4099}};
    int ns = g_quick ? 6 : 9;
    for (int si = 0; si < ns; si++)
        for (int with_w = 0; with_w < 2; with_w++) {
            int64_t rows = shapes[si][0], d = shapes[si][1], n = rows * d;
            char name[96];
            snprintf(name, sizeof name, "bwd rmsnorm_backward %lldx%lld%s", (long long)rows, (long long)d,
                     with_w ? " dx,dw" : " dx only");
            if (!selected(name)) continue;
            float *x = rvec(n, 120, 1.f), *dy = rvec(n, 121, 1.1f), *w = rvec(d, 122, 1.f);
            float *dx0 = rvec(n, 123, 1.f), *dw0 = rvec(d, 124, 1.f);
            float *rdx = fvec(n, 0), *rdw = fvec(d, 0), *gdx = fvec(n, 0), *gdw = fvec(d, 0);
            memcpy(rdx, dx0, (size_t)n * 4), memcpy(rdw, dw0, (size_t)d * 4);
            if (be->rmsnorm_backward(be, rdx, with_w ? rdw : NULL, dy, x, w, rows, d, 1e-5f)) {
                cpu_ref_failed(name);
            } else {
                float *ddx = dalloc((size_t)n * 4), *ddw = dalloc((size_t)d * 4);
                float *ddy = dup_to_dev(dy, (size_t)n * 4), *dxx = dup_to_dev(x, (size_t)n * 4),
                      *dwt = dup_to_dev(w, (size_t)d * 4);
                float *dws = dalloc((size_t)ss_cuda_rmsnorm_backward_ws(rows) * 4);
                rmsb_ctx c = {ddx, with_w ? ddw : NULL, ddy, dxx, dwt, rows, d, dws};
                out_buf ob[2] = {{ddx, (size_t)n * 4, gdx}, {ddw, (size_t)d * 4, gdw}};
                const float *init[2] = {dx0, dw0};
                double ms = 0;
                if (run_twice_from(name, launch_rmsb, &c, ob, init, 2, 1, &ms)) fail_case();
                else {
                    char nm[128];
                    snprintf(nm, sizeof nm, "%s: dx", name);
                    check(nm, gdx, rdx, n, 2e-5, 1e-4, ms, 0);
                    snprintf(nm, sizeof nm, "%s: dw", name);
                    check(nm, gdw, rdw, d, 2e-5 + 1e-7 * (double)rows, 1e-5, ms, 0);
                }
                dfree(ddx), dfree(ddw), dfree(ddy), dfree(dxx), dfree(dwt), dfree(dws);
            }
            free(x), free(dy), free(w), free(dx0), free(dw0), free(rdx), free(rdw), free(gdx), free(gdw);
        }
}

typedef struct { float *dgu; const float *dy, *gu; int64_t rows, dm; } swb_ctx;
static int launch_swb(void *v) {
    swb_ctx *c = v;
    return ss_cuda_swiglu_backward(c->dgu, c->dy, c->gu, c->rows, c->dm, g_stream);
}

/* fp32 sigmoid (precise expf) against the CPU op's double: atol 1e-6 + rtol
 * 1e-5 (test_kernels_backward.c). */
static void case_swiglu_bwd(void) {
    const ss_backend *be = ss_backend_cpu();
    int64_t shapes[][2] = {{1, 1}, {3, 37}, {5, 300}, {2, 513}, {4096, 14336}, {2048, 1536}};
    int ns = g_quick ? 4 : 6;
    for (int si = 0; si < ns; si++) {
        int64_t rows = shapes[si][0], dm = shapes[si][1], n = rows * dm;
        char name[96];
        snprintf(name, sizeof name, "bwd swiglu_backward %lldx%lld", (long long)rows, (long long)dm);
        if (!selected(name)) continue;
        float *gu = rvec(2 * n, 125 + (unsigned)si, 1.f), *dy = rvec(n, 126, 1.1f), *ref = fvec(2 * n, 0),
              *got = fvec(2 * n, 0);
        for (int64_t r = 0; r < rows; r++)
            for (int64_t c = 0; c < dm; c++) gu[r * 2 * dm + c] *= 12.f;
        if (be->swiglu_backward(be, ref, dy, gu, rows, dm)) cpu_ref_failed(name);
        else {
            float *dgu = dup_to_dev(gu, (size_t)(2 * n) * 4), *ddy = dup_to_dev(dy, (size_t)n * 4),
                  *dout = dalloc((size_t)(2 * n) * 4);
            swb_ctx c = {dout, ddy, dgu, rows, dm};
            out_buf ob = {dout, (size_t)(2 * n) * 4, got};
            const float *init[1] = {NULL};
            double ms = 0;
            if (run_twice_from(name, launch_swb, &c, &ob, init, 1, 1, &ms)) fail_case();
            else check(name, got, ref, 2 * n, 1e-6, 1e-5, ms, 0);
            dfree(dgu), dfree(ddy), dfree(dout);
        }
        free(gu), free(dy), free(ref), free(got);
    }
}

typedef struct { float *dx; const float *dy, *x; int64_t n; int act; } gb_ctx;
static int launch_gb(void *v) {
    gb_ctx *c = v;
    return ss_cuda_gelu_backward(c->dx, c->dy, c->x, c->n, c->act, g_stream);
}

/* One product of a few-ulp tanhf/erff/expf result with dy, x in [-6,6]:
 * atol 1e-6 + rtol 1e-5 (the GPU's tanhf/erff are within 2 ulp). */
static void case_gelu_bwd(void) {
    const ss_backend *be = ss_backend_cpu();
    int64_t sizes[] = {1, 7, 1000, 4099, 4096 * 3072, (1 << 20) + 3};
    int ns = g_quick ? 4 : 6;
    for (int si = 0; si < ns; si++)
        for (int act = SS_CUDA_GELU_TANH; act <= SS_CUDA_GELU_ERF; act++)
            for (int inplace = 0; inplace < 2; inplace++) {
                int64_t n = sizes[si];
                char name[96];
                snprintf(name, sizeof name, "bwd gelu_backward %s n=%lld%s", act == SS_CUDA_GELU_ERF ? "erf" : "tanh",
                         (long long)n, inplace ? " in place" : "");
                if (!selected(name)) continue;
                float *x = rvec(n, 68, 6.f), *dy = rvec(n, 69, 1.f), *ref = fvec(n, 0), *got = fvec(n, 0);
                if (be->gelu_backward(be, ref, dy, x, n, act == SS_CUDA_GELU_ERF ? SS_ACT_GELU_ERF : SS_ACT_GELU_TANH)) {
                    cpu_ref_failed(name);
                } else {
                    float *dxx = dup_to_dev(x, (size_t)n * 4), *ddy = dalloc((size_t)n * 4), *ddx = dalloc((size_t)n * 4);
                    CU(cudaMemcpy(ddy, dy, (size_t)n * 4, cudaMemcpyHostToDevice), "copy");
                    gb_ctx c = {inplace ? ddy : ddx, ddy, dxx, n, act};
                    out_buf ob = {inplace ? ddy : ddx, (size_t)n * 4, got};
                    const float *init[1] = {inplace ? dy : NULL};
                    double ms = 0;
                    if (run_twice_from(name, launch_gb, &c, &ob, init, 1, 1, &ms)) fail_case();
                    else check(name, got, ref, n, 1e-6, 1e-5, ms, 0);
                    dfree(dxx), dfree(ddy), dfree(ddx);
                }
                free(x), free(dy), free(ref), free(got);
            }
}

/* ---- forward mode (trace's attribution pass): norm_jvp, swiglu_jvp, attention_jvp ---- */

typedef struct { float *out; const float *a, *b, *w; int64_t rows, d; int rms; const int64_t *start, *len; int64_t n_seq, H, Hkv, dh; } jvp_ctx;
static int launch_norm_jvp(void *v) {
    jvp_ctx *c = v;
    return ss_cuda_norm_jvp(c->out, c->a, c->b, c->w, c->rows, c->d, 1e-5f, c->rms, g_stream);
}

/* fp64 row statistics in both (test_kernels_backward.c): atol 1e-6 + rtol 1e-5. */
static void case_norm_jvp(void) {
    const ss_backend *be = ss_backend_cpu();
    int64_t shapes[][2] = {{1, 1}, {1, 33}, {7, 100}, {40, 37}, {4096, 768}, {1024, 4096}};
    int ns = g_quick ? 4 : 6;
    for (int si = 0; si < ns; si++)
        for (int rms = 0; rms < 2; rms++) {
            int64_t rows = shapes[si][0], d = shapes[si][1], n = rows * d;
            char name[96];
            snprintf(name, sizeof name, "jvp norm_jvp %s %lldx%lld", rms ? "rms" : "layer", (long long)rows, (long long)d);
            if (!selected(name)) continue;
            float *x = rvec(n, 201 + (unsigned)si, 1.f), *dx = rvec(n, 202, 1.f), *w = rvec(d, 203, 1.5f);
            float *ref = fvec(n, 0), *got = fvec(n, 0);
            if (be->norm_jvp(be, ref, dx, x, w, rows, d, 1e-5f, rms)) cpu_ref_failed(name);
            else {
                float *dxx = dup_to_dev(x, (size_t)n * 4), *ddx = dup_to_dev(dx, (size_t)n * 4),
                      *dw = dup_to_dev(w, (size_t)d * 4), *dout = dalloc((size_t)n * 4);
                jvp_ctx c = {dout, ddx, dxx, dw, rows, d, rms, NULL, NULL, 0, 0, 0, 0};
                out_buf ob = {dout, (size_t)n * 4, got};
                const float *init[1] = {NULL};
                double ms = 0;
                if (run_twice_from(name, launch_norm_jvp, &c, &ob, init, 1, 1, &ms)) fail_case();
                else check(name, got, ref, n, 1e-6, 1e-5, ms, 0);
                dfree(dxx), dfree(ddx), dfree(dw), dfree(dout);
            }
            free(x), free(dx), free(w), free(ref), free(got);
        }
}

static int launch_swiglu_jvp(void *v) {
    jvp_ctx *c = v;
    return ss_cuda_swiglu_jvp(c->out, c->a, c->b, c->rows, c->d, g_stream);
}

/* fp32 sigmoid (precise expf) against the CPU op's double; two terms of up to ~12 that may
 * cancel (an fp32 rounding of each is ~1e-6): atol 5e-6 + rtol 1e-5 (test_kernels_backward.c). */
static void case_swiglu_jvp(void) {
    const ss_backend *be = ss_backend_cpu();
    /* 70000 rows: the grid's y (65535 at most) strides over rows, as swiglu's case */
    int64_t shapes[][2] = {{1, 1}, {3, 37}, {5, 300}, {2, 513}, {4096, 14336}, {2048, 1536}, {70000, 3}};
    int ns = g_quick ? 4 : 7;
    for (int si = 0; si < ns; si++) {
        int64_t rows = shapes[si][0], dm = shapes[si][1], n = rows * dm;
        char name[96];
        snprintf(name, sizeof name, "jvp swiglu_jvp %lldx%lld", (long long)rows, (long long)dm);
        if (!selected(name)) continue;
        float *gu = rvec(2 * n, 211 + (unsigned)si, 1.f), *dgu = rvec(2 * n, 212, 1.1f), *ref = fvec(n, 0),
              *got = fvec(n, 0);
        for (int64_t r = 0; r < rows; r++)
            for (int64_t c = 0; c < dm; c++) gu[r * 2 * dm + c] *= 12.f;
        if (be->swiglu_jvp(be, ref, dgu, gu, rows, dm)) cpu_ref_failed(name);
        else {
            float *dg = dup_to_dev(gu, (size_t)(2 * n) * 4), *dd = dup_to_dev(dgu, (size_t)(2 * n) * 4),
                  *dout = dalloc((size_t)n * 4);
            jvp_ctx c = {dout, dd, dg, NULL, rows, dm, 0, NULL, NULL, 0, 0, 0, 0};
            out_buf ob = {dout, (size_t)n * 4, got};
            const float *init[1] = {NULL};
            double ms = 0;
            if (run_twice_from(name, launch_swiglu_jvp, &c, &ob, init, 1, 1, &ms)) fail_case();
            else check(name, got, ref, n, 5e-6, 1e-5, ms, 0);
            dfree(dg), dfree(dd), dfree(dout);
        }
        free(gu), free(dgu), free(ref), free(got);
    }
}

static int launch_attention_jvp(void *v) {
    jvp_ctx *c = v;
    const int64_t zw = c->H * c->dh, kvw = c->Hkv * c->dh, ld = c->d;
    return ss_cuda_attention_jvp(c->out, c->a, c->a + zw, c->a + zw + kvw, ld, c->b, c->b + zw, c->b + zw + kvw, ld,
                                 c->n_seq, c->start, c->len, c->H, c->Hkv, c->dh, (float)(1.0 / sqrt((double)c->dh)),
                                 g_stream);
}

/* The same fp32 scores in the same order as the CPU op, fp64 softmax and sums in another
 * order: atol 2e-6 + rtol 1e-5 at the unit tests' shapes; at 500+ keys, sums of that many
 * terms: atol 2e-5 + rtol 1e-4 (an indexing or masking error moves rows by O(1)). */
static void case_attention_jvp(void) {
    const ss_backend *be = ss_backend_cpu();
    struct {
        int n_seq;
        int64_t len[3];
        int64_t H, Hkv, dh;
        int quick;
    } cases[] = {
        {1, {1}, 1, 1, 4, 1},
        {3, {5, 1, 9}, 4, 2, 6, 1},
        {1, {150}, 2, 1, 8, 1},
        {1, {6}, 1, 1, 130, 1},
        {1, {1024}, 12, 12, 64, 0},
        {2, {512, 100}, 32, 8, 128, 0}, /* Llama-3-8B-shaped heads */
        {1, {777}, 9, 3, 64, 0},        /* SmolLM2-135M-shaped heads */
        {1, {2100}, 4, 2, 80, 0},       /* thousands of keys: 17 tiles of 128, heads not a multiple of 32 */
    };
    int nc = (int)(sizeof cases / sizeof cases[0]);
    for (int ci = 0; ci < nc; ci++) {
        if (g_quick && !cases[ci].quick) continue;
        int64_t H = cases[ci].H, Hkv = cases[ci].Hkv, dh = cases[ci].dh, zw = H * dh, kvw = Hkv * dh;
        int64_t ld = zw + 2 * kvw, n_seq = cases[ci].n_seq, start[3], len[3], rows = 0, max_len = 0;
        char lens[64] = "";
        for (int s = 0; s < n_seq; s++) {
            len[s] = cases[ci].len[s], start[s] = rows, rows += len[s];
            if (len[s] > max_len) max_len = len[s];
            snprintf(lens + strlen(lens), sizeof lens - strlen(lens), "%s%lld", s ? "," : "", (long long)len[s]);
        }
        char name[128];
        snprintf(name, sizeof name, "jvp attention_jvp seqs=[%s] H=%lld Hkv=%lld dh=%lld", lens, (long long)H,
                 (long long)Hkv, (long long)dh);
        if (!selected(name)) continue;
        float *qkv = rvec(rows * ld, 221 + (unsigned)ci, 1.5f), *dqkv = rvec(rows * ld, 222, 1.f);
        float *ref = fvec(rows * zw, 0), *got = fvec(rows * zw, 0);
        if (be->attention_jvp(be, ref, dqkv, dqkv + zw, dqkv + zw + kvw, ld, qkv, qkv + zw, qkv + zw + kvw, ld, n_seq,
                              start, len, H, Hkv, dh, (float)(1.0 / sqrt((double)dh))))
            cpu_ref_failed(name);
        else {
            float *dq = dup_to_dev(dqkv, (size_t)(rows * ld) * 4), *dk = dup_to_dev(qkv, (size_t)(rows * ld) * 4),
                  *dout = dalloc((size_t)(rows * zw) * 4);
            jvp_ctx c = {dout, dq, dk, NULL, rows, ld, 0, start, len, n_seq, H, Hkv, dh};
            out_buf ob = {dout, (size_t)(rows * zw) * 4, got};
            const float *init[1] = {NULL};
            double ms = 0;
            const int big = max_len >= 500;
            if (run_twice_from(name, launch_attention_jvp, &c, &ob, init, 1, 1, &ms)) fail_case();
            else check(name, got, ref, rows * zw, big ? 2e-5 : 2e-6, big ? 1e-4 : 1e-5, ms, 0);
            dfree(dq), dfree(dk), dfree(dout);
        }
        free(qkv), free(dqkv), free(ref), free(got);
    }
}

typedef struct {
    float *dqkv, *ws;
    const float *dz, *qkv;
    int64_t ld, n_seq, max_len, H, Hkv, dh, half;
    const int64_t *start, *len, *off;
    float scale;
    int recompute; /* ss_cuda_attention_backward_rc, ws = 3 rows H floats */
} ab_ctx;
/* Rows of qkv and of the output are [q (H heads) | k (Hkv) | v (Hkv)]. */
static int launch_ab(void *v) {
    ab_ctx *c = v;
    int64_t d = c->H * c->dh, dkv = c->Hkv * c->dh;
    if (c->recompute)
        return ss_cuda_attention_backward_rc(c->dqkv, c->dqkv + d, c->dqkv + d + dkv, c->ld, c->dz, c->qkv, c->qkv + d,
                                             c->qkv + d + dkv, c->ld, c->n_seq, c->start, c->len, c->max_len, c->H,
                                             c->Hkv, c->dh, c->scale, c->ws, g_stream);
    return ss_cuda_attention_backward(c->dqkv, c->dqkv + d, c->dqkv + d + dkv, c->ld, c->dz, c->qkv, c->qkv + d,
                                      c->qkv + d + dkv, c->ld, c->n_seq, c->start, c->len, c->off, c->max_len, c->H,
                                      c->Hkv, c->dh, c->scale, c->ws, c->half, g_stream);
}

/* fp32 dot products of dh terms, an fp32 softmax and fp32 sums of up to len
 * terms against the CPU op; amp 2.5 gives scores of ~+-10 (peaked rows).
 * Gradients are O(0.01..1): atol 2e-5 + rtol 1e-4 at the unit tests'
 * shapes; for len >= 500 the sums over keys/queries have ~len terms, so
 * atol 1e-4 + rtol 1e-3 (still orders below a masking or indexing error,
 * which moves whole rows by O(1)). */
static void case_attention_bwd(void) {
    const ss_backend *be = ss_backend_cpu();
    struct {
        int n_seq;
        int64_t len[6];
        int64_t H, Hkv, dh;
        float amp;
        int quick;
    } cases[] = {
        {1, {1}, 1, 1, 8, 1.f, 1},
        {3, {1, 37, 70}, 2, 2, 16, 1.f, 1},
        {2, {33, 5}, 1, 1, 1, 2.5f, 1},
        {2, {9, 45}, 3, 3, 7, 2.5f, 1},
        {2, {40, 65}, 2, 2, 256, 2.5f, 1},
        {2, {35, 7}, 8, 2, 16, 2.5f, 1},   /* grouped-query */
        {3, {1, 41, 33}, 4, 1, 24, 2.5f, 1}, /* multi-query */
        {1, {100}, 12, 12, 64, 2.5f, 0},
        {1, {1024}, 12, 12, 64, 2.5f, 0},
        {6, {1, 100, 1024, 33, 517, 2}, 12, 12, 64, 2.5f, 0},
        {3, {300, 1, 777}, 8, 8, 128, 2.5f, 0},
        {2, {257, 500}, 4, 4, 256, 2.5f, 0},
        {2, {512, 100}, 32, 8, 128, 2.5f, 0}, /* Llama-3-8B-shaped heads */
        {1, {777}, 9, 3, 64, 2.5f, 0},        /* SmolLM2-135M-shaped heads */
    };
    int nc = (int)(sizeof cases / sizeof cases[0]);
    for (int ci = 0; ci < nc; ci++) {
        if (g_quick && !cases[ci].quick) continue;
        int64_t H = cases[ci].H, Hkv = cases[ci].Hkv, dh = cases[ci].dh, d = H * dh, dkv = Hkv * dh;
        int64_t ld = d + 2 * dkv, n_seq = cases[ci].n_seq;
        int64_t start[6], len[6], off[6], rows = 0, half = 0, max_len = 0;
        char lens[64] = "";
        for (int s = 0; s < n_seq; s++) {
            len[s] = cases[ci].len[s];
            start[s] = rows;
            rows += len[s];
            off[s] = half;
            half += H * len[s] * len[s];
            if (len[s] > max_len) max_len = len[s];
            snprintf(lens + strlen(lens), sizeof lens - strlen(lens), "%s%lld", s ? "," : "", (long long)len[s]);
        }
        char name[128];
        snprintf(name, sizeof name, "bwd attention_backward seqs=[%s] H=%lld Hkv=%lld dh=%lld", lens, (long long)H,
                 (long long)Hkv, (long long)dh);
        if (!selected(name)) continue;
        float *qkv = rvec(rows * ld, 70 + (unsigned)ci, cases[ci].amp), *dz = rvec(rows * d, 80 + (unsigned)ci, 1.f);
        float *ref = fvec(rows * ld, 0), *got = fvec(rows * ld, 0);
        float scale = (float)(1.0 / sqrt((double)dh));
        if (be->attention_backward(be, ref, ref + d, ref + d + dkv, ld, dz, qkv, qkv + d, qkv + d + dkv, ld, n_seq,
                                   start, len, H, Hkv, dh, scale)) {
            cpu_ref_failed(name);
        } else {
            float *dqkv = dup_to_dev(qkv, (size_t)(rows * ld) * 4), *ddz = dup_to_dev(dz, (size_t)(rows * d) * 4);
            float *dout = dalloc((size_t)(rows * ld) * 4), *dws = dalloc((size_t)(2 * half) * 4);
            int64_t meta[18];
            for (int s = 0; s < n_seq; s++) meta[s] = start[s], meta[n_seq + s] = len[s], meta[2 * n_seq + s] = off[s];
            int64_t *dmeta = dup_to_dev(meta, (size_t)(3 * n_seq) * sizeof(int64_t));
            ab_ctx c = {dout, dws, ddz, dqkv, ld, n_seq, max_len, H, Hkv, dh, half, dmeta, dmeta + n_seq,
                        dmeta + 2 * n_seq, scale, 0};
            out_buf ob = {dout, (size_t)(rows * ld) * 4, got};
            const float *init[1] = {NULL};
            double ms = 0;
            int big = max_len >= 500;
            if (run_twice_from(name, launch_ab, &c, &ob, init, 1, 1, &ms)) fail_case();
            else check(name, got, ref, rows * ld, big ? 1e-4 : 2e-5, big ? 1e-3 : 1e-4, ms, 0);
            /* The variant that recomputes P instead of storing it (long contexts). */
            char rname[160];
            snprintf(rname, sizeof rname, "%s recompute", name);
            float *dst = dalloc((size_t)(3 * rows * H) * 4);
            c.ws = dst;
            c.recompute = 1;
            if (run_twice_from(rname, launch_ab, &c, &ob, init, 1, 1, &ms)) fail_case();
            else check(rname, got, ref, rows * ld, big ? 1e-4 : 2e-5, big ? 1e-3 : 1e-4, ms, 0);
            dfree(dqkv), dfree(ddz), dfree(dout), dfree(dws), dfree(dmeta), dfree(dst);
        }
        free(qkv), free(dz), free(ref), free(got);
    }
}

typedef struct { float *dwte, *dwpe; const float *dx; const int32_t *tok, *pos; int64_t V, P, n, d; } eb_ctx;
static int launch_eb(void *v) {
    eb_ctx *c = v;
    return ss_cuda_embed_backward(c->dwte, c->dwpe, c->dx, c->tok, c->pos, c->V, c->P, c->n, c->d, g_stream);
}

/* Scatter-add with float atomics: the order of the adds into a shared row
 * is unspecified, so the two launches are not compared bitwise. Each table
 * element receives at most n/(distinct ids) fp32 adds of O(1) values onto
 * O(1): atol 1e-6 per expected add (1e-6 (1 + n/4) for the position table,
 * whose 4 ids are shared by all rows) + rtol 1e-6. */
static void case_embed_bwd(void) {
    const ss_backend *be = ss_backend_cpu();
    int64_t shapes[][4] = {{50, 40, 1, 8}, {50, 40, 13, 48}, {7, 5, 30, 30}, {50257, 1024, 4096, 768},
                           {1001, 300, 777, 1602}};
    int ns = g_quick ? 3 : 5;
    for (int si = 0; si < ns; si++) {
        int64_t V = shapes[si][0], P = shapes[si][1], n = shapes[si][2], d = shapes[si][3];
        char name[96];
        snprintf(name, sizeof name, "bwd embed_backward V=%lld P=%lld n=%lld d=%lld", (long long)V, (long long)P,
                 (long long)n, (long long)d);
        if (!selected(name)) continue;
        float *dx = rvec(n * d, 90, 1.1f), *te0 = rvec(V * d, 91, 1.f), *pe0 = rvec(P * d, 92, 1.f);
        int32_t *tok = xmalloc((size_t)n * 4), *pos = xmalloc((size_t)n * 4);
        for (int64_t i = 0; i < n; i++) tok[i] = (int32_t)((i * 17 + 3) % (V < 97 ? V : 97)), pos[i] = (int32_t)(i % 4 % P);
        float *rte = fvec(V * d, 0), *rpe = fvec(P * d, 0), *gte = fvec(V * d, 0), *gpe = fvec(P * d, 0);
        memcpy(rte, te0, (size_t)(V * d) * 4), memcpy(rpe, pe0, (size_t)(P * d) * 4);
        if (be->embed_backward(be, rte, rpe, dx, tok, pos, n, d)) {
            cpu_ref_failed(name);
        } else {
            float *ddx = dup_to_dev(dx, (size_t)(n * d) * 4), *dte = dalloc((size_t)(V * d) * 4),
                  *dpe = dalloc((size_t)(P * d) * 4);
            int32_t *dtok = dup_to_dev(tok, (size_t)n * 4), *dpos = dup_to_dev(pos, (size_t)n * 4);
            eb_ctx c = {dte, dpe, ddx, dtok, dpos, V, P, n, d};
            out_buf ob[2] = {{dte, (size_t)(V * d) * 4, gte}, {dpe, (size_t)(P * d) * 4, gpe}};
            const float *init[2] = {te0, pe0};
            double ms = 0;
            if (run_twice_from(name, launch_eb, &c, ob, init, 2, 0, &ms)) fail_case();
            else {
                char nm[128];
                snprintf(nm, sizeof nm, "%s: dwte (atomics)", name);
                check(nm, gte, rte, V * d, 1e-6 * (1.0 + (double)n / (double)(V < 97 ? V : 97)), 1e-6, ms, 0);
                snprintf(nm, sizeof nm, "%s: dwpe (atomics)", name);
                check(nm, gpe, rpe, P * d, 1e-6 * (1.0 + (double)n / 4.0), 1e-6, ms, 0);
            }
            dfree(ddx), dfree(dte), dfree(dpe), dfree(dtok), dfree(dpos);
        }
        free(dx), free(te0), free(pe0), free(tok), free(pos), free(rte), free(rpe), free(gte), free(gpe);
    }
}

typedef struct { float *dl, *loss; const float *x; const int32_t *t; const float *w; int64_t rows, V; } sx_ctx;
static int launch_sx(void *v) {
    sx_ctx *c = v;
    return ss_cuda_softmax_xent(c->dl, c->loss, c->x, c->t, c->w, c->rows, c->V, g_stream);
}

/* Logits in [-8,8]. Loss: fp32 sums of V exps and a logf, O(1..10): atol
 * 1e-5 + rtol 1e-5. Gradient: expf(x - max)/sum, a few ulps relative, and
 * the subtraction of 1 at the target: atol 1e-7 + rtol 1e-5. Every row with
 * r % 3 == 1 has target -1 (zero loss and gradient). */
static void case_softmax_xent(void) {
    const ss_backend *be = ss_backend_cpu();
    int64_t shapes[][2] = {{1, 1}, {4, 50}, {3, 1000}, {2, 257}, {1024, 50257}, {33, 100003}};
    int ns = g_quick ? 4 : 6;
    for (int si = 0; si < ns; si++)
        for (int inplace = 0; inplace < 2; inplace++) {
            int64_t rows = shapes[si][0], V = shapes[si][1], n = rows * V;
            char name[96];
            snprintf(name, sizeof name, "bwd softmax_xent %lldx%lld%s", (long long)rows, (long long)V,
                     inplace ? " in place" : "");
            if (!selected(name)) continue;
            float *x = rvec(n, 93 + (unsigned)si, 8.f), *w = rvec(rows, 94, 1.f);
            int32_t *t = xmalloc((size_t)rows * 4);
            for (int64_t r = 0; r < rows; r++) t[r] = r % 3 == 1 ? -1 : (int32_t)((r * 37 + 5) % V);
            float *rdl = fvec(n, 0), *rl = fvec(rows, 0), *gdl = fvec(n, 0), *gl = fvec(rows, 0);
            if (be->softmax_xent(be, rdl, rl, x, t, w, rows, V)) {
                cpu_ref_failed(name);
            } else {
                float *dxx = dup_to_dev(x, (size_t)n * 4), *ddl = dalloc((size_t)n * 4), *dl = dalloc((size_t)rows * 4),
                      *dw = dup_to_dev(w, (size_t)rows * 4);
                int32_t *dt = dup_to_dev(t, (size_t)rows * 4);
                sx_ctx c = {inplace ? dxx : ddl, dl, dxx, dt, dw, rows, V};
                out_buf ob[2] = {{inplace ? dxx : ddl, (size_t)n * 4, gdl}, {dl, (size_t)rows * 4, gl}};
                const float *init[2] = {inplace ? x : NULL, NULL};
                double ms = 0;
                if (run_twice_from(name, launch_sx, &c, ob, init, 2, 1, &ms)) fail_case();
                else {
                    char nm[128];
                    snprintf(nm, sizeof nm, "%s: loss", name);
                    check(nm, gl, rl, rows, 1e-5, 1e-5, ms, 0);
                    snprintf(nm, sizeof nm, "%s: dlogits", name);
                    check(nm, gdl, rdl, n, 1e-7, 1e-5, ms, 0);
                }
                dfree(dxx), dfree(ddl), dfree(dl), dfree(dw), dfree(dt);
            }
            free(x), free(w), free(t), free(rdl), free(rl), free(gdl), free(gl);
        }
}

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
static int launch_ls(void *v) {
    ls_ctx *c = v;
    return ss_cuda_logit_scores(c->lz, c->best, c->kl, c->x, c->rows, c->V, c->ref, c->ref_lz, c->ref_rows, g_stream) ||
           ss_cuda_gather(c->g, c->x, c->idx, c->n_idx, g_stream);
}

/* logit_scores and gather against the CPU op: logits in [-8, 8] with a tie
 * for the largest value in row 1 (the first index wins), -inf entries in
 * row 0 and a constant row 2; more rows than reference rows. Both sides
 * sum in fp64 from the same fp32 values (only the order differs): the
 * checks are on the relative error of lz (<= 1e-12) and on the KL error
 * over 1e-3 + |KL| (<= 1e-9), both against 0; best tokens and gathered
 * logits must be equal. */
static void case_logit_scores(void) {
    const ss_backend *be = ss_backend_cpu();
    int64_t shapes[][3] = {{1, 1, 1}, {3, 50, 3}, {5, 1000, 2}, {4, 257, 4}, {1024, 50257, 256}, {4096, 50257, 1024}};
    int ns = g_quick ? 4 : 6;
    for (int si = 0; si < ns; si++) {
        int64_t rows = shapes[si][0], V = shapes[si][1], rr = shapes[si][2], n = rows * V, n_idx = rows + 7;
        char name[96];
        snprintf(name, sizeof name, "logit_scores %lldx%lld ref %lld", (long long)rows, (long long)V, (long long)rr);
        if (!selected(name)) continue;
        float *x = rvec(n, 95 + (unsigned)si, 8.f), *ref = rvec(rr * V, 96 + (unsigned)si, 8.f);
        if (V >= 50) {
            x[V + 3] = x[V + 40] = 20.f;
            for (int64_t v = 0; v < V; v += 7) x[v] = -INFINITY;
            if (rows > 2)
                for (int64_t v = 0; v < V; v++) x[2 * V + v] = 1.5f;
        }
        int64_t *idx = xmalloc((size_t)n_idx * 8);
        for (int64_t i = 0; i < n_idx; i++) idx[i] = (i * 7919 + 13) % n;
        double *rlz = xmalloc((size_t)rr * 8), *clz = xmalloc((size_t)rows * 8), *ckl = xmalloc((size_t)rows * 8),
               *glz = xmalloc((size_t)rows * 8), *gkl = xmalloc((size_t)rows * 8);
        int32_t *cbest = xmalloc((size_t)rows * 4), *gbest = xmalloc((size_t)rows * 4);
        float *cg = fvec(n_idx, 0), *gg = fvec(n_idx, 0), *e_lz = fvec(rows, 0), *e_kl = fvec(rows, 0),
              *zero = fvec(rows, 0), *fb_c = fvec(rows, 0), *fb_g = fvec(rows, 0);
        if (be->logit_scores(be, rlz, NULL, NULL, ref, rr, V, NULL, NULL, 0) ||
            be->logit_scores(be, clz, cbest, ckl, x, rows, V, ref, rlz, rr) || be->gather(be, cg, x, idx, n_idx)) {
            cpu_ref_failed(name);
        } else {
            float *dx = dup_to_dev(x, (size_t)n * 4), *dref = dup_to_dev(ref, (size_t)(rr * V) * 4),
                  *dg = dalloc((size_t)n_idx * 4);
            double *drlz = dup_to_dev(rlz, (size_t)rr * 8), *dlz = dalloc((size_t)rows * 8), *dkl = dalloc((size_t)rows * 8);
            int32_t *dbest = dalloc((size_t)rows * 4);
            int64_t *didx = dup_to_dev(idx, (size_t)n_idx * 8);
            ls_ctx c = {dlz, dkl, dbest, dx, dref, drlz, rows, V, rr, dg, didx, n_idx};
            out_buf ob[4] = {{dlz, (size_t)rows * 8, glz}, {dkl, (size_t)rows * 8, gkl}, {dbest, (size_t)rows * 4, gbest},
                             {dg, (size_t)n_idx * 4, gg}};
            const float *init[4] = {NULL, NULL, NULL, NULL};
            double ms = 0;
            if (run_twice_from(name, launch_ls, &c, ob, init, 4, 1, &ms)) fail_case();
            else {
                for (int64_t r = 0; r < rows; r++) {
                    e_lz[r] = glz[r] == clz[r] ? 0.f : (float)((glz[r] - clz[r]) / fabs(clz[r]));
                    e_kl[r] = gkl[r] == ckl[r] ? 0.f : (float)((gkl[r] - ckl[r]) / (1e-3 + fabs(ckl[r])));
                    fb_c[r] = (float)cbest[r], fb_g[r] = (float)gbest[r];
                }
                char nm[128];
                snprintf(nm, sizeof nm, "%s: lz relative error", name);
                check(nm, e_lz, zero, rows, 1e-12, 0, ms, 0);
                snprintf(nm, sizeof nm, "%s: KL error / (1e-3 + |KL|)", name);
                check(nm, e_kl, zero, rows, 1e-9, 0, ms, 0);
                snprintf(nm, sizeof nm, "%s: best token", name);
                check(nm, fb_g, fb_c, rows, 0, 0, ms, 0);
                snprintf(nm, sizeof nm, "%s: gather", name);
                check(nm, gg, cg, n_idx, 0, 0, ms, 0);
            }
            dfree(dx), dfree(dref), dfree(dg), dfree(drlz), dfree(dlz), dfree(dkl), dfree(dbest), dfree(didx);
        }
        free(x), free(ref), free(idx), free(rlz), free(clz), free(ckl), free(glz), free(gkl), free(cbest), free(gbest);
        free(cg), free(gg), free(e_lz), free(e_kl), free(zero), free(fb_c), free(fb_g);
    }
}

/* The end of a case run through the CUDA backend: its status, the time since
 * t0 (after a sync), then the device result n floats at dC against ref. */
static void backend_case_done(const char *name, ss_backend *gpu, ss_status st, double t0, float *got, const float *dC,
                              const float *ref, int64_t n, double atol) {
    if (!st) st = gpu->sync(gpu);
    double ms = (ss_now() - t0) * 1e3;
    if (st) {
        printf("CASE %s FAIL (%s)\n", name, ss_last_error());
        fail_case();
        return;
    }
    to_host(got, dC, (size_t)n * 4);
    check(name, got, ref, n, atol, 1e-4, ms, 0);
}

/* zero and matmul_tn are not kernels of kernels/ but the CUDA backend's
 * cudaMemsetAsync and cuBLAS calls: checked through the backend (fp32
 * math, TF32 off) against the CPU op. An fp32 product of M terms in [-1,1]
 * has an rms error ~ 2^-24 sqrt(M) |C| with |C| ~ sqrt(M)/3: atol 2.5e-7 M
 * (1e-3 at M = 4096) + rtol 1e-4. */
static void case_backend_bwd(void) {
    int64_t shapes[][3] = {{1, 1, 1}, {7, 33, 5}, {64, 48, 40}, {0, 4, 6}, {4096, 768, 3072}, {4096, 3072, 768},
                           {1024, 768, 2304}};
    int ns = g_quick ? 4 : 7;
    if (!selected("bwd matmul_tn") && !selected("bwd zero")) return;
    ss_backend *gpu = NULL;
    if (ss_backend_cuda_open(0, NULL, &gpu)) {
        printf("CASE %-62s FAIL (%s)\n", "bwd matmul_tn (CUDA backend)", ss_last_error());
        fail_case();
        return;
    }
    const ss_backend *cpu = ss_backend_cpu();
    for (int si = 0; si < ns && selected("bwd matmul_tn"); si++)
        for (int acc = 0; acc < 2; acc++) {
            int64_t M = shapes[si][0], N = shapes[si][1], K = shapes[si][2];
            char name[96];
            snprintf(name, sizeof name, "bwd matmul_tn M=%lld N=%lld K=%lld %s", (long long)M, (long long)N,
                     (long long)K, acc ? "accumulate" : "overwrite");
            float *A = rvec(M * K + 1, 95, 1.f), *B = rvec(M * N + 1, 96, 1.f), *C0 = rvec(K * N, 97, 1.f);
            float *ref = fvec(K * N, 0), *got = fvec(K * N, 0);
            memcpy(ref, C0, (size_t)(K * N) * 4);
            if (cpu->matmul_tn(cpu, ref, A, B, M, N, K, acc)) {
                cpu_ref_failed(name);
            } else {
                float *dA = dup_to_dev(A, (size_t)(M * K + 1) * 4), *dB = dup_to_dev(B, (size_t)(M * N + 1) * 4),
                      *dC = dup_to_dev(C0, (size_t)(K * N) * 4);
                double t0 = ss_now();
                backend_case_done(name, gpu, gpu->matmul_tn(gpu, dC, dA, dB, M, N, K, acc), t0, got, dC, ref, K * N,
                                  2.5e-7 * (double)(M > 40 ? M : 40));
                dfree(dA), dfree(dB), dfree(dC);
            }
            free(A), free(B), free(C0), free(ref), free(got);
        }
    if (selected("bwd zero")) {
        size_t bytes = 1000003;
        unsigned char *h = xmalloc(bytes), *g = xmalloc(bytes);
        for (size_t i = 0; i < bytes; i++) h[i] = (unsigned char)(i * 7 + 1);
        unsigned char *dv = dup_to_dev(h, bytes);
        ss_status st = gpu->zero(gpu, dv + 3, bytes - 10);
        if (!st) st = gpu->sync(gpu);
        to_host(g, dv, bytes);
        int64_t bad = 0;
        for (size_t i = 0; i < bytes; i++) bad += g[i] != (i >= 3 && i < bytes - 7 ? 0 : h[i]);
        g_cases++;
        printf("CASE %-62s n=%-9zu %s\n", "bwd zero (cudaMemsetAsync, odd offset and size)", bytes, st || bad ? "FAIL" : "ok");
        if (st || bad) g_failed++;
        dfree(dv);
        free(h), free(g);
    }
    ss_backend_cuda_close(gpu);
}

/* The forward's 16-bit products (cublasGemmEx: activations rounded to bf16
 * or fp16 on the device, fp32 accumulation and output, then the bias) against
 * the CPU op, which rounds the same way and multiplies in fp32. The products of
 * two 16-bit values are exact in fp32, so only the order of the K additions
 * differs: the fp32 tolerance of matmul_tn, atol 2.5e-7 K + rtol 1e-4. Shapes
 * of GPT-2 small's four products with 774 rows, both weight layouts. */
static void case_backend_matmul16(void) {
    int64_t shapes[][3] = {{5, 7, 3}, {774, 2304, 768}, {774, 768, 768}, {774, 3072, 768}, {774, 768, 3072}};
    /* Not in --quick, the run that gpu_check.sh hands to compute-sanitizer:
     * cuBLAS's Hopper kernels (nvjet_sm90_*) store through the tensor memory
     * accelerator, which racecheck reports as shared-memory hazards inside the
     * library and initcheck as unwritten memory when the bias kernel reads C
     * (H100, CUDA 13.0). The sanitizers look at this project's kernels. */
    if (g_quick || !selected("matmul16")) return;
    const int ns = 5;
    ss_backend *gpu = NULL;
    if (ss_backend_cuda_open(0, NULL, &gpu)) {
        printf("CASE %-62s FAIL (%s)\n", "matmul16 (CUDA backend)", ss_last_error());
        fail_case();
        return;
    }
    const ss_backend *cpu = ss_backend_cpu();
    for (int si = 0; si < ns; si++)
        for (int f16 = 0; f16 < 2; f16++)
            for (int trans = 0; trans < 2; trans++) {
                int64_t M = shapes[si][0], N = shapes[si][1], K = shapes[si][2];
                char name[96];
                snprintf(name, sizeof name, "matmul16 %s M=%lld N=%lld K=%lld%s", f16 ? "fp16" : "bf16", (long long)M,
                         (long long)N, (long long)K, trans ? " trans" : "");
                float *A = rvec(M * K, 98, 1.f), *Bf = rvec(K * N, 99, 0.1f), *bias = rvec(N, 100, 0.5f);
                float *ref = fvec(M * N, 0), *got = fvec(M * N, 0);
                uint16_t *B = xmalloc((size_t)(K * N) * 2);
                for (int64_t i = 0; i < K * N; i++) B[i] = f16 ? ss_f32_to_f16(Bf[i]) : ss_f32_to_bf16(Bf[i]);
                const int wdt = f16 ? SS_WDTYPE_F16 : SS_WDTYPE_BF16;
                ss_status cs = cpu->matmul(cpu, ref, A, B, wdt, bias, M, N, K, trans);
                if (cs == SS_ERR_UNSUPPORTED) { /* the CPU reference has no fp16 product */
                    free(A), free(Bf), free(bias), free(ref), free(got), free(B);
                    continue;
                }
                if (cs) {
                    cpu_ref_failed(name);
                } else {
                    float *dA = dup_to_dev(A, (size_t)(M * K) * 4), *dbias = dup_to_dev(bias, (size_t)N * 4),
                          *dC = dalloc((size_t)(M * N) * 4);
                    uint16_t *dB = dup_to_dev(B, (size_t)(K * N) * 2);
                    double t0 = ss_now();
                    backend_case_done(name, gpu, gpu->matmul(gpu, dC, dA, dB, wdt, dbias, M, N, K, trans), t0, got, dC,
                                      ref, M * N, 2.5e-7 * (double)(K > 40 ? K : 40));
                    dfree(dA), dfree(dbias), dfree(dC), dfree(dB);
                }
                free(A), free(Bf), free(bias), free(ref), free(got), free(B);
            }
    ss_backend_cuda_close(gpu);
}

/* ---- PCA (cuSOLVER through the backend's pca_top) ----------------------- */

/* Symmetric matrices with a known, well-separated top spectrum (a diagonal
 * ramp plus small symmetric noise), the backend's cuSOLVER eigensolver
 * against ss_pca_top (LAPACK) on the host: values to 1e-10 of the largest,
 * vectors (sign convention applied) to 1e-7. The times of both are printed. */
static void case_backend_pca(void) {
    if (!selected("pca")) return;
    int64_t dims[] = {1, 5, 300, 3072, 4096};
    int nd = g_quick ? 3 : 5;
    ss_backend *gpu = NULL;
    if (ss_backend_cuda_open(0, NULL, &gpu)) {
        printf("CASE %-62s FAIL (%s)\n", "pca (CUDA backend)", ss_last_error());
        fail_case();
        return;
    }
    if (!gpu->pca_top) {
        printf("CASE %-62s skipped (built without cuSOLVER)\n", "pca");
        ss_backend_cuda_close(gpu);
        return;
    }
    for (int di = 0; di < nd; di++) {
        int64_t d = dims[di], k = d < 8 ? d : 8;
        char name[96];
        snprintf(name, sizeof name, "pca cuSOLVER syevdx d=%lld k=%lld", (long long)d, (long long)k);
        double *a = xmalloc((size_t)(d * d) * sizeof(double));
        uint64_t x = 88172645463325252ULL + (uint64_t)d;
        for (int64_t i = 0; i < d; i++)
            for (int64_t j = 0; j <= i; j++) {
                x ^= x << 13, x ^= x >> 7, x ^= x << 17;
                double r = ((double)(x >> 11) / 9007199254740992.0 - 0.5) * 1e-3;
                a[i * d + j] = a[j * d + i] = (i == j ? 1.0 + (double)((i * 7919) % d) / (double)d : 0.0) + r;
            }
        double *rv = xmalloc((size_t)k * sizeof(double)), *re = xmalloc((size_t)(k * d) * sizeof(double));
        double *gv = xmalloc((size_t)k * sizeof(double)), *ge = xmalloc((size_t)(k * d) * sizeof(double));
        double t0 = ss_now();
        ss_status st = ss_pca_top(a, d, k, rv, re);
        double host_ms = (ss_now() - t0) * 1e3;
        if (st) {
            cpu_ref_failed(name);
        } else {
            t0 = ss_now();
            st = gpu->pca_top(gpu, a, d, k, gv, ge);
            double ms = (ss_now() - t0) * 1e3;
            double ev = 0, ee = 0;
            for (int64_t i = 0; !st && i < k; i++) ev = fmax(ev, fabs(gv[i] - rv[i]));
            for (int64_t i = 0; !st && i < k * d; i++) ee = fmax(ee, fabs(ge[i] - re[i]));
            int bad = st || ev > 1e-10 * fabs(rv[0]) || ee > 1e-7;
            g_cases++;
            if (st) printf("CASE %s FAIL (%s)\n", name, ss_last_error());
            else
                printf("CASE %-62s max|dvalue| %.1e max|dvector| %.1e gpu %.1f ms host %.1f ms %s\n", name, ev, ee, ms,
                       host_ms, bad ? "FAIL" : "ok");
            if (bad) g_failed++;
        }
        free(a), free(rv), free(re), free(gv), free(ge);
    }
    ss_backend_cuda_close(gpu);
}

/* ---- masks (mask_apply.cu through the backend's apply_masks) ----------- */

/* K copies of nb sequences of lengths up to T, copy k with its own mask
 * (every device mode; unit lists, positions, relative noise, identities),
 * against ss_mask_apply on the host. Zero, mean and scale are exact; noise
 * may differ by one float ulp: CUDA's double log/cos are within 1-2 ulp of
 * the host libm's, which moves the float rounding only at a boundary. */
static void case_mask_apply(void) {
    int64_t shapes[][4] = {{37, 40, 3, 9}, {768, 768, 8, 64}, {3072, 3072, 8, 128}, {2304, 6912, 2, 256}};
    int nsh = g_quick ? 1 : 4;
    for (int si = 0; si < nsh; si++) {
        const int64_t width = shapes[si][0], ld = shapes[si][1], nb = shapes[si][2], T = shapes[si][3];
        const int K = 6;
        char name[96];
        snprintf(name, sizeof name, "mask_apply width=%lld ld=%lld K=%d nb=%lld T=%lld", (long long)width,
                 (long long)ld, K, (long long)nb, (long long)T);
        if (!selected(name)) continue;
        int64_t *start1 = xmalloc((size_t)nb * 8), *len1 = xmalloc((size_t)nb * 8), *prompt1 = xmalloc((size_t)nb * 8);
        int64_t R = 0;
        for (int64_t q = 0; q < nb; q++) start1[q] = R, len1[q] = 1 + (q * 7919 + T / 2) % T, prompt1[q] = 3 * q + 1, R += len1[q];
        const int64_t n = K * R * ld;
        float *x0 = rvec(n, 123, 2.f), *ref = xmalloc((size_t)n * 4), *got = xmalloc((size_t)n * 4);
        for (int64_t i = 0; i < n; i += 17) x0[i] = 0.f;
        double *mean = xmalloc((size_t)width * 8), *sd = xmalloc((size_t)width * 8);
        for (int64_t u = 0; u < width; u++) mean[u] = 0.01 * (double)u - 1, sd[u] = u % 5 ? 0.1 * (double)(u % 7) : 0;
        int64_t *units = xmalloc((size_t)width * 8), nu = 0, pos[4] = {0, 3, 17, 700};
        for (int64_t u = 1; u < width; u += 3) units[nu++] = u;
        ss_mask m[6];
        memset(m, 0, sizeof m);
        ss_mask_target tg[6];
        const ss_mask_mode modes[6] = {SS_MASK_ZERO, SS_MASK_MEAN, SS_MASK_SCALE, SS_MASK_NOISE, SS_MASK_NEGNOISE,
                                       SS_MASK_NOISE};
        ss_backend_mask bm[6];
        ss_mask_stats st = {mean, sd, NULL, NULL};
        ss_site site;
        memset(&site, 0, sizeof site);
        site.id = 11, site.per_token = 1, site.width = width, site.ndim = 1, site.dims[0] = width;
        snprintf(site.name, sizeof site.name, "site");
        ss_packing pk1 = {nb, R, start1, len1, 0};
        memcpy(ref, x0, (size_t)n * 4);
        int ref_ok = 1;
        for (int k = 0; k < K; k++) {
            tg[k] = (ss_mask_target){11, k % 2 ? units : NULL, k % 2 ? nu : 0};
            m[k].targets = &tg[k];
            m[k].n_targets = 1;
            m[k].mode = modes[k];
            m[k].factor = 0.25;
            m[k].sigma = k == 5 ? 1.5 : 0.6;
            m[k].sigma_relative = k == 5;
            m[k].seed = 77 + (uint64_t)k;
            if (k == 2 || k == 4) m[k].positions = pos, m[k].n_positions = 4;
            bm[k] = (ss_backend_mask){(int)m[k].mode, m[k].sigma_relative, m[k].factor, m[k].sigma, m[k].seed,
                                      tg[k].units, tg[k].n_units, m[k].positions, m[k].n_positions,
                                      k == 1 ? mean : NULL, k == 5 ? sd : NULL};
            if (ss_mask_apply(&m[k], &site, ref + k * R * ld, ld, &pk1, prompt1, &st)) ref_ok = 0;
        }
        int64_t *start = xmalloc((size_t)(K * nb) * 8), *len = xmalloc((size_t)(K * nb) * 8),
                *prompt = xmalloc((size_t)(K * nb) * 8);
        int32_t *which = xmalloc((size_t)(K * nb) * 4);
        for (int k = 0; k < K; k++)
            for (int64_t q = 0; q < nb; q++)
                start[k * nb + q] = k * R + start1[q], len[k * nb + q] = len1[q], prompt[k * nb + q] = prompt1[q],
                which[k * nb + q] = k;
        ss_backend *gpu = NULL;
        ss_mask_program *prog = NULL;
        ss_status s = ref_ok ? ss_backend_cuda_open(0, NULL, &gpu) : SS_ERR_INTERNAL;
        if (!s) s = gpu->mask_program_create(gpu, bm, K, 11, width, &prog);
        if (s) {
            printf("CASE %s FAIL (%s)\n", name, ss_last_error());
            fail_case();
        } else {
            float *d = dup_to_dev(x0, (size_t)n * 4);
            double t0 = ss_now();
            s = gpu->apply_masks(gpu, prog, d, ld, K * R, K * nb, start, len, prompt, which);
            if (!s) s = gpu->sync(gpu);
            double ms = (ss_now() - t0) * 1e3;
            if (s) {
                printf("CASE %s FAIL (%s)\n", name, ss_last_error());
                fail_case();
            } else {
                to_host(got, d, (size_t)n * 4);
                check(name, got, ref, n, 0, 2.4e-7, ms, 0);
            }
            dfree(d);
        }
        if (gpu) {
            gpu->mask_program_free(gpu, prog);
            ss_backend_cuda_close(gpu);
        }
        free(start1), free(len1), free(prompt1), free(x0), free(ref), free(got), free(mean), free(sd), free(units);
        free(start), free(len), free(prompt), free(which);
    }
}

int main(int argc, char **argv) {
    int device = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--quick")) g_quick = 1;
        else if (!strcmp(argv[i], "--filter") && i + 1 < argc) g_filter = argv[++i];
        else if (!strcmp(argv[i], "--device") && i + 1 < argc) {
            const char *v = argv[++i]; /* digits only: atoi read 'x' as 0 and '1x' as 1 */
            if (!*v || v[strspn(v, "0123456789")] || strlen(v) > 4) {
                fprintf(stderr, "kernel_check: --device needs a device number, got '%s'\n", v);
                return 2;
            }
            device = atoi(v);
        }
        else {
            const int help = !strcmp(argv[i], "--help");
            fprintf(help ? stdout : stderr, "usage: kernel_check [--quick] [--filter SUBSTR] [--device N]\n");
            return help ? 0 : 2;
        }
    }
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess || n == 0) {
        printf("kernel_check: no CUDA device visible (%s)\n", e != cudaSuccess ? cudaGetErrorString(e) : "0 devices");
        return 2;
    }
    if (device < 0 || device >= n) {
        printf("kernel_check: device %d does not exist (%d visible)\n", device, n);
        return 2;
    }
    struct cudaDeviceProp prop;
    CU(cudaSetDevice(device), "cudaSetDevice");
    CU(cudaGetDeviceProperties(&prop, device), "cudaGetDeviceProperties");
    int rt = 0, drv = 0;
    cudaRuntimeGetVersion(&rt);
    cudaDriverGetVersion(&drv);
    printf("kernel_check: device %d: %s, sm_%d%d, %.1f GiB, runtime %d.%d, driver API %d.%d%s%s\n", device, prop.name,
           prop.major, prop.minor, (double)prop.totalGlobalMem / (1 << 30), rt / 1000, rt % 1000 / 10, drv / 1000,
           drv % 1000 / 10, g_quick ? ", quick shapes" : "", g_filter ? ", filtered" : "");
    CU(cudaStreamCreate(&g_stream), "stream");
    CU(cudaEventCreate(&g_ev0), "event");
    CU(cudaEventCreate(&g_ev1), "event");
    double t0 = ss_now();
    case_add();
    case_capture();
    case_convert();
    case_embed();
    case_norm();
    case_rope();
    case_rope16();
    case_swiglu();
    case_bias_act();
    case_softmax();
    case_attention();
    case_attention_kv();
    case_cov_center();
    case_cov();
    case_moments_merge();
    case_sum_rows();
    case_attr();
    case_ig();
    case_patch_pieces();
    case_layernorm_bwd();
    case_rmsnorm_bwd();
    case_gelu_bwd();
    case_swiglu_bwd();
    case_attention_bwd();
    case_norm_jvp();
    case_swiglu_jvp();
    case_attention_jvp();
    case_embed_bwd();
    case_softmax_xent();
    case_logit_scores();
    case_softmax_causal();
    case_softmax_causal_backward();
    case_attention_tc();
    case_backend_bwd();
    case_backend_matmul16();
    case_backend_pca();
    case_mask_apply();
    /* last: the wgmma covariance kernel (a fault in it would leave a sticky
     * CUDA error that fails every later case) */
    case_cov_wg();
    CU(cudaEventDestroy(g_ev0), "event");
    CU(cudaEventDestroy(g_ev1), "event");
    CU(cudaStreamDestroy(g_stream), "stream");
    printf("kernel_check: %d cases, %d failed (%.1f s)\n", g_cases, g_failed, ss_now() - t0);
    if (g_cases == 0) printf("kernel_check: no case matched the filter\n");
    cudaDeviceReset(); /* lets compute-sanitizer's leak check see a clean exit */
    return g_failed || g_cases == 0 ? 1 : 0;
}
