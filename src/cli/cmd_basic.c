/* info, tokenize and predict: the commands that look at one model or one prompt. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <unistd.h>

#include "cli.h"
#include "subscope/backend.h"
#include "subscope/dist.h"
#include "subscope/forward.h"
#include "subscope/gguf_model.h"
#include "subscope/json.h"
#include "subscope/model.h"
#include "subscope/prompts.h"
#include "subscope/sites.h"
#include "subscope/util.h"

/* ---- info ---- */

static cli_opt info_opts[] = {
    {.name = "model", .metavar = "DIR", .help = "Hugging Face model directory (config.json, *.safetensors, tokenizer.json) or a llama-architecture .gguf file"},
    {.name = "config", .metavar = "CONFIG.json", .help = "plan memory from a config.json alone (no weights needed): parameters, weights per dtype, activations per token"},
    {.name = "tokens", .metavar = "N", .help = "with --config: also the totals for a batch of N tokens (default 16384)"},
    {.name = "pipeline", .metavar = "P", .help = "with --config: the memory of each of P pipeline stages (--pipeline of the jobs)"},
    {.name = "pipeline-blocks", .metavar = "N,..", .help = "with --pipeline: each stage's number of blocks, or 'even' (default: the jobs' balanced split)"},
    {.name = "max-memory", .metavar = "BYTES", .help = "with --pipeline: the default split as the jobs choose it under --max-memory (float32 weights per rank), and whether each stage fits"},
    {.name = "list-sites", .metavar = NULL, .help = "print every site name, one per line, and nothing else"},
    {.name = "dist", .metavar = NULL, .help = "print what the communicator sees (backend, ranks, hosts, devices); takes no other option"},
    {0},
};

/* Every rank describes itself; rank 0 prints the lines in rank order. */
static int run_info_dist(cli_cmd *cmd) {
    ss_comm *c;
    ss_status st = ss_comm_world(&c);
    if (st) return cli_fail(cmd, st);
    const int rank = ss_comm_rank(c), size = ss_comm_size(c);
    ss_backend *be = NULL;
    char dev[SS_ERROR_MAX + 16]; /* with an error's message, which may name a long path */
    /* The device `--device auto` would give this rank. */
    if ((st = ss_backend_open("auto", &(ss_backend_opts){0}, &be))) snprintf(dev, sizeof dev, "none (%s)", ss_last_error());
    else snprintf(dev, sizeof dev, "%s (%s)", be->name, be->description);
    if (be) ss_backend_close(be);
    const char *cvd = getenv("CUDA_VISIBLE_DEVICES");
    char cuda[SS_ERROR_MAX + 16];
    /* A device communicator (nccl) names the GPU its messages go through. */
    const char *cdev = ss_comm_device_name(c, rank);
    char *line = ss_strfmt("rank %-4d host %s  pid %ld  threads %d  device %s%s%s%s%s  cuda %s\n", rank,
                           ss_comm_host(c, rank), (long)getpid(), ss_num_threads(), dev, *cdev ? "  comm-device " : "", cdev,
                           cvd ? "  CUDA_VISIBLE_DEVICES=" : "", cvd ? cvd : "", ss_backend_cuda_status(cuda, sizeof cuda));
    char *all = NULL;
    size_t *counts = rank == 0 ? calloc((size_t)size, sizeof *counts) : NULL;
    if (!line || (rank == 0 && !counts)) {
        free(line);
        free(counts);
        return cli_fail(cmd, ss_comm_check(c, ss_errorf(SS_ERR_NOMEM, "out of memory")));
    }
    st = ss_comm_gatherv(c, line, strlen(line), (void **)&all, counts);
    free(line);
    if (st) {
        free(counts);
        return cli_fail(cmd, ss_comm_check(c, st));
    }
    if (rank == 0) {
        const char *lib = ss_comm_library(c);
        printf("backend  %s%s%s%s\n", ss_comm_backend(c), *lib ? " (" : "", lib, *lib ? ")" : "");
        printf("ranks    %d\n", size);
        int hosts = 0;
        for (int r = 0; r < size; r++) {
            int seen = 0;
            for (int q = 0; q < r && !seen; q++) seen = !strcmp(ss_comm_host(c, q), ss_comm_host(c, r));
            hosts += !seen;
        }
        printf("hosts    %d\n", hosts);
        printf("timeout  %g s (SUBSCOPE_DIST_TIMEOUT)\n", ss_comm_timeout(c));
        if (size > 1)
            printf("sends    %s\n", ss_comm_sends_in_background(c)
                                        ? "in the background (a sender thread; SUBSCOPE_SEND_THREAD=0: off)"
                                        : "blocking, or progressed only inside the communicator's calls");
        size_t total = 0;
        for (int r = 0; r < size; r++) total += counts[r];
        fwrite(all, 1, total, stdout);
    }
    free(all);
    free(counts);
    return 0;
}

