/* h5cmp: compares the numeric datasets of two HDF5 files, for golden tests.
 *
 *   h5cmp [--atol A] [--rtol R] [--nmse X] [--only PREFIX]... [--quiet] EXPECTED.h5 ACTUAL.h5
 *
 * Every dataset of EXPECTED (recursively, dimension scales excepted) must be
 * in ACTUAL with the same shape.  Integers must be equal; a float element
 * passes when |a-e| <= atol + rtol*|e|, an expected NaN needs an actual NaN
 * (padding is NaN in both) and an expected infinity the same infinity.
 * With --nmse X a float dataset is judged as a whole instead: it passes when
 * sum (a-e)^2 / sum e^2 <= X (and the NaN/infinity rules hold), the check for
 * reduced-precision runs (bf16), where one rounding that falls the other way
 * moves single elements far more than the whole.
 * Exit 0: all equal within tolerance; 1: a difference; 2: usage or I/O error. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "subscope/error.h"
#include "subscope/h5out.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: h5cmp [--atol A] [--rtol R] [--nmse X] [--only PREFIX]... [--quiet] EXPECTED.h5 ACTUAL.h5\n"
            "  compares every dataset of EXPECTED with ACTUAL: integers exactly, floats with\n"
            "  |a-e| <= atol + rtol*|e| (defaults atol=1e-6, rtol=1e-5); expected NaN needs NaN.\n"
            "  --nmse X       judge each float dataset by sum (a-e)^2 / sum e^2 <= X instead\n"
            "                 of element by element (reduced-precision runs)\n"
            "  --only PREFIX  compare only datasets whose path starts with PREFIX (repeatable)\n"
            "  --quiet        print only failures\n"
            "  exit status: 0 all ok, 1 some dataset differs or is missing, 2 usage or I/O error\n");
}

static int parse_tol(const char *s, double *out) {
    char *end;
    double v = strtod(s, &end);
    if (end == s || *end || !(v >= 0) || isinf(v)) return 0;
    *out = v;
    return 1;
}

static void fmt_shape(char *buf, size_t n, const ss_h5_info *in) {
    size_t k = (size_t)snprintf(buf, n, "[");
    for (int i = 0; i < in->ndim && k < n; i++)
        k += (size_t)snprintf(buf + k, n - k, "%s%lld", i ? "," : "", (long long)in->dims[i]);
    if (k < n) snprintf(buf + k, n - k, "]");
}

static void fmt_index(char *buf, size_t n, const ss_h5_info *in, size_t flat) {
    int64_t idx[SS_H5_MAX_DIMS];
    for (int i = in->ndim - 1; i >= 0; i--) {
        idx[i] = in->dims[i] ? (int64_t)(flat % (size_t)in->dims[i]) : 0;
        flat = in->dims[i] ? flat / (size_t)in->dims[i] : 0;
    }
    size_t k = (size_t)snprintf(buf, n, "[");
    for (int i = 0; i < in->ndim && k < n; i++)
        k += (size_t)snprintf(buf + k, n - k, "%s%lld", i ? "," : "", (long long)idx[i]);
    if (k < n) snprintf(buf + k, n - k, "]");
}

typedef struct {
    double max_abs, max_rel, sum_d2, sum_e2;
    size_t n_bad, first_bad;
    double bad_e, bad_a;
} cmp_stats;

static void cmp_float(const double *e, const double *a, size_t n, double atol, double rtol, cmp_stats *s) {
    for (size_t i = 0; i < n; i++) {
        double ev = e[i], av = a[i];
        int ok;
        if (isnan(ev)) ok = isnan(av);
        else if (isinf(ev)) ok = av == ev;
        else if (!isfinite(av)) ok = 0;
        else {
            double d = fabs(av - ev);
            ok = d <= atol + rtol * fabs(ev);
            if (d > s->max_abs) s->max_abs = d;
            if (ev != 0 && d / fabs(ev) > s->max_rel) s->max_rel = d / fabs(ev);
            s->sum_d2 += d * d;
            s->sum_e2 += ev * ev;
        }
        if (!ok) {
            if (s->n_bad++ == 0) {
                s->first_bad = i;
                s->bad_e = ev;
                s->bad_a = av;
            }
        }
    }
}

static void cmp_int(const int64_t *e, const int64_t *a, size_t n, cmp_stats *s) {
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)e[i]);
        if (d > s->max_abs) s->max_abs = d;
        if (e[i] != 0 && d / fabs((double)e[i]) > s->max_rel) s->max_rel = d / fabs((double)e[i]);
        s->sum_d2 += d * d;
        s->sum_e2 += (double)e[i] * (double)e[i];
        if (a[i] != e[i] && s->n_bad++ == 0) {
            s->first_bad = i;
            s->bad_e = (double)e[i];
            s->bad_a = (double)a[i];
        }
    }
}

static int matches(const char *path, char **only, int n_only) {
    if (n_only == 0) return 1;
    for (int i = 0; i < n_only; i++) {
        const char *p = only[i];
        /* "--only acts" and "--only /acts" mean the same. */
        if (p[0] != '/' && path[0] == '/') {
            if (!strncmp(path + 1, p, strlen(p))) return 1;
        } else if (!strncmp(path, p, strlen(p))) {
            return 1;
        }
    }
    return 0;
}

