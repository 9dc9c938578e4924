#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "subscope/report.h"

static cli_opt rep_opts[] = {
    {.name = "in", .metavar = "RUN.h5", .help = "an ablate output (repeatable, up to 64 files; several files are read together)"},
    {.name = "out", .metavar = "REPORT.html", .help = "the HTML page to write"},
    {.name = "metric", .metavar = "M", .help = "loss (default), acc, keyword, logitdiff or kl: the metric of the curves and the index"},
    {.name = "title", .metavar = "T", .text = 1, .help = "page title (default \"subscope report\")"},
    {0},
};

static int run_report(cli_cmd *cmd) {
    cli_opt *in = NULL;
    for (cli_opt *o = cmd->opts; o->name; o++)
        if (!strcmp(o->name, "in")) in = o;
    if (cli_require(cmd, "out")) return 1;
    if (!in->n) {
        fprintf(stderr, "subscope report: error: no input: give --in RUN.h5 (one or more)\n");
        return 1;
    }
    ss_report_job j = {
        .inputs = in->all,
        .n_inputs = in->n,
        .out = cli_get(cmd, "out"),
        .metric = cli_get(cmd, "metric"),
        .title = cli_get(cmd, "title"),
        .summary = stdout,
    };
    ss_status st = ss_job_report(&j);
    if (st) return cli_fail(cmd, st);
    fprintf(stderr, "wrote %s\n", j.out);
    return 0;
}

cli_cmd cmd_report = {
    "report", "one HTML page from ablate outputs: impairment curves per topic, topic-specificity vs controls",
    "subscope report RUN.h5 [RUN2.h5 ...] --out REPORT.html [--metric loss] [--title T]   (or --in RUN.h5 ...)",
    "Masks that mask the same units (any mode or intensity) form one sub-model. Per sub-model and mode the\n"
    "page plots the change in the metric from clean against intensity (scale: 1 - factor; noise, negnoise:\n"
    "sigma; zero, mean, resample: 1), one curve per topic (JSONL \"label\"), and judges each setting of the\n"
    "sub-model against that setting's controls: index = impairment of the worst-hit topic / mean over the other topics of\n"
    "max(impairment, eps), eps = max(1e-3, 0.01 x the target's). \"topic-specific\" needs index >= 3 and\n"
    "index > mean + 2 sd of its controls' indices (ablate --controls K, K >= 2) and the target's impairment\n"
    "at least 1% of its clean value (and 1e-3); else \"too small\". Inputs without labels\n"
    "give one topic, \"all\", and no verdict of specificity. Shown: the most specific setting that passes,\n"
    "else the strongest (largest mean impairment). The page has no script and loads nothing.\n"
    "Prints one line per sub-model. Details: docs/FORMAT.md.\n\n"
    "examples:\n"
    "  subscope ablate --model models/tiny-gpt2 --input tests/data/ablate/prompts.jsonl --masks sweep.jsonl \\\n"
    "      --controls 3 --out out/sweep.h5\n"
    "  subscope report out/sweep.h5 --out out/sweep.html\n",
    rep_opts, run_report, "in", NULL,
};
