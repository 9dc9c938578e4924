/* Byte-level BPE (GPT-2 style) that reproduces Hugging Face `tokenizers`.
 *
 * Encoding follows the Rust pipeline step by step, because every shortcut
 * changes ids on some input:
 *   1. added tokens are cut out of the text (AddedVocabulary: first the
 *      tokens with normalized=false, then those with normalized=true inside
 *      the remaining pieces; leftmost-longest; single_word/lstrip/rstrip);
 *   2. each remaining piece gets the ByteLevel pre-tokenizer (optional prefix
 *      space, GPT-2's split regex);
 *   3. each word is BPE-merged with HF's priority-queue algorithm (which can
 *      differ from "merge all occurrences of the best pair" when two pairs
 *      produce the same token, so it is copied exactly, stale-entry test
 *      included).
 * Words are cached (shared, mutex-protected) so long texts with repeated
 * words are fast. Anything the pipeline cannot reproduce exactly (a
 * normalizer, another model or pre-tokenizer type, dropout, ...) is refused
 * by name at load time. */
#include "subscope/tokenizer.h"

#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "subscope/json.h"
#include "subscope/util.h"

/* HF's BPE cache skips words this long or longer; so do we (memory bound). */
#define WORD_CACHE_MAX_LEN 256
#define WORD_CACHE_SLOTS (1u << 16)
#define WORD_CACHE_MAX_ENTRIES (WORD_CACHE_SLOTS / 2)

/* ------------------------------------------------------------------ */
/* Hashing and small containers                                        */

static uint64_t mix64(uint64_t h) {
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    h ^= h >> 33;
    return h;
}

static uint64_t hash_bytes(const void *p, size_t n) {
    const unsigned char *s = p;
    uint64_t h = 0x9e3779b97f4a7c15ULL ^ (n * 0x100000001b3ULL);
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, s, 8);
        h = (h ^ w) * 0x100000001b3ULL;
        h ^= h >> 29;
        s += 8;
        n -= 8;
    }
    uint64_t w = 0;
    memcpy(&w, s, n);
    h = (h ^ w) * 0x100000001b3ULL;
    return mix64(h);
}

/* Strings (and whatever else lives as long as the tokenizer). */
typedef struct arena_blk {
    struct arena_blk *next;
    size_t used, cap;
    _Alignas(16) unsigned char data[];
} arena_blk;

static void *arena_alloc(arena_blk **head, size_t n) {
    n = (n + 15) & ~(size_t)15;
    arena_blk *b = *head;
    if (!b || b->cap - b->used < n) {
        size_t cap = n > (1u << 18) ? n : (1u << 18);
        b = ss_malloc(sizeof *b + cap, "tokenizer strings");
        if (!b) return NULL;
        b->next = *head;
        b->used = 0;
        b->cap = cap;
        *head = b;
    }
    void *p = b->data + b->used;
    b->used += n;
    return p;
}

static char *arena_strndup(arena_blk **head, const char *s, size_t n) {
    char *d = arena_alloc(head, n + 1);
    if (!d) return NULL;
    if (n) memcpy(d, s, n);
    d[n] = 0;
    return d;
}

static void arena_free(arena_blk *b) {
    while (b) {
        arena_blk *n = b->next;
        free(b);
        b = n;
    }
}

/* Token string -> id, open addressing; keys point into the arena. */
typedef struct {
    const char *s;
    uint32_t len;
    int32_t id;
    uint64_t h;
} smap_ent;

typedef struct {
    smap_ent *e;
    size_t cap, n;
} smap;

static int32_t smap_get(const smap *m, const char *s, size_t len) {
    if (!m->cap) return -1;
    uint64_t h = hash_bytes(s, len);
    for (size_t i = h & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
        const smap_ent *e = &m->e[i];
        if (!e->s) return -1;
        if (e->h == h && e->len == len && memcmp(e->s, s, len) == 0) return e->id;
    }
}

static int smap_grow(smap *m) {
    size_t ncap = m->cap ? m->cap * 2 : 1024;
    smap_ent *ne = ss_calloc(ncap, sizeof *ne, "tokenizer vocabulary");
    if (!ne) return 0;
    for (size_t i = 0; i < m->cap; i++) {
        if (!m->e[i].s) continue;
        size_t j = m->e[i].h & (ncap - 1);
        while (ne[j].s) j = (j + 1) & (ncap - 1);
        ne[j] = m->e[i];
    }
    free(m->e);
    m->e = ne;
    m->cap = ncap;
    return 1;
}

/* Inserts or overwrites (the last duplicate wins, as in HF's HashMap).
 * Returns the previous id, -1 if new, or -2 on allocation failure. */
static int32_t smap_put(smap *m, const char *s, size_t len, int32_t id) {
    if ((m->n + 1) * 2 > m->cap && !smap_grow(m)) return -2;
    uint64_t h = hash_bytes(s, len);
    size_t i = h & (m->cap - 1);
    for (;; i = (i + 1) & (m->cap - 1)) {
        smap_ent *e = &m->e[i];
        if (!e->s) break;
        if (e->h == h && e->len == len && memcmp(e->s, s, len) == 0) {
            int32_t old = e->id;
            e->id = id;
            return old;
        }
    }
    m->e[i] = (smap_ent){s, (uint32_t)len, id, h};
    m->n++;
    return -1;
}

/* (left id, right id) -> (rank, merged id). */
typedef struct {
    uint64_t key; /* PMAP_EMPTY when unused; ids are < 2^31 so no real key equals it */
    uint32_t rank;
    int32_t new_id;
} pmap_ent;
#define PMAP_EMPTY UINT64_MAX

typedef struct {
    pmap_ent *e;
    size_t cap, n;
} pmap;

static inline uint64_t pair_key(int32_t a, int32_t b) { return ((uint64_t)(uint32_t)a << 32) | (uint32_t)b; }

static inline const pmap_ent *pmap_get(const pmap *m, int32_t a, int32_t b) {
    if (!m->cap) return NULL;
    uint64_t k = pair_key(a, b);
    for (size_t i = mix64(k) & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
        const pmap_ent *e = &m->e[i];
        if (e->key == k) return e;
        if (e->key == PMAP_EMPTY) return NULL;
    }
}

static int pmap_put(pmap *m, int32_t a, int32_t b, uint32_t rank, int32_t new_id) {
    if ((m->n + 1) * 2 > m->cap) {
        size_t ncap = m->cap ? m->cap * 2 : 1024;
        pmap_ent *ne = ss_malloc(ncap * sizeof *ne, "tokenizer merges");
        if (!ne) return 0;
        for (size_t i = 0; i < ncap; i++) ne[i].key = PMAP_EMPTY;
        for (size_t i = 0; i < m->cap; i++) {
            if (m->e[i].key == PMAP_EMPTY) continue;
            size_t j = mix64(m->e[i].key) & (ncap - 1);
            while (ne[j].key != PMAP_EMPTY) j = (j + 1) & (ncap - 1);
            ne[j] = m->e[i];
        }
        free(m->e);
        m->e = ne;
        m->cap = ncap;
    }
    uint64_t k = pair_key(a, b);
    size_t i = mix64(k) & (m->cap - 1);
    while (m->e[i].key != PMAP_EMPTY && m->e[i].key != k) i = (i + 1) & (m->cap - 1);
    if (m->e[i].key == PMAP_EMPTY) m->n++;
    m->e[i] = (pmap_ent){k, rank, new_id};
    return 1;
}

/* ------------------------------------------------------------------ */
/* UTF-8 and the GPT-2 byte <-> unicode map                            */

/* Length of the valid UTF-8 sequence at s (1..4), 0 if invalid (overlong,
 * surrogate, > U+10FFFF, truncated). */
static int utf8_seq_len(const unsigned char *s, size_t avail) {
    int l = ss_utf8_len((const char *)s, avail);
    return l > 0 ? l : 0;
}

/* Offset of the first invalid byte, or len if the text is valid. */
static size_t utf8_first_invalid(const char *text, size_t len) {
    const unsigned char *s = (const unsigned char *)text;
    size_t i = 0;
    while (i < len) {
        if (s[i] < 0x80) {
            i++;
            continue;
        }
        int l = utf8_seq_len(s + i, len - i);
        if (!l) return i;
        i += (size_t)l;
    }
    return len;
}

