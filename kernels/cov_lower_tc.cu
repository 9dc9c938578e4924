/* The covariance update of ss_cuda_cov_lower (cov_lower.cu) on tensor cores:
 * C = Xc^T Xc, lower triangle only, with Xc = X - 1 m^T centred in fp32 and
 * then rounded to bf16, products by mma.sync m16n8k16 (bf16 operands, fp32
 * accumulation). The products of bf16 values are exact in fp32, so the one
 * difference from the fp32 kernel is that rounding of each centred value
 * (relative 2^-9), which averages out over the rows but bounds each term.
 * The comparison the issue asks for: the triangle on tensor cores against
 * cublasGemmEx's full bf16 product of the same data (bench/gpu/kernel_bench.cu).
 * Opt-in for collect (SUBSCOPE_COV_KERNEL=tc).
 *
 * Three kernels, in the order they run:
 * 1. ss_cuda_cov_center (cov_lower.cu) writes Xc once into the workspace
 *    (cov_split.cuh): bf16, rows padded with zeros to a multiple of the
 *    32-row step, each row d rounded up to 8 halves (16 bytes). The first
 *    version of this kernel (H100, d 3072: 6.0 ms, 26 TFLOP/s per useful
 *    FLOP) centred and converted every value as it loaded it, one scalar
 *    load at a time, with no pipeline: the loads, not the products, set its
 *    pace. Centring first lets cp.async bring 16-byte chunks of Xc straight
 *    into shared memory.
 * 2. ss_k_cov_lower_tc: one block of 4 warps per 128 x 128 tile of C on or
 *    below the diagonal (tile from the linear block index); warp (wm, wn)
 *    owns the 64 x 64 block at rows 64 wm, columns 64 wn, 4 x 8 products of
 *    16 x 8 per 16 rows of Xc (64 x 64 per warp halves the shared-memory reads
 *    per product of 64 x 32). 32-row steps of Xc pass through a 4-stage
 *    cp.async pipeline, stored as in global memory ([row][column], rows
 *    padded to 136 halves so that the 8 rows of an ldmatrix fall on distinct
 *    banks); ldmatrix.x4.trans gives both operands' fragments from that
 *    layout (A = Xc^T by rows, B = Xc by columns). A diagonal tile loads one
 *    strip for both operands; warps wholly above the diagonal or past d do
 *    no products. With few tiles (small d) the rows are split over
 *    blockIdx.y so that the GPU fills (about two waves of an H100's 132 SMs
 *    at three blocks per SM, each split at least 8 steps).
 * 3. ss_cuda_cov_sum_splits (cov_lower.cu) adds the splits' partial
 *    triangles in split order (deterministic: no atomics) into C.
 * The split count depends only on n and d, never on the device, so the
 * result is the same on every GPU and under the emulation. */
#include "ss_cuda.cuh"
#include "mma.cuh"
#include "cov_split.cuh"

#define CT_T 128                        /* tile edge */
#define CT_K 32                         /* rows of Xc per pipeline step */
#define CT_STAGES 4                     /* pipeline depth */
#define CT_SK (CT_T + 8)                /* halves per shared row (272 bytes: ldmatrix rows on distinct banks) */
#define CT_THREADS 128                  /* 4 warps */
#define CT_STAGE (2 * CT_K * CT_SK)     /* halves per stage: A's strip, then B's */
#define CT_SMEM (CT_STAGES * CT_STAGE * 2) /* bytes of dynamic shared memory: 69632 */
#define CT_FILL_BLOCKS 264              /* split until about this many blocks */
#define CT_MIN_STEPS 8                  /* ... keeping at least this many steps per split */

/* The products of one tile over split blockIdx.y's steps [k_first, k_end):
 * c is C (ldc) with one split, else the partial triangles, cstride apart. */
