/* The part of every model-running job that is the same: backend, model,
 * prompts, and packing prompts into batches. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "subscope/backend.h"
#include "subscope/dist.h"
#include "subscope/gguf_model.h"
#include "subscope/h5out.h"
#include "subscope/hash.h"
#include "subscope/jobs.h"
#include "subscope/util.h"

ss_status ss_model_open_stage(const ss_run_opts *o, ss_model **out) {
    const char *model_dir = o->model_dir, *blocks = o->pipeline_blocks;
    const int pipeline = o->pipeline, replicas = o->pipeline_replicas;
    const int64_t max_memory = o->max_memory;
    ss_comm *world = NULL, *pipe = NULL;
    int first = 0, end = -1, first_of[4097];
    *out = NULL;
    if (blocks && pipeline <= 1)
        return ss_errorf(SS_ERR_ARG, "--pipeline-blocks '%s' splits a pipeline: give --pipeline P of 2 or more stages too", blocks);
    if (pipeline > 1) {
        SS_TRY(ss_comm_world(&world));
        const int size = ss_comm_size(world);
        if (size != pipeline && !(replicas && size % pipeline == 0))
            return ss_errorf(SS_ERR_ARG, "--pipeline %d needs %s %d ranks (one per stage), but the job has %d%s", pipeline,
                             replicas ? "a multiple of" : "exactly", pipeline, size,
                             !replicas && size % pipeline == 0
                                 ? " (copies of a pipeline side by side are for forward, collect, ablate, attribute and patch)"
                                 : "");
        /* A GGUF file is dequantised whole when opened, so splitting it would save nothing. */
        if (ss_model_path_is_gguf(model_dir))
            return ss_errorf(SS_ERR_UNSUPPORTED, "%s: --pipeline needs a Hugging Face directory (a GGUF file is "
                             "dequantised whole on every rank)", model_dir);
        ss_config cfg;
        char *path = ss_path_join(model_dir, "config.json");
        if (!path) return SS_ERR_NOMEM;
        ss_status st = ss_config_load(path, &cfg);
        free(path);
        SS_TRY(st);
        if (pipeline > 4096) return ss_errorf(SS_ERR_ARG, "--pipeline %d: at most 4096 stages", pipeline);
        SS_TRY(ss_pipeline_split(&cfg, pipeline, blocks, !o->no_logits, max_memory, first_of));
        first = first_of[ss_comm_rank(world) % pipeline];
        end = first_of[ss_comm_rank(world) % pipeline + 1];
        /* Copy q of the pipeline: ranks q*P .. q*P+P-1 (neighbours, so that
         * on a node's GPUs the stages of one copy sit together). */
        int ranks[4096];
        const int q = ss_comm_rank(world) / pipeline;
        for (int s = 0; s < pipeline; s++) ranks[s] = q * pipeline + s;
        SS_TRY(ss_comm_group(world, ranks, pipeline, 1, &pipe));
    }
    ss_model *m = NULL;
    ss_status st = ss_model_load_deferred(model_dir, first, end, &m);
    if (st) {
        ss_comm_free(pipe);
        return st;
    }
    if (pipe && (st = ss_model_set_pipeline(m, pipe, first_of))) {
        ss_comm_free(pipe);
    } else if (pipe) {
        m->pipe_owned = 1; /* freed with the model from here on */
        m->replica = ss_comm_rank(world) / pipeline;
        m->n_replicas = ss_comm_size(world) / pipeline;
    }
    const int64_t bytes = ss_model_weight_bytes(m);
    if (!st && max_memory > 0 && bytes > max_memory) {
        /* in a unit that shows them, or in bytes where the two round to the same (a limit just below the weights) */
        char have[40], lim[40];
        ss_fmt_bytes(have, sizeof have, (double)bytes);
        ss_fmt_bytes(lim, sizeof lim, (double)max_memory);
        if (!strcmp(have, lim)) {
            snprintf(have, sizeof have, "%lld bytes", (long long)bytes);
            snprintf(lim, sizeof lim, "%lld bytes", (long long)max_memory);
        }
        st = ss_errorf(SS_ERR_NOMEM, "%s: blocks %d..%d hold %s of weights, more than --max-memory %s%s", model_dir,
                       m->first_layer, m->end_layer - 1, have, lim,
                       m->end_layer - m->first_layer == 1 && pipeline > 1 ? " (one block: more stages cannot help)"
                       : pipeline > 1                                   ? "; use more pipeline stages"
                                                                        : "; split the model with --pipeline P");
    }
    if (st) {
        ss_model_free(m);
        return st;
    }
    *out = m;
    return SS_OK;
}

