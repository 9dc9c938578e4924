/* The CUDA backend: the ops table on one GPU, with the kernels of kernels/
 * and cuBLAS for the matrix products. Built when nvcc and cuBLAS are found
 * (SS_HAVE_CUDA); the test binary also builds it against the emulated
 * runtime of kernels/emu/host/ (SS_CUDA_EMULATED), so its host code is
 * tested on machines without a GPU.
 *
 * Every op is issued on one stream; errors of asynchronous work surface at
 * the next download or sync, which report them with the backend's name.
 * download_async alone uses a second stream, so that a batch's captured
 * sites travel to the host while the next batch computes. */
#if defined(SS_HAVE_CUDA) || defined(SS_CUDA_EMULATED)

#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>
#if defined(SS_HAVE_CUSOLVER) || defined(SS_CUDA_EMULATED)
#define SS_CUDA_PCA 1
#include <cusolverDn.h>
#endif
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_internal.h" /* the mask program checks every backend shares */
#include "subscope/backend.h"
#include "subscope/cuda_kernels.h"
#include "subscope/cov_blk.h"
#include "subscope/gemm_split.h"
#include "subscope/stats.h"
#include "subscope/util.h"

#define SS_PINNED_CACHE 8 /* released pinned host blocks kept for reuse */

/* collect's centred products: cuBLAS's Ssyrk, one of the kernels or the blocked triangle through cuBLAS */
enum cov_choice { COV_AUTO, COV_F32, COV_TC, COV_WG, COV_SSYRK, COV_BLK, COV_REC };

/* A small table of int64s that the device keeps (the sequences of a pass),
 * uploaded only when it differs from what the device holds already. */
typedef struct {
    int64_t *dev;           /* the device's copy (among the backend's blocks) */
    size_t cap;             /* in int64 elements */
    int64_t *host;          /* what dev holds now (n elements; 0: nothing) ... */
    int64_t *next;          /* ... and the next call's, compared with it */
    size_t n;
} dev_table;

typedef struct {
    int device;
    cudaStream_t stream;
    cudaStream_t copy;      /* copies to the host that overlap later compute (download_async) */
    cublasHandle_t blas;
    cublasLtHandle_t lt;    /* products with the bias in their epilogue, else NULL */
    int epilogue;           /* SUBSCOPE_BIAS_EPILOGUE: -1 (unset) 16-bit weights' products, 1 all, 0 none */
    int tf32;               /* the handle's math mode is TF32 (SUBSCOPE_TF32 / ss_run_opts.tf32) */
#ifdef SS_CUDA_PCA
    cusolverDnHandle_t solver; /* made on first use */
#endif
    dev_table meta;         /* start/len/pattern_off of the sequences, for attention */
    uint16_t *a16;          /* bf16 copy of the activations of a bf16 product */
    size_t a16_cap;         /* in elements */
    float *ws;              /* workspace of the backward kernels (attention P/dS, layernorm row stats) */
    size_t attn_ws_max;     /* bytes of P/dS beyond which attention_backward recomputes them; the
                             * forward's cuBLAS path keeps its scores within it too */
    size_t ws_cap;          /* in floats */
    int64_t attn_gemm_min_len; /* prompts this long take the cuBLAS attention path (0: never) */
    int attn_tc;            /* SUBSCOPE_ATTN_TC: -1 (unset) attention_lowp on tensor cores, 0 never, 1 every call without the pattern */
    int attn_qt;            /* SUBSCOPE_ATTN_QT: the tensor-core kernel's query tiles per warp, 1 or 2 */
    uint16_t *h16;          /* mlp_add's 16-bit GELU / SwiGLU output */
    size_t h16_cap;         /* in elements */
    int gu16_on;            /* SUBSCOPE_GU16 (default on): mlp_add's gate|up product (Llama) in 16 bits, into gu16 */
    uint16_t *gu16;
    size_t gu16_cap;        /* in elements */
    uint16_t *qkv16;        /* the tensor-core attention's bf16 Q, K, V */
    size_t qkv16_cap;       /* in elements */
    uint16_t *padc;         /* product_padded's rows (floats, counted in 16-bit elements) */
    size_t padc_cap;
    size_t pad_bytes;       /* product_padded's scratch (SUBSCOPE_PAD_PRODUCTS; 0: never pads) */
    int split;              /* SUBSCOPE_SPLIT_PRODUCTS: unaligned widths in two products (gemm_split.h) */
    size_t stage_bytes;     /* each of the two pinned staging buffers of upload and download (SUBSCOPE_UPLOAD_STAGE; 0: none) */
    void *stage[2];         /* allocated on the first large upload; NULL until then, or if that failed */
    cudaEvent_t stage_done[2]; /* recorded after each buffer's last copy */
    int stage_state;        /* 0 not tried yet, 1 ready, -1 unavailable (plain copies) */
    uint16_t *cov_ws;       /* the covariance kernels' workspace */
    size_t cov_ws_cap;      /* in 16-bit elements */
    int cov_kernel;         /* collect's products (SUBSCOPE_COV_KERNEL): a cov_choice */
    int64_t cov_block;      /* SUBSCOPE_COV_BLOCK: blk's block width, rec's widest diagonal block (0: the default) */
    dev_table mseq;         /* a masked forward's sequences (start, len, prompt, mask) */
    dev_table rows;         /* the row list of a batch's statistics (the same for every site of a batch) */
    /* cuBLASLt products: their descriptors and the heuristic's algorithm per
     * shape, made once (lt_plan_for), and the workspace they may use. */
    struct lt_plan *plans;
    int n_plans, next_plan, use_plans;
    int bias16;             /* SUBSCOPE_BIAS16: a 16-bit D's bias in D's type: 1 always, 0 never, -1 where fp32 is declined */
    int lt_log;             /* SUBSCOPE_LT_LOG=1: each new plan on stderr */
    long lt_declined;       /* products cuBLASLt declined (with plans: shapes; without: calls) */
    long lt_bias16;         /* of those, the ones that ran with the 16-bit bias instead of falling back */
    uint16_t *bias16buf;    /* the bias rounded to D's type, for the product being run */
    size_t bias16cap;
    void *lt_ws;            /* allocated with the first plan; without it (out of memory) plans do without */
    size_t lt_ws_bytes;
    const ss_backend *self; /* the backend this is the state of (for allocations from lt_plan_for) */
    char name[32];
    char device_name[256];
    /* Live allocations, to report the memory a run needed. */
    void **blk;
    size_t *blk_bytes, n_blk, cap_blk, in_use, peak, reserved;
    unsigned char *blk_live;  /* 0: released, cached for reuse */
    /* Pinned host memory (alloc_host): the live blocks' sizes, and released
     * blocks kept for reuse, each with events recorded on both streams at
     * its release (see cu_alloc_host). */
    struct pinned_blk { void *p; size_t bytes; cudaEvent_t done[2]; } *pin_live, pin_free[SS_PINNED_CACHE];
    size_t n_pin_live, cap_pin_live;
    int n_pin_free;
} cuda_impl;

#define IMPL(be) ((cuda_impl *)(be)->impl)

static ss_status cuda_err(const ss_backend *be, cudaError_t e, const char *what) {
    return ss_errorf(e == cudaErrorMemoryAllocation ? SS_ERR_NOMEM : SS_ERR_IO, "%s (%s): %s: %s", be->name,
                     IMPL(be)->device_name, what, cudaGetErrorString(e));
}

#define CU(call, what)                                   \
    do {                                                 \
        cudaError_t e_ = (call);                         \
        if (e_ != cudaSuccess) return cuda_err(be, e_, what); \
    } while (0)

/* Kernel launchers return a cudaError_t as int. */
#define KL(call, what) CU((cudaError_t)(call), what)

static ss_status cuda_check(const ss_backend *be, int launch_status, const char *what) {
    return launch_status ? cuda_err(be, (cudaError_t)launch_status, what) : SS_OK;
}

/* A small caching allocator: a forward pass allocates the same dozen
 * buffers every batch, and cudaMalloc/cudaFree synchronise the device, so
 * released blocks are kept and handed out again. Reuse is safe without
 * events because every op runs on the backend's one stream, in order. */
static int track(cuda_impl *c, void *p, size_t bytes) {
    if (c->n_blk == c->cap_blk) {
        size_t cap = c->cap_blk ? 2 * c->cap_blk : 64;
        void **nb = realloc(c->blk, cap * sizeof *nb);
        if (nb) c->blk = nb;
        size_t *ns = nb ? realloc(c->blk_bytes, cap * sizeof *ns) : NULL;
        if (ns) c->blk_bytes = ns;
        unsigned char *nl = ns ? realloc(c->blk_live, cap) : NULL;
        if (!nl) return 0;
        c->blk_live = nl;
        c->cap_blk = cap;
    }
    c->blk[c->n_blk] = p;
    c->blk_bytes[c->n_blk] = bytes;
    c->blk_live[c->n_blk++] = 1;
    return 1;
}

static void drop_cached(cuda_impl *c) {
    for (size_t i = 0; i < c->n_blk;) {
        if (c->blk_live[i]) { i++; continue; }
        cudaFree(c->blk[i]);
        c->reserved -= c->blk_bytes[i];
        c->n_blk--;
        c->blk[i] = c->blk[c->n_blk];
        c->blk_bytes[i] = c->blk_bytes[c->n_blk];
        c->blk_live[i] = c->blk_live[c->n_blk];
    }
}

static ss_status cu_alloc(const ss_backend *be, size_t bytes, const char *what, void **out) {
    cuda_impl *c = IMPL(be);
    *out = NULL;
    if (!bytes) bytes = 1;
    /* Best fit among cached blocks no more than twice the request. */
    size_t best = SIZE_MAX;
    for (size_t i = 0; i < c->n_blk; i++)
        if (!c->blk_live[i] && c->blk_bytes[i] >= bytes && c->blk_bytes[i] / 2 <= bytes &&
            (best == SIZE_MAX || c->blk_bytes[i] < c->blk_bytes[best]))
            best = i;
    if (best != SIZE_MAX) {
        c->blk_live[best] = 1;
        *out = c->blk[best];
        bytes = c->blk_bytes[best];
    } else {
        cudaError_t e = cudaMalloc(out, bytes);
        if (e != cudaSuccess) { /* give the cache back and try once more */
            cudaGetLastError();
            drop_cached(c);
            e = cudaMalloc(out, bytes);
        }
        if (e != cudaSuccess) {
            size_t free_b = 0, total = 0;
            cudaGetLastError(); /* clear the sticky error of a failed allocation */
            cudaMemGetInfo(&free_b, &total);
            *out = NULL;
            return ss_errorf(SS_ERR_NOMEM,
                             "%s (%s): out of GPU memory allocating %.1f MiB for %s (%.1f of %.1f MiB free)", be->name,
                             c->device_name, (double)bytes / 1048576.0, what, (double)free_b / 1048576.0,
                             (double)total / 1048576.0);
        }
        if (!track(c, *out, bytes)) {
            cudaFree(*out);
            *out = NULL;
            return ss_errorf(SS_ERR_NOMEM, "out of host memory tracking GPU allocations");
        }
        c->reserved += bytes;
    }
    c->in_use += bytes;
    if (c->in_use > c->peak) c->peak = c->in_use;
    return SS_OK;
}

static void cu_release(const ss_backend *be, void *p) {
    cuda_impl *c = IMPL(be);
    for (size_t i = 0; i < c->n_blk; i++)
        if (c->blk[i] == p && c->blk_live[i]) {
            c->in_use -= c->blk_bytes[i];
            c->blk_live[i] = 0;
            return;
        }
}

static void cu_memory_stats(const ss_backend *be, size_t *in_use, size_t *peak) {
    *in_use = IMPL(be)->in_use;
    *peak = IMPL(be)->peak;
}

/* The staging buffers, made on first use: 1 if they are there. */
static int stage_ready(cuda_impl *c) {
    if (c->stage_state) return c->stage_state > 0;
    c->stage_state = -1;
    for (int k = 0; k < 2; k++)
        if (cudaMallocHost(&c->stage[k], c->stage_bytes) != cudaSuccess ||
            cudaEventCreateWithFlags(&c->stage_done[k], cudaEventDisableTiming) != cudaSuccess) {
            cudaGetLastError(); /* no pinned memory to spare: plain copies */
            return 0;
        }
    c->stage_state = 1;
    return 1;
}

/* Whether a copy of this many bytes to or from host memory at p goes through
 * the staging buffers: from 1 MiB (or one buffer, if smaller), while there
 * are buffers, unless p is pinned already (alloc_host's), which the copy
 * engine reads and writes at full speed. */
static int staged(cuda_impl *c, const void *p, size_t bytes) {
    const size_t chunk = c->stage_bytes;
    if (!chunk || bytes < (chunk < ((size_t)1 << 20) ? chunk : (size_t)1 << 20)) return 0;
    struct cudaPointerAttributes a;
    if (cudaPointerGetAttributes(&a, p) != cudaSuccess) {
        cudaGetLastError(); /* not a pointer CUDA knows: ordinary memory */
        a.type = cudaMemoryTypeUnregistered;
    }
    return a.type != cudaMemoryTypeHost && stage_ready(c);
}

/* One MiB piece of a chunk copied into or out of a staging buffer, on the thread pool
 * (page faults on the mapped files' pages cost a thread more than the copy). */
typedef struct {
    char *dst;
    const char *src;
    size_t len;
} stage_copy;

static void stage_piece(void *ctx, int64_t i) {
    const stage_copy *j = ctx;
    const size_t off = (size_t)i << 20, n = j->len - off < ((size_t)1 << 20) ? j->len - off : (size_t)1 << 20;
    memcpy(j->dst + off, j->src + off, n);
}

/* The source is pageable host memory that the caller may reuse at once, so
 * the copy is complete on return. A large one goes through two pinned
 * buffers: the host threads copy a chunk into one while the copy engine
 * moves the other to the device. The driver's own path for pageable memory moved a 7B
 * model's 13.5 GB from the mapped safetensors files at about 0.65 GB/s on the
 * H100 node (~20 s to place; Hugging Face's loader took 3.1 s), while one
 * host thread copies mapped file pages at several GB/s (docs/DECISIONS.md,
 * "Weights reach the GPU through pinned buffers"). */
static ss_status cu_upload(const ss_backend *be, void *dst, const void *src, size_t bytes) {
    cuda_impl *c = IMPL(be);
    if (!bytes) return SS_OK;
    const size_t chunk = c->stage_bytes;
    if (!staged(c, src, bytes)) {
        CU(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, c->stream), "copy to device");
        CU(cudaStreamSynchronize(c->stream), "copy to device");
        return SS_OK;
    }
    for (size_t off = 0, k = 0; off < bytes; off += chunk, k ^= 1) {
        const size_t len = bytes - off < chunk ? bytes - off : chunk;
        /* from the third chunk on, the buffer's last chunk must have left (the previous
         * upload's have: it ended synchronised) */
        if (off >= 2 * chunk) CU(cudaEventSynchronize(c->stage_done[k]), "copy to device");
        stage_copy j = {c->stage[k], (const char *)src + off, len};
        ss_parallel_for((int64_t)((len + ((size_t)1 << 20) - 1) >> 20), stage_piece, &j);
        CU(cudaMemcpyAsync((char *)dst + off, c->stage[k], len, cudaMemcpyHostToDevice, c->stream), "copy to device");
        CU(cudaEventRecord(c->stage_done[k], c->stream), "copy to device");
    }
    CU(cudaStreamSynchronize(c->stream), "copy to device");
    return SS_OK;
}

/* The host array to fill with the next `need` elements of t, grown (device
 * copy too) when it is too small. */
static ss_status table_next(const ss_backend *be, dev_table *t, size_t need, const char *what, int64_t **out) {
    if (need > t->cap) {
        if (t->dev) cu_release(be, t->dev);
        free(t->host);
        free(t->next);
        *t = (dev_table){0};
        if (!(t->host = ss_malloc(need * sizeof(int64_t), what)) || !(t->next = ss_malloc(need * sizeof(int64_t), what)))
            return SS_ERR_NOMEM;
        SS_TRY(cu_alloc(be, need * sizeof(int64_t), what, (void **)&t->dev));
        t->cap = need;
    }
    *out = t->next;
    return SS_OK;
}

/* Uploads the `need` elements table_next gave, unless their first `compared`
 * are what the device holds already. */
static ss_status table_put(const ss_backend *be, dev_table *t, size_t need, size_t compared) {
    if (need == t->n && !memcmp(t->next, t->host, compared * sizeof(int64_t))) return SS_OK;
    t->n = 0; /* unknown until the copy succeeds */
    SS_TRY(cu_upload(be, t->dev, t->next, need * sizeof(int64_t)));
    int64_t *h = t->host;
    t->host = t->next;
    t->next = h;
    t->n = need;
    return SS_OK;
}

static void table_free(dev_table *t) {
    free(t->host);
    free(t->next);
}

/* A copy out of the staging buffer that chunk i went to, once it is there. */
static ss_status stage_drain(const ss_backend *be, char *dst, size_t bytes, size_t i) {
    cuda_impl *c = IMPL(be);
    const size_t off = i * c->stage_bytes, len = bytes - off < c->stage_bytes ? bytes - off : c->stage_bytes;
    CU(cudaEventSynchronize(c->stage_done[i & 1]), "copy to host");
    stage_copy j = {dst + off, c->stage[i & 1], len};
    ss_parallel_for((int64_t)((len + ((size_t)1 << 20) - 1) >> 20), stage_piece, &j);
    return SS_OK;
}

/* The destination is pageable host memory, complete on return. A large copy
 * goes through the same two pinned buffers as upload's, the other way: the
 * copy engine fills one while the host threads empty the other. The driver's
 * own copy to pageable memory brought collect's 906 MB of float64 totals to
 * the host at 1.6 GB/s on the H100 node (bench/README, second run). */
static ss_status cu_download(const ss_backend *be, void *dst, const void *src, size_t bytes) {
    cuda_impl *c = IMPL(be);
    if (!bytes) return SS_OK;
    if (!staged(c, dst, bytes)) {
        CU(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, c->stream), "copy to host");
        CU(cudaStreamSynchronize(c->stream), "copy to host");
        return SS_OK;
    }
    const size_t chunk = c->stage_bytes, chunks = (bytes + chunk - 1) / chunk;
    for (size_t i = 0; i < chunks; i++) {
        /* buffer i & 1 was emptied when chunk i - 2 was drained, an iteration ago */
        const size_t off = i * chunk, len = bytes - off < chunk ? bytes - off : chunk;
        CU(cudaMemcpyAsync(c->stage[i & 1], (const char *)src + off, len, cudaMemcpyDeviceToHost, c->stream),
           "copy to host");
        CU(cudaEventRecord(c->stage_done[i & 1], c->stream), "copy to host");
        if (i) SS_TRY(stage_drain(be, dst, bytes, i - 1));
    }
    return stage_drain(be, dst, bytes, chunks - 1);
}

