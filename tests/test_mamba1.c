/* The Mamba-1 block and language model on the CPU: f64 gradient checks of one
 * block and of a 2-layer model (every parameter), the reference keys and
 * shapes, the reference initialization's statistics, activation
 * checkpointing, config errors and the config.json round trip. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "layers/config_json.h"
#include "layers/model.h"
#include "optim/sgd.h"
#include "testlib.h"

#define GRADCHECK_BOUND 1e-6

static mt_backend *cpu;
static char err[1024];

static void finalize_or_fail(mt_model_config *cfg)
{
    if (!mt_model_config_finalize(cfg, err, sizeof err))
        fail_msg("config: %s", err);
}

static void expect_error(const char *phrase)
{
    if (!strstr(err, phrase))
        fail_msg("error \"%s\" should contain \"%s\"", err, phrase);
}

/* A model small enough for finite differences: d_inner 16, dt_rank 2, L not a
 * multiple of anything. dt is drawn from a wider range than the reference's
 * so that its gradients are not too small to difference (and see
 * gradcheck_point). */
static mt_model_config tiny_config(int n_layer)
{
    mt_model_config cfg;
    mt_model_config_defaults(&cfg);
    mt_model_config_use_mamba1(&cfg);
    cfg.d_model = 8;
    cfg.n_layer = n_layer;
    cfg.vocab_size = 11;
    cfg.d_state = 3;
    cfg.dt_rank = 2;
    cfg.dt_min = 0.05;
    cfg.dt_max = 0.5;
    finalize_or_fail(&cfg);
    return cfg;
}

/* Moves m's parameters to where finite differences resolve every gradient
 * well above the rounding of the objective: the reference's A_log =
 * log(1..N) decays fast and its zeros get the smallest difference step, and
 * its x_proj, embedding and head are small enough to make the gradients
 * through dt, B and C tiny. */
static void gradcheck_point(mt_model *m)
{
    for (int l = 0; l < m->cfg.n_layer; l++) {
        cpu->fill_uniform(cpu, ((mt_mamba1 *)m->layers[l].block)->A_log, 40 + (uint64_t)l, -1.5, 0.5);
        cpu->fill_uniform(cpu, ((mt_mamba1 *)m->layers[l].block)->x_proj, 50 + (uint64_t)l, -1, 1);
    }
    cpu->fill_normal(cpu, m->embedding, 41, 0, 1);
}

typedef struct block_arg {
    mt_model *m;
    mt_tensor *u;
} block_arg;

static int run_block(mt_ctx *c, void *arg, mt_tensor **out)
{
    block_arg *a = arg;
    out[0] = mt_mamba1_forward(c, (mt_mamba1 *)a->m->layers[0].block, &a->m->cfg, a->u);
    return 1;
}

static void test_block_gradcheck(void **state)
{
    (void)state;
    mt_model_config cfg = tiny_config(1);
    mt_model m;
    mt_model_build(&m, &cfg, MT_CPU, MT_F64);
    mt_model_init(&m, cpu, 5);
    gradcheck_point(&m);
    mt_tensor *u = mt_tensor_new(MT_CPU, MT_F64, 3, (int64_t[]){2, 7, cfg.d_model});
    cpu->fill_uniform(cpu, u, 6, -1, 1);
    u->requires_grad = true;
    block_arg arg = {&m, u};
    mt_mamba1 *x = (mt_mamba1 *)m.layers[0].block;
    mt_tensor *wrt[] = {u, x->in_proj, x->conv_w, x->conv_b, x->x_proj, x->dt_proj, x->dt_bias, x->A_log, x->D,
                        x->out_proj};
    const char *names[] = {"u",         "in_proj.weight", "conv1d.weight", "conv1d.bias", "x_proj.weight",
                           "dt_proj.weight", "dt_proj.bias", "A_log",       "D",          "out_proj.weight"};
    enum { N = sizeof wrt / sizeof wrt[0] };
    double e = tl_gradcheck_fn("mamba1_block", run_block, &arg, N, wrt, names, 3, 60);
    printf("Mamba-1 block gradcheck: max relative error %.3e\n", e);
    if (!(e <= GRADCHECK_BOUND))
        fail_msg("block gradient relative error %.3e exceeds %.0e", e, GRADCHECK_BOUND);
    mt_tensor_free(u);
    mt_model_release(&m);
}

