/* `show`: what an output file holds, in a form a person can read. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "subscope/gguf_model.h"
#include "subscope/h5out.h"
#include "subscope/jobs.h"
#include "subscope/tokenizer.h"

static void print_attr(ss_h5_reader *r, FILE *out, const char *name) {
    char *v = NULL;
    if (ss_h5_read_attr_str(r, "/", name, &v) == SS_OK) {
        /* Multi-line values (the model config) are summarised by length. */
        if (strchr(v, '\n')) fprintf(out, "  %-18s (%zu characters)\n", name, strlen(v));
        else fprintf(out, "  %-18s %s\n", name, v);
    }
    free(v);
}

/* Token text as ss_sb_quoted writes it: escapes for '"', '\\', newlines, control bytes and invalid UTF-8. */
static void print_quoted(FILE *out, const char *s, size_t n) {
    ss_sbuf b = {0};
    ss_sb_quoted(&b, s, n, '"');
    if (!b.oom) fputs(b.p, out);
    free(b.p);
}

/* For each shown prompt: its last token and the model's top guess for the next one. */
static ss_status show_predictions(ss_h5_reader *r, FILE *out, const ss_tokenizer *tok, int64_t N, int64_t T,
                                  int64_t V, const int32_t *tokens, const int32_t *lens, int64_t max_prompts) {
    float *row = ss_malloc((size_t)V * sizeof(float), "a row of logits");
    if (!row) return SS_ERR_NOMEM;
    fprintf(out, "\nnext-token predictions (top guess after each prompt's last token):\n");
    for (int64_t i = 0; i < N && i < max_prompts; i++) {
        int64_t st_[3] = {i, lens[i] - 1, 0}, ct[3] = {1, 1, V};
        ss_status st = ss_h5_read_slab(r, "/logits", SS_H5_F32, st_, ct, row);
        if (st) { free(row); return st; }
        int64_t best = 0;
        double mx = row[0], sum = 0;
        for (int64_t v = 1; v < V; v++)
            if (row[v] > row[best]) best = v, mx = row[v];
        for (int64_t v = 0; v < V; v++) sum += exp((double)row[v] - mx);
        char *txt = NULL, *next = NULL;
        size_t tl = 0, nl = 0;
        fprintf(out, "  [%lld] ", (long long)i);
        if (tok && ss_tokenizer_decode(tok, tokens + i * T, (size_t)lens[i], &txt, &tl) == SS_OK) {
            if (tl > 48) { /* the last 45 bytes or fewer, from the start of a UTF-8 character */
                size_t from = tl - 45;
                while (from < tl && ((unsigned char)txt[from] & 0xC0) == 0x80) from++;
                fputs("...", out);
                print_quoted(out, txt + from, tl - from);
            }
            else print_quoted(out, txt, tl);
        } else {
            fprintf(out, "(%d tokens)", lens[i]);
        }
        int32_t b32 = (int32_t)best;
        fputs(" -> ", out);
        if (tok && ss_tokenizer_decode(tok, &b32, 1, &next, &nl) == SS_OK) print_quoted(out, next, nl);
        else fprintf(out, "id %lld", (long long)best);
        fprintf(out, "  p=%.3f\n", 1.0 / sum);
        free(txt);
        free(next);
    }
    if (N > max_prompts) fprintf(out, "  ... %lld more\n", (long long)(N - max_prompts));
    free(row);
    return SS_OK;
}

/* Mean activation of each neuron over all real positions; prints the top 5. */
static ss_status show_neurons(ss_h5_reader *r, FILE *out, const char *path, const ss_h5_info *in,
                              const int32_t *lens) {
    int64_t N = in->dims[0], T = in->dims[1], D = in->dims[2];
    float *blk = ss_malloc((size_t)(T * D) * sizeof(float), "a prompt's activations");
    double *mean = blk ? ss_calloc((size_t)D, sizeof(double), "neuron means") : NULL;
    if (!blk || !mean) { free(blk); return SS_ERR_NOMEM; }
    int64_t count = 0;
    for (int64_t i = 0; i < N; i++) {
        int64_t s[3] = {i, 0, 0}, c[3] = {1, lens[i], D}; /* its own positions: the padding's chunks are not stored */
        ss_status st = ss_h5_read_slab(r, path, SS_H5_F32, s, c, blk);
        if (st) { free(blk); free(mean); return st; }
        for (int64_t t = 0; t < lens[i]; t++)
            for (int64_t d = 0; d < D; d++) mean[d] += blk[t * D + d];
        count += lens[i];
    }
    fprintf(out, "  %s: most active neurons (mean over %lld positions):", path + 6, (long long)count);
    for (int k = 0; k < 5 && k < D; k++) {
        int64_t best = -1;
        for (int64_t d = 0; d < D; d++)
            if (!isnan(mean[d]) && (best < 0 || mean[d] > mean[best])) best = d;
        if (best < 0) break;
        fprintf(out, " %lld (%.3f)", (long long)best, mean[best] / (double)(count ? count : 1));
        mean[best] = NAN;
    }
    fputc('\n', out);
    free(blk);
    free(mean);
    return SS_OK;
}

