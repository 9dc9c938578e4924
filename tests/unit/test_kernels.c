/* The CUDA kernels (kernels/<op>.cu), run on the CPU under the emulation
 * header, against the fp32 CPU reference ops or straightforward double
 * loops; and the emulation itself (warp operations, barriers, shared memory,
 * atomics, half types, and the aborts on misuse).
 *
 * Every comparison passes when |got - ref| <= atol + rtol*|ref| elementwise
 * and prints the NMSE sum((got-ref)^2)/sum(ref^2) and the largest error.
 * Every kernel case runs twice, threads resumed in forward and in reverse
 * order, and the two results must be bitwise equal: a missing barrier makes
 * the outcome depend on the order. Shapes are small because every emulated
 * thread is a fiber (each switch is a system call). */
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../../kernels/emu/cuda_emu.h"
#include "../../kernels/ss_cuda.cuh"
#include "../../kernels/mma.cuh"
#include "../../kernels/wgmma.cuh"
#include "ref_softmax.h"
#include "subscope/backend.h"
#include "subscope/cuda_kernels.h"
#include "subscope/safetensors.h"
#include "test.h"

/* Runs the same launch in both schedules; the outputs (nout buffers of the
 * given sizes, refilled with NaN before each run) must match bitwise. */
typedef void (*launch_fn)(void *ctx);
static int both_orders(launch_fn fn, void *ctx, float **outs, const int64_t *sizes, int nout) {
    float *save[4];
    for (int o = 0; o < nout; o++) save[o] = malloc((size_t)(sizes[o] ? sizes[o] : 1) * sizeof(float));
    int same = 1;
    for (int pass = 0; pass < 2; pass++) {
        for (int o = 0; o < nout; o++)
            for (int64_t i = 0; i < sizes[o]; i++) outs[o][i] = NAN;
        ss_emu_set_schedule(pass ? SS_EMU_REVERSE : SS_EMU_FORWARD, 0);
        fn(ctx);
        for (int o = 0; o < nout; o++) {
            if (!pass) memcpy(save[o], outs[o], (size_t)sizes[o] * sizeof(float));
            else if (memcmp(save[o], outs[o], (size_t)sizes[o] * sizeof(float))) same = 0;
        }
    }
    ss_emu_set_schedule(SS_EMU_FORWARD, 0);
    for (int o = 0; o < nout; o++) free(save[o]);
    if (!same) printf("\n    results differ between forward and reverse thread order (a race)");
    return same;
}

/* Weights as fp32/fp16/bf16 buffers, and the fp32 values they hold. */
static void *to_dtype(const float *x, int64_t n, int dt, float *as_f32) {
    if (dt == SS_CUDA_F32) {
        float *p = malloc((size_t)n * sizeof(float));
        memcpy(p, x, (size_t)n * sizeof(float));
        memcpy(as_f32, x, (size_t)n * sizeof(float));
        return p;
    }
    uint16_t *p = malloc((size_t)n * 2);
    for (int64_t i = 0; i < n; i++) {
        p[i] = dt == SS_CUDA_F16 ? ss_f32_to_f16(x[i]) : ss_f32_to_bf16(x[i]);
        as_f32[i] = dt == SS_CUDA_F16 ? ss_f16_to_f32(p[i]) : ss_bf16_to_f32(p[i]);
    }
    return p;
}

static const char *dt_name[] = {"f32", "f16", "bf16"};

/* ---- residual add, capture, convert: exact ops (tolerance 0) ---------- */

typedef struct { float *out; const float *a, *b; int64_t n; } add_ctx;
static void run_add(void *v) { add_ctx *c = v; CHECK(ss_cuda_add(c->out, c->a, c->b, c->n, NULL) == 0); }

TEST(kernel_add_exact) {
    /* 1, odd, a multiple of 4, and a misaligned view (scalar path) */
    int64_t sizes[] = {1, 7, 1000, 4099};
    for (int si = 0; si < 4; si++) {
        for (int mis = 0; mis < 2; mis++) {
            int64_t n = sizes[si];
            float *a = ss_test_rvec(n + 1, 1, 1.0f), *b = ss_test_rvec(n + 1, 2, 1.0f), *out = ss_test_fvec(n + 1, 0), *ref = ss_test_fvec(n, 0);
            add_ctx c = {out + mis, a + mis, b + mis, n};
            for (int64_t i = 0; i < n; i++) ref[i] = a[i + mis] + b[i + mis];
            float *o = out + mis;
            CHECK(both_orders(run_add, &c, &o, &n, 1));
            char nm[64];
            snprintf(nm, sizeof nm, "add n=%lld%s", (long long)n, mis ? " misaligned" : "");
            CHECK(ss_test_compare(nm, o, ref, n, 0, 0) == 0);
            free(a); free(b); free(out); free(ref);
        }
    }
    /* in place: out == a */
    float *a = ss_test_rvec(33, 3, 1.0f), *b = ss_test_rvec(33, 4, 1.0f), ref[33];
    for (int i = 0; i < 33; i++) ref[i] = a[i] + b[i];
    CHECK(ss_cuda_add(a, a, b, 33, NULL) == 0);
    CHECK(ss_test_compare("add in place", a, ref, 33, 0, 0) == 0);
    CHECK(ss_cuda_add(a, a, b, 0, NULL) == 0); /* n = 0 launches nothing */
    free(a); free(b);
}

typedef struct { float *dst; const float *src; int64_t ld; const int64_t *idx; int64_t rows, cols; } cap_ctx;
static void run_cap(void *v) {
    cap_ctx *c = v;
    CHECK(ss_cuda_capture(c->dst, c->src, c->ld, c->idx, c->rows, c->cols, NULL) == 0);
}

TEST(kernel_capture_exact) {
    /* rows x cols inside a wider buffer (q of a fused qkv: ld = 3*cols),
     * odd widths (scalar path), a row list */
    int64_t shapes[][3] = {{1, 4, 12}, {9, 64, 192}, {5, 37, 111}, {17, 40, 41}};
    for (int si = 0; si < 4; si++) {
        for (int use_idx = 0; use_idx < 2; use_idx++) {
            int64_t rows = shapes[si][0], cols = shapes[si][1], ld = shapes[si][2], src_rows = rows + 3;
            float *src = ss_test_rvec(src_rows * ld, 5, 1.0f), *dst = ss_test_fvec(rows * cols, 0), *ref = ss_test_fvec(rows * cols, 0);
            int64_t idx[32];
            for (int64_t r = 0; r < rows; r++) idx[r] = use_idx ? (r * 7 + 2) % src_rows : r;
            for (int64_t r = 0; r < rows; r++)
                for (int64_t c = 0; c < cols; c++) ref[r * cols + c] = src[idx[r] * ld + c + 1];
            cap_ctx c = {dst, src + 1, ld, use_idx ? idx : NULL, rows, cols};
            int64_t n = rows * cols;
            CHECK(both_orders(run_cap, &c, &dst, &n, 1));
            char nm[64];
            snprintf(nm, sizeof nm, "capture %lldx%lld ld=%lld%s", (long long)rows, (long long)cols, (long long)ld,
                     use_idx ? " row list" : "");
            CHECK(ss_test_compare(nm, dst, ref, n, 0, 0) == 0);
            free(src); free(dst); free(ref);
        }
    }
    CHECK(ss_cuda_capture(NULL, NULL, 3, NULL, 2, 4, NULL) == 1); /* ld < cols is rejected */
}

TEST(kernel_convert_matches_host_rounding) {
    int64_t n = 517;
    float *x = ss_test_rvec(n, 6, 1.0f);
    /* the cases rounding must get right: ties to even, subnormal halves,
     * overflow to inf, NaN */
    float special[] = {1.0f + 1.0f / 256, 1.0f + 3.0f / 256, 1.0f + 1.0f / 2048, 6e-8f, 3e-5f, 70000.f, -0.f, NAN};
    for (int i = 0; i < 8; i++) x[i] = special[i];
    for (int64_t i = 8; i < n; i++) x[i] *= (float)(1 << (i % 20)) / 1024.f;
    for (int dt = SS_CUDA_F16; dt <= SS_CUDA_BF16; dt++) {
        uint16_t *h = malloc((size_t)n * 2), *h2 = malloc((size_t)n * 2);
        CHECK(ss_cuda_convert(h, dt, x, SS_CUDA_F32, n, NULL) == 0);
        int mism = 0;
        for (int64_t i = 0; i < n; i++) {
            uint16_t want = dt == SS_CUDA_F16 ? ss_f32_to_f16(x[i]) : ss_f32_to_bf16(x[i]);
            mism += h[i] != want;
        }
        CHECK_MSG(!mism, "%d of %lld %s conversions differ from the host's round-to-nearest-even", mism, (long long)n,
                  dt_name[dt]);
        float *back = ss_test_fvec(n, 0), *ref = ss_test_fvec(n, 0);
        CHECK(ss_cuda_convert(back, SS_CUDA_F32, h, dt, n, NULL) == 0);
        for (int64_t i = 0; i < n; i++) ref[i] = dt == SS_CUDA_F16 ? ss_f16_to_f32(h[i]) : ss_bf16_to_f32(h[i]);
        CHECK(memcmp(back, ref, (size_t)n * sizeof(float)) == 0);
        CHECK(ss_cuda_convert(h2, dt, h, dt, n, NULL) == 0);
        CHECK(memcmp(h, h2, (size_t)n * 2) == 0);
        printf("\n    convert f32<->%s n=%lld: bit-exact", dt_name[dt], (long long)n);
        free(h); free(h2); free(back); free(ref);
    }
    CHECK(ss_cuda_convert(x, 7, x, SS_CUDA_F32, n, NULL) == 1);
    free(x);
}

/* ---- embeddings -------------------------------------------------------- */

TEST(kernel_embed_vs_cpu_all_dtypes) {
    const ss_backend *be = ss_backend_cpu();
    int64_t V = 50, P = 40;
    int64_t shapes[][2] = {{1, 8}, {13, 48}, {9, 30}}; /* (n, d): d=30 takes the scalar path */
    for (int si = 0; si < 3; si++) {
        int64_t n = shapes[si][0], d = shapes[si][1];
        for (int dt = SS_CUDA_F32; dt <= SS_CUDA_BF16; dt++) {
            float *wte = ss_test_rvec(V * d, 7, 1.0f), *wpe = ss_test_rvec(P * d, 8, 1.0f), *wte32 = ss_test_fvec(V * d, 0), *wpe32 = ss_test_fvec(P * d, 0);
            void *wte_d = to_dtype(wte, V * d, dt, wte32), *wpe_d = to_dtype(wpe, P * d, dt, wpe32);
            int32_t tok[16], pos[16];
            for (int64_t i = 0; i < n; i++) tok[i] = (int32_t)((i * 17 + 3) % V), pos[i] = (int32_t)(i % P);
            float *t = ss_test_fvec(n * d, 0), *p = ss_test_fvec(n * d, 0), *s = ss_test_fvec(n * d, 0);
            float *rt = ss_test_fvec(n * d, 0), *rp = ss_test_fvec(n * d, 0), *rs = ss_test_fvec(n * d, 0);
            CHECK_OK(be->embed(be, rt, rp, tok, pos, wte32, wpe32, SS_WDTYPE_F32, n, d));
            CHECK_OK(be->add(be, rs, rt, rp, n * d));
            CHECK(ss_cuda_embed(t, p, s, tok, pos, wte_d, wpe_d, dt, V, P, n, d, NULL) == 0);
            char nm[64];
            snprintf(nm, sizeof nm, "embed %s n=%lld d=%lld tok/pos/sum", dt_name[dt], (long long)n, (long long)d);
            CHECK(ss_test_compare(nm, t, rt, n * d, 0, 0) == 0);
            CHECK(memcmp(p, rp, (size_t)(n * d) * sizeof(float)) == 0);
            CHECK(memcmp(s, rs, (size_t)(n * d) * sizeof(float)) == 0);
            /* only the sum requested; an id out of range gives NaN, not a read */
            float *s2 = ss_test_fvec(n * d, 0);
            tok[n - 1] = (int32_t)V;
            CHECK(ss_cuda_embed(NULL, NULL, s2, tok, pos, wte_d, wpe_d, dt, V, P, n, d, NULL) == 0);
            CHECK(memcmp(s2, rs, (size_t)((n - 1) * d) * sizeof(float)) == 0);
            for (int64_t c = 0; c < d; c++) CHECK(isnan(s2[(n - 1) * d + c]));
            /* no position table (rotary models): pos is not read, the sum is the token row */
            tok[n - 1] = 0;
            CHECK_OK(be->embed(be, rt, NULL, tok, NULL, wte32, NULL, SS_WDTYPE_F32, n, d));
            CHECK(ss_cuda_embed(t, NULL, s2, tok, NULL, wte_d, NULL, dt, V, P, n, d, NULL) == 0);
            CHECK(memcmp(t, rt, (size_t)(n * d) * sizeof(float)) == 0);
            CHECK(memcmp(s2, rt, (size_t)(n * d) * sizeof(float)) == 0);
            CHECK(ss_cuda_embed(t, p, NULL, tok, pos, wte_d, NULL, dt, V, P, n, d, NULL) == 1);
            free(wte); free(wpe); free(wte32); free(wpe32); free(wte_d); free(wpe_d);
            free(t); free(p); free(s); free(s2); free(rt); free(rp); free(rs);
        }
    }
}

/* ---- layernorm / RMSNorm ----------------------------------------------- */

typedef struct { float *out; const float *x; const void *w, *b; int dt; int64_t rows, d; int rms; } norm_ctx;
static void run_norm(void *v) {
    norm_ctx *c = v;
    if (c->rms) CHECK(ss_cuda_rmsnorm(c->out, c->x, c->w, c->dt, c->rows, c->d, 1e-5f, NULL) == 0);
    else CHECK(ss_cuda_layernorm(c->out, c->x, c->w, c->b, c->dt, c->rows, c->d, 1e-5f, NULL) == 0);
}

/* The _to launchers' 16-bit outputs (norm_matmul's): the fp32 result c->out
 * holds, rounded to nearest even, bit for bit, in both types. */
static void norm16_matches(const norm_ctx *c) {
    int64_t n = c->rows * c->d;
    uint16_t *o16 = malloc((size_t)n * sizeof(uint16_t));
    for (int odt = SS_CUDA_F16; odt <= SS_CUDA_BF16; odt++) {
        if (c->rms) CHECK(ss_cuda_rmsnorm_to(o16, odt, c->x, c->w, c->dt, c->rows, c->d, 1e-5f, NULL) == 0);
        else CHECK(ss_cuda_layernorm_to(o16, odt, c->x, c->w, c->b, c->dt, c->rows, c->d, 1e-5f, NULL) == 0);
        for (int64_t i = 0; i < n; i++) {
            const uint16_t want = odt == SS_CUDA_BF16 ? ss_f32_to_bf16(c->out[i]) : ss_f32_to_f16(c->out[i]);
            CHECK_MSG(o16[i] == want, "%s to %s, %lldx%lld, element %lld: 0x%04x, the fp32 output rounded 0x%04x",
                      c->rms ? "rmsnorm" : "layernorm", odt == SS_CUDA_BF16 ? "bf16" : "fp16", (long long)c->rows,
                      (long long)c->d, (long long)i, o16[i], want);
        }
    }
    free(o16);
}

