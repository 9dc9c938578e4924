/* Byte-level BPE tokenizer: every golden case (written by Hugging Face
 * `tokenizers`, tests/gen/gen_tokenizer_goldens.py) through both loaders,
 * the tokenizer variants (added-token flags, ByteLevel options, freshly
 * trained files), exact-byte decoding and the error messages. */
#include "test.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "subscope/jobs.h"
#include "subscope/json.h"
#include "subscope/prompts.h"
#include "subscope/tokenizer.h"
#include "subscope/util.h"

static char *data_path(const char *name) { return ss_path_join(ss_test_data_dir(), name); }

static ss_status load_gpt2_json(ss_tokenizer **t) {
    char *p = data_path("gpt2-tokenizer/tokenizer.json");
    ss_status st = ss_tokenizer_load_json(p, t);
    free(p);
    return st;
}

static ss_status load_gpt2_pair(ss_tokenizer **t) {
    char *v = data_path("gpt2-tokenizer/encoder.json");
    char *m = data_path("gpt2-tokenizer/vocab.bpe");
    ss_status st = ss_tokenizer_load_bpe(v, m, t);
    free(v);
    free(m);
    return st;
}

static char *write_tmp(const char *name, const char *text, size_t len) {
    char *p = ss_path_join(ss_test_tmp_dir(), name);
    FILE *f = fopen(p, "wb");
    if (f) {
        fwrite(text, 1, len, f);
        fclose(f);
    }
    return p;
}

/* The goldens, one parsed document per line. */
typedef struct {
    ss_json_doc **docs;
    size_t n;
} goldens;

static ss_status goldens_load(goldens *g) {
    g->docs = NULL;
    g->n = 0;
    char *p = data_path("tokenizer_goldens.jsonl"), *text = NULL;
    size_t len = 0;
    ss_status st = ss_file_read(p, &text, &len);
    size_t pos = 0, line = 0;
    while (st == SS_OK && pos < len) {
        char *nl = memchr(text + pos, '\n', len - pos);
        size_t l = nl ? (size_t)(nl - (text + pos)) : len - pos;
        line++;
        if (l) {
            char what[64];
            snprintf(what, sizeof what, "tokenizer_goldens.jsonl line %zu", line);
            ss_json_doc **nd = realloc(g->docs, (g->n + 1) * sizeof *nd);
            if (!nd) { st = SS_ERR_NOMEM; break; }
            g->docs = nd;
            st = ss_json_parse(text + pos, l, what, &g->docs[g->n]);
            if (st == SS_OK) g->n++;
        }
        pos += l + 1;
    }
    free(text);
    free(p);
    return st;
}

static void goldens_free(goldens *g) {
    for (size_t i = 0; i < g->n; i++) ss_json_free(g->docs[i]);
    free(g->docs);
}

/* Encodes `text` and compares with the golden ids; then checks that decoding
 * gives the text back. Returns 0 and reports on mismatch. */
