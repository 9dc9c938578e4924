/* The blocked covariance triangle (kernels/cov_lower_blk.cu and
 * include/subscope/cov_blk.h) under the emulation, both plans: the centring
 * kernel, the pointer-array kernel and the emulated cublasGemmBatchedEx
 * (blk), the emulated cublasGemmStridedBatchedEx (rec), each from x and from
 * rows centred beforehand (as collect hands them over), against fp64
 * sums of the same bf16 operands, as test_kernels.c checks the tensor-core
 * kernels. This file includes the emulated runtime's cuBLAS header, which
 * cannot share a file with the kernel emulation's (cuda_emu.h). */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "../../kernels/emu/host/cublas_v2.h"
#include "subscope/cuda_kernels.h"
#include "subscope/cov_blk.h"
#include "subscope/util.h"
#include "test.h"

/* One shape: x [n, ldx] (fp32 or bf16 storage), centred on its fp32 column
 * means; c [d, ldc] filled with NaN first. Every lower element is checked
 * against the fp64 sum of the bf16-rounded centred factors (the emulated
 * product accumulates in fp32 in row order: 2 (n + 2) 2^-24 S, S = sum |a b|)
 * and against the exact centred sum (2^-7 S more, bf16's rounding of both
 * factors). Above the diagonal, only the diagonal blocks' upper halves may be
 * written. */
/* pre: the rows centred into the workspace first (ss_cuda_cov_center, as
 * collect gathers them) and the plan handed x = NULL */
static int pre;
/* blk's row slices asked for (0: its default) */
static int64_t slices;

static void blk_case(cublasHandle_t h, int rec, int64_t n, int64_t d, int64_t ldx, int64_t ldc, int64_t leaf,
                     int bf16_in, int expect_groups) {
    const int64_t L = rec ? ss_cuda_cov_rec_leaf(d, leaf) : ss_cuda_cov_blk_leaf(d, leaf);
    float *xv = malloc((size_t)(n * ldx + 1) * sizeof(float)), *m = calloc((size_t)d, sizeof(float));
    uint16_t *x16 = malloc((size_t)(n * ldx + 1) * sizeof(uint16_t));
    float *c = malloc((size_t)(d * ldc) * sizeof(float));
    unsigned s = 7 + (unsigned)(n * 31 + d);
    for (int64_t r = 0; r < n; r++)
        for (int64_t j = 0; j < ldx; j++) {
            float v = 3.f + ss_test_frand(&s) * (1.f + (float)(j % 5)); /* offset mean, uneven spreads */
            if (bf16_in) x16[r * ldx + j] = ss_f32_to_bf16(v), v = ss_bf16_to_f32(x16[r * ldx + j]);
            xv[r * ldx + j] = v;
        }
    for (int64_t j = 0; j < d; j++) {
        double a = 0;
        for (int64_t r = 0; r < n; r++) a += xv[r * ldx + j];
        m[j] = n ? (float)(a / (double)n) : 0.f;
    }
    for (int64_t i = 0; i < d * ldc; i++) c[i] = NAN;
    const int64_t sl = rec ? 1 : ss_cuda_cov_blk_splits(n, slices);
    const size_t wsb = (size_t)(rec ? ss_cuda_cov_lower_rec_ws(n, d) : ss_cuda_cov_lower_blk_ws(n, d, leaf, slices));
    /* NaN-filled (0xff bytes): the slices' padding must be zeroed by the plan, not found zero */
    void *ws = malloc(wsb + 1);
    memset(ws, 0xff, wsb + 1);
    const void *x = bf16_in ? (void *)x16 : (void *)xv;
    const int xdt = bf16_in ? SS_CUDA_BF16 : SS_CUDA_F32;
    if (pre) {
        CHECK(ss_cuda_cov_center(ws, SS_CUDA_BF16, ss_cuda_cov_blk_ldw(d), x, xdt, ldx, NULL, m, n, n, d, NULL) == 0);
        x = NULL;
    }
    ss_cuda_cov_blk plan;
    CHECK((rec ? ss_cuda_cov_lower_rec_prepare(&plan, c, ldc, x, xdt, ldx, m, n, d, leaf, ws, NULL)
               : ss_cuda_cov_lower_blk_prepare(&plan, c, ldc, x, xdt, ldx, m, n, d, leaf, slices, ws, NULL)) == 0);
    CHECK_MSG(plan.groups == expect_groups, "d %lld, block %lld: %d groups, want %d", (long long)d, (long long)L,
              plan.groups, expect_groups);
    CHECK(n == 0 || d == 0 || plan.splits == (int)sl);
    cublasStatus_t bs = 0;
    CHECK(ss_cov_lower_blk(h, rec, c, ldc, x, xdt, ldx, m, n, d, leaf, slices, ws, NULL, &bs) == 0);
    int64_t bad = 0, far = 0, stray = 0;
    double maxr = 0;
    for (int64_t i = 0; i < d; i++)
        for (int64_t j = 0; j < ldc; j++) {
            const float g = c[i * ldc + j];
            if (j > i || j >= d) {
                stray += !isnan(g) && !(j < d && i / L == j / L && sl == 1); /* slices: the sum writes the lower only */
                continue;
            }
            double ref, sum, exact;
            ss_test_cov16_pair(xv, ldx, m, n, i, j, &ref, &sum, &exact);
            const double e = fabs((double)g - ref), q = fabs((double)g - exact);
            if (sum > 0 && e / sum > maxr) maxr = e / sum;
            /* the emulated products sum each slice in row order, then the slices are added: n + sl terms */
            bad += !(e <= 2.0 * (double)(n + sl + 2) * 0x1p-24 * sum);
            far += !(q <= (0x1p-7 + 2.0 * (double)(n + sl + 2) * 0x1p-24) * sum);
        }
    printf("\n    %s%s n=%lld d=%lld block=%lld slices=%lld %s: %d call(s), max|err|/S=%.2e vs bf16 operands",
           rec ? "rec" : "blk", pre ? " (centred rows)" : "", (long long)n, (long long)d, (long long)L, (long long)sl,
           bf16_in ? "bf16" : "f32", plan.groups, maxr);
    CHECK_MSG(bad == 0, "%lld lower-triangle elements outside the bound", (long long)bad);
    CHECK_MSG(far == 0, "%lld elements further than 2^-7 S from the exact sums", (long long)far);
    CHECK_MSG(stray == 0, "%lld elements written above the diagonal outside the diagonal blocks", (long long)stray);
    free(xv), free(m), free(x16), free(c), free(ws);
}

