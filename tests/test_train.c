/* The training driver end to end on the CPU: the embedded default
 * (configs/tiny.ini, selective copying) learns above chance; a run stopped
 * at a checkpoint and resumed ends bitwise identical to an uninterrupted
 * one; gradient accumulation matches one larger batch; a NaN gradient skips
 * its update, and too many in a row stop the run with the last checkpoint
 * intact; SIGTERM and kill -9 leave a checkpoint to resume from. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "testlib.h"
#include "testlib_train.h"

#include "train/checkpoint.h"
#include "train/trainer.h"

static char err[1024];

/* Runs the mamba-train program on configs/tiny.ini in a child process (a
 * fresh one: a forked copy of this multi-threaded test would inherit locked
 * thread pools), with the run directory and overrides given, and sends it
 * sig after delay_ms; returns the child's wait status. */
static int train_and_signal(const char *out_dir, const char *const *sets, int n_sets, int sig, int delay_ms)
{
    char config[512];
    snprintf(config, sizeof config, "%s/configs/tiny.ini", MT_SOURCE_DIR);
    const char *argv[32] = {"mamba-train", "--config", config, "--out", out_dir};
    int argc = 5;
    for (int i = 0; i < n_sets && argc < 30; i++) {
        argv[argc++] = "--set";
        argv[argc++] = sets[i];
    }
    argv[argc] = NULL;
    fflush(stdout);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        if (!freopen("/dev/null", "w", stdout))
            _exit(3);
        execv(MT_TRAIN_BIN, (char *const *)argv);
        _exit(4);
    }
    struct timespec ts = {delay_ms / 1000, (long)(delay_ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
    kill(pid, sig);
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    return status;
}

static void run_or_fail(const mt_train_config *c, const mt_train_options *o, mt_train_result *res)
{
    if (!mt_train(c, o, res, err, sizeof err))
        fail_msg("%s", err);
}

static void tiny_learns_selective_copying(void **state)
{
    (void)state;
    const char *sets[] = {"train.steps=300", "log.eval_every=300", "log.checkpoint_every=0", "log.log_every=100"};
    mt_train_config c;
    tl_tiny_config(&c, "learn", 4, sets);
    mt_train_result res;
    mt_train_options o = {0};
    run_or_fail(&c, &o, &res);
    const double chance_loss = log(13.0); /* 13 data tokens */
    printf("tiny: eval loss %.3f (chance %.3f), accuracy %.3f (chance %.3f)\n", res.eval_loss, chance_loss,
           res.eval_accuracy, 1.0 / 13);
    assert_int_equal(res.steps_done, 300);
    assert_true(res.eval_loss < 0.9 * chance_loss);
    assert_true(res.eval_accuracy > 2.5 / 13);
}

static void resume_is_bitwise_exact(void **state)
{
    (void)state;
    const char *sets[] = {"train.steps=12", "log.checkpoint_every=4", "log.eval_every=0", "log.keep_last=0",
                          "train.warmup_steps=3"};
    mt_train_config whole, parts;
    tl_tiny_config(&whole, "whole", 5, sets);
    tl_tiny_config(&parts, "parts", 5, sets);
    mt_train_result res;
    mt_train_options o = {0};
    run_or_fail(&whole, &o, &res);
    o.stop_at = 6; /* stops after step 6, writing a checkpoint there */
    run_or_fail(&parts, &o, &res);
    assert_int_equal(res.steps_done, 6);
    o = (mt_train_options){.resume = "auto"};
    run_or_fail(&parts, &o, &res);
    assert_int_equal(res.steps_done, 6);
    static const char *files[] = {"model.safetensors", "optimizer.safetensors", "trainer.json"};
    for (int i = 0; i < 3; i++) {
        char a[1200], b[1200];
        snprintf(a, sizeof a, "%s/step_000012/%s", whole.log.out_dir, files[i]);
        snprintf(b, sizeof b, "%s/step_000012/%s", parts.log.out_dir, files[i]);
        if (!tl_same_file(a, b))
            fail_msg("%s differs between the whole run and the resumed one", files[i]);
    }
}

/* Two micro-batches of 16 make the same steps as one batch of 32: the same
 * samples, the gradient averaged and clipped on its mean (every sample has
 * the same number of scored answers, so the mean losses agree). */
static void accumulation_matches_one_batch(void **state)
{
    (void)state;
    /* eps = 1 and no clipping make the update depend on the gradient's scale
     * (Adam alone would not notice a missing 1 / micro_batches). */
    const char *one[] = {"train.steps=5", "log.eval_every=0", "data.batch_size=32", "train.micro_batches=1",
                         "train.eps=1", "train.grad_clip=0"};
    const char *two[] = {"train.steps=5", "log.eval_every=0", "data.batch_size=16", "train.micro_batches=2",
                         "train.eps=1", "train.grad_clip=0"};
    mt_train_config a, b;
    tl_tiny_config(&a, "accum-one", 6, one);
    tl_tiny_config(&b, "accum-two", 6, two);
    mt_train_result res;
    mt_train_options o = {0};
    run_or_fail(&a, &o, &res);
    run_or_fail(&b, &o, &res);
    char pa[1200], pb[1200];
    snprintf(pa, sizeof pa, "%s/step_000005/model.safetensors", a.log.out_dir);
    snprintf(pb, sizeof pb, "%s/step_000005/model.safetensors", b.log.out_dir);
    double d = tl_model_difference(pa, pb);
    printf("accumulation: relative difference of the parameters after 5 steps %.3e\n", d);
    assert_true(d < 1e-7);
}

static void nan_gradient_is_skipped(void **state)
{
    (void)state;
    const char *sets[] = {"train.steps=6", "log.checkpoint_every=2", "log.eval_every=0"};
    mt_train_config c;
    tl_tiny_config(&c, "nan", 3, sets);
    mt_train_result res;
    mt_train_options o = {.nan_grad_at = 3};
    run_or_fail(&c, &o, &res);
    assert_int_equal(res.steps_done, 6);
    assert_int_equal(res.skipped_steps, 1);

    const char *stop[] = {"train.steps=6", "log.checkpoint_every=2", "log.eval_every=0", "train.max_bad_steps=1"};
    tl_tiny_config(&c, "nan-stop", 4, stop);
    assert_false(mt_train(&c, &o, &res, err, sizeof err));
    assert_non_null(strstr(err, "non-finite"));
    char latest[1024];
    assert_true(mt_checkpoint_latest(c.log.out_dir, latest, sizeof latest, err, sizeof err));
    assert_non_null(strstr(latest, "step_000002"));
}

/* SIGTERM ends the run cleanly with a checkpoint of the step it reached. */
static void sigterm_checkpoints_and_exits(void **state)
{
    (void)state;
    const char *sets[] = {"train.steps=100000", "log.checkpoint_every=0", "log.eval_every=0"};
    char out[512];
    snprintf(out, sizeof out, "%s/sigterm", tl_temp_dir());
    int status = train_and_signal(out, sets, 3, SIGTERM, 3000);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    char latest[1024];
    assert_true(mt_checkpoint_latest(out, latest, sizeof latest, err, sizeof err));
}

/* kill -9 at any moment, checkpoints being written every step, leaves a
 * loadable checkpoint that a resumed run continues from. */
static void kill9_leaves_a_loadable_checkpoint(void **state)
{
    (void)state;
    const char *sets[] = {"train.steps=100000", "log.checkpoint_every=1", "log.eval_every=0", "log.keep_last=2"};
    char out[512];
    snprintf(out, sizeof out, "%s/kill9", tl_temp_dir());
    int status = train_and_signal(out, sets, 4, SIGKILL, 3000);
    assert_true(WIFSIGNALED(status));
    char latest[1024];
    if (!mt_checkpoint_latest(out, latest, sizeof latest, err, sizeof err))
        fail_msg("%s", err);
    mt_train_config c;
    const char *resume_sets[] = {"train.steps=1"}; /* already past it: the resumed run loads and stops */
    tl_tiny_config(&c, "kill9", 1, resume_sets);
    mt_train_result res;
    mt_train_options o = {.resume = latest};
    run_or_fail(&c, &o, &res);
    assert_int_equal(res.steps_done, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(resume_is_bitwise_exact),
        cmocka_unit_test(nan_gradient_is_skipped),
        cmocka_unit_test(accumulation_matches_one_batch),
        cmocka_unit_test(sigterm_checkpoints_and_exits),
        cmocka_unit_test(kill9_leaves_a_loadable_checkpoint),
        cmocka_unit_test(tiny_learns_selective_copying),
    };
    return cmocka_run_group_tests(tests, tl_temp_dir_setup, tl_temp_dir_teardown);
}
