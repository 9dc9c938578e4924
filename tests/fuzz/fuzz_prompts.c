/* libFuzzer target: the input is a prompt file (JSONL or plain text).
 * The reader takes a path, so each input goes through a temporary file. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "subscope/prompts.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char path[] = "/tmp/ss_fuzz_prompts_XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0) return 0;
    if (write(fd, data, size) != (ssize_t)size) {
        close(fd);
        unlink(path);
        return 0;
    }
    close(fd);
    ss_prompts *p = NULL;
    if (ss_prompts_read(path, &p) == SS_OK) {
        /* Accepted files hold at least one prompt, each with text or ids. */
        if (p->n < 1) __builtin_trap();
        for (int64_t i = 0; i < p->n; i++)
            if (!p->items[i].text && !p->items[i].tokens) __builtin_trap();
        for (int64_t i = 0; i < p->n; i++)
            if (p->items[i].label) (void)ss_prompt_label_check(p, &p->items[i]);
        ss_prompts_tokenize(p, NULL, 1000, 64, 1, NULL);
        ss_prompts_free(p);
    }
    unlink(path);
    return 0;
}
