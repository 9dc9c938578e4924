/* subscope: find and test the sub-models inside a transformer. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif

#include "cli.h"
#include "subscope/dist.h"
#include "subscope/util.h"
#include "subscope/version.h"

static cli_cmd *commands[] = {&cmd_info, &cmd_tokenize, &cmd_predict, &cmd_forward, &cmd_collect, &cmd_attribute, &cmd_discover,
                               &cmd_trace, &cmd_ablate, &cmd_patch, &cmd_report, &cmd_train, &cmd_show};
#define N_COMMANDS (sizeof commands / sizeof commands[0])

static void usage(FILE *f) {
    fprintf(f, "subscope %s — find and test the sub-models inside a transformer language model\n\n", ss_version());
    fprintf(f, "usage: subscope <command> [options]    (subscope <command> --help for its options)\n\ncommands:\n");
    for (size_t i = 0; i < N_COMMANDS; i++) fprintf(f, "  %-10s %s\n", commands[i]->name, commands[i]->summary);
    fprintf(f, "\nother:\n  --version  print the version and git commit\n  --help     this text\n");
    fprintf(f, "\nOutput files are HDF5; docs/FORMAT.md describes their layout.\n");
}

/* A command that runs in one process, started as one of several ranks by
 * mpirun or srun, would do the whole job once per rank and have every rank
 * write the same files: refuse before anything starts. */
static int refuse_ranks(const cli_cmd *cmd) {
    const char *var;
    const int n = ss_comm_launched_size(&var);
    if (n <= 1 || (cmd->multi_rank && cmd->multi_rank(cmd))) return 0;
    fprintf(stderr,
            "subscope %s: error: started as one of %d ranks (%s=%s), but %s runs in one process%s: every rank would "
            "do the whole job and write the same files. Start it without mpirun or srun, or with one task.\n",
            cmd->name, n, var, getenv(var), cmd->name,
            !strcmp(cmd->name, "trace") ? " (or as the stages of --pipeline P, on exactly P ranks)"
            : !strcmp(cmd->name, "info") ? " (except info --dist)" : "");
    return 1;
}

/* OpenBLAS starts its own threads as it loads (one per core, unless
 * OPENBLAS_NUM_THREADS says otherwise), and each maps a 128 MiB work buffer,
 * retrying forever where that fails. subscope's products run single-threaded
 * in its own pool (src/backend/cpu_ops.c); only collect's eigen-solver takes
 * OpenBLAS's threads, for its one call (ss_cpu_blas_threads, not under a
 * limit). They cost address space, which under a limit (ulimit -v) is scarce:
 * a tight limit left them spinning before main and the process hung at exit.
 * Under such a limit, then, the process starts again at once with
 * OPENBLAS_NUM_THREADS=1 (no such threads), before anything else is done. */
static void restart_without_blas_threads(char **argv) {
    if (!ss_address_space_limit() || getenv("OPENBLAS_NUM_THREADS")) return;
    if (setenv("OPENBLAS_NUM_THREADS", "1", 1) != 0) return;
    /* By the binary's own path, so that the process keeps its name (ps, pgrep, top):
     * one started as /proc/self/exe is called "exe". */
    char self[4096];
    const ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n > 0) {
        self[n] = '\0';
        execv(self, argv);
    }
    execv("/proc/self/exe", argv); /* returns only on failure: go on as we are */
}

/* What a command printed on stdout is part of its result (tokenize's ids, predict's tokens, a
 * table): a write that failed there (a full disk, /dev/full; a closed pipe where SIGPIPE is
 * ignored) is an error, as for a file, and not exit 0 with the output cut short. */
static int check_stdout(const char *cmd, int rc) {
    const int e = fflush(stdout) != 0 ? errno : 0;
    if (!ferror(stdout)) return rc;
    fprintf(stderr, "subscope%s%s: error: writing standard output: %s\n", cmd ? " " : "", cmd ? cmd : "",
            e ? strerror(e) : "write error");
    return rc ? rc : 1;
}

/* Settings the library reads from the environment where a bad value has no way to be reported and
 * fell back to the default without a word (SUBSCOPE_THREADS=abc ran on every core, =1x on one):
 * checked before a command runs, naming the variable (ss_env_check). Empty is unset. 1 if they are good. */
static int env_ok(const char *cmd) {
    if (ss_env_check() == SS_OK) return 1;
    fprintf(stderr, "subscope %s: error: %s\n", cmd, ss_last_error());
    return 0;
}

int main(int argc, char **argv) {
    restart_without_blas_threads(argv);
    cli_set_command_line(argc, argv);
    /* Past the file-size limit (ulimit -f) a write raises SIGXFSZ, whose default kills the
     * process and leaves its temporary file; ignored, the write fails with EFBIG and the job
     * reports it, naming the output, and removes the file. */
    struct sigaction xfsz;
    if (!sigaction(SIGXFSZ, NULL, &xfsz) && xfsz.sa_handler == SIG_DFL) signal(SIGXFSZ, SIG_IGN);
#ifdef __GLIBC__
    /* Jobs that run many small forward passes (patch, ablate, attribute) allocate
     * and free the same activation buffers each time; glibc would hand every
     * buffer over 128 KiB back to the kernel and fault its pages in again,
     * which cost more than the passes themselves. Keep freed memory for reuse. */
    mallopt(M_MMAP_THRESHOLD, 1 << 30);
    mallopt(M_TRIM_THRESHOLD, 1 << 30);
#endif
    if (argc < 2) {
        usage(stderr);
        return 1;
    }
    if (!strcmp(argv[1], "--version") || !strcmp(argv[1], "version")) {
        printf("subscope %s (%s)\n", ss_version(), ss_git_commit());
        return check_stdout(NULL, 0);
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return check_stdout(NULL, 0);
    }
    for (size_t i = 0; i < N_COMMANDS; i++) {
        if (strcmp(argv[1], commands[i]->name)) continue;
        int r = cli_parse(commands[i], argc - 2, argv + 2);
        if (r == 2) return check_stdout(argv[1], 0);
        if (r) return 1;
        if (refuse_ranks(commands[i]) || !env_ok(argv[1])) return 1;
        return check_stdout(argv[1], commands[i]->run(commands[i]));
    }
    fprintf(stderr, "subscope: error: unknown command '%s'\n\n", argv[1]);
    usage(stderr);
    return 1;
}
