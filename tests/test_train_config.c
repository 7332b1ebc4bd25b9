/* The run configuration: every error path names the file, the line and the
 * key; overrides; validation across keys; the written config reads back to
 * the same values; every shipped config in configs/ parses. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "testlib.h"

#include "layers/model.h"
#include "train/train_config.h"

static char err[1024];

static const char *write_ini(const char *name, const char *text)
{
    static char path[256];
    snprintf(path, sizeof path, "%s/%s", tl_temp_dir(), name);
    FILE *f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
    return path;
}

static void expect(bool ok, const char *want1, const char *want2)
{
    assert_false(ok);
    if (!strstr(err, want1) || (want2 && !strstr(err, want2)))
        fail_msg("error \"%s\" should contain \"%s\"%s%s", err, want1, want2 ? " and " : "", want2 ? want2 : "");
}

static void load_errors(void **state)
{
    (void)state;
    mt_train_config c;
    mt_train_config_defaults(&c);
    const char *p = write_ini("unknown.ini", "[model]\nd_model = 64\n\n[train]\nstepz = 3\n");
    expect(mt_train_config_load(&c, p, err, sizeof err), "unknown.ini:5:", "[train] stepz: no such key");
    p = write_ini("badint.ini", "[model]\nn_layer = two\n");
    expect(mt_train_config_load(&c, p, err, sizeof err), "badint.ini:2:", "[model] n_layer: \"two\" is not an integer");
    p = write_ini("baddouble.ini", "[train]\nlr = 1e-3x\n");
    expect(mt_train_config_load(&c, p, err, sizeof err), "baddouble.ini:2:", "not a number");
    p = write_ini("badbool.ini", "[data]\nshuffle = maybe\n");
    expect(mt_train_config_load(&c, p, err, sizeof err), "badbool.ini:2:", "not true or false");
    p = write_ini("badword.ini", "[train]\nschedule = linear\n");
    expect(mt_train_config_load(&c, p, err, sizeof err), "badword.ini:2:", "not one of cosine|wsd|constant");
    p = write_ini("nosection.ini", "lr = 1\n");
    expect(mt_train_config_load(&c, p, err, sizeof err), "nosection.ini:1:", "no such key");
    p = write_ini("syntax.ini", "[train]\nthis line has no equals sign\n");
    expect(mt_train_config_load(&c, p, err, sizeof err), "syntax.ini:2:", NULL);
    expect(mt_train_config_load(&c, "/nonexistent/run.ini", err, sizeof err), "/nonexistent/run.ini",
           "cannot open");
    expect(mt_train_config_load(&c, tl_temp_dir(), err, sizeof err), tl_temp_dir(), "a directory");
    p = write_ini("inf.ini", "[train]\nlr = inf\n");
    expect(mt_train_config_load(&c, p, err, sizeof err), "inf.ini:2:", "[train] lr: \"inf\" is not a finite number");
    p = write_ini("bound.ini", "[model]\ndt_limit_max = inf\n");
    assert_true(mt_train_config_load(&c, p, err, sizeof err));
}

/* A key set twice in one file is warned about on stderr, naming it. */
static void duplicate_key_warns(void **state)
{
    (void)state;
    mt_train_config c;
    mt_train_config_defaults(&c);
    const char *p = write_ini("twice.ini", "[train]\nlr = 1e-3\nsteps = 5\nlr = 2e-3\n");
    char log[256];
    snprintf(log, sizeof log, "%s/twice.log", tl_temp_dir());
    fflush(stderr);
    const int saved = dup(2);
    assert_true(freopen(log, "w", stderr) != NULL);
    const bool ok = mt_train_config_load(&c, p, err, sizeof err);
    fflush(stderr);
    assert_int_equal(dup2(saved, 2), 2);
    close(saved);
    assert_true(ok);
    assert_true(c.train.lr == 2e-3);
    FILE *f = fopen(log, "r");
    char text[512] = {0};
    assert_true(fread(text, 1, sizeof text - 1, f) > 0);
    fclose(f);
    if (!strstr(text, "twice.ini: [train] lr is set more than once"))
        fail_msg("stderr was \"%s\"", text);
    assert_null(strstr(text, "steps"));
}

/* Sizes derived from the model keys are checked, not wrapped: a model too
 * large for any int is refused naming its keys, and one too large for the
 * machine before anything is allocated, with the bytes it would need. */
