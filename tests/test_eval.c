/* mt_evaluate on the CPU: a tiny run's checkpoint scored on its own
 * validation shard, with the trainer's batches, gives the trainer's last
 * eval loss and answer accuracy; a missing model directory, a missing
 * shard, a shard of another vocabulary and a non-positive batch shape are
 * errors naming what is wrong. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "testlib.h"
#include "testlib_train.h"

#include "data/synthetic.h"
#include "train/evaluate.h"

static char err[1024];

/* The tiny run every test scores, trained once. */
static mt_train_config run_cfg;
static mt_train_result run_res;
static char checkpoint[1200], val_shard[1200];

static void ensure_trained(void)
{
    if (checkpoint[0])
        return;
    const char *sets[] = {"train.steps=20", "log.eval_every=20", "log.eval_batches=4", "data.batch_size=16",
                          "train.device=cpu"};
    tl_tiny_config(&run_cfg, "run", 5, sets);
    tl_rank_run runs[1];
    const mt_train_options opt = {0};
    if (!tl_train_grid(&run_cfg, 1, 1, &opt, false, runs))
        fail_msg("training: %s", runs[0].err);
    run_res = runs[0].res;
    snprintf(checkpoint, sizeof checkpoint, "%s/step_000020", run_cfg.log.out_dir);
    snprintf(val_shard, sizeof val_shard, "%s/data/selective-copy-val.h5", run_cfg.log.out_dir);
}

/* The trainer's evaluation of the run's validation set, redone from its files. */
static mt_eval_config trainer_like(void)
{
    return (mt_eval_config){.model_dir = checkpoint, .data = val_shard, .seq_len = run_cfg.data.seq_len,
                            .batch_size = run_cfg.data.batch_size, .max_batches = run_cfg.log.eval_batches,
                            .loss_on = MT_LOSS_ON_ANSWERS, .device = MT_DEVICE_CPU};
}

static void matches_the_trainers_evaluation(void **state)
{
    (void)state;
    ensure_trained();
    mt_eval_config c = trainer_like();
    mt_eval_result res;
    if (!mt_evaluate(&c, &res, err, sizeof err))
        fail_msg("%s", err);
    assert_int_equal(res.batches, 4);
    assert_false(res.cuda);
    const double rel = fabs(res.loss - run_res.eval_loss) / fabs(run_res.eval_loss);
    printf("eval loss %.9f, the trainer's %.9f (relative difference %.3g); accuracy %.6f, the trainer's %.6f\n",
           res.loss, run_res.eval_loss, rel, res.accuracy, run_res.eval_accuracy);
    assert_true(rel <= 1e-6);
    assert_true(fabs(res.perplexity - exp(res.loss)) <= 1e-12 * res.perplexity);
    assert_true(res.scored > 0);
    assert_true(res.accuracy == run_res.eval_accuracy);
}

/* Without --batches every whole batch of the shard is scored, and the
 * loss on all targets has no accuracy. */
static void scores_the_whole_shard(void **state)
{
    (void)state;
    ensure_trained();
    mt_eval_config c = trainer_like();
    c.max_batches = 0;
    c.batch_size = 64;
    c.loss_on = MT_LOSS_ON_ALL;
    mt_eval_result res;
    if (!mt_evaluate(&c, &res, err, sizeof err))
        fail_msg("%s", err);
    assert_true(res.samples > 64);
    assert_int_equal(res.batches, res.samples / 64);
    assert_true(isfinite(res.loss) && res.loss > 0);
    assert_true(isnan(res.accuracy));
}

static void expect_error(const mt_eval_config *c, const char *needle)
{
    mt_eval_result res;
    assert_false(mt_evaluate(c, &res, err, sizeof err));
    if (!strstr(err, needle))
        fail_msg("error \"%s\" does not name \"%s\"", err, needle);
    assert_null(strchr(err, '\n'));
}

static void missing_model_dir_names_config_json(void **state)
{
    (void)state;
    ensure_trained();
    mt_eval_config c = trainer_like();
    c.model_dir = tl_temp_path("no-such-model");
    expect_error(&c, "no-such-model/config.json");
}

static void missing_shard_is_named(void **state)
{
    (void)state;
    ensure_trained();
    mt_eval_config c = trainer_like();
    c.data = tl_temp_path("no-such-shard.h5");
    expect_error(&c, "no-such-shard.h5");
}

static void shard_of_a_larger_vocabulary_is_refused(void **state)
{
    (void)state;
    ensure_trained();
    const mt_synth_config sc = {.task = MT_TASK_SELECTIVE_COPY, .vocab_size = 2 * run_cfg.model.vocab_size,
                                .seq_len = run_cfg.data.seq_len, .n_memorize = 4, .seed = 7};
    const char *path = tl_temp_path("wide-vocab.h5");
    if (!mt_synth_write_shard(&sc, 64, path, err, sizeof err))
        fail_msg("%s", err);
    mt_eval_config c = trainer_like();
    c.data = path;
    expect_error(&c, "wide-vocab.h5: vocab_size 32");
}

static void batch_shape_must_be_positive(void **state)
{
    (void)state;
    ensure_trained();
    mt_eval_config c = trainer_like();
    c.seq_len = 0;
    expect_error(&c, "--seq-len (0) and --batch-size (16) must be positive");
    c = trainer_like();
    c.batch_size = -1;
    expect_error(&c, "must be positive");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(matches_the_trainers_evaluation),
        cmocka_unit_test(scores_the_whole_shard),
        cmocka_unit_test(missing_model_dir_names_config_json),
        cmocka_unit_test(missing_shard_is_named),
        cmocka_unit_test(shard_of_a_larger_vocabulary_is_refused),
        cmocka_unit_test(batch_shape_must_be_positive),
    };
    return cmocka_run_group_tests(tests, tl_temp_dir_setup, tl_temp_dir_teardown);
}
