/* GGUF reader. The file comes from the internet, so the header is walked
 * twice: a first pass validates every count, length and offset against the
 * bytes that remain (and adds up how much memory the parsed form needs), a
 * second pass fills exactly-sized tables. Nothing is allocated from a count
 * that has not been checked against the file size. */
#include "subscope/gguf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "subscope/util.h"

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
               "GGUF data is read in place as little-endian; a big-endian host needs byte swapping");
_Static_assert(sizeof(float) == 4 && sizeof(double) == 8, "IEEE float and double expected");

#define GGUF_MAGIC "GGUF"
#define GGUF_DEFAULT_ALIGNMENT 32
/* Nested arrays recurse; a hostile file could nest thousands deep. */
#define GGUF_MAX_DEPTH 16

static const char *const value_type_names[] = {
    "UINT8", "INT8", "UINT16", "INT16", "UINT32", "INT32", "FLOAT32",
    "BOOL",  "STRING", "ARRAY", "UINT64", "INT64", "FLOAT64",
};
#define N_VALUE_TYPES (sizeof value_type_names / sizeof value_type_names[0])

const char *ss_gguf_type_name(ss_gguf_type t) {
    return (unsigned)t < N_VALUE_TYPES ? value_type_names[t] : "?";
}

/* Fixed byte size of a scalar type, 0 for STRING/ARRAY/unknown. */
static size_t scalar_size(uint32_t t) {
    switch (t) {
    case SS_GGUF_UINT8: case SS_GGUF_INT8: case SS_GGUF_BOOL: return 1;
    case SS_GGUF_UINT16: case SS_GGUF_INT16: return 2;
    case SS_GGUF_UINT32: case SS_GGUF_INT32: case SS_GGUF_FLOAT32: return 4;
    case SS_GGUF_UINT64: case SS_GGUF_INT64: case SS_GGUF_FLOAT64: return 8;
    default: return 0;
    }
}

/* Fewest bytes one element of type t can occupy: bounds an array's count
 * by the bytes left before anything is allocated for it. */
static size_t min_size(uint32_t t) {
    if (t == SS_GGUF_STRING) return 8;       /* u64 length */
    if (t == SS_GGUF_ARRAY) return 4 + 8;    /* element type + count */
    return scalar_size(t);
}

/* ggml's block layouts: elements per block and bytes per block (QK_K = 256).
 * Every type ggml currently defines is listed so that a file using one still
 * opens (its byte ranges can be checked); only some convert. */
static const struct {
    uint32_t id;
    const char *name;
    uint32_t blck, size;
} ggml_types[] = {
    {0, "F32", 1, 4},          {1, "F16", 1, 2},          {2, "Q4_0", 32, 18},       {3, "Q4_1", 32, 20},
    {6, "Q5_0", 32, 22},       {7, "Q5_1", 32, 24},       {8, "Q8_0", 32, 34},       {9, "Q8_1", 32, 40},
    {10, "Q2_K", 256, 84},     {11, "Q3_K", 256, 110},    {12, "Q4_K", 256, 144},    {13, "Q5_K", 256, 176},
    {14, "Q6_K", 256, 210},    {15, "Q8_K", 256, 292},    {16, "IQ2_XXS", 256, 66},  {17, "IQ2_XS", 256, 74},
    {18, "IQ3_XXS", 256, 98},  {19, "IQ1_S", 256, 50},    {20, "IQ4_NL", 32, 18},    {21, "IQ3_S", 256, 110},
    {22, "IQ2_S", 256, 82},    {23, "IQ4_XS", 256, 136},  {24, "I8", 1, 1},          {25, "I16", 1, 2},
    {26, "I32", 1, 4},         {27, "I64", 1, 8},         {28, "F64", 1, 8},         {29, "IQ1_M", 256, 56},
    {30, "BF16", 1, 2},        {34, "TQ1_0", 256, 54},    {35, "TQ2_0", 256, 66},    {39, "MXFP4", 32, 17},
};
#define N_GGML_TYPES (sizeof ggml_types / sizeof ggml_types[0])

/* Numbers ggml once used and has since removed (no layout to check against). */
static const char *removed_type_name(uint32_t t) {
    switch (t) {
    case 4: return "Q4_2";
    case 5: return "Q4_3";
    case 31: return "Q4_0_4_4";
    case 32: return "Q4_0_4_8";
    case 33: return "Q4_0_8_8";
    case 36: return "IQ4_NL_4_4";
    case 37: return "IQ4_NL_4_8";
    case 38: return "IQ4_NL_8_8";
    default: return NULL;
    }
}

static int ggml_type_index(uint32_t t) {
    for (size_t i = 0; i < N_GGML_TYPES; i++)
        if (ggml_types[i].id == t) return (int)i;
    return -1;
}

const char *ss_ggml_type_name(uint32_t type) {
    int k = ggml_type_index(type);
    return k >= 0 ? ggml_types[k].name : removed_type_name(type);
}

int ss_ggml_type_supported(uint32_t type) {
    switch (type) {
    case SS_GGML_F32: case SS_GGML_F16: case SS_GGML_BF16: case SS_GGML_F64:
    case SS_GGML_Q8_0: case SS_GGML_Q4_0: case SS_GGML_Q4_1: case SS_GGML_Q5_0: case SS_GGML_Q5_1:
    case SS_GGML_Q2_K: case SS_GGML_Q3_K: case SS_GGML_Q4_K: case SS_GGML_Q5_K: case SS_GGML_Q6_K:
    case SS_GGML_Q8_K: return 1;
    default: return 0;
    }
}

struct ss_gguf {
    char *path;
    ss_mmap map; /* only when opened from a file */
    uint32_t version;
    uint64_t alignment;
    uint64_t data_offset;
    const uint8_t *data;  /* data section */
    size_t data_size;
    ss_gguf_kv *kvs;
    size_t n_kv;
    const ss_gguf_kv **kv_by_key;
    ss_gguf_tensor *tensors;
    size_t n_tensors;
    const ss_gguf_tensor **t_by_name;
    /* Storage the second pass fills: NUL-terminated copies of every string,
     * the string tables of string arrays, the values of nested arrays. */
    char *strbuf;
    ss_gguf_str *strs;
    ss_gguf_value *vals;
};

