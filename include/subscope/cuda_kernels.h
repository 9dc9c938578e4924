/* Launchers of the CUDA kernels in kernels/<op>.cu (one op per file).
 *
 * Every pointer is a device pointer (host memory under the emulation used
 * by the unit tests); activations are fp32, row-major; weights may be fp32,
 * fp16 or bf16 (SS_CUDA_F32/F16/BF16, numerically equal to SS_DTYPE_F32/F16/
 * BF16) and are always accumulated in fp32. Sizes are int64_t. Launches are
 * asynchronous on `stream`. Each launcher returns 0, cudaErrorInvalidValue
 * (1) for arguments it cannot handle (the comment says which), or the
 * cudaError_t of a failed launch; a size of 0 launches nothing and returns 0.
 *
 * This header is plain C and C++; it does not need the CUDA headers. */
#ifndef SUBSCOPE_CUDA_KERNELS_H
#define SUBSCOPE_CUDA_KERNELS_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The same type as the CUDA runtime's cudaStream_t (a repeated identical
 * typedef is valid C11 and C++). */
typedef struct CUstream_st *cudaStream_t;

enum { SS_CUDA_F32 = 0, SS_CUDA_F16 = 1, SS_CUDA_BF16 = 2 };
/* Activations of ss_cuda_bias_act; the first two equal ss_act's values. */
enum { SS_CUDA_GELU_TANH = 0, SS_CUDA_GELU_ERF = 1, SS_CUDA_ACT_NONE = 2 };

/* Row i: tok = wte[tokens[i]], pos = wpe[pos[i]], sum = tok + pos, for n rows
 * of width d; any of tok_out/pos_out/sum_out may be NULL (not written). An id
 * outside [0,n_vocab) or position outside [0,n_pos) gives a row of NaN.
 * wpe NULL (rotary models): pos is not read, sum = tok, and pos_out must be
 * NULL (else cudaErrorInvalidValue). */
int ss_cuda_embed(float *tok_out, float *pos_out, float *sum_out, const int32_t *tokens, const int32_t *pos,
                  const void *wte, const void *wpe, int wdtype, int64_t n_vocab, int64_t n_pos, int64_t n, int64_t d,
                  cudaStream_t stream);

/* Per row of x[rows,d]: (x - mean)/sqrt(var + eps) * w + b (b may be NULL). */
int ss_cuda_layernorm(float *out, const float *x, const void *w, const void *b, int wdtype, int64_t rows, int64_t d,
                      float eps, cudaStream_t stream);
/* The same written in out_dtype (SS_CUDA_F32, or F16/BF16 rounded to nearest
 * even): for a product with 16-bit weights, which would round it so anyway. */
int ss_cuda_layernorm_to(void *out, int out_dtype, const float *x, const void *w, const void *b, int wdtype,
                         int64_t rows, int64_t d, float eps, cudaStream_t stream);

/* The same by a chosen kernel (kernels/layernorm.cu): SS_CUDA_LN_WARP one
 * warp per row held in registers (d <= 1024, d % 4 == 0, x and out 16-byte
 * aligned), SS_CUDA_LN_BLOCK one block per row held in registers (d <= 16384,
 * the same alignment), SS_CUDA_LN_SWEEP three sweeps over the row (any
 * shape), SS_CUDA_LN_AUTO the first of these the shape allows (what
 * ss_cuda_layernorm_to does). A plan the shape does not allow returns 1. For
 * the benchmark and the checks, which compare the plans. */
enum { SS_CUDA_LN_AUTO, SS_CUDA_LN_WARP, SS_CUDA_LN_BLOCK, SS_CUDA_LN_SWEEP };
int ss_cuda_layernorm_plan(void *out, int out_dtype, const float *x, const void *w, const void *b, int wdtype,
                           int64_t rows, int64_t d, float eps, int plan, cudaStream_t stream);

/* Per row: x / sqrt(mean(x^2) + eps) * w (Llama's RMSNorm, all in fp32). */
int ss_cuda_rmsnorm(float *out, const float *x, const void *w, int wdtype, int64_t rows, int64_t d, float eps,
                    cudaStream_t stream);
/* The same written in out_dtype, as ss_cuda_layernorm_to. */
int ss_cuda_rmsnorm_to(void *out, int out_dtype, const float *x, const void *w, int wdtype, int64_t rows, int64_t d,
                       float eps, cudaStream_t stream);