/* Tolerance: the kernel accumulates d fp32 terms per row (d/32 per lane,
 * then a 5-level tree) where the reference uses double; for |x| ~ 1 that is
 * a relative error of a few 1e-7, so atol = rtol = 1e-5 has ~10x margin.
 * With a common offset of 1000 (row 1 of the first shape) x - mean is
 * formed in fp32 from numbers of size 1000 (ulp 6e-5), an absolute error
 * ~3e-5 / std(x) in the output: atol 2e-4 for that shape. */
TEST(kernel_layernorm_rmsnorm_vs_reference) {
    const ss_backend *be = ss_backend_cpu();
    /* 768 and 1024: the warp kernel's two register widths (6 and 8 float4 per lane); 1028 the block kernel's
     * smallest; 1600 past the warp kernel's limit; 33 and 130 not multiples of 4 (the three sweeps) */
    int64_t shapes[][2] = {{5, 24}, {1, 1}, {1, 768}, {7, 33}, {6, 100}, {9, 130}, {3, 1600}, {2, 1024}, {2, 1028}};
    for (int si = 0; si < 9; si++) {
        int64_t rows = shapes[si][0], d = shapes[si][1];
        for (int dt = SS_CUDA_F32; dt <= SS_CUDA_BF16; dt++) {
            if ((si == 2 || si == 3 || si >= 6) && dt != SS_CUDA_F32) continue; /* keep the test short */
            float *x = ss_test_rvec(rows * d, 9, 1.0f), *w = ss_test_rvec(d, 10, 1.0f), *b = ss_test_rvec(d, 11, 1.0f), *w32 = ss_test_fvec(d, 0), *b32 = ss_test_fvec(d, 0);
            if (si == 0)
                for (int64_t i = 0; i < d; i++) x[d + i] += 1000.f;
            void *wd = to_dtype(w, d, dt, w32), *bd = to_dtype(b, d, dt, b32);
            float *out = ss_test_fvec(rows * d, 0), *ref = ss_test_fvec(rows * d, 0);
            double atol = si == 0 ? 2e-4 : 1e-5;
            norm_ctx c = {out, x, wd, bd, dt, rows, d, 0};
            int64_t n = rows * d;
            CHECK_OK(be->layernorm(be, ref, x, w32, b32, rows, d, 1e-5f));
            CHECK(both_orders(run_norm, &c, &out, &n, 1));
            char nm[64];
            snprintf(nm, sizeof nm, "layernorm %s %lldx%lld", dt_name[dt], (long long)rows, (long long)d);
            CHECK(ss_test_compare(nm, out, ref, n, atol, 1e-5) == 0);
            norm16_matches(&c);
            /* each kernel by name: the ones the shape allows match the reference, the others refuse */
            for (int plan = SS_CUDA_LN_WARP; plan <= SS_CUDA_LN_SWEEP; plan++) {
                const int allowed = plan == SS_CUDA_LN_SWEEP || (d % 4 == 0 && d <= (plan == SS_CUDA_LN_WARP ? 1024 : 16384));
                memset(out, 0xff, (size_t)n * sizeof *out);
                const int rc = ss_cuda_layernorm_plan(out, SS_CUDA_F32, x, wd, bd, dt, rows, d, 1e-5f, plan, NULL);
                CHECK_MSG(rc == !allowed, "plan %d at d %lld: %d", plan, (long long)d, rc);
                snprintf(nm, sizeof nm, "layernorm plan %d %s %lldx%lld", plan, dt_name[dt], (long long)rows, (long long)d);
                if (!rc) CHECK(ss_test_compare(nm, out, ref, n, atol, 1e-5) == 0);
            }
            /* RMSNorm against a double loop */
            for (int64_t r = 0; r < rows; r++) {
                double ss = 0;
                for (int64_t i = 0; i < d; i++) ss += (double)x[r * d + i] * x[r * d + i];
                double inv = 1.0 / sqrt(ss / (double)d + 1e-5);
                for (int64_t i = 0; i < d; i++) ref[r * d + i] = (float)(x[r * d + i] * inv * w32[i]);
            }
            c.rms = 1;
            CHECK(both_orders(run_norm, &c, &out, &n, 1));
            snprintf(nm, sizeof nm, "rmsnorm %s %lldx%lld", dt_name[dt], (long long)rows, (long long)d);
            CHECK(ss_test_compare(nm, out, ref, n, 1e-5, 1e-5) == 0);
            norm16_matches(&c);
            CHECK_OK(be->rmsnorm(be, ref, x, w32, rows, d, 1e-5f));
            CHECK(ss_test_compare("  vs cpu op", out, ref, n, 1e-5, 1e-5) == 0);
            free(x); free(w); free(b); free(w32); free(b32); free(wd); free(bd); free(out); free(ref);
        }
    }
    /* fp32 weights off a 16-byte boundary take the four-loads path (ss_load_weight4) */
    {
        const int64_t rows = 3, d = 768, n = rows * d;
        float *x = ss_test_rvec(n, 12, 1.0f), *wb = ss_test_rvec(2 * d + 2, 13, 1.0f);
        float *out = ss_test_fvec(n, 0), *ref = ss_test_fvec(n, 0);
        const float *w = wb + 1, *b = wb + d + 2; /* 4 and 8 bytes past a boundary */
        CHECK_OK(be->layernorm(be, ref, x, w, b, rows, d, 1e-5f));
        CHECK(ss_cuda_layernorm(out, x, w, b, SS_CUDA_F32, rows, d, 1e-5f, NULL) == 0);
        CHECK(ss_test_compare("layernorm f32 3x768, unaligned w, b", out, ref, n, 1e-5, 1e-5) == 0);
        CHECK(ss_cuda_layernorm_plan(out, SS_CUDA_F32, x, w, b, SS_CUDA_F32, rows, d, 1e-5f, SS_CUDA_LN_BLOCK, NULL) == 0);
        CHECK(ss_test_compare("layernorm f32 3x768 by blocks, unaligned w, b", out, ref, n, 1e-5, 1e-5) == 0);
        CHECK_OK(be->rmsnorm(be, ref, x, w, rows, d, 1e-5f));
        CHECK(ss_cuda_rmsnorm(out, x, w, SS_CUDA_F32, rows, d, 1e-5f, NULL) == 0);
        CHECK(ss_test_compare("rmsnorm f32 3x768, unaligned w", out, ref, n, 1e-5, 1e-5) == 0);
        free(x); free(wb); free(out); free(ref);
    }
}

/* ---- rotary embeddings, SwiGLU ----------------------------------------- */

/* both_orders for in-place kernels: the buffer is reset to init before each
 * run, and the two results must match bitwise. */
static int inplace_both_orders(launch_fn fn, void *ctx, float *buf, const float *init, int64_t n) {
    float *first = malloc((size_t)n * sizeof(float));
    int same = 1;
    for (int pass = 0; pass < 2; pass++) {
        memcpy(buf, init, (size_t)n * sizeof(float));
        ss_emu_set_schedule(pass ? SS_EMU_REVERSE : SS_EMU_FORWARD, 0);
        fn(ctx);
        if (!pass) memcpy(first, buf, (size_t)n * sizeof(float));
        else same = !memcmp(first, buf, (size_t)n * sizeof(float));
    }
    ss_emu_set_schedule(SS_EMU_FORWARD, 0);
    free(first);
    if (!same) printf("\n    results differ between forward and reverse thread order (a race)");
    return same;
}

typedef struct { float *x; int64_t ld, rows, nh, dh; const int32_t *pos; const float *inv; int inverse; } rope_ctx;
static void run_rope(void *v) {
    rope_ctx *c = v;
    CHECK(ss_cuda_rope(c->x, c->ld, c->rows, c->nh, c->dh, c->pos, c->inv, c->inverse, NULL) == 0);
}

/* Against the CPU op and against a double-precision rotation by the same
 * fp32 angle (pos * inv_freq rounded to fp32). Tolerance: cosf/sinf are
 * within 1 ulp here (2 on the GPU) and each output is two products and a
 * sum of values <= 1: atol 1e-6 + rtol 1e-5. An angle not rounded to fp32
 * before cos/sin (the exact product, as a double) is up to ulp(1e5)/2 =
 * 4e-3 rad off at position 100000: that mutation fails here by three orders
 * of magnitude (checked), as would __cosf at thousands of radians on a GPU.
 * Columns past n_heads*dh (the v of a fused qkv row) must be untouched. */
TEST(kernel_rope_vs_cpu) {
    const ss_backend *be = ss_backend_cpu();
    /* rows, n_heads, dh, ld, theta: one pair per head; q+k of H=2,Hkv=1
     * (v untouched); H=8,Hkv=2 with dh 16; the largest dh; odd ld, dh 6 */
    struct { int64_t rows, nh, dh, ld; double theta; } cases[] = {
        {5, 1, 2, 2, 10000.}, {7, 3, 64, 256, 10000.}, {9, 10, 16, 192, 500000.}, {3, 1, 256, 300, 10000.},
        {6, 5, 6, 31, 1e6}, {4, 2, 128, 256, 10000.},
    };
    const int32_t posv[] = {0, 4000, 1, 8191, 100000, 37, 2047, 131071, 12};
    for (int ci = 0; ci < (int)(sizeof cases / sizeof cases[0]); ci++) {
        int64_t rows = cases[ci].rows, nh = cases[ci].nh, dh = cases[ci].dh, ld = cases[ci].ld, n = rows * ld;
        float *x0 = ss_test_rvec(n, 60 + (unsigned)ci, 1.0f), *x = ss_test_fvec(n, 0), *ref = ss_test_fvec(n, 0);
        float *dref = ss_test_fvec(n, 0), *inv = ss_test_fvec(dh / 2, 0);
        int32_t pos[16];
        for (int64_t r = 0; r < rows; r++) pos[r] = posv[(r + ci) % 9];
        for (int64_t i = 0; i < dh / 2; i++) inv[i] = (float)(1.0 / pow(cases[ci].theta, (double)(2 * i) / (double)dh));
        for (int inverse = 0; inverse < 2; inverse++) {
            memcpy(ref, x0, (size_t)n * sizeof(float));
            CHECK_OK(be->rope(be, ref, ld, rows, nh, dh, pos, inv, inverse));
            memcpy(dref, x0, (size_t)n * sizeof(float));
            for (int64_t r = 0; r < rows; r++)
                for (int64_t i = 0; i < dh / 2; i++) {
                    float a = (float)pos[r] * inv[i];
                    double cs = cos((double)a), sn = (inverse ? -1 : 1) * sin((double)a);
                    for (int64_t h = 0; h < nh; h++) {
                        float *p = dref + r * ld + h * dh + i;
                        double x1 = p[0], x2 = p[dh / 2];
                        p[0] = (float)(x1 * cs - x2 * sn);
                        p[dh / 2] = (float)(x2 * cs + x1 * sn);
                    }
                }
            rope_ctx c = {x, ld, rows, nh, dh, pos, inv, inverse};
            CHECK(inplace_both_orders(run_rope, &c, x, x0, n));
            char nm[96];
            snprintf(nm, sizeof nm, "rope%s rows=%lld heads=%lld dh=%lld ld=%lld theta=%g", inverse ? " inverse" : "",
                     (long long)rows, (long long)nh, (long long)dh, (long long)ld, cases[ci].theta);
            CHECK(ss_test_compare(nm, x, ref, n, 1e-6, 1e-5) == 0);
            CHECK(ss_test_compare("  vs double rotation", x, dref, n, 1e-6, 1e-5) == 0);
            for (int64_t r = 0; r < rows; r++)
                CHECK(!memcmp(x + r * ld + nh * dh, x0 + r * ld + nh * dh, (size_t)(ld - nh * dh) * sizeof(float)));
            if (inverse) { /* the inverse undoes the rotation */
                CHECK(ss_cuda_rope(x, ld, rows, nh, dh, pos, inv, 0, NULL) == 0);
                CHECK(ss_test_compare("  rope(inverse(x)) = x", x, x0, n, 1e-6, 1e-5) == 0);
            }
        }
        free(x0); free(x); free(ref); free(dref); free(inv);
    }
    float buf[8];
    int32_t p0 = 0;
    CHECK(ss_cuda_rope(buf, 8, 1, 1, 3, &p0, buf, 0, NULL) == 1); /* odd head width */
    CHECK(ss_cuda_rope(buf, 7, 1, 2, 4, &p0, buf, 0, NULL) == 1); /* ld < n_heads*dh */
    CHECK(ss_cuda_rope(buf, 8, 0, 2, 4, &p0, buf, 0, NULL) == 0); /* no rows: nothing */
}

/* The bf16 rotation (a product's 16-bit q|k rows, SUBSCOPE_QKV16 for Llama):
 * bf16 rows widened to fp32, rotated by ss_cuda_rope, rounded to nearest even,
 * bit for bit; columns past n_heads*dh untouched. Shapes: q+k of a GQA row
 * with v after it (dh 64), dh 128, the smallest dh (4), positions to 131071. */
TEST(kernel_rope_bf16_is_rounded_rope) {
    struct { int64_t rows, nh, dh, ld; double theta; } cases[] = {
        {9, 6, 64, 512, 10000.}, {5, 3, 128, 512, 500000.}, {4, 2, 4, 10, 10000.},
    };
    const int32_t posv[] = {0, 4000, 1, 8191, 100000, 37, 2047, 131071, 12};
    for (int ci = 0; ci < (int)(sizeof cases / sizeof cases[0]); ci++) {
        const int64_t rows = cases[ci].rows, nh = cases[ci].nh, dh = cases[ci].dh, ld = cases[ci].ld, n = rows * ld;
        float *f = ss_test_rvec(n, 90 + (unsigned)ci, 2.0f), *inv = ss_test_fvec(dh / 2, 0);
        uint16_t *h = malloc((size_t)n * 2), *h0 = malloc((size_t)n * 2);
        int32_t pos[16];
        for (int64_t r = 0; r < rows; r++) pos[r] = posv[(r + ci) % 9];
        for (int64_t i = 0; i < dh / 2; i++) inv[i] = (float)(1.0 / pow(cases[ci].theta, (double)(2 * i) / (double)dh));
        for (int64_t i = 0; i < n; i++) h0[i] = h[i] = ss_f32_to_bf16(f[i]), f[i] = ss_bf16_to_f32(h[i]);
        CHECK(ss_cuda_rope(f, ld, rows, nh, dh, pos, inv, 0, NULL) == 0);
        CHECK(ss_cuda_rope_bf16(h, ld, rows, nh, dh, pos, inv, NULL) == 0);
        int64_t off = 0;
        for (int64_t r = 0; r < rows; r++)
            for (int64_t c = 0; c < ld; c++) {
                const int64_t i = r * ld + c;
                off += c < nh * dh ? h[i] != ss_f32_to_bf16(f[i]) : h[i] != h0[i];
            }
        CHECK_MSG(off == 0, "case %d: %lld values differ from the rounded fp32 rotation", ci, (long long)off);
        free(f), free(inv), free(h), free(h0);
    }
    uint32_t words[8] = {0};
    uint16_t *buf = (uint16_t *)words; /* 4-byte aligned */
    int32_t p0 = 0;
    float inv1[4] = {1, 1, 1, 1};
    CHECK(ss_cuda_rope_bf16(buf, 8, 1, 1, 6, &p0, inv1, NULL) == 1);  /* dh not a multiple of 4 */
    CHECK(ss_cuda_rope_bf16(buf, 7, 1, 2, 4, &p0, inv1, NULL) == 1);  /* ld < n_heads*dh */
    CHECK(ss_cuda_rope_bf16(buf + 1, 8, 1, 2, 4, &p0, inv1, NULL) == 1); /* rows not 4-byte aligned */
    CHECK(ss_cuda_rope_bf16(buf, 8, 0, 2, 4, &p0, inv1, NULL) == 0);  /* no rows: nothing */
}

