/* A tiny test harness: each TEST registers itself; bin/test_unit runs them all
 * (or those whose name contains argv[1]) and ends with "N passed, M failed". */
#ifndef SUBSCOPE_TEST_H
#define SUBSCOPE_TEST_H

#include <math.h>
#include <stdio.h>
#include <string.h>
#include "subscope/error.h"

void ss_test_register(const char *name, void (*fn)(void), const char *file);
void ss_test_fail(const char *file, int line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Directory of test data (tests/data), absolute or relative to the repo root. */
const char *ss_test_data_dir(void);
/* A fresh temporary directory for this test run (removed at exit). */
const char *ss_test_tmp_dir(void);

/* A forked child's stderr and end: reads read_fd (the pipe's read end, the write end already
 * closed here) into buf (at most cap - 1 bytes, NUL-terminated), closes it, waits for pid and
 * returns its wait status. */
int ss_test_child_wait(int pid, int read_fd, char *buf, size_t cap);

/* Numeric helpers (tests/unit/numeric.c): a seeded uniform draw in [-1, 1),
 * vectors of n such draws times amp or of one value (malloc'd; n may be 0),
 * and an elementwise check that prints the NMSE and the largest error and
 * returns how many elements lie outside atol + rtol*|ref| (NaN counts). */
#include <stdint.h>
float ss_test_frand(unsigned *s);
float *ss_test_rvec(int64_t n, unsigned seed, float amp);
float *ss_test_fvec(int64_t n, float val);
int64_t ss_test_compare(const char *what, const float *got, const float *ref, int64_t n, double atol, double rtol);
/* Column pair (i, j) of x [n rows, stride ldx] centred on m, each factor x - m (in fp32)
 * rounded to bf16 as the tensor-core covariance paths round it: *ref = the fp64 sum of the
 * rounded products, *sum = of their magnitudes, *exact = of the unrounded fp32 factors'. */
void ss_test_cov16_pair(const float *x, int64_t ldx, const float *m, int64_t n, int64_t i, int64_t j, double *ref,
                        double *sum, double *exact);

/* tests/unit/test_fsync.c: while nonzero, fsync in this binary fails with this errno without
 * syncing (EINVAL: a file system with no fsync for the file; EIO: a failing disk). */
extern int ss_test_fsync_errno;
/* ... and while nonzero, unlink fails with this errno without removing anything (a clean-up
 * after a failure that fails too: the first failure's errno must be the one reported). */
extern int ss_test_unlink_errno;
/* ... and while nonzero, unlink first sleeps this many milliseconds (a signal handler caught in
 * the middle of removing the temporaries). */
extern int ss_test_unlink_delay_ms;

#define TEST(name)                                                            \
    static void name(void);                                                   \
    __attribute__((constructor)) static void ss_test_reg_##name(void) {       \
        ss_test_register(#name, name, __FILE__);                              \
    }                                                                         \
    static void name(void)

#define CHECK(cond)                                                           \
    do {                                                                      \
        if (!(cond)) { ss_test_fail(__FILE__, __LINE__, "CHECK(%s)", #cond); return; } \
    } while (0)

#define CHECK_MSG(cond, ...)                                                  \
    do {                                                                      \
        if (!(cond)) { ss_test_fail(__FILE__, __LINE__, __VA_ARGS__); return; } \
    } while (0)

/* expr must return SS_OK; otherwise the failure shows the library's message. */
#define CHECK_OK(expr)                                                        \
    do {                                                                      \
        ss_status st_ = (expr);                                               \
        if (st_ != SS_OK) {                                                   \
            ss_test_fail(__FILE__, __LINE__, "%s returned %s: %s", #expr,     \
                         ss_status_name(st_), ss_last_error());               \
            return;                                                           \
        }                                                                     \
    } while (0)

/* expr must fail with `code` and a message containing `substr`. */
#define CHECK_ERR(expr, code, substr)                                         \
    do {                                                                      \
        ss_error_clear();                                                     \
        ss_status st_ = (expr);                                               \
        if (st_ != (code) || !strstr(ss_last_error(), (substr))) {            \
            ss_test_fail(__FILE__, __LINE__, "%s: wanted %s containing \"%s\", got %s: \"%s\"", \
                         #expr, ss_status_name(code), (substr), ss_status_name(st_), ss_last_error()); \
            return;                                                           \
        }                                                                     \
    } while (0)

#define CHECK_NEAR(a, b, tol)                                                 \
    do {                                                                      \
        double a_ = (a), b_ = (b);                                            \
        if (!(fabs(a_ - b_) <= (tol))) {                                      \
            ss_test_fail(__FILE__, __LINE__, "%s = %.9g, %s = %.9g, |diff| > %g", #a, a_, #b, b_, (double)(tol)); \
            return;                                                           \
        }                                                                     \
    } while (0)

#endif
