/* Host-side CUDA runtime API, emulated: the subset subscope's CUDA backend
 * uses, implemented in kernels/emu/host_runtime.c over ordinary host memory,
 * so the backend's host code runs (against emulated kernels) in `make test`
 * on machines without a GPU. Compiled only into the test binary. */
#ifndef SS_EMU_CUDA_RUNTIME_H
#define SS_EMU_CUDA_RUNTIME_H

#include <stddef.h>

typedef struct CUstream_st *cudaStream_t;
typedef struct CUevent_st *cudaEvent_t;
typedef int cudaError_t;
enum {
    cudaSuccess = 0,
    cudaErrorInvalidValue = 1,
    cudaErrorMemoryAllocation = 2,
    cudaErrorNoDevice = 100,
    cudaErrorInvalidDevice = 101,
    cudaErrorNotReady = 600,
};
typedef enum {
    cudaMemcpyHostToHost = 0,
    cudaMemcpyHostToDevice = 1,
    cudaMemcpyDeviceToHost = 2,
    cudaMemcpyDeviceToDevice = 3,
    cudaMemcpyDefault = 4
} cudaMemcpyKind;

struct cudaDeviceProp {
    char name[256];
    size_t totalGlobalMem;
    int major, minor;
    int multiProcessorCount;
};

cudaError_t cudaGetDeviceCount(int *n);
cudaError_t cudaGetDevice(int *dev);
cudaError_t cudaSetDevice(int dev);
cudaError_t cudaGetDeviceProperties(struct cudaDeviceProp *p, int dev);
cudaError_t cudaMemGetInfo(size_t *free_bytes, size_t *total_bytes);
cudaError_t cudaMalloc(void **p, size_t bytes);
cudaError_t cudaFree(void *p);
cudaError_t cudaMallocHost(void **p, size_t bytes);
cudaError_t cudaFreeHost(void *p);
/* Only type is filled in: cudaMemoryTypeHost inside a cudaMallocHost block, else
 * cudaMemoryTypeUnregistered (device pointers are not told apart: nothing asks about them). */
enum cudaMemoryType { cudaMemoryTypeUnregistered = 0, cudaMemoryTypeHost = 1, cudaMemoryTypeDevice = 2 };
struct cudaPointerAttributes {
    enum cudaMemoryType type;
};
cudaError_t cudaPointerGetAttributes(struct cudaPointerAttributes *a, const void *p);
cudaError_t cudaMemcpy(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind);
cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind, cudaStream_t s);
cudaError_t cudaMemsetAsync(void *p, int value, size_t bytes, cudaStream_t s);
#define cudaStreamNonBlocking 0x01
#define cudaEventDisableTiming 0x02
cudaError_t cudaStreamCreate(cudaStream_t *s);
cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned int flags);
cudaError_t cudaStreamDestroy(cudaStream_t s);
cudaError_t cudaStreamSynchronize(cudaStream_t s);
cudaError_t cudaStreamWaitEvent(cudaStream_t s, cudaEvent_t e, unsigned int flags);
cudaError_t cudaEventCreateWithFlags(cudaEvent_t *e, unsigned int flags);
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s);
cudaError_t cudaEventQuery(cudaEvent_t e);
cudaError_t cudaEventSynchronize(cudaEvent_t e);
cudaError_t cudaEventDestroy(cudaEvent_t e);
cudaError_t cudaDeviceSynchronize(void);
cudaError_t cudaGetLastError(void);
const char *cudaGetErrorString(cudaError_t e);
/* For tools built against the emulation (tests/gpu/kernel_check.c): events
 * made with cudaEventCreate time the host between two records. */
cudaError_t cudaEventCreate(cudaEvent_t *e);
cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t start, cudaEvent_t end);
const char *cudaGetErrorName(cudaError_t e);
cudaError_t cudaDriverGetVersion(int *v);
cudaError_t cudaRuntimeGetVersion(int *v);
cudaError_t cudaDeviceReset(void);

/* Streams (other than the legacy default stream, 0) hold back the host side
 * of a device-to-host cudaMemcpyAsync: the source is read when the copy is
 * issued (kernels run at launch, so that is its place in stream order), but
 * the host buffer is written only when a synchronisation covers the copy
 * (cudaStreamSynchronize, cudaEventSynchronize or a successful
 * cudaEventQuery of a later event, cudaDeviceSynchronize, a synchronous
 * cudaMemcpy). Host code that reads a buffer before waiting for its copy
 * sees stale bytes in tests, as it might on a GPU. */
size_t ss_emu_pending_copies(void);

/* Test hook: the emulated device refuses allocations beyond this many bytes
 * in total (0: no limit), so out-of-memory paths can be tested. */
void ss_emu_set_device_memory_limit(size_t bytes);

#endif
