/* subscope train: a GPT-2 trained from scratch with the engine's own
 * backward pass, written as a Hugging Face directory.
 *
 * Every input is checked before anything is written; the directory's files
 * are staged under temporary names and renamed only once all of them are
 * complete, so a failed run leaves no file that looks like a model. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "subscope/backend.h"
#include "subscope/backward.h"
#include "subscope/bpe_train.h"
#include "subscope/json.h"
#include "subscope/prompts.h"
#include "subscope/train.h"
#include "subscope/util.h"
#include "subscope/version.h"

/* ---- config.json: the given one, re-serialised, with what Hugging Face needs ---- */


static void put_json_number(FILE *f, const ss_json *v) {
    if (v->is_int) {
        fprintf(f, "%lld", (long long)v->i);
        return;
    }
    /* The shortest form that reads back as the same double, kept a float for Python. */
    char b[40];
    snprintf(b, sizeof b, "%.15g", v->num);
    if (strtod(b, NULL) != v->num) snprintf(b, sizeof b, "%.17g", v->num);
    if (!strpbrk(b, ".eE")) strcat(b, ".0");
    fputs(b, f);
}

static void put_json(FILE *f, const ss_json *v) {
    switch (v->type) {
    case SS_JSON_NULL: fputs("null", f); break;
    case SS_JSON_BOOL: fputs(v->boolean ? "true" : "false", f); break;
    case SS_JSON_NUMBER: put_json_number(f, v); break;
    case SS_JSON_STRING: ss_json_write_str(f, v->str, v->len); break;
    case SS_JSON_ARRAY:
        fputc('[', f);
        for (size_t i = 0; i < v->len; i++) {
            if (i) fputs(", ", f);
            put_json(f, &v->items[i]);
        }
        fputc(']', f);
        break;
    case SS_JSON_OBJECT:
        fputc('{', f);
        for (size_t i = 0; i < v->len; i++) {
            if (i) fputs(", ", f);
            ss_json_write_str(f, v->keys[i], v->key_lens[i]);
            fputs(": ", f);
            put_json(f, &v->items[i]);
        }
        fputc('}', f);
        break;
    }
}

/* The given config's members in their order, minus those we set, then
 * model_type, architectures and tie_word_embeddings (and the tokenizer's
 * end-of-text id as bos/eos when the config names none). */
static ss_status config_text(const ss_json *root, const ss_config *cfg, int32_t eos, char **out, size_t *len) {
    static const char *const ours[] = {"model_type", "architectures", "tie_word_embeddings"};
    FILE *f = open_memstream(out, len);
    if (!f) return ss_errorf(SS_ERR_NOMEM, "out of memory for config.json");
    fputs("{\n", f);
    for (size_t i = 0; i < root->len; i++) {
        int skip = 0;
        for (int k = 0; k < 3; k++) skip |= !strcmp(root->keys[i], ours[k]);
        if (skip) continue;
        fputs("  ", f);
        ss_json_write_str(f, root->keys[i], root->key_lens[i]);
        fputs(": ", f);
        put_json(f, &root->items[i]);
        fputs(",\n", f);
    }
    if (eos >= 0 && !ss_json_get(root, "bos_token_id")) fprintf(f, "  \"bos_token_id\": %d,\n", eos);
    if (eos >= 0 && !ss_json_get(root, "eos_token_id")) fprintf(f, "  \"eos_token_id\": %d,\n", eos);
    fprintf(f, "  \"model_type\": \"gpt2\",\n  \"architectures\": [\"GPT2LMHeadModel\"],\n"
               "  \"tie_word_embeddings\": %s\n}\n", cfg->tie_word_embeddings ? "true" : "false");
    if (fclose(f) != 0) return ss_errorf(SS_ERR_NOMEM, "out of memory for config.json");
    return SS_OK;
}

/* ---- files ---- */

static ss_status write_file(const char *path, const char *data, size_t len) {
    FILE *f = fopen(path, "wb");
    if (!f) return ss_errorf(SS_ERR_IO, "%s: cannot create: %s", path, strerror(errno));
    int ok = fwrite(data, 1, len, f) == len && fflush(f) == 0 && ss_fsync(fileno(f)) == 0;
    int err = errno;
    if (fclose(f) != 0 && ok) ok = 0, err = errno;
    if (!ok) {
        unlink(path);
        return ss_errorf(SS_ERR_IO, "%s: write failed: %s", path, strerror(err));
    }
    return SS_OK;
}

/* Files staged in the output directory under temporary names. */
#define MAX_STAGED 8
typedef struct {
    char *tmp[MAX_STAGED], *final[MAX_STAGED], *dest[MAX_STAGED]; /* dest: final, or the file it links to */
    int n;
} staging;

/* Every name that write_output may give a file in the output directory: the
 * input check (check_inputs_not_replaced) reads this list, and stage() refuses
 * a name not on it, so the two cannot drift apart. */
static const char *const written_names[] = {"model.safetensors", "config.json",   "tokenizer.json",
                                            "vocab.json",        "merges.txt",    "tokenizer_config.json",
                                            "special_tokens_map.json", "subscope_train.json"};

