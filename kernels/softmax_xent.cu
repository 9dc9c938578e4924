/* Softmax cross-entropy and its gradient per row of logits[rows,V]:
 * loss = logsumexp(row) - row[t], drow = w (softmax(row) - onehot(t)),
 * t = targets[r]; t < 0 gives loss 0 and a zero row (a position that is not
 * scored), t >= V gives NaN (a bug made visible, not a read out of bounds).
 *
 * Design: one 256-thread block per row (V is a vocabulary: tens of
 * thousands). Sweep 1: per-thread online (max, sum of exp) in fp32, as
 * softmax.cu, merged by shuffles within warps and then across the 8 warps
 * in warp order through shared memory (fixed order: deterministic). Sweep 2
 * writes w (exp(x - max)/sum - [i == t]). row[t] is read into a register by
 * thread 0 before the first barrier, and every element of the gradient is
 * written by the thread that read it in the same sweep, so dlogits may equal
 * logits. expf, not __expf (full fp32 relative accuracy of small
 * probabilities). Limits: rows < 2^31. */
#include "ss_cuda.cuh"

#define SX_THREADS 256
#define SX_WARPS (SX_THREADS / 32)

SS_DEV void ss_sx_acc(float v, float *m, float *s) {
    if (v > *m) {
        *s = *s * expf(*m - v) + 1.f;
        *m = v;
    } else if (v != -INFINITY) {
        *s += expf(v - *m);
    }
}

SS_KERNEL(ss_k_softmax_xent, (float *, dlogits), (float *, loss), (const float *, logits), (const int32_t *, targets),
          (const float *, weights), (int64_t, V)) {
    __shared__ float wm[SX_WARPS], ws[SX_WARPS];
    const int64_t r = blockIdx.x;
    const float *x = logits + r * V;
    float *g = dlogits + r * V;
    const int64_t t = targets[r];
    const int lane = threadIdx.x & 31, wid = threadIdx.x >> 5;
    if (t < 0) {
        if (threadIdx.x == 0 && loss) loss[r] = 0.f;
        for (int64_t i = threadIdx.x; i < V; i += SX_THREADS) g[i] = 0.f;
        return;
    }
    const float xt = t < V && threadIdx.x == 0 ? x[t] : 0.f;
    float m = -INFINITY, s = 0.f;
    for (int64_t i = threadIdx.x; i < V; i += SX_THREADS) ss_sx_acc(x[i], &m, &s);
    float mw = ss_warp_max(m);
    float sw = ss_warp_sum(m == -INFINITY ? 0.f : s * expf(m - mw));
    if (lane == 0) wm[wid] = mw, ws[wid] = sw;
    __syncthreads();
    float mx = wm[0];
    for (int i = 1; i < SX_WARPS; i++) mx = fmaxf(mx, wm[i]);
    float sum = 0.f;
    for (int i = 0; i < SX_WARPS; i++) sum += wm[i] == -INFINITY ? 0.f : ws[i] * expf(wm[i] - mx);
    const float wr = weights ? weights[r] : 1.f;
    if (t >= V) {
        if (threadIdx.x == 0 && loss) loss[r] = NAN;
        for (int64_t i = threadIdx.x; i < V; i += SX_THREADS) g[i] = NAN;
        return;
    }
    if (threadIdx.x == 0 && loss) loss[r] = logf(sum) + mx - xt;
    const float inv = 1.f / sum;
    for (int64_t i = threadIdx.x; i < V; i += SX_THREADS) {
        float p = expf(x[i] - mx) * inv;
        g[i] = wr * (i == t ? p - 1.f : p);
    }
}

SS_EXTERN_C int ss_cuda_softmax_xent(float *dlogits, float *loss, const float *logits, const int32_t *targets,
                                     const float *weights, int64_t rows, int64_t V, cudaStream_t stream) {
    if (rows <= 0 || V <= 0) return 0;
    if (rows > 0x7fffffff || !targets) return 1;
    SS_LAUNCH(ss_k_softmax_xent, rows, SX_THREADS, 0, stream, dlogits, loss, logits, targets, weights, V);
    return SS_LAUNCH_STATUS();
}
