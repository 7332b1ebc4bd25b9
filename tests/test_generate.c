/* Generation's recurrent path: for a Mamba-2 LM in f64 on the CPU, the
 * logits of a prompt's prefill followed by one decode step per token equal
 * the full forward's at every position within 1e-9 (relative, per row), for
 * prompts split at several points; greedy generation through the state
 * picks the argmax of repeated full forwards; prompts of different lengths
 * in one batch generate what they do alone; a Mamba-1 model is refused
 * with a message until its scan returns a state. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "generate/generate.h"
#include "layers/model.h"

enum { B = 2, L = 37 };

static void tiny(mt_model *m, mt_backend *cpu, mt_layer_kind layer)
{
    mt_model_config cfg;
    mt_model_config_defaults(&cfg);
    cfg.layer = layer;
    cfg.d_model = 32;
    cfg.n_layer = 2;
    cfg.vocab_size = 40;
    cfg.d_state = 8;
    cfg.headdim = 8;
    cfg.chunk_size = 16; /* three chunks in the full forward */
    char err[256];
    if (!mt_model_config_finalize(&cfg, err, sizeof err))
        fail_msg("%s", err);
    mt_model_build(m, &cfg, MT_CPU, MT_F64);
    mt_model_init(m, cpu, 9);
}

static mt_tensor *ids_of(const int32_t *v, int64_t b, int64_t l, int64_t stride, int64_t from)
{
    mt_tensor *t = mt_tensor_new(MT_CPU, MT_I32, 2, (int64_t[]){b, l});
    for (int64_t i = 0; i < b; i++)
        for (int64_t j = 0; j < l; j++)
            ((int32_t *)t->data)[i * l + j] = v[i * stride + from + j];
    return t;
}

/* ||a - b|| / ||b|| over one row of V values. */
static double row_err(const mt_tensor *a, int64_t ra, const mt_tensor *b, int64_t rb, int64_t V)
{
    double num = 0, den = 0;
    for (int64_t v = 0; v < V; v++) {
        double x = mt_get(a, ra * V + v), y = mt_get(b, rb * V + v);
        num += (x - y) * (x - y);
        den += y * y;
    }
    return sqrt(num / den);
}

static void steps_equal_the_full_forward(void **state)
{
    (void)state;
    mt_backend *cpu = mt_backend_cpu_create();
    mt_model m;
    tiny(&m, cpu, MT_LAYER_MAMBA2);
    const int64_t V = m.cfg.vocab_padded;
    int32_t tokens[B * L];
    for (int i = 0; i < B * L; i++)
        tokens[i] = (i * 7 + 3) % m.cfg.vocab_size;
    mt_ctx c;
    mt_ctx_init(&c, cpu, 0);
    c.grad_enabled = false;
    mt_tensor *all = ids_of(tokens, B, L, L, 0);
    mt_tensor *full = mt_model_logits(&c, &m, all, NULL, MT_F64);
    assert_non_null(full);
    const int prompts[] = {1, 17, 36};
    double worst = 0;
    for (int p = 0; p < 3; p++) {
        char err[256];
        mt_model_state st;
        assert_true(mt_model_state_init(&st, &m, B, MT_F64, err, sizeof err));
        const int P = prompts[p];
        mt_tensor *prompt = ids_of(tokens, B, P, L, 0);
        mt_tensor *pre = mt_model_advance(&c, &m, prompt, &st, MT_F64);
        assert_non_null(pre);
        for (int b = 0; b < B; b++)
            for (int t = 0; t < P; t++)
                worst = fmax(worst, row_err(pre, b * P + t, full, b * L + t, V));
        for (int t = P; t < L; t++) {
            mt_tensor *one = ids_of(tokens, B, 1, L, t);
            mt_tensor *step = mt_model_advance(&c, &m, one, &st, MT_F64);
            assert_non_null(step);
            for (int b = 0; b < B; b++)
                worst = fmax(worst, row_err(step, b, full, b * L + t, V));
            mt_tensor_free(one);
        }
        mt_tensor_free(prompt);
        mt_model_state_release(&st);
    }
    printf("prefill + decode steps against the full forward: largest row error %.3e\n", worst);
    assert_true(worst < 1e-9);
    mt_tensor_free(all);
    mt_ctx_release(&c);
    mt_model_release(&m);
    cpu->destroy(cpu);
}

/* Greedy generation (mt_generate) of N tokens after two prompts, against
 * the argmax of the full forward of each whole sequence so far; then a
 * sampled generation is reproducible and stops a row at eos. */
