#include "cli.h"
#include "subscope/jobs.h"

static cli_opt show_opts[] = {
    {.name = "file", .metavar = "OUT.h5", .help = "the HDF5 file written by a subscope command"},
    {.name = "prompts", .metavar = "N", .help = "show predictions for at most N prompts (default 8)"},
    {0},
};

static int run_show(cli_cmd *cmd) {
    if (cli_require(cmd, "file")) return 1;
    const char *file = cli_get(cmd, "file");
    int64_t n;
    if (cli_int(cmd, "prompts", 1, 1 << 30, 8, &n)) return 1;
    ss_status st = ss_job_show(file, n, stdout);
    return st ? cli_fail(cmd, st) : 0;
}

cli_cmd cmd_show = {
    "show", "summarise a subscope HDF5 file: provenance, datasets and axes, predictions, top neurons",
    "subscope show --file OUT.h5 [--prompts N]",
    "example:\n  subscope show --file out/demo.h5\n",
    show_opts, run_show, NULL, NULL,
};
