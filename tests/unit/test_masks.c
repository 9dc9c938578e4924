#include <stdlib.h>

#include "subscope/masks.h"
#include "test.h"

/* 2 layers, 4 heads of 8, d_model 32, d_mlp 128, 16 positions. */
static ss_config mcfg(void) {
    ss_config c = {0};
    c.n_layer = 2;
    c.n_head = 4;
    c.n_embd = 32;
    c.n_inner = 128;
    c.n_positions = 16;
    c.vocab_size = 50;
    return c;
}

static ss_status parse_text(const ss_config *c, const char *text, ss_mask **ms, int *n) {
    return ss_masks_parse_jsonl(c, text, strlen(text), "m.jsonl", ms, n);
}

TEST(mask_spec_units_heads_ranges_positions) {
    ss_config c = mcfg();
    ss_mask m;
    CHECK_OK(ss_mask_parse_spec(&c, "blocks.1.mlp.hook_post[17,3,17, 100-102]", &m));
    CHECK(!strcmp(m.name, "blocks.1.mlp.hook_post[17,3,17, 100-102]"));
    CHECK(m.mode == SS_MASK_ZERO && m.n_targets == 1 && !m.n_positions && !m.positions);
    CHECK(m.targets[0].site_id == ss_site_find(&c, "blocks.1.mlp.hook_post"));
    CHECK(m.targets[0].n_units == 5);
    int64_t want[] = {3, 17, 100, 101, 102};
    for (int i = 0; i < 5; i++) CHECK(m.targets[0].units[i] == want[i]);
    CHECK(ss_mask_touches(&m, m.targets[0].site_id) && !ss_mask_touches(&m, 0));
    ss_mask_free(&m);

    CHECK_OK(ss_mask_parse_spec(&c, "blocks.1.attn.hook_z[head=3]", &m));
    CHECK(m.n_targets == 1 && m.targets[0].n_units == 8);
    for (int i = 0; i < 8; i++) CHECK(m.targets[0].units[i] == 24 + i);
    ss_mask_free(&m);

    /* heads and units are a union; pos= restricts positions */
    CHECK_OK(ss_mask_parse_spec(&c, "blocks.0.attn.hook_q[head=1,2,9,pos=5,pos=2]", &m));
    CHECK(m.targets[0].n_units == 9 && m.targets[0].units[0] == 2 && m.targets[0].units[1] == 8 &&
          m.targets[0].units[8] == 15);
    CHECK(m.n_positions == 2 && m.positions[0] == 2 && m.positions[1] == 5);
    ss_mask_free(&m);

    CHECK_OK(ss_mask_parse_spec(&c, "blocks.0.hook_resid_pre", &m));
    CHECK(m.n_targets == 1 && m.targets[0].units == NULL && m.targets[0].n_units == 0);
    CHECK(!strcmp(m.name, "blocks.0.hook_resid_pre"));
    ss_mask_free(&m);

    /* a glob gives one target per site */
    CHECK_OK(ss_mask_parse_spec(&c, "blocks.*.mlp.hook_post[5]", &m));
    CHECK(m.n_targets == 2 && m.targets[0].n_units == 1 && m.targets[1].units[0] == 5);
    ss_mask_free(&m);
    ss_mask_free(&m); /* freeing twice is harmless: free zeroes the struct */
}

/* A glob leaves out the attention patterns it matches, as collect, attribute and patch do with
 * --sites; named outright one is refused (mask_spec_errors). 'blocks.0.attn.*[head=1]' was
 * refused for its pattern, and '*' masked nothing. */
TEST(mask_spec_glob_leaves_out_patterns) {
    ss_config c = mcfg();
    ss_mask m;
    CHECK_OK(ss_mask_parse_spec(&c, "blocks.0.attn.*[head=1]", &m));
    CHECK(m.n_targets == 4); /* q, k, v, z */
    for (int t = 0; t < m.n_targets; t++) {
        ss_site s;
        ss_site_get(&c, m.targets[t].site_id, &s);
        CHECK(s.per_token && s.kind != SS_SITE_PATTERN && m.targets[t].n_units == 8 && m.targets[t].units[0] == 8);
    }
    ss_mask_free(&m);
    CHECK_ERR(ss_mask_parse_spec(&c, "blocks.*.attn.hook_pat*", &m), SS_ERR_ARG, "selects no site with per-token values");
}

