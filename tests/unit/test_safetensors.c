/* safetensors: files are built byte by byte here so every corruption the
 * reader must refuse can be produced exactly. */
#include <fcntl.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "subscope/safetensors.h"
#include "subscope/util.h"
#include "test.h"

/* Writes [u64 hlen][header][data] to tmp/<name>; hlen is the header's length
 * unless hlen_override is not (uint64_t)-1. Returns the path (caller frees). */
static char *st_write_raw(const char *name, uint64_t hlen, const char *header, size_t header_len, const void *data,
                          size_t dlen) {
    char *path = ss_path_join(ss_test_tmp_dir(), name);
    FILE *f = fopen(path, "wb");
    if (!f) return path;
    unsigned char le[8];
    for (int i = 0; i < 8; i++) le[i] = (unsigned char)(hlen >> (8 * i));
    fwrite(le, 1, 8, f);
    if (header_len) fwrite(header, 1, header_len, f);
    if (dlen) fwrite(data, 1, dlen, f);
    fclose(f);
    return path;
}

static char *st_write(const char *name, const char *header, const void *data, size_t dlen) {
    return st_write_raw(name, strlen(header), header, strlen(header), data, dlen);
}

static char *write_bytes(const char *name, const void *data, size_t len) {
    char *path = ss_path_join(ss_test_tmp_dir(), name);
    FILE *f = fopen(path, "wb");
    if (f) {
        if (len) fwrite(data, 1, len, f);
        fclose(f);
    }
    return path;
}

/* Opening must fail with code and a message containing the file name and sub;
 * on a mismatch why[] says what happened. */
static char why[2400];
static int open_fails(const char *path, ss_status code, const char *sub) {
    ss_safetensors *st = (ss_safetensors *)1;
    ss_error_clear();
    ss_status s = ss_safetensors_open(path, &st);
    const char *base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
    int ok = s == code && st == NULL && strstr(ss_last_error(), base) && strstr(ss_last_error(), sub);
    snprintf(why, sizeof why, "open %s: wanted %s with \"%s\", got %s: \"%s\"", base, ss_status_name(code), sub,
             ss_status_name(s), ss_last_error());
    if (s == SS_OK) ss_safetensors_free(st);
    return ok;
}
#define OPEN_FAILS(path, code, sub)                                \
    do {                                                           \
        int ok_ = open_fails(path, code, sub);                     \
        if (!ok_) free(path);                                      \
        CHECK_MSG(ok_, "%s", why);                                 \
    } while (0)

static const float f32_vals[4] = {1.5f, -2.25f, 3.0e-3f, 1.0e10f};
static const uint16_t f16_bits[6] = {0x3c00, 0xb800, 0x7bff, 0x0001, 0x0400, 0xfc00};
static const float f16_vals[6] = {1.0f, -0.5f, 65504.0f, 5.9604644775390625e-8f, 6.103515625e-5f, -INFINITY};
static const uint16_t bf16_bits[3] = {0x3f80, 0xc040, 0x4049};
static const float bf16_vals[3] = {1.0f, -3.0f, 3.140625f};
static const double f64_vals[2] = {0.1, -1e300};

