#define _DEFAULT_SOURCE /* MAP_ANONYMOUS, MAP_NORESERVE */
/* The fp32 CPU reference ops. Layernorm statistics and softmax sums
 * accumulate in double so that this backend can serve as the oracle for
 * faster ones; the O(n·d) inner loops stay in float so they vectorise. */
#include <limits.h>
#include <pthread.h>
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cpu_internal.h"
#include "subscope/backend.h"
#include "subscope/util.h"

#ifdef SS_HAVE_BLAS
#include <cblas.h>
#include <stdio.h>
#include <sys/mman.h>
#endif
/* The cache of released blocks needs the size malloc gave a block. */
#ifdef __GLIBC__
#include <malloc.h>
#define SS_CPU_CACHE 1
#endif
#if defined(__SANITIZE_ADDRESS__)
#define SS_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SS_ASAN 1
#endif
#endif
#ifdef SS_ASAN
#include <sanitizer/asan_interface.h>
#endif

typedef struct {
    float *C;
    const float *A, *B, *bias;
    int64_t M, N, K;
    int trans_b;
} mm_ctx;

#define MM_ROWS 16

/* Built-in GEMM for builds without BLAS: 16-row panels in parallel, i-k-j
 * order so the inner loop streams contiguous rows of B and C. */
static void mm_panel(void *vctx, int64_t p) {
    const mm_ctx *c = vctx;
    int64_t r0 = p * MM_ROWS, r1 = r0 + MM_ROWS < c->M ? r0 + MM_ROWS : c->M;
    for (int64_t i = r0; i < r1; i++) {
        float *crow = c->C + i * c->N;
        const float *arow = c->A + i * c->K;
        if (c->trans_b) {
            for (int64_t j = 0; j < c->N; j++) {
                const float *brow = c->B + j * c->K;
                float acc = 0.f;
                for (int64_t k = 0; k < c->K; k++) acc += arow[k] * brow[k];
                crow[j] = acc + (c->bias ? c->bias[j] : 0.f);
            }
        } else {
            for (int64_t j = 0; j < c->N; j++) crow[j] = 0.f;
            for (int64_t k = 0; k < c->K; k++) {
                float a = arow[k];
                const float *brow = c->B + k * c->N;
                for (int64_t j = 0; j < c->N; j++) crow[j] += a * brow[j];
            }
            if (c->bias)
                for (int64_t j = 0; j < c->N; j++) crow[j] += c->bias[j];
        }
    }
}

void ss_matmul_builtin(float *C, const float *A, const float *B, const float *bias, int64_t M, int64_t N, int64_t K,
                       int trans_b) {
    mm_ctx c = {C, A, B, bias, M, N, K, trans_b};
    ss_parallel_for((M + MM_ROWS - 1) / MM_ROWS, mm_panel, &c);
}

static ss_status matmul_f32(float *C, const float *A, const float *B, const float *bias, int64_t M, int64_t N,
                            int64_t K, int trans_b);

#ifdef SS_HAVE_BLAS
/* BLAS runs single-threaded inside our own thread pool: each thread takes a
 * slice of C's rows (or, for few rows, of its columns). OpenBLAS's own
 * threads would spin-wait between calls and fight the pool's threads for the
 * cores while the other ops run; one set of threads for everything is
 * faster, and the same for every op. */
void openblas_set_num_threads(int n) __attribute__((weak));

/* OpenBLAS maps a work buffer of 128 MiB of address space the first time a
 * call finds none of its buffers free, keeps it for the process, and where
 * the mapping fails it retries forever: under an address-space limit
 * (ulimit -v, RLIMIT_AS, which some batch systems set) a forward near the
 * limit spun at 100% of a core instead of reporting the shortage. So where
 * such a limit is set, the backend's start checks that the buffers of the
 * pool's P threads fit (P mappings of 160 MiB held together, then unmapped:
 * malloc would keep the address space, main.c having raised its mmap
 * threshold); without the room, an error that names the limit. Then it has
 * the P buffers made at once, by taking P of them from OpenBLAS's allocator
 * together and giving them back: the buffers sit in one table for all
 * threads and a call takes the first free one, so P calls at a time never
 * need another. (Products run in parallel to the same end were not enough:
 * on a busy machine one thread's product sometimes ended before the other's
 * began, one buffer was made, and the first parallel product of the run
 * hung.) Both functions are OpenBLAS's own exports, declared weak: another
 * BLAS has neither, and no such retry to guard against. docs/DECISIONS.md,
 * "Out of memory under ulimit -v". */
void *blas_memory_alloc(int procpos) __attribute__((weak));
void blas_memory_free(void *buffer) __attribute__((weak));
#define BLAS_PROBE_BYTES ((size_t)160 << 20)

static ss_status blas_status = SS_OK;
static char blas_error[320];

static void blas_setup(void) {
    if (openblas_set_num_threads) openblas_set_num_threads(1);
    const uint64_t limit = ss_address_space_limit();
    if (!blas_memory_alloc || !blas_memory_free || !limit) return;
    const int P = ss_parallel_width();
    void **held = calloc((size_t)P, sizeof *held);
    int got = 0;
    while (held && got < P) {
        void *m = mmap(NULL, BLAS_PROBE_BYTES, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (m == MAP_FAILED) break;
        held[got++] = m;
    }
    for (int i = 0; i < got; i++) munmap(held[i], BLAS_PROBE_BYTES);
    if (got < P) {
        blas_status = SS_ERR_NOMEM;
        snprintf(blas_error, sizeof blas_error,
                 "out of memory: the address-space limit (ulimit -v: %llu MiB) leaves no room for the BLAS library's "
                 "work buffers, about 128 MiB for each of %d threads (OpenBLAS would retry forever); raise the limit, "
                 "or set SUBSCOPE_THREADS to fewer threads",
                 (unsigned long long)(limit >> 20), P);
    } else {
        for (int i = 0; i < P; i++) held[i] = blas_memory_alloc(0);
        for (int i = 0; i < P; i++)
            if (held[i]) blas_memory_free(held[i]);
    }
    free(held);
}

ss_status ss_cpu_blas_ready(void) {
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, blas_setup);
    return blas_status ? ss_errorf(blas_status, "%s", blas_error) : SS_OK;
}

/* A large call made outside the pool, alone (LAPACK's eigen-solver in collect's results: 10 CPU
 * minutes at d 16384 on one thread), may have OpenBLAS's own threads, as many as the pool has
 * (SUBSCOPE_THREADS), and then one again. Not under an address-space limit: there OpenBLAS
 * started with one thread (main.c), and each new one would map a work buffer, retrying forever
 * where that fails. */
int ss_cpu_blas_threads(int wide) {
    if (!openblas_set_num_threads) return 1;
    const int n = wide && !ss_address_space_limit() ? ss_parallel_width() : 1;
    openblas_set_num_threads(n);
    return n;
}