TEST(mask_spec_errors) {
    ss_config c = mcfg();
    ss_mask m;
    CHECK_ERR(ss_mask_parse_spec(&c, "blocks.0.mlp.hook_pots[1]", &m), SS_ERR_ARG, "did you mean 'blocks.0.mlp.hook_post'");
    CHECK_ERR(ss_mask_parse_spec(&c, "blocks.0.mlp.hook_pots[1]", &m), SS_ERR_ARG, "mask 'blocks.0.mlp.hook_pots[1]'");
    CHECK_ERR(ss_mask_parse_spec(&c, "blocks.0.mlp.hook_post[128]", &m), SS_ERR_ARG, "unit 128 out of range for blocks.0.mlp.hook_post");
    CHECK_ERR(ss_mask_parse_spec(&c, "blocks.0.hook_resid_pre[32]", &m), SS_ERR_ARG, "unit 32 out of range");
    CHECK_ERR(ss_mask_parse_spec(&c, "blocks.0.hook_resid_pre[head=1]", &m), SS_ERR_ARG, "no head dimension");
    CHECK_ERR(ss_mask_parse_spec(&c, "blocks.0.attn.hook_z[head=4]", &m), SS_ERR_ARG, "head 4 out of range");
    CHECK_ERR(ss_mask_parse_spec(&c, "blocks.0.attn.hook_pattern", &m), SS_ERR_ARG, "cannot be masked");
    CHECK_ERR(ss_mask_parse_spec(&c, "blocks.0.hook_resid_pre[1,2", &m), SS_ERR_ARG, "closing ']'");
    CHECK_ERR(ss_mask_parse_spec(&c, "blocks.0.hook_resid_pre[1]x", &m), SS_ERR_ARG, "closing ']'");
    CHECK_ERR(ss_mask_parse_spec(&c, "blocks.0.hook_resid_pre]", &m), SS_ERR_ARG, "']' without '['");
    CHECK_ERR(ss_mask_parse_spec(&c, "blocks.0.hook_resid_pre[1][2]", &m), SS_ERR_ARG, "more than one '['");
    CHECK_ERR(ss_mask_parse_spec(&c, "blocks.0.hook_resid_pre[]", &m), SS_ERR_ARG, "empty unit list");
    CHECK_ERR(ss_mask_parse_spec(&c, "blocks.0.hook_resid_pre[1,,2]", &m), SS_ERR_ARG, "empty item");
    CHECK_ERR(ss_mask_parse_spec(&c, "blocks.0.hook_resid_pre[x]", &m), SS_ERR_ARG, "bad item 'x'");
    CHECK_ERR(ss_mask_parse_spec(&c, "blocks.0.hook_resid_pre[1.5]", &m), SS_ERR_ARG, "bad item '1.5'");
    CHECK_ERR(ss_mask_parse_spec(&c, "blocks.0.hook_resid_pre[-1]", &m), SS_ERR_ARG, "bad unit range '-1'");
    CHECK_ERR(ss_mask_parse_spec(&c, "blocks.0.hook_resid_pre[5-2]", &m), SS_ERR_ARG, "bad unit range '5-2'");
    /* a range past the site is refused before it is spelled out (fuzz_masks: 3-344446465 took 2.7 GB) */
    CHECK_ERR(ss_mask_parse_spec(&c, "blocks.0.hook_resid_pre[3-344446465]", &m), SS_ERR_ARG,
              "unit range '3-344446465' goes past the 32 units per token");
    CHECK_ERR(ss_mask_parse_spec(&c, "blocks.*.mlp.hook_post[0-128]", &m), SS_ERR_ARG, "goes past the 128 units");
    CHECK_OK(ss_mask_parse_spec(&c, "blocks.*.mlp.hook_post[0-127]", &m));
    CHECK(m.n_targets == c.n_layer && m.targets[0].n_units == 128);
    ss_mask_free(&m);
    CHECK_ERR(ss_mask_parse_spec(&c, "blocks.0.hook_resid_pre[pos=16]", &m), SS_ERR_ARG, "position 16 out of range");
    CHECK_ERR(ss_mask_parse_spec(&c, "blocks.0.hook_resid_pre[99999999999999999999]", &m), SS_ERR_ARG, "bad item");
    CHECK_ERR(ss_mask_parse_spec(&c, "[3]", &m), SS_ERR_ARG, "empty site name");
    /* the spec is the mask's name, so it must fit one whole: cut at 63 bytes it was no longer
     * the spec, and two specs that differ past byte 63 met in one name */
    CHECK_OK(ss_mask_parse_spec(&c, "blocks.1.mlp.hook_post[00,1,2,3,4,5,6,7,8,9,10,11,12,13,14,115]", &m));
    CHECK(!strcmp(m.name, "blocks.1.mlp.hook_post[00,1,2,3,4,5,6,7,8,9,10,11,12,13,14,115]"));
    ss_mask_free(&m);
    CHECK_ERR(ss_mask_parse_spec(&c, "blocks.1.mlp.hook_post[0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16]", &m), SS_ERR_ARG,
              "64 bytes, but a mask's name (a --mask spec is its own) holds at most 63");
    CHECK_ERR(ss_mask_parse_spec(&c, "nothing.like.this", &m), SS_ERR_ARG, "unknown site 'nothing.like.this'");
    /* a failed parse leaves nothing allocated and an empty mask */
    CHECK(m.n_targets == 0 && m.targets == NULL);
}

