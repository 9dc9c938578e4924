/* The backward pass on the CPU reference: site and weight gradients against
 * central finite differences of the metric (Richardson-extrapolated, so the
 * truncation error is O(h⁴) and what is left is fp32 rounding of the
 * forward), the metrics against the forward's logits, recompute against
 * keeping activations, and the errors. The PyTorch autograd comparison is
 * in tests/cli/test_attribute.sh. */
#include <math.h>
#include <stdlib.h>

#include "subscope/backward.h"
#include "subscope/jobs.h"
#include "subscope/util.h"
#include "test.h"

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

/* Packed copies of what a hook saw, per site id. */
typedef struct {
    float *store[128];
} grads;

static ss_status keep(void *vctx, const ss_site *s, float *data, int64_t ld, const ss_packing *pk,
                      const int64_t *pattern_off) {
    (void)pattern_off;
    grads *g = vctx;
    float *copy = malloc((size_t)(pk->rows * s->width) * sizeof(float));
    if (!copy) return SS_ERR_NOMEM;
    for (int64_t i = 0; i < pk->rows; i++) memcpy(copy + i * s->width, data + i * ld, (size_t)s->width * sizeof(float));
    free(g->store[s->id]);
    g->store[s->id] = copy;
    return SS_OK;
}

static void grads_free(grads *g) {
    for (int i = 0; i < 128; i++) free(g->store[i]);
}

/* A forward hook that adds delta to one unit of one row of one site. */
typedef struct {
    int site;
    int64_t row, unit;
    float delta;
} nudge;

static ss_status nudge_hook(void *vctx, const ss_site *s, float *data, int64_t ld, const ss_packing *pk,
                            const int64_t *pattern_off) {
    (void)pk, (void)pattern_off;
    const nudge *n = vctx;
    if (s->id == n->site) data[n->row * ld + n->unit] += n->delta;
    return SS_OK;
}

static const int32_t TOKS[9] = {5, 17, 3, 60, 0, 44, 12, 12, 7};
static int64_t START[2] = {0, 4}, LEN[2] = {4, 5};
static const int32_t ANSWER[2] = {7, 11}, WRONG[2] = {2, 40};

/* The metric of the sequence holding `row`, with one unit of a site nudged. */
static double metric_nudged(const ss_model *m, const uint8_t *want, const ss_metric *mt, int site, int64_t row,
                            int64_t unit, float delta) {
    ss_packing pk = {2, 9, START, LEN, 0};
    nudge n = {site, row, unit, delta};
    ss_forward_opts fo = {.want = want, .hook = nudge_hook, .hook_ctx = &n};
    double out[2];
    if (ss_forward_backward(m, ss_backend_cpu(), TOKS, &pk, &fo, mt, NULL, out)) return NAN;
    return out[row < 4 ? 0 : 1];
}

/* Central differences at h and h/2, combined by Richardson extrapolation. */
static double fd(double (*f)(void *, float), void *ctx, float h) {
    double d1 = (f(ctx, h) - f(ctx, -h)) / (2.0 * h), d2 = (f(ctx, h / 2) - f(ctx, -h / 2)) / (double)h;
    return (4.0 * d2 - d1) / 3.0;
}

typedef struct {
    const ss_model *m;
    const uint8_t *want;
    const ss_metric *mt;
    int site;
    int64_t row, unit;
} site_fd;

static double site_eval(void *vctx, float delta) {
    const site_fd *c = vctx;
    return metric_nudged(c->m, c->want, c->mt, c->site, c->row, c->unit, delta);
}

/* |fd - g| <= 5e-4 + 1e-2·|g|: the metrics (~1..5) carry ~1e-6 of fp32
 * rounding from the logits; over 2h = 2e-2 and through the extrapolation
 * that is ~1e-4 in the difference quotient. */
