/* The CPU reference for the backward ops (see backend.h). As in the forward
 * ops, per-row statistics (layernorm moments, softmax sums, the column sums
 * of weight gradients) accumulate in double so that this backend can serve
 * as the oracle for the CUDA kernels. */
#include <limits.h>
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_internal.h"
#include "subscope/util.h"

#ifdef SS_HAVE_BLAS
#include <cblas.h>
#endif

ss_status ss_cpu_zero(const ss_backend *be, void *p, size_t bytes) {
    if (bytes) memset(p, 0, bytes);
    return SS_OK;
}

typedef struct {
    float *C;
    const float *A, *B;
    int64_t M, N, K;
    int accumulate;
} tn_ctx;

/* Without BLAS: row k of C is sum_m A[m,k]·B[m,:], one row per task. */
static void tn_row(void *vctx, int64_t k) {
    const tn_ctx *c = vctx;
    float *crow = c->C + k * c->N;
    if (!c->accumulate) memset(crow, 0, (size_t)c->N * sizeof(float));
    for (int64_t m = 0; m < c->M; m++) {
        const float a = c->A[m * c->K + k], *brow = c->B + m * c->N;
        if (a != 0.f)
            for (int64_t j = 0; j < c->N; j++) crow[j] += a * brow[j];
    }
}

#ifdef SS_HAVE_BLAS
static void tn_slice(void *vctx, int64_t p) {
    const tn_ctx *c = vctx;
    const int64_t parts = ss_num_threads(), k0 = c->K * p / parts, k1 = c->K * (p + 1) / parts;
    if (k1 > k0)
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)(k1 - k0), (int)c->N, (int)c->M, 1.0f, c->A + k0,
                    (int)c->K, c->B, (int)c->N, c->accumulate ? 1.0f : 0.0f, c->C + k0 * c->N, (int)c->N);
}
#endif

ss_status ss_cpu_matmul_tn(const ss_backend *be, float *C, const float *A, const float *B, int64_t M, int64_t N,
                           int64_t K, int accumulate) {
    if (K <= 0 || N <= 0) return SS_OK;
    if (M > INT_MAX || N > INT_MAX || K > INT_MAX)
        return ss_errorf(SS_ERR_UNSUPPORTED, "matrix product %lld x %lld x %lld exceeds BLAS's 32-bit sizes", (long long)K,
                         (long long)N, (long long)M);
    tn_ctx c = {C, A, B, M, N, K, accumulate};
#ifdef SS_HAVE_BLAS
    if (M > 0) { /* a slice of C's rows per thread; BLAS itself runs single-threaded (cpu_ops.c) */
        ss_parallel_for(ss_num_threads(), tn_slice, &c);
        return SS_OK;
    }
#endif
    ss_parallel_for(K, tn_row, &c);
    return SS_OK;
}

/* The sums over rows (bias and norm weight gradients) run on the thread pool
 * by blocks of columns: each task adds its columns over all the rows in row
 * order, as one thread did, so the sums do not depend on the threads (nor on
 * the blocks' width). Narrow blocks read each row a few cache lines at a time,
 * a page apart, and ran slower on two threads than the whole rows on one: a
 * block is the columns over the pool's threads, 64 to COLB_MAX. */
#define COLB_MAX 1024

static int64_t col_block(int64_t n) {
    const int64_t w = ss_parallel_width(), cb = ((n + w - 1) / w + 15) / 16 * 16;
    return cb < 64 ? 64 : cb > COLB_MAX ? COLB_MAX : cb;
}

typedef struct {
    float *out;
    const float *x;
    int64_t M, N, cb;
} sumr_ctx;

