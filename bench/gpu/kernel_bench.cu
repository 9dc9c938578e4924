/* Per-kernel microbenchmarks of subscope's CUDA kernels and of the cuBLAS
 * matrix products of the forward pass, on one GPU. Writes one JSON document
 * (bench/README.md, "kernels") and a short table on stderr.
 *
 *   build/bench/kernel_bench [--tokens R] [--reps N] [--warmup W] [--only SUBSTR] [--json FILE]
 *
 * Method, for every case: inputs filled on the device with random values;
 * W untimed launches, then N timed ones; before every launch (timed or not)
 * the L2 cache is flushed by reading a buffer of 4x the L2 size, so the
 * kernel starts with a cold cache that holds only clean, unrelated lines (a
 * memset flush would leave dirty lines whose write-back lands in the timed
 * region). Each launch is timed alone with a pair of CUDA events on one
 * stream; the median of the N times is reported with the minimum. GB/s =
 * logical bytes (each input read once, each output written once) / median
 * time; TFLOP/s = useful FLOPs / median time. Percentages are against
 * (a) the device-to-device cudaMemcpy bandwidth measured at the start of the
 * same run (read + write bytes), (b) the theoretical DRAM bandwidth from the
 * device attributes, (c) the peak FLOP/s of the precision used, from a table
 * of known GPUs (bench/README.md gives the numbers and their sources).
 *
 * GEMMs are issued as src/backend/cuda_backend.c's cu_matmul issues them: Sgemm
 * with default math (fp32) or TF32 tensor ops (--tf32), and GemmEx with bf16
 * operands and an fp32 result (--dtype bfloat16); a bf16-result GemmEx is
 * added for reference (what a bf16 PyTorch Linear runs).
 *
 * Written as .cu (nvcc) rather than .c: it needs a few device kernels of its
 * own (random fill, L2 flush, a reference copy kernel) and bf16 types for the
 * GemmEx case, and it links the same nvcc-built objects of kernels/*.cu that
 * bin/subscope links, so the code measured is the code shipped.
 *
 * SIGTERM or SIGINT (a time limit's `timeout`, ^C) cuts the run cleanly: the
 * handler only sets a flag, which is checked before each case, between the
 * repetitions of one and in the set-up between cases (each buffer's allocation
 * and fill: setup_point); the cases finished by then are written (--json, else
 * stdout) with "cut": {"signal", "before": the case not finished, "cases_done"}
 * and "stopped", and the exit status is 4.
 *
 * Exit status: 0 done (individual cases that fail are recorded with their
 * error and make the status 1), 2 bad arguments, 3 no usable GPU, 4 cut by
 * SIGTERM/SIGINT (the finished cases written, as above). */
#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <csignal>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <functional>
#include <string>
#include <vector>

#include "subscope/cuda_kernels.h"
#include "subscope/cov_blk.h"
#include "subscope/gemm_split.h"

/* ---------------- device helpers ---------------- */

__device__ __forceinline__ uint32_t hash32(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return (uint32_t)x;
}

/* Roughly normal values (sum of two uniforms, centred), times scale. */
__global__ void k_fill_f32(float *p, int64_t n, uint64_t seed, float scale) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        uint32_t h = hash32(seed * 0x9e3779b97f4a7c15ULL + (uint64_t)i);
        float a = (float)(h & 0xffff) / 65536.f, b = (float)(h >> 16) / 65536.f;
        p[i] = (a + b - 1.f) * scale;
    }
}

__global__ void k_fill_bf16(__nv_bfloat16 *p, int64_t n, uint64_t seed, float scale) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        uint32_t h = hash32(seed * 0x9e3779b97f4a7c15ULL + (uint64_t)i);
        float a = (float)(h & 0xffff) / 65536.f, b = (float)(h >> 16) / 65536.f;
        p[i] = __float2bfloat16((a + b - 1.f) * scale);
    }
}

__global__ void k_fill_ids(int32_t *p, int64_t n, uint64_t seed, int32_t modulo) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        p[i] = (int32_t)(hash32(seed * 0x9e3779b97f4a7c15ULL + (uint64_t)i) % (uint32_t)modulo);
}

/* Reads the whole flush buffer; the conditional store keeps the loads alive. */
__global__ void k_flush(const float4 *p, int64_t n4, float *sink) {
    float acc = 0.f;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n4; i += (int64_t)gridDim.x * blockDim.x) {
        float4 v = p[i];
        acc += v.x + v.y + v.z + v.w;
    }
    if (acc == 1234.5f) sink[0] = acc;
}

/* A plain float4 copy: a second reference for what a streaming kernel can reach. */
__global__ void k_copy(float4 *dst, const float4 *src, int64_t n4) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n4; i += (int64_t)gridDim.x * blockDim.x)
        dst[i] = src[i];
}

/* ---------------- host state ---------------- */

static struct {
    int reps = 20, warmup = 3;
    int64_t tokens = 16384;
    const char *only = nullptr;
    const char *json = nullptr;
    cudaStream_t stream = nullptr;
    cublasHandle_t blas = nullptr;
    cudaEvent_t ev0 = nullptr, ev1 = nullptr;
    float *flush = nullptr, *sink = nullptr;
    int64_t flush_floats = 0;
    int grid = 0; /* blocks for grid-stride helper kernels */
    int failures = 0;
    bool late = false; /* the second pass: the kernels unproven() names */
} G;

struct Peaks {
    const char *label; /* "table: ..." or "unknown" */
    double fp32, tf32, bf16; /* dense TFLOP/s; 0 = unknown */
    double hbm_gbs;          /* the datasheet's memory bandwidth, GB/s */
};

struct DeviceInfo {
    char name[256];
    int cc_major, cc_minor, sms;
    int64_t l2_bytes, mem_bytes;
    int clock_khz, mem_clock_khz, bus_bits; /* 0 = unknown */
    double theo_gbs;                        /* 2 * mem clock * bus width / 8, or 0 */
    Peaks peaks;
    int driver, runtime, cublas;
};

static DeviceInfo D;

struct Result {
    std::string group, name, op, shape, dtype, peak_kind, error;
    double bytes = 0, flops = 0;
    double median_ms = 0, min_ms = 0;
    bool memory_bound = false, target_mem80 = false;
};

static std::vector<Result> R;
static double copy_gbs = 0, copy_kernel_gbs = 0;

static void write_json(FILE *f);
static std::string g_stopped; /* why a run stopped early (die after some cases) */
static volatile sig_atomic_t g_signal = 0; /* SIGTERM or SIGINT, once received */
static std::string g_cut_before;           /* the case a signal cut (not finished) */

/* Stops the run. Where cases have run and --json was given, their results
 * are written first, with the reason as "stopped": a fault in a late case
 * (a sticky CUDA error) must not cost the numbers measured before it. */
static void die(int code, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "kernel_bench: %s\n", msg);
    if (!R.empty() && g_stopped.empty()) {
        g_stopped = msg;
        G.failures++;
        FILE *f = G.json ? fopen(G.json, "w") : stdout;
        if (f) {
            write_json(f);
            if (f == stdout) fflush(f);
            else if (fclose(f) == 0)
                fprintf(stderr, "kernel_bench: the %zu cases before the stop are in %s\n", R.size(), G.json);
        }
    }
    exit(code);
}

/* Async-signal-safe: sets the flag that cut_point() reads. */
static void on_signal(int sig) { g_signal = sig; }

static void catch_signals() {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, nullptr);
    sigaction(SIGINT, &sa, nullptr);
}

/* Before each case and each repetition of one: after SIGTERM/SIGINT, the cases
 * finished so far are written through die() with the "cut" mark, and exit 4. */
static void cut_point(const std::string &next) {
    if (!g_signal) return;
    g_cut_before = next;
    die(4, "cut by %s before %s finished (%zu cases done)", g_signal == SIGINT ? "SIGINT" : "SIGTERM", next.c_str(),
        R.size());
}

/* The set-up between cases (each buffer allocated and filled: Buf, fill*): the same stop, naming
 * the set-up after the last case finished. A set-up of large buffers takes seconds, and a
 * signal there waited for the next launch's cut_point (the time limit's `timeout -k` may kill
 * first, and the finished cases are lost). */
static void setup_point() {
    if (!g_signal) return;
    cut_point(R.empty() ? std::string("the set-up of the first case") : "the set-up after " + R.back().name);
}

