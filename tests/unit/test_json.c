#include <stdlib.h>

#include "subscope/json.h"
#include "subscope/util.h"
#include "test.h"

static ss_status parse(const char *s, ss_json_doc **d) { return ss_json_parse(s, strlen(s), "t.json", d); }

TEST(json_parses_nested_document) {
    ss_json_doc *d;
    CHECK_OK(parse(" {\"a\": [1, -2.5e1, true, false, null, \"x\\u00e9\\ud83d\\ude00\\n\"],\n \"b\": {\"c\": 9007199254740993}, \"a\": 3}", &d));
    const ss_json *r = ss_json_root(d);
    CHECK(r->type == SS_JSON_OBJECT && r->len == 3);
    const ss_json *a = &r->items[0];
    CHECK(a->type == SS_JSON_ARRAY && a->len == 6);
    CHECK(a->items[0].is_int && a->items[0].i == 1);
    CHECK(!a->items[1].is_int && a->items[1].num == -25.0);
    CHECK(a->items[2].type == SS_JSON_BOOL && a->items[2].boolean == 1);
    CHECK(a->items[4].type == SS_JSON_NULL);
    CHECK(a->items[5].len == 8 && !memcmp(a->items[5].str, "x\xc3\xa9\xf0\x9f\x98\x80\n", 8));
    int64_t big = 0;
    CHECK(ss_json_get_int(ss_json_get(r, "b"), "c", &big) == 1 && big == 9007199254740993LL);
    int64_t dup = 0; /* the last duplicate wins */
    CHECK(ss_json_get_int(r, "a", &dup) == 1 && dup == 3);
    const char *s;
    CHECK(ss_json_get_str(r, "b", &s) == -1);
    CHECK(ss_json_get_str(r, "zz", &s) == 0);
    ss_json_free(d);
}

TEST(json_embedded_nul_and_empty_containers) {
    ss_json_doc *d;
    CHECK_OK(parse("[\"a\\u0000b\", [], {}]", &d));
    const ss_json *r = ss_json_root(d);
    CHECK(r->items[0].len == 3 && r->items[0].str[1] == 0);
    CHECK(r->items[1].type == SS_JSON_ARRAY && r->items[1].len == 0);
    CHECK(r->items[2].type == SS_JSON_OBJECT && r->items[2].len == 0);
    ss_json_free(d);
}

TEST(json_errors_name_line_and_column) {
    ss_json_doc *d = NULL;
    CHECK_ERR(parse("{\n  \"a\": 1,\n  \"b\" 2}", &d), SS_ERR_FORMAT, "t.json:3:7: ':' expected");
    CHECK_ERR(parse("[1, 2", &d), SS_ERR_FORMAT, "unterminated array");
    CHECK_ERR(parse("{\"a\": 1,}", &d), SS_ERR_FORMAT, "object key");
    CHECK_ERR(parse("[01]", &d), SS_ERR_FORMAT, "t.json:1:3");
    CHECK_ERR(parse("[1.]", &d), SS_ERR_FORMAT, "bad number");
    CHECK_ERR(parse("\"abc", &d), SS_ERR_FORMAT, "unterminated string");
    CHECK_ERR(parse("\"a\tb\"", &d), SS_ERR_FORMAT, "control character");
    CHECK_ERR(parse("\"\\ud800\"", &d), SS_ERR_FORMAT, "surrogate");
    CHECK_ERR(parse("\"\\x\"", &d), SS_ERR_FORMAT, "invalid escape");
    CHECK_ERR(parse("\"\xff\"", &d), SS_ERR_FORMAT, "invalid UTF-8");
    CHECK_ERR(parse("\"\xc0\xaf\"", &d), SS_ERR_FORMAT, "invalid UTF-8"); /* overlong */
    CHECK_ERR(parse("tru", &d), SS_ERR_FORMAT, "unexpected character");
    CHECK_ERR(parse("1 2", &d), SS_ERR_FORMAT, "after the JSON value");
    CHECK_ERR(parse("", &d), SS_ERR_FORMAT, "unexpected end");
    CHECK(d == NULL);
}

