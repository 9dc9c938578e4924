/* HDF5 output (and the reading side used by jobs, tools and tests).
 *
 * This module is the only code in subscope that talks to HDF5.  Files are
 * written to "<final_path>.tmp.<host>.<pid>" in the same directory and renamed
 * over final_path only by ss_h5_commit, so a crash or kill never leaves a file
 * at final_path that looks complete. A final_path that is a symbolic link is
 * written through: the temporary goes beside the file it names, which the
 * rename replaces, and the link stays (ss_out_target).
 *
 * Datasets are chunked, shuffled and deflated, use explicit little-endian
 * file types, are filled with NaN (floats) or -1 (integers) where never
 * written, and carry shared dimension scales so that xarray / netCDF tools
 * label their axes.  Object paths use "/" only as a group separator; dataset
 * names may contain dots ("/acts/blocks.0.attn.hook_pattern").
 *
 * Every failure returns an ss_status with a message naming the file and the
 * object and, for HDF5 failures, HDF5's own innermost error description.
 *
 * HDF5 (serial build) is not thread-safe: call this module from one thread
 * at a time.  Datasets carry no netCDF _FillValue attribute on purpose:
 * xarray would mask the integer fill -1 and turn token ids into floats;
 * float padding is NaN, which every reader already shows as missing. */
#ifndef SUBSCOPE_H5OUT_H
#define SUBSCOPE_H5OUT_H

#include <stddef.h>
#include <stdint.h>

#include "subscope/error.h"
#include "subscope/util.h"