/* The copy waits on the compute stream through an event and runs on the
 * copy stream; the ticket is an event recorded after it. */
static ss_status cu_download_async(const ss_backend *be, void *dst, const void *src, size_t bytes, void **ticket) {
    cuda_impl *c = IMPL(be);
    cudaEvent_t ready = NULL, done = NULL;
    cudaError_t e;
    *ticket = NULL;
    if ((e = cudaEventCreateWithFlags(&ready, cudaEventDisableTiming)) != cudaSuccess) return cuda_err(be, e, "create event");
    if ((e = cudaEventCreateWithFlags(&done, cudaEventDisableTiming)) != cudaSuccess ||
        (e = cudaEventRecord(ready, c->stream)) != cudaSuccess || (e = cudaStreamWaitEvent(c->copy, ready, 0)) != cudaSuccess ||
        (bytes && (e = cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, c->copy)) != cudaSuccess) ||
        (e = cudaEventRecord(done, c->copy)) != cudaSuccess) {
        /* Nothing may still write dst once this returns. */
        cudaStreamSynchronize(c->copy);
        cudaEventDestroy(ready);
        if (done) cudaEventDestroy(done);
        return cuda_err(be, e, "start of a copy to host");
    }
    cudaEventDestroy(ready); /* released once the copy stream has passed it */
    *ticket = done;
    return SS_OK;
}

static ss_status cu_wait_copy(const ss_backend *be, void *ticket) {
    if (!ticket) return SS_OK;
    cudaError_t e = cudaEventSynchronize((cudaEvent_t)ticket);
    cudaEventDestroy((cudaEvent_t)ticket);
    if (e != cudaSuccess) return cuda_err(be, e, "copy to host");
    return SS_OK;
}

/* Pinned host memory, cached like device memory: pinning and unpinning
 * pages costs milliseconds per 100 MB (cudaMallocHost, cudaFreeHost), and a
 * job that captures sites outside a capture (attribute, IG's steps) takes a
 * buffer per pass. A released block waits, with events recorded on the
 * compute and copy streams, until a request it fits (at most twice its
 * size) takes it after those events, so a copy still in flight when the
 * block was released finishes before anyone else writes it, as
 * cudaFreeHost's implicit synchronisation used to ensure. */
static void pin_drop(struct pinned_blk *b) {
    for (int k = 0; k < 2; k++) {
        cudaEventSynchronize(b->done[k]);
        cudaEventDestroy(b->done[k]);
    }
    cudaFreeHost(b->p);
}

static ss_status cu_alloc_host(const ss_backend *be, size_t bytes, const char *what, void **out) {
    cuda_impl *c = IMPL(be);
    *out = NULL;
    if (!bytes) bytes = 1;
    if (c->n_pin_live == c->cap_pin_live) {
        size_t cap = c->cap_pin_live ? 2 * c->cap_pin_live : 8;
        struct pinned_blk *n = realloc(c->pin_live, cap * sizeof *n);
        if (!n) return ss_errorf(SS_ERR_NOMEM, "out of host memory tracking pinned buffers");
        c->pin_live = n, c->cap_pin_live = cap;
    }
    int best = -1;
    for (int i = 0; i < c->n_pin_free; i++)
        if (c->pin_free[i].bytes >= bytes && c->pin_free[i].bytes / 2 <= bytes &&
            (best < 0 || c->pin_free[i].bytes < c->pin_free[best].bytes))
            best = i;
    if (best >= 0) {
        struct pinned_blk b = c->pin_free[best];
        c->pin_free[best] = c->pin_free[--c->n_pin_free];
        for (int k = 0; k < 2; k++) {
            cudaEventSynchronize(b.done[k]);
            cudaEventDestroy(b.done[k]);
        }
        c->pin_live[c->n_pin_live++] = (struct pinned_blk){b.p, b.bytes, {0, 0}};
        *out = b.p;
        return SS_OK;
    }
    cudaError_t e = cudaMallocHost(out, bytes);
    if (e != cudaSuccess && c->n_pin_free) { /* give the cache back and try once more */
        cudaGetLastError();
        while (c->n_pin_free) pin_drop(&c->pin_free[--c->n_pin_free]);
        e = cudaMallocHost(out, bytes);
    }
    if (e != cudaSuccess) {
        cudaGetLastError();
        *out = NULL;
        return ss_errorf(SS_ERR_NOMEM, "%s: cannot allocate %.1f MiB of pinned host memory for %s: %s", be->name,
                         (double)bytes / 1048576.0, what, cudaGetErrorString(e));
    }
    c->pin_live[c->n_pin_live++] = (struct pinned_blk){*out, bytes, {0, 0}};
    return SS_OK;
}

static void cu_release_host(const ss_backend *be, void *p) {
    cuda_impl *c = IMPL(be);
    size_t i = 0;
    while (i < c->n_pin_live && c->pin_live[i].p != p) i++;
    if (i == c->n_pin_live) return; /* not ours (or NULL) */
    struct pinned_blk b = c->pin_live[i];
    c->pin_live[i] = c->pin_live[--c->n_pin_live];
    int ok = 1;
    cudaStream_t streams[2] = {c->stream, c->copy};
    for (int k = 0; k < 2; k++) {
        b.done[k] = NULL;
        if (ok && (cudaEventCreateWithFlags(&b.done[k], cudaEventDisableTiming) != cudaSuccess ||
                   cudaEventRecord(b.done[k], streams[k]) != cudaSuccess))
            ok = 0;
    }
    if (!ok) { /* no events: release it the old way */
        cudaGetLastError();
        for (int k = 0; k < 2; k++)
            if (b.done[k]) cudaEventDestroy(b.done[k]);
        cudaFreeHost(b.p);
        return;
    }
    if (c->n_pin_free == SS_PINNED_CACHE) { /* the oldest goes */
        pin_drop(&c->pin_free[0]);
        memmove(c->pin_free, c->pin_free + 1, (SS_PINNED_CACHE - 1) * sizeof *c->pin_free);
        c->n_pin_free--;
    }
    c->pin_free[c->n_pin_free++] = b;
}

static ss_status cu_copy_rows(const ss_backend *be, float *dst, const float *src, int64_t ld_src, int64_t rows,
                              int64_t width) {
    KL(ss_cuda_capture(dst, src, ld_src, NULL, rows, width, IMPL(be)->stream), "capture kernel");
    return SS_OK;
}

/* The ops table's copy_rows16: a 16-bit model's key/value cache rows. */
static ss_status cu_copy_rows16(const ss_backend *be, void *dst, int dtype, const float *src, int64_t ld_src,
                                int64_t rows, int64_t width) {
    KL(ss_cuda_capture_to(dst, dtype, src, ld_src, rows, width, IMPL(be)->stream), "capture kernel (16-bit rows)");
    return SS_OK;
}

static ss_status scratch16(const ss_backend *be, uint16_t **buf, size_t *cap, size_t n, const char *what);

/* Which kernel forms a batch's products at width d: SUBSCOPE_COV_KERNEL's
 * (checked when the backend opened), or the default. */
static ss_status cov_kernel_for(const ss_backend *be, int64_t d, int *kernel) {
    const cuda_impl *c = IMPL(be);
    *kernel = c->cov_kernel == COV_AUTO ? (d < 3072 ? COV_F32 : COV_SSYRK) : c->cov_kernel;
    return SS_OK;
}

/* The blocked triangle (blk or rec) of n rows of x (fp32, row stride ld)
 * picked by the row list idx: gathered and centred on m32 to bf16 in one
 * pass (ss_cuda_cov_center), then cuBLAS's products (cov_blk.h). */
static ss_status blocked_products(const ss_backend *be, int rec, float *cc, const float *x, int64_t ld,
                                  const int64_t *idx, const float *m32, int64_t n, int64_t d) {
    cuda_impl *c = IMPL(be);
    const int64_t ws = rec ? ss_cuda_cov_lower_rec_ws(n, d) : ss_cuda_cov_lower_blk_ws(n, d, c->cov_block, 0);
    SS_TRY(scratch16(be, &c->cov_ws, &c->cov_ws_cap, (size_t)(ws + 1) / 2, "covariance workspace"));
    SS_TRY(cuda_check(be,
                      ss_cuda_cov_center(c->cov_ws, SS_CUDA_BF16, ss_cuda_cov_blk_ldw(d), x, SS_CUDA_F32, ld, idx, m32,
                                         n, n, d, c->stream),
                      "gathering and centring kernel"));
    cublasStatus_t bs = CUBLAS_STATUS_SUCCESS;
    int e = ss_cov_lower_blk(c->blas, rec, cc, d, NULL, SS_CUDA_BF16, d, NULL, n, d, c->cov_block, 0, c->cov_ws, c->stream,
                             &bs);
    if (e == -1)
        return ss_errorf(SS_ERR_IO, "%s: blocked covariance (d = %lld, %lld rows): %s: %s", be->name, (long long)d,
                         (long long)n, rec ? "cublasGemmStridedBatchedEx" : "cublasGemmBatchedEx",
                         cublasGetStatusString(bs));
    return cuda_check(be, e, "blocked covariance");
}

/* The centred products sum_r (x_r - m32)(x_r - m32)^T of a batch's rows,
 * one triangle (row-major lower) into cc, fp32 accumulation, by cublasSsyrk
 * on rows centred as they were gathered (ssyrk_products) or by
 * kernels/cov_lower.cu on the gathered rows g[n, d] (centred into a
 * workspace, a pipelined fp32 product of the triangle's tiles). By default the kernel
 * below d = 3072 and Ssyrk from there: on an H100 (bench/results, 16384
 * rows) the kernel took 0.30 ms at d = 768 against Ssyrk's 1.27, 3.46 ms
 * against 3.43 at d = 3072 and 87.8 against 82.6 at d = 16384.
 * SUBSCOPE_COV_KERNEL picks one: 1 the kernel, ssyrk cuBLAS, tc the
 * tensor-core kernel (the centred values rounded to bf16: 5x to 15x faster
 * than Ssyrk, at bf16's accuracy), wg the same roundings on Hopper's wgmma
 * (sm_90a only; checked, but slower than tc so far); blk and rec, the same
 * roundings through cuBLAS, are blocked_products'. TF32 is switched off
 * around Ssyrk: statistics are fp32 whatever the forward uses. */
static ss_status centred_products(const ss_backend *be, int kernel, float *cc, const float *g, const float *m32,
                                  int64_t n, int64_t d) {
    cuda_impl *c = IMPL(be);
    typedef int (*cov_fn)(float *, int64_t, const void *, int, int64_t, const float *, int64_t, int64_t, void *,
                          cudaStream_t);
    static const struct {
        cov_fn fn;
        int64_t (*ws)(int64_t, int64_t);
        const char *what;
    } k[] = {{ss_cuda_cov_lower, ss_cuda_cov_lower_ws, "covariance kernel"},
             {ss_cuda_cov_lower_tc, ss_cuda_cov_lower_tc_ws, "tensor-core covariance kernel"},
             {ss_cuda_cov_lower_wg, ss_cuda_cov_lower_wg_ws, "wgmma covariance kernel"}};
    const int i = kernel - COV_F32;
    if (kernel == COV_WG && !ss_cuda_cov_lower_wg_supported())
        return ss_errorf(SS_ERR_UNSUPPORTED,
                         "%s: SUBSCOPE_COV_KERNEL=wg needs a GPU of compute capability 9.0 (H100/H200) and a "
                         "build with CUDA_ARCH including 90 (its wgmma code is for sm_90a)",
                         be->name);
    SS_TRY(scratch16(be, &c->cov_ws, &c->cov_ws_cap, (size_t)(k[i].ws(n, d) + 1) / 2,
                     "covariance kernel workspace"));
    return cuda_check(be, k[i].fn(cc, d, g, SS_CUDA_F32, d, m32, n, d, c->cov_ws, c->stream), k[i].what);
}

/* cublasSsyrk on the centred rows g [n, ldg] (fp32, centred as gathered). */
static ss_status ssyrk_products(const ss_backend *be, float *cc, const float *g, int64_t ldg, int64_t n, int64_t d) {
    cuda_impl *c = IMPL(be);
    if (n > INT32_MAX || ldg > INT32_MAX)
        return ss_errorf(SS_ERR_UNSUPPORTED, "%s: covariance of %lld rows x %lld exceeds cuBLAS's 32-bit sizes", be->name,
                         (long long)n, (long long)d);
    const float one = 1.f, zero = 0.f;
    if (c->tf32) cublasSetMathMode(c->blas, CUBLAS_DEFAULT_MATH);
    /* Row-major g[n, ldg] is column-major A[d, n] (lda = ldg); A A^T's column-major
     * upper triangle is the row-major lower one. */
    cublasStatus_t s = cublasSsyrk(c->blas, CUBLAS_FILL_MODE_UPPER, CUBLAS_OP_N, (int)d, (int)n, &one, g, (int)ldg, &zero,
                                   cc, (int)d);
    if (c->tf32) cublasSetMathMode(c->blas, CUBLAS_TF32_TENSOR_OP_MATH);
    if (s != CUBLAS_STATUS_SUCCESS)
        return ss_errorf(SS_ERR_IO, "%s: cublasSsyrk (d = %lld, %lld rows): %s", be->name, (long long)d, (long long)n,
                         cublasGetStatusString(s));
    return SS_OK;
}

/* One batch of a site reduced on the device: its rows gathered (g), their
 * fp64 and fp32 column means (m64, m32) and, with want_m2, the products
 * about m32 (cc, fp32, lower triangle); nothing waits for the device but
 * the row list's upload, where the rows differ from the last call's. For
 * cublasSsyrk and the blocked triangle the means read the rows through the
 * row list, and the rows are gathered once the means are known, centred as
 * they are copied (fp32 into g for Ssyrk, bf16 into the workspace for the
 * blocked triangle: g stays NULL); the kernels gather first and centre in
 * their own workspace. */
typedef struct {
    const int64_t *idx; /* the backend's row table (c->rows), not the batch's */
    float *g, *m32, *cc;
    double *m64, *msum; /* msum: the column sums' slices (ss_cuda_colmean_ws) */
} batch_moments;

static void batch_free(const ss_backend *be, batch_moments *b) {
    void *dev[] = {b->g, b->m32, b->cc, b->m64, b->msum};
    for (size_t i = 0; i < sizeof dev / sizeof dev[0]; i++)
        if (dev[i]) cu_release(be, dev[i]);
    memset(b, 0, sizeof *b);
}

static ss_status batch_reduce(const ss_backend *be, const float *x, int64_t ld, const int64_t *row_idx, int64_t n,
                              int64_t d, int want_m2, batch_moments *b) {
    cuda_impl *c = IMPL(be);
    memset(b, 0, sizeof *b);
    ss_status st;
    int kernel = COV_AUTO;
    if (want_m2) SS_TRY(cov_kernel_for(be, d, &kernel));
    const int blocked = want_m2 && (kernel == COV_BLK || kernel == COV_REC);
    const int late_gather = blocked || (want_m2 && kernel == COV_SSYRK);
    const int64_t ldg = want_m2 && kernel == COV_SSYRK ? (d + 3) / 4 * 4 : d; /* cov_center's fp32 rows: 16-byte multiples */
    size_t g_bytes = 0, cc_bytes = 0;
    const int g_over = !ss_mul_ok((size_t)n, (size_t)ldg, &g_bytes) || !ss_mul_ok(g_bytes, sizeof(float), &g_bytes) ||
                       g_bytes > (size_t)INT64_MAX;
    if (g_over || (want_m2 && (!ss_mul_ok((size_t)d, (size_t)d, &cc_bytes) || !ss_mul_ok(cc_bytes, sizeof(float), &cc_bytes) ||
                               cc_bytes > (size_t)INT64_MAX)))
        return ss_errorf(SS_ERR_NOMEM, "%s: statistics of %lld rows x %lld columns: the %s in bytes overflow", be->name,
                         (long long)n, (long long)d, g_over ? "gathered rows" : "covariance (d x d floats)");
    if ((!blocked && (st = cu_alloc(be, g_bytes, "gathered rows", (void **)&b->g))) ||
        (st = cu_alloc(be, (size_t)d * sizeof(float), "means", (void **)&b->m32)) ||
        (st = cu_alloc(be, (size_t)d * sizeof(double), "means", (void **)&b->m64)))
        return st;
    const int64_t msb = ss_cuda_colmean_ws(n, d);
    if (msb && (st = cu_alloc(be, (size_t)msb, "column sums", (void **)&b->msum))) return st;
    /* The sites of a batch share its rows: uploaded (a wait for the stream)
     * only when they differ from the last site's */
    int64_t *t;
    SS_TRY(table_next(be, &c->rows, (size_t)n, "row list", &t));
    memcpy(t, row_idx, (size_t)n * sizeof(int64_t));
    SS_TRY(table_put(be, &c->rows, (size_t)n, (size_t)n));
    b->idx = c->rows.dev;
    if (late_gather) {
        SS_TRY(cuda_check(be, ss_cuda_colmean(b->m64, b->m32, x, SS_CUDA_F32, ld, b->idx, n, d, b->msum, c->stream),
                          "column-mean kernel"));
    } else {
        SS_TRY(cuda_check(be, ss_cuda_capture(b->g, x, ld, b->idx, n, d, c->stream), "gather kernel"));
        SS_TRY(cuda_check(be, ss_cuda_colmean(b->m64, b->m32, b->g, SS_CUDA_F32, d, NULL, n, d, b->msum, c->stream),
                          "column-mean kernel"));
    }
    if (!want_m2) return SS_OK;
    SS_TRY(cu_alloc(be, cc_bytes, "covariance", (void **)&b->cc));
    if (blocked) return blocked_products(be, kernel == COV_REC, b->cc, x, ld, b->idx, b->m32, n, d);
    if (kernel == COV_SSYRK) {
        SS_TRY(cuda_check(be, ss_cuda_cov_center(b->g, SS_CUDA_F32, ldg, x, SS_CUDA_F32, ld, b->idx, b->m32, n, n, d,
                                                 c->stream),
                          "gathering and centring kernel"));
        return ssyrk_products(be, b->cc, b->g, ldg, n, d);
    }
    return centred_products(be, kernel, b->cc, b->g, b->m32, n, d);
}

/* Gathers the rows, takes their fp64 column means and fp32-accumulated
 * centred products (lower triangle only) on the device, and corrects on the
 * host for centring on the fp32-rounded mean (cuda_kernels.h). */
