#include "subscope/sites.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "subscope/util.h"

/* The sites of one block, in forward order, per family. */
static const ss_site_kind gpt2_block[] = {
    SS_SITE_RESID_PRE, SS_SITE_LN1, SS_SITE_Q, SS_SITE_K, SS_SITE_V, SS_SITE_PATTERN, SS_SITE_Z,
    SS_SITE_ATTN_OUT, SS_SITE_RESID_MID, SS_SITE_LN2, SS_SITE_MLP_PRE, SS_SITE_MLP_POST, SS_SITE_MLP_OUT,
    SS_SITE_RESID_POST,
};
static const ss_site_kind llama_block[] = {
    SS_SITE_RESID_PRE, SS_SITE_LN1, SS_SITE_Q, SS_SITE_K, SS_SITE_V, SS_SITE_ROT_Q, SS_SITE_ROT_K,
    SS_SITE_PATTERN, SS_SITE_Z, SS_SITE_ATTN_OUT, SS_SITE_RESID_MID, SS_SITE_LN2, SS_SITE_MLP_PRE,
    SS_SITE_MLP_PRE_LINEAR, SS_SITE_MLP_POST, SS_SITE_MLP_OUT, SS_SITE_RESID_POST,
};

static const char *const kind_names[SS_SITE_KIND_COUNT] = {
    [SS_SITE_EMBED] = "hook_embed", [SS_SITE_POS_EMBED] = "hook_pos_embed",
    [SS_SITE_RESID_PRE] = "hook_resid_pre", [SS_SITE_LN1] = "ln1.hook_normalized", [SS_SITE_Q] = "attn.hook_q",
    [SS_SITE_K] = "attn.hook_k", [SS_SITE_V] = "attn.hook_v", [SS_SITE_ROT_Q] = "attn.hook_rot_q",
    [SS_SITE_ROT_K] = "attn.hook_rot_k", [SS_SITE_PATTERN] = "attn.hook_pattern", [SS_SITE_Z] = "attn.hook_z",
    [SS_SITE_ATTN_OUT] = "hook_attn_out", [SS_SITE_RESID_MID] = "hook_resid_mid",
    [SS_SITE_LN2] = "ln2.hook_normalized", [SS_SITE_MLP_PRE] = "mlp.hook_pre",
    [SS_SITE_MLP_PRE_LINEAR] = "mlp.hook_pre_linear", [SS_SITE_MLP_POST] = "mlp.hook_post",
    [SS_SITE_MLP_OUT] = "hook_mlp_out", [SS_SITE_RESID_POST] = "hook_resid_post",
    [SS_SITE_LNF] = "ln_final.hook_normalized",
};

static int is_llama(const ss_config *cfg) { return cfg->family == SS_FAMILY_LLAMA; }
/* Model-level sites before the blocks: hook_embed (and GPT-2's hook_pos_embed). */
static int n_front(const ss_config *cfg) { return is_llama(cfg) ? 1 : 2; }
static int per_block(const ss_config *cfg) {
    return is_llama(cfg) ? (int)(sizeof llama_block / sizeof *llama_block) : (int)(sizeof gpt2_block / sizeof *gpt2_block);
}
static const ss_site_kind *block_kinds(const ss_config *cfg) { return is_llama(cfg) ? llama_block : gpt2_block; }

int ss_sites_count(const ss_config *cfg) { return n_front(cfg) + 1 + (int)cfg->n_layer * per_block(cfg); }

int ss_site_id(const ss_config *cfg, ss_site_kind kind, int layer) {
    if (kind == SS_SITE_EMBED) return 0;
    if (kind == SS_SITE_POS_EMBED) return is_llama(cfg) ? -1 : 1;
    if (kind == SS_SITE_LNF) return ss_sites_count(cfg) - 1;
    if (layer < 0 || layer >= cfg->n_layer) return -1;
    const ss_site_kind *k = block_kinds(cfg);
    for (int i = 0; i < per_block(cfg); i++)
        if (k[i] == kind) return n_front(cfg) + layer * per_block(cfg) + i;
    return -1;
}

void ss_site_get(const ss_config *cfg, int id, ss_site *s) {
    memset(s, 0, sizeof *s);
    s->id = id;
    s->layer = -1;
    s->per_token = 1;
    s->ndim = 1;
    s->dims[0] = cfg->n_embd;
    s->dim_names[0] = "d_model";
    const int front = n_front(cfg), last = ss_sites_count(cfg) - 1;
    if (id < front) {
        s->kind = id == 0 ? SS_SITE_EMBED : SS_SITE_POS_EMBED;
        snprintf(s->name, sizeof s->name, "%s", kind_names[s->kind]);
    } else if (id == last) {
        s->kind = SS_SITE_LNF;
        snprintf(s->name, sizeof s->name, "%s", kind_names[s->kind]);
    } else {
        int r = id - front;
        s->layer = r / per_block(cfg);
        s->kind = block_kinds(cfg)[r % per_block(cfg)];
        snprintf(s->name, sizeof s->name, "blocks.%d.%s", s->layer, kind_names[s->kind]);
        switch (s->kind) {
        case SS_SITE_Q: case SS_SITE_ROT_Q: case SS_SITE_Z:
        case SS_SITE_K: case SS_SITE_ROT_K: case SS_SITE_V:
            /* keys and values have the key/value heads (grouped-query attention), as in TransformerLens */
            s->ndim = 2;
            s->dims[0] = cfg->n_head;
            s->dims[1] = ss_config_d_head(cfg);
            s->dim_names[0] = "head";
            if (is_llama(cfg) && (s->kind == SS_SITE_K || s->kind == SS_SITE_ROT_K || s->kind == SS_SITE_V)) {
                s->dims[0] = ss_config_kv_heads(cfg);
                s->dim_names[0] = "kv_head";
            }
            s->dim_names[1] = "d_head";
            break;
        case SS_SITE_PATTERN:
            s->per_token = 0;
            s->dims[0] = cfg->n_head;
            s->dim_names[0] = "head";
            break;
        case SS_SITE_MLP_PRE: case SS_SITE_MLP_PRE_LINEAR: case SS_SITE_MLP_POST:
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
    int named = 0;
    for (char *g = strtok_r(copy, ",", &save); g; g = strtok_r(NULL, ",", &save)) {
        while (*g == ' ') g++;
        size_t gl = strlen(g);
        while (gl && g[gl - 1] == ' ') g[--gl] = 0;
        if (!gl) continue;
        named = 1;
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
    /* blanks and commas alone name nothing: an error, not a selection of no site */
    if (st == SS_OK && !named && globs && *globs) st = ss_errorf(SS_ERR_ARG, "'%s' names no site", globs);
    return st;
}

int ss_sites_list_names(const char *list, const char *site) {
    size_t n = strlen(site);
    for (const char *p = list; p && *p;) {
        while (*p == ' ' || *p == ',') p++;
        const char *e = strchr(p, ',');
        size_t l = e ? (size_t)(e - p) : strlen(p);
        while (l && p[l - 1] == ' ') l--;
        if (l == n && !strncmp(p, site, n)) return 1;
        p = e;
    }
    return 0;
}
