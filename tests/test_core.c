/* Tensors, views, bf16 rounding, the RNG, the arena, the parameter store and
 * the tape's bookkeeping: accumulation, no-grad mode, views, op errors;
 * the vocab-parallel cross-entropy's pieces against the whole; the in-place
 * cross-entropy against the one that adds into a fresh gradient. */
#include <math.h>
#include <stdio.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <cmocka.h>

#include "core/params.h"
#include "testlib.h"

static mt_backend *cpu;

static void test_views_split_last_dim(void **state)
{
    (void)state;
    mt_tensor *t = mt_tensor_new(MT_CPU, MT_F32, 3, (int64_t[]){2, 3, 10});
    for (int64_t i = 0; i < 60; i++)
        mt_set(t, i, (double)i);
    mt_tensor v = mt_view_cols(t, 4, 3);
    assert_true(mt_is_row_major(&v));
    assert_false(mt_is_contiguous(&v));
    assert_int_equal(mt_rows(&v), 6);
    assert_int_equal(mt_cols(&v), 3);
    assert_int_equal(mt_row_stride(&v), 10);
    assert_true(mt_get(&v, 0) == 4.0);
    assert_true(mt_get(&v, 4) == 15.0); /* row 1, col 1 -> parent 10 + 4 + 1 */
    assert_true(mt_get(&v, 17) == 56.0);
    mt_tensor_free(t);
}

static void test_bf16_rounds_to_nearest_even(void **state)
{
    (void)state;
    union { uint32_t u; float f; } x;
    assert_int_equal(mt_f32_to_bf16(1.0f), 0x3f80);
    x.u = 0x3f808000u; /* halfway, even below */
    assert_int_equal(mt_f32_to_bf16(x.f), 0x3f80);
    x.u = 0x3f818000u; /* halfway, odd below: up */
    assert_int_equal(mt_f32_to_bf16(x.f), 0x3f82);
    x.u = 0x3f808001u; /* just above halfway */
    assert_int_equal(mt_f32_to_bf16(x.f), 0x3f81);
    assert_true(isnan(mt_bf16_to_f32(mt_f32_to_bf16(NAN))));
    assert_true(mt_bf16_to_f32(0x4049) == 3.140625f);
}

static void test_rng_reproducible_and_distributed(void **state)
{
    (void)state;
    int64_t n = 20000;
    mt_tensor *a = mt_tensor_new(MT_CPU, MT_F32, 1, &n), *b = mt_tensor_new(MT_CPU, MT_F32, 1, &n);
    cpu->fill_normal(cpu, a, 7, 0.0, 1.0);
    cpu->fill_normal(cpu, b, 7, 0.0, 1.0);
    assert_memory_equal(a->data, b->data, mt_nbytes(a));
    cpu->fill_normal(cpu, b, 8, 0.0, 1.0);
    assert_memory_not_equal(a->data, b->data, mt_nbytes(a));
    double sum = 0, sq = 0;
    for (int64_t i = 0; i < n; i++) {
        sum += mt_get(a, i);
        sq += mt_get(a, i) * mt_get(a, i);
    }
    assert_true(fabs(sum / n) < 0.03);
    assert_true(fabs(sqrt(sq / n) - 1.0) < 0.03);
    cpu->fill_uniform(cpu, a, 9, 2.0, 3.0);
    sum = 0;
    for (int64_t i = 0; i < n; i++) {
        assert_true(mt_get(a, i) >= 2.0 && mt_get(a, i) < 3.0);
        sum += mt_get(a, i);
    }
    assert_true(fabs(sum / n - 2.5) < 0.01);
    mt_tensor_free(a);
    mt_tensor_free(b);
}

