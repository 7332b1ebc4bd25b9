/* Released weights against the reference implementation: the fixtures in
 * tests/fixtures (made by make_fixtures.py with HF transformers' plain
 * PyTorch Mamba and Mamba-2, in fp32) load in both formats and both key
 * schemes, and our CPU forward and backward on them give the reference's
 * logits, loss and gradients, and greedy generation gives transformers'
 * ids. Bad model directories give errors naming the file and the key. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <cmocka.h>

#include "generate/generate.h"
#include "io/file_io.h"
#include "io/safetensors.h"
#include "io/torch_checkpoint.h"
#include "layers/config_json.h"
#include "testlib.h"
#include "train/export.h"
#include "train/pretrained.h"
#include "train/train_config.h"
#include "train/trainer.h"

#define FIXTURES MT_SOURCE_DIR "/tests/fixtures"

/* Loads kind-tiny-<scheme> in f64, runs the fixture's batch and compares. */
static void check_fixture(const char *kind, const char *scheme)
{
    mt_model m;
    mt_st_file *ef = tl_load_fixture(&m, kind, scheme, MT_CPU, MT_F64);
    mt_tensor *tokens = tl_read_st(ef, "tokens"), *ref_logits = tl_read_st(ef, "logits");
    mt_tensor *ref_loss = tl_read_st(ef, "loss");
    const int64_t V = ref_logits->shape[2];
    assert_int_equal(V, m.cfg.vocab_padded);
    mt_tensor *targets = tl_next_token_targets(tokens);

    mt_backend *cpu = mt_backend_cpu_create();
    mt_ctx c;
    mt_ctx_init(&c, cpu, 0);
    mt_tensor *logits = mt_model_logits(&c, &m, tokens, NULL, MT_F64);
    mt_tensor *loss = mt_cross_entropy(&c, logits, targets, TL_IGNORE);
    mt_backward(&c, loss);

    const double logit_err = tl_rel_err(logits, ref_logits);
    const double loss_err = fabs(mt_get(loss, 0) - mt_get(ref_loss, 0)) / mt_get(ref_loss, 0);
    double grad_err = 0;
    int ngrads = 0;
    for (int i = 0; i < mt_safetensors_count(ef); i++) {
        const char *name = mt_safetensors_at(ef, i)->name;
        if (strncmp(name, "grad.", 5) != 0)
            continue;
        mt_param *q = mt_params_find(&m.params, name + 5);
        assert_non_null(q);
        mt_tensor *ref = tl_read_st(ef, name);
        double e = tl_rel_err(&q->grad, ref);
        printf("  %s %s: %s rel err %.2e\n", kind, scheme, name, e);
        grad_err = fmax(grad_err, e);
        ngrads++;
        mt_tensor_free(ref);
    }
    printf("pretrained %s (%s): logits rel err %.2e, loss %.6f vs %.6f (rel %.2e), %d gradients max rel err %.2e\n",
           kind, scheme, logit_err, mt_get(loss, 0), mt_get(ref_loss, 0), loss_err, ngrads, grad_err);
    assert_true(logit_err <= 1e-5);
    assert_true(loss_err <= 1e-5);
    assert_int_equal(ngrads, 6);
    assert_true(grad_err <= 1e-4);

    mt_ctx_release(&c);
    cpu->destroy(cpu);
    mt_tensor *all[] = {tokens, ref_logits, ref_loss, targets};
    for (int i = 0; i < 4; i++)
        mt_tensor_free(all[i]);
    mt_safetensors_close(ef);
    mt_model_release(&m);
}

static void test_mamba2_transformers_safetensors(void **state)
{
    (void)state;
    check_fixture("mamba2", "hf");
}

static void test_mamba2_reference_torch_bin(void **state)
{
    (void)state;
    check_fixture("mamba2", "ref");
}

static void test_mamba1_transformers_safetensors(void **state)
{
    (void)state;
    check_fixture("mamba", "hf");
}

static void test_mamba1_reference_torch_bin(void **state)
{
    (void)state;
    check_fixture("mamba", "ref");
}

