/* Streaming mean / co-moment accumulation in fp64 and the top eigenpairs of a
 * symmetric matrix (include/subscope/stats.h). */
#include "subscope/stats.h"

#include <float.h>
#include <limits.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "subscope/util.h"
#include "stats_internal.h"

#ifdef SS_HAVE_BLAS
#include <cblas.h>
#endif

/* Rows of a chunk centred at a time: bounds the fp64 scratch to about
 * SCRATCH_ELEMS doubles (32 MiB) while keeping blocks tall enough for dsyrk
 * to run near its peak rate; never fewer than 256 rows. */
#define SCRATCH_ELEMS ((int64_t)4 << 20)
#define MIN_BLOCK_ROWS 256
#define MAX_BLOCK_ROWS 4096

ss_status ss_moments_init(ss_moments *m, int64_t d, int want_m2) {
    memset(m, 0, sizeof *m);
    if (d <= 0) return ss_errorf(SS_ERR_ARG, "moments: dimension d = %lld must be positive", (long long)d);
    size_t dd;
    if (!ss_mul_ok((size_t)d, (size_t)d, &dd) || !ss_mul_ok(dd, sizeof(double), &dd))
        return ss_errorf(SS_ERR_NOMEM, "moments: [%lld, %lld] co-moment matrix overflows 64 bits", (long long)d,
                         (long long)d);
    m->mean = ss_calloc((size_t)d, sizeof(double), "moments: mean vector");
    if (!m->mean) return SS_ERR_NOMEM;
    if (want_m2) {
        /* calloc: at d = 16384 this is 2 GiB and the kernel hands out zero
         * pages lazily, so an unused upper triangle costs no memory. */
        m->m2 = ss_calloc((size_t)d * (size_t)d, sizeof(double), "moments: co-moment matrix");
        if (!m->m2) {
            char sz[32];
            ss_fmt_bytes(sz, sizeof sz, (double)dd);
            free(m->mean);
            m->mean = NULL;
            return ss_errorf(SS_ERR_NOMEM, "moments: out of memory allocating the fp64 co-moment matrix [%lld, %lld] (%s)",
                             (long long)d, (long long)d, sz);
        }
    }
    m->d = d;
    m->want_m2 = want_m2 ? 1 : 0;
    return SS_OK;
}

void ss_moments_free(ss_moments *m) {
    if (!m) return;
    free(m->mean);
    free(m->m2);
    memset(m, 0, sizeof *m);
}

void ss_moments_reset(ss_moments *m) {
    if (!m || !m->mean) return;
    m->count = 0;
    memset(m->mean, 0, (size_t)m->d * sizeof(double));
    if (m->m2) memset(m->m2, 0, (size_t)m->d * (size_t)m->d * sizeof(double));
}

/* m2 (lower) += alpha * v v^T */
static void syr_lower(int64_t d, double alpha, const double *v, double *m2) {
#ifdef SS_HAVE_BLAS
    if (d <= INT_MAX) {
        cblas_dsyr(CblasRowMajor, CblasLower, (int)d, alpha, v, 1, m2, (int)d);
        return;
    }
#endif
    for (int64_t i = 0; i < d; i++) {
        double a = alpha * v[i];
        double *row = m2 + i * d;
        for (int64_t j = 0; j <= i; j++) row[j] += a * v[j];
    }
}

/* m2 (lower) += C^T C for a row-major block C [b, d]. */
static void syrk_lower(int64_t d, int64_t b, const double *c, double *m2) {
#ifdef SS_HAVE_BLAS
    if (d <= INT_MAX) {
        cblas_dsyrk(CblasRowMajor, CblasLower, CblasTrans, (int)d, (int)b, 1.0, c, (int)d, 1.0, m2, (int)d);
        return;
    }
#endif
    for (int64_t r = 0; r < b; r++) {
        const double *x = c + r * d;
        for (int64_t i = 0; i < d; i++) {
            double xi = x[i];
            if (xi == 0.0) continue;
            double *row = m2 + i * d;
            for (int64_t j = 0; j <= i; j++) row[j] += xi * x[j];
        }
    }
}

/* Chan et al.: folds a chunk of nb rows with mean mb, whose co-moment has
 * already been added to m->m2 (or is added by the caller), into (count, mean);
 * adds the between-means term delta delta^T na nb / n to m->m2. */