static void sumr_task(void *vctx, int64_t task) {
    const sumr_ctx *c = vctx;
    const int64_t j0 = task * c->cb, nj = j0 + c->cb < c->N ? c->cb : c->N - j0;
    double acc[COLB_MAX] = {0};
    for (int64_t r = 0; r < c->M; r++) {
        const float *xr = c->x + r * c->N + j0;
        for (int64_t j = 0; j < nj; j++) acc[j] += xr[j];
    }
    for (int64_t j = 0; j < nj; j++) c->out[j0 + j] += (float)acc[j];
}

ss_status ss_cpu_sum_rows(const ss_backend *be, float *out, const float *x, int64_t M, int64_t N) {
    sumr_ctx c = {out, x, M, N, col_block(N)};
    ss_parallel_for((N + c.cb - 1) / c.cb, sumr_task, &c);
    return SS_OK;
}

typedef struct {
    float *dx, *dw, *db;
    const float *dy, *x, *w;
    double *stats; /* per row mean and rstd (layernorm) or rstd (rmsnorm), for the weight gradients; or NULL */
    int64_t rows, d, cb; /* cb: columns a task of the weight gradients */
    float eps;
} lnb_ctx;

#define LNB_ROWS 32

/* The input gradient of one row: with g = dy·w and xhat = (x - mean)·rstd,
 * dx = rstd·(g - mean(g) - xhat·mean(g·xhat)). */
static void lnb_task(void *vctx, int64_t task) {
    const lnb_ctx *c = vctx;
    const int64_t d = c->d, r1 = (task + 1) * LNB_ROWS < c->rows ? (task + 1) * LNB_ROWS : c->rows;
    for (int64_t r = task * LNB_ROWS; r < r1; r++) {
        const float *xr = c->x + r * d, *dyr = c->dy + r * d;
        double mean = 0, var = 0;
        for (int64_t i = 0; i < d; i++) mean += xr[i];
        mean /= (double)d;
        for (int64_t i = 0; i < d; i++) var += (xr[i] - mean) * (xr[i] - mean);
        var /= (double)d;
        const double rstd = 1.0 / sqrt(var + (double)c->eps);
        if (c->stats) c->stats[2 * r] = mean, c->stats[2 * r + 1] = rstd;
        if (!c->dx) continue;
        double mg = 0, mgx = 0;
        for (int64_t i = 0; i < d; i++) {
            double g = (double)dyr[i] * c->w[i];
            mg += g;
            mgx += g * (xr[i] - mean) * rstd;
        }
        mg /= (double)d;
        mgx /= (double)d;
        float *o = c->dx + r * d;
        for (int64_t i = 0; i < d; i++) {
            double g = (double)dyr[i] * c->w[i], xh = (xr[i] - mean) * rstd;
            o[i] += (float)(rstd * (g - mg - xh * mgx));
        }
    }
}

/* dw = sum_r dy·xhat and db = sum_r dy over a block of columns, in row order. */
static void lnb_dw_task(void *vctx, int64_t task) {
    const lnb_ctx *c = vctx;
    const int64_t d = c->d, i0 = task * c->cb, ni = i0 + c->cb < d ? c->cb : d - i0;
    double aw[COLB_MAX] = {0}, ab[COLB_MAX] = {0};
    for (int64_t r = 0; r < c->rows; r++) {
        const float *xr = c->x + r * d + i0, *dyr = c->dy + r * d + i0;
        const double mean = c->stats[2 * r], rstd = c->stats[2 * r + 1];
        for (int64_t i = 0; i < ni; i++) {
            aw[i] += (double)dyr[i] * (xr[i] - mean) * rstd;
            ab[i] += dyr[i];
        }
    }
    for (int64_t i = 0; i < ni; i++) {
        if (c->dw) c->dw[i0 + i] += (float)aw[i];
        if (c->db) c->db[i0 + i] += (float)ab[i];
    }
}

/* dx by blocks of rows, which also keep each row's mean and rstd when dw or
 * db is wanted; then those by blocks of columns. */
