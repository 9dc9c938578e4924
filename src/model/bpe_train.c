/* Byte-level BPE training, step for step what Hugging Face's BpeTrainer does
 * (see bpe_train.h for the choices that fix ids and tie-breaking).
 *
 * Data structures, mirroring the Rust trainer so that even its odd corners
 * come out the same:
 *   - words: the distinct pre-tokenized words with their counts, each a run
 *     of symbol ids that merges shrink in place;
 *   - pairs: (left, right) -> count over all words, updated by the +1/-1
 *     changes each merge reports (the merged pair's own count is left as it
 *     is, as in HF);
 *   - a max-heap of (count, pair, list of words); an entry whose count is
 *     stale is re-pushed with the current count when it reaches the top, and
 *     each step pushes one new entry per pair that gained occurrences, with
 *     the words where it did. A step merges only in the popped entry's words.
 * Pair and word lists never shrink during training; memory is a few times
 * the number of (pair, word) incidences. */
#include "subscope/bpe_train.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "subscope/json.h"
#include "subscope/tokenizer.h"
#include "subscope/util.h"

/* The trained words must be the pieces the tokenizer will later encode, so
 * the split is the tokenizer's own regex (ss_tokenizer_pretokenize_pattern). */
#define PRETOKENIZE_PATTERN ss_tokenizer_pretokenize_pattern

static uint64_t hash_bytes(const char *p, size_t n) {
    uint64_t h = 1469598103934665603ULL ^ n;
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)p[i]) * 1099511628211ULL;
    h ^= h >> 31;
    h *= 0x9e3779b97f4a7c15ULL;
    return h ^ (h >> 29);
}

static uint64_t mix64(uint64_t h) {
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    return h ^ (h >> 33);
}

static ss_status nomem(void) { return ss_errorf(SS_ERR_NOMEM, "BPE training: out of memory"); }

/* ------------------------------------------------------------------ */
/* GPT-2's byte <-> unicode map                                        */

/* The byte alphabet is the tokenizer's (ss_tokenizer_byte_is_printable, ss_tokenizer_byte_cp). */

/* ------------------------------------------------------------------ */
/* Word counting                                                       */

struct ss_bpe_trainer {
    pcre2_code *re;
    pcre2_match_data *md;
    char *bytes; /* every distinct word, back to back */
    size_t bytes_len, bytes_cap;
    size_t *w_off;
    uint32_t *w_len;
    int64_t *w_count;
    uint64_t *w_hash;
    size_t n_words, w_cap;
    uint32_t *slots; /* word index + 1, 0 empty */
    size_t n_slots;
    int64_t total_words, total_bytes;
};

ss_status ss_bpe_trainer_init(ss_bpe_trainer **out) {
    *out = NULL;
    ss_bpe_trainer *t = ss_calloc(1, sizeof *t, "BPE trainer");
    if (!t) return SS_ERR_NOMEM;
    int err;
    PCRE2_SIZE off;
    t->re = pcre2_compile((PCRE2_SPTR)PRETOKENIZE_PATTERN, PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP, &err, &off,
                          NULL);
    if (!t->re) {
        free(t);
        return ss_errorf(SS_ERR_INTERNAL, "BPE trainer: pre-tokenizer regex did not compile (PCRE2 error %d)", err);
    }
    (void)pcre2_jit_compile(t->re, PCRE2_JIT_COMPLETE); /* the interpreter is used without JIT */
    t->md = pcre2_match_data_create_from_pattern(t->re, NULL);
    t->n_slots = 1 << 12;
    t->slots = ss_calloc(t->n_slots, sizeof *t->slots, "BPE word table");
    if (!t->md || !t->slots) {
        ss_bpe_trainer_free(t);
        return nomem();
    }
    *out = t;
    return SS_OK;
}

void ss_bpe_trainer_free(ss_bpe_trainer *t) {
    if (!t) return;
    if (t->md) pcre2_match_data_free(t->md);
    if (t->re) pcre2_code_free(t->re);
    free(t->bytes);
    free(t->w_off);
    free(t->w_len);
    free(t->w_count);
    free(t->w_hash);
    free(t->slots);
    free(t);
}

