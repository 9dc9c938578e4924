/* The thread's error message: messages longer than its 2 KiB keep their head and their end. */
#include "test.h"

#include <stdlib.h>

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
