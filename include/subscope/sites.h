/* Named activation sites (TransformerLens names) and the glob matcher that
 * every command taking --sites uses. */
#ifndef SUBSCOPE_SITES_H
#define SUBSCOPE_SITES_H

#include <stdint.h>
#include "subscope/config.h"
#include "subscope/error.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Every kind either family has; a model has the subset its family computes
 * (GPT-2: no rotary or up-projection sites; Llama: no hook_pos_embed). */
typedef enum ss_site_kind {
    /* model-level, before the blocks */
    SS_SITE_EMBED, SS_SITE_POS_EMBED,
    /* per block, in the order the forward pass produces them */
    SS_SITE_RESID_PRE, SS_SITE_LN1, SS_SITE_Q, SS_SITE_K, SS_SITE_V, SS_SITE_ROT_Q, SS_SITE_ROT_K,
    SS_SITE_PATTERN, SS_SITE_Z, SS_SITE_ATTN_OUT, SS_SITE_RESID_MID, SS_SITE_LN2, SS_SITE_MLP_PRE,
    SS_SITE_MLP_PRE_LINEAR, SS_SITE_MLP_POST, SS_SITE_MLP_OUT, SS_SITE_RESID_POST,
    /* model-level, after the blocks */
    SS_SITE_LNF,
    SS_SITE_KIND_COUNT
} ss_site_kind;
#define SS_SITE_NAME_MAX 64

typedef struct ss_site {
    char name[SS_SITE_NAME_MAX];
    ss_site_kind kind;
    int layer;              /* -1 for model-level sites */
    int id;                 /* dense index, 0 .. ss_sites_count()-1, in forward order */
    /* Shape of one token's value: [d] or [H, d_head]. hook_pattern is
     * per prompt [H, T, T] instead (per_token = 0, dims = {H}). */
    int per_token;
    int ndim;
    int64_t dims[2];
    const char *dim_names[2];
    int64_t width;          /* elements per token (product of dims) */
} ss_site;

int ss_sites_count(const ss_config *cfg);
/* Fills *site for a dense id. */
void ss_site_get(const ss_config *cfg, int id, ss_site *site);
/* The dense id of a site, or -1 if the model's family has no such site. */
int ss_site_id(const ss_config *cfg, ss_site_kind kind, int layer);
/* Looks a site up by exact name; -1 if none. */
int ss_site_find(const ss_config *cfg, const char *name);

/* '*' matches any run of characters, dots included; everything else literally. */
int ss_glob_match(const char *pattern, const char *name);

/* Selects the sites matching a comma-separated list of globs. want (ss_sites_count
 * bytes) is set to 1 for each selected site. A glob that matches nothing is an
 * SS_ERR_ARG error naming it (with a close site name as a hint). */
ss_status ss_sites_select(const ss_config *cfg, const char *globs, uint8_t *want, int *n_selected);
/* Whether one entry of a comma-separated list of globs is the site itself, not a
 * glob that happens to match it (a site with no per-token vector is refused
 * when named, left out when swept up by a glob). */
int ss_sites_list_names(const char *list, const char *site);

#ifdef __cplusplus
}
#endif
#endif