/* Decodes one code point of valid UTF-8 (validated beforehand). */
static uint32_t utf8_decode(const unsigned char *s, int *l) {
    unsigned c = s[0];
    if (c < 0x80) { *l = 1; return c; }
    if (c < 0xE0) { *l = 2; return ((c & 0x1Fu) << 6) | (s[1] & 0x3Fu); }
    if (c < 0xF0) { *l = 3; return ((c & 0x0Fu) << 12) | ((s[1] & 0x3Fu) << 6) | (s[2] & 0x3Fu); }
    *l = 4;
    return ((c & 0x07u) << 18) | ((s[1] & 0x3Fu) << 12) | ((s[2] & 0x3Fu) << 6) | (s[3] & 0x3Fu);
}

static size_t utf8_put(char *o, uint32_t cp) {
    if (cp < 0x80) { o[0] = (char)cp; return 1; }
    if (cp < 0x800) { o[0] = (char)(0xC0 | (cp >> 6)); o[1] = (char)(0x80 | (cp & 0x3F)); return 2; }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | (cp >> 12));
        o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | (cp >> 18));
    o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* GPT-2's map: printable Latin-1 bytes stand for themselves, the other 68
 * bytes take U+0100.. in byte order, so every byte is a visible character. */
#define BYTE_MAP_CP_LIMIT 0x144
typedef struct {
    uint32_t byte_cp[256];
    int16_t cp_byte[BYTE_MAP_CP_LIMIT]; /* -1 when the code point is no byte's image */
    char utf8[256][2];                  /* every image is 1 or 2 UTF-8 bytes */
    uint8_t utf8_len[256];
} byte_map;

int ss_tokenizer_byte_is_printable(int b) {
    return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
}

uint32_t ss_tokenizer_byte_cp(int b) {
    if (ss_tokenizer_byte_is_printable(b)) return (uint32_t)b;
    uint32_t k = 0;
    for (int x = 0; x < b; x++) k += !ss_tokenizer_byte_is_printable(x);
    return 256 + k;
}

static void byte_map_init(byte_map *m) {
    for (int i = 0; i < BYTE_MAP_CP_LIMIT; i++) m->cp_byte[i] = -1;
    for (int b = 0; b < 256; b++) {
        uint32_t cp = ss_tokenizer_byte_cp(b);
        m->byte_cp[b] = cp;
        m->cp_byte[cp] = (int16_t)b;
        char tmp[4];
        size_t l = utf8_put(tmp, cp);
        memcpy(m->utf8[b], tmp, l);
        m->utf8_len[b] = (uint8_t)l;
    }
}

/* Unicode White_Space, which is what both Oniguruma's \s (the pre-tokenizer
 * in HF) and Rust regex's \s (AddedVocabulary's lstrip/rstrip) match. PCRE2's
 * \s differs (it adds U+180E), so the regex spells the class out. */
static int is_white_space(uint32_t c) {
    return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F ||
           c == 0x3000;
}

#define WS_CLASS "\\t-\\r\\x{85}\\p{Z}"
const char ss_tokenizer_pretokenize_pattern[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^" WS_CLASS "\\p{L}\\p{N}]+"
    "|[" WS_CLASS "]+(?![^" WS_CLASS "])|[" WS_CLASS "]+";
#define PRETOKENIZE_PATTERN ss_tokenizer_pretokenize_pattern
/* Rust regex's Unicode \w, used by single_word added tokens. */
static const char WORD_CHAR_PATTERN[] = "^[\\p{Alphabetic}\\p{M}\\p{Nd}\\p{Pc}\\p{Join_Control}]";

/* ------------------------------------------------------------------ */
/* The tokenizer                                                       */

typedef struct {
    const char *content;
    size_t len;
    int32_t id;
    int single_word, lstrip, rstrip, normalized, special;
} added_tok;

typedef struct {
    uint64_t h;
    uint32_t koff, klen, ioff, nids;
    int used;
} cache_slot;

typedef struct {
    pthread_mutex_t mu;
    cache_slot *slots;
    size_t n;
    char *keys;
    size_t keys_len, keys_cap;
    int32_t *ids;
    size_t ids_len, ids_cap;
} word_cache;

struct ss_tokenizer {
    arena_blk *arena;
    byte_map bm;
    smap vocab;
    pmap merges;
    int32_t n_ids; /* largest id + 1 */
    /* per id, model vocabulary: token string and the bytes it stands for */
    const char **id_str;
    uint32_t *id_len;
    const char **id_bytes;
    uint32_t *id_blen;
    int32_t *id_added; /* index into added[], or -1 */
    int32_t byte_id[256];
    added_tok *added;
    size_t n_added;
    unsigned char first_byte[2][256]; /* [normalized] could an added token start with this byte */
    int32_t unk_id;
    int fuse_unk, ignore_merges, add_prefix_space, use_regex;
    /* Digits pre-tokenizer before ByteLevel: 0 none, 1 individual_digits
     * (every numeric character its own piece), 2 runs of them. */
    int digits;
    int32_t eos_id;
    pcre2_code *re;
    pcre2_code *digit_re;
    pcre2_code *word_re;
    word_cache *cache;
};

static ss_tokenizer *tk_new(void) {
    ss_tokenizer *t = ss_calloc(1, sizeof *t, "tokenizer");
    if (!t) return NULL;
    byte_map_init(&t->bm);
    t->unk_id = -1;
    t->eos_id = -1;
    t->use_regex = 1;
    return t;
}

void ss_tokenizer_free(ss_tokenizer *t) {
    if (!t) return;
    free(t->vocab.e);
    free(t->merges.e);
    free(t->id_str);
    free(t->id_len);
    free(t->id_bytes);
    free(t->id_blen);
    free(t->id_added);
    free(t->added);
    if (t->re) pcre2_code_free(t->re);
    if (t->digit_re) pcre2_code_free(t->digit_re);
    if (t->word_re) pcre2_code_free(t->word_re);
    if (t->cache) {
        pthread_mutex_destroy(&t->cache->mu);
        free(t->cache->slots);
        free(t->cache->keys);
        free(t->cache->ids);
        free(t->cache);
    }
    arena_free(t->arena);
    free(t);
}

static ss_status nomem(const char *what) { return ss_errorf(SS_ERR_NOMEM, "%s: out of memory", what); }

/* Adds a vocabulary entry (the string is copied). */
static ss_status tk_vocab_put(ss_tokenizer *t, const char *s, size_t len, int64_t id, const char *what) {
    if (id < 0 || id > INT32_MAX - 1)
        return ss_errorf(SS_ERR_FORMAT, "%s: token \"%.*s\" has id %lld, outside 0..%d", what,
                         (int)(len > 60 ? 60 : len), s, (long long)id, INT32_MAX - 1);
    if (len > UINT32_MAX) return ss_errorf(SS_ERR_FORMAT, "%s: token too long", what);
    char *d = arena_strndup(&t->arena, s, len);
    if (!d) return nomem(what);
    if (smap_put(&t->vocab, d, len, (int32_t)id) == -2) return nomem(what);
    return SS_OK;
}

/* Bytes a vocabulary token stands for: the inverse byte map, or the token's
 * own UTF-8 when a character is outside the map (HF's ByteLevel decoder does
 * the same per token). */
static ss_status tk_token_bytes(ss_tokenizer *t, const char *s, size_t len, const char **out, uint32_t *olen,
                                const char *what) {
    const unsigned char *u = (const unsigned char *)s;
    char *b = arena_alloc(&t->arena, len + 1);
    if (!b) return nomem(what);
    size_t n = 0, i = 0;
    while (i < len) {
        int l = utf8_seq_len(u + i, len - i);
        if (!l) break;
        uint32_t cp = utf8_decode(u + i, &l);
        if (cp >= BYTE_MAP_CP_LIMIT || t->bm.cp_byte[cp] < 0) break;
        b[n++] = (char)t->bm.cp_byte[cp];
        i += (size_t)l;
    }
    if (i < len) { /* not all mapped: raw */
        memcpy(b, s, len);
        n = len;
    }
    b[n] = 0;
    *out = b;
    *olen = (uint32_t)n;
    return SS_OK;
}

