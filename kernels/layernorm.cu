/* LayerNorm over the last dimension: out = (x - mean)/sqrt(var + eps)*w + b.
 *
 * Design: one warp per row, 4 rows (128 threads) per block, no shared memory
 * and no __syncthreads, so a warp whose row is past the end simply returns.
 * Three sweeps over the row, as the fp32 reference does: the sum (mean),
 * the sum of squared deviations from that mean (a true two-pass variance, so
 * a large common offset costs no precision), then the normalised output.
 * The second and third sweeps hit L1/L2 (a 768..8192-float row per warp), so
 * DRAM traffic is one read and one write. float4 loads/stores when d % 4 == 0
 * and x/out are 16-byte aligned; fp32 accumulation per lane then a shuffle
 * tree; weights (fp32/fp16/bf16) read scalar, they stay cache resident.
 * Limits: rows < 2^31 * 4; b may be NULL.
 *
 * Rows that fit in registers (d % 4 == 0, aligned, d <= 4 * LN_V * 1024) take
 * ss_k_layernorm_reg instead: one block per row, each thread holding up to
 * LN_V float4 of it, so the row is read from memory once and nothing is read
 * again. On an H100 the three-sweep kernel ran at 72% (d 768) and 48% (d 3072)
 * of copy bandwidth: the later sweeps miss L1 once many 3-12 KB rows are in
 * flight per SM. Each thread takes the mean and the sum of squared deviations
 * of its own values (two passes over registers), and one block-wide reduction
 * merges those pairs by Chan's parallel update (ln_block_moments), as collect
 * merges its batches: the same robustness to a large common offset as two
 * passes over the row, with one reduction (one barrier) where the mean and then
 * the variance took two (four barriers). On an H200 the two reductions ran at
 * 78% of copy bandwidth at d 768, where rmsnorm's single one ran at 89%. fp32
 * weight and bias vectors on 16-byte boundaries are read a float4 at a time
 * (two loads per four outputs instead of eight).
 *
 * Rows of up to 1024 floats (GPT-2 small and medium) take a third kernel by
 * default, ss_k_layernorm_warp6/8: one warp per row, 6 or 8 float4 of it per
 * lane, merged by shuffles only. No barrier and no shared memory between a
 * row's loads and its stores, and each warp's rows independent of the
 * others'. At 54 registers (sm_90) it keeps 36 rows per SM in flight, where
 * the block kernel (48 registers, 64 threads a row at d 768) keeps 21.
 * Untimed when written (the twenty-seventh session): kernel_bench times both
 * at d 768 (layernorm.d768, layernorm_block.d768), and ss_cuda_layernorm_plan
 * picks any of the three by name.
 *
 * ss_cuda_layernorm_to writes the same values in fp16 or bf16 (rounded to
 * nearest even, as ss_cuda_convert rounds the fp32 output), for a product
 * with 16-bit weights that would round them so anyway (norm_matmul). */
#include "ss_cuda.cuh"

#define LN_WARPS 4

