#include "subscope/error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static _Thread_local char err_buf[2048];

ss_status ss_errorf(ss_status code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err_buf, sizeof err_buf, fmt, ap);
    va_end(ap);
    return code;
}

ss_status ss_error_context(ss_status code, const char *fmt, ...) {
    char old[sizeof err_buf];
    memcpy(old, err_buf, sizeof old);
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(err_buf, sizeof err_buf, fmt, ap);
    va_end(ap);
    if (n < 0) n = 0;
    size_t used = (size_t)n < sizeof err_buf ? (size_t)n : sizeof err_buf - 1;
    if (old[0] && used + 3 < sizeof err_buf) {
        size_t room = sizeof err_buf - used - 3, ol = strlen(old);
        if (ol > room) ol = room; /* keep the newest context; cut the oldest detail */
        memcpy(err_buf + used, ": ", 2);
        memcpy(err_buf + used + 2, old, ol);
        err_buf[used + 2 + ol] = 0;
    }
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
