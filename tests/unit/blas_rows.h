/* Whether the BLAS gives a row of a product the same bits whatever rows
 * share its call. OpenBLAS sums in one order whatever the call's shape in
 * most of its kernels, but not in all: the generic SSE3 kernel it falls back
 * to on a CPU it does not know ("Core: Prescott", a virtual machine's
 * unnamed Xeon with 0.3.21) handles the rows past its unroll differently
 * (M 151 N 600 K 3000 in calls of 75 and 76 rows: 1064 of 90600 elements
 * differ). Tests that expect such bits ask first, and otherwise compare
 * within rounding. */
#ifndef SS_TEST_BLAS_ROWS_H
#define SS_TEST_BLAS_ROWS_H
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#ifdef SS_HAVE_BLAS
#include <cblas.h>
#endif

/* One call of M rows against nblk calls of rows as even as they come (rows
 * M*b/nblk to M*(b+1)/nblk, as the bf16 product's blocks). */
static int blas_rows_invariant(int64_t M, int64_t N, int64_t K, int64_t nblk) {
#ifdef SS_HAVE_BLAS
    float *A = malloc((size_t)(M * K) * sizeof(float)), *B = malloc((size_t)(K * N) * sizeof(float));
    float *C1 = malloc((size_t)(M * N) * sizeof(float)), *C2 = malloc((size_t)(M * N) * sizeof(float));
    int same = 0;
    if (A && B && C1 && C2) {
        uint32_t s = 12345;
        for (int64_t i = 0; i < M * K; i++) s = s * 1664525u + 1013904223u, A[i] = (float)(s >> 8) / 16777216.0f - 0.5f;
        for (int64_t i = 0; i < K * N; i++) s = s * 1664525u + 1013904223u, B[i] = (float)(s >> 8) / 16777216.0f - 0.5f;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)M, (int)N, (int)K, 1.0f, A, (int)K, B, (int)N, 0.0f,
                    C1, (int)N);
        for (int64_t b = 0; b < nblk; b++) {
            const int64_t r0 = M * b / nblk, r1 = M * (b + 1) / nblk;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)(r1 - r0), (int)N, (int)K, 1.0f, A + r0 * K, (int)K,
                        B, (int)N, 0.0f, C2 + r0 * N, (int)N);
        }
        same = !memcmp(C1, C2, (size_t)(M * N) * sizeof(float));
    }
    free(A), free(B), free(C1), free(C2);
    return same;
#else
    (void)M, (void)N, (void)K, (void)nblk;
    return 1; /* the built-in GEMM sums each element in one order whatever the call's shape */
#endif
}
#endif
