/* test_analytic_trace.c - the analytic knee from a kernel trace (cuda's
 * CUPTI records, src/knee/analytic.h): the occupancy calculator against
 * hand-worked Hopper cases and against CUDA's own cuda_occupancy.h, the
 * curve's arithmetic on synthetic traces, and the profile entry point's
 * statuses on a backend without a tracer. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "exec/exec.h"
#include "graph/graph.h"
#include "knee/analytic.h"
#include "profile/profile.h"
#include "sim/sim.h"

#if DS_WITH_CUDA && defined(__has_include)
#if __has_include(<cuda_occupancy.h>)
#include <cuda_occupancy.h>
#define HAVE_CUDA_OCC 1
#endif
#endif

static uint32_t occ(uint32_t threads, uint32_t regs, uint32_t smem)
{
    ds_sm_limits lim;
    ds_sm_limits_hopper(&lim);
    return ds_occupancy_blocks_per_sm(&lim, threads, regs, smem, 0);
}

/* Each case worked by hand from the limits in analytic.h. */
static void test_occupancy_hand_cases_on_hopper(void **state)
{
    (void)state;
    assert_int_equal(occ(256, 32, 0), 8);      /* threads: 2048/256; regs: 16 warps/sub-partition x 4 / 8 */
    assert_int_equal(occ(128, 128, 0), 4);     /* regs: 4096 per warp, 4 warps per sub-partition, 16 / 4 */
    assert_int_equal(occ(1024, 64, 0), 1);     /* regs: 8 warps per sub-partition, 32 / 32 */
    assert_int_equal(occ(64, 0, 0), 32);       /* the 32-block limit before the 2048-thread one */
    assert_int_equal(occ(128, 0, 102400), 2);  /* (100 KB + 1 KB reserved) -> 2 in 228 KB */
    assert_int_equal(occ(128, 0, 232448), 1);  /* the largest block */
    assert_int_equal(occ(128, 0, 232449), 0);  /* one byte over */
    assert_int_equal(occ(2049, 0, 0), 0);      /* more threads than an SM holds */
    assert_int_equal(occ(32, 256, 0), 0);      /* more than 255 registers per thread */
    assert_int_equal(occ(0, 32, 0), 0);
    /* a smaller carveout, as CUPTI reports it, limits shared memory further */
    ds_sm_limits lim;
    ds_sm_limits_hopper(&lim);
    assert_int_equal(ds_occupancy_blocks_per_sm(&lim, 128, 0, 30 * 1024, 100 * 1024), 3);
    assert_int_equal(ds_occupancy_blocks_per_sm(&lim, 128, 0, 30 * 1024, 0), 7);
    assert_int_equal(ds_occupancy_blocks_per_sm(NULL, 128, 0, 0, 0), 0);
}

/* The same numbers as CUDA's occupancy calculator on random launches (the
 * function's limit configured to opt in to the largest block, the carveout
 * at its maximum, as cuDNN's kernels run). */
static void test_occupancy_matches_cuda_occupancy_h(void **state)
{
    (void)state;
#ifdef HAVE_CUDA_OCC
    cudaOccDeviceProp p;
    memset(&p, 0, sizeof p);
    p.computeMajor = 9;
    p.maxThreadsPerBlock = 1024;
    p.maxThreadsPerMultiprocessor = 2048;
    p.regsPerBlock = 65536;
    p.regsPerMultiprocessor = 65536;
    p.warpSize = 32;
    p.sharedMemPerBlock = 49152;
    p.sharedMemPerMultiprocessor = 233472;
    p.numSms = 132;
    p.sharedMemPerBlockOptin = 232448;
    p.reservedSharedMemPerBlock = 1024;
    ds_sm_limits lim;
    ds_sm_limits_hopper(&lim);
    uint64_t rng = 7;
    int compared = 0;
    for (int i = 0; i < 20000; i++) {
        rng = rng * 6364136223846793005ull + 1442695040888963407ull;
        uint32_t r = (uint32_t)(rng >> 33);
        int threads = (r & 3) ? 32 * (int)(1 + (r >> 2) % 32) : (int)(1 + (r >> 2) % 1024);
        int regs = (int)((r >> 12) % 256);
        rng = rng * 6364136223846793005ull + 1442695040888963407ull;
        uint32_t r2 = (uint32_t)(rng >> 33);
        size_t smem = r2 % 3 ? (size_t)(r2 >> 2) % 232448 : 0;
        cudaOccFuncAttributes a;
        memset(&a, 0, sizeof a);
        a.maxThreadsPerBlock = 1024;
        a.numRegs = regs;
        a.partitionedGCConfig = PARTITIONED_GC_OFF;
        a.shmemLimitConfig = FUNC_SHMEM_LIMIT_OPTIN;
        a.maxDynamicSharedSizeBytes = 232448;
        a.numBlockBarriers = 1;
        cudaOccDeviceState s;
        memset(&s, 0, sizeof s);
        s.cacheConfig = CACHE_PREFER_NONE;
        s.carveoutConfig = SHAREDMEM_CARVEOUT_MAX_SHARED;
        cudaOccResult res;
        memset(&res, 0, sizeof res);
        if (cudaOccMaxActiveBlocksPerMultiprocessor(&res, &p, &a, &s, threads, smem) != CUDA_OCC_SUCCESS)
            continue;
        compared++;
        uint32_t mine = ds_occupancy_blocks_per_sm(&lim, (uint32_t)threads, (uint32_t)regs, (uint32_t)smem, 0);
        if ((int)mine != res.activeBlocksPerMultiprocessor)
            fail_msg("threads %d regs %d smem %zu: cuda_occupancy.h %d, ours %u", threads, regs, smem,
                     res.activeBlocksPerMultiprocessor, mine);
    }
    assert_true(compared > 19000);
#else
    skip();
#endif
}

