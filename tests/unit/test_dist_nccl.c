/* Rendezvous files (src/dist/rendezvous.c) and the NCCL communicator's
 * bootstrap on one rank, through its emulation (tests/unit/nccl_emu.c);
 * several ranks are covered under mpirun by tests/cli/test_nccl.sh. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "subscope/dist.h"
#include "subscope/util.h"
#include "test.h"

/* Sets environment variables for one test and puts the old values back. */
typedef struct {
    const char *name;
    char *old;
    int had;
} env_save;
static void env_set(env_save *s, const char *name, const char *value) {
    s->name = name;
    const char *o = getenv(name);
    s->had = o != NULL;
    s->old = o ? strdup(o) : NULL;
    if (value) setenv(name, value, 1);
    else unsetenv(name);
}
static void env_restore(env_save *s, int n) {
    for (int i = n - 1; i >= 0; i--) {
        if (s[i].had) setenv(s[i].name, s[i].old, 1);
        else unsetenv(s[i].name);
        free(s[i].old);
    }
}

static char *tmpdir(void) {
    char *d = strdup("/tmp/ss_rdv_XXXXXX");
    return mkdtemp(d) ? d : NULL;
}
static void rmdir_all(char *d) {
    char *cmd = ss_strfmt("rm -rf '%s'", d);
    if (cmd && system(cmd) != 0) fprintf(stderr, "could not remove %s\n", d);
    free(cmd);
    free(d);
}
static int count_entries(const char *dir) {
    char *cmd = ss_strfmt("ls -A '%s' | wc -l", dir);
    FILE *p = cmd ? popen(cmd, "r") : NULL;
    int n = -1;
    if (p && fscanf(p, "%d", &n) != 1) n = -1;
    if (p) pclose(p);
    free(cmd);
    return n;
}

TEST(dist_rdv_roundtrip) {
    char *d = tmpdir();
    CHECK(d != NULL);
    if (!d) return;
    unsigned char id[128], got[128];
    for (int i = 0; i < 128; i++) id[i] = (unsigned char)(i * 13 + 5);
    CHECK_OK(ss_rendezvous_publish(d, "slurm-77.0.r0", 4, id, sizeof id));
    CHECK(count_entries(d) == 1); /* the file and no temporary */
    char *path = ss_rendezvous_path(d, "slurm-77.0.r0");
    CHECK(path && ss_file_exists(path) && strstr(path, "/slurm-77.0.r0.ncclid"));
    CHECK_OK(ss_rendezvous_wait(d, "slurm-77.0.r0", 4, got, sizeof got, 1));
    CHECK(!memcmp(id, got, sizeof id));
    /* Republishing replaces it whole. */
    id[0] ^= 0xff;
    CHECK_OK(ss_rendezvous_publish(d, "slurm-77.0.r0", 4, id, sizeof id));
    CHECK_OK(ss_rendezvous_wait(d, "slurm-77.0.r0", 4, got, sizeof got, 1));
    CHECK(got[0] == id[0]);
    ss_rendezvous_remove(d, "slurm-77.0.r0");
    CHECK(!ss_file_exists(path));
    ss_rendezvous_remove(d, "slurm-77.0.r0"); /* gone already: fine */
    CHECK_ERR(ss_rendezvous_publish(d, "../escape", 4, id, 8), SS_ERR_ARG, "letters, digits");
    CHECK_ERR(ss_rendezvous_publish(d, "k", 4, id, SS_RENDEZVOUS_MAX + 1), SS_ERR_ARG, "at most 4096");
    char *nodir = ss_strfmt("%s/missing", d);
    CHECK_ERR(ss_rendezvous_publish(nodir, "k", 4, id, 8), SS_ERR_IO, "rendezvous directory");
    /* a file: "not a directory", not the errno an older call left (it was printed when nonzero) */
    FILE *f = fopen(nodir, "wb");
    CHECK(f != NULL);
    if (f) fclose(f);
    errno = ENOENT;
    CHECK_ERR(ss_rendezvous_publish(nodir, "k", 4, id, 8), SS_ERR_IO, "missing: not a directory");
    unlink(nodir);
    free(nodir);
    free(path);
    rmdir_all(d);
}

TEST(dist_rdv_timeout_names_the_file) {
    char *d = tmpdir();
    if (!d) return;
    unsigned char got[16];
    double t0 = ss_now();
    CHECK_ERR(ss_rendezvous_wait(d, "slurm-5.1.r0", 2, got, sizeof got, 0.3), SS_ERR_IO, "slurm-5.1.r0.ncclid did not appear within 0.3 s");
    double dt = ss_now() - t0;
    CHECK_MSG(dt >= 0.3 && dt < 2, "waited %.2f s", dt);
    CHECK(strstr(ss_last_error(), d) && strstr(ss_last_error(), "is rank 0 running"));
    rmdir_all(d);
}

