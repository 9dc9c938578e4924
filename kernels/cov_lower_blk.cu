/* The covariance update's triangle in square blocks, for cuBLAS's batched
 * bf16 product (the host half is include/subscope/cov_blk.h).
 *
 * cuBLAS has no bf16 SYRK, and its full bf16 product of Xc^T Xc does twice
 * the work the lower triangle needs. Our own triangle kernels
 * (cov_lower_tc.cu on mma.sync, cov_lower_wg.cu on wgmma) skip the upper
 * tiles, but on an H100 they ran at 0.41-0.78x the full product's speed: the
 * product itself is slower than cuBLAS's by more than the half they save.
 * So this path cuts the lower triangle into square blocks of L x L (L a
 * multiple of 64, by default about d/8) and hands cuBLAS the blocks on or
 * below the diagonal as one batched product: with nb blocks a side that is
 * (nb + 1) / (2 nb) of the full product's work (0.5625 at nb = 8), each
 * block a product cuBLAS's Hopper kernels run at their usual rate. The
 * diagonal blocks are computed whole, so this path also writes the upper
 * triangles of its diagonal blocks (never beyond them): unlike the other
 * kernels, it leaves the rest of C's upper triangle alone but not that.
 *
 * Here: the centring (ss_cuda_cov_center, bf16, the same roundings as
 * cov_lower_tc.cu) and the batch's pointer arrays, written by a kernel so
 * that nothing waits for the host. Block b = I (I + 1) / 2 + J (I >= J, row
 * I of blocks) multiplies columns J and I of Xc: in cuBLAS's column-major
 * terms Xc is A [ldw, n], and the row-major lower block C[I, J] is the
 * column-major block at rows J, columns I of A A^T. The last row of blocks
 * may be narrower (last = d - (nb - 1) L); its blocks, and the corner, are
 * the second and third groups, since one batched call takes one shape.
 *
 * The blocks of one batched call are small products (at d 3072 and L 384,
 * 36 of 384 x 384 beside the diagonal), which cuBLAS ran at about half its
 * rate for the full product on an H100 (bench/README, fourth run). The rec
 * plan does the same work in fewer, larger products: the lower square of the
 * whole triangle's two halves (d/2 x d/2, half of all the work, one product
 * as large as cuBLAS likes them), then the lower squares of the four
 * quarters' pairs (one strided batch of two), and so on for k levels, then the
 * 2^k diagonal blocks of width L = d / 2^k (one strided batch). Its work is
 * that of blk with nb = 2^k, (2^k + 1) / 2^(k+1) of the full product, in
 * k + 1 calls and no pointer arrays. It needs d / 2^k to stay a multiple of
 * 8 (16-byte aligned operands), so it halves d only while d is a multiple of
 * 16: a width like 777 is one diagonal block, the full product. */
#include "ss_cuda.cuh"

SS_KERNEL(ss_k_cov_blk_ptrs, (const void **, pa), (const void **, pb), (void **, pc), (const uint16_t *, xc),
          (float *, c), (int64_t, ldc), (int64_t, leaf), (int64_t, blocks)) {
    const int64_t b = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (b >= blocks) return;
    int64_t bi = (int64_t)((sqrt(8.0 * (double)b + 1.0) - 1.0) * 0.5);
    while (bi * (bi + 1) / 2 > b) bi--;
    while ((bi + 1) * (bi + 2) / 2 <= b) bi++;
    const int64_t bj = b - bi * (bi + 1) / 2;
    pa[b] = xc + bj * leaf;
    pb[b] = xc + bi * leaf;
    pc[b] = c + bj * leaf + bi * leaf * ldc;
}

/* No rows: zeros in the lower triangle, and no product (cuBLAS is not asked for k = 0). */
SS_KERNEL(ss_k_cov_blk_zero, (float *, c), (int64_t, ldc)) {
    const int64_t i = blockIdx.x;
    for (int64_t j = threadIdx.x; j <= i; j += blockDim.x) c[i * ldc + j] = 0.f;
}

