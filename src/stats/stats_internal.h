/* Internal to src/stats/: the eigen-solver used when LAPACK is absent, exposed
 * so the tests can check it on builds that do have LAPACK. */
#ifndef SUBSCOPE_STATS_INTERNAL_H
#define SUBSCOPE_STATS_INTERNAL_H

#include <stdint.h>
#include "subscope/error.h"

/* Cyclic Jacobi: all eigenpairs in O(d^3) per sweep (about 6-10 sweeps):
 * measured 0.2 s at d = 300 and 2 s at d = 600 on one core, so about a
 * minute or two at 2048; refused above that, where it would take many. */
#define SS_JACOBI_MAX_D 2048
ss_status ss_pca_top_jacobi(const double *sym, int64_t d, int64_t k, double *values, double *vectors);
/* ss_pca_top via LAPACK dsyevr; SS_ERR_UNSUPPORTED when built without LAPACK. */
ss_status ss_pca_top_lapack(const double *sym, int64_t d, int64_t k, double *values, double *vectors);
/* 1 when this build has LAPACK. */
int ss_stats_have_lapack(void);

#endif