/* With a finite dt clamp that binds (time_step_limit, the reference's
 * dt_limit) and chunk_size 8, which runs as 16: the same logits. */
static void test_mamba2_dt_limit_transformers_safetensors(void **state)
{
    (void)state;
    check_fixture("mamba2-limit", "hf");
}

static void test_mamba2_dt_limit_reference_torch_bin(void **state)
{
    (void)state;
    check_fixture("mamba2-limit", "ref");
    static const char *const schemes[] = {"hf", "ref"};
    for (int i = 0; i < 2; i++) {
        char dir[512], err[512];
        snprintf(dir, sizeof dir, "%s/mamba2-limit-tiny-%s", FIXTURES, schemes[i]);
        mt_model_config c;
        if (!mt_pretrained_config(dir, &c, err, sizeof err))
            fail_msg("%s", err);
        assert_true(c.dt_limit_min == 0.005 && c.dt_limit_max == 0.02);
        assert_int_equal(c.chunk_size, 16);
    }
}

/* The fixture's greedy ids (make_fixtures.py's 16 tokens after the first 8
 * of tokens: the argmax of transformers' full forwards, which its generate
 * through the recurrent cache gives too, but for the dt limit) equal ours
 * in f64: mt_generate where the layer kind has a recurrent step, else the
 * argmax of the full forward of each sequence so far. */
static void check_greedy(const char *kind)
{
    enum { P = 8 };
    mt_model m;
    mt_st_file *ef = tl_load_fixture(&m, kind, "hf", MT_CPU, MT_F64);
    mt_tensor *tokens = tl_read_st(ef, "tokens"), *want = tl_read_st(ef, "greedy");
    const int64_t rows = want->shape[0], W = want->shape[1], V = m.cfg.vocab_padded;
    assert_true(W > P && tokens->shape[0] == rows && tokens->shape[1] >= P);
    int32_t *prompt = malloc((size_t)(rows * P) * sizeof *prompt), *out = malloc((size_t)(rows * W) * sizeof *out);
    for (int64_t b = 0; b < rows; b++)
        for (int64_t t = 0; t < P; t++) {
            prompt[b * P + t] = (int32_t)mt_get(tokens, b * tokens->shape[1] + t);
            assert_int_equal((int64_t)mt_get(want, b * W + t), prompt[b * P + t]);
        }
    mt_backend *cpu = mt_backend_cpu_create();
    const bool stepped = m.layers[0].kind->n_state > 0;
    if (stepped) {
        mt_generate_config g = {.sampling = mt_sampling_greedy(), .max_new_tokens = W - P, .eos_id = -1,
                                .compute = MT_F64};
        mt_generate_result res;
        char err[256];
        if (!mt_generate(cpu, &m, prompt, rows, P, NULL, &g, out, &res, err, sizeof err))
            fail_msg("%s", err);
    } else {
        mt_ctx c;
        mt_ctx_init(&c, cpu, 0);
        c.grad_enabled = false;
        for (int64_t b = 0; b < rows; b++) {
            memcpy(out + b * W, prompt + b * P, P * sizeof *out);
            for (int64_t n = P; n < W; n++) {
                mt_tensor *ids = mt_tensor_new(MT_CPU, MT_I32, 2, (int64_t[]){1, n});
                memcpy(ids->data, out + b * W, (size_t)n * sizeof *out);
                mt_tensor *logits = mt_model_logits(&c, &m, ids, NULL, MT_F64);
                int64_t best = 0;
                for (int64_t v = 1; v < m.cfg.vocab_size; v++)
                    if (mt_get(logits, (n - 1) * V + v) > mt_get(logits, (n - 1) * V + best))
                        best = v;
                out[b * W + n] = (int32_t)best;
                mt_tensor_free(ids);
                mt_ctx_end_step(&c);
            }
        }
        mt_ctx_release(&c);
    }
    int64_t same = 0;
    for (int64_t i = 0; i < rows * W; i++)
        same += out[i] == (int32_t)mt_get(want, i);
    printf("greedy %s (%s): %lld of %lld ids equal transformers'\n", kind,
           stepped ? "mt_generate" : "full forwards", (long long)same, (long long)(rows * W));
    assert_int_equal(same, rows * W);
    free(prompt);
    free(out);
    cpu->destroy(cpu);
    mt_tensor_free(tokens);
    mt_tensor_free(want);
    mt_safetensors_close(ef);
    mt_model_release(&m);
}