typedef struct { float *out; const float *gu; int64_t rows, dm; } swiglu_ctx;
static void run_swiglu(void *v) {
    swiglu_ctx *c = v;
    CHECK(ss_cuda_swiglu(c->out, c->gu, c->rows, c->dm, NULL) == 0);
}

/* Against the CPU op and a double loop. silu(g) u is one expf (a few ulps),
 * a division and a product: atol 1e-6 + rtol 1e-5. Gate values span
 * [-12, 12] plus +-100 (exp overflows: silu -> -0 and g). dm = 300 and 513
 * leave partial 256-thread column blocks. */
TEST(kernel_swiglu_vs_cpu) {
    const ss_backend *be = ss_backend_cpu();
    int64_t shapes[][2] = {{1, 1}, {3, 37}, {5, 300}, {2, 513}, {4, 256}};
    for (int si = 0; si < 5; si++) {
        int64_t rows = shapes[si][0], dm = shapes[si][1], n = rows * dm;
        float *gu = ss_test_rvec(2 * n, 70 + (unsigned)si, 1.0f), *out = ss_test_fvec(n, 0), *ref = ss_test_fvec(n, 0);
        float *dref = ss_test_fvec(n, 0);
        for (int64_t r = 0; r < rows; r++)
            for (int64_t c = 0; c < dm; c++) gu[r * 2 * dm + c] *= 12.f;
        gu[0] = dm > 1 ? -100.f : gu[0];
        if (dm > 2) gu[1] = 100.f;
        CHECK_OK(be->swiglu(be, ref, gu, rows, dm));
        for (int64_t r = 0; r < rows; r++)
            for (int64_t c = 0; c < dm; c++) {
                double g = gu[r * 2 * dm + c];
                dref[r * dm + c] = (float)(g / (1 + exp(-g)) * gu[r * 2 * dm + dm + c]);
            }
        swiglu_ctx c = {out, gu, rows, dm};
        CHECK(both_orders(run_swiglu, &c, &out, &n, 1));
        char nm[64];
        snprintf(nm, sizeof nm, "swiglu %lldx%lld", (long long)rows, (long long)dm);
        CHECK(ss_test_compare(nm, out, ref, n, 1e-6, 1e-5) == 0);
        CHECK(ss_test_compare("  vs double loop", out, dref, n, 1e-6, 1e-5) == 0);
        /* the 16-bit output (mlp_add's): the fp32 result rounded to nearest even, bit for bit */
        uint16_t *o16 = malloc((size_t)n * sizeof(uint16_t));
        for (int dt = SS_CUDA_F16; dt <= SS_CUDA_BF16; dt++) {
            CHECK(ss_cuda_swiglu_16(o16, dt, gu, rows, dm, NULL) == 0);
            for (int64_t i = 0; i < n; i++)
                CHECK_MSG(o16[i] == (dt == SS_CUDA_BF16 ? ss_f32_to_bf16(out[i]) : ss_f32_to_f16(out[i])),
                          "swiglu_16 %s element %lld: 0x%04x, rounded fp32 0x%04x", dt == SS_CUDA_BF16 ? "bf16" : "fp16",
                          (long long)i, o16[i], dt == SS_CUDA_BF16 ? ss_f32_to_bf16(out[i]) : ss_f32_to_f16(out[i]));
        }
        CHECK(ss_cuda_swiglu_16(o16, SS_CUDA_F32, gu, rows, dm, NULL) == 1); /* not a 16-bit type */
        /* from a 16-bit gate|up (SUBSCOPE_GU16): the fp32 kernel's result on the widened values,
         * rounded, bit for bit */
        uint16_t *g16 = malloc((size_t)(2 * n) * sizeof(uint16_t)), *r16 = malloc((size_t)n * sizeof(uint16_t));
        float *gw = ss_test_fvec(2 * n, 0);
        for (int dt = SS_CUDA_F16; dt <= SS_CUDA_BF16; dt++) {
            for (int64_t i = 0; i < 2 * n; i++) {
                g16[i] = dt == SS_CUDA_BF16 ? ss_f32_to_bf16(gu[i]) : ss_f32_to_f16(gu[i]);
                gw[i] = dt == SS_CUDA_BF16 ? ss_bf16_to_f32(g16[i]) : ss_f16_to_f32(g16[i]);
            }
            CHECK(ss_cuda_swiglu_16(r16, dt, gw, rows, dm, NULL) == 0);
            CHECK(ss_cuda_swiglu_16from16(o16, dt, g16, rows, dm, NULL) == 0);
            CHECK_MSG(!memcmp(o16, r16, (size_t)n * sizeof(uint16_t)), "swiglu_16from16 %s %lldx%lld",
                      dt == SS_CUDA_BF16 ? "bf16" : "fp16", (long long)rows, (long long)dm);
        }
        CHECK(ss_cuda_swiglu_16from16(o16, SS_CUDA_F32, g16, rows, dm, NULL) == 1);
        free(g16), free(r16), free(gw);
        free(o16);
        free(gu); free(out); free(ref); free(dref);
    }
}

/* ---- bias + GELU ------------------------------------------------------- */

typedef struct { float *out; const float *x; const void *bias; int dt; int64_t rows, cols; int act; } ba_ctx;
static void run_ba(void *v) {
    ba_ctx *c = v;
    CHECK(ss_cuda_bias_act(c->out, c->x, c->bias, c->dt, c->rows, c->cols, c->act, NULL) == 0);
}

/* Tolerance: tanhf/erff are within a few ulp; the reference evaluates in
 * double from the same fp32 sum x + bias: atol 1e-6 (near 0 GELU ~ x/2),
 * rtol 1e-5. Without a bias the CPU gelu op is the reference. */
TEST(kernel_bias_gelu_vs_reference) {
    const ss_backend *be = ss_backend_cpu();
    int64_t shapes[][2] = {{1, 1}, {3, 64}, {5, 37}, {2, 1000}};
    for (int si = 0; si < 4; si++) {
        int64_t rows = shapes[si][0], cols = shapes[si][1], n = rows * cols;
        float *x = ss_test_rvec(n, 12, 1.0f), *bias = ss_test_rvec(cols, 13, 1.0f), *b32 = ss_test_fvec(cols, 0);
        for (int64_t i = 0; i < n; i++) x[i] *= 4.f; /* [-4, 4]: both tails of GELU */
        for (int act = SS_CUDA_GELU_TANH; act <= SS_CUDA_ACT_NONE; act++) {
            int dt = (int)((si + act) % 3);
            void *bd = to_dtype(bias, cols, dt, b32);
            float *out = ss_test_fvec(n, 0), *ref = ss_test_fvec(n, 0), *sum = ss_test_fvec(n, 0);
            for (int64_t i = 0; i < n; i++) sum[i] = x[i] + b32[i % cols];
            if (act == SS_CUDA_ACT_NONE) memcpy(ref, sum, (size_t)n * sizeof(float));
            else CHECK_OK(be->gelu(be, ref, sum, n, (ss_act)act));
            ba_ctx c = {out, x, bd, dt, rows, cols, act};
            CHECK(both_orders(run_ba, &c, &out, &n, 1));
            char nm[64];
            static const char *an[] = {"gelu_tanh", "gelu_erf", "bias only"};
            snprintf(nm, sizeof nm, "bias+%s bias %s %lldx%lld", an[act], dt_name[dt], (long long)rows, (long long)cols);
            CHECK(ss_test_compare(nm, out, ref, n, 1e-6, 1e-5) == 0);
            if (act != SS_CUDA_ACT_NONE) { /* no bias, in place, vs the CPU op */
                memcpy(out, x, (size_t)n * sizeof(float));
                CHECK_OK(be->gelu(be, ref, x, n, (ss_act)act));
                CHECK(ss_cuda_bias_act(out, out, NULL, SS_CUDA_F32, rows, cols, act, NULL) == 0);
                snprintf(nm, sizeof nm, "%s no bias, in place %lldx%lld", an[act], (long long)rows, (long long)cols);
                CHECK(ss_test_compare(nm, out, ref, n, 1e-6, 1e-5) == 0);
            }
            free(bd); free(out); free(ref); free(sum);
        }
        free(x); free(bias); free(b32);
    }
}

/* ---- softmax ----------------------------------------------------------- */

typedef struct { float *out; const float *x; int64_t rows, cols; } sm_ctx;
static void run_sm(void *v) { sm_ctx *c = v; CHECK(ss_cuda_softmax(c->out, c->x, c->rows, c->cols, NULL) == 0); }

/* Tolerance: expf is within 1-2 ulp and the fp32 sum of cols terms adds
 * ~cols/32 roundings per lane: rtol 1e-5, atol 1e-8 for tiny probabilities. */
TEST(kernel_softmax_vs_reference) {
    int64_t shapes[][2] = {{1, 1}, {3, 5}, {4, 64}, {5, 333}, {2, 1000}};
    for (int si = 0; si < 5; si++) {
        int64_t rows = shapes[si][0], cols = shapes[si][1], n = rows * cols;
        float *x = ss_test_rvec(n, 14, 1.0f), *out = ss_test_fvec(n, 0), *ref = ss_test_fvec(n, 0);
        for (int64_t i = 0; i < n; i++) x[i] = x[i] * 6.f + (i % cols == 0 ? 50.f : 0.f) * (float)(i / cols % 2); /* odd rows: one logit 50 above */
        if (si == 3) x[cols + 2] = -INFINITY; /* a masked entry */
        for (int64_t r = 0; r < rows; r++) {
            double mx = -INFINITY, s = 0;
            for (int64_t j = 0; j < cols; j++) mx = fmax(mx, x[r * cols + j]);
            for (int64_t j = 0; j < cols; j++) s += exp((double)x[r * cols + j] - mx);
            for (int64_t j = 0; j < cols; j++) ref[r * cols + j] = (float)(exp((double)x[r * cols + j] - mx) / s);
        }
        sm_ctx c = {out, x, rows, cols};
        CHECK(both_orders(run_sm, &c, &out, &n, 1));
        char nm[64];
        snprintf(nm, sizeof nm, "softmax %lldx%lld", (long long)rows, (long long)cols);
        CHECK(ss_test_compare(nm, out, ref, n, 1e-8, 1e-5) == 0);
        CHECK(ss_cuda_softmax(x, x, rows, cols, NULL) == 0); /* in place */
        CHECK(memcmp(x, out, (size_t)n * sizeof(float)) == 0);
        free(x); free(out); free(ref);
    }
}

/* The causal softmax of the cuBLAS attention path, in place over [H, L, L]
 * score blocks: row r sees keys 0..r % L. Against a float64 reference, same
 * tolerance as the softmax above; every entry above the diagonal must be 0. */
/* Entries of [*, L, L] blocks above the diagonal (keys past r % L) that are not exactly 0. */
static int64_t nonzero_above_diagonal(const float *x, int64_t rows, int64_t L) {
    int64_t bad = 0;
    for (int64_t r = 0; r < rows; r++)
        for (int64_t j = r % L + 1; j < L; j++) bad += x[r * L + j] != 0.f;
    return bad;
}

typedef struct { float *x; const float *src; int64_t rows, L; } smc_ctx;
static void run_smc(void *v) {
    smc_ctx *c = v;
    memcpy(c->x, c->src, (size_t)(c->rows * c->L) * sizeof(float));
    CHECK(ss_cuda_softmax_causal(c->x, c->rows, c->L, NULL) == 0);
}

TEST(kernel_softmax_causal_vs_reference) {
    int64_t shapes[][2] = {{1, 1}, {3, 5}, {2, 33}, {1, 100}}; /* heads, L */
    for (int si = 0; si < 4; si++) {
        int64_t L = shapes[si][1], rows = shapes[si][0] * L, n = rows * L;
        float *src = ss_test_rvec(n, 15, 6.0f), *out = ss_test_fvec(n, 0), *ref = ss_test_fvec(n, 0);
        if (L > 3) src[2 * L] = 40.f; /* row 2: the first key far above the second and third */
        ss_ref_softmax_causal(ref, src, rows, L);
        smc_ctx c = {out, src, rows, L};
        CHECK(both_orders(run_smc, &c, &out, &n, 1));
        char nm[64];
        snprintf(nm, sizeof nm, "softmax_causal %lld heads, L=%lld", (long long)shapes[si][0], (long long)L);
        CHECK(ss_test_compare(nm, out, ref, n, 1e-8, 1e-5) == 0);
        CHECK(nonzero_above_diagonal(out, rows, L) == 0);
        free(src); free(out); free(ref);
    }
    CHECK(ss_cuda_softmax_causal(NULL, 0, 5, NULL) == 0); /* nothing to do */
}

/* Its backward (the cuBLAS attention backward): ds = scale P (dP - D),
 * D = sum_{j <= i} P_j dP_j, against double; above the diagonal dP holds
 * 1e3 (what the product left there is not a gradient) and the result must be
 * 0. fp32 sums of up to L terms |P dP| <= 1: atol 1e-6 + rtol 1e-5. */
typedef struct { float *ds; const float *dp0, *p; int64_t rows, L; float scale; } smcb_ctx;
static void run_smcb(void *v) {
    smcb_ctx *c = v;
    memcpy(c->ds, c->dp0, (size_t)(c->rows * c->L) * sizeof(float));
    CHECK(ss_cuda_softmax_causal_backward(c->ds, c->p, c->rows, c->L, c->scale, NULL) == 0);
}

