/* The training driver end to end on the CPU: the embedded default
 * (configs/tiny.ini, selective copying) learns above chance; a run stopped
 * at a checkpoint and resumed ends bitwise identical to an uninterrupted
 * one, logging each step once; gradient accumulation matches one larger
 * batch; a NaN gradient skips its update, no checkpoint is written during a
 * run of them, and too many in a row stop the run naming the last good
 * checkpoint; SIGTERM (once or twice) and kill -9 leave a checkpoint to
 * resume from; a write past the file-size limit fails the save cleanly;
 * damaged checkpoints are neither resumed from nor overwritten, and a fresh
 * run does not start over another one's checkpoints. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <signal.h>
#include <string.h>
#include <fcntl.h>
#include <jansson.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "testlib.h"
#include "testlib_train.h"

#include "data/shard.h"
#include "train/checkpoint.h"
#include "train/trainer.h"

static char err[1024];

/* Starts the mamba-train program on configs/tiny.ini in a child process (a
 * fresh one: a forked copy of this multi-threaded test would inherit locked
 * thread pools) with the run directory out_dir and then args (NULL-ended).
 * Its stdout goes to /dev/null, its stderr to stderr_path when given, and
 * file_limit > 0 caps the size of the files it writes (RLIMIT_FSIZE). */
static pid_t start_training(const char *out_dir, const char *const *args, rlim_t file_limit, const char *stderr_path)
{
    char config[512];
    snprintf(config, sizeof config, "%s/configs/tiny.ini", MT_SOURCE_DIR);
    const char *argv[40] = {"mamba-train", "--config", config, "--out", out_dir};
    int argc = 5;
    for (int i = 0; args[i] && argc < 39; i++)
        argv[argc++] = args[i];
    argv[argc] = NULL;
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) { /* only async-signal-safe calls until execv */
        int out = open("/dev/null", O_WRONLY);
        int errs = stderr_path ? open(stderr_path, O_WRONLY | O_CREAT | O_TRUNC, 0644) : STDERR_FILENO;
        struct rlimit limit = {file_limit, file_limit};
        if (out < 0 || errs < 0 || dup2(out, STDOUT_FILENO) < 0 || dup2(errs, STDERR_FILENO) < 0 ||
            (file_limit > 0 && setrlimit(RLIMIT_FSIZE, &limit) != 0))
            _exit(120);
        execv(MT_TRAIN_BIN, (char *const *)argv);
        _exit(121);
    }
    return pid;
}

static int wait_for_exit(pid_t pid)
{
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    return status;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0)
        ;
}

/* Waits until the run in out_dir has logged its first step (it is in its
 * step loop then). */
static void wait_for_first_step(const char *out_dir)
{
    char path[600], line[4096];
    snprintf(path, sizeof path, "%s/metrics.jsonl", out_dir);
    for (int waited = 0; waited < 60000; waited += 20) {
        FILE *f = fopen(path, "r");
        const bool stepped = f && fgets(line, sizeof line, f) && strstr(line, "\"grad_norm\"");
        if (f)
            fclose(f);
        if (stepped)
            return;
        sleep_ms(20);
    }
    fail_msg("%s: no step logged within 60 s", path);
}

static bool file_holds(const char *path, const char *text)
{
    char buf[8192] = "";
    FILE *f = fopen(path, "r");
    if (!f)
        return false;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = '\0';
    fclose(f);
    return strstr(buf, text) != NULL;
}

static bool exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
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
    tl_expect_error(err, "non-finite", "the last good checkpoint is");
    tl_expect_error(err, "nan-stop/step_000002", NULL);
    char latest[1024];
    assert_int_equal(mt_checkpoint_latest(c.log.out_dir, latest, sizeof latest, err, sizeof err),
                     MT_CHECKPOINT_VALID);
    assert_non_null(strstr(latest, "step_000002"));
}

/* While steps are being skipped no checkpoint is written (periodic, or at
 * a stop) and none is pruned; a run that is NaN from its first step stops
 * saying that there is no good checkpoint. */
