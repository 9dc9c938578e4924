/* Training from scratch: the safetensors writer read back by the reader,
 * GPT-2 initialisation, the loss going down on a tiny model, bit-identical
 * reruns for one seed, the written directory reloading to the same logits
 * (tied and untied), and bad input failing before any file is written. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "subscope/forward.h"
#include "subscope/safetensors.h"
#include "subscope/train.h"
#include "subscope/util.h"
#include "test.h"

#define TOKENIZER "models/tiny-gpt2"

static char *tmp_path(const char *name) { return ss_path_join(ss_test_tmp_dir(), name); }

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    if (f) fputs(text, f), fclose(f);
}

static int exists(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0;
}

/* A small corpus with regular patterns a 2-layer model picks up in a few dozen steps. */
static char *make_corpus(void) {
    static const char *animals[] = {"cat", "dog", "cow", "duck", "sheep"}, *sounds[] = {"meow", "woof", "moo", "quack", "baa"};
    static const char *days[] = {"Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"};
    char *path = tmp_path("corpus.txt");
    FILE *f = fopen(path, "w");
    if (!f) return path;
    for (int i = 0; i < 240; i++) {
        int a = (i * 7) % 5, d = (i * 3) % 7;
        fprintf(f, "The %s says %s. Today is %s, tomorrow is %s.\n", animals[a], sounds[a], days[d], days[(d + 1) % 7]);
    }
    fclose(f);
    return path;
}

static char *write_config(const char *name, const char *body) {
    char *p = tmp_path(name);
    write_text(p, body);
    return p;
}

#define SMALL "{\"model_type\": \"gpt2\", \"n_layer\": 2, \"n_head\": 2, \"n_embd\": 32, \"n_positions\": 32, \"vocab_size\": 1024"

static ss_train_job base_job(const char *cfg, const char *data, const char *out, int64_t steps) {
    return (ss_train_job){.config = cfg, .data = data, .tokenizer = TOKENIZER, .out = out, .steps = steps, .batch = 4,
                          .seq = 32, .lr = 3e-3, .warmup = 5, .weight_decay = -1, .clip = -1, .seed = 7,
                          .device = "cpu"};
}

TEST(train_safetensors_writer_round_trip) {
    char *path = tmp_path("rt.safetensors");
    float a[6] = {1.5f, -2.f, 3.25f, 0.f, -0.f, 1e-30f}, b[5] = {7, 8, 9, 10, 11}, c[4] = {NAN, INFINITY, -1, 2};
    int64_t sa[2] = {2, 3}, sb[1] = {5}, sc[3] = {1, 2, 2};
    ss_st_write t[3] = {{"layer.\"quoted\".w", 2, sa, a}, {"b", 1, sb, b}, {"c", 3, sc, c}};
    CHECK_OK(ss_safetensors_write_f32(path, t, 3));
    ss_mmap mm;
    CHECK_OK(ss_mmap_open(path, &mm));
    uint64_t hl = 0;
    for (int k = 0; k < 8; k++) hl |= (uint64_t)((const uint8_t *)mm.data)[k] << (8 * k);
    CHECK((8 + hl) % 8 == 0);
    CHECK(mm.size == 8 + hl + sizeof a + sizeof b + sizeof c);
    ss_mmap_close(&mm);
    ss_safetensors *st = NULL;
    CHECK_OK(ss_safetensors_open(path, &st));
    CHECK(ss_safetensors_count(st) == 3);
    for (int i = 0; i < 3; i++) {
        const ss_tensor_info *ti = ss_safetensors_find(st, t[i].name);
        CHECK_MSG(ti, "tensor %s not found", t[i].name);
        CHECK(ti->dtype == SS_DTYPE_F32 && ti->ndim == t[i].ndim);
        for (int k = 0; k < ti->ndim; k++) CHECK(ti->shape[k] == t[i].shape[k]);
        CHECK(!memcmp(ti->data, t[i].data, ti->nbytes)); /* bit for bit, NaN and -0 included */
    }
    ss_safetensors_free(st);
    /* A path that is a symbolic link is written through: the file it names is replaced, the link stays. */
    char *link = tmp_path("rt-link.safetensors");
    CHECK(symlink(path, link) == 0 && truncate(path, 3) == 0);
    CHECK_OK(ss_safetensors_write_f32(link, t, 3));
    struct stat lsb;
    CHECK(lstat(link, &lsb) == 0 && S_ISLNK(lsb.st_mode));
    CHECK_OK(ss_safetensors_open(path, &st));
    CHECK(ss_safetensors_count(st) == 3);
    ss_safetensors_free(st);
    free(link);
    /* An unwritable place: an error naming it, and no temporary file left behind. */
    char *bad = tmp_path("no/such/dir/x.safetensors");
    CHECK_ERR(ss_safetensors_write_f32(bad, t, 3), SS_ERR_IO, "no/such/dir");
    free(bad);
    free(path);
}