static void check_sites_against_fd(const char *model) {
    ss_model *m = load(model);
    if (!m) return;
    const ss_config *c = &m->cfg;
    const int ns = ss_sites_count(c);
    uint8_t *want = calloc((size_t)ns, 1);
    ss_site s;
    for (int i = 0; i < ns; i++) {
        ss_site_get(c, i, &s);
        want[i] = (uint8_t)s.per_token;
    }
    ss_packing pk = {2, 9, START, LEN, 0};
    const ss_metric_kind kinds[3] = {SS_METRIC_LOSS, SS_METRIC_LOGITDIFF, SS_METRIC_LOGPROB};
    int checked = 0;
    double worst = 0;
    for (int k = 0; k < 3; k++) {
        ss_metric mt = {kinds[k], ANSWER, WRONG};
        grads g = {{0}};
        ss_grad_opts go = {.want = want, .hook = keep, .hook_ctx = &g};
        double met[2];
        CHECK_OK(ss_forward_backward(m, ss_backend_cpu(), TOKS, &pk, NULL, &mt, &go, met));
        for (int i = 0; i < ns; i++) {
            if (!want[i]) continue;
            ss_site_get(c, i, &s);
            CHECK_MSG(g.store[i], "%s: no gradient reported at %s", model, s.name);
            /* Three (row, unit) samples per site: a first, a middle and a last position. */
            const int64_t rows[3] = {0, 5, 8};
            for (int t = 0; t < 3; t++) {
                int64_t unit = (i * 7 + t * 13) % s.width;
                site_fd ctx = {m, want, &mt, i, rows[t], unit};
                double num = fd(site_eval, &ctx, 1e-2f), an = g.store[i][rows[t] * s.width + unit];
                double err = fabs(num - an);
                worst = err > worst ? err : worst;
                CHECK_MSG(err <= 5e-4 + 1e-2 * fabs(an), "%s metric %s site %s row %lld unit %lld: backward %.7g, finite differences %.7g",
                          model, ss_metric_name(kinds[k]), s.name, (long long)rows[t], (long long)unit, an, num);
                checked++;
            }
        }
        grads_free(&g);
    }
    printf("    %s: %d site gradients within tolerance of finite differences (max abs err %.2e)\n", model, checked, worst);
    free(want);
    ss_model_free(m);
}

TEST(backward_site_gradients_match_finite_differences_tied_tanh) { check_sites_against_fd("prefix-f32"); }
TEST(backward_site_gradients_match_finite_differences_untied_erf) { check_sites_against_fd("noprefix-odd-untied"); }
/* Llama family: GQA 4/1 with head_dim 6, every bias, linear rope scaling; Qwen2 biases, tied. */
TEST(backward_site_gradients_match_finite_differences_llama) { check_sites_against_fd("llama-hd6-bias"); }
TEST(backward_site_gradients_match_finite_differences_qwen2) { check_sites_against_fd("qwen2-bias-tied"); }

/* Weight gradients: each sampled weight is swapped for a writable copy and nudged. */
typedef struct {
    const ss_model *m;
    float *w;
    int64_t idx;
    const ss_metric *mt;
} weight_fd;

static double weight_eval(void *vctx, float delta) {
    const weight_fd *c = vctx;
    ss_packing pk = {2, 9, START, LEN, 0};
    float keep_v = c->w[c->idx];
    c->w[c->idx] = keep_v + delta;
    double out[2];
    ss_status st = ss_forward_backward(c->m, ss_backend_cpu(), TOKS, &pk, NULL, c->mt, NULL, out);
    c->w[c->idx] = keep_v;
    return st ? NAN : out[0] + out[1];
}

static float *writable(const void **slot, size_t n, float **owned, int *n_owned) {
    float *cp = malloc(n * sizeof(float));
    memcpy(cp, *slot, n * sizeof(float));
    *slot = cp;
    owned[(*n_owned)++] = cp;
    return cp;
}

