/* safetensors files (single or sharded through model.safetensors.index.json),
 * memory-mapped and validated before any tensor is used: header length,
 * JSON, dtypes, shapes, byte ranges inside the file, no overlaps. */
#ifndef SUBSCOPE_SAFETENSORS_H
#define SUBSCOPE_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>
#include "subscope/error.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum ss_dtype {
    SS_DTYPE_F32, SS_DTYPE_F16, SS_DTYPE_BF16, SS_DTYPE_F64,
    SS_DTYPE_I8, SS_DTYPE_U8, SS_DTYPE_I16, SS_DTYPE_I32, SS_DTYPE_I64, SS_DTYPE_BOOL
} ss_dtype;

const char *ss_dtype_name(ss_dtype d);
size_t ss_dtype_size(ss_dtype d);

#define SS_MAX_DIMS 8

typedef struct ss_tensor_info {
    const char *name;
    ss_dtype dtype;
    int ndim;
    int64_t shape[SS_MAX_DIMS];
    size_t nbytes;
    const void *data;     /* inside the mapping (may be unaligned) */
    const char *file;     /* path of the file that holds it */
} ss_tensor_info;

typedef struct ss_safetensors ss_safetensors;

/* Parses and validates a header from memory: buf is the whole file (size
 * bytes); path is used in messages. Used by ss_safetensors_open and the fuzzer. */
ss_status ss_safetensors_parse(const uint8_t *buf, size_t size, const char *path, ss_safetensors **out);
/* Maps and validates one .safetensors file. */
ss_status ss_safetensors_open(const char *path, ss_safetensors **out);
void ss_safetensors_free(ss_safetensors *st);
size_t ss_safetensors_count(const ss_safetensors *st);
const ss_tensor_info *ss_safetensors_at(const ss_safetensors *st, size_t i);
const ss_tensor_info *ss_safetensors_find(const ss_safetensors *st, const char *name);

/* A model's weights: one file or an index with shards, looked up by name. */
typedef struct ss_weights ss_weights;
/* dir holds model.safetensors or model.safetensors.index.json (+ shards). */
ss_status ss_weights_open(const char *dir, ss_weights **out);
void ss_weights_free(ss_weights *w);
size_t ss_weights_count(const ss_weights *w);
const ss_tensor_info *ss_weights_at(const ss_weights *w, size_t i);
const ss_tensor_info *ss_weights_find(const ss_weights *w, const char *name);
/* An empty in-memory set of weights, filled with ss_weights_add_f32 (a model
 * converted from another format, e.g. GGUF). */
ss_status ss_weights_new(ss_weights **out);
/* Adds an F32 tensor of the given shape; takes ownership of data (malloc'd; it
 * is freed by ss_weights_free, or at once if adding fails: a duplicate name or
 * a bad shape). file names the tensor's source in messages. */
ss_status ss_weights_add_f32(ss_weights *w, const char *name, int ndim, const int64_t *shape, float *data,
                             const char *file);
/* In-memory sets: frees the data of tensor `name` once a copy of it is all the
 * model uses (e.g. stacked with others); the tensor stays listed, with no
 * data. A no-op for tensors of files (they are mapped, not held). */
void ss_weights_release(ss_weights *w, const char *name);
/* Drops the whole pages of bytes [data, data + n) of w's files from
 * resident memory (ss_mmap_drop) once they have been copied where they are
 * used; they are read again if touched. A no-op for bytes outside the files
 * (in-memory sets, buffers of the caller). */
void ss_weights_drop_pages(const ss_weights *w, const void *data, size_t n);
/* Starts reading the pages of bytes [data, data + n) of w's files in the
 * background (ss_mmap_prefetch), for a tensor about to be copied; a no-op
 * outside the files. */
void ss_weights_prefetch(const ss_weights *w, const void *data, size_t n);
/* Copies a tensor into fp32 (converting F16/BF16/F64), after checking that its
 * element count equals n. dst must hold n floats. */
ss_status ss_tensor_to_f32(const ss_tensor_info *t, float *dst, size_t n);
/* The same for elements [first, first + len) of a tensor of n elements. */
ss_status ss_tensor_to_f32_range(const ss_tensor_info *t, size_t n, size_t first, size_t len, float *dst);
/* Whether a float tensor (F32, F16, BF16, F64) holds a NaN or an infinity
 * (for F64, also a finite value beyond float32's range): NULL when it holds
 * none (or is not a float type), else what the first one is, "NaN" or
 * "an infinity", with its element index (row-major) in *at. */
const char *ss_tensor_nonfinite(const ss_tensor_info *t, size_t *at);

#ifdef __cplusplus
}
#endif
#endif
