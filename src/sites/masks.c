#include "subscope/masks.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "subscope/json.h"
#include "subscope/util.h"

static const char *const mode_names[] = {"zero", "mean", "scale", "noise", "negnoise", "resample", "patch"};
#define N_MODES ((int)(sizeof mode_names / sizeof mode_names[0]))

const char *ss_mask_mode_name(ss_mask_mode mode) {
    return (int)mode >= 0 && (int)mode < N_MODES ? mode_names[mode] : NULL;
}

int ss_mask_mode_parse(const char *name, ss_mask_mode *out) {
    for (int i = 0; i < N_MODES; i++)
        if (!strcmp(name, mode_names[i])) {
            *out = (ss_mask_mode)i;
            return 0;
        }
    return -1;
}

void ss_mask_free(ss_mask *m) {
    if (!m) return;
    for (int i = 0; i < m->n_targets; i++) free(m->targets[i].units);
    free(m->targets);
    free(m->positions);
    memset(m, 0, sizeof *m);
}

void ss_masks_free(ss_mask *m, int n) {
    if (!m) return;
    for (int i = 0; i < n; i++) ss_mask_free(&m[i]);
    free(m);
}

/* ---- index lists ---------------------------------------------------- */

typedef struct ilist {
    int64_t *v;
    int64_t n, cap;
} ilist;

static ss_status ilist_push(ilist *l, int64_t x) {
    if (l->n == l->cap) {
        int64_t cap = l->cap ? l->cap * 2 : 16;
        size_t bytes;
        if (!ss_mul_ok((size_t)cap, sizeof *l->v, &bytes)) return ss_errorf(SS_ERR_NOMEM, "mask index list too long");
        int64_t *v = ss_realloc(l->v, bytes, "mask index list");
        if (!v) return SS_ERR_NOMEM;
        l->v = v;
        l->cap = cap;
    }
    l->v[l->n++] = x;
    return SS_OK;
}

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* Sorts and drops repeats, so that a unit listed twice (or inside a listed
 * head) is changed once: scale and noise must not apply twice. */
static void ilist_sort_unique(ilist *l) {
    if (l->n < 2) return;
    qsort(l->v, (size_t)l->n, sizeof *l->v, cmp_i64);
    int64_t k = 1;
    for (int64_t i = 1; i < l->n; i++)
        if (l->v[i] != l->v[k - 1]) l->v[k++] = l->v[i];
    l->n = k;
}

/* ---- building masks ------------------------------------------------- */

static int has_heads(ss_site_kind k) {
    return k == SS_SITE_Q || k == SS_SITE_K || k == SS_SITE_V || k == SS_SITE_ROT_Q || k == SS_SITE_ROT_K ||
           k == SS_SITE_Z;
}

/* Resolves a site name or glob to site ids (want: ss_sites_count bytes). */
static ss_status resolve_sites(const ss_config *cfg, const char *name, const char *where, uint8_t *want, int *n_sel) {
    if (!*name) return ss_errorf(SS_ERR_ARG, "%s: empty site name", where);
    if (strchr(name, ','))
        return ss_errorf(SS_ERR_ARG, "%s: site '%s' contains ',' (one site or glob per entry)", where, name);
    ss_status st = ss_sites_select(cfg, name, want, n_sel);
    if (st != SS_OK) return ss_error_context(st, "%s", where);
    int n = ss_sites_count(cfg);
    ss_site s;
    for (int i = 0; i < n; i++) {
        if (!want[i]) continue;
        ss_site_get(cfg, i, &s);
        if (s.per_token) continue;
        /* Named outright, it is a mistake; swept up by a glob ('blocks.0.attn.*[head=1]'), it is
         * left out, as collect, attribute and patch leave it out of --sites. */
        if (!strcmp(name, s.name))
            return ss_errorf(SS_ERR_ARG, "%s: site %s holds a per-prompt attention pattern, not per-token values; "
                             "it cannot be masked (mask hook_z or hook_q/k/v instead)", where, s.name);
        want[i] = 0;
        --*n_sel;
    }
    if (!*n_sel)
        return ss_errorf(SS_ERR_ARG, "%s: '%s' selects no site with per-token values (attention patterns cannot be masked)",
                         where, name);
    return SS_OK;
}

