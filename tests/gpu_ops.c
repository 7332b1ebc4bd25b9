/* Every op forward and backward on CUDA against the CPU reference, on fresh
 * random inputs, with outputs poisoned first, run twice to check the bits
 * repeat. Exits 77 (SKIPPED) where no GPU is present. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <cmocka.h>

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

int main(void)
{
    gpu = tl_cuda_backend_or_exit();
    static struct CMUnitTest tests[128];
    static char names[128][64];
    size_t n = 0;
    tests[n++] = (struct CMUnitTest){"fills_match_the_cpu", fills_match_the_cpu, NULL, NULL, NULL};
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