static void no_checkpoint_during_a_non_finite_streak(void **state)
{
    (void)state;
    const char *sets[] = {"train.steps=6", "log.checkpoint_every=1", "log.keep_last=1", "log.eval_every=0",
                          "train.max_bad_steps=3", "data.synthetic_examples=2000"};
    mt_train_config c;
    tl_tiny_config(&c, "streak", 6, sets);
    mt_train_result res;
    mt_train_options o = {.nan_grad_at = 3, .nan_grad_steps = 2, .stop_at = 4}; /* stops in the streak */
    run_or_fail(&c, &o, &res);
    assert_int_equal(res.steps_done, 4);
    assert_int_equal(res.skipped_steps, 2);
    assert_non_null(strstr(res.checkpoint, "streak/step_000002"));
    assert_int_equal(mt_checkpoint_count(c.log.out_dir, err, sizeof err), 1);
    char latest[1024];
    assert_int_equal(mt_checkpoint_latest(c.log.out_dir, latest, sizeof latest, err, sizeof err),
                     MT_CHECKPOINT_VALID);
    assert_non_null(strstr(latest, "streak/step_000002"));

    const char *from_start[] = {"train.steps=6", "log.checkpoint_every=1", "log.eval_every=0",
                                "train.max_bad_steps=2", "data.synthetic_examples=2000"};
    tl_tiny_config(&c, "streak-from-start", 5, from_start);
    o = (mt_train_options){.nan_grad_at = 1, .nan_grad_steps = 2};
    assert_false(mt_train(&c, &o, &res, err, sizeof err));
    tl_expect_error(err, "2 non-finite steps in a row", "there is no good checkpoint");
    assert_int_equal(mt_checkpoint_count(c.log.out_dir, err, sizeof err), 0);
}

/* The step and eval rows of out_dir/metrics.jsonl: rows[s] and evals[s]
 * count those of step s (s < max). */
static void count_metrics_rows(const char *out_dir, int *rows, int *evals, int max)
{
    char path[1100];
    snprintf(path, sizeof path, "%s/metrics.jsonl", out_dir);
    char line[4096];
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    memset(rows, 0, (size_t)max * sizeof *rows);
    memset(evals, 0, (size_t)max * sizeof *evals);
    while (fgets(line, sizeof line, f)) {
        json_t *row = json_loads(line, 0, NULL);
        if (!row)
            fail_msg("%s: a line that is not JSON: %s", path, line);
        const json_int_t step = json_integer_value(json_object_get(row, "step"));
        assert_true(step > 0 && step < max);
        if (json_object_get(row, "grad_norm"))
            rows[step]++;
        if (json_object_get(row, "eval_loss"))
            evals[step]++;
        json_decref(row);
    }
    fclose(f);
}

/* A run resumed from an earlier checkpoint than its last drops the rows
 * it logged after that checkpoint: every step is logged once. */
static void resume_logs_each_step_once(void **state)
{
    (void)state;
    const char *sets[] = {"train.steps=6", "log.checkpoint_every=3", "log.eval_every=3", "log.eval_batches=1",
                          "log.keep_last=0", "data.synthetic_examples=2000"};
    mt_train_config c;
    tl_tiny_config(&c, "metrics-once", 6, sets);
    mt_train_result res;
    mt_train_options o = {0};
    run_or_fail(&c, &o, &res);
    char from[1200];
    snprintf(from, sizeof from, "%s/step_000003", c.log.out_dir);
    o.resume = from;
    run_or_fail(&c, &o, &res);
    assert_int_equal(res.steps_done, 3);
    int rows[7], evals[7];
    count_metrics_rows(c.log.out_dir, rows, evals, 7);
    for (int s = 1; s <= 6; s++) {
        if (rows[s] != 1 || evals[s] != (s % 3 == 0))
            fail_msg("metrics.jsonl: step %d has %d rows and %d eval rows", s, rows[s], evals[s]);
    }
}

/* Damaged checkpoints only: --resume auto refuses, naming each and why, and
 * leaves them as they are; a fresh run is refused there too, and with
 * overwrite it starts, moving them aside (not deleting them) as it saves
 * their steps. */