#define CK(call)                                                                                 \
    do {                                                                                         \
        cudaError_t e_ = (call);                                                                 \
        if (e_ != cudaSuccess) die(1, "%s:%d: %s: %s", __FILE__, __LINE__, #call, cudaGetErrorString(e_)); \
    } while (0)

/* Datasheet numbers, dense (no structured sparsity), TFLOP/s and GB/s.
 * Sources and the rule for the SXM/PCIe split are in bench/README.md. */
static Peaks lookup_peaks(const char *name, int sms) {
    /* Grace Hopper: an H100 die (same compute peaks); its memory (96 GB HBM3 or
     * 144 GB HBM3e) varies, so no datasheet bandwidth: the attributes give it. */
    if (strstr(name, "GH200")) return {"table: GH200 (H100 SXM compute)", 66.9, 494.7, 989.4, 0};
    if (strstr(name, "H200 NVL")) return {"table: H200 NVL", 60.0, 417.5, 835.5, 4800};
    if (strstr(name, "H200")) return {"table: H200 SXM", 66.9, 494.7, 989.4, 4800};
    if (strstr(name, "H100 NVL")) return {"table: H100 NVL", 60.0, 417.5, 835.5, 3900};
    if (strstr(name, "H100 PCIe") || (strstr(name, "H100") && sms == 114))
        return {"table: H100 PCIe", 51.2, 378.0, 756.0, 2000};
    if (strstr(name, "H100") && sms == 132) return {"table: H100 SXM5", 66.9, 494.7, 989.4, 3350};
    return {"unknown", 0, 0, 0, 0};
}

static int attr(cudaDeviceAttr a, int dev) {
    int v = 0;
    if (cudaDeviceGetAttribute(&v, a, dev) != cudaSuccess) {
        cudaGetLastError();
        return 0;
    }
    return v;
}

static void device_info(int dev) {
    cudaDeviceProp p;
    CK(cudaGetDeviceProperties(&p, dev));
    snprintf(D.name, sizeof D.name, "%s", p.name);
    D.cc_major = p.major;
    D.cc_minor = p.minor;
    D.sms = p.multiProcessorCount;
    D.l2_bytes = p.l2CacheSize;
    D.mem_bytes = (int64_t)p.totalGlobalMem;
    /* cudaDeviceProp lost clockRate and memoryClockRate in CUDA 13; the
     * attributes remain (and may be absent on some future driver: 0). */
    D.clock_khz = attr(cudaDevAttrClockRate, dev);
    D.mem_clock_khz = attr(cudaDevAttrMemoryClockRate, dev);
    D.bus_bits = attr(cudaDevAttrGlobalMemoryBusWidth, dev);
    D.theo_gbs = D.mem_clock_khz > 0 && D.bus_bits > 0 ? 2.0 * D.mem_clock_khz * 1e3 * (D.bus_bits / 8.0) / 1e9 : 0;
    D.peaks = lookup_peaks(D.name, D.sms);
    cudaDriverGetVersion(&D.driver);
    cudaRuntimeGetVersion(&D.runtime);
    cublasGetVersion(G.blas, &D.cublas);
}

/* ---------------- timing ---------------- */

static void flush_l2() {
    k_flush<<<G.grid, 256, 0, G.stream>>>((const float4 *)G.flush, G.flush_floats / 4, G.sink);
}

/* Kernels new to the GPU are timed in a second pass after all the others: a
 * fault in one leaves a sticky CUDA error that fails every later case, and
 * the first pass's numbers should survive it. Now only the wgmma covariance
 * kernel (the tensor-core attention left this pass once an H100 had checked
 * it) and the covariance's cuBLASLt cases (bench_cov_lt). */
static bool unproven(const std::string &name) {
    return name.find(".cov_lower_wg.") != std::string::npos ||
           (name.rfind("cov.", 0) == 0 && name.find(".lt") != std::string::npos);
}
static bool selected(const std::string &name) {
    return (!G.only || strstr(name.c_str(), G.only)) && unproven(name) == G.late;
}

/* op() enqueues one launch on G.stream and returns 0 or an error code (a
 * cudaError_t or cublasStatus_t, as the string err_str() makes of it). */
typedef std::function<int()> Op;

#ifndef KB_JSON_SELFTEST
/* One launch of op, timed: returns op's code (0 or the launch's refusal), its time in *ms. */
static int time_one(const Result &r, const Op &op, float *ms) {
    flush_l2();
    CK(cudaEventRecord(G.ev0, G.stream));
    int rc = op();
    CK(cudaEventRecord(G.ev1, G.stream));
    cudaError_t e = cudaStreamSynchronize(G.stream);
    if (e == cudaSuccess) e = cudaGetLastError();
    /* An error while the work ran (illegal address, ...) is sticky: the
     * context is unusable, so stop rather than record garbage. */
    if (e != cudaSuccess) die(1, "%s (%s): %s; stopping", r.name.c_str(), r.shape.c_str(), cudaGetErrorString(e));
    if (!rc) CK(cudaEventElapsedTime(ms, G.ev0, G.ev1));
    return rc;
}
#else
/* The selftest's cases run on the host (no GPU): op's wall time. */
static int time_one(const Result &, const Op &op, float *ms) {
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    int rc = op();
    clock_gettime(CLOCK_MONOTONIC, &b);
    *ms = (float)((b.tv_sec - a.tv_sec) * 1e3 + (b.tv_nsec - a.tv_nsec) * 1e-6);
    return rc;
}
#endif

static bool time_op(Result &r, const Op &op, const char *(*err_str)(int)) {
    std::vector<float> ms;
    for (int i = 0; i < G.warmup + G.reps; i++) {
        cut_point(r.name);
        float t = 0;
        int rc = time_one(r, op, &t);
        if (rc) {
            /* Refused at launch (bad arguments, no kernel image, cuBLAS status):
             * recorded, and the other cases go on. */
            r.error = err_str(rc);
            return false;
        }
        if (i >= G.warmup) ms.push_back(t);
    }
    std::sort(ms.begin(), ms.end());
    size_t n = ms.size();
    r.median_ms = n % 2 ? ms[n / 2] : 0.5 * (ms[n / 2 - 1] + ms[n / 2]);
    r.min_ms = ms[0];
    return true;
}

static const char *cuda_err_str(int rc) { return cudaGetErrorString((cudaError_t)rc); }
static const char *blas_err_str(int rc) { return cublasGetStatusString((cublasStatus_t)rc); }

static double peak_of(const std::string &kind) {
    if (kind == "fp32") return D.peaks.fp32;
    if (kind == "tf32") return D.peaks.tf32;
    if (kind == "bf16") return D.peaks.bf16;
    return 0;
}

static void report(Result &r) {
    if (!r.error.empty()) {
        G.failures++;
        fprintf(stderr, "%-34s %-22s FAILED: %s\n", r.name.c_str(), r.shape.c_str(), r.error.c_str());
        return;
    }
    double s = r.median_ms * 1e-3;
    fprintf(stderr, "%-34s %-22s %9.3f ms", r.name.c_str(), r.shape.c_str(), r.median_ms);
    if (r.bytes > 0) fprintf(stderr, " %8.1f GB/s", r.bytes / s / 1e9);
    if (r.memory_bound && copy_gbs > 0) fprintf(stderr, " (%5.1f%% of copy)", 100.0 * r.bytes / s / 1e9 / copy_gbs);
    if (r.flops > 0) {
        fprintf(stderr, " %8.2f TFLOP/s", r.flops / s / 1e12);
        double pk = peak_of(r.peak_kind);
        if (pk > 0) fprintf(stderr, " (%5.1f%% of %s peak)", 100.0 * r.flops / s / 1e12 / pk, r.peak_kind.c_str());
    }
    fprintf(stderr, "\n");
}

static void run_case(Result r, const Op &op, const char *(*err_str)(int) = cuda_err_str) {
    if (!selected(r.name)) return;
    time_op(r, op, err_str);
    report(r);
    R.push_back(r);
}

/* ---------------- buffers ---------------- */

struct Buf {
    void *p = nullptr;
    size_t bytes = 0;
    Buf() = default;
    explicit Buf(size_t b) : bytes(b) {
        setup_point();
        cudaError_t e = cudaMalloc(&p, b ? b : 1);
        if (e != cudaSuccess) die(1, "cudaMalloc(%.1f MiB): %s", b / 1048576.0, cudaGetErrorString(e));
    }
    ~Buf() { cudaFree(p); }
    Buf(const Buf &) = delete;
    Buf &operator=(const Buf &) = delete;
    float *f() const { return (float *)p; }
};

static uint64_t g_seed = 1;

static void fill(const Buf &b, float scale = 1.f) {
    setup_point();
    k_fill_f32<<<G.grid, 256, 0, G.stream>>>(b.f(), (int64_t)(b.bytes / 4), g_seed++, scale);
    CK(cudaGetLastError());
}
static void fill_bf16(const Buf &b, float scale = 1.f) {
    setup_point();
    k_fill_bf16<<<G.grid, 256, 0, G.stream>>>((__nv_bfloat16 *)b.p, (int64_t)(b.bytes / 2), g_seed++, scale);
    CK(cudaGetLastError());
}
static void fill_ids(const Buf &b, int32_t modulo) {
    setup_point();
    k_fill_ids<<<G.grid, 256, 0, G.stream>>>((int32_t *)b.p, (int64_t)(b.bytes / 4), g_seed++, modulo);
    CK(cudaGetLastError());
}

static std::string fmt(const char *f, ...) {
    char buf[256];
    va_list ap;
    va_start(ap, f);
    vsnprintf(buf, sizeof buf, f, ap);
    va_end(ap);
    return buf;
}

static Result mk(const char *group, const std::string &name, const char *op, const std::string &shape,
                 const char *dtype, double bytes, double flops, const char *peak_kind, bool mem_bound, bool target) {
    Result r;
    r.group = group;
    r.name = name;
    r.op = op;
    r.shape = shape;
    r.dtype = dtype;
    r.bytes = bytes;
    r.flops = flops;
    r.peak_kind = peak_kind;
    r.memory_bound = mem_bound;
    r.target_mem80 = target;
    return r;
}

/* ---------------- the cases ---------------- */

static void bench_copy() {
    /* 1 GiB each way (>> L2): the bandwidth a streaming kernel can hope for. */
    const size_t bytes = (size_t)1 << 30;
    Buf a(bytes), b(bytes);
    fill(a);
    Result r = mk("reference", "copy.cudaMemcpyD2D", "cudaMemcpyAsync", "1 GiB", "f32", 2.0 * bytes, 0, "", true, false);
    time_op(r, [&] { return (int)cudaMemcpyAsync(b.p, a.p, bytes, cudaMemcpyDeviceToDevice, G.stream); }, cuda_err_str);
    if (!r.error.empty()) die(1, "device-to-device copy failed: %s", r.error.c_str());
    copy_gbs = r.bytes / (r.median_ms * 1e-3) / 1e9;
    report(r);
    R.push_back(r);
    Result k = mk("reference", "copy.float4_kernel", "k_copy", "1 GiB", "f32", 2.0 * bytes, 0, "", true, false);
    time_op(k, [&] {
        k_copy<<<G.grid, 256, 0, G.stream>>>((float4 *)b.p, (const float4 *)a.p, (int64_t)(bytes / 16));
        return (int)cudaGetLastError();
    }, cuda_err_str);
    if (k.error.empty()) copy_kernel_gbs = k.bytes / (k.median_ms * 1e-3) / 1e9;
    report(k);
    R.push_back(k);
}

static void bench_elementwise(int64_t rows) {
    const int64_t widths[] = {768, 3072};
    for (int64_t d : widths) {
        const double n = (double)rows * d, io = 4.0 * n;
        std::string shape = fmt("%lldx%lld", (long long)rows, (long long)d);
        Buf x(rows * d * 4), y(rows * d * 4), o(rows * d * 4), w(d * 4), bb(d * 4), wbf(d * 2), bbf(d * 2);
        fill(x);
        fill(y);
        fill(w);
        fill(bb, 0.1f);
        fill_bf16(wbf);
        fill_bf16(bbf, 0.1f);
        run_case(mk("kernel", fmt("layernorm.d%lld", (long long)d), "ss_cuda_layernorm", shape, "f32", 2 * io + 8.0 * d,
                    0, "", true, true),
                 [&] { return ss_cuda_layernorm(o.f(), x.f(), w.p, bb.p, SS_CUDA_F32, rows, d, 1e-5f, G.stream); });
        if (d <= 1024) /* the default there is one warp a row; the block-a-row kernel beside it */
            run_case(mk("kernel", fmt("layernorm_block.d%lld", (long long)d), "ss_cuda_layernorm_plan (block)", shape,
                        "f32", 2 * io + 8.0 * d, 0, "", true, false),
                     [&] {
                         return ss_cuda_layernorm_plan(o.p, SS_CUDA_F32, x.f(), w.p, bb.p, SS_CUDA_F32, rows, d, 1e-5f,
                                                       SS_CUDA_LN_BLOCK, G.stream);
                     });
        run_case(mk("kernel", fmt("layernorm.d%lld.bf16w", (long long)d), "ss_cuda_layernorm", shape, "f32 (bf16 w,b)",
                    2 * io + 4.0 * d, 0, "", true, false),
                 [&] { return ss_cuda_layernorm(o.f(), x.f(), wbf.p, bbf.p, SS_CUDA_BF16, rows, d, 1e-5f, G.stream); });
        run_case(mk("kernel", fmt("rmsnorm.d%lld", (long long)d), "ss_cuda_rmsnorm", shape, "f32", 2 * io + 4.0 * d, 0,
                    "", true, false),
                 [&] { return ss_cuda_rmsnorm(o.f(), x.f(), w.p, SS_CUDA_F32, rows, d, 1e-5f, G.stream); });
        /* the 16-bit outputs (SUBSCOPE_NORM16's norm_matmul): half the bytes written */
        run_case(mk("kernel", fmt("layernorm_to_bf16.d%lld", (long long)d), "ss_cuda_layernorm_to", shape,
                    "f32 in, bf16 out", io + 2.0 * n + 8.0 * d, 0, "", true, false),
                 [&] { return ss_cuda_layernorm_to(o.p, SS_CUDA_BF16, x.f(), w.p, bb.p, SS_CUDA_F32, rows, d, 1e-5f, G.stream); });
        run_case(mk("kernel", fmt("rmsnorm_to_bf16.d%lld", (long long)d), "ss_cuda_rmsnorm_to", shape,
                    "f32 in, bf16 out", io + 2.0 * n + 4.0 * d, 0, "", true, false),
                 [&] { return ss_cuda_rmsnorm_to(o.p, SS_CUDA_BF16, x.f(), w.p, SS_CUDA_F32, rows, d, 1e-5f, G.stream); });
        /* SwiGLU from [rows, 2d] gate|up, fp32 and bf16 out (SUBSCOPE_MLP16's) */
        run_case(mk("kernel", fmt("swiglu.d%lld", (long long)d), "ss_cuda_swiglu", fmt("%lldx%lld", (long long)rows / 2,
                    (long long)d), "f32", 3.0 * (n / 2) * 4, 0, "", true, false),
                 [&] { return ss_cuda_swiglu(o.f(), x.f(), rows / 2, d, G.stream); });
        run_case(mk("kernel", fmt("swiglu_16.d%lld", (long long)d), "ss_cuda_swiglu_16", fmt("%lldx%lld",
                    (long long)rows / 2, (long long)d), "f32 in, bf16 out", 2.0 * (n / 2) * 4 + (n / 2) * 2, 0, "", true,
                    false),
                 [&] { return ss_cuda_swiglu_16(o.p, SS_CUDA_BF16, x.f(), rows / 2, d, G.stream); });
        {   /* and from a bf16 gate|up (SUBSCOPE_GU16's) */
            Buf gu16(rows * d * 2);
            fill_bf16(gu16);
            run_case(mk("kernel", fmt("swiglu_16from16.d%lld", (long long)d), "ss_cuda_swiglu_16from16",
                        fmt("%lldx%lld", (long long)rows / 2, (long long)d), "bf16 in, bf16 out", 3.0 * n, 0, "", true,
                        false),
                     [&] { return ss_cuda_swiglu_16from16(o.p, SS_CUDA_BF16, gu16.p, rows / 2, d, G.stream); });
        }
        /* As the backend calls them: GELU on the whole buffer as one row, and
         * the bias after a matrix product (in place); plus the fused form. */
        run_case(mk("kernel", fmt("gelu_tanh.d%lld", (long long)d), "ss_cuda_bias_act", shape, "f32", 2 * io, 0, "",
                    true, true),
                 [&] { return ss_cuda_bias_act(o.f(), x.f(), nullptr, SS_CUDA_F32, 1, rows * d, SS_CUDA_GELU_TANH, G.stream); });
        run_case(mk("kernel", fmt("gelu_erf.d%lld", (long long)d), "ss_cuda_bias_act", shape, "f32", 2 * io, 0, "", true,
                    false),
                 [&] { return ss_cuda_bias_act(o.f(), x.f(), nullptr, SS_CUDA_F32, 1, rows * d, SS_CUDA_GELU_ERF, G.stream); });
        run_case(mk("kernel", fmt("bias_gelu_tanh.d%lld", (long long)d), "ss_cuda_bias_act", shape, "f32",
                    2 * io + 4.0 * d, 0, "", true, false),
                 [&] { return ss_cuda_bias_act(o.f(), x.f(), bb.p, SS_CUDA_F32, rows, d, SS_CUDA_GELU_TANH, G.stream); });
        run_case(mk("kernel", fmt("bias_inplace.d%lld", (long long)d), "ss_cuda_bias_act", shape, "f32",
                    2 * io + 4.0 * d, 0, "", true, false),
                 [&] { return ss_cuda_bias_act(o.f(), o.f(), bb.p, SS_CUDA_F32, rows, d, SS_CUDA_ACT_NONE, G.stream); });
        run_case(mk("kernel", fmt("add.d%lld", (long long)d), "ss_cuda_add", shape, "f32", 3 * io, 0, "", true, true),
                 [&] { return ss_cuda_add(o.f(), x.f(), y.f(), rows * d, G.stream); });
        run_case(mk("kernel", fmt("add_inplace.d%lld", (long long)d), "ss_cuda_add", shape, "f32", 3 * io, 0, "", true,
                    false),
                 [&] { return ss_cuda_add(o.f(), o.f(), y.f(), rows * d, G.stream); });
        run_case(mk("kernel", fmt("capture.d%lld", (long long)d), "ss_cuda_capture", shape, "f32", 2 * io, 0, "", true,
                    true),
                 [&] { return ss_cuda_capture(o.f(), x.f(), d, nullptr, rows, d, G.stream); });
        run_case(mk("kernel", fmt("convert.f32_to_bf16.d%lld", (long long)d), "ss_cuda_convert", shape, "f32->bf16",
                    6.0 * n, 0, "", true, false),
                 [&] { return ss_cuda_convert(o.p, SS_CUDA_BF16, x.p, SS_CUDA_F32, rows * d, G.stream); });
    }
    {
        /* hook_q: one third of each q/k/v row (stride 3d), as the backend's
         * capture of a site that shares a buffer. */
        const int64_t d = 768;
        Buf qkv(rows * 3 * d * 4), o(rows * d * 4);
        fill(qkv);
        run_case(mk("kernel", "capture.strided_q.d768", "ss_cuda_capture", fmt("%lldx768 of ld 2304", (long long)rows),
                    "f32", 8.0 * rows * d, 0, "", true, false),
                 [&] { return ss_cuda_capture(o.f(), qkv.f(), 3 * d, nullptr, rows, d, G.stream); });
    }
    {
        /* The row_idx path: every second row of a 768-wide site. */
        const int64_t d = 768, n = rows / 2;
        std::vector<int64_t> idx(n);
        for (int64_t i = 0; i < n; i++) idx[i] = 2 * i;
        Buf x(rows * d * 4), o(n * d * 4), ib(n * 8);
        fill(x);
        CK(cudaMemcpy(ib.p, idx.data(), n * 8, cudaMemcpyHostToDevice));
        run_case(mk("kernel", "capture.row_idx.d768", "ss_cuda_capture", fmt("%lld of %lld rows x 768", (long long)n,
                    (long long)rows), "f32", 8.0 * n * d + 8.0 * n, 0, "", true, false),
                 [&] { return ss_cuda_capture(o.f(), x.f(), d, (const int64_t *)ib.p, n, d, G.stream); });
    }
    {
        /* Softmax over attention-score rows: batch 16 x 12 heads x 1024 queries, 1024 keys. */
        const int64_t T = 1024, rows_s = (rows / T > 0 ? rows / T : 1) * 12 * T;
        Buf x(rows_s * T * 4), o(rows_s * T * 4);
        fill(x, 4.f);
        run_case(mk("kernel", "softmax.1024", "ss_cuda_softmax", fmt("%lldx%lld", (long long)rows_s, (long long)T),
                    "f32", 8.0 * rows_s * T, 0, "", true, false),
                 [&] { return ss_cuda_softmax(o.f(), x.f(), rows_s, T, G.stream); });
    }
    {
        /* ablate's scores of one masked forward (job_ablate.c): 4096 rows of GPT-2
         * logits, K = 32 copies of a batch of 128 rows, each compared with the
         * clean rows for KL; lz and the best token always. Bytes: the logits
         * once (and the reference rows once more each, with KL). */
        const int64_t R = 4096, V = 50257, ref_rows = 128;
        Buf x(R * V * 4), ref(ref_rows * V * 4), lz(R * 8), kl(R * 8), best(R * 4), rlz(ref_rows * 8);
        fill(x, 8.f);
        fill(ref, 8.f);
        if (ss_cuda_logit_scores((double *)rlz.p, nullptr, nullptr, ref.f(), ref_rows, V, nullptr, nullptr, 0, G.stream))
            die(1, "logit_scores: the reference rows' launch failed");
        const std::string shape = fmt("%lldx%lld", (long long)R, (long long)V);
        run_case(mk("kernel", "logit_scores.lz_best", "ss_cuda_logit_scores", shape, "f32 in, f64 sums", 4.0 * R * V, 0,
                    "", true, false),
                 [&] {
                     return ss_cuda_logit_scores((double *)lz.p, (int32_t *)best.p, nullptr, x.f(), R, V, nullptr,
                                                 nullptr, 0, G.stream);
                 });
        run_case(mk("kernel", "logit_scores.lz_best_kl", "ss_cuda_logit_scores", shape + fmt(" ref %lld", (long long)ref_rows),
                    "f32 in, f64 sums", 8.0 * R * V, 0, "", true, false),
                 [&] {
                     return ss_cuda_logit_scores((double *)lz.p, (int32_t *)best.p, (double *)kl.p, x.f(), R, V,
                                                 ref.f(), (const double *)rlz.p, ref_rows, G.stream);
                 });
    }
}

static void bench_embed(int64_t rows) {
    const int64_t V = 50257, P = 1024, d = 768;
    Buf ids(rows * 4), pos(rows * 4), wte(V * d * 4), wpe(P * d * 4), wte16(V * d * 2), wpe16(P * d * 2);
    Buf t(rows * d * 4), p(rows * d * 4), s(rows * d * 4);
    fill_ids(ids, (int32_t)V);
    fill_ids(pos, (int32_t)P);
    fill(wte, 0.02f);
    fill(wpe, 0.02f);
    fill_bf16(wte16, 0.02f);
    fill_bf16(wpe16, 0.02f);
    std::string shape = fmt("%lld tokens x %lld", (long long)rows, (long long)d);
    double rd = 4.0 * rows * d;
    /* Bytes: the gathered table rows + outputs + ids (table rows counted as
     * read once each, though wpe rows repeat and mostly hit L2). */
    run_case(mk("kernel", "embed.tok+pos_out", "ss_cuda_embed", shape, "f32", 4 * rd + 8.0 * rows, 0, "", true, false),
             [&] {
                 return ss_cuda_embed(t.f(), p.f(), nullptr, (const int32_t *)ids.p, (const int32_t *)pos.p, wte.p,
                                      wpe.p, SS_CUDA_F32, V, P, rows, d, G.stream);
             });
    run_case(mk("kernel", "embed.sum_out", "ss_cuda_embed", shape, "f32", 3 * rd + 8.0 * rows, 0, "", true, false), [&] {
        return ss_cuda_embed(nullptr, nullptr, s.f(), (const int32_t *)ids.p, (const int32_t *)pos.p, wte.p, wpe.p,
                             SS_CUDA_F32, V, P, rows, d, G.stream);
    });
    run_case(mk("kernel", "embed.sum_out.bf16w", "ss_cuda_embed", shape, "f32 (bf16 tables)", 2 * rd + 8.0 * rows, 0, "",
                true, false),
             [&] {
                 return ss_cuda_embed(nullptr, nullptr, s.f(), (const int32_t *)ids.p, (const int32_t *)pos.p, wte16.p,
                                      wpe16.p, SS_CUDA_BF16, V, P, rows, d, G.stream);
             });
}

static void bench_attention(int64_t rows) {
    const int64_t T = 1024, H = 12, dh = 64, d = H * dh;
    const int64_t n_seq = rows / T > 0 ? rows / T : 1, R_ = n_seq * T;
    std::vector<int64_t> meta(3 * n_seq);
    for (int64_t s = 0; s < n_seq; s++) {
        meta[s] = s * T;
        meta[n_seq + s] = T;
        meta[2 * n_seq + s] = s * H * T * T;
    }
    Buf m(meta.size() * 8), qkv(R_ * 3 * d * 4), z(R_ * d * 4), pat(n_seq * H * T * T * 4);
    CK(cudaMemcpy(m.p, meta.data(), meta.size() * 8, cudaMemcpyHostToDevice));
    fill(qkv);
    const int64_t *start = (const int64_t *)m.p, *len = start + n_seq, *poff = start + 2 * n_seq;
    const float *q = qkv.f(), *k = q + d, *v = q + 2 * d;
    const float scale = 1.0f / sqrtf((float)dh);
    /* Useful FLOPs: QK^T and PV over the causal triangle, 2 per multiply-add. */
    const double flops = 4.0 * n_seq * H * dh * (T * (T + 1) / 2.0);
    const double io = 4.0 * R_ * 3 * d + 4.0 * R_ * d;
    std::string shape = fmt("B=%lld T=%lld H=%lld dh=%lld", (long long)n_seq, (long long)T, (long long)H, (long long)dh);
    run_case(mk("kernel", "attention.flash", "ss_cuda_attention_flash", shape, "f32", io, flops, "fp32", false, false),
             [&] {
                 return ss_cuda_attention_flash(z.f(), q, k, v, 3 * d, n_seq, start, len, T, H, H, dh, scale, G.stream);
             });
    Buf ws(ss_cuda_attention_flash_bf16_ws(R_, H, H, dh) * 2);
    run_case(mk("kernel", "attention.flash_bf16", "ss_cuda_attention_flash_bf16", shape,
                "f32 in and out, packed to bf16 first (timed), cp.async K/V tiles, ldmatrix fragments", io, flops,
                "bf16", false, false),
             [&] {
                 return ss_cuda_attention_flash_bf16(z.f(), SS_CUDA_F32, q, k, v, 3 * d, n_seq, start, len, T, R_, H, H, dh, scale,
                                                     ws.p, 1, G.stream);
             });
    run_case(mk("kernel", "attention.flash_bf16.qt2", "ss_cuda_attention_flash_bf16", shape,
                "the same with two 16-row query tiles per warp (SUBSCOPE_ATTN_QT=2)", io, flops, "bf16", false, false),
             [&] {
                 return ss_cuda_attention_flash_bf16(z.f(), SS_CUDA_F32, q, k, v, 3 * d, n_seq, start, len, T, R_, H, H, dh, scale,
                                                     ws.p, 2, G.stream);
             });
    run_case(mk("kernel", "attention.pattern", "ss_cuda_attention_pattern", shape, "f32",
                io + 4.0 * n_seq * H * T * T, flops, "fp32", false, false),
             [&] {
                 return ss_cuda_attention_pattern(z.f(), pat.f(), q, k, v, 3 * d, n_seq, start, len, poff, T, H, H, dh,
                                                  scale, G.stream);
             });
}

/* predict --generate's cached attention (ss_cuda_attention_kv): one new row
 * against a cache of `keys` positions, as a decode step runs it (q in a
 * fused projection's rows, the cache's rows [k | v] of 2 Hkv dh floats). One
 * block per (row, head) (`.s1`: H blocks stream all the keys), the split the
 * backend chooses on this GPU (`.auto`, the count in `op`), and fixed splits
 * (`.sN`, at most N chunks), so that the lease shows split against unsplit
 * and where the automatic count stands among the fixed ones. Bytes: the
 * keys and values read once, q and z; FLOPs: QK and PV, 4 H dh keys. */
static void bench_attention_kv(const char *model, int64_t H, int64_t Hkv, int64_t dh, int64_t keys,
                               const std::vector<int64_t> &fixed, int dt = SS_CUDA_F32) {
    const int64_t q0 = keys - 1, ld_q = (H + 2 * Hkv) * dh, ld_kv = 2 * Hkv * dh;
    const int64_t eb = dt == SS_CUDA_F32 ? 4 : 2; /* a 16-bit model's cache: bf16 or fp16 elements */
    Buf q(ld_q * 4), kv(keys * ld_kv * 4), kv16(dt == SS_CUDA_F32 ? 0 : keys * ld_kv * 2), z(H * dh * 4);
    fill(q);
    fill(kv);
    if (dt != SS_CUDA_F32 && ss_cuda_convert(kv16.p, dt, kv.p, SS_CUDA_F32, keys * ld_kv, G.stream))
        die(1, "attention_kv bench: the 16-bit cache's conversion failed");
    const char *kvb = (const char *)(dt == SS_CUDA_F32 ? kv.p : kv16.p);
    const float scale = 1.0f / sqrtf((float)dh);
    const double io = (double)eb * keys * ld_kv + 4.0 * H * dh * 2, flops = 4.0 * H * dh * keys;
    const char *dts = dt == SS_CUDA_BF16 ? "bf16." : dt == SS_CUDA_F16 ? "f16." : "";
    std::string shape = fmt("1 row x %lld keys, H=%lld Hkv=%lld dh=%lld", (long long)keys, (long long)H, (long long)Hkv,
                            (long long)dh);
    std::vector<int64_t> splits = {1, 0};
    splits.insert(splits.end(), fixed.begin(), fixed.end());
    for (int64_t sp : splits) {
        const int64_t s = sp ? sp : ss_cuda_attention_kv_splits(1, q0, H);
        const int64_t nws = ss_cuda_attention_kv_ws(1, q0, H, dh, s), made = nws ? nws / (H * (dh + 2)) : 1;
        Buf ws(nws * 4);
        std::string name = sp ? fmt("attention_kv.%s%s.%lld.s%lld", dts, model, (long long)keys, (long long)sp)
                              : fmt("attention_kv.%s%s.%lld.auto", dts, model, (long long)keys);
        std::string op = fmt("ss_cuda_attention_kv (%lld split%s)", (long long)made, made == 1 ? "" : "s");
        run_case(mk("kernel", name, op.c_str(), shape, dt == SS_CUDA_F32 ? "f32" : dts[0] == 'b' ? "bf16" : "f16", io,
                    flops, "fp32", true, false),
                 [&] {
                     return ss_cuda_attention_kv(z.f(), q.f(), ld_q, kvb, kvb + Hkv * dh * eb, dt, ld_kv, 1, q0, H, Hkv,
                                                 dh, scale, s, ws.f(), G.stream);
                 });
    }
}

/* The rotary embedding at a Llama-7B row (q and k: 64 heads of 128 in rows of 3 * 4096), on
 * fp32 rows (the default) and on the QKV product's bf16 rows (SUBSCOPE_QKV16's). */
static void bench_rope(int64_t rows) {
    const int64_t nh = 64, dh = 128, ld = 3 * 32 * dh;
    std::string shape = fmt("%lld rows, %lld heads of %lld", (long long)rows, (long long)nh, (long long)dh);
    Buf x(rows * ld * 4), pos(rows * 4), inv(dh / 2 * 4);
    fill(x);
    fill_ids(pos, 1024);
    fill(inv, 0.5f);
    const double moved = (double)rows * nh * dh;
    run_case(mk("kernel", "rope.dh128", "ss_cuda_rope", shape, "f32 in place", 8.0 * moved, 0, "", true, false),
             [&] {
                 return ss_cuda_rope(x.f(), ld, rows, nh, dh, (const int32_t *)pos.p, inv.f(), 0, G.stream);
             });
    run_case(mk("kernel", "rope_bf16.dh128", "ss_cuda_rope_bf16", shape, "bf16 in place", 4.0 * moved, 0, "", true,
                false),
             [&] {
                 return ss_cuda_rope_bf16((uint16_t *)x.p, ld, rows, nh, dh, (const int32_t *)pos.p, inv.f(), G.stream);
             });
}

/* The tensor-core attention alone from bf16 rows a product would write (Q, K,
 * V in rows of 3 H dh halves), one and two query tiles per warp: at a
 * Llama-7B head shape (32 heads of 128, gpu_llama's attention; names without
 * a suffix) and at GPT-2 small's (12 heads of 64, SUBSCOPE_QKV16's; ".dh64"),
 * the latter also writing z in bf16 for the output product (SUBSCOPE_Z16's,
 * ".z16"). */
static void bench_attention_from16(int64_t rows, int64_t H, int64_t dh, const char *suffix, bool z16) {
    const int64_t T = 1024, ld16 = 3 * H * dh;
    const int64_t n_seq = rows / T > 0 ? rows / T : 1, R_ = n_seq * T;
    std::vector<int64_t> meta(2 * n_seq);
    for (int64_t s = 0; s < n_seq; s++) meta[s] = s * T, meta[n_seq + s] = T;
    Buf m(meta.size() * 8), qkv(R_ * ld16 * 2), z(R_ * H * dh * 4);
    CK(cudaMemcpy(m.p, meta.data(), meta.size() * 8, cudaMemcpyHostToDevice));
    fill_bf16(qkv);
    const int64_t *start = (const int64_t *)m.p, *len = start + n_seq;
    const float scale = 1.0f / sqrtf((float)dh);
    const double flops = 4.0 * n_seq * H * dh * (T * (T + 1) / 2.0);
    std::string shape = fmt("B=%lld T=%lld H=%lld dh=%lld", (long long)n_seq, (long long)T, (long long)H, (long long)dh);
    for (int zo = 0; zo <= (z16 ? 1 : 0); zo++)
        for (int qt = 1; qt <= 2; qt++) {
            const double io = 2.0 * R_ * ld16 + (zo ? 2.0 : 4.0) * R_ * H * dh;
            run_case(mk("kernel", fmt("attention.flash_bf16_from16%s%s%s", suffix, zo ? ".z16" : "", qt == 2 ? ".qt2" : ""),
                        "ss_cuda_attention_flash_bf16_from16", shape,
                        fmt("bf16 Q, K, V rows in, %s z out%s", zo ? "bf16" : "f32",
                            qt == 2 ? ", two query tiles per warp" : "").c_str(),
                        io, flops, "bf16", false, false),
                     [&] {
                         return ss_cuda_attention_flash_bf16_from16(z.f(), zo ? SS_CUDA_BF16 : SS_CUDA_F32,
                                                                    (const uint16_t *)qkv.p, ld16, n_seq, start, len, T,
                                                                    H, H, dh, scale, qt, G.stream);
                     });
        }
}

/* The products as the forward pass issues them through cuBLASLt
 * (src/backend/cuda_backend.c: lt_describe, lt_plan_for, lt_matmul_to): bf16
 * operands, fp32 accumulation, the bias (and the tanh GELU) in the epilogue,
 * the heuristic's first algorithm within a 32 MiB workspace (the backend's
 * default), D in fp32 (the default path) or in bf16 (the 16-bit paths:
 * SUBSCOPE_QKV16, MLP16, GU16), and the products that end a block's halves
 * adding into the fp32 residual stream (beta 1). kernel_bench's GemmEx cases
 * time neither the epilogues nor the heuristic's choice. */
static void bench_lt(int64_t M) {
    const uint32_t NONE = CUBLASLT_EPILOGUE_DEFAULT, BIAS = CUBLASLT_EPILOGUE_BIAS, GELU = CUBLASLT_EPILOGUE_GELU_BIAS;
    const struct {
        const char *model, *what;
        int64_t N, K;
        int trans_b;
        uint32_t epi;
        int out16, acc, bias16;
    } cases[] = {
        {"gpt2-small", "qkv", 2304, 768, 0, BIAS, 0, 0, 0},     {"gpt2-small", "qkv", 2304, 768, 0, BIAS, 1, 0, 0},
        {"gpt2-small", "qkv", 2304, 768, 0, BIAS, 1, 0, 1},     {"gpt2-small", "mlp_in", 3072, 768, 0, GELU, 0, 0, 0},
        {"gpt2-small", "mlp_in", 3072, 768, 0, GELU, 1, 0, 0},  {"gpt2-small", "mlp_in", 3072, 768, 0, GELU, 1, 0, 1},
        {"gpt2-small", "attn_out", 768, 768, 0, BIAS, 0, 1, 0}, {"gpt2-small", "mlp_out", 768, 3072, 0, BIAS, 0, 1, 0},
        {"llama-7b", "qkv", 12288, 4096, 1, NONE, 0, 0, 0},     {"llama-7b", "qkv", 12288, 4096, 1, NONE, 1, 0, 0},
        {"llama-7b", "gate_up", 22016, 4096, 1, NONE, 0, 0, 0}, {"llama-7b", "gate_up", 22016, 4096, 1, NONE, 1, 0, 0},
        {"llama-7b", "o", 4096, 4096, 1, NONE, 0, 1, 0},        {"llama-7b", "down", 4096, 11008, 1, NONE, 0, 1, 0},
    };
    cublasLtHandle_t lt = nullptr;
    if (cublasLtCreate(&lt) != CUBLAS_STATUS_SUCCESS) die(1, "cublasLtCreate failed");
    const uint64_t ws_bytes = (uint64_t)32 << 20;
    Buf ws(ws_bytes);
    for (auto &c : cases) {
        const int64_t N = c.N, K = c.K;
        const char *ep = c.epi == GELU ? "gelu_bias" : c.epi == BIAS ? "bias" : "plain";
        /* .bias16: the bias in bf16 (cuBLASLt's default for a bf16 D) where the backend
         * gives fp32 (CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE): whether that choice costs a
         * slower kernel, for GPT-2's 16-bit paths */
        const std::string name = fmt("lt.%s.%s.%s%s%s%s", c.model, c.what, ep, c.out16 ? ".bf16_out" : "",
                                     c.acc ? ".acc" : "", c.bias16 ? ".bias16" : "");
        if (!selected(name)) continue;
        const cudaDataType tc = c.out16 ? CUDA_R_16BF : CUDA_R_32F;
        const int es = c.out16 ? 2 : 4;
        Buf A(M * K * 2), B(K * N * 2), C(M * N * es), bias(N * 4);
        fill_bf16(A);
        fill_bf16(B, 0.05f);
        if (c.bias16) fill_bf16(bias, 0.1f);
        else fill(bias, 0.1f);
        if (c.out16) fill_bf16(C); else fill(C);
        cublasLtMatmulDesc_t desc = nullptr;
        cublasLtMatrixLayout_t ad = nullptr, bd = nullptr, cd = nullptr;
        cublasLtMatmulPreference_t pref = nullptr;
        cublasLtMatmulHeuristicResult_t res;
        int found = 0;
        const int32_t ta = c.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N, tb = CUBLAS_OP_N, bias_type = CUDA_R_32F;
        const uint32_t epi = c.epi;
        const void *bp = bias.p;
        cublasStatus_t st = cublasLtMatmulDescCreate(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F);
        if (!st) st = cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta);
        if (!st) st = cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb);
        if (!st) st = cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi);
        if (!st && c.epi != NONE) {
            st = cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bp, sizeof bp);
            if (!st && c.out16 && !c.bias16)
                st = cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bias_type, sizeof bias_type);
        }
        if (!st) st = c.trans_b ? cublasLtMatrixLayoutCreate(&ad, CUDA_R_16BF, (uint64_t)K, (uint64_t)N, K)
                                : cublasLtMatrixLayoutCreate(&ad, CUDA_R_16BF, (uint64_t)N, (uint64_t)K, N);
        if (!st) st = cublasLtMatrixLayoutCreate(&bd, CUDA_R_16BF, (uint64_t)K, (uint64_t)M, K);
        if (!st) st = cublasLtMatrixLayoutCreate(&cd, tc, (uint64_t)N, (uint64_t)M, N);
        if (!st) st = cublasLtMatmulPreferenceCreate(&pref);
        if (!st) st = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws_bytes,
                                                           sizeof ws_bytes);
        if (!st) st = cublasLtMatmulAlgoGetHeuristic(lt, desc, ad, bd, cd, cd, pref, 1, &res, &found);
        const std::string shape = fmt("M=%lld N=%lld K=%lld%s", (long long)M, (long long)N, (long long)K,
                                      c.trans_b ? " B^T" : "");
        const double io = 2.0 * (M * K + K * N) + (double)es * M * N * (c.acc ? 2 : 1) + (c.epi != NONE ? 4.0 * N : 0);
        if (st || found < 1) {
            fprintf(stderr, "%s: cuBLASLt has no algorithm (%s)\n", name.c_str(), cublasGetStatusString(st));
            G.failures++;
        } else {
            const float one = 1.f, zero = 0.f;
            run_case(mk("gemm", name, "cublasLtMatmul", shape,
                        c.out16 ? "bf16 in and out, fp32 accumulate" : "bf16 in, fp32 out and accumulate", io,
                        2.0 * M * N * K, "bf16", false, false),
                     [&] {
                         return (int)cublasLtMatmul(lt, desc, &one, B.p, ad, A.p, bd, c.acc ? &one : &zero, C.p, cd,
                                                    C.p, cd, &res.algo, ws.p, ws_bytes, G.stream);
                     },
                     blas_err_str);
        }
        if (pref) cublasLtMatmulPreferenceDestroy(pref);
        if (cd) cublasLtMatrixLayoutDestroy(cd);
        if (bd) cublasLtMatrixLayoutDestroy(bd);
        if (ad) cublasLtMatrixLayoutDestroy(ad);
        if (desc) cublasLtMatmulDescDestroy(desc);
    }
    cublasLtDestroy(lt);
}

