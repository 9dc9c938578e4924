/* The forward pass through the backend interface: a "device" backend that
 * keeps its buffers apart from the host (CPU ops behind upload/download and
 * host_memory = 0) must give exactly the CPU results, hooks must see and be
 * able to change values on both, and packing must not mix sequences. */
#include <math.h>
#include <stdlib.h>

#include "blas_rows.h"
#include "subscope/forward.h"
#include "subscope/util.h"
#include "test.h"

static ss_backend fake_device(void) {
    ss_backend b = *ss_backend_cpu();
    b.name = "fake-device";
    b.host_memory = 0;
    return b;
}

typedef struct {
    float *store[64];   /* per site id: packed copy of what the hook saw */
    int zero_site;      /* site id to zero, or -1 */
    int calls;
} hook_rec;

static ss_status record(void *vctx, const ss_site *s, float *data, int64_t ld, const ss_packing *pk,
                        const int64_t *pattern_off) {
    hook_rec *r = vctx;
    r->calls++;
    size_t n = s->per_token ? (size_t)(pk->rows * s->width) : 0;
    if (!s->per_token)
        for (int64_t q = 0; q < pk->n_seq; q++) n += (size_t)(s->dims[0] * pk->len[q] * pk->len[q]);
    float *copy = malloc(n * sizeof(float));
    if (!copy) return SS_ERR_NOMEM;
    if (s->per_token) {
        for (int64_t i = 0; i < pk->rows; i++) {
            if (s->id == r->zero_site)
                for (int64_t e = 0; e < s->width; e++) data[i * ld + e] = 0.f;
            memcpy(copy + i * s->width, data + i * ld, (size_t)s->width * sizeof(float));
        }
    } else {
        memcpy(copy, data, n * sizeof(float));
        (void)pattern_off;
    }
    free(r->store[s->id]);
    r->store[s->id] = copy;
    return SS_OK;
}

static void rec_free(hook_rec *r) {
    for (int i = 0; i < 64; i++) free(r->store[i]);
}

static ss_model *load(const char *name) {
    char dir[512];
    snprintf(dir, sizeof dir, "%s/models/%s", ss_test_data_dir(), name);
    ss_model *m = NULL;
    if (ss_model_load(dir, &m) != SS_OK) {
        ss_test_fail(__FILE__, __LINE__, "loading %s: %s", dir, ss_last_error());
        return NULL;
    }
    return m;
}

TEST(forward_device_backend_matches_cpu_and_hooks_edit_values) {
    ss_model *m = load("prefix-f32");
    if (!m) return;
    ss_backend dev = fake_device();
    CHECK_OK(ss_model_place(m, &dev, SS_WDTYPE_F32));
    CHECK(ss_model_weights(m, &dev) != &m->w && ss_model_weights(m, &dev)->wte != m->w.wte);
    int32_t toks[9] = {5, 17, 3, 96, 0, 44, 12, 12, 7};
    int64_t start[2] = {0, 4}, len[2] = {4, 5};
    ss_packing pk = {2, 9, start, len, 0};
    int ns = ss_sites_count(&m->cfg);
    uint8_t *want = calloc((size_t)ns, 1);
    memset(want, 1, (size_t)ns);
    for (int zero = 0; zero < 2; zero++) {
        hook_rec a = {.zero_site = zero ? ss_site_id(&m->cfg, SS_SITE_MLP_POST, 0) : -1};
        hook_rec b = a;
        ss_forward_opts oa = {.want = want, .hook = record, .hook_ctx = &a, .logits = SS_LOGITS_ALL},
                        ob = {.want = want, .hook = record, .hook_ctx = &b, .logits = SS_LOGITS_ALL};
        float *la = NULL, *lb = NULL;
        CHECK_OK(ss_forward(m, ss_backend_cpu(), toks, &pk, &oa, &la));
        CHECK_OK(ss_forward(m, &dev, toks, &pk, &ob, &lb));
        CHECK(a.calls == ns && b.calls == ns);
        CHECK(!memcmp(la, lb, 9 * 97 * sizeof(float)));
        for (int i = 0; i < ns; i++) {
            ss_site s;
            ss_site_get(&m->cfg, i, &s);
            size_t n = s.per_token ? (size_t)(9 * s.width) : (size_t)(4 * (16 + 25));
            CHECK_MSG(!memcmp(a.store[i], b.store[i], n * sizeof(float)), "site %s differs", s.name);
        }
        /* Zeroing MLP neurons of block 0 propagates: its MLP output is exactly the bias. */
        if (zero) {
            int out_id = ss_site_id(&m->cfg, SS_SITE_MLP_OUT, 0);
            for (int64_t i = 0; i < 9; i++)
                for (int64_t e = 0; e < 32; e++) CHECK(b.store[out_id][i * 32 + e] == ((const float *)m->w.layers[0].fc2_b)[e]);
        }
        free(la);
        free(lb);
        rec_free(&a);
        rec_free(&b);
    }
    free(want);
    ss_model_free(m);
}

