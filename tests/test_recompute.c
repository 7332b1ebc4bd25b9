/* Step memory. Activation checkpointing: a Mamba-2 LM with each mixer
 * recomputed in the backward gives bitwise the same loss and parameter
 * gradients as the plain model (packed documents included) and holds less.
 * Transient activations (conv1d and norm outputs recomputed in the
 * backward, the blocks' outputs not kept at all) give bitwise the same as
 * keeping them, in both layer kinds, and hold less; a layer keeps exactly
 * what its backward reads; an op that reads one after a later op took its
 * buffer over is an error.
 * Activation gradients go back to the pool during the backward: the pool
 * holds the same for 8 layers as for 2; steps after the first allocate
 * nothing and repeat the first's loss and gradients bit for bit. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "autograd/ops.h"
#include "layers/model.h"
#include "testlib.h"

enum { B = 2, L = 40, LAYERS = 3 };

/* Loss, every parameter gradient (flat, copied out) and the step memory. */
static void loss_and_grads_kept(mt_backend *be, mt_model *m, bool recompute, bool keep_transients,
                                double *loss_out, float *grads, mt_ctx_memory *mem)
{
    mt_ctx c;
    mt_ctx_init(&c, be, 0);
    c.keep_transients = keep_transients;
    mt_tensor *ids = mt_tensor_new(MT_CPU, MT_I32, 2, (int64_t[]){B, L});
    mt_tensor *targets = mt_tensor_new(MT_CPU, MT_I32, 1, (int64_t[]){B * L});
    mt_tensor *seq = mt_tensor_new(MT_CPU, MT_I32, 2, (int64_t[]){B, L});
    for (int i = 0; i < B * L; i++) {
        mt_set(ids, i, (i * 7 + 3) % m->cfg.vocab_size);
        mt_set(targets, i, (i * 11 + 5) % m->cfg.vocab_size);
        mt_set(seq, i, (i % L) >= 25); /* two documents per row */
    }
    m->recompute_blocks = recompute;
    mt_params_zero_grad(&m->params);
    mt_tensor *logits = mt_model_logits(&c, m, ids, seq, MT_F32);
    mt_tensor *loss = mt_cross_entropy(&c, logits, targets, -100);
    assert_non_null(loss);
    *loss_out = mt_get(loss, 0);
    mt_backward(&c, loss);
    *mem = mt_ctx_memory_of(&c);
    memcpy(grads, m->params.grads, m->params.flat_size * sizeof(float));
    mt_tensor_free(ids);
    mt_tensor_free(targets);
    mt_tensor_free(seq);
    mt_ctx_release(&c);
}

static void loss_and_grads(mt_backend *be, mt_model *m, bool recompute, double *loss_out, float *grads,
                           mt_ctx_memory *mem)
{
    loss_and_grads_kept(be, m, recompute, false, loss_out, grads, mem);
}

static void tiny_config_of(mt_model_config *cfg, int layers, mt_layer_kind layer)
{
    mt_model_config_defaults(cfg);
    cfg->layer = layer;
    cfg->d_model = 32;
    cfg->n_layer = layers;
    cfg->vocab_size = 50;
    cfg->d_state = 8;
    cfg->headdim = 8;
    cfg->chunk_size = 16;
    char err[256];
    assert_true(mt_model_config_finalize(cfg, err, sizeof err));
}

static void tiny_config(mt_model_config *cfg, int layers)
{
    tiny_config_of(cfg, layers, MT_LAYER_MAMBA2);
}

/* A tiny Mamba-2 LM of `layers` layers, built and initialized on the CPU in f32. */
static void tiny_model(mt_model *m, mt_backend *cpu, int layers)
{
    mt_model_config cfg;
    tiny_config(&cfg, layers);
    mt_model_build(m, &cfg, MT_CPU, MT_F32);
    mt_model_init(m, cpu, 5);
}

static void recompute_matches_plain(void **state)
{
    (void)state;
    mt_backend *cpu = mt_backend_cpu_create();
    mt_model m;
    tiny_model(&m, cpu, LAYERS);
    const size_t n = m.params.flat_size;
    float *plain = malloc(n * sizeof *plain), *again = malloc(n * sizeof *again);
    double loss_plain, loss_again;
    mt_ctx_memory plain_mem, again_mem;
    loss_and_grads(cpu, &m, false, &loss_plain, plain, &plain_mem);
    loss_and_grads(cpu, &m, true, &loss_again, again, &again_mem);
    printf("recompute: loss %.9g vs %.9g; step memory %zu -> %zu bytes\n", loss_plain, loss_again, plain_mem.total,
           again_mem.total);
    assert_true(loss_plain == loss_again);
    double norm = 0;
    for (size_t i = 0; i < n; i++)
        norm += (double)plain[i] * plain[i];
    assert_true(norm > 0);
    assert_memory_equal(plain, again, n * sizeof *plain);
    assert_true(again_mem.total < plain_mem.total);
    free(plain);
    free(again);
    mt_model_release(&m);
    cpu->destroy(cpu);
}

