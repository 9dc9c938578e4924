/* libFuzzer target: a vocab.json + merges.txt pair, as ss_tokenizer_load_bpe
 * (and so a model directory without tokenizer.json) reads them. The input is
 * the vocabulary, a NUL byte, then the merges (no NUL: empty merges). Both go
 * through files, as the loader takes paths. When the pair loads, the fixed
 * sample of fuzz_tokenizer is encoded and decoded: every id inside the
 * vocabulary, and the decoding of an encoding is the text. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "subscope/tokenizer.h"

static const char SAMPLE[] =
    "Hello  world<|endoftext|> it's 1234 caf\xc3\xa9 \xe4\xbd\xa0\xe5\xa5\xbd \xf0\x9f\x91\x8d\xf0\x9f\x8f\xbd\t\r\n\n  "
    "x\xc2\xa0y \xe2\x98\x83snow hello the";

static int put(const char *path, const uint8_t *p, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) return 0;
    size_t w = fwrite(p, 1, n, f);
    return fclose(f) == 0 && w == n;
}

static char vpath[96], mpath[96];

static void cleanup(void) {
    unlink(vpath);
    unlink(mpath);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!vpath[0]) {
        const char *dir = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
        snprintf(vpath, sizeof vpath, "%s/ss_fuzz_bpe_%ld_vocab.json", dir, (long)getpid());
        snprintf(mpath, sizeof mpath, "%s/ss_fuzz_bpe_%ld_merges.txt", dir, (long)getpid());
        atexit(cleanup);
    }
    const uint8_t *nul = memchr(data, 0, size);
    size_t vlen = nul ? (size_t)(nul - data) : size;
    if (!put(vpath, data, vlen) || !put(mpath, nul ? nul + 1 : data, nul ? size - vlen - 1 : 0)) return 0;

    ss_tokenizer *t = NULL;
    if (ss_tokenizer_load_bpe(vpath, mpath, &t) != SS_OK) {
        if (t) __builtin_trap(); /* failure must leave *out NULL */
        return 0;
    }
    int32_t *ids = NULL;
    size_t n = 0;
    if (ss_tokenizer_encode(t, SAMPLE, sizeof SAMPLE - 1, &ids, &n) == SS_OK) {
        for (size_t i = 0; i < n; i++)
            if (ids[i] < 0 || ids[i] >= ss_tokenizer_vocab_size(t)) __builtin_trap(); /* outside the vocabulary */
        char *text = NULL;
        size_t len = 0;
        if (ss_tokenizer_decode(t, ids, n, &text, &len) != SS_OK) __builtin_trap(); /* every id encode gives decodes */
        free(text);
        free(ids);
    }
    int32_t eos = ss_tokenizer_eos_id(t);
    if (eos >= 0 && ss_tokenizer_token_to_id(t, "<|endoftext|>") != eos) __builtin_trap();
    (void)ss_tokenizer_id_to_token(t, 0);
    ss_tokenizer_free(t);
    return 0;
}
