/* Sub-model discovery: groups of units found from the statistics `collect`
 * writes (and optionally the attributions `attribute` writes), exported as
 * HDF5 and as masks `ablate --masks` reads.
 *
 * Two ways of finding them:
 *  - cluster: average-linkage agglomerative clustering of one site's units on
 *    their correlation, with a cap on the cluster size (about --fraction of
 *    the site's units) and a floor on the average correlation of a merge;
 *  - contrast: the units whose standardized mean difference (Cohen's d)
 *    between two labels' statistics is largest. */
#ifndef SUBSCOPE_DISCOVER_H
#define SUBSCOPE_DISCOVER_H

#include <stdint.h>
#include <stdio.h>
#include "subscope/error.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Average-linkage clustering of d units from their correlation matrix corr
 * [d,d] (symmetric, row-major). The similarity of two clusters is the mean
 * correlation over all pairs of their members; the most similar pair is
 * merged first (ties: lowest indices) as long as the merged cluster has at
 * most max_size units and the pair's similarity is above min_corr.
 * Units whose diagonal entry is not finite (zero variance: NaN) are left out
 * (label -1); NaN entries between two kept units count as 0.
 * label[d] receives cluster numbers 0..*n_clusters-1, numbered in the order
 * of each cluster's lowest unit; clusters of one unit are included.
 * Deterministic: no random numbers are involved. */
ss_status ss_cluster_corr(const double *corr, int64_t d, int64_t max_size, double min_corr, int64_t *label,
                          int64_t *n_clusters);

/* Mean pairwise correlation within the n units idx (the cluster's cohesion;
 * NaN entries count as 0), and, if per_unit is not NULL, each member's mean
 * correlation with the other members. n < 2 gives NaN. */
double ss_cluster_cohesion(const double *corr, int64_t d, const int64_t *idx, int64_t n, double *per_unit);

/* Cohen's d per unit between groups a and b: (mean_a - mean_b) / s, with the
 * pooled s = sqrt(((na-1) var_a + (nb-1) var_b) / (na + nb - 2)). NaN where s
 * is 0 or not finite. Needs na, nb >= 2. */
ss_status ss_cohens_d(int64_t na, const double *mean_a, const double *var_a, int64_t nb, const double *mean_b,
                      const double *var_b, int64_t d, double *effect);

/* Indices of the k largest scores (NaN left out), best first; ties go to
 * the lower index. *n_out = min(k, number of non-NaN scores). */
ss_status ss_top_units(const double *score, int64_t d, int64_t k, int64_t *idx, int64_t *n_out);

typedef struct ss_discover_job {
    const char *stats;          /* collect output */
    const char *attr;           /* attribute output (NULL: none) */
    const char *sites;          /* comma-separated globs over the sites in the stats file */
    const char *method;         /* "cluster" or "contrast" */
    double fraction;            /* units per sub-model as a fraction of the site's (0 < f <= 1) */
    const char *contrast;       /* "A:B" (contrast) */
    int64_t top;                /* cluster: sub-models kept per site (>= 1) */
    double min_corr;            /* cluster: merges need an average correlation above this */
    const char *mode;           /* mask mode for the exported masks (NULL: "zero") */
    double factor;              /* mode scale */
    double sigma;               /* mode noise / negnoise */
    int has_factor, has_sigma;
    const char *out;            /* SUBMODELS.h5 */
    const char *masks_out;      /* NULL: <out without .h5>.masks.jsonl */
    const char *command_line;
    FILE *table;                /* where the summary table goes (NULL: nowhere) */
    /* after each site (done, total: the chosen sites); NULL: none */
    void (*progress)(void *ctx, int64_t done, int64_t total);
    void *progress_ctx;
} ss_discover_job;

/* Reads the inputs, finds the sub-models, writes out (atomically) and the
 * masks file. On any error neither file is left behind. */
ss_status ss_job_discover(const ss_discover_job *job);

/* The masks path used when masks_out is NULL: out with a trailing ".h5"
 * replaced by ".masks.jsonl" (appended when there is none). free() it. */
char *ss_discover_masks_path(const char *out);

#ifdef __cplusplus
}
#endif
#endif
