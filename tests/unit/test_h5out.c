/* HDF5 output layer: round trips, hyperslabs, groups, attributes, dimension
 * scales, atomic commit/abort, and error messages. */
#define _DEFAULT_SOURCE /* realpath */
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <hdf5.h>

#include "subscope/h5out.h"
#include "subscope/jobs.h"
#include "subscope/util.h"
#include "test.h"

static char *tmp_file(const char *name) { return ss_path_join(ss_test_tmp_dir(), name); }

static int exists(const char *p) {
    struct stat sb;
    return stat(p, &sb) == 0;
}

static long file_size(const char *p) {
    struct stat sb;
    return stat(p, &sb) == 0 ? (long)sb.st_size : -1;
}

TEST(h5_roundtrip_all_types) {
    char *path = tmp_file("types.h5");
    ss_h5 *h;
    CHECK_OK(ss_h5_create(path, &h));
    int64_t dims[] = {3, 4};
    float f32[12];
    double f64[12];
    int32_t i32[12];
    int64_t i64[12];
    uint8_t u8[12];
    for (int i = 0; i < 12; i++) {
        f32[i] = (float)i * 0.5f - 2.0f;
        f64[i] = i * 1e-3 + 1.0 / 3.0;
        i32[i] = i * 1000 - 5000;
        i64[i] = (int64_t)i * 3000000000LL - 7;
        u8[i] = (uint8_t)(250 + i % 6);
    }
    CHECK_OK(ss_h5_write_array(h, "/f32", SS_H5_F32, 2, dims, NULL, f32));
    CHECK_OK(ss_h5_write_array(h, "/f64", SS_H5_F64, 2, dims, NULL, f64));
    CHECK_OK(ss_h5_write_array(h, "/i32", SS_H5_I32, 2, dims, NULL, i32));
    CHECK_OK(ss_h5_write_array(h, "/i64", SS_H5_I64, 2, dims, NULL, i64));
    CHECK_OK(ss_h5_write_array(h, "/u8", SS_H5_U8, 2, dims, NULL, u8));
    double sc = 2.5;
    CHECK_OK(ss_h5_write_array(h, "/scalar", SS_H5_F64, 0, NULL, NULL, &sc));
    CHECK_OK(ss_h5_commit(h));

    ss_h5_reader *r;
    CHECK_OK(ss_h5_open_read(path, &r));
    ss_h5_info in;
    float *rf;
    double *rd;
    int32_t *ri;
    int64_t *rl;
    size_t n;
    CHECK_OK(ss_h5_read_f32(r, "/f32", &rf, &n, &in));
    CHECK(n == 12 && in.ndim == 2 && in.dims[0] == 3 && in.dims[1] == 4);
    CHECK(in.cls == SS_H5_CLASS_FLOAT && in.elem_size == 4 && !in.is_scale);
    int bad = 0;
    for (int i = 0; i < 12; i++) bad |= rf[i] != f32[i];
    free(rf);
    CHECK(!bad);
    CHECK_OK(ss_h5_read_f64(r, "/f64", &rd, &n, &in));
    CHECK(in.elem_size == 8);
    for (int i = 0; i < 12; i++) bad |= rd[i] != f64[i];
    free(rd);
    CHECK(!bad);
    CHECK_OK(ss_h5_read_i32(r, "/i32", &ri, &n, &in));
    CHECK(in.cls == SS_H5_CLASS_INT && in.is_signed && in.elem_size == 4);
    for (int i = 0; i < 12; i++) bad |= ri[i] != i32[i];
    free(ri);
    CHECK(!bad);
    CHECK_OK(ss_h5_read_i64(r, "/i64", &rl, &n, &in));
    for (int i = 0; i < 12; i++) bad |= rl[i] != i64[i];
    free(rl);
    CHECK(!bad);
    CHECK_OK(ss_h5_read_i64(r, "/u8", &rl, &n, &in));
    CHECK(in.cls == SS_H5_CLASS_INT && !in.is_signed && in.elem_size == 1);
    for (int i = 0; i < 12; i++) bad |= rl[i] != u8[i];
    free(rl);
    CHECK(!bad);
    /* HDF5 converts on read: ints as f64, f32 as f64. */
    CHECK_OK(ss_h5_read_f64(r, "/i32", &rd, &n, NULL));
    for (int i = 0; i < 12; i++) bad |= rd[i] != (double)i32[i];
    free(rd);
    CHECK(!bad);
    CHECK_OK(ss_h5_read_f64(r, "/f32", &rd, &n, NULL));
    for (int i = 0; i < 12; i++) bad |= rd[i] != (double)f32[i];
    free(rd);
    CHECK(!bad);
    CHECK_OK(ss_h5_read_f64(r, "/scalar", &rd, &n, &in));
    CHECK(n == 1 && in.ndim == 0 && rd[0] == 2.5);
    free(rd);
    ss_h5_close_read(r);
    free(path);
}

TEST(h5_hyperslab_pieces_and_fill) {
    char *path = tmp_file("slab.h5");
    ss_h5 *h;
    CHECK_OK(ss_h5_create(path, &h));
    int64_t dims[] = {4, 3, 5};
    ss_h5_dset *d, *di;
    CHECK_OK(ss_h5_dset_create(h, "/x", SS_H5_F32, 3, dims, NULL, &d));
    CHECK_OK(ss_h5_dset_create(h, "/ids", SS_H5_I32, 3, dims, NULL, &di));
    /* Rows 0..2 written one at a time, each in two column pieces; row 3 never. */
    for (int b = 0; b < 3; b++) {
        float buf[3 * 5];
        int32_t ib[3 * 5];
        for (int i = 0; i < 15; i++) {
            buf[i] = (float)(b * 100 + i);
            ib[i] = b * 100 + i;
        }
        float left[3 * 2], right[3 * 3];
        for (int p = 0; p < 3; p++) {
            for (int k = 0; k < 2; k++) left[p * 2 + k] = buf[p * 5 + k];
            for (int k = 0; k < 3; k++) right[p * 3 + k] = buf[p * 5 + 2 + k];
        }
        int64_t s1[] = {b, 0, 0}, c1[] = {1, 3, 2}, s2[] = {b, 0, 2}, c2[] = {1, 3, 3};
        CHECK_OK(ss_h5_dset_write(d, s2, c2, right));
        CHECK_OK(ss_h5_dset_write(d, s1, c1, left));
        int64_t s3[] = {b, 0, 0}, c3[] = {1, 2, 5};
        CHECK_OK(ss_h5_dset_write(di, s3, c3, ib)); /* position 2 left unwritten */
    }
    int64_t zs[] = {3, 0, 0}, zc[] = {0, 3, 5};
    CHECK_OK(ss_h5_dset_write(d, zs, zc, NULL)); /* empty write is a no-op */
    int64_t bs[] = {3, 1, 0}, bc[] = {1, 3, 5};
    float junk[15] = {0};
    CHECK_ERR(ss_h5_dset_write(d, bs, bc, junk), SS_ERR_ARG, "axis 1");
    CHECK_ERR(ss_h5_dset_write(d, bs, bc, junk), SS_ERR_ARG, "/x");
    CHECK_OK(ss_h5_dset_close(d));
    CHECK_OK(ss_h5_dset_close(di));
    CHECK_OK(ss_h5_commit(h));

    ss_h5_reader *r;
    CHECK_OK(ss_h5_open_read(path, &r));
    float *x;
    size_t n;
    CHECK_OK(ss_h5_read_f32(r, "/x", &x, &n, NULL));
    CHECK(n == 60);
    int bad = 0;
    for (int b = 0; b < 4; b++)
        for (int i = 0; i < 15; i++) {
            float v = x[b * 15 + i];
            if (b < 3) bad |= v != (float)(b * 100 + i);
            else bad |= !isnan(v);
        }
    free(x);
    CHECK_MSG(!bad, "hyperslab pieces or NaN fill wrong");
    int32_t *ids;
    CHECK_OK(ss_h5_read_i32(r, "/ids", &ids, &n, NULL));
    for (int b = 0; b < 4; b++)
        for (int p = 0; p < 3; p++)
            for (int k = 0; k < 5; k++) {
                int32_t v = ids[(b * 3 + p) * 5 + k];
                bad |= (b < 3 && p < 2) ? v != b * 100 + p * 5 + k : v != -1;
            }
    free(ids);
    CHECK_MSG(!bad, "integer fill is not -1");
    float part[2 * 2];
    int64_t rs[] = {1, 1, 3}, rc[] = {1, 2, 2};
    CHECK_OK(ss_h5_read_slab(r, "/x", SS_H5_F32, rs, rc, part));
    CHECK(part[0] == 108 && part[1] == 109 && part[2] == 113 && part[3] == 114);
    ss_h5_close_read(r);
    free(path);
}

