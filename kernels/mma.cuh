/* Tensor-core helpers: the product D = A B + D of one warp, m16n8k16 with bf16
 * operands and fp32 accumulation (PTX mma.sync, sm_80 and later), and its
 * emulation. Fragments as the PTX ISA lays them out, with g = lane / 4 and
 * t = lane % 4, and the lower-indexed element of each pair in the low half:
 *   A (16 x 16, row-major) a[0] = A[g][2t..2t+1],   a[1] = A[g+8][2t..2t+1],
 *                          a[2] = A[g][2t+8..+9],   a[3] = A[g+8][2t+8..+9];
 *   B (16 x 8, by column)  b[0] = B[2t..2t+1][g],   b[1] = B[2t+8..+9][g];
 *   C, D (16 x 8, fp32)    c[0..1] = C[g][2t..2t+1], c[2..3] = C[g+8][2t..2t+1].
 * Under the emulation the warp's 32 lanes meet at the instruction (a
 * warp-wide collective of kernels/emu) and the product of the assembled
 * 16 x 16 and 16 x 8 matrices is summed in k order; the hardware's order of
 * the fp32 additions is its own, so results agree to fp32 rounding. */
#ifndef SS_MMA_CUH
#define SS_MMA_CUH

/* Two floats rounded to bf16 (nearest even) in one register, x low. */
SS_DEV uint32_t ss_pack_bf16(float x, float y) {
    return (uint32_t)__bfloat16_as_ushort(__float2bfloat16_rn(x)) |
           ((uint32_t)__bfloat16_as_ushort(__float2bfloat16_rn(y)) << 16);
}

#ifdef SS_CUDA_EMU
SS_DEV float ss_bf16_half(uint32_t r, int hi) { return ss_bf16_to_f32((uint16_t)(hi ? r >> 16 : r & 0xffffu)); }

typedef struct { float *c; const uint32_t *a, *b; } ss_emu_mma_args;
/* The warp's product at once: A and B assembled from the 32 lanes'
 * fragments, each lane's four sums taken from its c in k order. */
SS_DEV void ss_emu_mma_bf16_all(void *const *lane_args) {
    float A[16][16], B[16][8];
    for (int l = 0; l < 32; l++) {
        const ss_emu_mma_args *p = (const ss_emu_mma_args *)lane_args[l];
        const int g = l >> 2, t = l & 3;
        for (int h = 0; h < 2; h++) {
            A[g][2 * t + h] = ss_bf16_half(p->a[0], h), A[g + 8][2 * t + h] = ss_bf16_half(p->a[1], h);
            A[g][2 * t + 8 + h] = ss_bf16_half(p->a[2], h), A[g + 8][2 * t + 8 + h] = ss_bf16_half(p->a[3], h);
            B[2 * t + h][g] = ss_bf16_half(p->b[0], h), B[2 * t + 8 + h][g] = ss_bf16_half(p->b[1], h);
        }
    }
    for (int l = 0; l < 32; l++) {
        float *c = ((const ss_emu_mma_args *)lane_args[l])->c;
        const int g = l >> 2, t = l & 3;
        for (int i = 0; i < 4; i++) {
            const int row = g + 8 * (i >> 1), col = 2 * t + (i & 1);
            float acc = c[i];
            for (int k = 0; k < 16; k++) acc += A[row][k] * B[k][col];
            c[i] = acc;
        }
    }
}
#define ss_mma_bf16_16816(c, a, b)                                                                      \
    ss_emu_warp_collective_(ss_emu_mma_bf16_all, &(ss_emu_mma_args){(c), (a), (b)}, 32, "mma.sync", __FILE__, \
                            __LINE__)
#else
SS_DEV void ss_mma_bf16_16816(float *c, const uint32_t *a, const uint32_t *b) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
                 "{%0, %1, %2, %3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
#endif

/* ldmatrix.x4: four 8x8 matrices of 16-bit elements from shared memory, lane
 * l giving the address of row l % 8 of matrix l / 8 (16-byte aligned); r[m]
 * receives matrix m as an mma fragment: M[g][2t..2t+1], or with _t (.trans)
 * M[2t..2t+1][g], so that a row-major tile serves as a B operand by column.
 * Under the emulation the warp meets at the instruction and each lane's
 * elements are read through the row addresses of the lanes that give them. */