void ss_bpe_trainer_stats(const ss_bpe_trainer *t, int64_t *n_distinct, int64_t *n_words, int64_t *n_bytes) {
    if (n_distinct) *n_distinct = (int64_t)t->n_words;
    if (n_words) *n_words = t->total_words;
    if (n_bytes) *n_bytes = t->total_bytes;
}

static ss_status count_word(ss_bpe_trainer *t, const char *w, size_t n) {
    if (n == 0) return SS_OK;
    uint64_t h = hash_bytes(w, n);
    size_t mask = t->n_slots - 1, i = h & mask;
    for (; t->slots[i]; i = (i + 1) & mask) {
        size_t k = t->slots[i] - 1;
        if (t->w_hash[k] == h && t->w_len[k] == n && memcmp(t->bytes + t->w_off[k], w, n) == 0) {
            t->w_count[k]++;
            t->total_words++;
            return SS_OK;
        }
    }
    if (t->n_words >= UINT32_MAX - 1) return ss_errorf(SS_ERR_ARG, "BPE training: more than 2^32 distinct words");
    size_t k = t->n_words;
    if (!ss_grow(&t->bytes, &t->bytes_cap, t->bytes_len + n, 1) ||
        (k == t->w_cap &&
         !(ss_grow(&t->w_off, &(size_t){t->w_cap}, k + 1, sizeof *t->w_off) &&
           ss_grow(&t->w_len, &(size_t){t->w_cap}, k + 1, sizeof *t->w_len) &&
           ss_grow(&t->w_count, &(size_t){t->w_cap}, k + 1, sizeof *t->w_count) &&
           ss_grow(&t->w_hash, &t->w_cap, k + 1, sizeof *t->w_hash))))
        return nomem();
    memcpy(t->bytes + t->bytes_len, w, n);
    t->w_off[k] = t->bytes_len;
    t->w_len[k] = (uint32_t)n;
    t->w_count[k] = 1;
    t->w_hash[k] = h;
    t->bytes_len += n;
    t->n_words++;
    t->total_words++;
    t->slots[i] = (uint32_t)(k + 1);
    if (t->n_words * 2 > t->n_slots) { /* keep the table at most half full */
        size_t ns = t->n_slots * 2;
        uint32_t *s = ss_calloc(ns, sizeof *s, "BPE word table");
        if (!s) return nomem();
        for (size_t j = 0; j < t->n_words; j++) {
            size_t p = t->w_hash[j] & (ns - 1);
            while (s[p]) p = (p + 1) & (ns - 1);
            s[p] = (uint32_t)(j + 1);
        }
        free(t->slots);
        t->slots = s;
        t->n_slots = ns;
    }
    return SS_OK;
}

/* Offset of the first byte that does not start valid UTF-8 (overlong forms,
 * surrogates and code points above U+10FFFF are invalid), or len. */
static size_t utf8_check(const unsigned char *s, size_t len) {
    size_t i = 0;
    while (i < len) {
        unsigned c = s[i];
        size_t l = c < 0x80 ? 1 : c < 0xC2 ? 0 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : c < 0xF5 ? 4 : 0;
        if (!l || l > len - i) return i;
        for (size_t k = 1; k < l; k++)
            if ((s[i + k] & 0xC0) != 0x80) return i;
        if ((c == 0xE0 && s[i + 1] < 0xA0) || (c == 0xED && s[i + 1] >= 0xA0) || (c == 0xF0 && s[i + 1] < 0x90) ||
            (c == 0xF4 && s[i + 1] >= 0x90))
            return i;
        i += l;
    }
    return len;
}