static ss_status stage(staging *sg, const char *dir, const char *name, char **tmp_out) {
    int listed = 0;
    for (size_t k = 0; k < sizeof written_names / sizeof *written_names; k++) listed |= !strcmp(name, written_names[k]);
    if (!listed) return ss_errorf(SS_ERR_INTERNAL, "%s: an output file missing from written_names", name);
    if (sg->n == MAX_STAGED) return ss_errorf(SS_ERR_INTERNAL, "too many output files");
    /* DIR/.NAME.tmp.<host>.<pid>, or where DIR/NAME is a symbolic link, the same beside the file
     * it names, which is replaced, not the link (ss_out_target); a killed run's leftovers go first */
    char *fin = ss_path_join(dir, name), *dest = NULL, *hidden = NULL, *tmp = NULL;
    ss_status st = fin ? ss_out_target(fin, &dest) : SS_ERR_NOMEM;
    if (!st) {
        const char *slash = strrchr(dest, '/');
        hidden = slash ? ss_strfmt("%.*s/.%s", (int)(slash - dest), dest, slash + 1) : ss_strfmt(".%s", dest);
    }
    if (hidden && (tmp = ss_tmp_name(hidden))) ss_tmp_sweep(hidden);
    free(hidden);
    if (st || !tmp) {
        free(fin), free(dest), free(tmp);
        return st ? st : SS_ERR_NOMEM;
    }
    sg->final[sg->n] = fin, sg->dest[sg->n] = dest, sg->tmp[sg->n] = tmp, sg->n++;
    ss_tmp_register(tmp); /* removed if a signal stops the process */
    *tmp_out = tmp;
    return SS_OK;
}

static void staging_free(staging *sg, int remove_tmp) {
    for (int i = 0; i < sg->n; i++) {
        if (remove_tmp) unlink(sg->tmp[i]);
        ss_tmp_unregister(sg->tmp[i]);
        free(sg->tmp[i]), free(sg->final[i]), free(sg->dest[i]);
    }
    sg->n = 0;
}

/* The tokenizer files of dir as a Hugging Face directory names them:
 * tokenizer.json if there is one, else the vocab/merges pair. */
typedef struct {
    const char *from, *to;
} tok_file;
static const tok_file tok_files[] = {
    {"tokenizer.json", "tokenizer.json"},     {"vocab.json", "vocab.json"},
    {"encoder.json", "vocab.json"},           {"merges.txt", "merges.txt"},
    {"vocab.bpe", "merges.txt"},              {"tokenizer_config.json", "tokenizer_config.json"},
    {"special_tokens_map.json", "special_tokens_map.json"},
};

static ss_status copy_tokenizer(staging *sg, const char *src_dir, const char *out_dir) {
    char *tj = ss_path_join(src_dir, "tokenizer.json");
    if (!tj) return SS_ERR_NOMEM;
    const int has_json = ss_file_exists(tj);
    free(tj);
    int have_vocab = 0, have_merges = 0;
    for (size_t i = 0; i < sizeof tok_files / sizeof *tok_files; i++) {
        const tok_file *t = &tok_files[i];
        int is_pair = !strcmp(t->to, "vocab.json") || !strcmp(t->to, "merges.txt");
        if (is_pair && (has_json || (!strcmp(t->to, "vocab.json") ? have_vocab : have_merges))) continue;
        char *src = ss_path_join(src_dir, t->from), *data = NULL, *tmp;
        size_t len;
        if (!src) return SS_ERR_NOMEM;
        ss_status st = SS_OK;
        if (ss_file_exists(src)) {
            if (!(st = ss_file_read(src, &data, &len)) && !(st = stage(sg, out_dir, t->to, &tmp)))
                st = write_file(tmp, data, len);
            if (!st && !strcmp(t->to, "vocab.json")) have_vocab = 1;
            if (!st && !strcmp(t->to, "merges.txt")) have_merges = 1;
        }
        free(src);
        free(data);
        if (st) return st;
    }
    return SS_OK;
}

/* ---- the schedule and the optimizer ---- */

/* Linear warm-up to lr over `warmup` steps, then a cosine from lr down to
 * lr/10 at the last step. */
static double lr_at(int64_t step, int64_t steps, int64_t warmup, double lr) {
    if (step < warmup) return lr * (double)(step + 1) / (double)warmup;
    const double lo = 0.1 * lr;
    const int64_t span = steps - warmup - 1;
    const double p = span > 0 ? (double)(step - warmup) / (double)span : 1.0;
    return lo + 0.5 * (lr - lo) * (1.0 + cos(3.14159265358979323846 * p));
}

typedef struct {
    ss_param *p, *g, *dev;      /* host weights, gradients, weights as the backend sees them */
    int np;
    size_t *off, total;         /* each tensor's offset into the flat host arrays */
    float *m1, *m2, *hgrad;     /* Adam moments; gradients copied to the host (device backends) */
} optim;

/* One AdamW step (betas 0.9/0.95, eps 1e-8) on gradients of the SUM of
 * n_seq sequence losses: they are divided by n_seq first, then clipped to a
 * global norm of `clip`. Returns the norm before clipping. */