/* Rows of different lengths from a packed buffer (forward's logits): each
 * item's own rows land at its place, the rest keeps the fill value; a length
 * beyond the hyperslab is refused, naming the file and dataset. */
TEST(h5_write_rows_of_different_lengths) {
    char *path = tmp_file("rows.h5");
    ss_h5 *h;
    CHECK_OK(ss_h5_create(path, &h));
    int64_t dims[] = {5, 6, 3};
    ss_h5_dset *d;
    CHECK_OK(ss_h5_dset_create(h, "/x", SS_H5_F32, 3, dims, NULL, &d));
    /* items 1..4 (item 0 never written), lengths 2, 0, 6, 1 from position 0 */
    const int64_t lens[] = {2, 0, 6, 1};
    float packed[9 * 3];
    for (int i = 0; i < 27; i++) packed[i] = (float)(i + 1);
    int64_t s[] = {1, 0, 0}, c[] = {4, 6, 3};
    CHECK_OK(ss_h5_dset_write_rows(d, s, c, lens, packed));
    const int64_t zero[] = {0, 0, 0, 0};
    CHECK_OK(ss_h5_dset_write_rows(d, s, c, zero, NULL)); /* nothing to write: a no-op */
    const int64_t long_one[] = {2, 7, 0, 0};
    CHECK_ERR(ss_h5_dset_write_rows(d, s, c, long_one, packed), SS_ERR_ARG, "row 2's length 7 is outside 0..6");
    CHECK_ERR(ss_h5_dset_write_rows(d, s, c, long_one, packed), SS_ERR_ARG, "rows.h5: /x");
    CHECK_OK(ss_h5_dset_close(d));
    CHECK_OK(ss_h5_commit(h));

    ss_h5_reader *r;
    CHECK_OK(ss_h5_open_read(path, &r));
    float *x;
    size_t n;
    CHECK_OK(ss_h5_read_f32(r, "/x", &x, &n, NULL));
    CHECK(n == 90);
    int bad = 0;
    float next = 1;
    for (int b = 0; b < 5; b++)
        for (int t = 0; t < 6; t++)
            for (int k = 0; k < 3; k++) {
                float v = x[(b * 6 + t) * 3 + k];
                if (b > 0 && t < lens[b - 1]) bad |= v != next++;
                else bad |= !isnan(v);
            }
    free(x);
    CHECK_MSG(!bad && next == 28, "packed rows or NaN fill wrong");
    ss_h5_close_read(r);
    free(path);
}

/* Squares of different sides from a packed buffer (forward's attention
 * patterns): each item's [2, side, side] lands in the corner of its [2, 5, 5],
 * the rest keeps the fill value; a side beyond the hyperslab, or a dataset of
 * fewer than three axes, is refused, naming the file and dataset. */
TEST(h5_write_squares_of_different_sides) {
    char *path = tmp_file("squares.h5");
    ss_h5 *h;
    CHECK_OK(ss_h5_create(path, &h));
    int64_t dims[] = {4, 2, 5, 5}, dims2[] = {4, 5};
    ss_h5_dset *d, *d2;
    CHECK_OK(ss_h5_dset_create(h, "/x", SS_H5_F32, 4, dims, NULL, &d));
    CHECK_OK(ss_h5_dset_create(h, "/y", SS_H5_F32, 2, dims2, NULL, &d2));
    /* items 1..3 (item 0 never written), sides 3, 0, 5 */
    const int64_t sides[] = {3, 0, 5};
    float packed[2 * (9 + 25)];
    for (int i = 0; i < 68; i++) packed[i] = (float)(i + 1);
    int64_t s[] = {1, 0, 0, 0}, c[] = {3, 2, 5, 5};
    CHECK_OK(ss_h5_dset_write_squares(d, s, c, sides, packed));
    const int64_t zero[] = {0, 0, 0};
    CHECK_OK(ss_h5_dset_write_squares(d, s, c, zero, NULL)); /* nothing to write: a no-op */
    const int64_t big[] = {3, 6, 0};
    CHECK_ERR(ss_h5_dset_write_squares(d, s, c, big, packed), SS_ERR_ARG, "square 2's side 6 is outside 0..5");
    CHECK_ERR(ss_h5_dset_write_squares(d, s, c, big, packed), SS_ERR_ARG, "squares.h5: /x");
    int64_t s2[] = {0, 0}, c2[] = {3, 5};
    CHECK_ERR(ss_h5_dset_write_squares(d2, s2, c2, sides, packed), SS_ERR_ARG,
              "/y: squares of different sides need three axes or more");
    CHECK_OK(ss_h5_dset_close(d2));
    CHECK_OK(ss_h5_dset_close(d));
    CHECK_OK(ss_h5_commit(h));

    ss_h5_reader *r;
    CHECK_OK(ss_h5_open_read(path, &r));
    float *x;
    size_t n;
    CHECK_OK(ss_h5_read_f32(r, "/x", &x, &n, NULL));
    CHECK(n == 200);
    int bad = 0;
    float next = 1;
    for (int b = 0; b < 4; b++)
        for (int hd = 0; hd < 2; hd++)
            for (int q = 0; q < 5; q++)
                for (int k = 0; k < 5; k++) {
                    float v = x[((b * 2 + hd) * 5 + q) * 5 + k];
                    if (b > 0 && q < sides[b - 1] && k < sides[b - 1]) bad |= v != next++;
                    else bad |= !isnan(v);
                }
    free(x);
    CHECK_MSG(!bad && next == 69, "packed squares or NaN fill wrong");
    ss_h5_close_read(r);
    free(path);
}

TEST(h5_read_diag) {
    /* Blocks of 2^20 / d + 1 rows (8 MiB): d = 300, one block; d = 1100, 954 rows a block, two
     * blocks, the second partial. Values i * d + j, so each diagonal entry names its place. */
    char *path = tmp_file("diag.h5");
    ss_h5 *h;
    CHECK_OK(ss_h5_create(path, &h));
    const int64_t ds[2] = {300, 1100};
    for (int t = 0; t < 2; t++) {
        const int64_t d = ds[t], dims[2] = {d, d};
        double *m = malloc(sizeof(double) * (size_t)(d * d));
        for (int64_t i = 0; i < d * d; i++) m[i] = (double)i;
        char name[16];
        snprintf(name, sizeof name, "/m%d", t);
        CHECK_OK(ss_h5_write_array(h, name, SS_H5_F64, 2, dims, NULL, m));
        free(m);
    }
    const int64_t rect[2] = {3, 4};
    float r34[12] = {0};
    CHECK_OK(ss_h5_write_array(h, "/rect", SS_H5_F32, 2, rect, NULL, r34));
    CHECK_OK(ss_h5_commit(h));
    ss_h5_reader *r;
    CHECK_OK(ss_h5_open_read(path, &r));
    double diag[1100];
    for (int t = 0; t < 2; t++) {
        char name[16];
        snprintf(name, sizeof name, "/m%d", t);
        CHECK_OK(ss_h5_read_diag(r, name, ds[t], diag));
        int bad = 0;
        for (int64_t i = 0; i < ds[t]; i++) bad |= diag[i] != (double)(i * ds[t] + i);
        CHECK_MSG(!bad, "diagonal of %s wrong", name);
    }
    CHECK_ERR(ss_h5_read_diag(r, "/rect", 3, diag), SS_ERR_FORMAT, "/rect is not [3, 3]");
    CHECK_ERR(ss_h5_read_diag(r, "/m0", 299, diag), SS_ERR_FORMAT, "/m0 is not [299, 299]");
    ss_h5_close_read(r);
    free(path);
}