int main(int argc, char **argv) {
    double atol = 1e-6, rtol = 1e-5, nmse_max = -1;
    int quiet = 0, n_only = 0;
    char **only = calloc((size_t)argc, sizeof *only);
    const char *files[2] = {NULL, NULL};
    int n_files = 0;
    if (!only) return 2;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            free(only);
            return 0;
        } else if (!strcmp(a, "--atol") || !strcmp(a, "--rtol") || !strcmp(a, "--nmse")) {
            double *dst = a[2] == 'a' ? &atol : a[2] == 'r' ? &rtol : &nmse_max;
            if (i + 1 >= argc || !parse_tol(argv[i + 1], dst)) {
                fprintf(stderr, "h5cmp: %s needs a non-negative number\n", a);
                usage(stderr);
                free(only);
                return 2;
            }
            i++;
        } else if (!strcmp(a, "--only")) {
            if (i + 1 >= argc || !argv[i + 1][0]) {
                fprintf(stderr, "h5cmp: --only needs a dataset path prefix\n");
                free(only);
                return 2;
            }
            only[n_only++] = argv[++i];
        } else if (!strcmp(a, "--quiet") || !strcmp(a, "-q")) {
            quiet = 1;
        } else if (a[0] == '-' && a[1]) {
            fprintf(stderr, "h5cmp: unknown option %s\n", a);
            usage(stderr);
            free(only);
            return 2;
        } else if (n_files < 2) {
            files[n_files++] = a;
        } else {
            fprintf(stderr, "h5cmp: too many files (%s)\n", a);
            usage(stderr);
            free(only);
            return 2;
        }
    }
    if (n_files != 2) {
        fprintf(stderr, "h5cmp: need EXPECTED.h5 and ACTUAL.h5\n");
        usage(stderr);
        free(only);
        return 2;
    }

    ss_h5_reader *re = NULL, *ra = NULL;
    char **names = NULL;
    size_t n_names = 0;
    int rc = 0;
    if (ss_h5_open_read(files[0], &re) != SS_OK || ss_h5_open_read(files[1], &ra) != SS_OK ||
        ss_h5_list(re, "/", 1, &names, &n_names) != SS_OK) {
        fprintf(stderr, "h5cmp: %s\n", ss_last_error());
        rc = 2;
        goto done;
    }

    int n_cmp = 0, n_fail = 0, n_skip = 0;
    for (size_t k = 0; k < n_names && rc != 2; k++) {
        const char *p = names[k];
        ss_h5_info ie, ia;
        if (ss_h5_dset_info(re, p, &ie) != SS_OK) {
            fprintf(stderr, "h5cmp: %s\n", ss_last_error());
            rc = 2;
            break;
        }
        if (ie.is_scale || !matches(p, only, n_only)) continue;
        char shape[256], shape_a[256];
        fmt_shape(shape, sizeof shape, &ie);
        if (ie.cls != SS_H5_CLASS_INT && ie.cls != SS_H5_CLASS_FLOAT) {
            n_skip++;
            if (!quiet) printf("%s  %s  skipped (not numeric)\n", p, shape);
            continue;
        }
        n_cmp++;
        if (!ss_h5_exists(ra, p)) {
            n_fail++;
            printf("%s  %s  FAIL (missing in %s)\n", p, shape, files[1]);
            continue;
        }
        if (ss_h5_dset_info(ra, p, &ia) != SS_OK) {
            n_fail++;
            printf("%s  %s  FAIL (%s)\n", p, shape, ss_last_error());
            continue;
        }
        fmt_shape(shape_a, sizeof shape_a, &ia);
        int same_shape = ie.ndim == ia.ndim;
        for (int i = 0; same_shape && i < ie.ndim; i++) same_shape = ie.dims[i] == ia.dims[i];
        if (!same_shape) {
            n_fail++;
            printf("%s  %s  FAIL (shape %s in %s)\n", p, shape, shape_a, files[1]);
            continue;
        }
        if (ia.cls != ie.cls) {
            n_fail++;
            printf("%s  %s  FAIL (%s in %s, %s in %s)\n", p, shape, ie.cls == SS_H5_CLASS_INT ? "integer" : "float",
                   files[0], ia.cls == SS_H5_CLASS_INT ? "integer" : ia.cls == SS_H5_CLASS_FLOAT ? "float" : "not numeric",
                   files[1]);
            continue;
        }
        ss_h5_type as = ie.cls == SS_H5_CLASS_INT ? SS_H5_I64 : SS_H5_F64;
        void *de = NULL, *da = NULL;
        size_t ne = 0, na = 0;
        if (ss_h5_read(re, p, as, &de, &ne, NULL) != SS_OK || ss_h5_read(ra, p, as, &da, &na, NULL) != SS_OK) {
            fprintf(stderr, "h5cmp: %s\n", ss_last_error());
            free(de);
            free(da);
            rc = 2;
            break;
        }
        cmp_stats s = {0};
        const int whole = as == SS_H5_F64 && nmse_max >= 0;
        if (as == SS_H5_F64) cmp_float(de, da, ne, whole ? INFINITY : atol, whole ? 0 : rtol, &s);
        else cmp_int(de, da, ne, &s);
        free(de);
        free(da);
        double nmse = s.sum_e2 > 0 ? s.sum_d2 / s.sum_e2 : s.sum_d2 > 0 ? INFINITY : 0.0;
        const int nmse_bad = whole && !(nmse <= nmse_max);
        if (s.n_bad || nmse_bad) n_fail++;
        if (s.n_bad || nmse_bad || !quiet) {
            printf("%s  %s  max_abs=%.3e  max_rel=%.3e  nmse=%.3e  %s", p, shape, s.max_abs, s.max_rel, nmse,
                   s.n_bad || nmse_bad ? "FAIL" : "ok");
            if (nmse_bad) printf(" (nmse above %g)", nmse_max);
            if (s.n_bad) {
                char idx[256];
                fmt_index(idx, sizeof idx, &ie, s.first_bad);
                printf(" (%zu of %zu elements differ; first at %s: expected %.9g, actual %.9g)", s.n_bad, ne, idx,
                       s.bad_e, s.bad_a);
            }
            printf("\n");
        }
    }
    if (rc != 2) {
        if (n_cmp == 0) {
            printf("h5cmp: FAIL: no numeric dataset of %s matched\n", files[0]);
            rc = 1;
        } else {
            rc = n_fail ? 1 : 0;
            if (!quiet || n_fail)
                printf(nmse_max >= 0 ? "h5cmp: %d datasets compared, %d ok, %d FAIL, %d skipped (floats: nmse <= %g)\n"
                                     : "h5cmp: %d datasets compared, %d ok, %d FAIL, %d skipped (atol=%g rtol=%g)\n",
                       n_cmp, n_cmp - n_fail, n_fail, n_skip, nmse_max >= 0 ? nmse_max : atol, rtol);
        }
    }
done:
    ss_h5_free_names(names, n_names);
    ss_h5_close_read(re);
    ss_h5_close_read(ra);
    free(only);
    return rc;
}
