/* Whether the BLAS gives a row of a product the same bits whatever rows
 * share its call. OpenBLAS 0.3.21's SkylakeX and Cooperlake kernels sum in one
 * order whatever the call's shape; its Prescott (the generic SSE3 kernels it
 * takes on a CPU it does not know, as a virtual machine's unnamed Xeon),
 * Haswell and Zen kernels handle the rows past their unroll apart
 * (M 151 N 600 K 3000 in calls of 75 and 76 rows: 1064 of 90600 elements
 * differ). Tests that expect such bits ask which kernels run, and
 * otherwise compare within rounding. */
#ifndef SS_TEST_BLAS_ROWS_H
#define SS_TEST_BLAS_ROWS_H
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "subscope/backend.h"

#ifdef SS_HAVE_BLAS
char *openblas_get_corename(void) __attribute__((weak));
#endif

/* Whether the BLAS's kernels are ones measured to keep a row's bits (OpenBLAS's SkylakeX and
 * Cooperlake kernels; a product without BLAS is the built-in loops', which no split changes).
 * A probe of the BLAS itself was tried and dropped: its answer depended on the shapes and
 * threads of the calls it made, which are not exactly the product's. */
static int blas_rows_invariant(void) {
#ifdef SS_HAVE_BLAS
    const char *core = openblas_get_corename ? openblas_get_corename() : NULL;
    return core && (!strcmp(core, "SkylakeX") || !strcmp(core, "Cooperlake"));
#else
    return 1;
#endif
}
#endif
