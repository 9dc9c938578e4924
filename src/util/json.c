/* Strict JSON parser for untrusted files. Recursive descent over a byte
 * buffer; every node, string and child array lives in one arena so freeing a
 * document is O(blocks). Children are gathered on a shared scratch stack and
 * copied into the arena once their count is known. */
#include "subscope/json.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "subscope/util.h"

#define JSON_MAX_DEPTH 512

typedef struct arena_block {
    struct arena_block *next;
    size_t used, cap;
    _Alignas(16) unsigned char data[];
} arena_block;

struct ss_json_doc {
    arena_block *blocks;
    ss_json root;
};

typedef struct {
    const char *s, *end, *what;
    const char *line_start;
    int line;
    ss_json_doc *doc;
    /* scratch stacks for children of open arrays/objects */
    ss_json *vals;
    size_t nvals, capvals;
    const char **keys;
    size_t *keylens;
    size_t nkeys, capkeys;
} parser;

static void *arena_alloc(ss_json_doc *doc, size_t n) {
    n = (n + 15) & ~(size_t)15;
    arena_block *b = doc->blocks;
    if (!b || b->cap - b->used < n) {
        size_t cap = n > (1u << 16) ? n : (1u << 16);
        b = ss_malloc(sizeof *b + cap, "JSON values");
        if (!b) return NULL;
        b->next = doc->blocks;
        b->used = 0;
        b->cap = cap;
        doc->blocks = b;
    }
    void *p = b->data + b->used;
    b->used += n;
    return p;
}

static ss_status perr(parser *p, const char *at, const char *msg) {
    int line = p->line;
    const char *ls = p->line_start;
    if (at < ls) at = ls; /* errors are reported at or after the current line start */
    long col = (long)(at - ls) + 1;
    return ss_errorf(SS_ERR_FORMAT, "%s:%d:%ld: %s", p->what, line, col, msg);
}

static ss_status oom(parser *p) {
    return ss_errorf(SS_ERR_NOMEM, "%s: out of memory while parsing JSON", p->what);
}

static void skip_ws(parser *p) {
    while (p->s < p->end) {
        char c = *p->s;
        if (c == '\n') {
            p->line++;
            p->s++;
            p->line_start = p->s;
        } else if (c == ' ' || c == '\t' || c == '\r') {
            p->s++;
        } else {
            break;
        }
    }
}

static size_t put_utf8(char *o, unsigned cp) {
    if (cp < 0x80) { o[0] = (char)cp; return 1; }
    if (cp < 0x800) { o[0] = (char)(0xc0 | (cp >> 6)); o[1] = (char)(0x80 | (cp & 0x3f)); return 2; }
    if (cp < 0x10000) {
        o[0] = (char)(0xe0 | (cp >> 12)); o[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        o[2] = (char)(0x80 | (cp & 0x3f)); return 3;
    }
    o[0] = (char)(0xf0 | (cp >> 18)); o[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3f)); o[3] = (char)(0x80 | (cp & 0x3f)); return 4;
}

static int hex4(const char *s, unsigned *out) {
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        char c = s[i];
        v <<= 4;
        if (c >= '0' && c <= '9') v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f') v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F') v |= (unsigned)(c - 'A' + 10);
        else return 0;
    }
    *out = v;
    return 1;
}

/* p->s is at the opening quote. The decoded string never exceeds the raw
 * length, so one arena allocation of that size suffices. */
