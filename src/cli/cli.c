#define _GNU_SOURCE
#include "cli.h"
#include "subscope/dist.h"

#include "subscope/discover.h"
#include "subscope/jobs.h"
#include "subscope/util.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static char *cmdline;

static void print_help(const cli_cmd *cmd) {
    printf("%s\n\nusage: %s\n\noptions:\n", cmd->summary, cmd->usage);
    for (const cli_opt *o = cmd->opts; o->name; o++) {
        char left[64];
        snprintf(left, sizeof left, "--%s%s%s", o->name, o->metavar ? " " : "", o->metavar ? o->metavar : "");
        printf("  %-24s %s\n", left, o->help);
    }
    printf("  %-24s %s\n", "--help", "show this help");
    if (cmd->details) printf("\n%s", cmd->details);
}

/* 1 (printed, naming the output as "<what><link>") if the temporary that the file at `file` is
 * written as (NAME.tmp.<host>.<pid> beside it; kind: "NAME", or "NAME.ckpt" for a checkpoint)
 * would be a longer name than its folder takes (pathconf NAME_MAX). */
static int tmp_too_long(const cli_cmd *cmd, const char *what, const char *link, const char *file, const char *kind) {
    const char *slash = strrchr(file, '/');
    char *dir = ss_path_folder(file), *tmp = ss_tmp_name(slash ? slash + 1 : file);
    const long name_max = dir && tmp ? pathconf(dir, _PC_NAME_MAX) : -1;
    const size_t need = tmp ? strlen(tmp) : 0;
    const int bad = name_max > 0 && need > (size_t)name_max;
    if (bad)
        fprintf(stderr, "subscope %s: error: %s%s: the temporary file it is written as (%s.tmp.<host>.<pid>) would "
                        "have a name of %zu characters, more than %s takes (%ld); give a shorter name\n",
                cmd->name, what, link, kind, need, dir, name_max);
    free(dir), free(tmp);
    return bad;
}

/* An output (--out, --masks-out) that exists and is neither a file nor a
 * folder (/dev/null, a FIFO, a terminal): the finished file renamed over it
 * would replace it, and /dev/null replaced by a file breaks the whole system
 * for a root user. Refused before anything runs. 1 (printed) if so. A symbolic
 * link is written through (the file it names is replaced, the link stays:
 * ss_out_target), so these checks are of its target, named in the message.
 * One output at path `value`, named in messages as "<label> <value><note>" ("--out X"); dir_out
 * for a folder (train --out DIR), writes whether this process writes it (and checks its folder). */
static int output_is_file(const cli_cmd *cmd, const char *label, const char *note, const char *value, int dir_out,
                          int writes) {
    struct stat so;
    char *target = NULL;
    if (ss_out_target(value, &target)) {
        /* a dangling link whose target's folder is missing: only where it is written (below) */
        if (!writes) {
            ss_error_clear();
            return 0;
        }
        fprintf(stderr, "subscope %s: error: %s %s%s\n", cmd->name, label, ss_last_error(), note);
        return 1;
    }
    char link[4200] = "";
    if (strcmp(target, value)) snprintf(link, sizeof link, " (a symbolic link to %s)", target);
    char *what = ss_strfmt("%s %s%s", label, value, note);
    if (!what) {
        free(target);
        return 1;
    }
    const char *why = NULL;
    if (!stat(target, &so) && !S_ISREG(so.st_mode) && !S_ISDIR(so.st_mode)) {
        fprintf(stderr, "subscope %s: error: %s%s is not a file (a device, pipe or socket): the output is written "
                        "under a temporary name and renamed over it, which would replace it; give a %s name\n",
                cmd->name, what, link, dir_out ? "folder" : "file");
        why = "";
    } else if (!stat(target, &so) && S_ISDIR(so.st_mode) && !dir_out) {
        fprintf(stderr, "subscope %s: error: %s%s is a folder; give a file name\n", cmd->name, what, link);
        why = "";
    }
    /* The folder it goes in must be there now, not only when the results are ready to
     * write (at the end of collect's or ablate's whole run). */
    char dir[4096];
    size_t n = strlen(target);
    if (!why && writes && n < sizeof dir) {
        while (n > 1 && target[n - 1] == '/') n--; /* train's --out DIR/ */
        while (n > 0 && target[n - 1] != '/') n--;
        if (n > 1) n--; /* the folder without its last slash, or "/" */
        memcpy(dir, target, n);
        dir[n] = 0;
        if (!n) strcpy(dir, "."); /* in the current folder */
        why = stat(dir, &so) ? strerror(errno) : !S_ISDIR(so.st_mode) ? "not a folder"
              : access(dir, W_OK) ? "not writable" : NULL;
        if (why) fprintf(stderr, "subscope %s: error: %s%s: cannot write in %s: %s\n", cmd->name, what, link, dir, why);
        /* Its temporary (NAME.tmp.<host>.<pid> beside the target) must be a name the folder
         * takes, or the file fails to be created after the run; so must collect's checkpoint's,
         * NAME.ckpt after the name given (a link's own, in the link's folder), written as an
         * output of its own beside the file that names. */
        if (!why && !dir_out && tmp_too_long(cmd, what, link, target, "NAME")) why = "";
        if (!why && !dir_out && cli_get(cmd, "checkpoint-every")) {
            char *ckpt = ss_strfmt("%s.ckpt", value), *ckpt_target = NULL;
            if (!ckpt || ss_out_target(ckpt, &ckpt_target)) {
                fprintf(stderr, "subscope %s: error: %s%s: its checkpoint: %s\n", cmd->name, what, link, ss_last_error());
                why = "";
            } else if (tmp_too_long(cmd, what, link, ckpt_target, "NAME.ckpt")) why = "";
            free(ckpt), free(ckpt_target);
        }
    }
    free(target), free(what);
    return why != NULL;
}

