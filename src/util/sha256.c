/* SHA-256 (FIPS 180-4), written from the specification. */
#include "subscope/hash.h"
#include "subscope/util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const uint32_t K[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

#define ROR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static void block(uint32_t h[8], const uint8_t *p) {
    uint32_t w[64];
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 | (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
    for (int i = 16; i < 64; i++) {
        uint32_t s0 = ROR(w[i - 15], 7) ^ ROR(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = ROR(w[i - 2], 17) ^ ROR(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], hh = h[7];
    for (int i = 0; i < 64; i++) {
        uint32_t t1 = hh + (ROR(e, 6) ^ ROR(e, 11) ^ ROR(e, 25)) + ((e & f) ^ (~e & g)) + K[i] + w[i];
        uint32_t t2 = (ROR(a, 2) ^ ROR(a, 13) ^ ROR(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
        hh = g; g = f; f = e; e = d + t1; d = c; c = b; b = a; a = t1 + t2;
    }
    h[0] += a; h[1] += b; h[2] += c; h[3] += d; h[4] += e; h[5] += f; h[6] += g; h[7] += hh;
}

static void blocks_portable(uint32_t h[8], const uint8_t *p, size_t n) {
    for (; n; n--, p += 64) block(h, p);
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>
#include <immintrin.h>
#define SS_SHA_NI 1
/* The x86 SHA extensions (SHA-NI: Intel since Goldmont/Ice Lake, AMD since
 * Zen), ~4x the portable rounds: discover hashes its multi-GB input files.
 * State as the instructions want it: ABEF and CDGH. Each group g of four
 * rounds takes message words W_g; from g = 4 on, W_g = sigma1-part(W_{g-4} +
 * sigma0-part(W_{g-3}) + W_{g-7/4}), the last being words 4g-7..4g-4. */
__attribute__((target("sha,sse4.1,ssse3"))) static void blocks_shani(uint32_t h[8], const uint8_t *p, size_t n) {
    const __m128i bswap = _mm_set_epi64x(0x0c0d0e0f08090a0bLL, 0x0405060700010203LL);
    __m128i tmp = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)&h[0]), 0xB1); /* CDAB */
    __m128i st1 = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)&h[4]), 0x1B); /* EFGH */
    __m128i st0 = _mm_alignr_epi8(tmp, st1, 8);                                         /* ABEF */
    st1 = _mm_blend_epi16(st1, tmp, 0xF0);                                              /* CDGH */
    for (; n; n--, p += 64) {
        const __m128i abef = st0, cdgh = st1;
        __m128i w[4];
        for (int g = 0; g < 16; g++) {
            if (g < 4) {
                w[g] = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(p + 16 * g)), bswap);
            } else {
                __m128i x = _mm_sha256msg1_epu32(w[g & 3], w[(g - 3) & 3]);
                x = _mm_add_epi32(x, _mm_alignr_epi8(w[(g - 1) & 3], w[(g - 2) & 3], 4));
                w[g & 3] = _mm_sha256msg2_epu32(x, w[(g - 1) & 3]);
            }
            __m128i msg = _mm_add_epi32(w[g & 3], _mm_loadu_si128((const __m128i *)&K[4 * g]));
            st1 = _mm_sha256rnds2_epu32(st1, st0, msg);
            st0 = _mm_sha256rnds2_epu32(st0, st1, _mm_shuffle_epi32(msg, 0x0E));
        }
        st0 = _mm_add_epi32(st0, abef);
        st1 = _mm_add_epi32(st1, cdgh);
    }
    tmp = _mm_shuffle_epi32(st0, 0x1B);        /* FEBA */
    st1 = _mm_shuffle_epi32(st1, 0xB1);        /* DCHG */
    st0 = _mm_blend_epi16(tmp, st1, 0xF0);     /* DCBA */
    st1 = _mm_alignr_epi8(st1, tmp, 8);        /* HGFE */
    _mm_storeu_si128((__m128i *)&h[0], st0);
    _mm_storeu_si128((__m128i *)&h[4], st1);
}

static int cpu_has_sha_ni(void) {
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & bit_SSSE3) || !(c & bit_SSE4_1)) return 0;
    return __get_cpuid_count(7, 0, &a, &b, &c, &d) && (b & (1u << 29)); /* CPUID.7.0:EBX.SHA */
}
#endif

/* -1: not chosen yet; then 0 (portable) or 1 (SHA-NI). Two first callers
 * on different threads both store the same value. */
static _Atomic int use_accel = -1;

int ss_sha256_accelerated(int enable) {
#ifdef SS_SHA_NI
    use_accel = enable && cpu_has_sha_ni();
#else
    (void)enable;
    use_accel = 0;
#endif
    return use_accel;
}

static void blocks(uint32_t h[8], const uint8_t *p, size_t n) {
#ifdef SS_SHA_NI
    if (use_accel < 0) ss_sha256_accelerated(1);
    if (use_accel) {
        blocks_shani(h, p, n);
        return;
    }
#endif
    blocks_portable(h, p, n);
}

