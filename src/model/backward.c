/* The backward pass (GPT-2 and the Llama family): the forward keeps a tape of activations, the
 * metric's gradient at the logits is propagated back through every block
 * with the backend's ops, and each wanted site's gradient goes to a hook. */
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "forward_internal.h"
#include "subscope/backward.h"
#include "subscope/dist.h"
#include "subscope/util.h"

static const char *const metric_names[] = {"loss", "logitdiff", "logprob"};

ss_status ss_metric_parse(const char *s, ss_metric_kind *out) {
    for (int i = 0; i < 3; i++)
        if (s && !strcmp(s, metric_names[i])) {
            *out = (ss_metric_kind)i;
            return SS_OK;
        }
    return ss_errorf(SS_ERR_ARG, "--metric: unknown metric '%s' (expected loss, logitdiff or logprob)", s ? s : "");
}

const char *ss_metric_name(ss_metric_kind k) { return (unsigned)k < 3 ? metric_names[k] : "?"; }

static ss_status check_metric(const ss_model *m, const ss_packing *pk, const ss_metric *mt) {
    if ((unsigned)mt->kind > SS_METRIC_LOGPROB) return ss_errorf(SS_ERR_ARG, "unknown metric %d", (int)mt->kind);
    if (mt->kind == SS_METRIC_LOSS) return SS_OK;
    const int64_t V = m->cfg.vocab_size;
    for (int64_t s = 0; s < pk->n_seq; s++) {
        if (!mt->answer || mt->answer[s] < 0 || mt->answer[s] >= V ||
            (mt->kind == SS_METRIC_LOGITDIFF && (!mt->wrong || mt->wrong[s] < 0 || mt->wrong[s] >= V)))
            return ss_errorf(SS_ERR_ARG, "metric %s: sequence %lld lacks a valid answer%s token id",
                             ss_metric_name(mt->kind), (long long)s, mt->kind == SS_METRIC_LOGITDIFF ? "/wrong" : "");
    }
    return SS_OK;
}

/* Buffers of one pass, carved from one backend allocation. */
typedef struct {
    const ss_backend *be;
    char *base;
    size_t used, size;
} carve;

static void *take(carve *c, size_t bytes) {
    size_t at = c->used;
    c->used += (bytes + 255) & ~(size_t)255;
    return c->base ? c->base + at : NULL;
}

/* Lays out every buffer the pass needs; called once with base NULL to size it. */
typedef struct {
    ss_tape tape;
    ss_block_bufs scratch;      /* recompute: one block's intermediates */
    float *x_work, *tmp;        /* recompute: the block's residual; attn_out / mlp_out */
    float *dx, *dln, *dz, *dqkv, *dh, *dgu, *last; /* dgu: Llama's gate|up gradients */
    int32_t *targets;
    float *weights, *loss;
} pass_bufs;

static void lay_out(carve *c, pass_bufs *p, const ss_model *m, int64_t R, int64_t n_lrows, int recompute, int grads) {
    const ss_config *cfg = &m->cfg;
    const ss_dims D = ss_model_dims(cfg);
    const size_t f = sizeof(float), Rf = (size_t)R * f, Rd = Rf * (size_t)D.d;
    const size_t Rq = Rf * (size_t)D.qw, Rz = Rf * (size_t)D.zw, Rp = Rf * (size_t)D.pw, Rdm = Rf * (size_t)D.dm;
    for (int l = 0; l < cfg->n_layer; l++) {
        ss_block_bufs *b = &p->tape.blocks[l];
        memset(b, 0, sizeof *b);
        if (l < m->first_layer || l >= m->end_layer) continue; /* another pipeline stage's block */
        b->save_pre = take(c, Rd);
        if (recompute) continue;
        b->ln1 = take(c, Rd), b->qkv = take(c, Rq), b->z = take(c, Rz), b->save_mid = take(c, Rd);
        b->ln2 = take(c, Rd), b->pre = take(c, Rp), b->post = take(c, Rdm);
    }
    p->tape.recompute = recompute;
    p->tape.resid_final = take(c, Rd), p->tape.lnf = take(c, Rd);
    p->tape.logits = take(c, (size_t)n_lrows * (size_t)cfg->vocab_size * f);
    p->tape.tok_b = take(c, (size_t)R * sizeof(int32_t)), p->tape.pos_b = take(c, (size_t)R * sizeof(int32_t));
    p->targets = take(c, (size_t)n_lrows * sizeof(int32_t));
    p->weights = take(c, (size_t)n_lrows * f), p->loss = take(c, (size_t)n_lrows * f);
    if (!grads) return;
    p->dx = take(c, Rd), p->dln = take(c, Rd), p->dz = take(c, Rz), p->dqkv = take(c, Rq), p->dh = take(c, Rdm);
    p->dgu = D.llama ? take(c, Rp) : NULL;
    p->last = take(c, (size_t)n_lrows * (size_t)cfg->n_embd * f);
    if (!recompute) return;
    ss_block_bufs *s = &p->scratch;
    s->ln1 = take(c, Rd), s->qkv = take(c, Rq), s->z = take(c, Rz), s->save_mid = take(c, Rd);
    s->ln2 = take(c, Rd), s->pre = take(c, Rp), s->post = take(c, Rdm);
    p->x_work = take(c, Rd), p->tmp = take(c, Rd);
    s->attn_out = s->mlp_out = p->tmp;
    s->resumed = 1;
}

