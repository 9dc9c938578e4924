/* The emulated CUDA runtime and cuBLAS subset declared in kernels/emu/host/.
 * "Device" memory is host memory with a small header so that frees of
 * foreign pointers and a memory limit can be checked. Kernels and most
 * calls complete before they return; only the host side of device-to-host
 * copies on a stream is held back until a synchronisation (cuda_runtime.h),
 * and, where a test asks, host-to-device copies from pinned memory
 * (ss_emu_hold_pinned_uploads). */
#define _DEFAULT_SOURCE /* MAP_ANONYMOUS, MAP_NORESERVE */
#include <malloc.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "host/cublasLt.h"
#include "host/cublas_v2.h"
#include "host/cuda_runtime.h"
#include "host/cusolverDn.h"
#include "subscope/stats.h"
#include "subscope/util.h"

#define DEV_MAGIC 0x5ce0de70c0ffee51ULL

typedef struct {
    uint64_t magic;
    size_t bytes;
    uint64_t pad; /* keeps the payload 16-byte aligned, as cudaMalloc's is (more) */
    uint64_t pad2;
} dev_hdr;

static size_t dev_limit, dev_used;
static cudaError_t last_error;

static cudaError_t fail(cudaError_t e) {
    last_error = e;
    return e;
}

void ss_emu_set_device_memory_limit(size_t bytes) { dev_limit = bytes; }

/* Calls of the runtime and cuBLASLt that make the host wait for the device or
 * cost it time each, counted for the tests (a forward pass that repeats
 * the last one's shapes should allocate nothing, test_cuda_backend.c). */
enum { API_MALLOC, API_FREE, API_MEMCPY, API_H2D_ASYNC, API_D2H_ASYNC, API_STREAM_SYNC, API_DEVICE_SYNC,
       API_EVENT_SYNC, API_LT_HEURISTIC, API_LT_DESC, API_LT_LAYOUT, API_SGEMM, API_GEMMEX, API_N };
static const char *const api_names[API_N] = {"cudaMalloc", "cudaFree", "cudaMemcpy", "cudaMemcpyAsync H2D",
                                             "cudaMemcpyAsync D2H", "cudaStreamSynchronize", "cudaDeviceSynchronize",
                                             "cudaEventSynchronize", "cublasLtMatmulAlgoGetHeuristic",
                                             "cublasLtMatmulDescCreate", "cublasLtMatrixLayoutCreate", "cublasSgemm",
                                             "cublasGemmEx"};
static long api_calls[API_N];
/* SS_EMU_CENSUS (cuda_emu.c): the products by shape, the copies by direction. */
int ss_emu_census_enabled(void);
int ss_emu_host_only(void); /* cuda_emu.c: SS_EMU_HOST_ONLY */
int ss_emu_census_trace(void);
const char *ss_emu_census_launches(long *n);
void ss_emu_census_api(FILE *f);
typedef struct { const char *api; long long m, n, k, batch; int types; long calls; } census_product;
static census_product products[256];
static int n_products;
static long long copy_bytes[4], copy_calls[4]; /* H2D, D2H, D2D, memset */
static pthread_mutex_t census_mu = PTHREAD_MUTEX_INITIALIZER;
static long long dev_allocs, dev_alloc_bytes, dev_peak, pinned_allocs, pinned_bytes;

/* SS_EMU_CENSUS=trace: also each allocation, release and cuBLASLt heuristic as it happens,
 * after how many launches (and which was the last), to place them in a job's passes. */
static void census_event(const char *what, size_t bytes) {
    if (!ss_emu_census_enabled()) return;
    pthread_mutex_lock(&census_mu);
    if (!strcmp(what, "cudaMalloc")) dev_allocs++, dev_alloc_bytes += (long long)bytes;
    if (!strcmp(what, "cudaMallocHost")) pinned_allocs++, pinned_bytes += (long long)bytes;
    pthread_mutex_unlock(&census_mu);
    if (ss_emu_census_trace()) {
        long n = 0;
        const char *last = ss_emu_census_launches(&n);
        fprintf(stderr, "cuda_emu trace: after %ld launches (the last %s): %s %zu bytes\n", n, last ? last : "none",
                what, bytes);
    }
}

static void census_gemm(const char *api, long long m, long long n, long long k, long long batch, int types) {
    if (!ss_emu_census_enabled()) return;
    pthread_mutex_lock(&census_mu);
    int i = 0;
    while (i < n_products && (strcmp(products[i].api, api) || products[i].m != m || products[i].n != n ||
                              products[i].k != k || products[i].batch != batch || products[i].types != types))
        i++;
    if (i == n_products && n_products < (int)(sizeof products / sizeof products[0]))
        products[n_products++] = (census_product){api, m, n, k, batch, types, 0};
    if (i < n_products) products[i].calls++;
    pthread_mutex_unlock(&census_mu);
}

static void census_copy(int dir, size_t bytes) {
    if (!ss_emu_census_enabled()) return;
    pthread_mutex_lock(&census_mu);
    copy_bytes[dir] += (long long)bytes, copy_calls[dir]++;
    pthread_mutex_unlock(&census_mu);
}

static const char *type_name(int t) {
    return t == CUDA_R_32F ? "f32" : t == CUDA_R_16BF ? "bf16" : t == CUDA_R_16F ? "f16" : t == CUDA_R_64F ? "f64" : "?";
}

void ss_emu_census_api(FILE *f) {
    static const char *dir[4] = {"host to device", "device to host", "device to device", "memset"};
    for (int i = 0; i < 4; i++)
        if (copy_calls[i])
            fprintf(f, "cuda_emu census: copies %-16s %10lld calls %14lld bytes\n", dir[i], copy_calls[i],
                    copy_bytes[i]);
    fprintf(f, "cuda_emu census: device allocations %lld (%lld bytes, %lld at most in use), pinned %lld (%lld bytes)\n",
            dev_allocs, dev_alloc_bytes, dev_peak, pinned_allocs, pinned_bytes);
    for (int i = 0; i < API_N; i++)
        if (api_calls[i]) fprintf(f, "cuda_emu census: calls of %-32s %10ld\n", api_names[i], api_calls[i]);
    for (int i = 0; i < n_products; i++) {
        const census_product *p = &products[i];
        fprintf(f, "cuda_emu census: product %-28s m %6lld n %6lld k %6lld batch %5lld %4s x %4s -> %4s %8ld calls\n",
                p->api, p->m, p->n, p->k, p->batch, type_name(p->types & 0xff), type_name((p->types >> 8) & 0xff),
                type_name((p->types >> 16) & 0xff), p->calls);
    }
}

#define CENSUS_TYPES(a, b, c) ((int)(a) | (int)(b) << 8 | (int)(c) << 16)