static void test_greedy_equals_transformers(void **state)
{
    (void)state;
    check_greedy("mamba2");
    check_greedy("mamba2-limit");
    check_greedy("mamba");
}

/* A model directory in the temp dir: config_text as config.json, and the
 * fixture's Mamba-2 weights with key drop left out, key rename renamed to
 * rename_to, key as_int's bytes labelled I32, key nan_in's first element
 * NaN, and one extra tensor when extra is set. */
static const char *make_dir(const char *name, const char *config_text, const char *drop, const char *rename,
                            const char *rename_to, const char *as_int, const char *nan_in, const char *extra)
{
    static char dir[512];
    char path[600], err[512];
    snprintf(dir, sizeof dir, "%s/%s", tl_temp_dir(), name);
    assert_int_equal(mkdir(dir, 0755), 0);
    snprintf(path, sizeof path, "%s/config.json", dir);
    assert_true(mt_write_file_synced(path, config_text, strlen(config_text), err, sizeof err));
    mt_st_file *src = mt_safetensors_open(FIXTURES "/mamba2-tiny-hf/model.safetensors", err, sizeof err);
    assert_non_null(src);
    int n = mt_safetensors_count(src), k = 0;
    mt_st_entry *entries = calloc((size_t)n + 1, sizeof *entries);
    void **data = calloc((size_t)n + 1, sizeof *data);
    for (int i = 0; i < n; i++) {
        const mt_st_tensor *t = mt_safetensors_at(src, i);
        if (drop && strcmp(t->name, drop) == 0)
            continue;
        size_t bytes = t->end - t->begin;
        data[k] = malloc(bytes ? bytes : 1);
        assert_true(mt_safetensors_read(src, t, data[k], bytes, err, sizeof err));
        if (nan_in && strcmp(t->name, nan_in) == 0)
            ((float *)data[k])[0] = NAN;
        entries[k] = (mt_st_entry){rename && strcmp(t->name, rename) == 0 ? rename_to : t->name,
                                   as_int && strcmp(t->name, as_int) == 0 ? MT_ST_I32 : t->dtype, t->ndim, t->shape,
                                   data[k]};
        k++;
    }
    static const float one[4] = {1, 2, 3, 4};
    static const int64_t one_shape[1] = {4};
    if (extra)
        entries[k++] = (mt_st_entry){extra, MT_ST_F32, 1, one_shape, one};
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    if (!mt_safetensors_write(path, entries, k, NULL, err, sizeof err))
        fail_msg("%s", err);
    for (int i = 0; i < n; i++)
        free(data[i]);
    free(data);
    free(entries);
    mt_safetensors_close(src);
    return dir;
}

/* The fixture's transformers config.json with one key set to value (JSON). */
static char *hf_config_with(const char *key, const char *value)
{
    json_error_t jerr;
    json_t *j = json_load_file(FIXTURES "/mamba2-tiny-hf/config.json", 0, &jerr);
    assert_non_null(j);
    if (key)
        json_object_set_new(j, key, json_loads(value, JSON_DECODE_ANY, &jerr));
    char *text = json_dumps(j, 0);
    json_decref(j);
    return text;
}

/* Loading dir into a model of its config fails with a message holding want. */
static void assert_load_fails(const char *dir, const char *want)
{
    char err[512];
    mt_model_config cfg;
    assert_true(mt_pretrained_config(dir, &cfg, err, sizeof err));
    mt_model m;
    mt_model_build(&m, &cfg, MT_CPU, MT_F32);
    bool ok = mt_pretrained_load(dir, &m, err, sizeof err);
    printf("  expected error: %s\n", ok ? "(none)" : err);
    assert_false(ok);
    assert_non_null(strstr(err, want));
    mt_model_release(&m);
}