ss_status ss_bpe_trainer_add(ss_bpe_trainer *t, const char *text, size_t len) {
    if (!t) return ss_errorf(SS_ERR_ARG, "BPE trainer: NULL trainer");
    if (!len) return SS_OK;
    if (!text) return ss_errorf(SS_ERR_ARG, "BPE trainer: NULL text");
    if (len > UINT32_MAX) return ss_errorf(SS_ERR_ARG, "BPE trainer: a document of %zu bytes is too long (4 GiB limit)", len);
    size_t bad = utf8_check((const unsigned char *)text, len);
    if (bad < len)
        return ss_errorf(SS_ERR_ARG, "text is not valid UTF-8 at byte offset %zu (byte 0x%02x)", bad,
                         (unsigned char)text[bad]);
    size_t pos = 0;
    while (pos < len) {
        int rc = pcre2_match(t->re, (PCRE2_SPTR)text, len, pos, PCRE2_NO_UTF_CHECK, t->md, NULL);
        if (rc == PCRE2_ERROR_NOMATCH) break;
        if (rc < 0) {
            PCRE2_UCHAR msg[120];
            pcre2_get_error_message(rc, msg, sizeof msg);
            return ss_errorf(SS_ERR_INTERNAL, "pre-tokenizer regex failed near byte %zu: %s", pos, (char *)msg);
        }
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(t->md);
        size_t ms = ov[0], me = ov[1];
        if (me <= ms) return ss_errorf(SS_ERR_INTERNAL, "pre-tokenizer regex matched nothing at byte %zu", ms);
        /* HF keeps text between matches as a piece of its own; the pattern
         * covers every character, so this is only a guard. */
        if (ms > pos) SS_TRY(count_word(t, text + pos, ms - pos));
        SS_TRY(count_word(t, text + ms, me - ms));
        pos = me;
    }
    if (pos < len) SS_TRY(count_word(t, text + pos, len - pos));
    t->total_bytes += (int64_t)len;
    return SS_OK;
}

/* ------------------------------------------------------------------ */
/* Training                                                            */

#define PAIR_EMPTY UINT64_MAX
static inline uint64_t pkey(int32_t a, int32_t b) { return ((uint64_t)(uint32_t)a << 32) | (uint32_t)b; }

typedef struct {
    uint64_t key;
    int64_t count;
    int64_t stamp; /* the step whose word list `vec` is being filled */
    int32_t vec;
} pair_ent;

typedef struct {
    int32_t *v;
    size_t n, cap;
} ivec;

typedef struct {
    int64_t count;
    uint64_t key;
    int32_t vec;
} heap_ent;

typedef struct {
    const ss_bpe_trainer *tr;
    /* symbols of every word */
    int32_t *sym;
    size_t *w_sym;
    uint32_t *w_n;
    /* tokens: raw bytes back to back, and bytes -> id for reuse */
    char *tb;
    size_t tb_len, tb_cap;
    size_t *t_off;
    uint32_t *t_len;
    uint64_t *t_hash;
    size_t n_tok, t_cap;
    int32_t *t_slots; /* id + 1 */
    size_t n_tslots;
    /* pairs */
    pair_ent *pairs;
    size_t n_pairs, pcap;
    /* word lists */
    ivec *vecs;
    size_t n_vecs, vcap;
    int32_t *free_vecs;
    size_t n_free, fcap;
    /* the heap */
    heap_ent *heap;
    size_t heap_n, heap_cap;
    /* pairs that gained occurrences in this step */
    uint64_t *touched;
    size_t n_touched, touched_cap;
    int64_t step;
    /* the merges learned */
    int32_t (*merges)[3];
    size_t n_merges, mcap;
} bpe_state;

static pair_ent *pair_get(bpe_state *s, uint64_t key, int add) {
    if (add && (s->n_pairs + 1) * 2 > s->pcap) {
        size_t nc = s->pcap ? s->pcap * 2 : 1 << 14;
        pair_ent *ne = ss_malloc(nc * sizeof *ne, "BPE pair table");
        if (!ne) return NULL;
        for (size_t i = 0; i < nc; i++) ne[i].key = PAIR_EMPTY;
        for (size_t i = 0; i < s->pcap; i++) {
            if (s->pairs[i].key == PAIR_EMPTY) continue;
            size_t j = mix64(s->pairs[i].key) & (nc - 1);
            while (ne[j].key != PAIR_EMPTY) j = (j + 1) & (nc - 1);
            ne[j] = s->pairs[i];
        }
        free(s->pairs);
        s->pairs = ne;
        s->pcap = nc;
    }
    if (!s->pcap) return NULL;
    size_t i = mix64(key) & (s->pcap - 1);
    for (;; i = (i + 1) & (s->pcap - 1)) {
        pair_ent *e = &s->pairs[i];
        if (e->key == key) return e;
        if (e->key == PAIR_EMPTY) break;
    }
    if (!add) return NULL;
    s->pairs[i] = (pair_ent){key, 0, -1, -1};
    s->n_pairs++;
    return &s->pairs[i];
}

