/* Mamba-2 on CUDA against the CPU reference at training sizes: the SSD scan at
 * the reference benchmark's shape (batch 8, seqlen 2048, 32 heads of 64,
 * d_state 128, chunk 256) and at wider, narrower and odd shapes with every option,
 * and a tiny language model's logits and parameter gradients; the same
 * model's prefill and decode steps on CUDA against its full forward there.
 * Exits 77 (SKIPPED) where no GPU is present. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <cmocka.h>

#include "layers/model.h"
#include "testlib.h"

static mt_backend *gpu;

/* x (B, L, H*P), dt, A_log, Bm, Cm, D (H), dt_bias; one group, chunk 256. */
static int run_ssd_reference_shape(mt_ctx *c, mt_tensor **in, mt_tensor **out)
{
    mt_ssd_config cfg = {.headdim = 64, .ngroups = 1, .chunk_size = 256, .dt_min = 0, .dt_max = INFINITY};
    out[0] = mt_ssd(c, in[0], in[1], in[2], in[3], in[4], in[5], NULL, in[6], NULL, NULL, &cfg, NULL);
    return 1;
}

/* Every option: z, D per channel, 4 groups, clamp, initial and final states,
 * document boundaries, headdim 128, d_state 256, chunk 128, L not a multiple. */
static int run_ssd_wide(mt_ctx *c, mt_tensor **in, mt_tensor **out)
{
    mt_ssd_config cfg = {.headdim = 128, .ngroups = 4, .chunk_size = 128, .dt_min = 0.002, .dt_max = 0.08};
    out[0] = mt_ssd(c, in[0], in[1], in[2], in[3], in[4], in[5], in[6], in[7], in[8], in[9], &cfg, &out[1]);
    return 2;
}

/* headdim 32, d_state 16, 2 groups, chunk 64, z, final state. */
static int run_ssd_narrow(mt_ctx *c, mt_tensor **in, mt_tensor **out)
{
    mt_ssd_config cfg = {.headdim = 32, .ngroups = 2, .chunk_size = 64, .dt_min = 0, .dt_max = INFINITY};
    out[0] = mt_ssd(c, in[0], in[1], in[2], in[3], in[4], in[5], in[6], in[7], NULL, NULL, &cfg, &out[1]);
    return 2;
}

/* headdim 48 and d_state 160 (both padded inside the tensor-core tiles,
 * d_state to three 64-column slices), chunk 96 (partial 64-row tiles). */
static int run_ssd_odd(mt_ctx *c, mt_tensor **in, mt_tensor **out)
{
    mt_ssd_config cfg = {.headdim = 48, .ngroups = 1, .chunk_size = 96, .dt_min = 0, .dt_max = INFINITY};
    out[0] = mt_ssd(c, in[0], in[1], in[2], in[3], in[4], in[5], NULL, in[6], NULL, NULL, &cfg, NULL);
    return 1;
}

#define X(...) {__VA_ARGS__}
#define F(n, k, nd, l, a, b) {.name = n, .kind = k, .ndim = nd, .large = l, .lo = a, .hi = b}

static const tl_case ssd_reference = {
    "ssd_reference_shape", 7,
    {F("x", TL_FLOAT, 3, X(8, 2048, 2048), -1, 1), F("dt", TL_FLOAT, 3, X(8, 2048, 32), -4, 1),
     F("A_log", TL_ACCUM, 1, X(32), 0, 2.77), F("Bm", TL_FLOAT, 3, X(8, 2048, 128), -1, 1),
     F("Cm", TL_FLOAT, 3, X(8, 2048, 128), -1, 1), F("D", TL_ACCUM, 1, X(32), 0.5, 1.5),
     F("dt_bias", TL_ACCUM, 1, X(32), -5, -2)},
    run_ssd_reference_shape};

