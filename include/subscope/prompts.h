/* Prompt files: JSONL ({"text": ...} or {"tokens": [...]}, optional
 * "answer", "wrong", "label") or plain text, one prompt per line. */
#ifndef SUBSCOPE_PROMPTS_H
#define SUBSCOPE_PROMPTS_H

#include <stdint.h>
#include "subscope/error.h"
#include "subscope/tokenizer.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ss_prompt {
    int64_t line;          /* 1-based line in the file */
    char *text;            /* NULL when given as tokens */
    int32_t *tokens;       /* after ss_prompts_tokenize (or as given) */
    int64_t n_tokens;
    char *answer, *wrong, *label; /* optional, NULL if absent */
} ss_prompt;

typedef struct ss_prompts {
    char *path;
    ss_prompt *items;
    int64_t n;
    int jsonl;
    /* Read from a pipe (which cannot be read again to hash it): the SHA-256
     * and size of the bytes read; "" and 0 for a file, which is hashed where
     * needed (ss_prompts_sha256). */
    char sha256[65];
    int64_t size;
} ss_prompts;

/* Reads a prompt file. JSONL if the name ends in .jsonl/.json or the first
 * non-blank character is '{'; otherwise plain text. Blank lines are skipped.
 * Errors name the file and line. */
ss_status ss_prompts_read(const char *path, ss_prompts **out);
/* The SHA-256 and size of the prompt file p was read from (a pipe's: of the
 * bytes read then; a file's: read again now). */
ss_status ss_prompts_sha256(const ss_prompts *p, char out[65], int64_t *size);
/* Builds a one-prompt set from a string (for --prompt). */
ss_status ss_prompts_from_text(const char *text, ss_prompts **out);
/* Tokenizes text prompts (tok may be NULL if every prompt has tokens) and
 * checks every prompt: non-empty, ids below vocab_size, at most max_len
 * tokens — longer prompts are an error naming the line unless truncate is set,
 * in which case they keep their first max_len tokens. */
ss_status ss_prompts_tokenize(ss_prompts *p, const ss_tokenizer *tok, int64_t vocab_size, int64_t max_len,
                              int truncate, int64_t *n_truncated);
/* The same for prompts [first, end) only (already tokenized ones are checked again). */
ss_status ss_prompts_tokenize_range(ss_prompts *p, const ss_tokenizer *tok, int64_t vocab_size, int64_t max_len,
                                    int truncate, int64_t first, int64_t end, int64_t *n_truncated);
void ss_prompts_free(ss_prompts *p);

/* The longest label a job takes as the name of an HDF5 group (collect's
 * /groups/<label>/, ablate's /by_label/<label>/): their paths are built in
 * fixed buffers sized for it. */
#define SS_MAX_LABEL 512
/* Whether prompt it's label can name an HDF5 group: not empty, not '.'
 * (HDF5's name for the group itself), no '/', at most SS_MAX_LABEL bytes;
 * the error names the file and line. */
ss_status ss_prompt_label_check(const ss_prompts *p, const ss_prompt *it);

#ifdef __cplusplus
}
#endif
#endif
