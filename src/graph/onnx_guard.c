/* onnx_guard.c - see onnx_guard.h. */
#include "graph/onnx_guard.h"

#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "util/error.h"
#include "util/fault.h"

/* ---- nesting depth ---- */

static bool read_varint(const uint8_t *p, size_t n, size_t *i, uint64_t *out)
{
    uint64_t v = 0;
    for (unsigned shift = 0; shift < 70 && *i < n; shift += 7) {
        uint8_t b = p[(*i)++];
        if (shift < 64)
            v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *out = v;
            return true;
        }
    }
    return false;
}

typedef enum { WALK_OK, WALK_TOO_DEEP, WALK_MALFORMED } walk_result;

static walk_result walk(const ProtobufCMessageDescriptor *d, const uint8_t *p, size_t n,
                        unsigned depth, unsigned max_depth)
{
    if (depth > max_depth)
        return WALK_TOO_DEEP;
    size_t i = 0;
    while (i < n) {
        uint64_t key, len;
        if (!read_varint(p, n, &i, &key))
            return WALK_MALFORMED;
        switch (key & 7) {
        case 0:
            if (!read_varint(p, n, &i, &len))
                return WALK_MALFORMED;
            break;
        case 1:
        case 5: {
            size_t w = (key & 7) == 1 ? 8 : 4;
            if (n - i < w)
                return WALK_MALFORMED;
            i += w;
            break;
        }
        case 2: {
            if (!read_varint(p, n, &i, &len) || len > n - i)
                return WALK_MALFORMED;
            uint64_t tag = key >> 3;
            const ProtobufCFieldDescriptor *f =
                d && tag <= UINT32_MAX ? protobuf_c_message_descriptor_get_field(d, (unsigned)tag) : NULL;
            if (f && f->type == PROTOBUF_C_TYPE_MESSAGE) {
                walk_result r = walk(f->descriptor, p + i, (size_t)len, depth + 1, max_depth);
                if (r != WALK_OK)
                    return r;
            }
            i += (size_t)len;
            break;
        }
        default: /* groups are not used by onnx.proto, and protobuf-c refuses them */
            return WALK_MALFORMED;
        }
    }
    return WALK_OK;
}

dstack_status ox_check_depth(const ProtobufCMessageDescriptor *desc, const uint8_t *bytes, size_t n,
                             unsigned max_depth)
{
    switch (walk(desc, bytes, n, 0, max_depth)) {
    case WALK_OK:
        return DSTACK_OK;
    case WALK_TOO_DEEP:
        return ds_fail(DSTACK_ERR_PARSE, "ONNX import: messages are nested more than %u deep "
                       "(a real model needs about 8)", max_depth);
    case WALK_MALFORMED:
        break;
    }
    return ds_fail(DSTACK_ERR_PARSE, "ONNX import: %zu bytes are not a valid ONNX model "
                   "(truncated or corrupt protobuf)", n);
}

/* ---- budgeted allocator ---- */

/* Each block carries its size in front, so free can give it back. */
typedef union block_header {
    size_t size;
    max_align_t align;
} block_header;

static void *budget_alloc(void *data, size_t size)
{
    ox_budget *b = data;
    if (size > b->limit - b->used || sizeof(block_header) > b->limit - b->used - size) {
        b->exceeded = true;
        return NULL;
    }
    block_header *h = ds_malloc(sizeof *h + size);
    if (!h)
        return NULL;
    h->size = size + sizeof *h;
    b->used += h->size;
    if (b->used > b->peak)
        b->peak = b->used;
    return h + 1;
}

static void budget_free(void *data, void *ptr)
{
    if (!ptr)
        return;
    ox_budget *b = data;
    block_header *h = (block_header *)ptr - 1;
    b->used -= h->size;
    free(h);
}

void ox_budget_init(ox_budget *b, size_t limit_bytes)
{
    memset(b, 0, sizeof *b);
    b->limit = limit_bytes;
    b->allocator.alloc = budget_alloc;
    b->allocator.free = budget_free;
    b->allocator.allocator_data = b;
}

/* ---- seeded hash ---- */

static uint64_t mix64(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

ox_hash_key ox_hash_seed(void)
{
    ox_hash_key k;
    if (getrandom(&k, sizeof k, GRND_NONBLOCK) == (ssize_t)sizeof k)
        return k;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    uint64_t a = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 32);
    k.k0 = mix64(a ^ (uint64_t)(uintptr_t)&k);
    k.k1 = mix64(k.k0 ^ (uint64_t)(uintptr_t)&ox_hash_seed);
    return k;
}

#define ROTL(x, b) (((x) << (b)) | ((x) >> (64 - (b))))
#define SIPROUND                                                                                   \
    do {                                                                                           \
        v0 += v1; v1 = ROTL(v1, 13); v1 ^= v0; v0 = ROTL(v0, 32);                                  \
        v2 += v3; v3 = ROTL(v3, 16); v3 ^= v2;                                                     \
        v0 += v3; v3 = ROTL(v3, 21); v3 ^= v0;                                                     \
        v2 += v1; v1 = ROTL(v1, 17); v1 ^= v2; v2 = ROTL(v2, 32);                                  \
    } while (0)

uint64_t ox_hash(const ox_hash_key *key, const char *s)
{
    size_t len = strlen(s);
    uint64_t v0 = 0x736f6d6570736575ull ^ key->k0, v1 = 0x646f72616e646f6dull ^ key->k1;
    uint64_t v2 = 0x6c7967656e657261ull ^ key->k0, v3 = 0x7465646279746573ull ^ key->k1;
    const uint8_t *p = (const uint8_t *)s;
    size_t whole = len - len % 8;
    for (size_t i = 0; i < whole; i += 8) {
        uint64_t m = 0;
        for (int j = 0; j < 8; j++)
            m |= (uint64_t)p[i + j] << (8 * j);
        v3 ^= m;
        SIPROUND;
        v0 ^= m;
    }
    uint64_t last = (uint64_t)len << 56;
    for (size_t j = 0; j < len % 8; j++)
        last |= (uint64_t)p[whole + j] << (8 * j);
    v3 ^= last;
    SIPROUND;
    v0 ^= last;
    v2 ^= 0xff;
    SIPROUND;
    SIPROUND;
    SIPROUND;
    return v0 ^ v1 ^ v2 ^ v3;
}
