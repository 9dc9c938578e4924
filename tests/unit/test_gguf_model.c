/* llama-architecture GGUF files as Hugging Face models (src/model/gguf_model.c),
 * against tests/data/llama-gguf/ from tests/gen/gen_llama_gguf.py: the same
 * random-weight LlamaForCausalLM as a Hugging Face directory (hf/) and as GGUF
 * files in F32, F16, Q8_0 and Q4_1 written the way llama.cpp's converter
 * writes them (rotary row permutation of attn_q/attn_k included); SmolLM2's
 * own tokenizer (a tokenizer-only GGUF copied from SmolLM2-135M-Instruct's)
 * against ids from Hugging Face `tokenizers`. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "subscope/backend.h"
#include "subscope/config.h"
#include "subscope/forward.h"
#include "subscope/gguf.h"
#include "subscope/gguf_model.h"
#include "subscope/json.h"
#include "subscope/model.h"
#include "subscope/safetensors.h"
#include "subscope/tokenizer.h"
#include "subscope/util.h"
#include "test.h"

static char *dpath(const char *name) {
    char rel[256];
    snprintf(rel, sizeof rel, "llama-gguf/%s", name);
    return ss_path_join(ss_test_data_dir(), rel);
}

static ss_status open_model(const char *file, ss_config *cfg, ss_weights **w, ss_tokenizer **tok) {
    char *p = dpath(file);
    ss_status s = p ? ss_gguf_model_open(p, cfg, w, tok) : SS_ERR_NOMEM;
    free(p);
    return s;
}

static const char *const kFiles[] = {"tiny-f32.gguf", "tiny-f16.gguf", "tiny-q8_0.gguf", "tiny-q4_1.gguf"};

TEST(gguf_model_config_equals_hf_config) {
    ss_config hf;
    char *p = dpath("hf/config.json");
    ss_status s = ss_config_load(p, &hf);
    free(p);
    CHECK_OK(s);
    for (int f = 0; f < 4; f++) {
        ss_config c;
        ss_weights *w = NULL;
        CHECK_OK(open_model(kFiles[f], &c, &w, NULL));
        ss_weights_free(w);
        CHECK_MSG(!strcmp(c.arch, hf.arch) && c.family == SS_FAMILY_LLAMA && c.family == hf.family, "%s", kFiles[f]);
        CHECK(c.n_layer == hf.n_layer && c.n_head == hf.n_head && c.n_embd == hf.n_embd);
        CHECK(c.n_positions == hf.n_positions && c.vocab_size == hf.vocab_size && c.n_inner == hf.n_inner);
        CHECK(c.n_kv_head == hf.n_kv_head && c.n_kv_head == 2 && c.d_head == hf.d_head);
        /* GGUF stores the epsilon as float32 (1e-5 becomes 9.99999975e-06);
         * Hugging Face adds it to a float32 tensor, i.e. uses the same float. */
        CHECK((float)c.ln_eps == (float)hf.ln_eps);
        CHECK(c.rope_theta == hf.rope_theta && c.rope_theta == 50000.0);
        CHECK(c.rope_type == hf.rope_type && c.rope_type == SS_ROPE_NONE);
        CHECK(c.act == hf.act && c.tie_word_embeddings == hf.tie_word_embeddings && !c.tie_word_embeddings);
        CHECK(c.scale_attn_weights == hf.scale_attn_weights);
        CHECK(c.qkv_bias == hf.qkv_bias && c.o_bias == hf.o_bias && c.mlp_bias == hf.mlp_bias);
        CHECK(c.bos_token_id == hf.bos_token_id && c.eos_token_id == hf.eos_token_id);
        CHECK(c.n_eos == hf.n_eos && c.n_eos == 1 && c.eos_ids[0] == c.eos_token_id);
    }
}

/* tiny-f32.gguf with tokenizer.ggml.eot_token_id = eot added in front of its
 * keys, and a general.comment whose length makes the two 96 bytes: the data
 * section moves by a multiple of the alignment (32), so offsets stay valid. */
static uint8_t *with_eot(const uint8_t *in, size_t n, uint32_t eot, size_t *out_n) {
    static const char k1[] = "tokenizer.ggml.eot_token_id", k2[] = "general.comment";
    const size_t kv1 = 8 + strlen(k1) + 4 + 4, kv2 = 96 - kv1, vlen = kv2 - (8 + strlen(k2) + 4 + 8);
    uint8_t *b = malloc(n + 96), *q = b;
    if (!b) return NULL;
    memcpy(q, in, 24), q += 24;
    uint64_t nkv;
    memcpy(&nkv, b + 16, 8), nkv += 2, memcpy(b + 16, &nkv, 8);
    uint64_t l = strlen(k1);
    uint32_t ty = 4; /* UINT32 */
    memcpy(q, &l, 8), q += 8, memcpy(q, k1, l), q += l, memcpy(q, &ty, 4), q += 4, memcpy(q, &eot, 4), q += 4;
    l = strlen(k2), ty = 8; /* STRING */
    uint64_t vl = vlen;
    memcpy(q, &l, 8), q += 8, memcpy(q, k2, l), q += l, memcpy(q, &ty, 4), q += 4, memcpy(q, &vl, 8), q += 8;
    memset(q, 'x', vlen), q += vlen;
    memcpy(q, in + 24, n - 24);
    *out_n = n + 96;
    return b;
}