/* The metric of every sequence from the logits on the tape, and its gradient
 * with respect to them written over them. */
static ss_status metric_and_dlogits(const ss_model *m, const ss_backend *be, const int32_t *tokens,
                                    const ss_packing *pk, const ss_metric *mt, pass_bufs *p, int64_t n_lrows,
                                    double *metric_out) {
    const int64_t V = m->cfg.vocab_size;
    const size_t nl = (size_t)n_lrows;
    int32_t *tg = ss_malloc(nl * sizeof(int32_t), "metric targets");
    float *wt = ss_malloc(nl * sizeof(float), "metric weights"), *loss = ss_malloc(nl * sizeof(float), "metric values");
    float *hl = NULL;
    ss_status st = SS_ERR_NOMEM;
    if (!tg || !wt || !loss) goto out;
    if (mt->kind == SS_METRIC_LOGITDIFF) {
        /* Linear in the logits: the gradient is +1 at the answer and -1 at the wrong token. */
        if (!(hl = ss_malloc(nl * (size_t)V * sizeof(float), "logits"))) goto out;
        if ((st = be->download(be, hl, p->tape.logits, nl * (size_t)V * sizeof(float)))) goto out;
        for (int64_t s = 0; s < pk->n_seq; s++) {
            float *row = hl + s * V;
            if (metric_out) metric_out[s] = (double)row[mt->answer[s]] - (double)row[mt->wrong[s]];
            memset(row, 0, (size_t)V * sizeof(float));
            row[mt->answer[s]] += 1.f;
            row[mt->wrong[s]] -= 1.f;
        }
        st = be->upload(be, p->tape.logits, hl, nl * (size_t)V * sizeof(float));
        goto out;
    }
    if (mt->kind == SS_METRIC_LOSS) {
        for (int64_t s = 0; s < pk->n_seq; s++)
            for (int64_t i = 0; i < pk->len[s]; i++) {
                int64_t r = pk->start[s] + i;
                tg[r] = i + 1 < pk->len[s] ? tokens[r + 1] : -1;
                wt[r] = pk->len[s] > 1 ? (float)(1.0 / (double)(pk->len[s] - 1)) : 0.f;
            }
    } else { /* log p(answer) = -cross-entropy, so the weight -1 gives its gradient */
        for (int64_t s = 0; s < pk->n_seq; s++) tg[s] = mt->answer[s], wt[s] = -1.f;
    }
    if ((st = be->upload(be, p->targets, tg, nl * sizeof(int32_t))) ||
        (st = be->upload(be, p->weights, wt, nl * sizeof(float))) ||
        (st = be->softmax_xent(be, p->tape.logits, p->loss, p->tape.logits, p->targets, p->weights, n_lrows, V)) ||
        (st = be->download(be, loss, p->loss, nl * sizeof(float))))
        goto out;
    if (metric_out)
        for (int64_t s = 0; s < pk->n_seq; s++) {
            if (mt->kind == SS_METRIC_LOGPROB) {
                metric_out[s] = -(double)loss[s];
                continue;
            }
            double sum = 0;
            for (int64_t i = 0; i + 1 < pk->len[s]; i++) sum += loss[pk->start[s] + i];
            metric_out[s] = pk->len[s] > 1 ? sum / (double)(pk->len[s] - 1) : NAN;
        }
out:
    free(tg);
    free(wt);
    free(loss);
    free(hl);
    return st;
}