static void test_tiny_lm_gradcheck(void **state)
{
    (void)state;
    mt_model_config cfg = tiny_config(2);
    mt_model m;
    mt_model_build(&m, &cfg, MT_CPU, MT_F64);
    mt_model_init(&m, cpu, 8);
    gradcheck_point(&m);
    double e = tl_gradcheck_lm(&m, "mamba1_lm", 2, 12);
    printf("2-layer Mamba-1 LM gradcheck: max relative error %.3e\n", e);
    if (!(e <= GRADCHECK_BOUND))
        fail_msg("tiny LM gradient relative error %.3e exceeds %.0e", e, GRADCHECK_BOUND);
    mt_model_release(&m);
}

typedef struct expected_param {
    const char *name;
    int ndim;
    int64_t shape[3];
} expected_param;

static void expect_param(const mt_param *p, const char *name, const expected_param *want)
{
    assert_string_equal(p->name, name);
    assert_int_equal(p->value.ndim, want->ndim);
    for (int d = 0; d < want->ndim; d++)
        if (p->value.shape[d] != want->shape[d])
            fail_msg("%s: dim %d is %lld, the reference's %lld", name, d, (long long)p->value.shape[d],
                     (long long)want->shape[d]);
}

/* The keys and shapes of a reference Mamba-1 checkpoint: d_model 40 (dt_rank
 * "auto" = 3), d_inner 80, d_state 4, d_conv 3, vocab 50 padded to 56. */
static void test_reference_keys_and_shapes(void **state)
{
    (void)state;
    mt_model_config cfg;
    mt_model_config_defaults(&cfg);
    mt_model_config_use_mamba1(&cfg);
    cfg.d_model = 40;
    cfg.n_layer = 2;
    cfg.vocab_size = 50;
    cfg.d_state = 4;
    cfg.d_conv = 3;
    finalize_or_fail(&cfg);
    assert_int_equal(cfg.dt_proj_rank, 3);
    mt_model m;
    mt_model_build(&m, &cfg, MT_CPU, MT_F32);
    const expected_param layer[] = {
        {"norm.weight", 1, {40}},               {"mixer.in_proj.weight", 2, {160, 40}},
        {"mixer.conv1d.weight", 3, {80, 1, 3}}, {"mixer.conv1d.bias", 1, {80}},
        {"mixer.x_proj.weight", 2, {11, 80}},   {"mixer.dt_proj.weight", 2, {80, 3}},
        {"mixer.dt_proj.bias", 1, {80}},        {"mixer.A_log", 2, {80, 4}},
        {"mixer.D", 1, {80}},                   {"mixer.out_proj.weight", 2, {40, 80}},
    };
    enum { PER_LAYER = sizeof layer / sizeof layer[0] };
    const expected_param embedding = {"backbone.embedding.weight", 2, {56, 40}},
                         norm_f = {"backbone.norm_f.weight", 1, {40}};
    assert_int_equal(m.params.n, 2 + 2 * PER_LAYER);
    expect_param(m.params.items[0], embedding.name, &embedding);
    for (int l = 0; l < 2; l++)
        for (int i = 0; i < PER_LAYER; i++) {
            char name[MT_PARAM_NAME_MAX];
            snprintf(name, sizeof name, "backbone.layers.%d.%s", l, layer[i].name);
            expect_param(m.params.items[1 + l * PER_LAYER + i], name, &layer[i]);
        }
    expect_param(m.params.items[1 + 2 * PER_LAYER], norm_f.name, &norm_f);
    const mt_params *p = &m.params;
    assert_int_equal(mt_params_find(p, "backbone.layers.1.mixer.dt_proj.bias")->flags,
                     MT_PARAM_NO_DECAY | MT_PARAM_NO_REINIT);
    assert_int_equal(mt_params_find(p, "backbone.layers.1.mixer.A_log")->flags, MT_PARAM_NO_DECAY);
    assert_int_equal(mt_params_find(p, "backbone.layers.1.mixer.D")->flags, MT_PARAM_NO_DECAY);
    assert_int_equal(mt_params_find(p, "backbone.layers.1.mixer.x_proj.weight")->flags, 0);
    mt_model_release(&m);

    /* Without conv_bias there is no conv1d.bias, and the model still runs. */
    cfg.conv_bias = false;
    cfg.tie_embeddings = false;
    finalize_or_fail(&cfg);
    mt_model_build(&m, &cfg, MT_CPU, MT_F32);
    mt_model_init(&m, cpu, 2);
    assert_null(mt_params_find(&m.params, "backbone.layers.0.mixer.conv1d.bias"));
    assert_non_null(mt_params_find(&m.params, "lm_head.weight"));
    assert_int_equal(m.params.n, 2 + 2 * (PER_LAYER - 1) + 1); /* less the conv biases, with lm_head */
    mt_ctx c;
    mt_ctx_init(&c, cpu, 0);
    mt_tensor *ids = mt_tensor_new(MT_CPU, MT_I32, 2, (int64_t[]){1, 6});
    for (int i = 0; i < 6; i++)
        mt_set(ids, i, i);
    mt_tensor *logits = mt_model_logits(&c, &m, ids, NULL, MT_F32);
    if (!logits)
        fail_msg("forward without conv bias: %s", mt_ctx_error(&c));
    assert_false(tl_has_nan(logits));
    mt_ctx_release(&c);
    mt_tensor_free(ids);
    mt_model_release(&m);
}