TEST(gguf_model_eot_is_an_eos_id) {
    char *p = dpath("tiny-f32.gguf");
    char *raw = NULL;
    size_t n = 0;
    ss_status s = p ? ss_file_read(p, &raw, &n) : SS_ERR_NOMEM;
    free(p);
    CHECK_OK(s);
    for (int v = 0; v < 2 && raw; v++) {
        size_t m = 0;
        uint8_t *b = with_eot((const uint8_t *)raw, n, v ? 2 : 5, &m); /* 2 is the file's eos */
        CHECK(b != NULL);
        ss_gguf *g = NULL;
        ss_config c;
        CHECK_OK(ss_gguf_parse(b, m, "eot.gguf", &g));
        CHECK_OK(ss_gguf_model_config(g, &c));
        CHECK(c.eos_token_id == 2 && c.eos_ids[0] == 2);
        CHECK_MSG(v ? c.n_eos == 1 : c.n_eos == 2 && c.eos_ids[1] == 5 && ss_config_is_eos(&c, 5), "variant %d: %d ids", v, c.n_eos);
        ss_gguf_free(g);
        free(b);
    }
    free(raw);
}

/* Largest error the file's type allows for element x of a block (32
 * consecutive elements of a row) whose min, max and largest magnitude are
 * given, from how gguf-py quantises:
 *   F16: round to nearest, relative error 2^-11 (2^-25 absolute below the
 *        normal range).
 *   Q8_0: d = amax/127, q = round(x/d), d stored as f16: |q*d16 - x| <= d/2
 *        (rounding q) + 127*d*2^-11 (rounding d).
 *   Q4_1: d = (max-min)/15, q = trunc((x-min)/d + 0.5), d and min stored as
 *        f16: d/2 + 15*d*2^-11 + |min|*2^-11.
 * Plus a few float32 ulps for the arithmetic itself. */
static double quant_bound(int f, float x, float mn, float mx, float amax) {
    const double u = 1.0 / 2048, slack = 4e-7 * (amax + 1e-30);
    switch (f) {
    case 1: return fabs(x) * u + 0x1p-25;
    case 2: {
        double d = amax / 127.0;
        return d * (0.5 + 127 * u) + slack;
    }
    case 3: {
        double d = ((double)mx - mn) / 15.0;
        return d * (0.5 + 15 * u) + fabs(mn) * u + slack;
    }
    default: return 0;
    }
}

/* Every tensor of each GGUF against the safetensors one: the same names and
 * shapes, F32 bit for bit (which also proves the permutation is undone),
 * 1-D tensors (kept F32 by the converter) exact in every file, matrices
 * within quant_bound. */
