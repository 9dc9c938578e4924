/* Forward mode (JVP) for trace's attribution: one primal forward of the
 * prompt keeps a tape (as the backward pass's), then per sub-model one
 * tangent pass pushes the direction "every covered activation a becomes
 * (1 + e)·a" through the model with the backend's ops. The model is causal,
 * so the tangent of log p(target_t) at every position t is, at once, the sum
 * over covered units at positions <= t of a · d log p_t / d a: the prefix
 * path's gradient x activation (docs/DECISIONS.md, "trace's attribution in
 * forward mode").
 *
 * The tangent of each op: linear maps are the same products without the
 * bias; the rotation is rope again; the GELU's is gelu_backward's product
 * (an elementwise Jacobian is diagonal); the norms, SwiGLU and attention have
 * their own ops (norm_jvp, swiglu_jvp, attention_jvp). A seed is added to
 * the tangent where its site is in the forward pass, so a seed downstream of
 * another adds to what flows from it: the sum over sites of seed · gradient,
 * each site's gradient the total one, as the backward pass gives it. Where a
 * site's value is not on the tape (attn_out, mlp_out, the embeddings, a
 * Llama model's q and k before the rotation) it is recomputed with the
 * forward's op from what is. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "forward_internal.h"
#include "subscope/backward.h"
#include "subscope/masks.h"
#include "subscope/util.h"

ss_status ss_jvp_check(const ss_model *m, const ss_backend *be, const ss_mask *masks, int n_masks) {
    const ss_config *c = &m->cfg;
    if (!be->norm_jvp || !be->swiglu_jvp || !be->attention_jvp)
        return ss_errorf(SS_ERR_UNSUPPORTED, "backend %s has no forward-mode ops (norm_jvp, swiglu_jvp, attention_jvp)",
                         be->name);
    if (c->family == SS_FAMILY_LLAMA && !be->rope)
        return ss_errorf(SS_ERR_UNSUPPORTED, "backend %s has no rope op", be->name);
    if (m->pipe || m->first_layer > 0 || m->end_layer < c->n_layer)
        return ss_errorf(SS_ERR_UNSUPPORTED, "the model is split into pipeline stages (the forward-mode pass runs the "
                                             "whole model in one process)");
    for (int k = 0; k < n_masks; k++)
        for (int q = 0; q < masks[k].n_targets; q++) {
            ss_site s;
            ss_site_get(c, masks[k].targets[q].site_id, &s);
            if (!s.per_token || s.kind == SS_SITE_PATTERN)
                return ss_errorf(SS_ERR_UNSUPPORTED, "sub-model '%s': %s is not a per-token site", masks[k].name, s.name);
        }
    return SS_OK;
}

/* Buffers carved from one backend allocation (sized first with base NULL). */
typedef struct {
    char *base;
    size_t used;
} jcarve;

static void *jtake(jcarve *c, size_t bytes) {
    size_t at = c->used;
    c->used += (bytes + 255) & ~(size_t)255;
    return c->base ? c->base + at : NULL;
}

typedef struct {
    ss_tape tape;
    float *g_lnf;                    /* [n, d]: d log p_t / d lnf_t */
    float *tx, *tln, *tqkv, *tz, *tw, *tpre, *tpost; /* tangents: residual, norm, q|k|v, z, [n,d] scratch, MLP */
    float *pa, *pb;                  /* recomputed primal values: [n, max(d, qw)] each */
    int32_t *targets_b;
    float *weights_b, *loss_b;
} jbufs;