/* n log(dt) samples against the uniform distribution on [log lo, log hi]:
 * mean at the midpoint, half below it, variance spread^2 / 12. */
static void expect_log_uniform(const double *log_dt, int n, double lo, double hi)
{
    double mid = 0.5 * (log(lo) + log(hi)), spread = log(hi) - log(lo), sum = 0, sq = 0;
    int below = 0;
    for (int i = 0; i < n; i++) {
        sum += log_dt[i];
        below += log_dt[i] < mid;
    }
    double mean = sum / n;
    for (int i = 0; i < n; i++)
        sq += (log_dt[i] - mean) * (log_dt[i] - mean);
    double var_ratio = sq / (n - 1) / (spread * spread / 12);
    printf("init: %d dt samples, mean log dt %.3f (midpoint %.3f), %.3f below the midpoint, variance %.3f of "
           "the log-uniform's\n",
           n, mean, mid, (double)below / n, var_ratio);
    /* Standard errors with 512 samples: 0.013 spread, 0.022, 0.04. */
    assert_true(fabs(mean - mid) < 0.06 * spread);
    assert_true(fabs((double)below / n - 0.5) < 0.08);
    assert_true(fabs(var_ratio - 1) < 0.15);
}

static double largest_abs(const mt_tensor *t)
{
    double most = 0;
    for (int64_t i = 0; i < mt_numel(t); i++)
        most = fmax(most, fabs(mt_get(t, i)));
    return most;
}

/* Uniform weights fill their bound: the largest is within 10% of it. */
static void expect_uniform_bound(const mt_tensor *t, double bound)
{
    double most = largest_abs(t);
    if (!(most <= bound * (1 + 1e-6) && most > 0.9 * bound))
        fail_msg("%s: largest |w| %.6g, expected just under %.6g", t->name, most, bound);
}

