/* fold.c - BatchNormalization folding and activation fusion.
 *
 * Why here and not in each backend: the cuda and cpu executors then see the
 * same (smaller) graph, so the cpu backend stays an exact oracle for the
 * graph the GPU really runs.
 *
 * A folded-away intermediate tensor never is a graph output (we skip the
 * fold then), so every graph output keeps its name and id meaning: the
 * surviving node simply takes over the output tensor of the node it absorbs.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "graph/graph.h"
#include "util/error.h"
#include "util/fault.h"

typedef struct fold_state {
    ds_graph *g;
    uint32_t *readers; /* per tensor: live nodes reading it (capacity cap) */
    uint32_t cap;
    bool *dead;        /* per node */
} fold_state;

static bool is_const(const ds_graph *g, uint32_t id)
{
    return id != DS_TENSOR_NONE && g->tensors[id].kind == DS_TENSOR_CONST;
}

/* The producer of activation `x` when it is an op of kind a or b, alive,
 * without a fused activation, and `x` has exactly one reader and is no graph
 * output; else UINT32_MAX. */
static uint32_t sole_producer(const fold_state *s, uint32_t x, ds_op_kind a, ds_op_kind b)
{
    const ds_graph *g = s->g;
    if (x == DS_TENSOR_NONE || g->tensors[x].kind != DS_TENSOR_ACTIVATION)
        return UINT32_MAX;
    const ds_tensor *t = &g->tensors[x];
    uint32_t p = t->producer;
    if (p == UINT32_MAX || s->dead[p] || t->is_output || s->readers[x] != 1)
        return UINT32_MAX;
    const ds_node *pn = &g->nodes[p];
    if ((pn->op != a && pn->op != b) || pn->attrs.activation != DS_ACT_NONE)
        return UINT32_MAX;
    return p;
}

/* Node `p` absorbs node `i`: it now writes i's output; p's old output dies. */
static void absorb(fold_state *s, uint32_t p, uint32_t i)
{
    ds_graph *g = s->g;
    ds_node *pn = &g->nodes[p], *n = &g->nodes[i];
    uint32_t old = pn->output;
    for (uint32_t k = 0; k < n->n_inputs; k++)
        if (n->inputs[k] != DS_TENSOR_NONE)
            s->readers[n->inputs[k]]--;
    g->tensors[old].producer = UINT32_MAX; /* dropped at compaction */
    pn->output = n->output;
    g->tensors[n->output].producer = p;
    s->dead[i] = true;
}

