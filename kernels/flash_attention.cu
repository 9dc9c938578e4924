/* Fused causal attention for packed variable-length sequences, without the
 * attention pattern (flash-attention style: scores never leave the chip).
 * Same contract as ss_backend.attention (include/subscope/backend.h).
 *
 * Design: grid (n_seq * ceil(max_len/32), H); a block of 4 warps owns 32
 * query rows of one (sequence, head); blocks past their sequence's end exit
 * at once. The Q tile (pre-multiplied by scale) sits in shared memory; K and
 * V are walked in tiles of 32 keys, loaded cooperatively and coalesced, only
 * up to the block's last query row (causal). Per tile, lane j computes the
 * scores of key j against the warp's 8 query rows at once (K row padded to
 * dh+1 floats, so the 32 lanes hit 32 banks; the Q values are broadcasts),
 * then each row does an online-softmax update: running max m and sum l per
 * row (warp shuffles), probabilities through a per-warp shared buffer, and
 * o = o*alpha + P.V with lane owning output columns lane+32c in registers.
 * Everything is fp32 (the activations are fp32); exp is expf.
 * Shared memory: (32*dh + 32*(dh+1) + 32*dh + 4*8*32)*4 bytes: 25 KB at
 * dh=64, 50 KB at dh=128 (the launcher opts in above 48 KB), 99 KB at 256.
 * Grouped-query attention (Hkv < H key/value heads): the block of query
 * head h loads the K/V tiles of head h / (H/Hkv) straight from k and v;
 * nothing is repeated in memory, and the blocks of the H/Hkv query heads
 * sharing a key/value head read the same tiles (through L2).
 * Limits: dh <= 256; n_seq * ceil(max_len/32) < 2^31; H <= 65535. This is
 * a SIMT (CUDA-core) kernel: a tensor-core version (TF32/bf16 mma or wgmma)
 * would be faster on sm_90 but cannot run under the emulation. */
#include "ss_cuda.cuh"
#include "attn_tile.cuh"

SS_KERNEL(ss_k_attn_flash, (float *, z), (const float *, q), (const float *, k), (const float *, v), (int64_t, ld),
          (const int64_t *, start), (const int64_t *, len), (int64_t, n_qt), (int, group), (int, dh), (float, scale)) {
    SS_DYN_SHARED(float, smem);
    const int sk = dh + 1;
    float *Qs = smem;                 /* [ATT_BR][dh] */
    float *Ks = Qs + ATT_BR * dh;     /* [ATT_BC][dh+1] */
    float *Vs = Ks + ATT_BC * sk;     /* [ATT_BC][dh] */
    float *Ps = Vs + ATT_BC * dh;     /* [ATT_NW][ATT_RPW][ATT_BC] */
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    const int64_t s = blockIdx.x / n_qt, q0 = (blockIdx.x % n_qt) * ATT_BR;
    const int64_t L = len[s], r0 = start[s], h = blockIdx.y, H = gridDim.y;
    if (q0 >= L) return; /* the whole block leaves together */
    const int64_t nq = SS_MIN((int64_t)ATT_BR, L - q0);
    const int nc = (dh + 31) / 32;
    const int64_t col = h * dh, kcol = (h / group) * dh; /* q/z columns; k/v columns of the shared head */
    ss_att_load(Qs, dh, q + (r0 + q0) * ld + col, ld, nq, ATT_BR, dh, scale);

    float m[ATT_RPW], l[ATT_RPW], o[ATT_RPW][ATT_NC_MAX];
    SS_UNROLL
    for (int r = 0; r < ATT_RPW; r++) {
        m[r] = -INFINITY;
        l[r] = 0.f;
        SS_UNROLL
        for (int c = 0; c < ATT_NC_MAX; c++) o[r][c] = 0.f;
    }
    float *P = Ps + w * ATT_RPW * ATT_BC;
    const int64_t kv_end = q0 + nq; /* keys 0..kv_end-1 are visible to some row */
    for (int64_t j0 = 0; j0 < kv_end; j0 += ATT_BC) {
        const int64_t nk = SS_MIN((int64_t)ATT_BC, kv_end - j0);
        __syncthreads(); /* the previous tile is no longer read */
        ss_att_load(Ks, sk, k + (r0 + j0) * ld + kcol, ld, nk, ATT_BC, dh, 1.f);
        ss_att_load(Vs, dh, v + (r0 + j0) * ld + kcol, ld, nk, ATT_BC, dh, 1.f);
        __syncthreads();
        float sc[ATT_RPW];
        ss_att_scores(sc, Qs, Ks, sk, lane, w, dh);
        SS_UNROLL
        for (int r = 0; r < ATT_RPW; r++) {
            const int64_t qi = q0 + w + ATT_NW * r, j = j0 + lane;
            /* rows past the sequence end are computed (masked) but not stored */
            float sv = (j <= qi && lane < nk && w + ATT_NW * r < nq) ? sc[r] : -INFINITY;
            float mn = fmaxf(m[r], ss_warp_max(sv));
            float p = 0.f, alpha = 1.f;
            if (mn != -INFINITY) {
                p = sv == -INFINITY ? 0.f : expf(sv - mn);
                alpha = expf(m[r] - mn);
            }
            l[r] = l[r] * alpha + ss_warp_sum(p);
            m[r] = mn;
            P[r * ATT_BC + lane] = p;
            SS_UNROLL
            for (int c = 0; c < ATT_NC_MAX; c++) o[r][c] *= alpha;
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
        __syncwarp(); /* P is rewritten by the next tile */
    }
    SS_UNROLL
    for (int r = 0; r < ATT_RPW; r++) {
        int i = w + ATT_NW * r;
        if (i >= nq) continue;
        float inv = 1.f / l[r];
        float *zr = z + (r0 + q0 + i) * (H * dh) + col;
        SS_UNROLL
        for (int c = 0; c < ATT_NC_MAX; c++) {
            int e = lane + 32 * c;
            if (c < nc && e < dh) zr[e] = o[r][c] * inv;
        }
    }
}

static size_t ss_flash_smem(int64_t dh) {
    return (size_t)(ATT_BR * dh + ATT_BC * (dh + 1) + ATT_BC * dh + ATT_NW * ATT_RPW * ATT_BC) * sizeof(float);
}

SS_EXTERN_C int ss_cuda_attention_flash(float *z, const float *q, const float *k, const float *v, int64_t ld_qkv,
                                        int64_t n_seq, const int64_t *start, const int64_t *len, int64_t max_len,
                                        int64_t H, int64_t Hkv, int64_t dh, float scale, cudaStream_t stream) {
    if (n_seq <= 0 || max_len <= 0 || H <= 0) return 0;
    if (dh <= 0 || dh > ATT_MAX_DH || H > 65535 || Hkv < 1 || H % Hkv || ld_qkv < H * dh) return 1;
    int64_t n_qt = ss_cdiv(max_len, ATT_BR);
    if (n_seq * n_qt > 0x7fffffff) return 1;
    size_t smem = ss_flash_smem(dh);
    if (smem > 48 * 1024) SS_SET_MAX_DYN_SHARED(ss_k_attn_flash, smem);
    SS_LAUNCH(ss_k_attn_flash, SS_DIM3(n_seq * n_qt, H, 1), 32 * ATT_NW, smem, stream, z, q, k, v, ld_qkv, start, len,
              n_qt, (int)(H / Hkv), (int)dh, scale);
    return SS_LAUNCH_STATUS();
}
