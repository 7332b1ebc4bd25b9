/* The sampler: greedy (temperature 0, top-k 1) is the argmax with ties to
 * the lower id; draws follow the softmax at the temperature; top-p and min-p
 * keep exactly the right support of a hand-made distribution, top-k the k
 * most likely; the repetition penalty divides positive logits and
 * multiplies negative ones, once per distinct token; a draw depends only on
 * the seed and its counter; settings out of range are refused by name. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "generate/sampler.h"

enum { DRAWS = 40000 };

/* Logits of the probabilities 0.5, 0.3, 0.15, 0.05 (plus a constant). */
static const float four[4] = {0.0f, -0.5108256f, -1.2039728f, -2.3025851f};

/* Frequencies of each token over DRAWS draws. */
static void frequencies(const mt_sampling *s, const float *logits, int vocab, double *freq)
{
    mt_sample_work w;
    mt_sample_work_init(&w, vocab);
    for (int v = 0; v < vocab; v++)
        freq[v] = 0;
    for (int d = 0; d < DRAWS; d++) {
        int64_t t = mt_sample(s, logits, vocab, NULL, 0, (uint64_t)d, &w);
        assert_true(t >= 0 && t < vocab);
        freq[t] += 1.0 / DRAWS;
    }
    mt_sample_work_release(&w);
}

static mt_sampling plain(void)
{
    mt_sampling s = mt_sampling_greedy();
    s.temperature = 1;
    s.top_k = 0;
    s.seed = 17;
    return s;
}

static void greedy_is_the_argmax(void **state)
{
    (void)state;
    float logits[64];
    for (int v = 0; v < 64; v++)
        logits[v] = (float)sin(v * 1.7) * 3;
    logits[40] = logits[9] = 5; /* a tie: the lower id wins */
    mt_sample_work w;
    mt_sample_work_init(&w, 64);
    mt_sampling g = mt_sampling_greedy(), k1 = plain(), t0 = plain();
    k1.top_k = 1;
    t0.temperature = 0;
    for (int d = 0; d < 50; d++) {
        assert_int_equal(mt_sample(&g, logits, 64, NULL, 0, d, &w), 9);
        assert_int_equal(mt_sample(&k1, logits, 64, NULL, 0, d, &w), 9);
        assert_int_equal(mt_sample(&t0, logits, 64, NULL, 0, d, &w), 9);
    }
    logits[9] = NAN; /* never chosen */
    assert_int_equal(mt_sample(&g, logits, 64, NULL, 0, 0, &w), 40);
    mt_sample_work_release(&w);
}

static void draws_follow_the_softmax(void **state)
{
    (void)state;
    double f[4];
    mt_sampling s = plain();
    frequencies(&s, four, 4, f);
    const double p[4] = {0.5, 0.3, 0.15, 0.05};
    for (int v = 0; v < 4; v++)
        assert_true(fabs(f[v] - p[v]) < 0.01);
    /* At temperature 0.5 the probabilities go as p^2. */
    s.temperature = 0.5;
    frequencies(&s, four, 4, f);
    double z = 0.25 + 0.09 + 0.0225 + 0.0025;
    const double q[4] = {0.25 / z, 0.09 / z, 0.0225 / z, 0.0025 / z};
    for (int v = 0; v < 4; v++)
        assert_true(fabs(f[v] - q[v]) < 0.01);
    printf("softmax draws: %.4f %.4f %.4f %.4f at temperature 0.5 (expected %.4f %.4f %.4f %.4f)\n", f[0], f[1], f[2],
           f[3], q[0], q[1], q[2], q[3]);
}

