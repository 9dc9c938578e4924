/* The MPI communicator (CPU ranks), built when scripts/configure.sh finds MPI;
 * otherwise this file holds only refusing stand-ins for the raw transfers
 * below and ss_comm_open gives the single-process communicator.
 *
 * Every transfer is nonblocking (MPI_Isend / MPI_Irecv) and completed by
 * polling MPI_Test against a deadline, because a blocking MPI call waits for a
 * dead peer forever unless the launcher happens to notice and kill the job
 * (mpirun does when a rank exits; a rank that hangs, or srun without
 * --kill-on-bad-exit, is not noticed). Polling backs off to 100 us sleeps so a
 * waiting rank leaves the cores to the ranks still computing (several ranks
 * often share a node's cores). The worker threads of the CPU backend never
 * call MPI.
 *
 * Sends in the background. A large message (above the transport's eager
 * limit) moves only while both sides are inside MPI: Open MPI's shared-memory
 * transport without single-copy, and TCP, push its fragments from the
 * sender's progress calls. A nonblocking send from a rank that then computes
 * for a while therefore holds its receiver up until the sender's next MPI
 * call. Where MPI grants MPI_THREAD_MULTIPLE, ss_comm_isend queues the send
 * for one sender thread, which posts what is queued, in order, as soon as it
 * wakes and polls every send it posted until each completes, while the main
 * thread computes; a blocking send first waits until the thread has posted
 * everything queued before it, so sends keep the order they were issued in
 * (and MPI's matching by tag is untouched: a send never waits behind another
 * to be received). Without MPI_THREAD_MULTIPLE, or with
 * SUBSCOPE_SEND_THREAD=0, only the main thread calls MPI (MPI_THREAD_FUNNELED)
 * and a nonblocking send is posted at once and progressed only inside later
 * MPI calls (docs/DECISIONS.md, "Pipeline sends"). */
#ifdef SS_HAVE_MPI

#include <mpi.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "comm_internal.h"
#include "subscope/util.h"

/* MPI counts are int: larger blocks travel as several messages of this size,
 * which arrive in order (same source, tag and communicator). */
#define CHUNK ((size_t)1 << 30)

static void sender_stop(void);

static void finalize_at_exit(void) {
    sender_stop();
    int init = 0, fin = 0;
    MPI_Initialized(&init);
    MPI_Finalized(&fin);
    if (init && !fin) MPI_Finalize();
}

static ss_status mpi_fail(const ss_comm *c, int rc, const char *call, int peer, const char *what) {
    char s[MPI_MAX_ERROR_STRING] = "";
    int len = 0;
    MPI_Error_string(rc, s, &len);
    return ss_errorf(SS_ERR_IO, "%s with rank %d (host %s): %s failed: %s", what, peer, ss_comm_host(c, peer), call, s);
}

static ss_status timed_out(const ss_comm *c, int peer, const char *what, int sending) {
    return ss_errorf(SS_ERR_IO,
                     "%s: rank %d (host %s) did not %s within %g s: it died, hangs or is far behind "
                     "(SUBSCOPE_DIST_TIMEOUT sets the limit)",
                     what, peer, ss_comm_host(c, peer), sending ? "take the data sent to it" : "send its data", c->timeout);
}

/* The main thread's polls sleep up to 100 us, the sender thread's up to
 * 50 us: every fragment of a large message waits for one of the two sides'
 * polls, and a 512 KB block took ~1.5 ms to arrive with 1 ms sleeps. A
 * waiting rank still leaves its core to the others (an MPI_Test costs about
 * a microsecond). (docs/DECISIONS.md, "Pipeline sends".) */
#define MAIN_SLEEP_NS 100000L
#define SENDER_SLEEP_NS 50000L

/* Backs off after 100 fruitless polls: 10 us more per poll, up to the cap,
 * so quick answers stay quick and long waits cost no CPU. */
static void backoff(unsigned spins, long max_sleep_ns) {
    if (spins <= 100) return;
    long ns = (long)(spins - 100) * 10000L;
    struct timespec ts = {0, ns < max_sleep_ns ? ns : max_sleep_ns};
    nanosleep(&ts, NULL);
}