static int32_t vec_new(bpe_state *s) {
    if (s->n_free) return s->free_vecs[--s->n_free];
    if (!ss_grow(&s->vecs, &s->vcap, s->n_vecs + 1, sizeof *s->vecs)) return -1;
    s->vecs[s->n_vecs] = (ivec){0};
    return (int32_t)s->n_vecs++;
}

static int vec_release(bpe_state *s, int32_t v) {
    if (!ss_grow(&s->free_vecs, &s->fcap, s->n_free + 1, sizeof *s->free_vecs)) return 0;
    s->vecs[v].n = 0;
    s->free_vecs[s->n_free++] = v;
    return 1;
}

/* Max-heap order: higher count first, then the smaller (left, right). */
static inline int heap_before(const heap_ent *x, const heap_ent *y) {
    return x->count != y->count ? x->count > y->count : x->key < y->key;
}

static int heap_push(bpe_state *s, heap_ent e) {
    if (!ss_grow(&s->heap, &s->heap_cap, s->heap_n + 1, sizeof *s->heap)) return 0;
    size_t i = s->heap_n++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!heap_before(&e, &s->heap[p])) break;
        s->heap[i] = s->heap[p];
        i = p;
    }
    s->heap[i] = e;
    return 1;
}

static heap_ent heap_pop(bpe_state *s) {
    heap_ent top = s->heap[0], last = s->heap[--s->heap_n];
    size_t i = 0, n = s->heap_n;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        const heap_ent *best = &last;
        if (l < n && heap_before(&s->heap[l], best)) m = l, best = &s->heap[l];
        if (r < n && heap_before(&s->heap[r], best)) m = r;
        if (m == i) break;
        s->heap[i] = s->heap[m];
        i = m;
    }
    if (n) s->heap[i] = last;
    return top;
}

/* One +delta occurrence change of pair (a, b) in word w. */
static int pair_change(bpe_state *s, int32_t a, int32_t b, int delta, size_t w) {
    uint64_t key = pkey(a, b);
    pair_ent *e = pair_get(s, key, 1);
    if (!e) return 0;
    e->count += delta * s->tr->w_count[w];
    if (delta <= 0) return 1;
    if (e->stamp != s->step) {
        int32_t v = vec_new(s);
        if (v < 0 || !ss_grow(&s->touched, &s->touched_cap, s->n_touched + 1, sizeof *s->touched)) return 0;
        e = pair_get(s, key, 0); /* vec_new cannot move pairs, but stay safe */
        e->stamp = s->step;
        e->vec = v;
        s->touched[s->n_touched++] = key;
    }
    ivec *iv = &s->vecs[e->vec];
    if (iv->n && iv->v[iv->n - 1] == (int32_t)w) return 1; /* a word's changes come together */
    if (!ss_grow(&iv->v, &iv->cap, iv->n + 1, sizeof *iv->v)) return 0;
    iv->v[iv->n++] = (int32_t)w;
    return 1;
}

/* Pushes one heap entry per pair that gained occurrences in this step. */
static int flush_touched(bpe_state *s) {
    for (size_t i = 0; i < s->n_touched; i++) {
        pair_ent *e = pair_get(s, s->touched[i], 0);
        if (e->count > 0) {
            if (!heap_push(s, (heap_ent){e->count, e->key, e->vec})) return 0;
        } else if (!vec_release(s, e->vec)) {
            return 0;
        }
    }
    s->n_touched = 0;
    return 1;
}

/* Replaces every (a, b) in word w, left to right, by c, reporting the
 * neighbour pairs that disappear and appear exactly as HF's Word::merge. */