/* dx += the gradient of either family's norm; its weight (and bias) gradients when non-NULL. */
static ss_status norm_backward(const ss_backend *be, const ss_config *c, float *dx, const void *dw, const void *db,
                               const float *dy, const float *x, const void *w, int64_t R) {
    if (c->family == SS_FAMILY_LLAMA)
        return be->rmsnorm_backward(be, dx, (float *)dw, dy, x, w, R, c->n_embd, (float)c->ln_eps);
    return be->layernorm_backward(be, dx, (float *)dw, (float *)db, dy, x, w, R, c->n_embd, (float)c->ln_eps);
}

struct ss_fb_pass {
    const ss_model *m;
    const ss_backend *be;
    ss_packing pk;           /* its own copy of the packing (start, len in seq) */
    int64_t *seq;
    ss_forward_opts fwd;     /* the caller's forward options (have_fwd), kept for recomputed blocks */
    int have_fwd;
    ss_forward_opts fo;      /* the forward actually run */
    ss_grad_opts g;          /* have_g: a backward pass follows */
    int have_g;
    double *metric_out;
    int64_t n_lrows;
    pass_bufs p;
    carve cv;
};

void ss_fb_free(ss_fb_pass *ps) {
    if (!ps) return;
    if (ps->cv.base) ps->be->release(ps->be, ps->cv.base);
    free(ps->p.tape.blocks);
    free(ps->seq);
    free(ps);
}

ss_status ss_fb_forward(const ss_model *m, const ss_backend *be, const int32_t *tokens, const ss_packing *pk,
                        const ss_forward_opts *fwd, const ss_metric *metric, const ss_grad_opts *g, double *metric_out,
                        ss_fb_pass **out) {
    *out = NULL;
    const ss_config *c = &m->cfg;
    const ss_dims D = ss_model_dims(c);
    const int64_t R = pk->rows;
    const ss_gpt2_weights *w = ss_model_weights(m, be);
    if (!w) return ss_errorf(SS_ERR_INTERNAL, "model weights were not placed on backend %s", be->name);
    if (!be->softmax_xent || !be->attention_backward)
        return ss_errorf(SS_ERR_UNSUPPORTED, "backend %s has no backward pass", be->name);
    if (D.llama && (!be->rmsnorm_backward || !be->swiglu_backward || !be->rope))
        return ss_errorf(SS_ERR_UNSUPPORTED, "backend %s has no backward pass for the Llama family", be->name);
    SS_TRY(ss_packing_check(m, tokens, pk));
    SS_TRY(check_metric(m, pk, metric));
    if (g && g->want)
        for (int l = 0; l < c->n_layer; l++)
            if (g->want[ss_site_id(c, SS_SITE_PATTERN, l)])
                return ss_errorf(SS_ERR_ARG, "gradients at blocks.%d.attn.hook_pattern are not available (the pattern "
                                 "is not a per-token value); ask for attn.hook_q, hook_k or hook_z", l);
    if (fwd && fwd->start_layer) return ss_errorf(SS_ERR_ARG, "a backward pass runs the whole model (start_layer 0)");
    if (m->pipe && g && g->wgrad)
        return ss_errorf(SS_ERR_UNSUPPORTED, "weight gradients over a pipeline of stages are not implemented");
    /* A pipeline stage: the last computes the metric and starts the backward
     * pass, each hands the gradient of its first block's input to the stage
     * before, the first ends it at the embeddings. */
    const int last_stage = m->end_layer == c->n_layer;

    ss_fb_pass *ps = ss_calloc(1, sizeof *ps, "forward-backward pass");
    if (!ps) return SS_ERR_NOMEM;
    *ps = (ss_fb_pass){.m = m, .be = be, .have_fwd = fwd != NULL, .have_g = g != NULL, .metric_out = metric_out,
                       .cv = {.be = be}};
    if (fwd) ps->fwd = *fwd;
    if (g) ps->g = *g;
    ps->fo = fwd ? *fwd : (ss_forward_opts){0};
    ps->fo.logits = metric->kind == SS_METRIC_LOSS ? SS_LOGITS_ALL : SS_LOGITS_LAST;
    ps->n_lrows = !last_stage ? 0 : ps->fo.logits == SS_LOGITS_ALL ? R : pk->n_seq;
    const int recompute = g && g->recompute;
    pass_bufs *p = &ps->p;
    carve *cv = &ps->cv;
    ss_status st = SS_ERR_NOMEM;
    ps->seq = ss_malloc((size_t)(2 * pk->n_seq) * sizeof(int64_t) + 1, "packing");
    p->tape.blocks = ss_malloc((size_t)c->n_layer * sizeof *p->tape.blocks, "tape");
    if (!ps->seq || !p->tape.blocks) goto done;
    memcpy(ps->seq, pk->start, (size_t)pk->n_seq * sizeof(int64_t));
    memcpy(ps->seq + pk->n_seq, pk->len, (size_t)pk->n_seq * sizeof(int64_t));
    ps->pk = (ss_packing){pk->n_seq, pk->rows, ps->seq, ps->seq + pk->n_seq, pk->first};
    pk = &ps->pk;
    lay_out(cv, p, m, R, ps->n_lrows, recompute, g != NULL);
    if ((st = be->alloc(be, cv->used, "activations kept for the backward pass", (void **)&cv->base))) goto done;
    cv->used = 0;
    lay_out(cv, p, m, R, ps->n_lrows, recompute, g != NULL);
    if ((st = ss_forward_taped(m, be, tokens, pk, &ps->fo, NULL, &p->tape))) goto done;
    if (last_stage && (st = metric_and_dlogits(m, be, tokens, pk, metric, p, ps->n_lrows, metric_out))) goto done;
    *out = ps;
    return SS_OK;
done:
    ss_fb_free(ps);
    return st;
}

