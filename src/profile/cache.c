/* cache.c - profile cache files: canonical key, checked header, atomic
 * rename (the format and the trust rules are in cache.h). */
#include "profile/cache.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/error.h"

#define MAGIC "DSTKPROF"
#define HEADER_SIZE 88
#define MAX_KEY_SIZE 4096
#define FILE_SUFFIX ".dsprof"

/* ---- little-endian encoding ---- */

static void put_u32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get_u32(const uint8_t *p)
{
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

static uint64_t get_u64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

/* ---- the key, serialized: hash, then each string as u32 length + bytes,
 * each integer as u32, in the struct's order ---- */

typedef struct key_buf {
    uint8_t bytes[MAX_KEY_SIZE];
    size_t n;
} key_buf;

static void kb_u32(key_buf *kb, uint32_t v)
{
    put_u32(kb->bytes + kb->n, v);
    kb->n += 4;
}

static void kb_str(key_buf *kb, const char *s, size_t field_size)
{
    size_t len = strnlen(s, field_size);
    kb_u32(kb, (uint32_t)len);
    memcpy(kb->bytes + kb->n, s, len);
    kb->n += len;
}

static void serialize_key(const ds_cache_key *k, key_buf *kb)
{
    kb->n = 0;
    memcpy(kb->bytes, k->content_sha256, DS_SHA256_BYTES);
    kb->n = DS_SHA256_BYTES;
    kb_str(kb, k->device_name, sizeof k->device_name);
    kb_u32(kb, k->sm_count);
    kb_u32(kb, k->unit_sms);
    kb_u32(kb, k->partitioning);
    kb_str(kb, k->lib_version, sizeof k->lib_version);
    kb_str(kb, k->backend_version, sizeof k->backend_version);
}

/* Read a string written by kb_str into a field; false if it does not fit. */
static bool parse_str(const uint8_t *p, size_t n, size_t *off, char *field, size_t field_size)
{
    if (n - *off < 4)
        return false;
    uint32_t len = get_u32(p + *off);
    *off += 4;
    if (len > field_size || n - *off < len)
        return false;
    memset(field, 0, field_size);
    memcpy(field, p + *off, len);
    *off += len;
    return true;
}

static bool parse_u32(const uint8_t *p, size_t n, size_t *off, uint32_t *v)
{
    if (n - *off < 4)
        return false;
    *v = get_u32(p + *off);
    *off += 4;
    return true;
}

static bool parse_key(const uint8_t *p, size_t n, ds_cache_key *k)
{
    memset(k, 0, sizeof *k);
    if (n < DS_SHA256_BYTES)
        return false;
    memcpy(k->content_sha256, p, DS_SHA256_BYTES);
    size_t off = DS_SHA256_BYTES;
    return parse_str(p, n, &off, k->device_name, sizeof k->device_name) &&
           parse_u32(p, n, &off, &k->sm_count) && parse_u32(p, n, &off, &k->unit_sms) &&
           parse_u32(p, n, &off, &k->partitioning) &&
           parse_str(p, n, &off, k->lib_version, sizeof k->lib_version) &&
           parse_str(p, n, &off, k->backend_version, sizeof k->backend_version) && off == n;
}

void ds_cache_key_digest(const ds_cache_key *key, uint8_t digest[DS_SHA256_BYTES])
{
    key_buf kb;
    serialize_key(key, &kb);
    ds_sha256(kb.bytes, kb.n, digest);
}

dstack_status ds_cache_entry_path(const char *dir, const ds_cache_key *key, char *out, size_t out_size)
{
    if (!dir || !*dir || !key || !out)
        return ds_fail(DSTACK_ERR_INVALID_ARGUMENT, "cache: no directory, key or output");
    uint8_t d[DS_SHA256_BYTES];
    char hex[DS_SHA256_HEX];
    ds_cache_key_digest(key, d);
    ds_sha256_hex(d, hex);
    int len = snprintf(out, out_size, "%s/%s%s", dir, hex, FILE_SUFFIX);
    if (len < 0 || (size_t)len >= out_size)
        return ds_fail(DSTACK_ERR_INVALID_ARGUMENT, "cache: path under '%s' is too long", dir);
    return DSTACK_OK;
}

const char *ds_cache_outcome_name(ds_cache_outcome outcome)
{
    static const char *const names[] = {"hit",     "disabled", "absent", "io",    "truncated", "bad magic",
                                        "version", "corrupt",  "stale",  "foreign", "checksum"};
    return (unsigned)outcome < sizeof names / sizeof names[0] ? names[outcome] : "unknown";
}

/* ---- load ---- */

static bool read_all(int fd, void *buf, size_t n)
{
    uint8_t *p = buf;
    while (n > 0) {
        ssize_t got = read(fd, p, n);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0)
            return false;
        p += got;
        n -= (size_t)got;
    }
    return true;
}

