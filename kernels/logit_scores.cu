/* Scores of logits rows for the metrics of `ablate`, computed where the
 * logits are so that only a few numbers per row leave the device (a
 * gpt2-small forward over 4096 rows has 823 MB of logits; copying them to
 * the host and scoring them there took 90% of an ablation sweep's time).
 *
 * ss_k_logit_scores, per row r of logits[rows,V]:
 *   lz[r]   = log sum_v exp(x[v])                          (fp64)
 *   best[r] = the first index of the row's largest value   (if best)
 *   kl[r]   = sum_v p(v) (log p(v) - log q(v))             (if kl)
 * with q = softmax(x) and p = softmax of reference row r % ref_rows (its
 * log-partition ref_lz[r % ref_rows]): the K copies of a batch in one masked
 * forward all compare with the same clean rows.
 *
 * Design: one 256-thread block per row (V is a vocabulary). Sweep 1: each
 * thread's largest value and its first index (strided, so a thread sees its
 * indices in increasing order; ties across threads go to the smaller index
 * when merged). Sweep 2: sum of exp(x - max) in fp64, as the CPU reference
 * computes it (the KL of a mask that barely changes the model is a small
 * difference of large terms: fp32 would leave nothing of it). Sweep 3 (KL):
 * sum of exp(lp) (lp - lq) in fp64. Merges: shuffles within warps, then the
 * 8 warps in warp order through shared memory (fixed order: deterministic).
 * H100s run fp64 at a third to a half of the fp32 rate, so the sweeps stay
 * bound by reading the logits.
 *
 * ss_k_gather: out[i] = src[idx[i]] (the target tokens' logits, a prompt's
 * answer and wrong logits), one thread per element. Limits: rows < 2^31. */
#include "ss_cuda.cuh"

#define LS_THREADS 256
#define LS_WARPS (LS_THREADS / 32)

SS_DEV double ls_warp_sum_d(double v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(SS_FULL_MASK, v, o);
    return v;
}

/* Block sum in fixed order: warp sums, then the warps in order by every thread. */
SS_DEV double ls_block_sum_d(double v, double *red) {
    v = ls_warp_sum_d(v);
    if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = v;
    __syncthreads();
    double s = 0;
    for (int i = 0; i < LS_WARPS; i++) s += red[i];
    __syncthreads();
    return s;
}

SS_KERNEL(ss_k_logit_scores, (double *, lz), (int32_t *, best), (double *, kl), (const float *, logits),
          (const float *, ref), (const double *, ref_lz), (int64_t, ref_rows), (int64_t, V)) {
    __shared__ float wm[LS_WARPS];
    __shared__ int64_t wi[LS_WARPS];
    __shared__ double red[LS_WARPS];
    const int64_t r = blockIdx.x;
    const float *x = logits + r * V;
    const int lane = threadIdx.x & 31, wid = threadIdx.x >> 5;
    float m = -INFINITY;
    int64_t mi = V; /* no value yet: larger than every index */
    for (int64_t i = threadIdx.x; i < V; i += LS_THREADS)
        if (mi == V || x[i] > m) m = x[i], mi = i;
    for (int o = 16; o > 0; o >>= 1) {
        float om = __shfl_xor_sync(SS_FULL_MASK, m, o);
        int64_t oi = __shfl_xor_sync(SS_FULL_MASK, mi, o);
        if (oi < V && (mi == V || om > m || (om == m && oi < mi))) m = om, mi = oi;
    }
    if (lane == 0) wm[wid] = m, wi[wid] = mi;
    __syncthreads();
    float mx = wm[0];
    int64_t bi = wi[0];
    for (int i = 1; i < LS_WARPS; i++)
        if (wi[i] < V && (bi == V || wm[i] > mx || (wm[i] == mx && wi[i] < bi))) mx = wm[i], bi = wi[i];
    double s = 0;
    for (int64_t i = threadIdx.x; i < V; i += LS_THREADS) s += exp((double)x[i] - (double)mx);
    const double z = (double)mx + log(ls_block_sum_d(s, red));
    if (threadIdx.x == 0) {
        lz[r] = z;
        if (best) best[r] = (int32_t)(bi < V ? bi : 0);
    }
    if (!kl) return;
    const int64_t rr = r % ref_rows;
    const float *p = ref + rr * V;
    const double zp = ref_lz[rr];
    double k = 0;
    for (int64_t i = threadIdx.x; i < V; i += LS_THREADS) {
        const double lp = (double)p[i] - zp, lq = (double)x[i] - z;
        k += exp(lp) * (lp - lq);
    }
    k = ls_block_sum_d(k, red);
    if (threadIdx.x == 0) kl[r] = k;
}

SS_KERNEL(ss_k_gather, (float *, out), (const float *, src), (const int64_t *, idx), (int64_t, n)) {
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = src[idx[i]];
}

SS_EXTERN_C int ss_cuda_logit_scores(double *lz, int32_t *best, double *kl, const float *logits, int64_t rows,
                                     int64_t V, const float *ref, const double *ref_lz, int64_t ref_rows,
                                     cudaStream_t stream) {
    if (rows <= 0 || V <= 0) return 0;
    if (rows > 0x7fffffff || V > 0x7fffffff || !lz || (kl && (!ref || !ref_lz || ref_rows <= 0))) return 1;
    SS_LAUNCH(ss_k_logit_scores, rows, LS_THREADS, 0, stream, lz, best, kl, logits, ref, ref_lz, ref_rows, V);
    return SS_LAUNCH_STATUS();
}

SS_EXTERN_C int ss_cuda_gather(float *out, const float *src, const int64_t *idx, int64_t n, cudaStream_t stream) {
    if (n <= 0) return 0;
    if (n > 0x7fffffffLL * 256) return 1;
    SS_LAUNCH(ss_k_gather, (n + 255) / 256, 256, 0, stream, out, src, idx, n);
    return SS_LAUNCH_STATUS();
}