/* OpenBLAS (DYNAMIC_ARCH) picks its kernels as it loads, from the CPU's model: Debian's 0.3.21
 * took an unnamed AVX-512 Xeon VM for a Prescott and ran SSE3 kernels at a quarter of the
 * speed its SkylakeX/Cooperlake ones reach there. Only OPENBLAS_CORETYPE, read as the library
 * loads, changes that; main.c sets it and starts the program again (docs/DECISIONS.md,
 * "OpenBLAS's kernels on a CPU it does not know"). Weak: another BLAS has neither function. */
char *openblas_get_corename(void) __attribute__((weak));
char *openblas_get_config(void) __attribute__((weak));

const char *ss_cpu_blas_core(void) { return openblas_get_corename ? openblas_get_corename() : NULL; }

const char *ss_cpu_blas_core_better(void) {
    /* OpenBLAS's x86 cores without AVX2 kernels: its generic and older choices, which a CPU it
     * does not know falls back to. A core with AVX2 or AVX-512 kernels (Haswell, Zen, SkylakeX,
     * ...) is one it recognised, and is kept. */
    static const char *const older[] = {"Unknown",  "Katmai",   "Coppermine",   "Northwood", "Prescott",    "Banias",
                                        "Atom",     "Core2",    "Penryn",       "Dunnington", "Nehalem",    "Athlon",
                                        "Opteron",  "Opteron_SSE3", "Barcelona", "Nano",      "Sandybridge", "Bobcat",
                                        "Bulldozer", "Piledriver", "Steamroller", "Excavator", NULL};
    const char *core = ss_cpu_blas_core();
    if (!core) return NULL;
    int old = 0;
    for (int i = 0; older[i] && !old; i++) old = !strcasecmp(core, older[i]);
    if (!old) return NULL;
#if defined(__x86_64__) && defined(__GNUC__)
    /* libgcc's (and compiler-rt's) answers count a feature only where the OS saves its
     * registers (XCR0), as OpenBLAS's own checks do. */
    __builtin_cpu_init();
    const int avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
                       __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq");
    if (avx512 && __builtin_cpu_supports("avx512bf16")) return "Cooperlake";
    if (avx512) return "SkylakeX";
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return "Haswell";
#endif
    return NULL;
}

const char *ss_cpu_blas_describe(char *buf, size_t n) {
    const char *core = ss_cpu_blas_core();
    if (!core) {
        snprintf(buf, n, "a BLAS library other than OpenBLAS");
        return buf;
    }
    const char *cfg = openblas_get_config ? openblas_get_config() : "OpenBLAS";
    /* "OpenBLAS 0.3.21 NO_LAPACKE DYNAMIC_ARCH ...": its first two words */
    const int vlen = (int)strcspn(cfg, " ");
    const char *rest = cfg[vlen] ? cfg + vlen + 1 : cfg + vlen;
    const int ver = (int)strcspn(rest, " ");
    const char *set = getenv("OPENBLAS_CORETYPE"), *from = getenv("SUBSCOPE_BLAS_CORE_FROM");
    const char *better = ss_cpu_blas_core_better();
    char why[200];
    if (set && from && !strcasecmp(set, core))
        snprintf(why, sizeof why, "chosen by subscope: OpenBLAS took this CPU for a %s; SUBSCOPE_BLAS_CORE=keep keeps its choice",
                 from);
    else if (set)
        snprintf(why, sizeof why, "OPENBLAS_CORETYPE=%s%s", set, strcasecmp(set, core) ? ", a name OpenBLAS did not take" : "");
    else if (better)
        snprintf(why, sizeof why, "OpenBLAS's choice%s; this CPU runs its %s kernels",
                 ss_blas_core_setting() == 1 ? ", kept by SUBSCOPE_BLAS_CORE=keep" : "", better);
    else snprintf(why, sizeof why, "OpenBLAS's choice");
    snprintf(buf, n, "%.*s%s%.*s, %s kernels (%s)", vlen, cfg, ver ? " " : "", ver, rest, core, why);
    return buf;
}

typedef struct {
    float *C;
    const float *A, *B;
    int64_t M, N, K;
    int trans_b;
    float beta;
    int parts, by_rows;
} blas_ctx;

static void blas_part(void *vctx, int64_t p) {
    const blas_ctx *c = vctx;
    if (c->by_rows) {
        int64_t r0 = c->M * p / c->parts, r1 = c->M * (p + 1) / c->parts;
        if (r1 > r0)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, c->trans_b ? CblasTrans : CblasNoTrans, (int)(r1 - r0), (int)c->N,
                        (int)c->K, 1.0f, c->A + r0 * c->K, (int)c->K, c->B, c->trans_b ? (int)c->K : (int)c->N, c->beta,
                        c->C + r0 * c->N, (int)c->N);
    } else {
        int64_t j0 = c->N * p / c->parts, j1 = c->N * (p + 1) / c->parts;
        if (j1 > j0)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, c->trans_b ? CblasTrans : CblasNoTrans, (int)c->M, (int)(j1 - j0),
                        (int)c->K, 1.0f, c->A, (int)c->K, c->trans_b ? c->B + j0 * c->K : c->B + j0,
                        c->trans_b ? (int)c->K : (int)c->N, c->beta, c->C + j0, (int)c->N);
    }
}
#endif

/* bf16 weights: the reference for tensor-core products, by rounding A to
 * bf16 and widening B exactly, then fp32 products with fp32 accumulation.
 * B is widened a panel at a time into a scratch per thread, kept for the
 * thread's next call, so no weight-sized buffer is made (the whole of B
 * widened on every call cost 154 MB and most of the time for GPT-2's
 * unembedding). The parallel tasks are panels of C's columns, at least one
 * per thread, each widening its columns of B and running one product of a
 * block of A's rows into them. A panel spans the whole of K where the
 * scratch holds BF16_PANEL_MIN_N columns of it (K <= 8192), so the split is
 * along N only and changes no sum of the built-in product. A longer K
 * (backward.c's product with the unembedding, K = vocabulary) is taken in
 * slices of K summed into C.
 *
 * A is rounded a block of rows at a time (at most BF16_A_BLOCK floats, all
 * threads rounding their share of it), and the panels run over one block
 * before the next: no activation-sized buffer. Each panel's product packs
 * its rows of A again (OpenBLAS copies A into its own layout on every call),
 * a third of the time at 64 columns a panel, so where the product is large
 * a panel has at least BF16_PANEL_WIDE_N columns (K > 2048: 8 MiB at 8192).
 * OpenBLAS's AVX-512 kernels sum an element in the same order whatever the
 * call's shape except in their small-matrix kernels, which take calls of up to
 * BF16_BLAS_SMALL multiply-adds (x86-64, 0.3.21: most elements of calls
 * that small differed from the whole product's, none of a larger call's), so
 * the blocks and wide panels are used only where every call of both ways is
 * larger than that: then the bits are those of one block of all the rows in
 * 2 MiB panels, as before (docs/DECISIONS.md, "bf16 products on the CPU"),
 * with the SKYLAKEX/COOPERLAKE kernels; the Prescott, Haswell and Zen kernels
 * sum the rows past their unroll apart, so there the bits differ by rounding. */