/* A file under this job's name that is not this job's: refused (the wait
 * goes on, since rank 0 may still replace it) and named at the timeout. */
TEST(dist_rdv_refuses_foreign_files) {
    char *d = tmpdir();
    if (!d) return;
    unsigned char id[32] = {1, 2, 3}, got[32];
    char *ours = ss_rendezvous_path(d, "slurm-9.0.r1"), *theirs = ss_rendezvous_path(d, "slurm-9.0.r0");
    /* another try of the same job, renamed into place */
    CHECK_OK(ss_rendezvous_publish(d, "slurm-9.0.r0", 2, id, sizeof id));
    CHECK(rename(theirs, ours) == 0);
    CHECK_ERR(ss_rendezvous_wait(d, "slurm-9.0.r1", 2, got, sizeof got, 0.2), SS_ERR_IO, "written for another job or try (\"slurm-9.0.r0\"");
    /* the right key for another number of ranks */
    CHECK_OK(ss_rendezvous_publish(d, "slurm-9.0.r1", 3, id, sizeof id));
    CHECK_ERR(ss_rendezvous_wait(d, "slurm-9.0.r1", 2, got, sizeof got, 0.2), SS_ERR_IO, "written for 3 ranks, this job has 2");
    CHECK_ERR(ss_rendezvous_wait(d, "slurm-9.0.r1", 3, got, 16, 0.2), SS_ERR_IO, "holds 32 bytes, 16 expected");
    /* cut short, and one bit flipped */
    char *raw = NULL;
    size_t len = 0;
    CHECK_OK(ss_file_read(ours, &raw, &len));
    FILE *f = fopen(ours, "wb");
    if (f && raw) fwrite(raw, 1, len - 5, f);
    if (f) fclose(f);
    CHECK_ERR(ss_rendezvous_wait(d, "slurm-9.0.r1", 3, got, sizeof got, 0.2), SS_ERR_IO, "truncated");
    if (raw) raw[len - 20] ^= 1;
    f = fopen(ours, "wb");
    if (f && raw) fwrite(raw, 1, len, f);
    if (f) fclose(f);
    CHECK_ERR(ss_rendezvous_wait(d, "slurm-9.0.r1", 3, got, sizeof got, 0.2), SS_ERR_IO, "checksum mismatch");
    f = fopen(ours, "wb");
    if (f) fputs("{\"id\": 1}\n", f), fclose(f);
    CHECK_ERR(ss_rendezvous_wait(d, "slurm-9.0.r1", 3, got, sizeof got, 0.2), SS_ERR_IO, "not a subscope rendezvous file");
    free(raw);
    free(ours);
    free(theirs);
    /* Unreadable (a folder in the file's place) under a folder of some 600 characters: the
     * reason after the path is kept (copied into 256 bytes, it was cut before it). */
    char *ld = ss_strfmt("%s/%0200d/%0200d/%0200d", d, 1, 2, 3);
    char *mk = ld ? ss_strfmt("mkdir -p '%s/slurm-9.0.r2.ncclid'", ld) : NULL;
    CHECK(mk && system(mk) == 0);
    CHECK_ERR(ss_rendezvous_wait(ld, "slurm-9.0.r2", 3, got, sizeof got, 0.2), SS_ERR_IO, "0003/slurm-9.0.r2.ncclid: is a folder, not a file");
    free(mk);
    free(ld);
    /* ... and under one of some 2300: the message naming it fills the error buffer (its head and
     * its end kept), and "unreadable: " before it, copied into a buffer of the same size, cut
     * its end, the reason, before the timeout's message took it in */
    ld = ss_strfmt("%s/%0200d/%0200d/%0200d/%0200d/%0200d/%0200d/%0200d/%0200d/%0200d/%0200d/%0200d", d, 1, 2, 3, 4,
                   5, 6, 7, 8, 9, 10, 11);
    mk = ld ? ss_strfmt("mkdir -p '%s/slurm-9.0.r3.ncclid'", ld) : NULL;
    CHECK(mk && system(mk) == 0);
    CHECK_ERR(ss_rendezvous_wait(ld, "slurm-9.0.r3", 3, got, sizeof got, 0.2), SS_ERR_IO,
              "0011/slurm-9.0.r3.ncclid: is a folder, not a file (rank 0 writes it");
    free(mk);
    free(ld);
    rmdir_all(d);
}