ss_status ss_cpu_layernorm_backward(const ss_backend *be, float *dx, float *dw, float *db, const float *dy,
                                    const float *x, const float *w, int64_t rows, int64_t d, float eps) {
    lnb_ctx c = {dx, dw, db, dy, x, w, NULL, rows, d, col_block(d), eps};
    if ((dw || db) && !(c.stats = ss_malloc((size_t)(2 * rows) * sizeof(double) + 1, "layernorm row statistics")))
        return SS_ERR_NOMEM;
    if (dx || c.stats) ss_parallel_for((rows + LNB_ROWS - 1) / LNB_ROWS, lnb_task, &c);
    if (c.stats) ss_parallel_for((d + c.cb - 1) / c.cb, lnb_dw_task, &c);
    free(c.stats);
    return SS_OK;
}

/* d/dx of the two GELUs the forward computes (cpu_ops.c gelu_task):
 *   erf:  0.5(1 + erf(x/√2)) + x·φ(x)
 *   tanh: with u = k(x + 0.044715x³) and s = sigmoid(2u) (the forward's
 *         0.5(1+tanh u)): s + x·2s(1-s)·k(1 + 3·0.044715x²). */
typedef struct {
    float *dx;
    const float *dy, *x;
    int64_t n;
    ss_act act;
} gelub_ctx;

#define GELUB_CHUNK 32768

static void gelub_task(void *vctx, int64_t task) {
    const gelub_ctx *c = vctx;
    const int64_t i1 = (task + 1) * GELUB_CHUNK < c->n ? (task + 1) * GELUB_CHUNK : c->n;
    if (c->act == SS_ACT_GELU_ERF) {
        for (int64_t i = task * GELUB_CHUNK; i < i1; i++) {
            const double v = c->x[i];
            const double dg = 0.5 * (1.0 + erf(v * 0.70710678118654752)) + v * exp(-0.5 * v * v) * 0.39894228040143268;
            c->dx[i] = (float)(c->dy[i] * dg);
        }
    } else {
        const double k = 0.79788456080286536;
        for (int64_t i = task * GELUB_CHUNK; i < i1; i++) {
            const double v = c->x[i], u = k * (v + 0.044715 * v * v * v), s = 1.0 / (1.0 + exp(-2.0 * u));
            const double dg = s + v * 2.0 * s * (1.0 - s) * k * (1.0 + 3.0 * 0.044715 * v * v);
            c->dx[i] = (float)(c->dy[i] * dg);
        }
    }
}

ss_status ss_cpu_gelu_backward(const ss_backend *be, float *dx, const float *dy, const float *x, int64_t n,
                               ss_act act) {
    gelub_ctx c = {dx, dy, x, n, act};
    ss_parallel_for((n + GELUB_CHUNK - 1) / GELUB_CHUNK, gelub_task, &c);
    return SS_OK;
}

typedef struct {
    float *dq, *dk, *dv;
    int64_t ldd;
    const float *dz, *q, *k, *v;
    int64_t ld, H, group, dh; /* group = H / Hkv */
    const int64_t *start, *len;
    float scale;
    atomic_int failed;
} attnb_ctx;

/* The three rank-1 updates of one (query i, key j) pair; restrict lets them vectorise. */
static inline void attnb_row_update(float *restrict dqi, float *restrict dkj, float *restrict dvj,
                                    const float *restrict kj, const float *restrict qi, const float *restrict dzi,
                                    float g, float pj, int64_t dh) {
    for (int64_t e = 0; e < dh; e++) {
        dqi[e] += g * kj[e];
        dkj[e] += g * qi[e];
        dvj[e] += pj * dzi[e];
    }
}

/* One (sequence, key/value head) per task: that head's columns of dk and dv
 * belong to the task, so it accumulates them over the query heads that share
 * them without races. Per query row i the probabilities are recomputed as in
 * the forward, then with dp_j = dz_i·v_j and D = sum_j p_j·dp_j the score
 * gradient is ds_j = p_j(dp_j - D). As in the forward, K and V are first
 * transposed into [dh, n] scratch so that the two dot products over j are
 * contiguous multiply-adds that vectorise. */
