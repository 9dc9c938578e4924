#define _GNU_SOURCE
#include "subscope/util.h"
#include "subscope/hash.h"
#include "width_table.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

ss_status ss_dims_product(const int64_t *dims, int n, size_t *out, const char *what) {
    size_t p = 1;
    for (int i = 0; i < n; i++) {
        if (dims[i] < 0)
            return ss_errorf(SS_ERR_FORMAT, "%s: negative dimension %lld", what, (long long)dims[i]);
        if (!ss_mul_ok(p, (size_t)dims[i], &p))
            return ss_errorf(SS_ERR_NOMEM, "%s: size overflows 64 bits", what);
    }
    *out = p;
    return SS_OK;
}

/* The CPU backend keeps released blocks for its next requests (src/backend/cpu_ops.c): an
 * allocation that fails gives them back to malloc and is tried again, as the backend's own
 * do (a job's host buffers after its passes, under ulimit -v). Weak: a program without the
 * backend keeps none. */
void ss_cpu_cache_drop(void) __attribute__((weak));

static int kept_blocks_given_back(void) {
    if (!ss_cpu_cache_drop) return 0;
    ss_cpu_cache_drop();
    return 1;
}

void *ss_malloc(size_t n, const char *what) {
    void *p = malloc(n ? n : 1);
    if (!p && kept_blocks_given_back()) p = malloc(n ? n : 1);
    if (!p) ss_errorf(SS_ERR_NOMEM, "out of memory allocating %zu bytes for %s", n, what);
    return p;
}

void *ss_calloc(size_t count, size_t size, const char *what) {
    void *p = calloc(count ? count : 1, size ? size : 1);
    if (!p && kept_blocks_given_back()) p = calloc(count ? count : 1, size ? size : 1);
    if (!p) ss_errorf(SS_ERR_NOMEM, "out of memory allocating %zu x %zu bytes for %s", count, size, what);
    return p;
}

void *ss_realloc(void *old, size_t n, const char *what) {
    void *p = realloc(old, n ? n : 1);
    if (!p && kept_blocks_given_back()) p = realloc(old, n ? n : 1);
    if (!p) ss_errorf(SS_ERR_NOMEM, "out of memory growing %s to %zu bytes", what, n);
    return p;
}

char *ss_strdup(const char *s) { return s ? ss_strndup(s, strlen(s)) : NULL; }

char *ss_strndup(const char *s, size_t n) {
    char *p = ss_malloc(n + 1, "string");
    if (!p) return NULL;
    memcpy(p, s, n);
    p[n] = 0;
    return p;
}

static atomic_int progress_line_open;

void ss_progress_line(int open) { atomic_store(&progress_line_open, open != 0); }

void ss_progress_end(void) {
    if (atomic_exchange(&progress_line_open, 0)) fputc('\n', stderr);
}

void ss_eprintf(const char *fmt, ...) {
    ss_progress_end();
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
}

char *ss_strfmt(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    char *s = NULL;
    int n = vasprintf(&s, fmt, ap);
    va_end(ap);
    if (n < 0) {
        ss_errorf(SS_ERR_NOMEM, "out of memory formatting a string");
        return NULL;
    }
    return s;
}

ss_status ss_input_kind(const char *path, int pipe_ok) {
    struct stat sb;
    if (stat(path, &sb) != 0) return ss_errorf(SS_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    if (S_ISREG(sb.st_mode) || (pipe_ok && S_ISFIFO(sb.st_mode))) return SS_OK;
    if (S_ISDIR(sb.st_mode)) return ss_errorf(SS_ERR_IO, "%s: is a folder, not a file", path);
    if (S_ISFIFO(sb.st_mode))
        return ss_errorf(SS_ERR_IO, "%s: is a pipe, not a regular file (only a text input read once, such as --input, "
                         "may be one: save it to a file)", path);
    const char *kind = S_ISCHR(sb.st_mode) ? "a character device" : S_ISBLK(sb.st_mode) ? "a block device"
                     : S_ISSOCK(sb.st_mode) ? "a socket" : "not a regular file";
    return ss_errorf(SS_ERR_IO, "%s: is %s, not a file to read", path, kind);
}

ss_status ss_open_read(const char *path, FILE **f) {
    *f = NULL;
    SS_TRY(ss_input_kind(path, 1)); /* before opening: opening a device can do things */
    if (!(*f = fopen(path, "rb"))) return ss_errorf(SS_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fileno(*f), &sb) || !(S_ISREG(sb.st_mode) || S_ISFIFO(sb.st_mode))) { /* replaced since */
        fclose(*f);
        *f = NULL;
        return ss_errorf(SS_ERR_IO, "%s: is not a regular file or a pipe", path);
    }
    return SS_OK;
}

enum { TMP_SLOTS = 64 };
static _Atomic(const char *) tmp_slots[TMP_SLOTS];
static atomic_int sig_held;   /* a job is putting its files in place (ss_signals_hold) */
static pthread_t sig_holder;  /* in this thread, which blocks the signals meanwhile */
static atomic_int sig_ending; /* handlers on their way to end the process (not passing one on) */
static atomic_int tmp_walking; /* handlers reading the registered paths (ss_tmp_unregister waits) */