TEST(h5_chunk_filters_and_fill_override) {
    int64_t c[SS_H5_MAX_DIMS];
    int64_t d1[] = {12, 1024, 768};
    CHECK(ss_h5_choose_chunk(3, d1, 4, c));
    CHECK(c[2] == 768 && c[0] == 1 && c[1] >= 1 && c[1] <= 1024);
    long bytes = (long)(c[0] * c[1] * c[2] * 4);
    CHECK_MSG(bytes >= 256 * 1024 && bytes <= 1024 * 1024, "chunk bytes %ld", bytes);
    int64_t d2[] = {3, 5};
    CHECK(ss_h5_choose_chunk(2, d2, 8, c) && c[0] == 3 && c[1] == 5); /* never larger than dims */
    int64_t d3[] = {4, 0};
    CHECK(!ss_h5_choose_chunk(2, d3, 4, c));
    CHECK(!ss_h5_choose_chunk(0, NULL, 4, c));
    int64_t d4[] = {2, (int64_t)1 << 40}; /* a row over the cap is split */
    CHECK(ss_h5_choose_chunk(2, d4, 4, c) && c[0] == 1 && c[1] * 4 <= (1 << 20));

    char *p1 = tmp_file("deflate.h5"), *p0 = tmp_file("nodeflate.h5");
    enum { N = 256 * 64 };
    float *v = malloc(N * sizeof *v);
    CHECK(v);
    for (int i = 0; i < N; i++) v[i] = (float)(i % 17);
    int64_t dims[] = {256, 64};
    for (int pass = 0; pass < 2; pass++) {
        ss_h5 *h;
        CHECK_OK(ss_h5_create(pass ? p0 : p1, &h));
        if (pass) CHECK_OK(ss_h5_set_deflate(h, 0));
        CHECK_OK(ss_h5_write_array(h, "/v", SS_H5_F32, 2, dims, NULL, v));
        ss_h5_dset_opts o = {0};
        o.fill_set = 1;
        o.fill_f64 = -7.5;
        o.fill_i64 = 3;
        ss_h5_dset *d;
        int64_t two = 2;
        CHECK_OK(ss_h5_dset_create_opts(h, "/filled", SS_H5_F64, 1, &two, NULL, &o, &d));
        CHECK_OK(ss_h5_dset_close(d));
        CHECK_OK(ss_h5_dset_create_opts(h, "/ifilled", SS_H5_I64, 1, &two, NULL, &o, &d));
        CHECK_OK(ss_h5_dset_close(d));
        o.fill_i64 = 300;
        CHECK_ERR(ss_h5_dset_create_opts(h, "/u8bad", SS_H5_U8, 1, &two, NULL, &o, &d), SS_ERR_ARG, "fill value 300");
        ss_h5_dset_opts oc = {0};
        oc.chunk[0] = 5;
        CHECK_ERR(ss_h5_dset_create_opts(h, "/badchunk", SS_H5_F32, 1, &two, NULL, &oc, &d), SS_ERR_ARG, "chunk size 5");
        CHECK_ERR(ss_h5_set_deflate(h, 11), SS_ERR_ARG, "deflate level 11");
        CHECK_OK(ss_h5_commit(h));
    }
    free(v);
    CHECK_MSG(file_size(p1) > 0 && file_size(p1) * 4 < file_size(p0), "deflated %ld vs plain %ld", file_size(p1),
              file_size(p0));
    ss_h5_reader *r;
    CHECK_OK(ss_h5_open_read(p1, &r));
    ss_h5_info in;
    CHECK_OK(ss_h5_dset_info(r, "/v", &in));
    CHECK(in.chunked && in.chunk[0] == 256 && in.chunk[1] == 64 && in.deflate == 4 && in.shuffle);
    double *fd;
    int64_t *fi;
    size_t n;
    CHECK_OK(ss_h5_read_f64(r, "/filled", &fd, &n, NULL));
    CHECK(n == 2 && fd[0] == -7.5 && fd[1] == -7.5);
    free(fd);
    CHECK_OK(ss_h5_read_i64(r, "/ifilled", &fi, &n, NULL));
    CHECK(fi[0] == 3 && fi[1] == 3);
    free(fi);
    CHECK(!ss_h5_exists(r, "/u8bad") && !ss_h5_exists(r, "/badchunk"));
    ss_h5_close_read(r);
    CHECK_OK(ss_h5_open_read(p0, &r));
    CHECK_OK(ss_h5_dset_info(r, "/v", &in));
    CHECK(in.chunked && in.deflate == 0 && !in.shuffle);
    ss_h5_close_read(r);
    free(p0);
    free(p1);
}

TEST(h5_groups_dotted_names_and_listing) {
    char *path = tmp_file("groups.h5");
    ss_h5 *h;
    CHECK_OK(ss_h5_create(path, &h));
    int64_t dims[] = {2};
    float v[] = {1, 2};
    CHECK_OK(ss_h5_write_array(h, "/acts/blocks.0.attn.hook_pattern", SS_H5_F32, 1, dims, NULL, v));
    CHECK_OK(ss_h5_write_array(h, "/acts/blocks.1.hook_resid_post", SS_H5_F32, 1, dims, NULL, v));
    CHECK_OK(ss_h5_write_array(h, "/stats/deep/er/mean", SS_H5_F32, 1, dims, NULL, v));
    CHECK_OK(ss_h5_write_array(h, "/top", SS_H5_F32, 1, dims, NULL, v));
    CHECK_OK(ss_h5_group_create(h, "/empty/group"));
    CHECK_ERR(ss_h5_write_array(h, "/top/below", SS_H5_F32, 1, dims, NULL, v), SS_ERR_ARG, "/top exists and is not a group");
    CHECK_ERR(ss_h5_write_array(h, "/top", SS_H5_F32, 1, dims, NULL, v), SS_ERR_IO, "/top: creating dataset");
    CHECK_ERR(ss_h5_write_array(h, "acts/x", SS_H5_F32, 1, dims, NULL, v), SS_ERR_ARG, "invalid dataset path");
    CHECK_ERR(ss_h5_write_array(h, "/acts//x", SS_H5_F32, 1, dims, NULL, v), SS_ERR_ARG, "invalid dataset path");
    CHECK_ERR(ss_h5_write_array(h, "/acts/", SS_H5_F32, 1, dims, NULL, v), SS_ERR_ARG, "invalid dataset path");
    CHECK_OK(ss_h5_commit(h));

    ss_h5_reader *r;
    CHECK_OK(ss_h5_open_read(path, &r));
    char **names;
    size_t n;
    CHECK_OK(ss_h5_list(r, "/", 1, &names, &n));
    CHECK_MSG(n == 4, "listed %zu datasets", n);
    CHECK(!strcmp(names[0], "/acts/blocks.0.attn.hook_pattern"));
    CHECK(!strcmp(names[1], "/acts/blocks.1.hook_resid_post"));
    CHECK(!strcmp(names[2], "/stats/deep/er/mean"));
    CHECK(!strcmp(names[3], "/top"));
    ss_h5_free_names(names, n);
    CHECK_OK(ss_h5_list(r, "/", 0, &names, &n));
    CHECK(n == 1 && !strcmp(names[0], "/top"));
    ss_h5_free_names(names, n);
    CHECK_OK(ss_h5_list(r, "/acts", 0, &names, &n));
    CHECK(n == 2 && !strcmp(names[1], "/acts/blocks.1.hook_resid_post"));
    ss_h5_free_names(names, n);
    CHECK_OK(ss_h5_list(r, "/empty/group", 1, &names, &n));
    CHECK(n == 0);
    ss_h5_free_names(names, n);
    CHECK_ERR(ss_h5_list(r, "/nope", 1, &names, &n), SS_ERR_ARG, "no group /nope");
    CHECK_ERR(ss_h5_list(r, "/top", 1, &names, &n), SS_ERR_ARG, "/top is not a group");
    float *x;
    CHECK_ERR(ss_h5_read_f32(r, "/acts/blocks.0.attn", &x, &n, NULL), SS_ERR_ARG, "no dataset /acts/blocks.0.attn");
    CHECK_ERR(ss_h5_read_f32(r, "/stats/deep", &x, &n, NULL), SS_ERR_ARG, "/stats/deep is not a dataset");
    CHECK(ss_h5_exists(r, "/acts/blocks.0.attn.hook_pattern") && !ss_h5_exists(r, "/acts/blocks.0"));
    ss_h5_close_read(r);
    free(path);
}

