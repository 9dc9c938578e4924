/* GGUF: files written by gguf-py (tests/gen/gen_gguf_goldens.py) must read
 * back exactly as gguf-py reads them; files built byte by byte here produce
 * every corruption the reader must refuse. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "subscope/gguf.h"
#include "subscope/json.h"
#include "subscope/util.h"
#include "test.h"

/* ---- the goldens ---- */

typedef struct {
    char *bytes;      /* the .gguf */
    size_t size;
    char *json_text;
    ss_json_doc *doc;
    char *f32;        /* gguf-py's dequantised values */
    size_t f32_size;
    char *path;
} golden;

static void golden_free(golden *gd) {
    free(gd->bytes);
    free(gd->json_text);
    ss_json_free(gd->doc);
    free(gd->f32);
    free(gd->path);
    memset(gd, 0, sizeof *gd);
}

static ss_status golden_load(const char *name, golden *gd) {
    memset(gd, 0, sizeof *gd);
    char rel[128];
    snprintf(rel, sizeof rel, "gguf/%s.gguf", name);
    gd->path = ss_path_join(ss_test_data_dir(), rel);
    SS_TRY(ss_file_read(gd->path, &gd->bytes, &gd->size));
    snprintf(rel, sizeof rel, "gguf/%s.json", name);
    char *p = ss_path_join(ss_test_data_dir(), rel);
    size_t len;
    ss_status s = ss_file_read(p, &gd->json_text, &len);
    if (s == SS_OK) s = ss_json_parse(gd->json_text, len, p, &gd->doc);
    free(p);
    SS_TRY(s);
    snprintf(rel, sizeof rel, "gguf/%s.f32", name);
    p = ss_path_join(ss_test_data_dir(), rel);
    s = ss_file_read(p, &gd->f32, &gd->f32_size);
    free(p);
    return s;
}

static char why[1024];

static uint64_t hex_bits(const char *s) { return strtoull(s, NULL, 16); }

/* Compares a value read by the C reader with its JSON record; why[] says
 * what differs. */
static int value_matches(const ss_gguf_value *v, const ss_json *rec, const char *key) {
    const char *type = ss_json_get(rec, "type")->str;
    const ss_json *jv = ss_json_get(rec, "value");
    if (strcmp(ss_gguf_type_name(v->type), type) != 0) {
        snprintf(why, sizeof why, "%s: type %s, expected %s", key, ss_gguf_type_name(v->type), type);
        return 0;
    }
    switch (v->type) {
    case SS_GGUF_UINT8: case SS_GGUF_UINT16: case SS_GGUF_UINT32: case SS_GGUF_UINT64:
        if (v->u != strtoull(jv->str, NULL, 10)) {
            snprintf(why, sizeof why, "%s: %" PRIu64 ", expected %s", key, v->u, jv->str);
            return 0;
        }
        return 1;
    case SS_GGUF_INT8: case SS_GGUF_INT16: case SS_GGUF_INT32: case SS_GGUF_INT64:
        if (v->i != strtoll(jv->str, NULL, 10)) {
            snprintf(why, sizeof why, "%s: %" PRId64 ", expected %s", key, v->i, jv->str);
            return 0;
        }
        return 1;
    case SS_GGUF_FLOAT32: {
        float f = (float)v->f;
        uint32_t b;
        memcpy(&b, &f, 4);
        if ((double)f != v->f && v->f == v->f) {
            snprintf(why, sizeof why, "%s: FLOAT32 widened inexactly", key);
            return 0;
        }
        if (b != (uint32_t)hex_bits(jv->str)) {
            snprintf(why, sizeof why, "%s: bits 0x%08x, expected %s", key, b, jv->str);
            return 0;
        }
        return 1;
    }
    case SS_GGUF_FLOAT64: {
        uint64_t b;
        memcpy(&b, &v->f, 8);
        if (b != hex_bits(jv->str)) {
            snprintf(why, sizeof why, "%s: bits 0x%016" PRIx64 ", expected %s", key, b, jv->str);
            return 0;
        }
        return 1;
    }
    case SS_GGUF_BOOL:
        if ((int)v->u != jv->boolean) {
            snprintf(why, sizeof why, "%s: bool %d, expected %d", key, (int)v->u, jv->boolean);
            return 0;
        }
        return 1;
    case SS_GGUF_STRING:
        if (v->str.len != jv->len || memcmp(v->str.s, jv->str, jv->len) != 0 || v->str.s[v->str.len] != '\0') {
            snprintf(why, sizeof why, "%s: string \"%s\" (%zu bytes), expected \"%s\" (%zu bytes)", key, v->str.s,
                     v->str.len, jv->str, jv->len);
            return 0;
        }
        return 1;
    case SS_GGUF_ARRAY: {
        const char *et = ss_json_get(jv, "elem_type")->str;
        const ss_json *items = ss_json_get(jv, "items");
        if (strcmp(ss_gguf_type_name(v->elem_type), et) != 0 || v->count != items->len) {
            snprintf(why, sizeof why, "%s: array of %" PRIu64 " %s, expected %zu %s", key, v->count,
                     ss_gguf_type_name(v->elem_type), items->len, et);
            return 0;
        }
        for (size_t i = 0; i < items->len; i++) {
            ss_gguf_value e;
            if (!ss_gguf_array_get(v, i, &e)) {
                snprintf(why, sizeof why, "%s: element %zu missing", key, i);
                return 0;
            }
            char sub[256];
            snprintf(sub, sizeof sub, "%s[%zu]", key, i);
            if (!value_matches(&e, &items->items[i], sub)) return 0;
        }
        ss_gguf_value past;
        if (ss_gguf_array_get(v, v->count, &past)) {
            snprintf(why, sizeof why, "%s: element past the end accepted", key);
            return 0;
        }
        return 1;
    }
    }
    snprintf(why, sizeof why, "%s: unknown type", key);
    return 0;
}

/* Whole-file check of one golden: metadata, tensor table, dequantised values
 * bit for bit. Returns the number of tensors compared through *n_tensors. */
