#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "subscope/bpe_train.h"
#include "subscope/train.h"
#include "subscope/util.h"

static cli_opt train_opts[] = {
    {.name = "config", .metavar = "SMALL.json", .help = "GPT-2 config.json of the model to train (n_layer, n_head, n_embd, n_positions, vocab_size, ...)"},
    {.name = "data", .metavar = "FILE", .help = "training text: plain text (one document per line) or JSONL ({\"text\": ...} or {\"tokens\": [...]})"},
    {.name = "tokenizer", .metavar = "DIR", .help = "directory with tokenizer.json or vocab.json + merges.txt; copied into --out (without it the data must be token ids)"},
    {.name = "vocab-size", .metavar = "V", .help = "instead of --tokenizer: first train a byte-level BPE tokenizer of exactly V ids (<|endoftext|> = 0) on the data; the config's vocab_size must be V"},
    {.name = "out", .metavar = "DIR", .help = "output Hugging Face directory (created if missing; its parent must exist)"},
    {.name = "steps", .metavar = "N", .help = "optimizer steps (default 1000)"},
    {.name = "batch", .metavar = "B", .help = "windows per step (default 8)"},
    {.name = "seq", .metavar = "T", .help = "tokens per window (default and maximum: n_positions)"},
    {.name = "lr", .metavar = "LR", .help = "peak learning rate (default 1e-3)"},
    {.name = "warmup", .metavar = "N", .help = "linear warm-up steps (default min(100, steps/10)), then cosine decay to lr/10"},
    {.name = "weight-decay", .metavar = "W", .help = "AdamW decoupled weight decay on the attention and MLP matrices (default 0.1)"},
    {.name = "clip", .metavar = "C", .help = "clip the global gradient norm to C (default 1.0; 0: no clipping)"},
    {.name = "seed", .metavar = "S", .help = "seed of the initialisation and of the batch order (default 1234)"},
    {.name = "device", .metavar = "DEV", .help = "cpu, cuda, cuda:N or auto (default: auto, which falls back to cpu where the GPU backend has no backward pass)"},
    {.name = "log-every", .metavar = "N", .help = "steps between progress lines on stderr (default 10)"},
    {0},
};

/* A non-negative (positive: above 0) real option, or def if absent; prints and returns 1 on error. */
static int real_opt(const cli_cmd *cmd, const char *name, int positive, double def, double *out) {
    const char *v = cli_get(cmd, name);
    if (!v) {
        *out = def;
        return 0;
    }
    double x;
    if (!ss_parse_real(v, &x) || x < 0 || (positive && x == 0)) { /* no space, no '+', no trailing text */
        fprintf(stderr, "subscope %s: error: --%s must be a %s number, got '%s'\n", cmd->name, name,
                positive ? "positive" : "non-negative", v);
        return 1;
    }
    *out = x;
    return 0;
}

static int run_train(cli_cmd *cmd) {
    ss_train_job j = {
        .config = cli_get(cmd, "config"),
        .data = cli_get(cmd, "data"),
        .tokenizer = cli_get(cmd, "tokenizer"),
        .out = cli_get(cmd, "out"),
        .device = cli_get(cmd, "device"),
        .command_line = cli_command_line(),
        .log = stderr,
    };
    int64_t seed;
    if (cli_require(cmd, "config") || cli_require(cmd, "data") || cli_require(cmd, "out") ||
        cli_int(cmd, "vocab-size", SS_BPE_MIN_VOCAB, INT32_MAX, 0, &j.vocab_size) ||
        cli_int(cmd, "steps", 1, INT64_C(1) << 40, 1000, &j.steps) || cli_int(cmd, "batch", 1, 1 << 20, 8, &j.batch) ||
        cli_int(cmd, "seq", 2, 1 << 24, 0, &j.seq) || cli_int(cmd, "warmup", 0, INT64_C(1) << 40, -1, &j.warmup) ||
        cli_int(cmd, "seed", 0, INT64_MAX, 1234, &seed) || cli_int(cmd, "log-every", 1, INT64_C(1) << 40, 10, &j.log_every) ||
        real_opt(cmd, "lr", 1, 1e-3, &j.lr) || real_opt(cmd, "weight-decay", 0, 0.1, &j.weight_decay) ||
        real_opt(cmd, "clip", 0, 1.0, &j.clip))
        return 1;
    j.seed = (uint64_t)seed;
    ss_train_result r;
    j.result = &r;
    ss_status st = ss_job_train(&j);
    if (st) return cli_fail(cmd, st);
    fprintf(stderr, "wrote %s (train loss %.4f -> %.4f", j.out, r.first_loss, r.last_loss);
    if (!isnan(r.val_loss)) fprintf(stderr, ", held-out %.4f", r.val_loss);
    fprintf(stderr, ", %.1f s", r.seconds);
    if (j.vocab_size) fprintf(stderr, "; tokenizer %.2f s", r.tokenizer_seconds);
    fprintf(stderr, ")\n");
    return 0;
}

cli_cmd cmd_train = {
    "train", "train a small GPT-2 from scratch on a text file and write a Hugging Face directory",
    "subscope train --config SMALL.json --data FILE --out DIR [--tokenizer DIR | --vocab-size V] [--steps N]\n"
    "                      [--batch B] [--seq T] [--lr LR] [--warmup N] [--weight-decay W] [--clip C] [--seed S]\n"
    "                      [--device DEV] [--log-every N]",
    "The documents are tokenized, joined into one stream (each followed by <|endoftext|> when the tokenizer\n"
    "has it) and cut into windows of T tokens; the last 5% of the windows are held out (none if there are\n"
    "fewer than 20) and their loss is printed at the end. Each step draws B windows from a seeded shuffle and\n"
    "minimises the mean next-token cross-entropy with AdamW (betas 0.9/0.95, eps 1e-8; decoupled weight decay\n"
    "on the attention and MLP matrices only, not on embeddings, biases or layer norms), linear warm-up then\n"
    "cosine decay to lr/10, and global gradient-norm clipping. Initialisation is GPT-2's (normal 0.02, output\n"
    "projections 0.02/sqrt(2*n_layer)). The same seed and inputs give bit-identical weights. No dropout.\n"
    "The optimizer runs on the host: on a GPU the gradients are downloaded and the weights uploaded each step.\n\n"
    "With --vocab-size V a tokenizer is trained on the documents first: byte-level BPE as Hugging Face's\n"
    "ByteLevelBPETokenizer trains it (GPT-2's pre-tokenizer; id 0 <|endoftext|>, ids 1..256 the bytes, then the\n"
    "merges, most frequent pair first, ties to the smallest pair of ids), the same merges for the same data.\n"
    "The config's vocab_size must equal V. DIR then gets the trained tokenizer.json, vocab.json and merges.txt.\n\n"
    "DIR gets config.json (the given config with model_type gpt2, architectures [GPT2LMHeadModel] and\n"
    "tie_word_embeddings), model.safetensors (F32), the tokenizer files and subscope_train.json (the run's\n"
    "settings and losses). It loads in subscope and in Hugging Face transformers (docs/TRAIN.md).\n\n"
    "examples:\n"
    "  subscope train --config small.json --data corpus.txt --tokenizer models/tiny-gpt2 \\\n"
    "      --out out/small --steps 300 --batch 16 --seq 64 --lr 2e-3\n"
    "  subscope train --config small.json --data corpus.txt --vocab-size 1024 --out out/small2 --steps 300\n",
    train_opts, run_train, NULL, NULL,
};