/* Cursor over the header. In the counting pass fill is 0 and the need_*
 * totals grow; in the filling pass the *_next pointers advance. */
typedef struct {
    const uint8_t *buf;
    size_t size, pos;
    const char *path;
    int fill;
    size_t need_chars, need_strs, need_vals;
    char *chars_next;
    ss_gguf_str *strs_next;
    ss_gguf_value *vals_next;
} rd;

static uint64_t le(const uint8_t *p, int n) {
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

static ss_status need(rd *r, size_t n, const char *what) {
    if (n > r->size - r->pos)
        return ss_errorf(SS_ERR_FORMAT,
                         "%s: truncated file: %s needs %zu bytes at offset %zu, but only %zu remain in the "
                         "%zu-byte file",
                         r->path, what, n, r->pos, r->size - r->pos, r->size);
    return SS_OK;
}

static ss_status rd_u32(rd *r, uint32_t *v, const char *what) {
    SS_TRY(need(r, 4, what));
    *v = (uint32_t)le(r->buf + r->pos, 4);
    r->pos += 4;
    return SS_OK;
}

static ss_status rd_u64(rd *r, uint64_t *v, const char *what) {
    SS_TRY(need(r, 8, what));
    *v = le(r->buf + r->pos, 8);
    r->pos += 8;
    return SS_OK;
}

/* A length-prefixed string; the copy lands in the string buffer. */
static ss_status rd_str(rd *r, ss_gguf_str *out, const char *what) {
    uint64_t len;
    SS_TRY(rd_u64(r, &len, what));
    out->len = (size_t)len;
    if (len > r->size - r->pos)
        return ss_errorf(SS_ERR_FORMAT,
                         "%s: %s: string length %llu at offset %zu runs past the end of the %zu-byte file "
                         "(truncated or corrupt)",
                         r->path, what, (unsigned long long)len, r->pos - 8, r->size);
    if (r->fill) {
        memcpy(r->chars_next, r->buf + r->pos, (size_t)len);
        r->chars_next[len] = '\0';
        out->s = r->chars_next;
        r->chars_next += len + 1;
    } else {
        r->need_chars += (size_t)len + 1; /* the strings lie in the file: the sum cannot exceed its size */
    }
    r->pos += (size_t)len;
    return SS_OK;
}

static void widen_scalar(const uint8_t *p, uint32_t t, ss_gguf_value *v) {
    v->type = (ss_gguf_type)t;
    switch (t) {
    case SS_GGUF_UINT8: case SS_GGUF_BOOL: v->u = p[0]; break;
    case SS_GGUF_INT8: v->i = (int8_t)p[0]; break;
    case SS_GGUF_UINT16: v->u = le(p, 2); break;
    case SS_GGUF_INT16: v->i = (int16_t)(uint16_t)le(p, 2); break;
    case SS_GGUF_UINT32: v->u = le(p, 4); break;
    case SS_GGUF_INT32: v->i = (int32_t)(uint32_t)le(p, 4); break;
    case SS_GGUF_UINT64: v->u = le(p, 8); break;
    case SS_GGUF_INT64: v->i = (int64_t)le(p, 8); break;
    case SS_GGUF_FLOAT32: {
        uint32_t b = (uint32_t)le(p, 4);
        float f;
        memcpy(&f, &b, 4);
        v->f = f;
        break;
    }
    case SS_GGUF_FLOAT64: {
        uint64_t b = le(p, 8);
        memcpy(&v->f, &b, 8);
        break;
    }
    default: break;
    }
}

/* One value of type t. what names it for messages ("key \"general.name\""). */
static ss_status rd_value(rd *r, uint32_t t, int depth, ss_gguf_value *out, const char *what) {
    ss_gguf_value v;
    memset(&v, 0, sizeof v);
    v.type = (ss_gguf_type)t;
    size_t ss = scalar_size(t);
    if (ss) {
        SS_TRY(need(r, ss, what));
        const uint8_t *p = r->buf + r->pos;
        if (t == SS_GGUF_BOOL && p[0] > 1)
            return ss_errorf(SS_ERR_FORMAT, "%s: %s: BOOL byte %u at offset %zu is neither 0 nor 1", r->path, what,
                             p[0], r->pos);
        widen_scalar(p, t, &v);
        r->pos += ss;
    } else if (t == SS_GGUF_STRING) {
        SS_TRY(rd_str(r, &v.str, what));
    } else if (t == SS_GGUF_ARRAY) {
        if (depth >= GGUF_MAX_DEPTH)
            return ss_errorf(SS_ERR_FORMAT, "%s: %s: arrays nested more than %d deep", r->path, what,
                             GGUF_MAX_DEPTH);
        uint32_t et;
        uint64_t count;
        SS_TRY(rd_u32(r, &et, what));
        if (et >= N_VALUE_TYPES)
            return ss_errorf(SS_ERR_FORMAT, "%s: %s: unknown array element type %u at offset %zu", r->path, what,
                             et, r->pos - 4);
        SS_TRY(rd_u64(r, &count, what));
        size_t ms = min_size(et);
        if (count > (r->size - r->pos) / ms)
            return ss_errorf(SS_ERR_FORMAT,
                             "%s: %s: array of %llu %s elements at offset %zu cannot fit in the %zu bytes left in "
                             "the file (truncated or corrupt)",
                             r->path, what, (unsigned long long)count, ss_gguf_type_name((ss_gguf_type)et),
                             r->pos - 12, r->size - r->pos);
        v.elem_type = (ss_gguf_type)et;
        v.count = count;
        if (scalar_size(et)) {
            v.elems = r->buf + r->pos;
            if (et == SS_GGUF_BOOL)
                for (uint64_t k = 0; k < count; k++)
                    if (r->buf[r->pos + k] > 1)
                        return ss_errorf(SS_ERR_FORMAT,
                                         "%s: %s: element %llu: BOOL byte %u at offset %zu is neither 0 nor 1",
                                         r->path, what, (unsigned long long)k, r->buf[r->pos + k],
                                         r->pos + (size_t)k);
            r->pos += (size_t)count * ms; /* bounded by the check above */
        } else if (et == SS_GGUF_STRING) {
            ss_gguf_str *tab = NULL;
            if (r->fill) {
                tab = r->strs_next;
                r->strs_next += count;
            } else {
                r->need_strs += (size_t)count;
            }
            for (uint64_t k = 0; k < count; k++) {
                ss_gguf_str tmp;
                SS_TRY(rd_str(r, tab ? &tab[k] : &tmp, what));
            }
            v.elems = tab;
        } else {
            ss_gguf_value *tab = NULL;
            if (r->fill) {
                tab = r->vals_next;
                r->vals_next += count;
            } else {
                r->need_vals += (size_t)count;
            }
            for (uint64_t k = 0; k < count; k++) {
                ss_gguf_value tmp;
                SS_TRY(rd_value(r, SS_GGUF_ARRAY, depth + 1, tab ? &tab[k] : &tmp, what));
            }
            v.elems = tab;
        }
    } else {
        return ss_errorf(SS_ERR_FORMAT, "%s: %s: unknown value type %u", r->path, what, t);
    }
    *out = v;
    return SS_OK;
}

/* "metadata key 3 \"general.name\"" from the key's bytes in the file (the
 * counting pass has no copy yet); control bytes are masked. */
static void key_label(const rd *r, size_t key_len, uint64_t idx, char *buf, size_t bufsz) {
    const char *k = (const char *)r->buf + r->pos - key_len;
    int n = key_len > 60 ? 60 : (int)key_len;
    snprintf(buf, bufsz, "metadata key %llu \"%.*s%s\"", (unsigned long long)idx, n, k, key_len > 60 ? "..." : "");
    for (char *c = buf; *c; c++)
        if ((unsigned char)*c < 0x20) *c = '?';
}

static int key_is(const rd *r, size_t key_len, const char *name) {
    return key_len == strlen(name) && memcmp(r->buf + r->pos - key_len, name, key_len) == 0;
}

static ss_status rd_kvs(rd *r, ss_gguf *g, uint64_t n_kv) {
    for (uint64_t i = 0; i < n_kv; i++) {
        char what[128];
        snprintf(what, sizeof what, "metadata key %llu", (unsigned long long)i);
        ss_gguf_str key = {0};
        SS_TRY(rd_str(r, &key, what));
        int is_align = key_is(r, key.len, "general.alignment");
        key_label(r, key.len, i, what, sizeof what);
        if (memchr(r->buf + r->pos - key.len, 0, key.len))
            return ss_errorf(SS_ERR_FORMAT, "%s: %s contains a NUL byte", r->path, what);
        uint32_t t;
        SS_TRY(rd_u32(r, &t, what));
        if (t >= N_VALUE_TYPES)
            return ss_errorf(SS_ERR_FORMAT, "%s: %s: unknown value type %u at offset %zu", r->path, what, t,
                             r->pos - 4);
        ss_gguf_value v;
        SS_TRY(rd_value(r, t, 0, &v, what));
        if (is_align) {
            /* ggml insists on a UINT32 power of two; a zero would divide by zero below. */
            if (t != SS_GGUF_UINT32)
                return ss_errorf(SS_ERR_FORMAT, "%s: general.alignment has type %s, expected UINT32", r->path,
                                 ss_gguf_type_name((ss_gguf_type)t));
            if (v.u == 0 || (v.u & (v.u - 1)) != 0)
                return ss_errorf(SS_ERR_FORMAT, "%s: general.alignment %llu is not a power of two", r->path,
                                 (unsigned long long)v.u);
            g->alignment = v.u;
        }
        if (r->fill) {
            g->kvs[i].key = key.s;
            g->kvs[i].value = v;
        }
    }
    return SS_OK;
}

static ss_status rd_tensor_infos(rd *r, ss_gguf *g, uint64_t n_t) {
    for (uint64_t i = 0; i < n_t; i++) {
        char what[160];
        snprintf(what, sizeof what, "tensor info %llu", (unsigned long long)i);
        ss_gguf_tensor t;
        memset(&t, 0, sizeof t);
        ss_gguf_str name = {0};
        SS_TRY(rd_str(r, &name, what));
        {
            const char *k = (const char *)r->buf + r->pos - name.len;
            int n = name.len > 80 ? 80 : (int)name.len;
            snprintf(what, sizeof what, "tensor \"%.*s%s\"", n, k, name.len > 80 ? "..." : "");
            for (char *c = what; *c; c++)
                if ((unsigned char)*c < 0x20) *c = '?';
            if (memchr(k, 0, name.len))
                return ss_errorf(SS_ERR_FORMAT, "%s: %s: the name contains a NUL byte", r->path, what);
        }
        uint32_t nd;
        SS_TRY(rd_u32(r, &nd, what));
        if (nd > SS_GGUF_MAX_DIMS)
            return ss_errorf(SS_ERR_FORMAT, "%s: %s has %u dimensions (GGUF allows at most %d)", r->path, what, nd,
                             SS_GGUF_MAX_DIMS);
        t.n_dims = (int)nd;
        for (int d = 0; d < SS_GGUF_MAX_DIMS; d++) t.ne[d] = 1;
        for (uint32_t d = 0; d < nd; d++) {
            uint64_t x;
            SS_TRY(rd_u64(r, &x, what));
            if (x > (uint64_t)INT64_MAX)
                return ss_errorf(SS_ERR_FORMAT, "%s: %s: dimension %u is %llu, above INT64_MAX", r->path, what, d,
                                 (unsigned long long)x);
            t.ne[d] = (int64_t)x;
        }
        SS_TRY(rd_u32(r, &t.type, what));
        SS_TRY(rd_u64(r, &t.offset, what));

        int k = ggml_type_index(t.type);
        if (k < 0) {
            const char *old = removed_type_name(t.type);
            if (old)
                return ss_errorf(SS_ERR_UNSUPPORTED, "%s: %s: ggml type %s (%u) was removed from ggml and is not "
                                 "supported", r->path, what, old, t.type);
            return ss_errorf(SS_ERR_FORMAT, "%s: %s: unknown ggml type %u", r->path, what, t.type);
        }
        size_t n = 1;
        for (int d = 0; d < SS_GGUF_MAX_DIMS; d++)
            if (!ss_mul_ok(n, (size_t)t.ne[d], &n))
                return ss_errorf(SS_ERR_FORMAT, "%s: %s: element count overflows 64 bits", r->path, what);
        uint32_t blck = ggml_types[k].blck;
        if (t.ne[0] % blck != 0)
            return ss_errorf(SS_ERR_FORMAT, "%s: %s: first dimension %lld is not a multiple of the %s block size %u",
                             r->path, what, (long long)t.ne[0], ggml_types[k].name, blck);
        size_t nbytes;
        if (!ss_mul_ok(n / blck, ggml_types[k].size, &nbytes))
            return ss_errorf(SS_ERR_FORMAT, "%s: %s: byte size overflows 64 bits", r->path, what);
        t.n_elements = n;
        t.nbytes = nbytes;
        if (g->alignment && t.offset % g->alignment != 0)
            return ss_errorf(SS_ERR_FORMAT, "%s: %s: data offset %llu is not a multiple of the alignment %llu",
                             r->path, what, (unsigned long long)t.offset, (unsigned long long)g->alignment);
        for (int d = 0; d < SS_GGUF_MAX_DIMS; d++) t.shape[d] = d < t.n_dims ? t.ne[t.n_dims - 1 - d] : 1;
        if (r->fill) {
            t.name = name.s;
            g->tensors[i] = t;
        }
    }
    return SS_OK;
}

static int cmp_kv(const void *a, const void *b) {
    return strcmp((*(const ss_gguf_kv *const *)a)->key, (*(const ss_gguf_kv *const *)b)->key);
}
static int cmp_tensor(const void *a, const void *b) {
    return strcmp((*(const ss_gguf_tensor *const *)a)->name, (*(const ss_gguf_tensor *const *)b)->name);
}
static int cmp_tensor_offset(const void *a, const void *b) {
    const ss_gguf_tensor *x = *(const ss_gguf_tensor *const *)a, *y = *(const ss_gguf_tensor *const *)b;
    if (x->offset != y->offset) return x->offset < y->offset ? -1 : 1;
    return x->nbytes < y->nbytes ? -1 : x->nbytes > y->nbytes;
}

/* The header walk, run twice (count, then fill). */
static ss_status walk(rd *r, ss_gguf *g) {
    r->pos = 0;
    g->alignment = GGUF_DEFAULT_ALIGNMENT;
    if (r->size < 4 || memcmp(r->buf, GGUF_MAGIC, 4) != 0)
        return ss_errorf(SS_ERR_FORMAT, "%s: not a GGUF file (the first 4 bytes are not \"GGUF\")", r->path);
    r->pos = 4;
    uint32_t version;
    SS_TRY(rd_u32(r, &version, "the version"));
    if (version == 1)
        return ss_errorf(SS_ERR_UNSUPPORTED, "%s: GGUF version 1 is not supported (only versions 2 and 3)", r->path);
    if (version != 2 && version != 3) {
        /* A big-endian writer stores the version byte-swapped. */
        uint32_t sw = __builtin_bswap32(version);
        if (sw == 2 || sw == 3)
            return ss_errorf(SS_ERR_UNSUPPORTED, "%s: big-endian GGUF files are not supported", r->path);
        return ss_errorf(SS_ERR_UNSUPPORTED, "%s: GGUF version %u is not supported (only versions 2 and 3)",
                         r->path, version);
    }
    g->version = version;
    uint64_t n_t, n_kv;
    SS_TRY(rd_u64(r, &n_t, "the tensor count"));
    SS_TRY(rd_u64(r, &n_kv, "the metadata key count"));
    /* Smallest possible entries: a key/value is a key length, a type and one
     * byte; a tensor info a name length, n_dims, a type and an offset. */
    size_t left = r->size - r->pos;
    if (n_kv > left / 13)
        return ss_errorf(SS_ERR_FORMAT, "%s: %llu metadata keys cannot fit in the %zu bytes after the header "
                         "(truncated or corrupt)", r->path, (unsigned long long)n_kv, left);
    if (n_t > left / 24)
        return ss_errorf(SS_ERR_FORMAT, "%s: %llu tensor infos cannot fit in the %zu bytes after the header "
                         "(truncated or corrupt)", r->path, (unsigned long long)n_t, left);
    if (r->fill) {
        g->n_kv = (size_t)n_kv;
        g->n_tensors = (size_t)n_t;
    }
    SS_TRY(rd_kvs(r, g, n_kv));
    SS_TRY(rd_tensor_infos(r, g, n_t));
    if (!r->fill) {
        g->n_kv = (size_t)n_kv;
        g->n_tensors = (size_t)n_t;
    }
    return SS_OK;
}

/* After the fill pass: unique keys and names, the data section, every
 * tensor's bytes inside it and no two tensors sharing bytes. */
static ss_status finish(ss_gguf *g, size_t header_end, const uint8_t *buf, size_t size) {
    const char *path = g->path;
    for (size_t i = 0; i < g->n_kv; i++) g->kv_by_key[i] = &g->kvs[i];
    qsort(g->kv_by_key, g->n_kv, sizeof *g->kv_by_key, cmp_kv);
    for (size_t i = 1; i < g->n_kv; i++)
        if (strcmp(g->kv_by_key[i - 1]->key, g->kv_by_key[i]->key) == 0)
            return ss_errorf(SS_ERR_FORMAT, "%s: metadata key \"%s\" appears twice", path, g->kv_by_key[i]->key);
    for (size_t i = 0; i < g->n_tensors; i++) g->t_by_name[i] = &g->tensors[i];
    qsort(g->t_by_name, g->n_tensors, sizeof *g->t_by_name, cmp_tensor);
    for (size_t i = 1; i < g->n_tensors; i++)
        if (strcmp(g->t_by_name[i - 1]->name, g->t_by_name[i]->name) == 0)
            return ss_errorf(SS_ERR_FORMAT, "%s: tensor \"%s\" appears twice", path, g->t_by_name[i]->name);

    uint64_t a = g->alignment, start = header_end;
    start = (start + (a - 1)) / a * a; /* header_end < size and a <= 2^31: no overflow */
    if (start > size) {
        if (g->n_tensors)
            return ss_errorf(SS_ERR_FORMAT, "%s: truncated file: the data section would start at byte %llu, past "
                             "the end of the %zu-byte file", path, (unsigned long long)start, size);
        start = size; /* no tensors: the padding may be absent */
    }
    g->data_offset = start;
    g->data = buf + start;
    g->data_size = size - (size_t)start;
    for (size_t i = 0; i < g->n_tensors; i++) {
        ss_gguf_tensor *t = &g->tensors[i];
        if (t->offset > g->data_size || t->nbytes > g->data_size - t->offset)
            return ss_errorf(SS_ERR_FORMAT,
                             "%s: tensor \"%s\": bytes [%llu, +%zu) of the data section run past the end of the "
                             "file (the data section holds %zu bytes; truncated file?)",
                             path, t->name, (unsigned long long)t->offset, t->nbytes, g->data_size);
        t->data = g->data + t->offset;
    }
    /* Reuse t_by_name for the overlap check, then restore name order. */
    const ss_gguf_tensor **v = g->t_by_name;
    qsort(v, g->n_tensors, sizeof *v, cmp_tensor_offset);
    for (size_t i = 1; i < g->n_tensors; i++)
        if (v[i - 1]->nbytes && v[i]->nbytes && v[i - 1]->offset + v[i - 1]->nbytes > v[i]->offset)
            return ss_errorf(SS_ERR_FORMAT, "%s: tensors \"%s\" and \"%s\" overlap in the data section", path,
                             v[i - 1]->name, v[i]->name);
    qsort(v, g->n_tensors, sizeof *v, cmp_tensor);
    return SS_OK;
}

ss_status ss_gguf_parse(const uint8_t *buf, size_t size, const char *path, ss_gguf **out) {
    *out = NULL;
    if (!path) path = "(memory)";
    ss_gguf *g = ss_calloc(1, sizeof *g, "gguf");
    if (!g) return SS_ERR_NOMEM;
    g->path = ss_strdup(path);
    if (!g->path) {
        free(g);
        return SS_ERR_NOMEM;
    }
    rd r = {.buf = buf, .size = size, .path = g->path};
    ss_status s = walk(&r, g);
    if (s == SS_OK) {
        g->strbuf = ss_malloc(r.need_chars ? r.need_chars : 1, "gguf strings");
        g->strs = ss_calloc(r.need_strs ? r.need_strs : 1, sizeof *g->strs, "gguf string arrays");
        g->vals = ss_calloc(r.need_vals ? r.need_vals : 1, sizeof *g->vals, "gguf nested arrays");
        g->kvs = ss_calloc(g->n_kv ? g->n_kv : 1, sizeof *g->kvs, "gguf metadata");
        g->kv_by_key = ss_calloc(g->n_kv ? g->n_kv : 1, sizeof *g->kv_by_key, "gguf metadata index");
        g->tensors = ss_calloc(g->n_tensors ? g->n_tensors : 1, sizeof *g->tensors, "gguf tensors");
        g->t_by_name = ss_calloc(g->n_tensors ? g->n_tensors : 1, sizeof *g->t_by_name, "gguf tensor index");
        if (!g->strbuf || !g->strs || !g->vals || !g->kvs || !g->kv_by_key || !g->tensors || !g->t_by_name)
            s = SS_ERR_NOMEM;
    }
    if (s == SS_OK) {
        r.fill = 1;
        r.chars_next = g->strbuf;
        r.strs_next = g->strs;
        r.vals_next = g->vals;
        s = walk(&r, g);
        if (s != SS_OK) s = ss_error_context(SS_ERR_INTERNAL, "second pass disagreed with the first");
    }
    if (s == SS_OK) s = finish(g, r.pos, buf, size);
    if (s != SS_OK) {
        ss_gguf_free(g);
        return s;
    }
    *out = g;
    return SS_OK;
}

ss_status ss_gguf_open(const char *path, ss_gguf **out) {
    *out = NULL;
    ss_mmap m;
    SS_TRY(ss_mmap_open(path, &m));
    ss_gguf *g = NULL;
    ss_status s = ss_gguf_parse(m.data, m.size, path, &g);
    if (s != SS_OK) {
        ss_mmap_close(&m);
        return s;
    }
    g->map = m;
    *out = g;
    return SS_OK;
}

void ss_gguf_free(ss_gguf *g) {
    if (!g) return;
    ss_mmap_close(&g->map);
    free(g->strbuf);
    free(g->strs);
    free(g->vals);
    free(g->kvs);
    free(g->kv_by_key);
    free(g->tensors);
    free(g->t_by_name);
    free(g->path);
    free(g);
}

const char *ss_gguf_path(const ss_gguf *g) { return g->path; }
uint32_t ss_gguf_version(const ss_gguf *g) { return g->version; }
uint64_t ss_gguf_alignment(const ss_gguf *g) { return g->alignment; }
uint64_t ss_gguf_data_offset(const ss_gguf *g) { return g->data_offset; }
size_t ss_gguf_kv_count(const ss_gguf *g) { return g ? g->n_kv : 0; }
const ss_gguf_kv *ss_gguf_kv_at(const ss_gguf *g, size_t i) { return g && i < g->n_kv ? &g->kvs[i] : NULL; }
size_t ss_gguf_tensor_count(const ss_gguf *g) { return g ? g->n_tensors : 0; }
const ss_gguf_tensor *ss_gguf_tensor_at(const ss_gguf *g, size_t i) {
    return g && i < g->n_tensors ? &g->tensors[i] : NULL;
}

const ss_gguf_value *ss_gguf_find(const ss_gguf *g, const char *key) {
    if (!g || !key) return NULL;
    size_t lo = 0, hi = g->n_kv;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(g->kv_by_key[mid]->key, key);
        if (c == 0) return &g->kv_by_key[mid]->value;
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return NULL;
}

const ss_gguf_tensor *ss_gguf_find_tensor(const ss_gguf *g, const char *name) {
    if (!g || !name) return NULL;
    size_t lo = 0, hi = g->n_tensors;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(g->t_by_name[mid]->name, name);
        if (c == 0) return g->t_by_name[mid];
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return NULL;
}

/* ---- typed lookups ---- */

static ss_status lookup(const ss_gguf *g, const char *key, const ss_gguf_value **v) {
    *v = ss_gguf_find(g, key);
    if (!*v) return ss_errorf(SS_ERR_FORMAT, "%s: metadata key \"%s\" is missing", g->path, key);
    return SS_OK;
}

static ss_status wrong_type(const ss_gguf *g, const char *key, const ss_gguf_value *v, const char *want) {
    if (v->type == SS_GGUF_ARRAY)
        return ss_errorf(SS_ERR_FORMAT, "%s: metadata key \"%s\" is an array of %s, expected %s", g->path, key,
                         ss_gguf_type_name(v->elem_type), want);
    return ss_errorf(SS_ERR_FORMAT, "%s: metadata key \"%s\" has type %s, expected %s", g->path, key,
                     ss_gguf_type_name(v->type), want);
}

ss_status ss_gguf_get_str(const ss_gguf *g, const char *key, const ss_gguf_str **out) {
    const ss_gguf_value *v;
    SS_TRY(lookup(g, key, &v));
    if (v->type != SS_GGUF_STRING) return wrong_type(g, key, v, "STRING");
    *out = &v->str;
    return SS_OK;
}

ss_status ss_gguf_get_int(const ss_gguf *g, const char *key, int64_t *out) {
    const ss_gguf_value *v;
    SS_TRY(lookup(g, key, &v));
    switch (v->type) {
    case SS_GGUF_INT8: case SS_GGUF_INT16: case SS_GGUF_INT32: case SS_GGUF_INT64:
        *out = v->i;
        return SS_OK;
    case SS_GGUF_UINT8: case SS_GGUF_UINT16: case SS_GGUF_UINT32: case SS_GGUF_UINT64:
        if (v->u > (uint64_t)INT64_MAX)
            return ss_errorf(SS_ERR_FORMAT, "%s: metadata key \"%s\": %llu does not fit in a signed 64-bit integer",
                             g->path, key, (unsigned long long)v->u);
        *out = (int64_t)v->u;
        return SS_OK;
    default:
        return wrong_type(g, key, v, "an integer");
    }
}

ss_status ss_gguf_get_float(const ss_gguf *g, const char *key, double *out) {
    const ss_gguf_value *v;
    SS_TRY(lookup(g, key, &v));
    if (v->type != SS_GGUF_FLOAT32 && v->type != SS_GGUF_FLOAT64) return wrong_type(g, key, v, "FLOAT32 or FLOAT64");
    *out = v->f;
    return SS_OK;
}

ss_status ss_gguf_get_bool(const ss_gguf *g, const char *key, int *out) {
    const ss_gguf_value *v;
    SS_TRY(lookup(g, key, &v));
    if (v->type != SS_GGUF_BOOL) return wrong_type(g, key, v, "BOOL");
    *out = (int)v->u;
    return SS_OK;
}

ss_status ss_gguf_get_array(const ss_gguf *g, const char *key, const ss_gguf_value **out) {
    const ss_gguf_value *v;
    SS_TRY(lookup(g, key, &v));
    if (v->type != SS_GGUF_ARRAY) return wrong_type(g, key, v, "an array");
    *out = v;
    return SS_OK;
}

ss_status ss_gguf_get_strings(const ss_gguf *g, const char *key, const ss_gguf_str **strs, size_t *n) {
    const ss_gguf_value *v;
    SS_TRY(lookup(g, key, &v));
    if (v->type != SS_GGUF_ARRAY || v->elem_type != SS_GGUF_STRING) return wrong_type(g, key, v, "an array of STRING");
    *strs = v->elems;
    *n = (size_t)v->count;
    return SS_OK;
}

int ss_gguf_array_get(const ss_gguf_value *arr, uint64_t i, ss_gguf_value *out) {
    if (!arr || arr->type != SS_GGUF_ARRAY || i >= arr->count) return 0;
    memset(out, 0, sizeof *out);
    size_t es = scalar_size(arr->elem_type);
    if (es) widen_scalar((const uint8_t *)arr->elems + i * es, arr->elem_type, out);
    else if (arr->elem_type == SS_GGUF_STRING) {
        out->type = SS_GGUF_STRING;
        out->str = ((const ss_gguf_str *)arr->elems)[i];
    } else *out = ((const ss_gguf_value *)arr->elems)[i];
    return 1;
}

/* ---- dequantisation ---- */

static float f16_at(const uint8_t *p) { return ss_f16_to_f32((uint16_t)(p[0] | (p[1] << 8))); }

/* q*d + m (or q*d - m) with the product rounded to float before the sum, as
 * ggml and gguf-py compute it; volatile keeps any compiler from fusing the two
 * into one multiply-add, whose single rounding would differ in the last bit. */
static inline float mul_add(float q, float d, float m) {
    volatile float p = q * d;
    return p + m;
}

/* The 6-bit scale and minimum of sub-block j (0..7) of a Q4_K/Q5_K super-block,
 * from its 12 packed bytes: sub-blocks 0..3 keep theirs in the low 6 bits of
 * bytes j (scale) and j+4 (min); sub-blocks 4..7 take the low/high nibble of
 * byte j+4 for the low 4 bits and the top 2 bits of bytes j-4 / j for the high
 * two. */
static void k_scale_min(const uint8_t *sc, int j, int *scale, int *min) {
    if (j < 4) {
        *scale = sc[j] & 63;
        *min = sc[j + 4] & 63;
    } else {
        *scale = (sc[j + 4] & 0x0f) | ((sc[j - 4] >> 6) << 4);
        *min = (sc[j + 4] >> 4) | ((sc[j] >> 6) << 4);
    }
}

/* ggml's K-quants: super-blocks of QK_K = 256 elements made of 16 or 8
 * sub-blocks, each with its own scale (and minimum) quantised against the
 * super-block's f16 d (and dmin). Elements come out in ggml's order; the
 * layouts are in docs/GGUF.md. */
static void dequant_q2_k(const uint8_t *src, size_t nb, float *out) {
    /* scales[16] (low nibble scale, high nibble min), qs[64] (2 bits), d, dmin */
    for (size_t b = 0; b < nb; b++, src += 84, out += 256) {
        const float d = f16_at(src + 80), dmin = f16_at(src + 82);
        for (int e = 0; e < 256; e++) {
            const int h = e >> 7, s = (e >> 5) & 3, l = e & 31;
            const uint8_t sc = src[e >> 4];
            const float dl = d * (float)(sc & 0x0f), ml = dmin * (float)(sc >> 4);
            const int q = (src[16 + h * 32 + l] >> (2 * s)) & 3;
            out[e] = mul_add((float)q, dl, -ml);
        }
    }
}

static void dequant_q3_k(const uint8_t *src, size_t nb, float *out) {
    /* hmask[32] (bit k of byte l: element 32k + l), qs[64] (low 2 bits),
     * scales[12] (16 6-bit scales, offset 32), d */
    for (size_t b = 0; b < nb; b++, src += 110, out += 256) {
        const uint8_t *hm = src, *qs = src + 32, *sc = src + 96;
        const float d = f16_at(src + 108);
        float dl[16];
        for (int j = 0; j < 16; j++) {
            const int lo = j < 8 ? sc[j] & 0x0f : sc[j - 8] >> 4;
            const int hi = (sc[8 + (j & 3)] >> (2 * (j >> 2))) & 3;
            dl[j] = d * (float)((lo | (hi << 4)) - 32);
        }
        for (int e = 0; e < 256; e++) {
            const int h = e >> 7, s = (e >> 5) & 3, l = e & 31;
            /* a clear high bit subtracts 4 (ggml's offset encoding) */
            const int q = ((qs[h * 32 + l] >> (2 * s)) & 3) - ((hm[l] >> (e >> 5)) & 1 ? 0 : 4);
            out[e] = dl[e >> 4] * (float)q;
        }
    }
}

static void dequant_q4_k(const uint8_t *src, size_t nb, float *out) {
    /* d, dmin, scales[12], qs[128]: sub-block j uses the low (j even) or
     * high (j odd) nibbles of bytes 32*(j/2) .. +31 */
    for (size_t b = 0; b < nb; b++, src += 144, out += 256) {
        const float d = f16_at(src), dmin = f16_at(src + 2);
        const uint8_t *qs = src + 16;
        for (int j = 0; j < 8; j++) {
            int sc, mn;
            k_scale_min(src + 4, j, &sc, &mn);
            const float dl = d * (float)sc, ml = dmin * (float)mn;
            const uint8_t *q = qs + 32 * (j >> 1);
            const int shift = 4 * (j & 1);
            for (int l = 0; l < 32; l++) out[32 * j + l] = mul_add((float)((q[l] >> shift) & 0x0f), dl, -ml);
        }
    }
}

static void dequant_q5_k(const uint8_t *src, size_t nb, float *out) {
    /* d, dmin, scales[12], qh[32] (bit j of byte l: sub-block j, element l),
     * qs[128] as Q4_K */
    for (size_t b = 0; b < nb; b++, src += 176, out += 256) {
        const float d = f16_at(src), dmin = f16_at(src + 2);
        const uint8_t *qh = src + 16, *qs = src + 48;
        for (int j = 0; j < 8; j++) {
            int sc, mn;
            k_scale_min(src + 4, j, &sc, &mn);
            const float dl = d * (float)sc, ml = dmin * (float)mn;
            const uint8_t *q = qs + 32 * (j >> 1);
            const int shift = 4 * (j & 1);
            for (int l = 0; l < 32; l++) {
                const int v = ((q[l] >> shift) & 0x0f) | (((qh[l] >> j) & 1) << 4);
                out[32 * j + l] = mul_add((float)v, dl, -ml);
            }
        }
    }
}

static void dequant_q6_k(const uint8_t *src, size_t nb, float *out) {
    /* ql[128] (low 4 bits), qh[64] (high 2 bits), scales[16] int8, d; each
     * half of 128 elements: element 64s + m takes nibble s of ql[64h + m],
     * element 32t + l takes bits 2t..2t+1 of qh[32h + l] */
    for (size_t b = 0; b < nb; b++, src += 210, out += 256) {
        const uint8_t *ql = src, *qh = src + 128;
        const int8_t *sc = (const int8_t *)(src + 192);
        const float d = f16_at(src + 208);
        for (int e = 0; e < 256; e++) {
            const int h = e >> 7, r = e & 127;
            const int lo = (ql[64 * h + (r & 63)] >> (4 * (r >> 6))) & 0x0f;
            const int hi = (qh[32 * h + (r & 31)] >> (2 * (r >> 5))) & 3;
            out[e] = d * (float)sc[e >> 4] * (float)((lo | (hi << 4)) - 32);
        }
    }
}

/* n elements (a whole number of blocks) from src into out. The 32-element
 * layouts are ggml's: Q8_0 = f16 d, 32 x int8 (x = q*d); Q4_0 = f16 d, 16
 * bytes whose low nibbles are elements 0..15 and high nibbles 16..31
 * (x = (q-8)*d); Q4_1 = f16 d, f16 m, 16 bytes as Q4_0 (x = q*d + m);
 * Q5_0/Q5_1 = Q4_0/Q4_1 with a u32 after the f16s whose bit j is the fifth
 * bit of element j (Q5_0: x = (q-16)*d). Products and sums are rounded
 * separately, as ggml and gguf-py do (no fused multiply-add), so the results
 * match theirs bit for bit. */
static void dequant(uint32_t type, const uint8_t *src, size_t n, float *out) {
    switch (type) {
    case SS_GGML_F32:
        memcpy(out, src, n * 4);
        break;
    case SS_GGML_F16:
        for (size_t i = 0; i < n; i++) out[i] = f16_at(src + 2 * i);
        break;
    case SS_GGML_BF16:
        for (size_t i = 0; i < n; i++) out[i] = ss_bf16_to_f32((uint16_t)(src[2 * i] | (src[2 * i + 1] << 8)));
        break;
    case SS_GGML_F64:
        for (size_t i = 0; i < n; i++) {
            double d;
            memcpy(&d, src + 8 * i, 8);
            out[i] = (float)d;
        }
        break;
    case SS_GGML_Q8_0:
        for (size_t b = 0; b < n / 32; b++, src += 34, out += 32) {
            float d = f16_at(src);
            for (int j = 0; j < 32; j++) out[j] = (float)(int8_t)src[2 + j] * d;
        }
        break;
    case SS_GGML_Q4_0:
        for (size_t b = 0; b < n / 32; b++, src += 18, out += 32) {
            float d = f16_at(src);
            for (int j = 0; j < 16; j++) {
                out[j] = (float)((src[2 + j] & 0x0f) - 8) * d;
                out[j + 16] = (float)((src[2 + j] >> 4) - 8) * d;
            }
        }
        break;
    case SS_GGML_Q4_1:
        for (size_t b = 0; b < n / 32; b++, src += 20, out += 32) {
            float d = f16_at(src), m = f16_at(src + 2);
            for (int j = 0; j < 16; j++) {
                out[j] = mul_add((float)(src[4 + j] & 0x0f), d, m);
                out[j + 16] = mul_add((float)(src[4 + j] >> 4), d, m);
            }
        }
        break;
    case SS_GGML_Q5_0:
        for (size_t b = 0; b < n / 32; b++, src += 22, out += 32) {
            const float d = f16_at(src);
            const uint32_t qh = (uint32_t)le(src + 2, 4);
            for (int j = 0; j < 16; j++) {
                const int lo = (src[6 + j] & 0x0f) | (int)(((qh >> j) & 1) << 4);
                const int hi = (src[6 + j] >> 4) | (int)(((qh >> (j + 16)) & 1) << 4);
                out[j] = (float)(lo - 16) * d;
                out[j + 16] = (float)(hi - 16) * d;
            }
        }
        break;
    case SS_GGML_Q5_1:
        for (size_t b = 0; b < n / 32; b++, src += 24, out += 32) {
            const float d = f16_at(src), m = f16_at(src + 2);
            const uint32_t qh = (uint32_t)le(src + 4, 4);
            for (int j = 0; j < 16; j++) {
                const int lo = (src[8 + j] & 0x0f) | (int)(((qh >> j) & 1) << 4);
                const int hi = (src[8 + j] >> 4) | (int)(((qh >> (j + 16)) & 1) << 4);
                out[j] = mul_add((float)lo, d, m);
                out[j + 16] = mul_add((float)hi, d, m);
            }
        }
        break;
    case SS_GGML_Q2_K: dequant_q2_k(src, n / 256, out); break;
    case SS_GGML_Q3_K: dequant_q3_k(src, n / 256, out); break;
    case SS_GGML_Q4_K: dequant_q4_k(src, n / 256, out); break;
    case SS_GGML_Q5_K: dequant_q5_k(src, n / 256, out); break;
    case SS_GGML_Q6_K: dequant_q6_k(src, n / 256, out); break;
    case SS_GGML_Q8_K:
        /* f32 d, 256 x int8, then 16 int16 block sums that only ggml's dot
         * products use */
        for (size_t b = 0; b < n / 256; b++, src += 292, out += 256) {
            float d;
            memcpy(&d, src, 4);
            for (int j = 0; j < 256; j++) out[j] = d * (float)(int8_t)src[4 + j];
        }
        break;
    default:
        break;
    }
}

ss_status ss_gguf_rows_to_f32(const ss_gguf *g, const ss_gguf_tensor *t, size_t row0, size_t nrows, float *out) {
    if (!ss_ggml_type_supported(t->type)) {
        const char *nm = ss_ggml_type_name(t->type);
        return ss_errorf(SS_ERR_UNSUPPORTED,
                         "%s: tensor \"%s\": ggml type %s is not supported (supported: F32, F16, BF16, F64, Q8_0, "
                         "Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, Q8_K)", g->path, t->name, nm ? nm : "?");
    }
    size_t row_len = (size_t)t->ne[0];
    size_t total_rows = row_len ? t->n_elements / row_len : 0;
    if (row0 > total_rows || nrows > total_rows - row0)
        return ss_errorf(SS_ERR_ARG, "%s: tensor \"%s\": rows [%zu, +%zu) out of range (it has %zu rows)", g->path,
                         t->name, row0, nrows, total_rows);
    if (nrows == 0 || row_len == 0) return SS_OK;
    int k = ggml_type_index(t->type);
    size_t row_bytes = row_len / ggml_types[k].blck * ggml_types[k].size;
    const uint8_t *src = (const uint8_t *)t->data + row0 * row_bytes; /* inside the tensor: checked at open */
    dequant(t->type, src, nrows * row_len, out);
    return SS_OK;
}

ss_status ss_gguf_tensor_to_f32(const ss_gguf *g, const ss_gguf_tensor *t, float *out) {
    size_t row_len = (size_t)t->ne[0];
    return ss_gguf_rows_to_f32(g, t, 0, row_len ? t->n_elements / row_len : 0, out);
}