/* Adds one target per selected site, with the given units and heads (both
 * empty and !explicit_units: all units). */
static ss_status add_targets(const ss_config *cfg, ss_mask *m, const uint8_t *want, const ilist *units,
                             const ilist *heads, const char *where) {
    int n = ss_sites_count(cfg);
    int64_t dh = ss_config_d_head(cfg);
    ss_site s;
    for (int i = 0; i < n; i++) {
        if (!want[i]) continue;
        ss_site_get(cfg, i, &s);
        for (int t = 0; t < m->n_targets; t++)
            if (m->targets[t].site_id == i) return ss_errorf(SS_ERR_ARG, "%s: site %s listed twice", where, s.name);
        if (heads->n && !has_heads(s.kind))
            return ss_errorf(SS_ERR_ARG, "%s: heads given for %s, which has no head dimension "
                             "(heads apply to attn.hook_q/k/v/z and hook_rot_q/k)", where, s.name);
        ilist u = {0};
        ss_status st = SS_OK;
        for (int64_t j = 0; j < units->n && st == SS_OK; j++) {
            if (units->v[j] < 0 || units->v[j] >= s.width)
                st = ss_errorf(SS_ERR_ARG, "%s: unit %lld out of range for %s (it has %lld units per token)", where,
                               (long long)units->v[j], s.name, (long long)s.width);
            else
                st = ilist_push(&u, units->v[j]);
        }
        for (int64_t j = 0; j < heads->n && st == SS_OK; j++) {
            if (heads->v[j] < 0 || heads->v[j] >= s.dims[0]) {
                st = ss_errorf(SS_ERR_ARG, "%s: head %lld out of range for %s (%lld heads)", where,
                               (long long)heads->v[j], s.name, (long long)s.dims[0]);
                break;
            }
            for (int64_t k = 0; k < dh && st == SS_OK; k++) st = ilist_push(&u, heads->v[j] * dh + k);
        }
        if (st == SS_OK) {
            ss_mask_target *tg = ss_realloc(m->targets, sizeof *tg * (size_t)(m->n_targets + 1), "mask targets");
            if (!tg) st = SS_ERR_NOMEM;
            else {
                m->targets = tg;
                ilist_sort_unique(&u);
                tg[m->n_targets].site_id = i;
                tg[m->n_targets].units = u.v;
                tg[m->n_targets].n_units = u.n;
                m->n_targets++;
                continue;
            }
        }
        free(u.v);
        return st;
    }
    return SS_OK;
}

static ss_status set_positions(const ss_config *cfg, ss_mask *m, ilist *pos, const char *where) {
    for (int64_t j = 0; j < pos->n; j++)
        if (pos->v[j] < 0 || pos->v[j] >= cfg->n_positions)
            return ss_errorf(SS_ERR_ARG, "%s: position %lld out of range (the model has %lld positions)", where,
                             (long long)pos->v[j], (long long)cfg->n_positions);
    ilist_sort_unique(pos);
    m->positions = pos->v;
    m->n_positions = pos->n;
    pos->v = NULL;
    pos->n = pos->cap = 0;
    return SS_OK;
}

/* ---- command-line specs --------------------------------------------- */

/* A non-negative decimal integer filling [s, e); -1 if not one. */
static int64_t parse_index(const char *s, const char *e) {
    if (s >= e) return -1;
    int64_t v = 0;
    for (; s < e; s++) {
        if (*s < '0' || *s > '9') return -1;
        if (v > (INT64_MAX - 9) / 10) return -1;
        v = v * 10 + (*s - '0');
    }
    return v;
}

static const char *trim_end(const char *s, const char *e) {
    while (e > s && (e[-1] == ' ' || e[-1] == '\t')) e--;
    return e;
}
static const char *trim_start(const char *s, const char *e) {
    while (s < e && (*s == ' ' || *s == '\t')) s++;
    return s;
}

