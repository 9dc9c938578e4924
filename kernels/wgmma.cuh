/* Hopper's warpgroup products (PTX wgmma, sm_90a), the subset the
 * covariance kernel uses, and their emulation.
 *
 * A warpgroup is 4 consecutive warps (128 threads, the first a multiple of
 * 128). wgmma.mma_async m64n128k16 computes D (64 x 128, fp32, in registers)
 * += A (64 x 16) B (16 x 128), both bf16 operands read from shared memory
 * through 64-bit matrix descriptors. Only the K-major layout without swizzle
 * is used: each operand is made of core matrices of 8 rows x 16 bytes (8
 * values along K), each 128 contiguous bytes with its rows 16 bytes apart;
 * the descriptor holds the start address, lbo (the bytes from one core
 * matrix to the next along K) and sbo (to the next along M or N; for B the
 * rows are B's columns). Element (r, k) of an operand is at
 *   start + (r / 8) sbo + (k / 8) lbo + (r % 8) 16 + (k % 8) 2.
 * Thread i of the warpgroup (warp w = i / 32, g = i % 32 / 4, t = i % 4)
 * holds d[4 c + 2 h + e] = D[16 w + g + 8 h][8 c + 2 t + e], c < 16.
 *
 * The products are asynchronous: ss_wgmma_commit() closes a group of them,
 * ss_wgmma_wait(n) returns when at most the n newest groups are in flight;
 * until then neither the accumulators nor the shared memory they read may
 * be touched. ss_wgmma_fence() comes before the first product that uses
 * accumulators written by ordinary instructions (PTX wgmma.fence), and
 * ss_wgmma_fence_operands() ties the accumulators to the waits so that the
 * compiler moves no access to them across one. Shared memory written by
 * ordinary stores or cp.async is made visible to the products' reads with
 * ss_fence_proxy_async() by each writing thread, before the barrier that
 * orders the writes with the products.
 *
 * Under the emulation each instruction is a collective of the 128 threads
 * (kernels/emu), the descriptors encode offsets into the launch's dynamic
 * shared memory (the only shared memory the emulation can number), and a
 * product runs when a wait retires its group: it reads shared memory then,
 * the latest a GPU may, and writes the accumulators then, so a kernel that
 * overwrites an operand or reads an accumulator before the wait computes
 * something else and fails its test. Sums run in k order (the GPU's order
 * is its own: results agree to fp32 rounding). */
#ifndef SS_WGMMA_CUH
#define SS_WGMMA_CUH

#ifdef SS_CUDA_EMU
#include <stdio.h>
#include <stdlib.h>

SS_DEV uint64_t ss_wgmma_desc_at(const void *smem, int lbo, int sbo, const char *file, int line) {
    const uint32_t off = ss_emu_smem_offset_(smem, "wgmma descriptor", file, line);
    if (off % 16 || lbo % 16 || sbo % 16 || lbo < 0 || sbo < 0 || (lbo >> 4) > 0x3fff || (sbo >> 4) > 0x3fff) {
        fprintf(stderr, "cuda_emu: wgmma descriptor at %s:%d: offset %u, lbo %d, sbo %d are not 16-byte multiples "
                        "that fit 14 bits\n", file, line, off, lbo, sbo);
        abort();
    }
    return (uint64_t)(off >> 4) | ((uint64_t)(lbo >> 4) << 16) | ((uint64_t)(sbo >> 4) << 32);
}
#define ss_wgmma_desc(smem, lbo, sbo) ss_wgmma_desc_at((smem), (lbo), (sbo), __FILE__, __LINE__)

#define SS_EMU_WGMMA_MAX 32 /* products in flight per warpgroup */
typedef struct { float *d[128]; uint64_t da, db; int group; } ss_emu_wgmma_op;
typedef struct { ss_emu_wgmma_op op[SS_EMU_WGMMA_MAX]; int n, next_group; } ss_emu_wgmma_queue;
static _Thread_local ss_emu_wgmma_queue ss_emu_wgq[8]; /* per warpgroup of the block */
typedef struct { float *d; uint64_t da, db; int wg, n; } ss_emu_wgmma_args;

/* A[64][16] or B's 128 columns ([128][16], by column) from a descriptor */
SS_DEV void ss_emu_wgmma_operand(float *m, int rows, uint64_t desc) {
    if (desc >> 49) {
        fprintf(stderr, "cuda_emu: wgmma descriptor 0x%016llx: swizzle or base offset set (not emulated)\n",
                (unsigned long long)desc);
        abort();
    }
    const uint64_t start = (desc & 0x3fff) << 4, lbo = ((desc >> 16) & 0x3fff) << 4, sbo = ((desc >> 32) & 0x3fff) << 4;
    for (int r = 0; r < rows; r++)
        for (int k = 0; k < 16; k++) {
            const uint64_t at = start + (uint64_t)(r / 8) * sbo + (uint64_t)(k / 8) * lbo + (uint64_t)(r % 8) * 16 +
                                (uint64_t)(k % 8) * 2;
            m[r * 16 + k] = ss_bf16_to_f32(*(const uint16_t *)ss_emu_smem_at_(at, 2, "wgmma"));
        }
}

SS_DEV void ss_emu_wgmma_run(const ss_emu_wgmma_op *op) {
    static _Thread_local float A[64 * 16], B[128 * 16];
    ss_emu_wgmma_operand(A, 64, op->da);
    ss_emu_wgmma_operand(B, 128, op->db);
    for (int i = 0; i < 128; i++) {
        const int w = i / 32, g = i % 32 / 4, t = i % 4;
        for (int c = 0; c < 16; c++)
            for (int h = 0; h < 2; h++)
                for (int e = 0; e < 2; e++) {
                    const int row = 16 * w + g + 8 * h, col = 8 * c + 2 * t + e;
                    float acc = op->d[i][4 * c + 2 * h + e];
                    for (int k = 0; k < 16; k++) acc += A[row * 16 + k] * B[col * 16 + k];
                    op->d[i][4 * c + 2 * h + e] = acc;
                }
    }
}