long ss_emu_api_calls(const char *name) {
    for (int i = 0; i < API_N; i++)
        if (!strcmp(api_names[i], name)) return api_calls[i];
    return -1;
}

/* The real driver reserves address space for unified addressing as it
 * starts, more than the host's and the GPUs' memory together, and under a
 * tight address-space limit (ulimit -v) its start fails with "out of
 * memory" whatever the GPU holds. The emulation does the same with 8 GiB of
 * inaccessible address space, kept for the process, so that the backend's
 * error under such a limit can be tested (tests/cli/test_oom.sh). */
static int driver_started;
static void driver_start(void) {
    void *p = mmap(NULL, (size_t)8 << 30, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    driver_started = p != MAP_FAILED;
}

cudaError_t cudaGetDeviceCount(int *n) {
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, driver_start);
    *n = 0;
    if (!driver_started) return fail(cudaErrorMemoryAllocation);
    *n = 1;
    return cudaSuccess;
}

cudaError_t cudaGetDevice(int *dev) {
    *dev = 0;
    return cudaSuccess;
}

cudaError_t cudaSetDevice(int dev) { return dev == 0 ? cudaSuccess : fail(cudaErrorInvalidDevice); }

cudaError_t cudaGetDeviceProperties(struct cudaDeviceProp *p, int dev) {
    if (dev != 0) return fail(cudaErrorInvalidDevice);
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "emulated device");
    p->totalGlobalMem = dev_limit ? dev_limit : (size_t)1 << 34;
    p->major = 9;
    p->multiProcessorCount = 1;
    return cudaSuccess;
}

cudaError_t cudaMemGetInfo(size_t *free_bytes, size_t *total_bytes) {
    size_t total = dev_limit ? dev_limit : (size_t)1 << 34;
    *total_bytes = total;
    *free_bytes = total > dev_used ? total - dev_used : 0;
    return cudaSuccess;
}

cudaError_t cudaMalloc(void **p, size_t bytes) {
    api_calls[API_MALLOC]++;
    *p = NULL;
    /* SS_EMU_DEVICE_MB: the emulated device's memory in MiB (default 16 GiB), for the CLI tests
     * of what a command does when the device is full; ss_emu_set_device_memory_limit overrides. */
    static int env_read;
    if (!env_read) {
        env_read = 1;
        const char *e = getenv("SS_EMU_DEVICE_MB");
        char *end;
        unsigned long long mb = e ? strtoull(e, &end, 10) : 0;
        if (e && *e && !*end && mb > 0 && !dev_limit) dev_limit = (size_t)mb << 20;
    }
    if (dev_limit && dev_used + bytes > dev_limit) return fail(cudaErrorMemoryAllocation);
    /* zeros where no kernel will write (SS_EMU_HOST_ONLY): the values read back stay finite. A
     * fixed mmap threshold keeps large blocks fresh pages, which calloc need not clear: a GPU's
     * cudaMalloc touches no host memory, and clearing here would be host time it does not spend. */
    static int fixed_threshold;
    if (ss_emu_host_only() && !fixed_threshold) fixed_threshold = mallopt(M_MMAP_THRESHOLD, 128 * 1024);
    dev_hdr *h = ss_emu_host_only() ? calloc(1, sizeof *h + (bytes ? bytes : 1)) : malloc(sizeof *h + (bytes ? bytes : 1));
    if (!h) return fail(cudaErrorMemoryAllocation);
    h->magic = DEV_MAGIC;
    h->bytes = bytes;
    dev_used += bytes;
    if ((long long)dev_used > dev_peak) dev_peak = (long long)dev_used;
    census_event("cudaMalloc", bytes);
    *p = h + 1;
    return cudaSuccess;
}

cudaError_t cudaFree(void *p) {
    api_calls[API_FREE]++;
    if (!p) return cudaSuccess;
    dev_hdr *h = (dev_hdr *)p - 1;
    if (h->magic != DEV_MAGIC) return fail(cudaErrorInvalidValue);
    h->magic = 0;
    dev_used -= h->bytes;
    census_event("cudaFree", h->bytes);
    free(h);
    return cudaSuccess;
}

/* Pinned allocations, so that a copy can tell whether its source is one. */
static struct { const char *p; size_t bytes; } *pinned;
static size_t n_pinned;

static int is_pinned(const void *p, size_t bytes) {
    for (size_t i = 0; i < n_pinned; i++)
        if ((const char *)p >= pinned[i].p && (const char *)p + bytes <= pinned[i].p + pinned[i].bytes) return 1;
    return 0;
}

cudaError_t cudaMallocHost(void **p, size_t bytes) {
    void *grown = realloc(pinned, (n_pinned + 1) * sizeof *pinned);
    if (!grown) return fail(cudaErrorMemoryAllocation);
    pinned = grown;
    *p = malloc(bytes ? bytes : 1);
    if (!*p) return fail(cudaErrorMemoryAllocation);
    pinned[n_pinned].p = *p, pinned[n_pinned].bytes = bytes;
    n_pinned++;
    census_event("cudaMallocHost", bytes);
    return cudaSuccess;
}

cudaError_t cudaFreeHost(void *p) {
    for (size_t i = 0; i < n_pinned; i++)
        if (pinned[i].p == p) pinned[i] = pinned[--n_pinned];
    free(p);
    return cudaSuccess;
}

cudaError_t cudaPointerGetAttributes(struct cudaPointerAttributes *a, const void *p) {
    if (!a) return fail(cudaErrorInvalidValue);
    a->type = is_pinned(p, 1) ? cudaMemoryTypeHost : cudaMemoryTypeUnregistered;
    return cudaSuccess;
}

/* ---- streams and events (see cuda_runtime.h) ---- */

typedef struct pending_copy {
    void *dst, *snap;       /* snap: a device-to-host copy's source as it was at issue */
    const void *src;        /* a held upload's pinned source, read when it completes */
    size_t bytes;
    uint64_t seq;
    struct pending_copy *next;
} pending_copy;

struct CUstream_st {
    uint64_t issued;            /* copies held back so far */
    pending_copy *head, *tail;  /* in issue order */
    struct CUstream_st *next_stream;
};

struct CUevent_st {
    cudaStream_t s; /* NULL: not recorded, or recorded on the default stream */
    uint64_t seq;   /* the stream's copies issued before the record */
    int asked;      /* cudaEventQuery has said "not ready" once */
    double t;       /* the host's clock at the record (ss_now), for cudaEventElapsedTime */
};

static struct CUstream_st *streams;
static size_t n_pending;
static int hold_pinned;

size_t ss_emu_pending_copies(void) { return n_pending; }

/* A test's switch: host-to-device copies on a stream from pinned memory are
 * held back as well, and read their source only when they complete (at a
 * synchronisation that covers them, or before the stream's next copy that
 * is not held), as a copy engine reads it some time after the call. Code
 * that refills such a buffer before waiting for its copy then uploads the
 * wrong bytes. Kernels and library calls do not complete held uploads, so a
 * test that turns this on must synchronise before it launches any. */
