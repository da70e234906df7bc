/* onnx_conformance.c - runs ONNX backend test cases through the public API.
 *
 *   onnx_conformance [--backend cpu|cuda] [--no-bind] CASE_DIR...
 *   onnx_conformance --list-supported CASE_DIR...
 *
 * A case directory holds model.onnx and test_data_set_N/{input,output}_K.pb
 * (TensorProto files), the layout of onnx/backend/test/data. Each case is
 * registered with dstack_register_model (max_batch 1), each data set is
 * submitted with dstack_submit and collected with dstack_poll, and every
 * output is compared with the expected one: |got - want| <= atol + rtol*|want|
 * with rtol 1e-3 and atol 1e-7 (float32).
 *
 * Several samples: when every graph input the runner feeds has a symbolic
 * (or -1/0) first dimension, and a data set's inputs all have the same
 * leading dimension N > 1, that data set goes as ONE request of N samples
 * (dstack_request.n_samples = N, output buffers N x the per-sample bytes),
 * the model being registered with max_batch = the largest such N of the
 * case (up to MAX_SAMPLES). This needs the model to be batchable
 * (dstack_model_info.batchable, per-sample dims[0] == 1): otherwise, or when
 * N is over MAX_SAMPLES, the case is UNSUPPORTED. The PASS line then says
 * "(samples: N,...)", the sample counts of its data sets. One line per case:
 *
 *   PASS <dir> max_abs_err=<e> max_rel_err=<r>
 *   FAIL <dir> <reason>
 *   UNSUPPORTED <dir> <status>: <dstack_last_error()>
 *
 * then "N passed, N failed, N unsupported". Exit status 1 if any case failed.
 * A model the library refuses with UNSUPPORTED_OP, UNSUPPORTED_TYPE,
 * EXTERNAL_DATA or UNSUPPORTED is UNSUPPORTED; any other refusal is a FAIL.
 *
 * Parameter binding (off with --no-bind): the node tests feed some operator
 * *parameters* as graph inputs - Reshape's shape, Clip's min/max, Dropout's
 * ratio and training_mode. libdstack needs those to be constants, as they are
 * in exported models. When a graph input is read only at such parameter
 * positions, the runner moves the data set's value for it into the model's
 * initializers and registers that model (from bytes) for that data set. The
 * numbers computed are the same; the line says "(bound: NAME...)".
 *
 * --list-supported prints each CASE_DIR whose model uses only operator types
 * libdstack implements (variants of them it refuses are reported by a normal
 * run as UNSUPPORTED, never skipped). tools/conformance_cases.sh uses it.
 *
 * Apart from the generated protobuf-c code used to read .pb files and to
 * rewrite a model for binding, this program uses only include/dstack.h.
 */
#include <dirent.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dstack.h"
#include "onnx.pb-c.h"

#define RTOL 1e-3
#define ATOL 1e-7
#define MAX_SETS 64
#define POLL_TIMEOUT_US (120 * 1000000LL)
#define MAX_SAMPLES 4096 /* the largest max_batch dstack_register_model takes */

static const char *const SUPPORTED_OPS[] = {
    "Conv", "BatchNormalization", "Relu", "Clip", "LeakyRelu", "Sigmoid", "Tanh",
    "HardSigmoid", "HardSwish", "PRelu", "MaxPool", "AveragePool", "GlobalAveragePool",
    "GlobalMaxPool", "Gemm", "MatMul", "Add", "Mul", "Sum", "Concat", "Flatten", "Reshape",
    "Transpose", "Softmax", "LRN", "Dropout", "Identity", "Constant", NULL};

typedef struct runner {
    dstack_ctx *ctx;
    bool bind;
    int passed, failed, unsupported;
} runner;

/* ---- files ---- */

static void *read_file(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    void *buf = NULL;
    long len = -1;
    if (fseek(f, 0, SEEK_END) == 0)
        len = ftell(f);
    if (len >= 0 && fseek(f, 0, SEEK_SET) == 0 && (buf = malloc((size_t)len + 1)) != NULL) {
        if (fread(buf, 1, (size_t)len, f) != (size_t)len) {
            free(buf);
            buf = NULL;
        }
    }
    fclose(f);
    *n = (size_t)len;
    return buf;
}