TEST(gguf_model_tensors_equal_safetensors) {
    char *dir = dpath("hf");
    ss_weights *ref = NULL;
    ss_status s = ss_weights_open(dir, &ref);
    free(dir);
    CHECK_OK(s);
    char why[256] = "";
    int ok = 1;
    for (int f = 0; f < 4 && ok; f++) {
        ss_config c;
        ss_weights *w = NULL;
        s = open_model(kFiles[f], &c, &w, NULL);
        if (s != SS_OK) {
            snprintf(why, sizeof why, "%s: %s", kFiles[f], ss_last_error());
            ok = 0;
            break;
        }
        if (ss_weights_count(w) != ss_weights_count(ref)) {
            snprintf(why, sizeof why, "%s: %zu tensors, safetensors %zu", kFiles[f], ss_weights_count(w),
                     ss_weights_count(ref));
            ok = 0;
        }
        double worst = 0; /* largest error / bound */
        size_t n_inexact = 0;
        for (size_t i = 0; ok && i < ss_weights_count(ref); i++) {
            const ss_tensor_info *r = ss_weights_at(ref, i), *t = ss_weights_find(w, r->name);
            if (!t || t->dtype != SS_DTYPE_F32 || t->ndim != r->ndim || t->nbytes != r->nbytes ||
                memcmp(t->shape, r->shape, (size_t)r->ndim * sizeof *r->shape)) {
                snprintf(why, sizeof why, "%s: tensor %s missing or of another shape", kFiles[f], r->name);
                ok = 0;
                break;
            }
            size_t n = r->nbytes / 4, row = (size_t)r->shape[r->ndim - 1];
            float *a = malloc(r->nbytes), *b = malloc(r->nbytes);
            ss_tensor_to_f32(r, a, n);
            ss_tensor_to_f32(t, b, n);
            for (size_t j0 = 0; ok && j0 < n; j0 += 32) {
                /* Blocks of 32 along each row (rows are a multiple of 32 long here). */
                size_t j1 = j0 + 32 <= n && row % 32 == 0 ? j0 + 32 : n;
                float mn = a[j0], mx = a[j0], amax = 0;
                for (size_t j = j0; j < j1; j++) {
                    mn = a[j] < mn ? a[j] : mn;
                    mx = a[j] > mx ? a[j] : mx;
                    amax = fabsf(a[j]) > amax ? fabsf(a[j]) : amax;
                }
                for (size_t j = j0; j < j1; j++) {
                    double bound = r->ndim == 1 ? 0 : quant_bound(f, a[j], mn, mx, amax);
                    double err = fabs((double)a[j] - b[j]);
                    n_inexact += err > 0;
                    if (bound > 0 && err / bound > worst) worst = err / bound;
                    if (!(err <= bound)) {
                        snprintf(why, sizeof why, "%s: %s[%zu] = %.9g, safetensors %.9g, |diff| %.3g > bound %.3g",
                                 kFiles[f], r->name, j, b[j], a[j], err, bound);
                        ok = 0;
                        break;
                    }
                }
            }
            free(a);
            free(b);
        }
        ss_weights_free(w);
        /* The quantised files really differ (so the bounds are exercised), and the
         * errors come close to the bounds (so the bounds are not loose). */
        if (ok && f > 0 && (n_inexact == 0 || worst < (f == 1 ? 0.2 : 0.8))) {
            snprintf(why, sizeof why, "%s: %zu inexact values, largest error %.3f of the bound", kFiles[f], n_inexact,
                     worst);
            ok = 0;
        }
    }
    ss_weights_free(ref);
    CHECK_MSG(ok, "%s", why);
}

/* ---- refusals, on patched copies of tiny-f32.gguf ---- */

typedef struct {
    char *bytes;
    size_t size;
} blob;

static int blob_load_file(blob *b, const char *file) {
    char *p = dpath(file);
    ss_status s = ss_file_read(p, &b->bytes, &b->size);
    free(p);
    return s == SS_OK;
}
static int blob_load(blob *b) { return blob_load_file(b, "tiny-f32.gguf"); }

/* Replaces the only occurrence of `from` by `to` (same length); the offset of
 * the match, or -1. */
static long blob_patch(blob *b, const char *from, size_t n, const char *to) {
    long at = -1;
    for (size_t i = 0; i + n <= b->size; i++)
        if (!memcmp(b->bytes + i, from, n)) {
            if (at >= 0) return -1;
            at = (long)i;
        }
    if (at >= 0) memcpy(b->bytes + at, to, n);
    return at;
}

static ss_status open_bytes(const blob *b, size_t size, ss_config *cfg, ss_weights **w, ss_tokenizer **tok) {
    char *p = ss_path_join(ss_test_tmp_dir(), "patched.gguf");
    FILE *f = fopen(p, "wb");
    size_t wrote = f ? fwrite(b->bytes, 1, size, f) : 0;
    if (f) fclose(f);
    ss_status s = wrote == size ? ss_gguf_model_open(p, cfg, w, tok) : SS_ERR_IO;
    free(p);
    return s;
}

#define PATCHED_FAILS(from, to, code, substr) PATCHED_FILE_FAILS("tiny-f32.gguf", from, to, code, substr)
#define PATCHED_FILE_FAILS(file, from, to, code, substr)                                             \
    do {                                                                                             \
        blob b_;                                                                                     \
        CHECK(blob_load_file(&b_, file));                                                            \
        long at_ = blob_patch(&b_, from, sizeof(from) - 1, to);                                      \
        if (at_ < 0) free(b_.bytes);                                                                 \
        CHECK_MSG(at_ >= 0, "\"%s\" is not in %s exactly once", from, file);                          \
        ss_config c_;                                                                                \
        ss_weights *w_ = (ss_weights *)1;                                                            \
        ss_tokenizer *t_ = (ss_tokenizer *)1;                                                        \
        ss_status s_ = open_bytes(&b_, b_.size, &c_, &w_, &t_);                                      \
        free(b_.bytes);                                                                              \
        CHECK_MSG(s_ == (code) && strstr(ss_last_error(), substr) && strstr(ss_last_error(), "patched.gguf") && \
                      w_ == NULL && t_ == NULL,                                                      \
                  "%s -> %s: got %s \"%s\"", from, to, ss_status_name(s_), ss_last_error());         \
    } while (0)

