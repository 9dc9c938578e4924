/* statsref: the reference statistics for collect's tests, computed the plain
 * way (two passes in float64, all rows in memory) from the activations that
 * `subscope forward` wrote:
 *
 *   statsref FORWARD.h5 OUT.h5 [last]
 *
 * For every /acts/<site> (per-token sites) it writes /stats/<site>/count,
 * mean, cov and corr over the real positions (or only each prompt's last
 * one), in collect's layout, so h5cmp can compare the two files. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "subscope/h5out.h"

static int fail(const char *what) {
    fprintf(stderr, "statsref: %s: %s\n", what, ss_last_error());
    return 2;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        const int help = argc == 2 && !strcmp(argv[1], "--help");
        fprintf(help ? stdout : stderr, "usage: statsref FORWARD.h5 OUT.h5 [last]\n");
        return help ? 0 : 2;
    }
    int last = argc > 3 && !strcmp(argv[3], "last");
    ss_h5_reader *r;
    if (ss_h5_open_read(argv[1], &r)) return fail(argv[1]);
    int32_t *lens;
    size_t n_prompts;
    if (ss_h5_read_i32(r, "/lengths", &lens, &n_prompts, NULL)) return fail("/lengths");
    char **paths;
    size_t np;
    if (ss_h5_list(r, "/acts", 1, &paths, &np)) return fail("/acts");
    ss_h5 *h;
    if (ss_h5_create(argv[2], &h)) return fail(argv[2]);
    for (size_t k = 0; k < np; k++) {
        ss_h5_info in;
        float *x;
        size_t n;
        if (ss_h5_read_f32(r, paths[k], &x, &n, &in)) return fail(paths[k]);
        if (strstr(paths[k], "hook_pattern")) { free(x); continue; }
        int64_t N = in.dims[0], T = in.dims[1], d = 1;
        for (int i = 2; i < in.ndim; i++) d *= in.dims[i];
        double *mean = calloc((size_t)d, sizeof(double)), *cov = calloc((size_t)(d * d), sizeof(double));
        double *corr = calloc((size_t)(d * d), sizeof(double));
        int64_t count = 0;
        for (int64_t p = 0; p < N; p++)
            for (int64_t t = last ? lens[p] - 1 : 0; t < lens[p]; t++, count++)
                for (int64_t i = 0; i < d; i++) mean[i] += x[(p * T + t) * d + i];
        for (int64_t i = 0; i < d; i++) mean[i] /= (double)count;
        for (int64_t p = 0; p < N; p++)
            for (int64_t t = last ? lens[p] - 1 : 0; t < lens[p]; t++) {
                const float *row = x + (p * T + t) * d;
                for (int64_t i = 0; i < d; i++)
                    for (int64_t j = 0; j <= i; j++) cov[i * d + j] += (row[i] - mean[i]) * (row[j] - mean[j]);
            }
        for (int64_t i = 0; i < d; i++)
            for (int64_t j = 0; j <= i; j++) cov[j * d + i] = cov[i * d + j] /= (double)(count - 1);
        for (int64_t i = 0; i < d; i++)
            for (int64_t j = 0; j < d; j++) {
                double v = cov[i * d + i] * cov[j * d + j];
                corr[i * d + j] = i == j && v > 0 ? 1.0 : v > 0 ? cov[i * d + j] / sqrt(v) : NAN;
            }
        const char *site = paths[k] + strlen("/acts/");
        char p[512];
        int64_t dd[2] = {d, d};
        snprintf(p, sizeof p, "/stats/%s/count", site);
        if (ss_h5_write_array(h, p, SS_H5_I64, 0, NULL, NULL, &count)) return fail(p);
        snprintf(p, sizeof p, "/stats/%s/mean", site);
        if (ss_h5_write_array(h, p, SS_H5_F64, 1, &d, NULL, mean)) return fail(p);
        snprintf(p, sizeof p, "/stats/%s/cov", site);
        if (ss_h5_write_array(h, p, SS_H5_F64, 2, dd, NULL, cov)) return fail(p);
        snprintf(p, sizeof p, "/stats/%s/corr", site);
        if (ss_h5_write_array(h, p, SS_H5_F64, 2, dd, NULL, corr)) return fail(p);
        free(x);
        free(mean);
        free(cov);
        free(corr);
    }
    ss_h5_free_names(paths, np);
    free(lens);
    ss_h5_close_read(r);
    if (ss_h5_commit(h)) return fail(argv[2]);
    return 0;
}
