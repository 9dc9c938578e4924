/* `report`: reads `ablate` outputs and writes one self-contained HTML page
 * (inline CSS and SVG, no script, no external resource) with
 * impairment-vs-intensity curves per sub-model and mode, a
 * topic-specificity index per sub-model judged against its control masks,
 * a table of every mask and the inputs' provenance.
 *
 * Sub-models are identified by what they mask (the units_sha256 attribute
 * ablate records: sites, units and positions) within one model, never by
 * name, so a sweep's masks group however they were named. The page holds
 * nothing that depends on when it was made, so the same inputs give the
 * same bytes. */
#define _GNU_SOURCE
#include "subscope/report.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "subscope/h5out.h"
#include "subscope/prompts.h"
#include "subscope/util.h"

/* ------------------------------------------------------------ the index */

double ss_report_index(const double *impair, int n, int *target) {
    int t = -1, finite = 0;
    for (int i = 0; i < n; i++) {
        if (isnan(impair[i])) continue;
        finite++;
        if (t < 0 || impair[i] > impair[t]) t = i;
    }
    *target = finite >= 2 ? t : -1;
    if (finite < 2) return NAN;
    double top = impair[t];
    if (!(top > 0)) return 0;
    double eps = fmax(SS_REPORT_EPS_ABS, SS_REPORT_EPS_REL * top), sum = 0;
    for (int i = 0; i < n; i++)
        if (i != t && !isnan(impair[i])) sum += fmax(impair[i], eps);
    return top / (sum / (double)(finite - 1));
}

ss_report_verdict ss_report_judge(double index, const double *ctrl_index, int n_ctrl, double *mean, double *sd,
                                  int *n_used) {
    double s = 0, ss = 0;
    int n = 0;
    for (int i = 0; i < n_ctrl; i++)
        if (!isnan(ctrl_index[i])) s += ctrl_index[i], n++;
    double mu = n ? s / n : NAN;
    for (int i = 0; i < n_ctrl; i++)
        if (!isnan(ctrl_index[i])) ss += (ctrl_index[i] - mu) * (ctrl_index[i] - mu);
    *mean = mu;
    *sd = n > 1 ? sqrt(ss / (n - 1)) : n == 1 ? 0 : NAN;
    *n_used = n;
    if (isnan(index)) return SS_VERDICT_ONE_TOPIC;
    if (index < SS_REPORT_MIN_INDEX) return SS_VERDICT_NONE;
    if (n < SS_REPORT_MIN_CONTROLS) return SS_VERDICT_UNTESTED;
    return index > mu + SS_REPORT_CTRL_SDS * *sd ? SS_VERDICT_SPECIFIC : SS_VERDICT_NONE;
}

/* ------------------------------------------------------------ text buffer */

/* Text for HTML body or attribute values. */
static void sb_esc(ss_sbuf *b, const char *s) {
    for (; s && *s; s++) switch (*s) {
        case '&': ss_sb_printf(b, "&amp;"); break;
        case '<': ss_sb_printf(b, "&lt;"); break;
        case '>': ss_sb_printf(b, "&gt;"); break;
        case '"': ss_sb_printf(b, "&quot;"); break;
        default: ss_sb_printf(b, "%c", *s);
        }
}

/* A number for the tables: 4 significant digits, "n/a" for NaN. */
static void sb_num(ss_sbuf *b, double v, int sign) {
    if (isnan(v)) ss_sb_printf(b, "n/a");
    else if (sign) ss_sb_printf(b, "%+.4g", v);
    else ss_sb_printf(b, "%.4g", v);
}

/* ------------------------------------------------------------ inputs */

enum { K_SCALE, K_NOISE_ABS, K_NOISE_REL, K_NEG_ABS, K_NEG_REL, K_ZERO, K_MEAN, K_RESAMPLE, K_PATCH, K_COUNT };
static const char *const kind_title[K_COUNT] = {
    "scale", "noise (absolute σ)", "noise (σ relative to each unit's std)", "negnoise (absolute σ)",
    "negnoise (σ relative to each unit's std)", "zero", "mean", "resample", "patch"};
static const char *const kind_x[K_COUNT] = {
    "intensity = 1 − factor", "σ (absolute)", "σ (× unit std)", "σ (absolute)", "σ (× unit std)",
    "intensity (zero = 1)", "intensity (mean = 1)", "intensity (resample = 1)", "intensity (patch = 1)"};

typedef struct {
    const char *path;
    char *command_line, *model_path, *input_path, *created, *subscope_version, *git_commit, *device;
    char *model_key;             /* model_path spelled one way: sub-models group by it */
    int64_t n_prompts;
    int has_labels;
    double *clean_t;             /* the clean metric per topic */
} rfile;

typedef struct {
    char *name, *mode, *sites, *uid, *control_of;
    int file, kind, sub, parent; /* sub: sub-model (originals), parent: a control's original (-1: none) */
    double factor, sigma, x;     /* x: the intensity */
    int64_t relative, seed, n_units, n_positions;
    double *chg;                 /* change from clean per topic (NaN: no prompt of that topic) */
    double chg_all;              /* over all prompts */
} rmask;

typedef struct {
    int *m, n;                   /* its masks (originals) */
    char name[200];              /* up to 80 bytes of the masks' names, and what tells two apart */
    int strongest, target;
    double index, ctrl_mean, ctrl_sd;
    int n_ctrl, n_ctrl_used;
    int too_small;               /* passed the index tests with an impairment under the floor */
    ss_report_verdict verdict;
} rsub;

typedef struct {
    const ss_report_job *job;
    const char *metric;
    double sign;                 /* impairment = sign * change */
    rfile *files;
    rmask *masks;
    int n_masks, cap_masks;
    char **topics;               /* sorted; {"all"} without labels */
    int n_topics, labelled;
    rsub *subs;
    int n_subs;
} report;

static ss_status attr_str(ss_h5_reader *r, const char *obj, const char *name, char **out) {
    ss_status st = ss_h5_read_attr_str(r, obj, name, out);
    if (st == SS_ERR_ARG)
        return ss_errorf(SS_ERR_FORMAT, "%s: %s has no attribute '%s': written by a subscope ablate older than "
                         "`report` (rerun ablate)", ss_h5_reader_path(r), obj, name);
    return st;
}
static ss_status attr_i64(ss_h5_reader *r, const char *obj, const char *name, int64_t *out) {
    ss_status st = ss_h5_read_attr_i64(r, obj, name, out);
    if (st == SS_ERR_ARG)
        return ss_errorf(SS_ERR_FORMAT, "%s: %s has no attribute '%s': written by a subscope ablate older than "
                         "`report` (rerun ablate)", ss_h5_reader_path(r), obj, name);
    return st;
}
static ss_status attr_f64(ss_h5_reader *r, const char *obj, const char *name, double *out) {
    ss_status st = ss_h5_read_attr_f64(r, obj, name, out);
    if (st == SS_ERR_ARG)
        return ss_errorf(SS_ERR_FORMAT, "%s: %s has no attribute '%s': written by a subscope ablate older than "
                         "`report` (rerun ablate)", ss_h5_reader_path(r), obj, name);
    return st;
}
/* Optional root attributes: provenance shows what is there. */
static char *attr_opt(ss_h5_reader *r, const char *name) {
    char *v = NULL;
    if (ss_h5_read_attr_str(r, "/", name, &v)) {
        ss_error_clear();
        return NULL;
    }
    return v;
}