/* The items of SITE[ITEMS] into units, heads and positions; a range A-B of
 * units must end below width (the widest selected site's units per token),
 * so that it is refused before it is spelled out. */
static ss_status parse_items(const char *b, const char *e, const char *where, int64_t width, ilist *units, ilist *heads,
                             ilist *pos) {
    if (trim_start(b, e) == e) return ss_errorf(SS_ERR_ARG, "%s: empty unit list '[]'", where);
    ss_status st = SS_OK;
    while (st == SS_OK) {
        const char *c = memchr(b, ',', (size_t)(e - b));
        const char *ie = c ? c : e;
        const char *s = trim_start(b, ie), *t = trim_end(s, ie);
        int len = (int)(t - s);
        if (s == t) return ss_errorf(SS_ERR_ARG, "%s: empty item in the unit list", where);
        ilist *dst = units;
        const char *num = s;
        if (len > 5 && !strncmp(s, "head=", 5)) dst = heads, num = s + 5;
        else if (len > 6 && !strncmp(s, "heads=", 6)) dst = heads, num = s + 6;
        else if (len > 4 && !strncmp(s, "pos=", 4)) dst = pos, num = s + 4;
        const char *dash = dst == units ? memchr(num, '-', (size_t)(t - num)) : NULL;
        if (dash) {
            int64_t a = parse_index(num, dash), z = parse_index(dash + 1, t);
            if (a < 0 || z < 0 || z < a)
                return ss_errorf(SS_ERR_ARG, "%s: bad unit range '%.*s' (want A-B with A <= B)", where, len, s);
            if (z >= width)
                return ss_errorf(SS_ERR_ARG, "%s: unit range '%.*s' goes past the %lld units per token of the site",
                                 where, len, s, (long long)width);
            for (int64_t v = a; v <= z && st == SS_OK; v++) st = ilist_push(units, v);
        } else {
            int64_t v = parse_index(num, t);
            if (v < 0)
                return ss_errorf(SS_ERR_ARG, "%s: bad item '%.*s' (want a unit N, a range A-B, head=H or pos=P)",
                                 where, len, s);
            st = ilist_push(dst, v);
        }
        if (!c) break;
        b = c + 1;
    }
    return st;
}

ss_status ss_mask_parse_spec(const ss_config *cfg, const char *spec, ss_mask *out) {
    memset(out, 0, sizeof *out);
    out->mode = SS_MASK_ZERO;
    out->factor = 1.0;
    char where[160];
    snprintf(where, sizeof where, "mask '%s'", spec);
    const char *end = trim_end(spec, spec + strlen(spec));
    const char *s = trim_start(spec, end);
    const char *br = memchr(s, '[', (size_t)(end - s));
    const char *name_end = br ? trim_end(s, br) : end;
    ilist units = {0}, heads = {0}, pos = {0};
    uint8_t *want = NULL;
    ss_status st = SS_OK;
    /* The spec is the mask's name: cut short it would no longer be the spec (and two specs
     * could meet in one name), so one too long is refused, as a JSONL name is. */
    if ((size_t)(end - s) >= sizeof out->name)
        return ss_errorf(SS_ERR_ARG, "%s: %zu bytes, but a mask's name (a --mask spec is its own) holds at most %zu: "
                         "give it a \"name\" in a --masks file", where, (size_t)(end - s), sizeof out->name - 1);
    if (br && (end == br + 1 || end[-1] != ']'))
        st = ss_errorf(SS_ERR_ARG, "%s: '[' without a closing ']' at the end", where);
    else if (!br && memchr(s, ']', (size_t)(end - s)))
        st = ss_errorf(SS_ERR_ARG, "%s: ']' without '['", where);
    else if (br && memchr(br + 1, '[', (size_t)(end - 1 - (br + 1))))
        st = ss_errorf(SS_ERR_ARG, "%s: more than one '['", where);
    char *name = NULL;
    if (st == SS_OK) {
        name = ss_strndup(s, (size_t)(name_end - s));
        want = ss_malloc((size_t)ss_sites_count(cfg), "mask sites");
        if (!name || !want) st = SS_ERR_NOMEM;
    }
    int n_sel = 0;
    if (st == SS_OK) st = resolve_sites(cfg, name, where, want, &n_sel);
    if (st == SS_OK && br) {
        int64_t width = 0;
        ss_site site;
        for (int i = 0; i < ss_sites_count(cfg); i++)
            if (want[i]) ss_site_get(cfg, i, &site), width = site.width > width ? site.width : width;
        st = parse_items(br + 1, end - 1, where, width, &units, &heads, &pos);
    }
    if (st == SS_OK) st = add_targets(cfg, out, want, &units, &heads, where);
    if (st == SS_OK) st = set_positions(cfg, out, &pos, where);
    if (st == SS_OK) snprintf(out->name, sizeof out->name, "%.*s", (int)(end - s), s);
    free(name);
    free(want);
    free(units.v);
    free(heads.v);
    free(pos.v);
    if (st != SS_OK) ss_mask_free(out);
    return st;
}

