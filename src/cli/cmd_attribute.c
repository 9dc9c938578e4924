#include <stdio.h>

#include "cli.h"
#include "subscope/dist.h"
#include "subscope/jobs.h"

static cli_opt attribute_opts[] = {
    CLI_RUN_OPTIONS,
    CLI_PIPELINE_OPTIONS,
    {.name = "sites", .metavar = "GLOBS", .help = "sites to attribute to, e.g. 'blocks.*.mlp.hook_post' ('*' = every per-token site)"},
    {.name = "metric", .metavar = "M", .help = "loss (default: mean next-token cross-entropy), logitdiff (logit(answer) - logit(wrong) at the last token) or logprob (log p(answer))"},
    {.name = "method", .metavar = "M", .help = "gradxact (default: gradient x activation), grad, atp (attribution patching, needs --corrupt) or ig[:STEPS] (integrated gradients, 32 steps)"},
    {.name = "corrupt", .metavar = "FILE", .help = "atp: corrupt prompts, paired line by line with --input (same token counts)"},
    {.name = "stats", .metavar = "STATS.h5", .help = "ig: take the baseline from the means in this collect file (default: zero)"},
    {.name = "reduce", .metavar = "R", .help = "none (default: [prompt, position, ...]), positions (sum over each prompt's positions) or prompts (sum over prompts; NaN at a position no prompt with a metric reaches)"},
    {.name = "recompute", .help = "keep only each block's input and recompute the block in the backward pass (less memory, one more forward)"},
    {.name = "micro-batches", .metavar = "M", .help = "with --pipeline P: stage s keeps at most max(1, M-s) batches (ig: integration steps of a batch) in flight, each with its activations (default P: one forward, one backward; 1: one at a time)"},
    {.name = "top", .metavar = "K", .help = "units per site in the printed table (default 10)"},
    {.name = "compress", .metavar = "LEVEL", .help = "deflate level 0-9 for the output (default 0: none; attributions shrink little)"},
    {.name = "out", .metavar = "OUT.h5", .help = "output HDF5 file"},
    {0},
};

static int run_attribute(cli_cmd *cmd) {
    int64_t top, micro, level;
    ss_attribute_job j = {
        .out = cli_get(cmd, "out"),
        .sites = cli_get(cmd, "sites"),
        .metric = cli_get(cmd, "metric"),
        .method = cli_get(cmd, "method"),
        .corrupt = cli_get(cmd, "corrupt"),
        .stats = cli_get(cmd, "stats"),
        .reduce = cli_get(cmd, "reduce"),
        .recompute = cli_flag(cmd, "recompute"),
        .command_line = cli_command_line(),
        .table = stdout,
        .progress = cli_progress,
        .progress_ctx = "prompt passes",
    };
    if (cli_run_opts(cmd, &j.run) || cli_require(cmd, "sites") || cli_require(cmd, "out") ||
        cli_int(cmd, "top", 1, 1000000, 10, &top) || cli_int(cmd, "micro-batches", 1, 4096, 0, &micro) ||
        cli_int(cmd, "compress", 0, 9, 0, &level))
        return 1;
    j.compress = (int)level;
    j.top = (int)top;
    j.micro_batches = (int)micro;
    ss_status st = ss_job_attribute(&j);
    if (st) return cli_fail(cmd, st);
    cli_wrote(j.out, 0);
    return 0;
}

cli_cmd cmd_attribute = {
    "attribute", "score every unit of chosen sites by how much it drives a metric (gradients, attribution patching, IG)",
    "subscope attribute --model DIR --input FILE --sites GLOBS [--metric loss|logitdiff|logprob]\n"
    "                          [--method grad|gradxact|atp|ig[:STEPS]] [--corrupt FILE] [--stats STATS.h5]\n"
    "                          [--reduce none|positions|prompts] [--recompute] [--pipeline P [--micro-batches M]]\n"
    "                          [--top K] [--compress LEVEL] --out OUT.h5",
    "Each prompt's metric is differentiated with respect to the value at every chosen site (one forward and\n"
    "one backward pass per batch; ig: one per step and site). grad writes the gradient, gradxact gradient x\n"
    "activation, atp (corrupt - clean activation) x gradient at the clean run, and ig the integrated gradients\n"
    "along the straight path from the baseline, with the completeness error. Layout: docs/FORMAT.md.\n\n"
    "examples:\n"
    "  subscope attribute --model models/tiny-gpt2 --input tests/data/ablate/prompts.jsonl \\\n"
    "      --sites 'blocks.*.mlp.hook_post' --metric logitdiff --out out/attr.h5\n"
    "  subscope attribute --model models/tiny-gpt2 --input tests/data/patch/clean.jsonl \\\n"
    "      --corrupt tests/data/patch/corrupt.jsonl \\\n"
    "      --sites 'blocks.*.attn.hook_z' --metric logitdiff --method atp --reduce positions --out out/atp.h5\n",
    attribute_opts, run_attribute, NULL, cli_any_ranks,
};
