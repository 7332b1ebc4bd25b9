/* The optimizer on the CPU: AdamW against the update written out in double,
 * the weight-decay mask (flags, padding, the embedding switch), grad_scale,
 * the gradient norm and clipping factor, and the learning-rate schedules. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <cmocka.h>

#include "optim/adamw.h"
#include "optim/schedule.h"
#include "testlib.h"

static mt_backend *cpu;

static const mt_adamw_config adam_cfg = {.beta1 = 0.9, .beta2 = 0.95, .eps = 1e-8, .weight_decay = 0.1};

/* A store of two parameters on the CPU: "w" (3, 5), decayed, and
 * "norm.weight" (7), MT_PARAM_NO_DECAY. w takes 15 of its 64-element slot,
 * so padding follows it. */
static void make_two_params(mt_params *p, mt_dtype dt)
{
    mt_params_init(p, MT_CPU, dt);
    mt_params_add(p, "w", 2, (int64_t[]){3, 5}, 0);
    mt_params_add(p, "norm.weight", 1, (int64_t[]){7}, MT_PARAM_NO_DECAY);
    mt_params_alloc(p);
}

/* One of the store's flat buffers (values, grads, adam_m, adam_v) from
 * parameter q's offset to its end, as a 1-D tensor: q's elements, then
 * whatever follows. */
static mt_tensor slice(const mt_params *p, const mt_param *q, void *flat)
{
    mt_tensor t;
    mt_tensor_init(&t, p->dtype, MT_CPU, 1, (int64_t[]){(int64_t)(p->flat_size - q->offset)});
    t.data = (char *)flat + q->offset * mt_dtype_size(p->dtype);
    return t;
}

/* ||a - ref|| / ||ref|| over n elements. */
static double rel_err(const mt_tensor *a, const double *ref, int64_t n)
{
    double diff = 0, norm = 0;
    for (int64_t i = 0; i < n; i++) {
        diff += (mt_get(a, i) - ref[i]) * (mt_get(a, i) - ref[i]);
        norm += ref[i] * ref[i];
    }
    return sqrt(diff / norm);
}

static bool near(double a, double b)
{
    return fabs(a - b) <= 1e-14 * fmax(fabs(a), fabs(b));
}

/* The gradient of element i of parameter k at step t: smooth, both signs. */
static double known_grad(int k, int64_t i, int t)
{
    return sin(0.7 * (double)i + 1.3 * t + k) * (k + 1);
}

/* Three AdamW steps at changing rates and grad scales on the two-parameter
 * store, against the update of adamw.h in double, element by element: every
 * value, m and v within 1e-6 (f32 rounds each step's results; f64 within
 * 1e-12), and the padding left at zero. */
static void test_adamw_matches_closed_form(void **state)
{
    mt_dtype dt = *(const mt_dtype *)*state;
    double bound = dt == MT_F64 ? 1e-12 : 1e-6;
    mt_params p;
    make_two_params(&p, dt);
    mt_adamw o;
    mt_adamw_init(&o, &p, &adam_cfg);

    enum { MAXN = 15 };
    double ref_p[2][MAXN], ref_m[2][MAXN] = {{0}}, ref_v[2][MAXN] = {{0}};
    for (int k = 0; k < 2; k++) {
        mt_param *q = p.items[k];
        for (int64_t i = 0; i < mt_numel(&q->value); i++) {
            mt_set(&q->value, i, 0.5 - 0.1 * (double)i + k);
            ref_p[k][i] = mt_get(&q->value, i); /* as stored */
        }
    }
    const double lrs[3] = {1e-2, 2e-2, 5e-3}, scales[3] = {1.0, 0.5, 0.3};
    for (int t = 1; t <= 3; t++) {
        for (int k = 0; k < 2; k++) {
            mt_param *q = p.items[k];
            bool decayed = k == 0;
            for (int64_t i = 0; i < mt_numel(&q->value); i++) {
                mt_set(&q->grad, i, known_grad(k, i, t));
                double g = scales[t - 1] * mt_get(&q->grad, i), lr = lrs[t - 1];
                double *m = &ref_m[k][i], *v = &ref_v[k][i], before = ref_p[k][i];
                *m = adam_cfg.beta1 * *m + (1 - adam_cfg.beta1) * g;
                *v = adam_cfg.beta2 * *v + (1 - adam_cfg.beta2) * g * g;
                double m_hat = *m / (1 - pow(adam_cfg.beta1, t)), v_hat = *v / (1 - pow(adam_cfg.beta2, t));
                ref_p[k][i] = before - lr * m_hat / (sqrt(v_hat) + adam_cfg.eps);
                if (decayed)
                    ref_p[k][i] -= lr * adam_cfg.weight_decay * before;
            }
        }
        mt_adamw_step(&o, cpu, &p, lrs[t - 1], scales[t - 1]);
        assert_int_equal(o.step, t);
    }
    for (int k = 0; k < 2; k++) {
        mt_param *q = p.items[k];
        int64_t n = mt_numel(&q->value);
        mt_tensor m = slice(&p, q, p.adam_m), v = slice(&p, q, p.adam_v);
        double ev = rel_err(&q->value, ref_p[k], n), em = rel_err(&m, ref_m[k], n), evv = rel_err(&v, ref_v[k], n);
        print_message("%s %s: value %.2e m %.2e v %.2e\n", mt_dtype_name(dt), q->name, ev, em, evv);
        assert_true(ev < bound && em < bound && evv < bound);
    }
    mt_param *w = p.items[0];
    mt_tensor values = slice(&p, w, p.values), m = slice(&p, w, p.adam_m), v = slice(&p, w, p.adam_v);
    for (int64_t i = mt_numel(&w->value); i < (int64_t)(p.items[1]->offset - w->offset); i++)
        assert_true(mt_get(&values, i) == 0 && mt_get(&m, i) == 0 && mt_get(&v, i) == 0);
    mt_adamw_release(&o);
    mt_params_release(&p);
}