/* ---- JSONL ---------------------------------------------------------- */

static ss_status json_indices(const ss_json *v, const char *field, const char *where, ilist *out) {
    if (v->type != SS_JSON_ARRAY)
        return ss_errorf(SS_ERR_FORMAT, "%s: field '%s' must be an array of non-negative integers", where, field);
    for (size_t i = 0; i < v->len; i++) {
        const ss_json *x = &v->items[i];
        if (x->type != SS_JSON_NUMBER || !x->is_int || x->i < 0)
            return ss_errorf(SS_ERR_FORMAT, "%s: field '%s' item %zu is not a non-negative integer", where, field, i);
        SS_TRY(ilist_push(out, x->i));
    }
    return SS_OK;
}

static int key_in(const char *k, const char *const *allowed) {
    for (; *allowed; allowed++)
        if (!strcmp(k, *allowed)) return 1;
    return 0;
}

/* names[0..n) (n < 0: up to a NULL) as "a, b, c" in list, for messages. */
static const char *join_names(const char *const *names, int n, char *list, size_t cap) {
    list[0] = 0;
    for (int i = 0; n < 0 ? names[i] != NULL : i < n; i++) {
        size_t l = strlen(list);
        snprintf(list + l, cap - l, "%s%s", i ? ", " : "", names[i]);
    }
    return list;
}

static ss_status check_keys(const ss_json *obj, const char *const *allowed, const char *where, const char *what) {
    char list[256];
    for (size_t i = 0; i < obj->len; i++)
        if (!key_in(obj->keys[i], allowed))
            return ss_errorf(SS_ERR_FORMAT, "%s: unknown field '%s' in %s (known: %s)", where, obj->keys[i], what,
                             join_names(allowed, -1, list, sizeof list));
    return SS_OK;
}

/* One site entry: site + units + heads, from obj (the mask itself or an item of "sites"). */
static ss_status json_target(const ss_config *cfg, ss_mask *m, const ss_json *obj, const char *where, uint8_t *want) {
    const ss_json *site = ss_json_get(obj, "site");
    if (!site) return ss_errorf(SS_ERR_FORMAT, "%s: field 'site' missing", where);
    if (site->type != SS_JSON_STRING || strlen(site->str) != site->len)
        return ss_errorf(SS_ERR_FORMAT, "%s: field 'site' must be a string", where);
    ilist units = {0}, heads = {0};
    ss_status st = SS_OK;
    const ss_json *u = ss_json_get(obj, "units"), *h = ss_json_get(obj, "heads");
    if (u) {
        st = json_indices(u, "units", where, &units);
        if (st == SS_OK && !u->len) st = ss_errorf(SS_ERR_FORMAT, "%s: field 'units' is empty (omit it for all units)", where);
    }
    if (st == SS_OK && h) {
        st = json_indices(h, "heads", where, &heads);
        if (st == SS_OK && !h->len) st = ss_errorf(SS_ERR_FORMAT, "%s: field 'heads' is empty (omit it for all units)", where);
    }
    int n_sel;
    if (st == SS_OK) st = resolve_sites(cfg, site->str, where, want, &n_sel);
    if (st == SS_OK) st = add_targets(cfg, m, want, &units, &heads, where);
    free(units.v);
    free(heads.v);
    return st;
}

