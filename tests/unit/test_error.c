/* The thread's error message: messages longer than its 2 KiB keep their head and their end. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "subscope/util.h"
#include "test.h"

/* A message over the buffer (a path of 5000 characters) kept its first 2047 bytes and lost its
 * end, where the reason is; the middle goes now, as "…", and no UTF-8 character is split. */
TEST(error_long_message_keeps_head_and_end) {
    char *p = malloc(5001);
    CHECK(p != NULL);
    if (!p) return;
    for (int i = 0; i < 5000; i++) p[i] = "\xc3\xa9\xe2\x82\xac" "x"[i % 6]; /* "é€x"..., ending in é */
    p[5000] = 0;
    /* "/" first: both cuts (at bytes 1022 and n - 1022) fall inside a character */
    ss_errorf(SS_ERR_IO, "/%s: cannot open: File name too long", p);
    const char *m = ss_last_error();
    size_t n = strlen(m);
    CHECK(n < 2048 && n > 2000);
    CHECK(m[0] == '/' && strncmp(m + 1, p, 100) == 0);
    const char *end = "\xc3\xa9: cannot open: File name too long";
    CHECK(n > strlen(end) && strcmp(m + n - strlen(end), end) == 0);
    CHECK(strstr(m, "\xe2\x80\xa6") != NULL);
    /* every byte belongs to a whole character: lead bytes are followed by their continuations */
    int bad = 0;
    for (size_t i = 0; i < n;) {
        unsigned char c = (unsigned char)m[i];
        size_t k = c < 0x80 ? 1 : c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 0;
        if (k == 0) { bad++; i++; continue; }
        for (size_t j = 1; j < k; j++)
            if (i + j >= n || ((unsigned char)m[i + j] & 0xC0) != 0x80) bad++;
        i += k;
    }
    CHECK(bad == 0);
    /* a context before it: the newest context at the head, the reason still at the end */
    ss_error_context(SS_ERR_IO, "--model %s", p);
    m = ss_last_error();
    n = strlen(m);
    CHECK(n < 2048 && strncmp(m, "--model ", 8) == 0);
    CHECK(n > strlen(end) && strcmp(m + n - strlen(end), end) == 0);
    /* short ones whole, as before */
    ss_errorf(SS_ERR_IO, "%s: bad", "f.h5");
    ss_error_context(SS_ERR_IO, "reading %s", "x");
    CHECK(strcmp(ss_last_error(), "reading x: f.h5: bad") == 0);
    ss_error_clear();
    free(p);
}

/* While nonzero, vasprintf in this binary fails as the C library's does without memory, after
 * reading its arguments (the va_list it was given is then spent: undefined to use again). */
int ss_test_vasprintf_fails; /* not static: its stores must not be dropped as unread */

int vasprintf(char **out, const char *fmt, va_list ap) {
    va_list aq;
    va_copy(aq, ap);
    const int n = vsnprintf(NULL, 0, fmt, aq);
    va_end(aq);
    char *s = n < 0 || ss_test_vasprintf_fails ? NULL : malloc((size_t)n + 1);
    if (!s) {
        /* spent, as the C library's may leave it (glibc's does, unless printf hooks are
         * registered, as libquadmath's are in this binary): the %d and %s of the tests */
        for (const char *f = strchr(fmt, '%'); f; f = strchr(f + 2, '%'))
            if (f[1] == 'd') (void)va_arg(ap, int);
            else if (f[1] == 's') (void)va_arg(ap, const char *);
        *out = NULL;
        errno = ENOMEM;
        return -1;
    }
    vsnprintf(s, (size_t)n + 1, fmt, ap);
    *out = s;
    return n;
}

/* A message over the buffer whose copy cannot be made (no memory): ss_errorf kept it cut at
 * the buffer's end, but formatted it from the va_list that the failed vasprintf had spent
 * (undefined: here the numbers after the arguments, garbage). Its head now, as when it fits. */
TEST(error_long_message_without_memory_keeps_its_head) {
    char fmt[3008] = "%d,%d "; /* then 3000 x: no field width, which C libraries format apart */
    memset(fmt + 6, 'x', 3000);
    fmt[3006] = 0;
    ss_test_vasprintf_fails = 1;
    ss_errorf(SS_ERR_IO, fmt, 123456, 654321);
    ss_test_vasprintf_fails = 0;
    const char *m = ss_last_error();
    CHECK_MSG(strncmp(m, "123456,654321 xxx", 17) == 0, "%.40s", m);
    CHECK(strlen(m) == 2047 && m[2046] == 'x');
    /* a context: the new one cut at the buffer, then as much of the old as fits */
    ss_errorf(SS_ERR_IO, "%s: bad", "f.h5");
    ss_test_vasprintf_fails = 1;
    ss_error_context(SS_ERR_IO, "reading %d", 42);
    ss_test_vasprintf_fails = 0;
    CHECK_MSG(strcmp(ss_last_error(), "reading 42: f.h5: bad") == 0, "%s", ss_last_error());
    ss_error_clear();
}

/* Library messages on stderr (ss_eprintf) end a progress line marked open (ss_progress_line(1))
 * first, once; with no line open, or one marked ended, they print as fprintf would. Run in a
 * child whose stderr is a pipe. */
TEST(eprintf_ends_an_open_progress_line_once) {
    int fds[2];
    CHECK(pipe(fds) == 0);
    const pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        dup2(fds[1], 2);
        close(fds[0]);
        ss_eprintf("a\n");
        fputs("\r  1/2 rows", stderr), ss_progress_line(1);
        ss_eprintf("note %d\n", 7);
        ss_eprintf("b\n");
        fputs("\r  2/2 rows\n", stderr), ss_progress_line(0);
        ss_eprintf("c\n");
        ss_progress_line(1);
        ss_progress_end();
        ss_progress_end();
        fflush(stderr);
        _exit(0);
    }
    close(fds[1]);
    char buf[256];
    const int status = ss_test_child_wait(pid, fds[0], buf, sizeof buf);
    CHECK_MSG(WIFEXITED(status) && WEXITSTATUS(status) == 0, "status %d", status);
    CHECK_MSG(strcmp(buf, "a\n\r  1/2 rows\nnote 7\nb\n\r  2/2 rows\nc\n\n") == 0, "stderr '%s'", buf);
}
