/* cpu_test_util.h - helpers shared by test_cpu_ops.c and test_cpu_exec.c:
 * build a one-op graph, run a graph on the cpu executor, compare floats. */
#ifndef DS_TESTS_CPU_TEST_UTIL_H
#define DS_TESTS_CPU_TEST_UTIL_H

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "exec/exec.h"
#include "graph/graph.h"
#include "util/error.h"

/* An operand: a graph input (fed at run time) or a constant. */
typedef struct test_operand {
    uint32_t rank;
    int64_t dims[DS_MAX_RANK];
    const float *data;
    bool is_const;
} test_operand;

static inline int64_t test_numel(uint32_t rank, const int64_t *dims)
{
    int64_t n = 1;
    for (uint32_t i = 0; i < rank; i++)
        n *= dims[i];
    return n;
}

static inline float *test_copy(const float *src, int64_t n)
{
    float *d = malloc((size_t)n * sizeof *d);
    assert_non_null(d);
    memcpy(d, src, (size_t)n * sizeof *d);
    return d;
}

static inline void test_done_cb(void *arg, dstack_status st)
{
    int *calls = arg;
    calls[0]++;
    calls[1] = (int)st;
}

/* Run finalized graph `g` on a cpu executor with `threads` workers for
 * `batch` requests; inputs[r * n_inputs + j], outputs likewise. */
static inline void test_run_graph(const ds_graph *g, uint32_t threads, uint32_t max_batch,
                                  uint32_t batch, const float *const *inputs, float *const *outputs)
{
    ds_executor_config cfg = {0};
    cfg.cpu_threads = threads;
    ds_executor *ex = NULL;
    assert_int_equal(ds_exec_cpu_create(&cfg, &ex), DSTACK_OK);
    ds_plan_options o = {.max_batch = max_batch, .precision = DSTACK_PRECISION_FP32};
    ds_exec_plan *p = NULL;
    dstack_status st = ex->ops->plan_create(ex, g, &o, &p);
    if (st)
        fprintf(stderr, "plan_create: %s\n", ds_error_message());
    assert_int_equal(st, DSTACK_OK);
    ds_partition part;
    assert_int_equal(ex->ops->partition_get(ex, 0, 1, &part), DSTACK_OK);
    ds_exec_batch b = {.batch = batch, .inputs = (const void *const *)inputs,
                       .outputs = (void *const *)outputs};
    int calls[2] = {0, -1};
    assert_int_equal(ex->ops->run(ex, p, &b, &part, test_done_cb, calls), DSTACK_OK);
    assert_int_equal(calls[0], 1);
    assert_int_equal(calls[1], DSTACK_OK);
    ex->ops->plan_destroy(ex, p);
    ex->ops->destroy(ex);
}

/* Build a graph with one node `op` over `ops` and run it at batch 1;
 * checks the output shape against want_dims and returns the output
 * (malloc'd). */
static inline float *test_run_op(ds_op_kind op, const ds_op_attrs *attrs, const test_operand *ops,
                                 uint32_t n_ops, uint32_t want_rank, const int64_t *want_dims)
{
    ds_graph *g = ds_graph_new("op");
    assert_non_null(g);
    uint32_t ids[DS_NODE_MAX_INPUTS];
    const float *feeds[DS_NODE_MAX_INPUTS];
    uint32_t n_feeds = 0;
    for (uint32_t i = 0; i < n_ops; i++) {
        char name[16];
        snprintf(name, sizeof name, "in%u", i);
        if (!ops[i].data) {
            ids[i] = DS_TENSOR_NONE;
            continue;
        }
        if (ops[i].is_const) {
            ids[i] = ds_graph_add_const(g, name, ops[i].rank, ops[i].dims,
                                        test_copy(ops[i].data, test_numel(ops[i].rank, ops[i].dims)));
        } else {
            ids[i] = ds_graph_add_input(g, name, ops[i].rank, ops[i].dims);
            feeds[n_feeds++] = ops[i].data;
        }
        assert_int_not_equal(ids[i], DS_TENSOR_NONE);
    }
    uint32_t y = ds_graph_add_node(g, op, "node", ids, n_ops, attrs, "y");
    assert_int_not_equal(y, DS_TENSOR_NONE);
    assert_int_equal(ds_graph_mark_output(g, y), DSTACK_OK);
    dstack_status st = ds_graph_finalize(g);
    if (st)
        fprintf(stderr, "finalize: %s\n", ds_error_message());
    assert_int_equal(st, DSTACK_OK);
    assert_int_equal(g->tensors[y].rank, want_rank);
    for (uint32_t i = 0; i < want_rank; i++)
        assert_int_equal(g->tensors[y].dims[i], want_dims[i]);
    int64_t n = ds_tensor_numel(&g->tensors[y]);
    float *out = calloc((size_t)n, sizeof *out);
    assert_non_null(out);
    float *outs[1] = {out};
    test_run_graph(g, 2, 1, 1, feeds, outs);
    ds_graph_free(g);
    return out;
}

static inline void test_assert_close(const float *got, const float *want, int64_t n, float tol)
{
    for (int64_t i = 0; i < n; i++) {
        if (!(fabsf(got[i] - want[i]) <= tol * (1.0f + fabsf(want[i])))) {
            fprintf(stderr, "element %lld: got %.8g, want %.8g\n", (long long)i, got[i], want[i]);
            fail();
        }
    }
}

#endif /* DS_TESTS_CPU_TEST_UTIL_H */