SS_DEV void ss_emu_wgmma_issue(void *const *lane) {
    const ss_emu_wgmma_args *a = (const ss_emu_wgmma_args *)lane[0];
    ss_emu_wgmma_queue *q = &ss_emu_wgq[a->wg];
    if (q->n == SS_EMU_WGMMA_MAX) {
        fprintf(stderr, "cuda_emu: more than %d wgmma products in flight in one warpgroup\n", SS_EMU_WGMMA_MAX);
        abort();
    }
    ss_emu_wgmma_op *op = &q->op[q->n++];
    op->da = a->da, op->db = a->db, op->group = -1;
    for (int i = 0; i < 128; i++) {
        const ss_emu_wgmma_args *b = (const ss_emu_wgmma_args *)lane[i];
        if (b->da != a->da || b->db != a->db) {
            fprintf(stderr, "cuda_emu: wgmma: the threads of a warpgroup give different descriptors\n");
            abort();
        }
        op->d[i] = b->d;
    }
}
SS_DEV void ss_emu_wgmma_commit_all(void *const *lane) {
    ss_emu_wgmma_queue *q = &ss_emu_wgq[((const ss_emu_wgmma_args *)lane[0])->wg];
    for (int i = 0; i < q->n; i++)
        if (q->op[i].group < 0) q->op[i].group = q->next_group;
    q->next_group++;
}
SS_DEV void ss_emu_wgmma_wait_all(void *const *lane) {
    const ss_emu_wgmma_args *a = (const ss_emu_wgmma_args *)lane[0];
    ss_emu_wgmma_queue *q = &ss_emu_wgq[a->wg];
    int keep = 0;
    for (int i = 0; i < q->n; i++) {
        if (q->op[i].group >= 0 && q->op[i].group < q->next_group - a->n) ss_emu_wgmma_run(&q->op[i]);
        else q->op[keep++] = q->op[i];
    }
    q->n = keep;
    if (!keep) q->next_group = 0; /* nothing in flight: the next block starts afresh */
}
#define SS_EMU_WG_() ((int)(threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z)) / 128)
#define ss_wgmma_m64n128k16_bf16(d, da, db)                                                                  \
    ss_emu_warp_collective_(ss_emu_wgmma_issue, &(ss_emu_wgmma_args){(d), (da), (db), SS_EMU_WG_(), 0}, 128, \
                            "wgmma.mma_async", __FILE__, __LINE__)
#define ss_wgmma_commit()                                                                                         \
    ss_emu_warp_collective_(ss_emu_wgmma_commit_all, &(ss_emu_wgmma_args){NULL, 0, 0, SS_EMU_WG_(), 0}, 128, \
                            "wgmma.commit_group", __FILE__, __LINE__)
#define ss_wgmma_wait(n)                                                                                          \
    ss_emu_warp_collective_(ss_emu_wgmma_wait_all, &(ss_emu_wgmma_args){NULL, 0, 0, SS_EMU_WG_(), (n)}, 128, \
                            "wgmma.wait_group", __FILE__, __LINE__)
#define ss_wgmma_fence() ((void)0)
#define ss_wgmma_fence_operands(d, n) ((void)(d), (void)(n))
#define ss_fence_proxy_async() ((void)0)
#else
SS_DEV uint64_t ss_wgmma_desc(const void *smem, int lbo, int sbo) {
    const uint32_t a = (uint32_t)__cvta_generic_to_shared(smem);
    return (uint64_t)((a & 0x3ffff) >> 4) | ((uint64_t)((lbo >> 4) & 0x3fff) << 16) |
           ((uint64_t)((sbo >> 4) & 0x3fff) << 32);
}
#if defined(__CUDA_ARCH_FEAT_SM90_ALL) || !defined(__CUDA_ARCH__)
SS_DEV void ss_wgmma_m64n128k16_bf16(float *d, uint64_t da, uint64_t db) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {"
               "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
               "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
               "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "
               "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63"
                 "}, %64, %65, p, 1, 1, 0, 0;\n}\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
                   "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
                   "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
                   "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]),
                   "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]),
                   "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]),
                   "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
                   "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
                 : "l"(da), "l"(db), "r"(1));
}
SS_DEV void ss_wgmma_fence(void) { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
SS_DEV void ss_wgmma_commit(void) { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
#define ss_wgmma_wait(n) asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(n) : "memory")
SS_DEV void ss_fence_proxy_async(void) { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }
#else
/* compiled for a GPU without wgmma (anything but sm_90a): the launcher
 * refuses to run the kernels that use these, which trap if run anyway */
SS_DEV void ss_wgmma_m64n128k16_bf16(float *d, uint64_t da, uint64_t db) { (void)d, (void)da, (void)db, __trap(); }
SS_DEV void ss_wgmma_fence(void) {}
SS_DEV void ss_wgmma_commit(void) {}
#define ss_wgmma_wait(n) ((void)0)
SS_DEV void ss_fence_proxy_async(void) {}
#endif
/* the accumulators as inputs and outputs of an empty instruction: no access
 * to them moves across it (put one after each wait, and before the first product) */
SS_DEV void ss_wgmma_fence_operands(float *d, int n) {
    SS_UNROLL
    for (int i = 0; i < n; i++) asm volatile("" : "+f"(d[i])::"memory");
}
#endif

#endif