/* discover's masks file when --masks-out does not name it: 1 with *path its name after --out
 * (ss_discover_masks_path; NULL if out of memory), else 0. */
#define DERIVED_MASKS_NOTE " (named after --out; --masks-out names another)"
static int derived_masks(const cli_cmd *cmd, char **path) {
    const char *out = cli_get(cmd, "out");
    if (strcmp(cmd->name, "discover") || !out || cli_get(cmd, "masks-out")) return 0;
    *path = ss_discover_masks_path(out);
    return 1;
}

static int outputs_are_files(const cli_cmd *cmd) {
    /* Only the writer checks the folder (rank 0, or a pipeline's last stage): the others may
     * run where that folder is not (a node-local --out). */
    const int last_stage_writes = !strcmp(cmd->name, "forward") || !strcmp(cmd->name, "patch") ||
                                  !strcmp(cmd->name, "trace"); /* as their cli_wrote calls say */
    const char *pipe = last_stage_writes ? cli_get(cmd, "pipeline") : NULL;
    int64_t stages = 1; /* a bad --pipeline is refused by the job (cli_int) */
    if (!pipe || !ss_parse_int(pipe, &stages) || stages < 1 || stages > 4096) stages = 1;
    const int writes = ss_comm_launched_rank() == (int)(stages - 1);
    for (const cli_opt *o = cmd->opts; o->name; o++) {
        if ((strcmp(o->name, "out") && strcmp(o->name, "masks-out")) || !o->value) continue;
        const int dir_out = o->metavar && !strcmp(o->metavar, "DIR"); /* train --out DIR */
        if (!*o->value) { /* else found only when the results are written, after the run */
            fprintf(stderr, "subscope %s: error: --%s is empty: give a %s name\n", cmd->name, o->name,
                    dir_out ? "folder" : "file");
            return 1;
        }
        if (!dir_out && o->value[strlen(o->value) - 1] == '/') { /* else found only when the file is created */
            fprintf(stderr, "subscope %s: error: --%s %s ends in '/', a folder's name; give a file name\n", cmd->name,
                    o->name, o->value);
            return 1;
        }
        char label[16];
        snprintf(label, sizeof label, "--%s", o->name);
        if (output_is_file(cmd, label, "", o->value, dir_out, writes)) return 1;
    }
    /* discover's masks file, named after --out unless --masks-out names it: checked as the
     * outputs given are (its name is 9 or 12 characters longer than --out's). */
    char *masks;
    if (derived_masks(cmd, &masks)) {
        const int bad = !masks || output_is_file(cmd, "the masks file", DERIVED_MASKS_NOTE, masks, 0, writes);
        free(masks);
        if (bad) return 1;
    }
    return 0;
}

/* One output at path `value` (named in messages as "<label> <value><note>"; `self`, its
 * option, is not compared with itself) that names an existing file or folder given to
 * another option (by device and inode, so ./x and x are one, and a link is what it names)
 * would replace an input when the job renames its finished file into place. 1 (printed) if so. */