static void chan_fold(ss_moments *m, int64_t nb, const double *mb, double *delta) {
    int64_t na = m->count, n = na + nb;
    double fb = (double)nb / (double)n;
    for (int64_t i = 0; i < m->d; i++) {
        delta[i] = mb[i] - m->mean[i];
        m->mean[i] += delta[i] * fb;
    }
    if (m->want_m2 && na > 0) syr_lower(m->d, (double)na * fb, delta, m->m2);
    m->count = n;
}

ss_status ss_moments_add_f32(ss_moments *m, const float *x, int64_t n, int64_t ld) {
    if (!m || !m->mean) return ss_errorf(SS_ERR_ARG, "moments: add to an uninitialised accumulator");
    int64_t d = m->d;
    if (n < 0) return ss_errorf(SS_ERR_ARG, "moments: negative row count %lld", (long long)n);
    if (n == 0) return SS_OK;
    if (!x) return ss_errorf(SS_ERR_ARG, "moments: NULL data for %lld rows", (long long)n);
    if (ld < d)
        return ss_errorf(SS_ERR_ARG, "moments: row stride %lld is less than d = %lld", (long long)ld, (long long)d);
    if (m->count > INT64_MAX - n) return ss_errorf(SS_ERR_ARG, "moments: row count overflows int64");

    int64_t block = SCRATCH_ELEMS / d;
    if (block < MIN_BLOCK_ROWS) block = MIN_BLOCK_ROWS;
    if (block > MAX_BLOCK_ROWS) block = MAX_BLOCK_ROWS;
    if (block > n) block = n;
    if (!m->want_m2) block = 0;

    double *mb = ss_malloc(2 * (size_t)d * sizeof(double), "moments: chunk mean");
    if (!mb) return SS_ERR_NOMEM;
    double *delta = mb + d;
    double *c = NULL;
    if (block > 0 && n > 1) {
        c = ss_malloc((size_t)block * (size_t)d * sizeof(double), "moments: centred block");
        if (!c) {
            free(mb);
            return SS_ERR_NOMEM;
        }
    }

    /* The chunk mean in fp64, then one correction pass (the mean of the
     * residuals) so it is as good as a two-pass mean even for long chunks. */
    memset(mb, 0, (size_t)d * sizeof(double));
    for (int64_t r = 0; r < n; r++) {
        const float *xr = x + r * ld;
        for (int64_t i = 0; i < d; i++) mb[i] += (double)xr[i];
    }
    for (int64_t i = 0; i < d; i++) mb[i] /= (double)n;
    memset(delta, 0, (size_t)d * sizeof(double));
    for (int64_t r = 0; r < n; r++) {
        const float *xr = x + r * ld;
        for (int64_t i = 0; i < d; i++) delta[i] += (double)xr[i] - mb[i];
    }
    for (int64_t i = 0; i < d; i++) mb[i] += delta[i] / (double)n;

    /* The chunk's own co-moment about its own mean goes straight into m2;
     * Chan's between-means term is added by chan_fold. */
    if (c) {
        for (int64_t r0 = 0; r0 < n; r0 += block) {
            int64_t b = n - r0 < block ? n - r0 : block;
            for (int64_t r = 0; r < b; r++) {
                const float *xr = x + (r0 + r) * ld;
                double *cr = c + r * d;
                for (int64_t i = 0; i < d; i++) cr[i] = (double)xr[i] - mb[i];
            }
            syrk_lower(d, b, c, m->m2);
        }
    }
    chan_fold(m, n, mb, delta);
    free(c);
    free(mb);
    return SS_OK;
}

ss_status ss_moments_add_partial(ss_moments *m, int64_t count, const double *mean, const double *m2) {
    if (!m || !m->mean) return ss_errorf(SS_ERR_ARG, "moments: add to an uninitialised accumulator");
    if (count < 0) return ss_errorf(SS_ERR_ARG, "moments: partial with negative count %lld", (long long)count);
    if (count == 0) return SS_OK;
    if (!mean) return ss_errorf(SS_ERR_ARG, "moments: partial of %lld rows without a mean", (long long)count);
    if (m->want_m2 && !m2)
        return ss_errorf(SS_ERR_ARG, "moments: partial of %lld rows without a co-moment matrix", (long long)count);
    if (m->count > INT64_MAX - count) return ss_errorf(SS_ERR_ARG, "moments: row count overflows int64");
    int64_t d = m->d;
    double *delta = ss_malloc((size_t)d * sizeof(double), "moments: mean difference");
    if (!delta) return SS_ERR_NOMEM;
    if (m->want_m2) {
        for (int64_t i = 0; i < d; i++) {
            const double *src = m2 + i * d;
            double *dst = m->m2 + i * d;
            for (int64_t j = 0; j <= i; j++) dst[j] += src[j];
        }
    }
    chan_fold(m, count, mean, delta);
    free(delta);
    return SS_OK;
}