ss_status ss_model_data_comm(const ss_model *m, ss_comm *world, ss_comm **out, int *owned) {
    *out = world;
    *owned = 0;
    if (!m->pipe) return SS_OK;
    int *ranks = ss_malloc((size_t)m->n_replicas * sizeof *ranks, "ranks of a stage");
    if (!ranks) return SS_ERR_NOMEM;
    for (int q = 0; q < m->n_replicas; q++) ranks[q] = q * m->n_stages + m->stage;
    ss_status st = ss_comm_group(world, ranks, m->n_replicas, 2, out);
    free(ranks);
    if (st) *out = NULL;
    else *owned = 1;
    return st;
}

ss_status ss_gather_shares(ss_comm *c, void *const *arr, int n_arr, size_t elem, int64_t N, int64_t B, int64_t lo,
                           int64_t hi) {
    const int rank = ss_comm_rank(c), size = ss_comm_size(c);
    if (size == 1 || n_arr == 0) return SS_OK;
    const size_t mine = (size_t)(hi - lo) * elem;
    char *packed = ss_malloc(mine * (size_t)n_arr + 1, "values to gather");
    size_t *counts = rank == 0 ? ss_malloc((size_t)size * sizeof *counts, "ranks") : NULL;
    if (!packed || (rank == 0 && !counts)) {
        free(packed);
        free(counts);
        return SS_ERR_NOMEM;
    }
    for (int a = 0; a < n_arr; a++) memcpy(packed + (size_t)a * mine, (char *)arr[a] + (size_t)lo * elem, mine);
    void *all = NULL;
    ss_status st = ss_comm_gatherv(c, packed, mine * (size_t)n_arr, &all, counts);
    const char *src = all;
    for (int r = 1; !st && rank == 0 && r < size; r++) {
        int64_t rlo, rhi;
        ss_comm_shard(N, B, r, size, &rlo, &rhi);
        const size_t rn = (size_t)(rhi - rlo) * elem;
        src += counts[r - 1]; /* past rank r-1's block */
        if (counts[r] != rn * (size_t)n_arr) {
            st = ss_errorf(SS_ERR_INTERNAL, "rank %d (host %s) sent %zu bytes of per-prompt values, not %zu", r,
                           ss_comm_host(c, r), counts[r], rn * (size_t)n_arr);
            break;
        }
        for (int a = 0; a < n_arr; a++) memcpy((char *)arr[a] + (size_t)rlo * elem, src + (size_t)a * rn, rn);
    }
    free(all);
    free(counts);
    free(packed);
    return st;
}

void ss_model_data_part(const ss_model *m, const ss_comm *world, int *part, int *parts) {
    if (m->pipe) {
        *part = m->replica;
        *parts = m->n_replicas;
    } else {
        *part = ss_comm_rank(world);
        *parts = ss_comm_size(world);
    }
}

/* Under several ranks, every rank hashes path (into sha, size) and rank 0
 * names one that read another copy (a stale file on one node); one process
 * hashes nothing and leaves sha as it is. */
static ss_status same_copy_on_ranks(const ss_prompts *p, const char *path, char sha[65], int64_t *size) {
    ss_comm *world;
    SS_TRY(ss_comm_world(&world));
    if (ss_comm_size(world) == 1) return SS_OK;
    char *copy = ss_strfmt("copy of %s", path);
    if (!copy) return SS_ERR_NOMEM;
    const char *shas[1] = {sha}, *what[1] = {copy};
    ss_status st = ss_prompts_sha256(p, sha, size);
    if (!st) st = ss_run_same_files(world, 1, shas, what);
    free(copy);
    return st;
}