#define BF16_PANEL ((int64_t)1 << 19) /* floats: 2 MiB */
#define BF16_PANEL_MIN_N 64
#define BF16_PANEL_WIDE_N 256 /* columns of the wide panels (8 MiB at K 8192) */
#define BF16_A_BLOCK ((int64_t)1 << 23) /* floats of rounded A: 32 MiB */
#define BF16_BLAS_SMALL 1000000

typedef struct {
    float *C;
    const float *A, *bias;
    const uint16_t *B;
    int64_t M, N, K, nb, kb, panel;
    int trans_b;
    atomic_int nomem;
} bf16_ctx;

static _Thread_local float *bf16_panel; /* this thread's scratch, kept for its life */
static _Thread_local int64_t bf16_panel_n;

static void bf16_part(void *vctx, int64_t p) {
    bf16_ctx *c = vctx;
    if (bf16_panel_n < c->panel) {
        free(bf16_panel);
        bf16_panel_n = (bf16_panel = ss_malloc((size_t)c->panel * sizeof(float), "bf16 panel")) ? c->panel : 0; /* as attn_task's */
        if (!bf16_panel) {
            atomic_store(&c->nomem, 1);
            return;
        }
    }
    float *w = bf16_panel;
    const int64_t j0 = p * c->nb, nb = j0 + c->nb < c->N ? c->nb : c->N - j0;
    for (int64_t k0 = 0; k0 < c->K; k0 += c->kb) {
        const int64_t kb = k0 + c->kb < c->K ? c->kb : c->K - k0;
        /* w: B[k0:k0+kb, j0:j0+nb] widened, as [nb][kb] (trans_b) or [kb][nb]. */
        for (int64_t r = 0; r < (c->trans_b ? nb : kb); r++) {
            const int64_t len = c->trans_b ? kb : nb;
            const uint16_t *src = c->trans_b ? c->B + (j0 + r) * c->K + k0 : c->B + (k0 + r) * c->N + j0;
            float *dst = w + r * len;
            for (int64_t i = 0; i < len; i++) dst[i] = ss_bf16_to_f32(src[i]);
        }
        float *Cp = c->C + j0;
#ifdef SS_HAVE_BLAS
        cblas_sgemm(CblasRowMajor, CblasNoTrans, c->trans_b ? CblasTrans : CblasNoTrans, (int)c->M, (int)nb, (int)kb,
                    1.0f, c->A + k0, (int)c->K, w, c->trans_b ? (int)kb : (int)nb, k0 || c->bias ? 1.0f : 0.0f, Cp,
                    (int)c->N);
#else
        /* ss_matmul_builtin's order: k ascending into C, then the bias. */
        for (int64_t i = 0; i < c->M; i++) {
            float *crow = Cp + i * c->N;
            const float *arow = c->A + i * c->K + k0;
            if (c->trans_b) {
                for (int64_t j = 0; j < nb; j++) {
                    const float *brow = w + j * kb;
                    float acc = k0 ? crow[j] : 0.f;
                    for (int64_t k = 0; k < kb; k++) acc += arow[k] * brow[k];
                    crow[j] = acc;
                }
            } else {
                if (!k0)
                    for (int64_t j = 0; j < nb; j++) crow[j] = 0.f;
                for (int64_t k = 0; k < kb; k++) {
                    const float a = arow[k], *brow = w + k * nb;
                    for (int64_t j = 0; j < nb; j++) crow[j] += a * brow[j];
                }
            }
            if (c->bias && k0 + kb == c->K)
                for (int64_t j = 0; j < nb; j++) crow[j] += c->bias[j0 + j];
        }
#endif
    }
}

typedef struct {
    float *dst;
    const float *src;
    int64_t n;
} bf16_round_ctx;

#define BF16_ROUND_CHUNK 32768 /* elements of A a task rounds */

static void bf16_round_part(void *vctx, int64_t p) {
    const bf16_round_ctx *c = vctx;
    const int64_t i1 = (p + 1) * BF16_ROUND_CHUNK < c->n ? (p + 1) * BF16_ROUND_CHUNK : c->n;
    for (int64_t i = p * BF16_ROUND_CHUNK; i < i1; i++) c->dst[i] = ss_bf16_to_f32(ss_f32_to_bf16(c->src[i]));
}

/* The panels' width and K slice for a scratch of `panel` floats. */
static void bf16_panels(int64_t N, int64_t K, int64_t panel, int64_t *nb, int64_t *kb) {
    const int64_t P = ss_num_threads(), per_thread = (N + P - 1) / P;
    *nb = panel / K > BF16_PANEL_MIN_N ? panel / K : BF16_PANEL_MIN_N;
    if (*nb > per_thread) *nb = per_thread;
    *kb = *nb * K <= panel ? K : panel / *nb;
}

/* The fewest multiply-adds of one product call: `rows` rows into the last
 * (ragged) panel over the last slice of K. */
static double bf16_least_call(int64_t rows, int64_t N, int64_t K, int64_t nb, int64_t kb) {
    return (double)rows * (double)(N % nb ? N % nb : nb) * (double)(K % kb ? K % kb : kb);
}

ss_status ss_cpu_matmul_bf16(float *C, const float *A, const uint16_t *B, const float *bias, int64_t M, int64_t N,
                             int64_t K, int trans_b, int64_t a_block, int wide, int64_t used[3]) {
    if (used) used[0] = 1, used[1] = used[2] = 0;
    if (M <= 0 || N <= 0) return SS_OK;
    if (M > INT_MAX || N > INT_MAX || K > INT_MAX)
        return ss_errorf(SS_ERR_UNSUPPORTED, "matrix product %lld x %lld x %lld exceeds BLAS's 32-bit sizes", (long long)M,
                         (long long)N, (long long)K);
    if (K <= 0) {
        for (int64_t i = 0; i < M; i++)
            for (int64_t j = 0; j < N; j++) C[i * N + j] = bias ? bias[j] : 0.f;
        return SS_OK;
    }
    /* Blocks of rows as even as they come (each at least half of a_block's
     * rows, at most all of them), and the wide panels where K is whole in
     * one (the slices of a longer K stay those of BF16_PANEL), if every call
     * stays out of OpenBLAS's small-matrix kernels; else, as before, all
     * the rows in panels of BF16_PANEL. */
    const int64_t block = a_block ? a_block : BF16_A_BLOCK, rows = block / K > 1 ? block / K : 1;
    int64_t nb, kb, nbw, kbw, nblk = (M + rows - 1) / rows;
    bf16_panels(N, K, BF16_PANEL, &nb, &kb);
    const int64_t wide_panel = wide && kb == K && BF16_PANEL_WIDE_N * K > BF16_PANEL ? BF16_PANEL_WIDE_N * K : BF16_PANEL;
    bf16_panels(N, K, wide_panel, &nbw, &kbw);
    if (nblk > 1 || nbw != nb) {
        if (bf16_least_call(M, N, K, nb, kb) > BF16_BLAS_SMALL &&
            bf16_least_call(M / nblk, N, K, nbw, kbw) > BF16_BLAS_SMALL) {
            nb = nbw, kb = kbw;
        } else {
            nblk = 1;
        }
    }
    /* The scratch: what a panel uses, less than its bound where the
     * threads' shares of N make the panels narrower (8 MiB at K 8192). */
    const int64_t panel = nb * kb;
    const int64_t rows_max = (M + nblk - 1) / nblk;
    float *a = ss_malloc((size_t)(rows_max * K) * sizeof(float), "bf16 product");
    if (!a) return SS_ERR_NOMEM;
#ifdef SS_HAVE_BLAS
    if (bias)
        for (int64_t i = 0; i < M; i++) memcpy(C + i * N, bias, (size_t)N * sizeof(float));
#endif
    bf16_ctx c = {.A = a, .bias = bias, .B = B, .N = N, .K = K, .nb = nb, .kb = kb, .panel = panel, .trans_b = trans_b};
    for (int64_t b = 0; b < nblk && !atomic_load(&c.nomem); b++) {
        const int64_t r0 = M * b / nblk, r1 = M * (b + 1) / nblk;
        bf16_round_ctx rc = {.dst = a, .src = A + r0 * K, .n = (r1 - r0) * K};
        ss_parallel_for((rc.n + BF16_ROUND_CHUNK - 1) / BF16_ROUND_CHUNK, bf16_round_part, &rc);
        c.C = C + r0 * N, c.M = r1 - r0;
        ss_parallel_for((N + nb - 1) / nb, bf16_part, &c);
    }
    free(a);
    if (used) used[0] = nblk, used[1] = nb, used[2] = panel;
    if (atomic_load(&c.nomem))
        return ss_errorf(SS_ERR_NOMEM, "out of memory allocating %lld bytes of scratch for a bf16 product",
                         (long long)(panel * (int64_t)sizeof(float)));
    return SS_OK;
}