/* How far down the backward pass must go. Its steps in order: 0, the final
 * norm's output (after the unembedding's gradient); then, block by block
 * from the top, nine phases, each the point where sites get their gradient:
 *   0 resid_post, mlp_out   1 mlp.hook_post      2 mlp.hook_pre(_linear)
 *   3 ln2                   4 resid_mid, attn_out 5 attn.hook_z
 *   6 q, k, v, rot_q, rot_k 7 ln1                8 resid_pre
 * and last the embeddings. Below the deepest wanted site nothing is read,
 * so the pass stops there (the lower blocks' gradients would cost as much
 * as their forward again) unless weight gradients are wanted. */
enum { BW_PHASES = 9 };

static int bw_step(const ss_config *c, int layer, int phase) {
    return 1 + (c->n_layer - 1 - layer) * BW_PHASES + phase;
}

static int bw_need(const ss_config *c, const ss_grad_opts *g) {
    if (g->wgrad) return INT_MAX;
    int need = -1;
    const int n = ss_sites_count(c);
    for (int i = 0; g->want && i < n; i++) {
        if (!g->want[i]) continue;
        ss_site s;
        ss_site_get(c, i, &s);
        int step;
        switch (s.kind) {
        case SS_SITE_LNF: step = 0; break;
        case SS_SITE_EMBED: case SS_SITE_POS_EMBED: step = bw_step(c, -1, 0); break;
        case SS_SITE_RESID_POST: case SS_SITE_MLP_OUT: step = bw_step(c, s.layer, 0); break;
        case SS_SITE_MLP_POST: step = bw_step(c, s.layer, 1); break;
        case SS_SITE_MLP_PRE: case SS_SITE_MLP_PRE_LINEAR: step = bw_step(c, s.layer, 2); break;
        case SS_SITE_LN2: step = bw_step(c, s.layer, 3); break;
        case SS_SITE_RESID_MID: case SS_SITE_ATTN_OUT: step = bw_step(c, s.layer, 4); break;
        case SS_SITE_Z: step = bw_step(c, s.layer, 5); break;
        case SS_SITE_LN1: step = bw_step(c, s.layer, 7); break;
        case SS_SITE_RESID_PRE: step = bw_step(c, s.layer, 8); break;
        default: step = bw_step(c, s.layer, 6); break; /* q, k, v, rot_q, rot_k */
        }
        if (step > need) need = step;
    }
    return need;
}

