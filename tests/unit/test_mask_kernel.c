/* Masks on the device: kernels/mask_apply.cu (through the emulated CUDA
 * backend's apply_masks, in both thread orders) and the CPU backend's
 * apply_masks, each against ss_mask_apply, the host reference, for every
 * mode a backend applies; and ablate on the emulated CUDA backend (device
 * masks) against the same backend with the host path and against the CPU.
 *
 * Tolerance: none. Under emulation the kernel's double log/cos/sqrt are the
 * host libm's, and every product and sum is the host's (no FMA), so noise
 * is bit-identical too; kernels/mask_apply.cu says what may differ on a GPU
 * (tests/gpu/kernel_check.c checks that there with a one-ulp tolerance). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../../kernels/emu/cuda_emu.h"
#include "subscope/backend.h"
#include "subscope/h5out.h"
#include "subscope/jobs.h"
#include "subscope/masks.h"
#include "subscope/util.h"
#include "test.h"


/* A site built by hand: only id, width and per_token matter to the masks. */
static ss_site fake_site(int id, int64_t width) {
    ss_site s;
    memset(&s, 0, sizeof s);
    snprintf(s.name, sizeof s.name, "site%d", id);
    s.id = id;
    s.per_token = 1;
    s.width = width;
    s.ndim = 1;
    s.dims[0] = width;
    return s;
}

/* Data with exact zeros, negative zeros and both signs. */
static void fill(float *x, int64_t n, unsigned seed) {
    for (int64_t i = 0; i < n; i++) {
        seed = seed * 1664525u + 1013904223u;
        unsigned r = seed >> 8;
        x[i] = r % 11 == 0 ? 0.0f : r % 13 == 0 ? -0.0f : ((float)(r & 0xffff) / 32768.0f - 1.0f) * 3.0f;
    }
}

/* Mask `kind` (0 .. N_KINDS-1) at site id with the given width: the modes
 * with and without unit and position lists, relative noise, identities. */
enum { N_KINDS = 12 };
static void make_mask(ss_mask *m, int kind, int site_id, int64_t width) {
    memset(m, 0, sizeof *m);
    snprintf(m->name, sizeof m->name, "k%d", kind);
    m->targets = calloc(1, sizeof *m->targets);
    m->n_targets = 1;
    m->targets[0].site_id = site_id;
    m->factor = 1.0;
    m->seed = 1000 + (uint64_t)kind;
    static const ss_mask_mode modes[N_KINDS] = {SS_MASK_ZERO, SS_MASK_MEAN, SS_MASK_SCALE, SS_MASK_NOISE,
                                                SS_MASK_NEGNOISE, SS_MASK_NOISE, SS_MASK_NEGNOISE, SS_MASK_ZERO,
                                                SS_MASK_SCALE, SS_MASK_NOISE, SS_MASK_MEAN, SS_MASK_NEGNOISE};
    m->mode = modes[kind];
    m->factor = kind == 8 ? 1.0 : 0.37;  /* 8: scale by 1, an identity */
    m->sigma = kind == 9 ? 0.0 : 0.8;    /* 9: sigma 0, an identity */
    m->sigma_relative = kind == 5 || kind == 6;
    if (kind % 2 == 1 || kind == 4) { /* a sorted unit list: every third unit, and the last */
        int64_t n = 0;
        m->targets[0].units = malloc((size_t)(width + 1) * sizeof(int64_t));
        for (int64_t u = kind % 3; u < width; u += 3) m->targets[0].units[n++] = u;
        if (m->targets[0].units[n - 1] != width - 1) m->targets[0].units[n++] = width - 1;
        m->targets[0].n_units = n;
    }
    if (kind == 2 || kind == 3 || kind == 7 || kind == 11) { /* positions, some past short sequences */
        static const int64_t p[4] = {0, 2, 5, 8};
        int np = kind == 7 ? 1 : 4;
        m->positions = malloc(4 * sizeof(int64_t));
        memcpy(m->positions, kind == 7 ? p + 2 : p, (size_t)np * sizeof(int64_t));
        m->n_positions = np;
    }
}