static int check_case(const ss_tokenizer *t, const char *label, const ss_json *c) {
    const ss_json *text = ss_json_get(c, "text"), *ids = ss_json_get(c, "ids");
    if (!text || !ids || text->type != SS_JSON_STRING || ids->type != SS_JSON_ARRAY) {
        ss_test_fail(__FILE__, __LINE__, "%s: malformed golden line %d", label, c->line);
        return 0;
    }
    int32_t *got = NULL;
    size_t n = 0;
    ss_status st = ss_tokenizer_encode(t, text->str, text->len, &got, &n);
    if (st != SS_OK) {
        ss_test_fail(__FILE__, __LINE__, "%s: encode failed: %s", label, ss_last_error());
        return 0;
    }
    int ok = n == ids->len;
    for (size_t i = 0; ok && i < n; i++) ok = got[i] == ids->items[i].i;
    if (!ok) {
        char buf[400];
        size_t o = 0;
        for (size_t i = 0; i < n && o < sizeof buf - 16; i++) o += (size_t)snprintf(buf + o, sizeof buf - o, "%d ", got[i]);
        buf[o] = 0;
        char want[400];
        o = 0;
        for (size_t i = 0; i < ids->len && o < sizeof want - 16; i++)
            o += (size_t)snprintf(want + o, sizeof want - o, "%lld ", (long long)ids->items[i].i);
        want[o] = 0;
        ss_test_fail(__FILE__, __LINE__, "%s: text \"%.80s\" (%zu bytes): got [%s] want [%s]", label, text->str,
                     text->len, buf, want);
        free(got);
        return 0;
    }
    char *dec = NULL;
    size_t dlen = 0;
    st = ss_tokenizer_decode(t, got, n, &dec, &dlen);
    free(got);
    if (st != SS_OK) {
        ss_test_fail(__FILE__, __LINE__, "%s: decode failed: %s", label, ss_last_error());
        return 0;
    }
    /* Unknown bytes become unk or vanish in the raw trained tokenizer, the
     * prefix space is text that was not there, and lstrip/rstrip added tokens
     * swallow white space: only the other tokenizers must give the text back. */
    int need_roundtrip = !strstr(label, "trained_raw") && !strstr(label, "trained_nounk") &&
                         !strstr(label, "added") && !strstr(label, "prefix");
    ok = !need_roundtrip || (dlen == text->len && memcmp(dec, text->str, dlen) == 0);
    free(dec);
    if (!ok) ss_test_fail(__FILE__, __LINE__, "%s: decode(encode(\"%.80s\")) differs", label, text->str);
    return ok;
}

static void run_gpt2_goldens(ss_status (*load)(ss_tokenizer **), const char *label) {
    ss_tokenizer *t = NULL;
    goldens g;
    CHECK_OK(load(&t));
    ss_status st = goldens_load(&g);
    if (st != SS_OK) {
        ss_tokenizer_free(t);
        CHECK_OK(st);
    }
    size_t n = 0, bad = 0;
    for (size_t i = 0; i < g.n && bad < 5; i++) {
        const ss_json *c = ss_json_root(g.docs[i]);
        if (!ss_json_get(c, "text") || ss_json_get(c, "variant")) continue;
        n++;
        if (!check_case(t, label, c)) bad++;
    }
    goldens_free(&g);
    ss_tokenizer_free(t);
    CHECK_MSG(n >= 400, "only %zu GPT-2 golden cases", n);
}

TEST(tokenizer_goldens_tokenizer_json) { run_gpt2_goldens(load_gpt2_json, "tokenizer.json"); }
TEST(tokenizer_goldens_encoder_json_vocab_bpe) { run_gpt2_goldens(load_gpt2_pair, "encoder.json+vocab.bpe"); }

/* Every variant: base file + patch members, then its cases. */
TEST(tokenizer_goldens_variants) {
    goldens g;
    CHECK_OK(goldens_load(&g));
    size_t n_variants = 0, n_cases = 0, bad = 0;
    for (size_t i = 0; i < g.n && bad < 5; i++) {
        const ss_json *d = ss_json_root(g.docs[i]);
        const char *name, *base, *patch;
        if (ss_json_get_str(d, "variant_def", &name) != 1) continue;
        if (ss_json_get_str(d, "base", &base) != 1 || ss_json_get_str(d, "patch", &patch) != 1) {
            ss_test_fail(__FILE__, __LINE__, "malformed variant_def line");
            break;
        }
        char *p = data_path(base), *text = NULL;
        size_t len = 0;
        ss_status st = ss_file_read(p, &text, &len);
        free(p);
        if (st != SS_OK) {
            ss_test_fail(__FILE__, __LINE__, "%s", ss_last_error());
            break;
        }
        while (len && (text[len - 1] == '\n' || text[len - 1] == ' ')) len--;
        char *doc = NULL;
        size_t dlen = len;
        if (*patch) {
            doc = malloc(len + strlen(patch) + 8);
            memcpy(doc, text, len - 1); /* drop the final '}' */
            dlen = len - 1;
            dlen += (size_t)sprintf(doc + dlen, ", %s}", patch);
        }
        ss_tokenizer *t = NULL;
        st = ss_tokenizer_load_json_mem(doc ? doc : text, dlen, name, &t);
        free(doc);
        free(text);
        if (st != SS_OK) {
            ss_test_fail(__FILE__, __LINE__, "variant %s: %s", name, ss_last_error());
            bad++;
            continue;
        }
        n_variants++;
        char label[64];
        snprintf(label, sizeof label, "variant %s", name);
        for (size_t j = 0; j < g.n; j++) {
            const ss_json *c = ss_json_root(g.docs[j]);
            const char *v;
            if (ss_json_get_str(c, "variant", &v) != 1 || strcmp(v, name) != 0) continue;
            n_cases++;
            if (!check_case(t, label, c) && ++bad >= 5) break;
        }
        ss_tokenizer_free(t);
    }
    goldens_free(&g);
    CHECK(bad == 0);
    CHECK_MSG(n_variants == 6 && n_cases > 500, "%zu variants, %zu cases", n_variants, n_cases);
}