static ss_status parse_string(parser *p, const char **out, size_t *outlen) {
    const char *start = ++p->s;
    const char *q = start;
    while (q < p->end && *q != '"') {
        if (*q == '\\') q++;
        q++;
    }
    if (q >= p->end) return perr(p, start - 1, "unterminated string");
    char *buf = arena_alloc(p->doc, (size_t)(q - start) + 1);
    if (!buf) return oom(p);
    size_t n = 0;
    const char *s = start;
    while (s < q) {
        unsigned char c = (unsigned char)*s;
        if (c == '\\') {
            char e = s[1];
            s += 2;
            switch (e) {
            case '"': buf[n++] = '"'; break;
            case '\\': buf[n++] = '\\'; break;
            case '/': buf[n++] = '/'; break;
            case 'b': buf[n++] = '\b'; break;
            case 'f': buf[n++] = '\f'; break;
            case 'n': buf[n++] = '\n'; break;
            case 'r': buf[n++] = '\r'; break;
            case 't': buf[n++] = '\t'; break;
            case 'u': {
                unsigned cp, lo;
                if (q - s < 4 || !hex4(s, &cp)) return perr(p, s - 2, "bad \\u escape");
                s += 4;
                if (cp >= 0xd800 && cp <= 0xdbff) {
                    if (q - s < 6 || s[0] != '\\' || s[1] != 'u' || !hex4(s + 2, &lo) || lo < 0xdc00 || lo > 0xdfff)
                        return perr(p, s - 6, "unpaired UTF-16 surrogate in \\u escape");
                    s += 6;
                    cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
                } else if (cp >= 0xdc00 && cp <= 0xdfff) {
                    return perr(p, s - 6, "unpaired UTF-16 surrogate in \\u escape");
                }
                n += put_utf8(buf + n, cp);
                break;
            }
            default:
                return perr(p, s - 2, "invalid escape in string");
            }
        } else if (c < 0x20) {
            return perr(p, s, "control character in string");
        } else {
            int l = ss_utf8_len(s, (size_t)(q - s));
            if (l <= 0) return perr(p, s, "invalid UTF-8 in string");
            memcpy(buf + n, s, (size_t)l);
            n += (size_t)l;
            s += l;
        }
    }
    buf[n] = 0;
    p->s = q + 1;
    *out = buf;
    *outlen = n;
    return SS_OK;
}

static ss_status parse_number(parser *p, ss_json *v) {
    const char *s = p->s, *start = s;
    int integral = 1;
    if (s < p->end && *s == '-') s++;
    if (s >= p->end) return perr(p, start, "bad number");
    if (*s == '0') {
        s++;
    } else if (*s >= '1' && *s <= '9') {
        while (s < p->end && *s >= '0' && *s <= '9') s++;
    } else {
        return perr(p, start, "bad number");
    }
    if (s < p->end && *s == '.') {
        integral = 0;
        s++;
        if (s >= p->end || *s < '0' || *s > '9') return perr(p, start, "bad number: digit expected after '.'");
        while (s < p->end && *s >= '0' && *s <= '9') s++;
    }
    if (s < p->end && (*s == 'e' || *s == 'E')) {
        integral = 0;
        s++;
        if (s < p->end && (*s == '+' || *s == '-')) s++;
        if (s >= p->end || *s < '0' || *s > '9') return perr(p, start, "bad number: digit expected in exponent");
        while (s < p->end && *s >= '0' && *s <= '9') s++;
    }
    size_t len = (size_t)(s - start);
    char tmp[64];
    char *heap = NULL, *txt = tmp;
    if (len >= sizeof tmp) {
        heap = ss_malloc(len + 1, "JSON number");
        if (!heap) return oom(p);
        txt = heap;
    }
    memcpy(txt, start, len);
    txt[len] = 0;
    v->type = SS_JSON_NUMBER;
    v->num = strtod(txt, NULL);
    v->is_int = 0;
    if (integral) {
        errno = 0;
        long long ll = strtoll(txt, NULL, 10);
        if (errno == 0) {
            v->is_int = 1;
            v->i = ll;
        }
    }
    free(heap);
    p->s = s;
    return SS_OK;
}

static int match_lit(parser *p, const char *lit) {
    size_t n = strlen(lit);
    if ((size_t)(p->end - p->s) >= n && !memcmp(p->s, lit, n)) {
        p->s += n;
        return 1;
    }
    return 0;
}

static ss_status push_val(parser *p, const ss_json *v) {
    if (p->nvals == p->capvals) {
        size_t cap = p->capvals ? p->capvals * 2 : 64;
        ss_json *nv = ss_realloc(p->vals, cap * sizeof *nv, "JSON value stack");
        if (!nv) return oom(p);
        p->vals = nv;
        p->capvals = cap;
    }
    p->vals[p->nvals++] = *v;
    return SS_OK;
}