static const tl_case ssd_wide = {
    "ssd_wide", 10,
    {F("x", TL_FLOAT, 3, X(2, 1000, 1024), -1, 1), F("dt", TL_FLOAT, 3, X(2, 1000, 8), -4, 1),
     F("A_log", TL_ACCUM, 1, X(8), 0, 2.77), F("Bm", TL_FLOAT, 3, X(2, 1000, 1024), -1, 1),
     F("Cm", TL_FLOAT, 3, X(2, 1000, 1024), -1, 1), F("D", TL_ACCUM, 1, X(1024), 0.5, 1.5),
     F("z", TL_FLOAT, 3, X(2, 1000, 1024), -2, 2), F("dt_bias", TL_ACCUM, 1, X(8), -5, -2),
     F("init_state", TL_ACCUM, 4, X(2, 8, 128, 256), -1, 1),
     {.name = "seq_idx", .kind = TL_SEQ_IDX, .ndim = 2, .large = X(2, 1000)}},
    run_ssd_wide};

static const tl_case ssd_narrow = {
    "ssd_narrow", 8,
    {F("x", TL_FLOAT, 3, X(3, 777, 256), -1, 1), F("dt", TL_FLOAT, 3, X(3, 777, 8), -4, 1),
     F("A_log", TL_ACCUM, 1, X(8), 0, 2.77), F("Bm", TL_FLOAT, 3, X(3, 777, 32), -1, 1),
     F("Cm", TL_FLOAT, 3, X(3, 777, 32), -1, 1), F("D", TL_ACCUM, 1, X(8), 0.5, 1.5),
     F("z", TL_FLOAT, 3, X(3, 777, 256), -2, 2), F("dt_bias", TL_ACCUM, 1, X(8), -5, -2)},
    run_ssd_narrow};

static const tl_case ssd_odd = {
    "ssd_odd", 7,
    {F("x", TL_FLOAT, 3, X(2, 500, 192), -1, 1), F("dt", TL_FLOAT, 3, X(2, 500, 4), -4, 1),
     F("A_log", TL_ACCUM, 1, X(4), 0, 2.77), F("Bm", TL_FLOAT, 3, X(2, 500, 160), -1, 1),
     F("Cm", TL_FLOAT, 3, X(2, 500, 160), -1, 1), F("D", TL_ACCUM, 1, X(4), 0.5, 1.5),
     F("dt_bias", TL_ACCUM, 1, X(4), -5, -2)},
    run_ssd_odd};

static void ssd_odd_f32(void **state)
{
    (void)state;
    tl_assert_backend_matches(gpu, &ssd_odd, MT_F32, 1e-4);
}

static void ssd_odd_bf16(void **state)
{
    (void)state;
    tl_assert_backend_matches(gpu, &ssd_odd, MT_BF16, 1e-2);
}

static void ssd_reference_bf16(void **state)
{
    (void)state;
    tl_assert_backend_matches(gpu, &ssd_reference, MT_BF16, 1e-2);
}

static void ssd_wide_f32(void **state)
{
    (void)state;
    tl_assert_backend_matches(gpu, &ssd_wide, MT_F32, 1e-4);
}

static void ssd_wide_bf16(void **state)
{
    (void)state;
    tl_assert_backend_matches(gpu, &ssd_wide, MT_BF16, 1e-2);
}

static void ssd_narrow_f32(void **state)
{
    (void)state;
    tl_assert_backend_matches(gpu, &ssd_narrow, MT_F32, 1e-4);
}

static void ssd_narrow_bf16(void **state)
{
    (void)state;
    tl_assert_backend_matches(gpu, &ssd_narrow, MT_BF16, 1e-2);
}

/* The tiny language model of the tests below, with chunk `chunk`. */
static mt_model_config tiny_config(int chunk)
{
    mt_model_config cfg;
    mt_model_config_defaults(&cfg);
    cfg.d_model = 64;
    cfg.n_layer = 2;
    cfg.vocab_size = 100;
    cfg.d_state = 16;
    cfg.headdim = 16;
    cfg.chunk_size = chunk;
    char err[256];
    if (!mt_model_config_finalize(&cfg, err, sizeof err))
        fail_msg("%s", err);
    return cfg;
}