/* Mean of the non-NaN values (NaN if none). */
static double nanmean(const double *v, size_t n) {
    double s = 0;
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (!isnan(v[i])) s += v[i], k++;
    return k ? s / (double)k : NAN;
}

/* A dataset of one value per prompt (/clean/<metric>, a mask's): written whole, and of n_prompts
 * values where the file says (-1: it does not), both checked before anything is allocated or read.
 * A small file can declare billions of values never written, which read as the fill value. */
static ss_status read_per_prompt(ss_h5_reader *r, const rfile *fi, const char *path, double **v, size_t *n) {
    SS_TRY(ss_h5_dset_written(r, path));
    if (fi->n_prompts < 0) return ss_h5_read_f64(r, path, v, n, NULL);
    *n = (size_t)fi->n_prompts;
    return ss_h5_read_want(r, path, SS_H5_F64, *n, (void **)v, NULL);
}

static ss_status read_scalar(ss_h5_reader *r, const char *path, double *v) {
    double *d = NULL;
    *v = NAN;
    /* the size checked before reading: a small file can declare billions of values */
    SS_TRY(ss_h5_read_want(r, path, SS_H5_F64, 1, (void **)&d, NULL));
    *v = d[0];
    free(d);
    return SS_OK;
}

/* Opens an input and checks it is an ablate output with the metric. */
static ss_status open_input(const report *rp, const char *path, ss_h5_reader **out) {
    ss_h5_reader *r;
    SS_TRY(ss_h5_open_read(path, &r));
    char *fmt = attr_opt(r, "format"); /* files made outside subscope (goldens) may lack it */
    /* kl has no clean value, so a run of `--metrics kl` alone has no /clean group */
    const int kl = !strcmp(rp->metric, "kl");
    int ok = (!fmt || !strcmp(fmt, "subscope")) && ss_h5_exists(r, "/ablate") && (fmt || ss_h5_exists(r, "/clean"));
    free(fmt);
    if (!ok) {
        ss_h5_close_read(r);
        return ss_errorf(SS_ERR_FORMAT, "%s is not a `subscope ablate` output (no /clean and /ablate groups)", path);
    }
    char p[64];
    snprintf(p, sizeof p, "/clean/%s", rp->metric);
    if (!kl && !ss_h5_exists(r, p)) {
        ss_h5_close_read(r);
        return ss_errorf(SS_ERR_ARG, "%s has no metric '%s' (rerun ablate with --metrics %s, or pick --metric)", path,
                         rp->metric, rp->metric);
    }
    *out = r;
    return SS_OK;
}