TEST(forward_packing_does_not_mix_sequences) {
    ss_model *m = load("noprefix-odd-untied");
    if (!m) return;
    int32_t toks[10] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
    int64_t s1[1] = {0}, l1[1] = {3}, s2[2] = {0, 3}, l2[2] = {3, 7};
    ss_packing alone = {1, 3, s1, l1, 0}, packed = {2, 10, s2, l2, 0};
    ss_forward_opts o = {.logits = SS_LOGITS_ALL};
    float *la = NULL, *lb = NULL;
    CHECK_OK(ss_forward(m, ss_backend_cpu(), toks, &alone, &o, &la));
    CHECK_OK(ss_forward(m, ss_backend_cpu(), toks, &packed, &o, &lb));
    for (int i = 0; i < 3 * 101; i++) CHECK_NEAR(la[i], lb[i], 1e-5 + 1e-5 * fabs(la[i]));
    /* The second sequence starts fresh at position 0: its first logits equal token 4 alone. */
    float *lc = NULL;
    int64_t l3[1] = {1};
    ss_packing one = {1, 1, s1, l3, 0};
    CHECK_OK(ss_forward(m, ss_backend_cpu(), toks + 3, &one, &o, &lc));
    for (int i = 0; i < 101; i++) CHECK_NEAR(lc[i], lb[3 * 101 + i], 1e-5 + 1e-5 * fabs(lc[i]));
    /* SS_LOGITS_LAST returns exactly the last row of each sequence. */
    float *ll = NULL;
    o.logits = SS_LOGITS_LAST;
    CHECK_OK(ss_forward(m, ss_backend_cpu(), toks, &packed, &o, &ll));
    for (int i = 0; i < 101; i++) {
        CHECK_NEAR(ll[i], lb[2 * 101 + i], 1e-5 + 1e-5 * fabs(ll[i]));
        CHECK_NEAR(ll[101 + i], lb[9 * 101 + i], 1e-5 + 1e-5 * fabs(ll[i]));
    }
    free(la); free(lb); free(lc); free(ll);
    ss_model_free(m);
}

TEST(forward_rejects_bad_ids_and_lengths) {
    ss_model *m = load("noprefix-odd-untied");
    if (!m) return;
    int32_t toks[30] = {0};
    int64_t s[1] = {0}, l[1] = {25};
    ss_packing pk = {1, 25, s, l, 0};
    ss_forward_opts o = {.logits = SS_LOGITS_NONE};
    CHECK_ERR(ss_forward(m, ss_backend_cpu(), toks, &pk, &o, NULL), SS_ERR_ARG, "lengths must be 1..24");
    toks[2] = 101;
    l[0] = 3;
    pk.rows = 3;
    CHECK_ERR(ss_forward(m, ss_backend_cpu(), toks, &pk, &o, NULL), SS_ERR_ARG, "token id 101 is outside");
    ss_model_free(m);
}