SS_KERNEL(ss_k_layernorm, (void *, out), (int, odt), (const float *, x), (const void *, w), (const void *, b),
          (int, wdt), (int64_t, rows), (int64_t, d), (float, eps), (int, vec)) {
    int lane = threadIdx.x & 31;
    int64_t row = (int64_t)blockIdx.x * LN_WARPS + (threadIdx.x >> 5);
    if (row >= rows) return;
    const float *xr = x + row * d;
    int64_t d4 = vec ? d / 4 : 0;
    float s = 0.f;
    for (int64_t i = lane; i < d4; i += 32) {
        float4 v = ((const float4 *)xr)[i];
        s += (v.x + v.y) + (v.z + v.w);
    }
    for (int64_t i = d4 * 4 + lane; i < d; i += 32) s += xr[i];
    float mean = ss_warp_sum(s) / (float)d;
    float ss = 0.f;
    for (int64_t i = lane; i < d4; i += 32) {
        float4 v = ((const float4 *)xr)[i];
        float a0 = v.x - mean, a1 = v.y - mean, a2 = v.z - mean, a3 = v.w - mean;
        ss += (a0 * a0 + a1 * a1) + (a2 * a2 + a3 * a3);
    }
    for (int64_t i = d4 * 4 + lane; i < d; i += 32) {
        float a0 = xr[i] - mean;
        ss += a0 * a0;
    }
    float rstd = rsqrtf(ss_warp_sum(ss) / (float)d + eps);
    for (int64_t i = lane; i < d4; i += 32) {
        float4 v = ((const float4 *)xr)[i];
        int64_t e = 4 * i;
        float4 r;
        r.x = (v.x - mean) * rstd * ss_load_weight(w, wdt, e) + (b ? ss_load_weight(b, wdt, e) : 0.f);
        r.y = (v.y - mean) * rstd * ss_load_weight(w, wdt, e + 1) + (b ? ss_load_weight(b, wdt, e + 1) : 0.f);
        r.z = (v.z - mean) * rstd * ss_load_weight(w, wdt, e + 2) + (b ? ss_load_weight(b, wdt, e + 2) : 0.f);
        r.w = (v.w - mean) * rstd * ss_load_weight(w, wdt, e + 3) + (b ? ss_load_weight(b, wdt, e + 3) : 0.f);
        ss_store_act4(out, odt, row * (d / 4) + i, r);
    }
    for (int64_t i = d4 * 4 + lane; i < d; i += 32)
        ss_store_act(out, odt, row * d + i,
                     (xr[i] - mean) * rstd * ss_load_weight(w, wdt, i) + (b ? ss_load_weight(b, wdt, i) : 0.f));
}

#define LN_V 4

/* Merges the moments (count n, mean m, sum of squared deviations q) of b into
 * a by Chan et al.'s update. The caller orders the operands (a: the lower
 * lanes or warps), so that two lanes merging the same pair agree exactly. */
SS_DEV void ln_merge(float *n, float *m, float *q, float nb, float mb, float qb) {
    if (nb == 0.f) return;
    if (*n == 0.f) {
        *n = nb, *m = mb, *q = qb;
        return;
    }
    const float nn = *n + nb, f = nb / nn, delta = mb - *m;
    *q += qb + delta * delta * *n * f;
    *m += delta * f;
    *n = nn;
}

/* A butterfly over the warp: afterwards every lane holds the moments of all
 * 32 lanes' values, the same in each lane. */
SS_DEV void ln_warp_moments(float *n, float *m, float *q) {
    const int lane = threadIdx.x & 31;
    for (int o = 16; o > 0; o >>= 1) {
        const float nb = __shfl_xor_sync(SS_FULL_MASK, *n, o), mb = __shfl_xor_sync(SS_FULL_MASK, *m, o),
                    qb = __shfl_xor_sync(SS_FULL_MASK, *q, o);
        if (lane & o) { /* the partner is the lower lane: it goes first */
            float n0 = nb, m0 = mb, q0 = qb;
            ln_merge(&n0, &m0, &q0, *n, *m, *q);
            *n = n0, *m = m0, *q = q0;
        } else {
            ln_merge(n, m, q, nb, mb, qb);
        }
    }
}

/* The moments of the whole block's values, in every thread (red: __shared__
 * float[96]). Called once per block: one barrier. */
SS_DEV void ln_block_moments(float *n, float *m, float *q, float *red) {
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
    ln_warp_moments(n, m, q);
    if (nw == 1) return;
    if (lane == 0) red[w] = *n, red[32 + w] = *m, red[64 + w] = *q;
    __syncthreads();
    *n = lane < nw ? red[lane] : 0.f;
    *m = lane < nw ? red[32 + lane] : 0.f;
    *q = lane < nw ? red[64 + lane] : 0.f;
    ln_warp_moments(n, m, q);
}

/* The register kernels' two halves. A thread holds float4 t + k T of its row
 * (k < v, those below d4) in xv: ln_load reads them and takes their count,
 * mean and squared deviations; ln_store writes them normalised. v is a
 * compile-time constant once inlined, so the loops unroll and xv's unused
 * slots take no registers. */
