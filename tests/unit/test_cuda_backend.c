/* The CUDA backend's host code (src/backend/cuda_backend.c) running against
 * the emulated runtime, cuBLAS and kernels: the whole forward pass on
 * "cuda:0" must match the CPU reference at every site, through both the
 * pattern-writing and the flash attention kernels, and device errors must
 * come back as clear messages. Tolerance 2e-5 abs + 2e-5 rel: the kernels
 * reduce in a different order from the CPU (warp trees, online softmax) and
 * activations here are O(1..10), so differences are a few fp32 ulps. */
#include <stdlib.h>

#include "subscope/forward.h"
#include "subscope/util.h"
#include "test.h"

void ss_emu_set_device_memory_limit(size_t bytes); /* kernels/emu/host_runtime.c */

typedef struct {
    float *store[128];
} rec_t;

static ss_status keep(void *vctx, const ss_site *s, float *data, int64_t ld, const ss_packing *pk,
                      const int64_t *pattern_off) {
    rec_t *r = vctx;
    size_t n = 0;
    if (s->per_token) n = (size_t)(pk->rows * s->width);
    else
        for (int64_t q = 0; q < pk->n_seq; q++) n += (size_t)(s->dims[0] * pk->len[q] * pk->len[q]);
    float *c = malloc(n * sizeof(float) + 1);
    if (!c) return SS_ERR_NOMEM;
    if (s->per_token)
        for (int64_t i = 0; i < pk->rows; i++) memcpy(c + i * s->width, data + i * ld, (size_t)s->width * sizeof(float));
    else
        memcpy(c, data, n * sizeof(float));
    r->store[s->id] = c;
    return SS_OK;
}

static void compare_backends(const char *model, const char *globs, int read_only) {
    char dir[512];
    snprintf(dir, sizeof dir, "%s/models/%s", ss_test_data_dir(), model);
    ss_model *m = NULL;
    ss_backend *gpu = NULL;
    CHECK_OK(ss_model_load(dir, &m));
    ss_status st = ss_backend_cuda_open(0, NULL, &gpu);
    if (st) { ss_model_free(m); CHECK_OK(st); }
    CHECK(!strcmp(gpu->name, "cuda:0") && !gpu->host_memory);
    st = ss_model_place(m, gpu, SS_WDTYPE_F32);
    if (st) { ss_model_free(m); ss_backend_cuda_close(gpu); CHECK_OK(st); }
    int32_t toks[20];
    for (int i = 0; i < 20; i++) toks[i] = (int32_t)((i * 37 + 11) % m->cfg.vocab_size);
    int64_t start[3] = {0, 1, 9}, len[3] = {1, 8, 11};
    ss_packing pk = {3, 20, start, len};
    int ns = ss_sites_count(&m->cfg), nsel;
    uint8_t *want = calloc((size_t)ns, 1);
    CHECK_OK(ss_sites_select(&m->cfg, globs, want, &nsel));
    rec_t a = {{0}}, b = {{0}};
    ss_forward_opts oa = {.want = want, .hook = keep, .hook_ctx = &a, .logits = SS_LOGITS_ALL, .read_only = read_only},
                    ob = {.want = want, .hook = keep, .hook_ctx = &b, .logits = SS_LOGITS_ALL, .read_only = read_only};
    float *la = NULL, *lb = NULL;
    CHECK_OK(ss_forward(m, ss_backend_cpu(), toks, &pk, &oa, &la));
    CHECK_OK(ss_forward(m, gpu, toks, &pk, &ob, &lb));
    double worst = 0;
    for (int64_t i = 0; i < 20 * m->cfg.vocab_size; i++) {
        double e = fabs((double)la[i] - lb[i]);
        worst = e > worst ? e : worst;
        CHECK_MSG(e <= 2e-5 + 2e-5 * fabs(la[i]), "%s logits[%lld]: cpu %.9g cuda %.9g", model, (long long)i, la[i], lb[i]);
    }
    for (int i = 0; i < ns; i++) {
        if (!want[i]) continue;
        ss_site s;
        ss_site_get(&m->cfg, i, &s);
        size_t n = s.per_token ? (size_t)(20 * s.width) : (size_t)(s.dims[0] * (1 + 64 + 121));
        CHECK_MSG(a.store[i] && b.store[i], "site %s not captured", s.name);
        for (size_t j = 0; j < n; j++)
            CHECK_MSG(fabs((double)a.store[i][j] - b.store[i][j]) <= 2e-5 + 2e-5 * fabs(a.store[i][j]),
                      "%s %s[%zu]: cpu %.9g cuda %.9g", model, s.name, j, a.store[i][j], b.store[i][j]);
    }
    printf(" [max |logit diff| %.2e]", worst);
    for (int i = 0; i < 128; i++) free(a.store[i]), free(b.store[i]);
    free(la);
    free(lb);
    free(want);
    ss_model_free(m);
    ss_backend_cuda_close(gpu);
}

