/* The body of the tensor-core attention kernel (flash_attention_tc.cu),
 * included once per variant: head size TC_DH (64, 128), key tile TC_BC and
 * TC_MT 16-row query tiles per warp (4 warps, so 64 TC_MT query rows a
 * block), under the name TC_NAME. The kernels are C under the emulation, so
 * the include stands in for a template (the fragment arrays need
 * compile-time sizes to stay in registers). qkv holds bf16 rows, ld16
 * halves each (16-byte aligned): Q at column 0, K at kofs, V at vofs; the
 * scores Q K^T are scaled by sl / log2 e (1 when the pack kernel scaled Q
 * already).
 *
 * TC_QSMEM 1: Q's block rows wait in dynamic shared memory (BR x SK halves,
 * the launcher's to give) and each warp reads its fragments from there by
 * ldmatrix at every tile, instead of holding them in registers (64 of them
 * at dh 128 with two query tiles, which then spilled).
 *
 * With TC_MT 2 a warp's two query tiles share each K and V fragment that
 * ldmatrix brings from shared memory (half the reads per product), a block
 * loads each K/V tile for 128 query rows instead of 64, and a warp has two
 * independent softmax chains to interleave. A row's arithmetic is the same
 * at either TC_MT: the extra tiles a warp's first query tile then meets lie
 * wholly in its future, so their probabilities are exactly 0 and their
 * rescaling factor exactly 1, and the output is the same bit for bit. */
#define SS_TC_KERNEL_(name, ...) SS_KERNEL(name, __VA_ARGS__)

