/* libFuzzer target: the input is a tokenizer.json document. When it loads,
 * a fixed sample (special token, Unicode, white space) is encoded and
 * decoded, so tables built from hostile files are exercised too. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "subscope/tokenizer.h"

static const char SAMPLE[] =
    "Hello  world<|endoftext|> it's 1234 caf\xc3\xa9 \xe4\xbd\xa0\xe5\xa5\xbd \xf0\x9f\x91\x8d\xf0\x9f\x8f\xbd\t\r\n\n  "
    "<mask>[SW] x\xc2\xa0y \xe2\x98\x83snow hello";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    ss_tokenizer *t = NULL;
    if (ss_tokenizer_load_json_mem((const char *)data, size, "fuzz.json", &t) != SS_OK) return 0;
    int32_t *ids = NULL;
    size_t n = 0;
    if (ss_tokenizer_encode(t, SAMPLE, sizeof SAMPLE - 1, &ids, &n) == SS_OK) {
        char *text = NULL;
        size_t len = 0;
        for (size_t i = 0; i < n; i++)
            if (ids[i] < 0 || ids[i] >= ss_tokenizer_vocab_size(t)) abort(); /* an id outside the vocabulary */
        if (ss_tokenizer_decode(t, ids, n, &text, &len) == SS_OK) free(text);
        else abort(); /* every id encode returns must decode */
        free(ids);
    }
    (void)ss_tokenizer_eos_id(t);
    (void)ss_tokenizer_id_to_token(t, 0);
    ss_tokenizer_free(t);
    return 0;
}