static void tmp_on_signal(int sig) {
    /* Counted before sig_held is read, as ss_signals_hold reads this after setting it: either the
     * signal is passed on to the holder, or the holder waits for the end of the process. */
    atomic_fetch_add(&sig_ending, 1);
    if (atomic_load(&sig_held) && !pthread_equal(pthread_self(), sig_holder)) {
        /* Taken by another thread while the holder puts files in place: it waits, blocked, in
         * the holder until they all are (pthread_kill and pthread_self are async-signal-safe). */
        const int e = errno;
        pthread_kill(sig_holder, sig);
        atomic_fetch_sub(&sig_ending, 1);
        errno = e;
        return;
    }
    /* Counted before the slots are read, as ss_tmp_unregister reads this after emptying one:
     * either the path is not seen here, or its owner waits before freeing it. */
    atomic_fetch_add(&tmp_walking, 1);
    for (int i = 0; i < TMP_SLOTS; i++) {
        const char *p = atomic_load(&tmp_slots[i]);
        if (p) unlink(p); /* async-signal-safe */
    }
    for (int i = 0; i < TMP_SLOTS; i++) { /* then the folders, emptied above (rmdir fails on any other) */
        const char *p = atomic_load(&tmp_slots[i]);
        if (p) rmdir(p);
    }
    atomic_fetch_sub(&tmp_walking, 1);
    signal(sig, SIG_DFL);
    raise(sig);
}

static void tmp_install(void) {
    static atomic_int installed;
    if (atomic_exchange(&installed, 1)) return;
    /* SIGPIPE too: ss_signals_hold holds it, and one sent to the process goes to any thread */
    const int sigs[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGPIPE};
    for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++) {
        struct sigaction old, sa = {0};
        if (sigaction(sigs[i], NULL, &old) || old.sa_handler != SIG_DFL) continue; /* ignored or someone's */
        sa.sa_handler = tmp_on_signal;
        sa.sa_flags = SA_RESTART; /* a signal passed on to the holder returns to a call in progress */
        sigemptyset(&sa.sa_mask);
        sigaction(sigs[i], &sa, NULL);
    }
}

void ss_tmp_register(const char *path) {
    tmp_install();
    for (int i = 0; i < TMP_SLOTS; i++) {
        const char *none = NULL;
        if (atomic_compare_exchange_strong(&tmp_slots[i], &none, path)) return;
    }
}

void ss_signals_hold(ss_signals_held *held) {
    tmp_install();
    sigset_t s;
    sigemptyset(&s);
    const int sigs[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGPIPE};
    for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++) sigaddset(&s, sigs[i]);
    pthread_sigmask(SIG_BLOCK, &s, &held->old);
    sig_holder = pthread_self();
    atomic_store(&sig_held, 1);
    /* A signal that another thread took just before is ending the process (its handler removing
     * the temporaries): no file goes into place first, or the end would come between two. */
    while (atomic_load(&sig_ending)) nanosleep(&(struct timespec){0, 1000000}, NULL);
}

void ss_signals_release(const ss_signals_held *held) {
    atomic_store(&sig_held, 0); /* first: one delivered below stops the process */
    pthread_sigmask(SIG_SETMASK, &held->old, NULL);
}

void ss_tmp_unregister(const char *path) {
    for (int i = 0; i < TMP_SLOTS; i++) {
        const char *p = path;
        if (atomic_compare_exchange_strong(&tmp_slots[i], &p, NULL)) {
            /* A handler in another thread may have read the path before: the caller frees it on
             * return, so wait for the handlers reading the paths to be done with them. */
            while (atomic_load(&tmp_walking)) nanosleep(&(struct timespec){0, 1000000}, NULL);
            return;
        }
    }
}

/* This host's name as a temporary file's name has it: letters, digits and
 * '-', anything else (the dots of a domain) '_', at most 64 characters. */
static void tmp_host(char out[65]) {
    char h[256] = "";
    if (gethostname(h, sizeof h - 1) != 0 || !h[0]) snprintf(h, sizeof h, "localhost");
    int n = 0;
    for (; h[n] && n < 64; n++) {
        const char ch = h[n];
        out[n] = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '-' ? ch : '_';
    }
    out[n] = 0;
}

int ss_fsync(int fd) {
    if (fsync(fd) == 0) return 0;
    return errno == EINVAL || errno == ENOTSUP ? 0 : -1;
}

char *ss_tmp_name(const char *final_path) {
    char host[65];
    tmp_host(host);
    return ss_strfmt("%s.tmp.%s.%ld", final_path, host, (long)getpid());
}