static ss_status adamw_step(optim *o, const ss_backend *be, int64_t t, double lr, double wd, double clip,
                            int64_t n_seq, double *norm_out) {
    const double b1 = 0.9, b2 = 0.95, eps = 1e-8;
    const double inv = 1.0 / (double)n_seq;
    const float **gr = malloc((size_t)o->np * sizeof *gr);
    if (!gr) return ss_errorf(SS_ERR_NOMEM, "out of memory");
    ss_status st = SS_OK;
    for (int i = 0; i < o->np; i++) {
        if (be->host_memory) {
            gr[i] = *o->g[i].slot;
        } else {
            float *h = o->hgrad + o->off[i];
            if ((st = be->download(be, h, *o->g[i].slot, o->g[i].count * sizeof(float)))) goto out;
            gr[i] = h;
        }
    }
    double ss = 0;
    for (int i = 0; i < o->np; i++)
        for (size_t j = 0; j < o->p[i].count; j++) {
            double x = (double)gr[i][j] * inv;
            ss += x * x;
        }
    const double norm = sqrt(ss);
    *norm_out = norm;
    if (!isfinite(norm)) {
        st = ss_errorf(SS_ERR_ARG, "the gradient is not finite at step %lld (try a smaller --lr)", (long long)t);
        goto out;
    }
    const double scale = inv * (clip > 0 && norm > clip ? clip / norm : 1.0);
    const double c1 = 1.0 - pow(b1, (double)t), c2 = 1.0 - pow(b2, (double)t);
    for (int i = 0; i < o->np; i++) {
        float *w = (float *)*o->p[i].slot, *m1 = o->m1 + o->off[i], *m2 = o->m2 + o->off[i];
        const double shrink = o->p[i].decay ? 1.0 - lr * wd : 1.0;
        for (size_t j = 0; j < o->p[i].count; j++) {
            const double g = (double)gr[i][j] * scale;
            const double a = b1 * m1[j] + (1 - b1) * g, b = b2 * m2[j] + (1 - b2) * g * g;
            m1[j] = (float)a, m2[j] = (float)b;
            w[j] = (float)(w[j] * shrink - lr * (a / c1) / (sqrt(b / c2) + eps));
        }
        if (!be->host_memory &&
            (st = be->upload(be, (void *)*o->dev[i].slot, w, o->p[i].count * sizeof(float))))
            goto out;
    }
out:
    free(gr);
    return st;
}

/* ---- the job ---- */

/* An input (--config, --data) that is one of the files the output directory will
 * receive would be replaced: refused, however the paths are spelt. (The CLI refuses an
 * --out that is an input itself; this is the case of a file inside it.) */
static ss_status check_inputs_not_replaced(const ss_train_job *job) {
    const char *inputs[][2] = {{"--config", job->config}, {"--data", job->data}};
    for (size_t i = 0; i < sizeof inputs / sizeof *inputs; i++) {
        struct stat si, so;
        if (!inputs[i][1] || stat(inputs[i][1], &si) != 0) continue;
        for (size_t k = 0; k < sizeof written_names / sizeof *written_names; k++) {
            char *p = ss_path_join(job->out, written_names[k]);
            if (!p) return SS_ERR_NOMEM;
            const int same = stat(p, &so) == 0 && so.st_dev == si.st_dev && so.st_ino == si.st_ino;
            free(p);
            if (same)
                return ss_errorf(SS_ERR_ARG, "%s %s is the %s that --out %s would replace", inputs[i][0], inputs[i][1],
                                 written_names[k], job->out);
        }
    }
    return SS_OK;
}

/* *target: the folder the files go in, --out or the folder a symbolic link there names (one to
 * create where the link dangles: ss_out_target). */
static ss_status check_out_dir(const ss_train_job *job, int *exists, char **target) {
    const char *out = job->out;
    struct stat sb;
    *exists = 0;
    if (!out || !*out) return ss_errorf(SS_ERR_ARG, "no output directory given");
    SS_TRY(ss_out_target(out, target));
    if (stat(out, &sb) == 0) {
        if (!S_ISDIR(sb.st_mode)) return ss_errorf(SS_ERR_ARG, "%s exists and is not a directory", out);
        *exists = 1;
        /* Some loaders (vLLM) read a sharded model's index before model.safetensors, so
         * they would never load the trained weights (transformers and subscope read
         * model.safetensors first): a directory holding both is ambiguous. */
        char *idx = ss_path_join(out, "model.safetensors.index.json");
        if (!idx) return SS_ERR_NOMEM;
        const int sharded = ss_file_exists(idx);
        free(idx);
        if (sharded)
            return ss_errorf(SS_ERR_ARG, "%s holds model.safetensors.index.json, which loaders read before the model.safetensors "
                                         "train writes (use a new or empty --out)", out);
        /* A name train writes that is a folder (or a device, a FIFO) would fail its rename only
         * after the whole run (the files renamed before it then put back): refused now. */
        for (size_t k = 0; k < sizeof written_names / sizeof *written_names; k++) {
            char *p = ss_path_join(out, written_names[k]);
            if (!p) return SS_ERR_NOMEM;
            const int bad = stat(p, &sb) == 0 && !S_ISREG(sb.st_mode);
            char *dest = NULL; /* a symbolic link there is written through: one whose target's folder is gone fails now */
            ss_status st = bad ? ss_errorf(SS_ERR_ARG, "%s is not a file, and train writes %s there", p, written_names[k])
                               : ss_out_target(p, &dest);
            free(p), free(dest);
            if (st) return st;
        }
        return check_inputs_not_replaced(job);
    }
    char *parent = ss_strdup(*target);
    if (!parent) return SS_ERR_NOMEM;
    size_t n = strlen(parent);
    while (n > 1 && parent[n - 1] == '/') parent[--n] = 0;
    char *slash = strrchr(parent, '/');
    const char *pd = slash ? (slash == parent ? "/" : (*slash = 0, parent)) : ".";
    ss_status st = SS_OK;
    if (stat(pd, &sb) != 0 || !S_ISDIR(sb.st_mode))
        st = ss_errorf(SS_ERR_ARG, "cannot create %s: %s is not a directory", out, pd);
    else if (access(pd, W_OK) != 0)
        st = ss_errorf(SS_ERR_IO, "cannot create %s: %s is not writable", out, pd);
    free(parent);
    return st;
}