/* Builds the id-indexed tables once the vocabulary is complete. */
static ss_status tk_vocab_finish(ss_tokenizer *t, const char *what) {
    if (t->vocab.n == 0) return ss_errorf(SS_ERR_FORMAT, "%s: the vocabulary is empty", what);
    int64_t max_id = -1;
    for (size_t i = 0; i < t->vocab.cap; i++)
        if (t->vocab.e[i].s && t->vocab.e[i].id > max_id) max_id = t->vocab.e[i].id;
    /* Ids index dense tables; a file with a few tokens at huge ids would make
     * us allocate gigabytes, so sparse vocabularies are refused. */
    if ((uint64_t)max_id >= 2 * (uint64_t)t->vocab.n + 1024)
        return ss_errorf(SS_ERR_UNSUPPORTED, "%s: vocabulary ids are sparse (largest id %lld for %zu tokens)", what,
                         (long long)max_id, t->vocab.n);
    size_t n = (size_t)max_id + 1;
    t->n_ids = (int32_t)n;
    t->id_str = ss_calloc(n, sizeof *t->id_str, "tokenizer id table");
    t->id_len = ss_calloc(n, sizeof *t->id_len, "tokenizer id table");
    t->id_bytes = ss_calloc(n, sizeof *t->id_bytes, "tokenizer id table");
    t->id_blen = ss_calloc(n, sizeof *t->id_blen, "tokenizer id table");
    if (!t->id_str || !t->id_len || !t->id_bytes || !t->id_blen) return nomem(what);
    for (size_t i = 0; i < t->vocab.cap; i++) {
        const smap_ent *e = &t->vocab.e[i];
        if (!e->s) continue;
        if (t->id_str[e->id])
            return ss_errorf(SS_ERR_FORMAT, "%s: tokens \"%.*s\" and \"%.*s\" both have id %d", what,
                             (int)(t->id_len[e->id] > 60 ? 60 : t->id_len[e->id]), t->id_str[e->id],
                             (int)(e->len > 60 ? 60 : e->len), e->s, e->id);
        t->id_str[e->id] = e->s;
        t->id_len[e->id] = e->len;
        SS_TRY(tk_token_bytes(t, e->s, e->len, &t->id_bytes[e->id], &t->id_blen[e->id], what));
    }
    for (int b = 0; b < 256; b++) t->byte_id[b] = smap_get(&t->vocab, t->bm.utf8[b], t->bm.utf8_len[b]);
    return SS_OK;
}

/* Precision for quoting a token of length len in a message. */
#define CLIP(len) ((int)((len) > 60 ? 60 : (len)))

/* Adds merge (a, b) with the given rank. `where` names the entry in messages. */
static ss_status tk_merge_put(ss_tokenizer *t, const char *a, size_t alen, const char *b, size_t blen, uint32_t rank,
                              const char *what, const char *where) {
    int32_t ia = smap_get(&t->vocab, a, alen);
    if (ia < 0)
        return ss_errorf(SS_ERR_FORMAT, "%s: %s: merge token \"%.*s\" is not in the vocabulary", what, where,
                         CLIP(alen), a);
    int32_t ib = smap_get(&t->vocab, b, blen);
    if (ib < 0)
        return ss_errorf(SS_ERR_FORMAT, "%s: %s: merge token \"%.*s\" is not in the vocabulary", what, where,
                         CLIP(blen), b);
    char stackbuf[256];
    size_t cl = alen + blen;
    char *cat = cl <= sizeof stackbuf ? stackbuf : ss_malloc(cl, "merged token");
    if (!cat) return nomem(what);
    memcpy(cat, a, alen);
    memcpy(cat + alen, b, blen);
    int32_t inew = smap_get(&t->vocab, cat, cl);
    if (cat != stackbuf) free(cat);
    if (inew < 0)
        return ss_errorf(SS_ERR_FORMAT, "%s: %s: merged token \"%.*s%.*s\" is not in the vocabulary", what, where,
                         CLIP(alen), a, CLIP(blen), b);
    if (!pmap_put(&t->merges, ia, ib, rank, inew)) return nomem(what);
    return SS_OK;
}

/* Registers an added token the way HF's AddedVocabulary::add_tokens assigns
 * ids; a file whose id disagrees is refused rather than silently renumbered. */
static ss_status tk_added_put(ss_tokenizer *t, const added_tok *a, int64_t file_id, const char *what) {
    int n = CLIP(a->len);
    for (size_t i = 0; i < t->n_added; i++)
        if (t->added[i].len == a->len && memcmp(t->added[i].content, a->content, a->len) == 0)
            return ss_errorf(SS_ERR_FORMAT, "%s: added token \"%.*s\" is listed twice", what, n, a->content);
    int32_t id = smap_get(&t->vocab, a->content, a->len);
    if (id < 0) {
        int32_t vs = (int32_t)t->vocab.n, max = -1;
        for (size_t i = 0; i < t->n_added; i++)
            if (t->added[i].id > max) max = t->added[i].id;
        id = max < 0 ? vs : (max >= vs ? max + 1 : vs);
    }
    if (file_id >= 0 && file_id != id)
        return ss_errorf(SS_ERR_UNSUPPORTED,
                         "%s: added token \"%.*s\" has id %lld but Hugging Face tokenizers would give it id %d", what, n,
                         a->content, (long long)file_id, id);
    if (t->n_added % 16 == 0) {
        added_tok *na = ss_realloc(t->added, (t->n_added + 16) * sizeof *na, "added tokens");
        if (!na) return nomem(what);
        t->added = na;
    }
    added_tok *d = &t->added[t->n_added++];
    *d = *a;
    d->content = arena_strndup(&t->arena, a->content, a->len);
    if (!d->content) return nomem(what);
    d->id = id;
    return SS_OK;
}

/* Final tables: ids of added tokens, eos, regexes, cache. */
static ss_status tk_finish(ss_tokenizer *t, const char *what) {
    int32_t n = t->n_ids;
    for (size_t i = 0; i < t->n_added; i++)
        if (t->added[i].id + 1 > n) n = t->added[i].id + 1;
    if (n > t->n_ids) {
        size_t nn = (size_t)n;
        const char **s = ss_realloc(t->id_str, nn * sizeof *s, "tokenizer id table");
        if (s) t->id_str = s;
        uint32_t *l = ss_realloc(t->id_len, nn * sizeof *l, "tokenizer id table");
        if (l) t->id_len = l;
        const char **b = ss_realloc(t->id_bytes, nn * sizeof *b, "tokenizer id table");
        if (b) t->id_bytes = b;
        uint32_t *bl = ss_realloc(t->id_blen, nn * sizeof *bl, "tokenizer id table");
        if (bl) t->id_blen = bl;
        if (!s || !l || !b || !bl) return nomem(what);
        for (int32_t i = t->n_ids; i < n; i++) {
            t->id_str[i] = NULL;
            t->id_len[i] = 0;
            t->id_bytes[i] = NULL;
            t->id_blen[i] = 0;
        }
        t->n_ids = n;
    }
    t->id_added = ss_malloc((size_t)t->n_ids * sizeof *t->id_added, "tokenizer added-token table");
    if (!t->id_added) return nomem(what);
    for (int32_t i = 0; i < t->n_ids; i++) t->id_added[i] = -1;
    int need_word_re = 0;
    for (size_t i = 0; i < t->n_added; i++) {
        const added_tok *a = &t->added[i];
        t->id_added[a->id] = (int32_t)i;
        t->first_byte[a->normalized ? 1 : 0][(unsigned char)a->content[0]] = 1;
        need_word_re |= a->single_word;
    }
    t->eos_id = ss_tokenizer_token_to_id(t, "<|endoftext|>");

    int err;
    PCRE2_SIZE off;
    t->re = pcre2_compile((PCRE2_SPTR)PRETOKENIZE_PATTERN, PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP, &err, &off,
                          NULL);
    if (!t->re) return ss_errorf(SS_ERR_INTERNAL, "%s: pre-tokenizer regex did not compile (PCRE2 error %d)", what, err);
    (void)pcre2_jit_compile(t->re, PCRE2_JIT_COMPLETE); /* without JIT the interpreter is used */
    if (t->digits) {
        /* HF's Digits splits on Rust's char::is_numeric: general categories Nd, Nl, No = \p{N}. */
        t->digit_re = pcre2_compile((PCRE2_SPTR)(t->digits == 1 ? "\\p{N}" : "\\p{N}+"), PCRE2_ZERO_TERMINATED,
                                    PCRE2_UTF | PCRE2_UCP, &err, &off, NULL);
        if (!t->digit_re) return ss_errorf(SS_ERR_INTERNAL, "%s: digits regex did not compile", what);
        (void)pcre2_jit_compile(t->digit_re, PCRE2_JIT_COMPLETE);
    }
    if (need_word_re) {
        t->word_re = pcre2_compile((PCRE2_SPTR)WORD_CHAR_PATTERN, PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP, &err,
                                   &off, NULL);
        if (!t->word_re) return ss_errorf(SS_ERR_INTERNAL, "%s: word-character regex did not compile", what);
    }

    t->cache = ss_calloc(1, sizeof *t->cache, "tokenizer word cache");
    if (!t->cache) return nomem(what);
    if (pthread_mutex_init(&t->cache->mu, NULL) != 0) {
        free(t->cache);
        t->cache = NULL;
        return ss_errorf(SS_ERR_INTERNAL, "%s: pthread_mutex_init failed", what);
    }
    t->cache->slots = ss_calloc(WORD_CACHE_SLOTS, sizeof *t->cache->slots, "tokenizer word cache");
    if (!t->cache->slots) return nomem(what);
    return SS_OK;
}