ss_status ss_run_open(const ss_run_opts *o, ss_run *r) {
    memset(r, 0, sizeof *r);
    ss_status st;
    double t = r->t_open = ss_now();
    if (o->backend) {
        r->be = o->backend;
    } else {
        ss_backend_opts bo = {.tf32 = o->tf32};
        if ((st = ss_backend_open(o->device, &bo, &r->be))) return st;
        r->owns_be = 1;
    }
    r->t_backend = ss_now() - t, t = ss_now();
    if ((st = ss_model_open_stage(o, &r->m))) goto fail;
    r->t_model = ss_now() - t, t = ss_now();
    const ss_config *cfg = &r->m->cfg;
    r->max_len = o->max_len > 0 && o->max_len < cfg->n_positions ? o->max_len : cfg->n_positions;
    if ((st = ss_prompts_read(o->input, &r->p))) goto fail;
    if ((st = same_copy_on_ranks(r->p, o->input, r->input_sha, &r->input_size))) goto fail;
    r->B = o->batch > 0 ? o->batch : 16;
    if (r->B > r->p->n) r->B = r->p->n;
    r->start = ss_malloc((size_t)r->B * sizeof(int64_t), "packing");
    r->len = ss_malloc((size_t)r->B * sizeof(int64_t), "packing");
    if (!r->start || !r->len) {
        st = SS_ERR_NOMEM;
        goto fail;
    }
    if (!o->lazy_tokenize && (st = ss_run_tokenize(r, o, 0, r->p->n))) goto fail;
    r->t_prompts = ss_now() - t;
    return SS_OK;
fail:
    ss_run_close(r);
    return st;
}

ss_status ss_run_tokenize(ss_run *r, const ss_run_opts *o, int64_t first, int64_t end) {
    SS_TRY(ss_prompts_tokenize_range(r->p, r->m->tok, r->m->cfg.vocab_size, r->max_len, o->truncate, first, end, NULL));
    int64_t T = r->T;
    for (int64_t i = first; i < end && i < r->p->n; i++) T = r->p->items[i].n_tokens > T ? r->p->items[i].n_tokens : T;
    if (T > r->T || !r->packed) {
        int32_t *np = ss_realloc(r->packed, (size_t)(r->B * (T ? T : 1)) * sizeof(int32_t), "packed tokens");
        if (!np) return SS_ERR_NOMEM;
        r->packed = np;
        r->T = T;
    }
    return SS_OK;
}

ss_status ss_run_place(ss_run *r, const ss_run_opts *o) {
    const double t = ss_now();
    SS_TRY(ss_model_place(r->m, r->be, o->wdtype));
    if (ss_timing_on())
        ss_eprintf("subscope: timing: setup %.3f s: backend %.3f s, model files %.3f s, prompts %.3f s, placing the "
                   "weights %.3f s\n",
                   ss_now() - r->t_open, r->t_backend, r->t_model, r->t_prompts, ss_now() - t);
    return SS_OK;
}

void ss_run_pack(ss_run *r, int64_t b0, int64_t nb, ss_packing *pk) {
    int64_t rows = 0;
    for (int64_t i = 0; i < nb; i++) {
        const ss_prompt *it = &r->p->items[b0 + i];
        r->start[i] = rows;
        r->len[i] = it->n_tokens;
        memcpy(r->packed + rows, it->tokens, (size_t)it->n_tokens * sizeof(int32_t));
        rows += it->n_tokens;
    }
    *pk = (ss_packing){nb, rows, r->start, r->len, b0};
}

int ss_timing_on(void) { return ss_env_flag("SUBSCOPE_TIMING"); }

void ss_timing_batches(const char *job, int rank, int size, double t_start, double t_first, int64_t first_prompts,
                       int64_t later_prompts) {
    char who[32] = "";
    if (size > 1) snprintf(who, sizeof who, " (rank %d)", rank);
    ss_eprintf("subscope %s%s: timing: first batch %.4f s (%lld prompts), later batches %.4f s (%lld prompts)\n",
               job, who, t_first - t_start, (long long)first_prompts, ss_now() - t_first, (long long)later_prompts);
}

void ss_run_close(ss_run *r) {
    free(r->packed);
    free(r->start);
    free(r->len);
    ss_prompts_free(r->p);
    ss_model_free(r->m); /* before the backend that holds its placed weights */
    if (r->owns_be) ss_backend_close(r->be);
    memset(r, 0, sizeof *r);
}