/* Rotary embedding in place, as ss_backend.rope (include/subscope/backend.h):
 * the first n_heads heads (width dh) of each of the rows of x (row stride
 * ld) are rotated by a = pos[r] * inv_freq[i] (the fp32 product; precise
 * cosf/sinf), or by -a with inverse. pos [rows] and inv_freq [dh/2] are
 * device arrays. dh even and >= 2, ld >= n_heads*dh, else
 * cudaErrorInvalidValue. */
int ss_cuda_rope(float *x, int64_t ld, int64_t rows, int64_t n_heads, int64_t dh, const int32_t *pos,
                 const float *inv_freq, int inverse, cudaStream_t stream);
/* The same rotation (not inverse) of bf16 rows in place, each value rotated
 * in fp32 and rounded to nearest even: bf16 of what ss_cuda_rope gives for
 * the rows' values. dh a multiple of 4, ld even, x 4-byte aligned, else
 * cudaErrorInvalidValue. */
int ss_cuda_rope_bf16(uint16_t *x, int64_t ld, int64_t rows, int64_t n_heads, int64_t dh, const int32_t *pos,
                      const float *inv_freq, cudaStream_t stream);

/* SwiGLU: out[r,c] = silu(gu[r,c]) * gu[r,dm+c] for gu [rows, 2*dm] (gate,
 * then up), out [rows, dm]; out must not overlap gu. */
int ss_cuda_swiglu(float *out, const float *gu, int64_t rows, int64_t dm, cudaStream_t stream);
/* The same rounded to out_dtype (SS_CUDA_F16 or SS_CUDA_BF16, nearest even). */
int ss_cuda_swiglu_16(void *out, int out_dtype, const float *gu, int64_t rows, int64_t dm, cudaStream_t stream);
/* The same from gu in that 16-bit type (SS_CUDA_F16 or _BF16) too. */
int ss_cuda_swiglu_16from16(void *out, int dtype, const void *gu, int64_t rows, int64_t dm, cudaStream_t stream);

/* out[r,c] = act(x[r,c] + bias[c]); bias may be NULL; out may equal x. */
int ss_cuda_bias_act(float *out, const float *x, const void *bias, int wdtype, int64_t rows, int64_t cols, int act,
                     cudaStream_t stream);

/* out = a + b elementwise; out may equal a or b. */
int ss_cuda_add(float *out, const float *a, const float *b, int64_t n, cudaStream_t stream);

/* Row-wise softmax of x[rows,cols] (max-subtracted); out may equal x. */
int ss_cuda_softmax(float *out, const float *x, int64_t rows, int64_t cols, cudaStream_t stream);
/* In place over [*, L, L] blocks of scores: row r (query r % L) becomes the
 * softmax of its keys 0..r % L, zeros beyond (causal attention). */
int ss_cuda_softmax_causal(float *x, int64_t rows, int64_t L, cudaStream_t stream);
/* Its backward over the same [*, L, L] blocks: ds holds dL/dP on entry and
 * becomes scale * P (dP - rowsum(P dP)) on keys 0..r % L, 0 beyond; p holds
 * the probabilities (kernels/softmax.cu). */
int ss_cuda_softmax_causal_backward(float *ds, const float *p, int64_t rows, int64_t L, float scale,
                                    cudaStream_t stream);

/* Causal attention as ss_backend.attention (include/subscope/backend.h):
 * n_seq sequences packed in rows, sequence s has len[s] rows from start[s]
 * (start/len/pattern_off are device arrays; max_len >= every len[s] is the
 * host's bound, it sizes the grid); q rows (H heads) and k, v rows (Hkv
 * heads; query head h reads key/value head h / (H/Hkv)) have stride ld_qkv,
 * z rows H*dh. ss_cuda_attention_pattern also writes the probabilities of
 * sequence s to pattern + pattern_off[s] as [H,len,len] (zeros above the
 * diagonal); ss_cuda_attention_flash does not materialise them. dh <= 256,
 * H <= 65535, Hkv >= 1 dividing H, ld_qkv >= H*dh, else
 * cudaErrorInvalidValue. */
int ss_cuda_attention_pattern(float *z, float *pattern, const float *q, const float *k, const float *v,
                              int64_t ld_qkv, int64_t n_seq, const int64_t *start, const int64_t *len,
                              const int64_t *pattern_off, int64_t max_len, int64_t H, int64_t Hkv, int64_t dh,
                              float scale, cudaStream_t stream);