static void attnb_task(void *vctx, int64_t task) {
    attnb_ctx *c = vctx;
    const int64_t Hkv = c->H / c->group, s = task / Hkv, hk = task % Hkv, n = c->len[s], r0 = c->start[s], dh = c->dh;
    const int64_t dmodel = c->H * dh;
    float *kt = ss_malloc((size_t)(2 * dh * n + 2 * n) * sizeof(float), "attention backward scratch"); /* as attn_task's */
    if (!kt) {
        atomic_store(&c->failed, 1);
        return;
    }
    float *vt = kt + dh * n, *p = vt + dh * n, *dp = p + n;
    for (int64_t j = 0; j < n; j++) {
        const float *kj = c->k + (r0 + j) * c->ld + hk * dh, *vj = c->v + (r0 + j) * c->ld + hk * dh;
        for (int64_t e = 0; e < dh; e++) kt[e * n + j] = kj[e], vt[e * n + j] = vj[e];
        memset(c->dk + (r0 + j) * c->ldd + hk * dh, 0, (size_t)dh * sizeof(float));
        memset(c->dv + (r0 + j) * c->ldd + hk * dh, 0, (size_t)dh * sizeof(float));
    }
    for (int64_t h = hk * c->group; h < (hk + 1) * c->group; h++)
        for (int64_t i = 0; i < n; i++) {
            const float *qi = c->q + (r0 + i) * c->ld + h * dh, *dzi = c->dz + (r0 + i) * dmodel + h * dh;
            for (int64_t j = 0; j <= i; j++) p[j] = dp[j] = 0.f;
            for (int64_t e = 0; e < dh; e++) {
                const float qe = qi[e] * c->scale, ze = dzi[e], *kr = kt + e * n, *vr = vt + e * n;
                for (int64_t j = 0; j <= i; j++) p[j] += qe * kr[j], dp[j] += ze * vr[j];
            }
            double mx = -INFINITY, sum = 0, D = 0;
            for (int64_t j = 0; j <= i; j++) mx = p[j] > mx ? p[j] : mx;
            for (int64_t j = 0; j <= i; j++) {
                double t = exp((double)p[j] - mx);
                p[j] = (float)t;
                sum += t;
            }
            for (int64_t j = 0; j <= i; j++) {
                p[j] = (float)(p[j] / sum);
                D += (double)p[j] * dp[j];
            }
            float *dqi = c->dq + (r0 + i) * c->ldd + h * dh;
            memset(dqi, 0, (size_t)dh * sizeof(float));
            for (int64_t j = 0; j <= i; j++)
                attnb_row_update(dqi, c->dk + (r0 + j) * c->ldd + hk * dh, c->dv + (r0 + j) * c->ldd + hk * dh,
                                 c->k + (r0 + j) * c->ld + hk * dh, qi, dzi, (float)(p[j] * (dp[j] - D)) * c->scale,
                                 p[j], dh);
        }
    free(kt);
}

ss_status ss_cpu_attention_backward(const ss_backend *be, float *dq, float *dk, float *dv, int64_t ld_dqkv,
                                    const float *dz, const float *q, const float *k, const float *v, int64_t ld_qkv,
                                    int64_t n_seq, const int64_t *start, const int64_t *len, int64_t H, int64_t Hkv,
                                    int64_t dh, float scale) {
    if (Hkv < 1 || H % Hkv)
        return ss_errorf(SS_ERR_ARG, "cpu: attention_backward: %lld key/value heads do not divide %lld heads",
                         (long long)Hkv, (long long)H);
    SS_TRY(ss_attn_seqs_check(be, "attention_backward", n_seq, start, len, -1));
    attnb_ctx c = {dq, dk, dv, ld_dqkv, dz, q, k, v, ld_qkv, H, H / Hkv, dh, start, len, scale, 0};
    ss_parallel_for(n_seq * Hkv, attnb_task, &c);
    if (atomic_load(&c.failed)) return ss_errorf(SS_ERR_NOMEM, "out of memory in attention backward scratch buffers");
    return SS_OK;
}