ss_status ss_replace_file(ss_replace *r, const char *tmp, const char *dest, const char *name) {
    if (r->n == SS_REPLACE_MAX)
        return ss_errorf(SS_ERR_INTERNAL, "%s: more than %d files put in place at once", name, SS_REPLACE_MAX);
    /* tmp's name with its ".tmp." made ".old.": beside dest, hidden where tmp is, and no longer
     * than tmp, whose length the command line checked (tmp_too_long) */
    const char *slash = strrchr(tmp, '/'), *mark = NULL;
    for (const char *p = slash ? slash : tmp; (p = strstr(p, ".tmp.")); p++) mark = p;
    if (!mark) return ss_errorf(SS_ERR_INTERNAL, "%s: %s is not a temporary's name (ss_tmp_name)", name, tmp);
    char *d = ss_strdup(dest), *kept = NULL;
    struct stat sb;
    const int had = lstat(dest, &sb) == 0 && !S_ISDIR(sb.st_mode); /* a folder: the rename fails, and nothing is kept */
    if (d && had) kept = ss_strfmt("%.*s.old.%s", (int)(mark - tmp), tmp, mark + 5);
    if (!d || (had && !kept)) {
        free(d), free(kept);
        return ss_errorf(SS_ERR_NOMEM, "out of memory");
    }
    int aside = 0; /* kept by renaming, not by a link: dest has no file until the rename below */
    if (kept && link(dest, kept) != 0) {
        int e = errno;
        if (e == ENOENT && lstat(dest, &sb) != 0) { /* gone meanwhile: nothing to keep */
            free(kept), kept = NULL;
        } else {
            if (e == EEXIST || lstat(kept, &sb) == 0) e = EEXIST; /* a killed run's kept copy: left alone */
            else if (rename(dest, kept) == 0) aside = 1;
            else e = errno;
            if (!aside) {
                ss_status st = ss_errorf(SS_ERR_IO, "%s: cannot keep the earlier file as %s while %s goes into place: %s",
                                         name, kept, tmp, strerror(e));
                free(d), free(kept);
                return st;
            }
        }
    }
    if (rename(tmp, dest) != 0) {
        const int e = errno;
        if (aside && rename(kept, dest) != 0)
            ss_eprintf("subscope: error: could not put the earlier %s back (it is kept as %s): %s\n", dest, kept,
                       strerror(errno));
        else if (kept && !aside) unlink(kept);
        free(d), free(kept);
        return ss_errorf(SS_ERR_IO, "%s: cannot rename %s into place: %s", name, tmp, strerror(e));
    }
    r->dest[r->n] = d, r->kept[r->n] = kept, r->n++;
    return SS_OK;
}

void ss_replace_undo(ss_replace *r) {
    for (int i = r->n - 1; i >= 0; i--) {
        if (r->kept[i] ? rename(r->kept[i], r->dest[i]) != 0 : unlink(r->dest[i]) != 0 && errno != ENOENT) {
            if (r->kept[i])
                ss_eprintf("subscope: error: could not put the earlier %s back (it is kept as %s): %s\n", r->dest[i],
                           r->kept[i], strerror(errno));
            else
                ss_eprintf("subscope: error: could not remove the new %s: %s\n", r->dest[i], strerror(errno));
        }
        free(r->dest[i]), free(r->kept[i]);
    }
    r->n = 0;
}

void ss_replace_done(ss_replace *r) {
    for (int i = 0; i < r->n; i++) {
        if (r->kept[i] && unlink(r->kept[i]) != 0 && errno != ENOENT) /* the new file is in place: said, not an error */
            ss_eprintf("subscope: warning: could not remove %s, the earlier %s kept while the new one went into "
                       "place: %s (remove it)\n", r->kept[i], r->dest[i], strerror(errno));
        free(r->dest[i]), free(r->kept[i]);
    }
    r->n = 0;
}

ss_status ss_out_target(const char *path, char **target) {
    *target = NULL;
    struct stat sb;
    size_t n = strlen(path);
    while (n > 1 && path[n - 1] == '/') n--; /* train's --out DIR/: the link itself, not what it names */
    char *cur = ss_strndup(path, n);
    if (!cur) return SS_ERR_NOMEM;
    if (lstat(cur, &sb) != 0 || !S_ISLNK(sb.st_mode)) { /* no link: the name itself, as given */
        free(cur);
        return (*target = ss_strdup(path)) ? SS_OK : SS_ERR_NOMEM;
    }
    /* Each link in turn, as the kernel follows them (a relative one from its own folder), to the
     * first name that is not a link, or is not there: realpath(3) follows a chain only to a name
     * that exists, and a dangling link is a file to create where it points. */
    ss_status st = SS_OK;
    for (int hops = 0; !st && lstat(cur, &sb) == 0 && S_ISLNK(sb.st_mode); hops++) {
        char to[4096];
        const ssize_t len = hops < 40 ? readlink(cur, to, sizeof to) : -1; /* 40: Linux's own limit */
        if (len < 0 || (size_t)len >= sizeof to) {
            st = ss_errorf(SS_ERR_IO, "%s: cannot follow the symbolic link %s: %s", path, cur,
                           hops >= 40 ? "more than 40 links (a loop?)" : len < 0 ? strerror(errno) : "its target is too long");
            break;
        }
        to[len] = 0;
        const char *slash = strrchr(cur, '/');
        char *next = to[0] == '/' || !slash ? ss_strdup(to) : ss_strfmt("%.*s/%s", (int)(slash - cur), cur, to);
        free(cur);
        if (!(cur = next)) return SS_ERR_NOMEM;
    }
    if (!st && !(*target = realpath(cur, NULL))) {
        /* A dangling link: its target is created, in a folder that must be there. */
        const int e = errno;
        char *slash = strrchr(cur, '/');
        const char *base = slash ? slash + 1 : cur;
        char *dir = ss_path_folder(cur);
        char *rdir = e == ENOENT && dir ? realpath(dir, NULL) : NULL;
        if (!dir) st = SS_ERR_NOMEM;
        else if (!*base) /* "nodir/": not a folder that cannot be used, but no file's name */
            st = ss_errorf(SS_ERR_ARG, "%s: a symbolic link to %s, which ends in '/': it names a folder, not a file", path, cur);
        else if (e != ENOENT) st = ss_errorf(SS_ERR_IO, "%s: a symbolic link to %s, which cannot be used: %s", path, cur, strerror(e));
        else if (!rdir) st = ss_errorf(SS_ERR_IO, "%s: a symbolic link to %s, whose folder %s cannot be used: %s", path, cur, dir, strerror(errno));
        else if (!strcmp(base, ".") || !strcmp(base, ".."))
            st = ss_errorf(SS_ERR_ARG, "%s: a symbolic link to %s, which names no file", path, cur);
        else if (!(*target = ss_path_join(rdir, base))) st = SS_ERR_NOMEM;
        free(dir);
        free(rdir);
    }
    free(cur);
    return st;
}

