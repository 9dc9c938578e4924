/* Masks: interventions on named per-token sites (zero, mean, scale, Gaussian
 * noise, negative noise) for `subscope ablate`, parsed from command-line specs
 * or a JSONL file and applied to packed rows inside a forward hook. */
#ifndef SUBSCOPE_MASKS_H
#define SUBSCOPE_MASKS_H

#include <stdint.h>
#include "subscope/config.h"
#include "subscope/error.h"
#include "subscope/forward.h"
#include "subscope/sites.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The largest noise sigma a mask may ask for: past it the noise leaves float32's range
 * (about 3.4e38) and every metric becomes NaN. Relative sigmas are bounded alike. */
#define SS_MASK_SIGMA_MAX 1e30

typedef enum ss_mask_mode {
    SS_MASK_ZERO, SS_MASK_MEAN, SS_MASK_SCALE, SS_MASK_NOISE, SS_MASK_NEGNOISE,
    SS_MASK_RESAMPLE, /* the value another prompt of the input has at the same unit (see ss_mask_resample_source) */
    SS_MASK_PATCH     /* activation patching: the value the paired prompt (ablate --patch-from) has at the same unit and position */
} ss_mask_mode;

typedef struct ss_mask_target {      /* one site of a mask */
    int site_id;                     /* ss_site id (per-token sites only; hook_pattern refused) */
    int64_t *units;  int64_t n_units;/* indices into the flattened per-token vector, sorted,
                                        distinct; NULL/0 = all */
} ss_mask_target;

typedef struct ss_mask {
    char name[64];
    ss_mask_target *targets; int n_targets;    /* at most one target per site */
    int64_t *positions; int64_t n_positions;   /* token positions, sorted, distinct; NULL/0 = all */
    ss_mask_mode mode;
    double factor;                   /* SCALE: x *= factor, factor in [0,1] */
    double sigma;  int sigma_relative;/* NOISE/NEGNOISE: absolute sigma, or sigma x unit std (needs stats) */
    uint64_t seed;
} ss_mask;

/* "zero", "mean", ... ; NULL for an unknown value. */
const char *ss_mask_mode_name(ss_mask_mode mode);
/* Returns 0 and sets *out for a known name, -1 otherwise. */
int ss_mask_mode_parse(const char *name, ss_mask_mode *out);

/* A command-line mask: SITE or SITE[ITEMS], ITEMS a comma-separated list of
 *   N      a unit (index into the flattened per-token vector)
 *   A-B    units A..B inclusive
 *   head=H a whole head of a q/k/v/z site (units H*d_head .. (H+1)*d_head-1)
 *   pos=P  restricts the mask to token position P (several pos= items: a union)
 * e.g. "blocks.2.mlp.hook_post[17,230,511]", "blocks.1.attn.hook_z[head=3]",
 * "blocks.0.hook_resid_pre" (all units). SITE may be a glob ('*'): the mask
 * then has one target per matching site, each with the same units. Mode zero;
 * name = the spec (cut to 63 bytes). */
ss_status ss_mask_parse_spec(const ss_config *cfg, const char *spec, ss_mask *out);

/* JSONL, one mask per line (blank lines skipped):
 *   {"name", "site" | "sites": [{"site","units","heads"}...], "units", "heads",
 *    "positions", "mode", "factor", "sigma", "relative", "seed"}
 * "units"/"heads" at the top level go with "site"; with "sites" each entry has
 * its own. Omitted: name "line<N>", all units, all positions, mode zero, seed 0.
 * mode scale needs factor in [0,1]; noise/negnoise need sigma >= 0. Unknown
 * keys, duplicate names, names with '/' are errors. Errors name file:line, the
 * mask and the field. */
ss_status ss_masks_read_jsonl(const ss_config *cfg, const char *path, ss_mask **out, int *n);
/* The same, from text in memory (`what` names it in messages). */
ss_status ss_masks_parse_jsonl(const ss_config *cfg, const char *text, size_t len, const char *what,
                               ss_mask **out, int *n);

void ss_mask_free(ss_mask *m);            /* frees the insides */
void ss_masks_free(ss_mask *m, int n);    /* frees the insides and the array */

/* Per-unit statistics a mode may need (MEAN: mean; relative NOISE: std); NULL where not needed.
 * Both are indexed by unit of the site being masked (site->width values). */
typedef struct ss_mask_stats {
    const double *mean;
    const double *std;
    /* RESAMPLE, PATCH: the clean row (site->width floats) that replaces
     * prompt `prompt`'s row at `pos`, or NULL if there is none. */
    const float *(*source_row)(void *ctx, const ss_site *site, int64_t prompt, int64_t pos);
    void *source_ctx;
} ss_mask_stats;

/* RESAMPLE's choice of donor for prompt i of n (n >= 2): another prompt,
 * drawn from the mask's seed, never i itself: (i + 1 + r) mod n with
 * r = mix(seed, i) mod (n - 1) (splitmix64; the header's noise uses the same
 * mixer). The donor's row at the same position is used, or its last row when
 * it is shorter. */
int64_t ss_mask_resample_source(uint64_t seed, int64_t i, int64_t n);

/* What the mask needs from ss_mask_stats at its sites (either pointer may be NULL). */
void ss_mask_needs_stats(const ss_mask *m, int *need_mean, int *need_std);

/* Applies the mask's targets at site `site` to packed rows: data rows r at
 * data + r*ld (width site->width), sequences as in ss_packing (positions are
 * within each sequence). prompt_index[q] is the global index of sequence q
 * (NULL: q itself); the noise depends only on seed, prompt index, position,
 * site and unit (ss_mask_noise), never on batching. Targets for other sites
 * are ignored. Missing stats for mean/relative modes are SS_ERR_ARG naming the
 * mask, the site and what is missing. */
ss_status ss_mask_apply(const ss_mask *m, const ss_site *site, float *data, int64_t ld, const ss_packing *pk,
                        const int64_t *prompt_index, const ss_mask_stats *st);

/* 1 if the mask touches site id. */
int ss_mask_touches(const ss_mask *m, int site_id);

/* The standard normal draw used by NOISE/NEGNOISE, defined so that any
 * backend can reproduce it:
 *   k  = mix(mix(mix(mix(mix(seed) ^ prompt) ^ position) ^ site) ^ unit)
 *   a  = mix(k ^ 0x9E3779B97F4A7C15), b = mix(k ^ 0xBF58476D1CE4E5B9)
 *   u1 = ((a >> 11) + 1) * 2^-53  in (0,1],  u2 = (b >> 11) * 2^-53  in [0,1)
 *   z  = sqrt(-2 ln u1) * cos(2 pi u2)
 * where mix(x) is the splitmix64 finaliser of x + 0x9E3779B97F4A7C15 and the
 * integers are cast to uint64_t. NOISE: x + sigma*z; NEGNOISE with n = |sigma*z|:
 * x > 0 -> max(x - n, 0), x < 0 -> min(x + n, 0), computed in double, rounded
 * to float once. */
double ss_mask_noise(uint64_t seed, int64_t prompt, int64_t position, int site_id, int64_t unit);

#ifdef __cplusplus
}
#endif
#endif
