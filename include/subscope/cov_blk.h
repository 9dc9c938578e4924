/* The host half of the blocked covariance triangle (kernels/cov_lower_blk.cu
 * says why it exists): centre, then per group of same-shaped blocks one
 * cublasGemmBatchedEx (the blk plan) or cublasGemmStridedBatchedEx (rec, when
 * `rec` is set), bf16 operands, fp32 accumulation and output, then (blk with
 * the rows in slices) the partial triangles' sum. Shared by the CUDA backend,
 * kernel_check and kernel_bench, so that all three run the same calls;
 * include cublas_v2.h and subscope/cuda_kernels.h first. `splits` is blk's
 * (ss_cuda_cov_blk_splits; rec has none). The handle must already be on
 * `stream`. Returns 0, a launcher's error (1 for bad arguments, else a
 * cudaError_t), or -1 with cuBLAS's status in *bs. */
#ifndef SUBSCOPE_COV_BLK_H
#define SUBSCOPE_COV_BLK_H

static inline int ss_cov_lower_blk(cublasHandle_t h, int rec, float *c, int64_t ldc, const void *x, int xdtype,
                                   int64_t ldx, const float *mean, int64_t n, int64_t d, int64_t leaf,
                                   int64_t splits, void *ws, cudaStream_t stream, cublasStatus_t *bs) {
    ss_cuda_cov_blk p;
    int e = rec ? ss_cuda_cov_lower_rec_prepare(&p, c, ldc, x, xdtype, ldx, mean, n, d, leaf, ws, stream)
                : ss_cuda_cov_lower_blk_prepare(&p, c, ldc, x, xdtype, ldx, mean, n, d, leaf, splits, ws, stream);
    if (e) return e;
    const float one = 1.f, zero = 0.f;
    for (int i = 0; i < p.groups; i++) {
        const ss_cuda_cov_blk_group *g = &p.g[i];
        /* C[J rows, I columns] = A[J, :] A[I, :]^T, A = Xc column-major [lda, k] */
        cublasStatus_t s =
            g->a ? cublasGemmBatchedEx(h, CUBLAS_OP_N, CUBLAS_OP_T, g->m, g->n, p.k, &one, (const void *const *)g->a,
                                       CUDA_R_16BF, p.lda, (const void *const *)g->b, CUDA_R_16BF, p.lda, &zero,
                                       (void *const *)g->c, CUDA_R_32F, p.ldc, g->batch, CUBLAS_COMPUTE_32F,
                                       CUBLAS_GEMM_DEFAULT)
                 : cublasGemmStridedBatchedEx(h, CUBLAS_OP_N, CUBLAS_OP_T, g->m, g->n, p.k, &one, g->a0, CUDA_R_16BF,
                                              p.lda, g->sab, g->b0, CUDA_R_16BF, p.lda, g->sab, &zero, g->c0,
                                              CUDA_R_32F, p.ldc, g->sc, g->batch, CUBLAS_COMPUTE_32F,
                                              CUBLAS_GEMM_DEFAULT);
        if (s != CUBLAS_STATUS_SUCCESS) {
            *bs = s;
            return -1;
        }
    }
    return p.splits > 1 ? ss_cuda_cov_sum_splits(c, ldc, p.part, d, p.splits, stream) : 0;
}

#endif