static int merge_word(bpe_state *s, size_t w, int32_t a, int32_t b, int32_t c) {
    int32_t *x = s->sym + s->w_sym[w];
    size_t n = s->w_n[w], r = 0, o = 0;
    while (r < n) {
        if (r + 1 < n && x[r] == a && x[r + 1] == b) {
            if (o > 0 && !(pair_change(s, x[o - 1], a, -1, w) && pair_change(s, x[o - 1], c, 1, w))) return 0;
            x[o++] = c;
            r += 2;
            if (r < n && !(pair_change(s, b, x[r], -1, w) && pair_change(s, c, x[r], 1, w))) return 0;
        } else {
            x[o++] = x[r++];
        }
    }
    s->w_n[w] = (uint32_t)o;
    return 1;
}

/* The id of the token with these bytes, adding it if new (-1: no memory). */
static int32_t token_get_or_add(bpe_state *s, const char *p, size_t n, int *added) {
    uint64_t h = hash_bytes(p, n);
    size_t mask = s->n_tslots - 1, i = h & mask;
    for (; s->t_slots[i]; i = (i + 1) & mask) {
        int32_t id = s->t_slots[i] - 1;
        if (s->t_hash[id] == h && s->t_len[id] == n && memcmp(s->tb + s->t_off[id], p, n) == 0) {
            *added = 0;
            return id;
        }
    }
    size_t id = s->n_tok;
    if (n > UINT32_MAX || !ss_grow(&s->tb, &s->tb_cap, s->tb_len + n + 1, 1)) return -1;
    if (id == s->t_cap && !(ss_grow(&s->t_off, &(size_t){s->t_cap}, id + 1, sizeof *s->t_off) &&
                            ss_grow(&s->t_len, &(size_t){s->t_cap}, id + 1, sizeof *s->t_len) &&
                            ss_grow(&s->t_hash, &s->t_cap, id + 1, sizeof *s->t_hash)))
        return -1;
    memmove(s->tb + s->tb_len, p, n); /* p may point into tb itself */
    s->t_off[id] = s->tb_len;
    s->t_len[id] = (uint32_t)n;
    s->t_hash[id] = h;
    s->tb_len += n;
    s->n_tok++;
    s->t_slots[i] = (int32_t)id + 1;
    *added = 1;
    return (int32_t)id;
}

static void state_free(bpe_state *s) {
    free(s->sym), free(s->w_sym), free(s->w_n);
    free(s->tb), free(s->t_off), free(s->t_len), free(s->t_hash), free(s->t_slots);
    free(s->pairs);
    for (size_t i = 0; i < s->n_vecs; i++) free(s->vecs[i].v);
    free(s->vecs), free(s->free_vecs), free(s->heap), free(s->touched), free(s->merges);
}

static ss_status make_model(bpe_state *s, ss_bpe_model **out) {
    ss_bpe_model *m = ss_calloc(1, sizeof *m, "BPE model");
    if (!m) return nomem();
    m->n_tokens = (int32_t)s->n_tok;
    m->tok = ss_calloc(s->n_tok, sizeof *m->tok, "BPE vocabulary");
    m->tok_len = ss_calloc(s->n_tok, sizeof *m->tok_len, "BPE vocabulary");
    m->merges = ss_malloc((s->n_merges ? s->n_merges : 1) * sizeof *m->merges, "BPE merges");
    if (!m->tok || !m->tok_len || !m->merges) {
        ss_bpe_model_free(m);
        return nomem();
    }
    for (size_t i = 0; i < s->n_tok; i++) {
        m->tok[i] = ss_strndup(s->tb + s->t_off[i], s->t_len[i]);
        if (!m->tok[i]) {
            ss_bpe_model_free(m);
            return nomem();
        }
        m->tok_len[i] = s->t_len[i];
    }
    if (s->n_merges) memcpy(m->merges, s->merges, s->n_merges * sizeof *m->merges);
    m->n_merges = (int32_t)s->n_merges;
    *out = m;
    return SS_OK;
}