TEST(masks_jsonl_parses_every_field) {
    ss_config c = mcfg();
    const char *text =
        "{\"name\": \"m1\", \"site\": \"blocks.1.mlp.hook_post\", \"units\": [120, 17, 17], \"positions\": [5, 4],"
        " \"mode\": \"scale\", \"factor\": 0.25, \"seed\": 7}\n"
        "\n   \r\n"
        "{\"name\": \"spread\", \"sites\": [{\"site\": \"blocks.0.attn.hook_z\", \"heads\": [3], \"units\": [0]},"
        " {\"site\": \"blocks.1.hook_resid_post\"}], \"mode\": \"noise\", \"sigma\": 0.5, \"relative\": true}\r\n"
        "{\"site\": \"blocks.0.attn.hook_v\", \"heads\": [0], \"mode\": \"mean\"}\n"
        "{\"name\": \"n\", \"site\": \"hook_embed\", \"mode\": \"negnoise\", \"sigma\": 2, \"seed\": 123456789012}";
    ss_mask *ms = NULL;
    int n = 0;
    CHECK_OK(parse_text(&c, text, &ms, &n));
    CHECK(n == 4);
    CHECK(!strcmp(ms[0].name, "m1") && ms[0].mode == SS_MASK_SCALE && ms[0].factor == 0.25 && ms[0].seed == 7);
    CHECK(ms[0].targets[0].n_units == 2 && ms[0].targets[0].units[0] == 17 && ms[0].targets[0].units[1] == 120);
    CHECK(ms[0].n_positions == 2 && ms[0].positions[0] == 4 && ms[0].positions[1] == 5);
    CHECK(!strcmp(ms[1].name, "spread") && ms[1].mode == SS_MASK_NOISE && ms[1].sigma == 0.5 && ms[1].sigma_relative);
    CHECK(ms[1].n_targets == 2 && ms[1].targets[0].site_id == ss_site_find(&c, "blocks.0.attn.hook_z"));
    CHECK(ms[1].targets[0].n_units == 9 && ms[1].targets[0].units[0] == 0 && ms[1].targets[0].units[1] == 24);
    CHECK(ms[1].targets[1].site_id == ss_site_find(&c, "blocks.1.hook_resid_post") && !ms[1].targets[1].units);
    CHECK(!strcmp(ms[2].name, "line5") && ms[2].mode == SS_MASK_MEAN && ms[2].targets[0].n_units == 8);
    CHECK(ms[3].mode == SS_MASK_NEGNOISE && ms[3].sigma == 2 && ms[3].seed == 123456789012ull);
    int nm, ns;
    ss_mask_needs_stats(&ms[0], &nm, &ns);
    CHECK(!nm && !ns);
    ss_mask_needs_stats(&ms[1], &nm, &ns);
    CHECK(!nm && ns);
    ss_mask_needs_stats(&ms[2], &nm, &ns);
    CHECK(nm && !ns);
    ss_mask_needs_stats(&ms[3], &nm, &ns);
    CHECK(!nm && !ns);
    ss_masks_free(ms, n);

    /* the same through a file */
    char path[512];
    snprintf(path, sizeof path, "%s/masks.jsonl", ss_test_tmp_dir());
    FILE *f = fopen(path, "w");
    CHECK(f);
    fputs(text, f);
    fclose(f);
    CHECK_OK(ss_masks_read_jsonl(&c, path, &ms, &n));
    CHECK(n == 4 && !strcmp(ms[3].name, "n"));
    ss_masks_free(ms, n);
    snprintf(path, sizeof path, "%s/no-such-masks.jsonl", ss_test_tmp_dir());
    CHECK_ERR(ss_masks_read_jsonl(&c, path, &ms, &n), SS_ERR_IO, "no-such-masks.jsonl");
    CHECK(ms == NULL && n == 0);
}

/* Each bad line, after a good first line, must fail naming m.jsonl:2 and the substring. */
static int bad_line(const ss_config *c, const char *line, ss_status code, const char *substr) {
    char text[1024];
    snprintf(text, sizeof text, "{\"name\": \"ok\", \"site\": \"hook_embed\"}\n%s\n", line);
    ss_mask *ms = (ss_mask *)1;
    int n = -1;
    ss_error_clear();
    ss_status st = parse_text(c, text, &ms, &n);
    int good = st == code && strstr(ss_last_error(), substr) && strstr(ss_last_error(), "m.jsonl:2") && !ms && !n;
    if (!good) fprintf(stderr, "  line %s: got %s \"%s\"\n", line, ss_status_name(st), ss_last_error());
    return good;
}

