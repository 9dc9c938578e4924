/* safetensors reader: the whole header is validated (lengths, JSON, dtypes,
 * shapes, byte ranges, coverage of the data buffer) before any tensor is
 * handed out, because the files come from the internet. */
#include "subscope/safetensors.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "subscope/json.h"
#include "subscope/util.h"

/* Tensor bytes are reinterpreted in place; safetensors is little-endian. */
_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
               "safetensors data is little-endian; a big-endian host needs byte swapping");
_Static_assert(sizeof(float) == 4 && sizeof(double) == 8, "IEEE float and double expected");

/* The reference implementation refuses headers over 100 MB; so do we, so a
 * hostile length cannot make us parse gigabytes of JSON. */
#define SS_ST_MAX_HEADER ((uint64_t)100000000)

static const struct {
    const char *name;
    ss_dtype dtype;
    size_t size;
} dtype_table[] = {
    {"F32", SS_DTYPE_F32, 4}, {"F16", SS_DTYPE_F16, 2}, {"BF16", SS_DTYPE_BF16, 2},
    {"F64", SS_DTYPE_F64, 8}, {"I8", SS_DTYPE_I8, 1},   {"U8", SS_DTYPE_U8, 1},
    {"I16", SS_DTYPE_I16, 2}, {"I32", SS_DTYPE_I32, 4}, {"I64", SS_DTYPE_I64, 8},
    {"BOOL", SS_DTYPE_BOOL, 1},
};
#define N_DTYPES (sizeof dtype_table / sizeof dtype_table[0])

/* dtypes the safetensors format defines that this build cannot hold: a file
 * using them is valid, so it is "unsupported" rather than "malformed". */
static const char *const other_spec_dtypes[] = {
    "U16", "U32", "U64", "F8_E4M3", "F8_E5M2", "F8_E8M0", "F6_E2M3", "F6_E3M2", "F4", "C64",
};

const char *ss_dtype_name(ss_dtype d) {
    for (size_t i = 0; i < N_DTYPES; i++)
        if (dtype_table[i].dtype == d) return dtype_table[i].name;
    return "?";
}

size_t ss_dtype_size(ss_dtype d) {
    for (size_t i = 0; i < N_DTYPES; i++)
        if (dtype_table[i].dtype == d) return dtype_table[i].size;
    return 0;
}

struct ss_safetensors {
    char *path;
    ss_mmap map;            /* only when opened from a file */
    ss_tensor_info *tensors; /* header order */
    size_t n;
    const ss_tensor_info **by_name; /* sorted by name for lookup */
    char *names;            /* storage for all tensor names */
};

static int cmp_info_name(const void *a, const void *b) {
    const ss_tensor_info *x = *(const ss_tensor_info *const *)a, *y = *(const ss_tensor_info *const *)b;
    return strcmp(x->name, y->name);
}

static const ss_tensor_info *find_sorted(const ss_tensor_info *const *v, size_t n, const char *name) {
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(v[mid]->name, name);
        if (c == 0) return v[mid];
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return NULL;
}

/* Per-tensor byte range, kept apart from ss_tensor_info during validation. */
typedef struct {
    uint64_t begin, end;
    size_t idx;
} st_range;

static int cmp_range(const void *a, const void *b) {
    const st_range *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return x->idx < y->idx ? -1 : x->idx > y->idx;
}

static ss_status check_metadata(const ss_json *md, const char *path) {
    if (md->type != SS_JSON_OBJECT)
        return ss_errorf(SS_ERR_FORMAT, "%s: header: \"__metadata__\" is not an object", path);
    for (size_t i = 0; i < md->len; i++)
        if (md->items[i].type != SS_JSON_STRING)
            return ss_errorf(SS_ERR_FORMAT, "%s: header: \"__metadata__\" value for key \"%s\" is not a string",
                             path, md->keys[i]);
    return SS_OK;
}

