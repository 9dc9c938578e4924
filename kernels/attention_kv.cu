/* Causal attention of n_q new query rows against a key/value cache, as
 * ss_backend.attention_kv (include/subscope/backend.h): query row i (q, row
 * stride ld_q, H heads) is at position q0 + i and attends keys 0..q0+i of k
 * and v (row stride ld_kv, Hkv heads; query head h reads key/value head
 * h / (H/Hkv)); z is [n_q, H*dh]. predict --generate runs it with one query
 * row a token (the prompt's own pass, nothing cached, is the ordinary
 * attention: src/model/forward.c, attention_cached). k and v hold kv_dtype
 * elements: fp32, or a 16-bit model's bf16/fp16 cache (half the bytes), each
 * widened exactly where it is read; the arithmetic is fp32 either way.
 *
 * Design (flash-decoding): grid (n_q, H, S), a block of AKV_NW warps per
 * (query row, head, split of the keys). The query row, times scale, sits in
 * shared memory. Split s takes keys s*C .. s*C + C - 1 (C: the chunk, a
 * multiple of 32; the last split shorter, and a row's later splits empty
 * where it has fewer keys). Warp w walks the split's chunks of 32 keys w,
 * w + AKV_NW, ...: lane j takes the score of key j of the chunk (a dot
 * product of dh terms in e order, as the CPU op sums them), then the warp does
 * an online-softmax update (running max m and sum l; the chunk's
 * probabilities through a per-warp shared row) and o = o*alpha + P.V, lane
 * owning output columns lane + 32c in registers (coalesced reads of V's
 * rows). At the end the warps' (m, l, o) are merged in warp order through
 * shared memory (akv_weight: f = exp(m - M), 0 for a warp that saw no key)
 * and thread e writes column e: of z, normalised, where S = 1; else the
 * block's unnormalised (o, M, L) go to the workspace and a second kernel,
 * a block per (row, head), merges the S partials the same way, in split
 * order, and writes z. Shared memory is fixed (5.5 KB at any context
 * length); all arithmetic fp32, expf. Deterministic (no atomics, a fixed
 * order).
 *
 * The split: one block per (row, head) streams all the keys alone, and at a
 * decode step (one row) that is only H blocks (12 for GPT-2 small) for a
 * GPU's 132 SMs. ss_cuda_attention_kv_splits chooses S: 1 where n_q*H
 * blocks already reach the SM count or where the keys are fewer than
 * 2*AKV_SPLIT_KEYS; else about AKV_SPLIT_FILL blocks an SM, each split
 * keeping at least AKV_SPLIT_KEYS keys. It reads the SM count of the current
 * device (under the emulation a fixed AKV_EMU_SMS), so the result's last bits
 * can differ between GPUs of different SM counts (the merge regroups the
 * sums); on one GPU they are the same from run to run. The workspace holds
 * n_q*H*S partials of dh + 2 floats.
 *
 * Several rows at once read each key once per query row: K/V rows are not
 * shared between queries as the tiled kernels share them. Limits: dh <= 256,
 * H <= 65535, n_q < 2^31, splits <= 65535, Hkv dividing H, a workspace where
 * S > 1, else 1 (cudaErrorInvalidValue). */
#include "ss_cuda.cuh"

#define AKV_NW 4      /* warps per block */
#define AKV_DH_MAX 256
#define AKV_NC_MAX (AKV_DH_MAX / 32)
#define AKV_SPLIT_KEYS 256 /* the fewest keys the automatic choice gives a split */
#define AKV_SPLIT_FILL 4   /* ... and the blocks an SM it aims for */
#define AKV_EMU_SMS 16     /* the SM count under the emulation */

/* A partial softmax's weight in a merge: exp(m - M), 0 for one that saw no key (m = -inf). */
SS_DEV float akv_weight(float m, float M) { return m == -INFINITY ? 0.f : expf(m - M); }