TEST(masks_jsonl_errors_name_file_line_mask_and_field) {
    ss_config c = mcfg();
    CHECK(bad_line(&c, "{\"site\": ", SS_ERR_FORMAT, "m.jsonl:2"));
    CHECK(bad_line(&c, "[1, 2]", SS_ERR_FORMAT, "must be a JSON object"));
    CHECK(bad_line(&c, "{\"name\": \"a\", \"site\": \"hook_embed\", \"unit\": [1]}", SS_ERR_FORMAT,
                   "mask 'a': unknown field 'unit'"));
    CHECK(bad_line(&c, "{\"name\": 3, \"site\": \"hook_embed\"}", SS_ERR_FORMAT, "field 'name' must be a string"));
    CHECK(bad_line(&c, "{\"name\": \"\", \"site\": \"hook_embed\"}", SS_ERR_FORMAT, "field 'name' must be 1 to 63"));
    CHECK(bad_line(&c, "{\"name\": \"a/b\", \"site\": \"hook_embed\"}", SS_ERR_FORMAT, "contains '/'"));
    CHECK(bad_line(&c, "{\"name\": \".\", \"site\": \"hook_embed\"}", SS_ERR_FORMAT, "is a path component"));
    CHECK(bad_line(&c, "{\"name\": \"..\", \"site\": \"hook_embed\"}", SS_ERR_FORMAT, "is a path component"));
    CHECK(bad_line(&c, "{\"name\": \"ok\", \"site\": \"hook_embed\"}", SS_ERR_ARG, "mask name 'ok' used twice"));
    CHECK(bad_line(&c, "{\"name\": \"a\", \"site\": \"hook_embed\", \"mode\": \"splice\"}", SS_ERR_ARG,
                   "mask 'a': field 'mode': unknown mode 'splice'"));
    CHECK(bad_line(&c, "{\"name\": \"a\", \"site\": \"hook_embed\", \"mode\": 1}", SS_ERR_FORMAT, "field 'mode' must be"));
    CHECK(bad_line(&c, "{\"name\": \"a\", \"site\": \"hook_embed\", \"mode\": \"scale\", \"factor\": 1.5}", SS_ERR_ARG,
                   "mask 'a': field 'factor' 1.5 outside [0,1]"));
    CHECK(bad_line(&c, "{\"name\": \"a\", \"site\": \"hook_embed\", \"factor\": -0.1}", SS_ERR_ARG, "outside [0,1]"));
    CHECK(bad_line(&c, "{\"name\": \"a\", \"site\": \"hook_embed\", \"factor\": \"x\"}", SS_ERR_FORMAT, "field 'factor' must be a number"));
    CHECK(bad_line(&c, "{\"name\": \"a\", \"site\": \"hook_embed\", \"mode\": \"scale\"}", SS_ERR_ARG, "field 'factor' missing"));
    /* a field that the mode does not read is refused, not ignored */
    CHECK(bad_line(&c, "{\"name\": \"a\", \"site\": \"hook_embed\", \"factor\": 0.5}", SS_ERR_ARG,
                   "mask 'a': field 'factor' is for mode scale, not zero"));
    CHECK(bad_line(&c, "{\"name\": \"a\", \"site\": \"hook_embed\", \"mode\": \"mean\", \"sigma\": 1}", SS_ERR_ARG,
                   "field 'sigma' is for mode noise or negnoise, not mean"));
    CHECK(bad_line(&c, "{\"name\": \"a\", \"site\": \"hook_embed\", \"mode\": \"scale\", \"factor\": 0.5, \"relative\": true}",
                   SS_ERR_ARG, "field 'relative' is for mode noise or negnoise, not scale"));
    CHECK(bad_line(&c, "{\"name\": \"a\", \"site\": \"hook_embed\", \"mode\": \"slice\"}", SS_ERR_ARG,
                   "(zero, mean, scale, noise, negnoise, resample, patch)"));
    CHECK(bad_line(&c, "{\"name\": \"a\", \"site\": \"hook_embed\", \"mode\": \"noise\", \"sigma\": -1}", SS_ERR_ARG,
                   "mask 'a': field 'sigma' -1 is negative"));
    CHECK(bad_line(&c, "{\"name\": \"a\", \"site\": \"hook_embed\", \"mode\": \"negnoise\"}", SS_ERR_ARG, "field 'sigma' missing"));
    CHECK(bad_line(&c, "{\"name\": \"a\", \"site\": \"hook_embed\", \"mode\": \"noise\", \"sigma\": 1e308}", SS_ERR_ARG,
                   "field 'sigma' 1e+308 is above 1e+30"));
    CHECK(bad_line(&c, "{\"name\": \"a\", \"site\": \"hook_embed\", \"sigma\": [1]}", SS_ERR_FORMAT, "field 'sigma' must be a number"));
    CHECK(bad_line(&c, "{\"name\": \"a\", \"site\": \"hook_embed\", \"relative\": 1}", SS_ERR_FORMAT, "field 'relative'"));
    CHECK(bad_line(&c, "{\"name\": \"a\", \"site\": \"hook_embed\", \"seed\": -3}", SS_ERR_FORMAT, "field 'seed'"));
    CHECK(bad_line(&c, "{\"name\": \"a\", \"site\": \"hook_embed\", \"seed\": 1.5}", SS_ERR_FORMAT, "field 'seed'"));
    CHECK(bad_line(&c, "{\"name\": \"a\"}", SS_ERR_FORMAT, "mask 'a': field 'site' (or 'sites') missing"));
    CHECK(bad_line(&c, "{\"name\": \"a\", \"site\": \"hook_embed\", \"sites\": []}", SS_ERR_FORMAT, "not both"));
    CHECK(bad_line(&c, "{\"name\": \"a\", \"site\": 5}", SS_ERR_FORMAT, "field 'site' must be a string"));
    CHECK(bad_line(&c, "{\"name\": \"a\", \"site\": \"blocks.0.mlp.hook_pots\"}", SS_ERR_ARG,
                   "mask 'a': unknown site 'blocks.0.mlp.hook_pots' (did you mean"));
    CHECK(bad_line(&c, "{\"name\": \"a\", \"site\": \"hook_embed,hook_pos_embed\"}", SS_ERR_ARG, "contains ','"));
    CHECK(bad_line(&c, "{\"name\": \"a\", \"site\": \"blocks.1.attn.hook_pattern\"}", SS_ERR_ARG, "cannot be masked"));
    /* a site of blanks selects nothing: refused, not a mask that changes nothing (fuzz_masks) */
    CHECK(bad_line(&c, "{\"name\": \"a\", \"site\": \" \"}", SS_ERR_ARG, "mask 'a': ' ' names no site"));
    CHECK(bad_line(&c, "{\"name\": \"a\", \"site\": \"hook_embed\", \"units\": 3}", SS_ERR_FORMAT, "field 'units' must be an array"));
    CHECK(bad_line(&c, "{\"name\": \"a\", \"site\": \"hook_embed\", \"units\": [1, -2]}", SS_ERR_FORMAT,
                   "field 'units' item 1 is not a non-negative integer"));
    CHECK(bad_line(&c, "{\"name\": \"a\", \"site\": \"hook_embed\", \"units\": [2.5]}", SS_ERR_FORMAT, "field 'units' item 0"));
    CHECK(bad_line(&c, "{\"name\": \"a\", \"site\": \"hook_embed\", \"units\": []}", SS_ERR_FORMAT, "field 'units' is empty"));
    CHECK(bad_line(&c, "{\"name\": \"a\", \"site\": \"hook_embed\", \"units\": [32]}", SS_ERR_ARG,
                   "mask 'a': unit 32 out of range for hook_embed"));
    CHECK(bad_line(&c, "{\"name\": \"a\", \"site\": \"hook_embed\", \"heads\": [0]}", SS_ERR_ARG, "no head dimension"));
    CHECK(bad_line(&c, "{\"name\": \"a\", \"site\": \"blocks.0.attn.hook_k\", \"heads\": [4]}", SS_ERR_ARG, "head 4 out of range"));
    CHECK(bad_line(&c, "{\"name\": \"a\", \"site\": \"blocks.0.attn.hook_k\", \"heads\": []}", SS_ERR_FORMAT, "field 'heads' is empty"));
    CHECK(bad_line(&c, "{\"name\": \"a\", \"site\": \"hook_embed\", \"positions\": [16]}", SS_ERR_ARG,
                   "mask 'a': field 'positions': position 16 out of range"));
    CHECK(bad_line(&c, "{\"name\": \"a\", \"site\": \"hook_embed\", \"positions\": []}", SS_ERR_FORMAT, "field 'positions' is empty"));
    CHECK(bad_line(&c, "{\"name\": \"a\", \"sites\": {}}", SS_ERR_FORMAT, "field 'sites' must be a non-empty array"));
    CHECK(bad_line(&c, "{\"name\": \"a\", \"sites\": []}", SS_ERR_FORMAT, "field 'sites' must be a non-empty array"));
    CHECK(bad_line(&c, "{\"name\": \"a\", \"sites\": [3]}", SS_ERR_FORMAT, "field 'sites' item 0: must be an object"));
    CHECK(bad_line(&c, "{\"name\": \"a\", \"sites\": [{\"site\": \"hook_embed\", \"mode\": \"zero\"}]}", SS_ERR_FORMAT,
                   "field 'sites' item 0: unknown field 'mode'"));
    CHECK(bad_line(&c, "{\"name\": \"a\", \"sites\": [{\"units\": [1]}]}", SS_ERR_FORMAT, "item 0: field 'site' missing"));
    CHECK(bad_line(&c, "{\"name\": \"a\", \"sites\": [{\"site\": \"hook_embed\"}], \"units\": [1]}", SS_ERR_FORMAT,
                   "inside each entry"));
    CHECK(bad_line(&c, "{\"name\": \"a\", \"sites\": [{\"site\": \"hook_embed\"}, {\"site\": \"hook_embed\", \"units\": [1]}]}",
                   SS_ERR_ARG, "site hook_embed listed twice"));
    CHECK(bad_line(&c, "{\"name\": \"a\", \"sites\": [{\"site\": \"hook_embed\"}, {\"site\": \"blocks.0.attn.hook_z\", \"units\": [256]}]}",
                   SS_ERR_ARG, "item 1: unit 256 out of range for blocks.0.attn.hook_z"));
    ss_mask *ms = (ss_mask *)1;
    int n = -1;
    CHECK_ERR(parse_text(&c, "\n  \n", &ms, &n), SS_ERR_FORMAT, "m.jsonl: no masks");
    CHECK(!ms && !n);
}