static ss_status parse_dtype(const ss_json *v, const char *path, const char *name, ss_dtype *dt, size_t *size) {
    if (!v) return ss_errorf(SS_ERR_FORMAT, "%s: tensor \"%s\": missing \"dtype\"", path, name);
    if (v->type != SS_JSON_STRING)
        return ss_errorf(SS_ERR_FORMAT, "%s: tensor \"%s\": \"dtype\" is not a string", path, name);
    for (size_t i = 0; i < N_DTYPES; i++)
        if (strlen(dtype_table[i].name) == v->len && strcmp(dtype_table[i].name, v->str) == 0) {
            *dt = dtype_table[i].dtype;
            *size = dtype_table[i].size;
            return SS_OK;
        }
    for (size_t i = 0; i < sizeof other_spec_dtypes / sizeof other_spec_dtypes[0]; i++)
        if (strcmp(other_spec_dtypes[i], v->str) == 0)
            return ss_errorf(SS_ERR_UNSUPPORTED, "%s: tensor \"%s\": dtype \"%s\" is not supported", path, name,
                             v->str);
    return ss_errorf(SS_ERR_FORMAT, "%s: tensor \"%s\": unknown dtype \"%.40s\"", path, name, v->str);
}

/* A non-negative integer that fits in int64 (JSON numbers like 2.0 or 1e3 are refused). */
static int json_uint(const ss_json *v, int64_t *out) {
    if (!v || v->type != SS_JSON_NUMBER || !v->is_int || v->i < 0) return 0;
    *out = v->i;
    return 1;
}

/* Validates one tensor entry and fills *t (except data); the byte range goes to *r. */
static ss_status parse_tensor(const ss_json *e, const char *path, const char *name, ss_tensor_info *t,
                              st_range *r) {
    if (e->type != SS_JSON_OBJECT)
        return ss_errorf(SS_ERR_FORMAT, "%s: tensor \"%s\": entry is not an object", path, name);
    size_t esize = 0;
    SS_TRY(parse_dtype(ss_json_get(e, "dtype"), path, name, &t->dtype, &esize));

    const ss_json *shape = ss_json_get(e, "shape");
    if (!shape) return ss_errorf(SS_ERR_FORMAT, "%s: tensor \"%s\": missing \"shape\"", path, name);
    if (shape->type != SS_JSON_ARRAY)
        return ss_errorf(SS_ERR_FORMAT, "%s: tensor \"%s\": \"shape\" is not an array", path, name);
    if (shape->len > SS_MAX_DIMS)
        return ss_errorf(SS_ERR_UNSUPPORTED, "%s: tensor \"%s\": %zu dimensions (at most %d supported)", path,
                         name, shape->len, SS_MAX_DIMS);
    t->ndim = (int)shape->len;
    size_t nbytes = esize;
    for (size_t d = 0; d < shape->len; d++) {
        if (!json_uint(&shape->items[d], &t->shape[d]))
            return ss_errorf(SS_ERR_FORMAT, "%s: tensor \"%s\": shape[%zu] is not a non-negative integer", path,
                             name, d);
        if ((uint64_t)t->shape[d] > SIZE_MAX || !ss_mul_ok(nbytes, (size_t)t->shape[d], &nbytes))
            return ss_errorf(SS_ERR_FORMAT, "%s: tensor \"%s\": byte size of shape overflows 64 bits", path,
                             name);
    }
    for (int d = t->ndim; d < SS_MAX_DIMS; d++) t->shape[d] = 0;
    t->nbytes = nbytes;

    const ss_json *off = ss_json_get(e, "data_offsets");
    if (!off) return ss_errorf(SS_ERR_FORMAT, "%s: tensor \"%s\": missing \"data_offsets\"", path, name);
    int64_t b, en;
    if (off->type != SS_JSON_ARRAY || off->len != 2 || !json_uint(&off->items[0], &b) ||
        !json_uint(&off->items[1], &en))
        return ss_errorf(SS_ERR_FORMAT,
                         "%s: tensor \"%s\": \"data_offsets\" is not [begin, end] with non-negative integers",
                         path, name);
    if (en < b)
        return ss_errorf(SS_ERR_FORMAT, "%s: tensor \"%s\": data_offsets end %lld is before begin %lld", path,
                         name, (long long)en, (long long)b);
    if ((uint64_t)(en - b) != (uint64_t)nbytes)
        return ss_errorf(SS_ERR_FORMAT,
                         "%s: tensor \"%s\": data_offsets [%lld, %lld] hold %llu bytes but dtype %s and the "
                         "shape need %zu",
                         path, name, (long long)b, (long long)en, (unsigned long long)(en - b),
                         ss_dtype_name(t->dtype), nbytes);
    r->begin = (uint64_t)b;
    r->end = (uint64_t)en;
    return SS_OK;
}

