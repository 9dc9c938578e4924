/* Causal attention of n_q new query rows against a key/value cache, as
 * ss_backend.attention_kv (include/subscope/backend.h): query row i (q, row
 * stride ld_q, H heads) is at position q0 + i and attends keys 0..q0+i of k
 * and v (row stride ld_kv, Hkv heads; query head h reads key/value head
 * h / (H/Hkv)); z is [n_q, H*dh]. predict --generate runs it with one query
 * row a token (the prompt's own pass, nothing cached, is the ordinary
 * attention: src/model/forward.c, attention_cached).
 *
 * Design (flash-decoding without the split): grid (n_q, H), a block of
 * AKV_NW warps per (query row, head). The query row, times scale, sits in
 * shared memory. Warp w walks the chunks of 32 keys w, w + AKV_NW, ...: lane
 * j takes the score of key j of the chunk (a dot product of dh terms in e
 * order, as the CPU op sums them), then the warp does an online-softmax
 * update (running max m and sum l; the chunk's probabilities through a
 * per-warp shared row) and o = o*alpha + P.V, lane owning output columns
 * lane + 32c in registers (coalesced reads of V's rows). At the end the warps'
 * (m, l, o) are merged in warp order through shared memory and thread e
 * writes column e. Shared memory is fixed (5.5 KB at any context
 * length); everything fp32, expf. Deterministic (no atomics, a fixed order).
 * Several rows at once read each key once per query row: K/V rows are not
 * shared between queries as the tiled kernels share them. Limits: dh <= 256, H <= 65535, n_q < 2^31,
 * Hkv dividing H, else 1 (cudaErrorInvalidValue). */
#include "ss_cuda.cuh"

#define AKV_NW 4      /* warps per block */
#define AKV_DH_MAX 256
#define AKV_NC_MAX (AKV_DH_MAX / 32)

SS_KERNEL(ss_k_attn_kv, (float *, z), (const float *, q), (int64_t, ld_q), (const float *, k), (const float *, v),
          (int64_t, ld_kv), (int64_t, q0), (int, group), (int, dh), (float, scale)) {
    __shared__ float Qs[AKV_DH_MAX];
    __shared__ float Ps[AKV_NW][32];
    __shared__ float Ms[AKV_NW], Ls[AKV_NW];
    __shared__ float Os[AKV_NW][AKV_DH_MAX];
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    const int64_t i = blockIdx.x, h = blockIdx.y, H = gridDim.y;
    const int64_t n = q0 + i + 1; /* keys 0..q0+i */
    const float *qi = q + i * ld_q + h * dh;
    const float *kh = k + (h / group) * dh, *vh = v + (h / group) * dh;
    for (int e = threadIdx.x; e < dh; e += blockDim.x) Qs[e] = qi[e] * scale;
    __syncthreads();
    const int nc = (dh + 31) / 32;
    float m = -INFINITY, l = 0.f, o[AKV_NC_MAX];
    SS_UNROLL
    for (int c = 0; c < AKV_NC_MAX; c++) o[c] = 0.f;
    float *P = Ps[w];
    for (int64_t j0 = (int64_t)w * 32; j0 < n; j0 += AKV_NW * 32) {
        const int64_t j = j0 + lane;
        float s = -INFINITY;
        if (j < n) {
            const float *kj = kh + j * ld_kv;
            float acc = 0.f;
            for (int e = 0; e < dh; e++) acc += Qs[e] * kj[e];
            s = acc;
        }
        const float mn = fmaxf(m, ss_warp_max(s)); /* finite: lane 0's key exists */
        const float alpha = expf(m - mn);         /* m = -inf: 0 */
        const float p = j < n ? expf(s - mn) : 0.f;
        l = l * alpha + ss_warp_sum(p);
        m = mn;
        __syncwarp(); /* the previous chunk's P is no longer read */
        P[lane] = p;
        __syncwarp();
        const int nk = (int)SS_MIN((int64_t)32, n - j0);
        SS_UNROLL
        for (int c = 0; c < AKV_NC_MAX; c++) o[c] *= alpha;
        for (int t = 0; t < nk; t++) {
            const float pt = P[t];
            const float *vj = vh + (j0 + t) * ld_kv;
            SS_UNROLL
            for (int c = 0; c < AKV_NC_MAX; c++) {
                const int e = lane + 32 * c;
                if (c < nc && e < dh) o[c] += pt * vj[e];
            }
        }
    }
    /* merge the warps in order; a warp that saw no key has m = -inf, l = 0 */
    if (lane == 0) Ms[w] = m, Ls[w] = l;
    SS_UNROLL
    for (int c = 0; c < AKV_NC_MAX; c++) {
        const int e = lane + 32 * c;
        if (c < nc && e < dh) Os[w][e] = o[c];
    }
    __syncthreads();
    float M = Ms[0];
    for (int u = 1; u < AKV_NW; u++) M = fmaxf(M, Ms[u]);
    float L = 0.f, f[AKV_NW];
    for (int u = 0; u < AKV_NW; u++) {
        f[u] = Ms[u] == -INFINITY ? 0.f : expf(Ms[u] - M);
        L += Ls[u] * f[u];
    }
    const float inv = 1.f / L;
    float *zi = z + i * H * dh + h * dh;
    for (int e = threadIdx.x; e < dh; e += blockDim.x) {
        float acc = 0.f;
        for (int u = 0; u < AKV_NW; u++) acc += Os[u][e] * f[u];
        zi[e] = acc * inv;
    }
}

SS_EXTERN_C int ss_cuda_attention_kv(float *z, const float *q, int64_t ld_q, const float *k, const float *v,
                                     int64_t ld_kv, int64_t n_q, int64_t q0, int64_t H, int64_t Hkv, int64_t dh,
                                     float scale, cudaStream_t stream) {
    if (n_q <= 0) return 0;
    if (dh < 1 || dh > AKV_DH_MAX || H < 1 || H > 65535 || Hkv < 1 || H % Hkv || n_q > 0x7fffffff || q0 < 0 ||
        ld_q < H * dh || ld_kv < Hkv * dh)
        return 1;
    SS_LAUNCH(ss_k_attn_kv, SS_DIM3(n_q, H, 1), 32 * AKV_NW, 0, stream, z, q, ld_q, k, v, ld_kv, q0,
              (int)(H / Hkv), (int)dh, scale);
    return SS_LAUNCH_STATUS();
}
