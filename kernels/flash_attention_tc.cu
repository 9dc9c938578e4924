/* Causal attention on tensor cores, without the pattern: the contract of
 * ss_cuda_attention_flash (include/subscope/cuda_kernels.h) for head sizes 64
 * and 128, with Q, K, V and the probabilities rounded to bf16 for the
 * products (mma.sync m16n8k16, fp32 accumulation) and the softmax in fp32.
 * The default for bf16 models where the pattern is not wanted (the ops
 * table's attention_lowp; SUBSCOPE_ATTN_TC, cuda_backend.c); checked on an
 * H100 by kernel_check and gpu-check, timed by kernel_bench and the
 * gpu_forward bench step. A second version in flash-attention-2's layout
 * (flash_attention_tc2.cu) waits for a GPU to time it against this one.
 *
 * Design (flash-attention 2): grid (n_seq * ceil(max_len/64), H), 4 warps, warp
 * w owns query rows 16w..16w+15 of the block's 64; Q's fragments are read
 * once into registers (scaled, bf16); key tiles of 64 go through shared memory
 * as bf16 (rows padded by 8 halves, so the fragment loads hit 32 banks); per
 * tile S = Q K^T (8 x dh/16 products), the causal mask, an online softmax per
 * row (max and sum over the four lanes of a row group), then O += P V with
 * P's accumulator layout reused as the A operand (dh/8 x 4 products). Under
 * the emulation the products are mma.cuh's shuffle-based version.
 * Limits: dh 64 or 128; n_seq * ceil(max_len/64) < 2^31; H <= 65535. */
#include "ss_cuda.cuh"
#include "mma.cuh"

#define TC_BR 64 /* query rows per block (16 per warp) */
#define TC_BC 64 /* keys per tile */
#define TC_PAD 8 /* halves of padding per shared row */
#define TC_THREADS 128 /* 4 warps */

#define TC_DH 64
#define TC_NAME ss_k_attn_tc64
#include "flash_attention_tc_body.cuh"
#undef TC_DH
#undef TC_NAME
#define TC_DH 128
#define TC_NAME ss_k_attn_tc128
#include "flash_attention_tc_body.cuh"
#undef TC_DH
#undef TC_NAME

SS_EXTERN_C int ss_cuda_attention_flash_bf16(float *z, const float *q, const float *k, const float *v, int64_t ld_qkv,
                                             int64_t n_seq, const int64_t *start, const int64_t *len, int64_t max_len,
                                             int64_t H, int64_t Hkv, int64_t dh, float scale, cudaStream_t stream) {
    if (n_seq <= 0 || max_len <= 0 || H <= 0) return 0;
    if ((dh != 64 && dh != 128) || H > 65535 || Hkv < 1 || H % Hkv || ld_qkv < H * dh) return 1;
    int64_t n_qt = ss_cdiv(max_len, TC_BR);
    if (n_seq * n_qt > 0x7fffffff) return 1;
    const int group = (int)(H / Hkv);
    if (dh == 64)
        SS_LAUNCH(ss_k_attn_tc64, SS_DIM3(n_seq * n_qt, H, 1), TC_THREADS, 0, stream, z, q, k, v, ld_qkv, start, len,
                  n_qt, group, scale);
    else
        SS_LAUNCH(ss_k_attn_tc128, SS_DIM3(n_seq * n_qt, H, 1), TC_THREADS, 0, stream, z, q, k, v, ld_qkv, start, len,
                  n_qt, group, scale);
    return SS_LAUNCH_STATUS();
}
