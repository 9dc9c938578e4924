/* attribute's share of a batch on the device, so that the rows of a site
 * need not leave it (src/jobs/job_attribute.c):
 *
 * ss_cuda_attr_product: out[r,u] = (c[r,u] - a[r,u]) * g[r*ldg+u] with c
 * (attribution patching), g[r*ldg+u] * a[r,u] with a alone (gradient x
 * activation), g[r*ldg+u] without either (the gradient, made contiguous).
 * One fp32 subtraction and one product, in the host loop's order, so the
 * values equal the host's bit for bit. A thread per element, grid-stride.
 *
 * ss_cuda_seq_sums: out[s,u] = sum over t < len[s] of x[(start[s]+t)*w+u]
 * in fp64, t in order (the host's sum over positions, bit for bit). A
 * block per (sequence, 128 columns), a thread per column walking the
 * sequence's rows: each warp reads 32 consecutive floats per row. start and
 * len are device arrays of n_seq. Limits: n_seq <= 65535 blocks in y.
 *
 * ss_cuda_ig_point, ss_cuda_ig_add, ss_cuda_ig_attr: integrated gradients'
 * point on the path for a step, its gradient added into fp64 sums, and the
 * attributions from the sums (include/subscope/backend.h gives the
 * formulas). fp64 with the rounding intrinsics, so that nvcc fuses no
 * multiply-add the host does not: the values equal the host's bit for bit.
 * A thread per element, grid-stride. */
#include "ss_cuda.cuh"

#define AR_COLS 128

/* Grid-stride launches over rows * w elements: at most 65536 blocks of 256. */
static int64_t ar_blocks(int64_t n) {
    const int64_t b = ss_cdiv(n, 256);
    return b > 65536 ? 65536 : b;
}

SS_KERNEL(ss_k_attr_product, (float *, out), (const float *, g), (int64_t, ldg), (const float *, a),
          (const float *, c), (int64_t, rows), (int64_t, w)) {
    const int64_t n = rows * w;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        const float gv = g[(i / w) * ldg + i % w];
        out[i] = c ? (c[i] - a[i]) * gv : a ? gv * a[i] : gv;
    }
}

SS_EXTERN_C int ss_cuda_attr_product(float *out, const float *g, int64_t ldg, const float *a, const float *c,
                                     int64_t rows, int64_t w, cudaStream_t stream) {
    if (rows <= 0 || w <= 0) return 0;
    if (ldg < w || (c && !a)) return 1;
    SS_LAUNCH(ss_k_attr_product, ar_blocks(rows * w), 256, 0, stream, out, g, ldg, a, c, rows, w);
    return SS_LAUNCH_STATUS();
}

SS_KERNEL(ss_k_seq_sums, (double *, out), (const float *, x), (int64_t, w), (const int64_t *, start),
          (const int64_t *, len)) {
    const int64_t u = (int64_t)blockIdx.x * AR_COLS + threadIdx.x, s = blockIdx.y;
    if (u >= w) return;
    const float *p = x + start[s] * w + u;
    const int64_t n = len[s];
    double sum = 0;
    for (int64_t t = 0; t < n; t++) sum += (double)p[t * w];
    out[s * w + u] = sum;
}

SS_EXTERN_C int ss_cuda_seq_sums(double *out, const float *x, int64_t w, int64_t n_seq, const int64_t *start,
                                 const int64_t *len, cudaStream_t stream) {
    if (n_seq <= 0 || w <= 0) return 0;
    if (n_seq > 65535 || ss_cdiv(w, AR_COLS) > 0x7fffffff) return 1;
    SS_LAUNCH(ss_k_seq_sums, SS_DIM3(ss_cdiv(w, AR_COLS), n_seq, 1), AR_COLS, 0, stream, out, x, w, start, len);
    return SS_LAUNCH_STATUS();
}

SS_KERNEL(ss_k_ig_point, (float *, x), (int64_t, ldx), (const float *, clean), (const double *, base),
          (double, alpha), (int64_t, rows), (int64_t, w)) {
    const int64_t n = rows * w;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t r = i / w, u = i % w;
        const double b = base ? base[u] : 0.0;
        x[r * ldx + u] = (float)__dadd_rn(b, __dmul_rn(alpha, __dsub_rn((double)clean[i], b)));
    }
}

SS_EXTERN_C int ss_cuda_ig_point(float *x, int64_t ldx, const float *clean, const double *base, double alpha,
                                 int64_t rows, int64_t w, cudaStream_t stream) {
    if (rows <= 0 || w <= 0) return 0;
    if (ldx < w) return 1;
    SS_LAUNCH(ss_k_ig_point, ar_blocks(rows * w), 256, 0, stream, x, ldx, clean, base, alpha, rows, w);
    return SS_LAUNCH_STATUS();
}

SS_KERNEL(ss_k_ig_add, (double *, sum), (const float *, g), (int64_t, ldg), (int64_t, rows), (int64_t, w)) {
    const int64_t n = rows * w;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        sum[i] = __dadd_rn(sum[i], (double)g[(i / w) * ldg + i % w]);
}

SS_EXTERN_C int ss_cuda_ig_add(double *sum, const float *g, int64_t ldg, int64_t rows, int64_t w, cudaStream_t stream) {
    if (rows <= 0 || w <= 0) return 0;
    if (ldg < w) return 1;
    SS_LAUNCH(ss_k_ig_add, ar_blocks(rows * w), 256, 0, stream, sum, g, ldg, rows, w);
    return SS_LAUNCH_STATUS();
}

SS_KERNEL(ss_k_ig_attr, (float *, out), (const float *, clean), (const double *, base), (const double *, sum),
          (int, steps), (int64_t, rows), (int64_t, w)) {
    const int64_t n = rows * w;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        const double d = __dsub_rn((double)clean[i], base ? base[i % w] : 0.0);
        out[i] = (float)__ddiv_rn(__dmul_rn(d, sum[i]), (double)steps);
    }
}

SS_EXTERN_C int ss_cuda_ig_attr(float *out, const float *clean, const double *base, const double *sum, int steps,
                                int64_t rows, int64_t w, cudaStream_t stream) {
    if (rows <= 0 || w <= 0) return 0;
    if (steps < 1) return 1;
    SS_LAUNCH(ss_k_ig_attr, ar_blocks(rows * w), 256, 0, stream, out, clean, base, sum, steps, rows, w);
    return SS_LAUNCH_STATUS();
}
