/* The CUDA optimizer kernels against the CPU ones on random inputs: adamw_step
 * (vectorized and scalar paths, a random decay mask) and sumsq, each run
 * twice to check the bits repeat; and a whole AdamW store on the GPU against
 * the same store on the CPU. Exits 77 (SKIPPED) where no GPU is present. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "core/device.h"
#include "optim/adamw.h"
#include "testlib.h"

static mt_backend *gpu, *cpu;

#define BETA1 0.9
#define BETA2 0.95

/* The inputs of adamw_step on the CPU: values, grads, m, v (n) f32, and a
 * decay byte per element, about half set. */
typedef struct adam_inputs {
    int64_t n;
    mt_tensor *values, *grads, *m, *v;
    uint8_t *decay;
} adam_inputs;

static adam_inputs make_adam_inputs(int64_t n, uint64_t seed)
{
    adam_inputs in = {.n = n};
    in.values = mt_tensor_new(MT_CPU, MT_F32, 1, &n);
    in.grads = mt_tensor_new(MT_CPU, MT_F32, 1, &n);
    in.m = mt_tensor_new(MT_CPU, MT_F32, 1, &n);
    in.v = mt_tensor_new(MT_CPU, MT_F32, 1, &n);
    cpu->fill_normal(cpu, in.values, seed, 0.0, 1.0);
    cpu->fill_normal(cpu, in.grads, seed + 1, 0.0, 0.5);
    cpu->fill_normal(cpu, in.m, seed + 2, 0.0, 0.1);
    cpu->fill_uniform(cpu, in.v, seed + 3, 0.0, 0.05);
    mt_tensor *coin = mt_tensor_new(MT_CPU, MT_F32, 1, &n);
    cpu->fill_uniform(cpu, coin, seed + 4, 0.0, 1.0);
    in.decay = malloc((size_t)n);
    for (int64_t i = 0; i < n; i++)
        in.decay[i] = mt_get(coin, i) < 0.5;
    mt_tensor_free(coin);
    return in;
}

static void free_adam_inputs(adam_inputs *in)
{
    mt_tensor *t[4] = {in->values, in->grads, in->m, in->v};
    tl_free_all(4, t);
    free(in->decay);
}

/* A view of n elements of t starting at element `skip`. */
static mt_tensor view_from(const mt_tensor *t, int64_t skip, int64_t n)
{
    mt_tensor v;
    mt_tensor_init(&v, t->dtype, t->device, 1, &n);
    v.data = (char *)t->data + skip * mt_dtype_size(t->dtype);
    return v;
}

/* Three adamw_step calls on backend be over copies of `in` on be's device,
 * elements [skip, n) (skip = 1 puts every pointer off the 16-byte grid).
 * Returns the results on the CPU in out[0..3): values, m, v. */
static void run_adam(mt_backend *be, const adam_inputs *in, int64_t skip, mt_tensor **out)
{
    mt_tensor *values = tl_to_device(in->values, be->device), *grads = tl_to_device(in->grads, be->device);
    mt_tensor *m = tl_to_device(in->m, be->device), *v = tl_to_device(in->v, be->device);
    uint8_t *decay = mt_device_alloc(be->device, (size_t)in->n, "test decay mask");
    mt_device_copy(be->device, decay, MT_CPU, in->decay, (size_t)in->n);
    int64_t n = in->n - skip;
    mt_tensor vv = view_from(values, skip, n), vg = view_from(grads, skip, n);
    mt_tensor vm = view_from(m, skip, n), vvv = view_from(v, skip, n);
    const double lrs[3] = {1e-2, 3e-3, 1e-3}, scales[3] = {1.0, 0.37, 2.0};
    for (int t = 1; t <= 3; t++)
        be->adamw_step(be, &vv, &vg, &vm, &vvv, decay + skip, lrs[t - 1], BETA1, BETA2, 1e-8, 0.1,
                       1 - pow(BETA1, t), 1 - pow(BETA2, t), scales[t - 1]);
    be->synchronize(be);
    out[0] = tl_to_device(&vv, MT_CPU);
    out[1] = tl_to_device(&vm, MT_CPU);
    out[2] = tl_to_device(&vvv, MT_CPU);
    mt_tensor *t[4] = {values, grads, m, v};
    tl_free_all(4, t);
    mt_device_free(be->device, decay);
}