typedef struct {
    const ss_train_job *job;
    int64_t steps, B, T, warmup, log_every;
    double lr, wd, clip;
    ss_config cfg;
    ss_json_doc *cfg_doc;
    ss_tokenizer *tok;
    char *trained_text[3];        /* trained tokenizer: tokenizer.json, vocab.json, merges.txt */
    size_t trained_len[3];
    int32_t tok_merges;
    double tok_seconds;
    int32_t *stream;
    int64_t n_tokens, n_win, n_train, n_val;
    ss_backend *be;
    int owns_be;
    ss_model *m;
    ss_gpt2_weights g;
    optim o;
    int32_t *toks;
    int64_t *start, *len, *order;
    double *met;
} trainer;

/* Trains the byte-level BPE tokenizer of --vocab-size ids on the documents
 * and loads it from the tokenizer.json it will be written as, so the model
 * is trained on exactly the ids that file gives. */
static ss_status train_tokenizer(trainer *t, const ss_prompts *p) {
    const ss_train_job *j = t->job;
    const int32_t V = (int32_t)j->vocab_size;
    const double t0 = ss_now();
    ss_bpe_trainer *bt = NULL;
    ss_bpe_model *m = NULL;
    ss_status st = ss_bpe_trainer_init(&bt);
    for (int64_t i = 0; !st && i < p->n; i++) {
        const ss_prompt *it = &p->items[i];
        if (!it->text)
            st = ss_errorf(SS_ERR_ARG, "%s:%lld: --vocab-size trains the tokenizer on text, but this line gives token ids",
                           p->path, (long long)it->line);
        else if ((st = ss_bpe_trainer_add(bt, it->text, strlen(it->text))))
            st = ss_error_context(st, "%s:%lld", p->path, (long long)it->line);
    }
    if (!st) st = ss_bpe_trainer_train(bt, V, &m);
    if (!st && m->n_tokens < V)
        st = ss_errorf(SS_ERR_ARG,
                       "%s: the data yields only %d tokens (%d merges) before no pair of symbols is left to merge; "
                       "use --vocab-size %d or less (and the same vocab_size in %s), or more data",
                       j->data, m->n_tokens, m->n_merges, m->n_tokens, j->config);
    if (!st) st = ss_bpe_model_tokenizer_json(m, &t->trained_text[0], &t->trained_len[0]);
    if (!st) st = ss_bpe_model_vocab_json(m, &t->trained_text[1], &t->trained_len[1]);
    if (!st) st = ss_bpe_model_merges_txt(m, &t->trained_text[2], &t->trained_len[2]);
    if (!st) st = ss_tokenizer_load_json_mem(t->trained_text[0], t->trained_len[0], "trained tokenizer.json", &t->tok);
    if (!st) {
        int64_t distinct, words, bytes;
        ss_bpe_trainer_stats(bt, &distinct, &words, &bytes);
        t->tok_merges = m->n_merges;
        t->tok_seconds = ss_now() - t0;
        if (j->log)
            fprintf(j->log, "tokenizer: %d ids (%d merges) trained on %.2f MB (%lld words, %lld distinct) in %.2f s\n",
                    m->n_tokens, m->n_merges, (double)bytes / 1e6, (long long)words, (long long)distinct,
                    t->tok_seconds);
    }
    ss_bpe_model_free(m);
    ss_bpe_trainer_free(bt);
    return st;
}