static ss_status cu_moments_chunk(const ss_backend *be, const float *x, int64_t ld, const int64_t *row_idx, int64_t n,
                                  int64_t d, double *mean, double *m2) {
    if (n <= 0) return ss_errorf(SS_ERR_INTERNAL, "%s: moments of an empty chunk", be->name);
    batch_moments b;
    float *h_c = NULL, *h_m32 = NULL;
    ss_status st = batch_reduce(be, x, ld, row_idx, n, d, m2 != NULL, &b);
    if (!st) st = cu_download(be, mean, b.m64, (size_t)d * sizeof(double));
    if (!st && m2) {
        size_t dd = (size_t)(d * d);
        if (!(h_c = ss_malloc(dd * sizeof(float), "covariance")) || !(h_m32 = ss_malloc((size_t)d * sizeof(float), "means")))
            st = SS_ERR_NOMEM;
        if (!st) st = cu_download(be, h_m32, b.m32, (size_t)d * sizeof(float));
        if (!st) st = cu_download(be, h_c, b.cc, dd * sizeof(float));
        for (int64_t i = 0; !st && i < d; i++) {
            double ei = mean[i] - h_m32[i];
            for (int64_t j = 0; j <= i; j++) m2[i * d + j] = (double)h_c[i * d + j] - (double)n * ei * (mean[j] - h_m32[j]);
        }
    }
    batch_free(be, &b);
    free(h_c);
    free(h_m32);
    return st;
}

/* ---- statistics kept on the device across batches (collect) ---- */

struct ss_dev_moments {
    int64_t d, count;
    double *mean, *m2, *ws; /* [d], [d, d] lower triangle (NULL: means only), [2d] */
};

static void cu_moments_acc_free(const ss_backend *be, ss_dev_moments *a) {
    if (!a) return;
    if (a->mean) cu_release(be, a->mean);
    if (a->m2) cu_release(be, a->m2);
    if (a->ws) cu_release(be, a->ws);
    free(a);
}

static ss_status cu_zero(const ss_backend *be, void *p, size_t bytes) {
    if (!bytes) return SS_OK;
    CU(cudaMemsetAsync(p, 0, bytes, IMPL(be)->stream), "zero (cudaMemsetAsync)");
    return SS_OK;
}

static ss_status cu_moments_acc_create(const ss_backend *be, int64_t d, int want_m2, ss_dev_moments **out) {
    *out = NULL;
    ss_dev_moments *a = ss_calloc(1, sizeof *a, "device statistics");
    if (!a) return SS_ERR_NOMEM;
    a->d = d;
    size_t ws_bytes = 0, m2_bytes = 0;
    if (d < 0 || !ss_mul_ok((size_t)d, 2 * sizeof(double), &ws_bytes) ||
        (want_m2 && (!ss_mul_ok((size_t)d, (size_t)d, &m2_bytes) || !ss_mul_ok(m2_bytes, sizeof(double), &m2_bytes)))) {
        free(a);
        return ss_errorf(SS_ERR_NOMEM, "%s: statistics of %lld columns: %s in bytes overflow", be->name, (long long)d,
                         want_m2 ? "the co-moments (d x d doubles)" : "the scratch (2 d doubles)");
    }
    ss_status st;
    if ((st = cu_alloc(be, (size_t)d * sizeof(double), "statistics (mean)", (void **)&a->mean)) ||
        (st = cu_alloc(be, ws_bytes, "statistics (scratch)", (void **)&a->ws)) ||
        (want_m2 && (st = cu_alloc(be, m2_bytes, "statistics (co-moments)", (void **)&a->m2))) ||
        /* the merges write the lower triangle only; above it, zeros, as in the host's totals */
        (want_m2 && (st = cu_zero(be, a->m2, m2_bytes)))) {
        cu_moments_acc_free(be, a);
        return st;
    }
    *out = a;
    return SS_OK;
}

static ss_status cu_moments_acc_add(const ss_backend *be, ss_dev_moments *a, const float *x, int64_t ld,
                                   const int64_t *row_idx, int64_t n) {
    if (n <= 0) return SS_OK;
    if (a->count > INT64_MAX - n) return ss_errorf(SS_ERR_ARG, "%s: statistics: row count overflows int64", be->name);
    batch_moments b;
    ss_status st = batch_reduce(be, x, ld, row_idx, n, a->d, a->m2 != NULL, &b);
    if (!st)
        st = cuda_check(be, ss_cuda_moments_merge(a->mean, a->m2, a->d, b.m64, b.m32, b.cc, a->d, a->d, a->count, n, a->ws,
                                                  IMPL(be)->stream),
                        "statistics merge kernel");
    batch_free(be, &b); /* released blocks are reused only by later work on the same stream */
    if (!st) a->count += n;
    return st;
}

static ss_status cu_moments_acc_take(const ss_backend *be, ss_dev_moments *a, int64_t *count, double *mean, double *m2) {
    *count = a->count;
    if (a->count) {
        SS_TRY(cu_download(be, mean, a->mean, (size_t)a->d * sizeof(double)));
        if (a->m2 && m2) SS_TRY(cu_download(be, m2, a->m2, (size_t)(a->d * a->d) * sizeof(double)));
    }
    a->count = 0; /* the next merge overwrites */
    return SS_OK;
}

#ifdef SS_CUDA_PCA
/* PCA on the device: cuSOLVER's syevdx (64-bit API) for eigenvalues d-k+1..d
 * of the float64 matrix and their vectors. The row-major lower triangle is
 * the column-major upper one. */
static ss_status cu_pca_top(const ss_backend *be, const double *sym, int64_t d, int64_t k, double *values,
                            double *vectors) {
    cuda_impl *c = IMPL(be);
    if (!sym || !values || !vectors || d < 1 || k < 1 || k > d)
        return ss_errorf(SS_ERR_ARG, "pca: need 1 <= k <= d (k = %lld, d = %lld)", (long long)k, (long long)d);
    if (!c->solver) {
        if (cusolverDnCreate(&c->solver) != CUSOLVER_STATUS_SUCCESS) {
            c->solver = NULL;
            return ss_errorf(SS_ERR_IO, "%s (%s): cuSOLVER could not be initialised", be->name, c->device_name);
        }
        if (cusolverDnSetStream(c->solver, c->stream) != CUSOLVER_STATUS_SUCCESS)
            return ss_errorf(SS_ERR_IO, "%s: cusolverDnSetStream failed", be->name);
    }
    size_t dd = (size_t)d * (size_t)d, dev_bytes = 0, host_bytes = 0;
    double *a = NULL, *w = NULL, vl = 0, vu = 0, *wh = NULL;
    int *info_d = NULL, info = 0;
    void *work = NULL, *hwork = NULL;
    int64_t meig = 0;
    cusolverDnParams_t params = NULL;
    ss_status st = SS_OK;
    char what[96];
    snprintf(what, sizeof what, "PCA of a %lld x %lld matrix", (long long)d, (long long)d);
    if ((st = cu_alloc(be, dd * sizeof(double), what, (void **)&a)) ||
        (st = cu_alloc(be, (size_t)d * sizeof(double), what, (void **)&w)) ||
        (st = cu_alloc(be, sizeof(int), what, (void **)&info_d)))
        goto out;
    if ((st = cu_upload(be, a, sym, dd * sizeof(double)))) goto out;
    if (cusolverDnCreateParams(&params) != CUSOLVER_STATUS_SUCCESS) {
        params = NULL;
        st = ss_errorf(SS_ERR_NOMEM, "%s: cusolverDnCreateParams failed", be->name);
        goto out;
    }
    cusolverStatus_t e = cusolverDnXsyevdx_bufferSize(c->solver, params, CUSOLVER_EIG_MODE_VECTOR, CUSOLVER_EIG_RANGE_I,
                                                      CUBLAS_FILL_MODE_UPPER, d, CUDA_R_64F, a, d, &vl, &vu, d - k + 1, d,
                                                      &meig, CUDA_R_64F, w, CUDA_R_64F, &dev_bytes, &host_bytes);
    if (e != CUSOLVER_STATUS_SUCCESS) {
        st = ss_errorf(SS_ERR_IO, "%s: cuSOLVER syevdx workspace query for d = %lld failed (status %d)", be->name,
                       (long long)d, (int)e);
        goto out;
    }
    if ((st = cu_alloc(be, dev_bytes, "PCA workspace", &work))) goto out;
    /* syevdx's tridiagonalisation reads workspace words before it writes them
     * (compute-sanitizer's initcheck on an H100, CUDA 13.0); the values do
     * not reach the result, but zeroed buffers keep the sanitizer's report clean. */
    if ((st = cu_zero(be, work, dev_bytes)) || (st = cu_zero(be, w, (size_t)d * sizeof(double)))) goto out;
    if (host_bytes && !(hwork = ss_malloc(host_bytes, "PCA host workspace"))) { st = SS_ERR_NOMEM; goto out; }
    e = cusolverDnXsyevdx(c->solver, params, CUSOLVER_EIG_MODE_VECTOR, CUSOLVER_EIG_RANGE_I, CUBLAS_FILL_MODE_UPPER, d,
                          CUDA_R_64F, a, d, &vl, &vu, d - k + 1, d, &meig, CUDA_R_64F, w, CUDA_R_64F, work, dev_bytes,
                          hwork, host_bytes, info_d);
    if (e != CUSOLVER_STATUS_SUCCESS) {
        st = ss_errorf(SS_ERR_IO, "%s: cuSOLVER syevdx on d = %lld failed (status %d)", be->name, (long long)d, (int)e);
        goto out;
    }
    if ((st = cu_download(be, &info, info_d, sizeof info))) goto out;
    if (info != 0 || meig != k) {
        st = ss_errorf(SS_ERR_INTERNAL, "%s: cuSOLVER syevdx on d = %lld: info %d, %lld of %lld eigenvalues", be->name,
                       (long long)d, info, (long long)meig, (long long)k);
        goto out;
    }
    if (!(wh = ss_malloc((size_t)k * sizeof(double), "eigenvalues"))) { st = SS_ERR_NOMEM; goto out; }
    /* Ascending eigenvalues; column j of a (contiguous) is the vector of w[j]. */
    if ((st = cu_download(be, wh, w, (size_t)k * sizeof(double))) ||
        (st = cu_download(be, vectors, a, (size_t)k * (size_t)d * sizeof(double))))
        goto out;
    for (int64_t r = 0; r < k / 2; r++) { /* reverse the rows into descending order */
        double *x = vectors + r * d, *y = vectors + (k - 1 - r) * d;
        for (int64_t i = 0; i < d; i++) {
            double t = x[i];
            x[i] = y[i];
            y[i] = t;
        }
    }
    for (int64_t r = 0; r < k; r++) {
        values[r] = wh[k - 1 - r];
        ss_pca_fix_sign(vectors + r * d, d);
    }
out:
    if (params) cusolverDnDestroyParams(params);
    if (a) cu_release(be, a);
    if (w) cu_release(be, w);
    if (info_d) cu_release(be, info_d);
    if (work) cu_release(be, work);
    free(hwork);
    free(wh);
    return st;
}
#endif

static ss_status cu_sync(const ss_backend *be) {
    CU(cudaStreamSynchronize(IMPL(be)->stream), "synchronize");
    CU(cudaGetLastError(), "a kernel");
    return SS_OK;
}

/* A cuBLASLt plan: the descriptors of one product's shape, types and
 * epilogue, and the algorithm cuBLASLt's heuristic chose for it with the
 * backend's workspace. Made at a shape's first product and kept (up to
 * LT_PLANS, the oldest replaced), because cublasLtMatmul without an
 * algorithm runs the heuristic at every call, on the host, and without a
 * workspace may only choose algorithms that need none. Only the bias
 * pointer changes between calls. SUBSCOPE_LT_PLANS=0: the old way (no plan,
 * no workspace; to compare), SUBSCOPE_LT_WORKSPACE_MB: the workspace
 * (default 32; 0 none). */
#define LT_PLANS 64
typedef struct lt_plan {
    int64_t M, N, K;
    int t, tc, ct, epi, accumulate, trans_b, bias16, used;
    cublasLtMatmulDesc_t desc;
    cublasLtMatrixLayout_t ad, bd, cd;
    cublasLtMatmulAlgo_t algo;
} lt_plan;

static void lt_plan_free(lt_plan *p) {
    if (p->cd) cublasLtMatrixLayoutDestroy(p->cd);
    if (p->bd) cublasLtMatrixLayoutDestroy(p->bd);
    if (p->ad) cublasLtMatrixLayoutDestroy(p->ad);
    if (p->desc) cublasLtMatmulDescDestroy(p->desc);
    memset(p, 0, sizeof *p);
}

/* The descriptors of a product (desc without its bias pointer). bias32: a
 * 16-bit D whose bias is fp32, which cuBLASLt must be told (it reads the
 * bias as D's type otherwise). */
static cublasStatus_t lt_describe(cudaDataType tc, cudaDataType t, cublasComputeType_t ct, uint32_t epi, int bias32,
                                  int64_t M, int64_t N, int64_t K, int trans_b, cublasLtMatmulDesc_t *desc,
                                  cublasLtMatrixLayout_t *ad, cublasLtMatrixLayout_t *bd, cublasLtMatrixLayout_t *cd) {
    const int32_t ta = trans_b ? CUBLAS_OP_T : CUBLAS_OP_N, tb = CUBLAS_OP_N;
    cublasStatus_t s = cublasLtMatmulDescCreate(desc, ct, CUDA_R_32F);
    if (!s) s = cublasLtMatmulDescSetAttribute(*desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta);
    if (!s) s = cublasLtMatmulDescSetAttribute(*desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb);
    if (!s) s = cublasLtMatmulDescSetAttribute(*desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi);
    const int32_t bias_type = CUDA_R_32F;
    if (!s && bias32) s = cublasLtMatmulDescSetAttribute(*desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bias_type, sizeof bias_type);
    /* stored shapes, column-major: the weights N x K (ld K) transposed or N x K as [K,N] row-major (ld N) */
    if (!s) s = trans_b ? cublasLtMatrixLayoutCreate(ad, t, (uint64_t)K, (uint64_t)N, K)
                        : cublasLtMatrixLayoutCreate(ad, t, (uint64_t)N, (uint64_t)K, N);
    if (!s) s = cublasLtMatrixLayoutCreate(bd, t, (uint64_t)K, (uint64_t)M, K);
    if (!s) s = cublasLtMatrixLayoutCreate(cd, tc, (uint64_t)N, (uint64_t)M, N);
    return s;
}

static const char *lt_type_name(int t) {
    return t == CUDA_R_32F ? "fp32" : t == CUDA_R_16BF ? "bf16" : t == CUDA_R_16F ? "fp16" : "?";
}

/* SUBSCOPE_LT_LOG=1: a line per new plan, what cuBLASLt said to it. */
static void lt_log_plan(const cuda_impl *c, const lt_plan *p, int ok, cublasStatus_t s, size_t ws) {
    if (!c->lt_log) return;
    const int bias = p->epi == CUBLASLT_EPILOGUE_BIAS || p->epi == CUBLASLT_EPILOGUE_GELU_BIAS;
    const int gelu = p->epi == CUBLASLT_EPILOGUE_GELU || p->epi == CUBLASLT_EPILOGUE_GELU_BIAS;
    ss_eprintf("%s: cuBLASLt %lld x %lld x %lld, A/B %s, D %s%s%s%s%s: ", c->name, (long long)p->M,
               (long long)p->N, (long long)p->K, lt_type_name(p->t), lt_type_name(p->tc), gelu ? ", GELU" : "",
               bias ? (p->bias16 || p->tc == CUDA_R_32F ? ", bias in D's type" : ", fp32 bias") : "",
               p->accumulate ? ", adding into D" : "", p->ct == CUBLAS_COMPUTE_32F_FAST_TF32 ? ", TF32" : "");
    if (ok) ss_eprintf("an algorithm (workspace %zu bytes)\n", ws);
    else if (s) ss_eprintf("declined (%s)\n", cublasGetStatusString(s));
    else ss_eprintf("declined (no algorithm)\n");
}

/* The plan for a product, made (descriptors and heuristic) if new; NULL
 * where cuBLASLt has no algorithm for it or on an error (the caller falls
 * back to the old way, which then fails or not as it always did). */
static lt_plan *lt_plan_for(cuda_impl *c, cudaDataType tc, cudaDataType t, cublasComputeType_t ct, uint32_t epi,
                            int accumulate, int bias16, int64_t M, int64_t N, int64_t K, int trans_b) {
    for (int i = 0; i < c->n_plans; i++) {
        lt_plan *p = &c->plans[i];
        if (p->M == M && p->N == N && p->K == K && p->t == (int)t && p->tc == (int)tc && p->ct == (int)ct &&
            p->epi == (int)epi && p->accumulate == accumulate && p->trans_b == trans_b && p->bias16 == bias16)
            return p->used ? p : NULL; /* (not used: cuBLASLt declined the shape) */
    }
    if (!c->plans && !(c->plans = calloc(LT_PLANS, sizeof *c->plans))) return NULL;
    lt_plan *p = &c->plans[c->n_plans < LT_PLANS ? c->n_plans++ : c->next_plan];
    if (c->n_plans == LT_PLANS) c->next_plan = (int)((p - c->plans + 1) % LT_PLANS);
    const lt_plan key = {.M = M, .N = N, .K = K, .t = (int)t, .tc = (int)tc, .ct = (int)ct, .epi = (int)epi,
                         .accumulate = accumulate, .trans_b = trans_b, .bias16 = bias16, .used = 1};
    lt_plan_free(p);
    *p = key;
    if (c->lt_ws_bytes && !c->lt_ws && cu_alloc(c->self, c->lt_ws_bytes, "cuBLASLt workspace", &c->lt_ws))
        c->lt_ws_bytes = 0; /* no room: algorithms that need no workspace (the message is dropped) */
    const int bias = epi == CUBLASLT_EPILOGUE_BIAS || epi == CUBLASLT_EPILOGUE_GELU_BIAS;
    cublasStatus_t s = lt_describe(tc, t, ct, epi, bias && tc != CUDA_R_32F && !bias16, M, N, K, trans_b, &p->desc,
                                   &p->ad, &p->bd, &p->cd);
    /* the heuristic looks at the bias pointer's presence, not its value: any non-NULL one */
    const void *any = c->lt_ws ? c->lt_ws : (const void *)p;
    if (!s && bias) s = cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &any, sizeof any);
    cublasLtMatmulPreference_t pref = NULL;
    cublasLtMatmulHeuristicResult_t res;
    int found = 0;
    const uint64_t ws = c->lt_ws_bytes;
    if (!s) s = cublasLtMatmulPreferenceCreate(&pref);
    if (!s) s = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws);
    if (!s) s = cublasLtMatmulAlgoGetHeuristic(c->lt, p->desc, p->ad, p->bd, p->cd, p->cd, pref, 1, &res, &found);
    if (pref) cublasLtMatmulPreferenceDestroy(pref);
    const int ok = !s && found >= 1 && res.state == CUBLAS_STATUS_SUCCESS && res.workspaceSize <= ws;
    lt_log_plan(c, p, ok, s, ok ? (size_t)res.workspaceSize : 0);
    if (!ok) {
        lt_plan_free(p);
        *p = key;
        p->used = 0; /* remembered as declined: the same shape does not ask again */
        if (!(bias16 && c->bias16 < 0)) c->lt_declined++; /* (a retry's decline: its shape is counted) */
        return NULL;
    }
    p->algo = res.algo;
    if (bias16 && c->bias16 < 0) c->lt_bias16++; /* the fp32 bias was declined for this shape */
    return p;
}

