/* Byte-level BPE tokenizer (GPT-2 style), loaded from a Hugging Face
 * tokenizer.json or from a vocab.json/encoder.json + merges.txt/vocab.bpe pair.
 * Encoding equals Hugging Face `tokenizers` (Tokenizer.encode(text).ids)
 * exactly. Supported: model BPE (merges as "a b" strings or ["a","b"] pairs,
 * unk_token/fuse_unk, ignore_merges), pre_tokenizer ByteLevel (add_prefix_space,
 * use_regex; alone or as a one-element Sequence), post_processor/decoder
 * ByteLevel or none, added_tokens with all their flags. Refused by name:
 * normalizers, other model/pre-tokenizer/post-processor/decoder types,
 * dropout, byte_fallback, subword prefixes/suffixes, added-token ids that
 * differ from what `tokenizers` would assign. truncation and padding are
 * ignored: encode always returns every id. Thread-safe after loading. */
#ifndef SUBSCOPE_TOKENIZER_H
#define SUBSCOPE_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>
#include "subscope/error.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ss_tokenizer ss_tokenizer;

/* From tokenizer.json (model.type "BPE", ByteLevel pre-tokenizer/decoder;
 * added_tokens are honoured, special ones are matched inside text). */
ss_status ss_tokenizer_load_json(const char *path, ss_tokenizer **out);
/* The same from a tokenizer.json document in memory (len bytes); `what`
 * names it in error messages. */
ss_status ss_tokenizer_load_json_mem(const char *text, size_t len, const char *what, ss_tokenizer **out);
/* From a vocab (token -> id JSON object) and merges file ("#version" line
 * optional), set up as GPT-2 uses them: ByteLevel without prefix space, and
 * "<|endoftext|>" (when in the vocabulary) matched inside text as a special token. */
ss_status ss_tokenizer_load_bpe(const char *vocab_path, const char *merges_path, ss_tokenizer **out);
/* From a model directory: tokenizer.json if present, else vocab.json/encoder.json + merges.txt/vocab.bpe;
 * with none of them, an error naming dir. */
ss_status ss_tokenizer_load_dir(const char *dir, ss_tokenizer **out);
/* The same, but with none of them SS_OK and *out NULL (a model runs on token
 * ids). A file that is there but cannot be read, or is no file, is an error
 * naming it. */
ss_status ss_tokenizer_load_dir_opt(const char *dir, ss_tokenizer **out);
void ss_tokenizer_free(ss_tokenizer *t);

/* Encodes len bytes of UTF-8 text (invalid UTF-8: SS_ERR_ARG naming the byte
 * offset). *ids is malloc'd (caller frees), *n its length. */
ss_status ss_tokenizer_encode(const ss_tokenizer *t, const char *text, size_t len, int32_t **ids, size_t *n);
/* Decodes ids to the exact bytes they stand for (the inverse of the byte map;
 * a sequence may end inside a UTF-8 character); added tokens give their
 * content. *text is malloc'd and NUL-terminated. Unknown id: SS_ERR_ARG. */
ss_status ss_tokenizer_decode(const ss_tokenizer *t, const int32_t *ids, size_t n, char **text, size_t *len);

/* Number of ids (largest id + 1, counting added tokens). */
int32_t ss_tokenizer_vocab_size(const ss_tokenizer *t);
/* The token string for an id as stored in the vocabulary (byte-level form), or NULL. */
const char *ss_tokenizer_id_to_token(const ss_tokenizer *t, int32_t id);
/* Id of an exact token string (vocabulary or added token), or -1. */
int32_t ss_tokenizer_token_to_id(const ss_tokenizer *t, const char *token);
/* Id of "<|endoftext|>" if the vocabulary has it, else -1. */
int32_t ss_tokenizer_eos_id(const ss_tokenizer *t);
/* GPT-2's pre-tokenizer split as a PCRE2 pattern (the white-space class spelled
 * out as Unicode White_Space, which is what HF's Oniguruma \s matches). */
extern const char ss_tokenizer_pretokenize_pattern[];
/* GPT-2's byte-level alphabet: a byte is its own code point when it is printable
 * Latin-1 (! to ~, ¡ to ¬, ® to ÿ); the other 68 map to U+0100 + their rank. */
int ss_tokenizer_byte_is_printable(int b);
uint32_t ss_tokenizer_byte_cp(int b);

#ifdef __cplusplus
}
#endif
#endif
