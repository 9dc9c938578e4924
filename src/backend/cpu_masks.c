/* The CPU backend's mask ops (ss_backend.mask_program_create/apply_masks)
 * and the validation every backend shares. The arithmetic is
 * ss_mask_apply's (src/sites/masks.c) operation for operation (the noise
 * is the shared ss_keyed_normal of src/util); it is restated here rather
 * than called because the backend layer sits below the sites layer
 * (docs: DESIGN.md, "Layers"). tests/unit/test_mask_kernel.c holds this,
 * the kernel and ss_mask_apply to bitwise equality. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_internal.h"
#include "subscope/util.h"

/* What a CPU ss_mask_program points to (each backend has its own). */
typedef struct cpu_prog {
    ss_backend_mask *m;
    int n, site_id;
    int64_t width;
    void *pool;                     /* the copied lists and statistics */
} cpu_prog;

ss_status ss_backend_masks_check(const ss_backend *be, const ss_backend_mask *masks, int n, int64_t width) {
    if (n < 0 || width < 1) return ss_errorf(SS_ERR_ARG, "%s: mask program of %d masks over %lld units", be->name, n,
                                             (long long)width);
    for (int k = 0; k < n; k++) {
        const ss_backend_mask *m = &masks[k];
        if (m->mode < SS_BMASK_NONE || m->mode > SS_BMASK_NEGNOISE)
            return ss_errorf(SS_ERR_ARG, "%s: mask %d: mode %d is not one a backend applies (zero, mean, scale, noise, "
                             "negnoise)", be->name, k, m->mode);
        if (m->mode == SS_BMASK_NONE) continue;
        if (m->n_units < 0 || (m->n_units && !m->units) || m->n_positions < 0 || (m->n_positions && !m->positions))
            return ss_errorf(SS_ERR_ARG, "%s: mask %d: unit or position list missing", be->name, k);
        for (int64_t i = 0; i < m->n_units; i++)
            if (m->units[i] < 0 || m->units[i] >= width || (i && m->units[i] <= m->units[i - 1]))
                return ss_errorf(SS_ERR_ARG, "%s: mask %d: unit %lld out of range or out of order (width %lld)",
                                 be->name, k, (long long)m->units[i], (long long)width);
        for (int64_t i = 0; i < m->n_positions; i++)
            if (m->positions[i] < 0 || (i && m->positions[i] <= m->positions[i - 1]))
                return ss_errorf(SS_ERR_ARG, "%s: mask %d: position %lld negative or out of order", be->name, k,
                                 (long long)m->positions[i]);
        if (m->mode == SS_BMASK_MEAN && !m->mean)
            return ss_errorf(SS_ERR_ARG, "%s: mask %d: mode mean without the per-unit means", be->name, k);
        if ((m->mode == SS_BMASK_NOISE || m->mode == SS_BMASK_NEGNOISE) && m->sigma_relative && !m->std)
            return ss_errorf(SS_ERR_ARG, "%s: mask %d: relative noise without the per-unit standard deviations",
                             be->name, k);
    }
    return SS_OK;
}

ss_status ss_backend_masks_check_seqs(const ss_backend *be, int n_masks, int64_t ld, int64_t width, int64_t rows,
                                      int64_t n_seq, const int64_t *start, const int64_t *len, const int32_t *which) {
    if (ld < width) return ss_errorf(SS_ERR_INTERNAL, "%s: masks: row stride %lld < width %lld", be->name,
                                     (long long)ld, (long long)width);
    for (int64_t q = 0; q < n_seq; q++) {
        if (start[q] < 0 || len[q] < 0 || start[q] > rows - len[q])
            return ss_errorf(SS_ERR_INTERNAL, "%s: masks: sequence %lld lies outside the %lld rows", be->name,
                             (long long)q, (long long)rows);
        if (which[q] < -1 || which[q] >= n_masks)
            return ss_errorf(SS_ERR_INTERNAL, "%s: masks: sequence %lld asks for mask %d of %d", be->name,
                             (long long)q, which[q], n_masks);
    }
    return SS_OK;
}

