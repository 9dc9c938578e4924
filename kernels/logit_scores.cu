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
 * Design: one 256-thread block per row (V is a vocabulary), and one sweep
 * over the row (two with KL: the row and its reference row, side by side).
 * Each thread keeps its largest value m, that value's first index, and
 * s = sum exp(x - m) in fp64 (the CPU reference's precision: the KL of a
 * mask that barely changes the model is a small difference of large
 * terms, and fp32 would leave nothing of it), rescaling s by exp(m - x)
 * when a larger x arrives: the online softmax of the flash-attention
 * kernels. A thread sees its indices in increasing order, so a strict >
 * keeps the first index of its largest value; merged, ties go to the
 * smaller index. The KL needs no second sweep either: with p = exp(lp),
 * lp = ref - zp (zp known), lq = x - z,
 *   sum p (lp - lq) = sum p (ref - x) + (z - zp) sum p,
 * so the sweep sums a = p (ref - x) and P = p, and the block adds
 * (z - zp) P once z is known. Both forms are 0 exactly for a row equal to
 * its reference. Merges: shuffles within warps, then the 8 warps in warp
 * order through shared memory (fixed order: deterministic). Until
 * 2026-11-27 the kernel swept a row twice (four times with KL): the largest
 * value first, then the sums; an H100 scored 4096 rows of 50257 in 1.45 ms
 * that way (1.1 TB/s if the second sweep missed L2). Each thread loads four
 * values before it uses them, so that loads overlap.
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

/* Folds value xv at index i into a thread's (m, mi, s): see the design above. */
SS_DEV void ls_fold(float xv, int64_t i, int64_t V, float *m, int64_t *mi, double *s) {
    if (xv > *m) {
        *s *= exp((double)*m - (double)xv); /* m = -inf: s is 0 and stays so */
        *m = xv, *mi = i;
    } else if (*mi == V) {
        *mi = i; /* the first value, when it is -inf or NaN */
    }
    if (xv != -INFINITY) *s += exp((double)xv - (double)*m);
}

/* (m, mi, s) merged with (om, oi, os): the larger m (ties: the smaller
 * index; index V: no value yet), s rescaled to it. */
SS_DEV void ls_merge(float *m, int64_t *mi, double *s, float om, int64_t oi, double os, int64_t V) {
    const float M = om > *m ? om : *m;
    const double a = *m == -INFINITY ? 0.0 : *s * exp((double)*m - (double)M),
                 b = om == -INFINITY ? 0.0 : os * exp((double)om - (double)M);
    if (oi < V && (*mi == V || om > *m || (om == *m && oi < *mi))) *mi = oi;
    *m = M;
    *s = a + b;
}

SS_KERNEL(ss_k_logit_scores, (double *, lz), (int32_t *, best), (double *, kl), (const float *, logits),
          (const float *, ref), (const double *, ref_lz), (int64_t, ref_rows), (int64_t, V)) {
    __shared__ float wm[LS_WARPS];
    __shared__ int64_t wi[LS_WARPS];
    __shared__ double ws[LS_WARPS], red[LS_WARPS];
    const int64_t r = blockIdx.x;
    const float *x = logits + r * V;
    const int lane = threadIdx.x & 31, wid = threadIdx.x >> 5;
    const float *p = kl ? ref + (r % ref_rows) * V : NULL;
    const double zp = kl ? ref_lz[r % ref_rows] : 0.0;
    float m = -INFINITY;
    int64_t mi = V; /* no value yet: larger than every index */
    double s = 0, a = 0, P = 0;
    int64_t i = threadIdx.x;
    for (; i + 3 * LS_THREADS < V; i += 4 * LS_THREADS) {
        float xv[4], pv[4];
        for (int u = 0; u < 4; u++) xv[u] = x[i + u * LS_THREADS];
        if (kl)
            for (int u = 0; u < 4; u++) pv[u] = p[i + u * LS_THREADS];
        for (int u = 0; u < 4; u++) {
            ls_fold(xv[u], i + u * LS_THREADS, V, &m, &mi, &s);
            if (kl) {
                const double e = exp((double)pv[u] - zp);
                a += e * ((double)pv[u] - (double)xv[u]), P += e;
            }
        }
    }
    for (; i < V; i += LS_THREADS) {
        ls_fold(x[i], i, V, &m, &mi, &s);
        if (kl) {
            const double e = exp((double)p[i] - zp);
            a += e * ((double)p[i] - (double)x[i]), P += e;
        }
    }
    for (int o = 16; o > 0; o >>= 1) {
        const float om = __shfl_xor_sync(SS_FULL_MASK, m, o);
        const int64_t oi = __shfl_xor_sync(SS_FULL_MASK, mi, o);
        const double os = __shfl_xor_sync(SS_FULL_MASK, s, o);
        ls_merge(&m, &mi, &s, om, oi, os, V);
    }
    if (lane == 0) wm[wid] = m, wi[wid] = mi, ws[wid] = s;
    __syncthreads();
    float mx = wm[0];
    int64_t bi = wi[0];
    double sum = ws[0];
    for (int w = 1; w < LS_WARPS; w++) ls_merge(&mx, &bi, &sum, wm[w], wi[w], ws[w], V);
    /* a row of -inf alone: NaN, as the CPU reference's exp(-inf - -inf) gives */
    const double z = mx == -INFINITY ? (double)NAN : (double)mx + log(sum);
    if (kl) {
        a = ls_block_sum_d(a, red);
        P = ls_block_sum_d(P, red);
    }
    if (threadIdx.x == 0) {
        lz[r] = z;
        if (best) best[r] = (int32_t)(bi < V ? bi : 0);
        if (kl) kl[r] = a + (z - zp) * P;
    }
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