static void test_bad_weights_name_the_key(void **state)
{
    (void)state;
    char *cfg = hf_config_with(NULL, NULL);
    assert_load_fails(make_dir("missing", cfg, "backbone.layers.1.mixer.D", NULL, NULL, NULL, NULL, NULL),
                      "missing key \"backbone.layers.1.mixer.D\" (shape (4))");
    assert_load_fails(make_dir("unexpected", cfg, NULL, NULL, NULL, NULL, NULL, "backbone.layers.0.mixer.bias"),
                      "unexpected key \"backbone.layers.0.mixer.bias\"");
    /* A tensor under another parameter's name (of the same shape). */
    assert_load_fails(make_dir("shape", cfg, "backbone.layers.0.mixer.D", "backbone.layers.0.mixer.A_log",
                               "backbone.layers.0.mixer.D", NULL, NULL, NULL),
                      "missing key \"backbone.layers.0.mixer.A_log\"");
    assert_load_fails(make_dir("dtype", cfg, NULL, NULL, NULL, "backbone.norm_f.weight", NULL, NULL),
                      "\"backbone.norm_f.weight\": dtype I32 is not a float dtype");
    assert_load_fails(make_dir("nan", cfg, NULL, NULL, NULL, NULL, "backbone.layers.1.mixer.dt_bias", NULL),
                      "\"backbone.layers.1.mixer.dt_bias\" holds NaN at element 0");
    free(cfg);
    /* config.json says 2 heads of 32 where the weights have 4 of 16. */
    json_error_t jerr;
    json_t *j = json_load_file(FIXTURES "/mamba2-tiny-hf/config.json", 0, &jerr);
    json_object_set_new(j, "num_heads", json_integer(2));
    json_object_set_new(j, "head_dim", json_integer(32));
    char *heads = json_dumps(j, 0);
    assert_load_fails(make_dir("heads", heads, NULL, NULL, NULL, NULL, NULL, NULL),
                      "key \"backbone.layers.0.mixer.in_proj.weight\": shape (164, 32) in the file, (162, 32) in "
                      "the model");
    json_decref(j);
    free(heads);
}