static ss_backend_mask to_backend(const ss_mask *m, const ss_mask_stats *st) {
    int need_mean, need_std;
    ss_mask_needs_stats(m, &need_mean, &need_std);
    return (ss_backend_mask){.mode = (int)m->mode, .sigma_relative = m->sigma_relative, .factor = m->factor,
                             .sigma = m->sigma, .seed = m->seed, .units = m->targets[0].units,
                             .n_units = m->targets[0].n_units, .positions = m->positions,
                             .n_positions = m->n_positions, .mean = need_mean ? st->mean : NULL,
                             .std = need_std ? st->std : NULL};
}

/* K copies of nb sequences, copy k with mask kinds[k]; the backend's result
 * must equal ss_mask_apply's bit for bit (padding columns untouched). */
static int check_case(const ss_backend *be, int64_t width, int64_t ld, const int *kinds, int K, int site_id) {
    const int64_t nb = 3, lens[3] = {1, 6, 9}, R = 16;
    int64_t start1[3] = {0, 1, 7}, prompt1[3] = {4, 7, 11};
    ss_packing pk1 = {nb, R, start1, lens, 0};
    const int64_t n = K * R * ld;
    float *x0 = malloc((size_t)n * sizeof(float)), *ref = malloc((size_t)n * sizeof(float)),
          *got = malloc((size_t)n * sizeof(float));
    double *mean = malloc((size_t)width * sizeof(double)), *sd = malloc((size_t)width * sizeof(double));
    fill(x0, n, (unsigned)(width * 31 + ld + (int64_t)K));
    for (int64_t u = 0; u < width; u++) mean[u] = 0.1 * (double)u - 1.7, sd[u] = u % 5 == 0 ? 0.0 : 0.05 * (double)(u % 7);
    ss_mask_stats st = {mean, sd, NULL, NULL};
    ss_site site = fake_site(site_id, width);
    ss_mask masks[8];
    ss_backend_mask bm[8];
    memcpy(ref, x0, (size_t)n * sizeof(float));
    int ok = 1;
    for (int k = 0; k < K; k++) {
        make_mask(&masks[k], kinds[k], site_id, width);
        bm[k] = to_backend(&masks[k], &st);
        if (ss_mask_apply(&masks[k], &site, ref + k * R * ld, ld, &pk1, prompt1, &st) != SS_OK) ok = 0;
    }
    int64_t start[24], len[24], prompt[24];
    int32_t which[24];
    for (int k = 0; k < K; k++)
        for (int q = 0; q < nb; q++)
            start[k * nb + q] = k * R + start1[q], len[k * nb + q] = lens[q], prompt[k * nb + q] = prompt1[q],
            which[k * nb + q] = k;
    ss_mask_program *prog = NULL;
    float *dev = NULL;
    ss_status s = be->mask_program_create(be, bm, K, site_id, width, &prog);
    if (!s) s = be->alloc(be, (size_t)n * sizeof(float), "masked rows", (void **)&dev);
    for (int order = 0; order < 2 && !s && ok; order++) {
        ss_emu_set_schedule(order ? SS_EMU_REVERSE : SS_EMU_FORWARD, 0);
        s = be->upload(be, dev, x0, (size_t)n * sizeof(float));
        if (!s) s = be->apply_masks(be, prog, dev, ld, K * R, K * nb, start, len, prompt, which);
        if (!s) s = be->download(be, got, dev, (size_t)n * sizeof(float));
        if (!s && memcmp(got, ref, (size_t)n * sizeof(float))) {
            int64_t i = 0;
            while (!memcmp(&got[i], &ref[i], sizeof(float))) i++;
            printf("\n    %s width %lld ld %lld K %d: [%lld] got %.9g want %.9g (%s order)", be->name, (long long)width,
                   (long long)ld, K, (long long)i, got[i], ref[i], order ? "reverse" : "forward");
            ok = 0;
        }
    }
    ss_emu_set_schedule(SS_EMU_FORWARD, 0);
    if (s) printf("\n    %s: %s", be->name, ss_last_error()), ok = 0;
    if (dev) be->release(be, dev);
    be->mask_program_free(be, prog);
    for (int k = 0; k < K; k++) ss_mask_free(&masks[k]);
    free(x0), free(ref), free(got), free(mean), free(sd);
    return ok;
}

