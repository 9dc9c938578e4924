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
