/* The NCCL communicator (GPU ranks; docs/DISTRIBUTED.md "NCCL"), chosen with
 * SUBSCOPE_DIST=nccl. Built when scripts/configure.sh finds NCCL and the CUDA
 * toolkit, into the plugin libsubscope-nccl.so that comm.c loads on first
 * use (without them this file is empty and comm.c refuses). The unit-test
 * binary compiles this same file a second time against a stand-in for NCCL
 * and the CUDA runtime that moves the bytes over MPI (tests/unit/nccl_emu.c),
 * so everything below except the libraries themselves runs in `make test`.
 *
 * It provides what comm.c builds every collective from: point-to-point
 * blocks. Each block is staged through a buffer on the rank's device
 * (ncclSend/ncclRecv work on device memory) on the communicator's own
 * non-blocking stream, in chunks, and each message travels as a 16-byte frame
 * (tag, size) followed by its payload: NCCL has no tags and needs both sides
 * to agree on each transfer's size, so the frame lets a receive check the
 * size, and park messages that arrive for another tag until a receive asks
 * for them (MPI's matching, which the jobs rely on).
 *
 * Nothing here waits without a deadline. The communicator is non-blocking
 * (ncclConfig_t.blocking = 0): initialisation and every enqueue are polled
 * with ncclCommGetAsyncError, transfers with cudaStreamQuery, never
 * cudaStreamSynchronize, and pinned host staging keeps the device copies
 * asynchronous too. Past c->timeout the NCCL communicator is aborted
 * (ncclCommAbort makes NCCL's kernels return) and the call fails naming the
 * peer; ss_comm_abort then ends the job through the MPI communicator the id
 * came over, or, under srun without MPI, by exiting (srun
 * --kill-on-bad-exit=1 stops the rest; otherwise they time out too). */
#include "comm_internal.h"

#if defined(SS_HAVE_NCCL) || defined(SS_NCCL_EMULATED)

#ifndef SS_NCCL_EMULATED
#include <cuda_runtime.h>
#include <nccl.h>
#endif
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "subscope/util.h"

#define FRAME_MAGIC 0x53534e43u /* "SSNC" */
#define STAGE_DEFAULT ((size_t)8 << 20)

typedef struct {
    uint32_t magic;
    int32_t tag;
    uint64_t n;
} frame;

typedef struct parked {
    struct parked *next;
    int src, tag;
    size_t n;
    unsigned char *data;
} parked;

typedef struct {
    ss_comm *boot; /* what the unique id came over (NULL: a rendezvous file); ends the job on abort */
    ncclComm_t nccl;
    int nccl_live; /* nccl is initialised and not aborted */
    int dead;      /* aborted after an error: every later call fails at once */
    char dead_why[SS_ERROR_MAX]; /* an earlier error's whole message, NCCL's own account in it */
    cudaStream_t stream;
    int have_stream;
    void *dstage;           /* device staging buffer */
    unsigned char *hstage;  /* pinned host staging buffer */
    size_t stage;
    parked *parked;         /* messages that arrived before their receive, oldest first */
} nccl_impl;

static nccl_impl *impl_of(ss_comm *c) { return c->impl; }

/* NCCL's name for r and its last-error text, whole; this thread's buffer,
 * valid until its next call. */
static const char *nccl_detail(nccl_impl *m, ncclResult_t r) {
    static _Thread_local char buf[SS_ERROR_MAX];
    const char *last = m && m->nccl_live ? ncclGetLastError(m->nccl) : ncclGetLastError(NULL);
    snprintf(buf, sizeof buf, "%s%s%s", ncclGetErrorString(r), last && *last ? ": " : "", last ? last : "");
    return buf;
}

/* Aborts the NCCL communicator once; every later call fails with why. */
static void kill_comm(ss_comm *c, const char *why) {
    nccl_impl *m = impl_of(c);
    if (m->dead) return;
    m->dead = 1;
    snprintf(m->dead_why, sizeof m->dead_why, "%s", why);
    if (m->nccl_live) ncclCommAbort(m->nccl);
    m->nccl_live = 0;
}

