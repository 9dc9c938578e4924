/* The covariance update of ss_cuda_cov_lower (cov_lower.cu) on tensor cores:
 * C = Xc^T Xc, lower triangle only, with Xc = X - 1 m^T centred in fp32 and
 * then rounded to bf16, products by mma.sync m16n8k16 (bf16 operands, fp32
 * accumulation). The products of bf16 values are exact in fp32, so the one
 * difference from the fp32 kernel is that rounding of each centred value
 * (relative 2^-9), which averages out over the rows but bounds each term.
 * The comparison the issue asks for: the triangle on tensor cores against
 * cublasGemmEx's full bf16 product of the same data (bench/gpu/kernel_bench.cu).
 * Opt-in for collect (SUBSCOPE_COV_KERNEL=tc); written without a GPU, so
 * kernel_check must confirm it and kernel_bench time it before it is more.
 *
 * Design: one block of 8 warps per 128 x 128 tile of C on or below the
 * diagonal (the tile decoded from the linear block index, as in cov_lower);
 * warp (wm, wn) owns rows 64 wm .. +63 and columns 32 wn .. +31 of the tile:
 * 4 x 4 products of 16 x 8. Per step, 32 rows of X pass through shared memory
 * transposed, column-major with the rows contiguous (As[col][row], a row of
 * 32 + 8 halves = 20 words), which is the layout both fragments want: A is
 * Xc^T's 16 x 16 (rows = columns of X, k = rows of X) and B is Xc's 16 x 8 by
 * column, so every fragment register is one aligned 32-bit load, and the
 * 20-word stride puts the 32 lanes of a fragment load on 32 banks (g * 20 + t
 * mod 32 is distinct for g < 8, t < 4). Each thread loads two rows of one
 * column per slot (coalesced across the warp) and stores them as one word.
 * A diagonal tile loads its strip once and skips the two warps whose block
 * lies wholly above the diagonal. Rows past n and columns past d load as 0.
 * No register prefetch or cp.async pipeline yet (the emulation has no
 * cp.async): two blocks per SM hide the loads. */
#include "ss_cuda.cuh"
#include "mma.cuh"

#define TC_T 128                        /* tile edge */
#define TC_K 32                         /* rows of X per step */
#define TC_W (TC_K / 2 + 4)             /* words per shared row: 32 halves + 8 of padding */
#define TC_THREADS 256
#define TC_SLOTS (TC_K / 2 * TC_T / TC_THREADS) /* row pairs each thread loads per strip: 8 */

/* Rows r and r + 1 of column c of X, centred in fp32 and rounded to bf16,
 * packed low/high; 0 outside [0, n) x [0, d). */
SS_DEV uint32_t tc_pair(const void *x, int dt, int64_t ld, int64_t r, int64_t c, float m, int64_t n, int64_t d) {
    float a = 0.f, b = 0.f;
    if (c < d) {
        if (r < n) a = ss_load_weight(x, dt, r * ld + c) - m;
        if (r + 1 < n) b = ss_load_weight(x, dt, (r + 1) * ld + c) - m;
    }
    return ss_pack_bf16(a, b);
}