ss_status ss_run_same_files(ss_comm *comm, int n, const char *const *sha, const char *const *what) {
    const int rank = ss_comm_rank(comm), size = ss_comm_size(comm);
    if (size == 1) return SS_OK;
    const size_t L = (size_t)n * 64;
    char *mine = ss_malloc(L + 1, "file hashes"), *all = rank == 0 ? ss_malloc(L * (size_t)size + 1, "file hashes") : NULL;
    ss_status st = !mine || (rank == 0 && !all) ? SS_ERR_NOMEM : SS_OK;
    for (int i = 0; !st && i < n; i++) memcpy(mine + (size_t)i * 64, sha[i], 64);
    if (!st) st = ss_comm_gather(comm, mine, L, all);
    for (int r = 1; !st && rank == 0 && r < size; r++)
        for (int i = 0; !st && i < n; i++)
            if (memcmp(all + (size_t)r * L + (size_t)i * 64, mine + (size_t)i * 64, 64))
                st = ss_errorf(SS_ERR_ARG, "rank %d (host %s) reads a different %s than rank 0 (host %s)", r,
                               ss_comm_host(comm, r), what[i], ss_comm_host(comm, 0));
    free(mine);
    free(all);
    return st;
}

ss_status ss_run_read_paired(const ss_run *r, const char *path, int truncate, ss_prompts **out) {
    *out = NULL;
    ss_prompts *q = NULL;
    ss_status st;
    char sha[65] = "";
    int64_t size;
    if ((st = ss_prompts_read(path, &q)) || (st = same_copy_on_ranks(q, path, sha, &size)) ||
        (st = ss_prompts_tokenize(q, r->m->tok, r->m->cfg.vocab_size, r->max_len, truncate, NULL)))
        goto fail;
    if (q->n != r->p->n) {
        st = ss_errorf(SS_ERR_ARG, "%s has %lld prompts but %s has %lld: they are paired line by line", r->p->path,
                       (long long)r->p->n, path, (long long)q->n);
        goto fail;
    }
    for (int64_t i = 0; i < q->n; i++)
        if (r->p->items[i].n_tokens != q->items[i].n_tokens) {
            st = ss_errorf(SS_ERR_ARG, "pair %lld (%s:%lld, %s:%lld): %lld vs %lld tokens; pairs need equal lengths",
                           (long long)i, r->p->path, (long long)r->p->items[i].line, path, (long long)q->items[i].line,
                           (long long)r->p->items[i].n_tokens, (long long)q->items[i].n_tokens);
            goto fail;
        }
    *out = q;
    return SS_OK;
fail:
    ss_prompts_free(q);
    return st;
}

ss_status ss_answer_token_id(const ss_tokenizer *tok, const char *text, int32_t *id) {
    int32_t *ids;
    size_t n;
    SS_TRY(ss_tokenizer_encode(tok, text, strlen(text), &ids, &n));
    *id = n ? ids[0] : -1; /* the first token decides, as in logit-difference studies */
    free(ids);
    return SS_OK;
}

ss_status ss_prompt_answer_ids(const ss_tokenizer *tok, const ss_prompts *p, const ss_prompt *it, int32_t *answer,
                               int32_t *wrong) {
    const char *aw[2] = {it->answer, it->wrong};
    int32_t *dst[2] = {answer, wrong};
    for (int w = 0; w < 2 && dst[w]; w++) {
        if (!aw[w])
            return ss_errorf(SS_ERR_FORMAT, "%s:%lld: the %s metric needs \"answer\"%s", p->path, (long long)it->line,
                             wrong ? "logitdiff" : "logprob", wrong ? " and \"wrong\"" : "");
        if (!tok) return ss_errorf(SS_ERR_ARG, "the %s metric needs a model with a tokenizer", wrong ? "logitdiff" : "logprob");
        SS_TRY(ss_answer_token_id(tok, aw[w], dst[w]));
        if (*dst[w] < 0)
            return ss_errorf(SS_ERR_FORMAT, "%s:%lld: empty \"%s\"", p->path, (long long)it->line, w ? "wrong" : "answer");
    }
    /* Only the first token of each is scored: two that share it make logit(answer) -
     * logit(wrong) 0 whatever the model does (and patch's effect 0/0), a silent dud. */
    if (wrong && *answer == *wrong)
        return ss_errorf(SS_ERR_FORMAT,
                         "%s:%lld: \"answer\" and \"wrong\" begin with the same token (id %d): the logitdiff metric "
                         "scores only the first token of each, so it would be 0 whatever the model does",
                         p->path, (long long)it->line, (int)*answer);
    return SS_OK;
}