/* Several processes wait before the file exists; all read the same bytes. */
TEST(dist_rdv_waiting_readers_agree) {
    char *d = tmpdir();
    if (!d) return;
    unsigned char id[128];
    for (int i = 0; i < 128; i++) id[i] = (unsigned char)(255 - i);
    enum { READERS = 3 };
    pid_t kids[READERS];
    for (int k = 0; k < READERS; k++) {
        kids[k] = fork();
        if (kids[k] == 0) {
            unsigned char got[128];
            ss_status st = ss_rendezvous_wait(d, "slurm-31.2.r0.p4000", READERS + 1, got, sizeof got, 20);
            _exit(st ? 2 : memcmp(got, id, sizeof got) ? 3 : 0);
        }
        CHECK(kids[k] > 0);
    }
    struct timespec ts = {0, 150 * 1000000L}; /* the readers are polling by now */
    nanosleep(&ts, NULL);
    CHECK_OK(ss_rendezvous_publish(d, "slurm-31.2.r0.p4000", READERS + 1, id, sizeof id));
    for (int k = 0; k < READERS; k++) {
        int status = -1;
        if (kids[k] > 0) waitpid(kids[k], &status, 0);
        CHECK_MSG(WIFEXITED(status) && WEXITSTATUS(status) == 0, "reader %d: status %d", k, status);
    }
    rmdir_all(d);
}

TEST(dist_rdv_slurm_environment) {
    env_save s[7];
    env_set(&s[0], "SLURM_PROCID", "3");
    env_set(&s[1], "SLURM_STEP_NUM_TASKS", "8");
    env_set(&s[2], "SLURM_LOCALID", "1");
    env_set(&s[3], "SLURM_JOB_ID", "4242");
    env_set(&s[4], "SLURM_STEP_ID", "2");
    env_set(&s[5], "SLURM_RESTART_COUNT", "1");
    env_set(&s[6], "SLURM_SRUN_COMM_PORT", "35001");
    ss_rendezvous_env e;
    CHECK_OK(ss_rendezvous_env_slurm(&e));
    CHECK(e.rank == 3 && e.size == 8 && e.local_rank == 1);
    CHECK_MSG(!strcmp(e.key, "slurm-4242.2.r1.p35001"), "key %s", e.key);
    unsetenv("SLURM_SRUN_COMM_PORT");
    unsetenv("SLURM_RESTART_COUNT");
    CHECK_OK(ss_rendezvous_env_slurm(&e));
    CHECK(!strcmp(e.key, "slurm-4242.2.r0"));
    setenv("SLURM_PROCID", "8", 1);
    CHECK_ERR(ss_rendezvous_env_slurm(&e), SS_ERR_ARG, "SLURM_PROCID 8 but only 8 tasks");
    setenv("SLURM_PROCID", "x", 1);
    CHECK_ERR(ss_rendezvous_env_slurm(&e), SS_ERR_ARG, "SLURM_PROCID is not a rank number");
    unsetenv("SLURM_PROCID");
    CHECK_ERR(ss_rendezvous_env_slurm(&e), SS_ERR_ARG, "SLURM_PROCID is not set");
    setenv("SLURM_PROCID", "0", 1);
    setenv("SLURM_JOB_ID", "12/../x", 1);
    CHECK_ERR(ss_rendezvous_env_slurm(&e), SS_ERR_ARG, "unusable file name");
    env_restore(s, 7);
}

/* ---- the NCCL communicator on one rank (emulated NCCL and CUDA) ---- */

static int under_launcher(void) {
    return getenv("OMPI_COMM_WORLD_SIZE") || getenv("PMI_SIZE") || getenv("SLURM_STEP_NUM_TASKS") || getenv("PMIX_RANK");
}

TEST(dist_nccl_one_rank) {
    if (under_launcher()) return;
    env_save s[2];
    env_set(&s[0], "SUBSCOPE_DIST", "nccl");
    env_set(&s[1], "SUBSCOPE_NCCL_RENDEZVOUS", NULL);
    ss_comm *c = NULL;
    CHECK_OK(ss_comm_open(&c));
    if (c) {
        CHECK(!strcmp(ss_comm_backend(c), "nccl") && ss_comm_size(c) == 1 && ss_comm_rank(c) == 0);
        CHECK_MSG(strstr(ss_comm_library(c), "emulated NCCL") && strstr(ss_comm_library(c), "bootstrap"), "library %s", ss_comm_library(c));
        CHECK(ss_comm_device(c) == 0);
        CHECK_MSG(!strcmp(ss_comm_device_name(c, 0), "cuda:0 emulated device 0 (PCI emu:00)"), "device %s", ss_comm_device_name(c, 0));
        double d[2] = {1.5, -2};
        CHECK_OK(ss_comm_allreduce_dev(c, d, 2, SS_COMM_F64));
        CHECK(d[0] == 1.5 && d[1] == -2);
        CHECK_OK(ss_comm_barrier(c));
        int v = 1;
        CHECK_ERR(ss_comm_send(c, 0, 0, &v, sizeof v), SS_ERR_ARG, "addressed itself");
        ss_comm_free(c);
    }
    env_restore(s, 2);
}

