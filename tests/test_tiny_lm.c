/* The first end-to-end proof: a tiny language model (embedding -> RMSNorm ->
 * lm_head) trained with plain SGD on the CPU learns a built-in sequence whose
 * next token is a fixed function of the current one. Untrained, its loss is
 * about log(vocab); trained, it must fall far below. The lm_head is not tied:
 * a tied head scores x -> y like y -> x, so it cannot tell a token's successor
 * from its predecessor in this sequence. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <cmocka.h>

#include "core/params.h"
#include "optim/sgd.h"
#include "testlib.h"

enum { VOCAB = 16, DIM = 32, BATCH = 4, SEQ = 24, STEPS = 150 };

/* Token i of the sequence: each token is followed by (5 * token + 3) mod 16. */
static int sequence_token(int i)
{
    int t = 1;
    for (int k = 0; k < i % VOCAB; k++)
        t = (5 * t + 3) % VOCAB;
    return t;
}

static void test_tiny_lm_learns_the_sequence(void **state)
{
    (void)state;
    mt_backend *cpu = mt_backend_cpu_create();
    mt_params p;
    mt_params_init(&p, MT_CPU, MT_F32);
    mt_tensor *emb = mt_params_add(&p, "embedding.weight", 2, (int64_t[]){VOCAB, DIM}, 0);
    mt_tensor *norm = mt_params_add(&p, "norm.weight", 1, (int64_t[]){DIM}, MT_PARAM_NO_DECAY);
    mt_tensor *head = mt_params_add(&p, "lm_head.weight", 2, (int64_t[]){VOCAB, DIM}, 0);
    mt_params_alloc(&p);
    cpu->fill_normal(cpu, emb, 1234, 0.0, 0.5);
    cpu->fill_normal(cpu, head, 4321, 0.0, 0.5);
    cpu->fill_uniform(cpu, norm, 0, 1.0, 1.0);

    mt_tensor *inputs = mt_tensor_new(MT_CPU, MT_I32, 2, (int64_t[]){BATCH, SEQ});
    mt_tensor *targets = mt_tensor_new(MT_CPU, MT_I32, 1, (int64_t[]){BATCH * SEQ});
    for (int b = 0; b < BATCH; b++)
        for (int t = 0; t < SEQ; t++) {
            mt_set(inputs, b * SEQ + t, sequence_token(7 * b + t));
            mt_set(targets, b * SEQ + t, sequence_token(7 * b + t + 1));
        }

    mt_ctx c;
    mt_ctx_init(&c, cpu, 0);
    double first = 0, last = 0;
    size_t allocs_after_warmup = 0;
    for (int step = 0; step < STEPS; step++) {
        mt_tensor *residual;
        mt_tensor *h = mt_rmsnorm(&c, mt_embedding(&c, emb, inputs), NULL, norm, 1e-5, &residual);
        mt_tensor *logits = mt_ctx_reshape(&c, mt_linear(&c, h, head, NULL), 2, (int64_t[]){BATCH * SEQ, VOCAB});
        mt_tensor *loss = mt_cross_entropy(&c, logits, targets, TL_IGNORE);
        (void)residual;
        last = mt_get(loss, 0);
        if (step == 0)
            first = last;
        mt_backward(&c, loss);
        mt_sgd_step(cpu, &p, 0.5);
        mt_params_zero_grad(&p);
        mt_ctx_end_step(&c);
        if (step == 1)
            allocs_after_warmup = c.arena.device_allocs;
    }
    printf("tiny LM: loss %.4f at step 0, %.4f after %d steps (log vocab %.4f); step memory %zu bytes\n", first,
           last, STEPS, log(VOCAB), mt_ctx_memory_of(&c).total);
    assert_true(first > 0.8 * log(VOCAB));
    assert_true(last < 0.1);
    assert_int_equal(c.arena.device_allocs, allocs_after_warmup);

    mt_ctx_release(&c);
    mt_tensor_free(inputs);
    mt_tensor_free(targets);
    mt_params_release(&p);
    cpu->destroy(cpu);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_tiny_lm_learns_the_sequence)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