/* Completes rq by polling until c->timeout seconds have passed. */
static ss_status wait_for(const ss_comm *c, MPI_Request *rq, MPI_Status *status, int peer, const char *what, int sending) {
    const double deadline = ss_now() + c->timeout;
    unsigned spins = 0;
    for (;;) {
        int done = 0, rc = MPI_Test(rq, &done, status);
        if (rc != MPI_SUCCESS) return mpi_fail(c, rc, sending ? "MPI_Isend" : "MPI_Irecv", peer, what);
        if (done) return SS_OK;
        if (ss_now() > deadline) {
            if (!sending) { /* a receive can be withdrawn; an unmatched send is left to the abort that follows */
                MPI_Cancel(rq);
                MPI_Request_free(rq);
            }
            return timed_out(c, peer, what, sending);
        }
        backoff(++spins, MAIN_SLEEP_NS);
    }
}

static ss_status send_now(ss_comm *c, int dest, int tag, const void *buf, size_t n, const char *what) {
    size_t off = 0;
    do {
        size_t len = n - off < CHUNK ? n - off : CHUNK;
        MPI_Request rq;
        int rc = MPI_Isend((const char *)buf + off, (int)len, MPI_BYTE, dest, tag, MPI_COMM_WORLD, &rq);
        if (rc != MPI_SUCCESS) return mpi_fail(c, rc, "MPI_Isend", dest, what);
        SS_TRY(wait_for(c, &rq, MPI_STATUS_IGNORE, dest, what, 1));
        off += len;
    } while (off < n);
    return SS_OK;
}

static ss_status mpi_recv(ss_comm *c, int src, int tag, void *buf, size_t n, const char *what) {
    size_t off = 0;
    do {
        size_t len = n - off < CHUNK ? n - off : CHUNK;
        MPI_Request rq;
        MPI_Status status;
        int rc = MPI_Irecv((char *)buf + off, (int)len, MPI_BYTE, src, tag, MPI_COMM_WORLD, &rq);
        if (rc != MPI_SUCCESS) return mpi_fail(c, rc, "MPI_Irecv", src, what);
        SS_TRY(wait_for(c, &rq, &status, src, what, 0));
        int got = 0;
        MPI_Get_count(&status, MPI_BYTE, &got);
        if ((size_t)got != len)
            return ss_errorf(SS_ERR_INTERNAL, "%s: expected %zu bytes from rank %d (host %s), got %d", what, len, src,
                             ss_comm_host(c, src), got);
        off += len;
    } while (off < n);
    return SS_OK;
}

/* ---- the sender thread ---- */

/* A nonblocking send: its chunks' MPI requests. Without the sender thread,
 * posted at once and completed in mpi_wait. With it, queued; the thread
 * posts it (in issue order, as soon as it wakes), polls it with the others
 * in flight, and sets done (st and msg on failure) under the lock. */
struct ss_comm_req {
    int dest, tag, n, done;
    const void *buf;
    size_t bytes;
    double deadline; /* posted + timeout */
    ss_status st;
    char msg[SS_ERROR_MAX]; /* the failure's message, copied from the sender thread's */
    struct ss_comm_req *next; /* in the queue, then in the thread's list of sends in flight */
    MPI_Request rq[];
};

typedef struct sender {
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t wake; /* work queued, or stop */
    pthread_cond_t done; /* a send finished, or the queue was posted */
    ss_comm_req *head, *tail; /* queued, not posted yet */
    int posting, stop;        /* posting: the thread took the queue and is posting it */
    ss_comm *c;
} sender;

static sender *the_sender; /* one per process: MPI_COMM_WORLD's communicator opens once */

