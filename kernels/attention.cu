/* Causal attention for packed variable-length sequences that also writes
 * the attention pattern (the probabilities, for hook_pattern); the
 * contract is ss_backend.attention's (include/subscope/backend.h).
 *
 * Design: the tiling of flash_attention.cu (attn_tile.cuh): grid
 * (n_seq * ceil(max_len/32), H), 4 warps own 32 query rows, keys in tiles
 * of 32 (one per lane), 8 rows per warp at a time. Two sweeps over the key
 * tiles: the first computes the scaled scores, stores them in the pattern
 * rows (the output doubles as scratch, so there is no limit on the sequence
 * length) and keeps each row's running max m and sum l; the second turns
 * the stored scores into probabilities exp(s - m)/l in place and accumulates
 * z = P.V from V tiles in shared memory. Each lane reads back only what it
 * wrote itself, so no barrier is needed between the sweeps for the pattern.
 * Every pattern element of the sequence is written: zeros above the
 * diagonal, including the key tiles no query row of the block can see.
 * Pattern writes are 32 consecutive floats per warp store (coalesced); the
 * [H,len,len] pattern dominates the traffic, as it must.
 * Grouped-query attention as in flash_attention.cu: query head h reads the
 * K/V tiles of head h / (H/Hkv) in place (nothing repeated in memory).
 * Shared memory: (32*dh + 32*(dh+1) + 32*dh + 4*8*32)*4 bytes (opt-in above
 * 48 KB, i.e. dh > 120). Limits: dh <= 256; n_seq * ceil(max_len/32) < 2^31;
 * H <= 65535; pattern offsets and sizes as int64. */
#include "ss_cuda.cuh"
#include "attn_tile.cuh"

