/* Byte-level BPE training: a hand-computed merge sequence, exact agreement
 * with Hugging Face's BpeTrainer (goldens by tests/gen/gen_bpe_goldens.py:
 * a 117 KB corpus at two vocabulary sizes and 30 tie-heavy small corpora),
 * the written tokenizer.json loading in subscope and encoding as HF encodes
 * with the same file, encode/decode round trips, determinism and errors. */
#include "test.h"

#include <stdlib.h>
#include <string.h>

#include "subscope/bpe_train.h"
#include "subscope/json.h"
#include "subscope/tokenizer.h"
#include "subscope/util.h"

static char *bpe_path(const char *name) {
    char *d = ss_path_join(ss_test_data_dir(), "bpe");
    char *p = d ? ss_path_join(d, name) : NULL;
    free(d);
    return p;
}

/* Lines of tests/data/bpe/corpus.txt (each a document), in place. */
typedef struct {
    char *buf;
    char **line;
    size_t *len;
    size_t n;
} corpus;

static ss_status corpus_load(corpus *c) {
    memset(c, 0, sizeof *c);
    char *p = bpe_path("corpus.txt");
    size_t n;
    ss_status st = p ? ss_file_read(p, &c->buf, &n) : SS_ERR_NOMEM;
    free(p);
    if (st) return st;
    size_t lines = 0;
    for (size_t i = 0; i < n; i++) lines += c->buf[i] == '\n';
    c->line = malloc((lines + 1) * sizeof *c->line);
    c->len = malloc((lines + 1) * sizeof *c->len);
    if (!c->line || !c->len) return SS_ERR_NOMEM;
    size_t s = 0;
    for (size_t i = 0; i < n; i++)
        if (c->buf[i] == '\n') {
            c->buf[i] = 0;
            c->line[c->n] = c->buf + s;
            c->len[c->n++] = i - s;
            s = i + 1;
        }
    return SS_OK;
}

static void corpus_free(corpus *c) {
    free(c->buf);
    free(c->line);
    free(c->len);
}

/* Trains on the corpus (documents in reverse order if `reverse`). */
static ss_status train_corpus(const corpus *c, int32_t V, int reverse, ss_bpe_model **m) {
    ss_bpe_trainer *t;
    SS_TRY(ss_bpe_trainer_init(&t));
    ss_status st = SS_OK;
    for (size_t i = 0; i < c->n && !st; i++) {
        size_t k = reverse ? c->n - 1 - i : i;
        st = ss_bpe_trainer_add(t, c->line[k], c->len[k]);
    }
    if (!st) st = ss_bpe_trainer_train(t, V, m);
    ss_bpe_trainer_free(t);
    return st;
}

/* "left right" of merge r in byte-level spelling. */
static void merge_text(const ss_bpe_model *m, int32_t r, char *out, size_t cap) {
    char a[512], b[512];
    if (m->tok_len[m->merges[r][0]] > 250 || m->tok_len[m->merges[r][1]] > 250) {
        snprintf(out, cap, "(long)");
        return;
    }
    ss_bpe_token_text(m, m->merges[r][0], a);
    ss_bpe_token_text(m, m->merges[r][1], b);
    snprintf(out, cap, "%s %s", a, b);
}