/* With zero gradients the Adam step is exactly 0: the NO_DECAY parameter
 * keeps its bits, the decayed one becomes exactly value - lr * wd * value,
 * and the mask reads 1 on w, 0 on norm.weight and 0 on the padding. */
static void test_weight_decay_mask_honoured(void **state)
{
    (void)state;
    mt_params p;
    make_two_params(&p, MT_F32);
    mt_adamw o;
    mt_adamw_init(&o, &p, &adam_cfg);
    mt_param *w = p.items[0], *norm = p.items[1];
    for (size_t i = 0; i < p.flat_size; i++) {
        bool in_w = i >= w->offset && i < w->offset + 15;
        assert_int_equal(o.decay[i], in_w ? 1 : 0);
    }
    for (int64_t i = 0; i < 15; i++)
        mt_set(&w->value, i, 1.0 + 0.25 * (double)i);
    for (int64_t i = 0; i < 7; i++)
        mt_set(&norm->value, i, -2.0 + 0.5 * (double)i);
    float norm_before[7], w_before[15];
    memcpy(norm_before, norm->value.data, sizeof norm_before);
    memcpy(w_before, w->value.data, sizeof w_before);

    double lr = 0.03;
    mt_adamw_step(&o, cpu, &p, lr, 1.0);
    assert_memory_equal(norm->value.data, norm_before, sizeof norm_before);
    for (int i = 0; i < 15; i++) {
        double before = w_before[i];
        assert_true(((float *)w->value.data)[i] == (float)(before - lr * adam_cfg.weight_decay * before));
    }
    mt_adamw_release(&o);
    mt_params_release(&p);
}

/* The embedding is decayed only with decay_embedding, whatever its flags
 * say otherwise; other decayed parameters are decayed either way. */
static void test_decay_embedding_switch(void **state)
{
    (void)state;
    for (int on = 0; on <= 1; on++) {
        mt_params p;
        mt_params_init(&p, MT_CPU, MT_F32);
        mt_tensor *emb = mt_params_add(&p, "backbone.embedding.weight", 2, (int64_t[]){4, 3}, 0);
        mt_tensor *w = mt_params_add(&p, "backbone.layers.0.mixer.in_proj.weight", 2, (int64_t[]){2, 2}, 0);
        mt_params_alloc(&p);
        mt_adamw_config cfg = adam_cfg;
        cfg.decay_embedding = on;
        mt_adamw o;
        mt_adamw_init(&o, &p, &cfg);
        assert_int_equal(o.decay[p.items[0]->offset], on);
        assert_int_equal(o.decay[p.items[0]->offset + 11], on);
        assert_int_equal(o.decay[p.items[1]->offset], 1);
        for (int64_t i = 0; i < 12; i++)
            mt_set(emb, i, 1.0);
        for (int64_t i = 0; i < 4; i++)
            mt_set(w, i, 1.0);
        mt_adamw_step(&o, cpu, &p, 0.1, 1.0);
        float decayed = (float)(1.0 - 0.1 * cfg.weight_decay);
        for (int64_t i = 0; i < 12; i++)
            assert_true(mt_get(emb, i) == (on ? decayed : 1.0));
        for (int64_t i = 0; i < 4; i++)
            assert_true(mt_get(w, i) == decayed);
        mt_adamw_release(&o);
        mt_params_release(&p);
    }
}