static ss_status cpu_matmul(const ss_backend *be, float *C, const float *A, const void *B, int b_dtype,
                            const float *bias, int64_t M, int64_t N, int64_t K, int trans_b) {
    if (b_dtype == SS_WDTYPE_BF16) return ss_cpu_matmul_bf16(C, A, B, bias, M, N, K, trans_b, 0, 1, NULL);
    if (b_dtype != SS_WDTYPE_F32) return ss_errorf(SS_ERR_UNSUPPORTED, "cpu: matrix products with weight dtype %d", b_dtype);
    return matmul_f32(C, A, B, bias, M, N, K, trans_b);
}

static ss_status matmul_f32(float *C, const float *A, const float *B, const float *bias, int64_t M, int64_t N,
                            int64_t K, int trans_b) {
    if (M <= 0 || N <= 0) return SS_OK;
    if (M > INT_MAX || N > INT_MAX || K > INT_MAX)
        return ss_errorf(SS_ERR_UNSUPPORTED, "matrix product %lld x %lld x %lld exceeds BLAS's 32-bit sizes", (long long)M,
                         (long long)N, (long long)K);
#ifdef SS_HAVE_BLAS
    if (bias) {
        for (int64_t i = 0; i < M; i++) memcpy(C + i * N, bias, (size_t)N * sizeof(float));
    }
    blas_ctx c = {.C = C, .A = A, .B = B, .M = M, .N = N, .K = K, .trans_b = trans_b, .beta = bias ? 1.0f : 0.0f,
                  .parts = ss_num_threads()};
    c.by_rows = M >= 64 * (int64_t)c.parts;
    ss_parallel_for(c.parts, blas_part, &c);
#else
    ss_matmul_builtin(C, A, B, bias, M, N, K, trans_b);
#endif
    return SS_OK;
}

typedef struct {
    float *out;
    const float *x, *w, *b;
    int64_t rows, d, n;
    float eps;
    ss_act act;
} rowwise_ctx;

#define LN_ROWS 32        /* rows per parallel task */
#define GELU_CHUNK 32768  /* elements per parallel task */

static void layernorm_task(void *vctx, int64_t task) {
    const rowwise_ctx *c = vctx;
    int64_t r1 = (task + 1) * LN_ROWS < c->rows ? (task + 1) * LN_ROWS : c->rows;
    for (int64_t r = task * LN_ROWS; r < r1; r++) {
        const float *xr = c->x + r * c->d;
        float *o = c->out + r * c->d;
        double mean = 0, var = 0;
        for (int64_t i = 0; i < c->d; i++) mean += xr[i];
        mean /= (double)c->d;
        for (int64_t i = 0; i < c->d; i++) {
            double t = xr[i] - mean;
            var += t * t;
        }
        var /= (double)c->d;
        double inv = 1.0 / sqrt(var + (double)c->eps);
        for (int64_t i = 0; i < c->d; i++) o[i] = (float)((xr[i] - mean) * inv) * c->w[i] + c->b[i];
    }
}

static ss_status cpu_layernorm(const ss_backend *be, float *out, const float *x, const float *w, const float *b,
                               int64_t rows, int64_t d, float eps) {
    rowwise_ctx c = {.out = out, .x = x, .w = w, .b = b, .rows = rows, .d = d, .eps = eps};
    ss_parallel_for((rows + LN_ROWS - 1) / LN_ROWS, layernorm_task, &c);
    return SS_OK;
}

static void gelu_task(void *vctx, int64_t task) {
    const rowwise_ctx *c = vctx;
    int64_t i1 = (task + 1) * GELU_CHUNK < c->n ? (task + 1) * GELU_CHUNK : c->n;
    const float *x = c->x;
    float *out = c->out;
    /* Single precision: erff/expf are within an ulp or two, well inside what
     * fp32 activations carry. The tanh form is evaluated as
     * 0.5x(1+tanh u) = x / (1 + exp(-2u)), which is the same function, avoids
     * the cancellation in 1+tanh(u) for negative u and costs one expf. */
    if (c->act == SS_ACT_GELU_ERF) {
        for (int64_t i = task * GELU_CHUNK; i < i1; i++) out[i] = 0.5f * x[i] * (1.0f + erff(x[i] * 0.70710678f));
    } else {
        const float k = 0.7978845608f; /* sqrt(2/pi) */
        for (int64_t i = task * GELU_CHUNK; i < i1; i++) {
            float v = x[i];
            out[i] = v / (1.0f + expf(-2.0f * k * (v + 0.044715f * v * v * v)));
        }
    }
}

static ss_status cpu_gelu(const ss_backend *be, float *out, const float *x, int64_t n, ss_act act) {
    rowwise_ctx c = {.out = out, .x = x, .n = n, .act = act};
    ss_parallel_for((n + GELU_CHUNK - 1) / GELU_CHUNK, gelu_task, &c);
    return SS_OK;
}

static void add_task(void *vctx, int64_t task) {
    const rowwise_ctx *c = vctx;
    const int64_t i1 = (task + 1) * GELU_CHUNK < c->n ? (task + 1) * GELU_CHUNK : c->n;
    for (int64_t i = task * GELU_CHUNK; i < i1; i++) c->out[i] = c->x[i] + c->w[i];
}

static ss_status cpu_add(const ss_backend *be, float *out, const float *a, const float *b, int64_t n) {
    if (n <= 0) return SS_OK;
    rowwise_ctx c = {.out = out, .x = a, .w = b, .n = n};
    ss_parallel_for((n + GELU_CHUNK - 1) / GELU_CHUNK, add_task, &c);
    return SS_OK;
}