TEST(bpe_train_hand_computed_merges) {
    /* Words: "abab" 1, " abc" 1, "ab" 1, "xy" 1, " xy" 2. Pair counts:
     * (a,b) 4, (x,y) 3, then (Ġ,xy) 2; then four pairs of count 1, taken by
     * smallest (left id, right id) with Ġ = 221 (byte 0x20 is the 33rd
     * non-printable byte: 1 + 188 + 32), c = 67, ab = 257:
     * (Ġ,ab)=(221,257) < (ab,c)=(257,67) < (ab,ab); merging Ġab leaves
     * (ab,ab) and (Ġab,c)=(260,67), so (ab,ab) comes before Ġab c.
     * String order would have put "ab ab" before "ab c": ids decide. */
    static const char *const docs[] = {"abab abc", "ab", "xy xy xy"};
    static const char *const want[] = {"a b", "x y", "Ġ xy", "Ġ ab", "ab ab", "Ġab c"};
    ss_bpe_trainer *t;
    CHECK_OK(ss_bpe_trainer_init(&t));
    for (int i = 0; i < 3; i++) CHECK_OK(ss_bpe_trainer_add(t, docs[i], strlen(docs[i])));
    int64_t distinct, words, bytes;
    ss_bpe_trainer_stats(t, &distinct, &words, &bytes);
    CHECK(distinct == 5 && words == 6 && bytes == 18);
    for (int32_t V = 257; V <= 265; V++) {
        ss_bpe_model *m = NULL;
        CHECK_OK(ss_bpe_trainer_train(t, V, &m));
        int32_t expect = V < 263 ? V : 263; /* six merges, then no pair is left */
        CHECK_MSG(m->n_tokens == expect && m->n_merges == expect - 257, "V=%d: %d tokens, %d merges", V, m->n_tokens,
                  m->n_merges);
        CHECK(strcmp(m->tok[0], "<|endoftext|>") == 0);
        CHECK(m->tok_len[1] == 1 && m->tok[1][0] == '!' && m->tok[94][0] == '~' && m->tok[221][0] == ' ');
        CHECK((unsigned char)m->tok[95][0] == 0xA1 && m->tok[189][0] == 0 && (unsigned char)m->tok[256][0] == 0xAD);
        for (int32_t r = 0; r < m->n_merges; r++) {
            char got[64];
            merge_text(m, r, got, sizeof got);
            CHECK_MSG(strcmp(got, want[r]) == 0, "V=%d merge %d: got \"%s\", want \"%s\"", V, r, got, want[r]);
            CHECK(m->merges[r][2] == 257 + r);
        }
        ss_bpe_model_free(m);
    }
    ss_bpe_trainer_free(t);
}

/* Compares a trained model with a tokenizer.json written by HF: the same
 * token at every id and the same merges in the same order. */
static int same_as_hf(const ss_bpe_model *m, const ss_json *model, const char *label) {
    const ss_json *vocab = ss_json_get(model, "vocab"), *merges = ss_json_get(model, "merges");
    if (!vocab || !merges) {
        ss_test_fail(__FILE__, __LINE__, "%s: no model.vocab/merges", label);
        return 0;
    }
    if ((size_t)m->n_tokens != vocab->len || (size_t)m->n_merges != merges->len) {
        ss_test_fail(__FILE__, __LINE__, "%s: %d tokens, %d merges; HF has %zu, %zu", label, m->n_tokens, m->n_merges,
                     vocab->len, merges->len);
        return 0;
    }
    char buf[1024];
    for (size_t i = 0; i < vocab->len; i++) {
        int64_t id = vocab->items[i].i;
        if (id < 0 || id >= m->n_tokens || m->tok_len[id] > 500) {
            ss_test_fail(__FILE__, __LINE__, "%s: HF id %lld", label, (long long)id);
            return 0;
        }
        ss_bpe_token_text(m, (int32_t)id, buf);
        if (strcmp(buf, vocab->keys[i]) != 0) {
            ss_test_fail(__FILE__, __LINE__, "%s: id %lld is \"%s\" here, \"%s\" in HF", label, (long long)id, buf,
                         vocab->keys[i]);
            return 0;
        }
    }
    for (size_t r = 0; r < merges->len; r++) {
        const ss_json *e = &merges->items[r];
        char want[1100];
        if (e->type == SS_JSON_ARRAY && e->len == 2)
            snprintf(want, sizeof want, "%s %s", e->items[0].str, e->items[1].str);
        else
            snprintf(want, sizeof want, "%s", e->type == SS_JSON_STRING ? e->str : "?");
        merge_text(m, (int32_t)r, buf, sizeof buf);
        if (strcmp(buf, want) != 0) {
            ss_test_fail(__FILE__, __LINE__, "%s: merge %zu is \"%s\" here, \"%s\" in HF", label, r, buf, want);
            return 0;
        }
    }
    return 1;
}

TEST(bpe_train_matches_hf_trainer_on_corpus) {
    corpus c;
    CHECK_OK(corpus_load(&c));
    CHECK(c.n == 1000);
    static const int32_t vs[] = {300, 800};
    for (int k = 0; k < 2; k++) {
        char name[32], label[64];
        snprintf(name, sizeof name, "hf_%d.json", vs[k]);
        snprintf(label, sizeof label, "corpus V=%d", vs[k]);
        char *p = bpe_path(name), *text = NULL;
        size_t len;
        ss_json_doc *doc = NULL;
        ss_bpe_model *m = NULL;
        CHECK_OK(ss_file_read(p, &text, &len));
        free(p);
        CHECK_OK(ss_json_parse(text, len, name, &doc));
        free(text);
        CHECK_OK(train_corpus(&c, vs[k], 0, &m));
        CHECK(m->n_tokens == vs[k]);
        int ok = same_as_hf(m, ss_json_get(ss_json_root(doc), "model"), label);
        ss_bpe_model_free(m);
        ss_json_free(doc);
        if (!ok) break;
    }
    corpus_free(&c);
}