/* ------------------------------------------------------------------ */
/* Loading                                                             */

static const char *json_type_name(ss_json_type ty) {
    switch (ty) {
    case SS_JSON_NULL: return "null";
    case SS_JSON_BOOL: return "a boolean";
    case SS_JSON_NUMBER: return "a number";
    case SS_JSON_STRING: return "a string";
    case SS_JSON_ARRAY: return "an array";
    case SS_JSON_OBJECT: return "an object";
    }
    return "?";
}

/* Reads an optional boolean member; absent or null keeps *out. */
static ss_status get_flag(const ss_json *obj, const char *key, int *out, const char *what, const char *ctx) {
    const ss_json *v = ss_json_get(obj, key);
    if (!v || v->type == SS_JSON_NULL) return SS_OK;
    if (v->type != SS_JSON_BOOL)
        return ss_errorf(SS_ERR_FORMAT, "%s:%d: %s.%s must be a boolean, not %s", what, v->line, ctx, key,
                         json_type_name(v->type));
    *out = v->boolean;
    return SS_OK;
}

/* A member that must be null/absent or a string equal to one of the allowed
 * values (NULL-terminated list, "" meaning the empty string). */
static ss_status check_empty_string(const ss_json *obj, const char *key, const char *what, const char *ctx) {
    const ss_json *v = ss_json_get(obj, key);
    if (!v || v->type == SS_JSON_NULL) return SS_OK;
    if (v->type != SS_JSON_STRING)
        return ss_errorf(SS_ERR_FORMAT, "%s:%d: %s.%s must be a string or null", what, v->line, ctx, key);
    if (v->len)
        return ss_errorf(SS_ERR_UNSUPPORTED, "%s:%d: %s.%s \"%s\" is not supported (byte-level BPE uses none)", what,
                         v->line, ctx, key, v->str);
    return SS_OK;
}

static ss_status load_vocab_object(ss_tokenizer *t, const ss_json *vocab, const char *what, const char *ctx) {
    if (!vocab || vocab->type != SS_JSON_OBJECT)
        return ss_errorf(SS_ERR_FORMAT, "%s: %s must be an object of token -> id", what, ctx);
    for (size_t i = 0; i < vocab->len; i++) {
        const ss_json *v = &vocab->items[i];
        if (v->type != SS_JSON_NUMBER || !v->is_int) {
            int n = CLIP(vocab->key_lens[i]);
            return ss_errorf(SS_ERR_FORMAT, "%s:%d: %s: the id of token \"%.*s\" must be an integer", what, v->line, ctx,
                             n, vocab->keys[i]);
        }
        SS_TRY(tk_vocab_put(t, vocab->keys[i], vocab->key_lens[i], v->i, what));
    }
    return tk_vocab_finish(t, what);
}

static ss_status load_json_merges(ss_tokenizer *t, const ss_json *merges, const char *what) {
    if (!merges || merges->type != SS_JSON_ARRAY)
        return ss_errorf(SS_ERR_FORMAT, "%s: model.merges must be an array", what);
    int pairs = merges->len && merges->items[0].type == SS_JSON_ARRAY;
    uint32_t rank = 0;
    char where[64];
    for (size_t i = 0; i < merges->len; i++) {
        const ss_json *m = &merges->items[i];
        snprintf(where, sizeof where, "line %d: model.merges[%zu]", m->line, i);
        if (pairs) {
            if (m->type != SS_JSON_ARRAY || m->len != 2 || m->items[0].type != SS_JSON_STRING ||
                m->items[1].type != SS_JSON_STRING)
                return ss_errorf(SS_ERR_FORMAT, "%s: %s must be a pair of strings, like the first merge", what, where);
            SS_TRY(tk_merge_put(t, m->items[0].str, m->items[0].len, m->items[1].str, m->items[1].len, rank++, what,
                                where));
        } else {
            if (m->type != SS_JSON_STRING)
                return ss_errorf(SS_ERR_FORMAT, "%s: %s must be a string \"a b\", like the first merge", what, where);
            /* HF drops "#version" entries without giving them a rank. */
            if (m->len >= 8 && memcmp(m->str, "#version", 8) == 0) continue;
            const char *sp = memchr(m->str, ' ', m->len);
            if (!sp || memchr(sp + 1, ' ', m->len - (size_t)(sp + 1 - m->str)))
                return ss_errorf(SS_ERR_FORMAT, "%s: %s \"%.*s\" is not two tokens separated by one space", what,
                                 where, (int)(m->len > 60 ? 60 : m->len), m->str);
            SS_TRY(tk_merge_put(t, m->str, (size_t)(sp - m->str), sp + 1, m->len - (size_t)(sp + 1 - m->str), rank++,
                                what, where));
        }
    }
    return SS_OK;
}

static ss_status load_model(ss_tokenizer *t, const ss_json *model, const char *what) {
    if (!model || model->type != SS_JSON_OBJECT) return ss_errorf(SS_ERR_FORMAT, "%s: \"model\" object is missing", what);
    const ss_json *type = ss_json_get(model, "type");
    if (type && type->type != SS_JSON_STRING)
        return ss_errorf(SS_ERR_FORMAT, "%s:%d: model.type must be a string", what, type->line);
    /* Old files have no type; HF then tries BPE first, which needs merges. */
    if (type ? strcmp(type->str, "BPE") != 0 : !ss_json_get(model, "merges"))
        return ss_errorf(SS_ERR_UNSUPPORTED, "%s: model type \"%s\" is not supported (only byte-level \"BPE\")", what,
                         type ? type->str : "(none)");
    const ss_json *dropout = ss_json_get(model, "dropout");
    if (dropout && dropout->type != SS_JSON_NULL && !(dropout->type == SS_JSON_NUMBER && dropout->num == 0.0))
        return ss_errorf(SS_ERR_UNSUPPORTED, "%s:%d: model.dropout is not supported (it makes encoding random)", what,
                         dropout->line);
    SS_TRY(check_empty_string(model, "continuing_subword_prefix", what, "model"));
    SS_TRY(check_empty_string(model, "end_of_word_suffix", what, "model"));
    int byte_fallback = 0;
    SS_TRY(get_flag(model, "byte_fallback", &byte_fallback, what, "model"));
    if (byte_fallback) return ss_errorf(SS_ERR_UNSUPPORTED, "%s: model.byte_fallback is not supported", what);
    SS_TRY(get_flag(model, "fuse_unk", &t->fuse_unk, what, "model"));
    SS_TRY(get_flag(model, "ignore_merges", &t->ignore_merges, what, "model"));

    SS_TRY(load_vocab_object(t, ss_json_get(model, "vocab"), what, "model.vocab"));
    SS_TRY(load_json_merges(t, ss_json_get(model, "merges"), what));

    const ss_json *unk = ss_json_get(model, "unk_token");
    if (unk && unk->type != SS_JSON_NULL) {
        if (unk->type != SS_JSON_STRING) return ss_errorf(SS_ERR_FORMAT, "%s:%d: model.unk_token must be a string", what, unk->line);
        t->unk_id = smap_get(&t->vocab, unk->str, unk->len);
        if (t->unk_id < 0)
            return ss_errorf(SS_ERR_FORMAT, "%s:%d: model.unk_token \"%s\" is not in the vocabulary", what, unk->line,
                             unk->str);
    }
    return SS_OK;
}

