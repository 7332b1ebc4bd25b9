/* The Mamba-2 block and language model on the CPU: f64 gradient checks of one
 * block and of a 2-layer model (every parameter), document packing with
 * seq_idx, and the reference initialization's statistics. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "layers/model.h"
#include "optim/sgd.h"
#include "testlib.h"

#define GRADCHECK_BOUND 1e-6

static mt_backend *cpu;

/* A model small enough for finite differences: 2 groups, 4 heads of 4, L not
 * a multiple of anything. dt and A are drawn from wider ranges than the
 * reference's so that their gradients are not too small to difference. */
static mt_model_config tiny_config(int n_layer)
{
    mt_model_config cfg;
    mt_model_config_defaults(&cfg);
    cfg.d_model = 8;
    cfg.n_layer = n_layer;
    cfg.vocab_size = 11;
    cfg.d_state = 3;
    cfg.headdim = 4;
    cfg.ngroups = 2;
    cfg.chunk_size = 16;
    cfg.dt_min = 0.05;
    cfg.dt_max = 0.5;
    cfg.A_init_max = 4;
    char err[256];
    if (!mt_model_config_finalize(&cfg, err, sizeof err))
        fail_msg("tiny config: %s", err);
    return cfg;
}

typedef struct block_arg {
    mt_model *m;
    mt_tensor *u, *seq_idx;
} block_arg;

static int run_block(mt_ctx *c, void *arg, mt_tensor **out)
{
    block_arg *a = arg;
    out[0] = mt_mamba2_forward(c, (mt_mamba2 *)a->m->layers[0].block, &a->m->cfg, a->u, a->seq_idx);
    return 1;
}

static void test_block_gradcheck(void **state)
{
    (void)state;
    mt_model_config cfg = tiny_config(1);
    mt_model m;
    mt_model_build(&m, &cfg, MT_CPU, MT_F64);
    mt_model_init(&m, cpu, 5);
    mt_tensor *u = mt_tensor_new(MT_CPU, MT_F64, 3, (int64_t[]){2, 7, cfg.d_model});
    cpu->fill_uniform(cpu, u, 6, -1, 1);
    u->requires_grad = true;
    mt_tensor *seq = mt_tensor_new(MT_CPU, MT_I32, 2, (int64_t[]){2, 7});
    for (int i = 0; i < 14; i++)
        mt_set(seq, i, i % 7 >= 4 && i >= 7); /* the second row packs two documents */
    block_arg arg = {&m, u, seq};
    mt_tensor *wrt[64];
    const char *names[64];
    int n = 0;
    mt_mamba2 *x = (mt_mamba2 *)m.layers[0].block;
    mt_tensor *targets[] = {u, x->in_proj, x->conv_w, x->conv_b, x->dt_bias, x->A_log, x->D, x->norm_w, x->out_proj};
    const char *target_names[] = {"u", "in_proj", "conv1d.weight", "conv1d.bias", "dt_bias", "A_log", "D",
                                  "norm.weight", "out_proj"};
    for (; n < 9; n++) {
        wrt[n] = targets[n];
        names[n] = target_names[n];
    }
    double err = tl_gradcheck_fn("mamba2_block", run_block, &arg, n, wrt, names, 3, 60);
    if (!(err <= GRADCHECK_BOUND))
        fail_msg("block gradient relative error %.3e exceeds %.0e", err, GRADCHECK_BOUND);
    mt_tensor_free(u);
    mt_tensor_free(seq);
    mt_model_release(&m);
}

static void test_tiny_lm_gradcheck(void **state)
{
    (void)state;
    mt_model_config cfg = tiny_config(2);
    mt_model m;
    mt_model_build(&m, &cfg, MT_CPU, MT_F64);
    mt_model_init(&m, cpu, 8);
    assert_int_equal(cfg.vocab_padded, 16);
    double err = tl_gradcheck_lm(&m, "tiny_lm", 2, 5);
    if (!(err <= GRADCHECK_BOUND))
        fail_msg("tiny LM gradient relative error %.3e exceeds %.0e", err, GRADCHECK_BOUND);
    mt_model_release(&m);
}

/* A row packing documents [a | b] with seq_idx gives, for b, the outputs and
 * gradients of b alone: no state crosses the boundary, in the conv or the scan. */