/* Every byte of the data buffer must belong to exactly one tensor, as the
 * reference implementation requires: no overlaps (two names for the same
 * bytes) and no holes (bytes nobody accounts for). */
static ss_status check_coverage(const ss_safetensors *st, st_range *rs, size_t n, uint64_t buf_len) {
    const char *path = st->path;
    for (size_t i = 0; i < n; i++)
        if (rs[i].end > buf_len)
            return ss_errorf(SS_ERR_FORMAT,
                             "%s: tensor \"%s\": data_offsets [%llu, %llu] run past the end of the %llu-byte "
                             "data buffer",
                             path, st->tensors[rs[i].idx].name, (unsigned long long)rs[i].begin,
                             (unsigned long long)rs[i].end, (unsigned long long)buf_len);
    qsort(rs, n, sizeof *rs, cmp_range);
    uint64_t pos = 0;
    const char *prev = NULL;
    for (size_t i = 0; i < n; i++) {
        const char *name = st->tensors[rs[i].idx].name;
        if (rs[i].begin < pos)
            return ss_errorf(SS_ERR_FORMAT, "%s: tensors \"%s\" and \"%s\" overlap (bytes %llu..%llu)", path,
                             prev, name, (unsigned long long)rs[i].begin, (unsigned long long)pos);
        if (rs[i].begin > pos)
            return ss_errorf(SS_ERR_FORMAT,
                             "%s: hole in the data buffer: bytes [%llu, %llu) before tensor \"%s\" belong to no "
                             "tensor",
                             path, (unsigned long long)pos, (unsigned long long)rs[i].begin, name);
        /* Empty tensors occupy no bytes, so they never end a neighbour's range. */
        if (rs[i].end > rs[i].begin || !prev) {
            pos = rs[i].end;
            prev = name;
        }
    }
    if (pos != buf_len)
        return ss_errorf(SS_ERR_FORMAT,
                         "%s: hole in the data buffer: bytes [%llu, %llu) at its end belong to no tensor", path,
                         (unsigned long long)pos, (unsigned long long)buf_len);
    return SS_OK;
}

static ss_status parse_header(ss_safetensors *st, const ss_json *root, const uint8_t *data, uint64_t buf_len) {
    const char *path = st->path;
    if (root->type != SS_JSON_OBJECT) return ss_errorf(SS_ERR_FORMAT, "%s: header is not a JSON object", path);

    size_t n = 0, names_len = 0;
    for (size_t i = 0; i < root->len; i++) {
        if (strlen(root->keys[i]) != root->key_lens[i])
            return ss_errorf(SS_ERR_FORMAT, "%s: header: a tensor name contains a NUL byte", path);
        if (strcmp(root->keys[i], "__metadata__") == 0) continue;
        n++;
        names_len += root->key_lens[i] + 1; /* bounded by the header size: cannot overflow */
    }
    st->tensors = ss_calloc(n, sizeof *st->tensors, "safetensors tensor table");
    st->by_name = ss_calloc(n, sizeof *st->by_name, "safetensors name index");
    st->names = ss_malloc(names_len, "safetensors tensor names");
    st_range *rs = ss_calloc(n, sizeof *rs, "safetensors byte ranges");
    if (!st->tensors || !st->by_name || !st->names || !rs) {
        free(rs);
        return SS_ERR_NOMEM;
    }

    ss_status s = SS_OK;
    int seen_metadata = 0;
    char *np = st->names;
    size_t k = 0;
    for (size_t i = 0; i < root->len && s == SS_OK; i++) {
        const char *key = root->keys[i];
        if (strcmp(key, "__metadata__") == 0) {
            if (seen_metadata) s = ss_errorf(SS_ERR_FORMAT, "%s: header: \"__metadata__\" appears twice", path);
            else s = check_metadata(&root->items[i], path);
            seen_metadata = 1;
            continue;
        }
        ss_tensor_info *t = &st->tensors[k];
        memcpy(np, key, root->key_lens[i] + 1);
        t->name = np;
        np += root->key_lens[i] + 1;
        t->file = st->path;
        s = parse_tensor(&root->items[i], path, t->name, t, &rs[k]);
        rs[k].idx = k;
        k++;
    }
    st->n = k;
    if (s == SS_OK) {
        /* Duplicates first: two entries of one name would otherwise be reported as an overlap. */
        for (size_t i = 0; i < n; i++) st->by_name[i] = &st->tensors[i];
        qsort(st->by_name, n, sizeof *st->by_name, cmp_info_name);
        for (size_t i = 1; i < n && s == SS_OK; i++)
            if (strcmp(st->by_name[i - 1]->name, st->by_name[i]->name) == 0)
                s = ss_errorf(SS_ERR_FORMAT, "%s: tensor \"%s\" appears twice in the header", path,
                              st->by_name[i]->name);
    }
    if (s == SS_OK) s = check_coverage(st, rs, n, buf_len);
    if (s == SS_OK)
        for (size_t i = 0; i < n; i++) /* every range was checked to lie inside the buffer */
            st->tensors[rs[i].idx].data = data + rs[i].begin;
    free(rs);
    return s;
}