TEST(json_depth_is_limited) {
    char buf[2100];
    memset(buf, '[', 1000);
    memset(buf + 1000, ']', 1000);
    buf[2000] = 0;
    ss_json_doc *d = NULL;
    CHECK_ERR(parse(buf, &d), SS_ERR_FORMAT, "nesting too deep");
    buf[0] = 0;
    memset(buf, '[', 100);
    memset(buf + 100, ']', 100);
    buf[200] = 0;
    CHECK_OK(parse(buf, &d));
    ss_json_free(d);
}

/* The writers' literals parse back to the bytes they were given: every byte
 * below 0x80 (NUL, controls, quote, backslash among them) and some UTF-8. */
TEST(json_writers_round_trip) {
    char src[140];
    size_t n = 0;
    for (int c = 0; c < 0x80; c++) src[n++] = (char)c;
    memcpy(src + n, "\xc3\xa9\xf0\x9f\x98\x80", 6), n += 6;
    ss_sbuf b = {0};
    ss_sb_put(&b, "[", 1);
    ss_json_sb_str(&b, src, n);
    ss_sb_str(&b, ", ");
    ss_json_sb_str(&b, "", 0);
    ss_sb_put(&b, "]", 1);
    CHECK(!b.oom && b.p[b.n] == 0 && strlen(b.p) == b.n);
    CHECK(strstr(b.p, "\\n\\u000b") && strstr(b.p, "\\\"") && strstr(b.p, "\\\\"));
    ss_json_doc *d;
    CHECK_OK(parse(b.p, &d));
    const ss_json *r = ss_json_root(d);
    CHECK(r->len == 2 && r->items[0].len == n && !memcmp(r->items[0].str, src, n) && r->items[1].len == 0);
    ss_json_free(d);

    /* to a file: the same text as the buffer's */
    FILE *f = tmpfile();
    CHECK(f != NULL);
    ss_json_write_str(f, src, n);
    long len = ftell(f);
    rewind(f);
    char *back = malloc((size_t)len + 1);
    CHECK(back && fread(back, 1, (size_t)len, f) == (size_t)len);
    fclose(f);
    CHECK((size_t)len == b.n - 6 && !memcmp(back, b.p + 1, (size_t)len)); /* less "[", ", \"\"]" */
    free(back);
    free(b.p);
}

/* ss_sb_printf as snprintf, across growth of the buffer. */
TEST(util_sbuf_printf_grows) {
    ss_sbuf b = {0};
    char want[40000];
    size_t w = 0;
    for (int i = 0; i < 3000; i++) {
        ss_sb_printf(&b, "%d:%s;", i, i % 7 ? "x" : "yyyyyyyyyyyy");
        w += (size_t)snprintf(want + w, sizeof want - w, "%d:%s;", i, i % 7 ? "x" : "yyyyyyyyyyyy");
    }
    ss_sb_printf(&b, "%s", ""); /* nothing added */
    CHECK(!b.oom && b.n == w && !memcmp(b.p, want, w) && b.p[w] == 0);
    free(b.p);
}

/* ss_utf8_len: valid characters' lengths, 0 for bytes that cannot begin one, -k for a character cut short. */
TEST(util_utf8_len) {
    CHECK(ss_utf8_len("a", 1) == 1 && ss_utf8_len("\xc3\xa9", 2) == 2 && ss_utf8_len("\xe2\x82\xac", 3) == 3);
    CHECK(ss_utf8_len("\xf0\x9f\x98\x80", 4) == 4 && ss_utf8_len("\xf4\x8f\xbf\xbf", 4) == 4);
    CHECK(ss_utf8_len("\xc3", 1) == -1 && ss_utf8_len("\xe2\x82", 2) == -2 && ss_utf8_len("\xf0\x9f\x98", 3) == -3);
    CHECK(ss_utf8_len("\xe2", 1) == -1 && ss_utf8_len("\xe0", 1) == -1); /* a lone lead may still begin one */
    CHECK(ss_utf8_len("\x80", 1) == 0 && ss_utf8_len("\xc0\x80", 2) == 0 && ss_utf8_len("\xc1\xbf", 2) == 0);
    CHECK(ss_utf8_len("\xe0\x80", 2) == 0 && ss_utf8_len("\xe0\x9f\xbf", 3) == 0); /* overlong */
    CHECK(ss_utf8_len("\xed\xa0", 2) == 0 && ss_utf8_len("\xed\xa0\x80", 3) == 0); /* surrogate */
    CHECK(ss_utf8_len("\xf4\x90", 2) == 0 && ss_utf8_len("\xf5\x80\x80\x80", 4) == 0); /* past U+10FFFF */
    CHECK(ss_utf8_len("\xf0\x8f", 2) == 0 && ss_utf8_len("\xc3\x41", 2) == 0 && ss_utf8_len("\xff", 1) == 0);
    CHECK(ss_utf8_len("\xc3\xa9", 0) == 0);
}