void ss_note_multi_token_answers(const ss_tokenizer *tok, const ss_prompts *p, int with_wrong, const char *cmd,
                                 const char *metric, FILE *out) {
    if (!tok || !out) return;
    int64_t count = 0, first_line = 0;
    size_t first_n = 0;
    const char *first_field = NULL, *first_text = NULL;
    for (int64_t i = 0; i < p->n; i++) {
        const char *aw[2] = {p->items[i].answer, with_wrong ? p->items[i].wrong : NULL};
        for (int w = 0; w < 2; w++) {
            int32_t *ids = NULL;
            size_t n = 0;
            if (!aw[w] || ss_tokenizer_encode(tok, aw[w], strlen(aw[w]), &ids, &n) != SS_OK) {
                ss_error_clear();
                continue;
            }
            free(ids);
            if (n > 1 && !count++)
                first_line = p->items[i].line, first_n = n, first_field = w ? "wrong" : "answer", first_text = aw[w];
        }
    }
    if (!count) return;
    ss_sbuf b = {0};
    ss_sb_quoted(&b, first_text, strlen(first_text), '"');
    fprintf(out,
            "%s: note: %lld \"answer\"/\"wrong\" value%s of %s encode%s to more than one token (the first: line %lld, "
            "\"%s\" %s, %zu tokens); %s scores only the first token of each\n",
            cmd, (long long)count, count == 1 ? "" : "s", p->path, count == 1 ? "s" : "", (long long)first_line,
            first_field, b.p ? b.p : "\"\"", first_n, metric);
    free(b.p);
}

ss_status ss_keep_rows_hook(void *ctx, const ss_site *s, float *data, int64_t ld, const ss_packing *pk,
                            const int64_t *pattern_off) {
    (void)pattern_off;
    const ss_site_rows *k = ctx;
    if (!k->rows[s->id]) return SS_OK;
    for (int64_t r = 0; r < pk->rows; r++)
        memcpy(k->rows[s->id] + r * s->width, data + r * ld, (size_t)s->width * sizeof(float));
    return SS_OK;
}

/* A warning when a collect file's model_config is not this model's. */
static void warn_other_model(ss_h5_reader *r, const char *path, const ss_model *m) {
    char *theirs = NULL, *ours = NULL, *their_path = NULL;
    if (ss_h5_read_attr_str(r, "/", "model_config", &theirs) == SS_OK && ss_model_config_text(m, &ours) == SS_OK &&
        strcmp(theirs, ours)) {
        if (ss_h5_read_attr_str(r, "/", "model_path", &their_path) != SS_OK) their_path = NULL;
        ss_eprintf("subscope: warning: %s was collected from %s, whose config is not that of %s: its statistics "
                   "describe another model\n",
                   path, their_path ? their_path : "another model", m->dir);
    }
    ss_error_clear(); /* a file without the attributes (older, or not ours) is no error */
    free(theirs);
    free(ours);
    free(their_path);
}

ss_status ss_read_unit_stats(const char *path, const ss_model *m, const uint8_t *need, int require, double **mean,
                             double **std) {
    ss_h5_reader *r;
    const ss_config *cfg = &m->cfg;
    SS_TRY(ss_h5_open_read(path, &r));
    warn_other_model(r, path, m);
    ss_status st = SS_OK;
    for (int i = 0; i < ss_sites_count(cfg) && !st; i++) {
        if (!need[i]) continue;
        ss_site s;
        ss_site_get(cfg, i, &s);
        char p[256];
        snprintf(p, sizeof p, "/stats/%s/mean", s.name);
        if (!ss_h5_exists(r, p)) {
            if (require) st = ss_errorf(SS_ERR_FORMAT, "%s has no %s (collect the site first)", path, p);
            continue;
        }
        /* a site that saw no rows has no mean (collect writes NaN; older files, zeros) */
        snprintf(p, sizeof p, "/stats/%s/count", s.name);
        int64_t *cnt = NULL;
        if (ss_h5_exists(r, p)) {
            /* sizes checked before reading: a small file can declare billions of values */
            if ((st = ss_h5_read_want(r, p, SS_H5_I64, 1, (void **)&cnt, NULL))) break;
            const int64_t rows = cnt[0];
            free(cnt);
            if (rows < 1) {
                st = rows < 0 ? ss_errorf(SS_ERR_FORMAT, "%s: %s is not a scalar count", path, p)
                              : ss_errorf(SS_ERR_ARG, "%s: %s is 0: the site saw no rows, so it has no mean or spread", path, p);
                break;
            }
        }
        snprintf(p, sizeof p, "/stats/%s/mean", s.name);
        if ((st = ss_h5_read_want(r, p, SS_H5_F64, (size_t)s.width, (void **)&mean[i], NULL))) break;
        if (!std) continue;
        snprintf(p, sizeof p, "/stats/%s/cov", s.name);
        if (!ss_h5_exists(r, p)) {
            if (require > 1) st = ss_errorf(SS_ERR_FORMAT, "%s has no %s (collect it with --stats mean,cov)", path, p);
            continue;
        }
        /* of cov only the diagonal: the whole matrix is 2 GiB at width 16384 */
        if (!(std[i] = ss_malloc((size_t)s.width * sizeof(double), "unit std"))) {
            st = SS_ERR_NOMEM;
            break;
        }
        if ((st = ss_h5_read_diag(r, p, s.width, std[i]))) break;
        for (int64_t k = 0; k < s.width; k++) std[i][k] = sqrt(std[i][k] > 0 ? std[i][k] : 0);
    }
    ss_h5_close_read(r);
    return st;
}