/* adamw_step on CUDA within 1e-6 of the CPU on values, m and v, and every
 * element within 1e-5 (|cpu| + 0.01) of the CPU's: the outputs are in place,
 * so they cannot be poisoned, but an element the kernel skipped keeps its
 * input, far outside that. A second run gives the same bits. */
static void adamw_matches_the_cpu(void **state)
{
    (void)state;
    const int64_t sizes[2] = {(1 << 20) + 3, 5};
    for (int s = 0; s < 2; s++)
        for (int64_t skip = 0; skip <= 1; skip++) {
            adam_inputs in = make_adam_inputs(sizes[s], 40 + (uint64_t)s);
            mt_tensor *ref[3], *got[3], *again[3];
            run_adam(cpu, &in, skip, ref);
            run_adam(gpu, &in, skip, got);
            run_adam(gpu, &in, skip, again);
            const char *names[3] = {"values", "m", "v"};
            for (int k = 0; k < 3; k++) {
                double err = tl_rel_err(got[k], ref[k]);
                print_message("n %lld skip %lld %s: rel err %.2e\n", (long long)in.n, (long long)skip, names[k], err);
                assert_true(err < 1e-6);
                for (int64_t i = 0; i < in.n - skip; i++) {
                    double r = mt_get(ref[k], i);
                    if (!(fabs(mt_get(got[k], i) - r) <= 1e-5 * (fabs(r) + 0.01)))
                        fail_msg("%s[%lld]: cuda %.9g cpu %.9g", names[k], (long long)i, mt_get(got[k], i), r);
                }
                assert_memory_equal(got[k]->data, again[k]->data, mt_nbytes(got[k]));
            }
            tl_free_all(3, ref);
            tl_free_all(3, got);
            tl_free_all(3, again);
            free_adam_inputs(&in);
        }
}

/* sumsq on CUDA within 1e-6 of the CPU's (it sums in double: far closer in
 * practice), from 1 element to several million, aligned and not; the same
 * bits twice. */
static void sumsq_matches_the_cpu(void **state)
{
    (void)state;
    const int64_t sizes[4] = {1, 7, 70001, 3000017};
    for (int s = 0; s < 4; s++)
        for (int64_t skip = 0; skip <= 1; skip++) {
            int64_t n = sizes[s] + skip;
            mt_tensor *h = mt_tensor_new(MT_CPU, MT_F32, 1, &n);
            cpu->fill_normal(cpu, h, 70 + (uint64_t)s, 0.0, 3.0);
            mt_tensor *d = tl_to_device(h, MT_CUDA);
            mt_tensor hv = view_from(h, skip, sizes[s]), dv = view_from(d, skip, sizes[s]);
            double ref = cpu->sumsq(cpu, &hv), got = gpu->sumsq(gpu, &dv), again = gpu->sumsq(gpu, &dv);
            print_message("n %lld skip %lld: cpu %.17g cuda %.17g\n", (long long)sizes[s], (long long)skip, ref, got);
            assert_true(fabs(got - ref) <= 1e-6 * ref);
            assert_memory_equal(&got, &again, sizeof got);
            mt_tensor_free(h);
            mt_tensor_free(d);
        }
}

/* sumsq_ranges gives each range the bits of sumsq over that range's view
 * (aligned and unaligned starts, an empty range, the whole buffer). */