/* The bias rounded to D's 16-bit type tc, in c->bias16buf: the product's
 * bias where cuBLASLt takes no fp32 bias with a 16-bit D (SUBSCOPE_BIAS16). */
static int bias_to16(cuda_impl *c, const float *bias, int64_t N, cudaDataType tc, const void **out) {
    if (scratch16(c->self, &c->bias16buf, &c->bias16cap, (size_t)N, "16-bit bias")) return 1;
    if (ss_cuda_convert(c->bias16buf, tc == CUDA_R_16F ? SS_CUDA_F16 : SS_CUDA_BF16, bias, SS_CUDA_F32, N, c->stream))
        return 1;
    *out = c->bias16buf;
    return 0;
}

/* One cuBLASLt product without a plan: its descriptors made and dropped
 * around the call; b16: the bias rounded to D's type first. */
static cublasStatus_t lt_matmul_once(cuda_impl *c, void *C, cudaDataType tc, const void *A, const void *B,
                                     cudaDataType t, cublasComputeType_t ct, uint32_t epi, const float *bias, int b16,
                                     int accumulate, int64_t M, int64_t N, int64_t K, int trans_b) {
    const float one = 1.f, zero = 0.f;
    const void *bp = bias;
    if (b16 && bias_to16(c, bias, N, tc, &bp)) return CUBLAS_STATUS_EXECUTION_FAILED;
    cublasLtMatmulDesc_t desc = NULL;
    cublasLtMatrixLayout_t ad = NULL, bd = NULL, cd = NULL;
    cublasStatus_t s = lt_describe(tc, t, ct, epi, bias && tc != CUDA_R_32F && !b16, M, N, K, trans_b, &desc, &ad,
                                   &bd, &cd);
    if (!s && bias) s = cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bp, sizeof bp);
    if (!s) s = cublasLtMatmul(c->lt, desc, &one, B, ad, A, bd, accumulate ? &one : &zero, C, cd, C, cd, NULL, NULL, 0,
                               c->stream);
    if (cd) cublasLtMatrixLayoutDestroy(cd);
    if (bd) cublasLtMatrixLayoutDestroy(bd);
    if (ad) cublasLtMatrixLayoutDestroy(ad);
    if (desc) cublasLtMatmulDescDestroy(desc);
    return s;
}

/* Row-major C[M,N] = A[M,K]·op(B) is column-major C^T = op(B)^T·A^T, so
 * cuBLAS and cuBLASLt are called with the operands swapped.
 *
 * lt_matmul: C = act(A op(B) + bias) (+ C with accumulate) through
 * cuBLASLt (lt_matmul_to: C of type tc, fp32 or, without accumulate, 16-bit), the bias and the GELU (tanh) in the product's epilogue instead of
 * a pass of the bias kernel over C (one read and one write of C saved). A is
 * of type t, fp32 or the weights' 16-bit type; B the weights, [N,K]
 * (trans_b) or [K,N]. Returns cuBLASLt's status; the caller falls back on
 * anything but success. */
static cublasStatus_t lt_matmul_to(cuda_impl *c, void *C, cudaDataType tc, const void *A, const void *B, cudaDataType t,
                                   const float *bias, int gelu, int accumulate, int64_t M, int64_t N, int64_t K,
                                   int trans_b) {
    const uint32_t epi = bias ? (gelu ? CUBLASLT_EPILOGUE_GELU_BIAS : CUBLASLT_EPILOGUE_BIAS)
                              : (gelu ? CUBLASLT_EPILOGUE_GELU : CUBLASLT_EPILOGUE_DEFAULT);
    const float one = 1.f, zero = 0.f;
    /* fp32 products follow the handle's TF32 switch, as cublasSgemm does */
    cublasComputeType_t ct = t == CUDA_R_32F && c->tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
    /* A 16-bit D's bias: fp32 (cuBLASLt told so), or rounded to D's type first:
     * always with SUBSCOPE_BIAS16=1, never with 0, by default where cuBLASLt
     * declines the fp32 one. */
    const int d16_bias = bias && tc != CUDA_R_32F;
    int b16 = d16_bias && c->bias16 == 1;
    const void *bp = bias;
    if (c->use_plans) {
        lt_plan *p = lt_plan_for(c, tc, t, ct, epi, accumulate, b16, M, N, K, trans_b);
        if (!p && d16_bias && c->bias16 < 0) {
            if ((p = lt_plan_for(c, tc, t, ct, epi, accumulate, 1, M, N, K, trans_b))) b16 = 1;
        }
        if (!p) return CUBLAS_STATUS_NOT_SUPPORTED; /* the caller's fallback: cuBLAS and the bias kernel */
        if (b16 && bias_to16(c, bias, N, tc, &bp)) return CUBLAS_STATUS_EXECUTION_FAILED;
        cublasStatus_t s = bias ? cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bp, sizeof bp)
                                : CUBLAS_STATUS_SUCCESS;
        if (!s)
            s = cublasLtMatmul(c->lt, p->desc, &one, B, p->ad, A, p->bd, accumulate ? &one : &zero, C, p->cd, C, p->cd,
                               &p->algo, c->lt_ws, c->lt_ws_bytes, c->stream);
        return s;
    }
    /* no plans (SUBSCOPE_LT_PLANS=0, to compare): descriptors for this call alone;
     * counted per call, where plans count per shape */
    cublasStatus_t s = lt_matmul_once(c, C, tc, A, B, t, ct, epi, bias, b16, accumulate, M, N, K, trans_b);
    if (s != CUBLAS_STATUS_SUCCESS && d16_bias && c->bias16 < 0 && !b16) {
        c->lt_declined++; /* the fp32 bias */
        s = lt_matmul_once(c, C, tc, A, B, t, ct, epi, bias, 1, accumulate, M, N, K, trans_b);
        if (s == CUBLAS_STATUS_SUCCESS) c->lt_bias16++;
    } else if (s != CUBLAS_STATUS_SUCCESS) {
        c->lt_declined++;
    }
    return s;
}

static cublasStatus_t lt_matmul(cuda_impl *c, float *C, const void *A, const void *B, cudaDataType t, const float *bias,
                                int gelu, int accumulate, int64_t M, int64_t N, int64_t K, int trans_b) {
    return lt_matmul_to(c, C, CUDA_R_32F, A, B, t, bias, gelu, accumulate, M, N, K, trans_b);
}

/* *buf holds at least n 16-bit elements (grown as needed; *cap in elements). */
static ss_status scratch16(const ss_backend *be, uint16_t **buf, size_t *cap, size_t n, const char *what) {
    if (n <= *cap) return SS_OK;
    if (*buf) cu_release(be, *buf);
    *buf = NULL;
    *cap = 0;
    SS_TRY(cu_alloc(be, n * sizeof(uint16_t), what, (void **)buf));
    *cap = n;
    return SS_OK;
}

/* c->a16 = x [M, K] in the 16-bit type t16 (SS_CUDA_F16 or SS_CUDA_BF16),
 * converted, or with nw normalised first (RMSNorm with rms, else LayerNorm
 * with nb; fp32 weights), rounded to nearest even either way: the 16-bit
 * operand of the products below. */
static ss_status rows16(const ss_backend *be, const float *x, const float *nw, const float *nb, float eps, int rms,
                        int64_t M, int64_t K, int t16) {
    cuda_impl *c = IMPL(be);
    SS_TRY(scratch16(be, &c->a16, &c->a16_cap, (size_t)(M * K), "bf16 activations"));
    if (!nw) KL(ss_cuda_convert(c->a16, t16, x, SS_CUDA_F32, M * K, c->stream), "16-bit conversion");
    else
        KL(rms ? ss_cuda_rmsnorm_to(c->a16, t16, x, nw, SS_CUDA_F32, M, K, eps, c->stream)
               : ss_cuda_layernorm_to(c->a16, t16, x, nw, nb, SS_CUDA_F32, M, K, eps, c->stream),
           "norm kernel (16-bit output)");
    return SS_OK;
}

/* The end of a product that cuBLAS (not cuBLASLt) ran: its status checked,
 * then the bias and the activation in one pass of the bias kernel. */
static ss_status product_done(const ss_backend *be, cublasStatus_t s, float *C, const float *bias, int64_t M,
                              int64_t N, int64_t K, int b_dtype, int act) {
    if (s != CUBLAS_STATUS_SUCCESS)
        return ss_errorf(SS_ERR_IO, "%s: cuBLAS product (%lld x %lld x %lld, %s): %s", be->name, (long long)M,
                         (long long)N, (long long)K,
                         b_dtype == SS_WDTYPE_BF16 ? "bf16" : b_dtype == SS_WDTYPE_F16 ? "fp16" : "fp32",
                         cublasGetStatusString(s));
    if (bias || act != SS_CUDA_ACT_NONE)
        KL(ss_cuda_bias_act(C, C, bias, SS_CUDA_F32, M, N, act, IMPL(be)->stream),
           act == SS_CUDA_ACT_NONE ? "bias" : "bias + GELU");
    return SS_OK;
}

/* cuBLAS's tensor-core kernels move 16-byte vectors: an fp32 C whose rows
 * are not a multiple of 4 floats (GPT-2's vocabulary of 50257: the
 * unembedding) gets slow fallback kernels. On an H100 (kernel_bench,
 * 16384 x 50257 x 768) bf16 ran at 97 TFLOP/s and TF32 at 131, where the
 * aligned products of the same model reach 490-810 and 260-400. Such a
 * product without bias or accumulation (t: CUDA_R_32F under the handle's
 * TF32 switch, or the 16-bit type of A and B) writes its rows padded to a
 * multiple of 8 floats into a scratch buffer, at most c->pad_bytes at a time,
 * and the capture kernel packs them into C (the products' values are the
 * same; the packing reads and writes C once more). */
static int wants_padding(const cuda_impl *c, const float *bias, int act, int accumulate, int64_t M, int64_t N) {
    return c->pad_bytes && N % 4 && !bias && act == SS_CUDA_ACT_NONE && !accumulate && M >= 64;
}

static ss_status product_padded(const ss_backend *be, float *C, const void *A, const void *B, cudaDataType t,
                                int64_t M, int64_t N, int64_t K, int trans_b, int b_dtype) {
    cuda_impl *c = IMPL(be);
    const int64_t Np = (N + 7) / 8 * 8;
    int64_t chunk = (int64_t)(c->pad_bytes / ((size_t)Np * sizeof(float)));
    chunk = chunk < 1 ? 1 : chunk > M ? M : chunk;
    SS_TRY(scratch16(be, &c->padc, &c->padc_cap, (size_t)(chunk * Np) * 2, "padded product rows"));
    float *P = (float *)c->padc;
    const size_t esz = t == CUDA_R_32F ? sizeof(float) : sizeof(uint16_t);
    const float zero = 0.f;
    for (int64_t r0 = 0; r0 < M; r0 += chunk) {
        const int64_t m = M - r0 < chunk ? M - r0 : chunk;
        const void *Ar = (const char *)A + (size_t)(r0 * K) * esz;
        cublasStatus_t s = ss_gemm_rows(c->blas, c->split, t, trans_b, m, N, K, Ar, B, &zero, P, Np);
        SS_TRY(product_done(be, s, P, NULL, m, N, K, b_dtype, SS_CUDA_ACT_NONE));
        KL(ss_cuda_capture(C + r0 * N, P, Np, NULL, m, N, c->stream), "capture kernel (padded product rows)");
    }
    return SS_OK;
}

/* cu_product's 16-bit half (below) from activations already in the weights'
 * 16-bit type, A16 [M, K]: cuBLASLt with the bias and GELU in its epilogue,
 * or cublasGemmEx and the bias kernel; fp32 accumulation and C. */
static ss_status product16(const ss_backend *be, float *C, const uint16_t *A16, const void *B, int b_dtype,
                           const float *bias, int64_t M, int64_t N, int64_t K, int trans_b, int act, int accumulate) {
    cuda_impl *c = IMPL(be);
    const cudaDataType t16 = b_dtype == SS_WDTYPE_F16 ? CUDA_R_16F : CUDA_R_16BF;
    if (wants_padding(c, bias, act, accumulate, M, N)) return product_padded(be, C, A16, B, t16, M, N, K, trans_b, b_dtype);
    const int lt = c->lt && (bias || act == SS_CUDA_GELU_TANH) && act != SS_CUDA_GELU_ERF;
    if (lt && lt_matmul(c, C, A16, B, t16, bias, act == SS_CUDA_GELU_TANH, accumulate, M, N, K, trans_b) ==
                  CUBLAS_STATUS_SUCCESS)
        return SS_OK;
    const float one = 1.f, zero = 0.f, *beta = accumulate ? &one : &zero;
    cublasStatus_t s = ss_gemm_rows(c->blas, c->split, t16, trans_b, M, N, K, A16, B, beta, C, N);
    return product_done(be, s, C, bias, M, N, K, b_dtype, act);
}

/* C = act(A op(B) + bias), act one of SS_CUDA_GELU_TANH, _ERF, _ACT_NONE, or
 * with accumulate (act none) C += A op(B) + bias: the product by cuBLAS (beta
 * 1 to accumulate), then the bias and the activation in one pass of the bias
 * kernel; or all of it in cuBLASLt (16-bit weights, or SUBSCOPE_BIAS_EPILOGUE=1;
 * tanh GELU only), falling back to the former where cuBLASLt declines. */
static ss_status cu_product(const ss_backend *be, float *C, const float *A, const void *B, int b_dtype,
                            const float *bias, int64_t M, int64_t N, int64_t K, int trans_b, int act, int accumulate) {
    if (M <= 0 || N <= 0) return SS_OK;
    if (M > INT32_MAX || N > INT32_MAX || K > INT32_MAX)
        return ss_errorf(SS_ERR_UNSUPPORTED, "%s: matrix product %lld x %lld x %lld exceeds cuBLAS's 32-bit sizes",
                         be->name, (long long)M, (long long)N, (long long)K);
    cuda_impl *c = IMPL(be);
    const int lt32 = c->lt && c->epilogue == 1 && (bias || act == SS_CUDA_GELU_TANH) && act != SS_CUDA_GELU_ERF;
    if (b_dtype == SS_WDTYPE_BF16 || b_dtype == SS_WDTYPE_F16) {
        /* Tensor cores take both operands in the weights' 16-bit type: round
         * the activations into a scratch buffer, accumulate and write C in fp32. */
        SS_TRY(rows16(be, A, NULL, NULL, 0.f, 0, M, K, b_dtype == SS_WDTYPE_F16 ? SS_CUDA_F16 : SS_CUDA_BF16));
        return product16(be, C, c->a16, B, b_dtype, bias, M, N, K, trans_b, act, accumulate);
    }
    if (b_dtype != SS_WDTYPE_F32)
        return ss_errorf(SS_ERR_UNSUPPORTED, "%s: matrix products with weight dtype %d", be->name, b_dtype);
    if (lt32 && lt_matmul(c, C, A, B, CUDA_R_32F, bias, act == SS_CUDA_GELU_TANH, accumulate, M, N, K, trans_b) ==
                  CUBLAS_STATUS_SUCCESS)
        return SS_OK;
    if (c->tf32 && wants_padding(c, bias, act, accumulate, M, N)) /* fp32 SIMT kernels do not mind */
        return product_padded(be, C, A, B, CUDA_R_32F, M, N, K, trans_b, b_dtype);
    const float one = 1.f, zero = 0.f, *beta = accumulate ? &one : &zero;
    cublasStatus_t s = ss_gemm_rows(c->blas, c->split && c->tf32, CUDA_R_32F, trans_b, M, N, K, A, B, beta, C, N);
    return product_done(be, s, C, bias, M, N, K, b_dtype, act);
}

static ss_status cu_matmul(const ss_backend *be, float *C, const float *A, const void *B, int b_dtype,
                           const float *bias, int64_t M, int64_t N, int64_t K, int trans_b) {
    return cu_product(be, C, A, B, b_dtype, bias, M, N, K, trans_b, SS_CUDA_ACT_NONE, 0);
}

static ss_status cu_matmul_add(const ss_backend *be, float *C, const float *A, const void *B, int b_dtype,
                               const float *bias, int64_t M, int64_t N, int64_t K, int trans_b) {
    return cu_product(be, C, A, B, b_dtype, bias, M, N, K, trans_b, SS_CUDA_ACT_NONE, 1);
}

static ss_status cu_matmul_gelu(const ss_backend *be, float *C, const float *A, const void *B, int b_dtype,
                                const float *bias, int64_t M, int64_t N, int64_t K, int trans_b, ss_act act) {
    return cu_product(be, C, A, B, b_dtype, bias, M, N, K, trans_b,
                      act == SS_ACT_GELU_ERF ? SS_CUDA_GELU_ERF : SS_CUDA_GELU_TANH, 0);
}

static ss_status cu_layernorm(const ss_backend *be, float *out, const float *x, const float *w, const float *b,
                              int64_t rows, int64_t d, float eps) {
    KL(ss_cuda_layernorm(out, x, w, b, SS_CUDA_F32, rows, d, eps, IMPL(be)->stream), "layernorm kernel");
    return SS_OK;
}

static ss_status cu_gelu(const ss_backend *be, float *out, const float *x, int64_t n, ss_act act) {
    int a = act == SS_ACT_GELU_ERF ? SS_CUDA_GELU_ERF : SS_CUDA_GELU_TANH;
    KL(ss_cuda_bias_act(out, x, NULL, SS_CUDA_F32, 1, n, a, IMPL(be)->stream), "GELU kernel");
    return SS_OK;
}

static ss_status cu_add(const ss_backend *be, float *out, const float *a, const float *b, int64_t n) {
    KL(ss_cuda_add(out, a, b, n, IMPL(be)->stream), "add kernel");
    return SS_OK;
}

