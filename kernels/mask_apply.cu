/* Masks on device rows: what ss_mask_apply (src/sites/masks.c) does on the
 * host, for ablate's masked forwards, so a masked site no longer makes a
 * round trip through host memory.
 *
 * Design: one block of 128 threads per (sequence, position slot): block b
 * takes sequence b / max_slots and its slot b % max_slots (the slot-th
 * listed position, or position = slot when the mask covers all); its
 * threads stride over the mask's units (a sorted list, or all width units).
 * Blocks whose sequence has no mask, or whose slot is past the mask's
 * positions or the sequence's length, exit at once. Each element is written
 * by one thread and depends only on its own value, so there is no
 * synchronisation and the result is deterministic.
 *
 * Arithmetic is the host's, operation for operation: scale is
 * (float)((double)x * factor); mean stores (float)mean[u]; noise adds
 * sigma * z in double and rounds once, z from the same splitmix64 counter
 * and Box-Muller draw as ss_mask_noise; negnoise moves toward zero by |n|
 * and stops at zero. Products and sums use __dmul_rn/__dadd_rn so nvcc
 * cannot fuse them into an FMA (which would round differently from the
 * host). Identity settings (factor 1, sigma 0, a unit whose relative sigma
 * is 0) leave the data untouched bit for bit, as on the host (-0.0 + 0.0
 * would give +0.0). Under emulation log/cos/sqrt are the host libm's, so the
 * noise is bitwise the host's; on a GPU CUDA's double log and cos (1-2 ulp)
 * can move z in its last bits, which changes the float result only when it
 * lies within ~1e-16 of a rounding boundary (kernel_check allows one ulp).
 *
 * Limits: n_seq * max_slots < 2^31 blocks. */
#include "ss_cuda.cuh"

#define MASK_THREADS 128

#define MASK_DMUL(a, b) __dmul_rn((a), (b)) /* (the emulation defines both as the plain operators) */
#define MASK_DADD(a, b) __dadd_rn((a), (b))

SS_DEV uint64_t mask_mix64(uint64_t z) { /* splitmix64's finaliser, as ss_mask_noise's mix */
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* ss_mask_noise: one standard normal draw per (seed, prompt, position, site, unit). */
SS_DEV double mask_noise(uint64_t seed, int64_t prompt, int64_t position, int site_id, int64_t unit) {
    uint64_t k = mask_mix64(seed);
    k = mask_mix64(k ^ (uint64_t)prompt);
    k = mask_mix64(k ^ (uint64_t)position);
    k = mask_mix64(k ^ (uint64_t)(int64_t)site_id);
    k = mask_mix64(k ^ (uint64_t)unit);
    uint64_t a = mask_mix64(k ^ 0x9E3779B97F4A7C15ull), b = mask_mix64(k ^ 0xBF58476D1CE4E5B9ull);
    const double two53 = 1.0 / 9007199254740992.0;
    double u1 = MASK_DMUL((double)((a >> 11) + 1), two53), u2 = MASK_DMUL((double)(b >> 11), two53);
    const double two_pi = 6.283185307179586476925286766559;
    return MASK_DMUL(sqrt(MASK_DMUL(-2.0, log(u1))), cos(MASK_DMUL(two_pi, u2)));
}

SS_KERNEL(ss_k_mask_apply, (float *, data), (int64_t, ld), (int64_t, width), (int, site_id),
          (const ss_cuda_mask_op *, ops), (const int64_t *, idx), (const double *, vals), (int64_t, n_seq),
          (const int64_t *, seq), (int64_t, max_slots)) {
    int64_t b = (int64_t)blockIdx.x, q = b / max_slots, slot = b % max_slots;
    int64_t opi = seq[3 * n_seq + q];
    if (opi < 0) return;
    const ss_cuda_mask_op *op = &ops[opi];
    int mode = op->mode;
    if (mode < 0) return;
    if (mode == 2 && op->factor == 1.0) return;
    const int noisy = mode == 3 || mode == 4;
    if (noisy && op->sigma == 0.0) return;
    int64_t len = seq[n_seq + q];
    if (op->n_positions && slot >= op->n_positions) return;
    int64_t pos = op->n_positions ? idx[op->positions + slot] : slot;
    if (pos >= len) return;
    int64_t prompt = seq[2 * n_seq + q];
    float *row = data + (seq[q] + pos) * ld;
    const int64_t nu = op->n_units ? op->n_units : width;
    const int64_t *units = op->n_units ? idx + op->units : NULL;
    const double *mean = op->mean >= 0 ? vals + op->mean : NULL;
    const double *sd = noisy && op->relative && op->std >= 0 ? vals + op->std : NULL;
    for (int64_t ui = threadIdx.x; ui < nu; ui += blockDim.x) {
        int64_t u = units ? units[ui] : ui;
        float *x = &row[u];
        if (mode == 0) *x = 0.0f;
        else if (mode == 1) *x = (float)mean[u];
        else if (mode == 2) *x = (float)MASK_DMUL((double)*x, op->factor);
        else {
            double s = sd ? MASK_DMUL(op->sigma, sd[u]) : op->sigma;
            if (s == 0.0) continue;
            double n = MASK_DMUL(s, mask_noise(op->seed, prompt, pos, site_id, u));
            float v = *x;
            if (mode == 3) *x = (float)MASK_DADD((double)v, n);
            else if (v > 0) *x = (float)fmax(MASK_DADD((double)v, -fabs(n)), 0.0);
            else if (v < 0) *x = (float)fmin(MASK_DADD((double)v, fabs(n)), 0.0);
        }
    }
}

SS_EXTERN_C int ss_cuda_mask_apply(float *data, int64_t ld, int64_t width, int site_id, const ss_cuda_mask_op *ops,
                                   const int64_t *idx, const double *vals, int64_t n_seq, const int64_t *seq,
                                   int64_t max_slots, cudaStream_t stream) {
    if (n_seq <= 0 || max_slots <= 0 || width <= 0) return 0;
    if (ld < width || n_seq > 0x7fffffff / max_slots) return 1;
    SS_LAUNCH(ss_k_mask_apply, n_seq * max_slots, MASK_THREADS, 0, stream, data, ld, width, site_id, ops, idx, vals,
              n_seq, seq, max_slots);
    return SS_LAUNCH_STATUS();
}