static void check_golden(const char *name) {
    golden gd;
    ss_status ls = golden_load(name, &gd);
    if (ls != SS_OK) golden_free(&gd);
    CHECK_OK(ls);
    ss_gguf *g = NULL;
    ss_status s = ss_gguf_open(gd.path, &g);
    if (s != SS_OK) golden_free(&gd);
    CHECK_OK(s);
    const ss_json *root = ss_json_root(gd.doc);
    const ss_json *meta = ss_json_get(root, "metadata"), *tens = ss_json_get(root, "tensors");
    int ok = 1;
    int64_t align = 0;
    ss_json_get_int(root, "alignment", &align);
    if (ss_gguf_version(g) != 3 || ss_gguf_alignment(g) != (uint64_t)align) {
        snprintf(why, sizeof why, "%s: version %u alignment %" PRIu64, name, ss_gguf_version(g), ss_gguf_alignment(g));
        ok = 0;
    }
    if (ok && ss_gguf_kv_count(g) != meta->len) {
        snprintf(why, sizeof why, "%s: %zu metadata keys, expected %zu", name, ss_gguf_kv_count(g), meta->len);
        ok = 0;
    }
    for (size_t i = 0; ok && i < meta->len; i++) {
        const char *key = ss_json_get(&meta->items[i], "key")->str;
        const ss_gguf_kv *kv = ss_gguf_kv_at(g, i);
        if (strcmp(kv->key, key) != 0 || ss_gguf_find(g, key) != &kv->value) {
            snprintf(why, sizeof why, "%s: key %zu is \"%s\", expected \"%s\" (or lookup failed)", name, i, kv->key,
                     key);
            ok = 0;
        } else {
            ok = value_matches(&kv->value, &meta->items[i], key);
        }
    }
    if (ok && ss_gguf_tensor_count(g) != tens->len) {
        snprintf(why, sizeof why, "%s: %zu tensors, expected %zu", name, ss_gguf_tensor_count(g), tens->len);
        ok = 0;
    }
    for (size_t i = 0; ok && i < tens->len; i++) {
        const ss_json *jt = &tens->items[i];
        const char *tname = ss_json_get(jt, "name")->str, *ttype = ss_json_get(jt, "type")->str;
        const ss_json *ne = ss_json_get(jt, "ne");
        int64_t off = 0, n = 0;
        ss_json_get_int(jt, "offset_f32", &off);
        ss_json_get_int(jt, "n", &n);
        const ss_gguf_tensor *t = ss_gguf_find_tensor(g, tname);
        if (!t || t != ss_gguf_tensor_at(g, i) || strcmp(ss_ggml_type_name(t->type), ttype) != 0 ||
            t->n_dims != (int)ne->len || t->n_elements != (size_t)n) {
            snprintf(why, sizeof why, "%s: tensor %s: missing or type/dims/count differ", name, tname);
            ok = 0;
            break;
        }
        for (int d = 0; d < t->n_dims; d++)
            if (t->ne[d] != ne->items[d].i || t->shape[t->n_dims - 1 - d] != ne->items[d].i) {
                snprintf(why, sizeof why, "%s: tensor %s: dim %d is %" PRId64 ", expected %" PRId64, name, tname, d,
                         t->ne[d], ne->items[d].i);
                ok = 0;
            }
        if ((size_t)(off + n) * 4 > gd.f32_size) {
            snprintf(why, sizeof why, "%s: golden values file too short", name);
            ok = 0;
        }
        if (!ok) break;
        float *x = malloc((size_t)n * sizeof *x + 1);
        s = ss_gguf_tensor_to_f32(g, t, x);
        if (s != SS_OK) {
            snprintf(why, sizeof why, "%s: %s", name, ss_last_error());
            ok = 0;
        } else {
            const uint32_t *want = (const uint32_t *)(gd.f32 + off * 4);
            for (int64_t k = 0; k < n; k++) {
                uint32_t got;
                memcpy(&got, &x[k], 4);
                if (got != want[k]) {
                    float wf;
                    memcpy(&wf, &want[k], 4);
                    snprintf(why, sizeof why, "%s: tensor %s (%s) element %" PRId64 ": %.9g (0x%08x), gguf-py %.9g "
                             "(0x%08x)", name, tname, ttype, k, x[k], got, wf, want[k]);
                    ok = 0;
                    break;
                }
            }
        }
        free(x);
    }
    ss_gguf_free(g);
    golden_free(&gd);
    CHECK_MSG(ok, "%s", why);
}

TEST(gguf_golden_types_every_metadata_type_and_tensor_type) { check_golden("types"); }
TEST(gguf_golden_alignment_64) { check_golden("align64"); }
TEST(gguf_golden_llama_shaped) { check_golden("llama"); }
TEST(gguf_golden_kquants_q5_and_k_families_bit_exact) { check_golden("kquants"); }