/* The Digits pre-tokenizer, accepted only just before ByteLevel. */
static ss_status load_digits(ss_tokenizer *t, const ss_json *pt, const char *what) {
    int individual = 0;
    SS_TRY(get_flag(pt, "individual_digits", &individual, what, "pre_tokenizer Digits"));
    t->digits = individual ? 1 : 2;
    return SS_OK;
}

static int pre_type_is(const ss_json *pt, const char *type) {
    const char *ty = NULL;
    return pt->type == SS_JSON_OBJECT && ss_json_get_str(pt, "type", &ty) == 1 && strcmp(ty, type) == 0;
}

/* The ByteLevel pre-tokenizer object, alone or in a Sequence: [ByteLevel] or
 * [Digits, ByteLevel] (SmolLM2, StarCoder). */
static ss_status load_pre_tokenizer(ss_tokenizer *t, const ss_json *pt, const char *what) {
    if (!pt || pt->type == SS_JSON_NULL)
        return ss_errorf(SS_ERR_UNSUPPORTED, "%s: no pre_tokenizer: only the ByteLevel pre-tokenizer is supported", what);
    const char *ty = NULL;
    if (pt->type != SS_JSON_OBJECT || ss_json_get_str(pt, "type", &ty) != 1)
        return ss_errorf(SS_ERR_FORMAT, "%s:%d: pre_tokenizer must be an object with a \"type\"", what, pt->line);
    if (strcmp(ty, "Sequence") == 0) {
        const ss_json *list = ss_json_get(pt, "pretokenizers");
        if (list && list->type == SS_JSON_ARRAY && list->len == 1 && pre_type_is(&list->items[0], "ByteLevel"))
            return load_pre_tokenizer(t, &list->items[0], what);
        if (list && list->type == SS_JSON_ARRAY && list->len == 2 && pre_type_is(&list->items[0], "Digits") &&
            pre_type_is(&list->items[1], "ByteLevel")) {
            SS_TRY(load_digits(t, &list->items[0], what));
            return load_pre_tokenizer(t, &list->items[1], what);
        }
        return ss_errorf(SS_ERR_UNSUPPORTED,
                         "%s:%d: a pre_tokenizer Sequence other than [ByteLevel] or [Digits, ByteLevel] is not supported",
                         what, pt->line);
    }
    if (strcmp(ty, "ByteLevel") != 0)
        return ss_errorf(SS_ERR_UNSUPPORTED, "%s:%d: pre_tokenizer type \"%s\" is not supported (only ByteLevel)", what,
                         pt->line, ty);
    SS_TRY(get_flag(pt, "add_prefix_space", &t->add_prefix_space, what, "pre_tokenizer"));
    SS_TRY(get_flag(pt, "use_regex", &t->use_regex, what, "pre_tokenizer"));
    return SS_OK;
}

/* normalizer, post_processor and decoder: only the ones that change nothing
 * here. (truncation and padding are batch settings; encode returns every id.) */
static ss_status check_component(const ss_json *root, const char *key, const char *allowed, const char *what) {
    const ss_json *v = ss_json_get(root, key);
    if (!v || v->type == SS_JSON_NULL) return SS_OK;
    const char *ty = NULL;
    if (v->type != SS_JSON_OBJECT || ss_json_get_str(v, "type", &ty) != 1)
        return ss_errorf(SS_ERR_FORMAT, "%s:%d: %s must be null or an object with a \"type\"", what, v->line, key);
    if (allowed && strcmp(ty, allowed) == 0) return SS_OK;
    return ss_errorf(SS_ERR_UNSUPPORTED, "%s:%d: %s type \"%s\" is not supported%s%s%s", what, v->line, key, ty,
                     allowed ? " (only " : " (only none)", allowed ? allowed : "", allowed ? " or none)" : "");
}

static ss_status load_added_tokens(ss_tokenizer *t, const ss_json *list, const char *what) {
    if (!list || list->type == SS_JSON_NULL) return SS_OK;
    if (list->type != SS_JSON_ARRAY) return ss_errorf(SS_ERR_FORMAT, "%s:%d: added_tokens must be an array", what, list->line);
    for (size_t i = 0; i < list->len; i++) {
        const ss_json *o = &list->items[i];
        const ss_json *c = o->type == SS_JSON_OBJECT ? ss_json_get(o, "content") : NULL;
        if (!c || c->type != SS_JSON_STRING)
            return ss_errorf(SS_ERR_FORMAT, "%s:%d: added_tokens[%zu] needs a string \"content\"", what, o->line, i);
        if (c->len == 0) continue; /* HF ignores empty added tokens */
        added_tok a = {.content = c->str, .len = c->len, .normalized = 1};
        char ctx[48];
        snprintf(ctx, sizeof ctx, "added_tokens[%zu]", i);
        SS_TRY(get_flag(o, "single_word", &a.single_word, what, ctx));
        SS_TRY(get_flag(o, "lstrip", &a.lstrip, what, ctx));
        SS_TRY(get_flag(o, "rstrip", &a.rstrip, what, ctx));
        SS_TRY(get_flag(o, "normalized", &a.normalized, what, ctx));
        SS_TRY(get_flag(o, "special", &a.special, what, ctx));
        int64_t id = -1;
        int r = ss_json_get_int(o, "id", &id);
        if (r < 0 || (r == 1 && id < 0))
            return ss_errorf(SS_ERR_FORMAT, "%s:%d: %s.id must be a non-negative integer", what, o->line, ctx);
        SS_TRY(tk_added_put(t, &a, id, what));
    }
    return SS_OK;
}

static ss_status load_json_doc(ss_tokenizer *t, const ss_json *root, const char *what) {
    if (root->type != SS_JSON_OBJECT) return ss_errorf(SS_ERR_FORMAT, "%s: top level must be an object", what);
    SS_TRY(check_component(root, "normalizer", NULL, what));
    SS_TRY(load_pre_tokenizer(t, ss_json_get(root, "pre_tokenizer"), what));
    SS_TRY(check_component(root, "post_processor", "ByteLevel", what));
    SS_TRY(check_component(root, "decoder", "ByteLevel", what));
    SS_TRY(load_model(t, ss_json_get(root, "model"), what));
    SS_TRY(load_added_tokens(t, ss_json_get(root, "added_tokens"), what));
    return tk_finish(t, what);
}

ss_status ss_tokenizer_load_json_mem(const char *text, size_t len, const char *what, ss_tokenizer **out) {
    *out = NULL;
    ss_json_doc *doc = NULL;
    SS_TRY(ss_json_parse(text, len, what, &doc));
    ss_tokenizer *t = tk_new();
    if (!t) {
        ss_json_free(doc);
        return SS_ERR_NOMEM;
    }
    ss_status st = load_json_doc(t, ss_json_root(doc), what);
    ss_json_free(doc);
    if (st != SS_OK) {
        ss_tokenizer_free(t);
        return st;
    }
    *out = t;
    return SS_OK;
}

ss_status ss_tokenizer_load_json(const char *path, ss_tokenizer **out) {
    *out = NULL;
    char *text = NULL;
    size_t len = 0;
    SS_TRY(ss_file_read(path, &text, &len));
    ss_status st = ss_tokenizer_load_json_mem(text, len, path, out);
    free(text);
    return st;
}

/* merges.txt / vocab.bpe: one "a b" per line, "#version" lines skipped.
 * Ranks count lines as HF's reader does (only their order matters). */