ss_status ss_bpe_trainer_train(ss_bpe_trainer *tr, int32_t vocab_size, ss_bpe_model **out) {
    *out = NULL;
    if (!tr) return ss_errorf(SS_ERR_ARG, "BPE trainer: NULL trainer");
    if (vocab_size < SS_BPE_MIN_VOCAB)
        return ss_errorf(SS_ERR_ARG, "BPE vocabulary size %d is below %d (<|endoftext|> and the 256 bytes)", vocab_size,
                         SS_BPE_MIN_VOCAB);
    bpe_state st = {.tr = tr};
    bpe_state *s = &st;
    ss_status rc = SS_OK;

    /* Tokens: the special one (not in the bytes -> id map: a merge can never
     * spell it, since the pre-tokenizer splits "<|" from letters), then the
     * 256 bytes in the code-point order of their characters. */
    s->n_tslots = 1024;
    while (s->n_tslots < 4 * (size_t)vocab_size) s->n_tslots *= 2;
    s->t_slots = ss_calloc(s->n_tslots, sizeof *s->t_slots, "BPE token table");
    if (!s->t_slots || !ss_grow(&s->tb, &s->tb_cap, 64, 1) || !ss_grow(&s->t_off, &(size_t){0}, 257, sizeof *s->t_off) ||
        !ss_grow(&s->t_len, &(size_t){0}, 257, sizeof *s->t_len) || !ss_grow(&s->t_hash, &s->t_cap, 257, sizeof *s->t_hash)) {
        rc = nomem();
        goto done;
    }
    memcpy(s->tb, SS_BPE_EOT, strlen(SS_BPE_EOT));
    s->t_off[0] = 0, s->t_len[0] = (uint32_t)strlen(SS_BPE_EOT), s->t_hash[0] = 0;
    s->tb_len = strlen(SS_BPE_EOT);
    s->n_tok = 1;
    int32_t byte_id[256];
    int order[256], k = 0;
    for (int b = 0; b < 256; b++)
        if (ss_tokenizer_byte_is_printable(b)) order[k++] = b;
    for (int b = 0; b < 256; b++)
        if (!ss_tokenizer_byte_is_printable(b)) order[k++] = b;
    for (int i = 0; i < 256; i++) {
        char c = (char)order[i];
        int added;
        byte_id[order[i]] = token_get_or_add(s, &c, 1, &added);
        if (byte_id[order[i]] < 0) {
            rc = nomem();
            goto done;
        }
    }

    /* Words as byte-id symbols, and the initial pair counts (step 0). */
    const size_t nw = tr->n_words;
    s->sym = ss_malloc((tr->bytes_len ? tr->bytes_len : 1) * sizeof *s->sym, "BPE word symbols");
    s->w_sym = ss_malloc((nw ? nw : 1) * sizeof *s->w_sym, "BPE word symbols");
    s->w_n = ss_malloc((nw ? nw : 1) * sizeof *s->w_n, "BPE word symbols");
    if (!s->sym || !s->w_sym || !s->w_n) {
        rc = nomem();
        goto done;
    }
    for (size_t w = 0; w < nw; w++) {
        const unsigned char *p = (const unsigned char *)tr->bytes + tr->w_off[w];
        s->w_sym[w] = tr->w_off[w];
        s->w_n[w] = tr->w_len[w];
        for (uint32_t i = 0; i < tr->w_len[w]; i++) s->sym[tr->w_off[w] + i] = byte_id[p[i]];
    }
    s->step = 0;
    for (size_t w = 0; w < nw; w++) {
        const int32_t *x = s->sym + s->w_sym[w];
        for (uint32_t i = 0; i + 1 < s->w_n[w]; i++)
            if (!pair_change(s, x[i], x[i + 1], 1, w)) {
                rc = nomem();
                goto done;
            }
    }
    if (!flush_touched(s)) {
        rc = nomem();
        goto done;
    }

    while (s->n_tok < (size_t)vocab_size && s->heap_n) {
        heap_ent top = heap_pop(s);
        pair_ent *e = pair_get(s, top.key, 0);
        if (top.count != e->count) { /* stale: an earlier merge changed the count */
            top.count = e->count;
            if (top.count > 0 ? !heap_push(s, top) : !vec_release(s, top.vec)) {
                rc = nomem();
                goto done;
            }
            continue;
        }
        if (top.count < 1) break;
        const int32_t a = (int32_t)(top.key >> 32), b = (int32_t)(uint32_t)top.key;
        /* The new token's bytes are built at the end of tb, then looked up. */
        size_t la = s->t_len[a], lb = s->t_len[b];
        if (!ss_grow(&s->tb, &s->tb_cap, s->tb_len + la + lb + 1, 1)) {
            rc = nomem();
            goto done;
        }
        memcpy(s->tb + s->tb_len, s->tb + s->t_off[a], la);
        memcpy(s->tb + s->tb_len + la, s->tb + s->t_off[b], lb);
        int added;
        int32_t c = token_get_or_add(s, s->tb + s->tb_len, la + lb, &added);
        if (c < 0 || !ss_grow(&s->merges, &s->mcap, s->n_merges + 1, sizeof *s->merges)) {
            rc = nomem();
            goto done;
        }
        s->merges[s->n_merges][0] = a, s->merges[s->n_merges][1] = b, s->merges[s->n_merges][2] = c;
        s->n_merges++;
        s->step++;
        const ivec *iv = &s->vecs[top.vec];
        for (size_t i = 0; i < iv->n; i++) {
            if (!merge_word(s, (size_t)iv->v[i], a, b, c)) {
                rc = nomem();
                goto done;
            }
            iv = &s->vecs[top.vec]; /* merge_word may grow the list of lists */
        }
        if (!vec_release(s, top.vec) || !flush_touched(s)) {
            rc = nomem();
            goto done;
        }
    }
    rc = make_model(s, out);
done:
    state_free(s);
    return rc;
}

