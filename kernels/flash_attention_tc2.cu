/* Causal attention on tensor cores, second version, opt-in
 * (SUBSCOPE_ATTN_TC_V2=1, cuda_backend.c) until a GPU run has checked and
 * timed it against the first (flash_attention_tc.cu), whose contract and
 * numerics it keeps: Q, K, V and the probabilities rounded to bf16, mma.sync
 * m16n8k16 with fp32 accumulation, fp32 online softmax, head sizes 64 and 128.
 *
 * Written after the second H100 run, where the first version took 1.25 ms per
 * layer of 16 x 1024 tokens (20.6 TFLOP/s, 62% of a bf16 forward): its K and
 * V tiles arrive as scalar fp32 loads converted one at a time between two
 * barriers, with nothing overlapping them, and each fragment register is two
 * 16-bit shared loads. Here:
 *   - 128 query rows per block (8 warps), so each K/V tile serves twice the rows;
 *   - K and V arrive as float4 loads, the next tile's issued before the current
 *     tile's products (register double-buffering), converted after them;
 *   - V is stored transposed ([dh][key]), so B fragments of P V, like those of
 *     Q K^T, are single 32-bit loads (padded rows: 32 distinct banks);
 *   - a warp skips the products of tiles wholly in its causal future.
 * dh 128 takes 32-key tiles to keep the prefetch registers at 32. The loads
 * need 16-byte alignment (q, k, v and ld a multiple of 4 floats); the launcher
 * hands anything else to the first version. */
#include <stdint.h>

#include "ss_cuda.cuh"
#include "mma.cuh"

#define TC2_BR 128      /* query rows per block (16 per warp) */
#define TC2_THREADS 256 /* 8 warps */
#define TC_PAD 8        /* halves of padding per shared row */

#define TC_DH 64
#define TC_BC 64
#define TC_NAME ss_k_attn_tc2_64
#include "flash_attention_tc2_body.cuh"
#undef TC_DH
#undef TC_BC
#undef TC_NAME
#define TC_DH 128
#define TC_BC 32
#define TC_NAME ss_k_attn_tc2_128
#include "flash_attention_tc2_body.cuh"
#undef TC_DH
#undef TC_BC
#undef TC_NAME

SS_EXTERN_C int ss_cuda_attention_flash_bf16_v2(float *z, const float *q, const float *k, const float *v,
                                                int64_t ld_qkv, int64_t n_seq, const int64_t *start, const int64_t *len,
                                                int64_t max_len, int64_t H, int64_t Hkv, int64_t dh, float scale,
                                                cudaStream_t stream) {
    if (n_seq <= 0 || max_len <= 0 || H <= 0) return 0;
    if ((dh != 64 && dh != 128) || H > 65535 || Hkv < 1 || H % Hkv || ld_qkv < H * dh) return 1;
    if (((uintptr_t)k | (uintptr_t)v) % 16 || ld_qkv % 4)
        return ss_cuda_attention_flash_bf16(z, q, k, v, ld_qkv, n_seq, start, len, max_len, H, Hkv, dh, scale, stream);
    int64_t n_qt = ss_cdiv(max_len, TC2_BR);
    if (n_seq * n_qt > 0x7fffffff) return 1;
    const int group = (int)(H / Hkv);
    if (dh == 64)
        SS_LAUNCH(ss_k_attn_tc2_64, SS_DIM3(n_seq * n_qt, H, 1), TC2_THREADS, 0, stream, z, q, k, v, ld_qkv, start,
                  len, n_qt, group, scale);
    else
        SS_LAUNCH(ss_k_attn_tc2_128, SS_DIM3(n_seq * n_qt, H, 1), TC2_THREADS, 0, stream, z, q, k, v, ld_qkv, start,
                  len, n_qt, group, scale);
    return SS_LAUNCH_STATUS();
}