ss_status ss_moments_merge(ss_moments *a, const ss_moments *b) {
    if (!a || !a->mean || !b || !b->mean) return ss_errorf(SS_ERR_ARG, "moments: merge of an uninitialised accumulator");
    if (a->d != b->d)
        return ss_errorf(SS_ERR_ARG, "moments: merge of d = %lld into d = %lld", (long long)b->d, (long long)a->d);
    if (a->want_m2 != b->want_m2)
        return ss_errorf(SS_ERR_ARG, "moments: merge of a %s accumulator into a %s one", b->want_m2 ? "covariance" : "mean-only",
                         a->want_m2 ? "covariance" : "mean-only");
    if (a == b) return ss_errorf(SS_ERR_ARG, "moments: merge of an accumulator into itself");
    return ss_moments_add_partial(a, b->count, b->mean, b->m2);
}

static ss_status need_m2(const ss_moments *m, const char *what) {
    if (!m || !m->mean) return ss_errorf(SS_ERR_ARG, "moments: %s of an uninitialised accumulator", what);
    if (!m->want_m2) return ss_errorf(SS_ERR_ARG, "moments: %s needs the co-moment matrix (accumulator is mean-only)", what);
    if (m->count < 2)
        return ss_errorf(SS_ERR_ARG, "moments: %s needs at least 2 rows, have %lld", what, (long long)m->count);
    return SS_OK;
}

/* The covariance or correlation from the co-moments, [d,d] with both
 * triangles, in 32-row blocks on the thread pool. Block b scales its rows'
 * lower triangle (i in [b TB, b TB + TB), j <= i) and then mirrors them into
 * the upper triangle's columns of the same i, tile by tile (each tile's rows
 * and columns stay in cache: a row-by-row mirror writes a new cache line per
 * element once d is in the thousands, ~1 s for 12 sites of 3072). The blocks
 * write disjoint entries: a lower one (r, c <= r) of another block is never an
 * upper one (j, i > j) of this one. out may alias m2: each lower entry is read
 * before anything but itself is written, and the upper triangle is never
 * read. */
enum { TRI_TB = 32 };
typedef struct {
    const double *m2;
    double *out;
    int64_t d;
    double inv;       /* cov: 1 / (count - 1) */
    const double *sd; /* corr: sqrt of the diagonal; NULL for cov */
} tri_job;

static void tri_block(void *ctx, int64_t b) {
    const tri_job *t = ctx;
    const int64_t d = t->d, ib = b * TRI_TB, ie = ib + TRI_TB < d ? ib + TRI_TB : d;
    for (int64_t i = ib; i < ie; i++)
        for (int64_t j = 0; j <= i; j++) {
            double v;
            if (!t->sd) v = t->m2[i * d + j] * t->inv;
            else if (!(t->sd[i] > 0.0) || !(t->sd[j] > 0.0)) v = NAN;
            else if (i == j) v = 1.0;
            else {
                v = t->m2[i * d + j] / (t->sd[i] * t->sd[j]);
                if (v > 1.0) v = 1.0; /* rounding only */
                if (v < -1.0) v = -1.0;
            }
            t->out[i * d + j] = v;
        }
    double *a = t->out;
    for (int64_t jb = 0; jb <= ib; jb += TRI_TB) {
        const int64_t je = jb + TRI_TB < d ? jb + TRI_TB : d;
        for (int64_t j = jb; j < je; j++)
            for (int64_t i = ib > j + 1 ? ib : j + 1; i < ie; i++) a[j * d + i] = a[i * d + j];
    }
}

ss_status ss_moments_cov(const ss_moments *m, double *cov) {
    SS_TRY(need_m2(m, "covariance"));
    tri_job t = {m->m2, cov, m->d, 1.0 / (double)(m->count - 1), NULL};
    ss_parallel_for((m->d + TRI_TB - 1) / TRI_TB, tri_block, &t);
    return SS_OK;
}