/* Row-major C[M,N] = A[M,K] . op(B), issued exactly as cu_matmul in
 * src/backend/cuda_backend.c does (operands swapped for column-major). */
static void bench_gemm(int64_t M) {
    struct Shape {
        const char *model, *what;
        int64_t N, K;
        int trans_b;
    };
    std::vector<Shape> shapes;
    const struct {
        const char *model;
        int64_t d;
    } models[] = {{"gpt2-small", 768}, {"gpt2-medium", 1024}, {"gpt2-large", 1280}};
    for (auto &m : models) {
        shapes.push_back({m.model, "qkv", 3 * m.d, m.d, 0});
        shapes.push_back({m.model, "attn_out", m.d, m.d, 0});
        shapes.push_back({m.model, "mlp_in", 4 * m.d, m.d, 0});
        shapes.push_back({m.model, "mlp_out", m.d, 4 * m.d, 0});
    }
    shapes.push_back({"gpt2-small", "lm_head", 50257, 768, 1});
    for (auto &s : shapes) {
        const int64_t N = s.N, K = s.K;
        std::string shape = fmt("M=%lld N=%lld K=%lld%s", (long long)M, (long long)N, (long long)K, s.trans_b ? " B^T" : "");
        const double flops = 2.0 * M * N * K;
        const int lda = (int)K, ldb = s.trans_b ? (int)K : (int)N, ldc = (int)N;
        const cublasOperation_t opb = s.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
        const float one = 1.f, zero = 0.f;
        std::string base = fmt("gemm.%s.%s", s.model, s.what);
        bool any = selected(base + ".fp32") || selected(base + ".tf32") || selected(base + ".bf16_out");
        if (!any) continue;
        {
            Buf A(M * K * 4), B(K * N * 4), C(M * N * 4);
            fill(A);
            fill(B, 0.05f);
            const double io = 4.0 * (M * K + K * N + M * N);
            for (int tf32 = 0; tf32 <= 1; tf32++) {
                if (cublasSetMathMode(G.blas, tf32 ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH) !=
                    CUBLAS_STATUS_SUCCESS)
                    die(1, "cublasSetMathMode failed");
                run_case(mk("gemm", base + (tf32 ? ".tf32" : ".fp32"), "cublasSgemm", shape,
                            tf32 ? "f32 (TF32 tensor ops)" : "f32", io, flops, tf32 ? "tf32" : "fp32", false, false),
                         [&] {
                             return (int)cublasSgemm(G.blas, opb, CUBLAS_OP_N, (int)N, (int)M, (int)K, &one, B.f(), ldb,
                                                     A.f(), lda, &zero, C.f(), ldc);
                         },
                         blas_err_str);
            }
            cublasSetMathMode(G.blas, CUBLAS_DEFAULT_MATH);
        }
        for (int out16 = 0; out16 <= 1; out16++) {
            /* bf16: as cu_matmul's bf16 path (bf16 A and B, fp32 C); bf16_out: C in
             * bf16 too, as a bf16 Linear in PyTorch. */
            const int es = out16 ? 2 : 4;
            Buf A(M * K * 2), B(K * N * 2), C(M * N * es);
            fill_bf16(A);
            fill_bf16(B, 0.05f);
            const double io = 2.0 * (M * K + K * N) + (double)es * M * N;
            run_case(mk("gemm", base + (out16 ? ".bf16_out" : ".bf16"), "cublasGemmEx", shape,
                        out16 ? "bf16 in and out, fp32 accumulate" : "bf16 in, fp32 out and accumulate", io, flops,
                        "bf16", false, false),
                     [&] {
                         return (int)cublasGemmEx(G.blas, opb, CUBLAS_OP_N, (int)N, (int)M, (int)K, &one, B.p,
                                                  CUDA_R_16BF, ldb, A.p, CUDA_R_16BF, lda, &zero, C.p,
                                                  out16 ? CUDA_R_16BF : CUDA_R_32F, ldc, CUBLAS_COMPUTE_32F,
                                                  CUBLAS_GEMM_DEFAULT);
                     },
                     blas_err_str);
        }
        if (N % 4) {
            /* C's rows padded to a multiple of 8 floats (ldc), as cu_product writes an
             * unaligned product (src/backend/cuda_backend.c, product_padded): tensor-core
             * kernels want 16-byte aligned rows. The packing copy is not included here. */
            const int64_t Np = (N + 7) / 8 * 8;
            Buf A(M * K * 4), B(K * N * 4), C(M * Np * 4), A16(M * K * 2), B16(K * N * 2);
            fill(A);
            fill(B, 0.05f);
            fill_bf16(A16);
            fill_bf16(B16, 0.05f);
            if (cublasSetMathMode(G.blas, CUBLAS_TF32_TENSOR_OP_MATH) != CUBLAS_STATUS_SUCCESS)
                die(1, "cublasSetMathMode failed");
            run_case(mk("gemm", base + ".tf32_ldc8", "cublasSgemm", shape + fmt(" ldc=%lld", (long long)Np),
                        "f32 (TF32 tensor ops), C rows padded", 4.0 * (M * K + K * N + M * Np), flops, "tf32", false,
                        false),
                     [&] {
                         return (int)cublasSgemm(G.blas, opb, CUBLAS_OP_N, (int)N, (int)M, (int)K, &one, B.f(), ldb,
                                                 A.f(), lda, &zero, C.f(), (int)Np);
                     },
                     blas_err_str);
            cublasSetMathMode(G.blas, CUBLAS_DEFAULT_MATH);
            run_case(mk("gemm", base + ".bf16_ldc8", "cublasGemmEx", shape + fmt(" ldc=%lld", (long long)Np),
                        "bf16 in, fp32 out and accumulate, C rows padded", 2.0 * (M * K + K * N) + 4.0 * M * Np, flops,
                        "bf16", false, false),
                     [&] {
                         return (int)cublasGemmEx(G.blas, opb, CUBLAS_OP_N, (int)N, (int)M, (int)K, &one, B16.p,
                                                  CUDA_R_16BF, ldb, A16.p, CUDA_R_16BF, lda, &zero, C.p, CUDA_R_32F,
                                                  (int)Np, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
                     },
                     blas_err_str);
            /* The backend's split (include/subscope/gemm_split.h): the first N rounded
             * down to 64 columns, then the rest, into C with rows of N (split) or of
             * Np floats (split_ldc8: padded and split, the backend's default); and
             * llm.c's remedy for the same product, the weights' rows padded to a
             * multiple of 64 (50304) with C as wide (vpad64). */
            const float zero = 0.f;
            for (int tf32 = 0; tf32 <= 1; tf32++) {
                if (cublasSetMathMode(G.blas, tf32 ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH) !=
                    CUBLAS_STATUS_SUCCESS)
                    die(1, "cublasSetMathMode failed");
                const cudaDataType t = tf32 ? CUDA_R_32F : CUDA_R_16BF;
                const void *a = tf32 ? A.p : A16.p, *b = tf32 ? B.p : B16.p;
                const double ab = (tf32 ? 4.0 : 2.0) * (M * K + K * N);
                for (int padded = 0; padded <= 1; padded++) {
                    const int64_t ldc = padded ? Np : N;
                    run_case(mk("gemm", base + (tf32 ? ".tf32" : ".bf16") + (padded ? "_split_ldc8" : "_split"),
                                tf32 ? "cublasSgemm x2" : "cublasGemmEx x2",
                                shape + fmt(" as %lld + %lld%s", (long long)ss_gemm_split_at(N, 1),
                                            (long long)(N - ss_gemm_split_at(N, 1)),
                                            padded ? fmt(" ldc=%lld", (long long)Np).c_str() : ""),
                                tf32 ? "f32 (TF32 tensor ops), two products" : "bf16 in, fp32 out and accumulate, two products",
                                ab + 4.0 * M * ldc, flops, tf32 ? "tf32" : "bf16", false, false),
                             [&] {
                                 return (int)ss_gemm_rows(G.blas, 1, t, s.trans_b, M, N, K, a, b, &zero, C.f(), ldc);
                             },
                             blas_err_str);
                }
            }
            cublasSetMathMode(G.blas, CUBLAS_DEFAULT_MATH);
            if (s.trans_b) {
                const int64_t Nv = (N + 63) / 64 * 64;
                Buf Bv(Nv * K * 2), Cv(M * Nv * 4);
                fill_bf16(Bv, 0.05f);
                run_case(mk("gemm", base + ".bf16_vpad64", "cublasGemmEx", fmt("M=%lld N=%lld K=%lld B^T", (long long)M,
                                                                               (long long)Nv, (long long)K),
                            "bf16 in, fp32 out and accumulate, weights padded to a multiple of 64 rows",
                            2.0 * (M * K + K * Nv) + 4.0 * M * Nv, flops, "bf16", false, false),
                         [&] {
                             return (int)ss_gemm_rows(G.blas, 0, CUDA_R_16BF, 1, M, Nv, K, A16.p, Bv.p, &zero, Cv.f(),
                                                      Nv);
                         },
                         blas_err_str);
            }
        }
    }
}

/* ---- C2's open width through cuBLASLt ---------------------------------
 * At d 768 the blocked triangle's batched products ran at 1.10x the full
 * GemmEx on the H200, short of 1.4x. cublasGemmBatchedEx picks its kernel by
 * its own heuristic and cannot be told to split the rows (K), which is what
 * products with small outputs over 16384 rows need to fill 132 SMs (our row
 * slices do it by hand, at the price of partial triangles in memory).
 * cuBLASLt can be told: here the same products through cublasLtMatmul,
 * each of its heuristic's first LT_ALGOS algorithms, and its first algorithm
 * again with SPLITK_NUM forced (2..8; in place and through the workspace,
 * where the algorithm allows them). Three kinds of problem a width (d <= 1024):
 *   gemmex_full.lt*      the full product (a fairer baseline should one beat
 *                        GemmEx: gpu_report.py judges C2 against the fastest);
 *   cov_lower_lt.lt*     cuBLASLt's own triangle (CUBLASLT_MATMUL_DESC_FILL_MODE,
 *                        a SYRK-like product only some algorithms support);
 *   cov_lower_blkW.lt*   the blocked triangle's W x W blocks by pointer arrays
 *                        (CUBLASLT_BATCH_MODE_POINTER_ARRAY), W 128, 192, 256.
 * Each case's lower triangle is checked against GemmEx / the batched blocks
 * on the same operands: bf16 products are exact in fp32, so only the order
 * of the fp32 sums differs, far below 1e-4 of the largest |C| at these
 * sizes; a larger difference fails the case. What each algorithm is (id,
 * tile, stages, split, reduction) goes to the case's "op". */
#define LT_ALGOS 8
static const int32_t lt_splits[] = {2, 3, 4, 6, 8};  /* SPLITK_NUM forced on the first algorithm */
static const int64_t lt_widths[] = {128, 192, 256}; /* the blocked triangle's block widths */

/* The case-name suffixes: the heuristic's i-th algorithm, or its first with
 * the rows split s ways, reduced in place or through the workspace. */
static std::string lt_suffix(int i) { return fmt("lt%d", i); }
static std::string lt_suffix_split(int32_t s, bool inplace) { return fmt("lt0k%d%s", (int)s, inplace ? "in" : "ws"); }

/* One problem, column-major: C (m x n, ldc, fp32) = A (m x k, lda) B^T with B
 * (n x k, lda), bf16 operands, fp32 compute; batch > 0: that many products by
 * pointer arrays; fill: a CUBLAS_FILL_MODE_* of C, or -1 for all of it. */
struct LtProblem {
    cublasLtMatmulDesc_t desc = nullptr;
    cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
    cublasStatus_t st;
    LtProblem(int64_t m, int64_t n, int64_t k, int64_t lda, int64_t ldc, int32_t batch, int fill) {
        const int32_t ta = CUBLAS_OP_N, tb = CUBLAS_OP_T, fm = fill;
        st = cublasLtMatmulDescCreate(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F);
        if (!st) st = cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta);
        if (!st) st = cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb);
        if (!st && fill >= 0) st = cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_FILL_MODE, &fm, sizeof fm);
        if (!st) st = cublasLtMatrixLayoutCreate(&a, CUDA_R_16BF, (uint64_t)m, (uint64_t)k, lda);
        if (!st) st = cublasLtMatrixLayoutCreate(&b, CUDA_R_16BF, (uint64_t)n, (uint64_t)k, lda);
        if (!st) st = cublasLtMatrixLayoutCreate(&c, CUDA_R_32F, (uint64_t)m, (uint64_t)n, ldc);
        const uint32_t mode = CUBLASLT_BATCH_MODE_POINTER_ARRAY;
        for (cublasLtMatrixLayout_t l : {a, b, c})
            if (!st && batch > 0) {
                st = cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &batch, sizeof batch);
                if (!st) st = cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_BATCH_MODE, &mode, sizeof mode);
            }
    }
    ~LtProblem() {
        if (c) cublasLtMatrixLayoutDestroy(c);
        if (b) cublasLtMatrixLayoutDestroy(b);
        if (a) cublasLtMatrixLayoutDestroy(a);
        if (desc) cublasLtMatmulDescDestroy(desc);
    }
    LtProblem(const LtProblem &) = delete;
    LtProblem &operator=(const LtProblem &) = delete;
};