int ss_cuda_attention_flash(float *z, const float *q, const float *k, const float *v, int64_t ld_qkv, int64_t n_seq,
                            const int64_t *start, const int64_t *len, int64_t max_len, int64_t H, int64_t Hkv,
                            int64_t dh, float scale, cudaStream_t stream);
/* Causal attention against a key/value cache, as ss_backend.attention_kv:
 * query row i (q, stride ld_q, H heads) at position q0 + i attends keys
 * 0..q0+i of k and v (stride ld_kv, Hkv heads, grouped as above; elements
 * of kv_dtype, SS_CUDA_F32/F16/BF16, widened exactly); z is [n_q, H*dh]
 * (kernels/attention_kv.cu: a block per (row, head), an online softmax over
 * chunks of 32 keys, fixed shared memory). splits > 1 cuts each row's keys
 * into at most that many chunks (a multiple of 32 keys each), a block per
 * (row, head, chunk), whose partial softmaxes a second kernel merges
 * (flash-decoding); ws then holds ss_cuda_attention_kv_ws(n_q, q0, H, dh,
 * splits) floats (0: none needed, NULL allowed; -1: splits > 65535, or a size past
 * int64, in floats or bytes: the launch is refused too). splits <= 1: one block per
 * (row, head), no ws. ss_cuda_attention_kv_splits is the count the backend
 * asks for: 1 where the n_q*H blocks fill the current GPU's SMs or the keys
 * are few (under 512), else enough to put about four blocks on each SM.
 * dh <= 256, H <= 65535, Hkv dividing H, splits <= 65535, a known kv_dtype,
 * else 1 (cudaErrorInvalidValue). */
int64_t ss_cuda_attention_kv_splits(int64_t n_q, int64_t q0, int64_t H);
int64_t ss_cuda_attention_kv_ws(int64_t n_q, int64_t q0, int64_t H, int64_t dh, int64_t splits);
int ss_cuda_attention_kv(float *z, const float *q, int64_t ld_q, const void *k, const void *v, int kv_dtype,
                         int64_t ld_kv, int64_t n_q, int64_t q0, int64_t H, int64_t Hkv, int64_t dh, float scale,
                         int64_t splits, float *ws, cudaStream_t stream);
/* The same on tensor cores with Q, K, V and the probabilities rounded to bf16
 * (fp32 accumulation and softmax); dh 64 or 128 only
 * (kernels/flash_attention_tc.cu: Q * scale, K, V packed to bf16 in ws first,
 * then cp.async tiles and ldmatrix fragments). The contract above plus n_rows
 * (every row start[s] + i, i < len[s], is below it) and ws, 16-byte aligned,
 * of ss_cuda_attention_flash_bf16_ws 16-bit elements (-1: their bytes do
 * not fit in an int64_t); ceil(max_len/64) <=
 * 65535 and n_seq * H < 2^31, else cudaErrorInvalidValue. z is written
 * as zdt: SS_CUDA_F32, or SS_CUDA_BF16 (each value the fp32 one rounded to
 * nearest even, as ss_cuda_convert rounds; z 8-byte aligned). qt: the
 * 16-row query tiles a warp takes, 1 (or 0) or 2 (128 query rows a block,
 * each K/V fragment read once for both; the same result bit for bit). The
 * backend's attention_lowp (bf16 models) calls it. */
int64_t ss_cuda_attention_flash_bf16_ws(int64_t n_rows, int64_t H, int64_t Hkv, int64_t dh);
int ss_cuda_attention_flash_bf16(void *z, int zdt, const float *q, const float *k, const float *v, int64_t ld_qkv,
                                 int64_t n_seq, const int64_t *start, const int64_t *len, int64_t max_len,
                                 int64_t n_rows, int64_t H, int64_t Hkv, int64_t dh, float scale, void *ws, int qt,
                                 cudaStream_t stream);
/* Its attention alone, from bf16 rows already made (the pack kernel's, or a
 * product's 16-bit output): qkv16 [rows, ld16] (16-byte aligned, ld16 a
 * multiple of 8) holds Q at column 0, K at H*dh and V at (H+Hkv)*dh; the
 * scores Q K^T are scaled by sscale in fp32 (1 for the pack kernel's Q,
 * which carries the scale). */
int ss_cuda_attention_flash_bf16_from16(void *z, int zdt, const uint16_t *qkv16, int64_t ld16, int64_t n_seq,
                                        const int64_t *start, const int64_t *len, int64_t max_len, int64_t H,
                                        int64_t Hkv, int64_t dh, float sscale, int qt, cudaStream_t stream);