TEST(h5_attributes) {
    char *path = tmp_file("attrs.h5");
    ss_h5 *h;
    CHECK_OK(ss_h5_create(path, &h));
    int64_t dims[] = {2};
    float v[] = {1, 2};
    CHECK_OK(ss_h5_write_array(h, "/acts/blocks.0.hook_resid_pre", SS_H5_F32, 1, dims, NULL, v));
    CHECK_OK(ss_h5_attr_str(h, "/", "command_line", "subscope forward --model gpt2 \"quoted\" ünïcødé"));
    CHECK_OK(ss_h5_attr_str(h, "/", "model_id", "old"));
    CHECK_OK(ss_h5_attr_str(h, "/", "model_id", "gpt2")); /* replaced */
    CHECK_OK(ss_h5_attr_str(h, "/", "empty", ""));
    CHECK_OK(ss_h5_attr_i64(h, "/", "seed", -1234567890123LL));
    CHECK_OK(ss_h5_attr_f64(h, "/acts", "scale", 0.125));
    int64_t shape[] = {8, 1024, 768};
    CHECK_OK(ss_h5_attr_i64_array(h, "/acts/blocks.0.hook_resid_pre", "full_shape", shape, 3));
    double fs[] = {0.5, 1.5};
    CHECK_OK(ss_h5_attr_f64_array(h, "/acts/blocks.0.hook_resid_pre", "range", fs, 2));
    CHECK_ERR(ss_h5_attr_i64(h, "/nothing/here", "x", 1), SS_ERR_ARG, "object /nothing/here does not exist");
    CHECK_ERR(ss_h5_attr_str(h, "/", "", "x"), SS_ERR_ARG, "empty attribute name");
    CHECK_OK(ss_h5_commit(h));

    ss_h5_reader *r;
    CHECK_OK(ss_h5_open_read(path, &r));
    char *s;
    CHECK_OK(ss_h5_read_attr_str(r, "/", "command_line", &s));
    CHECK(!strcmp(s, "subscope forward --model gpt2 \"quoted\" ünïcødé"));
    free(s);
    CHECK_OK(ss_h5_read_attr_str(r, "/", "model_id", &s));
    CHECK(!strcmp(s, "gpt2"));
    free(s);
    CHECK_OK(ss_h5_read_attr_str(r, "/", "empty", &s));
    CHECK(!strcmp(s, ""));
    free(s);
    int64_t i;
    double f;
    CHECK_OK(ss_h5_read_attr_i64(r, "/", "seed", &i));
    CHECK(i == -1234567890123LL);
    CHECK_OK(ss_h5_read_attr_f64(r, "/acts", "scale", &f));
    CHECK(f == 0.125);
    CHECK_ERR(ss_h5_read_attr_str(r, "/", "seed", &s), SS_ERR_FORMAT, "seed is not a string");
    CHECK_ERR(ss_h5_read_attr_str(r, "/", "nope", &s), SS_ERR_ARG, "/ has no attribute nope");
    CHECK_ERR(ss_h5_read_attr_i64(r, "/acts/blocks.0.hook_resid_pre", "full_shape", &i), SS_ERR_FORMAT,
              "has 3 elements");
    ss_h5_close_read(r);
    free(path);
}

/* Files carry checksums on all their metadata (the 1.10 format) and keep no
 * string in the global heap, which has none; a byte changed in the
 * superblock is refused by its checksum. Files in the earlier layout
 * (variable-length strings, the earliest format) still read. */
TEST(h5_checksummed_metadata) {
    char *path = tmp_file("ck.h5");
    ss_h5 *h;
    CHECK_OK(ss_h5_create(path, &h));
    int64_t dims[] = {3};
    const char *names[] = {"prompt"};
    float v[] = {1, 2, 3};
    CHECK_OK(ss_h5_write_array(h, "/x", SS_H5_F32, 1, dims, names, v));
    CHECK_OK(ss_h5_attr_str(h, "/", "model_path", "models/tiny-gpt2"));
    CHECK_OK(ss_h5_commit(h));
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    CHECK(f >= 0);
    H5F_info2_t fi;
    CHECK(H5Fget_info2(f, &fi) >= 0 && fi.super.version >= 3);
    hid_t a = H5Aopen(f, "model_path", H5P_DEFAULT), t = H5Aget_type(a);
    CHECK(a >= 0 && t >= 0 && H5Tget_class(t) == H5T_STRING && H5Tis_variable_str(t) == 0);
    H5Tclose(t);
    H5Aclose(a);
    H5Fclose(f);

    /* one byte of the superblock changed */
    FILE *fp = fopen(path, "r+b");
    CHECK(fp && fseek(fp, 20, SEEK_SET) == 0);
    int c = fgetc(fp);
    CHECK(fseek(fp, 20, SEEK_SET) == 0 && fputc(c ^ 0x5a, fp) != EOF && fclose(fp) == 0);
    ss_h5_reader *r;
    CHECK_ERR(ss_h5_open_read(path, &r), SS_ERR_FORMAT, "checksum");

    /* the 1.0 layout: a variable-length string attribute in the earliest format */
    f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    hid_t vt = H5Tcopy(H5T_C_S1), sp = H5Screate(H5S_SCALAR);
    CHECK(f >= 0 && vt >= 0 && sp >= 0 && H5Tset_size(vt, H5T_VARIABLE) >= 0);
    const char *old = "written as 1.0";
    a = H5Acreate2(f, "model_path", vt, sp, H5P_DEFAULT, H5P_DEFAULT);
    CHECK(a >= 0 && H5Awrite(a, vt, &old) >= 0);
    H5Aclose(a);
    H5Sclose(sp);
    H5Tclose(vt);
    H5Fclose(f);
    CHECK_OK(ss_h5_open_read(path, &r));
    char *s = NULL;
    CHECK_OK(ss_h5_read_attr_str(r, "/", "model_path", &s));
    CHECK(s && !strcmp(s, old));
    free(s);
    ss_h5_close_read(r);
    unlink(path);
    free(path);
}

/* A raw int dataset written with the HDF5 API (the files below are not
 * subscope's: they are what another program, or a hand, could make). */