TEST(safetensors_roundtrip_f32_f16_bf16_f64) {
    unsigned char buf[64];
    memcpy(buf, f32_vals, 16);
    memcpy(buf + 16, f16_bits, 12);
    memcpy(buf + 28, bf16_bits, 6);
    memcpy(buf + 34, f64_vals, 16); /* deliberately unaligned for F64 */
    /* Trailing spaces pad the header (as the reference writer does); with this
     * padding the data buffer starts at an odd file offset. */
    const char *hdr = "{\"__metadata__\":{\"format\":\"pt\",\"note\":\"x\"},"
                      "\"w.f32\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]},"
                      "\"w.f16\":{\"dtype\":\"F16\",\"shape\":[6],\"data_offsets\":[16,28]},"
                      "\"w.bf16\":{\"dtype\":\"BF16\",\"shape\":[3,1],\"data_offsets\":[28,34]},"
                      "\"w.f64\":{\"dtype\":\"F64\",\"shape\":[1,2],\"data_offsets\":[34,50]}}   ";
    CHECK((8 + strlen(hdr)) % 2 == 1);
    char *path = st_write("rt.safetensors", hdr, buf, 50);
    ss_safetensors *st = NULL;
    CHECK_OK(ss_safetensors_open(path, &st));
    CHECK(ss_safetensors_count(st) == 4);
    CHECK(strcmp(ss_safetensors_at(st, 0)->name, "w.f32") == 0); /* header order */
    CHECK(strcmp(ss_safetensors_at(st, 3)->name, "w.f64") == 0);
    CHECK(ss_safetensors_at(st, 4) == NULL);
    CHECK(ss_safetensors_find(st, "__metadata__") == NULL);
    CHECK(ss_safetensors_find(st, "w.f1") == NULL);

    const ss_tensor_info *t = ss_safetensors_find(st, "w.f32");
    CHECK(t && t->dtype == SS_DTYPE_F32 && t->ndim == 2 && t->shape[0] == 2 && t->shape[1] == 2 &&
          t->nbytes == 16 && strcmp(t->file, path) == 0);
    float out[8];
    CHECK_OK(ss_tensor_to_f32(t, out, 4));
    for (int i = 0; i < 4; i++) CHECK(out[i] == f32_vals[i]);

    t = ss_safetensors_find(st, "w.f16");
    CHECK(t && t->dtype == SS_DTYPE_F16 && t->ndim == 1 && t->shape[0] == 6 && t->nbytes == 12);
    CHECK_OK(ss_tensor_to_f32(t, out, 6));
    for (int i = 0; i < 6; i++) CHECK_MSG(out[i] == f16_vals[i], "f16[%d] = %g, want %g", i, out[i], f16_vals[i]);

    t = ss_safetensors_find(st, "w.bf16");
    CHECK(t && t->dtype == SS_DTYPE_BF16 && t->ndim == 2 && t->nbytes == 6);
    CHECK_OK(ss_tensor_to_f32(t, out, 3));
    for (int i = 0; i < 3; i++) CHECK(out[i] == bf16_vals[i]);

    t = ss_safetensors_find(st, "w.f64");
    CHECK(t && t->dtype == SS_DTYPE_F64 && ((uintptr_t)t->data & 7) != 0);
    CHECK_OK(ss_tensor_to_f32(t, out, 2));
    CHECK(out[0] == 0.1f && out[1] == -INFINITY);

    /* Element count must match exactly. */
    CHECK_ERR(ss_tensor_to_f32(t, out, 3), SS_ERR_ARG, "w.f64");
    ss_safetensors_free(st);
    free(path);
}

/* ss_tensor_nonfinite finds the first NaN or infinity at any offset (in a
 * full block of 4096, in the partial last one), unaligned, in each float
 * dtype, and F64 values that float32 cannot hold. */
static const char *nonfinite_at(ss_dtype dt, const void *data, size_t n, size_t *at) {
    ss_tensor_info t = {.name = "t", .dtype = dt, .ndim = 1, .data = data};
    t.shape[0] = (int64_t)n;
    t.nbytes = n * ss_dtype_size(dt);
    return ss_tensor_nonfinite(&t, at);
}

TEST(safetensors_nonfinite_weights) {
    enum { N = 3 * 4096 + 17 };
    unsigned char *buf = calloc(1, N * 8 + 1), *p = buf + 1; /* unaligned */
    size_t at = 99;
    const size_t spots[] = {0, 4095, 4096, 3 * 4096 + 5, N - 1};
    for (size_t k = 0; k < sizeof spots / sizeof spots[0]; k++) {
        const size_t i = spots[k];
        const struct { ss_dtype dt; uint32_t nan, inf, big; } cases[] = {
            {SS_DTYPE_F32, 0x7fc00000u, 0xff800000u, 0x7f7fffffu},
            {SS_DTYPE_F16, 0x7e00u, 0x7c00u, 0x7bffu},
            {SS_DTYPE_BF16, 0xffc1u, 0x7f80u, 0x7f7fu},
        };
        for (size_t c = 0; c < 3; c++) {
            const size_t es = ss_dtype_size(cases[c].dt);
            memset(buf, 0, N * 8 + 1);
            memcpy(p + es * i, &cases[c].big, es); /* the largest finite value: not refused */
            CHECK(nonfinite_at(cases[c].dt, p, N, &at) == NULL);
            memcpy(p + es * i, &cases[c].nan, es);
            const char *r = nonfinite_at(cases[c].dt, p, N, &at);
            CHECK_MSG(r && !strcmp(r, "NaN") && at == i, "%s at %zu: %s at %zu", ss_dtype_name(cases[c].dt), i,
                      r ? r : "none", at);
            memcpy(p + es * i, &cases[c].inf, es);
            if (i) memcpy(p + es * (i - 1), &cases[c].big, es);
            r = nonfinite_at(cases[c].dt, p, N, &at);
            CHECK_MSG(r && !strcmp(r, "an infinity") && at == i, "%s at %zu: %s at %zu", ss_dtype_name(cases[c].dt),
                      i, r ? r : "none", at);
        }
    }
    double d[3] = {1.0, -3.5e38, 2.0};
    CHECK(nonfinite_at(SS_DTYPE_F64, d, 3, &at) && at == 1);
    CHECK(!strcmp(nonfinite_at(SS_DTYPE_F64, d, 3, &at), "a value beyond float32's range"));
    d[1] = -3.4e38;
    CHECK(nonfinite_at(SS_DTYPE_F64, d, 3, &at) == NULL);
    d[2] = NAN;
    CHECK(nonfinite_at(SS_DTYPE_F64, d, 3, &at) && at == 2);
    memset(buf, 0xff, N * 8 + 1); /* all bits set: not a float type, nothing to check */
    CHECK(nonfinite_at(SS_DTYPE_I32, p, N, &at) == NULL);
    CHECK(nonfinite_at(SS_DTYPE_F32, p, 0, &at) == NULL);
    free(buf);
}

