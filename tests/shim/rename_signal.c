/* LD_PRELOAD shim for the CLI tests of a job that puts more than one file in place: rename(2)
 * as the C library's, and after the first one that succeeds onto a path ending in
 * SS_SHIM_RENAME_MATCH (any path when unset), the signal named by SS_SHIM_RENAME_SIGNAL
 * ("TERM", "INT", "HUP", "QUIT", "PIPE") is sent to the process, as kill(1) sends it (to the process,
 * not to the thread: whichever thread does not block it takes it), and a line on stderr says
 * so, so that a test can tell that it came between the job's renames; then it waits 0.2 s, in
 * which a thread that took the signal and acted on it would have stopped the process before the
 * job's next rename. Unset: rename only. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int rename(const char *from, const char *to) {
    static int (*real)(const char *, const char *);
    static int fired;
    if (!real) real = (int (*)(const char *, const char *))dlsym(RTLD_NEXT, "rename");
    const int rc = real(from, to);
    const char *name = getenv("SS_SHIM_RENAME_SIGNAL"), *match = getenv("SS_SHIM_RENAME_MATCH");
    const size_t n = strlen(to), m = match ? strlen(match) : 0;
    if (rc != 0 || fired || !name || m > n || (match && strcmp(to + n - m, match))) return rc;
    const int sig = !strcmp(name, "TERM") ? SIGTERM : !strcmp(name, "INT") ? SIGINT : !strcmp(name, "HUP") ? SIGHUP
                  : !strcmp(name, "QUIT") ? SIGQUIT : !strcmp(name, "PIPE") ? SIGPIPE : 0;
    if (!sig) return rc;
    fired = 1;
    fprintf(stderr, "rename_signal: SIG%s after renaming %s\n", name, to);
    kill(getpid(), sig);
    struct timespec t = {0, 200 * 1000 * 1000};
    while (nanosleep(&t, &t) != 0) continue;
    return rc;
}