static ss_status load_merges_text(ss_tokenizer *t, const char *text, size_t len, const char *path) {
    size_t pos = 0;
    uint32_t line = 0;
    char where[32];
    while (pos < len) {
        const char *s = text + pos;
        const char *nl = memchr(s, '\n', len - pos);
        size_t l = nl ? (size_t)(nl - s) : len - pos;
        pos += l + (nl ? 1 : 0);
        line++;
        if (l && s[l - 1] == '\r') l--;
        if (l >= 8 && memcmp(s, "#version", 8) == 0) continue;
        snprintf(where, sizeof where, "line %u", line);
        const char *sp = memchr(s, ' ', l);
        if (!sp || memchr(sp + 1, ' ', l - (size_t)(sp + 1 - s)))
            return ss_errorf(SS_ERR_FORMAT, "%s:%u: \"%.*s\" is not two tokens separated by one space", path, line,
                             (int)(l > 60 ? 60 : l), s);
        size_t bad = utf8_first_invalid(s, l);
        if (bad < l) return ss_errorf(SS_ERR_FORMAT, "%s:%u: invalid UTF-8", path, line);
        SS_TRY(tk_merge_put(t, s, (size_t)(sp - s), sp + 1, l - (size_t)(sp + 1 - s), line - 1, path, where));
    }
    return SS_OK;
}

ss_status ss_tokenizer_load_bpe(const char *vocab_path, const char *merges_path, ss_tokenizer **out) {
    *out = NULL;
    char *vtext = NULL, *mtext = NULL;
    size_t vlen = 0, mlen = 0;
    ss_json_doc *doc = NULL;
    ss_tokenizer *t = NULL;
    ss_status st = ss_file_read(vocab_path, &vtext, &vlen);
    if (st == SS_OK) st = ss_file_read(merges_path, &mtext, &mlen);
    if (st == SS_OK) st = ss_json_parse(vtext, vlen, vocab_path, &doc);
    if (st == SS_OK && !(t = tk_new())) st = SS_ERR_NOMEM;
    if (st == SS_OK) st = load_vocab_object(t, ss_json_root(doc), vocab_path, "the vocabulary");
    if (st == SS_OK) st = load_merges_text(t, mtext, mlen, merges_path);
    /* Like transformers' GPT2Tokenizer, the GPT-2 end-of-text token is special. */
    if (st == SS_OK && smap_get(&t->vocab, "<|endoftext|>", 13) >= 0) {
        added_tok a = {.content = "<|endoftext|>", .len = 13, .special = 1, .normalized = 0};
        st = tk_added_put(t, &a, -1, vocab_path);
    }
    if (st == SS_OK) st = tk_finish(t, vocab_path);
    ss_json_free(doc);
    free(vtext);
    free(mtext);
    if (st != SS_OK) {
        ss_tokenizer_free(t);
        return st;
    }
    *out = t;
    return SS_OK;
}

ss_status ss_tokenizer_load_dir_opt(const char *dir, ss_tokenizer **out) {
    *out = NULL;
    char *p = ss_path_join(dir, "tokenizer.json");
    if (!p) return nomem(dir);
    if (ss_file_exists(p)) {
        ss_status st = ss_tokenizer_load_json(p, out);
        free(p);
        return st;
    }
    free(p);
    static const char *const vocab_names[] = {"vocab.json", "encoder.json"};
    static const char *const merges_names[] = {"merges.txt", "vocab.bpe"};
    char *vp = NULL, *mp = NULL;
    for (int i = 0; i < 2 && !vp; i++) {
        char *c = ss_path_join(dir, vocab_names[i]);
        if (c && ss_file_exists(c)) vp = c;
        else free(c);
    }
    for (int i = 0; i < 2 && !mp; i++) {
        char *c = ss_path_join(dir, merges_names[i]);
        if (c && ss_file_exists(c)) mp = c;
        else free(c);
    }
    ss_status st = SS_OK; /* no tokenizer files: none, *out NULL */
    if (vp && mp) st = ss_tokenizer_load_bpe(vp, mp, out);
    free(vp);
    free(mp);
    return st;
}

ss_status ss_tokenizer_load_dir(const char *dir, ss_tokenizer **out) {
    SS_TRY(ss_tokenizer_load_dir_opt(dir, out));
    if (!*out)
        return ss_errorf(SS_ERR_IO, "%s: no tokenizer.json, and no vocab.json/encoder.json + merges.txt/vocab.bpe pair",
                         dir);
    return SS_OK;
}

/* ------------------------------------------------------------------ */
/* Lookups                                                             */

int32_t ss_tokenizer_vocab_size(const ss_tokenizer *t) { return t ? t->n_ids : 0; }

const char *ss_tokenizer_id_to_token(const ss_tokenizer *t, int32_t id) {
    if (!t || id < 0 || id >= t->n_ids) return NULL;
    if (t->id_added && t->id_added[id] >= 0) return t->added[t->id_added[id]].content;
    return t->id_str[id];
}

int32_t ss_tokenizer_token_to_id(const ss_tokenizer *t, const char *token) {
    if (!t || !token) return -1;
    size_t len = strlen(token);
    for (size_t i = 0; i < t->n_added; i++)
        if (t->added[i].len == len && memcmp(t->added[i].content, token, len) == 0) return t->added[i].id;
    return smap_get(&t->vocab, token, len);
}

int32_t ss_tokenizer_eos_id(const ss_tokenizer *t) { return t ? t->eos_id : -1; }

/* ------------------------------------------------------------------ */
/* Encoding                                                            */

typedef struct {
    uint32_t rank;
    uint32_t pos;
    int32_t new_id;
} heap_ent;

typedef struct {
    int32_t *out;
    size_t n, cap;
    int32_t *sym_id, *sym_prev, *sym_next;
    uint32_t *sym_len;
    size_t sym_cap;
    heap_ent *heap;
    size_t heap_n, heap_cap;
    char *buf; /* a word in byte-level form (ignore_merges) */
    size_t buf_cap;
    char *pbuf; /* a piece with the prefix space */
    size_t pbuf_cap;
    pcre2_match_data *md;
} enc_ctx;

static int emit(enc_ctx *c, int32_t id) {
    if (c->n == c->cap && !ss_grow((void **)&c->out, &c->cap, c->n + 1, sizeof *c->out)) return 0;
    c->out[c->n++] = id;
    return 1;
}

static inline int heap_less(const heap_ent *a, const heap_ent *b) {
    return a->rank != b->rank ? a->rank < b->rank : a->pos < b->pos;
}

static int heap_push(enc_ctx *c, uint32_t rank, uint32_t pos, int32_t new_id) {
    if (c->heap_n == c->heap_cap && !ss_grow((void **)&c->heap, &c->heap_cap, c->heap_n + 1, sizeof *c->heap)) return 0;
    size_t i = c->heap_n++;
    heap_ent e = {rank, pos, new_id};
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!heap_less(&e, &c->heap[p])) break;
        c->heap[i] = c->heap[p];
        i = p;
    }
    c->heap[i] = e;
    return 1;
}

static heap_ent heap_pop(enc_ctx *c) {
    heap_ent top = c->heap[0];
    heap_ent last = c->heap[--c->heap_n];
    size_t i = 0, n = c->heap_n;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        const heap_ent *best = &last;
        if (l < n && heap_less(&c->heap[l], best)) { m = l; best = &c->heap[l]; }
        if (r < n && heap_less(&c->heap[r], best)) { m = r; }
        if (m == i) break;
        c->heap[i] = c->heap[m];
        i = m;
    }
    if (n) c->heap[i] = last;
    return top;
}

static int cache_lookup(const ss_tokenizer *t, enc_ctx *c, const char *w, size_t n, uint64_t h) {
    word_cache *wc = t->cache;
    int found = 0, ok = 1;
    pthread_mutex_lock(&wc->mu);
    for (size_t i = h & (WORD_CACHE_SLOTS - 1);; i = (i + 1) & (WORD_CACHE_SLOTS - 1)) {
        const cache_slot *s = &wc->slots[i];
        if (!s->used) break;
        if (s->h == h && s->klen == n && memcmp(wc->keys + s->koff, w, n) == 0) {
            found = 1;
            if (c->n + s->nids > c->cap && !ss_grow((void **)&c->out, &c->cap, c->n + s->nids, sizeof *c->out)) {
                ok = 0;
                break;
            }
            if (s->nids) memcpy(c->out + c->n, wc->ids + s->ioff, s->nids * sizeof *c->out);
            c->n += s->nids;
            break;
        }
    }
    pthread_mutex_unlock(&wc->mu);
    return found ? (ok ? 1 : -1) : 0;
}

