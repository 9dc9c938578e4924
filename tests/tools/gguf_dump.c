/* gguf_dump: prints a GGUF file's header, metadata and tensor table, or the
 * first values of one tensor dequantised to fp32.
 *
 *   gguf_dump FILE.gguf [--all]             metadata (arrays: first 8 items, or all
 *                                           with --all) and the tensor table
 *   gguf_dump FILE.gguf --tensor NAME [--count N]
 *                                           the first N (default 16) values of NAME,
 *                                           in row-major order, one per line (%.9g)
 *
 * Exit 0 on success, 1 on an error (the library's message on stderr), 2 on
 * bad usage. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "subscope/gguf.h"
#include "subscope/util.h"

static size_t max_items = 8;

static void print_str(const ss_gguf_str *s) {
    putchar('"');
    for (size_t i = 0; i < s->len; i++) {
        unsigned char c = (unsigned char)s->s[i];
        if (c == '"' || c == '\\') printf("\\%c", c);
        else if (c < 0x20 || c == 0x7f) printf("\\x%02x", c);
        else putchar(c);
    }
    putchar('"');
}

static void print_value(const ss_gguf_value *v) {
    switch (v->type) {
    case SS_GGUF_UINT8: case SS_GGUF_UINT16: case SS_GGUF_UINT32: case SS_GGUF_UINT64:
        printf("%" PRIu64, v->u);
        break;
    case SS_GGUF_INT8: case SS_GGUF_INT16: case SS_GGUF_INT32: case SS_GGUF_INT64:
        printf("%" PRId64, v->i);
        break;
    case SS_GGUF_FLOAT32:
        printf("%.9g", v->f);
        break;
    case SS_GGUF_FLOAT64:
        printf("%.17g", v->f);
        break;
    case SS_GGUF_BOOL:
        printf("%s", v->u ? "true" : "false");
        break;
    case SS_GGUF_STRING:
        print_str(&v->str);
        break;
    case SS_GGUF_ARRAY: {
        printf("[");
        uint64_t shown = v->count < max_items ? v->count : max_items;
        for (uint64_t i = 0; i < shown; i++) {
            ss_gguf_value e;
            ss_gguf_array_get(v, i, &e);
            if (i) printf(", ");
            print_value(&e);
        }
        if (shown < v->count) printf(", ... (%" PRIu64 " more)", v->count - shown);
        printf("]");
        break;
    }
    }
}

static void type_label(const ss_gguf_value *v, char *buf, size_t n) {
    if (v->type == SS_GGUF_ARRAY) {
        char inner[64] = "?";
        if (v->elem_type == SS_GGUF_ARRAY && v->count) {
            ss_gguf_value e;
            ss_gguf_array_get(v, 0, &e);
            type_label(&e, inner, sizeof inner);
        } else {
            snprintf(inner, sizeof inner, "%s", ss_gguf_type_name(v->elem_type));
        }
        snprintf(buf, n, "ARRAY[%" PRIu64 "] of %s", v->count, inner);
    } else {
        snprintf(buf, n, "%s", ss_gguf_type_name(v->type));
    }
}

static int dump_tensor(const ss_gguf *g, const char *name, size_t count) {
    const ss_gguf_tensor *t = ss_gguf_find_tensor(g, name);
    if (!t) {
        fprintf(stderr, "gguf_dump: %s: no tensor named \"%s\"\n", ss_gguf_path(g), name);
        return 1;
    }
    /* Whole rows only: a quantised row cannot be decoded in part. */
    size_t row = (size_t)t->ne[0], rows_total = row ? t->n_elements / row : 0;
    size_t rows = row ? (count + row - 1) / row : 0;
    if (rows > rows_total) rows = rows_total;
    size_t n = rows * row;
    float *buf = malloc((n ? n : 1) * sizeof *buf);
    if (!buf) return 1;
    if (ss_gguf_rows_to_f32(g, t, 0, rows, buf) != SS_OK) {
        fprintf(stderr, "gguf_dump: %s\n", ss_last_error());
        free(buf);
        return 1;
    }
    if (count > n) count = n;
    for (size_t i = 0; i < count; i++) printf("%.9g\n", buf[i]);
    free(buf);
    return 0;
}

int main(int argc, char **argv) {
    const char *path = NULL, *tensor = NULL;
    size_t count = 16;
    static const char usage[] = "usage: gguf_dump FILE.gguf [--all] [--tensor NAME [--count N]]\n";
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            fputs(usage, stdout);
            return 0;
        } else if (!strcmp(argv[i], "--tensor") && i + 1 < argc) tensor = argv[++i];
        else if (!strcmp(argv[i], "--count") && i + 1 < argc) {
            errno = 0;
            int64_t c = 0;
            count = ss_parse_int(argv[++i], &c) && c > 0 ? (size_t)c : 0; /* digits only */
            if (count == 0) {
                fprintf(stderr, "gguf_dump: --count needs a positive integer, got '%s'\n", argv[i]);
                return 2;
            }
        } else if (!strcmp(argv[i], "--all")) max_items = SIZE_MAX;
        else if (argv[i][0] != '-' && !path) path = argv[i];
        else {
            if (argv[i][0] == '-' && strcmp(argv[i], "--tensor") && strcmp(argv[i], "--count"))
                fprintf(stderr, "gguf_dump: unknown option %s\n", argv[i]);
            fputs(usage, stderr);
            return 2;
        }
    }
    if (!path) {
        fputs(usage, stderr);
        return 2;
    }
    ss_gguf *g;
    if (ss_gguf_open(path, &g) != SS_OK) {
        fprintf(stderr, "gguf_dump: %s\n", ss_last_error());
        return 1;
    }
    int rc = 0;
    if (tensor) {
        rc = dump_tensor(g, tensor, count);
    } else {
        printf("GGUF version %u, %zu metadata keys, %zu tensors, alignment %" PRIu64 ", data at byte %" PRIu64 "\n",
               ss_gguf_version(g), ss_gguf_kv_count(g), ss_gguf_tensor_count(g), ss_gguf_alignment(g),
               ss_gguf_data_offset(g));
        printf("\nmetadata:\n");
        for (size_t i = 0; i < ss_gguf_kv_count(g); i++) {
            const ss_gguf_kv *kv = ss_gguf_kv_at(g, i);
            char label[160];
            type_label(&kv->value, label, sizeof label);
            printf("  %s (%s) = ", kv->key, label);
            print_value(&kv->value);
            printf("\n");
        }
        printf("\ntensors:\n");
        printf("  %-32s %-6s %-24s %12s %10s\n", "name", "type", "shape (row-major)", "offset", "bytes");
        for (size_t i = 0; i < ss_gguf_tensor_count(g); i++) {
            const ss_gguf_tensor *t = ss_gguf_tensor_at(g, i);
            char shape[96] = "[";
            for (int d = 0; d < t->n_dims; d++) {
                size_t l = strlen(shape);
                snprintf(shape + l, sizeof shape - l, "%s%" PRId64, d ? ", " : "", t->shape[d]);
            }
            strncat(shape, "]", sizeof shape - strlen(shape) - 1);
            const char *tn = ss_ggml_type_name(t->type);
            printf("  %-32s %-6s %-24s %12" PRIu64 " %10zu%s\n", t->name, tn ? tn : "?", shape, t->offset, t->nbytes,
                   ss_ggml_type_supported(t->type) ? "" : "  (not convertible)");
        }
    }
    ss_gguf_free(g);
    return rc;
}
