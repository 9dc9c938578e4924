#include <stdio.h>

#include "cli.h"
#include "subscope/jobs.h"

static cli_opt show_opts[] = {
    {.name = "file", .metavar = "OUT.h5", .help = "the HDF5 file written by a subscope command"},
    {.name = "prompts", .metavar = "N", .help = "a forward file: predictions and losses of at most N prompts (default 8); refused for other files"},
    {0},
};

static int run_show(cli_cmd *cmd) {
    if (!cli_get(cmd, "file")) {
        fprintf(stderr, "subscope show: error: no file given (subscope show OUT.h5; see subscope show --help)\n");
        return 1;
    }
    if (show_opts[0].n > 1) {
        fprintf(stderr, "subscope show: error: one file at a time (got %d: '%s', '%s'%s)\n", show_opts[0].n,
                show_opts[0].all[0], show_opts[0].all[1], show_opts[0].n > 2 ? ", ..." : "");
        return 1;
    }
    const char *file = cli_get(cmd, "file");
    int64_t n;
    if (cli_int(cmd, "prompts", 1, 1 << 30, 0, &n)) return 1; /* 0: not given, the default */
    /* an attribute file is read prompt by prompt, which a file of many prompts makes long: its
     * progress on stderr where that is a terminal (cli_progress); Ctrl-C ends it (no handler) */
    ss_status st = ss_job_show_progress(file, n, stdout, cli_progress, (void *)"attribution rows read");
    return st ? cli_fail(cmd, st) : 0;
}

cli_cmd cmd_show = {
    "show", "summarise a subscope HDF5 file: provenance, datasets and axes, predictions, top neurons, units and pieces",
    "subscope show OUT.h5 [--prompts N]   (or --file OUT.h5)",
    "Forward files: each prompt's next-token guess, losses, the most active MLP neurons. collect files:\n"
    "the principal components' share of variance. attribute files: each site's top units by |sum of\n"
    "attributions over prompts and positions| (signed units that cancel rank low; read one prompt at a\n"
    "time: progress on stderr where that is a terminal). patch files: each site's pieces by |mean\n"
    "normalised effect| over the pairs with a value there (a position past a pair's end has none), and\n"
    "how many where fewer than all.\n\n"
    "example:\n  subscope show out/demo.h5\n",
    show_opts, run_show, "file", NULL,
};
