/* The communicator front end (include/subscope/dist.h): choosing an
 * implementation from the environment, the single-process implementation,
 * and the collectives, built from point-to-point messages rooted at rank 0.
 *
 * Rooted, rank-ordered collectives cost O(size) messages at rank 0 rather than
 * O(log size); for CPU ranks exchanging statistics once per checkpoint that is
 * negligible, and it makes every reduction's rounding independent of timing
 * and lets a wait name the one rank it is waiting for. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "comm_internal.h"
#include "subscope/util.h"

#define DEFAULT_TIMEOUT 300.0

enum { TAG_GATHER = SS_COMM_TAG_COLL, TAG_BCAST, TAG_GATHERV_N, TAG_GATHERV, TAG_HOSTS };

/* ---- single process ---- */

static ss_status single_p2p(ss_comm *c, int peer, int tag, const void *buf, size_t n, const char *what) {
    (void)buf, (void)n, (void)tag;
    return ss_errorf(SS_ERR_ARG, "%s with rank %d, but this is a single-process run (1 rank)", what, peer);
}
static ss_status single_send(ss_comm *c, int dest, int tag, const void *buf, size_t n, const char *what) {
    return single_p2p(c, dest, tag, buf, n, what);
}
static ss_status single_recv(ss_comm *c, int src, int tag, void *buf, size_t n, const char *what) {
    return single_p2p(c, src, tag, buf, n, what);
}
static void single_abort(ss_comm *c, int code) { (void)c, (void)code; }
static void single_free(ss_comm *c) { (void)c; }
static const ss_comm_ops single_ops = {single_send, single_recv, single_abort, single_free, NULL, NULL, NULL, NULL, NULL};

static double env_timeout(void) {
    double v = DEFAULT_TIMEOUT; /* a bad value is refused before a command runs (ss_env_check) */
    if (ss_env_real("SUBSCOPE_DIST_TIMEOUT", 1e-3, 1e9, DEFAULT_TIMEOUT, "seconds", &v)) ss_error_clear(), v = DEFAULT_TIMEOUT;
    return v;
}

static void own_host(char out[64]) {
    if (gethostname(out, 64) != 0) snprintf(out, 64, "unknown");
    out[63] = 0;
}

ss_status ss_comm_open_single(ss_comm **out) {
    *out = NULL;
    ss_comm *c = ss_calloc(1, sizeof *c, "communicator");
    if (!c) return SS_ERR_NOMEM;
    c->hosts = ss_calloc(1, sizeof *c->hosts, "communicator hosts");
    if (!c->hosts) {
        free(c);
        return SS_ERR_NOMEM;
    }
    c->ops = &single_ops;
    c->rank = 0;
    c->size = 1;
    c->backend = "single";
    c->timeout = env_timeout();
    own_host(c->hosts[0]);
    *out = c;
    return SS_OK;
}

ss_status ss_comm_exchange_hosts(ss_comm *c) {
    c->timeout = env_timeout();
    c->hosts = ss_calloc((size_t)c->size, sizeof *c->hosts, "communicator hosts");
    if (!c->hosts) return SS_ERR_NOMEM;
    char me[64];
    own_host(me);
    SS_TRY(ss_comm_gather(c, me, sizeof me, c->hosts));
    return ss_comm_bcast(c, c->hosts, (size_t)c->size * sizeof *c->hosts, 0);
}

int ss_comm_launched_size(const char **var) {
    static const char *names[] = {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "SLURM_STEP_NUM_TASKS"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        const char *v = getenv(names[i]);
        if (v && *v) {
            *var = names[i];
            int64_t n;
            return ss_parse_int(v, &n) && n > 0 && n <= INT32_MAX ? (int)n : -1;
        }
    }
    if (getenv("PMIX_RANK")) {
        *var = "PMIX_RANK";
        return -1;
    }
    *var = NULL;
    return 0;
}

int ss_comm_launched_rank(void) {
    static const char *names[] = {"OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK"};
    const char *v = NULL;
    for (size_t i = 0; i < sizeof names / sizeof names[0] && !(v && *v); i++) v = getenv(names[i]);
    const char *n = getenv("SLURM_STEP_NUM_TASKS");
    int64_t x;
    if (!(v && *v) && n && ss_parse_int(n, &x) && x > 1) v = getenv("SLURM_PROCID");
    return v && ss_parse_int(v, &x) && x > 0 && x <= INT32_MAX ? (int)x : 0;
}