static void test_transformers_config(void **state)
{
    (void)state;
    char err[512];
    mt_model_config c;
    struct { const char *key, *value, *want; } bad[] = {
        {"use_bias", "true", "use_bias"},
        {"norm_before_gate", "true", "norm_before_gate"},
        {"hidden_act", "\"gelu\"", "hidden_act"},
        {"num_heads", "3", "num_heads"},
        {"model_type", "\"llama\"", "model_type: \"llama\""},
        {"time_step_limit", "[0.0]", "time_step_limit"},
        {"state_size", "\"16\"", "state_size: must be an integer"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *text = hf_config_with(bad[i].key, bad[i].value);
        json_error_t jerr;
        json_t *j = json_loads(text, 0, &jerr);
        bool ok = mt_model_config_from_any_json(j, &c, err, sizeof err);
        printf("  %s = %s: %s\n", bad[i].key, bad[i].value, ok ? "(accepted)" : err);
        assert_false(ok);
        assert_non_null(strstr(err, bad[i].want));
        json_decref(j);
        free(text);
    }
    /* Written back in transformers' scheme, a config reads as itself. */
    char *text = hf_config_with(NULL, NULL);
    json_error_t jerr;
    json_t *j = json_loads(text, 0, &jerr);
    mt_model_config a, b;
    assert_true(mt_model_config_from_any_json(j, &a, err, sizeof err));
    json_t *back = mt_model_config_to_hf_json(&a);
    assert_true(mt_model_config_from_any_json(back, &b, err, sizeof err));
    assert_int_equal(a.layer, b.layer);
    assert_int_equal(a.d_model, b.d_model);
    assert_int_equal(a.n_layer, b.n_layer);
    assert_int_equal(a.d_state, b.d_state);
    assert_int_equal(a.ngroups, b.ngroups);
    assert_int_equal(a.chunk_size, b.chunk_size);
    assert_int_equal(a.nheads, b.nheads);
    assert_int_equal(a.vocab_padded, b.vocab_padded);
    assert_true(a.tie_embeddings == b.tie_embeddings && a.conv_bias == b.conv_bias && a.norm_eps == b.norm_eps);
    assert_int_equal(a.nheads, 4);
    assert_int_equal(a.headdim, 16);
    assert_int_equal(a.vocab_padded, 64);
    json_decref(back);
    json_decref(j);
    free(text);
}

/* mt_pretrained_config on a config.json of text in the temp dir. */
static bool config_from_text(const char *name, const char *text, mt_model_config *c, char *err, size_t errlen)
{
    char dir[512], path[600];
    snprintf(dir, sizeof dir, "%s/%s", tl_temp_dir(), name);
    assert_int_equal(mkdir(dir, 0755), 0);
    snprintf(path, sizeof path, "%s/config.json", dir);
    assert_true(mt_write_file_synced(path, text, strlen(text), err, errlen));
    return mt_pretrained_config(dir, c, err, errlen);
}

/* The fixture's config.json with "time_step_limit": limit (JSON text,
 * possibly Python's extension) in place of its own. */
static char *hf_config_with_limit(const char *limit)
{
    char *text = hf_config_with("time_step_limit", "\"LIMIT\"");
    char *at = strstr(text, "\"LIMIT\"");
    assert_non_null(at);
    char *out = malloc(strlen(text) + strlen(limit) + 1);
    sprintf(out, "%.*s%s%s", (int)(at - text), text, limit, at + 7);
    free(text);
    return out;
}

/* transformers' config.json as its versions write a non-finite limit:
 * bare Infinity (Python's json, transformers 4) and {"__float__": ...}
 * (transformers 5, the fixture's); NaN where a number must be finite is
 * named; the tokens inside strings are left alone. */
static void test_nonfinite_json(void **state)
{
    (void)state;
    char err[512];
    mt_model_config c;
    if (!mt_pretrained_config(FIXTURES "/mamba2-tiny-hf", &c, err, sizeof err))
        fail_msg("%s", err);
    assert_true(c.dt_limit_min == 0 && isinf(c.dt_limit_max));
    static const struct {
        const char *limit;
        double lo, hi;
    } good[] = {{"[0.0, Infinity]", 0, INFINITY}, {"[0.0,Infinity]", 0, INFINITY}, {"[0.001, 0.1]", 0.001, 0.1},
                {"[0.0, {\"__float__\": \"Infinity\"}]", 0, INFINITY}, {"[0.0, null]", 0, INFINITY}};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        char name[32];
        snprintf(name, sizeof name, "good-%zu", i);
        char *text = hf_config_with_limit(good[i].limit);
        if (!config_from_text(name, text, &c, err, sizeof err))
            fail_msg("%s: %s", good[i].limit, err);
        assert_true(c.dt_limit_min == good[i].lo && c.dt_limit_max == good[i].hi);
        free(text);
    }
    static const struct {
        const char *limit, *want;
    } bad[] = {{"[0.0, NaN]", "time_step_limit: must be [low, high]"},
               {"[-Infinity, 1]", "time_step_limit: must be [low, high]"},
               {"[0.0, Infinit]", "line"}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char name[32];
        snprintf(name, sizeof name, "bad-%zu", i);
        char *text = hf_config_with_limit(bad[i].limit);
        assert_false(config_from_text(name, text, &c, err, sizeof err));
        printf("  %s: %s\n", bad[i].limit, err);
        assert_non_null(strstr(err, bad[i].want));
        assert_non_null(strstr(err, "config.json"));
        free(text);
    }
    char *text = hf_config_with("time_step_min", "\"NAN_HERE\"");
    char *at = strstr(text, "\"NAN_HERE\"");
    memcpy(at, "NaN       ", 10);
    assert_false(config_from_text("nan-min", text, &c, err, sizeof err));
    assert_non_null(strstr(err, "time_step_min: must be a finite number"));
    free(text);
    text = hf_config_with("_name_or_path", "\"a [NaN, Infinity] in a string\"");
    if (!config_from_text("in-string", text, &c, err, sizeof err))
        fail_msg("%s", err);
    free(text);
}

