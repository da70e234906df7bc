/* onnx_import.c - ONNX ModelProto bytes -> a finalized ds_graph.
 *
 * The protobuf is decoded by the protobuf-c code generated from onnx.proto;
 * this file only interprets it. Nodes are visited once, in file order (ONNX
 * requires topological order). Each ONNX value name maps to an entry of a
 * small hash table that says what the name is: a graph tensor (input or
 * activation), a constant (an initializer or a Constant node's value, kept
 * undecoded until a node needs it), or a graph input we could not accept.
 *
 * Constants are decoded lazily for two reasons: initializers that are only
 * parameters (Reshape's int64 shape, Clip's min/max, Dropout's ratio) must
 * not become float graph tensors, and an unused initializer of an odd type
 * should not make a model fail.
 *
 * Output shapes are inferred here as well as in ds_graph_finalize, because
 * ONNX rules need them while importing: auto_pad turns into explicit pads
 * only once the input's H and W are known, and negative axes need ranks.
 * ds_graph_finalize re-checks everything at the end; that check is the
 * authority.
 *
 * Every failure goes through ox_fail (a node, op and reason) and the
 * partially built graph is freed: the caller gets a graph or nothing.
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "graph/graph.h"
#include "graph/onnx_guard.h"
#include "graph/onnx_util.h"
#include "onnx.pb-c.h"
#include "util/error.h"
#include "util/fault.h"

/* A constant: an initializer / Constant-node tensor, or the value_float(s) /
 * value_int(s) attribute of a Constant node (then `tp` is NULL and the values
 * point into the attribute, which lives as long as the unpacked model). */
typedef struct ox_const {
    const Onnx__TensorProto *tp;
    int32_t dtype;
    uint32_t rank;
    int64_t dims[DS_MAX_RANK];
    const float *attr_floats;
    const int64_t *attr_ints;
    size_t attr_n;
} ox_const;

typedef enum ox_value_kind {
    OX_TENSOR,   /* graph tensor `tensor` */
    OX_CONST,    /* constant `c`; `tensor` once materialized as a float const */
    OX_BAD_INPUT /* a graph input that is not a float tensor */
} ox_value_kind;

typedef struct ox_value {
    const char *name; /* borrowed from the unpacked model */
    ox_value_kind kind;
    uint32_t tensor;
    ox_const c;
    int32_t bad_dtype;
} ox_value;

typedef struct ox_importer {
    const Onnx__GraphProto *gp;
    int64_t opset;
    ds_graph *g;
    ox_value *values;
    uint32_t n_values, cap_values;
    uint32_t *slots; /* hash table of value index + 1; 0 = empty */
    uint32_t n_slots;
    ox_hash_key key; /* drawn per import: names cannot be chosen to collide */
    const char **read_names; /* set of every name a node or graph output reads */
    uint32_t n_read_slots;
} ox_importer;

/* The node being imported, for messages. */
typedef struct ox_node {
    const Onnx__NodeProto *np;
    uint32_t index;
    const char *op;
} ox_node;

/* ------------------------------------------------------------------------ */
/* messages                                                                  */

static const char *dtype_name(int32_t t)
{
    static const char *const names[] = {"UNDEFINED", "FLOAT", "UINT8", "INT8", "UINT16",
                                        "INT16", "INT32", "INT64", "STRING", "BOOL",
                                        "FLOAT16", "DOUBLE", "UINT32", "UINT64", "COMPLEX64",
                                        "COMPLEX128", "BFLOAT16"};
    if (t >= 0 && t < (int32_t)(sizeof names / sizeof names[0]))
        return names[t];
    return "unknown type";
}

static dstack_status ox_fail(const ox_node *nc, dstack_status st, const char *fmt, ...)
    DS_PRINTF(3, 4);