static ss_status cu_embed(const ss_backend *be, float *tok_out, float *pos_out, const int32_t *tokens,
                          const int32_t *pos, const void *wte, const void *wpe, int wdtype, int64_t n, int64_t d) {
    /* Ids were validated by the forward pass; the vocabulary bound only guards the kernel.
     * Without a position table (rotary models) only the token rows are written. */
    KL(ss_cuda_embed(tok_out, wpe ? pos_out : NULL, NULL, tokens, pos, wte, wpe, wdtype, INT32_MAX, INT32_MAX, n, d,
                     IMPL(be)->stream),
       "embedding kernel");
    return SS_OK;
}

static ss_status cu_rmsnorm(const ss_backend *be, float *out, const float *x, const float *w, int64_t rows, int64_t d,
                            float eps) {
    KL(ss_cuda_rmsnorm(out, x, w, SS_CUDA_F32, rows, d, eps, IMPL(be)->stream), "rmsnorm kernel");
    return SS_OK;
}

/* RMSNorm (rms) or LayerNorm of x's rows into out, fp32. */
static ss_status cu_norm(const ss_backend *be, float *out, const float *x, const float *nw, const float *nb, float eps,
                         int rms, int64_t rows, int64_t d) {
    return rms ? cu_rmsnorm(be, out, x, nw, rows, d, eps) : cu_layernorm(be, out, x, nw, nb, rows, d, eps);
}

/* The ops table's mlp_add (SUBSCOPE_MLP16, SS_LOWP16_MLP), for 16-bit weights: the MLP's
 * activation output goes straight into the weights' 16-bit type, into which
 * the down projection rounds it anyway (the same numbers as the separate
 * ops, without the fp32 intermediate and its conversion pass):
 *   GPT-2, x += GELU(a W1 + b1) W2 + b2: cuBLASLt's GELU_BIAS epilogue writes
 *   it (tanh GELU only);
 *   Llama, x += SwiGLU(a W1 + b1) W2 + b2: gate|up in fp32 into pre, then the
 *   SwiGLU kernel writes it, and product16 reads it. With SUBSCOPE_GU16 on
 *   the gate|up product writes its output in the 16-bit type too (cuBLASLt)
 *   and the SwiGLU kernel reads that: half the product's write and the
 *   kernel's read, at the price of one rounding more (gate and up rounded
 *   before SwiGLU, as a bf16 model in PyTorch has them).
 * With nw the input rows are norm(x), which the norm kernel writes in 16 bits
 * for the first product (rows16, as norm_matmul does): no fp32 rows and no
 * conversion pass either. Otherwise (fp32 weights, the erf GELU, cuBLASLt
 * declining) the separate ops run, through a (the norm's rows), pre and post. */
static ss_status cu_mlp_add(const ss_backend *be, float *x, float *pre, float *post, float *a, const float *nw,
                            const float *nb, float eps, int rms, const void *w1, const float *b1, const void *w2,
                            const float *b2, int wdtype, int64_t rows, int64_t d, int64_t dm, int trans_b, ss_act act) {
    cuda_impl *c = IMPL(be);
    const int w16 = wdtype == SS_WDTYPE_BF16 || wdtype == SS_WDTYPE_F16, f16 = wdtype == SS_WDTYPE_F16;
    const int t16 = f16 ? SS_CUDA_F16 : SS_CUDA_BF16;
    const int fits = rows > 0 && rows <= INT32_MAX && d <= INT32_MAX && 2 * dm <= INT32_MAX;
    const int silu16 = act == SS_ACT_SILU && w16 && fits;
    const int gelu16 = c->lt && w16 && act == SS_ACT_GELU_TANH && fits;
    if (silu16 || gelu16) SS_TRY(rows16(be, nw ? x : a, nw, nb, eps, rms, rows, d, t16));
    else if (nw) SS_TRY(cu_norm(be, a, x, nw, nb, eps, rms, rows, d)); /* the separate ops' fp32 rows */
    if (silu16) {
        SS_TRY(scratch16(be, &c->h16, &c->h16_cap, (size_t)(rows * dm), "16-bit MLP activations"));
        const cudaDataType ct16 = f16 ? CUDA_R_16F : CUDA_R_16BF;
        int gu_done = 0;
        if (c->gu16_on && c->lt) {
            SS_TRY(scratch16(be, &c->gu16, &c->gu16_cap, (size_t)(rows * 2 * dm), "16-bit gate|up product"));
            gu_done = lt_matmul_to(c, c->gu16, ct16, c->a16, w1, ct16, b1, 0, 0, rows, 2 * dm, d, trans_b) ==
                      CUBLAS_STATUS_SUCCESS;
        }
        if (gu_done) {
            KL(ss_cuda_swiglu_16from16(c->h16, t16, c->gu16, rows, dm, c->stream), "SwiGLU kernel (16-bit in and out)");
        } else {
            SS_TRY(product16(be, pre, c->a16, w1, wdtype, b1, rows, 2 * dm, d, trans_b, SS_CUDA_ACT_NONE, 0));
            KL(ss_cuda_swiglu_16(c->h16, t16, pre, rows, dm, c->stream), "SwiGLU kernel (16-bit output)");
        }
        return product16(be, x, c->h16, w2, wdtype, b2, rows, d, dm, trans_b, SS_CUDA_ACT_NONE, 1);
    }
    if (act == SS_ACT_SILU) {
        SS_TRY(cu_matmul(be, pre, a, w1, wdtype, b1, rows, 2 * dm, d, trans_b));
        KL(ss_cuda_swiglu(post, pre, rows, dm, c->stream), "SwiGLU kernel");
        return cu_matmul_add(be, x, post, w2, wdtype, b2, rows, d, dm, trans_b);
    }
    if (gelu16) {
        const cudaDataType ct16 = f16 ? CUDA_R_16F : CUDA_R_16BF;
        SS_TRY(scratch16(be, &c->h16, &c->h16_cap, (size_t)(rows * dm), "16-bit MLP activations"));
        if (lt_matmul_to(c, c->h16, ct16, c->a16, w1, ct16, b1, 1, 0, rows, dm, d, trans_b) == CUBLAS_STATUS_SUCCESS &&
            lt_matmul(c, x, c->h16, w2, ct16, b2, 0, 1, rows, d, dm, trans_b) == CUBLAS_STATUS_SUCCESS)
            return SS_OK;
        if (nw) SS_TRY(cu_norm(be, a, x, nw, nb, eps, rms, rows, d)); /* cuBLASLt declined: fp32 rows after all */
    }
    SS_TRY(cu_matmul_gelu(be, post, a, w1, wdtype, b1, rows, dm, d, trans_b, act));
    return cu_matmul_add(be, x, post, w2, wdtype, b2, rows, d, dm, trans_b);
}

/* The ops table's norm_matmul (SUBSCOPE_NORM16, SS_LOWP16_NORM): with 16-bit weights the
 * norm kernel writes its rows straight into the product's 16-bit operand
 * (the conversion kernel's rounding of the same fp32 values), and product16
 * makes the call cu_product makes after its conversion: the same numbers
 * without the fp32 rows and the conversion pass. Otherwise the norm into
 * scratch, then cu_product. */
static ss_status cu_norm_matmul(const ss_backend *be, float *C, float *scratch, const float *x, const float *nw,
                                const float *nb, float eps, int rms, const void *W, int wdtype, const float *bias,
                                int64_t M, int64_t N, int64_t K, int trans_b, int gelu, ss_act act) {
    cuda_impl *c = IMPL(be);
    const int cact = !gelu ? SS_CUDA_ACT_NONE : act == SS_ACT_GELU_ERF ? SS_CUDA_GELU_ERF : SS_CUDA_GELU_TANH;
    if ((wdtype == SS_WDTYPE_BF16 || wdtype == SS_WDTYPE_F16) && M > 0 && M <= INT32_MAX && N <= INT32_MAX &&
        K <= INT32_MAX) {
        const int t16 = wdtype == SS_WDTYPE_F16 ? SS_CUDA_F16 : SS_CUDA_BF16;
        SS_TRY(rows16(be, x, nw, nb, eps, rms, M, K, t16));
        return product16(be, C, c->a16, W, wdtype, bias, M, N, K, trans_b, cact, 0);
    }
    SS_TRY(cu_norm(be, scratch, x, nw, nb, eps, rms, M, K));
    return cu_product(be, C, scratch, W, wdtype, bias, M, N, K, trans_b, cact, 0);
}

static ss_status cu_rope(const ss_backend *be, float *x, int64_t ld, int64_t rows, int64_t n_heads, int64_t dh,
                         const int32_t *pos, const float *inv_freq, int inverse) {
    int rc = ss_cuda_rope(x, ld, rows, n_heads, dh, pos, inv_freq, inverse, IMPL(be)->stream);
    if (rc == cudaErrorInvalidValue)
        return ss_errorf(SS_ERR_ARG, "%s: rope: head width %lld (must be even and >= 2) with %lld heads in rows of "
                         "%lld floats, or no position/frequency buffer", be->name, (long long)dh, (long long)n_heads,
                         (long long)ld);
    KL(rc, "rope kernel");
    return SS_OK;
}

static ss_status cu_swiglu(const ss_backend *be, float *out, const float *gu, int64_t rows, int64_t dm) {
    KL(ss_cuda_swiglu(out, gu, rows, dm, IMPL(be)->stream), "swiglu kernel");
    return SS_OK;
}

/* Puts [start | len | third] of n_seq sequences in c->meta: the layers of
 * a pass share one packing, so a pass uploads (and waits for the stream) once
 * rather than at every layer, and the host can run ahead of the device.
 * third NULL: that part is not used, so not compared. */
static ss_status meta_put(const ss_backend *be, int64_t n_seq, const int64_t *start, const int64_t *len,
                          const int64_t *third) {
    cuda_impl *c = IMPL(be);
    size_t need = (size_t)(3 * n_seq);
    int64_t *t;
    SS_TRY(table_next(be, &c->meta, need, "attention metadata", &t));
    for (int64_t s = 0; s < n_seq; s++) t[s] = start[s], t[n_seq + s] = len[s], t[2 * n_seq + s] = third ? third[s] : 0;
    return table_put(be, &c->meta, need, third ? need : (size_t)(2 * n_seq));
}

/* Strided-batched Sgemm on the backend's stream (the handle's math mode:
 * fp32, or TF32 when asked for), its status as an error naming the step. */
static ss_status sgemm_batched_beta(const ss_backend *be, const char *what, cublasOperation_t ta, cublasOperation_t tb,
                                    int64_t m, int64_t n, int64_t k, float alpha, const float *A, int64_t lda,
                                    int64_t sa, const float *B, int64_t ldb, int64_t sb, float beta, float *C,
                                    int64_t ldc, int64_t sc, int64_t batch) {
    cublasStatus_t st = cublasSgemmStridedBatched(IMPL(be)->blas, ta, tb, (int)m, (int)n, (int)k, &alpha, A, (int)lda,
                                                  sa, B, (int)ldb, sb, &beta, C, (int)ldc, sc, (int)batch);
    if (st != CUBLAS_STATUS_SUCCESS)
        return ss_errorf(SS_ERR_IO, "%s: attention %s (cublasSgemmStridedBatched %lld x %lld x %lld, %lld heads): %s",
                         be->name, what, (long long)m, (long long)n, (long long)k, (long long)batch,
                         cublasGetStatusString(st));
    return SS_OK;
}

static ss_status sgemm_batched(const ss_backend *be, const char *what, cublasOperation_t ta, cublasOperation_t tb,
                               int64_t m, int64_t n, int64_t k, float alpha, const float *A, int64_t lda, int64_t sa,
                               const float *B, int64_t ldb, int64_t sb, float *C, int64_t ldc, int64_t sc,
                               int64_t batch) {
    return sgemm_batched_beta(be, what, ta, tb, m, n, k, alpha, A, lda, sa, B, ldb, sb, 0.f, C, ldc, sc, batch);
}

/* Attention of one sequence through cuBLAS: for each batch of heads, the
 * scores S = scale Q K^T ([heads, L, L] row-major), the causal softmax in
 * place, then Z = P V, the products strided-batched over heads. Row-major
 * Q_h [L, dh] (row stride ld) is the column-major dh x L matrix cuBLAS sees,
 * so S^T = K Q^T is Sgemm(T, N) and Z^T = V^T P^T is Sgemm(N, N). With GQA,
 * query heads g, g + group, ... share strides: a batch is the heads of one g.
 * buf holds the probabilities: the pattern itself ([H, L, L], every head at
 * once) when it was asked for, else scratch for hc heads at a time. */
static ss_status attention_gemm_seq(const ss_backend *be, float *z, const float *q, const float *k, const float *v,
                                    int64_t ld, int64_t r0, int64_t L, int64_t H, int64_t Hkv, int64_t dh, float scale,
                                    float *buf, int is_pattern, int64_t hc) {
    const int64_t group = H / Hkv, LL = L * L, ldz = H * dh;
    const float *q0 = q + r0 * ld, *k0 = k + r0 * ld, *v0 = v + r0 * ld;
    float *z0 = z + r0 * ldz;
    if (is_pattern) { /* every head at once: the scores of each g, one softmax over all H L rows, the values */
        for (int64_t g = 0; g < group; g++)
            SS_TRY(sgemm_batched(be, "scores", CUBLAS_OP_T, CUBLAS_OP_N, L, L, dh, scale, k0, ld, dh, q0 + g * dh, ld,
                                 group * dh, buf + g * LL, L, group * LL, Hkv));
        KL(ss_cuda_softmax_causal(buf, H * L, L, IMPL(be)->stream), "causal softmax kernel");
        for (int64_t g = 0; g < group; g++)
            SS_TRY(sgemm_batched(be, "values", CUBLAS_OP_N, CUBLAS_OP_N, dh, L, L, 1.f, v0, ld, dh, buf + g * LL, L,
                                 group * LL, z0 + g * dh, ldz, group * dh, Hkv));
        return SS_OK;
    }
    /* scratch for hc heads: heads h0, h0 + group, ... of one g, one after another */
    for (int64_t g = 0; g < group; g++)
        for (int64_t j0 = 0; j0 < Hkv; j0 += hc) {
            const int64_t jn = hc < Hkv - j0 ? hc : Hkv - j0, h0 = j0 * group + g;
            SS_TRY(sgemm_batched(be, "scores", CUBLAS_OP_T, CUBLAS_OP_N, L, L, dh, scale, k0 + j0 * dh, ld, dh,
                                 q0 + h0 * dh, ld, group * dh, buf, L, LL, jn));
            KL(ss_cuda_softmax_causal(buf, jn * L, L, IMPL(be)->stream), "causal softmax kernel");
            SS_TRY(sgemm_batched(be, "values", CUBLAS_OP_N, CUBLAS_OP_N, dh, L, L, 1.f, v0 + j0 * dh, ld, dh, buf, L, LL,
                                 z0 + h0 * dh, ldz, group * dh, jn));
        }
    return SS_OK;
}

/* The variables of the 16-bit paths (ss_backend.lowp16; GU16 has no bit: it
 * is the backend's own, Llama's mlp_add only). */
static const struct { const char *var; unsigned bit; } l16[] = {
    {"SUBSCOPE_MLP16", SS_LOWP16_MLP}, {"SUBSCOPE_NORM16", SS_LOWP16_NORM},
    {"SUBSCOPE_QKV16", SS_LOWP16_QKV}, {"SUBSCOPE_Z16", SS_LOWP16_Z}, {"SUBSCOPE_GU16", 0}};

/* The tensor-core kernel's query tiles per warp (SUBSCOPE_ATTN_QT, checked when the backend opened). */
static ss_status attn_qt(const ss_backend *be, int *qt) {
    *qt = IMPL(be)->attn_qt;
    return SS_OK;
}

/* Whether the tensor-core attention may write z in bf16 into c->a16 for the
 * output product o (o->z16, SS_LOWP16_Z): bf16 weights, z's rows all the
 * product's rows, sizes cuBLAS takes. */
static int z16_for(const ss_attn_out *o, int64_t n_rows, int64_t zw) {
    return o && o->z16 && o->wdtype == SS_WDTYPE_BF16 && n_rows == o->rows && o->rows <= INT32_MAX &&
           o->d <= INT32_MAX && zw <= INT32_MAX;
}

/* The output product of an attention op (ss_attn_out): from the bf16 z the
 * kernel left in c->a16 (used16), the same call matmul_add makes after its
 * conversion of z, so the same numbers; else matmul_add itself. */
static ss_status attn_out_product(const ss_backend *be, const float *z, int used16, const ss_attn_out *o, int64_t zw) {
    if (used16)
        return product16(be, o->x, IMPL(be)->a16, o->w, o->wdtype, o->bias, o->rows, o->d, zw, o->trans_b,
                         SS_CUDA_ACT_NONE, 1);
    return cu_matmul_add(be, o->x, z, o->w, o->wdtype, o->bias, o->rows, o->d, zw, o->trans_b);
}

/* Attention (the ops table's op, named in errors); with tc, on tensor cores where the pattern is
 * not wanted and the shape is one the kernel takes (bf16 Q, K, V and probabilities). With
 * out, the tensor-core kernel writes z in bf16 into c->a16 instead where
 * z16_for allows, and says so in *used16. */
