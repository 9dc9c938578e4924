#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "subscope/dist.h"
#include "subscope/jobs.h"

static cli_opt abl_opts[] = {
    CLI_RUN_OPTIONS,
    CLI_PIPELINE_OPTIONS,
    {.name = "mask", .metavar = "SPEC", .help = "a mask, e.g. 'blocks.2.mlp.hook_post[17,230]' or 'blocks.1.attn.hook_z[head=3]' (zeroes those units; repeatable, up to 64 times: more in a --masks FILE)"},
    {.name = "masks", .metavar = "FILE", .help = "masks as JSONL: name, site|sites, units, heads, positions, mode, factor, sigma, relative, seed"},
    {.name = "out", .metavar = "OUT.h5", .help = "output HDF5 file"},
    {.name = "metrics", .metavar = "LIST", .help = "any of loss,acc,keyword,logitdiff,kl (default loss,acc,kl)"},
    {.name = "keywords", .metavar = "FILE", .help = "words, one per line, for the keyword metric (given with --metrics keyword only)"},
    {.name = "stats", .metavar = "STATS.h5", .help = "collect output with mean,cov for mean and relative-noise masks (default: computed over the input)"},
    {.name = "patch-from", .metavar = "FILE", .help = "prompts paired line by line with --input (same token counts): the values that masks of mode patch put in"},
    {.name = "controls", .metavar = "K", .help = "also run K control masks per mask: the same sites, mode and intensity, as many units per site drawn at random (default 0)"},
    {.name = "mask-batch", .metavar = "K", .help = "run at most K masks in one forward, each on its own copy of the batch's prompts (default: 1 on the CPU, where it is fastest; on a GPU about 4096 rows per forward within 1 GiB)"},
    {0},
};

static int run_ablate(cli_cmd *cmd) {
    cli_opt *mask = NULL;
    for (cli_opt *o = cmd->opts; o->name; o++)
        if (!strcmp(o->name, "mask")) mask = o;
    ss_ablate_job j = {
        .out = cli_get(cmd, "out"),
        .mask_specs = mask->all,
        .n_mask_specs = mask->n,
        .masks_file = cli_get(cmd, "masks"),
        .metrics = cli_get(cmd, "metrics"),
        .keywords = cli_get(cmd, "keywords"),
        .stats = cli_get(cmd, "stats"),
        .patch_from = cli_get(cmd, "patch-from"),
        .command_line = cli_command_line(),
        .table = stdout,
        .progress = cli_progress,
        .progress_ctx = "prompt passes", /* a prompt under one mask (or clean): K masks of a batch share a forward */
    };
    int64_t mask_batch, controls;
    if (cli_run_opts(cmd, &j.run) || cli_require(cmd, "out") || cli_int(cmd, "mask-batch", 1, 4096, 0, &mask_batch) ||
        cli_int(cmd, "controls", 0, 511, 0, &controls))
        return 1;
    j.mask_batch = (int)mask_batch;
    j.controls = (int)controls;
    ss_status st = ss_job_ablate(&j);
    if (st) return cli_fail(cmd, st);
    cli_wrote(j.out, 0);
    return 0;
}

cli_cmd cmd_ablate = {
    "ablate", "rerun the model with units masked (zero, mean, scale, resample, noise, negnoise, patch) and measure what changes",
    "subscope ablate --model DIR --input FILE (--mask SPEC ... and/or --masks FILE) --out OUT.h5\n"
    "                       [--metrics loss,acc,keyword,logitdiff,kl] [--keywords FILE] [--stats STATS.h5] [--patch-from FILE] [--mask-batch K] [--controls K]",
    "--mask SPEC is SITES[ITEMS]: SITES a site or a glob ('*' matches anything: every matching site but\n"
    "attention patterns, which cannot be masked);\n"
    "ITEMS, comma-separated, are units N, ranges A-B (both ends included), head=H (every unit of head H of\n"
    "a per-head site) and pos=P (only at token position P; without it, every position); each item\n"
    "stands alone, so two heads are head=1,head=3 ('head=1,3' is head 1 and unit 3); without\n"
    "[ITEMS], every unit. It zeroes them, and the spec is the mask's name. --mask and --masks add up:\n"
    "given together, the file's masks run and then each --mask's.\n"
    "Modes (JSONL \"mode\"): zero; mean (unit means from --stats, else from the input); scale (\"factor\"\n"
    "in [0,1]); resample (the clean value of another prompt of the input, drawn with \"seed\"); patch (the\n"
    "value of the paired prompt of --patch-from at the same position: activation patching);\n"
    "noise (Gaussian, \"sigma\", \"relative\": true for sigma in units of each unit's std);\n"
    "negnoise (noise that only moves a value toward zero). Noise is seeded (\"seed\") and does not\n"
    "depend on batching. \"factor\", \"sigma\" or \"relative\" with a mode that does not read them is\n"
    "refused. Metrics are per prompt; the table shows each mask's change from clean, overall and per\n"
    "\"label\". Masks run many at a time: one forward holds K copies of a batch's\n"
    "prompts, each under its own mask, starting from the clean residual stream at the first block\n"
    "the group's masks touch (--mask-batch K; the results do not depend on K beyond rounding).\n"
    "--controls K adds, per mask, K masks named <mask>~ctrl<k> with the same sites, positions, mode and\n"
    "intensity and as many units per site, drawn uniformly without replacement from all the site's units,\n"
    "seeded by the mask's seed and k (a mask covering a whole site gets none, with a note); `subscope\n"
    "report` compares each mask with its controls. Layout: docs/FORMAT.md.\n\n"
    "examples:\n"
    "  subscope ablate --model models/tiny-gpt2 --input data/demo_prompts.jsonl --out out/abl.h5 \\\n"
    "      --mask 'blocks.1.mlp.hook_post[0,5,9]' --mask 'blocks.0.attn.hook_z[head=2]'\n"
    "  subscope ablate --model models/tiny-gpt2 --input data/demo_prompts.jsonl --out out/abl2.h5 \\\n"
    "      --mask 'blocks.*.mlp.hook_post[0-9,pos=2]' --mask 'blocks.3.mlp.hook_post'\n",
    abl_opts, run_ablate, NULL, cli_any_ranks,
};