/* A UINT32 value of a key, as bytes: the key string, its type (4) and the value. */
#define KV_U32(key, v) key "\x04\0\0\0" v "\0\0\0"

TEST(gguf_model_refuses_what_it_cannot_compute) {
    PATCHED_FAILS("\x05\0\0\0\0\0\0\0llama", "\x05\0\0\0\0\0\0\0qwen3", SS_ERR_UNSUPPORTED,
                  "general.architecture \"qwen3\" is not supported");
    PATCHED_FAILS(KV_U32("llama.rope.dimension_count", "\x10"), KV_U32("llama.rope.dimension_count", "\x08"),
                  SS_ERR_UNSUPPORTED, "partial rotary");
    PATCHED_FAILS("blk.1.ffn_up.weight", "blk.1.ffn_UP.weight", SS_ERR_FORMAT,
                  "tensor \"blk.1.ffn_up.weight\" (Hugging Face \"model.layers.1.mlp.up_proj.weight\") is missing");
    PATCHED_FAILS("output_norm.weight", "output_norm.weighT", SS_ERR_FORMAT, "\"output_norm.weight\"");
    PATCHED_FAILS(KV_U32("llama.block_count", "\x02"), KV_U32("llama.block_count", "\x01"), SS_ERR_UNSUPPORTED,
                  "tensor \"blk.1.");
    PATCHED_FAILS(KV_U32("llama.feed_forward_length", "\x60"), KV_U32("llama.feed_forward_length", "\x40"),
                  SS_ERR_FORMAT, "tensor \"blk.0.ffn_gate.weight\" has shape [96, 64] but the llama.* metadata imply [64, 64]");
    PATCHED_FAILS(KV_U32("llama.attention.head_count_kv", "\x02"), KV_U32("llama.attention.head_count_kv", "\x03"),
                  SS_ERR_FORMAT, "not a multiple of head_count_kv 3");
    PATCHED_FAILS("\x06\0\0\0\0\0\0\0smollm", "\x06\0\0\0\0\0\0\0falcon", SS_ERR_UNSUPPORTED,
                  "tokenizer.ggml.pre \"falcon\" is not supported");
    PATCHED_FAILS("\x04\0\0\0\0\0\0\0gpt2", "\x04\0\0\0\0\0\0\0bert", SS_ERR_UNSUPPORTED,
                  "tokenizer.ggml.model \"bert\" is not supported");
}

TEST(gguf_model_refuses_truncated_files) {
    blob b;
    CHECK(blob_load(&b));
    const size_t cuts[] = {0, 3, 24, 1000, b.size / 2, b.size - 1};
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        ss_config c;
        ss_weights *w = (ss_weights *)1;
        ss_error_clear();
        ss_status s = open_bytes(&b, cuts[i], &c, &w, NULL);
        if (s != SS_ERR_FORMAT || w != NULL || !strstr(ss_last_error(), "patched.gguf")) {
            free(b.bytes);
            CHECK_MSG(0, "cut at %zu: %s \"%s\"", cuts[i], ss_status_name(s), ss_last_error());
        }
    }
    free(b.bytes);
    char *missing = dpath("no-such.gguf");
    ss_config c;
    ss_weights *w;
    ss_status s = ss_gguf_model_open(missing, &c, &w, NULL);
    free(missing);
    CHECK(s == SS_ERR_IO && strstr(ss_last_error(), "no-such.gguf"));
}

/* ---- tokenizers ---- */

typedef struct {
    ss_json_doc **docs;
    size_t n;
} jsonl;

static ss_status jsonl_load(const char *name, jsonl *g) {
    g->docs = NULL;
    g->n = 0;
    char *p = dpath(name), *text = NULL;
    size_t len = 0, pos = 0;
    ss_status st = p ? ss_file_read(p, &text, &len) : SS_ERR_NOMEM;
    int line = 0;
    while (st == SS_OK && pos < len) {
        char *nl = memchr(text + pos, '\n', len - pos);
        size_t l = nl ? (size_t)(nl - (text + pos)) : len - pos;
        line++;
        if (l) {
            ss_json_doc **nd = realloc(g->docs, (g->n + 1) * sizeof *nd);
            if (!nd) { st = SS_ERR_NOMEM; break; }
            g->docs = nd;
            st = ss_json_parse_at(text + pos, l, name, line, &g->docs[g->n]);
            if (st == SS_OK) g->n++;
        }
        pos += l + 1;
    }
    free(text);
    free(p);
    return st;
}