TEST(safetensors_dtype_names_sizes) {
    CHECK(strcmp(ss_dtype_name(SS_DTYPE_BF16), "BF16") == 0);
    CHECK(ss_dtype_size(SS_DTYPE_BF16) == 2 && ss_dtype_size(SS_DTYPE_F64) == 8 && ss_dtype_size(SS_DTYPE_BOOL) == 1);
    CHECK(ss_dtype_size(SS_DTYPE_I64) == 8 && ss_dtype_size(SS_DTYPE_I16) == 2 && ss_dtype_size(SS_DTYPE_U8) == 1);
}

TEST(safetensors_scalar_empty_and_int) {
    int32_t iv[2] = {7, -8};
    float sc = 42.0f;
    unsigned char buf[12];
    memcpy(buf, iv, 8);
    memcpy(buf + 8, &sc, 4);
    /* An empty tensor sits at offset 8 between the others; a scalar has shape []. */
    const char *hdr = "{\"ids\":{\"dtype\":\"I32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                      "\"empty\":{\"dtype\":\"F32\",\"shape\":[0,5],\"data_offsets\":[8,8]},"
                      "\"empty2\":{\"dtype\":\"BF16\",\"shape\":[3,0],\"data_offsets\":[8,8]},"
                      "\"scalar\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[8,12]}}";
    char *path = st_write("misc.safetensors", hdr, buf, 12);
    ss_safetensors *st = NULL;
    CHECK_OK(ss_safetensors_open(path, &st));
    float out[2];
    const ss_tensor_info *t = ss_safetensors_find(st, "scalar");
    CHECK(t && t->ndim == 0 && t->nbytes == 4);
    CHECK_OK(ss_tensor_to_f32(t, out, 1));
    CHECK(out[0] == 42.0f);
    t = ss_safetensors_find(st, "empty");
    CHECK(t && t->nbytes == 0 && t->shape[0] == 0 && t->shape[1] == 5);
    CHECK_OK(ss_tensor_to_f32(t, out, 0));
    t = ss_safetensors_find(st, "ids");
    CHECK(t && t->dtype == SS_DTYPE_I32);
    CHECK_ERR(ss_tensor_to_f32(t, out, 2), SS_ERR_UNSUPPORTED, "ids");
    ss_safetensors_free(st);
    free(path);

    /* A file with no tensors at all is valid. */
    path = st_write("none.safetensors", "{}", NULL, 0);
    CHECK_OK(ss_safetensors_open(path, &st));
    CHECK(ss_safetensors_count(st) == 0);
    ss_safetensors_free(st);
    free(path);
}

#define T1(dtype, shape, offs) "{\"t\":{\"dtype\":\"" dtype "\",\"shape\":" shape ",\"data_offsets\":" offs "}}"

TEST(safetensors_short_and_truncated_files) {
    char *p = write_bytes("tiny.safetensors", "\x02\0\0\0\0", 5);
    OPEN_FAILS(p, SS_ERR_FORMAT, "too short");
    free(p);
    p = write_bytes("empty.safetensors", NULL, 0);
    OPEN_FAILS(p, SS_ERR_FORMAT, "too short");
    free(p);

    /* Header length larger than the file. */
    const char *h = T1("F32", "[2]", "[0,8]");
    p = st_write_raw("hlen.safetensors", 1000, h, strlen(h), "abcdefgh", 8);
    OPEN_FAILS(p, SS_ERR_FORMAT, "header length 1000 runs past the end");
    free(p);
    p = st_write_raw("hlen_huge.safetensors", UINT64_MAX, h, strlen(h), "abcdefgh", 8);
    OPEN_FAILS(p, SS_ERR_FORMAT, "runs past the end");
    free(p);

    /* The data buffer cut short: the tensor's range runs past it. */
    p = st_write("trunc.safetensors", h, "abcd", 4);
    OPEN_FAILS(p, SS_ERR_FORMAT, "tensor \"t\": data_offsets [0, 8] run past the end of the 4-byte");
    free(p);

    /* File cut inside the header: the header length no longer fits. */
    p = st_write_raw("trunc_hdr.safetensors", strlen(h), h, 10, NULL, 0);
    OPEN_FAILS(p, SS_ERR_FORMAT, "runs past the end");
    free(p);
}

