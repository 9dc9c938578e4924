#include "subscope/sites.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "subscope/util.h"

static const char *const block_names[SS_SITE_PER_BLOCK] = {
    "hook_resid_pre", "ln1.hook_normalized", "attn.hook_q", "attn.hook_k", "attn.hook_v",
    "attn.hook_pattern", "attn.hook_z", "hook_attn_out", "hook_resid_mid", "ln2.hook_normalized",
    "mlp.hook_pre", "mlp.hook_post", "hook_mlp_out", "hook_resid_post",
};

int ss_sites_count(const ss_config *cfg) { return 3 + (int)cfg->n_layer * SS_SITE_PER_BLOCK; }

int ss_site_id(const ss_config *cfg, ss_site_kind kind, int layer) {
    if (kind == SS_SITE_EMBED) return 0;
    if (kind == SS_SITE_POS_EMBED) return 1;
    if (kind == SS_SITE_LNF) return 2 + (int)cfg->n_layer * SS_SITE_PER_BLOCK;
    return 2 + layer * SS_SITE_PER_BLOCK + (int)(kind - SS_SITE_RESID_PRE);
}

void ss_site_get(const ss_config *cfg, int id, ss_site *s) {
    memset(s, 0, sizeof *s);
    s->id = id;
    s->layer = -1;
    s->per_token = 1;
    s->ndim = 1;
    s->dims[0] = cfg->n_embd;
    s->dim_names[0] = "d_model";
    int last = ss_sites_count(cfg) - 1;
    if (id == 0) {
        s->kind = SS_SITE_EMBED;
        snprintf(s->name, sizeof s->name, "hook_embed");
    } else if (id == 1) {
        s->kind = SS_SITE_POS_EMBED;
        snprintf(s->name, sizeof s->name, "hook_pos_embed");
    } else if (id == last) {
        s->kind = SS_SITE_LNF;
        snprintf(s->name, sizeof s->name, "ln_final.hook_normalized");
    } else {
        int r = id - 2;
        s->layer = r / SS_SITE_PER_BLOCK;
        s->kind = (ss_site_kind)(SS_SITE_RESID_PRE + r % SS_SITE_PER_BLOCK);
        snprintf(s->name, sizeof s->name, "blocks.%d.%s", s->layer, block_names[r % SS_SITE_PER_BLOCK]);
        switch (s->kind) {
        case SS_SITE_Q: case SS_SITE_K: case SS_SITE_V: case SS_SITE_Z:
            s->ndim = 2;
            s->dims[0] = cfg->n_head;
            s->dims[1] = ss_config_d_head(cfg);
            s->dim_names[0] = "head";
            s->dim_names[1] = "d_head";
            break;
        case SS_SITE_PATTERN:
            s->per_token = 0;
            s->dims[0] = cfg->n_head;
            s->dim_names[0] = "head";
            break;
        case SS_SITE_MLP_PRE: case SS_SITE_MLP_POST:
            s->dims[0] = cfg->n_inner;
            s->dim_names[0] = "d_mlp";
            break;
        default:
            break;
        }
    }
    s->width = s->ndim == 2 ? s->dims[0] * s->dims[1] : s->dims[0];
}

int ss_site_find(const ss_config *cfg, const char *name) {
    int n = ss_sites_count(cfg);
    ss_site s;
    for (int i = 0; i < n; i++) {
        ss_site_get(cfg, i, &s);
        if (!strcmp(s.name, name)) return i;
    }
    return -1;
}

int ss_glob_match(const char *p, const char *s) {
    /* Iterative matcher with one backtrack point: linear in practice, no recursion. */
    const char *star = NULL, *resume = NULL;
    while (*s) {
        if (*p == '*') {
            star = p++;
            resume = s;
        } else if (*p == *s) {
            p++;
            s++;
        } else if (star) {
            p = star + 1;
            s = ++resume;
        } else {
            return 0;
        }
    }
    while (*p == '*') p++;
    return *p == 0;
}

/* Edit distance, for "did you mean" hints on unknown site names. */
static int edit_distance(const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b);
    if (la > 128 || lb > 128) return 1 << 20;
    int row[129];
    for (size_t j = 0; j <= lb; j++) row[j] = (int)j;
    for (size_t i = 1; i <= la; i++) {
        int prev = row[0];
        row[0] = (int)i;
        for (size_t j = 1; j <= lb; j++) {
            int cur = row[j];
            int best = prev + (a[i - 1] != b[j - 1]);
            if (row[j] + 1 < best) best = row[j] + 1;
            if (row[j - 1] + 1 < best) best = row[j - 1] + 1;
            row[j] = best;
            prev = cur;
        }
    }
    return row[lb];
}

ss_status ss_sites_select(const ss_config *cfg, const char *globs, uint8_t *want, int *n_selected) {
    int n = ss_sites_count(cfg);
    memset(want, 0, (size_t)n);
    *n_selected = 0;
    char *copy = ss_strdup(globs ? globs : "");
    if (!copy) return SS_ERR_NOMEM;
    ss_status st = SS_OK;
    ss_site s;
    char *save = NULL;
    for (char *g = strtok_r(copy, ",", &save); g; g = strtok_r(NULL, ",", &save)) {
        while (*g == ' ') g++;
        size_t gl = strlen(g);
        while (gl && g[gl - 1] == ' ') g[--gl] = 0;
        if (!gl) continue;
        int hits = 0, best = -1, best_d = 1 << 20;
        for (int i = 0; i < n; i++) {
            ss_site_get(cfg, i, &s);
            if (ss_glob_match(g, s.name)) {
                if (!want[i]) (*n_selected)++;
                want[i] = 1;
                hits++;
            } else {
                int d = edit_distance(g, s.name);
                if (d < best_d) { best_d = d; best = i; }
            }
        }
        if (!hits) {
            if (best >= 0 && best_d <= 4) {
                ss_site_get(cfg, best, &s);
                st = ss_errorf(SS_ERR_ARG, "unknown site '%s' (did you mean '%s'? `subscope info` lists the sites)", g, s.name);
            } else {
                st = ss_errorf(SS_ERR_ARG, "unknown site '%s' (`subscope info` lists the sites)", g);
            }
            break;
        }
    }
    free(copy);
    return st;
}