static void cache_insert(const ss_tokenizer *t, const char *w, size_t n, uint64_t h, const int32_t *ids, size_t nids) {
    word_cache *wc = t->cache;
    pthread_mutex_lock(&wc->mu);
    if (wc->n < WORD_CACHE_MAX_ENTRIES && ss_grow((void **)&wc->keys, &wc->keys_cap, wc->keys_len + n, 1) &&
        ss_grow((void **)&wc->ids, &wc->ids_cap, wc->ids_len + nids, sizeof *wc->ids)) {
        size_t i = h & (WORD_CACHE_SLOTS - 1);
        int dup = 0;
        for (; wc->slots[i].used; i = (i + 1) & (WORD_CACHE_SLOTS - 1)) {
            const cache_slot *s = &wc->slots[i];
            if (s->h == h && s->klen == n && memcmp(wc->keys + s->koff, w, n) == 0) { dup = 1; break; }
        }
        if (!dup) {
            memcpy(wc->keys + wc->keys_len, w, n);
            if (nids) memcpy(wc->ids + wc->ids_len, ids, nids * sizeof *ids); /* 0: every byte dropped */
            wc->slots[i] = (cache_slot){h, (uint32_t)wc->keys_len, (uint32_t)n, (uint32_t)wc->ids_len, (uint32_t)nids, 1};
            wc->keys_len += n;
            wc->ids_len += nids;
            wc->n++;
        }
    }
    pthread_mutex_unlock(&wc->mu);
}

/* BPE of one pre-tokenized word (raw bytes), appended to c->out. */
static ss_status bpe_word(const ss_tokenizer *t, enc_ctx *c, const char *w, size_t n) {
    if (n == 0) return SS_OK;
    const unsigned char *u = (const unsigned char *)w;
    if (t->ignore_merges) {
        if (!ss_grow((void **)&c->buf, &c->buf_cap, 2 * n, 1)) return nomem("encode");
        size_t m = 0;
        for (size_t i = 0; i < n; i++) {
            memcpy(c->buf + m, t->bm.utf8[u[i]], t->bm.utf8_len[u[i]]);
            m += t->bm.utf8_len[u[i]];
        }
        int32_t id = smap_get(&t->vocab, c->buf, m);
        if (id >= 0) return emit(c, id) ? SS_OK : nomem("encode");
    }
    uint64_t h = 0;
    int cacheable = n < WORD_CACHE_MAX_LEN;
    if (cacheable) {
        h = hash_bytes(w, n);
        int r = cache_lookup(t, c, w, n, h);
        if (r) return r > 0 ? SS_OK : nomem("encode");
    }
    if (!ss_grow((void **)&c->sym_id, &c->sym_cap, n, sizeof *c->sym_id)) return nomem("encode");
    size_t cap = c->sym_cap;
    int32_t *np = ss_realloc(c->sym_prev, cap * sizeof *np, "encode symbols");
    if (!np) return nomem("encode");
    c->sym_prev = np;
    int32_t *nn = ss_realloc(c->sym_next, cap * sizeof *nn, "encode symbols");
    if (!nn) return nomem("encode");
    c->sym_next = nn;
    uint32_t *nl = ss_realloc(c->sym_len, cap * sizeof *nl, "encode symbols");
    if (!nl) return nomem("encode");
    c->sym_len = nl;

    /* Initial symbols: one per byte; bytes missing from the vocabulary become
     * unk (fused if asked) or are dropped when there is no unk token, as in HF. */
    size_t k = 0;
    uint32_t unk_len = 0;
#define ADD_SYM(ID, LEN)                                                  \
    do {                                                                  \
        c->sym_id[k] = (ID);                                              \
        c->sym_len[k] = (LEN);                                            \
        c->sym_prev[k] = (int32_t)k - 1;                                  \
        c->sym_next[k] = -1;                                              \
        if (k) c->sym_next[k - 1] = (int32_t)k;                           \
        k++;                                                              \
    } while (0)
    for (size_t i = 0; i < n; i++) {
        int32_t id = t->byte_id[u[i]];
        if (id >= 0) {
            if (unk_len) { ADD_SYM(t->unk_id, unk_len); unk_len = 0; }
            ADD_SYM(id, 1);
        } else if (t->unk_id >= 0) {
            if (unk_len && !t->fuse_unk) { ADD_SYM(t->unk_id, unk_len); unk_len = 0; }
            unk_len++;
        }
    }
    if (unk_len) ADD_SYM(t->unk_id, unk_len);
#undef ADD_SYM

    /* HF's Word::merge_all: a min-heap on (rank, position); an entry is stale
     * when its symbol is gone or the pair there no longer yields its token. */
    c->heap_n = 0;
    for (size_t i = 0; i + 1 < k; i++) {
        const pmap_ent *m = pmap_get(&t->merges, c->sym_id[i], c->sym_id[i + 1]);
        if (m && !heap_push(c, m->rank, (uint32_t)i, m->new_id)) return nomem("encode");
    }
    while (c->heap_n) {
        heap_ent top = heap_pop(c);
        uint32_t p = top.pos;
        if (c->sym_len[p] == 0 || c->sym_next[p] < 0) continue;
        int32_t q = c->sym_next[p];
        const pmap_ent *m = pmap_get(&t->merges, c->sym_id[p], c->sym_id[q]);
        if (!m || m->new_id != top.new_id) continue;
        c->sym_id[p] = top.new_id;
        c->sym_len[p] += c->sym_len[q];
        c->sym_next[p] = c->sym_next[q];
        c->sym_len[q] = 0;
        if (c->sym_next[p] >= 0) c->sym_prev[c->sym_next[p]] = (int32_t)p;
        if (c->sym_prev[p] >= 0) {
            int32_t pp = c->sym_prev[p];
            const pmap_ent *ml = pmap_get(&t->merges, c->sym_id[pp], c->sym_id[p]);
            if (ml && !heap_push(c, ml->rank, (uint32_t)pp, ml->new_id)) return nomem("encode");
        }
        if (c->sym_next[p] >= 0) {
            const pmap_ent *mr = pmap_get(&t->merges, c->sym_id[p], c->sym_id[c->sym_next[p]]);
            if (mr && !heap_push(c, mr->rank, p, mr->new_id)) return nomem("encode");
        }
    }
    size_t first = c->n;
    for (size_t i = 0; i < k; i++)
        if (c->sym_len[i] && !emit(c, c->sym_id[i])) return nomem("encode");
    if (cacheable) cache_insert(t, w, n, h, c->out + first, c->n - first);
    return SS_OK;
}

/* ByteLevel pre-tokenizer + BPE on one piece (between added tokens and, with
 * Digits, between numeric characters). */
static ss_status bytelevel_piece(const ss_tokenizer *t, enc_ctx *c, const char *s, size_t n, size_t base) {
    if (n == 0) return SS_OK;
    if (t->add_prefix_space && s[0] != ' ') {
        if (!ss_grow((void **)&c->pbuf, &c->pbuf_cap, n + 1, 1)) return nomem("encode");
        c->pbuf[0] = ' ';
        memcpy(c->pbuf + 1, s, n);
        s = c->pbuf;
        n++;
    }
    if (!t->use_regex) return bpe_word(t, c, s, n);
    size_t pos = 0;
    while (pos < n) {
        int rc = pcre2_match(t->re, (PCRE2_SPTR)s, n, pos, PCRE2_NO_UTF_CHECK, c->md, NULL);
        if (rc == PCRE2_ERROR_NOMATCH) break;
        if (rc < 0) {
            PCRE2_UCHAR msg[120];
            pcre2_get_error_message(rc, msg, sizeof msg);
            return ss_errorf(SS_ERR_INTERNAL, "pre-tokenizer regex failed near byte %zu: %s", base + pos, (char *)msg);
        }
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(c->md);
        size_t ms = ov[0], me = ov[1];
        if (me <= ms) { /* the pattern has no empty alternative; guard anyway */
            return ss_errorf(SS_ERR_INTERNAL, "pre-tokenizer regex matched nothing at byte %zu", base + ms);
        }
        if (ms > pos) SS_TRY(bpe_word(t, c, s + pos, ms - pos)); /* text between matches stays a piece */
        SS_TRY(bpe_word(t, c, s + ms, me - ms));
        pos = me;
    }
    if (pos < n) SS_TRY(bpe_word(t, c, s + pos, n - pos));
    return SS_OK;
}