ss_status ss_cpu_embed_backward(const ss_backend *be, float *dwte, float *dwpe, const float *dx,
                                const int32_t *tokens, const int32_t *pos, int64_t n, int64_t d) {
    for (int64_t i = 0; i < n; i++) {
        const float *g = dx + i * d;
        float *t = dwte ? dwte + (int64_t)tokens[i] * d : NULL, *p = dwpe ? dwpe + (int64_t)pos[i] * d : NULL;
        for (int64_t e = 0; e < d; e++) {
            if (t) t[e] += g[e];
            if (p) p[e] += g[e];
        }
    }
    return SS_OK;
}

typedef struct {
    float *dl, *loss;
    const float *lg;
    const int32_t *tg;
    const float *wt;
    int64_t V;
} xent_ctx;

static void xent_row(void *vctx, int64_t r) {
    const xent_ctx *c = vctx;
    const int64_t V = c->V;
    const float *x = c->lg + r * V;
    float *g = c->dl + r * V;
    const int32_t t = c->tg[r];
    if (t < 0) {
        c->loss[r] = 0.f;
        memset(g, 0, (size_t)V * sizeof(float));
        return;
    }
    double mx = -INFINITY, sum = 0;
    for (int64_t v = 0; v < V; v++) mx = x[v] > mx ? x[v] : mx;
    for (int64_t v = 0; v < V; v++) sum += exp((double)x[v] - mx);
    const double lz = mx + log(sum), xt = x[t], w = c->wt[r];
    c->loss[r] = (float)(lz - xt);
    for (int64_t v = 0; v < V; v++) g[v] = (float)(w * exp((double)x[v] - lz)); /* in place is safe: x[v] read first */
    g[t] -= (float)w;
}

ss_status ss_cpu_softmax_xent(const ss_backend *be, float *dlogits, float *loss, const float *logits,
                              const int32_t *targets, const float *weights, int64_t rows, int64_t V) {
    for (int64_t r = 0; r < rows; r++)
        if (targets[r] >= V)
            return ss_errorf(SS_ERR_ARG, "softmax_xent: target %d of row %lld is outside the vocabulary (%lld)",
                             targets[r], (long long)r, (long long)V);
    xent_ctx c = {dlogits, loss, logits, targets, weights, V};
    ss_parallel_for(rows, xent_row, &c);
    return SS_OK;
}

/* y = x·rstd·w with rstd = (mean(x²) + eps)^-1/2: per row, with g = dy·w,
 * dx = rstd·(g - x·rstd²·mean(g·x)); dw = sum_r dy·x·rstd. As layernorm's:
 * dx by blocks of rows keeping each row's rstd, then dw by blocks of columns. */
static void rmsb_task(void *vctx, int64_t task) {
    const lnb_ctx *c = vctx;
    const int64_t d = c->d, r1 = (task + 1) * LNB_ROWS < c->rows ? (task + 1) * LNB_ROWS : c->rows;
    for (int64_t r = task * LNB_ROWS; r < r1; r++) {
        const float *xr = c->x + r * d, *dyr = c->dy + r * d;
        double ss = 0, gx = 0;
        for (int64_t i = 0; i < d; i++) {
            ss += (double)xr[i] * xr[i];
            gx += (double)dyr[i] * c->w[i] * xr[i];
        }
        const double rstd = 1.0 / sqrt(ss / (double)d + (double)c->eps), k = rstd * rstd * gx / (double)d;
        if (c->stats) c->stats[r] = rstd;
        if (c->dx)
            for (int64_t i = 0; i < d; i++) c->dx[r * d + i] += (float)(rstd * ((double)dyr[i] * c->w[i] - xr[i] * k));
    }
}