static void test_arena_stops_allocating_after_first_step(void **state)
{
    (void)state;
    mt_arena a;
    mt_arena_init(&a, MT_CPU, 4096, "test arena");
    for (int i = 0; i < 10; i++)
        assert_non_null(mt_arena_alloc(&a, 3000));
    assert_true(a.device_allocs > 1); /* the first step outgrew the first block */
    mt_arena_reset(&a);
    size_t after_warmup = a.device_allocs;
    for (int step = 0; step < 3; step++) {
        for (int i = 0; i < 10; i++)
            assert_non_null(mt_arena_alloc(&a, 3000));
        mt_arena_reset(&a);
    }
    assert_int_equal(a.device_allocs, after_warmup);
    assert_int_equal(a.peak, 10 * 3072);
    mt_arena_release(&a);
}

static void test_params_live_in_flat_buffers(void **state)
{
    (void)state;
    mt_params p;
    mt_params_init(&p, MT_CPU, MT_F32);
    mt_tensor *w = mt_params_add(&p, "w", 2, (int64_t[]){3, 5}, 0);
    mt_tensor *b = mt_params_add(&p, "b", 1, (int64_t[]){7}, MT_PARAM_NO_DECAY);
    mt_params_alloc(&p);
    assert_int_equal(p.numel, 22);
    assert_int_equal(p.flat_size, 2 * MT_PARAM_ALIGN);
    assert_ptr_equal(w->data, p.values);
    assert_ptr_equal(b->data, (float *)p.values + MT_PARAM_ALIGN);
    assert_ptr_equal(b->grad->data, (float *)p.grads + MT_PARAM_ALIGN);
    assert_true(mt_params_find(&p, "b")->flags & MT_PARAM_NO_DECAY);
    assert_null(mt_params_find(&p, "c"));
    mt_params_release(&p);
}

/* loss = CE(x . w^T); run twice without zeroing: the gradient doubles. */
static void test_param_grads_accumulate_across_micro_steps(void **state)
{
    (void)state;
    mt_params p;
    mt_params_init(&p, MT_CPU, MT_F64);
    mt_tensor *w = mt_params_add(&p, "w", 2, (int64_t[]){4, 3}, 0);
    mt_params_alloc(&p);
    cpu->fill_normal(cpu, w, 1, 0, 1);
    mt_tensor *x = mt_tensor_new(MT_CPU, MT_F64, 2, (int64_t[]){5, 3});
    mt_tensor *t = mt_tensor_new(MT_CPU, MT_I32, 1, (int64_t[]){5});
    cpu->fill_normal(cpu, x, 2, 0, 1);
    for (int i = 0; i < 5; i++)
        mt_set(t, i, i % 4);
    mt_ctx c;
    mt_ctx_init(&c, cpu, 1 << 16);
    double first[12];
    for (int micro = 0; micro < 2; micro++) {
        mt_backward(&c, mt_cross_entropy(&c, mt_linear(&c, x, w, NULL), t, TL_IGNORE));
        mt_ctx_end_step(&c);
        for (int i = 0; i < 12; i++) {
            if (micro == 0)
                first[i] = mt_get(w->grad, i);
            else
                assert_true(fabs(mt_get(w->grad, i) - 2 * first[i]) <= 1e-15 * fabs(first[i]) + 1e-300);
        }
    }
    assert_true(fabs(first[0]) > 0);
    mt_params_zero_grad(&p);
    for (int i = 0; i < 12; i++)
        assert_true(mt_get(w->grad, i) == 0.0);
    mt_ctx_release(&c);
    mt_tensor_free(x);
    mt_tensor_free(t);
    mt_params_release(&p);
}

static void test_no_grad_records_nothing(void **state)
{
    (void)state;
    mt_ctx c;
    mt_ctx_init(&c, cpu, 1 << 16);
    mt_tensor *x = mt_tensor_new(MT_CPU, MT_F32, 2, (int64_t[]){2, 3});
    cpu->fill_uniform(cpu, x, 3, -1, 1);
    x->requires_grad = true;
    mt_tensor *y = mt_silu(&c, x);
    assert_int_equal(c.n_nodes, 1);
    assert_true(y->requires_grad);
    c.grad_enabled = false;
    y = mt_softplus(&c, mt_silu(&c, x));
    assert_int_equal(c.n_nodes, 1);
    assert_false(y->requires_grad);
    mt_ctx_release(&c);
    mt_tensor_free(x);
}