static ss_status keep_resid(void *vctx, const ss_site *s, float *data, int64_t ld, const ss_packing *pk,
                            const int64_t *pattern_off) {
    float *dst = vctx;
    for (int64_t r = 0; r < pk->rows; r++) memcpy(dst + r * s->width, data + r * ld, (size_t)s->width * sizeof(float));
    return SS_OK;
}

TEST(forward_resumes_from_a_layer_bit_exactly) {
    ss_model *m = load("noprefix-odd-untied");
    if (!m) return;
    int32_t toks[9] = {3, 1, 4, 1, 5, 9, 2, 6, 5};
    int64_t start[2] = {0, 4}, len[2] = {4, 5};
    ss_packing pk = {2, 9, start, len, 0};
    uint8_t want[64] = {0};
    want[ss_site_id(&m->cfg, SS_SITE_RESID_PRE, 2)] = 1;
    float resid[9 * 24];
    ss_forward_opts full = {.want = want, .hook = keep_resid, .hook_ctx = resid, .logits = SS_LOGITS_ALL};
    float *la = NULL, *lb = NULL;
    CHECK_OK(ss_forward(m, ss_backend_cpu(), toks, &pk, &full, &la));
    ss_forward_opts part = {.logits = SS_LOGITS_ALL, .start_layer = 2, .start_resid = resid};
    CHECK_OK(ss_forward(m, ss_backend_cpu(), toks, &pk, &part, &lb));
    CHECK(!memcmp(la, lb, 9 * 101 * sizeof(float)));
    /* three copies of the batch from one copy's rows (start_copies), as
     * ablate runs K masks: each copy's logits are the batch's */
    int32_t toks3[27];
    int64_t start3[6], len3[6];
    for (int k = 0; k < 3; k++) {
        memcpy(toks3 + 9 * k, toks, sizeof toks);
        for (int q = 0; q < 2; q++) start3[2 * k + q] = 9 * k + start[q], len3[2 * k + q] = len[q];
    }
    ss_packing pk3 = {6, 27, start3, len3, 0};
    ss_forward_opts three = {.logits = SS_LOGITS_ALL, .start_layer = 2, .start_resid = resid, .start_copies = 3};
    float *l3 = NULL;
    CHECK_OK(ss_forward(m, ss_backend_cpu(), toks3, &pk3, &three, &l3));
    /* the same bits where the BLAS gives a row the same bits in a call of 27 rows as of 9
     * (blas_rows.h: not OpenBLAS's generic kernel), else within fp32 rounding */
    const int exact = blas_rows_invariant();
    for (int k = 0; l3 && k < 3; k++) {
        if (exact) {
            CHECK(!memcmp(la, l3 + k * 9 * 101, 9 * 101 * sizeof(float)));
            continue;
        }
        for (int i = 0; i < 9 * 101; i++)
            CHECK_MSG(fabsf(la[i] - l3[k * 9 * 101 + i]) <= 1e-5f * (1.0f + fabsf(la[i])), "copy %d logit %d: %g vs %g", k, i,
                      (double)l3[k * 9 * 101 + i], (double)la[i]);
    }
    free(l3);
    three.start_copies = 2; /* 27 rows are not 2 copies */
    l3 = NULL;
    CHECK_ERR(ss_forward(m, ss_backend_cpu(), toks3, &pk3, &three, &l3), SS_ERR_ARG, "a multiple of its copies (2)");
    ss_forward_opts bad = {.logits = SS_LOGITS_ALL, .start_layer = 2};
    float *lc = NULL;
    CHECK_ERR(ss_forward(m, ss_backend_cpu(), toks, &pk, &bad, &lc), SS_ERR_ARG, "start_layer 2 needs a residual");
    free(la);
    free(lb);
    ss_model_free(m);
}