static void test_packed_documents_do_not_leak(void **state)
{
    (void)state;
    enum { LA = 5, LB = 6 };
    mt_model_config cfg = tiny_config(1);
    mt_model m;
    mt_model_build(&m, &cfg, MT_CPU, MT_F64);
    mt_model_init(&m, cpu, 11);
    int64_t d = cfg.d_model;
    mt_tensor *packed = mt_tensor_new(MT_CPU, MT_F64, 3, (int64_t[]){1, LA + LB, d});
    mt_tensor *alone = mt_tensor_new(MT_CPU, MT_F64, 3, (int64_t[]){1, LB, d});
    mt_tensor *seq = mt_tensor_new(MT_CPU, MT_I32, 2, (int64_t[]){1, LA + LB});
    cpu->fill_uniform(cpu, packed, 12, -1, 1);
    for (int64_t i = 0; i < LB * d; i++)
        mt_set(alone, i, mt_get(packed, LA * d + i));
    for (int t = 0; t < LA + LB; t++)
        mt_set(seq, t, t >= LA ? 3 : 2);
    packed->requires_grad = alone->requires_grad = true;

    /* Upstream gradient: random on b's outputs, zero on a's. */
    mt_tensor *dy_packed = mt_tensor_new(MT_CPU, MT_F64, 3, (int64_t[]){1, LA + LB, d});
    mt_tensor *dy_alone = mt_tensor_new(MT_CPU, MT_F64, 3, (int64_t[]){1, LB, d});
    cpu->fill_uniform(cpu, dy_alone, 13, -1, 1);
    for (int64_t i = 0; i < (LA + LB) * d; i++)
        mt_set(dy_packed, i, i < LA * d ? 0.0 : mt_get(dy_alone, i - LA * d));

    mt_ctx c;
    mt_ctx_init(&c, cpu, 1 << 20);
    double *grads_alone = calloc(m.params.flat_size, sizeof *grads_alone);
    mt_tensor *y_alone = mt_mamba2_forward(&c, (mt_mamba2 *)m.layers[0].block, &cfg, alone, NULL);
    mt_backward_seeded(&c, 1, &y_alone, &dy_alone);
    mt_tensor *y_packed = mt_mamba2_forward(&c, (mt_mamba2 *)m.layers[0].block, &cfg, packed, seq);
    memcpy(grads_alone, m.params.grads, m.params.flat_size * sizeof(double));
    mt_params_zero_grad(&m.params);
    mt_backward_seeded(&c, 1, &y_packed, &dy_packed);

    double worst = 0;
    for (int64_t i = 0; i < LB * d; i++) {
        worst = fmax(worst, fabs(mt_get(y_packed, LA * d + i) - mt_get(y_alone, i)));
        worst = fmax(worst, fabs(mt_get(packed->grad, LA * d + i) - mt_get(alone->grad, i)));
    }
    for (size_t i = 0; i < m.params.flat_size; i++)
        worst = fmax(worst, fabs(((double *)m.params.grads)[i] - grads_alone[i]));
    printf("packed [a|b] vs b alone: largest difference %.3e\n", worst);
    assert_true(worst < 1e-12);
    mt_ctx_release(&c);
    free(grads_alone);
    mt_tensor *all[] = {packed, alone, seq, dy_packed, dy_alone};
    tl_free_all(5, all);
    mt_model_release(&m);
}

static double param_value(mt_model *m, const char *name, int64_t i)
{
    mt_param *p = mt_params_find(&m->params, name);
    if (!p)
        fail_msg("no parameter %s", name);
    return mt_get(&p->value, i);
}