/* The MPI communicator, checked against the size the launcher announced. */
static ss_status open_launched(int n, const char *var, ss_comm **out) {
#ifdef SS_HAVE_MPI
    SS_TRY(ss_comm_mpi_open(out));
    if (n > 0 && (*out)->size != n) {
        int got = (*out)->size;
        ss_comm_free(*out);
        *out = NULL;
        return ss_errorf(SS_ERR_ARG,
                         "the launcher started %d tasks (%s) but MPI sees %d rank%s: under Slurm use srun --mpi=pmix "
                         "(or pmi2), or start the job with mpirun",
                         n, var, got, got == 1 ? "" : "s");
    }
    return SS_OK;
#else
    if (n == 1) return ss_comm_open_single(out);
    char count[32];
    if (n > 0) snprintf(count, sizeof count, "%d", n);
    else snprintf(count, sizeof count, "several");
    return ss_errorf(SS_ERR_UNSUPPORTED,
                     "started as one of %s ranks (%s is set) but this build has no MPI, so each process would run the "
                     "whole job alone; install MPI ('make deps': openmpi-bin libopenmpi-dev) and rebuild",
                     count, var);
#endif
}

/* The NCCL communicator: linked into this program (the unit tests, a
 * library user), or else loaded from the plugin libsubscope-nccl.so beside
 * bin/subscope, so that only SUBSCOPE_DIST=nccl loads NCCL. Builds without
 * NCCL have no plugin and say so. */
#pragma weak ss_comm_nccl_open
static ss_status nccl_open(ss_comm *boot, const char *rdv_dir, ss_comm **out) {
    if (ss_comm_nccl_open) return ss_comm_nccl_open(boot, rdv_dir, out);
    ss_status (*fn)(ss_comm *, const char *, ss_comm **) = NULL;
#ifdef SS_HAVE_NCCL
    fn = (ss_status(*)(ss_comm *, const char *, ss_comm **))ss_plugin_symbol("libsubscope-nccl.so", "ss_comm_nccl_open");
    if (!fn) {
        ss_comm_free(boot);
        return ss_error_context(SS_ERR_UNSUPPORTED, "SUBSCOPE_DIST=nccl");
    }
#else
    ss_comm_free(boot);
    return ss_errorf(SS_ERR_UNSUPPORTED,
                     "SUBSCOPE_DIST=nccl, but this build has no NCCL (scripts/configure.sh found no nvcc or no nccl.h and "
                     "libnccl; see 'make features'): install NCCL and the CUDA toolkit and rebuild, or unset SUBSCOPE_DIST");
#endif
    return fn(boot, rdv_dir, out);
}

/* SUBSCOPE_DIST=nccl: the unique id goes through the rendezvous file when
 * SUBSCOPE_NCCL_RENDEZVOUS names one, else over MPI under a launcher, else
 * the job is one rank. */
static ss_status open_nccl(int n, const char *var, ss_comm **out) {
    const char *dir = getenv("SUBSCOPE_NCCL_RENDEZVOUS");
    ss_comm *boot = NULL;
    if (dir && *dir) return nccl_open(NULL, dir, out);
    if (n == 0) SS_TRY(ss_comm_open_single(&boot));
    else {
#ifndef SS_HAVE_MPI
        if (n != 1)
            return ss_errorf(SS_ERR_UNSUPPORTED,
                             "SUBSCOPE_DIST=nccl under a launcher (%s is set): this build has no MPI to pass NCCL's unique "
                             "id, so set SUBSCOPE_NCCL_RENDEZVOUS=DIR, a directory every node shares (srun), or rebuild "
                             "with MPI ('make deps')",
                             var);
#endif
        SS_TRY(open_launched(n, var, &boot));
    }
    return nccl_open(boot, NULL, out);
}

ss_status ss_comm_open(ss_comm **out) {
    *out = NULL;
    const char *var;
    int n = ss_comm_launched_size(&var);
    static const char *const dist[] = {"auto", "nccl", NULL};
    int want = 0;
    SS_TRY(ss_env_choice("SUBSCOPE_DIST", dist, 0, "auto (single process or MPI, from the launcher) or nccl", &want));
    if (n < 0 && var && strcmp(var, "PMIX_RANK"))
        return ss_errorf(SS_ERR_ARG, "%s='%s': the launcher's number of tasks is not a positive whole number", var,
                         getenv(var));
    if (want == 1) return open_nccl(n, var, out);
    if (n == 0) return ss_comm_open_single(out);
    return open_launched(n, var, out);
}