static ss_status attention_any(const ss_backend *be, const char *op, float *z, const float *q, const float *k,
                               const float *v, int64_t ld_qkv, int64_t n_seq, const int64_t *start, const int64_t *len,
                               int64_t H, int64_t Hkv, int64_t dh, float scale, float *pattern_out,
                               const int64_t *pattern_off, int tc, const ss_attn_out *out, int *used16) {
    cuda_impl *c = IMPL(be);
    if (used16) *used16 = 0;
    if (Hkv < 1 || H % Hkv)
        return ss_errorf(SS_ERR_ARG, "%s: %s: %lld key/value heads do not divide %lld heads", be->name, op,
                         (long long)Hkv, (long long)H);
    SS_TRY(ss_attn_seqs_check(be, op, n_seq, start, len, -1)); /* n_rows below is start + len */
    int64_t max_len = 0;
    for (int64_t s = 0; s < n_seq; s++)
        if (len[s] > max_len) max_len = len[s];
    /* Tensor cores come before the cuBLAS path, which they replace at every
     * length (an H100, a layer of 16 x 1024 tokens with GPT-2 small's heads:
     * the first tensor-core kernel took 1.25 ms against the fp32 flash
     * kernel's 3.5, and the bf16 forward went from 359k tokens/s with the
     * cuBLAS path to 581k; kernels/flash_attention_tc.cu, which replaced it,
     * takes 0.304 ms). Shapes the kernel does not take fall through. */
    if (tc && !pattern_out && (dh == 64 || dh == 128) && max_len > 0 && (max_len + 63) / 64 <= 65535 &&
        H <= INT32_MAX / n_seq) { /* n_seq >= 1: a len is over 0 */
        SS_TRY(meta_put(be, n_seq, start, len, NULL));
        int64_t n_rows = 0;
        for (int64_t s = 0; s < n_seq; s++)
            if (start[s] + len[s] > n_rows) n_rows = start[s] + len[s];
        const int64_t nws = ss_cuda_attention_flash_bf16_ws(n_rows, H, Hkv, dh);
        if (nws < 0)
            return ss_errorf(SS_ERR_NOMEM, "%s: %s: bf16 Q, K, V of %lld rows x (%lld + 2 x %lld) heads of %lld overflow",
                             be->name, op, (long long)n_rows, (long long)H, (long long)Hkv, (long long)dh);
        SS_TRY(scratch16(be, &c->qkv16, &c->qkv16_cap, (size_t)nws, "bf16 Q, K, V"));
        const int z16 = z16_for(out, n_rows, H * dh);
        if (z16) SS_TRY(scratch16(be, &c->a16, &c->a16_cap, (size_t)(n_rows * H * dh), "bf16 z"));
        int qt;
        SS_TRY(attn_qt(be, &qt));
        KL(ss_cuda_attention_flash_bf16(z16 ? (void *)c->a16 : z, z16 ? SS_CUDA_BF16 : SS_CUDA_F32, q, k, v, ld_qkv,
                                        n_seq, c->meta.dev, c->meta.dev + n_seq, max_len, n_rows, H, Hkv, dh, scale, c->qkv16,
                                        qt, c->stream),
           "tensor-core attention kernel");
        if (used16) *used16 = z16;
        return SS_OK;
    }
    /* The cuBLAS path: when a sequence is long enough, and the scores of one
     * head fit the attention workspace (or land in the pattern anyway). */
    const int64_t min_len = c->attn_gemm_min_len, ws_floats = (int64_t)(c->attn_ws_max / sizeof(float));
    if (min_len > 0 && max_len >= min_len && max_len <= INT32_MAX && ld_qkv <= INT32_MAX && H * dh <= INT32_MAX &&
        (pattern_out || max_len * max_len <= ws_floats)) {
        float *scratch = NULL;
        int64_t hc = Hkv;
        if (!pattern_out) {
            hc = ws_floats / (max_len * max_len);
            if (hc > Hkv) hc = Hkv;
            SS_TRY(cu_alloc(be, (size_t)(hc * max_len * max_len) * sizeof(float), "attention scores",
                            (void **)&scratch));
        }
        ss_status st = SS_OK;
        for (int64_t s = 0; s < n_seq && !st; s++)
            if (len[s] > 0)
                st = attention_gemm_seq(be, z, q, k, v, ld_qkv, start[s], len[s], H, Hkv, dh, scale,
                                        pattern_out ? pattern_out + pattern_off[s] : scratch, pattern_out != NULL, hc);
        if (scratch) cu_release(be, scratch);
        return st;
    }
    SS_TRY(meta_put(be, n_seq, start, len, pattern_out ? pattern_off : NULL));
    if (pattern_out)
        KL(ss_cuda_attention_pattern(z, pattern_out, q, k, v, ld_qkv, n_seq, c->meta.dev, c->meta.dev + n_seq,
                                     c->meta.dev + 2 * n_seq, max_len, H, Hkv, dh, scale, c->stream),
           "attention kernel");
    else
        KL(ss_cuda_attention_flash(z, q, k, v, ld_qkv, n_seq, c->meta.dev, c->meta.dev + n_seq, max_len, H, Hkv, dh, scale,
                                   c->stream),
           "flash attention kernel");
    return SS_OK;
}

static ss_status cu_workspace(const ss_backend *be, size_t floats, const char *what, float **out);

/* Attention of new query rows against the key/value cache (predict --generate):
 * kernels/attention_kv.cu, any context length; a long cache against few rows
 * splits each row's keys over blocks (ss_cuda_attention_kv_splits), their
 * partial softmaxes in the workspace. A 16-bit model's cache holds bf16 or
 * fp16 (cu_copy_rows16 writes it), widened as the kernel reads it. */
static ss_status cu_attention_kv(const ss_backend *be, float *z, const float *q, int64_t ld_q, const void *k,
                                 const void *v, int kv_dtype, int64_t ld_kv, int64_t n_q, int64_t q0, int64_t H,
                                 int64_t Hkv, int64_t dh, float scale) {
    if (Hkv < 1 || H % Hkv)
        return ss_errorf(SS_ERR_ARG, "%s: attention: %lld key/value heads do not divide %lld heads", be->name,
                         (long long)Hkv, (long long)H);
    if (dh > 256)
        return ss_errorf(SS_ERR_UNSUPPORTED, "%s: cached attention takes heads of at most 256 (%lld)", be->name,
                         (long long)dh);
    const int64_t splits = ss_cuda_attention_kv_splits(n_q, q0, H), nws = ss_cuda_attention_kv_ws(n_q, q0, H, dh, splits);
    float *ws = NULL;
    if (nws < 0)
        return ss_errorf(SS_ERR_NOMEM, "%s: cached attention: no workspace for %lld rows x %lld heads in %lld splits",
                         be->name, (long long)n_q, (long long)H, (long long)splits);
    if (nws > 0) SS_TRY(cu_workspace(be, (size_t)nws, "cached attention's partials", &ws));
    KL(ss_cuda_attention_kv(z, q, ld_q, k, v, kv_dtype, ld_kv, n_q, q0, H, Hkv, dh, scale, splits, ws,
                            IMPL(be)->stream),
       "cached attention kernel");
    return SS_OK;
}

/* ---- Masks ---- */

/* A mask program on the device: one allocation holding the ops, then the
 * unit/position lists (int64), then the statistics (double). */
typedef struct {
    int n, site_id;
    int64_t width;
    void *dev;
    ss_cuda_mask_op *ops;
    int64_t *idx;
    double *vals;
    int *mode;              /* host copy: modes and position counts, for the grid's bound */
    int64_t *n_positions;
} cu_prog;

static void cu_mask_program_free(const ss_backend *be, ss_mask_program *prog) {
    cu_prog *p = (cu_prog *)prog;
    if (!p) return;
    if (p->dev) cu_release(be, p->dev);
    free(p->mode);
    free(p->n_positions);
    free(p);
}

static ss_status cu_mask_program_create(const ss_backend *be, const ss_backend_mask *masks, int n, int site_id,
                                        int64_t width, ss_mask_program **out) {
    *out = NULL;
    SS_TRY(ss_backend_masks_check(be, masks, n, width));
    int64_t n_idx = 0, n_vals = 0;
    for (int k = 0; k < n; k++) {
        n_idx += masks[k].n_units + masks[k].n_positions;
        n_vals += (masks[k].mean ? width : 0) + (masks[k].std ? width : 0);
    }
    /* ops (40+ bytes each, 8-aligned), then int64, then double: every part stays 8-byte aligned */
    size_t ops_b = (size_t)n * sizeof(ss_cuda_mask_op), idx_b = (size_t)n_idx * sizeof(int64_t),
           vals_b = (size_t)n_vals * sizeof(double), total = ops_b + idx_b + vals_b;
    cu_prog *p = ss_calloc(1, sizeof *p, "mask program");
    unsigned char *host = ss_malloc(total + 1, "mask program");
    ss_status st = p && host ? SS_OK : SS_ERR_NOMEM;
    if (!st && (!(p->mode = ss_malloc((size_t)(n + 1) * sizeof *p->mode, "mask program")) ||
                !(p->n_positions = ss_malloc((size_t)(n + 1) * sizeof *p->n_positions, "mask program"))))
        st = SS_ERR_NOMEM;
    if (!st) {
        ss_cuda_mask_op *ops = (ss_cuda_mask_op *)host;
        int64_t *idx = (int64_t *)(host + ops_b);
        double *vals = (double *)(host + ops_b + idx_b);
        int64_t io = 0, vo = 0;
        for (int k = 0; k < n; k++) {
            const ss_backend_mask *m = &masks[k];
            ss_cuda_mask_op *o = &ops[k];
            memset(o, 0, sizeof *o);
            o->mode = m->mode;
            o->relative = m->sigma_relative != 0;
            o->factor = m->factor;
            o->sigma = m->sigma;
            o->seed = m->seed;
            o->mean = o->std = -1;
            o->n_units = m->n_units;
            o->units = io;
            if (m->n_units) memcpy(idx + io, m->units, (size_t)m->n_units * sizeof(int64_t)), io += m->n_units;
            o->n_positions = m->n_positions;
            o->positions = io;
            if (m->n_positions) memcpy(idx + io, m->positions, (size_t)m->n_positions * sizeof(int64_t)), io += m->n_positions;
            if (m->mean) memcpy(vals + vo, m->mean, (size_t)width * sizeof(double)), o->mean = vo, vo += width;
            if (m->std) memcpy(vals + vo, m->std, (size_t)width * sizeof(double)), o->std = vo, vo += width;
            p->mode[k] = m->mode;
            p->n_positions[k] = m->n_positions;
        }
        p->n = n;
        p->site_id = site_id;
        p->width = width;
        st = cu_alloc(be, total, "mask program", &p->dev);
    }
    if (!st) {
        p->ops = (ss_cuda_mask_op *)p->dev;
        p->idx = (int64_t *)((unsigned char *)p->dev + ops_b);
        p->vals = (double *)((unsigned char *)p->dev + ops_b + idx_b);
        st = cu_upload(be, p->dev, host, total);
    }
    free(host);
    if (st) {
        cu_mask_program_free(be, (ss_mask_program *)p);
        return st;
    }
    *out = (ss_mask_program *)p;
    return SS_OK;
}

/* The sequences' table goes up once per forward: every masked site of a
 * forward has the same sequences, so later calls find it already there. */
static ss_status cu_apply_masks(const ss_backend *be, const ss_mask_program *prog, float *data, int64_t ld,
                                int64_t rows, int64_t n_seq, const int64_t *start, const int64_t *len,
                                const int64_t *prompt, const int32_t *which) {
    const cu_prog *p = (const cu_prog *)prog;
    cuda_impl *c = IMPL(be);
    SS_TRY(ss_backend_masks_check_seqs(be, p->n, ld, p->width, rows, n_seq, start, len, which));
    int64_t slots = 0;
    for (int64_t q = 0; q < n_seq; q++) {
        if (which[q] < 0 || p->mode[which[q]] == SS_BMASK_NONE) continue;
        int64_t np = p->n_positions[which[q]], s = np && np < len[q] ? np : len[q];
        if (s > slots) slots = s;
    }
    if (!slots) return SS_OK;
    size_t need = (size_t)(4 * n_seq);
    int64_t *t;
    SS_TRY(table_next(be, &c->mseq, need, "mask sequences", &t));
    for (int64_t q = 0; q < n_seq; q++)
        t[q] = start[q], t[n_seq + q] = len[q], t[2 * n_seq + q] = prompt ? prompt[q] : q, t[3 * n_seq + q] = which[q];
    SS_TRY(table_put(be, &c->mseq, need, need));
    int rc = ss_cuda_mask_apply(data, ld, p->width, p->site_id, p->ops, p->idx, p->vals, n_seq, c->mseq.dev, slots,
                                c->stream);
    if (rc == cudaErrorInvalidValue)
        return ss_errorf(SS_ERR_UNSUPPORTED, "%s: masks over %lld sequences x %lld positions exceed the kernel's grid",
                         be->name, (long long)n_seq, (long long)slots);
    KL(rc, "mask kernel");
    return SS_OK;
}

/* ---- The backward pass ---- */

/* The backward kernels' workspace (and the cached attention's partials),
 * grown on demand and kept: the same sizes recur layer after layer and batch
 * after batch. */
static ss_status cu_workspace(const ss_backend *be, size_t floats, const char *what, float **out) {
    cuda_impl *c = IMPL(be);
    if (floats > c->ws_cap) {
        size_t bytes = 0;
        if (!ss_mul_ok(floats, sizeof(float), &bytes))
            return ss_errorf(SS_ERR_NOMEM, "%s: %s: %zu floats do not fit in a size in bytes", be->name, what, floats);
        if (c->ws) cu_release(be, c->ws);
        c->ws = NULL;
        c->ws_cap = 0;
        SS_TRY(cu_alloc(be, bytes, what, (void **)&c->ws));
        c->ws_cap = floats;
    }
    *out = c->ws;
    return SS_OK;
}

/* Row-major C[K,N] (+)= A[M,K]^T B[M,N] is column-major C^T[N,K] = B^T A:
 * B read as column-major [N,M] (no transpose), A as column-major [K,M]
 * transposed. The handle's math mode carries the backend's TF32 choice. */
static ss_status cu_matmul_tn(const ss_backend *be, float *C, const float *A, const float *B, int64_t M, int64_t N,
                              int64_t K, int accumulate) {
    if (K <= 0 || N <= 0) return SS_OK;
    if (M <= 0) return accumulate ? SS_OK : cu_zero(be, C, (size_t)(K * N) * sizeof(float));
    if (M > INT32_MAX || N > INT32_MAX || K > INT32_MAX)
        return ss_errorf(SS_ERR_UNSUPPORTED, "%s: matmul_tn %lld x %lld x %lld exceeds cuBLAS's 32-bit sizes",
                         be->name, (long long)M, (long long)N, (long long)K);
    const float one = 1.f, beta = accumulate ? 1.f : 0.f;
    cublasStatus_t s = cublasSgemm(IMPL(be)->blas, CUBLAS_OP_N, CUBLAS_OP_T, (int)N, (int)K, (int)M, &one, B, (int)N,
                                   A, (int)K, &beta, C, (int)N);
    if (s != CUBLAS_STATUS_SUCCESS)
        return ss_errorf(SS_ERR_IO, "%s: matmul_tn: cuBLAS product (%lld x %lld x %lld): %s", be->name, (long long)M,
                         (long long)N, (long long)K, cublasGetStatusString(s));
    return SS_OK;
}

static ss_status cu_attr_product(const ss_backend *be, float *out, const float *g, int64_t ldg, const float *a,
                                 const float *c, int64_t rows, int64_t w) {
    KL(ss_cuda_attr_product(out, g, ldg, a, c, rows, w, IMPL(be)->stream), "attr_product kernel");
    return SS_OK;
}

static ss_status cu_seq_sums(const ss_backend *be, double *out, const float *x, int64_t w, int64_t n_seq,
                             const int64_t *start, const int64_t *len) {
    KL(ss_cuda_seq_sums(out, x, w, n_seq, start, len, IMPL(be)->stream), "seq_sums kernel");
    return SS_OK;
}

static ss_status cu_ig_point(const ss_backend *be, float *x, int64_t ldx, const float *clean, const double *base,
                             double alpha, int64_t rows, int64_t w) {
    KL(ss_cuda_ig_point(x, ldx, clean, base, alpha, rows, w, IMPL(be)->stream), "ig_point kernel");
    return SS_OK;
}

static ss_status cu_ig_add(const ss_backend *be, double *sum, const float *g, int64_t ldg, int64_t rows, int64_t w) {
    KL(ss_cuda_ig_add(sum, g, ldg, rows, w, IMPL(be)->stream), "ig_add kernel");
    return SS_OK;
}

static ss_status cu_patch_pieces(const ss_backend *be, float *x, int64_t ld, const float *src, int64_t n, int64_t w,
                                 int kn, int per, int64_t p0, int64_t hd) {
    KL(ss_cuda_patch_pieces(x, ld, src, n, w, kn, per, p0, hd, IMPL(be)->stream), "patch_pieces kernel");
    return SS_OK;
}

static ss_status cu_ig_attr(const ss_backend *be, float *out, const float *clean, const double *base, const double *sum,
                            int steps, int64_t rows, int64_t w) {
    KL(ss_cuda_ig_attr(out, clean, base, sum, steps, rows, w, IMPL(be)->stream), "ig_attr kernel");
    return SS_OK;
}

static ss_status cu_sum_rows(const ss_backend *be, float *out, const float *x, int64_t M, int64_t N) {
    KL(ss_cuda_sum_rows(out, x, M, N, IMPL(be)->stream), "sum_rows kernel");
    return SS_OK;
}

static ss_status cu_layernorm_backward(const ss_backend *be, float *dx, float *dw, float *db, const float *dy,
                                       const float *x, const float *w, int64_t rows, int64_t d, float eps) {
    float *ws = NULL;
    if ((dw || db) && rows > 0 && d > 0) {
        const int64_t nws = ss_cuda_layernorm_backward_ws(rows);
        if (nws < 0)
            return ss_errorf(SS_ERR_NOMEM, "%s: layernorm_backward: a workspace of 2 x %lld rows overflows", be->name,
                             (long long)rows);
        SS_TRY(cu_workspace(be, (size_t)nws, "layernorm_backward workspace", &ws));
    }
    KL(ss_cuda_layernorm_backward(dx, dw, db, dy, x, w, rows, d, eps, ws, IMPL(be)->stream),
       "layernorm_backward kernel");
    return SS_OK;
}

static ss_status cu_gelu_backward(const ss_backend *be, float *dx, const float *dy, const float *x, int64_t n,
                                  ss_act act) {
    int a = act == SS_ACT_GELU_ERF ? SS_CUDA_GELU_ERF : SS_CUDA_GELU_TANH;
    KL(ss_cuda_gelu_backward(dx, dy, x, n, a, IMPL(be)->stream), "gelu_backward kernel");
    return SS_OK;
}

static ss_status cu_attention(const ss_backend *be, float *z, const float *q, const float *k, const float *v,
                              int64_t ld_qkv, int64_t n_seq, const int64_t *start, const int64_t *len, int64_t H,
                              int64_t Hkv, int64_t dh, float scale, float *pattern_out, const int64_t *pattern_off) {
    return attention_any(be, "attention", z, q, k, v, ld_qkv, n_seq, start, len, H, Hkv, dh, scale, pattern_out,
                         pattern_off, IMPL(be)->attn_tc == 1, NULL, NULL);
}

/* The ops table's attention_lowp: what a model whose products are bf16 asks for. */
static ss_status cu_attention_lowp(const ss_backend *be, float *z, const float *q, const float *k, const float *v,
                                   int64_t ld_qkv, int64_t n_seq, const int64_t *start, const int64_t *len, int64_t H,
                                   int64_t Hkv, int64_t dh, float scale, const ss_attn_out *out) {
    int used16 = 0;
    SS_TRY(attention_any(be, "attention_lowp", z, q, k, v, ld_qkv, n_seq, start, len, H, Hkv, dh, scale, NULL, NULL, 1,
                         out, &used16));
    return out ? attn_out_product(be, z, used16, out, H * dh) : SS_OK;
}