/* Through the rendezvous file, as under srun without MPI. */
TEST(dist_nccl_rendezvous_bootstrap) {
    if (under_launcher()) return;
    char *d = tmpdir();
    if (!d) return;
    env_save s[6];
    env_set(&s[0], "SUBSCOPE_DIST", "nccl");
    env_set(&s[1], "SUBSCOPE_NCCL_RENDEZVOUS", d);
    env_set(&s[2], "SLURM_PROCID", "0");
    env_set(&s[3], "SLURM_NTASKS", "1");
    env_set(&s[4], "SLURM_JOB_ID", "777");
    env_set(&s[5], "SUBSCOPE_DIST_TIMEOUT", "0.5");
    ss_comm *c = NULL;
    CHECK_OK(ss_comm_open(&c));
    if (c) {
        CHECK(!strcmp(ss_comm_backend(c), "nccl") && ss_comm_size(c) == 1);
        CHECK_MSG(strstr(ss_comm_library(c), "rendezvous file"), "library %s", ss_comm_library(c));
        ss_comm_free(c);
    }
    CHECK(count_entries(d) == 0); /* rank 0 removes the file once every rank has joined */
    /* Rank 1 of 2, and rank 0 never writes: the timeout names the file. */
    setenv("SLURM_PROCID", "1", 1);
    setenv("SLURM_NTASKS", "2", 1);
    CHECK_ERR(ss_comm_open(&c), SS_ERR_IO, "slurm-777.0.r0.ncclid did not appear within 0.5 s");
    /* A rendezvous folder of 1200 characters: the message keeps its end, the reason (copied into
     * 1 KiB over the communicator's free, it was cut before it). */
    char *ld = ss_strfmt("%s/%01200d", d, 0);
    setenv("SUBSCOPE_NCCL_RENDEZVOUS", ld, 1);
    setenv("SLURM_PROCID", "0", 1);
    setenv("SLURM_NTASKS", "1", 1);
    CHECK_ERR(ss_comm_open(&c), SS_ERR_IO, "0000: File name too long");
    free(ld);
    env_restore(s, 6);
    rmdir_all(d);
}

TEST(dist_nccl_bootstrap_failures) {
    if (under_launcher()) return;
    env_save s[5];
    env_set(&s[0], "SUBSCOPE_DIST", "nccl");
    env_set(&s[1], "SUBSCOPE_NCCL_RENDEZVOUS", NULL);
    env_set(&s[2], "SUBSCOPE_DIST_TIMEOUT", "0.3");
    env_set(&s[3], "SS_NCCL_EMU_STALL", "init");
    env_set(&s[4], "SS_NCCL_EMU_DEVICES", NULL);
    ss_comm *c = NULL;
    double t0 = ss_now();
    CHECK_ERR(ss_comm_open(&c), SS_ERR_IO, "NCCL initialisation of rank 0 of 1 (host ");
    CHECK(strstr(ss_last_error(), "did not complete within 0.3 s"));
    CHECK(ss_now() - t0 < 3);
    unsetenv("SS_NCCL_EMU_STALL");
    setenv("SS_NCCL_EMU_DEVICES", "0", 1);
    CHECK_ERR(ss_comm_open(&c), SS_ERR_UNSUPPORTED, "rank 0 (host ");
    CHECK(strstr(ss_last_error(), "sees no CUDA device"));
    unsetenv("SS_NCCL_EMU_DEVICES");
    setenv("SS_NCCL_EMU_FAIL_ID", "1", 1);
    CHECK_ERR(ss_comm_open(&c), SS_ERR_IO, "ncclGetUniqueId failed on rank 0");
    /* NCCL's own account, of 300 characters, is kept to its end (copied into 256 bytes, it was cut) */
    char last[301];
    memset(last, 'x', 290);
    strcpy(last + 290, " the end.");
    setenv("SS_NCCL_EMU_LAST_ERROR", last, 1);
    CHECK_ERR(ss_comm_open(&c), SS_ERR_IO, "emulated NCCL error: xxxx");
    CHECK(strstr(ss_last_error(), "x the end."));
    unsetenv("SS_NCCL_EMU_LAST_ERROR");
    unsetenv("SS_NCCL_EMU_FAIL_ID");
    setenv("SUBSCOPE_DIST", "gloo", 1);
    CHECK_ERR(ss_comm_open(&c), SS_ERR_ARG, "SUBSCOPE_DIST='gloo': must be auto");
    setenv("SUBSCOPE_DIST", "auto", 1);
    CHECK_OK(ss_comm_open(&c));
    if (c) CHECK(!strcmp(ss_comm_backend(c), "single"));
    ss_comm_free(c);
    env_restore(s, 5);
}