TEST(gguf_typed_lookups_on_llama_metadata) {
    char *path = ss_path_join(ss_test_data_dir(), "gguf/llama.gguf");
    ss_gguf *g = NULL;
    ss_status s = ss_gguf_open(path, &g);
    free(path);
    CHECK_OK(s);
    const ss_gguf_str *str;
    int64_t iv;
    double fv;
    int bv;
    const ss_gguf_str *toks, *merges;
    size_t nt, nm;
    int ok = ss_gguf_get_str(g, "general.architecture", &str) == SS_OK && strcmp(str->s, "llama") == 0 &&
             ss_gguf_get_int(g, "llama.block_count", &iv) == SS_OK && iv == 2 &&
             ss_gguf_get_int(g, "llama.attention.head_count_kv", &iv) == SS_OK && iv == 2 &&
             ss_gguf_get_float(g, "llama.rope.freq_base", &fv) == SS_OK && fv == 500000.0 &&
             ss_gguf_get_float(g, "llama.attention.layer_norm_rms_epsilon", &fv) == SS_OK && fv == (double)1e-5f &&
             ss_gguf_get_bool(g, "tokenizer.ggml.add_bos_token", &bv) == SS_OK && bv == 0 &&
             ss_gguf_get_strings(g, "tokenizer.ggml.tokens", &toks, &nt) == SS_OK && nt == 74 &&
             strcmp(toks[0].s, "<|endoftext|>") == 0 && strcmp(toks[nt - 1].s, "Ġs") == 0 &&
             ss_gguf_get_strings(g, "tokenizer.ggml.merges", &merges, &nm) == SS_OK && nm == 10 &&
             strcmp(merges[2].s, "Ġt he") == 0;
    const char *err = ok ? "" : ss_last_error();
    if (!ok) ss_gguf_free(g);
    CHECK_MSG(ok, "a typed lookup failed: %s", err);
    const ss_gguf_value *arr;
    ss_gguf_value e;
    ok = ss_gguf_get_array(g, "tokenizer.ggml.token_type", &arr) == SS_OK && arr->count == 74 &&
         ss_gguf_array_get(arr, 0, &e) && e.type == SS_GGUF_INT32 && e.i == 3 && ss_gguf_array_get(arr, 50, &e) &&
         e.i == 1;
    if (!ok) ss_gguf_free(g);
    CHECK_MSG(ok, "token_type array");
#define LOOKUP_FAILS(expr, sub)                   \
    do {                                          \
        ss_error_clear();                         \
        ss_status st2_ = (expr);                  \
        if (st2_ != SS_ERR_FORMAT || !strstr(ss_last_error(), sub) || !strstr(ss_last_error(), "llama.gguf")) { \
            ss_gguf_free(g);                      \
            CHECK_MSG(0, "%s: got \"%s\"", #expr, ss_last_error()); \
        }                                         \
    } while (0)
    LOOKUP_FAILS(ss_gguf_get_str(g, "no.such.key", &str), "\"no.such.key\" is missing");
    LOOKUP_FAILS(ss_gguf_get_str(g, "llama.block_count", &str), "has type UINT32, expected STRING");
    LOOKUP_FAILS(ss_gguf_get_int(g, "general.name", &iv), "has type STRING, expected an integer");
    LOOKUP_FAILS(ss_gguf_get_float(g, "llama.block_count", &fv), "expected FLOAT32 or FLOAT64");
    LOOKUP_FAILS(ss_gguf_get_strings(g, "tokenizer.ggml.token_type", &toks, &nt),
                 "is an array of INT32, expected an array of STRING");
    LOOKUP_FAILS(ss_gguf_get_bool(g, "tokenizer.ggml.tokens", &bv), "expected BOOL");

    /* Rows: one embedding row equals the same row of the whole tensor. */
    const ss_gguf_tensor *t = ss_gguf_find_tensor(g, "token_embd.weight");
    ok = t && t->shape[0] == 74 && t->shape[1] == 32 && t->ne[0] == 32;
    float *all = malloc(74 * 32 * sizeof *all), row[64];
    ok = ok && ss_gguf_tensor_to_f32(g, t, all) == SS_OK && ss_gguf_rows_to_f32(g, t, 57, 2, row) == SS_OK &&
         memcmp(row, all + 57 * 32, 64 * sizeof *row) == 0;
    free(all);
    ok = ok && ss_gguf_rows_to_f32(g, t, 73, 2, row) == SS_ERR_ARG && strstr(ss_last_error(), "out of range");
    ok = ok && !ss_gguf_find_tensor(g, "token_embd") && !ss_gguf_find(g, "llama");
    ss_gguf_free(g);
    CHECK_MSG(ok, "rows / lookups: %s", ss_last_error());
}

TEST(gguf_golden_version_2_reads_the_same) {
    golden gd;
    ss_status s = golden_load("types", &gd);
    if (s != SS_OK) golden_free(&gd);
    CHECK_OK(s);
    gd.bytes[4] = 2; /* v2 and v3 differ only in v3's big-endian option */
    ss_gguf *g = NULL;
    s = ss_gguf_parse((const uint8_t *)gd.bytes, gd.size, "v2.gguf", &g);
    int ok = s == SS_OK && ss_gguf_version(g) == 2 && ss_gguf_kv_count(g) == 33 && ss_gguf_tensor_count(g) == 10;
    ss_gguf_free(g);
    golden_free(&gd);
    CHECK_MSG(ok, "v2: %s", ss_last_error());
}

/* Every cut of a golden file that loses tensor bytes must fail cleanly (a
 * FORMAT error naming the file); cuts inside the trailing padding still
 * open. Each cut is parsed from an exact-size copy so ASan sees overreads. */
static void check_truncations(const char *name, size_t step) {
    golden gd;
    ss_status s = golden_load(name, &gd);
    if (s != SS_OK) golden_free(&gd);
    CHECK_OK(s);
    ss_gguf *g = NULL;
    s = ss_gguf_parse((const uint8_t *)gd.bytes, gd.size, "cut.gguf", &g);
    if (s != SS_OK) golden_free(&gd);
    CHECK_OK(s);
    size_t need = (size_t)ss_gguf_data_offset(g), header = need;
    for (size_t i = 0; i < ss_gguf_tensor_count(g); i++) {
        const ss_gguf_tensor *t = ss_gguf_tensor_at(g, i);
        if (header + t->offset + t->nbytes > need) need = header + t->offset + t->nbytes;
    }
    ss_gguf_free(g);
    int ok = 1;
    size_t n_cuts = 0;
    for (size_t cut = 0; ok && cut < gd.size; cut += cut < header ? 1 : step) {
        uint8_t *copy = malloc(cut ? cut : 1);
        memcpy(copy, gd.bytes, cut);
        ss_error_clear();
        g = (ss_gguf *)1;
        s = ss_gguf_parse(copy, cut, "cut.gguf", &g);
        if (cut < need) {
            if (s != SS_ERR_FORMAT || g != NULL || !strstr(ss_last_error(), "cut.gguf")) {
                snprintf(why, sizeof why, "%s cut at %zu of %zu: %s \"%s\"", name, cut, gd.size, ss_status_name(s),
                         ss_last_error());
                ok = 0;
            }
        } else if (s != SS_OK) {
            snprintf(why, sizeof why, "%s cut at %zu (after the last tensor byte %zu): %s", name, cut, need,
                     ss_last_error());
            ok = 0;
        }
        if (s == SS_OK) ss_gguf_free(g);
        free(copy);
        n_cuts++;
    }
    golden_free(&gd);
    CHECK_MSG(ok, "%s", why);
    CHECK(n_cuts > 100);
}

TEST(gguf_truncated_types_every_byte) { check_truncations("types", 1); }
TEST(gguf_truncated_llama_header_every_byte_data_every_97) { check_truncations("llama", 97); }
TEST(gguf_truncated_kquants_header_every_byte_data_every_13) { check_truncations("kquants", 13); }

/* ---- hand-built files ---- */

typedef struct {
    uint8_t b[8192];
    size_t n;
} buf_t;

static void put(buf_t *b, const void *p, size_t n) {
    memcpy(b->b + b->n, p, n);
    b->n += n;
}
static void put_u32(buf_t *b, uint32_t v) { put(b, &v, 4); }
static void put_u64(buf_t *b, uint64_t v) { put(b, &v, 8); }
static void put_str(buf_t *b, const char *s) {
    put_u64(b, strlen(s));
    put(b, s, strlen(s));
}
static void header(buf_t *b, uint32_t version, uint64_t n_t, uint64_t n_kv) {
    b->n = 0;
    put(b, "GGUF", 4);
    put_u32(b, version);
    put_u64(b, n_t);
    put_u64(b, n_kv);
}
static void tinfo(buf_t *b, const char *name, uint32_t nd, const uint64_t *ne, uint32_t type, uint64_t off) {
    put_str(b, name);
    put_u32(b, nd);
    for (uint32_t i = 0; i < nd; i++) put_u64(b, ne[i]);
    put_u32(b, type);
    put_u64(b, off);
}
static void pad_to(buf_t *b, size_t a) {
    while (b->n % a) b->b[b->n++] = 0;
}

/* Parses b from an exact-size heap copy and expects code with sub in the message. */
static int parse_fails(const buf_t *b, ss_status code, const char *sub) {
    uint8_t *copy = malloc(b->n ? b->n : 1);
    memcpy(copy, b->b, b->n);
    ss_gguf *g = (ss_gguf *)1;
    ss_error_clear();
    ss_status s = ss_gguf_parse(copy, b->n, "bad.gguf", &g);
    int ok = s == code && g == NULL && strstr(ss_last_error(), "bad.gguf") && strstr(ss_last_error(), sub);
    snprintf(why, sizeof why, "wanted %s with \"%s\", got %s: \"%s\"", ss_status_name(code), sub, ss_status_name(s),
             ss_last_error());
    if (s == SS_OK) ss_gguf_free(g);
    free(copy);
    return ok;
}
#define PARSE_FAILS(b, code, sub) CHECK_MSG(parse_fails(b, code, sub), "line %d: %s", __LINE__, why)

static ss_status parse_ok(const buf_t *b, ss_gguf **g) { return ss_gguf_parse(b->b, b->n, "good.gguf", g); }

TEST(gguf_refuses_bad_headers) {
    static buf_t b;
    b.n = 0;
    PARSE_FAILS(&b, SS_ERR_FORMAT, "not a GGUF file");
    put(&b, "GGML", 4);
    put_u32(&b, 3);
    PARSE_FAILS(&b, SS_ERR_FORMAT, "not a GGUF file");
    header(&b, 1, 0, 0);
    PARSE_FAILS(&b, SS_ERR_UNSUPPORTED, "version 1 is not supported");
    header(&b, 4, 0, 0);
    PARSE_FAILS(&b, SS_ERR_UNSUPPORTED, "version 4 is not supported");
    header(&b, 0x03000000u, 0, 0);
    PARSE_FAILS(&b, SS_ERR_UNSUPPORTED, "big-endian");
    header(&b, 3, 0, 0);
    b.n -= 3;
    PARSE_FAILS(&b, SS_ERR_FORMAT, "truncated file: the metadata key count");
    header(&b, 3, 0, UINT64_MAX);
    PARSE_FAILS(&b, SS_ERR_FORMAT, "18446744073709551615 metadata keys cannot fit");
    header(&b, 3, 1ull << 40, 0);
    PARSE_FAILS(&b, SS_ERR_FORMAT, "tensor infos cannot fit");
    /* A file with no tensors and no data padding is complete. */
    header(&b, 3, 0, 0);
    ss_gguf *g = NULL;
    CHECK_OK(parse_ok(&b, &g));
    CHECK(ss_gguf_kv_count(g) == 0 && ss_gguf_tensor_count(g) == 0 && !ss_gguf_find(g, "x"));
    ss_gguf_free(g);
}

TEST(gguf_refuses_bad_metadata) {
    static buf_t b;
    header(&b, 3, 0, 1);
    put_u64(&b, 1ull << 60); /* key length */
    put_u64(&b, 0);
    put_u64(&b, 0);
    PARSE_FAILS(&b, SS_ERR_FORMAT, "metadata key 0: string length 1152921504606846976 at offset 24 runs past");
    header(&b, 3, 0, 1);
    put_str(&b, "k");
    put_u32(&b, 13);
    PARSE_FAILS(&b, SS_ERR_FORMAT, "metadata key 0 \"k\": unknown value type 13");
    header(&b, 3, 0, 1);
    put_str(&b, "k");
    put_u32(&b, SS_GGUF_BOOL);
    put(&b, "\x02", 1);
    PARSE_FAILS(&b, SS_ERR_FORMAT, "BOOL byte 2");
    header(&b, 3, 0, 1);
    put_str(&b, "k");
    put_u32(&b, SS_GGUF_UINT64);
    put_u32(&b, 0);
    PARSE_FAILS(&b, SS_ERR_FORMAT, "truncated file: metadata key 0 \"k\" needs 8 bytes");
    header(&b, 3, 0, 1);
    put_str(&b, "k");
    put_u32(&b, SS_GGUF_STRING);
    put_u64(&b, 100);
    put(&b, "short", 5);
    PARSE_FAILS(&b, SS_ERR_FORMAT, "string length 100");
    header(&b, 3, 0, 1);
    put_str(&b, "k");
    put_u32(&b, SS_GGUF_ARRAY);
    put_u32(&b, SS_GGUF_UINT32);
    put_u64(&b, 1ull << 62);
    PARSE_FAILS(&b, SS_ERR_FORMAT, "array of 4611686018427387904 UINT32 elements");
    header(&b, 3, 0, 1);
    put_str(&b, "k");
    put_u32(&b, SS_GGUF_ARRAY);
    put_u32(&b, 77);
    put_u64(&b, 1);
    PARSE_FAILS(&b, SS_ERR_FORMAT, "unknown array element type 77");
    /* Arrays nested 17 deep: refused before the stack is at risk. */
    header(&b, 3, 0, 1);
    put_str(&b, "deep");
    put_u32(&b, SS_GGUF_ARRAY);
    for (int i = 0; i < 17; i++) {
        put_u32(&b, SS_GGUF_ARRAY);
        put_u64(&b, 1);
    }
    put_u32(&b, SS_GGUF_UINT8);
    put_u64(&b, 0);
    PARSE_FAILS(&b, SS_ERR_FORMAT, "nested more than 16 deep");
    header(&b, 3, 0, 2);
    put_str(&b, "dup");
    put_u32(&b, SS_GGUF_UINT8);
    put(&b, "\x01", 1);
    put_str(&b, "dup");
    put_u32(&b, SS_GGUF_UINT8);
    put(&b, "\x02", 1);
    PARSE_FAILS(&b, SS_ERR_FORMAT, "metadata key \"dup\" appears twice");
    header(&b, 3, 0, 1);
    put_u64(&b, 3);
    put(&b, "a\0b", 3);
    put_u32(&b, SS_GGUF_UINT8);
    put(&b, "\x01", 1);
    PARSE_FAILS(&b, SS_ERR_FORMAT, "contains a NUL byte");
    const uint32_t aligns[3] = {0, 3, 48};
    for (int i = 0; i < 3; i++) {
        header(&b, 3, 0, 1);
        put_str(&b, "general.alignment");
        put_u32(&b, SS_GGUF_UINT32);
        put_u32(&b, aligns[i]);
        PARSE_FAILS(&b, SS_ERR_FORMAT, "is not a power of two");
    }
    header(&b, 3, 0, 1);
    put_str(&b, "general.alignment");
    put_u32(&b, SS_GGUF_UINT64);
    put_u64(&b, 64);
    PARSE_FAILS(&b, SS_ERR_FORMAT, "general.alignment has type UINT64, expected UINT32");

    /* Empty arrays (which gguf-py cannot write) and an empty array of arrays are valid. */
    header(&b, 3, 0, 3);
    put_str(&b, "e1");
    put_u32(&b, SS_GGUF_ARRAY);
    put_u32(&b, SS_GGUF_STRING);
    put_u64(&b, 0);
    put_str(&b, "e2");
    put_u32(&b, SS_GGUF_ARRAY);
    put_u32(&b, SS_GGUF_ARRAY);
    put_u64(&b, 0);
    put_str(&b, "e3");
    put_u32(&b, SS_GGUF_ARRAY);
    put_u32(&b, SS_GGUF_FLOAT64);
    put_u64(&b, 0);
    ss_gguf *g = NULL;
    CHECK_OK(parse_ok(&b, &g));
    const ss_gguf_str *strs;
    size_t n = 9;
    const ss_gguf_value *a2 = ss_gguf_find(g, "e2"), *a3 = ss_gguf_find(g, "e3");
    ss_gguf_value e;
    int ok = ss_gguf_get_strings(g, "e1", &strs, &n) == SS_OK && n == 0 && a2 && a2->count == 0 &&
             a2->elem_type == SS_GGUF_ARRAY && a3 && a3->count == 0 && !ss_gguf_array_get(a3, 0, &e);
    ss_gguf_free(g);
    CHECK(ok);
}

/* One tensor "w" of type/ne at offset off, data section of dlen zero bytes. */
static void one_tensor(buf_t *b, uint32_t nd, const uint64_t *ne, uint32_t type, uint64_t off, size_t dlen) {
    header(b, 3, 1, 0);
    tinfo(b, "w", nd, ne, type, off);
    pad_to(b, 32);
    memset(b->b + b->n, 0, dlen);
    b->n += dlen;
}

TEST(gguf_refuses_bad_tensor_infos) {
    static buf_t b;
    uint64_t ne[5] = {32, 2, 1, 1, 1};
    one_tensor(&b, 5, ne, SS_GGML_F32, 0, 256);
    PARSE_FAILS(&b, SS_ERR_FORMAT, "tensor \"w\" has 5 dimensions");
    one_tensor(&b, 2, ne, 99, 0, 256);
    PARSE_FAILS(&b, SS_ERR_FORMAT, "tensor \"w\": unknown ggml type 99");
    one_tensor(&b, 2, ne, 31, 0, 256);
    PARSE_FAILS(&b, SS_ERR_UNSUPPORTED, "ggml type Q4_0_4_4 (31) was removed");
    uint64_t ne_odd[2] = {33, 2};
    one_tensor(&b, 2, ne_odd, SS_GGML_Q8_0, 0, 256);
    PARSE_FAILS(&b, SS_ERR_FORMAT, "first dimension 33 is not a multiple of the Q8_0 block size 32");
    one_tensor(&b, 2, ne, SS_GGML_F32, 16, 256);
    PARSE_FAILS(&b, SS_ERR_FORMAT, "data offset 16 is not a multiple of the alignment 32");
    one_tensor(&b, 2, ne, SS_GGML_F32, 0, 255);
    PARSE_FAILS(&b, SS_ERR_FORMAT, "tensor \"w\": bytes [0, +256) of the data section run past the end");
    one_tensor(&b, 2, ne, SS_GGML_F32, UINT64_MAX - 31, 256);
    PARSE_FAILS(&b, SS_ERR_FORMAT, "run past the end");
    uint64_t huge[4] = {1ull << 32, 1ull << 32, 1ull << 32, 1};
    one_tensor(&b, 4, huge, SS_GGML_F32, 0, 256);
    PARSE_FAILS(&b, SS_ERR_FORMAT, "element count overflows");
    uint64_t big[2] = {1ull << 62, 1};
    one_tensor(&b, 2, big, SS_GGML_F32, 0, 256);
    PARSE_FAILS(&b, SS_ERR_FORMAT, "byte size overflows");
    uint64_t neg[1] = {UINT64_MAX};
    one_tensor(&b, 1, neg, SS_GGML_F32, 0, 256);
    PARSE_FAILS(&b, SS_ERR_FORMAT, "above INT64_MAX");
    /* Header ends, but the data section's padding is missing. */
    header(&b, 3, 1, 0);
    tinfo(&b, "w", 1, ne, SS_GGML_F32, 0);
    PARSE_FAILS(&b, SS_ERR_FORMAT, "data section would start at byte");

    /* Two tensors: duplicate names, overlapping bytes. */
    header(&b, 3, 2, 0);
    tinfo(&b, "w", 1, ne, SS_GGML_F32, 0);
    tinfo(&b, "w", 1, ne, SS_GGML_F32, 128);
    pad_to(&b, 32);
    b.n += 256;
    PARSE_FAILS(&b, SS_ERR_FORMAT, "tensor \"w\" appears twice");
    header(&b, 3, 2, 0);
    tinfo(&b, "a", 1, ne, SS_GGML_F32, 0);
    tinfo(&b, "b", 1, ne, SS_GGML_F32, 96);
    pad_to(&b, 32);
    memset(b.b + b.n, 0, 256);
    b.n += 256;
    PARSE_FAILS(&b, SS_ERR_FORMAT, "tensors \"a\" and \"b\" overlap");
}

TEST(gguf_unsupported_types_open_but_refuse_conversion_by_name) {
    static buf_t b;
    uint64_t ne[2] = {256, 2};
    header(&b, 3, 3, 0);
    tinfo(&b, "iq2", 2, ne, 16 /* IQ2_XXS */, 0);
    tinfo(&b, "i32", 1, ne, 26 /* I32 */, 160);
    tinfo(&b, "empty", 2, (const uint64_t[]){0, 5}, SS_GGML_Q4_0, 1184);
    pad_to(&b, 32);
    memset(b.b + b.n, 0, 1184);
    b.n += 1184;
    ss_gguf *g = NULL;
    CHECK_OK(parse_ok(&b, &g));
    const ss_gguf_tensor *iq = ss_gguf_find_tensor(g, "iq2"), *i32 = ss_gguf_find_tensor(g, "i32"),
                         *em = ss_gguf_find_tensor(g, "empty");
    float out[512];
    int ok = iq && iq->nbytes == 132 && iq->n_elements == 512 && i32 && em && em->n_elements == 0;
    ok = ok && ss_gguf_tensor_to_f32(g, iq, out) == SS_ERR_UNSUPPORTED &&
         strstr(ss_last_error(), "tensor \"iq2\": ggml type IQ2_XXS is not supported") &&
         strstr(ss_last_error(), "good.gguf");
    ok = ok && ss_gguf_tensor_to_f32(g, i32, out) == SS_ERR_UNSUPPORTED && strstr(ss_last_error(), "type I32");
    ok = ok && ss_gguf_tensor_to_f32(g, em, out) == SS_OK;
    ok = ok && !ss_ggml_type_supported(16) && !ss_ggml_type_supported(9 /* Q8_1 */) &&
         ss_ggml_type_supported(SS_GGML_Q4_1) && ss_ggml_type_supported(SS_GGML_Q4_K) &&
         ss_ggml_type_supported(SS_GGML_Q8_K) && strcmp(ss_ggml_type_name(14), "Q6_K") == 0 &&
         ss_ggml_type_name(200) == NULL;
    const char *err = ss_last_error();
    ss_gguf_free(g);
    CHECK_MSG(ok, "%s", err);
}

/* Hand-made blocks with known values: the layouts, independently of gguf-py. */
TEST(gguf_block_layouts_by_hand) {
    static buf_t b;
    uint64_t ne[1] = {32};
    header(&b, 3, 3, 0);
    tinfo(&b, "q8", 1, ne, SS_GGML_Q8_0, 0);
    tinfo(&b, "q40", 1, ne, SS_GGML_Q4_0, 64);
    tinfo(&b, "q41", 1, ne, SS_GGML_Q4_1, 96);
    pad_to(&b, 32);
    size_t d0 = b.n;
    memset(b.b + d0, 0, 128);
    uint16_t half = 0x3800, two = 0x4000; /* 0.5, 2.0 */
    memcpy(b.b + d0, &half, 2);
    for (int j = 0; j < 32; j++) b.b[d0 + 2 + j] = (uint8_t)(int8_t)(j - 16);
    memcpy(b.b + d0 + 64, &two, 2);
    for (int j = 0; j < 16; j++) b.b[d0 + 66 + j] = (uint8_t)(j | ((15 - j) << 4));
    memcpy(b.b + d0 + 96, &half, 2);
    memcpy(b.b + d0 + 98, &two, 2); /* m = 2 */
    for (int j = 0; j < 16; j++) b.b[d0 + 100 + j] = (uint8_t)(j | ((15 - j) << 4));
    b.n = d0 + 128;
    ss_gguf *g = NULL;
    CHECK_OK(parse_ok(&b, &g));
    float q8[32], q40[32], q41[32];
    ss_status s1 = ss_gguf_tensor_to_f32(g, ss_gguf_find_tensor(g, "q8"), q8);
    ss_status s2 = ss_gguf_tensor_to_f32(g, ss_gguf_find_tensor(g, "q40"), q40);
    ss_status s3 = ss_gguf_tensor_to_f32(g, ss_gguf_find_tensor(g, "q41"), q41);
    ss_gguf_free(g);
    CHECK(s1 == SS_OK && s2 == SS_OK && s3 == SS_OK);
    for (int j = 0; j < 32; j++) CHECK(q8[j] == 0.5f * (float)(j - 16));
    for (int j = 0; j < 16; j++) {
        CHECK(q40[j] == 2.0f * (float)(j - 8));             /* low nibbles: elements 0..15 */
        CHECK(q40[j + 16] == 2.0f * (float)(15 - j - 8));   /* high nibbles: elements 16..31 */
        CHECK(q41[j] == 0.5f * (float)j + 2.0f);
        CHECK(q41[j + 16] == 0.5f * (float)(15 - j) + 2.0f);
    }
}

/* A K-quant tensor one byte short of its super-blocks is refused at open,
 * by name; with the byte, it opens and converts. */
TEST(gguf_truncated_kquant_tensor_refused_by_name) {
    static buf_t b;
    static const struct {
        uint32_t type;
        size_t bytes;
    } kt[] = {{SS_GGML_Q2_K, 84}, {SS_GGML_Q3_K, 110}, {SS_GGML_Q4_K, 144}, {SS_GGML_Q5_K, 176},
              {SS_GGML_Q6_K, 210}, {SS_GGML_Q8_K, 292}, {SS_GGML_Q5_0, 22 * 8}, {SS_GGML_Q5_1, 24 * 8}};
    for (size_t i = 0; i < sizeof kt / sizeof kt[0]; i++) {
        uint64_t ne[2] = {256, 2};
        header(&b, 3, 1, 0);
        tinfo(&b, "blk.0.ffn_down.weight", 2, ne, kt[i].type, 0);
        pad_to(&b, 32);
        size_t d0 = b.n;
        memset(b.b + d0, 0, 2 * kt[i].bytes);
        b.n = d0 + 2 * kt[i].bytes - 1;
        char want[160];
        snprintf(want, sizeof want, "tensor \"blk.0.ffn_down.weight\": bytes [0, +%zu) of the data section run past "
                 "the end", 2 * kt[i].bytes);
        CHECK_MSG(parse_fails(&b, SS_ERR_FORMAT, want), "%s: %s", ss_ggml_type_name(kt[i].type), why);
        b.n++;
        ss_gguf *g = NULL;
        CHECK_OK(parse_ok(&b, &g));
        float out[512];
        ss_status s = ss_gguf_tensor_to_f32(g, ss_gguf_tensor_at(g, 0), out);
        ss_gguf_free(g);
        CHECK_OK(s);
        for (int j = 0; j < 512; j++) CHECK(out[j] == 0.0f); /* all-zero blocks: d = 0 */
    }
}

/* Hand-made K-quant super-blocks with known values: the layouts (which bits
 * of which bytes make element e's quant, scale and minimum), independently
 * of gguf-py. Each block is filled so that the quant of element e is a
 * known function of e and the scales differ per sub-block. */
static void put_f16(uint8_t *p, float x) {
    uint16_t h = ss_f32_to_f16(x);
    memcpy(p, &h, 2);
}

TEST(gguf_kquant_block_layouts_by_hand) {
    static buf_t b;
    uint64_t ne[1] = {256};
    header(&b, 3, 6, 0);
    const uint32_t types[6] = {SS_GGML_Q2_K, SS_GGML_Q3_K, SS_GGML_Q4_K, SS_GGML_Q5_K, SS_GGML_Q6_K, SS_GGML_Q8_K};
    const char *names[6] = {"q2k", "q3k", "q4k", "q5k", "q6k", "q8k"};
    for (int i = 0; i < 6; i++) tinfo(&b, names[i], 1, ne, types[i], (uint64_t)i * 320);
    pad_to(&b, 32);
    uint8_t *d0 = b.b + b.n;
    memset(d0, 0, 6 * 320);
    b.n += 6 * 320;

    /* Q2_K: scales[16] (scale j+1 in the low nibble, min j%4 high), qs[64], d = 0.5, dmin = 0.25;
     * quant of element e: (e / 7) % 4 */
    uint8_t *q = d0;
    for (int j = 0; j < 16; j++) q[j] = (uint8_t)(((j + 1) & 15) | ((j % 4) << 4));
    for (int e = 0; e < 256; e++) q[16 + (e >> 7) * 32 + (e & 31)] |= (uint8_t)(((e / 7) % 4) << (2 * ((e >> 5) & 3)));
    put_f16(q + 80, 0.5f);
    put_f16(q + 82, 0.25f);

    /* Q3_K: hmask[32], qs[64], scales[12] (6-bit, offset 32: scale j = j + 20), d = 2;
     * quant of element e: ((e / 5) % 8) - 4 (high bit set for values >= 0) */
    q = d0 + 320;
    for (int e = 0; e < 256; e++) {
        int v = (e / 5) % 8; /* v = stored 3 bits; the value is v - 4 */
        q[32 + (e >> 7) * 32 + (e & 31)] |= (uint8_t)((v & 3) << (2 * ((e >> 5) & 3)));
        if (v & 4) q[e & 31] |= (uint8_t)(1u << (e >> 5));
    }
    for (int j = 0; j < 16; j++) {
        int sc = j + 20; /* 6 bits: low 4 in byte j % 8 (nibble j / 8), high 2 in byte 8 + j % 4 (pair j / 4) */
        q[96 + (j % 8)] |= (uint8_t)((sc & 15) << (4 * (j / 8)));
        q[96 + 8 + (j % 4)] |= (uint8_t)((sc >> 4) << (2 * (j / 4)));
    }
    put_f16(q + 108, 2.0f);

    /* Q4_K / Q5_K: d = 0.5, dmin = 1, scale j = 40 + j, min j = 60 - j (6 bits, packed);
     * quant of element e: (e * 3) % 16 (Q5_K: + 16 when (e / 3) is odd) */
    for (int k = 0; k < 2; k++) {
        q = d0 + (2 + k) * 320;
        put_f16(q, 0.5f);
        put_f16(q + 2, 1.0f);
        uint8_t *sc = q + 4;
        for (int j = 0; j < 8; j++) {
            int s6 = 40 + j, m6 = 60 - j;
            if (j < 4) {
                sc[j] = (uint8_t)s6;
                sc[j + 4] = (uint8_t)m6;
            } else {
                sc[j + 4] = (uint8_t)((s6 & 15) | ((m6 & 15) << 4));
                sc[j - 4] |= (uint8_t)((s6 >> 4) << 6);
                sc[j] |= (uint8_t)((m6 >> 4) << 6);
            }
        }
        uint8_t *qh = q + 16, *qs = q + (k ? 48 : 16);
        for (int e = 0; e < 256; e++) {
            int j = e / 32, l = e % 32;
            qs[32 * (j / 2) + l] |= (uint8_t)(((e * 3) % 16) << (4 * (j % 2)));
            if (k && (e / 3) % 2) qh[l] |= (uint8_t)(1u << j);
        }
    }

    /* Q6_K: ql[128], qh[64], scales[16] int8 (j - 8), d = 0.125; quant of element e: (e * 5) % 64 - 32 */
    q = d0 + 4 * 320;
    for (int e = 0; e < 256; e++) {
        int v = (e * 5) % 64, h = e / 128, r = e % 128;
        q[64 * h + r % 64] |= (uint8_t)((v & 15) << (4 * (r / 64)));
        q[128 + 32 * h + r % 32] |= (uint8_t)((v >> 4) << (2 * (r / 32)));
    }
    for (int j = 0; j < 16; j++) q[192 + j] = (uint8_t)(int8_t)(j - 8);
    put_f16(q + 208, 0.125f);

    /* Q8_K: f32 d = -0.75, 256 int8 e - 128, block sums (ignored) garbage */
    q = d0 + 5 * 320;
    float d8 = -0.75f;
    memcpy(q, &d8, 4);
    for (int e = 0; e < 256; e++) q[4 + e] = (uint8_t)(int8_t)(e - 128);
    memset(q + 260, 0xab, 32);

    ss_gguf *g = NULL;
    CHECK_OK(parse_ok(&b, &g));
    float out[6][256];
    ss_status st = SS_OK;
    for (int i = 0; i < 6 && st == SS_OK; i++) st = ss_gguf_tensor_to_f32(g, ss_gguf_find_tensor(g, names[i]), out[i]);
    ss_gguf_free(g);
    CHECK_OK(st);
    for (int e = 0; e < 256; e++) {
        int j16 = e / 16, j32 = e / 32;
        CHECK_MSG(out[0][e] == 0.5f * (float)((j16 + 1) & 15) * (float)((e / 7) % 4) - 0.25f * (float)(j16 % 4),
                  "Q2_K element %d: %g", e, out[0][e]);
        CHECK_MSG(out[1][e] == 2.0f * (float)(j16 + 20 - 32) * (float)((e / 5) % 8 - 4), "Q3_K element %d: %g", e,
                  out[1][e]);
        CHECK_MSG(out[2][e] == 0.5f * (float)(40 + j32) * (float)((e * 3) % 16) - (float)(60 - j32),
                  "Q4_K element %d: %g", e, out[2][e]);
        CHECK_MSG(out[3][e] == 0.5f * (float)(40 + j32) * (float)((e * 3) % 16 + ((e / 3) % 2 ? 16 : 0)) -
                                   (float)(60 - j32), "Q5_K element %d: %g", e, out[3][e]);
        CHECK_MSG(out[4][e] == 0.125f * (float)(j16 - 8) * (float)((e * 5) % 64 - 32), "Q6_K element %d: %g", e,
                  out[4][e]);
        CHECK_MSG(out[5][e] == -0.75f * (float)(e - 128), "Q8_K element %d: %g", e, out[5][e]);
    }
}

/* Random byte corruptions of a golden: whatever opens must convert safely. */
TEST(gguf_random_corruptions_never_crash) {
    golden gd;
    ss_status s = golden_load("types", &gd);
    if (s != SS_OK) golden_free(&gd);
    CHECK_OK(s);
    uint64_t st = 12345;
    size_t opened = 0, refused = 0;
    uint8_t *copy = malloc(gd.size);
    float *out = malloc(4096 * sizeof *out);
    for (int iter = 0; iter < 3000; iter++) {
        memcpy(copy, gd.bytes, gd.size);
        int flips = 1 + iter % 4;
        for (int k = 0; k < flips; k++) {
            st = st * 6364136223846793005ull + 1442695040888963407ull;
            size_t pos = (size_t)(st >> 33) % (iter % 2 ? 1824 : gd.size); /* half in the header */
            copy[pos] ^= (uint8_t)(1u << ((st >> 20) & 7));
            if ((st >> 24) % 5 == 0) copy[pos] = (uint8_t)(st >> 40);
        }
        ss_gguf *g = NULL;
        if (ss_gguf_parse(copy, gd.size, "mut.gguf", &g) != SS_OK) {
            refused++;
            continue;
        }
        opened++;
        for (size_t i = 0; i < ss_gguf_tensor_count(g); i++) {
            const ss_gguf_tensor *t = ss_gguf_tensor_at(g, i);
            if (t->n_elements <= 4096 && ss_ggml_type_supported(t->type)) ss_gguf_tensor_to_f32(g, t, out);
        }
        ss_gguf_free(g);
    }
    free(out);
    free(copy);
    golden_free(&gd);
    CHECK(opened > 0 && refused > 0);
}