/* Site capture: dst[r, 0:cols] = src[row(r)*ld_src + 0:cols] for r < rows,
 * row(r) = row_idx[r] (a device array) or r when row_idx is NULL. */
int ss_cuda_capture(float *dst, const float *src, int64_t ld_src, const int64_t *row_idx, int64_t rows, int64_t cols,
                    cudaStream_t stream);
/* dst[r, 0:cols] = src[r*ld_src + 0:cols] in dst_dtype (SS_CUDA_F32, or F16/BF16
 * rounded to nearest even), for r < rows. */
int ss_cuda_capture_to(void *dst, int dst_dtype, const float *src, int64_t ld_src, int64_t rows, int64_t cols,
                       cudaStream_t stream);

/* dst[i] = src[i] converted between SS_CUDA_F32/F16/BF16 (round to nearest even). */
int ss_cuda_convert(void *dst, int dst_dtype, const void *src, int src_dtype, int64_t n, cudaStream_t stream);

/* Column means of x[n,d] (row stride ld, dtype SS_CUDA_F32/F16/BF16),
 * summed in fp64: mean64[c] in fp64 and/or mean32[c] rounded to fp32 (either
 * may be NULL, not both). rows: NULL, or n row numbers of x on the device
 * (the batch's row r is x's row rows[r]: a gather without a copy). ws:
 * NULL, or ss_cuda_colmean_ws(n, d) bytes (0: none needed), with which the
 * rows are summed in slices in parallel, then the slices in order.
 * Deterministic (no atomics); the slices, from n alone, change the order of
 * the fp64 sums, not what they depend on. */
int64_t ss_cuda_colmean_ws(int64_t n, int64_t d);
int ss_cuda_colmean(double *mean64, float *mean32, const void *x, int xdtype, int64_t ld, const int64_t *rows,
                    int64_t n, int64_t d, double *ws, cudaStream_t stream);

/* Centred second moments of one batch, lower triangle: for d > i >= j,
 * c[i*ldc + j] = sum_{r<n} (x[r,i] - mean[i]) (x[r,j] - mean[j]), fp32
 * accumulation, x as in ss_cuda_colmean (row stride ldx). Elements above
 * the diagonal are not written. mean may be NULL (no centring: raw sums of
 * products). n = 0 writes zeros. With mean = the fp32 rounding m32 of the
 * exact batch mean m, the exactly centred sums are c - n (m - m32)(m - m32)^T
 * (since sum_r (x_r - m32) = n (m - m32)); the host applies that with m from
 * ss_cuda_colmean's mean64 when the mean is large next to the spread. Needs
 * ldc >= d and ldx >= d, and ws: ss_cuda_cov_lower_ws(n, d) bytes of device
 * scratch, 16-byte aligned (the centred rows in fp32, n x d floats: 1 GiB at
 * d 16384 and 16k rows; and the partial triangles, at most 256 MB, when a
 * small d splits the rows; NULL allowed when that is 0). */
int64_t ss_cuda_cov_lower_ws(int64_t n, int64_t d);
int ss_cuda_cov_lower(float *c, int64_t ldc, const void *x, int xdtype, int64_t ldx, const float *mean, int64_t n,
                      int64_t d, void *ws, cudaStream_t stream);
/* The covariance kernels' steps, on their own: xc [n_pad, ldw] = x - mean
 * (fp32, then stored as odt: SS_CUDA_F32 or _BF16, nearest even) for r < n
 * and c < d, zero elsewhere; ldw a multiple of 16 bytes' values; rows as in
 * ss_cuda_colmean (xc's row r from x's row rows[r]). And the sum
 * of `splits` partial triangles part [splits][d][d] (lower triangles, in
 * split order) into c's lower triangle. */
int ss_cuda_cov_center(void *xc, int odt, int64_t ldw, const void *x, int xdtype, int64_t ldx, const int64_t *rows,
                       const float *mean, int64_t n, int64_t n_pad, int64_t d, cudaStream_t stream);
int ss_cuda_cov_sum_splits(float *c, int64_t ldc, const float *part, int64_t d, int splits, cudaStream_t stream);
/* The same centring, transposed and in bf16: xct [d_pad, ldt] with
 * xct[c*ldt + r] = x[r, c] - mean[c] for r < n, c < d, zero for the other
 * r < n_pad, c < d_pad (ldt >= n_pad). */