static void sizes_are_checked(void **state)
{
    (void)state;
    static const struct {
        const char *set, *want1, *want2;
    } cases[] = {
        {"model.expand=1073741824", "[model] d_inner (expand * d_model)", "out of range"},
        {"model.d_model=1000000000", "[model]", "out of range"},
        {"model.vocab_size=2147483647", "[model] the padded vocabulary", "2147483648"},
        {"model.d_model=400000", "parameters need at least", "bytes a rank"},
        {"data.seq_len=2000000000", "[data] batch_size 8 x seq_len 2000000000", "bytes a rank"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        mt_train_config c;
        mt_train_config_defaults(&c);
        assert_true(mt_train_config_set(&c, "data.synthetic=induction", err, sizeof err));
        assert_true(mt_train_config_set(&c, "train.device=cpu", err, sizeof err));
        assert_true(mt_train_config_set(&c, cases[i].set, err, sizeof err));
        expect(mt_train_config_finalize(&c, err, sizeof err), cases[i].want1, cases[i].want2);
    }
}

/* mt_model_config_param_count is the built model's parameter count. */
static void param_count_matches_the_model(void **state)
{
    (void)state;
    for (int k = 0; k < 4; k++) {
        mt_model_config cfg;
        mt_model_config_defaults(&cfg);
        cfg.d_model = 48, cfg.n_layer = 3, cfg.vocab_size = 37, cfg.d_state = 8, cfg.headdim = 16;
        if (k == 1)
            cfg.tie_embeddings = false, cfg.ngroups = 2;
        if (k >= 2) {
            mt_model_config_use_mamba1(&cfg);
            cfg.conv_bias = k == 2;
            cfg.dt_rank = k == 3 ? 5 : 0;
        }
        assert_true(mt_model_config_finalize(&cfg, err, sizeof err));
        int64_t count;
        assert_true(mt_model_config_param_count(&cfg, &count, err, sizeof err));
        mt_model m;
        mt_model_build(&m, &cfg, MT_CPU, MT_F32);
        assert_int_equal(count, (int64_t)m.params.numel);
        mt_model_release(&m);
    }
}

static void overrides(void **state)
{
    (void)state;
    mt_train_config c;
    mt_train_config_defaults(&c);
    assert_true(mt_train_config_set(&c, "train.lr=0.5", err, sizeof err));
    assert_true(c.train.lr == 0.5);
    assert_true(mt_train_config_set(&c, "data.train=a.h5 b.h5", err, sizeof err));
    assert_string_equal(c.data.train, "a.h5 b.h5");
    assert_true(mt_train_config_set(&c, "model.dt_limit_max=inf", err, sizeof err));
    assert_true(isinf(c.model.dt_limit_max));
    expect(mt_train_config_set(&c, "train.lr", err, sizeof err), "expected section.key=value", NULL);
    expect(mt_train_config_set(&c, "train.nope=1", err, sizeof err), "no such key train.nope", NULL);
    expect(mt_train_config_set(&c, "train.steps=-", err, sizeof err), "--set train.steps", "not an integer");
}

static void finalize_errors(void **state)
{
    (void)state;
    mt_train_config c;
    mt_train_config_defaults(&c);
    expect(mt_train_config_finalize(&c, err, sizeof err), "[data] train", "no training shards");
    c.data.synthetic = MT_SYNTHETIC_INDUCTION;
    assert_true(mt_train_config_finalize(&c, err, sizeof err));
    c.model.headdim = 100; /* d_inner 1536 is not a multiple */
    expect(mt_train_config_finalize(&c, err, sizeof err), "[model]", "headdim");
    mt_train_config_defaults(&c);
    snprintf(c.data.train, sizeof c.data.train, "x.h5");
    c.model.layer = MT_LAYER_MAMBA1;
    c.model.dt_scale = 0;
    expect(mt_train_config_finalize(&c, err, sizeof err), "[model]", "dt_scale");
    c.model.dt_scale = 1;
    assert_true(mt_train_config_finalize(&c, err, sizeof err));
    assert_int_equal(c.model.layer, MT_LAYER_MAMBA1);
    c.model.layer = MT_LAYER_MAMBA2;
    c.train.schedule = MT_SCHEDULE_WSD;
    expect(mt_train_config_finalize(&c, err, sizeof err), "decay_steps", NULL);
    c.train.schedule = MT_SCHEDULE_COSINE;
    c.data.val_fraction = 1.5;
    expect(mt_train_config_finalize(&c, err, sizeof err), "[data] val_fraction", NULL);
}

/* The effective config written out reads back to the same struct. */
static void write_read_round_trip(void **state)
{
    (void)state;
    mt_train_config a, b;
    mt_train_config_defaults(&a);
    a.train.lr = 1.0 / 3.0;
    a.model.dt_limit_max = INFINITY;
    snprintf(a.data.train, sizeof a.data.train, "x/*.h5, y.h5");
    char path[256];
    snprintf(path, sizeof path, "%s/written.ini", tl_temp_dir());
    FILE *f = fopen(path, "w");
    mt_train_config_write(f, &a);
    fclose(f);
    mt_train_config_defaults(&b);
    assert_true(mt_train_config_load(&b, path, err, sizeof err));
    assert_memory_equal(&a, &b, sizeof a);

    char *buf = NULL;
    size_t len = 0;
    FILE *h = open_memstream(&buf, &len);
    mt_train_config_help(h);
    fclose(h);
    assert_non_null(strstr(buf, "[train]"));
    assert_non_null(strstr(buf, "warmup_steps"));
    assert_non_null(strstr(buf, "one of cosine|wsd|constant"));
    free(buf);
}

static void shipped_configs_parse(void **state)
{
    (void)state;
    static const char *names[] = {"tiny",        "mamba2-130m", "mamba2-370m", "mamba2-780m", "mamba2-1.3b",
                                  "mamba2-2.7b", "mamba-130m",  "mamba-370m",  "mamba-790m",  "mamba-1.4b",
                                  "mamba-2.8b"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        char path[512];
        snprintf(path, sizeof path, "%s/configs/%s.ini", MT_SOURCE_DIR, names[i]);
        mt_train_config c;
        mt_train_config_defaults(&c);
        if (!mt_train_config_load(&c, path, err, sizeof err))
            fail_msg("%s", err);
        /* The released sizes are for a GPU: this machine's memory is not the point. */
        c.train.device = strcmp(names[i], "tiny") ? MT_DEVICE_CUDA : MT_DEVICE_CPU;
        if (!mt_train_config_finalize(&c, err, sizeof err))
            fail_msg("%s: %s", names[i], err);
        const bool mamba1 = strncmp(names[i], "mamba-", 6) == 0;
        assert_int_equal(c.model.layer, mamba1 ? MT_LAYER_MAMBA1 : MT_LAYER_MAMBA2);
    }
    /* The fine-tuning configs, pointed at the test fixtures instead of a
     * downloaded model: the model's dimensions come from its config.json. */
    static const char *kinds[] = {"mamba2", "mamba"};
    for (int i = 0; i < 2; i++) {
        char path[512], set[600];
        snprintf(path, sizeof path, "%s/configs/finetune-%s-130m.ini", MT_SOURCE_DIR, kinds[i]);
        snprintf(set, sizeof set, "model.init_from=%s/tests/fixtures/%s-tiny-hf", MT_SOURCE_DIR, kinds[i]);
        mt_train_config c;
        mt_train_config_defaults(&c);
        if (!mt_train_config_load(&c, path, err, sizeof err) || !mt_train_config_set(&c, set, err, sizeof err) ||
            !mt_train_config_finalize(&c, err, sizeof err))
            fail_msg("%s: %s", path, err);
        assert_int_equal(c.model.layer, i == 0 ? MT_LAYER_MAMBA2 : MT_LAYER_MAMBA1);
        assert_int_equal(c.model.d_model, 32);
        char word[16];
        assert_string_equal(mt_train_config_word(&c, "model.layer", word, sizeof word), i == 0 ? "mamba2" : "mamba1");
    }
    /* A missing model directory is named. */
    mt_train_config c;
    mt_train_config_defaults(&c);
    assert_true(mt_train_config_set(&c, "model.init_from=/nonexistent/model", err, sizeof err));
    assert_true(mt_train_config_set(&c, "data.synthetic=induction", err, sizeof err));
    assert_false(mt_train_config_finalize(&c, err, sizeof err));
    assert_non_null(strstr(err, "[model] init_from"));
    assert_non_null(strstr(err, "/nonexistent/model/config.json"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(load_errors),          cmocka_unit_test(overrides),
        cmocka_unit_test(finalize_errors),      cmocka_unit_test(write_read_round_trip),
        cmocka_unit_test(shipped_configs_parse), cmocka_unit_test(duplicate_key_warns),
        cmocka_unit_test(sizes_are_checked),    cmocka_unit_test(param_count_matches_the_model),
    };
    return cmocka_run_group_tests(tests, tl_temp_dir_setup, tl_temp_dir_teardown);
}