static int output_not_input(const cli_cmd *cmd, const char *label, const char *note, const char *value,
                            const cli_opt *self) {
    struct stat so, si;
    if (stat(value, &so)) return 0;
    for (const cli_opt *i = cmd->opts; i->name; i++)
        for (int k = 0; i != self && i->metavar && k < i->n; k++)
            if (!stat(i->all[k], &si) && si.st_dev == so.st_dev && si.st_ino == so.st_ino) {
                const int pos = cmd->positional && !strcmp(i->name, cmd->positional);
                fprintf(stderr, "subscope %s: error: %s %s%s is the same %s as %s%s %s: it would be overwritten\n",
                        cmd->name, label, value, note, S_ISDIR(so.st_mode) ? "folder" : "file", pos ? "the input" : "--",
                        pos ? "" : i->name, i->all[k]);
                return 1;
            }
    return 0;
}

/* Every output (--out, --masks-out, and discover's masks file named after --out) that
 * names an input: refused before anything runs. 1 (printed) if so. */
static int outputs_not_inputs(const cli_cmd *cmd) {
    for (const cli_opt *o = cmd->opts; o->name; o++) {
        if ((strcmp(o->name, "out") && strcmp(o->name, "masks-out")) || !o->value) continue;
        char label[16];
        snprintf(label, sizeof label, "--%s", o->name);
        if (output_not_input(cmd, label, "", o->value, o)) return 1;
    }
    char *masks;
    if (derived_masks(cmd, &masks)) {
        const int bad = !masks || output_not_input(cmd, "the masks file", DERIVED_MASKS_NOTE, masks, NULL);
        free(masks);
        if (bad) return 1;
    }
    return 0;
}

/* The option an argument "--name" or "--name=value" names, or NULL. */
static cli_opt *find_option(cli_cmd *cmd, const char *a) {
    if (strncmp(a, "--", 2) != 0) return NULL;
    const char *name = a + 2;
    const size_t nl = strcspn(name, "=");
    for (cli_opt *o = cmd->opts; o->name; o++)
        if (strlen(o->name) == nl && !strncmp(o->name, name, nl)) return o;
    return NULL;
}

static int is_help(const char *a) { return !strcmp(a, "--help") || !strcmp(a, "-h"); }

/* Whether an argument is one of the command's options (or --help, -h): the
 * value an option expects is then missing. Without this check,
 * `--out --help` wrote a file named --help. */
static int names_option(cli_cmd *cmd, const char *a) { return is_help(a) || find_option(cmd, a); }

int cli_parse(cli_cmd *cmd, int argc, char **argv) {
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (is_help(a)) {
            print_help(cmd);
            return 2;
        }
        if (strncmp(a, "--", 2) != 0 && cmd->positional) {
            cli_opt *o = cmd->opts;
            while (o->name && strcmp(o->name, cmd->positional)) o++;
            if (o->name && o->n < (int)(sizeof o->all / sizeof o->all[0])) {
                o->all[o->n++] = o->value = a;
                continue;
            }
            if (o->name) { /* it was "unexpected argument", as if inputs were not taken at all */
                fprintf(stderr, "subscope %s: error: more than %d inputs (%s): '%s' is one too many\n", cmd->name, o->n,
                        o->metavar, a);
                return 1;
            }
        }
        if (strncmp(a, "--", 2) != 0) {
            fprintf(stderr, "subscope %s: error: unexpected argument '%s' (see subscope %s --help)\n", cmd->name, a,
                    cmd->name);
            return 1;
        }
        const char *eq = strchr(a + 2, '=');
        cli_opt *o = find_option(cmd, a);
        if (!o) {
            fprintf(stderr, "subscope %s: error: unknown option '--%.*s' (see subscope %s --help)\n", cmd->name,
                    (int)strcspn(a + 2, "="), a + 2, cmd->name);
            return 1;
        }
        if (o->n == (int)(sizeof o->all / sizeof o->all[0])) {
            fprintf(stderr, "subscope %s: error: --%s given more than %d times%s\n", cmd->name, o->name, o->n,
                    find_option(cmd, "--masks") && !strcmp(o->name, "mask") ? " (put the masks in a --masks FILE)" : "");
            return 1;
        }
        if (!o->metavar) {
            if (eq) {
                fprintf(stderr, "subscope %s: error: --%s takes no value\n", cmd->name, o->name);
                return 1;
            }
            o->value = "1";
        } else if (eq) {
            o->value = eq + 1;
        } else if (i + 1 < argc && !names_option(cmd, argv[i + 1])) {
            o->value = argv[++i];
        } else {
            fprintf(stderr, "subscope %s: error: --%s needs a value (%s)%s%s\n", cmd->name, o->name, o->metavar,
                    i + 1 < argc ? ", but the next argument is the option " : "", i + 1 < argc ? argv[i + 1] : "");
            return 1;
        }
        /* An empty value names no file, device or choice: refused here, naming the option, where
         * it read as the default (--device, --metrics, --group-by, forward's --sites) or failed
         * later naming nothing (--input: ": cannot open"; --model: "/config.json"). --out and
         * --masks-out: below, as outputs are. */
        if (o->metavar && !o->text && !*o->value && strcmp(o->name, "out") && strcmp(o->name, "masks-out")) {
            fprintf(stderr, "subscope %s: error: --%s is empty: give %s (see subscope %s --help)\n", cmd->name, o->name,
                    o->metavar, cmd->name);
            return 1;
        }
        o->all[o->n++] = o->value;
    }
    return outputs_are_files(cmd) || outputs_not_inputs(cmd);
}