/* chunk_size is a tiling choice: a config.json value outside the kernels'
 * range loads as the nearest one they run (an INI's [model] key is still
 * range-checked: test_train_config). */
static void test_chunk_size_nearest(void **state)
{
    (void)state;
    char err[512];
    mt_model_config c;
    static const struct {
        const char *value;
        int want;
    } cases[] = {{"8", 16}, {"1", 16}, {"64", 64}, {"512", 256}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char name[32];
        snprintf(name, sizeof name, "chunk-%zu", i);
        char *text = hf_config_with("chunk_size", cases[i].value);
        if (!config_from_text(name, text, &c, err, sizeof err))
            fail_msg("chunk_size %s: %s", cases[i].value, err);
        assert_int_equal(c.chunk_size, cases[i].want);
        free(text);
    }
}

/* Every parameter of models a and b, bit for bit. */
static void assert_same_params(const mt_model *a, const mt_model *b)
{
    assert_int_equal(a->params.n, b->params.n);
    for (int i = 0; i < a->params.n; i++) {
        const mt_param *q = a->params.items[i], *r = mt_params_find(&b->params, q->name);
        assert_non_null(r);
        assert_int_equal(mt_nbytes(&q->value), mt_nbytes(&r->value));
        assert_memory_equal(q->value.data, r->value.data, mt_nbytes(&q->value));
    }
}

static void load_f32(const char *dir, mt_model *m)
{
    char err[512];
    mt_model_config cfg;
    if (!mt_pretrained_config(dir, &cfg, err, sizeof err))
        fail_msg("%s", err);
    mt_model_build(m, &cfg, MT_CPU, MT_F32);
    if (!mt_pretrained_load(dir, m, err, sizeof err))
        fail_msg("%s", err);
}

/* A fixture exported in each format and read back gives the same weights;
 * the reference export holds the tied head. */
static void test_export_round_trip(void **state)
{
    (void)state;
    static const char *const kinds[] = {"mamba", "mamba2"}, *const formats[] = {"reference", "hf"};
    char src[512], out[512], err[512];
    for (int k = 0; k < 2; k++)
        for (int f = 0; f < 2; f++) {
            snprintf(src, sizeof src, "%s/%s-tiny-hf", FIXTURES, kinds[k]);
            snprintf(out, sizeof out, "%s/%s-%s", tl_temp_dir(), kinds[k], formats[f]);
            if (!mt_export(src, formats[f], out, err, sizeof err))
                fail_msg("%s", err);
            mt_model a, b;
            load_f32(src, &a);
            load_f32(out, &b);
            assert_same_params(&a, &b);
            mt_model_release(&a);
            mt_model_release(&b);
        }
    /* The limits go back as each format writes them: transformers' always
     * (Infinity for none), the reference's when not its default. */
    static const struct {
        const char *kind, *format, *want;
        double lo, hi;
    } limits[] = {{"mamba2", "hf", "\"time_step_limit\": [\n    0.0,\n    Infinity\n  ]", 0, INFINITY},
                  {"mamba2", "reference", NULL, 0, INFINITY},
                  {"mamba2-limit", "hf", "\"time_step_limit\": [", 0.005, 0.02},
                  {"mamba2-limit", "reference", "\"dt_limit\": [", 0.005, 0.02}};
    for (size_t i = 0; i < sizeof limits / sizeof limits[0]; i++) {
        snprintf(src, sizeof src, "%s/%s-tiny-hf", FIXTURES, limits[i].kind);
        snprintf(out, sizeof out, "%s/limit-%zu", tl_temp_dir(), i);
        if (!mt_export(src, limits[i].format, out, err, sizeof err))
            fail_msg("%s", err);
        char path[600];
        snprintf(path, sizeof path, "%s/config.json", out);
        char *text = tl_read_text(path);
        if (limits[i].want && !strstr(text, limits[i].want))
            fail_msg("%s %s export: no %s in\n%s", limits[i].kind, limits[i].format, limits[i].want, text);
        assert_true(limits[i].want || !strstr(text, "dt_limit"));
        free(text);
        mt_model_config c;
        if (!mt_pretrained_config(out, &c, err, sizeof err))
            fail_msg("%s", err);
        assert_true(c.dt_limit_min == limits[i].lo && c.dt_limit_max == limits[i].hi);
    }
    snprintf(out, sizeof out, "%s/mamba2-reference/pytorch_model.bin", tl_temp_dir());
    mt_torch_file *t = mt_torch_open(out, err, sizeof err);
    assert_non_null(t);
    assert_non_null(mt_torch_find(t, "lm_head.weight"));
    assert_non_null(mt_torch_find(t, "backbone.embedding.weight"));
    mt_torch_close(t);
    assert_false(mt_export(src, "onnx", out, err, sizeof err));
    assert_non_null(strstr(err, "must be reference or hf"));
}