TEST(safetensors_header_length_cap) {
    /* A sparse file just big enough to hold a header over the 100 MB cap. */
    char *p = ss_path_join(ss_test_tmp_dir(), "cap.safetensors");
    int fd = open(p, O_CREAT | O_TRUNC | O_WRONLY, 0644);
    CHECK(fd >= 0);
    uint64_t hlen = 100000001;
    unsigned char le[8];
    for (int i = 0; i < 8; i++) le[i] = (unsigned char)(hlen >> (8 * i));
    CHECK(write(fd, le, 8) == 8);
    CHECK(ftruncate(fd, (off_t)(8 + hlen)) == 0);
    close(fd);
    OPEN_FAILS(p, SS_ERR_FORMAT, "exceeds the 100000000-byte limit");
    unlink(p);
    free(p);
}

TEST(safetensors_bad_json) {
    char *p = st_write("notjson.safetensors", "{\"t\": nope}", NULL, 0);
    OPEN_FAILS(p, SS_ERR_FORMAT, "header:1:");
    free(p);
    p = st_write("array.safetensors", "[1, 2]", NULL, 0);
    OPEN_FAILS(p, SS_ERR_FORMAT, "header is not a JSON object");
    free(p);
    p = st_write("zerohdr.safetensors", "", NULL, 0);
    OPEN_FAILS(p, SS_ERR_FORMAT, "header");
    free(p);
    p = st_write("entry.safetensors", "{\"t\": [1]}", NULL, 0);
    OPEN_FAILS(p, SS_ERR_FORMAT, "tensor \"t\": entry is not an object");
    free(p);
    p = st_write("md1.safetensors", "{\"__metadata__\": [\"a\"]}", NULL, 0);
    OPEN_FAILS(p, SS_ERR_FORMAT, "\"__metadata__\" is not an object");
    free(p);
    p = st_write("md2.safetensors", "{\"__metadata__\": {\"k\": 3}}", NULL, 0);
    OPEN_FAILS(p, SS_ERR_FORMAT, "value for key \"k\" is not a string");
    free(p);
    p = st_write("nul.safetensors", "{\"a\\u0000b\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[0,0]}}", NULL, 0);
    OPEN_FAILS(p, SS_ERR_FORMAT, "NUL byte");
    free(p);
}

TEST(safetensors_bad_dtype_and_shape) {
    char d[16] = {0};
    char *p = st_write("dt1.safetensors", T1("F33", "[2]", "[0,8]"), d, 8);
    OPEN_FAILS(p, SS_ERR_FORMAT, "tensor \"t\": unknown dtype \"F33\"");
    free(p);
    p = st_write("dt2.safetensors", T1("F8_E4M3", "[2]", "[0,2]"), d, 2);
    OPEN_FAILS(p, SS_ERR_UNSUPPORTED, "tensor \"t\": dtype \"F8_E4M3\" is not supported");
    free(p);
    p = st_write("dt3.safetensors", "{\"t\":{\"dtype\":3,\"shape\":[2],\"data_offsets\":[0,2]}}", d, 2);
    OPEN_FAILS(p, SS_ERR_FORMAT, "tensor \"t\": \"dtype\" is not a string");
    free(p);
    p = st_write("dt4.safetensors", "{\"t\":{\"shape\":[2],\"data_offsets\":[0,2]}}", d, 2);
    OPEN_FAILS(p, SS_ERR_FORMAT, "tensor \"t\": missing \"dtype\"");
    free(p);
    p = st_write("sh1.safetensors", T1("F32", "[-2]", "[0,8]"), d, 8);
    OPEN_FAILS(p, SS_ERR_FORMAT, "tensor \"t\": shape[0] is not a non-negative integer");
    free(p);
    p = st_write("sh2.safetensors", T1("F32", "[2, 1.5]", "[0,8]"), d, 8);
    OPEN_FAILS(p, SS_ERR_FORMAT, "shape[1] is not a non-negative integer");
    free(p);
    p = st_write("sh3.safetensors", T1("F32", "[1,1,1,1,1,1,1,1,1]", "[0,4]"), d, 4);
    OPEN_FAILS(p, SS_ERR_UNSUPPORTED, "tensor \"t\": 9 dimensions");
    free(p);
    p = st_write("sh4.safetensors", T1("F32", "[4611686018427387904, 4]", "[0,4]"), d, 4);
    OPEN_FAILS(p, SS_ERR_FORMAT, "tensor \"t\": byte size of shape overflows");
    free(p);
    p = st_write("sh5.safetensors", T1("F32", "\"2\"", "[0,8]"), d, 8);
    OPEN_FAILS(p, SS_ERR_FORMAT, "\"shape\" is not an array");
    free(p);
    p = st_write("sh6.safetensors", T1("F32", "[99999999999999999999]", "[0,8]"), d, 8);
    OPEN_FAILS(p, SS_ERR_FORMAT, "shape[0]");
    free(p);
}

