#include "subscope/h5queue.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "subscope/util.h"

typedef struct item {
    struct item *next;
    ss_h5_dset *d;
    int ndim;
    int64_t start[SS_H5_MAX_DIMS], count[SS_H5_MAX_DIMS];
    int64_t *lens; /* NULL, or count[0] rows' lengths (ss_h5_dset_write_rows) or squares' sides */
    int square;    /* lens are squares' sides (ss_h5_dset_write_squares) */
    void *buf;
    size_t bytes;
} item;

struct ss_h5_queue {
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t changed;
    item *head, *tail;
    size_t queued, max_bytes;
    int stopping;
    ss_status err;
    char err_msg[SS_ERROR_MAX]; /* messages are thread-local: the writer's is copied here */
};

static void *writer(void *arg) {
    ss_h5_queue *q = arg;
    pthread_mutex_lock(&q->mu);
    for (;;) {
        while (!q->head && !q->stopping) pthread_cond_wait(&q->changed, &q->mu);
        if (!q->head) break;
        item *it = q->head;
        int failed = q->err != SS_OK;
        pthread_mutex_unlock(&q->mu);
        ss_status st = failed      ? SS_OK
                       : it->square ? ss_h5_dset_write_squares(it->d, it->start, it->count, it->lens, it->buf)
                                    : ss_h5_dset_write_rows(it->d, it->start, it->count, it->lens, it->buf);
        pthread_mutex_lock(&q->mu);
        if (st && !q->err) {
            q->err = st;
            snprintf(q->err_msg, sizeof q->err_msg, "%s", ss_last_error());
        }
        /* The item leaves the queue only now, so `queued` bounds memory in use. */
        q->head = it->next;
        if (!q->head) q->tail = NULL;
        q->queued -= it->bytes;
        free(it->buf);
        free(it->lens);
        free(it);
        pthread_cond_broadcast(&q->changed);
    }
    pthread_mutex_unlock(&q->mu);
    return NULL;
}

ss_status ss_h5_queue_start(size_t max_bytes, ss_h5_queue **out) {
    *out = NULL;
    ss_h5_queue *q = ss_calloc(1, sizeof *q, "write queue");
    if (!q) return SS_ERR_NOMEM;
    q->max_bytes = max_bytes;
    pthread_mutex_init(&q->mu, NULL);
    pthread_cond_init(&q->changed, NULL);
    if (pthread_create(&q->thread, NULL, writer, q) != 0) {
        pthread_mutex_destroy(&q->mu);
        pthread_cond_destroy(&q->changed);
        free(q);
        return ss_errorf(SS_ERR_NOMEM, "cannot start the HDF5 writer thread");
    }
    *out = q;
    return SS_OK;
}

static ss_status queue_error(ss_h5_queue *q) { return ss_errorf(q->err, "%s", q->err_msg); }

ss_status ss_h5_queue_write(ss_h5_queue *q, ss_h5_dset *d, int ndim, const int64_t *start, const int64_t *count,
                            void *buf, size_t bytes) {
    return ss_h5_queue_write_rows(q, d, ndim, start, count, NULL, buf, bytes);
}

static ss_status push(ss_h5_queue *q, ss_h5_dset *d, int ndim, const int64_t *start, const int64_t *count,
                      const int64_t *lens, int square, void *buf, size_t bytes) {
    if (ndim < 1 || ndim > SS_H5_MAX_DIMS) {
        free(buf);
        return ss_errorf(SS_ERR_INTERNAL, "write queue: bad rank %d (1..%d)", ndim, SS_H5_MAX_DIMS);
    }
    if (lens && ndim < (square ? 3 : 2)) {
        free(buf);
        return ss_errorf(SS_ERR_INTERNAL, "write queue: packed %s of %d axes (at least %d: prompts, %s)",
                         square ? "squares" : "rows", ndim, square ? 3 : 2, square ? "rows, columns" : "rows");
    }
    if (lens && count[0] < 0) {
        free(buf);
        return ss_errorf(SS_ERR_INTERNAL, "write queue: packed %s of %lld prompts", square ? "squares" : "rows",
                         (long long)count[0]);
    }
    item *it = ss_calloc(1, sizeof *it, "write queue");
    if (it && lens) it->lens = ss_malloc((size_t)count[0] * sizeof(int64_t) + 1, "write queue");
    if (!it || (lens && !it->lens)) {
        free(it);
        free(buf);
        return SS_ERR_NOMEM;
    }
    if (lens) memcpy(it->lens, lens, (size_t)count[0] * sizeof(int64_t));
    it->square = square;
    it->d = d;
    it->ndim = ndim;
    memcpy(it->start, start, (size_t)ndim * sizeof(int64_t));
    memcpy(it->count, count, (size_t)ndim * sizeof(int64_t));
    it->buf = buf;
    it->bytes = bytes;
    pthread_mutex_lock(&q->mu);
    while (!q->err && q->head && q->queued + bytes > q->max_bytes) pthread_cond_wait(&q->changed, &q->mu);
    if (q->err) {
        ss_status st = queue_error(q);
        pthread_mutex_unlock(&q->mu);
        free(it->buf);
        free(it->lens);
        free(it);
        return st;
    }
    if (q->tail) q->tail->next = it;
    else q->head = it;
    q->tail = it;
    q->queued += bytes;
    pthread_cond_broadcast(&q->changed);
    pthread_mutex_unlock(&q->mu);
    return SS_OK;
}

ss_status ss_h5_queue_write_rows(ss_h5_queue *q, ss_h5_dset *d, int ndim, const int64_t *start,
                                 const int64_t *count, const int64_t *lens, void *buf, size_t bytes) {
    return push(q, d, ndim, start, count, lens, 0, buf, bytes);
}

ss_status ss_h5_queue_write_squares(ss_h5_queue *q, ss_h5_dset *d, int ndim, const int64_t *start,
                                    const int64_t *count, const int64_t *lens, void *buf, size_t bytes) {
    return push(q, d, ndim, start, count, lens, 1, buf, bytes);
}

ss_status ss_h5_queue_finish(ss_h5_queue *q) {
    if (!q) return SS_OK;
    pthread_mutex_lock(&q->mu);
    q->stopping = 1;
    pthread_cond_broadcast(&q->changed);
    pthread_mutex_unlock(&q->mu);
    pthread_join(q->thread, NULL);
    ss_status st = q->err ? queue_error(q) : SS_OK;
    pthread_mutex_destroy(&q->mu);
    pthread_cond_destroy(&q->changed);
    free(q);
    return st;
}