/* A piece of text between added tokens: with a Digits pre-tokenizer, every
 * numeric character (or run) and every stretch between them is a piece of its
 * own for ByteLevel (HF's Isolated split), prefix space and regex included. */
static ss_status encode_piece(const ss_tokenizer *t, enc_ctx *c, const char *s, size_t n, size_t base) {
    if (!t->digits) return bytelevel_piece(t, c, s, n, base);
    size_t pos = 0;
    while (pos < n) {
        int rc = pcre2_match(t->digit_re, (PCRE2_SPTR)s, n, pos, PCRE2_NO_UTF_CHECK, c->md, NULL);
        if (rc == PCRE2_ERROR_NOMATCH) break;
        if (rc < 0) return ss_errorf(SS_ERR_INTERNAL, "digits regex failed near byte %zu", base + pos);
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(c->md);
        size_t ms = ov[0], me = ov[1]; /* copied: bytelevel_piece reuses the match data */
        if (me <= ms) return ss_errorf(SS_ERR_INTERNAL, "digits regex matched nothing at byte %zu", base + ms);
        if (ms > pos) SS_TRY(bytelevel_piece(t, c, s + pos, ms - pos, base + pos));
        SS_TRY(bytelevel_piece(t, c, s + ms, me - ms, base + ms));
        pos = me;
    }
    if (pos < n) SS_TRY(bytelevel_piece(t, c, s + pos, n - pos, base + pos));
    return SS_OK;
}

static int char_is_word(const ss_tokenizer *t, enc_ctx *c, const char *s, size_t n) {
    return pcre2_match(t->word_re, (PCRE2_SPTR)s, n, 0, PCRE2_NO_UTF_CHECK, c->md, NULL) >= 0;
}

/* Start of the last UTF-8 character in s[0..end). */
static size_t prev_char(const char *s, size_t end) {
    size_t i = end - 1;
    while (i > 0 && ((unsigned char)s[i] & 0xC0) == 0x80) i--;
    return i;
}

/* Longest added token of this pass starting at s[pos], or -1. */
static int match_added_at(const ss_tokenizer *t, int pass, const char *s, size_t n, size_t pos) {
    int best = -1;
    size_t best_len = 0;
    for (size_t i = 0; i < t->n_added; i++) {
        const added_tok *a = &t->added[i];
        if (a->normalized != pass || a->len > n - pos || a->len <= best_len) continue;
        if (memcmp(s + pos, a->content, a->len) == 0) {
            best = (int)i;
            best_len = a->len;
        }
    }
    return best;
}

/* AddedVocabulary::find_matches on s[0..n), then either the second pass
 * (normalized tokens) or the pre-tokenizer on what lies between. */
static ss_status split_added(const ss_tokenizer *t, enc_ctx *c, const char *s, size_t n, size_t base, int pass) {
    size_t start_offset = 0, pos = 0;
    const unsigned char *first = t->first_byte[pass];
    while (pos < n) {
        if (!first[(unsigned char)s[pos]]) { pos++; continue; }
        int ai = match_added_at(t, pass, s, n, pos);
        if (ai < 0) { pos++; continue; }
        const added_tok *a = &t->added[ai];
        size_t start = pos, stop = pos + a->len;
        pos = stop; /* the automaton resumes after the match even if it is discarded */
        if (a->single_word) {
            int start_space = start == 0 || !char_is_word(t, c, s + prev_char(s, start), start - prev_char(s, start));
            int stop_space = stop == n || !char_is_word(t, c, s + stop, n - stop);
            if (!start_space || !stop_space) continue;
        }
        if (a->lstrip) {
            size_t ns = start;
            while (ns > 0) {
                size_t p = prev_char(s, ns);
                int l;
                if (!is_white_space(utf8_decode((const unsigned char *)s + p, &l))) break;
                ns = p;
            }
            start = ns > start_offset ? ns : start_offset;
        }
        if (a->rstrip) {
            while (stop < n) {
                int l;
                if (!is_white_space(utf8_decode((const unsigned char *)s + stop, &l))) break;
                stop += (size_t)l;
            }
        }
        if (start_offset < start) {
            if (pass == 0) SS_TRY(split_added(t, c, s + start_offset, start - start_offset, base + start_offset, 1));
            else SS_TRY(encode_piece(t, c, s + start_offset, start - start_offset, base + start_offset));
        }
        if (!emit(c, a->id)) return nomem("encode");
        start_offset = stop;
    }
    if (start_offset < n) {
        if (pass == 0) SS_TRY(split_added(t, c, s + start_offset, n - start_offset, base + start_offset, 1));
        else SS_TRY(encode_piece(t, c, s + start_offset, n - start_offset, base + start_offset));
    }
    return SS_OK;
}

ss_status ss_tokenizer_encode(const ss_tokenizer *t, const char *text, size_t len, int32_t **ids, size_t *n) {
    *ids = NULL;
    *n = 0;
    if (!t) return ss_errorf(SS_ERR_ARG, "encode: no tokenizer");
    if (!text && len) return ss_errorf(SS_ERR_ARG, "encode: NULL text");
    size_t bad = utf8_first_invalid(text, len);
    if (bad < len)
        return ss_errorf(SS_ERR_ARG, "text is not valid UTF-8 at byte offset %zu (byte 0x%02x)", bad,
                         (unsigned char)text[bad]);
    enc_ctx c = {0};
    c.md = pcre2_match_data_create_from_pattern(t->re, NULL);
    if (!c.md) return nomem("encode");
    /* Rough guess (GPT-2 averages ~4 bytes per token) to avoid regrowth. */
    ss_status st = ss_grow((void **)&c.out, &c.cap, len / 3 + 16, sizeof *c.out) ? SS_OK : nomem("encode");
    if (st == SS_OK && len) st = split_added(t, &c, text, len, 0, 0);
    pcre2_match_data_free(c.md);
    free(c.sym_id);
    free(c.sym_prev);
    free(c.sym_next);
    free(c.sym_len);
    free(c.heap);
    free(c.buf);
    free(c.pbuf);
    if (st != SS_OK) {
        free(c.out);
        return st;
    }
    *ids = c.out;
    *n = c.n;
    return SS_OK;
}

/* ------------------------------------------------------------------ */
/* Decoding                                                            */

ss_status ss_tokenizer_decode(const ss_tokenizer *t, const int32_t *ids, size_t n, char **text, size_t *len) {
    *text = NULL;
    *len = 0;
    if (!t) return ss_errorf(SS_ERR_ARG, "decode: no tokenizer");
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        int32_t id = ids[i];
        if (id < 0 || id >= t->n_ids || (t->id_added[id] < 0 && !t->id_bytes[id]))
            return ss_errorf(SS_ERR_ARG, "decode: id %d (position %zu) is not in the vocabulary (size %d)", id, i,
                             t->n_ids);
        total += t->id_added[id] >= 0 ? t->added[t->id_added[id]].len : t->id_blen[id];
    }
    char *out = ss_malloc(total + 1, "decode");
    if (!out) return SS_ERR_NOMEM;
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        int32_t id = ids[i];
        /* An added token's text is its content as written (it was matched in
         * the raw text), so decode(encode(x)) == x holds for it too. */
        if (t->id_added[id] >= 0) {
            const added_tok *a = &t->added[t->id_added[id]];
            memcpy(out + o, a->content, a->len);
            o += a->len;
        } else {
            memcpy(out + o, t->id_bytes[id], t->id_blen[id]);
            o += t->id_blen[id];
        }
    }
    out[o] = 0;
    *text = out;
    *len = o;
    return SS_OK;
}