SS_TC_KERNEL_(TC_NAME, (void *, z), (int, z16), (const uint16_t *, qkv), (int64_t, ld16), (int64_t, kofs), (int64_t, vofs),
              (const int64_t *, start), (const int64_t *, len), (int, n_seq), (int, group), (float, sl)) {
    /* K and V tiles as stored ([key][dh], bf16), two of each for the
     * pipeline; rows padded to SK halves (16-byte multiples whose 8-row
     * ldmatrix reads fall on distinct banks) */
    enum { SK = TC_DH + TC_PAD, CH = TC_DH / 8, NCH = TC_BC * CH / TC_THREADS, RW = 16 * TC_MT, BR = 4 * RW };
    __shared__ __align__(16) uint16_t Ks[2][TC_BC * SK];
    __shared__ __align__(16) uint16_t Vs[2][TC_BC * SK];
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
    const int H = (int)(gridDim.x / (unsigned)n_seq);
    const int s = (int)(blockIdx.x / (unsigned)H), h = (int)(blockIdx.x % (unsigned)H);
    /* the longest query tiles first (blockIdx.y 0), so the short causal ones fill the tail */
    const int64_t q0 = (int64_t)(gridDim.y - 1 - blockIdx.y) * BR;
    const int64_t L = len[s], r0 = start[s];
    if (q0 >= L) return; /* the whole block leaves together */
    const int64_t kcol = kofs + (int64_t)(h / group) * TC_DH, vcol = vofs + (int64_t)(h / group) * TC_DH;
    /* the warp's first row; query tile mt's rows are w0 + 16 mt + g (qr0) and + 8 (qr1) */
    const int64_t w0 = q0 + RW * w;

    /* This thread's 16-byte chunks of a tile: NCH of K's and of V's, chunk c =
     * threadIdx.x + TC_THREADS * i at key c / CH, columns 8 (c % CH) ..+7;
     * keys past the visible ones are zero-filled (their scores are masked). */
    const int64_t kv_end = SS_MIN(L, q0 + BR), n_tiles = ss_cdiv(kv_end, TC_BC);
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
#if TC_QSMEM
    /* Q's block rows [BR][SK] in dynamic shared memory, copied with tile 0's K
     * and V (one group); rows past L zero-filled */
    SS_DYN_SHARED(uint16_t, Qs);
    {
        enum { QCH = BR * CH / TC_THREADS };
        SS_UNROLL
        for (int i_ = 0; i_ < QCH; i_++) {
            const int c_ = (int)threadIdx.x + TC_THREADS * i_, row_ = c_ / CH, e_ = 8 * (c_ % CH);
            const int64_t qr_ = q0 + row_;
            ss_cp_async16(&Qs[row_ * SK + e_], qkv + (r0 + (qr_ < L ? qr_ : 0)) * ld16 + (int64_t)h * TC_DH + e_,
                          qr_ < L ? 16 : 0);
        }
    }
#endif
    TC_LOAD(0, 0);

#if !TC_QSMEM
    /* Q's A fragments straight from global memory, 32 bits each; rows past L read as zero */
    uint32_t qa[TC_MT][TC_DH / 16][4];
    SS_UNROLL
    for (int mt = 0; mt < TC_MT; mt++) {
        const int64_t qr0 = w0 + 16 * mt + g, qr1 = qr0 + 8;
        const uint16_t *q_0 = qkv + (r0 + qr0) * ld16 + (int64_t)h * TC_DH + 2 * t;
        const uint16_t *q_1 = q_0 + 8 * ld16;
        SS_UNROLL
        for (int ks = 0; ks < TC_DH / 16; ks++) {
            qa[mt][ks][0] = qr0 < L ? *(const uint32_t *)(q_0 + 16 * ks) : 0u;
            qa[mt][ks][1] = qr1 < L ? *(const uint32_t *)(q_1 + 16 * ks) : 0u;
            qa[mt][ks][2] = qr0 < L ? *(const uint32_t *)(q_0 + 16 * ks + 8) : 0u;
            qa[mt][ks][3] = qr1 < L ? *(const uint32_t *)(q_1 + 16 * ks + 8) : 0u;
        }
    }
#endif
    float o[TC_MT][TC_DH / 8][4];
    /* running maxima in the products' units, sums of exp2((s - m) sl): sl is
     * log2 e times the scale still to apply (1 when Q came scaled); per query
     * tile, rows qr0 ([mt][0]) and qr1 ([mt][1]) */
    float m_[TC_MT][2], l_[TC_MT][2];
    SS_UNROLL
    for (int mt = 0; mt < TC_MT; mt++) {
        SS_UNROLL
        for (int dn = 0; dn < TC_DH / 8; dn++) o[mt][dn][0] = o[mt][dn][1] = o[mt][dn][2] = o[mt][dn][3] = 0.f;
        m_[mt][0] = m_[mt][1] = -INFINITY;
        l_[mt][0] = l_[mt][1] = 0.f;
    }
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
        if (w0 < L && j0 <= w0 + RW - 1) {
            /* S = Q K^T, 8-key column tiles; one ldmatrix.x4 gives two k-steps, for every query tile */
            float sc[TC_MT][TC_BC / 8][4];
#if TC_QSMEM
            /* Q's fragments from shared memory, two k-steps of every query tile at a time (k2
             * outside, so each accumulator still adds its k-steps in order: the same sums) */
            SS_UNROLL
            for (int nt = 0; nt < TC_BC / 8; nt++)
                SS_UNROLL
                for (int mt = 0; mt < TC_MT; mt++) sc[mt][nt][0] = sc[mt][nt][1] = sc[mt][nt][2] = sc[mt][nt][3] = 0.f;
            SS_UNROLL
            for (int k2 = 0; k2 < TC_DH / 32; k2++) {
                uint32_t qf[TC_MT][2][4];
                SS_UNROLL
                for (int mt = 0; mt < TC_MT; mt++) {
                    const uint16_t *qrow = &Qs[(RW * w + 16 * mt + (lane & 15)) * SK + 32 * k2 + 8 * (lane >> 4)];
                    ss_ldsm_x4(qf[mt][0], qrow);
                    ss_ldsm_x4(qf[mt][1], qrow + 16);
                }
                SS_UNROLL
                for (int nt = 0; nt < TC_BC / 8; nt++) {
                    uint32_t kb[4];
                    ss_ldsm_x4(kb, &Ks[b][8 * nt * SK + 32 * k2 + k_off]);
                    SS_UNROLL
                    for (int mt = 0; mt < TC_MT; mt++) {
                        ss_mma_bf16_16816(sc[mt][nt], qf[mt][0], kb);
                        ss_mma_bf16_16816(sc[mt][nt], qf[mt][1], kb + 2);
                    }
                }
            }
#else
            SS_UNROLL
            for (int nt = 0; nt < TC_BC / 8; nt++) {
                SS_UNROLL
                for (int mt = 0; mt < TC_MT; mt++) sc[mt][nt][0] = sc[mt][nt][1] = sc[mt][nt][2] = sc[mt][nt][3] = 0.f;
                SS_UNROLL
                for (int k2 = 0; k2 < TC_DH / 32; k2++) {
                    uint32_t kb[4];
                    ss_ldsm_x4(kb, &Ks[b][8 * nt * SK + 32 * k2 + k_off]);
                    SS_UNROLL
                    for (int mt = 0; mt < TC_MT; mt++) {
                        ss_mma_bf16_16816(sc[mt][nt], qa[mt][2 * k2], kb);
                        ss_mma_bf16_16816(sc[mt][nt], qa[mt][2 * k2 + 1], kb + 2);
                    }
                }
            }
#endif
            SS_UNROLL
            for (int mt = 0; mt < TC_MT; mt++) {
                const int64_t wm = w0 + 16 * mt, qr0 = wm + g, qr1 = qr0 + 8;
                /* the causal mask and the end of the sequence, only on tiles that reach them */
                if (j0 + TC_BC - 1 > wm || j0 + TC_BC > L) {
                    SS_UNROLL
                    for (int nt = 0; nt < TC_BC / 8; nt++)
                        SS_UNROLL
                        for (int i = 0; i < 4; i++) {
                            const int64_t key = j0 + 8 * nt + 2 * t + (i & 1), row = i < 2 ? qr0 : qr1;
                            if (key > row || key >= L) sc[mt][nt][i] = -INFINITY;
                        }
                }
                /* online softmax of rows qr0 (c[0..1]) and qr1 (c[2..3]); the four
                 * lanes of a row group hold the row's scores. The first tile
                 * (key 0, visible to every row) makes both maxima finite, so a
                 * later tile wholly in a row's future gives it p = 0, factor 1. */
                float mx0 = -INFINITY, mx1 = -INFINITY;
                SS_UNROLL
                for (int nt = 0; nt < TC_BC / 8; nt++) {
                    mx0 = fmaxf(mx0, fmaxf(sc[mt][nt][0], sc[mt][nt][1]));
                    mx1 = fmaxf(mx1, fmaxf(sc[mt][nt][2], sc[mt][nt][3]));
                }
                mx0 = fmaxf(mx0, __shfl_xor_sync(SS_FULL_MASK, mx0, 1));
                mx0 = fmaxf(mx0, __shfl_xor_sync(SS_FULL_MASK, mx0, 2));
                mx1 = fmaxf(mx1, __shfl_xor_sync(SS_FULL_MASK, mx1, 1));
                mx1 = fmaxf(mx1, __shfl_xor_sync(SS_FULL_MASK, mx1, 2));
                const float mn0 = fmaxf(m_[mt][0], mx0), mn1 = fmaxf(m_[mt][1], mx1);
                const float al0 = exp2f((m_[mt][0] - mn0) * sl), al1 = exp2f((m_[mt][1] - mn1) * sl); /* 0 on the first tile */
                const float mb0 = mn0 * sl, mb1 = mn1 * sl;
                float sum0 = 0.f, sum1 = 0.f;
                SS_UNROLL
                for (int nt = 0; nt < TC_BC / 8; nt++) {
                    float *c_ = sc[mt][nt];
                    c_[0] = exp2f(fmaf(c_[0], sl, -mb0)), c_[1] = exp2f(fmaf(c_[1], sl, -mb0));
                    c_[2] = exp2f(fmaf(c_[2], sl, -mb1)), c_[3] = exp2f(fmaf(c_[3], sl, -mb1));
                    sum0 += c_[0] + c_[1];
                    sum1 += c_[2] + c_[3];
                }
                sum0 += __shfl_xor_sync(SS_FULL_MASK, sum0, 1);
                sum0 += __shfl_xor_sync(SS_FULL_MASK, sum0, 2);
                sum1 += __shfl_xor_sync(SS_FULL_MASK, sum1, 1);
                sum1 += __shfl_xor_sync(SS_FULL_MASK, sum1, 2);
                l_[mt][0] = l_[mt][0] * al0 + sum0, l_[mt][1] = l_[mt][1] * al1 + sum1;
                m_[mt][0] = mn0, m_[mt][1] = mn1;
                SS_UNROLL
                for (int dn = 0; dn < TC_DH / 8; dn++)
                    o[mt][dn][0] *= al0, o[mt][dn][1] *= al0, o[mt][dn][2] *= al1, o[mt][dn][3] *= al1;
            }
            /* O += P V: P's accumulator layout is the A layout of the next
             * product; one ldmatrix.x4.trans gives two 8-column tiles of V, for
             * every query tile */
            SS_UNROLL
            for (int kk = 0; kk < TC_BC / 16; kk++) {
                uint32_t pa[TC_MT][4];
                SS_UNROLL
                for (int mt = 0; mt < TC_MT; mt++) {
                    pa[mt][0] = ss_pack_bf16(sc[mt][2 * kk][0], sc[mt][2 * kk][1]);
                    pa[mt][1] = ss_pack_bf16(sc[mt][2 * kk][2], sc[mt][2 * kk][3]);
                    pa[mt][2] = ss_pack_bf16(sc[mt][2 * kk + 1][0], sc[mt][2 * kk + 1][1]);
                    pa[mt][3] = ss_pack_bf16(sc[mt][2 * kk + 1][2], sc[mt][2 * kk + 1][3]);
                }
                SS_UNROLL
                for (int d2 = 0; d2 < TC_DH / 16; d2++) {
                    uint32_t vb[4];
                    ss_ldsm_x4_t(vb, &Vs[b][16 * kk * SK + 16 * d2 + v_off]);
                    SS_UNROLL
                    for (int mt = 0; mt < TC_MT; mt++) {
                        ss_mma_bf16_16816(o[mt][2 * d2], pa[mt], vb);
                        ss_mma_bf16_16816(o[mt][2 * d2 + 1], pa[mt], vb + 2);
                    }
                }
            }
        }
        __syncthreads(); /* tile it is read: the next iteration may load over it */
    }