static const char *const mask_keys[] = {"name", "site", "sites", "units", "heads", "positions", "mode",
                                        "factor", "sigma", "relative", "seed", NULL};
static const char *const site_keys[] = {"site", "units", "heads", NULL};

static ss_status json_mask(const ss_config *cfg, const ss_json *root, const char *what, int line, ss_mask *m,
                           uint8_t *want) {
    char where[200];
    snprintf(where, sizeof where, "%s:%d", what, line);
    memset(m, 0, sizeof *m);
    m->mode = SS_MASK_ZERO;
    m->factor = 1.0;
    if (root->type != SS_JSON_OBJECT) return ss_errorf(SS_ERR_FORMAT, "%s: a mask must be a JSON object", where);
    const ss_json *name = ss_json_get(root, "name");
    if (name) {
        if (name->type != SS_JSON_STRING) return ss_errorf(SS_ERR_FORMAT, "%s: field 'name' must be a string", where);
        if (!name->len || name->len >= sizeof m->name || strlen(name->str) != name->len)
            return ss_errorf(SS_ERR_FORMAT, "%s: field 'name' must be 1 to %zu bytes", where, sizeof m->name - 1);
        if (strchr(name->str, '/') || !strcmp(name->str, ".") || !strcmp(name->str, ".."))
            return ss_errorf(SS_ERR_FORMAT, "%s: field 'name' \"%s\" %s (names become HDF5 groups)", where, name->str,
                             strchr(name->str, '/') ? "contains '/'" : "is a path component");
        snprintf(m->name, sizeof m->name, "%s", name->str);
    } else {
        snprintf(m->name, sizeof m->name, "line%d", line);
    }
    snprintf(where, sizeof where, "%s:%d: mask '%s'", what, line, m->name);
    SS_TRY(check_keys(root, mask_keys, where, "a mask"));

    const ss_json *mode = ss_json_get(root, "mode");
    if (mode) {
        if (mode->type != SS_JSON_STRING) return ss_errorf(SS_ERR_FORMAT, "%s: field 'mode' must be a string", where);
        if (ss_mask_mode_parse(mode->str, &m->mode)) {
            char list[128];
            return ss_errorf(SS_ERR_ARG, "%s: field 'mode': unknown mode '%s' (%s)", where, mode->str,
                             join_names(mode_names, N_MODES, list, sizeof list));
        }
    }
    int r = ss_json_get_num(root, "factor", &m->factor);
    if (r < 0) return ss_errorf(SS_ERR_FORMAT, "%s: field 'factor' must be a number", where);
    if (r > 0 && !(m->factor >= 0 && m->factor <= 1))
        return ss_errorf(SS_ERR_ARG, "%s: field 'factor' %g outside [0,1]", where, m->factor);
    if (r == 0 && m->mode == SS_MASK_SCALE)
        return ss_errorf(SS_ERR_ARG, "%s: field 'factor' missing (mode scale needs a factor in [0,1])", where);
    r = ss_json_get_num(root, "sigma", &m->sigma);
    if (r < 0) return ss_errorf(SS_ERR_FORMAT, "%s: field 'sigma' must be a number", where);
    if (r > 0 && !(m->sigma >= 0)) return ss_errorf(SS_ERR_ARG, "%s: field 'sigma' %g is negative", where, m->sigma);
    if (r > 0 && m->sigma > SS_MASK_SIGMA_MAX) /* noise past float32's range would turn every metric into NaN */
        return ss_errorf(SS_ERR_ARG, "%s: field 'sigma' %g is above %g", where, m->sigma, SS_MASK_SIGMA_MAX);
    if (r == 0 && (m->mode == SS_MASK_NOISE || m->mode == SS_MASK_NEGNOISE))
        return ss_errorf(SS_ERR_ARG, "%s: field 'sigma' missing (mode %s needs sigma >= 0)", where,
                         ss_mask_mode_name(m->mode));
    r = ss_json_get_bool(root, "relative", &m->sigma_relative);
    if (r < 0) return ss_errorf(SS_ERR_FORMAT, "%s: field 'relative' must be true or false", where);
    int64_t seed = 0;
    const ss_json *sv = ss_json_get(root, "seed");
    if (sv) {
        if (sv->type != SS_JSON_NUMBER || !sv->is_int || sv->i < 0)
            return ss_errorf(SS_ERR_FORMAT, "%s: field 'seed' must be a non-negative integer", where);
        seed = sv->i;
    }
    m->seed = (uint64_t)seed;
    /* a field that the mode does not read is a mistake (say, "factor" on a zero mask meant
     * as a scale): refused rather than ignored ("relative": false is harmless). "seed" is
     * not checked, as mask files carry the seed that made a random control mask whatever
     * its mode. */
    const int noisy = m->mode == SS_MASK_NOISE || m->mode == SS_MASK_NEGNOISE;
    const char *unread = m->mode != SS_MASK_SCALE && ss_json_get(root, "factor") ? "factor"
                         : !noisy && ss_json_get(root, "sigma")                  ? "sigma"
                         : !noisy && m->sigma_relative                           ? "relative"
                                                                                 : NULL;
    if (unread)
        return ss_errorf(SS_ERR_ARG, "%s: field '%s' is for mode %s, not %s", where, unread,
                         !strcmp(unread, "factor") ? "scale" : "noise or negnoise", ss_mask_mode_name(m->mode));

    const ss_json *site = ss_json_get(root, "site"), *sites = ss_json_get(root, "sites");
    ss_status st = SS_OK;
    if (site && sites) return ss_errorf(SS_ERR_FORMAT, "%s: give 'site' or 'sites', not both", where);
    if (!site && !sites) return ss_errorf(SS_ERR_FORMAT, "%s: field 'site' (or 'sites') missing", where);
    if (site) {
        st = json_target(cfg, m, root, where, want);
    } else {
        if (ss_json_get(root, "units") || ss_json_get(root, "heads"))
            return ss_errorf(SS_ERR_FORMAT, "%s: with 'sites', give 'units'/'heads' inside each entry", where);
        if (sites->type != SS_JSON_ARRAY || !sites->len)
            return ss_errorf(SS_ERR_FORMAT, "%s: field 'sites' must be a non-empty array of objects", where);
        for (size_t i = 0; i < sites->len && st == SS_OK; i++) {
            char w2[260];
            snprintf(w2, sizeof w2, "%s: field 'sites' item %zu", where, i);
            if (sites->items[i].type != SS_JSON_OBJECT)
                st = ss_errorf(SS_ERR_FORMAT, "%s: must be an object {\"site\", \"units\", \"heads\"}", w2);
            else if ((st = check_keys(&sites->items[i], site_keys, w2, "a site entry")) == SS_OK)
                st = json_target(cfg, m, &sites->items[i], w2, want);
        }
    }
    if (st != SS_OK) return st;
    const ss_json *pv = ss_json_get(root, "positions");
    if (pv) {
        ilist pos = {0};
        st = json_indices(pv, "positions", where, &pos);
        if (st == SS_OK && !pv->len)
            st = ss_errorf(SS_ERR_FORMAT, "%s: field 'positions' is empty (omit it for all positions)", where);
        if (st == SS_OK) {
            char w2[260];
            snprintf(w2, sizeof w2, "%s: field 'positions'", where);
            st = set_positions(cfg, m, &pos, w2);
        }
        free(pos.v);
    }
    return st;
}