int ss_cuda_cov_center_t(uint16_t *xct, int64_t ldt, const void *x, int xdtype, int64_t ldx, const float *mean,
                         int64_t n, int64_t n_pad, int64_t d, int64_t d_pad, cudaStream_t stream);
/* Chan's merge of one batch into running statistics on the device
 * (kernels/moments_merge.cu): the batch's nb rows have the fp64 mean mean_b
 * and the fp32 products c about m32 (lower triangle, ldc), as
 * ss_cuda_colmean and ss_cuda_cov_lower leave them; mean_a [d] and the
 * co-moment m2 [d, ldm] (lower triangle; NULL: means only) hold na rows
 * (na = 0: overwritten). ws: 2d doubles of scratch. */
int ss_cuda_moments_merge(double *mean_a, double *m2, int64_t ldm, const double *mean_b, const float *m32,
                          const float *c, int64_t ldc, int64_t d, int64_t na, int64_t nb, double *ws,
                          cudaStream_t stream);
/* The same on tensor cores (kernels/cov_lower_tc.cu): each centred value
 * x - mean (fp32) is rounded to bf16 before the products, which accumulate
 * in fp32. Same arguments, limits and writes as ss_cuda_cov_lower, with
 * ss_cuda_cov_lower_tc_ws(n, d) bytes of ws (the centred rows in bf16). */
int64_t ss_cuda_cov_lower_tc_ws(int64_t n, int64_t d);
int ss_cuda_cov_lower_tc(float *c, int64_t ldc, const void *x, int xdtype, int64_t ldx, const float *mean,
                         int64_t n, int64_t d, void *ws, cudaStream_t stream);
/* The same roundings through cuBLAS (kernels/cov_lower_blk.cu; the calls in
 * include/subscope/cov_blk.h), in one of two plans.
 * blk: the triangle cut into square blocks of leaf x leaf (ss_cuda_cov_blk_leaf:
 * a multiple of 64, at most d; leaf <= 0 picks about d / 8, at least 256),
 * those on or below the diagonal one batched bf16 product; _prepare centres x
 * into ws (ss_cuda_cov_lower_blk_ws(n, d, leaf, splits) bytes) and writes the
 * batch's pointer arrays there (at most three groups of one shape each).
 * Asked for (splits > 1; <= 0 or 1: none), the rows are cut into slices too
 * (ss_cuda_cov_blk_splits: the count that n allows): every block times every
 * slice is one product of the batch, into `splits` partial triangles in ws
 * that ss_cov_lower_blk then sums in slice order (ss_cuda_cov_sum_splits);
 * the rows past n up to the slices' end are zeros that _prepare writes.
 * rec: the triangle halved recursively: at each of k levels the square below
 * the diagonal of each half is one product, the 2^(l-1) of level l one strided
 * batch, and the 2^k diagonal blocks of width ss_cuda_cov_rec_leaf(d, leaf)
 * (d halved while wider than leaf and a multiple of 16; the same default)
 * one more; ws holds the centred rows (ss_cuda_cov_lower_rec_ws(n, d) bytes).
 * Both describe the calls in *p (none for d = 0, nor for n = 0, whose zeros
 * they write themselves). With x NULL, ws already holds the centred rows
 * (ss_cuda_cov_center's bf16 output, ldw = ss_cuda_cov_blk_ldw(d), n_pad = n:
 * collect centres them as it gathers them) and ldx, xdtype and mean are not
 * used. The diagonal blocks are computed whole, so without slices the upper
 * triangles of those blocks are written too; nothing else above the diagonal is. */
#define SS_CUDA_COV_GROUPS 24
typedef struct ss_cuda_cov_blk_group {
    int m, n, batch;           /* each product's rows and columns (column-major), how many */
    const void **a, **b;       /* blk: device arrays of the batch's operands: bf16, lda apart */
    void **c;                  /* ... and of its fp32 outputs, ldc apart */
    const void *a0, *b0;       /* rec (a == NULL): the first product's operands, */
    void *c0;                  /* its output, */
    long long sab, sc;         /* and the elements from one product's operands / output to the next's */
} ss_cuda_cov_blk_group;
typedef struct ss_cuda_cov_blk {
    int groups, k, lda, ldc;   /* k: the rows of x (of a slice); ldc: of the products' outputs */
    int splits;                /* the slices of the rows: > 1, partial triangles to sum into C */
    float *part;               /* ... [splits][d][d] in ws (ss_cuda_cov_sum_splits's layout) */
    ss_cuda_cov_blk_group g[SS_CUDA_COV_GROUPS];
} ss_cuda_cov_blk;
int64_t ss_cuda_cov_blk_ldw(int64_t d);
int64_t ss_cuda_cov_blk_leaf(int64_t d, int64_t leaf);
int64_t ss_cuda_cov_blk_splits(int64_t n, int64_t splits);
int64_t ss_cuda_cov_lower_blk_ws(int64_t n, int64_t d, int64_t leaf, int64_t splits);
int ss_cuda_cov_lower_blk_prepare(ss_cuda_cov_blk *p, float *c, int64_t ldc, const void *x, int xdtype, int64_t ldx,
                                  const float *mean, int64_t n, int64_t d, int64_t leaf, int64_t splits, void *ws,
                                  cudaStream_t stream);
