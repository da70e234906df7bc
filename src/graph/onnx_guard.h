/* onnx_guard.h - what keeps a hostile ONNX file from hurting the process
 * that imports it (private to graph/).
 *
 * protobuf-c has no nesting limit and allocates whatever the wire format
 * asks for, so before and while unpacking:
 *  - ox_check_depth walks the wire format once, guided by the generated
 *    message descriptors, and refuses nesting deeper than a bound: a file
 *    of TypeProto nested 5,000 deep would otherwise overflow the stack of
 *    the registering thread inside protobuf-c's recursive unpack.
 *  - ox_budget is a protobuf-c allocator that refuses to hold more than a
 *    byte budget, so 10 MB of empty initializers cannot become 1.27 GB of
 *    structs before the importer even looks at them.
 * The name table of the importer hashes with SipHash-1-3 under a key drawn
 * per import (ox_hash_seed), so names cannot be chosen to collide. */
#ifndef DS_GRAPH_ONNX_GUARD_H
#define DS_GRAPH_ONNX_GUARD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#include "dstack.h"

/* Deepest message nesting accepted. Real models need about 8 (model, graph,
 * node, attribute, tensor; value info, type, shape, dimension); graphs
 * nested in attributes (If/Loop bodies) add 4 per level and are refused by
 * the importer anyway. 64 levels of protobuf-c recursion take a few KB of
 * stack. */
#define OX_MAX_DEPTH 64

/* PARSE when the message nesting of `bytes` (a serialized `desc`) exceeds
 * max_depth or the wire format is broken; OK otherwise. O(n x depth). */
dstack_status ox_check_depth(const ProtobufCMessageDescriptor *desc, const uint8_t *bytes, size_t n,
                             unsigned max_depth);

typedef struct ox_budget {
    ProtobufCAllocator allocator; /* pass &b->allocator to protobuf-c */
    size_t limit, used, peak;
    bool exceeded;                /* an allocation was refused for the budget */
} ox_budget;

void ox_budget_init(ox_budget *b, size_t limit_bytes);

typedef struct ox_hash_key {
    uint64_t k0, k1;
} ox_hash_key;

/* A fresh random key (getrandom, else time and addresses mixed). */
ox_hash_key ox_hash_seed(void);
/* SipHash-1-3 of the NUL-terminated string under key. */
uint64_t ox_hash(const ox_hash_key *key, const char *s);

#endif