TEST(safetensors_bad_offsets) {
    char d[32] = {0};
    char *p = st_write("mis.safetensors", T1("F32", "[3]", "[0,8]"), d, 8);
    OPEN_FAILS(p, SS_ERR_FORMAT, "tensor \"t\": data_offsets [0, 8] hold 8 bytes but dtype F32 and the shape need 12");
    free(p);
    p = st_write("beyond.safetensors", T1("F32", "[2]", "[8,16]"), d, 8);
    OPEN_FAILS(p, SS_ERR_FORMAT, "tensor \"t\": data_offsets [8, 16] run past the end of the 8-byte data buffer");
    free(p);
    p = st_write("rev.safetensors", T1("U8", "[0]", "[8,4]"), d, 8);
    OPEN_FAILS(p, SS_ERR_FORMAT, "tensor \"t\": data_offsets end 4 is before begin 8");
    free(p);
    p = st_write("neg.safetensors", T1("U8", "[4]", "[-4,0]"), d, 8);
    OPEN_FAILS(p, SS_ERR_FORMAT, "tensor \"t\": \"data_offsets\" is not [begin, end]");
    free(p);
    p = st_write("three.safetensors", T1("U8", "[4]", "[0,4,8]"), d, 4);
    OPEN_FAILS(p, SS_ERR_FORMAT, "\"data_offsets\" is not [begin, end]");
    free(p);
    p = st_write("nooff.safetensors", "{\"t\":{\"dtype\":\"U8\",\"shape\":[4]}}", d, 4);
    OPEN_FAILS(p, SS_ERR_FORMAT, "tensor \"t\": missing \"data_offsets\"");
    free(p);
    p = st_write("overlap.safetensors",
                 "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                 "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
                 d, 12);
    OPEN_FAILS(p, SS_ERR_FORMAT, "tensors \"a\" and \"b\" overlap");
    free(p);
    p = st_write("same.safetensors",
                 "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                 "\"b\":{\"dtype\":\"I64\",\"shape\":[1],\"data_offsets\":[0,8]}}",
                 d, 8);
    OPEN_FAILS(p, SS_ERR_FORMAT, "overlap");
    free(p);
    p = st_write("hole.safetensors",
                 "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                 "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[12,20]}}",
                 d, 20);
    OPEN_FAILS(p, SS_ERR_FORMAT, "hole in the data buffer: bytes [8, 12) before tensor \"b\"");
    free(p);
    p = st_write("hole_start.safetensors", T1("F32", "[1]", "[4,8]"), d, 8);
    OPEN_FAILS(p, SS_ERR_FORMAT, "bytes [0, 4) before tensor \"t\"");
    free(p);
    p = st_write("hole_end.safetensors", T1("F32", "[1]", "[0,4]"), d, 8);
    OPEN_FAILS(p, SS_ERR_FORMAT, "hole in the data buffer: bytes [4, 8) at its end");
    free(p);
    p = st_write("nodata.safetensors", "{}", d, 3);
    OPEN_FAILS(p, SS_ERR_FORMAT, "bytes [0, 3) at its end");
    free(p);
}

TEST(safetensors_duplicate_names) {
    char d[16] = {0};
    char *p = st_write("dup.safetensors",
                       "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                       "\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}",
                       d, 16);
    OPEN_FAILS(p, SS_ERR_FORMAT, "tensor \"w\" appears twice");
    free(p);
    p = st_write("dupmd.safetensors", "{\"__metadata__\":{},\"__metadata__\":{}}", NULL, 0);
    OPEN_FAILS(p, SS_ERR_FORMAT, "\"__metadata__\" appears twice");
    free(p);
}

TEST(safetensors_parse_from_memory) {
    /* ss_safetensors_parse works on a caller buffer (the fuzzer's path). */
    const char *h = T1("BF16", "[2]", "[0,4]");
    size_t hl = strlen(h);
    uint8_t buf[128] = {0};
    buf[0] = (uint8_t)hl;
    memcpy(buf + 8, h, hl);
    memcpy(buf + 8 + hl, bf16_bits, 4);
    ss_safetensors *st = NULL;
    CHECK_OK(ss_safetensors_parse(buf, 8 + hl + 4, "mem.safetensors", &st));
    float out[2];
    CHECK_OK(ss_tensor_to_f32(ss_safetensors_at(st, 0), out, 2));
    CHECK(out[0] == 1.0f && out[1] == -3.0f);
    CHECK(strcmp(ss_safetensors_at(st, 0)->file, "mem.safetensors") == 0);
    ss_safetensors_free(st);
    CHECK_ERR(ss_safetensors_parse(buf, 8 + hl + 2, "mem.safetensors", &st), SS_ERR_FORMAT, "mem.safetensors: tensor \"t\"");
    CHECK(st == NULL);
    CHECK_ERR(ss_safetensors_open("/nonexistent/x.safetensors", &st), SS_ERR_IO, "/nonexistent/x.safetensors");
}