ss_status ss_masks_parse_jsonl(const ss_config *cfg, const char *text, size_t len, const char *what,
                               ss_mask **out, int *n) {
    *out = NULL;
    *n = 0;
    ss_mask *ms = NULL;
    int count = 0, cap = 0;
    ss_status st = SS_OK;
    uint8_t *want = ss_malloc((size_t)ss_sites_count(cfg), "mask sites");
    if (!want) return SS_ERR_NOMEM;
    const char *p = text, *end = text + len;
    for (int line = 1; p < end && st == SS_OK; line++) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *le = nl ? nl : end;
        const char *q = p;
        while (q < le && (*q == ' ' || *q == '\t' || *q == '\r')) q++;
        if (q < le) {
            if (count == cap) {
                int nc = cap ? cap * 2 : 8;
                ss_mask *nm = ss_realloc(ms, sizeof *nm * (size_t)nc, "masks");
                if (!nm) { st = SS_ERR_NOMEM; break; }
                ms = nm;
                cap = nc;
            }
            ss_json_doc *doc = NULL;
            st = ss_json_parse_at(p, (size_t)(le - p), what, line, &doc);
            if (st == SS_OK) {
                st = json_mask(cfg, ss_json_root(doc), what, line, &ms[count], want);
                if (st != SS_OK) ss_mask_free(&ms[count]);
                else count++;
            }
            ss_json_free(doc);
            for (int i = 0; st == SS_OK && i < count - 1; i++)
                if (!strcmp(ms[i].name, ms[count - 1].name))
                    st = ss_errorf(SS_ERR_ARG, "%s:%d: mask name '%s' used twice", what, line, ms[i].name);
        }
        p = nl ? nl + 1 : end;
    }
    free(want);
    if (st == SS_OK && !count) st = ss_errorf(SS_ERR_FORMAT, "%s: no masks in the file", what);
    if (st != SS_OK) {
        ss_masks_free(ms, count);
        return st;
    }
    *out = ms;
    *n = count;
    return SS_OK;
}

