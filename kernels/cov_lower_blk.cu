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
 * At small d there are too few blocks to fill the GPU: at d 768 and L 256,
 * six blocks, 24 tiles of 128 x 128 for 132 SMs, each over all the rows.
 * cuBLAS's own full product splits its rows (K) for that, and a batched call
 * does not, so at d 768 this plan ran at 1.01x the full product on an H100.
 * So the rows can also be cut into slices of ks (a multiple of 64): each
 * block times each slice is a product of the same batch, written to its
 * slice's partial triangle, and ss_cuda_cov_sum_splits adds the partials in
 * slice order (deterministic; the count is the caller's, bounded by n). The
 * last slice reads zero rows past n. Timed on an H100 they were slower (d 768:
 * 0.054 ms with six slices, 0.035 without), so they run only when asked for
 * (kernel_bench times them; kernel_check and test_cov_blk check them).
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

/* Entry e = b S + s of the batch: block b's product over slice s of the
 * rows (ks rows from s ks; the workspace's rows past n are zeros), into C
 * itself (S = 1) or into partial triangle s (part, ldc = d). */
SS_KERNEL(ss_k_cov_blk_ptrs, (const void **, pa), (const void **, pb), (void **, pc), (const uint16_t *, xc),
          (float *, c), (int64_t, ldc), (int64_t, leaf), (int64_t, blocks), (int64_t, splits), (int64_t, slice),
          (int64_t, part_stride)) {
    const int64_t e = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (e >= blocks * splits) return;
    const int64_t b = e / splits, s = e - b * splits;
    int64_t bi = (int64_t)((sqrt(8.0 * (double)b + 1.0) - 1.0) * 0.5);
    while (bi * (bi + 1) / 2 > b) bi--;
    while ((bi + 1) * (bi + 2) / 2 <= b) bi++;
    const int64_t bj = b - bi * (bi + 1) / 2;
    pa[e] = xc + s * slice + bj * leaf;
    pb[e] = xc + s * slice + bi * leaf;
    pc[e] = c + s * part_stride + bj * leaf + bi * leaf * ldc;
}

/* No rows: zeros in the lower triangle, and no product (cuBLAS is not asked for k = 0). */
SS_KERNEL(ss_k_cov_blk_zero, (float *, c), (int64_t, ldc)) {
    const int64_t i = blockIdx.x;
    for (int64_t j = threadIdx.x; j <= i; j += blockDim.x) c[i * ldc + j] = 0.f;
}

/* The zero rows after n that the last slice reads. */
SS_KERNEL(ss_k_cov_blk_zero_rows, (uint16_t *, p), (int64_t, count)) {
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < count) p[i] = 0;
}

SS_EXTERN_C int64_t ss_cuda_cov_blk_leaf(int64_t d, int64_t leaf) {
    if (d <= 0) return 0;
    if (leaf <= 0) leaf = SS_MAX(256, ss_cdiv(d, 8));
    leaf = ss_cdiv(leaf, 64) * 64;
    return SS_MIN(leaf, d);
}

SS_EXTERN_C int64_t ss_cuda_cov_blk_ldw(int64_t d) { return d > 0 ? ss_cdiv(d, 8) * 8 : 0; }

/* Splitting the rows: a product's rows come in slices of ks (a multiple of
 * 64), every block times every slice one product of the batch, the slices'
 * partial triangles summed in slice order. Only when asked for (splits > 0;
 * at most one slice per 64 rows): the twenty-third session's H100 run timed
 * d 768's six default slices at 0.054 ms against 0.035 without
 * (docs/DECISIONS.md), so splits <= 0 means none. */
static int64_t blk_splits(int64_t n, int64_t splits, int64_t *ks) {
    const int64_t s = SS_MAX(1, SS_MIN(splits, ss_cdiv(n, 64)));
    *ks = s > 1 ? ss_cdiv(ss_cdiv(n, s), 64) * 64 : n;
    return s > 1 ? ss_cdiv(n, *ks) : 1;
}

SS_EXTERN_C int64_t ss_cuda_cov_blk_splits(int64_t n, int64_t splits) {
    int64_t ks;
    return n > 0 ? blk_splits(n, splits, &ks) : 1;
}

/* The workspace: the centred rows (bf16, rows of ldw = d rounded up to 8;
 * with slices, zero rows up to splits x ks), then the three pointer arrays
 * of nb (nb + 1) / 2 x splits entries each, then the partial triangles
 * (splits x d x d floats) when there are slices. */
typedef struct {
    int64_t ldw, blocks, splits, ks;
    size_t xc_bytes, ptr_bytes, part_bytes;
} blk_layout;

static blk_layout blk_sizes(int64_t n, int64_t d, int64_t leaf, int64_t splits) {
    blk_layout l;
    const int64_t nb = ss_cdiv(d, leaf);
    l.ldw = ss_cuda_cov_blk_ldw(d);
    l.blocks = nb * (nb + 1) / 2;
    l.splits = n > 0 ? blk_splits(n, splits, &l.ks) : 1;
    if (n <= 0) l.ks = 0;
    l.xc_bytes = (size_t)ss_cdiv(l.splits * l.ks * l.ldw * 2, 256) * 256;
    l.ptr_bytes = (size_t)ss_cdiv(3 * l.blocks * l.splits * (int64_t)sizeof(void *), 256) * 256;
    l.part_bytes = l.splits > 1 ? (size_t)(l.splits * d * d) * sizeof(float) : 0;
    return l;
}

