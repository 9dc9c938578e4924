/* The covariance update of one batch: column means, and the centred
 * second-moment matrix C = (X - 1 m^T)^T (X - 1 m^T) of the batch, lower
 * triangle only (there is no bf16 SYRK in cuBLAS, and Ssyrk needs fp32
 * input). The collect job merges the batches' (count, mean, C) on the host
 * with Chan's update in fp64.
 *
 * ss_cuda_colmean. Design: a block of 32 columns x 16 row phases; a warp
 * reads 32 consecutive columns of one row (coalesced), each thread sums its
 * rows in fp64 and the 16 phases are combined in a fixed order through
 * shared memory (deterministic: no atomics). fp64 because a per-thread fp32
 * sum of up to n/16 rows loses ~log2(n/16) bits to rounding growth, and the
 * mean is what every later centring depends on; the kernel is bound by the
 * reads (one add per 2 or 4 bytes loaded), so fp64 adds cost nothing that
 * shows, while fp32 per-block + fp64 combine or Kahan would add code for no
 * speed. Limit: one block per 32 columns, so a narrow site (d = 768: 24
 * blocks) does not fill a large GPU; it is still a read of n*d elements next
 * to the n*d^2 of the product.
 *
 * ss_cuda_cov_lower. Design: a GEMM tiled like the classic SIMT SGEMM, 128 x
 * 128 tiles of C, 8 rows of X per k-step, 256 threads each owning an 8 x 8
 * micro-tile (two 4-wide column groups 64 apart, so the float4 shared-memory
 * reads of a warp hit distinct banks). One block per tile on or below the
 * diagonal, the tile index decoded from the linear block index: tiles above
 * the diagonal are never launched, which is the ~2x saving over a full
 * product. Both operands are column strips of the same X, loaded k-major
 * (row r of X is contiguous, so a warp's loads are coalesced), centred on
 * load (x - mean[col], exact when x and mean are within a factor 2,
 * Sterbenz), out-of-range rows/columns loaded as 0 so any n and d work; a
 * diagonal tile loads its strip once. The next k-step's values are
 * prefetched into registers while the current one is multiplied. fp32
 * accumulation; diagonal tiles compute the whole tile and write only
 * i >= j. Nothing is written above the diagonal; no workspace (C is the
 * only output, so d = 16384 needs just C's 1 GiB).
 *
 * Not here: a tensor-core (mma/wgmma) bf16 path, which is where Hopper's
 * speed is but which the emulation cannot run; and split-K over rows, so a
 * small d launches few blocks (d = 768: 21 tiles). Both are for a version
 * that can be measured on a GPU. */
#include "ss_cuda.cuh"

/* ---- column means ------------------------------------------------------ */

#define CM_COLS 32
#define CM_PHASES 16

SS_KERNEL(ss_k_colmean, (double *, mean64), (float *, mean32), (const void *, x), (int, dt), (int64_t, ld),
          (int64_t, n), (int64_t, d)) {
    __shared__ double part[CM_PHASES][CM_COLS + 1];
    int tx = (int)threadIdx.x, ty = (int)threadIdx.y;
    int64_t c = (int64_t)blockIdx.x * CM_COLS + tx;
    double s = 0.0;
    if (c < d)
        for (int64_t r = ty; r < n; r += CM_PHASES) s += (double)ss_load_weight(x, dt, r * ld + c);
    part[ty][tx] = s;
    __syncthreads();
    if (ty == 0 && c < d) {
        double t = 0.0;
        for (int p = 0; p < CM_PHASES; p++) t += part[p][tx];
        t /= (double)n;
        if (mean64) mean64[c] = t;
        if (mean32) mean32[c] = (float)t;
    }
}

SS_EXTERN_C int ss_cuda_colmean(double *mean64, float *mean32, const void *x, int xdtype, int64_t ld, int64_t n,
                                int64_t d, cudaStream_t stream) {
    if (n <= 0 || d <= 0) return 0;
    if (ld < d || xdtype < SS_CUDA_F32 || xdtype > SS_CUDA_BF16 || (!mean64 && !mean32)) return 1;
    if (ss_cdiv(d, CM_COLS) > 0x7fffffff) return 1;
    SS_LAUNCH(ss_k_colmean, ss_cdiv(d, CM_COLS), SS_DIM3(CM_COLS, CM_PHASES, 1), 0, stream, mean64, mean32, x,
              xdtype, ld, n, d);
    return SS_LAUNCH_STATUS();
}

/* ---- lower-triangular centred X^T X ----------------------------------- */

#define CV_T 128     /* tile edge (rows and columns of C) */
#define CV_K 8       /* rows of X per k-step */
#define CV_THREADS 256
#define CV_LOADS (CV_K * CV_T / CV_THREADS) /* elements of one strip each thread loads per k-step: 4 */

/* Row r, column c of X centred, 0 outside [0,n) x [0,d). */
SS_DEV float cv_load(const void *x, int dt, int64_t ld, int64_t r, int64_t c, float m, int64_t n, int64_t d) {
    if (r >= n || c >= d) return 0.0f;
    return ss_load_weight(x, dt, r * ld + c) - m;
}