static dstack_status fold_batchnorm(fold_state *s, uint32_t i)
{
    ds_graph *g = s->g;
    ds_node *bn = &g->nodes[i];
    uint32_t p = sole_producer(s, bn->inputs[0], DS_OP_CONV, DS_OP_CONV);
    if (p == UINT32_MAX)
        return DSTACK_OK;
    for (uint32_t k = 1; k < 5; k++)
        if (!is_const(g, bn->inputs[k]))
            return DSTACK_OK;
    ds_node *conv = &g->nodes[p];
    uint32_t wid = conv->inputs[1];
    uint32_t bid = conv->n_inputs > 2 ? conv->inputs[2] : DS_TENSOR_NONE;
    if (!is_const(g, wid) || (bid != DS_TENSOR_NONE && !is_const(g, bid)))
        return DSTACK_OK;

    const ds_tensor *w = &g->tensors[wid];
    int64_t M = w->dims[0], per = ds_tensor_numel(w) / M;
    float *nw = ds_malloc((size_t)(M * per) * sizeof *nw);
    float *nb = ds_malloc((size_t)M * sizeof *nb);
    if (!nw || !nb) {
        free(nw);
        free(nb);
        return ds_fail(DSTACK_ERR_OUT_OF_MEMORY, "fold: no memory for folded weights of '%s'",
                       conv->name);
    }
    const float *scale = g->tensors[bn->inputs[1]].data, *bias = g->tensors[bn->inputs[2]].data;
    const float *mean = g->tensors[bn->inputs[3]].data, *var = g->tensors[bn->inputs[4]].data;
    const float *ob = bid != DS_TENSOR_NONE ? g->tensors[bid].data : NULL;
    double eps = bn->attrs.epsilon;
    for (int64_t m = 0; m < M; m++) {
        double f = (double)scale[m] / sqrt((double)var[m] + eps);
        for (int64_t k = 0; k < per; k++)
            nw[m * per + k] = (float)((double)w->data[m * per + k] * f);
        nb[m] = (float)(((ob ? (double)ob[m] : 0.0) - mean[m]) * f + bias[m]);
    }
    int64_t wdims[DS_MAX_RANK];
    uint32_t wrank = w->rank;
    memcpy(wdims, w->dims, sizeof wdims);
    char *wname = ds_malloc(strlen(w->name) + 16), *bname = ds_malloc(strlen(w->name) + 16);
    if (!wname || !bname) {
        free(wname);
        free(bname);
        free(nw);
        free(nb);
        return ds_fail(DSTACK_ERR_OUT_OF_MEMORY, "fold: no memory for names");
    }
    strcpy(wname, w->name);
    strcat(wname, "_bnfold");
    strcpy(bname, w->name);
    strcat(bname, "_bnfold_b");
    /* Adding tensors may move g->tensors: no tensor pointer survives this. */
    uint32_t nwid = ds_graph_add_const(g, wname, wrank, wdims, nw);
    uint32_t nbid = nwid == DS_TENSOR_NONE ? DS_TENSOR_NONE
                                           : ds_graph_add_const(g, bname, 1, &M, nb);
    free(wname);
    free(bname);
    if (nwid == DS_TENSOR_NONE) {
        free(nb);
        return DSTACK_ERR_OUT_OF_MEMORY;
    }
    if (nbid == DS_TENSOR_NONE)
        return DSTACK_ERR_OUT_OF_MEMORY;
    conv = &g->nodes[p];
    s->readers[wid]--;
    if (bid != DS_TENSOR_NONE)
        s->readers[bid]--;
    conv->inputs[1] = nwid;
    conv->inputs[2] = nbid;
    conv->n_inputs = 3;
    s->readers[nwid]++;
    s->readers[nbid]++;
    absorb(s, p, i);
    return DSTACK_OK;
}

static void fuse_activation(fold_state *s, uint32_t i)
{
    ds_graph *g = s->g;
    ds_node *n = &g->nodes[i];
    float lo = n->attrs.clip_min, hi = n->attrs.clip_max;
    if (n->op == DS_OP_CLIP) {
        for (uint32_t k = 1; k < n->n_inputs; k++) {
            uint32_t id = n->inputs[k];
            if (id == DS_TENSOR_NONE)
                continue;
            if (!is_const(g, id))
                return;
            if (k == 1)
                lo = g->tensors[id].data[0];
            else
                hi = g->tensors[id].data[0];
        }
    } else if (n->n_inputs != 1) {
        return;
    }
    uint32_t p = sole_producer(s, n->inputs[0], DS_OP_CONV, DS_OP_GEMM);
    if (p == UINT32_MAX)
        return;
    ds_node *pn = &g->nodes[p];
    if (n->op == DS_OP_RELU) {
        pn->attrs.activation = DS_ACT_RELU;
    } else {
        pn->attrs.activation = DS_ACT_CLIP;
        pn->attrs.clip_min = lo;
        pn->attrs.clip_max = hi;
    }
    absorb(s, p, i);
}

/* Kill nodes whose output nobody reads (reverse order catches chains). */
static void drop_dead_nodes(fold_state *s)
{
    ds_graph *g = s->g;
    for (uint32_t i = g->n_nodes; i-- > 0;) {
        ds_node *n = &g->nodes[i];
        if (s->dead[i])
            continue;
        if (s->readers[n->output] > 0 || g->tensors[n->output].is_output)
            continue;
        s->dead[i] = true;
        g->tensors[n->output].producer = UINT32_MAX;
        for (uint32_t k = 0; k < n->n_inputs; k++)
            if (n->inputs[k] != DS_TENSOR_NONE)
                s->readers[n->inputs[k]]--;
    }
}

static bool tensor_kept(const fold_state *s, uint32_t id)
{
    const ds_tensor *t = &s->g->tensors[id];
    if (t->is_output || t->kind == DS_TENSOR_INPUT)
        return true;
    if (t->kind == DS_TENSOR_CONST)
        return s->readers[id] > 0;
    return t->producer != UINT32_MAX && !s->dead[t->producer];
}