TEST(kernel_softmax_causal_backward_vs_reference) {
    int64_t shapes[][2] = {{1, 1}, {3, 5}, {2, 33}, {1, 100}}; /* heads, L */
    const float scale = 0.3f;
    for (int si = 0; si < 4; si++) {
        int64_t L = shapes[si][1], rows = shapes[si][0] * L, n = rows * L;
        float *sc = ss_test_rvec(n, 16, 4.0f), *p = ss_test_fvec(n, 0), *dp = ss_test_rvec(n, 17, 1.0f);
        float *out = ss_test_fvec(n, 0), *ref = ss_test_fvec(n, 0);
        ss_ref_softmax_causal(p, sc, rows, L);
        for (int64_t r = 0; r < rows; r++)
            for (int64_t j = r % L + 1; j < L; j++) dp[r * L + j] = 1e3f;
        ss_ref_softmax_causal_backward(ref, p, dp, rows, L, scale);
        smcb_ctx c = {out, dp, p, rows, L, scale};
        CHECK(both_orders(run_smcb, &c, &out, &n, 1));
        char nm[64];
        snprintf(nm, sizeof nm, "softmax_causal_backward %lld heads, L=%lld", (long long)shapes[si][0], (long long)L);
        CHECK(ss_test_compare(nm, out, ref, n, 1e-6, 1e-5) == 0);
        CHECK(nonzero_above_diagonal(out, rows, L) == 0);
        free(sc), free(p), free(dp), free(out), free(ref);
    }
    CHECK(ss_cuda_softmax_causal_backward(NULL, NULL, 0, 5, 1.f, NULL) == 0); /* nothing to do */
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
/* Rows of qkv are [q (H heads) | k (Hkv heads) | v (Hkv heads)], as a fused
 * projection of a grouped-query model lays them out. */
static void run_att(void *v) {
    att_ctx *c = v;
    const float *q = c->qkv, *k = q + c->H * c->dh, *vv = k + c->Hkv * c->dh;
    if (c->flash)
        CHECK(ss_cuda_attention_flash(c->z, q, k, vv, c->ld, c->n_seq, c->start, c->len, c->max_len, c->H, c->Hkv,
                                      c->dh, c->scale, NULL) == 0);
    else
        CHECK(ss_cuda_attention_pattern(c->z, c->pat, q, k, vv, c->ld, c->n_seq, c->start, c->len, c->poff,
                                        c->max_len, c->H, c->Hkv, c->dh, c->scale, NULL) == 0);
}

/* The tensor-core attention (kernels/flash_attention_tc.cu: bf16 products,
 * fp32 accumulation and softmax; the products emulated by mma.cuh) against
 * the CPU op given the same bf16 operands: q*scale, k and v rounded to bf16
 * (and scale 1). What remains is the probabilities' rounding to bf16 before
 * P.V, at most 2^-9 of each weight, against a normaliser summed unrounded:
 * |dz| <= 2 * 2^-9 * max|v| = 4e-3 for |v| <= 1. q and k are scaled by 3 so
 * that the softmax is peaked and a masking or indexing error moves z by O(0.1). */
static float bf16r(float x) { return ss_bf16_to_f32(ss_f32_to_bf16(x)); }

/* The kernel with its workspace allocated here, poisoned with bf16 NaNs so
 * that reading a row the pack kernel did not write shows up. */
static int tc_call(float *z, const float *q, const float *k, const float *v, int64_t ld, int64_t n_seq,
                   const int64_t *start, const int64_t *len, int64_t max_len, int64_t H, int64_t Hkv, int64_t dh,
                   float scale, int qt, cudaStream_t stream) {
    int64_t n_rows = 0;
    for (int64_t sq = 0; sq < n_seq; sq++)
        if (start[sq] + len[sq] > n_rows) n_rows = start[sq] + len[sq];
    size_t bytes = (size_t)ss_cuda_attention_flash_bf16_ws(n_rows, H, Hkv, dh) * sizeof(uint16_t);
    bytes = (bytes + 15) / 16 * 16 + 16;
    void *ws = aligned_alloc(16, bytes);
    memset(ws, 0xff, bytes);
    int r = ss_cuda_attention_flash_bf16(z, SS_CUDA_F32, q, k, v, ld, n_seq, start, len, max_len, n_rows, H, Hkv, dh,
                                         scale, ws, qt, stream);
    free(ws);
    return r;
}

/* The shapes include ones that run the two-buffer pipeline over many key
 * tiles (and the 32-key tiles at dh 128) and an ld that is not a multiple
 * of 4 floats. */
static void attention_tc_vs_cpu(void) {
    const ss_backend *be = ss_backend_cpu();
    struct { int n_seq; int64_t len[3]; int64_t H, Hkv, dh, pad; } cases[] = {
        {2, {70, 5}, 2, 1, 64, 0},     /* two query tiles, a partial key tile, grouped-query */
        {1, {20}, 2, 2, 128, 0},       /* dh 128 */
        {3, {1, 64, 65}, 1, 1, 64, 0}, /* one token; exactly one tile; one past it */
        {2, {130, 40}, 2, 1, 128, 0},  /* dh 128: three query tiles, five 32-key tiles */
        {2, {200, 3}, 1, 1, 64, 3},    /* four key tiles through both buffers; an odd ld */
    };
    for (int ci = 0; ci < (int)(sizeof cases / sizeof cases[0]); ci++) {
        int64_t H = cases[ci].H, Hkv = cases[ci].Hkv, dh = cases[ci].dh, d = H * dh,
                ld = (H + 2 * Hkv) * dh + cases[ci].pad;
        int64_t n_seq = cases[ci].n_seq, start[3], len[3], rows = 0, max_len = 0;
        for (int sq = 0; sq < n_seq; sq++) {
            len[sq] = cases[ci].len[sq], start[sq] = rows, rows += len[sq];
            if (len[sq] > max_len) max_len = len[sq];
        }
        float *qkv = ss_test_rvec(rows * ld, 40 + (unsigned)ci, 1.0f), *r = ss_test_fvec(rows * ld, 0);
        float *z = ss_test_fvec(rows * d, 0), *zr = ss_test_fvec(rows * d, 0);
        const float scale = (float)(1.0 / sqrt((double)dh));
        for (int64_t i = 0; i < rows; i++)
            for (int64_t e = 0; e < ld; e++) {
                float x = qkv[i * ld + e] * (e < d + Hkv * dh ? 3.f : 1.f); /* q and k peaked, v in [-1, 1] */
                qkv[i * ld + e] = x;
                r[i * ld + e] = bf16r(e < d ? x * scale : x);
            }
        CHECK_OK(be->attention(be, zr, r, r + d, r + d + Hkv * dh, ld, n_seq, start, len, H, Hkv, dh, 1.f, NULL, NULL));
        /* every output written (NaN poison), the same in both schedules bit for bit */
        float *z2 = ss_test_fvec(rows * d, NAN);
        for (int64_t i = 0; i < rows * d; i++) z[i] = NAN;
        CHECK(tc_call(z, qkv, qkv + d, qkv + d + Hkv * dh, ld, n_seq, start, len, max_len, H, Hkv, dh, scale, 1, NULL) == 0);
        /* the second run also lands cp.async copies when issued (not at their
         * wait): a buffer reloaded before every warp has read it differs */
        ss_emu_set_schedule(SS_EMU_REVERSE, 0);
        ss_emu_set_copy_timing(SS_EMU_COPY_AT_ISSUE);
        CHECK(tc_call(z2, qkv, qkv + d, qkv + d + Hkv * dh, ld, n_seq, start, len, max_len, H, Hkv, dh, scale, 1, NULL) == 0);
        ss_emu_set_schedule(SS_EMU_FORWARD, 0);
        ss_emu_set_copy_timing(SS_EMU_COPY_AT_WAIT);
        CHECK(memcmp(z2, z, (size_t)(rows * d) * sizeof(float)) == 0);
        /* two query tiles per warp (128-row blocks): every output, the same bit for bit,
         * also with the copies landing at issue */
        for (int pass = 0; pass < 2; pass++) {
            for (int64_t i = 0; i < rows * d; i++) z2[i] = NAN;
            if (pass) ss_emu_set_copy_timing(SS_EMU_COPY_AT_ISSUE);
            CHECK(tc_call(z2, qkv, qkv + d, qkv + d + Hkv * dh, ld, n_seq, start, len, max_len, H, Hkv, dh, scale, 2,
                          NULL) == 0);
            ss_emu_set_copy_timing(SS_EMU_COPY_AT_WAIT);
            CHECK_MSG(!memcmp(z2, z, (size_t)(rows * d) * sizeof(float)),
                      "case %d: two query tiles per warp differ from one (copies at %s)", ci, pass ? "issue" : "wait");
        }
        free(z2);
        char nm[96];
        snprintf(nm, sizeof nm, "attention tc bf16 seqs=%d H=%lld Hkv=%lld dh=%lld", (int)n_seq, (long long)H,
                 (long long)Hkv, (long long)dh);
        CHECK(ss_test_compare(nm, z, zr, rows * d, 4e-3, 0) == 0);
        free(qkv), free(r), free(z), free(zr);
    }
    float one = 0.f;
    const int64_t st0 = 0, l0 = 1;
    CHECK(tc_call(&one, &one, &one, &one, 96, 1, &st0, &l0, 1, 1, 1, 96, 1.f, 1, NULL) == 1); /* dh 96 */
    CHECK(tc_call(&one, &one, &one, &one, 192, 1, &st0, &l0, 1, 1, 1, 64, 1.f, 3, NULL) == 1); /* 3 query tiles */
}

/* The kernel from bf16 rows a product wrote (ss_cuda_attention_flash_bf16_from16):
 * Q unscaled, the scale applied to the fp32 scores. Against the CPU op given the same bf16
 * operands and the scale: the bound above. At dh 64 the scale is 1/8, a power of two, so
 * the result equals the pack path's bit for bit (bf16(q)/8 = bf16(q/8)). GQA, two sequences. */
static void attention_tc_from16(int64_t dh) {
    const ss_backend *be = ss_backend_cpu();
    const int64_t H = 2, Hkv = 1, d = H * dh, ld = (H + 2 * Hkv) * dh, n_seq = 2, start[2] = {0, 70}, len[2] = {70, 9},
                  rows = 79;
    const float scale = (float)(1.0 / sqrt((double)dh));
    float *x = ss_test_rvec(rows * ld, 77, 1.f), *r = ss_test_fvec(rows * ld, 0), *z = ss_test_fvec(rows * d, NAN),
          *zr = ss_test_fvec(rows * d, 0), *zp = ss_test_fvec(rows * d, NAN);
    uint16_t *q16 = aligned_alloc(16, (size_t)(rows * ld) * sizeof(uint16_t));
    for (int64_t i = 0; i < rows * ld; i++) {
        x[i] *= i % ld < d + Hkv * dh ? 3.f : 1.f;
        q16[i] = ss_f32_to_bf16(x[i]);
        r[i] = ss_bf16_to_f32(q16[i]);
    }
    CHECK_OK(be->attention(be, zr, r, r + d, r + d + Hkv * dh, ld, n_seq, start, len, H, Hkv, dh, scale, NULL, NULL));
    CHECK(ss_cuda_attention_flash_bf16_from16(z, SS_CUDA_F32, q16, ld, n_seq, start, len, 70, H, Hkv, dh, scale, 1,
                                              NULL) == 0);
    float *z2 = ss_test_fvec(rows * d, NAN);
    CHECK(ss_cuda_attention_flash_bf16_from16(z2, SS_CUDA_F32, q16, ld, n_seq, start, len, 70, H, Hkv, dh, scale, 2,
                                              NULL) == 0);
    CHECK_MSG(!memcmp(z, z2, (size_t)(rows * d) * sizeof(float)), "dh %lld: two query tiles per warp differ",
              (long long)dh);
    free(z2);
    char nm[64];
    snprintf(nm, sizeof nm, "attention tc from bf16 rows, dh=%lld", (long long)dh);
    CHECK(ss_test_compare(nm, z, zr, rows * d, 4e-3, 0) == 0);
    /* z written in bf16: the fp32 values rounded to nearest even, bit for bit (the
     * conversion that the output product's 16-bit path applies otherwise) */
    uint16_t *z16 = aligned_alloc(16, (size_t)(rows * d) * sizeof(uint16_t));
    memset(z16, 0xff, (size_t)(rows * d) * sizeof(uint16_t));
    CHECK(ss_cuda_attention_flash_bf16_from16(z16, SS_CUDA_BF16, q16, ld, n_seq, start, len, 70, H, Hkv, dh, scale,
                                              2, NULL) == 0);
    int64_t off16 = 0;
    for (int64_t i = 0; i < rows * d; i++) off16 += z16[i] != ss_f32_to_bf16(z[i]);
    CHECK_MSG(off16 == 0, "%lld bf16 outputs differ from the rounded fp32 ones", (long long)off16);
    CHECK(ss_cuda_attention_flash_bf16_from16(z16, 7, q16, ld, n_seq, start, len, 70, H, Hkv, dh, scale, 1, NULL) ==
          1); /* an output type that is neither */
    free(z16);
    if (dh == 64) {
        CHECK(tc_call(zp, x, x + d, x + d + Hkv * dh, ld, n_seq, start, len, 70, H, Hkv, dh, scale, 1, NULL) == 0);
        CHECK_MSG(!memcmp(z, zp, (size_t)(rows * d) * sizeof(float)), "dh 64: not the pack path's result bit for bit");
    }
    CHECK(ss_cuda_attention_flash_bf16_from16(z, SS_CUDA_F32, q16, ld + 4, n_seq, start, len, 70, H, Hkv, dh, scale,
                                              1, NULL) == 1); /* rows not 16-byte multiples */
    free(x), free(r), free(z), free(zr), free(zp), free(q16);
}

TEST(kernel_attention_tc_bf16_vs_cpu) {
    attention_tc_vs_cpu();
    attention_tc_from16(64);
    attention_tc_from16(128);
    /* a workspace that is not 16-byte aligned is refused */
    float x[3 * 64] = {0};
    const int64_t st0 = 0, l0 = 1;
    uint16_t ws[3 * 64 + 8];
    void *odd = (char *)ws + ((uintptr_t)ws % 16 ? 0 : 2);
    CHECK(ss_cuda_attention_flash_bf16(x, SS_CUDA_F32, x, x + 64, x + 128, 192, 1, &st0, &l0, 1, 1, 1, 1, 64, 0.125f,
                                       odd, 1, NULL) == 1);
}

/* Tolerance: fp32 dot products of dh terms and an fp32 online softmax
 * against the CPU op's double accumulation; with |q|,|k|,|v| <= 1 the
 * scores and z are O(1) and the errors O(1e-6): atol 1e-5, rtol 1e-4.
 * Grouped-query cases (Hkv < H) compare with the CPU op at the same Hkv: a
 * query head reading the wrong key/value head moves z by O(1). */
TEST(kernel_attention_vs_cpu_packed_sequences) {
    const ss_backend *be = ss_backend_cpu();
    struct { int n_seq; int64_t len[4]; int64_t H, Hkv, dh; } cases[] = {
        {1, {1}, 1, 1, 8},               /* one token */
        {3, {1, 37, 70}, 2, 2, 16},      /* several packed sequences; 70 spans 3 tiles of 32 */
        {2, {33, 5}, 1, 1, 40},          /* dh not a multiple of 32 */
        {1, {45}, 2, 2, 64},
        {2, {20, 3}, 1, 1, 136},         /* dh > 120: above 48 KB of shared memory (opt-in) */
        {4, {130, 64, 2, 97}, 3, 3, 32}, /* longer: 130 keys span 5 tiles */
        {2, {35, 7}, 8, 2, 16},          /* grouped-query: 4 query heads per key/value head, odd lengths */
        {3, {1, 41, 33}, 4, 1, 24},      /* multi-query: one key/value head */
        {1, {19}, 6, 3, 40},             /* groups of 2, dh not a multiple of 32 */
    };
    int ncase = (int)(sizeof cases / sizeof cases[0]);
    for (int ci = 0; ci < ncase; ci++) {
        int64_t H = cases[ci].H, Hkv = cases[ci].Hkv, dh = cases[ci].dh, d = H * dh, ld = (H + 2 * Hkv) * dh;
        int64_t n_seq = cases[ci].n_seq;
        int64_t start[4], len[4], poff[4], rows = 0, pt = 0, max_len = 0;
        for (int s = 0; s < n_seq; s++) {
            len[s] = cases[ci].len[s];
            start[s] = rows;
            rows += len[s];
            poff[s] = pt;
            pt += H * len[s] * len[s];
            if (len[s] > max_len) max_len = len[s];
        }
        float *qkv = ss_test_rvec(rows * ld, 15 + (unsigned)ci, 1.0f), *z = ss_test_fvec(rows * d, 0), *zr = ss_test_fvec(rows * d, 0);
        float *pat = ss_test_fvec(pt, 0), *patr = ss_test_fvec(pt, 0);
        float scale = (float)(1.0 / sqrt((double)dh));
        CHECK_OK(be->attention(be, zr, qkv, qkv + d, qkv + d + Hkv * dh, ld, n_seq, start, len, H, Hkv, dh, scale, patr,
                               poff));
        char nm[96];
        att_ctx c = {z, pat, qkv, ld, n_seq, max_len, H, Hkv, dh, start, len, poff, scale, 0};
        float *outs[2] = {z, pat};
        int64_t sizes[2] = {rows * d, pt};
        CHECK(both_orders(run_att, &c, outs, sizes, 2));
        snprintf(nm, sizeof nm, "attention+pattern z   seqs=%d H=%lld Hkv=%lld dh=%lld max_len=%lld", (int)n_seq,
                 (long long)H, (long long)Hkv, (long long)dh, (long long)max_len);
        CHECK(ss_test_compare(nm, z, zr, rows * d, 1e-5, 1e-4) == 0);
        snprintf(nm, sizeof nm, "attention+pattern pat seqs=%d H=%lld Hkv=%lld dh=%lld", (int)n_seq, (long long)H,
                 (long long)Hkv, (long long)dh);
        CHECK(ss_test_compare(nm, pat, patr, pt, 1e-6, 1e-4) == 0);
        c.flash = 1;
        CHECK(both_orders(run_att, &c, outs, sizes, 1));
        snprintf(nm, sizeof nm, "flash attention z     seqs=%d H=%lld Hkv=%lld dh=%lld max_len=%lld", (int)n_seq,
                 (long long)H, (long long)Hkv, (long long)dh, (long long)max_len);
        CHECK(ss_test_compare(nm, z, zr, rows * d, 1e-5, 1e-4) == 0);
        free(qkv); free(z); free(zr); free(pat); free(patr);
    }
    /* what the kernels cannot do is refused, not mis-computed: dh above the
     * register budget, a key/value head count that does not divide H */
    int64_t st = 0, ln = 1;
    float buf[64];
    CHECK(ss_cuda_attention_flash(NULL, NULL, NULL, NULL, 3 * 257, 1, &st, &ln, 1, 1, 1, 257, 1.f, NULL) == 1);
    CHECK(ss_cuda_attention_flash(buf, buf, buf, buf, 16, 1, &st, &ln, 1, 4, 3, 4, 1.f, NULL) == 1);
    CHECK(ss_cuda_attention_flash(buf, buf, buf, buf, 16, 1, &st, &ln, 1, 4, 0, 4, 1.f, NULL) == 1);
    CHECK(ss_cuda_attention_pattern(buf, buf, buf, buf, buf, 16, 1, &st, &ln, &st, 1, 4, 3, 4, 1.f, NULL) == 1);
}

/* ---- attention against a key/value cache (kernels/attention_kv.cu) ---- */

typedef struct {
    float *z;
    const float *q;
    const void *k, *v; /* dt elements */
    int dt;
    int64_t ld_q, ld_kv, n_q, q0, H, Hkv, dh;
    float scale;
    int64_t splits; /* 1: a block per (row, head); more: the keys split, partials in ws */
    float *ws;
} akv_ctx;
/* Rows of the cache are [k (Hkv heads) | v (Hkv heads)] as the forward lays
 * them out; q rows are the queries of a fused projection (stride ld_q). */
static void run_akv(void *v) {
    akv_ctx *c = v;
    CHECK(ss_cuda_attention_kv(c->z, c->q, c->ld_q, c->k, c->v, c->dt, c->ld_kv, c->n_q, c->q0, c->H, c->Hkv, c->dh,
                               c->scale, c->splits, c->ws, NULL) == 0);
}

/* Against the CPU op (attention's own task with the queries offset by q0),
 * atol 1e-5, rtol 1e-4 as attention's: fp32 dot products and an online
 * softmax against the CPU's double sum. Inputs of amplitude 2.5 make scores
 * of ~+-10, peaked patterns where a wrong key or mask moves z by O(1). Key
 * counts 1, 33, 201, 1000 (not multiples of the 32-key chunks or of the
 * block's 128), one and several query rows, groups of 1, 2, 4. */
TEST(kernel_attention_kv_vs_cpu) {
    const ss_backend *be = ss_backend_cpu();
    struct { int64_t n_q, q0, H, Hkv, dh; } cases[] = {
        {1, 0, 1, 1, 8},      /* one token, nothing cached */
        {1, 200, 4, 2, 64},   /* one new row after 200 cached */
        {5, 37, 6, 3, 80},    /* several rows, dh 80 */
        {3, 130, 2, 2, 128},
        {33, 0, 2, 1, 7},     /* a prompt pass: q0 0, odd small dh, multi-query */
        {1, 999, 8, 2, 16},   /* a long context */
        {2, 40, 2, 1, 256},   /* the largest dh */
    };
    for (int ci = 0; ci < (int)(sizeof cases / sizeof cases[0]); ci++) {
        const int64_t n_q = cases[ci].n_q, q0 = cases[ci].q0, H = cases[ci].H, Hkv = cases[ci].Hkv,
                      dh = cases[ci].dh, nk = q0 + n_q, ld_q = (H + 2 * Hkv) * dh, ld_kv = 2 * Hkv * dh;
        float *q = ss_test_rvec(n_q * ld_q, 70 + (unsigned)ci, 2.5f), *kv = ss_test_rvec(nk * ld_kv, 90 + (unsigned)ci, 2.5f);
        float *z = ss_test_fvec(n_q * H * dh, 0), *zr = ss_test_fvec(n_q * H * dh, 0);
        const float scale = (float)(1.0 / sqrt((double)dh));
        CHECK_OK(be->attention_kv(be, zr, q, ld_q, kv, kv + Hkv * dh, SS_WDTYPE_F32, ld_kv, n_q, q0, H, Hkv, dh, scale));
        akv_ctx c = {z, q, kv, kv + Hkv * dh, SS_CUDA_F32, ld_q, ld_kv, n_q, q0, H, Hkv, dh, scale, 1, NULL};
        int64_t size = n_q * H * dh;
        CHECK(both_orders(run_akv, &c, &z, &size, 1));
        char nm[96];
        snprintf(nm, sizeof nm, "attention_kv n_q=%lld q0=%lld H=%lld Hkv=%lld dh=%lld", (long long)n_q, (long long)q0,
                 (long long)H, (long long)Hkv, (long long)dh);
        CHECK(ss_test_compare(nm, z, zr, size, 1e-5, 1e-4) == 0);
        free(q); free(kv); free(z); free(zr);
    }
    /* refused, not mis-computed: dh above 256, key/value heads not dividing H */
    float buf[64];
    CHECK(ss_cuda_attention_kv(buf, buf, 3 * 257, buf, buf, SS_CUDA_F32, 2 * 257, 1, 0, 1, 1, 257, 1.f, 1, NULL, NULL) == 1);
    CHECK(ss_cuda_attention_kv(buf, buf, 16, buf, buf, SS_CUDA_F32, 8, 1, 0, 4, 3, 4, 1.f, 1, NULL, NULL) == 1);
    CHECK(ss_cuda_attention_kv(buf, buf, 16, buf, buf, SS_CUDA_F32, 8, 1, 0, 4, 0, 4, 1.f, 1, NULL, NULL) == 1);
    CHECK(ss_cuda_attention_kv(buf, buf, 16, buf, buf, SS_CUDA_F32, 8, 0, 0, 4, 1, 4, 1.f, 1, NULL, NULL) == 0); /* no rows: nothing */
}

/* The keys split over blocks (flash-decoding: partial softmaxes merged by a
 * second kernel), forced at several counts, against the CPU op at the same
 * tolerance: chunks of 32 keys rounded up, so 201 keys in 2, 3 (the last 9
 * keys) and 4 (asked 5) splits; a split of one key (33 keys); 40 rows of a
 * prompt, whose first rows have one key and empty later splits; GQA groups
 * of 2 and 4, dh 7 to 256, 1000 keys in 7 splits. The workspace is allocated
 * at exactly ss_cuda_attention_kv_ws's size (ASan sees an overrun), and the
 * merge kernel must have run once a launch (ss_emu_launch_count). Then the
 * automatic count: split where a row's H blocks leave the SMs idle
 * (emulation: 16 SMs) and the keys reach 512, not otherwise. */
TEST(kernel_attention_kv_split_vs_cpu) {
    const ss_backend *be = ss_backend_cpu();
    struct { int64_t n_q, q0, H, Hkv, dh, splits, S; } cases[] = {
        {1, 200, 4, 2, 64, 2, 2},  {1, 200, 4, 2, 64, 3, 3},  {1, 200, 4, 2, 64, 5, 4}, /* S: the splits made */
        {1, 32, 2, 1, 16, 2, 2},   /* the second split has one key */
        {40, 0, 2, 2, 8, 2, 2},    /* rows of 1..40 keys: rows 0..31 have an empty second split */
        {5, 37, 6, 3, 80, 4, 2},   /* 42 keys: at most two chunks of 32 */
        {3, 130, 2, 2, 128, 3, 3}, {33, 0, 2, 1, 7, 2, 2},  {1, 999, 8, 2, 16, 7, 7},
        {2, 40, 2, 1, 256, 2, 2},
    };
    for (int ci = 0; ci < (int)(sizeof cases / sizeof cases[0]); ci++) {
        const int64_t n_q = cases[ci].n_q, q0 = cases[ci].q0, H = cases[ci].H, Hkv = cases[ci].Hkv,
                      dh = cases[ci].dh, splits = cases[ci].splits, nk = q0 + n_q, ld_q = (H + 2 * Hkv) * dh,
                      ld_kv = 2 * Hkv * dh;
        float *q = ss_test_rvec(n_q * ld_q, 170 + (unsigned)ci, 2.5f), *kv = ss_test_rvec(nk * ld_kv, 190 + (unsigned)ci, 2.5f);
        float *z = ss_test_fvec(n_q * H * dh, 0), *zr = ss_test_fvec(n_q * H * dh, 0);
        const int64_t nws = ss_cuda_attention_kv_ws(n_q, q0, H, dh, splits);
        CHECK(nws == n_q * H * cases[ci].S * (dh + 2));
        float *ws = malloc((size_t)nws * sizeof(float));
        const float scale = (float)(1.0 / sqrt((double)dh));
        CHECK_OK(be->attention_kv(be, zr, q, ld_q, kv, kv + Hkv * dh, SS_WDTYPE_F32, ld_kv, n_q, q0, H, Hkv, dh, scale));
        akv_ctx c = {z, q, kv, kv + Hkv * dh, SS_CUDA_F32, ld_q, ld_kv, n_q, q0, H, Hkv, dh, scale, splits, ws};
        int64_t size = n_q * H * dh;
        const long merges = ss_emu_launch_count("ss_k_attn_kv_merge");
        CHECK(both_orders(run_akv, &c, &z, &size, 1));
        CHECK(ss_emu_launch_count("ss_k_attn_kv_merge") == merges + 2);
        char nm[112];
        snprintf(nm, sizeof nm, "attention_kv split %lld/%lld n_q=%lld q0=%lld H=%lld Hkv=%lld dh=%lld",
                 (long long)cases[ci].S, (long long)splits, (long long)n_q, (long long)q0, (long long)H, (long long)Hkv,
                 (long long)dh);
        CHECK(ss_test_compare(nm, z, zr, size, 1e-5, 1e-4) == 0);
        free(q); free(kv); free(z); free(zr); free(ws);
    }
    /* the automatic count: 1 row x 2 heads x 1000 keys: min(ceil(4*16/2), 1000/256) = 3 */
    CHECK(ss_cuda_attention_kv_splits(1, 999, 2) == 3);
    CHECK(ss_cuda_attention_kv_splits(1, 510, 2) == 1);   /* 511 keys: short */
    CHECK(ss_cuda_attention_kv_splits(1, 511, 2) == 2);   /* 512 */
    CHECK(ss_cuda_attention_kv_splits(2, 4094, 8) == 1);  /* 16 blocks fill the 16 SMs */
    CHECK(ss_cuda_attention_kv_splits(1, 4095, 12) == 6); /* ceil(64/12) */
    CHECK(ss_cuda_attention_kv_ws(1, 999, 2, 64, 1) == 0);
    CHECK(ss_cuda_attention_kv_ws(1, 0, 2, 64, 4) == 0); /* one key: no split */
    /* A forced count past the grid's z, and sizes past int64, are refused (-1) as the launch is;
     * they were sized: 2^21 keys in 65536 splits of 32 (65535 the most), 2^31 rows x 65535 heads
     * x 2^15 splits x 258 floats wrapped around, 2^30 x 4096 x 4096 x 258 floats (2^62) whose
     * bytes do not fit, and q0 + n_q past int64 / 2, which akv_chunk's rounding would overflow. */
    CHECK(ss_cuda_attention_kv_ws(1, 65535 * 32 - 1, 1, 64, 65535) == (int64_t)65535 * 66); /* the most */
    CHECK(ss_cuda_attention_kv_ws(1, ((int64_t)1 << 21) - 1, 1, 64, 65536) == -1);
    CHECK(ss_cuda_attention_kv_ws(0x7fffffff, (int64_t)1 << 40, 65535, 256, 32768) == -1);
    CHECK(ss_cuda_attention_kv_ws((int64_t)1 << 30, ((int64_t)1 << 40) - ((int64_t)1 << 30), 4096, 256, 4096) == -1);
    CHECK(ss_cuda_attention_kv_ws(1, INT64_MAX - 1, 1, 64, 2) == -1);
    /* a split without its workspace, or beyond the grid's 65535, is refused */
    float buf[64];
    CHECK(ss_cuda_attention_kv(buf, buf, 16, buf, buf, SS_CUDA_F32, 8, 1, 63, 4, 1, 4, 1.f, 2, NULL, NULL) == 1);
    CHECK(ss_cuda_attention_kv(buf, buf, 16, buf, buf, SS_CUDA_F32, 8, 1, 63, 4, 1, 4, 1.f, 65536, buf, NULL) == 1);
}

/* A 16-bit model's cache (bf16, fp16: half the bytes of fp32) read by the
 * same kernel, one block and the keys split (forced), against the CPU op
 * given the same 16-bit cache at attention's tolerance; the CPU op on the
 * 16-bit cache is, bit for bit, the op on its exact fp32 widening (the
 * reference widens and does nothing else). GQA groups of 1, 2 and 4, odd dh
 * (7, 33) up to 256, 1000 keys in 7 splits, a prompt's 40 rows in 2. A dtype
 * outside the three is refused by both. */
TEST(kernel_attention_kv_16bit_vs_cpu) {
    const ss_backend *be = ss_backend_cpu();
    struct { int64_t n_q, q0, H, Hkv, dh, splits; } cases[] = {
        {1, 200, 4, 2, 64, 1}, {1, 200, 4, 2, 64, 3}, {5, 37, 6, 3, 80, 4}, {33, 0, 2, 1, 7, 2},
        {1, 999, 8, 2, 16, 7}, {40, 0, 2, 2, 8, 2},   {2, 40, 2, 1, 256, 2}, {3, 130, 8, 2, 33, 1},
    };
    const int dts[] = {SS_WDTYPE_BF16, SS_WDTYPE_F16};
    for (int di = 0; di < 2; di++)
        for (int ci = 0; ci < (int)(sizeof cases / sizeof cases[0]); ci++) {
            const int dt = dts[di];
            const int64_t n_q = cases[ci].n_q, q0 = cases[ci].q0, H = cases[ci].H, Hkv = cases[ci].Hkv,
                          dh = cases[ci].dh, splits = cases[ci].splits, nk = q0 + n_q, ld_q = (H + 2 * Hkv) * dh,
                          ld_kv = 2 * Hkv * dh, size = n_q * H * dh;
            float *q = ss_test_rvec(n_q * ld_q, 270 + (unsigned)ci, 2.5f), *kv = ss_test_rvec(nk * ld_kv, 290 + (unsigned)ci, 2.5f);
            uint16_t *kv16 = malloc((size_t)(nk * ld_kv) * sizeof(uint16_t));
            for (int64_t i = 0; i < nk * ld_kv; i++) {
                kv16[i] = dt == SS_WDTYPE_BF16 ? ss_f32_to_bf16(kv[i]) : ss_f32_to_f16(kv[i]);
                kv[i] = dt == SS_WDTYPE_BF16 ? ss_bf16_to_f32(kv16[i]) : ss_f16_to_f32(kv16[i]); /* the widening */
            }
            float *z = ss_test_fvec(size, 0), *zr = ss_test_fvec(size, 0), *zw = ss_test_fvec(size, 0);
            const int64_t nws = ss_cuda_attention_kv_ws(n_q, q0, H, dh, splits);
            float *ws = nws ? malloc((size_t)nws * sizeof(float)) : NULL;
            const float scale = (float)(1.0 / sqrt((double)dh));
            CHECK_OK(be->attention_kv(be, zr, q, ld_q, kv16, kv16 + Hkv * dh, dt, ld_kv, n_q, q0, H, Hkv, dh, scale));
            CHECK_OK(be->attention_kv(be, zw, q, ld_q, kv, kv + Hkv * dh, SS_WDTYPE_F32, ld_kv, n_q, q0, H, Hkv, dh, scale));
            CHECK(memcmp(zr, zw, (size_t)size * sizeof(float)) == 0);
            akv_ctx c = {z, q, kv16, kv16 + Hkv * dh, dt, ld_q, ld_kv, n_q, q0, H, Hkv, dh, scale, splits, ws};
            int64_t sz = size;
            CHECK(both_orders(run_akv, &c, &z, &sz, 1));
            char nm[120];
            snprintf(nm, sizeof nm, "attention_kv %s splits %lld n_q=%lld q0=%lld H=%lld Hkv=%lld dh=%lld",
                     dt == SS_WDTYPE_BF16 ? "bf16" : "fp16", (long long)splits, (long long)n_q, (long long)q0,
                     (long long)H, (long long)Hkv, (long long)dh);
            CHECK(ss_test_compare(nm, z, zr, size, 1e-5, 1e-4) == 0);
            free(q); free(kv); free(kv16); free(z); free(zr); free(zw); free(ws);
        }
    float buf[64];
    CHECK(ss_cuda_attention_kv(buf, buf, 16, buf, buf, 3, 8, 1, 0, 4, 1, 4, 1.f, 1, NULL, NULL) == 1);
    CHECK(ss_cuda_attention_kv(buf, buf, 16, buf, buf, -1, 8, 1, 0, 4, 1, 4, 1.f, 1, NULL, NULL) == 1);
    ss_status st = be->attention_kv(be, buf, buf, 16, buf, buf, 3, 8, 1, 0, 4, 1, 4, 1.f);
    CHECK(st == SS_ERR_ARG);
    ss_error_clear();
}

/* ---- batch covariance: column means, lower-triangular X^T X ------------ */

typedef struct {
    double *m64;
    float *m32;
    const void *x;
    int dt;
    int64_t ld;
    const int64_t *rows;
    int64_t n, d;
    double *ws;
} cm_ctx;
static void run_cm(void *v) {
    cm_ctx *c = v;
    CHECK(ss_cuda_colmean(c->m64, c->m32, c->x, c->dt, c->ld, c->rows, c->n, c->d, c->ws, NULL) == 0);
}

/* The mean is checked against an fp64 sum of the same (dtype-rounded)
 * values with rtol 1e-12: the kernel sums in fp64, whose rounding over n <=
 * 1000 terms is ~1e-13 relative at worst; an fp32 sum of 1000 values near
 * 100 (the offset below) would be ~1e-5 off and fail. With a row list, the
 * batch's rows are x's rows in another order, some twice, some not at all.
 * With a workspace, 2500 rows are summed in three slices (1024, 1024, 452),
 * then the slices in order; without one, in one pass. */
TEST(kernel_colmean_fp64_sum) {
    int64_t shapes[][3] = {{1, 1, 1}, {1000, 70, 73}, {37, 33, 33}, {5, 130, 131}, {2500, 70, 73}};
    CHECK(ss_cuda_colmean_ws(1024, 70) == 0 && ss_cuda_colmean_ws(2500, 70) == 3 * 70 * 8 &&
          ss_cuda_colmean_ws(1 << 20, 8) == 16 * 8 * 8 && ss_cuda_colmean_ws(0, 8) == 0);
    for (int si = 0; si < 5; si++)
        for (int with_rows = 0; with_rows <= 1; with_rows++)
        for (int with_ws = 0; with_ws <= 1; with_ws++)
        for (int dt = SS_CUDA_F32; dt <= SS_CUDA_BF16; dt += 2) {
            int64_t n = shapes[si][0], d = shapes[si][1], ld = shapes[si][2], nx = n + 3 * with_rows;
            float *x = ss_test_rvec(nx * ld, 21 + si, 1.0f), *xv = ss_test_fvec(nx * ld, 0);
            for (int64_t i = 0; i < nx * ld; i++) x[i] += 100.f + (float)(i % ld) + (float)(i / ld % 3); /* mean >> spread */
            void *xd = to_dtype(x, nx * ld, dt, xv);
            double *m64 = malloc((size_t)d * sizeof(double));
            float *m32 = ss_test_fvec(d, 0);
            int64_t *rows = malloc((size_t)n * sizeof(int64_t));
            for (int64_t r = 0; r < n; r++) rows[r] = with_rows ? (r * 5 + 2) % nx : r;
            const int64_t wsb = with_ws ? ss_cuda_colmean_ws(n, d) : 0;
            if (with_ws && !wsb) { /* no slices at this n: the same as without */
                free(x); free(xv); free(xd); free(m64); free(m32); free(rows);
                continue;
            }
            double *ws = wsb ? malloc((size_t)wsb) : NULL;
            cm_ctx c = {m64, m32, xd, dt, ld, with_rows ? rows : NULL, n, d, ws};
            float *outs[2] = {(float *)m64, m32};
            int64_t sizes[2] = {2 * d, d};
            CHECK(both_orders(run_cm, &c, outs, sizes, 2));
            int64_t bad = 0;
            double maxe = 0;
            for (int64_t j = 0; j < d; j++) {
                double s = 0;
                for (int64_t r = 0; r < n; r++) s += xv[rows[r] * ld + j];
                s /= (double)n;
                double e = fabs(m64[j] - s);
                if (e > maxe) maxe = e;
                if (!(e <= 1e-12 * fabs(s)) || m32[j] != (float)m64[j]) bad++;
            }
            printf("\n    colmean %s n=%lld d=%lld ld=%lld%s%s: max|err|=%.2e", dt_name[dt], (long long)n, (long long)d,
                   (long long)ld, with_rows ? " row list" : "", ws ? " in slices" : "", maxe);
            CHECK_MSG(bad == 0, "%lld of %lld means off", (long long)bad, (long long)d);
            free(x); free(xv); free(xd); free(m64); free(m32); free(rows); free(ws);
        }
    float one = 1.f;
    CHECK(ss_cuda_colmean(NULL, NULL, &one, SS_CUDA_F32, 1, NULL, 1, 1, NULL, NULL) == 1); /* no output */
    CHECK(ss_cuda_colmean(NULL, &one, &one, SS_CUDA_F32, 1, NULL, 1, 2, NULL, NULL) == 1); /* ld < d */
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
static void run_cv(void *v) {
    cv_ctx *c = v;
    CHECK(ss_cuda_cov_lower(c->c, c->ldc, c->x, c->dt, c->ldx, c->mean, c->n, c->d, c->ws, NULL) == 0);
}

/* A kernel's workspace: 256-byte aligned, as cudaMalloc's (aligned_alloc
 * wants a multiple of the alignment). */
static void *ws_alloc(int64_t bytes) { return aligned_alloc(256, ((size_t)bytes + 256) / 256 * 256); }

/* The covariance kernels' input: X [n, ldx] of random values with column
 * offsets (so centring matters), in dtype dt (xv: the values as fp32), the
 * fp32-rounded column means of its first d columns in m (zero without
 * centring), and C [d, ldc] filled with NaN. */
typedef struct { float *x, *xv, *m, *cm; void *xd; } cv_data;
static cv_data cv_make(int64_t n, int64_t d, int64_t ldx, int64_t ldc, int dt, unsigned seed, int centred) {
    cv_data v = {ss_test_rvec(n * ldx, seed, 1.0f), ss_test_fvec(n * ldx, 0), ss_test_fvec(d, 0), ss_test_fvec(d * ldc, 0), NULL};
    for (int64_t i = 0; i < n * ldx; i++) v.x[i] = v.x[i] * 2.f + 3.f * (float)(i % 5); /* column offsets */
    v.xd = to_dtype(v.x, n * ldx, dt, v.xv);
    for (int64_t j = 0; j < d && centred && n > 0; j++) {
        double s = 0;
        for (int64_t r = 0; r < n; r++) s += v.xv[r * ldx + j];
        v.m[j] = (float)(s / (double)n);
    }
    return v;
}
static void cv_free(cv_data *v) { free(v->x), free(v->xv), free(v->xd), free(v->m), free(v->cm); }

/* Against fp64 sums of the same products. Tolerance: the kernel rounds each
 * centred value once (x - m, relative 2^-24) and accumulates n products in
 * fp32 in some order, so |err_ij| <= (n + 2) 2^-24 S_ij with S_ij =
 * sum_r |x_ri - m_i| |x_rj - m_j| (the standard gamma_n bound, to first
 * order); the check uses 2x that. It is per element and scaled by S, not by
 * |C_ij|, because off-diagonal sums cancel towards 0. A missing term, a
 * wrong centring or a swapped index is O(S) off and fails by orders of
 * magnitude. Every element above the diagonal and every column past d in a
 * row of ldc must still hold the NaN fill: the kernel writes nothing there. */
TEST(kernel_cov_lower_vs_fp64) {
    /* the last two split their rows: 5 splits (9, 9, 9, 9, 8 steps of 16)
     * over one tile, 2 over three tiles */
    int64_t shapes[][4] = {{37, 70, 70, 73}, {130, 33, 35, 33}, {5, 1, 1, 1},      {9, 129, 131, 130},
                           {1, 40, 40, 40},  {0, 3, 3, 3},      {700, 20, 22, 21}, {300, 136, 136, 137}};
    for (int si = 0; si < 8; si++) {
        for (int dt = SS_CUDA_F32; dt <= SS_CUDA_BF16; dt++) {
            if (dt == SS_CUDA_F16 && si != 0) continue;
            for (int centred = 1; centred >= (si == 1 ? 0 : 1); centred--) {
                int64_t n = shapes[si][0], d = shapes[si][1], ldx = shapes[si][2], ldc = shapes[si][3];
                cv_data v = cv_make(n, d, ldx, ldc, dt, 31 + (unsigned)si, centred);
                const float *xv = v.xv, *m = v.m;
                void *ws = ws_alloc(ss_cuda_cov_lower_ws(n, d));
                cv_ctx c = {v.cm, ldc, v.xd, dt, ldx, centred ? m : NULL, n, d, ws};
                int64_t nc = d * ldc;
                ss_emu_set_copy_timing(SS_EMU_COPY_AT_ISSUE); /* see the tensor-core test below */
                CHECK(both_orders(run_cv, &c, &v.cm, &nc, 1));
                ss_emu_set_copy_timing(SS_EMU_COPY_AT_WAIT);
                CHECK(both_orders(run_cv, &c, &v.cm, &nc, 1));
                free(ws);
                const float *cm = v.cm;
                int64_t bad = 0, written_above = 0;
                double maxr = 0;
                for (int64_t i = 0; i < d; i++) {
                    for (int64_t j = 0; j < ldc; j++) {
                        float g = cm[i * ldc + j];
                        if (j > i || j >= d) {
                            written_above += !isnan(g);
                            continue;
                        }
                        double ref = 0, s = 0;
                        for (int64_t r = 0; r < n; r++) {
                            double a = (double)xv[r * ldx + i] - m[i], b = (double)xv[r * ldx + j] - m[j];
                            ref += a * b;
                            s += fabs(a * b);
                        }
                        double bound = 2.0 * (double)(n + 2) * 0x1p-24 * s, e = fabs((double)g - ref);
                        if (s > 0 && e / s > maxr) maxr = e / s;
                        bad += !(e <= bound);
                    }
                }
                printf("\n    cov_lower %s n=%lld d=%lld ldx=%lld ldc=%lld%s: max|err|/S=%.2e (bound %.2e)",
                       dt_name[dt], (long long)n, (long long)d, (long long)ldx, (long long)ldc,
                       centred ? "" : " uncentred", maxr, 2.0 * (double)(n + 2) * 0x1p-24);
                CHECK_MSG(bad == 0, "%lld lower-triangle elements outside the bound", (long long)bad);
                CHECK_MSG(written_above == 0, "%lld elements written above the diagonal or past d",
                          (long long)written_above);
                cv_free(&v);
            }
        }
    }
    float one = 1.f;
    CHECK(ss_cuda_cov_lower(&one, 1, &one, SS_CUDA_F32, 1, NULL, 1, 2, &one, NULL) == 1); /* ld < d */
    CHECK(ss_cuda_cov_lower(&one, 2, &one, 9, 2, NULL, 1, 2, &one, NULL) == 1);           /* bad dtype */
    CHECK(ss_cuda_cov_lower(&one, 2, &one, SS_CUDA_F32, 2, NULL, 1, 2, NULL, NULL) == 1); /* no workspace */
    CHECK(ss_cuda_cov_lower(NULL, 1, NULL, SS_CUDA_F32, 1, NULL, 5, 0, NULL, NULL) == 0);  /* d = 0: nothing */
    CHECK(ss_cuda_cov_lower_ws(700, 20) == 44 * 16 * 20 * 4 + 5 * 20 * 20 * 4);
    CHECK(ss_cuda_cov_center(&one, SS_CUDA_F16, 8, &one, SS_CUDA_F32, 1, NULL, NULL, 1, 1, 1, NULL) == 1); /* odt */
    CHECK(ss_cuda_cov_center(&one, SS_CUDA_F32, 6, &one, SS_CUDA_F32, 6, NULL, NULL, 1, 1, 5, NULL) == 1); /* ldw % 4 */
    CHECK(ss_cuda_cov_center(&one, SS_CUDA_F32, 4, &one, SS_CUDA_F32, 4, NULL, NULL, 2, 1, 4, NULL) == 1); /* n_pad < n */
    CHECK(ss_cuda_cov_sum_splits(&one, 1, &one, 2, 1, NULL) == 1);                                  /* ldc < d */
    CHECK(ss_cuda_cov_sum_splits(&one, 1, &one, 1, 0, NULL) == 1);                                  /* no splits */
}

/* ss_cuda_cov_sum_splits against the host, bit for bit: C's lower triangle
 * is the partials added in split order from zero; nothing else of C is
 * written. d a multiple of 4 (the float4 path) and not, ldc = d, d + 1 (a
 * row of C then misaligned: one column a thread) and d + 4, C itself one
 * float off its alignment, the partials' upper triangles NaN (the float4
 * path reads a few of them and must drop them). */
TEST(kernel_cov_sum_splits_exact) {
    const int64_t ds[] = {1, 3, 8, 12, 130, 132};
    const int splits[] = {1, 2, 5};
    for (int di = 0; di < 6; di++)
        for (int si = 0; si < 3; si++)
            for (int li = 0; li < 4; li++) {
                const int64_t d = ds[di], ldc = d + (li == 1 ? 1 : li == 2 ? 4 : 0), S = splits[si];
                const int mis = li == 3;
                float *part = ss_test_rvec(S * d * d, (unsigned)(40 + di * 3 + si), 1.0f);
                float *cbuf = ss_test_fvec(d * ldc + 1, 7.f), *c = cbuf + mis;
                for (int64_t p = 0; p < S; p++)
                    for (int64_t i = 0; i < d; i++)
                        for (int64_t j = i + 1; j < d; j++) part[p * d * d + i * d + j] = NAN;
                CHECK(ss_cuda_cov_sum_splits(c, ldc, part, d, (int)S, NULL) == 0);
                int64_t bad = 0, touched = 0;
                for (int64_t i = 0; i < d; i++)
                    for (int64_t j = 0; j < ldc; j++) {
                        if (j > i) {
                            touched += c[i * ldc + j] != 7.f;
                            continue;
                        }
                        float ref = 0.f;
                        for (int64_t p = 0; p < S; p++) ref += part[p * d * d + i * d + j];
                        bad += memcmp(&ref, &c[i * ldc + j], sizeof ref) != 0;
                    }
                touched += mis && cbuf[0] != 7.f;
                CHECK_MSG(bad == 0 && touched == 0, "d=%lld ldc=%lld splits=%lld%s: %lld sums differ, %lld written "
                          "outside the lower triangle", (long long)d, (long long)ldc, (long long)S,
                          mis ? " misaligned" : "", (long long)bad, (long long)touched);
                free(part);
                free(cbuf);
            }
}

/* ss_cuda_cov_center against the host, bit for bit: xc[r, c] = x[r, c] -
 * mean[c] for r < n and c < d, else 0, rounded to bf16 (nearest even) or
 * kept in fp32. Each input type, both outputs, with and without means, rows
 * and means aligned (the 16-byte loads) and not (x one element off: one
 * load a value), d a multiple of 8 and not (the row's last chunk then takes
 * the scalar loads), padding rows past n, and rows in order or from a row
 * list (x's rows shuffled, some twice, some left out). */
TEST(kernel_cov_center_exact) {
    const int64_t n = 13, n_pad = 16, nx = n + 4;
    const int64_t ds[] = {37, 48};
    int64_t rows[13];
    for (int64_t r = 0; r < n; r++) rows[r] = (r * 7 + 3) % nx;
    for (int with_rows = 0; with_rows <= 1; with_rows++)
    for (int di = 0; di < 2; di++)
        for (int dt = SS_CUDA_F32; dt <= SS_CUDA_BF16; dt++)
            for (int odt = SS_CUDA_F32; odt <= SS_CUDA_BF16; odt += SS_CUDA_BF16 - SS_CUDA_F32)
                for (int off = 0; off <= 1; off++)
                    for (int with_mean = 0; with_mean <= 1; with_mean++) {
                        const int64_t d = ds[di], per = odt == SS_CUDA_F32 ? 4 : 8, ldw = (d + per - 1) / per * per;
                        const int64_t ldx = off ? d + 1 : (d + 7) / 8 * 8;
                        const size_t esz = dt == SS_CUDA_F32 ? 4 : 2, oes = odt == SS_CUDA_F32 ? 4 : 2;
                        float *xf = ss_test_rvec(nx * ldx + 1, 21 + (unsigned)d, 3.f), *m = ss_test_rvec(d, 22, 1.f);
                        unsigned char *xb = malloc((size_t)(nx * ldx + 1) * esz + 16);
                        for (int64_t i = 0; i < nx * ldx + 1; i++) {
                            if (dt == SS_CUDA_F32) memcpy(xb + i * esz, &xf[i], 4);
                            else {
                                uint16_t h = dt == SS_CUDA_BF16 ? ss_f32_to_bf16(xf[i]) : ss_f32_to_f16(xf[i]);
                                memcpy(xb + i * esz, &h, 2);
                                xf[i] = dt == SS_CUDA_BF16 ? ss_bf16_to_f32(h) : ss_f16_to_f32(h);
                            }
                        }
                        void *out = calloc((size_t)(n_pad * ldw), oes);
                        const void *x = xb + (off ? esz : 0);
                        const float *xv = xf + (off ? 1 : 0);
                        CHECK(ss_cuda_cov_center(out, odt, ldw, x, dt, ldx, with_rows ? rows : NULL, with_mean ? m : NULL,
                                                 n, n_pad, d, NULL) == 0);
                        int64_t bad = 0;
                        for (int64_t r = 0; r < n_pad; r++)
                            for (int64_t c = 0; c < ldw; c++) {
                                const int64_t xr = r < n && with_rows ? rows[r] : r;
                                const float v = r < n && c < d ? xv[xr * ldx + c] - (with_mean ? m[c] : 0.f) : 0.f;
                                const size_t at = (size_t)(r * ldw + c);
                                if (odt == SS_CUDA_F32) bad += memcmp((float *)out + at, &v, 4) != 0;
                                else bad += ((uint16_t *)out)[at] != ss_f32_to_bf16(v);
                            }
                        CHECK_MSG(bad == 0, "d %lld, in %d, out %d, offset %d, means %d, row list %d: %lld values differ",
                                  (long long)d, dt, odt, off, with_mean, with_rows, (long long)bad);
                        free(xf), free(m), free(xb), free(out);
                    }
}

typedef int (*cov16_fn)(float *, int64_t, const void *, int, int64_t, const float *, int64_t, int64_t, void *,
                        cudaStream_t);
typedef struct {
    cv_ctx c;
    cov16_fn fn;
} cv16_ctx;
static void run_cv16(void *v) {
    cv16_ctx *k = v;
    const cv_ctx *c = &k->c;
    CHECK(k->fn(c->c, c->ldc, c->x, c->dt, c->ldx, c->mean, c->n, c->d, c->ws, NULL) == 0);
}

/* The bf16 tensor-core versions (kernels/cov_lower_tc.cu: mma.sync,
 * emulated by mma.cuh; cov_lower_wg.cu: wgmma, by wgmma.cuh) against fp64 sums of the same bf16 operands: a_ri = bf16(x_ri - m_i)
 * with the subtraction in fp32, as the kernel does. Products of bf16 values
 * are exact in fp32, so what remains is fp32 accumulation: the same
 * 2 (n + 2) 2^-24 S bound as the fp32 kernel, S = sum_r |a_ri a_rj|. A
 * misread fragment layout pairs wrong rows or columns and is off by O(S).
 * Shapes: three tiles (two edges) with d, ldx and ldc ragged and n not a
 * multiple of the 32-row step; one partial tile with an odd n; n = 0; and
 * two whose rows the kernel splits (3 splits of 9, 9 and 7 steps over one
 * tile of width 20, which is not a multiple of 8; 2 splits over three tiles),
 * so the partial triangles and their sum run, with more steps per split
 * than pipeline stages. Nothing above the diagonal or past d is written
 * (NaN fill). The rounding to bf16
 * itself is checked against the exact centred sums: each factor moves by at
 * most 2^-8 of itself (bf16's unit roundoff: 8 significant bits), so each
 * term by 2^-7, within 2^-7 S plus the accumulation's bound. */
static void cov16_vs_bf16_operands(const char *name, cov16_fn fn, int64_t (*ws_bytes)(int64_t, int64_t),
                                   int64_t (*shapes)[4], int ns, int f32_only_from) {
    for (int si = 0; si < ns; si++) {
        for (int dt = SS_CUDA_F32; dt <= SS_CUDA_BF16; dt += SS_CUDA_BF16 - SS_CUDA_F32) {
            if (si >= f32_only_from && dt != SS_CUDA_F32) continue; /* the emulated products' time */
            for (int centred = 1; centred >= (si == 1 ? 0 : 1); centred--) {
                int64_t n = shapes[si][0], d = shapes[si][1], ldx = shapes[si][2], ldc = shapes[si][3];
                cv_data v = cv_make(n, d, ldx, ldc, dt, 61 + (unsigned)si, centred);
                const float *xv = v.xv, *m = v.m;
                void *ws = ws_alloc(ws_bytes(n, d));
                cv16_ctx k = {{v.cm, ldc, v.xd, dt, ldx, centred ? m : NULL, n, d, ws}, fn};
                int64_t nc = d * ldc;
                /* again with cp.async landing when issued: a stage reloaded
                 * before every warp has read it gives other sums */
                float *first = malloc((size_t)(nc ? nc : 1) * sizeof(float));
                ss_emu_set_copy_timing(SS_EMU_COPY_AT_ISSUE);
                CHECK(both_orders(run_cv16, &k, &v.cm, &nc, 1));
                ss_emu_set_copy_timing(SS_EMU_COPY_AT_WAIT);
                memcpy(first, v.cm, (size_t)nc * sizeof(float));
                CHECK(both_orders(run_cv16, &k, &v.cm, &nc, 1));
                CHECK(memcmp(first, v.cm, (size_t)nc * sizeof(float)) == 0);
                free(first);
                const float *cm = v.cm;
                int64_t bad = 0, far = 0, written_above = 0;
                double maxr = 0, maxq = 0;
                for (int64_t i = 0; i < d; i++)
                    for (int64_t j = 0; j < ldc; j++) {
                        float g = cm[i * ldc + j];
                        if (j > i || j >= d) {
                            written_above += !isnan(g);
                            continue;
                        }
                        double ref, s, exact;
                        ss_test_cov16_pair(xv, ldx, m, n, i, j, &ref, &s, &exact);
                        double e = fabs((double)g - ref), q = fabs((double)g - exact);
                        if (s > 0 && e / s > maxr) maxr = e / s;
                        if (s > 0 && q / s > maxq) maxq = q / s;
                        bad += !(e <= 2.0 * (double)(n + 2) * 0x1p-24 * s);
                        far += !(q <= (0x1p-7 + 2.0 * (double)(n + 2) * 0x1p-24) * s);
                    }
                printf("\n    %s %s n=%lld d=%lld ldx=%lld ldc=%lld%s: max|err|/S=%.2e vs bf16 operands, %.2e vs exact",
                       name, dt_name[dt], (long long)n, (long long)d, (long long)ldx, (long long)ldc,
                       centred ? "" : " uncentred", maxr, maxq);
                CHECK_MSG(bad == 0, "%lld lower-triangle elements outside the bound", (long long)bad);
                CHECK_MSG(far == 0, "%lld elements further than 2^-7 S from the exact sums", (long long)far);
                CHECK_MSG(written_above == 0, "%lld elements written above the diagonal or past d",
                          (long long)written_above);
                free(ws);
                cv_free(&v);
            }
        }
    }
    float one = 1.f;
    CHECK(fn(&one, 1, &one, SS_CUDA_F32, 1, NULL, 1, 2, &one, NULL) == 1); /* ld < d */
    CHECK(fn(&one, 2, &one, 9, 2, NULL, 1, 2, &one, NULL) == 1);           /* bad dtype */
    CHECK(fn(&one, 2, &one, SS_CUDA_F32, 2, NULL, 1, 2, NULL, NULL) == 1); /* no workspace */
    CHECK(fn(NULL, 1, NULL, SS_CUDA_F32, 1, NULL, 5, 0, NULL, NULL) == 0);  /* d = 0: nothing */
}

TEST(kernel_cov_lower_tc_vs_bf16_operands) {
    int64_t shapes[][4] = {{40, 136, 140, 137}, {33, 20, 20, 21}, {0, 3, 3, 3}, {800, 20, 22, 20}, {520, 136, 136, 136}};
    cov16_vs_bf16_operands("cov_lower_tc", ss_cuda_cov_lower_tc, ss_cuda_cov_lower_tc_ws, shapes, 5, 4);
    /* the plan: one split for 3 tiles of 10 steps; 3 of 9, 9, 7 steps for one tile of 25 */
    CHECK(ss_cuda_cov_lower_tc_ws(40, 136) == 2 * 32 * 136 * 2);
    CHECK(ss_cuda_cov_lower_tc_ws(800, 20) == 25 * 32 * 24 * 2 + 3 * 20 * 20 * 4);
}

/* The wgmma kernel's shapes: 3 tiles in one (partial) 64-row step; one
 * tile of 20 whose second warpgroup has no rows; n = 0; and two split ones
 * with more steps per split than pipeline stages (2 splits of 5 steps over
 * one tile; 2 of 5 and 4 over three tiles). Under the emulation the
 * products run when their group is waited for, and read shared memory then:
 * a stage reloaded before its products finished, or accumulators read
 * before the wait, fail here. */
TEST(kernel_cov_lower_wg_vs_bf16_operands) {
    int64_t shapes[][4] = {{40, 136, 140, 137}, {33, 20, 20, 21}, {0, 3, 3, 3}, {600, 20, 22, 20}, {520, 136, 136, 136}};
    CHECK(ss_cuda_cov_lower_wg_supported());
    cov16_vs_bf16_operands("cov_lower_wg", ss_cuda_cov_lower_wg, ss_cuda_cov_lower_wg_ws, shapes, 5, 4);
    /* the workspace: XcT of d padded to 128 rows of n padded to 64, and 2 partial triangles for 600 x 20 */
    CHECK(ss_cuda_cov_lower_wg_ws(40, 136) == 256 * 64 * 2);
    CHECK(ss_cuda_cov_lower_wg_ws(600, 20) == 128 * 640 * 2 + 2 * 20 * 20 * 4);
}

/* The header's correction: with a mean 10^4 times the spread, centring on
 * the fp32-rounded mean m32 and then subtracting n (m - m32)(m - m32)^T with
 * the fp64 mean of ss_cuda_colmean gives the exactly centred sums (to the
 * kernel's fp32 accumulation: rtol 1e-5 of the diagonal scale), while the
 * raw sums would have cancelled catastrophically. */
TEST(kernel_cov_lower_large_mean_correction) {
    int64_t n = 64, d = 5;
    float *x = ss_test_fvec(n * d, 0);
    unsigned s = 77;
    for (int64_t i = 0; i < n * d; i++) x[i] = 1e4f * (float)(1 + i % d) + ss_test_frand(&s);
    double m64[5];
    float m32[5], cm[25];
    CHECK(ss_cuda_colmean(m64, m32, x, SS_CUDA_F32, d, NULL, n, d, NULL, NULL) == 0);
    void *ws = malloc((size_t)ss_cuda_cov_lower_ws(n, d));
    CHECK(ss_cuda_cov_lower(cm, d, x, SS_CUDA_F32, d, m32, n, d, ws, NULL) == 0);
    free(ws);
    double maxr = 0;
    for (int64_t i = 0; i < d; i++)
        for (int64_t j = 0; j <= i; j++) {
            double ref = 0, di = 0, dj = 0;
            for (int64_t r = 0; r < n; r++) {
                ref += ((double)x[r * d + i] - m64[i]) * ((double)x[r * d + j] - m64[j]);
                di += ((double)x[r * d + i] - m64[i]) * ((double)x[r * d + i] - m64[i]);
                dj += ((double)x[r * d + j] - m64[j]) * ((double)x[r * d + j] - m64[j]);
            }
            double got = cm[i * d + j] - (double)n * (m64[i] - m32[i]) * (m64[j] - m32[j]);
            double r = fabs(got - ref) / sqrt(di * dj);
            if (r > maxr) maxr = r;
        }
    printf("\n    cov_lower mean 1e4 x spread, corrected: max|err|/sqrt(C_ii C_jj)=%.2e", maxr);
    CHECK(maxr <= 1e-5);
    free(x);
}

/* ---- the emulation itself ---------------------------------------------- */

SS_KERNEL(emu_k_warp, (int *, out), (int, n)) {
    int t = (int)threadIdx.x, lane = t & 31;
    int *o = out + (size_t)t * 8;
    o[0] = __shfl_sync(0xffffffffu, t * 10, 3);              /* broadcast from lane 3 */
    o[1] = __shfl_xor_sync(0xffffffffu, t, 1);               /* neighbour swap */
    o[2] = __shfl_down_sync(0xffffffffu, t, 4, 16);          /* within 16-lane segments */
    o[3] = __shfl_up_sync(0xffffffffu, t, 2);
    o[4] = (int)__ballot_sync(0xffffffffu, lane % 3 == 0);
    o[5] = __any_sync(0xffffffffu, t == 40);
    o[6] = __all_sync(0xffffffffu, lane < 32);
    float f = ss_warp_sum((float)lane);
    o[7] = (int)f;
    (void)n;
}

SS_KERNEL(emu_k_shared, (float *, out), (int, n)) {
    __shared__ float st[64];
    SS_DYN_SHARED(float, dyn);
    int t = (int)threadIdx.x;
    st[t] = (float)(blockIdx.x * 100 + t);
    dyn[t] = (float)t;
    __syncthreads();
    int cnt = __syncthreads_count(t % 4 == 0);
    out[blockIdx.x * n + t] = st[n - 1 - t] + dyn[n - 1 - t] * 1000.f + (float)cnt * 1e6f;
}

SS_KERNEL(emu_k_atomic, (float *, fsum), (int *, isum), (int *, imax), (int *, cas)) {
    int g = (int)(blockIdx.x * blockDim.x + threadIdx.x);
    atomicAdd(fsum, 0.5f);
    atomicAdd(isum, g);
    atomicMax(imax, (g * 37) % 101);
    atomicCAS(cas, 0, g + 1); /* only the first thread succeeds */
}

SS_KERNEL(emu_k_geom, (int *, out)) {
    int t = (int)(threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z));
    int b = (int)(blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z));
    out[b * (int)(blockDim.x * blockDim.y * blockDim.z) + t] = b * 1000 + t;
}

