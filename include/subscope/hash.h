/* SHA-256, for recording which data file a result came from. */
#ifndef SUBSCOPE_HASH_H
#define SUBSCOPE_HASH_H

#include <stddef.h>
#include <stdint.h>
#include "subscope/error.h"

typedef struct ss_sha256 {
    uint32_t h[8];
    uint64_t len;
    uint8_t buf[64];
    size_t fill;
} ss_sha256;

void ss_sha256_init(ss_sha256 *s);
void ss_sha256_update(ss_sha256 *s, const void *data, size_t n);
/* Writes the digest as 64 lowercase hex characters and a NUL. */
void ss_sha256_hex(ss_sha256 *s, char out[65]);
/* Hash and size of a whole file. */
ss_status ss_file_sha256(const char *path, char out[65], int64_t *size);
/* SHA-256 uses the x86 SHA instructions where the CPU has them (~1.3 GB/s
 * against ~0.3 GB/s, the same digests); enable 0 turns them off, 1 back on
 * (tests compare the two). Returns 1 if they are now in use. */
int ss_sha256_accelerated(int enable);

/* A fast 64-bit hash of n bytes (not cryptographic: four lanes of
 * multiply-rotate over little-endian 8-byte words, then a final mix), for
 * telling whether large files changed, where SHA-256 runs at ~0.3 GB/s
 * (~1.3 GB/s with the CPU's SHA instructions). */
uint64_t ss_hash64(const void *data, size_t n, uint64_t seed);
/* A file's fingerprint: SHA-256 over the ss_hash64 of each 1 MiB block, as
 * 64 hex characters, and its size; several GB/s from the page cache. */
ss_status ss_file_fingerprint(const char *path, char out[65], int64_t *size);

#endif
