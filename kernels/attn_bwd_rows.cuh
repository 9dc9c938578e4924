/* Pieces shared by attention_backward.cu (P and dS stored) and
 * attention_backward_rc.cu (recomputed): a warp accumulating rows with its
 * lanes over the dh columns, AB_NC_MAX columns per lane (lane + 32c), so
 * dh <= 256. Row t of a 32-row chunk is weighted by lane t's value,
 * broadcast by shuffle, rows in order: the same sums in the same order in
 * both kernels. */
#ifndef SS_ATTN_BWD_ROWS_CUH
#define SS_ATTN_BWD_ROWS_CUH

#define AB_WARPS 4
#define AB_NC_MAX 8
#define AB_MAX_DH (32 * AB_NC_MAX)

/* sum_e a[e] * b[e] for e in order: a score or a dP of one (query, key) pair. */
SS_DEV float ss_ab_dot(const float *a, const float *b, int dh) {
    float s = 0.f;
    for (int e = 0; e < dh; e++) s += a[e] * b[e];
    return s;
}

/* Softmax statistics of query row i over keys j <= i (lane j % 32 takes key
 * j; row j of the keys at k0 + j*ld): the scores qs.k_j, parked in park[j]
 * when park is non-NULL, an online (max, sum) per lane merged over the warp
 * into the row max *mx and 1/sum exp(score - max) *inv. */
SS_DEV void ss_ab_row_stats(const float *qs, const float *k0, int64_t ld, int64_t i, int lane, int dh, float *park,
                            float *mx, float *inv) {
    float m = -INFINITY, l = 0.f;
    for (int64_t j = lane; j <= i; j += 32) {
        const float sc = ss_ab_dot(qs, k0 + j * ld, dh);
        if (park) park[j] = sc;
        if (sc > m) {
            l = l * expf(m - sc) + 1.f;
            m = sc;
        } else {
            l += expf(sc - m);
        }
    }
    *mx = ss_warp_max(m);
    *inv = 1.f / ss_warp_sum(m == -INFINITY ? 0.f : l * expf(m - *mx));
}

/* acc[c] += (lane t's v) * row_t[lane + 32c] for rows t < n, row t at base + t*ld. */
SS_DEV void ss_ab_rows1(float *acc, float v, int n, const float *base, int64_t ld, int lane, int nc, int dh) {
    for (int t = 0; t < n; t++) {
        const float b = __shfl_sync(SS_FULL_MASK, v, t);
        const float *r = base + t * ld;
        SS_UNROLL
        for (int c = 0; c < AB_NC_MAX; c++) {
            int e = lane + 32 * c;
            if (c < nc && e < dh) acc[c] += b * r[e];
        }
    }
}

/* The same for two weighted sums over the same chunk: acc_a from va over
 * rows of a, acc_b from vb over rows of b. */
SS_DEV void ss_ab_rows2(float *acc_a, float *acc_b, float va, float vb, int n, const float *a, int64_t lda,
                        const float *b, int64_t ldb, int lane, int nc, int dh) {
    for (int t = 0; t < n; t++) {
        const float ba = __shfl_sync(SS_FULL_MASK, va, t), bb = __shfl_sync(SS_FULL_MASK, vb, t);
        const float *ra = a + t * lda, *rb = b + t * ldb;
        SS_UNROLL
        for (int c = 0; c < AB_NC_MAX; c++) {
            int e = lane + 32 * c;
            if (c < nc && e < dh) {
                acc_a[c] += ba * ra[e];
                acc_b[c] += bb * rb[e];
            }
        }
    }
}

/* out[lane + 32c] = scale * acc[c] for the lane's columns. */
SS_DEV void ss_ab_store(float *out, const float *acc, float scale, int lane, int nc, int dh) {
    SS_UNROLL
    for (int c = 0; c < AB_NC_MAX; c++) {
        int e = lane + 32 * c;
        if (c < nc && e < dh) out[e] = scale * acc[c];
    }
}

#endif