static void test_reference_initialization(void **state)
{
    (void)state;
    mt_model_config cfg;
    mt_model_config_defaults(&cfg);
    mt_model_config_use_mamba1(&cfg);
    cfg.d_model = 64; /* d_inner 128, dt_rank 4 */
    cfg.n_layer = 4;  /* 512 dt samples */
    cfg.vocab_size = 1000;
    cfg.dt_scale = 1.5;
    finalize_or_fail(&cfg);
    mt_model m;
    mt_model_build(&m, &cfg, MT_CPU, MT_F32);
    mt_model_init(&m, cpu, 1);

    double log_dt[512];
    int n = 0;
    for (int l = 0; l < cfg.n_layer; l++) {
        mt_mamba1 *x = (mt_mamba1 *)m.layers[l].block;
        for (int64_t d = 0; d < cfg.d_inner; d++) {
            double b = mt_get(x->dt_bias, d), dt = b > 20 ? b : log1p(exp(b));
            assert_true(dt >= cfg.dt_min * (1 - 1e-5) && dt <= cfg.dt_max * (1 + 1e-5));
            log_dt[n++] = log(dt);
            assert_true(mt_get(x->D, d) == 1.0);
            for (int64_t s = 0; s < cfg.d_state; s++) /* A = -(1, 2, ..., d_state) in every channel */
                assert_true(fabs(mt_get(x->A_log, d * cfg.d_state + s) - log((double)(s + 1))) < 1e-6);
        }
        expect_uniform_bound(x->dt_proj, cfg.dt_scale / sqrt((double)cfg.dt_proj_rank));
        expect_uniform_bound(x->in_proj, 1 / sqrt((double)cfg.d_model));
        expect_uniform_bound(x->x_proj, 1 / sqrt((double)cfg.d_inner));
        expect_uniform_bound(x->conv_w, 1 / sqrt((double)cfg.d_conv));
        expect_uniform_bound(x->conv_b, 1 / sqrt((double)cfg.d_conv));
        expect_uniform_bound(x->out_proj, 1 / sqrt((double)cfg.d_inner) / sqrt((double)cfg.n_layer));
        assert_true(mt_get(m.layers[l].norm_w, 7) == 1.0);
    }
    expect_log_uniform(log_dt, n, cfg.dt_min, cfg.dt_max);

    double sq = 0;
    int64_t ne = mt_numel(m.embedding);
    for (int64_t i = 0; i < ne; i++)
        sq += mt_get(m.embedding, i) * mt_get(m.embedding, i);
    assert_true(fabs(sqrt(sq / ne) - 0.02) < 0.001);

    /* Reproducible from the seed, and another seed draws other values. */
    mt_model again;
    mt_model_build(&again, &cfg, MT_CPU, MT_F32);
    mt_model_init(&again, cpu, 1);
    assert_memory_equal(again.params.values, m.params.values, m.params.flat_size * sizeof(float));
    mt_model_init(&again, cpu, 2);
    assert_memory_not_equal(again.params.values, m.params.values, m.params.flat_size * sizeof(float));
    mt_model_release(&again);
    mt_model_release(&m);

    /* dt below dt_init_floor is raised to it. */
    cfg.dt_min = 1e-6;
    cfg.dt_max = 1e-3;
    cfg.dt_init_floor = 1e-4;
    finalize_or_fail(&cfg);
    mt_model_build(&m, &cfg, MT_CPU, MT_F64);
    mt_model_init(&m, cpu, 3);
    double smallest = INFINITY;
    for (int64_t d = 0; d < cfg.d_inner; d++)
        smallest = fmin(smallest, log1p(exp(mt_get(((mt_mamba1 *)m.layers[0].block)->dt_bias, d))));
    assert_true(fabs(smallest - cfg.dt_init_floor) < 1e-12);
    mt_model_release(&m);
}

/* Activation checkpointing runs the Mamba-1 mixer again: bitwise the same
 * loss and gradients. seq_idx is given and, for Mamba-1, has no effect. */
static void loss_and_grads(mt_model *m, bool recompute, mt_tensor *seq, double *loss, float *grads)
{
    enum { B = 2, L = 19 };
    mt_ctx c;
    mt_ctx_init(&c, cpu, 0);
    mt_tensor *ids = mt_tensor_new(MT_CPU, MT_I32, 2, (int64_t[]){B, L});
    mt_tensor *targets = mt_tensor_new(MT_CPU, MT_I32, 1, (int64_t[]){B * L});
    for (int i = 0; i < B * L; i++) {
        mt_set(ids, i, (i * 7 + 3) % m->cfg.vocab_size);
        mt_set(targets, i, (i * 11 + 5) % m->cfg.vocab_size);
    }
    m->recompute_blocks = recompute;
    mt_params_zero_grad(&m->params);
    mt_tensor *l = mt_cross_entropy(&c, mt_model_logits(&c, m, ids, seq, MT_F32), targets, TL_IGNORE);
    if (!l)
        fail_msg("forward: %s", mt_ctx_error(&c));
    *loss = mt_get(l, 0);
    mt_backward(&c, l);
    memcpy(grads, m->params.grads, m->params.flat_size * sizeof(float));
    mt_tensor_free(ids);
    mt_tensor_free(targets);
    mt_ctx_release(&c);
}

static void test_recompute_matches_plain(void **state)
{
    (void)state;
    mt_model_config cfg = tiny_config(3);
    mt_model m;
    mt_model_build(&m, &cfg, MT_CPU, MT_F32);
    mt_model_init(&m, cpu, 9);
    mt_tensor *seq = mt_tensor_new(MT_CPU, MT_I32, 2, (int64_t[]){2, 19});
    for (int i = 0; i < 38; i++)
        mt_set(seq, i, i % 19 >= 10);
    size_t n = m.params.flat_size;
    float *plain = malloc(n * sizeof *plain), *again = malloc(n * sizeof *again);
    double loss_plain, loss_again, loss_no_seq;
    loss_and_grads(&m, false, seq, &loss_plain, plain);
    loss_and_grads(&m, true, seq, &loss_again, again);
    assert_true(loss_plain == loss_again);
    assert_memory_equal(plain, again, n * sizeof *plain);
    loss_and_grads(&m, false, NULL, &loss_no_seq, again);
    assert_true(loss_plain == loss_no_seq);
    free(plain);
    free(again);
    mt_tensor_free(seq);
    mt_model_release(&m);
}