/* Memory of a model from its config alone: what a 7B- or 70B-shaped run
 * needs before anyone downloads it. The figures are those of this engine's
 * buffers (ss_config_floats_per_token and the backward tape), not estimates
 * of another framework. */
static int run_info_config(cli_cmd *cmd) {
    ss_config cfg;
    ss_status st = ss_config_load_gpt2_default(cli_get(cmd, "config"), &cfg); /* (train's configs may name no type) */
    if (st) return cli_fail(cmd, st);
    int64_t T = 16384;
    if (cli_int(cmd, "tokens", 1, INT64_MAX / 1048576, 16384, &T)) return 1;
    const ss_config *c = &cfg;
    /* The pipeline options are checked before anything is printed. */
    int64_t P_st = 1;
    if (cli_int(cmd, "pipeline", 1, 4096, 1, &P_st)) return 1;
    const char *blocks = cli_get(cmd, "pipeline-blocks");
    int first_of[4097];
    const char *needs_p = blocks ? "pipeline-blocks" : cli_get(cmd, "max-memory") ? "max-memory" : NULL;
    if (needs_p && P_st <= 1) {
        fprintf(stderr, "subscope info: error: --%s '%s' plans a pipeline's stages: give --pipeline P of 2 or more stages too\n", needs_p,
                cli_get(cmd, needs_p));
        return 1;
    }
    int64_t max_mem = 0;
    if (cli_bytes(cmd, "max-memory", &max_mem)) return 1;
    if (P_st > 1 && ss_pipeline_split(c, (int)P_st, blocks, 1, max_mem, first_of)) return cli_fail(cmd, SS_ERR_ARG);
    const int64_t P = ss_config_n_params(c), fpt = ss_config_floats_per_token(c);
    const int64_t tape = ss_config_tape_floats_per_token_layer(c) * c->n_layer + 2 * c->n_embd;
    char a[32], b[32], e[32], f[32], g[32];
    printf("config       %s\n", cli_get(cmd, "config"));
    printf("architecture %s, %lld layers, d_model %lld, %lld heads (%lld key/value) x d_head %lld, d_mlp %lld, "
           "vocabulary %lld\n", c->arch, (long long)c->n_layer, (long long)c->n_embd, (long long)c->n_head,
           (long long)ss_config_kv_heads(c), (long long)ss_config_d_head(c), (long long)c->n_inner,
           (long long)c->vocab_size);
    ss_fmt_bytes(a, sizeof a, (double)P * 4), ss_fmt_bytes(b, sizeof b, (double)P * 2);
    /* in billions from 1e9, else millions as `info --model` says: a small config is not "0.00 B" */
    printf("parameters   %lld (%.2f %s): weights %s in float32, %s in bfloat16\n", (long long)P,
           (double)P / (P >= 1000000000 ? 1e9 : 1e6), P >= 1000000000 ? "B" : "M", a, b);
    ss_fmt_bytes(a, sizeof a, (double)fpt * 4), ss_fmt_bytes(b, sizeof b, (double)tape * 4);
    ss_fmt_bytes(e, sizeof e, (double)c->vocab_size * 4);
    printf("per token    forward %s in flight; a backward pass keeps %s on its tape (--recompute: %lld floats "
           "per layer); %s per row of logits kept\n", a, b, (long long)c->n_embd, e);
    ss_fmt_bytes(a, sizeof a, (double)fpt * 4 * (double)T);
    ss_fmt_bytes(b, sizeof b, (double)(tape + fpt) * 4 * (double)T);
    ss_fmt_bytes(e, sizeof e, (double)c->vocab_size * 4 * (double)T);
    ss_fmt_bytes(f, sizeof f, (double)P * 2 + (double)fpt * 4 * (double)T);
    ss_fmt_bytes(g, sizeof g, (double)P * 2 + (double)(tape + fpt + c->vocab_size) * 4 * (double)T);
    char tl[32]; /* a label as wide as the others */
    snprintf(tl, sizeof tl, "%lld tokens", (long long)T);
    printf("%-12s forward activations %s, with a backward pass %s, all-position logits %s\n", tl, a, b, e);
    printf("one device   bfloat16 weights + activations: forward %s; attribute with loss (logits of every "
           "position) %s\n", f, g);
    /* collect --stats cov keeps each site's float64 co-moments (d x d) in GPU memory, per label group */
    ss_fmt_bytes(a, sizeof a, 8.0 * (double)c->n_embd * (double)c->n_embd);
    ss_fmt_bytes(b, sizeof b, 8.0 * (double)c->n_inner * (double)c->n_inner);
    ss_fmt_bytes(e, sizeof e, 8.0 * (double)c->n_inner * (double)c->n_inner * (double)c->n_layer);
    printf("collect      covariance statistics on a GPU (float64, per site and label group): %s per d_model site, "
           "%s per MLP site, %s for all %lld MLP sites\n", a, b, e, (long long)c->n_layer);
    /* --pipeline P: each stage holds its blocks' weights, the first the embeddings, the last the head. */
    if (P_st > 1) {
        char split[160] = "", even_split[160] = "";
        int even[4097];
        ss_pipeline_split(c, (int)P_st, blocks ? "even" : NULL, 0, max_mem, even); /* collect's split */
        for (int sg = 0; sg < (int)P_st; sg++) {
            size_t n = strlen(split), ne = strlen(even_split);
            snprintf(split + n, sizeof split - n, "%s%d", sg ? "," : "", first_of[sg + 1] - first_of[sg]);
            snprintf(even_split + ne, sizeof even_split - ne, "%s%d", sg ? "," : "", even[sg + 1] - even[sg]);
        }
        if (blocks)
            printf("split        --pipeline-blocks %s\n", blocks);
        else
            printf("split        %s for jobs that score logits (the last stage also runs the head: d x vocabulary "
                   "= %.1f blocks of work); %s for collect and forward --no-logits\n", split,
                   (double)(c->n_embd * c->vocab_size) / (double)ss_config_block_macs(c), even_split);
        for (int sg = 0; sg < (int)P_st; sg++) {
            const int first = first_of[sg], end = first_of[sg + 1];
            const int64_t n = ss_config_stage_params(c, first, end);
            const double macs = (double)ss_config_block_macs(c) * (end - first) +
                                (end == c->n_layer ? (double)(c->n_embd * c->vocab_size) : 0);
            ss_fmt_bytes(a, sizeof a, (double)n * 2), ss_fmt_bytes(b, sizeof b, (double)n * 4);
            ss_fmt_bytes(e, sizeof e, (double)n * 2 + (double)fpt * 4 * (double)T);
            printf("stage %-3d    blocks %d..%d: %lld parameters, weights %s bfloat16 / %s float32; forward with "
                   "%lld tokens %s; %.2f %s multiply-adds per token%s%s\n", sg, first, end - 1, (long long)n, a, b,
                   (long long)T, e, macs >= 1e9 ? macs / 1e9 : macs / 1e6, macs >= 1e9 ? "G" : "M",
                   end == c->n_layer ? " with the head" : "",
                   !max_mem ? "" : 4 * n <= max_mem ? "; fits --max-memory" : "; MORE than --max-memory");
        }
    }
    return 0;
}