static ss_status read_inputs(trainer *t) {
    const ss_train_job *j = t->job;
    if (!j->config) return ss_errorf(SS_ERR_ARG, "no config given (--config)");
    if (!j->data) return ss_errorf(SS_ERR_ARG, "no data given (--data)");
    if (j->steps < 1) return ss_errorf(SS_ERR_ARG, "--steps must be at least 1 (got %lld)", (long long)j->steps);
    t->steps = j->steps;
    t->B = j->batch > 0 ? j->batch : 8;
    t->lr = j->lr > 0 ? j->lr : 1e-3;
    t->warmup = j->warmup >= 0 ? j->warmup : (t->steps / 10 < 100 ? t->steps / 10 : 100);
    t->wd = j->weight_decay >= 0 ? j->weight_decay : 0.1;
    t->clip = j->clip >= 0 ? j->clip : 1.0;
    t->log_every = j->log_every > 0 ? j->log_every : 10;
    if (!isfinite(t->lr) || t->lr > 10) return ss_errorf(SS_ERR_ARG, "--lr %g is out of range", j->lr);
    if (!isfinite(t->wd) || t->wd * t->lr >= 1)
        return ss_errorf(SS_ERR_ARG, "--weight-decay %g times --lr %g must be below 1", t->wd, t->lr);
    if (!isfinite(t->clip)) return ss_errorf(SS_ERR_ARG, "--clip must be finite");

    char *text;
    size_t tl;
    SS_TRY(ss_input_read(j->config, &text, &tl));
    ss_status st = ss_json_parse(text, tl, j->config, &t->cfg_doc);
    /* What is trained is a GPT-2 whatever the file says, so a config that names no model type is read as one. */
    if (!st) st = ss_config_parse_gpt2_default(text, tl, j->config, &t->cfg);
    free(text);
    if (st) return st;
    if (t->cfg.family != SS_FAMILY_GPT2)
        return ss_errorf(SS_ERR_ARG, "%s: model_type \"%s\": train trains GPT-2 models only (model_type \"gpt2\", or none)",
                         j->config, t->cfg.arch);
    t->T = j->seq > 0 ? j->seq : t->cfg.n_positions;
    if (t->T < 2 || t->T > t->cfg.n_positions)
        return ss_errorf(SS_ERR_ARG, "--seq %lld must be between 2 and the config's n_positions %lld", (long long)t->T,
                         (long long)t->cfg.n_positions);

    if (j->tokenizer && j->vocab_size > 0)
        return ss_errorf(SS_ERR_ARG, "give --tokenizer DIR or --vocab-size V (train one), not both");
    if (j->vocab_size > 0) {
        if (j->vocab_size < SS_BPE_MIN_VOCAB || j->vocab_size > INT32_MAX)
            return ss_errorf(SS_ERR_ARG, "--vocab-size %lld must be at least %d (<|endoftext|> and the 256 bytes)",
                             (long long)j->vocab_size, SS_BPE_MIN_VOCAB);
        /* The trained tokenizer has exactly V ids, and config.json is written
         * as given, so the two must agree rather than one silently winning. */
        if (t->cfg.vocab_size != j->vocab_size)
            return ss_errorf(SS_ERR_ARG, "%s: vocab_size %lld differs from --vocab-size %lld (set them equal)", j->config,
                             (long long)t->cfg.vocab_size, (long long)j->vocab_size);
    }
    if (j->tokenizer) {
        SS_TRY(ss_tokenizer_load_dir(j->tokenizer, &t->tok));
        int32_t tv = ss_tokenizer_vocab_size(t->tok);
        if (tv > t->cfg.vocab_size)
            return ss_errorf(SS_ERR_ARG, "%s: vocab_size %lld is smaller than the tokenizer's %d ids (%s)", j->config,
                             (long long)t->cfg.vocab_size, tv, j->tokenizer);
    }

    ss_prompts *p = NULL;
    SS_TRY(ss_prompts_read(j->data, &p));
    if (j->vocab_size > 0 && (st = train_tokenizer(t, p))) {
        ss_prompts_free(p);
        return st;
    }
    if ((st = ss_prompts_tokenize(p, t->tok, t->cfg.vocab_size, INT64_MAX, 0, NULL))) {
        /* (the context only where the culprit is text: an id out of range is no missing tokenizer) */
        int has_text = 0;
        for (int64_t i = 0; !t->tok && i < p->n && !has_text; i++) has_text = !p->items[i].tokens;
        if (has_text) st = ss_error_context(st, "without --tokenizer the data must be JSONL token ids");
        ss_prompts_free(p);
        return st;
    }
    /* Documents are joined into one stream, each followed by the end-of-text token when there is one. */
    const int32_t eos = t->tok ? ss_tokenizer_eos_id(t->tok) : -1;
    int64_t n = 0;
    for (int64_t i = 0; i < p->n; i++) n += p->items[i].n_tokens + (eos >= 0);
    t->stream = ss_malloc((size_t)n * sizeof(int32_t), "token stream");
    if (!t->stream) {
        ss_prompts_free(p);
        return SS_ERR_NOMEM;
    }
    for (int64_t i = 0; i < p->n; i++) {
        memcpy(t->stream + t->n_tokens, p->items[i].tokens, (size_t)p->items[i].n_tokens * sizeof(int32_t));
        t->n_tokens += p->items[i].n_tokens;
        if (eos >= 0) t->stream[t->n_tokens++] = eos;
    }
    ss_prompts_free(p);
    t->n_win = t->n_tokens / t->T;
    if (t->n_win < 1)
        return ss_errorf(SS_ERR_ARG, "%s: %lld tokens, fewer than one window of --seq %lld", j->data,
                         (long long)t->n_tokens, (long long)t->T);
    /* The last 5% of the windows are held out (none when there are fewer than 20). */
    t->n_val = t->n_win / 20;
    t->n_train = t->n_win - t->n_val;
    return SS_OK;
}

