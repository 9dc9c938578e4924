/* mkmodel: writes a random-weight GPT-2 or Llama model directory in Hugging
 * Face's layout (config.json + model.safetensors) and/or a prompts JSONL of
 * random token ids, so GPU checks and benchmarks get models of any shape
 * without Python or a download.
 *
 *   mkmodel [--out DIR] [--layers L] [--d D] [--heads H] [--vocab V]
 *           [--positions P] [--inner M] [--dtype f32|f16|bf16] [--seed S]
 *           [--std X] [--untied] [--act NAME] [--no-prefix]
 *           [--family gpt2|llama] [--kv-heads K] [--head-dim D] [--rope-theta T]
 *           [--prompts FILE --lengths N,N,...]
 *
 * --family llama writes a LlamaForCausalLM (RMSNorm, rotary q and k with
 * rope_theta T, default 10000; K key/value heads, default H; heads of D,
 * default d/H; SwiGLU of M, default 4d; q/k/v/o and gate/up/down without
 * biases; --act, --no-prefix do not apply), tied unless --untied.
 *
 * Weights are seeded normals: matrices and embeddings N(0, std) (default
 * std 0.02, Hugging Face's initializer_range), the two residual output
 * projections N(0, std/sqrt(2L)) as GPT-2 initialises them, biases N(0, std),
 * layer-norm weights 1 + N(0, 0.1) and biases N(0, 0.02) (non-trivial, so a
 * kernel that ignores them fails). The same arguments always give the same
 * bytes. Prompt token ids are uniform in [0, vocab) from the seed + 1.
 * Prints the parameter count (as `subscope info` counts it) on success.
 * Exit 0 on success, 1 on an error (message on stderr), 2 on bad usage. */
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "subscope/util.h"

typedef struct {
    uint64_t s;
    int have_spare;
    double spare;
} rng_t;