static void all_cases(const ss_backend *be) {
    const int64_t widths[3] = {5, 37, 130}, pads[2] = {0, 3};
    for (int wi = 0; wi < 3; wi++)
        for (int pi = 0; pi < 2; pi++) {
            int64_t w = widths[wi], ld = w + pads[pi];
            for (int kind = 0; kind < N_KINDS; kind++) { /* each mode alone */
                int kinds[1] = {kind};
                CHECK(check_case(be, w, ld, kinds, 1, 3 + kind));
            }
            int mixed[6] = {3, 0, 6, 11, 2, 5}; /* K copies with different masks */
            CHECK(check_case(be, w, ld, mixed, 6, 7));
            int mixed2[4] = {9, 1, 4, 8};
            CHECK(check_case(be, w, ld, mixed2, 4, 12));
        }
}

TEST(mask_kernel_emulated_equals_ss_mask_apply) {
    ss_backend *gpu = NULL;
    CHECK_OK(ss_backend_cuda_open(0, NULL, &gpu));
    CHECK(gpu->apply_masks && gpu->mask_program_create && gpu->mask_program_free);
    all_cases(gpu);
    ss_backend_cuda_close(gpu);
}

TEST(mask_cpu_backend_op_equals_ss_mask_apply) { all_cases(ss_backend_cpu()); }

/* Identity settings leave every bit alone, -0.0 included (x + 0.0 would not). */
TEST(mask_kernel_identities_are_bit_exact) {
    ss_backend *gpu = NULL;
    CHECK_OK(ss_backend_cuda_open(0, NULL, &gpu));
    const int64_t width = 9, rows = 4, n = rows * width;
    float x0[36], got[36];
    fill(x0, n, 5);
    x0[0] = -0.0f, x0[1] = 0.0f;
    ss_backend_mask bm[3] = {{.mode = SS_BMASK_SCALE, .factor = 1.0},
                             {.mode = SS_BMASK_NOISE, .sigma = 0.0, .seed = 3},
                             {.mode = SS_BMASK_NEGNOISE, .sigma = 0.0, .seed = 3}};
    for (int k = 0; k < 3; k++) {
        ss_mask_program *p = NULL;
        float *dev = NULL;
        CHECK_OK(gpu->mask_program_create(gpu, &bm[k], 1, 0, width, &p));
        CHECK_OK(gpu->alloc(gpu, sizeof x0, "rows", (void **)&dev));
        CHECK_OK(gpu->upload(gpu, dev, x0, sizeof x0));
        int64_t start[1] = {0}, len[1] = {rows}, prompt[1] = {0};
        int32_t which[1] = {0};
        CHECK_OK(gpu->apply_masks(gpu, p, dev, width, rows, 1, start, len, prompt, which));
        CHECK_OK(gpu->download(gpu, got, dev, sizeof got));
        CHECK(!memcmp(got, x0, sizeof x0));
        gpu->release(gpu, dev);
        gpu->mask_program_free(gpu, p);
    }
    ss_backend_cuda_close(gpu);
}