SS_EXTERN_C int64_t ss_cuda_cov_lower_blk_ws(int64_t n, int64_t d, int64_t leaf, int64_t splits) {
    if (n < 0 || d <= 0) return 0;
    const blk_layout l = blk_sizes(n, d, ss_cuda_cov_blk_leaf(d, leaf), splits);
    return (int64_t)(l.xc_bytes + l.ptr_bytes + l.part_bytes);
}

static void group(ss_cuda_cov_blk *p, int64_t m, int64_t n, int64_t batch, const void **a, const void **b, void **c) {
    ss_cuda_cov_blk_group *g = &p->g[p->groups++];
    g->m = (int)m, g->n = (int)n, g->batch = (int)batch, g->a = a, g->b = b, g->c = c;
}

/* What both plans check and do first: the arguments, the sizes cuBLAS takes
 * as int, n = 0 (zeros, no product), and the centring into ws, zero rows up
 * to n_pad (unless x is NULL: the caller has centred the rows into ws). k:
 * each product's rows. Returns 0 with *go = 1 when the products are still to
 * be planned. */
static int start(ss_cuda_cov_blk *p, int *go, float *c, int64_t ldc, const void *x, int xdtype, int64_t ldx,
                 const float *mean, int64_t n, int64_t n_pad, int64_t k, int64_t d, int64_t ldw, int64_t blocks,
                 void *ws, cudaStream_t stream) {
    const ss_cuda_cov_blk none = {0};
    *p = none;
    *go = 0;
    if (d <= 0) return 0;
    if (ldc < d || n < 0 || !ws || (x && (ldx < d || xdtype < SS_CUDA_F32 || xdtype > SS_CUDA_BF16))) return 1;
    if (n_pad > 0x7fffffff || ldw > 0x7fffffff || ldc > 0x7fffffff || blocks > 0x7fffffff) return 1;
    if (n == 0) { /* d <= ldc fits an int, checked above */
        SS_LAUNCH(ss_k_cov_blk_zero, d, 256, 0, stream, c, ldc);
        return SS_LAUNCH_STATUS();
    }
    int e = x ? ss_cuda_cov_center((uint16_t *)ws, SS_CUDA_BF16, ldw, x, xdtype, ldx, NULL, mean, n, n_pad, d, stream)
              : 0;
    if (e) return e;
    p->k = (int)k, p->lda = (int)ldw, p->ldc = (int)ldc, p->splits = 1;
    *go = 1;
    return 0;
}

SS_EXTERN_C int ss_cuda_cov_lower_blk_prepare(ss_cuda_cov_blk *p, float *c, int64_t ldc, const void *x, int xdtype,
                                              int64_t ldx, const float *mean, int64_t n, int64_t d, int64_t leaf,
                                              int64_t splits, void *ws, cudaStream_t stream) {
    leaf = ss_cuda_cov_blk_leaf(d, leaf);
    blk_layout l = {0};
    if (d > 0 && n >= 0) l = blk_sizes(n, d, leaf, splits);
    const int64_t entries = l.blocks * l.splits, rows = l.splits * l.ks;
    int go, e = start(p, &go, c, ldc, x, xdtype, ldx, mean, n, rows, l.ks, d, l.ldw, entries, ws, stream);
    if (e || !go) return e;
    uint16_t *xc = (uint16_t *)ws;
    if (!x && rows > n) { /* rows centred by the caller: the slices' padding is still to be zeroed */
        const int64_t zeros = (rows - n) * l.ldw;
        SS_LAUNCH(ss_k_cov_blk_zero_rows, ss_cdiv(zeros, 256), 256, 0, stream, xc + n * l.ldw, zeros);
        if ((e = SS_LAUNCH_STATUS())) return e;
    }
    const void **pa = (const void **)((char *)ws + l.xc_bytes), **pb = pa + entries;
    void **pc = (void **)(pb + entries);
    float *out = c;
    if (l.splits > 1) {
        out = (float *)((char *)ws + l.xc_bytes + l.ptr_bytes);
        p->part = out, p->splits = (int)l.splits, p->ldc = (int)d;
    }
    SS_LAUNCH(ss_k_cov_blk_ptrs, ss_cdiv(entries, 128), 128, 0, stream, pa, pb, pc, xc, out, (int64_t)p->ldc, leaf,
              l.blocks, l.splits, l.ks * l.ldw, d * d);
    if ((e = SS_LAUNCH_STATUS())) return e;
    const int64_t nb = ss_cdiv(d, leaf), last = d - (nb - 1) * leaf, inner = (nb - 1) * nb / 2 * l.splits;
    if (last == leaf) { /* every block the same shape: one call */
        group(p, leaf, leaf, entries, pa, pb, pc);
        return 0;
    }
    if (inner) group(p, leaf, leaf, inner, pa, pb, pc);
    if (nb > 1) group(p, leaf, last, (nb - 1) * l.splits, pa + inner, pb + inner, pc + inner);
    const int64_t corner = entries - l.splits;
    group(p, last, last, l.splits, pa + corner, pb + corner, pc + corner);
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
    return (int64_t)blk_sizes(n, d, d, 1).xc_bytes;
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
    int go, e = start(p, &go, c, ldc, x, xdtype, ldx, mean, n, n, n, d, ldw, d > 0 ? d / L : 0, ws, stream);
    if (e || !go) return e;
    const uint16_t *xc = (const uint16_t *)ws;
    /* level l: 2^(l-1) squares of w = d / 2^l, the one of half j at rows
     * [2wj + w, + w), columns [2wj, + w) */
    for (int64_t w = d / 2, count = 1; w >= L; w /= 2, count *= 2) strided(p, xc, c, w, w, count, w, 0, 2 * w);
    strided(p, xc, c, L, L, d / L, 0, 0, L);
    return 0;
}