/* The reason text, cut to DS_CACHE_REASON_LEN (a long path is cut, on purpose). */
static void set_reason(char *reason, const char *fmt, ...) DS_PRINTF(2, 3);
static void set_reason(char *reason, const char *fmt, ...)
{
    if (!reason)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(reason, DS_CACHE_REASON_LEN, fmt, ap);
    va_end(ap);
}

#define MISS(outcome, ...)                                                                         \
    do {                                                                                           \
        set_reason(reason, __VA_ARGS__);                                                           \
        return (outcome);                                                                          \
    } while (0)

/* Why a well-formed entry with another key is not ours: version drift
 * (stale) or another model/device (foreign). */
static ds_cache_outcome explain_other_key(const ds_cache_key *want, const ds_cache_key *got, char *reason)
{
    if (memcmp(want->content_sha256, got->content_sha256, DS_SHA256_BYTES) != 0)
        MISS(DS_CACHE_FOREIGN, "foreign: written for another model (content hash differs)");
    if (strcmp(want->device_name, got->device_name) != 0 || want->sm_count != got->sm_count ||
        want->unit_sms != got->unit_sms || want->partitioning != got->partitioning)
        MISS(DS_CACHE_FOREIGN, "foreign: written for device '%s' (%u SMs, unit %u, partitioning %u)",
             got->device_name, got->sm_count, got->unit_sms, got->partitioning);
    if (strcmp(want->lib_version, got->lib_version) != 0 ||
        strcmp(want->backend_version, got->backend_version) != 0)
        MISS(DS_CACHE_STALE, "stale: written by libdstack %s with backend '%s'", got->lib_version,
             got->backend_version);
    MISS(DS_CACHE_CORRUPT, "corrupt: key digest does not match its key");
}

/* Header and key checks; on success *payload_size and the payload's
 * expected checksum are set and fd stands at the payload. */
static ds_cache_outcome check_entry(int fd, const ds_cache_key *key, uint64_t *payload_size,
                                    uint8_t payload_sum[DS_SHA256_BYTES], char *reason)
{
    struct stat st;
    if (fstat(fd, &st) != 0)
        MISS(DS_CACHE_IO, "io: fstat: %s", strerror(errno));
    if (!S_ISREG(st.st_mode))
        MISS(DS_CACHE_IO, "io: not a regular file");
    uint64_t file_size = (uint64_t)st.st_size;
    uint8_t h[HEADER_SIZE];
    if (file_size < HEADER_SIZE)
        MISS(DS_CACHE_TRUNCATED, "truncated: %llu bytes, the header alone is %d",
             (unsigned long long)file_size, HEADER_SIZE);
    if (!read_all(fd, h, HEADER_SIZE))
        MISS(DS_CACHE_IO, "io: cannot read the header");
    if (memcmp(h, MAGIC, 8) != 0)
        MISS(DS_CACHE_BAD_MAGIC, "bad magic: not a libdstack profile");
    uint32_t version = get_u32(h + 8), key_size = get_u32(h + 12);
    uint64_t psize = get_u64(h + 16);
    if (version != DS_CACHE_FORMAT_VERSION)
        MISS(DS_CACHE_VERSION, "version: format %u, this library reads %u", version, DS_CACHE_FORMAT_VERSION);
    if (key_size > MAX_KEY_SIZE || psize > DS_CACHE_MAX_PAYLOAD)
        MISS(DS_CACHE_CORRUPT, "corrupt: key size %u or payload size %llu is implausible", key_size,
             (unsigned long long)psize);
    uint64_t want_size = HEADER_SIZE + (uint64_t)key_size + psize;
    if (file_size < want_size)
        MISS(DS_CACHE_TRUNCATED, "truncated: %llu bytes, the header says %llu", (unsigned long long)file_size,
             (unsigned long long)want_size);
    if (file_size > want_size)
        MISS(DS_CACHE_CORRUPT, "corrupt: %llu bytes, the header says %llu", (unsigned long long)file_size,
             (unsigned long long)want_size);

    uint8_t stored[MAX_KEY_SIZE], d[DS_SHA256_BYTES], want_digest[DS_SHA256_BYTES];
    if (!read_all(fd, stored, key_size))
        MISS(DS_CACHE_IO, "io: cannot read the key");
    ds_sha256(stored, key_size, d);
    if (memcmp(d, h + 24, DS_SHA256_BYTES) != 0)
        MISS(DS_CACHE_CORRUPT, "corrupt: the stored key does not match its digest");
    ds_cache_key_digest(key, want_digest);
    if (memcmp(d, want_digest, DS_SHA256_BYTES) != 0) {
        ds_cache_key got;
        if (!parse_key(stored, key_size, &got))
            MISS(DS_CACHE_CORRUPT, "corrupt: the stored key cannot be parsed");
        return explain_other_key(key, &got, reason);
    }
    *payload_size = psize;
    memcpy(payload_sum, h + 56, DS_SHA256_BYTES);
    return DS_CACHE_HIT;
}