static int run_info(cli_cmd *cmd) {
    /* Without one of its three forms' options, --tokens alone was said not to go with a --model
     * never given, and nothing but --model was offered. */
    if (!cli_flag(cmd, "dist") && !cli_get(cmd, "config") && !cli_get(cmd, "model")) {
        fprintf(stderr, "subscope info: error: give --model DIR, --config CONFIG.json or --dist (see subscope info --help)\n");
        return 1;
    }
    /* info has three forms; an option of another form would be silently ignored: refused. */
    const char *form = cli_flag(cmd, "dist") ? "dist" : cli_get(cmd, "config") ? "config" : "model";
    for (const cli_opt *o = cmd->opts; o->name; o++) {
        const int fits = !o->value || !strcmp(o->name, form) ||
                         (!strcmp(form, "model") && !strcmp(o->name, "list-sites")) ||
                         (!strcmp(form, "config") && (!strcmp(o->name, "tokens") || !strncmp(o->name, "pipeline", 8) ||
                                                      !strcmp(o->name, "max-memory")));
        if (!fits) {
            fprintf(stderr, "subscope info: error: --%s does not go with --%s (see subscope info --help)\n", o->name, form);
            return 1;
        }
    }
    if (cli_flag(cmd, "dist")) return run_info_dist(cmd);
    if (cli_get(cmd, "config")) return run_info_config(cmd);
    if (cli_require(cmd, "model")) return 1;
    ss_model *m;
    ss_status st = ss_model_inspect(cli_get(cmd, "model"), &m);
    if (st) return cli_fail(cmd, st);
    const ss_config *c = &m->cfg;
    int ns = ss_sites_count(c);
    ss_site s;
    if (cli_flag(cmd, "list-sites")) {
        for (int i = 0; i < ns; i++) {
            ss_site_get(c, i, &s);
            printf("%s\n", s.name);
        }
        ss_model_free(m);
        return 0;
    }
    char wb[32], tb[32];
    const int llama = c->family == SS_FAMILY_LLAMA;
    const int64_t dh = ss_config_d_head(c);
    ss_fmt_bytes(wb, sizeof wb, (double)m->n_params * 4);
    ss_fmt_bytes(tb, sizeof tb, (double)ss_config_floats_per_token(c) * 4);
    printf("model        %s\n", m->dir);
    if (llama)
        printf("architecture %s (Llama family: RMSNorm, rotary, SwiGLU%s%s%s)\n", c->arch,
               c->tie_word_embeddings ? ", tied lm_head" : ", separate lm_head",
               c->qkv_bias && c->o_bias ? ", q/k/v/o biases" : c->qkv_bias ? ", q/k/v biases" : c->o_bias ? ", o biases" : "",
               c->mlp_bias ? ", MLP biases" : "");
    else
        printf("architecture GPT-2 (%s weight names%s)\n", m->has_prefix ? "transformer.-prefixed" : "unprefixed",
               c->tie_word_embeddings ? ", tied lm_head" : ", separate lm_head");
    printf("layers       %lld\n", (long long)c->n_layer);
    printf("d_model      %lld\n", (long long)c->n_embd);
    printf("heads        %lld x d_head %lld", (long long)c->n_head, (long long)dh);
    if (ss_config_kv_heads(c) != c->n_head) printf(", %lld key/value heads (grouped-query)", (long long)ss_config_kv_heads(c));
    printf("\n");
    printf("d_mlp        %lld (%s)\n", (long long)c->n_inner,
           llama ? "SwiGLU: silu(gate) * up" : c->act == SS_ACT_GELU_ERF ? "gelu, erf" : "gelu, tanh");
    if (llama) {
        static const char *const rs[] = {"", ", linear scaling", ", llama3 scaling"};
        printf("rotary       theta %g%s", c->rope_theta, rs[c->rope_type]);
        if (c->rope_type != SS_ROPE_NONE) printf(" (factor %g)", c->rope_factor);
        printf("\n");
    }
    printf("context      %lld positions\n", (long long)c->n_positions);
    printf("vocabulary   %lld%s\n", (long long)c->vocab_size, m->tok ? "" : " (no tokenizer: give token ids)");
    printf("%s eps %g\n", llama ? "RMSNorm     " : "layer norm  ", c->ln_eps);
    printf("parameters   %lld (%.2f M)\n", (long long)m->n_params, (double)m->n_params / 1e6);
    printf("weights      %s in the files; computed in float32\n", m->weight_dtypes);
    char blas[400];
    printf("cpu blas     %s\n", ss_cpu_blas_describe(blas, sizeof blas));
    printf("memory       %s of float32 weights + %s per token in flight (+ %lld bytes per token of logits kept)\n", wb,
           tb, (long long)c->vocab_size * 4);
    printf("sites        %d (per-token shape after [prompt, position]; L = 0..%lld)\n", ns, (long long)c->n_layer - 1);
    for (int i = 0; i < ns; i++) {
        ss_site_get(c, i, &s);
        if (s.layer > 0) continue;
        char name[96], shape[64];
        if (s.layer == 0) {
            const char *rest = strchr(s.name + 7, '.') + 1;
            snprintf(name, sizeof name, "blocks.L.%s", rest);
        } else {
            snprintf(name, sizeof name, "%s", s.name);
        }
        if (!s.per_token) snprintf(shape, sizeof shape, "[head %lld, query, key] per prompt", (long long)s.dims[0]);
        else if (s.ndim == 2) snprintf(shape, sizeof shape, "[%s %lld, %s %lld]", s.dim_names[0], (long long)s.dims[0], s.dim_names[1], (long long)s.dims[1]);
        else snprintf(shape, sizeof shape, "[%s %lld]", s.dim_names[0], (long long)s.dims[0]);
        printf("  %-32s %s\n", name, shape);
    }
    ss_model_free(m);
    return 0;
}

