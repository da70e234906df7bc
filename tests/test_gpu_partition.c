/* test_gpu_partition.c - SM-partition arithmetic and the cuda constructor's
 * error path, without a GPU. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "exec/exec.h"
#include "util/error.h"

#if DS_WITH_CUDA
#include "gpu/partition_math.h"
#include "util/units.h"

static void test_round_sms_hopper_min8_step8(void **state) {
    (void)state;
    assert_int_equal(ds_gpu_round_sms(1, 8, 8, 132), 8);
    assert_int_equal(ds_gpu_round_sms(8, 8, 8, 132), 8);
    assert_int_equal(ds_gpu_round_sms(9, 8, 8, 132), 16);
    assert_int_equal(ds_gpu_round_sms(16, 8, 8, 132), 16);
    assert_int_equal(ds_gpu_round_sms(17, 8, 8, 132), 24);
    assert_int_equal(ds_gpu_round_sms(129, 8, 8, 132), 132); /* 136 capped at the device */
}

static void test_round_sms_ampere_min4_step2(void **state) {
    (void)state;
    assert_int_equal(ds_gpu_round_sms(3, 4, 2, 108), 4);
    assert_int_equal(ds_gpu_round_sms(5, 4, 2, 108), 6);
    assert_int_equal(ds_gpu_round_sms(6, 4, 2, 108), 6);
    assert_int_equal(ds_gpu_round_sms(107, 4, 2, 108), 108);
    assert_int_equal(ds_gpu_round_sms(5, 0, 2, 108), 0);
}

static void test_units_for_sms_rounds_up(void **state) {
    (void)state;
    assert_int_equal(ds_gpu_units_for_sms(16, 8), 2);
    assert_int_equal(ds_gpu_units_for_sms(17, 8), 3);
    assert_int_equal(ds_gpu_units_for_sms(0, 8), 1);
    assert_int_equal(ds_gpu_units_for_sms(5, 0), 0);
    assert_int_equal(ds_gpu_units_upper_bound(132, 8), 16);
}

static void test_range_check_accepts_inside_rejects_outside(void **state) {
    (void)state;
    assert_int_equal(ds_gpu_range_check(15, 0, 15), DSTACK_OK);
    assert_int_equal(ds_gpu_range_check(15, 14, 1), DSTACK_OK);
    assert_int_equal(ds_gpu_range_check(15, 14, 2), DSTACK_ERR_INVALID_ARGUMENT);
    assert_non_null(strstr(ds_error_message(), "15 units"));
    assert_int_equal(ds_gpu_range_check(15, 0, 0), DSTACK_ERR_INVALID_ARGUMENT);
    assert_int_equal(ds_gpu_range_check(15, 15, 1), DSTACK_ERR_INVALID_ARGUMENT);
    /* first + count would wrap around in 32 bits */
    assert_int_equal(ds_gpu_range_check(15, 2, UINT32_MAX), DSTACK_ERR_INVALID_ARGUMENT);
    assert_int_equal(ds_gpu_range_check(15, UINT32_MAX, 2), DSTACK_ERR_INVALID_ARGUMENT);
}

static void test_mps_percentage_rounds_down_and_ignores_bad_values(void **state) {
    (void)state;
    assert_int_equal(ds_gpu_mps_sms(132, "50"), 66);
    assert_int_equal(ds_gpu_mps_sms(132, "33"), 43); /* 43.56 */
    assert_int_equal(ds_gpu_mps_sms(132, "100"), 132);
    assert_int_equal(ds_gpu_mps_sms(132, "0.5"), 1); /* 0.66 -> at least one SM */
    assert_int_equal(ds_gpu_mps_sms(132, NULL), 132);
    assert_int_equal(ds_gpu_mps_sms(132, ""), 132);
    assert_int_equal(ds_gpu_mps_sms(132, "abc"), 132);
    assert_int_equal(ds_gpu_mps_sms(132, "0"), 132);
    assert_int_equal(ds_gpu_mps_sms(132, "150"), 132);
    assert_int_equal(ds_gpu_mps_sms(132, "25%"), 132);
}

static void count_free(void *ud, void *obj) {
    int *n = ud;
    (*n)++;
    (void)obj;
}

static void test_range_cache_keys_every_range_distinctly(void **state) {
    (void)state;
    ds_range_cache c;
    assert_int_equal(ds_range_cache_init(&c, 15), DSTACK_OK);
    static int objs[15][16];
    uint32_t n = 0;
    for (uint32_t f = 0; f < 15; f++)
        for (uint32_t k = 1; f + k <= 15; k++) {
            assert_null(ds_range_cache_get(&c, f, k));
            assert_int_equal(ds_range_cache_put(&c, f, k, &objs[f][k]), DSTACK_OK);
            n++;
        }
    assert_int_equal(n, 120); /* 15 * 16 / 2 ranges */
    assert_int_equal(ds_range_cache_count(&c), 120);
    for (uint32_t f = 0; f < 15; f++)
        for (uint32_t k = 1; f + k <= 15; k++) assert_ptr_equal(ds_range_cache_get(&c, f, k), &objs[f][k]);
    assert_null(ds_range_cache_get(&c, 14, 2));
    assert_null(ds_range_cache_get(&c, 0, 0));
    assert_int_equal(ds_range_cache_put(&c, 10, 6, &objs[0][1]), DSTACK_ERR_INVALID_ARGUMENT);
    int freed = 0;
    ds_range_cache_destroy(&c, count_free, &freed);
    assert_int_equal(freed, 120);
    assert_null(c.slots);
}