TEST(cov_lower_blk_vs_bf16_operands) {
    cublasHandle_t h;
    CHECK(cublasCreate(&h) == CUBLAS_STATUS_SUCCESS);
    for (pre = 0; pre <= 1; pre++) {
        /* blocks of 64 over 136 columns: 3 inner blocks, a last row 8 wide (2), the corner */
        blk_case(h, 0, 40, 136, 140, 137, 64, 0, 3);
        blk_case(h, 0, 40, 136, 140, 137, 64, 1, 3);
        /* every block 64 wide: one call of 10 */
        blk_case(h, 0, 100, 256, 256, 256, 64, 1, 1);
        /* 128 (a width of 100 rounded up to 64s) over 200: one block of each shape */
        blk_case(h, 0, 70, 200, 203, 200, 100, 0, 3);
        /* the default width (256 at least) over 20 columns: the whole triangle as one block */
        blk_case(h, 0, 33, 20, 20, 21, 0, 0, 1);
        /* no rows: zeros, written by a kernel (no product of k = 0) */
        blk_case(h, 0, 0, 3, 3, 3, 0, 0, 0);
        /* the rows in slices: 300 rows in 3 of 128 (84 zero rows after the last), each block
         * once per slice, the partial triangles summed; the same three groups, 3x the products */
        slices = 3;
        blk_case(h, 0, 300, 136, 140, 137, 64, 1, 3);
        blk_case(h, 0, 300, 256, 256, 256, 64, 0, 1);
        /* 5 asked of 130 rows: at most one slice per 64 rows, so 3 (of 64, 64 and 2) */
        slices = 5;
        blk_case(h, 0, 130, 70, 70, 73, 0, 1, 1);
        /* fewer rows than a slice: none */
        blk_case(h, 0, 40, 70, 70, 70, 0, 0, 1);
        slices = 0;
    }
    cublasDestroy(h);
}

TEST(cov_lower_rec_vs_bf16_operands) {
    cublasHandle_t h;
    CHECK(cublasCreate(&h) == CUBLAS_STATUS_SUCCESS);
    for (pre = 0; pre <= 1; pre++) {
        /* 256 halved to 32: squares of 128, 2 x 64, 4 x 32, then 8 diagonal blocks of 32 */
        blk_case(h, 1, 50, 256, 260, 257, 32, 0, 4);
        blk_case(h, 1, 50, 256, 256, 256, 32, 1, 4);
        /* 272 = 17 x 16: one halving to 136, which is not a multiple of 16: 1 square, 2 blocks */
        blk_case(h, 1, 30, 272, 272, 275, 64, 0, 2);
        /* 200 is not a multiple of 16: never halved, one block (the full product) */
        blk_case(h, 1, 21, 200, 203, 200, 64, 1, 1);
        /* the default (256 at least) over 384: one halving to 192 */
        blk_case(h, 1, 40, 384, 384, 384, 0, 1, 2);
        /* no rows: zeros */
        blk_case(h, 1, 0, 3, 3, 3, 0, 0, 0);
    }
    cublasDestroy(h);
}

