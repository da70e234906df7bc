/* hostile_models.h - ONNX files built to hurt an importer (issue 14), written
 * straight in the protobuf wire format so that no library can refuse to
 * write them: deep nesting, 10^5..10^6-node chains, colliding names, huge
 * pool windows, broadcasts that explode, millions of empty initializers.
 * Shared by tests/test_hostile.c, the fuzz seed generator and the
 * registration benchmark. Header-only; every function returns a malloc'd
 * buffer the caller frees (hm_free). */
#ifndef HOSTILE_MODELS_H
#define HOSTILE_MODELS_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct pbuf {
    uint8_t *p;
    size_t n, cap;
} pbuf;

static inline void pb_put(pbuf *b, const void *d, size_t n)
{
    if (b->n + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n)
            cap *= 2;
        b->p = realloc(b->p, cap);
        if (!b->p)
            abort();
        b->cap = cap;
    }
    if (n)
        memcpy(b->p + b->n, d, n);
    b->n += n;
}

static inline void pb_varint(pbuf *b, uint64_t v)
{
    uint8_t t[10];
    size_t n = 0;
    do {
        t[n++] = (uint8_t)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
        v >>= 7;
    } while (v);
    pb_put(b, t, n);
}

static inline void pb_int(pbuf *b, unsigned field, uint64_t v)
{
    pb_varint(b, (uint64_t)field << 3);
    pb_varint(b, v);
}

static inline void pb_bytes(pbuf *b, unsigned field, const void *d, size_t n)
{
    pb_varint(b, (uint64_t)field << 3 | 2);
    pb_varint(b, n);
    pb_put(b, d, n);
}

static inline void pb_str(pbuf *b, unsigned field, const char *s) { pb_bytes(b, field, s, strlen(s)); }

/* Append `inner` as field `field` and free it. */
static inline void pb_msg(pbuf *b, unsigned field, pbuf *inner)
{
    pb_bytes(b, field, inner->p, inner->n);
    free(inner->p);
    memset(inner, 0, sizeof *inner);
}

static inline void hm_free(pbuf *b)
{
    free(b->p);
    memset(b, 0, sizeof *b);
}

/* ValueInfoProto of a float tensor. */
static inline void hm_value_info(pbuf *graph, unsigned field, const char *name, int rank, const int64_t *dims)
{
    pbuf shape = {0}, tt = {0}, type = {0}, vi = {0};
    for (int i = 0; i < rank; i++) {
        pbuf dim = {0};
        pb_int(&dim, 1, (uint64_t)dims[i]);
        pb_msg(&shape, 1, &dim);
    }
    pb_int(&tt, 1, 1); /* elem_type FLOAT */
    pb_msg(&tt, 2, &shape);
    pb_msg(&type, 1, &tt);
    pb_str(&vi, 1, name);
    pb_msg(&vi, 2, &type);
    pb_msg(graph, field, &vi);
}

static inline void hm_attr_int(pbuf *node, const char *name, int64_t v)
{
    pbuf a = {0};
    pb_str(&a, 1, name);
    pb_int(&a, 3, (uint64_t)v);
    pb_int(&a, 20, 2); /* INT */
    pb_msg(node, 5, &a);
}

static inline void hm_attr_ints(pbuf *node, const char *name, const int64_t *v, int n)
{
    pbuf a = {0};
    pb_str(&a, 1, name);
    for (int i = 0; i < n; i++)
        pb_int(&a, 8, (uint64_t)v[i]);
    pb_int(&a, 20, 7); /* INTS */
    pb_msg(node, 5, &a);
}

/* A NodeProto; attrs (may be empty) holds attribute fields already encoded. */
static inline void hm_node(pbuf *graph, const char *op, const char *const *ins, int n_in,
                    const char *const *outs, int n_out, pbuf *attrs)
{
    pbuf n = {0};
    for (int i = 0; i < n_in; i++)
        pb_str(&n, 1, ins[i]);
    for (int i = 0; i < n_out; i++)
        pb_str(&n, 2, outs[i]);
    pb_str(&n, 4, op);
    if (attrs && attrs->n)
        pb_put(&n, attrs->p, attrs->n);
    if (attrs)
        hm_free(attrs);
    pb_msg(graph, 1, &n);
}

/* A float initializer with `count` values (1.0). */
static inline void hm_init(pbuf *graph, const char *name, int rank, const int64_t *dims, size_t count)
{
    pbuf t = {0};
    for (int i = 0; i < rank; i++)
        pb_int(&t, 1, (uint64_t)dims[i]);
    pb_int(&t, 2, 1);
    pb_str(&t, 8, name);
    float *v = malloc(count * sizeof *v + 1);
    for (size_t i = 0; i < count; i++)
        v[i] = 1.0f;
    pb_bytes(&t, 9, v, count * sizeof *v);
    free(v);
    pb_msg(graph, 5, &t);
}