ss_status ss_moments_corr(const ss_moments *m, double *corr) {
    SS_TRY(need_m2(m, "correlation"));
    int64_t d = m->d;
    double *sd = ss_malloc((size_t)d * sizeof(double), "moments: standard deviations");
    if (!sd) return SS_ERR_NOMEM;
    for (int64_t i = 0; i < d; i++) sd[i] = sqrt(m->m2[i * d + i]); /* the 1/(count-1) cancels */
    tri_job t = {m->m2, corr, d, 0.0, sd};
    ss_parallel_for((d + TRI_TB - 1) / TRI_TB, tri_block, &t);
    free(sd);
    return SS_OK;
}

/* ---- eigenpairs ---------------------------------------------------------- */

static ss_status pca_args(const double *sym, int64_t d, int64_t k, const double *values, const double *vectors) {
    if (d <= 0) return ss_errorf(SS_ERR_ARG, "pca: dimension d = %lld must be positive", (long long)d);
    if (k < 1 || k > d)
        return ss_errorf(SS_ERR_ARG, "pca: k = %lld components requested, must be in 1..d (d = %lld)", (long long)k,
                         (long long)d);
    if (!sym || !values || !vectors) return ss_errorf(SS_ERR_ARG, "pca: NULL matrix or output");
    return SS_OK;
}

/* Largest-magnitude component positive; ties go to the lowest index. */
void ss_pca_fix_sign(double *v, int64_t d) {
    int64_t best = 0;
    double bm = fabs(v[0]);
    for (int64_t i = 1; i < d; i++)
        if (fabs(v[i]) > bm) {
            bm = fabs(v[i]);
            best = i;
        }
    if (v[best] < 0)
        for (int64_t i = 0; i < d; i++) v[i] = -v[i];
}

#ifdef SS_HAVE_LAPACK
/* LAPACK's Fortran entry point (OpenBLAS exports it); the trailing size_t
 * arguments are the hidden lengths of the character arguments that gfortran
 * (>= 8) appends. */
extern void dsyevr_(const char *jobz, const char *range, const char *uplo, const int *n, double *a, const int *lda,
                    const double *vl, const double *vu, const int *il, const int *iu, const double *abstol, int *m,
                    double *w, double *z, const int *ldz, int *isuppz, double *work, const int *lwork, int *iwork,
                    const int *liwork, int *info, size_t jobz_len, size_t range_len, size_t uplo_len);

int ss_stats_have_lapack(void) { return 1; }

/* dsyevr on a, which it overwrites. The row-major lower triangle is the
 * column-major upper one, hence uplo 'U'. */
static ss_status lapack_top(double *a, int64_t d, int64_t k, double *values, double *vectors) {
    /* The zero matrix (a site without variance): dsyevr returns zero vectors
     * for it, where every vector is an eigenvector; the axes in order, as the
     * Jacobi solver gives them. The lower triangle is the authoritative half. */
    int zero = 1;
    for (int64_t i = 0; i < d && zero; i++)
        for (int64_t j = 0; j <= i && zero; j++) zero = a[i * d + j] == 0;
    if (zero) {
        memset(vectors, 0, (size_t)k * (size_t)d * sizeof(double));
        for (int64_t r = 0; r < k; r++) values[r] = 0, vectors[r * d + r] = 1;
        return SS_OK;
    }
    int n = (int)d, lda = n, ldz = n, il = (int)(d - k + 1), iu = n, found = 0, info = 0;
    double vl = 0, vu = 0, abstol = 0, wq = 0;
    int iwq = 0, lwork = -1, liwork = -1;
    double *w = ss_malloc((size_t)d * sizeof(double), "pca: eigenvalues");
    double *z = ss_malloc((size_t)d * (size_t)k * sizeof(double), "pca: eigenvectors");
    int *isuppz = ss_malloc(2 * (size_t)k * sizeof(int), "pca: eigenvector supports");
    double *work = NULL;
    int *iwork = NULL;
    ss_status st = SS_OK;
    if (!w || !z || !isuppz) {
        st = ss_errorf(SS_ERR_NOMEM, "pca: out of memory for %lld eigenvectors of d = %lld", (long long)k, (long long)d);
        goto out;
    }
    dsyevr_("V", "I", "U", &n, a, &lda, &vl, &vu, &il, &iu, &abstol, &found, w, z, &ldz, isuppz, &wq, &lwork, &iwq,
            &liwork, &info, 1, 1, 1);
    if (info != 0) {
        st = ss_errorf(SS_ERR_INTERNAL, "pca: dsyevr workspace query failed (info = %d)", info);
        goto out;
    }
    lwork = (int)wq + 1;
    liwork = iwq;
    work = ss_malloc((size_t)lwork * sizeof(double), "pca: dsyevr workspace");
    iwork = ss_malloc((size_t)liwork * sizeof(int), "pca: dsyevr workspace");
    if (!work || !iwork) {
        st = ss_errorf(SS_ERR_NOMEM, "pca: out of memory for dsyevr workspace (%d doubles)", lwork);
        goto out;
    }
    dsyevr_("V", "I", "U", &n, a, &lda, &vl, &vu, &il, &iu, &abstol, &found, w, z, &ldz, isuppz, work, &lwork, iwork,
            &liwork, &info, 1, 1, 1);
    if (info != 0 || found != (int)k) {
        st = ss_errorf(SS_ERR_INTERNAL, "pca: dsyevr failed on d = %lld (info = %d, %d of %lld eigenvalues)", (long long)d,
                       info, found, (long long)k);
        goto out;
    }
    /* LAPACK returns ascending eigenvalues; column j of z (contiguous) is
     * the vector of w[j]. */
    for (int64_t r = 0; r < k; r++) {
        int64_t j = k - 1 - r;
        values[r] = w[j];
        memcpy(vectors + r * d, z + j * d, (size_t)d * sizeof(double));
        ss_pca_fix_sign(vectors + r * d, d);
    }
out:
    free(w);
    free(z);
    free(isuppz);
    free(work);
    free(iwork);
    return st;
}