TEST(train_init_is_gpt2s) {
    ss_config c = {.n_layer = 2, .n_head = 2, .n_embd = 64, .n_positions = 16, .vocab_size = 300, .n_inner = 256,
                   .ln_eps = 1e-5, .tie_word_embeddings = 1, .scale_attn_weights = 1};
    ss_model *m = NULL;
    CHECK_OK(ss_model_create(&c, &m));
    ss_model_init_gpt2(m, 1);
    CHECK(m->w.lm_head == m->w.wte && m->n_params == 300 * 64 + 16 * 64 + 2 * 64 + 2 * (12 * 64 * 64 + 9 * 64 + 256));
    double s2[3] = {0}, mean = 0;
    size_t n[3] = {300 * 64, 64 * 256, 256 * 64};
    const float *x[3] = {m->w.wte, m->w.layers[0].fc_w, m->w.layers[1].fc2_w};
    for (int k = 0; k < 3; k++) {
        for (size_t i = 0; i < n[k]; i++) s2[k] += (double)x[k][i] * x[k][i], mean += k == 0 ? x[k][i] : 0;
        s2[k] = sqrt(s2[k] / (double)n[k]);
    }
    CHECK_NEAR(s2[0], 0.02, 0.0005);
    CHECK_NEAR(s2[1], 0.02, 0.0005);
    CHECK_NEAR(s2[2], 0.01, 0.0003); /* c_proj: 0.02 / sqrt(2 * n_layer) */
    CHECK_NEAR(mean / (double)n[0], 0, 0.0005);
    const float *ln = m->w.layers[1].ln2_w, *bias = m->w.layers[1].attn_b;
    for (int i = 0; i < 64; i++) CHECK(ln[i] == 1.0f && bias[i] == 0.0f);
    ss_model *m2 = NULL;
    CHECK_OK(ss_model_create(&c, &m2));
    ss_model_init_gpt2(m2, 1);
    CHECK(!memcmp(m->w.wte, m2->w.wte, 300 * 64 * sizeof(float)));
    ss_model_init_gpt2(m2, 2);
    CHECK(memcmp(m->w.wte, m2->w.wte, 300 * 64 * sizeof(float)));
    ss_model_free(m);
    ss_model_free(m2);
}

static int same_file(const char *a, const char *b) {
    char *x = NULL, *y = NULL;
    size_t nx = 0, ny = 0;
    int same = !ss_file_read(a, &x, &nx) && !ss_file_read(b, &y, &ny) && nx == ny && !memcmp(x, y, nx);
    free(x), free(y);
    return same;
}

/* Loss goes down; the same seed gives the same bytes, another seed others;
 * the directory reloads to the in-memory model's logits. */