static void filters_keep_the_right_support(void **state)
{
    (void)state;
    double f[4];
    /* top-p 0.75: ascending cumulative 0.05, 0.20 are at most 0.25: gone. */
    mt_sampling s = plain();
    s.top_p = 0.75;
    frequencies(&s, four, 4, f);
    assert_true(f[2] == 0 && f[3] == 0);
    assert_true(fabs(f[0] - 0.625) < 0.01 && fabs(f[1] - 0.375) < 0.01);
    /* top-p 0.9: only the 0.05 one goes (0.20 > 0.1). */
    s.top_p = 0.9;
    frequencies(&s, four, 4, f);
    assert_true(f[3] == 0 && f[2] > 0.1);
    /* min-p 0.4: tokens below 0.4 * 0.5 = 0.2 go. */
    s = plain();
    s.min_p = 0.4;
    frequencies(&s, four, 4, f);
    assert_true(f[2] == 0 && f[3] == 0 && f[1] > 0.3);
    /* top-k 3 drops the least likely, renormalizing the rest. */
    s = plain();
    s.top_k = 3;
    frequencies(&s, four, 4, f);
    assert_true(f[3] == 0 && fabs(f[0] - 0.5 / 0.95) < 0.01);
}

static void repetition_penalty_as_specified(void **state)
{
    (void)state;
    mt_sample_work w;
    mt_sample_work_init(&w, 2);
    mt_sampling s = mt_sampling_greedy();
    s.repetition_penalty = 2;
    const int32_t once[] = {1}, twice[] = {1, 1}, first[] = {0};
    const float pos[2] = {2.0f, 2.5f}, pos2[2] = {1.0f, 2.5f}, neg[2] = {-1.0f, -1.5f};
    assert_int_equal(mt_sample(&s, pos, 2, NULL, 0, 0, &w), 1);
    assert_int_equal(mt_sample(&s, pos, 2, once, 1, 0, &w), 0);   /* 2.5 / 2 < 2 */
    assert_int_equal(mt_sample(&s, pos2, 2, twice, 2, 0, &w), 1); /* 2.5 / 2 > 1: applied once */
    assert_int_equal(mt_sample(&s, neg, 2, first, 1, 0, &w), 1);  /* -1 * 2 < -1.5 */
    mt_sample_work_release(&w);
}

static void draws_are_reproducible(void **state)
{
    (void)state;
    float logits[1000];
    for (int v = 0; v < 1000; v++)
        logits[v] = (float)cos(v * 0.37);
    mt_sample_work w;
    mt_sample_work_init(&w, 1000);
    mt_sampling a = plain(), b = plain();
    b.seed = 18;
    int same = 0;
    for (int d = 0; d < 200; d++) {
        int64_t x = mt_sample(&a, logits, 1000, NULL, 0, d, &w);
        assert_int_equal(mt_sample(&a, logits, 1000, NULL, 0, d, &w), x);
        same += mt_sample(&b, logits, 1000, NULL, 0, d, &w) == x;
    }
    assert_true(same < 20); /* another seed draws other tokens */
    mt_sample_work_release(&w);
}

static void bad_settings_are_named(void **state)
{
    (void)state;
    char err[128];
    mt_sampling s = plain();
    assert_true(mt_sampling_check(&s, err, sizeof err));
    const char *names[] = {"temperature", "top-k", "top-p", "min-p", "repetition penalty"};
    for (int i = 0; i < 5; i++) {
        mt_sampling t = plain();
        if (i == 0)
            t.temperature = -1;
        else if (i == 1)
            t.top_k = -2;
        else if (i == 2)
            t.top_p = 1.5;
        else if (i == 3)
            t.min_p = 1;
        else
            t.repetition_penalty = 0;
        assert_false(mt_sampling_check(&t, err, sizeof err));
        assert_non_null(strstr(err, names[i]));
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(greedy_is_the_argmax),       cmocka_unit_test(draws_follow_the_softmax),
        cmocka_unit_test(filters_keep_the_right_support), cmocka_unit_test(repetition_penalty_as_specified),
        cmocka_unit_test(draws_are_reproducible),     cmocka_unit_test(bad_settings_are_named),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