/* The attention backward of one sequence through cuBLAS, as the forward's
 * cuBLAS path (attention_gemm_seq) and in its column-major reading of the
 * row-major matrices: per batch of hc key/value heads and query head g of
 * their group, P again (scores, causal softmax) into p, dP = dZ V^T into
 * ds, then dS = scale P (dP - rowsum(P dP)) in place (the causal softmax's
 * backward kernel), dQ = dS K, dK = dS^T Q and dV = P^T dZ, strided-batched
 * over heads; dK and dV of a key/value head add up its group's query heads
 * (beta 1 after the first). */
static ss_status attention_backward_gemm_seq(const ss_backend *be, float *dq, float *dk, float *dv, int64_t ldd,
                                             const float *dz, const float *q, const float *k, const float *v,
                                             int64_t ld, int64_t r0, int64_t L, int64_t H, int64_t Hkv, int64_t dh,
                                             float scale, float *p, float *ds, int64_t hc) {
    const int64_t group = H / Hkv, LL = L * L, ldz = H * dh;
    const float *q0 = q + r0 * ld, *k0 = k + r0 * ld, *v0 = v + r0 * ld, *dz0 = dz + r0 * ldz;
    float *dq0 = dq + r0 * ldd, *dk0 = dk + r0 * ldd, *dv0 = dv + r0 * ldd;
    for (int64_t g = 0; g < group; g++)
        for (int64_t j0 = 0; j0 < Hkv; j0 += hc) {
            const int64_t jn = hc < Hkv - j0 ? hc : Hkv - j0, h0 = j0 * group + g;
            const float beta = g ? 1.f : 0.f;
            SS_TRY(sgemm_batched(be, "backward scores", CUBLAS_OP_T, CUBLAS_OP_N, L, L, dh, scale, k0 + j0 * dh, ld,
                                 dh, q0 + h0 * dh, ld, group * dh, p, L, LL, jn));
            KL(ss_cuda_softmax_causal(p, jn * L, L, IMPL(be)->stream), "causal softmax kernel");
            SS_TRY(sgemm_batched(be, "dP = dZ V^T", CUBLAS_OP_T, CUBLAS_OP_N, L, L, dh, 1.f, v0 + j0 * dh, ld, dh,
                                 dz0 + h0 * dh, ldz, group * dh, ds, L, LL, jn));
            KL(ss_cuda_softmax_causal_backward(ds, p, jn * L, L, scale, IMPL(be)->stream),
               "causal softmax backward kernel");
            SS_TRY(sgemm_batched(be, "dQ = dS K", CUBLAS_OP_N, CUBLAS_OP_N, dh, L, L, 1.f, k0 + j0 * dh, ld, dh, ds, L,
                                 LL, dq0 + h0 * dh, ldd, group * dh, jn));
            SS_TRY(sgemm_batched_beta(be, "dK = dS^T Q", CUBLAS_OP_N, CUBLAS_OP_T, dh, L, L, 1.f, q0 + h0 * dh, ld,
                                      group * dh, ds, L, LL, beta, dk0 + j0 * dh, ldd, dh, jn));
            SS_TRY(sgemm_batched_beta(be, "dV = P^T dZ", CUBLAS_OP_N, CUBLAS_OP_T, dh, L, L, 1.f, dz0 + h0 * dh, ldz,
                                      group * dh, p, L, LL, beta, dv0 + j0 * dh, ldd, dh, jn));
        }
    return SS_OK;
}

/* The ops table's attention_lowp_qkv (SUBSCOPE_QKV16, SS_LOWP16_QKV, with the
 * tensor-core attention not turned off): the QKV product writes q, k
 * and v straight in bf16 (cuBLASLt, the bias in its epilogue, from a 16-bit
 * a: x normalised by the norm kernel's 16-bit output, or x converted) and
 * the attention reads them, scaling the scores in fp32; the fp32 qkv and the
 * pack kernel's pass go. At head size 64 the scale is a power of two, so
 * the result is the pack path's bit for bit; at 128 q is rounded before the
 * scale rather than after. With pos (the Llama family) the rope kernel
 * rotates q and k in bf16 (ss_cuda_rope_bf16: each value rotated in fp32
 * and rounded again), in place of the fp32 rotation's pass over q and k and
 * the pack kernel's: one rounding more on q and k than the default path.
 * Otherwise (no cuBLASLt, a shape the kernel does not take, fp16 weights)
 * the separate ops run through ln and qkv. */
static ss_status cu_attention_lowp_qkv(const ss_backend *be, float *z, float *qkv, float *ln, const float *x,
                                       const float *nw, const float *nb, float eps, int rms, const void *W, int wdtype,
                                       const float *bias, int trans_b, int64_t R, int64_t d, int64_t n_seq,
                                       const int64_t *start, const int64_t *len, int64_t H, int64_t Hkv, int64_t dh,
                                       float scale, const int32_t *pos, const float *inv_freq,
                                       const ss_attn_out *out) {
    cuda_impl *c = IMPL(be);
    const int64_t N = (H + 2 * Hkv) * dh;
    SS_TRY(ss_attn_seqs_check(be, "attention_lowp_qkv", n_seq, start, len, R));
    int64_t max_len = 0;
    for (int64_t s = 0; s < n_seq; s++) max_len = len[s] > max_len ? len[s] : max_len;
    if (c->lt && wdtype == SS_WDTYPE_BF16 && (dh == 64 || dh == 128) && Hkv >= 1 && H % Hkv == 0 && R > 0 &&
        R <= INT32_MAX && N <= INT32_MAX && d <= INT32_MAX && max_len > 0 && (max_len + 63) / 64 <= 65535 &&
        n_seq * H <= INT32_MAX) {
        SS_TRY(rows16(be, x, nw, nb, eps, rms, R, d, SS_CUDA_BF16));
        SS_TRY(scratch16(be, &c->qkv16, &c->qkv16_cap, (size_t)(R * N), "bf16 Q, K, V"));
        if (lt_matmul_to(c, c->qkv16, CUDA_R_16BF, c->a16, W, CUDA_R_16BF, bias, 0, 0, R, N, d, trans_b) ==
            CUBLAS_STATUS_SUCCESS) {
            if (pos) /* q and k are adjacent: one rotation covers the H + Hkv heads */
                KL(ss_cuda_rope_bf16(c->qkv16, N, R, H + Hkv, dh, pos, inv_freq, c->stream), "rope kernel (bf16 q, k)");
            SS_TRY(meta_put(be, n_seq, start, len, NULL));
            int64_t n_rows = 0;
            for (int64_t s = 0; s < n_seq; s++) n_rows = start[s] + len[s] > n_rows ? start[s] + len[s] : n_rows;
            /* the QKV product has read c->a16 (stream order) before z may go there */
            const int z16 = z16_for(out, n_rows, H * dh);
            if (z16) SS_TRY(scratch16(be, &c->a16, &c->a16_cap, (size_t)(n_rows * H * dh), "bf16 z"));
            int qt;
            SS_TRY(attn_qt(be, &qt));
            KL(ss_cuda_attention_flash_bf16_from16(z16 ? (void *)c->a16 : z, z16 ? SS_CUDA_BF16 : SS_CUDA_F32,
                                                   c->qkv16, N, n_seq, c->meta.dev, c->meta.dev + n_seq, max_len, H, Hkv, dh,
                                                   scale, qt, c->stream),
               "tensor-core attention kernel (from the product's bf16 rows)");
            return out ? attn_out_product(be, z, z16, out, H * dh) : SS_OK;
        }
    }
    const float *a = x;
    if (nw) {
        SS_TRY(cu_norm(be, ln, x, nw, nb, eps, rms, R, d));
        a = ln;
    }
    SS_TRY(cu_product(be, qkv, a, W, wdtype, bias, R, N, d, trans_b, SS_CUDA_ACT_NONE, 0));
    if (pos) SS_TRY(cu_rope(be, qkv, N, R, H + Hkv, dh, pos, inv_freq, 0));
    int used16 = 0;
    SS_TRY(attention_any(be, "attention_lowp_qkv", z, qkv, qkv + H * dh, qkv + (H + Hkv) * dh, N, n_seq, start, len, H,
                         Hkv, dh, scale, NULL, NULL, 1, out, &used16));
    return out ? attn_out_product(be, z, used16, out, H * dh) : SS_OK;
}

static ss_status cu_attention_backward(const ss_backend *be, float *dq, float *dk, float *dv, int64_t ld_dqkv,
                                       const float *dz, const float *q, const float *k, const float *v,
                                       int64_t ld_qkv, int64_t n_seq, const int64_t *start, const int64_t *len,
                                       int64_t H, int64_t Hkv, int64_t dh, float scale) {
    cuda_impl *c = IMPL(be);
    if (Hkv < 1 || H % Hkv)
        return ss_errorf(SS_ERR_ARG, "%s: attention_backward: %lld key/value heads do not divide %lld heads", be->name,
                         (long long)Hkv, (long long)H);
    SS_TRY(ss_attn_seqs_check(be, "attention_backward", n_seq, start, len, -1)); /* rows below is start + len */
    if (n_seq <= 0 || H <= 0) return SS_OK;
    /* Batches with a prompt of attn_gemm_min_len tokens or more: cuBLAS, as
     * the forward (two [hc, L, L] buffers at a time within the workspace
     * budget); every sequence then, the short ones too, so that the batch's
     * gradients come from one path. */
    {
        int64_t mx = 0;
        for (int64_t s = 0; s < n_seq; s++) mx = len[s] > mx ? len[s] : mx;
        const int64_t min_len = c->attn_gemm_min_len, ws_floats = (int64_t)(c->attn_ws_max / sizeof(float));
        if (min_len > 0 && mx >= min_len && mx <= (int64_t)1 << 30 && ld_qkv <= INT32_MAX && ld_dqkv <= INT32_MAX &&
            H * dh <= INT32_MAX && 2 * mx * mx <= ws_floats) {
            int64_t hc = ws_floats / (2 * mx * mx);
            if (hc > Hkv) hc = Hkv;
            float *buf = NULL;
            SS_TRY(cu_alloc(be, (size_t)(2 * hc * mx * mx) * sizeof(float), "attention backward scores", (void **)&buf));
            ss_status st = SS_OK;
            for (int64_t s = 0; s < n_seq && !st; s++)
                if (len[s] > 0)
                    st = attention_backward_gemm_seq(be, dq, dk, dv, ld_dqkv, dz, q, k, v, ld_qkv, start[s], len[s], H,
                                                     Hkv, dh, scale, buf, buf + hc * mx * mx, hc);
            cu_release(be, buf);
            return st;
        }
    }
    /* P and dS of every (sequence, head): 2 sum_s H len^2 floats. */
    int64_t max_len = 0, half = 0;
    int64_t *at = ss_malloc((size_t)n_seq * sizeof(int64_t), "attention_backward offsets");
    if (!at) return SS_ERR_NOMEM;
    for (int64_t s = 0; s < n_seq; s++) {
        size_t l2 = 0, hl2 = 0;
        if (!ss_mul_ok((size_t)len[s], (size_t)len[s], &l2) || !ss_mul_ok(l2, (size_t)H, &hl2) ||
            hl2 > (size_t)(INT64_MAX / 4) || half > INT64_MAX / 4 - (int64_t)hl2) {
            free(at);
            return ss_errorf(SS_ERR_ARG, "%s: attention_backward: sequence %lld of length %lld is too long", be->name,
                             (long long)s, (long long)len[s]);
        }
        at[s] = half;
        half += (int64_t)hl2;
        if (len[s] > max_len) max_len = len[s];
    }
    /* Long contexts: past the workspace budget the probabilities are recomputed
     * (3 floats per row and head) rather than stored (2 H len^2 per sequence). */
    int64_t rows = 0;
    for (int64_t s = 0; s < n_seq; s++) rows = start[s] + len[s] > rows ? start[s] + len[s] : rows;
    const int recompute = (double)half * 2.0 * sizeof(float) > (double)c->attn_ws_max;
    size_t stats = 0; /* 3 floats per row and head */
    if (recompute && max_len && (!ss_mul_ok((size_t)rows, (size_t)H, &stats) || !ss_mul_ok(stats, 3, &stats))) {
        free(at);
        return ss_errorf(SS_ERR_NOMEM, "%s: attention_backward: row statistics of 3 x %lld rows x %lld heads overflow",
                         be->name, (long long)rows, (long long)H);
    }
    float *ws = NULL;
    ss_status st = !max_len ? SS_OK
                   : recompute ? cu_workspace(be, stats, "attention_backward row statistics", &ws)
                               : cu_workspace(be, (size_t)(2 * half), "attention_backward workspace (probabilities and dS)", &ws);
    if (!st && max_len) st = meta_put(be, n_seq, start, len, at);
    free(at);
    if (st || !max_len) return st;
    int rc = recompute ? ss_cuda_attention_backward_rc(dq, dk, dv, ld_dqkv, dz, q, k, v, ld_qkv, n_seq, c->meta.dev,
                                                       c->meta.dev + n_seq, max_len, H, Hkv, dh, scale, ws, c->stream)
                       : ss_cuda_attention_backward(dq, dk, dv, ld_dqkv, dz, q, k, v, ld_qkv, n_seq, c->meta.dev,
                                                    c->meta.dev + n_seq, c->meta.dev + 2 * n_seq, max_len, H, Hkv, dh, scale, ws,
                                                    half, c->stream);
    if (rc == cudaErrorInvalidValue)
        return ss_errorf(SS_ERR_UNSUPPORTED, "%s: attention_backward: H=%lld dh=%lld ld_qkv=%lld ld_dqkv=%lld is not "
                         "supported (dh <= 256, H <= 65535, row strides >= H*dh)", be->name, (long long)H,
                         (long long)dh, (long long)ld_qkv, (long long)ld_dqkv);
    KL(rc, "attention_backward kernel");
    return SS_OK;
}

static ss_status cu_rmsnorm_backward(const ss_backend *be, float *dx, float *dw, const float *dy, const float *x,
                                     const float *w, int64_t rows, int64_t d, float eps) {
    float *ws = NULL;
    if (dw && rows > 0 && d > 0)
        SS_TRY(cu_workspace(be, (size_t)ss_cuda_rmsnorm_backward_ws(rows), "rmsnorm_backward workspace", &ws));
    KL(ss_cuda_rmsnorm_backward(dx, dw, dy, x, w, rows, d, eps, ws, IMPL(be)->stream), "rmsnorm_backward kernel");
    return SS_OK;
}

static ss_status cu_swiglu_backward(const ss_backend *be, float *dgu, const float *dy, const float *gu, int64_t rows,
                                    int64_t dm) {
    KL(ss_cuda_swiglu_backward(dgu, dy, gu, rows, dm, IMPL(be)->stream), "swiglu_backward kernel");
    return SS_OK;
}

static ss_status cu_norm_jvp(const ss_backend *be, float *dy, const float *dx, const float *x, const float *w,
                             int64_t rows, int64_t d, float eps, int rms) {
    KL(ss_cuda_norm_jvp(dy, dx, x, w, rows, d, eps, rms, IMPL(be)->stream), "norm_jvp kernel");
    return SS_OK;
}

static ss_status cu_swiglu_jvp(const ss_backend *be, float *dout, const float *dgu, const float *gu, int64_t rows,
                               int64_t dm) {
    KL(ss_cuda_swiglu_jvp(dout, dgu, gu, rows, dm, IMPL(be)->stream), "swiglu_jvp kernel");
    return SS_OK;
}

static ss_status cu_attention_jvp(const ss_backend *be, float *dz, const float *dq, const float *dk, const float *dv,
                                  int64_t ld_dqkv, const float *q, const float *k, const float *v, int64_t ld_qkv,
                                  int64_t n_seq, const int64_t *start, const int64_t *len, int64_t H, int64_t Hkv,
                                  int64_t dh, float scale) {
    if (Hkv < 1 || H % Hkv)
        return ss_errorf(SS_ERR_ARG, "%s: attention_jvp: %lld key/value heads do not divide %lld heads", be->name,
                         (long long)Hkv, (long long)H);
    SS_TRY(ss_attn_seqs_check(be, "attention_jvp", n_seq, start, len, -1));
    if (H > 65535 || dh * (int64_t)sizeof(double) > 48 * 1024)
        return ss_errorf(SS_ERR_UNSUPPORTED, "%s: attention_jvp: %lld heads of width %lld exceed the kernel's limits "
                         "(65535 heads, width 6144)", be->name, (long long)H, (long long)dh);
    KL(ss_cuda_attention_jvp(dz, dq, dk, dv, ld_dqkv, q, k, v, ld_qkv, n_seq, start, len, H, Hkv, dh, scale,
                             IMPL(be)->stream),
       "attention_jvp kernel");
    return SS_OK;
}

static ss_status cu_embed_backward(const ss_backend *be, float *dwte, float *dwpe, const float *dx,
                                   const int32_t *tokens, const int32_t *pos, int64_t n, int64_t d) {
    /* Ids were validated by the forward pass; the bounds only guard the kernel. */
    KL(ss_cuda_embed_backward(dwte, dwpe, dx, tokens, pos, INT32_MAX, INT32_MAX, n, d, IMPL(be)->stream),
       "embed_backward kernel");
    return SS_OK;
}

static ss_status cu_softmax_xent(const ss_backend *be, float *dlogits, float *loss, const float *logits,
                                 const int32_t *targets, const float *weights, int64_t rows, int64_t V) {
    KL(ss_cuda_softmax_xent(dlogits, loss, logits, targets, weights, rows, V, IMPL(be)->stream),
       "softmax_xent kernel");
    return SS_OK;
}

static ss_status cu_logit_scores(const ss_backend *be, double *lz, int32_t *best, double *kl, const float *logits,
                                 int64_t rows, int64_t V, const float *ref, const double *ref_lz, int64_t ref_rows) {
    KL(ss_cuda_logit_scores(lz, best, kl, logits, rows, V, ref, ref_lz, ref_rows, IMPL(be)->stream),
       "logit_scores kernel");
    return SS_OK;
}

static ss_status cu_gather(const ss_backend *be, float *out, const float *src, const int64_t *idx, int64_t n) {
    KL(ss_cuda_gather(out, src, idx, n, IMPL(be)->stream), "gather kernel");
    return SS_OK;
}

int ss_cuda_device_count(void) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        cudaGetLastError();
        return 0;
    }
    return n;
}

/* The CUDA driver reserves far more address space than it uses, so under an
 * address-space limit (ulimit -v; SGE's h_vmem sets one) its start fails
 * with "out of memory" whatever the GPU holds. Where such a limit is set, the
 * errors of the backend's start say so; "" elsewhere. */
static const char *address_limit_hint(void) {
    static _Thread_local char hint[200];
    const uint64_t limit = ss_address_space_limit();
    if (!limit) return "";
    snprintf(hint, sizeof hint,
             "; note: an address-space limit is set (ulimit -v: %llu MiB), and the CUDA driver reserves far more "
             "address space than it uses: lift it for GPU jobs",
             (unsigned long long)(limit >> 20));
    return hint;
}