static ss_config split_config(int64_t n_layer, int64_t d, int64_t vocab) {
    ss_config c = {.family = SS_FAMILY_GPT2, .n_layer = n_layer, .n_head = 4, .n_embd = d, .n_positions = 64,
                   .vocab_size = vocab, .n_inner = 4 * d, .tie_word_embeddings = 1};
    return c;
}

/* How --pipeline splits the blocks: balanced by multiply-adds (the head's
 * d*V on the last stage when the job scores logits), evenly without a head
 * or with "even", or as --pipeline-blocks lists them, with every malformed
 * list refused by name. */
TEST(pipeline_split_balanced_even_and_listed) {
    int f[64], g[64];
    ss_config c = split_config(10, 64, 64);
    /* Without a head (or with "even") the balanced split is the even one: the first stages one block more. */
    for (int64_t L = 1; L <= 24; L++)
        for (int P = 1; P <= L && P <= 12; P++) {
            c.n_layer = L;
            CHECK_OK(ss_pipeline_split(&c, P, NULL, 0, 0, f));
            CHECK_OK(ss_pipeline_split(&c, P, "even", 1, 0, g));
            for (int s = 0; s <= P; s++) {
                const int64_t want = s * (L / P) + (s < L % P ? s : L % P);
                CHECK(f[s] == want && g[s] == want);
            }
        }
    /* GPT-2 small: 12 blocks of 12*768^2 multiply-adds per token, a head of 768*50257 (5.45 blocks). */
    c = split_config(12, 768, 50257);
    CHECK(ss_config_block_macs(&c) == 12 * 768 * 768);
    CHECK_OK(ss_pipeline_split(&c, 2, NULL, 1, 0, f)); /* 9 | 3 + 5.45 */
    CHECK(f[0] == 0 && f[1] == 9 && f[2] == 12);
    CHECK_OK(ss_pipeline_split(&c, 4, NULL, 1, 0, f)); /* 4 4 3 | 1 + 5.45: the head alone outweighs a share */
    CHECK(f[1] == 4 && f[2] == 8 && f[3] == 11 && f[4] == 12);
    CHECK_OK(ss_pipeline_split(&c, 2, NULL, 0, 0, f));
    CHECK(f[1] == 6);
    /* A small head: 8 blocks of d 512, vocabulary 2048 (0.33 blocks) stay 4 | 4; 16384 (2.7 blocks) give 5 | 3. */
    c = split_config(8, 512, 2048);
    CHECK_OK(ss_pipeline_split(&c, 2, NULL, 1, 0, f));
    CHECK(f[1] == 4);
    c.vocab_size = 16384;
    CHECK_OK(ss_pipeline_split(&c, 2, NULL, 1, 0, f));
    CHECK(f[1] == 5);
    /* Llama-2-70B: 80 blocks, the head 1.23 blocks: 21 20 20 | 19 (what DISTRIBUTED.md suggests by hand). */
    const ss_config l = {.family = SS_FAMILY_LLAMA, .n_layer = 80, .n_head = 64, .n_kv_head = 8, .n_embd = 8192,
                         .n_positions = 4096, .vocab_size = 128256, .n_inner = 28672};
    CHECK_OK(ss_pipeline_split(&l, 4, NULL, 1, 0, f));
    CHECK(f[1] == 21 && f[2] == 41 && f[3] == 61 && f[4] == 80);
    /* A memory limit comes first: GPT-2 small's first stage of 9 blocks and the embeddings (394 MiB of fp32)
     * does not fit in 350 MiB; the fastest split that fits (7 | 5: 340 and 282 MiB) is taken instead. */
    c = split_config(12, 768, 50257);
    c.n_positions = 1024;
    const int64_t lim = 350ll << 20;
    CHECK_OK(ss_pipeline_split(&c, 2, NULL, 1, lim, f));
    CHECK(f[1] == 7);
    CHECK(4 * ss_config_stage_params(&c, 0, 7) <= lim && 4 * ss_config_stage_params(&c, 7, 12) <= lim);
    CHECK(4 * ss_config_stage_params(&c, 0, 8) > lim);
    /* Stage parameters add up to the model's. */
    CHECK(ss_config_stage_params(&c, 0, 7) + ss_config_stage_params(&c, 7, 12) - 50257 * 768 == ss_config_n_params(&c));
    c = split_config(10, 64, 64);
    CHECK_OK(ss_pipeline_split(&c, 2, "9,1", 1, 0, f));
    CHECK(f[0] == 0 && f[1] == 9 && f[2] == 10);
    CHECK_OK(ss_pipeline_split(&c, 3, "1,8,1", 1, 0, f));
    CHECK(f[1] == 1 && f[2] == 9 && f[3] == 10);
    c.n_layer = 4;
    CHECK_ERR(ss_pipeline_split(&c, 5, NULL, 1, 0, f), SS_ERR_ARG, "only 4 blocks");
    c.n_layer = 12;
    CHECK_ERR(ss_pipeline_split(&c, 2, "9,2", 1, 0, f), SS_ERR_ARG, "add up to 11");
    CHECK_ERR(ss_pipeline_split(&c, 3, "9,3,1", 1, 0, f), SS_ERR_ARG, "add up to 13");
    CHECK_ERR(ss_pipeline_split(&c, 2, "12,0", 1, 0, f), SS_ERR_ARG, "at least 1");
    CHECK_ERR(ss_pipeline_split(&c, 2, "12", 1, 0, f), SS_ERR_ARG, "expected 2 block counts");
    CHECK_ERR(ss_pipeline_split(&c, 2, "6,6,", 1, 0, f), SS_ERR_ARG, "more block counts");
    CHECK_ERR(ss_pipeline_split(&c, 2, "6;6", 1, 0, f), SS_ERR_ARG, "expected 2 block counts");
    CHECK_ERR(ss_pipeline_split(&c, 2, "", 1, 0, f), SS_ERR_ARG, "expected 2 block counts");
    CHECK_ERR(ss_pipeline_split(&c, 2, "-1,13", 1, 0, f), SS_ERR_ARG, "at least 1");
    CHECK_ERR(ss_pipeline_split(&c, 2, "evenly", 1, 0, f), SS_ERR_ARG, "expected 2 block counts");
    /* digits only: strtol took a leading space or '+' */
    CHECK_ERR(ss_pipeline_split(&c, 2, "+6,6", 1, 0, f), SS_ERR_ARG, "expected 2 block counts");
    CHECK_ERR(ss_pipeline_split(&c, 2, "6, 6", 1, 0, f), SS_ERR_ARG, "expected 2 block counts");
    CHECK_ERR(ss_pipeline_split(&c, 2, " 6,6", 1, 0, f), SS_ERR_ARG, "expected 2 block counts");
}