static ds_kernel_record kernel(uint64_t blocks, uint32_t threads, uint32_t regs, uint64_t start_us, uint64_t us)
{
    ds_kernel_record k;
    memset(&k, 0, sizeof k);
    k.grid_blocks = blocks;
    k.block_threads = threads;
    k.regs_per_thread = regs;
    k.start_ns = start_us * 1000;
    k.end_ns = (start_us + us) * 1000;
    return k;
}

/* One kernel of 1056 blocks, 8 per SM (256 threads, 32 registers): one
 * wave on 132 SMs, ceil(1056 / (64 u)) waves on u < 15 units of 8 SMs,
 * and every unit is the whole device, where it was traced (util/units.h). */
static void test_trace_curve_counts_waves(void **state)
{
    (void)state;
    ds_kernel_record k = kernel(1056, 256, 32, 0, 1000);
    ds_sm_limits lim;
    ds_sm_limits_hopper(&lim);
    ds_trace_curve t;
    assert_int_equal(ds_knee_analytic_trace(&k, 1, 132, 1500.0, 16, 8, 15, &lim, NULL, &t), DSTACK_OK);
    assert_true(t.kernel_us == 1000.0);
    assert_true(t.outside_us == 500.0);
    assert_int_equal(t.unknown_occupancy, 0);
    assert_int_equal(t.curve.n_units, 15);
    assert_int_equal(t.curve.batch, 16);
    for (uint32_t u = 1; u <= 15; u++) {
        uint32_t sms = u < 15 ? 8 * u : 132, w = (1056 + 8 * sms - 1) / (8 * sms);
        assert_int_equal(t.curve.sms[u - 1], sms);
        assert_true(t.curve.us[u - 1] == 500.0 + 1000.0 * w);
    }
    /* 17 waves at 8 SMs down to 2 at 112 and 1 at 132: the curve bends, the knee is inside */
    assert_true(t.curve.knee_units >= 1 && t.curve.knee_units <= 15);
}

/* Kernels of a few blocks never fill more than a unit: the curve is flat
 * and the knee is the smallest share. */
static void test_trace_small_kernels_give_a_flat_curve(void **state)
{
    (void)state;
    ds_kernel_record k[3] = {kernel(4, 128, 32, 0, 50), kernel(8, 256, 64, 60, 80), kernel(2, 64, 16, 150, 10)};
    ds_sm_limits lim;
    ds_sm_limits_hopper(&lim);
    ds_trace_curve t;
    assert_int_equal(ds_knee_analytic_trace(k, 3, 120, 200.0, 1, 8, 15, &lim, NULL, &t), DSTACK_OK);
    for (uint32_t u = 1; u <= 15; u++)
        assert_true(t.curve.us[u - 1] == 200.0);
    assert_int_equal(t.curve.knee.kind, DS_KNEE_FLAT);
    assert_int_equal(t.curve.knee_units, 1);
}

/* A kernel the limits say cannot run (it did) is counted once, as 1 block
 * per SM; a total shorter than the kernels leaves nothing outside them. */