int ss_backward_gets_grad(const ss_model *m, const ss_grad_opts *g) {
    return g && m->end_layer < m->cfg.n_layer && bw_need(&m->cfg, g) >= bw_step(&m->cfg, m->end_layer - 1, 0);
}

ss_status ss_fb_backward(ss_fb_pass *ps) {
    const ss_model *m = ps->m;
    const ss_backend *be = ps->be;
    const ss_packing *pk = &ps->pk;
    const ss_forward_opts *fwd = ps->have_fwd ? &ps->fwd : NULL;
    const ss_grad_opts *g = ps->have_g ? &ps->g : NULL;
    double *metric_out = ps->metric_out;
    const ss_config *c = &m->cfg;
    const ss_dims D = ss_model_dims(c);
    const int64_t d = c->n_embd, dm = c->n_inner, V = c->vocab_size, R = pk->rows, kvw = D.Hkv * D.dh;
    const ss_gpt2_weights *w = ss_model_weights(m, be);
    const int last_stage = m->end_layer == c->n_layer;
    const ss_forward_opts fo = ps->fo;
    const int64_t n_lrows = ps->n_lrows;
    const int recompute = g && g->recompute;
    pass_bufs p = ps->p;
    ss_hook_ctx gh = {0}, rh = {0};
    ss_status st = SS_OK;

#define RUN(call) do { if ((st = (call))) goto done; } while (0)
    if (m->pipe && metric_out) { /* every stage gets the metric: from the last, down the stages with the gradient */
        const size_t bytes = (size_t)pk->n_seq * sizeof(double);
        if (!last_stage) st = ss_pipe_recv_bytes(m, m->stage + 1, SS_PIPE_TAG_METRIC, metric_out, bytes);
        if (!st && m->stage > 0) st = ss_pipe_send_bytes(m, m->stage - 1, SS_PIPE_TAG_METRIC, metric_out, bytes);
        if (st) {
            ss_error_context(st, "pipeline stage %d: the metric of the batch", m->stage);
            goto done;
        }
    }
    if (!g) goto done;

    ss_gpt2_weights *wg = g->wgrad;
    const int need = bw_need(c, g);
    const size_t Rd = (size_t)(R * d), Rdm = (size_t)(R * dm), Rq = (size_t)(R * D.qw), Rp = (size_t)(R * D.pw);
    const float scale = c->scale_attn_weights ? (float)(1.0 / sqrt((double)D.dh)) : 1.0f;
    const ss_forward_opts go = {.want = g->want, .hook = g->hook, .hook_ctx = g->hook_ctx, .read_only = 1,
                                .hook_on_device = g->hook_on_device};
    RUN(ss_hook_ctx_open(&gh, m, be, &go, pk));
    /* Editing forward hooks run again on recomputed blocks; read-only ones have nothing to redo. */
    if (recompute) RUN(ss_hook_ctx_open(&rh, m, be, fwd && !fwd->read_only ? fwd : NULL, pk));
    rh.pos_b = p.tape.pos_b;

    if (!last_stage) { /* the stage above sends its input's gradient when this stage needs it */
        if (!ss_backward_gets_grad(m, g)) goto delivered;
        RUN(ss_pipe_recv(m, be, m->stage + 1, SS_PIPE_TAG_GRAD, p.dx, Rd));
        goto blocks;
    }
    if (need < 0) goto delivered;
    /* Unembedding: logits = lnf · lm_headᵀ (of each sequence's last row only, for the last-token metrics). */
    if (fo.logits == SS_LOGITS_LAST) {
        if (wg) {
            for (int64_t s = 0; s < pk->n_seq; s++)
                RUN(be->copy_rows(be, p.last + s * d, p.tape.lnf + (pk->start[s] + pk->len[s] - 1) * d, d, 1, d));
            RUN(be->matmul_tn(be, (float *)wg->lm_head, p.tape.logits, p.last, n_lrows, d, V, 1));
        }
        RUN(be->matmul(be, p.last, p.tape.logits, w->lm_head, w->wdtype, NULL, n_lrows, d, V, 0));
        RUN(be->zero(be, p.dln, Rd * sizeof(float)));
        for (int64_t s = 0; s < pk->n_seq; s++)
            RUN(be->copy_rows(be, p.dln + (pk->start[s] + pk->len[s] - 1) * d, p.last + s * d, d, 1, d));
    } else {
        if (wg) RUN(be->matmul_tn(be, (float *)wg->lm_head, p.tape.logits, p.tape.lnf, R, d, V, 1));
        RUN(be->matmul(be, p.dln, p.tape.logits, w->lm_head, w->wdtype, NULL, R, d, V, 0));
    }
    RUN(ss_hook_site(&gh, SS_SITE_LNF, -1, p.dln, Rd, 0, d));
    RUN(be->zero(be, p.dx, Rd * sizeof(float)));
    RUN(norm_backward(be, c, p.dx, wg ? wg->lnf_w : NULL, wg ? wg->lnf_b : NULL, p.dln, p.tape.resid_final,
                      w->lnf_w, R));

blocks:
    for (int l = m->end_layer - 1; l >= m->first_layer; l--) {
        const ss_gpt2_layer *L = &w->layers[l];
        ss_gpt2_layer *G = wg ? &wg->layers[l] : NULL;
        ss_block_bufs b = p.tape.blocks[l];
#define PHASE(k) do { if (bw_step(c, l, (k)) > need) goto delivered; } while (0)
        PHASE(0);
        if (recompute && bw_step(c, l, 1) <= need) {
            b = p.scratch;
            b.save_pre = p.tape.blocks[l].save_pre;
            RUN(be->copy_rows(be, p.x_work, b.save_pre, d, R, d));
            ss_block_bufs run = b;
            run.save_pre = NULL;
            run.keep_pre = 1; /* gelu_backward reads it below */
            RUN(ss_block_forward(&rh, w, l, p.x_work, &run));
        }
        /* x_post = x_mid + mlp_out: both see the residual gradient dx. */
        RUN(ss_hook_site(&gh, SS_SITE_RESID_POST, l, p.dx, Rd, 0, d));
        RUN(ss_hook_site(&gh, SS_SITE_MLP_OUT, l, p.dx, Rd, 0, d));
        PHASE(1);
        RUN(ss_linear_dx(be, w, p.dh, p.dx, L->fc2_w, R, d, dm));
        if (G) {
            RUN(ss_linear_dw(be, w, (void *)G->fc2_w, b.post, p.dx, R, d, dm));
            if (G->fc2_b) RUN(be->sum_rows(be, (float *)G->fc2_b, p.dx, R, d));
        }
        RUN(ss_hook_site(&gh, SS_SITE_MLP_POST, l, p.dh, Rdm, 0, dm));
        PHASE(2);
        float *dpre = p.dh; /* the gradient at the MLP's first projection, [R, pw] */
        if (D.llama) {
            RUN(be->swiglu_backward(be, p.dgu, p.dh, b.pre, R, dm));
            dpre = p.dgu;
            RUN(ss_hook_site(&gh, SS_SITE_MLP_PRE, l, dpre, Rp, 0, D.pw));
            RUN(ss_hook_site(&gh, SS_SITE_MLP_PRE_LINEAR, l, dpre, Rp, dm, D.pw));
        } else {
            RUN(be->gelu_backward(be, p.dh, p.dh, b.pre, R * dm, c->act));
            RUN(ss_hook_site(&gh, SS_SITE_MLP_PRE, l, p.dh, Rdm, 0, dm));
        }
        PHASE(3);
        RUN(ss_linear_dx(be, w, p.dln, dpre, L->fc_w, R, D.pw, d));
        if (G) {
            RUN(ss_linear_dw(be, w, (void *)G->fc_w, b.ln2, dpre, R, D.pw, d));
            if (G->fc_b) RUN(be->sum_rows(be, (float *)G->fc_b, dpre, R, D.pw));
        }
        RUN(ss_hook_site(&gh, SS_SITE_LN2, l, p.dln, Rd, 0, d));
        PHASE(4);
        RUN(norm_backward(be, c, p.dx, G ? G->ln2_w : NULL, G ? G->ln2_b : NULL, p.dln, b.save_mid, L->ln2_w, R));
        /* x_mid = x_pre + attn_out. */
        RUN(ss_hook_site(&gh, SS_SITE_RESID_MID, l, p.dx, Rd, 0, d));
        RUN(ss_hook_site(&gh, SS_SITE_ATTN_OUT, l, p.dx, Rd, 0, d));
        PHASE(5);
        RUN(ss_linear_dx(be, w, p.dz, p.dx, L->proj_w, R, d, D.zw));
        if (G) {
            RUN(ss_linear_dw(be, w, (void *)G->proj_w, b.z, p.dx, R, d, D.zw));
            if (G->proj_b) RUN(be->sum_rows(be, (float *)G->proj_b, p.dx, R, d));
        }
        RUN(ss_hook_site(&gh, SS_SITE_Z, l, p.dz, (size_t)(R * D.zw), 0, D.zw));
        PHASE(6);
        RUN(be->attention_backward(be, p.dqkv, p.dqkv + D.zw, p.dqkv + D.zw + kvw, D.qw, p.dz, b.qkv, b.qkv + D.zw,
                                   b.qkv + D.zw + kvw, D.qw, pk->n_seq, pk->start, pk->len, D.H, D.Hkv, D.dh, scale));
        if (D.llama) {
            /* the tape holds rotated q and k; their gradients rotate back through the transpose */
            RUN(ss_hook_site(&gh, SS_SITE_ROT_Q, l, p.dqkv, Rq, 0, D.qw));
            RUN(ss_hook_site(&gh, SS_SITE_ROT_K, l, p.dqkv, Rq, D.zw, D.qw));
            RUN(be->rope(be, p.dqkv, D.qw, R, D.H + D.Hkv, D.dh, p.tape.pos_b, w->rope_inv_freq, 1));
        }
        RUN(ss_hook_site(&gh, SS_SITE_Q, l, p.dqkv, Rq, 0, D.qw));
        RUN(ss_hook_site(&gh, SS_SITE_K, l, p.dqkv, Rq, D.zw, D.qw));
        RUN(ss_hook_site(&gh, SS_SITE_V, l, p.dqkv, Rq, D.zw + kvw, D.qw));
        PHASE(7);
        RUN(ss_linear_dx(be, w, p.dln, p.dqkv, L->attn_w, R, D.qw, d));
        if (G) {
            RUN(ss_linear_dw(be, w, (void *)G->attn_w, b.ln1, p.dqkv, R, D.qw, d));
            if (G->attn_b) RUN(be->sum_rows(be, (float *)G->attn_b, p.dqkv, R, D.qw));
        }
        RUN(ss_hook_site(&gh, SS_SITE_LN1, l, p.dln, Rd, 0, d));
        PHASE(8);
        RUN(norm_backward(be, c, p.dx, G ? G->ln1_w : NULL, G ? G->ln1_b : NULL, p.dln, b.save_pre, L->ln1_w, R));
        RUN(ss_hook_site(&gh, SS_SITE_RESID_PRE, l, p.dx, Rd, 0, d));
#undef PHASE
    }
    if (m->first_layer > 0) {
        if (need >= bw_step(c, m->first_layer - 1, 0)) RUN(ss_pipe_send(m, be, m->stage - 1, SS_PIPE_TAG_GRAD, p.dx, Rd));
        goto delivered;
    }
    if (need < bw_step(c, -1, 0)) goto delivered;
    /* x_0 = wte[token] + wpe[position] (GPT-2) or wte[token]. */
    RUN(ss_hook_site(&gh, SS_SITE_EMBED, -1, p.dx, Rd, 0, d));
    RUN(ss_hook_site(&gh, SS_SITE_POS_EMBED, -1, p.dx, Rd, 0, d));
    if (wg) RUN(be->embed_backward(be, (float *)wg->wte, (float *)wg->wpe, p.dx, p.tape.tok_b, p.tape.pos_b, R, d));
delivered:
    RUN(ss_hook_ctx_deliver(&gh));
    RUN(be->sync(be));
#undef RUN
    ss_model_pipe_mark((ss_model *)m, 1);
done:
    ss_hook_ctx_close(&gh);
    ss_hook_ctx_close(&rh);
    ss_fb_free(ps);
    return st;
}

ss_status ss_forward_backward(const ss_model *m, const ss_backend *be, const int32_t *tokens, const ss_packing *pk,
                              const ss_forward_opts *fwd, const ss_metric *metric, const ss_grad_opts *g,
                              double *metric_out) {
    ss_fb_pass *ps = NULL;
    SS_TRY(ss_fb_forward(m, be, tokens, pk, fwd, metric, g, metric_out, &ps));
    return ss_fb_backward(ps);
}