static ss_status fail_dead(ss_comm *c, const char *what) {
    return ss_errorf(SS_ERR_IO, "%s: the NCCL communicator was aborted after an earlier error (%s)", what, impl_of(c)->dead_why);
}

/* "with rank 3 (host h)" or "" for local device work. */
static void peer_text(const ss_comm *c, int peer, char out[128]) {
    if (peer < 0) snprintf(out, 128, "on this rank's device");
    else snprintf(out, 128, "with rank %d (host %s)", peer, ss_comm_host(c, peer));
}

static void backoff(unsigned spins) {
    if (spins <= 100) return;
    long ns = (long)(spins - 100) * 10000L; /* 10 us more per round, up to 1 ms */
    struct timespec ts = {0, ns < 1000000L ? ns : 1000000L};
    nanosleep(&ts, NULL);
}

/* A call on a non-blocking communicator may return ncclInProgress: the
 * operation is enqueued once ncclCommGetAsyncError stops saying so. */
static ss_status enqueued(ss_comm *c, ncclResult_t r, const char *call, int peer, const char *what) {
    nccl_impl *m = impl_of(c);
    char pt[128];
    const double deadline = ss_now() + c->timeout;
    for (unsigned spins = 0; r == ncclInProgress; spins++) {
        if (ncclCommGetAsyncError(m->nccl, &r) != ncclSuccess) r = ncclInternalError;
        if (r != ncclInProgress) break;
        if (ss_now() > deadline) {
            peer_text(c, peer, pt);
            ss_status st = ss_errorf(SS_ERR_IO, "%s %s: %s was not enqueued within %g s (SUBSCOPE_DIST_TIMEOUT sets the limit)",
                                     what, pt, call, c->timeout);
            kill_comm(c, ss_last_error());
            return st;
        }
        backoff(spins);
    }
    if (r == ncclSuccess) return SS_OK;
    peer_text(c, peer, pt);
    ss_status st = ss_errorf(SS_ERR_IO, "%s %s: %s failed: %s", what, pt, call, nccl_detail(m, r));
    kill_comm(c, ss_last_error());
    return st;
}

/* Waits for everything enqueued on the stream, watching NCCL's own errors. */
static ss_status drain(ss_comm *c, int peer, const char *what, int sending) {
    nccl_impl *m = impl_of(c);
    char pt[128];
    const double deadline = ss_now() + c->timeout;
    for (unsigned spins = 0;; spins++) {
        cudaError_t e = cudaStreamQuery(m->stream);
        if (e == cudaSuccess) return SS_OK;
        if (e != cudaErrorNotReady) {
            peer_text(c, peer, pt);
            ss_status st = ss_errorf(SS_ERR_IO, "%s %s: the CUDA stream failed: %s", what, pt, cudaGetErrorString(e));
            kill_comm(c, ss_last_error());
            return st;
        }
        ncclResult_t r = ncclSuccess;
        if (ncclCommGetAsyncError(m->nccl, &r) != ncclSuccess) r = ncclInternalError;
        if (r != ncclSuccess && r != ncclInProgress) {
            peer_text(c, peer, pt);
            ss_status st = ss_errorf(SS_ERR_IO, "%s %s: NCCL failed: %s", what, pt, nccl_detail(m, r));
            kill_comm(c, ss_last_error());
            return st;
        }
        if (ss_now() > deadline) {
            ss_status st;
            if (peer < 0)
                st = ss_errorf(SS_ERR_IO, "%s: a copy on this rank's device did not finish within %g s", what, c->timeout);
            else
                st = ss_errorf(SS_ERR_IO,
                               "%s: rank %d (host %s) did not %s within %g s: it died, hangs or is far behind "
                               "(SUBSCOPE_DIST_TIMEOUT sets the limit)",
                               what, peer, ss_comm_host(c, peer), sending ? "take the data sent to it" : "send its data",
                               c->timeout);
            kill_comm(c, ss_last_error());
            return st;
        }
        backoff(spins);
    }
}