/* A forward file's /lengths [N] (N the n_prompts attribute where there is one), each in 1..T, and
 * of /tokens [N, T] (T the longest prompt) the first `shown` rows, the ones show decodes. The sizes
 * are checked before anything is allocated or read: a file of a few KB can declare billions of
 * values never written, which read as the fill value (DECISIONS.md); both are written whole. */
static ss_status forward_tokens(ss_h5_reader *r, const char *path, int64_t shown, ss_h5_info *ti, int32_t **tokens,
                                int32_t **lens) {
    ss_h5_info li;
    SS_TRY(ss_h5_dset_info(r, "/tokens", ti));
    SS_TRY(ss_h5_dset_info(r, "/lengths", &li));
    if (ti->ndim != 2 || li.ndim != 1 || li.dims[0] != ti->dims[0])
        return ss_errorf(SS_ERR_FORMAT, "%s: /tokens and /lengths do not have the shapes [N, T] and [N] of a forward file",
                         path);
    const int64_t N = li.dims[0];
    int64_t n_prompts;
    if (ss_h5_attr_exists(r, "/", "n_prompts")) {
        SS_TRY(ss_h5_read_attr_i64(r, "/", "n_prompts", &n_prompts));
        if (n_prompts != N)
            return ss_errorf(SS_ERR_FORMAT, "%s: /lengths has %lld values for the %lld prompts of n_prompts", path,
                             (long long)N, (long long)n_prompts);
    }
    SS_TRY(ss_h5_dset_written(r, "/lengths"));
    SS_TRY(ss_h5_read_want(r, "/lengths", SS_H5_I32, (size_t)N, (void **)lens, NULL));
    int64_t T = 0;
    for (int64_t i = 0; i < N; i++) {
        if ((*lens)[i] < 1 || (*lens)[i] > ti->dims[1])
            return ss_errorf(SS_ERR_FORMAT, "%s: /lengths[%lld] is %d, outside 1..%lld", path, (long long)i, (*lens)[i],
                             (long long)ti->dims[1]);
        if ((*lens)[i] > T) T = (*lens)[i];
    }
    if (ti->dims[1] != T)
        return ss_errorf(SS_ERR_FORMAT, "%s: /tokens has %lld positions, not the %lld of the longest prompt in /lengths",
                         path, (long long)ti->dims[1], (long long)T);
    SS_TRY(ss_h5_dset_written(r, "/tokens"));
    const int64_t k = N < shown ? N : shown, start[2] = {0, 0}, count[2] = {k, T};
    if (!(*tokens = ss_malloc((size_t)(k * T) * sizeof(int32_t) + 1, "the tokens shown"))) return SS_ERR_NOMEM;
    return k ? ss_h5_read_slab(r, "/tokens", SS_H5_I32, start, count, *tokens) : SS_OK;
}

/* A [N, T, width] dataset of the forward file whose tokens are [N, T]. */
static ss_status same_rows(const char *path, const char *name, const ss_h5_info *in, const ss_h5_info *ti) {
    if (in->ndim != 3 || in->dims[0] != ti->dims[0] || in->dims[1] != ti->dims[1] || in->dims[2] < 1)
        return ss_errorf(SS_ERR_FORMAT, "%s: %s is not [%lld, %lld, width] like /tokens", path, name,
                         (long long)ti->dims[0], (long long)ti->dims[1]);
    return SS_OK;
}

/* A [N, T, width] dataset of forward's writes only the prompts' own positions, `real` rows of width
 * values: at least 1/2048 of those are stored, or its size is not the file's (a few KB can declare a
 * width of 2^31, which a row read would allocate and fill). */