TEST(emu_warp_ops_barriers_shared_atomics) {
    int out[64 * 8];
    SS_LAUNCH(emu_k_warp, 1, 64, 0, NULL, out, 64);
    for (int t = 0; t < 64; t++) {
        int lane = t & 31, w = t / 32, *o = out + t * 8;
        CHECK(o[0] == (w * 32 + 3) * 10);
        CHECK(o[1] == (t ^ 1));
        CHECK(o[2] == ((lane & 15) + 4 < 16 ? t + 4 : t));
        CHECK(o[3] == (lane >= 2 ? t - 2 : t));
        CHECK((unsigned)o[4] == 0x49249249u);
        CHECK(o[5] == (w == 1));
        CHECK(o[6] == 1);
        CHECK(o[7] == 496);
    }
    float sh[3 * 64];
    SS_LAUNCH(emu_k_shared, 3, 64, 64 * sizeof(float), NULL, sh, 64);
    for (int b = 0; b < 3; b++)
        for (int t = 0; t < 64; t++) CHECK(sh[b * 64 + t] == (float)(b * 100 + 63 - t) + (63 - t) * 1000.f + 16e6f);
    float fs = 0;
    int is = 0, im = -1, cas = 0;
    SS_LAUNCH(emu_k_atomic, 4, 96, 0, NULL, &fs, &is, &im, &cas);
    CHECK(fs == 192.f && is == 383 * 384 / 2 && im == 100 && cas == 1);
    int geom[2 * 3 * 2 * 4 * 2 * 3];
    SS_LAUNCH(emu_k_geom, SS_DIM3(2, 3, 2), SS_DIM3(4, 2, 3), 0, NULL, geom);
    for (int b = 0; b < 12; b++)
        for (int t = 0; t < 24; t++) CHECK(geom[b * 24 + t] == b * 1000 + t);
    /* the half types round like CUDA: ties to even */
    CHECK(__float2bfloat16(1.0f + 1.0f / 256).x == 0x3f80);
    CHECK(__float2bfloat16(1.0f + 3.0f / 256).x == 0x3f82);
    CHECK(__float2half(1.0f + 1.0f / 2048).x == 0x3c00);
    CHECK(__half2float(__float2half(65504.f)) == 65504.f);
    CHECK(__bfloat162float(__float2bfloat16(-2.5f)) == -2.5f);
    ss_emu_stats st = ss_emu_get_stats();
    CHECK(st.launches > 0 && st.switches > 0);
}