SS_KERNEL(ss_k_cov_lower_tc, (float *, c), (int64_t, ldc), (int64_t, cstride), (const uint16_t *, xc),
          (int64_t, ldw), (int64_t, d), (int64_t, steps), (int64_t, steps_per)) {
    SS_DYN_SHARED(uint16_t, sm);
    int64_t i0, j0, k_first, nk;
    ss_cov_block(CT_T, steps, steps_per, &i0, &j0, &k_first, &nk);
    const int diag = i0 == j0;
    c += (int64_t)blockIdx.y * cstride;

    const int tid = (int)threadIdx.x, lane = tid & 31, w = tid >> 5, g = lane >> 2, t = lane & 3;
    const int wm = w >> 1, wn = w & 1, lm = lane >> 3, lr = lane & 7;
    /* no products for a warp wholly above the diagonal, or whose rows or columns start past d */
    const int idle = (diag && wn > wm) || i0 + 64 * wm >= d || j0 + 64 * wn >= d;

    /* This thread's chunks of a strip: chunk q = tid + CT_THREADS * i is row
     * q / 16, columns 8 (q % 16) ..+7; columns past ldw are zero-filled. (A
     * helper shared with cov_lower.cu's loads took ptxas from 163 to 230
     * registers here, two blocks per SM instead of three.) */
#define CT_LOAD(step, buf)                                                                                          \
    do {                                                                                                            \
        uint16_t *as_ = sm + (buf)*CT_STAGE;                                                                        \
        const uint16_t *src_ = xc + (k_first + (step)) * CT_K * ldw;                                                \
        SS_UNROLL                                                                                                   \
        for (int i_ = 0; i_ < CT_K * CT_T / 8 / CT_THREADS; i_++) {                                                 \
            const int q_ = tid + CT_THREADS * i_, row_ = q_ >> 4, col_ = 8 * (q_ & 15);                             \
            const uint16_t *rs_ = src_ + row_ * ldw;                                                                \
            ss_cp_async16(as_ + row_ * CT_SK + col_, rs_ + (i0 + col_ < ldw ? i0 + col_ : 0), i0 + col_ < ldw ? 16 : 0); \
            if (!diag)                                                                                              \
                ss_cp_async16(as_ + CT_K * CT_SK + row_ * CT_SK + col_, rs_ + (j0 + col_ < ldw ? j0 + col_ : 0),    \
                              j0 + col_ < ldw ? 16 : 0);                                                            \
        }                                                                                                           \
        ss_cp_async_commit();                                                                                       \
    } while (0)

    SS_COV_PIPE_FILL(CT_STAGES, nk, CT_LOAD);

    float acc[4][8][4];
    SS_UNROLL
    for (int mt = 0; mt < 4; mt++)
        SS_UNROLL
        for (int nt = 0; nt < 8; nt++) acc[mt][nt][0] = acc[mt][nt][1] = acc[mt][nt][2] = acc[mt][nt][3] = 0.f;
    /* ldmatrix row addresses (.trans): lane l gives row lr of matrix lm. A's
     * matrices (rows i, k-pairs): (k +0, i +0), (k +0, i +8), (k +8, i +0),
     * (k +8, i +8) = a[0..3]; B's: (k +0, j +0), (k +8, j +0) = b[0..1] of one
     * 8-column tile, the same at j +8 for the next. */
    const int a_off = (8 * (lm >> 1) + lr) * CT_SK + 64 * wm + 8 * (lm & 1);
    const int b_off = (8 * (lm & 1) + lr) * CT_SK + 64 * wn + 8 * (lm >> 1);

    for (int64_t it = 0; it < nk; it++) {
        ss_cp_async_wait(CT_STAGES - 2); /* this thread's copies of step it have landed */
        __syncthreads();                 /* everyone's have, and step it - 1's buffer is read */
        SS_COV_PIPE_NEXT(CT_STAGES, it, nk, CT_LOAD);
        if (idle) continue;
        const uint16_t *as = sm + (it % CT_STAGES) * CT_STAGE, *bs = diag ? as : as + CT_K * CT_SK;
        SS_UNROLL
        for (int ks = 0; ks < CT_K / 16; ks++) {
            uint32_t af[4][4];
            SS_UNROLL
            for (int mt = 0; mt < 4; mt++) ss_ldsm_x4_t(af[mt], as + 16 * ks * CT_SK + a_off + 16 * mt);
            SS_UNROLL
            for (int np = 0; np < 4; np++) {
                uint32_t bf[4];
                ss_ldsm_x4_t(bf, bs + 16 * ks * CT_SK + b_off + 16 * np);
                SS_UNROLL
                for (int mt = 0; mt < 4; mt++) {
                    ss_mma_bf16_16816(acc[mt][2 * np], af[mt], bf);
                    ss_mma_bf16_16816(acc[mt][2 * np + 1], af[mt], bf + 2);
                }
            }
        }
    }
    ss_cp_async_wait(0);
#undef CT_LOAD
    if (idle) return;
    SS_UNROLL
    for (int mt = 0; mt < 4; mt++)
        SS_UNROLL
        for (int h = 0; h < 2; h++) {
            const int64_t i = i0 + 64 * wm + 16 * mt + g + 8 * h;
            if (i >= d) continue;
            SS_UNROLL
            for (int nt = 0; nt < 8; nt++)
                SS_UNROLL
                for (int e = 0; e < 2; e++) {
                    const int64_t j = j0 + 64 * wn + 8 * nt + 2 * t + e;
                    if (j <= i) c[i * ldc + j] = acc[mt][nt][2 * h + e];
                }
        }
}

SS_EXTERN_C int64_t ss_cuda_cov_lower_tc_ws(int64_t n, int64_t d) {
    if (n < 0 || d <= 0) return 0;
    ss_cov_plan p = ss_cov_plan_of(n, d, CT_T, CT_K, 2, CT_FILL_BLOCKS, CT_MIN_STEPS);
    return (int64_t)(p.xc_bytes + p.part_bytes);
}

SS_EXTERN_C int ss_cuda_cov_lower_tc(float *c, int64_t ldc, const void *x, int xdtype, int64_t ldx,
                                     const float *mean, int64_t n, int64_t d, void *ws, cudaStream_t stream) {
    if (d <= 0) return 0;
    if (ldc < d || ldx < d || n < 0 || xdtype < SS_CUDA_F32 || xdtype > SS_CUDA_BF16) return 1;
    const ss_cov_plan p = ss_cov_plan_of(n, d, CT_T, CT_K, 2, CT_FILL_BLOCKS, CT_MIN_STEPS);
    if (p.tiles > 0x7fffffff || p.splits > 65535 || (p.xc_bytes && !ws)) return 1;
    uint16_t *xc = (uint16_t *)ws;
    float *part = p.part_bytes ? (float *)((char *)ws + p.xc_bytes) : NULL;
    int e = ss_cuda_cov_center(xc, SS_CUDA_BF16, p.ldw, x, xdtype, ldx, NULL, mean, n, p.steps * CT_K, d, stream);
    if (e) return e;
    SS_SET_MAX_DYN_SHARED(ss_k_cov_lower_tc, CT_SMEM);
    SS_LAUNCH(ss_k_cov_lower_tc, SS_DIM3(p.tiles, p.splits, 1), CT_THREADS, CT_SMEM, stream, part ? part : c,
              part ? d : ldc, part ? d * d : 0, xc, p.ldw, d, p.steps, p.steps_per);
    e = SS_LAUNCH_STATUS();
    if (e || !part) return e;
    return ss_cuda_cov_sum_splits(c, ldc, part, d, (int)p.splits, stream);
}