/* Programs and calls the backends refuse, with messages that say why. */
TEST(mask_program_errors) {
    const ss_backend *cpu = ss_backend_cpu();
    ss_backend *gpu = NULL;
    CHECK_OK(ss_backend_cuda_open(0, NULL, &gpu));
    const ss_backend *bes[2] = {cpu, gpu};
    for (int b = 0; b < 2; b++) {
        const ss_backend *be = bes[b];
        ss_mask_program *p = NULL;
        int64_t units[2] = {3, 9}, bad_order[2] = {4, 2};
        ss_backend_mask m = {.mode = SS_BMASK_ZERO, .units = units, .n_units = 2};
        CHECK_ERR(be->mask_program_create(be, &m, 1, 0, 8, &p), SS_ERR_ARG, "unit 9 out of range");
        m.units = bad_order;
        CHECK_ERR(be->mask_program_create(be, &m, 1, 0, 8, &p), SS_ERR_ARG, "out of order");
        ss_backend_mask mm = {.mode = SS_BMASK_MEAN};
        CHECK_ERR(be->mask_program_create(be, &mm, 1, 0, 8, &p), SS_ERR_ARG, "without the per-unit means");
        ss_backend_mask rn = {.mode = SS_BMASK_NOISE, .sigma = 1, .sigma_relative = 1};
        CHECK_ERR(be->mask_program_create(be, &rn, 1, 0, 8, &p), SS_ERR_ARG, "standard deviations");
        ss_backend_mask rs = {.mode = 5};
        CHECK_ERR(be->mask_program_create(be, &rs, 1, 0, 8, &p), SS_ERR_ARG, "not one a backend applies");
        ss_backend_mask z = {.mode = SS_BMASK_ZERO};
        CHECK_OK(be->mask_program_create(be, &z, 1, 0, 8, &p));
        float *dev = NULL;
        CHECK_OK(be->alloc(be, 64 * sizeof(float), "rows", (void **)&dev));
        int64_t start[1] = {5}, len[1] = {4}, prompt[1] = {0};
        int32_t which[1] = {0};
        CHECK_ERR(be->apply_masks(be, p, dev, 8, 8, 1, start, len, prompt, which), SS_ERR_INTERNAL, "outside the 8 rows");
        start[0] = 0, which[0] = 1;
        CHECK_ERR(be->apply_masks(be, p, dev, 8, 8, 1, start, len, prompt, which), SS_ERR_INTERNAL, "asks for mask 1 of 1");
        which[0] = 0;
        CHECK_ERR(be->apply_masks(be, p, dev, 4, 8, 1, start, len, prompt, which), SS_ERR_INTERNAL, "row stride 4 < width 8");
        be->release(be, dev);
        be->mask_program_free(be, p);
    }
    ss_backend_cuda_close(gpu);
}

/* ---- ablate with device masks ---------------------------------------- */

static int ablate_to(const char *out, ss_backend *be, const char *input, const char *masks, int K) {
    ss_ablate_job j = {.run = {.model_dir = "models/tiny-gpt2", .input = input, .batch = 3, .backend = be},
                       .out = out, .masks_file = masks, .metrics = "loss,acc,kl", .mask_batch = K};
    return ss_job_ablate(&j) == SS_OK;
}

/* The device backend's apply_masks, counted: proves ablate took the device path. */
static ss_status (*real_apply)(const ss_backend *, const ss_mask_program *, float *, int64_t, int64_t, int64_t,
                               const int64_t *, const int64_t *, const int64_t *, const int32_t *);
static int n_apply;
static ss_status counting_apply(const ss_backend *be, const ss_mask_program *p, float *data, int64_t ld, int64_t rows,
                                int64_t n_seq, const int64_t *start, const int64_t *len, const int64_t *prompt,
                                const int32_t *which) {
    n_apply++;
    return real_apply(be, p, data, ld, rows, n_seq, start, len, prompt, which);
}

static float *read_f32(const char *file, const char *path, size_t *n) {
    ss_h5_reader *r;
    float *v = NULL;
    if (ss_h5_open_read(file, &r)) return NULL;
    if (ss_h5_read_f32(r, path, &v, n, NULL)) v = NULL;
    ss_h5_close_read(r);
    return v;
}