/* ---- applying ---- */

/* Two sequences (lengths 3 and 2) packed into 5 rows of stride 5 around
 * blocks.0.hook_resid_pre of a 4-wide model; column 4 is a guard. */
static ss_config tiny_cfg(void) {
    ss_config c = {0};
    c.n_layer = 1;
    c.n_head = 2;
    c.n_embd = 4;
    c.n_inner = 8;
    c.n_positions = 8;
    c.vocab_size = 10;
    return c;
}

enum { TR = 5, TLD = 5 };
static const int64_t t_start[2] = {0, 3}, t_len[2] = {3, 2};

static void tiny_data(float *d) {
    for (int r = 0; r < TR; r++)
        for (int j = 0; j < TLD; j++) d[r * TLD + j] = (float)((r + 1) * 10 + j) * ((j % 2) ? -1.0f : 1.0f);
}

static int touched(int r, int j) {
    /* units {1,3}, positions {0,2}: rows 0 and 2 (seq 0), row 3 (seq 1, position 0) */
    return (j == 1 || j == 3) && (r == 0 || r == 2 || r == 3);
}

static ss_status tiny_apply(const char *jsonl, float *d, const ss_mask_stats *st, ss_mask *keep) {
    ss_config c = tiny_cfg();
    ss_mask *ms;
    int n;
    ss_status s = parse_text(&c, jsonl, &ms, &n);
    if (s != SS_OK) return s;
    ss_site site;
    ss_site_get(&c, ss_site_find(&c, "blocks.0.hook_resid_pre"), &site);
    ss_packing pk = {2, TR, t_start, t_len, 0};
    int64_t prompts[2] = {40, 41};
    s = ss_mask_apply(&ms[0], &site, d, TLD, &pk, prompts, st);
    /* a different site is ignored */
    ss_site other;
    ss_site_get(&c, 0, &other);
    if (s == SS_OK) s = ss_mask_apply(&ms[0], &other, d, TLD, &pk, prompts, st);
    if (keep) {
        *keep = ms[0];
        ms[0] = (ss_mask){0};
    }
    ss_masks_free(ms, n);
    return s;
}

#define TINY_MASK(extra) "{\"site\": \"blocks.0.hook_resid_pre\", \"units\": [3, 1], \"positions\": [0, 2], " extra "}"

TEST(mask_modes_zero_scale_mean_by_hand) {
    float d[TR * TLD], o[TR * TLD];
    tiny_data(o);
    memcpy(d, o, sizeof d);
    CHECK_OK(tiny_apply(TINY_MASK("\"mode\": \"zero\""), d, NULL, NULL));
    for (int r = 0; r < TR; r++)
        for (int j = 0; j < TLD; j++) CHECK(d[r * TLD + j] == (touched(r, j) ? 0.0f : o[r * TLD + j]));

    memcpy(d, o, sizeof d);
    CHECK_OK(tiny_apply(TINY_MASK("\"mode\": \"scale\", \"factor\": 0.25"), d, NULL, NULL));
    for (int r = 0; r < TR; r++)
        for (int j = 0; j < TLD; j++) CHECK(d[r * TLD + j] == (touched(r, j) ? o[r * TLD + j] / 4 : o[r * TLD + j]));
    CHECK(d[0 * TLD + 1] == -2.75f && d[3 * TLD + 3] == -10.75f);

    memcpy(d, o, sizeof d);
    double mean[4] = {100, 0.5, 200, -7.25};
    ss_mask_stats st = {.mean = mean, .std = NULL};
    CHECK_OK(tiny_apply(TINY_MASK("\"mode\": \"mean\""), d, &st, NULL));
    for (int r = 0; r < TR; r++)
        for (int j = 0; j < TLD; j++) CHECK(d[r * TLD + j] == (touched(r, j) ? (float)mean[j] : o[r * TLD + j]));

    CHECK_ERR(tiny_apply(TINY_MASK("\"name\": \"mm\", \"mode\": \"mean\""), d, NULL, NULL), SS_ERR_ARG,
              "mask 'mm': mode mean needs the per-unit means of blocks.0.hook_resid_pre");
    ss_mask_stats only_std = {.mean = NULL, .std = mean};
    CHECK_ERR(tiny_apply(TINY_MASK("\"mode\": \"mean\""), d, &only_std, NULL), SS_ERR_ARG, "needs the per-unit means");
}