static void raw_i32(hid_t f, const char *name, int rank, const hsize_t *dims, const int32_t *v) {
    hid_t sp = H5Screate_simple(rank, dims, NULL);
    hid_t d = H5Dcreate2(f, name, H5T_STD_I32LE, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    CHECK(sp >= 0 && d >= 0 && H5Dwrite(d, H5T_NATIVE_INT32, H5S_ALL, H5S_ALL, H5P_DEFAULT, v) >= 0);
    H5Dclose(d);
    H5Sclose(sp);
}

/* show reads a forward file's datasets only where their shapes agree, and a
 * scale's NAME only when it is a string (each was an overrun before). */
TEST(h5_show_refuses_inconsistent_shapes) {
    char *path = tmp_file("shapes.h5");
    FILE *devnull = fopen("/dev/null", "w");
    CHECK(devnull != NULL);
    const int32_t tok[8] = {1, 2, 3, 4, 5, 6, 7, 8}, one_len[1] = {4}, long_len[2] = {4, 9};
    const hsize_t d24[2] = {2, 4}, d1[1] = {1}, d2[1] = {2}, d8[1] = {8};
    struct {
        const hsize_t *tdims, *ldims;
        int trank;
        const int32_t *lens;
        const char *want;
    } cases[] = {
        {d24, d1, 2, one_len, "do not have the shapes [N, T] and [N]"},
        {d8, d2, 1, long_len, "do not have the shapes [N, T] and [N]"},
        {d24, d2, 2, long_len, "/lengths[1] is 9, outside 1..4"},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
        CHECK(f >= 0);
        raw_i32(f, "tokens", cases[k].trank, cases[k].tdims, tok);
        raw_i32(f, "lengths", 1, cases[k].ldims, cases[k].lens);
        H5Fclose(f);
        CHECK_ERR(ss_job_show(path, 0, devnull), SS_ERR_FORMAT, cases[k].want); /* 0: no --prompts (no /logits here) */
    }
    /* logits of another shape than [N, T, V] */
    const int32_t lens[2] = {4, 2};
    const hsize_t d23[2] = {2, 3};
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    raw_i32(f, "tokens", 2, d24, tok);
    raw_i32(f, "lengths", 1, d2, lens);
    raw_i32(f, "logits", 2, d23, tok);
    H5Fclose(f);
    CHECK_ERR(ss_job_show(path, 8, devnull), SS_ERR_FORMAT, "/logits is not [2, 4, width] like /tokens");

    /* a dimension scale whose NAME is an int array: known by its dataset name */
    ss_h5 *h;
    int64_t dims[] = {2};
    const char *names[] = {"prompt"};
    float v[] = {1, 2};
    CHECK_OK(ss_h5_create(path, &h));
    CHECK_OK(ss_h5_write_array(h, "/x", SS_H5_F32, 1, dims, names, v));
    CHECK_OK(ss_h5_commit(h));
    f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    CHECK(f >= 0 && H5Adelete_by_name(f, "prompt", "NAME", H5P_DEFAULT) >= 0);
    hid_t sp = H5Screate_simple(1, d8, NULL), o = H5Dopen2(f, "prompt", H5P_DEFAULT);
    hid_t a = H5Acreate2(o, "NAME", H5T_STD_I32LE, sp, H5P_DEFAULT, H5P_DEFAULT);
    CHECK(a >= 0 && H5Awrite(a, H5T_NATIVE_INT32, tok) >= 0);
    H5Aclose(a);
    H5Dclose(o);
    H5Sclose(sp);
    H5Fclose(f);
    ss_h5_reader *r;
    char **dn;
    int nd;
    CHECK_OK(ss_h5_open_read(path, &r));
    CHECK_OK(ss_h5_dim_names(r, "/x", &dn, &nd));
    CHECK(nd == 1 && dn[0] && !strcmp(dn[0], "prompt"));
    ss_h5_free_names(dn, (size_t)nd);
    ss_h5_close_read(r);
    fclose(devnull);
    unlink(path);
    free(path);
}

TEST(h5_dimension_scales) {
    char *path = tmp_file("dims.h5");
    ss_h5 *h;
    CHECK_OK(ss_h5_create(path, &h));
    int64_t d3[] = {2, 5, 4}, d2[] = {2, 5}, bad[] = {2, 6};
    const char *n3[] = {"batch", "pos", "d_model"};
    const char *n2[] = {"batch", "pos"};
    const char *n2b[] = {"batch", NULL};
    float z[40] = {0};
    int32_t t[10] = {0};
    CHECK_OK(ss_h5_write_array(h, "/acts/blocks.0.hook_resid_pre", SS_H5_F32, 3, d3, n3, z));
    CHECK_OK(ss_h5_write_array(h, "/tokens", SS_H5_I32, 2, d2, n2, t));
    CHECK_OK(ss_h5_write_array(h, "/half", SS_H5_I32, 2, d2, n2b, t));
    CHECK_ERR(ss_h5_write_array(h, "/clash", SS_H5_I32, 2, bad, n2, t), SS_ERR_INTERNAL,
              "dimension 'pos' has size 6 in /clash (axis 1) but size 5 in /acts/blocks.0.hook_resid_pre");
    const char *same[] = {"pos", "pos"};
    CHECK_ERR(ss_h5_write_array(h, "/twice", SS_H5_I32, 2, d2, same, t), SS_ERR_ARG, "used on axes 0 and 1");
    const char *slash[] = {"a/b", NULL};
    CHECK_ERR(ss_h5_write_array(h, "/slash", SS_H5_I32, 2, d2, slash, t), SS_ERR_ARG, "invalid dimension name 'a/b'");
    const char *obj[] = {"tokens", NULL};
    CHECK_ERR(ss_h5_write_array(h, "/objclash", SS_H5_I32, 2, d2, obj, t), SS_ERR_ARG,
              "clashes with the existing object /tokens");
    CHECK_OK(ss_h5_commit(h));

    ss_h5_reader *r;
    CHECK_OK(ss_h5_open_read(path, &r));
    CHECK(!ss_h5_exists(r, "/clash") && !ss_h5_exists(r, "/twice") && !ss_h5_exists(r, "/objclash"));
    char **names;
    int nd;
    CHECK_OK(ss_h5_dim_names(r, "/acts/blocks.0.hook_resid_pre", &names, &nd));
    CHECK(nd == 3 && names[0] && names[1] && names[2]);
    CHECK(!strcmp(names[0], "batch") && !strcmp(names[1], "pos") && !strcmp(names[2], "d_model"));
    ss_h5_free_names(names, (size_t)nd);
    CHECK_OK(ss_h5_dim_names(r, "/half", &names, &nd));
    CHECK(nd == 2 && names[0] && !strcmp(names[0], "batch") && names[1] == NULL);
    ss_h5_free_names(names, (size_t)nd);
    ss_h5_info in;
    CHECK_OK(ss_h5_dset_info(r, "/pos", &in));
    CHECK(in.is_scale && in.ndim == 1 && in.dims[0] == 5 && in.cls == SS_H5_CLASS_INT);
    int64_t *pv;
    size_t n;
    CHECK_OK(ss_h5_read_i64(r, "/pos", &pv, &n, NULL));
    CHECK(n == 5 && pv[0] == 0 && pv[4] == 4);
    free(pv);
    CHECK_OK(ss_h5_dset_info(r, "/tokens", &in));
    CHECK(!in.is_scale);
    /* Shared: exactly one /batch, /pos, /d_model at the root besides data. */
    char **list;
    CHECK_OK(ss_h5_list(r, "/", 0, &list, &n));
    CHECK_MSG(n == 5, "root has %zu datasets", n);
    ss_h5_free_names(list, n);
    ss_h5_close_read(r);
    free(path);
}

TEST(h5_commit_renames_and_replaces) {
    char *path = tmp_file("commit.h5");
    int64_t one = 1;
    int32_t v1 = 1, v2 = 2, v3 = 3;
    ss_h5 *h;
    CHECK_OK(ss_h5_create(path, &h));
    char *tmp = ss_strdup(ss_h5_tmp_path(h));
    /* <path>.tmp.<host>.<pid>, the host without dots or slashes */
    char want[600], pid[32];
    snprintf(want, sizeof want, "%s.tmp.", path);
    snprintf(pid, sizeof pid, ".%ld", (long)getpid());
    const size_t wl = strlen(want), tl = strlen(tmp), pl = strlen(pid);
    CHECK(tl > wl + pl && !strncmp(tmp, want, wl) && !strcmp(tmp + tl - pl, pid));
    CHECK(strcspn(tmp + wl, "./") == tl - wl - pl);
    CHECK(exists(tmp) && !exists(path));
    CHECK_OK(ss_h5_write_array(h, "/v", SS_H5_I32, 1, &one, NULL, &v1));
    /* A dataset left open is closed by commit; its handle may still be closed. */
    ss_h5_dset *left_open;
    CHECK_OK(ss_h5_dset_create(h, "/open", SS_H5_I32, 1, &one, NULL, &left_open));
    CHECK_OK(ss_h5_dset_write(left_open, (int64_t[]){0}, &one, &v3));
    CHECK_OK(ss_h5_commit(h));
    CHECK(exists(path) && !exists(tmp));
    CHECK_ERR(ss_h5_dset_write(left_open, (int64_t[]){0}, &one, &v3), SS_ERR_ARG, "closed dataset");
    CHECK_OK(ss_h5_dset_close(left_open));

    /* A second writer: the old file stays until commit. */
    CHECK_OK(ss_h5_create(path, &h));
    CHECK_OK(ss_h5_write_array(h, "/v", SS_H5_I32, 1, &one, NULL, &v2));
    ss_h5_reader *r;
    int32_t *got;
    size_t n;
    CHECK_OK(ss_h5_open_read(path, &r));
    CHECK_OK(ss_h5_read_i32(r, "/v", &got, &n, NULL));
    CHECK(got[0] == 1);
    free(got);
    ss_h5_close_read(r);
    ss_h5_abort(h);
    CHECK(exists(path) && !exists(tmp));
    CHECK_OK(ss_h5_open_read(path, &r));
    CHECK_OK(ss_h5_read_i32(r, "/v", &got, &n, NULL));
    CHECK(got[0] == 1);
    free(got);
    ss_h5_close_read(r);

    CHECK_OK(ss_h5_create(path, &h));
    CHECK_OK(ss_h5_write_array(h, "/v", SS_H5_I32, 1, &one, NULL, &v2));
    CHECK_OK(ss_h5_commit(h));
    CHECK_OK(ss_h5_open_read(path, &r));
    CHECK_OK(ss_h5_read_i32(r, "/v", &got, &n, NULL));
    CHECK(got[0] == 2);
    free(got);
    CHECK(!ss_h5_exists(r, "/open"));
    ss_h5_close_read(r);
    free(tmp);
    free(path);
}

/* An output that is a symbolic link is written through, as a shell's redirection would write it:
 * the temporary goes beside the file the link names (at the end of a chain; created where the
 * last link dangles) and replaces that file, and the link stays. Renamed over the link, it
 * replaced the link with a regular file and left the link's target with the old data. */
TEST(h5_commit_writes_through_a_link) {
    char *dir = tmp_file("through"), *sub = tmp_file("through/sub"), *target = tmp_file("through/sub/data.h5"),
         *link = tmp_file("through/link.h5"), *chain = tmp_file("through/chain.h5");
    CHECK(mkdir(dir, 0777) == 0 && mkdir(sub, 0777) == 0);
    FILE *f = fopen(target, "w");
    CHECK(f && fputs("old\n", f) >= 0 && fclose(f) == 0);
    CHECK(symlink("sub/data.h5", link) == 0 && symlink("link.h5", chain) == 0); /* relative, from their folder */
    char *real = realpath(target, NULL), *got = NULL;
    CHECK_OK(ss_out_target(chain, &got));
    CHECK_MSG(got && !strcmp(got, real), "target %s, want %s", got ? got : "(null)", real);
    free(got);
    int64_t one = 1;
    int32_t v = 7, *back;
    size_t n;
    ss_h5 *h;
    CHECK_OK(ss_h5_create(chain, &h));
    CHECK(!strncmp(ss_h5_tmp_path(h), real, strlen(real))); /* beside the target */
    CHECK_OK(ss_h5_write_array(h, "/v", SS_H5_I32, 1, &one, NULL, &v));
    CHECK_OK(ss_h5_commit(h));
    struct stat sb;
    char to[64] = "";
    CHECK(lstat(chain, &sb) == 0 && S_ISLNK(sb.st_mode) && readlink(chain, to, sizeof to - 1) == 7 && !strcmp(to, "link.h5"));
    CHECK(lstat(link, &sb) == 0 && S_ISLNK(sb.st_mode));
    ss_h5_reader *r;
    CHECK_OK(ss_h5_open_read(target, &r));
    CHECK_OK(ss_h5_read_i32(r, "/v", &back, &n, NULL));
    CHECK(n == 1 && back[0] == 7);
    free(back);
    ss_h5_close_read(r);
    /* dangling: the file it names is created, in a folder that must be there */
    char *dang = tmp_file("through/dangling.h5"), *made = tmp_file("through/sub/new.h5"), *gone = tmp_file("through/gone.h5");
    CHECK(symlink("sub/new.h5", dang) == 0 && symlink("nodir/x.h5", gone) == 0);
    CHECK_OK(ss_h5_create(dang, &h));
    CHECK_OK(ss_h5_write_array(h, "/v", SS_H5_I32, 1, &one, NULL, &v));
    CHECK_OK(ss_h5_commit(h));
    CHECK(lstat(dang, &sb) == 0 && S_ISLNK(sb.st_mode) && lstat(made, &sb) == 0 && S_ISREG(sb.st_mode));
    CHECK_ERR(ss_h5_create(gone, &h), SS_ERR_IO, "a symbolic link to");
    CHECK_ERR(ss_h5_create(gone, &h), SS_ERR_IO, "whose folder");
    CHECK(h == NULL);
    /* a loop is an error, not a hang */
    char *l1 = tmp_file("through/l1"), *l2 = tmp_file("through/l2");
    CHECK(symlink("l2", l1) == 0 && symlink("l1", l2) == 0);
    CHECK_ERR(ss_out_target(l1, &got), SS_ERR_IO, "more than 40 links");
    CHECK(got == NULL);
    /* a name that is no link is given back as it is */
    CHECK_OK(ss_out_target(target, &got));
    CHECK(!strcmp(got, target));
    free(got);
    free(l1), free(l2), free(dang), free(made), free(gone);
    free(real), free(dir), free(sub), free(target), free(link), free(chain);
}

TEST(h5_commit_failure_cleans_up) {
    char *path = tmp_file("becomes_dir.h5");
    ss_h5 *h;
    CHECK_OK(ss_h5_create(path, &h));
    char *tmp = ss_strdup(ss_h5_tmp_path(h));
    int32_t v = 1;
    int64_t one = 1;
    CHECK_OK(ss_h5_write_array(h, "/v", SS_H5_I32, 1, &one, NULL, &v));
    /* Something else takes the name meanwhile: a non-empty directory. */
    CHECK(mkdir(path, 0700) == 0);
    char *inner = ss_path_join(path, "keep");
    FILE *f = fopen(inner, "w");
    CHECK(f);
    fclose(f);
    CHECK_ERR(ss_h5_commit(h), SS_ERR_IO, "cannot rename");
    CHECK(!exists(tmp) && exists(inner));
    unlink(inner);
    rmdir(path);
    free(inner);
    free(tmp);
    free(path);
}

static volatile sig_atomic_t pipes_seen;
static void count_pipe(int sig) { (void)sig, pipes_seen++; }

/* ss_h5_commit_held: the file in place with the signals still held, on success and on failure,
 * until ss_signals_release, which restores the mask as it was; a signal raised meanwhile
 * (SIGPIPE here, under a handler of the test's own) takes effect then, not before. */
TEST(h5_commit_held_holds_the_signals_until_released) {
    const int held_sigs[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGPIPE};
    struct sigaction sa = {0}, old_pipe;
    sa.sa_handler = count_pipe;
    sigemptyset(&sa.sa_mask);
    CHECK(sigaction(SIGPIPE, &sa, &old_pipe) == 0);
    sigset_t before, during, after;
    CHECK(pthread_sigmask(SIG_BLOCK, NULL, &before) == 0);
    char *path = tmp_file("held.h5");
    for (int fail = 0; fail < 2; fail++) {
        ss_h5 *h = NULL;
        int32_t v = 1;
        int64_t one = 1;
        if (!fail) {
            CHECK_OK(ss_h5_create(path, &h));
            CHECK_OK(ss_h5_write_array(h, "/v", SS_H5_I32, 1, &one, NULL, &v));
        }
        ss_signals_held held;
        pipes_seen = 0;
        const ss_status st = ss_h5_commit_held(h, &held, NULL);
        CHECK(fail ? st != SS_OK : st == SS_OK);
        ss_error_clear();
        CHECK(pthread_sigmask(SIG_BLOCK, NULL, &during) == 0);
        for (size_t i = 0; i < sizeof held_sigs / sizeof *held_sigs; i++) CHECK(sigismember(&during, held_sigs[i]) == 1);
        CHECK(fail || exists(path));
        raise(SIGPIPE);
        CHECK(pipes_seen == 0);
        ss_signals_release(&held);
        CHECK(pipes_seen == 1);
        CHECK(pthread_sigmask(SIG_BLOCK, NULL, &after) == 0);
        for (size_t i = 0; i < sizeof held_sigs / sizeof *held_sigs; i++)
            CHECK(sigismember(&after, held_sigs[i]) == sigismember(&before, held_sigs[i]));
    }
    CHECK(sigaction(SIGPIPE, &old_pipe, NULL) == 0);
    unlink(path);
    free(path);
}

static void *idle_thread(void *arg) {
    for (;;) pause();
    return arg;
}

/* A SIGTERM that another thread takes (blocked here, not there), its handler's unlink made slow:
 * on return (after 0.1 s) that thread is in the handler, removing the temporaries. */
static int term_taken_by_another_thread(void) {
    pthread_t th;
    if (pthread_create(&th, NULL, idle_thread, NULL)) return 5;
    sigset_t term;
    sigemptyset(&term);
    sigaddset(&term, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &term, NULL);
    ss_test_unlink_delay_ms = 500;
    kill(getpid(), SIGTERM);
    usleep(100000);
    return 0;
}

/* Runs child(arg) in a forked process and returns its wait status. */
static int status_of_child(int (*child)(void *), void *arg) {
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) _exit(child(arg));
    int status = 0;
    if (pid < 0 || waitpid(pid, &status, 0) != pid) return -1;
    return status;
}