static Onnx__ModelProto *load_model(const char *dir)
{
    char path[4096];
    size_t n;
    snprintf(path, sizeof path, "%s/model.onnx", dir);
    void *bytes = read_file(path, &n);
    if (!bytes)
        return NULL;
    Onnx__ModelProto *m = onnx__model_proto__unpack(NULL, n, bytes);
    free(bytes);
    return m;
}

static Onnx__TensorProto *load_tensor(const char *path)
{
    size_t n;
    void *bytes = read_file(path, &n);
    if (!bytes)
        return NULL;
    Onnx__TensorProto *t = onnx__tensor_proto__unpack(NULL, n, bytes);
    free(bytes);
    return t;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The test_data_set_* subdirectories, sorted; returns the count. */
static int list_sets(const char *dir, char *sets[MAX_SETS])
{
    DIR *d = opendir(dir);
    if (!d)
        return 0;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL && n < MAX_SETS)
        if (strncmp(e->d_name, "test_data_set_", 14) == 0)
            sets[n++] = strdup(e->d_name);
    closedir(d);
    qsort(sets, (size_t)n, sizeof sets[0], cmp_str);
    return n;
}

/* ---- the model's structure ---- */

static bool op_supported(const char *op)
{
    for (int i = 0; SUPPORTED_OPS[i]; i++)
        if (strcmp(SUPPORTED_OPS[i], op) == 0)
            return true;
    return false;
}

static bool model_ops_supported(const Onnx__ModelProto *m)
{
    if (!m->graph)
        return false;
    for (size_t i = 0; i < m->graph->n_node; i++) {
        const Onnx__NodeProto *n = m->graph->node[i];
        if (n->domain && n->domain[0] && strcmp(n->domain, "ai.onnx") != 0)
            return false;
        if (!n->op_type || !op_supported(n->op_type))
            return false;
    }
    return true;
}

static bool is_initializer(const Onnx__GraphProto *g, const char *name)
{
    for (size_t i = 0; i < g->n_initializer; i++)
        if (g->initializer[i]->name && strcmp(g->initializer[i]->name, name) == 0)
            return true;
    return false;
}

static bool is_param_position(const char *op, size_t k)
{
    if (strcmp(op, "Reshape") == 0)
        return k == 1;
    if (strcmp(op, "Clip") == 0 || strcmp(op, "Dropout") == 0)
        return k == 1 || k == 2;
    return false;
}

/* Is graph input `name` read only at parameter positions (and at least
 * once)? Then the runner may bind it. */
static bool param_only_input(const Onnx__GraphProto *g, const char *name)
{
    bool used = false;
    for (size_t i = 0; i < g->n_node; i++) {
        const Onnx__NodeProto *n = g->node[i];
        for (size_t k = 0; k < n->n_input; k++) {
            if (!n->input[k] || strcmp(n->input[k], name) != 0)
                continue;
            if (!is_param_position(n->op_type, k))
                return false;
            used = true;
        }
    }
    for (size_t o = 0; o < g->n_output; o++)
        if (strcmp(g->output[o]->name, name) == 0)
            return false;
    return used;
}

/* Is the first dimension of graph input `vi` dynamic (symbolic, -1 or 0:
 * the batch, which the library takes as one sample)? */
static bool dynamic_batch_input(const Onnx__ValueInfoProto *vi)
{
    const Onnx__TypeProto *t = vi->type;
    if (!t || t->value_case != ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE || !t->tensor_type ||
        !t->tensor_type->shape || t->tensor_type->shape->n_dim < 1)
        return false;
    const Onnx__TensorShapeProto__Dimension *d = t->tensor_type->shape->dim[0];
    return d->value_case != ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE ||
           d->dim_value <= 0;
}

/* ---- tensors ---- */

