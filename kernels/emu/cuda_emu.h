/* CUDA kernel emulation on the host: lets the kernels in kernels/<op>.cu compile
 * with a C11 compiler (`cc -x c -include kernels/emu/cuda_emu.h`) and run on
 * the CPU with their CUDA meaning, so that CI without a GPU tests them.
 *
 * Model: a launch runs its blocks one after another; the threads of a block
 * run as cooperative fibers (ucontext, one small mmap'd stack each, with a
 * guard page) that switch only at __syncthreads and at warp-level operations.
 * __syncthreads is a barrier across the block's fibers; shuffles, votes and
 * __syncwarp are rendezvous of the lanes named in the mask. Static __shared__
 * variables become thread-local statics (one copy, reused block after block:
 * CUDA leaves shared memory uninitialised, so a kernel may not rely on
 * anything else); dynamic shared memory is one buffer per launch, filled
 * with 0xff bytes (NaN as floats) before every block so that reading it
 * before writing shows up. Atomics are plain read-modify-writes: fibers only
 * switch at synchronisation points, so no other thread can interleave.
 *
 * Misuse that would hang or corrupt on a GPU aborts with a message naming
 * the kernel, the block and the source line: a __syncthreads that not all
 * threads reach, a warp operation whose lanes do not all arrive (or arrive
 * at different operations), a block/grid shape or a shared-memory request
 * beyond sm_90 limits, a kernel called without SS_LAUNCH.
 *
 * Kernels are declared with SS_KERNEL(name, (type, param), ...) and launched
 * with SS_LAUNCH(name, grid, block, shmem_bytes, stream, args...); both are
 * defined for nvcc in kernels/ss_cuda.cuh. See kernels/README.md. */
#ifndef SS_CUDA_EMU_H
#define SS_CUDA_EMU_H

#define SS_CUDA_EMU 1

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "subscope/util.h"
#include "../ss_pp.h"

/* ---- types ------------------------------------------------------------ */
typedef struct { unsigned x, y, z; } dim3;
typedef struct { unsigned x, y, z; } uint3;
typedef struct CUstream_st *cudaStream_t; /* never dereferenced */
typedef int cudaError_t;
enum { cudaSuccess = 0, cudaErrorInvalidValue = 1 };

typedef struct __attribute__((aligned(16))) { float x, y, z, w; } float4;
typedef struct __attribute__((aligned(8))) { float x, y; } float2;
typedef struct __attribute__((aligned(16))) { int x, y, z, w; } int4;
static inline float4 make_float4(float x, float y, float z, float w) { float4 v = {x, y, z, w}; return v; }
static inline float2 make_float2(float x, float y) { float2 v = {x, y}; return v; }

/* IEEE binary16 and bfloat16 as their bit patterns; conversions round to
 * nearest even like CUDA's __float2half / __float2bfloat16. */
typedef struct { uint16_t x; } __half;
typedef struct { uint16_t x; } __nv_bfloat16;
static inline float __half2float(__half h) { return ss_f16_to_f32(h.x); }
static inline __half __float2half(float f) { __half h = {ss_f32_to_f16(f)}; return h; }
static inline __half __float2half_rn(float f) { return __float2half(f); }
static inline float __bfloat162float(__nv_bfloat16 h) { return ss_bf16_to_f32(h.x); }
static inline __nv_bfloat16 __float2bfloat16(float f) { __nv_bfloat16 h = {ss_f32_to_bf16(f)}; return h; }
static inline __nv_bfloat16 __float2bfloat16_rn(float f) { return __float2bfloat16(f); }
static inline unsigned short __bfloat16_as_ushort(__nv_bfloat16 h) { return h.x; }
static inline unsigned short __half_as_ushort(__half h) { return h.x; }

/* ---- qualifiers ------------------------------------------------------- */
#define __global__
#define __host__
#define __device__ static inline
#define __forceinline__ inline
#define __noinline__
#define __shared__ static _Thread_local
#define __constant__ static const
#define __restrict__ restrict
#define __align__(n) __attribute__((aligned(n)))
#define __launch_bounds__(...)