TEST(ablate_device_masks_on_emulated_cuda) {
    char in[512], mk[512], a[512], b[512], c[512];
    snprintf(in, sizeof in, "%s/dm_prompts.jsonl", ss_test_tmp_dir());
    snprintf(mk, sizeof mk, "%s/dm_masks.jsonl", ss_test_tmp_dir());
    snprintf(a, sizeof a, "%s/dm_cpu.h5", ss_test_tmp_dir());
    snprintf(b, sizeof b, "%s/dm_dev.h5", ss_test_tmp_dir());
    snprintf(c, sizeof c, "%s/dm_host.h5", ss_test_tmp_dir());
    FILE *f = fopen(in, "w");
    const char *txt[] = {"The cat says meow.", "Grass is green.", "The days go Monday, Tuesday,", "A duck has two legs.",
                         "Snow is white."};
    for (int i = 0; i < 5; i++) fprintf(f, "{\"text\": \"%s\"}\n", txt[i]);
    fclose(f);
    /* Every device mode, units, heads, positions, relative noise, two sites
     * in one mask, and masks starting at different blocks. */
    f = fopen(mk, "w");
    fprintf(f, "{\"name\": \"z\", \"site\": \"blocks.1.mlp.hook_post\", \"units\": [1, 5, 17, 40]}\n"
               "{\"name\": \"mean\", \"site\": \"blocks.0.hook_resid_post\", \"mode\": \"mean\", \"positions\": [1, 2, 6]}\n"
               "{\"name\": \"sc\", \"sites\": [{\"site\": \"blocks.0.attn.hook_z\", \"heads\": [1]}, {\"site\": \"blocks.2.hook_mlp_out\"}], \"mode\": \"scale\", \"factor\": 0.3}\n"
               "{\"name\": \"nz\", \"site\": \"blocks.1.hook_resid_mid\", \"mode\": \"noise\", \"sigma\": 0.5, \"seed\": 9}\n"
               "{\"name\": \"rel\", \"site\": \"blocks.2.mlp.hook_pre\", \"mode\": \"noise\", \"sigma\": 2, \"relative\": true, \"seed\": 4}\n"
               "{\"name\": \"neg\", \"site\": \"blocks.1.mlp.hook_post\", \"mode\": \"negnoise\", \"sigma\": 0.7, \"seed\": 2, \"positions\": [0, 3]}\n"
               "{\"name\": \"id\", \"site\": \"blocks.0.mlp.hook_post\", \"mode\": \"scale\", \"factor\": 1}\n");
    fclose(f);
    ss_backend *gpu = NULL;
    CHECK_OK(ss_backend_cuda_open(0, NULL, &gpu));
    ss_backend host_path = *gpu, counted = *gpu; /* the same device without the mask op: ablate's host round trip */
    host_path.apply_masks = NULL;
    real_apply = gpu->apply_masks;
    counted.apply_masks = counting_apply;
    n_apply = 0;
    int ok = ablate_to(a, (ss_backend *)ss_backend_cpu(), in, mk, 3);
    CHECK_MSG(ok, "cpu ablate: %s", ss_last_error());
    ok = ablate_to(b, &counted, in, mk, 3);
    CHECK_MSG(ok, "device-mask ablate: %s", ss_last_error());
    /* 7 masks in 3 groups, 2 batches: a call per masked site of each forward */
    CHECK_MSG(n_apply >= 2 * 7, "apply_masks called %d times", n_apply);
    size_t in_use = 0, in_use2 = 0, peak = 0;
    gpu->memory_stats(gpu, &in_use, &peak);
    ok = ablate_to(c, &host_path, in, mk, 3);
    CHECK_MSG(ok, "host-mask ablate: %s", ss_last_error());
    ok = ablate_to(b, &counted, in, mk, 3); /* again: programs freed, nothing grows */
    CHECK_MSG(ok, "device-mask ablate: %s", ss_last_error());
    gpu->memory_stats(gpu, &in_use2, &peak);
    CHECK_MSG(in_use2 == in_use, "device memory in use %zu bytes after one run, %zu after two", in_use, in_use2);
    ss_backend_cuda_close(gpu);
    const char *names[] = {"z", "mean", "sc", "nz", "rel", "neg", "id"};
    const char *metrics[] = {"loss", "acc", "kl"};
    double worst = 0;
    for (int k = 0; k < 7; k++)
        for (int mt = 0; mt < 3; mt++) {
            char p[128];
            snprintf(p, sizeof p, "/ablate/%s/%s", names[k], metrics[mt]);
            size_t na = 0, nb = 0, nc = 0;
            float *va = read_f32(a, p, &na), *vb = read_f32(b, p, &nb), *vc = read_f32(c, p, &nc);
            CHECK_MSG(va && vb && vc && na == 5 && nb == 5 && nc == 5, "%s missing", p);
            if (va && vb && vc && na == 5 && nb == 5 && nc == 5) {
                /* device masks and the host round trip: the same bits */
                CHECK_MSG(!memcmp(vb, vc, 5 * sizeof(float)), "%s: device masks %.9g, host path %.9g", p, vb[0], vc[0]);
                for (int i = 0; i < 5; i++) { /* and the CPU, as the forward's kernels allow */
                    double e = fabs((double)va[i] - vb[i]);
                    worst = e > worst ? e : worst;
                    CHECK_MSG(e <= 1e-4 + 1e-4 * fabs(va[i]), "%s[%d]: cpu %.9g cuda %.9g", p, i, va[i], vb[i]);
                }
                if (k == 0 && mt == 0) { /* a mask did change something */
                    float *cl = read_f32(b, "/clean/loss", &na);
                    CHECK(cl && memcmp(cl, vb, 5 * sizeof(float)));
                    free(cl);
                }
            }
            free(va), free(vb), free(vc);
        }
    printf(" [max |cpu - cuda| %.1e]", worst);
}

