/* The MPI communicator (CPU ranks), built when scripts/configure.sh finds MPI;
 * otherwise this file holds only refusing stand-ins for the raw transfers
 * below and ss_comm_open gives the single-process communicator.
 *
 * Every transfer is nonblocking (MPI_Isend / MPI_Irecv) and completed by
 * polling MPI_Test against a deadline, because a blocking MPI call waits for a
 * dead peer forever unless the launcher happens to notice and kill the job
 * (mpirun does when a rank exits; a rank that hangs, or srun without
 * --kill-on-bad-exit, is not noticed). Polling backs off to 1 ms sleeps so a
 * waiting rank leaves the cores to the ranks still computing (several ranks
 * often share a node's cores). Only the main thread calls MPI
 * (MPI_THREAD_FUNNELED); the worker threads of the CPU backend never do. */
#ifdef SS_HAVE_MPI

#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "comm_internal.h"
#include "subscope/util.h"

/* MPI counts are int: larger blocks travel as several messages of this size,
 * which arrive in order (same source, tag and communicator). */
#define CHUNK ((size_t)1 << 30)

static void finalize_at_exit(void) {
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
            return ss_errorf(SS_ERR_IO,
                             "%s: rank %d (host %s) did not %s within %g s: it died, hangs or is far behind "
                             "(SUBSCOPE_DIST_TIMEOUT sets the limit)",
                             what, peer, ss_comm_host(c, peer), sending ? "take the data sent to it" : "send its data",
                             c->timeout);
        }
        if (++spins > 100) {
            /* 10 us more per round, up to 1 ms: quick answers stay quick, long waits cost no CPU. */
            long ns = (long)(spins - 100) * 10000L;
            struct timespec ts = {0, ns < 1000000L ? ns : 1000000L};
            nanosleep(&ts, NULL);
        }
    }
}

static ss_status mpi_send(ss_comm *c, int dest, int tag, const void *buf, size_t n, const char *what) {
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

/* A nonblocking send: its chunks' requests, completed in mpi_wait. */
struct ss_comm_req {
    int dest, n;
    MPI_Request rq[];
};

static ss_status mpi_isend(ss_comm *c, int dest, int tag, const void *buf, size_t n, ss_comm_req **out) {
    const int chunks = n ? (int)((n + CHUNK - 1) / CHUNK) : 1;
    ss_comm_req *q = ss_malloc(sizeof *q + (size_t)chunks * sizeof(MPI_Request), "send request");
    if (!q) return SS_ERR_NOMEM;
    q->dest = dest;
    q->n = 0;
    size_t off = 0;
    do {
        size_t len = n - off < CHUNK ? n - off : CHUNK;
        int rc = MPI_Isend((const char *)buf + off, (int)len, MPI_BYTE, dest, tag, MPI_COMM_WORLD, &q->rq[q->n]);
        if (rc != MPI_SUCCESS) {
            free(q); /* started chunks are left to the abort that follows the error */
            return mpi_fail(c, rc, "MPI_Isend", dest, "send");
        }
        q->n++;
        off += len;
    } while (off < n);
    *out = q;
    return SS_OK;
}

static ss_status mpi_wait(ss_comm *c, ss_comm_req *q) {
    ss_status st = SS_OK;
    for (int i = 0; i < q->n && !st; i++) st = wait_for(c, &q->rq[i], MPI_STATUS_IGNORE, q->dest, "send", 1);
    free(q);
    return st;
}

static void mpi_abort(ss_comm *c, int code) {
    (void)c;
    MPI_Abort(MPI_COMM_WORLD, code);
}

static void mpi_free(ss_comm *c) { (void)c; /* MPI itself is finalised at exit: it cannot be initialised twice */ }

static const ss_comm_ops mpi_ops = {mpi_send, mpi_recv, mpi_abort, mpi_free, NULL, NULL, mpi_isend, mpi_wait};

ss_status ss_comm_mpi_open(ss_comm **out) {
    *out = NULL;
    int init = 0, fin = 0;
    MPI_Initialized(&init);
    MPI_Finalized(&fin);
    if (fin) return ss_errorf(SS_ERR_ARG, "MPI was already finalised in this process");
    if (!init) {
        int provided = 0;
        int rc = MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided);
        if (rc != MPI_SUCCESS) return ss_errorf(SS_ERR_IO, "MPI_Init_thread failed (error %d)", rc);
        atexit(finalize_at_exit);
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