/* The per-stage parameter counts that `info --config` and the balanced
 * split use equal what a stage loads (ss_model_weight_bytes, what
 * --max-memory limits, which also counts the Llama family's d_head/2 rotary
 * frequencies), for GPT-2 and Llama models, tied and untied. */
TEST(stage_params_match_loaded_stages) {
    const char *names[] = {"prefix-f32", "noprefix-odd-untied", "llama-hd6-bias", "qwen2-bias-tied", "mistral-small"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        char dir[512];
        snprintf(dir, sizeof dir, "%s/models/%s", ss_test_data_dir(), names[i]);
        ss_model *whole;
        CHECK_OK(ss_model_load(dir, &whole));
        if (!whole) continue;
        const ss_config c = whole->cfg;
        const int64_t rope = c.family == SS_FAMILY_LLAMA ? 4 * (ss_config_d_head(&c) / 2) : 0;
        CHECK(ss_model_weight_bytes(whole) == 4 * ss_config_n_params(&c) + rope);
        ss_model_free(whole);
        for (int first = 0; first < c.n_layer; first++) {
            const int end = first + 1 + (first + 1 < c.n_layer ? (int)(c.n_layer - first - 1) / 2 : 0);
            ss_model *m;
            CHECK_OK(ss_model_load_layers(dir, first, end, &m));
            if (!m) continue;
            CHECK(ss_model_weight_bytes(m) == 4 * ss_config_stage_params(&c, first, end) + rope);
            ss_model_free(m);
        }
    }
}