TEST(tokenizer_decode_exact_bytes) {
    ss_tokenizer *t = NULL;
    goldens g;
    CHECK_OK(load_gpt2_json(&t));
    CHECK_OK(goldens_load(&g));
    size_t n = 0;
    int ok = 1;
    for (size_t i = 0; i < g.n && ok; i++) {
        const ss_json *c = ss_json_root(g.docs[i]);
        const ss_json *ids = ss_json_get(c, "decode_ids");
        const char *hex;
        if (!ids || ss_json_get_str(c, "bytes_hex", &hex) != 1) continue;
        n++;
        int32_t v[64];
        for (size_t k = 0; k < ids->len && k < 64; k++) v[k] = (int32_t)ids->items[k].i;
        char *out = NULL;
        size_t len = 0;
        ss_status st = ss_tokenizer_decode(t, v, ids->len, &out, &len);
        ok = st == SS_OK && len * 2 == strlen(hex);
        for (size_t k = 0; ok && k < len; k++) {
            unsigned b;
            sscanf(hex + 2 * k, "%2x", &b);
            ok = (unsigned char)out[k] == b;
        }
        if (ok) ok = out[len] == 0;
        if (!ok) ss_test_fail(__FILE__, __LINE__, "decode case %zu (line %d): wrong bytes", n, c->line);
        free(out);
    }
    goldens_free(&g);
    ss_tokenizer_free(t);
    CHECK(ok && n >= 30);
}

TEST(tokenizer_vocab_and_special_ids) {
    ss_tokenizer *a = NULL, *b = NULL;
    CHECK_OK(load_gpt2_json(&a));
    ss_status st = load_gpt2_pair(&b);
    if (st != SS_OK) ss_tokenizer_free(a);
    CHECK_OK(st);
    int ok = 1;
    ss_tokenizer *ts[2] = {a, b};
    for (int i = 0; i < 2; i++) {
        const ss_tokenizer *t = ts[i];
        ok &= ss_tokenizer_vocab_size(t) == 50257;
        ok &= ss_tokenizer_eos_id(t) == 50256;
        ok &= ss_tokenizer_token_to_id(t, "<|endoftext|>") == 50256;
        ok &= ss_tokenizer_token_to_id(t, "Ġthe") == 262;
        ok &= ss_tokenizer_token_to_id(t, "no such token") == -1;
        const char *s = ss_tokenizer_id_to_token(t, 262);
        ok &= s && strcmp(s, "Ġthe") == 0;
        s = ss_tokenizer_id_to_token(t, 50256);
        ok &= s && strcmp(s, "<|endoftext|>") == 0;
        ok &= ss_tokenizer_id_to_token(t, 50257) == NULL && ss_tokenizer_id_to_token(t, -1) == NULL;
    }
    ss_tokenizer_free(a);
    ss_tokenizer_free(b);
    CHECK(ok);
}