/* A token's text quoted for a terminal: UTF-8 as it is, escapes for the rest. */
TEST(util_sb_quoted_escapes_invalid_utf8) {
    static const struct { const char *in; size_t n; char q; const char *want; } c[] = {
        {"caf\xc3\xa9", 5, '"', "\"caf\xc3\xa9\""},
        {"\xdd", 1, '"', "\"\\xdd\""},               /* a byte-fallback token */
        {"\xe2\x82", 2, '\'', "'\\xe2\\x82'"},        /* two bytes of a three-byte character */
        {"a\"b\\c\nd\te", 9, '"', "\"a\\\"b\\\\c\\nd\\te\""},
        {"it's", 4, '\'', "'it\\'s'"},
        {"\x1a\x7f\0z", 4, '"', "\"\\x1a\\x7f\\x00z\""},
        {"\xed\xa0\x80", 3, '"', "\"\\xed\\xa0\\x80\""}, /* a surrogate's encoding */
        {"", 0, '"', "\"\""},
    };
    for (size_t i = 0; i < sizeof c / sizeof *c; i++) {
        ss_sbuf b = {0};
        ss_sb_quoted(&b, c[i].in, c[i].n, c[i].q);
        CHECK_MSG(!b.oom && b.p && !strcmp(b.p, c[i].want), "case %zu: got %s, want %s", i, b.p ? b.p : "(null)",
                  c[i].want);
        free(b.p);
    }
}

/* A table cell of quoted token text (trace's, 14 characters): a cut lands between whole characters and
 * escapes, keeps the closing quote and shows as "…"; the width counts characters, not bytes (before, the
 * quoted text was cut at 14 characters after the fact: mid-escape, without its closing quote). */
TEST(util_sb_quoted_cut_keeps_whole_escapes) {
    static const struct { const char *in; int width; const char *want; } c[] = {
        {" congratulations", 14, "' congratula\xe2\x80\xa6'"},
        {" congratulation", 17, "' congratulation'"},   /* fits: not cut */
        {"abcdefghijkl", 14, "'abcdefghijkl'"},         /* exactly 14 */
        {"abcdefghijklm", 14, "'abcdefghijk\xe2\x80\xa6'"},
        {"\\\\\\\\\\\\\\\\", 14, "'\\\\\\\\\\\\\\\\\\\\\xe2\x80\xa6'"}, /* 8 backslashes: 5 escapes, not 5.5 */
        {"abcdefgh\xdd\xde", 14, "'abcdefgh\xe2\x80\xa6'"}, /* no room for \xdd and the ellipsis */
        {"a\tb\nc'd\x01", 12, "'a\\tb\\nc\\'\xe2\x80\xa6'"},
        /* CJK: 3 bytes and 2 columns a character; 14 of them in 14 columns are cut after 5 whole
         * ones (10 columns, and the quotes and the ellipsis: 13; a sixth would make 15) */
        {"\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e"
         "\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e\xe6\x97\xa5\xe6\x9c\xac", 14,
         "'\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e\xe6\x97\xa5\xe6\x9c\xac\xe2\x80\xa6'"},
        {"\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e", 8, "'\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e'"}, /* 3 CJK: 8 columns */
        {"\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e", 7, "'\xe6\x97\xa5\xe6\x9c\xac\xe2\x80\xa6'"}, /* 7: 2 of them */
        {"\xf0\x9f\x98\x80\xf0\x9f\x98\x80\xf0\x9f\x98\x80", 6, "'\xf0\x9f\x98\x80\xe2\x80\xa6'"}, /* emoji: 2 columns */
        {"\xf0\x9f\x98\x80\xf0\x9f\x98\x80\xf0\x9f\x98\x80", 4, "'\xe2\x80\xa6'"}, /* no room for one */
        /* combining accents take no column: e + U+0301 five times fits 7 columns; cut, an accent
         * stays with its letter */
        {"e\xcc\x81" "e\xcc\x81" "e\xcc\x81" "e\xcc\x81" "e\xcc\x81", 7, "'e\xcc\x81" "e\xcc\x81" "e\xcc\x81" "e\xcc\x81" "e\xcc\x81'"},
        {"e\xcc\x81" "e\xcc\x81" "e\xcc\x81" "e\xcc\x81" "e\xcc\x81", 6, "'e\xcc\x81" "e\xcc\x81" "e\xcc\x81\xe2\x80\xa6'"},
        {"abcdef", 2, "'\xe2\x80\xa6'"}, /* narrower than the quotes and the ellipsis */
        {"", 14, "''"},
    };
    for (size_t i = 0; i < sizeof c / sizeof *c; i++) {
        ss_sbuf b = {0};
        ss_sb_quoted_cut(&b, c[i].in, strlen(c[i].in), '\'', c[i].width);
        CHECK_MSG(!b.oom && b.p && !strcmp(b.p, c[i].want), "case %zu: got %s, want %s", i, b.p ? b.p : "(null)",
                  c[i].want);
        CHECK_MSG(b.p && ss_display_width_str(b.p) <= (c[i].width > 3 ? c[i].width : 3), "case %zu: %d columns", i,
                  b.p ? ss_display_width_str(b.p) : -1);
        free(b.p);
    }
    /* width 0: ss_sb_quoted's text, however long */
    ss_sbuf b = {0};
    ss_sb_quoted_cut(&b, " congratulations", 16, '"', 0);
    CHECK(b.p && !strcmp(b.p, "\" congratulations\""));
    free(b.p);
}