/* ---- patch's pieces and metrics on the device ------------------------- */

/* patch_pieces on the emulated GPU writes what the CPU op writes, exactly,
 * for every kind of piece, into strided rows (the columns past w and the
 * rows of other pieces untouched), positions past the prompt included. */
TEST(cuda_patch_pieces_equal_the_cpu_op) {
    ss_backend *gpu = NULL;
    CHECK_OK(ss_backend_cuda_open(0, NULL, &gpu));
    const ss_backend *cpu = ss_backend_cpu();
    CHECK(gpu->patch_pieces && cpu->patch_pieces);
    const int64_t n = 7, w = 24, ld = 30, hd = 6;
    const int kn = 5;
    float *src = ss_test_rvec(n * w, 31, 1.f), *x0 = ss_test_rvec(kn * n * ld, 32, 1.f);
    float *ref = malloc((size_t)(kn * n * ld) * sizeof(float)), *got = malloc((size_t)(kn * n * ld) * sizeof(float));
    float *dsrc = NULL, *dx = NULL;
    CHECK_OK(gpu->alloc(gpu, (size_t)(n * w) * sizeof(float), "src", (void **)&dsrc));
    CHECK_OK(gpu->alloc(gpu, (size_t)(kn * n * ld) * sizeof(float), "x", (void **)&dx));
    CHECK_OK(gpu->upload(gpu, dsrc, src, (size_t)(n * w) * sizeof(float)));
    const int pers[4] = {SS_PIECE_SITE, SS_PIECE_POSITION, SS_PIECE_HEAD, SS_PIECE_NEURON};
    const int64_t p0s[4] = {0, 4, 0, 19}; /* positions 4..8 run past n = 7 */
    for (int k = 0; k < 4; k++) {
        const int per = pers[k], kk = per == SS_PIECE_HEAD ? 4 : kn; /* 4 heads of 6 */
        memcpy(ref, x0, (size_t)(kn * n * ld) * sizeof(float));
        CHECK_OK(cpu->patch_pieces(cpu, ref, ld, src, n, w, kk, per, p0s[k], hd));
        CHECK_OK(gpu->upload(gpu, dx, x0, (size_t)(kn * n * ld) * sizeof(float)));
        CHECK_OK(gpu->patch_pieces(gpu, dx, ld, dsrc, n, w, kk, per, p0s[k], hd));
        CHECK_OK(gpu->download(gpu, got, dx, (size_t)(kn * n * ld) * sizeof(float)));
        CHECK_MSG(!memcmp(ref, got, (size_t)(kn * n * ld) * sizeof(float)), "patch_pieces per %d differs", per);
        /* the CPU op itself: copy c's piece from src, everything else as it was */
        int64_t wrong = 0;
        for (int c = 0; c < kn; c++)
            for (int64_t t = 0; t < n; t++)
                for (int64_t u = 0; u < ld; u++) {
                    const int64_t p = p0s[k] + c;
                    int in = c < kk && u < w;
                    if (per == SS_PIECE_POSITION) in &= t == p;
                    else if (per == SS_PIECE_HEAD) in &= u / hd == p;
                    else if (per == SS_PIECE_NEURON) in &= u == p;
                    const int64_t i = (c * n + t) * ld + u;
                    wrong += ref[i] != (in ? src[t * w + u] : x0[i]);
                }
        CHECK_MSG(!wrong, "patch_pieces per %d: %lld values wrong", per, (long long)wrong);
    }
    gpu->release(gpu, dsrc), gpu->release(gpu, dx);
    free(src), free(x0), free(ref), free(got);
    ss_backend_cuda_close(gpu);
}

