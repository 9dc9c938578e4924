/* The covariance update of one batch: column means, and the centred
 * second-moment matrix C = (X - 1 m^T)^T (X - 1 m^T) of the batch, lower
 * triangle only (there is no bf16 SYRK in cuBLAS, and Ssyrk needs fp32
 * input). The collect job merges the batches' (count, mean, C) on the host
 * with Chan's update in fp64.
 *
 * ss_cuda_colmean. Design: a block of 32 columns x 32 row phases; a warp
 * reads 32 consecutive columns of one row (coalesced), each thread sums its
 * rows in fp64 (four rows' loads issued before their adds) and the 32 phases
 * are combined in a fixed order through
 * shared memory (deterministic: no atomics). fp64 because a per-thread fp32
 * sum of up to n/16 rows loses ~log2(n/16) bits to rounding growth, and the
 * mean is what every later centring depends on; the kernel is bound by the
 * reads (one add per 2 or 4 bytes loaded), so fp64 adds cost nothing that
 * shows, while fp32 per-block + fp64 combine or Kahan would add code for no
 * speed. With a workspace (ss_cuda_colmean_ws) the rows are also cut into
 * slices of at least 1024 (at most 16 slices; from n alone), whose fp64
 * sums a second small kernel adds in slice order: one block per 32 columns
 * walking all n rows is a chain of n/128 dependent round trips to memory,
 * which took 0.22-0.23 ms at d 768 and 3072 alike (16384 rows) on an H100,
 * 7% of the copy bandwidth at d 3072 (the twenty-third session's lease,
 * with 32 row phases and four loads in flight per thread; with 16 phases
 * and one load at a time, d = 768 had run at 12% of copy, d = 16384 at 99%).
 *
 * ss_cuda_cov_center writes the centred rows once into the workspace of
 * the product kernels (cov_split.cuh): fp32 for this one, bf16 for
 * cov_lower_tc.cu; 16 bytes per thread and loop step, zeros past n and d.
 * ss_cuda_cov_center_t writes them transposed (bf16) for cov_lower_wg.cu.
 *
 * ss_cuda_cov_lower. Design: a GEMM tiled like the classic SIMT SGEMM, 128 x
 * 128 tiles of C, 256 threads each owning an 8 x 8 micro-tile (two 4-wide
 * column groups 64 apart, so the float4 shared-memory reads of a warp hit
 * distinct banks). One block per tile on or below the diagonal, the tile
 * index decoded from the linear block index: tiles above the diagonal are
 * never launched, which is the ~2x saving over a full product. Both operands
 * are column strips of the centred rows, 16 rows a step through a 4-stage
 * cp.async pipeline (64 KB of shared memory; one barrier a step); a diagonal
 * tile loads its strip once. fp32 accumulation; diagonal tiles compute the
 * whole tile and write only i >= j. Where d gives few tiles, the rows are
 * split over blockIdx.y (cov_split.cuh; ss_cuda_cov_sum_splits adds them).
 * The values multiplied are x - mean[col] rounded to fp32, the same as when
 * the first version of this kernel centred on load; that version (scalar
 * loads with bounds checks and the subtraction in the loop, 8 rows between
 * two barriers, no split) ran at 27-37% of cublasSsyrk's rate on an H100,
 * 2 TFLOP/s at d 768 where its 21 tiles left 111 of 132 SMs idle. */
#include "ss_cuda.cuh"
#include "mma.cuh"
#include "cov_split.cuh"

/* ---- column means ------------------------------------------------------ */

#define CM_COLS 32
#define CM_PHASES 32

/* Row r of the batch is x's row rows[r] (rows NULL: row r). */
SS_DEV int64_t cm_row(const int64_t *rows, int64_t r) { return rows ? rows[r] : r; }

/* Rows [r0, r1) of columns blockIdx.x * CM_COLS ..: with one slice, the
 * means; with slices (blockIdx.y), slice y's sums into part[y * d + c]. */