static void transients_match_kept(void **state)
{
    (void)state;
    mt_backend *cpu = mt_backend_cpu_create();
    const mt_layer_kind kinds[] = {MT_LAYER_MAMBA2, MT_LAYER_MAMBA1};
    for (int k = 0; k < 2; k++) {
        mt_model_config cfg;
        tiny_config_of(&cfg, LAYERS, kinds[k]);
        mt_model m;
        mt_model_build(&m, &cfg, MT_CPU, MT_F32);
        mt_model_init(&m, cpu, 5);
        const size_t n = m.params.flat_size;
        float *kept = malloc(n * sizeof *kept), *made = malloc(n * sizeof *made);
        double loss_kept, loss_made;
        mt_ctx_memory kept_mem, made_mem;
        loss_and_grads_kept(cpu, &m, false, true, &loss_kept, kept, &kept_mem);
        loss_and_grads_kept(cpu, &m, false, false, &loss_made, made, &made_mem);
        /* Per layer the conv1d output (B, L, conv channels), in Mamba-2 the
         * gated norm's (B, L, d_inner), and the block's output (B, L,
         * d_model), which no backward reads; the LAYERS + 1 RMSNorms'
         * outputs (B, L, d_model). The buffers hold one of each size, and
         * two of d_model: a norm's output cannot go where its input is. */
        const int64_t conv = kinds[k] == MT_LAYER_MAMBA2 ? cfg.d_inner + 2 * cfg.ngroups * cfg.d_state : cfg.d_inner;
        const int64_t gated = kinds[k] == MT_LAYER_MAMBA2 ? cfg.d_inner : 0, rows = (int64_t)B * L;
        const int64_t transient = LAYERS * (conv + gated + cfg.d_model) + (LAYERS + 1) * cfg.d_model;
        const size_t saved = (size_t)(rows * (transient - (conv + gated + 2 * cfg.d_model))) * sizeof(float);
        printf("%s transients: loss %.9g vs %.9g; activations %zu -> %zu bytes (at least %zu less expected)\n",
               kinds[k] == MT_LAYER_MAMBA2 ? "mamba2" : "mamba1", loss_kept, loss_made, kept_mem.activations,
               made_mem.activations, saved);
        assert_true(loss_kept == loss_made);
        assert_memory_equal(kept, made, n * sizeof *kept);
        assert_true(made_mem.activations + saved <= kept_mem.activations);
        free(kept);
        free(made);
        mt_model_release(&m);
    }
    cpu->destroy(cpu);
}

static void evicted_transient_is_an_error(void **state)
{
    (void)state;
    mt_backend *cpu = mt_backend_cpu_create();
    mt_ctx c;
    mt_ctx_init(&c, cpu, 0);
    c.abort_on_error = false;
    mt_tensor *x = mt_ctx_tensor(&c, MT_F32, 3, (int64_t[]){1, 6, 4});
    mt_tensor *w = mt_ctx_tensor(&c, MT_F32, 2, (int64_t[]){4, 3});
    for (int i = 0; i < 24; i++)
        mt_set(x, i, 0.1 * i - 1);
    for (int i = 0; i < 12; i++)
        mt_set(w, i, 0.05 * i);
    w->requires_grad = true;
    mt_tensor *a = mt_conv1d_silu(&c, x, w, NULL, NULL, NULL);
    mt_tensor *b = mt_conv1d_silu(&c, x, w, NULL, NULL, NULL);
    assert_non_null(a);
    assert_non_null(b);
    assert_ptr_equal(a->data, b->data); /* b took a's buffer over */
    assert_null(mt_ctx_error(&c));
    assert_non_null(mt_add(&c, b, b));
    assert_null(mt_ctx_error(&c));
    mt_add(&c, a, b);
    assert_non_null(mt_ctx_error(&c));
    assert_non_null(strstr(mt_ctx_error(&c), "transient"));
    mt_ctx_release(&c);
    cpu->destroy(cpu);
}

/* The step memory of a plain model of `layers` layers. */
static mt_ctx_memory memory_of(mt_backend *cpu, int layers)
{
    mt_model m;
    tiny_model(&m, cpu, layers);
    float *grads = malloc(m.params.flat_size * sizeof *grads);
    double loss;
    mt_ctx_memory mem;
    loss_and_grads(cpu, &m, false, &loss, grads, &mem);
    free(grads);
    mt_model_release(&m);
    return mem;
}