static ss_status cpu_embed(const ss_backend *be, float *tok_out, float *pos_out, const int32_t *tokens,
                           const int32_t *pos, const void *wte, const void *wpe, int wdtype, int64_t n, int64_t d) {
    if (wdtype == SS_WDTYPE_F32) {
        for (int64_t i = 0; i < n; i++) {
            memcpy(tok_out + i * d, (const float *)wte + (int64_t)tokens[i] * d, (size_t)d * sizeof(float));
            if (wpe) memcpy(pos_out + i * d, (const float *)wpe + (int64_t)pos[i] * d, (size_t)d * sizeof(float));
        }
    } else if (wdtype == SS_WDTYPE_BF16) {
        for (int64_t i = 0; i < n; i++)
            for (int64_t e = 0; e < d; e++) {
                tok_out[i * d + e] = ss_bf16_to_f32(((const uint16_t *)wte)[(int64_t)tokens[i] * d + e]);
                if (wpe) pos_out[i * d + e] = ss_bf16_to_f32(((const uint16_t *)wpe)[(int64_t)pos[i] * d + e]);
            }
    } else {
        return ss_errorf(SS_ERR_UNSUPPORTED, "cpu: embedding tables of dtype %d", wdtype);
    }
    return SS_OK;
}

typedef struct {
    float *z;
    const float *q;
    const void *k, *v; /* kvdt elements (fp32 but for a 16-bit key/value cache) */
    int64_t ld, H, group, dh; /* group = H / Hkv: query heads per key/value head */
    const int64_t *start, *len, *pattern_off;
    float scale;
    float *pattern;
    atomic_int failed;
    /* attention_kv: one sequence of len[0] queries at positions q0.., keys and
     * values 0..q0+len[0] with row stride ld_kv (0: attention, ld, q0 = 0) */
    int64_t ld_kv, q0;
    int kvdt; /* SS_WDTYPE_F32 (attention), or attention_kv's kv_dtype */
} attn_ctx;

/* Element i of a key/value cache of dtype dt, widened exactly. */
static inline float kv_elem(const void *p, int dt, int64_t i) {
    if (dt == SS_WDTYPE_BF16) return ss_bf16_to_f32(((const uint16_t *)p)[i]);
    if (dt == SS_WDTYPE_F16) return ss_f16_to_f32(((const uint16_t *)p)[i]);
    return ((const float *)p)[i];
}

/* One (sequence, head) per task. Keys are first transposed into a [dh, n]
 * scratch so that both inner loops — scores s[0..i] += q[e]·Kt[e][0..i] and
 * z[0..dh] += p[j]·v_j — are contiguous multiply-adds the compiler
 * vectorises. Softmax statistics are kept in double. */
static void attn_task(void *vctx, int64_t task) {
    const attn_ctx *c = vctx;
    int64_t s = task / c->H, h = task % c->H, hk = h / c->group;
    /* nq queries, the first at key position q0, against n keys */
    int64_t nq = c->len[s], r0 = c->start[s], dmodel = c->H * c->dh, dh = c->dh;
    const int64_t q0 = c->q0, n = q0 + nq, ldkv = c->ld_kv ? c->ld_kv : c->ld;
    /* a 16-bit cache's values are widened into vw [n, dh] too (ldv dh); ss_malloc on a pool thread:
     * its retry (the kept blocks given back: the cache's lock is not held here) helps; its message
     * stays on this thread, the op reports the failure */
    const int wide = c->kvdt != SS_WDTYPE_F32;
    float *kt = ss_malloc((size_t)(dh * n + n + dh + (wide ? n * dh : 0)) * sizeof(float), "attention scratch");
    if (!kt) {
        atomic_store(&((attn_ctx *)vctx)->failed, 1);
        return;
    }
    float *sc = kt + dh * n, *acc = sc + n, *vw = acc + dh;
    if (!wide)
        for (int64_t j = 0; j < n; j++) {
            const float *kj = (const float *)c->k + (r0 + j) * ldkv + hk * dh;
            for (int64_t e = 0; e < dh; e++) kt[e * n + j] = kj[e];
        }
    else
        for (int64_t j = 0; j < n; j++)
            for (int64_t e = 0; e < dh; e++) {
                kt[e * n + j] = kv_elem(c->k, c->kvdt, (r0 + j) * ldkv + hk * dh + e);
                vw[j * dh + e] = kv_elem(c->v, c->kvdt, (r0 + j) * ldkv + hk * dh + e);
            }
    const float *vb = wide ? vw : (const float *)c->v + hk * dh; /* value row j: vb + (r0 + j) * ldv */
    const int64_t ldv = wide ? dh : ldkv;
    for (int64_t iq = 0; iq < nq; iq++) {
        const int64_t i = q0 + iq; /* the query's position: it sees keys 0..i */
        const float *qi = c->q + (r0 + iq) * c->ld + h * dh;
        for (int64_t j = 0; j <= i; j++) sc[j] = 0.f;
        for (int64_t e = 0; e < dh; e++) {
            const float qe = qi[e] * c->scale, *kr = kt + e * n;
            for (int64_t j = 0; j <= i; j++) sc[j] += qe * kr[j];
        }
        double mx = -INFINITY, sum = 0;
        for (int64_t j = 0; j <= i; j++) mx = sc[j] > mx ? sc[j] : mx;
        for (int64_t j = 0; j <= i; j++) {
            double p = exp((double)sc[j] - mx);
            sc[j] = (float)p;
            sum += p;
        }
        const float inv = (float)(1.0 / sum);
        for (int64_t e = 0; e < dh; e++) acc[e] = 0.f;
        for (int64_t j = 0; j <= i; j++) {
            const float p = sc[j] * inv, *vj = vb + (wide ? j : r0 + j) * ldv;
            sc[j] = p;
            for (int64_t e = 0; e < dh; e++) acc[e] += p * vj[e];
        }
        memcpy(c->z + (r0 + iq) * dmodel + h * dh, acc, (size_t)dh * sizeof(float));
        if (c->pattern) {
            float *row = c->pattern + c->pattern_off[s] + (h * n + i) * n;
            memcpy(row, sc, (size_t)(i + 1) * sizeof(float));
            for (int64_t j = i + 1; j < n; j++) row[j] = 0.f;
        }
    }
    free(kt);
}

static ss_status cpu_attention(const ss_backend *be, float *z, const float *q, const float *k, const float *v,
                               int64_t ld_qkv, int64_t n_seq, const int64_t *start, const int64_t *len, int64_t H,
                               int64_t Hkv, int64_t dh, float scale, float *pattern_out, const int64_t *pattern_off) {
    if (Hkv < 1 || H % Hkv) return ss_errorf(SS_ERR_ARG, "cpu: attention: %lld key/value heads do not divide %lld heads",
                                             (long long)Hkv, (long long)H);
    SS_TRY(ss_attn_seqs_check(be, "attention", n_seq, start, len, -1));
    attn_ctx c = {z,     q,           k, v, ld_qkv, H, H / Hkv, dh, start, len, pattern_off,
                  scale, pattern_out, 0, 0, 0,      SS_WDTYPE_F32};
    ss_parallel_for(n_seq * H, attn_task, &c);
    if (atomic_load(&c.failed)) return ss_errorf(SS_ERR_NOMEM, "out of memory in attention scratch buffers");
    return SS_OK;
}

