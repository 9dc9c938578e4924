/* A strict RFC 8259 JSON parser for untrusted input (config.json,
 * tokenizer.json, safetensors headers, JSONL prompt files).
 *
 * The whole document is parsed into a tree of ss_json nodes allocated from
 * one arena; ss_json_free releases everything. Strings are UTF-8, unescaped,
 * NUL-terminated and may contain embedded NULs (use len). Errors give
 * "<what>:<line>:<col>: <reason>". Nesting depth is limited (512). */
#ifndef SUBSCOPE_JSON_H
#define SUBSCOPE_JSON_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include "subscope/error.h"
#include "subscope/util.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum ss_json_type {
    SS_JSON_NULL,
    SS_JSON_BOOL,
    SS_JSON_NUMBER,
    SS_JSON_STRING,
    SS_JSON_ARRAY,
    SS_JSON_OBJECT
} ss_json_type;

typedef struct ss_json ss_json;
struct ss_json {
    ss_json_type type;
    int boolean;        /* SS_JSON_BOOL */
    double num;         /* SS_JSON_NUMBER */
    int is_int;         /* number was written without fraction/exponent and fits int64 */
    int64_t i;          /* exact value when is_int */
    const char *str;    /* SS_JSON_STRING: unescaped UTF-8, NUL-terminated */
    size_t len;         /* string length in bytes, or number of items/members */
    ss_json *items;     /* SS_JSON_ARRAY: len items; SS_JSON_OBJECT: len values */
    const char **keys;  /* SS_JSON_OBJECT: len keys (NUL-terminated) */
    size_t *key_lens;   /* SS_JSON_OBJECT: key lengths */
    int line;           /* 1-based line where the value starts (for messages) */
};

typedef struct ss_json_doc ss_json_doc;

/* Parses text[0..len). `what` names the source in error messages (a path,
 * or "prompts.jsonl line 7"). Trailing non-space characters are an error. */
ss_status ss_json_parse(const char *text, size_t len, const char *what, ss_json_doc **out);
/* As ss_json_parse, counting lines from first_line (for one line of a JSONL file). */
ss_status ss_json_parse_at(const char *text, size_t len, const char *what, int first_line, ss_json_doc **out);
const ss_json *ss_json_root(const ss_json_doc *doc);
void ss_json_free(ss_json_doc *doc);

/* Member lookup in an object (NULL if absent or v is not an object).
 * Duplicate keys: the last one wins, as in most parsers. */
const ss_json *ss_json_get(const ss_json *obj, const char *key);

/* Typed getters for optional members: return 1 and set *out if the member
 * exists with the right type, 0 if absent; -1 if present with a wrong type. */
int ss_json_get_int(const ss_json *obj, const char *key, int64_t *out);
int ss_json_get_num(const ss_json *obj, const char *key, double *out);
int ss_json_get_bool(const ss_json *obj, const char *key, int *out);
int ss_json_get_str(const ss_json *obj, const char *key, const char **out);

/* Writers: s[0..n) as a JSON string literal, with quotes, backslashes and
 * control bytes escaped (\n, \t and \uXXXX) and the other bytes (UTF-8) as
 * they are; to a file, or appended to a text buffer. */
void ss_json_write_str(FILE *f, const char *s, size_t n);
void ss_json_sb_str(ss_sbuf *b, const char *s, size_t n);

#ifdef __cplusplus
}
#endif
#endif