#ifdef SS_CUDA_EMU
typedef struct { uint32_t *r; const uint16_t *row; } ss_emu_ldsm_args;
SS_DEV void ss_emu_ldsm_all(void *const *lane_args, int trans) {
    for (int l = 0; l < 32; l++) {
        uint32_t *r = ((const ss_emu_ldsm_args *)lane_args[l])->r;
        const int g = l >> 2, t = l & 3;
        for (int m = 0; m < 4; m++) {
            if (!trans) {
                const uint16_t *p = ((const ss_emu_ldsm_args *)lane_args[8 * m + g])->row;
                r[m] = (uint32_t)p[2 * t] | ((uint32_t)p[2 * t + 1] << 16);
            } else {
                const uint16_t *p0 = ((const ss_emu_ldsm_args *)lane_args[8 * m + 2 * t])->row;
                const uint16_t *p1 = ((const ss_emu_ldsm_args *)lane_args[8 * m + 2 * t + 1])->row;
                r[m] = (uint32_t)p0[g] | ((uint32_t)p1[g] << 16);
            }
        }
    }
}
SS_DEV void ss_emu_ldsm_n(void *const *lane_args) { ss_emu_ldsm_all(lane_args, 0); }
SS_DEV void ss_emu_ldsm_t(void *const *lane_args) { ss_emu_ldsm_all(lane_args, 1); }
/* every lane's row address checked before the warp waits: 16-byte aligned */
#define ss_ldsm_x4_any_(r, row, fn, what)                                                         \
    do {                                                                                          \
        const uint16_t *row_ = (row);                                                             \
        ss_emu_check_align_(row_, 16, "ldmatrix", __FILE__, __LINE__);                            \
        ss_emu_warp_collective_(fn, &(ss_emu_ldsm_args){(r), row_}, 32, what, __FILE__, __LINE__); \
    } while (0)
#define ss_ldsm_x4(r, row) ss_ldsm_x4_any_((r), (row), ss_emu_ldsm_n, "ldmatrix.x4")
#define ss_ldsm_x4_t(r, row) ss_ldsm_x4_any_((r), (row), ss_emu_ldsm_t, "ldmatrix.x4.trans")
#else
SS_DEV void ss_ldsm_x4(uint32_t *r, const uint16_t *row) {
    const unsigned a = (unsigned)__cvta_generic_to_shared(row);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(a));
}
SS_DEV void ss_ldsm_x4_t(uint32_t *r, const uint16_t *row) {
    const unsigned a = (unsigned)__cvta_generic_to_shared(row);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(a));
}
#endif

/* cp.async (sm_80): 16 bytes from global to shared memory without passing
 * through registers, the last 16 - src_bytes of them zero (src_bytes 0: a
 * zero fill, src still a valid address); copies are grouped by commit and
 * waited for by wait(n), which returns when at most the n newest groups
 * are still in flight (n a constant). A thread sees its own copies after
 * the wait, other threads' after the wait and a __syncthreads. */
#ifdef SS_CUDA_EMU
#define ss_cp_async16(dst, src, src_bytes) ss_emu_cp_async_((dst), (src), 16, (src_bytes), __FILE__, __LINE__)
#define ss_cp_async_commit() ss_emu_cp_async_commit_(__FILE__, __LINE__)
#define ss_cp_async_wait(n) ss_emu_cp_async_wait_((n), __FILE__, __LINE__)
#else
SS_DEV void ss_cp_async16(void *dst, const void *src, int src_bytes) {
    const unsigned d = (unsigned)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(d), "l"(src), "r"(src_bytes) : "memory");
}
#define ss_cp_async_commit() asm volatile("cp.async.commit_group;\n" ::: "memory")
#define ss_cp_async_wait(n) asm volatile("cp.async.wait_group %0;\n" ::"n"(n) : "memory")
#endif

#endif