/* ------------------------------------------------------------------ */
/* The model and its files                                             */

void ss_bpe_model_free(ss_bpe_model *m) {
    if (!m) return;
    if (m->tok)
        for (int32_t i = 0; i < m->n_tokens; i++) free(m->tok[i]);
    free(m->tok);
    free(m->tok_len);
    free(m->merges);
    free(m);
}

size_t ss_bpe_token_text(const ss_bpe_model *m, int32_t id, char *buf) {
    size_t o = 0;
    if (id == 0) { /* the special token is written as itself */
        memcpy(buf, m->tok[0], m->tok_len[0]);
        o = m->tok_len[0];
    } else {
        for (uint32_t i = 0; i < m->tok_len[id]; i++) {
            uint32_t cp = ss_tokenizer_byte_cp((unsigned char)m->tok[id][i]);
            if (cp < 0x80) {
                buf[o++] = (char)cp;
            } else {
                buf[o++] = (char)(0xC0 | (cp >> 6));
                buf[o++] = (char)(0x80 | (cp & 0x3F));
            }
        }
    }
    buf[o] = 0;
    return o;
}


/* A scratch buffer big enough for the longest token's text. */
static char *text_buf(const ss_bpe_model *m) {
    size_t mx = 0;
    for (int32_t i = 0; i < m->n_tokens; i++)
        if (m->tok_len[i] > mx) mx = m->tok_len[i];
    return ss_malloc(2 * mx + 1, "BPE token text");
}

/* Opens a memory stream for *text and a scratch buffer of text_buf's size
 * (two with buf2); NULL when out of memory, with nothing left allocated. */
static FILE *open_text(const ss_bpe_model *m, char **text, size_t *len, char **buf, char **buf2) {
    *text = NULL;
    *len = 0;
    FILE *f = open_memstream(text, len);
    *buf = text_buf(m);
    if (buf2) *buf2 = text_buf(m);
    if (f && *buf && (!buf2 || *buf2)) return f;
    if (f) fclose(f), free(*text), *text = NULL;
    free(*buf), *buf = NULL;
    if (buf2) free(*buf2), *buf2 = NULL;
    return NULL;
}

/* Closes the memory stream; on failure frees what it held. */
static ss_status finish(FILE *f, char *buf, char **text, size_t *len, const char *what) {
    free(buf);
    int bad = ferror(f);
    if (fclose(f) != 0 || bad) {
        free(*text);
        *text = NULL;
        *len = 0;
        return ss_errorf(SS_ERR_NOMEM, "%s: out of memory", what);
    }
    return SS_OK;
}

