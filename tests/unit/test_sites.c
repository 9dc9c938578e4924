#include <stdlib.h>

#include "subscope/sites.h"
#include "test.h"

static ss_config small_cfg(void) {
    ss_config c = {0};
    c.n_layer = 2;
    c.n_head = 4;
    c.n_embd = 32;
    c.n_inner = 128;
    c.n_positions = 16;
    c.vocab_size = 50;
    return c;
}

TEST(glob_star_matches_dots_and_literals_elsewhere) {
    CHECK(ss_glob_match("*", "blocks.0.mlp.hook_post"));
    CHECK(ss_glob_match("blocks.*.mlp.hook_post", "blocks.11.mlp.hook_post"));
    CHECK(ss_glob_match("blocks.*.hook_post", "blocks.1.mlp.hook_post")); /* '*' spans dots */
    CHECK(!ss_glob_match("blocks.*.mlp.hook_post", "blocks.1.mlp.hook_pre"));
    CHECK(ss_glob_match("*hook_z", "blocks.3.attn.hook_z"));
    CHECK(!ss_glob_match("blocks.1", "blocks.11.hook_resid_pre"));
    CHECK(ss_glob_match("a*b*c", "aXbYbZc"));
    CHECK(!ss_glob_match("a*b*c", "aXbYbZ"));
    CHECK(ss_glob_match("", "") && !ss_glob_match("", "x"));
}

TEST(sites_enumerate_in_forward_order_with_shapes) {
    ss_config c = small_cfg();
    CHECK(ss_sites_count(&c) == 3 + 2 * 14);
    ss_site s;
    ss_site_get(&c, 0, &s);
    CHECK(!strcmp(s.name, "hook_embed") && s.width == 32);
    ss_site_get(&c, ss_site_id(&c, SS_SITE_Q, 1), &s);
    CHECK(!strcmp(s.name, "blocks.1.attn.hook_q") && s.ndim == 2 && s.dims[0] == 4 && s.dims[1] == 8);
    ss_site_get(&c, ss_site_id(&c, SS_SITE_MLP_POST, 0), &s);
    CHECK(!strcmp(s.name, "blocks.0.mlp.hook_post") && s.width == 128);
    ss_site_get(&c, ss_site_id(&c, SS_SITE_PATTERN, 0), &s);
    CHECK(!strcmp(s.name, "blocks.0.attn.hook_pattern") && !s.per_token);
    ss_site_get(&c, ss_sites_count(&c) - 1, &s);
    CHECK(!strcmp(s.name, "ln_final.hook_normalized"));
    for (int i = 0; i < ss_sites_count(&c); i++) {
        ss_site_get(&c, i, &s);
        CHECK(ss_site_find(&c, s.name) == i);
        CHECK(s.layer < 0 || ss_site_id(&c, s.kind, s.layer) == i);
    }
}

TEST(sites_select_globs_and_unknown_names) {
    ss_config c = small_cfg();
    uint8_t want[64];
    int n;
    CHECK_OK(ss_sites_select(&c, "blocks.*.mlp.hook_post, hook_embed", want, &n));
    CHECK(n == 3 && want[0] && want[ss_site_id(&c, SS_SITE_MLP_POST, 1)]);
    CHECK_OK(ss_sites_select(&c, "*", want, &n));
    CHECK(n == ss_sites_count(&c));
    CHECK_OK(ss_sites_select(&c, "*,*", want, &n)); /* overlaps count once */
    CHECK(n == ss_sites_count(&c));
    CHECK_ERR(ss_sites_select(&c, "blocks.0.mlp.hook_postt", want, &n), SS_ERR_ARG,
              "unknown site 'blocks.0.mlp.hook_postt' (did you mean 'blocks.0.mlp.hook_post'?");
    CHECK_ERR(ss_sites_select(&c, "blocks.9.*", want, &n), SS_ERR_ARG, "unknown site 'blocks.9.*'");
    /* blanks and commas name nothing: refused (an empty string selects nothing, for callers to judge) */
    CHECK_ERR(ss_sites_select(&c, " , ,", want, &n), SS_ERR_ARG, "' , ,' names no site");
    CHECK_OK(ss_sites_select(&c, "", want, &n));
    CHECK(n == 0);
}