/* The file an output is renamed over, spelt one way: its target (ss_out_target) in its folder's
 * realpath. NULL where that cannot be worked out (a folder not there: an error later anyway). */
static char *out_canonical(const char *path) {
    char *t = NULL, *dir = NULL, *rdir = NULL, *canon = NULL;
    if (ss_out_target(path, &t)) {
        ss_error_clear();
        return NULL;
    }
    const char *slash = strrchr(t, '/');
    dir = ss_path_folder(t);
    if (dir && (rdir = realpath(dir, NULL))) canon = ss_path_join(rdir, slash ? slash + 1 : t);
    free(t), free(dir), free(rdir);
    return canon;
}

int ss_same_out(const char *a, const char *b) {
    if (!strcmp(a, b)) return 1;
    char *ca = out_canonical(a), *cb = out_canonical(b);
    const int same = ca && cb && !strcmp(ca, cb);
    free(ca), free(cb);
    return same;
}

/* s starts with "<host>.<pid>" (host without dots, pid digits); *end after it. */
static int tmp_writer(const char *s, const char **host, size_t *host_len, long *pid, const char **end) {
    const char *dot = strchr(s, '.');
    if (!dot || dot == s || dot[1] < '0' || dot[1] > '9') return 0;
    char *e;
    errno = 0;
    long p = strtol(dot + 1, &e, 10);
    if (errno || p <= 0) return 0;
    *host = s, *host_len = (size_t)(dot - s), *pid = p, *end = e;
    return 1;
}

static void tmp_sweep(const char *final_path) {
    /* once per path and process: a checkpoint is written again and again */
    static uint64_t seen[16];
    static int n_seen;
    const uint64_t k = ss_hash64(final_path, strlen(final_path), 0);
    for (int i = 0; i < n_seen; i++)
        if (seen[i] == k) return;
    if (n_seen < 16) seen[n_seen++] = k;

    const char *slash = strrchr(final_path, '/'), *base = slash ? slash + 1 : final_path;
    char *dir = ss_path_folder(final_path);
    char *prefix = ss_strfmt("%s.tmp.", base);
    DIR *d = dir && prefix ? opendir(dir) : NULL;
    char host[65];
    tmp_host(host);
    const size_t pl = prefix ? strlen(prefix) : 0;
    for (struct dirent *e; d && (e = readdir(d));) {
        if (strncmp(e->d_name, prefix, pl) != 0) continue;
        const char *rest = e->d_name + pl, *h, *end, *h2, *end2;
        size_t hl, hl2;
        long pid, pid2;
        char *path = ss_path_join(dir, e->d_name);
        struct stat sb;
        if (!path || lstat(path, &sb) != 0 || !S_ISREG(sb.st_mode)) {
            free(path);
            continue;
        }
        if (strspn(rest, "0123456789") == strlen(rest) && *rest) { /* OUT.tmp.<pid>: before host names */
            ss_eprintf("subscope: note: left %s, a temporary file of an older subscope (no host in its name, so "
                       "this run cannot tell whether its writer is gone); delete it if no run still writes %s\n",
                       path, final_path);
            free(path);
            continue;
        }
        /* <host>.<pid>, or a writer's own temporary of its temporary: <host>.<pid>.tmp.<host>.<pid> */
        int ok = tmp_writer(rest, &h, &hl, &pid, &end);
        if (ok && *end) ok = !strncmp(end, ".tmp.", 5) && tmp_writer(end + 5, &h2, &hl2, &pid2, &end2) && !*end2 &&
                             hl2 == hl && !strncmp(h2, h, hl) && pid2 == pid;
        if (!ok) {
            free(path);
            continue;
        }
        if (hl != strlen(host) || strncmp(h, host, hl) != 0) {
            ss_eprintf("subscope: note: left %s, written on host %.*s by process %ld: this run cannot tell from "
                       "here whether that run still writes it; delete it once none does\n",
                       path, (int)hl, h, pid);
        } else if (pid != (long)getpid() && kill((pid_t)pid, 0) != 0 && errno == ESRCH) {
            /* this host's writer is gone; HDF5 holds an flock on a file it writes, one more sign of life */
            int fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
            if (fd >= 0 && (flock(fd, LOCK_EX | LOCK_NB) == 0 || errno != EWOULDBLOCK) && unlink(path) == 0)
                ss_eprintf("subscope: removed %s, left by process %ld of this host, which is gone\n", path, pid);
            if (fd >= 0) close(fd);
        }
        free(path);
    }
    if (d) closedir(d);
    free(dir);
    free(prefix);
}

void ss_tmp_sweep(const char *final_path) {
    char *target = NULL; /* the temporaries are beside the file a link names */
    if (ss_out_target(final_path, &target) == SS_OK) tmp_sweep(target);
    else ss_error_clear(); /* the write that follows says why */
    free(target);
}