ss_status ss_cpu_mask_program_create(const ss_backend *be, const ss_backend_mask *masks, int n, int site_id,
                                         int64_t width, ss_mask_program **out) {
    *out = NULL;
    SS_TRY(ss_backend_masks_check(be, masks, n, width));
    size_t bytes = 0;
    for (int k = 0; k < n; k++)
        bytes += (size_t)(masks[k].n_units + masks[k].n_positions) * sizeof(int64_t) +
                 (size_t)((masks[k].mean ? width : 0) + (masks[k].std ? width : 0)) * sizeof(double);
    cpu_prog *p = ss_calloc(1, sizeof *p, "mask program");
    if (p) p->m = ss_malloc((size_t)(n ? n : 1) * sizeof *p->m, "mask program");
    if (p && p->m) p->pool = ss_malloc(bytes + 1, "mask program");
    if (!p || !p->m || !p->pool) {
        if (p) free(p->m);
        free(p);
        return SS_ERR_NOMEM;
    }
    /* doubles first: they need the stricter alignment */
    char *o = p->pool;
    for (int k = 0; k < n; k++) {
        ss_backend_mask *m = &p->m[k];
        *m = masks[k];
        if (m->mean) m->mean = memcpy(o, masks[k].mean, (size_t)width * sizeof(double)), o += width * sizeof(double);
        if (m->std) m->std = memcpy(o, masks[k].std, (size_t)width * sizeof(double)), o += width * sizeof(double);
    }
    for (int k = 0; k < n; k++) {
        ss_backend_mask *m = &p->m[k];
        if (m->n_units) m->units = memcpy(o, masks[k].units, (size_t)m->n_units * sizeof(int64_t)), o += m->n_units * sizeof(int64_t);
        if (m->n_positions)
            m->positions = memcpy(o, masks[k].positions, (size_t)m->n_positions * sizeof(int64_t)),
            o += m->n_positions * sizeof(int64_t);
    }
    p->n = n;
    p->site_id = site_id;
    p->width = width;
    *out = (ss_mask_program *)p;
    return SS_OK;
}

void ss_cpu_mask_program_free(const ss_backend *be, ss_mask_program *prog) {
    cpu_prog *p = (cpu_prog *)prog;
    if (!p) return;
    free(p->m);
    free(p->pool);
    free(p);
}

ss_status ss_cpu_apply_masks(const ss_backend *be, const ss_mask_program *prog, float *data, int64_t ld, int64_t rows,
                                 int64_t n_seq, const int64_t *start, const int64_t *len, const int64_t *prompt,
                                 const int32_t *which) {
    const cpu_prog *p = (const cpu_prog *)prog;
    SS_TRY(ss_backend_masks_check_seqs(be, p->n, ld, p->width, rows, n_seq, start, len, which));
    for (int64_t q = 0; q < n_seq; q++) {
        if (which[q] < 0) continue;
        const ss_backend_mask *m = &p->m[which[q]];
        const int noisy = m->mode == SS_BMASK_NOISE || m->mode == SS_BMASK_NEGNOISE;
        if (m->mode == SS_BMASK_NONE || (m->mode == SS_BMASK_SCALE && m->factor == 1.0) || (noisy && m->sigma == 0.0))
            continue; /* identities: not a bit changes */
        const double *sd = noisy && m->sigma_relative ? m->std : NULL;
        int64_t L = len[q], np = m->n_positions ? m->n_positions : L, nu = m->n_units ? m->n_units : p->width;
        for (int64_t pi = 0; pi < np; pi++) {
            int64_t pos = m->n_positions ? m->positions[pi] : pi;
            if (pos >= L) break; /* positions are sorted */
            float *row = data + (start[q] + pos) * ld;
            for (int64_t ui = 0; ui < nu; ui++) {
                int64_t u = m->n_units ? m->units[ui] : ui;
                float *x = &row[u];
                switch (m->mode) {
                case SS_BMASK_ZERO: *x = 0.0f; break;
                case SS_BMASK_MEAN: *x = (float)m->mean[u]; break;
                case SS_BMASK_SCALE: *x = (float)((double)*x * m->factor); break;
                default: {
                    double s = sd ? m->sigma * sd[u] : m->sigma;
                    if (s == 0.0) break;
                    double n = s * ss_keyed_normal(m->seed, prompt[q], pos, p->site_id, u);
                    if (m->mode == SS_BMASK_NOISE) *x = (float)((double)*x + n);
                    else if (*x > 0) *x = (float)fmax((double)*x - fabs(n), 0.0);
                    else if (*x < 0) *x = (float)fmin((double)*x + fabs(n), 0.0);
                }
                }
            }
        }
    }
    return SS_OK;
}