ds_cache_outcome ds_cache_load(const char *dir, const ds_cache_key *key, void **blob, size_t *n_blob,
                               char *reason)
{
    if (!key || !blob || !n_blob)
        MISS(DS_CACHE_IO, "io: key, blob or n_blob is NULL");
    *blob = NULL;
    *n_blob = 0;
    if (!dir || !*dir)
        MISS(DS_CACHE_DISABLED, "disabled: no cache directory");
    char path[4096];
    if (ds_cache_entry_path(dir, key, path, sizeof path) != DSTACK_OK) {
        ds_error_clear();
        MISS(DS_CACHE_IO, "io: path under '%s' is too long", dir);
    }
    /* non-blocking: a FIFO (or other special file) put in an entry's place
     * must not block the open, and check_entry refuses it */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        if (errno == ENOENT)
            MISS(DS_CACHE_ABSENT, "absent: no entry %s", path);
        MISS(DS_CACHE_IO, "io: open %s: %s", path, strerror(errno));
    }
    uint64_t psize = 0;
    uint8_t sum[DS_SHA256_BYTES], got[DS_SHA256_BYTES];
    ds_cache_outcome oc = check_entry(fd, key, &psize, sum, reason);
    void *p = NULL;
    if (oc == DS_CACHE_HIT) {
        p = malloc(psize ? (size_t)psize : 1);
        if (!p) {
            oc = DS_CACHE_IO;
            set_reason(reason, "io: no memory for %llu bytes", (unsigned long long)psize);
        } else if (!read_all(fd, p, (size_t)psize)) {
            oc = DS_CACHE_IO;
            set_reason(reason, "io: cannot read the payload");
        } else {
            ds_sha256(p, (size_t)psize, got);
            if (memcmp(got, sum, DS_SHA256_BYTES) != 0) {
                oc = DS_CACHE_CHECKSUM;
                set_reason(reason, "checksum: the payload does not match its SHA-256");
            }
        }
    }
    close(fd);
    if (oc != DS_CACHE_HIT) {
        free(p);
        return oc;
    }
    set_reason(reason, "hit: %s", path);
    *blob = p;
    *n_blob = (size_t)psize;
    return DS_CACHE_HIT;
}

/* ---- store ---- */

static bool write_all(int fd, const void *buf, size_t n)
{
    const uint8_t *p = buf;
    while (n > 0) {
        ssize_t put = write(fd, p, n);
        if (put < 0 && errno == EINTR)
            continue;
        if (put <= 0)
            return false;
        p += put;
        n -= (size_t)put;
    }
    return true;
}

