#define _GNU_SOURCE
#include "test.h"

#include <stdarg.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

typedef struct { const char *name, *file; void (*fn)(void); } test_case;
static test_case cases[1024];
static int n_cases, cur_failed;
static char tmp_dir[256];

void ss_test_register(const char *name, void (*fn)(void), const char *file) {
    if (n_cases < (int)(sizeof cases / sizeof cases[0])) cases[n_cases++] = (test_case){name, file, fn};
}

void ss_test_fail(const char *file, int line, const char *fmt, ...) {
    if (!cur_failed) fprintf(stdout, "\n");
    cur_failed = 1;
    va_list ap;
    va_start(ap, fmt);
    fprintf(stdout, "    %s:%d: ", file, line);
    vfprintf(stdout, fmt, ap);
    fprintf(stdout, "\n");
    va_end(ap);
}

const char *ss_test_data_dir(void) {
    const char *d = getenv("SS_TEST_DATA");
    return d && *d ? d : "tests/data";
}

int ss_test_child_wait(int pid, int read_fd, char *buf, size_t cap) {
    size_t got = 0;
    ssize_t r;
    while (got < cap - 1 && (r = read(read_fd, buf + got, cap - 1 - got)) > 0) got += (size_t)r;
    buf[got] = 0;
    close(read_fd);
    int status = 0;
    waitpid(pid, &status, 0);
    return status;
}

const char *ss_test_tmp_dir(void) {
    if (!tmp_dir[0]) {
        snprintf(tmp_dir, sizeof tmp_dir, "/tmp/ss_test_XXXXXX");
        if (!mkdtemp(tmp_dir)) { perror("mkdtemp"); exit(2); }
    }
    return tmp_dir;
}

static int cmp_case(const void *a, const void *b) {
    const test_case *x = a, *y = b;
    int c = strcmp(x->file, y->file);
    return c ? c : strcmp(x->name, y->name);
}

int main(int argc, char **argv) {
    /* The tests that compare an op split over the pool with the same op on one thread compare
     * nothing on a one-core machine: unless the caller chose a count, three threads (two split
     * points, ragged shares) whatever the cores. */
    setenv("SUBSCOPE_THREADS", "3", 0);
    qsort(cases, (size_t)n_cases, sizeof cases[0], cmp_case);
    int passed = 0, failed = 0;
    for (int i = 0; i < n_cases; i++) {
        if (argc > 1 && !strstr(cases[i].name, argv[1])) continue;
        /* a rank_ test is one rank of a multi-process run a CLI test starts (tests/cli/test_dist.sh):
         * alone it would check nothing, so it runs only when a filter names it */
        if (!strncmp(cases[i].name, "rank_", 5) && (argc < 2 || strncmp(argv[1], "rank_", 5))) continue;
        fprintf(stdout, "  %-50s", cases[i].name);
        fflush(stdout);
        cur_failed = 0;
        ss_error_clear();
        cases[i].fn();
        if (cur_failed) { failed++; fprintf(stdout, "  FAIL %s\n", cases[i].name); }
        else { passed++; fprintf(stdout, " ok\n"); }
        fflush(stdout);
    }
    if (tmp_dir[0]) {
        char cmd[300];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp_dir);
        if (system(cmd) != 0) fprintf(stderr, "warning: could not remove %s\n", tmp_dir);
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