static void damaged_checkpoints_are_kept(void **state)
{
    (void)state;
    const char *sets[] = {"train.steps=4", "log.checkpoint_every=2", "log.keep_last=0", "log.eval_every=0",
                          "data.synthetic_examples=2000"};
    mt_train_config c;
    tl_tiny_config(&c, "damaged", 5, sets);
    mt_train_result res;
    run_or_fail(&c, &(mt_train_options){0}, &res);
    char model4[1200], trainer2[1200], path[1200];
    snprintf(model4, sizeof model4, "%s/step_000004/model.safetensors", c.log.out_dir);
    snprintf(trainer2, sizeof trainer2, "%s/step_000002/trainer.json", c.log.out_dir);
    assert_int_equal(truncate(model4, 1000), 0);
    FILE *f = fopen(trainer2, "w");
    assert_non_null(f);
    fputs("{}\n", f);
    assert_int_equal(fclose(f), 0);

    assert_false(mt_train(&c, &(mt_train_options){.resume = "auto"}, &res, err, sizeof err));
    tl_expect_error(err, "none of its 2 checkpoints verifies", model4);
    tl_expect_error(err, trainer2, "truncated or damaged");
    struct stat st;
    assert_int_equal(stat(model4, &st), 0);
    assert_int_equal(st.st_size, 1000);
    assert_true(file_holds(trainer2, "{}"));

    assert_false(mt_train(&c, &(mt_train_options){0}, &res, err, sizeof err));
    tl_expect_error(err, "already holds 2 checkpoints", "--resume auto");
    tl_expect_error(err, "--overwrite", NULL);

    run_or_fail(&c, &(mt_train_options){.overwrite = true}, &res);
    snprintf(path, sizeof path, "%s/step_000004.damaged/model.safetensors", c.log.out_dir);
    assert_true(exists(path));
    snprintf(path, sizeof path, "%s/step_000002.damaged/trainer.json", c.log.out_dir);
    assert_true(file_holds(path, "{}"));
    char latest[1024];
    assert_int_equal(mt_checkpoint_latest(c.log.out_dir, latest, sizeof latest, err, sizeof err),
                     MT_CHECKPOINT_VALID);
    assert_non_null(strstr(latest, "damaged/step_000004"));
}

/* SIGTERM ends the run with a checkpoint of the step it reached, and the
 * exit status that says so. */
static void sigterm_checkpoints_and_exits(void **state)
{
    (void)state;
    const char *endless[] = {"--set", "train.steps=100000", "--set", "log.checkpoint_every=0", "--set",
                             "log.eval_every=0", "--set", "data.synthetic_examples=2000", NULL};
    char out[512], latest[1024];
    snprintf(out, sizeof out, "%s/sigterm", tl_temp_dir());
    pid_t pid = start_training(out, endless, 0, NULL);
    wait_for_first_step(out);
    assert_int_equal(kill(pid, SIGTERM), 0);
    int status = wait_for_exit(pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), MT_EXIT_STOPPED_BY_SIGNAL);
    assert_int_equal(mt_checkpoint_latest(out, latest, sizeof latest, err, sizeof err), MT_CHECKPOINT_VALID);
}

/* A second SIGTERM 300 ms after the first, while the step (slow here) and
 * the checkpoint finish, changes nothing: the stop stays graceful. */
static void second_sigterm_keeps_the_stop_graceful(void **state)
{
    (void)state;
    const char *slow[] = {"--set", "train.steps=100000", "--set", "log.checkpoint_every=0", "--set", "log.eval_every=0",
                          "--set", "data.synthetic_examples=2000", "--set", "model.d_model=256", "--set",
                          "data.batch_size=64", NULL};
    char out[512], latest[1024];
    snprintf(out, sizeof out, "%s/sigterm-twice", tl_temp_dir());
    pid_t pid = start_training(out, slow, 0, NULL);
    wait_for_first_step(out);
    assert_int_equal(kill(pid, SIGTERM), 0);
    sleep_ms(300);
    int status;
    const pid_t ended = waitpid(pid, &status, WNOHANG);
    assert_true(ended == 0 || ended == pid);
    if (ended == 0) {
        assert_int_equal(kill(pid, SIGTERM), 0);
        status = wait_for_exit(pid);
    } else {
        printf("note: the run ended within 300 ms of the first SIGTERM; no second one was sent\n");
    }
    if (!WIFEXITED(status))
        fail_msg("the run was killed by signal %d", WTERMSIG(status));
    assert_int_equal(WEXITSTATUS(status), MT_EXIT_STOPPED_BY_SIGNAL);
    assert_int_equal(mt_checkpoint_latest(out, latest, sizeof latest, err, sizeof err), MT_CHECKPOINT_VALID);
}

/* A checkpoint larger than the file-size limit (ulimit -f) fails with a
 * message naming the file, instead of SIGXFSZ killing the run, and the
 * previous checkpoint stays the latest. */