/* The fixture's weights split over two shards with an index load as the
 * single file does; an index that promises a key a shard lacks is named. */
static void test_sharded_safetensors(void **state)
{
    (void)state;
    char err[512], dir[512], path[600];
    snprintf(dir, sizeof dir, "%s/sharded", tl_temp_dir());
    assert_int_equal(mkdir(dir, 0755), 0);
    mt_st_file *src = mt_safetensors_open(FIXTURES "/mamba2-tiny-hf/model.safetensors", err, sizeof err);
    assert_non_null(src);
    const int n = mt_safetensors_count(src);
    mt_st_entry *entries = calloc((size_t)n, sizeof *entries);
    void **data = calloc((size_t)n, sizeof *data);
    json_t *map = json_object();
    for (int i = 0; i < n; i++) {
        const mt_st_tensor *t = mt_safetensors_at(src, i);
        data[i] = malloc(t->end - t->begin);
        assert_true(mt_safetensors_read(src, t, data[i], t->end - t->begin, err, sizeof err));
        entries[i] = (mt_st_entry){t->name, t->dtype, t->ndim, t->shape, data[i]};
        json_object_set_new(map, t->name, json_string(i < n / 2 ? "part-1.safetensors" : "part-2.safetensors"));
    }
    snprintf(path, sizeof path, "%s/part-1.safetensors", dir);
    assert_true(mt_safetensors_write(path, entries, n / 2, NULL, err, sizeof err));
    snprintf(path, sizeof path, "%s/part-2.safetensors", dir);
    assert_true(mt_safetensors_write(path, entries + n / 2, n - n / 2, NULL, err, sizeof err));
    json_t *index = json_pack("{s:{},s:O}", "metadata", "weight_map", map);
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    assert_int_equal(json_dump_file(index, path, 0), 0);
    snprintf(path, sizeof path, "%s/config.json", dir);
    char *cfg = hf_config_with(NULL, NULL);
    assert_true(mt_write_file_synced(path, cfg, strlen(cfg), err, sizeof err));

    mt_model a, b;
    load_f32(FIXTURES "/mamba2-tiny-hf", &a);
    load_f32(dir, &b);
    assert_same_params(&a, &b);
    mt_model_release(&a);
    mt_model_release(&b);

    /* The index now says a first-shard key is in the second. */
    json_object_set_new(map, entries[0].name, json_string("part-2.safetensors"));
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    assert_int_equal(json_dump_file(index, path, 0), 0);
    mt_model_config c;
    assert_true(mt_pretrained_config(dir, &c, err, sizeof err));
    mt_model m;
    mt_model_build(&m, &c, MT_CPU, MT_F32);
    assert_false(mt_pretrained_load(dir, &m, err, sizeof err));
    printf("  expected error: %s\n", err);
    assert_non_null(strstr(err, "is not in part-2.safetensors, as its weight_map says"));
    mt_model_release(&m);

    json_decref(index);
    json_decref(map);
    free(cfg);
    for (int i = 0; i < n; i++)
        free(data[i]);
    free(data);
    free(entries);
    mt_safetensors_close(src);
}

