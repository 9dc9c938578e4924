#include <stdio.h>

#include "cli.h"
#include "subscope/dist.h"
#include "subscope/jobs.h"

static cli_opt fwd_opts[] = {
    CLI_RUN_OPTIONS,
    CLI_PIPELINE_OPTIONS,
    {.name = "out", .metavar = "OUT.h5", .help = "output HDF5 file (written to OUT.h5.tmp.<host>.<pid>, renamed when complete)"},
    {.name = "sites", .metavar = "GLOBS", .help = "comma-separated site globs to store, '*' matches anything (e.g. 'blocks.*.mlp.hook_post')"},
    {.name = "no-logits", .metavar = NULL, .help = "do not store /logits"},
    {.name = "loss", .metavar = NULL, .help = "also store /loss: each prompt's mean next-token cross-entropy (nats; NaN for a one-token prompt), computed where the logits are, also with --no-logits"},
    {.name = "compress", .metavar = "LEVEL", .help = "deflate level 0-9 for the datasets (default 0: none; float activations shrink only 10-20% at ~50 MB/s a core)"},
    {0},
};

static int run_forward(cli_cmd *cmd) {
    ss_forward_job j = {
        .out = cli_get(cmd, "out"),
        .sites = cli_get(cmd, "sites"),
        .no_logits = cli_flag(cmd, "no-logits"),
        .loss = cli_flag(cmd, "loss"),
        .command_line = cli_command_line(),
        .progress = cli_progress,
        .progress_ctx = "prompts",
    };
    int64_t level;
    if (cli_run_opts(cmd, &j.run) || cli_require(cmd, "out") || cli_int(cmd, "compress", 0, 9, 0, &level)) return 1;
    j.compress = (int)level;
    ss_status st = ss_job_forward(&j);
    if (st) return cli_fail(cmd, st);
    cli_wrote(j.out, j.run.pipeline > 1 ? (int)j.run.pipeline - 1 : 0); /* a pipeline's first copy's last stage writes */
    return 0;
}

cli_cmd cmd_forward = {
    "forward", "run prompts through the model; store tokens, logits and activations at named sites in HDF5",
    "subscope forward --model DIR --input FILE --out OUT.h5 [--sites GLOBS] [--no-logits] [--loss] [--batch B]\n"
    "                        [--max-len T] [--truncate] [--device DEV] [--dtype T] [--tf32] [--compress LEVEL]",
    "Sites are TransformerLens names (subscope info --model DIR lists them):\n"
    "  hook_embed, hook_pos_embed, blocks.L.hook_resid_pre|hook_resid_mid|hook_resid_post,\n"
    "  blocks.L.ln1.hook_normalized, blocks.L.ln2.hook_normalized, blocks.L.attn.hook_q|hook_k|hook_v|hook_z,\n"
    "  blocks.L.attn.hook_pattern, blocks.L.hook_attn_out, blocks.L.mlp.hook_pre|hook_post, blocks.L.hook_mlp_out,\n"
    "  ln_final.hook_normalized\n"
    "Llama-family models add blocks.L.attn.hook_rot_q|hook_rot_k and blocks.L.mlp.hook_pre_linear and have\n"
    "no hook_pos_embed (docs/FORMAT.md).\n\n"
    "examples:\n"
    "  subscope forward --model models/tiny-gpt2 --input data/demo_prompts.jsonl --out out/demo.h5\n"
    "  subscope forward --model models/tiny-gpt2 --input prompts.txt --out acts.h5 --no-logits \\\n"
    "      --sites 'blocks.*.mlp.hook_post,blocks.0.attn.hook_pattern'\n"
    "  subscope forward --model models/tiny-gpt2 --input prompts.txt --out loss.h5 --no-logits --loss\n",
    fwd_opts, run_forward, NULL, cli_any_ranks,
};
