/* test_sim.c - the simulated GPU: engine times against hand-computed
 * values, determinism, graph -> kernels, the executor on both clocks, and
 * the calibration record. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sim/engine.h"
#include "sim/kernels.h"
#include "sim/sim.h"

/* A toy device: 2 units of 8 SMs, 1 GFLOP/s per SM (a block of 1000 FLOPs
 * at 1 block/SM takes 1000 ns), no gaps or overheads, memory unlimited
 * unless a test says otherwise. */
static ds_sim_device toy(void)
{
    ds_sim_device d;
    memset(&d, 0, sizeof d);
    strcpy(d.name, "toy");
    d.sm_count = 16;
    d.unit_sms = 8;
    d.n_units = 2;
    d.partitioning = DSTACK_PARTITION_GREEN_CTX;
    d.sm_flops = 1e9;
    d.sm_flops_simple = 1e9;
    d.mem_bw = 1e18;
    d.sm_mem_bw = 1e18;
    return d;
}

static ds_sim_kernel kern(uint64_t blocks, double bytes)
{
    ds_sim_kernel k = {.blocks = blocks, .blocks_per_sm = 1, .flops_per_block = 1000.0,
                       .bytes = bytes, .kind = 0};
    return k;
}

typedef struct ends {
    int n;
    int who[16];
    uint64_t t[16];
} ends;

static void on_end(void *arg, void *user, uint64_t end_ns)
{
    ends *e = arg;
    e->who[e->n] = (int)(intptr_t)user;
    e->t[e->n++] = end_ns;
}

static uint64_t end_of(const ends *e, int who)
{
    for (int i = 0; i < e->n; i++)
        if (e->who[i] == who)
            return e->t[i];
    return 0;
}

/* One batch of one kernel on `units` units from unit 0: its end time. */
static uint64_t alone(const ds_sim_device *d, ds_sim_kernel k, uint32_t units)
{
    ds_sim_engine *e = ds_sim_engine_create(d, false);
    ends en = {0};
    assert_int_equal(ds_sim_engine_start(e, 0, &k, 1, 0, units, 0, (void *)1), DSTACK_OK);
    ds_sim_engine_drain(e, on_end, &en);
    ds_sim_engine_destroy(e);
    assert_int_equal(en.n, 1);
    return en.t[0];
}

static void test_one_kernel_alone_takes_one_wave(void **state)
{
    (void)state;
    ds_sim_device d = toy();
    assert_int_equal(alone(&d, kern(8, 0), 1), 1000);
    ds_sim_kernel k = kern(8, 0);
    assert_int_equal(ds_sim_kernels_time_ns(&k, 1, 8, &d), 1000);
}

static void test_waves_quantize(void **state)
{
    (void)state;
    ds_sim_device d = toy();
    assert_int_equal(alone(&d, kern(9, 0), 1), 2000);  /* 8 + 1: two waves */
    assert_int_equal(alone(&d, kern(16, 0), 1), 2000);
    assert_int_equal(alone(&d, kern(17, 0), 1), 3000);
    assert_int_equal(alone(&d, kern(17, 0), 2), 2000); /* 16 SMs */
    ds_sim_kernel k = kern(17, 0);
    assert_int_equal(ds_sim_kernels_time_ns(&k, 1, 16, &d), 2000);
    /* launch gap and batch overhead add serially */
    d.launch_gap_ns = 100;
    d.batch_overhead_ns = 50;
    ds_sim_kernel two[2] = {kern(8, 0), kern(9, 0)};
    ds_sim_engine *e = ds_sim_engine_create(&d, false);
    ends en = {0};
    ds_sim_engine_start(e, 0, two, 2, 0, 1, 0, NULL);
    ds_sim_engine_drain(e, on_end, &en);
    assert_int_equal(en.t[0], 50 + 100 + 1000 + 100 + 2000);
    assert_int_equal(ds_sim_kernels_time_ns(two, 2, 8, &d), en.t[0]);
    ds_sim_engine_destroy(e);
}

/* The SMs no unit holds are reached only by a batch on every unit: that
 * range is the whole device (util/units.h). Toy: 2 units of 8 SMs and 4
 * left over, 20 SMs in all. */
