/* cuBLASLt, emulated: the matrix product with a bias epilogue that the CUDA
 * backend uses (cuda_backend.c's lt_matmul), by the emulated cublasGemmEx
 * followed by the epilogue's loop (kernels/emu/host_runtime.c). Layouts are
 * column-major; a layout gives the stored matrix's rows, columns and leading
 * dimension, before the descriptor's transpose. */
#ifndef SS_EMU_CUBLASLT_H
#define SS_EMU_CUBLASLT_H

#include <stddef.h>
#include <stdint.h>

#include "cublas_v2.h"

typedef struct ss_emu_lt *cublasLtHandle_t;
typedef struct ss_emu_lt_desc *cublasLtMatmulDesc_t;
typedef struct ss_emu_lt_layout *cublasLtMatrixLayout_t;
typedef struct ss_emu_lt_pref *cublasLtMatmulPreference_t;
typedef struct { uint64_t data[8]; } cublasLtMatmulAlgo_t;
typedef struct {
    cublasLtMatmulAlgo_t algo;
    size_t workspaceSize;
    cublasStatus_t state;
    float wavesCount;
    int reserved[4];
} cublasLtMatmulHeuristicResult_t;
typedef enum { CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES = 1 } cublasLtMatmulPreferenceAttributes_t;
typedef enum {
    CUBLASLT_MATMUL_DESC_TRANSA = 3,
    CUBLASLT_MATMUL_DESC_TRANSB = 4,
    CUBLASLT_MATMUL_DESC_EPILOGUE = 7,
    CUBLASLT_MATMUL_DESC_BIAS_POINTER = 8,
    CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE = 26, /* int32_t; default -1: the bias has D's type */
} cublasLtMatmulDescAttributes_t;
typedef enum {
    CUBLASLT_EPILOGUE_DEFAULT = 1,
    CUBLASLT_EPILOGUE_BIAS = 4,
    CUBLASLT_EPILOGUE_GELU = 32,      /* tanh approximation */
    CUBLASLT_EPILOGUE_GELU_BIAS = 36, /* bias, then GELU */
} cublasLtEpilogue_t;

cublasStatus_t cublasLtCreate(cublasLtHandle_t *h);
cublasStatus_t cublasLtDestroy(cublasLtHandle_t h);
cublasStatus_t cublasLtMatmulDescCreate(cublasLtMatmulDesc_t *d, cublasComputeType_t compute, cudaDataType scale);
cublasStatus_t cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t d);
cublasStatus_t cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t d, cublasLtMatmulDescAttributes_t attr,
                                              const void *buf, size_t size);
cublasStatus_t cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t *l, cudaDataType type, uint64_t rows, uint64_t cols,
                                          int64_t ld);
cublasStatus_t cublasLtMatrixLayoutDestroy(cublasLtMatrixLayout_t l);
cublasStatus_t cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t *p);
cublasStatus_t cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t p);
/* MAX_WORKSPACE_BYTES only (uint64_t). */
cublasStatus_t cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t p, cublasLtMatmulPreferenceAttributes_t attr,
                                                    const void *buf, size_t size);
/* One algorithm for any product cublasLtMatmul below takes (needing half
 * the allowed workspace, at most 1 MiB, so that a caller that passes too
 * little is caught); an algorithm carries the shape it was chosen for, and
 * cublasLtMatmul refuses it for another. Counted (ss_emu_lt_heuristics). */
cublasStatus_t cublasLtMatmulAlgoGetHeuristic(cublasLtHandle_t h, cublasLtMatmulDesc_t d, cublasLtMatrixLayout_t ad,
                                              cublasLtMatrixLayout_t bd, cublasLtMatrixLayout_t cd,
                                              cublasLtMatrixLayout_t dd, cublasLtMatmulPreference_t p, int requested,
                                              cublasLtMatmulHeuristicResult_t *results, int *returned);
/* D = alpha op(A) op(B) + beta C, then the epilogue (BIAS: bias[i] added to
 * row i of D; GELU: the tanh approximation, computed as kernels/bias_act.cu
 * does, so that the emulation tells layouts apart, not GELU formulas). Here C and D must be the same matrix, A and B both fp32 or
 * both bf16/fp16, C and D fp32, or bf16/fp16 with beta 0 (the epilogue in
 * fp32, its result rounded to nearest even once; the bias read as D's type
 * unless BIAS_DATA_TYPE says CUDA_R_32F, as cuBLASLt documents), compute 32F (or
 * 32F_FAST_TF32, computed in fp32 as the emulated Sgemm does under TF32 math). */
cublasStatus_t cublasLtMatmul(cublasLtHandle_t h, cublasLtMatmulDesc_t d, const void *alpha, const void *A,
                              cublasLtMatrixLayout_t ad, const void *B, cublasLtMatrixLayout_t bd, const void *beta,
                              const void *C, cublasLtMatrixLayout_t cd, void *D, cublasLtMatrixLayout_t dd,
                              const cublasLtMatmulAlgo_t *algo, void *workspace, size_t workspace_bytes,
                              cudaStream_t stream);

#endif