SS_KERNEL(ss_k_attn_pattern, (float *, z), (float *, pattern), (const float *, q), (const float *, k),
          (const float *, v), (int64_t, ld), (const int64_t *, start), (const int64_t *, len),
          (const int64_t *, pattern_off), (int64_t, n_qt), (int, group), (int, dh), (float, scale)) {
    SS_DYN_SHARED(float, smem);
    const int sk = dh + 1;
    float *Qs = smem;             /* [ATT_BR][dh] */
    float *Ks = Qs + ATT_BR * dh; /* [ATT_BC][dh+1] */
    float *Vs = Ks + ATT_BC * sk; /* [ATT_BC][dh] */
    float *Ps = Vs + ATT_BC * dh; /* [ATT_NW][ATT_RPW][ATT_BC] */
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    const int64_t s = blockIdx.x / n_qt, q0 = (blockIdx.x % n_qt) * ATT_BR;
    const int64_t L = len[s], r0 = start[s], h = blockIdx.y, H = gridDim.y;
    if (q0 >= L) return;
    const int64_t nq = SS_MIN((int64_t)ATT_BR, L - q0);
    const int nc = (dh + 31) / 32;
    const int64_t col = h * dh, kcol = (h / group) * dh; /* q/z columns; k/v columns of the shared head */
    float *pat = pattern + pattern_off[s] + h * L * L; /* row qi at pat + qi*L */
    ss_att_load(Qs, dh, q + (r0 + q0) * ld + col, ld, nq, ATT_BR, dh, scale);

    float m[ATT_RPW], l[ATT_RPW], o[ATT_RPW][ATT_NC_MAX];
    SS_UNROLL
    for (int r = 0; r < ATT_RPW; r++) {
        m[r] = -INFINITY;
        l[r] = 0.f;
        SS_UNROLL
        for (int c = 0; c < ATT_NC_MAX; c++) o[r][c] = 0.f;
    }
    const int64_t kv_end = q0 + nq;
    /* sweep 1: scores into the pattern, running max and sum per row */
    for (int64_t j0 = 0; j0 < kv_end; j0 += ATT_BC) {
        const int64_t nk = SS_MIN((int64_t)ATT_BC, kv_end - j0);
        __syncthreads();
        ss_att_load(Ks, sk, k + (r0 + j0) * ld + kcol, ld, nk, ATT_BC, dh, 1.f);
        __syncthreads();
        float sc[ATT_RPW];
        ss_att_scores(sc, Qs, Ks, sk, lane, w, dh);
        SS_UNROLL
        for (int r = 0; r < ATT_RPW; r++) {
            const int i = w + ATT_NW * r;
            const int64_t qi = q0 + i, j = j0 + lane;
            int vis = j <= qi && lane < nk && i < nq;
            float sv = vis ? sc[r] : -INFINITY;
            if (vis) pat[qi * L + j] = sv;
            float mn = fmaxf(m[r], ss_warp_max(sv));
            float p = 0.f, alpha = 1.f;
            if (mn != -INFINITY) {
                p = vis ? expf(sv - mn) : 0.f;
                alpha = expf(m[r] - mn);
            }
            l[r] = l[r] * alpha + ss_warp_sum(p);
            m[r] = mn;
        }
    }
    /* sweep 2: probabilities in place, z = P.V */
    float *P = Ps + w * ATT_RPW * ATT_BC;
    for (int64_t j0 = 0; j0 < kv_end; j0 += ATT_BC) {
        const int64_t nk = SS_MIN((int64_t)ATT_BC, kv_end - j0);
        __syncthreads();
        ss_att_load(Vs, dh, v + (r0 + j0) * ld + kcol, ld, nk, ATT_BC, dh, 1.f);
        __syncthreads();
        SS_UNROLL
        for (int r = 0; r < ATT_RPW; r++) {
            const int i = w + ATT_NW * r;
            const int64_t qi = q0 + i, j = j0 + lane;
            float p = 0.f;
            if (i < nq && lane < nk) {
                if (j <= qi) p = expf(pat[qi * L + j] - m[r]) / l[r];
                pat[qi * L + j] = p;
            }
            P[r * ATT_BC + lane] = p;
        }
        __syncwarp();
        for (int jj = 0; jj < nk; jj++) {
            SS_UNROLL
            for (int c = 0; c < ATT_NC_MAX; c++) {
                int e = lane + 32 * c;
                if (c < nc) {
                    float vv = e < dh ? Vs[jj * dh + e] : 0.f;
                    SS_UNROLL
                    for (int r = 0; r < ATT_RPW; r++) o[r][c] += P[r * ATT_BC + jj] * vv;
                }
            }
        }
        __syncwarp();
    }
    SS_UNROLL
    for (int r = 0; r < ATT_RPW; r++) {
        const int i = w + ATT_NW * r;
        if (i >= nq) continue;
        const int64_t qi = q0 + i;
        for (int64_t j = kv_end + lane; j < L; j += 32) pat[qi * L + j] = 0.f;
        float *zr = z + (r0 + qi) * (H * dh) + col;
        SS_UNROLL
        for (int c = 0; c < ATT_NC_MAX; c++) {
            int e = lane + 32 * c;
            if (c < nc && e < dh) zr[e] = o[r][c];
        }
    }
}

static size_t ss_pattern_smem(int64_t dh) {
    return (size_t)(ATT_BR * dh + ATT_BC * (dh + 1) + ATT_BC * dh + ATT_NW * ATT_RPW * ATT_BC) * sizeof(float);
}

SS_EXTERN_C int ss_cuda_attention_pattern(float *z, float *pattern, const float *q, const float *k, const float *v,
                                          int64_t ld_qkv, int64_t n_seq, const int64_t *start, const int64_t *len,
                                          const int64_t *pattern_off, int64_t max_len, int64_t H, int64_t Hkv,
                                          int64_t dh, float scale, cudaStream_t stream) {
    if (n_seq <= 0 || max_len <= 0 || H <= 0) return 0;
    if (dh <= 0 || dh > ATT_MAX_DH || H > 65535 || Hkv < 1 || H % Hkv || ld_qkv < H * dh || !pattern || !pattern_off)
        return 1;
    int64_t n_qt = ss_cdiv(max_len, ATT_BR);
    if (n_seq * n_qt > 0x7fffffff) return 1;
    size_t smem = ss_pattern_smem(dh);
    if (smem > 48 * 1024) SS_SET_MAX_DYN_SHARED(ss_k_attn_pattern, smem);
    SS_LAUNCH(ss_k_attn_pattern, SS_DIM3(n_seq * n_qt, H, 1), 32 * ATT_NW, smem, stream, z, pattern, q, k, v, ld_qkv,
              start, len, pattern_off, n_qt, (int)(H / Hkv), (int)dh, scale);
    return SS_LAUNCH_STATUS();
}