const char *cli_get(const cli_cmd *cmd, const char *name) {
    for (const cli_opt *o = cmd->opts; o->name; o++)
        if (!strcmp(o->name, name)) return o->value;
    return NULL;
}

int cli_flag(const cli_cmd *cmd, const char *name) { return cli_get(cmd, name) != NULL; }

int cli_int(const cli_cmd *cmd, const char *name, int64_t lo, int64_t hi, int64_t def, int64_t *out) {
    const char *v = cli_get(cmd, name);
    if (!v) {
        *out = def;
        return 0;
    }
    int64_t x;
    if (!ss_parse_int(v, &x) || x < lo || x > hi) { /* no space, no '+', no trailing text */
        fprintf(stderr, "subscope %s: error: --%s must be an integer in %lld..%lld, got '%s'\n", cmd->name, name,
                (long long)lo, (long long)hi, v);
        return 1;
    }
    *out = x;
    return 0;
}

int cli_dtype(const cli_cmd *cmd, int *wdtype) {
    const char *v = cli_get(cmd, "dtype");
    if (!v || !strcmp(v, "float32") || !strcmp(v, "fp32")) {
        *wdtype = 0; /* SS_WDTYPE_F32 */
        return 0;
    }
    if (!strcmp(v, "bfloat16") || !strcmp(v, "bf16")) {
        *wdtype = 2; /* SS_WDTYPE_BF16 */
        return 0;
    }
    if (!strcmp(v, "float16") || !strcmp(v, "fp16")) {
        *wdtype = 1; /* SS_WDTYPE_F16 */
        return 0;
    }
    if (!strcmp(v, "auto")) {
        *wdtype = -1; /* SS_WDTYPE_AUTO */
        return 0;
    }
    fprintf(stderr, "subscope %s: error: --dtype must be float32, bfloat16, float16 or auto, got '%s'\n", cmd->name, v);
    return 1;
}

int cli_run_opts(const cli_cmd *cmd, ss_run_opts *o) {
    if (cli_require(cmd, "model") || cli_require(cmd, "input")) return 1;
    memset(o, 0, sizeof *o);
    o->model_dir = cli_get(cmd, "model");
    o->input = cli_get(cmd, "input");
    o->truncate = cli_flag(cmd, "truncate");
    o->device = cli_get(cmd, "device");
    o->tf32 = cli_flag(cmd, "tf32");
    int64_t pipe = 0;
    if (cli_int(cmd, "batch", 1, 1 << 20, 16, &o->batch) || cli_int(cmd, "max-len", 1, 1 << 30, 0, &o->max_len) ||
        cli_dtype(cmd, &o->wdtype) || cli_int(cmd, "pipeline", 1, 4096, 1, &pipe) || cli_bytes(cmd, "max-memory", &o->max_memory))
        return 1;
    o->pipeline = (int)pipe;
    o->pipeline_blocks = cli_get(cmd, "pipeline-blocks");
    return 0;
}

int cli_any_ranks(const cli_cmd *cmd) {
    (void)cmd;
    return 1;
}

void cli_wrote(const char *path, int writer) {
    ss_comm *comm;
    if (ss_comm_world(&comm) != SS_OK || ss_comm_rank(comm) == writer) fprintf(stderr, "wrote %s\n", path);
}

