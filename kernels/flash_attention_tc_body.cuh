/* The body of the tensor-core attention kernel (flash_attention_tc.cu),
 * included once per head size TC_DH (64, 128) under the name TC_NAME: the
 * kernels are C under the emulation, so the include stands in for a template
 * (the fragment arrays need compile-time sizes to stay in registers). */
#define SS_TC_KERNEL_(name, ...) SS_KERNEL(name, __VA_ARGS__)

SS_TC_KERNEL_(TC_NAME, (float *, z), (const float *, q), (const float *, k), (const float *, v), (int64_t, ld),
              (const int64_t *, start), (const int64_t *, len), (int64_t, n_qt), (int, group), (float, scale)) {
    __shared__ uint16_t Ks[TC_BC * (TC_DH + TC_PAD)];
    __shared__ uint16_t Vs[TC_BC * (TC_DH + TC_PAD)];
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
    const int sk = TC_DH + TC_PAD;
    const int64_t s = blockIdx.x / n_qt, q0 = (blockIdx.x % n_qt) * TC_BR;
    const int64_t L = len[s], r0 = start[s], h = blockIdx.y, H = gridDim.y;
    if (q0 >= L) return; /* the whole block leaves together */
    const int64_t col = h * TC_DH, kcol = (h / group) * TC_DH;
    /* this thread's two query rows (of the warp's 16), as sequence positions */
    const int64_t qr0 = q0 + 16 * w + g, qr1 = qr0 + 8;

    /* Q fragments, scaled and rounded to bf16 once: qa[ks] covers dh 16ks..16ks+15 */
    uint32_t qa[TC_DH / 16][4];
    SS_UNROLL
    for (int ks = 0; ks < TC_DH / 16; ks++) {
        SS_UNROLL
        for (int hh = 0; hh < 2; hh++) { /* columns 16ks + 2t (+8 for hh = 1) */
            const int e = 16 * ks + 2 * t + 8 * hh;
            float x00 = 0.f, x01 = 0.f, x10 = 0.f, x11 = 0.f;
            if (qr0 < L) x00 = q[(r0 + qr0) * ld + col + e] * scale, x01 = q[(r0 + qr0) * ld + col + e + 1] * scale;
            if (qr1 < L) x10 = q[(r0 + qr1) * ld + col + e] * scale, x11 = q[(r0 + qr1) * ld + col + e + 1] * scale;
            qa[ks][2 * hh] = ss_pack_bf16(x00, x01);
            qa[ks][2 * hh + 1] = ss_pack_bf16(x10, x11);
        }
    }
    float o[TC_DH / 8][4];
    SS_UNROLL
    for (int dn = 0; dn < TC_DH / 8; dn++) o[dn][0] = o[dn][1] = o[dn][2] = o[dn][3] = 0.f;
    float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.f, l1 = 0.f;

    const int64_t kv_end = SS_MIN(L, q0 + TC_BR); /* keys 0..kv_end-1 are visible to some row of the block */
    for (int64_t j0 = 0; j0 < kv_end; j0 += TC_BC) {
        const int64_t nk = SS_MIN((int64_t)TC_BC, kv_end - j0);
        __syncthreads(); /* the previous tiles are no longer read */
        /* 8 elements of K and of V in flight per thread at a time: a plain
         * loop of load, convert, store waited out a full memory latency per
         * element (32 per tile; the H100 profile's 1.25 ms a layer) */
        for (int c0 = 0; c0 < TC_BC * TC_DH / TC_THREADS; c0 += 8) {
            float kx[8], vx[8];
            SS_UNROLL
            for (int u = 0; u < 8; u++) {
                const int idx = (int)threadIdx.x + TC_THREADS * (c0 + u), i = idx / TC_DH, e = idx - i * TC_DH;
                kx[u] = vx[u] = 0.f;
                if (i < nk) kx[u] = k[(r0 + j0 + i) * ld + kcol + e], vx[u] = v[(r0 + j0 + i) * ld + kcol + e];
            }
            SS_UNROLL
            for (int u = 0; u < 8; u++) {
                const int idx = (int)threadIdx.x + TC_THREADS * (c0 + u), i = idx / TC_DH, e = idx - i * TC_DH;
                Ks[i * sk + e] = __bfloat16_as_ushort(__float2bfloat16_rn(kx[u]));
                Vs[i * sk + e] = __bfloat16_as_ushort(__float2bfloat16_rn(vx[u]));
            }
        }
        __syncthreads();
        /* S = Q K^T for the warp's 16 rows and the tile's TC_BC keys: 8-key tiles */
        float sc[TC_BC / 8][4];
        SS_UNROLL
        for (int nt = 0; nt < TC_BC / 8; nt++) {
            sc[nt][0] = sc[nt][1] = sc[nt][2] = sc[nt][3] = 0.f;
            const uint16_t *kr = Ks + (8 * nt + g) * sk + 2 * t;
            SS_UNROLL
            for (int ks = 0; ks < TC_DH / 16; ks++) {
                uint32_t kb[2];
                kb[0] = (uint32_t)kr[16 * ks] | ((uint32_t)kr[16 * ks + 1] << 16);
                kb[1] = (uint32_t)kr[16 * ks + 8] | ((uint32_t)kr[16 * ks + 9] << 16);
                ss_mma_bf16_16816(sc[nt], qa[ks], kb);
            }
        }
        /* causal mask and the online softmax of rows qr0 (c[0..1]) and qr1 (c[2..3]) */
        float mx0 = -INFINITY, mx1 = -INFINITY;
        SS_UNROLL
        for (int nt = 0; nt < TC_BC / 8; nt++)
            SS_UNROLL
            for (int i = 0; i < 4; i++) {
                const int64_t key = j0 + 8 * nt + 2 * t + (i & 1), row = i < 2 ? qr0 : qr1;
                if (key > row || key >= L) sc[nt][i] = -INFINITY;
                if (i < 2) mx0 = fmaxf(mx0, sc[nt][i]);
                else mx1 = fmaxf(mx1, sc[nt][i]);
            }
        /* the four lanes of a row group hold the row's 64 scores */
        mx0 = fmaxf(mx0, __shfl_xor_sync(SS_FULL_MASK, mx0, 1));
        mx0 = fmaxf(mx0, __shfl_xor_sync(SS_FULL_MASK, mx0, 2));
        mx1 = fmaxf(mx1, __shfl_xor_sync(SS_FULL_MASK, mx1, 1));
        mx1 = fmaxf(mx1, __shfl_xor_sync(SS_FULL_MASK, mx1, 2));
        const float mn0 = fmaxf(m0, mx0), mn1 = fmaxf(m1, mx1);
        const float al0 = mn0 == -INFINITY ? 1.f : expf(m0 - mn0), al1 = mn1 == -INFINITY ? 1.f : expf(m1 - mn1);
        float sum0 = 0.f, sum1 = 0.f;
        SS_UNROLL
        for (int nt = 0; nt < TC_BC / 8; nt++)
            SS_UNROLL
            for (int i = 0; i < 4; i++) {
                const float mn = i < 2 ? mn0 : mn1;
                const float p = sc[nt][i] == -INFINITY ? 0.f : expf(sc[nt][i] - mn);
                sc[nt][i] = p;
                if (i < 2) sum0 += p;
                else sum1 += p;
            }
        sum0 += __shfl_xor_sync(SS_FULL_MASK, sum0, 1);
        sum0 += __shfl_xor_sync(SS_FULL_MASK, sum0, 2);
        sum1 += __shfl_xor_sync(SS_FULL_MASK, sum1, 1);
        sum1 += __shfl_xor_sync(SS_FULL_MASK, sum1, 2);
        l0 = l0 * al0 + sum0, l1 = l1 * al1 + sum1;
        m0 = mn0, m1 = mn1;
        SS_UNROLL
        for (int dn = 0; dn < TC_DH / 8; dn++) o[dn][0] *= al0, o[dn][1] *= al0, o[dn][2] *= al1, o[dn][3] *= al1;
        /* O += P V: P's accumulator layout is the A layout of the next product */
        SS_UNROLL
        for (int kk = 0; kk < TC_BC / 16; kk++) {
            uint32_t pa[4];
            pa[0] = ss_pack_bf16(sc[2 * kk][0], sc[2 * kk][1]);
            pa[1] = ss_pack_bf16(sc[2 * kk][2], sc[2 * kk][3]);
            pa[2] = ss_pack_bf16(sc[2 * kk + 1][0], sc[2 * kk + 1][1]);
            pa[3] = ss_pack_bf16(sc[2 * kk + 1][2], sc[2 * kk + 1][3]);
            const uint16_t *vr = Vs + (16 * kk + 2 * t) * sk + g;
            SS_UNROLL
            for (int dn = 0; dn < TC_DH / 8; dn++) {
                uint32_t vb[2];
                vb[0] = (uint32_t)vr[8 * dn] | ((uint32_t)vr[sk + 8 * dn] << 16);
                vb[1] = (uint32_t)vr[8 * sk + 8 * dn] | ((uint32_t)vr[9 * sk + 8 * dn] << 16);
                ss_mma_bf16_16816(o[dn], pa, vb);
            }
        }
    }
    const float inv0 = 1.f / l0, inv1 = 1.f / l1;
    SS_UNROLL
    for (int dn = 0; dn < TC_DH / 8; dn++) {
        const int e = 8 * dn + 2 * t;
        if (qr0 < L) {
            float *zr = z + (r0 + qr0) * (H * TC_DH) + col + e;
            zr[0] = o[dn][0] * inv0, zr[1] = o[dn][1] * inv0;
        }
        if (qr1 < L) {
            float *zr = z + (r0 + qr1) * (H * TC_DH) + col + e;
            zr[0] = o[dn][2] * inv1, zr[1] = o[dn][3] * inv1;
        }
    }
}