static int64_t tensor_numel(const Onnx__TensorProto *t)
{
    int64_t n = 1;
    for (size_t i = 0; i < t->n_dims; i++)
        n *= t->dims[i];
    return n;
}

/* The float32 values of a TensorProto (raw_data or float_data), malloc'd;
 * NULL if it is not a float tensor with consistent data. */
static float *tensor_floats(const Onnx__TensorProto *t, int64_t *numel)
{
    if (!t->has_data_type || t->data_type != ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT)
        return NULL;
    int64_t n = tensor_numel(t);
    float *v = malloc((size_t)(n ? n : 1) * sizeof *v);
    if (!v)
        return NULL;
    if (t->has_raw_data && t->raw_data.len == (size_t)n * 4) {
        for (int64_t i = 0; i < n; i++) {
            const uint8_t *p = t->raw_data.data + 4 * i;
            uint32_t u = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
                         (uint32_t)p[3] << 24;
            memcpy(&v[i], &u, 4);
        }
    } else if (!t->has_raw_data && t->n_float_data == (size_t)n) {
        memcpy(v, t->float_data, (size_t)n * sizeof *v);
    } else {
        free(v);
        return NULL;
    }
    *numel = n;
    return v;
}

/* ---- one data set ---- */

typedef struct data_set {
    Onnx__TensorProto *in[DSTACK_MAX_IO];
    Onnx__TensorProto *out[DSTACK_MAX_IO];
    int n_in, n_out;
} data_set;

static void data_set_free(data_set *ds)
{
    for (int i = 0; i < ds->n_in; i++)
        onnx__tensor_proto__free_unpacked(ds->in[i], NULL);
    for (int i = 0; i < ds->n_out; i++)
        onnx__tensor_proto__free_unpacked(ds->out[i], NULL);
    memset(ds, 0, sizeof *ds);
}

static bool data_set_load(const char *dir, const char *set, data_set *ds)
{
    char path[4096];
    memset(ds, 0, sizeof *ds);
    for (int i = 0; i < DSTACK_MAX_IO; i++) {
        snprintf(path, sizeof path, "%s/%s/input_%d.pb", dir, set, i);
        Onnx__TensorProto *t = load_tensor(path);
        if (!t)
            break;
        ds->in[ds->n_in++] = t;
    }
    for (int i = 0; i < DSTACK_MAX_IO; i++) {
        snprintf(path, sizeof path, "%s/%s/output_%d.pb", dir, set, i);
        Onnx__TensorProto *t = load_tensor(path);
        if (!t)
            break;
        ds->out[ds->n_out++] = t;
    }
    return ds->n_out > 0;
}

/* How many samples a data set holds: N when every graph input the runner
 * feeds (non-initializer, not bound) has a dynamic first dimension and the
 * data set's tensors for them all have the leading dimension N; else 1 (the
 * data set is one request of the model's own shape, as before). */
static int64_t data_set_samples(const runner *r, const Onnx__GraphProto *g, const data_set *ds)
{
    int64_t n = 0;
    int k = 0;
    for (size_t i = 0; i < g->n_input; i++) {
        const Onnx__ValueInfoProto *vi = g->input[i];
        if (is_initializer(g, vi->name))
            continue;
        if (k >= ds->n_in)
            return 1;
        const Onnx__TensorProto *t = ds->in[k++];
        if (r->bind && param_only_input(g, vi->name))
            continue; /* bound into the model: not fed */
        if (!dynamic_batch_input(vi) || t->n_dims < 1 || t->dims[0] < 1)
            return 1;
        if (n && t->dims[0] != n)
            return 1;
        n = t->dims[0];
    }
    return n > 1 ? n : 1;
}

/* The verdict of a case, built up over its data sets. */
typedef struct verdict {
    enum { V_PASS, V_FAIL, V_UNSUPPORTED } kind;
    char why[1024];
    double max_abs, max_rel;
    char bound[256];
    char samples[256]; /* the sample counts of its data sets, when one is > 1 */
    bool multi;
} verdict;