SS_KERNEL(ss_k_attn_kv, (float *, z), (const float *, q), (int64_t, ld_q), (const void *, k), (const void *, v),
          (int, kvdt), (int64_t, ld_kv), (int64_t, q0), (int, group), (int, dh), (float, scale), (int64_t, chunk),
          (float *, part)) {
    __shared__ float Qs[AKV_DH_MAX];
    __shared__ float Ps[AKV_NW][32];
    __shared__ float Ms[AKV_NW], Ls[AKV_NW];
    __shared__ float Os[AKV_NW][AKV_DH_MAX];
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    const int64_t i = blockIdx.x, h = blockIdx.y, H = gridDim.y;
    const int64_t n = q0 + i + 1; /* keys 0..q0+i */
    const int64_t jb = (int64_t)blockIdx.z * chunk, je = SS_MIN(n, jb + chunk); /* this split's keys */
    const float *qi = q + i * ld_q + h * dh;
    const int64_t hk = (h / group) * dh; /* the key/value head's first column */
    for (int e = threadIdx.x; e < dh; e += blockDim.x) Qs[e] = qi[e] * scale;
    __syncthreads();
    const int nc = (dh + 31) / 32;
    float m = -INFINITY, l = 0.f, o[AKV_NC_MAX];
    SS_UNROLL
    for (int c = 0; c < AKV_NC_MAX; c++) o[c] = 0.f;
    float *P = Ps[w];
    for (int64_t j0 = jb + (int64_t)w * 32; j0 < je; j0 += AKV_NW * 32) {
        const int64_t j = j0 + lane;
        float s = -INFINITY;
        if (j < je) {
            const int64_t kj = hk + j * ld_kv;
            float acc = 0.f;
            for (int e = 0; e < dh; e++) acc += Qs[e] * ss_load_weight(k, kvdt, kj + e);
            s = acc;
        }
        const float mn = fmaxf(m, ss_warp_max(s)); /* finite: lane 0's key exists */
        const float alpha = expf(m - mn);         /* m = -inf: 0 */
        const float p = j < je ? expf(s - mn) : 0.f;
        l = l * alpha + ss_warp_sum(p);
        m = mn;
        __syncwarp(); /* the previous chunk's P is no longer read */
        P[lane] = p;
        __syncwarp();
        const int nk = (int)SS_MIN((int64_t)32, je - j0);
        SS_UNROLL
        for (int c = 0; c < AKV_NC_MAX; c++) o[c] *= alpha;
        for (int t = 0; t < nk; t++) {
            const float pt = P[t];
            const int64_t vj = hk + (j0 + t) * ld_kv;
            SS_UNROLL
            for (int c = 0; c < AKV_NC_MAX; c++) {
                const int e = lane + 32 * c;
                if (c < nc && e < dh) o[c] += pt * ss_load_weight(v, kvdt, vj + e);
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
        f[u] = akv_weight(Ms[u], M);
        L += Ls[u] * f[u];
    }
    if (part) {
        /* a split: the block's partial (o, M, L); M = -inf, L = 0, o = 0 where it had no key */
        float *pr = part + ((i * H + h) * gridDim.z + blockIdx.z) * (dh + 2);
        for (int e = threadIdx.x; e < dh; e += blockDim.x) {
            float acc = 0.f;
            for (int u = 0; u < AKV_NW; u++) acc += Os[u][e] * f[u];
            pr[e] = acc;
        }
        if (threadIdx.x == 0) pr[dh] = M, pr[dh + 1] = L;
        return;
    }
    const float inv = 1.f / L;
    float *zi = z + i * H * dh + h * dh;
    for (int e = threadIdx.x; e < dh; e += blockDim.x) {
        float acc = 0.f;
        for (int u = 0; u < AKV_NW; u++) acc += Os[u][e] * f[u];
        zi[e] = acc * inv;
    }
}

/* The S partials of (row blockIdx.x, head blockIdx.y), merged in split order
 * as the warps are above; split 0 holds key 0, so M is finite and L > 0. */
SS_KERNEL(ss_k_attn_kv_merge, (float *, z), (const float *, part), (int, S), (int, dh)) {
    const int64_t i = blockIdx.x, h = blockIdx.y, H = gridDim.y, pw = dh + 2;
    const float *pr = part + (i * H + h) * S * pw;
    float M = pr[dh];
    for (int s = 1; s < S; s++) M = fmaxf(M, pr[s * pw + dh]);
    float L = 0.f;
    for (int s = 0; s < S; s++) L += pr[s * pw + dh + 1] * akv_weight(pr[s * pw + dh], M);
    const float inv = 1.f / L;
    float *zi = z + i * H * dh + h * dh;
    for (int e = threadIdx.x; e < dh; e += blockDim.x) {
        float acc = 0.f;
        for (int s = 0; s < S; s++) acc += pr[s * pw + e] * akv_weight(pr[s * pw + dh], M);
        zi[e] = acc * inv;
    }
}

/* The SMs of the current device; 0 if it cannot be read (then no split). */
static int64_t akv_sms(void) {
#ifdef SS_CUDA_EMU
    return AKV_EMU_SMS;
#else
    int dev = 0, n = 0;
    if (cudaGetDevice(&dev) != cudaSuccess || cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess) {
        cudaGetLastError(); /* not left for the next launch's status */
        return 0;
    }
    return n;
#endif
}

SS_EXTERN_C int64_t ss_cuda_attention_kv_splits(int64_t n_q, int64_t q0, int64_t H) {
    const int64_t sms = akv_sms();
    if (n_q <= 0 || q0 < 0 || H < 1 || n_q * H >= sms) return 1;
    const int64_t s = SS_MIN(ss_cdiv(AKV_SPLIT_FILL * sms, n_q * H), (q0 + n_q) / AKV_SPLIT_KEYS);
    return s < 2 ? 1 : s;
}

/* The chunk of keys a split takes when at most `splits` split q0 + n_q keys, and how many that makes. */
static int64_t akv_chunk(int64_t keys, int64_t splits, int64_t *S) {
    const int64_t c = ss_cdiv(ss_cdiv(keys, splits), 32) * 32;
    *S = ss_cdiv(keys, c);
    return c;
}

SS_EXTERN_C int64_t ss_cuda_attention_kv_ws(int64_t n_q, int64_t q0, int64_t H, int64_t dh, int64_t splits) {
    int64_t S = 1;
    if (n_q <= 0 || q0 < 0 || H < 1 || dh < 1 || splits <= 1) return 0;
    /* Refused as the launch is: more splits than a grid's z takes (65535); and sizes that do not
     * fit: the keys (akv_chunk rounds them up) or the workspace, counted in bytes too. */
    if (splits > 65535 || n_q > INT64_MAX / 2 || q0 > INT64_MAX / 2 - n_q || dh > INT64_MAX / 2) return -1;
    akv_chunk(q0 + n_q, splits, &S);
    if (S <= 1) return 0;
    const int64_t lim = INT64_MAX / (int64_t)sizeof(float);
    if (n_q > lim / H || n_q * H > lim / S || n_q * H * S > lim / (dh + 2)) return -1;
    return n_q * H * S * (dh + 2);
}

SS_EXTERN_C int ss_cuda_attention_kv(float *z, const float *q, int64_t ld_q, const void *k, const void *v,
                                     int kv_dtype, int64_t ld_kv, int64_t n_q, int64_t q0, int64_t H, int64_t Hkv,
                                     int64_t dh, float scale, int64_t splits, float *ws, cudaStream_t stream) {
    if (n_q <= 0) return 0;
    if (dh < 1 || dh > AKV_DH_MAX || H < 1 || H > 65535 || Hkv < 1 || H % Hkv || n_q > 0x7fffffff || q0 < 0 ||
        ld_q < H * dh || ld_kv < Hkv * dh || splits > 65535 || kv_dtype < SS_CUDA_F32 || kv_dtype > SS_CUDA_BF16)
        return 1;
    const int64_t keys = q0 + n_q;
    int64_t S = 1, chunk = keys;
    if (splits > 1) chunk = akv_chunk(keys, splits, &S);
    if (S > 1 && !ws) return 1;
    SS_LAUNCH(ss_k_attn_kv, SS_DIM3(n_q, H, S), 32 * AKV_NW, 0, stream, z, q, ld_q, k, v, kv_dtype, ld_kv, q0,
              (int)(H / Hkv), (int)dh, scale, S > 1 ? chunk : keys, S > 1 ? ws : NULL);
    if (S > 1) {
        int rc = SS_LAUNCH_STATUS();
        if (rc) return rc;
        SS_LAUNCH(ss_k_attn_kv_merge, SS_DIM3(n_q, H, 1), (int)ss_cdiv(dh, 32) * 32, 0, stream, z, ws, (int)S, (int)dh);
    }
    return SS_LAUNCH_STATUS();
}
