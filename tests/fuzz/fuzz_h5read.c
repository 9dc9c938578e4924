/* libFuzzer target: subscope's HDF5 readers on a damaged file, the way
 * `show`, `report`, `discover` and `ablate --stats` read one: open it, read
 * the root's string attributes, list every dataset, and for each its shape,
 * axis names and (when small) its values, its first row as a hyperslab, and, square, its diagonal;
 * each dataset is also read as a statistic's count (one value, refused by its size whatever it
 * declares) and the root's numeric attributes are read. The seeds are small outputs of
 * forward, collect, attribute and ablate; the mutations are the damage.
 * Whatever the bytes, this must end in an error or in values, never a
 * crash (docs/DECISIONS.md, "A damaged file is refused by checksums").
 * libhdf5 keeps some allocations of a failed open until the library closes,
 * so leak detection is off here; the other targets cover our own code's. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "subscope/error.h"
#include "subscope/h5out.h"

const char *__asan_default_options(void);
const char *__asan_default_options(void) { return "detect_leaks=0"; }

static char path[96];

static void cleanup(void) { unlink(path); }

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!path[0]) {
        snprintf(path, sizeof path, "%s/ss_fuzz_h5_%ld.h5", access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp",
                 (long)getpid());
        atexit(cleanup); /* the file was left behind after every run */
    }
    FILE *f = fopen(path, "wb");
    if (!f) return 0;
    size_t w = fwrite(data, 1, size, f);
    if (fclose(f) != 0 || w != size) return 0;

    ss_h5_reader *r;
    if (ss_h5_open_read(path, &r) != SS_OK) return 0;
    static const char *attrs[] = {"format", "format_version", "model_path", "model_config", "command_line"};
    for (size_t i = 0; i < sizeof attrs / sizeof attrs[0]; i++) {
        char *s = NULL;
        if (ss_h5_read_attr_str(r, "/", attrs[i], &s) == SS_OK) free(s);
    }
    /* numeric attributes, as report and collect --resume read them */
    static const char *nums[] = {"n_prompts", "ranks", "prompts_done", "model_n_params"};
    for (size_t i = 0; i < sizeof nums / sizeof nums[0]; i++) {
        int64_t iv;
        double fv;
        (void)ss_h5_read_attr_i64(r, "/", nums[i], &iv);
        (void)ss_h5_read_attr_f64(r, "/", nums[i], &fv);
    }
    char **paths = NULL;
    size_t n = 0;
    if (ss_h5_list(r, "/", 1, &paths, &n) == SS_OK) {
        for (size_t i = 0; i < n && i < 256; i++) {
            ss_h5_info in;
            if (ss_h5_dset_info(r, paths[i], &in) != SS_OK) continue;
            char **names = NULL;
            int nd = 0;
            if (ss_h5_dim_names(r, paths[i], &names, &nd) == SS_OK) ss_h5_free_names(names, (size_t)nd);
            if (!ss_h5_exists(r, paths[i])) __builtin_trap(); /* listed, so there */
            (void)ss_h5_dset_written(r, paths[i]); /* as discover asks of a covariance */
            /* as show asks of /logits: a part written, from the declared dims (any size_t) */
            (void)ss_h5_dset_written_part(r, paths[i], (size_t)(in.ndim > 0 ? in.dims[0] : 1) * 1000003u);
            /* a statistic's count, as ablate --stats, discover and collect --resume read it:
             * one value, whatever the file declares */
            int64_t *one = NULL;
            if (ss_h5_read_want(r, paths[i], SS_H5_I64, 1, (void **)&one, NULL) == SS_OK) free(one);
            else if (one) __builtin_trap();
            int64_t count = 1;
            for (int d = 0; d < in.ndim && count <= (1 << 16); d++) count *= in.dims[d] > 0 ? in.dims[d] : 0;
            if (count > (1 << 16) || in.cls == SS_H5_CLASS_STRING || in.cls == SS_H5_CLASS_OTHER) continue;
            double *v = NULL;
            size_t m = 0;
            if (ss_h5_read_f64(r, paths[i], &v, &m, NULL) == SS_OK) free(v);
            /* a covariance's variances, as discover and ablate's masks read them */
            if (in.ndim == 2 && in.dims[0] == in.dims[1] && (v = malloc((size_t)in.dims[0] * sizeof(double) + 1))) {
                (void)ss_h5_read_diag(r, paths[i], in.dims[0], v);
                free(v);
            }
            /* the first row (along the first axis), as show reads its blocks */
            if (in.ndim >= 1 && in.dims[0] > 0 && (v = malloc((size_t)(count / in.dims[0]) * sizeof(float) + 1))) {
                int64_t start[SS_H5_MAX_DIMS] = {0}, cnt[SS_H5_MAX_DIMS];
                for (int d = 0; d < in.ndim; d++) cnt[d] = d ? in.dims[d] : 1;
                (void)ss_h5_read_slab(r, paths[i], SS_H5_F32, start, cnt, v);
                free(v);
            }
            (void)ss_h5_attr_exists(r, paths[i], "note");
        }
        (void)ss_h5_attr_exists(r, "/", "state_checksum"); /* collect --resume */
        ss_h5_free_names(paths, n);
    }
    ss_h5_close_read(r);
    ss_error_clear();
    return 0;
}