/* Streamed text (predict --generate): a character split across two writes is written whole once
 * its bytes complete; bytes that never form one are written as \xNN, also at the end. */
TEST(util_fput_utf8_streams_split_characters) {
    char path[4096], got[256];
    snprintf(path, sizeof path, "%s/fput_utf8.txt", ss_test_tmp_dir());
    FILE *f = fopen(path, "w+");
    CHECK(f);
    char held[8];
    size_t nh = 0;
    /* "é" split 1 + 1, "€" split 2 + 1, "😀" split 1 + 1 + 2, a stray continuation, a lead that never completes */
    static const char *const parts[] = {"ab\xc3", "\xa9 \xe2\x82", "\xac\x80", "x\xf0", "\x9f", "\x98\x80", "\xe2", "z\xc3"};
    for (size_t i = 0; i < sizeof parts / sizeof *parts; i++) {
        char all[64];
        size_t n = strlen(parts[i]);
        memcpy(all, held, nh);
        memcpy(all + nh, parts[i], n);
        size_t keep = ss_fput_utf8(f, all, nh + n, 0);
        CHECK(keep <= 3);
        memcpy(held, all + nh + n - keep, keep);
        nh = keep;
    }
    CHECK(nh == 1);
    CHECK(ss_fput_utf8(f, held, nh, 1) == 0);
    rewind(f);
    size_t r = fread(got, 1, sizeof got - 1, f);
    fclose(f);
    got[r] = 0;
    const char *want = "ab\xc3\xa9 \xe2\x82\xac\\x80x\xf0\x9f\x98\x80\\xe2z\\xc3";
    CHECK_MSG(!strcmp(got, want), "got %s", got);
}

TEST(util_half_conversions_round_trip) {
    /* Every finite half value converts to fp32 and back unchanged. */
    for (uint32_t h = 0; h < 0x10000; h++) {
        if ((h & 0x7c00) == 0x7c00 && (h & 0x3ff)) continue; /* NaN payloads */
        float f = ss_f16_to_f32((uint16_t)h);
        CHECK_MSG(ss_f32_to_f16(f) == h, "half 0x%04x -> %g -> 0x%04x", h, f, ss_f32_to_f16(f));
    }
    CHECK(ss_f16_to_f32(0x3c00) == 1.0f && ss_f16_to_f32(0xc000) == -2.0f);
    CHECK(ss_f16_to_f32(0x0001) == 5.9604644775390625e-08f);
    CHECK(ss_f32_to_f16(65520.f) == 0x7c00);          /* rounds up to infinity */
    CHECK(ss_f32_to_f16(2.9802322387695312e-08f) == 0); /* exactly half the smallest subnormal: to even */
    CHECK(ss_bf16_to_f32(0x3f80) == 1.0f && ss_f32_to_bf16(1.0f) == 0x3f80);
    CHECK(ss_f32_to_bf16(1.00390625f) == 0x3f80);      /* tie rounds to even */
    CHECK(ss_f32_to_bf16(1.01171875f) == 0x3f82);
}