/* info --dist is what mpirun and srun are for; the rest is one process's. */
static int info_ranks(const cli_cmd *cmd) { return cli_flag(cmd, "dist"); }

cli_cmd cmd_info = {
    "info", "show a model's architecture, sizes, memory needs and activation sites",
    "subscope info --model DIR [--list-sites]  |  subscope info --config CONFIG.json [--tokens N] [--pipeline P [--pipeline-blocks N,..] [--max-memory BYTES]]  |  subscope info --dist",
    "examples:\n  subscope info --model models/tiny-gpt2\n  subscope info --config llama-7b/config.json --tokens 16384\n"
    "  mpirun -np 2 subscope info --dist\n",
    info_opts, run_info, NULL, info_ranks,
};

/* ---- tokenize ---- */

static cli_opt tok_opts[] = {
    {.name = "model", .metavar = "DIR", .help = "model (or tokenizer-only) directory with tokenizer.json or vocab.json + merges.txt, or a .gguf file"},
    {.name = "text", .metavar = "TEXT", .text = 1, .help = "text to encode; with --decode, a JSON array of token ids"},
    {.name = "decode", .metavar = NULL, .help = "decode ids to text instead of encoding"},
    {0},
};

static int run_tokenize(cli_cmd *cmd) {
    if (cli_require(cmd, "model") || cli_require(cmd, "text")) return 1;
    ss_tokenizer *t;
    ss_status st = ss_model_tokenizer_load(cli_get(cmd, "model"), &t);
    if (st) return cli_fail(cmd, st);
    const char *text = cli_get(cmd, "text");
    int rc = 0;
    if (cli_flag(cmd, "decode")) {
        ss_json_doc *doc;
        st = ss_json_parse(text, strlen(text), "--text", &doc);
        if (st) {
            ss_tokenizer_free(t);
            return cli_fail(cmd, st);
        }
        const ss_json *r = ss_json_root(doc);
        int32_t *ids = ss_malloc((r->len + 1) * sizeof *ids, "--text's token ids");
        if (r->type != SS_JSON_ARRAY) {
            st = ss_errorf(SS_ERR_ARG, "--text must be a JSON array of token ids, e.g. [464, 3290]");
        } else if (!ids) {
            st = SS_ERR_NOMEM;
        } else {
            for (size_t i = 0; i < r->len && !st; i++) {
                if (r->items[i].type != SS_JSON_NUMBER || !r->items[i].is_int || r->items[i].i < 0 || r->items[i].i > INT32_MAX)
                    st = ss_errorf(SS_ERR_ARG, "--text: element %zu is not a token id", i);
                else
                    ids[i] = (int32_t)r->items[i].i;
            }
        }
        char *out = NULL;
        size_t n = 0;
        if (!st) st = ss_tokenizer_decode(t, ids, r->len, &out, &n);
        if (!st) {
            fwrite(out, 1, n, stdout);
            putchar('\n');
        }
        free(out);
        free(ids);
        ss_json_free(doc);
    } else {
        int32_t *ids;
        size_t n;
        st = ss_tokenizer_encode(t, text, strlen(text), &ids, &n);
        if (!st) {
            putchar('[');
            for (size_t i = 0; i < n; i++) printf("%s%d", i ? ", " : "", ids[i]);
            printf("]\n");
            free(ids);
        }
    }
    if (st) rc = cli_fail(cmd, st);
    ss_tokenizer_free(t);
    return rc;
}