static ss_status rows_written(ss_h5_reader *r, const char *name, const ss_h5_info *in, int64_t real) {
    size_t elems;
    if (!ss_mul_ok((size_t)real, (size_t)in->dims[2], &elems)) elems = SIZE_MAX;
    return ss_h5_dset_written_part(r, name, elems);
}

/* The (up to) k entries of v[0..n) largest in magnitude, largest first
 * (NaN skipped), into idx; returns how many. */
static int top_by_magnitude(const double *v, int64_t n, int k, int64_t *idx) {
    int got = 0;
    for (; got < k; got++) {
        int64_t best = -1;
        for (int64_t i = 0; i < n; i++) {
            if (isnan(v[i])) continue;
            int taken = 0;
            for (int q = 0; q < got && !taken; q++) taken = idx[q] == i;
            if (!taken && (best < 0 || fabs(v[i]) > fabs(v[best]))) best = i;
        }
        if (best < 0) break;
        idx[got] = best;
    }
    return got;
}

/* Progress of the rows an attribute file's summary reads (ss_job_show_progress). */
typedef struct {
    void (*fn)(void *ctx, int64_t done, int64_t total);
    void *ctx;
    int64_t done, total, shown; /* shown: the count of the last call */
    double t0, last;
    int said; /* called at least once */
} show_progress;

static void progress_add(show_progress *p, int64_t k) {
    p->done += k;
    if (!p->fn) return;
    const double now = ss_now();
    if (p->done >= p->total ? p->said : now - p->t0 >= 0.5 && now - p->last >= 0.2) {
        p->fn(p->ctx, p->done, p->total);
        p->last = now, p->said = 1, p->shown = p->done;
    }
}

/* Stopping early (an error after some rows): a progress line already shown gets the rows truly
 * read, not the last throttled count (7840/8003 when 8000 had been read), before the error ends it. */
static void progress_stop(show_progress *p) {
    if (p->fn && p->said && p->shown != p->done) p->fn(p->ctx, p->done, p->total), p->shown = p->done;
}

/* attribute files: per site, the units with the largest |attribution|
 * summed over prompts and positions (what attribute's table printed), read
 * one prompt (or position) at a time. The leading axes summed are
 * [prompt, position] (--reduce none) or the one that is left. */
static ss_status show_attributions(ss_h5_reader *r, FILE *out, const char *path, char **paths, size_t np,
                                   show_progress *pg) {
    char *reduce = NULL;
    if (ss_h5_read_attr_str(r, "/", "reduce", &reduce) != SS_OK) return SS_OK; /* not an attribute file */
    const int lead = strcmp(reduce, "none") ? 1 : 2;
    free(reduce);
    int header = 0;
    /* the rows to read, for the progress: each dataset's leading index. attribute writes every row
     * (NaN past a prompt's end): a dataset storing far less than it declares was never written, and
     * is refused before anything is read (row by row, 400,000 declared prompts of a file of a few
     * KB took 93 s, summing fill values) */
    for (size_t i = 0; i < np; i++) {
        ss_h5_info in;
        if (strncmp(paths[i], "/attr/", 6)) continue;
        SS_TRY(ss_h5_dset_written(r, paths[i]));
        if (ss_h5_dset_info(r, paths[i], &in) == SS_OK && in.ndim >= 1 && in.dims[0] > 0) pg->total += in.dims[0];
    }
    pg->t0 = pg->last = ss_now();
    for (size_t i = 0; i < np; i++) {
        if (strncmp(paths[i], "/attr/", 6)) continue;
        ss_h5_info in;
        SS_TRY(ss_h5_dset_info(r, paths[i], &in));
        if (in.ndim < lead + 1 || in.ndim > lead + 2 || in.cls != SS_H5_CLASS_FLOAT)
            return ss_errorf(SS_ERR_FORMAT, "%s: %s has %d axes, not the %d or %d of attributions", path, paths[i],
                             in.ndim, lead + 1, lead + 2);
        int64_t per = 1, width = 1; /* values per leading index; units */
        for (int d = 1; d < in.ndim; d++) {
            if (in.dims[d] < 1) { per = 0; break; }
            if (per > ((int64_t)1 << 40) / in.dims[d])
                return ss_errorf(SS_ERR_FORMAT, "%s: %s is too large to summarise", path, paths[i]);
            per *= in.dims[d];
        }
        if (per <= 0 || in.dims[0] < 1) continue;
        for (int d = lead; d < in.ndim; d++) width *= in.dims[d];
        float *blk = ss_malloc((size_t)per * sizeof(float), paths[i]);
        double *sum = blk ? ss_calloc((size_t)width, sizeof(double), paths[i]) : NULL;
        if (!blk || !sum) { free(blk); return SS_ERR_NOMEM; }
        int64_t start[4] = {0, 0, 0, 0}, count[4] = {1, 0, 0, 0};
        for (int d = 1; d < in.ndim; d++) count[d] = in.dims[d];
        int any = 0;
        for (int64_t a = 0; a < in.dims[0]; a++) {
            start[0] = a;
            ss_status st = ss_h5_read_slab(r, paths[i], SS_H5_F32, start, count, blk);
            if (st) { free(blk); free(sum); return st; }
            for (int64_t q = 0; q < per; q++)
                if (!isnan(blk[q])) sum[q % width] += blk[q], any = 1;
            progress_add(pg, 1);
        }
        if (!any) for (int64_t u = 0; u < width; u++) sum[u] = NAN;
        int64_t top[5];
        const int k = top_by_magnitude(sum, width, 5, top);
        if (!header++) fprintf(out, "\nattributions (top units per site by |sum over prompts and positions|):\n");
        fprintf(out, "  %s:", paths[i] + 6);
        for (int q = 0; q < k; q++) {
            if (in.ndim == lead + 2)
                fprintf(out, "  h%lld.%lld %+.3g", (long long)(top[q] / in.dims[lead + 1]),
                        (long long)(top[q] % in.dims[lead + 1]), sum[top[q]]);
            else fprintf(out, "  %lld %+.3g", (long long)top[q], sum[top[q]]);
        }
        fprintf(out, "%s\n", k ? "" : "  (no values)");
        free(blk);
        free(sum);
    }
    return SS_OK;
}