static void test_trace_unknown_occupancy_and_short_total(void **state)
{
    (void)state;
    ds_kernel_record k[2] = {kernel(960, 2000, 255, 0, 100), kernel(120, 128, 32, 100, 100)};
    ds_sm_limits lim;
    ds_sm_limits_hopper(&lim);
    ds_trace_curve t;
    assert_int_equal(ds_knee_analytic_trace(k, 2, 120, 150.0, 1, 8, 15, &lim, NULL, &t), DSTACK_OK);
    assert_int_equal(t.unknown_occupancy, 1);
    assert_true(t.outside_us == 0.0);
    /* first kernel: 960 blocks at 1 per SM: 8 waves on 120 SMs, 120 on 8 */
    assert_true(t.curve.us[0] == 100.0 * 120 / 8 + 100.0);
}

static void test_trace_bad_arguments(void **state)
{
    (void)state;
    ds_kernel_record k = kernel(10, 128, 32, 0, 10);
    ds_sm_limits lim;
    ds_sm_limits_hopper(&lim);
    ds_trace_curve t;
    assert_int_equal(ds_knee_analytic_trace(NULL, 1, 120, 10, 1, 8, 15, &lim, NULL, &t), DSTACK_ERR_INVALID_ARGUMENT);
    assert_int_equal(ds_knee_analytic_trace(&k, 0, 120, 10, 1, 8, 15, &lim, NULL, &t), DSTACK_ERR_INVALID_ARGUMENT);
    assert_int_equal(ds_knee_analytic_trace(&k, 1, 0, 10, 1, 8, 15, &lim, NULL, &t), DSTACK_ERR_INVALID_ARGUMENT);
    assert_int_equal(ds_knee_analytic_trace(&k, 1, 120, 10, 1, 0, 15, &lim, NULL, &t), DSTACK_ERR_INVALID_ARGUMENT);
    assert_int_equal(ds_knee_analytic_trace(&k, 1, 120, 10, 1, 8, 65, &lim, NULL, &t), DSTACK_ERR_INVALID_ARGUMENT);
    assert_int_equal(ds_knee_analytic_trace(&k, 1, 120, 1.0 / 0.0, 1, 8, 15, &lim, NULL, &t),
                     DSTACK_ERR_INVALID_ARGUMENT);
    assert_int_equal(ds_knee_analytic_trace(&k, 1, 120, 10, 1, 8, 15, NULL, NULL, &t), DSTACK_ERR_INVALID_ARGUMENT);
    ds_kernel_record back = kernel(10, 128, 32, 100, 10);
    back.end_ns = back.start_ns - 1;
    assert_int_equal(ds_knee_analytic_trace(&back, 1, 120, 10, 1, 8, 15, &lim, NULL, &t), DSTACK_ERR_INVALID_ARGUMENT);
}

/* sim has no kernel tracer: UNSUPPORTED, and the trace is left zeroed. */
static void test_profile_kernels_unsupported_without_tracer(void **state)
{
    (void)state;
    ds_executor_config ec = {0, DSTACK_PARTITION_GREEN_CTX, 0, 0};
    ds_executor *ex = NULL;
    assert_int_equal(ds_exec_sim_create(&ec, &ex), DSTACK_OK);
    ds_zoo_params zp = {64, 10, 1};
    ds_graph *g = NULL;
    assert_int_equal(ds_zoo_build("resnet18", &zp, &g), DSTACK_OK);
    ds_plan_options po = {4, DSTACK_PRECISION_FP32, 0};
    ds_exec_plan *plan = NULL;
    assert_int_equal(ex->ops->plan_create(ex, g, &po, &plan), DSTACK_OK);
    ds_profile_trace tr;
    memset(&tr, 0xab, sizeof tr);
    assert_int_equal(ds_profile_kernels(ex, plan, g, 2, &tr), DSTACK_ERR_UNSUPPORTED);
    assert_null(tr.kernels);
    assert_int_equal(tr.n_kernels, 0);
    assert_int_equal(ds_profile_kernels(ex, plan, g, 0, &tr), DSTACK_ERR_INVALID_ARGUMENT);
    assert_int_equal(ds_profile_kernels(NULL, plan, g, 1, &tr), DSTACK_ERR_INVALID_ARGUMENT);
    ex->ops->plan_destroy(ex, plan);
    ex->ops->destroy(ex);
    ds_graph_free(g);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_occupancy_hand_cases_on_hopper),
        cmocka_unit_test(test_occupancy_matches_cuda_occupancy_h),
        cmocka_unit_test(test_trace_curve_counts_waves),
        cmocka_unit_test(test_trace_small_kernels_give_a_flat_curve),
        cmocka_unit_test(test_trace_unknown_occupancy_and_short_total),
        cmocka_unit_test(test_trace_bad_arguments),
        cmocka_unit_test(test_profile_kernels_unsupported_without_tracer),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