static int topic_index(const report *rp, const char *name) {
    for (int i = 0; i < rp->n_topics; i++)
        if (!strcmp(rp->topics[i], name)) return i;
    return -1;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Pass 1: every file is an ablate output with the metric; the union of labels. */
static ss_status collect_topics(report *rp) {
    int with = 0, without = 0;
    for (int f = 0; f < rp->job->n_inputs; f++) {
        ss_h5_reader *r;
        SS_TRY(open_input(rp, rp->job->inputs[f], &r));
        char **paths = NULL;
        size_t n = 0;
        ss_status st = SS_OK;
        if (ss_h5_exists(r, "/by_label")) st = ss_h5_list(r, "/by_label", 1, &paths, &n);
        rp->files[f].has_labels = n > 0;
        for (size_t i = 0; i < n && !st; i++) {
            const char *l = paths[i] + strlen("/by_label/"), *e = strchr(l, '/');
            if (!e) continue;
            char *name = ss_strndup(l, (size_t)(e - l));
            if (!name) { st = SS_ERR_NOMEM; break; }
            if (topic_index(rp, name) >= 0) { free(name); continue; }
            char **t = ss_realloc(rp->topics, (size_t)(rp->n_topics + 1) * sizeof *t, "topics");
            if (!t) { free(name); st = SS_ERR_NOMEM; break; }
            rp->topics = t;
            rp->topics[rp->n_topics++] = name;
        }
        ss_h5_free_names(paths, n);
        ss_h5_close_read(r);
        if (st) return st;
        if (rp->files[f].has_labels) with = f + 1;
        else without = f + 1;
    }
    if (with && without)
        return ss_errorf(SS_ERR_ARG, "%s has per-label results and %s has none (its prompts have no \"label\"): "
                         "report them separately", rp->job->inputs[with - 1], rp->job->inputs[without - 1]);
    rp->labelled = with > 0;
    if (!rp->labelled) {
        if (!(rp->topics = ss_malloc(sizeof *rp->topics, "topics")) || !(rp->topics[0] = ss_strdup("all")))
            return SS_ERR_NOMEM;
        rp->n_topics = 1;
    }
    qsort(rp->topics, (size_t)rp->n_topics, sizeof *rp->topics, cmp_str);
    return SS_OK;
}

static int mask_kind(const rmask *m, double *x) {
    int rel = m->relative != 0;
    if (!strcmp(m->mode, "scale")) { *x = 1 - m->factor; return K_SCALE; }
    if (!strcmp(m->mode, "noise")) { *x = m->sigma; return rel ? K_NOISE_REL : K_NOISE_ABS; }
    if (!strcmp(m->mode, "negnoise")) { *x = m->sigma; return rel ? K_NEG_REL : K_NEG_ABS; }
    *x = 1;
    if (!strcmp(m->mode, "zero")) return K_ZERO;
    if (!strcmp(m->mode, "mean")) return K_MEAN;
    if (!strcmp(m->mode, "resample")) return K_RESAMPLE;
    if (!strcmp(m->mode, "patch")) return K_PATCH;
    return -1;
}

/* A path spelled one way, so that `models/x/`, `./models/x` and `models//x` name one
 * model: empty and "." components dropped (".." kept: a symbolic link may sit before it). */
static char *path_key(const char *p) {
    char *k = ss_malloc(strlen(p) + 2, "model path");
    if (!k) return NULL;
    size_t n = 0;
    if (*p == '/') k[n++] = '/';
    while (*p) {
        while (*p == '/') p++;
        const char *e = strchr(p, '/');
        size_t l = e ? (size_t)(e - p) : strlen(p);
        if (l && !(l == 1 && *p == '.')) {
            if (n && k[n - 1] != '/') k[n++] = '/';
            memcpy(k + n, p, l), n += l;
        }
        p += l;
    }
    if (!n) k[n++] = '.';
    k[n] = 0;
    return k;
}

/* Pass 2: one file's provenance and masks. */
static ss_status read_file(report *rp, int f) {
    rfile *fi = &rp->files[f];
    ss_h5_reader *r;
    fi->path = rp->job->inputs[f];
    SS_TRY(open_input(rp, fi->path, &r));
    fi->command_line = attr_opt(r, "command_line");
    fi->model_path = attr_opt(r, "model_path");
    if (fi->model_path && !(fi->model_key = path_key(fi->model_path))) {
        ss_h5_close_read(r);
        return SS_ERR_NOMEM;
    }
    fi->input_path = attr_opt(r, "input_path");
    fi->created = attr_opt(r, "created");
    fi->subscope_version = attr_opt(r, "subscope_version");
    fi->git_commit = attr_opt(r, "git_commit");
    fi->device = attr_opt(r, "device");
    if (ss_h5_read_attr_i64(r, "/", "n_prompts", &fi->n_prompts)) ss_error_clear(), fi->n_prompts = -1;

    const int kl = !strcmp(rp->metric, "kl");
    char p[SS_MAX_LABEL + 256], **paths = NULL; /* /by_label/<label>/ablate/<mask (63 bytes)>/<metric> */
    size_t np = 0, nc = 0;
    double *clean = NULL, clean_all = 0, *clean_t = NULL; /* clean_t is kept in fi */
    ss_status st = ss_h5_list(r, "/ablate", 1, &paths, &np);
    if (!st && !kl) {
        snprintf(p, sizeof p, "/clean/%s", rp->metric);
        if (!(st = read_per_prompt(r, fi, p, &clean, &nc))) clean_all = nanmean(clean, nc);
    }
    if (!st && !(clean_t = ss_malloc((size_t)rp->n_topics * sizeof *clean_t, "clean values"))) st = SS_ERR_NOMEM;
    for (int t = 0; t < rp->n_topics && !st; t++) {
        clean_t[t] = kl ? 0 : NAN;
        if (kl || !rp->labelled) continue;
        snprintf(p, sizeof p, "/by_label/%s/clean/%s", rp->topics[t], rp->metric);
        if (ss_h5_exists(r, p)) st = read_scalar(r, p, &clean_t[t]);
    }
    size_t suffix = strlen(rp->metric) + 1;
    int first = rp->n_masks, found = 0;
    for (size_t i = 0; i < np && !st; i++) {
        /* /ablate/<mask>/<metric>: mask names have no '/' */
        const char *name = paths[i] + strlen("/ablate/");
        size_t len = strlen(name);
        if (len <= suffix || strcmp(name + len - suffix + 1, rp->metric) || name[len - suffix] != '/' ||
            memchr(name, '/', len - suffix))
            continue;
        found = 1;
        if (rp->n_masks == rp->cap_masks) {
            int cap = rp->cap_masks ? 2 * rp->cap_masks : 64;
            rmask *g = ss_realloc(rp->masks, (size_t)cap * sizeof *g, "masks");
            if (!g) { st = SS_ERR_NOMEM; break; }
            rp->masks = g, rp->cap_masks = cap;
        }
        rmask *m = &rp->masks[rp->n_masks++];
        memset(m, 0, sizeof *m);
        m->file = f, m->sub = -1, m->parent = -1;
        if (!(m->name = ss_strndup(name, len - suffix)) ||
            !(m->chg = ss_malloc((size_t)rp->n_topics * sizeof *m->chg, "changes"))) { st = SS_ERR_NOMEM; break; }
        char g[320];
        snprintf(g, sizeof g, "/ablate/%s", m->name);
        if ((st = attr_str(r, g, "mode", &m->mode)) || (st = attr_str(r, g, "units_sha256", &m->uid)) ||
            (st = attr_str(r, g, "sites", &m->sites)) || (st = attr_i64(r, g, "n_units_total", &m->n_units)) ||
            (st = attr_i64(r, g, "n_positions", &m->n_positions)) || (st = attr_f64(r, g, "factor", &m->factor)) ||
            (st = attr_f64(r, g, "sigma", &m->sigma)) || (st = attr_i64(r, g, "relative", &m->relative)) ||
            (st = attr_i64(r, g, "seed", &m->seed)))
            break;
        if (ss_h5_read_attr_str(r, g, "control_of", &m->control_of)) ss_error_clear(), m->control_of = NULL;
        if ((m->kind = mask_kind(m, &m->x)) < 0) { st = ss_errorf(SS_ERR_FORMAT, "%s: %s: unknown mode '%s'", fi->path, g, m->mode); break; }
        double *v = NULL;
        size_t nv = 0;
        if ((st = read_per_prompt(r, fi, paths[i], &v, &nv))) break;
        m->chg_all = nanmean(v, nv) - clean_all;
        free(v);
        for (int t = 0; t < rp->n_topics && !st; t++) {
            if (!rp->labelled) { m->chg[t] = m->chg_all; continue; }
            snprintf(p, sizeof p, "/by_label/%s/ablate/%s/%s", rp->topics[t], m->name, rp->metric);
            double a = NAN;
            if (ss_h5_exists(r, p)) st = read_scalar(r, p, &a);
            m->chg[t] = a - clean_t[t];
        }
    }
    if (!st && !found)
        st = ss_errorf(SS_ERR_FORMAT, "%s: no mask under /ablate has the metric '%s'", fi->path, rp->metric);
    /* A control's original is the mask of the same file it names. */
    for (int i = first; i < rp->n_masks && !st; i++) {
        if (!rp->masks[i].control_of) continue;
        for (int j = first; j < rp->n_masks; j++)
            if (!rp->masks[j].control_of && !strcmp(rp->masks[j].name, rp->masks[i].control_of)) rp->masks[i].parent = j;
    }
    free(clean);
    fi->clean_t = clean_t;
    ss_h5_free_names(paths, np);
    ss_h5_close_read(r);
    return st;
}

/* ------------------------------------------------------------ analysis */

static double impair_mean(const report *rp, const rmask *m) {
    double s = 0;
    int n = 0;
    for (int t = 0; t < rp->n_topics; t++)
        if (!isnan(m->chg[t])) s += rp->sign * m->chg[t], n++;
    return n ? s / n : NAN;
}

static double mask_index(const report *rp, const rmask *m, int *target) {
    double imp[rp->n_topics];
    for (int t = 0; t < rp->n_topics; t++) imp[t] = rp->sign * m->chg[t];
    return ss_report_index(imp, rp->n_topics, target);
}

static const char *model_of(const report *rp, const rmask *m) {
    const char *s = rp->files[m->file].model_key;
    return s ? s : "";
}

/* The index of setting `mask` of sub-model g and its verdict against that setting's controls. */
static void judge_setting(const report *rp, rsub *g, int mask) {
    g->index = mask_index(rp, &rp->masks[mask], &g->target);
    double ci[512];
    int nc = 0;
    for (int i = 0; i < rp->n_masks && nc < 512; i++)
        if (rp->masks[i].parent == mask) {
            int t;
            ci[nc++] = mask_index(rp, &rp->masks[i], &t);
        }
    g->n_ctrl = nc;
    g->verdict = ss_report_judge(g->index, ci, nc, &g->ctrl_mean, &g->ctrl_sd, &g->n_ctrl_used);
    /* A ratio of tiny effects is not a finding: the target's impairment must also reach
     * SS_REPORT_MIN_EFFECT of that topic's clean value (and SS_REPORT_EPS_ABS). */
    g->too_small = 0;
    if (g->verdict == SS_VERDICT_SPECIFIC && g->target >= 0) {
        const rmask *m = &rp->masks[mask];
        double imp = rp->sign * m->chg[g->target], clean = rp->files[m->file].clean_t[g->target];
        double floor_ = fmax(SS_REPORT_EPS_ABS, isnan(clean) ? 0 : SS_REPORT_MIN_EFFECT * fabs(clean));
        if (!(imp >= floor_)) g->verdict = SS_VERDICT_NONE, g->too_small = 1;
    }
}

/* Sub-models: originals grouped by (model, units identity), in order of
 * first appearance; each one judged setting by setting. */
static ss_status analyse(report *rp) {
    for (int i = 0; i < rp->n_masks; i++) {
        rmask *m = &rp->masks[i];
        if (m->control_of) continue;
        int s = 0;
        for (; s < rp->n_subs; s++) {
            const rmask *o = &rp->masks[rp->subs[s].m[0]];
            if (!strcmp(o->uid, m->uid) && !strcmp(model_of(rp, o), model_of(rp, m))) break;
        }
        if (s == rp->n_subs) {
            rsub *g = ss_realloc(rp->subs, (size_t)(rp->n_subs + 1) * sizeof *g, "sub-models");
            if (!g) return SS_ERR_NOMEM;
            rp->subs = g;
            memset(&g[s], 0, sizeof g[s]);
            rp->n_subs++;
        }
        rsub *g = &rp->subs[s];
        int *mm = ss_realloc(g->m, (size_t)(g->n + 1) * sizeof *mm, "sub-models");
        if (!mm) return SS_ERR_NOMEM;
        g->m = mm;
        g->m[g->n++] = i;
        m->sub = s;
    }
    for (int s = 0; s < rp->n_subs; s++) {
        rsub *g = &rp->subs[s];
        /* Display name (only that: grouping never looks at names): the common
         * prefix of the names that share the first one's first 3 bytes, cut
         * before a number the names go on to differ in and before trailing
         * separators; the first name when that leaves under 3 bytes. */
        const char *a = rp->masks[g->m[0]].name;
        size_t pre = strlen(a);
        for (int k = 1; k < g->n; k++) {
            const char *b = rp->masks[g->m[k]].name;
            if (strncmp(a, b, 3)) continue;
            size_t j = 0;
            while (j < pre && a[j] == b[j]) j++;
            if (j < pre) {
                while (j > 0 && (isdigit((unsigned char)a[j - 1]) || a[j - 1] == '.') &&
                       (isdigit((unsigned char)a[j]) || a[j] == '.' || isdigit((unsigned char)b[j]) || b[j] == '.'))
                    j--;
                pre = j;
            }
        }
        while (pre && strchr("_-.~ =:", a[pre - 1])) pre--;
        if (pre < 3) pre = strlen(a);
        snprintf(g->name, sizeof g->name, "%.*s", (int)(pre < 80 ? pre : 80), a);
        /* Every setting is judged against its own controls. Shown: the most
         * specific setting that passes, or else the strongest one (the
         * largest mean impairment over topics). */
        g->strongest = g->m[0];
        double best = NAN, best_pass = NAN;
        int passed = -1;
        for (int k = 0; k < g->n; k++) {
            double v = impair_mean(rp, &rp->masks[g->m[k]]);
            if (!isnan(v) && (isnan(best) || v > best)) best = v, g->strongest = g->m[k];
            rsub trial = *g;
            judge_setting(rp, &trial, g->m[k]);
            if (trial.verdict == SS_VERDICT_SPECIFIC && (isnan(best_pass) || trial.index > best_pass))
                best_pass = trial.index, passed = g->m[k];
        }
        if (passed >= 0) g->strongest = passed;
        judge_setting(rp, g, g->strongest);
    }
    /* A display name two sub-models share (the same masks run on two models, or other units under
     * one name in another file) says the model, or where that is the same, the file of the first mask. */
    int *tag = ss_calloc((size_t)rp->n_subs + 1, sizeof *tag, "sub-models");
    if (!tag) return SS_ERR_NOMEM;
    for (int s = 0; s < rp->n_subs; s++)
        for (int o = 0; o < rp->n_subs; o++) {
            const rmask *a = &rp->masks[rp->subs[s].m[0]], *c = &rp->masks[rp->subs[o].m[0]];
            if (o == s || strcmp(rp->subs[s].name, rp->subs[o].name)) continue;
            if (strcmp(model_of(rp, a), model_of(rp, c))) tag[s] |= 1;
            else if (a->file != c->file) tag[s] |= 2;
        }
    for (int s = 0; s < rp->n_subs; s++) {
        rsub *g = &rp->subs[s];
        const rmask *a = &rp->masks[g->m[0]];
        size_t n = strlen(g->name);
        if (tag[s] & 1) n += (size_t)snprintf(g->name + n, sizeof g->name - n, " on %s", model_of(rp, a));
        if (tag[s] & 2 && n < sizeof g->name) snprintf(g->name + n, sizeof g->name - n, " in file %d", a->file + 1);
    }
    free(tag);
    return SS_OK;
}

static void sb_verdict(ss_sbuf *b, const report *rp, const rsub *g, int html) {
    const char *target = g->target >= 0 ? rp->topics[g->target] : "";
    switch (g->verdict) {
    case SS_VERDICT_SPECIFIC:
        ss_sb_printf(b, "topic-specific to ");
        if (html) sb_esc(b, target);
        else ss_sb_printf(b, "%s", target);
        break;
    case SS_VERDICT_NONE:
        ss_sb_printf(b, g->too_small ? "no topic-specific effect (too small: under %g%% of the topic's clean value)"
                                  : "no topic-specific effect", 100 * SS_REPORT_MIN_EFFECT);
        break;
    case SS_VERDICT_ONE_TOPIC: ss_sb_printf(b, "no topic-specific effect (one topic: nothing to compare)"); break;
    case SS_VERDICT_UNTESTED:
        ss_sb_printf(b, "untested: index %s %g for ", html ? "&ge;" : ">=", SS_REPORT_MIN_INDEX);
        if (html) sb_esc(b, target);
        else ss_sb_printf(b, "%s", target);
        ss_sb_printf(b, " but fewer than %d controls (run ablate --controls K)", SS_REPORT_MIN_CONTROLS);
        break;
    }
}

static void sb_controls(ss_sbuf *b, const rsub *g, int html) {
    /* (with one topic no index exists, the controls' neither: they are there but not used) */
    if (!g->n_ctrl_used && g->n_ctrl && g->verdict == SS_VERDICT_ONE_TOPIC) ss_sb_printf(b, "%d, no index with one topic", g->n_ctrl);
    else if (!g->n_ctrl_used) ss_sb_printf(b, "none");
    else ss_sb_printf(b, "%.3g %s %.3g (n=%d)", g->ctrl_mean, html ? "&plusmn;" : "+-", g->ctrl_sd, g->n_ctrl_used);
}

/* ------------------------------------------------------------ SVG */

static const char *const palette[] = {"#1b6ca8", "#d1495b", "#2e8b57", "#e08a00", "#7b4fa0",
                                      "#00858a", "#c2417f", "#5d6d7e", "#8c6d1f", "#3f51b5"};
#define N_COLOURS ((int)(sizeof palette / sizeof palette[0]))

static double nice_step(double range) {
    if (!(range > 0)) return 1;
    double e = pow(10, floor(log10(range / 5))), f = range / 5 / e;
    return (f < 1.5 ? 1 : f < 3.5 ? 2 : f < 7.5 ? 5 : 10) * e;
}

static void sb_tick(ss_sbuf *b, double v, double step) {
    int dec = step >= 1 ? 0 : (int)ceil(-log10(step) - 1e-9);
    if (fabs(v) < step * 1e-6) v = 0;
    ss_sb_printf(b, "%.*f", dec > 9 ? 9 : dec, v);
}

typedef struct {
    const char *name, *colour;
    int dashed, line;
    int n;
    const double *x, *y;
} series;

static void svg_plot(ss_sbuf *b, const char *title, const char *xlabel, const char *ylabel, const series *S, int ns,
                     double xmax) {
    const double ML = 70, MR = 190, MT = 14, MB = 46, PW = 330;
    double PH = 230, H = MT + PH + MB;
    if (MT + 18.0 * ns + 10 > H) H = MT + 18.0 * ns + 10;
    const double W = ML + PW + MR;
    double ymin = 0, ymax = 0;
    for (int s = 0; s < ns; s++)
        for (int i = 0; i < S[s].n; i++)
            if (isfinite(S[s].y[i])) ymin = fmin(ymin, S[s].y[i]), ymax = fmax(ymax, S[s].y[i]);
    if (ymax - ymin < 1e-9) ymax = ymin + 1e-3;
    double ystep = nice_step(ymax - ymin);
    ymin = floor(ymin / ystep) * ystep, ymax = ceil(ymax / ystep) * ystep;
    double xstep = nice_step(xmax);
    xmax = ceil(xmax / xstep - 1e-9) * xstep;
#define PX(v) (ML + (v) / xmax * PW)
#define PY(v) (MT + (ymax - (v)) / (ymax - ymin) * PH)
    ss_sb_printf(b, "<svg class=\"plot\" width=\"%.0f\" height=\"%.0f\" viewBox=\"0 0 %.0f %.0f\" role=\"img\" aria-label=\"",
              W, H, W, H);
    sb_esc(b, title);
    ss_sb_printf(b, "\"><title>");
    sb_esc(b, title);
    ss_sb_printf(b, "</title>\n<rect x=\"%.0f\" y=\"%.0f\" width=\"%.0f\" height=\"%.0f\" class=\"frame\"/>\n", ML, MT, PW, PH);
    for (double v = ymin; v <= ymax + ystep * 1e-6; v += ystep) {
        ss_sb_printf(b, "<line x1=\"%.0f\" x2=\"%.0f\" y1=\"%.2f\" y2=\"%.2f\" class=\"%s\"/>", ML, ML + PW, PY(v), PY(v),
                  fabs(v) < ystep * 1e-6 ? "zero" : "grid");
        ss_sb_printf(b, "<text x=\"%.0f\" y=\"%.2f\" class=\"yt\">", ML - 6, PY(v) + 4);
        sb_tick(b, v, ystep);
        ss_sb_printf(b, "</text>\n");
    }
    for (double v = 0; v <= xmax + xstep * 1e-6; v += xstep) {
        ss_sb_printf(b, "<line x1=\"%.2f\" x2=\"%.2f\" y1=\"%.0f\" y2=\"%.0f\" class=\"grid\"/>", PX(v), PX(v), MT, MT + PH);
        ss_sb_printf(b, "<text x=\"%.2f\" y=\"%.0f\" class=\"xt\">", PX(v), MT + PH + 16);
        sb_tick(b, v, xstep);
        ss_sb_printf(b, "</text>\n");
    }
    ss_sb_printf(b, "<text x=\"%.0f\" y=\"%.0f\" class=\"xl\">", ML + PW / 2, MT + PH + 36);
    sb_esc(b, xlabel);
    ss_sb_printf(b, "</text>\n<text transform=\"translate(16 %.0f) rotate(-90)\" class=\"xl\">", MT + PH / 2);
    sb_esc(b, ylabel);
    ss_sb_printf(b, "</text>\n");
    for (int s = 0; s < ns; s++) {
        const series *e = &S[s];
        const char *dash = e->dashed ? " stroke-dasharray=\"5 3\"" : "";
        if (e->line && e->n > 1) {
            ss_sb_printf(b, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\"%s points=\"", e->colour, dash);
            for (int i = 0; i < e->n; i++)
                if (isfinite(e->y[i])) ss_sb_printf(b, "%s%.2f,%.2f", i ? " " : "", PX(e->x[i]), PY(e->y[i]));
            ss_sb_printf(b, "\"/>\n");
        }
        for (int i = 0; i < e->n; i++)
            if (isfinite(e->y[i]))
                ss_sb_printf(b, "<circle cx=\"%.2f\" cy=\"%.2f\" r=\"%s\" fill=\"%s\"/>", PX(e->x[i]), PY(e->y[i]),
                          e->dashed ? "2.5" : "3.5", e->colour);
        double ly = MT + 10 + 18.0 * s, lx = ML + PW + 14;
        ss_sb_printf(b, "\n<line x1=\"%.0f\" x2=\"%.0f\" y1=\"%.0f\" y2=\"%.0f\" stroke=\"%s\" stroke-width=\"2\"%s/>", lx,
                  lx + 22, ly, ly, e->colour, dash);
        ss_sb_printf(b, "<text x=\"%.0f\" y=\"%.0f\" class=\"lg\">", lx + 28, ly + 4);
        sb_esc(b, e->name);
        ss_sb_printf(b, "</text>\n");
    }
    ss_sb_printf(b, "</svg>\n");
#undef PX
#undef PY
}

static int cmp_x_ctx_sort(const rmask *ms, int a, int b) {
    if (ms[a].x != ms[b].x) return ms[a].x < ms[b].x ? -1 : 1;
    return a - b;
}

/* The curves of sub-model g in mode kind k: one series per topic, and the
 * mean over each setting's controls on the target topic. */
static ss_status plot_kind(ss_sbuf *b, const report *rp, const rsub *g, int k) {
    int idx[g->n + 1], n = 0;
    for (int i = 0; i < g->n; i++)
        if (rp->masks[g->m[i]].kind == k) {
            int j = n++;
            while (j > 0 && cmp_x_ctx_sort(rp->masks, idx[j - 1], g->m[i]) > 0) idx[j] = idx[j - 1], j--;
            idx[j] = g->m[i];
        }
    if (!n) return SS_OK;
    const int sweep = k <= K_NEG_REL, off = sweep; /* sweeps start at the clean run, (0, 0) */
    const int npts = n + off, nser = rp->n_topics + 1;
    double *x = ss_malloc((size_t)npts * sizeof *x, "plot"), *y = ss_malloc((size_t)(npts * nser) * sizeof *y, "plot");
    series *S = ss_calloc((size_t)nser, sizeof *S, "plot");
    if (!x || !y || !S) { free(x); free(y); free(S); return SS_ERR_NOMEM; }
    double xmax = 1;
    if (off) x[0] = 0;
    for (int i = 0; i < n; i++) x[off + i] = rp->masks[idx[i]].x, xmax = fmax(xmax, x[off + i]);
    if (k == K_SCALE) xmax = 1;
    if (!sweep) xmax = 1.2; /* the single points off the frame */
    int ns = 0;
    for (int t = 0; t < rp->n_topics; t++) {
        double *yy = y + (size_t)ns * npts;
        if (off) yy[0] = 0;
        for (int i = 0; i < n; i++) yy[off + i] = rp->masks[idx[i]].chg[t];
        S[ns++] = (series){rp->topics[t], palette[t % N_COLOURS], t >= N_COLOURS, sweep, npts, x, yy};
    }
    char cname[160] = "";
    if (g->target >= 0) {
        double *yy = y + (size_t)ns * npts;
        int any = 0;
        if (off) yy[0] = 0;
        for (int i = 0; i < n; i++) {
            double s = 0;
            int c = 0;
            for (int j = 0; j < rp->n_masks; j++)
                if (rp->masks[j].parent == idx[i] && !isnan(rp->masks[j].chg[g->target])) s += rp->masks[j].chg[g->target], c++;
            yy[off + i] = c ? s / c : NAN;
            any |= c > 0;
        }
        /* the legend shows up to 40 bytes of the topic, cut between UTF-8 characters */
        const char *tn = rp->topics[g->target];
        int cut = (int)strlen(tn);
        if (cut > 40)
            for (cut = 40; cut > 0 && ((unsigned char)tn[cut] & 0xC0) == 0x80;) cut--;
        snprintf(cname, sizeof cname, "controls (%.*s)", cut, tn);
        if (any) S[ns++] = (series){cname, "#888888", 1, sweep, npts, x, yy};
    }
    char title[320], ylabel[96];
    snprintf(title, sizeof title, "%s: %s", g->name, kind_title[k]);
    snprintf(ylabel, sizeof ylabel, "change in %s from clean", rp->metric);
    ss_sb_printf(b, "<figure><figcaption>");
    sb_esc(b, kind_title[k]);
    ss_sb_printf(b, "</figcaption>\n");
    svg_plot(b, title, kind_x[k], ylabel, S, ns, xmax);
    ss_sb_printf(b, "</figure>\n");
    free(x);
    free(y);
    free(S);
    return SS_OK;
}

/* ------------------------------------------------------------ the page */

static const char *css =
    "body{font-family:sans-serif;margin:24px;color:#222;max-width:1200px}"
    "h1{font-size:1.6em}h2{font-size:1.25em;margin-top:1.6em;border-bottom:1px solid #ccc}"
    "table{border-collapse:collapse;font-size:0.85em;margin:8px 0}"
    "th,td{border:1px solid #ccc;padding:3px 6px;text-align:left;vertical-align:top}"
    "td.n{text-align:right;font-family:monospace}th{background:#f2f2f2}"
    ".specific{background:#e3f4e1}.none{background:#f7f7f7}.untested{background:#fff4d6}"
    "figure{display:inline-block;margin:6px 12px 6px 0}figcaption{font-weight:bold;font-size:0.9em}"
    ".plot text{font-family:sans-serif;font-size:11px;fill:#222}.plot .yt{text-anchor:end}"
    ".plot .xt,.plot .xl{text-anchor:middle}.plot .xl{font-size:12px}.plot .lg{font-size:11px}"
    ".frame{fill:none;stroke:#999}.grid{stroke:#e6e6e6}.zero{stroke:#555;stroke-width:1}"
    "code,.mono{font-family:monospace}.note{color:#555;font-size:0.9em}";

static const char *verdict_class(ss_report_verdict v) {
    return v == SS_VERDICT_SPECIFIC ? "specific" : v == SS_VERDICT_UNTESTED ? "untested" : "none";
}

static void sb_intensity(ss_sbuf *b, const rmask *m) {
    if (m->kind == K_SCALE) ss_sb_printf(b, "%.4g (factor %.4g)", m->x, m->factor);
    else if (m->kind <= K_NEG_REL) ss_sb_printf(b, "σ %.4g%s", m->sigma, m->relative ? " × std" : "");
    else ss_sb_printf(b, "1");
}

static ss_status write_page(const report *rp, ss_sbuf *b) {
    const ss_report_job *job = rp->job;
    const char *title = job->title && *job->title ? job->title : "subscope report";
    ss_sb_printf(b, "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>");
    sb_esc(b, title);
    ss_sb_printf(b, "</title>\n<style>%s</style>\n</head>\n<body>\n<h1>", css);
    sb_esc(b, title);
    ss_sb_printf(b, "</h1>\n");

    int n_spec = 0;
    for (int s = 0; s < rp->n_subs; s++) n_spec += rp->subs[s].verdict == SS_VERDICT_SPECIFIC;
    ss_sb_printf(b, "<p>Metric: <b>");
    sb_esc(b, rp->metric);
    ss_sb_printf(b, "</b> (impairment = %s change). %d input file%s, %d sub-model%s, %d mask%s, %d topic%s%s.</p>\n",
              rp->sign > 0 ? "its" : "minus its", job->n_inputs, job->n_inputs == 1 ? "" : "s", rp->n_subs,
              rp->n_subs == 1 ? "" : "s", rp->n_masks, rp->n_masks == 1 ? "" : "s", rp->n_topics,
              rp->n_topics == 1 ? "" : "s", rp->labelled ? "" : " (the prompts have no \"label\": one topic, all prompts)");
    ss_sb_printf(b, "<p><b>Conclusion:</b> ");
    if (n_spec) {
        ss_sb_printf(b, "%d of %d sub-model%s %s topic-specific:", n_spec, rp->n_subs, rp->n_subs == 1 ? "" : "s",
                  n_spec == 1 ? "is" : "are");
        for (int s = 0, k = 0; s < rp->n_subs; s++)
            if (rp->subs[s].verdict == SS_VERDICT_SPECIFIC) {
                ss_sb_printf(b, "%s S%d (", k++ ? "," : "", s + 1);
                sb_esc(b, rp->topics[rp->subs[s].target]);
                ss_sb_printf(b, ")");
            }
        ss_sb_printf(b, ".</p>\n");
    } else {
        ss_sb_printf(b, "no sub-model has a topic-specific effect: these runs contain no comparable topic-specific "
                     "sub-model.</p>\n");
    }

    /* Verdicts. */
    ss_sb_printf(b, "<h2>Sub-models</h2>\n<table>\n<tr><th>#</th><th>sub-model</th><th>sites</th><th>units</th>"
                 "<th>strongest setting</th><th>target topic</th><th>&Delta; target</th><th>index</th>"
                 "<th>controls' index (mean &plusmn; sd)</th><th>verdict</th></tr>\n");
    for (int s = 0; s < rp->n_subs; s++) {
        const rsub *g = &rp->subs[s];
        const rmask *m = &rp->masks[g->strongest];
        ss_sb_printf(b, "<tr class=\"%s\"><td>S%d</td><td class=\"mono\">", verdict_class(g->verdict), s + 1);
        sb_esc(b, g->name);
        ss_sb_printf(b, "</td><td class=\"mono\">");
        sb_esc(b, m->sites);
        ss_sb_printf(b, "</td><td class=\"n\">%lld%s</td><td class=\"mono\">", (long long)m->n_units,
                  m->n_positions ? " (some positions)" : "");
        sb_esc(b, m->name);
        ss_sb_printf(b, " (%s, ", m->mode);
        sb_intensity(b, m);
        ss_sb_printf(b, ")</td><td>");
        sb_esc(b, g->target >= 0 ? rp->topics[g->target] : "n/a");
        ss_sb_printf(b, "</td><td class=\"n\">");
        sb_num(b, g->target >= 0 ? m->chg[g->target] : NAN, 1);
        ss_sb_printf(b, "</td><td class=\"n\">");
        sb_num(b, g->index, 0);
        ss_sb_printf(b, "</td><td class=\"n\">");
        sb_controls(b, g, 1);
        ss_sb_printf(b, "</td><td>");
        sb_verdict(b, rp, g, 1);
        ss_sb_printf(b, "</td></tr>\n");
    }
    ss_sb_printf(b, "</table>\n");

    ss_sb_printf(b,
              "<h2>How to read this page</h2>\n<ul>\n"
              "<li>A <b>sub-model</b> is a set of units (sites, units and positions); masks that mask the same set in "
              "different modes or at different intensities are one sub-model, whatever their names.</li>\n"
              "<li><b>&Delta;</b> of a mask on a topic is the mean of the metric over that topic's prompts under the "
              "mask minus the same mean in the clean run. <b>Impairment</b> is &Delta; for loss and kl, and "
              "&minus;&Delta; for acc, keyword and logitdiff, so that positive is always worse.</li>\n"
              "<li><b>Intensity</b>: scale: 1 &minus; factor; noise and negnoise: &sigma; (absolute, or in units of each "
              "unit's standard deviation when relative); zero, mean and resample: a single point at 1. Sweep curves "
              "start at (0, 0), the clean run.</li>\n"
              "<li>Each <b>setting</b> (mode and intensity) of a sub-model is judged against the controls of that "
              "setting. The page shows the most specific setting that passes, or else the <b>strongest setting</b>, "
              "its mask with the largest impairment averaged over topics (more settings give chance more tries; the "
              "controls of each setting are what guards against it). At a setting the <b>target</b> is the topic "
              "with the largest impairment &Delta;<sub>t</sub>, and<br>"
              "<code>index = &Delta;<sub>t</sub> / mean over the other topics o of max(&Delta;<sub>o</sub>, &epsilon;)</code>, "
              "<code>&epsilon; = max(%g, %g &middot; &Delta;<sub>t</sub>)</code> (so index &le; %g), and index = 0 when "
              "&Delta;<sub>t</sub> &le; 0.</li>\n"
              "<li><b>Controls</b> (<code>ablate --controls K</code>) mask as many random units of the same sites in the "
              "same mode and intensity; each control's index is computed the same way, with its own target topic. The "
              "grey dashed curve is the controls' mean &Delta; on the sub-model's target topic.</li>\n"
              "<li><b>Verdict</b>: &ldquo;topic-specific to &lt;topic&gt;&rdquo; only when index &ge; %g <i>and</i> index "
              "&gt; controls' mean + %g sd (sample sd over at least %d controls) <i>and</i> the target's impairment is at "
              "least %g%% of its clean value (and %g); otherwise &ldquo;no topic-specific effect&rdquo;. An index &ge; %g without enough controls is reported as untested, never as "
              "specific.</li>\n</ul>\n",
              SS_REPORT_EPS_ABS, SS_REPORT_EPS_REL, 1 / SS_REPORT_EPS_REL, SS_REPORT_MIN_INDEX, SS_REPORT_CTRL_SDS,
              SS_REPORT_MIN_CONTROLS, 100 * SS_REPORT_MIN_EFFECT, SS_REPORT_EPS_ABS, SS_REPORT_MIN_INDEX);

    /* Curves. */
    for (int s = 0; s < rp->n_subs; s++) {
        const rsub *g = &rp->subs[s];
        const rmask *m = &rp->masks[g->m[0]];
        ss_sb_printf(b, "<h2>S%d ", s + 1);
        sb_esc(b, g->name);
        ss_sb_printf(b, "</h2>\n<p class=\"note\">");
        sb_esc(b, m->sites);
        ss_sb_printf(b, ", %lld units%s; %d setting%s; verdict: ", (long long)m->n_units,
                  m->n_positions ? " at some positions" : "", g->n, g->n == 1 ? "" : "s");
        sb_verdict(b, rp, g, 1);
        ss_sb_printf(b, "</p>\n");
        for (int k = 0; k < K_COUNT; k++) SS_TRY(plot_kind(b, rp, g, k));
    }

    /* Every mask. */
    ss_sb_printf(b, "<h2>Every mask: change in %s from clean, per topic</h2>\n<table>\n<tr><th>mask</th><th>file</th>"
                 "<th>sub-model</th><th>mode</th><th>intensity</th><th>sites</th><th>units</th><th>all prompts</th>",
              rp->metric);
    for (int t = 0; t < rp->n_topics; t++) {
        ss_sb_printf(b, "<th>");
        sb_esc(b, rp->topics[t]);
        ss_sb_printf(b, "</th>");
    }
    ss_sb_printf(b, "</tr>\n");
    for (int i = 0; i < rp->n_masks; i++) {
        const rmask *m = &rp->masks[i];
        ss_sb_printf(b, "<tr><td class=\"mono\">");
        sb_esc(b, m->name);
        ss_sb_printf(b, "</td><td class=\"n\">%d</td><td>", m->file + 1);
        if (m->sub >= 0) ss_sb_printf(b, "S%d", m->sub + 1);
        else if (m->parent >= 0) ss_sb_printf(b, "control of S%d", rp->masks[m->parent].sub + 1);
        else {
            ss_sb_printf(b, "control of ");
            sb_esc(b, m->control_of);
            ss_sb_printf(b, " (not in the file)");
        }
        ss_sb_printf(b, "</td><td>%s</td><td>", m->mode);
        sb_intensity(b, m);
        ss_sb_printf(b, "</td><td class=\"mono\">");
        sb_esc(b, m->sites);
        ss_sb_printf(b, "</td><td class=\"n\">%lld</td><td class=\"n\">", (long long)m->n_units);
        sb_num(b, m->chg_all, 1);
        ss_sb_printf(b, "</td>");
        for (int t = 0; t < rp->n_topics; t++) {
            ss_sb_printf(b, "<td class=\"n\">");
            sb_num(b, m->chg[t], 1);
            ss_sb_printf(b, "</td>");
        }
        ss_sb_printf(b, "</tr>\n");
    }
    ss_sb_printf(b, "</table>\n");

    /* Provenance. */
    ss_sb_printf(b, "<h2>Inputs</h2>\n<table>\n<tr><th>file</th><th>path</th><th>command line</th><th>model</th>"
                 "<th>prompts</th><th>created</th><th>subscope</th><th>device</th></tr>\n");
    for (int f = 0; f < job->n_inputs; f++) {
        const rfile *fi = &rp->files[f];
        ss_sb_printf(b, "<tr><td class=\"n\">%d</td><td class=\"mono\">", f + 1);
        sb_esc(b, fi->path);
        ss_sb_printf(b, "</td><td class=\"mono\">");
        sb_esc(b, fi->command_line ? fi->command_line : "n/a");
        ss_sb_printf(b, "</td><td class=\"mono\">");
        sb_esc(b, fi->model_path ? fi->model_path : "n/a");
        ss_sb_printf(b, "</td><td class=\"mono\">");
        sb_esc(b, fi->input_path ? fi->input_path : "n/a");
        if (fi->n_prompts >= 0) ss_sb_printf(b, " (%lld)", (long long)fi->n_prompts);
        ss_sb_printf(b, "</td><td>");
        sb_esc(b, fi->created ? fi->created : "n/a");
        ss_sb_printf(b, "</td><td>");
        sb_esc(b, fi->subscope_version ? fi->subscope_version : "n/a");
        ss_sb_printf(b, " ");
        sb_esc(b, fi->git_commit ? fi->git_commit : "");
        ss_sb_printf(b, "</td><td>");
        sb_esc(b, fi->device ? fi->device : "n/a");
        ss_sb_printf(b, "</td></tr>\n");
    }
    ss_sb_printf(b, "</table>\n</body>\n</html>\n");
    return b->oom ? ss_errorf(SS_ERR_NOMEM, "%s: out of memory building the page", job->out) : SS_OK;
}

/* The page appears at its path complete or not at all; a path that is a
 * symbolic link is written through, its target replaced (ss_out_target). */
static ss_status write_atomic(const char *path, const char *data, size_t n) {
    char *target = NULL, *tmp = NULL;
    ss_status st = ss_out_target(path, &target);
    if (!st && !(tmp = ss_tmp_name(target))) st = SS_ERR_NOMEM;
    if (st) {
        free(target);
        return st;
    }
    ss_tmp_sweep(target);
    ss_tmp_register(tmp);
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        st = ss_errorf(SS_ERR_IO, "%s: cannot create: %s", tmp, strerror(errno));
        ss_tmp_unregister(tmp);
        free(tmp), free(target);
        return st;
    }
    int ok = fwrite(data, 1, n, f) == n && fflush(f) == 0 && ss_fsync(fileno(f)) == 0;
    int err = errno; /* the failing call's: fclose may set it again */
    if (fclose(f) != 0 && ok) ok = 0, err = errno;
    if (!ok) st = ss_errorf(SS_ERR_IO, "%s: write failed: %s", tmp, strerror(err));
    else if (rename(tmp, target)) st = ss_errorf(SS_ERR_IO, "%s: cannot rename %s over it: %s", target, tmp, strerror(errno));
    if (st) remove(tmp);
    ss_tmp_unregister(tmp);
    free(tmp), free(target);
    return st;
}