static ss_status open_model(trainer *t) {
    const ss_train_job *j = t->job;
    ss_status st;
    if (j->backend) {
        t->be = j->backend;
    } else {
        if ((st = ss_backend_open(j->device ? j->device : "auto", NULL, &t->be))) return st;
        t->owns_be = 1;
    }
    if (!t->be->softmax_xent || !t->be->attention_backward) {
        if (j->device || j->backend)
            return ss_errorf(SS_ERR_UNSUPPORTED, "backend %s has no backward pass in this build; train with --device cpu",
                             t->be->name);
        /* auto picked a GPU this build cannot train on yet: fall back to the CPU. */
        if (j->log) fprintf(j->log, "train: %s has no backward pass yet; training on the cpu\n", t->be->name);
        ss_backend_close(t->be);
        t->be = (ss_backend *)ss_backend_cpu();
        t->owns_be = 0;
    }
    SS_TRY(ss_model_create(&t->cfg, &t->m));
    ss_model_init_gpt2(t->m, j->seed);
    SS_TRY(ss_model_place(t->m, t->be, SS_WDTYPE_F32));
    SS_TRY(ss_grads_alloc(t->m, t->be, &t->g));

    optim *o = &t->o;
    o->np = ss_gpt2_param_count(&t->cfg);
    o->p = ss_calloc((size_t)o->np, sizeof *o->p, "parameter list");
    o->g = ss_calloc((size_t)o->np, sizeof *o->g, "parameter list");
    o->dev = ss_calloc((size_t)o->np, sizeof *o->dev, "parameter list");
    o->off = ss_calloc((size_t)o->np, sizeof *o->off, "parameter list");
    if (!o->p || !o->g || !o->dev || !o->off) return SS_ERR_NOMEM;
    ss_gpt2_params(&t->cfg, &t->m->w, o->p);
    ss_gpt2_params(&t->cfg, &t->g, o->g);
    ss_gpt2_params(&t->cfg, (ss_gpt2_weights *)ss_model_weights(t->m, t->be), o->dev);
    for (int i = 0; i < o->np; i++) o->off[i] = o->total, o->total += o->p[i].count;
    o->m1 = ss_calloc(o->total, sizeof(float), "Adam moments");
    o->m2 = ss_calloc(o->total, sizeof(float), "Adam moments");
    if (!o->m1 || !o->m2) return SS_ERR_NOMEM;
    if (!t->be->host_memory && !(o->hgrad = ss_malloc(o->total * sizeof(float), "gradients on the host")))
        return SS_ERR_NOMEM;

    t->toks = ss_malloc((size_t)(t->B * t->T) * sizeof(int32_t), "batch");
    t->start = ss_malloc((size_t)t->B * sizeof(int64_t), "batch");
    t->len = ss_malloc((size_t)t->B * sizeof(int64_t), "batch");
    t->met = ss_malloc((size_t)t->B * sizeof(double), "batch");
    t->order = ss_malloc((size_t)t->n_train * sizeof(int64_t), "window order");
    if (!t->toks || !t->start || !t->len || !t->met || !t->order) return SS_ERR_NOMEM;
    for (int64_t b = 0; b < t->B; b++) t->start[b] = b * t->T, t->len[b] = t->T;
    return SS_OK;
}

/* Mean loss of windows [w0, w0+n) in batches of B, no gradients. */
static ss_status eval_loss(trainer *t, int64_t w0, int64_t n, double *out) {
    const ss_metric mt = {SS_METRIC_LOSS, NULL, NULL};
    double sum = 0;
    for (int64_t b0 = 0; b0 < n; b0 += t->B) {
        int64_t nb = n - b0 < t->B ? n - b0 : t->B;
        memcpy(t->toks, t->stream + (w0 + b0) * t->T, (size_t)(nb * t->T) * sizeof(int32_t));
        ss_packing pk = {nb, nb * t->T, t->start, t->len, 0};
        SS_TRY(ss_forward_backward(t->m, t->be, t->toks, &pk, NULL, &mt, NULL, t->met));
        for (int64_t s = 0; s < nb; s++) sum += t->met[s];
    }
    *out = sum / (double)n;
    return SS_OK;
}

