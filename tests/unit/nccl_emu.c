/* The NCCL communicator (src/dist/comm_nccl.c), compiled into the unit-test
 * binary against stand-ins for the NCCL and CUDA runtime calls it makes, so
 * its own logic (bootstrap, device choice, framing, parked messages,
 * chunking, every deadline and the abort) runs without a GPU. Linked ahead of
 * the library, this copy's ss_comm_nccl_open is the one the tests reach with
 * SUBSCOPE_DIST=nccl (as emu/cuda_backend.o stands in for the CUDA backend).
 *
 * The stand-ins: device memory is host memory; a stream is a queue of
 * operations run in order as cudaStreamQuery is polled (a copy runs when it
 * reaches the head; a send or receive is posted then and completes when its
 * MPI request does), so an operation never runs before the ones enqueued
 * ahead of it, as on a GPU; the communicator is non-blocking and answers
 * ncclInProgress for a few polls after init and after every enqueue. Bytes
 * between ranks move over MPI (src/dist/comm_mpi.c's raw transfers); one rank
 * needs no MPI. What they cannot show is NCCL's and the driver's own
 * behaviour: that is for `make gpu-check` on real GPUs.
 *
 * Test hooks (environment): SS_NCCL_EMU_STALL=init|send (that step never
 * completes), SS_NCCL_EMU_DEVICES (visible devices, default 8),
 * SS_NCCL_EMU_FAIL_ID=1 (ncclGetUniqueId fails), SS_NCCL_EMU_FAIL_SEND=1
 * (ncclSend fails), SS_NCCL_EMU_LAST_ERROR (what ncclGetLastError says,
 * default ""). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../../src/dist/comm_internal.h"

/* ---- CUDA runtime stand-ins ---- */
typedef int cudaError_t;
enum { cudaSuccess = 0, cudaErrorInvalidValue = 1, cudaErrorNoDevice = 100, cudaErrorNotReady = 600 };
typedef enum { cudaMemcpyHostToDevice = 1, cudaMemcpyDeviceToHost = 2 } cudaMemcpyKind;
#define cudaStreamNonBlocking 1u
struct cudaDeviceProp {
    char name[256];
};

typedef struct emu_op {
    struct emu_op *next;
    int kind; /* 0 copy, 1 send, 2 recv */
    void *dst;
    const void *src;
    size_t n;
    int peer;
    ss_mpi_raw *rq;
    int started;
} emu_op;
typedef struct CUstream_st {
    emu_op *head, *tail;
    int failed;
} *cudaStream_t;

static cudaStream_t emu_streams[8]; /* what an abort cancels */

static const char *cudaGetErrorString(cudaError_t e) {
    return e == cudaSuccess ? "no error" : e == cudaErrorNotReady ? "not ready" : e == cudaErrorNoDevice ? "no CUDA-capable device is detected" : "emulated error";
}
static cudaError_t cudaGetDeviceCount(int *n) {
    const char *e = getenv("SS_NCCL_EMU_DEVICES");
    *n = e && *e ? atoi(e) : 8;
    return *n > 0 ? cudaSuccess : cudaErrorNoDevice;
}
static int emu_device = -1;
static cudaError_t cudaSetDevice(int d) {
    emu_device = d;
    return cudaSuccess;
}
static cudaError_t cudaGetDeviceProperties(struct cudaDeviceProp *p, int d) {
    snprintf(p->name, sizeof p->name, "emulated device %d", d);
    return cudaSuccess;
}
static cudaError_t cudaDeviceGetPCIBusId(char *bus, int len, int d) {
    snprintf(bus, (size_t)len, "emu:%02d", d);
    return cudaSuccess;
}
static cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned flags) {
    (void)flags;
    *s = calloc(1, sizeof **s);
    if (!*s) return cudaErrorInvalidValue;
    for (int i = 0; i < 8; i++)
        if (!emu_streams[i]) {
            emu_streams[i] = *s;
            break;
        }
    return cudaSuccess;
}
static void emu_cancel_all(cudaStream_t s) {
    while (s->head) {
        emu_op *o = s->head;
        s->head = o->next;
        if (o->rq) ss_mpi_raw_cancel(o->rq);
        free(o);
    }
    s->tail = NULL;
}
static cudaError_t cudaStreamDestroy(cudaStream_t s) {
    emu_cancel_all(s);
    for (int i = 0; i < 8; i++)
        if (emu_streams[i] == s) emu_streams[i] = NULL;
    free(s);
    return cudaSuccess;
}
static cudaError_t cudaMalloc(void **p, size_t n) { return (*p = malloc(n)) ? cudaSuccess : 2; }
static cudaError_t cudaMallocHost(void **p, size_t n) { return (*p = malloc(n)) ? cudaSuccess : 2; }
static cudaError_t cudaFree(void *p) {
    free(p);
    return cudaSuccess;
}
static cudaError_t cudaFreeHost(void *p) {
    free(p);
    return cudaSuccess;
}
static cudaError_t emu_enqueue(cudaStream_t s, int kind, void *dst, const void *src, size_t n, int peer) {
    emu_op *o = calloc(1, sizeof *o);
    if (!o) return cudaErrorInvalidValue;
    *o = (emu_op){NULL, kind, dst, src, n, peer, NULL, 0};
    if (s->tail) s->tail->next = o;
    else s->head = o;
    s->tail = o;
    return cudaSuccess;
}
static cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t n, cudaMemcpyKind kind, cudaStream_t s) {
    (void)kind;
    return emu_enqueue(s, 0, dst, src, n, -1);
}
static int emu_stall(const char *what) {
    const char *e = getenv("SS_NCCL_EMU_STALL");
    return e && !strcmp(e, what);
}
/* Runs the queue as far as it can without waiting. */
static cudaError_t cudaStreamQuery(cudaStream_t s) {
    while (s->head && !s->failed) {
        emu_op *o = s->head;
        if (o->kind == 0) {
            memcpy(o->dst, o->src, o->n);
        } else {
            if (o->kind == 1 && emu_stall("send")) return cudaErrorNotReady;
            if (!o->started) {
                if (ss_mpi_raw_start(o->kind == 1, o->peer, 0, o->kind == 1 ? (void *)o->src : o->dst, o->n, &o->rq)) {
                    s->failed = 1;
                    break;
                }
                o->started = 1;
            }
            size_t got = 0;
            int r = ss_mpi_raw_test(o->rq, &got);
            if (r == 0) return cudaErrorNotReady;
            o->rq = NULL;
            if (r < 0 || (o->kind == 2 && got != o->n)) { /* NCCL would misbehave; the emulation says so */
                s->failed = 1;
                break;
            }
        }
        s->head = o->next;
        if (!s->head) s->tail = NULL;
        free(o);
    }
    return s->failed ? cudaErrorInvalidValue : cudaSuccess;
}