static ss_status cuda_fail(ss_comm *c, cudaError_t e, const char *call, const char *what) {
    ss_status st = ss_errorf(SS_ERR_IO, "%s on rank %d (host %s): %s failed: %s", what, c->rank, ss_comm_host(c, c->rank), call,
                             cudaGetErrorString(e));
    kill_comm(c, ss_last_error());
    return st;
}

/* n bytes of host memory to peer, through the staging buffers. */
static ss_status raw_send(ss_comm *c, int peer, const void *buf, size_t n, const char *what) {
    nccl_impl *m = impl_of(c);
    for (size_t off = 0; off < n;) {
        size_t len = n - off < m->stage ? n - off : m->stage;
        memcpy(m->hstage, (const char *)buf + off, len);
        cudaError_t e = cudaMemcpyAsync(m->dstage, m->hstage, len, cudaMemcpyHostToDevice, m->stream);
        if (e != cudaSuccess) return cuda_fail(c, e, "cudaMemcpyAsync to the device", what);
        SS_TRY(enqueued(c, ncclSend(m->dstage, len, ncclUint8, peer, m->nccl, m->stream), "ncclSend", peer, what));
        SS_TRY(drain(c, peer, what, 1));
        off += len;
    }
    return SS_OK;
}

/* n bytes from peer into host memory. */
static ss_status raw_recv(ss_comm *c, int peer, void *buf, size_t n, const char *what) {
    nccl_impl *m = impl_of(c);
    for (size_t off = 0; off < n;) {
        size_t len = n - off < m->stage ? n - off : m->stage;
        SS_TRY(enqueued(c, ncclRecv(m->dstage, len, ncclUint8, peer, m->nccl, m->stream), "ncclRecv", peer, what));
        cudaError_t e = cudaMemcpyAsync(m->hstage, m->dstage, len, cudaMemcpyDeviceToHost, m->stream);
        if (e != cudaSuccess) return cuda_fail(c, e, "cudaMemcpyAsync from the device", what);
        SS_TRY(drain(c, peer, what, 0));
        memcpy((char *)buf + off, m->hstage, len);
        off += len;
    }
    return SS_OK;
}

static ss_status nc_send(ss_comm *c, int dest, int tag, const void *buf, size_t n, const char *what) {
    if (impl_of(c)->dead) return fail_dead(c, what);
    frame f = {FRAME_MAGIC, tag, (uint64_t)n};
    SS_TRY(raw_send(c, dest, &f, sizeof f, what));
    return raw_send(c, dest, buf, n, what);
}

static ss_status size_mismatch(ss_comm *c, int src, int tag, size_t want, uint64_t got, const char *what) {
    return ss_errorf(SS_ERR_INTERNAL, "%s: expected %zu bytes from rank %d (host %s) with tag %d, got %llu", what, want, src,
                     ss_comm_host(c, src), tag, (unsigned long long)got);
}

static ss_status nc_recv(ss_comm *c, int src, int tag, void *buf, size_t n, const char *what) {
    nccl_impl *m = impl_of(c);
    if (m->dead) return fail_dead(c, what);
    for (parked **pp = &m->parked; *pp; pp = &(*pp)->next) {
        parked *p = *pp;
        if (p->src != src || p->tag != tag) continue;
        *pp = p->next;
        ss_status st = p->n == n ? SS_OK : size_mismatch(c, src, tag, n, p->n, what);
        if (!st && n) memcpy(buf, p->data, n);
        free(p->data);
        free(p);
        return st;
    }
    for (;;) {
        frame f;
        SS_TRY(raw_recv(c, src, &f, sizeof f, what));
        if (f.magic != FRAME_MAGIC || f.tag < 0 || f.n > (uint64_t)SIZE_MAX / 2) {
            ss_status st = ss_errorf(SS_ERR_INTERNAL, "%s: rank %d (host %s) sent a malformed frame (magic %08x, tag %d)", what,
                                     src, ss_comm_host(c, src), f.magic, f.tag);
            kill_comm(c, ss_last_error()); /* the stream of messages from src is out of step */
            return st;
        }
        if (f.tag == tag && f.n == n) return raw_recv(c, src, buf, n, what);
        /* Another tag (kept for its receive), or the right tag with the
         * wrong size (read and dropped, so the next message still lines up). */
        unsigned char *data = ss_malloc(f.n ? (size_t)f.n : 1, "early message");
        if (!data) return SS_ERR_NOMEM;
        ss_status st = raw_recv(c, src, data, (size_t)f.n, what);
        if (!st && f.tag == tag) st = size_mismatch(c, src, tag, n, f.n, what);
        if (st) {
            free(data);
            return st;
        }
        parked *p = ss_calloc(1, sizeof *p, "early message");
        if (!p) {
            free(data);
            return SS_ERR_NOMEM;
        }
        *p = (parked){NULL, src, f.tag, (size_t)f.n, data};
        parked **tail = &m->parked;
        while (*tail) tail = &(*tail)->next;
        *tail = p;
    }
}

