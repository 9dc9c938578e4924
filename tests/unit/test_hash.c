#include <stdlib.h>

#include "subscope/hash.h"
#include "subscope/util.h"
#include "test.h"

static void hex_of(const char *msg, size_t n, char out[65]) {
    ss_sha256 s;
    ss_sha256_init(&s);
    ss_sha256_update(&s, msg, n);
    ss_sha256_hex(&s, out);
}

TEST(sha256_known_vectors) {
    char h[65];
    hex_of("", 0, h);
    CHECK(!strcmp(h, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"));
    hex_of("abc", 3, h);
    CHECK(!strcmp(h, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"));
    const char *two = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"; /* 56 bytes: padding spills a block */
    hex_of(two, strlen(two), h);
    CHECK(!strcmp(h, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"));
    /* Fed in pieces, the same digest. */
    ss_sha256 s;
    ss_sha256_init(&s);
    for (size_t i = 0; i < strlen(two); i += 5) ss_sha256_update(&s, two + i, strlen(two) - i < 5 ? strlen(two) - i : 5);
    char h2[65];
    ss_sha256_hex(&s, h2);
    CHECK(!strcmp(h, h2));
}

/* ss_hash64: pinned values (a checkpoint's identity depends on them), every
 * single-bit change of a buffer moves it, and the length and seed count. */
TEST(hash64_pinned_and_sensitive) {
    CHECK(ss_hash64("", 0, 0) == ss_hash64("", 0, 0));
    CHECK(ss_hash64("abc", 3, 0) != ss_hash64("abc", 3, 1));
    CHECK(ss_hash64("abc", 3, 0) != ss_hash64("abc\0", 4, 0));
    uint8_t buf[1000];
    for (int i = 0; i < 1000; i++) buf[i] = (uint8_t)(i * 37 + 11);
    const uint64_t h = ss_hash64(buf, sizeof buf, 7);
    CHECK_MSG(h == 0x106d0c9daf945fcfULL, "%016llx", (unsigned long long)h);
    CHECK(ss_hash64("abc", 3, 0) == 0x44bc2cf5ad770999ULL);
    int moved = 0;
    for (int i = 0; i < 1000; i++)
        for (int b = 0; b < 8; b += 3) {
            buf[i] ^= (uint8_t)(1 << b);
            moved += ss_hash64(buf, sizeof buf, 7) != h;
            buf[i] ^= (uint8_t)(1 << b);
        }
    CHECK(moved == 3000);
    /* lengths 0..40 (the short tail, the 32-byte lanes and both) are all distinct */
    uint64_t seen[41];
    for (int n = 0; n <= 40; n++) {
        seen[n] = ss_hash64(buf, (size_t)n, 0);
        for (int k = 0; k < n; k++) CHECK(seen[k] != seen[n]);
    }
}

/* A file's fingerprint: the same for the same bytes, another for one byte changed. */
TEST(file_fingerprint_tracks_contents) {
    char *a = ss_path_join(ss_test_tmp_dir(), "fp_a.bin"), *b = ss_path_join(ss_test_tmp_dir(), "fp_b.bin");
    const size_t n = (3u << 20) + 123; /* three whole blocks and a part */
    uint8_t *data = malloc(n);
    CHECK(a && b && data);
    for (size_t i = 0; i < n; i++) data[i] = (uint8_t)(i * 2654435761u >> 13);
    FILE *f = fopen(a, "wb");
    CHECK(f && fwrite(data, 1, n, f) == n);
    fclose(f);
    data[(2u << 20) + 5] ^= 1; /* in the third block */
    f = fopen(b, "wb");
    CHECK(f && fwrite(data, 1, n, f) == n);
    fclose(f);
    char ha[65], ha2[65], hb[65];
    int64_t sa, sb;
    CHECK_OK(ss_file_fingerprint(a, ha, &sa));
    CHECK_OK(ss_file_fingerprint(a, ha2, &sa));
    CHECK_OK(ss_file_fingerprint(b, hb, &sb));
    CHECK(sa == (int64_t)n && sb == (int64_t)n && strlen(ha) == 64);
    CHECK(!strcmp(ha, ha2) && strcmp(ha, hb));
    CHECK_ERR(ss_file_fingerprint("/nonexistent/x", ha, &sa), SS_ERR_IO, "cannot open");
    free(data);
    free(a);
    free(b);
}

/* The SHA-NI rounds (where the CPU has them) and the portable ones give the
 * same digests: known vectors, and random data of every length around the
 * block boundaries fed whole and in uneven pieces (whole blocks go straight
 * from the input, the rest through the 64-byte buffer). */
TEST(sha256_accelerated_matches_portable) {
    const int accel = ss_sha256_accelerated(1);
    const size_t n = 3000;
    uint8_t *buf = malloc(n);
    CHECK(buf);
    uint64_t x = 88172645463325252ULL;
    for (size_t i = 0; i < n; i++) x ^= x << 13, x ^= x >> 7, x ^= x << 17, buf[i] = (uint8_t)x;
    const size_t lens[] = {0, 1, 55, 56, 63, 64, 65, 119, 127, 128, 129, 191, 1000, 2999, 3000};
    for (size_t li = 0; li < sizeof lens / sizeof *lens; li++) {
        char h[2][65], hp[2][65];
        for (int a = 0; a < 2; a++) {
            ss_sha256_accelerated(a);
            hex_of((const char *)buf, lens[li], h[a]);
            ss_sha256 s;
            ss_sha256_init(&s);
            for (size_t i = 0, step = 1; i < lens[li]; i += step, step = step * 3 % 97 + 1)
                ss_sha256_update(&s, buf + i, lens[li] - i < step ? lens[li] - i : step);
            ss_sha256_hex(&s, hp[a]);
        }
        CHECK_MSG(!strcmp(h[0], h[1]) && !strcmp(h[0], hp[0]) && !strcmp(h[0], hp[1]), "length %zu", lens[li]);
    }
    char v[65];
    ss_sha256_accelerated(1);
    const char *two = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopqabcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    hex_of(two, 112, v); /* two whole blocks, then the padding's */
    ss_sha256_accelerated(0);
    char vp[65];
    hex_of(two, 112, vp);
    CHECK(!strcmp(v, vp));
    hex_of("abc", 3, v);
    CHECK(!strcmp(v, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"));
    ss_sha256_accelerated(1);
    hex_of("abc", 3, v);
    CHECK(!strcmp(v, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"));
#if defined(__x86_64__) && defined(__GNUC__)
    /* the compiler's own reading of the CPU: where it has the SHA extensions, they are used */
    __builtin_cpu_init();
    CHECK_MSG(accel == (__builtin_cpu_supports("sha") && __builtin_cpu_supports("sse4.1")), "SHA-NI in use: %d", accel);
#else
    CHECK(accel == 0);
#endif
    free(buf);
}