/* ---- NCCL stand-ins ---- */
typedef enum { ncclSuccess = 0, ncclUnhandledCudaError = 1, ncclSystemError = 2, ncclInternalError = 3, ncclInvalidArgument = 4, ncclInvalidUsage = 5, ncclInProgress = 7 } ncclResult_t;
typedef enum { ncclUint8 = 1 } ncclDataType_t;
typedef struct {
    char internal[128];
} ncclUniqueId;
typedef struct {
    int blocking;
} ncclConfig_t;
#define NCCL_CONFIG_INITIALIZER {1}
typedef struct ncclComm {
    int rank, size, blocking, polls;
    ncclResult_t state;
} *ncclComm_t;

static const char *ncclGetErrorString(ncclResult_t r) {
    return r == ncclSuccess ? "no error" : r == ncclInProgress ? "operation in progress" : r == ncclInvalidUsage ? "invalid usage" : "emulated NCCL error";
}
static const char *ncclGetLastError(ncclComm_t c) {
    (void)c;
    const char *e = getenv("SS_NCCL_EMU_LAST_ERROR");
    return e ? e : "";
}
static ncclResult_t ncclGetVersion(int *v) {
    *v = 22809;
    return ncclSuccess;
}
static ncclResult_t ncclGetUniqueId(ncclUniqueId *id) {
    if (getenv("SS_NCCL_EMU_FAIL_ID")) return ncclSystemError;
    memset(id, 0, sizeof *id);
    snprintf(id->internal, sizeof id->internal, "emu-%ld-%ld", (long)getpid(), (long)time(NULL));
    return ncclSuccess;
}
/* After an operation a non-blocking communicator is "in progress" for a few polls. */
static ncclResult_t emu_busy(ncclComm_t c, int polls) {
    if (!c->blocking) {
        c->state = ncclInProgress;
        c->polls = polls;
        return ncclInProgress;
    }
    return ncclSuccess;
}
static ncclResult_t ncclCommInitRankConfig(ncclComm_t *out, int nranks, ncclUniqueId id, int rank, ncclConfig_t *cfg) {
    (void)id;
    int r = 0, n = 1;
    if (nranks > 1 && (!ss_mpi_raw_world(&r, &n) || n != nranks || r != rank)) return ncclInvalidUsage;
    ncclComm_t c = calloc(1, sizeof *c);
    if (!c) return ncclSystemError;
    *c = (struct ncclComm){rank, nranks, cfg->blocking, 0, ncclSuccess};
    *out = c;
    return emu_busy(c, emu_stall("init") ? 1 << 30 : 3);
}
static ncclResult_t ncclCommGetAsyncError(ncclComm_t c, ncclResult_t *r) {
    if (c->state == ncclInProgress && --c->polls <= 0) c->state = ncclSuccess;
    *r = c->state;
    return ncclSuccess;
}
static ncclResult_t emu_p2p(int kind, void *buf, size_t n, ncclDataType_t t, int peer, ncclComm_t c, cudaStream_t s) {
    if (t != ncclUint8 || peer < 0 || peer >= c->size || c->state == ncclInProgress) return ncclInvalidUsage;
    if (emu_enqueue(s, kind, buf, buf, n, peer) != cudaSuccess) return ncclSystemError;
    return emu_busy(c, 2);
}
static ncclResult_t ncclSend(const void *buf, size_t n, ncclDataType_t t, int peer, ncclComm_t c, cudaStream_t s) {
    if (getenv("SS_NCCL_EMU_FAIL_SEND")) return ncclSystemError;
    return emu_p2p(1, (void *)buf, n, t, peer, c, s);
}
static ncclResult_t ncclRecv(void *buf, size_t n, ncclDataType_t t, int peer, ncclComm_t c, cudaStream_t s) {
    return emu_p2p(2, buf, n, t, peer, c, s);
}
static ncclResult_t ncclCommAbort(ncclComm_t c) {
    for (int i = 0; i < 8; i++)
        if (emu_streams[i]) emu_cancel_all(emu_streams[i]);
    free(c);
    return ncclSuccess;
}
static ncclResult_t ncclCommFinalize(ncclComm_t c) { return emu_busy(c, 2); }
static ncclResult_t ncclCommDestroy(ncclComm_t c) {
    free(c);
    return ncclSuccess;
}

#define SS_NCCL_EMULATED 1
#include "../../src/dist/comm_nccl.c"