static ss_status dev_copy(ss_comm *c, void *dst, const void *src, size_t n, int to_host) {
    nccl_impl *m = impl_of(c);
    const char *what = to_host ? "copying a buffer from the device" : "copying a buffer to the device";
    if (m->dead) return fail_dead(c, what);
    for (size_t off = 0; off < n;) {
        size_t len = n - off < m->stage ? n - off : m->stage;
        if (!to_host) memcpy(m->hstage, (const char *)src + off, len);
        cudaError_t e = to_host ? cudaMemcpyAsync(m->hstage, (const char *)src + off, len, cudaMemcpyDeviceToHost, m->stream)
                                : cudaMemcpyAsync((char *)dst + off, m->hstage, len, cudaMemcpyHostToDevice, m->stream);
        if (e != cudaSuccess) return cuda_fail(c, e, "cudaMemcpyAsync", what);
        SS_TRY(drain(c, -1, what, 0));
        if (to_host) memcpy((char *)dst + off, m->hstage, len);
        off += len;
    }
    return SS_OK;
}
static ss_status nc_dev_to_host(ss_comm *c, void *host, const void *dev, size_t n) { return dev_copy(c, host, dev, n, 1); }
static ss_status nc_host_to_dev(ss_comm *c, void *dev, const void *host, size_t n) { return dev_copy(c, dev, host, n, 0); }

static void nc_abort(ss_comm *c, int code) {
    nccl_impl *m = impl_of(c);
    kill_comm(c, "the job is stopping");
    /* MPI_Abort ends every rank; without MPI, exiting is all one rank can do. */
    if (m->boot && m->boot->size > 1) m->boot->ops->abort(m->boot, code);
}

