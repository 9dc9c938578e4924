/* h5fixture: writes a small subscope-style HDF5 file for the h5cmp tests.
 *
 *   h5fixture OUT.h5 [VARIANT]
 *
 * VARIANT (default "base") changes one thing relative to base so that the
 * CLI tests can check that h5cmp notices it:
 *   base      the reference file (same content as tests/data/h5/h5py_base.h5)
 *   tiny      +1e-7 on one activation (within the default tolerance)
 *   perturb   +1e-2 on one activation
 *   nanfill   a padded (NaN) activation holds a number instead
 *   nanval    a real activation is NaN
 *   token     one token id differs
 *   shape     the activation has one more position
 *   missing   /stats/mean is absent
 *   extra     an additional dataset /acts/extra (ignored by h5cmp)
 *   attrbig   not like base: an attribute file (reduce none) whose /attr/blocks.0.mlp.hook_post
 *             declares 8000 prompts of 2 positions and 4 units and holds only the first
 *             (show reads it prompt by prompt: its progress and Ctrl-C, test_attribute.sh)
 *   attrunwritten  like attrbig with 100000 declared prompts of 512 units (tiny-gpt2's MLP width;
 *             410 MB declared) and only the first written: show and discover --attr refuse it
 *             as never written (test_attribute.sh)
 *   attrlate  attrbig and after it /attr/blocks.1.mlp.hook_post of one axis [3], which show
 *             refuses only once it has read the first (an error partway through its progress)
 * Exit 0 on success (and for --help), 1 (message on stderr) on failure. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "subscope/error.h"
#include "subscope/h5out.h"

#define B 2
#define P 5
#define D 4

/* Exactly representable in f32, so writers in other languages agree. */
static double val(int i) { return (double)(i % 7 - 3) * 0.25; }

/* /attr/blocks.0.mlp.hook_post [n_prompts, 2, units] of which only prompt 0 is written. */
static ss_status write_attrbig(ss_h5 *h, int64_t n_prompts, int64_t units) {
    const char *names[] = {"prompt", "pos", "unit"};
    int64_t dims[] = {n_prompts, 2, units}, start[] = {0, 0, 0}, count[] = {1, 2, units};
    static const float row4[8] = {1, -2, 3, -4, 0.5f, 0.25f, -8, 0};
    float row[2 * 512];
    if (units > 512) return ss_errorf(SS_ERR_ARG, "h5fixture: at most 512 units");
    for (int64_t q = 0; q < 2 * units; q++) row[q] = units == 4 ? row4[q] : (float)val((int)q);
    ss_h5_dset *d;
    SS_TRY(ss_h5_dset_create(h, "/attr/blocks.0.mlp.hook_post", SS_H5_F32, 3, dims, names, &d));
    ss_status st = ss_h5_dset_write(d, start, count, row), st2 = ss_h5_dset_close(d);
    SS_TRY(st);
    SS_TRY(st2);
    SS_TRY(ss_h5_attr_str(h, "/", "reduce", "none"));
    SS_TRY(ss_h5_attr_str(h, "/", "producer", "h5fixture"));
    return ss_h5_attr_i64(h, "/", "format_version", 1);
}

