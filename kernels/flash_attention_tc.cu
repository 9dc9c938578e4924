/* Causal attention on tensor cores, without the pattern: the contract of
 * ss_cuda_attention_flash (include/subscope/cuda_kernels.h) for head sizes 64
 * and 128, with Q (scaled), K, V and the probabilities rounded to bf16 for
 * the products (mma.sync m16n8k16, fp32 accumulation) and an fp32 online
 * softmax. The default for bf16 models where the pattern is not wanted (the
 * ops table's attention_lowp and attention_lowp_qkv; SUBSCOPE_ATTN_TC,
 * cuda_backend.c). Checked on an H100 (kernel_check: NMSE about 3.5e-7
 * against the CPU op; gpu-check's forward comparisons at NMSE 1e-4) and
 * timed there at 0.304 ms for B=16 T=1024 H=12 dh=64, 1.7x faster than the
 * first tensor-core kernel it replaced (0.520 ms; docs/DECISIONS.md, "One
 * tensor-core attention").
 *
 * Written after the second H100 run, where that first kernel took 1.25 ms
 * per layer of 16 x 1024 tokens (20.6 TFLOP/s, 62% of a bf16 forward). Its
 * PTX showed why: each K/V tile arrived through a loop of 32 scalar fp32
 * loads per thread that the compiler did not unroll, each converted and
 * stored before the next was issued, between two barriers; about 12,500 SM
 * cycles per 64 x 64 tile, where the tile's 64 products per warp need a few
 * hundred. This kernel is the flash-attention-2 layout:
 *   - a pack kernel first writes Q * scale, K and V of every row once as
 *     bf16, in rows of (H + 2 Hkv) dh halves (the workspace; the same
 *     roundings as the first kernel had, so the same numbers up to the order
 *     of fp32 additions and exp2 for exp);
 *   - K and V tiles go from there to shared memory by cp.async, 16 bytes a
 *     copy, the next tile in flight while the current one is used (two
 *     buffers, one barrier pair per tile);
 *   - fragments come from shared memory by ldmatrix (.trans for V), one
 *     instruction per two products, from rows padded to avoid bank conflicts;
 *   - Q's fragments are read once from global memory, 32 bits each;
 *   - the causal mask only on the tiles that cross the diagonal or the end;
 *     warps skip tiles wholly in their future; the longest query tiles are
 *     launched first so the short ones fill the tail.
 * 64 query rows per block (4 warps, 16 rows each); key tiles of 64 (dh 64)
 * or 32 (dh 128), so the four tiles take 36 or 34 KB of static shared memory.
 * Under the emulation cp.async is held back until its wait (cuda_emu.c), so
 * reading a tile too early shows up in the tests.
 * Limits: dh 64 or 128; ceil(max_len/64) <= 65535; n_seq * H < 2^31. */
#include <stdint.h>

#include "ss_cuda.cuh"
#include "mma.cuh"

#define TC_BR 64       /* query rows per block (16 per warp) */
#define TC_THREADS 128 /* 4 warps */
#define TC_PAD 8       /* halves of padding per shared row */

/* out[r, :] = bf16(q[r, 0:dq] * scale), bf16(k[r, 0:dkv]), bf16(v[r, 0:dkv]):
 * blocks stride over the rows, threads over pairs of columns (dq and dkv
 * are multiples of 64, so a pair never straddles two of the three). */
SS_KERNEL(ss_k_attn_pack_bf16, (uint16_t *, out), (const float *, q), (const float *, k), (const float *, v),
          (int64_t, ld), (int64_t, n_rows), (int64_t, dq), (int64_t, dkv), (float, scale)) {
    const int64_t ld16 = dq + 2 * dkv;
    for (int64_t r = blockIdx.x; r < n_rows; r += gridDim.x) {
        uint32_t *o = (uint32_t *)(out + r * ld16);
        for (int64_t c = 2 * (int64_t)threadIdx.x; c < ld16; c += 2 * (int64_t)blockDim.x) {
            const float *src;
            float f = 1.f;
            if (c < dq) src = q + r * ld + c, f = scale;
            else if (c < dq + dkv) src = k + r * ld + (c - dq);
            else src = v + r * ld + (c - dq - dkv);
            o[c / 2] = ss_pack_bf16(src[0] * f, src[1] * f);
        }
    }
}

/* the variants: (head size, key tile, query tiles per warp) */
#define TC_QSMEM 0
#define TC_DH 64
#define TC_BC 64
#define TC_MT 1
#define TC_NAME ss_k_attn_tc_64
#include "flash_attention_tc_body.cuh"
#undef TC_MT
#undef TC_NAME
#define TC_MT 2
#define TC_NAME ss_k_attn_tc_64x2
#include "flash_attention_tc_body.cuh"
#undef TC_DH
#undef TC_BC
#undef TC_MT
#undef TC_NAME
#define TC_DH 128
#define TC_BC 32
#define TC_MT 1
#define TC_NAME ss_k_attn_tc_128
#include "flash_attention_tc_body.cuh"
#undef TC_MT
#undef TC_NAME
#undef TC_QSMEM
#define TC_QSMEM 1 /* Q from shared memory: in registers it spilled */
#define TC_MT 2
#define TC_NAME ss_k_attn_tc_128x2
#include "flash_attention_tc_body.cuh"
#undef TC_DH
#undef TC_BC
#undef TC_MT
#undef TC_NAME
#undef TC_QSMEM
/* dynamic shared memory of ss_k_attn_tc_128x2: its 128 query rows of 128 + TC_PAD halves */
#define TC_128X2_QSMEM (128 * (128 + TC_PAD) * 2)