ss_status ss_safetensors_parse(const uint8_t *buf, size_t size, const char *path, ss_safetensors **out) {
    *out = NULL;
    if (!path) path = "(memory)";
    if (size < 8)
        return ss_errorf(SS_ERR_FORMAT, "%s: file is %zu bytes, too short for the 8-byte header length", path,
                         size);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | buf[i];
    if (hlen > size - 8)
        return ss_errorf(SS_ERR_FORMAT, "%s: header length %llu runs past the end of the %zu-byte file "
                         "(truncated file?)", path, (unsigned long long)hlen, size);
    if (hlen > SS_ST_MAX_HEADER)
        return ss_errorf(SS_ERR_FORMAT, "%s: header length %llu exceeds the %llu-byte limit", path,
                         (unsigned long long)hlen, (unsigned long long)SS_ST_MAX_HEADER);

    ss_safetensors *st = ss_calloc(1, sizeof *st, "safetensors");
    if (!st) return SS_ERR_NOMEM;
    st->path = ss_strdup(path);
    if (!st->path) {
        free(st);
        return SS_ERR_NOMEM;
    }
    char *what = ss_strfmt("%s: header", path);
    if (!what) {
        ss_safetensors_free(st);
        return SS_ERR_NOMEM;
    }
    ss_json_doc *doc = NULL;
    ss_status s = ss_json_parse((const char *)buf + 8, (size_t)hlen, what, &doc);
    free(what);
    if (s == SS_OK) s = parse_header(st, ss_json_root(doc), buf + 8 + hlen, size - 8 - hlen);
    ss_json_free(doc);
    if (s != SS_OK) {
        ss_safetensors_free(st);
        return s;
    }
    *out = st;
    return SS_OK;
}

ss_status ss_safetensors_open(const char *path, ss_safetensors **out) {
    *out = NULL;
    ss_mmap m;
    SS_TRY(ss_mmap_open(path, &m));
    ss_safetensors *st = NULL;
    ss_status s = ss_safetensors_parse(m.data, m.size, path, &st);
    if (s != SS_OK) {
        ss_mmap_close(&m);
        return s;
    }
    st->map = m;
    *out = st;
    return SS_OK;
}

void ss_safetensors_free(ss_safetensors *st) {
    if (!st) return;
    ss_mmap_close(&st->map);
    free(st->tensors);
    free(st->by_name);
    free(st->names);
    free(st->path);
    free(st);
}

size_t ss_safetensors_count(const ss_safetensors *st) { return st ? st->n : 0; }

const ss_tensor_info *ss_safetensors_at(const ss_safetensors *st, size_t i) {
    return st && i < st->n ? &st->tensors[i] : NULL;
}

const ss_tensor_info *ss_safetensors_find(const ss_safetensors *st, const char *name) {
    return st && name ? find_sorted(st->by_name, st->n, name) : NULL;
}

/* ---- a model's weights: one file, or an index and its shards ---- */

struct ss_weights {
    ss_safetensors **shards;
    size_t n_shards;
    const ss_tensor_info **list;    /* single file: file order; index: weight_map order */
    const ss_tensor_info **by_name; /* sorted copy of list */
    size_t n;
    size_t cap;                     /* in-memory sets: room in list and by_name */
    ss_tensor_info **owned;         /* in-memory sets: tensors (and their data) we free */
};

void ss_weights_free(ss_weights *w) {
    if (!w) return;
    for (size_t i = 0; i < w->n_shards; i++) ss_safetensors_free(w->shards[i]);
    for (size_t i = 0; w->owned && i < w->n; i++) {
        free((void *)w->owned[i]->data);
        free(w->owned[i]);
    }
    free(w->owned);
    free(w->shards);
    free(w->list);
    free(w->by_name);
    free(w);
}

