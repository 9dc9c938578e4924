/* Rendezvous files (include/subscope/dist.h): how ranks started without MPI
 * (srun without PMI wire-up) agree on the NCCL unique id. Rank 0 writes it to
 * shared storage; the others poll for the file. Nothing here needs NCCL: the
 * payload is opaque bytes, so the unit tests run all of it on the CPU.
 *
 * The file name comes from Slurm's job and step ids, the restart count (a
 * requeued job keeps its id) and srun's port (one per srun invocation), so a
 * file left behind by another job or an earlier try has another name; the
 * file also records that key and the number of ranks, so a copied or renamed
 * file is refused as well. Readers poll with growing sleeps up to 100 ms: a
 * shared file system's metadata server sees a handful of stat calls a second
 * per rank while they wait. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "subscope/dist.h"
#include "subscope/util.h"

static const char MAGIC[8] = {'S', 'S', 'R', 'D', 'V', '1', '\n', 0};

static uint64_t fnv1a(const unsigned char *p, size_t n) {
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 1099511628211ULL;
    return h;
}

static int env_int(const char *name, int *out) {
    const char *v = getenv(name);
    if (!v || !*v) return 0;
    int64_t x;
    if (!ss_parse_int(v, &x) || x < 0 || x > 1 << 30) return -1;
    *out = (int)x;
    return 1;
}

static int key_ok(const char *key) {
    if (!key || !*key || strlen(key) >= sizeof(((ss_rendezvous_env *)0)->key)) return 0;
    for (const char *p = key; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '.' || *p == '-' ||
              *p == '_'))
            return 0;
    return key[0] != '.';
}

ss_status ss_rendezvous_env_slurm(ss_rendezvous_env *e) {
    memset(e, 0, sizeof *e);
    int r;
    if ((r = env_int("SLURM_PROCID", &e->rank)) <= 0)
        return ss_errorf(SS_ERR_ARG, "NCCL rendezvous: SLURM_PROCID is %s (start the job with srun, one task per GPU)",
                         r < 0 ? "not a rank number" : "not set");
    if ((r = env_int("SLURM_STEP_NUM_TASKS", &e->size)) == 0) r = env_int("SLURM_NTASKS", &e->size);
    if (r <= 0 || e->size < 1)
        return ss_errorf(SS_ERR_ARG, "NCCL rendezvous: neither SLURM_STEP_NUM_TASKS nor SLURM_NTASKS gives the number of tasks");
    if (e->rank >= e->size)
        return ss_errorf(SS_ERR_ARG, "NCCL rendezvous: SLURM_PROCID %d but only %d tasks", e->rank, e->size);
    if (env_int("SLURM_LOCALID", &e->local_rank) <= 0) e->local_rank = 0;
    const char *job = getenv("SLURM_JOB_ID"), *step = getenv("SLURM_STEP_ID"), *restart = getenv("SLURM_RESTART_COUNT"),
               *port = getenv("SLURM_SRUN_COMM_PORT");
    if (!job || !*job) return ss_errorf(SS_ERR_ARG, "NCCL rendezvous: SLURM_JOB_ID is not set");
    int n = snprintf(e->key, sizeof e->key, "slurm-%s.%s.r%s%s%s", job, step && *step ? step : "0",
                     restart && *restart ? restart : "0", port && *port ? ".p" : "", port && *port ? port : "");
    if (n < 0 || (size_t)n >= sizeof e->key || !key_ok(e->key))
        return ss_errorf(SS_ERR_ARG, "NCCL rendezvous: Slurm's job/step ids give an unusable file name \"%s\"", e->key);
    return SS_OK;
}

char *ss_rendezvous_path(const char *dir, const char *key) { return ss_strfmt("%s/%s.ncclid", dir, key); }

ss_status ss_rendezvous_publish(const char *dir, const char *key, int nranks, const void *data, size_t n) {
    if (!key_ok(key)) return ss_errorf(SS_ERR_ARG, "rendezvous key \"%s\": letters, digits, '.', '-', '_' only", key ? key : "");
    if (n > SS_RENDEZVOUS_MAX) return ss_errorf(SS_ERR_ARG, "rendezvous payload of %zu bytes (at most %d)", n, SS_RENDEZVOUS_MAX);
    struct stat sb;
    /* errno only where stat failed: for a file it is an older call's */
    const char *why = stat(dir, &sb) != 0 ? strerror(errno) : !S_ISDIR(sb.st_mode) ? "not a directory" : NULL;
    if (why) return ss_errorf(SS_ERR_IO, "rendezvous directory %s: %s", dir, why);
    /* magic | key length | key | ranks | payload length | payload | checksum */
    uint32_t klen = (uint32_t)strlen(key);
    int32_t nr = nranks;
    uint64_t plen = n;
    size_t total = sizeof MAGIC + 4 + klen + 4 + 8 + n + 8, off = 0;
    unsigned char *buf = ss_malloc(total, "rendezvous file");
    if (!buf) return SS_ERR_NOMEM;
#define PUT(p, len) (memcpy(buf + off, (p), (len)), off += (len))
    PUT(MAGIC, sizeof MAGIC);
    PUT(&klen, 4);
    PUT(key, klen);
    PUT(&nr, 4);
    PUT(&plen, 8);
    if (n) PUT(data, n);
    uint64_t h = fnv1a(buf, off);
    PUT(&h, 8);