SS_KERNEL(ss_k_colmean, (double *, mean64), (float *, mean32), (double *, part), (const void *, x), (int, dt),
          (int64_t, ld), (const int64_t *, rows), (int64_t, n), (int64_t, d), (int64_t, ks)) {
    __shared__ double sh[CM_PHASES][CM_COLS + 1];
    int tx = (int)threadIdx.x, ty = (int)threadIdx.y;
    int64_t c = (int64_t)blockIdx.x * CM_COLS + tx;
    const int64_t r0 = (int64_t)blockIdx.y * ks, r1 = r0 + ks < n ? r0 + ks : n;
    double s = 0.0;
    if (c < d) {
        /* four rows' loads in flight before their adds, which keep the rows' order */
        int64_t r = r0 + ty;
        for (; r + 3 * CM_PHASES < r1; r += 4 * CM_PHASES) {
            const float v0 = ss_load_weight(x, dt, cm_row(rows, r) * ld + c),
                        v1 = ss_load_weight(x, dt, cm_row(rows, r + CM_PHASES) * ld + c),
                        v2 = ss_load_weight(x, dt, cm_row(rows, r + 2 * CM_PHASES) * ld + c),
                        v3 = ss_load_weight(x, dt, cm_row(rows, r + 3 * CM_PHASES) * ld + c);
            s += (double)v0;
            s += (double)v1;
            s += (double)v2;
            s += (double)v3;
        }
        for (; r < r1; r += CM_PHASES) s += (double)ss_load_weight(x, dt, cm_row(rows, r) * ld + c);
    }
    sh[ty][tx] = s;
    __syncthreads();
    if (ty == 0 && c < d) {
        double t = 0.0;
        for (int p = 0; p < CM_PHASES; p++) t += sh[p][tx];
        if (gridDim.y > 1) {
            part[(int64_t)blockIdx.y * d + c] = t;
        } else {
            t /= (double)n;
            if (mean64) mean64[c] = t;
            if (mean32) mean32[c] = (float)t;
        }
    }
}

/* The slices' sums added in slice order, then the means. */
SS_KERNEL(ss_k_colmean_sum, (double *, mean64), (float *, mean32), (const double *, part), (int64_t, slices),
          (int64_t, n), (int64_t, d)) {
    const int64_t c = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= d) return;
    double t = 0.0;
    for (int64_t y = 0; y < slices; y++) t += part[y * d + c];
    t /= (double)n;
    if (mean64) mean64[c] = t;
    if (mean32) mean32[c] = (float)t;
}

/* Slices of the rows: one per CM_SLICE_ROWS rows (32 loads a thread), at
 * most CM_MAX_SLICES; from n alone, so a result never depends on the device. */
#define CM_SLICE_ROWS 1024
#define CM_MAX_SLICES 16

static int64_t cm_slices(int64_t n) {
    const int64_t s = ss_cdiv(n, CM_SLICE_ROWS);
    return s < 1 ? 1 : s > CM_MAX_SLICES ? CM_MAX_SLICES : s;
}

SS_EXTERN_C int64_t ss_cuda_colmean_ws(int64_t n, int64_t d) {
    const int64_t s = cm_slices(n);
    return n > 0 && d > 0 && s > 1 ? s * d * (int64_t)sizeof(double) : 0;
}

SS_EXTERN_C int ss_cuda_colmean(double *mean64, float *mean32, const void *x, int xdtype, int64_t ld,
                                const int64_t *rows, int64_t n, int64_t d, double *ws, cudaStream_t stream) {
    if (n <= 0 || d <= 0) return 0;
    if (ld < d || xdtype < SS_CUDA_F32 || xdtype > SS_CUDA_BF16 || (!mean64 && !mean32)) return 1;
    if (ss_cdiv(d, CM_COLS) > 0x7fffffff) return 1;
    const int64_t sl = ws ? cm_slices(n) : 1, ks = ss_cdiv(n, sl), slices = ss_cdiv(n, ks);
    SS_LAUNCH(ss_k_colmean, SS_DIM3(ss_cdiv(d, CM_COLS), slices, 1), SS_DIM3(CM_COLS, CM_PHASES, 1), 0, stream,
              mean64, mean32, ws, x, xdtype, ld, rows, n, d, ks);
    if (slices > 1) {
        const int e = SS_LAUNCH_STATUS();
        if (e) return e;
        SS_LAUNCH(ss_k_colmean_sum, ss_cdiv(d, 256), 256, 0, stream, mean64, mean32, ws, slices, n, d);
    }
    return SS_LAUNCH_STATUS();
}