TEST(tokenizer_load_dir) {
    ss_tokenizer *t = NULL;
    char *d = data_path("gpt2-tokenizer");
    ss_status st = ss_tokenizer_load_dir(d, &t);
    free(d);
    CHECK_OK(st);
    ss_tokenizer_free(t);
    t = NULL;
    /* A directory with only the encoder.json + vocab.bpe pair. */
    char *dir = ss_path_join(ss_test_tmp_dir(), "pair_only");
    CHECK(mkdir(dir, 0700) == 0 || access(dir, F_OK) == 0);
    const char *names[] = {"encoder.json", "vocab.bpe"};
    for (int i = 0; i < 2; i++) {
        char *src = ss_path_join(ss_test_data_dir(), "gpt2-tokenizer"), *src2 = ss_path_join(src, names[i]);
        char *dst = ss_path_join(dir, names[i]), *buf = NULL;
        size_t len = 0;
        st = ss_file_read(src2, &buf, &len);
        FILE *f = st == SS_OK ? fopen(dst, "wb") : NULL;
        int r = f && fwrite(buf, 1, len, f) == len;
        if (f) r &= fclose(f) == 0;
        free(src);
        free(src2);
        free(dst);
        free(buf);
        CHECK(r);
    }
    st = ss_tokenizer_load_dir(dir, &t);
    CHECK_OK(st);
    int32_t *ids = NULL;
    size_t n = 0;
    st = ss_tokenizer_encode(t, "Hello world<|endoftext|>", 24, &ids, &n);
    ss_tokenizer_free(t);
    CHECK_OK(st);
    CHECK(n == 3 && ids[0] == 15496 && ids[1] == 995 && ids[2] == 50256);
    free(ids);
    char *empty = ss_path_join(ss_test_tmp_dir(), "empty_dir");
    CHECK(mkdir(empty, 0700) == 0 || access(empty, F_OK) == 0);
    CHECK_ERR(ss_tokenizer_load_dir(empty, &t), SS_ERR_IO, "empty_dir: no tokenizer.json");
    free(empty);
    free(dir);
}

TEST(tokenizer_error_missing_file) {
    ss_tokenizer *t = NULL;
    CHECK_ERR(ss_tokenizer_load_json("/nonexistent/dir/tokenizer.json", &t), SS_ERR_IO, "/nonexistent/dir/tokenizer.json");
    char *v = data_path("gpt2-tokenizer/encoder.json");
    CHECK_ERR(ss_tokenizer_load_bpe(v, "/nonexistent/merges.txt", &t), SS_ERR_IO, "/nonexistent/merges.txt");
    free(v);
    CHECK(t == NULL);
}

TEST(tokenizer_error_bad_json) {
    const char *doc = "{\n  \"model\": {\n    \"type\": \"BPE\",\n    \"vocab\": {\"a\": 0,}\n  }\n}\n";
    char *p = write_tmp("bad.json", doc, strlen(doc));
    ss_tokenizer *t = NULL;
    char want[300];
    snprintf(want, sizeof want, "%s:4:", p);
    CHECK_ERR(ss_tokenizer_load_json(p, &t), SS_ERR_FORMAT, want);
    free(p);
}

#define MINI_HEAD "{\"pre_tokenizer\": {\"type\": \"ByteLevel\", \"add_prefix_space\": false},\n"
#define MINI_VOCAB "\"vocab\": {\"a\": 0, \"b\": 1, \"ab\": 2, \"Ġ\": 3}"

static ss_status load_mini(const char *doc, ss_tokenizer **t) {
    return ss_tokenizer_load_json_mem(doc, strlen(doc), "mini.json", t);
}