static ss_status file_read(const char *path, int pipe_ok, char **data, size_t *len) {
    *data = NULL;
    *len = 0;
    FILE *f;
    SS_TRY(ss_input_kind(path, pipe_ok));
    SS_TRY(ss_open_read(path, &f));
    struct stat sb;
    const int pipe = !fstat(fileno(f), &sb) && S_ISFIFO(sb.st_mode);
    size_t cap = 1 << 16, n = 0;
    char *buf = ss_malloc(cap, path);
    if (!buf) { fclose(f); return SS_ERR_NOMEM; }
    for (;;) {
        if (cap - n < 2) {
            if (pipe && n > SS_PIPE_READ_MAX) {
                free(buf);
                fclose(f);
                return ss_errorf(SS_ERR_IO, "%s: a pipe of more than %d MiB: save it to a file and name that", path,
                                 (int)(SS_PIPE_READ_MAX >> 20));
            }
            /* a pipe's buffer stops one byte past the most it may hold */
            size_t nc = pipe && cap * 2 > SS_PIPE_READ_MAX + 2 ? SS_PIPE_READ_MAX + 2 : cap * 2;
            char *nb = ss_realloc(buf, nc, path);
            if (!nb) { free(buf); fclose(f); return SS_ERR_NOMEM; }
            buf = nb;
            cap = nc;
        }
        size_t r = fread(buf + n, 1, cap - n - 1, f);
        n += r;
        if (r == 0) break;
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) { free(buf); return ss_errorf(SS_ERR_IO, "%s: read error", path); }
    buf[n] = 0;
    *data = buf;
    *len = n;
    return SS_OK;
}

ss_status ss_file_read(const char *path, char **data, size_t *len) { return file_read(path, 0, data, len); }

ss_status ss_input_read(const char *path, char **data, size_t *len) { return file_read(path, 1, data, len); }

int ss_file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0; /* whatever it is: reading it then refuses what is no file, naming it */
}

char *ss_path_folder(const char *path) {
    const char *slash = strrchr(path, '/');
    return slash ? ss_strndup(path, (size_t)(slash - path) + (slash == path)) : ss_strdup(".");
}

char *ss_path_join(const char *dir, const char *name) {
    size_t dl = strlen(dir);
    if (dl && dir[dl - 1] == '/') return ss_strfmt("%s%s", dir, name);
    return ss_strfmt("%s/%s", dir, name);
}

ss_status ss_mmap_open(const char *path, ss_mmap *m) {
    m->data = NULL;
    m->size = 0;
    SS_TRY(ss_input_kind(path, 0)); /* before opening: a FIFO's open waits for a writer */
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return ss_errorf(SS_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return ss_errorf(SS_ERR_IO, "%s: cannot stat: %s", path, strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return ss_errorf(SS_ERR_IO, "%s: not a regular file", path);
    }
    if (st.st_size > 0) {
        void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (p == MAP_FAILED) {
            int e = errno;
            close(fd);
            return ss_errorf(SS_ERR_IO, "%s: cannot map: %s", path, strerror(e));
        }
        m->data = p;
        m->size = (size_t)st.st_size;
    }
    close(fd);
    return SS_OK;
}

void ss_mmap_close(ss_mmap *m) {
    if (m->data) munmap(m->data, m->size);
    m->data = NULL;
    m->size = 0;
}

void ss_mmap_drop(const ss_mmap *m, const void *p, size_t n) {
    const uintptr_t lo = (uintptr_t)m->data, hi = lo + m->size, page = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t a = (uintptr_t)p, b = a + n;
    if (!m->data || a < lo || b > hi || b < a) return;
    a = (a + page - 1) / page * page; /* whole pages only: a neighbour's bytes stay */
    b = b / page * page;
    if (b > a) madvise((void *)a, b - a, MADV_DONTNEED);
}

void ss_mmap_prefetch(const ss_mmap *m, const void *p, size_t n) {
    const uintptr_t lo = (uintptr_t)m->data, hi = lo + m->size, page = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t a = (uintptr_t)p, b = a + n;
    if (!m->data || a < lo || b > hi || b <= a) return;
    a = a / page * page; /* every page the bytes touch */
    madvise((void *)a, b - a, MADV_WILLNEED);
}

double ss_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int64_t ss_peak_host_bytes(void) {
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru)) return 0;
    return (int64_t)ru.ru_maxrss * 1024; /* KiB on Linux */
}