/* grad_scale multiplies the gradient inside the step: scale 0.25 on g gives
 * the same bits as scale 1 on 0.25 g (exact in f32), and the first m is
 * (1 - beta1) * 0.25 * g. */
static void test_grad_scale_applied(void **state)
{
    (void)state;
    mt_params a, b;
    make_two_params(&a, MT_F32);
    make_two_params(&b, MT_F32);
    mt_adamw oa, ob;
    mt_adamw_init(&oa, &a, &adam_cfg);
    mt_adamw_init(&ob, &b, &adam_cfg);
    for (int t = 1; t <= 2; t++) {
        for (int k = 0; k < 2; k++)
            for (int64_t i = 0; i < mt_numel(&a.items[k]->value); i++) {
                mt_set(&a.items[k]->grad, i, known_grad(k, i, t));
                mt_set(&b.items[k]->grad, i, 0.25 * mt_get(&a.items[k]->grad, i));
            }
        mt_adamw_step(&oa, cpu, &a, 1e-2, 0.25);
        mt_adamw_step(&ob, cpu, &b, 1e-2, 1.0);
        if (t == 1) {
            mt_tensor m = slice(&a, a.items[0], a.adam_m);
            for (int64_t i = 0; i < 15; i++) {
                float expect = (float)((1 - adam_cfg.beta1) * 0.25 * mt_get(&a.items[0]->grad, i));
                assert_true((float)mt_get(&m, i) == expect);
            }
        }
    }
    size_t bytes = a.flat_size * sizeof(float);
    assert_memory_equal(a.values, b.values, bytes);
    assert_memory_equal(a.adam_m, b.adam_m, bytes);
    assert_memory_equal(a.adam_v, b.adam_v, bytes);
    mt_adamw_release(&oa);
    mt_adamw_release(&ob);
    mt_params_release(&a);
    mt_params_release(&b);
}

/* mt_grad_norm against a direct sum over every parameter's gradient, and
 * sumsq over a buffer of many chunks (f32 and f64) against a serial sum,
 * repeating its bits. */
static void test_grad_norm_and_sumsq(void **state)
{
    (void)state;
    mt_params p;
    make_two_params(&p, MT_F32);
    double direct = 0;
    for (int k = 0; k < 2; k++) {
        mt_tensor *g = &p.items[k]->grad;
        cpu->fill_normal(cpu, g, 11 + k, 0.0, 2.0);
        for (int64_t i = 0; i < mt_numel(g); i++)
            direct += mt_get(g, i) * mt_get(g, i);
    }
    assert_true(near(mt_grad_norm(cpu, &p), sqrt(direct)));
    mt_params_release(&p);

    const mt_dtype dts[2] = {MT_F32, MT_F64};
    for (int d = 0; d < 2; d++) {
        int64_t n = 100003;
        mt_tensor *x = mt_tensor_new(MT_CPU, dts[d], 1, &n);
        cpu->fill_uniform(cpu, x, 5, -3, 3);
        double serial = 0;
        for (int64_t i = 0; i < n; i++)
            serial += mt_get(x, i) * mt_get(x, i);
        double s1 = cpu->sumsq(cpu, x), s2 = cpu->sumsq(cpu, x);
        assert_true(fabs(s1 - serial) <= 1e-12 * serial);
        assert_memory_equal(&s1, &s2, sizeof s1);
        mt_tensor_free(x);
    }
}

static void test_clip_scale(void **state)
{
    (void)state;
    assert_true(mt_clip_scale(0.5, 1.0) == 1.0);
    assert_true(mt_clip_scale(1.0, 1.0) == 1.0);
    assert_true(mt_clip_scale(4.0, 1.0) == 0.25);
    assert_true(mt_clip_scale(0.0, 1.0) == 1.0);
    assert_true(mt_clip_scale(4.0, 0.0) == 1.0);  /* clipping off */
    assert_true(mt_clip_scale(4.0, -1.0) == 1.0); /* clipping off */
    assert_true(isnan(mt_clip_scale(NAN, 1.0)));
    assert_true(mt_clip_scale(INFINITY, 1.0) == 0.0);
}