static ss_status weights_finish(ss_weights *w, const char *what) {
    w->by_name = ss_calloc(w->n, sizeof *w->by_name, "weights name index");
    if (!w->by_name) return SS_ERR_NOMEM;
    memcpy(w->by_name, w->list, w->n * sizeof *w->list);
    qsort(w->by_name, w->n, sizeof *w->by_name, cmp_info_name);
    for (size_t i = 1; i < w->n; i++)
        if (strcmp(w->by_name[i - 1]->name, w->by_name[i]->name) == 0)
            return ss_errorf(SS_ERR_FORMAT, "%s: tensor \"%s\" appears twice", what, w->by_name[i]->name);
    return SS_OK;
}

static ss_status weights_single(const char *path, ss_weights *w) {
    w->shards = ss_calloc(1, sizeof *w->shards, "weights shards");
    if (!w->shards) return SS_ERR_NOMEM;
    SS_TRY(ss_safetensors_open(path, &w->shards[0]));
    w->n_shards = 1;
    ss_safetensors *st = w->shards[0];
    w->list = ss_calloc(st->n, sizeof *w->list, "weights tensor list");
    if (!w->list) return SS_ERR_NOMEM;
    for (size_t i = 0; i < st->n; i++) w->list[i] = &st->tensors[i];
    w->n = st->n;
    return weights_finish(w, path);
}

/* Shards must be plain file names next to the index: a name with a
 * directory part could point anywhere on the machine. */
static int shard_name_ok(const char *s, size_t len) {
    if (len == 0 || strlen(s) != len) return 0;
    if (strcmp(s, ".") == 0 || strcmp(s, "..") == 0) return 0;
    return strchr(s, '/') == NULL && strchr(s, '\\') == NULL;
}