void ss_fmt_bytes(char *buf, size_t n, double bytes) {
    const char *u[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    int i = 0;
    while (bytes >= 1024 && i < 4) bytes /= 1024, i++;
    snprintf(buf, n, "%.1f %s", bytes, u[i]);
}

float ss_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f, man = h & 0x3ff, bits;
    if (exp == 0) {
        if (man == 0) {
            bits = sign;
        } else { /* subnormal: renormalise */
            exp = 127 - 15 + 1;
            while (!(man & 0x400)) { man <<= 1; exp--; }
            man &= 0x3ff;
            bits = sign | (exp << 23) | (man << 13);
        }
    } else if (exp == 0x1f) {
        bits = sign | 0x7f800000u | (man << 13);
    } else {
        bits = sign | ((exp + 127 - 15) << 23) | (man << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

uint16_t ss_f32_to_bf16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40); /* quiet NaN */
    x += 0x7fffu + ((x >> 16) & 1); /* round to nearest even */
    return (uint16_t)(x >> 16);
}

uint16_t ss_f32_to_f16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000;
    uint32_t ax = x & 0x7fffffffu;
    if (ax > 0x7f800000u) return (uint16_t)(sign | 0x7e00);
    if (ax >= 0x477ff000u) return (uint16_t)(sign | 0x7c00); /* overflow to inf */
    if (ax < 0x38800000u) { /* subnormal or zero in half */
        if (ax < 0x33000000u) return (uint16_t)sign;
        uint32_t e = ax >> 23, m = (ax & 0x7fffff) | 0x800000;
        uint32_t shift = 126 - e; /* 14..24: the value in units of 2^-24 */
        uint32_t q = m >> shift, rem = m & ((1u << shift) - 1), halfway = 1u << (shift - 1);
        if (rem > halfway || (rem == halfway && (q & 1))) q++; /* round to nearest even */
        return (uint16_t)(sign | q);
    }
    uint32_t r = ax + 0xfffu + ((ax >> 13) & 1) - 0x38000000u;
    return (uint16_t)(sign | (r >> 13));
}

uint64_t ss_address_space_limit(void) {
    struct rlimit rl;
    return getrlimit(RLIMIT_AS, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY ? 0 : (uint64_t)rl.rlim_cur;
}

int ss_parse_int_n(const char *s, size_t n, int64_t *out) {
    size_t i = 0;
    const int neg = n > 0 && s[0] == '-';
    i += (size_t)neg;
    if (i >= n) return 0;
    uint64_t v = 0;
    const uint64_t lim = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
    for (; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return 0;
        const unsigned d = (unsigned)(s[i] - '0');
        if (v > (lim - d) / 10) return 0;
        v = v * 10 + d;
    }
    *out = neg ? (v == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)v) : (int64_t)v;
    return 1;
}

int ss_parse_int(const char *s, int64_t *out) { return s && ss_parse_int_n(s, strlen(s), out); }

int ss_parse_real(const char *s, double *out) {
    /* strtod also reads a leading space, '+', hex, inf and nan: only digits, '-', '.', 'e' */
    if (!s || !*s || s[strspn(s, "0123456789-.eE")] || !(isdigit((unsigned char)s[0]) || s[0] == '-' || s[0] == '.'))
        return 0;
    char *end = NULL;
    errno = 0;
    const double x = strtod(s, &end);
    if (end == s || *end || errno == ERANGE || !isfinite(x)) return 0;
    *out = x;
    return 1;
}

ss_status ss_env_int(const char *var, int64_t lo, int64_t hi, int64_t def, const char *what, int64_t *out) {
    const char *v = getenv(var);
    int64_t x;
    if (!v || !*v) x = def;
    else if (!ss_parse_int(v, &x) || x < lo || x > hi)
        return ss_errorf(SS_ERR_ARG, "%s='%s': must be a whole number%s%s in %lld..%lld, or unset for the default", var,
                         v, what && *what ? " of " : "", what ? what : "", (long long)lo, (long long)hi);
    *out = x;
    return SS_OK;
}

ss_status ss_env_real(const char *var, double lo, double hi, double def, const char *what, double *out) {
    const char *v = getenv(var);
    double x = def;
    if (v && *v) {
        if (!ss_parse_real(v, &x) || x < lo || x > hi)
            return ss_errorf(SS_ERR_ARG, "%s='%s': must be a number%s%s in %g..%g, or unset for the default", var, v,
                             what && *what ? " of " : "", what ? what : "", lo, hi);
    }
    *out = x;
    return SS_OK;
}

ss_status ss_env_choice(const char *var, const char *const *names, int def, const char *takes, int *out) {
    const char *v = getenv(var);
    if (!v || !*v) {
        *out = def;
        return SS_OK;
    }
    for (int i = 0; names[i]; i++)
        if (!strcmp(v, names[i])) {
            *out = i;
            return SS_OK;
        }
    return ss_errorf(SS_ERR_ARG, "%s='%s': must be %s", var, v, takes);
}

#define TAKES_BLAS_CORE                                                                                         \
    "auto (OpenBLAS's kernels for what the CPU supports where OpenBLAS took it for an older one) or keep (OpenBLAS's own choice)"

static const char *const env_off_on[] = {"0", "1", NULL};

int ss_env_flag(const char *var) {
    int v = 0;
    if (ss_env_choice(var, env_off_on, 0, "", &v) != SS_OK) { /* refused before a command runs (ss_env_check) */
        ss_error_clear();
        v = 0;
    }
    return v;
}

int ss_blas_core_setting(void) {
    static const char *const names[] = {"auto", "keep", NULL};
    int v = 0;
    if (ss_env_choice("SUBSCOPE_BLAS_CORE", names, 0, TAKES_BLAS_CORE, &v) != SS_OK) {
        ss_error_clear(); /* refused before a command runs (ss_env_check) */
        return -1;
    }
    return v;
}