/* splitmix64: tiny, seedable, and good enough for test weights. */
static uint64_t rng_u64(rng_t *r) {
    uint64_t z = (r->s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static double rng_unit(rng_t *r) { return ((double)(rng_u64(r) >> 11) + 0.5) / 9007199254740992.0; }

static double rng_normal(rng_t *r) {
    if (r->have_spare) {
        r->have_spare = 0;
        return r->spare;
    }
    double u = rng_unit(r), v = rng_unit(r), rad = sqrt(-2.0 * log(u));
    r->spare = rad * sin(6.283185307179586 * v);
    r->have_spare = 1;
    return rad * cos(6.283185307179586 * v);
}

enum { K_MATRIX, K_OUTPROJ, K_BIAS, K_LN_W, K_LN_B };

typedef struct {
    char name[128];
    int ndim;
    int64_t shape[2];
    int kind;
    uint64_t offset, bytes;
} tensor_t;

typedef struct {
    int64_t layers, d, heads, vocab, positions, inner;
    int dtype; /* 0 f32, 1 f16, 2 bf16 */
    uint64_t seed;
    double std;
    int untied, prefix;
    const char *act;
    int llama;                  /* --family llama */
    int64_t kv_heads, head_dim; /* Llama: 0 = heads, d / heads */
    double rope_theta;
} spec_t;

static const char *dtype_st[] = {"F32", "F16", "BF16"};
static const char *dtype_hf[] = {"float32", "float16", "bfloat16"};

static int add_tensor(tensor_t *t, int *n, const spec_t *sp, const char *name, int ndim, int64_t a, int64_t b,
                      int kind) {
    tensor_t *x = &t[(*n)++];
    snprintf(x->name, sizeof x->name, "%s%s",
             sp->prefix && !sp->llama && strcmp(name, "lm_head.weight") ? "transformer." : "", name);
    x->ndim = ndim;
    x->shape[0] = a;
    x->shape[1] = b;
    x->kind = kind;
    return 0;
}

/* LlamaForCausalLM's tensors as save_pretrained names them ([out, in] matrices). */
static int build_llama(const spec_t *sp, tensor_t *t) {
    int n = 0;
    const int64_t d = sp->d, dm = sp->inner, q = sp->heads * sp->head_dim, kv = sp->kv_heads * sp->head_dim;
    char nm[96];
    add_tensor(t, &n, sp, "model.embed_tokens.weight", 2, sp->vocab, d, K_MATRIX);
    for (int64_t l = 0; l < sp->layers; l++) {
#define T(suffix, nd, a, b, k) \
    (snprintf(nm, sizeof nm, "model.layers.%lld.%s", (long long)l, suffix), add_tensor(t, &n, sp, nm, nd, a, b, k))
        T("input_layernorm.weight", 1, d, 0, K_LN_W);
        T("self_attn.q_proj.weight", 2, q, d, K_MATRIX);
        T("self_attn.k_proj.weight", 2, kv, d, K_MATRIX);
        T("self_attn.v_proj.weight", 2, kv, d, K_MATRIX);
        T("self_attn.o_proj.weight", 2, d, q, K_OUTPROJ);
        T("post_attention_layernorm.weight", 1, d, 0, K_LN_W);
        T("mlp.gate_proj.weight", 2, dm, d, K_MATRIX);
        T("mlp.up_proj.weight", 2, dm, d, K_MATRIX);
        T("mlp.down_proj.weight", 2, d, dm, K_OUTPROJ);
#undef T
    }
    add_tensor(t, &n, sp, "model.norm.weight", 1, d, 0, K_LN_W);
    if (sp->untied) add_tensor(t, &n, sp, "lm_head.weight", 2, sp->vocab, d, K_MATRIX);
    return n;
}

static int build_list(const spec_t *sp, tensor_t *t) {
    if (sp->llama) return build_llama(sp, t);
    int n = 0;
    int64_t d = sp->d, dm = sp->inner;
    char nm[96];
    add_tensor(t, &n, sp, "wte.weight", 2, sp->vocab, d, K_MATRIX);
    add_tensor(t, &n, sp, "wpe.weight", 2, sp->positions, d, K_MATRIX);
    for (int64_t l = 0; l < sp->layers; l++) {
#define T(suffix, nd, a, b, k) \
    (snprintf(nm, sizeof nm, "h.%lld.%s", (long long)l, suffix), add_tensor(t, &n, sp, nm, nd, a, b, k))
        T("ln_1.weight", 1, d, 0, K_LN_W);
        T("ln_1.bias", 1, d, 0, K_LN_B);
        T("attn.c_attn.weight", 2, d, 3 * d, K_MATRIX);
        T("attn.c_attn.bias", 1, 3 * d, 0, K_BIAS);
        T("attn.c_proj.weight", 2, d, d, K_OUTPROJ);
        T("attn.c_proj.bias", 1, d, 0, K_BIAS);
        T("ln_2.weight", 1, d, 0, K_LN_W);
        T("ln_2.bias", 1, d, 0, K_LN_B);
        T("mlp.c_fc.weight", 2, d, dm, K_MATRIX);
        T("mlp.c_fc.bias", 1, dm, 0, K_BIAS);
        T("mlp.c_proj.weight", 2, dm, d, K_OUTPROJ);
        T("mlp.c_proj.bias", 1, d, 0, K_BIAS);
#undef T
    }
    add_tensor(t, &n, sp, "ln_f.weight", 1, d, 0, K_LN_W);
    add_tensor(t, &n, sp, "ln_f.bias", 1, d, 0, K_LN_B);
    if (sp->untied) add_tensor(t, &n, sp, "lm_head.weight", 2, sp->vocab, d, K_MATRIX);
    return n;
}

static int64_t numel(const tensor_t *t) { return t->ndim == 1 ? t->shape[0] : t->shape[0] * t->shape[1]; }

/* Each file is written as PATH.tmp.<host>.<pid> (ss_tmp_name) and renamed over PATH when whole, as
 * subscope writes its outputs: a failed write (a full disk, ulimit -f), or a
 * run stopped by a signal (the temporary file is registered for removal) or
 * killed, leaves PATH as it was, never cut short. A PATH that is a symbolic link
 * is written through: *dest, what the rename replaces, is the file it names
 * (ss_out_target), and the temporary goes beside that. */
static FILE *open_tmp(const char *path, char **tmp, char **dest) {
    struct stat sb;
    *tmp = *dest = NULL;
    if (stat(path, &sb) == 0 && !S_ISREG(sb.st_mode)) { /* renamed over, /dev/null would become a file */
        fprintf(stderr, "mkmodel: cannot write %s: not a regular file\n", path);
        return NULL;
    }
    if (ss_out_target(path, dest)) {
        fprintf(stderr, "mkmodel: %s\n", ss_last_error());
        return NULL;
    }
    *tmp = ss_tmp_name(*dest);
    /* registered before it exists: a signal between its creation and a later
     * registration would leave it */
    if (*tmp) ss_tmp_register(*tmp);
    FILE *f = *tmp ? fopen(*tmp, "wb") : NULL;
    if (!f) {
        fprintf(stderr, "mkmodel: cannot write %s: %s\n", path, strerror(errno));
        if (*tmp) ss_tmp_unregister(*tmp);
        free(*tmp), free(*dest);
        *tmp = *dest = NULL;
        return NULL;
    }
    return f;
}

/* A file whole under its temporary name (tmp, registered), to be renamed over dest. */
typedef struct {
    char *tmp, *dest;
} staged_t;

/* Removes what is left of each staged file's temporary (nothing once renamed), unregisters and frees it. */
static void drop_staged(staged_t *s, int n) {
    for (int i = 0; i < n; i++)
        if (s[i].tmp) {
            unlink(s[i].tmp);
            ss_tmp_unregister(s[i].tmp);
            free(s[i].tmp), free(s[i].dest);
            s[i].tmp = s[i].dest = NULL;
        }
}

/* Closes f (open_tmp's): its temporary, whole, goes to *s for put_in_place; if bad or the close
 * fails it is removed and both names freed, with a message naming path; returns nonzero then. */
static int close_staged(FILE *f, char *tmp, char *dest, const char *path, int bad, staged_t *s) {
    bad |= ferror(f);
    int err = errno;
    if (fclose(f) != 0 && !bad) bad = 1, err = errno;
    *s = (staged_t){tmp, dest};
    if (bad) {
        fprintf(stderr, "mkmodel: error writing %s: %s\n", path, err ? strerror(err) : "write error");
        drop_staged(s, 1);
    }
    return bad;
}

/* Renames the n staged files into place with the signals held (ss_signals_hold, as subscope's
 * jobs put several files in place): a signal between two renames takes effect once all are
 * done, not with new weights beside an old config.json. A rename that fails puts the earlier
 * files back (ss_replace, as train does). Drops all; returns nonzero on failure, with a message
 * naming the file. */
static int put_in_place(staged_t *s, int n) {
    ss_signals_held held;
    ss_replace rep = {0};
    ss_signals_hold(&held);
    int bad = 0;
    for (int i = 0; i < n && !bad; i++)
        if (ss_replace_file(&rep, s[i].tmp, s[i].dest, s[i].dest)) {
            fprintf(stderr, "mkmodel: %s\n", ss_last_error()); /* names dest and the temporary */
            bad = 1;
        }
    if (bad) ss_replace_undo(&rep);
    else ss_replace_done(&rep);
    drop_staged(s, n);
    ss_signals_release(&held);
    return bad;
}

/* Closes f and renames tmp over dest (open_tmp's), or removes tmp if bad or that fails;
 * frees both; returns nonzero on failure, with a message naming path. */
static int close_tmp(FILE *f, char *tmp, char *dest, const char *path, int bad) {
    staged_t s;
    return close_staged(f, tmp, dest, path, bad, &s) || put_in_place(&s, 1);
}

static int write_config(const spec_t *sp, const char *dir, staged_t *staged) {
    char *path = ss_path_join(dir, "config.json"), *tmp, *dest;
    FILE *f = path ? open_tmp(path, &tmp, &dest) : NULL;
    if (!f) {
        free(path);
        return 1;
    }
    if (sp->llama)
        fprintf(f,
                "{\n  \"architectures\": [\"LlamaForCausalLM\"],\n  \"bos_token_id\": 0,\n  \"eos_token_id\": 1,\n"
                "  \"head_dim\": %lld,\n  \"hidden_act\": \"silu\",\n  \"hidden_size\": %lld,\n"
                "  \"initializer_range\": %g,\n  \"intermediate_size\": %lld,\n  \"max_position_embeddings\": %lld,\n"
                "  \"model_type\": \"llama\",\n  \"num_attention_heads\": %lld,\n  \"num_hidden_layers\": %lld,\n"
                "  \"num_key_value_heads\": %lld,\n  \"rms_norm_eps\": 1e-05,\n  \"rope_theta\": %.17g,\n"
                "  \"tie_word_embeddings\": %s,\n  \"torch_dtype\": \"%s\",\n  \"vocab_size\": %lld,\n"
                "  \"subscope_mkmodel_seed\": %llu\n}\n",
                (long long)sp->head_dim, (long long)sp->d, sp->std, (long long)sp->inner, (long long)sp->positions,
                (long long)sp->heads, (long long)sp->layers, (long long)sp->kv_heads, sp->rope_theta,
                sp->untied ? "false" : "true", dtype_hf[sp->dtype], (long long)sp->vocab, (unsigned long long)sp->seed);
    else
    fprintf(f,
            "{\n  \"activation_function\": \"%s\",\n  \"architectures\": [\"GPT2LMHeadModel\"],\n"
            "  \"attn_pdrop\": 0.0,\n  \"bos_token_id\": 0,\n  \"embd_pdrop\": 0.0,\n  \"eos_token_id\": 0,\n"
            "  \"initializer_range\": %g,\n  \"layer_norm_epsilon\": 1e-05,\n  \"model_type\": \"gpt2\",\n"
            "  \"n_embd\": %lld,\n  \"n_head\": %lld,\n  \"n_inner\": %lld,\n  \"n_layer\": %lld,\n"
            "  \"n_positions\": %lld,\n  \"resid_pdrop\": 0.0,\n  \"scale_attn_weights\": true,\n"
            "  \"tie_word_embeddings\": %s,\n  \"torch_dtype\": \"%s\",\n  \"vocab_size\": %lld,\n"
            "  \"subscope_mkmodel_seed\": %llu\n}\n",
            sp->act, sp->std, (long long)sp->d, (long long)sp->heads, (long long)sp->inner, (long long)sp->layers,
            (long long)sp->positions, sp->untied ? "false" : "true", dtype_hf[sp->dtype], (long long)sp->vocab,
            (unsigned long long)sp->seed);
    int bad = close_staged(f, tmp, dest, path, 0, staged);
    free(path);
    return bad;
}

static int write_weights(const spec_t *sp, const char *dir, int64_t *n_params, staged_t *staged) {
    int max_t = 5 + 12 * (int)sp->layers; /* GPT-2's count; Llama's 3 + 9 per layer is fewer */
    tensor_t *t = calloc((size_t)max_t, sizeof *t);
    if (!t) return 1;
    int n = build_list(sp, t);
    size_t es = sp->dtype == 0 ? 4 : 2;
    uint64_t off = 0;
    *n_params = 0;
    for (int i = 0; i < n; i++) {
        t[i].offset = off;
        t[i].bytes = (uint64_t)numel(&t[i]) * es;
        off += t[i].bytes;
        /* the lm_head is counted once, as info counts it, whether tied or not */
        *n_params += numel(&t[i]);
    }
    /* Header: JSON, padded with spaces so the data starts 8-byte aligned. */
    size_t cap = 256 + (size_t)n * 200, len = 0;
    char *hdr = malloc(cap);
    if (!hdr) {
        free(t);
        return 1;
    }
    len += (size_t)snprintf(hdr + len, cap - len, "{\"__metadata__\":{\"format\":\"pt\"}");
    for (int i = 0; i < n; i++) {
        len += (size_t)snprintf(hdr + len, cap - len, ",\"%s\":{\"dtype\":\"%s\",\"shape\":[%lld", t[i].name,
                                dtype_st[sp->dtype], (long long)t[i].shape[0]);
        if (t[i].ndim == 2) len += (size_t)snprintf(hdr + len, cap - len, ",%lld", (long long)t[i].shape[1]);
        len += (size_t)snprintf(hdr + len, cap - len, "],\"data_offsets\":[%llu,%llu]}",
                                (unsigned long long)t[i].offset, (unsigned long long)(t[i].offset + t[i].bytes));
    }
    len += (size_t)snprintf(hdr + len, cap - len, "}");
    while ((8 + len) % 8) hdr[len++] = ' ';

    char *path = ss_path_join(dir, "model.safetensors"), *tmp, *dest;
    FILE *f = path ? open_tmp(path, &tmp, &dest) : NULL;
    if (!f) {
        free(path), free(hdr), free(t);
        return 1;
    }
    uint8_t le[8];
    for (int i = 0; i < 8; i++) le[i] = (uint8_t)((uint64_t)len >> (8 * i));
    int bad = fwrite(le, 1, 8, f) != 8 || fwrite(hdr, 1, len, f) != len;
    rng_t r = {sp->seed, 0, 0};
    double out_std = sp->std / sqrt(2.0 * (double)sp->layers);
    enum { CHUNK = 1 << 16 };
    float *buf = malloc(CHUNK * sizeof(float));
    uint16_t *hb = malloc(CHUNK * sizeof(uint16_t));
    if (!buf || !hb) bad = 1;
    for (int i = 0; i < n && !bad; i++) {
        int64_t total = numel(&t[i]);
        for (int64_t done = 0; done < total && !bad; done += CHUNK) {
            int64_t m = total - done < CHUNK ? total - done : CHUNK;
            for (int64_t j = 0; j < m; j++) {
                double z = rng_normal(&r);
                switch (t[i].kind) {
                case K_MATRIX: case K_BIAS: buf[j] = (float)(sp->std * z); break;
                case K_OUTPROJ: buf[j] = (float)(out_std * z); break;
                case K_LN_W: buf[j] = (float)(1.0 + 0.1 * z); break;
                default: buf[j] = (float)(0.02 * z); break;
                }
            }
            if (sp->dtype == 0) {
                bad = fwrite(buf, sizeof(float), (size_t)m, f) != (size_t)m;
            } else {
                for (int64_t j = 0; j < m; j++) hb[j] = sp->dtype == 1 ? ss_f32_to_f16(buf[j]) : ss_f32_to_bf16(buf[j]);
                bad = fwrite(hb, sizeof(uint16_t), (size_t)m, f) != (size_t)m;
            }
        }
    }
    bad = close_staged(f, tmp, dest, path, bad, staged);
    free(buf), free(hb), free(path), free(hdr), free(t);
    return bad;
}

/* 1 (printed) unless --lengths is positive integers separated by commas: checked before
 * anything is written (the model was written, then a bad --lengths failed the run). */
static int lengths_bad(const char *lengths) {
    int count = 0;
    for (const char *p = lengths; *p; count++) {
        const char *end = p + strcspn(p, ",");
        int64_t n = 0;
        if (!ss_parse_int_n(p, (size_t)(end - p), &n) || n <= 0) { /* digits only: no space, no '+' */
            fprintf(stderr, "mkmodel: --lengths: expected positive integers separated by commas, got \"%s\"\n",
                    lengths);
            return 1;
        }
        p = *end ? end + 1 : end;
    }
    if (count == 0) fprintf(stderr, "mkmodel: --lengths is empty\n");
    return count == 0;
}

/* lengths: checked by lengths_bad */
static int write_prompts(const char *path, const char *lengths, int64_t vocab, uint64_t seed) {
    char *tmp, *dest;
    FILE *f = open_tmp(path, &tmp, &dest);
    if (!f) return 1;
    rng_t r = {seed + 1, 0, 0};
    for (const char *p = lengths; *p;) {
        char *end;
        long long n = strtoll(p, &end, 10);
        fputs("{\"tokens\": [", f);
        for (long long i = 0; i < n; i++) fprintf(f, "%s%llu", i ? ", " : "", (unsigned long long)(rng_u64(&r) % (uint64_t)vocab));
        fputs("]}\n", f);
        p = *end ? end + 1 : end;
    }
    return close_tmp(f, tmp, dest, path, 0);
}

static void usage(FILE *f) {
    fprintf(f,
            "usage: mkmodel [--out DIR] [--layers L] [--d D] [--heads H] [--vocab V] [--positions P]\n"
            "               [--inner M] [--dtype f32|f16|bf16] [--seed S] [--std X] [--untied]\n"
            "               [--act gelu_new|gelu] [--no-prefix] [--prompts FILE --lengths N,N,...]\n"
            "               [--family gpt2|llama] [--kv-heads K] [--head-dim D] [--rope-theta T]\n"
            "  writes a random GPT-2 or Llama (config.json + model.safetensors) to DIR and/or a JSONL of\n"
            "  random token-id prompts of the given lengths; defaults: gpt2, 2 layers, d 64, 4 heads,\n"
            "  vocab 1000, 128 positions, inner 4d, f32, seed 1, std 0.02, tied, gelu_new; Llama:\n"
            "  K = heads, D = d/heads, T = 10000\n");
}

static int parse_i64(const char *opt, const char *s, int64_t *out) {
    int64_t v = 0;
    if (!ss_parse_int(s, &v) || v <= 0) { /* digits only: strtoll took a leading space or '+' */
        fprintf(stderr, "mkmodel: %s needs a positive integer, got \"%s\"\n", opt, s);
        return 0;
    }
    *out = v;
    return 1;
}

/* A positive finite number, or a message naming the option. */
static int parse_positive(const char *opt, const char *s, double *out) {
    char *end;
    double v = strtod(s, &end);
    if (end == s || *end || !(v > 0) || !isfinite(v)) {
        fprintf(stderr, "mkmodel: %s needs a positive number\n", opt);
        return 0;
    }
    *out = v;
    return 1;
}

int main(int argc, char **argv) {
    spec_t sp = {2, 64, 4, 1000, 128, 0, 0, 1, 0.02, 0, 1, "gelu_new", 0, 0, 0, 10000.0};
    const char *out = NULL, *prompts = NULL, *lengths = NULL;
    /* Past ulimit -f a write fails (EFBIG) and is reported, rather than SIGXFSZ killing the process. */
    struct sigaction xfsz;
    if (!sigaction(SIGXFSZ, NULL, &xfsz) && xfsz.sa_handler == SIG_DFL) signal(SIGXFSZ, SIG_IGN);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int64_t x;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--untied")) {
            sp.untied = 1;
            continue;
        } else if (!strcmp(a, "--no-prefix")) {
            sp.prefix = 0;
            continue;
        }
        /* An unknown option is named as such, also as the last argument (not "needs a value"). */
        static const char *valued[] = {"--out", "--prompts", "--lengths", "--act", "--dtype", "--family", "--rope-theta",
                                       "--std", "--seed", "--layers", "--d", "--heads", "--vocab", "--positions",
                                       "--inner", "--kv-heads", "--head-dim"};
        int known = 0;
        for (size_t k = 0; k < sizeof valued / sizeof *valued; k++) known |= !strcmp(a, valued[k]);
        if (!known) {
            fprintf(stderr, "mkmodel: unknown option %s\n", a);
            usage(stderr);
            return 2;
        }
        if (!v) {
            fprintf(stderr, "mkmodel: %s needs a value\n", a);
            usage(stderr);
            return 2;
        }
        i++;
        if (!strcmp(a, "--out")) out = v;
        else if (!strcmp(a, "--prompts")) prompts = v;
        else if (!strcmp(a, "--lengths")) lengths = v;
        else if (!strcmp(a, "--act")) {
            if (strcmp(v, "gelu_new") && strcmp(v, "gelu")) {
                fprintf(stderr, "mkmodel: --act must be gelu_new or gelu\n");
                return 2;
            }
            sp.act = v;
        } else if (!strcmp(a, "--dtype")) {
            if (!strcmp(v, "f32")) sp.dtype = 0;
            else if (!strcmp(v, "f16")) sp.dtype = 1;
            else if (!strcmp(v, "bf16")) sp.dtype = 2;
            else {
                fprintf(stderr, "mkmodel: --dtype must be f32, f16 or bf16\n");
                return 2;
            }
        } else if (!strcmp(a, "--family")) {
            if (strcmp(v, "gpt2") && strcmp(v, "llama")) {
                fprintf(stderr, "mkmodel: --family must be gpt2 or llama\n");
                return 2;
            }
            sp.llama = !strcmp(v, "llama");
        } else if (!strcmp(a, "--rope-theta")) {
            if (!parse_positive(a, v, &sp.rope_theta)) return 2;
        } else if (!strcmp(a, "--std")) {
            if (!parse_positive(a, v, &sp.std)) return 2;
        } else if (!strcmp(a, "--seed")) {
            char *end;
            errno = 0;
            const int digits = v[0] && !v[strspn(v, "0123456789")]; /* strtoull took ' 1', '+1' and '-1' */
            sp.seed = digits ? strtoull(v, &end, 10) : 0;
            if (!digits || *end || errno) {
                fprintf(stderr, "mkmodel: --seed needs a non-negative integer\n");
                return 2;
            }
        } else {
            int64_t *dst = !strcmp(a, "--layers")      ? &sp.layers
                           : !strcmp(a, "--d")         ? &sp.d
                           : !strcmp(a, "--heads")     ? &sp.heads
                           : !strcmp(a, "--vocab")     ? &sp.vocab
                           : !strcmp(a, "--positions") ? &sp.positions
                           : !strcmp(a, "--inner")     ? &sp.inner
                           : !strcmp(a, "--kv-heads")  ? &sp.kv_heads
                           : !strcmp(a, "--head-dim")  ? &sp.head_dim
                                                       : NULL;
            if (!dst || !parse_i64(a, v, &x)) return 2; /* dst: every name of valued[] above */
            *dst = x;
        }
    }
    if (!out && !prompts) {
        fprintf(stderr, "mkmodel: nothing to do (give --out and/or --prompts)\n");
        usage(stderr);
        return 2;
    }
    if (!!prompts != !!lengths) {
        fprintf(stderr, "mkmodel: --prompts and --lengths go together\n");
        return 2;
    }
    if (lengths && lengths_bad(lengths)) return 2;
    if (sp.inner == 0) sp.inner = 4 * sp.d;
    if ((sp.kv_heads || sp.head_dim) && !sp.llama) {
        fprintf(stderr, "mkmodel: --kv-heads and --head-dim need --family llama\n");
        return 2;
    }
    if (sp.llama) {
        if (!sp.kv_heads) sp.kv_heads = sp.heads;
        if (!sp.head_dim) sp.head_dim = sp.d / sp.heads;
        if (sp.heads % sp.kv_heads || sp.head_dim % 2 || sp.head_dim > 65536 || sp.head_dim * sp.heads > 262144) {
            fprintf(stderr, "mkmodel: unsupported Llama heads (kv-heads must divide heads; head-dim even, at most "
                            "65536; heads x head-dim <= 262144)\n");
            return 2;
        }
    }
    /* Sizes far beyond any real model are refused rather than filling the disk. */
    if ((!sp.llama && sp.d % sp.heads) || sp.layers > 4096 || sp.d > 65536 || sp.inner > 262144 ||
        sp.vocab > 1 << 24 || sp.positions > 1 << 20) {
        fprintf(stderr, "mkmodel: unsupported shape (GPT-2's d must be a multiple of heads; layers <= 4096, "
                        "d <= 65536, inner <= 262144, vocab <= 2^24, positions <= 2^20)\n");
        return 2;
    }
    if (out) {
        /* A symbolic link to a folder is written in; one that dangles, the folder it names is created */
        char *dir = NULL;
        if (ss_out_target(out, &dir)) {
            fprintf(stderr, "mkmodel: %s\n", ss_last_error());
            return 1;
        }
        const int created = mkdir(dir, 0777) == 0;
        if (!created && errno != EEXIST) {
            fprintf(stderr, "mkmodel: cannot create %s: %s\n", dir, strerror(errno));
            free(dir);
            return 1;
        }
        int64_t n_params = 0;
        /* Both files are written under their temporary names before either is put in place: a
         * failure leaves an earlier run's pair as it was, never new weights beside an old config.json. */
        if (created) ss_tmp_register(dir); /* a signal removes it once its files are gone */
        staged_t staged[2] = {{0}};
        if (write_weights(&sp, out, &n_params, &staged[0]) || write_config(&sp, out, &staged[1]) ||
            put_in_place(staged, 2)) {
            drop_staged(staged, 2);
            if (created) rmdir(dir);
            free(dir);
            return 1;
        }
        if (created) ss_tmp_unregister(dir);
        free(dir);
        printf("%lld\n", (long long)n_params);
    }
    if (prompts && write_prompts(prompts, lengths, sp.vocab, sp.seed)) return 1;
    return 0;
}
