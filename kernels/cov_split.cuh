/* The shape of a covariance update (cov_lower.cu, cov_lower_tc.cu): both
 * kernels multiply centred rows that ss_cuda_cov_center wrote once into a
 * workspace (rows padded with zeros to a multiple of the step, each row ldw
 * values, a multiple of 16 bytes, zeros after d), in T x T tiles on or below
 * the diagonal, `step` rows at a time. Where there are too few tiles to fill
 * the GPU (small d), the steps are split over blockIdx.y: split s writes its
 * partial triangle (d x d) after the rows in the workspace, and
 * ss_cuda_cov_sum_splits adds the partials in split order (deterministic).
 * The split count depends on n, d and the kernel only, never on the device,
 * so a result is the same on every GPU and under the emulation. */
#ifndef SS_COV_SPLIT_CUH
#define SS_COV_SPLIT_CUH
/* (after ss_cuda.cuh and mma.cuh) */

typedef struct {
    int64_t ldw;               /* values per workspace row */
    int64_t steps, steps_per;  /* steps of the whole batch, and of one split */
    int64_t splits, tiles;     /* blockIdx.y and blockIdx.x extents */
    size_t xc_bytes, part_bytes; /* the workspace: centred rows, then the partial triangles */
} ss_cov_plan;

/* T: tile edge; step: rows per step; esize: bytes per centred value; fill:
 * the blocks to aim for, each split keeping at least min_steps steps; the
 * partial triangles are held to 2^26 floats (256 MB) unless one split each
 * would already exceed that. */
static inline ss_cov_plan ss_cov_plan_of(int64_t n, int64_t d, int64_t T, int64_t step, int64_t esize, int64_t fill,
                                         int64_t min_steps) {
    ss_cov_plan p;
    const int64_t tt = ss_cdiv(d, T), per16 = 16 / esize;
    p.tiles = tt * (tt + 1) / 2;
    p.ldw = ss_cdiv(d, per16) * per16;
    p.steps = ss_cdiv(n, step);
    int64_t s = ss_cdiv(fill, p.tiles), most = p.steps / min_steps, room = ((int64_t)1 << 26) / (d * d);
    if (s > most) s = most;
    if (s > room) s = room;
    if (s < 1) s = 1;
    p.steps_per = p.steps ? ss_cdiv(p.steps, s) : 1;
    p.splits = p.steps ? ss_cdiv(p.steps, p.steps_per) : 1;
    p.xc_bytes = (size_t)ss_cdiv(p.steps * step * p.ldw * esize, 256) * 256;
    p.part_bytes = p.splits > 1 ? (size_t)(p.splits * d * d) * sizeof(float) : 0;
    return p;
}

/* Block (blockIdx.x, blockIdx.y) -> its tile's first row i0 and column j0
 * of C (i0 >= j0; linear block index b = ti(ti+1)/2 + tj) and its split's
 * steps: k_first and how many (nk). */
SS_DEV void ss_cov_block(int64_t T, int64_t steps, int64_t steps_per, int64_t *i0, int64_t *j0, int64_t *k_first,
                         int64_t *nk) {
    const int64_t b = blockIdx.x;
    int64_t ti = (int64_t)((sqrt(8.0 * (double)b + 1.0) - 1.0) * 0.5);
    while (ti * (ti + 1) / 2 > b) ti--;
    while ((ti + 1) * (ti + 2) / 2 <= b) ti++;
    *i0 = ti * T, *j0 = (b - ti * (ti + 1) / 2) * T;
    *k_first = (int64_t)blockIdx.y * steps_per;
    *nk = SS_MIN(steps, *k_first + steps_per) - *k_first;
}

/* The cp.async pipeline of the covariance kernels, whose LOAD(step, stage)
 * copies one step's strips and commits them as one group: before the loop
 * the first stages - 1 steps; at step it, after its wait and barrier, step
 * it + stages - 1 into the stage that step it - 1 used. A step past nk
 * commits an empty group, which keeps the count the waits rely on. */
#define SS_COV_PIPE_FILL(stages, nk, LOAD)                            \
    do {                                                              \
        SS_UNROLL                                                     \
        for (int st_ = 0; st_ < (stages)-1; st_++) {                  \
            if (st_ < (nk)) LOAD(st_, st_);                           \
            else ss_cp_async_commit();                                \
        }                                                             \
    } while (0)
#define SS_COV_PIPE_NEXT(stages, it, nk, LOAD)                                             \
    do {                                                                                   \
        if ((it) + (stages)-1 < (nk)) LOAD((it) + (stages)-1, ((it) + (stages)-1) % (stages)); \
        else ss_cp_async_commit();                                                         \
    } while (0)

#endif