/* A 2-layer Mamba-1 LM trained with plain SGD on the CPU learns a sequence
 * whose next token is a fixed function of the current one. */
static void test_tiny_mamba1_lm_learns(void **state)
{
    (void)state;
    enum { STEPS = 120 };
    mt_model_config cfg = tiny_config(2);
    cfg.d_model = 32;
    cfg.dt_rank = 0;
    finalize_or_fail(&cfg);
    mt_model m;
    mt_model_build(&m, &cfg, MT_CPU, MT_F32);
    mt_model_init(&m, cpu, 17);
    double first, last = tl_train_sequence_lm(cpu, &m, "tiny Mamba-1 LM", STEPS, &first);
    assert_true(first > 0.8 * log(cfg.vocab_size));
    assert_true(last < 0.2);
    mt_model_release(&m);
}

static void test_config_errors_name_the_field(void **state)
{
    (void)state;
    mt_model_config cfg;
    mt_model_config_defaults(&cfg);
    mt_model_config_use_mamba1(&cfg);
    cfg.dt_rank = -1;
    assert_false(mt_model_config_finalize(&cfg, err, sizeof err));
    expect_error("dt_rank");
    cfg.dt_rank = 0;
    cfg.dt_scale = 0;
    assert_false(mt_model_config_finalize(&cfg, err, sizeof err));
    expect_error("dt_scale");
    cfg.dt_scale = 1;
    cfg.d_state = 0;
    assert_false(mt_model_config_finalize(&cfg, err, sizeof err));
    expect_error("d_state");

    /* The Mamba-1 sizes of mamba-130m; Mamba-2's headdim does not apply. */
    mt_model_config_defaults(&cfg);
    mt_model_config_use_mamba1(&cfg);
    cfg.headdim = 100;
    finalize_or_fail(&cfg);
    assert_int_equal(cfg.d_state, 16);
    assert_int_equal(cfg.dt_proj_rank, 48);
    assert_int_equal(cfg.x_proj_dim, 48 + 2 * 16);
    assert_int_equal(cfg.in_proj_dim, 2 * 1536);
    assert_int_equal(cfg.conv_dim, 1536);
    assert_int_equal(cfg.vocab_padded, 50280);
    cfg.d_model = 2560; /* mamba-2.8b: ceil(2560 / 16) */
    finalize_or_fail(&cfg);
    assert_int_equal(cfg.dt_proj_rank, 160);
    cfg.d_model = 770; /* rounded up */
    finalize_or_fail(&cfg);
    assert_int_equal(cfg.dt_proj_rank, 49);

    /* The Mamba-2 block is built with a conv bias only. */
    mt_model_config_defaults(&cfg);
    cfg.conv_bias = false;
    assert_false(mt_model_config_finalize(&cfg, err, sizeof err));
    expect_error("conv_bias");
}

/* c to config.json text and back: the same struct. */
static void expect_json_round_trip(const mt_model_config *c)
{
    mt_model_config back;
    json_t *j = mt_model_config_to_json(c);
    char *text = json_dumps(j, JSON_REAL_PRECISION(17));
    json_t *parsed = json_loads(text, 0, NULL);
    if (!mt_model_config_from_json(parsed, &back, err, sizeof err))
        fail_msg("%s: %s", text, err);
    assert_memory_equal(&back, c, sizeof *c);
    free(text);
    json_decref(parsed);
    json_decref(j);
}