ss_status ss_loss_open(ss_loss_scorer *sc, const ss_backend *be, int64_t cap_rows, int64_t cap_seq) {
    *sc = (ss_loss_scorer){.be = be, .cap = cap_rows};
    const size_t n = (size_t)cap_rows;
    SS_TRY(be->alloc(be, n * sizeof(int64_t), "loss: logit indices", (void **)&sc->d_idx));
    SS_TRY(be->alloc(be, n * sizeof(float), "loss: next-token logits", (void **)&sc->d_g));
    SS_TRY(be->alloc(be, n * sizeof(double), "loss: log-partitions", (void **)&sc->d_lz));
    sc->idx = ss_malloc(n * sizeof(int64_t), "loss: logit indices");
    sc->g = ss_malloc(n * sizeof(float), "loss: next-token logits");
    sc->lz = ss_malloc(n * sizeof(double), "loss: log-partitions");
    sc->loss = ss_malloc((size_t)cap_seq * sizeof(double), "loss");
    return sc->idx && sc->g && sc->lz && sc->loss ? SS_OK : SS_ERR_NOMEM;
}

void ss_loss_close(ss_loss_scorer *sc) {
    if (!sc->be) return;
    void *dev[] = {sc->d_idx, sc->d_g, sc->d_lz};
    for (size_t i = 0; i < sizeof dev / sizeof *dev; i++)
        if (dev[i]) sc->be->release(sc->be, dev[i]);
    free(sc->idx), free(sc->g), free(sc->lz), free(sc->loss);
    *sc = (ss_loss_scorer){0};
}

ss_status ss_loss_score(void *vctx, const float *lg, int64_t n, int64_t V) {
    ss_loss_scorer *sc = vctx;
    const ss_backend *be = sc->be;
    const ss_packing *pk = sc->pk;
    if (n != pk->rows || n > sc->cap)
        return ss_errorf(SS_ERR_INTERNAL, "loss: %lld rows of logits, %lld expected (room for %lld)",
                         (long long)n, (long long)pk->rows, (long long)sc->cap);
    for (int64_t r = 0; r < n; r++) sc->idx[r] = r * V;
    for (int64_t q = 0; q < pk->n_seq; q++)
        for (int64_t t = 0, s0 = pk->start[q]; t + 1 < pk->len[q]; t++)
            sc->idx[s0 + t] = (s0 + t) * V + sc->tok[s0 + t + 1];
    SS_TRY(be->upload(be, sc->d_idx, sc->idx, (size_t)n * sizeof(int64_t)));
    SS_TRY(be->gather(be, sc->d_g, lg, sc->d_idx, n));
    SS_TRY(be->logit_scores(be, sc->d_lz, NULL, NULL, lg, n, V, NULL, NULL, 0));
    SS_TRY(be->download(be, sc->g, sc->d_g, (size_t)n * sizeof(float)));
    SS_TRY(be->download(be, sc->lz, sc->d_lz, (size_t)n * sizeof(double)));
    for (int64_t q = 0; q < pk->n_seq; q++) {
        const int64_t s0 = pk->start[q], len = pk->len[q];
        double sum = 0;
        for (int64_t t = 0; t + 1 < len; t++) sum += sc->lz[s0 + t] - sc->g[s0 + t];
        sc->loss[q] = len > 1 ? sum / (double)(len - 1) : NAN;
    }
    sc->scored = 1;
    return SS_OK;
}