static void train_and_reload(const char *cfg_body, const char *tag) {
    char name[64];
    snprintf(name, sizeof name, "%s.json", tag);
    char *cfg = write_config(name, cfg_body), *data = make_corpus();
    snprintf(name, sizeof name, "%s_a", tag);
    char *out_a = tmp_path(name);
    snprintf(name, sizeof name, "%s_b", tag);
    char *out_b = tmp_path(name);
    enum { STEPS = 50 };
    double losses[STEPS];
    ss_train_result r;
    ss_model *m = NULL, *back = NULL;
    ss_train_job j = base_job(cfg, data, out_a, STEPS);
    j.losses = losses, j.result = &r, j.model_out = &m;
    CHECK_OK(ss_job_train(&j));
    double first = 0, last = 0;
    for (int i = 0; i < 5; i++) first += losses[i] / 5, last += losses[STEPS - 5 + i] / 5;
    printf("    %s: loss %.3f (first 5 steps) -> %.3f (last 5), held-out %.3f over %lld windows\n", tag, first, last,
           r.val_loss, (long long)r.n_val_windows);
    CHECK_MSG(first > 6.0 && last < first - 2.0, "loss did not go down: %.3f -> %.3f", first, last);
    CHECK(r.n_val_windows > 0 && isfinite(r.val_loss) && r.val_loss < first - 1.5);

    /* Rerun with the same seed: bit-identical weights. */
    ss_train_job j2 = base_job(cfg, data, out_b, STEPS);
    CHECK_OK(ss_job_train(&j2));
    char *wa = ss_path_join(out_a, "model.safetensors"), *wb = ss_path_join(out_b, "model.safetensors");
    CHECK(same_file(wa, wb));
    j2.seed = 8, j2.steps = 2;
    CHECK_OK(ss_job_train(&j2));
    CHECK(!same_file(wa, wb));

    /* The directory: config, weights and tokenizer load, and give the same logits. */
    CHECK_OK(ss_model_load(out_a, &back));
    CHECK(back->tok && ss_tokenizer_vocab_size(back->tok) == ss_tokenizer_vocab_size(m->tok));
    CHECK(back->cfg.tie_word_embeddings == m->cfg.tie_word_embeddings && back->cfg.n_layer == 2);
    CHECK(back->n_params == m->n_params);
    int32_t *ids = NULL;
    size_t n = 0;
    const char *text = "The dog says woof. Today is Monday, tomorrow is";
    CHECK_OK(ss_tokenizer_encode(back->tok, text, strlen(text), &ids, &n));
    int64_t start = 0, len = (int64_t)n;
    ss_packing pk = {1, len, &start, &len, 0};
    ss_forward_opts fo = {.logits = SS_LOGITS_ALL};
    float *la = NULL, *lb = NULL;
    CHECK_OK(ss_forward(m, ss_backend_cpu(), ids, &pk, &fo, &la));
    CHECK_OK(ss_forward(back, ss_backend_cpu(), ids, &pk, &fo, &lb));
    CHECK(!memcmp(la, lb, n * 1024 * sizeof(float)));
    /* It learned the pattern: after "tomorrow is" the next day is likely. */
    int32_t *tue = NULL;
    size_t nt = 0;
    CHECK_OK(ss_tokenizer_encode(back->tok, " Tuesday", 8, &tue, &nt));
    const float *lastrow = la + (n - 1) * 1024;
    int rank = 0;
    for (int v = 0; v < 1024; v++) rank += lastrow[v] > lastrow[tue[0]];
    printf("    %s: rank of ' Tuesday' after \"...tomorrow is\": %d of 1024\n", tag, rank);
    free(tue);
    free(ids), free(la), free(lb);
    free(wa), free(wb);
    ss_model_free(m);
    ss_model_free(back);
    free(cfg), free(data), free(out_a), free(out_b);
}

TEST(train_loss_goes_down_reruns_identically_and_reloads_tied) { train_and_reload(SMALL "}", "tied"); }
TEST(train_untied_lm_head_reloads) { train_and_reload(SMALL ", \"tie_word_embeddings\": false}", "untied"); }

/* A failure leaves no output directory (or, if it existed, nothing in it). */
static void check_fails(const ss_train_job *j, ss_status code, const char *substr) {
    ss_error_clear();
    ss_status st = ss_job_train(j);
    CHECK_MSG(st == code && strstr(ss_last_error(), substr), "wanted %s containing \"%s\", got %s: \"%s\"",
              ss_status_name(code), substr, ss_status_name(st), ss_last_error());
    CHECK_MSG(!exists(j->out), "%s was created by a failed run", j->out);
}