void ss_emu_hold_pinned_uploads(int on) { hold_pinned = on; }

/* Completes s's held-back copies up to and including number upto. */
static void complete(cudaStream_t s, uint64_t upto) {
    while (s && s->head && s->head->seq <= upto) {
        pending_copy *p = s->head;
        memcpy(p->dst, p->snap ? p->snap : p->src, p->bytes);
        s->head = p->next;
        if (!s->head) s->tail = NULL;
        free(p->snap);
        free(p);
        n_pending--;
    }
}

static void complete_all(void) {
    for (struct CUstream_st *s = streams; s; s = s->next_stream) complete(s, UINT64_MAX);
}

cudaError_t cudaMemcpy(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind) {
    api_calls[API_MEMCPY]++;
    census_copy(kind == cudaMemcpyHostToDevice ? 0 : kind == cudaMemcpyDeviceToHost ? 1 : 2, bytes);
    if (bytes && (!dst || !src)) return fail(cudaErrorInvalidValue);
    complete_all(); /* the legacy default stream waits for the others */
    if (bytes) memmove(dst, src, bytes);
    return cudaSuccess;
}

cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind, cudaStream_t s) {
    if (s && kind == cudaMemcpyHostToDevice) api_calls[API_H2D_ASYNC]++;
    if (s && kind == cudaMemcpyDeviceToHost) api_calls[API_D2H_ASYNC]++;
    if (bytes && (!dst || !src)) return fail(cudaErrorInvalidValue);
    if (!s) return cudaMemcpy(dst, src, bytes, kind);
    census_copy(kind == cudaMemcpyHostToDevice ? 0 : kind == cudaMemcpyDeviceToHost ? 1 : 2, bytes);
    const int held_upload = hold_pinned && kind == cudaMemcpyHostToDevice && bytes && is_pinned(src, bytes);
    if (!held_upload && (kind != cudaMemcpyDeviceToHost || !bytes)) {
        complete(s, UINT64_MAX); /* keeps stream order for what runs at once */
        if (bytes) memmove(dst, src, bytes);
        return cudaSuccess;
    }
    if (hold_pinned && !held_upload) complete(s, UINT64_MAX); /* the device's bytes after the held uploads */
    pending_copy *p = malloc(sizeof *p);
    void *snap = held_upload ? NULL : malloc(bytes);
    if (!p || (!held_upload && !snap)) {
        free(p);
        free(snap);
        return fail(cudaErrorMemoryAllocation);
    }
    if (snap) memcpy(snap, src, bytes);
    *p = (pending_copy){.dst = dst, .snap = snap, .src = src, .bytes = bytes, .seq = ++s->issued};
    if (s->tail) s->tail->next = p;
    else s->head = p;
    s->tail = p;
    n_pending++;
    return cudaSuccess;
}

cudaError_t cudaMemsetAsync(void *p, int value, size_t bytes, cudaStream_t s) {
    if (bytes && !p) return fail(cudaErrorInvalidValue);
    census_copy(3, bytes);
    complete(s, UINT64_MAX);
    if (bytes) memset(p, value, bytes);
    return cudaSuccess;
}

cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned int flags) {
    *s = calloc(1, sizeof **s);
    if (!*s) return fail(cudaErrorMemoryAllocation);
    (*s)->next_stream = streams;
    streams = *s;
    return cudaSuccess;
}

cudaError_t cudaStreamCreate(cudaStream_t *s) { return cudaStreamCreateWithFlags(s, 0); }

cudaError_t cudaStreamDestroy(cudaStream_t s) {
    if (!s) return fail(cudaErrorInvalidValue);
    complete(s, UINT64_MAX); /* destroying a stream lets its work finish */
    for (struct CUstream_st **pp = &streams; *pp; pp = &(*pp)->next_stream)
        if (*pp == s) {
            *pp = s->next_stream;
            free(s);
            return cudaSuccess;
        }
    return fail(cudaErrorInvalidValue);
}

cudaError_t cudaStreamSynchronize(cudaStream_t s) {
    api_calls[API_STREAM_SYNC]++;
    if (s) complete(s, UINT64_MAX);
    else complete_all();
    return cudaSuccess;
}

cudaError_t cudaDeviceSynchronize(void) {
    api_calls[API_DEVICE_SYNC]++;
    complete_all();
    return cudaSuccess;
}

cudaError_t cudaEventCreateWithFlags(cudaEvent_t *e, unsigned int flags) {
    *e = calloc(1, sizeof **e);
    return *e ? cudaSuccess : fail(cudaErrorMemoryAllocation);
}

cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s) {
    if (!e) return fail(cudaErrorInvalidValue);
    e->s = s;
    e->seq = s ? s->issued : 0;
    e->t = ss_now();
    return cudaSuccess;
}

cudaError_t cudaEventCreate(cudaEvent_t *e) { return cudaEventCreateWithFlags(e, 0); }

cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t start, cudaEvent_t end) {
    if (!ms || !start || !end) return fail(cudaErrorInvalidValue);
    *ms = (float)((end->t - start->t) * 1e3);
    return cudaSuccess;
}

/* Later work on s may use what came before e on e's stream. */
cudaError_t cudaStreamWaitEvent(cudaStream_t s, cudaEvent_t e, unsigned int flags) {
    if (!e) return fail(cudaErrorInvalidValue);
    complete(e->s, e->seq);
    return cudaSuccess;
}

/* An event is "not ready" once, the first time it is asked while copies
 * before it are still held back, so that polling code is exercised. */
cudaError_t cudaEventQuery(cudaEvent_t e) {
    if (!e) return fail(cudaErrorInvalidValue);
    if (e->s && e->s->head && e->s->head->seq <= e->seq && !e->asked) {
        e->asked = 1;
        return cudaErrorNotReady;
    }
    complete(e->s, e->seq);
    return cudaSuccess;
}

cudaError_t cudaEventSynchronize(cudaEvent_t e) {
    api_calls[API_EVENT_SYNC]++;
    if (!e) return fail(cudaErrorInvalidValue);
    complete(e->s, e->seq);
    return cudaSuccess;
}

cudaError_t cudaEventDestroy(cudaEvent_t e) {
    free(e);
    return cudaSuccess;
}

cudaError_t cudaGetLastError(void) {
    cudaError_t e = last_error;
    last_error = cudaSuccess;
    return e;
}

const char *cudaGetErrorString(cudaError_t e) {
    switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorNoDevice: return "no CUDA-capable device is detected";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    case cudaErrorNotReady: return "device not ready";
    }
    return "unknown error";
}

