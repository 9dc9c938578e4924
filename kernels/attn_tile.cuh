/* Pieces shared by attention.cu (with the pattern) and flash_attention.cu:
 * the block's geometry and the cooperative loads of Q/K/V tiles into shared
 * memory. A block owns ATT_BR query rows of one head of one sequence and
 * walks the keys in tiles of ATT_BC; warp w owns query rows w, w+ATT_NW, ...
 * (interleaved, so causal work is balanced between warps). Each lane keeps
 * ATT_NC = ceil(dh/32) output columns (lane + 32c) in registers, so
 * dh <= 32*ATT_NC_MAX = 256. */
#ifndef SS_ATTN_TILE_CUH
#define SS_ATTN_TILE_CUH

#define ATT_BR 32                 /* query rows per block */
#define ATT_BC 32                 /* keys per tile: one per lane */
#define ATT_NW 4                  /* warps per block */
#define ATT_RPW (ATT_BR / ATT_NW) /* query rows per warp */
#define ATT_NC_MAX 8
#define ATT_MAX_DH (32 * ATT_NC_MAX)

/* Loads rows [r0, r0+n) x [0,dh) of a strided matrix into a shared tile with
 * row stride sld, times mul; rows n..nrows-1 of the tile are zeroed so that
 * masked lanes never read uninitialised (NaN-poisoned) shared memory. */
SS_DEV void ss_att_load(float *tile, int sld, const float *g, int64_t ld, int64_t n, int nrows, int dh, float mul) {
    int nt = blockDim.x;
    for (int idx = threadIdx.x; idx < nrows * dh; idx += nt) {
        int i = idx / dh, e = idx - i * dh;
        tile[i * sld + e] = i < n ? g[(int64_t)i * ld + e] * mul : 0.f;
    }
}

/* Raw scores of warp w's ATT_RPW query rows (in Qs, row stride dh) against
 * key `lane` of the current tile (in Ks, row stride sk): the dot products
 * both attention kernels start every tile with. */
SS_DEV void ss_att_scores(float *sc, const float *Qs, const float *Ks, int sk, int lane, int w, int dh) {
    SS_UNROLL
    for (int r = 0; r < ATT_RPW; r++) sc[r] = 0.f;
    const float *kr = Ks + lane * sk;
    for (int e = 0; e < dh; e++) {
        float kv = kr[e];
        SS_UNROLL
        for (int r = 0; r < ATT_RPW; r++) sc[r] += Qs[(w + ATT_NW * r) * dh + e] * kv;
    }
}

#endif