static void test_every_unit_is_the_whole_device(void **state)
{
    (void)state;
    ds_sim_device d = toy();
    d.sm_count = 20;
    ds_sim_device none = d;
    none.n_units = 1;
    none.unit_sms = 20;
    none.partitioning = DSTACK_PARTITION_NONE;
    assert_int_equal(alone(&d, kern(20, 0), 2), 1000);    /* one wave on 20 SMs */
    assert_int_equal(alone(&d, kern(21, 0), 2), 2000);
    assert_int_equal(alone(&none, kern(20, 0), 1), 1000); /* as the unpartitioned device */
    assert_int_equal(alone(&d, kern(9, 0), 1), 2000);     /* one unit: 8 SMs, not 12 */
    /* units 1..1 of 2 are not every unit: 8 SMs */
    ds_sim_kernel k = kern(20, 0);
    ds_sim_engine *e = ds_sim_engine_create(&d, false);
    ends en = {0};
    assert_int_equal(ds_sim_engine_start(e, 0, &k, 1, 1, 1, 0, (void *)1), DSTACK_OK);
    ds_sim_engine_drain(e, on_end, &en);
    assert_int_equal(en.t[0], 3000);
    /* a batch on every unit waits for the SMs others hold, the left-over
     * ones included: 20 blocks after a 1-unit batch of 8 ends at 2000 */
    ds_sim_kernel a = kern(16, 0), w = kern(20, 0);
    en.n = 0;
    assert_int_equal(ds_sim_engine_start(e, en.t[0], &a, 1, 0, 1, 0, (void *)2), DSTACK_OK);
    assert_int_equal(ds_sim_engine_start(e, en.t[0], &w, 1, 0, 2, 0, (void *)3), DSTACK_OK);
    ds_sim_engine_drain(e, on_end, &en);
    assert_int_equal(end_of(&en, 2), 3000 + 2000);
    /* batch 3: 12 blocks at once on unit 1 and the 4 left over, 8 more
     * when batch 2 frees unit 0 at 5000: 3000 + 1000 + 1000 */
    assert_int_equal(end_of(&en, 3), 5000);
    ds_sim_engine_destroy(e);
    /* units that do not fit the device are refused */
    e = ds_sim_engine_create(&d, false);
    assert_int_equal(ds_sim_engine_start(e, 0, &k, 1, 0, 3, 0, NULL), DSTACK_ERR_INVALID_ARGUMENT);
    assert_int_equal(ds_sim_engine_start(e, 0, &k, 1, 2, 1, 0, NULL), DSTACK_ERR_INVALID_ARGUMENT);
    ds_sim_engine_destroy(e);
    /* without green contexts there is nothing left over: one unit of 8 SMs
     * on a 20-SM device (an MPS client's share) is 8 SMs */
    ds_sim_device mps = none;
    mps.unit_sms = 8;
    assert_int_equal(alone(&mps, kern(9, 0), 1), 2000);
    /* a device of more than 64 units (the core hands out 64 at most) runs */
    ds_sim_device big = d;
    big.sm_count = 1024;
    big.n_units = 127;
    assert_int_equal(alone(&big, kern(1024, 0), 127), 1000); /* 1016 + 8 left over */
    assert_int_equal(alone(&big, kern(1024, 0), 1), 128000);
}

/* Where the driver takes the split's remainder into the last unit's
 * descriptor (tail_leftover), every range that ends at the last unit holds
 * the SMs left over: toy 2 units of 8 and 4 left over. */
static void test_ranges_at_the_last_unit_hold_the_left_over(void **state)
{
    (void)state;
    ds_sim_device d = toy();
    d.sm_count = 20;
    d.tail_leftover = true;
    ds_sim_kernel k12 = kern(12, 0), k13 = kern(13, 0), k8 = kern(8, 0), k9 = kern(9, 0);
    ds_sim_engine *e = ds_sim_engine_create(&d, false);
    ends en = {0};
    /* unit 1 (the last): 12 SMs, one wave of 12 blocks, two of 13 */
    assert_int_equal(ds_sim_engine_start(e, 0, &k12, 1, 1, 1, 0, (void *)1), DSTACK_OK);
    /* unit 0 beside it: its own 8 SMs, undisturbed */
    assert_int_equal(ds_sim_engine_start(e, 0, &k8, 1, 0, 1, 0, (void *)2), DSTACK_OK);
    ds_sim_engine_drain(e, on_end, &en);
    assert_int_equal(end_of(&en, 1), 1000);
    assert_int_equal(end_of(&en, 2), 1000);
    en.n = 0;
    assert_int_equal(ds_sim_engine_start(e, en.t[0], &k13, 1, 1, 1, 0, (void *)3), DSTACK_OK);
    assert_int_equal(ds_sim_engine_start(e, en.t[0], &k9, 1, 0, 1, 0, (void *)4), DSTACK_OK);
    ds_sim_engine_drain(e, on_end, &en);
    assert_int_equal(end_of(&en, 3), 1000 + 2000);
    assert_int_equal(end_of(&en, 4), 1000 + 2000); /* unit 0 has 8 SMs, never the 4 */
    ds_sim_engine_destroy(e);
    assert_int_equal(alone(&d, kern(20, 0), 2), 1000); /* every unit: still the whole device */
    /* without it, unit 1 alone is 8 SMs (the test above) */
    d.tail_leftover = false;
    e = ds_sim_engine_create(&d, false);
    en.n = 0;
    assert_int_equal(ds_sim_engine_start(e, 0, &k12, 1, 1, 1, 0, (void *)5), DSTACK_OK);
    ds_sim_engine_drain(e, on_end, &en);
    assert_int_equal(end_of(&en, 5), 2000);
    ds_sim_engine_destroy(e);
}

