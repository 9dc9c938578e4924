/* Rotary position embedding (Llama), in place, Hugging Face's rotate-half
 * convention: for each row r, head h < n_heads and i < dh/2, with
 * a = (float)pos[r] * inv_freq[i] rounded to fp32 (as transformers forms
 * the angle: positions and frequencies in fp32, one product),
 *   (x_i, x_{i+dh/2}) <- (x_i cos a - x_{i+dh/2} sin a, x_{i+dh/2} cos a + x_i sin a)
 * and with `inverse` the rotation by -a (its transpose: the backward pass).
 *
 * Design: one thread per (row, i), grid-stride over rows*dh/2 with 256
 * threads per block; consecutive threads take consecutive i of a row, so
 * the loads of x_i and x_{i+dh/2} of a head are coalesced. A thread computes
 * cos a and sin a once and applies them to all n_heads heads of its row (q
 * and k of a fused qkv buffer are rotated by one launch with n_heads =
 * H + Hkv). cosf/sinf are the precise functions, not __cosf/__sinf: angles
 * reach pos * inv_freq[0] = pos radians (4000 and more), where the fast
 * intrinsics lose all accuracy; the precise ones do a full range reduction
 * (CUDA: 2 ulp). Deterministic, no shared memory.
 * Limits: dh even, 2 <= dh, n_heads * dh <= ld, n_heads and dh < 2^31.
 *
 * ss_cuda_rope_bf16: the same rotation of bf16 rows in place (a product's
 * 16-bit q|k|v, SUBSCOPE_QKV16 for the Llama family): each pair read as fp32,
 * rotated with the expressions above, rounded to nearest even. One thread per
 * (row, two adjacent i), 32-bit loads and stores; dh a multiple of 4. */
#include "ss_cuda.cuh"
#include "mma.cuh"

#define ROPE_THREADS 256

SS_KERNEL(ss_k_rope, (float *, x), (int64_t, ld), (int64_t, rows), (int, n_heads), (int, dh), (const int32_t *, pos),
          (const float *, inv_freq), (int, inverse)) {
    const int half = dh / 2;
    const int64_t total = rows * half, stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t t = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; t < total; t += stride) {
        const int64_t r = t / half;
        const int i = (int)(t - r * half);
        const float a = __fmul_rn((float)pos[r], inv_freq[i]); /* never contracted into an FMA */
        const float cs = cosf(a), sn = inverse ? -sinf(a) : sinf(a);
        float *p = x + r * ld + i;
        for (int h = 0; h < n_heads; h++, p += dh) {
            const float x0 = p[0], x1 = p[half];
            p[0] = x0 * cs - x1 * sn;
            p[half] = x1 * cs + x0 * sn;
        }
    }
}

SS_KERNEL(ss_k_rope_bf16, (uint16_t *, x), (int64_t, ld), (int64_t, rows), (int, n_heads), (int, dh),
          (const int32_t *, pos), (const float *, inv_freq)) {
    const int half = dh / 2, pairs = half / 2;
    const int64_t total = rows * pairs, stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t t = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; t < total; t += stride) {
        const int64_t r = t / pairs;
        const int i = 2 * (int)(t - r * pairs);
        const float p = (float)pos[r];
        const float a0 = __fmul_rn(p, inv_freq[i]), a1 = __fmul_rn(p, inv_freq[i + 1]);
        const float c0 = cosf(a0), s0 = sinf(a0), c1 = cosf(a1), s1 = sinf(a1);
        uint16_t *h = x + r * ld + i;
        for (int k = 0; k < n_heads; k++, h += dh) {
            const uint32_t lo = *(const uint32_t *)h, hi = *(const uint32_t *)(h + half);
            const float x0 = __uint_as_float(lo << 16), x0b = __uint_as_float(lo & 0xffff0000u);
            const float x1 = __uint_as_float(hi << 16), x1b = __uint_as_float(hi & 0xffff0000u);
            *(uint32_t *)h = ss_pack_bf16(x0 * c0 - x1 * s0, x0b * c1 - x1b * s1);
            *(uint32_t *)(h + half) = ss_pack_bf16(x1 * c0 + x0 * s0, x1b * c1 + x0b * s1);
        }
    }
}

SS_EXTERN_C int ss_cuda_rope_bf16(uint16_t *x, int64_t ld, int64_t rows, int64_t n_heads, int64_t dh,
                                  const int32_t *pos, const float *inv_freq, cudaStream_t stream) {
    if (rows <= 0 || n_heads <= 0) return 0;
    if (dh < 4 || dh % 4 || dh > 0x7fffffff || n_heads > 0x7fffffff || ld < n_heads * dh || ld % 2 || !pos ||
        !inv_freq || (uintptr_t)x % 4)
        return 1;
    SS_LAUNCH(ss_k_rope_bf16, ss_grid_1d(rows * (dh / 4), ROPE_THREADS), ROPE_THREADS, 0, stream, x, ld, rows,
              (int)n_heads, (int)dh, pos, inv_freq);
    return SS_LAUNCH_STATUS();
}

SS_EXTERN_C int ss_cuda_rope(float *x, int64_t ld, int64_t rows, int64_t n_heads, int64_t dh, const int32_t *pos,
                             const float *inv_freq, int inverse, cudaStream_t stream) {
    if (rows <= 0 || n_heads <= 0) return 0;
    if (dh < 2 || dh % 2 || dh > 0x7fffffff || n_heads > 0x7fffffff || ld < n_heads * dh || !pos || !inv_freq) return 1;
    SS_LAUNCH(ss_k_rope, ss_grid_1d(rows * (dh / 2), ROPE_THREADS), ROPE_THREADS, 0, stream, x, ld, rows, (int)n_heads,
              (int)dh, pos, inv_freq, inverse);
    return SS_LAUNCH_STATUS();
}