/* Sites round-trip through the host one by one (hooks may edit). */
TEST(cuda_emulated_forward_matches_cpu_with_patterns) { compare_backends("prefix-f32", "*", 0); }

/* Read-only hooks: sites gathered on the device, one copy at the end. */
TEST(cuda_emulated_forward_matches_cpu_gathered_sites) { compare_backends("prefix-f32", "*", 1); }

TEST(cuda_emulated_forward_matches_cpu_flash_path) {
    /* No hook_pattern requested: the fused attention kernel runs. */
    compare_backends("noprefix-odd-untied", "blocks.*.attn.hook_z,blocks.*.mlp.hook_post,ln_final.hook_normalized", 1);
}

/* The Llama family: rmsnorm, rope, swiglu and grouped-query attention kernels
 * through whole models, every site (patterns included) and the flash path. */
TEST(cuda_emulated_llama_forward_matches_cpu) {
    compare_backends("llama-gqa-llama3", "*", 0);
    compare_backends("llama-hd6-bias", "*", 1);
    compare_backends("qwen2-bias-tied", "blocks.*.attn.hook_rot_k,blocks.*.mlp.hook_pre_linear,ln_final.hook_normalized", 1);
    compare_backends("mistral-small", "blocks.1.attn.hook_z", 1);
}

TEST(cuda_emulated_out_of_memory_is_reported) {
    char dir[512];
    snprintf(dir, sizeof dir, "%s/models/prefix-f32", ss_test_data_dir());
    ss_model *m = NULL;
    ss_backend *gpu = NULL;
    CHECK_OK(ss_model_load(dir, &m));
    CHECK_OK(ss_backend_cuda_open(0, NULL, &gpu));
    ss_emu_set_device_memory_limit(4096);
    ss_status st = ss_model_place(m, gpu, SS_WDTYPE_F32);
    ss_emu_set_device_memory_limit(0);
    ss_model_free(m);
    ss_backend_cuda_close(gpu);
    CHECK(st == SS_ERR_NOMEM);
    CHECK_MSG(strstr(ss_last_error(), "out of GPU memory allocating") && strstr(ss_last_error(), "model weights") &&
                  strstr(ss_last_error(), "cuda:0"),
              "message: %s", ss_last_error());
    ss_backend *none = NULL;
    CHECK_ERR(ss_backend_cuda_open(3, NULL, &none), SS_ERR_ARG, "cuda:3: there is 1 CUDA device");
}