int64_t ss_cuda_cov_rec_leaf(int64_t d, int64_t leaf);
int64_t ss_cuda_cov_lower_rec_ws(int64_t n, int64_t d);
int ss_cuda_cov_lower_rec_prepare(ss_cuda_cov_blk *p, float *c, int64_t ldc, const void *x, int xdtype, int64_t ldx,
                                  const float *mean, int64_t n, int64_t d, int64_t leaf, void *ws,
                                  cudaStream_t stream);
/* The same products on Hopper's warpgroup instructions (kernels/cov_lower_wg.cu):
 * the same roundings, limits and writes, with ss_cuda_cov_lower_wg_ws(n, d)
 * bytes of ws. Only where ss_cuda_cov_lower_wg_supported() (a build for
 * sm_90a, on a GPU of compute capability 9.0; always under the emulation);
 * elsewhere it returns 1 without running. */
int ss_cuda_cov_lower_wg_supported(void);
int64_t ss_cuda_cov_lower_wg_ws(int64_t n, int64_t d);
int ss_cuda_cov_lower_wg(float *c, int64_t ldc, const void *x, int xdtype, int64_t ldx, const float *mean,
                         int64_t n, int64_t d, void *ws, cudaStream_t stream);

/* Masks of ablate's masked forwards, ss_mask_apply's semantics
 * (include/subscope/masks.h) on device rows. One mask at one site: */
typedef struct ss_cuda_mask_op {
    int32_t mode;                    /* SS_BMASK_* of backend.h: -1 none, 0 zero, 1 mean, 2 scale, 3 noise, 4 negnoise */
    int32_t relative;                /* noise: sigma x std[unit] */
    double factor, sigma;
    uint64_t seed;
    int64_t n_units, units;          /* n_units 0: all width units; else idx[units .. units+n_units), sorted */
    int64_t n_positions, positions;  /* 0: all positions; else idx[positions ..], sorted */
    int64_t mean, std;               /* offsets of [width] doubles in vals, or -1 */
} ss_cuda_mask_op;
/* Applies ops to data [rows, width] (row stride ld >= width) for n_seq
 * sequences: seq is a device array [4][n_seq] of start, len, prompt index
 * and op index (-1: none) per sequence; ops, idx and vals are device
 * arrays (the "mask program"); max_slots >= the positions any sequence is
 * masked at (its op's n_positions, or its len for all positions) bounds
 * the grid. Zero, mean and scale are elementwise; noise is the counter-based
 * draw ss_mask_noise (splitmix64, Box-Muller in double) from (seed, prompt,
 * position, site_id, unit), so it does not depend on batching or the grid.
 * Scale by 1 and sigma 0 change nothing (bitwise). The host validated the
 * program (units < width, positions >= 0, start + len <= rows); n_seq *
 * max_slots < 2^31, else cudaErrorInvalidValue. Deterministic. */
int ss_cuda_mask_apply(float *data, int64_t ld, int64_t width, int site_id, const ss_cuda_mask_op *ops,
                       const int64_t *idx, const double *vals, int64_t n_seq, const int64_t *seq, int64_t max_slots,
                       cudaStream_t stream);

/* ---- The backward pass (ss_backend's backward ops). ---- */

/* out[c] += sum over the M rows of x[M,N] (row stride N), for c < N. Fixed
 * summation order (deterministic, no atomics). */
int ss_cuda_sum_rows(float *out, const float *x, int64_t M, int64_t N, cudaStream_t stream);