SS_EXTERN_C int64_t ss_cuda_attention_flash_bf16_ws(int64_t n_rows, int64_t H, int64_t Hkv, int64_t dh) {
    if (n_rows <= 0 || H < 1 || Hkv < 1 || dh < 1) return 0;
    /* counted in bytes too (2 each) */
    if (H > INT64_MAX / 8 || Hkv > INT64_MAX / 8 || H + 2 * Hkv > INT64_MAX / 2 / dh ||
        n_rows > INT64_MAX / 2 / ((H + 2 * Hkv) * dh))
        return -1;
    return n_rows * (H + 2 * Hkv) * dh;
}

SS_EXTERN_C int ss_cuda_attention_flash_bf16_from16(void *z, int zdt, const uint16_t *qkv16, int64_t ld16,
                                                    int64_t n_seq, const int64_t *start, const int64_t *len,
                                                    int64_t max_len, int64_t H, int64_t Hkv, int64_t dh, float sscale,
                                                    int qt, cudaStream_t stream) {
    if (n_seq <= 0 || max_len <= 0 || H <= 0) return 0;
    if ((dh != 64 && dh != 128) || Hkv < 1 || H % Hkv || ld16 < (H + 2 * Hkv) * dh || ld16 % 8 ||
        (uintptr_t)qkv16 % 16 || (zdt != SS_CUDA_F32 && zdt != SS_CUDA_BF16) || (uintptr_t)z % 8 || qt < 0 || qt > 2)
        return 1;
    const int z16 = zdt == SS_CUDA_BF16, two = qt == 2;
    const int64_t n_qt = ss_cdiv(max_len, TC_BR * (two ? 2 : 1));
    if (n_seq * H > 0x7fffffff || n_qt > 65535) return 1;
    const int group = (int)(H / Hkv);
    const float sl = sscale * 1.4426950408889634f; /* log2 e */
    const dim3 grid = SS_DIM3(n_seq * H, n_qt, 1);
#define TC_GO(kernel)                                                                                               \
    SS_LAUNCH(kernel, grid, TC_THREADS, 0, stream, z, z16, qkv16, ld16, H * dh, (H + Hkv) * dh, start, len, (int)n_seq, \
              group, sl)
    if (dh == 64) {
        if (two) TC_GO(ss_k_attn_tc_64x2);
        else TC_GO(ss_k_attn_tc_64);
    } else if (!two) {
        TC_GO(ss_k_attn_tc_128);
    } else {
        SS_SET_MAX_DYN_SHARED(ss_k_attn_tc_128x2, TC_128X2_QSMEM);
        SS_LAUNCH(ss_k_attn_tc_128x2, grid, TC_THREADS, TC_128X2_QSMEM, stream, z, z16, qkv16, ld16, H * dh,
                  (H + Hkv) * dh, start, len, (int)n_seq, group, sl);
    }
#undef TC_GO
    return SS_LAUNCH_STATUS();
}

SS_EXTERN_C int ss_cuda_attention_flash_bf16(void *z, int zdt, const float *q, const float *k, const float *v,
                                             int64_t ld_qkv, int64_t n_seq, const int64_t *start, const int64_t *len,
                                             int64_t max_len, int64_t n_rows, int64_t H, int64_t Hkv, int64_t dh,
                                             float scale, void *ws, int qt, cudaStream_t stream) {
    if (n_seq <= 0 || max_len <= 0 || H <= 0) return 0;
    if ((dh != 64 && dh != 128) || Hkv < 1 || H % Hkv || ld_qkv < H * dh || n_rows < 1 || (uintptr_t)ws % 16 ||
        (zdt != SS_CUDA_F32 && zdt != SS_CUDA_BF16) || qt < 0 || qt > 2)
        return 1;
    if (n_seq * H > 0x7fffffff || ss_cdiv(max_len, TC_BR) > 65535) return 1;
    SS_LAUNCH(ss_k_attn_pack_bf16, SS_MIN(n_rows, (int64_t)1 << 20), 256, 0, stream, (uint16_t *)ws, q, k, v, ld_qkv,
              n_rows, H * dh, Hkv * dh, scale);
    const int st = SS_LAUNCH_STATUS();
    if (st) return st;
    return ss_cuda_attention_flash_bf16_from16(z, zdt, (const uint16_t *)ws, (H + 2 * Hkv) * dh, n_seq, start, len,
                                               max_len, H, Hkv, dh, 1.f, qt, stream);
}
