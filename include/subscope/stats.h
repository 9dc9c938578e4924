/* Streaming statistics of d-dimensional activation vectors: count, mean and
 * the co-moment matrix M2 = sum (x - mean)(x - mean)^T, kept in fp64 and
 * merged with Chan et al.'s parallel update, so results do not depend on how
 * the rows were chunked (beyond rounding). Each chunk is centred on its own
 * mean before its products are formed, so a mean far larger than the spread
 * does not cancel (no E[x^2] - E[x]^2). */
#ifndef SUBSCOPE_STATS_H
#define SUBSCOPE_STATS_H

#include <stdint.h>
#include "subscope/error.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ss_moments {
    int64_t d;
    int64_t count;
    int want_m2;     /* 0: mean only */
    double *mean;    /* [d] */
    double *m2;      /* [d, d] row-major; the lower triangle (i >= j) is authoritative */
} ss_moments;

ss_status ss_moments_init(ss_moments *m, int64_t d, int want_m2);
void ss_moments_free(ss_moments *m);
void ss_moments_reset(ss_moments *m);

/* Adds n rows of x (fp32, row i at x + i*ld). */
ss_status ss_moments_add_f32(ss_moments *m, const float *x, int64_t n, int64_t ld);
/* Adds a chunk already reduced elsewhere (e.g. on a GPU): its count, mean
 * [d] and co-moment about that mean [d,d] (lower triangle read). */
ss_status ss_moments_add_partial(ss_moments *m, int64_t count, const double *mean, const double *m2);
/* a += b (Chan's update). Both must have the same d and want_m2. */
ss_status ss_moments_merge(ss_moments *a, const ss_moments *b);

/* Sample covariance M2/(count-1), full symmetric [d,d]; needs count >= 2.
 * Here and in ss_moments_corr the output may be m->m2 itself (in place).
 * Both run on the thread pool (ss_parallel_for), bit for bit as one thread. */
ss_status ss_moments_cov(const ss_moments *m, double *cov);
/* Correlation cov_ij / sqrt(cov_ii cov_jj), full [d,d], 1 on the diagonal;
 * entries involving a unit of zero variance are NaN (undefined, not 0). */
ss_status ss_moments_corr(const ss_moments *m, double *corr);

/* The k largest eigenvalues (descending) and their unit eigenvectors [k, d]
 * of a symmetric [d,d] matrix (LAPACK dsyevr on the CPU). Sign convention:
 * each vector's component of largest magnitude is positive (ties: lowest
 * index), so results are deterministic across runs and machines. */
ss_status ss_pca_top(const double *sym, int64_t d, int64_t k, double *values, double *vectors);
/* The same, using sym as the solver's workspace: its contents are lost. No
 * copy of the matrix (2 GiB at d = 16384) is made on the way. */
ss_status ss_pca_top_destroy(double *sym, int64_t d, int64_t k, double *values, double *vectors);
/* That sign convention, applied to one vector of length d. */
void ss_pca_fix_sign(double *v, int64_t d);

#ifdef __cplusplus
}
#endif
#endif