TEST(bpe_train_matches_hf_trainer_on_tie_heavy_corpora) {
    char *p = bpe_path("stress.jsonl"), *text = NULL;
    size_t len;
    CHECK_OK(ss_file_read(p, &text, &len));
    free(p);
    int cases = 0, ok = 1;
    for (char *line = text, *nl; ok && line < text + len; line = nl + 1) {
        nl = memchr(line, '\n', (size_t)(text + len - line));
        if (!nl) nl = text + len;
        ss_json_doc *doc = NULL;
        ss_status st = ss_json_parse(line, (size_t)(nl - line), "stress.jsonl", &doc);
        if (st) {
            free(text);
            CHECK_OK(st);
        }
        const ss_json *r = ss_json_root(doc), *docs = ss_json_get(r, "docs");
        int64_t V = 0, n_tok = 0;
        ss_json_get_int(r, "vocab_size", &V);
        ss_json_get_int(r, "n_tokens", &n_tok);
        ss_bpe_trainer *t = NULL;
        ss_bpe_model *m = NULL;
        st = ss_bpe_trainer_init(&t);
        for (size_t i = 0; !st && i < docs->len; i++) st = ss_bpe_trainer_add(t, docs->items[i].str, docs->items[i].len);
        if (!st) st = ss_bpe_trainer_train(t, (int32_t)V, &m);
        if (st) {
            ok = 0;
            ss_test_fail(__FILE__, __LINE__, "stress case %d: %s", cases, ss_last_error());
        } else {
            char label[48];
            snprintf(label, sizeof label, "stress case %d (V=%lld)", cases, (long long)V);
            /* Only the merges are stored; the vocabulary is the 257 + merges. */
            const ss_json *merges = ss_json_get(r, "merges");
            ok = m->n_tokens == n_tok && (size_t)m->n_merges == merges->len;
            if (!ok) ss_test_fail(__FILE__, __LINE__, "%s: %d tokens/%d merges, HF %lld/%zu", label, m->n_tokens,
                                  m->n_merges, (long long)n_tok, merges->len);
            for (size_t k = 0; ok && k < merges->len; k++) {
                char got[1100], want[1100];
                merge_text(m, (int32_t)k, got, sizeof got);
                snprintf(want, sizeof want, "%s %s", merges->items[k].items[0].str, merges->items[k].items[1].str);
                if (strcmp(got, want) != 0) {
                    ok = 0;
                    ss_test_fail(__FILE__, __LINE__, "%s: merge %zu is \"%s\", HF \"%s\"", label, k, got, want);
                }
            }
        }
        ss_bpe_model_free(m);
        ss_bpe_trainer_free(t);
        ss_json_free(doc);
        cases++;
    }
    free(text);
    CHECK_MSG(!ok || cases == 30, "%d stress cases", cases);
}

TEST(bpe_train_writes_the_committed_tokenizer_json) {
    /* The file subscope_800.json was written by `subscope train --vocab-size
     * 800` on the corpus; training again must give it byte for byte, in
     * either document order (HF's result does not depend on it either). */
    corpus c;
    CHECK_OK(corpus_load(&c));
    char *p = bpe_path("subscope_800.json"), *want = NULL;
    size_t wlen;
    ss_status st = ss_file_read(p, &want, &wlen);
    free(p);
    if (st) corpus_free(&c);
    CHECK_OK(st);
    for (int rev = 0; rev < 2; rev++) {
        ss_bpe_model *m = NULL;
        char *got = NULL;
        size_t glen = 0;
        st = train_corpus(&c, 800, rev, &m);
        if (!st) st = ss_bpe_model_tokenizer_json(m, &got, &glen);
        ss_bpe_model_free(m);
        int same = !st && glen == wlen && memcmp(got, want, wlen) == 0;
        free(got);
        if (st || !same) {
            free(want);
            corpus_free(&c);
            CHECK_OK(st);
            CHECK_MSG(same, "order %d: tokenizer.json differs from tests/data/bpe/subscope_800.json (%zu vs %zu bytes)",
                      rev, glen, wlen);
        }
    }
    free(want);
    corpus_free(&c);
}