static void report_free(report *rp) {
    for (int f = 0; rp->files && f < rp->job->n_inputs; f++) {
        rfile *fi = &rp->files[f];
        free(fi->command_line), free(fi->model_path), free(fi->model_key), free(fi->input_path), free(fi->created);
        free(fi->subscope_version), free(fi->git_commit), free(fi->device), free(fi->clean_t);
    }
    free(rp->files);
    for (int i = 0; i < rp->n_masks; i++) {
        rmask *m = &rp->masks[i];
        free(m->name), free(m->mode), free(m->sites), free(m->uid), free(m->control_of), free(m->chg);
    }
    free(rp->masks);
    for (int t = 0; t < rp->n_topics; t++) free(rp->topics[t]);
    free(rp->topics);
    for (int s = 0; s < rp->n_subs; s++) free(rp->subs[s].m);
    free(rp->subs);
}

ss_status ss_job_report(const ss_report_job *job) {
    if (!job->n_inputs) return ss_errorf(SS_ERR_ARG, "no input files: give one or more ablate outputs");
    if (!job->out || !*job->out) return ss_errorf(SS_ERR_ARG, "no output path (--out REPORT.html)");
    report rp = {.job = job, .metric = job->metric && *job->metric ? job->metric : "loss"};
    static const char *const up[] = {"loss", "kl"}, *const down[] = {"acc", "keyword", "logitdiff"};
    rp.sign = 0;
    for (int i = 0; i < 2; i++) if (!strcmp(rp.metric, up[i])) rp.sign = 1;
    for (int i = 0; i < 3; i++) if (!strcmp(rp.metric, down[i])) rp.sign = -1;
    if (!rp.sign) return ss_errorf(SS_ERR_ARG, "--metric %s: unknown (loss, acc, keyword, logitdiff, kl)", rp.metric);
    ss_status st = SS_OK;
    ss_sbuf b = {0};
    if (!(rp.files = ss_calloc((size_t)job->n_inputs, sizeof *rp.files, "inputs"))) return SS_ERR_NOMEM;
    if ((st = collect_topics(&rp))) goto out;
    for (int f = 0; f < job->n_inputs && !st; f++) st = read_file(&rp, f);
    if (st || (st = analyse(&rp)) || (st = write_page(&rp, &b))) goto out;
    if ((st = write_atomic(job->out, b.p, b.n))) goto out;
    if (job->summary) {
        ss_sbuf t = {0};
        for (int s = 0; s < rp.n_subs; s++) {
            const rsub *g = &rp.subs[s];
            ss_sb_printf(&t, "S%d %s (%s, %lld units): target %s, index %.3g, controls ", s + 1, g->name,
                      rp.masks[g->m[0]].sites, (long long)rp.masks[g->m[0]].n_units,
                      g->target >= 0 ? rp.topics[g->target] : "n/a", g->index);
            sb_controls(&t, g, 0);
            ss_sb_printf(&t, " -> ");
            sb_verdict(&t, &rp, g, 0);
            ss_sb_printf(&t, "\n");
        }
        int n_spec = 0;
        for (int s = 0; s < rp.n_subs; s++) n_spec += rp.subs[s].verdict == SS_VERDICT_SPECIFIC;
        if (n_spec) ss_sb_printf(&t, "%d of %d sub-models topic-specific\n", n_spec, rp.n_subs);
        else ss_sb_printf(&t, "no topic-specific sub-model among %d\n", rp.n_subs);
        if (t.oom) st = SS_ERR_NOMEM;
        else fputs(t.p, job->summary);
        free(t.p);
    }
out:
    free(b.p);
    report_free(&rp);
    return st;
}