/* dw over a block of columns, adding row by row into dw in row order as one thread did. */
static void rmsb_dw_task(void *vctx, int64_t task) {
    const lnb_ctx *c = vctx;
    const int64_t d = c->d, i0 = task * c->cb, ni = i0 + c->cb < d ? c->cb : d - i0;
    float *dw = c->dw + i0;
    for (int64_t r = 0; r < c->rows; r++) {
        const float *xr = c->x + r * d + i0, *dyr = c->dy + r * d + i0;
        const double rstd = c->stats[r];
        for (int64_t i = 0; i < ni; i++) dw[i] += (float)((double)dyr[i] * xr[i] * rstd);
    }
}

ss_status ss_cpu_rmsnorm_backward(const ss_backend *be, float *dx, float *dw, const float *dy, const float *x,
                                  const float *w, int64_t rows, int64_t d, float eps) {
    lnb_ctx c = {dx, dw, NULL, dy, x, w, NULL, rows, d, col_block(d), eps};
    if (dw && !(c.stats = ss_malloc((size_t)rows * sizeof(double) + 1, "rmsnorm row statistics"))) return SS_ERR_NOMEM;
    if (dx || dw) ss_parallel_for((rows + LNB_ROWS - 1) / LNB_ROWS, rmsb_task, &c);
    if (dw) ss_parallel_for((d + c.cb - 1) / c.cb, rmsb_dw_task, &c);
    free(c.stats);
    return SS_OK;
}

/* silu(g) = g·σ(g), silu'(g) = σ(g)(1 + g(1 - σ(g))). On the thread pool by
 * blocks of rows, about GELUB_CHUNK outputs a task (every element alone: the
 * values do not depend on the threads). */
typedef struct {
    float *dgu;
    const float *dy, *gu;
    int64_t rows, dm, per; /* per: rows a task */
} swiglub_ctx;

static void swiglub_task(void *vctx, int64_t task) {
    const swiglub_ctx *c = vctx;
    const int64_t dm = c->dm, r0 = task * c->per, r1 = r0 + c->per < c->rows ? r0 + c->per : c->rows;
    for (int64_t r = r0; r < r1; r++) {
        const float *g = c->gu + r * 2 * dm, *u = g + dm, *dyr = c->dy + r * dm;
        float *dg = c->dgu + r * 2 * dm, *du = dg + dm;
        for (int64_t i = 0; i < dm; i++) {
            const double sg = 1.0 / (1.0 + exp(-(double)g[i])), silu = g[i] * sg;
            dg[i] = (float)(dyr[i] * u[i] * sg * (1.0 + g[i] * (1.0 - sg)));
            du[i] = (float)(dyr[i] * silu);
        }
    }
}

ss_status ss_cpu_swiglu_backward(const ss_backend *be, float *dgu, const float *dy, const float *gu, int64_t rows,
                                 int64_t dm) {
    if (rows <= 0 || dm <= 0) return SS_OK;
    const int64_t per = dm < GELUB_CHUNK ? GELUB_CHUNK / dm : 1;
    swiglub_ctx c = {dgu, dy, gu, rows, dm, per};
    ss_parallel_for((rows + per - 1) / per, swiglub_task, &c);
    return SS_OK;
}

/* ---- forward mode (trace's attribution pass) ---- */

typedef struct {
    float *dy;
    const float *dx, *x, *w;
    int64_t rows, d;
    float eps;
    int rms;
} normj_ctx;

/* The norms' Jacobian times dx, a block of rows a task, row statistics in fp64:
 * LayerNorm: w·rstd·(dx - mean(dx) - xhat·mean(dx·xhat));
 * RMSNorm:   w·rstd·(dx - x·rstd²·mean(dx·x)). */