SS_EXTERN_C int64_t ss_cuda_cov_blk_leaf(int64_t d, int64_t leaf) {
    if (d <= 0) return 0;
    if (leaf <= 0) leaf = SS_MAX(256, ss_cdiv(d, 8));
    leaf = ss_cdiv(leaf, 64) * 64;
    return SS_MIN(leaf, d);
}

SS_EXTERN_C int64_t ss_cuda_cov_blk_ldw(int64_t d) { return d > 0 ? ss_cdiv(d, 8) * 8 : 0; }

/* The workspace: the centred rows (bf16, rows of ldw = d rounded up to 8),
 * then the three pointer arrays of nb (nb + 1) / 2 entries each. */
static void blk_sizes(int64_t n, int64_t d, int64_t leaf, int64_t *ldw, int64_t *blocks, size_t *xc_bytes) {
    const int64_t nb = ss_cdiv(d, leaf);
    *ldw = ss_cuda_cov_blk_ldw(d);
    *blocks = nb * (nb + 1) / 2;
    *xc_bytes = (size_t)ss_cdiv(n * *ldw * 2, 256) * 256;
}

SS_EXTERN_C int64_t ss_cuda_cov_lower_blk_ws(int64_t n, int64_t d, int64_t leaf) {
    if (n < 0 || d <= 0) return 0;
    int64_t ldw, blocks;
    size_t xc;
    blk_sizes(n, d, ss_cuda_cov_blk_leaf(d, leaf), &ldw, &blocks, &xc);
    return (int64_t)xc + 3 * blocks * (int64_t)sizeof(void *);
}

static void group(ss_cuda_cov_blk *p, int64_t m, int64_t n, int64_t batch, const void **a, const void **b, void **c) {
    ss_cuda_cov_blk_group *g = &p->g[p->groups++];
    g->m = (int)m, g->n = (int)n, g->batch = (int)batch, g->a = a, g->b = b, g->c = c;
}

/* What both plans check and do first: the arguments, the sizes cuBLAS takes
 * as int, n = 0 (zeros, no product), and the centring into ws (unless x is
 * NULL: the caller has centred the rows into ws). Returns 0 with *go = 1 when
 * the products are still to be planned. */
static int start(ss_cuda_cov_blk *p, int *go, float *c, int64_t ldc, const void *x, int xdtype, int64_t ldx,
                 const float *mean, int64_t n, int64_t d, int64_t ldw, int64_t blocks, void *ws, cudaStream_t stream) {
    const ss_cuda_cov_blk none = {0};
    *p = none;
    *go = 0;
    if (d <= 0) return 0;
    if (ldc < d || n < 0 || !ws || (x && (ldx < d || xdtype < SS_CUDA_F32 || xdtype > SS_CUDA_BF16))) return 1;
    if (n > 0x7fffffff || ldw > 0x7fffffff || ldc > 0x7fffffff || blocks > 0x7fffffff) return 1;
    if (n == 0) { /* d <= ldc fits an int, checked above */
        SS_LAUNCH(ss_k_cov_blk_zero, d, 256, 0, stream, c, ldc);
        return SS_LAUNCH_STATUS();
    }
    int e = x ? ss_cuda_cov_center((uint16_t *)ws, SS_CUDA_BF16, ldw, x, xdtype, ldx, NULL, mean, n, n, d, stream) : 0;
    if (e) return e;
    p->k = (int)n, p->lda = (int)ldw, p->ldc = (int)ldc;
    *go = 1;
    return 0;
}