ss_status ss_masks_read_jsonl(const ss_config *cfg, const char *path, ss_mask **out, int *n) {
    *out = NULL;
    *n = 0;
    char *text = NULL;
    size_t len = 0;
    SS_TRY(ss_input_read(path, &text, &len));
    ss_status st = ss_masks_parse_jsonl(cfg, text, len, path, out, n);
    free(text);
    return st;
}

/* ---- applying ------------------------------------------------------- */

int ss_mask_touches(const ss_mask *m, int site_id) {
    for (int i = 0; i < m->n_targets; i++)
        if (m->targets[i].site_id == site_id) return 1;
    return 0;
}

void ss_mask_needs_stats(const ss_mask *m, int *need_mean, int *need_std) {
    if (need_mean) *need_mean = m->mode == SS_MASK_MEAN;
    if (need_std) *need_std = (m->mode == SS_MASK_NOISE || m->mode == SS_MASK_NEGNOISE) && m->sigma_relative;
}

int64_t ss_mask_resample_source(uint64_t seed, int64_t i, int64_t n) {
    if (n < 2) return -1;
    uint64_t r = ss_mix64(ss_mix64(seed) ^ (uint64_t)i) % (uint64_t)(n - 1);
    return (int64_t)(((uint64_t)i + 1 + r) % (uint64_t)n);
}

double ss_mask_noise(uint64_t seed, int64_t prompt, int64_t position, int site_id, int64_t unit) {
    return ss_keyed_normal(seed, prompt, position, site_id, unit);
}

