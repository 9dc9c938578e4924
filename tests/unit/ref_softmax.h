/* Float64 references of the causal softmax over [*, L, L] blocks of scores
 * (row r is query r % L and sees keys 0..r % L) and of its backward, shared
 * by the emulated kernel tests (tests/unit/test_kernels.c) and the GPU
 * kernel check (tests/gpu/kernel_check.c). */
#ifndef SS_TEST_REF_SOFTMAX_H
#define SS_TEST_REF_SOFTMAX_H

#include <math.h>
#include <stdint.h>

/* p = softmax of each row's keys, 0 beyond them. */
static inline void ss_ref_softmax_causal(float *p, const float *x, int64_t rows, int64_t L) {
    for (int64_t r = 0; r < rows; r++) {
        const int64_t nk = r % L + 1;
        double mx = -INFINITY, s = 0;
        for (int64_t j = 0; j < nk; j++) mx = fmax(mx, x[r * L + j]);
        for (int64_t j = 0; j < nk; j++) s += exp((double)x[r * L + j] - mx);
        for (int64_t j = 0; j < L; j++) p[r * L + j] = j < nk ? (float)(exp((double)x[r * L + j] - mx) / s) : 0.f;
    }
}

/* ds = scale p (dp - D), D = the row's sum of p dp over its keys; 0 beyond them. */
static inline void ss_ref_softmax_causal_backward(float *ds, const float *p, const float *dp, int64_t rows, int64_t L,
                                                  float scale) {
    for (int64_t r = 0; r < rows; r++) {
        const int64_t nk = r % L + 1;
        double D = 0;
        for (int64_t j = 0; j < nk; j++) D += (double)p[r * L + j] * dp[r * L + j];
        for (int64_t j = 0; j < L; j++)
            ds[r * L + j] = j < nk ? (float)(scale * (double)p[r * L + j] * (dp[r * L + j] - D)) : 0.f;
    }
}

#endif
