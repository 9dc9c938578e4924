/* The covariance update of ss_cuda_cov_lower_tc (centred values rounded to
 * bf16, fp32 accumulation, lower triangle) on Hopper's warpgroup products
 * (wgmma, kernels/wgmma.cuh): mma.sync, which cov_lower_tc.cu uses, peaks
 * near two thirds of the rate cuBLAS reaches with wgmma, and the issue's
 * target (>= 1.4x cuBLAS's full bf16 product) is beyond it. sm_90a only:
 * the Makefile builds this file for sm_90a where CUDA_ARCH has 90, and the
 * launcher refuses other GPUs and builds (ss_cuda_cov_lower_wg_supported).
 * Opt-in for collect (SUBSCOPE_COV_KERNEL=wg). Its first H100 run (2026-11-26)
 * found it right but at half cov_lower_tc's speed (16384 rows: 0.168 / 1.870 /
 * 32.97 ms at d 768 / 3072 / 16384); since then the copies' shared-memory
 * writes are spread over all banks (WG_LOAD below), not yet timed.
 *
 * 1. ss_cuda_cov_center_t (cov_lower.cu) writes Xc transposed into the
 *    workspace: row i of XcT holds column i of X centred, rows of n_pad
 *    values (n padded with zeros to the 64-row step), d padded with zero
 *    rows to the 128 tile; so both operands are K-major (K = the rows of X),
 *    the layout wgmma reads without transposing.
 * 2. ss_k_cov_lower_wg: one block of two warpgroups per 128 x 128 tile of C
 *    on or below the diagonal; warpgroup w computes rows 64 w ..+63, all 128
 *    columns, as 4 wgmma m64n128k16 per 64-row step. Steps pass through a
 *    3-stage cp.async pipeline (96 KB of shared memory: two blocks per SM),
 *    stored as core matrices (8 rows x 8 values, 128 bytes; the 8 along K of
 *    a row group contiguous: lbo 128 bytes, sbo 1024) so that each 16-byte
 *    chunk of a row lands in one core-matrix row. Each step: wait for the
 *    copies, fence them to the async proxy, barrier, start the next step's
 *    copies into the stage the previous products read, issue the products
 *    and wait for them (one group in flight per warpgroup; two blocks per SM
 *    keep the tensor cores busy across the waits). A diagonal tile loads one
 *    strip for both operands; a warpgroup whose rows start past d does no
 *    products. Splits over rows as in cov_split.cuh.
 * 3. ss_cuda_cov_sum_splits adds split partials in order. */
#include "ss_cuda.cuh"
#include "mma.cuh"
#include "wgmma.cuh"
#include "cov_split.cuh"

#define WG_T 128                             /* tile edge */
#define WG_K 64                              /* rows of X (K) per step */
#define WG_STAGES 3
#define WG_THREADS 256                       /* two warpgroups */
#define WG_OPER (WG_T * WG_K)                /* halves of one operand's strip */
#define WG_STAGE (2 * WG_OPER)
#define WG_SMEM (WG_STAGES * WG_STAGE * 2)   /* 98304 bytes */
#define WG_FILL 264                          /* split until about this many blocks (two per SM of an H100) */
#define WG_MIN_STEPS 4
#if WG_OPER / 8 != 1024 || WG_THREADS != 256
#error "WG_LOAD's chunk numbering assumes 1024 chunks per strip, 4 per thread"
#endif