static void test_disjoint_partitions_contend_only_for_memory(void **state)
{
    (void)state;
    ds_sim_device d = toy();
    ds_sim_kernel a = kern(8, 1000), b = kern(8, 1000);
    /* memory plentiful: side by side, each as alone */
    ds_sim_engine *e = ds_sim_engine_create(&d, false);
    ends en = {0};
    ds_sim_engine_start(e, 0, &a, 1, 0, 1, 0, (void *)1);
    ds_sim_engine_start(e, 0, &b, 1, 1, 1, 0, (void *)2);
    ds_sim_engine_drain(e, on_end, &en);
    assert_int_equal(end_of(&en, 1), 1000);
    assert_int_equal(end_of(&en, 2), 1000);
    ds_sim_engine_destroy(e);
    /* 1 byte/ns in all: each alone needs exactly that for 1000 ns; together
     * they share it and both take 2000 ns */
    d.mem_bw = 1e9;
    assert_int_equal(alone(&d, a, 1), 1000);
    e = ds_sim_engine_create(&d, false);
    en.n = 0;
    ds_sim_engine_start(e, 0, &a, 1, 0, 1, 0, (void *)1);
    ds_sim_engine_start(e, 0, &b, 1, 1, 1, 0, (void *)2);
    ds_sim_engine_drain(e, on_end, &en);
    assert_int_equal(end_of(&en, 1), 2000);
    assert_int_equal(end_of(&en, 2), 2000);
    assert_true(fabs(ds_sim_engine_busy_sm_ns(e) - 2 * 8 * 2000.0) < 1e-6);
    ds_sim_engine_destroy(e);
    /* a compute-only neighbour costs nothing */
    ds_sim_kernel c = kern(8, 0);
    e = ds_sim_engine_create(&d, false);
    en.n = 0;
    ds_sim_engine_start(e, 0, &a, 1, 0, 1, 0, (void *)1);
    ds_sim_engine_start(e, 0, &c, 1, 1, 1, 0, (void *)2);
    ds_sim_engine_drain(e, on_end, &en);
    assert_int_equal(end_of(&en, 1), 1000);
    assert_int_equal(end_of(&en, 2), 1000);
    ds_sim_engine_destroy(e);
    /* per-SM bandwidth cap: 8 SMs x 0.0625 B/ns = 0.5 B/ns -> 2000 ns alone */
    d.mem_bw = 1e18;
    d.sm_mem_bw = 0.0625e9;
    assert_int_equal(alone(&d, a, 1), 2000);
}

static void test_shared_sms_go_in_launch_order(void **state)
{
    (void)state;
    ds_sim_device d = toy();
    /* A (12 blocks) launched before B (4 blocks), both on unit 0: A's first
     * wave takes all 8 SMs; then A's tail takes 4 and B the other 4. */
    ds_sim_kernel a = kern(12, 0), b = kern(4, 0);
    ds_sim_engine *e = ds_sim_engine_create(&d, false);
    ends en = {0};
    ds_sim_engine_start(e, 0, &a, 1, 0, 1, 0, (void *)1);
    ds_sim_engine_start(e, 0, &b, 1, 0, 1, 0, (void *)2);
    ds_sim_engine_drain(e, on_end, &en);
    assert_int_equal(end_of(&en, 1), 2000);
    assert_int_equal(end_of(&en, 2), 2000); /* one after the other: 3000 */
    assert_true(fabs(ds_sim_engine_busy_sm_ns(e) - 16 * 1000.0) < 1e-6);
    ds_sim_engine_destroy(e);
    /* B first: B holds 4 SMs for a wave, A one wave on the other 4, then
     * A's last 8 blocks on all 8 SMs */
    e = ds_sim_engine_create(&d, false);
    en.n = 0;
    ds_sim_engine_start(e, 0, &b, 1, 0, 1, 0, (void *)2);
    ds_sim_engine_start(e, 0, &a, 1, 0, 1, 0, (void *)1);
    ds_sim_engine_drain(e, on_end, &en);
    assert_int_equal(end_of(&en, 2), 1000);
    assert_int_equal(end_of(&en, 1), 2000);
    ds_sim_engine_destroy(e);
    /* a batch started later waits for the running kernel's full waves */
    ds_sim_kernel big = kern(24, 0);
    e = ds_sim_engine_create(&d, false);
    en.n = 0;
    ds_sim_engine_start(e, 0, &big, 1, 0, 1, 0, (void *)1);
    ds_sim_engine_advance(e, 500, on_end, &en);
    ds_sim_engine_start(e, 500, &b, 1, 0, 1, 0, (void *)2);
    ds_sim_engine_drain(e, on_end, &en);
    assert_int_equal(end_of(&en, 1), 3000);
    assert_int_equal(end_of(&en, 2), 4000);
    ds_sim_engine_destroy(e);
}