/* patch files: per site, the pieces whose mean normalised effect over the
 * pairs (NaN skipped) is largest in magnitude. */
static ss_status show_patch_effects(ss_h5_reader *r, FILE *out, const char *path, char **paths, size_t np) {
    int header = 0;
    for (size_t i = 0; i < np; i++) {
        if (strncmp(paths[i], "/effect/", 8)) continue;
        float *eff = NULL;
        size_t n;
        ss_h5_info in;
        SS_TRY(ss_h5_dset_written(r, paths[i])); /* written whole: the size a file declares is not trusted */
        SS_TRY(ss_h5_read_f32(r, paths[i], &eff, &n, &in));
        if (in.ndim != 2 || in.dims[1] < 1) {
            free(eff);
            return ss_errorf(SS_ERR_FORMAT, "%s: %s is not [pair, piece]", path, paths[i]);
        }
        const int64_t P = in.dims[0], W = in.dims[1];
        double *mean = ss_malloc((size_t)W * sizeof(double), paths[i]);
        int64_t *cnt = ss_malloc((size_t)W * sizeof(int64_t), paths[i]);
        if (!mean || !cnt) { free(mean), free(cnt), free(eff); return SS_ERR_NOMEM; }
        for (int64_t u = 0; u < W; u++) {
            double s = 0;
            int64_t c = 0;
            for (int64_t a = 0; a < P; a++)
                if (!isnan(eff[a * W + u])) s += eff[a * W + u], c++;
            mean[u] = c ? s / (double)c : NAN;
            cnt[u] = c;
        }
        char **dn = NULL;
        int nd = 0;
        ss_status st = ss_h5_dim_names(r, paths[i], &dn, &nd);
        if (!st) {
            int64_t top[5];
            const int k = top_by_magnitude(mean, W, 5, top);
            if (!header++)
                fprintf(out,
                        "\npatching (pieces per site by |mean normalised effect| over the pairs with a value, of %lld;\n"
                        "  '(n pairs)' after a piece whose mean has fewer: positions past a pair's end, clean = corrupt):\n",
                        (long long)P);
            fprintf(out, "  %s (%s):", paths[i] + 8, nd == 2 && dn && dn[1] ? dn[1] : "piece");
            for (int q = 0; q < k; q++) {
                fprintf(out, "  %lld %+.3f", (long long)top[q], mean[top[q]]);
                if (cnt[top[q]] < P) fprintf(out, " (%lld pair%s)", (long long)cnt[top[q]], cnt[top[q]] == 1 ? "" : "s");
            }
            fprintf(out, "%s\n", k ? "" : "  (no values)");
        }
        ss_h5_free_names(dn, (size_t)nd);
        free(mean);
        free(cnt);
        free(eff);
        if (st) return st;
    }
    return SS_OK;
}

