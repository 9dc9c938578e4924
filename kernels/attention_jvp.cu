/* Forward mode of causal attention (trace's attribution pass): given q, k, v
 * (row stride ld) and their tangents dq, dk, dv (row stride ldd), writes the
 * tangent of z [rows, H*dh]: per query row i of head h (key/value head
 * h / group),
 *   s_j = scale q_i.k_j (fp32, in e order, as the forward), p = softmax(s),
 *   ds_j = scale (dq_i.k_j + q_i.dk_j), D = sum_j p_j ds_j,
 *   dz_i = sum_j p_j ((ds_j - D) v_j + dv_j)      (j <= i).
 *
 * Design: a simple kernel (speed second: it runs once per layer per
 * sub-model): one launch per sequence, one 128-thread block per (query row,
 * head). The threads stride over the keys three times: the scores' maximum;
 * the softmax's sum and sum e_j ds_j (fp64, block trees in a fixed order);
 * then tiles of 128 keys whose coefficients p_j (ds_j - D) and p_j go to
 * shared memory, from which thread e accumulates output column e (fp64, in
 * dynamic shared memory, dh doubles). Scores and ds are recomputed in each
 * sweep. Deterministic; no atomics. dz must not overlap the inputs.
 * Limits: len < 2^31, H < 65536. */
#include "ss_cuda.cuh"

#define AJ_T 128

/* max (is_max) or sum of v over the block, in every thread, in a fixed order. */
SS_DEV double aj_block_reduce(double v, double *red, int is_max) {
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
    for (int o = 16; o > 0; o >>= 1) {
        double u = __shfl_xor_sync(SS_FULL_MASK, v, o);
        v = is_max ? (u > v ? u : v) : v + u;
    }
    __syncthreads();
    if (lane == 0) red[w] = v;
    __syncthreads();
    double r = red[0];
    for (int i = 1; i < nw; i++) r = is_max ? (red[i] > r ? red[i] : r) : r + red[i];
    return r;
}

SS_KERNEL(ss_k_attn_jvp, (float *, dz), (const float *, dq), (const float *, dk), (const float *, dv), (int64_t, ldd),
          (const float *, q), (const float *, k), (const float *, v), (int64_t, ld), (int64_t, r0), (int64_t, H),
          (int64_t, group), (int64_t, dh), (float, scale)) {
    __shared__ double red[32];
    __shared__ double ca[AJ_T], cp[AJ_T];
    SS_DYN_SHARED(double, acc);
    const int tid = threadIdx.x;
    const int64_t i = blockIdx.x, h = blockIdx.y, hk = h / group;
    const float *qi = q + (r0 + i) * ld + h * dh, *dqi = dq + (r0 + i) * ldd + h * dh;
    double mx = -INFINITY;
    for (int64_t j = tid; j <= i; j += AJ_T) {
        const float *kj = k + (r0 + j) * ld + hk * dh;
        float sc = 0.f;
        for (int64_t e = 0; e < dh; e++) sc += qi[e] * scale * kj[e];
        if ((double)sc > mx) mx = sc;
    }
    mx = aj_block_reduce(mx, red, 1);
    double sum = 0, sd = 0;
    for (int64_t j = tid; j <= i; j += AJ_T) {
        const float *kj = k + (r0 + j) * ld + hk * dh, *dkj = dk + (r0 + j) * ldd + hk * dh;
        float sc = 0.f;
        double t = 0;
        for (int64_t e = 0; e < dh; e++) {
            sc += qi[e] * scale * kj[e];
            t += (double)dqi[e] * kj[e] + (double)qi[e] * dkj[e];
        }
        const double ex = exp((double)sc - mx);
        sum += ex;
        sd += ex * t * scale;
    }
    sum = aj_block_reduce(sum, red, 0);
    sd = aj_block_reduce(sd, red, 0);
    const double D = sd / sum;
    for (int64_t e = tid; e < dh; e += AJ_T) acc[e] = 0;
    for (int64_t j0 = 0; j0 <= i; j0 += AJ_T) {
        const int64_t j = j0 + tid;
        double a = 0, pj = 0;
        if (j <= i) {
            const float *kj = k + (r0 + j) * ld + hk * dh, *dkj = dk + (r0 + j) * ldd + hk * dh;
            float sc = 0.f;
            double t = 0;
            for (int64_t e = 0; e < dh; e++) {
                sc += qi[e] * scale * kj[e];
                t += (double)dqi[e] * kj[e] + (double)qi[e] * dkj[e];
            }
            pj = exp((double)sc - mx) / sum;
            a = pj * (t * scale - D);
        }
        __syncthreads(); /* the previous tile's coefficients are read */
        ca[tid] = a, cp[tid] = pj;
        __syncthreads();
        const int64_t nt = i - j0 + 1 < AJ_T ? i - j0 + 1 : AJ_T;
        for (int64_t e = tid; e < dh; e += AJ_T) {
            double s = acc[e];
            for (int64_t jj = 0; jj < nt; jj++) {
                const int64_t r = r0 + j0 + jj;
                s += ca[jj] * v[r * ld + hk * dh + e] + cp[jj] * dv[r * ldd + hk * dh + e];
            }
            acc[e] = s;
        }
    }
    float *o = dz + (r0 + i) * (H * dh) + h * dh;
    for (int64_t e = tid; e < dh; e += AJ_T) o[e] = (float)acc[e];
}

SS_EXTERN_C int ss_cuda_attention_jvp(float *dz, const float *dq, const float *dk, const float *dv, int64_t ldd,
                                      const float *q, const float *k, const float *v, int64_t ld, int64_t n_seq,
                                      const int64_t *start, const int64_t *len, int64_t H, int64_t Hkv, int64_t dh,
                                      float scale, cudaStream_t stream) {
    if (Hkv < 1 || H % Hkv || H > 65535 || dh < 1 || (size_t)dh * sizeof(double) > 48 * 1024) return 1;
    for (int64_t s = 0; s < n_seq; s++) {
        if (len[s] <= 0) continue;
        if (len[s] > 0x7fffffff) return 1;
        SS_LAUNCH(ss_k_attn_jvp, SS_DIM3(len[s], H, 1), AJ_T, (size_t)dh * sizeof(double), stream, dz, dq, dk, dv, ldd,
                  q, k, v, ld, start[s], H, H / Hkv, dh, scale);
        int st = SS_LAUNCH_STATUS();
        if (st) return st;
    }
    return 0;
}