SS_EXTERN_C int ss_cuda_cov_lower_blk_prepare(ss_cuda_cov_blk *p, float *c, int64_t ldc, const void *x, int xdtype,
                                              int64_t ldx, const float *mean, int64_t n, int64_t d, int64_t leaf,
                                              void *ws, cudaStream_t stream) {
    leaf = ss_cuda_cov_blk_leaf(d, leaf);
    int64_t ldw = 0, blocks = 0;
    size_t xc_bytes = 0;
    if (d > 0) blk_sizes(n, d, leaf, &ldw, &blocks, &xc_bytes);
    int go, e = start(p, &go, c, ldc, x, xdtype, ldx, mean, n, d, ldw, blocks, ws, stream);
    if (e || !go) return e;
    uint16_t *xc = (uint16_t *)ws;
    const void **pa = (const void **)((char *)ws + xc_bytes), **pb = pa + blocks;
    void **pc = (void **)(pb + blocks);
    SS_LAUNCH(ss_k_cov_blk_ptrs, ss_cdiv(blocks, 128), 128, 0, stream, pa, pb, pc, xc, c, ldc, leaf, blocks);
    if ((e = SS_LAUNCH_STATUS())) return e;
    const int64_t nb = ss_cdiv(d, leaf), last = d - (nb - 1) * leaf, inner = (nb - 1) * nb / 2;
    if (last == leaf) { /* every block the same shape: one call */
        group(p, leaf, leaf, blocks, pa, pb, pc);
        return 0;
    }
    if (inner) group(p, leaf, leaf, inner, pa, pb, pc);
    if (nb > 1) group(p, leaf, last, nb - 1, pa + inner, pb + inner, pc + inner);
    group(p, last, last, 1, pa + blocks - 1, pb + blocks - 1, pc + blocks - 1);
    return 0;
}

SS_EXTERN_C int64_t ss_cuda_cov_rec_leaf(int64_t d, int64_t leaf) {
    if (d <= 0) return 0;
    if (leaf <= 0) leaf = SS_MAX(256, ss_cdiv(d, 8));
    int64_t w = d;
    for (int levels = 0; w > leaf && w % 16 == 0 && levels < SS_CUDA_COV_GROUPS - 1; levels++) w /= 2;
    return w;
}

SS_EXTERN_C int64_t ss_cuda_cov_lower_rec_ws(int64_t n, int64_t d) {
    if (n < 0 || d <= 0) return 0;
    int64_t ldw, blocks;
    size_t xc;
    blk_sizes(n, d, d, &ldw, &blocks, &xc);
    return (int64_t)xc;
}

/* One strided batch: product i has its row-major lower block at rows
 * [r0 + i s, + n), columns [c0 + i s, + m) of C; in cuBLAS's column-major
 * terms the block at rows c0.., columns r0.. of A A^T (see the top). */
static void strided(ss_cuda_cov_blk *p, const uint16_t *xc, float *c, int64_t m, int64_t n, int64_t batch, int64_t r0,
                    int64_t c0, int64_t s) {
    ss_cuda_cov_blk_group *g = &p->g[p->groups++];
    g->m = (int)m, g->n = (int)n, g->batch = (int)batch;
    g->a = g->b = NULL, g->c = NULL;
    g->a0 = xc + c0, g->b0 = xc + r0, g->c0 = c + c0 + r0 * (int64_t)p->ldc;
    g->sab = s, g->sc = s * ((int64_t)p->ldc + 1);
}

SS_EXTERN_C int ss_cuda_cov_lower_rec_prepare(ss_cuda_cov_blk *p, float *c, int64_t ldc, const void *x, int xdtype,
                                              int64_t ldx, const float *mean, int64_t n, int64_t d, int64_t leaf,
                                              void *ws, cudaStream_t stream) {
    const int64_t L = ss_cuda_cov_rec_leaf(d, leaf), ldw = ss_cuda_cov_blk_ldw(d);
    int go, e = start(p, &go, c, ldc, x, xdtype, ldx, mean, n, d, ldw, d > 0 ? d / L : 0, ws, stream);
    if (e || !go) return e;
    const uint16_t *xc = (const uint16_t *)ws;
    /* level l: 2^(l-1) squares of w = d / 2^l, the one of half j at rows
     * [2wj + w, + w), columns [2wj, + w) */
    for (int64_t w = d / 2, count = 1; w >= L; w /= 2, count *= 2) strided(p, xc, c, w, w, count, w, 0, 2 * w);
    strided(p, xc, c, L, L, d / L, 0, 0, L);
    return 0;
}