static ss_status train_loop(trainer *t, ss_train_result *res) {
    const ss_train_job *j = t->job;
    const ss_metric mt = {SS_METRIC_LOSS, NULL, NULL};
    ss_grad_opts go = {.wgrad = &t->g};
    /* Batches walk through seeded shuffles of the training windows, a new one each epoch. */
    ss_rng rng;
    ss_rng_seed(&rng, j->seed ^ 0xda7a5eedULL);
    int64_t pos = t->n_train;
    double t0 = ss_now(), tlog = t0;
    int64_t tok_since = 0;
    if (j->log)
        fprintf(j->log, "train: %lld parameters, %lld tokens = %lld windows of %lld (%lld held out), %lld steps of %lld "
                        "windows on %s\n",
                (long long)t->m->n_params, (long long)t->n_tokens, (long long)t->n_win, (long long)t->T,
                (long long)t->n_val, (long long)t->steps, (long long)t->B, t->be->name);
    for (int64_t s = 0; s < t->steps; s++) {
        for (int64_t b = 0; b < t->B; b++) {
            if (pos == t->n_train) {
                for (int64_t i = 0; i < t->n_train; i++) t->order[i] = i;
                for (int64_t i = t->n_train - 1; i > 0; i--) {
                    int64_t k = (int64_t)ss_rng_below(&rng, (uint64_t)i + 1), x = t->order[i];
                    t->order[i] = t->order[k], t->order[k] = x;
                }
                pos = 0;
            }
            memcpy(t->toks + b * t->T, t->stream + t->order[pos++] * t->T, (size_t)t->T * sizeof(int32_t));
        }
        for (int i = 0; i < t->o.np; i++)
            SS_TRY(t->be->zero(t->be, (void *)*t->o.g[i].slot, t->o.g[i].count * sizeof(float)));
        ss_packing pk = {t->B, t->B * t->T, t->start, t->len, 0};
        SS_TRY(ss_forward_backward(t->m, t->be, t->toks, &pk, NULL, &mt, &go, t->met));
        double loss = 0, norm = 0;
        for (int64_t b = 0; b < t->B; b++) loss += t->met[b];
        loss /= (double)t->B;
        if (!isfinite(loss))
            return ss_errorf(SS_ERR_ARG, "the loss is not finite at step %lld (try a smaller --lr)", (long long)s + 1);
        const double lr = lr_at(s, t->steps, t->warmup, t->lr);
        SS_TRY(adamw_step(&t->o, t->be, s + 1, lr, t->wd, t->clip, t->B, &norm));
        if (j->losses) j->losses[s] = loss;
        if (s == 0) res->first_loss = loss;
        res->last_loss = loss;
        tok_since += t->B * t->T;
        if (j->log && (s == 0 || (s + 1) % t->log_every == 0 || s + 1 == t->steps)) {
            double now = ss_now();
            fprintf(j->log, "step %6lld/%lld  loss %.4f  lr %.3e  grad norm %.4f  %.0f tok/s\n", (long long)s + 1,
                    (long long)t->steps, loss, lr, norm, (double)tok_since / (now - tlog > 1e-9 ? now - tlog : 1e-9));
            fflush(j->log);
            tlog = now, tok_since = 0;
        }
    }
    if (!t->be->host_memory) SS_TRY(t->be->sync(t->be));
    res->val_loss = NAN;
    if (t->n_val) {
        SS_TRY(eval_loss(t, t->n_train, t->n_val, &res->val_loss));
        if (j->log) fprintf(j->log, "held-out loss %.4f (%lld windows)\n", res->val_loss, (long long)t->n_val);
    }
    res->seconds = ss_now() - t0;
    res->tokenizer_seconds = t->tok_seconds;
    res->n_tokens = t->n_tokens, res->n_train_windows = t->n_train, res->n_val_windows = t->n_val;
    return SS_OK;
}

static ss_status provenance_text(const trainer *t, const ss_train_result *r, char **out, size_t *len) {
    const ss_train_job *j = t->job;
    FILE *f = open_memstream(out, len);
    if (!f) return ss_errorf(SS_ERR_NOMEM, "out of memory");
    fprintf(f, "{\n  \"subscope_version\": ");
    ss_json_write_str(f, ss_version(), strlen(ss_version()));
    fprintf(f, ",\n  \"git_commit\": ");
    ss_json_write_str(f, ss_git_commit(), strlen(ss_git_commit()));
    const char *strs[][2] = {{"command_line", j->command_line}, {"config", j->config}, {"data", j->data},
                             {"tokenizer", j->tokenizer}, {"device", t->be->name}};
    for (size_t i = 0; i < sizeof strs / sizeof *strs; i++) {
        fprintf(f, ",\n  \"%s\": ", strs[i][0]);
        if (strs[i][1]) ss_json_write_str(f, strs[i][1], strlen(strs[i][1]));
        else fputs("null", f);
    }
    fprintf(f, ",\n  \"trained_tokenizer\": ");
    if (t->trained_text[0])
        fprintf(f, "{\"type\": \"byte-level BPE\", \"vocab_size\": %lld, \"merges\": %d, \"seconds\": %.2f}",
                (long long)j->vocab_size, t->tok_merges, t->tok_seconds);
    else
        fputs("null", f);
    fprintf(f, ",\n  \"seed\": %llu,\n  \"steps\": %lld,\n  \"batch\": %lld,\n  \"seq\": %lld,\n  \"lr\": %.9g,\n"
               "  \"warmup\": %lld,\n  \"schedule\": \"linear warm-up, cosine to 0.1*lr\",\n"
               "  \"optimizer\": \"AdamW betas [0.9, 0.95] eps 1e-8, decoupled decay on attn/mlp matrices only\",\n"
               "  \"weight_decay\": %.9g,\n  \"clip\": %.9g,\n  \"tokens\": %lld,\n  \"train_windows\": %lld,\n"
               "  \"val_windows\": %lld,\n  \"first_loss\": %.6f,\n  \"last_loss\": %.6f,\n  \"val_loss\": ",
            (unsigned long long)j->seed, (long long)t->steps, (long long)t->B, (long long)t->T, t->lr,
            (long long)t->warmup, t->wd, t->clip, (long long)r->n_tokens, (long long)r->n_train_windows,
            (long long)r->n_val_windows, r->first_loss, r->last_loss);
    if (isfinite(r->val_loss)) fprintf(f, "%.6f", r->val_loss);
    else fputs("null", f);
    fprintf(f, ",\n  \"seconds\": %.1f\n}\n", r->seconds);
    if (fclose(f) != 0) return ss_errorf(SS_ERR_NOMEM, "out of memory");
    return SS_OK;
}

