/* Numeric helpers shared by the op and kernel tests (declared in test.h). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "subscope/util.h"
#include "test.h"

float ss_test_frand(unsigned *s) {
    *s = *s * 1664525u + 1013904223u;
    return (float)((*s >> 8) & 0xffff) / 32768.0f - 1.0f;
}

float *ss_test_rvec(int64_t n, unsigned seed, float amp) {
    float *v = malloc((n > 0 ? (size_t)n : 1) * sizeof(float));
    for (int64_t i = 0; i < n; i++) v[i] = amp * ss_test_frand(&seed);
    return v;
}

float *ss_test_fvec(int64_t n, float val) {
    float *v = malloc((n > 0 ? (size_t)n : 1) * sizeof(float));
    for (int64_t i = 0; i < n; i++) v[i] = val;
    return v;
}

int64_t ss_test_compare(const char *what, const float *got, const float *ref, int64_t n, double atol, double rtol) {
    double se = 0, sr = 0, maxe = 0;
    int64_t bad = 0, first = -1;
    for (int64_t i = 0; i < n; i++) {
        double e = fabs((double)got[i] - ref[i]);
        se += e * e;
        sr += (double)ref[i] * ref[i];
        if (e > maxe) maxe = e;
        if (!(e <= atol + rtol * fabs(ref[i]))) {
            if (first < 0) first = i;
            bad++;
        }
    }
    printf("\n    %-58s n=%-7lld NMSE=%.2e max|err|=%.2e", what, (long long)n, sr > 0 ? se / sr : se, maxe);
    if (bad)
        printf("  %lld outside tolerance, first [%lld] got %.9g ref %.9g", (long long)bad, (long long)first,
               got[first], ref[first]);
    return bad;
}

void ss_test_cov16_pair(const float *x, int64_t ldx, const float *m, int64_t n, int64_t i, int64_t j, double *ref,
                        double *sum, double *exact) {
    *ref = *sum = *exact = 0;
    for (int64_t r = 0; r < n; r++) {
        const float ai = x[r * ldx + i] - m[i], aj = x[r * ldx + j] - m[j];
        const double a = ss_bf16_to_f32(ss_f32_to_bf16(ai)), b = ss_bf16_to_f32(ss_f32_to_bf16(aj));
        *ref += a * b, *sum += fabs(a * b), *exact += (double)ai * aj;
    }
}