/* cp.async: a copy lands at its group's wait, not before; a zero fill
 * (src_bytes < 16) writes zeros past the bytes it copies. Thread t copies
 * 16 bytes of src to its own 4 ints in two groups (ints 0-3, then the same
 * again with 8 bytes from src + 64 and the rest zero-filled). */
SS_KERNEL(emu_k_async, (int *, out), (const int *, src)) {
    __shared__ __align__(16) int buf[32 * 4];
    const int t = (int)threadIdx.x;
    int *o = out + 6 * t, *b = buf + 4 * t;
    b[0] = b[1] = b[2] = b[3] = -1;
    ss_cp_async16(b, src + 4 * t, 16);
    o[0] = b[0]; /* held back: -1 */
    ss_cp_async_commit();
    ss_cp_async16(b, src + 128 + 4 * t, 8);
    ss_cp_async_commit();
    ss_cp_async_wait(1); /* the first group only */
    o[1] = b[0], o[2] = b[3];
    ss_cp_async_wait(0);
    o[3] = b[0], o[4] = b[1], o[5] = b[3];
}

/* ldmatrix.x4: four 8x8 matrices of M_m[r][c] = 1000 m + 10 r + c in rows
 * of 16 halves (so each lane's row address is 16-byte aligned); lane l
 * points at row l % 8 of matrix l / 8. */