static void set_verdict(verdict *v, int kind, const char *fmt, const char *a, const char *b)
{
    if (v->kind != V_PASS)
        return; /* keep the first problem */
    v->kind = kind;
    snprintf(v->why, sizeof v->why, fmt, a, b);
}

static bool unsupported_status(dstack_status st)
{
    return st == DSTACK_ERR_UNSUPPORTED_OP || st == DSTACK_ERR_UNSUPPORTED_TYPE ||
           st == DSTACK_ERR_EXTERNAL_DATA || st == DSTACK_ERR_UNSUPPORTED;
}

/* Register the case's model, with the data set's values bound into the
 * parameter-only inputs when `bind_ds` is given. *feed[i] tells, for each
 * graph input i (non-initializer, file order), whether it is still an input. */
static dstack_status register_case(runner *r, const char *dir, Onnx__ModelProto *m,
                                   const data_set *bind_ds, uint32_t max_batch,
                                   bool feed[DSTACK_MAX_IO], verdict *v, dstack_model **model)
{
    Onnx__GraphProto *g = m->graph;
    dstack_model_desc desc;
    dstack_model_desc_init(&desc);
    desc.max_batch = max_batch;
    char path[4096];
    snprintf(path, sizeof path, "%s/model.onnx", dir);

    /* graph inputs in data-set order, and which ones to bind */
    size_t n_all = g->n_input;
    Onnx__ValueInfoProto **saved_inputs = g->input;
    Onnx__TensorProto **saved_inits = g->initializer;
    size_t saved_n_inits = g->n_initializer;
    Onnx__ValueInfoProto *kept[64];
    Onnx__TensorProto *inits[1024];
    size_t n_kept = 0, n_inits = 0, k = 0;
    bool any_bound = false;
    char *saved_names[DSTACK_MAX_IO] = {NULL};
    for (size_t i = 0; i < n_all && i < 64; i++) {
        Onnx__ValueInfoProto *vi = g->input[i];
        if (is_initializer(g, vi->name)) {
            kept[n_kept++] = vi;
            continue;
        }
        bool bind = bind_ds && k < (size_t)bind_ds->n_in && k < DSTACK_MAX_IO &&
                    param_only_input(g, vi->name);
        if (k < DSTACK_MAX_IO)
            feed[k] = !bind;
        if (bind) {
            Onnx__TensorProto *t = bind_ds->in[k];
            saved_names[k] = t->name;
            t->name = vi->name;
            if (n_inits < 1024)
                inits[n_inits++] = t;
            any_bound = true;
            size_t len = strlen(v->bound);
            snprintf(v->bound + len, sizeof v->bound - len, "%s%s", len ? "," : "", vi->name);
        } else {
            kept[n_kept++] = vi;
        }
        k++;
    }
    uint8_t *bytes = NULL;
    if (any_bound) {
        for (size_t i = 0; i < saved_n_inits && n_inits < 1024; i++)
            inits[n_inits++] = saved_inits[i];
        g->input = kept;
        g->n_input = n_kept;
        g->initializer = inits;
        g->n_initializer = n_inits;
        size_t n = onnx__model_proto__get_packed_size(m);
        bytes = malloc(n ? n : 1);
        if (bytes)
            onnx__model_proto__pack(m, bytes);
        g->input = saved_inputs;
        g->n_input = n_all;
        g->initializer = saved_inits;
        g->n_initializer = saved_n_inits;
        for (size_t i = 0; i < DSTACK_MAX_IO; i++)
            if (saved_names[i])
                bind_ds->in[i]->name = saved_names[i];
        if (!bytes) {
            set_verdict(v, V_FAIL, "out of memory packing the bound model%s%s", "", "");
            return DSTACK_ERR_OUT_OF_MEMORY;
        }
        desc.source = DSTACK_SOURCE_ONNX_BYTES;
        desc.bytes = bytes;
        desc.n_bytes = n;
    } else {
        desc.source = DSTACK_SOURCE_ONNX_FILE;
        desc.path = path;
    }
    dstack_status st = dstack_register_model(r->ctx, &desc, model);
    free(bytes);
    if (st) {
        char status[128];
        snprintf(status, sizeof status, "%s", dstack_strerror(st));
        set_verdict(v, unsupported_status(st) ? V_UNSUPPORTED : V_FAIL, "register: %s: %s",
                    status, dstack_last_error());
    }
    return st;
}