/* ModelProto around a graph (opset given). */
static inline pbuf hm_model(pbuf *graph, int64_t opset)
{
    pbuf m = {0}, os = {0};
    pb_int(&m, 1, 7);
    pb_str(&os, 1, "");
    pb_int(&os, 2, (uint64_t)opset);
    pb_msg(&m, 8, &os);
    pb_msg(&m, 7, graph);
    return m;
}

/* x[1,4] -> n nodes of `op` in a chain -> y. With dropout_masks each node is
 * a Dropout with an unused mask output (the quadratic name scan). */
static inline pbuf hm_chain(uint32_t n, const char *op, int dropout_masks)
{
    pbuf g = {0};
    int64_t dims[2] = {1, 4};
    char in[32], out[32], mask[32];
    pb_str(&g, 2, "chain");
    for (uint32_t i = 0; i < n; i++) {
        snprintf(in, sizeof in, i ? "t%u" : "x", i);
        snprintf(out, sizeof out, i + 1 < n ? "t%u" : "y", i + 1);
        snprintf(mask, sizeof mask, "m%u", i);
        const char *ins[1] = {in}, *outs[2] = {out, mask};
        hm_node(&g, op, ins, 1, outs, dropout_masks ? 2 : 1, NULL);
    }
    hm_value_info(&g, 11, "x", 2, dims);
    hm_value_info(&g, 12, "y", 2, dims);
    return hm_model(&g, 13);
}

/* 2^17 names whose unseeded 32-bit FNV-1a agree in the low 20 bits: in those
 * bits FNV-1a's state after a byte depends only on the low bits before, so
 * two 3-letter blocks that meet from one state give 2 choices per position,
 * and 17 positions give 2^17 names. blocks[pos][choice] is filled. */