static void test_range_cache_rejects_zero_units(void **state) {
    (void)state;
    ds_range_cache c;
    assert_int_equal(ds_range_cache_init(&c, 0), DSTACK_ERR_INVALID_ARGUMENT);
    assert_null(c.slots);
}

/* Here (no driver) this must be NO_DEVICE with a message; on a GPU machine it
 * must give a device whose units tile at most its SMs. */
static void test_cuda_create_without_gpu_says_no_device(void **state) {
    (void)state;
    ds_executor_config cfg = {.device = 0, .partitioning = DSTACK_PARTITION_AUTO};
    ds_executor *ex = (ds_executor *)0x1;
    dstack_status st = ds_exec_cuda_create(&cfg, &ex);
    if (st == DSTACK_OK) {
        assert_non_null(ex);
        assert_true(ex->device.n_units >= 1);
        assert_true(ex->device.unit_sms * ex->device.n_units <= ex->device.sm_count);
        assert_int_not_equal(ex->device.partitioning, DSTACK_PARTITION_AUTO);
        /* util/units.h: every unit is the whole device (an ordinary
         * stream); fewer units are a green context of units x unit_sms */
        uint32_t n = ex->device.n_units;
        ds_partition all, part;
        assert_int_equal(ex->ops->partition_get(ex, 0, n, &all), DSTACK_OK);
        if (ex->device.partitioning == DSTACK_PARTITION_GREEN_CTX) {
            assert_int_equal(all.sm_count, ex->device.sm_count);
            if (n > 1) {
                const ds_device_info *dv = &ex->device;
                assert_int_equal(ex->ops->partition_get(ex, 0, n - 1, &part), DSTACK_OK);
                /* read back from the green context: never more than asked
                 * (GPU-NOTES.md: drivers have given fewer) */
                assert_true(part.sm_count > 0 && part.sm_count <= (n - 1) * dv->unit_sms);
                assert_true(part.sm_count < all.sm_count);
                /* a range that ends at the last unit: its units, and the SMs
                 * left over too where the driver took the remainder */
                uint32_t firsts[2] = {1, n - 1};
                for (uint32_t i = 0; i < (n > 2 ? 2u : 1u); i++) {
                    uint32_t first = firsts[i];
                    uint32_t want = ds_units_span_sms(dv->partitioning, dv->sm_count, dv->unit_sms, n,
                                                      dv->tail_leftover, first, n - first);
                    assert_int_equal(ex->ops->partition_get(ex, first, n - first, &part), DSTACK_OK);
                    printf("# units %u+%u: %u SMs read back, %u by util/units.h (remainder %s)\n", first,
                           n - first, part.sm_count, want, dv->tail_leftover ? "joins the last unit" : "unused");
                    assert_true(part.sm_count > 0 && part.sm_count <= want);
                    if (dv->tail_leftover)
                        assert_true(part.sm_count > (n - first) * dv->unit_sms);
                }
            }
        } else {
            assert_int_equal(all.sm_count, ex->device.unit_sms);
        }
        ex->ops->destroy(ex);
        return;
    }
    assert_int_equal(st, DSTACK_ERR_NO_DEVICE);
    assert_null(ex);
    assert_true(strlen(ds_error_message()) > 10);
    assert_non_null(strstr(ds_error_message(), "CUDA"));
}

static void test_cuda_create_bad_device_ordinal_fails_cleanly(void **state) {
    (void)state;
    ds_executor_config cfg = {.device = 999, .partitioning = DSTACK_PARTITION_NONE};
    ds_executor *ex = NULL;
    assert_int_equal(ds_exec_cuda_create(&cfg, &ex), DSTACK_ERR_NO_DEVICE);
    assert_null(ex);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_sms_hopper_min8_step8),
        cmocka_unit_test(test_round_sms_ampere_min4_step2),
        cmocka_unit_test(test_units_for_sms_rounds_up),
        cmocka_unit_test(test_range_check_accepts_inside_rejects_outside),
        cmocka_unit_test(test_mps_percentage_rounds_down_and_ignores_bad_values),
        cmocka_unit_test(test_range_cache_keys_every_range_distinctly),
        cmocka_unit_test(test_range_cache_rejects_zero_units),
        cmocka_unit_test(test_cuda_create_without_gpu_says_no_device),
        cmocka_unit_test(test_cuda_create_bad_device_ordinal_fails_cleanly),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
#else
static void test_cuda_create_in_build_without_cuda_is_unsupported(void **state) {
    (void)state;
    ds_executor *ex = (ds_executor *)0x1;
    assert_int_equal(ds_exec_cuda_create(NULL, &ex), DSTACK_ERR_UNSUPPORTED);
    assert_null(ex);
    assert_non_null(strstr(ds_error_message(), "without CUDA"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cuda_create_in_build_without_cuda_is_unsupported),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
#endif