/* Greedy decoding with a key/value cache (predict --generate): a prompt run
 * into the cache, then one token at a time up to n_positions, each step's
 * logits against a full forward pass over the prompt so far (independent of
 * the cache). Only the summation order of the products differs (one row
 * against many), so the logits agree to 1e-5 of the row's largest (seen:
 * 0 to 1.3e-6). Covers
 * GPT-2's learned positions, Llama's rotations with grouped (6/2) and single
 * (4/1) key/value heads, Mistral and bf16 weights. A token past the cache's
 * room is refused and leaves the cache as it was. */
TEST(forward_kv_cache_matches_full_passes) {
    static const char *const names[] = {"prefix-f32", "llama-gqa-llama3", "llama-hd6-bias", "mistral-small", "bf16"};
    for (size_t k = 0; k < sizeof names / sizeof *names; k++) {
        ss_model *m = load(names[k]);
        if (!m) return;
        const ss_backend *be = ss_backend_cpu();
        const int64_t V = m->cfg.vocab_size, ctx = m->cfg.n_positions, n0 = ctx / 2;
        int32_t *ids = malloc((size_t)(ctx + 1) * sizeof *ids);
        uint64_t seed = 12345 + k;
        for (int64_t i = 0; i < n0; i++) {
            seed = seed * 6364136223846793005ull + 1442695040888963407ull;
            ids[i] = (int32_t)((seed >> 33) % (uint64_t)V);
        }
        ss_kv_cache *kv = NULL;
        CHECK_OK(ss_kv_cache_open(m, be, ctx, &kv));
        int64_t steps = 0;
        for (int64_t n = n0; n <= ctx; n++, steps++) {
            const int64_t have = ss_kv_cache_len(kv), add = n - have, zero = 0;
            ss_packing pc = {1, add, &zero, &add, 0}, pf = {1, n, &zero, &n, 0};
            ss_forward_opts oc = {.logits = SS_LOGITS_LAST, .kv = kv}, of = {.logits = SS_LOGITS_LAST};
            float *lc = NULL, *lf = NULL;
            CHECK_OK(ss_forward(m, be, ids + have, &pc, &oc, &lc));
            CHECK_OK(ss_forward(m, be, ids, &pf, &of, &lf));
            CHECK(ss_kv_cache_len(kv) == n);
            if (!lc || !lf) { free(lc); free(lf); break; }
            double mx = 0, diff = 0;
            int64_t best = 0;
            for (int64_t v = 0; v < V; v++) {
                mx = fabs(lf[v]) > mx ? fabs(lf[v]) : mx;
                diff = fabs(lc[v] - lf[v]) > diff ? fabs(lc[v] - lf[v]) : diff;
                if (lf[v] > lf[best]) best = v;
            }
            CHECK_MSG(diff <= 1e-5 * mx, "%s, %lld tokens: cached logits differ by %g (largest %g)", names[k],
                      (long long)n, diff, mx);
            ids[n] = (int32_t)best;
            free(lc);
            free(lf);
        }
        CHECK(steps == ctx - n0 + 1);
        const int64_t one = 1, zero = 0;
        ss_packing p1 = {1, 1, &zero, &one, 0};
        ss_forward_opts oc = {.logits = SS_LOGITS_LAST, .kv = kv};
        float *lg = NULL;
        CHECK_ERR(ss_forward(m, be, ids + ctx, &p1, &oc, &lg), SS_ERR_ARG, "fits its");
        CHECK(lg == NULL && ss_kv_cache_len(kv) == ctx);
        ss_kv_cache_close(kv);
        free(ids);
        ss_model_free(m);
    }
}