#undef PUT
    char host[64] = "host";
    gethostname(host, sizeof host - 1);
    host[63] = 0;
    char *path = ss_rendezvous_path(dir, key), *tmp = ss_strfmt("%s/.%s.tmp.%s.%ld", dir, key, host, (long)getpid());
    ss_status st = SS_OK;
    if (!path || !tmp) st = SS_ERR_NOMEM;
    int fd = st ? -1 : open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (!st && fd < 0) st = ss_errorf(SS_ERR_IO, "rendezvous: cannot create %s: %s", tmp, strerror(errno));
    for (size_t done = 0; !st && done < total;) {
        ssize_t w = write(fd, buf + done, total - done);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) st = ss_errorf(SS_ERR_IO, "rendezvous: writing %s: %s", tmp, w < 0 ? strerror(errno) : "no progress");
        else done += (size_t)w;
    }
    /* Durable before visible: a reader on another node must not find the name with no data behind it. */
    if (!st && ss_fsync(fd) != 0) st = ss_errorf(SS_ERR_IO, "rendezvous: fsync %s: %s", tmp, strerror(errno));
    if (fd >= 0 && close(fd) != 0 && !st) st = ss_errorf(SS_ERR_IO, "rendezvous: closing %s: %s", tmp, strerror(errno));
    if (!st && rename(tmp, path) != 0) st = ss_errorf(SS_ERR_IO, "rendezvous: renaming %s to %s: %s", tmp, path, strerror(errno));
    if (st && tmp) unlink(tmp);
    free(buf);
    free(path);
    free(tmp);
    return st;
}

/* why[]'s size: "unreadable: " and a whole message (SS_ERROR_MAX, its NUL included). */
#define WHY_MAX (SS_ERROR_MAX + sizeof "unreadable: " - 1)

/* Reads and checks the file once: 1 accepted, 0 absent, -1 present but not
 * ours (why[] says why; the caller keeps waiting: rank 0 may replace it). */
static int try_read(const char *path, const char *key, int nranks, void *data, size_t n, char why[WHY_MAX]) {
    char *raw = NULL;
    size_t len = 0;
    if (!ss_file_exists(path)) return 0;
    if (ss_file_read(path, &raw, &len)) {
        snprintf(why, WHY_MAX, "unreadable: %s", ss_last_error());
        return -1;
    }
    const unsigned char *b = (const unsigned char *)raw;
    size_t off = 0;
    uint32_t klen = 0;
    int32_t nr = 0;
    uint64_t plen = 0, h = 0;
    int rc = -1;
    if (len < sizeof MAGIC + 4 || memcmp(b, MAGIC, sizeof MAGIC)) {
        snprintf(why, WHY_MAX, "not a subscope rendezvous file (%zu bytes)", len);
        goto out;
    }
    off = sizeof MAGIC;
    memcpy(&klen, b + off, 4), off += 4;
    if (klen > len - off || len - off - klen < 4 + 8) {
        snprintf(why, WHY_MAX, "truncated (%zu bytes)", len);
        goto out;
    }
    const char *fkey = (const char *)b + off;
    off += klen;
    memcpy(&nr, b + off, 4), off += 4;
    memcpy(&plen, b + off, 8), off += 8;
    if (plen > len - off || len - off - plen != 8) {
        snprintf(why, WHY_MAX, "truncated or padded (%zu bytes for a %llu-byte payload)", len, (unsigned long long)plen);
        goto out;
    }
    memcpy(&h, b + off + plen, 8);
    if (h != fnv1a(b, off + plen)) {
        snprintf(why, WHY_MAX, "checksum mismatch (a partial or corrupted copy)");
        goto out;
    }
    if (klen != strlen(key) || memcmp(fkey, key, klen)) {
        snprintf(why, WHY_MAX, "written for another job or try (\"%.*s\", not \"%s\")", (int)(klen < 100 ? klen : 100), fkey, key);
        goto out;
    }
    if (nr != nranks) {
        snprintf(why, WHY_MAX, "written for %d ranks, this job has %d", nr, nranks);
        goto out;
    }
    if (plen != n) {
        snprintf(why, WHY_MAX, "holds %llu bytes, %zu expected", (unsigned long long)plen, n);
        goto out;
    }
    if (n) memcpy(data, b + off, n);
    rc = 1;
out:
    free(raw);
    return rc;
}

ss_status ss_rendezvous_wait(const char *dir, const char *key, int nranks, void *data, size_t n, double timeout) {
    if (!key_ok(key)) return ss_errorf(SS_ERR_ARG, "rendezvous key \"%s\": letters, digits, '.', '-', '_' only", key ? key : "");
    char *path = ss_rendezvous_path(dir, key);
    if (!path) return SS_ERR_NOMEM;
    const double deadline = ss_now() + timeout;
    char why[WHY_MAX] = ""; /* "unreadable: " and a message naming the path */
    int seen = 0;
    for (unsigned spins = 0;; spins++) {
        int rc = try_read(path, key, nranks, data, n, why);
        if (rc == 1) {
            free(path);
            return SS_OK;
        }
        seen |= rc < 0;
        if (ss_now() > deadline) break;
        long ms = spins < 10 ? 5 : spins < 40 ? 20 : 100;
        struct timespec ts = {0, ms * 1000000L};
        nanosleep(&ts, NULL);
    }
    ss_status st;
    if (seen)
        st = ss_errorf(SS_ERR_IO, "rendezvous: %s is not this job's after %g s: %s (rank 0 writes it; SUBSCOPE_DIST_TIMEOUT sets the wait)",
                       path, timeout, why);
    else
        st = ss_errorf(SS_ERR_IO,
                       "rendezvous: %s did not appear within %g s: rank 0 writes it when it starts; is rank 0 running, and is "
                       "%s a directory every node shares? (SUBSCOPE_DIST_TIMEOUT sets the wait)",
                       path, timeout, dir);
    free(path);
    return st;
}

void ss_rendezvous_remove(const char *dir, const char *key) {
    char *path = ss_rendezvous_path(dir, key);
    if (path) unlink(path);
    free(path);
}