/* A fine-tuning run on the mamba2 fixture in out_dir name with peak LR lr. */
static void finetune(const char *name, const char *lr, int steps, mt_train_result *res)
{
    char err[1024], init[600], lr_set[64], steps_set[64];
    mt_train_config c;
    mt_train_config_defaults(&c);
    snprintf(init, sizeof init, "model.init_from=%s/mamba2-tiny-ref", FIXTURES);
    snprintf(lr_set, sizeof lr_set, "train.lr=%s", lr);
    snprintf(steps_set, sizeof steps_set, "train.steps=%d", steps);
    const char *sets[] = {init, lr_set, steps_set, "data.synthetic=selective-copy", "data.synthetic_examples=2000",
                          "data.synthetic_memorize=4", "data.loss_on=all", "data.seq_len=32",
                          "data.batch_size=16", "train.warmup_steps=1", "train.device=cpu", "train.precision=fp32",
                          "log.eval_every=0", "log.log_every=20"};
    for (size_t i = 0; i < sizeof sets / sizeof sets[0]; i++)
        if (!mt_train_config_set(&c, sets[i], err, sizeof err))
            fail_msg("%s", err);
    snprintf(c.log.out_dir, sizeof c.log.out_dir, "%s/%s", tl_temp_dir(), name);
    if (!mt_train_config_finalize(&c, err, sizeof err))
        fail_msg("%s", err);
    assert_int_equal(c.model.d_model, 32); /* from the fixture's config.json, not the defaults */
    assert_int_equal(c.model.nheads, 4);
    mt_train_options opt = {0};
    if (!mt_train(&c, &opt, res, err, sizeof err))
        fail_msg("%s", err);
}

/* Fine-tuning from released weights: a step of negligible LR leaves the
 * fixture's weights in place (nothing was re-initialized, dt_bias and A_log
 * included), and training lowers the loss from there. */
static void test_finetune_from_fixture(void **state)
{
    (void)state;
    mt_train_result still, trained;
    finetune("still", "1e-12", 1, &still);
    mt_model fixture, after;
    load_f32(FIXTURES "/mamba2-tiny-ref", &fixture);
    load_f32(still.checkpoint, &after);
    double worst = 0;
    for (int i = 0; i < fixture.params.n; i++) {
        const mt_param *q = fixture.params.items[i], *r = mt_params_find(&after.params, q->name);
        for (int64_t k = 0; k < mt_numel(&q->value); k++)
            worst = fmax(worst, fabs(mt_get(&q->value, k) - mt_get(&r->value, k)));
    }
    printf("fine-tune: largest weight change after one step at LR 1e-12: %.2e\n", worst);
    assert_true(worst < 1e-9);
    mt_model_release(&fixture);
    mt_model_release(&after);

    finetune("trained", "1e-2", 40, &trained);
    printf("fine-tune from the mamba2 fixture: loss %.4f at step 1, %.4f at step 40\n", still.last_loss,
           trained.last_loss);
    assert_true(trained.last_loss < 0.6 * still.last_loss);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_transformers_config),
        cmocka_unit_test_setup_teardown(test_bad_weights_name_the_key, tl_temp_dir_setup, tl_temp_dir_teardown),
        cmocka_unit_test_setup_teardown(test_export_round_trip, tl_temp_dir_setup, tl_temp_dir_teardown),
        cmocka_unit_test_setup_teardown(test_sharded_safetensors, tl_temp_dir_setup, tl_temp_dir_teardown),
        cmocka_unit_test_setup_teardown(test_finetune_from_fixture, tl_temp_dir_setup, tl_temp_dir_teardown),
        cmocka_unit_test(test_mamba2_transformers_safetensors),
        cmocka_unit_test(test_greedy_equals_transformers),
        cmocka_unit_test(test_mamba1_transformers_safetensors),
        cmocka_unit_test(test_mamba2_reference_torch_bin),
        cmocka_unit_test(test_mamba1_reference_torch_bin),
        cmocka_unit_test(test_mamba2_dt_limit_transformers_safetensors),
        cmocka_unit_test(test_mamba2_dt_limit_reference_torch_bin),
        cmocka_unit_test_setup_teardown(test_nonfinite_json, tl_temp_dir_setup, tl_temp_dir_teardown),
        cmocka_unit_test_setup_teardown(test_chunk_size_nearest, tl_temp_dir_setup, tl_temp_dir_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