SS_KERNEL(ss_k_cov_lower_tc, (float *, cm), (int64_t, ldc), (const void *, x), (int, dt), (int64_t, ldx),
          (const float *, mean), (int64_t, n), (int64_t, d)) {
    __shared__ uint32_t As[TC_T * TC_W];
    __shared__ uint32_t Bs[TC_T * TC_W];

    /* Linear block index b -> tile (ti, tj), ti >= tj, b = ti(ti+1)/2 + tj. */
    const int64_t b = blockIdx.x;
    int64_t ti = (int64_t)((sqrt(8.0 * (double)b + 1.0) - 1.0) * 0.5);
    while (ti * (ti + 1) / 2 > b) ti--;
    while ((ti + 1) * (ti + 2) / 2 <= b) ti++;
    const int64_t tj = b - ti * (ti + 1) / 2, i0 = ti * TC_T, j0 = tj * TC_T;
    const int diag = ti == tj;

    const int tid = (int)threadIdx.x, lane = tid & 31, w = tid >> 5, g = lane >> 2, t = lane & 3;
    const int wm = w >> 2, wn = w & 3;
    /* the warp's block lies above the diagonal: rows 64wm..64wm+63 < columns 32wn.. */
    const int idle = diag && 32 * wn > 64 * wm + 63;
    /* load slot: column lc of the strip, row pairs lp, lp + 2, ... */
    const int lc = tid & (TC_T - 1), lp = tid >> 7;
    float ma = 0.f, mb = 0.f;
    if (mean) {
        if (i0 + lc < d) ma = mean[i0 + lc];
        if (j0 + lc < d) mb = mean[j0 + lc];
    }
    const uint32_t *bsrc = diag ? As : Bs;

    float acc[4][4][4];
    SS_UNROLL
    for (int mt = 0; mt < 4; mt++)
        SS_UNROLL
        for (int nt = 0; nt < 4; nt++) acc[mt][nt][0] = acc[mt][nt][1] = acc[mt][nt][2] = acc[mt][nt][3] = 0.f;

    for (int64_t k0 = 0; k0 < n; k0 += TC_K) {
        __syncthreads(); /* the previous step's fragments are read */
        SS_UNROLL
        for (int q = 0; q < TC_SLOTS; q++) {
            const int p = lp + 2 * q; /* row pair: rows k0 + 2p, k0 + 2p + 1 */
            As[lc * TC_W + p] = tc_pair(x, dt, ldx, k0 + 2 * p, i0 + lc, ma, n, d);
            if (!diag) Bs[lc * TC_W + p] = tc_pair(x, dt, ldx, k0 + 2 * p, j0 + lc, mb, n, d);
        }
        __syncthreads();
        if (idle) continue;
        SS_UNROLL
        for (int ks = 0; ks < TC_K / 16; ks++) {
            uint32_t af[4][4], bf[4][2];
            SS_UNROLL
            for (int mt = 0; mt < 4; mt++) {
                const uint32_t *r0 = As + (64 * wm + 16 * mt + g) * TC_W + 8 * ks + t, *r1 = r0 + 8 * TC_W;
                af[mt][0] = r0[0], af[mt][1] = r1[0], af[mt][2] = r0[4], af[mt][3] = r1[4];
            }
            SS_UNROLL
            for (int nt = 0; nt < 4; nt++) {
                const uint32_t *r = bsrc + (32 * wn + 8 * nt + g) * TC_W + 8 * ks + t;
                bf[nt][0] = r[0], bf[nt][1] = r[4];
            }
            SS_UNROLL
            for (int mt = 0; mt < 4; mt++)
                SS_UNROLL
                for (int nt = 0; nt < 4; nt++) ss_mma_bf16_16816(acc[mt][nt], af[mt], bf[nt]);
        }
    }
    if (idle) return;
    SS_UNROLL
    for (int mt = 0; mt < 4; mt++)
        SS_UNROLL
        for (int h = 0; h < 2; h++) {
            const int64_t i = i0 + 64 * wm + 16 * mt + g + 8 * h;
            if (i >= d) continue;
            SS_UNROLL
            for (int nt = 0; nt < 4; nt++)
                SS_UNROLL
                for (int e = 0; e < 2; e++) {
                    const int64_t j = j0 + 32 * wn + 8 * nt + 2 * t + e;
                    if (j <= i && j < d) cm[i * ldc + j] = acc[mt][nt][2 * h + e];
                }
        }
}

SS_EXTERN_C int ss_cuda_cov_lower_tc(float *c, int64_t ldc, const void *x, int xdtype, int64_t ldx,
                                     const float *mean, int64_t n, int64_t d, cudaStream_t stream) {
    if (d <= 0) return 0;
    if (ldc < d || ldx < d || n < 0 || xdtype < SS_CUDA_F32 || xdtype > SS_CUDA_BF16) return 1;
    int64_t tt = ss_cdiv(d, TC_T), tiles = tt * (tt + 1) / 2;
    if (tiles > 0x7fffffff) return 1;
    SS_LAUNCH(ss_k_cov_lower_tc, tiles, TC_THREADS, 0, stream, c, ldc, x, xdtype, ldx, mean, n, d);
    return SS_LAUNCH_STATUS();
}
