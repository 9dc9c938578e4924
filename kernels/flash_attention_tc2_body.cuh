/* The body of the second tensor-core attention kernel (flash_attention_tc2.cu),
 * included once per head size TC_DH (64, 128) with its key tile TC_BC under
 * the name TC_NAME (the include stands in for a template, as in
 * flash_attention_tc_body.cuh, whose softmax and products it repeats; what
 * differs is how K and V reach shared memory and the fragments). */
#define SS_TC2_KERNEL_(name, ...) SS_KERNEL(name, __VA_ARGS__)

SS_TC2_KERNEL_(TC_NAME, (float *, z), (const float *, q), (const float *, k), (const float *, v), (int64_t, ld),
               (const int64_t *, start), (const int64_t *, len), (int64_t, n_qt), (int, group), (float, scale)) {
    /* K as [key][dh], V transposed as [dh][key], both bf16 with padded rows,
     * so that every fragment register is one 32-bit load from 32 banks */
    enum { SK = TC_DH + TC_PAD, SV = TC_BC + TC_PAD, QUADS = TC_DH / 4, NF = TC_BC * QUADS / TC2_THREADS };
    /* declared as words: the 32-bit accesses below need 4-byte alignment */
    __shared__ uint32_t Ks_w[TC_BC * SK / 2], Vt_w[TC_DH * SV / 2];
    uint16_t *Ks = (uint16_t *)Ks_w, *Vt = (uint16_t *)Vt_w;
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
    const int64_t s = blockIdx.x / n_qt, q0 = (blockIdx.x % n_qt) * TC2_BR;
    const int64_t L = len[s], r0 = start[s], h = blockIdx.y, H = gridDim.y;
    if (q0 >= L) return; /* the whole block leaves together */
    const int64_t col = h * TC_DH, kcol = (h / group) * TC_DH;
    const int64_t qr0 = q0 + 16 * w + g, qr1 = qr0 + 8, last_row = q0 + 16 * w + 15;

    uint32_t qa[TC_DH / 16][4];
    SS_UNROLL
    for (int ks = 0; ks < TC_DH / 16; ks++) {
        SS_UNROLL
        for (int hh = 0; hh < 2; hh++) {
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

    /* This thread's share of a tile: float4 number threadIdx.x + TC2_THREADS*i
     * of K's and of V's, key f / QUADS, columns 4 (f % QUADS) .. +3. The next
     * tile's loads are issued before the current tile's products, so their
     * latency hides behind the mma work. */
    float4 kf[NF], vf[NF];
    const int64_t kv_end = SS_MIN(L, q0 + TC2_BR);
    SS_UNROLL
    for (int i = 0; i < NF; i++) {
        const int f = (int)threadIdx.x + TC2_THREADS * i, key = f / QUADS, e = 4 * (f % QUADS);
        kf[i] = vf[i] = make_float4(0.f, 0.f, 0.f, 0.f);
        if (key < kv_end) {
            kf[i] = *(const float4 *)(k + (r0 + key) * ld + kcol + e);
            vf[i] = *(const float4 *)(v + (r0 + key) * ld + kcol + e);
        }
    }
    for (int64_t j0 = 0; j0 < kv_end; j0 += TC_BC) {
        __syncthreads(); /* the previous tiles are no longer read */
        SS_UNROLL
        for (int i = 0; i < NF; i++) {
            const int f = (int)threadIdx.x + TC2_THREADS * i, key = f / QUADS, e = 4 * (f % QUADS);
            uint32_t *kd = (uint32_t *)(Ks + key * SK + e);
            kd[0] = ss_pack_bf16(kf[i].x, kf[i].y);
            kd[1] = ss_pack_bf16(kf[i].z, kf[i].w);
            Vt[(e + 0) * SV + key] = __bfloat16_as_ushort(__float2bfloat16_rn(vf[i].x));
            Vt[(e + 1) * SV + key] = __bfloat16_as_ushort(__float2bfloat16_rn(vf[i].y));
            Vt[(e + 2) * SV + key] = __bfloat16_as_ushort(__float2bfloat16_rn(vf[i].z));
            Vt[(e + 3) * SV + key] = __bfloat16_as_ushort(__float2bfloat16_rn(vf[i].w));
        }
        __syncthreads();
        const int64_t jn = j0 + TC_BC;
        SS_UNROLL
        for (int i = 0; i < NF; i++) { /* the next tile, zeros past the visible keys */
            const int f = (int)threadIdx.x + TC2_THREADS * i, key = f / QUADS, e = 4 * (f % QUADS);
            kf[i] = vf[i] = make_float4(0.f, 0.f, 0.f, 0.f);
            if (jn + key < kv_end) {
                kf[i] = *(const float4 *)(k + (r0 + jn + key) * ld + kcol + e);
                vf[i] = *(const float4 *)(v + (r0 + jn + key) * ld + kcol + e);
            }
        }
        if (j0 > last_row) continue; /* every key of the tile is in this warp's future */
        float sc[TC_BC / 8][4];
        SS_UNROLL
        for (int nt = 0; nt < TC_BC / 8; nt++) {
            sc[nt][0] = sc[nt][1] = sc[nt][2] = sc[nt][3] = 0.f;
            const uint16_t *kr = Ks + (8 * nt + g) * SK + 2 * t;
            SS_UNROLL
            for (int ks = 0; ks < TC_DH / 16; ks++) {
                uint32_t kb[2];
                kb[0] = *(const uint32_t *)(kr + 16 * ks);
                kb[1] = *(const uint32_t *)(kr + 16 * ks + 8);
                ss_mma_bf16_16816(sc[nt], qa[ks], kb);
            }
        }
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
        SS_UNROLL
        for (int kk = 0; kk < TC_BC / 16; kk++) {
            uint32_t pa[4];
            pa[0] = ss_pack_bf16(sc[2 * kk][0], sc[2 * kk][1]);
            pa[1] = ss_pack_bf16(sc[2 * kk][2], sc[2 * kk][3]);
            pa[2] = ss_pack_bf16(sc[2 * kk + 1][0], sc[2 * kk + 1][1]);
            pa[3] = ss_pack_bf16(sc[2 * kk + 1][2], sc[2 * kk + 1][3]);
            const uint16_t *vr = Vt + g * SV + 16 * kk + 2 * t;
            SS_UNROLL
            for (int dn = 0; dn < TC_DH / 8; dn++) {
                uint32_t vb[2];
                vb[0] = *(const uint32_t *)(vr + 8 * dn * SV);
                vb[1] = *(const uint32_t *)(vr + 8 * dn * SV + 8);
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