/* mkdir -p, mode 0700 for what it creates. */
static dstack_status make_dirs(const char *dir)
{
    char path[4096];
    size_t len = strlen(dir);
    if (len >= sizeof path)
        return ds_fail(DSTACK_ERR_IO, "cache: directory name too long");
    memcpy(path, dir, len + 1);
    for (size_t i = 1; i <= len; i++) {
        if (path[i] != '/' && path[i] != '\0')
            continue;
        char c = path[i];
        path[i] = '\0';
        if (mkdir(path, 0700) != 0 && errno != EEXIST)
            return ds_fail(DSTACK_ERR_IO, "cache: mkdir %s: %s", path, strerror(errno));
        path[i] = c;
    }
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
        return ds_fail(DSTACK_ERR_IO, "cache: %s is not a directory", dir);
    return DSTACK_OK;
}

static void fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        (void)fsync(fd); /* best effort: the rename is already atomic */
        close(fd);
    }
}

static void build_header(uint8_t h[HEADER_SIZE], const key_buf *kb, const void *blob, size_t n_blob)
{
    memcpy(h, MAGIC, 8);
    put_u32(h + 8, DS_CACHE_FORMAT_VERSION);
    put_u32(h + 12, (uint32_t)kb->n);
    put_u64(h + 16, n_blob);
    ds_sha256(kb->bytes, kb->n, h + 24);
    ds_sha256(blob, n_blob, h + 56);
}

dstack_status ds_cache_store(const char *dir, const ds_cache_key *key, const void *blob, size_t n_blob)
{
    if (!dir || !*dir)
        return DSTACK_OK;
    if (!key || (!blob && n_blob))
        return ds_fail(DSTACK_ERR_INVALID_ARGUMENT, "cache: key is NULL, or blob is NULL with %zu bytes", n_blob);
    if ((uint64_t)n_blob > DS_CACHE_MAX_PAYLOAD)
        return ds_fail(DSTACK_ERR_INVALID_ARGUMENT, "cache: %zu bytes is over the %llu-byte limit", n_blob,
                       (unsigned long long)DS_CACHE_MAX_PAYLOAD);
    char path[4096], tmp[4096 + 16];
    dstack_status st = ds_cache_entry_path(dir, key, path, sizeof path);
    if (st == DSTACK_OK)
        st = make_dirs(dir);
    if (st != DSTACK_OK)
        return st;
    const char *base = strrchr(path, '/') + 1;
    snprintf(tmp, sizeof tmp, "%s/.%s.XXXXXX", dir, base);
    int fd = mkostemp(tmp, O_CLOEXEC);
    if (fd < 0)
        return ds_fail(DSTACK_ERR_IO, "cache: cannot create a file in %s: %s", dir, strerror(errno));

    static const uint8_t empty = 0;
    key_buf kb;
    uint8_t h[HEADER_SIZE];
    serialize_key(key, &kb);
    build_header(h, &kb, n_blob ? blob : &empty, n_blob);
    bool ok = write_all(fd, h, sizeof h) && write_all(fd, kb.bytes, kb.n) &&
              write_all(fd, blob, n_blob) && fsync(fd) == 0;
    int err = errno;
    ok = (close(fd) == 0) && ok;
    if (ok && rename(tmp, path) != 0) {
        err = errno;
        ok = false;
    }
    if (!ok) {
        unlink(tmp);
        return ds_fail(DSTACK_ERR_IO, "cache: writing %s: %s", path, strerror(err));
    }
    fsync_dir(dir);
    return DSTACK_OK;
}

/* ---- where ---- */

bool ds_cache_dir_resolve(const char *option_dir, const char *xdg_cache_home, const char *home, char *out,
                          size_t out_size)
{
    if (!out || out_size == 0)
        return false;
    int len = -1;
    if (option_dir)
        len = *option_dir ? snprintf(out, out_size, "%s", option_dir) : -1;
    else if (xdg_cache_home && xdg_cache_home[0] == '/')
        len = snprintf(out, out_size, "%s/dstack", xdg_cache_home);
    else if (home && home[0] == '/')
        len = snprintf(out, out_size, "%s/.cache/dstack", home);
    if (len < 0 || (size_t)len >= out_size) {
        out[0] = '\0';
        return false;
    }
    return true;
}

bool ds_cache_dir_default(const char *option_dir, char *out, size_t out_size)
{
    return ds_cache_dir_resolve(option_dir, getenv("XDG_CACHE_HOME"), getenv("HOME"), out, out_size);
}