#ifdef __cplusplus
extern "C" {
#endif

#define SS_H5_MAX_DIMS 32 /* HDF5's own rank limit */

typedef enum ss_h5_type {
    SS_H5_F32 = 0,
    SS_H5_F64,
    SS_H5_I32,
    SS_H5_I64,
    SS_H5_U8,
    SS_H5_NTYPES
} ss_h5_type;

/* Bytes per element of t (0 for an invalid type) and its name ("f32", ...). */
size_t ss_h5_type_size(ss_h5_type t);
const char *ss_h5_type_name(ss_h5_type t);

/* ---------------------------------------------------------------- writing */

typedef struct ss_h5 ss_h5;
typedef struct ss_h5_dset ss_h5_dset;

/* Creates the temporary file next to final_path.  *out is NULL on failure. */
ss_status ss_h5_create(const char *final_path, ss_h5 **out);
/* Closes every object (datasets still open are closed and detached: their
 * handles may only be passed to ss_h5_dset_close afterwards), flushes, syncs
 * and renames the temporary file over final_path.  Frees h in all cases; on
 * failure the temporary file is removed and final_path is left untouched. */
ss_status ss_h5_commit(ss_h5 *h);
/* ss_h5_commit for a job that puts more files in place after this one: the signals are held
 * (ss_signals_hold) from just before the rename, after the sync, and stay held on return,
 * whatever the result, until the caller's ss_signals_release after its last file. With r, the
 * rename is r's (ss_replace_file): the earlier file is kept, for ss_replace_undo to put back
 * should a later file fail to go into place (ss_replace_done once all have). */
ss_status ss_h5_commit_held(ss_h5 *h, ss_signals_held *held, ss_replace *r);
/* Closes everything, removes the temporary file, frees h.  NULL is a no-op. */
void ss_h5_abort(ss_h5 *h);

const char *ss_h5_final_path(const ss_h5 *h);
const char *ss_h5_tmp_path(const ss_h5 *h);

/* Deflate level (0..9) for datasets created from now on; 0 disables both
 * deflate and shuffle.  Default 4. */
ss_status ss_h5_set_deflate(ss_h5 *h, int level);

/* Creates group path and any missing parents ("/" is always there). */
ss_status ss_h5_group_create(ss_h5 *h, const char *path);

/* Per-dataset options; zero-initialise, then set what you need. */
typedef struct ss_h5_dset_opts {
    int64_t chunk[SS_H5_MAX_DIMS]; /* all zero: chosen by ss_h5_choose_chunk */
    int deflate;                   /* 0: file default; 1..9 level; -1: no filters */
    int fill_set;                  /* 1: use fill_f64 / fill_i64 below */
    double fill_f64;               /* for float datasets (default NaN) */
    int64_t fill_i64;              /* for integer datasets (default -1; U8: 255) */
} ss_h5_dset_opts;

/* Creates dataset `path` (with missing parent groups).  dims[i] >= 0; ndim 0
 * makes a scalar.  dim_names may be NULL, or hold NULL entries for unlabelled
 * axes; each name becomes (or reuses) the root dimension scale "/<name>", an
 * int64 0..size-1 dataset.  A name reused with another size is an
 * SS_ERR_INTERNAL error naming both datasets. */
ss_status ss_h5_dset_create(ss_h5 *h, const char *path, ss_h5_type type, int ndim,
                            const int64_t *dims, const char *const *dim_names,
                            ss_h5_dset **out);
ss_status ss_h5_dset_create_opts(ss_h5 *h, const char *path, ss_h5_type type, int ndim,
                                 const int64_t *dims, const char *const *dim_names,
                                 const ss_h5_dset_opts *opts, ss_h5_dset **out);
/* Writes the hyperslab [start, start+count) from a contiguous C-order buffer
 * of the dataset's type.  start/count may be NULL for a scalar dataset. */
ss_status ss_h5_dset_write(ss_h5_dset *d, const int64_t *start, const int64_t *count,
                           const void *buf);
/* ss_h5_dset_write for rows of different lengths (prompts of different
 * numbers of tokens): item i of count[0] along axis 0 is written only for its
 * first lens[i] (0..count[1]) entries along axis 1, all of count[2..] beyond;
 * buf holds just those, item after item in C order. What is not written keeps
 * the dataset's fill value (NaN for floats). lens NULL: ss_h5_dset_write. */
ss_status ss_h5_dset_write_rows(ss_h5_dset *d, const int64_t *start, const int64_t *count, const int64_t *lens,
                                const void *buf);
/* The same for squares (prompts' attention patterns, [N, H, T, T]): item i
 * is written only for its first lens[i] (0..count[ndim-2], 0..count[ndim-1])
 * entries along each of the last two axes, all of count[1..ndim-3] between;
 * buf holds item after item [count[1..ndim-3], lens[i], lens[i]] in C order.
 * lens NULL: ss_h5_dset_write. */
ss_status ss_h5_dset_write_squares(ss_h5_dset *d, const int64_t *start, const int64_t *count, const int64_t *lens,
                                   const void *buf);
/* Closes the dataset (errors are reported, the handle is freed regardless). */
ss_status ss_h5_dset_close(ss_h5_dset *d);
const char *ss_h5_dset_path(const ss_h5_dset *d);
/* The dataset's number of axes (0: a scalar; -1: d NULL). */
int ss_h5_dset_ndim(const ss_h5_dset *d);

/* create + write everything + close. */
ss_status ss_h5_write_array(ss_h5 *h, const char *path, ss_h5_type type, int ndim,
                            const int64_t *dims, const char *const *dim_names,
                            const void *data);

/* Attributes on an existing object ("/" is the root); an existing attribute
 * of the same name is replaced.  Strings are scalar variable-length UTF-8. */
ss_status ss_h5_attr_str(ss_h5 *h, const char *obj_path, const char *name, const char *value);
ss_status ss_h5_attr_i64(ss_h5 *h, const char *obj_path, const char *name, int64_t value);
ss_status ss_h5_attr_f64(ss_h5 *h, const char *obj_path, const char *name, double value);
ss_status ss_h5_attr_i64_array(ss_h5 *h, const char *obj_path, const char *name,
                               const int64_t *values, size_t n);
ss_status ss_h5_attr_f64_array(ss_h5 *h, const char *obj_path, const char *name,
                               const double *values, size_t n);

/* Chunk shape used when opts->chunk is zero: whole innermost rows, about
 * 1 MiB per chunk, never larger than dims, at least 1 per axis.  Returns 0
 * when the dataset should not be chunked (scalar or an empty axis). */
int ss_h5_choose_chunk(int ndim, const int64_t *dims, size_t elem_size, int64_t *chunk);

/* ---------------------------------------------------------------- reading */

typedef struct ss_h5_reader ss_h5_reader;

typedef enum ss_h5_class {
    SS_H5_CLASS_INT,
    SS_H5_CLASS_FLOAT,
    SS_H5_CLASS_STRING,
    SS_H5_CLASS_OTHER
} ss_h5_class;

typedef struct ss_h5_info {
    int ndim;
    int64_t dims[SS_H5_MAX_DIMS];
    ss_h5_class cls;
    size_t elem_size;  /* bytes per element in the file */
    int is_signed;     /* integers only */
    int is_scale;      /* a dimension-scale dataset */
    int chunked;       /* 1 if chunked; chunk[] is then filled */
    int64_t chunk[SS_H5_MAX_DIMS];
    int deflate;       /* deflate level, 0 if none */
    int shuffle;       /* 1 if the shuffle filter is on */
} ss_h5_info;

/* Opens an existing file read-only.  A missing file is SS_ERR_IO, a file
 * that is not HDF5 is SS_ERR_FORMAT; both name the path. */
ss_status ss_h5_open_read(const char *path, ss_h5_reader **out);
void ss_h5_close_read(ss_h5_reader *r);
const char *ss_h5_reader_path(const ss_h5_reader *r);

int ss_h5_exists(ss_h5_reader *r, const char *path);
/* 1 if the object at obj_path has an attribute called name. */
int ss_h5_attr_exists(ss_h5_reader *r, const char *obj_path, const char *name);
ss_status ss_h5_dset_info(ss_h5_reader *r, const char *path, ss_h5_info *info);
/* Reads a whole dataset converted to `as` into a new buffer (free() it);
 * *n is the element count.  info may be NULL. */
ss_status ss_h5_read(ss_h5_reader *r, const char *path, ss_h5_type as, void **data,
                     size_t *n, ss_h5_info *info);
/* The same for a dataset that must hold exactly `want` elements (any shape):
 * another count is SS_ERR_FORMAT naming both, before anything is allocated or
 * read. A file of a few KB can declare a dataset of billions of elements never
 * written (its chunks unstored), which ss_h5_read would allocate and fill. */
ss_status ss_h5_read_want(ss_h5_reader *r, const char *path, ss_h5_type as, size_t want, void **data,
                          ss_h5_info *info);
ss_status ss_h5_read_f32(ss_h5_reader *r, const char *path, float **data, size_t *n, ss_h5_info *info);
ss_status ss_h5_read_f64(ss_h5_reader *r, const char *path, double **data, size_t *n, ss_h5_info *info);
ss_status ss_h5_read_i32(ss_h5_reader *r, const char *path, int32_t **data, size_t *n, ss_h5_info *info);
ss_status ss_h5_read_i64(ss_h5_reader *r, const char *path, int64_t **data, size_t *n, ss_h5_info *info);
/* Reads the hyperslab [start, start+count) converted to `as` into buf. */
ss_status ss_h5_read_slab(ss_h5_reader *r, const char *path, ss_h5_type as,
                          const int64_t *start, const int64_t *count, void *buf);
/* SS_OK when the dataset stores at least 1/2048 of its size (over 1 MiB;
 * deflate compresses at most 1032:1), else SS_ERR_FORMAT naming both sizes:
 * for datasets written whole (statistics, a forward file's /tokens and
 * /lengths, per-prompt scores), one whose chunks were never
 * written, which read as fill values: a file of 23 KB declaring a
 * [2^17, 2^17] covariance was read as 128 GiB of them. */
ss_status ss_h5_dset_written(ss_h5_reader *r, const char *path);
/* The same for a dataset of which `elems` elements are written (forward's
 * /logits and per-token activations: the prompts' own positions; chunks of
 * padding only are not stored): at least 1/2048 of their bytes are stored. */
ss_status ss_h5_dset_written_part(ss_h5_reader *r, const char *path, size_t elems);
/* The diagonal of a square [d, d] dataset as float64 into diag[d] (a
 * covariance's variances), read a block of about 8 MiB of rows at a time: the
 * whole matrix (2 GiB at d = 16384) is never held. Another shape, or one
 * mostly never written (ss_h5_dset_written), is SS_ERR_FORMAT, naming the dataset. */
ss_status ss_h5_read_diag(ss_h5_reader *r, const char *path, int64_t d, double *diag);

/* Attribute readers: strings may be variable- or fixed-length (free() the
 * result); numeric attributes must be scalars or 1-element arrays. */
ss_status ss_h5_read_attr_str(ss_h5_reader *r, const char *obj_path, const char *name, char **value);
ss_status ss_h5_read_attr_i64(ss_h5_reader *r, const char *obj_path, const char *name, int64_t *value);
ss_status ss_h5_read_attr_f64(ss_h5_reader *r, const char *obj_path, const char *name, double *value);

/* Names of the dimension scales attached to each axis of a dataset (NULL
 * where none); free with ss_h5_free_names(names, ndim). */
ss_status ss_h5_dim_names(ss_h5_reader *r, const char *path, char ***names, int *ndim);

/* Full paths of the datasets under group (recursively if asked), sorted. */
ss_status ss_h5_list(ss_h5_reader *r, const char *group, int recursive, char ***paths, size_t *n);
void ss_h5_free_names(char **names, size_t n);

#ifdef __cplusplus
}
#endif
#endif