SS_KERNEL(emu_k_ldsm, (uint32_t *, out)) {
    __shared__ __align__(16) uint16_t m[4 * 8 * 16];
    const int lane = (int)threadIdx.x;
    for (int i = lane; i < 4 * 8 * 16; i += 32) {
        const int mm = i / 128, r = i / 16 % 8, c = i % 16;
        m[i] = (uint16_t)(c < 8 ? 1000 * mm + 10 * r + c : 0xffff);
    }
    __syncwarp();
    ss_ldsm_x4(out + 8 * lane, &m[(lane / 8) * 128 + (lane % 8) * 16]);
    ss_ldsm_x4_t(out + 8 * lane + 4, &m[(lane / 8) * 128 + (lane % 8) * 16]);
}

/* A warpgroup-wide instruction waits for warps still busy with a warp-level
 * one of their own (here warp 0's mma.sync before the warpgroup's commit):
 * on a GPU the warps arrive when they arrive, which is no divergence. */
SS_KERNEL(emu_k_wg_mixed, (float *, out)) {
    float c[4] = {0.f, 0.f, 0.f, 0.f};
    const uint32_t a[4] = {0x3f803f80u, 0x3f803f80u, 0x3f803f80u, 0x3f803f80u}, b[2] = {0x3f803f80u, 0x3f803f80u};
    if (threadIdx.x < 32) ss_mma_bf16_16816(c, a, b); /* all ones: 16 in every sum */
    ss_wgmma_commit();
    ss_wgmma_wait(0);
    out[threadIdx.x] = c[0] + c[3];
}
static void run_wg_mixed(void *v) { SS_LAUNCH(emu_k_wg_mixed, 1, 128, 0, NULL, (float *)v); }
TEST(emu_warpgroup_waits_for_warp_level_work) {
    float out[128];
    float *o = out;
    int64_t n = 128;
    CHECK(both_orders(run_wg_mixed, out, &o, &n, 1));
    for (int i = 0; i < 128; i++) CHECK(out[i] == (i < 32 ? 32.f : 0.f));
    /* shuffled schedules put warp 0 at its mma.sync while other warps check the commit */
    for (unsigned seed = 1; seed <= 8; seed++) {
        ss_emu_set_schedule(SS_EMU_SHUFFLE, seed);
        run_wg_mixed(out);
        for (int i = 0; i < 128; i++) CHECK(out[i] == (i < 32 ? 32.f : 0.f));
    }
    ss_emu_set_schedule(SS_EMU_FORWARD, 0);
}

