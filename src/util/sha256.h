/* sha256.h - SHA-256 (FIPS 180-4), in-tree so the profile cache and the
 * model content hash need no crypto dependency. Not constant-time and not
 * meant for secrets: it names and checks cache files.
 * Reentrant: all state is in the caller's ds_sha256. */
#ifndef DS_UTIL_SHA256_H
#define DS_UTIL_SHA256_H

#include <stddef.h>
#include <stdint.h>

#define DS_SHA256_BYTES 32
#define DS_SHA256_HEX (2 * DS_SHA256_BYTES + 1) /* with the NUL */

typedef struct ds_sha256_ctx {
    uint32_t h[8];
    uint64_t n_bytes;    /* message length so far */
    uint8_t block[64];   /* partial block */
    size_t n_block;
} ds_sha256_ctx;

void ds_sha256_init(ds_sha256_ctx *s);
void ds_sha256_update(ds_sha256_ctx *s, const void *data, size_t n);
/* Write the digest; *s must be re-initialized before reuse. */
void ds_sha256_final(ds_sha256_ctx *s, uint8_t digest[DS_SHA256_BYTES]);

/* One-shot digest of data[0..n). */
void ds_sha256(const void *data, size_t n, uint8_t digest[DS_SHA256_BYTES]);

/* Lower-case hex of a digest, NUL-terminated. */
void ds_sha256_hex(const uint8_t digest[DS_SHA256_BYTES], char hex[DS_SHA256_HEX]);

#endif