/* ---- groups: a subset of a parent's ranks (ss_comm_group) ---- */

typedef struct {
    ss_comm *parent;
    int *ranks;   /* [size]: the parent's rank of each of ours */
    int tag_base; /* added to every tag, so the group's messages never meet the parent's */
} group_impl;

#define GROUP(c) ((group_impl *)(c)->impl)

static ss_status group_send(ss_comm *c, int dest, int tag, const void *buf, size_t n, const char *what) {
    group_impl *g = GROUP(c);
    return g->parent->ops->send(g->parent, g->ranks[dest], g->tag_base + tag, buf, n, what);
}
static ss_status group_recv(ss_comm *c, int src, int tag, void *buf, size_t n, const char *what) {
    group_impl *g = GROUP(c);
    return g->parent->ops->recv(g->parent, g->ranks[src], g->tag_base + tag, buf, n, what);
}
static void group_abort(ss_comm *c, int code) { GROUP(c)->parent->ops->abort(GROUP(c)->parent, code); }
static void group_free(ss_comm *c) {
    if (!c->impl) return;
    free(GROUP(c)->ranks);
    free(c->impl);
}
static ss_status group_dev_to_host(ss_comm *c, void *host, const void *dev, size_t n) {
    return GROUP(c)->parent->ops->dev_to_host(GROUP(c)->parent, host, dev, n);
}
static ss_status group_host_to_dev(ss_comm *c, void *dev, const void *host, size_t n) {
    return GROUP(c)->parent->ops->host_to_dev(GROUP(c)->parent, dev, host, n);
}
static ss_status group_isend(ss_comm *c, int dest, int tag, const void *buf, size_t n, ss_comm_req **req) {
    group_impl *g = GROUP(c);
    if (!g->parent->ops->isend) {
        *req = NULL;
        return g->parent->ops->send(g->parent, g->ranks[dest], g->tag_base + tag, buf, n, "send");
    }
    return g->parent->ops->isend(g->parent, g->ranks[dest], g->tag_base + tag, buf, n, req);
}
static ss_status group_wait(ss_comm *c, ss_comm_req *req) { return GROUP(c)->parent->ops->wait(GROUP(c)->parent, req); }
static int group_background(const ss_comm *c) { return ss_comm_sends_in_background(GROUP(c)->parent); }

static const ss_comm_ops group_ops = {group_send, group_recv,  group_abort, group_free,      NULL,
                                      NULL,       group_isend, group_wait,  group_background};
static const ss_comm_ops group_dev_ops = {group_send,        group_recv,  group_abort, group_free,      group_dev_to_host,
                                          group_host_to_dev, group_isend, group_wait,  group_background};

ss_status ss_comm_group(ss_comm *parent, const int *ranks, int n, int space, ss_comm **out) {
    *out = NULL;
    if (space < 1 || space > SS_COMM_GROUP_SPACES || n < 1 || n > parent->size)
        return ss_errorf(SS_ERR_ARG, "group of %d ranks in tag space %d (1..%d) of a %d-rank communicator", n, space,
                         SS_COMM_GROUP_SPACES, parent->size);
    int me = -1;
    for (int i = 0; i < n; i++) {
        if (ranks[i] < 0 || ranks[i] >= parent->size)
            return ss_errorf(SS_ERR_ARG, "group: rank %d does not exist (%d ranks)", ranks[i], parent->size);
        for (int j = 0; j < i; j++)
            if (ranks[j] == ranks[i]) return ss_errorf(SS_ERR_ARG, "group: rank %d listed twice", ranks[i]);
        if (ranks[i] == parent->rank) me = i;
    }
    if (me < 0) return ss_errorf(SS_ERR_ARG, "group: rank %d is not one of its members", parent->rank);
    ss_comm *c = ss_calloc(1, sizeof *c, "communicator group");
    group_impl *g = ss_calloc(1, sizeof *g, "communicator group");
    int *map = ss_malloc((size_t)n * sizeof *map, "communicator group");
    char(*hosts)[64] = ss_calloc((size_t)n, sizeof *hosts, "communicator group");
    char(*devices)[128] = parent->devices ? ss_calloc((size_t)n, sizeof *devices, "communicator group") : NULL;
    if (!c || !g || !map || !hosts || (parent->devices && !devices)) {
        free(c), free(g), free(map), free(hosts), free(devices);
        return SS_ERR_NOMEM;
    }
    memcpy(map, ranks, (size_t)n * sizeof *map);
    for (int i = 0; i < n; i++) {
        memcpy(hosts[i], ss_comm_host(parent, ranks[i]), sizeof hosts[i]);
        if (devices) memcpy(devices[i], parent->devices[ranks[i]], sizeof devices[i]);
    }
    *g = (group_impl){parent, map, space * SS_COMM_GROUP_TAG_STRIDE};
    *c = (ss_comm){.ops = parent->devices ? &group_dev_ops : &group_ops, .rank = me, .size = n, .backend = parent->backend,
                   .hosts = hosts, .timeout = parent->timeout, .impl = g, .device = parent->device, .devices = devices};
    memcpy(c->library, parent->library, sizeof c->library);
    *out = c;
    return SS_OK;
}