static void check_weights_against_fd(const char *model) {
    ss_model *m = load(model);
    if (!m) return;
    const ss_config *c = &m->cfg;
    const int64_t d = c->n_embd, dm = c->n_inner, V = c->vocab_size;
    ss_packing pk = {2, 9, START, LEN, 0};
    ss_metric mt = {SS_METRIC_LOSS, ANSWER, WRONG};
    ss_gpt2_weights wg;
    CHECK_OK(ss_grads_alloc(m, ss_backend_cpu(), &wg));
    ss_grad_opts go = {.wgrad = &wg};
    CHECK_OK(ss_forward_backward(m, ss_backend_cpu(), TOKS, &pk, NULL, &mt, &go, NULL));
    const int tied = m->w.lm_head == m->w.wte;
    CHECK(tied == (wg.lm_head == wg.wte));
    /* Writable copies of the weights we nudge (the loaded ones are mapped read-only). */
    float *owned[32];
    int n_owned = 0;
    const void *orig_wte = m->w.wte, *orig_lm = m->w.lm_head;
    float *wte = writable(&m->w.wte, (size_t)(V * d), owned, &n_owned);
    if (tied) m->w.lm_head = wte;
    float *lm = tied ? wte : writable(&m->w.lm_head, (size_t)(V * d), owned, &n_owned);
    ss_gpt2_layer keep_l0 = m->w.layers[0], keep_l1 = m->w.layers[c->n_layer - 1];
    const void *keep_wpe = m->w.wpe, *keep_lnf = m->w.lnf_w;
    float *wpe = writable(&m->w.wpe, (size_t)(c->n_positions * d), owned, &n_owned);
    float *lnf_w = writable(&m->w.lnf_w, (size_t)d, owned, &n_owned);
    ss_gpt2_layer *L0 = &m->w.layers[0], *L1 = &m->w.layers[c->n_layer - 1];
    float *ln1_w = writable(&L0->ln1_w, (size_t)d, owned, &n_owned);
    float *attn_w = writable(&L0->attn_w, (size_t)(d * 3 * d), owned, &n_owned);
    float *attn_b = writable(&L0->attn_b, (size_t)(3 * d), owned, &n_owned);
    float *proj_w = writable(&L1->proj_w, (size_t)(d * d), owned, &n_owned);
    float *ln2_b = writable(&L1->ln2_b, (size_t)d, owned, &n_owned);
    float *fc_w = writable(&L1->fc_w, (size_t)(d * dm), owned, &n_owned);
    float *fc_b = writable(&L0->fc_b, (size_t)dm, owned, &n_owned);
    float *fc2_w = writable(&L0->fc2_w, (size_t)(dm * d), owned, &n_owned);
    float *fc2_b = writable(&L1->fc2_b, (size_t)d, owned, &n_owned);
    const ss_gpt2_layer *G0 = &wg.layers[0], *G1 = &wg.layers[c->n_layer - 1];
    struct {
        const char *name;
        float *w;
        const float *g;
        int64_t idx;
    } cases[] = {
        {"wte[token 12]", wte, wg.wte, 12 * d + 3},   /* a token that occurs: embedding (and, tied, unembedding) */
        {"wte[token 1]", wte, wg.wte, 1 * d + 2},     /* one that does not: unembedding only */
        {"lm_head", lm, wg.lm_head, 7 * d + 1},
        {"wpe[3]", wpe, wg.wpe, 3 * d + 5},
        {"ln_f.weight", lnf_w, wg.lnf_w, 4},
        {"h.0.ln_1.weight", ln1_w, G0->ln1_w, 6},
        {"h.0.attn.c_attn.weight (q)", attn_w, G0->attn_w, 2 * 3 * d + 1},
        {"h.0.attn.c_attn.weight (k)", attn_w, G0->attn_w, 5 * 3 * d + d + 2},
        {"h.0.attn.c_attn.bias (v)", attn_b, G0->attn_b, 2 * d + 3},
        {"h.L.attn.c_proj.weight", proj_w, G1->proj_w, 3 * d + 4},
        {"h.L.ln_2.bias", ln2_b, G1->ln2_b, 1},
        {"h.L.mlp.c_fc.weight", fc_w, G1->fc_w, 2 * dm + 9},
        {"h.0.mlp.c_fc.bias", fc_b, G0->fc_b, 11},
        {"h.0.mlp.c_proj.weight", fc2_w, G0->fc2_w, 4 * d + 2},
        {"h.L.mlp.c_proj.bias", fc2_b, G1->fc2_b, 3},
    };
    double worst = 0;
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        weight_fd ctx = {m, cases[i].w, cases[i].idx, &mt};
        double num = fd(weight_eval, &ctx, 1e-2f), an = cases[i].g[cases[i].idx], err = fabs(num - an);
        worst = err > worst ? err : worst;
        CHECK_MSG(err <= 5e-4 + 1e-2 * fabs(an), "%s %s: backward %.7g, finite differences %.7g", model,
                  cases[i].name, an, num);
    }
    printf("    %s: %zu weight gradients within tolerance of finite differences (max abs err %.2e)\n", model,
           sizeof cases / sizeof *cases, worst);
    m->w.wte = orig_wte, m->w.lm_head = orig_lm, m->w.wpe = keep_wpe, m->w.lnf_w = keep_lnf;
    m->w.layers[0] = keep_l0, m->w.layers[c->n_layer - 1] = keep_l1;
    for (int i = 0; i < n_owned; i++) free(owned[i]);
    ss_grads_free(ss_backend_cpu(), &wg);
    ss_model_free(m);
}