static dstack_status ox_fail(const ox_node *nc, dstack_status st, const char *fmt, ...)
{
    char why[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    if (nc->np->name && nc->np->name[0])
        return ds_fail(st, "ONNX node '%s' (%s): %s", nc->np->name, nc->op, why);
    return ds_fail(st, "ONNX node #%u (%s): %s", nc->index, nc->op, why);
}

/* ------------------------------------------------------------------------ */
/* the name table                                                            */

/* Why a keyed hash: with a fixed one (FNV-1a before), a file of 60,000
 * initializer names that collide in the low bits made every lookup walk one
 * long probe chain, 30 s instead of 0.1 s. */
static uint32_t name_hash(const ox_importer *imp, const char *s)
{
    return (uint32_t)ox_hash(&imp->key, s);
}

static ox_value *value_find(const ox_importer *imp, const char *name)
{
    if (!name || !imp->n_slots)
        return NULL;
    uint32_t mask = imp->n_slots - 1;
    for (uint32_t i = name_hash(imp, name) & mask;; i = (i + 1) & mask) {
        uint32_t s = imp->slots[i];
        if (!s)
            return NULL;
        if (strcmp(imp->values[s - 1].name, name) == 0)
            return &imp->values[s - 1];
    }
}

static dstack_status table_grow(ox_importer *imp)
{
    uint32_t n_slots = imp->n_slots ? imp->n_slots * 2 : 64;
    uint32_t *slots = ds_calloc(n_slots, sizeof *slots);
    if (!slots)
        return ds_fail(DSTACK_ERR_OUT_OF_MEMORY, "ONNX import: out of memory (name table)");
    for (uint32_t v = 0; v < imp->n_values; v++) {
        uint32_t i = name_hash(imp, imp->values[v].name) & (n_slots - 1);
        while (slots[i])
            i = (i + 1) & (n_slots - 1);
        slots[i] = v + 1;
    }
    free(imp->slots);
    imp->slots = slots;
    imp->n_slots = n_slots;
    return DSTACK_OK;
}

/* A new entry for `name`; *out is valid until the next value_add. PARSE if
 * the name is already defined (ONNX values are assigned once). */
static dstack_status value_add(ox_importer *imp, const char *name, ox_value **out)
{
    if (!name || !name[0])
        return ds_fail(DSTACK_ERR_PARSE, "ONNX import: a value has an empty name");
    if (value_find(imp, name))
        return ds_fail(DSTACK_ERR_PARSE, "ONNX import: value '%s' is defined more than once",
                       name);
    if (imp->n_values == imp->cap_values) {
        uint32_t cap = imp->cap_values ? imp->cap_values * 2 : 64;
        ox_value *v = ds_realloc(imp->values, cap * sizeof *v);
        if (!v)
            return ds_fail(DSTACK_ERR_OUT_OF_MEMORY, "ONNX import: out of memory (values)");
        imp->values = v;
        imp->cap_values = cap;
    }
    if ((imp->n_values + 1) * 2 > imp->n_slots) {
        dstack_status st = table_grow(imp);
        if (st)
            return st;
    }
    ox_value *v = &imp->values[imp->n_values];
    memset(v, 0, sizeof *v);
    v->name = name;
    v->tensor = DS_TENSOR_NONE;
    uint32_t i = name_hash(imp, name) & (imp->n_slots - 1);
    while (imp->slots[i])
        i = (i + 1) & (imp->n_slots - 1);
    imp->slots[i] = ++imp->n_values;
    *out = v;
    return DSTACK_OK;
}

/* ------------------------------------------------------------------------ */
/* constants                                                                 */

static dstack_status const_from_tensor(const char *what, const Onnx__TensorProto *tp, ox_const *c)
{
    memset(c, 0, sizeof *c);
    c->tp = tp;
    c->dtype = tp->has_data_type ? tp->data_type : 0;
    if ((tp->has_data_location && tp->data_location == ONNX__TENSOR_PROTO__DATA_LOCATION__EXTERNAL) ||
        tp->n_external_data > 0)
        return ds_fail(DSTACK_ERR_EXTERNAL_DATA,
                       "ONNX import: tensor '%s' keeps its data in an external file; only "
                       "self-contained models are supported",
                       what);
    if (tp->segment)
        return ds_fail(DSTACK_ERR_PARSE, "ONNX import: tensor '%s' is segmented", what);
    if (tp->n_dims > DS_MAX_RANK)
        return ds_fail(DSTACK_ERR_UNSUPPORTED_OP, "ONNX import: tensor '%s' has rank %zu (max %d)",
                       what, tp->n_dims, DS_MAX_RANK);
    c->rank = (uint32_t)tp->n_dims;
    for (size_t i = 0; i < tp->n_dims; i++) {
        if (tp->dims[i] < 0 || tp->dims[i] > ((int64_t)1 << 40))
            return ds_fail(DSTACK_ERR_PARSE, "ONNX import: tensor '%s' has dimension %zu = %lld",
                           what, i, (long long)tp->dims[i]);
        c->dims[i] = tp->dims[i];
    }
    return DSTACK_OK;
}

static int64_t const_numel(const ox_const *c, bool *overflow)
{
    int64_t n = 1;
    *overflow = false;
    for (uint32_t i = 0; i < c->rank; i++) {
        if (c->dims[i] && n > ((int64_t)1 << 40) / c->dims[i]) {
            *overflow = true;
            return 0;
        }
        n *= c->dims[i];
    }
    return n;
}

static size_t dtype_size(int32_t t)
{
    switch (t) {
    case ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT:
    case ONNX__TENSOR_PROTO__DATA_TYPE__INT32:
    case ONNX__TENSOR_PROTO__DATA_TYPE__UINT32:
        return 4;
    case ONNX__TENSOR_PROTO__DATA_TYPE__INT64:
    case ONNX__TENSOR_PROTO__DATA_TYPE__DOUBLE:
    case ONNX__TENSOR_PROTO__DATA_TYPE__UINT64:
        return 8;
    case ONNX__TENSOR_PROTO__DATA_TYPE__INT16:
    case ONNX__TENSOR_PROTO__DATA_TYPE__UINT16:
    case ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT16:
    case ONNX__TENSOR_PROTO__DATA_TYPE__BFLOAT16:
        return 2;
    case ONNX__TENSOR_PROTO__DATA_TYPE__INT8:
    case ONNX__TENSOR_PROTO__DATA_TYPE__UINT8:
    case ONNX__TENSOR_PROTO__DATA_TYPE__BOOL:
        return 1;
    default:
        return 0;
    }
}

static uint64_t le_load(const uint8_t *p, size_t n)
{
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

/* Element i of a numeric constant as double (float types) or int64 (integer
 * and bool types); the caller has checked the element count. */
static double const_elem_f(const ox_const *c, int64_t i)
{
    const Onnx__TensorProto *tp = c->tp;
    if (!tp)
        return c->attr_floats ? (double)c->attr_floats[i] : (double)c->attr_ints[i];
    if (tp->has_raw_data) {
        const uint8_t *p = tp->raw_data.data + (size_t)i * dtype_size(c->dtype);
        if (c->dtype == ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT) {
            uint32_t u = (uint32_t)le_load(p, 4);
            float f;
            memcpy(&f, &u, 4);
            return f;
        }
        if (c->dtype == ONNX__TENSOR_PROTO__DATA_TYPE__DOUBLE) {
            uint64_t u = le_load(p, 8);
            double d;
            memcpy(&d, &u, 8);
            return d;
        }
        return 0;
    }
    if (c->dtype == ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT)
        return tp->float_data[i];
    return tp->double_data[i];
}

static int64_t const_elem_i(const ox_const *c, int64_t i)
{
    const Onnx__TensorProto *tp = c->tp;
    if (!tp)
        return c->attr_ints ? c->attr_ints[i] : (int64_t)c->attr_floats[i];
    size_t es = dtype_size(c->dtype);
    if (tp->has_raw_data) {
        uint64_t u = le_load(tp->raw_data.data + (size_t)i * es, es);
        /* sign-extend the signed types */
        if (c->dtype == ONNX__TENSOR_PROTO__DATA_TYPE__INT32)
            return (int32_t)(uint32_t)u;
        if (c->dtype == ONNX__TENSOR_PROTO__DATA_TYPE__INT8)
            return (int8_t)(uint8_t)u;
        if (c->dtype == ONNX__TENSOR_PROTO__DATA_TYPE__INT16)
            return (int16_t)(uint16_t)u;
        return (int64_t)u;
    }
    if (c->dtype == ONNX__TENSOR_PROTO__DATA_TYPE__INT64)
        return tp->int64_data[i];
    return tp->int32_data[i];
}

static bool dtype_is_float(int32_t t)
{
    return t == ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT || t == ONNX__TENSOR_PROTO__DATA_TYPE__DOUBLE;
}

static bool dtype_is_int(int32_t t)
{
    return t == ONNX__TENSOR_PROTO__DATA_TYPE__INT64 || t == ONNX__TENSOR_PROTO__DATA_TYPE__INT32 ||
           t == ONNX__TENSOR_PROTO__DATA_TYPE__INT16 || t == ONNX__TENSOR_PROTO__DATA_TYPE__INT8 ||
           t == ONNX__TENSOR_PROTO__DATA_TYPE__UINT8 || t == ONNX__TENSOR_PROTO__DATA_TYPE__BOOL;
}

/* Check that the constant's stored data holds exactly numel elements of a
 * type we can read; sets *numel. */
static dstack_status const_check(const ox_node *nc, const char *name, const ox_const *c,
                                 int64_t *numel)
{
    bool overflow;
    int64_t n = const_numel(c, &overflow);
    if (overflow)
        return ox_fail(nc, DSTACK_ERR_PARSE, "constant '%s' is too large", name);
    *numel = n;
    const Onnx__TensorProto *tp = c->tp;
    if (!tp) {
        if ((int64_t)c->attr_n != n)
            return ox_fail(nc, DSTACK_ERR_PARSE, "constant '%s' has %zu values for %lld elements",
                           name, c->attr_n, (long long)n);
        return DSTACK_OK;
    }
    if (!dtype_is_float(c->dtype) && !dtype_is_int(c->dtype))
        return ox_fail(nc, DSTACK_ERR_UNSUPPORTED_TYPE, "constant '%s' has element type %s", name,
                       dtype_name(c->dtype));
    size_t have;
    if (tp->has_raw_data) {
        size_t es = dtype_size(c->dtype);
        if (tp->raw_data.len % es)
            return ox_fail(nc, DSTACK_ERR_PARSE, "constant '%s': raw_data of %zu bytes is not a "
                           "whole number of %s elements", name, tp->raw_data.len,
                           dtype_name(c->dtype));
        have = tp->raw_data.len / es;
    } else if (c->dtype == ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT) {
        have = tp->n_float_data;
    } else if (c->dtype == ONNX__TENSOR_PROTO__DATA_TYPE__DOUBLE) {
        have = tp->n_double_data;
    } else if (c->dtype == ONNX__TENSOR_PROTO__DATA_TYPE__INT64) {
        have = tp->n_int64_data;
    } else {
        have = tp->n_int32_data;
    }
    if ((int64_t)have != n)
        return ox_fail(nc, DSTACK_ERR_PARSE, "constant '%s' holds %zu elements, its shape needs "
                       "%lld", name, have, (long long)n);
    return DSTACK_OK;
}

/* ------------------------------------------------------------------------ */
/* inputs of a node                                                          */

static const char *node_input_name(const ox_node *nc, uint32_t i)
{
    if (i >= nc->np->n_input || !nc->np->input[i] || !nc->np->input[i][0])
        return NULL;
    return nc->np->input[i];
}

static dstack_status lookup_input(ox_importer *imp, const ox_node *nc, uint32_t i, ox_value **out)
{
    const char *name = node_input_name(nc, i);
    ox_value *v = value_find(imp, name);
    if (!v)
        return ox_fail(nc, DSTACK_ERR_PARSE, "input %u '%s' is not a graph input, an initializer "
                       "or the output of an earlier node", i, name ? name : "");
    if (v->kind == OX_BAD_INPUT)
        return ox_fail(nc, DSTACK_ERR_UNSUPPORTED_TYPE, "input %u '%s' is a graph input of type "
                       "%s; only float32 tensors are supported", i, name,
                       dtype_name(v->bad_dtype));
    *out = v;
    return DSTACK_OK;
}

static dstack_status materialize_const(ox_importer *imp, const ox_node *nc, ox_value *v,
                                       const char *tensor_name, uint32_t *id);

/* Input i as a float graph tensor: constants become graph constants the
 * first time a node reads them as data. */
static dstack_status data_input(ox_importer *imp, const ox_node *nc, uint32_t i, uint32_t *id)
{
    ox_value *v;
    dstack_status st = lookup_input(imp, nc, i, &v);
    if (st)
        return st;
    if (v->kind == OX_TENSOR || v->tensor != DS_TENSOR_NONE) {
        *id = v->tensor;
        return DSTACK_OK;
    }
    return materialize_const(imp, nc, v, v->name, id);
}

static dstack_status materialize_const(ox_importer *imp, const ox_node *nc, ox_value *v,
                                       const char *tensor_name, uint32_t *id)
{
    dstack_status st;
    if (v->c.dtype != ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT)
        return ox_fail(nc, DSTACK_ERR_UNSUPPORTED_TYPE, "constant '%s' has type %s; only float32 "
                       "tensors are supported as data", v->name, dtype_name(v->c.dtype));
    int64_t n;
    st = const_check(nc, v->name, &v->c, &n);
    if (st)
        return st;
    if (n == 0)
        return ox_fail(nc, DSTACK_ERR_SHAPE, "constant '%s' is empty", v->name);
    float *data = ds_malloc((size_t)(n ? n : 1) * sizeof *data);
    if (!data)
        return ds_fail(DSTACK_ERR_OUT_OF_MEMORY, "ONNX import: out of memory (constant '%s')",
                       v->name);
    const Onnx__TensorProto *tp = v->c.tp;
    if (tp && tp->has_raw_data) {
        for (int64_t k = 0; k < n; k++) {
            uint32_t u = (uint32_t)le_load(tp->raw_data.data + 4 * (size_t)k, 4);
            memcpy(&data[k], &u, 4);
        }
    } else if (tp) {
        memcpy(data, tp->float_data, (size_t)n * sizeof *data);
    } else {
        for (int64_t k = 0; k < n; k++)
            data[k] = (float)const_elem_f(&v->c, k);
    }
    uint32_t t = ds_graph_add_const(imp->g, tensor_name, v->c.rank, v->c.dims, data);
    if (t == DS_TENSOR_NONE)
        return ox_fail(nc, DSTACK_ERR_OUT_OF_MEMORY, "cannot add constant '%s'", v->name);
    v->tensor = t;
    *id = t;
    return DSTACK_OK;
}

/* Input i as a constant (a parameter such as Reshape's shape). */
static dstack_status const_input(ox_importer *imp, const ox_node *nc, uint32_t i, const char *what,
                                 const ox_const **out, int64_t *numel)
{
    /* A non-float graph input here (an int64 shape fed at run time) is
     * refused for not being constant, the more useful reason. */
    dstack_status st;
    ox_value *v = value_find(imp, node_input_name(nc, i));
    if ((!v || v->kind != OX_BAD_INPUT) && (st = lookup_input(imp, nc, i, &v)))
        return st;
    if (v->kind != OX_CONST)
        return ox_fail(nc, DSTACK_ERR_UNSUPPORTED_OP, "%s (input %u '%s') must be a constant "
                       "(an initializer or a Constant node); computed values are not supported",
                       what, i, v->name);
    if ((st = const_check(nc, v->name, &v->c, numel)))
        return st;
    *out = &v->c;
    return DSTACK_OK;
}

static dstack_status const_input_scalar_f(ox_importer *imp, const ox_node *nc, uint32_t i,
                                          const char *what, double *out)
{
    const ox_const *c;
    int64_t n;
    dstack_status st = const_input(imp, nc, i, what, &c, &n);
    if (st)
        return st;
    if (n != 1)
        return ox_fail(nc, DSTACK_ERR_UNSUPPORTED_OP, "%s must be a single value, has %lld", what,
                       (long long)n);
    if (c->tp && !dtype_is_float(c->dtype))
        return ox_fail(nc, DSTACK_ERR_UNSUPPORTED_TYPE, "%s has type %s, expected float", what,
                       dtype_name(c->dtype));
    double v = c->tp ? const_elem_f(c, 0) : (c->attr_floats ? c->attr_floats[0] : (double)c->attr_ints[0]);
    /* keep the later float conversion defined: out of range means unbounded */
    *out = v > 3.4e38 ? INFINITY : v < -3.4e38 ? -INFINITY : v;
    return DSTACK_OK;
}

/* ------------------------------------------------------------------------ */
/* attributes                                                                */

static const Onnx__AttributeProto *attr_find(const ox_node *nc, const char *name)
{
    for (size_t i = 0; i < nc->np->n_attribute; i++) {
        const Onnx__AttributeProto *a = nc->np->attribute[i];
        if (a && a->name && strcmp(a->name, name) == 0)
            return a;
    }
    return NULL;
}

/* The attribute's declared type, or the one its filled field implies (IR 1
 * models leave `type` unset). */
static int attr_type(const Onnx__AttributeProto *a)
{
    if (a->has_type && a->type != ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__UNDEFINED)
        return a->type;
    if (a->has_f)
        return ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT;
    if (a->has_i)
        return ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT;
    if (a->has_s)
        return ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRING;
    if (a->t)
        return ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__TENSOR;
    if (a->n_floats)
        return ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOATS;
    if (a->n_ints)
        return ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS;
    return ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__UNDEFINED;
}

static dstack_status attr_bad_type(const ox_node *nc, const Onnx__AttributeProto *a,
                                   const char *expected)
{
    return ox_fail(nc, DSTACK_ERR_PARSE, "attribute '%s' should be %s (type code %d)", a->name,
                   expected, attr_type(a));
}

static dstack_status attr_int(const ox_node *nc, const char *name, int64_t def, int64_t *out)
{
    const Onnx__AttributeProto *a = attr_find(nc, name);
    *out = def;
    if (!a)
        return DSTACK_OK;
    if (attr_type(a) != ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT)
        return attr_bad_type(nc, a, "an int");
    *out = a->i;
    return DSTACK_OK;
}

static dstack_status attr_float(const ox_node *nc, const char *name, float def, float *out)
{
    const Onnx__AttributeProto *a = attr_find(nc, name);
    *out = def;
    if (!a)
        return DSTACK_OK;
    if (attr_type(a) != ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT)
        return attr_bad_type(nc, a, "a float");
    *out = a->f;
    return DSTACK_OK;
}

/* Absent: *n = 0. More than `max` values: UNSUPPORTED_OP. */
static dstack_status attr_ints(const ox_node *nc, const char *name, int64_t *out, size_t max,
                               size_t *n)
{
    const Onnx__AttributeProto *a = attr_find(nc, name);
    *n = 0;
    if (!a)
        return DSTACK_OK;
    int t = attr_type(a);
    if (t != ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS &&
        !(t == ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__UNDEFINED && a->n_ints == 0))
        return attr_bad_type(nc, a, "a list of ints");
    if (a->n_ints > max)
        return ox_fail(nc, DSTACK_ERR_UNSUPPORTED_OP, "attribute '%s' has %zu values, at most %zu "
                       "supported", name, a->n_ints, max);
    if (a->n_ints) /* an empty INTS has ints == NULL: memcpy(dst, NULL, 0) is UB */
        memcpy(out, a->ints, a->n_ints * sizeof *out);
    *n = a->n_ints;
    return DSTACK_OK;
}

/* A string attribute into buf (truncated), default when absent. */
static dstack_status attr_string(const ox_node *nc, const char *name, const char *def, char *buf,
                                 size_t cap)
{
    const Onnx__AttributeProto *a = attr_find(nc, name);
    snprintf(buf, cap, "%s", def);
    if (!a)
        return DSTACK_OK;
    if (attr_type(a) != ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRING)
        return attr_bad_type(nc, a, "a string");
    size_t n = a->s.len < cap - 1 ? a->s.len : cap - 1;
    if (n)
        memcpy(buf, a->s.data, n);
    buf[n] = '\0';
    return DSTACK_OK;
}

/* ------------------------------------------------------------------------ */
/* shapes                                                                    */

typedef struct ox_shape {
    uint32_t rank;
    int64_t dims[DS_MAX_RANK];
} ox_shape;

static ox_shape shape_of(const ox_importer *imp, uint32_t id)
{
    ox_shape s;
    const ds_tensor *t = &imp->g->tensors[id];
    s.rank = t->rank;
    memcpy(s.dims, t->dims, sizeof s.dims);
    return s;
}

static int64_t shape_numel(const ox_shape *s, uint32_t from, uint32_t to)
{
    int64_t n = 1;
    for (uint32_t i = from; i < to; i++)
        n *= s->dims[i];
    return n;
}

/* a * b when both are in [0, DS_ONNX_MAX_ELEMS] and so is the product;
 * else -1. */
static int64_t bounded_mul(int64_t a, int64_t b)
{
    if (a < 0 || b < 0 || a > DS_ONNX_MAX_ELEMS || b > DS_ONNX_MAX_ELEMS)
        return -1;
    int64_t p = a * b; /* < 2^56: no overflow */
    return p > DS_ONNX_MAX_ELEMS ? -1 : p;
}

/* The element count of dims[0..rank), or -1 past DS_ONNX_MAX_ELEMS. */
static int64_t bounded_numel(uint32_t rank, const int64_t *dims)
{
    int64_t n = 1;
    for (uint32_t i = 0; i < rank && n >= 0; i++)
        n = bounded_mul(n, dims[i]);
    return n;
}

/* ONNX axis in [-rank, rank) (or [-rank, rank] when `inclusive`, as
 * Flatten allows) -> [0, rank). */
static dstack_status normalize_axis(const ox_node *nc, int64_t axis, uint32_t rank, bool inclusive,
                                    int32_t *out)
{
    int64_t lim = inclusive ? (int64_t)rank + 1 : (int64_t)rank;
    int64_t a = axis < 0 ? axis + (int64_t)rank : axis;
    if (a < 0 || a >= lim)
        return ox_fail(nc, DSTACK_ERR_SHAPE, "axis %lld is out of range for rank %u",
                       (long long)axis, rank);
    *out = (int32_t)a;
    return DSTACK_OK;
}

static dstack_status broadcast(const ox_node *nc, const ox_shape *a, const ox_shape *b, ox_shape *o)
{
    o->rank = a->rank > b->rank ? a->rank : b->rank;
    for (uint32_t i = 0; i < o->rank; i++) {
        int64_t da = i < o->rank - a->rank ? 1 : a->dims[i - (o->rank - a->rank)];
        int64_t db = i < o->rank - b->rank ? 1 : b->dims[i - (o->rank - b->rank)];
        if (da != db && da != 1 && db != 1)
            return ox_fail(nc, DSTACK_ERR_SHAPE, "shapes do not broadcast: dimension %u is %lld "
                           "and %lld", i, (long long)da, (long long)db);
        o->dims[i] = da == 1 ? db : da;
    }
    return DSTACK_OK;
}

/* ------------------------------------------------------------------------ */
/* op handlers: read attributes and inputs, fill attrs/inputs, infer shape   */

typedef struct ox_build {
    ds_op_kind op;
    ds_op_attrs a;
    uint32_t ins[DS_NODE_MAX_INPUTS];
    uint32_t n_ins;
    ox_shape out;
} ox_build;

typedef dstack_status (*ox_handler)(ox_importer *imp, const ox_node *nc, ox_build *b);

static dstack_status need_inputs(const ox_node *nc, uint32_t lo, uint32_t hi)
{
    uint32_t n = (uint32_t)nc->np->n_input;
    while (n > 0 && !node_input_name(nc, n - 1))
        n--; /* trailing empty names are absent optional inputs */
    if (n < lo || n > hi)
        return ox_fail(nc, DSTACK_ERR_PARSE, "has %u inputs, expected %u to %u", n, lo, hi);
    for (uint32_t i = 0; i < lo; i++)
        if (!node_input_name(nc, i))
            return ox_fail(nc, DSTACK_ERR_PARSE, "required input %u is empty", i);
    return DSTACK_OK;
}

static dstack_status take_data_inputs(ox_importer *imp, const ox_node *nc, ox_build *b,
                                      uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) {
        if (!node_input_name(nc, i)) {
            b->ins[i] = DS_TENSOR_NONE;
            continue;
        }
        dstack_status st = data_input(imp, nc, i, &b->ins[i]);
        if (st)
            return st;
    }
    b->n_ins = n;
    return DSTACK_OK;
}

static dstack_status same_shape_unary(ox_importer *imp, const ox_node *nc, ox_build *b)
{
    dstack_status st = need_inputs(nc, 1, 1);
    if (!st)
        st = take_data_inputs(imp, nc, b, 1);
    if (!st)
        b->out = shape_of(imp, b->ins[0]);
    return st;
}

static dstack_status op_relu(ox_importer *imp, const ox_node *nc, ox_build *b)
{
    return same_shape_unary(imp, nc, b);
}

static dstack_status op_leaky_relu(ox_importer *imp, const ox_node *nc, ox_build *b)
{
    dstack_status st = attr_float(nc, "alpha", 0.01f, &b->a.alpha);
    return st ? st : same_shape_unary(imp, nc, b);
}

static dstack_status op_hard_sigmoid(ox_importer *imp, const ox_node *nc, ox_build *b)
{
    dstack_status st = attr_float(nc, "alpha", 0.2f, &b->a.alpha);
    if (!st)
        st = attr_float(nc, "beta", 0.5f, &b->a.beta);
    return st ? st : same_shape_unary(imp, nc, b);
}

static dstack_status op_clip(ox_importer *imp, const ox_node *nc, ox_build *b)
{
    dstack_status st;
    b->a.clip_min = -INFINITY;
    b->a.clip_max = INFINITY;
    if (imp->opset < 11) {
        float lo, hi;
        if ((st = attr_float(nc, "min", -INFINITY, &lo)) || (st = attr_float(nc, "max", INFINITY, &hi)))
            return st;
        /* opset 6 defaults are the float limits: same as no bound */
        b->a.clip_min = lo <= -3.4e38f ? -INFINITY : lo;
        b->a.clip_max = hi >= 3.4e38f ? INFINITY : hi;
        return same_shape_unary(imp, nc, b);
    }
    if ((st = need_inputs(nc, 1, 3)))
        return st;
    double v;
    if (node_input_name(nc, 1)) {
        if ((st = const_input_scalar_f(imp, nc, 1, "Clip min", &v)))
            return st;
        b->a.clip_min = (float)v;
    }
    if (node_input_name(nc, 2)) {
        if ((st = const_input_scalar_f(imp, nc, 2, "Clip max", &v)))
            return st;
        b->a.clip_max = (float)v;
    }
    if ((st = take_data_inputs(imp, nc, b, 1)))
        return st;
    b->out = shape_of(imp, b->ins[0]);
    return DSTACK_OK;
}

static dstack_status op_prelu(ox_importer *imp, const ox_node *nc, ox_build *b)
{
    dstack_status st = need_inputs(nc, 2, 2);
    if (!st)
        st = take_data_inputs(imp, nc, b, 2);
    if (st)
        return st;
    ox_shape x = shape_of(imp, b->ins[0]), s = shape_of(imp, b->ins[1]), o;
    if ((st = broadcast(nc, &x, &s, &o)))
        return st;
    if (o.rank != x.rank || memcmp(o.dims, x.dims, sizeof(int64_t) * x.rank))
        return ox_fail(nc, DSTACK_ERR_SHAPE, "slope does not broadcast to the input's shape");
    b->out = x;
    return DSTACK_OK;
}

static dstack_status op_batchnorm(ox_importer *imp, const ox_node *nc, ox_build *b)
{
    dstack_status st;
    int64_t training = 0, spatial = 1;
    if ((st = attr_float(nc, "epsilon", 1e-5f, &b->a.epsilon)) ||
        (st = attr_int(nc, "training_mode", 0, &training)) ||
        (st = attr_int(nc, "spatial", 1, &spatial)))
        return st;
    if (training)
        return ox_fail(nc, DSTACK_ERR_UNSUPPORTED_OP, "training_mode=1 is not supported "
                       "(inference only)");
    if (!spatial)
        return ox_fail(nc, DSTACK_ERR_UNSUPPORTED_OP, "spatial=0 is not supported");
    if ((st = need_inputs(nc, 5, 5)) || (st = take_data_inputs(imp, nc, b, 5)))
        return st;
    ox_shape x = shape_of(imp, b->ins[0]);
    if (x.rank < 2)
        return ox_fail(nc, DSTACK_ERR_SHAPE, "input has rank %u, expected N x C x ...", x.rank);
    for (uint32_t i = 1; i < 5; i++) {
        ox_shape p = shape_of(imp, b->ins[i]);
        if (shape_numel(&p, 0, p.rank) != x.dims[1])
            return ox_fail(nc, DSTACK_ERR_SHAPE, "parameter %u has %lld values for %lld channels",
                           i, (long long)shape_numel(&p, 0, p.rank), (long long)x.dims[1]);
    }
    b->out = x;
    return DSTACK_OK;
}

/* kernel, strides, dilations, pads (explicit or auto_pad) of Conv and the
 * pools, for a rank-4 input x; fills b->a and the output H, W. */
static dstack_status window_attrs(const ox_node *nc, const ox_shape *x, const int64_t *kernel_from_w,
                                  bool allow_dilation, bool ceil_mode, ox_build *b)
{
    dstack_status st;
    int64_t v[8];
    size_t n;
    int64_t k[2], s[2] = {1, 1}, d[2] = {1, 1}, p[4] = {0, 0, 0, 0};
    if ((st = attr_ints(nc, "kernel_shape", v, 8, &n)))
        return st;
    if (n == 0 && !kernel_from_w)
        return ox_fail(nc, DSTACK_ERR_PARSE, "attribute kernel_shape is required");
    if (n != 0 && n != 2)
        return ox_fail(nc, DSTACK_ERR_UNSUPPORTED_OP, "%zu-D kernel; only 2-D is supported", n);
    if (n == 2 && kernel_from_w && (v[0] != kernel_from_w[0] || v[1] != kernel_from_w[1]))
        return ox_fail(nc, DSTACK_ERR_SHAPE, "kernel_shape %lldx%lld differs from the weights' "
                       "%lldx%lld", (long long)v[0], (long long)v[1], (long long)kernel_from_w[0],
                       (long long)kernel_from_w[1]);
    k[0] = n ? v[0] : kernel_from_w[0];
    k[1] = n ? v[1] : kernel_from_w[1];
    if ((st = attr_ints(nc, "strides", v, 8, &n)))
        return st;
    if (n && n != 2)
        return ox_fail(nc, DSTACK_ERR_UNSUPPORTED_OP, "strides has %zu values, expected 2", n);
    if (n)
        s[0] = v[0], s[1] = v[1];
    if ((st = attr_ints(nc, "dilations", v, 8, &n)))
        return st;
    if (n && n != 2)
        return ox_fail(nc, DSTACK_ERR_UNSUPPORTED_OP, "dilations has %zu values, expected 2", n);
    if (n)
        d[0] = v[0], d[1] = v[1];
    if (!allow_dilation && (d[0] != 1 || d[1] != 1))
        return ox_fail(nc, DSTACK_ERR_UNSUPPORTED_OP, "dilations other than 1 are not supported");
    if ((st = attr_ints(nc, "pads", v, 8, &n)))
        return st;
    if (n && n != 4)
        return ox_fail(nc, DSTACK_ERR_UNSUPPORTED_OP, "pads has %zu values, expected 4", n);
    if (n)
        memcpy(p, v, sizeof p);
    for (int i = 0; i < 2; i++)
        if (k[i] < 1 || s[i] < 1 || d[i] < 1 || k[i] > 65535 || s[i] > 65535 || d[i] > 65535)
            return ox_fail(nc, DSTACK_ERR_SHAPE, "kernel %lld, stride %lld, dilation %lld out of "
                           "range", (long long)k[i], (long long)s[i], (long long)d[i]);
    for (int i = 0; i < 4; i++)
        if (p[i] < 0 || p[i] > 65535)
            return ox_fail(nc, DSTACK_ERR_SHAPE, "pad %lld out of range", (long long)p[i]);
    char pad_mode[32];
    if ((st = attr_string(nc, "auto_pad", "NOTSET", pad_mode, sizeof pad_mode)))
        return st;
    bool same_upper = strcmp(pad_mode, "SAME_UPPER") == 0;
    bool same_lower = strcmp(pad_mode, "SAME_LOWER") == 0;
    if (strcmp(pad_mode, "VALID") == 0) {
        memset(p, 0, sizeof p);
    } else if (same_upper || same_lower) {
        for (int i = 0; i < 2; i++) {
            int64_t in = x->dims[2 + i], out = (in + s[i] - 1) / s[i];
            int64_t total = (out - 1) * s[i] + (k[i] - 1) * d[i] + 1 - in;
            if (total < 0)
                total = 0;
            int64_t small = total / 2;
            p[i] = same_upper ? small : total - small;
            p[i + 2] = total - p[i];
        }
    } else if (strcmp(pad_mode, "NOTSET") != 0) {
        return ox_fail(nc, DSTACK_ERR_PARSE, "unknown auto_pad '%s'", pad_mode);
    }
    for (int i = 0; i < 2; i++) {
        b->a.kernel[i] = (uint32_t)k[i];
        b->a.stride[i] = (uint32_t)s[i];
        b->a.dilation[i] = (uint32_t)d[i];
    }
    for (int i = 0; i < 4; i++)
        b->a.pads[i] = (uint32_t)p[i];
    b->out.rank = 4;
    b->out.dims[0] = x->dims[0];
    b->out.dims[1] = x->dims[1];
    for (int i = 0; i < 2; i++) {
        int64_t span = x->dims[2 + i] + p[i] + p[i + 2] - ((k[i] - 1) * d[i] + 1);
        if (span < 0)
            return ox_fail(nc, DSTACK_ERR_SHAPE, "window %lld (dilated) is larger than the padded "
                           "input %lld", (long long)((k[i] - 1) * d[i] + 1),
                           (long long)(x->dims[2 + i] + p[i] + p[i + 2]));
        int64_t o = (ceil_mode ? (span + s[i] - 1) / s[i] : span / s[i]) + 1;
        /* ceil mode: the last window must start inside the input or left pad */
        if (ceil_mode && (o - 1) * s[i] >= x->dims[2 + i] + p[i])
            o--;
        b->out.dims[2 + i] = o;
    }
    return DSTACK_OK;
}

static dstack_status need_rank4(const ox_node *nc, const ox_shape *x)
{
    if (x->rank != 4)
        return ox_fail(nc, DSTACK_ERR_UNSUPPORTED_OP, "input has rank %u: only 2-D (NCHW) is "
                       "supported, not %u-D", x->rank, x->rank >= 2 ? x->rank - 2 : 0);
    return DSTACK_OK;
}

static dstack_status op_conv(ox_importer *imp, const ox_node *nc, ox_build *b)
{
    dstack_status st;
    int64_t group;
    if ((st = need_inputs(nc, 2, 3)) || (st = take_data_inputs(imp, nc, b, 3)))
        return st;
    if (b->ins[2] == DS_TENSOR_NONE)
        b->n_ins = 2;
    ox_shape x = shape_of(imp, b->ins[0]), w = shape_of(imp, b->ins[1]);
    if ((st = need_rank4(nc, &x)))
        return st;
    if (w.rank != 4)
        return ox_fail(nc, DSTACK_ERR_UNSUPPORTED_OP, "weights have rank %u, expected 4", w.rank);
    if ((st = attr_int(nc, "group", 1, &group)))
        return st;
    if (group < 1 || group > x.dims[1] || x.dims[1] % group || w.dims[0] % group ||
        w.dims[1] * group != x.dims[1])
        return ox_fail(nc, DSTACK_ERR_SHAPE, "group %lld does not fit %lld input channels and "
                       "weights %lldx%lld", (long long)group, (long long)x.dims[1],
                       (long long)w.dims[0], (long long)w.dims[1]);
    b->a.group = (uint32_t)group;
    if ((st = window_attrs(nc, &x, &w.dims[2], true, false, b)))
        return st;
    b->out.dims[1] = w.dims[0];
    int64_t cols = bounded_mul(bounded_mul(w.dims[1], w.dims[2] * w.dims[3]),
                               bounded_mul(b->out.dims[2], b->out.dims[3]));
    if (cols < 0)
        return ox_fail(nc, DSTACK_ERR_SHAPE, "its im2col matrix would exceed %lld elements",
                       (long long)DS_ONNX_MAX_ELEMS);
    if (b->n_ins == 3) {
        ox_shape bias = shape_of(imp, b->ins[2]);
        if (bias.rank != 1 || bias.dims[0] != w.dims[0])
            return ox_fail(nc, DSTACK_ERR_SHAPE, "bias must have %lld values",
                           (long long)w.dims[0]);
    }
    return DSTACK_OK;
}

static dstack_status op_pool(ox_importer *imp, const ox_node *nc, ox_build *b, bool is_max)
{
    dstack_status st;
    int64_t ceil_mode = 0, cip = 0, order = 0;
    if ((st = need_inputs(nc, 1, 1)) || (st = take_data_inputs(imp, nc, b, 1)))
        return st;
    ox_shape x = shape_of(imp, b->ins[0]);
    if ((st = need_rank4(nc, &x)) || (st = attr_int(nc, "ceil_mode", 0, &ceil_mode)) ||
        (st = attr_int(nc, "count_include_pad", 0, &cip)) ||
        (st = attr_int(nc, "storage_order", 0, &order)))
        return st;
    if (order != 0)
        return ox_fail(nc, DSTACK_ERR_UNSUPPORTED_OP, "storage_order=%lld is not supported",
                       (long long)order);
    b->a.ceil_mode = ceil_mode != 0;
    b->a.count_include_pad = cip != 0;
    return window_attrs(nc, &x, NULL, is_max, b->a.ceil_mode, b);
}

static dstack_status op_maxpool(ox_importer *imp, const ox_node *nc, ox_build *b)
{
    return op_pool(imp, nc, b, true);
}

static dstack_status op_avgpool(ox_importer *imp, const ox_node *nc, ox_build *b)
{
    return op_pool(imp, nc, b, false);
}

static dstack_status op_global_pool(ox_importer *imp, const ox_node *nc, ox_build *b)
{
    dstack_status st;
    if ((st = need_inputs(nc, 1, 1)) || (st = take_data_inputs(imp, nc, b, 1)))
        return st;
    ox_shape x = shape_of(imp, b->ins[0]);
    if ((st = need_rank4(nc, &x)))
        return st;
    b->out = x;
    b->out.dims[2] = b->out.dims[3] = 1;
    return DSTACK_OK;
}

static dstack_status op_gemm(ox_importer *imp, const ox_node *nc, ox_build *b)
{
    dstack_status st;
    int64_t ta, tb;
    if ((st = attr_float(nc, "alpha", 1.0f, &b->a.alpha)) ||
        (st = attr_float(nc, "beta", 1.0f, &b->a.beta)) ||
        (st = attr_int(nc, "transA", 0, &ta)) || (st = attr_int(nc, "transB", 0, &tb)) ||
        (st = need_inputs(nc, 2, 3)) || (st = take_data_inputs(imp, nc, b, 3)))
        return st;
    if (b->ins[2] == DS_TENSOR_NONE)
        b->n_ins = 2;
    b->a.trans_a = ta != 0;
    b->a.trans_b = tb != 0;
    ox_shape A = shape_of(imp, b->ins[0]), B = shape_of(imp, b->ins[1]);
    if (A.rank != 2 || B.rank != 2)
        return ox_fail(nc, DSTACK_ERR_SHAPE, "A and B must be matrices (ranks %u, %u)", A.rank,
                       B.rank);
    int64_t M = ta ? A.dims[1] : A.dims[0], K = ta ? A.dims[0] : A.dims[1];
    int64_t K2 = tb ? B.dims[1] : B.dims[0], N = tb ? B.dims[0] : B.dims[1];
    if (K != K2)
        return ox_fail(nc, DSTACK_ERR_SHAPE, "inner dimensions differ: %lld and %lld",
                       (long long)K, (long long)K2);
    b->out.rank = 2;
    b->out.dims[0] = M;
    b->out.dims[1] = N;
    if (b->n_ins == 3) {
        ox_shape C = shape_of(imp, b->ins[2]), o;
        if ((st = broadcast(nc, &b->out, &C, &o)))
            return st;
        if (o.rank != 2 || o.dims[0] != M || o.dims[1] != N)
            return ox_fail(nc, DSTACK_ERR_SHAPE, "C does not broadcast to %lldx%lld",
                           (long long)M, (long long)N);
    }
    return DSTACK_OK;
}

static dstack_status op_matmul(ox_importer *imp, const ox_node *nc, ox_build *b)
{
    dstack_status st;
    if ((st = need_inputs(nc, 2, 2)) || (st = take_data_inputs(imp, nc, b, 2)))
        return st;
    ox_shape A = shape_of(imp, b->ins[0]), B = shape_of(imp, b->ins[1]);
    if (A.rank == 0 || B.rank == 0)
        return ox_fail(nc, DSTACK_ERR_SHAPE, "operands must have rank >= 1");
    ox_shape a2 = A, b2 = B, batch_a, batch_b, o;
    if (A.rank == 1) { /* [K] -> [1, K] */
        a2.rank = 2;
        a2.dims[0] = 1;
        a2.dims[1] = A.dims[0];
    }
    if (B.rank == 1) { /* [K] -> [K, 1] */
        b2.rank = 2;
        b2.dims[0] = B.dims[0];
        b2.dims[1] = 1;
    }
    if (a2.dims[a2.rank - 1] != b2.dims[b2.rank - 2])
        return ox_fail(nc, DSTACK_ERR_SHAPE, "inner dimensions differ: %lld and %lld",
                       (long long)a2.dims[a2.rank - 1], (long long)b2.dims[b2.rank - 2]);
    batch_a.rank = a2.rank - 2;
    memcpy(batch_a.dims, a2.dims, sizeof(int64_t) * batch_a.rank);
    batch_b.rank = b2.rank - 2;
    memcpy(batch_b.dims, b2.dims, sizeof(int64_t) * batch_b.rank);
    if ((st = broadcast(nc, &batch_a, &batch_b, &o)))
        return st;
    if (A.rank != 1)
        o.dims[o.rank++] = a2.dims[a2.rank - 2];
    if (B.rank != 1)
        o.dims[o.rank++] = b2.dims[b2.rank - 1];
    if (o.rank > DS_MAX_RANK)
        return ox_fail(nc, DSTACK_ERR_SHAPE, "result rank too large");
    b->out = o;
    return DSTACK_OK;
}

static dstack_status op_variadic(ox_importer *imp, const ox_node *nc, ox_build *b, uint32_t lo,
                                 uint32_t hi)
{
    dstack_status st;
    if ((st = need_inputs(nc, lo, hi)))
        return st;
    uint32_t n = (uint32_t)nc->np->n_input;
    for (uint32_t i = 0; i < n; i++)
        if (!node_input_name(nc, i))
            return ox_fail(nc, DSTACK_ERR_PARSE, "input %u is empty", i);
    if ((st = take_data_inputs(imp, nc, b, n)))
        return st;
    b->out = shape_of(imp, b->ins[0]);
    for (uint32_t i = 1; i < n; i++) {
        ox_shape s = shape_of(imp, b->ins[i]), o;
        if ((st = broadcast(nc, &b->out, &s, &o)))
            return st;
        b->out = o;
    }
    return DSTACK_OK;
}

static dstack_status op_binary(ox_importer *imp, const ox_node *nc, ox_build *b)
{
    int64_t bc;
    dstack_status st = attr_int(nc, "broadcast", 0, &bc); /* opset < 7 only; harmless */
    return st ? st : op_variadic(imp, nc, b, 2, 2);
}

static dstack_status op_sum(ox_importer *imp, const ox_node *nc, ox_build *b)
{
    if (nc->np->n_input > DS_NODE_MAX_INPUTS)
        return ox_fail(nc, DSTACK_ERR_UNSUPPORTED_OP, "%zu inputs, at most %d supported",
                       nc->np->n_input, DS_NODE_MAX_INPUTS);
    return op_variadic(imp, nc, b, 1, DS_NODE_MAX_INPUTS);
}

static dstack_status op_concat(ox_importer *imp, const ox_node *nc, ox_build *b)
{
    dstack_status st;
    if (nc->np->n_input > DS_NODE_MAX_INPUTS)
        return ox_fail(nc, DSTACK_ERR_UNSUPPORTED_OP, "%zu inputs, at most %d supported",
                       nc->np->n_input, DS_NODE_MAX_INPUTS);
    if (!attr_find(nc, "axis"))
        return ox_fail(nc, DSTACK_ERR_PARSE, "attribute axis is required");
    int64_t axis;
    if ((st = attr_int(nc, "axis", 0, &axis)) || (st = need_inputs(nc, 1, DS_NODE_MAX_INPUTS)))
        return st;
    uint32_t n = (uint32_t)nc->np->n_input;
    for (uint32_t i = 0; i < n; i++)
        if (!node_input_name(nc, i))
            return ox_fail(nc, DSTACK_ERR_PARSE, "input %u is empty", i);
    if ((st = take_data_inputs(imp, nc, b, n)))
        return st;
    ox_shape o = shape_of(imp, b->ins[0]);
    if ((st = normalize_axis(nc, axis, o.rank, false, &b->a.axis)))
        return st;
    for (uint32_t i = 1; i < n; i++) {
        ox_shape s = shape_of(imp, b->ins[i]);
        if (s.rank != o.rank)
            return ox_fail(nc, DSTACK_ERR_SHAPE, "input %u has rank %u, input 0 has %u", i,
                           s.rank, o.rank);
        for (uint32_t d = 0; d < o.rank; d++)
            if (d != (uint32_t)b->a.axis && s.dims[d] != o.dims[d])
                return ox_fail(nc, DSTACK_ERR_SHAPE, "input %u differs in dimension %u", i, d);
        o.dims[b->a.axis] += s.dims[b->a.axis];
    }
    b->out = o;
    return DSTACK_OK;
}

static dstack_status op_flatten(ox_importer *imp, const ox_node *nc, ox_build *b)
{
    dstack_status st;
    int64_t axis;
    if ((st = attr_int(nc, "axis", 1, &axis)) || (st = need_inputs(nc, 1, 1)) ||
        (st = take_data_inputs(imp, nc, b, 1)))
        return st;
    ox_shape x = shape_of(imp, b->ins[0]);
    if ((st = normalize_axis(nc, axis, x.rank, true, &b->a.axis)))
        return st;
    b->out.rank = 2;
    b->out.dims[0] = shape_numel(&x, 0, (uint32_t)b->a.axis);
    b->out.dims[1] = shape_numel(&x, (uint32_t)b->a.axis, x.rank);
    return DSTACK_OK;
}

static dstack_status op_reshape(ox_importer *imp, const ox_node *nc, ox_build *b)
{
    dstack_status st;
    int64_t allowzero;
    const ox_const *c;
    int64_t n;
    if ((st = attr_int(nc, "allowzero", 0, &allowzero)) || (st = need_inputs(nc, 2, 2)) ||
        (st = const_input(imp, nc, 1, "Reshape shape", &c, &n)))
        return st;
    if (c->tp && !dtype_is_int(c->dtype))
        return ox_fail(nc, DSTACK_ERR_UNSUPPORTED_TYPE, "shape has type %s, expected int64",
                       dtype_name(c->dtype));
    if (c->rank != 1 || n > DS_MAX_RANK)
        return ox_fail(nc, DSTACK_ERR_SHAPE, "shape must be a 1-D tensor of at most %d values",
                       DS_MAX_RANK);
    if ((st = take_data_inputs(imp, nc, b, 1)))
        return st;
    ox_shape x = shape_of(imp, b->ins[0]);
    b->a.allowzero = allowzero != 0;
    b->a.shape_rank = (uint32_t)n;
    int64_t known = 1, infer_at = -1;
    b->out.rank = (uint32_t)n;
    for (int64_t i = 0; i < n; i++) {
        int64_t d = const_elem_i(c, i);
        b->a.shape[i] = d;
        if (d == 0 && !allowzero) {
            if (i >= x.rank)
                return ox_fail(nc, DSTACK_ERR_SHAPE, "shape[%lld] = 0 copies a dimension the "
                               "input (rank %u) does not have", (long long)i, x.rank);
            d = x.dims[i];
        }
        if (d == -1) {
            if (infer_at >= 0)
                return ox_fail(nc, DSTACK_ERR_SHAPE, "shape has more than one -1");
            infer_at = i;
            continue;
        }
        if (d == 0)
            return ox_fail(nc, DSTACK_ERR_UNSUPPORTED_OP, "allowzero=1 with shape[%lld] = 0 makes "
                           "an empty tensor; empty tensors are not supported", (long long)i);
        if (d < 0)
            return ox_fail(nc, DSTACK_ERR_SHAPE, "shape[%lld] = %lld", (long long)i, (long long)d);
        b->out.dims[i] = d;
        known = bounded_mul(known, d);
        if (known < 0)
            return ox_fail(nc, DSTACK_ERR_SHAPE, "shape holds more than %lld elements",
                           (long long)DS_ONNX_MAX_ELEMS);
    }
    int64_t total = shape_numel(&x, 0, x.rank);
    if (infer_at >= 0) {
        if (known == 0 || total % known)
            return ox_fail(nc, DSTACK_ERR_SHAPE, "cannot infer -1: %lld elements into %lld",
                           (long long)total, (long long)known);
        b->out.dims[infer_at] = total / known;
    } else if (known != total) {
        return ox_fail(nc, DSTACK_ERR_SHAPE, "shape holds %lld elements, the input has %lld",
                       (long long)known, (long long)total);
    }
    return DSTACK_OK;
}

static dstack_status op_transpose(ox_importer *imp, const ox_node *nc, ox_build *b)
{
    dstack_status st;
    int64_t perm[DS_MAX_RANK];
    size_t n;
    if ((st = attr_ints(nc, "perm", perm, DS_MAX_RANK, &n)) || (st = need_inputs(nc, 1, 1)) ||
        (st = take_data_inputs(imp, nc, b, 1)))
        return st;
    ox_shape x = shape_of(imp, b->ins[0]);
    if (n == 0) {
        n = x.rank;
        for (size_t i = 0; i < n; i++)
            perm[i] = (int64_t)(n - 1 - i);
    }
    if (n != x.rank)
        return ox_fail(nc, DSTACK_ERR_SHAPE, "perm has %zu values for rank %u", n, x.rank);
    bool seen[DS_MAX_RANK] = {false};
    b->out.rank = x.rank;
    for (size_t i = 0; i < n; i++) {
        int64_t p = perm[i] < 0 ? perm[i] + (int64_t)n : perm[i];
        if (p < 0 || p >= (int64_t)n || seen[p])
            return ox_fail(nc, DSTACK_ERR_SHAPE, "perm is not a permutation");
        seen[p] = true;
        b->a.perm[i] = (uint32_t)p;
        b->out.dims[i] = x.dims[p];
    }
    return DSTACK_OK;
}

static dstack_status op_softmax(ox_importer *imp, const ox_node *nc, ox_build *b)
{
    dstack_status st;
    int64_t axis;
    bool legacy = imp->opset < 13;
    if ((st = attr_int(nc, "axis", legacy ? 1 : -1, &axis)) || (st = need_inputs(nc, 1, 1)) ||
        (st = take_data_inputs(imp, nc, b, 1)))
        return st;
    ox_shape x = shape_of(imp, b->ins[0]);
    if ((st = normalize_axis(nc, axis, x.rank, false, &b->a.axis)))
        return st;
    /* Coercing to 2-D at the last axis is the same as the opset-13 rule. */
    b->a.softmax_legacy = legacy && (uint32_t)b->a.axis != x.rank - 1;
    b->out = x;
    return DSTACK_OK;
}

static dstack_status op_lrn(ox_importer *imp, const ox_node *nc, ox_build *b)
{
    dstack_status st;
    int64_t size;
    if (!attr_find(nc, "size"))
        return ox_fail(nc, DSTACK_ERR_PARSE, "attribute size is required");
    if ((st = attr_int(nc, "size", 1, &size)) || (st = attr_float(nc, "alpha", 1e-4f, &b->a.alpha)) ||
        (st = attr_float(nc, "beta", 0.75f, &b->a.beta)) ||
        (st = attr_float(nc, "bias", 1.0f, &b->a.bias)))
        return st;
    if (size < 1 || size > 65535)
        return ox_fail(nc, DSTACK_ERR_SHAPE, "size %lld out of range", (long long)size);
    b->a.size = (uint32_t)size;
    if ((st = same_shape_unary(imp, nc, b)))
        return st;
    if (b->out.rank < 2)
        return ox_fail(nc, DSTACK_ERR_SHAPE, "input must be N x C x ...");
    return DSTACK_OK;
}

static dstack_status op_dropout(ox_importer *imp, const ox_node *nc, ox_build *b)
{
    dstack_status st;
    int64_t is_test = 1;
    if ((st = need_inputs(nc, 1, 3)) || (st = attr_int(nc, "is_test", 1, &is_test)))
        return st;
    if (!is_test)
        return ox_fail(nc, DSTACK_ERR_UNSUPPORTED_OP, "is_test=0 (training) is not supported");
    if (node_input_name(nc, 2)) {
        const ox_const *c;
        int64_t n;
        if ((st = const_input(imp, nc, 2, "Dropout training_mode", &c, &n)))
            return st;
        if (n != 1 || (c->tp && !dtype_is_int(c->dtype)))
            return ox_fail(nc, DSTACK_ERR_UNSUPPORTED_TYPE, "training_mode must be a bool scalar");
        if (const_elem_i(c, 0) != 0) {
            double ratio = 0.5;
            if (node_input_name(nc, 1) &&
                (st = const_input_scalar_f(imp, nc, 1, "Dropout ratio", &ratio)))
                return st;
            if (ratio != 0)
                return ox_fail(nc, DSTACK_ERR_UNSUPPORTED_OP, "training_mode=true with ratio %g "
                               "is random; only inference is supported", ratio);
        }
    }
    /* ratio is ignored at inference, so it may be any float input */
    if ((st = take_data_inputs(imp, nc, b, 1)))
        return st;
    b->out = shape_of(imp, b->ins[0]);
    return DSTACK_OK;
}

/* ------------------------------------------------------------------------ */
/* the op table                                                              */

typedef struct ox_op {
    const char *onnx;
    ds_op_kind kind;
    int64_t min_opset; /* the first version whose semantics we implement */
    ox_handler handler;
    uint32_t max_outputs; /* outputs allowed when extra ones are unused */
} ox_op;

static const ox_op OPS[] = {
    {"Conv", DS_OP_CONV, 1, op_conv, 1},
    {"BatchNormalization", DS_OP_BATCHNORM, 6, op_batchnorm, 5},
    {"Relu", DS_OP_RELU, 6, op_relu, 1},
    {"Clip", DS_OP_CLIP, 6, op_clip, 1},
    {"LeakyRelu", DS_OP_LEAKY_RELU, 6, op_leaky_relu, 1},
    {"Sigmoid", DS_OP_SIGMOID, 6, op_relu, 1},
    {"Tanh", DS_OP_TANH, 6, op_relu, 1},
    {"HardSigmoid", DS_OP_HARD_SIGMOID, 6, op_hard_sigmoid, 1},
    {"HardSwish", DS_OP_HARD_SWISH, 14, op_relu, 1},
    {"PRelu", DS_OP_PRELU, 7, op_prelu, 1},
    {"MaxPool", DS_OP_MAXPOOL, 1, op_maxpool, 2},
    {"AveragePool", DS_OP_AVGPOOL, 1, op_avgpool, 1},
    {"GlobalAveragePool", DS_OP_GLOBAL_AVGPOOL, 1, op_global_pool, 1},
    {"GlobalMaxPool", DS_OP_GLOBAL_MAXPOOL, 1, op_global_pool, 1},
    {"Gemm", DS_OP_GEMM, 7, op_gemm, 1},
    {"MatMul", DS_OP_MATMUL, 1, op_matmul, 1},
    {"Add", DS_OP_ADD, 7, op_binary, 1},
    {"Mul", DS_OP_MUL, 7, op_binary, 1},
    {"Sum", DS_OP_SUM, 6, op_sum, 1},
    {"Concat", DS_OP_CONCAT, 4, op_concat, 1},
    {"Flatten", DS_OP_FLATTEN, 1, op_flatten, 1},
    {"Reshape", DS_OP_RESHAPE, 5, op_reshape, 1},
    {"Transpose", DS_OP_TRANSPOSE, 1, op_transpose, 1},
    {"Softmax", DS_OP_SOFTMAX, 1, op_softmax, 1},
    {"LRN", DS_OP_LRN, 1, op_lrn, 1},
    {"Dropout", DS_OP_IDENTITY, 7, op_dropout, 2},
    {"Identity", DS_OP_IDENTITY, 1, op_relu, 1},
};

static const ox_op *op_lookup(const char *name)
{
    for (size_t i = 0; i < sizeof OPS / sizeof OPS[0]; i++)
        if (strcmp(OPS[i].onnx, name) == 0)
            return &OPS[i];
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* graph-level steps                                                         */

static bool name_is_read(const ox_importer *imp, const char *name)
{
    uint32_t mask = imp->n_read_slots - 1;
    for (uint32_t i = name_hash(imp, name) & mask; imp->read_names[i]; i = (i + 1) & mask)
        if (strcmp(imp->read_names[i], name) == 0)
            return true;
    return false;
}

static void read_set_add(ox_importer *imp, const char *name)
{
    if (!name || !name[0] || name_is_read(imp, name))
        return;
    uint32_t mask = imp->n_read_slots - 1;
    uint32_t i = name_hash(imp, name) & mask;
    while (imp->read_names[i])
        i = (i + 1) & mask;
    imp->read_names[i] = name;
}

/* The set of names that nodes and graph outputs read, built once: asking
 * "is this extra output read?" by scanning every node was quadratic
 * (100,000 Dropouts with mask outputs did not finish in 5 minutes). */
static dstack_status build_read_set(ox_importer *imp)
{
    const Onnx__GraphProto *gp = imp->gp;
    uint64_t n = gp->n_output;
    for (size_t k = 0; k < gp->n_node; k++)
        n += gp->node[k]->n_input;
    uint64_t slots = 64;
    while (slots < 2 * n)
        slots *= 2;
    if (slots > UINT32_MAX)
        return ds_fail(DSTACK_ERR_PARSE, "ONNX import: %llu node inputs is too many",
                       (unsigned long long)n);
    imp->read_names = ds_calloc((size_t)slots, sizeof *imp->read_names);
    if (!imp->read_names)
        return ds_fail(DSTACK_ERR_OUT_OF_MEMORY, "ONNX import: out of memory (name set)");
    imp->n_read_slots = (uint32_t)slots;
    for (size_t k = 0; k < gp->n_node; k++)
        for (size_t i = 0; i < gp->node[k]->n_input; i++)
            read_set_add(imp, gp->node[k]->input[i]);
    for (size_t o = 0; o < gp->n_output; o++)
        read_set_add(imp, gp->output[o]->name);
    return DSTACK_OK;
}

static dstack_status add_initializers(ox_importer *imp)
{
    const Onnx__GraphProto *gp = imp->gp;
    if (gp->n_sparse_initializer)
        return ds_fail(DSTACK_ERR_UNSUPPORTED_TYPE, "ONNX import: sparse initializers are not "
                       "supported");
    for (size_t i = 0; i < gp->n_initializer; i++) {
        const Onnx__TensorProto *tp = gp->initializer[i];
        ox_value *v;
        dstack_status st = value_add(imp, tp->name, &v);
        if (st)
            return st;
        v->kind = OX_CONST;
        if ((st = const_from_tensor(tp->name, tp, &v->c)))
            return st;
    }
    return DSTACK_OK;
}

/* The tensor type of a graph input or output, or a status. */
static dstack_status value_tensor_type(const Onnx__ValueInfoProto *vi, const char *what,
                                       const Onnx__TypeProto__Tensor **out, int32_t *dtype)
{
    const Onnx__TypeProto *tp = vi->type;
    *out = NULL;
    *dtype = 0;
    if (!tp || tp->value_case != ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE || !tp->tensor_type)
        return ds_fail(DSTACK_ERR_UNSUPPORTED_TYPE, "ONNX import: %s '%s' is not a tensor "
                       "(sequence, map, optional or missing type)", what, vi->name);
    *out = tp->tensor_type;
    *dtype = tp->tensor_type->has_elem_type ? tp->tensor_type->elem_type : 0;
    return DSTACK_OK;
}

static dstack_status add_inputs(ox_importer *imp)
{
    const Onnx__GraphProto *gp = imp->gp;
    for (size_t i = 0; i < gp->n_input; i++) {
        const Onnx__ValueInfoProto *vi = gp->input[i];
        if (!vi->name || !vi->name[0])
            return ds_fail(DSTACK_ERR_PARSE, "ONNX import: graph input %zu has no name", i);
        ox_value *known = value_find(imp, vi->name);
        if (known && known->kind == OX_CONST)
            continue; /* an input with a default value: a constant for us */
        const Onnx__TypeProto__Tensor *tt;
        int32_t dtype;
        ox_value *v;
        dstack_status st = value_add(imp, vi->name, &v);
        if (st)
            return st;
        if (value_tensor_type(vi, "graph input", &tt, &dtype) ||
            dtype != ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT) {
            /* refused when a node reads it, or at the end if none does */
            v->kind = OX_BAD_INPUT;
            v->bad_dtype = dtype;
            continue;
        }
        if (!tt->shape)
            return ds_fail(DSTACK_ERR_SHAPE, "ONNX import: graph input '%s' has no shape",
                           vi->name);
        if (tt->shape->n_dim > DS_MAX_RANK)
            return ds_fail(DSTACK_ERR_UNSUPPORTED_OP, "ONNX import: graph input '%s' has rank "
                           "%zu (max %d)", vi->name, tt->shape->n_dim, DS_MAX_RANK);
        int64_t dims[DS_MAX_RANK];
        uint32_t rank = (uint32_t)tt->shape->n_dim;
        for (uint32_t d = 0; d < rank; d++) {
            const Onnx__TensorShapeProto__Dimension *dim = tt->shape->dim[d];
            bool known_dim = dim->value_case == ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE;
            int64_t val = known_dim ? dim->dim_value : -1;
            if (d == 0 && val <= 0) {
                val = 1; /* symbolic, -1 or 0: the batch */
            } else if (val > DS_ONNX_MAX_DIM) {
                return ds_fail(DSTACK_ERR_SHAPE, "ONNX import: graph input '%s' dimension %u is "
                               "%lld, over the %lld one dimension may have", vi->name, d,
                               (long long)val, (long long)DS_ONNX_MAX_DIM);
            } else if (known_dim && val <= 0) {
                return ds_fail(DSTACK_ERR_SHAPE, "ONNX import: graph input '%s' dimension %u is "
                               "%lld, not positive; only the first (batch) dimension may be "
                               "dynamic", vi->name, d, (long long)val);
            } else if (!known_dim) {
                return ds_fail(DSTACK_ERR_SHAPE, "ONNX import: graph input '%s' dimension %u is "
                               "symbolic %s; only the first (batch) dimension may be dynamic",
                               vi->name, d,
                               dim->value_case == ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM &&
                                       dim->dim_param ? dim->dim_param : "(unset)");
            }
            dims[d] = val;
        }
        if (bounded_numel(rank, dims) < 0)
            return ds_fail(DSTACK_ERR_SHAPE, "ONNX import: graph input '%s' has more than %lld "
                           "elements per request", vi->name, (long long)DS_ONNX_MAX_ELEMS);
        if (imp->g->n_inputs >= DSTACK_MAX_IO)
            return ds_fail(DSTACK_ERR_UNSUPPORTED_OP, "ONNX import: more than %d graph inputs",
                           DSTACK_MAX_IO);
        v->kind = OX_TENSOR;
        v->tensor = ds_graph_add_input(imp->g, vi->name, rank, dims);
        if (v->tensor == DS_TENSOR_NONE)
            return ds_fail_prefix(DSTACK_ERR_OUT_OF_MEMORY, "ONNX import: graph input '%s': ",
                                  vi->name);
    }
    return DSTACK_OK;
}

static dstack_status import_constant_node(ox_importer *imp, const ox_node *nc)
{
    const Onnx__NodeProto *np = nc->np;
    if (np->n_output != 1 || !np->output[0] || !np->output[0][0])
        return ox_fail(nc, DSTACK_ERR_PARSE, "must have exactly one output");
    if (np->n_input)
        return ox_fail(nc, DSTACK_ERR_PARSE, "takes no inputs");
    if (np->n_attribute != 1)
        return ox_fail(nc, DSTACK_ERR_PARSE, "must have exactly one value attribute, has %zu",
                       np->n_attribute);
    const Onnx__AttributeProto *a = np->attribute[0];
    ox_const c;
    memset(&c, 0, sizeof c);
    dstack_status st;
    int type = attr_type(a);
    const char *an = a->name ? a->name : "";
    if (strcmp(an, "value") == 0 && type == ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__TENSOR && a->t) {
        if ((st = const_from_tensor(np->output[0], a->t, &c)))
            return st;
    } else if (strcmp(an, "value_float") == 0 && type == ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT) {
        c.dtype = ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT;
        c.attr_floats = &a->f;
        c.attr_n = 1;
    } else if (strcmp(an, "value_floats") == 0 &&
               type == ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOATS) {
        c.dtype = ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT;
        c.rank = 1;
        c.dims[0] = (int64_t)a->n_floats;
        c.attr_floats = a->floats;
        c.attr_n = a->n_floats;
    } else if (strcmp(an, "value_int") == 0 && type == ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT) {
        c.dtype = ONNX__TENSOR_PROTO__DATA_TYPE__INT64;
        c.attr_ints = &a->i;
        c.attr_n = 1;
    } else if (strcmp(an, "value_ints") == 0 && type == ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS) {
        c.dtype = ONNX__TENSOR_PROTO__DATA_TYPE__INT64;
        c.rank = 1;
        c.dims[0] = (int64_t)a->n_ints;
        c.attr_ints = a->ints;
        c.attr_n = a->n_ints;
    } else {
        return ox_fail(nc, DSTACK_ERR_UNSUPPORTED_OP, "value attribute '%s' is not supported "
                       "(value, value_float(s) and value_int(s) are)", an);
    }
    ox_value *v;
    if ((st = value_add(imp, np->output[0], &v)))
        return st;
    v->kind = OX_CONST;
    v->c = c;
    return DSTACK_OK;
}

/* Extra outputs (Dropout's mask, MaxPool's indices, BN's training stats)
 * are allowed only when nobody reads them. */
static dstack_status check_extra_outputs(const ox_importer *imp, const ox_node *nc,
                                         const ox_op *op)
{
    const Onnx__NodeProto *np = nc->np;
    if (np->n_output == 0 || !np->output[0] || !np->output[0][0])
        return ox_fail(nc, DSTACK_ERR_PARSE, "has no output");
    if (np->n_output > op->max_outputs)
        return ox_fail(nc, DSTACK_ERR_PARSE, "has %zu outputs, at most %u expected",
                       np->n_output, op->max_outputs);
    for (size_t i = 1; i < np->n_output; i++)
        if (np->output[i] && np->output[i][0] && name_is_read(imp, np->output[i]))
            return ox_fail(nc, DSTACK_ERR_UNSUPPORTED_OP, "output %zu '%s' (%s) is used; only the "
                           "first output is supported", i, np->output[i],
                           op->kind == DS_OP_IDENTITY ? "mask"
                           : op->kind == DS_OP_MAXPOOL ? "indices" : "training statistics");
    return DSTACK_OK;
}

static dstack_status import_node(ox_importer *imp, uint32_t index)
{
    const Onnx__NodeProto *np = imp->gp->node[index];
    ox_node nc = {np, index, np->op_type ? np->op_type : ""};
    if (np->domain && np->domain[0] && strcmp(np->domain, "ai.onnx") != 0)
        return ox_fail(&nc, DSTACK_ERR_UNSUPPORTED_OP, "domain '%s' is not supported", np->domain);
    if (strcmp(nc.op, "Constant") == 0)
        return import_constant_node(imp, &nc);
    const ox_op *op = op_lookup(nc.op);
    if (!op)
        return ox_fail(&nc, DSTACK_ERR_UNSUPPORTED_OP, "operator '%s' is not supported", nc.op);
    if (imp->opset < op->min_opset)
        return ox_fail(&nc, DSTACK_ERR_UNSUPPORTED_OP, "opset %lld: the version of %s before "
                       "opset %lld is not supported", (long long)imp->opset, nc.op,
                       (long long)op->min_opset);
    dstack_status st = check_extra_outputs(imp, &nc, op);
    if (st)
        return st;
    ox_build b;
    memset(&b, 0, sizeof b);
    ds_op_attrs_init(&b.a);
    b.op = op->kind;
    if ((st = op->handler(imp, &nc, &b)))
        return st;
    for (uint32_t d = 0; d < b.out.rank; d++)
        if (b.out.dims[d] <= 0)
            return ox_fail(&nc, DSTACK_ERR_SHAPE, "output dimension %u would be %lld", d,
                           (long long)b.out.dims[d]);
    if (bounded_numel(b.out.rank, b.out.dims) < 0)
        return ox_fail(&nc, DSTACK_ERR_SHAPE, "output has more than %lld elements per request",
                       (long long)DS_ONNX_MAX_ELEMS);
    ox_value *v;
    if ((st = value_add(imp, np->output[0], &v)))
        return st;
    uint32_t t = ds_graph_add_node(imp->g, b.op, np->name ? np->name : "", b.ins, b.n_ins, &b.a,
                                   np->output[0]);
    if (t == DS_TENSOR_NONE)
        return ds_fail_prefix(DSTACK_ERR_OUT_OF_MEMORY, "ONNX node #%u (%s): ", index, nc.op);
    v->kind = OX_TENSOR;
    v->tensor = t;
    imp->g->tensors[t].rank = b.out.rank;
    memcpy(imp->g->tensors[t].dims, b.out.dims, sizeof b.out.dims);
    return DSTACK_OK;
}

/* Graph outputs. One that is a constant or a graph input gets an Identity
 * node, so every output is written by a node of its own. */
static dstack_status mark_outputs(ox_importer *imp)
{
    const Onnx__GraphProto *gp = imp->gp;
    if (gp->n_output == 0)
        return ds_fail(DSTACK_ERR_PARSE, "ONNX import: the graph has no outputs");
    if (gp->n_output > DSTACK_MAX_IO)
        return ds_fail(DSTACK_ERR_UNSUPPORTED_OP, "ONNX import: %zu graph outputs, at most %d "
                       "supported", gp->n_output, DSTACK_MAX_IO);
    for (size_t i = 0; i < gp->n_output; i++) {
        const Onnx__ValueInfoProto *vi = gp->output[i];
        const Onnx__TypeProto__Tensor *tt;
        int32_t dtype;
        dstack_status st;
        ox_value *v = value_find(imp, vi->name);
        if (!v)
            return ds_fail(DSTACK_ERR_PARSE, "ONNX import: graph output '%s' is not produced by "
                           "any node", vi->name ? vi->name : "");
        if (vi->type) {
            if ((st = value_tensor_type(vi, "graph output", &tt, &dtype)))
                return st;
            if (dtype != ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT &&
                dtype != ONNX__TENSOR_PROTO__DATA_TYPE__UNDEFINED)
                return ds_fail(DSTACK_ERR_UNSUPPORTED_TYPE, "ONNX import: graph output '%s' has "
                               "type %s; only float32 is supported", vi->name, dtype_name(dtype));
        }
        if (v->kind == OX_BAD_INPUT)
            return ds_fail(DSTACK_ERR_UNSUPPORTED_TYPE, "ONNX import: graph output '%s' is an "
                           "input of type %s", vi->name, dtype_name(v->bad_dtype));
        uint32_t t = v->tensor;
        bool needs_identity = v->kind == OX_CONST || imp->g->tensors[t].kind != DS_TENSOR_ACTIVATION ||
                              imp->g->tensors[t].is_output;
        if (needs_identity) {
            /* The constant/input keeps a derived name; the output gets the
             * model's name. */
            Onnx__NodeProto fake = ONNX__NODE_PROTO__INIT;
            char *in_name = (char *)vi->name;
            fake.n_input = 1;
            fake.input = &in_name;
            ox_node nc = {&fake, (uint32_t)gp->n_node, "Identity"};
            char name[256];
            if (v->kind == OX_CONST && v->tensor == DS_TENSOR_NONE) {
                /* the constant is only an output: it gets a derived name and
                 * the output keeps the model's */
                snprintf(name, sizeof name, "%s:const", vi->name);
                if ((st = materialize_const(imp, &nc, v, name, &t)))
                    return st;
                snprintf(name, sizeof name, "%s", vi->name);
            } else {
                snprintf(name, sizeof name, "%s%s", vi->name,
                         imp->g->tensors[t].kind == DS_TENSOR_ACTIVATION ? ":dup" : ":out");
            }
            ds_op_attrs a;
            ds_op_attrs_init(&a);
            uint32_t o = ds_graph_add_node(imp->g, DS_OP_IDENTITY, name, &t, 1, &a, name);
            if (o == DS_TENSOR_NONE)
                return ds_fail_prefix(DSTACK_ERR_OUT_OF_MEMORY, "ONNX import: output '%s': ",
                                      vi->name);
            imp->g->tensors[o].rank = imp->g->tensors[t].rank;
            memcpy(imp->g->tensors[o].dims, imp->g->tensors[t].dims, sizeof imp->g->tensors[o].dims);
            t = o;
        }
        if ((st = ds_graph_mark_output(imp->g, t)))
            return st;
    }
    return DSTACK_OK;
}

static dstack_status find_opset(const Onnx__ModelProto *m, int64_t *opset)
{
    bool found = false;
    for (size_t i = 0; i < m->n_opset_import; i++) {
        const Onnx__OperatorSetIdProto *o = m->opset_import[i];
        if (!o->domain || !o->domain[0] || strcmp(o->domain, "ai.onnx") == 0) {
            *opset = o->has_version ? o->version : 0;
            found = true;
        }
    }
    if (!found)
        return ds_fail(DSTACK_ERR_PARSE, "ONNX import: the model imports no default-domain opset");
    if (*opset < 1)
        return ds_fail(DSTACK_ERR_PARSE, "ONNX import: opset version %lld", (long long)*opset);
    if (*opset > DS_ONNX_MAX_OPSET)
        return ds_fail(DSTACK_ERR_UNSUPPORTED_OP, "ONNX import: opset %lld is newer than the "
                       "newest supported (%d)", (long long)*opset, DS_ONNX_MAX_OPSET);
    return DSTACK_OK;
}

static dstack_status import_graph(ox_importer *imp)
{
    dstack_status st;
    const Onnx__GraphProto *gp = imp->gp;
    if ((st = build_read_set(imp)) || (st = add_initializers(imp)) || (st = add_inputs(imp)))
        return st;
    bool any_input = imp->g->n_inputs > 0;
    for (uint32_t i = 0; i < imp->n_values; i++)
        any_input |= imp->values[i].kind == OX_BAD_INPUT;
    if (!any_input) /* the scheduler serves requests: one needs an input */
        return ds_fail(DSTACK_ERR_UNSUPPORTED_OP, "ONNX import: the graph has no inputs; a model "
                       "computed from constants alone cannot be served");
    for (uint32_t i = 0; i < gp->n_node; i++)
        if ((st = import_node(imp, i)))
            return st;
    if ((st = mark_outputs(imp)))
        return st;
    for (uint32_t i = 0; i < imp->n_values; i++)
        if (imp->values[i].kind == OX_BAD_INPUT)
            return ds_fail(DSTACK_ERR_UNSUPPORTED_TYPE, "ONNX import: graph input '%s' has type "
                           "%s; only float32 tensors are supported", imp->values[i].name,
                           dtype_name(imp->values[i].bad_dtype));
    if ((st = ds_graph_finalize(imp->g)))
        return ds_fail_prefix(st, "ONNX import: ");
    return DSTACK_OK;
}

dstack_status ds_onnx_import(const void *bytes, size_t n_bytes, ds_graph **out)
{
    return ds_onnx_import_budget(bytes, n_bytes, UINT64_MAX, out);
}

/* What unpacking may hold: weights unpack to about their own size (raw
 * data is copied once); packed int64 varints grow up to 8x; a graph of
 * 10^6 small nodes (26 bytes each on the wire, a NodeProto, two name
 * arrays and three strings unpacked) about 12x. 16x covers both; empty
 * messages (2 bytes on the wire, 100x unpacked) stop there. The slack
 * covers small files. */
static size_t parse_budget(size_t n_bytes, uint64_t memory_budget)
{
    uint64_t b = (uint64_t)n_bytes > (UINT64_MAX - DS_ONNX_PARSE_SLACK) / 16 ? UINT64_MAX
                 : 16 * (uint64_t)n_bytes + DS_ONNX_PARSE_SLACK;
    if (b > memory_budget)
        b = memory_budget;
    return b > SIZE_MAX ? SIZE_MAX : (size_t)b;
}

dstack_status ds_onnx_import_budget(const void *bytes, size_t n_bytes, uint64_t memory_budget,
                                    ds_graph **out)
{
    if (!out || (!bytes && n_bytes))
        return ds_fail(DSTACK_ERR_INVALID_ARGUMENT, "ds_onnx_import: NULL argument");
    if (n_bytes == 0)
        return ds_fail(DSTACK_ERR_PARSE, "ONNX import: the model is empty (0 bytes)");
    dstack_status st = ox_check_depth(&onnx__model_proto__descriptor, bytes, n_bytes, OX_MAX_DEPTH);
    if (st)
        return st;
    ox_budget budget;
    ox_budget_init(&budget, parse_budget(n_bytes, memory_budget));
    Onnx__ModelProto *m = onnx__model_proto__unpack(&budget.allocator, n_bytes, bytes);
    if (!m && budget.exceeded)
        return ds_fail(DSTACK_ERR_RESOURCE_LIMIT, "ONNX import: unpacking %zu bytes needs more "
                       "than %zu bytes of memory (the budget: 16 x the file size + %d MiB, at most "
                       "options.max_model_memory_bytes)", n_bytes, budget.limit,
                       (int)(DS_ONNX_PARSE_SLACK >> 20));
    if (!m)
        return ds_fail(DSTACK_ERR_PARSE, "ONNX import: %zu bytes are not a valid ONNX model "
                       "(truncated or corrupt protobuf, or out of memory)", n_bytes);
    ox_importer imp;
    memset(&imp, 0, sizeof imp);
    imp.key = ox_hash_seed();
    if (!m->graph) {
        st = ds_fail(DSTACK_ERR_PARSE, "ONNX import: the model has no graph");
        goto done;
    }
    if ((st = find_opset(m, &imp.opset)))
        goto done;
    imp.gp = m->graph;
    imp.g = ds_graph_new(m->graph->name && m->graph->name[0] ? m->graph->name : "onnx");
    if (!imp.g) {
        st = ds_fail(DSTACK_ERR_OUT_OF_MEMORY, "ONNX import: out of memory");
        goto done;
    }
    st = import_graph(&imp);
done:
    if (st) {
        ds_graph_free(imp.g);
    } else {
        *out = imp.g;
    }
    free(imp.values);
    free(imp.slots);
    free(imp.read_names);
    onnx__model_proto__free_unpacked(m, &budget.allocator);
    return st;
}