static void sumsq_ranges_match_sumsq(void **state)
{
    (void)state;
    int64_t n = 1000003;
    mt_tensor *h = mt_tensor_new(MT_CPU, MT_F32, 1, &n);
    cpu->fill_normal(cpu, h, 91, 0.0, 2.0);
    mt_tensor *d = tl_to_device(h, MT_CUDA);
    const size_t begin[] = {0, 64, 65, 4096, 500000, 1000000, 0};
    const size_t count[] = {64, 1, 4031, 0, 499999, 3, 1000003};
    enum { N = sizeof begin / sizeof begin[0] };
    double got[N], cpu_got[N];
    gpu->sumsq_ranges(gpu, d, N, begin, count, got);
    cpu->sumsq_ranges(cpu, h, N, begin, count, cpu_got);
    for (int i = 0; i < N; i++) {
        mt_tensor v = view_from(d, (int64_t)begin[i], (int64_t)count[i]);
        double one = gpu->sumsq(gpu, &v);
        print_message("range %zu + %zu: %.17g (one range %.17g, cpu %.17g)\n", begin[i], count[i], got[i], one,
                      cpu_got[i]);
        assert_memory_equal(&got[i], &one, sizeof one);
        assert_true(fabs(got[i] - cpu_got[i]) <= 1e-6 * cpu_got[i]);
    }
    mt_tensor_free(h);
    mt_tensor_free(d);
}

/* A store with an embedding, a decayed weight and a NO_DECAY parameter, on
 * each device from the same values and gradients: two mt_adamw_step calls
 * agree within 1e-6, and so does mt_grad_norm. */
static void adamw_store_matches_the_cpu(void **state)
{
    (void)state;
    mt_params p[2];
    mt_adamw o[2];
    mt_adamw_config cfg = {.beta1 = BETA1, .beta2 = BETA2, .eps = 1e-8, .weight_decay = 0.1};
    const mt_device devs[2] = {MT_CPU, MT_CUDA};
    mt_backend *bes[2] = {cpu, gpu};
    for (int d = 0; d < 2; d++) {
        mt_params_init(&p[d], devs[d], MT_F32);
        mt_params_add(&p[d], "backbone.embedding.weight", 2, (int64_t[]){257, 64}, 0);
        mt_params_add(&p[d], "backbone.layers.0.mixer.in_proj.weight", 2, (int64_t[]){300, 65}, 0);
        mt_params_add(&p[d], "backbone.layers.0.mixer.D", 1, (int64_t[]){24}, MT_PARAM_NO_DECAY);
        mt_params_alloc(&p[d]);
        mt_adamw_init(&o[d], &p[d], &cfg);
        for (int k = 0; k < p[d].n; k++) {
            bes[d]->fill_normal(bes[d], &p[d].items[k]->value, 90 + (uint64_t)k, 0.0, 1.0);
            bes[d]->fill_normal(bes[d], &p[d].items[k]->grad, 95 + (uint64_t)k, 0.0, 0.3);
        }
    }
    double norm_cpu = mt_grad_norm(cpu, &p[0]), norm_gpu = mt_grad_norm(gpu, &p[1]);
    assert_true(fabs(norm_gpu - norm_cpu) <= 1e-6 * norm_cpu);
    for (int t = 0; t < 2; t++)
        for (int d = 0; d < 2; d++)
            mt_adamw_step(&o[d], bes[d], &p[d], 1e-2, mt_clip_scale(d ? norm_gpu : norm_cpu, 1.0));
    gpu->synchronize(gpu);
    for (int k = 0; k < p[0].n; k++) {
        double err = tl_rel_err(&p[1].items[k]->value, &p[0].items[k]->value);
        print_message("%s: rel err %.2e\n", p[0].items[k]->name, err);
        assert_true(err < 1e-6);
    }
    for (int d = 0; d < 2; d++) {
        mt_adamw_release(&o[d]);
        mt_params_release(&p[d]);
    }
}

int main(void)
{
    gpu = tl_cuda_backend_or_exit();
    cpu = mt_backend_cpu_create();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(adamw_matches_the_cpu),
        cmocka_unit_test(sumsq_matches_the_cpu),
        cmocka_unit_test(sumsq_ranges_match_sumsq),
        cmocka_unit_test(adamw_store_matches_the_cpu),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    cpu->destroy(cpu);
    gpu->destroy(gpu);
    return failed;
}
