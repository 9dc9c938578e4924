/* Products whose output width is not a multiple of 8, in two cuBLAS calls:
 * the first N0 = N rounded down to 64 columns of C, then the rest. Shared
 * by the CUDA backend, kernel_check and kernel_bench, so that all three run
 * the same calls; include cublas_v2.h first.
 *
 * Why: on an H100 GPT-2 small's unembedding (16384 x 50257 x 768) ran at
 * 97 TFLOP/s in bf16 and 131 in TF32 (10% and 27% of peak) where the
 * model's aligned products reach 490-810 and 260-400, and writing C with
 * rows padded to 50264 floats did not change that (13.02 ms against 13.10;
 * bench/results/h100-bench-log-20261127T0451Z.txt). What is left unaligned
 * then is the width itself, cuBLAS's m, the contiguous dimension of its
 * column-major C; llm.c pads GPT-2's vocabulary to 50304 for this reason.
 * Padding the weights would change the model's tensors and every consumer
 * of the logits; this instead gives cuBLAS an aligned width for all but the
 * last N - N0 (< 64) columns, whose small product runs on its own. Each
 * output element is the same dot product either way.
 *
 * Row-major C[M, N] (rows of ldc floats) = A[M, K] op(B) (+ beta C), B in
 * row-major [N, K] when trans_b (the tied unembedding) else [K, N]: cuBLAS's
 * column-major C^T = op(B)^T A^T. t is CUDA_R_32F (cublasSgemm, under the
 * handle's math mode) or the 16-bit type of A and B (cublasGemmEx, fp32
 * accumulation and C). split 0: one call whatever N. */
#ifndef SUBSCOPE_GEMM_SPLIT_H
#define SUBSCOPE_GEMM_SPLIT_H

static inline cublasStatus_t ss_gemm_rows_part(cublasHandle_t h, cudaDataType t, int trans_b, int64_t M, int64_t n,
                                               int64_t K, const void *A, const void *B, int64_t ldb,
                                               const float *beta, float *C, int64_t ldc) {
    const float one = 1.f;
    const cublasOperation_t opb = trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
    if (t == CUDA_R_32F)
        return cublasSgemm(h, opb, CUBLAS_OP_N, (int)n, (int)M, (int)K, &one, (const float *)B, (int)ldb,
                           (const float *)A, (int)K, beta, C, (int)ldc);
    return cublasGemmEx(h, opb, CUBLAS_OP_N, (int)n, (int)M, (int)K, &one, B, t, (int)ldb, A, t, (int)K, beta, C,
                        CUDA_R_32F, (int)ldc, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
}

/* The width of the first call: N itself when no split is wanted. */
static inline int64_t ss_gemm_split_at(int64_t N, int split) {
    return split && N % 8 && N >= 64 ? N / 64 * 64 : N;
}

static inline cublasStatus_t ss_gemm_rows(cublasHandle_t h, int split, cudaDataType t, int trans_b, int64_t M,
                                          int64_t N, int64_t K, const void *A, const void *B, const float *beta,
                                          float *C, int64_t ldc) {
    const int64_t ldb = trans_b ? K : N, n0 = ss_gemm_split_at(N, split);
    cublasStatus_t s = ss_gemm_rows_part(h, t, trans_b, M, n0, K, A, B, ldb, beta, C, ldc);
    if (s != CUBLAS_STATUS_SUCCESS || n0 == N) return s;
    const size_t es = t == CUDA_R_32F ? sizeof(float) : 2;
    /* B's columns n0.. : rows n0.. of [N, K], or elements n0.. of each row of [K, N] */
    const void *b1 = (const char *)B + (size_t)(trans_b ? n0 * K : n0) * es;
    return ss_gemm_rows_part(h, t, trans_b, M, N - n0, K, A, b1, ldb, beta, C + n0, ldc);
}

#endif