/* ---- weights: single file and sharded index ---- */

static char *make_dir(const char *name) {
    char *d = ss_path_join(ss_test_tmp_dir(), name);
    mkdir(d, 0755);
    return d;
}

static void write_text(const char *dir, const char *name, const char *text) {
    char *p = ss_path_join(dir, name);
    FILE *f = fopen(p, "wb");
    if (f) {
        fputs(text, f);
        fclose(f);
    }
    free(p);
}

/* A shard holding tensors named a and b, each F32 [2] with values base, base+1 / base+2, base+3. */
static void write_shard(const char *dir, const char *file, const char *a, const char *b, float base) {
    char hdr[256];
    snprintf(hdr, sizeof hdr,
             "{\"%s\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
             "\"%s\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}",
             a, b);
    float v[4] = {base, base + 1, base + 2, base + 3};
    char *rel = ss_path_join(strrchr(dir, '/') + 1, file);
    free(st_write(rel, hdr, v, sizeof v));
    free(rel);
}

TEST(weights_single_file) {
    char *dir = make_dir("w_single");
    write_shard(dir, "model.safetensors", "wte.weight", "wpe.weight", 10);
    ss_weights *w = NULL;
    CHECK_OK(ss_weights_open(dir, &w));
    CHECK(ss_weights_count(w) == 2);
    CHECK(strcmp(ss_weights_at(w, 1)->name, "wpe.weight") == 0);
    const ss_tensor_info *t = ss_weights_find(w, "wpe.weight");
    float out[2];
    CHECK(t && strstr(t->file, "w_single/model.safetensors"));
    CHECK_OK(ss_tensor_to_f32(t, out, 2));
    CHECK(out[0] == 12 && out[1] == 13);
    CHECK(ss_weights_find(w, "nope") == NULL);
    ss_weights_free(w);

    char *empty = make_dir("w_empty");
    CHECK_ERR(ss_weights_open(empty, &w), SS_ERR_IO, "w_empty: neither model.safetensors nor");
    CHECK(w == NULL);
    free(empty);
    free(dir);
}

TEST(weights_sharded_index) {
    char *dir = make_dir("w_shard");
    write_shard(dir, "model-00001-of-00002.safetensors", "h.0.w", "h.0.b", 0);
    write_shard(dir, "model-00002-of-00002.safetensors", "h.1.w", "extra", 100);
    write_text(dir, "model.safetensors.index.json",
               "{\"metadata\": {\"total_size\": 32},\n \"weight_map\": {\n"
               "  \"h.0.w\": \"model-00001-of-00002.safetensors\",\n"
               "  \"h.1.w\": \"model-00002-of-00002.safetensors\",\n"
               "  \"h.0.b\": \"model-00001-of-00002.safetensors\"}}\n");
    ss_weights *w = NULL;
    CHECK_OK(ss_weights_open(dir, &w));
    CHECK(ss_weights_count(w) == 3);
    CHECK(strcmp(ss_weights_at(w, 1)->name, "h.1.w") == 0);
    float out[2];
    const ss_tensor_info *t = ss_weights_find(w, "h.1.w");
    CHECK(t && strstr(t->file, "model-00002-of-00002.safetensors"));
    CHECK_OK(ss_tensor_to_f32(t, out, 2));
    CHECK(out[0] == 100 && out[1] == 101);
    t = ss_weights_find(w, "h.0.b");
    CHECK(t && strstr(t->file, "model-00001-of-00002.safetensors"));
    CHECK_OK(ss_tensor_to_f32(t, out, 2));
    CHECK(out[0] == 2 && out[1] == 3);
    /* Only the index's tensors are visible. */
    CHECK(ss_weights_find(w, "extra") == NULL);
    ss_weights_free(w);
    /* A model.safetensors beside the index wins, as in transformers' from_pretrained (which
     * checks for it first): the index is not even read, so a stale one whose shards are gone
     * (what saving a sharded model again unsharded into its directory leaves) is no error. */
    write_shard(dir, "model.safetensors", "decoy", "decoy2", -1);
    write_text(dir, "model.safetensors.index.json", "{\"weight_map\": {\"h.0.w\": \"gone.safetensors\"}}");
    CHECK_OK(ss_weights_open(dir, &w));
    CHECK(ss_weights_count(w) == 2 && ss_weights_find(w, "decoy") && !ss_weights_find(w, "h.0.w"));
    CHECK(strstr(ss_weights_find(w, "decoy")->file, "w_shard/model.safetensors"));
    ss_weights_free(w);
    free(dir);
}

