/* libFuzzer target: encodes arbitrary bytes with the real GPT-2 tokenizer
 * (tokenizer.json from $SS_TEST_DATA, else tests/data). Valid UTF-8 must
 * encode and decode back to the same bytes; anything else must be refused
 * with SS_ERR_ARG. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "subscope/tokenizer.h"
#include "subscope/util.h"

static ss_tokenizer *tok;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    const char *dir = getenv("SS_TEST_DATA");
    char *path = ss_path_join(dir && *dir ? dir : "tests/data", "gpt2-tokenizer/tokenizer.json");
    if (!path || ss_tokenizer_load_json(path, &tok) != SS_OK) {
        fprintf(stderr, "fuzz_tokenize: %s\n", ss_last_error());
        exit(1);
    }
    free(path);
    return 0;
}

/* Random bytes are rarely valid UTF-8, so each input is also re-encoded as
 * text: ASCII bytes stay, every other byte picks one of these characters
 * (combining marks, CJK, Hangul, emoji parts, odd white space, digits). */
static const uint32_t POOL[] = {
    0x00E9, 0x0301, 0x0308, 0x0327, 0x20E3, 0x094D, 0x0E31, 0x4E00, 0x6587, 0x3002, 0xFF0C, 0xD55C, 0x1100, 0x1161,
    0x11A8, 0x0645, 0x0627, 0x0664, 0x05E9, 0x200F, 0x1F44D, 0x1F3FD, 0x200D, 0x1F468, 0x1F1FA, 0x1F1F8, 0xFE0F,
    0x2764, 0x00A0, 0x3000, 0x2028, 0x2029, 0x0085, 0x180E, 0x200B, 0xFEFF, 0x1680, 0x2003, 0x00BD, 0x2160, 0x2460,
    0x00B2, 0x0663, 0x1E030, 0x11F04, 0x20000, 0x0130, 0x00DF, 0x2019, 0x201C, 0x2026, 0x2014, 0x10FFFF, 0xE000};

static size_t put_utf8(char *o, uint32_t cp) {
    if (cp < 0x80) { o[0] = (char)cp; return 1; }
    if (cp < 0x800) { o[0] = (char)(0xC0 | (cp >> 6)); o[1] = (char)(0x80 | (cp & 0x3F)); return 2; }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | (cp >> 12)); o[1] = (char)(0x80 | ((cp >> 6) & 0x3F)); o[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | (cp >> 18)); o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3F)); o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

static void roundtrip(const char *text, size_t size) {
    int32_t *ids = NULL;
    size_t n = 0;
    if (ss_tokenizer_encode(tok, text, size, &ids, &n) != SS_OK) abort(); /* valid UTF-8 must encode */
    char *out = NULL;
    size_t len = 0;
    if (ss_tokenizer_decode(tok, ids, n, &out, &len) != SS_OK) abort();
    if (len != size || memcmp(out, text, size) != 0) abort();
    free(out);
    free(ids);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *valid = malloc(size * 4 + 1);
    if (!valid) return 0;
    size_t vl = 0;
    for (size_t i = 0; i < size; i++)
        vl += put_utf8(valid + vl, data[i] < 0x80 ? data[i] : POOL[data[i] % (sizeof POOL / sizeof POOL[0])]);
    roundtrip(valid, vl);
    free(valid);

    int32_t *ids = NULL;
    size_t n = 0;
    ss_status st = ss_tokenizer_encode(tok, (const char *)data, size, &ids, &n);
    if (st != SS_OK) {
        if (st != SS_ERR_ARG || !strstr(ss_last_error(), "not valid UTF-8")) abort();
        return 0;
    }
    char *text = NULL;
    size_t len = 0;
    if (ss_tokenizer_decode(tok, ids, n, &text, &len) != SS_OK) abort();
    if (len != size || memcmp(text, data, size) != 0) abort(); /* decode(encode(x)) == x */
    free(text);
    free(ids);
    return 0;
}
