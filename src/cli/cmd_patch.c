#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "subscope/dist.h"
#include "subscope/jobs.h"

static cli_opt patch_opts[] = {
    CLI_RUN_INPUT,
    {.name = "batch", .metavar = "K", .help = "patched copies of a prompt per forward pass, each with its own piece (default: about 2048 rows a pass)"},
    CLI_RUN_LIMITS,
    CLI_PIPELINE_OPTIONS,
    {.name = "clean", .metavar = "FILE", .help = "clean prompts (the same as --input)"},
    {.name = "corrupt", .metavar = "FILE", .help = "corrupt prompts, paired line by line with --input (same token counts)"},
    {.name = "sites", .metavar = "GLOBS", .help = "sites to patch, e.g. 'blocks.*.hook_resid_pre'"},
    {.name = "per", .metavar = "UNIT", .help = "site (default), position, head (q/k/v/z sites) or neuron: what one patch replaces"},
    {.name = "metric", .metavar = "M", .help = "logitdiff (default; \"answer\"/\"wrong\" of the clean line) or loss (on the clean tokens)"},
    {.name = "denoise", .help = "patch the corrupt run's values into the clean run instead"},
    {.name = "out", .metavar = "OUT.h5", .help = "output HDF5 file"},
    {0},
};

static int run_patch(cli_cmd *cmd) {
    /* --clean names the clean prompts, as --input does for every other command. */
    if (!cli_get(cmd, "clean") && !cli_get(cmd, "input")) return cli_require(cmd, "clean");
    for (cli_opt *o = cmd->opts; o->name && cli_get(cmd, "clean"); o++)
        if (!strcmp(o->name, "input")) {
            if (o->value && strcmp(o->value, cli_get(cmd, "clean"))) {
                fprintf(stderr, "subscope patch: error: --clean and --input name different files\n");
                return 1;
            }
            o->value = cli_get(cmd, "clean");
        }
    ss_patch_job j = {
        .corrupt = cli_get(cmd, "corrupt"),
        .out = cli_get(cmd, "out"),
        .sites = cli_get(cmd, "sites"),
        .per = cli_get(cmd, "per"),
        .metric = cli_get(cmd, "metric"),
        .denoise = cli_flag(cmd, "denoise"),
        .command_line = cli_command_line(),
        .table = stdout,
        .progress = cli_progress,
        .progress_ctx = "patches",
    };
    if (cli_run_opts(cmd, &j.run) || cli_int(cmd, "batch", 1, 1 << 20, 0, &j.batch) || cli_require(cmd, "corrupt") ||
        cli_require(cmd, "sites") || cli_require(cmd, "out"))
        return 1;
    ss_status st = ss_job_patch(&j);
    if (st) return cli_fail(cmd, st);
    cli_wrote(j.out, j.run.pipeline > 1 ? (int)j.run.pipeline - 1 : 0); /* a pipeline's last stage writes */
    return 0;
}

cli_cmd cmd_patch = {
    "patch", "activation patching between clean and corrupt prompts: which sites, positions or heads carry the difference",
    "subscope patch --model DIR --clean FILE --corrupt FILE --sites GLOBS [--per site|position|head|neuron]\n"
    "                      [--metric logitdiff|loss] [--denoise] [--batch K] --out OUT.h5",
    "For each pair, the model runs on the corrupt prompt with one piece of a site taken from the clean run\n"
    "(with --denoise: on the clean prompt with a piece from the corrupt run); the normalised effect is\n"
    "(patched - corrupt) / (clean - corrupt). In Heimersheim & Nanda's terms the default is denoising and\n"
    "--denoise is noising; the output's 'direction' attribute says which ran. A pass runs K copies of the\n"
    "prompt, each with its own piece, from the patched site's block (the blocks before it are the same in\n"
    "every copy). Layout: docs/FORMAT.md.\n\n"
    "example:\n"
    "  subscope patch --model models/tiny-gpt2 --clean clean.jsonl --corrupt corrupt.jsonl \\\n"
    "      --sites 'blocks.*.hook_resid_pre' --per position --out out/patch.h5\n",
    patch_opts, run_patch, NULL, cli_any_ranks,
};
