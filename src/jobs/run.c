/* The part of every model-running job that is the same: backend, model,
 * prompts, and packing prompts into batches. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "subscope/backend.h"
#include "subscope/h5out.h"
#include "subscope/jobs.h"
#include "subscope/util.h"

ss_status ss_run_open(const ss_run_opts *o, ss_run *r) {
    memset(r, 0, sizeof *r);
    ss_status st;
    if (o->backend) {
        r->be = o->backend;
    } else {
        ss_backend_opts bo = {.tf32 = o->tf32};
        if ((st = ss_backend_open(o->device, &bo, &r->be))) return st;
        r->owns_be = 1;
    }
    if ((st = ss_model_load(o->model_dir, &r->m))) goto fail;
    const ss_config *cfg = &r->m->cfg;
    r->max_len = o->max_len > 0 && o->max_len < cfg->n_positions ? o->max_len : cfg->n_positions;
    if ((st = ss_prompts_read(o->input, &r->p))) goto fail;
    if ((st = ss_prompts_tokenize(r->p, r->m->tok, cfg->vocab_size, r->max_len, o->truncate, NULL))) goto fail;
    for (int64_t i = 0; i < r->p->n; i++) r->T = r->p->items[i].n_tokens > r->T ? r->p->items[i].n_tokens : r->T;
    r->B = o->batch > 0 ? o->batch : 16;
    if (r->B > r->p->n) r->B = r->p->n;
    r->packed = ss_malloc((size_t)(r->B * r->T) * sizeof(int32_t), "packed tokens");
    r->start = ss_malloc((size_t)r->B * sizeof(int64_t), "packing");
    r->len = ss_malloc((size_t)r->B * sizeof(int64_t), "packing");
    if (!r->packed || !r->start || !r->len) {
        st = SS_ERR_NOMEM;
        goto fail;
    }
    return SS_OK;
fail:
    ss_run_close(r);
    return st;
}

ss_status ss_run_place(ss_run *r, const ss_run_opts *o) { return ss_model_place(r->m, r->be, o->wdtype); }

void ss_run_pack(ss_run *r, int64_t b0, int64_t nb, ss_packing *pk) {
    int64_t rows = 0;
    for (int64_t i = 0; i < nb; i++) {
        const ss_prompt *it = &r->p->items[b0 + i];
        r->start[i] = rows;
        r->len[i] = it->n_tokens;
        memcpy(r->packed + rows, it->tokens, (size_t)it->n_tokens * sizeof(int32_t));
        rows += it->n_tokens;
    }
    *pk = (ss_packing){nb, rows, r->start, r->len};
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

ss_status ss_run_read_paired(const ss_run *r, const char *path, int truncate, ss_prompts **out) {
    *out = NULL;
    ss_prompts *q = NULL;
    ss_status st;
    if ((st = ss_prompts_read(path, &q)) ||
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

ss_status ss_prompt_answer_ids(const ss_tokenizer *tok, const ss_prompts *p, const ss_prompt *it, int32_t *answer,
                               int32_t *wrong) {
    const char *aw[2] = {it->answer, it->wrong};
    int32_t *dst[2] = {answer, wrong};
    for (int w = 0; w < 2 && dst[w]; w++) {
        if (!aw[w])
            return ss_errorf(SS_ERR_FORMAT, "%s:%lld: the %s metric needs \"answer\"%s", p->path, (long long)it->line,
                             wrong ? "logitdiff" : "logprob", wrong ? " and \"wrong\"" : "");
        if (!tok) return ss_errorf(SS_ERR_ARG, "the %s metric needs a model with a tokenizer", wrong ? "logitdiff" : "logprob");
        int32_t *ids;
        size_t n;
        SS_TRY(ss_tokenizer_encode(tok, aw[w], strlen(aw[w]), &ids, &n));
        if (!n) {
            free(ids);
            return ss_errorf(SS_ERR_FORMAT, "%s:%lld: empty \"%s\"", p->path, (long long)it->line, w ? "wrong" : "answer");
        }
        *dst[w] = ids[0]; /* the first token decides, as in logit-difference studies */
        free(ids);
    }
    return SS_OK;
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

ss_status ss_read_unit_stats(const char *path, const ss_config *cfg, const uint8_t *need, int require, double **mean,
                             double **std) {
    ss_h5_reader *r;
    SS_TRY(ss_h5_open_read(path, &r));
    ss_status st = SS_OK;
    for (int i = 0; i < ss_sites_count(cfg) && !st; i++) {
        if (!need[i]) continue;
        ss_site s;
        ss_site_get(cfg, i, &s);
        char p[256];
        size_t n;
        snprintf(p, sizeof p, "/stats/%s/mean", s.name);
        if (!ss_h5_exists(r, p)) {
            if (require) st = ss_errorf(SS_ERR_FORMAT, "%s has no %s (collect the site first)", path, p);
            continue;
        }
        if ((st = ss_h5_read_f64(r, p, &mean[i], &n, NULL))) break;
        if (n != (size_t)s.width) {
            st = ss_errorf(SS_ERR_FORMAT, "%s: %s has %zu values, the site has %lld", path, p, n, (long long)s.width);
            break;
        }
        if (!std) continue;
        snprintf(p, sizeof p, "/stats/%s/cov", s.name);
        if (!ss_h5_exists(r, p)) {
            if (require > 1) st = ss_errorf(SS_ERR_FORMAT, "%s has no %s (collect it with --stats mean,cov)", path, p);
            continue;
        }
        double *cov = NULL;
        if ((st = ss_h5_read_f64(r, p, &cov, &n, NULL))) break;
        if (n != (size_t)(s.width * s.width) || !(std[i] = ss_malloc((size_t)s.width * sizeof(double), "unit std"))) {
            st = n != (size_t)(s.width * s.width)
                     ? ss_errorf(SS_ERR_FORMAT, "%s: %s has %zu values, not %lld^2", path, p, n, (long long)s.width)
                     : SS_ERR_NOMEM;
            free(cov);
            break;
        }
        for (int64_t k = 0; k < s.width; k++) std[i][k] = sqrt(cov[k * s.width + k] > 0 ? cov[k * s.width + k] : 0);
        free(cov);
    }
    ss_h5_close_read(r);
    return st;
}

void ss_log_partition(const float *lg, int64_t rows, int64_t V, double *lz) {
    for (int64_t r = 0; r < rows; r++) {
        const float *x = lg + r * V;
        double mx = -INFINITY, sum = 0;
        for (int64_t v = 0; v < V; v++) mx = x[v] > mx ? x[v] : mx;
        for (int64_t v = 0; v < V; v++) sum += exp((double)x[v] - mx);
        lz[r] = mx + log(sum);
    }
}