TEST(util_dims_product_overflow) {
    size_t n;
    int64_t ok[3] = {2, 3, 4}, big[3] = {1LL << 40, 1LL << 30, 2};
    CHECK_OK(ss_dims_product(ok, 3, &n, "x"));
    CHECK(n == 24);
    CHECK_ERR(ss_dims_product(big, 3, &n, "tensor w"), SS_ERR_NOMEM, "tensor w");
}

/* Whole numbers are read strictly: digits with an optional '-', nothing else; strtoll took a
 * leading space or '+' and stopped at trailing text ("--positions ' 1:+5'" was 1:5). */
TEST(util_parse_int_strict) {
    static const struct { const char *s; int ok; int64_t v; } c[] = {
        {"0", 1, 0}, {"12", 1, 12}, {"-7", 1, -7}, {"-0", 1, 0}, {"007", 1, 7},
        {"9223372036854775807", 1, INT64_MAX}, {"-9223372036854775808", 1, INT64_MIN},
        {"9223372036854775808", 0, 0}, {"-9223372036854775809", 0, 0}, {"99999999999999999999", 0, 0},
        {"", 0, 0}, {"-", 0, 0}, {" 1", 0, 0}, {"+1", 0, 0}, {"1 ", 0, 0}, {"1x", 0, 0}, {"0x10", 0, 0},
        {"1e3", 0, 0}, {"--1", 0, 0}, {"\t1", 0, 0}, {"1.0", 0, 0},
    };
    for (size_t i = 0; i < sizeof c / sizeof *c; i++) {
        int64_t v = 12345;
        const int ok = ss_parse_int(c[i].s, &v);
        CHECK_MSG(ok == c[i].ok, "case %zu '%s': %d", i, c[i].s, ok);
        CHECK_MSG(ok ? v == c[i].v : v == 12345, "case %zu '%s': %lld", i, c[i].s, (long long)v);
    }
    int64_t v = 0;
    CHECK(ss_parse_int_n("12:34", 2, &v) && v == 12);
    CHECK(!ss_parse_int_n("12:34", 3, &v) && v == 12);
    CHECK(!ss_parse_int_n("", 0, &v) && !ss_parse_int(NULL, &v));
}

/* Settings from the environment: unset or empty give the default; every other value must be
 * one the setting takes, or an error names the variable, its value and what it takes. */