static void compare(const float *got, const float *want, int64_t n, verdict *v, int out_idx)
{
    for (int64_t i = 0; i < n; i++) {
        double g = got[i], w = want[i];
        if (isnan(w) && isnan(g))
            continue;
        double err = fabs(g - w);
        double rel = w != 0 ? err / fabs(w) : (err ? INFINITY : 0);
        if (!(err <= ATOL + RTOL * fabs(w))) {
            char a[64], b[160];
            snprintf(a, sizeof a, "%d", out_idx);
            snprintf(b, sizeof b, "element %lld: got %.9g, want %.9g (abs err %.3g)",
                     (long long)i, g, w, err);
            set_verdict(v, V_FAIL, "output %s %s", a, b);
        }
        if (err > v->max_abs || isnan(err))
            v->max_abs = err;
        if (rel > v->max_rel && isfinite(rel))
            v->max_rel = rel;
    }
}

/* Submit one data set to `model` and check its outputs. */
static void run_data_set(runner *r, dstack_model *model, const data_set *ds,
                         const bool feed[DSTACK_MAX_IO], const char *set, uint32_t samples,
                         verdict *v)
{
    dstack_model_info info;
    dstack_model_info_init(&info);
    dstack_status st = dstack_model_info_get(r->ctx, model, &info);
    if (st) {
        set_verdict(v, V_FAIL, "model_info: %s %s", dstack_strerror(st), dstack_last_error());
        return;
    }
    dstack_buffer ins[DSTACK_MAX_IO], outs[DSTACK_MAX_IO];
    float *in_data[DSTACK_MAX_IO] = {NULL}, *out_data[DSTACK_MAX_IO] = {NULL};
    uint32_t n_in = 0;
    if (samples > 1) {
        bool per_sample = info.batchable != 0;
        for (uint32_t i = 0; i < info.n_inputs; i++)
            per_sample = per_sample && info.inputs[i].rank >= 1 && info.inputs[i].dims[0] == 1;
        if (!per_sample) {
            char a[64];
            snprintf(a, sizeof a, "%u", samples);
            set_verdict(v, V_UNSUPPORTED, "%s has %s samples (a dynamic batch dimension) but the "
                        "model is not batchable: each sample would run alone, not at batch N",
                        set, a);
            return;
        }
    }
    for (int k = 0; k < ds->n_in; k++) {
        if (!feed[k])
            continue;
        int64_t n;
        if (ds->in[k]->data_type != ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT) {
            set_verdict(v, V_UNSUPPORTED, "input %s of %s is not float32", ds->in[k]->name, set);
            goto done;
        }
        if (n_in >= info.n_inputs || !(in_data[n_in] = tensor_floats(ds->in[k], &n))) {
            set_verdict(v, V_FAIL, "input %s of %s does not match the model's inputs",
                        ds->in[k]->name ? ds->in[k]->name : "?", set);
            goto done;
        }
        ins[n_in].data = in_data[n_in];
        ins[n_in].bytes = (size_t)n * sizeof(float);
        n_in++;
    }
    if (n_in != info.n_inputs || (uint32_t)ds->n_out != info.n_outputs) {
        char a[64], b[64];
        snprintf(a, sizeof a, "%u/%u inputs", n_in, info.n_inputs);
        snprintf(b, sizeof b, "%d/%u outputs", ds->n_out, info.n_outputs);
        set_verdict(v, V_FAIL, "data set has %s and %s (data/model)", a, b);
        goto done;
    }
    for (uint32_t o = 0; o < info.n_outputs; o++) {
        size_t bytes = info.outputs[o].bytes * samples; /* samples <= MAX_SAMPLES */
        out_data[o] = calloc(1, bytes ? bytes : 1);
        if (!out_data[o]) {
            set_verdict(v, V_FAIL, "out of memory for the outputs of %s%s", set, "");
            goto done;
        }
        outs[o].data = out_data[o];
        outs[o].bytes = bytes;
    }
    dstack_request req;
    dstack_request_init(&req);
    req.inputs = ins;
    req.n_inputs = n_in;
    req.outputs = outs;
    req.n_outputs = info.n_outputs;
    req.n_samples = samples;
    dstack_ticket ticket;
    st = dstack_submit(r->ctx, model, &req, &ticket);
    if (st) {
        set_verdict(v, V_FAIL, "submit: %s: %s", dstack_strerror(st), dstack_last_error());
        goto done;
    }
    dstack_completion c;
    size_t got = 0;
    st = dstack_poll(r->ctx, &c, 1, POLL_TIMEOUT_US, &got);
    if (st || got != 1 || c.ticket != ticket) {
        set_verdict(v, V_FAIL, "poll: %s %s", st ? dstack_strerror(st) : "no completion in time",
                    dstack_last_error());
        goto done;
    }
    if (c.status) {
        set_verdict(v, V_FAIL, "completion: %s %s", dstack_strerror(c.status), "");
        goto done;
    }
    for (int o = 0; o < ds->n_out; o++) {
        int64_t n;
        float *want = tensor_floats(ds->out[o], &n);
        if (!want) {
            set_verdict(v, V_UNSUPPORTED, "expected output %s of %s is not float32",
                        ds->out[o]->name ? ds->out[o]->name : "?", set);
            goto done;
        }
        if ((size_t)n * sizeof(float) != info.outputs[o].bytes * samples) {
            char a[128];
            snprintf(a, sizeof a, "%d has %zu floats (%u x %zu), expected %lld", o,
                     info.outputs[o].bytes / sizeof(float) * samples, samples,
                     info.outputs[o].bytes / sizeof(float), (long long)n);
            set_verdict(v, V_FAIL, "output %s%s", a, "");
        } else {
            compare(out_data[o], want, n, v, o);
        }
        free(want);
    }
done:
    for (int i = 0; i < DSTACK_MAX_IO; i++) {
        free(in_data[i]);
        free(out_data[i]);
    }
}

