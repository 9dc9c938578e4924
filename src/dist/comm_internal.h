/* What an ss_comm implementation provides: point-to-point blocks and abort;
 * comm.c builds the collectives on top, so every implementation gets the
 * same rank-ordered (reproducible) reductions and the same timeouts. */
#ifndef SUBSCOPE_DIST_COMM_INTERNAL_H
#define SUBSCOPE_DIST_COMM_INTERNAL_H

#include "subscope/dist.h"

/* Tags above SS_COMM_MAX_TAG belong to the collectives. */
#define SS_COMM_TAG_COLL (SS_COMM_MAX_TAG + 1)
/* A group's tags are its parent's plus space * this (under MPI's guaranteed
 * 32767 and SS_MPI_RAW_TAG for SS_COMM_GROUP_SPACES spaces). */
#define SS_COMM_GROUP_TAG_STRIDE 5000

typedef struct ss_comm_ops {
    /* Both wait at most c->timeout seconds; `what` names the operation in errors. */
    ss_status (*send)(ss_comm *c, int dest, int tag, const void *buf, size_t n, const char *what);
    ss_status (*recv)(ss_comm *c, int src, int tag, void *buf, size_t n, const char *what);
    void (*abort)(ss_comm *c, int code);
    void (*free)(ss_comm *c);
    /* Device communicators only (NULL: buffers are host memory): copies
     * between a buffer on c's device and host memory, bounded by c->timeout. */
    ss_status (*dev_to_host)(ss_comm *c, void *host, const void *dev, size_t n);
    ss_status (*host_to_dev)(ss_comm *c, void *dev, const void *host, size_t n);
    /* Optional (NULL: ss_comm_isend sends at once): a send that completes
     * later, in ss_comm_wait, within c->timeout from the wait's start. */
    ss_status (*isend)(ss_comm *c, int dest, int tag, const void *buf, size_t n, ss_comm_req **req);
    ss_status (*wait)(ss_comm *c, ss_comm_req *req);
    /* Optional (NULL: no): whether an isend moves while the caller computes
     * (ss_comm_sends_in_background). */
    int (*background)(const ss_comm *c);
} ss_comm_ops;

struct ss_comm {
    const ss_comm_ops *ops;
    int rank, size;
    const char *backend;
    char library[128];
    char (*hosts)[64];   /* [size] */
    double timeout;
    void *impl;
    int device;             /* CUDA device of a device communicator */
    char (*devices)[128];   /* [size] each rank's device, or NULL (host memory) */
};

/* Fills c->hosts: each rank's own name, exchanged through c's own send/recv. */
ss_status ss_comm_exchange_hosts(ss_comm *c);

/* comm_nccl.c: the NCCL communicator. boot (owned from here on, even on
 * error) is the communicator the unique id travels over, or NULL to use the
 * rendezvous file in rdv_dir with Slurm's environment. Builds without NCCL
 * refuse with a message. (The unit-test binary links an emulated copy of
 * comm_nccl.c, tests/unit/nccl_emu.c, in its place: this must stay the one
 * symbol comm_nccl.c exports.) */
ss_status ss_comm_nccl_open(ss_comm *boot, const char *rdv_dir, ss_comm **out);

/* Nonblocking byte transfers on MPI_COMM_WORLD for that emulated NCCL (MPI
 * tags from SS_MPI_RAW_TAG up; they do not meet the communicator's own).
 * Without MPI (or before it is initialised) start fails with a message. */
#define SS_MPI_RAW_TAG 20000
typedef struct ss_mpi_raw ss_mpi_raw;
ss_status ss_mpi_raw_start(int sending, int peer, int tag, void *buf, size_t n, ss_mpi_raw **out);
/* 1: complete (freed; *got the bytes moved), 0: pending, -1: failed (freed). */
int ss_mpi_raw_test(ss_mpi_raw *rq, size_t *got);
/* Withdraws a pending transfer (a receive is cancelled) and frees it. */
void ss_mpi_raw_cancel(ss_mpi_raw *rq);
/* This process's rank and size in MPI_COMM_WORLD; 0 if MPI is not running. */
int ss_mpi_raw_world(int *rank, int *size);

#ifdef SS_HAVE_MPI
/* comm_mpi.c: initialises MPI (once) and opens MPI_COMM_WORLD. */
ss_status ss_comm_mpi_open(ss_comm **out);
#endif

#endif