TEST(util_env_settings_strict) {
    const char *var = "SUBSCOPE_TEST_SETTING";
    int64_t i = -1;
    double d = -1;
    int c = -1;
    static const char *const names[] = {"0", "1", "trace", NULL};
    unsetenv(var);
    CHECK(ss_env_int(var, 1, 10, 5, "things", &i) == SS_OK && i == 5);
    CHECK(ss_env_real(var, 0, 10, 2.5, "s", &d) == SS_OK && d == 2.5);
    CHECK(ss_env_choice(var, names, 1, "0, 1 or trace", &c) == SS_OK && c == 1);
    setenv(var, "", 1);
    CHECK(ss_env_int(var, 1, 10, 5, "things", &i) == SS_OK && i == 5);
    setenv(var, "7", 1);
    CHECK(ss_env_int(var, 1, 10, 5, "things", &i) == SS_OK && i == 7);
    setenv(var, "0.25", 1);
    CHECK(ss_env_real(var, 0, 10, 2.5, "s", &d) == SS_OK && d == 0.25);
    setenv(var, "trace", 1);
    CHECK(ss_env_choice(var, names, 1, "0, 1 or trace", &c) == SS_OK && c == 2);
    static const char *const bad_int[] = {" 7", "+7", "7x", "7 ", "0", "11", "abc", "-", "99999999999999999999"};
    for (size_t k = 0; k < sizeof bad_int / sizeof *bad_int; k++) {
        setenv(var, bad_int[k], 1);
        i = -1;
        CHECK_MSG(ss_env_int(var, 1, 10, 5, "things", &i) == SS_ERR_ARG && i == -1, "'%s' taken", bad_int[k]);
        char want[128];
        snprintf(want, sizeof want, "SUBSCOPE_TEST_SETTING='%s': must be a whole number of things in 1..10", bad_int[k]);
        CHECK_MSG(strstr(ss_last_error(), want), "'%s': %s", bad_int[k], ss_last_error());
    }
    static const char *const bad_real[] = {" 1", "+1", "1s", "inf", "nan", "0x1p3", "-1", "11", ".", "1e999"};
    for (size_t k = 0; k < sizeof bad_real / sizeof *bad_real; k++) {
        setenv(var, bad_real[k], 1);
        CHECK_MSG(ss_env_real(var, 0, 10, 2.5, "s", &d) == SS_ERR_ARG, "'%s' taken", bad_real[k]);
        CHECK_MSG(strstr(ss_last_error(), "SUBSCOPE_TEST_SETTING='") && strstr(ss_last_error(), "in 0..10"), "'%s': %s",
                  bad_real[k], ss_last_error());
    }
    static const char *const bad_choice[] = {"yes", " 1", "1 ", "TRACE", "01"};
    for (size_t k = 0; k < sizeof bad_choice / sizeof *bad_choice; k++) {
        setenv(var, bad_choice[k], 1);
        CHECK_MSG(ss_env_choice(var, names, 1, "0, 1 or trace", &c) == SS_ERR_ARG, "'%s' taken", bad_choice[k]);
        CHECK_MSG(strstr(ss_last_error(), "must be 0, 1 or trace"), "'%s': %s", bad_choice[k], ss_last_error());
    }
    unsetenv(var);
}

/* Every setting subscope checks before a command runs (ss_env_check) refuses a value it does not
 * take, naming it; before, SUBSCOPE_TIMING=yes was on, SUBSCOPE_NCCL_CHUNK=1x the default,
 * SUBSCOPE_SEND_THREAD=off on, SUBSCOPE_THREADS=' 4' 4. */
TEST(util_env_check_names_the_bad_setting) {
    static const struct { const char *var, *bad, *good; } c[] = {
        {"SUBSCOPE_THREADS", " 4", "4"},         {"SUBSCOPE_THREADS", "+4", "1024"},
        {"SUBSCOPE_THREADS", "1025", "1"},       {"SUBSCOPE_DIST_TIMEOUT", "0", "0.5"},
        {"SUBSCOPE_DIST_TIMEOUT", "5m", "300"},  {"SUBSCOPE_DIST", "gloo", "nccl"},
        {"SUBSCOPE_NCCL_CHUNK", "1x", "1000"},   {"SUBSCOPE_NCCL_CHUNK", "8", "16"},
        {"SUBSCOPE_TIMING", "yes", "1"},         {"SUBSCOPE_SEND_THREAD", "off", "0"},
        {"SUBSCOPE_PREDICT_RECOMPUTE", "2", "1"}, {"SUBSCOPE_PREDICT_TRACE", "true", "0"},
    };
    for (size_t i = 0; i < sizeof c / sizeof *c; i++) {
        char *saved = getenv(c[i].var) ? strdup(getenv(c[i].var)) : NULL;
        setenv(c[i].var, c[i].bad, 1);
        CHECK_MSG(ss_env_check() == SS_ERR_ARG, "%s='%s' taken", c[i].var, c[i].bad);
        char want[96];
        snprintf(want, sizeof want, "%s='%s': must be", c[i].var, c[i].bad);
        CHECK_MSG(strstr(ss_last_error(), want), "%s", ss_last_error());
        setenv(c[i].var, c[i].good, 1);
        CHECK_MSG(ss_env_check() == SS_OK, "%s='%s' refused: %s", c[i].var, c[i].good, ss_last_error());
        if (saved) setenv(c[i].var, saved, 1);
        else unsetenv(c[i].var);
        free(saved);
    }
    setenv("SUBSCOPE_TIMING", "1", 1);
    CHECK(ss_env_flag("SUBSCOPE_TIMING") == 1);
    setenv("SUBSCOPE_TIMING", "0", 1);
    CHECK(ss_env_flag("SUBSCOPE_TIMING") == 0);
    unsetenv("SUBSCOPE_TIMING");
    CHECK(ss_env_flag("SUBSCOPE_TIMING") == 0);
}

