/* cuSOLVER (dense), emulated: the symmetric eigensolver subscope's CUDA
 * backend calls for PCA (cusolverDnXsyevdx, eigenvalues il..iu with their
 * vectors), implemented in kernels/emu/host_runtime.c on the host with the
 * library's own solver, but with cuSOLVER's conventions: A column-major and
 * only its `uplo` triangle read; W ascending; the vectors in A's first meig
 * columns, with arbitrary signs (every other one is negated, so a caller
 * that forgets its sign convention is caught). Only iu = n is supported
 * (the top of the spectrum, which is what PCA asks for). Compiled only into
 * the test binary. */
#ifndef SS_EMU_CUSOLVERDN_H
#define SS_EMU_CUSOLVERDN_H

#include <stdint.h>
#include "cublas_v2.h"

typedef struct ss_emu_cusolver *cusolverDnHandle_t;
typedef struct ss_emu_cusolver_params *cusolverDnParams_t;
typedef int cusolverStatus_t;
enum {
    CUSOLVER_STATUS_SUCCESS = 0,
    CUSOLVER_STATUS_NOT_INITIALIZED = 1,
    CUSOLVER_STATUS_ALLOC_FAILED = 2,
    CUSOLVER_STATUS_INVALID_VALUE = 3,
    CUSOLVER_STATUS_NOT_SUPPORTED = 15
};
typedef enum { CUSOLVER_EIG_MODE_NOVECTOR = 0, CUSOLVER_EIG_MODE_VECTOR = 1 } cusolverEigMode_t;
typedef enum { CUSOLVER_EIG_RANGE_ALL = 1001, CUSOLVER_EIG_RANGE_I = 1002, CUSOLVER_EIG_RANGE_V = 1003 } cusolverEigRange_t;

cusolverStatus_t cusolverDnCreate(cusolverDnHandle_t *h);
cusolverStatus_t cusolverDnDestroy(cusolverDnHandle_t h);
cusolverStatus_t cusolverDnSetStream(cusolverDnHandle_t h, cudaStream_t s);
cusolverStatus_t cusolverDnCreateParams(cusolverDnParams_t *p);
cusolverStatus_t cusolverDnDestroyParams(cusolverDnParams_t p);
cusolverStatus_t cusolverDnXsyevdx_bufferSize(cusolverDnHandle_t h, cusolverDnParams_t params, cusolverEigMode_t jobz,
                                              cusolverEigRange_t range, cublasFillMode_t uplo, int64_t n,
                                              cudaDataType dataTypeA, const void *A, int64_t lda, void *vl, void *vu,
                                              int64_t il, int64_t iu, int64_t *h_meig, cudaDataType dataTypeW,
                                              const void *W, cudaDataType computeType, size_t *device_bytes,
                                              size_t *host_bytes);
cusolverStatus_t cusolverDnXsyevdx(cusolverDnHandle_t h, cusolverDnParams_t params, cusolverEigMode_t jobz,
                                   cusolverEigRange_t range, cublasFillMode_t uplo, int64_t n, cudaDataType dataTypeA,
                                   void *A, int64_t lda, void *vl, void *vu, int64_t il, int64_t iu, int64_t *meig,
                                   cudaDataType dataTypeW, void *W, cudaDataType computeType, void *device_buf,
                                   size_t device_bytes, void *host_buf, size_t host_bytes, int *info);

#endif