static void jsonl_free(jsonl *g) {
    for (size_t i = 0; i < g->n; i++) ss_json_free(g->docs[i]);
    free(g->docs);
}

/* Encodes every golden's text with t and compares with its ids under `key`;
 * with roundtrip, also decodes the ids back to the text (not with a prefix
 * space, which decoding keeps). 0 and a message on a mismatch. */
static int check_goldens(const ss_tokenizer *t, const jsonl *g, const char *key, const char *label, int roundtrip,
                         char *why, size_t cap) {
    for (size_t i = 0; i < g->n; i++) {
        const ss_json *root = ss_json_root(g->docs[i]);
        const ss_json *text = ss_json_get(root, "text"), *ids = ss_json_get(root, key);
        if (!text || !ids || ids->type != SS_JSON_ARRAY) {
            snprintf(why, cap, "%s: golden %zu lacks text or %s", label, i, key);
            return 0;
        }
        int32_t *got = NULL;
        size_t n = 0;
        if (ss_tokenizer_encode(t, text->str, text->len, &got, &n) != SS_OK) {
            snprintf(why, cap, "%s: encode \"%s\": %s", label, text->str, ss_last_error());
            return 0;
        }
        int same = n == ids->len;
        for (size_t j = 0; same && j < n; j++) same = got[j] == ids->items[j].i;
        char *back = NULL;
        size_t blen = 0;
        int round = ss_tokenizer_decode(t, got, n, &back, &blen) == SS_OK && blen == text->len &&
                    !memcmp(back, text->str, blen);
        free(back);
        free(got);
        if (!same) {
            snprintf(why, cap, "%s: \"%.60s\": %zu ids, Hugging Face %zu (or different ids)", label, text->str, n,
                     ids->len);
            return 0;
        }
        if (roundtrip && !round) {
            snprintf(why, cap, "%s: \"%.60s\" does not decode back", label, text->str);
            return 0;
        }
    }
    return 1;
}

/* The tiny model's tokenizer (Digits + ByteLevel) read from its tokenizer.json
 * and from each GGUF's tokenizer.ggml.*, and a variant with runs of digits
 * and a prefix space, against Hugging Face. */
TEST(gguf_model_tiny_tokenizer_goldens) {
    jsonl g;
    ss_status s = jsonl_load("tiny-tokenizer.jsonl", &g);
    if (s != SS_OK) jsonl_free(&g);
    CHECK_OK(s);
    CHECK(g.n > 90);
    char why[256] = "", *p = dpath("hf/tokenizer.json");
    ss_tokenizer *t = NULL;
    int ok = ss_tokenizer_load_json(p, &t) == SS_OK;
    free(p);
    if (!ok) snprintf(why, sizeof why, "hf/tokenizer.json: %s", ss_last_error());
    ok = ok && check_goldens(t, &g, "ids", "hf/tokenizer.json", 1, why, sizeof why);
    ss_tokenizer_free(t);
    t = NULL;
    for (int f = 0; ok && f < 4; f++) {
        ss_config c;
        ss_weights *w = NULL;
        if (open_model(kFiles[f], &c, &w, &t) != SS_OK || !t) {
            snprintf(why, sizeof why, "%s: %s", kFiles[f], ss_last_error());
            ok = 0;
        }
        ok = ok && check_goldens(t, &g, "ids", kFiles[f], 1, why, sizeof why);
        ok = ok && ss_tokenizer_vocab_size(t) == 300 && ss_tokenizer_token_to_id(t, "<|im_end|>") == 2;
        ss_weights_free(w);
        ss_tokenizer_free(t);
        t = NULL;
    }
    p = dpath("tokenizer-variant.json");
    if (ok && ss_tokenizer_load_json(p, &t) != SS_OK) {
        snprintf(why, sizeof why, "tokenizer-variant.json: %s", ss_last_error());
        ok = 0;
    }
    free(p);
    ok = ok && check_goldens(t, &g, "ids_variant", "tokenizer-variant.json", 0, why, sizeof why);
    ss_tokenizer_free(t);
    jsonl_free(&g);
    CHECK_MSG(ok, "%s", why);
}

/* SmolLM2-135M-Instruct's tokenizer from its GGUF metadata against Hugging
 * Face `tokenizers` on ~100 strings: digits, white space, Unicode, code,
 * special tokens. */