static void test_ideal_mode_has_no_waves_and_shares_the_device(void **state)
{
    (void)state;
    ds_sim_device d = toy();
    ds_sim_kernel a = kern(12, 0), b = kern(12, 0);
    ds_sim_engine *e = ds_sim_engine_create(&d, true);
    ends en = {0};
    ds_sim_engine_start(e, 0, &a, 1, 0, 1, 0, (void *)1); /* partition ignored */
    ds_sim_engine_drain(e, on_end, &en);
    assert_int_equal(en.t[0], 1000); /* wants 12 of 16 SMs: one wave time */
    ds_sim_engine_destroy(e);
    e = ds_sim_engine_create(&d, true);
    en.n = 0;
    ds_sim_engine_start(e, 0, &a, 1, 0, 1, 0, (void *)1);
    ds_sim_engine_start(e, 0, &b, 1, 1, 1, 0, (void *)2);
    ds_sim_engine_drain(e, on_end, &en);
    /* a started first: it takes the 12 SMs it can use, b the 4 left; when a
     * ends at 1000, b has 8/12 of its work left on 12 SMs: 667 ns more */
    assert_int_equal(end_of(&en, 1), 1000);
    assert_int_equal(end_of(&en, 2), 1667);
    assert_true(fabs(ds_sim_engine_busy_sm_ns(e) - (16 * 1000.0 + 12 * 2000.0 / 3.0)) < 1e-3);
    ds_sim_engine_destroy(e);
}

/* Ideal mode serves the batch that started first, whatever the order its
 * kernels launched in: a chain of kernels is one job, not re-queued behind
 * every kernel launched while its previous kernel ran. */
static void test_ideal_mode_serves_the_oldest_batch_first(void **state)
{
    (void)state;
    ds_sim_device d = toy();
    ds_sim_kernel a[2] = {kern(4, 0), kern(16, 0)}, b = kern(16, 0);
    ds_sim_engine *e = ds_sim_engine_create(&d, true);
    ends en = {0};
    ds_sim_engine_start(e, 0, a, 2, 0, 1, 0, (void *)1);
    ds_sim_engine_start(e, 0, &b, 1, 0, 1, 0, (void *)2);
    ds_sim_engine_drain(e, on_end, &en);
    /* 0-1000: a's first kernel on 4 SMs, b on the other 12 (3/4 done);
     * 1000-2000: a's second kernel, launched after b's, takes all 16 SMs;
     * then b's last quarter on 16 SMs: 250 ns. (In kernel launch order b
     * would end at 1250 and a at 2250.) */
    assert_int_equal(end_of(&en, 1), 2000);
    assert_int_equal(end_of(&en, 2), 2250);
    assert_true(fabs(ds_sim_engine_busy_sm_ns(e) - (16 * 2000.0 + 16 * 250.0)) < 1e-3);
    ds_sim_engine_destroy(e);
}

/* ---- determinism ---- */

static void workload(ds_sim_device *d, ends *out, double *busy)
{
    static ds_sim_kernel ks[6];
    for (int i = 0; i < 6; i++) {
        ks[i] = kern(5 + 7 * (uint64_t)i, 300.0 * i);
        ks[i].blocks_per_sm = i % 2 ? 2 : 4;
    }
    d->mem_bw = 2e9;
    d->sm_mem_bw = 0.2e9;
    d->launch_gap_ns = 37;
    d->batch_overhead_ns = 11;
    ds_sim_engine *e = ds_sim_engine_create(d, false);
    memset(out, 0, sizeof *out);
    for (int i = 0; i < 8; i++) {
        uint64_t t = 250 * (uint64_t)i;
        ds_sim_engine_advance(e, t, on_end, out);
        ds_sim_engine_next_end_ns(e);
        ds_sim_engine_start(e, t, &ks[i % 3], 6 - (uint32_t)(i % 3) * 2, i % 3 == 2 ? 0 : (uint32_t)i % 2,
                            i % 3 == 2 ? 2 : 1, 100.0 * i, (void *)(intptr_t)i);
    }
    ds_sim_engine_drain(e, on_end, out);
    *busy = ds_sim_engine_busy_sm_ns(e);
    ds_sim_engine_destroy(e);
}

