#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "subscope/backend.h"
#include "subscope/util.h"

/* Threads are created per call: the ops that use this run for milliseconds,
 * so a pool's complexity buys little here. Work is handed out by an atomic
 * counter so uneven items (attention over sequences of different lengths)
 * balance themselves. */
typedef struct {
    void (*fn)(void *, int64_t);
    void *ctx;
    int64_t n;
    _Atomic int64_t next;
} pf_job;

static void *pf_worker(void *arg) {
    pf_job *j = arg;
    for (;;) {
        int64_t i = atomic_fetch_add(&j->next, 1);
        if (i >= j->n) break;
        j->fn(j->ctx, i);
    }
    return NULL;
}

void ss_parallel_for(int64_t n, void (*fn)(void *ctx, int64_t i), void *ctx) {
    int nt = ss_num_threads();
    if (nt > n) nt = (int)n;
    if (nt <= 1) {
        for (int64_t i = 0; i < n; i++) fn(ctx, i);
        return;
    }
    pf_job j = {.fn = fn, .ctx = ctx, .n = n};
    atomic_init(&j.next, 0);
    pthread_t th[256];
    int started = 0;
    for (int t = 1; t < nt; t++) {
        if (pthread_create(&th[started], NULL, pf_worker, &j) != 0) break; /* fewer threads still finish the work */
        started++;
    }
    pf_worker(&j);
    for (int t = 0; t < started; t++) pthread_join(th[t], NULL);
}