static std::string lt_algo_str(const cublasLtMatmulAlgo_t &al) {
    int32_t id = -1, splitk = 1;
    uint32_t tile = 0, red = 0, stages = 0, swz = 0;
    uint16_t cluster = 0;
    size_t w;
    cublasLtMatmulAlgoConfigGetAttribute(&al, CUBLASLT_ALGO_CONFIG_ID, &id, sizeof id, &w);
    cublasLtMatmulAlgoConfigGetAttribute(&al, CUBLASLT_ALGO_CONFIG_TILE_ID, &tile, sizeof tile, &w);
    cublasLtMatmulAlgoConfigGetAttribute(&al, CUBLASLT_ALGO_CONFIG_STAGES_ID, &stages, sizeof stages, &w);
    cublasLtMatmulAlgoConfigGetAttribute(&al, CUBLASLT_ALGO_CONFIG_SPLITK_NUM, &splitk, sizeof splitk, &w);
    cublasLtMatmulAlgoConfigGetAttribute(&al, CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME, &red, sizeof red, &w);
    cublasLtMatmulAlgoConfigGetAttribute(&al, CUBLASLT_ALGO_CONFIG_CTA_SWIZZLING, &swz, sizeof swz, &w);
    cublasLtMatmulAlgoConfigGetAttribute(&al, CUBLASLT_ALGO_CONFIG_CLUSTER_SHAPE_ID, &cluster, sizeof cluster, &w);
    return fmt("cublasLtMatmul (algo %d, tile %u, stages %u, splitK %d, reduction %u, swizzle %u, cluster %u)", id,
               tile, stages, splitk, red, swz, (unsigned)cluster);
}

