/* Causal attention backward that recomputes the probabilities instead of
 * storing them (the contract of ss_cuda_attention_backward, without its
 * 2 sum_s H len^2 workspace): for long contexts, where P and dS of every
 * (sequence, head) would not fit. The workspace is 3 floats per (row, head):
 * row max, 1/row sum and D_i = sum_j P_ij dP_ij.
 *
 * Same formulas and the same two-kernel, warp-per-row, atomic-free layout as
 * attention_backward.cu, and the same arithmetic in the same order, so the
 * result equals the stored variant's (bit for bit where the compiler
 * contracts the dot products alike in both, as the host compiler does):
 *  A. Per (sequence, head, query row i): sweep 1 computes the scores
 *     S_ij = (scale q_i).k_j with an online (max, sum) per lane; sweep 2
 *     recomputes them, P_ij = exp(S_ij - max) / sum and dP_ij = dz_i.v_j, and
 *     sums D_i; sweep 3 recomputes both, dS_ij = P_ij (dP_ij - D_i), and
 *     accumulates dq_i = scale sum_j dS_ij k_j (lanes over the columns). Lane
 *     0 stores (max, 1/sum, D_i).
 *  B. Per (sequence, key/value head, key row j): k_j and v_j in the warp's
 *     shared slice; lane t of each 32-row chunk recomputes S_ij, P_ij, dP_ij
 *     and dS_ij for query row i = i0 + t from q_i, dz_i and row i's stored
 *     statistics, and the warp accumulates dk_j = scale sum dS_ij q_i and
 *     dv_j = sum P_ij dz_i over the query heads sharing the key/value head,
 *     as the stored variant does.
 * Work: sweep A does three score passes and two dP passes where the stored
 * variant does one of each; B adds one of each per (i, j). Memory: O(rows H).
 * Limits as ss_cuda_attention_backward: dh <= 256, H <= 65535, Hkv | H. */
#include "ss_cuda.cuh"
#include "attn_bwd_rows.cuh"

#define RC_WARPS AB_WARPS
#define RC_NC_MAX AB_NC_MAX
#define RC_MAX_DH AB_MAX_DH

SS_KERNEL(ss_k_attn_bwd_rc_q, (float *, dq), (float *, stats), (int64_t, ld_d), (const float *, dz),
          (const float *, q), (const float *, k), (const float *, v), (int64_t, ld), (const int64_t *, start),
          (const int64_t *, len), (int64_t, n_rt), (int, group), (int, dh), (float, scale)) {
    __shared__ float sq[RC_WARPS][RC_MAX_DH], sdz[RC_WARPS][RC_MAX_DH];
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    const int64_t s = blockIdx.x / n_rt, i = (blockIdx.x % n_rt) * RC_WARPS + w;
    const int64_t L = len[s], r0 = start[s], h = blockIdx.y, H = gridDim.y;
    if (i >= L) return;
    const int64_t col = h * dh, kcol = (h / group) * dh, ldz = H * dh;
    const int nc = (dh + 31) / 32;
    float *qs = sq[w], *dzs = sdz[w];
    for (int e = lane; e < dh; e += 32) {
        qs[e] = q[(r0 + i) * ld + col + e] * scale;
        dzs[e] = dz[(r0 + i) * ldz + col + e];
    }
    __syncwarp();
    /* sweep 1: online max and sum of the scores */
    float mx, inv;
    ss_ab_row_stats(qs, k + r0 * ld + kcol, ld, i, lane, dh, NULL, &mx, &inv);
    /* sweep 2: D = sum_j P_ij dP_ij */
    float dd = 0.f;
    for (int64_t j = lane; j <= i; j += 32) {
        const float sc = ss_ab_dot(qs, k + (r0 + j) * ld + kcol, dh), dp = ss_ab_dot(dzs, v + (r0 + j) * ld + kcol, dh);
        dd += expf(sc - mx) * inv * dp;
    }
    const float D = ss_warp_sum(dd);
    /* sweep 3: dS, and dq = scale dS k with lanes over the columns */
    float o[RC_NC_MAX];
    SS_UNROLL
    for (int c = 0; c < RC_NC_MAX; c++) o[c] = 0.f;
    for (int64_t j0 = 0; j0 <= i; j0 += 32) {
        const int64_t j = j0 + lane;
        float ds = 0.f;
        if (j <= i) {
            const float sc = ss_ab_dot(qs, k + (r0 + j) * ld + kcol, dh),
                        dp = ss_ab_dot(dzs, v + (r0 + j) * ld + kcol, dh);
            ds = expf(sc - mx) * inv * (dp - D);
        }
        ss_ab_rows1(o, ds, (int)SS_MIN((int64_t)32, i + 1 - j0), k + (r0 + j0) * ld + kcol, ld, lane, nc, dh);
    }
    ss_ab_store(dq + (r0 + i) * ld_d + col, o, scale, lane, nc, dh);
    if (lane == 0) {
        float *st = stats + ((r0 + i) * H + h) * 3;
        st[0] = mx;
        st[1] = inv;
        st[2] = D;
    }
}