/* In a child: a SIGTERM that another thread took just before the hold, its handler still
 * removing the temporaries (an unlink made slow), then two renames with the signals held. */
static int rename_two_beside_a_dying_handler(void *arg) {
    char *const *names = arg;
    for (int i = 0; i < 4; i += 2) {
        FILE *f = fopen(names[i], "w");
        if (!f) return 3;
        fclose(f);
    }
    ss_tmp_register(names[4]);
    struct sigaction cur;
    if (sigaction(SIGTERM, NULL, &cur) || cur.sa_handler == SIG_DFL || cur.sa_handler == SIG_IGN) return 4;
    if (term_taken_by_another_thread()) return 5;
    ss_signals_held held;
    ss_signals_hold(&held);
    rename(names[0], names[1]);
    usleep(1000000);
    rename(names[2], names[3]);
    ss_signals_release(&held);
    return 0;
}

/* A signal that another thread took before ss_signals_hold, its handler still on its way to end
 * the process (removing the temporaries), ended it between the held renames: the first file new,
 * the second old. The hold waits for such a handler now: the process ends before the first. */
TEST(signals_hold_waits_for_a_handler_already_ending_the_process) {
    char *names[5] = {tmp_file("race_a.new"), tmp_file("race_a"), tmp_file("race_b.new"), tmp_file("race_b"),
                      tmp_file("race.tmp")};
    FILE *f = fopen(names[4], "w");
    CHECK(f != NULL);
    if (f) fclose(f);
    const int status = status_of_child(rename_two_beside_a_dying_handler, names);
    CHECK_MSG(WIFSIGNALED(status) && WTERMSIG(status) == SIGTERM, "status %d", status);
    CHECK(!exists(names[4])); /* the handler ran: it removed the temporary */
    CHECK_MSG(exists(names[1]) == exists(names[3]), "the first file renamed (%d), the second (%d)", exists(names[1]),
              exists(names[3]));
    for (int i = 0; i < 5; i++) unlink(names[i]), free(names[i]);
}