TEST(cov_lower_blk_plan) {
    CHECK(ss_cuda_cov_blk_leaf(768, 0) == 256);    /* at least 256 */
    CHECK(ss_cuda_cov_blk_leaf(3072, 0) == 384);   /* d / 8 */
    CHECK(ss_cuda_cov_blk_leaf(16384, 0) == 2048);
    CHECK(ss_cuda_cov_blk_leaf(100, 0) == 100);    /* never past d */
    CHECK(ss_cuda_cov_blk_leaf(1000, 100) == 128); /* multiples of 64 */
    CHECK(ss_cuda_cov_blk_leaf(0, 64) == 0);
    /* 40 rows of 136 bf16 values (10880 bytes, rounded to 256s), then 3 arrays of 6 pointers (to 256s) */
    CHECK(ss_cuda_cov_lower_blk_ws(40, 136, 64, 0) == 11008 + 256);
    /* 300 rows in 3 slices of 128: 384 rows (104448 bytes), 3 x 18 pointers (512 bytes), 3 partial triangles */
    CHECK(ss_cuda_cov_lower_blk_ws(300, 136, 64, 3) == 104448 + 512 + 3 * 136 * 136 * 4);
    /* slices only when asked for, never more than one per 64 rows */
    CHECK(ss_cuda_cov_blk_splits(16384, 0) == 1);  /* none unless asked */
    CHECK(ss_cuda_cov_blk_splits(16384, 1) == 1);
    CHECK(ss_cuda_cov_blk_splits(16384, 6) == 6);  /* slices of 2752 rows */
    CHECK(ss_cuda_cov_blk_splits(100, 8) == 2);    /* asked 8 of 100 rows: slices of 64 */
    CHECK(ss_cuda_cov_blk_splits(0, 8) == 1);
    ss_cuda_cov_blk p;
    float one = 1.f;
    CHECK(ss_cuda_cov_lower_blk_prepare(&p, &one, 1, &one, SS_CUDA_F32, 2, NULL, 1, 2, 0, 0, &one, NULL) == 1); /* ldc < d */
    CHECK(ss_cuda_cov_lower_blk_prepare(&p, &one, 2, &one, 9, 2, NULL, 1, 2, 0, 0, &one, NULL) == 1);        /* dtype */
    CHECK(ss_cuda_cov_lower_blk_prepare(&p, &one, 2, &one, SS_CUDA_F32, 2, NULL, 1, 2, 0, 0, NULL, NULL) == 1); /* no ws */
    CHECK(ss_cuda_cov_lower_blk_prepare(&p, NULL, 1, NULL, SS_CUDA_F32, 1, NULL, 5, 0, 0, 0, NULL, NULL) == 0 &&
          p.groups == 0); /* d = 0: nothing to do */
    /* rec: halved while wider than the width asked and a multiple of 16 */
    CHECK(ss_cuda_cov_rec_leaf(768, 0) == 192);   /* the default asks for 256: 768, 384, 192 */
    CHECK(ss_cuda_cov_rec_leaf(3072, 0) == 384);  /* d / 8 */
    CHECK(ss_cuda_cov_rec_leaf(16384, 0) == 2048);
    CHECK(ss_cuda_cov_rec_leaf(16384, 500) == 256);
    CHECK(ss_cuda_cov_rec_leaf(11008, 512) == 344); /* 11008 = 43 x 256: 5504, 2752, 1376, 688, 344 */
    CHECK(ss_cuda_cov_rec_leaf(777, 64) == 777);    /* odd: never halved, the full product */
    CHECK(ss_cuda_cov_rec_leaf(200, 64) == 200);    /* 200 = 8 x 25: halving would leave 100, not a multiple of 8 */
    CHECK(ss_cuda_cov_rec_leaf(1 << 30, 1) == (1 << 30) >> (SS_CUDA_COV_GROUPS - 1)); /* at most this many levels */
    CHECK(ss_cuda_cov_rec_leaf(0, 64) == 0);
    CHECK(ss_cuda_cov_lower_rec_ws(40, 136) == 11008); /* the centred rows only */
    CHECK(ss_cuda_cov_lower_rec_prepare(&p, &one, 1, &one, SS_CUDA_F32, 2, NULL, 1, 2, 0, &one, NULL) == 1); /* ldc < d */
    CHECK(ss_cuda_cov_lower_rec_prepare(&p, NULL, 1, NULL, SS_CUDA_F32, 1, NULL, 5, 0, 0, NULL, NULL) == 0 &&
          p.groups == 0);
}
