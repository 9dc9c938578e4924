#include <stdio.h>
#include <stdlib.h>

#include "cli.h"
#include "subscope/dist.h"
#include "subscope/jobs.h"
#include "subscope/util.h"

static cli_opt trace_opts[] = {
    {.name = "model", .metavar = "DIR", .help = "Hugging Face model directory, or a llama-architecture .gguf file"},
    {.name = "prompt", .metavar = "TEXT", .text = 1, .help = "the text to step through"},
    {.name = "submodels", .metavar = "FILE", .help = "sub-models as a masks JSONL (what discover exports and ablate --masks reads)"},
    {.name = "answer", .metavar = "TEXT", .text = 1, .help = "track this token (its first) at the last position instead of the model's top guess"},
    {.name = "stats", .metavar = "STATS.h5", .help = "collect file (--stats mean,cov): unit means for mean masks, stds (the cov's diagonal) for relative-noise masks, and both for activity in standard units"},
    {.name = "out", .metavar = "OUT.h5", .help = "also write the table to this HDF5 file"},
    {.name = "device", .metavar = "DEV", .help = "cpu, cuda, cuda:N or auto (default auto)"},
    {.name = "dtype", .metavar = "T", .help = "matrix products: float32 (default), bfloat16, float16 (GPU) or auto (the files' dtype on a GPU)"},
    {.name = "tf32", .metavar = NULL, .help = "allow TF32 tensor-core math for float32 products on GPUs"},
    {.name = "attribution-pass", .metavar = "P", .help = "how the attribution is computed: forward (one forward-mode pass per sub-model, time linear in the prompt's length), prefixes (a backward pass of every prefix, quadratic) or auto (default: forward where it is estimated cheaper and can run, the prefixes where it cannot (a pipeline of stages) or runs out of memory)"},
    CLI_PIPELINE_OPTIONS,
    {0},
};

static int run_trace(cli_cmd *cmd) {
    ss_trace_job j = {
        .model_dir = cli_get(cmd, "model"),
        .prompt = cli_get(cmd, "prompt"),
        .submodels = cli_get(cmd, "submodels"),
        .answer = cli_get(cmd, "answer"),
        .stats = cli_get(cmd, "stats"),
        .out = cli_get(cmd, "out"),
        .device = cli_get(cmd, "device"),
        .tf32 = cli_flag(cmd, "tf32"),
        .command_line = cli_command_line(),
        .table = stdout,
        .progress = cli_progress,
        .progress_ctx = "positions attributed",
    };
    int64_t pipe = 1;
    if (cli_require(cmd, "model") || cli_require(cmd, "prompt") || cli_require(cmd, "submodels") || cli_dtype(cmd, &j.wdtype) ||
        cli_int(cmd, "pipeline", 1, 4096, 1, &pipe) || cli_bytes(cmd, "max-memory", &j.max_memory))
        return 1;
    j.pipeline = (int)pipe;
    if (cli_get(cmd, "attribution-pass")) {
        ss_status ps = ss_trace_pass_parse(cli_get(cmd, "attribution-pass"), &j.attribution_pass);
        if (ps) return cli_fail(cmd, ps);
    }
    j.pipeline_blocks = cli_get(cmd, "pipeline-blocks");
    ss_status st = ss_job_trace(&j);
    if (st) return cli_fail(cmd, st);
    fflush(stdout);
    if (j.out) cli_wrote(j.out, j.pipeline > 1 ? (int)j.pipeline - 1 : 0); /* a pipeline's last stage writes */
    return 0;
}

/* One prompt: trace splits over ranks only as the stages of a pipeline
 * (--pipeline P > 1; the job then checks that there are exactly P ranks). */
static int trace_ranks(const cli_cmd *cmd) {
    const char *p = cli_get(cmd, "pipeline");
    int64_t n;
    return p && ss_parse_int(p, &n) && n > 1;
}

cli_cmd cmd_trace = {
    "trace", "step through one prompt: each position's prediction and each sub-model's activity, attribution and ablation effect",
    "subscope trace --model DIR --prompt TEXT --submodels FILE [--answer TEXT] [--stats STATS.h5] [--out OUT.h5]\n"
    "                      [--device DEV] [--dtype T] [--tf32] [--attribution-pass auto|forward|prefixes]",
    "For every position: the model's next-token prediction and its probability; for every sub-model (one mask\n"
    "of FILE): the mean activation of its units there, gradient x activation of log p(prediction) summed over\n"
    "its units at this and earlier positions (those among the mask's \"positions\", where it names some), and\n"
    "the change in log p(prediction) when the mask is applied.\n"
    "The attribution of every position comes from one forward-mode (tangent) pass per sub-model, or from a\n"
    "backward pass of every prefix of the prompt (--attribution-pass; the output's root attribute\n"
    "attribution_pass says which ran).\n"
    "Layout: docs/FORMAT.md.\n\n"
    "examples (the sub-models' mean masks need the statistics of collect):\n"
    "  subscope collect --model models/tiny-gpt2 --input data/demo_prompts.jsonl \\\n"
    "      --sites 'blocks.*.mlp.hook_post' --out out/stats.h5\n"
    "  subscope trace --model models/tiny-gpt2 --prompt 'The cat says' --answer ' meow' \\\n"
    "      --submodels data/demo_submodels.jsonl --stats out/stats.h5 --out out/trace.h5\n",
    trace_opts, run_trace, NULL, trace_ranks,
};