ss_status ss_env_check(void) {
    static const char *const dist[] = {"auto", "nccl", NULL};
    static const char *const flags[] = {"SUBSCOPE_TIMING", "SUBSCOPE_SEND_THREAD", "SUBSCOPE_PREDICT_RECOMPUTE",
                                        "SUBSCOPE_PREDICT_TRACE"};
    int64_t i64;
    double d;
    int c;
    SS_TRY(ss_env_int("SUBSCOPE_THREADS", 1, 1024, 0, "threads", &i64));
    SS_TRY(ss_env_real("SUBSCOPE_DIST_TIMEOUT", 1e-3, 1e9, 300, "seconds", &d));
    SS_TRY(ss_env_choice("SUBSCOPE_DIST", dist, 0, "auto (single process or MPI, from the launcher) or nccl", &c));
    SS_TRY(ss_env_choice("SUBSCOPE_BLAS_CORE", (const char *const[]){"auto", "keep", NULL}, 0, TAKES_BLAS_CORE, &c));
    SS_TRY(ss_env_int("SUBSCOPE_NCCL_CHUNK", 16, (int64_t)1 << 30, 0, "bytes", &i64));
    for (size_t i = 0; i < sizeof flags / sizeof *flags; i++) SS_TRY(ss_env_choice(flags[i], env_off_on, 0, "1 or 0", &c));
    return SS_OK;
}

int ss_num_threads(void) {
    /* Read once: sysconf opens a file under /sys each time. */
    static _Atomic int cached;
    int n = atomic_load(&cached);
    if (n) return n;
    /* a bad value is refused before a command runs (subscope's env_ok); here, all the cores */
    const char *e = getenv("SUBSCOPE_THREADS");
    int64_t v = 0;
    if (!e || !ss_parse_int(e, &v)) v = 0;
    if (v < 1 || v > 1024) {
        v = sysconf(_SC_NPROCESSORS_ONLN);
        v = v >= 1 ? (v > 256 ? 256 : v) : 1;
    }
    atomic_store(&cached, (int)v);
    return (int)v;
}

int ss_grow(void *pp, size_t *cap, size_t need, size_t elem) {
    void **p = pp;
    if (need <= *cap) return 1;
    size_t nc = *cap ? *cap : 16;
    while (nc < need) {
        if (nc > SIZE_MAX / 2 / elem) return 0;
        nc *= 2;
    }
    void *np = ss_realloc(*p, nc * elem, "a growing array"); /* the kept blocks give way to it */
    if (!np) return 0;
    *p = np;
    *cap = nc;
    return 1;
}