static void nc_free(ss_comm *c) {
    nccl_impl *m = impl_of(c);
    if (!m) return;
    if (m->nccl_live) {
        /* Finalize flushes what is in flight; if that does not end in time, abort. */
        ncclResult_t r = ncclCommFinalize(m->nccl);
        if (r == ncclSuccess || r == ncclInProgress) r = enqueued(c, r, "ncclCommFinalize", -1, "closing the communicator") ? ncclInternalError : ncclSuccess;
        if (m->nccl_live) {
            if (r == ncclSuccess) ncclCommDestroy(m->nccl);
            else ncclCommAbort(m->nccl);
            m->nccl_live = 0;
        }
    }
    /* After an abort a kernel may still be unwinding: freeing device memory
     * would wait for it, so a dead communicator's buffers go with the process
     * (the unit tests' emulation has no kernels, and frees them). */
#ifdef SS_NCCL_EMULATED
    if (1) {
#else
    if (!m->dead) {
#endif
        if (m->dstage) cudaFree(m->dstage);
        if (m->hstage) cudaFreeHost(m->hstage);
        if (m->have_stream) cudaStreamDestroy(m->stream);
    }
    while (m->parked) {
        parked *p = m->parked;
        m->parked = p->next;
        free(p->data);
        free(p);
    }
    if (m->boot) ss_comm_free(m->boot);
    free(m);
    c->impl = NULL;
}

/* Sends are staged through one device buffer: ss_comm_isend sends at once (no isend/wait). */
static const ss_comm_ops nccl_ops = {nc_send, nc_recv, nc_abort, nc_free, nc_dev_to_host, nc_host_to_dev, NULL, NULL, NULL};

/* The rank's device: its place among the ranks on its host (the launcher's
 * local rank) modulo the devices it sees; with one visible device (Slurm's
 * --gpus-per-task=1 or a per-rank CUDA_VISIBLE_DEVICES) always that one. */
static ss_status pick_device(int rank, int local, int local_count, const char *host, int *dev) {
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess || n < 1)
        return ss_errorf(SS_ERR_UNSUPPORTED, "SUBSCOPE_DIST=nccl: rank %d (host %s) sees no CUDA device%s%s (check nvidia-smi and CUDA_VISIBLE_DEVICES)",
                         rank, host, e != cudaSuccess ? ": " : "", e != cudaSuccess ? cudaGetErrorString(e) : "");
    if (local_count > n)
        return ss_errorf(SS_ERR_ARG,
                         "SUBSCOPE_DIST=nccl: %d ranks on host %s but it has %d visible CUDA device%s: NCCL needs a GPU of its "
                         "own for each rank (start at most %d rank%s per node)",
                         local_count, host, n, n == 1 ? "" : "s", n, n == 1 ? "" : "s");
    *dev = local % n;
    if ((e = cudaSetDevice(*dev)) != cudaSuccess)
        return ss_errorf(SS_ERR_IO, "SUBSCOPE_DIST=nccl: rank %d (host %s): cudaSetDevice(%d) failed: %s", rank, host, *dev,
                         cudaGetErrorString(e));
    return SS_OK;
}

static size_t stage_bytes(void) {
    /* SUBSCOPE_NCCL_CHUNK: staging size in bytes (tests use small ones to cover chunking). */
    int64_t v = STAGE_DEFAULT; /* a bad value is refused before a command runs (ss_env_check) */
    if (ss_env_int("SUBSCOPE_NCCL_CHUNK", 16, (int64_t)1 << 30, STAGE_DEFAULT, "bytes", &v)) ss_error_clear();
    return (size_t)v;
}

/* The unique id, from rank 0 to every rank: over boot, or through the file. */
typedef struct {
    int32_t ok;
    ncclUniqueId id;
} id_msg;

static ss_status share_id(ss_comm *boot, const char *dir, const ss_rendezvous_env *env, double timeout, int rank, int size,
                          ncclUniqueId *id) {
    id_msg msg;
    memset(&msg, 0, sizeof msg);
    ss_status own = SS_OK;
    char own_msg[SS_ERROR_MAX] = ""; /* rank 0's message, NCCL's own account in it, kept over the broadcast */
    if (rank == 0) {
        ncclResult_t r = ncclGetUniqueId(&msg.id);
        if (r != ncclSuccess) {
            own = ss_errorf(SS_ERR_IO, "ncclGetUniqueId failed on rank 0: %s", nccl_detail(NULL, r));
            snprintf(own_msg, sizeof own_msg, "%s", ss_last_error());
        }
        msg.ok = !own;
    }
    if (boot) {
        SS_TRY(ss_comm_bcast(boot, &msg, sizeof msg, 0));
        if (own) return ss_errorf(own, "%s", own_msg);
        if (!msg.ok) return ss_errorf(SS_ERR_IO, "rank 0 could not create the NCCL unique id (see its message)");
    } else if (rank == 0) {
        if (own) return ss_errorf(own, "%s", own_msg);
        SS_TRY(ss_rendezvous_publish(dir, env->key, size, &msg.id, sizeof msg.id));
    } else {
        SS_TRY(ss_rendezvous_wait(dir, env->key, size, &msg.id, sizeof msg.id, timeout));
    }
    *id = msg.id;
    return SS_OK;
}