TEST(gguf_model_smollm2_tokenizer_goldens) {
    jsonl g;
    ss_status s = jsonl_load("smollm2-tokenizer.jsonl", &g);
    if (s != SS_OK) jsonl_free(&g);
    CHECK_OK(s);
    CHECK(g.n > 90);
    char *p = dpath("smollm2-tokenizer.gguf");
    ss_gguf *gg = NULL;
    s = ss_gguf_open(p, &gg);
    free(p);
    ss_tokenizer *t = NULL;
    if (s == SS_OK) s = ss_gguf_tokenizer_load(gg, &t);
    ss_gguf_free(gg);
    if (s != SS_OK) jsonl_free(&g);
    CHECK_OK(s);
    char why[256] = "";
    int ok = check_goldens(t, &g, "ids", "smollm2-tokenizer.gguf", 1, why, sizeof why);
    int ids_ok = ss_tokenizer_vocab_size(t) == 49152 && ss_tokenizer_token_to_id(t, "<|im_start|>") == 1 &&
                 ss_tokenizer_token_to_id(t, "<|endoftext|>") == 0 && ss_tokenizer_eos_id(t) == 0;
    ss_tokenizer_free(t);
    jsonl_free(&g);
    CHECK_MSG(ok, "%s", why);
    CHECK(ids_ok);
}

/* The Digits pre-tokenizer is accepted only right before ByteLevel. */
TEST(gguf_model_tokenizer_digits_placement) {
    static const char head[] = "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"1\": 1}, \"merges\": []}, "
                               "\"pre_tokenizer\": {\"type\": \"Sequence\", \"pretokenizers\": ";
    const char *bad[] = {
        "[{\"type\": \"ByteLevel\"}, {\"type\": \"Digits\", \"individual_digits\": true}]}}",
        "[{\"type\": \"Digits\", \"individual_digits\": true}]}}",
        "[{\"type\": \"Digits\"}, {\"type\": \"Whitespace\"}]}}",
        "[{\"type\": \"Digits\"}, {\"type\": \"Digits\"}, {\"type\": \"ByteLevel\"}]}}",
    };
    char doc[512];
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(doc, sizeof doc, "%s%s", head, bad[i]);
        ss_tokenizer *t = NULL;
        CHECK_ERR(ss_tokenizer_load_json_mem(doc, strlen(doc), "mini.json", &t), SS_ERR_UNSUPPORTED,
                  "[Digits, ByteLevel]");
    }
    snprintf(doc, sizeof doc, "%s%s", head,
             "[{\"type\": \"Digits\", \"individual_digits\": 1}, {\"type\": \"ByteLevel\"}]}}");
    ss_tokenizer *t = NULL;
    CHECK_ERR(ss_tokenizer_load_json_mem(doc, strlen(doc), "mini.json", &t), SS_ERR_FORMAT, "individual_digits");
    snprintf(doc, sizeof doc, "%s%s", head, "[{\"type\": \"Digits\"}, {\"type\": \"ByteLevel\"}]}}");
    CHECK_OK(ss_tokenizer_load_json_mem(doc, strlen(doc), "mini.json", &t));
    int32_t *ids = NULL;
    size_t n = 0;
    ss_status s = ss_tokenizer_encode(t, "a11a", 4, &ids, &n);
    ss_tokenizer_free(t);
    CHECK_OK(s);
    CHECK(n == 4 && ids[0] == 0 && ids[1] == 1 && ids[2] == 1 && ids[3] == 0);
    free(ids);
}

/* The in-memory weights set: sorted lookups, duplicates refused, data owned. */
TEST(gguf_model_weights_in_memory) {
    ss_weights *w = NULL;
    CHECK_OK(ss_weights_new(&w));
    const char *names[] = {"b", "a", "c.x", "c"};
    for (int i = 0; i < 4; i++) {
        float *d = malloc(6 * sizeof *d);
        for (int j = 0; j < 6; j++) d[j] = (float)(10 * i + j);
        int64_t shape[2] = {2, 3};
        ss_status s = ss_weights_add_f32(w, names[i], 2, shape, d, "mem");
        if (s != SS_OK) ss_weights_free(w);
        CHECK_OK(s);
    }
    float *dup = malloc(sizeof *dup);
    int64_t one = 1;
    CHECK_ERR(ss_weights_add_f32(w, "c", 1, &one, dup, "mem"), SS_ERR_FORMAT, "mem: tensor \"c\" appears twice");
    int ok = ss_weights_count(w) == 4 && !strcmp(ss_weights_at(w, 1)->name, "a");
    const ss_tensor_info *t = ss_weights_find(w, "c.x");
    float v[6];
    ok = ok && t && t->ndim == 2 && t->shape[1] == 3 && t->nbytes == 24 && !strcmp(t->file, "mem") &&
         ss_tensor_to_f32(t, v, 6) == SS_OK && v[5] == 25.0f && !ss_weights_find(w, "d");
    ss_weights_free(w);
    CHECK(ok);
}

/* ss_model_load on a .gguf: the forward pass of the F32 file gives the
 * logits of the Hugging Face directory bit for bit (the same numbers reach
 * the same code; the lead's Llama goldens tie that code to transformers);
 * quantised files stay close, by the NMSE of their logits. */