/* The problem's algorithms to time: the heuristic's first LT_ALGOS, then the
 * first with its rows split 2..8 ways ("k<S>in": reduced in place, "k<S>ws":
 * through the workspace), each named by its suffix. */
static std::vector<std::pair<std::string, cublasLtMatmulAlgo_t>> lt_algos(cublasLtHandle_t lt, const LtProblem &P,
                                                                         uint64_t ws_bytes) {
    std::vector<std::pair<std::string, cublasLtMatmulAlgo_t>> out;
    cublasLtMatmulPreference_t pref = nullptr;
    cublasLtMatmulHeuristicResult_t res[LT_ALGOS];
    int found = 0;
    cublasStatus_t st = cublasLtMatmulPreferenceCreate(&pref);
    if (!st) st = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws_bytes,
                                                       sizeof ws_bytes);
    if (!st) st = cublasLtMatmulAlgoGetHeuristic(lt, P.desc, P.a, P.b, P.c, P.c, pref, LT_ALGOS, res, &found);
    if (pref) cublasLtMatmulPreferenceDestroy(pref);
    if (st) found = 0;
    for (int i = 0; i < found; i++)
        if (res[i].state == CUBLAS_STATUS_SUCCESS) out.push_back({lt_suffix(i), res[i].algo});
    if (out.empty()) return out;
    int32_t splitk_ok = 0;
    uint32_t mask = 0;
    size_t w;
    const cublasLtMatmulAlgo_t first = out[0].second;
    cublasLtMatmulAlgoCapGetAttribute(&first, CUBLASLT_ALGO_CAP_SPLITK_SUPPORT, &splitk_ok, sizeof splitk_ok, &w);
    cublasLtMatmulAlgoCapGetAttribute(&first, CUBLASLT_ALGO_CAP_REDUCTION_SCHEME_MASK, &mask, sizeof mask, &w);
    if (!splitk_ok) return out;
    for (int32_t s : lt_splits)
        for (uint32_t red : {(uint32_t)CUBLASLT_REDUCTION_SCHEME_INPLACE, (uint32_t)CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE}) {
            if (!(mask & red)) continue;
            cublasLtMatmulAlgo_t al = first;
            cublasLtMatmulHeuristicResult_t chk;
            if (cublasLtMatmulAlgoConfigSetAttribute(&al, CUBLASLT_ALGO_CONFIG_SPLITK_NUM, &s, sizeof s) ||
                cublasLtMatmulAlgoConfigSetAttribute(&al, CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME, &red, sizeof red) ||
                cublasLtMatmulAlgoCheck(lt, P.desc, P.a, P.b, P.c, P.c, &al, &chk) || chk.workspaceSize > ws_bytes)
                continue;
            out.push_back({lt_suffix_split(s, red == CUBLASLT_REDUCTION_SCHEME_INPLACE), al});
        }
    return out;
}

/* Times every algorithm of lt_algos on one problem (a, b, c: the operands,
 * or for a batch the device arrays of their pointers) and checks C's
 * row-major lower triangle (d x d, in cbuf) against ref. */