/* Every line of encodings.jsonl: ids of the text under `key`. */
static void check_encodings(const ss_tokenizer *tok, const char *key, const char *label) {
    char *p = bpe_path("encodings.jsonl"), *text = NULL;
    size_t len;
    CHECK_OK(ss_file_read(p, &text, &len));
    free(p);
    int n = 0, bad = 0;
    for (char *line = text, *nl; line < text + len && bad < 3; line = nl + 1) {
        nl = memchr(line, '\n', (size_t)(text + len - line));
        if (!nl) nl = text + len;
        ss_json_doc *doc = NULL;
        if (ss_json_parse(line, (size_t)(nl - line), "encodings.jsonl", &doc)) {
            bad++;
            ss_test_fail(__FILE__, __LINE__, "%s", ss_last_error());
            continue;
        }
        const ss_json *r = ss_json_root(doc), *t = ss_json_get(r, "text"), *ids = ss_json_get(r, key);
        int32_t *got = NULL;
        size_t ng = 0;
        ss_status st = ss_tokenizer_encode(tok, t->str, t->len, &got, &ng);
        int ok = !st && ng == ids->len;
        for (size_t i = 0; ok && i < ng; i++) ok = got[i] == ids->items[i].i;
        if (!ok) {
            bad++;
            ss_test_fail(__FILE__, __LINE__, "%s: \"%.60s\": %zu ids, want %zu (%s)", label, t->str, ng, ids->len,
                         st ? ss_last_error() : "ids differ");
        }
        /* Byte-level BPE loses nothing, "<|endoftext|>" inside text included. */
        char *dec = NULL;
        size_t dl = 0;
        if (ok && (ss_tokenizer_decode(tok, got, ng, &dec, &dl) || dl != t->len || memcmp(dec, t->str, dl))) {
            bad++;
            ss_test_fail(__FILE__, __LINE__, "%s: decode(encode(\"%.60s\")) differs", label, t->str);
        }
        free(dec);
        free(got);
        ss_json_free(doc);
        n++;
    }
    free(text);
    CHECK_MSG(bad || n == 80, "%d encodings", n);
}

TEST(bpe_train_tokenizer_json_encodes_like_hf) {
    ss_tokenizer *tok = NULL;
    char *p = bpe_path("subscope_800.json");
    CHECK_OK(ss_tokenizer_load_json(p, &tok));
    free(p);
    CHECK(ss_tokenizer_vocab_size(tok) == 800 && ss_tokenizer_eos_id(tok) == 0);
    /* "subscope_file": HF loading subscope's file; "hf": HF's own trained tokenizer. */
    check_encodings(tok, "subscope_file", "subscope_800.json");
    check_encodings(tok, "hf", "subscope_800.json vs HF-trained");
    ss_tokenizer_free(tok);
}

TEST(bpe_train_vocab_merges_files_load_the_same) {
    corpus c;
    CHECK_OK(corpus_load(&c));
    ss_bpe_model *m = NULL;
    ss_status st = train_corpus(&c, 800, 0, &m);
    corpus_free(&c);
    CHECK_OK(st);
    char *vj = NULL, *mt = NULL;
    size_t vl = 0, ml = 0;
    st = ss_bpe_model_vocab_json(m, &vj, &vl);
    if (!st) st = ss_bpe_model_merges_txt(m, &mt, &ml);
    ss_bpe_model_free(m);
    char *vp = ss_path_join(ss_test_tmp_dir(), "bpe_vocab.json"), *mp = ss_path_join(ss_test_tmp_dir(), "bpe_merges.txt");
    FILE *f1 = st ? NULL : fopen(vp, "wb"), *f2 = st ? NULL : fopen(mp, "wb");
    if (f1) fwrite(vj, 1, vl, f1), fclose(f1);
    if (f2) fwrite(mt, 1, ml, f2), fclose(f2);
    free(vj);
    free(mt);
    ss_tokenizer *tok = NULL;
    if (!st) st = ss_tokenizer_load_bpe(vp, mp, &tok);
    free(vp);
    free(mp);
    CHECK_OK(st);
    CHECK(ss_tokenizer_vocab_size(tok) == 800 && ss_tokenizer_eos_id(tok) == 0);
    check_encodings(tok, "hf", "vocab.json + merges.txt");
    ss_tokenizer_free(tok);
}