/* Two column views of one tensor multiplied: each view's gradient lands in
 * its columns of the parent's gradient. */
static void test_view_gradients_reach_the_parent(void **state)
{
    (void)state;
    mt_ctx c;
    mt_ctx_init(&c, cpu, 1 << 16);
    mt_tensor *x = mt_tensor_new(MT_CPU, MT_F64, 2, (int64_t[]){4, 6});
    cpu->fill_uniform(cpu, x, 5, -1, 1);
    x->requires_grad = true;
    mt_tensor *lo = mt_ctx_view_cols(&c, x, 0, 3), *hi = mt_ctx_view_cols(&c, x, 3, 3);
    mt_tensor *y = mt_mul(&c, lo, hi);
    mt_tensor *ones = mt_tensor_new(MT_CPU, MT_F64, 2, (int64_t[]){4, 3});
    for (int i = 0; i < 12; i++)
        mt_set(ones, i, 1.0);
    mt_backward_seeded(&c, 1, &y, &ones);
    for (int r = 0; r < 4; r++)
        for (int k = 0; k < 3; k++) {
            assert_true(mt_get(x->grad, r * 6 + k) == mt_get(x, r * 6 + 3 + k));
            assert_true(mt_get(x->grad, r * 6 + 3 + k) == mt_get(x, r * 6 + k));
        }
    mt_ctx_release(&c);
    mt_tensor_free(x);
    mt_tensor_free(ones);
}

static void test_op_errors_name_the_op_and_shapes(void **state)
{
    (void)state;
    mt_ctx c;
    mt_ctx_init(&c, cpu, 1 << 16);
    c.abort_on_error = false;
    mt_tensor *x = mt_tensor_new(MT_CPU, MT_F32, 2, (int64_t[]){2, 3});
    mt_tensor *w = mt_tensor_new(MT_CPU, MT_F32, 2, (int64_t[]){4, 5});
    mt_tensor *d = mt_tensor_new(MT_CPU, MT_F64, 2, (int64_t[]){2, 3});
    assert_null(mt_linear(&c, x, w, NULL));
    assert_non_null(strstr(mt_ctx_error(&c), "mt_linear"));
    assert_non_null(strstr(mt_ctx_error(&c), "(2, 3) f32 cpu"));
    assert_non_null(strstr(mt_ctx_error(&c), "(4, 5) f32 cpu"));
    /* A failed op's NULL flows on without replacing the first message. */
    assert_null(mt_silu(&c, mt_linear(&c, x, w, NULL)));
    assert_non_null(strstr(mt_ctx_error(&c), "mt_linear"));
    mt_ctx_clear_error(&c);
    assert_null(mt_add(&c, x, d));
    assert_non_null(strstr(mt_ctx_error(&c), "mt_add"));
    assert_non_null(strstr(mt_ctx_error(&c), "f64"));
    mt_ctx_clear_error(&c);
    mt_tensor *bad_ids = mt_tensor_new(MT_CPU, MT_F32, 1, (int64_t[]){2});
    assert_null(mt_cross_entropy(&c, x, bad_ids, -100));
    assert_non_null(strstr(mt_ctx_error(&c), "targets"));
    mt_ctx_clear_error(&c);
    mt_tensor *short_targets = mt_tensor_new(MT_CPU, MT_I32, 1, (int64_t[]){5});
    assert_null(mt_cross_entropy(&c, x, short_targets, -100));
    assert_non_null(strstr(mt_ctx_error(&c), "(5) i32"));
    mt_ctx_clear_error(&c);
    mt_tensor *r = NULL;
    assert_null(mt_rmsnorm(&c, x, NULL, w, 1e-5, &r));
    assert_non_null(strstr(mt_ctx_error(&c), "weight"));
    assert_null(r);
    mt_tensor_free(x);
    mt_tensor_free(w);
    mt_tensor_free(d);
    mt_tensor_free(bad_ids);
    mt_tensor_free(short_targets);
    mt_ctx_release(&c);
}

