/* Site capture: gathers rows of a site, which the forward pass holds as rows
 * with a leading dimension ld (e.g. q, k and v inside the fused qkv buffer,
 * ld = 3*d), into a contiguous [rows, cols] buffer, optionally only the rows
 * listed in row_idx (e.g. the last token of each sequence).
 *
 * Design: a block of 8 warps; warp w of block b copies row 8b+w, its lanes
 * striding over the columns, so every warp streams one contiguous row: fully
 * coalesced reads and writes. float4 when cols and ld are multiples of 4 and
 * both base pointers are 16-byte aligned. Limits: rows < 2^31 * 8. */
#include "ss_cuda.cuh"

#define CAP_WARPS 8

SS_KERNEL(ss_k_capture, (float *, dst), (const float *, src), (int64_t, ld), (const int64_t *, row_idx),
          (int64_t, rows), (int64_t, cols), (int, vec)) {
    int lane = threadIdx.x & 31;
    int64_t r = (int64_t)blockIdx.x * CAP_WARPS + (threadIdx.x >> 5);
    if (r >= rows) return;
    const float *s = src + (row_idx ? row_idx[r] : r) * ld;
    float *d = dst + r * cols;
    if (vec) {
        for (int64_t c = lane; c < cols / 4; c += 32) ((float4 *)d)[c] = ((const float4 *)s)[c];
        return;
    }
    for (int64_t c = lane; c < cols; c += 32) d[c] = s[c];
}

SS_EXTERN_C int ss_cuda_capture(float *dst, const float *src, int64_t ld_src, const int64_t *row_idx, int64_t rows,
                                int64_t cols, cudaStream_t stream) {
    if (rows <= 0 || cols <= 0) return 0;
    if (ld_src < cols || ss_cdiv(rows, CAP_WARPS) > 0x7fffffff) return 1;
    int vec = cols % 4 == 0 && ld_src % 4 == 0 && ss_aligned16(dst) && ss_aligned16(src);
    SS_LAUNCH(ss_k_capture, ss_cdiv(rows, CAP_WARPS), 32 * CAP_WARPS, 0, stream, dst, src, ld_src, row_idx, rows, cols,
              vec);
    return SS_LAUNCH_STATUS();
}

/* The same rows (no row list) written in dtype ddt: fp32, or fp16/bf16
 * rounded to nearest even (ss_store_act), for predict --generate's key/value
 * cache of a 16-bit model. */
SS_KERNEL(ss_k_capture_to, (void *, dst), (int, ddt), (const float *, src), (int64_t, ld), (int64_t, rows),
          (int64_t, cols)) {
    int lane = threadIdx.x & 31;
    int64_t r = (int64_t)blockIdx.x * CAP_WARPS + (threadIdx.x >> 5);
    if (r >= rows) return;
    const float *s = src + r * ld;
    for (int64_t c = lane; c < cols; c += 32) ss_store_act(dst, ddt, r * cols + c, s[c]);
}

SS_EXTERN_C int ss_cuda_capture_to(void *dst, int dst_dtype, const float *src, int64_t ld_src, int64_t rows,
                                   int64_t cols, cudaStream_t stream) {
    if (rows <= 0 || cols <= 0) return 0;
    if (ld_src < cols || ss_cdiv(rows, CAP_WARPS) > 0x7fffffff || dst_dtype < SS_CUDA_F32 || dst_dtype > SS_CUDA_BF16)
        return 1;
    SS_LAUNCH(ss_k_capture_to, ss_cdiv(rows, CAP_WARPS), 32 * CAP_WARPS, 0, stream, dst, dst_dtype, src, ld_src, rows,
              cols);
    return SS_LAUNCH_STATUS();
}
