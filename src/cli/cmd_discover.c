#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "subscope/discover.h"
#include "subscope/util.h"

static cli_opt disc_opts[] = {
    {.name = "stats", .metavar = "STATS.h5", .help = "a `subscope collect` file (with cov or corr; --group-by label for contrast)"},
    {.name = "attr", .metavar = "ATTR.h5", .help = "a `subscope attribute` file: weights units by their summed |attribution|"},
    {.name = "sites", .metavar = "GLOBS", .help = "sites of the stats file to search, e.g. 'blocks.*.mlp.hook_post'"},
    {.name = "method", .metavar = "M", .help = "cluster (co-activating units) or contrast (units that separate two labels)"},
    {.name = "fraction", .metavar = "F", .help = "sub-model size as a fraction of a site's units, in (0, 1] (default 0.02)"},
    {.name = "contrast", .metavar = "A:B", .help = "contrast: the two labels (of collect --group-by label; neither may contain ':', '/' or ',')"},
    {.name = "top", .metavar = "N", .help = "cluster: best clusters kept per site (default 10)"},
    {.name = "min-corr", .metavar = "R", .help = "cluster: clusters merge only above this mean correlation (default 0.1)"},
    {.name = "mode", .metavar = "MODE", .help = "mode of the exported masks: zero (default), mean, scale, noise, negnoise, resample, patch (ablate --patch-from)"},
    {.name = "factor", .metavar = "F", .help = "factor of the exported masks (mode scale)"},
    {.name = "sigma", .metavar = "S", .help = "sigma of the exported masks (modes noise, negnoise)"},
    {.name = "out", .metavar = "SUBMODELS.h5", .help = "output HDF5 file"},
    {.name = "masks-out", .metavar = "MASKS.jsonl", .help = "masks JSONL for `ablate --masks` (default: OUT with .h5 -> .masks.jsonl, or .masks.jsonl added to an OUT without .h5)"},
    {0},
};

/* A floating-point option, or def when absent; prints and returns 1 on error. */
static int cli_double(const cli_cmd *cmd, const char *name, double def, double *out, int *given) {
    const char *v = cli_get(cmd, name);
    if (given) *given = v != NULL;
    if (!v) {
        *out = def;
        return 0;
    }
    double x;
    if (!ss_parse_real(v, &x)) { /* no space, no '+', no trailing text */
        fprintf(stderr, "subscope %s: error: --%s must be a number, got '%s'\n", cmd->name, name, v);
        return 1;
    }
    *out = x;
    return 0;
}

static int run_discover(cli_cmd *cmd) {
    ss_discover_job j = {
        .stats = cli_get(cmd, "stats"),
        .attr = cli_get(cmd, "attr"),
        .sites = cli_get(cmd, "sites"),
        .method = cli_get(cmd, "method"),
        .contrast = cli_get(cmd, "contrast"),
        .mode = cli_get(cmd, "mode"),
        .out = cli_get(cmd, "out"),
        .masks_out = cli_get(cmd, "masks-out"),
        .command_line = cli_command_line(),
        .table = stdout,
        .progress = cli_progress,
        .progress_ctx = "sites",
    };
    if (cli_require(cmd, "stats") || cli_require(cmd, "sites") || cli_require(cmd, "method") ||
        cli_require(cmd, "out") || cli_double(cmd, "fraction", 0.02, &j.fraction, NULL) ||
        cli_double(cmd, "min-corr", 0.1, &j.min_corr, NULL) || cli_double(cmd, "factor", 0, &j.factor, &j.has_factor) ||
        cli_double(cmd, "sigma", 0, &j.sigma, &j.has_sigma) || cli_int(cmd, "top", 1, 1000000, 10, &j.top))
        return 1;
    /* Options of the other method would be silently ignored: refused, as --contrast is with cluster. */
    const char *cluster_only[] = {"top", "min-corr"};
    for (size_t k = 0; j.method && !strcmp(j.method, "contrast") && k < sizeof cluster_only / sizeof *cluster_only; k++)
        if (cli_get(cmd, cluster_only[k])) {
            fprintf(stderr, "subscope %s: error: --%s goes with --method cluster (contrast keeps round(fraction x d) units per site)\n",
                    cmd->name, cluster_only[k]);
            return 1;
        }
    ss_status st = ss_job_discover(&j);
    if (st) return cli_fail(cmd, st);
    char *masks = j.masks_out ? NULL : ss_discover_masks_path(j.out);
    fprintf(stderr, "wrote %s and %s\n", j.out, j.masks_out ? j.masks_out : masks ? masks : "its masks");
    free(masks);
    return 0;
}

cli_cmd cmd_discover = {
    "discover", "find candidate sub-models (groups of units) from collect statistics and attributions",
    "subscope discover --stats STATS.h5 [--attr ATTR.h5] --sites GLOBS --method cluster|contrast\n"
    "                         [--fraction 0.02] [--contrast A:B] [--top N] [--min-corr R]\n"
    "                         [--mode MODE [--factor F | --sigma S]] --out SUBMODELS.h5 [--masks-out MASKS.jsonl]",
    "cluster: per site, average-linkage clustering of the units on their correlation, clusters capped at\n"
    "  --fraction of the site's units; scored by mean within-cluster correlation (times the share of the\n"
    "  site's |attribution| with --attr); the best --top per site are kept.\n"
    "contrast: per site, the --fraction of units with the largest |Cohen's d| between labels A and B\n"
    "  (times attribution / the site's mean with --attr); one sub-model per site, one over all sites (A_vs_B).\n"
    "Also writes a masks file that `subscope ablate --masks` reads. Layout: docs/FORMAT.md.\n\n"
    "examples:\n"
    "  subscope collect --model models/tiny-gpt2 --input tests/data/ablate/prompts.jsonl --group-by label \\\n"
    "      --sites 'blocks.*.mlp.hook_post' --stats mean,cov,corr --out out/stats.h5\n"
    "  subscope discover --stats out/stats.h5 --sites 'blocks.*.mlp.hook_post' --method cluster --out out/clusters.h5\n"
    "  subscope discover --stats out/stats.h5 --sites 'blocks.*.mlp.hook_post' --method contrast \\\n"
    "      --contrast animals:colours --fraction 0.02 --out out/contrast.h5\n"
    "  subscope ablate --model models/tiny-gpt2 --input tests/data/ablate/prompts.jsonl \\\n"
    "      --masks out/contrast.masks.jsonl --out out/ablate.h5\n",
    disc_opts, run_discover, NULL, NULL,
};