static ss_comm *world;

ss_status ss_comm_world(ss_comm **out) {
    if (!world) SS_TRY(ss_comm_open(&world));
    *out = world;
    return SS_OK;
}

void ss_comm_free(ss_comm *c) {
    if (!c) return;
    if (c == world) world = NULL;
    c->ops->free(c);
    free(c->hosts);
    free(c->devices);
    free(c);
}

int ss_comm_rank(const ss_comm *c) { return c->rank; }
int ss_comm_size(const ss_comm *c) { return c->size; }
const char *ss_comm_backend(const ss_comm *c) { return c->backend; }
const char *ss_comm_library(const ss_comm *c) { return c->library; }
const char *ss_comm_host(const ss_comm *c, int rank) {
    return rank >= 0 && rank < c->size && c->hosts ? c->hosts[rank] : "?";
}
double ss_comm_timeout(const ss_comm *c) { return c->timeout; }
int ss_comm_device(const ss_comm *c) { return c->devices ? c->device : -1; }
const char *ss_comm_device_name(const ss_comm *c, int rank) {
    if (rank < 0 || rank >= c->size) return "?";
    return c->devices ? c->devices[rank] : "";
}
void ss_comm_set_timeout(ss_comm *c, double seconds) {
    if (seconds > 0) c->timeout = seconds;
}

static ss_status check_peer(const ss_comm *c, int peer, const char *what) {
    if (peer < 0 || peer >= c->size)
        return ss_errorf(SS_ERR_ARG, "%s: rank %d does not exist (the job has %d rank%s)", what, peer, c->size,
                         c->size == 1 ? "" : "s");
    if (peer == c->rank) return ss_errorf(SS_ERR_ARG, "%s: rank %d addressed itself", what, peer);
    return SS_OK;
}

ss_status ss_comm_send(ss_comm *c, int dest, int tag, const void *buf, size_t n) {
    if (tag < 0 || tag > SS_COMM_MAX_TAG) return ss_errorf(SS_ERR_ARG, "send: tag %d outside 0..%d", tag, SS_COMM_MAX_TAG);
    SS_TRY(check_peer(c, dest, "send"));
    return c->ops->send(c, dest, tag, buf, n, "send");
}

ss_status ss_comm_isend(ss_comm *c, int dest, int tag, const void *buf, size_t n, ss_comm_req **req) {
    *req = NULL;
    if (tag < 0 || tag > SS_COMM_MAX_TAG) return ss_errorf(SS_ERR_ARG, "send: tag %d outside 0..%d", tag, SS_COMM_MAX_TAG);
    SS_TRY(check_peer(c, dest, "send"));
    if (!c->ops->isend) return c->ops->send(c, dest, tag, buf, n, "send");
    return c->ops->isend(c, dest, tag, buf, n, req);
}

ss_status ss_comm_wait(ss_comm *c, ss_comm_req *req) { return req ? c->ops->wait(c, req) : SS_OK; }

int ss_comm_sends_in_background(const ss_comm *c) { return c->ops->background && c->ops->background(c); }