TEST(gguf_model_forward_equals_hf_dir) {
    char *dir = dpath("hf");
    ss_model *ref = NULL;
    ss_status s = ss_model_load(dir, &ref);
    free(dir);
    CHECK_OK(s);
    static const char text[] = "Sefa Kestrup is a cricket bowler. She was named rookie of the year in 2024.";
    int32_t *ids = NULL;
    size_t n = 0;
    s = ss_tokenizer_encode(ref->tok, text, sizeof text - 1, &ids, &n);
    const int64_t start = 0, len = (int64_t)n;
    const ss_packing pk = {1, len, &start, &len, 0};
    const ss_forward_opts fo = {.logits = SS_LOGITS_ALL};
    float *want = NULL;
    if (s == SS_OK) s = ss_forward(ref, ss_backend_cpu(), ids, &pk, &fo, &want);
    const size_t nl = n * (size_t)ref->cfg.vocab_size;
    ss_model_free(ref);
    if (s != SS_OK) free(ids);
    CHECK_OK(s);
    /* Measured: F16 2.2e-6, Q8_0 1.8e-3, Q4_1 0.28. This random network (weights
     * ~N(0, 0.2^2)) amplifies weight errors far more than a trained one; the
     * tensor test above holds each weight to its quantisation bound. */
    const double max_nmse[4] = {0, 1e-5, 5e-3, 0.5};
    char why[256] = "";
    int ok = 1;
    for (int f = 0; f < 4 && ok; f++) {
        char *p = dpath(kFiles[f]);
        ss_model *m = NULL;
        float *got = NULL;
        s = ss_model_load(p, &m);
        free(p);
        if (s == SS_OK) s = ss_forward(m, ss_backend_cpu(), ids, &pk, &fo, &got);
        ss_model_free(m);
        if (s != SS_OK) {
            snprintf(why, sizeof why, "%s: %s", kFiles[f], ss_last_error());
            ok = 0;
            break;
        }
        double num = 0, den = 0;
        for (size_t i = 0; i < nl; i++) {
            num += ((double)got[i] - want[i]) * ((double)got[i] - want[i]);
            den += (double)want[i] * want[i];
        }
        double nmse = num / den;
        if (f == 0 ? memcmp(got, want, nl * sizeof *got) != 0 : !(nmse <= max_nmse[f] && nmse > 0)) {
            snprintf(why, sizeof why, "%s: logits NMSE %.3g vs the Hugging Face directory (allowed %g)", kFiles[f], nmse,
                     max_nmse[f]);
            ok = 0;
        }
        free(got);
    }
    free(ids);
    free(want);
    CHECK_MSG(ok, "%s", why);
}

/* llama3-ropefreqs.gguf: the lead's llama3-scaled model
 * (tests/data/models/llama-gqa-llama3) as llama.cpp's converter writes a
 * Llama 3.1, with no rope scaling metadata but a rope_freqs.weight tensor of
 * per-frequency divisors. The model's inverse frequencies are the plain ones
 * divided by the factors and agree with transformers' llama3 formula (which
 * the directory's config gives) to float32 rounding (here: exactly, but the
 * two roundings could differ by an ulp elsewhere); the logits agree with
 * the directory's (the CLI test compares them with transformers' goldens);
 * without the factors they would not. */
