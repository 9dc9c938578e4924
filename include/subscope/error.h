/* One error type for the whole library.
 *
 * Library functions return an ss_status; on failure they also leave a one-line
 * message in a thread-local buffer that names what failed and where (file,
 * tensor, line of input).  Only main() and tests print it and exit.  A message
 * over the buffer's 2 KiB (a path of thousands of characters) keeps its head and
 * its end, where the reason is, with "…" for the middle. */
#ifndef SUBSCOPE_ERROR_H
#define SUBSCOPE_ERROR_H

/* The message buffer's size, its NUL included: a copy of a message (kept over
 * a call that may set another) fits whole in a buffer of this size. */
#define SS_ERROR_MAX 2048

#ifdef __cplusplus
extern "C" {
#endif

typedef enum ss_status {
    SS_OK = 0,
    SS_ERR_IO,          /* a file could not be opened, read, mapped or written */
    SS_ERR_FORMAT,      /* a file or input is malformed (bad JSON, bad header, ...) */
    SS_ERR_ARG,         /* a caller/user argument is invalid (unknown site, bad flag) */
    SS_ERR_NOMEM,       /* allocation failed or a size overflowed */
    SS_ERR_UNSUPPORTED, /* valid input that this build cannot handle */
    SS_ERR_INTERNAL     /* a bug: an invariant did not hold */
} ss_status;

/* Sets the thread's error message (printf-style) and returns code, so that
 * `return ss_errorf(SS_ERR_FORMAT, "%s: bad header", path);` reads naturally. */
ss_status ss_errorf(ss_status code, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Prepends context to the current message: "ctx: <old message>". Returns code. */
ss_status ss_error_context(ss_status code, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* The last message set on this thread ("" if none). */
const char *ss_last_error(void);
void ss_error_clear(void);
const char *ss_status_name(ss_status s);

/* Propagate a failing status unchanged. */
#define SS_TRY(expr)                                 \
    do {                                             \
        ss_status ss_try_st_ = (expr);               \
        if (ss_try_st_ != SS_OK) return ss_try_st_; \
    } while (0)

#ifdef __cplusplus
}
#endif
#endif