/* Logits and the gradient of every parameter of one model on one backend.
 * Both backends compute in the same dtype: the comparison checks the kernels,
 * not where bf16 rounding happens. */
static void lm_step(mt_backend *be, mt_model *m, mt_tensor *ids_cpu, mt_tensor *targets_cpu, mt_dtype compute,
                    mt_tensor **logits_out, mt_tensor **grads_out)
{
    mt_ctx c;
    mt_ctx_init(&c, be, 64 << 20);
    mt_tensor *ids = tl_to_device(ids_cpu, be->device), *targets = tl_to_device(targets_cpu, be->device);
    mt_tensor *logits = mt_model_logits(&c, m, ids, NULL, compute);
    mt_tensor *loss = mt_cross_entropy(&c, logits, targets, TL_IGNORE);
    assert_non_null(loss);
    mt_backward(&c, loss);
    *logits_out = tl_to_device(logits, MT_CPU);
    mt_tensor flat = mt_params_flat_grads(&m->params);
    *grads_out = tl_to_device(&flat, MT_CPU);
    mt_tensor_free(ids);
    mt_tensor_free(targets);
    mt_ctx_release(&c);
}

static void tiny_lm_matches_cpu(mt_dtype compute, double bound)
{
    mt_model_config cfg = tiny_config(64);
    mt_backend *cpu = mt_backend_cpu_create();
    mt_model on_cpu, on_gpu;
    mt_model_build(&on_cpu, &cfg, MT_CPU, MT_F32);
    mt_model_build(&on_gpu, &cfg, MT_CUDA, MT_F32);
    mt_model_init(&on_cpu, cpu, 21); /* the fills are Philox on both: the same weights */
    mt_model_init(&on_gpu, gpu, 21);

    enum { B = 2, L = 150 };
    mt_tensor *ids = mt_tensor_new(MT_CPU, MT_I32, 2, (int64_t[]){B, L});
    mt_tensor *targets = mt_tensor_new(MT_CPU, MT_I32, 1, (int64_t[]){B * L});
    for (int i = 0; i < B * L; i++) {
        mt_set(ids, i, (i * 37 + 11) % cfg.vocab_size);
        mt_set(targets, i, (i * 53 + 7) % cfg.vocab_size);
    }
    mt_tensor *logits_cpu, *grads_cpu, *logits_gpu, *grads_gpu;
    lm_step(cpu, &on_cpu, ids, targets, compute, &logits_cpu, &grads_cpu);
    lm_step(gpu, &on_gpu, ids, targets, compute, &logits_gpu, &grads_gpu);
    double e_logits = tl_rel_err(logits_gpu, logits_cpu), e_grads = tl_rel_err(grads_gpu, grads_cpu);
    printf("tiny LM %s on CUDA vs the CPU: logits %.2e, all parameter gradients %.2e\n",
           mt_dtype_name(compute), e_logits, e_grads);
    double worst = 0;
    for (int i = 0; i < on_cpu.params.n; i++) {
        double e = tl_rel_err(&on_gpu.params.items[i]->grad, &on_cpu.params.items[i]->grad);
        if (e > worst)
            worst = e;
        if (!(e <= bound))
            fail_msg("gradient of %s: relative error %.3e exceeds %.0e", on_cpu.params.items[i]->name, e, bound);
    }
    printf("tiny LM %s: worst single-parameter gradient error %.2e\n", mt_dtype_name(compute), worst);
    assert_true(e_logits <= bound);
    mt_tensor *all[] = {ids, targets, logits_cpu, grads_cpu, logits_gpu, grads_gpu};
    tl_free_all(6, all);
    mt_model_release(&on_cpu);
    mt_model_release(&on_gpu);
    cpu->destroy(cpu);
}

static void tiny_lm_f32(void **state)
{
    (void)state;
    tiny_lm_matches_cpu(MT_F32, 1e-4);
}