static void run_case(runner *r, const char *dir)
{
    verdict v;
    memset(&v, 0, sizeof v);
    Onnx__ModelProto *m = load_model(dir);
    char *sets[MAX_SETS];
    int n_sets = list_sets(dir, sets);
    if (!m || !m->graph) {
        set_verdict(&v, V_FAIL, "cannot read %s/model.onnx%s", dir, "");
    } else if (n_sets == 0) {
        set_verdict(&v, V_FAIL, "no test_data_set_* in %s%s", dir, "");
    }
    /* a model needs binding when some input is parameter-only */
    bool needs_bind = false;
    if (m && m->graph && r->bind)
        for (size_t i = 0; i < m->graph->n_input; i++)
            if (!is_initializer(m->graph, m->graph->input[i]->name) &&
                param_only_input(m->graph, m->graph->input[i]->name))
                needs_bind = true;
    /* the sample count of each data set; max_batch is the largest */
    int64_t samples[MAX_SETS];
    int64_t max_samples = 1;
    for (int s = 0; s < n_sets && v.kind == V_PASS; s++) {
        data_set ds;
        samples[s] = 1;
        if (data_set_load(dir, sets[s], &ds))
            samples[s] = data_set_samples(r, m->graph, &ds);
        data_set_free(&ds);
        if (samples[s] > max_samples)
            max_samples = samples[s];
        if (samples[s] > 1)
            v.multi = true;
    }
    if (max_samples > MAX_SAMPLES) {
        char a[64];
        snprintf(a, sizeof a, "%lld", (long long)max_samples);
        set_verdict(&v, V_UNSUPPORTED, "a data set has %s samples, over the largest max_batch (%s)",
                    a, "4096");
    }
    dstack_model *model = NULL;
    bool feed[DSTACK_MAX_IO];
    for (int i = 0; i < DSTACK_MAX_IO; i++)
        feed[i] = true;
    for (int s = 0; s < n_sets && v.kind == V_PASS; s++) {
        data_set ds;
        if (!data_set_load(dir, sets[s], &ds)) {
            set_verdict(&v, V_FAIL, "cannot read %s/%s", dir, sets[s]);
            data_set_free(&ds);
            break;
        }
        if (!model || needs_bind) {
            if (model)
                dstack_unregister_model(r->ctx, model);
            model = NULL;
            if (register_case(r, dir, m, needs_bind ? &ds : NULL, (uint32_t)max_samples, feed,
                              &v, &model)) {
                data_set_free(&ds);
                break;
            }
        }
        run_data_set(r, model, &ds, feed, sets[s], (uint32_t)samples[s], &v);
        if (v.multi) {
            size_t len = strlen(v.samples);
            snprintf(v.samples + len, sizeof v.samples - len, "%s%lld", len ? "," : "",
                     (long long)samples[s]);
        }
        data_set_free(&ds);
    }
    if (model)
        dstack_unregister_model(r->ctx, model);
    for (int s = 0; s < n_sets; s++)
        free(sets[s]);
    if (m)
        onnx__model_proto__free_unpacked(m, NULL);
    switch (v.kind) {
    case V_PASS:
        r->passed++;
        printf("PASS %s max_abs_err=%.3g max_rel_err=%.3g%s%s%s%s%s%s\n", dir, v.max_abs,
               v.max_rel, v.bound[0] ? " (bound: " : "", v.bound, v.bound[0] ? ")" : "",
               v.samples[0] ? " (samples: " : "", v.samples, v.samples[0] ? ")" : "");
        break;
    case V_FAIL:
        r->failed++;
        printf("FAIL %s %s\n", dir, v.why);
        break;
    default:
        r->unsupported++;
        printf("UNSUPPORTED %s %s\n", dir, v.why);
        break;
    }
    fflush(stdout);
}

