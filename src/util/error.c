#define _GNU_SOURCE
#include "subscope/error.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static _Thread_local char err_buf[SS_ERROR_MAX];

/* Stores the n-byte message s. One longer than the buffer (a path of thousands of
 * characters in it) keeps its head and its end, where the reason is ("File name too
 * long"), with "…" for the middle; neither cut splits a UTF-8 character. */
static void set_message(const char *s, size_t n) {
    if (n < sizeof err_buf) {
        memmove(err_buf, s, n);
        err_buf[n] = 0;
        return;
    }
    static const char mid[] = "\xe2\x80\xa6"; /* … */
    size_t keep = sizeof err_buf - sizeof mid, head = keep / 2, tail = keep - head;
    while (head > 0 && ((unsigned char)s[head] & 0xC0) == 0x80) head--;
    while (tail > 0 && ((unsigned char)s[n - tail] & 0xC0) == 0x80) tail--;
    memmove(err_buf, s, head);
    memcpy(err_buf + head, mid, sizeof mid - 1);
    memmove(err_buf + head + sizeof mid - 1, s + n - tail, tail);
    err_buf[head + sizeof mid - 1 + tail] = 0;
}

ss_status ss_errorf(ss_status code, const char *fmt, ...) {
    va_list ap, aq, ar;
    va_start(ap, fmt);
    va_copy(aq, ap);
    va_copy(ar, ap); /* for the cut message: a vasprintf that fails has used aq */
    char *s = NULL;
    int n = vsnprintf(NULL, 0, fmt, ap);
    if (n >= 0 && (size_t)n >= sizeof err_buf && vasprintf(&s, fmt, aq) >= 0) {
        set_message(s, (size_t)n);
        free(s);
    } else {
        vsnprintf(err_buf, sizeof err_buf, fmt, ar); /* fits (or no memory to shorten it) */
    }
    va_end(ar);
    va_end(aq);
    va_end(ap);
    return code;
}

ss_status ss_error_context(ss_status code, const char *fmt, ...) {
    char old[sizeof err_buf];
    memcpy(old, err_buf, sizeof old);
    va_list ap, aq;
    va_start(ap, fmt);
    va_copy(aq, ap);
    char *s = NULL;
    int n = vasprintf(&s, fmt, ap);
    if (n < 0) s = NULL; /* its contents are undefined then */
    size_t ol = strlen(old);
    char *all = n < 0 ? NULL : old[0] ? realloc(s, (size_t)n + 2 + ol + 1) : s;
    if (all) {
        if (old[0]) memcpy(all + n, ": ", 2), memcpy(all + n + 2, old, ol + 1);
        set_message(all, (size_t)n + (old[0] ? 2 + ol : 0));
        free(all);
    } else { /* no memory: the context, cut at the buffer, then as much of the old as fits */
        free(s);
        n = vsnprintf(err_buf, sizeof err_buf, fmt, aq);
        if (n < 0) n = 0;
        size_t used = (size_t)n < sizeof err_buf ? (size_t)n : sizeof err_buf - 1;
        if (old[0] && used + 3 < sizeof err_buf) {
            size_t room = sizeof err_buf - used - 3;
            if (ol > room) ol = room;
            memcpy(err_buf + used, ": ", 2);
            memcpy(err_buf + used + 2, old, ol);
            err_buf[used + 2 + ol] = 0;
        }
    }
    va_end(aq);
    va_end(ap);
    return code;
}

const char *ss_last_error(void) { return err_buf; }
void ss_error_clear(void) { err_buf[0] = 0; }

const char *ss_status_name(ss_status s) {
    switch (s) {
    case SS_OK: return "ok";
    case SS_ERR_IO: return "I/O error";
    case SS_ERR_FORMAT: return "format error";
    case SS_ERR_ARG: return "invalid argument";
    case SS_ERR_NOMEM: return "out of memory";
    case SS_ERR_UNSUPPORTED: return "unsupported";
    case SS_ERR_INTERNAL: return "internal error";
    }
    return "unknown error";
}