static void test_same_inputs_same_outputs(void **state)
{
    (void)state;
    ds_sim_device d1 = toy(), d2 = toy();
    ends a, b;
    double busy_a, busy_b;
    workload(&d1, &a, &busy_a);
    workload(&d2, &b, &busy_b);
    assert_int_equal(a.n, 8);
    assert_memory_equal(&a, &b, sizeof a);
    assert_memory_equal(&busy_a, &busy_b, sizeof busy_a);
}

static void test_next_end_predicts_the_first_end(void **state)
{
    (void)state;
    ds_sim_device d = toy();
    d.mem_bw = 1e9;
    ds_sim_kernel a = kern(8, 1000), b = kern(24, 1000);
    ds_sim_engine *e = ds_sim_engine_create(&d, false);
    ds_sim_engine_start(e, 0, &a, 1, 0, 1, 0, (void *)1);
    ds_sim_engine_start(e, 0, &b, 1, 1, 1, 0, (void *)2);
    /* 1 B/ns shared: b (3 waves, 1000 B) needs 1/3 B/ns, a gets 2/3 and
     * ends at 1500; b ends at 3000 */
    uint64_t t = ds_sim_engine_next_end_ns(e);
    ends en = {0};
    ds_sim_engine_advance(e, t - 1, on_end, &en);
    assert_int_equal(en.n, 0);
    ds_sim_engine_advance(e, t, on_end, &en);
    assert_int_equal(en.n, 1);
    assert_int_equal(en.t[0], t);
    assert_int_equal(t, 1500);
    assert_int_equal(ds_sim_engine_next_end_ns(e), 3000);
    ds_sim_engine_drain(e, on_end, &en);
    assert_int_equal(en.n, 2);
    assert_int_equal(en.t[1], 3000);
    ds_sim_engine_destroy(e);
}

/* ---- graph -> kernels ---- */

static ds_graph *tiny_graph(void)
{
    ds_graph *g = ds_graph_new("tiny");
    int64_t xd[4] = {1, 8, 16, 16}, wd[4] = {64, 8, 3, 3};
    uint32_t x = ds_graph_add_input(g, "x", 4, xd);
    float *w = calloc(64 * 8 * 9, sizeof *w);
    uint32_t wt = ds_graph_add_const(g, "w", 4, wd, w);
    ds_op_attrs a;
    ds_op_attrs_init(&a);
    a.kernel[0] = a.kernel[1] = 3;
    a.pads[0] = a.pads[1] = a.pads[2] = a.pads[3] = 1;
    uint32_t in[2] = {x, wt};
    uint32_t c = ds_graph_add_node(g, DS_OP_CONV, "conv", in, 2, &a, "c");
    ds_op_attrs_init(&a);
    uint32_t r = ds_graph_add_node(g, DS_OP_RELU, "relu", &c, 1, &a, "y");
    ds_graph_mark_output(g, r);
    assert_int_equal(ds_graph_finalize(g), DSTACK_OK);
    return g;
}

static void test_tiny_graph_kernels_match_its_flops(void **state)
{
    (void)state;
    ds_graph *g = tiny_graph();
    ds_sim_device d;
    ds_sim_device_default(&d, DSTACK_PARTITION_GREEN_CTX, 0);
    for (uint32_t b = 1; b <= 4; b *= 2) {
        ds_sim_kernel *k;
        uint32_t n;
        assert_int_equal(ds_sim_kernels(g, b, &d, &k, &n), DSTACK_OK);
        /* conv: M = 256b, N = 64, K = 72 -> 64x32 tiles (grid < 132), no
         * split-K (K < 256); relu: 16384b elements in blocks of 1024 */
        assert_int_equal(n, 2);
        assert_int_equal(k[0].kind, 0);
        assert_int_equal(k[0].blocks, 8 * b);
        assert_int_equal(k[0].blocks_per_sm, 4);
        assert_int_equal(k[1].kind, 1);
        assert_int_equal(k[1].blocks, 16 * b);
        double f = 0;
        for (uint32_t i = 0; i < n; i++)
            f += k[i].flops_per_block * (double)k[i].blocks;
        assert_true(f == (double)ds_graph_flops(g) * b); /* tiles divide: exact */
        /* bytes: x + w + c, then c + y */
        assert_true(k[0].bytes == 4.0 * (2048.0 * b + 4608 + 16384.0 * b));
        assert_true(k[1].bytes == 4.0 * 2 * 16384.0 * b);
        free(k);
    }
    ds_graph_free(g);
}