TEST(backward_weight_gradients_match_finite_differences_tied) { check_weights_against_fd("prefix-f32"); }
TEST(backward_weight_gradients_match_finite_differences_untied) { check_weights_against_fd("noprefix-odd-untied"); }

/* The Llama family's [out, in] matrices with fused q|k|v and gate|up, every bias. */
TEST(backward_weight_gradients_match_finite_differences_llama) {
    const char *model = "llama-hd6-bias";
    ss_model *m = load(model);
    if (!m) return;
    const ss_config *c = &m->cfg;
    const int64_t d = c->n_embd, dm = c->n_inner, dh = ss_config_d_head(c);
    const int64_t qw = (c->n_head + 2 * ss_config_kv_heads(c)) * dh, zw = c->n_head * dh;
    CHECK(c->family == SS_FAMILY_LLAMA && dh * c->n_head != d && m->w.lm_head != m->w.wte);
    ss_packing pk = {2, 9, START, LEN, 0};
    ss_metric mt = {SS_METRIC_LOSS, ANSWER, WRONG};
    ss_gpt2_weights wg;
    CHECK_OK(ss_grads_alloc(m, ss_backend_cpu(), &wg));
    CHECK(wg.rope_inv_freq == NULL && wg.wpe == NULL);
    ss_grad_opts go = {.wgrad = &wg};
    CHECK_OK(ss_forward_backward(m, ss_backend_cpu(), TOKS, &pk, NULL, &mt, &go, NULL));
    float *owned[32];
    int n_owned = 0;
    ss_gpt2_weights keep_w = m->w;
    ss_gpt2_layer keep_l0 = m->w.layers[0], keep_l1 = m->w.layers[c->n_layer - 1];
    ss_gpt2_layer *L0 = &m->w.layers[0], *L1 = &m->w.layers[c->n_layer - 1];
    const ss_gpt2_layer *G0 = &wg.layers[0], *G1 = &wg.layers[c->n_layer - 1];
    float *wte = writable(&m->w.wte, (size_t)(c->vocab_size * d), owned, &n_owned);
    float *lm = writable(&m->w.lm_head, (size_t)(c->vocab_size * d), owned, &n_owned);
    float *lnf_w = writable(&m->w.lnf_w, (size_t)d, owned, &n_owned);
    float *ln1_w = writable(&L0->ln1_w, (size_t)d, owned, &n_owned);
    float *attn_w = writable(&L0->attn_w, (size_t)(qw * d), owned, &n_owned);
    float *attn_b = writable(&L1->attn_b, (size_t)qw, owned, &n_owned);
    float *proj_w = writable(&L1->proj_w, (size_t)(d * zw), owned, &n_owned);
    float *proj_b = writable(&L0->proj_b, (size_t)d, owned, &n_owned);
    float *ln2_w = writable(&L1->ln2_w, (size_t)d, owned, &n_owned);
    float *fc_w = writable(&L0->fc_w, (size_t)(2 * dm * d), owned, &n_owned);
    float *fc_b = writable(&L1->fc_b, (size_t)(2 * dm), owned, &n_owned);
    float *fc2_w = writable(&L1->fc2_w, (size_t)(d * dm), owned, &n_owned);
    float *fc2_b = writable(&L0->fc2_b, (size_t)d, owned, &n_owned);
    struct {
        const char *name;
        float *w;
        const float *g;
        int64_t idx;
    } cases[] = {
        {"embed_tokens[12]", wte, wg.wte, 12 * d + 3},
        {"lm_head", lm, wg.lm_head, 7 * d + 1},
        {"norm.weight", lnf_w, wg.lnf_w, 4},
        {"0.input_layernorm", ln1_w, G0->ln1_w, 6},
        {"0.q_proj", attn_w, G0->attn_w, 2 * d + 1},
        {"0.k_proj", attn_w, G0->attn_w, (zw + 3) * d + 5},
        {"0.v_proj", attn_w, G0->attn_w, (qw - 1) * d + 2},
        {"L.q_proj.bias", attn_b, G1->attn_b, 5},
        {"L.k_proj.bias", attn_b, G1->attn_b, zw + 1},
        {"L.v_proj.bias", attn_b, G1->attn_b, qw - 2},
        {"L.o_proj", proj_w, G1->proj_w, 3 * zw + 4},
        {"0.o_proj.bias", proj_b, G0->proj_b, 2},
        {"L.post_attention_layernorm", ln2_w, G1->ln2_w, 1},
        {"0.gate_proj", fc_w, G0->fc_w, 2 * d + 9},
        {"0.up_proj", fc_w, G0->fc_w, (dm + 7) * d + 3},
        {"L.gate_proj.bias", fc_b, G1->fc_b, 11},
        {"L.up_proj.bias", fc_b, G1->fc_b, dm + 4},
        {"L.down_proj", fc2_w, G1->fc2_w, 4 * dm + 2},
        {"0.down_proj.bias", fc2_b, G0->fc2_b, 3},
    };
    double worst = 0;
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        weight_fd ctx = {m, cases[i].w, cases[i].idx, &mt};
        double num = fd(weight_eval, &ctx, 1e-2f), an = cases[i].g[cases[i].idx], err = fabs(num - an);
        worst = err > worst ? err : worst;
        CHECK_MSG(err <= 5e-4 + 1e-2 * fabs(an), "%s %s: backward %.7g, finite differences %.7g", model,
                  cases[i].name, an, num);
    }
    printf("    %s: %zu weight gradients within tolerance of finite differences (max abs err %.2e)\n", model,
           sizeof cases / sizeof *cases, worst);
    m->w = keep_w;
    m->w.layers[0] = keep_l0, m->w.layers[c->n_layer - 1] = keep_l1;
    for (int i = 0; i < n_owned; i++) free(owned[i]);
    ss_grads_free(ss_backend_cpu(), &wg);
    ss_model_free(m);
}