TEST(tokenizer_error_unsupported) {
    ss_tokenizer *t = NULL;
    CHECK_ERR(load_mini(MINI_HEAD "\"model\": {\"type\": \"WordPiece\", \"vocab\": {\"a\": 0}}}", &t), SS_ERR_UNSUPPORTED,
              "model type \"WordPiece\"");
    CHECK_ERR(load_mini(MINI_HEAD "\"model\": {\"type\": \"Unigram\", \"vocab\": []}}", &t), SS_ERR_UNSUPPORTED, "\"Unigram\"");
    CHECK_ERR(load_mini(MINI_HEAD "\"normalizer\": {\"type\": \"NFC\"}, \"model\": {\"type\": \"BPE\", " MINI_VOCAB
                                  ", \"merges\": []}}",
                        &t),
              SS_ERR_UNSUPPORTED, "normalizer type \"NFC\"");
    CHECK_ERR(load_mini("{\"pre_tokenizer\": {\"type\": \"Whitespace\"}, \"model\": {\"type\": \"BPE\", " MINI_VOCAB
                        ", \"merges\": []}}",
                        &t),
              SS_ERR_UNSUPPORTED, "pre_tokenizer type \"Whitespace\"");
    CHECK_ERR(load_mini("{\"model\": {\"type\": \"BPE\", " MINI_VOCAB ", \"merges\": []}}", &t), SS_ERR_UNSUPPORTED,
              "no pre_tokenizer");
    CHECK_ERR(load_mini(MINI_HEAD "\"post_processor\": {\"type\": \"TemplateProcessing\"}, \"model\": {\"type\": \"BPE\", " MINI_VOCAB
                                  ", \"merges\": []}}",
                        &t),
              SS_ERR_UNSUPPORTED, "post_processor type \"TemplateProcessing\"");
    CHECK_ERR(load_mini(MINI_HEAD "\"model\": {\"type\": \"BPE\", \"dropout\": 0.1, " MINI_VOCAB ", \"merges\": []}}", &t),
              SS_ERR_UNSUPPORTED, "dropout");
    CHECK_ERR(load_mini(MINI_HEAD "\"model\": {\"type\": \"BPE\", \"continuing_subword_prefix\": \"##\", " MINI_VOCAB
                                  ", \"merges\": []}}",
                        &t),
              SS_ERR_UNSUPPORTED, "continuing_subword_prefix \"##\"");
    CHECK(t == NULL);
    /* The minimal valid document loads, with both merge layouts. */
    CHECK_OK(load_mini(MINI_HEAD "\"model\": {\"type\": \"BPE\", " MINI_VOCAB ", \"merges\": [\"a b\"]}}", &t));
    int32_t *ids = NULL;
    size_t n = 0;
    ss_status st = ss_tokenizer_encode(t, "ab ab", 5, &ids, &n);
    ss_tokenizer_free(t);
    CHECK_OK(st);
    CHECK(n == 3 && ids[0] == 2 && ids[1] == 3 && ids[2] == 2); /* "Ġab" is not in the vocab, so Ġ + ab */
    free(ids);
    CHECK_OK(load_mini(MINI_HEAD "\"model\": {\"type\": \"BPE\", " MINI_VOCAB ", \"merges\": [[\"a\", \"b\"]]}}", &t));
    st = ss_tokenizer_encode(t, "ba", 2, &ids, &n);
    if (st != SS_OK) ss_tokenizer_free(t);
    CHECK_OK(st);
    CHECK(n == 2 && ids[0] == 1 && ids[1] == 0);
    free(ids);
    /* Bytes outside the vocabulary vanish without an unk token (as in HF),
     * so a word can encode to nothing; twice, to go through the word cache. */
    int ok = 1;
    for (int r = 0; r < 2; r++) {
        ok &= ss_tokenizer_encode(t, "\n\nab", 4, &ids, &n) == SS_OK && n == 1 && ids[0] == 2;
        free(ids);
    }
    ss_tokenizer_free(t);
    CHECK(ok);
}

