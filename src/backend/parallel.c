#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "subscope/backend.h"
#include "subscope/util.h"

/* A persistent pool: jobs that run thousands of small forward passes (patch,
 * ablate sweeps, integrated gradients) call this tens of times per pass, and
 * creating threads per call cost more than the work. Workers sleep on a
 * condition variable between calls; work is handed out by an atomic counter
 * so uneven items (attention over sequences of different lengths) balance
 * themselves. One call runs at a time (callers are the op implementations,
 * which the engine runs from one thread); a nested or concurrent call runs
 * serially on its caller's thread. */
typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t wake, done;
    int n_workers;        /* started, besides the caller */
    uint64_t generation;  /* bumped per job */
    int busy;             /* workers still inside the current job */
    void (*fn)(void *, int64_t);
    void *ctx;
    int64_t n;
    _Atomic int64_t next;
    atomic_flag in_use;
} pool_t;

static pool_t pool = {.mu = PTHREAD_MUTEX_INITIALIZER, .wake = PTHREAD_COND_INITIALIZER,
                      .done = PTHREAD_COND_INITIALIZER, .in_use = ATOMIC_FLAG_INIT};
static pthread_once_t pool_once = PTHREAD_ONCE_INIT;

static void run_items(void) {
    for (;;) {
        int64_t i = atomic_fetch_add(&pool.next, 1);
        if (i >= pool.n) break;
        pool.fn(pool.ctx, i);
    }
}

static void *worker(void *arg) {
    (void)arg;
    uint64_t seen = 0;
    pthread_mutex_lock(&pool.mu);
    for (;;) {
        while (pool.generation == seen) pthread_cond_wait(&pool.wake, &pool.mu);
        seen = pool.generation;
        pthread_mutex_unlock(&pool.mu);
        run_items();
        pthread_mutex_lock(&pool.mu);
        if (--pool.busy == 0) pthread_cond_signal(&pool.done);
    }
    return NULL;
}

static void pool_start(void) {
    int want = ss_num_threads() - 1;
    pthread_attr_t at;
    pthread_attr_init(&at);
    pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
    for (int t = 0; t < want; t++) {
        pthread_t th;
        if (pthread_create(&th, &at, worker, NULL) != 0) break; /* fewer threads still finish the work */
        pool.n_workers++;
    }
    pthread_attr_destroy(&at);
}

int ss_parallel_width(void) {
    if (ss_num_threads() <= 1) return 1;
    pthread_once(&pool_once, pool_start);
    return pool.n_workers + 1;
}

void ss_parallel_for(int64_t n, void (*fn)(void *ctx, int64_t i), void *ctx) {
    if (n <= 0) return;
    if (n == 1 || ss_num_threads() <= 1 || atomic_flag_test_and_set(&pool.in_use)) {
        for (int64_t i = 0; i < n; i++) fn(ctx, i);
        return;
    }
    pthread_once(&pool_once, pool_start);
    pthread_mutex_lock(&pool.mu);
    pool.fn = fn, pool.ctx = ctx, pool.n = n;
    atomic_store(&pool.next, 0);
    pool.busy = pool.n_workers;
    pool.generation++;
    pthread_cond_broadcast(&pool.wake);
    pthread_mutex_unlock(&pool.mu);
    run_items();
    pthread_mutex_lock(&pool.mu);
    while (pool.busy > 0) pthread_cond_wait(&pool.done, &pool.mu);
    pthread_mutex_unlock(&pool.mu);
    atomic_flag_clear(&pool.in_use);
}
