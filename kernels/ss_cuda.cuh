/* Included first by every kernels/<op>.cu. Under nvcc it pulls in the CUDA
 * headers and defines the launch/declaration macros that the emulation
 * header (kernels/emu/cuda_emu.h, force-included for host builds) defines
 * for the CPU; then both paths share the device helpers below.
 *
 * Kernel source stays in the C subset of CUDA C: no templates, classes,
 * references or overloads; generic code is written with macros. */
#ifndef SS_CUDA_CUH
#define SS_CUDA_CUH

#include <stdint.h>

#ifndef SS_CUDA_EMU
#ifndef __CUDACC__
#error "kernels/<op>.cu compile with nvcc, or with the host compiler and -include kernels/emu/cuda_emu.h"
#endif
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "ss_pp.h"

/* SS_KERNEL(name, (type, param), ...) { body } declares a kernel. */
#define SS_KERNEL(name, ...) static __global__ void name(SS_PP_MAP(SS_PP_PARAM, SS_PP_COMMA, __VA_ARGS__))
#define SS_LAUNCH(kernel, grid, block, shmem, stream, ...) \
    kernel<<<(grid), (block), (size_t)(shmem), (stream)>>>(__VA_ARGS__)
#define SS_DIM3(x, y, z) dim3((unsigned)(x), (unsigned)(y), (unsigned)(z))
/* Dynamic shared memory as a typed pointer; one untyped extern array so that
 * kernels using different element types do not clash. */
#define SS_DYN_SHARED(T, name)                                \
    extern __shared__ __align__(16) unsigned char ss_dyn_smem_[]; \
    T *name = (T *)ss_dyn_smem_
#define SS_SET_MAX_DYN_SHARED(kernel, bytes) \
    cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)(bytes))
/* What a launcher returns: 0, or the cudaError_t of a failed launch. */
#define SS_LAUNCH_STATUS() ((int)cudaGetLastError())
#define SS_EXTERN_C extern "C"
#endif

#include "subscope/cuda_kernels.h"

#define SS_FULL_MASK 0xffffffffu

/* Unrolls a loop with a compile-time trip count (keeps small arrays indexed
 * by its variable in registers under nvcc; nothing under emulation). */
#ifdef SS_CUDA_EMU
#define SS_UNROLL
#else
#define SS_UNROLL _Pragma("unroll")
#endif

/* Helpers: `static` under nvcc, `static inline` under emulation. */
#ifdef SS_CUDA_EMU
#define SS_DEV static inline
#define SS_HD static inline
#else
#define SS_DEV static __device__ __forceinline__
#define SS_HD static __host__ __device__ __forceinline__
#endif

/* Stores of an fp32 activation in the output type odt (SS_CUDA_F32, _F16 or
 * _BF16; the 16-bit ones rounded to nearest even, as ss_cuda_convert does):
 * one value at index i, or four at 4*i4 (then out 16-byte aligned for fp32). */
SS_DEV void ss_store_act(void *out, int odt, int64_t i, float v) {
    if (odt == SS_CUDA_F32) ((float *)out)[i] = v;
    else if (odt == SS_CUDA_F16) ((uint16_t *)out)[i] = __half_as_ushort(__float2half_rn(v));
    else ((uint16_t *)out)[i] = __bfloat16_as_ushort(__float2bfloat16_rn(v));
}
SS_DEV void ss_store_act4(void *out, int odt, int64_t i4, float4 r) {
    if (odt == SS_CUDA_F32) {
        ((float4 *)out)[i4] = r;
        return;
    }
    ss_store_act(out, odt, 4 * i4, r.x);
    ss_store_act(out, odt, 4 * i4 + 1, r.y);
    ss_store_act(out, odt, 4 * i4 + 2, r.z);
    ss_store_act(out, odt, 4 * i4 + 3, r.w);
}

SS_DEV float ss_warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(SS_FULL_MASK, v, o);
    return v;
}

SS_DEV float ss_warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(SS_FULL_MASK, v, o));
    return v;
}

/* The sum of v over the block, in every thread: warp trees, then each warp
 * adds the warps' partials (red: __shared__ float[32]) in the same order, so
 * the result is the same everywhere and from run to run. Every thread of the
 * block must call it; it may be called again at once (the first barrier
 * keeps a later call from overwriting partials still being read). */
SS_DEV float ss_block_sum(float v, float *red) {
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
    v = ss_warp_sum(v);
    __syncthreads();
    if (lane == 0) red[w] = v;
    __syncthreads();
    return ss_warp_sum(lane < nw ? red[lane] : 0.f);
}

/* Element i of a weight vector stored as SS_CUDA_F32/F16/BF16. The dtype is
 * uniform across a launch, so the branch does not diverge. */
SS_DEV float ss_load_weight(const void *w, int dtype, int64_t i) {
    if (dtype == SS_CUDA_BF16) return __bfloat162float(((const __nv_bfloat16 *)w)[i]);
    if (dtype == SS_CUDA_F16) return __half2float(((const __half *)w)[i]);
    return ((const float *)w)[i];
}

SS_HD int ss_aligned16(const void *p) { return ((uintptr_t)p & 15) == 0; }

/* Elements e..e+3 (e a multiple of 4) of a weight vector: one float4 load where
 * vec4 (an fp32 vector on a 16-byte boundary: ss_weight_vec4), else four loads.
 * A NULL vector reads as zeros (an absent bias). */
SS_HD int ss_weight_vec4(const void *w, int dtype) { return dtype == SS_CUDA_F32 && ss_aligned16(w); }
SS_DEV float4 ss_load_weight4(const void *w, int dtype, int64_t e, int vec4) {
    if (!w) return make_float4(0.f, 0.f, 0.f, 0.f);
    if (vec4) return ((const float4 *)w)[e / 4];
    return make_float4(ss_load_weight(w, dtype, e), ss_load_weight(w, dtype, e + 1), ss_load_weight(w, dtype, e + 2),
                       ss_load_weight(w, dtype, e + 3));
}

#define SS_MIN(a, b) ((a) < (b) ? (a) : (b))
#define SS_MAX(a, b) ((a) > (b) ? (a) : (b))

/* Blocks for a grid-stride loop over `work` items with `threads` per block:
 * enough to fill an H100 several times over, never more than needed. */
static inline int64_t ss_grid_1d(int64_t work, int threads) {
    int64_t b = (work + threads - 1) / threads;
    return b < 1 ? 1 : b > 8192 ? 8192 : b;
}

SS_HD int64_t ss_cdiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

#endif