SS_KERNEL(ss_k_attn_bwd_rc_kv, (float *, dk), (float *, dv), (const float *, stats), (int64_t, ld_d),
          (const float *, dz), (const float *, q), (const float *, k), (const float *, v), (int64_t, ld),
          (const int64_t *, start), (const int64_t *, len), (int64_t, n_rt), (int, group), (int, dh), (float, scale)) {
    __shared__ float sk[RC_WARPS][RC_MAX_DH], sv[RC_WARPS][RC_MAX_DH];
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    const int64_t s = blockIdx.x / n_rt, j = (blockIdx.x % n_rt) * RC_WARPS + w;
    const int64_t L = len[s], r0 = start[s], hk = blockIdx.y, H = (int64_t)gridDim.y * group;
    if (j >= L) return;
    const int64_t ldz = H * dh;
    const int nc = (dh + 31) / 32;
    float *ks = sk[w], *vs = sv[w];
    for (int e = lane; e < dh; e += 32) {
        ks[e] = k[(r0 + j) * ld + hk * dh + e];
        vs[e] = v[(r0 + j) * ld + hk * dh + e];
    }
    __syncwarp();
    float ak[RC_NC_MAX], av[RC_NC_MAX];
    SS_UNROLL
    for (int c = 0; c < RC_NC_MAX; c++) ak[c] = av[c] = 0.f;
    for (int64_t h = hk * group; h < (hk + 1) * group; h++) {
        const int64_t col = h * dh;
        for (int64_t i0 = j; i0 < L; i0 += 32) {
            const int64_t i = i0 + lane;
            float p = 0.f, ds = 0.f;
            if (i < L) {
                /* kernel A's arithmetic for (i, j): (scale q_i).k_j, dz_i.v_j */
                const float *qr = q + (r0 + i) * ld + col, *zr = dz + (r0 + i) * ldz + col;
                const float *st = stats + ((r0 + i) * H + h) * 3;
                float sc = 0.f;
                for (int e = 0; e < dh; e++) sc += (qr[e] * scale) * ks[e]; /* qs of kernel A, formed alike */
                const float dp = ss_ab_dot(zr, vs, dh);
                p = expf(sc - st[0]) * st[1];
                ds = p * (dp - st[2]);
            }
            ss_ab_rows2(ak, av, ds, p, (int)SS_MIN((int64_t)32, L - i0), q + (r0 + i0) * ld + col, ld,
                        dz + (r0 + i0) * ldz + col, ldz, lane, nc, dh);
        }
    }
    ss_ab_store(dk + (r0 + j) * ld_d + hk * dh, ak, scale, lane, nc, dh);
    ss_ab_store(dv + (r0 + j) * ld_d + hk * dh, av, 1.f, lane, nc, dh);
}

SS_EXTERN_C int ss_cuda_attention_backward_rc(float *dq, float *dk, float *dv, int64_t ld_dqkv, const float *dz,
                                              const float *q, const float *k, const float *v, int64_t ld_qkv,
                                              int64_t n_seq, const int64_t *start, const int64_t *len, int64_t max_len,
                                              int64_t H, int64_t Hkv, int64_t dh, float scale, float *stats,
                                              cudaStream_t stream) {
    if (n_seq <= 0 || max_len <= 0 || H <= 0) return 0;
    if (dh <= 0 || dh > RC_MAX_DH || H > 65535 || Hkv < 1 || H % Hkv || ld_qkv < H * dh || ld_dqkv < H * dh || !stats)
        return 1;
    const int group = (int)(H / Hkv);
    int64_t n_rt = ss_cdiv(max_len, RC_WARPS);
    if (n_seq * n_rt > 0x7fffffff) return 1;
    SS_LAUNCH(ss_k_attn_bwd_rc_q, SS_DIM3(n_seq * n_rt, H, 1), 32 * RC_WARPS, 0, stream, dq, stats, ld_dqkv, dz, q, k,
              v, ld_qkv, start, len, n_rt, group, (int)dh, scale);
    int st = SS_LAUNCH_STATUS();
    if (st) return st;
    SS_LAUNCH(ss_k_attn_bwd_rc_kv, SS_DIM3(n_seq * n_rt, Hkv, 1), 32 * RC_WARPS, 0, stream, dk, dv, stats, ld_dqkv, dz,
              q, k, v, ld_qkv, start, len, n_rt, group, (int)dh, scale);
    return SS_LAUNCH_STATUS();
}
