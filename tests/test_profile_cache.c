/* test_profile_cache.c - SHA-256 against FIPS 180-4's vectors, and the
 * profile cache (src/profile/cache.h): hits only for the same key and an
 * intact file; every damaged or strange entry is a miss with a reason;
 * concurrent writers never leave a corrupt file. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "profile/cache.h"
#include "util/sha256.h"

/* ---- SHA-256 ---- */

static void expect_digest(const void *msg, size_t n, const char *hex_want)
{
    uint8_t d[DS_SHA256_BYTES];
    char hex[DS_SHA256_HEX];
    ds_sha256(msg, n, d);
    ds_sha256_hex(d, hex);
    assert_string_equal(hex, hex_want);
}

/* FIPS 180-4 examples (NIST CSRC "SHA256.pdf"): one block, two blocks, and
 * the one-million-'a' message of FIPS 180-2 appendix B.3; plus the empty
 * message. */
static void test_sha256_fips_vectors(void **unused)
{
    (void)unused;
    expect_digest("abc", 3, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    const char *two = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    expect_digest(two, strlen(two), "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    expect_digest("", 0, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    static char million[1000000];
    memset(million, 'a', sizeof million);
    expect_digest(million, sizeof million, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

static void test_sha256_incremental_equals_one_shot(void **unused)
{
    (void)unused;
    uint8_t msg[1000], one[DS_SHA256_BYTES], inc[DS_SHA256_BYTES];
    for (size_t i = 0; i < sizeof msg; i++)
        msg[i] = (uint8_t)(i * 31 + 7);
    /* Lengths around the 55/56/64-byte padding edges, fed in odd pieces. */
    size_t lengths[] = {1, 55, 56, 57, 63, 64, 65, 119, 120, 128, 1000};
    for (size_t li = 0; li < sizeof lengths / sizeof lengths[0]; li++) {
        size_t n = lengths[li];
        ds_sha256(msg, n, one);
        ds_sha256_ctx s;
        ds_sha256_init(&s);
        for (size_t off = 0, step = 1; off < n; off += step, step = step * 2 + 1)
            ds_sha256_update(&s, msg + off, off + step <= n ? step : n - off);
        ds_sha256_final(&s, inc);
        assert_memory_equal(one, inc, DS_SHA256_BYTES);
    }
}

/* ---- cache fixtures ---- */

static char g_dir[256];

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static int setup_dir(void **unused)
{
    (void)unused;
    snprintf(g_dir, sizeof g_dir, "/tmp/dstack_cache_test.XXXXXX");
    return mkdtemp(g_dir) ? 0 : -1;
}

static int teardown_dir(void **unused)
{
    (void)unused;
    return nftw(g_dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static ds_cache_key make_key(void)
{
    ds_cache_key k;
    memset(&k, 0, sizeof k);
    ds_sha256("resnet50 seed=1 image=224 classes=1000", 38, k.content_sha256);
    snprintf(k.device_name, sizeof k.device_name, "NVIDIA H100 80GB HBM3");
    k.sm_count = 132;
    k.unit_sms = 8;
    k.partitioning = 1;
    snprintf(k.lib_version, sizeof k.lib_version, "0.4.0");
    snprintf(k.backend_version, sizeof k.backend_version, "cuda 13.0 cudnn 9.19.0");
    return k;
}

static const char g_payload[] = "sweep: 8 71.399 16 37.697 24 26.434 ... knee 56";

static ds_cache_outcome load(const ds_cache_key *k, char *reason)
{
    void *blob = (void *)1;
    size_t n = 99;
    ds_cache_outcome oc = ds_cache_load(g_dir, k, &blob, &n, reason);
    if (oc == DS_CACHE_HIT) {
        assert_int_equal(n, sizeof g_payload);
        assert_memory_equal(blob, g_payload, n);
    } else {
        assert_null(blob);
        assert_int_equal(n, 0);
    }
    free(blob);
    return oc;
}

static void store_default(const ds_cache_key *k)
{
    assert_int_equal(ds_cache_store(g_dir, k, g_payload, sizeof g_payload), DSTACK_OK);
}

static char *entry_path(const ds_cache_key *k)
{
    static char path[512];
    assert_int_equal(ds_cache_entry_path(g_dir, k, path, sizeof path), DSTACK_OK);
    return path;
}

static long file_size(const char *path)
{
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    return (long)st.st_size;
}

static void flip_bit(const char *path, long offset, int bit)
{
    int fd = open(path, O_RDWR);
    assert_true(fd >= 0);
    uint8_t b;
    assert_int_equal(pread(fd, &b, 1, offset), 1);
    b ^= (uint8_t)(1u << bit);
    assert_int_equal(pwrite(fd, &b, 1, offset), 1);
    close(fd);
}

static void copy_file(const char *from, const char *to)
{
    FILE *in = fopen(from, "rb"), *out = fopen(to, "wb");
    assert_non_null(in);
    assert_non_null(out);
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, in)) > 0)
        assert_int_equal(fwrite(buf, 1, n, out), n);
    fclose(in);
    fclose(out);
}

/* ---- cache cases ---- */

static void test_cache_store_then_load_hits(void **unused)
{
    (void)unused;
    ds_cache_key k = make_key();
    char reason[DS_CACHE_REASON_LEN];
    assert_int_equal(load(&k, reason), DS_CACHE_ABSENT);
    assert_non_null(strstr(reason, "absent"));
    store_default(&k);
    assert_int_equal(load(&k, reason), DS_CACHE_HIT);
    store_default(&k); /* overwrite in place */
    assert_int_equal(load(&k, NULL), DS_CACHE_HIT);
    /* No temporary files left behind. */
    char cmd[600];
    snprintf(cmd, sizeof cmd, "test $(ls -A %s | wc -l) -eq 1", g_dir);
    assert_int_equal(system(cmd), 0);
}

static void test_cache_empty_payload_round_trips(void **unused)
{
    (void)unused;
    ds_cache_key k = make_key();
    k.sm_count = 7;
    assert_int_equal(ds_cache_store(g_dir, &k, NULL, 0), DSTACK_OK);
    void *blob = NULL;
    size_t n = 5;
    assert_int_equal(ds_cache_load(g_dir, &k, &blob, &n, NULL), DS_CACHE_HIT);
    assert_int_equal(n, 0);
    free(blob);
}

static void test_cache_disabled_by_null_or_empty_dir(void **unused)
{
    (void)unused;
    ds_cache_key k = make_key();
    void *blob = (void *)1;
    size_t n = 1;
    char reason[DS_CACHE_REASON_LEN];
    assert_int_equal(ds_cache_load(NULL, &k, &blob, &n, reason), DS_CACHE_DISABLED);
    assert_null(blob);
    assert_int_equal(ds_cache_load("", &k, &blob, &n, reason), DS_CACHE_DISABLED);
    assert_int_equal(ds_cache_store(NULL, &k, g_payload, sizeof g_payload), DSTACK_OK);
    assert_int_equal(ds_cache_store("", &k, g_payload, sizeof g_payload), DSTACK_OK);
    assert_int_equal(ds_cache_load(NULL, NULL, &blob, &n, reason), DS_CACHE_IO);
    assert_int_equal(ds_cache_store(g_dir, NULL, g_payload, 1), DSTACK_ERR_INVALID_ARGUMENT);
    assert_int_equal(ds_cache_store(g_dir, &k, NULL, 1), DSTACK_ERR_INVALID_ARGUMENT);
}

static void test_cache_truncated_entry_is_a_miss(void **unused)
{
    (void)unused;
    ds_cache_key k = make_key();
    store_default(&k);
    char *path = entry_path(&k);
    long full = file_size(path);
    long cuts[] = {full - 1, full / 2, 88, 87, 10, 0};
    char reason[DS_CACHE_REASON_LEN];
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        assert_int_equal(truncate(path, cuts[i]), 0);
        ds_cache_outcome oc = load(&k, reason);
        assert_int_equal(oc, DS_CACHE_TRUNCATED);
        assert_non_null(strstr(reason, "truncated"));
    }
    store_default(&k); /* rebuilt: the next load hits */
    assert_int_equal(load(&k, NULL), DS_CACHE_HIT);
}

static void test_cache_any_flipped_bit_is_a_miss(void **unused)
{
    (void)unused;
    ds_cache_key k = make_key();
    store_default(&k);
    char *path = entry_path(&k);
    long size = file_size(path);
    char reason[DS_CACHE_REASON_LEN];
    for (long off = 0; off < size; off++) {
        int bit = (int)(off % 8);
        flip_bit(path, off, bit);
        ds_cache_outcome oc = load(&k, reason);
        assert_int_not_equal(oc, DS_CACHE_HIT);
        assert_int_not_equal(oc, DS_CACHE_ABSENT);
        flip_bit(path, off, bit);
    }
    assert_int_equal(load(&k, NULL), DS_CACHE_HIT);
    /* The reasons for the main regions. */
    flip_bit(path, 0, 0);
    assert_int_equal(load(&k, reason), DS_CACHE_BAD_MAGIC);
    flip_bit(path, 0, 0);
    flip_bit(path, size - 1, 3);
    assert_int_equal(load(&k, reason), DS_CACHE_CHECKSUM);
    assert_non_null(strstr(reason, "checksum"));
    flip_bit(path, size - 1, 3);
    flip_bit(path, 100, 1); /* inside the stored key */
    assert_int_equal(load(&k, reason), DS_CACHE_CORRUPT);
    flip_bit(path, 100, 1);
}

static void test_cache_other_format_version_is_a_miss(void **unused)
{
    (void)unused;
    ds_cache_key k = make_key();
    store_default(&k);
    char *path = entry_path(&k);
    int fd = open(path, O_RDWR);
    uint8_t v2[4] = {2, 0, 0, 0};
    assert_int_equal(pwrite(fd, v2, 4, 8), 4);
    close(fd);
    char reason[DS_CACHE_REASON_LEN];
    assert_int_equal(load(&k, reason), DS_CACHE_VERSION);
    assert_non_null(strstr(reason, "format 2"));
}

static void test_cache_trailing_bytes_are_corrupt(void **unused)
{
    (void)unused;
    ds_cache_key k = make_key();
    store_default(&k);
    FILE *f = fopen(entry_path(&k), "ab");
    fputc('x', f);
    fclose(f);
    assert_int_equal(load(&k, NULL), DS_CACHE_CORRUPT);
}

/* An intact entry of another key placed under our name (copied from
 * another machine, or a name collision): never trusted, and the reason
 * says whose it is. */
static ds_cache_outcome load_as(const ds_cache_key *writer, const ds_cache_key *reader, char *reason)
{
    store_default(writer);
    char from[512];
    snprintf(from, sizeof from, "%s", entry_path(writer));
    copy_file(from, entry_path(reader));
    return load(reader, reason);
}

static void test_cache_stale_and_foreign_entries_are_misses(void **unused)
{
    (void)unused;
    ds_cache_key mine = make_key(), old = make_key(), other_dev = make_key(), other_model = make_key();
    snprintf(old.lib_version, sizeof old.lib_version, "0.3.0");
    snprintf(other_dev.device_name, sizeof other_dev.device_name, "NVIDIA A100-SXM4-40GB");
    other_dev.sm_count = 108;
    other_model.content_sha256[0] ^= 1;
    char reason[DS_CACHE_REASON_LEN];
    assert_int_equal(load_as(&old, &mine, reason), DS_CACHE_STALE);
    assert_non_null(strstr(reason, "0.3.0"));
    assert_int_equal(load_as(&other_dev, &mine, reason), DS_CACHE_FOREIGN);
    assert_non_null(strstr(reason, "A100"));
    assert_int_equal(load_as(&other_model, &mine, reason), DS_CACHE_FOREIGN);
    assert_non_null(strstr(reason, "model"));
    /* Every key field makes its own entry. */
    ds_cache_key a = make_key(), b = make_key();
    char pa[512];
    b.unit_sms = 16;
    snprintf(pa, sizeof pa, "%s", entry_path(&a));
    assert_string_not_equal(pa, entry_path(&b));
}

static void test_cache_not_a_profile_is_a_miss(void **unused)
{
    (void)unused;
    ds_cache_key k = make_key();
    FILE *f = fopen(entry_path(&k), "wb");
    for (int i = 0; i < 200; i++)
        fputc('z', f);
    fclose(f);
    char reason[DS_CACHE_REASON_LEN];
    assert_int_equal(load(&k, reason), DS_CACHE_BAD_MAGIC);
    assert_string_equal(ds_cache_outcome_name(DS_CACHE_BAD_MAGIC), "bad magic");
}

/* A FIFO in an entry's place is refused at once, not read: a blocking open
 * of it hung registration forever (found by a new user). */
static void test_cache_fifo_in_place_of_an_entry_is_a_miss(void **unused)
{
    (void)unused;
    ds_cache_key k = make_key();
    assert_int_equal(mkfifo(entry_path(&k), 0600), 0);
    char reason[DS_CACHE_REASON_LEN];
    alarm(10); /* a regression blocks: fail the test instead of hanging */
    assert_int_equal(load(&k, reason), DS_CACHE_IO);
    alarm(0);
    assert_non_null(strstr(reason, "not a regular file"));
}

static void test_cache_store_creates_the_directory(void **unused)
{
    (void)unused;
    char dir[400], file[420];
    snprintf(dir, sizeof dir, "%s/a/b/dstack", g_dir);
    ds_cache_key k = make_key();
    assert_int_equal(ds_cache_store(dir, &k, g_payload, sizeof g_payload), DSTACK_OK);
    void *blob;
    size_t n;
    assert_int_equal(ds_cache_load(dir, &k, &blob, &n, NULL), DS_CACHE_HIT);
    free(blob);
    /* A file where the directory should be: IO, not a crash. */
    snprintf(file, sizeof file, "%s/plainfile", g_dir);
    FILE *f = fopen(file, "w");
    fclose(f);
    assert_int_equal(ds_cache_store(file, &k, g_payload, sizeof g_payload), DSTACK_ERR_IO);
}

/* Writers in several processes store the same key over and over (payloads
 * of different sizes, each self-describing) while each also reads: every
 * read is a hit with one writer's complete payload, never a damaged one. */
#define WRITERS 4
#define ROUNDS 40

static size_t writer_payload(int w, int round, uint8_t *buf)
{
    size_t n = 1000 + (size_t)w * 7000 + (size_t)round;
    for (size_t i = 0; i < n; i++)
        buf[i] = (uint8_t)(w * 37 + i);
    buf[0] = (uint8_t)w;
    memcpy(buf + 1, &n, sizeof n);
    return n;
}

static int writer_main(int w, const ds_cache_key *k)
{
    static uint8_t buf[64 * 1024], want[64 * 1024];
    for (int r = 0; r < ROUNDS; r++) {
        size_t n = writer_payload(w, r, buf);
        if (ds_cache_store(g_dir, k, buf, n) != DSTACK_OK)
            return 2;
        void *blob = NULL;
        size_t got = 0;
        char reason[DS_CACHE_REASON_LEN];
        ds_cache_outcome oc = ds_cache_load(g_dir, k, &blob, &got, reason);
        if (oc != DS_CACHE_HIT) {
            fprintf(stderr, "writer %d round %d: %s\n", w, r, reason);
            return 3;
        }
        const uint8_t *p = blob;
        size_t claimed;
        memcpy(&claimed, p + 1, sizeof claimed);
        int rounds_of = (int)(claimed - 1000 - (size_t)p[0] * 7000);
        if (p[0] >= WRITERS || claimed != got || rounds_of < 0 || rounds_of >= ROUNDS ||
            writer_payload(p[0], rounds_of, want) != got || memcmp(want, p, got) != 0) {
            free(blob);
            return 4;
        }
        free(blob);
    }
    return 0;
}

static void test_cache_concurrent_writers_never_corrupt(void **unused)
{
    (void)unused;
    ds_cache_key k = make_key();
    pid_t pids[WRITERS];
    for (int w = 0; w < WRITERS; w++) {
        pids[w] = fork();
        assert_true(pids[w] >= 0);
        if (pids[w] == 0)
            _exit(writer_main(w, &k));
    }
    for (int w = 0; w < WRITERS; w++) {
        int status = 0;
        assert_int_equal(waitpid(pids[w], &status, 0), pids[w]);
        assert_true(WIFEXITED(status));
        assert_int_equal(WEXITSTATUS(status), 0);
    }
    void *blob;
    size_t n;
    assert_int_equal(ds_cache_load(g_dir, &k, &blob, &n, NULL), DS_CACHE_HIT);
    free(blob);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "test $(ls -A %s | wc -l) -eq 1", g_dir); /* no temporaries left */
    assert_int_equal(system(cmd), 0);
}

static void test_cache_dir_resolution(void **unused)
{
    (void)unused;
    char out[64];
    assert_true(ds_cache_dir_resolve("/opt/cache", "/x", "/home/u", out, sizeof out));
    assert_string_equal(out, "/opt/cache");
    assert_false(ds_cache_dir_resolve("", "/x", "/home/u", out, sizeof out));
    assert_string_equal(out, "");
    assert_true(ds_cache_dir_resolve(NULL, "/x/cache", "/home/u", out, sizeof out));
    assert_string_equal(out, "/x/cache/dstack");
    assert_true(ds_cache_dir_resolve(NULL, NULL, "/home/u", out, sizeof out));
    assert_string_equal(out, "/home/u/.cache/dstack");
    /* XDG says a relative XDG_CACHE_HOME is invalid and is ignored. */
    assert_true(ds_cache_dir_resolve(NULL, "rel/cache", "/home/u", out, sizeof out));
    assert_string_equal(out, "/home/u/.cache/dstack");
    assert_true(ds_cache_dir_resolve(NULL, "", "/home/u", out, sizeof out));
    assert_false(ds_cache_dir_resolve(NULL, NULL, NULL, out, sizeof out));
    assert_false(ds_cache_dir_resolve(NULL, NULL, "", out, sizeof out));
    char tiny[8];
    assert_false(ds_cache_dir_resolve(NULL, NULL, "/home/u", tiny, sizeof tiny)); /* never truncated */
    assert_string_equal(tiny, "");
    assert_true(ds_cache_dir_default("/given", out, sizeof out));
    assert_string_equal(out, "/given");
}

#define CASE(f) cmocka_unit_test_setup_teardown(f, setup_dir, teardown_dir)

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sha256_fips_vectors),
        cmocka_unit_test(test_sha256_incremental_equals_one_shot),
        CASE(test_cache_store_then_load_hits),
        CASE(test_cache_empty_payload_round_trips),
        CASE(test_cache_disabled_by_null_or_empty_dir),
        CASE(test_cache_truncated_entry_is_a_miss),
        CASE(test_cache_any_flipped_bit_is_a_miss),
        CASE(test_cache_other_format_version_is_a_miss),
        CASE(test_cache_trailing_bytes_are_corrupt),
        CASE(test_cache_stale_and_foreign_entries_are_misses),
        CASE(test_cache_not_a_profile_is_a_miss),
        CASE(test_cache_fifo_in_place_of_an_entry_is_a_miss),
        CASE(test_cache_store_creates_the_directory),
        CASE(test_cache_concurrent_writers_never_corrupt),
        cmocka_unit_test(test_cache_dir_resolution),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
