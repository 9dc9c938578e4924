#include "subscope/prompts.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "subscope/hash.h"
#include "subscope/json.h"
#include "subscope/util.h"

static int ends_with(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcmp(s + a - b, suf);
}

static ss_status add_item(ss_prompts *p, size_t *cap, ss_prompt **out) {
    if ((size_t)p->n == *cap) {
        size_t nc = *cap ? *cap * 2 : 64;
        ss_prompt *ni = ss_realloc(p->items, nc * sizeof *ni, "prompt list");
        if (!ni) return SS_ERR_NOMEM;
        p->items = ni;
        *cap = nc;
    }
    *out = &p->items[p->n++];
    memset(*out, 0, sizeof **out);
    return SS_OK;
}

static ss_status opt_string(const ss_json *obj, const char *key, const char *what, char **out) {
    const char *s;
    int r = ss_json_get_str(obj, key, &s);
    if (r < 0) return ss_errorf(SS_ERR_FORMAT, "%s: \"%s\" must be a string", what, key);
    if (r == 0) return SS_OK;
    *out = ss_strdup(s);
    return *out ? SS_OK : SS_ERR_NOMEM;
}

static ss_status parse_jsonl_line(const char *line, size_t len, const char *path, const char *what, ss_prompt *it) {
    ss_json_doc *doc;
    SS_TRY(ss_json_parse_at(line, len, path, (int)it->line, &doc));
    const ss_json *r = ss_json_root(doc);
    ss_status st = SS_OK;
    const ss_json *text = ss_json_get(r, "text"), *toks = ss_json_get(r, "tokens");
    if (r->type != SS_JSON_OBJECT) {
        st = ss_errorf(SS_ERR_FORMAT, "%s: expected a JSON object per line", what);
    } else if (!!text == !!toks) {
        st = ss_errorf(SS_ERR_FORMAT, "%s: each line needs exactly one of \"text\" or \"tokens\"", what);
    } else if (text) {
        if (text->type != SS_JSON_STRING) st = ss_errorf(SS_ERR_FORMAT, "%s: \"text\" must be a string", what);
        else if (!(it->text = ss_strndup(text->str, text->len))) st = SS_ERR_NOMEM;
        else if (strlen(it->text) != text->len)
            st = ss_errorf(SS_ERR_FORMAT, "%s: \"text\" contains a NUL character", what);
    } else {
        if (toks->type != SS_JSON_ARRAY) {
            st = ss_errorf(SS_ERR_FORMAT, "%s: \"tokens\" must be an array of integers", what);
        } else if (!(it->tokens = ss_malloc((toks->len ? toks->len : 1) * sizeof(int32_t), "tokens"))) {
            st = SS_ERR_NOMEM;
        } else {
            for (size_t i = 0; i < toks->len && !st; i++) {
                const ss_json *v = &toks->items[i];
                if (v->type != SS_JSON_NUMBER || !v->is_int || v->i < 0 || v->i > INT32_MAX)
                    st = ss_errorf(SS_ERR_FORMAT, "%s: \"tokens\"[%zu] is not a non-negative integer id", what, i);
                else
                    it->tokens[i] = (int32_t)v->i;
            }
            it->n_tokens = (int64_t)toks->len;
        }
    }
    if (!st) st = opt_string(r, "answer", what, &it->answer);
    if (!st) st = opt_string(r, "wrong", what, &it->wrong);
    if (!st) {
        /* Labels may be written as numbers; they are kept as text. */
        const ss_json *lab = ss_json_get(r, "label");
        if (lab && lab->type == SS_JSON_NUMBER && lab->is_int) {
            if (!(it->label = ss_strfmt("%lld", (long long)lab->i))) st = SS_ERR_NOMEM;
        } else {
            st = opt_string(r, "label", what, &it->label);
        }
    }
    ss_json_free(doc);
    return st;
}

ss_status ss_prompts_read(const char *path, ss_prompts **out) {
    *out = NULL;
    char *data;
    size_t len;
    SS_TRY(ss_input_read(path, &data, &len));
    ss_prompts *p = ss_calloc(1, sizeof *p, "prompts");
    if (!p || !(p->path = ss_strdup(path))) {
        free(data);
        free(p);
        return SS_ERR_NOMEM;
    }
    struct stat sb;
    if (!stat(path, &sb) && S_ISFIFO(sb.st_mode)) {
        ss_sha256 h;
        ss_sha256_init(&h);
        ss_sha256_update(&h, data, len);
        ss_sha256_hex(&h, p->sha256);
        p->size = (int64_t)len;
    }
    /* A UTF-8 byte-order mark (Windows editors write one) is not text: it
     * would be tokenized into the first prompt, and hide a JSONL file's '{'. */
    const size_t bom = ss_utf8_bom(data, len);
    size_t first = bom;
    while (first < len && (data[first] == ' ' || data[first] == '\t' || data[first] == '\n' || data[first] == '\r')) first++;
    p->jsonl = ends_with(path, ".jsonl") || ends_with(path, ".json") || (first < len && data[first] == '{');
    ss_status st = SS_OK;
    size_t cap = 0;
    int64_t lineno = 0;
    for (size_t pos = bom; pos < len && !st;) {
        char *nl = memchr(data + pos, '\n', len - pos);
        size_t end = nl ? (size_t)(nl - data) : len;
        lineno++;
        size_t l = end - pos;
        if (l && data[pos + l - 1] == '\r') l--; /* CRLF files */
        int blank = 1;
        for (size_t i = 0; i < l && blank; i++)
            blank = data[pos + i] == ' ' || data[pos + i] == '\t';
        if (memchr(data + pos, 0, l)) {
            st = ss_errorf(SS_ERR_FORMAT, "%s:%lld: line contains a NUL byte", path, (long long)lineno);
        } else if (!blank) {
            ss_prompt *it;
            if (!(st = add_item(p, &cap, &it))) {
                it->line = lineno;
                if (p->jsonl) {
                    char what[600];
                    snprintf(what, sizeof what, "%s:%lld", path, (long long)lineno);
                    st = parse_jsonl_line(data + pos, l, path, what, it);
                } else if (!(it->text = ss_strndup(data + pos, l))) {
                    st = SS_ERR_NOMEM;
                }
            }
        }
        pos = end + 1;
    }
    free(data);
    if (!st && p->n == 0) st = ss_errorf(SS_ERR_FORMAT, "%s: no prompts in the file", path);
    if (st) {
        ss_prompts_free(p);
        return st;
    }
    *out = p;
    return SS_OK;
}

