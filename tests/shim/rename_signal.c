/* LD_PRELOAD shim for the CLI tests of a job that puts more than one file in place: rename(2)
 * as the C library's, and after the first one that succeeds onto a path ending in
 * SS_SHIM_RENAME_MATCH (any path when unset), the signal named by SS_SHIM_RENAME_SIGNAL
 * ("TERM", "INT", "HUP", "QUIT", "PIPE") is sent to the process, as kill(1) sends it (to the process,
 * not to the thread: whichever thread does not block it takes it), and a line on stderr says
 * so, so that a test can tell that it came between the job's renames; then it waits 0.2 s, in
 * which a thread that took the signal and acted on it would have stopped the process before the
 * job's next rename. Unset: rename only.
 *
 * SS_SHIM_RENAME_FAIL, an errno's name ("EXDEV", "EACCES", "ENOSPC", "EISDIR", "EIO"): the first
 * rename onto a path ending in SS_SHIM_RENAME_MATCH fails with it instead, renaming nothing, with
 * a line on stderr; the later ones (a job putting the earlier file back) are the C library's.
 * SS_SHIM_LINK_FAIL, the same: every link(2) fails with it, as on a file system without hard
 * links ("EPERM"). SS_SHIM_UNLINK_FAIL, the same: every unlink(2) of a path with ".old." in it (a
 * kept earlier file, ss_replace_file) fails with it ("EACCES", "EIO"). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int errno_named(const char *name) {
    static const struct {
        const char *name;
        int e;
    } known[] = {{"EXDEV", EXDEV}, {"EACCES", EACCES}, {"ENOSPC", ENOSPC}, {"EISDIR", EISDIR}, {"EIO", EIO}, {"EPERM", EPERM}};
    for (size_t i = 0; name && i < sizeof known / sizeof *known; i++)
        if (!strcmp(name, known[i].name)) return known[i].e;
    return 0;
}

static int matches(const char *to) {
    const char *match = getenv("SS_SHIM_RENAME_MATCH");
    const size_t n = strlen(to), m = match ? strlen(match) : 0;
    return m <= n && (!match || !strcmp(to + n - m, match));
}

int link(const char *from, const char *to) {
    static int (*real)(const char *, const char *);
    if (!real) real = (int (*)(const char *, const char *))dlsym(RTLD_NEXT, "link");
    const int e = errno_named(getenv("SS_SHIM_LINK_FAIL"));
    if (!e) return real(from, to);
    errno = e;
    return -1;
}

int unlink(const char *path) {
    static int (*real)(const char *);
    if (!real) real = (int (*)(const char *))dlsym(RTLD_NEXT, "unlink");
    const int e = errno_named(getenv("SS_SHIM_UNLINK_FAIL"));
    if (!e || !strstr(path, ".old.")) return real(path);
    errno = e;
    return -1;
}

int rename(const char *from, const char *to) {
    static int (*real)(const char *, const char *);
    static int fired, failed;
    if (!real) real = (int (*)(const char *, const char *))dlsym(RTLD_NEXT, "rename");
    const char *fail = getenv("SS_SHIM_RENAME_FAIL");
    if (!failed && errno_named(fail) && matches(to)) {
        failed = 1;
        fprintf(stderr, "rename_signal: %s for the rename onto %s\n", fail, to);
        errno = errno_named(fail);
        return -1;
    }
    const int rc = real(from, to);
    const char *name = getenv("SS_SHIM_RENAME_SIGNAL");
    if (rc != 0 || fired || !name || !matches(to)) return rc;
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
