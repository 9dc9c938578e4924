/* The body of the tensor-core attention kernel (flash_attention_tc.cu),
 * included once per head size TC_DH (64, 128) with its key tile TC_BC under
 * the name TC_NAME: the kernels are C under the emulation, so the include
 * stands in for a template (the fragment arrays need compile-time sizes to
 * stay in registers). qkv holds bf16 rows, ld16 halves each (16-byte
 * aligned): Q at column 0, K at kofs, V at vofs; the scores Q K^T are scaled
 * by sl / log2 e (1 when the pack kernel scaled Q already). */
#define SS_TC_KERNEL_(name, ...) SS_KERNEL(name, __VA_ARGS__)

SS_TC_KERNEL_(TC_NAME, (void *, z), (int, z16), (const uint16_t *, qkv), (int64_t, ld16), (int64_t, kofs), (int64_t, vofs),
              (const int64_t *, start), (const int64_t *, len), (int, n_seq), (int, group), (float, sl)) {
    /* K and V tiles as stored ([key][dh], bf16), two of each for the
     * pipeline; rows padded to SK halves (16-byte multiples whose 8-row
     * ldmatrix reads fall on distinct banks) */
    enum { SK = TC_DH + TC_PAD, CH = TC_DH / 8, NCH = TC_BC * CH / TC_THREADS };
    __shared__ __align__(16) uint16_t Ks[2][TC_BC * SK];
    __shared__ __align__(16) uint16_t Vs[2][TC_BC * SK];
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
    const int H = (int)(gridDim.x / (unsigned)n_seq);
    const int s = (int)(blockIdx.x / (unsigned)H), h = (int)(blockIdx.x % (unsigned)H);
    /* the longest query tiles first (blockIdx.y 0), so the short causal ones fill the tail */
    const int64_t q0 = (int64_t)(gridDim.y - 1 - blockIdx.y) * TC_BR;
    const int64_t L = len[s], r0 = start[s];
    if (q0 >= L) return; /* the whole block leaves together */
    const int64_t kcol = kofs + (int64_t)(h / group) * TC_DH, vcol = vofs + (int64_t)(h / group) * TC_DH;
    const int64_t w0 = q0 + 16 * w, qr0 = w0 + g, qr1 = qr0 + 8; /* the warp's first row, this thread's two */

    /* This thread's 16-byte chunks of a tile: NCH of K's and of V's, chunk c =
     * threadIdx.x + TC_THREADS * i at key c / CH, columns 8 (c % CH) ..+7;
     * keys past the visible ones are zero-filled (their scores are masked). */
    const int64_t kv_end = SS_MIN(L, q0 + TC_BR), n_tiles = ss_cdiv(kv_end, TC_BC);
#define TC_LOAD(tile, buf)                                                                                         \
    do {                                                                                                           \
        SS_UNROLL                                                                                                  \
        for (int i_ = 0; i_ < NCH; i_++) {                                                                         \
            const int c_ = (int)threadIdx.x + TC_THREADS * i_, key_ = c_ / CH, e_ = 8 * (c_ % CH);                 \
            const int64_t j_ = (int64_t)(tile)*TC_BC + key_;                                                       \
            const uint16_t *row_ = qkv + (r0 + (j_ < kv_end ? j_ : 0)) * ld16;                                      \
            ss_cp_async16(&Ks[buf][key_ * SK + e_], row_ + kcol + e_, j_ < kv_end ? 16 : 0);                       \
            ss_cp_async16(&Vs[buf][key_ * SK + e_], row_ + vcol + e_, j_ < kv_end ? 16 : 0);                       \
        }                                                                                                          \
        ss_cp_async_commit();                                                                                      \
    } while (0)
    TC_LOAD(0, 0);

    /* Q's A fragments straight from global memory, 32 bits each; rows past L read as zero */
    uint32_t qa[TC_DH / 16][4];
    {
        const uint16_t *q_0 = qkv + (r0 + qr0) * ld16 + (int64_t)h * TC_DH + 2 * t;
        const uint16_t *q_1 = q_0 + 8 * ld16;
        SS_UNROLL
        for (int ks = 0; ks < TC_DH / 16; ks++) {
            qa[ks][0] = qr0 < L ? *(const uint32_t *)(q_0 + 16 * ks) : 0u;
            qa[ks][1] = qr1 < L ? *(const uint32_t *)(q_1 + 16 * ks) : 0u;
            qa[ks][2] = qr0 < L ? *(const uint32_t *)(q_0 + 16 * ks + 8) : 0u;
            qa[ks][3] = qr1 < L ? *(const uint32_t *)(q_1 + 16 * ks + 8) : 0u;
        }
    }
    float o[TC_DH / 8][4];
    SS_UNROLL
    for (int dn = 0; dn < TC_DH / 8; dn++) o[dn][0] = o[dn][1] = o[dn][2] = o[dn][3] = 0.f;
    /* running maxima in the products' units, sums of exp2((s - m) sl): sl is
     * log2 e times the scale still to apply (1 when Q came scaled) */
    float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.f, l1 = 0.f;
    /* this lane's ldmatrix row addresses within a tile: K by rows (keys) for
     * Q K^T's B operand, V transposed for P V's */
    const int lm = lane >> 3, lr = lane & 7;
    const int k_off = lr * SK + 8 * lm, v_off = (8 * (lm & 1) + lr) * SK + 8 * (lm >> 1);

    for (int64_t it = 0; it < n_tiles; it++) {
        const int b = (int)(it & 1);
        const int64_t j0 = it * TC_BC;
        if (it + 1 < n_tiles) {
            TC_LOAD(it + 1, b ^ 1); /* the next tile flies while this one is used */
            ss_cp_async_wait(1);
        } else {
            ss_cp_async_wait(0);
        }
        __syncthreads(); /* every thread's copies of tile it have landed */
        /* warps whose rows are all past L, or whose rows all precede the tile, skip it */
        if (w0 < L && j0 <= w0 + 15) {
            /* S = Q K^T, 8-key column tiles; one ldmatrix.x4 gives two k-steps */
            float sc[TC_BC / 8][4];
            SS_UNROLL
            for (int nt = 0; nt < TC_BC / 8; nt++) {
                sc[nt][0] = sc[nt][1] = sc[nt][2] = sc[nt][3] = 0.f;
                SS_UNROLL
                for (int k2 = 0; k2 < TC_DH / 32; k2++) {
                    uint32_t kb[4];
                    ss_ldsm_x4(kb, &Ks[b][8 * nt * SK + 32 * k2 + k_off]);
                    ss_mma_bf16_16816(sc[nt], qa[2 * k2], kb);
                    ss_mma_bf16_16816(sc[nt], qa[2 * k2 + 1], kb + 2);
                }
            }
            /* the causal mask and the end of the sequence, only on tiles that reach them */
            if (j0 + TC_BC - 1 > w0 || j0 + TC_BC > L) {
                SS_UNROLL
                for (int nt = 0; nt < TC_BC / 8; nt++)
                    SS_UNROLL
                    for (int i = 0; i < 4; i++) {
                        const int64_t key = j0 + 8 * nt + 2 * t + (i & 1), row = i < 2 ? qr0 : qr1;
                        if (key > row || key >= L) sc[nt][i] = -INFINITY;
                    }
            }
            /* online softmax of rows qr0 (c[0..1]) and qr1 (c[2..3]); the four
             * lanes of a row group hold the row's scores. The first tile
             * (key 0, visible to every row) makes both maxima finite. */
            float mx0 = -INFINITY, mx1 = -INFINITY;
            SS_UNROLL
            for (int nt = 0; nt < TC_BC / 8; nt++) {
                mx0 = fmaxf(mx0, fmaxf(sc[nt][0], sc[nt][1]));
                mx1 = fmaxf(mx1, fmaxf(sc[nt][2], sc[nt][3]));
            }
            mx0 = fmaxf(mx0, __shfl_xor_sync(SS_FULL_MASK, mx0, 1));
            mx0 = fmaxf(mx0, __shfl_xor_sync(SS_FULL_MASK, mx0, 2));
            mx1 = fmaxf(mx1, __shfl_xor_sync(SS_FULL_MASK, mx1, 1));
            mx1 = fmaxf(mx1, __shfl_xor_sync(SS_FULL_MASK, mx1, 2));
            const float mn0 = fmaxf(m0, mx0), mn1 = fmaxf(m1, mx1);
            const float al0 = exp2f((m0 - mn0) * sl), al1 = exp2f((m1 - mn1) * sl); /* 0 on the first tile */
            const float mb0 = mn0 * sl, mb1 = mn1 * sl;
            float sum0 = 0.f, sum1 = 0.f;
            SS_UNROLL
            for (int nt = 0; nt < TC_BC / 8; nt++) {
                sc[nt][0] = exp2f(fmaf(sc[nt][0], sl, -mb0)), sc[nt][1] = exp2f(fmaf(sc[nt][1], sl, -mb0));
                sc[nt][2] = exp2f(fmaf(sc[nt][2], sl, -mb1)), sc[nt][3] = exp2f(fmaf(sc[nt][3], sl, -mb1));
                sum0 += sc[nt][0] + sc[nt][1];
                sum1 += sc[nt][2] + sc[nt][3];
            }
            sum0 += __shfl_xor_sync(SS_FULL_MASK, sum0, 1);
            sum0 += __shfl_xor_sync(SS_FULL_MASK, sum0, 2);
            sum1 += __shfl_xor_sync(SS_FULL_MASK, sum1, 1);
            sum1 += __shfl_xor_sync(SS_FULL_MASK, sum1, 2);
            l0 = l0 * al0 + sum0, l1 = l1 * al1 + sum1;
            m0 = mn0, m1 = mn1;
            SS_UNROLL
            for (int dn = 0; dn < TC_DH / 8; dn++) o[dn][0] *= al0, o[dn][1] *= al0, o[dn][2] *= al1, o[dn][3] *= al1;
            /* O += P V: P's accumulator layout is the A layout of the next
             * product; one ldmatrix.x4.trans gives two 8-column tiles of V */
            SS_UNROLL
            for (int kk = 0; kk < TC_BC / 16; kk++) {
                uint32_t pa[4];
                pa[0] = ss_pack_bf16(sc[2 * kk][0], sc[2 * kk][1]);
                pa[1] = ss_pack_bf16(sc[2 * kk][2], sc[2 * kk][3]);
                pa[2] = ss_pack_bf16(sc[2 * kk + 1][0], sc[2 * kk + 1][1]);
                pa[3] = ss_pack_bf16(sc[2 * kk + 1][2], sc[2 * kk + 1][3]);
                SS_UNROLL
                for (int d2 = 0; d2 < TC_DH / 16; d2++) {
                    uint32_t vb[4];
                    ss_ldsm_x4_t(vb, &Vs[b][16 * kk * SK + 16 * d2 + v_off]);
                    ss_mma_bf16_16816(o[2 * d2], pa, vb);
                    ss_mma_bf16_16816(o[2 * d2 + 1], pa, vb + 2);
                }
            }
        }
        __syncthreads(); /* tile it is read: the next iteration may load over it */
    }
#undef TC_LOAD
    const float inv0 = 1.f / l0, inv1 = 1.f / l1;
    const int64_t H_dh = (int64_t)H * TC_DH, col = (int64_t)h * TC_DH;
    SS_UNROLL
    for (int dn = 0; dn < TC_DH / 8; dn++) {
        const int e = 8 * dn + 2 * t;
        const int64_t at0 = (r0 + qr0) * H_dh + col + e, at1 = (r0 + qr1) * H_dh + col + e;
        if (z16) { /* rounded as the conversion kernel rounds the fp32 values below */
            if (qr0 < L) *(uint32_t *)((uint16_t *)z + at0) = ss_pack_bf16(o[dn][0] * inv0, o[dn][1] * inv0);
            if (qr1 < L) *(uint32_t *)((uint16_t *)z + at1) = ss_pack_bf16(o[dn][2] * inv1, o[dn][3] * inv1);
        } else {
            if (qr0 < L) *(float2 *)((float *)z + at0) = make_float2(o[dn][0] * inv0, o[dn][1] * inv0);
            if (qr1 < L) *(float2 *)((float *)z + at1) = make_float2(o[dn][2] * inv1, o[dn][3] * inv1);
        }
    }
}