static void jlay_out(jcarve *c, jbufs *p, const ss_model *m, int64_t R) {
    const ss_config *cfg = &m->cfg;
    const ss_dims D = ss_model_dims(cfg);
    const size_t f = sizeof(float), Rf = (size_t)R * f, Rd = Rf * (size_t)D.d;
    const int64_t wide = D.qw > D.d ? D.qw : D.d;
    for (int l = 0; l < cfg->n_layer; l++) {
        ss_block_bufs *b = &p->tape.blocks[l];
        memset(b, 0, sizeof *b);
        b->save_pre = jtake(c, Rd), b->ln1 = jtake(c, Rd), b->qkv = jtake(c, Rf * (size_t)D.qw);
        b->z = jtake(c, Rf * (size_t)D.zw), b->save_mid = jtake(c, Rd), b->ln2 = jtake(c, Rd);
        b->pre = jtake(c, Rf * (size_t)D.pw), b->post = jtake(c, Rf * (size_t)D.dm);
    }
    p->tape.recompute = 0;
    p->tape.resid_final = jtake(c, Rd), p->tape.lnf = jtake(c, Rd);
    p->tape.logits = jtake(c, Rf * (size_t)cfg->vocab_size);
    p->tape.tok_b = jtake(c, (size_t)R * sizeof(int32_t)), p->tape.pos_b = jtake(c, (size_t)R * sizeof(int32_t));
    p->g_lnf = jtake(c, Rd);
    p->tx = jtake(c, Rd), p->tln = jtake(c, Rd), p->tqkv = jtake(c, Rf * (size_t)D.qw), p->tz = jtake(c, Rf * (size_t)D.zw);
    p->tw = jtake(c, Rd), p->tpre = jtake(c, Rf * (size_t)D.pw), p->tpost = jtake(c, Rf * (size_t)D.dm);
    p->pa = jtake(c, Rf * (size_t)wide), p->pb = jtake(c, Rf * (size_t)wide);
    p->targets_b = jtake(c, (size_t)R * sizeof(int32_t));
    p->weights_b = jtake(c, Rf), p->loss_b = jtake(c, Rf);
}

/* Adds the seed of mask mk at site (kind, layer), if it covers that site:
 * tangent[r, u] += primal[r, u] for its units u at its positions r, both
 * buffers [R, ld] with the site's units from column off. Host buffers
 * directly; a device's through host copies (the rows of one prompt). */
typedef struct {
    const ss_model *m;
    const ss_backend *be;
    const ss_mask *mk;
    int64_t R;
    float *h_p, *h_t; /* host staging, [R, widest] each (device backends) */
} seeder;

static ss_status seed(seeder *sd, ss_site_kind kind, int layer, const float *primal, float *tangent, int64_t off,
                      int64_t ld) {
    const ss_config *c = &sd->m->cfg;
    const int id = ss_site_id(c, kind, layer);
    if (id < 0) return SS_OK;
    const ss_mask_target *tg = NULL;
    for (int q = 0; q < sd->mk->n_targets; q++)
        if (sd->mk->targets[q].site_id == id) tg = &sd->mk->targets[q];
    if (!tg) return SS_OK;
    ss_site s;
    ss_site_get(c, id, &s);
    const ss_backend *be = sd->be;
    const int64_t R = sd->R, nu = tg->n_units ? tg->n_units : s.width;
    const size_t bytes = (size_t)(R * ld) * sizeof(float);
    const float *P = primal;
    float *T = tangent;
    if (!be->host_memory) {
        SS_TRY(be->download(be, sd->h_p, primal, bytes));
        SS_TRY(be->download(be, sd->h_t, tangent, bytes));
        P = sd->h_p, T = sd->h_t;
    }
    for (int64_t r = 0; r < R; r++) {
        if (sd->mk->n_positions) {
            int in = 0;
            for (int64_t i = 0; i < sd->mk->n_positions && !in; i++) in = sd->mk->positions[i] == r;
            if (!in) continue;
        }
        const float *pr = P + r * ld + off;
        float *tr = T + r * ld + off;
        for (int64_t j = 0; j < nu; j++) {
            const int64_t u = tg->n_units ? tg->units[j] : j;
            tr[u] += pr[u];
        }
    }
    if (!be->host_memory) SS_TRY(be->upload(be, tangent, sd->h_t, bytes));
    return SS_OK;
}

/* Whether mask mk covers site (kind, layer). */
static int covers(const ss_model *m, const ss_mask *mk, ss_site_kind kind, int layer) {
    const int id = ss_site_id(&m->cfg, kind, layer);
    for (int q = 0; id >= 0 && q < mk->n_targets; q++)
        if (mk->targets[q].site_id == id) return 1;
    return 0;
}