void ss_sb_put(ss_sbuf *b, const char *s, size_t n) {
    if (b->oom) return;
    if (n > SIZE_MAX - 1 - b->n || !ss_grow(&b->p, &b->cap, b->n + n + 1, 1)) {
        b->oom = 1;
        return;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}

void ss_sb_str(ss_sbuf *b, const char *s) { ss_sb_put(b, s, strlen(s)); }

void ss_sb_printf(ss_sbuf *b, const char *fmt, ...) {
    if (b->oom) return;
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(b->p ? b->p + b->n : NULL, b->p ? b->cap - b->n : 0, fmt, ap);
    va_end(ap);
    if (k < 0) {
        b->oom = 1;
        return;
    }
    if (b->p && b->n + (size_t)k < b->cap) {
        b->n += (size_t)k;
        return;
    }
    if (!ss_grow(&b->p, &b->cap, b->n + (size_t)k + 1, 1)) {
        b->oom = 1;
        return;
    }
    va_start(ap, fmt);
    vsnprintf(b->p + b->n, b->cap - b->n, fmt, ap);
    va_end(ap);
    b->n += (size_t)k;
}

uint64_t ss_mix64(uint64_t z) {
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

double ss_keyed_normal(uint64_t seed, int64_t prompt, int64_t position, int site_id, int64_t unit) {
    uint64_t k = ss_mix64(seed);
    k = ss_mix64(k ^ (uint64_t)prompt);
    k = ss_mix64(k ^ (uint64_t)position);
    k = ss_mix64(k ^ (uint64_t)(int64_t)site_id);
    k = ss_mix64(k ^ (uint64_t)unit);
    uint64_t a = ss_mix64(k ^ 0x9E3779B97F4A7C15ull), b = ss_mix64(k ^ 0xBF58476D1CE4E5B9ull);
    const double two53 = 1.0 / 9007199254740992.0;
    double u1 = (double)((a >> 11) + 1) * two53, u2 = (double)(b >> 11) * two53;
    const double two_pi = 6.283185307179586476925286766559;
    return sqrt(-2.0 * log(u1)) * cos(two_pi * u2);
}

static int in_ranges(const ss_cp_range *r, size_t n, uint32_t cp) {
    size_t lo = 0, hi = n;
    while (lo < hi) {
        const size_t mid = lo + (hi - lo) / 2;
        if (cp > r[mid].hi) lo = mid + 1;
        else if (cp < r[mid].lo) hi = mid;
        else return 1;
    }
    return 0;
}

int ss_cp_width(uint32_t cp) {
    if (cp < 0x300) return 1; /* ASCII and Latin-1: no mark or wide character below U+0300 */
    if (in_ranges(ss_width_zero, sizeof ss_width_zero / sizeof *ss_width_zero, cp)) return 0;
    return in_ranges(ss_width_wide, sizeof ss_width_wide / sizeof *ss_width_wide, cp) ? 2 : 1;
}

/* The next unit of s[0..n): a valid UTF-8 character (its bytes in *len, its columns returned) or
 * one byte that is not part of one (1 column). */
static int next_width(const char *s, size_t n, size_t *len) {
    const int l = ss_utf8_len(s, n);
    if (l <= 0) {
        *len = 1;
        return 1;
    }
    const unsigned char *u = (const unsigned char *)s;
    uint32_t cp = l == 1 ? u[0] : l == 2 ? u[0] & 0x1Fu : l == 3 ? u[0] & 0x0Fu : u[0] & 0x07u;
    for (int i = 1; i < l; i++) cp = cp << 6 | (u[i] & 0x3Fu);
    *len = (size_t)l;
    return ss_cp_width(cp);
}

int ss_display_width(const char *s, size_t n) {
    int w = 0;
    for (size_t i = 0, k; i < n; i += k) w += next_width(s + i, n - i, &k);
    return w;
}

int ss_display_width_str(const char *s) { return ss_display_width(s, strlen(s)); }

void ss_fput_pad(FILE *f, const char *s, int width) {
    fputs(s, f);
    for (int cols = ss_display_width_str(s); cols < width; cols++) fputc(' ', f);
}

void ss_fput_col(FILE *f, const char *s, int width) {
    const size_t len = strlen(s);
    int cols = 0;
    size_t n = 0, k;
    while (n < len) { /* whole characters, and the combining marks (0 columns) after the last one */
        const int w = next_width(s + n, len - n, &k);
        if (cols + w > width) break;
        cols += w;
        n += k;
    }
    fwrite(s, 1, n, f);
    for (; cols < width; cols++) fputc(' ', f);
}

int ss_utf8_chars(const char *s) {
    int n = 0;
    for (; *s; s++) n += ((unsigned char)*s & 0xC0) != 0x80;
    return n;
}

size_t ss_utf8_bom(const char *text, size_t len) { return len >= 3 && !memcmp(text, "\xef\xbb\xbf", 3) ? 3 : 0; }

int ss_utf8_len(const char *str, size_t avail) {
    const unsigned char *s = (const unsigned char *)str;
    if (!avail) return 0;
    unsigned c = s[0], lo = 0x80, hi = 0xBF; /* the second byte's range (Unicode's table 3-7) */
    int n;
    if (c < 0x80) return 1;
    if (c < 0xC2) return 0; /* a continuation byte, or an overlong 2-byte lead */
    if (c < 0xE0) n = 2;
    else if (c < 0xF0) {
        n = 3;
        if (c == 0xE0) lo = 0xA0;      /* overlong */
        else if (c == 0xED) hi = 0x9F; /* surrogate */
    } else if (c < 0xF5) {
        n = 4;
        if (c == 0xF0) lo = 0x90;      /* overlong */
        else if (c == 0xF4) hi = 0x8F; /* > U+10FFFF */
    } else {
        return 0;
    }
    for (int i = 1; i < n; i++, lo = 0x80, hi = 0xBF) {
        if ((size_t)i >= avail) return -i;
        if (s[i] < lo || s[i] > hi) return 0;
    }
    return n;
}

/* The quoted form of the character or byte at s[0] (n bytes there) into u (NUL-terminated):
 * an escape, or a valid UTF-8 character as it is; returns the bytes of s it covers. */
static size_t quoted_unit(const char *s, size_t n, char quote, char u[8]) {
    unsigned char c = (unsigned char)s[0];
    int l = ss_utf8_len(s, n);
    if (c == '\\' || c == (unsigned char)quote) u[0] = '\\', u[1] = (char)c, u[2] = 0;
    else if (c == '\n') strcpy(u, "\\n");
    else if (c == '\t') strcpy(u, "\\t");
    else if (c < 0x20 || c == 0x7f || l <= 0) snprintf(u, 8, "\\x%02x", c);
    else {
        memcpy(u, s, (size_t)l);
        u[l] = 0;
        return (size_t)l;
    }
    return 1;
}

void ss_sb_quoted_cut(ss_sbuf *b, const char *s, size_t n, char quote, int width) {
    char u[8];
    int room = -1; /* characters for the content when it is cut, -1 when it is not */
    if (width > 0) {
        int all = 2; /* the quotes */
        for (size_t i = 0; i < n && all <= width;) {
            i += quoted_unit(s + i, n - i, quote, u);
            all += ss_display_width_str(u);
        }
        if (all > width) room = width > 3 ? width - 3 : 0; /* the quotes and the ellipsis */
    }
    ss_sb_put(b, &quote, 1);
    for (size_t i = 0, used = 0; i < n;) {
        size_t k = quoted_unit(s + i, n - i, quote, u);
        size_t c = (size_t)ss_display_width_str(u); /* columns: a CJK character 2, a combining mark 0 */
        if (room >= 0 && used + c > (size_t)room) {
            ss_sb_str(b, "\xe2\x80\xa6"); /* … */
            break;
        }
        ss_sb_str(b, u);
        used += c;
        i += k;
    }
    ss_sb_put(b, &quote, 1);
}

void ss_sb_quoted(ss_sbuf *b, const char *s, size_t n, char quote) { ss_sb_quoted_cut(b, s, n, quote, 0); }

size_t ss_fput_utf8(FILE *f, const char *s, size_t n, int final) {
    size_t i = 0, run = 0;
    while (i < n) {
        int l = ss_utf8_len(s + i, n - i);
        if (l > 0) {
            i += (size_t)l;
            continue;
        }
        fwrite(s + run, 1, i - run, f);
        if (l < 0 && !final) return n - i; /* a character the next bytes may complete */
        fprintf(f, "\\x%02x", (unsigned char)s[i]);
        run = ++i;
    }
    fwrite(s + run, 1, n - run, f);
    return 0;
}