/* attribute on the device (see kernels/attr_reduce.cu): out[r,u] =
 * (c - a)[r,u] * g[r*ldg+u], (g * a) without c, g without a and c; and
 * per-sequence fp64 sums over rows, out[s,u] = sum_t x[(start[s]+t)*w+u]
 * (start, len: device arrays of n_seq). */
int ss_cuda_attr_product(float *out, const float *g, int64_t ldg, const float *a, const float *c, int64_t rows,
                         int64_t w, cudaStream_t stream);
int ss_cuda_seq_sums(double *out, const float *x, int64_t w, int64_t n_seq, const int64_t *start, const int64_t *len,
                     cudaStream_t stream);
/* Integrated gradients' steps on the device (the backend's ig_point, ig_add
 * and ig_attr, defined there): base is fp64 [w] or NULL. */
int ss_cuda_ig_point(float *x, int64_t ldx, const float *clean, const double *base, double alpha, int64_t rows,
                     int64_t w, cudaStream_t stream);
int ss_cuda_ig_add(double *sum, const float *g, int64_t ldg, int64_t rows, int64_t w, cudaStream_t stream);
int ss_cuda_ig_attr(float *out, const float *clean, const double *base, const double *sum, int steps, int64_t rows,
                    int64_t w, cudaStream_t stream);
/* patch's pieces written into kn copies of a prompt (the backend's patch_pieces). */
int ss_cuda_patch_pieces(float *x, int64_t ld, const float *src, int64_t n, int64_t w, int kn, int per, int64_t p0,
                         int64_t hd, cudaStream_t stream);

/* LayerNorm backward for y = layernorm(x; w, b) (fp32 w): per row,
 * dx += rstd (g - mean(g) - xhat mean(g xhat)) with g = dy w; and, when
 * non-NULL, dw[c] += sum_r dy xhat, db[c] += sum_r dy. ws is a device
 * workspace of ss_cuda_layernorm_backward_ws(rows) floats (the rows' mean
 * and rstd; -1: more than an int64_t counts), needed only when dw or db is
 * non-NULL. dx must not overlap dy
 * or x. Deterministic (no atomics). */
int64_t ss_cuda_layernorm_backward_ws(int64_t rows);
int ss_cuda_layernorm_backward(float *dx, float *dw, float *db, const float *dy, const float *x, const float *w,
                               int64_t rows, int64_t d, float eps, float *ws, cudaStream_t stream);

/* RMSNorm backward for y = rmsnorm(x; w) (fp32 w): per row, dx += rstd (g -
 * x rstd^2 mean(g x)) with g = dy w; and, when non-NULL, dw[c] += sum_r dy x
 * rstd. ws is a device workspace of ss_cuda_rmsnorm_backward_ws(rows) floats
 * (the rows' rstd), needed only when dw is non-NULL. dx may be NULL (dw
 * only); dx must not overlap dy or x. Deterministic (no atomics). */
int64_t ss_cuda_rmsnorm_backward_ws(int64_t rows);
int ss_cuda_rmsnorm_backward(float *dx, float *dw, const float *dy, const float *x, const float *w, int64_t rows,
                             int64_t d, float eps, float *ws, cudaStream_t stream);

/* SwiGLU backward: for out = swiglu(gu) (ss_cuda_swiglu), writes dgu [rows,
 * 2*dm] = (dy up silu'(gate), dy silu(gate)) given dy [rows, dm]; dgu must
 * not overlap dy or gu. Deterministic. */
int ss_cuda_swiglu_backward(float *dgu, const float *dy, const float *gu, int64_t rows, int64_t dm,
                            cudaStream_t stream);

/* Forward mode (trace's attribution pass; ss_backend.norm_jvp, swiglu_jvp,
 * attention_jvp): the tangents of LayerNorm (rms 0) / RMSNorm (rms 1), of
 * SwiGLU and of causal grouped-query attention (one launch per sequence;
 * start and len host arrays). Outputs written, not overlapping the inputs;
 * deterministic. Nonzero: a shape past the kernels' limits or a launch error. */
int ss_cuda_norm_jvp(float *dy, const float *dx, const float *x, const float *w, int64_t rows, int64_t d, float eps,
                     int rms, cudaStream_t stream);
int ss_cuda_swiglu_jvp(float *dout, const float *dgu, const float *gu, int64_t rows, int64_t dm, cudaStream_t stream);
int ss_cuda_attention_jvp(float *dz, const float *dq, const float *dk, const float *dv, int64_t ldd, const float *q,
                          const float *k, const float *v, int64_t ld, int64_t n_seq, const int64_t *start,
                          const int64_t *len, int64_t H, int64_t Hkv, int64_t dh, float scale, cudaStream_t stream);