cli_cmd cmd_tokenize = {
    "tokenize", "encode text to token ids (or --decode ids to text) as the model's tokenizer does",
    "subscope tokenize --model DIR --text TEXT [--decode]",
    "examples:\n  subscope tokenize --model models/tiny-gpt2 --text 'The cat says meow.'\n"
    "  subscope tokenize --model models/tiny-gpt2 --decode --text '[335, 656]'\n",
    tok_opts, run_tokenize, NULL, NULL,
};

/* ---- predict ---- */

static cli_opt pred_opts[] = {
    {.name = "model", .metavar = "DIR", .help = "Hugging Face model directory, or a llama-architecture .gguf file"},
    {.name = "prompt", .metavar = "TEXT", .text = 1, .help = "the prompt"},
    {.name = "top", .metavar = "K", .help = "show the K most likely next tokens (default 10)"},
    {.name = "generate", .metavar = "N", .help = "instead, continue the prompt greedily by N tokens (stops at <|endoftext|> or any of the model's eos_token_id)"},
    {.name = "device", .metavar = "DEV", .help = "cpu, cuda, cuda:N or auto (default auto)"},
    {.name = "dtype", .metavar = "T", .help = "matrix products: float32 (default), bfloat16, float16 (GPU) or auto (the files' dtype on a GPU; fp32 accumulation)"},
    {.name = "tf32", .metavar = NULL, .help = "allow TF32 tensor-core math for float32 products on GPUs"},
    {0},
};