static ds_graph *resnet50(void)
{
    static ds_graph *g;
    if (!g) {
        ds_zoo_params zp = {224, 1000, 1};
        assert_int_equal(ds_zoo_build("resnet50", &zp, &g), DSTACK_OK);
        assert_int_equal(ds_graph_fold(g), DSTACK_OK);
    }
    return g;
}

static void test_resnet50_sweep_is_monotone_and_padded_flops_cover_the_graph(void **state)
{
    (void)state;
    ds_graph *g = resnet50();
    ds_sim_device d;
    ds_sim_device_default(&d, DSTACK_PARTITION_GREEN_CTX, 0);
    ds_sim_kernel *k;
    uint32_t n;
    assert_int_equal(ds_sim_kernels(g, 16, &d, &k, &n), DSTACK_OK);
    double f = 0;
    for (uint32_t i = 0; i < n; i++)
        f += k[i].flops_per_block * (double)k[i].blocks;
    assert_true(f >= (double)ds_graph_flops(g) * 16 * 0.99);
    uint64_t prev = UINT64_MAX;
    for (uint32_t u = 1; u <= d.n_units; u++) {
        uint64_t t = ds_sim_kernels_time_ns(k, n, u * d.unit_sms, &d);
        assert_true(t <= prev);
        prev = t;
    }
    assert_true(ds_sim_kernels_time_ns(k, n, 132, &d) <= prev);
    free(k);
}

/* ---- the executor ---- */

typedef struct vclock_state {
    uint64_t now;
} vclock_state;

static uint64_t vclock_now(const ds_clock *c) { return ((const vclock_state *)c->state)->now; }

typedef struct done_log {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int n;
    int order[8];
    uint64_t at[8];
    const vclock_state *vc;
} done_log;

typedef struct done_arg {
    done_log *log;
    int id;
} done_arg;

static void on_done(void *arg, dstack_status st)
{
    done_arg *a = arg;
    assert_int_equal(st, DSTACK_OK);
    pthread_mutex_lock(&a->log->mu);
    a->log->order[a->log->n] = a->id;
    a->log->at[a->log->n++] = a->log->vc ? a->log->vc->now : ds_monotonic_ns();
    pthread_cond_broadcast(&a->log->cv);
    pthread_mutex_unlock(&a->log->mu);
}

typedef struct bufs {
    float in[4][8 * 16 * 16];
    float out[4][64 * 16 * 16];
    const void *ip[4];
    void *op[4];
} bufs;

static ds_exec_batch batch_of(bufs *b, uint32_t n)
{
    for (uint32_t i = 0; i < 4; i++) {
        b->ip[i] = b->in[i];
        b->op[i] = b->out[i];
        for (size_t j = 0; j < 64 * 16 * 16; j++)
            b->out[i][j] = 1.0f;
    }
    ds_exec_batch eb = {n, b->ip, b->op};
    return eb;
}

