/* One communicator for every distributed job (docs/DISTRIBUTED.md).
 *
 * Jobs talk to an ss_comm, never to MPI: a single-process implementation is
 * always built, an MPI one when scripts/configure.sh finds MPI (CPU ranks
 * started by mpirun or srun). Every call that waits for another rank waits at
 * most the communicator's timeout (SUBSCOPE_DIST_TIMEOUT seconds, default
 * 300) and then fails with a message naming the rank and host it waited for,
 * so a dead or stuck rank stops the job instead of hanging it.
 *
 * Collectives are rooted at rank 0 and built from point-to-point messages in
 * rank order, so their results (sums included) do not depend on timing. */
#ifndef SUBSCOPE_DIST_H
#define SUBSCOPE_DIST_H

#include <stddef.h>
#include <stdint.h>
#include "subscope/error.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ss_comm ss_comm;

/* Opens the communicator the environment describes: MPI when the process was
 * started by a launcher (OMPI_COMM_WORLD_SIZE, PMIX_RANK, PMI_SIZE, or a
 * Slurm job step's SLURM_STEP_NUM_TASKS) and this build has MPI, else a single
 * process. A launcher asking for several ranks of a build without MPI is an
 * error (each process would otherwise do the whole job on its own). MPI is
 * initialised once per process and finalised at exit. */
ss_status ss_comm_open(ss_comm **out);
/* The number of ranks a launcher announced in the environment (0: not
 * started by one; -1: started by one that did not say how many), and the
 * variable that said so (*var; NULL when 0). Reads nothing but getenv. */
int ss_comm_launched_size(const char **var);
/* This process's rank as the launcher announced it (OMPI_COMM_WORLD_RANK,
 * PMI_RANK, PMIX_RANK, or SLURM_PROCID under a Slurm step of several tasks);
 * 0 when none says. Reads nothing but getenv: for checks made before MPI
 * starts, such as the output folder that only rank 0 writes in. */
int ss_comm_launched_rank(void);
/* A one-rank communicator, whatever the environment. */
ss_status ss_comm_open_single(ss_comm **out);
/* The process's communicator, opened by ss_comm_open on first use and kept
 * until exit (jobs share it; do not free it). */
ss_status ss_comm_world(ss_comm **out);
void ss_comm_free(ss_comm *c);
/* A communicator over some of parent's ranks: ranks[i] (of parent, each once,
 * the caller among them) is rank i of the group. Messages travel through
 * parent, in tag space `space` (1..SS_COMM_GROUP_SPACES), so that the
 * group's point-to-point messages and collectives never match the parent's
 * or another space's, even between the same two processes; groups in one
 * space must not share a pair of ranks. Hosts, devices and the timeout are
 * the parent's; free the group (ss_comm_free) before the parent. */
#define SS_COMM_GROUP_SPACES 3
ss_status ss_comm_group(ss_comm *parent, const int *ranks, int n, int space, ss_comm **out);

int ss_comm_rank(const ss_comm *c);
int ss_comm_size(const ss_comm *c);
/* "single" or "mpi". */
const char *ss_comm_backend(const ss_comm *c);
/* The library behind it, e.g. "Open MPI v4.1.4" ("" for single). */
const char *ss_comm_library(const ss_comm *c);
/* Host name of any rank (known to every rank from the start). */
const char *ss_comm_host(const ss_comm *c, int rank);
/* Seconds a blocking call waits for another rank before failing (> 0). */
double ss_comm_timeout(const ss_comm *c);
void ss_comm_set_timeout(ss_comm *c, double seconds);

ss_status ss_comm_barrier(ss_comm *c);
/* root's n bytes to every rank. */
ss_status ss_comm_bcast(ss_comm *c, void *buf, size_t n, int root);
/* Every rank's n bytes to rank 0, in rank order: recv [size * n] on rank 0
 * (ignored elsewhere). */
ss_status ss_comm_gather(ss_comm *c, const void *send, size_t n, void *recv);
/* Every rank's n bytes (n may differ) to rank 0: *recv (malloc'd, the
 * caller frees) holds them back to back in rank order and counts[size] their
 * sizes. Elsewhere *recv is NULL; counts may be NULL. */
ss_status ss_comm_gatherv(ss_comm *c, const void *send, size_t n, void **recv, size_t *counts);
/* Element-wise sums over ranks, in place on every rank. The doubles are added
 * on rank 0 in rank order, so every run gives the same bits. */
ss_status ss_comm_allreduce_i64(ss_comm *c, int64_t *v, size_t n);
ss_status ss_comm_allreduce_f64(ss_comm *c, double *v, size_t n);
/* Point-to-point blocks of bytes (any size; messages between two ranks with
 * the same tag arrive in order). tag: 0 .. SS_COMM_MAX_TAG. recv needs exactly
 * n bytes; a message of another size is an error. */
#define SS_COMM_MAX_TAG 4095
ss_status ss_comm_send(ss_comm *c, int dest, int tag, const void *buf, size_t n);
ss_status ss_comm_recv(ss_comm *c, int src, int tag, void *buf, size_t n);
/* A send that may complete later: buf must stay untouched until ss_comm_wait
 * (*req NULL where the communicator sent it at once). Matching and order are
 * those of ss_comm_send; the wait is bounded by the timeout. */