/* Prints bytes quoted so spaces and newlines show (ss_sb_quoted: invalid UTF-8 as \xNN). */
static void print_quoted(const char *s, size_t n) {
    ss_sbuf b = {0};
    ss_sb_quoted(&b, s, n, '"');
    if (!b.oom) fputs(b.p, stdout);
    free(b.p);
}

/* The logits after ids[0..n): with kv, ids continue the cached positions. */
static ss_status last_logits(const ss_model *m, const ss_backend *be, ss_kv_cache *kv, const int32_t *ids, int64_t n,
                             float **logits) {
    int64_t start = 0;
    ss_packing pk = {1, n, &start, &n, 0};
    ss_forward_opts o = {.logits = SS_LOGITS_LAST, .kv = kv};
    return ss_forward(m, be, ids, &pk, &o, logits);
}

static int run_predict(cli_cmd *cmd) {
    if (cli_require(cmd, "model") || cli_require(cmd, "prompt")) return 1;
    int64_t topk, gen;
    if (cli_int(cmd, "top", 1, 1000000, 10, &topk) || cli_int(cmd, "generate", 1, 100000, 0, &gen)) return 1;
    if (cli_get(cmd, "top") && gen) { /* --top would be ignored */
        fprintf(stderr, "subscope predict: error: give --top K (the next tokens) or --generate N (a continuation), not both\n");
        return 1;
    }
    int wdtype;
    if (cli_dtype(cmd, &wdtype)) return 1;
    ss_backend *be;
    ss_backend_opts bo = {.tf32 = cli_flag(cmd, "tf32")};
    ss_status st = ss_backend_open(cli_get(cmd, "device"), &bo, &be);
    if (st) return cli_fail(cmd, st);
    ss_model *m = NULL;
    if ((st = ss_model_load_deferred(cli_get(cmd, "model"), 0, -1, &m)) || (st = ss_model_place(m, be, wdtype))) {
        ss_model_free(m); /* NULL when loading failed */
        ss_backend_close(be);
        return cli_fail(cmd, st);
    }
    if (!m->tok) {
        ss_model_free(m);
        ss_backend_close(be);
        const char *path = cli_get(cmd, "model"); /* a .gguf's tokenizer is in the file, as tokenize says */
        return cli_fail(cmd, ss_model_path_is_gguf(path) ? ss_errorf(SS_ERR_ARG, "%s has no tokenizer (no tokenizer.ggml.model)", path)
                                                         : ss_errorf(SS_ERR_ARG, "%s has no tokenizer.json (or vocab.json + merges.txt)", path));
    }
    const int64_t V = m->cfg.vocab_size, ctx = m->cfg.n_positions;
    ss_prompts *p = NULL;
    float *lg = NULL;
    int32_t *ids = NULL;
    ss_kv_cache *kv = NULL;
    if ((st = ss_prompts_from_text(cli_get(cmd, "prompt"), &p))) goto out;
    /* No limit here: the tokenizer's limit message suggests --truncate, which predict does not have. */
    if ((st = ss_prompts_tokenize(p, m->tok, V, INT64_MAX, 0, NULL))) goto out;
    int64_t n = p->items[0].n_tokens;
    if (n > ctx) {
        st = ss_errorf(SS_ERR_ARG, "--prompt has %lld tokens, more than the model's context of %lld positions (shorten it)",
                       (long long)n, (long long)ctx);
        goto out;
    }
    if (!gen) {
        if ((st = last_logits(m, be, NULL, p->items[0].tokens, n, &lg))) goto out;
        double mx = -INFINITY, sum = 0;
        for (int64_t v = 0; v < V; v++) mx = lg[v] > mx ? lg[v] : mx;
        for (int64_t v = 0; v < V; v++) sum += exp((double)lg[v] - mx);
        if (topk > V) topk = V;
        /* Selection by repeated scans: K is small next to the vocabulary. */
        char *taken = ss_calloc((size_t)V, 1, "the vocabulary's taken marks");
        if (!taken) { st = SS_ERR_NOMEM; goto out; }
        printf("%-5s %-8s %-10s %-9s %s\n", "rank", "id", "prob", "logit", "token");
        for (int64_t k = 0; k < topk; k++) {
            int64_t best = -1;
            for (int64_t v = 0; v < V; v++)
                if (!taken[v] && (best < 0 || lg[v] > lg[best])) best = v;
            taken[best] = 1;
            int32_t id = (int32_t)best;
            char *txt = NULL;
            size_t tl = 0;
            printf("%-5lld %-8d %-10.6f %-9.4f ", (long long)k + 1, id, exp((double)lg[best] - mx) / sum, lg[best]);
            if (ss_tokenizer_decode(m->tok, &id, 1, &txt, &tl) == SS_OK) print_quoted(txt, tl);
            else printf("(id beyond the tokenizer)");
            putchar('\n');
            free(txt);
        }
        free(taken);
    } else {
        int32_t eos = ss_tokenizer_eos_id(m->tok);
        ids = ss_malloc((size_t)(n + gen) * sizeof *ids, "the prompt and its continuation");
        if (!ids) { st = SS_ERR_NOMEM; goto out; }
        memcpy(ids, p->items[0].tokens, (size_t)n * sizeof *ids);
        /* The keys and values of the positions run so far are kept (on backends
         * with attention_kv), so that each new token runs alone through the
         * blocks; SUBSCOPE_PREDICT_RECOMPUTE=1 runs the whole prompt each time. */
        const int trace = ss_env_flag("SUBSCOPE_PREDICT_TRACE");
        if (be->attention_kv && !ss_env_flag("SUBSCOPE_PREDICT_RECOMPUTE") &&
            (st = ss_kv_cache_open(m, be, n + gen < ctx ? n + gen : ctx, &kv)))
            goto out;
        fputs(cli_get(cmd, "prompt"), stdout);
        fflush(stdout);
        char held[4];
        size_t nheld = 0;
        for (int64_t g = 0; g < gen; g++) {
            free(lg);
            lg = NULL;
            if (kv && n <= ctx) {
                const int64_t have = ss_kv_cache_len(kv);
                if ((st = last_logits(m, be, kv, ids + have, n - have, &lg))) goto out;
            } else {
                /* Past the context window the oldest tokens drop out: their
                 * positions shift, so the cache no longer serves. */
                int64_t from = n > ctx ? n - ctx : 0;
                if ((st = last_logits(m, be, NULL, ids + from, n - from, &lg))) goto out;
            }
            int32_t best = 0;
            for (int64_t v = 1; v < V; v++)
                if (lg[v] > lg[best]) best = (int32_t)v;
            if (trace) { /* each step's choice and its runner-up, for comparing runs (gpu_check.sh) */
                int32_t next = best ? 0 : 1;
                for (int64_t v = 0; v < V; v++)
                    if (v != best && lg[v] > lg[next]) next = (int32_t)v;
                fprintf(stderr, "predict: step %lld id %d logit %.9g runner-up %d logit %.9g\n", (long long)g, best,
                        lg[best], V > 1 ? next : -1, V > 1 ? lg[next] : lg[best]);
            }
            if (best == eos || ss_config_is_eos(&m->cfg, best)) break;
            ids[n++] = best;
            char *txt = NULL;
            size_t tl = 0;
            if ((st = ss_tokenizer_decode(m->tok, &best, 1, &txt, &tl))) goto out;
            /* A character split across tokens waits in held for its next bytes;
             * bytes that never form valid UTF-8 print as \xNN. */
            char *all = ss_malloc(nheld + tl, "a token's text");
            if (!all) { free(txt); st = SS_ERR_NOMEM; goto out; }
            memcpy(all, held, nheld);
            memcpy(all + nheld, txt, tl);
            size_t keep = ss_fput_utf8(stdout, all, nheld + tl, 0);
            memcpy(held, all + nheld + tl - keep, keep);
            nheld = keep;
            fflush(stdout);
            free(all);
            free(txt);
        }
        ss_fput_utf8(stdout, held, nheld, 1);
        putchar('\n');
    }
out:
    ss_kv_cache_close(kv);
    free(lg);
    free(ids);
    ss_prompts_free(p);
    ss_model_free(m);
    ss_backend_close(be);
    return st ? cli_fail(cmd, st) : 0;
}