static int cmp_cstr(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static ss_status weights_index(const char *dir, const char *ipath, ss_weights *w) {
    char *text = NULL;
    size_t len = 0;
    SS_TRY(ss_file_read(ipath, &text, &len));
    ss_json_doc *doc = NULL;
    ss_status s = ss_json_parse(text, len, ipath, &doc);
    const char **names = NULL; /* distinct shard names, sorted */
    if (s != SS_OK) goto done;
    const ss_json *root = ss_json_root(doc);
    if (root->type != SS_JSON_OBJECT) {
        s = ss_errorf(SS_ERR_FORMAT, "%s: not a JSON object", ipath);
        goto done;
    }
    const ss_json *md = ss_json_get(root, "metadata");
    if (md && md->type != SS_JSON_OBJECT && md->type != SS_JSON_NULL) {
        s = ss_errorf(SS_ERR_FORMAT, "%s: \"metadata\" is not an object", ipath);
        goto done;
    }
    const ss_json *wm = ss_json_get(root, "weight_map");
    if (!wm || wm->type != SS_JSON_OBJECT) {
        s = ss_errorf(SS_ERR_FORMAT, "%s: %s \"weight_map\"", ipath, wm ? "non-object" : "missing");
        goto done;
    }
    size_t n = wm->len;
    names = ss_calloc(n, sizeof *names, "shard names");
    w->list = ss_calloc(n, sizeof *w->list, "weights tensor list");
    if (!names || !w->list) {
        s = SS_ERR_NOMEM;
        goto done;
    }
    for (size_t i = 0; i < n; i++) {
        const ss_json *v = &wm->items[i];
        if (strlen(wm->keys[i]) != wm->key_lens[i]) {
            s = ss_errorf(SS_ERR_FORMAT, "%s: weight_map: a tensor name contains a NUL byte", ipath);
            goto done;
        }
        if (v->type != SS_JSON_STRING) {
            s = ss_errorf(SS_ERR_FORMAT, "%s: weight_map: shard of tensor \"%s\" is not a string", ipath,
                          wm->keys[i]);
            goto done;
        }
        if (!shard_name_ok(v->str, v->len)) {
            s = ss_errorf(SS_ERR_FORMAT,
                          "%s: weight_map: tensor \"%s\": shard \"%s\" is not a plain file name in %s", ipath,
                          wm->keys[i], v->str, dir);
            goto done;
        }
        names[i] = v->str;
    }
    qsort(names, n, sizeof *names, cmp_cstr);
    size_t u = 0;
    for (size_t i = 0; i < n; i++)
        if (u == 0 || strcmp(names[u - 1], names[i]) != 0) names[u++] = names[i];
    w->shards = ss_calloc(u, sizeof *w->shards, "weights shards");
    if (!w->shards) {
        s = SS_ERR_NOMEM;
        goto done;
    }
    for (size_t i = 0; i < u; i++) {
        char *sp = ss_path_join(dir, names[i]);
        if (!sp) {
            s = SS_ERR_NOMEM;
            goto done;
        }
        s = ss_safetensors_open(sp, &w->shards[i]);
        free(sp);
        if (s != SS_OK) {
            s = ss_error_context(s, "%s: shard \"%s\"", ipath, names[i]);
            goto done;
        }
        w->n_shards++;
    }
    /* The index is the authority on which tensors exist: a tensor that a
     * shard holds but the index does not list is not visible. */
    for (size_t i = 0; i < n; i++) {
        const char *shard = wm->items[i].str;
        const char **hit = bsearch(&shard, names, u, sizeof *names, cmp_cstr);
        ss_safetensors *st = w->shards[hit - names];
        const ss_tensor_info *t = ss_safetensors_find(st, wm->keys[i]);
        if (!t) {
            s = ss_errorf(SS_ERR_FORMAT, "%s: tensor \"%s\" is mapped to shard \"%s\", but %s has no such tensor",
                          ipath, wm->keys[i], shard, st->path);
            goto done;
        }
        w->list[i] = t;
    }
    w->n = n;
    s = weights_finish(w, ipath);
done:
    free(names);
    ss_json_free(doc);
    free(text);
    return s;
}

ss_status ss_weights_open(const char *dir, ss_weights **out) {
    *out = NULL;
    char *ipath = ss_path_join(dir, "model.safetensors.index.json");
    char *spath = ss_path_join(dir, "model.safetensors");
    ss_weights *w = ss_calloc(1, sizeof *w, "weights");
    ss_status s = SS_ERR_NOMEM;
    if (ipath && spath && w) {
        /* model.safetensors first, as transformers' from_pretrained: an index
         * beside it (left behind when a sharded model was saved again
         * unsharded into the same directory) is not read. */
        if (ss_file_exists(spath)) s = weights_single(spath, w);
        else if (ss_file_exists(ipath)) s = weights_index(dir, ipath, w);
        else s = ss_errorf(SS_ERR_IO, "%s: neither model.safetensors nor model.safetensors.index.json found", dir);
    }
    free(ipath);
    free(spath);
    if (s != SS_OK) {
        ss_weights_free(w);
        return s;
    }
    *out = w;
    return SS_OK;
}

ss_status ss_weights_new(ss_weights **out) {
    *out = ss_calloc(1, sizeof **out, "weights");
    return *out ? SS_OK : SS_ERR_NOMEM;
}

ss_status ss_weights_add_f32(ss_weights *w, const char *name, int ndim, const int64_t *shape, float *data,
                             const char *file) {
    if (!w || w->n_shards || !name || !file || ndim < 0 || ndim > SS_MAX_DIMS) {
        free(data);
        return ss_errorf(SS_ERR_ARG, "weights: cannot add tensor \"%s\"", name ? name : "(null)");
    }
    size_t count, nbytes;
    ss_status s = ss_dims_product(shape, ndim, &count, name);
    if (s == SS_OK && !ss_mul_ok(count, sizeof(float), &nbytes)) s = ss_errorf(SS_ERR_ARG, "%s: tensor too large", name);
    /* Sorted insertion point; a name already present is refused. */
    size_t lo = 0, hi = w->n;
    while (s == SS_OK && lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(w->by_name[mid]->name, name);
        if (c == 0) s = ss_errorf(SS_ERR_FORMAT, "%s: tensor \"%s\" appears twice", file, name);
        else if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    if (s == SS_OK && w->n == w->cap) {
        size_t ncap = w->cap ? 2 * w->cap : 64;
        const ss_tensor_info **nl = ss_realloc(w->list, ncap * sizeof *nl, "weights tensor list");
        if (nl) w->list = nl;
        const ss_tensor_info **nb = nl ? ss_realloc(w->by_name, ncap * sizeof *nb, "weights name index") : NULL;
        if (nb) w->by_name = nb;
        ss_tensor_info **no = nb ? ss_realloc(w->owned, ncap * sizeof *no, "weights tensors") : NULL;
        if (no) w->owned = no;
        if (no) w->cap = ncap;
        else s = SS_ERR_NOMEM;
    }
    size_t name_len = strlen(name) + 1, file_len = strlen(file) + 1;
    ss_tensor_info *t = s == SS_OK ? ss_calloc(1, sizeof *t + name_len + file_len, "weights tensor") : NULL;
    if (s == SS_OK && !t) s = SS_ERR_NOMEM;
    if (s != SS_OK) {
        free(data);
        return s;
    }
    char *np = (char *)(t + 1);
    memcpy(np, name, name_len);
    memcpy(np + name_len, file, file_len);
    t->name = np;
    t->file = np + name_len;
    t->dtype = SS_DTYPE_F32;
    t->ndim = ndim;
    for (int d = 0; d < ndim; d++) t->shape[d] = shape[d];
    t->nbytes = nbytes;
    t->data = data;
    memmove(w->by_name + lo + 1, w->by_name + lo, (w->n - lo) * sizeof *w->by_name);
    w->by_name[lo] = t;
    w->list[w->n] = t;
    w->owned[w->n] = t;
    w->n++;
    return SS_OK;
}

void ss_weights_release(ss_weights *w, const char *name) {
    if (!w || !w->owned) return;
    for (size_t i = 0; i < w->n; i++)
        if (!strcmp(w->owned[i]->name, name)) {
            free((void *)w->owned[i]->data);
            w->owned[i]->data = NULL;
            w->owned[i]->nbytes = 0;
            return;
        }
}

void ss_weights_drop_pages(const ss_weights *w, const void *data, size_t n) {
    if (!w || w->owned || !data) return;
    for (size_t i = 0; i < w->n_shards; i++) ss_mmap_drop(&w->shards[i]->map, data, n); /* only the shard holding it */
}

void ss_weights_prefetch(const ss_weights *w, const void *data, size_t n) {
    if (!w || w->owned || !data) return;
    for (size_t i = 0; i < w->n_shards; i++) ss_mmap_prefetch(&w->shards[i]->map, data, n);
}

size_t ss_weights_count(const ss_weights *w) { return w ? w->n : 0; }

const ss_tensor_info *ss_weights_at(const ss_weights *w, size_t i) { return w && i < w->n ? w->list[i] : NULL; }

const ss_tensor_info *ss_weights_find(const ss_weights *w, const char *name) {
    return w && name ? find_sorted(w->by_name, w->n, name) : NULL;
}

/* ---- conversion ---- */

/* The index of the first of n elements whose exponent bits (exp) are all set
 * (NaN or infinity), or n. A whole block is ORed first, with a constant count
 * so that the loop vectorises (one function per width); only a block that
 * has one, or the last partial block, is searched element by element. memcpy
 * per element: the data may be unaligned inside the mapping. */
#define NF_BLOCK 4096
#define NONFINITE_SCAN(fn, T)                                                   \
    static size_t fn(const unsigned char *p, size_t n, T exp) {                 \
        for (size_t b = 0; b < n; b += NF_BLOCK) {                              \
            const size_t e = n - b < NF_BLOCK ? n : b + NF_BLOCK;               \
            T any = 0;                                                          \
            if (e - b == NF_BLOCK) { /* a constant count: no scalar tail */     \
                const unsigned char *q = p + sizeof(T) * b;                     \
                for (size_t i = 0; i < NF_BLOCK; i++) {                         \
                    T u;                                                        \
                    memcpy(&u, q + sizeof(T) * i, sizeof(T));                  \
                    any |= (T)((u & exp) == exp);                               \
                }                                                               \
            } else {                                                            \
                any = 1;                                                        \
            }                                                                   \
            for (size_t i = b; any && i < e; i++) {                             \
                T u;                                                            \
                memcpy(&u, p + sizeof(T) * i, sizeof(T));                      \
                if ((u & exp) == exp) return i;                                 \
            }                                                                   \
        }                                                                       \
        return n;                                                               \
    }
NONFINITE_SCAN(nonfinite16, uint16_t)
NONFINITE_SCAN(nonfinite32, uint32_t)
#undef NONFINITE_SCAN

const char *ss_tensor_nonfinite(const ss_tensor_info *t, size_t *at) {
    size_t n = 0, bytes = 0;
    *at = 0;
    if (!t->data || ss_dims_product(t->shape, t->ndim, &n, t->name) != SS_OK ||
        !ss_mul_ok(n, ss_dtype_size(t->dtype), &bytes) || bytes > t->nbytes)
        return NULL;
    const unsigned char *p = t->data;
    size_t i = n;
    switch (t->dtype) {
    case SS_DTYPE_F32: i = nonfinite32(p, n, 0x7f800000u); break;
    case SS_DTYPE_F16: i = nonfinite16(p, n, 0x7c00u); break;
    case SS_DTYPE_BF16: i = nonfinite16(p, n, 0x7f80u); break;
    case SS_DTYPE_F64:
        /* finite, but past float32's largest value, would be an infinity once converted */
        for (size_t k = 0; k < n; k++) {
            double v;
            memcpy(&v, p + 8 * k, 8);
            if (!(fabs(v) <= FLT_MAX)) {
                *at = k;
                return isnan(v) ? "NaN" : isinf(v) ? "an infinity" : "a value beyond float32's range";
            }
        }
        return NULL;
    default: return NULL;
    }
    if (i == n) return NULL;
    *at = i;
    uint32_t u32 = 0;
    uint16_t u16 = 0;
    if (t->dtype == SS_DTYPE_F32) memcpy(&u32, p + 4 * i, 4);
    else memcpy(&u16, p + 2 * i, 2);
    const uint32_t mant = t->dtype == SS_DTYPE_F32 ? u32 & 0x7fffffu : u16 & (t->dtype == SS_DTYPE_F16 ? 0x3ffu : 0x7fu);
    return mant ? "NaN" : "an infinity";
}

ss_status ss_tensor_to_f32(const ss_tensor_info *t, float *dst, size_t n) {
    return ss_tensor_to_f32_range(t, n, 0, n, dst);
}

ss_status ss_tensor_to_f32_range(const ss_tensor_info *t, size_t n, size_t first, size_t len, float *dst) {
    size_t es = ss_dtype_size(t->dtype);
    if (es == 0) return ss_errorf(SS_ERR_INTERNAL, "%s: tensor \"%s\": invalid dtype", t->file, t->name);
    size_t count = 0;
    ss_status s = ss_dims_product(t->shape, t->ndim, &count, t->name);
    if (s != SS_OK) return ss_error_context(s, "%s", t->file);
    size_t nbytes;
    if (!ss_mul_ok(count, es, &nbytes) || nbytes != t->nbytes)
        return ss_errorf(SS_ERR_INTERNAL, "%s: tensor \"%s\": shape and byte size disagree", t->file, t->name);
    if (count != n)
        return ss_errorf(SS_ERR_ARG, "%s: tensor \"%s\" has %zu elements, expected %zu", t->file, t->name, count,
                         n);
    if (first > n || len > n - first)
        return ss_errorf(SS_ERR_INTERNAL, "%s: tensor \"%s\": elements %zu..%zu of %zu", t->file, t->name, first,
                         first + len, n);
    const unsigned char *p = (const unsigned char *)t->data + first * es;
    /* memcpy per element: the data may be unaligned inside the mapping. */
    switch (t->dtype) {
    case SS_DTYPE_F32:
        if (len) memcpy(dst, p, len * 4);
        return SS_OK;
    case SS_DTYPE_F16:
        for (size_t i = 0; i < len; i++) {
            uint16_t h;
            memcpy(&h, p + 2 * i, 2);
            dst[i] = ss_f16_to_f32(h);
        }
        return SS_OK;
    case SS_DTYPE_BF16:
        for (size_t i = 0; i < len; i++) {
            uint16_t h;
            memcpy(&h, p + 2 * i, 2);
            dst[i] = ss_bf16_to_f32(h);
        }
        return SS_OK;
    case SS_DTYPE_F64:
        for (size_t i = 0; i < len; i++) {
            double d;
            memcpy(&d, p + 8 * i, 8);
            dst[i] = (float)d;
        }
        return SS_OK;
    default:
        return ss_errorf(SS_ERR_UNSUPPORTED, "%s: tensor \"%s\": dtype %s does not convert to f32", t->file,
                         t->name, ss_dtype_name(t->dtype));
    }
}