static void lt_cases(cublasLtHandle_t lt, const LtProblem &P, const std::string &base, const std::string &plan,
                     const std::string &shape, const char *what, double bytes, double useful, const void *a,
                     const void *b, void *c, const Buf &cbuf, int64_t d, const std::vector<float> &ref, const Buf &ws) {
    if (P.st) {
        fprintf(stderr, "%s.%s: cuBLASLt refused the problem (%s)\n", base.c_str(), plan.c_str(),
                cublasGetStatusString(P.st));
        return;
    }
    const auto algos = lt_algos(lt, P, ws.bytes);
    const bool tri_only = plan == "cov_lower_lt";
    if (algos.empty()) {
        fprintf(stderr, "%s.%s: cuBLASLt has no algorithm for it\n", base.c_str(), plan.c_str());
        return;
    }
    double big = 0;
    for (int64_t i = 0; i < d; i++)
        for (int64_t j = 0; j <= i; j++) big = std::max(big, (double)std::fabs(ref[(size_t)(i * d + j)]));
    std::vector<float> h((size_t)(d * d));
    const float one = 1.f, zero = 0.f;
    for (const auto &al : algos) {
        const std::string name = base + "." + plan + "." + al.first + ".bf16";
        if (!selected(name)) continue;
        Result r = mk("gemm", name, "cublasLtMatmul", shape, what, bytes, useful, "bf16", false, false);
        r.op = lt_algo_str(al.second);
        CK(cudaMemset(cbuf.p, 0, cbuf.bytes));
        if (time_op(r, [&] {
                return (int)cublasLtMatmul(lt, P.desc, &one, a, P.a, b, P.b, &zero, c, P.c, c, P.c, &al.second, ws.p,
                                           ws.bytes, G.stream);
            }, blas_err_str)) {
            CK(cudaMemcpy(h.data(), cbuf.p, h.size() * 4, cudaMemcpyDeviceToHost));
            double worst = 0;
            for (int64_t i = 0; i < d; i++)
                for (int64_t j = 0; j <= i; j++)
                    worst = std::max(worst, (double)std::fabs(h[(size_t)(i * d + j)] - ref[(size_t)(i * d + j)]));
            if (!(worst <= 1e-4 * big))
                r.error = fmt("wrong lower triangle: off by %.3g where the largest |C| is %.3g", worst, big);
            if (tri_only) { /* did the fill mode leave the rest of C alone? */
                int64_t upper = 0;
                for (int64_t i = 0; i < d; i++)
                    for (int64_t j = i + 1; j < d; j++) upper += h[(size_t)(i * d + j)] != 0.f;
                r.op += upper ? "; wrote the upper triangle too" : "; wrote the lower triangle only";
            }
        }
        report(r);
        R.push_back(r);
    }
}

static std::string lt_blk_plan(int64_t w) { return fmt("cov_lower_blk%lld", (long long)w); }

/* Whether any case bench_cov_lt could name is selected (its references are
 * computed only then): every plan with every suffix lt_algos can give. */
static bool lt_any(const std::string &base) {
    std::vector<std::string> plans = {"gemmex_full", "cov_lower_lt"}, sufs;
    for (int64_t w : lt_widths) plans.push_back(lt_blk_plan(w));
    for (int i = 0; i < LT_ALGOS; i++) sufs.push_back(lt_suffix(i));
    for (int32_t s : lt_splits)
        for (bool in : {true, false}) sufs.push_back(lt_suffix_split(s, in));
    for (const std::string &plan : plans)
        for (const std::string &suf : sufs)
            if (selected(base + "." + plan + "." + suf + ".bf16")) return true;
    return false;
}

/* C2's cuBLASLt cases at one width (see the top of this section): x16 the
 * uncentred rows GemmEx multiplies, xc the centred rows (ldw) with room
 * after them for blk's pointer arrays, c the d x d output. */
static void bench_cov_lt(int64_t n, int64_t d, const std::string &base, const std::string &shape, const Buf &x16,
                         const Buf &xc, int64_t ldw, const Buf &c) {
    if (!lt_any(base)) return;
    cublasLtHandle_t lt = nullptr;
    if (cublasLtCreate(&lt) != CUBLAS_STATUS_SUCCESS) die(1, "cublasLtCreate failed");
    Buf ws((size_t)64 << 20);
    const double useful = (double)n * d * (d + 1), cb = 4.0 * d * (d + 1) / 2;
    const float one = 1.f, zero = 0.f;
    std::vector<float> ref_full((size_t)(d * d)), ref_tri((size_t)(d * d));
    /* the references: GemmEx on the uncentred rows, the default batched blocks on the centred ones */
    CK(cublasGemmEx(G.blas, CUBLAS_OP_N, CUBLAS_OP_T, (int)d, (int)d, (int)n, &one, x16.p, CUDA_R_16BF, (int)d, x16.p,
                    CUDA_R_16BF, (int)d, &zero, c.p, CUDA_R_32F, (int)d, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT)
           ? cudaErrorUnknown : cudaSuccess);
    CK(cudaMemcpy(ref_full.data(), c.p, c.bytes, cudaMemcpyDeviceToHost));
    cublasStatus_t bs = CUBLAS_STATUS_SUCCESS;
    CK(ss_cov_lower_blk(G.blas, 0, c.f(), d, NULL, SS_CUDA_BF16, d, NULL, n, d, 0, 0, xc.p, G.stream, &bs)
           ? cudaErrorUnknown : cudaSuccess);
    CK(cudaMemcpy(ref_tri.data(), c.p, c.bytes, cudaMemcpyDeviceToHost));
    {
        LtProblem P(d, d, n, d, d, 0, -1);
        lt_cases(lt, P, base, "gemmex_full", shape, "bf16 in, fp32 out (full d x d, uncentred; FLOPs counted: one triangle)",
                 2.0 * n * d + 4.0 * d * d, useful, x16.p, x16.p, c.p, c, d, ref_full, ws);
    }
    {
        /* the row-major lower triangle is the column-major upper one */
        LtProblem P(d, d, n, ldw, d, 0, CUBLAS_FILL_MODE_UPPER);
        lt_cases(lt, P, base, "cov_lower_lt", shape, "centred bf16 rows in (center_rows), cuBLASLt's fill-mode "
                 "(triangular) product, fp32 accumulate", 2.0 * n * ldw + cb, useful, xc.p, xc.p, c.p, c, d, ref_tri, ws);
    }
    for (int64_t W : lt_widths) {
        ss_cuda_cov_blk p;
        if (ss_cuda_cov_lower_blk_prepare(&p, c.f(), d, NULL, SS_CUDA_BF16, d, NULL, n, d, W, 0, xc.p, G.stream) ||
            p.groups != 1 || p.splits != 1)
            continue; /* widths that do not divide d make three shapes: not here */
        const ss_cuda_cov_blk_group &g = p.g[0];
        LtProblem P(g.m, g.n, p.k, p.lda, p.ldc, g.batch, -1);
        lt_cases(lt, P, base, lt_blk_plan(W), shape + fmt(" block=%lld", (long long)W),
                 "centred bf16 rows in (center_rows), cuBLASLt batched bf16 products of the triangle's blocks "
                 "(pointer arrays), fp32 accumulate",
                 2.0 * n * ldw + cb, useful, (const void *)g.a, (const void *)g.b, (void *)g.c, c, d, ref_tri, ws);
    }
    cublasLtDestroy(lt);
    /* the fastest full product (GemmEx from the first pass, or cuBLASLt's) against the fastest
     * cuBLASLt triangle: C2 as gpu_report.py judges it with these cases */
    const Result *full = nullptr, *tri = nullptr;
    for (const Result &r : R) {
        if (!r.error.empty() || r.name.rfind(base + ".", 0) != 0) continue;
        const std::string k = r.name.substr(base.size() + 1);
        const Result **slot = k.rfind("gemmex_full.", 0) == 0 ? &full
                              : k.rfind("cov_lower_", 0) == 0 && k.find(".lt") != std::string::npos ? &tri : nullptr;
        if (slot && (!*slot || r.median_ms < (*slot)->median_ms)) *slot = &r;
    }
    if (full && tri)
        fprintf(stderr, "  %s: %s is %.2fx faster than %s, the fastest full product (target >= 1.4x)\n", base.c_str(),
                tri->name.c_str() + base.size() + 1, full->median_ms / tri->median_ms,
                full->name.c_str() + base.size() + 1);
}

/* The covariance update of one batch (issue 4): X[n,d] row-major, the
 * centred lower triangle of X^T X by kernels/cov_lower.cu, against cuBLAS on
 * the same data: cublasSsyrk (fp32, one triangle, uncentred: cuBLAS has no
 * centring, so it is given the advantage) and cublasGemmEx bf16 -> fp32, the
 * full d x d product (the fast path cuBLAS offers for bf16). "Useful" FLOPs
 * are those of one triangle with its diagonal, n d (d+1); every case is
 * reported with them, so TFLOP/s compare per useful FLOP and the GemmEx
 * line's rate is half its raw one. The targets: cov_lower.bf16 >= 1.4x
 * faster than gemmex_full.bf16, and >= 90% of Ssyrk's useful-FLOP rate for
 * cov_lower.f32; the ratios are printed after the cases. cov_lower_tc.bf16
 * and cov_lower_wg.bf16 are the tensor-core kernels (bf16 operands;
 * kernels/cov_lower_tc.cu on mma.sync, cov_lower_wg.cu on wgmma, the latter
 * only where it is supported), the ones meant for the first target, and
 * cov_lower_blk*.bf16 the same products as cuBLAS's batched product of the
 * triangle's square blocks (kernels/cov_lower_blk.cu) at several block widths
 * (the number; none for the default) and, at d <= 1024, with the rows cut
 * into N slices (sN; the slices' partial sum included in the time) at the
 * default width and at 128 and 192,
 * cov_lower_rec*.bf16 as its recursive plan (a few larger products; the
 * number is the width of the diagonal blocks, none for the default). These
 * two multiply rows already centred to bf16, as collect hands them over:
 * its gather centres them (center_rows.bf16, timed on its own), where the
 * tensor-core kernels' times include a centring pass of their own.
 * center_gemmex_full.bf16 is the whole cuBLAS path (the centring pass the
 * triangle kernels include, then the full product): reported, not the target's
 * measure. */