TEST(cuda_emulated_memory_is_tracked) {
    ss_backend *gpu = NULL;
    CHECK_OK(ss_backend_cuda_open(0, NULL, &gpu));
    void *a, *b;
    size_t in_use, peak;
    CHECK_OK(gpu->alloc(gpu, 1000, "a", &a));
    CHECK_OK(gpu->alloc(gpu, 3000, "b", &b));
    gpu->release(gpu, a);
    gpu->memory_stats(gpu, &in_use, &peak);
    CHECK(in_use == 3000 && peak == 4000);
    gpu->release(gpu, b);
    gpu->memory_stats(gpu, &in_use, &peak);
    CHECK(in_use == 0 && peak == 4000);
    /* Released blocks are reused (a 2000-byte request takes the cached 3000 one)... */
    void *c2;
    CHECK_OK(gpu->alloc(gpu, 2000, "c", &c2));
    CHECK(c2 == b);
    gpu->release(gpu, c2);
    /* ...and given back to the device when a new allocation would not fit. */
    ss_emu_set_device_memory_limit(4000 + 1000);
    void *d2;
    ss_status st = gpu->alloc(gpu, 3500, "d", &d2);
    ss_emu_set_device_memory_limit(0);
    CHECK_OK(st);
    gpu->release(gpu, d2);
    ss_backend_cuda_close(gpu);
}

/* bf16 products: weights stored in bf16, activations rounded to bf16 before
 * each product, fp32 accumulation. The CPU path (the reference) and the
 * emulated GPU path round the same values, but an fp32 difference of one ulp
 * in an activation can move it across a bf16 rounding boundary, so single
 * elements may differ by a bf16 step (2^-8 relative); the check is on NMSE
 * (< 1e-6) with a loose per-element bound. Against float32 the bf16 logits
 * must stay close (NMSE < 1e-3): the path is sane, not just self-consistent. */
static double nmse(const float *a, const float *ref, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        num += ((double)a[i] - ref[i]) * ((double)a[i] - ref[i]);
        den += (double)ref[i] * ref[i];
    }
    return den > 0 ? num / den : num;
}

TEST(cuda_emulated_bf16_products_match_cpu_bf16_reference) {
    char dir[512];
    snprintf(dir, sizeof dir, "%s/models/noprefix-odd-untied", ss_test_data_dir());
    ss_model *mc = NULL, *mg = NULL, *mf = NULL;
    ss_backend *gpu = NULL;
    CHECK_OK(ss_model_load(dir, &mc));
    CHECK_OK(ss_model_load(dir, &mg));
    CHECK_OK(ss_model_load(dir, &mf));
    CHECK_OK(ss_backend_cuda_open(0, NULL, &gpu));
    CHECK_OK(ss_model_place(mc, ss_backend_cpu(), SS_WDTYPE_BF16));
    CHECK_OK(ss_model_place(mg, gpu, SS_WDTYPE_BF16));
    CHECK(ss_model_weights(mc, ss_backend_cpu())->wdtype == SS_WDTYPE_BF16);
    int32_t toks[12];
    for (int i = 0; i < 12; i++) toks[i] = (int32_t)((i * 29 + 5) % 101);
    int64_t start[2] = {0, 5}, len[2] = {5, 7};
    ss_packing pk = {2, 12, start, len};
    ss_forward_opts o = {.logits = SS_LOGITS_ALL};
    float *lc = NULL, *lg = NULL, *lf = NULL;
    CHECK_OK(ss_forward(mc, ss_backend_cpu(), toks, &pk, &o, &lc));
    CHECK_OK(ss_forward(mg, gpu, toks, &pk, &o, &lg));
    CHECK_OK(ss_forward(mf, ss_backend_cpu(), toks, &pk, &o, &lf));
    size_t n = 12 * 101;
    double e_gpu = nmse(lg, lc, n), e_f32 = nmse(lc, lf, n);
    printf(" [nmse cuda-bf16 vs cpu-bf16 %.1e, bf16 vs f32 %.1e]", e_gpu, e_f32);
    CHECK(e_gpu < 1e-6);
    for (size_t i = 0; i < n; i++) CHECK_NEAR(lg[i], lc[i], 5e-2 + 1e-2 * fabs(lc[i]));
    CHECK(e_f32 < 1e-3 && e_f32 > 0);
    free(lc); free(lg); free(lf);
    ss_model_free(mc); ss_model_free(mg); ss_model_free(mf);
    ss_backend_cuda_close(gpu);
}