TEST(tokenizer_error_merge_unknown_token) {
    ss_tokenizer *t = NULL;
    CHECK_ERR(load_mini(MINI_HEAD "\"model\": {\"type\": \"BPE\", " MINI_VOCAB ",\n\"merges\": [\"a b\", \"a c\"]}}", &t),
              SS_ERR_FORMAT, "merge token \"c\" is not in the vocabulary");
    CHECK_ERR(load_mini(MINI_HEAD "\"model\": {\"type\": \"BPE\", " MINI_VOCAB ", \"merges\": [[\"b\", \"a\"]]}}", &t),
              SS_ERR_FORMAT, "merged token \"ba\" is not in the vocabulary");
    CHECK_ERR(load_mini(MINI_HEAD "\"model\": {\"type\": \"BPE\", " MINI_VOCAB ", \"merges\": [\"a b c\"]}}", &t),
              SS_ERR_FORMAT, "not two tokens");
    CHECK_ERR(load_mini(MINI_HEAD "\"model\": {\"type\": \"BPE\", " MINI_VOCAB ", \"merges\": [\"a b\", [\"a\", \"b\"]]}}", &t),
              SS_ERR_FORMAT, "model.merges[1]");
    /* The same in a merges.txt: the line is named. */
    const char *vocab = "{\"a\": 0, \"b\": 1, \"ab\": 2}";
    const char *merges = "#version: 0.2\na b\nb x\n";
    char *vp = write_tmp("mini_vocab.json", vocab, strlen(vocab));
    char *mp = write_tmp("mini_merges.txt", merges, strlen(merges));
    CHECK_ERR(ss_tokenizer_load_bpe(vp, mp, &t), SS_ERR_FORMAT, "line 3: merge token \"x\"");
    const char *merges2 = "a b\n\n";
    free(mp);
    mp = write_tmp("mini_merges2.txt", merges2, strlen(merges2));
    CHECK_ERR(ss_tokenizer_load_bpe(vp, mp, &t), SS_ERR_FORMAT, ":2:");
    free(vp);
    free(mp);
    CHECK(t == NULL);
}

TEST(tokenizer_error_bad_added_tokens) {
    ss_tokenizer *t = NULL;
    CHECK_ERR(load_mini(MINI_HEAD "\"added_tokens\": [{\"id\": 9, \"content\": \"<x>\"}], \"model\": {\"type\": \"BPE\", " MINI_VOCAB
                                  ", \"merges\": []}}",
                        &t),
              SS_ERR_UNSUPPORTED, "\"<x>\" has id 9 but Hugging Face tokenizers would give it id 4");
    CHECK_ERR(load_mini(MINI_HEAD "\"added_tokens\": [{\"id\": 4, \"content\": \"<x>\"}, {\"id\": 4, \"content\": \"<x>\"}], "
                                  "\"model\": {\"type\": \"BPE\", " MINI_VOCAB ", \"merges\": []}}",
                        &t),
              SS_ERR_FORMAT, "listed twice");
    CHECK_ERR(load_mini(MINI_HEAD "\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 0}, \"merges\": []}}", &t),
              SS_ERR_FORMAT, "both have id 0");
    CHECK_ERR(load_mini(MINI_HEAD "\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 99999999}, \"merges\": []}}", &t),
              SS_ERR_UNSUPPORTED, "sparse");
    CHECK_ERR(load_mini(MINI_HEAD "\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": -1}, \"merges\": []}}", &t),
              SS_ERR_FORMAT, "id -1");
    CHECK_ERR(load_mini(MINI_HEAD "\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": \"0\"}, \"merges\": []}}", &t),
              SS_ERR_FORMAT, "must be an integer");
    CHECK(t == NULL);
}