/* Posts q's chunks (MPI keeps the order of sends posted by one thread). */
static ss_status post(ss_comm *c, ss_comm_req *q) {
    size_t off = 0;
    do {
        size_t len = q->bytes - off < CHUNK ? q->bytes - off : CHUNK;
        int rc = MPI_Isend((const char *)q->buf + off, (int)len, MPI_BYTE, q->dest, q->tag, MPI_COMM_WORLD, &q->rq[q->n]);
        if (rc != MPI_SUCCESS) return mpi_fail(c, rc, "MPI_Isend", q->dest, "send"); /* started chunks: left to the abort */
        q->n++;
        off += len;
    } while (off < q->bytes);
    q->deadline = ss_now() + c->timeout;
    return SS_OK;
}

static void finish(sender *s, ss_comm_req *q, ss_status st) {
    pthread_mutex_lock(&s->lock);
    if (st) snprintf(q->msg, sizeof q->msg, "%s", ss_last_error());
    q->st = st;
    q->done = 1;
    pthread_cond_broadcast(&s->done);
    pthread_mutex_unlock(&s->lock);
}

static void *sender_main(void *arg) {
    sender *s = arg;
    ss_comm_req *flight = NULL; /* posted, not finished; only this thread touches the list */
    unsigned spins = 0;
    pthread_mutex_lock(&s->lock);
    for (;;) {
        while (!s->head && !flight && !s->stop) pthread_cond_wait(&s->wake, &s->lock);
        if (!s->head && !flight) break; /* stopping with nothing left */
        ss_comm_req *take = s->head;
        s->head = s->tail = NULL;
        s->posting = take != NULL;
        pthread_mutex_unlock(&s->lock);
        ss_comm_req **end = &flight;
        while (*end) end = &(*end)->next;
        for (ss_comm_req *q = take, *next; q; q = next) {
            next = q->next;
            q->next = NULL;
            ss_status st = post(s->c, q);
            if (st) finish(s, q, st);
            else *end = q, end = &q->next;
        }
        if (take) {
            spins = 0;
            pthread_mutex_lock(&s->lock);
            s->posting = 0;
            pthread_cond_broadcast(&s->done);
            pthread_mutex_unlock(&s->lock);
        }
        int finished = 0;
        for (ss_comm_req **pp = &flight; *pp;) {
            ss_comm_req *q = *pp;
            int all = 0, rc = MPI_Testall(q->n, q->rq, &all, MPI_STATUSES_IGNORE);
            ss_status st = rc != MPI_SUCCESS ? mpi_fail(s->c, rc, "MPI_Isend", q->dest, "send")
                           : !all && ss_now() > q->deadline ? timed_out(s->c, q->dest, "send", 1) /* left to the abort */
                                                            : SS_OK;
            if (!all && !st) {
                pp = &q->next;
                continue;
            }
            *pp = q->next;
            finish(s, q, st);
            finished = 1;
        }
        spins = finished ? 0 : spins + 1;
        if (flight) backoff(spins, SENDER_SLEEP_NS);
        pthread_mutex_lock(&s->lock);
    }
    pthread_mutex_unlock(&s->lock);
    return NULL;
}

static void sender_free(sender *s) {
    pthread_mutex_destroy(&s->lock);
    pthread_cond_destroy(&s->wake);
    pthread_cond_destroy(&s->done);
    free(s);
}

/* Stops the thread once every queued send has finished or failed. */
static void sender_stop(void) {
    sender *s = the_sender;
    if (!s) return;
    the_sender = NULL;
    pthread_mutex_lock(&s->lock);
    s->stop = 1;
    pthread_cond_signal(&s->wake);
    pthread_mutex_unlock(&s->lock);
    pthread_join(s->thread, NULL);
    sender_free(s);
}

static ss_status sender_start(ss_comm *c) {
    sender *s = ss_calloc(1, sizeof *s, "MPI sender thread");
    if (!s) return SS_ERR_NOMEM;
    s->c = c;
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->wake, NULL);
    pthread_cond_init(&s->done, NULL);
    int e = pthread_create(&s->thread, NULL, sender_main, s);
    if (e) {
        sender_free(s);
        return ss_errorf(SS_ERR_IO, "cannot start the MPI sender thread: %s", strerror(e));
    }
    the_sender = s;
    return SS_OK;
}