/* In a child: a SIGTERM that another thread takes, its handler removing the temporary (an unlink
 * made slow), while this thread unregisters the temporary's path, then overwrites and frees it as
 * an owner may once ss_tmp_unregister has returned. */
static int unregister_beside_a_dying_handler(void *name) {
    char *path = ss_strfmt("%s", (const char *)name);
    ss_tmp_register(path);
    if (term_taken_by_another_thread()) return 5; /* its unlink given the path */
    ss_tmp_unregister(path);
    memset(path, 'x', strlen(path)); /* the memory reused */
    free(path);
    usleep(2000000);
    return 0;
}

/* ss_tmp_unregister waits for a handler that may have read the path before it returns (its
 * caller frees it): the handler removed the temporary, from its path as registered, and the
 * process ended of the signal. Before, unregister returned at once and the handler's unlink read
 * the overwritten (freed) memory: the temporary stayed. */
TEST(tmp_unregister_waits_for_a_handler_reading_the_path) {
    char *name = tmp_file("unregister_race.tmp");
    FILE *f = fopen(name, "w");
    CHECK(f != NULL);
    if (f) fclose(f);
    const int status = status_of_child(unregister_beside_a_dying_handler, name);
    CHECK_MSG(WIFSIGNALED(status) && WTERMSIG(status) == SIGTERM, "status %d", status);
    CHECK(!exists(name));
    unlink(name);
    free(name);
}

static void put(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    if (f) fputs(text, f), fclose(f);
}

/* The text of the file at path ("" where there is none), in buf. */
static const char *text_of(const char *path, char *buf, size_t cap) {
    FILE *f = fopen(path, "r");
    size_t n = f ? fread(buf, 1, cap - 1, f) : 0;
    buf[n] = 0;
    if (f) fclose(f);
    return buf;
}

/* Names in dir containing part. */
static int names_with(const char *dir, const char *part) {
    char cmd[700], line[300];
    snprintf(cmd, sizeof cmd, "ls -A '%s'", dir);
    FILE *f = popen(cmd, "r");
    int n = 0;
    while (f && fgets(line, sizeof line, f)) n += strstr(line, part) != NULL;
    if (f) pclose(f);
    return n;
}

/* ss_replace: files put in place as one. A rename that fails part-way leaves the folder as it was
 * once ss_replace_undo has run: each earlier file back (its kept copy, NAME.old.<host>.<pid>,
 * renamed over the new one), a new file that replaced none removed, no kept copy left; on success
 * ss_replace_done leaves the new files and no kept copy. A kept copy's name already taken (a
 * killed run's with this pid) is an error naming it, with nothing replaced. */
TEST(replace_undo_puts_the_earlier_files_back) {
    char *dir = tmp_file("replace");
    mkdir(dir, 0777);
    char buf[64];
    const char *names[] = {"a", "b", "c", "d"};
    char *dest[4], *tmp[4];
    for (int i = 0; i < 4; i++) dest[i] = ss_path_join(dir, names[i]), tmp[i] = ss_tmp_name(dest[i]);
    /* a's kept copy: a.old.<host>.<pid>, as long as its temporary's name (which the command line checks) */
    const char *mark = strstr(tmp[0], ".tmp.");
    char *kept = ss_strfmt("%.*s.old.%s", (int)(mark - tmp[0]), tmp[0], mark + 5);
    for (int round = 0; round < 2; round++) {
        unlink(dest[2]), unlink(dest[3]);
        put(dest[0], "old a"), put(dest[1], "old b");
        put(tmp[0], "new a"), put(tmp[1], "new b"), put(tmp[2], "new c");
        if (round) put(tmp[3], "new d");
        ss_replace r = {0};
        for (int i = 0; i < 3; i++) CHECK_OK(ss_replace_file(&r, tmp[i], dest[i], names[i]));
        CHECK(!strcmp(text_of(dest[0], buf, sizeof buf), "new a") && !strcmp(text_of(dest[2], buf, sizeof buf), "new c"));
        CHECK(names_with(dir, ".old.") == 2 && exists(kept)); /* a's and b's; c had no file */
        if (!round) { /* d's temporary is missing: its rename fails */
            CHECK_ERR(ss_replace_file(&r, tmp[3], dest[3], "the d file"), SS_ERR_IO, "the d file: cannot rename");
            ss_replace_undo(&r);
            CHECK(!strcmp(text_of(dest[0], buf, sizeof buf), "old a") && !strcmp(text_of(dest[1], buf, sizeof buf), "old b"));
            CHECK(!exists(dest[2]) && !exists(dest[3]));
        } else {
            CHECK_OK(ss_replace_file(&r, tmp[3], dest[3], names[3]));
            ss_replace_done(&r);
            CHECK(!strcmp(text_of(dest[1], buf, sizeof buf), "new b") && !strcmp(text_of(dest[3], buf, sizeof buf), "new d"));
        }
        CHECK(r.n == 0 && names_with(dir, ".old.") == 0 && names_with(dir, ".tmp.") == 0);
    }
    /* a.old.<host>.<pid> there already */
    put(tmp[0], "newer a"), put(kept, "a killed run's");
    ss_replace r = {0};
    CHECK_ERR(ss_replace_file(&r, tmp[0], dest[0], "the a file"), SS_ERR_IO, "the a file: cannot keep the earlier file as");
    CHECK(r.n == 0 && !strcmp(text_of(dest[0], buf, sizeof buf), "new a") && exists(tmp[0]));
    CHECK(!strcmp(text_of(kept, buf, sizeof buf), "a killed run's"));
    unlink(kept), unlink(tmp[0]);
    for (int i = 0; i < 4; i++) unlink(dest[i]), free(dest[i]), free(tmp[i]);
    rmdir(dir);
    free(kept), free(dir);
}

TEST(h5_abort_leaves_nothing) {
    char *path = tmp_file("aborted.h5");
    ss_h5 *h;
    CHECK_OK(ss_h5_create(path, &h));
    char *tmp = ss_strdup(ss_h5_tmp_path(h));
    int64_t dims[] = {3};
    float v[] = {1, 2, 3};
    const char *names[] = {"x"};
    CHECK_OK(ss_h5_write_array(h, "/a/b", SS_H5_F32, 1, dims, names, v));
    ss_h5_dset *d;
    CHECK_OK(ss_h5_dset_create(h, "/a/c", SS_H5_F32, 1, dims, names, &d));
    CHECK(exists(tmp));
    ss_h5_abort(h);
    CHECK(!exists(tmp) && !exists(path));
    CHECK_OK(ss_h5_dset_close(d));
    ss_h5_abort(NULL);
    free(tmp);
    free(path);
}