static int usage(void)
{
    fprintf(stderr, "usage: onnx_conformance [--backend cpu|cuda] [--no-bind] CASE_DIR...\n"
                    "       onnx_conformance --list-supported CASE_DIR...\n");
    return 2;
}

int main(int argc, char **argv)
{
    runner r;
    memset(&r, 0, sizeof r);
    r.bind = true;
    dstack_backend backend = DSTACK_BACKEND_CPU;
    bool list = false;
    int first = 1;
    for (; first < argc && argv[first][0] == '-'; first++) {
        const char *a = argv[first];
        if (strcmp(a, "--backend") == 0 && first + 1 < argc) {
            const char *b = argv[++first];
            if (strcmp(b, "cpu") == 0)
                backend = DSTACK_BACKEND_CPU;
            else if (strcmp(b, "cuda") == 0)
                backend = DSTACK_BACKEND_CUDA;
            else
                return usage();
        } else if (strcmp(a, "--list-supported") == 0) {
            list = true;
        } else if (strcmp(a, "--no-bind") == 0) {
            r.bind = false;
        } else {
            return usage();
        }
    }
    if (list) {
        for (int i = first; i < argc; i++) {
            Onnx__ModelProto *m = load_model(argv[i]);
            if (m && model_ops_supported(m))
                printf("%s\n", argv[i]);
            if (m)
                onnx__model_proto__free_unpacked(m, NULL);
        }
        return 0;
    }
    if (first >= argc)
        return usage();
    dstack_options o;
    dstack_options_init(&o);
    o.backend = backend;
    dstack_status st = dstack_create(&o, &r.ctx);
    if (st) {
        fprintf(stderr, "onnx_conformance: dstack_create(%s): %s: %s\n",
                backend == DSTACK_BACKEND_CUDA ? "cuda" : "cpu", dstack_strerror(st),
                dstack_last_error());
        return 2;
    }
    for (int i = first; i < argc; i++)
        run_case(&r, argv[i]);
    dstack_destroy(r.ctx);
    printf("%d passed, %d failed, %d unsupported\n", r.passed, r.failed, r.unsupported);
    return r.failed ? 1 : 0;
}