static void file_size_limit_fails_the_save_cleanly(void **state)
{
    (void)state;
    const char *sets[] = {"train.steps=2", "log.eval_every=0", "data.synthetic_examples=2000"};
    mt_train_config c;
    tl_tiny_config(&c, "fsize", 3, sets);
    mt_train_result res;
    run_or_fail(&c, &(mt_train_options){0}, &res);
    /* model.safetensors is about 230 kB; config.ini and metrics.jsonl stay far below the limit */
    const char *more[] = {"--set", "train.steps=4", "--set", "log.eval_every=0", "--set",
                          "data.synthetic_examples=2000", "--resume", "auto", NULL};
    const char *errors = tl_temp_path("fsize-stderr.txt");
    int status = wait_for_exit(start_training(c.log.out_dir, more, 100 * 1024, errors));
    if (!WIFEXITED(status))
        fail_msg("the run was killed by signal %d", WTERMSIG(status));
    assert_int_equal(WEXITSTATUS(status), 1);
    assert_true(file_holds(errors, "step_000004.tmp/model.safetensors: write failed: File too large"));
    char latest[1024], path[1200];
    assert_int_equal(mt_checkpoint_latest(c.log.out_dir, latest, sizeof latest, err, sizeof err),
                     MT_CHECKPOINT_VALID);
    assert_non_null(strstr(latest, "fsize/step_000002"));
    snprintf(path, sizeof path, "%s/step_000004.tmp", c.log.out_dir);
    assert_false(exists(path));
}

/* kill -9 at any moment, checkpoints being written every step, leaves a
 * loadable checkpoint that a resumed run continues from. */
static void kill9_leaves_a_loadable_checkpoint(void **state)
{
    (void)state;
    const char *args[] = {"--set", "train.steps=100000", "--set", "log.checkpoint_every=1", "--set",
                          "log.eval_every=0", "--set", "log.keep_last=2", NULL};
    char out[512];
    snprintf(out, sizeof out, "%s/kill9", tl_temp_dir());
    pid_t pid = start_training(out, args, 0, NULL);
    /* Killed once a first checkpoint is there (a loaded machine may take
     * seconds to write it), half a second on: mid-write of a later one. */
    char latest[1024];
    int waited = 0;
    while (mt_checkpoint_latest(out, latest, sizeof latest, err, sizeof err) != MT_CHECKPOINT_VALID && waited < 60000) {
        sleep_ms(100);
        waited += 100;
    }
    sleep_ms(500);
    assert_int_equal(kill(pid, SIGKILL), 0);
    int status = wait_for_exit(pid);
    assert_true(WIFSIGNALED(status));
    if (mt_checkpoint_latest(out, latest, sizeof latest, err, sizeof err) != MT_CHECKPOINT_VALID)
        fail_msg("%s", err);
    mt_train_config c;
    const char *resume_sets[] = {"train.steps=1"}; /* already past it: the resumed run loads and stops */
    tl_tiny_config(&c, "kill9", 1, resume_sets);
    mt_train_result res;
    mt_train_options o = {.resume = latest};
    run_or_fail(&c, &o, &res);
    assert_int_equal(res.steps_done, 0);
}

/* A run whose synthetic task asks other parameters than the shards in its
 * out_dir/data were made with trains on new shards, not the old ones. */
static void stale_synthetic_data_is_remade(void **state)
{
    (void)state;
    const char *first[] = {"train.steps=2", "log.eval_every=0"};
    mt_train_config c;
    tl_tiny_config(&c, "stale", 2, first);
    mt_train_result res;
    mt_train_options o = {0};
    run_or_fail(&c, &o, &res);
    const char *second[] = {"train.steps=2", "log.eval_every=0", "data.seq_len=64", "data.synthetic_memorize=8",
                            "data.synthetic_examples=500"};
    tl_tiny_config(&c, "stale", 5, second);
    o.overwrite = true;
    run_or_fail(&c, &o, &res);
    char path[1024];
    snprintf(path, sizeof path, "%s/data/selective-copy-train.h5", c.log.out_dir);
    mt_shard *s = mt_shard_open(path, err, sizeof err);
    if (!s)
        fail_msg("%s", err);
    assert_int_equal(mt_shard_get_info(s)->n_tokens, 500 * 65);
    mt_shard_close(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(resume_is_bitwise_exact),
        cmocka_unit_test(resume_logs_each_step_once),
        cmocka_unit_test(nan_gradient_is_skipped),
        cmocka_unit_test(no_checkpoint_during_a_non_finite_streak),
        cmocka_unit_test(damaged_checkpoints_are_kept),
        cmocka_unit_test(accumulation_matches_one_batch),
        cmocka_unit_test(sigterm_checkpoints_and_exits),
        cmocka_unit_test(second_sigterm_keeps_the_stop_graceful),
        cmocka_unit_test(file_size_limit_fails_the_save_cleanly),
        cmocka_unit_test(kill9_leaves_a_loadable_checkpoint),
        cmocka_unit_test(tiny_learns_selective_copying),
        cmocka_unit_test(stale_synthetic_data_is_remade),
    };
    return cmocka_run_group_tests(tests, tl_temp_dir_setup, tl_temp_dir_teardown);
}