static ss_status lapack_args(const double *sym, int64_t d, int64_t k, const double *values, const double *vectors) {
    SS_TRY(pca_args(sym, d, k, values, vectors));
    if (d > INT_MAX / 2) return ss_errorf(SS_ERR_UNSUPPORTED, "pca: d = %lld is too large for LAPACK's int sizes", (long long)d);
    return SS_OK;
}

ss_status ss_pca_top_lapack(const double *sym, int64_t d, int64_t k, double *values, double *vectors) {
    SS_TRY(lapack_args(sym, d, k, values, vectors));
    size_t dd = (size_t)d * (size_t)d;
    double *a = ss_malloc(dd * sizeof(double), "pca: copy of the matrix");
    if (!a) {
        char sz[32];
        ss_fmt_bytes(sz, sizeof sz, (double)dd * sizeof(double));
        return ss_errorf(SS_ERR_NOMEM, "pca: out of memory copying the [%lld, %lld] matrix (%s)", (long long)d,
                         (long long)d, sz);
    }
    memcpy(a, sym, dd * sizeof(double));
    ss_status st = lapack_top(a, d, k, values, vectors);
    free(a);
    return st;
}
#else
int ss_stats_have_lapack(void) { return 0; }

ss_status ss_pca_top_lapack(const double *sym, int64_t d, int64_t k, double *values, double *vectors) {
    SS_TRY(pca_args(sym, d, k, values, vectors));
    return ss_errorf(SS_ERR_UNSUPPORTED, "pca: this build has no LAPACK (run 'make deps' for OpenBLAS)");
}
#endif

typedef struct {
    double v;
    int64_t i;
} val_idx;

static int by_value_desc(const void *pa, const void *pb) {
    const val_idx *a = pa, *b = pb;
    if (a->v > b->v) return -1;
    if (a->v < b->v) return 1;
    return a->i < b->i ? -1 : a->i > b->i;
}