static ss_status mpi_send(ss_comm *c, int dest, int tag, const void *buf, size_t n, const char *what) {
    sender *s = the_sender;
    if (s) { /* after the thread has posted every send queued before this one: messages keep their order */
        pthread_mutex_lock(&s->lock);
        while (s->head || s->posting) pthread_cond_wait(&s->done, &s->lock);
        pthread_mutex_unlock(&s->lock);
    }
    return send_now(c, dest, tag, buf, n, what);
}

static ss_status mpi_isend(ss_comm *c, int dest, int tag, const void *buf, size_t n, ss_comm_req **out) {
    sender *s = the_sender;
    const int chunks = n ? (int)((n + CHUNK - 1) / CHUNK) : 1;
    ss_comm_req *q = ss_calloc(1, sizeof *q + (size_t)chunks * sizeof(MPI_Request), "send request");
    if (!q) return SS_ERR_NOMEM;
    q->dest = dest, q->tag = tag, q->buf = buf, q->bytes = n;
    if (!s) {
        ss_status st = post(c, q);
        if (st) {
            free(q);
            return st;
        }
        *out = q;
        return SS_OK;
    }
    pthread_mutex_lock(&s->lock);
    if (s->tail) s->tail->next = q;
    else s->head = q;
    s->tail = q;
    pthread_cond_signal(&s->wake);
    pthread_mutex_unlock(&s->lock);
    *out = q;
    return SS_OK;
}

static ss_status mpi_wait(ss_comm *c, ss_comm_req *q) {
    ss_status st = SS_OK;
    sender *s = the_sender;
    if (s) { /* the thread gives up on a send c->timeout after posting it */
        pthread_mutex_lock(&s->lock);
        while (!q->done) pthread_cond_wait(&s->done, &s->lock);
        pthread_mutex_unlock(&s->lock);
        st = q->st ? ss_errorf(q->st, "%s", q->msg) : SS_OK;
    } else {
        for (int i = 0; i < q->n && !st; i++)
            st = wait_for(c, &q->rq[i], MPI_STATUS_IGNORE, q->dest, "send", 1);
    }
    free(q);
    return st;
}

static int mpi_background(const ss_comm *c) {
    (void)c;
    return the_sender != NULL;
}

static void mpi_abort(ss_comm *c, int code) {
    (void)c;
    MPI_Abort(MPI_COMM_WORLD, code);
}

/* MPI itself is finalised at exit: it cannot be initialised twice. */
static void mpi_free(ss_comm *c) {
    if (the_sender && the_sender->c == c) sender_stop();
}

static const ss_comm_ops mpi_ops = {mpi_send, mpi_recv, mpi_abort, mpi_free, NULL, NULL, mpi_isend, mpi_wait, mpi_background};

ss_status ss_comm_mpi_open(ss_comm **out) {
    *out = NULL;
    int init = 0, fin = 0;
    MPI_Initialized(&init);
    MPI_Finalized(&fin);
    if (fin) return ss_errorf(SS_ERR_ARG, "MPI was already finalised in this process");
    static const char *const off_on[] = {"0", "1", NULL};
    int want_thread = 1;
    SS_TRY(ss_env_choice("SUBSCOPE_SEND_THREAD", off_on, 1, "1 (the sender thread, the default) or 0 (none)", &want_thread));
    int provided = 0;
    if (!init) {
        int rc = MPI_Init_thread(NULL, NULL, want_thread ? MPI_THREAD_MULTIPLE : MPI_THREAD_FUNNELED, &provided);
        if (rc != MPI_SUCCESS) return ss_errorf(SS_ERR_IO, "MPI_Init_thread failed (error %d)", rc);
        atexit(finalize_at_exit);
    } else {
        MPI_Query_thread(&provided);
    }
    /* Errors come back as codes, turned into messages that name the peer. */
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    ss_comm *c = ss_calloc(1, sizeof *c, "communicator");
    if (!c) return SS_ERR_NOMEM;
    c->ops = &mpi_ops;
    c->backend = "mpi";
    MPI_Comm_rank(MPI_COMM_WORLD, &c->rank);
    MPI_Comm_size(MPI_COMM_WORLD, &c->size);
    char lib[MPI_MAX_LIBRARY_VERSION_STRING] = "";
    int len = 0;
    MPI_Get_library_version(lib, &len);
    lib[strcspn(lib, ",\n")] = 0; /* "Open MPI v4.1.4, package: ..." -> "Open MPI v4.1.4" */
    snprintf(c->library, sizeof c->library, "%.*s", (int)sizeof c->library - 1, lib);
    ss_status st = ss_comm_exchange_hosts(c);
    if (!st && want_thread && provided >= MPI_THREAD_MULTIPLE && !the_sender) st = sender_start(c);
    if (st) {
        ss_comm_free(c);
        return st;
    }
    *out = c;
    return SS_OK;
}

