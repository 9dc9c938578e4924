#include <stdio.h>

#include "cli.h"
#include "subscope/dist.h"
#include "subscope/jobs.h"

static cli_opt col_opts[] = {
    CLI_RUN_OPTIONS,
    CLI_PIPELINE_OPTIONS,
    {.name = "sites", .metavar = "GLOBS", .help = "sites to collect, e.g. 'blocks.*.mlp.hook_post' (per-token vectors only)"},
    {.name = "out", .metavar = "STATS.h5", .help = "output HDF5 file"},
    {.name = "stats", .metavar = "LIST", .help = "any of mean,cov,corr,pca:K (default mean,cov; the mean and count are always written)"},
    {.name = "positions", .metavar = "SEL", .help = "all (default), last, or FROM:TO (half-open token positions, either side optional)"},
    {.name = "skip-bos", .metavar = NULL, .help = "leave out position 0 of every prompt"},
    {.name = "group-by", .metavar = "FIELD", .help = "also collect per value of the JSONL field (only 'label')"},
    {.name = "compress", .metavar = "LEVEL", .help = "deflate level 0-9 for the output (default 0: dense float64 matrices shrink ~10% at ~3x the time)"},
    {.name = "checkpoint-every", .metavar = "N", .help = "write the partial statistics to OUT.h5.ckpt every N prompts"},
    {.name = "resume", .metavar = NULL, .help = "continue from OUT.h5.ckpt when there is one, else start from the first prompt (refused if the model, data or options differ, or its data fail its checksum)"},
    {0},
};

static int run_collect(cli_cmd *cmd) {
    ss_collect_job j = {
        .out = cli_get(cmd, "out"),
        .sites = cli_get(cmd, "sites"),
        .stats = cli_get(cmd, "stats"),
        .positions = cli_get(cmd, "positions"),
        .skip_bos = cli_flag(cmd, "skip-bos"),
        .group_by = cli_get(cmd, "group-by"),
        .resume = cli_flag(cmd, "resume"),
        .command_line = cli_command_line(),
        .progress = cli_progress,
        .progress_ctx = "prompts",
        .results_progress_ctx = "sites' results",
    };
    if (cli_run_opts(cmd, &j.run) || cli_require(cmd, "sites") || cli_require(cmd, "out") ||
        cli_int(cmd, "checkpoint-every", 1, INT64_MAX, 0, &j.checkpoint_every))
        return 1;
    int64_t level;
    if (cli_int(cmd, "compress", 0, 9, 0, &level)) return 1;
    j.compress = (int)level;
    ss_status st = ss_job_collect(&j);
    if (st) return cli_fail(cmd, st);
    cli_wrote(j.out, 0);
    return 0;
}

cli_cmd cmd_collect = {
    "collect", "streaming mean, covariance, correlation and principal components of activations at sites",
    "subscope collect --model DIR --input FILE --sites GLOBS --out STATS.h5 [--stats mean,cov,corr,pca:K]\n"
    "                        [--positions all|last|FROM:TO] [--skip-bos] [--group-by label] [--batch B]\n"
    "                        [--compress LEVEL] [--checkpoint-every N] [--resume] [--device DEV]",
    "Statistics accumulate in float64 with Chan's parallel update: batch size and checkpoints change\n"
    "nothing but rounding. On a GPU each batch's centred products are summed in float32 first\n"
    "(SUBSCOPE_COV_KERNEL picks how, bfloat16 operands included: README). Layout: docs/FORMAT.md.\n\n"
    "examples:\n"
    "  subscope collect --model models/tiny-gpt2 --input data/demo_prompts.jsonl \\\n"
    "      --sites 'blocks.*.mlp.hook_post' --stats mean,cov,corr,pca:8 --out out/stats.h5\n"
    "  subscope collect ... --group-by label --positions last --checkpoint-every 1000 --resume\n",
    col_opts, run_collect, NULL, cli_any_ranks,
};