/* ---- math ------------------------------------------------------------- */
#define __expf(x) expf(x)
#define __logf(x) logf(x)
#define __sinf(x) sinf(x)
#define __cosf(x) cosf(x)
#define __powf(x, y) powf(x, y)
#define __fdividef(a, b) ((a) / (b))
#define __frcp_rn(x) (1.0f / (x))
#define __fsqrt_rn(x) sqrtf(x)
#define __fmaf_rn(a, b, c) fmaf(a, b, c)
#define __fadd_rn(a, b) ((a) + (b))
#define __fmul_rn(a, b) ((a) * (b))
#define __dadd_rn(a, b) ((double)(a) + (double)(b))
#define __dsub_rn(a, b) ((double)(a) - (double)(b))
#define __dmul_rn(a, b) ((double)(a) * (double)(b))
#define __ddiv_rn(a, b) ((double)(a) / (double)(b))
#define __saturatef(x) fminf(fmaxf((x), 0.0f), 1.0f)
#define __ldg(p) (*(p))
static inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
static inline int __float_as_int(float f) { int i; memcpy(&i, &f, 4); return i; }
static inline float __int_as_float(int i) { float f; memcpy(&f, &i, 4); return f; }
static inline unsigned __float_as_uint(float f) { unsigned u; memcpy(&u, &f, 4); return u; }
static inline float __uint_as_float(unsigned u) { float f; memcpy(&f, &u, 4); return f; }
static inline int __popc(unsigned x) { return __builtin_popcount(x); }
static inline int __ffs(int x) { return __builtin_ffs(x); }
static inline int __clz(int x) { return x ? __builtin_clz((unsigned)x) : 32; }

/* ---- thread geometry ---------------------------------------------------- */
extern _Thread_local uint3 ss_emu_threadIdx_, ss_emu_blockIdx_;
extern _Thread_local dim3 ss_emu_blockDim_, ss_emu_gridDim_;
/* const lvalues: assigning to threadIdx.x fails to compile, as in CUDA */
#define threadIdx (*(const uint3 *)&ss_emu_threadIdx_)
#define blockIdx (*(const uint3 *)&ss_emu_blockIdx_)
#define blockDim (*(const dim3 *)&ss_emu_blockDim_)
#define gridDim (*(const dim3 *)&ss_emu_gridDim_)
#define warpSize 32

/* ---- synchronisation ---------------------------------------------------- */
enum { SS_EMU_BAR_PLAIN, SS_EMU_BAR_COUNT, SS_EMU_BAR_AND, SS_EMU_BAR_OR };
int ss_emu_syncthreads_(int kind, int pred, const char *file, int line);
#define __syncthreads() ((void)ss_emu_syncthreads_(SS_EMU_BAR_PLAIN, 0, __FILE__, __LINE__))
#define __syncthreads_count(p) ss_emu_syncthreads_(SS_EMU_BAR_COUNT, (p) != 0, __FILE__, __LINE__)
#define __syncthreads_and(p) ss_emu_syncthreads_(SS_EMU_BAR_AND, (p) != 0, __FILE__, __LINE__)
#define __syncthreads_or(p) ss_emu_syncthreads_(SS_EMU_BAR_OR, (p) != 0, __FILE__, __LINE__)
#define __threadfence() ((void)0)
#define __threadfence_block() ((void)0)

enum { SS_EMU_WOP_SYNC, SS_EMU_WOP_IDX, SS_EMU_WOP_XOR, SS_EMU_WOP_DOWN, SS_EMU_WOP_UP,
       SS_EMU_WOP_BALLOT, SS_EMU_WOP_ANY, SS_EMU_WOP_ALL, SS_EMU_WOP_COLLECTIVE };
/* One lane's part of a warp operation: blocks until every lane in mask has
 * arrived at the same operation, then returns this lane's result. */
uint64_t ss_emu_warp_op_(int op, unsigned mask, uint64_t val, int param, int width, const char *file, int line);

#define SS_EMU_WOP_T(name, T)                                                                             \
    static inline T ss_emu_##name##_(int op, unsigned mask, T v, int param, int width, const char *f, int l) { \
        uint64_t bits = 0;                                                                                \
        memcpy(&bits, &v, sizeof v);                                                                      \
        bits = ss_emu_warp_op_(op, mask, bits, param, width, f, l);                                       \
        memcpy(&v, &bits, sizeof v);                                                                      \
        return v;                                                                                         \
    }
