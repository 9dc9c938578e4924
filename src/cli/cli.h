/* Command-line plumbing shared by the subcommands: option tables, --help
 * text, value parsing, error printing and terminal progress. */
#ifndef SUBSCOPE_CLI_H
#define SUBSCOPE_CLI_H

#include <stdint.h>
#include "subscope/error.h"

typedef struct cli_opt {
    const char *name;     /* without the leading "--" */
    const char *metavar;  /* NULL: a flag without a value */
    const char *help;
    int text;             /* free text (a prompt, a title): may be empty; any other value may not */
    const char *value;    /* filled by cli_parse (flags: "1"); the last occurrence */
    const char *all[64];  /* every occurrence of an option given more than once */
    int n;
} cli_opt;

typedef struct cli_cmd {
    const char *name;
    const char *summary;  /* one line, for `subscope --help` */
    const char *usage;    /* "subscope forward --model DIR --input FILE --out OUT.h5 [options]" */
    const char *details;  /* free text after the options (examples); may be NULL */
    cli_opt *opts;        /* terminated by a zero entry */
    int (*run)(struct cli_cmd *cmd);
    const char *positional; /* the option that bare arguments (not --x) are given to, or NULL */
    /* Whether this invocation may run as one of several ranks (mpirun, srun);
     * NULL: never (each rank would do the whole job and write the same files). */
    int (*multi_rank)(const struct cli_cmd *cmd);
} cli_cmd;

/* Parses argv (after the command name). Returns 0 to run, 1 on a usage
 * error (printed), 2 if --help was printed. */
int cli_parse(cli_cmd *cmd, int argc, char **argv);
const char *cli_get(const cli_cmd *cmd, const char *name);
int cli_flag(const cli_cmd *cmd, const char *name);
/* multi_rank for the jobs that split their work over any number of ranks. */
int cli_any_ranks(const cli_cmd *cmd);
/* Reads an integer option within [lo, hi], or def if absent; prints and returns 1 on error. */
int cli_int(const cli_cmd *cmd, const char *name, int64_t lo, int64_t hi, int64_t def, int64_t *out);
/* Fails with a message if a required option is missing. */
int cli_require(const cli_cmd *cmd, const char *name);

/* Prints "subscope <cmd>: error: <library message>" and returns 1. */
int cli_fail(const cli_cmd *cmd, ss_status st);
/* "wrote PATH" on stderr from the rank that wrote it (writer; every process
 * of a one-process run), once the job has returned. */
void cli_wrote(const char *path, int writer);
/* The full command line, for provenance. */
const char *cli_command_line(void);
void cli_set_command_line(int argc, char **argv);

/* Reads --dtype (float32 | bfloat16) into an SS_WDTYPE_ value; prints and returns 1 on error. */
int cli_dtype(const cli_cmd *cmd, int *wdtype);
/* A size in bytes with an optional K/M/G/T suffix (powers of 1024); 0 if absent; prints and returns 1 on error. */
int cli_bytes(const cli_cmd *cmd, const char *name, int64_t *out);

/* The options of every command that runs the model over a prompt file, for
 * its option table, and their reader (--model and --input are required):
 * CLI_RUN_OPTIONS, or CLI_RUN_INPUT, a --batch of the command's own and
 * CLI_RUN_LIMITS where a batch means something else (patch). */
#define CLI_RUN_INPUT                                                                                          \
    {.name = "model", .metavar = "DIR", .help = "Hugging Face model directory, or a llama-architecture .gguf file"},                                                     \
    {.name = "input", .metavar = "FILE", .help = "prompts: JSONL ({\"text\": ...} or {\"tokens\": [...]}, optional \"label\") or plain text, one per line"}
#define CLI_RUN_LIMITS                                                                                         \
    {.name = "max-len", .metavar = "T", .help = "longest prompt allowed, in tokens (default and maximum: n_positions)"},           \
    {.name = "truncate", .metavar = NULL, .help = "cut prompts longer than --max-len instead of failing"},                          \
    {.name = "device", .metavar = "DEV", .help = "cpu, cuda, cuda:N or auto (default: auto = a GPU if this build has CUDA and one is visible; cuda and auto take the GPU of the rank on its node)"}, \
    {.name = "dtype", .metavar = "T", .help = "matrix products: float32 (default), bfloat16, float16 (GPU) or auto (the files' dtype on a GPU; weights stored so, fp32 accumulation)"}, \
    {.name = "tf32", .metavar = NULL, .help = "allow TF32 tensor-core math for float32 products on GPUs"}
#define CLI_RUN_OPTIONS                                                                                        \
    CLI_RUN_INPUT,                                                                                             \
    {.name = "batch", .metavar = "B", .help = "prompts per forward pass (default 16)"},                                            \
    CLI_RUN_LIMITS
/* Pipeline parallelism, for the commands that implement it. */
#define CLI_PIPELINE_OPTIONS                                                                                   \
    {.name = "pipeline", .metavar = "P", .help = "split the model's blocks over P ranks (mpirun -np P), each loading only its own; stages pass the residual stream batch by batch (forward, collect, ablate, attribute, patch: any multiple of P ranks runs copies of the pipeline side by side)"}, \
    {.name = "pipeline-blocks", .metavar = "N,..", .help = "with --pipeline P: each stage's number of blocks, e.g. 5,3, or 'even' (default: balanced by multiply-adds, the last stage taking fewer blocks when it also computes the logits; `info --config` shows the split)"}, \
    {.name = "max-memory", .metavar = "BYTES", .help = "refuse to hold more weights than this per rank (e.g. 512M, 2G): simulates a memory limit"}
struct ss_run_opts;
int cli_run_opts(const cli_cmd *cmd, struct ss_run_opts *o);

/* Progress on stderr, only when stderr is a terminal. */
void cli_progress(void *ctx, int64_t done, int64_t total);

extern cli_cmd cmd_info, cmd_tokenize, cmd_predict, cmd_forward, cmd_collect, cmd_ablate, cmd_patch, cmd_attribute, cmd_trace, cmd_show, cmd_train, cmd_discover, cmd_report;

#endif