/* ---- centring into the workspace, and the sum of split partials ------- */

/* A bf16 value from the low 16 bits of a word. */
SS_DEV float cc_bf16(unsigned w) { return __uint_as_float((w & 0xffffu) << 16); }

/* Each thread writes 16 bytes of xc: 4 floats or 8 bf16. vec (the launcher's
 * finding that x's rows and the means are 16-byte aligned, x fp32 or bf16):
 * chunks wholly inside a row's d values load with 16-byte (or, 4 bf16 for
 * fp32 output, two 4-byte) loads instead of one load a value; the values,
 * and so the roundings, are the same. */
SS_KERNEL(ss_k_cov_center, (void *, xc), (int, odt), (int64_t, ldw), (const void *, x), (int, dt), (int64_t, ldx),
          (const int64_t *, rows), (const float *, mean), (int64_t, n), (int64_t, n_pad), (int64_t, d), (int, vec)) {
    const int per = odt == SS_CUDA_F32 ? 4 : 8; /* values per 16 bytes */
    const int64_t per_row = ldw / per, total = n_pad * per_row;
    for (int64_t q = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; q < total; q += (int64_t)gridDim.x * blockDim.x) {
        const int64_t r = q / per_row, c0 = per * (q % per_row), xr = r < n ? cm_row(rows, r) : 0;
        float v[8];
        if (vec && r < n && c0 + per <= d) {
            if (dt == SS_CUDA_F32) {
                const float4 *p = (const float4 *)((const float *)x + xr * ldx + c0);
                const float4 a = p[0];
                v[0] = a.x, v[1] = a.y, v[2] = a.z, v[3] = a.w;
                if (per == 8) {
                    const float4 b = p[1];
                    v[4] = b.x, v[5] = b.y, v[6] = b.z, v[7] = b.w;
                }
            } else {
                const unsigned *p = (const unsigned *)((const uint16_t *)x + xr * ldx + c0);
                unsigned w[4];
                if (per == 8) {
                    const int4 a = *(const int4 *)p;
                    w[0] = (unsigned)a.x, w[1] = (unsigned)a.y, w[2] = (unsigned)a.z, w[3] = (unsigned)a.w;
                } else {
                    w[0] = p[0], w[1] = p[1];
                }
                SS_UNROLL
                for (int e = 0; e < 4; e++)
                    if (2 * e < per) v[2 * e] = cc_bf16(w[e]), v[2 * e + 1] = cc_bf16(w[e] >> 16);
            }
            SS_UNROLL
            for (int e = 0; e < 8; e++)
                if (e < per) v[e] = v[e] - (mean ? mean[c0 + e] : 0.f);
        } else {
            SS_UNROLL
            for (int e = 0; e < 8; e++) {
                const int64_t c = c0 + e;
                v[e] = e < per && r < n && c < d ? ss_load_weight(x, dt, xr * ldx + c) - (mean ? mean[c] : 0.f) : 0.f;
            }
        }
        if (odt == SS_CUDA_F32) {
            ((float4 *)xc)[q] = make_float4(v[0], v[1], v[2], v[3]);
        } else {
            uint32_t *o = (uint32_t *)xc + 4 * q;
            o[0] = ss_pack_bf16(v[0], v[1]), o[1] = ss_pack_bf16(v[2], v[3]);
            o[2] = ss_pack_bf16(v[4], v[5]), o[3] = ss_pack_bf16(v[6], v[7]);
        }
    }
}