ss_status ss_pca_top_jacobi(const double *sym, int64_t d, int64_t k, double *values, double *vectors) {
    SS_TRY(pca_args(sym, d, k, values, vectors));
    if (d > SS_JACOBI_MAX_D)
        return ss_errorf(SS_ERR_UNSUPPORTED,
                         "pca: d = %lld is too large for the built-in Jacobi solver (limit %d); build with LAPACK "
                         "('make deps' installs OpenBLAS)",
                         (long long)d, SS_JACOBI_MAX_D);
    size_t dd = (size_t)d * (size_t)d;
    double *a = ss_malloc(dd * sizeof(double), "pca: Jacobi matrix");
    double *vt = ss_malloc(dd * sizeof(double), "pca: Jacobi vectors"); /* row p = eigenvector p */
    val_idx *order = ss_malloc((size_t)d * sizeof *order, "pca: Jacobi order");
    ss_status st = SS_OK;
    if (!a || !vt || !order) {
        char sz[32];
        ss_fmt_bytes(sz, sizeof sz, 2.0 * (double)dd * sizeof(double));
        st = ss_errorf(SS_ERR_NOMEM, "pca: out of memory for the Jacobi solver's matrices (%s)", sz);
        goto out;
    }
    /* Symmetrise from the lower triangle, the authoritative half of m2. */
    double frob = 0;
    for (int64_t i = 0; i < d; i++)
        for (int64_t j = 0; j <= i; j++) {
            double v = sym[i * d + j];
            a[i * d + j] = a[j * d + i] = v;
            frob += (i == j ? 1.0 : 2.0) * v * v;
        }
    frob = sqrt(frob);
    memset(vt, 0, dd * sizeof(double));
    for (int64_t i = 0; i < d; i++) vt[i * d + i] = 1.0;

    /* An off-diagonal entry below these is treated as zero: it is far below
     * the rounding of the diagonal it would move. */
    const double rel = 1e-18, floor_abs = 1e-18 * frob + DBL_MIN;
    int converged = 0;
    for (int sweep = 0; sweep < 60 && !converged; sweep++) {
        int rotated = 0;
        for (int64_t p = 0; p < d - 1; p++)
            for (int64_t q = p + 1; q < d; q++) {
                double apq = a[p * d + q], app = a[p * d + p], aqq = a[q * d + q];
                if (fabs(apq) <= floor_abs || fabs(apq) <= rel * (fabs(app) + fabs(aqq))) {
                    a[p * d + q] = a[q * d + p] = 0.0;
                    continue;
                }
                rotated = 1;
                double tau = (aqq - app) / (2.0 * apq);
                double t = (tau >= 0 ? 1.0 : -1.0) / (fabs(tau) + sqrt(1.0 + tau * tau));
                double c = 1.0 / sqrt(1.0 + t * t), s = t * c;
                double *rp = a + p * d, *rq = a + q * d;
                for (int64_t j = 0; j < d; j++) {
                    double xp = rp[j], xq = rq[j];
                    rp[j] = c * xp - s * xq;
                    rq[j] = s * xp + c * xq;
                }
                for (int64_t j = 0; j < d; j++) { /* columns mirror the rows */
                    a[j * d + p] = rp[j];
                    a[j * d + q] = rq[j];
                }
                a[p * d + p] = app - t * apq;
                a[q * d + q] = aqq + t * apq;
                a[p * d + q] = a[q * d + p] = 0.0;
                double *vp = vt + p * d, *vq = vt + q * d;
                for (int64_t j = 0; j < d; j++) {
                    double xp = vp[j], xq = vq[j];
                    vp[j] = c * xp - s * xq;
                    vq[j] = s * xp + c * xq;
                }
            }
        if (!rotated) converged = 1;
    }
    if (!converged) {
        st = ss_errorf(SS_ERR_INTERNAL, "pca: Jacobi eigen-solver did not converge in 60 sweeps (d = %lld)", (long long)d);
        goto out;
    }
    for (int64_t i = 0; i < d; i++) order[i] = (val_idx){a[i * d + i], i};
    qsort(order, (size_t)d, sizeof *order, by_value_desc);
    for (int64_t r = 0; r < k; r++) {
        values[r] = order[r].v;
        memcpy(vectors + r * d, vt + order[r].i * d, (size_t)d * sizeof(double));
        ss_pca_fix_sign(vectors + r * d, d);
    }
out:
    free(a);
    free(vt);
    free(order);
    return st;
}

ss_status ss_pca_top(const double *sym, int64_t d, int64_t k, double *values, double *vectors) {
#ifdef SS_HAVE_LAPACK
    return ss_pca_top_lapack(sym, d, k, values, vectors);
#else
    return ss_pca_top_jacobi(sym, d, k, values, vectors);
#endif
}

ss_status ss_pca_top_destroy(double *sym, int64_t d, int64_t k, double *values, double *vectors) {
#ifdef SS_HAVE_LAPACK
    SS_TRY(lapack_args(sym, d, k, values, vectors));
    return lapack_top(sym, d, k, values, vectors);
#else
    return ss_pca_top_jacobi(sym, d, k, values, vectors);
#endif
}