/* The same task on one sequence whose first q0 keys and values are cached. */
static ss_status cpu_attention_kv(const ss_backend *be, float *z, const float *q, int64_t ld_q, const void *k,
                                  const void *v, int kv_dtype, int64_t ld_kv, int64_t n_q, int64_t q0, int64_t H,
                                  int64_t Hkv, int64_t dh, float scale) {
    if (Hkv < 1 || H % Hkv) return ss_errorf(SS_ERR_ARG, "cpu: attention: %lld key/value heads do not divide %lld heads",
                                             (long long)Hkv, (long long)H);
    if (kv_dtype != SS_WDTYPE_F32 && kv_dtype != SS_WDTYPE_F16 && kv_dtype != SS_WDTYPE_BF16)
        return ss_errorf(SS_ERR_ARG, "cpu: attention_kv: key/value dtype %d", kv_dtype);
    const int64_t start = 0;
    attn_ctx c = {z, q, k, v, ld_q, H, H / Hkv, dh, &start, &n_q, NULL, scale, NULL, 0, ld_kv, q0, kv_dtype};
    ss_parallel_for(H, attn_task, &c);
    if (atomic_load(&c.failed)) return ss_errorf(SS_ERR_NOMEM, "out of memory in attention scratch buffers");
    return SS_OK;
}


/* RMSNorm: the mean square in double, as layernorm does its moments. */
static void rmsnorm_task(void *vctx, int64_t task) {
    const rowwise_ctx *c = vctx;
    int64_t r1 = (task + 1) * LN_ROWS < c->rows ? (task + 1) * LN_ROWS : c->rows;
    for (int64_t r = task * LN_ROWS; r < r1; r++) {
        const float *xr = c->x + r * c->d;
        float *o = c->out + r * c->d;
        double ss = 0;
        for (int64_t i = 0; i < c->d; i++) ss += (double)xr[i] * xr[i];
        const float inv = (float)(1.0 / sqrt(ss / (double)c->d + (double)c->eps));
        for (int64_t i = 0; i < c->d; i++) o[i] = (xr[i] * inv) * c->w[i];
    }
}

static ss_status cpu_rmsnorm(const ss_backend *be, float *out, const float *x, const float *w, int64_t rows, int64_t d,
                             float eps) {
    rowwise_ctx c = {.out = out, .x = x, .w = w, .rows = rows, .d = d, .eps = eps};
    ss_parallel_for((rows + LN_ROWS - 1) / LN_ROWS, rmsnorm_task, &c);
    return SS_OK;
}

/* RoPE on the thread pool by blocks of rows, about GELU_CHUNK values a task
 * (every row alone: the values do not depend on the threads). */
typedef struct {
    float *x;
    const int32_t *pos;
    const float *inv_freq;
    int64_t ld, rows, n_heads, dh, per; /* per: rows a task */
    int inverse;
} rope_ctx;

static void rope_task(void *vctx, int64_t task) {
    const rope_ctx *c = vctx;
    const int64_t half = c->dh / 2, r0 = task * c->per, r1 = r0 + c->per < c->rows ? r0 + c->per : c->rows;
    for (int64_t r = r0; r < r1; r++) {
        const float p = (float)c->pos[r];
        for (int64_t i = 0; i < half; i++) {
            const float a = p * c->inv_freq[i], cs = cosf(a), sn = c->inverse ? -sinf(a) : sinf(a);
            for (int64_t h = 0; h < c->n_heads; h++) {
                float *xh = c->x + r * c->ld + h * c->dh;
                const float x0 = xh[i], x1 = xh[i + half];
                xh[i] = x0 * cs - x1 * sn;
                xh[i + half] = x1 * cs + x0 * sn;
            }
        }
    }
}

static ss_status cpu_rope(const ss_backend *be, float *x, int64_t ld, int64_t rows, int64_t n_heads, int64_t dh,
                          const int32_t *pos, const float *inv_freq, int inverse) {
    if (dh < 2 || dh % 2 || ld < n_heads * dh)
        return ss_errorf(SS_ERR_ARG, "cpu: rope: d_head %lld must be even and rows of %lld floats must hold %lld heads",
                         (long long)dh, (long long)ld, (long long)n_heads);
    if (rows <= 0 || n_heads <= 0) return SS_OK;
    const int64_t w = n_heads * dh, per = w < GELU_CHUNK ? GELU_CHUNK / w : 1;
    rope_ctx c = {.x = x, .pos = pos, .inv_freq = inv_freq, .ld = ld, .rows = rows, .n_heads = n_heads, .dh = dh,
                  .per = per, .inverse = inverse};
    ss_parallel_for((rows + per - 1) / per, rope_task, &c);
    return SS_OK;
}

/* SwiGLU on the thread pool by blocks of rows, about GELU_CHUNK outputs a
 * task (every element alone: the values do not depend on the threads). */