#define HM_COLLIDE_POSITIONS 17
static inline void hm_fnv_blocks(char blocks[HM_COLLIDE_POSITIONS][2][4])
{
    static const char alnum[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    const uint32_t mask = (1u << 20) - 1;
    uint32_t *seen = malloc(((size_t)mask + 1) * sizeof *seen);
    uint32_t state = 2166136261u & mask;
    for (int pos = 0; pos < HM_COLLIDE_POSITIONS; pos++) {
        memset(seen, 0xff, ((size_t)mask + 1) * sizeof *seen);
        for (uint32_t c = 0;; c++) {
            char blk[4] = {alnum[c % 62], alnum[(c / 62) % 62], alnum[(c / 3844) % 62], 0};
            uint32_t s = state;
            for (int k = 0; k < 3; k++)
                s = ((s ^ (uint8_t)blk[k]) * 16777619u) & mask;
            if (seen[s] != UINT32_MAX) {
                uint32_t o = seen[s];
                char other[4] = {alnum[o % 62], alnum[(o / 62) % 62], alnum[(o / 3844) % 62], 0};
                memcpy(blocks[pos][0], other, 4);
                memcpy(blocks[pos][1], blk, 4);
                state = s;
                break;
            }
            seen[s] = c;
        }
    }
    free(seen);
}

/* x[1,4] -> Relu -> y, plus n unused 1-value initializers with colliding names. */
static inline pbuf hm_colliding_inits(uint32_t n)
{
    char blocks[HM_COLLIDE_POSITIONS][2][4];
    hm_fnv_blocks(blocks);
    pbuf g = {0};
    int64_t dims[2] = {1, 4}, one = 1;
    pb_str(&g, 2, "collide");
    const char *ins[1] = {"x"}, *outs[1] = {"y"};
    hm_node(&g, "Relu", ins, 1, outs, 1, NULL);
    char name[HM_COLLIDE_POSITIONS * 3 + 1];
    for (uint32_t i = 0; i < n && i < (1u << HM_COLLIDE_POSITIONS); i++) {
        for (int pos = 0; pos < HM_COLLIDE_POSITIONS; pos++)
            memcpy(name + 3 * pos, blocks[pos][(i >> pos) & 1], 3);
        name[HM_COLLIDE_POSITIONS * 3] = 0;
        hm_init(&g, name, 1, &one, 1);
    }
    hm_value_info(&g, 11, "x", 2, dims);
    hm_value_info(&g, 12, "y", 2, dims);
    return hm_model(&g, 13);
}

/* A graph input whose TypeProto nests sequence_type `depth` deep. */
static inline pbuf hm_nested_types(uint32_t depth)
{
    pbuf t = {0};
    pbuf tt = {0};
    pb_int(&tt, 1, 1);
    pb_msg(&t, 1, &tt); /* innermost: a float tensor type */
    for (uint32_t i = 0; i < depth; i++) {
        pbuf seq = {0}, outer = {0};
        pb_msg(&seq, 1, &t);     /* Sequence.elem_type */
        pb_msg(&outer, 4, &seq); /* TypeProto.sequence_type */
        t = outer;
    }
    pbuf vi = {0}, g = {0};
    pb_str(&vi, 1, "x");
    pb_msg(&vi, 2, &t);
    pb_msg(&g, 11, &vi);
    return hm_model(&g, 13);
}

/* A node whose attribute holds a graph whose node's attribute holds a
 * graph ... `depth` graphs deep. */
static inline pbuf hm_nested_graph_attrs(uint32_t depth)
{
    pbuf g = {0};
    pb_str(&g, 2, "leaf");
    for (uint32_t i = 0; i < depth; i++) {
        pbuf attr = {0}, node = {0}, outer = {0};
        pb_str(&attr, 1, "body");
        pb_msg(&attr, 6, &g);
        pb_int(&attr, 20, 5); /* GRAPH */
        pb_str(&node, 4, "If");
        pb_msg(&node, 5, &attr);
        pb_msg(&outer, 1, &node);
        g = outer;
    }
    return hm_model(&g, 13);
}

/* x[1,1,h,w] -> MaxPool(kernel k, stride s, pads p) -> y. */
static inline pbuf hm_maxpool(int64_t h, int64_t w, int64_t k, int64_t s, int64_t p)
{
    pbuf g = {0}, attrs = {0};
    int64_t dims[4] = {1, 1, h, w}, kk[2] = {k, k}, ss[2] = {s, s}, pp[4] = {p, p, p, p};
    hm_attr_ints(&attrs, "kernel_shape", kk, 2);
    hm_attr_ints(&attrs, "strides", ss, 2);
    hm_attr_ints(&attrs, "pads", pp, 4);
    const char *ins[1] = {"x"}, *outs[1] = {"y"};
    hm_node(&g, "MaxPool", ins, 1, outs, 1, &attrs);
    hm_value_info(&g, 11, "x", 4, dims);
    /* y's shape is left for the importer to infer */
    pbuf vi = {0};
    pb_str(&vi, 1, "y");
    pb_msg(&g, 12, &vi);
    return hm_model(&g, 13);
}

/* MaxPool whose strides attribute is an INTS with no values. */
static inline pbuf hm_empty_ints_pool(void)
{
    pbuf g = {0}, attrs = {0};
    int64_t dims[4] = {1, 1, 4, 4}, kk[2] = {2, 2};
    hm_attr_ints(&attrs, "kernel_shape", kk, 2);
    hm_attr_ints(&attrs, "strides", NULL, 0);
    hm_attr_ints(&attrs, "pads", NULL, 0);
    const char *ins[1] = {"x"}, *outs[1] = {"y"};
    hm_node(&g, "MaxPool", ins, 1, outs, 1, &attrs);
    hm_value_info(&g, 11, "x", 4, dims);
    pbuf vi = {0};
    pb_str(&vi, 1, "y");
    pb_msg(&g, 12, &vi);
    return hm_model(&g, 13);
}

/* a[1,side,1] + b[1,1,side] -> `n_out` outputs of side x side each. */
static inline pbuf hm_broadcast_add(int64_t side, int n_out)
{
    pbuf g = {0};
    int64_t da[3] = {1, side, 1}, db[3] = {1, 1, side};
    const char *ins[2] = {"a", "b"};
    for (int i = 0; i < n_out; i++) {
        char out[16];
        snprintf(out, sizeof out, "y%d", i);
        const char *outs[1] = {out};
        hm_node(&g, "Add", ins, 2, outs, 1, NULL);
        pbuf vi = {0};
        pb_str(&vi, 1, out);
        pb_msg(&g, 12, &vi);
    }
    hm_value_info(&g, 11, "a", 3, da);
    hm_value_info(&g, 11, "b", 3, db);
    return hm_model(&g, 13);
}

/* x -> Relu -> y, plus n empty initializers (2 bytes each on the wire). */
static inline pbuf hm_empty_inits(uint32_t n)
{
    pbuf g = {0};
    int64_t dims[2] = {1, 4};
    const char *ins[1] = {"x"}, *outs[1] = {"y"};
    hm_node(&g, "Relu", ins, 1, outs, 1, NULL);
    hm_value_info(&g, 11, "x", 2, dims);
    hm_value_info(&g, 12, "y", 2, dims);
    static const uint8_t empty[2] = {5 << 3 | 2, 0};
    for (uint32_t i = 0; i < n; i++)
        pb_put(&g, empty, 2);
    return hm_model(&g, 13);
}

#endif
