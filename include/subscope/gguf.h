/* GGUF files (llama.cpp / ggml), versions 2 and 3, little-endian:
 * memory-mapped and validated before anything is handed out — every count,
 * length and offset read from the file is checked against the file size
 * (overflow-safe), every metadata value is parsed, every tensor's byte range
 * lies inside the data section. Tensors dequantise to fp32 from F32, F16,
 * BF16, F64, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1 and the K-quants Q2_K, Q3_K, Q4_K,
 * Q5_K, Q6_K, Q8_K; other ggml types (Q8_1, the IQ and TQ families, MXFP4,
 * the integer types) are recognised (the file opens) but refused by name on
 * conversion. docs/GGUF.md has the details. */
#ifndef SUBSCOPE_GGUF_H
#define SUBSCOPE_GGUF_H

#include <stddef.h>
#include <stdint.h>
#include "subscope/error.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Metadata value types, numbered as in the GGUF specification. */
typedef enum ss_gguf_type {
    SS_GGUF_UINT8 = 0,
    SS_GGUF_INT8 = 1,
    SS_GGUF_UINT16 = 2,
    SS_GGUF_INT16 = 3,
    SS_GGUF_UINT32 = 4,
    SS_GGUF_INT32 = 5,
    SS_GGUF_FLOAT32 = 6,
    SS_GGUF_BOOL = 7,
    SS_GGUF_STRING = 8,
    SS_GGUF_ARRAY = 9,
    SS_GGUF_UINT64 = 10,
    SS_GGUF_INT64 = 11,
    SS_GGUF_FLOAT64 = 12
} ss_gguf_type;
const char *ss_gguf_type_name(ss_gguf_type t); /* "UINT8", ..., "?" */

/* ggml tensor types used by the dequantiser (ggml's numbering). */
enum {
    SS_GGML_F32 = 0,
    SS_GGML_F16 = 1,
    SS_GGML_Q4_0 = 2,
    SS_GGML_Q4_1 = 3,
    SS_GGML_Q5_0 = 6,
    SS_GGML_Q5_1 = 7,
    SS_GGML_Q8_0 = 8,
    SS_GGML_Q2_K = 10,
    SS_GGML_Q3_K = 11,
    SS_GGML_Q4_K = 12,
    SS_GGML_Q5_K = 13,
    SS_GGML_Q6_K = 14,
    SS_GGML_Q8_K = 15,
    SS_GGML_F64 = 28,
    SS_GGML_BF16 = 30
};
/* Name of a ggml type ("Q4_K"), or NULL for a number ggml does not define. */
const char *ss_ggml_type_name(uint32_t type);
/* 1 if ss_gguf_tensor_to_f32 converts this type. */
int ss_ggml_type_supported(uint32_t type);

/* A string from the file: s is a NUL-terminated copy owned by the ss_gguf;
 * len is its length in bytes (GGUF strings may contain NUL bytes). */
typedef struct ss_gguf_str {
    const char *s;
    size_t len;
} ss_gguf_str;

typedef struct ss_gguf_value ss_gguf_value;
struct ss_gguf_value {
    ss_gguf_type type;
    /* Scalars, widened: UINT* and BOOL in u, INT* in i, FLOAT* in f
     * (FLOAT32 converted exactly), STRING in str. */
    uint64_t u;
    int64_t i;
    double f;
    ss_gguf_str str;
    /* ARRAY: elem_type, count and elems:
     *   fixed-size scalars: the raw little-endian elements inside the mapping
     *     (possibly unaligned; read them with ss_gguf_array_get);
     *   STRING: const ss_gguf_str[count];  ARRAY: const ss_gguf_value[count]. */
    ss_gguf_type elem_type;
    uint64_t count;
    const void *elems;
};

typedef struct ss_gguf_kv {
    const char *key;
    ss_gguf_value value;
} ss_gguf_kv;

#define SS_GGUF_MAX_DIMS 4

