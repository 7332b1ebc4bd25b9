/* Activation checkpointing: a Mamba-2 LM with each mixer recomputed in the
 * backward gives bitwise the same loss and parameter gradients as the plain
 * model (packed documents included) and holds less in the step arena. */
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

/* Loss, every parameter gradient (flat, copied out) and the arena peak. */
static void loss_and_grads(mt_backend *be, mt_model *m, bool recompute, double *loss_out, float *grads,
                           size_t *peak)
{
    mt_ctx c;
    mt_ctx_init(&c, be, 0);
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
    *peak = c.arena.peak;
    memcpy(grads, m->params.grads, m->params.flat_size * sizeof(float));
    mt_tensor_free(ids);
    mt_tensor_free(targets);
    mt_tensor_free(seq);
    mt_ctx_release(&c);
}

static void recompute_matches_plain(void **state)
{
    (void)state;
    mt_model_config cfg;
    mt_model_config_defaults(&cfg);
    cfg.d_model = 32;
    cfg.n_layer = LAYERS;
    cfg.vocab_size = 50;
    cfg.d_state = 8;
    cfg.headdim = 8;
    cfg.chunk_size = 16;
    char err[256];
    assert_true(mt_model_config_finalize(&cfg, err, sizeof err));
    mt_backend *cpu = mt_backend_cpu_create();
    mt_model m;
    mt_model_build(&m, &cfg, MT_CPU, MT_F32);
    mt_model_init(&m, cpu, 5);
    const size_t n = m.params.flat_size;
    float *plain = malloc(n * sizeof *plain), *again = malloc(n * sizeof *again);
    double loss_plain, loss_again;
    size_t peak_plain, peak_again;
    loss_and_grads(cpu, &m, false, &loss_plain, plain, &peak_plain);
    loss_and_grads(cpu, &m, true, &loss_again, again, &peak_again);
    printf("recompute: loss %.9g vs %.9g; step arena peak %zu -> %zu bytes\n", loss_plain, loss_again, peak_plain,
           peak_again);
    assert_true(loss_plain == loss_again);
    double norm = 0;
    for (size_t i = 0; i < n; i++)
        norm += (double)plain[i] * plain[i];
    assert_true(norm > 0);
    assert_memory_equal(plain, again, n * sizeof *plain);
    assert_true(peak_again < peak_plain);
    free(plain);
    free(again);
    mt_model_release(&m);
    cpu->destroy(cpu);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(recompute_matches_plain)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