static void normj_task(void *vctx, int64_t task) {
    const normj_ctx *c = vctx;
    const int64_t d = c->d, r1 = (task + 1) * LNB_ROWS < c->rows ? (task + 1) * LNB_ROWS : c->rows;
    for (int64_t r = task * LNB_ROWS; r < r1; r++) {
        const float *xr = c->x + r * d, *dxr = c->dx + r * d;
        float *o = c->dy + r * d;
        if (c->rms) {
            double ss = 0, gx = 0;
            for (int64_t i = 0; i < d; i++) ss += (double)xr[i] * xr[i], gx += (double)dxr[i] * xr[i];
            const double rstd = 1.0 / sqrt(ss / (double)d + (double)c->eps), k = rstd * rstd * gx / (double)d;
            for (int64_t i = 0; i < d; i++) o[i] = (float)((double)c->w[i] * rstd * ((double)dxr[i] - xr[i] * k));
            continue;
        }
        double mean = 0, var = 0;
        for (int64_t i = 0; i < d; i++) mean += xr[i];
        mean /= (double)d;
        for (int64_t i = 0; i < d; i++) var += (xr[i] - mean) * (xr[i] - mean);
        var /= (double)d;
        const double rstd = 1.0 / sqrt(var + (double)c->eps);
        double mg = 0, mgx = 0;
        for (int64_t i = 0; i < d; i++) mg += dxr[i], mgx += (double)dxr[i] * (xr[i] - mean) * rstd;
        mg /= (double)d;
        mgx /= (double)d;
        for (int64_t i = 0; i < d; i++)
            o[i] = (float)((double)c->w[i] * rstd * ((double)dxr[i] - mg - (xr[i] - mean) * rstd * mgx));
    }
}

ss_status ss_cpu_norm_jvp(const ss_backend *be, float *dy, const float *dx, const float *x, const float *w,
                          int64_t rows, int64_t d, float eps, int rms) {
    (void)be;
    normj_ctx c = {dy, dx, x, w, rows, d, eps, rms};
    if (rows > 0 && d > 0) ss_parallel_for((rows + LNB_ROWS - 1) / LNB_ROWS, normj_task, &c);
    return SS_OK;
}

/* dout = silu'(g)·dg·u + silu(g)·du, every element alone (as swiglu_backward). */
typedef struct {
    float *dout;
    const float *dgu, *gu;
    int64_t rows, dm, per;
} swigluj_ctx;

static void swigluj_task(void *vctx, int64_t task) {
    const swigluj_ctx *c = vctx;
    const int64_t dm = c->dm, r0 = task * c->per, r1 = r0 + c->per < c->rows ? r0 + c->per : c->rows;
    for (int64_t r = r0; r < r1; r++) {
        const float *g = c->gu + r * 2 * dm, *u = g + dm, *dg = c->dgu + r * 2 * dm, *du = dg + dm;
        float *o = c->dout + r * dm;
        for (int64_t i = 0; i < dm; i++) {
            const double sg = 1.0 / (1.0 + exp(-(double)g[i])), silu = g[i] * sg;
            o[i] = (float)((double)dg[i] * u[i] * sg * (1.0 + g[i] * (1.0 - sg)) + (double)du[i] * silu);
        }
    }
}

ss_status ss_cpu_swiglu_jvp(const ss_backend *be, float *dout, const float *dgu, const float *gu, int64_t rows,
                            int64_t dm) {
    (void)be;
    if (rows <= 0 || dm <= 0) return SS_OK;
    const int64_t per = dm < GELUB_CHUNK ? GELUB_CHUNK / dm : 1;
    swigluj_ctx c = {dout, dgu, gu, rows, dm, per};
    ss_parallel_for((rows + per - 1) / per, swigluj_task, &c);
    return SS_OK;
}