typedef struct ss_comm_req ss_comm_req;
ss_status ss_comm_isend(ss_comm *c, int dest, int tag, const void *buf, size_t n, ss_comm_req **req);
ss_status ss_comm_wait(ss_comm *c, ss_comm_req *req);
/* 1 if an isend's block moves while the caller computes (MPI with the
 * sender thread, src/dist/comm_mpi.c); 0 if it moves only while the caller
 * is inside the communicator (in a later send, receive or wait), so that a
 * receiver may wait for the sender's next call. */
int ss_comm_sends_in_background(const ss_comm *c);

/* Ends every rank of a multi-rank job, after printing "subscope: error on
 * rank R of N (host H), stopping every rank: message" on stderr; exit status code. One rank cannot simply
 * return an error while the others wait for it, so this is the one place the
 * library stops a process. On a single-process communicator it does nothing
 * (the caller returns its error as usual). */
void ss_comm_abort(ss_comm *c, int code, const char *message);
/* For jobs: st unchanged; if st is an error and there are several ranks,
 * aborts the job with ss_last_error() (does not return). */
ss_status ss_comm_check(ss_comm *c, ss_status st);

/* Splits n items, in units of `unit` consecutive items (a batch), into
 * `size` contiguous blocks of whole units; block `rank` is [*lo, *hi). The
 * first blocks get one unit more when units do not divide evenly; only the
 * last unit may be short. */
void ss_comm_shard(int64_t n, int64_t unit, int rank, int size, int64_t *lo, int64_t *hi);

/* ---- NCCL (GPU ranks), device buffers and rendezvous files ------------------
 * (src/dist/comm_nccl.c, src/dist/rendezvous.c; docs/DISTRIBUTED.md "NCCL")
 *
 * SUBSCOPE_DIST=nccl makes ss_comm_open return the NCCL communicator: one CUDA
 * device per rank, every message staged through that device; the NCCL unique
 * id travels over MPI when a launcher started the job and this build has MPI,
 * else through a rendezvous file (SUBSCOPE_NCCL_RENDEZVOUS=DIR, Slurm's
 * environment). Every call above keeps its meaning and its timeout. */

/* The CUDA device this rank's communicator moves data through (-1: host
 * memory, the single and MPI communicators). */
int ss_comm_device(const ss_comm *c);
/* Any rank's device, e.g. "cuda:0 NVIDIA H100 80GB HBM3 (PCI 0000:19:00.0)";
 * "" on host communicators, "?" for a rank that does not exist. */
const char *ss_comm_device_name(const ss_comm *c, int rank);

typedef enum { SS_COMM_F32 = 0, SS_COMM_F64 = 1 } ss_comm_dtype;
/* Element-wise sum over ranks of n values, in place on every rank, for jobs
 * that keep partial sums where they compute: buf is memory of ss_comm_device
 * (device memory on nccl, host memory on single and MPI), so a job has one
 * code path. The values are added on rank 0 in rank order in float64 (fp32
 * rounded once at the end), so every run gives the same bits on every
 * backend. Work that writes buf on another stream must be complete. */
ss_status ss_comm_allreduce_dev(ss_comm *c, void *buf, size_t n, ss_comm_dtype type);

/* Rendezvous files on shared storage: rank 0 publishes a few opaque bytes
 * (the NCCL unique id) as DIR/KEY.ncclid, written under a temporary name and
 * renamed, so a reader sees all of it or nothing; the other ranks poll for it.
 * The file records the key and the number of ranks: a file left by another
 * job (or another try of this one) is never accepted. */
#define SS_RENDEZVOUS_MAX 4096
typedef struct {
    int rank, size, local_rank;
    char key[160]; /* "slurm-JOB.STEP.rRESTART[.pPORT]": unique to one srun */
} ss_rendezvous_env;
/* Rank, size, local rank and key from Slurm's task environment (SLURM_PROCID,
 * SLURM_NTASKS or SLURM_STEP_NUM_TASKS, SLURM_LOCALID, SLURM_JOB_ID,
 * SLURM_STEP_ID, SLURM_RESTART_COUNT, SLURM_SRUN_COMM_PORT). */
ss_status ss_rendezvous_env_slurm(ss_rendezvous_env *e);
/* DIR/KEY.ncclid (malloc'd). */
char *ss_rendezvous_path(const char *dir, const char *key);
ss_status ss_rendezvous_publish(const char *dir, const char *key, int nranks, const void *data, size_t n);
/* Waits up to timeout seconds for the file of key and nranks, and copies its
 * n bytes to data; the error names the file and what was wrong with it. */
ss_status ss_rendezvous_wait(const char *dir, const char *key, int nranks, void *data, size_t n, double timeout);
/* Removes the file (no error if it is gone). */
void ss_rendezvous_remove(const char *dir, const char *key);
/* ---- end of the NCCL block ---- */

#ifdef __cplusplus
}
#endif
#endif
