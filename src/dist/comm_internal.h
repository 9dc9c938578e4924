/* What an ss_comm implementation provides: point-to-point blocks and abort;
 * comm.c builds the collectives on top, so every implementation gets the
 * same rank-ordered (reproducible) reductions and the same timeouts. */
#ifndef SUBSCOPE_DIST_COMM_INTERNAL_H
#define SUBSCOPE_DIST_COMM_INTERNAL_H

#include "subscope/dist.h"

/* Tags above SS_COMM_MAX_TAG belong to the collectives. */
#define SS_COMM_TAG_COLL (SS_COMM_MAX_TAG + 1)

typedef struct ss_comm_ops {
    /* Both wait at most c->timeout seconds; `what` names the operation in errors. */
    ss_status (*send)(ss_comm *c, int dest, int tag, const void *buf, size_t n, const char *what);
    ss_status (*recv)(ss_comm *c, int src, int tag, void *buf, size_t n, const char *what);
    void (*abort)(ss_comm *c, int code);
    void (*free)(ss_comm *c);
} ss_comm_ops;

struct ss_comm {
    const ss_comm_ops *ops;
    int rank, size;
    const char *backend;
    char library[128];
    char (*hosts)[64];   /* [size] */
    double timeout;
    void *impl;
};

/* Fills c->hosts: each rank's own name, exchanged through c's own send/recv. */
ss_status ss_comm_exchange_hosts(ss_comm *c);

#ifdef SS_HAVE_MPI
/* comm_mpi.c: initialises MPI (once) and opens MPI_COMM_WORLD. */
ss_status ss_comm_mpi_open(ss_comm **out);
#endif

#endif