int cli_bytes(const cli_cmd *cmd, const char *name, int64_t *out) {
    const char *v = cli_get(cmd, name);
    *out = 0;
    if (!v) return 0;
    /* decimal digits with an optional fraction, then an optional unit, as --help says: strtod
     * alone also took hex ('0x10' was 16 bytes), an exponent ('1e9'), a leading space or '+' */
    const size_t nd = strspn(v, "0123456789.");
    const char *dot = memchr(v, '.', nd);
    int digits = 0;
    for (size_t i = 0; i < nd; i++) digits += isdigit((unsigned char)v[i]) != 0;
    char num[64], *end = NULL;
    double x = 0;
    errno = 0;
    if (digits && nd < sizeof num && (!dot || !memchr(dot + 1, '.', nd - (size_t)(dot - v) - 1))) {
        memcpy(num, v, nd);
        num[nd] = 0;
        x = strtod(num, NULL);
        end = (char *)v + nd;
    } else end = (char *)v;
    double unit = 1;
    if (end && *end) {
        switch (*end) {
        case 'k': case 'K': unit = 1024.0; break;
        case 'm': case 'M': unit = 1048576.0; break;
        case 'g': case 'G': unit = 1073741824.0; break;
        case 't': case 'T': unit = 1099511627776.0; break;
        default: unit = 0;
        }
        if (unit && end[1] && strcmp(end + 1, "B") && strcmp(end + 1, "iB") && strcmp(end + 1, "b")) unit = 0;
    }
    if (errno || end == v || !unit || !(x * unit >= 1) || x * unit > 9.0e18) {
        fprintf(stderr, "subscope %s: error: --%s must be a positive size such as 300000000, 512M or 2G (decimal "
                "digits, an optional fraction and K, M, G or T), got '%s'\n",
                cmd->name, name, v);
        return 1;
    }
    *out = (int64_t)(x * unit);
    return 0;
}

int cli_require(const cli_cmd *cmd, const char *name) {
    if (cli_get(cmd, name)) return 0;
    fprintf(stderr, "subscope %s: error: --%s is required (see subscope %s --help)\n", cmd->name, name, cmd->name);
    return 1;
}

int cli_fail(const cli_cmd *cmd, ss_status st) {
    const char *msg = ss_last_error();
    /* a command failing partway through its progress: the line ends first, so that the error
     * starts its own line rather than running on after "... elapsed" */
    ss_progress_end();
    fprintf(stderr, "subscope %s: error: %s\n", cmd->name, msg[0] ? msg : ss_status_name(st));
    return 1;
}

void cli_set_command_line(int argc, char **argv) {
    size_t n = 1;
    for (int i = 0; i < argc; i++) n += strlen(argv[i]) * 4 + 3;
    cmdline = malloc(n);
    if (!cmdline) return;
    char *p = cmdline;
    for (int i = 0; i < argc; i++) {
        /* Quote arguments that a shell would split or expand, so the
         * recorded line can be pasted back. */
        int plain = argv[i][0] != 0;
        for (const char *c = argv[i]; *c && plain; c++)
            plain = strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./=:,@+%", *c) != NULL;
        if (i) *p++ = ' ';
        if (plain) {
            p = stpcpy(p, argv[i]);
        } else {
            *p++ = '\'';
            for (const char *c = argv[i]; *c; c++) {
                if (*c == '\'') p = stpcpy(p, "'\\''");
                else *p++ = *c;
            }
            *p++ = '\'';
        }
    }
    *p = 0;
}

const char *cli_command_line(void) { return cmdline ? cmdline : ""; }

void cli_progress(void *ctx, int64_t done, int64_t total) {
    static double t0;
    static int64_t done0; /* the work done when the clock started: a resumed collect's checkpoint's */
    static int tty = -1;
    if (tty < 0) tty = isatty(2);
    if (!tty) return;
    const double now = ss_now();
    if (done == 0 || t0 == 0) t0 = now, done0 = done;
    const char *what = ctx ? (const char *)ctx : "prompts";
    double el = now - t0, rate = el > 0 ? (double)(done - done0) / el : 0;
    /* \033[K clears what a longer line before it left (a rate down from 1000.0/s to 998.1/s left "elapsedd") */
    fprintf(stderr, "\r  %lld/%lld %s  %.1f/s  %.0fs elapsed\033[K", (long long)done, (long long)total, what, rate, el);
    /* a line left open is noted (ss_progress_line): a warning or note printed meanwhile
     * (ss_eprintf), or an error (cli_fail), ends it first */
    if (done < total) ss_progress_line(1);
    else fprintf(stderr, "\n"), ss_progress_line(0);
}