typedef struct {
    float *dz;
    const float *dq, *dk, *dv, *q, *k, *v;
    int64_t ldd, ld, H, group, dh;
    const int64_t *start, *len;
    float scale;
    atomic_int failed;
} attnj_ctx;

/* One (sequence, query head) per task; per query row i the probabilities are
 * recomputed as in the forward (scores in fp32, softmax in fp64), then
 * ds_j = scale·(dq_i·k_j + q_i·dk_j), D = sum_j p_j ds_j and
 * dz_i = sum_j p_j·((ds_j - D)·v_j + dv_j), accumulated in fp64. */
static void attnj_task(void *vctx, int64_t task) {
    attnj_ctx *c = vctx;
    const int64_t s = task / c->H, h = task % c->H, hk = h / c->group, n = c->len[s], r0 = c->start[s], dh = c->dh;
    const int64_t dmodel = c->H * dh;
    double *buf = ss_malloc((size_t)(2 * n + dh) * sizeof(double), "attention tangent scratch");
    if (!buf) {
        atomic_store(&c->failed, 1);
        return;
    }
    double *p = buf, *ds = buf + n, *acc = ds + n;
    for (int64_t i = 0; i < n; i++) {
        const float *qi = c->q + (r0 + i) * c->ld + h * dh, *dqi = c->dq + (r0 + i) * c->ldd + h * dh;
        double mx = -INFINITY, sum = 0, D = 0;
        for (int64_t j = 0; j <= i; j++) {
            const float *kj = c->k + (r0 + j) * c->ld + hk * dh, *dkj = c->dk + (r0 + j) * c->ldd + hk * dh;
            float sc = 0;
            double t = 0;
            for (int64_t e = 0; e < dh; e++) {
                sc += qi[e] * c->scale * kj[e];
                t += (double)dqi[e] * kj[e] + (double)qi[e] * dkj[e];
            }
            p[j] = sc, ds[j] = t * c->scale;
            if (p[j] > mx) mx = p[j];
        }
        for (int64_t j = 0; j <= i; j++) sum += (p[j] = exp(p[j] - mx));
        for (int64_t j = 0; j <= i; j++) p[j] /= sum, D += p[j] * ds[j];
        for (int64_t e = 0; e < dh; e++) acc[e] = 0;
        for (int64_t j = 0; j <= i; j++) {
            const float *vj = c->v + (r0 + j) * c->ld + hk * dh, *dvj = c->dv + (r0 + j) * c->ldd + hk * dh;
            const double a = p[j] * (ds[j] - D);
            for (int64_t e = 0; e < dh; e++) acc[e] += a * vj[e] + p[j] * dvj[e];
        }
        float *o = c->dz + (r0 + i) * dmodel + h * dh;
        for (int64_t e = 0; e < dh; e++) o[e] = (float)acc[e];
    }
    free(buf);
}

ss_status ss_cpu_attention_jvp(const ss_backend *be, float *dz, const float *dq, const float *dk, const float *dv,
                               int64_t ld_dqkv, const float *q, const float *k, const float *v, int64_t ld_qkv,
                               int64_t n_seq, const int64_t *start, const int64_t *len, int64_t H, int64_t Hkv,
                               int64_t dh, float scale) {
    if (Hkv < 1 || H % Hkv)
        return ss_errorf(SS_ERR_ARG, "cpu: attention_jvp: %lld key/value heads do not divide %lld heads",
                         (long long)Hkv, (long long)H);
    SS_TRY(ss_attn_seqs_check(be, "attention_jvp", n_seq, start, len, -1));
    attnj_ctx c = {dz, dq, dk, dv, q, k, v, ld_dqkv, ld_qkv, H, H / Hkv, dh, start, len, scale, 0};
    ss_parallel_for(n_seq * H, attnj_task, &c);
    if (atomic_load(&c.failed)) return ss_errorf(SS_ERR_NOMEM, "out of memory in attention tangent scratch buffers");
    return SS_OK;
}
