/* cache.h - the on-disk profile cache: a model registered again starts in
 * milliseconds instead of re-profiling.
 *
 * What is stored is opaque to this module (the profile module serializes
 * its sweeps and latency model into the blob). What it guarantees is that a
 * blob comes back only to a caller with exactly the same key, intact:
 *
 * Key (ds_cache_key): the model's content hash (SHA-256 of the ONNX bytes,
 * or of the zoo name and its parameters), the device name, its SM count,
 * the partition unit in SMs, the partitioning mode, the library version and
 * the backend's version string (cuDNN, CUDA). Anything that can change a
 * measured latency is in the key, so an entry is never "mostly right".
 * The key is serialized canonically (fixed field order, little-endian,
 * length-prefixed strings) and hashed; the file is
 *   DIR/<hex SHA-256 of the key>.dsprof
 *
 * File layout (little-endian):
 *     0  magic "DSTKPROF"               8 bytes
 *     8  format version (1)             u32
 *    12  serialized key size K          u32
 *    16  payload size P                 u64
 *    24  SHA-256 of the serialized key  32 bytes
 *    56  SHA-256 of the payload         32 bytes
 *    88  the serialized key             K bytes
 *  88+K  the payload                    P bytes; the file ends there
 * Storing the key itself, not just its digest, lets a miss say why
 * ("stale: written by libdstack 0.3.0", "foreign: device ...").
 *
 * Trust: an entry is used only if every check passes: size at least the
 * header, magic, format version, plausible sizes, file size exactly
 * 88 + K + P, key bytes matching their digest, key equal to the caller's,
 * payload matching its checksum. Anything else is a miss with an outcome
 * and a reason string; the caller rebuilds and stores over it.
 *
 * Writes are atomic: the entry is written to a temporary file in the same
 * directory (mkstemp, mode 0600), fsync'ed, then rename()d over the final
 * name (and the directory fsync'ed, best effort). Readers see the old file
 * or the new one, never a mix; two processes storing the same key at once
 * each rename a complete file, and the last rename wins. A writer that dies
 * leaves only a ".<name>.XXXXXX" temporary, which is never read.
 *
 * Directory: given by the caller on every call; NULL or "" means the cache
 * is disabled (load misses with DS_CACHE_DISABLED, store does nothing).
 * ds_cache_dir_resolve gives the default ($XDG_CACHE_HOME/dstack, else
 * $HOME/.cache/dstack). Store creates the directory (mode 0700) if missing.
 *
 * Thread- and process-safe by the file system's rename; no state here.
 */
#ifndef DS_PROFILE_CACHE_H
#define DS_PROFILE_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dstack.h"
#include "util/sha256.h"

#define DS_CACHE_FORMAT_VERSION 1u
#define DS_CACHE_MAX_PAYLOAD ((uint64_t)1 << 30) /* 1 GiB: more is a corrupt size */
#define DS_CACHE_REASON_LEN 256

typedef struct ds_cache_key {
    uint8_t content_sha256[DS_SHA256_BYTES]; /* the model's content hash */
    char device_name[64];                    /* "NVIDIA H100 80GB HBM3", "cpu", "sim" */
    uint32_t sm_count;                       /* SMs of the device */
    uint32_t unit_sms;                       /* SMs per partition unit */
    uint32_t partitioning;                   /* dstack_partitioning in use */
    char lib_version[32];                    /* dstack_version_string() */
    char backend_version[128];               /* "cuda cudnn 91900 cublas 13.1.0 ...", "cpu threads=16", ... */
} ds_cache_key;

typedef enum ds_cache_outcome {
    DS_CACHE_HIT = 0,
    DS_CACHE_DISABLED,  /* dir NULL or "" */
    DS_CACHE_ABSENT,    /* no entry for this key */
    DS_CACHE_IO,        /* the entry exists but could not be read (or no memory) */
    DS_CACHE_TRUNCATED, /* shorter than its header says */
    DS_CACHE_BAD_MAGIC, /* not a libdstack profile */
    DS_CACHE_VERSION,   /* another format version */
    DS_CACHE_CORRUPT,   /* sizes, key bytes or trailing data do not add up */
    DS_CACHE_STALE,     /* same model and device, other library/backend version */
    DS_CACHE_FOREIGN,   /* another model or device under this name */
    DS_CACHE_CHECKSUM   /* payload does not match its SHA-256 */
} ds_cache_outcome;

/* A fixed name for an outcome ("hit", "absent", "checksum", ...). */
const char *ds_cache_outcome_name(ds_cache_outcome outcome);

/* SHA-256 of the canonical serialization of *key. Strings are read up to
 * their NUL or the end of their field. */
void ds_cache_key_digest(const ds_cache_key *key, uint8_t digest[DS_SHA256_BYTES]);

/* The entry's path for dir and key in out[out_size]. INVALID_ARGUMENT if
 * dir is NULL or "" or the path does not fit. */
dstack_status ds_cache_entry_path(const char *dir, const ds_cache_key *key, char *out, size_t out_size);

/* Look the key up. On DS_CACHE_HIT, *blob (malloc'ed, the caller frees it)
 * and *n_blob hold the payload; otherwise they are set to NULL and 0 and,
 * when reason is not NULL, reason[DS_CACHE_REASON_LEN] says why in words.
 * key, blob and n_blob must not be NULL (DS_CACHE_IO with a reason if so). */
ds_cache_outcome ds_cache_load(const char *dir, const ds_cache_key *key, void **blob, size_t *n_blob,
                               char *reason);

/* Store blob[0..n_blob) under key, atomically (see above). dir NULL or ""
 * does nothing and returns OK. INVALID_ARGUMENT for a NULL key, a NULL blob
 * with n_blob > 0, or n_blob over DS_CACHE_MAX_PAYLOAD; IO (message set)
 * when the directory or file cannot be made; nothing is left half-written. */
dstack_status ds_cache_store(const char *dir, const ds_cache_key *key, const void *blob, size_t n_blob);

/* The cache directory to use, in out[out_size]: option_dir itself when not
 * NULL ("" means disabled), else xdg_cache_home + "/dstack" when that is an
 * absolute path, else home + "/.cache/dstack" when home is absolute. Returns
 * false (cache disabled, out = "") when none applies or the path does not
 * fit. Pure: the environment values are arguments. */
bool ds_cache_dir_resolve(const char *option_dir, const char *xdg_cache_home, const char *home,
                          char *out, size_t out_size);

/* ds_cache_dir_resolve with $XDG_CACHE_HOME and $HOME from the environment. */
bool ds_cache_dir_default(const char *option_dir, char *out, size_t out_size);

#endif