TEST(train_bad_input) {
    char *data = make_corpus(), *out = tmp_path("bad_out");
    char *no_head = write_config("nohead.json", "{\"model_type\": \"gpt2\", \"n_layer\": 2, \"n_embd\": 32, \"n_positions\": 32, \"vocab_size\": 1024}");
    char *small_vocab = write_config("smallvocab.json", "{\"model_type\": \"gpt2\", \"n_layer\": 1, \"n_head\": 2, \"n_embd\": 32, \"n_positions\": 32, \"vocab_size\": 500}");
    char *ok_cfg = write_config("ok.json", "{\"n_layer\": 1, \"n_head\": 2, \"n_embd\": 32, \"n_positions\": 32, \"vocab_size\": 1024}");
    char *empty = tmp_path("empty.txt"), *shortf = tmp_path("short.txt");
    write_text(empty, "\n  \n");
    write_text(shortf, "The cat says meow.\n");

    ss_train_job j = base_job(no_head, data, out, 3);
    check_fails(&j, SS_ERR_FORMAT, "missing required key \"n_head\"");
    j.config = small_vocab;
    check_fails(&j, SS_ERR_ARG, "vocab_size 500 is smaller than the tokenizer's 1024 ids");
    j.config = ok_cfg, j.data = empty;
    check_fails(&j, SS_ERR_FORMAT, "no prompts in the file");
    j.data = shortf;
    check_fails(&j, SS_ERR_ARG, "fewer than one window of --seq 32");
    j.data = data, j.steps = 0;
    check_fails(&j, SS_ERR_ARG, "--steps must be at least 1");
    j.steps = 3, j.seq = 33;
    check_fails(&j, SS_ERR_ARG, "--seq 33 must be between 2 and the config's n_positions 32");
    j.seq = 32, j.tokenizer = NULL;
    check_fails(&j, SS_ERR_ARG, "without --tokenizer the data must be JSONL token ids");
    j.tokenizer = TOKENIZER, j.lr = 1e6;
    check_fails(&j, SS_ERR_ARG, "--lr");
    j.lr = 3e-3;
    char *nested = tmp_path("missing_parent/out");
    j.out = nested;
    check_fails(&j, SS_ERR_ARG, "is not a directory");
    /* A run into an existing directory that fails leaves it as it was. */
    j.out = out;
    CHECK(mkdir(out, 0755) == 0);
    j.steps = 0;
    ss_error_clear();
    CHECK(ss_job_train(&j) == SS_ERR_ARG);
    CHECK(rmdir(out) == 0); /* empty: nothing was staged in it */
    /* A failure while writing (here: config.json cannot be staged, after the
     * weights were) removes what was staged and leaves the directory as it was. */
    CHECK(mkdir(out, 0755) == 0);
    char *hc = ss_strfmt("%s/.config.json", out), *hw = ss_strfmt("%s/.model.safetensors", out);
    char *blocker = ss_tmp_name(hc), *w = ss_path_join(out, "model.safetensors"), *wst = ss_tmp_name(hw);
    free(hc), free(hw);
    CHECK(mkdir(blocker, 0755) == 0);
    j.steps = 2;
    ss_error_clear();
    CHECK(ss_job_train(&j) == SS_ERR_IO && strstr(ss_last_error(), ".config.json.tmp."));
    CHECK(!exists(w) && !exists(wst));
    CHECK(rmdir(blocker) == 0 && rmdir(out) == 0);
    free(blocker), free(w), free(wst);
    free(data), free(out), free(no_head), free(small_vocab), free(ok_cfg), free(empty), free(shortf), free(nested);
}

/* Token-id data needs no tokenizer; no tokenizer file is written then. */
TEST(train_from_token_ids) {
    char *data = tmp_path("ids.jsonl"), *out = tmp_path("ids_out"), *cfg = write_config("ids.json", SMALL "}");
    FILE *f = fopen(data, "w");
    CHECK(f);
    for (int i = 0; i < 20; i++) {
        fputs("{\"tokens\": [", f);
        for (int k = 0; k < 40; k++) fprintf(f, "%s%d", k ? ", " : "", (i + k) % 50 + 1);
        fputs("]}\n", f);
    }
    fclose(f);
    ss_train_job j = base_job(cfg, data, out, 3);
    j.tokenizer = NULL;
    CHECK_OK(ss_job_train(&j));
    char *tj = ss_path_join(out, "tokenizer.json"), *st = ss_path_join(out, "model.safetensors");
    CHECK(!exists(tj) && exists(st));
    ss_model *m = NULL;
    CHECK_OK(ss_model_load(out, &m));
    CHECK(!m->tok);
    ss_model_free(m);
    /* The staged files are synced as an HDF5 output is: on a file system without
     * fsync the directory is written; on a failing disk the run fails and leaves none. */
    char *out2 = tmp_path("ids_out_nofsync"), *st2 = ss_path_join(out2, "model.safetensors");
    j.out = out2;
    ss_test_fsync_errno = EINVAL;
    ss_error_clear();
    ss_status fst = ss_job_train(&j);
    ss_test_fsync_errno = 0;
    CHECK_MSG(fst == SS_OK && exists(st2), "fsync EINVAL: %s", ss_last_error());
    j.out = tmp_path("ids_out_eio");
    ss_test_fsync_errno = EIO;
    ss_error_clear();
    fst = ss_job_train(&j);
    ss_test_fsync_errno = 0;
    CHECK_MSG(fst == SS_ERR_IO && strstr(ss_last_error(), "Input/output error") && !exists(j.out), "fsync EIO: %s",
              ss_last_error());
    free((char *)j.out), free(out2), free(st2);
    free(tj), free(st), free(data), free(out), free(cfg);
}