/* patch scores its runs where the logits are (gather, logit_scores) and
 * writes its pieces there (patch_pieces, counted through a copy of the
 * emulated backend so that the test fails if the path is not taken): loss
 * and logitdiff give the CPU's metrics (clean, corrupt, patched) within the
 * forward's tolerance for pieces of every kind and sites at every kind of
 * start, and the CPU's loss equals ablate's clean loss (the same
 * definition) bit for bit. */
static const ss_backend *patch_gpu;
static int n_pieces_calls;
static ss_status count_pieces(const ss_backend *be, float *x, int64_t ld, const float *src, int64_t n, int64_t w,
                              int kn, int per, int64_t p0, int64_t hd) {
    n_pieces_calls++;
    return patch_gpu->patch_pieces(be, x, ld, src, n, w, kn, per, p0, hd);
}

TEST(patch_on_emulated_cuda) {
    const char *C = "tests/data/patch/clean.jsonl", *K = "tests/data/patch/corrupt.jsonl";
    ss_backend *gpu = NULL;
    CHECK_OK(ss_backend_cuda_open(0, NULL, &gpu));
    patch_gpu = gpu;
    ss_backend counted = *gpu;
    counted.patch_pieces = count_pieces;
    /* neurons on a small Llama (GQA: keys of 2 kv heads), a pair of prompts as token ids (the
     * emulated forward of a Llama is slow: few passes) */
    char lc[512], lk[512];
    snprintf(lc, sizeof lc, "%s/patch_llama_clean.jsonl", ss_test_tmp_dir());
    snprintf(lk, sizeof lk, "%s/patch_llama_corrupt.jsonl", ss_test_tmp_dir());
    FILE *f = fopen(lc, "w");
    fputs("{\"tokens\": [1, 5, 9, 13, 20, 7]}\n", f);
    fclose(f);
    f = fopen(lk, "w");
    fputs("{\"tokens\": [1, 5, 9, 14, 21, 7]}\n", f);
    fclose(f);
    const char *tiny = "models/tiny-gpt2", *llama = "tests/data/models/llama-gqa-llama3";
    const struct { const char *model, *clean, *corrupt, *metric, *per, *sites; int64_t batch; } cases[] = {
        {tiny, C, K, "loss", "position", "blocks.1.hook_resid_pre", 0},
        {tiny, C, K, "logitdiff", "position", "hook_embed,blocks.1.hook_resid_pre", 0},
        {tiny, C, K, "logitdiff", "head", "blocks.1.attn.hook_z", 3},
        {llama, lc, lk, "loss", "neuron", "blocks.1.mlp.hook_post,blocks.1.attn.hook_k", 80},
    };
    for (size_t ci = 0; ci < sizeof cases / sizeof *cases; ci++) {
        char out[2][512];
        for (int b = 0; b < 2; b++) {
            snprintf(out[b], sizeof out[b], "%s/patch_%zu_%d.h5", ss_test_tmp_dir(), ci, b);
            ss_patch_job j = {.run = {.model_dir = cases[ci].model, .input = cases[ci].clean, .device = "cpu",
                                      .backend = b ? &counted : NULL},
                              .corrupt = cases[ci].corrupt, .out = out[b], .sites = cases[ci].sites, .per = cases[ci].per,
                              .metric = cases[ci].metric, .batch = cases[ci].batch};
            n_pieces_calls = 0;
            CHECK_MSG(ss_job_patch(&j) == SS_OK, "patch %s --per %s on %s: %s", cases[ci].metric, cases[ci].per,
                      b ? "cuda" : "cpu", ss_last_error());
            CHECK_MSG(!b || n_pieces_calls > 0, "patch --per %s on the GPU wrote no pieces there", cases[ci].per);
        }
        /* (the effects divide by clean - corrupt, as small as 1e-3 here, so the metrics are compared) */
        char sites[256], paths[8][160];
        int np = 0;
        snprintf(paths[np++], sizeof paths[0], "/clean_metric");
        snprintf(paths[np++], sizeof paths[0], "/corrupt_metric");
        snprintf(sites, sizeof sites, "%s", cases[ci].sites);
        for (char *t = strtok(sites, ","); t && np < 8; t = strtok(NULL, ","))
            snprintf(paths[np++], sizeof paths[0], "/patched_metric/%s", t);
        for (int p = 0; p < np; p++) {
            size_t na = 0, nb = 0;
            float *va = read_f32(out[0], paths[p], &na), *vb = read_f32(out[1], paths[p], &nb);
            CHECK_MSG(va && vb && na == nb && na >= 1, "case %zu: %s missing", ci, paths[p]);
            for (size_t i = 0; va && vb && i < na && i < nb; i++) {
                if (isnan(va[i]) || isnan(vb[i])) {
                    CHECK_MSG(isnan(va[i]) && isnan(vb[i]), "case %zu %s[%zu]: cpu %g cuda %g", ci, paths[p], i, va[i], vb[i]);
                    continue;
                }
                CHECK_MSG(fabs((double)va[i] - vb[i]) <= 1e-4 + 1e-4 * fabs(va[i]), "case %zu %s[%zu]: cpu %.9g cuda %.9g",
                          ci, paths[p], i, va[i], vb[i]);
            }
            free(va), free(vb);
        }
        if (ci == 0) { /* loss: ablate's clean loss on the same prompts */
            char ab[512];
            snprintf(ab, sizeof ab, "%s/patch_ablate.h5", ss_test_tmp_dir());
            const char *spec[1] = {"blocks.0.mlp.hook_post[1]"};
            /* one prompt a pass, as patch's clean passes: products over other row counts may be split
             * over the pool's threads differently and round differently in the last bit */
            ss_ablate_job j = {.run = {.model_dir = "models/tiny-gpt2", .input = C, .device = "cpu", .batch = 1},
                               .out = ab, .mask_specs = spec, .n_mask_specs = 1, .metrics = "loss"};
            CHECK_MSG(ss_job_ablate(&j) == SS_OK, "ablate: %s", ss_last_error());
            size_t na = 0, nb = 0;
            float *va = read_f32(out[0], "/clean_metric", &na), *vb = read_f32(ab, "/clean/loss", &nb);
            CHECK_MSG(va && vb && na == nb && !memcmp(va, vb, na * sizeof(float)), "patch's loss differs from ablate's");
            free(va), free(vb);
        }
    }
    ss_backend_cuda_close(gpu);
}