static ss_status norm_t(const ss_backend *be, const ss_config *c, float *dy, const float *dx, const float *x,
                        const void *w, int64_t R) {
    return be->norm_jvp(be, dy, dx, x, w, R, c->n_embd, (float)c->ln_eps, c->family == SS_FAMILY_LLAMA);
}

/* One tangent pass for mask mk: out[t * stride] = tangent of log p(target_t). */
static ss_status tangent_pass(const ss_model *m, const ss_backend *be, const ss_gpt2_weights *w, jbufs *p,
                              seeder *sd, const int64_t *start, const int64_t *len, int64_t R, const float *g_host,
                              float *t_host, double *out, int64_t stride) {
    const ss_config *c = &m->cfg;
    const ss_dims D = ss_model_dims(c);
    const int64_t d = D.d, kvw = D.Hkv * D.dh;
    const float scale = c->scale_attn_weights ? (float)(1.0 / sqrt((double)D.dh)) : 1.0f;
    const ss_mask *mk = sd->mk;
    SS_TRY(be->zero(be, p->tx, (size_t)(R * d) * sizeof(float)));
    /* the embeddings: not on the tape, recomputed as the forward computes them */
    if (covers(m, mk, SS_SITE_EMBED, -1) || covers(m, mk, SS_SITE_POS_EMBED, -1)) {
        SS_TRY(be->embed(be, p->pa, D.llama ? NULL : p->pb, p->tape.tok_b, p->tape.pos_b, w->wte, D.llama ? NULL : w->wpe,
                         w->wdtype, R, d));
        SS_TRY(seed(sd, SS_SITE_EMBED, -1, p->pa, p->tx, 0, d));
        if (!D.llama) SS_TRY(seed(sd, SS_SITE_POS_EMBED, -1, p->pb, p->tx, 0, d));
    }
    for (int l = 0; l < c->n_layer; l++) {
        const ss_gpt2_layer *L = &w->layers[l];
        const ss_block_bufs *b = &p->tape.blocks[l];
        SS_TRY(seed(sd, SS_SITE_RESID_PRE, l, b->save_pre, p->tx, 0, d));
        SS_TRY(norm_t(be, c, p->tln, p->tx, b->save_pre, L->ln1_w, R));
        SS_TRY(seed(sd, SS_SITE_LN1, l, b->ln1, p->tln, 0, d));
        SS_TRY(ss_linear(be, w, p->tqkv, p->tln, L->attn_w, NULL, R, D.qw, d));
        const float *qk = b->qkv; /* q and k as the hooks see them: before the rotation */
        if (D.llama && (covers(m, mk, SS_SITE_Q, l) || covers(m, mk, SS_SITE_K, l))) {
            SS_TRY(ss_linear(be, w, p->pa, b->ln1, L->attn_w, L->attn_b, R, D.qw, d));
            qk = p->pa;
        }
        SS_TRY(seed(sd, SS_SITE_Q, l, qk, p->tqkv, 0, D.qw));
        SS_TRY(seed(sd, SS_SITE_K, l, qk, p->tqkv, D.zw, D.qw));
        SS_TRY(seed(sd, SS_SITE_V, l, b->qkv, p->tqkv, D.zw + kvw, D.qw));
        if (D.llama) {
            SS_TRY(be->rope(be, p->tqkv, D.qw, R, D.H + D.Hkv, D.dh, p->tape.pos_b, w->rope_inv_freq, 0));
            SS_TRY(seed(sd, SS_SITE_ROT_Q, l, b->qkv, p->tqkv, 0, D.qw));
            SS_TRY(seed(sd, SS_SITE_ROT_K, l, b->qkv, p->tqkv, D.zw, D.qw));
        }
        SS_TRY(be->attention_jvp(be, p->tz, p->tqkv, p->tqkv + D.zw, p->tqkv + D.zw + kvw, D.qw, b->qkv, b->qkv + D.zw,
                                 b->qkv + D.zw + kvw, D.qw, 1, start, len, D.H, D.Hkv, D.dh, scale));
        SS_TRY(seed(sd, SS_SITE_Z, l, b->z, p->tz, 0, D.zw));
        SS_TRY(ss_linear(be, w, p->tw, p->tz, L->proj_w, NULL, R, d, D.zw));
        if (covers(m, mk, SS_SITE_ATTN_OUT, l)) {
            SS_TRY(ss_linear(be, w, p->pa, b->z, L->proj_w, L->proj_b, R, d, D.zw));
            SS_TRY(seed(sd, SS_SITE_ATTN_OUT, l, p->pa, p->tw, 0, d));
        }
        SS_TRY(be->add(be, p->tx, p->tx, p->tw, R * d));
        SS_TRY(seed(sd, SS_SITE_RESID_MID, l, b->save_mid, p->tx, 0, d));
        SS_TRY(norm_t(be, c, p->tln, p->tx, b->save_mid, L->ln2_w, R));
        SS_TRY(seed(sd, SS_SITE_LN2, l, b->ln2, p->tln, 0, d));
        SS_TRY(ss_linear(be, w, p->tpre, p->tln, L->fc_w, NULL, R, D.pw, d));
        SS_TRY(seed(sd, SS_SITE_MLP_PRE, l, b->pre, p->tpre, 0, D.pw));
        if (D.llama) {
            SS_TRY(seed(sd, SS_SITE_MLP_PRE_LINEAR, l, b->pre, p->tpre, D.dm, D.pw));
            SS_TRY(be->swiglu_jvp(be, p->tpost, p->tpre, b->pre, R, D.dm));
        } else {
            SS_TRY(be->gelu_backward(be, p->tpost, p->tpre, b->pre, R * D.dm, c->act));
        }
        SS_TRY(seed(sd, SS_SITE_MLP_POST, l, b->post, p->tpost, 0, D.dm));
        SS_TRY(ss_linear(be, w, p->tw, p->tpost, L->fc2_w, NULL, R, d, D.dm));
        if (covers(m, mk, SS_SITE_MLP_OUT, l)) {
            SS_TRY(ss_linear(be, w, p->pa, b->post, L->fc2_w, L->fc2_b, R, d, D.dm));
            SS_TRY(seed(sd, SS_SITE_MLP_OUT, l, p->pa, p->tw, 0, d));
        }
        SS_TRY(be->add(be, p->tx, p->tx, p->tw, R * d));
        SS_TRY(seed(sd, SS_SITE_RESID_POST, l, l + 1 < c->n_layer ? p->tape.blocks[l + 1].save_pre : p->tape.resid_final,
                    p->tx, 0, d));
    }
    SS_TRY(norm_t(be, c, p->tln, p->tx, p->tape.resid_final, w->lnf_w, R));
    SS_TRY(seed(sd, SS_SITE_LNF, -1, p->tape.lnf, p->tln, 0, d));
    SS_TRY(be->download(be, t_host, p->tln, (size_t)(R * d) * sizeof(float)));
    for (int64_t t = 0; t < R; t++) {
        double s = 0;
        for (int64_t i = 0; i < d; i++) s += (double)t_host[t * d + i] * g_host[t * d + i];
        out[t * stride] = s;
    }
    return SS_OK;
}