TEST(gguf_model_llama3_rope_freqs_tensor) {
    char *dir = ss_path_join(ss_test_data_dir(), "models/llama-gqa-llama3"), *p = dpath("llama3-ropefreqs.gguf");
    ss_model *ref = NULL, *m = NULL;
    ss_status s = ss_model_load(dir, &ref);
    if (s == SS_OK) s = ss_model_load(p, &m);
    free(dir);
    free(p);
    if (s != SS_OK) {
        ss_model_free(ref);
        CHECK_OK(s);
    }
    const ss_tensor_info *rf = ss_weights_find(m->weights, SS_GGUF_ROPE_FREQS);
    int ok = rf && rf->ndim == 1 && rf->shape[0] == 4 && ref->cfg.rope_type == SS_ROPE_LLAMA3 &&
             m->cfg.rope_type == SS_ROPE_NONE && m->cfg.d_head == 8 && ref->cfg.d_head == 8;
    ss_config plain = m->cfg;
    float base[4];
    ss_config_rope_inv_freq(&plain, base);
    double worst = 0, least_scaled = 1e30;
    for (int i = 0; ok && i < 4; i++) {
        const float g = m->w.rope_inv_freq[i], h = ref->w.rope_inv_freq[i];
        worst = fmax(worst, fabs((double)g - h) / h);
        least_scaled = fmin(least_scaled, base[i] / g);
        ok = g == base[i] / ((const float *)rf->data)[i];
    }
    CHECK_MSG(ok && worst <= 2.5e-7 && least_scaled > 1.7, "inverse frequencies: relative error %.3g, smallest factor %g",
              worst, least_scaled);

    static const int32_t ids[] = {0, 61, 103, 100, 71, 108, 22, 57, 41, 63, 111, 17, 83, 0, 99, 88, 35, 28, 26, 10,
                                  91, 23, 107, 26, 6, 48, 40, 90, 77, 6, 33, 21, 101, 57, 98, 36, 107, 64, 74, 112};
    const int64_t start = 0, len = 40;
    const ss_packing pk = {1, len, &start, &len, 0};
    const ss_forward_opts fo = {.logits = SS_LOGITS_ALL};
    float *want = NULL, *got = NULL;
    s = ss_forward(ref, ss_backend_cpu(), ids, &pk, &fo, &want);
    if (s == SS_OK) s = ss_forward(m, ss_backend_cpu(), ids, &pk, &fo, &got);
    const size_t nl = 40 * (size_t)ref->cfg.vocab_size;
    ss_model_free(ref);
    ss_model_free(m);
    double maxd = 0, amax = 0;
    for (size_t i = 0; s == SS_OK && i < nl; i++) {
        maxd = fmax(maxd, fabs((double)got[i] - want[i]));
        amax = fmax(amax, fabs((double)want[i]));
    }
    free(want);
    free(got);
    CHECK_OK(s);
    /* Measured: identical (the divided frequencies equal transformers' here
     * to the bit); ignoring the factors changes them by up to 5.5. */
    CHECK_MSG(maxd <= 1e-5 && amax > 1, "logits differ from the llama3-scaled directory's by %.3g", maxd);
}

TEST(gguf_model_llama3_rope_freqs_refusals) {
    /* the tensor info: name, n_dims 1, ne[0] 4 */
    PATCHED_FILE_FAILS("llama3-ropefreqs.gguf", "rope_freqs.weight\x01\0\0\0\x04\0\0\0\0\0\0\0",
                       "rope_freqs.weight\x01\0\0\0\x02\0\0\0\0\0\0\0", SS_ERR_FORMAT,
                       "tensor \"rope_freqs.weight\" has shape [2] but the llama.* metadata imply [4]");
    /* the first factor, 1.7359413f */
    PATCHED_FILE_FAILS("llama3-ropefreqs.gguf", "\x53\x33\xde\x3f", "\x00\x00\x80\xbf", SS_ERR_FORMAT,
                       "tensor \"rope_freqs.weight\": factor 0 is -1; rotary frequency divisors must be finite");
    PATCHED_FILE_FAILS("llama3-ropefreqs.gguf", "\x53\x33\xde\x3f", "\x00\x00\x80\x7f", SS_ERR_FORMAT,
                       "factor 0 is inf");
    PATCHED_FILE_FAILS("llama3-ropefreqs.gguf", "\x53\x33\xde\x3f", "\x00\x00\x00\x00", SS_ERR_FORMAT,
                       "factor 0 is 0");
}

/* The config.json a GGUF model records parses back to the same config, for
 * the tiny model and for variants of it (biases, linear and llama3 scaling). */
TEST(gguf_model_config_json_round_trip) {
    ss_config c;
    ss_weights *w = NULL;
    CHECK_OK(open_model("tiny-q8_0.gguf", &c, &w, NULL));
    ss_weights_free(w);
    for (int v = 0; v < 5; v++) {
        ss_config x = c, back;
        if (v == 4) x.eos_token_id = x.eos_ids[0] = 7, x.eos_ids[1] = 9, x.eos_ids[2] = 3, x.n_eos = 3; /* eos and eot ids */
        if (v == 1) x.qkv_bias = x.o_bias = x.mlp_bias = 1, x.tie_word_embeddings = 1, x.bos_token_id = -1;
        if (v == 2) x.qkv_bias = 1, x.rope_type = SS_ROPE_LINEAR, x.rope_factor = 2.5;
        if (v == 3)
            x.rope_type = SS_ROPE_LLAMA3, x.rope_factor = 8, x.rope_low_freq_factor = 1, x.rope_high_freq_factor = 4,
            x.rope_original_max_positions = 64;
        if (v == 2) snprintf(x.arch, sizeof x.arch, "qwen2");
        char *json = NULL;
        CHECK_OK(ss_gguf_config_json(&x, &json));
        ss_status s = ss_config_parse(json, strlen(json), "roundtrip.json", &back);
        free(json);
        CHECK_OK(s);
        CHECK_MSG(!memcmp(&x, &back, sizeof x), "variant %d does not round-trip", v);
    }
}