TEST(mask_modes_noise_negnoise_by_formula) {
    ss_config c = tiny_cfg();
    int sid = ss_site_find(&c, "blocks.0.hook_resid_pre");
    float d[TR * TLD], o[TR * TLD];
    tiny_data(o);
    int64_t prompts[2] = {40, 41};
    for (int mode = 0; mode < 2; mode++) {
        for (int rel = 0; rel < 2; rel++) {
            memcpy(d, o, sizeof d);
            double sd[4] = {1, 3, 1, 0.5};
            ss_mask_stats st = {.mean = NULL, .std = sd};
            char js[256];
            snprintf(js, sizeof js, TINY_MASK("\"mode\": \"%s\", \"sigma\": 20, \"seed\": 99, \"relative\": %s"),
                     mode ? "negnoise" : "noise", rel ? "true" : "false");
            CHECK_OK(tiny_apply(js, d, &st, NULL));
            for (int r = 0; r < TR; r++)
                for (int j = 0; j < TLD; j++) {
                    float x = o[r * TLD + j], want = x;
                    if (touched(r, j)) {
                        int q = r >= 3;
                        double n = 20.0 * (rel ? sd[j] : 1.0) * ss_mask_noise(99, prompts[q], r - t_start[q], sid, j);
                        if (!mode) want = (float)(x + n);
                        else if (x > 0) want = (float)fmax(x - fabs(n), 0);
                        else want = (float)fmin(x + fabs(n), 0);
                    }
                    CHECK_MSG(d[r * TLD + j] == want, "mode %d rel %d r %d j %d: %g vs %g", mode, rel, r, j,
                              d[r * TLD + j], want);
                }
        }
    }
    /* the draws are what the header documents: a few fixed values guard against drift */
    double z = ss_mask_noise(0, 0, 0, 0, 0);
    CHECK(isfinite(z) && z == ss_mask_noise(0, 0, 0, 0, 0));
    CHECK(z != ss_mask_noise(1, 0, 0, 0, 0) && z != ss_mask_noise(0, 1, 0, 0, 0) && z != ss_mask_noise(0, 0, 1, 0, 0) &&
          z != ss_mask_noise(0, 0, 0, 1, 0) && z != ss_mask_noise(0, 0, 0, 0, 1));
    CHECK(ss_mask_noise(0, 1, 0, 0, 0) != ss_mask_noise(0, 0, 1, 0, 0));
    CHECK_ERR(tiny_apply(TINY_MASK("\"name\": \"rn\", \"mode\": \"noise\", \"sigma\": 1, \"relative\": true"), d, NULL, NULL),
              SS_ERR_ARG, "mask 'rn': relative noise needs the per-unit standard deviations of blocks.0.hook_resid_pre");
    /* absolute noise needs no stats */
    CHECK_OK(tiny_apply(TINY_MASK("\"mode\": \"negnoise\", \"sigma\": 1"), d, NULL, NULL));
}

TEST(mask_identity_settings_leave_bits_unchanged) {
    float d[TR * TLD], o[TR * TLD];
    tiny_data(o);
    o[0 * TLD + 1] = -0.0f;
    o[2 * TLD + 3] = NAN;
    const char *ident[] = {
        TINY_MASK("\"mode\": \"scale\", \"factor\": 1"),
        TINY_MASK("\"mode\": \"scale\", \"factor\": 1.0, \"seed\": 3"),
        TINY_MASK("\"mode\": \"noise\", \"sigma\": 0"),
        TINY_MASK("\"mode\": \"negnoise\", \"sigma\": 0"),
        /* positions no sequence reaches */
        "{\"site\": \"blocks.0.hook_resid_pre\", \"positions\": [3, 7], \"mode\": \"zero\"}",
        "{\"site\": \"blocks.0.hook_resid_pre\", \"positions\": [5], \"mode\": \"noise\", \"sigma\": 4}",
        /* another site */
        "{\"site\": \"blocks.0.mlp.hook_post\", \"mode\": \"zero\"}",
    };
    for (size_t i = 0; i < sizeof ident / sizeof ident[0]; i++) {
        memcpy(d, o, sizeof d);
        CHECK_OK(tiny_apply(ident[i], d, NULL, NULL));
        CHECK_MSG(!memcmp(d, o, sizeof d), "mask %zu changed the data", i);
    }
    /* relative noise where the unit's std is 0 leaves -0.0 alone too */
    memcpy(d, o, sizeof d);
    double sd[4] = {0, 0, 0, 0};
    ss_mask_stats st = {.mean = NULL, .std = sd};
    CHECK_OK(tiny_apply(TINY_MASK("\"mode\": \"noise\", \"sigma\": 1, \"relative\": true"), d, &st, NULL));
    CHECK(!memcmp(d, o, sizeof d));
    /* and a real change does show (the test can fail) */
    CHECK_OK(tiny_apply(TINY_MASK("\"mode\": \"scale\", \"factor\": 0.999"), d, NULL, NULL));
    CHECK(memcmp(d, o, sizeof d));
}