ss_status ss_jvp_logprob(const ss_model *m, const ss_backend *be, const int32_t *tokens, int64_t n,
                         const int32_t *targets, const ss_mask *masks, int n_masks, double *out, double *logp_out,
                         void (*progress)(void *ctx, int64_t done, int64_t total), void *progress_ctx) {
    const ss_config *c = &m->cfg;
    const ss_dims D = ss_model_dims(c);
    const int64_t R = n, d = D.d, V = c->vocab_size;
    const ss_gpt2_weights *w = ss_model_weights(m, be);
    if (!w) return ss_errorf(SS_ERR_INTERNAL, "model weights were not placed on backend %s", be->name);
    SS_TRY(ss_jvp_check(m, be, masks, n_masks));
    if (!be->softmax_xent) return ss_errorf(SS_ERR_UNSUPPORTED, "backend %s has no softmax_xent", be->name);
    for (int64_t t = 0; t < n; t++)
        if (targets[t] < 0 || targets[t] >= V)
            return ss_errorf(SS_ERR_ARG, "forward mode: target %d at position %lld is outside the vocabulary", targets[t],
                             (long long)t);
    int64_t s0 = 0, ln = n;
    const ss_packing pk = {1, n, &s0, &ln, 0};
    jbufs p = {0};
    jcarve cv = {0};
    seeder sd = {.m = m, .be = be, .R = R};
    float *g_host = NULL, *t_host = NULL, *wt = NULL, *loss = NULL;
    ss_status st = SS_ERR_NOMEM;
    p.tape.blocks = ss_malloc((size_t)c->n_layer * sizeof *p.tape.blocks, "tape");
    int64_t widest = D.qw > D.pw ? D.qw : D.pw; /* the widest buffer a seed reads: q|k|v, the MLP's, or d */
    if (D.d > widest) widest = D.d;
    g_host = ss_malloc((size_t)(R * d) * sizeof(float), "forward-mode gradient");
    t_host = ss_malloc((size_t)(R * d) * sizeof(float), "forward-mode tangent");
    wt = ss_malloc((size_t)R * sizeof(float), "metric weights");
    loss = ss_malloc((size_t)R * sizeof(float), "metric values");
    if (!p.tape.blocks || !g_host || !t_host || !wt || !loss) goto done;
    if (!be->host_memory) {
        sd.h_p = ss_malloc((size_t)(R * widest) * sizeof(float), "seed staging");
        sd.h_t = ss_malloc((size_t)(R * widest) * sizeof(float), "seed staging");
        if (!sd.h_p || !sd.h_t) goto done;
    }
    jlay_out(&cv, &p, m, R);
    if ((st = be->alloc(be, cv.used, "forward-mode pass (tape and tangents)", (void **)&cv.base))) goto done;
    cv.used = 0;
    jlay_out(&cv, &p, m, R);
    /* The primal: the backward pass's forward (fp32 attention, every intermediate kept), all logits. */
    ss_forward_opts fo = {.logits = SS_LOGITS_ALL};
    if ((st = ss_forward_taped(m, be, tokens, &pk, &fo, NULL, &p.tape))) goto done;
    /* d log p_t / d logits_t = onehot(target) - softmax (softmax_xent with weight -1), then through the head:
     * d log p_t / d lnf_t, as the backward pass starts. */
    for (int64_t t = 0; t < R; t++) wt[t] = -1.f;
    if ((st = be->upload(be, p.targets_b, targets, (size_t)R * sizeof(int32_t))) ||
        (st = be->upload(be, p.weights_b, wt, (size_t)R * sizeof(float))) ||
        (st = be->softmax_xent(be, p.tape.logits, p.loss_b, p.tape.logits, p.targets_b, p.weights_b, R, V)) ||
        (st = be->matmul(be, p.g_lnf, p.tape.logits, w->lm_head, w->wdtype, NULL, R, d, V, 0)) ||
        (st = be->download(be, g_host, p.g_lnf, (size_t)(R * d) * sizeof(float))) ||
        (st = be->download(be, loss, p.loss_b, (size_t)R * sizeof(float))))
        goto done;
    if (logp_out)
        for (int64_t t = 0; t < R; t++) logp_out[t] = -(double)loss[t];
    for (int k = 0; k < n_masks; k++) {
        sd.mk = &masks[k];
        if ((st = tangent_pass(m, be, w, &p, &sd, &s0, &ln, R, g_host, t_host, out + k, n_masks))) {
            ss_error_context(st, "forward-mode pass of sub-model '%s'", masks[k].name);
            goto done;
        }
        if (progress) progress(progress_ctx, k + 1, n_masks);
    }
    st = be->sync(be);
done:
    if (cv.base) be->release(be, cv.base);
    free(p.tape.blocks);
    free(g_host), free(t_host), free(wt), free(loss), free(sd.h_p), free(sd.h_t);
    return st;
}