static void gradients_do_not_grow_with_depth(void **state)
{
    (void)state;
    mt_backend *cpu = mt_backend_cpu_create();
    mt_ctx_memory two = memory_of(cpu, 2), eight = memory_of(cpu, 8);
    printf("2 layers: activations %zu, their gradients %zu bytes; 8 layers: %zu, %zu bytes\n", two.activations,
           two.gradients, eight.activations, eight.gradients);
    assert_true(eight.activations > 3 * two.activations); /* the model did grow */
    assert_true(two.gradients > 0);
    assert_true(eight.gradients == two.gradients);
    cpu->destroy(cpu);
}

/* What a Mamba-2 layer keeps in the step arena for its backward, from the
 * growth between 2 and 8 layers: in_proj's output, the SSD's output, the
 * gated norm's rstd and the RMSNorm's r and rstd, each rounded up to the
 * arena's alignment; nothing of the transients (the block's output among
 * them). */
static void a_layer_keeps_what_its_backward_reads(void **state)
{
    (void)state;
    mt_backend *cpu = mt_backend_cpu_create();
    mt_model_config cfg;
    tiny_config(&cfg, 2);
    const size_t rows = (size_t)B * L, f = sizeof(float);
    const size_t sizes[] = {rows * (size_t)cfg.in_proj_dim * f, rows * (size_t)cfg.d_inner * f,
                            rows * (size_t)cfg.ngroups * f, rows * (size_t)cfg.d_model * f, rows * f};
    size_t kept = 0;
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++)
        kept += (sizes[i] + MT_ARENA_ALIGN - 1) / MT_ARENA_ALIGN * MT_ARENA_ALIGN;
    mt_ctx_memory two = memory_of(cpu, 2), eight = memory_of(cpu, 8);
    const size_t per_layer = (eight.activations - two.activations) / 6;
    printf("a layer keeps %zu bytes (%zu expected)\n", per_layer, kept);
    assert_int_equal(eight.activations - two.activations, 6 * kept);
    cpu->destroy(cpu);
}

/* Three steps on one ctx (the parameters unchanged): the same loss and
 * parameter gradients bit for bit each time (reused gradient buffers are
 * zeroed again), and after the first step no device memory is allocated. */
static void later_steps_reuse_memory(void **state)
{
    (void)state;
    mt_backend *cpu = mt_backend_cpu_create();
    mt_model m;
    tiny_model(&m, cpu, LAYERS);
    mt_tensor *ids = mt_tensor_new(MT_CPU, MT_I32, 2, (int64_t[]){B, L});
    mt_tensor *targets = mt_tensor_new(MT_CPU, MT_I32, 1, (int64_t[]){B * L});
    for (int i = 0; i < B * L; i++) {
        mt_set(ids, i, (i * 7 + 3) % m.cfg.vocab_size);
        mt_set(targets, i, (i * 11 + 5) % m.cfg.vocab_size);
    }
    const size_t n = m.params.flat_size;
    float *first = malloc(n * sizeof *first);
    mt_ctx c;
    mt_ctx_init(&c, cpu, 0);
    double loss0 = 0;
    size_t allocs[3] = {0};
    for (int step = 0; step < 3; step++) {
        mt_params_zero_grad(&m.params);
        mt_tensor *loss = mt_cross_entropy(&c, mt_model_logits(&c, &m, ids, NULL, MT_F32), targets, -100);
        double l = mt_get(loss, 0);
        mt_backward(&c, loss);
        mt_ctx_end_step(&c);
        if (step == 0) {
            loss0 = l;
            memcpy(first, m.params.grads, n * sizeof *first);
            allocs[0] = c.arena.device_allocs;
            allocs[1] = c.grads.device_allocs;
            allocs[2] = c.scratch.device_allocs;
            continue;
        }
        assert_true(l == loss0);
        assert_memory_equal(first, m.params.grads, n * sizeof *first);
        assert_int_equal(c.grads.device_allocs, allocs[1]);
        assert_int_equal(c.scratch.device_allocs, allocs[2]);
        assert_int_equal(c.arena.device_allocs, allocs[0]);
    }
    printf("3 steps: device allocations after the first: step arena %zu, gradient pool %zu, scratch %zu\n",
           allocs[0], allocs[1], allocs[2]);
    mt_ctx_release(&c);
    free(first);
    mt_tensor_free(ids);
    mt_tensor_free(targets);
    mt_model_release(&m);
    cpu->destroy(cpu);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(recompute_matches_plain),
                                       cmocka_unit_test(transients_match_kept),
                                       cmocka_unit_test(evicted_transient_is_an_error),
                                       cmocka_unit_test(gradients_do_not_grow_with_depth),
                                       cmocka_unit_test(a_layer_keeps_what_its_backward_reads),
                                       cmocka_unit_test(later_steps_reuse_memory)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