TEST(tokenizer_error_invalid_utf8_and_unknown_id) {
    ss_tokenizer *t = NULL;
    CHECK_OK(load_gpt2_json(&t));
    int32_t *ids = NULL;
    size_t n = 0;
    const char *cases[][2] = {{"abc\xff", "byte offset 3"},          {"ab\xc3", "byte offset 2"},
                              {"\xe0\x80\x80 overlong", "byte offset 0"}, {"x\xed\xa0\x80 surrogate", "byte offset 1"},
                              {"12\xf4\x90\x80\x80", "byte offset 2"},   {"\x80", "byte offset 0"}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ss_error_clear();
        ss_status st = ss_tokenizer_encode(t, cases[i][0], strlen(cases[i][0]), &ids, &n);
        if (st != SS_ERR_ARG || !strstr(ss_last_error(), cases[i][1]) || ids != NULL) {
            ss_tokenizer_free(t);
            CHECK_MSG(0, "case %zu: %s: %s", i, ss_status_name(st), ss_last_error());
        }
    }
    int32_t bad[] = {15496, 50257};
    char *out = NULL;
    size_t len = 0;
    ss_error_clear();
    ss_status st = ss_tokenizer_decode(t, bad, 2, &out, &len);
    int ok = st == SS_ERR_ARG && strstr(ss_last_error(), "id 50257") && out == NULL;
    int32_t neg = -5;
    st = ss_tokenizer_decode(t, &neg, 1, &out, &len);
    ok &= st == SS_ERR_ARG && strstr(ss_last_error(), "id -5") != NULL;
    /* Empty input is fine both ways. */
    ok &= ss_tokenizer_encode(t, "", 0, &ids, &n) == SS_OK && n == 0;
    free(ids);
    ok &= ss_tokenizer_decode(t, NULL, 0, &out, &len) == SS_OK && len == 0 && out && out[0] == 0;
    free(out);
    ss_tokenizer_free(t);
    CHECK(ok);
}

/* Long inputs: beyond the word cache, long runs for the regex, and a text
 * made by repeating a golden must give the golden's ids repeated when the
 * pieces cannot interact (each ends in a newline that the next does not
 * extend... so we only compare against encoding the pieces separately). */
TEST(tokenizer_long_inputs) {
    ss_tokenizer *t = NULL;
    CHECK_OK(load_gpt2_json(&t));
    size_t len = 200000;
    char *s = malloc(len + 2);
    int ok = 1;
    int32_t *ids = NULL;
    size_t n = 0;
    /* 200 KB of spaces then a letter: one token per... whitespace run splits as
     * [spaces-1][" x"]. */
    memset(s, ' ', len);
    s[len] = 'x';
    ok &= ss_tokenizer_encode(t, s, len + 1, &ids, &n) == SS_OK;
    ok &= n > 1 && ids[n - 1] == 2124; /* " x" */
    free(ids);
    /* 200 KB of one letter: a single pre-token merged by BPE. */
    memset(s, 'a', len);
    ok &= ss_tokenizer_encode(t, s, len, &ids, &n) == SS_OK;
    char *dec = NULL;
    size_t dlen = 0;
    ok &= ok && ss_tokenizer_decode(t, ids, n, &dec, &dlen) == SS_OK && dlen == len && memcmp(dec, s, len) == 0;
    free(dec);
    free(ids);
    free(s);
    ss_tokenizer_free(t);
    CHECK_MSG(ok, "%s", ss_last_error());
}

typedef struct {
    const ss_tokenizer *t;
    const char *text;
    size_t len;
    int32_t *ids;
    size_t n;
    ss_status st;
} enc_job;

static void *enc_thread(void *arg) {
    enc_job *j = arg;
    for (int r = 0; r < 3; r++) {
        free(j->ids);
        j->st = ss_tokenizer_encode(j->t, j->text, j->len, &j->ids, &j->n);
        if (j->st != SS_OK) break;
    }
    return NULL;
}

