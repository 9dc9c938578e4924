/* The tensor-core product D = A B + D of one warp, m16n8k16 with bf16
 * operands and fp32 accumulation (PTX mma.sync, sm_80 and later), and its
 * emulation. Fragments as the PTX ISA lays them out, with g = lane / 4 and
 * t = lane % 4, and the lower-indexed element of each pair in the low half:
 *   A (16 x 16, row-major) a[0] = A[g][2t..2t+1],   a[1] = A[g+8][2t..2t+1],
 *                          a[2] = A[g][2t+8..+9],   a[3] = A[g+8][2t+8..+9];
 *   B (16 x 8, by column)  b[0] = B[2t..2t+1][g],   b[1] = B[2t+8..+9][g];
 *   C, D (16 x 8, fp32)    c[0..1] = C[g][2t..2t+1], c[2..3] = C[g+8][2t..2t+1].
 * Under the emulation each lane gathers the rows and columns it needs with
 * shuffles and sums the 16 products in order; the hardware's order of the
 * fp32 additions is its own, so results agree to fp32 rounding. */
#ifndef SS_MMA_CUH
#define SS_MMA_CUH

/* Two floats rounded to bf16 (nearest even) in one register, x low. */
SS_DEV uint32_t ss_pack_bf16(float x, float y) {
    return (uint32_t)__bfloat16_as_ushort(__float2bfloat16_rn(x)) |
           ((uint32_t)__bfloat16_as_ushort(__float2bfloat16_rn(y)) << 16);
}

#ifdef SS_CUDA_EMU
SS_DEV float ss_bf16_half(uint32_t r, int hi) { return ss_bf16_to_f32((uint16_t)(hi ? r >> 16 : r & 0xffffu)); }

SS_DEV void ss_mma_bf16_16816(float *c, const uint32_t *a, const uint32_t *b) {
    const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    float acc[4] = {c[0], c[1], c[2], c[3]};
    for (int k = 0; k < 16; k++) {
        const int ka = k < 8 ? 0 : 2, kb = k < 8 ? 0 : 1, sub = (k & 7) >> 1, hi = k & 1;
        /* every lane shuffles the same register, each from its own source lane */
        const float a0 = ss_bf16_half(__shfl_sync(SS_FULL_MASK, (unsigned)a[ka], 4 * g + sub), hi);
        const float a1 = ss_bf16_half(__shfl_sync(SS_FULL_MASK, (unsigned)a[ka + 1], 4 * g + sub), hi);
        const float b0 = ss_bf16_half(__shfl_sync(SS_FULL_MASK, (unsigned)b[kb], 4 * (2 * t) + sub), hi);
        const float b1 = ss_bf16_half(__shfl_sync(SS_FULL_MASK, (unsigned)b[kb], 4 * (2 * t + 1) + sub), hi);
        acc[0] += a0 * b0;
        acc[1] += a0 * b1;
        acc[2] += a1 * b0;
        acc[3] += a1 * b1;
    }
    for (int i = 0; i < 4; i++) c[i] = acc[i];
}
#else
SS_DEV void ss_mma_bf16_16816(float *c, const uint32_t *a, const uint32_t *b) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
                 "{%0, %1, %2, %3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
#endif

#endif