static ss_status write_output(trainer *t, const ss_train_result *r, int dir_existed, const char *out_dir) {
    const char *out = t->job->out;
    if (!dir_existed && mkdir(out_dir, 0777) != 0 && errno != EEXIST)
        return ss_errorf(SS_ERR_IO, "cannot create %s: %s", out_dir, strerror(errno));
    if (!dir_existed) ss_tmp_register(out_dir); /* a signal removes it once its staged files are gone */
    staging sg = {0};
    char *tmp, *text = NULL;
    size_t len = 0;
    ss_status st;
    ss_signals_held held;
    ss_replace rep = {0};
    int holding = 0;
    if ((st = stage(&sg, out, "model.safetensors", &tmp)) || (st = ss_model_write_safetensors(t->m, tmp))) goto fail;
    if ((st = stage(&sg, out, "config.json", &tmp)) ||
        (st = config_text(ss_json_root(t->cfg_doc), &t->cfg, t->tok ? ss_tokenizer_eos_id(t->tok) : -1, &text, &len)) ||
        (st = write_file(tmp, text, len)))
        goto fail;
    free(text), text = NULL;
    if (t->job->tokenizer && (st = copy_tokenizer(&sg, t->job->tokenizer, out))) goto fail;
    static const char *const trained_names[3] = {"tokenizer.json", "vocab.json", "merges.txt"};
    for (int i = 0; i < 3 && t->trained_text[i]; i++)
        if ((st = stage(&sg, out, trained_names[i], &tmp)) || (st = write_file(tmp, t->trained_text[i], t->trained_len[i])))
            goto fail;
    if ((st = stage(&sg, out, "subscope_train.json", &tmp)) || (st = provenance_text(t, r, &text, &len)) ||
        (st = write_file(tmp, text, len)))
        goto fail;
    free(text), text = NULL;
    /* The files go into place, and an earlier run's go, with the signals held: one that comes
     * between two renames takes effect once all are done (or undone), not with new weights
     * beside an old config.json. A rename that fails puts the earlier run's files back
     * (ss_replace). */
    ss_signals_hold(&held), holding = 1;
    for (int i = 0; i < sg.n; i++)
        if ((st = ss_replace_file(&rep, sg.tmp[i], sg.dest[i], sg.final[i]))) {
            ss_replace_undo(&rep);
            goto fail;
        }
    ss_replace_done(&rep);
    /* A file of written_names that this run did not write is a previous run's
     * (a trained tokenizer's vocab.json beside a copied tokenizer.json, ...): it
     * would describe another model, so it goes, unless --tokenizer is this
     * directory, whose files are the tokenizer's own. */
    struct stat so, stk;
    const int tok_here = t->job->tokenizer && stat(out, &so) == 0 && stat(t->job->tokenizer, &stk) == 0 &&
                         so.st_dev == stk.st_dev && so.st_ino == stk.st_ino;
    for (size_t k = 0; !tok_here && k < sizeof written_names / sizeof *written_names; k++) {
        int written = 0;
        char *p = ss_path_join(out, written_names[k]);
        if (!p) continue; /* out of memory: the file stays, as before */
        for (int i = 0; i < sg.n; i++) written |= !strcmp(sg.final[i], p);
        if (!written && unlink(p) == 0) ss_eprintf("train: removed %s, left by an earlier run\n", p);
        free(p);
    }
    staging_free(&sg, 0);
    if (!dir_existed) ss_tmp_unregister(out_dir);
    ss_signals_release(&held);
    return SS_OK;
fail:
    free(text);
    staging_free(&sg, 1);
    if (!dir_existed) rmdir(out_dir), ss_tmp_unregister(out_dir);
    if (holding) ss_signals_release(&held);
    return st;
}

ss_status ss_job_train(const ss_train_job *job) {
    if (job->model_out) *job->model_out = NULL;
    trainer t = {.job = job};
    ss_train_result res = {0};
    int dir_existed = 0;
    char *out_dir = NULL;
    ss_status st;
    if ((st = check_out_dir(job, &dir_existed, &out_dir)) || (st = read_inputs(&t)) || (st = open_model(&t)) ||
        (st = train_loop(&t, &res)) || (st = write_output(&t, &res, dir_existed, out_dir)))
        goto done;
    if (job->result) *job->result = res;
    if (job->model_out) {
        if (t.owns_be && t.m->placed_block) {
            /* The backend closes below; the caller gets the host weights only. */
            t.be->release(t.be, t.m->placed_block);
            free(t.m->placed.layers);
            t.m->placed_block = NULL, t.m->placed_on = NULL;
            memset(&t.m->placed, 0, sizeof t.m->placed);
        }
        t.m->tok = t.tok, t.tok = NULL;
        *job->model_out = t.m, t.m = NULL;
    }
done:
    if (t.g.wte) ss_grads_free(t.be, &t.g);
    free(t.o.p), free(t.o.g), free(t.o.dev), free(t.o.off), free(t.o.m1), free(t.o.m2), free(t.o.hgrad);
    free(t.toks), free(t.start), free(t.len), free(t.met), free(t.order), free(t.stream);
    ss_model_free(t.m); /* before the backend that holds its placed weights */
    ss_tokenizer_free(t.tok);
    for (int i = 0; i < 3; i++) free(t.trained_text[i]);
    ss_json_free(t.cfg_doc);
    if (t.owns_be) ss_backend_close(t.be);
    free(out_dir);
    return st;
}