TEST(weights_index_errors) {
    ss_weights *w = NULL;
    char *dir = make_dir("w_missing");
    write_shard(dir, "a.safetensors", "x", "y", 0);
    write_text(dir, "model.safetensors.index.json",
               "{\"weight_map\": {\"x\": \"a.safetensors\", \"z\": \"b.safetensors\"}}");
    CHECK_ERR(ss_weights_open(dir, &w), SS_ERR_IO, "model.safetensors.index.json: shard \"b.safetensors\"");
    CHECK(strstr(ss_last_error(), "w_missing/b.safetensors: cannot open"));
    free(dir);

    dir = make_dir("w_absent");
    write_shard(dir, "a.safetensors", "x", "y", 0);
    write_text(dir, "model.safetensors.index.json", "{\"weight_map\": {\"x\": \"a.safetensors\", \"q\": \"a.safetensors\"}}");
    CHECK_ERR(ss_weights_open(dir, &w), SS_ERR_FORMAT,
              "tensor \"q\" is mapped to shard \"a.safetensors\", but");
    CHECK(strstr(ss_last_error(), "w_absent/a.safetensors has no such tensor"));
    CHECK(strstr(ss_last_error(), "w_absent/model.safetensors.index.json"));

    write_text(dir, "model.safetensors.index.json", "{\"weight_map\": {\"x\": \"../a.safetensors\"}}");
    CHECK_ERR(ss_weights_open(dir, &w), SS_ERR_FORMAT, "tensor \"x\": shard \"../a.safetensors\" is not a plain file name");
    write_text(dir, "model.safetensors.index.json", "{\"weight_map\": {\"x\": \"/etc/a.safetensors\"}}");
    CHECK_ERR(ss_weights_open(dir, &w), SS_ERR_FORMAT, "shard \"/etc/a.safetensors\"");
    write_text(dir, "model.safetensors.index.json", "{\"weight_map\": {\"x\": \"..\"}}");
    CHECK_ERR(ss_weights_open(dir, &w), SS_ERR_FORMAT, "shard \"..\"");
    write_text(dir, "model.safetensors.index.json", "{\"weight_map\": {\"x\": \"\"}}");
    CHECK_ERR(ss_weights_open(dir, &w), SS_ERR_FORMAT, "shard \"\"");
    write_text(dir, "model.safetensors.index.json", "{\"weight_map\": {\"x\": 3}}");
    CHECK_ERR(ss_weights_open(dir, &w), SS_ERR_FORMAT, "shard of tensor \"x\" is not a string");
    write_text(dir, "model.safetensors.index.json", "{\"metadata\": {}}");
    CHECK_ERR(ss_weights_open(dir, &w), SS_ERR_FORMAT, "model.safetensors.index.json: missing \"weight_map\"");
    write_text(dir, "model.safetensors.index.json", "{\"metadata\": 1, \"weight_map\": {}}");
    CHECK_ERR(ss_weights_open(dir, &w), SS_ERR_FORMAT, "\"metadata\" is not an object");
    write_text(dir, "model.safetensors.index.json", "[]");
    CHECK_ERR(ss_weights_open(dir, &w), SS_ERR_FORMAT, "model.safetensors.index.json: not a JSON object");
    write_text(dir, "model.safetensors.index.json", "{\"weight_map\": {\"x\": \"a.safetensors\",");
    CHECK_ERR(ss_weights_open(dir, &w), SS_ERR_FORMAT, "model.safetensors.index.json:1:");
    write_text(dir, "model.safetensors.index.json",
               "{\"weight_map\": {\"x\": \"a.safetensors\", \"x\": \"a.safetensors\"}}");
    CHECK_ERR(ss_weights_open(dir, &w), SS_ERR_FORMAT, "tensor \"x\" appears twice");
    CHECK(w == NULL);
    free(dir);

    /* A corrupt shard: the message names the index, the shard and the fault. */
    dir = make_dir("w_corrupt");
    char *rel = ss_path_join("w_corrupt", "a.safetensors");
    free(st_write(rel, T1("F32", "[2]", "[0,8]"), "1234", 4));
    free(rel);
    write_text(dir, "model.safetensors.index.json", "{\"weight_map\": {\"t\": \"a.safetensors\"}}");
    CHECK_ERR(ss_weights_open(dir, &w), SS_ERR_FORMAT, "shard \"a.safetensors\": ");
    CHECK(strstr(ss_last_error(), "tensor \"t\": data_offsets [0, 8] run past"));
    free(dir);
}

