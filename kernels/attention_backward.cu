/* Causal attention backward for packed variable-length sequences (the
 * contract of ss_backend.attention_backward, include/subscope/backend.h):
 * given dz, the gradients dq, dk, dv, written (not accumulated).
 *
 * With S = scale q k^T (causal), P = softmax(S) by rows, z = P v:
 *   dP = dz v^T, D_i = sum_j P_ij dP_ij, dS = P (dP - D),
 *   dq = scale dS k, dk = scale dS^T q, dv = P^T dz.
 *
 * Design: two kernels, no atomics, so the result is deterministic. Both use
 * one warp per row, 4 independent warps per 128-thread block (no block
 * barriers; a warp past the end of its sequence returns).
 *  A. Per (sequence, head, query row i): q_i and dz_i go to the warp's
 *     shared slice; lane j of each 32-key chunk computes the score
 *     S_ij = scale q_i.k_j (k row read by that lane; rows stay in L1 across
 *     the dh loop) and keeps an online (max, sum) per lane, merged by
 *     shuffles; the raw scores are parked in the P workspace. Sweep 2
 *     turns them into P_ij in place, computes dP_ij = dz_i.v_j, parks dP in
 *     the dS workspace and sums D. Sweep 3 forms dS_ij = P_ij (dP_ij - D_i),
 *     stores it, and accumulates dq_i = scale sum_j dS_ij k_j with lanes
 *     over the dh columns (coalesced k rows, dS broadcast by shuffle). Each
 *     lane reads back only workspace elements it wrote itself.
 *  B. Per (sequence, key/value head, key row j): dk_j = scale sum_h
 *     sum_{i>=j} dS^h_ij q^h_i and dv_j = sum_h sum_{i>=j} P^h_ij dz^h_i over
 *     the query heads h sharing that key/value head (grouped-query
 *     attention; one head when Hkv = H), heads in order, lanes over the dh
 *     columns, 32 query rows at a time (lane i loads the column elements
 *     P_ij, dS_ij, broadcast by shuffle; q_i and dz_i rows read coalesced).
 *     One warp owns the whole sum of its dk/dv row: no atomics.
 * Kernel A of query head h reads k and v of head h / (H/Hkv) in place:
 * nothing is repeated in memory.
 * The workspace is P and dS for every (sequence, head) as [H,len,len] per
 * sequence at ws_off[s] (only i >= j is written or read); kernel B starts
 * after A on the same stream. Work is O(H len^2 dh) per sequence in each
 * kernel, read through L1/L2; it is not a tiled (FlashAttention-2 style)
 * backward -- simple and exact first.
 * Limits: dh <= 256 (8 columns per lane), H <= 65535, Hkv divides H,
 * n_seq * ceil(max_len/4) < 2^31. */
#include "ss_cuda.cuh"
#include "attn_bwd_rows.cuh"

SS_KERNEL(ss_k_attn_bwd_q, (float *, dq), (float *, P), (float *, dS), (int64_t, ld_d), (const float *, dz),
          (const float *, q), (const float *, k), (const float *, v), (int64_t, ld), (const int64_t *, start),
          (const int64_t *, len), (const int64_t *, ws_off), (int64_t, n_rt), (int, group), (int, dh), (float, scale)) {
    __shared__ float sq[AB_WARPS][AB_MAX_DH], sdz[AB_WARPS][AB_MAX_DH];
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    const int64_t s = blockIdx.x / n_rt, i = (blockIdx.x % n_rt) * AB_WARPS + w;
    const int64_t L = len[s], r0 = start[s], h = blockIdx.y, H = gridDim.y;
    if (i >= L) return;
    const int64_t col = h * dh, kcol = (h / group) * dh, ldz = H * dh; /* kcol: the shared key/value head */
    const int nc = (dh + 31) / 32;
    float *qs = sq[w], *dzs = sdz[w];
    for (int e = lane; e < dh; e += 32) {
        qs[e] = q[(r0 + i) * ld + col + e] * scale;
        dzs[e] = dz[(r0 + i) * ldz + col + e];
    }
    __syncwarp();
    float *Pr = P + ws_off[s] + (h * L + i) * L, *dSr = dS + ws_off[s] + (h * L + i) * L;
    /* sweep 1: scores (parked in P), online max and sum per lane */
    float mx, inv;
    ss_ab_row_stats(qs, k + r0 * ld + kcol, ld, i, lane, dh, Pr, &mx, &inv);
    /* sweep 2: P in place, dP = dz_i . v_j parked in dS, D = sum P dP */
    float dd = 0.f;
    for (int64_t j = lane; j <= i; j += 32) {
        const float dp = ss_ab_dot(dzs, v + (r0 + j) * ld + kcol, dh);
        float p = expf(Pr[j] - mx) * inv;
        Pr[j] = p;
        dSr[j] = dp;
        dd += p * dp;
    }
    const float D = ss_warp_sum(dd);
    /* sweep 3: dS, and dq = scale dS k with lanes over the columns */
    float o[AB_NC_MAX];
    SS_UNROLL
    for (int c = 0; c < AB_NC_MAX; c++) o[c] = 0.f;
    for (int64_t j0 = 0; j0 <= i; j0 += 32) {
        const int64_t j = j0 + lane;
        float ds = 0.f;
        if (j <= i) {
            ds = Pr[j] * (dSr[j] - D);
            dSr[j] = ds;
        }
        ss_ab_rows1(o, ds, (int)SS_MIN((int64_t)32, i + 1 - j0), k + (r0 + j0) * ld + kcol, ld, lane, nc, dh);
    }
    ss_ab_store(dq + (r0 + i) * ld_d + col, o, scale, lane, nc, dh);
}

