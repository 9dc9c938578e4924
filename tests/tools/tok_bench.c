/* Encode throughput: tok_bench TOKENIZER_DIR_OR_JSON TEXT_FILE [--ids]
 * Loads the tokenizer, encodes the whole file once cold (empty word cache)
 * and three times warm, prints MB/s; --ids writes the ids, one per line, to
 * stdout instead (for comparing with Hugging Face on large texts). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "subscope/tokenizer.h"
#include "subscope/util.h"

int main(int argc, char **argv) {
    if (argc < 3) {
        const int help = argc == 2 && !strcmp(argv[1], "--help");
        fprintf(help ? stdout : stderr, "usage: %s TOKENIZER_DIR_OR_JSON TEXT_FILE [--ids]\n", argv[0]);
        return help ? 0 : 2;
    }
    ss_tokenizer *t = NULL;
    size_t l = strlen(argv[1]);
    double t0 = ss_now();
    ss_status st = l > 5 && strcmp(argv[1] + l - 5, ".json") == 0 ? ss_tokenizer_load_json(argv[1], &t)
                                                                   : ss_tokenizer_load_dir(argv[1], &t);
    double t_load = ss_now() - t0;
    char *text = NULL;
    size_t len = 0;
    if (st == SS_OK) st = ss_file_read(argv[2], &text, &len);
    if (st != SS_OK) {
        fprintf(stderr, "error: %s\n", ss_last_error());
        return 1;
    }
    int32_t *ids = NULL;
    size_t n = 0;
    double best = 1e30, cold = 0;
    for (int r = 0; r < 4; r++) {
        free(ids);
        t0 = ss_now();
        st = ss_tokenizer_encode(t, text, len, &ids, &n);
        double dt = ss_now() - t0;
        if (st != SS_OK) {
            fprintf(stderr, "error: %s\n", ss_last_error());
            return 1;
        }
        if (r == 0) cold = dt;
        else if (dt < best) best = dt;
    }
    if (argc > 3 && strcmp(argv[3], "--ids") == 0) {
        for (size_t i = 0; i < n; i++) printf("%d\n", ids[i]);
    } else {
        printf("load %.3f s; %zu bytes -> %zu tokens; cold %.1f MB/s, warm %.1f MB/s\n", t_load, len, n,
               len / cold / 1e6, len / best / 1e6);
    }
    free(ids);
    free(text);
    ss_tokenizer_free(t);
    return 0;
}
