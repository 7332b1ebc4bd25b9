/* Every op forward and backward on CUDA against the CPU reference, on fresh
 * random inputs, with outputs poisoned first, run twice to check the bits
 * repeat. Exits 77 (SKIPPED) where no GPU is present. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <cmocka.h>
#include <math.h>

#include "testlib.h"

static mt_backend *gpu;

/* A case whose op has no CUDA kernel yet is reported skipped, not passed. */
static void skip_if_cpu_only(const tl_case *k)
{
    if (k->cpu_only) {
        printf("skipped on CUDA: %s (no CUDA kernel yet)\n", k->name);
        skip();
    }
}

static void case_f32(void **state)
{
    const tl_case *k = *state;
    skip_if_cpu_only(k);
    tl_assert_backend_matches(gpu, k, MT_F32, k->f32_bound > 0 ? k->f32_bound : 1e-5);
}

static void case_bf16(void **state)
{
    skip_if_cpu_only(*state);
    tl_assert_backend_matches(gpu, *state, MT_BF16, 1e-2);
}

/* CUDA fills draw the same Philox stream as the CPU's, so a seed gives the
 * same tensor on either device. */
static void fills_match_the_cpu(void **state)
{
    (void)state;
    mt_backend *cpu = mt_backend_cpu_create();
    int64_t shape[2] = {300, 77};
    mt_tensor *h = mt_tensor_new(MT_CPU, MT_F32, 2, shape), *d = mt_tensor_new(MT_CUDA, MT_F32, 2, shape);
    cpu->fill_normal(cpu, h, 99, 0.5, 2.0);
    gpu->fill_normal(gpu, d, 99, 0.5, 2.0);
    assert_true(tl_rel_err(d, h) == 0.0);
    cpu->fill_uniform(cpu, h, 98, -3, 3);
    gpu->fill_uniform(gpu, d, 98, -3, 3);
    assert_true(tl_rel_err(d, h) == 0.0);
    mt_tensor_free(h);
    mt_tensor_free(d);
    cpu->destroy(cpu);
}

/* tl_sliced_cross_entropy (3 slices) of host logits and targets on be: the
 * slices' losses and the logits' gradient, on the host. */
static mt_tensor *sliced_cross_entropy_on(mt_backend *be, const mt_tensor *logits_h, const mt_tensor *targets_h,
                                          double *losses)
{
    mt_ctx c;
    mt_ctx_init(&c, be, 0);
    mt_tensor *logits = tl_to_device(logits_h, be->device), *targets = tl_to_device(targets_h, be->device);
    logits->requires_grad = true;
    mt_backward(&c, tl_sliced_cross_entropy(&c, logits, targets, 3, losses));
    mt_tensor *grad = tl_to_device(mt_grad_of(&c, logits), MT_CPU);
    mt_ctx_release(&c);
    mt_tensor_free(logits);
    mt_tensor_free(targets);
    return grad;
}

/* The vocab-parallel cross-entropy's pieces (row statistics of column
 * slices from a column offset, their combination over several slices, the
 * backward's offset one-hot) on CUDA against the CPU. */
static void cross_entropy_slices(mt_dtype dt, double bound)
{
    enum { N = 257, COLS = 3 * 1001 };
    mt_backend *cpu = mt_backend_cpu_create();
    mt_tensor *logits = mt_tensor_new(MT_CPU, dt, 2, (int64_t[]){N, COLS});
    mt_tensor *targets = mt_tensor_new(MT_CPU, MT_I32, 1, (int64_t[]){N});
    cpu->fill_normal(cpu, logits, 17, 0.0, 4.0);
    for (int n = 0; n < N; n++)
        mt_set(targets, n, n % 5 == 2 ? TL_IGNORE : (n * 611) % COLS);
    double ref[3], got[3];
    mt_tensor *ref_grad = sliced_cross_entropy_on(cpu, logits, targets, ref);
    mt_tensor *grad = sliced_cross_entropy_on(gpu, logits, targets, got);
    double loss_err = 0;
    for (int k = 0; k < 3; k++)
        loss_err = fmax(loss_err, fabs(got[k] - ref[k]) / fabs(ref[k]));
    double grad_err = tl_rel_err(grad, ref_grad);
    printf("cross_entropy_slices %s: loss %.3g grad %.3g\n", mt_dtype_name(dt), loss_err, grad_err);
    assert_true(loss_err < bound && grad_err < bound);
    mt_tensor_free(grad);
    mt_tensor_free(ref_grad);
    mt_tensor_free(logits);
    mt_tensor_free(targets);
    cpu->destroy(cpu);
}

static void cross_entropy_slices_f32(void **state)
{
    (void)state;
    cross_entropy_slices(MT_F32, 1e-5);
}

static void cross_entropy_slices_bf16(void **state)
{
    (void)state;
    cross_entropy_slices(MT_BF16, 1e-2);
}

static void cross_entropy_in_place_f32(void **state)
{
    (void)state;
    tl_assert_in_place_cross_entropy_exact(gpu, MT_F32);
}

static void cross_entropy_in_place_bf16(void **state)
{
    (void)state;
    tl_assert_in_place_cross_entropy_exact(gpu, MT_BF16);
}

int main(void)
{
    gpu = tl_cuda_backend_or_exit();
    static struct CMUnitTest tests[128];
    static char names[128][64];
    size_t n = 0;
    tests[n++] = (struct CMUnitTest){"fills_match_the_cpu", fills_match_the_cpu, NULL, NULL, NULL};
    tests[n++] = (struct CMUnitTest){"cross_entropy_slices f32", cross_entropy_slices_f32, NULL, NULL, NULL};
    tests[n++] = (struct CMUnitTest){"cross_entropy_slices bf16", cross_entropy_slices_bf16, NULL, NULL, NULL};
    tests[n++] = (struct CMUnitTest){"cross_entropy_in_place f32", cross_entropy_in_place_f32, NULL, NULL, NULL};
    tests[n++] = (struct CMUnitTest){"cross_entropy_in_place bf16", cross_entropy_in_place_bf16, NULL, NULL, NULL};
    for (int i = 0; i < tl_n_cases; i++) {
        snprintf(names[n], sizeof names[n], "%s f32", tl_cases[i].name);
        tests[n] = (struct CMUnitTest){names[n], case_f32, NULL, NULL, (void *)&tl_cases[i]};
        n++;
        snprintf(names[n], sizeof names[n], "%s bf16", tl_cases[i].name);
        tests[n] = (struct CMUnitTest){names[n], case_bf16, NULL, NULL, (void *)&tl_cases[i]};
        n++;
    }
    int failed = _cmocka_run_group_tests("cuda_vs_cpu", tests, n, NULL, NULL);
    gpu->destroy(gpu);
    return failed;
}