SS_KERNEL(ss_k_attn_bwd_kv, (float *, dk), (float *, dv), (const float *, P), (const float *, dS), (int64_t, ld_d),
          (const float *, dz), (const float *, q), (int64_t, ld), (const int64_t *, start), (const int64_t *, len),
          (const int64_t *, ws_off), (int64_t, n_rt), (int, group), (int, dh), (float, scale)) {
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    const int64_t s = blockIdx.x / n_rt, j = (blockIdx.x % n_rt) * AB_WARPS + w;
    const int64_t L = len[s], r0 = start[s], hk = blockIdx.y, H = (int64_t)gridDim.y * group;
    if (j >= L) return;
    const int64_t ldz = H * dh;
    const int nc = (dh + 31) / 32;
    float ak[AB_NC_MAX], av[AB_NC_MAX];
    SS_UNROLL
    for (int c = 0; c < AB_NC_MAX; c++) ak[c] = av[c] = 0.f;
    /* the query heads sharing key/value head hk, in order: a fixed sum */
    for (int64_t h = hk * group; h < (hk + 1) * group; h++) {
        const int64_t col = h * dh;
        const float *Pc = P + ws_off[s] + h * L * L + j, *dSc = dS + ws_off[s] + h * L * L + j; /* row i at + i*L */
        for (int64_t i0 = j; i0 < L; i0 += 32) {
            const int64_t i = i0 + lane;
            float p = 0.f, ds = 0.f;
            if (i < L) {
                p = Pc[i * L];
                ds = dSc[i * L];
            }
            ss_ab_rows2(ak, av, ds, p, (int)SS_MIN((int64_t)32, L - i0), q + (r0 + i0) * ld + col, ld,
                        dz + (r0 + i0) * ldz + col, ldz, lane, nc, dh);
        }
    }
    ss_ab_store(dk + (r0 + j) * ld_d + hk * dh, ak, scale, lane, nc, dh);
    ss_ab_store(dv + (r0 + j) * ld_d + hk * dh, av, 1.f, lane, nc, dh);
}

SS_EXTERN_C int ss_cuda_attention_backward(float *dq, float *dk, float *dv, int64_t ld_dqkv, const float *dz,
                                           const float *q, const float *k, const float *v, int64_t ld_qkv,
                                           int64_t n_seq, const int64_t *start, const int64_t *len,
                                           const int64_t *ws_off, int64_t max_len, int64_t H, int64_t Hkv,
                                           int64_t dh, float scale, float *ws, int64_t ws_half, cudaStream_t stream) {
    if (n_seq <= 0 || max_len <= 0 || H <= 0) return 0;
    if (dh <= 0 || dh > AB_MAX_DH || H > 65535 || Hkv < 1 || H % Hkv || ld_qkv < H * dh || ld_dqkv < H * dh || !ws ||
        ws_half < 0)
        return 1;
    const int group = (int)(H / Hkv);
    int64_t n_rt = ss_cdiv(max_len, AB_WARPS);
    if (n_seq * n_rt > 0x7fffffff) return 1;
    float *P = ws, *dS = ws + ws_half;
    SS_LAUNCH(ss_k_attn_bwd_q, SS_DIM3(n_seq * n_rt, H, 1), 32 * AB_WARPS, 0, stream, dq, P, dS, ld_dqkv, dz, q, k, v,
              ld_qkv, start, len, ws_off, n_rt, group, (int)dh, scale);
    int st = SS_LAUNCH_STATUS();
    if (st) return st;
    SS_LAUNCH(ss_k_attn_bwd_kv, SS_DIM3(n_seq * n_rt, Hkv, 1), 32 * AB_WARPS, 0, stream, dk, dv, P, dS, ld_dqkv, dz,
              q, ld_qkv, start, len, ws_off, n_rt, group, (int)dh, scale);
    return SS_LAUNCH_STATUS();
}