/* dx = dy * act'(x) for n elements, act SS_CUDA_GELU_TANH or _ERF; dx may
 * equal dy. */
int ss_cuda_gelu_backward(float *dx, const float *dy, const float *x, int64_t n, int act, cudaStream_t stream);

/* Attention backward as ss_backend.attention_backward: dq (H heads), dk, dv
 * (Hkv heads; those of a key/value head sum over the H/Hkv query heads
 * sharing it), row stride ld_dqkv, are written, not accumulated, for every
 * row of every sequence. start/len/ws_off are device arrays (ws_off[s]: the
 * offset of sequence s's [H,len,len] block; max_len bounds every len[s]); ws
 * is a device workspace of 2 * sum_s H len[s]^2 floats (the probabilities P,
 * then dS at + ws_half, ws_half = sum_s H len[s]^2). Deterministic. dh <=
 * 256, H <= 65535, Hkv >= 1 dividing H, row strides >= H*dh, else
 * cudaErrorInvalidValue. */
int ss_cuda_attention_backward(float *dq, float *dk, float *dv, int64_t ld_dqkv, const float *dz, const float *q,
                               const float *k, const float *v, int64_t ld_qkv, int64_t n_seq, const int64_t *start,
                               const int64_t *len, const int64_t *ws_off, int64_t max_len, int64_t H, int64_t Hkv,
                               int64_t dh, float scale, float *ws, int64_t ws_half, cudaStream_t stream);
/* The same without the O(len^2) workspace: the probabilities are recomputed
 * from q and k (kernels/attention_backward_rc.cu), and stats is a device
 * workspace of 3 * rows * H floats (rows: every packed row, start[s] +
 * len[s] over the sequences). Same arithmetic in the same order as the
 * stored variant; about twice its score and dP work. */
int ss_cuda_attention_backward_rc(float *dq, float *dk, float *dv, int64_t ld_dqkv, const float *dz, const float *q,
                                  const float *k, const float *v, int64_t ld_qkv, int64_t n_seq, const int64_t *start,
                                  const int64_t *len, int64_t max_len, int64_t H, int64_t Hkv, int64_t dh, float scale,
                                  float *stats, cudaStream_t stream);

/* dwte[tokens[i],:] += dx[i,:] and dwpe[pos[i],:] += dx[i,:] for n rows of
 * width d (either table may be NULL). A row whose id is outside
 * [0,n_vocab) / position outside [0,n_pos) is skipped for that table.
 * Float atomics: rows sharing an id add in an unspecified order, so the
 * result may differ between runs by rounding. */
int ss_cuda_embed_backward(float *dwte, float *dwpe, const float *dx, const int32_t *tokens, const int32_t *pos,
                           int64_t n_vocab, int64_t n_pos, int64_t n, int64_t d, cudaStream_t stream);

/* Softmax cross-entropy per row of logits[rows,V]: for targets[r] in
 * [0,V), loss[r] = logsumexp(row) - row[target] and dlogits row =
 * w_r (softmax(row) - onehot(target)), w_r = weights[r] (1 when weights is
 * NULL); targets[r] < 0 gives loss 0 and a zero row; targets[r] >= V gives
 * NaN. dlogits may equal logits; loss may be NULL. fp32, max-subtracted. */
int ss_cuda_softmax_xent(float *dlogits, float *loss, const float *logits, const int32_t *targets,
                         const float *weights, int64_t rows, int64_t V, cudaStream_t stream);

/* Scores of logits rows, per row r of logits[rows,V] (see kernels/logit_scores.cu):
 * lz[r] = log sum exp(row) in fp64; best[r] (if best) = the first index of the
 * row's largest value; kl[r] (if kl) = KL(softmax(ref[r % ref_rows]) ||
 * softmax(row)) in fp64, ref_lz holding the reference rows' log-partitions. */
int ss_cuda_logit_scores(double *lz, int32_t *best, double *kl, const float *logits, int64_t rows, int64_t V,
                         const float *ref, const double *ref_lz, int64_t ref_rows, cudaStream_t stream);
/* out[i] = src[idx[i]] for i < n. */
int ss_cuda_gather(float *out, const float *src, const int64_t *idx, int64_t n, cudaStream_t stream);

#ifdef __cplusplus
}
#endif
#endif
