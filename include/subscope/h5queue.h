/* A background writer for HDF5 hyperslabs, so that compression and disk I/O
 * overlap the next batch's compute. Between ss_h5_queue_start and
 * ss_h5_queue_finish only the writer thread may call HDF5 (the library is
 * built without thread safety); the caller keeps computing and queueing. */
#ifndef SUBSCOPE_H5QUEUE_H
#define SUBSCOPE_H5QUEUE_H

#include <stddef.h>
#include <stdint.h>
#include "subscope/h5out.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ss_h5_queue ss_h5_queue;

/* max_bytes bounds the memory of queued buffers; a write that would exceed it
 * waits (one buffer larger than the bound is still accepted when the queue is empty). */
ss_status ss_h5_queue_start(size_t max_bytes, ss_h5_queue **out);
/* Queues buf (malloc'd; the queue frees it) for the hyperslab [start,
 * start+count) of d. Returns the error of an earlier failed write, if any
 * (buf is then freed without being written). */
ss_status ss_h5_queue_write(ss_h5_queue *q, ss_h5_dset *d, int ndim, const int64_t *start, const int64_t *count,
                            void *buf, size_t bytes);
/* The same for rows of different lengths (ss_h5_dset_write_rows; lens,
 * count[0] of them, is copied): buf packs only the rows' entries. */
ss_status ss_h5_queue_write_rows(ss_h5_queue *q, ss_h5_dset *d, int ndim, const int64_t *start,
                                 const int64_t *count, const int64_t *lens, void *buf, size_t bytes);
/* And for squares (ss_h5_dset_write_squares): buf packs only the squares. */
ss_status ss_h5_queue_write_squares(ss_h5_queue *q, ss_h5_dset *d, int ndim, const int64_t *start,
                                    const int64_t *count, const int64_t *lens, void *buf, size_t bytes);
/* Waits until every queued write is done, stops the thread, frees q and
 * returns the first error (with its message). */
ss_status ss_h5_queue_finish(ss_h5_queue *q);

#ifdef __cplusplus
}
#endif
#endif