TEST(tokenizer_concurrent_encode) {
    ss_tokenizer *t = NULL;
    CHECK_OK(load_gpt2_json(&t));
    goldens g;
    ss_status st = goldens_load(&g);
    if (st != SS_OK) ss_tokenizer_free(t);
    CHECK_OK(st);
    /* Concatenate the GPT-2 cases into one text. */
    size_t cap = 1 << 20, len = 0;
    char *text = malloc(cap);
    for (size_t i = 0; i < g.n; i++) {
        const ss_json *c = ss_json_root(g.docs[i]), *tx = ss_json_get(c, "text");
        if (!tx || ss_json_get(c, "variant") || len + tx->len > cap) continue;
        memcpy(text + len, tx->str, tx->len);
        len += tx->len;
    }
    enc_job jobs[4];
    pthread_t th[4];
    for (int i = 0; i < 4; i++) {
        jobs[i] = (enc_job){t, text, len, NULL, 0, SS_OK};
        pthread_create(&th[i], NULL, enc_thread, &jobs[i]);
    }
    for (int i = 0; i < 4; i++) pthread_join(th[i], NULL);
    int ok = 1;
    for (int i = 0; i < 4; i++) {
        ok &= jobs[i].st == SS_OK && jobs[i].n == jobs[0].n && memcmp(jobs[i].ids, jobs[0].ids, jobs[0].n * 4) == 0;
    }
    char *dec = NULL;
    size_t dlen = 0;
    ok &= ss_tokenizer_decode(t, jobs[0].ids, jobs[0].n, &dec, &dlen) == SS_OK && dlen == len &&
          memcmp(dec, text, len) == 0;
    free(dec);
    for (int i = 0; i < 4; i++) free(jobs[i].ids);
    free(text);
    goldens_free(&g);
    ss_tokenizer_free(t);
    CHECK(ok);
}

/* trace's --answer (ss_answer_token_id) and a prompt file's "answer" (ss_prompt_answer_ids) are the
 * first id of the tokenizer's encoding of the text, as trace's own encoding of --answer was: with a
 * leading space, without, non-ASCII, and a first token of several; GPT-2's byte-level BPE and the
 * tiny Llama's tokenizer (a leading space is its own piece there). */
TEST(answer_ids_of_trace_and_prompt_files_agree) {
    static const char *const answers[] = {" moo", "moo", "\xc3\xa9t\xc3\xa9", " na\xc3\xafve", "\xe6\x97\xa5\xe6\x9c\xac",
                                          "  two spaces", "\n"};
    const size_t na = sizeof answers / sizeof *answers;
    char *path = ss_path_join(ss_test_tmp_dir(), "answers.jsonl");
    FILE *f = path ? fopen(path, "w") : NULL;
    CHECK(f);
    for (size_t i = 0; i < na; i++) {
        fputs("{\"text\": \"x\", \"answer\": ", f);
        ss_json_write_str(f, answers[i], strlen(answers[i]));
        fputs("}\n", f);
    }
    CHECK(fclose(f) == 0);
    ss_prompts *p = NULL;
    ss_status st = ss_prompts_read(path, &p);
    free(path);
    CHECK_OK(st);
    CHECK(p->n == (int64_t)na);
    const char *dirs[] = {"gpt2-tokenizer", "llama-gguf/hf"};
    int bad = 0, multi = 0;
    for (int d = 0; d < 2 && !bad; d++) {
        ss_tokenizer *t = NULL;
        char *dir = data_path(dirs[d]);
        st = ss_tokenizer_load_dir(dir, &t);
        free(dir);
        if (st) ss_prompts_free(p);
        CHECK_OK(st);
        for (size_t i = 0; i < na; i++) {
            int32_t *ids = NULL, a_trace = -2, a_file = -3;
            size_t n = 0;
            if (ss_tokenizer_encode(t, answers[i], strlen(answers[i]), &ids, &n) || !n ||
                ss_answer_token_id(t, answers[i], &a_trace) || ss_prompt_answer_ids(t, p, &p->items[i], &a_file, NULL) ||
                a_trace != ids[0] || a_file != ids[0]) {
                ss_test_fail(__FILE__, __LINE__, "%s, answer %zu: encoding's first id %d, trace's %d, the file's %d (%s)",
                             dirs[d], i, n ? ids[0] : -1, a_trace, a_file, ss_last_error());
                bad = 1;
            }
            multi += n > 1;
            free(ids);
        }
        ss_tokenizer_free(t);
    }
    ss_prompts_free(p);
    CHECK(multi > 0); /* some answer's first token is not the whole of it */
}