/* The CPU backend's logit_scores computes it (fp64; it fails only for a KL without reference rows). */
void ss_log_partition(const float *lg, int64_t rows, int64_t V, double *lz) {
    const ss_backend *cpu = ss_backend_cpu();
    (void)cpu->logit_scores(cpu, lz, NULL, NULL, lg, rows, V, NULL, NULL, 0);
}

ss_status ss_pipeline_report(const ss_model *m, int root, ss_h5 *h, int print) {
    enum { TAG_TIMING = 4001 };
    ss_comm *comm = m->pipe;
    if (!comm) return SS_OK;
    const int rank = ss_comm_rank(comm), P = ss_comm_size(comm);
    SS_TRY(ss_model_pipe_flush((ss_model *)m)); /* the last sends' waiting counts */
    /* busy: the stage's time in the pipeline less its waiting */
    const double span = m->pipe_t1 > m->pipe_t0 && m->pipe_t0 > 0 ? m->pipe_t1 - m->pipe_t0 : 0;
    double mine[4] = {m->first_layer, m->end_layer, span > m->pipe_wait_s ? span - m->pipe_wait_s : 0, m->pipe_wait_s};
    if (rank != root) return ss_comm_send(comm, root, TAG_TIMING, mine, sizeof mine);
    double *all = ss_malloc((size_t)P * 4 * sizeof(double), "pipeline timing");
    if (!all) return SS_ERR_NOMEM;
    ss_status st = SS_OK;
    for (int r = 0; r < P && !st; r++) {
        if (r == rank) memcpy(all + 4 * r, mine, sizeof mine);
        else st = ss_comm_recv(comm, r, TAG_TIMING, all + 4 * r, sizeof mine);
    }
    double busy = 0, wait = 0, *b = NULL, *w = NULL;
    int64_t *first = NULL;
    if (!st && (!(b = ss_malloc((size_t)P * sizeof *b, "timing")) || !(w = ss_malloc((size_t)P * sizeof *w, "timing")) ||
                !(first = ss_malloc((size_t)P * sizeof *first, "timing"))))
        st = SS_ERR_NOMEM;
    for (int r = 0; r < P && !st; r++) {
        first[r] = (int64_t)all[4 * r];
        b[r] = all[4 * r + 2], w[r] = all[4 * r + 3];
        busy += b[r], wait += w[r];
        if (print)
            ss_eprintf("pipeline stage %d (%s, blocks %d..%d): busy %.3f s, waiting %.3f s\n", r, ss_comm_host(comm, r),
                       (int)all[4 * r], (int)all[4 * r + 1] - 1, b[r], w[r]);
    }
    /* The bubble: the share of the stages' time spent waiting for a neighbour. */
    const double bubble = busy + wait > 0 ? wait / (busy + wait) : 0;
    if (!st && print) ss_eprintf("pipeline: %d stages, bubble %.1f%% of stage time\n", P, 100.0 * bubble);
    if (!st && h) {
        if (!(st = ss_h5_attr_i64_array(h, "/", "pipeline_first_block", first, (size_t)P)) &&
            !(st = ss_h5_attr_f64_array(h, "/", "pipeline_busy_seconds", b, (size_t)P)) &&
            !(st = ss_h5_attr_f64_array(h, "/", "pipeline_wait_seconds", w, (size_t)P)))
            st = ss_h5_attr_f64(h, "/", "pipeline_bubble_fraction", bubble);
    }
    free(first);
    free(b);
    free(w);
    free(all);
    return st;
}

int ss_model_computes_site(const ss_model *m, const ss_site *s) {
    if (s->layer >= 0) return s->layer >= m->first_layer && s->layer < m->end_layer;
    return s->kind == SS_SITE_LNF ? m->end_layer == m->cfg.n_layer : m->first_layer == 0;
}

int ss_model_stage_of(const ss_model *m, const ss_site *s) {
    if (!m->pipe) return 0;
    if (s->layer < 0) return s->kind == SS_SITE_LNF ? m->n_stages - 1 : 0;
    for (int st = 0; st < m->n_stages; st++)
        if (s->layer >= m->stage_first[st] && s->layer < m->stage_first[st + 1]) return st;
    return 0;
}