ss_status ss_mask_apply(const ss_mask *m, const ss_site *site, float *data, int64_t ld, const ss_packing *pk,
                        const int64_t *prompt_index, const ss_mask_stats *st) {
    const ss_mask_target *t = NULL;
    for (int i = 0; i < m->n_targets; i++)
        if (m->targets[i].site_id == site->id) t = &m->targets[i];
    if (!t) return SS_OK;
    if (!site->per_token)
        return ss_errorf(SS_ERR_ARG, "mask '%s': site %s is not per-token and cannot be masked", m->name, site->name);
    int64_t width = site->width;
    if (ld < width) return ss_errorf(SS_ERR_INTERNAL, "mask '%s': row stride %lld < width %lld of %s", m->name,
                                     (long long)ld, (long long)width, site->name);
    if (t->n_units && t->units[t->n_units - 1] >= width)
        return ss_errorf(SS_ERR_ARG, "mask '%s': unit %lld out of range for %s (width %lld)", m->name,
                         (long long)t->units[t->n_units - 1], site->name, (long long)width);
    const double *mean = NULL, *sd = NULL;
    if (m->mode == SS_MASK_MEAN) {
        if (!st || !st->mean)
            return ss_errorf(SS_ERR_ARG, "mask '%s': mode mean needs the per-unit means of %s (give --stats)",
                             m->name, site->name);
        mean = st->mean;
    }
    int noisy = m->mode == SS_MASK_NOISE || m->mode == SS_MASK_NEGNOISE;
    if (noisy && m->sigma_relative) {
        if (!st || !st->std)
            return ss_errorf(SS_ERR_ARG,
                             "mask '%s': relative %s needs the per-unit standard deviations of %s (give --stats)",
                             m->name, ss_mask_mode_name(m->mode), site->name);
        sd = st->std;
    }
    const int sourced = m->mode == SS_MASK_RESAMPLE || m->mode == SS_MASK_PATCH;
    if (sourced && (!st || !st->source_row))
        return ss_errorf(SS_ERR_ARG, "mask '%s': mode %s needs the clean activations of %s from %s", m->name,
                         ss_mask_mode_name(m->mode), site->name,
                         m->mode == SS_MASK_PATCH ? "the paired prompts (--patch-from FILE)" : "other prompts");
    /* Identity settings return before touching anything, so the data stay
     * bit-identical (x + 0.0 would turn -0.0 into +0.0). */
    if (m->mode == SS_MASK_SCALE && m->factor == 1.0) return SS_OK;
    if (noisy && m->sigma == 0.0) return SS_OK;
    for (int64_t q = 0; q < pk->n_seq; q++) {
        if (pk->start[q] < 0 || pk->len[q] < 0 || pk->start[q] > pk->rows - pk->len[q])
            return ss_errorf(SS_ERR_INTERNAL, "mask '%s': sequence %lld lies outside the %lld packed rows", m->name,
                             (long long)q, (long long)pk->rows);
        int64_t L = pk->len[q], prompt = prompt_index ? prompt_index[q] : q;
        int64_t np = m->n_positions ? m->n_positions : L;
        for (int64_t pi = 0; pi < np; pi++) {
            int64_t pos = m->n_positions ? m->positions[pi] : pi;
            if (pos >= L) break; /* positions are sorted */
            float *row = data + (pk->start[q] + pos) * ld;
            const float *src = NULL;
            if (sourced && !(src = st->source_row(st->source_ctx, site, prompt, pos)))
                return ss_errorf(SS_ERR_ARG, "mask '%s': no %s to take %s from", m->name,
                                 m->mode == SS_MASK_PATCH ? "paired prompt" : "other prompt (the input needs at least 2)",
                                 site->name);
            int64_t nu = t->n_units ? t->n_units : width;
            for (int64_t ui = 0; ui < nu; ui++) {
                int64_t u = t->n_units ? t->units[ui] : ui;
                float *x = &row[u];
                switch (m->mode) {
                case SS_MASK_ZERO: *x = 0.0f; break;
                case SS_MASK_MEAN: *x = (float)mean[u]; break;
                case SS_MASK_SCALE: *x = (float)((double)*x * m->factor); break;
                case SS_MASK_RESAMPLE:
                case SS_MASK_PATCH: *x = src[u]; break;
                case SS_MASK_NOISE:
                case SS_MASK_NEGNOISE: {
                    double s = sd ? m->sigma * sd[u] : m->sigma;
                    if (s == 0.0) break;
                    double n = s * ss_mask_noise(m->seed, prompt, pos, site->id, u);
                    if (m->mode == SS_MASK_NOISE) *x = (float)((double)*x + n);
                    else if (*x > 0) *x = (float)fmax((double)*x - fabs(n), 0.0);
                    else if (*x < 0) *x = (float)fmin((double)*x + fabs(n), 0.0);
                    break;
                }
                }
            }
        }
    }
    return SS_OK;
}