const char *cudaGetErrorName(cudaError_t e) { return e == cudaSuccess ? "cudaSuccess" : "cudaErrorEmulated"; }

cudaError_t cudaDriverGetVersion(int *v) {
    *v = 0; /* no driver: the emulation */
    return cudaSuccess;
}

cudaError_t cudaRuntimeGetVersion(int *v) {
    *v = 0;
    return cudaSuccess;
}

cudaError_t cudaDeviceReset(void) {
    cudaDeviceSynchronize();
    return cudaSuccess;
}

struct ss_emu_cublas {
    int math;
};

cublasStatus_t cublasCreate(cublasHandle_t *h) {
    *h = calloc(1, sizeof **h);
    return *h ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_NOT_INITIALIZED;
}

cublasStatus_t cublasDestroy(cublasHandle_t h) {
    free(h);
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetStream(cublasHandle_t h, cudaStream_t s) { return CUBLAS_STATUS_SUCCESS; }

cublasStatus_t cublasSetMathMode(cublasHandle_t h, cublasMath_t m) {
    h->math = (int)m;
    return CUBLAS_STATUS_SUCCESS;
}

/* Element (i, j) of op(A) op(B) for column-major A and B: sum over p < k of
 * op(A)[i][p] op(B)[p][j], in order, in fp32. */
static float emu_dot(const float *A, int lda, cublasOperation_t ta, int i, const float *B, int ldb, cublasOperation_t tb,
                     int j, int k) {
    float acc = 0.f;
    for (int p = 0; p < k; p++) {
        float a = ta == CUBLAS_OP_N ? A[i + (size_t)p * lda] : A[p + (size_t)i * lda];
        float b = tb == CUBLAS_OP_N ? B[p + (size_t)j * ldb] : B[j + (size_t)p * ldb];
        acc += a * b;
    }
    return acc;
}

/* Column-major C = alpha op(A) op(B) + beta C, op(A) m x k, op(B) k x n. */
static cublasStatus_t emu_gemm_run(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, float al,
                                   const void *A, cudaDataType at, int lda, const void *B, cudaDataType bt, int ldb,
                                   float be, float *C, int ldc);

static cublasStatus_t emu_sgemm(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, const float *alpha,
                                const float *A, int lda, const float *B, int ldb, const float *beta, float *C,
                                int ldc) {
    if (m < 0 || n < 0 || k < 0 || ldc < (m > 1 ? m : 1)) return CUBLAS_STATUS_INVALID_VALUE;
    if (lda < ((ta == CUBLAS_OP_N ? m : k) > 1 ? (ta == CUBLAS_OP_N ? m : k) : 1)) return CUBLAS_STATUS_INVALID_VALUE;
    if (ldb < ((tb == CUBLAS_OP_N ? k : n) > 1 ? (tb == CUBLAS_OP_N ? k : n) : 1)) return CUBLAS_STATUS_INVALID_VALUE;
    return emu_gemm_run(ta, tb, m, n, k, *alpha, A, CUDA_R_32F, lda, B, CUDA_R_32F, ldb, *beta, C, ldc);
}

/* Calls counted (ss_emu_api_calls), the products that others build on not. */
cublasStatus_t cublasSgemm(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                           const float *alpha, const float *A, int lda, const float *B, int ldb, const float *beta,
                           float *C, int ldc) {
    api_calls[API_SGEMM]++;
    census_gemm("cublasSgemm", m, n, k, 1, CENSUS_TYPES(CUDA_R_32F, CUDA_R_32F, CUDA_R_32F));
    return emu_sgemm(ta, tb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
}

/* batch independent Sgemms, operand i at base + i * stride. */
cublasStatus_t cublasSgemmStridedBatched(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n,
                                         int k, const float *alpha, const float *A, int lda, long long strideA,
                                         const float *B, int ldb, long long strideB, const float *beta, float *C,
                                         int ldc, long long strideC, int batch) {
    if (batch < 0) return CUBLAS_STATUS_INVALID_VALUE;
    census_gemm("cublasSgemmStridedBatched", m, n, k, batch, CENSUS_TYPES(CUDA_R_32F, CUDA_R_32F, CUDA_R_32F));
    for (int i = 0; i < batch; i++) {
        cublasStatus_t st = emu_sgemm(ta, tb, m, n, k, alpha, A + i * strideA, lda, B + i * strideB, ldb, beta,
                                      C + i * strideC, ldc);
        if (st != CUBLAS_STATUS_SUCCESS) return st;
    }
    return CUBLAS_STATUS_SUCCESS;
}

static float bf16_at(const void *p, size_t i) {
    uint32_t bits = (uint32_t)((const uint16_t *)p)[i] << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

/* IEEE half precision, decoded by hand (the emulation has no __half). */
static float f16_at(const void *p, size_t i) {
    const uint16_t h = ((const uint16_t *)p)[i];
    const int e = (h >> 10) & 31, mant = h & 1023;
    float v = e == 0 ? ldexpf((float)mant, -24) : e == 31 ? (mant ? NAN : INFINITY) : ldexpf((float)(mant | 1024), e - 25);
    return (h & 0x8000) ? -v : v;
}

/* Every product of the emulation: C = al op(A) op(B) + be C, column-major, each element
 * the sum over p in increasing order of the fp32 products of its operands (fp32, or
 * bf16/fp16 decoded exactly), then al * sum + be * c (be 0: c is not read). op(A)'s rows
 * and op(B)'s columns are first copied out contiguous in fp32 and the columns of C shared
 * among threads: the same operations in the same order as a loop element by element, so
 * the same bits, several times faster (the emulated products dominate an emulated model
 * run). */
static float emu_at(const void *X, cudaDataType t, size_t i) {
    return t == CUDA_R_32F ? ((const float *)X)[i] : t == CUDA_R_16F ? f16_at(X, i) : bf16_at(X, i);
}

typedef struct {
    const float *a, *b; /* op(A) rows, op(B) columns, k floats each */
    float *C;
    int m, k, ldc, j0, j1;
    float al, be;
} emu_gemm_part;

static void *emu_gemm_cols(void *arg) {
    const emu_gemm_part *g = arg;
    for (int j = g->j0; j < g->j1; j++) {
        const float *b = g->b + (size_t)j * g->k;
        for (int i = 0; i < g->m; i++) {
            const float *a = g->a + (size_t)i * g->k;
            float acc = 0.f;
            for (int p = 0; p < g->k; p++) acc += a[p] * b[p];
            float *dst = &g->C[i + (size_t)j * g->ldc];
            *dst = g->al * acc + (g->be == 0.f ? 0.f : g->be * *dst);
        }
    }
    return NULL;
}

static cublasStatus_t emu_gemm_run(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, float al,
                                   const void *A, cudaDataType at, int lda, const void *B, cudaDataType bt, int ldb,
                                   float be, float *C, int ldc) {
    if (m <= 0 || n <= 0 || ss_emu_host_only()) return CUBLAS_STATUS_SUCCESS;
    float *a = malloc(sizeof(float) * ((size_t)m * k + (size_t)n * k) + 1);
    if (!a) return CUBLAS_STATUS_ALLOC_FAILED;
    float *b = a + (size_t)m * k;
    for (int i = 0; i < m; i++)
        for (int p = 0; p < k; p++) a[(size_t)i * k + p] = emu_at(A, at, ta == CUBLAS_OP_N ? i + (size_t)p * lda : p + (size_t)i * lda);
    for (int j = 0; j < n; j++)
        for (int p = 0; p < k; p++) b[(size_t)j * k + p] = emu_at(B, bt, tb == CUBLAS_OP_N ? p + (size_t)j * ldb : j + (size_t)p * ldb);
    enum { MAX_PARTS = 8 };
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    int parts = (double)m * n * k < 4e6 || cores < 2 ? 1 : cores < MAX_PARTS ? (int)cores : MAX_PARTS;
    if (parts > n) parts = n;
    emu_gemm_part g[MAX_PARTS];
    pthread_t th[MAX_PARTS];
    int started[MAX_PARTS] = {0};
    for (int t = 0; t < parts; t++) {
        g[t] = (emu_gemm_part){a, b, C, m, k, ldc, (int)((long long)n * t / parts), (int)((long long)n * (t + 1) / parts), al, be};
        if (t > 0) started[t] = !pthread_create(&th[t], NULL, emu_gemm_cols, &g[t]);
    }
    emu_gemm_cols(&g[0]);
    for (int t = 1; t < parts; t++) {
        if (started[t]) pthread_join(th[t], NULL);
        else emu_gemm_cols(&g[t]); /* no thread: this one does it */
    }
    free(a);
    return CUBLAS_STATUS_SUCCESS;
}

static cublasStatus_t emu_gemm_ex(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, const void *alpha,
                                  const void *A, cudaDataType at, int lda, const void *B, cudaDataType bt, int ldb,
                                  const void *beta, void *C, cudaDataType ct, int ldc, cublasComputeType_t compute) {
    if (ct != CUDA_R_32F || compute != CUBLAS_COMPUTE_32F || at != bt) return CUBLAS_STATUS_INVALID_VALUE;
    if (at == CUDA_R_32F) return emu_sgemm(ta, tb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
    if (at != CUDA_R_16BF && at != CUDA_R_16F) return CUBLAS_STATUS_INVALID_VALUE;
    if (m < 0 || n < 0 || k < 0 || ldc < (m > 1 ? m : 1)) return CUBLAS_STATUS_INVALID_VALUE;
    return emu_gemm_run(ta, tb, m, n, k, *(const float *)alpha, A, at, lda, B, bt, ldb, *(const float *)beta, C, ldc);
}

cublasStatus_t cublasGemmEx(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                            const void *alpha, const void *A, cudaDataType at, int lda, const void *B, cudaDataType bt,
                            int ldb, const void *beta, void *C, cudaDataType ct, int ldc, cublasComputeType_t compute,
                            cublasGemmAlgo_t algo) {
    (void)h, (void)algo;
    api_calls[API_GEMMEX]++;
    census_gemm("cublasGemmEx", m, n, k, 1, CENSUS_TYPES(at, bt, ct));
    return emu_gemm_ex(ta, tb, m, n, k, alpha, A, at, lda, B, bt, ldb, beta, C, ct, ldc, compute);
}

cublasStatus_t cublasGemmBatchedEx(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                                   const void *alpha, const void *const A[], cudaDataType at, int lda,
                                   const void *const B[], cudaDataType bt, int ldb, const void *beta, void *const C[],
                                   cudaDataType ct, int ldc, int batch, cublasComputeType_t compute,
                                   cublasGemmAlgo_t algo) {
    if (batch < 0) return CUBLAS_STATUS_INVALID_VALUE;
    census_gemm("cublasGemmBatchedEx", m, n, k, batch, CENSUS_TYPES(at, bt, ct));
    for (int i = 0; i < batch; i++) {
        cublasStatus_t st = emu_gemm_ex(ta, tb, m, n, k, alpha, A[i], at, lda, B[i], bt, ldb, beta, C[i], ct, ldc,
                                        compute);
        if (st != CUBLAS_STATUS_SUCCESS) return st;
    }
    return CUBLAS_STATUS_SUCCESS;
}

static size_t dt_bytes(cudaDataType t) { return t == CUDA_R_64F ? 8 : t == CUDA_R_32F ? 4 : 2; }

cublasStatus_t cublasGemmStridedBatchedEx(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n,
                                          int k, const void *alpha, const void *A, cudaDataType at, int lda,
                                          long long strideA, const void *B, cudaDataType bt, int ldb,
                                          long long strideB, const void *beta, void *C, cudaDataType ct, int ldc,
                                          long long strideC, int batch, cublasComputeType_t compute,
                                          cublasGemmAlgo_t algo) {
    (void)h, (void)algo;
    if (batch < 0) return CUBLAS_STATUS_INVALID_VALUE;
    census_gemm("cublasGemmStridedBatchedEx", m, n, k, batch, CENSUS_TYPES(at, bt, ct));
    for (int i = 0; i < batch; i++) {
        cublasStatus_t st = emu_gemm_ex(ta, tb, m, n, k, alpha, (const char *)A + i * strideA * (long long)dt_bytes(at),
                                        at, lda, (const char *)B + i * strideB * (long long)dt_bytes(bt), bt, ldb, beta,
                                        (char *)C + i * strideC * (long long)dt_bytes(ct), ct, ldc, compute);
        if (st != CUBLAS_STATUS_SUCCESS) return st;
    }
    return CUBLAS_STATUS_SUCCESS;
}

/* ---- cuBLASLt: descriptors hold what was set; the product is GemmEx's ---- */

struct ss_emu_lt {
    int unused;
};
/* cublasLtMatmul calls that succeeded: all, with GELU, with a 16-bit D (for the tests) */
static long emu_lt_products, emu_lt_gelu, emu_lt_d16;
long ss_emu_lt_products(int gelu_only) { return gelu_only ? emu_lt_gelu : emu_lt_products; }
long ss_emu_lt_products_d16(void) { return emu_lt_d16; }
struct ss_emu_lt_desc {
    cublasComputeType_t compute;
    cublasOperation_t ta, tb;
    cublasLtEpilogue_t epilogue;
    const void *bias;
    int32_t bias_type; /* -1: D's type */
};
struct ss_emu_lt_layout {
    cudaDataType type;
    uint64_t rows, cols;
    int64_t ld;
};

cublasStatus_t cublasLtCreate(cublasLtHandle_t *h) {
    *h = calloc(1, sizeof **h);
    return *h ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_NOT_INITIALIZED;
}
cublasStatus_t cublasLtDestroy(cublasLtHandle_t h) {
    free(h);
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulDescCreate(cublasLtMatmulDesc_t *d, cublasComputeType_t compute, cudaDataType scale) {
    api_calls[API_LT_DESC]++;
    if (scale != CUDA_R_32F || (compute != CUBLAS_COMPUTE_32F && compute != CUBLAS_COMPUTE_32F_FAST_TF32))
        return CUBLAS_STATUS_NOT_SUPPORTED;
    *d = calloc(1, sizeof **d);
    if (!*d) return CUBLAS_STATUS_NOT_INITIALIZED;
    (*d)->compute = compute, (*d)->ta = (*d)->tb = CUBLAS_OP_N, (*d)->epilogue = CUBLASLT_EPILOGUE_DEFAULT;
    (*d)->bias_type = -1;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t d) {
    free(d);
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t d, cublasLtMatmulDescAttributes_t attr,
                                              const void *buf, size_t size) {
    switch (attr) {
    case CUBLASLT_MATMUL_DESC_TRANSA:
    case CUBLASLT_MATMUL_DESC_TRANSB: {
        int32_t v;
        if (size != sizeof v) return CUBLAS_STATUS_INVALID_VALUE;
        memcpy(&v, buf, sizeof v);
        if (v != CUBLAS_OP_N && v != CUBLAS_OP_T) return CUBLAS_STATUS_INVALID_VALUE;
        *(attr == CUBLASLT_MATMUL_DESC_TRANSA ? &d->ta : &d->tb) = (cublasOperation_t)v;
        return CUBLAS_STATUS_SUCCESS;
    }
    case CUBLASLT_MATMUL_DESC_EPILOGUE: {
        uint32_t v;
        if (size != sizeof v) return CUBLAS_STATUS_INVALID_VALUE;
        memcpy(&v, buf, sizeof v);
        if (v != CUBLASLT_EPILOGUE_DEFAULT && v != CUBLASLT_EPILOGUE_BIAS && v != CUBLASLT_EPILOGUE_GELU &&
            v != CUBLASLT_EPILOGUE_GELU_BIAS)
            return CUBLAS_STATUS_NOT_SUPPORTED;
        d->epilogue = (cublasLtEpilogue_t)v;
        return CUBLAS_STATUS_SUCCESS;
    }
    case CUBLASLT_MATMUL_DESC_BIAS_POINTER:
        if (size != sizeof(void *)) return CUBLAS_STATUS_INVALID_VALUE;
        memcpy(&d->bias, buf, sizeof(void *));
        return CUBLAS_STATUS_SUCCESS;
    case CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE:
        if (size != sizeof d->bias_type) return CUBLAS_STATUS_INVALID_VALUE;
        memcpy(&d->bias_type, buf, sizeof d->bias_type);
        return CUBLAS_STATUS_SUCCESS;
    }
    return CUBLAS_STATUS_NOT_SUPPORTED;
}
cublasStatus_t cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t *l, cudaDataType type, uint64_t rows, uint64_t cols,
                                          int64_t ld) {
    api_calls[API_LT_LAYOUT]++;
    if (ld < (int64_t)(rows > 1 ? rows : 1)) return CUBLAS_STATUS_INVALID_VALUE;
    *l = calloc(1, sizeof **l);
    if (!*l) return CUBLAS_STATUS_NOT_INITIALIZED;
    (*l)->type = type, (*l)->rows = rows, (*l)->cols = cols, (*l)->ld = ld;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatrixLayoutDestroy(cublasLtMatrixLayout_t l) {
    free(l);
    return CUBLAS_STATUS_SUCCESS;
}

struct ss_emu_lt_pref {
    uint64_t max_ws;
};
static long emu_lt_heuristics;
long ss_emu_lt_heuristics(void) { return emu_lt_heuristics; }

cublasStatus_t cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t *p) {
    *p = calloc(1, sizeof **p);
    return *p ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_ALLOC_FAILED;
}
cublasStatus_t cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t p) {
    free(p);
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t p, cublasLtMatmulPreferenceAttributes_t attr,
                                                    const void *buf, size_t size) {
    if (attr != CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES || size != sizeof p->max_ws) return CUBLAS_STATUS_INVALID_VALUE;
    memcpy(&p->max_ws, buf, sizeof p->max_ws);
    return CUBLAS_STATUS_SUCCESS;
}

/* ss_emu_lt_refuse_bias32_d16(1): the heuristic finds no algorithm, and
 * cublasLtMatmul says NOT_SUPPORTED, for a bias epilogue with a 16-bit D and
 * an fp32 bias (the tests of the backend's fallbacks for a cuBLASLt that
 * takes no such bias). */
static int refuse_bias32_d16;
void ss_emu_lt_refuse_bias32_d16(int on) { refuse_bias32_d16 = on; }
static int emu_lt_refused(cublasLtMatmulDesc_t d, cublasLtMatrixLayout_t dd) {
    const int with_bias = d->epilogue == CUBLASLT_EPILOGUE_BIAS || d->epilogue == CUBLASLT_EPILOGUE_GELU_BIAS;
    return refuse_bias32_d16 && with_bias && (dd->type == CUDA_R_16BF || dd->type == CUDA_R_16F) &&
           d->bias_type == CUDA_R_32F;
}

/* What an emulated algorithm records: a tag, the shape (m, n, k) and the workspace it needs. */
#define EMU_ALGO_TAG 0x53534c54u
static void emu_lt_shape(cublasLtMatmulDesc_t d, cublasLtMatrixLayout_t ad, cublasLtMatrixLayout_t bd, uint64_t *m,
                         uint64_t *n, uint64_t *k, uint64_t *kb) {
    *m = d->ta == CUBLAS_OP_N ? ad->rows : ad->cols, *k = d->ta == CUBLAS_OP_N ? ad->cols : ad->rows;
    *kb = d->tb == CUBLAS_OP_N ? bd->rows : bd->cols, *n = d->tb == CUBLAS_OP_N ? bd->cols : bd->rows;
}

cublasStatus_t cublasLtMatmulAlgoGetHeuristic(cublasLtHandle_t h, cublasLtMatmulDesc_t d, cublasLtMatrixLayout_t ad,
                                              cublasLtMatrixLayout_t bd, cublasLtMatrixLayout_t cd,
                                              cublasLtMatrixLayout_t dd, cublasLtMatmulPreference_t p, int requested,
                                              cublasLtMatmulHeuristicResult_t *results, int *returned) {
    api_calls[API_LT_HEURISTIC]++;
    census_event("cublasLtMatmulAlgoGetHeuristic", 0);
    (void)h, (void)cd;
    if (!d || !ad || !bd || !dd || !p || requested < 1 || !results || !returned) return CUBLAS_STATUS_INVALID_VALUE;
    uint64_t m, n, k, kb;
    emu_lt_shape(d, ad, bd, &m, &n, &k, &kb);
    emu_lt_heuristics++;
    *returned = 0;
    if (k != kb || dd->rows != m || dd->cols != n || emu_lt_refused(d, dd)) return CUBLAS_STATUS_SUCCESS; /* nothing fits */
    uint64_t ws = p->max_ws / 2;
    if (ws > (1u << 20)) ws = 1u << 20;
    memset(&results[0], 0, sizeof results[0]);
    results[0].algo.data[0] = EMU_ALGO_TAG, results[0].algo.data[1] = m, results[0].algo.data[2] = n;
    results[0].algo.data[3] = k, results[0].algo.data[4] = ws;
    results[0].workspaceSize = (size_t)ws;
    results[0].state = CUBLAS_STATUS_SUCCESS;
    *returned = 1;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmul(cublasLtHandle_t h, cublasLtMatmulDesc_t d, const void *alpha, const void *A,
                              cublasLtMatrixLayout_t ad, const void *B, cublasLtMatrixLayout_t bd, const void *beta,
                              const void *C, cublasLtMatrixLayout_t cd, void *D, cublasLtMatrixLayout_t dd,
                              const cublasLtMatmulAlgo_t *algo, void *workspace, size_t workspace_bytes,
                              cudaStream_t stream) {
    (void)h, (void)stream;
    /* op(A) is m x k, op(B) k x n, D m x n: the layouts must agree */
    uint64_t m, n, k, kb;
    emu_lt_shape(d, ad, bd, &m, &n, &k, &kb);
    /* an algorithm must be the heuristic's for this shape, with its workspace */
    if (algo && (algo->data[0] != EMU_ALGO_TAG || algo->data[1] != m || algo->data[2] != n || algo->data[3] != k ||
                 workspace_bytes < algo->data[4] || (algo->data[4] && !workspace)))
        return CUBLAS_STATUS_INVALID_VALUE;
    if (!algo && workspace_bytes && !workspace) return CUBLAS_STATUS_INVALID_VALUE;
    if (k != kb || dd->rows != m || dd->cols != n || cd->rows != m || cd->cols != n || cd->ld != dd->ld ||
        m > INT32_MAX || n > INT32_MAX || k > INT32_MAX)
        return CUBLAS_STATUS_INVALID_VALUE;
    /* D is fp32, or bf16/fp16 with beta 0 (computed in fp32, rounded once after the epilogue) */
    const int d16 = dd->type == CUDA_R_16BF || dd->type == CUDA_R_16F;
    if (C != D || cd->type != dd->type || (dd->type != CUDA_R_32F && !d16) ||
        (d16 && *(const float *)beta != 0.f))
        return CUBLAS_STATUS_NOT_SUPPORTED;
    if (emu_lt_refused(d, dd)) return CUBLAS_STATUS_NOT_SUPPORTED;
    const int with_bias = d->epilogue == CUBLASLT_EPILOGUE_BIAS || d->epilogue == CUBLASLT_EPILOGUE_GELU_BIAS;
    const int gelu = d->epilogue == CUBLASLT_EPILOGUE_GELU || d->epilogue == CUBLASLT_EPILOGUE_GELU_BIAS;
    if (with_bias && !d->bias) return CUBLAS_STATUS_INVALID_VALUE;
    const int32_t bt = d->bias_type < 0 ? (int32_t)dd->type : d->bias_type;
    if (with_bias && bt != CUDA_R_32F && bt != CUDA_R_16BF && bt != CUDA_R_16F) return CUBLAS_STATUS_NOT_SUPPORTED;
    float *out = d16 ? malloc(sizeof(float) * (size_t)(dd->ld * n)) : D;
    if (!out) return CUBLAS_STATUS_ALLOC_FAILED;
    cublasStatus_t st = emu_gemm_ex(d->ta, d->tb, (int)m, (int)n, (int)k, alpha, A, ad->type, (int)ad->ld, B, bd->type,
                                    (int)bd->ld, beta, out, CUDA_R_32F, (int)dd->ld, CUBLAS_COMPUTE_32F);
    if (st == CUBLAS_STATUS_SUCCESS) emu_lt_products++, emu_lt_gelu += gelu, emu_lt_d16 += d16;
    census_gemm(gelu ? "cublasLtMatmul (GELU)" : with_bias ? "cublasLtMatmul (bias)" : "cublasLtMatmul", (long long)m,
                (long long)n, (long long)k, 1, CENSUS_TYPES(ad->type, bd->type, dd->type));
    const float kg = 0.7978845608028654f; /* sqrt(2/pi) */
    for (uint64_t j = 0; st == CUBLAS_STATUS_SUCCESS && !ss_emu_host_only() && j < n; j++)
        for (uint64_t i = 0; i < m; i++) {
            const uint64_t at = i + j * (uint64_t)dd->ld;
            float v = out[at];
            if (with_bias)
                v += bt == CUDA_R_32F ? ((const float *)d->bias)[i] : bt == CUDA_R_16BF ? bf16_at(d->bias, i) : f16_at(d->bias, i);
            if (gelu) v = 0.5f * v * (1.f + tanhf(kg * (v + 0.044715f * v * v * v)));
            if (!d16) out[at] = v;
            else ((uint16_t *)D)[at] = dd->type == CUDA_R_16BF ? ss_f32_to_bf16(v) : ss_f32_to_f16(v);
        }
    if (d16) free(out);
    return st;
}

/* Column-major C = alpha op(A) op(A)^T + beta C on the uplo triangle of
 * the n x n C only (the other is not touched); op(A) is n x k. */
cublasStatus_t cublasSsyrk(cublasHandle_t h, cublasFillMode_t uplo, cublasOperation_t trans, int n, int k,
                           const float *alpha, const float *A, int lda, const float *beta, float *C, int ldc) {
    const int rows_a = trans == CUBLAS_OP_N ? n : k;
    if (n < 0 || k < 0 || ldc < (n > 1 ? n : 1) || lda < (rows_a > 1 ? rows_a : 1)) return CUBLAS_STATUS_INVALID_VALUE;
    census_gemm("cublasSsyrk", n, n, k, 1, CENSUS_TYPES(CUDA_R_32F, CUDA_R_32F, CUDA_R_32F));
    if (ss_emu_host_only()) return CUBLAS_STATUS_SUCCESS;
    const cublasOperation_t tt = trans == CUBLAS_OP_N ? CUBLAS_OP_T : CUBLAS_OP_N; /* op(A)^T as the right factor */
    for (int j = 0; j < n; j++)
        for (int i = uplo == CUBLAS_FILL_MODE_UPPER ? 0 : j; i < (uplo == CUBLAS_FILL_MODE_UPPER ? j + 1 : n); i++) {
            float *c = &C[i + (size_t)j * ldc];
            *c = *alpha * emu_dot(A, lda, trans, i, A, lda, tt, j, k) + (*beta == 0.f ? 0.f : *beta * *c);
        }
    return CUBLAS_STATUS_SUCCESS;
}

const char *cublasGetStatusString(cublasStatus_t s) {
    return s == CUBLAS_STATUS_SUCCESS            ? "CUBLAS_STATUS_SUCCESS"
           : s == CUBLAS_STATUS_INVALID_VALUE    ? "CUBLAS_STATUS_INVALID_VALUE"
           : s == CUBLAS_STATUS_ALLOC_FAILED     ? "CUBLAS_STATUS_ALLOC_FAILED"
           : s == CUBLAS_STATUS_EXECUTION_FAILED ? "CUBLAS_STATUS_EXECUTION_FAILED"
           : s == CUBLAS_STATUS_NOT_SUPPORTED    ? "CUBLAS_STATUS_NOT_SUPPORTED"
                                                 : "CUBLAS_STATUS_NOT_INITIALIZED";
}

/* ---- cuSOLVER's symmetric eigensolver (see cusolverDn.h) ---- */

struct ss_emu_cusolver {
    cudaStream_t stream;
};
struct ss_emu_cusolver_params {
    int unused;
};

cusolverStatus_t cusolverDnCreate(cusolverDnHandle_t *h) {
    *h = calloc(1, sizeof **h);
    return *h ? CUSOLVER_STATUS_SUCCESS : CUSOLVER_STATUS_ALLOC_FAILED;
}

cusolverStatus_t cusolverDnDestroy(cusolverDnHandle_t h) {
    free(h);
    return CUSOLVER_STATUS_SUCCESS;
}

cusolverStatus_t cusolverDnSetStream(cusolverDnHandle_t h, cudaStream_t s) {
    h->stream = s;
    return CUSOLVER_STATUS_SUCCESS;
}

cusolverStatus_t cusolverDnCreateParams(cusolverDnParams_t *p) {
    *p = calloc(1, sizeof **p);
    return *p ? CUSOLVER_STATUS_SUCCESS : CUSOLVER_STATUS_ALLOC_FAILED;
}

cusolverStatus_t cusolverDnDestroyParams(cusolverDnParams_t p) {
    free(p);
    return CUSOLVER_STATUS_SUCCESS;
}

static cusolverStatus_t syevdx_check(cusolverEigMode_t jobz, cusolverEigRange_t range, cublasFillMode_t uplo, int64_t n,
                                     cudaDataType ta, int64_t lda, int64_t il, int64_t iu, cudaDataType tw,
                                     cudaDataType tc) {
    if (ta != CUDA_R_64F || tw != CUDA_R_64F || tc != CUDA_R_64F || jobz != CUSOLVER_EIG_MODE_VECTOR ||
        range != CUSOLVER_EIG_RANGE_I || (uplo != CUBLAS_FILL_MODE_LOWER && uplo != CUBLAS_FILL_MODE_UPPER) || n < 1 ||
        lda < n || il < 1 || il > iu || iu > n)
        return CUSOLVER_STATUS_INVALID_VALUE;
    return iu == n ? CUSOLVER_STATUS_SUCCESS : CUSOLVER_STATUS_NOT_SUPPORTED;
}

cusolverStatus_t cusolverDnXsyevdx_bufferSize(cusolverDnHandle_t h, cusolverDnParams_t params, cusolverEigMode_t jobz,
                                              cusolverEigRange_t range, cublasFillMode_t uplo, int64_t n,
                                              cudaDataType dataTypeA, const void *A, int64_t lda, void *vl, void *vu,
                                              int64_t il, int64_t iu, int64_t *h_meig, cudaDataType dataTypeW,
                                              const void *W, cudaDataType computeType, size_t *device_bytes,
                                              size_t *host_bytes) {
    cusolverStatus_t e = syevdx_check(jobz, range, uplo, n, dataTypeA, lda, il, iu, dataTypeW, computeType);
    if (e) return e;
    *device_bytes = (size_t)n * sizeof(double); /* asked for and checked, as a real workspace would be */
    *host_bytes = 0;
    return CUSOLVER_STATUS_SUCCESS;
}

cusolverStatus_t cusolverDnXsyevdx(cusolverDnHandle_t h, cusolverDnParams_t params, cusolverEigMode_t jobz,
                                   cusolverEigRange_t range, cublasFillMode_t uplo, int64_t n, cudaDataType dataTypeA,
                                   void *A, int64_t lda, void *vl, void *vu, int64_t il, int64_t iu, int64_t *meig,
                                   cudaDataType dataTypeW, void *W, cudaDataType computeType, void *device_buf,
                                   size_t device_bytes, void *host_buf, size_t host_bytes, int *info) {
    cusolverStatus_t e = syevdx_check(jobz, range, uplo, n, dataTypeA, lda, il, iu, dataTypeW, computeType);
    if (e) return e;
    if (device_bytes < (size_t)n * sizeof(double) || !device_buf) return CUSOLVER_STATUS_INVALID_VALUE;
    complete_all(); /* the solver runs on its stream, after what came before */
    double *a = A, *w = W;
    const int64_t k = iu - il + 1;
    double *full = malloc((size_t)(n * n) * sizeof(double)), *vals = malloc((size_t)k * sizeof(double)),
           *vecs = malloc((size_t)(k * n) * sizeof(double));
    cusolverStatus_t rc = CUSOLVER_STATUS_SUCCESS;
    if (!full || !vals || !vecs) {
        rc = CUSOLVER_STATUS_ALLOC_FAILED;
        goto out;
    }
    /* Only the named triangle of the column-major A is read. */
    for (int64_t j = 0; j < n; j++)
        for (int64_t i = 0; i < n; i++) {
            int upper_elem = i <= j; /* (i, j) lies in the upper triangle */
            int64_t r = i, c = j;
            if ((uplo == CUBLAS_FILL_MODE_UPPER) != upper_elem) r = j, c = i;
            full[i * n + j] = a[r + c * lda];
        }
    if (ss_pca_top(full, n, k, vals, vecs) != 0) {
        *info = 1;
        goto out;
    }
    for (int64_t c = 0; c < k; c++) { /* ascending, column c of A, alternate signs */
        w[c] = vals[k - 1 - c];
        const double sgn = c % 2 ? -1.0 : 1.0;
        for (int64_t i = 0; i < n; i++) a[i + c * lda] = sgn * vecs[(k - 1 - c) * n + i];
    }
    *meig = k;
    *info = 0;
out:
    free(full);
    free(vals);
    free(vecs);
    return rc;
}