SS_DEV void ln_load(float4 *xv, const float4 *xr, int64_t d4, int t, int T, const int v, float *n, float *mean,
                    float *q) {
    float s = 0.f;
    *n = 0.f;
    SS_UNROLL
    for (int k = 0; k < v; k++) {
        const int64_t i = t + (int64_t)k * T;
        xv[k] = i < d4 ? xr[i] : make_float4(0.f, 0.f, 0.f, 0.f);
        s += (xv[k].x + xv[k].y) + (xv[k].z + xv[k].w);
        *n += i < d4 ? 4.f : 0.f;
    }
    *mean = *n > 0.f ? s / *n : 0.f;
    *q = 0.f;
    SS_UNROLL
    for (int k = 0; k < v; k++) {
        if (t + (int64_t)k * T < d4) {
            const float a0 = xv[k].x - *mean, a1 = xv[k].y - *mean, a2 = xv[k].z - *mean, a3 = xv[k].w - *mean;
            *q += (a0 * a0 + a1 * a1) + (a2 * a2 + a3 * a3);
        }
    }
}

SS_DEV void ln_store(void *out, int odt, int64_t row, const float4 *xv, int64_t d4, int t, int T, const int v,
                     float mean, float rstd, const void *w, const void *b, int wdt) {
    const int w4 = ss_weight_vec4(w, wdt), b4 = ss_weight_vec4(b, wdt);
    SS_UNROLL
    for (int k = 0; k < v; k++) {
        const int64_t i = t + (int64_t)k * T;
        if (i < d4) {
            const float4 g = ss_load_weight4(w, wdt, 4 * i, w4), c = ss_load_weight4(b, wdt, 4 * i, b4);
            float4 r;
            r.x = (xv[k].x - mean) * rstd * g.x + c.x;
            r.y = (xv[k].y - mean) * rstd * g.y + c.y;
            r.z = (xv[k].z - mean) * rstd * g.z + c.z;
            r.w = (xv[k].w - mean) * rstd * g.w + c.w;
            ss_store_act4(out, odt, row * d4 + i, r);
        }
    }
}

/* One warp per row, v float4 of it per lane, the moments merged by shuffles
 * alone (no shared memory, no barrier), LN_WARPS rows per block: rows of up
 * to 32 v float4 (d <= 768 with v = 6, d <= 1024 with v = 8). */
#define LN_WMAX 8
SS_DEV void ln_warp_row(void *out, int odt, const float *x, const void *w, const void *b, int wdt, int64_t rows,
                        int64_t d, float eps, const int v) {
    const int lane = threadIdx.x & 31;
    const int64_t row = (int64_t)blockIdx.x * LN_WARPS + (threadIdx.x >> 5);
    if (row >= rows) return;
    float4 xv[LN_WMAX];
    float n, mean, q;
    ln_load(xv, (const float4 *)(x + row * d), d / 4, lane, 32, v, &n, &mean, &q);
    ln_warp_moments(&n, &mean, &q);
    ln_store(out, odt, row, xv, d / 4, lane, 32, v, mean, rsqrtf(q / (float)d + eps), w, b, wdt);
}

SS_KERNEL(ss_k_layernorm_warp6, (void *, out), (int, odt), (const float *, x), (const void *, w), (const void *, b),
          (int, wdt), (int64_t, rows), (int64_t, d), (float, eps)) {
    ln_warp_row(out, odt, x, w, b, wdt, rows, d, eps, 6);
}

SS_KERNEL(ss_k_layernorm_warp8, (void *, out), (int, odt), (const float *, x), (const void *, w), (const void *, b),
          (int, wdt), (int64_t, rows), (int64_t, d), (float, eps)) {
    ln_warp_row(out, odt, x, w, b, wdt, rows, d, eps, LN_WMAX);
}

/* One block per row, LN_V float4 of it per thread; each thread's moments,
 * then the block's (one barrier). */