/* The vocab-parallel cross-entropy's pieces (each column slice's row
 * statistics, combined) give every slice the whole loss, and their
 * gradients together the whole one, in f64 to rounding; rows with ignored
 * targets and targets in every slice included. */
static void test_cross_entropy_slices_equal_the_whole(void **state)
{
    (void)state;
    enum { N = 37, SLICES = 3, COLS = 11 };
    mt_ctx c;
    mt_ctx_init(&c, cpu, 0);
    mt_tensor *logits = mt_tensor_new(MT_CPU, MT_F64, 2, (int64_t[]){N, SLICES * COLS});
    mt_tensor *targets = mt_tensor_new(MT_CPU, MT_I32, 1, (int64_t[]){N});
    cpu->fill_normal(cpu, logits, 5, 0.0, 3.0);
    for (int n = 0; n < N; n++)
        mt_set(targets, n, n % 7 == 3 ? TL_IGNORE : (n * 13) % (SLICES * COLS));
    logits->requires_grad = true;
    mt_tensor *whole = mt_cross_entropy(&c, logits, targets, TL_IGNORE);
    double ref = mt_get(whole, 0);
    mt_backward(&c, whole);
    mt_tensor *sliced = tl_to_device(logits, MT_CPU); /* its own gradient */
    sliced->requires_grad = true;
    double losses[SLICES];
    mt_backward(&c, tl_sliced_cross_entropy(&c, sliced, targets, SLICES, losses));
    for (int k = 0; k < SLICES; k++)
        if (fabs(losses[k] - ref) > 1e-14 * fabs(ref))
            fail_msg("slice %d: loss %.17g, the whole %.17g", k, losses[k], ref);
    double err = tl_rel_err(mt_grad_of(&c, sliced), mt_grad_of(&c, logits));
    printf("cross-entropy over %d slices: loss %.17g, gradient error %.3g\n", SLICES, ref, err);
    assert_true(err < 1e-14);
    mt_tensor_free(sliced);
    mt_tensor_free(logits);
    mt_tensor_free(targets);
    mt_ctx_release(&c);
}

/* The cross-entropy that writes the logits' gradient over the logits gives
 * the bits of the one that adds into a fresh gradient (f64 and f32). */
static void test_cross_entropy_in_place_is_exact(void **state)
{
    (void)state;
    tl_assert_in_place_cross_entropy_exact(cpu, MT_F64);
    tl_assert_in_place_cross_entropy_exact(cpu, MT_F32);
}

/* The CPU backend against itself: every output written, bits repeat. */
static void test_cpu_backend_writes_outputs_and_repeats(void **state)
{
    (void)state;
    for (int i = 0; i < tl_n_cases; i++) {
        tl_compare r = tl_compare_backend(cpu, &tl_cases[i], MT_F32, 3);
        if (!r.all_written || !r.deterministic || r.out_err != 0 || r.grad_err != 0)
            fail_msg("%s: written %d deterministic %d", tl_cases[i].name, r.all_written, r.deterministic);
    }
}

int main(void)
{
    cpu = mt_backend_cpu_create();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_views_split_last_dim),
        cmocka_unit_test(test_bf16_rounds_to_nearest_even),
        cmocka_unit_test(test_rng_reproducible_and_distributed),
        cmocka_unit_test(test_arena_stops_allocating_after_first_step),
        cmocka_unit_test(test_params_live_in_flat_buffers),
        cmocka_unit_test(test_param_grads_accumulate_across_micro_steps),
        cmocka_unit_test(test_no_grad_records_nothing),
        cmocka_unit_test(test_view_gradients_reach_the_parent),
        cmocka_unit_test(test_op_errors_name_the_op_and_shapes),
        cmocka_unit_test(test_cross_entropy_slices_equal_the_whole),
        cmocka_unit_test(test_cross_entropy_in_place_is_exact),
        cmocka_unit_test(test_cpu_backend_writes_outputs_and_repeats),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    cpu->destroy(cpu);
    return failed;
}