cli_cmd cmd_predict = {
    "predict", "show the most likely next tokens for a prompt, or continue it greedily",
    "subscope predict --model DIR --prompt TEXT [--top K | --generate N] [--device DEV] [--dtype T] [--tf32]",
    "--generate keeps each position's keys and values (a key/value cache, on the CPU and on a GPU), so each\n"
    "new token runs alone through the blocks; past the model's n_positions the oldest tokens drop out and\n"
    "each token recomputes the last n_positions. The cached attention computes in fp32 on either device;\n"
    "on a GPU, with 16-bit weights (--dtype bfloat16 or float16, or auto on such files), the cache holds\n"
    "the keys and values in their type (half of fp32's bytes), widened as attention reads them (a GPU's\n"
    "recompute may round bf16 models' attention operands to bf16). SUBSCOPE_PREDICT_RECOMPUTE=1\n"
    "recomputes the whole prompt for every token instead (tests compare); SUBSCOPE_PREDICT_TRACE=1 prints\n"
    "each step's token id and logit and the runner-up's to stderr.\n\n"
    "examples:\n  subscope predict --model models/tiny-gpt2 --prompt 'The cat says' --top 5\n"
    "  subscope predict --model models/tiny-gpt2 --prompt 'Let us count: four, five,' --generate 20\n",
    pred_opts, run_predict, NULL, NULL,
};