TEST(mask_noise_independent_of_batching) {
    ss_config c = mcfg();
    ss_mask m;
    CHECK_OK(ss_mask_parse_spec(&c, "blocks.1.mlp.hook_post[0-20,100,127]", &m));
    m.mode = SS_MASK_NOISE;
    m.sigma = 1.5;
    m.seed = 5;
    ss_site site;
    ss_site_get(&c, m.targets[0].site_id, &site);
    enum { W = 128, LD = 130 };
    const int64_t lens[3] = {4, 2, 5}, gidx[3] = {7, 8, 9};
    int64_t starts[3] = {0, 4, 6};
    float *all = calloc(11 * LD, sizeof(float)), *one = calloc(11 * LD, sizeof(float));
    CHECK(all && one);
    for (int i = 0; i < 11 * LD; i++) all[i] = one[i] = (float)(i % 17) - 8.0f;
    ss_packing pk = {3, 11, starts, lens, 0};
    ss_status s1 = ss_mask_apply(&m, &site, all, LD, &pk, gidx, NULL);
    ss_status s2 = SS_OK;
    for (int q = 0; q < 3 && s2 == SS_OK; q++) {
        int64_t z = 0;
        ss_packing p1 = {1, lens[q], &z, &lens[q], 0};
        s2 = ss_mask_apply(&m, &site, one + starts[q] * LD, LD, &p1, &gidx[q], NULL);
    }
    int same = !memcmp(all, one, 11 * LD * sizeof(float));
    /* and the noise did something, differently per prompt */
    int changed = all[0 * LD + 0] != -8.0f && all[4 * LD + 0] != all[0 * LD + 0];
    /* other prompt indices give other noise */
    for (int i = 0; i < 11 * LD; i++) one[i] = (float)(i % 17) - 8.0f;
    int64_t other[3] = {0, 1, 2};
    ss_status s3 = ss_mask_apply(&m, &site, one, LD, &pk, other, NULL);
    int differs = memcmp(all, one, 11 * LD * sizeof(float)) != 0;
    free(all);
    free(one);
    ss_mask_free(&m);
    CHECK_OK(s1);
    CHECK_OK(s2);
    CHECK_OK(s3);
    CHECK(same && changed && differs);
    (void)W;
}

/* What `ablate` does with a batch of masks: K copies of a batch's rows in one
 * buffer, copy k under mask k, applied to rows [k*R, (k+1)*R) with the copy's
 * own packing. Each copy must equal that mask applied to the batch alone. */
TEST(mask_copies_in_one_buffer_equal_masks_alone) {
    ss_config c = mcfg();
    ss_mask m[3];
    CHECK_OK(ss_mask_parse_spec(&c, "blocks.1.mlp.hook_post[0-20,100,127]", &m[0]));
    CHECK_OK(ss_mask_parse_spec(&c, "blocks.1.mlp.hook_post[3,pos=1]", &m[1]));
    CHECK_OK(ss_mask_parse_spec(&c, "blocks.1.mlp.hook_post", &m[2]));
    m[0].mode = SS_MASK_NOISE, m[0].sigma = 1.5, m[0].seed = 5;
    m[2].mode = SS_MASK_NEGNOISE, m[2].sigma = 0.7, m[2].seed = 9;
    ss_site site;
    ss_site_get(&c, m[0].targets[0].site_id, &site);
    enum { LD = 130, R = 11, K = 3 };
    const int64_t lens[3] = {4, 2, 5}, starts[3] = {0, 4, 6}, gidx[3] = {7, 8, 9};
    ss_packing pk = {3, R, starts, lens, 0};
    float *all = calloc(K * R * LD, sizeof(float)), *one = calloc(R * LD, sizeof(float));
    CHECK(all && one);
    for (int i = 0; i < K * R * LD; i++) all[i] = (float)((i % (R * LD)) % 17) - 8.0f;
    int same = 1, changed = 1;
    for (int k = 0; k < K; k++) CHECK_OK(ss_mask_apply(&m[k], &site, all + k * R * LD, LD, &pk, gidx, NULL));
    for (int k = 0; k < K; k++) {
        for (int i = 0; i < R * LD; i++) one[i] = (float)(i % 17) - 8.0f;
        changed &= memcmp(all + k * R * LD, one, R * LD * sizeof(float)) != 0;
        CHECK_OK(ss_mask_apply(&m[k], &site, one, LD, &pk, gidx, NULL));
        same &= !memcmp(all + k * R * LD, one, R * LD * sizeof(float));
    }
    /* mask 1 touches only unit 3 at position 1 of each prompt */
    int only = all[R * LD + 1 * LD + 3] == 0.0f && all[R * LD + 1 * LD + 4] == (float)((1 * LD + 4) % 17) - 8.0f;
    free(all);
    free(one);
    for (int k = 0; k < K; k++) ss_mask_free(&m[k]);
    CHECK(same && changed && only);
}

TEST(mask_negnoise_never_crosses_zero) {
    ss_config c = mcfg();
    ss_mask m;
    CHECK_OK(ss_mask_parse_spec(&c, "blocks.0.hook_resid_mid", &m));
    m.mode = SS_MASK_NEGNOISE;
    m.sigma = 3.0;
    m.seed = 11;
    ss_site site;
    ss_site_get(&c, m.targets[0].site_id, &site);
    enum { R = 16, W = 32 };
    float d[R * W], o[R * W];
    uint64_t x = 12345;
    for (int i = 0; i < R * W; i++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        o[i] = (float)((double)(x >> 11) / 9007199254740992.0 * 10.0 - 5.0);
        if (i % 50 == 0) o[i] = 0.0f;
    }
    memcpy(d, o, sizeof d);
    int64_t start = 0, len = R;
    ss_packing pk = {1, R, &start, &len, 0};
    CHECK_OK(ss_mask_apply(&m, &site, d, W, &pk, NULL, NULL));
    int zeroed = 0, moved = 0;
    for (int i = 0; i < R * W; i++) {
        CHECK_MSG(o[i] >= 0 ? (d[i] >= 0 && d[i] <= o[i]) : (d[i] <= 0 && d[i] >= o[i]), "%d: %g -> %g", i, o[i], d[i]);
        if (o[i] == 0.0f) CHECK(d[i] == 0.0f);
        zeroed += o[i] != 0 && d[i] == 0;
        moved += d[i] != 0 && d[i] != o[i];
    }
    CHECK(zeroed > 20 && moved > 20);
    ss_mask_free(&m);
}

