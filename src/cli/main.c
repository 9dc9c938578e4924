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
#include "subscope/backend.h"
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

/* Two things OpenBLAS settles as it loads, before main, which only its environment variables
 * change; where either needs changing, the process starts again at once, before anything else is
 * done (no thread, handler, file or MPI yet), with the variables set.
 *
 * Its threads: OpenBLAS starts its own (one per core, unless OPENBLAS_NUM_THREADS says
 * otherwise), and each maps a 128 MiB work buffer, retrying forever where that fails.
 * subscope's products run single-threaded in its own pool (src/backend/cpu_ops.c); only
 * collect's eigen-solver takes OpenBLAS's threads, for its one call (ss_cpu_blas_threads, not
 * under a limit). They cost address space, which under a limit (ulimit -v) is scarce: a tight
 * limit left them spinning before main and the process hung at exit. Under such a limit, then,
 * OPENBLAS_NUM_THREADS=1 (no such threads).
 *
 * Its kernels: on a CPU whose model it does not know, OpenBLAS (0.3.21, DYNAMIC_ARCH) fell back
 * to its generic Prescott (SSE3) kernels on an AVX-512 Xeon VM, a quarter of the speed its
 * Cooperlake ones reach there. Where it chose such an older core and the CPU and OS support
 * more, OPENBLAS_CORETYPE names the better one (ss_cpu_blas_core_better); never where the user
 * set OPENBLAS_CORETYPE, nor under SUBSCOPE_BLAS_CORE=keep (or a value env_ok refuses below).
 * SUBSCOPE_BLAS_CORE_FROM, set with it to the core OpenBLAS chose, says so to subscope info and
 * guards against a second restart: a process that finds it set never restarts for the kernels
 * again, whatever OpenBLAS chose (a name it did not take, say).
 *
 * Safe to start again: exec keeps the process id, its open descriptors (a stdin pipe not yet
 * read), its signal dispositions as the launcher left them and its environment, so mpirun's and
 * Slurm's ranks keep their OMPI_/PMI_/SLURM_ variables and the launcher still sees the same
 * process; MPI starts later, in the command. The program is the same file (/proc/self/exe), so
 * the CUDA plugin found beside it, or in SUBSCOPE_PLUGIN_DIR (kept), is the same. A sanitizer
 * build's runtime starts again with the new image, under the same ASAN_/UBSAN_OPTIONS. Where the
 * exec fails the process goes on as it is, with OpenBLAS's own choices. */
static void restart_for_blas(char **argv) {
    int again = 0, set_core = 0;
    if (!getenv("OPENBLAS_CORETYPE") && !getenv("SUBSCOPE_BLAS_CORE_FROM") && ss_blas_core_setting() == 0) {
        const char *core = ss_cpu_blas_core(), *better = ss_cpu_blas_core_better();
        if (core && better && !setenv("SUBSCOPE_BLAS_CORE_FROM", core, 1)) {
            if (!setenv("OPENBLAS_CORETYPE", better, 1)) again = set_core = 1;
            else unsetenv("SUBSCOPE_BLAS_CORE_FROM");
        }
    }
    if (ss_address_space_limit() && !getenv("OPENBLAS_NUM_THREADS") && !setenv("OPENBLAS_NUM_THREADS", "1", 1))
        again = 1;
    if (!again) return;
    /* By the binary's own path, so that the process keeps its name (ps, pgrep, top):
     * one started as /proc/self/exe is called "exe". */
    char self[4096];
    const ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n > 0) {
        self[n] = '\0';
        execv(self, argv);
    }
    execv("/proc/self/exe", argv); /* returns only on failure: go on as we are */
    if (set_core) { /* OpenBLAS keeps the kernels it chose: let info say so */
        unsetenv("OPENBLAS_CORETYPE");
        unsetenv("SUBSCOPE_BLAS_CORE_FROM");
    }
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
    restart_for_blas(argv);
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