ss_status ss_prompts_sha256(const ss_prompts *p, char out[65], int64_t *size) {
    if (!p->sha256[0]) return ss_file_sha256(p->path, out, size);
    memcpy(out, p->sha256, 65);
    *size = p->size;
    return SS_OK;
}

ss_status ss_prompts_from_text(const char *text, ss_prompts **out) {
    ss_prompts *p = ss_calloc(1, sizeof *p, "prompts");
    if (!p) return SS_ERR_NOMEM;
    p->items = ss_calloc(1, sizeof *p->items, "prompts");
    p->path = ss_strdup("--prompt");
    if (!p->items || !p->path || !(p->items[0].text = ss_strdup(text))) {
        ss_prompts_free(p);
        return SS_ERR_NOMEM;
    }
    p->n = 1;
    p->items[0].line = 1;
    *out = p;
    return SS_OK;
}

ss_status ss_prompts_tokenize(ss_prompts *p, const ss_tokenizer *tok, int64_t vocab_size, int64_t max_len,
                              int truncate, int64_t *n_truncated) {
    return ss_prompts_tokenize_range(p, tok, vocab_size, max_len, truncate, 0, p->n, n_truncated);
}

ss_status ss_prompts_tokenize_range(ss_prompts *p, const ss_tokenizer *tok, int64_t vocab_size, int64_t max_len,
                                    int truncate, int64_t first, int64_t end, int64_t *n_truncated) {
    int64_t ntr = 0;
    for (int64_t i = first; i < end && i < p->n; i++) {
        ss_prompt *it = &p->items[i];
        if (!it->tokens) {
            if (!tok)
                return ss_errorf(SS_ERR_ARG, "%s:%lld: text prompt but the model has no tokenizer (give \"tokens\")",
                                 p->path, (long long)it->line);
            size_t n;
            ss_status st = ss_tokenizer_encode(tok, it->text, strlen(it->text), &it->tokens, &n);
            if (st) return ss_error_context(st, "%s:%lld", p->path, (long long)it->line);
            it->n_tokens = (int64_t)n;
        }
        if (it->n_tokens == 0)
            return ss_errorf(SS_ERR_FORMAT, "%s:%lld: the prompt has no tokens", p->path, (long long)it->line);
        for (int64_t j = 0; j < it->n_tokens; j++)
            if (it->tokens[j] >= vocab_size)
                return ss_errorf(SS_ERR_FORMAT, "%s:%lld: token id %d is outside the vocabulary (size %lld)", p->path,
                                 (long long)it->line, it->tokens[j], (long long)vocab_size);
        if (it->n_tokens > max_len) {
            if (!truncate)
                return ss_errorf(SS_ERR_ARG, "%s:%lld: prompt has %lld tokens, more than the limit %lld (use --truncate to cut it)",
                                 p->path, (long long)it->line, (long long)it->n_tokens, (long long)max_len);
            it->n_tokens = max_len;
            ntr++;
        }
    }
    if (n_truncated) *n_truncated = ntr;
    return SS_OK;
}

void ss_prompts_free(ss_prompts *p) {
    if (!p) return;
    for (int64_t i = 0; i < p->n; i++) {
        free(p->items[i].text);
        free(p->items[i].tokens);
        free(p->items[i].answer);
        free(p->items[i].wrong);
        free(p->items[i].label);
    }
    free(p->items);
    free(p->path);
    free(p);
}

ss_status ss_prompt_label_check(const ss_prompts *p, const ss_prompt *it) {
    const char *lab = it->label;
    if (strlen(lab) > SS_MAX_LABEL)
        return ss_errorf(SS_ERR_FORMAT, "%s:%lld: label of %zu bytes, longer than the %d a group's name takes ('%.40s...')",
                         p->path, (long long)it->line, strlen(lab), SS_MAX_LABEL, lab);
    if (!*lab || !strcmp(lab, ".") || strchr(lab, '/'))
        return ss_errorf(SS_ERR_FORMAT, "%s:%lld: label '%s' cannot name an HDF5 group (%s)", p->path, (long long)it->line,
                         lab, !*lab ? "it is empty" : strchr(lab, '/') ? "it contains '/'" : "it is '.'");
    return SS_OK;
}
