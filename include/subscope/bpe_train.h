/* Training a GPT-2 style byte-level BPE tokenizer on text.
 *
 * The algorithm is Hugging Face `tokenizers`' BpeTrainer, as used by
 * ByteLevelBPETokenizer (GPT-2's ByteLevel pre-tokenizer without prefix
 * space, initial_alphabet = ByteLevel.alphabet(), min_frequency 0,
 * special_tokens ["<|endoftext|>"]), reproduced step by step so that the same
 * documents give the same vocabulary, ids and merges:
 *   - documents are split with GPT-2's pre-tokenizer regex (the one
 *     ss_tokenizer uses) and the words are counted; "<|endoftext|>" inside the
 *     training text is not special there (HF splits it like any text);
 *   - ids: 0 is "<|endoftext|>", 1..256 are the 256 byte symbols ordered by
 *     the code point of their GPT-2 byte-to-unicode character ("!" = 1 ...
 *     "~" = 94, then U+00A1.., then U+0100..U+0143 for the bytes that are not
 *     printable Latin-1), then one id per merge in the order learned;
 *   - each step merges the adjacent pair with the highest count over all
 *     words (weighted by word frequency); ties go to the pair with the
 *     smallest (left id, right id);
 *   - a merge whose concatenation already is a token reuses that id (the
 *     vocabulary then grows by nothing, as in HF);
 *   - training stops at vocab_size tokens or when no pair is left.
 * Pair counts are kept incrementally with a lazily updated max-heap, so the
 * cost of a merge is proportional to the words that contain the pair. */
#ifndef SUBSCOPE_BPE_TRAIN_H
#define SUBSCOPE_BPE_TRAIN_H

#include <stddef.h>
#include <stdint.h>
#include "subscope/error.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The one special token, id 0 of every trained vocabulary. */
#define SS_BPE_EOT "<|endoftext|>"
/* Smallest vocabulary: the special token and the 256 bytes. */
#define SS_BPE_MIN_VOCAB 257

/* A trained vocabulary. Token strings are raw bytes (tok[0] is the special
 * token's text); merges[r] = {left id, right id, merged id} with rank r. */
typedef struct ss_bpe_model {
    int32_t n_tokens;
    char **tok;           /* [n_tokens], NUL-terminated */
    uint32_t *tok_len;    /* [n_tokens] */
    int32_t n_merges;
    int32_t (*merges)[3]; /* [n_merges] */
} ss_bpe_model;

typedef struct ss_bpe_trainer ss_bpe_trainer;

ss_status ss_bpe_trainer_init(ss_bpe_trainer **out);
void ss_bpe_trainer_free(ss_bpe_trainer *t);
/* Pre-tokenizes one document (len bytes of UTF-8; invalid UTF-8 is
 * SS_ERR_ARG naming the byte offset) and adds its words to the counts. */
ss_status ss_bpe_trainer_add(ss_bpe_trainer *t, const char *text, size_t len);
/* Distinct words and their total count so far; bytes fed so far. */
void ss_bpe_trainer_stats(const ss_bpe_trainer *t, int64_t *n_distinct, int64_t *n_words, int64_t *n_bytes);
/* Learns merges until the vocabulary has vocab_size tokens (>= SS_BPE_MIN_VOCAB)
 * or no adjacent pair is left; then (*out)->n_tokens < vocab_size. The
 * trainer's word counts are kept, so it can be trained again. */
ss_status ss_bpe_trainer_train(ss_bpe_trainer *t, int32_t vocab_size, ss_bpe_model **out);

void ss_bpe_model_free(ss_bpe_model *m);
/* A token in GPT-2's byte-level spelling (as tokenizer.json has it), written
 * NUL-terminated to buf (at least 2*tok_len+1 bytes); returns its length. */
size_t ss_bpe_token_text(const ss_bpe_model *m, int32_t id, char *buf);
/* The Hugging Face tokenizer.json of m (model BPE, ByteLevel pre-tokenizer,
 * post-processor and decoder as in GPT-2's, "<|endoftext|>" an added special
 * token). *text is malloc'd, NUL-terminated. */
ss_status ss_bpe_model_tokenizer_json(const ss_bpe_model *m, char **text, size_t *len);
/* The same as GPT-2's vocab.json (token -> id) and merges.txt ("#version: 0.2"
 * then one "left right" line per merge). */
ss_status ss_bpe_model_vocab_json(const ss_bpe_model *m, char **text, size_t *len);
ss_status ss_bpe_model_merges_txt(const ss_bpe_model *m, char **text, size_t *len);

#ifdef __cplusplus
}
#endif
#endif