ss_status ss_comm_recv(ss_comm *c, int src, int tag, void *buf, size_t n) {
    if (tag < 0 || tag > SS_COMM_MAX_TAG) return ss_errorf(SS_ERR_ARG, "recv: tag %d outside 0..%d", tag, SS_COMM_MAX_TAG);
    SS_TRY(check_peer(c, src, "recv"));
    return c->ops->recv(c, src, tag, buf, n, "recv");
}

ss_status ss_comm_gather(ss_comm *c, const void *send, size_t n, void *recv) {
    if (c->rank != 0) return c->ops->send(c, 0, TAG_GATHER, send, n, "gather");
    if (n) memcpy(recv, send, n);
    for (int r = 1; r < c->size; r++) SS_TRY(c->ops->recv(c, r, TAG_GATHER, (char *)recv + (size_t)r * n, n, "gather"));
    return SS_OK;
}

ss_status ss_comm_bcast(ss_comm *c, void *buf, size_t n, int root) {
    SS_TRY(root >= 0 && root < c->size ? SS_OK : ss_errorf(SS_ERR_ARG, "broadcast from rank %d of %d", root, c->size));
    if (c->rank != root) return c->ops->recv(c, root, TAG_BCAST, buf, n, "broadcast");
    for (int r = 0; r < c->size; r++)
        if (r != root) SS_TRY(c->ops->send(c, r, TAG_BCAST, buf, n, "broadcast"));
    return SS_OK;
}

ss_status ss_comm_barrier(ss_comm *c) {
    char byte = 0, *all = c->rank == 0 ? ss_malloc((size_t)c->size, "barrier") : NULL;
    if (c->rank == 0 && !all) return SS_ERR_NOMEM;
    ss_status st = ss_comm_gather(c, &byte, 1, all);
    free(all);
    return st ? st : ss_comm_bcast(c, &byte, 1, 0);
}

ss_status ss_comm_gatherv(ss_comm *c, const void *send, size_t n, void **recv, size_t *counts) {
    *recv = NULL;
    int64_t mine = (int64_t)n;
    if (c->rank != 0) {
        SS_TRY(c->ops->send(c, 0, TAG_GATHERV_N, &mine, sizeof mine, "gatherv"));
        return c->ops->send(c, 0, TAG_GATHERV, send, n, "gatherv");
    }
    size_t total = n, *sz = counts ? counts : ss_malloc((size_t)c->size * sizeof(size_t), "gatherv sizes");
    if (!sz) return SS_ERR_NOMEM;
    sz[0] = n;
    ss_status st = SS_OK;
    for (int r = 1; r < c->size && !st; r++) {
        int64_t v;
        if (!(st = c->ops->recv(c, r, TAG_GATHERV_N, &v, sizeof v, "gatherv"))) {
            sz[r] = (size_t)v;
            if (v < 0 || total > SIZE_MAX - sz[r]) st = ss_errorf(SS_ERR_INTERNAL, "gatherv: rank %d sends %lld bytes", r, (long long)v);
            else total += sz[r];
        }
    }
    char *all = st ? NULL : ss_malloc(total ? total : 1, "gatherv buffer");
    if (!st && !all) st = SS_ERR_NOMEM;
    if (!st) {
        if (n) memcpy(all, send, n);
        size_t off = n;
        for (int r = 1; r < c->size && !st; r++) {
            st = c->ops->recv(c, r, TAG_GATHERV, all + off, sz[r], "gatherv");
            off += sz[r];
        }
    }
    if (sz != counts) free(sz);
    if (st) {
        free(all);
        return st;
    }
    *recv = all;
    return SS_OK;
}

/* Gathers n elements of `elem` bytes to rank 0, which sums them in rank order, then broadcasts. */
static ss_status allreduce(ss_comm *c, void *v, size_t n, size_t elem, int is_double) {
    if (c->size == 1) return SS_OK;
    size_t bytes;
    if (!ss_mul_ok(n, elem, &bytes)) return ss_errorf(SS_ERR_NOMEM, "allreduce of %zu elements overflows", n);
    void *all = NULL;
    if (c->rank == 0) {
        size_t total;
        if (!ss_mul_ok(bytes, (size_t)c->size, &total)) return ss_errorf(SS_ERR_NOMEM, "allreduce buffer overflows");
        if (!(all = ss_malloc(total ? total : 1, "allreduce buffer"))) return SS_ERR_NOMEM;
    }
    ss_status st = ss_comm_gather(c, v, bytes, all);
    if (!st && c->rank == 0) {
        for (int r = 1; r < c->size; r++)
            for (size_t i = 0; i < n; i++) {
                if (is_double) ((double *)v)[i] += ((const double *)all)[(size_t)r * n + i];
                else ((int64_t *)v)[i] += ((const int64_t *)all)[(size_t)r * n + i];
            }
    }
    free(all);
    return st ? st : ss_comm_bcast(c, v, bytes, 0);
}