/* collect on the (emulated) GPU: sites reduced on the device per batch with
 * the column-mean and triangular covariance kernels, merged in float64,
 * against the CPU path that reduces every prompt on the host. The device
 * accumulates each batch's products in fp32 (~1e-6 relative of
 * sum |x_i - m_i||x_j - m_j|), so entries are compared to 1e-5 of
 * sqrt(cov_ii cov_jj) — a bound on that sum over (n - 1). */
#include "subscope/h5out.h"
#include "subscope/jobs.h"

static int collect_to(const char *out, ss_backend *be, const char *input) {
    ss_collect_job j = {.run = {.model_dir = "models/tiny-gpt2", .input = input, .batch = 5, .backend = be},
                        .out = out, .sites = "blocks.0.hook_resid_pre,blocks.2.mlp.hook_post", .stats = "mean,cov",
                        .group_by = "label"};
    return ss_job_collect(&j) == SS_OK;
}

TEST(cuda_emulated_collect_matches_cpu) {
    char in[512], a[512], b[512];
    snprintf(in, sizeof in, "%s/lab.jsonl", ss_test_tmp_dir());
    snprintf(a, sizeof a, "%s/col_cpu.h5", ss_test_tmp_dir());
    snprintf(b, sizeof b, "%s/col_gpu.h5", ss_test_tmp_dir());
    FILE *f = fopen(in, "w");
    const char *txt[] = {"The cat says meow.", "Grass is green.", "The days go Monday, Tuesday,", "A duck has two legs.",
                         "Snow is white.", "Let us count: four, five, six,", "The cow lives on a farm."};
    for (int i = 0; i < 7; i++) fprintf(f, "{\"text\": \"%s\", \"label\": \"%s\"}\n", txt[i], i % 3 ? "x" : "y");
    fclose(f);
    ss_backend *gpu = NULL;
    CHECK_OK(ss_backend_cuda_open(0, NULL, &gpu));
    int ok_cpu = collect_to(a, (ss_backend *)ss_backend_cpu(), in);
    CHECK_MSG(ok_cpu, "cpu collect: %s", ss_last_error());
    int ok_gpu = collect_to(b, gpu, in);
    ss_backend_cuda_close(gpu);
    CHECK_MSG(ok_gpu, "gpu collect: %s", ss_last_error());
    ss_h5_reader *ra, *rb;
    CHECK_OK(ss_h5_open_read(a, &ra));
    CHECK_OK(ss_h5_open_read(b, &rb));
    const char *paths[] = {"/stats/blocks.2.mlp.hook_post", "/stats/blocks.0.hook_resid_pre",
                           "/groups/x/stats/blocks.2.mlp.hook_post", "/groups/y/stats/blocks.0.hook_resid_pre"};
    double worst = 0;
    for (int k = 0; k < 4; k++) {
        char p[256];
        int64_t *ca, *cb;
        double *ma, *mb, *va, *vb;
        size_t n, d, dd;
        snprintf(p, sizeof p, "%s/count", paths[k]);
        CHECK_OK(ss_h5_read_i64(ra, p, &ca, &n, NULL));
        CHECK_OK(ss_h5_read_i64(rb, p, &cb, &n, NULL));
        CHECK(ca[0] == cb[0] && ca[0] > 1);
        snprintf(p, sizeof p, "%s/mean", paths[k]);
        CHECK_OK(ss_h5_read_f64(ra, p, &ma, &d, NULL));
        CHECK_OK(ss_h5_read_f64(rb, p, &mb, &d, NULL));
        snprintf(p, sizeof p, "%s/cov", paths[k]);
        CHECK_OK(ss_h5_read_f64(ra, p, &va, &dd, NULL));
        CHECK_OK(ss_h5_read_f64(rb, p, &vb, &dd, NULL));
        CHECK(dd == d * d);
        for (size_t i = 0; i < d; i++) CHECK_NEAR(mb[i], ma[i], 1e-5 * sqrt(va[i * d + i]) + 1e-6);
        for (size_t i = 0; i < d; i++)
            for (size_t j = 0; j < d; j++) {
                double scale = sqrt(va[i * d + i] * va[j * d + j]), e = fabs(vb[i * d + j] - va[i * d + j]);
                if (scale > 0 && e / scale > worst) worst = e / scale;
                CHECK_MSG(e <= 1e-5 * scale + 1e-9, "%s cov[%zu,%zu]: cpu %.12g gpu %.12g", paths[k], i, j, va[i * d + j], vb[i * d + j]);
            }
        free(ca); free(cb); free(ma); free(mb); free(va); free(vb);
    }
    printf(" [max |cov diff| / sqrt(var_i var_j) = %.1e]", worst);
    ss_h5_close_read(ra);
    ss_h5_close_read(rb);
}