TEST(backward_metrics_equal_the_forward_logits) {
    ss_model *m = load("noprefix-odd-untied");
    if (!m) return;
    const int64_t V = m->cfg.vocab_size;
    ss_packing pk = {2, 9, START, LEN, 0};
    ss_forward_opts fo = {.logits = SS_LOGITS_ALL};
    float *lg = NULL;
    CHECK_OK(ss_forward(m, ss_backend_cpu(), TOKS, &pk, &fo, &lg));
    double lz[9], met[2];
    ss_log_partition(lg, 9, V, lz);
    for (int k = 0; k < 3; k++) {
        ss_metric mt = {(ss_metric_kind)k, ANSWER, WRONG};
        CHECK_OK(ss_forward_backward(m, ss_backend_cpu(), TOKS, &pk, NULL, &mt, NULL, met));
        for (int s = 0; s < 2; s++) {
            int64_t last = START[s] + LEN[s] - 1;
            double want = 0;
            if (k == SS_METRIC_LOSS) {
                for (int64_t r = START[s]; r < last; r++) want += lz[r] - lg[r * V + TOKS[r + 1]];
                want /= (double)(LEN[s] - 1);
            } else if (k == SS_METRIC_LOGITDIFF) {
                want = (double)lg[last * V + ANSWER[s]] - lg[last * V + WRONG[s]];
            } else {
                want = lg[last * V + ANSWER[s]] - lz[last];
            }
            CHECK_NEAR(met[s], want, 1e-5 + 1e-6 * fabs(want));
        }
    }
    free(lg);
    ss_model_free(m);
}