SS_EMU_WOP_T(shfl_f, float)
SS_EMU_WOP_T(shfl_d, double)
SS_EMU_WOP_T(shfl_i, int)
SS_EMU_WOP_T(shfl_u, unsigned)
SS_EMU_WOP_T(shfl_l, long)
SS_EMU_WOP_T(shfl_ul, unsigned long)
SS_EMU_WOP_T(shfl_ll, long long)
SS_EMU_WOP_T(shfl_ull, unsigned long long)
#define SS_EMU_SHFL_(op, mask, v, p, w)                                                                   \
    _Generic((v), float: ss_emu_shfl_f_, double: ss_emu_shfl_d_, int: ss_emu_shfl_i_, unsigned: ss_emu_shfl_u_, \
             long: ss_emu_shfl_l_, unsigned long: ss_emu_shfl_ul_, long long: ss_emu_shfl_ll_,               \
             unsigned long long: ss_emu_shfl_ull_)(op, (mask), (v), (int)(p), (int)(w), __FILE__, __LINE__)
/* The optional width argument defaults to 32. */
#define SS_EMU_SHFL_PICK_(op, mask, v, p, w, ...) SS_EMU_SHFL_(op, mask, v, p, w)
#define __shfl_sync(...) SS_EMU_SHFL_PICK_(SS_EMU_WOP_IDX, __VA_ARGS__, 32, 0)
#define __shfl_xor_sync(...) SS_EMU_SHFL_PICK_(SS_EMU_WOP_XOR, __VA_ARGS__, 32, 0)
#define __shfl_down_sync(...) SS_EMU_SHFL_PICK_(SS_EMU_WOP_DOWN, __VA_ARGS__, 32, 0)
#define __shfl_up_sync(...) SS_EMU_SHFL_PICK_(SS_EMU_WOP_UP, __VA_ARGS__, 32, 0)
#define __ballot_sync(mask, p) \
    ((unsigned)ss_emu_warp_op_(SS_EMU_WOP_BALLOT, (mask), (p) != 0, 0, 32, __FILE__, __LINE__))
#define __any_sync(mask, p) ((int)ss_emu_warp_op_(SS_EMU_WOP_ANY, (mask), (p) != 0, 0, 32, __FILE__, __LINE__))
#define __all_sync(mask, p) ((int)ss_emu_warp_op_(SS_EMU_WOP_ALL, (mask), (p) != 0, 0, 32, __FILE__, __LINE__))
/* __syncwarp() or __syncwarp(mask): the compound literal holds the default
 * full mask followed by the optional argument; the last element wins. */
#define __syncwarp(...)                                                                              \
    ((void)ss_emu_warp_op_(SS_EMU_WOP_SYNC,                                                          \
                           (unsigned[]){0xffffffffu, __VA_ARGS__}[sizeof((unsigned[]){0xffffffffu, __VA_ARGS__}) / \
                                                                      sizeof(unsigned) - 1],        \
                           0, 0, 32, __FILE__, __LINE__))
#define __activemask() 0xffffffffu
/* A warp-wide instruction (mma.sync, ldmatrix; threads = 32) or a
 * warpgroup-wide one (wgmma; 128) done at once: each thread of the group (all
 * must take part) passes a pointer to its operands; when the last one
 * arrives, fn runs once with the pointers (in thread order) and computes
 * every thread's result, then the threads go on. One switch per thread
 * instead of the dozens of shuffles that would gather the operands. */
void ss_emu_warp_collective_(void (*fn)(void *const *lane_args), void *args, int threads, const char *what,
                             const char *file, int line);

/* ---- asynchronous copies (cp.async, sm_80) -------------------------------
 * Each thread's copies are held back, as on the GPU, until it waits for
 * their group: ss_emu_cp_async_ reads the source at once (global memory
 * does not change under a kernel) and queues the write to shared memory;
 * commit closes the thread's open group; wait(n) writes every committed
 * group but the newest n. A kernel that reads the destination before its
 * wait (and the __syncthreads after it, for other threads' copies) reads
 * what was there before, and the tests see it (ss_emu_set_copy_timing
 * below lands them at once instead). Used through mma.cuh's
 * ss_cp_async16 / ss_cp_async_commit / ss_cp_async_wait. */