/* The device path (weights and gradients in backend memory, AdamW on the
 * host with a download and an upload per step) on the CUDA backend running
 * against the emulated runtime and kernels: the same losses as the CPU, up to
 * the kernels' different summation order. */
TEST(train_on_cuda_backend_matches_cpu) {
    ss_backend *gpu = NULL;
    CHECK_OK(ss_backend_cuda_open(0, NULL, &gpu));
    char *cfg = write_config("cuda.json", "{\"n_layer\": 1, \"n_head\": 2, \"n_embd\": 32, \"n_positions\": 16, \"vocab_size\": 1024}");
    char *data = make_corpus(), *oc = tmp_path("cuda_cpu"), *og = tmp_path("cuda_gpu");
    enum { STEPS = 4 };
    double lc[STEPS], lg[STEPS];
    ss_train_job j = base_job(cfg, data, oc, STEPS);
    j.batch = 2, j.seq = 16, j.warmup = 1, j.losses = lc;
    ss_status st = ss_job_train(&j);
    char *logp = tmp_path("cuda.log");
    FILE *log = fopen(logp, "w");
    j.out = og, j.losses = lg, j.device = NULL, j.backend = gpu, j.log = log;
    if (!st) st = ss_job_train(&j);
    ss_backend_cuda_close(gpu);
    if (log) fclose(log);
    CHECK_OK(st);
    char *logtext = NULL;
    size_t ll;
    CHECK_OK(ss_file_read(logp, &logtext, &ll));
    CHECK_MSG(strstr(logtext, "windows on cuda:0\n"), "log: %s", logtext);
    free(logtext), free(logp);
    for (int i = 0; i < STEPS; i++)
        CHECK_MSG(fabs(lc[i] - lg[i]) <= 1e-4 * fabs(lc[i]), "step %d: cpu loss %.7f, cuda %.7f", i + 1, lc[i], lg[i]);
    CHECK(lg[STEPS - 1] < lg[0]);
    printf("    losses cpu %.6f .. %.6f, cuda (emulated) %.6f .. %.6f\n", lc[0], lc[STEPS - 1], lg[0], lg[STEPS - 1]);
    ss_model *m = NULL;
    CHECK_OK(ss_model_load(og, &m));
    ss_model_free(m);
    free(cfg), free(data), free(oc), free(og);
}

/* A tokenizer given as GPT-2's encoder.json + vocab.bpe is written as the
 * vocab.json + merges.txt pair Hugging Face reads, and reloads. */
TEST(train_copies_a_vocab_merges_tokenizer) {
    char *tok = tmp_path("pair_tok"), *out = tmp_path("pair_out"), *data = make_corpus();
    char *cfg = write_config("pair.json", "{\"n_layer\": 1, \"n_head\": 2, \"n_embd\": 16, \"n_positions\": 16, \"vocab_size\": 50257}");
    CHECK(mkdir(tok, 0755) == 0);
    const char *names[2][2] = {{"encoder.json", "vocab.json"}, {"vocab.bpe", "merges.txt"}};
    for (int i = 0; i < 2; i++) {
        char src[512], *text = NULL, *dst = ss_path_join(tok, names[i][0]);
        size_t len;
        snprintf(src, sizeof src, "%s/gpt2-tokenizer/%s", ss_test_data_dir(), names[i][0]);
        CHECK_OK(ss_file_read(src, &text, &len));
        FILE *f = fopen(dst, "wb");
        CHECK(f && fwrite(text, 1, len, f) == len);
        fclose(f);
        free(text), free(dst);
    }
    ss_train_job j = base_job(cfg, data, out, 1);
    j.tokenizer = tok, j.batch = 1, j.seq = 16;
    CHECK_OK(ss_job_train(&j));
    char *tj = ss_path_join(out, "tokenizer.json"), *vj = ss_path_join(out, "vocab.json"), *mt = ss_path_join(out, "merges.txt");
    CHECK(!exists(tj) && exists(vj) && exists(mt));
    ss_model *m = NULL;
    CHECK_OK(ss_model_load(out, &m));
    CHECK(m->tok && ss_tokenizer_vocab_size(m->tok) == 50257 && ss_tokenizer_eos_id(m->tok) == 50256);
    CHECK(m->cfg.eos_token_id == 50256);
    ss_model_free(m);
    free(tj), free(vj), free(mt), free(tok), free(out), free(data), free(cfg);
}