TEST(mask_noise_mean_and_std_are_right) {
    ss_config c = mcfg();
    ss_mask m;
    CHECK_OK(ss_mask_parse_spec(&c, "blocks.1.mlp.hook_pre", &m));
    m.mode = SS_MASK_NOISE;
    m.seed = 2024;
    ss_site site;
    ss_site_get(&c, m.targets[0].site_id, &site);
    enum { NS = 800, W = 128 }; /* 102400 draws */
    float *d = calloc((size_t)NS * W, sizeof(float));
    int64_t *st = malloc(NS * sizeof(int64_t)), *ln = malloc(NS * sizeof(int64_t)), *gi = malloc(NS * sizeof(int64_t));
    CHECK(d && st && ln && gi);
    for (int i = 0; i < NS; i++) st[i] = i, ln[i] = 1, gi[i] = 1000 + i;
    ss_packing pk = {NS, NS, st, ln, 0};
    double stdv[W];
    for (int j = 0; j < W; j++) stdv[j] = 2.0;
    ss_mask_stats stats = {.mean = NULL, .std = stdv};
    int ok = 1;
    for (int rel = 0; rel < 2 && ok; rel++) {
        memset(d, 0, (size_t)NS * W * sizeof(float));
        m.sigma = 1.5;
        m.sigma_relative = rel;
        ok = ss_mask_apply(&m, &site, d, W, &pk, gi, &stats) == SS_OK;
        double want = rel ? 3.0 : 1.5, s1 = 0, s2 = 0, within = 0;
        for (int i = 0; i < NS * W; i++) {
            s1 += d[i];
            s2 += (double)d[i] * d[i];
            within += fabs(d[i]) <= want;
        }
        double n = (double)NS * W, mean = s1 / n, sd = sqrt(s2 / n - mean * mean);
        if (fabs(mean) > 0.01 * want || fabs(sd / want - 1) > 0.01 || fabs(within / n - 0.6827) > 0.005) {
            fprintf(stderr, "  rel %d: mean %g sd %g (want %g) within-1sd %g\n", rel, mean, sd, want, within / n);
            ok = 0;
        }
    }
    free(d);
    free(st);
    free(ln);
    free(gi);
    ss_mask_free(&m);
    CHECK(ok);
}

TEST(mask_mode_names_round_trip) {
    for (int i = 0; i <= SS_MASK_PATCH; i++) {
        ss_mask_mode md;
        CHECK(ss_mask_mode_parse(ss_mask_mode_name((ss_mask_mode)i), &md) == 0 && (int)md == i);
    }
    ss_mask_mode md;
    CHECK(ss_mask_mode_parse("splice", &md) < 0 && ss_mask_mode_name((ss_mask_mode)99) == NULL);
}

static const float donor_rows[3][4] = {{1, 2, 3, 4}, {10, 20, 30, 40}, {100, 200, 300, 400}};
static const float *donor_of(void *ctx, const ss_site *s, int64_t prompt, int64_t pos) {
    (void)ctx, (void)s, (void)pos;
    return donor_rows[ss_mask_resample_source(5, prompt, 3)];
}

TEST(mask_resample_takes_the_donor_rows) {
    /* The donor rule: never the prompt itself, a function of seed and index only. */
    for (int64_t i = 0; i < 50; i++) {
        int64_t j = ss_mask_resample_source(9, i, 50);
        CHECK(j >= 0 && j < 50 && j != i);
        CHECK(ss_mask_resample_source(9, i, 50) == j);
    }
    CHECK(ss_mask_resample_source(9, 0, 1) == -1);
    ss_config c = {.n_layer = 1, .n_head = 2, .n_embd = 4, .n_inner = 4, .n_positions = 8, .vocab_size = 10};
    ss_mask m;
    CHECK_OK(ss_mask_parse_spec(&c, "blocks.0.hook_resid_pre[1,3]", &m));
    m.mode = SS_MASK_RESAMPLE;
    ss_site s;
    ss_site_get(&c, m.targets[0].site_id, &s);
    float data[2][4] = {{-1, -2, -3, -4}, {-5, -6, -7, -8}};
    int64_t start[2] = {0, 1}, len[2] = {1, 1}, idx[2] = {0, 2};
    ss_packing pk = {2, 2, start, len, 0};
    ss_mask_stats none = {0};
    CHECK_ERR(ss_mask_apply(&m, &s, &data[0][0], 4, &pk, idx, &none), SS_ERR_ARG, "resample needs");
    ss_mask_stats st = {.source_row = donor_of};
    CHECK_OK(ss_mask_apply(&m, &s, &data[0][0], 4, &pk, idx, &st));
    const float *d0 = donor_rows[ss_mask_resample_source(5, 0, 3)], *d2 = donor_rows[ss_mask_resample_source(5, 2, 3)];
    CHECK(data[0][0] == -1 && data[0][1] == d0[1] && data[0][2] == -3 && data[0][3] == d0[3]);
    CHECK(data[1][0] == -5 && data[1][1] == d2[1] && data[1][2] == -7 && data[1][3] == d2[3]);
    ss_mask_free(&m);
}