typedef struct ss_gguf_tensor {
    const char *name;
    uint32_t type;                  /* ggml type */
    int n_dims;
    int64_t ne[SS_GGUF_MAX_DIMS];   /* ggml order: ne[0] varies fastest; unused dims are 1 */
    int64_t shape[SS_GGUF_MAX_DIMS]; /* row-major order (ne reversed), as numpy/safetensors see it */
    uint64_t offset;                /* from the start of the data section */
    size_t n_elements;
    size_t nbytes;
    const void *data;               /* inside the mapping */
} ss_gguf_tensor;

typedef struct ss_gguf ss_gguf;

/* Parses a whole GGUF file held in memory (buf stays owned by the caller and
 * must outlive the result); path is used in messages. */
ss_status ss_gguf_parse(const uint8_t *buf, size_t size, const char *path, ss_gguf **out);
/* Maps and validates path. On failure *out is NULL and the message names the file. */
ss_status ss_gguf_open(const char *path, ss_gguf **out);
void ss_gguf_free(ss_gguf *g);

const char *ss_gguf_path(const ss_gguf *g);
uint32_t ss_gguf_version(const ss_gguf *g);
uint64_t ss_gguf_alignment(const ss_gguf *g);
/* Byte offset of the data section in the file. */
uint64_t ss_gguf_data_offset(const ss_gguf *g);

/* Metadata, in file order. */
size_t ss_gguf_kv_count(const ss_gguf *g);
const ss_gguf_kv *ss_gguf_kv_at(const ss_gguf *g, size_t i);
/* NULL if the key is absent. */
const ss_gguf_value *ss_gguf_find(const ss_gguf *g, const char *key);

/* Typed lookups: SS_ERR_FORMAT naming the file and key if the key is missing,
 * has another type, or (ints) does not fit. */
ss_status ss_gguf_get_str(const ss_gguf *g, const char *key, const ss_gguf_str **out);
/* Any integer type; a UINT64 above INT64_MAX is refused. */
ss_status ss_gguf_get_int(const ss_gguf *g, const char *key, int64_t *out);
/* FLOAT32 or FLOAT64. */
ss_status ss_gguf_get_float(const ss_gguf *g, const char *key, double *out);
ss_status ss_gguf_get_bool(const ss_gguf *g, const char *key, int *out);
/* An array of strings (tokenizer.ggml.tokens, tokenizer.ggml.merges). */
ss_status ss_gguf_get_strings(const ss_gguf *g, const char *key, const ss_gguf_str **strs, size_t *n);
/* An array of any element type. */
ss_status ss_gguf_get_array(const ss_gguf *g, const char *key, const ss_gguf_value **out);
/* Element i of an array as a scalar value (same widening as above); 0 if
 * arr is not an array or i is out of range. */
int ss_gguf_array_get(const ss_gguf_value *arr, uint64_t i, ss_gguf_value *out);

/* Tensors, in file order, and by name (NULL if absent). */
size_t ss_gguf_tensor_count(const ss_gguf *g);
const ss_gguf_tensor *ss_gguf_tensor_at(const ss_gguf *g, size_t i);
const ss_gguf_tensor *ss_gguf_find_tensor(const ss_gguf *g, const char *name);

/* Dequantises the whole tensor into out (t->n_elements floats), in row-major
 * order of t->shape. Unsupported types give SS_ERR_UNSUPPORTED naming the type. */
ss_status ss_gguf_tensor_to_f32(const ss_gguf *g, const ss_gguf_tensor *t, float *out);
/* Rows [row0, row0+nrows) only, where a row is ne[0] elements (an embedding
 * row, a weight matrix row); out holds nrows*ne[0] floats. */
ss_status ss_gguf_rows_to_f32(const ss_gguf *g, const ss_gguf_tensor *t, size_t row0, size_t nrows, float *out);

#ifdef __cplusplus
}
#endif
#endif