SS_KERNEL(ss_k_cov_lower_wg, (float *, c), (int64_t, ldc), (int64_t, cstride), (const uint16_t *, xct),
          (int64_t, ldt), (int64_t, d), (int64_t, steps), (int64_t, steps_per)) {
    SS_DYN_SHARED(uint16_t, sm);
    int64_t i0, j0, k_first, nk;
    ss_cov_block(WG_T, steps, steps_per, &i0, &j0, &k_first, &nk);
    const int diag = i0 == j0;
    c += (int64_t)blockIdx.y * cstride;
    const int tid = (int)threadIdx.x, wg = tid >> 7;
    const int idle = i0 + 64 * wg >= d; /* the warpgroup's rows all past d */

    /* Chunk q = tid + WG_THREADS * i: row r of the strip (XcT row i0 + r), K values
     * 8 kc ..+7 of the step, into core matrix (r / 8, kc), whose rows are 16 bytes apart:
     * a chunk's bank group is r % 8. A warp takes 8 consecutive rows (q bits 0-2) and 4
     * of the 8 chunks of each (bits 3-4; bit 9 the other 4; bits 5-8 the row's group of
     * 8), so its 32 writes fall evenly on the 8 groups (4 wavefronts, the least for
     * 512 bytes) and each row's 64 bytes are contiguous in global memory. (r = q / 8,
     * kc = q % 8 put a warp's 32 writes on 4 groups: 8 wavefronts.) */
#define WG_LOAD(step, buf)                                                                                     \
    do {                                                                                                       \
        uint16_t *as_ = sm + (buf)*WG_STAGE;                                                                   \
        const int64_t k_ = (k_first + (step)) * WG_K;                                                          \
        SS_UNROLL                                                                                              \
        for (int i_ = 0; i_ < WG_OPER / 8 / WG_THREADS; i_++) {                                                \
            const int q_ = tid + WG_THREADS * i_, r_ = (q_ & 7) | ((q_ >> 5 & 15) << 3);                       \
            const int kc_ = (q_ >> 3 & 3) | ((q_ >> 9 & 1) << 2);                                              \
            const int so_ = (r_ >> 3) * 512 + kc_ * 64 + (r_ & 7) * 8;                                         \
            ss_cp_async16(as_ + so_, xct + (i0 + r_) * ldt + k_ + 8 * kc_, 16);                                \
            if (!diag) ss_cp_async16(as_ + WG_OPER + so_, xct + (j0 + r_) * ldt + k_ + 8 * kc_, 16);           \
        }                                                                                                      \
        ss_cp_async_commit();                                                                                  \
    } while (0)

    SS_COV_PIPE_FILL(WG_STAGES, nk, WG_LOAD);

    float acc[64];
    SS_UNROLL
    for (int i = 0; i < 64; i++) acc[i] = 0.f;
    ss_wgmma_fence_operands(acc, 64);

    for (int64_t it = 0; it < nk; it++) {
        ss_cp_async_wait(WG_STAGES - 2); /* this thread's copies of step it have landed */
        ss_fence_proxy_async();          /* ... and are visible to the products' reads */
        __syncthreads();                 /* everyone's are, and step it - 1's products are done */
        SS_COV_PIPE_NEXT(WG_STAGES, it, nk, WG_LOAD);
        if (idle) continue;
        const uint16_t *as = sm + (it % WG_STAGES) * WG_STAGE, *bs = diag ? as : as + WG_OPER;
        ss_wgmma_fence();
        SS_UNROLL
        for (int kk = 0; kk < WG_K / 16; kk++) /* 16 values of K: two core matrices, 128 halves on */
            ss_wgmma_m64n128k16_bf16(acc, ss_wgmma_desc(as + wg * 8 * 512 + kk * 128, 128, 1024),
                                     ss_wgmma_desc(bs + kk * 128, 128, 1024));
        ss_wgmma_commit();
        ss_wgmma_wait(0);
        ss_wgmma_fence_operands(acc, 64);
    }
    ss_cp_async_wait(0);
#undef WG_LOAD
    if (idle) return;
    const int w = (tid & 127) >> 5, g = (tid & 31) >> 2, t = tid & 3;
    SS_UNROLL
    for (int cb = 0; cb < 16; cb++)
        SS_UNROLL
        for (int h = 0; h < 2; h++) {
            const int64_t i = i0 + 64 * wg + 16 * w + g + 8 * h;
            if (i >= d) continue;
            SS_UNROLL
            for (int e = 0; e < 2; e++) {
                const int64_t j = j0 + 8 * cb + 2 * t + e;
                if (j <= i) c[i * ldc + j] = acc[4 * cb + 2 * h + e];
            }
        }
}

/* The plan of cov_split.cuh with the transposed workspace: d_pad rows of n_pad values. */
static ss_cov_plan wg_plan(int64_t n, int64_t d) {
    ss_cov_plan p = ss_cov_plan_of(n, d, WG_T, WG_K, 2, WG_FILL, WG_MIN_STEPS);
    p.ldw = p.steps * WG_K; /* here: XcT's row length, n_pad */
    p.xc_bytes = (size_t)ss_cdiv(ss_cdiv(d, WG_T) * WG_T * p.ldw * 2, 256) * 256;
    return p;
}

SS_EXTERN_C int ss_cuda_cov_lower_wg_supported(void) {
#ifdef SS_CUDA_EMU
    return 1;
#elif defined(SS_HAVE_SM90A)
    int dev = 0, major = 0, minor = 0;
    if (cudaGetDevice(&dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev) != cudaSuccess)
        return 0;
    return major == 9 && minor == 0;
#else
    return 0;
#endif
}

SS_EXTERN_C int64_t ss_cuda_cov_lower_wg_ws(int64_t n, int64_t d) {
    if (n < 0 || d <= 0) return 0;
    ss_cov_plan p = wg_plan(n, d);
    return (int64_t)(p.xc_bytes + p.part_bytes);
}

SS_EXTERN_C int ss_cuda_cov_lower_wg(float *c, int64_t ldc, const void *x, int xdtype, int64_t ldx,
                                     const float *mean, int64_t n, int64_t d, void *ws, cudaStream_t stream) {
    if (d <= 0) return 0;
    if (ldc < d || ldx < d || n < 0 || xdtype < SS_CUDA_F32 || xdtype > SS_CUDA_BF16) return 1;
    const ss_cov_plan p = wg_plan(n, d);
    if (p.tiles > 0x7fffffff || p.splits > 65535 || (p.xc_bytes && !ws) || !ss_cuda_cov_lower_wg_supported())
        return 1;
    uint16_t *xct = (uint16_t *)ws;
    float *part = p.part_bytes ? (float *)((char *)ws + p.xc_bytes) : NULL;
    int e = ss_cuda_cov_center_t(xct, p.ldw, x, xdtype, ldx, mean, n, p.ldw, d, ss_cdiv(d, WG_T) * WG_T, stream);
    if (e) return e;
    SS_SET_MAX_DYN_SHARED(ss_k_cov_lower_wg, WG_SMEM);
    SS_LAUNCH(ss_k_cov_lower_wg, SS_DIM3(p.tiles, p.splits, 1), WG_THREADS, WG_SMEM, stream, part ? part : c,
              part ? d : ldc, part ? d * d : 0, xct, p.ldw, d, p.steps, p.steps_per);
    e = SS_LAUNCH_STATUS();
    if (e || !part) return e;
    return ss_cuda_cov_sum_splits(c, ldc, part, d, (int)p.splits, stream);
}