static void test_executor_virtual_time_calls_done_in_order(void **state)
{
    (void)state;
    ds_executor_config cfg = {0, DSTACK_PARTITION_AUTO, 0, 0};
    ds_executor *ex;
    assert_int_equal(ds_exec_sim_create(&cfg, &ex), DSTACK_OK);
    assert_int_equal(ex->device.sm_count, 132);
    assert_int_equal(ex->device.n_units, 15);
    assert_int_equal(ex->device.unit_sms, 8);
    vclock_state vs = {1000};
    ds_clock clk = {vclock_now, &vs};
    ds_sim_exec_set_virtual(ex, &clk);
    ds_graph *g = tiny_graph();
    ds_plan_options po = {4, DSTACK_PRECISION_FP32};
    ds_exec_plan *p1, *p2;
    assert_int_equal(ex->ops->plan_create(ex, g, &po, &p1), DSTACK_OK);
    assert_int_equal(ex->ops->plan_create(ex, g, &po, &p2), DSTACK_OK);
    ds_partition big, small;
    assert_int_equal(ex->ops->partition_get(ex, 0, 14, &big), DSTACK_OK);
    assert_int_equal(big.sm_count, 112);
    ds_partition all;
    assert_int_equal(ex->ops->partition_get(ex, 0, 15, &all), DSTACK_OK);
    assert_int_equal(all.sm_count, 132); /* every unit: the whole device */
    assert_int_equal(ex->ops->partition_get(ex, 1, 14, &all), DSTACK_OK);
    assert_int_equal(all.sm_count, 124); /* ends at the last unit: 14 x 8 and the 12 left over */
    assert_int_equal(ex->ops->partition_get(ex, 0, 1, &small), DSTACK_OK);
    assert_int_equal(small.sm_count, 8);
    assert_int_equal(ex->ops->partition_get(ex, 14, 1, &small), DSTACK_OK);
    assert_int_equal(small.sm_count, 20);
    assert_int_equal(ex->ops->partition_get(ex, 14, 2, &small), DSTACK_ERR_INVALID_ARGUMENT);
    assert_int_equal(ex->ops->partition_get(ex, 14, 1, &small), DSTACK_OK);
    static bufs b1, b2;
    ds_exec_batch eb1 = batch_of(&b1, 4), eb2 = batch_of(&b2, 1);
    done_log log = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, {0}, {0}, &vs};
    done_arg a1 = {&log, 1}, a2 = {&log, 2};
    assert_int_equal(ex->ops->run(ex, p1, &eb1, &small, on_done, &a1), DSTACK_OK);
    assert_int_equal(ex->ops->run(ex, p2, &eb2, &big, on_done, &a2), DSTACK_OK);
    assert_true(b1.out[3][100] == 0.0f && b2.out[0][0] == 0.0f); /* outputs zeroed */
    assert_int_equal(log.n, 0);
    /* alone-times of each (tiny kernels: little bandwidth contention) */
    const ds_sim_device *d = ds_sim_exec_device(ex);
    ds_sim_kernel *k;
    uint32_t n;
    ds_sim_kernels(g, 4, d, &k, &n);
    uint64_t t1 = ds_sim_batch_time_ns(k, n, 20, ds_sim_host_bytes(g, 4), d); /* the last unit */
    free(k);
    ds_sim_kernels(g, 1, d, &k, &n);
    uint64_t t2 = ds_sim_batch_time_ns(k, n, 112, ds_sim_host_bytes(g, 1), d);
    free(k);
    assert_true(t2 < t1);
    uint64_t next = ds_sim_exec_next_ns(ex);
    assert_true(next >= 1000 + t2 - 2 && next <= 1000 + t2 + 2);
    vs.now = next - 1;
    ds_sim_exec_advance(ex, vs.now);
    assert_int_equal(log.n, 0);
    vs.now = next;
    ds_sim_exec_advance(ex, vs.now);
    assert_int_equal(log.n, 1);
    assert_int_equal(log.order[0], 2);
    next = ds_sim_exec_next_ns(ex);
    /* as alone on 20 SMs, less what sharing HBM with the other batch cost
     * while it ran (20 SMs can pull more than the device's bandwidth) */
    assert_true(next >= 1000 + t1 - 2 && next <= 1000 + t1 + t1 / 100);
    vs.now = next + 5000;
    ds_sim_exec_advance(ex, vs.now);
    assert_int_equal(log.n, 2);
    assert_int_equal(log.order[1], 1);
    assert_int_equal(ds_sim_exec_next_ns(ex), UINT64_MAX);
    assert_true(ds_sim_exec_busy_sm_ns(ex) > 0);
    /* bad arguments */
    ds_exec_batch bad = batch_of(&b1, 5);
    assert_int_equal(ex->ops->run(ex, p1, &bad, &small, on_done, &a1), DSTACK_ERR_INVALID_ARGUMENT);
    ds_partition off = {15, 1, 8, NULL};
    eb1 = batch_of(&b1, 1);
    assert_int_equal(ex->ops->run(ex, p1, &eb1, &off, on_done, &a1), DSTACK_ERR_INVALID_ARGUMENT);
    /* destroy with a batch in flight finishes it */
    assert_int_equal(ex->ops->run(ex, p1, &eb1, &small, on_done, &a1), DSTACK_OK);
    const ds_executor_ops *ops = ex->ops;
    ops->plan_destroy(ex, p2);
    ops->destroy(ex);
    assert_int_equal(log.n, 3);
    ops->plan_destroy(NULL, p1); /* plans may outlive a destroyed executor's runs */
    ds_graph_free(g);
}