ss_status ss_comm_allreduce_i64(ss_comm *c, int64_t *v, size_t n) { return allreduce(c, v, n, sizeof *v, 0); }
ss_status ss_comm_allreduce_f64(ss_comm *c, double *v, size_t n) { return allreduce(c, v, n, sizeof *v, 1); }

ss_status ss_comm_allreduce_dev(ss_comm *c, void *buf, size_t n, ss_comm_dtype type) {
    if (type != SS_COMM_F32 && type != SS_COMM_F64) return ss_errorf(SS_ERR_ARG, "allreduce: unknown element type %d", (int)type);
    const size_t elem = type == SS_COMM_F64 ? sizeof(double) : sizeof(float);
    size_t bytes, dbytes;
    if (!ss_mul_ok(n, elem, &bytes) || !ss_mul_ok(n, sizeof(double), &dbytes))
        return ss_errorf(SS_ERR_NOMEM, "allreduce of %zu elements overflows", n);
    if (c->size == 1 || n == 0) return SS_OK;
    const int on_device = c->ops->dev_to_host != NULL;
    if (!on_device && type == SS_COMM_F64) return ss_comm_allreduce_f64(c, buf, n);
    /* Device buffers, and fp32 ones anywhere, are summed as doubles in host memory. */
    double *d = ss_malloc(dbytes, "allreduce buffer");
    if (!d) return SS_ERR_NOMEM;
    ss_status st = SS_OK;
    if (type == SS_COMM_F64) st = on_device ? c->ops->dev_to_host(c, d, buf, bytes) : SS_OK;
    else {
        float *f = on_device ? ss_malloc(bytes, "allreduce buffer") : buf;
        if (!f) st = SS_ERR_NOMEM;
        else if (on_device) st = c->ops->dev_to_host(c, f, buf, bytes);
        for (size_t i = 0; !st && i < n; i++) d[i] = f[i];
        if (!st) st = ss_comm_allreduce_f64(c, d, n);
        for (size_t i = 0; !st && i < n; i++) f[i] = (float)d[i];
        if (!st && on_device) st = c->ops->host_to_dev(c, buf, f, bytes);
        if (f != buf) free(f);
        free(d);
        return st;
    }
    if (!st) st = ss_comm_allreduce_f64(c, d, n);
    if (!st) st = c->ops->host_to_dev(c, buf, d, bytes);
    free(d);
    return st;
}

void ss_comm_abort(ss_comm *c, int code, const char *message) {
    if (!c || c->size <= 1) return;
    ss_eprintf("subscope: error on rank %d of %d (host %s), stopping every rank: %s\n", c->rank, c->size,
               ss_comm_host(c, c->rank), message && *message ? message : "aborted");
    fflush(stderr);
    c->ops->abort(c, code ? code : 1);
    _exit(code ? code : 1); /* an implementation's abort should not return */
}

ss_status ss_comm_check(ss_comm *c, ss_status st) {
    if (st && c && c->size > 1) ss_comm_abort(c, 1, ss_last_error());
    return st;
}

void ss_comm_shard(int64_t n, int64_t unit, int rank, int size, int64_t *lo, int64_t *hi) {
    if (n <= 0 || size <= 0 || rank < 0 || rank >= size) {
        *lo = *hi = n > 0 ? n : 0;
        return;
    }
    if (unit < 1) unit = 1;
    int64_t units = n / unit + (n % unit != 0), base = units / size, extra = units % size;
    int64_t u0 = rank * base + (rank < extra ? rank : extra), u1 = u0 + base + (rank < extra);
    *lo = u0 * unit < n ? u0 * unit : n;
    *hi = u1 * unit < n ? u1 * unit : n;
}