static void swiglu_task(void *vctx, int64_t task) {
    const rowwise_ctx *c = vctx;
    const int64_t dm = c->d, r0 = task * c->n, r1 = r0 + c->n < c->rows ? r0 + c->n : c->rows;
    for (int64_t r = r0; r < r1; r++) {
        const float *g = c->x + r * 2 * dm, *u = g + dm;
        float *o = c->out + r * dm;
        for (int64_t i = 0; i < dm; i++) o[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
    }
}

static ss_status cpu_swiglu(const ss_backend *be, float *out, const float *gu, int64_t rows, int64_t dm) {
    if (rows <= 0 || dm <= 0) return SS_OK;
    const int64_t per = dm < GELU_CHUNK ? GELU_CHUNK / dm : 1; /* rows a task */
    rowwise_ctx c = {.out = out, .x = gu, .rows = rows, .d = dm, .n = per};
    ss_parallel_for((rows + per - 1) / per, swiglu_task, &c);
    return SS_OK;
}

/* Released blocks kept for reuse. A job runs the same passes batch after
 * batch, each allocating the same buffers; given back to malloc, a block of
 * hundreds of MiB (attribute's tape) was mapped afresh (over the mmap
 * threshold) or, its place in the heap taken by the job's smaller blocks in
 * the meantime, the heap grew: either way the pass's first touch of every
 * page was a page fault. So a released block of CACHE_MIN bytes or more
 * waits here, its size as malloc_usable_size reports it, for a request it
 * fits (the best fit, at most twice the request, as the CUDA backend's
 * cache), and stays an ordinary malloc'd block: a caller given one (the
 * forward's logits) may free() it. A request that no cached block fits
 * gives them all back to malloc first, so the cache never holds memory that
 * the run's later passes do not ask for again; ss_cpu_cache_drop (the
 * backend's close, and any ss_malloc, ss_calloc or ss_realloc that fails,
 * before its retry) gives them back too. Under AddressSanitizer a cached
 * block is poisoned, and a reused one made addressable only as far as the
 * request, so that a use after release or past the end is still reported.
 * docs/DECISIONS.md, "The CPU backend keeps released blocks". */
#define CACHE_MIN ((size_t)64 << 10)
#define CACHE_SLOTS 32

static struct {
    pthread_mutex_t mu;
    int n;
    struct { void *p; size_t bytes; } b[CACHE_SLOTS];
} cache = {.mu = PTHREAD_MUTEX_INITIALIZER};

static void cache_poison(void *p, size_t bytes, int on) {
#ifdef SS_ASAN
    if (on) ASAN_POISON_MEMORY_REGION(p, bytes);
    else ASAN_UNPOISON_MEMORY_REGION(p, bytes);
#else
    (void)p, (void)bytes, (void)on;
#endif
}

/* Gives every cached block back to malloc; the caller holds the lock. */
static void cache_drop_locked(void) {
    while (cache.n > 0) {
        cache.n--;
        cache_poison(cache.b[cache.n].p, cache.b[cache.n].bytes, 0);
        free(cache.b[cache.n].p);
    }
}

void ss_cpu_cache_drop(void) {
    pthread_mutex_lock(&cache.mu);
    cache_drop_locked();
    pthread_mutex_unlock(&cache.mu);
}

size_t ss_cpu_cached_bytes(void) {
    size_t sum = 0;
    pthread_mutex_lock(&cache.mu);
    for (int i = 0; i < cache.n; i++) sum += cache.b[i].bytes;
    pthread_mutex_unlock(&cache.mu);
    return sum;
}

static ss_status cpu_alloc(const ss_backend *be, size_t bytes, const char *what, void **out) {
#ifdef SS_CPU_CACHE
    if (bytes >= CACHE_MIN) {
        pthread_mutex_lock(&cache.mu);
        int best = -1;
        for (int i = 0; i < cache.n; i++)
            if (cache.b[i].bytes >= bytes && cache.b[i].bytes / 2 <= bytes &&
                (best < 0 || cache.b[i].bytes < cache.b[best].bytes))
                best = i;
        if (best >= 0) {
            *out = cache.b[best].p;
            cache_poison(*out, bytes, 0); /* past the request, ASan still reports an overflow */
            cache.b[best] = cache.b[--cache.n];
        } else {
            *out = NULL;
            cache_drop_locked();
        }
        pthread_mutex_unlock(&cache.mu);
        if (*out) return SS_OK;
    }
#endif
    *out = ss_malloc(bytes, what); /* which, failing, has the kept blocks give way and tries again */
    return *out ? SS_OK : SS_ERR_NOMEM;
}

static void cpu_release(const ss_backend *be, void *p) {
#ifdef SS_CPU_CACHE
    const size_t bytes = p ? malloc_usable_size(p) : 0;
    if (bytes >= CACHE_MIN) {
        pthread_mutex_lock(&cache.mu);
        const int kept = cache.n < CACHE_SLOTS;
        if (kept) {
            cache.b[cache.n].p = p, cache.b[cache.n++].bytes = bytes;
            cache_poison(p, bytes, 1);
        }
        pthread_mutex_unlock(&cache.mu);
        if (kept) return;
    }
#endif
    free(p);
}

static ss_status cpu_copy(const ss_backend *be, void *dst, const void *src, size_t bytes) {
    if (bytes) memmove(dst, src, bytes);
    return SS_OK;
}

static ss_status cpu_sync(const ss_backend *be) { return SS_OK; }

static ss_status cpu_download_async(const ss_backend *be, void *dst, const void *src, size_t bytes, void **ticket) {
    *ticket = NULL;
    return cpu_copy(be, dst, src, bytes);
}

static ss_status cpu_wait_copy(const ss_backend *be, void *ticket) { return SS_OK; }

static void cpu_memory_stats(const ss_backend *be, size_t *in_use, size_t *peak) { *in_use = *peak = 0; }

static ss_status cpu_copy_rows(const ss_backend *be, float *dst, const float *src, int64_t ld_src, int64_t rows,
                               int64_t width) {
    for (int64_t r = 0; r < rows; r++) memcpy(dst + r * width, src + r * ld_src, (size_t)width * sizeof(float));
    return SS_OK;
}

/* The reference of logit_scores: one row per task, fp64 throughout. */
typedef struct {
    double *lz, *kl;
    int32_t *best;
    const float *x, *ref;
    const double *ref_lz;
    int64_t V, ref_rows;
} scores_ctx;

static void scores_row(void *vctx, int64_t r) {
    const scores_ctx *c = vctx;
    const float *x = c->x + r * c->V;
    double mx = -INFINITY, sum = 0;
    int64_t best = 0;
    for (int64_t v = 0; v < c->V; v++) mx = x[v] > mx ? x[v] : mx;
    for (int64_t v = 0; v < c->V; v++) sum += exp((double)x[v] - mx);
    const double z = mx + log(sum);
    c->lz[r] = z;
    if (c->best) {
        for (int64_t v = 1; v < c->V; v++)
            if (x[v] > x[best]) best = v;
        c->best[r] = (int32_t)best;
    }
    if (c->kl) {
        const int64_t rr = r % c->ref_rows;
        const float *p = c->ref + rr * c->V;
        double k = 0;
        for (int64_t v = 0; v < c->V; v++) {
            const double lp = (double)p[v] - c->ref_lz[rr], lq = (double)x[v] - z;
            k += exp(lp) * (lp - lq);
        }
        c->kl[r] = k;
    }
}

static ss_status cpu_logit_scores(const ss_backend *be, double *lz, int32_t *best, double *kl, const float *logits,
                                  int64_t rows, int64_t V, const float *ref, const double *ref_lz, int64_t ref_rows) {
    if (kl && (!ref || !ref_lz || ref_rows <= 0))
        return ss_errorf(SS_ERR_INTERNAL, "logit_scores: KL needs reference rows");
    scores_ctx c = {lz, kl, best, logits, ref, ref_lz, V, ref_rows};
    ss_parallel_for(rows, scores_row, &c);
    return SS_OK;
}

static ss_status cpu_gather(const ss_backend *be, float *out, const float *src, const int64_t *idx, int64_t n) {
    for (int64_t i = 0; i < n; i++) out[i] = src[idx[i]];
    return SS_OK;
}

static ss_status cpu_attr_product(const ss_backend *be, float *out, const float *g, int64_t ldg, const float *a,
                                   const float *c, int64_t rows, int64_t w) {
    (void)be;
    for (int64_t r = 0; r < rows; r++)
        for (int64_t u = 0; u < w; u++) {
            const int64_t i = r * w + u;
            const float gv = g[r * ldg + u];
            out[i] = c ? (c[i] - a[i]) * gv : a ? gv * a[i] : gv;
        }
    return SS_OK;
}

static ss_status cpu_seq_sums(const ss_backend *be, double *out, const float *x, int64_t w, int64_t n_seq,
                              const int64_t *start, const int64_t *len) {
    (void)be;
    for (int64_t s = 0; s < n_seq; s++)
        for (int64_t u = 0; u < w; u++) {
            double sum = 0;
            for (int64_t t = 0; t < len[s]; t++) sum += x[(start[s] + t) * w + u];
            out[s * w + u] = sum;
        }
    return SS_OK;
}

/* Integrated gradients' elementwise steps, on the thread pool by blocks of
 * rows (every element alone, so the values do not depend on the threads). */
typedef enum { IG_POINT, IG_ADD, IG_ATTR } ig_op;
typedef struct {
    ig_op op;
    float *x;                 /* IG_POINT: the site's rows (stride ld); IG_ATTR: out */
    const float *src;         /* IG_POINT, IG_ATTR: the clean rows; IG_ADD: the gradient (stride ld) */
    const double *base;       /* [w] or NULL */
    double *acc;              /* IG_ADD: the sums */
    const double *sum;        /* IG_ATTR: the sums */
    double alpha;
    int steps;
    int64_t ld, rows, w;
} ig_ctx;

#define IG_ROWS 16

static void ig_task(void *vctx, int64_t item) {
    const ig_ctx *c = vctx;
    const int64_t r0 = item * IG_ROWS, r1 = r0 + IG_ROWS < c->rows ? r0 + IG_ROWS : c->rows, w = c->w;
    for (int64_t r = r0; r < r1; r++)
        for (int64_t u = 0; u < w; u++) {
            const int64_t i = r * w + u;
            const double b = c->base ? c->base[u] : 0.0;
            switch (c->op) {
            case IG_POINT: c->x[r * c->ld + u] = (float)(b + c->alpha * ((double)c->src[i] - b)); break;
            case IG_ADD: c->acc[i] += c->src[r * c->ld + u]; break;
            case IG_ATTR: c->x[i] = (float)(((double)c->src[i] - b) * c->sum[i] / c->steps); break;
            }
        }
}

static ss_status ig_run(ig_ctx c) {
    ss_parallel_for((c.rows + IG_ROWS - 1) / IG_ROWS, ig_task, &c);
    return SS_OK;
}

static ss_status cpu_ig_point(const ss_backend *be, float *x, int64_t ldx, const float *clean, const double *base,
                              double alpha, int64_t rows, int64_t w) {
    (void)be;
    return ig_run((ig_ctx){.op = IG_POINT, .x = x, .ld = ldx, .src = clean, .base = base, .alpha = alpha, .rows = rows, .w = w});
}

static ss_status cpu_ig_add(const ss_backend *be, double *sum, const float *g, int64_t ldg, int64_t rows, int64_t w) {
    (void)be;
    return ig_run((ig_ctx){.op = IG_ADD, .acc = sum, .src = g, .ld = ldg, .rows = rows, .w = w});
}

static ss_status cpu_ig_attr(const ss_backend *be, float *out, const float *clean, const double *base,
                             const double *sum, int steps, int64_t rows, int64_t w) {
    (void)be;
    return ig_run((ig_ctx){.op = IG_ATTR, .x = out, .src = clean, .base = base, .sum = sum, .steps = steps, .rows = rows, .w = w});
}

static ss_status cpu_patch_pieces(const ss_backend *be, float *x, int64_t ld, const float *src, int64_t n, int64_t w,
                                  int kn, int per, int64_t p0, int64_t hd) {
    (void)be;
    for (int c = 0; c < kn; c++) {
        const int64_t p = p0 + c;
        int64_t t0 = 0, t1 = n, u0 = 0, u1 = w; /* the piece: rows [t0, t1), units [u0, u1) */
        if (per == SS_PIECE_POSITION) t0 = p, t1 = p + 1 < n ? p + 1 : n;
        else if (per == SS_PIECE_HEAD) u0 = p * hd, u1 = u0 + hd;
        else if (per == SS_PIECE_NEURON) u0 = p, u1 = p + 1;
        for (int64_t t = t0; t < t1; t++)
            memcpy(x + (c * n + t) * ld + u0, src + t * w + u0, (size_t)(u1 - u0) * sizeof(float));
    }
    return SS_OK;
}

static const ss_backend cpu_backend = {
    .name = "cpu",
#ifdef SS_HAVE_BLAS
    .description = "host CPU, BLAS matrix products",
#else
    .description = "host CPU, built-in matrix products",
#endif
    .host_memory = 1,
    .alloc = cpu_alloc,
    .release = cpu_release,
    .upload = cpu_copy,
    .download = cpu_copy,
    .sync = cpu_sync,
    .download_async = cpu_download_async,
    .wait_copy = cpu_wait_copy,
    .alloc_host = cpu_alloc,
    .release_host = cpu_release,
    .copy_rows = cpu_copy_rows,
    .memory_stats = cpu_memory_stats,
    .matmul = cpu_matmul,
    .layernorm = cpu_layernorm,
    .gelu = cpu_gelu,
    .add = cpu_add,
    .embed = cpu_embed,
    .attention = cpu_attention,
    .attention_kv = cpu_attention_kv,
    .rmsnorm = cpu_rmsnorm,
    .rope = cpu_rope,
    .swiglu = cpu_swiglu,
    .zero = ss_cpu_zero,
    .matmul_tn = ss_cpu_matmul_tn,
    .sum_rows = ss_cpu_sum_rows,
    .layernorm_backward = ss_cpu_layernorm_backward,
    .gelu_backward = ss_cpu_gelu_backward,
    .attention_backward = ss_cpu_attention_backward,
    .rmsnorm_backward = ss_cpu_rmsnorm_backward,
    .swiglu_backward = ss_cpu_swiglu_backward,
    .norm_jvp = ss_cpu_norm_jvp,
    .swiglu_jvp = ss_cpu_swiglu_jvp,
    .attention_jvp = ss_cpu_attention_jvp,
    .embed_backward = ss_cpu_embed_backward,
    .softmax_xent = ss_cpu_softmax_xent,
    .logit_scores = cpu_logit_scores,
    .attr_product = cpu_attr_product,
    .seq_sums = cpu_seq_sums,
    .ig_point = cpu_ig_point,
    .ig_add = cpu_ig_add,
    .ig_attr = cpu_ig_attr,
    .patch_pieces = cpu_patch_pieces,
    .gather = cpu_gather,
    .mask_program_create = ss_cpu_mask_program_create,
    .mask_program_free = ss_cpu_mask_program_free,
    .apply_masks = ss_cpu_apply_masks,
};

#ifndef SS_HAVE_BLAS
ss_status ss_cpu_blas_ready(void) { return SS_OK; }
int ss_cpu_blas_threads(int wide) {
    (void)wide;
    return 1;
}
const char *ss_cpu_blas_core(void) { return NULL; }
const char *ss_cpu_blas_core_better(void) { return NULL; }
const char *ss_cpu_blas_describe(char *buf, size_t n) {
    snprintf(buf, n, "none: built without BLAS, the built-in matrix products");
    return buf;
}
#endif

const ss_backend *ss_backend_cpu(void) {
    (void)ss_cpu_blas_ready(); /* its error is ss_backend_open's to report */
    return &cpu_backend;
}