/* What made the file, as show tells (the datasets each command writes, docs/FORMAT.md). */
static const char *file_kind(ss_h5_reader *r) {
    if (ss_h5_attr_exists(r, "/", "reduce") || ss_h5_exists(r, "/attr")) return "an attribute file";
    if (ss_h5_exists(r, "/tokens") && ss_h5_exists(r, "/lengths")) return "a forward file";
    if (ss_h5_exists(r, "/clean") || ss_h5_exists(r, "/ablate")) return "an ablate file";
    if (ss_h5_exists(r, "/effect") || ss_h5_exists(r, "/clean_metric")) return "a patch file";
    if (ss_h5_exists(r, "/stats") || ss_h5_exists(r, "/groups")) return "a collect file";
    if (ss_h5_exists(r, "/prediction")) return "a trace file";
    if (ss_h5_exists(r, "/submodels")) return "a discover file";
    return "not a forward file";
}

ss_status ss_job_show(const char *path, int64_t max_prompts, FILE *out) {
    return ss_job_show_progress(path, max_prompts, out, NULL, NULL);
}

ss_status ss_job_show_progress(const char *path, int64_t max_prompts, FILE *out,
                               void (*progress)(void *ctx, int64_t done, int64_t total), void *ctx) {
    show_progress pg = {.fn = progress, .ctx = ctx};
    ss_h5_reader *r;
    SS_TRY(ss_h5_open_read(path, &r));
    /* --prompts limits a forward file's predictions and losses: of any other file it would change
     * nothing, so it is refused before anything is printed. */
    const char *kind = file_kind(r);
    if (!strcmp(kind, "a forward file") && !ss_h5_exists(r, "/logits") && !ss_h5_exists(r, "/loss"))
        kind = "a forward file with neither /logits nor /loss";
    if (max_prompts > 0 && strcmp(kind, "a forward file")) {
        ss_h5_close_read(r);
        return ss_errorf(SS_ERR_ARG, "--prompts %lld: %s is %s, of which show lists no prompts (--prompts limits a "
                         "forward file's predictions and losses)", (long long)max_prompts, path, kind);
    }
    if (max_prompts <= 0) max_prompts = 8;
    char **paths = NULL;
    size_t np = 0;
    int32_t *tokens = NULL, *lens = NULL;
    ss_tokenizer *tok = NULL;
    ss_status st = ss_h5_list(r, "/", 1, &paths, &np);
    if (st) goto out;
    fprintf(out, "%s\n", path);
    /* Provenance: what made the file and from which inputs (each command's *_path; FORMAT.md). */
    const char *attrs[] = {"format_version", "subscope_version", "created", "command_line", "model_path",
                           "device", "input_path", "data_path", "clean_path", "corrupt_path", "patch_from_path",
                           "stats_path", "attr_path", "masks_path", "keywords_path", "submodels_path", "checkpoint_path"};
    for (size_t i = 0; i < sizeof attrs / sizeof attrs[0]; i++) print_attr(r, out, attrs[i]);
    /* collect --resume: the prompts the checkpoint already held */
    int64_t held;
    if (ss_h5_attr_exists(r, "/", "resumed_prompts") && ss_h5_read_attr_i64(r, "/", "resumed_prompts", &held) == SS_OK)
        fprintf(out, "  %-18s %lld\n", "resumed_prompts", (long long)held);
    fprintf(out, "\ndatasets:\n");
    for (size_t i = 0; i < np; i++) {
        ss_h5_info in;
        if ((st = ss_h5_dset_info(r, paths[i], &in))) goto out;
        if (in.is_scale) continue;
        char **dn = NULL;
        int nd = 0;
        if ((st = ss_h5_dim_names(r, paths[i], &dn, &nd))) goto out;
        char shape[256] = "";
        size_t k = 0;
        for (int d = 0; d < in.ndim && k < sizeof shape; d++)
            k += (size_t)snprintf(shape + k, sizeof shape - k, "%s%s %lld", d ? ", " : "", dn && dn[d] ? dn[d] : "?",
                                  (long long)in.dims[d]);
        ss_h5_free_names(dn, (size_t)nd);
        fprintf(out, "  %-40s %-7s [%s]\n", paths[i],
                in.cls == SS_H5_CLASS_FLOAT ? (in.elem_size == 4 ? "float32" : "float64")
                                            : (in.elem_size == 4 ? "int32" : "int64"),
                shape);
    }
    /* Forward files: decode the prompts and the model's guesses. */
    ss_h5_info ti, li;
    if (ss_h5_exists(r, "/tokens") && ss_h5_exists(r, "/lengths")) {
        /* A forward file's shapes agree: tokens [N, T], lengths [N] in 1..T,
         * logits and sites [N, T, ...]. Anything else is not read further. */
        if ((st = forward_tokens(r, path, max_prompts, &ti, &tokens, &lens))) goto out;
        int64_t real = 0; /* positions that are not padding */
        for (int64_t i = 0; i < ti.dims[0]; i++) real += lens[i];
        char *model = NULL;
        if (ss_h5_read_attr_str(r, "/", "model_path", &model) == SS_OK && ss_model_tokenizer_load(model, &tok) != SS_OK)
            tok = NULL; /* the model may have moved; ids are shown instead */
        free(model);
        if (ss_h5_exists(r, "/logits") && (st = ss_h5_dset_info(r, "/logits", &li)) == SS_OK &&
            (st = same_rows(path, "/logits", &li, &ti)) == SS_OK && (st = rows_written(r, "/logits", &li, real)) == SS_OK)
            st = show_predictions(r, out, tok, ti.dims[0], ti.dims[1], li.dims[2], tokens, lens, max_prompts);
        if (st) goto out;
        if (ss_h5_exists(r, "/loss")) { /* forward --loss: [N] */
            float *loss = NULL;
            const size_t nl = (size_t)ti.dims[0]; /* one per prompt, checked before reading */
            if ((st = ss_h5_read_want(r, "/loss", SS_H5_F32, nl, (void **)&loss, NULL))) goto out;
            double sum = 0;
            int64_t k = 0;
            fprintf(out, "\nloss (mean next-token cross-entropy, nats):");
            for (size_t i = 0; i < nl; i++) {
                if ((int64_t)i < max_prompts) fprintf(out, " %.3f", loss[i]);
                if (!isnan(loss[i])) sum += loss[i], k++;
            }
            fprintf(out, "%s\n  mean %.4f over %lld prompts%s\n", (int64_t)nl > max_prompts ? " ..." : "",
                    k ? sum / (double)k : NAN, (long long)k, k < (int64_t)nl ? " (one-token prompts have none)" : "");
            free(loss);
        }
        int header = 0;
        for (size_t i = 0; i < np; i++) {
            size_t pl = strlen(paths[i]);
            if (strncmp(paths[i], "/acts/", 6) || pl < 14 || strcmp(paths[i] + pl - 14, ".mlp.hook_post")) continue;
            ss_h5_info in;
            if ((st = ss_h5_dset_info(r, paths[i], &in)) || (st = same_rows(path, paths[i], &in, &ti)) ||
                (st = rows_written(r, paths[i], &in, real)))
                goto out;
            if (!header++) fprintf(out, "\nMLP neurons:\n");
            if ((st = show_neurons(r, out, paths[i], &in, lens))) goto out;
        }
    }
    if ((st = show_attributions(r, out, path, paths, np, &pg))) {
        progress_stop(&pg);
        goto out;
    }
    if ((st = show_patch_effects(r, out, path, paths, np))) goto out;
    /* collect files: the share of variance the top principal components explain. */
    int header = 0;
    for (size_t i = 0; i < np; i++) {
        const char *suffix = "/pca/explained_variance_ratio";
        size_t pl = strlen(paths[i]), sl = strlen(suffix);
        if (pl <= sl || strcmp(paths[i] + pl - sl, suffix)) continue;
        double *ratio = NULL;
        size_t k;
        if ((st = ss_h5_dset_written(r, paths[i])) || (st = ss_h5_read_f64(r, paths[i], &ratio, &k, NULL))) goto out;
        if (!header++) fprintf(out, "\nprincipal components (share of variance, largest first):\n");
        double cum = 0;
        fprintf(out, "  %.*s:", (int)(pl - sl), paths[i]);
        for (size_t q = 0; q < k && q < 6; q++) fprintf(out, " %.3f", ratio[q]);
        for (size_t q = 0; q < k; q++) cum += ratio[q];
        fprintf(out, "%s  (top %zu: %.1f%%)\n", k > 6 ? " ..." : "", k, 100 * cum);
        free(ratio);
    }
out:
    ss_h5_free_names(paths, np);
    free(tokens);
    free(lens);
    ss_tokenizer_free(tok);
    ss_h5_close_read(r);
    return st;
}