void ss_sha256_init(ss_sha256 *s) {
    static const uint32_t iv[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                   0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    memcpy(s->h, iv, sizeof iv);
    s->len = 0;
    s->fill = 0;
}

void ss_sha256_update(ss_sha256 *s, const void *data, size_t n) {
    const uint8_t *p = data;
    s->len += n;
    while (n) {
        if (!s->fill && n >= 64) { /* whole blocks straight from the input */
            blocks(s->h, p, n / 64);
            p += n / 64 * 64;
            n %= 64;
            continue;
        }
        size_t take = 64 - s->fill < n ? 64 - s->fill : n;
        memcpy(s->buf + s->fill, p, take);
        s->fill += take;
        p += take;
        n -= take;
        if (s->fill == 64) {
            blocks(s->h, s->buf, 1);
            s->fill = 0;
        }
    }
}

void ss_sha256_hex(ss_sha256 *s, char out[65]) {
    uint64_t bits = s->len * 8;
    uint8_t pad = 0x80, zero = 0, lenb[8];
    ss_sha256_update(s, &pad, 1);
    while (s->fill != 56) ss_sha256_update(s, &zero, 1);
    for (int i = 0; i < 8; i++) lenb[i] = (uint8_t)(bits >> (56 - 8 * i));
    ss_sha256_update(s, lenb, 8);
    for (int i = 0; i < 8; i++) snprintf(out + 8 * i, 9, "%08x", s->h[i]);
}

ss_status ss_file_sha256(const char *path, char out[65], int64_t *size) {
    FILE *f;
    SS_TRY(ss_input_kind(path, 0)); /* a file read again later: a pipe would be empty, or block */
    SS_TRY(ss_open_read(path, &f));
    ss_sha256 s;
    ss_sha256_init(&s);
    uint8_t buf[1 << 16];
    size_t r;
    while ((r = fread(buf, 1, sizeof buf, f)) > 0) ss_sha256_update(&s, buf, r);
    int bad = ferror(f);
    fclose(f);
    if (bad) return ss_errorf(SS_ERR_IO, "%s: read error", path);
    *size = (int64_t)s.len;
    ss_sha256_hex(&s, out);
    return SS_OK;
}

/* ---------------------------------------------------------- fast hash */

static const uint64_t K1 = 0x9E3779B185EBCA87ULL, K2 = 0xC2B2AE3D27D4EB4FULL, K3 = 0x165667B19E3779F9ULL,
                      K4 = 0x85EBCA77C2B2AE63ULL, K5 = 0x27D4EB2F165667C5ULL;

static inline uint64_t rotl64(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }
static inline uint64_t mix_in(uint64_t acc, uint64_t w) { return rotl64(acc + w * K2, 31) * K1; }
static inline uint64_t word_at(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = v << 8 | p[i]; /* little-endian on any host; compilers make it one load */
    return v;
}

uint64_t ss_hash64(const void *data, size_t n, uint64_t seed) {
    const uint8_t *p = data, *end = p + n;
    uint64_t h;
    if (n >= 32) {
        uint64_t a = seed + K1 + K2, b = seed + K2, c = seed, d = seed - K1;
        for (; end - p >= 32; p += 32) {
            a = mix_in(a, word_at(p));
            b = mix_in(b, word_at(p + 8));
            c = mix_in(c, word_at(p + 16));
            d = mix_in(d, word_at(p + 24));
        }
        h = rotl64(a, 1) + rotl64(b, 7) + rotl64(c, 12) + rotl64(d, 18);
        const uint64_t lanes[4] = {a, b, c, d};
        for (int i = 0; i < 4; i++) h = (h ^ mix_in(0, lanes[i])) * K1 + K4;
    } else {
        h = seed + K5;
    }
    h += (uint64_t)n;
    for (; end - p >= 8; p += 8) h = rotl64(h ^ mix_in(0, word_at(p)), 27) * K1 + K4;
    for (; p < end; p++) h = rotl64(h ^ (*p * K5), 11) * K1;
    h ^= h >> 33;
    h *= K2;
    h ^= h >> 29;
    h *= K3;
    h ^= h >> 32;
    return h;
}

ss_status ss_file_fingerprint(const char *path, char out[65], int64_t *size) {
    FILE *f;
    SS_TRY(ss_input_kind(path, 0)); /* a file read again later: a pipe would be empty, or block */
    SS_TRY(ss_open_read(path, &f));
    const size_t block = (size_t)1 << 20;
    uint8_t *buf = malloc(block);
    if (!buf) {
        fclose(f);
        return ss_errorf(SS_ERR_NOMEM, "%s: out of memory fingerprinting it", path);
    }
    ss_sha256 s;
    ss_sha256_init(&s);
    int64_t total = 0;
    size_t r;
    while ((r = fread(buf, 1, block, f)) > 0) {
        uint8_t le[8];
        uint64_t h = ss_hash64(buf, r, (uint64_t)total);
        for (int i = 0; i < 8; i++) le[i] = (uint8_t)(h >> (8 * i));
        ss_sha256_update(&s, le, 8);
        total += (int64_t)r;
    }
    int bad = ferror(f);
    fclose(f);
    free(buf);
    if (bad) return ss_errorf(SS_ERR_IO, "%s: read error", path);
    *size = total;
    ss_sha256_hex(&s, out);
    return SS_OK;
}