void ss_emu_cp_async_(void *dst, const void *src, int cp_bytes, int src_bytes, const char *file, int line);
void ss_emu_cp_async_commit_(const char *file, int line);
void ss_emu_cp_async_wait_(int newest_pending, const char *file, int line);
/* Aborts naming what and where unless p is a multiple of align bytes. */
void ss_emu_check_align_(const void *p, unsigned align, const char *what, const char *file, int line);

/* ---- atomics (the old value is returned, as in CUDA) -------------------- */
static inline float ss_emu_atomic_add_f_(float *p, float v) { float o = *p; *p = o + v; return o; }
static inline double ss_emu_atomic_add_d_(double *p, double v) { double o = *p; *p = o + v; return o; }
static inline int ss_emu_atomic_add_i_(int *p, int v) { int o = *p; *p = (int)((unsigned)o + (unsigned)v); return o; }
static inline unsigned ss_emu_atomic_add_u_(unsigned *p, unsigned v) { unsigned o = *p; *p = o + v; return o; }
static inline unsigned long long ss_emu_atomic_add_ull_(unsigned long long *p, unsigned long long v) {
    unsigned long long o = *p; *p = o + v; return o;
}
#define atomicAdd(p, v)                                                                               \
    _Generic((p), float *: ss_emu_atomic_add_f_, double *: ss_emu_atomic_add_d_, int *: ss_emu_atomic_add_i_, \
             unsigned *: ss_emu_atomic_add_u_, unsigned long long *: ss_emu_atomic_add_ull_)((p), (v))
static inline int ss_emu_atomic_max_i_(int *p, int v) { int o = *p; if (v > o) *p = v; return o; }
static inline unsigned ss_emu_atomic_max_u_(unsigned *p, unsigned v) { unsigned o = *p; if (v > o) *p = v; return o; }
#define atomicMax(p, v) _Generic((p), int *: ss_emu_atomic_max_i_, unsigned *: ss_emu_atomic_max_u_)((p), (v))
static inline int ss_emu_atomic_min_i_(int *p, int v) { int o = *p; if (v < o) *p = v; return o; }
#define atomicMin(p, v) ss_emu_atomic_min_i_((p), (v))
static inline int ss_emu_atomic_cas_i_(int *p, int cmp, int v) { int o = *p; if (o == cmp) *p = v; return o; }
static inline unsigned ss_emu_atomic_cas_u_(unsigned *p, unsigned cmp, unsigned v) {
    unsigned o = *p; if (o == cmp) *p = v; return o;
}
#define atomicCAS(p, c, v) _Generic((p), int *: ss_emu_atomic_cas_i_, unsigned *: ss_emu_atomic_cas_u_)((p), (c), (v))
static inline int ss_emu_atomic_exch_i_(int *p, int v) { int o = *p; *p = v; return o; }
static inline float ss_emu_atomic_exch_f_(float *p, float v) { float o = *p; *p = v; return o; }
#define atomicExch(p, v) _Generic((p), int *: ss_emu_atomic_exch_i_, float *: ss_emu_atomic_exch_f_)((p), (v))

/* ---- launches ----------------------------------------------------------- */
static inline dim3 ss_emu_dim3_id_(dim3 d) { return d; }
static inline dim3 ss_emu_dim3_int_(long long n) {
    dim3 d = {(unsigned)n, 1, 1};
    if (n < 0 || n > 0xffffffffLL) d.x = 0; /* rejected by the launch check */
    return d;
}
#define ss_emu_dim3_(v) _Generic((v), dim3: ss_emu_dim3_id_, default: ss_emu_dim3_int_)(v)

void ss_emu_configure_(dim3 grid, dim3 block, size_t shmem, cudaStream_t stream, const char *kernel,
                       const char *file, int line);