TEST(bpe_train_roundtrip_and_compression) {
    corpus c;
    CHECK_OK(corpus_load(&c));
    ss_bpe_model *m = NULL;
    char *json = NULL;
    size_t jl = 0;
    ss_tokenizer *tok = NULL;
    ss_status st = train_corpus(&c, 600, 0, &m);
    if (!st) st = ss_bpe_model_tokenizer_json(m, &json, &jl);
    if (!st) st = ss_tokenizer_load_json_mem(json, jl, "trained", &tok);
    ss_bpe_model_free(m);
    free(json);
    if (st) corpus_free(&c);
    CHECK_OK(st);
    CHECK(ss_tokenizer_vocab_size(tok) == 600);
    size_t bytes = 0, ids = 0, bad = 0;
    int32_t max_id = -1;
    for (size_t i = 0; i < c.n && !bad; i++) {
        int32_t *out = NULL;
        size_t n = 0;
        char *dec = NULL;
        size_t dl = 0;
        if (ss_tokenizer_encode(tok, c.line[i], c.len[i], &out, &n) || ss_tokenizer_decode(tok, out, n, &dec, &dl) ||
            dl != c.len[i] || memcmp(dec, c.line[i], dl) != 0)
            bad = i + 1;
        for (size_t k = 0; k < n; k++)
            if (out[k] > max_id) max_id = out[k];
        bytes += c.len[i];
        ids += n;
        free(out);
        free(dec);
    }
    ss_tokenizer_free(tok);
    corpus_free(&c);
    CHECK_MSG(!bad, "document %zu does not decode to itself", bad - 1);
    CHECK(max_id > 500 && max_id < 600);
    /* 343 merges on its own training text: about 0.40 tokens per byte (1.0 without merges). */
    CHECK_MSG(ids * 20 < bytes * 9, "%zu ids for %zu bytes", ids, bytes);
}

TEST(bpe_train_deterministic_and_retrainable) {
    corpus c;
    CHECK_OK(corpus_load(&c));
    ss_bpe_trainer *t = NULL;
    ss_status st = ss_bpe_trainer_init(&t);
    for (size_t i = 0; !st && i < 200; i++) st = ss_bpe_trainer_add(t, c.line[i], c.len[i]);
    corpus_free(&c);
    ss_bpe_model *a = NULL, *b = NULL, *s = NULL;
    if (!st) st = ss_bpe_trainer_train(t, 500, &a);
    if (!st) st = ss_bpe_trainer_train(t, 500, &b); /* same trainer again */
    if (!st) st = ss_bpe_trainer_train(t, 400, &s);
    ss_bpe_trainer_free(t);
    int same = !st && a->n_tokens == b->n_tokens && a->n_merges == b->n_merges &&
               memcmp(a->merges, b->merges, (size_t)a->n_merges * sizeof *a->merges) == 0;
    /* A smaller vocabulary is a prefix: training is greedy. */
    int prefix = !st && s->n_merges == 143 && memcmp(a->merges, s->merges, 143 * sizeof *a->merges) == 0;
    ss_bpe_model_free(a);
    ss_bpe_model_free(b);
    ss_bpe_model_free(s);
    CHECK_OK(st);
    CHECK(same);
    CHECK(prefix);
}

TEST(bpe_train_errors) {
    ss_bpe_trainer *t = NULL;
    ss_bpe_model *m = NULL;
    CHECK_OK(ss_bpe_trainer_init(&t));
    CHECK_ERR(ss_bpe_trainer_add(t, "ok \xff bad", 8), SS_ERR_ARG, "not valid UTF-8 at byte offset 3");
    CHECK_ERR(ss_bpe_trainer_add(t, "\xed\xa0\x80", 3), SS_ERR_ARG, "byte offset 0"); /* a surrogate */
    CHECK_ERR(ss_bpe_trainer_train(t, 256, &m), SS_ERR_ARG, "below 257");
    CHECK(m == NULL);
    /* No data: the 257 base tokens and nothing to merge. */
    CHECK_OK(ss_bpe_trainer_train(t, 300, &m));
    CHECK(m->n_tokens == 257 && m->n_merges == 0);
    char *json = NULL;
    size_t jl = 0;
    ss_tokenizer *tok = NULL;
    ss_status st = ss_bpe_model_tokenizer_json(m, &json, &jl);
    if (!st) st = ss_tokenizer_load_json_mem(json, jl, "empty", &tok);
    free(json);
    ss_bpe_model_free(m);
    ss_bpe_trainer_free(t);
    CHECK_OK(st);
    int32_t *ids = NULL;
    size_t n = 0;
    CHECK_OK(ss_tokenizer_encode(tok, "\"\\", 2, &ids, &n)); /* the two characters JSON escapes */
    CHECK(n == 2 && ids[0] == 2 && ids[1] == '\\' - 32);
    free(ids);
    ss_tokenizer_free(tok);
}