SS_KERNEL(ss_k_cov_lower, (float *, cm), (int64_t, ldc), (const void *, x), (int, dt), (int64_t, ldx),
          (const float *, mean), (int64_t, n), (int64_t, d)) {
    __shared__ float4 sa4[CV_K][CV_T / 4];
    __shared__ float4 sb4[CV_K][CV_T / 4];
    float *sa = (float *)sa4, *sb = (float *)sb4;

    /* Linear block index b -> tile (ti, tj), ti >= tj, b = ti(ti+1)/2 + tj. */
    int64_t b = blockIdx.x;
    int64_t ti = (int64_t)((sqrt(8.0 * (double)b + 1.0) - 1.0) * 0.5);
    while (ti * (ti + 1) / 2 > b) ti--;
    while ((ti + 1) * (ti + 2) / 2 <= b) ti++;
    int64_t tj = b - ti * (ti + 1) / 2;
    int diag = ti == tj;
    int64_t i0 = ti * CV_T, j0 = tj * CV_T;

    int tid = (int)threadIdx.x;
    /* This thread's load slot: one column of each strip, rows lr + 2q. */
    int lc = tid % CV_T, lr = tid / CV_T;
    float ma = 0.0f, mb = 0.0f;
    if (mean) {
        if (i0 + lc < d) ma = mean[i0 + lc];
        if (j0 + lc < d) mb = mean[j0 + lc];
    }
    /* This thread's micro-tile: rows ty*4 + {0..3} and 64 + ty*4 + {0..3} of
     * the tile, columns likewise from tx. */
    int ty = tid / 16, tx = tid % 16;

    float acc[8][8];
    SS_UNROLL
    for (int a = 0; a < 8; a++) {
        SS_UNROLL
        for (int e = 0; e < 8; e++) acc[a][e] = 0.0f;
    }

    float pa[CV_LOADS], pb[CV_LOADS];
    SS_UNROLL
    for (int q = 0; q < CV_LOADS; q++) {
        int64_t r = lr + 2 * q;
        pa[q] = cv_load(x, dt, ldx, r, i0 + lc, ma, n, d);
        pb[q] = diag ? 0.0f : cv_load(x, dt, ldx, r, j0 + lc, mb, n, d);
    }
    const float *bsrc = diag ? sa : sb;

    for (int64_t k0 = 0; k0 < n; k0 += CV_K) {
        __syncthreads(); /* the previous step's reads of the tiles are done */
        SS_UNROLL
        for (int q = 0; q < CV_LOADS; q++) {
            sa[(lr + 2 * q) * CV_T + lc] = pa[q];
            if (!diag) sb[(lr + 2 * q) * CV_T + lc] = pb[q];
        }
        __syncthreads();
        if (k0 + CV_K < n) {
            SS_UNROLL
            for (int q = 0; q < CV_LOADS; q++) {
                int64_t r = k0 + CV_K + lr + 2 * q;
                pa[q] = cv_load(x, dt, ldx, r, i0 + lc, ma, n, d);
                if (!diag) pb[q] = cv_load(x, dt, ldx, r, j0 + lc, mb, n, d);
            }
        }
        SS_UNROLL
        for (int k = 0; k < CV_K; k++) {
            const float4 *ra = (const float4 *)(sa + k * CV_T), *rb = (const float4 *)(bsrc + k * CV_T);
            float4 a0 = ra[ty], a1 = ra[16 + ty], b0 = rb[tx], b1 = rb[16 + tx];
            float av[8] = {a0.x, a0.y, a0.z, a0.w, a1.x, a1.y, a1.z, a1.w};
            float bv[8] = {b0.x, b0.y, b0.z, b0.w, b1.x, b1.y, b1.z, b1.w};
            SS_UNROLL
            for (int a = 0; a < 8; a++) {
                SS_UNROLL
                for (int e = 0; e < 8; e++) acc[a][e] = fmaf(av[a], bv[e], acc[a][e]);
            }
        }
    }

    SS_UNROLL
    for (int a = 0; a < 8; a++) {
        int64_t i = i0 + (a < 4 ? ty * 4 + a : 64 + ty * 4 + a - 4);
        if (i >= d) continue;
        SS_UNROLL
        for (int e = 0; e < 8; e++) {
            int64_t j = j0 + (e < 4 ? tx * 4 + e : 64 + tx * 4 + e - 4);
            if (j <= i && j < d) cm[i * ldc + j] = acc[a][e];
        }
    }
}

SS_EXTERN_C int ss_cuda_cov_lower(float *c, int64_t ldc, const void *x, int xdtype, int64_t ldx, const float *mean,
                                  int64_t n, int64_t d, cudaStream_t stream) {
    if (d <= 0) return 0;
    if (ldc < d || ldx < d || n < 0 || xdtype < SS_CUDA_F32 || xdtype > SS_CUDA_BF16) return 1;
    int64_t t = ss_cdiv(d, CV_T), tiles = t * (t + 1) / 2;
    if (tiles > 0x7fffffff) return 1;
    SS_LAUNCH(ss_k_cov_lower, tiles, CV_THREADS, 0, stream, c, ldc, x, xdtype, ldx, mean, n, d);
    return SS_LAUNCH_STATUS();
}