static int same_grads(const grads *a, const grads *b, int ns, int64_t rows, const ss_config *c) {
    ss_site s;
    for (int i = 0; i < ns; i++) {
        if (!a->store[i] != !b->store[i]) return 0;
        if (!a->store[i]) continue;
        ss_site_get(c, i, &s);
        if (memcmp(a->store[i], b->store[i], (size_t)(rows * s.width) * sizeof(float))) return 0;
    }
    return 1;
}

/* Recomputing each block gives the same gradients bit for bit, and editing
 * forward hooks are honoured in the recomputed blocks. */
TEST(backward_recompute_is_bit_identical) {
    ss_model *m = load("prefix-f32");
    if (!m) return;
    const int ns = ss_sites_count(&m->cfg);
    uint8_t *want = calloc((size_t)ns, 1);
    ss_site s;
    for (int i = 0; i < ns; i++) {
        ss_site_get(&m->cfg, i, &s);
        want[i] = (uint8_t)s.per_token;
    }
    ss_packing pk = {2, 9, START, LEN, 0};
    ss_metric mt = {SS_METRIC_LOSS, NULL, NULL};
    uint8_t *fwant = calloc((size_t)ns, 1);
    fwant[ss_site_id(&m->cfg, SS_SITE_MLP_POST, 0)] = 1;
    nudge n = {ss_site_id(&m->cfg, SS_SITE_MLP_POST, 0), 6, 3, 0.5f};
    ss_forward_opts fo = {.want = fwant, .hook = nudge_hook, .hook_ctx = &n};
    grads a = {{0}}, b = {{0}}, e = {{0}};
    ss_grad_opts ga = {.want = want, .hook = keep, .hook_ctx = &a};
    ss_grad_opts gb = {.want = want, .hook = keep, .hook_ctx = &b, .recompute = 1};
    ss_grad_opts ge = {.want = want, .hook = keep, .hook_ctx = &e};
    CHECK_OK(ss_forward_backward(m, ss_backend_cpu(), TOKS, &pk, &fo, &mt, &ga, NULL));
    CHECK_OK(ss_forward_backward(m, ss_backend_cpu(), TOKS, &pk, &fo, &mt, &gb, NULL));
    CHECK_OK(ss_forward_backward(m, ss_backend_cpu(), TOKS, &pk, NULL, &mt, &ge, NULL));
    CHECK(same_grads(&a, &b, ns, 9, &m->cfg));
    CHECK(!same_grads(&a, &e, ns, 9, &m->cfg)); /* the nudge matters, so recompute must have redone it */
    grads_free(&a), grads_free(&b), grads_free(&e);
    free(want), free(fwant);
    ss_model_free(m);
}

/* The pass stops below the deepest wanted site: asked for one site, it
 * gives that site the same gradient, bit for bit, as a pass asked for every
 * site (with and without recompute), and runs the attention backward only
 * in the blocks at or above the site (counted through a copy of the CPU
 * backend). */
static int attn_bw_calls;
static ss_status (*attn_bw_cpu)(const ss_backend *, float *, float *, float *, int64_t, const float *, const float *,
                                const float *, const float *, int64_t, int64_t, const int64_t *, const int64_t *, int64_t,
                                int64_t, int64_t, float);
static ss_status attn_bw_counted(const ss_backend *be, float *dq, float *dk, float *dv, int64_t ldd, const float *dz,
                                 const float *q, const float *k, const float *v, int64_t ld, int64_t n_seq,
                                 const int64_t *start, const int64_t *len, int64_t H, int64_t Hkv, int64_t dh,
                                 float scale) {
    attn_bw_calls++;
    return attn_bw_cpu(be, dq, dk, dv, ldd, dz, q, k, v, ld, n_seq, start, len, H, Hkv, dh, scale);
}