static double open_timeout(void) {
    double v = 300.0; /* a bad value is refused before a command runs (ss_env_check) */
    if (ss_env_real("SUBSCOPE_DIST_TIMEOUT", 1e-3, 1e9, 300.0, "seconds", &v)) ss_error_clear(), v = 300.0;
    return v;
}

static ss_status nccl_open(ss_comm *c, ss_comm *boot, const char *dir) {
    nccl_impl *m = impl_of(c);
    ss_rendezvous_env env;
    memset(&env, 0, sizeof env);
    char me[64];
    if (gethostname(me, sizeof me) != 0) snprintf(me, sizeof me, "unknown");
    me[63] = 0;
    int local = 0, local_count = 0;
    if (boot) {
        c->rank = boot->rank;
        c->size = boot->size;
        for (int r = 0; r < boot->size; r++)
            if (!strcmp(ss_comm_host(boot, r), ss_comm_host(boot, boot->rank))) {
                local += r < boot->rank;
                local_count++;
            }
    } else {
        SS_TRY(ss_rendezvous_env_slurm(&env));
        c->rank = env.rank;
        c->size = env.size;
        local = env.local_rank;
    }
    c->timeout = boot ? boot->timeout : open_timeout();

    /* Every rank takes part in passing the id before anything that can fail
     * on one rank alone, and then all learn whether every device is ready. */
    ncclUniqueId id;
    SS_TRY(share_id(boot, dir, &env, c->timeout, c->rank, c->size, &id));
    ss_status st = pick_device(c->rank, local, local_count, me, &c->device);
    if (boot && boot->size > 1) {
        int64_t *bad = ss_calloc((size_t)boot->size, sizeof *bad, "device check");
        if (!bad) return SS_ERR_NOMEM;
        char keep[SS_ERROR_MAX]; /* this rank's message, kept over the allreduce */
        snprintf(keep, sizeof keep, "%s", st ? ss_last_error() : "");
        bad[boot->rank] = st != SS_OK;
        ss_status s2 = ss_comm_allreduce_i64(boot, bad, (size_t)boot->size);
        int first = -1;
        for (int r = 0; !s2 && r < boot->size && first < 0; r++)
            if (bad[r]) first = r;
        free(bad);
        if (s2) return s2;
        if (st) return ss_errorf(st, "%s", keep);
        if (first >= 0)
            return ss_errorf(SS_ERR_UNSUPPORTED, "SUBSCOPE_DIST=nccl: rank %d (host %s) has no usable CUDA device (see its message)",
                             first, ss_comm_host(boot, first));
    } else if (st) {
        return st;
    }

    m->stage = stage_bytes();
    cudaError_t e;
    if ((e = cudaStreamCreateWithFlags(&m->stream, cudaStreamNonBlocking)) != cudaSuccess)
        return ss_errorf(SS_ERR_IO, "NCCL communicator on rank %d: cudaStreamCreateWithFlags failed: %s", c->rank, cudaGetErrorString(e));
    m->have_stream = 1;
    if ((e = cudaMalloc(&m->dstage, m->stage)) != cudaSuccess)
        return ss_errorf(SS_ERR_NOMEM, "NCCL communicator on rank %d: %zu bytes of device staging: %s", c->rank, m->stage, cudaGetErrorString(e));
    if ((e = cudaMallocHost((void **)&m->hstage, m->stage)) != cudaSuccess)
        return ss_errorf(SS_ERR_NOMEM, "NCCL communicator on rank %d: %zu bytes of pinned staging: %s", c->rank, m->stage, cudaGetErrorString(e));

    ncclConfig_t cfg = NCCL_CONFIG_INITIALIZER;
    cfg.blocking = 0;
    ncclResult_t r = ncclCommInitRankConfig(&m->nccl, c->size, id, c->rank, &cfg);
    if (r != ncclSuccess && r != ncclInProgress)
        return ss_errorf(SS_ERR_IO, "ncclCommInitRankConfig on rank %d of %d (host %s) failed: %s", c->rank, c->size, me, nccl_detail(NULL, r));
    m->nccl_live = 1;
    const double deadline = ss_now() + c->timeout;
    for (unsigned spins = 0; r == ncclInProgress; spins++) {
        if (ncclCommGetAsyncError(m->nccl, &r) != ncclSuccess) r = ncclInternalError;
        if (r != ncclInProgress) break;
        if (ss_now() > deadline) {
            ss_status t = ss_errorf(SS_ERR_IO,
                                    "NCCL initialisation of rank %d of %d (host %s) did not complete within %g s: a rank did not "
                                    "join (died, never started, or got another unique id) or the network between the hosts is "
                                    "blocked (SUBSCOPE_DIST_TIMEOUT sets the limit; NCCL_DEBUG=WARN shows NCCL's view)",
                                    c->rank, c->size, me, c->timeout);
            kill_comm(c, ss_last_error());
            return t;
        }
        backoff(spins);
    }
    if (r != ncclSuccess) {
        ss_status t = ss_errorf(SS_ERR_IO, "NCCL initialisation of rank %d of %d (host %s) failed: %s", c->rank, c->size, me, nccl_detail(m, r));
        kill_comm(c, ss_last_error());
        return t;
    }
    /* Every rank has joined, so every rank has read the file. */
    if (!boot && c->rank == 0) ss_rendezvous_remove(dir, env.key);

    int v = 0;
    ncclGetVersion(&v);
    int major = v >= 10000 ? v / 10000 : v / 1000, minor = v >= 10000 ? v / 100 % 100 : v / 100 % 10, patch = v % 100;
#ifdef SS_NCCL_EMULATED
    const char *lib = "emulated NCCL over MPI (unit tests)";
    (void)major, (void)minor, (void)patch;
    snprintf(c->library, sizeof c->library, "%s, id %s", lib, boot ? "over the bootstrap communicator" : "via a rendezvous file");
#else
    if (boot && *boot->library)
        snprintf(c->library, sizeof c->library, "NCCL %d.%d.%d, id over %.80s", major, minor, patch, boot->library);
    else snprintf(c->library, sizeof c->library, "NCCL %d.%d.%d, id %s", major, minor, patch, boot ? "local" : "via rendezvous file");
#endif

    /* Hosts and devices through NCCL itself: the first real traffic. */
    SS_TRY(ss_comm_exchange_hosts(c));
    c->devices = ss_calloc((size_t)c->size, sizeof *c->devices, "communicator devices");
    if (!c->devices) return SS_ERR_NOMEM;
    char mine[128];
    struct cudaDeviceProp prop;
    char bus[32] = "?";
    memset(&prop, 0, sizeof prop);
    cudaGetDeviceProperties(&prop, c->device);
    cudaDeviceGetPCIBusId(bus, sizeof bus, c->device);
    snprintf(mine, sizeof mine, "cuda:%d %.60s (PCI %.20s)", c->device, prop.name, bus);
    SS_TRY(ss_comm_gather(c, mine, sizeof mine, c->devices));
    return ss_comm_bcast(c, c->devices, (size_t)c->size * sizeof *c->devices, 0);
}

ss_status ss_comm_nccl_open(ss_comm *boot, const char *rdv_dir, ss_comm **out) {
    *out = NULL;
    ss_comm *c = ss_calloc(1, sizeof *c, "communicator");
    nccl_impl *m = c ? ss_calloc(1, sizeof *m, "NCCL communicator") : NULL;
    if (!m) {
        free(c);
        ss_comm_free(boot);
        return SS_ERR_NOMEM;
    }
    c->ops = &nccl_ops;
    c->backend = "nccl";
    c->impl = m;
    ss_status st = nccl_open(c, boot, rdv_dir);
    m->boot = boot; /* only now: until the NCCL side exists, errors must not abort through it */
    if (st) {
        char keep[SS_ERROR_MAX]; /* the whole message, reason and all */
        snprintf(keep, sizeof keep, "%s", ss_last_error());
        ss_comm_free(c);
        return ss_errorf(st, "%s", keep);
    }
    *out = c;
    return SS_OK;
}

#endif