TEST(h5_errors_name_the_file) {
    /* A path whose "directory" is a regular file cannot be created, even as root. */
    char *plain = tmp_file("plain.txt");
    FILE *f = fopen(plain, "w");
    CHECK(f);
    fputs("this is not an HDF5 file\n", f);
    fclose(f);
    char *under = ss_path_join(plain, "out.h5");
    ss_h5 *h = (ss_h5 *)1;
    CHECK_ERR(ss_h5_create(under, &h), SS_ERR_IO, under);
    CHECK(h == NULL);
    CHECK_ERR(ss_h5_create(under, &h), SS_ERR_IO, "Not a directory"); /* HDF5's innermost reason */
    CHECK_ERR(ss_h5_create("/nonexistent_dir_ss/out.h5", &h), SS_ERR_IO, "/nonexistent_dir_ss/out.h5");
    CHECK_ERR(ss_h5_create(ss_test_tmp_dir(), &h), SS_ERR_ARG, "is a directory");
    if (geteuid() != 0) {
        char *ro = tmp_file("readonly");
        CHECK(mkdir(ro, 0500) == 0);
        char *p = ss_path_join(ro, "out.h5");
        CHECK_ERR(ss_h5_create(p, &h), SS_ERR_IO, "Permission denied");
        free(p);
        free(ro);
    }

    ss_h5_reader *r = (ss_h5_reader *)1;
    /* a folder: refused by ss_input_kind, as every input is, in its words */
    CHECK_ERR(ss_h5_open_read(ss_test_tmp_dir(), &r), SS_ERR_IO, "is a folder, not a file");
    CHECK(r == NULL);
    CHECK_ERR(ss_h5_open_read(plain, &r), SS_ERR_FORMAT, "not an HDF5 file");
    CHECK_ERR(ss_h5_open_read(plain, &r), SS_ERR_FORMAT, plain);
    CHECK(r == NULL);
    char *missing = tmp_file("missing.h5");
    CHECK_ERR(ss_h5_open_read(missing, &r), SS_ERR_IO, missing);
    CHECK_ERR(ss_h5_open_read(missing, &r), SS_ERR_IO, "No such file");
    /* A truncated HDF5 file: signature present, the rest gone. */
    char *good = tmp_file("good.h5");
    CHECK_OK(ss_h5_create(good, &h));
    int64_t dims[] = {64};
    float v[64] = {0};
    CHECK_OK(ss_h5_write_array(h, "/v", SS_H5_F32, 1, dims, NULL, v));
    CHECK_OK(ss_h5_commit(h));
    CHECK(truncate(good, 600) == 0);
    ss_status st = ss_h5_open_read(good, &r);
    if (st == SS_OK) {
        float *x;
        size_t n;
        st = ss_h5_read_f32(r, "/v", &x, &n, NULL);
        if (st == SS_OK) free(x);
        ss_h5_close_read(r);
    }
    CHECK_MSG(st != SS_OK && strstr(ss_last_error(), good), "truncated file: %s", ss_last_error());
    free(good);
    free(missing);
    free(under);
    free(plain);
}

TEST(h5_read_type_errors) {
    char *path = tmp_file("rte.h5");
    ss_h5 *h;
    CHECK_OK(ss_h5_create(path, &h));
    int64_t d[] = {2, 2};
    CHECK_ERR(ss_h5_write_array(h, "/neg", SS_H5_F32, 2, (int64_t[]){2, -1}, NULL, NULL), SS_ERR_ARG, "negative size");
    CHECK_ERR(ss_h5_write_array(h, "/badtype", (ss_h5_type)99, 2, d, NULL, NULL), SS_ERR_ARG, "invalid element type");
    int64_t e[] = {0, 3};
    CHECK_OK(ss_h5_write_array(h, "/empty", SS_H5_F32, 2, e, NULL, NULL));
    CHECK_OK(ss_h5_commit(h));
    ss_h5_reader *r;
    CHECK_OK(ss_h5_open_read(path, &r));
    float *x;
    size_t n;
    ss_h5_info in;
    CHECK_OK(ss_h5_read_f32(r, "/empty", &x, &n, &in));
    CHECK(n == 0 && in.ndim == 2 && in.dims[0] == 0 && in.dims[1] == 3 && !in.chunked);
    free(x);
    CHECK_ERR(ss_h5_read_slab(r, "/empty", SS_H5_F32, (int64_t[]){0, 0}, (int64_t[]){1, 1}, &x), SS_ERR_ARG,
              "axis 0");
    ss_h5_close_read(r);
    free(path);
}

/* ss_h5_read_want checks the element count before allocating: a dataset of
 * 2^31 int64 whose chunks were never written is a file of a few KB that
 * ss_h5_read would turn into 16 GiB of fill values. */
TEST(h5_read_want_refuses_other_sizes_before_reading) {
    char *path = tmp_file("want.h5");
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    const hsize_t three = 3, huge = (hsize_t)1 << 31, chunk = 1 << 16;
    raw_i32(f, "/three", 1, &three, (const int32_t[]){4, 5, 6});
    hid_t sp = H5Screate_simple(1, &huge, NULL), dcpl = H5Pcreate(H5P_DATASET_CREATE);
    CHECK(f >= 0 && sp >= 0 && dcpl >= 0 && H5Pset_chunk(dcpl, 1, &chunk) >= 0);
    hid_t d = H5Dcreate2(f, "/huge", H5T_STD_I64LE, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    CHECK(d >= 0);
    H5Dclose(d);
    H5Pclose(dcpl);
    H5Sclose(sp);
    H5Fclose(f);
    struct stat sb;
    CHECK(stat(path, &sb) == 0 && sb.st_size < 64 * 1024);
    ss_h5_reader *r;
    CHECK_OK(ss_h5_open_read(path, &r));
    int64_t *v = NULL;
    CHECK_OK(ss_h5_read_want(r, "/three", SS_H5_I64, 3, (void **)&v, NULL));
    CHECK(v && v[0] == 4 && v[1] == 5 && v[2] == 6);
    free(v);
    v = (int64_t *)path; /* set to NULL by a refusal */
    CHECK_ERR(ss_h5_read_want(r, "/three", SS_H5_I64, 1, (void **)&v, NULL), SS_ERR_FORMAT,
              "/three holds 3 values, not the 1 expected");
    CHECK(v == NULL);
    CHECK_ERR(ss_h5_read_want(r, "/huge", SS_H5_I64, 1, (void **)&v, NULL), SS_ERR_FORMAT,
              "/huge holds 2147483648 values, not the 1 expected");
    CHECK(v == NULL);
    ss_h5_close_read(r);
    unlink(path);
    free(path);
}

/* A covariance is written whole: one whose chunks were never written reads as
 * fill values, and its diagonal was read through all of it ([2^17, 2^17] in a
 * file of a few KB: 128 GiB, hours). ss_h5_dset_written refuses a dataset over
 * 1 MiB that stores less than 1/2048 of its size; a written one, compressed as
 * far as deflate goes (zeros, about 1000:1), passes. */
TEST(h5_read_diag_refuses_a_matrix_never_written) {
    char *path = tmp_file("unwritten.h5");
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    const hsize_t dims[2] = {8192, 8192}, chunk[2] = {64, 1024};
    hid_t sp = H5Screate_simple(2, dims, NULL), dcpl = H5Pcreate(H5P_DATASET_CREATE);
    CHECK(f >= 0 && sp >= 0 && dcpl >= 0 && H5Pset_chunk(dcpl, 2, chunk) >= 0 && H5Pset_shuffle(dcpl) >= 0 &&
          H5Pset_deflate(dcpl, 9) >= 0);
    hid_t d = H5Dcreate2(f, "/never", H5T_IEEE_F64LE, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    CHECK(d >= 0);
    H5Dclose(d);
    H5Sclose(sp);
    /* [1024, 1024] zeros, written: 8 MiB stored in about 8 KB */
    const hsize_t zd[2] = {1024, 1024};
    double *z = calloc(1024 * 1024, sizeof *z);
    sp = H5Screate_simple(2, zd, NULL);
    d = H5Dcreate2(f, "/zeros", H5T_IEEE_F64LE, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    CHECK(z && sp >= 0 && d >= 0 && H5Dwrite(d, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, z) >= 0);
    H5Dclose(d);
    H5Sclose(sp);
    H5Pclose(dcpl);
    H5Fclose(f);
    ss_h5_reader *r;
    CHECK_OK(ss_h5_open_read(path, &r));
    double *diag = malloc(8192 * sizeof *diag);
    CHECK(diag != NULL);
    CHECK_OK(ss_h5_dset_written(r, "/zeros"));
    diag[0] = 1;
    CHECK_OK(ss_h5_read_diag(r, "/zeros", 1024, diag));
    CHECK(diag[0] == 0 && diag[1023] == 0);
    CHECK_ERR(ss_h5_read_diag(r, "/never", 8192, diag), SS_ERR_FORMAT,
              "/never declares 536870912 bytes but stores 0: most of it was never written");
    CHECK_ERR(ss_h5_dset_written(r, "/never"), SS_ERR_FORMAT, "declares 536870912 bytes");
    /* forward's /logits: only the prompts' own positions are written. /zeros's 2^20 written values
     * are stored; of /never, 2^17 values (1 MiB) are too few to tell, 2^18 are not stored */
    CHECK_OK(ss_h5_dset_written_part(r, "/zeros", (size_t)1 << 20));
    CHECK_OK(ss_h5_dset_written_part(r, "/never", (size_t)1 << 17));
    CHECK_ERR(ss_h5_dset_written_part(r, "/never", (size_t)1 << 18), SS_ERR_FORMAT,
              "/never stores 0 bytes, under 1/2048 of the 2097152 its written part declares");
    ss_h5_close_read(r);
    free(diag);
    free(z);
    unlink(path);
    free(path);
}