SS_EXTERN_C int ss_cuda_cov_center(void *xc, int odt, int64_t ldw, const void *x, int xdtype, int64_t ldx,
                                   const int64_t *rows, const float *mean, int64_t n, int64_t n_pad, int64_t d,
                                   cudaStream_t stream) {
    const int per = odt == SS_CUDA_F32 ? 4 : 8;
    if ((odt != SS_CUDA_F32 && odt != SS_CUDA_BF16) || ldw < d || ldw % per || ldx < d || n < 0 || n_pad < n ||
        xdtype < SS_CUDA_F32 || xdtype > SS_CUDA_BF16)
        return 1;
    const int64_t chunks = n_pad * (ldw / per);
    if (!chunks) return 0;
    const int64_t esz = xdtype == SS_CUDA_F32 ? 4 : 2;
    const int vec = (xdtype == SS_CUDA_F32 || xdtype == SS_CUDA_BF16) && ss_aligned16(x) && (ldx * esz) % 16 == 0 &&
                    (!mean || ss_aligned16(mean));
    SS_LAUNCH(ss_k_cov_center, SS_MIN(ss_cdiv(chunks, 256), 1 << 20), 256, 0, stream, xc, odt, ldw, x, xdtype, ldx,
              rows, mean, n, n_pad, d, vec);
    return SS_LAUNCH_STATUS();
}

/* Transposed, for the wgmma kernel: a 32 x 32 tile of X through shared
 * memory, read along rows and written along columns (both coalesced). */
SS_KERNEL(ss_k_cov_center_t, (uint16_t *, xct), (int64_t, ldt), (const void *, x), (int, dt), (int64_t, ldx),
          (const float *, mean), (int64_t, n), (int64_t, n_pad), (int64_t, d), (int64_t, d_pad)) {
    __shared__ float tile[32][33];
    const int64_t r0 = (int64_t)blockIdx.x * 32, c0 = (int64_t)blockIdx.y * 32;
    const int tx = (int)threadIdx.x, ty = (int)threadIdx.y;
    for (int j = ty; j < 32; j += 8) {
        const int64_t r = r0 + j, c = c0 + tx;
        tile[j][tx] = r < n && c < d ? ss_load_weight(x, dt, r * ldx + c) - (mean ? mean[c] : 0.f) : 0.f;
    }
    __syncthreads();
    for (int j = ty; j < 32; j += 8) {
        const int64_t c = c0 + j, r = r0 + tx;
        if (c < d_pad && r < n_pad) xct[c * ldt + r] = __bfloat16_as_ushort(__float2bfloat16_rn(tile[tx][j]));
    }
}

SS_EXTERN_C int ss_cuda_cov_center_t(uint16_t *xct, int64_t ldt, const void *x, int xdtype, int64_t ldx,
                                     const float *mean, int64_t n, int64_t n_pad, int64_t d, int64_t d_pad,
                                     cudaStream_t stream) {
    if (ldt < n_pad || ldx < d || n < 0 || n_pad < n || d_pad < d || xdtype < SS_CUDA_F32 || xdtype > SS_CUDA_BF16 ||
        ss_cdiv(d_pad, 32) > 65535)
        return 1;
    if (!n_pad || !d_pad) return 0;
    SS_LAUNCH(ss_k_cov_center_t, SS_DIM3(ss_cdiv(n_pad, 32), ss_cdiv(d_pad, 32), 1), SS_DIM3(32, 8, 1), 0, stream, xct,
              ldt, x, xdtype, ldx, mean, n, n_pad, d, d_pad);
    return SS_LAUNCH_STATUS();
}

/* Row i = blockIdx.x of C's lower triangle, the partials added in split
 * order (s = 0 + p0 + p1 + ...: the same sums whichever path). vec: d and
 * ldc multiples of 4 and both pointers 16-byte aligned, so each thread takes
 * four columns with float4 loads (a row of 768 is 192 threads, where one a
 * column left most of a 256-thread block idle on the short rows), the last
 * group stored only up to the diagonal; it reads the partials' values just
 * above the diagonal in that group and drops them. Else one column a thread. */