/* ---- raw nonblocking transfers (for the emulated NCCL of the unit tests) ---- */

struct ss_mpi_raw {
    MPI_Request rq;
    int sending;
};

int ss_mpi_raw_world(int *rank, int *size) {
    int init = 0, fin = 0;
    MPI_Initialized(&init);
    MPI_Finalized(&fin);
    if (!init || fin) return 0;
    MPI_Comm_rank(MPI_COMM_WORLD, rank);
    MPI_Comm_size(MPI_COMM_WORLD, size);
    return 1;
}

ss_status ss_mpi_raw_start(int sending, int peer, int tag, void *buf, size_t n, ss_mpi_raw **out) {
    *out = NULL;
    int r, sz;
    if (!ss_mpi_raw_world(&r, &sz)) return ss_errorf(SS_ERR_ARG, "MPI is not initialised in this process");
    if (n > CHUNK) return ss_errorf(SS_ERR_ARG, "raw MPI transfer of %zu bytes (at most %zu)", n, CHUNK);
    ss_mpi_raw *q = ss_calloc(1, sizeof *q, "MPI request");
    if (!q) return SS_ERR_NOMEM;
    q->sending = sending;
    int rc = sending ? MPI_Isend(buf, (int)n, MPI_BYTE, peer, SS_MPI_RAW_TAG + tag, MPI_COMM_WORLD, &q->rq)
                     : MPI_Irecv(buf, (int)n, MPI_BYTE, peer, SS_MPI_RAW_TAG + tag, MPI_COMM_WORLD, &q->rq);
    if (rc != MPI_SUCCESS) {
        free(q);
        return ss_errorf(SS_ERR_IO, "%s rank %d: error %d", sending ? "MPI_Isend to" : "MPI_Irecv from", peer, rc);
    }
    *out = q;
    return SS_OK;
}

int ss_mpi_raw_test(ss_mpi_raw *q, size_t *got) {
    int done = 0;
    MPI_Status status;
    if (MPI_Test(&q->rq, &done, &status) != MPI_SUCCESS) {
        free(q);
        return -1;
    }
    if (!done) return 0;
    int count = 0;
    if (!q->sending) MPI_Get_count(&status, MPI_BYTE, &count);
    if (got) *got = (size_t)count;
    free(q);
    return 1;
}

void ss_mpi_raw_cancel(ss_mpi_raw *q) {
    if (!q) return;
    if (!q->sending) MPI_Cancel(&q->rq);
    MPI_Request_free(&q->rq);
    free(q);
}

#else
#include "comm_internal.h"

/* Without MPI there is nothing to move bytes between processes. */
struct ss_mpi_raw {
    int unused;
};
int ss_mpi_raw_world(int *rank, int *size) {
    (void)rank, (void)size;
    return 0;
}
ss_status ss_mpi_raw_start(int sending, int peer, int tag, void *buf, size_t n, ss_mpi_raw **out) {
    (void)sending, (void)peer, (void)tag, (void)buf, (void)n;
    *out = NULL;
    return ss_errorf(SS_ERR_UNSUPPORTED, "this build has no MPI");
}
int ss_mpi_raw_test(ss_mpi_raw *rq, size_t *got) {
    (void)rq, (void)got;
    return -1;
}
void ss_mpi_raw_cancel(ss_mpi_raw *rq) { (void)rq; }
#endif