/* A file written by the reference implementation (tests/gen/gen_safetensors.py). */
TEST(safetensors_reference_file) {
    char *path = ss_path_join(ss_test_data_dir(), "safetensors/ref.safetensors");
    ss_safetensors *st = NULL;
    ss_status s = ss_safetensors_open(path, &st);
    free(path);
    CHECK_OK(s);
    CHECK(ss_safetensors_count(st) == 8);
    float out[8];
    const ss_tensor_info *t = ss_safetensors_find(st, "a.f32");
    CHECK(t && t->dtype == SS_DTYPE_F32 && t->ndim == 2 && t->shape[0] == 2 && t->shape[1] == 3);
    CHECK_OK(ss_tensor_to_f32(t, out, 6));
    const float a[6] = {1.5f, -2.25f, 0.0f, 3.0e-3f, 1.0e10f, -7.0f};
    for (int i = 0; i < 6; i++) CHECK(out[i] == a[i]);
    t = ss_safetensors_find(st, "b.f16");
    CHECK(t && t->dtype == SS_DTYPE_F16 && t->shape[0] == 4);
    CHECK_OK(ss_tensor_to_f32(t, out, 4));
    CHECK(out[0] == 1.0f && out[1] == -0.5f && out[2] == 65504.0f && out[3] == 5.9604644775390625e-8f);
    t = ss_safetensors_find(st, "c.bf16");
    CHECK(t && t->dtype == SS_DTYPE_BF16 && t->ndim == 2 && t->shape[0] == 3 && t->shape[1] == 1);
    CHECK_OK(ss_tensor_to_f32(t, out, 3));
    CHECK(out[0] == 1.0f && out[1] == -3.0f && out[2] == 3.140625f);
    t = ss_safetensors_find(st, "d.f64");
    CHECK(t && t->dtype == SS_DTYPE_F64);
    CHECK_OK(ss_tensor_to_f32(t, out, 2));
    CHECK(out[0] == 0.1f && out[1] == -2.0f);
    t = ss_safetensors_find(st, "e.i64");
    CHECK(t && t->dtype == SS_DTYPE_I64 && t->nbytes == 24);
    int64_t iv[3];
    memcpy(iv, t->data, 24);
    CHECK(iv[0] == 5 && iv[1] == -6 && iv[2] == 7);
    t = ss_safetensors_find(st, "f.empty");
    CHECK(t && t->nbytes == 0 && t->ndim == 2 && t->shape[1] == 4);
    t = ss_safetensors_find(st, "g.scalar");
    CHECK(t && t->ndim == 0);
    CHECK_OK(ss_tensor_to_f32(t, out, 1));
    CHECK(out[0] == 42.0f);
    t = ss_safetensors_find(st, "h.bool");
    CHECK(t && t->dtype == SS_DTYPE_BOOL && t->nbytes == 3);
    ss_safetensors_free(st);
}

/* Dropping pages of a read-only mapping (after a deferred model's tensors
 * are placed) loses nothing: the bytes read back from the file, for a range
 * that covers whole pages, one that covers none, and one outside the
 * mapping (ignored). Resident memory itself is measured in
 * bench/load_memory.sh. */
TEST(mmap_drop_keeps_the_bytes) {
    const size_t page = (size_t)sysconf(_SC_PAGESIZE), n = 5 * page + 123;
    unsigned char *want = malloc(n);
    CHECK(want != NULL);
    if (!want) return;
    for (size_t i = 0; i < n; i++) want[i] = (unsigned char)(i * 131 + 7);
    char *path = ss_path_join(ss_test_tmp_dir(), "drop.bin");
    FILE *f = fopen(path, "wb");
    CHECK(f && fwrite(want, 1, n, f) == n);
    if (f) fclose(f);
    ss_mmap mm;
    CHECK_OK(ss_mmap_open(path, &mm));
    const unsigned char *p = mm.data;
    unsigned long sum = 0;
    for (size_t i = 0; i < n; i++) sum += p[i]; /* every page resident */
    CHECK(sum > 0);
    ss_mmap_drop(&mm, p + 100, 3 * page);   /* whole pages 1 and 2, parts of 0 and 3 kept */
    ss_mmap_drop(&mm, p + page + 1, 10);    /* no whole page: nothing */
    ss_mmap_drop(&mm, want, n);             /* not in the mapping: ignored */
    ss_mmap_drop(&mm, p + n - 10, 100);     /* runs past the end: ignored */
    CHECK(!memcmp(p, want, n));
    ss_mmap_drop(&mm, p, mm.size);
    CHECK(!memcmp(p, want, n));
    ss_mmap_close(&mm);
    free(path);
    free(want);
}