SS_KERNEL(ss_k_cov_sum_splits, (float *, c), (int64_t, ldc), (const float *, part), (int64_t, d), (int, splits),
          (int, vec)) {
    const int64_t i = blockIdx.x, dd = d * d;
    if (!vec) {
        for (int64_t j = threadIdx.x; j <= i; j += blockDim.x) {
            float s = 0.f;
            for (int p = 0; p < splits; p++) s += part[(int64_t)p * dd + i * d + j];
            c[i * ldc + j] = s;
        }
        return;
    }
    for (int64_t j = 4 * (int64_t)threadIdx.x; j <= i; j += 4 * (int64_t)blockDim.x) {
        const float *src = part + i * d + j;
        float4 s = make_float4(0.f, 0.f, 0.f, 0.f);
        for (int p = 0; p < splits; p++) {
            const float4 v = *(const float4 *)(src + (int64_t)p * dd);
            s.x += v.x, s.y += v.y, s.z += v.z, s.w += v.w;
        }
        float *o = c + i * ldc + j;
        if (j + 3 <= i) {
            *(float4 *)o = s;
        } else {
            o[0] = s.x;
            if (j + 1 <= i) o[1] = s.y;
            if (j + 2 <= i) o[2] = s.z;
        }
    }
}

SS_EXTERN_C int ss_cuda_cov_sum_splits(float *c, int64_t ldc, const float *part, int64_t d, int splits,
                                       cudaStream_t stream) {
    if (d <= 0) return 0;
    if (ldc < d || splits < 1 || d > 0x7fffffff) return 1;
    const int vec = d % 4 == 0 && ldc % 4 == 0 && (uintptr_t)c % 16 == 0 && (uintptr_t)part % 16 == 0;
    SS_LAUNCH(ss_k_cov_sum_splits, d, vec ? 128 : 256, 0, stream, c, ldc, part, d, splits, vec);
    return SS_LAUNCH_STATUS();
}

/* ---- lower-triangular centred X^T X ----------------------------------- */

#define CV_T 128                         /* tile edge (rows and columns of C) */
#define CV_K 16                          /* rows per pipeline step */
#define CV_STAGES 4
#define CV_THREADS 256
#define CV_STAGE (2 * CV_K * CV_T)       /* floats per stage: A's strip, then B's */
#define CV_SMEM (CV_STAGES * CV_STAGE * 4) /* 65536 bytes */
#define CV_FILL 1056                     /* split until about 8 blocks per SM of an H100 */