SS_KERNEL(ss_k_layernorm_reg, (void *, out), (int, odt), (const float *, x), (const void *, w), (const void *, b),
          (int, wdt), (int64_t, d), (float, eps)) {
    __shared__ float red[96];
    const int64_t row = blockIdx.x;
    float4 xv[LN_V];
    float n, mean, q;
    ln_load(xv, (const float4 *)(x + row * d), d / 4, threadIdx.x, blockDim.x, LN_V, &n, &mean, &q);
    ln_block_moments(&n, &mean, &q, red);
    ln_store(out, odt, row, xv, d / 4, threadIdx.x, blockDim.x, LN_V, mean, rsqrtf(q / (float)d + eps), w, b, wdt);
}

SS_EXTERN_C int ss_cuda_layernorm_plan(void *out, int out_dtype, const float *x, const void *w, const void *b,
                                       int wdtype, int64_t rows, int64_t d, float eps, int plan, cudaStream_t stream) {
    if (rows <= 0 || d <= 0) return 0;
    if (wdtype < SS_CUDA_F32 || wdtype > SS_CUDA_BF16 || out_dtype < SS_CUDA_F32 || out_dtype > SS_CUDA_BF16 ||
        ss_cdiv(rows, LN_WARPS) > 0x7fffffff || plan < SS_CUDA_LN_AUTO || plan > SS_CUDA_LN_SWEEP)
        return 1;
    const int vec = d % 4 == 0 && ss_aligned16(x) && ss_aligned16(out);
    const int warp_ok = vec && d / 4 <= 32 * LN_WMAX, block_ok = vec && d / 4 <= 1024 * LN_V && rows <= 0x7fffffff;
    if (plan == SS_CUDA_LN_AUTO) plan = warp_ok ? SS_CUDA_LN_WARP : block_ok ? SS_CUDA_LN_BLOCK : SS_CUDA_LN_SWEEP;
    if ((plan == SS_CUDA_LN_WARP && !warp_ok) || (plan == SS_CUDA_LN_BLOCK && !block_ok)) return 1;
    if (plan == SS_CUDA_LN_WARP) {
        if (d / 4 <= 32 * 6)
            SS_LAUNCH(ss_k_layernorm_warp6, ss_cdiv(rows, LN_WARPS), 32 * LN_WARPS, 0, stream, out, out_dtype, x, w, b,
                      wdtype, rows, d, eps);
        else
            SS_LAUNCH(ss_k_layernorm_warp8, ss_cdiv(rows, LN_WARPS), 32 * LN_WARPS, 0, stream, out, out_dtype, x, w, b,
                      wdtype, rows, d, eps);
    } else if (plan == SS_CUDA_LN_BLOCK) {
        const int threads = (int)(ss_cdiv(ss_cdiv(d / 4, LN_V), 32) * 32);
        SS_LAUNCH(ss_k_layernorm_reg, rows, threads, 0, stream, out, out_dtype, x, w, b, wdtype, d, eps);
    } else {
        SS_LAUNCH(ss_k_layernorm, ss_cdiv(rows, LN_WARPS), 32 * LN_WARPS, 0, stream, out, out_dtype, x, w, b, wdtype,
                  rows, d, eps, vec);
    }
    return SS_LAUNCH_STATUS();
}

SS_EXTERN_C int ss_cuda_layernorm_to(void *out, int out_dtype, const float *x, const void *w, const void *b,
                                     int wdtype, int64_t rows, int64_t d, float eps, cudaStream_t stream) {
    return ss_cuda_layernorm_plan(out, out_dtype, x, w, b, wdtype, rows, d, eps, SS_CUDA_LN_AUTO, stream);
}

SS_EXTERN_C int ss_cuda_layernorm(float *out, const float *x, const void *w, const void *b, int wdtype, int64_t rows,
                                  int64_t d, float eps, cudaStream_t stream) {
    return ss_cuda_layernorm_to(out, SS_CUDA_F32, x, w, b, wdtype, rows, d, eps, stream);
}