static ss_status push_key(parser *p, const char *k, size_t len) {
    if (p->nkeys == p->capkeys) {
        size_t cap = p->capkeys ? p->capkeys * 2 : 64;
        const char **nk = ss_realloc(p->keys, cap * sizeof *nk, "JSON key stack");
        if (!nk) return oom(p);
        p->keys = nk;
        size_t *nl = ss_realloc(p->keylens, cap * sizeof *nl, "JSON key stack");
        if (!nl) return oom(p);
        p->keylens = nl;
        p->capkeys = cap;
    }
    p->keys[p->nkeys] = k;
    p->keylens[p->nkeys++] = len;
    return SS_OK;
}

static ss_status parse_value(parser *p, ss_json *v, int depth);

/* Moves the last n scratch values (and keys, for objects) into the arena. */
static ss_status finish_container(parser *p, ss_json *v, size_t base_v, size_t base_k, int is_obj) {
    size_t n = p->nvals - base_v, bytes;
    v->len = n;
    v->items = NULL;
    if (n) {
        if (!ss_mul_ok(n, sizeof(ss_json), &bytes) || !(v->items = arena_alloc(p->doc, bytes))) return oom(p);
        memcpy(v->items, p->vals + base_v, bytes);
    }
    if (is_obj) {
        v->keys = NULL;
        v->key_lens = NULL;
        if (n) {
            v->keys = arena_alloc(p->doc, n * sizeof(char *));
            v->key_lens = arena_alloc(p->doc, n * sizeof(size_t));
            if (!v->keys || !v->key_lens) return oom(p);
            memcpy(v->keys, p->keys + base_k, n * sizeof(char *));
            memcpy(v->key_lens, p->keylens + base_k, n * sizeof(size_t));
        }
        p->nkeys = base_k;
    }
    p->nvals = base_v;
    return SS_OK;
}

static ss_status parse_value(parser *p, ss_json *v, int depth) {
    memset(v, 0, sizeof *v);
    skip_ws(p);
    v->line = p->line;
    if (p->s >= p->end) return perr(p, p->s, "unexpected end of input");
    if (depth > JSON_MAX_DEPTH) return perr(p, p->s, "nesting too deep");
    char c = *p->s;
    if (c == '{' || c == '[') {
        int is_obj = c == '{';
        const char *open = p->s++;
        size_t base_v = p->nvals, base_k = p->nkeys;
        v->type = is_obj ? SS_JSON_OBJECT : SS_JSON_ARRAY;
        skip_ws(p);
        if (p->s < p->end && *p->s == (is_obj ? '}' : ']')) {
            p->s++;
            return finish_container(p, v, base_v, base_k, is_obj);
        }
        for (;;) {
            skip_ws(p);
            if (is_obj) {
                if (p->s >= p->end || *p->s != '"') return perr(p, p->s, p->s >= p->end ? "unterminated object" : "object key (a string) expected");
                const char *k;
                size_t kl;
                SS_TRY(parse_string(p, &k, &kl));
                SS_TRY(push_key(p, k, kl));
                skip_ws(p);
                if (p->s >= p->end || *p->s != ':') return perr(p, p->s, "':' expected after object key");
                p->s++;
            }
            ss_json child;
            SS_TRY(parse_value(p, &child, depth + 1));
            SS_TRY(push_val(p, &child));
            skip_ws(p);
            if (p->s >= p->end) return perr(p, open, is_obj ? "unterminated object" : "unterminated array");
            if (*p->s == ',') {
                p->s++;
                continue;
            }
            if (*p->s == (is_obj ? '}' : ']')) {
                p->s++;
                return finish_container(p, v, base_v, base_k, is_obj);
            }
            return perr(p, p->s, is_obj ? "',' or '}' expected in object" : "',' or ']' expected in array");
        }
    }
    if (c == '"') {
        v->type = SS_JSON_STRING;
        return parse_string(p, &v->str, &v->len);
    }
    if (c == '-' || (c >= '0' && c <= '9')) return parse_number(p, v);
    if (match_lit(p, "true")) { v->type = SS_JSON_BOOL; v->boolean = 1; return SS_OK; }
    if (match_lit(p, "false")) { v->type = SS_JSON_BOOL; return SS_OK; }
    if (match_lit(p, "null")) { v->type = SS_JSON_NULL; return SS_OK; }
    return perr(p, p->s, "unexpected character");
}

ss_status ss_json_parse(const char *text, size_t len, const char *what, ss_json_doc **out) {
    return ss_json_parse_at(text, len, what, 1, out);
}