static void test_config_json(void **state)
{
    (void)state;
    mt_model_config c, back;
    mt_model_config_defaults(&c);
    mt_model_config_use_mamba1(&c);
    c.d_model = 256;
    c.n_layer = 3;
    c.vocab_size = 1000;
    c.dt_min = 0.0013;
    c.dt_max = 0.123456789012345;
    finalize_or_fail(&c);
    json_t *j = mt_model_config_to_json(&c);
    json_t *ssm = json_object_get(j, "ssm_cfg");
    assert_string_equal(json_string_value(json_object_get(ssm, "layer")), "Mamba1");
    assert_string_equal(json_string_value(json_object_get(ssm, "dt_rank")), "auto");
    assert_true(json_is_true(json_object_get(ssm, "conv_bias")));
    assert_true(json_real_value(json_object_get(ssm, "dt_scale")) == 1.0);
    assert_int_equal(json_integer_value(json_object_get(ssm, "d_state")), 16);
    /* Mamba2's arguments, which the reference's Mamba1 would not accept. */
    assert_null(json_object_get(ssm, "headdim"));
    assert_null(json_object_get(ssm, "A_init_range"));
    assert_null(json_object_get(ssm, "chunk_size"));
    json_decref(j);
    expect_json_round_trip(&c);

    c.dt_rank = 7;
    c.dt_scale = 2.5;
    c.conv_bias = false;
    c.norm_eps = 1e-6;
    finalize_or_fail(&c);
    j = mt_model_config_to_json(&c);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(j, "ssm_cfg"), "dt_rank")), 7);
    json_decref(j);
    expect_json_round_trip(&c);

    /* A released Mamba-1 model's config.json: ssm_cfg {} is a Mamba-1 block
     * with its defaults, and so is no ssm_cfg at all. */
    json_t *released = json_loads("{\"d_model\": 768, \"n_layer\": 24, \"vocab_size\": 50277, \"ssm_cfg\": {},"
                                  " \"rms_norm\": true, \"residual_in_fp32\": true, \"fused_add_norm\": true,"
                                  " \"pad_vocab_size_multiple\": 8}",
                                  0, NULL);
    for (int pass = 0; pass < 2; pass++) {
        if (!mt_model_config_from_json(released, &back, err, sizeof err))
            fail_msg("released config: %s", err);
        assert_int_equal(back.layer, MT_LAYER_MAMBA1);
        assert_int_equal(back.d_state, 16);
        assert_int_equal(back.dt_proj_rank, 48);
        assert_int_equal(back.vocab_padded, 50280);
        assert_true(back.conv_bias && back.tie_embeddings);
        json_object_del(released, "ssm_cfg");
    }

    const struct {
        const char *key, *value, *says;
    } bad[] = {
        {"layer", "\"Mamba3\"", "ssm_cfg.layer"},    {"dt_rank", "\"big\"", "ssm_cfg.dt_rank"},
        {"dt_rank", "0", "ssm_cfg.dt_rank"},         {"dt_scale", "\"1\"", "ssm_cfg.dt_scale"},
        {"dt_init", "\"constant\"", "ssm_cfg.dt_init"}, {"bias", "true", "ssm_cfg.bias"},
        {"conv_bias", "1", "ssm_cfg.conv_bias"},     {"headdim", "64", "ssm_cfg.headdim"},
        {"dt_limit", "[0, 1]", "ssm_cfg.dt_limit"},  {"mystery", "1", "ssm_cfg.mystery"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        json_t *k = json_deep_copy(released);
        json_t *s = json_object();
        json_object_set_new(s, bad[i].key, json_loads(bad[i].value, JSON_DECODE_ANY, NULL));
        json_object_set_new(k, "ssm_cfg", s);
        assert_false(mt_model_config_from_json(k, &back, err, sizeof err));
        expect_error(bad[i].says);
        json_decref(k);
    }
    /* The reference's own switches with the values this implementation builds. */
    json_t *fine = json_loads("{\"dt_init\": \"random\", \"bias\": false, \"use_fast_path\": true, \"dt_rank\": 5}",
                              0, NULL);
    json_object_set_new(released, "ssm_cfg", fine);
    if (!mt_model_config_from_json(released, &back, err, sizeof err))
        fail_msg("%s", err);
    assert_int_equal(back.dt_proj_rank, 5);
    json_decref(released);
}

int main(void)
{
    cpu = mt_backend_cpu_create();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config_errors_name_the_field),
        cmocka_unit_test(test_config_json),
        cmocka_unit_test(test_reference_keys_and_shapes),
        cmocka_unit_test(test_reference_initialization),
        cmocka_unit_test(test_block_gradcheck),
        cmocka_unit_test(test_tiny_lm_gradcheck),
        cmocka_unit_test(test_recompute_matches_plain),
        cmocka_unit_test(test_tiny_mamba1_lm_learns),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    cpu->destroy(cpu);
    return failed;
}