/* The backend's settings from the environment (README's table), every one read
 * strictly when the backend opens: a value that is not one it takes (a typo, a
 * space, "+1", "1x", a number out of range) stops the job with a message naming
 * the variable, its value and what it takes, rather than falling back to the
 * default without a word or being refused only by the job that uses it. */
typedef struct {
    int lowp16[sizeof l16 / sizeof l16[0]]; /* 1 on, 0 off */
    int split, bias16, attn_tc, attn_qt, fuse, epilogue, use_plans, lt_log, timing, cov_kernel;
    double ws_mb;
    int64_t gemm_min_len, pad_bytes, stage_bytes, cov_block, lt_ws_mb;
} cuda_env;

static ss_status read_env(cuda_env *e) {
    static const char *const on_off[] = {"0", "1", NULL};
    static const char *const qts[] = {"1", "2", NULL};
    static const char *const kernels[] = {"", "1", "tc", "wg", "ssyrk", "blk", "rec", NULL}; /* the cov_choice order */
    static const char *const on_off_takes = "1 (on) or 0 (off)";
    int v;
    for (size_t i = 0; i < sizeof l16 / sizeof l16[0]; i++) {
        /* on for every family since an H100 measured GPT-2 small 1.6x faster with them, as a 7B Llama 1.2x
         * (docs/DECISIONS.md) */
        SS_TRY(ss_env_choice(l16[i].var, on_off, 1, "1 or unset (on) or 0 (off)", &v));
        e->lowp16[i] = v;
    }
    SS_TRY(ss_env_choice("SUBSCOPE_SPLIT_PRODUCTS", on_off, 1, "1 (on, the default) or 0 (off)", &e->split));
    SS_TRY(ss_env_choice("SUBSCOPE_BIAS16", on_off, 2,
                         "1 (always), 0 (never) or unset (where cuBLASLt declines an fp32 bias)", &v));
    e->bias16 = v == 2 ? -1 : v;
    SS_TRY(ss_env_real("SUBSCOPE_ATTN_BWD_WORKSPACE_MB", 0, 1e9, 1024, "MB", &e->ws_mb));
    SS_TRY(ss_env_int("SUBSCOPE_ATTN_GEMM_MIN_LEN", 0, INT32_MAX, 512, "tokens", &e->gemm_min_len));
    SS_TRY(ss_env_choice("SUBSCOPE_ATTN_TC", on_off, 2,
                         "1 (every call), 0 (never) or unset (models whose products are bf16)", &v));
    e->attn_tc = v == 2 ? -1 : v;
    SS_TRY(ss_env_choice("SUBSCOPE_ATTN_QT", qts, 1, "1 or 2 (query tiles per warp; unset: 2)", &v));
    e->attn_qt = v + 1;
    SS_TRY(ss_env_int("SUBSCOPE_PAD_PRODUCTS", 0, (int64_t)1 << 40, (int64_t)256 << 20, "bytes", &e->pad_bytes));
    SS_TRY(ss_env_int("SUBSCOPE_UPLOAD_STAGE", 0, (int64_t)1 << 40, (int64_t)32 << 20, "bytes", &e->stage_bytes));
    SS_TRY(ss_env_choice("SUBSCOPE_COV_KERNEL", kernels, COV_AUTO, "1, ssyrk, tc, wg, blk or rec (unset: the default)",
                         &e->cov_kernel));
    SS_TRY(ss_env_int("SUBSCOPE_COV_BLOCK", 1, INT32_MAX, 0, "columns", &e->cov_block));
    SS_TRY(ss_env_choice("SUBSCOPE_FUSE", on_off, 1, on_off_takes, &e->fuse));
    SS_TRY(ss_env_choice("SUBSCOPE_BIAS_EPILOGUE", on_off, 2,
                         "1 (every product), 0 (never) or unset (16-bit weights' products)", &v));
    e->epilogue = v == 2 ? -1 : v;
    SS_TRY(ss_env_choice("SUBSCOPE_LT_PLANS", on_off, 1, on_off_takes, &e->use_plans));
    SS_TRY(ss_env_int("SUBSCOPE_LT_WORKSPACE_MB", 0, 65536, 32, "MB", &e->lt_ws_mb));
    SS_TRY(ss_env_choice("SUBSCOPE_LT_LOG", on_off, 0, on_off_takes, &e->lt_log));
    SS_TRY(ss_env_choice("SUBSCOPE_TIMING", on_off, 0, on_off_takes, &e->timing));
    return SS_OK;
}

ss_status ss_backend_cuda_open(int device, const ss_backend_opts *opts, ss_backend **out) {
    *out = NULL;
    int n = 0;
    cudaError_t ce = cudaGetDeviceCount(&n);
    if (ce != cudaSuccess) {
        /* Say why: no driver, a driver older than this build's CUDA runtime, or an address-space limit. */
        cudaGetLastError();
        return ss_errorf(SS_ERR_UNSUPPORTED,
                         "cuda:%d: no usable CUDA device: %s (check nvidia-smi and CUDA_VISIBLE_DEVICES)%s", device,
                         cudaGetErrorString(ce), address_limit_hint());
    }
    if (n == 0) return ss_errorf(SS_ERR_UNSUPPORTED, "cuda:%d: no CUDA device is visible (check nvidia-smi and CUDA_VISIBLE_DEVICES)", device);
    if (device < 0 || device >= n)
        return ss_errorf(SS_ERR_ARG, "cuda:%d: there %s %d CUDA device%s (cuda:0..cuda:%d)", device, n == 1 ? "is" : "are",
                         n, n == 1 ? "" : "s", n - 1);
    cuda_env env;
    if (read_env(&env)) {
        char msg[SS_ERROR_MAX]; /* rewritten from a copy: ss_errorf writes where ss_last_error points */
        snprintf(msg, sizeof msg, "%s", ss_last_error());
        return ss_errorf(SS_ERR_ARG, "cuda:%d: %s", device, msg);
    }
    ss_backend *be = ss_calloc(1, sizeof *be, "CUDA backend");
    cuda_impl *c = ss_calloc(1, sizeof *c, "CUDA backend");
    if (!be || !c) {
        free(be);
        free(c);
        return SS_ERR_NOMEM;
    }
    snprintf(c->name, sizeof c->name, "cuda:%d", device);
    c->device = device;
    /* SUBSCOPE_ATTN_BWD_WORKSPACE_MB (default 1024; 0: always recompute, and no
     * cuBLAS attention without the pattern; fractions allowed, for tests). */
    c->attn_ws_max = (size_t)(env.ws_mb * 1048576.0);
    /* SUBSCOPE_ATTN_GEMM_MIN_LEN: prompts of at least this many tokens send an
     * attention call down the cuBLAS path (default 512: below it the kernels'
     * single launch for every prompt wins over three launches per prompt, by
     * the H100 profile's rates: 7.3 TFLOP/s for the flash kernel, ~47 for
     * Sgemm); 0 keeps the kernels. SUBSCOPE_COV_KERNEL=1|tc|wg|blk: centred_products. */
    c->attn_gemm_min_len = env.gemm_min_len;
    /* Tensor-core attention (kernels/flash_attention_tc.cu: Q, K, V and the
     * probabilities rounded to bf16, fp32 accumulation and softmax) serves
     * attention_lowp, which the forward pass calls for models whose products
     * are bf16 (docs/DECISIONS.md). SUBSCOPE_ATTN_TC=0: never (no
     * attention_lowp); 1: also for every other attention call without the
     * pattern, fp32 models' too. */
    c->attn_tc = env.attn_tc;
    /* SUBSCOPE_ATTN_QT: that kernel's 16-row query tiles per warp, 2 by default
     * (the same numbers as 1; 1.09x faster at heads of 64, 1.44x at 128 on an
     * H100: bench/results/h100-bench-log-20261127T0451Z.txt) */
    c->attn_qt = env.attn_qt;
    /* SUBSCOPE_PAD_PRODUCTS: product_padded's scratch in bytes (default 256 MiB; the tests make
     * it small to cut products into several pieces); 0: products with unaligned rows of C are
     * not padded */
    c->pad_bytes = (size_t)env.pad_bytes;
    /* SUBSCOPE_SPLIT_PRODUCTS: 0 runs a tensor-core product whose width is not a
     * multiple of 8 as one cuBLAS call, as before 2026-11-27; unset or 1: the
     * aligned columns and the rest apart (include/subscope/gemm_split.h) */
    c->split = env.split;
    /* SUBSCOPE_UPLOAD_STAGE: the bytes of each of upload's two pinned staging buffers (default
     * 32 MiB; the tests make it small to cut an upload into many chunks); 0: the driver's own
     * copy from pageable memory */
    c->stage_bytes = (size_t)env.stage_bytes;
    c->cov_kernel = env.cov_kernel;
    c->cov_block = env.cov_block;
    *be = (ss_backend){
        .name = c->name, .description = c->device_name, .impl = c, .host_memory = 0,
        .alloc = cu_alloc, .release = cu_release, .upload = cu_upload, .download = cu_download, .sync = cu_sync,
        .download_async = cu_download_async, .wait_copy = cu_wait_copy,
        .alloc_host = cu_alloc_host, .release_host = cu_release_host, .copy_rows = cu_copy_rows,
        .copy_rows16 = cu_copy_rows16,
        .memory_stats = cu_memory_stats, .moments_chunk = cu_moments_chunk,
        .moments_acc_create = cu_moments_acc_create, .moments_acc_add = cu_moments_acc_add,
        .moments_acc_take = cu_moments_acc_take, .moments_acc_free = cu_moments_acc_free,
#ifdef SS_CUDA_PCA
        .pca_top = cu_pca_top,
#endif
        .matmul = cu_matmul, .matmul_gelu = cu_matmul_gelu, .matmul_add = cu_matmul_add, .layernorm = cu_layernorm, .gelu = cu_gelu, .add = cu_add, .embed = cu_embed,
        .attention = cu_attention, .attention_kv = cu_attention_kv, .rmsnorm = cu_rmsnorm, .rope = cu_rope, .swiglu = cu_swiglu,
        .zero = cu_zero, .matmul_tn = cu_matmul_tn, .sum_rows = cu_sum_rows, .attr_product = cu_attr_product, .seq_sums = cu_seq_sums,
        .ig_point = cu_ig_point, .ig_add = cu_ig_add, .ig_attr = cu_ig_attr,
        .patch_pieces = cu_patch_pieces,
        .layernorm_backward = cu_layernorm_backward, .gelu_backward = cu_gelu_backward,
        .attention_backward = cu_attention_backward, .rmsnorm_backward = cu_rmsnorm_backward,
        .swiglu_backward = cu_swiglu_backward, .embed_backward = cu_embed_backward,
        .norm_jvp = cu_norm_jvp, .swiglu_jvp = cu_swiglu_jvp, .attention_jvp = cu_attention_jvp,
        .softmax_xent = cu_softmax_xent,
        .logit_scores = cu_logit_scores,
        .gather = cu_gather,
        .mask_program_create = cu_mask_program_create, .mask_program_free = cu_mask_program_free,
        .apply_masks = cu_apply_masks,
    };
    /* SUBSCOPE_FUSE=0: no fused product + bias + GELU or product + residual add;
     * the forward pass then runs them as separate ops (benchmarks compare). */
    if (!env.fuse) be->matmul_gelu = NULL, be->matmul_add = NULL;
    /* The 16-bit paths (SS_LOWP16_*): see lowp16_env. SUBSCOPE_MLP16: the MLP
     * keeps its activation's output in 16 bits (mlp_add); SUBSCOPE_NORM16: norms
     * whose rows only feed a product write them in the weights' 16-bit type
     * (norm_matmul); SUBSCOPE_QKV16, with the tensor-core attention: the QKV
     * product writes q, k, v in bf16 for it, Llama's rotated in bf16
     * (attention_lowp_qkv); SUBSCOPE_Z16: where the forward hands an attention
     * op its output product, the kernel writes z in bf16 for it; SUBSCOPE_GU16
     * (with MLP16, Llama only): the gate|up product in 16 bits for the SwiGLU
     * kernel, one rounding more. */
    for (size_t i = 0; i < sizeof l16 / sizeof l16[0]; i++) {
        const int on = env.lowp16[i];
        if (on) be->lowp16 |= l16[i].bit;
        if (!l16[i].bit) c->gu16_on = on;
    }
    if (be->lowp16 & SS_LOWP16_MLP && be->matmul_gelu) be->mlp_add = cu_mlp_add;
    if (be->lowp16 & SS_LOWP16_NORM) be->norm_matmul = cu_norm_matmul;
    if (be->lowp16 & SS_LOWP16_QKV && c->attn_tc) be->attention_lowp_qkv = cu_attention_lowp_qkv;
    if (c->attn_tc) be->attention_lowp = cu_attention_lowp;
    struct cudaDeviceProp prop;
    ss_status st = SS_OK;
    cudaError_t e;
    if ((e = cudaSetDevice(device)) != cudaSuccess) st = cuda_err(be, e, "select device");
    else if ((e = cudaGetDeviceProperties(&prop, device)) != cudaSuccess) st = cuda_err(be, e, "device properties");
    if (!st) {
        snprintf(c->device_name, sizeof c->device_name, "%s", prop.name);
        if ((e = cudaStreamCreate(&c->stream)) != cudaSuccess) st = cuda_err(be, e, "create stream");
        else if ((e = cudaStreamCreateWithFlags(&c->copy, cudaStreamNonBlocking)) != cudaSuccess)
            st = cuda_err(be, e, "create copy stream");
    }
    if (!st && cublasCreate(&c->blas) != CUBLAS_STATUS_SUCCESS)
        st = ss_errorf(SS_ERR_IO, "%s (%s): cuBLAS could not be initialised", c->name, c->device_name);
    if (st && *address_limit_hint()) {
        char msg[SS_ERROR_MAX]; /* the message is rewritten from a copy: ss_errorf writes where ss_last_error points */
        snprintf(msg, sizeof msg, "%s", ss_last_error());
        st = ss_errorf(st, "%s%s", msg, address_limit_hint());
    }
    if (!st && cublasSetStream(c->blas, c->stream) != CUBLAS_STATUS_SUCCESS)
        st = ss_errorf(SS_ERR_IO, "%s: cublasSetStream failed", c->name);
    /* fp32 means fp32: TF32 tensor-core math stays off unless asked for. */
    c->tf32 = opts && opts->tf32;
    be->tf32 = c->tf32;
    if (!st && cublasSetMathMode(c->blas, c->tf32 ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH) !=
                   CUBLAS_STATUS_SUCCESS)
        st = ss_errorf(SS_ERR_IO, "%s: cublasSetMathMode failed", c->name);
    /* Products with a bias (or a tanh GELU) go through cuBLASLt with them in
     * the epilogue (lt_matmul), falling back to cuBLAS and the bias kernel
     * where cuBLASLt declines: by default for bf16/f16 weights (on an H100,
     * 24.4 ms against 27.5 ms of kernels for a bf16 GPT-2-small batch), not
     * for fp32 ones, whose SIMT products cuBLASLt follows with epilogue
     * kernels of its own that took longer than the bias kernel.
     * SUBSCOPE_BIAS_EPILOGUE=1: for every product; 0: never. */
    c->epilogue = env.epilogue;
    if (!st && c->epilogue && cublasLtCreate(&c->lt) != CUBLAS_STATUS_SUCCESS) {
        if (c->epilogue == 1)
            st = ss_errorf(SS_ERR_IO, "%s (%s): cuBLASLt could not be initialised", c->name, c->device_name);
        c->lt = NULL; /* by default: the bias kernel does without */
    }
    /* cuBLASLt plans and their workspace (lt_plan_for) */
    c->use_plans = env.use_plans;
    /* SUBSCOPE_BIAS16 and SUBSCOPE_LT_LOG: lt_matmul_to, lt_log_plan */
    c->bias16 = env.bias16;
    c->lt_log = env.lt_log;
    c->lt_ws_bytes = c->use_plans && env.lt_ws_mb > 0 ? (size_t)env.lt_ws_mb << 20 : 0;
    c->self = be;
    if (st) {
        ss_backend_cuda_close(be);
        return st;
    }
    *out = be;
    return SS_OK;
}

void ss_backend_cuda_close(ss_backend *be) {
    if (!be) return;
    cuda_impl *c = IMPL(be);
    if (c && (c->lt_log || ss_env_flag("SUBSCOPE_TIMING"))) { /* as set now (checked when it opened) */
        if (c->lt_bias16)
            ss_eprintf("%s: cuBLASLt took no fp32 bias with a 16-bit output for %ld product shape%s; their bias was "
                       "rounded to the output's type (SUBSCOPE_BIAS16)\n",
                       c->name, c->lt_bias16, c->lt_bias16 == 1 ? "" : "s");
        if (c->lt_declined > c->lt_bias16)
            ss_eprintf("%s: cuBLASLt declined %ld product%s; %s ran through cuBLAS and separate kernels "
                       "(SUBSCOPE_LT_LOG=1 names them)\n",
                       c->name, c->lt_declined - c->lt_bias16, c->lt_declined - c->lt_bias16 == 1 ? "" : "s",
                       c->lt_declined - c->lt_bias16 == 1 ? "it" : "they");
    }
    if (c) {
        if (c->blas) cublasDestroy(c->blas);
        for (int i = 0; i < c->n_plans; i++) lt_plan_free(&c->plans[i]);
        free(c->plans);
        if (c->lt) cublasLtDestroy(c->lt);
#ifdef SS_CUDA_PCA
        if (c->solver) cusolverDnDestroy(c->solver);
#endif
        /* pinned blocks first: their events belong to the streams */
        while (c->n_pin_free) pin_drop(&c->pin_free[--c->n_pin_free]);
        for (size_t i = 0; i < c->n_pin_live; i++) cudaFreeHost(c->pin_live[i].p); /* a caller's leak: freed with the backend */
        free(c->pin_live);
        if (c->stream) cudaStreamDestroy(c->stream);
        if (c->copy) cudaStreamDestroy(c->copy);
        for (int k = 0; k < 2; k++) {
            if (c->stage[k]) cudaFreeHost(c->stage[k]);
            if (c->stage_done[k]) cudaEventDestroy(c->stage_done[k]);
        }
        for (size_t i = 0; i < c->n_blk; i++) cudaFree(c->blk[i]); /* meta, a16 and ws are among them */
        table_free(&c->meta);
        table_free(&c->mseq);
        table_free(&c->rows);
        free(c->blk);
        free(c->blk_bytes);
        free(c->blk_live);
        free(c);
    }
    free(be);
}

#endif