static void bench_cov(int64_t n) {
    const int64_t widths[] = {768, 3072, 16384};
    for (int64_t d : widths) {
        std::string shape = fmt("n=%lld d=%lld", (long long)n, (long long)d);
        std::string base = fmt("cov.d%lld", (long long)d);
        bool any = false;
        /* the blocked triangle's two plans at their default widths and at the others worth trying:
         * blk's block widths, rec's diagonal widths (each once; never the whole d, the full product) */
        struct blk_var {
            int rec;
            int64_t w, s; /* s: blk's row slices asked for (0: its default) */
        };
        std::vector<blk_var> vars = {{0, 0, 0}, {1, 0, 0}};
        for (int64_t w : {128, 256, 512, 1024, 2048, 4096})
            if (w < d && w != ss_cuda_cov_blk_leaf(d, 0) && d / w <= 32) vars.push_back({0, w, 0});
        /* where the blocks are few (d <= 1024), the default width with its rows in slices */
        if (d <= 1024)
            for (int64_t sl : {3, 6, 12})
                if (ss_cuda_cov_blk_splits(n, sl) == sl) vars.push_back({0, 0, sl});
        /* and narrower blocks with slices: at d 768 the default's six blocks leave most SMs idle, where
         * 128 x 128 blocks (21, 0.58 of the full product's work) in 2-6 slices make 42-126 products */
        if (d <= 1024)
            for (int64_t w : {128, 192})
                for (int64_t sl : {2, 3, 4, 6})
                    if (w < d && ss_cuda_cov_blk_splits(n, sl) == sl) vars.push_back({0, w, sl});
        std::vector<int64_t> rec_seen = {ss_cuda_cov_rec_leaf(d, 0)};
        for (int64_t w : {128, 256, 512, 1024, 2048, 4096}) {
            const int64_t L = ss_cuda_cov_rec_leaf(d, w);
            if (L < d && std::find(rec_seen.begin(), rec_seen.end(), L) == rec_seen.end())
                rec_seen.push_back(L), vars.push_back({1, L, 0});
        }
        auto blk_name = [&](const blk_var &v) {
            const char *plan = v.rec ? "rec" : "blk";
            return base + fmt(".cov_lower_%s", plan) + (v.w ? fmt("%lld", (long long)v.w) : "") +
                   (v.s ? fmt("s%lld", (long long)v.s) : "") + ".bf16";
        };
        for (const char *c : {".colmean.f32", ".colmean.bf16", ".cov_lower.f32", ".cov_lower.bf16",
                              ".cov_lower_tc.bf16", ".cov_lower_wg.bf16", ".ssyrk.fp32", ".gemmex_full.bf16",
                              ".center_gemmex_full.bf16"})
            any = any || selected(base + c);
        for (const blk_var &v : vars) any = any || selected(blk_name(v));
        if (d <= 1024) any = any || lt_any(base) || selected(base + ".sum_splits6");
        if (!any) continue;
        const double useful = (double)n * d * (d + 1), nd = (double)n * d, cb = 4.0 * d * (d + 1) / 2;
        Buf x32(n * d * 4), x16(n * d * 2), c(d * d * 4), m64(d * 8), m32(d * 4);
        Buf ws((size_t)ss_cuda_cov_lower_ws(n, d)), tcws((size_t)ss_cuda_cov_lower_tc_ws(n, d));
        Buf wgws((size_t)ss_cuda_cov_lower_wg_ws(n, d));
        Buf cmws((size_t)ss_cuda_colmean_ws(n, d));
        int64_t blk_ws = ss_cuda_cov_lower_rec_ws(n, d);
        for (const blk_var &v : vars)
            if (!v.rec) blk_ws = std::max(blk_ws, ss_cuda_cov_lower_blk_ws(n, d, v.w, v.s));
        Buf blkws((size_t)blk_ws);
        fill(x32);
        fill_bf16(x16);
        CK(cudaMemset(c.p, 0, c.bytes));
        CK(cudaMemset(m32.p, 0, m32.bytes)); /* the late pass has no colmean case to set it */
        const float one = 1.f, zero = 0.f;
        run_case(mk("kernel", base + ".colmean.f32", "ss_cuda_colmean", shape, "f32", 4 * nd + 12.0 * d, 0, "", true,
                    false),
                 [&] { return ss_cuda_colmean((double *)m64.p, m32.f(), x32.p, SS_CUDA_F32, d, NULL, n, d, (double *)cmws.p, G.stream); });
        run_case(mk("kernel", base + ".colmean.bf16", "ss_cuda_colmean", shape, "bf16", 2 * nd + 12.0 * d, 0, "", true,
                    false),
                 [&] { return ss_cuda_colmean((double *)m64.p, m32.f(), x16.p, SS_CUDA_BF16, d, NULL, n, d, (double *)cmws.p, G.stream); });
        run_case(mk("kernel", base + ".cov_lower.f32", "ss_cuda_cov_lower", shape, "f32 in, fp32 accumulate",
                    4 * nd + cb, useful, "fp32", false, false),
                 [&] { return ss_cuda_cov_lower(c.f(), d, x32.p, SS_CUDA_F32, d, m32.f(), n, d, ws.p, G.stream); });
        run_case(mk("kernel", base + ".cov_lower.bf16", "ss_cuda_cov_lower", shape, "bf16 in, fp32 accumulate",
                    2 * nd + cb, useful, "fp32", false, false),
                 [&] { return ss_cuda_cov_lower(c.f(), d, x16.p, SS_CUDA_BF16, d, m32.f(), n, d, ws.p, G.stream); });
        run_case(mk("kernel", base + ".cov_lower_tc.bf16", "ss_cuda_cov_lower_tc", shape,
                    "bf16 in, bf16 tensor-core products, fp32 accumulate", 2 * nd + cb, useful, "bf16", false, false),
                 [&] { return ss_cuda_cov_lower_tc(c.f(), d, x16.p, SS_CUDA_BF16, d, m32.f(), n, d, tcws.p, G.stream); });
        if (ss_cuda_cov_lower_wg_supported())
            run_case(mk("kernel", base + ".cov_lower_wg.bf16", "ss_cuda_cov_lower_wg", shape,
                        "bf16 in, bf16 wgmma products, fp32 accumulate", 2 * nd + cb, useful, "bf16", false, false),
                     [&] {
                         return ss_cuda_cov_lower_wg(c.f(), d, x16.p, SS_CUDA_BF16, d, m32.f(), n, d, wgws.p,
                                                     G.stream);
                     });
        /* collect gathers the batch's rows and centres them to bf16 in one pass (fp32 sites, a row
         * list: here every row in order); the blocked triangle then multiplies those rows */
        const int64_t ldw = ss_cuda_cov_blk_ldw(d);
        Buf rows((size_t)n * 8);
        {
            std::vector<int64_t> hr((size_t)n);
            for (int64_t r = 0; r < n; r++) hr[(size_t)r] = r;
            CK(cudaMemcpy(rows.p, hr.data(), rows.bytes, cudaMemcpyHostToDevice));
        }
        run_case(mk("kernel", base + ".center_rows.bf16", "ss_cuda_cov_center", shape,
                    "f32 rows from a row list, centred, to bf16 (collect's gather for the blocked triangle)",
                    4 * nd + 2.0 * n * ldw + 8.0 * n + 4.0 * d, 0, "", true, false),
                 [&] {
                     return ss_cuda_cov_center(blkws.p, SS_CUDA_BF16, ldw, x32.p, SS_CUDA_F32, d, (const int64_t *)rows.p,
                                               m32.f(), n, n, d, G.stream);
                 });
        /* the blocked cases' operand, whether or not that case ran */
        CK(ss_cuda_cov_center(blkws.p, SS_CUDA_BF16, ldw, x32.p, SS_CUDA_F32, d, (const int64_t *)rows.p, m32.f(), n, n,
                              d, G.stream) == 0 ? cudaSuccess : cudaErrorInvalidValue);
        for (const blk_var &v : vars) {
            const int64_t L = v.rec ? ss_cuda_cov_rec_leaf(d, v.w) : ss_cuda_cov_blk_leaf(d, v.w);
            const int64_t sl = v.rec ? 1 : ss_cuda_cov_blk_splits(n, v.s);
            run_case(mk("gemm", blk_name(v), "ss_cov_lower_blk",
                        shape + fmt(v.rec ? " diagonal=%lld" : " block=%lld", (long long)L) +
                            (sl > 1 ? fmt(" slices=%lld", (long long)sl) : ""),
                        v.rec ? "centred bf16 rows in (center_rows), cuBLAS strided-batched bf16 products of the "
                                "triangle halved recursively, fp32 accumulate"
                        : sl > 1 ? "centred bf16 rows in (center_rows), cuBLAS batched bf16 products of the "
                                   "triangle's blocks by slices of the rows, fp32 accumulate, the slices' partial "
                                   "triangles summed"
                                 : "centred bf16 rows in (center_rows), cuBLAS batched bf16 products of the "
                                   "triangle's blocks, fp32 accumulate",
                        2.0 * n * ldw + cb + (sl > 1 ? sl * cb + 4.0 * sl * d * d : 0), useful, "bf16", false,
                        false),
                     [&] {
                         cublasStatus_t bs = CUBLAS_STATUS_SUCCESS;
                         int e = ss_cov_lower_blk(G.blas, v.rec, c.f(), d, NULL, SS_CUDA_BF16, d, NULL, n, d, v.w,
                                                  v.s, blkws.p, G.stream, &bs);
                         if (e == -1)
                             fprintf(stderr, "%s: %s\n", v.rec ? "cublasGemmStridedBatchedEx" : "cublasGemmBatchedEx",
                                     cublasGetStatusString(bs));
                         return e == -1 ? 1 : e;
                     });
        }
        /* the slices' partial triangles summed (part of every sliced case above): 6 of them */
        if (d <= 1024 && selected(base + ".sum_splits6")) {
            Buf part((size_t)(6 * d * d * 4));
            fill(part);
            run_case(mk("kernel", base + ".sum_splits6", "ss_cuda_cov_sum_splits", shape + " splits=6",
                        "f32 partial triangles to C's lower triangle", 7 * cb, 0, "", true, false),
                     [&] { return ss_cuda_cov_sum_splits(c.f(), d, part.f(), d, 6, G.stream); });
        }
        cublasSetMathMode(G.blas, CUBLAS_DEFAULT_MATH);
        /* Row-major X[n,d] is column-major A[d,n] (lda = d); A A^T is the d x d
         * product, its column-major upper triangle the row-major lower one. */
        run_case(mk("gemm", base + ".ssyrk.fp32", "cublasSsyrk", shape, "f32 (uncentred)", 4 * nd + cb, useful, "fp32",
                    false, false),
                 [&] {
                     return (int)cublasSsyrk(G.blas, CUBLAS_FILL_MODE_UPPER, CUBLAS_OP_N, (int)d, (int)n, &one, x32.f(),
                                             (int)d, &zero, c.f(), (int)d);
                 },
                 blas_err_str);
        run_case(mk("gemm", base + ".gemmex_full.bf16", "cublasGemmEx", shape,
                    "bf16 in, fp32 out (full d x d, uncentred; FLOPs counted: one triangle)", 2 * nd + 4.0 * d * d,
                    useful, "bf16", false, false),
                 [&] {
                     return (int)cublasGemmEx(G.blas, CUBLAS_OP_N, CUBLAS_OP_T, (int)d, (int)d, (int)n, &one, x16.p,
                                              CUDA_R_16BF, (int)d, x16.p, CUDA_R_16BF, (int)d, &zero, c.p, CUDA_R_32F,
                                              (int)d, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
                 },
                 blas_err_str);
        /* The whole cuBLAS path for the job's centred triangle from the same bf16 rows: the
         * centring pass the triangle kernels make (cuBLAS cannot centre), then the full
         * product. C2 judges against gemmex_full alone (cuBLAS given that advantage); this
         * case says what a job without the triangle kernels would pay. */
        Buf xc16(n * d * 2);
        run_case(mk("gemm", base + ".center_gemmex_full.bf16", "ss_cuda_cov_center + cublasGemmEx", shape,
                    "bf16 in, centred to bf16, then the full d x d product to fp32 (FLOPs counted: one triangle)",
                    4 * nd + 4.0 * d * d, useful, "bf16", false, false),
                 [&] {
                     int e = ss_cuda_cov_center(xc16.p, SS_CUDA_BF16, d, x16.p, SS_CUDA_BF16, d, NULL, m32.f(), n, n, d,
                                                G.stream);
                     if (e) return e;
                     return (int)cublasGemmEx(G.blas, CUBLAS_OP_N, CUBLAS_OP_T, (int)d, (int)d, (int)n, &one, xc16.p,
                                              CUDA_R_16BF, (int)d, xc16.p, CUDA_R_16BF, (int)d, &zero, c.p, CUDA_R_32F,
                                              (int)d, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
                 });
        if (d <= 1024) bench_cov_lt(n, d, base, shape, x16, blkws, ldw, c); /* C2's open width */
        auto ms_of = [&](const std::string &nm) { /* this pass's case, or the first pass's */
            for (size_t i = 0; i < R.size(); i++)
                if (R[i].name == nm && R[i].error.empty()) return R[i].median_ms;
            return 0.0;
        };
        double f32 = ms_of(base + ".cov_lower.f32"), b16 = ms_of(base + ".cov_lower.bf16");
        double syrk = ms_of(base + ".ssyrk.fp32"), gx = ms_of(base + ".gemmex_full.bf16");
        double tc = ms_of(base + ".cov_lower_tc.bf16"), wg = ms_of(base + ".cov_lower_wg.bf16");
        if (f32 > 0 && syrk > 0 && !G.late)
            fprintf(stderr, "  %s: cov_lower.f32 runs at %.0f%% of Ssyrk's useful-FLOP rate (target >= 90%%)\n",
                    base.c_str(), 100.0 * syrk / f32);
        if (b16 > 0 && gx > 0 && !G.late)
            fprintf(stderr, "  %s: cov_lower.bf16 is %.2fx faster than the full bf16 GemmEx (target >= 1.4x)\n",
                    base.c_str(), gx / b16);
        if (tc > 0 && gx > 0 && !G.late)
            fprintf(stderr, "  %s: cov_lower_tc.bf16 is %.2fx faster than the full bf16 GemmEx (target >= 1.4x)\n",
                    base.c_str(), gx / tc);
        if (wg > 0 && gx > 0 && G.late)
            fprintf(stderr, "  %s: cov_lower_wg.bf16 is %.2fx faster than the full bf16 GemmEx (target >= 1.4x)\n",
                    base.c_str(), gx / wg);
        for (const blk_var &v : vars) {
            double b = ms_of(blk_name(v));
            if (b > 0 && gx > 0 && !G.late)
                fprintf(stderr, "  %s: %s is %.2fx faster than the full bf16 GemmEx (target >= 1.4x)\n", base.c_str(),
                        blk_name(v).c_str() + base.size() + 1, gx / b);
        }
    }
}

/* ---------------- JSON ---------------- */

static void json_str(FILE *f, const std::string &s) {
    fputc('"', f);
    for (unsigned char c : s) {
        if (c == '"' || c == '\\') fprintf(f, "\\%c", c);
        else if (c < 0x20) fprintf(f, "\\u%04x", c);
        else fputc(c, f);
    }
    fputc('"', f);
}

static void json_num(FILE *f, double v) {
    if (std::isfinite(v)) fprintf(f, "%.9g", v);
    else fputs("null", f);
}

static void write_json(FILE *f) {
    char date[32];
    time_t now = time(nullptr);
    struct tm tmv;
    gmtime_r(&now, &tmv);
    strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%SZ", &tmv);
    fprintf(f, "{\n \"benchmark\": \"kernels-gpu\",\n \"date\": \"%s\",\n \"device\": {\"name\": ", date);
    json_str(f, D.name);
    fprintf(f, ", \"compute_capability\": \"%d.%d\", \"sm_count\": %d, \"l2_bytes\": %lld, \"memory_bytes\": %lld,",
            D.cc_major, D.cc_minor, D.sms, (long long)D.l2_bytes, (long long)D.mem_bytes);
    fprintf(f, " \"clock_mhz\": ");
    json_num(f, D.clock_khz ? D.clock_khz / 1e3 : NAN);
    fprintf(f, ", \"memory_clock_mhz\": ");
    json_num(f, D.mem_clock_khz ? D.mem_clock_khz / 1e3 : NAN);
    fprintf(f, ", \"memory_bus_bits\": ");
    json_num(f, D.bus_bits ? D.bus_bits : NAN);
    fprintf(f, ",\n  \"theoretical_gbs\": ");
    json_num(f, D.theo_gbs > 0 ? D.theo_gbs : NAN);
    fprintf(f, ", \"peaks\": {\"source\": ");
    json_str(f, D.peaks.label);
    fprintf(f, ", \"fp32_tflops\": ");
    json_num(f, D.peaks.fp32 > 0 ? D.peaks.fp32 : NAN);
    fprintf(f, ", \"tf32_tflops\": ");
    json_num(f, D.peaks.tf32 > 0 ? D.peaks.tf32 : NAN);
    fprintf(f, ", \"bf16_tflops\": ");
    json_num(f, D.peaks.bf16 > 0 ? D.peaks.bf16 : NAN);
    fprintf(f, ", \"datasheet_gbs\": ");
    json_num(f, D.peaks.hbm_gbs > 0 ? D.peaks.hbm_gbs : NAN);
    fprintf(f, "}},\n \"versions\": {\"driver\": %d, \"runtime\": %d, \"cublas\": %d},\n", D.driver, D.runtime, D.cublas);
    fprintf(f, " \"settings\": {\"tokens\": %lld, \"reps\": %d, \"warmup\": %d, \"l2_flush_bytes\": %lld},\n",
            (long long)G.tokens, G.reps, G.warmup, (long long)(G.flush_floats * 4));
    fprintf(f, " \"copy_gbs\": ");
    json_num(f, copy_gbs > 0 ? copy_gbs : NAN);
    fprintf(f, ", \"copy_kernel_gbs\": ");
    json_num(f, copy_kernel_gbs > 0 ? copy_kernel_gbs : NAN);
    fprintf(f, ",\n \"results\": [");
    for (size_t i = 0; i < R.size(); i++) {
        const Result &r = R[i];
        fprintf(f, "%s\n  {\"group\": ", i ? "," : "");
        json_str(f, r.group);
        fprintf(f, ", \"name\": ");
        json_str(f, r.name);
        fprintf(f, ", \"op\": ");
        json_str(f, r.op);
        fprintf(f, ", \"shape\": ");
        json_str(f, r.shape);
        fprintf(f, ", \"dtype\": ");
        json_str(f, r.dtype);
        if (!r.error.empty()) {
            fprintf(f, ", \"error\": ");
            json_str(f, r.error);
            fprintf(f, "}");
            continue;
        }
        double s = r.median_ms * 1e-3;
        double gbs = r.bytes > 0 ? r.bytes / s / 1e9 : NAN, tf = r.flops > 0 ? r.flops / s / 1e12 : NAN;
        double pk = peak_of(r.peak_kind);
        fprintf(f, ", \"bytes\": ");
        json_num(f, r.bytes);
        fprintf(f, ", \"flops\": ");
        json_num(f, r.flops);
        fprintf(f, ", \"median_ms\": ");
        json_num(f, r.median_ms);
        fprintf(f, ", \"min_ms\": ");
        json_num(f, r.min_ms);
        fprintf(f, ", \"gbs\": ");
        json_num(f, gbs);
        fprintf(f, ", \"pct_of_copy\": ");
        json_num(f, r.memory_bound && copy_gbs > 0 ? 100.0 * gbs / copy_gbs : NAN);
        fprintf(f, ", \"pct_of_theoretical_bw\": ");
        json_num(f, r.memory_bound && D.theo_gbs > 0 ? 100.0 * gbs / D.theo_gbs : NAN);
        fprintf(f, ", \"tflops\": ");
        json_num(f, tf);
        fprintf(f, ", \"peak_kind\": ");
        if (r.peak_kind.empty()) fputs("null", f);
        else json_str(f, r.peak_kind);
        fprintf(f, ", \"pct_of_peak_flops\": ");
        json_num(f, r.flops > 0 && pk > 0 ? 100.0 * tf / pk : NAN);
        fprintf(f, ", \"memory_bound\": %s, \"target_mem80\": %s}", r.memory_bound ? "true" : "false",
                r.target_mem80 ? "true" : "false");
    }
    fprintf(f, "\n ],\n \"failures\": %d", G.failures);
    if (!g_stopped.empty()) {
        fprintf(f, ",\n \"stopped\": ");
        json_str(f, g_stopped.c_str());
    }
    if (!g_cut_before.empty()) {
        fprintf(f, ",\n \"cut\": {\"signal\": \"%s\", \"before\": ", g_signal == SIGINT ? "SIGINT" : "SIGTERM");
        json_str(f, g_cut_before);
        fprintf(f, ", \"cases_done\": %zu}", R.size());
    }
    fprintf(f, "\n}\n");
}

/* ---------------- main ---------------- */

static void usage(FILE *f) {
    fprintf(f,
            "usage: kernel_bench [--tokens R] [--reps N] [--warmup W] [--only SUBSTR] [--json FILE]\n"
            "  --tokens R    rows of the activation kernels and M of the GEMMs (default 16384 = 16 x 1024)\n"
            "  --reps N      timed launches per case, median reported (default 20)\n"
            "  --warmup W    untimed launches first (default 3)\n"
            "  --only S      run only cases whose name contains S (the copy reference always runs)\n"
            "  --json FILE   write the results there (default: stdout)\n"
            "SIGTERM or SIGINT stops it between launches or in the set-up between cases (at the next buffer\n"
            "allocated or filled): the cases finished are written with \"cut\"; exit 4.\n");
}

static long long parse_int(const char *opt, const char *v, long long lo, long long hi) {
    char *end = nullptr;
    errno = 0;
    /* digits only, as subscope's options (ss_parse_int): strtoll takes a leading space or '+' */
    const bool digits = v && *v && v[strspn(v, "0123456789")] == '\0';
    long long x = digits ? strtoll(v, &end, 10) : 0;
    if (!digits || *end || errno || x < lo || x > hi)
        die(2, "%s needs an integer in %lld..%lld, got '%s'", opt, lo, hi, v ? v : "");
    return x;
}

#ifdef KB_JSON_SELFTEST
/* --cut-test N --json FILE: N cases (selftest.case0, ...) of --reps launches of 100 ms
 * each (a sleep on the host, timed by time_one's host form) through run_case, with
 * the signal handling of a real run: a SIGTERM sent meanwhile must leave FILE with the
 * finished cases and the "cut" mark, and exit 4 (tests/cli/test_kernel_bench.sh).
 * --cut-setup-test N --json FILE: the same cases of 1 ms launches, each after 3 s of
 * set-up in 100 ms steps behind setup_point(): a SIGTERM in the set-up must stop the run
 * within a step, naming the set-up after the last case finished. */
static void sleep_ms(long ms) {
    struct timespec t = {ms / 1000, ms % 1000 * 1000000};
    while (nanosleep(&t, &t) != 0 && errno == EINTR) {} /* a signal must not shorten a step */
}

/* With setup_steps > 0, each case is preceded by a set-up of that many 100 ms steps, each
 * behind setup_point() as a real case's buffers are (--cut-setup-test: a SIGTERM there must
 * stop the run at the next step, not after the whole set-up at the next launch). */
static int cut_test(int n, int setup_steps) {
    catch_signals();
    snprintf(D.name, sizeof D.name, "selftest (host)");
    D.peaks = lookup_peaks(D.name, 0);
    for (int i = 0; i < n; i++) {
        if (setup_steps) fprintf(stderr, "kernel_bench: set-up of selftest.case%d\n", i);
        for (int s = 0; s < setup_steps; s++) {
            setup_point();
            sleep_ms(100);
        }
        run_case(mk("kernel", fmt("selftest.case%d", i), "nanosleep", setup_steps ? "1 ms" : "100 ms", "none", 1e6, 0,
                    "", true, false),
                 [setup_steps] {
                     sleep_ms(setup_steps ? 1 : 100);
                     return 0;
                 });
    }
    FILE *f = fopen(G.json, "w");
    if (!f) die(1, "%s: %s", G.json, strerror(errno));
    write_json(f);
    return fclose(f) ? 1 : 0;
}

/* Built only by `make -f bench/gpu/Makefile build/bench/kernel_bench_json_selftest`:
 * checks, without a GPU, that the JSON writer emits a document gpu_report.py can read
 * (every field and both the error and the success form of a result); with --cut-test,
 * the stop on SIGTERM (cut_test above). */
int main(int argc, char **argv) {
    if (argc == 5 && (!strcmp(argv[1], "--cut-test") || !strcmp(argv[1], "--cut-setup-test")) &&
        !strcmp(argv[3], "--json")) {
        G.json = argv[4], G.warmup = 0, G.reps = 4;
        /* --cut-setup-test: 3 s of set-up (30 steps) before each case of 4 launches of 1 ms */
        return cut_test((int)parse_int(argv[1], argv[2], 1, 1000), !strcmp(argv[1], "--cut-setup-test") ? 30 : 0);
    }
    snprintf(D.name, sizeof D.name, "NVIDIA H100 80GB HBM3 \"test\"");
    D.cc_major = 9, D.sms = 132, D.l2_bytes = 50 << 20, D.mem_bytes = (int64_t)80 << 30, D.bus_bits = 5120;
    D.mem_clock_khz = 2619000, D.theo_gbs = 3352.3, D.peaks = lookup_peaks(D.name, D.sms);
    copy_gbs = 2600;
    Result a = mk("kernel", "layernorm.d768", "ss_cuda_layernorm", "16384x768", "f32", 1e8, 0, "", true, true);
    a.median_ms = 0.05, a.min_ms = 0.049;
    Result b = mk("gemm", "gemm.gpt2-small.qkv.bf16", "cublasGemmEx", "M=1 N=2 K=3", "bf16", 1e6, 5e12, "bf16", false, false);
    b.median_ms = 10, b.min_ms = 9;
    Result c = mk("kernel", "add.d768", "ss_cuda_add", "x", "f32", 1, 0, "", true, true);
    c.error = "invalid argument";
    R = {a, b, c};
    G.failures = 1;
    write_json(stdout);
    return 0;
}
#else
int main(int argc, char **argv) {
    catch_signals();
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : nullptr;
        if (!strcmp(a, "--tokens")) G.tokens = parse_int(a, v, 1024, 1 << 20), i++;
        else if (!strcmp(a, "--reps")) G.reps = (int)parse_int(a, v, 1, 10000), i++;
        else if (!strcmp(a, "--warmup")) G.warmup = (int)parse_int(a, v, 0, 1000), i++;
        else if (!strcmp(a, "--only")) {
            if (!v) die(2, "--only needs a value");
            G.only = v, i++;
        } else if (!strcmp(a, "--json")) {
            if (!v) die(2, "--json needs a file name");
            G.json = v, i++;
        } else if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else {
            usage(stderr);
            die(2, "unknown option '%s'", a);
        }
    }
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess || n == 0)
        die(3, "no GPU: %s", e != cudaSuccess ? cudaGetErrorString(e) : "no CUDA device is visible");
    CK(cudaSetDevice(0));
    CK(cudaStreamCreate(&G.stream));
    CK(cudaEventCreate(&G.ev0));
    CK(cudaEventCreate(&G.ev1));
    if (cublasCreate(&G.blas) != CUBLAS_STATUS_SUCCESS) die(1, "cuBLAS could not be initialised");
    if (cublasSetStream(G.blas, G.stream) != CUBLAS_STATUS_SUCCESS) die(1, "cublasSetStream failed");
    device_info(0);
    G.grid = 4 * D.sms;
    /* Kernels built for sm_90 cannot run on an older GPU; say so rather than
     * report "no kernel image" for every case. */
    if (D.cc_major < 9)
        die(3, "%s is compute capability %d.%d; the kernels are built for sm_90 (Hopper) and later", D.name,
            D.cc_major, D.cc_minor);
    int64_t l2 = D.l2_bytes > 0 ? D.l2_bytes : (64 << 20);
    G.flush_floats = 4 * l2 / 4;
    G.flush_floats = (G.flush_floats + 3) / 4 * 4;
    CK(cudaMalloc(&G.flush, G.flush_floats * 4));
    CK(cudaMalloc(&G.sink, 4));
    k_fill_f32<<<G.grid, 256, 0, G.stream>>>(G.flush, G.flush_floats, 999, 1.f);
    CK(cudaGetLastError());
    CK(cudaStreamSynchronize(G.stream));

    fprintf(stderr, "kernel_bench: %s (cc %d.%d, %d SMs, L2 %.0f MiB, %.0f GiB), driver %d, runtime %d, cuBLAS %d\n",
            D.name, D.cc_major, D.cc_minor, D.sms, D.l2_bytes / 1048576.0, D.mem_bytes / 1073741824.0, D.driver,
            D.runtime, D.cublas);
    fprintf(stderr, "kernel_bench: theoretical DRAM bandwidth %s; peaks: %s\n",
            D.theo_gbs > 0 ? fmt("%.0f GB/s", D.theo_gbs).c_str() : "unknown (attributes absent)", D.peaks.label);
    fprintf(stderr, "kernel_bench: %lld tokens, median of %d after %d warm-up, L2 flushed (%.0f MiB read) before each\n",
            (long long)G.tokens, G.reps, G.warmup, G.flush_floats * 4 / 1048576.0);

    bench_copy();
    bench_elementwise(G.tokens);
    bench_embed(G.tokens);
    bench_attention(G.tokens);
    bench_attention_from16(G.tokens, 32, 128, "", false);
    bench_attention_from16(G.tokens, 12, 64, ".dh64", true);
    bench_attention_kv("gpt2-small", 12, 12, 64, 4096, {4, 8, 16, 32, 64});
    bench_attention_kv("llama3-8b", 32, 8, 128, 4096, {8, 16, 32});
    bench_attention_kv("llama3-8b", 32, 8, 128, 32768, {16, 32, 64});
    bench_attention_kv("gpt2-small", 12, 12, 64, 4096, {16}, SS_CUDA_BF16);
    bench_attention_kv("llama3-8b", 32, 8, 128, 32768, {64}, SS_CUDA_BF16);
    bench_rope(G.tokens);
    bench_gemm(G.tokens);
    bench_lt(G.tokens);
    bench_cov(G.tokens);
    G.late = true; /* the wgmma covariance kernel */
    bench_cov(G.tokens);

    FILE *f = stdout;
    if (G.json && !(f = fopen(G.json, "w"))) die(1, "%s: %s", G.json, strerror(errno));
    write_json(f);
    if (f != stdout && fclose(f) != 0) die(1, "%s: write failed", G.json);
    cublasDestroy(G.blas);
    return G.failures ? 1 : 0;
}
#endif