/* Display columns (ss_display_width): East Asian Wide and Fullwidth characters take 2, combining
 * marks and zero-width format characters 0, everything else 1; a byte that is not UTF-8, 1. */
TEST(util_display_width) {
    static const struct { const char *s; int w; } c[] = {
        {"", 0}, {"abc", 3}, {"caf\xc3\xa9", 4},                          /* é precomposed */
        {"cafe\xcc\x81", 4},                                              /* e + U+0301 */
        {"\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e", 6},                        /* 日本語 */
        {"\xe3\x81\x82\xe3\x82\xa2", 4},                                  /* あア: kana */
        {"\xea\xb0\x80", 2},                                              /* 가: Hangul syllable */
        {"\xef\xbc\xa1", 2},                                              /* Ａ: fullwidth */
        {"\xef\xbd\xb1", 1},                                              /* ｱ: halfwidth kana */
        {"\xf0\x9f\x98\x80", 2},                                          /* 😀 */
        {"\xf0\x9f\x91\x8d\xf0\x9f\x8f\xbd", 4},                          /* 👍 and a skin tone: 2 + 2 */
        {"a\xe2\x80\x8b" "b", 2},                                            /* a zero-width space b */
        {"\xe2\x80\xa6", 1},                                              /* … */
        {"\xd0\x96", 1},                                                  /* Ж */
        {"\xe0\xa4\x95\xe0\xa5\x8d", 1},                                  /* क् : virama 0 */
        {"\xff\xfe", 2},                                                  /* not UTF-8: a column a byte */
        {"\xe6\x97", 2},                                                  /* a cut-short character */
    };
    for (size_t i = 0; i < sizeof c / sizeof *c; i++)
        CHECK_MSG(ss_display_width_str(c[i].s) == c[i].w, "case %zu: %d columns, want %d", i, ss_display_width_str(c[i].s),
                  c[i].w);
    CHECK(ss_cp_width(0x4E00) == 2 && ss_cp_width(0x9FFF) == 2 && ss_cp_width(0x0301) == 0 && ss_cp_width(0x20DD) == 0);
    CHECK(ss_cp_width(0xAC00) == 2 && ss_cp_width(0xD7A3) == 2 && ss_cp_width(0x1160) == 0 && ss_cp_width(0xFEFF) == 0);
    CHECK(ss_cp_width('A') == 1 && ss_cp_width(0xAD) == 1 && ss_cp_width(0x10FFFF) == 1 && ss_cp_width(0x20000) == 2);
    /* a table cell: cut and padded by columns */
    static const struct { const char *s; int width; const char *want; } f[] = {
        {"\xe6\x97\xa5\xe6\x9c\xac", 6, "\xe6\x97\xa5\xe6\x9c\xac  "},      /* 4 columns + 2 spaces */
        {"\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e", 5, "\xe6\x97\xa5\xe6\x9c\xac "}, /* the third does not fit: a space */
        {"cafe\xcc\x81" "s", 5, "cafe\xcc\x81" "s"},                          /* the accent takes no column */
        {"cafe\xcc\x81", 4, "cafe\xcc\x81"},                            /* kept with its letter at the edge */
        {"abcdef", 3, "abc"},
        {"ab", 4, "ab  "},
        {"\xe6\x97\xa5_vs_b", -8, "\xe6\x97\xa5_vs_b "}, /* negative: ss_fput_pad to 8; 7 columns */
        {"abcdef", -3, "abcdef"},                            /* ss_fput_pad never cuts */
    };
    for (size_t i = 0; i < sizeof f / sizeof *f; i++) {
        char *buf = NULL;
        size_t len = 0;
        FILE *m = open_memstream(&buf, &len);
        if (!m) continue;
        if (f[i].width < 0) ss_fput_pad(m, f[i].s, -f[i].width);
        else ss_fput_col(m, f[i].s, f[i].width);
        fclose(m);
        CHECK_MSG(buf && !strcmp(buf, f[i].want), "cell %zu: '%s', want '%s'", i, buf ? buf : "", f[i].want);
        free(buf);
    }
}