static void test_executor_real_clock_done_after_modeled_time(void **state)
{
    (void)state;
    ds_executor_config cfg = {0, DSTACK_PARTITION_NONE, 0, 0};
    ds_executor *ex;
    assert_int_equal(ds_exec_sim_create(&cfg, &ex), DSTACK_OK);
    assert_int_equal(ex->device.n_units, 1);
    ds_graph *g = resnet50();
    ds_plan_options po = {16, DSTACK_PRECISION_FP32};
    ds_exec_plan *p;
    assert_int_equal(ex->ops->plan_create(ex, g, &po, &p), DSTACK_OK);
    const ds_sim_device *d = ds_sim_exec_device(ex);
    ds_sim_kernel *k;
    uint32_t n;
    ds_sim_kernels(g, 2, d, &k, &n);
    uint64_t model = ds_sim_batch_time_ns(k, n, 132, ds_sim_host_bytes(g, 2), d);
    free(k);
    float *in[2], *out[2];
    for (int i = 0; i < 2; i++) {
        in[i] = calloc(3 * 224 * 224, sizeof(float));
        out[i] = malloc(1000 * sizeof(float));
        out[i][7] = 3.0f;
    }
    ds_exec_batch eb = {2, (const void *const *)in, (void *const *)out};
    ds_partition whole;
    assert_int_equal(ex->ops->partition_get(ex, 0, 1, &whole), DSTACK_OK);
    assert_int_equal(whole.sm_count, 132);
    done_log log = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, {0}, {0}, NULL};
    done_arg a = {&log, 1};
    uint64_t t0 = ds_monotonic_ns();
    assert_int_equal(ex->ops->run(ex, p, &eb, &whole, on_done, &a), DSTACK_OK);
    assert_true(out[1][7] == 0.0f);
    pthread_mutex_lock(&log.mu);
    while (log.n == 0)
        pthread_cond_wait(&log.cv, &log.mu);
    pthread_mutex_unlock(&log.mu);
    uint64_t took = log.at[0] - t0;
    assert_true(took + 2 >= model);
    assert_true(took < model + 2000000000ull);
    /* destroy waits for a running batch */
    log.n = 0;
    assert_int_equal(ex->ops->run(ex, p, &eb, &whole, on_done, &a), DSTACK_OK);
    ex->ops->plan_destroy(ex, p); /* waits until the engine is done with it */
    ex->ops->destroy(ex);
    assert_int_equal(log.n, 1);
    for (int i = 0; i < 2; i++) {
        free(in[i]);
        free(out[i]);
    }
}

/* ---- the calibration record ---- */

static void test_profile_constants_match_the_compiled_device(void **state)
{
    (void)state;
    FILE *f = fopen("bench/profiles/h100-sim.txt", "r");
    assert_non_null(f);
    ds_sim_device d;
    ds_sim_device_default(&d, DSTACK_PARTITION_GREEN_CTX, 0);
    struct {
        const char *name;
        double v;
    } want[] = {{"sm_flops", d.sm_flops},         {"sm_flops_simple", d.sm_flops_simple},
                {"mem_bw", d.mem_bw},             {"sm_mem_bw", d.sm_mem_bw},
                {"launch_gap_ns", d.launch_gap_ns}, {"batch_overhead_ns", d.batch_overhead_ns},
                {"host_bw", d.host_bw},           {"sat_occupancy", d.sat_occupancy}};
    int found = 0;
    char line[512], name[64];
    double v;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "const %63s %lf", name, &v) == 2)
            for (size_t i = 0; i < sizeof want / sizeof *want; i++)
                if (!strcmp(name, want[i].name)) {
                    if (v != want[i].v)
                        fail_msg("%s: profile %g, compiled %g", name, v, want[i].v);
                    found++;
                }
    fclose(f);
    assert_int_equal(found, 8);
    /* the device: 132 SMs as 15 units of 8 (12 left over), or one of 132 */
    assert_int_equal(d.n_units, 15);
    ds_sim_device_default(&d, DSTACK_PARTITION_NONE, 0);
    assert_int_equal(d.n_units, 1);
    assert_int_equal(d.unit_sms, 132);
    ds_sim_device_default(&d, DSTACK_PARTITION_AUTO, 64);
    assert_int_equal(d.n_units, 8);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_one_kernel_alone_takes_one_wave),
        cmocka_unit_test(test_waves_quantize),
        cmocka_unit_test(test_every_unit_is_the_whole_device),
        cmocka_unit_test(test_ranges_at_the_last_unit_hold_the_left_over),
        cmocka_unit_test(test_disjoint_partitions_contend_only_for_memory),
        cmocka_unit_test(test_shared_sms_go_in_launch_order),
        cmocka_unit_test(test_ideal_mode_has_no_waves_and_shares_the_device),
        cmocka_unit_test(test_ideal_mode_serves_the_oldest_batch_first),
        cmocka_unit_test(test_same_inputs_same_outputs),
        cmocka_unit_test(test_next_end_predicts_the_first_end),
        cmocka_unit_test(test_tiny_graph_kernels_match_its_flops),
        cmocka_unit_test(test_resnet50_sweep_is_monotone_and_padded_flops_cover_the_graph),
        cmocka_unit_test(test_executor_virtual_time_calls_done_in_order),
        cmocka_unit_test(test_executor_real_clock_done_after_modeled_time),
        cmocka_unit_test(test_profile_constants_match_the_compiled_device),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    ds_graph_free(resnet50());
    return rc;
}