TEST(emu_cp_async_and_ldmatrix) {
    int src[256], out[32 * 6];
    for (int i = 0; i < 256; i++) src[i] = 7 * i + 1;
    for (int pass = 0; pass < 2; pass++) { /* copies landing at their wait, then at once */
        ss_emu_set_schedule(pass ? SS_EMU_REVERSE : SS_EMU_FORWARD, 0);
        ss_emu_set_copy_timing(pass ? SS_EMU_COPY_AT_ISSUE : SS_EMU_COPY_AT_WAIT);
        SS_LAUNCH(emu_k_async, 1, 32, 0, NULL, out, src);
        for (int t = 0; t < 32; t++) {
            const int *o = out + 6 * t;
            if (!pass) {
                CHECK(o[0] == -1);
                CHECK(o[1] == src[4 * t] && o[2] == src[4 * t + 3]);
            } else {
                CHECK(o[0] == src[4 * t]);
                CHECK(o[1] == src[128 + 4 * t] && o[2] == 0);
            }
            CHECK(o[3] == src[128 + 4 * t] && o[4] == src[128 + 4 * t + 1] && o[5] == 0);
        }
    }
    ss_emu_set_schedule(SS_EMU_FORWARD, 0);
    ss_emu_set_copy_timing(SS_EMU_COPY_AT_WAIT);
    uint32_t f[32 * 8];
    SS_LAUNCH(emu_k_ldsm, 1, 32, 0, NULL, f);
    for (int lane = 0; lane < 32; lane++) {
        const int g = lane / 4, t = lane % 4;
        for (int mm = 0; mm < 4; mm++) {
            const uint32_t plain = f[8 * lane + mm], trans = f[8 * lane + 4 + mm];
            CHECK((plain & 0xffff) == (uint32_t)(1000 * mm + 10 * g + 2 * t));
            CHECK((plain >> 16) == (uint32_t)(1000 * mm + 10 * g + 2 * t + 1));
            CHECK((trans & 0xffff) == (uint32_t)(1000 * mm + 10 * (2 * t) + g));
            CHECK((trans >> 16) == (uint32_t)(1000 * mm + 10 * (2 * t + 1) + g));
        }
    }
}

/* Misuse must abort with a message, not hang: run it in a child process. */
SS_KERNEL(emu_k_bad_barrier, (int, n)) {
    if (threadIdx.x == 5) return;
    __syncthreads();
    (void)n;
}
SS_KERNEL(emu_k_two_barriers, (int, n)) {
    if (threadIdx.x < 32) __syncthreads();
    else __syncthreads();
    (void)n;
}
SS_KERNEL(emu_k_bad_warp, (int, n)) {
    if (threadIdx.x == 7) return;
    (void)__shfl_xor_sync(0xffffffffu, n, 1);
}
SS_KERNEL(emu_k_diverged_warp, (int, n)) {
    if (threadIdx.x & 1) (void)__ballot_sync(0xffffffffu, n);
    else (void)__shfl_down_sync(0xffffffffu, n, 1);
}
SS_KERNEL(emu_k_dyn, (int, n)) {
    SS_DYN_SHARED(float, s);
    s[threadIdx.x] = (float)n;
}
/* mma.sync in a block of fewer than 32 threads, or from two different lines */
SS_KERNEL(emu_k_mma, (int, n)) {
    float c[4] = {0, 0, 0, 0};
    uint32_t a[4] = {0, 0, 0, 0}, b[2] = {0, 0};
    if (n && (threadIdx.x & 1)) ss_mma_bf16_16816(c, a, b);
    else ss_mma_bf16_16816(c, a, b);
}

static void misuse(int which) {
    switch (which) {
    case 0: SS_LAUNCH(emu_k_bad_barrier, 2, 64, 0, NULL, 1); break;
    case 1: SS_LAUNCH(emu_k_two_barriers, 1, 64, 0, NULL, 1); break;
    case 2: SS_LAUNCH(emu_k_bad_warp, 1, 32, 0, NULL, 1); break;
    case 3: SS_LAUNCH(emu_k_diverged_warp, 1, 32, 0, NULL, 1); break;
    case 4: SS_LAUNCH(emu_k_dyn, 1, 32, 49 * 1024, NULL, 1); break;
    case 5: SS_LAUNCH(emu_k_dyn, 1, 2048, 0, NULL, 1); break;
    case 6: emu_k_dyn(1); break;
    case 7: SS_LAUNCH(emu_k_mma, 1, 16, 0, NULL, 0); break;
    case 8: SS_LAUNCH(emu_k_mma, 1, 32, 0, NULL, 1); break;
    default: break;
    }
}

TEST(emu_misuse_aborts_with_a_message) {
    static const char *want[] = {"__syncthreads not reached by every thread", "different __syncthreads",
                                 "exited but is named in the mask", "warp 0 diverged",
                                 "above 48 KB needs SS_SET_MAX_DYN_SHARED", "exceeds 1024 threads",
                                 "called directly; launch it with SS_LAUNCH", "it needs all 32 threads",
                                 "warp 0 diverged"};
    for (int which = 0; which < 9; which++) {
        int fds[2];
        CHECK(pipe(fds) == 0);
        fflush(stdout);
        pid_t pid = fork();
        CHECK(pid >= 0);
        if (pid == 0) {
            dup2(fds[1], 2);
            close(fds[0]);
            signal(SIGABRT, SIG_DFL);
            misuse(which);
            _exit(0);
        }
        close(fds[1]);
        char buf[4096];
        const int status = ss_test_child_wait(pid, fds[0], buf, sizeof buf);
        CHECK_MSG(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT, "misuse %d did not abort (status %d)", which,
                  status);
        CHECK_MSG(strstr(buf, want[which]) != NULL, "misuse %d: message \"%s\" lacks \"%s\"", which, buf,
                  want[which]);
        char *msg = strstr(buf, "cuda_emu:"), *nl = msg ? strchr(msg, '\n') : NULL;
        if (nl) *nl = 0;
        printf("\n    aborts: %.150s", msg ? msg : buf);
    }
    /* the dtype codes are the safetensors ones */
    CHECK(SS_CUDA_F32 == (int)SS_DTYPE_F32 && SS_CUDA_F16 == (int)SS_DTYPE_F16 && SS_CUDA_BF16 == (int)SS_DTYPE_BF16);
    CHECK(SS_CUDA_GELU_TANH == (int)SS_ACT_GELU_TANH && SS_CUDA_GELU_ERF == (int)SS_ACT_GELU_ERF);
}