static void greedy_generation_matches_full_forwards(void **state)
{
    (void)state;
    enum { P = 4, N = 8, W = P + N };
    mt_backend *cpu = mt_backend_cpu_create();
    mt_model m;
    tiny(&m, cpu, MT_LAYER_MAMBA2);
    const int64_t V = m.cfg.vocab_padded;
    const int32_t prompt[2 * P] = {5, 17, 2, 33, 8, 8, 1, 30};
    int32_t out[2 * W], again[2 * W];
    mt_generate_config g = {.sampling = mt_sampling_greedy(), .max_new_tokens = N, .eos_id = -1, .compute = MT_F64};
    mt_generate_result res;
    char err[256];
    assert_true(mt_generate(cpu, &m, prompt, 2, P, NULL, &g, out, &res, err, sizeof err));
    assert_int_equal(res.new_tokens, N);
    mt_ctx c;
    mt_ctx_init(&c, cpu, 0);
    c.grad_enabled = false;
    for (int b = 0; b < 2; b++) {
        assert_memory_equal(out + b * W, prompt + b * P, P * sizeof(int32_t));
        for (int n = 0; n < N; n++) {
            mt_tensor *whole = ids_of(out + b * W, 1, P + n, W, 0);
            mt_tensor *fl = mt_model_logits(&c, &m, whole, NULL, MT_F64);
            int64_t best = 0;
            for (int64_t v = 1; v < m.cfg.vocab_size; v++)
                if (mt_get(fl, (P + n - 1) * V + v) > mt_get(fl, (P + n - 1) * V + best))
                    best = v;
            assert_int_equal(out[b * W + P + n], best);
            mt_tensor_free(whole);
            mt_ctx_end_step(&c);
        }
    }
    printf("greedy, row 0:");
    for (int i = 0; i < W; i++)
        printf(" %d", out[i]);
    printf("\n");
    /* Sampled: the same seed gives the same tokens; a row stops at eos. */
    mt_generate_config s = g;
    s.sampling.temperature = 1.0, s.sampling.top_k = 0, s.sampling.seed = 3;
    assert_true(mt_generate(cpu, &m, prompt, 2, P, NULL, &s, out, &res, err, sizeof err));
    assert_true(mt_generate(cpu, &m, prompt, 2, P, NULL, &s, again, &res, err, sizeof err));
    assert_memory_equal(out, again, sizeof out);
    s.eos_id = out[P + 2]; /* row 0's third new token */
    assert_true(mt_generate(cpu, &m, prompt, 2, P, NULL, &s, again, &res, err, sizeof err));
    int first = P;
    while (again[first] != s.eos_id)
        first++;
    assert_true(first <= P + 2);
    for (int i = first; i < W; i++)
        assert_int_equal(again[i], s.eos_id);
    /* A prompt token outside the vocabulary is refused by name. */
    const int32_t bad[P] = {1, 2, 999, 3};
    assert_false(mt_generate(cpu, &m, bad, 1, P, NULL, &g, out, &res, err, sizeof err));
    assert_non_null(strstr(err, "vocabulary"));
    mt_ctx_release(&c);
    mt_model_release(&m);
    cpu->destroy(cpu);
}

/* Prompts of different lengths in one batch (one of a single token, shorter
 * than the conv's window) each generate what they generate alone: greedy
 * with a repetition penalty, so each row's own history counts; what follows
 * a row's prompt in its input row is ignored, and the rest of its output
 * row holds eos_id. A length outside [1, prompt_len] is refused. */
static void prompts_of_different_lengths(void **state)
{
    (void)state;
    enum { P = 5, N = 6, W = P + N, R = 3 };
    mt_backend *cpu = mt_backend_cpu_create();
    mt_model m;
    tiny(&m, cpu, MT_LAYER_MAMBA2);
    const int32_t prompt[R * P] = {7, 999, 999, 999, 999, 5, 17, 2, 33, 8, 30, 1, 12, 999, 999};
    const int64_t lens[R] = {1, 5, 3};
    mt_generate_config g = {.sampling = mt_sampling_greedy(), .max_new_tokens = N, .eos_id = -1, .compute = MT_F64};
    g.sampling.repetition_penalty = 1.3;
    int32_t out[R * W], alone[W];
    mt_generate_result res;
    char err[256];
    assert_true(mt_generate(cpu, &m, prompt, R, P, lens, &g, out, &res, err, sizeof err));
    for (int b = 0; b < R; b++) {
        const int n = (int)lens[b];
        assert_true(mt_generate(cpu, &m, prompt + b * P, 1, n, NULL, &g, alone, &res, err, sizeof err));
        assert_memory_equal(out + b * W, alone, (size_t)(n + N) * sizeof(int32_t));
        for (int i = n + N; i < W; i++)
            assert_int_equal(out[b * W + i], -1);
        printf("row %d (prompt of %d):", b, n);
        for (int i = 0; i < n + N; i++)
            printf(" %d", out[b * W + i]);
        printf("\n");
    }
    const int64_t too_long[R] = {1, 6, 3};
    assert_false(mt_generate(cpu, &m, prompt, R, P, too_long, &g, out, &res, err, sizeof err));
    assert_non_null(strstr(err, "prompt 1 has 6 tokens"));
    mt_model_release(&m);
    cpu->destroy(cpu);
}

static void mamba1_is_refused(void **state)
{
    (void)state;
    mt_backend *cpu = mt_backend_cpu_create();
    mt_model m;
    tiny(&m, cpu, MT_LAYER_MAMBA1);
    char err[256];
    mt_model_state st;
    assert_false(mt_model_state_init(&st, &m, 1, MT_F64, err, sizeof err));
    assert_non_null(strstr(err, "Mamba1"));
    mt_model_state_release(&st);
    mt_model_release(&m);
    cpu->destroy(cpu);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(steps_equal_the_full_forward),
                                       cmocka_unit_test(greedy_generation_matches_full_forwards),
                                       cmocka_unit_test(prompts_of_different_lengths),
                                       cmocka_unit_test(mamba1_is_refused)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