void ss_emu_launch_(const char *kernel, void (*thunk)(void *), void *args);
void *ss_emu_dyn_shared_(void);
/* Shared-memory addresses as the GPU encodes them (offsets from the start of
 * the launch's dynamic shared memory, the only shared memory whose address
 * the emulation can give a number): p's offset, or the bytes at an offset,
 * aborting when they are not in it. For wgmma's matrix descriptors. */
uint32_t ss_emu_smem_offset_(const void *p, const char *what, const char *file, int line);
const void *ss_emu_smem_at_(uint64_t offset, uint64_t bytes, const char *what);
void ss_emu_set_max_dyn_shared_(const char *kernel, size_t bytes);

/* A kernel becomes three functions: the body (run by every fiber), a thunk
 * that unpacks the argument struct for the body, and a host stub with the
 * kernel's own signature that packs the arguments and runs the launch that
 * SS_LAUNCH configured just before calling it (as nvcc's <<<>>> does). */
#define SS_KERNEL(name, ...)                                                                      \
    struct name##_ss_args { SS_PP_MAP(SS_PP_FIELD, SS_PP_NOSEP, __VA_ARGS__) };                \
    static void name##_ss_body(SS_PP_MAP(SS_PP_PARAM, SS_PP_COMMA, __VA_ARGS__));             \
    static void name##_ss_thunk(void *p_) {                                                       \
        struct name##_ss_args *a_ = p_;                                                           \
        name##_ss_body(SS_PP_MAP(SS_PP_MEMBER, SS_PP_COMMA, __VA_ARGS__));                     \
    }                                                                                             \
    static void name(SS_PP_MAP(SS_PP_PARAM, SS_PP_COMMA, __VA_ARGS__)) {                       \
        struct name##_ss_args a_ = {SS_PP_MAP(SS_PP_NAME, SS_PP_COMMA, __VA_ARGS__)};          \
        ss_emu_launch_(#name, name##_ss_thunk, &a_);                                              \
    }                                                                                             \
    static void name##_ss_body(SS_PP_MAP(SS_PP_PARAM, SS_PP_COMMA, __VA_ARGS__))

#define SS_LAUNCH(kernel, grid, block, shmem, stream, ...)                                          \
    do {                                                                                            \
        ss_emu_configure_(ss_emu_dim3_(grid), ss_emu_dim3_(block), (size_t)(shmem), (stream), #kernel, \
                          __FILE__, __LINE__);                                                      \
        kernel(__VA_ARGS__);                                                                        \
    } while (0)
#define SS_DIM3(x, y, z) ((dim3){(unsigned)(x), (unsigned)(y), (unsigned)(z)})
#define SS_DYN_SHARED(T, name) T *name = (T *)ss_emu_dyn_shared_()
/* Opt in to more than 48 KB of dynamic shared memory for kernel. */
#define SS_SET_MAX_DYN_SHARED(kernel, bytes) ss_emu_set_max_dyn_shared_(#kernel, (size_t)(bytes))
#define SS_LAUNCH_STATUS() 0
#define SS_EXTERN_C

/* ---- controls for tests ------------------------------------------------- */
/* Order in which runnable fibers are resumed: forward (thread 0 first),
 * reverse, or a seeded shuffle. Kernels must give the same result in every
 * order; running tests in more than one exposes missing barriers. */
typedef enum { SS_EMU_FORWARD, SS_EMU_REVERSE, SS_EMU_SHUFFLE } ss_emu_schedule;
void ss_emu_set_schedule(ss_emu_schedule s, unsigned seed);
/* When cp.async copies land: at the wait for their group (the default,
 * the latest a GPU may take: reading too early shows up), or at once when
 * issued (the earliest: overwriting a buffer that another warp still reads,
 * for want of a __syncthreads, shows up when another warp runs ahead). */
typedef enum { SS_EMU_COPY_AT_WAIT, SS_EMU_COPY_AT_ISSUE } ss_emu_copy_timing;
void ss_emu_set_copy_timing(ss_emu_copy_timing when);
typedef struct {
    uint64_t launches, blocks, threads, switches;
} ss_emu_stats;
ss_emu_stats ss_emu_get_stats(void);
/* How many times a kernel (by its name, as SS_KERNEL declared it) has been
 * launched on this thread: for tests that must know a path was taken. */
long ss_emu_launch_count(const char *kernel);

#endif