static void put_vocab(FILE *f, const ss_bpe_model *m, char *buf, const char *indent) {
    for (int32_t i = 0; i < m->n_tokens; i++) {
        size_t l = ss_bpe_token_text(m, i, buf);
        fputs(indent, f);
        ss_json_write_str(f, buf, l);
        fprintf(f, ": %d%s\n", i, i + 1 < m->n_tokens ? "," : "");
    }
}

ss_status ss_bpe_model_tokenizer_json(const ss_bpe_model *m, char **text, size_t *len) {
    char *buf, *buf2;
    FILE *f = open_text(m, text, len, &buf, &buf2);
    if (!f) return nomem();
    fputs("{\n  \"version\": \"1.0\",\n  \"truncation\": null,\n  \"padding\": null,\n  \"added_tokens\": [\n"
          "    {\n      \"id\": 0,\n      \"content\": ",
          f);
    ss_json_write_str(f, m->tok[0], m->tok_len[0]);
    fputs(",\n      \"single_word\": false,\n      \"lstrip\": false,\n      \"rstrip\": false,\n"
          "      \"normalized\": false,\n      \"special\": true\n    }\n  ],\n  \"normalizer\": null,\n"
          "  \"pre_tokenizer\": {\n    \"type\": \"ByteLevel\",\n    \"add_prefix_space\": false,\n"
          "    \"trim_offsets\": true,\n    \"use_regex\": true\n  },\n"
          "  \"post_processor\": {\n    \"type\": \"ByteLevel\",\n    \"add_prefix_space\": true,\n"
          "    \"trim_offsets\": false,\n    \"use_regex\": true\n  },\n"
          "  \"decoder\": {\n    \"type\": \"ByteLevel\",\n    \"add_prefix_space\": true,\n"
          "    \"trim_offsets\": true,\n    \"use_regex\": true\n  },\n"
          "  \"model\": {\n    \"type\": \"BPE\",\n    \"dropout\": null,\n    \"unk_token\": null,\n"
          "    \"continuing_subword_prefix\": null,\n    \"end_of_word_suffix\": null,\n    \"fuse_unk\": false,\n"
          "    \"byte_fallback\": false,\n    \"ignore_merges\": false,\n    \"vocab\": {\n",
          f);
    put_vocab(f, m, buf, "      ");
    fputs("    },\n    \"merges\": [\n", f);
    /* "left right" strings load in every tokenizers version (byte-level
     * tokens never contain a space: it is spelled U+0120). */
    for (int32_t r = 0; r < m->n_merges; r++) {
        size_t la = ss_bpe_token_text(m, m->merges[r][0], buf);
        size_t lb = ss_bpe_token_text(m, m->merges[r][1], buf2);
        fputs("      \"", f);
        for (int p = 0; p < 2; p++) {
            const char *s = p ? buf2 : buf;
            size_t l = p ? lb : la;
            for (size_t i = 0; i < l; i++) {
                if (s[i] == '"' || s[i] == '\\') fputc('\\', f);
                fputc(s[i], f);
            }
            if (!p) fputc(' ', f);
        }
        fprintf(f, "\"%s\n", r + 1 < m->n_merges ? "," : "");
    }
    fputs("    ]\n  }\n}\n", f);
    free(buf2);
    return finish(f, buf, text, len, "tokenizer.json");
}

ss_status ss_bpe_model_vocab_json(const ss_bpe_model *m, char **text, size_t *len) {
    char *buf;
    FILE *f = open_text(m, text, len, &buf, NULL);
    if (!f) return nomem();
    fputs("{\n", f);
    put_vocab(f, m, buf, "  ");
    fputs("}\n", f);
    return finish(f, buf, text, len, "vocab.json");
}

ss_status ss_bpe_model_merges_txt(const ss_bpe_model *m, char **text, size_t *len) {
    char *buf;
    FILE *f = open_text(m, text, len, &buf, NULL);
    if (!f) return nomem();
    fputs("#version: 0.2\n", f);
    for (int32_t r = 0; r < m->n_merges; r++) {
        ss_bpe_token_text(m, m->merges[r][0], buf);
        fputs(buf, f);
        fputc(' ', f);
        ss_bpe_token_text(m, m->merges[r][1], buf);
        fputs(buf, f);
        fputc('\n', f);
    }
    return finish(f, buf, text, len, "merges.txt");
}