#undef TC_LOAD
    const int64_t H_dh = (int64_t)H * TC_DH, col = (int64_t)h * TC_DH;
    SS_UNROLL
    for (int mt = 0; mt < TC_MT; mt++) {
        const int64_t qr0 = w0 + 16 * mt + g, qr1 = qr0 + 8;
        const float inv0 = 1.f / l_[mt][0], inv1 = 1.f / l_[mt][1];
        SS_UNROLL
        for (int dn = 0; dn < TC_DH / 8; dn++) {
            const int e = 8 * dn + 2 * t;
            const float *c_ = o[mt][dn];
            const int64_t at0 = (r0 + qr0) * H_dh + col + e, at1 = (r0 + qr1) * H_dh + col + e;
            if (z16) { /* rounded as the conversion kernel rounds the fp32 values below */
                if (qr0 < L) *(uint32_t *)((uint16_t *)z + at0) = ss_pack_bf16(c_[0] * inv0, c_[1] * inv0);
                if (qr1 < L) *(uint32_t *)((uint16_t *)z + at1) = ss_pack_bf16(c_[2] * inv1, c_[3] * inv1);
            } else {
                if (qr0 < L) *(float2 *)((float *)z + at0) = make_float2(c_[0] * inv0, c_[1] * inv0);
                if (qr1 < L) *(float2 *)((float *)z + at1) = make_float2(c_[2] * inv1, c_[3] * inv1);
            }
        }
    }
}