/* Warmup 10, total 110, peak 1e-3, min 1e-4: the first update runs at peak /
 * 10, step 9 (the last warmup step) and step 10 at peak, step 60 (halfway
 * through the cosine) at (peak + min) / 2, step 110 and later at min. */
static void test_cosine_schedule(void **state)
{
    (void)state;
    mt_lr_schedule s = {.kind = MT_SCHEDULE_COSINE, .peak_lr = 1e-3, .min_ratio = 0.1, .warmup_steps = 10,
                        .total_steps = 110};
    assert_true(near(mt_lr_at(&s, 0), 1e-4));
    assert_true(near(mt_lr_at(&s, 4), 5e-4));
    assert_true(near(mt_lr_at(&s, 9), 1e-3));
    assert_true(near(mt_lr_at(&s, 10), 1e-3));
    assert_true(near(mt_lr_at(&s, 35), 1e-4 + 9e-4 * 0.5 * (1 + cos(0.25 * 3.14159265358979323846))));
    assert_true(near(mt_lr_at(&s, 60), 5.5e-4));
    assert_true(near(mt_lr_at(&s, 110), 1e-4));
    assert_true(near(mt_lr_at(&s, 1000), 1e-4));
    for (int64_t t = 11; t <= 110; t++)
        assert_true(mt_lr_at(&s, t) < mt_lr_at(&s, t - 1));

    mt_lr_schedule no_warmup = {.kind = MT_SCHEDULE_COSINE, .peak_lr = 1e-3, .total_steps = 100};
    assert_true(near(mt_lr_at(&no_warmup, 0), 1e-3));
    assert_true(mt_lr_at(&no_warmup, 100) == 0.0);
}

/* Warmup 10, total 100, decay 20: peak through step 79, then linear to min
 * at step 100 (halfway at 90), min after. */
static void test_wsd_and_constant_schedules(void **state)
{
    (void)state;
    mt_lr_schedule s = {.kind = MT_SCHEDULE_WSD, .peak_lr = 1e-3, .min_ratio = 0.1, .warmup_steps = 10,
                        .total_steps = 100, .decay_steps = 20};
    assert_true(near(mt_lr_at(&s, 0), 1e-4));
    assert_true(near(mt_lr_at(&s, 9), 1e-3));
    assert_true(near(mt_lr_at(&s, 50), 1e-3));
    assert_true(near(mt_lr_at(&s, 79), 1e-3));
    assert_true(near(mt_lr_at(&s, 80), 1e-3));
    assert_true(near(mt_lr_at(&s, 81), 1e-3 - 9e-4 / 20));
    assert_true(near(mt_lr_at(&s, 90), 5.5e-4));
    assert_true(near(mt_lr_at(&s, 100), 1e-4));
    assert_true(near(mt_lr_at(&s, 500), 1e-4));

    mt_lr_schedule c = {.kind = MT_SCHEDULE_CONSTANT, .peak_lr = 3e-4, .min_ratio = 0.1, .warmup_steps = 4,
                        .total_steps = 100};
    assert_true(near(mt_lr_at(&c, 0), 0.75e-4));
    assert_true(near(mt_lr_at(&c, 3), 3e-4));
    assert_true(near(mt_lr_at(&c, 5000), 3e-4));
}

int main(void)
{
    cpu = mt_backend_cpu_create();
    static const mt_dtype f32 = MT_F32, f64 = MT_F64;
    const struct CMUnitTest tests[] = {
        {"test_adamw_matches_closed_form f32", test_adamw_matches_closed_form, NULL, NULL, (void *)&f32},
        {"test_adamw_matches_closed_form f64", test_adamw_matches_closed_form, NULL, NULL, (void *)&f64},
        cmocka_unit_test(test_weight_decay_mask_honoured),
        cmocka_unit_test(test_decay_embedding_switch),
        cmocka_unit_test(test_grad_scale_applied),
        cmocka_unit_test(test_grad_norm_and_sumsq),
        cmocka_unit_test(test_clip_scale),
        cmocka_unit_test(test_cosine_schedule),
        cmocka_unit_test(test_wsd_and_constant_schedules),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    cpu->destroy(cpu);
    return failed;
}