TEST(backward_stops_below_the_deepest_site) {
    ss_model *m = load("prefix-f32");
    if (!m) return;
    const ss_config *c = &m->cfg;
    const int ns = ss_sites_count(c);
    ss_backend counted = *ss_backend_cpu();
    attn_bw_cpu = counted.attention_backward;
    counted.attention_backward = attn_bw_counted;
    uint8_t *all = calloc((size_t)ns, 1), *one = calloc((size_t)ns, 1);
    ss_site s;
    for (int i = 0; i < ns; i++) {
        ss_site_get(c, i, &s);
        all[i] = (uint8_t)s.per_token;
    }
    ss_packing pk = {2, 9, START, LEN, 0};
    ss_metric mt = {SS_METRIC_LOSS, NULL, NULL};
    grads a = {{0}};
    ss_grad_opts ga = {.want = all, .hook = keep, .hook_ctx = &a};
    attn_bw_calls = 0;
    CHECK_OK(ss_forward_backward(m, &counted, TOKS, &pk, NULL, &mt, &ga, NULL));
    CHECK(attn_bw_calls == c->n_layer);
    for (int i = 0; i < ns; i++) {
        ss_site_get(c, i, &s);
        if (!s.per_token) continue;
        for (int rc = 0; rc < 2; rc++) {
            memset(one, 0, (size_t)ns);
            one[i] = 1;
            grads b = {{0}};
            ss_grad_opts gb = {.want = one, .hook = keep, .hook_ctx = &b, .recompute = rc};
            attn_bw_calls = 0;
            CHECK_OK(ss_forward_backward(m, &counted, TOKS, &pk, NULL, &mt, &gb, NULL));
            CHECK_MSG(b.store[i] && !memcmp(a.store[i], b.store[i], (size_t)(9 * s.width) * sizeof(float)),
                      "%s (recompute %d): not the all-sites pass's gradient", s.name, rc);
            /* blocks above the site's, and its own from hook_q/k/v on down */
            const int below_attn = s.kind == SS_SITE_Q || s.kind == SS_SITE_K || s.kind == SS_SITE_V ||
                                   s.kind == SS_SITE_LN1 || s.kind == SS_SITE_RESID_PRE;
            const int want_calls = s.layer < 0 ? (s.kind == SS_SITE_LNF ? 0 : c->n_layer)
                                               : c->n_layer - 1 - s.layer + below_attn;
            CHECK_MSG(attn_bw_calls == want_calls, "%s: %d attention backward passes, %d expected", s.name,
                      attn_bw_calls, want_calls);
            grads_free(&b);
        }
    }
    grads_free(&a);
    free(all), free(one);
    ss_model_free(m);
}

TEST(backward_errors) {
    ss_model *m = load("prefix-f32");
    if (!m) return;
    const int ns = ss_sites_count(&m->cfg);
    uint8_t *want = calloc((size_t)ns, 1);
    want[ss_site_id(&m->cfg, SS_SITE_PATTERN, 1)] = 1;
    ss_packing pk = {2, 9, START, LEN, 0};
    grads g = {{0}};
    ss_grad_opts go = {.want = want, .hook = keep, .hook_ctx = &g};
    ss_metric loss = {SS_METRIC_LOSS, NULL, NULL}, ld = {SS_METRIC_LOGITDIFF, ANSWER, NULL};
    CHECK_ERR(ss_forward_backward(m, ss_backend_cpu(), TOKS, &pk, NULL, &loss, &go, NULL), SS_ERR_ARG,
              "blocks.1.attn.hook_pattern");
    CHECK_ERR(ss_forward_backward(m, ss_backend_cpu(), TOKS, &pk, NULL, &ld, NULL, NULL), SS_ERR_ARG, "answer/wrong");
    int32_t bad[2] = {7, 1000};
    ss_metric lp = {SS_METRIC_LOGPROB, bad, NULL};
    CHECK_ERR(ss_forward_backward(m, ss_backend_cpu(), TOKS, &pk, NULL, &lp, NULL, NULL), SS_ERR_ARG, "sequence 1");
    ss_metric_kind k;
    CHECK_ERR(ss_metric_parse("accuracy", &k), SS_ERR_ARG, "unknown metric 'accuracy'");
    CHECK_OK(ss_metric_parse("logprob", &k));
    CHECK(k == SS_METRIC_LOGPROB);
    grads_free(&g);
    free(want);
    ss_model_free(m);
}