ss_status ss_json_parse_at(const char *text, size_t len, const char *what, int first_line, ss_json_doc **out) {
    *out = NULL;
    ss_json_doc *doc = ss_calloc(1, sizeof *doc, "JSON document");
    if (!doc) return ss_errorf(SS_ERR_NOMEM, "%s: out of memory", what);
    parser p = {.s = text, .end = text + len, .what = what, .line_start = text, .line = first_line, .doc = doc};
    /* A UTF-8 byte-order mark is tolerated, as many editors write one. */
    p.s += ss_utf8_bom(text, len), p.line_start = p.s;
    ss_status st = parse_value(&p, &doc->root, 0);
    if (st == SS_OK) {
        skip_ws(&p);
        if (p.s != p.end) st = perr(&p, p.s, "unexpected characters after the JSON value");
    }
    free(p.vals);
    free(p.keys);
    free(p.keylens);
    if (st != SS_OK) {
        ss_json_free(doc);
        return st;
    }
    *out = doc;
    return SS_OK;
}

const ss_json *ss_json_root(const ss_json_doc *doc) { return doc ? &doc->root : NULL; }

void ss_json_free(ss_json_doc *doc) {
    if (!doc) return;
    arena_block *b = doc->blocks;
    while (b) {
        arena_block *n = b->next;
        free(b);
        b = n;
    }
    free(doc);
}

const ss_json *ss_json_get(const ss_json *obj, const char *key) {
    if (!obj || obj->type != SS_JSON_OBJECT) return NULL;
    size_t kl = strlen(key);
    for (size_t i = obj->len; i-- > 0;)
        if (obj->key_lens[i] == kl && !memcmp(obj->keys[i], key, kl)) return &obj->items[i];
    return NULL;
}

int ss_json_get_int(const ss_json *obj, const char *key, int64_t *out) {
    const ss_json *v = ss_json_get(obj, key);
    if (!v) return 0;
    if (v->type != SS_JSON_NUMBER || !v->is_int) return -1;
    *out = v->i;
    return 1;
}

int ss_json_get_num(const ss_json *obj, const char *key, double *out) {
    const ss_json *v = ss_json_get(obj, key);
    if (!v) return 0;
    if (v->type != SS_JSON_NUMBER) return -1;
    *out = v->num;
    return 1;
}

int ss_json_get_bool(const ss_json *obj, const char *key, int *out) {
    const ss_json *v = ss_json_get(obj, key);
    if (!v) return 0;
    if (v->type != SS_JSON_BOOL) return -1;
    *out = v->boolean;
    return 1;
}

int ss_json_get_str(const ss_json *obj, const char *key, const char **out) {
    const ss_json *v = ss_json_get(obj, key);
    if (!v) return 0;
    if (v->type != SS_JSON_STRING) return -1;
    *out = v->str;
    return 1;
}

/* ---------------------------------------------------------------- writers */

/* The escape for byte c inside a JSON string (written to esc), or NULL if it
 * stands as it is. */
static const char *json_escape(unsigned char c, char esc[8]) {
    switch (c) {
    case '"': return "\\\"";
    case '\\': return "\\\\";
    case '\n': return "\\n";
    case '\t': return "\\t";
    default:
        if (c >= 0x20) return NULL;
        snprintf(esc, 8, "\\u%04x", c);
        return esc;
    }
}

void ss_json_write_str(FILE *f, const char *s, size_t n) {
    char buf[8];
    fputc('"', f);
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        const char *e = json_escape((unsigned char)s[i], buf);
        if (!e) continue;
        fwrite(s + run, 1, i - run, f);
        fputs(e, f);
        run = i + 1;
    }
    fwrite(s + run, 1, n - run, f);
    fputc('"', f);
}

void ss_json_sb_str(ss_sbuf *b, const char *s, size_t n) {
    char buf[8];
    ss_sb_put(b, "\"", 1);
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        const char *e = json_escape((unsigned char)s[i], buf);
        if (!e) continue;
        ss_sb_put(b, s + run, i - run);
        ss_sb_str(b, e);
        run = i + 1;
    }
    ss_sb_put(b, s + run, n - run);
    ss_sb_put(b, "\"", 1);
}