static void tiny_lm_bf16(void **state)
{
    (void)state;
    tiny_lm_matches_cpu(MT_BF16, 1e-2);
}

/* Prefill of the first P tokens and one decode step per token after them,
 * on CUDA, against the full forward on CUDA: every position's logits. */
static void decode_matches_full_forward(mt_dtype compute, double bound)
{
    mt_model_config cfg = tiny_config(16);
    char err[256];
    mt_model m;
    mt_model_build(&m, &cfg, MT_CUDA, MT_F32);
    mt_model_init(&m, gpu, 21);
    enum { B = 2, L = 40, P = 17 };
    const int64_t V = cfg.vocab_padded;
    mt_tensor *ids = mt_tensor_new(MT_CPU, MT_I32, 2, (int64_t[]){B, L});
    for (int i = 0; i < B * L; i++)
        mt_set(ids, i, (i * 37 + 11) % cfg.vocab_size);
    mt_ctx c;
    mt_ctx_init(&c, gpu, 64 << 20);
    c.grad_enabled = false;
    mt_tensor *ids_gpu = tl_to_device(ids, MT_CUDA);
    mt_tensor *full = tl_to_device(mt_model_logits(&c, &m, ids_gpu, NULL, compute), MT_CPU);
    mt_ctx_end_step(&c);
    mt_tensor *stepped = mt_tensor_new(MT_CPU, full->dtype, 2, full->shape);
    mt_model_state st;
    assert_true(mt_model_state_init(&st, &m, B, compute, err, sizeof err));
    for (int t = 0; t < L;) {
        const int n = t == 0 ? P : 1;
        mt_tensor *part = mt_tensor_new(MT_CPU, MT_I32, 2, (int64_t[]){B, n});
        for (int b = 0; b < B; b++)
            for (int j = 0; j < n; j++)
                mt_set(part, b * n + j, mt_get(ids, b * L + t + j));
        mt_tensor *part_gpu = tl_to_device(part, MT_CUDA);
        mt_tensor *lg = tl_to_device(mt_model_advance(&c, &m, part_gpu, &st, compute), MT_CPU);
        for (int b = 0; b < B; b++)
            for (int j = 0; j < n; j++)
                for (int64_t v = 0; v < V; v++)
                    mt_set(stepped, ((int64_t)b * L + t + j) * V + v, mt_get(lg, ((int64_t)b * n + j) * V + v));
        mt_tensor *tmp[] = {part, part_gpu, lg};
        tl_free_all(3, tmp);
        mt_ctx_end_step(&c);
        t += n;
    }
    double e = tl_rel_err(stepped, full);
    printf("decode %s on CUDA: prefill of %d + %d steps against the full forward: logits %.2e\n",
           mt_dtype_name(compute), P, L - P, e);
    assert_true(e <= bound);
    mt_model_state_release(&st);
    mt_tensor *all[] = {ids, ids_gpu, full, stepped};
    tl_free_all(4, all);
    mt_ctx_release(&c);
    mt_model_release(&m);
}

static void decode_f32(void **state)
{
    (void)state;
    decode_matches_full_forward(MT_F32, 1e-4);
}

static void decode_bf16(void **state)
{
    (void)state;
    decode_matches_full_forward(MT_BF16, 2e-2);
}

int main(void)
{
    gpu = tl_cuda_backend_or_exit();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(ssd_narrow_f32), cmocka_unit_test(ssd_narrow_bf16), cmocka_unit_test(ssd_wide_f32),
        cmocka_unit_test(ssd_wide_bf16),  cmocka_unit_test(ssd_odd_f32),        cmocka_unit_test(ssd_odd_bf16),
        cmocka_unit_test(ssd_reference_bf16), cmocka_unit_test(tiny_lm_f32),    cmocka_unit_test(tiny_lm_bf16),
        cmocka_unit_test(decode_f32),         cmocka_unit_test(decode_bf16),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    gpu->destroy(gpu);
    return failed;
}