static ss_status write_file(ss_h5 *h, const char *v) {
    if (!strcmp(v, "attrbig")) return write_attrbig(h, 8000, 4);
    if (!strcmp(v, "attrunwritten")) return write_attrbig(h, 100000, 512);
    if (!strcmp(v, "attrlate")) {
        const int64_t dims[1] = {3};
        const float x[3] = {1, 2, 3};
        SS_TRY(write_attrbig(h, 8000, 4));
        return ss_h5_write_array(h, "/attr/blocks.1.mlp.hook_post", SS_H5_F32, 1, dims, NULL, x);
    }
    int pos = strcmp(v, "shape") ? P : P + 1;
    /* Row 0 is P tokens long, row 1 only 3: positions 3.. of row 1 stay fill. */
    int len[B] = {pos, 3};

    float acts[B * (P + 1) * D];
    int32_t toks[B * (P + 1)];
    for (int b = 0; b < B; b++)
        for (int p = 0; p < pos; p++) {
            toks[b * pos + p] = 100 * b + p;
            for (int d = 0; d < D; d++) acts[(b * pos + p) * D + d] = (float)val((b * pos + p) * D + d);
        }
    if (!strcmp(v, "tiny")) acts[5] += 1e-7f;
    if (!strcmp(v, "perturb")) acts[5] += 1e-2f;
    if (!strcmp(v, "nanval")) acts[6] = NAN;
    if (!strcmp(v, "token")) toks[1] = 7;

    const char *adims[] = {"batch", "pos", "d_model"};
    int64_t ad[] = {B, pos, D};
    ss_h5_dset *d;
    SS_TRY(ss_h5_dset_create(h, "/acts/blocks.0.hook_resid_pre", SS_H5_F32, 3, ad, adims, &d));
    ss_status st = SS_OK;
    for (int b = 0; b < B && st == SS_OK; b++) {
        int64_t start[] = {b, 0, 0}, count[] = {1, len[b], D};
        st = ss_h5_dset_write(d, start, count, &acts[b * pos * D]);
    }
    if (st == SS_OK && !strcmp(v, "nanfill")) {
        int64_t start[] = {1, 4, 0}, count[] = {1, 1, D};
        float row[D] = {0.5f, 0.5f, 0.5f, 0.5f};
        st = ss_h5_dset_write(d, start, count, row);
    }
    ss_status st2 = ss_h5_dset_close(d);
    SS_TRY(st);
    SS_TRY(st2);

    const char *tdims[] = {"batch", "pos"};
    int64_t td[] = {B, pos};
    SS_TRY(ss_h5_dset_create(h, "/tokens", SS_H5_I32, 2, td, tdims, &d));
    for (int b = 0; b < B && st == SS_OK; b++) {
        int64_t start[] = {b, 0}, count[] = {1, len[b]};
        st = ss_h5_dset_write(d, start, count, &toks[b * pos]);
    }
    st2 = ss_h5_dset_close(d);
    SS_TRY(st);
    SS_TRY(st2);

    if (strcmp(v, "missing")) {
        double mean[D] = {0.125, -0.5, 1.0 / 3.0, 1e-3};
        const char *mdims[] = {"d_model"};
        int64_t md[] = {D};
        SS_TRY(ss_h5_write_array(h, "/stats/mean", SS_H5_F64, 1, md, mdims, mean));
    }
    int64_t count = 8;
    SS_TRY(ss_h5_write_array(h, "/stats/count", SS_H5_I64, 0, NULL, NULL, &count));
    if (!strcmp(v, "extra")) {
        float x = 1.0f;
        int64_t one = 1;
        SS_TRY(ss_h5_write_array(h, "/acts/extra", SS_H5_F32, 1, &one, NULL, &x));
    }
    SS_TRY(ss_h5_attr_str(h, "/", "producer", "h5fixture"));
    SS_TRY(ss_h5_attr_str(h, "/", "variant", v));
    return ss_h5_attr_i64(h, "/", "format_version", 1);
}

int main(int argc, char **argv) {
    static const char usage[] = "usage: h5fixture OUT.h5 [base|tiny|perturb|nanfill|nanval|token|shape|missing|extra|attrbig|attrunwritten|attrlate]\n";
    if (argc == 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
        fputs(usage, stdout);
        return 0;
    }
    if (argc < 2 || argc > 3 || argv[1][0] == '-') { /* not a file named --bogus */
        fputs(usage, stderr);
        return 1;
    }
    const char *v = argc == 3 ? argv[2] : "base";
    static const char *known[] = {"base", "tiny", "perturb", "nanfill", "nanval", "token", "shape", "missing", "extra", "attrbig", "attrunwritten", "attrlate"};
    int ok = 0;
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++) ok |= !strcmp(v, known[i]);
    if (!ok) {
        fprintf(stderr, "h5fixture: unknown variant %s\n", v);
        return 1;
    }
    ss_h5 *h;
    if (ss_h5_create(argv[1], &h) != SS_OK) {
        fprintf(stderr, "h5fixture: %s\n", ss_last_error());
        return 1;
    }
    if (write_file(h, v) != SS_OK) {
        fprintf(stderr, "h5fixture: %s\n", ss_last_error());
        ss_h5_abort(h);
        return 1;
    }
    if (ss_h5_commit(h) != SS_OK) {
        fprintf(stderr, "h5fixture: %s\n", ss_last_error());
        return 1;
    }
    return 0;
}