static void test_reference_initialization(void **state)
{
    (void)state;
    mt_model_config cfg;
    mt_model_config_defaults(&cfg);
    cfg.d_model = 256;
    cfg.n_layer = 16;
    cfg.vocab_size = 1000;
    cfg.headdim = 16; /* 32 heads a layer: 512 dt and A samples */
    cfg.d_state = 16;
    char err[256];
    assert_true(mt_model_config_finalize(&cfg, err, sizeof err));
    mt_model m;
    mt_model_build(&m, &cfg, MT_CPU, MT_F32);
    mt_model_init(&m, cpu, 1);

    int n = 0, below_mid = 0;
    double sum_log = 0, log_mid = 0.5 * (log(cfg.dt_min) + log(cfg.dt_max));
    for (int l = 0; l < cfg.n_layer; l++) {
        mt_mamba2 *x = (mt_mamba2 *)m.layers[l].block;
        assert_true(mt_params_find(&m.params, x->dt_bias->name)->flags & MT_PARAM_NO_REINIT);
        assert_true(mt_params_find(&m.params, x->A_log->name)->flags & MT_PARAM_NO_DECAY);
        for (int h = 0; h < cfg.nheads; h++) {
            double b = mt_get(x->dt_bias, h), dt = b > 20 ? b : log1p(exp(b));
            assert_true(dt >= cfg.dt_min * (1 - 1e-5) && dt <= cfg.dt_max * (1 + 1e-5));
            sum_log += log(dt);
            below_mid += log(dt) < log_mid;
            double A = -exp(mt_get(x->A_log, h));
            assert_true(A <= -cfg.A_init_min * (1 - 1e-6) && A >= -cfg.A_init_max * (1 + 1e-6));
            assert_true(mt_get(x->D, h) == 1.0);
            n++;
        }
        double bound = 1 / sqrt((double)cfg.d_inner) / sqrt((double)cfg.n_layer), most = 0;
        for (int64_t i = 0; i < mt_numel(x->out_proj); i++)
            most = fmax(most, fabs(mt_get(x->out_proj, i)));
        assert_true(most <= bound && most > 0.9 * bound);
    }
    /* log(dt) is uniform on [log dt_min, log dt_max]: its mean is the midpoint,
     * half the samples lie below it (standard errors ~0.06 and ~0.02). */
    double spread = log(cfg.dt_max) - log(cfg.dt_min);
    printf("init: %d dt samples, mean log dt %.3f (midpoint %.3f), %.3f below the midpoint\n", n, sum_log / n,
           log_mid, (double)below_mid / n);
    assert_true(fabs(sum_log / n - log_mid) < 0.1 * spread);
    assert_true(fabs((double)below_mid / n - 0.5) < 0.08);

    double sq = 0;
    int64_t ne = mt_numel(m.embedding);
    for (int64_t i = 0; i < ne; i++)
        sq += mt_get(m.embedding, i) * mt_get(m.embedding, i);
    assert_true(fabs(sqrt(sq / ne) - 0.02) < 0.001);
    assert_true(m.lm_head == m.embedding);
    assert_true(param_value(&m, "backbone.norm_f.weight", 0) == 1.0);
    assert_true(param_value(&m, "backbone.layers.3.mixer.norm.weight", 5) == 1.0);
    mt_model_release(&m);
}

/* A 2-layer Mamba-2 LM with the tied head, trained with plain SGD on the CPU,
 * learns a sequence whose next token is a fixed function of the current one. */
static void test_tiny_mamba2_lm_learns(void **state)
{
    (void)state;
    enum { STEPS = 120 };
    mt_model_config cfg = tiny_config(2);
    cfg.d_model = 32;
    cfg.headdim = 8;
    char err[256];
    assert_true(mt_model_config_finalize(&cfg, err, sizeof err));
    mt_model m;
    mt_model_build(&m, &cfg, MT_CPU, MT_F32);
    mt_model_init(&m, cpu, 17);
    double first, last = tl_train_sequence_lm(cpu, &m, "tiny Mamba-2 LM", STEPS, &first);
    assert_true(first > 0.8 * log(cfg.vocab_size));
    assert_true(last < 0.2);
    mt_model_release(&m);
}

static void test_config_errors_name_the_field(void **state)
{
    (void)state;
    mt_model_config cfg;
    char err[256];
    mt_model_config_defaults(&cfg);
    cfg.headdim = 100;
    assert_false(mt_model_config_finalize(&cfg, err, sizeof err));
    assert_non_null(strstr(err, "headdim"));
    mt_model_config_defaults(&cfg);
    cfg.ngroups = 5;
    assert_false(mt_model_config_finalize(&cfg, err, sizeof err));
    assert_non_null(strstr(err, "ngroups"));
    mt_model_config_defaults(&cfg);
    assert_true(mt_model_config_finalize(&cfg, err, sizeof err));
    assert_int_equal(cfg.vocab_padded, 50280);
    assert_int_equal(cfg.in_proj_dim, 2 * 1536 + 2 * 128 + 24);
}

int main(void)
{
    cpu = mt_backend_cpu_create();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config_errors_name_the_field),
        cmocka_unit_test(test_reference_initialization),
        cmocka_unit_test(test_block_gradcheck),
        cmocka_unit_test(test_tiny_lm_gradcheck),
        cmocka_unit_test(test_packed_documents_do_not_leak),
        cmocka_unit_test(test_tiny_mamba2_lm_learns),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    cpu->destroy(cpu);
    return failed;
}