static dstack_status compact(fold_state *s)
{
    ds_graph *g = s->g;
    uint32_t *tmap = ds_malloc((size_t)g->n_tensors * sizeof *tmap);
    uint32_t *nmap = ds_malloc((size_t)(g->n_nodes ? g->n_nodes : 1) * sizeof *nmap);
    if (!tmap || !nmap) {
        free(tmap);
        free(nmap);
        return ds_fail(DSTACK_ERR_OUT_OF_MEMORY, "fold: no memory to compact graph '%s'", g->name);
    }
    uint32_t nt = 0, nn = 0;
    for (uint32_t i = 0; i < g->n_nodes; i++) {
        if (s->dead[i]) {
            free(g->nodes[i].name);
            nmap[i] = UINT32_MAX;
            continue;
        }
        nmap[i] = nn;
        g->nodes[nn++] = g->nodes[i];
    }
    for (uint32_t i = 0; i < g->n_tensors; i++) {
        if (!tensor_kept(s, i)) {
            free(g->tensors[i].name);
            free(g->tensors[i].data);
            tmap[i] = DS_TENSOR_NONE;
            continue;
        }
        tmap[i] = nt;
        ds_tensor *t = &g->tensors[nt++];
        *t = g->tensors[i];
        if (t->producer != UINT32_MAX)
            t->producer = nmap[t->producer];
    }
    for (uint32_t i = 0; i < nn; i++) {
        ds_node *n = &g->nodes[i];
        n->output = tmap[n->output];
        for (uint32_t k = 0; k < n->n_inputs; k++)
            if (n->inputs[k] != DS_TENSOR_NONE)
                n->inputs[k] = tmap[n->inputs[k]];
    }
    for (uint32_t i = 0; i < g->n_inputs; i++)
        g->inputs[i] = tmap[g->inputs[i]];
    for (uint32_t i = 0; i < g->n_outputs; i++)
        g->outputs[i] = tmap[g->outputs[i]];
    g->n_tensors = nt;
    g->n_nodes = nn;
    free(tmap);
    free(nmap);
    return DSTACK_OK;
}

dstack_status ds_graph_fold(ds_graph *g)
{
    if (!g || !g->finalized)
        return ds_fail(DSTACK_ERR_INVALID_ARGUMENT, "ds_graph_fold: graph is %s",
                       g ? "not finalized" : "NULL");
    fold_state s = {.g = g};
    /* Each BN fold adds two constants: reserve room for them. */
    s.cap = g->n_tensors + 2 * g->n_nodes + 1;
    s.readers = ds_calloc(s.cap, sizeof *s.readers);
    s.dead = ds_calloc(g->n_nodes + 1, sizeof *s.dead);
    if (!s.readers || !s.dead) {
        free(s.readers);
        free(s.dead);
        return ds_fail(DSTACK_ERR_OUT_OF_MEMORY, "fold: no memory for graph '%s'", g->name);
    }
    for (uint32_t i = 0; i < g->n_nodes; i++)
        for (uint32_t k = 0; k < g->nodes[i].n_inputs; k++)
            if (g->nodes[i].inputs[k] != DS_TENSOR_NONE)
                s.readers[g->nodes[i].inputs[k]]++;
    /* Dead branches first, so that their reads do not block a fold. */
    drop_dead_nodes(&s);
    dstack_status st = DSTACK_OK;
    for (uint32_t i = 0; i < g->n_nodes && !st; i++)
        if (!s.dead[i] && g->nodes[i].op == DS_OP_BATCHNORM)
            st = fold_batchnorm(&s, i);
    for (uint32_t i = 0; i < g->n_nodes && !st; i++)
        if (!s.dead[i] && (g->nodes[i].op == DS_OP_RELU || g->nodes[i].op == DS_OP_CLIP))
            fuse_activation(&s, i);
    if (!st) {
        drop_dead_nodes(&s);
        st = compact(&s);
    }
    free(s.readers);
    free(s.dead);
    if (st) {
        g->finalized = false;
        return st;
    }
    return ds_graph_finalize(g);
}
