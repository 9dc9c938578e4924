#include "subscope/hash.h"
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
