/* Row-wise softmax: out[r,:] = exp(x[r,:] - max) / sum(exp(x[r,:] - max)).
 *
 * Design: one warp per row, 4 rows per 128-thread block, no shared memory.
 * Sweep 1 keeps an online (max, sum) per lane -- the sum is rescaled when
 * the max grows, so the row is read once for both -- then the lanes' pairs
 * are merged with shuffles; sweep 2 writes exp(x - max)/sum (an L1/L2 hit
 * for rows up to tens of thousands of floats, e.g. a vocabulary of logits).
 * expf, not __expf, so that probabilities keep full fp32 relative accuracy.
 * float4 when cols % 4 == 0 and x/out are 16-byte aligned. A row of all
 * -inf gives NaN, as in PyTorch. out may equal x. Limits: rows < 2^31 * 4. */
#include "ss_cuda.cuh"

#define SM_WARPS 4

SS_DEV void ss_softmax_acc(float v, float *m, float *s) {
    if (v > *m) {
        *s = *s * expf(*m - v) + 1.f; /* *m = -inf: expf(-inf) = 0 */
        *m = v;
    } else if (v != -INFINITY) { /* a masked entry adds nothing (and -inf - -inf is NaN) */
        *s += expf(v - *m);
    }
}

SS_KERNEL(ss_k_softmax, (float *, out), (const float *, x), (int64_t, rows), (int64_t, n), (int, vec)) {
    int lane = threadIdx.x & 31;
    int64_t row = (int64_t)blockIdx.x * SM_WARPS + (threadIdx.x >> 5);
    if (row >= rows) return;
    const float *xr = x + row * n;
    float *o = out + row * n;
    int64_t n4 = vec ? n / 4 : 0;
    float m = -INFINITY, s = 0.f;
    for (int64_t i = lane; i < n4; i += 32) {
        float4 v = ((const float4 *)xr)[i];
        ss_softmax_acc(v.x, &m, &s);
        ss_softmax_acc(v.y, &m, &s);
        ss_softmax_acc(v.z, &m, &s);
        ss_softmax_acc(v.w, &m, &s);
    }
    for (int64_t i = n4 * 4 + lane; i < n; i += 32) ss_softmax_acc(xr[i], &m, &s);
    float mx = ss_warp_max(m);
    /* lanes that saw nothing (or only -inf) contribute 0, not exp(nan) */
    float sum = ss_warp_sum(m == -INFINITY ? 0.f : s * expf(m - mx));
    float inv = 1.f / sum;
    for (int64_t i = lane; i < n4; i += 32) {
        float4 v = ((const float4 *)xr)[i];
        ((float4 *)o)[i] =
            make_float4(expf(v.x - mx) * inv, expf(v.y - mx) * inv, expf(v.z - mx) * inv, expf(v.w - mx) * inv);
    }
    for (int64_t i = n4 * 4 + lane; i < n; i += 32) o[i] = expf(xr[i] - mx) * inv;
}

SS_EXTERN_C int ss_cuda_softmax(float *out, const float *x, int64_t rows, int64_t cols, cudaStream_t stream) {
    if (rows <= 0 || cols <= 0) return 0;
    if (ss_cdiv(rows, SM_WARPS) > 0x7fffffff) return 1;
    int vec = cols % 4 == 0 && ss_aligned16(x) && ss_aligned16(out);
    SS_LAUNCH(ss_k_softmax, ss_cdiv(rows, SM_WARPS), 32 * SM_WARPS, 0, stream, out, x, rows, cols, vec);
    return SS_LAUNCH_STATUS();
}

/* Causal softmax in place over the [*, L, L] blocks of attention scores that
 * the cuBLAS attention path forms (cuda_backend.c): row r is query i = r % L
 * and sees keys 0..i; those entries become exp(s - max)/sum, the others 0.
 * One warp per row as above, scalar loads (rows start at any float). */
SS_KERNEL(ss_k_softmax_causal, (float *, x), (int64_t, rows), (int64_t, L)) {
    int lane = threadIdx.x & 31;
    int64_t row = (int64_t)blockIdx.x * SM_WARPS + (threadIdx.x >> 5);
    if (row >= rows) return;
    float *xr = x + row * L;
    const int64_t n = row % L + 1;
    float m = -INFINITY, s = 0.f;
    for (int64_t i = lane; i < n; i += 32) ss_softmax_acc(xr[i], &m, &s);
    float mx = ss_warp_max(m);
    float sum = ss_warp_sum(m == -INFINITY ? 0.f : s * expf(m - mx));
    float inv = 1.f / sum;
    for (int64_t i = lane; i < L; i += 32) xr[i] = i < n ? expf(xr[i] - mx) * inv : 0.f;
}

SS_EXTERN_C int ss_cuda_softmax_causal(float *x, int64_t rows, int64_t L, cudaStream_t stream) {
    if (rows <= 0 || L <= 0) return 0;
    if (ss_cdiv(rows, SM_WARPS) > 0x7fffffff) return 1;
    SS_LAUNCH(ss_k_softmax_causal, ss_cdiv(rows, SM_WARPS), 32 * SM_WARPS, 0, stream, x, rows, L);
    return SS_LAUNCH_STATUS();
}

/* The backward of the causal softmax above, for the cuBLAS attention
 * backward: ds holds dL/dP on entry and becomes scale * P (dP - D) with
 * D = sum_j P_j dP_j over the row's keys 0..i (i = r % L), 0 beyond them
 * (whatever dP held there). One warp per row; D is summed in fp32 in lane
 * order, then a warp reduction. */
SS_KERNEL(ss_k_softmax_causal_backward, (float *, ds), (const float *, p), (int64_t, rows), (int64_t, L),
          (float, scale)) {
    int lane = threadIdx.x & 31;
    int64_t row = (int64_t)blockIdx.x * SM_WARPS + (threadIdx.x >> 5);
    if (row >= rows) return;
    float *dr = ds + row * L;
    const float *pr = p + row * L;
    const int64_t n = row % L + 1;
    float acc = 0.f;
    for (int64_t i = lane; i < n; i += 32) acc += pr[i] * dr[i];
    const float D = ss_warp_sum(acc);
    for (int64_t i = lane; i < L; i += 32) dr[i] = i < n ? scale * pr[i] * (dr[i] - D) : 0.f;
}

SS_EXTERN_C int ss_cuda_softmax_causal_backward(float *ds, const float *p, int64_t rows, int64_t L, float scale,
                                                cudaStream_t stream) {
    if (rows <= 0 || L <= 0) return 0;
    if (ss_cdiv(rows, SM_WARPS) > 0x7fffffff) return 1;
    SS_LAUNCH(ss_k_softmax_causal_backward, ss_cdiv(rows, SM_WARPS), 32 * SM_WARPS, 0, stream, ds, p, rows, L, scale);
    return SS_LAUNCH_STATUS();
}