/* c: C (ldc) with one split, else the partial triangles, cstride apart. */
SS_KERNEL(ss_k_cov_lower, (float *, c), (int64_t, ldc), (int64_t, cstride), (const float *, xc), (int64_t, ldw),
          (int64_t, d), (int64_t, steps), (int64_t, steps_per)) {
    SS_DYN_SHARED(float, sm);
    int64_t i0, j0, k_first, nk;
    ss_cov_block(CV_T, steps, steps_per, &i0, &j0, &k_first, &nk);
    const int diag = i0 == j0;
    c += (int64_t)blockIdx.y * cstride;
    const int tid = (int)threadIdx.x;
    /* This thread's micro-tile: rows ty*4 + {0..3} and 64 + ty*4 + {0..3} of
     * the tile, columns likewise from tx. */
    const int ty = tid / 16, tx = tid % 16;

    /* This thread's chunks of a strip: chunk q = tid + CV_THREADS * i is row
     * q / 32, columns 4 (q % 32) ..+3; columns past ldw are zero-filled. */
#define CV_LOAD(step, buf)                                                                                         \
    do {                                                                                                           \
        float *as_ = sm + (buf)*CV_STAGE;                                                                          \
        const float *src_ = xc + (k_first + (step)) * CV_K * ldw;                                                  \
        SS_UNROLL                                                                                                  \
        for (int i_ = 0; i_ < CV_K * CV_T / 4 / CV_THREADS; i_++) {                                                \
            const int q_ = tid + CV_THREADS * i_, row_ = q_ >> 5, col_ = 4 * (q_ & 31);                            \
            const float *rs_ = src_ + row_ * ldw;                                                                  \
            ss_cp_async16(as_ + row_ * CV_T + col_, rs_ + (i0 + col_ < ldw ? i0 + col_ : 0), i0 + col_ < ldw ? 16 : 0); \
            if (!diag)                                                                                             \
                ss_cp_async16(as_ + CV_K * CV_T + row_ * CV_T + col_, rs_ + (j0 + col_ < ldw ? j0 + col_ : 0),     \
                              j0 + col_ < ldw ? 16 : 0);                                                           \
        }                                                                                                          \
        ss_cp_async_commit();                                                                                      \
    } while (0)

    SS_COV_PIPE_FILL(CV_STAGES, nk, CV_LOAD);

    float acc[8][8];
    SS_UNROLL
    for (int a = 0; a < 8; a++) {
        SS_UNROLL
        for (int e = 0; e < 8; e++) acc[a][e] = 0.0f;
    }

    for (int64_t it = 0; it < nk; it++) {
        ss_cp_async_wait(CV_STAGES - 2); /* this thread's copies of step it have landed */
        __syncthreads();                 /* everyone's have, and step it - 1's buffer is read */
        SS_COV_PIPE_NEXT(CV_STAGES, it, nk, CV_LOAD);
        const float *sa = sm + (it % CV_STAGES) * CV_STAGE, *sb = diag ? sa : sa + CV_K * CV_T;
        SS_UNROLL
        for (int k = 0; k < CV_K; k++) {
            const float4 *ra = (const float4 *)(sa + k * CV_T), *rb = (const float4 *)(sb + k * CV_T);
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
    ss_cp_async_wait(0);
#undef CV_LOAD

    SS_UNROLL
    for (int a = 0; a < 8; a++) {
        int64_t i = i0 + (a < 4 ? ty * 4 + a : 64 + ty * 4 + a - 4);
        if (i >= d) continue;
        SS_UNROLL
        for (int e = 0; e < 8; e++) {
            int64_t j = j0 + (e < 4 ? tx * 4 + e : 64 + tx * 4 + e - 4);
            if (j <= i) c[i * ldc + j] = acc[a][e];
        }
    }
}

SS_EXTERN_C int64_t ss_cuda_cov_lower_ws(int64_t n, int64_t d) {
    if (n < 0 || d <= 0) return 0;
    ss_cov_plan p = ss_cov_plan_of(n, d, CV_T, CV_K, 4, CV_FILL, 8);
    return (int64_t)(p.xc_bytes + p.part_bytes);
}

SS_EXTERN_C int ss_cuda_cov_lower(float *c, int64_t ldc, const void *x, int xdtype, int64_t ldx, const float *mean,
                                  int64_t n, int64_t d, void *ws, cudaStream_t stream) {
    if (d <= 0) return 0;
    if (ldc < d || ldx < d || n < 0 || xdtype < SS_CUDA_F32 || xdtype > SS_CUDA_BF16) return 1;
    const ss_cov_plan p = ss_cov_plan_of(n, d, CV_T, CV_K, 4, CV_FILL, 8);
    if (p.tiles > 0x7fffffff || p.splits > 65535 || (p.xc_bytes && !ws)) return 1;
    float *xc = (float *)ws, *part = p.part_bytes ? (float *)((char *)ws + p.xc_bytes) : NULL;
    int e = ss_cuda_cov_center(xc, SS_CUDA_F32, p.ldw, x, xdtype, ldx, NULL, mean, n, p.steps * CV_K, d, stream);
    if (e) return e;
    SS_SET_MAX_DYN_SHARED(ss_k_cov_lower, CV_SMEM);
    SS_LAUNCH(ss_k_cov_lower, SS_DIM3(p.tiles, p.splits, 1), CV_THREADS, CV_SMEM, stream, part ? part : c,
              part ? d : ldc, part ? d * d : 0, xc, p.ldw, d, p.steps, p.steps_per);
    e = SS_LAUNCH_STATUS();
    if (e || !part) return e;
    return ss_cuda_cov_sum_splits(c, ldc, part, d, (int)p.splits, stream);
}