/* float16 weights on the GPU (tensor-core products of f16 operands, fp32
 * accumulation) against the CPU's float32 with the same weights, and
 * --dtype auto keeping each checkpoint's own 16-bit type on the GPU. The
 * 16-bit weights are the files' own (the F16 and BF16 checkpoints), so only
 * the activations' rounding into the products differs from float32: 2^-11
 * relative for f16, 2^-8 for bf16. Logits within 1.5e-2 (f16; measured
 * 3.7e-3) and 6e-2 (bf16; measured 1.8e-2) of float32. */
TEST(cuda_emulated_float16_and_auto_placement) {
    const char *models[3] = {"qwen2-bias-tied", "f16-sharded", "bf16"};
    const int want_auto[3] = {SS_WDTYPE_F16, SS_WDTYPE_F16, SS_WDTYPE_BF16};
    for (int k = 0; k < 3; k++) {
        char dir[512];
        snprintf(dir, sizeof dir, "%s/models/%s", ss_test_data_dir(), models[k]);
        ss_model *m = NULL, *m16 = NULL;
        ss_backend *gpu = NULL;
        CHECK_OK(ss_model_load(dir, &m));
        CHECK_OK(ss_model_load(dir, &m16));
        CHECK_OK(ss_backend_cuda_open(0, NULL, &gpu));
        CHECK_OK(ss_model_place(m16, gpu, SS_WDTYPE_AUTO));
        CHECK_MSG(ss_model_weights(m16, gpu)->wdtype == want_auto[k], "%s: auto placed dtype %d", models[k],
                  ss_model_weights(m16, gpu)->wdtype);
        CHECK_OK(ss_model_place(m, ss_backend_cpu(), SS_WDTYPE_AUTO)); /* the CPU: float32, nothing placed */
        CHECK(ss_model_weights(m, ss_backend_cpu())->wdtype == SS_WDTYPE_F32);
        CHECK_ERR(ss_model_place(m, ss_backend_cpu(), SS_WDTYPE_F16), SS_ERR_UNSUPPORTED, "float16 weights are for GPUs");
        int32_t toks[12];
        for (int i = 0; i < 12; i++) toks[i] = (int32_t)((i * 29 + 5) % m->cfg.vocab_size);
        int64_t start[2] = {0, 5}, len[2] = {5, 7};
        ss_packing pk = {2, 12, start, len};
        ss_forward_opts o = {.logits = SS_LOGITS_ALL};
        float *la = NULL, *lb = NULL;
        CHECK_OK(ss_forward(m, ss_backend_cpu(), toks, &pk, &o, &la));
        CHECK_OK(ss_forward(m16, gpu, toks, &pk, &o, &lb));
        double worst = 0;
        for (int64_t i = 0; la && lb && i < 12 * m->cfg.vocab_size; i++) {
            double e = fabs((double)la[i] - lb[i]);
            worst = e > worst ? e : worst;
        }
        CHECK_MSG(worst <= (want_auto[k] == SS_WDTYPE_F16 ? 1.5e-2 : 6e-2), "%s: 16-bit products differ from float32 by %.3g",
                  models[k], worst);
        printf(" [%s %s: max |logit diff| %.2e]", models[k], want_auto[k] == SS_WDTYPE_F16 ? "f16" : "bf16", worst);
        free(la);
        free(lb);
        ss_model_free(m);
        ss_model_free(m16);
        ss_backend_cuda_close(gpu);
    }
}
