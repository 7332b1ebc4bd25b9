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
    snprintf(c.data.synthetic, sizeof c.data.synthetic, "induction");
    assert_true(mt_train_config_finalize(&c, err, sizeof err));
    c.model.headdim = 100; /* d_inner 1536 is not a multiple */
    expect(mt_train_config_finalize(&c, err, sizeof err), "[model]", "headdim");
    mt_train_config_defaults(&c);
    snprintf(c.data.train, sizeof c.data.train, "x.h5");
    snprintf(c.layer, sizeof c.layer, "mamba1");
    c.model.dt_scale = 0;
    expect(mt_train_config_finalize(&c, err, sizeof err), "[model]", "dt_scale");
    c.model.dt_scale = 1;
    assert_true(mt_train_config_finalize(&c, err, sizeof err));
    assert_int_equal(c.model.layer, MT_LAYER_MAMBA1);
    snprintf(c.layer, sizeof c.layer, "mamba2");
    snprintf(c.train.schedule, sizeof c.train.schedule, "wsd");
    expect(mt_train_config_finalize(&c, err, sizeof err), "decay_steps", NULL);
    snprintf(c.train.schedule, sizeof c.train.schedule, "cosine");
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
        assert_string_equal(c.layer, i == 0 ? "mamba2" : "mamba1");
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
        cmocka_unit_test(shipped_configs_parse),
    };
    return cmocka_run_group_tests(tests, tl_temp_dir_setup, tl_temp_dir_teardown);
}
