/* The trainer on several ranks, threads of this process on the CPU
 * communicator: two data-parallel ranks, each on half of every global batch,
 * train to the parameters of one rank on the whole batch; so do two
 * tensor-parallel ranks (B and C replicated, ngroups 1, or split, ngroups 2)
 * and 2 x 2 ranks of both, and the tensor-parallel ranks evaluate (loss and
 * answer accuracy over vocab-parallel logits) as one rank; ZeRO-1 gives the
 * same bits as plain data parallelism, optimizer state included; a sharded
 * run (ZeRO-1 and tensor parallel) stopped and resumed ends bit for bit
 * where an uninterrupted one does; resuming on another number of ranks, or a
 * tensor-parallel size that the run's groups do not have, is an error that
 * says so. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "testlib.h"
#include "testlib_train.h"
#include "train/trainer.h"

static bool train_ranks(const mt_train_config *cfg, int dp, const mt_train_options *base, tl_rank_run *runs)
{
    return tl_train_grid(cfg, dp, 1, base, false, runs);
}

static void train_grid_or_fail(const mt_train_config *cfg, int dp, int tp, const mt_train_options *base)
{
    tl_train_grid_or_fail(cfg, dp, tp, base, false);
}

static void train_ranks_or_fail(const mt_train_config *cfg, int dp, const mt_train_options *base)
{
    tl_train_grid_or_fail(cfg, dp, 1, base, false);
}

static void checkpoint_file(char *out, size_t n, const mt_train_config *c, int step, const char *file)
{
    snprintf(out, n, "%s/step_%06d/%s", c->log.out_dir, step, file);
}

/* dp x tp ranks (per-rank batch 32 / dp) against one rank on batch 32, with
 * the model's B/C groups set by `groups`: 5 steps, losses and the
 * checkpointed (whole) parameters. eps = 1 and no clipping make the update
 * depend on the gradient's scale, so a wrong 1 / dp would show. */
static void grid_matches_one(const char *name, int dp, int tp, const char *groups)
{
    char batch[64];
    snprintf(batch, sizeof batch, "data.batch_size=%d", 32 / dp);
    const char *one[] = {"train.steps=5", "log.eval_every=0", "train.eps=1", "train.grad_clip=0", groups,
                         "data.batch_size=32"};
    char tp_set[64];
    snprintf(tp_set, sizeof tp_set, "dist.tp_size=%d", tp);
    const char *grid[] = {"train.steps=5", "log.eval_every=0", "train.eps=1", "train.grad_clip=0", groups, batch,
                          tp_set};
    char run_one[64], run_grid[64];
    snprintf(run_one, sizeof run_one, "%s-one", name);
    snprintf(run_grid, sizeof run_grid, "%s-grid", name);
    mt_train_config a, b;
    tl_tiny_config(&a, run_one, 6, one);
    tl_tiny_config(&b, run_grid, 7, grid);
    mt_train_options o = {0};
    train_grid_or_fail(&a, 1, 1, &o);
    train_grid_or_fail(&b, dp, tp, &o);
    char pa[1200], pb[1200];
    checkpoint_file(pa, sizeof pa, &a, 5, "model.safetensors");
    checkpoint_file(pb, sizeof pb, &b, 5, "model.safetensors");
    const double dl = tl_loss_difference(&a, &b, 5), dpar = tl_model_difference(pa, pb);
    printf("%s (dp %d x tp %d, %s) vs 1 rank: losses %.2e relative, parameters after 5 steps %.2e relative\n", name,
           dp, tp, groups, dl, dpar);
    assert_true(dl < 1e-6);
    assert_true(dpar < 1e-7);
}

static void dp2_matches_one(void **state)
{
    (void)state;
    grid_matches_one("dp2", 2, 1, "model.ngroups=1");
}

static void tp2_replicated_bc_matches_one(void **state)
{
    (void)state;
    grid_matches_one("tp2-g1", 1, 2, "model.ngroups=1");
}

static void tp2_split_bc_matches_one(void **state)
{
    (void)state;
    grid_matches_one("tp2-g2", 1, 2, "model.ngroups=2");
}

static void dp2_tp2_matches_one(void **state)
{
    (void)state;
    grid_matches_one("dp2-tp2", 2, 2, "model.ngroups=1");
}

/* An evaluation on the answers (the loss and the share of answers whose
 * most likely token is right) after 5 steps on two tensor-parallel ranks,
 * whose logits are each a half of the vocabulary: both ranks report what one
 * rank does. */
static void tp2_evaluation_matches_one(void **state)
{
    (void)state;
    const char *one[] = {"train.steps=5", "log.eval_every=5", "log.eval_batches=4", "model.ngroups=1"};
    const char *two[] = {"train.steps=5", "log.eval_every=5", "log.eval_batches=4", "model.ngroups=1",
                         "dist.tp_size=2"};
    mt_train_config a, b;
    tl_tiny_config(&a, "eval-one", 4, one);
    tl_tiny_config(&b, "eval-tp2", 5, two);
    mt_train_options o = {0};
    tl_rank_run single[1], ranks[2];
    if (!tl_train_grid(&a, 1, 1, &o, false, single) || !tl_train_grid(&b, 1, 2, &o, false, ranks))
        fail_msg("%s", single[0].ok ? (ranks[0].ok ? ranks[1].err : ranks[0].err) : single[0].err);
    const mt_train_result *r1 = &single[0].res;
    printf("evaluation after 5 steps: 1 rank loss %.9f accuracy %.6f; tp2 ranks loss %.9f / %.9f accuracy %.6f / "
           "%.6f\n", r1->eval_loss, r1->eval_accuracy, ranks[0].res.eval_loss, ranks[1].res.eval_loss,
           ranks[0].res.eval_accuracy, ranks[1].res.eval_accuracy);
    assert_true(isfinite(r1->eval_loss) && isfinite(r1->eval_accuracy));
    for (int r = 0; r < 2; r++) {
        assert_true(fabs(ranks[r].res.eval_loss - r1->eval_loss) < 1e-6 * r1->eval_loss);
        assert_true(ranks[r].res.eval_accuracy == r1->eval_accuracy);
    }
}

/* Fine-tuning released weights (the Mamba-2 test fixture, 4 heads, ngroups
 * 1) on two tensor-parallel ranks: each loads its slice of them, and the
 * run matches one rank. */
static void tp2_from_released_weights(void **state)
{
    (void)state;
    char from[600];
    snprintf(from, sizeof from, "model.init_from=%s/tests/fixtures/mamba2-tiny-hf", MT_SOURCE_DIR);
    const char *one[] = {"train.steps=3", "log.eval_every=0", "train.grad_clip=0", "train.eps=1", from};
    const char *two[] = {"train.steps=3", "log.eval_every=0", "train.grad_clip=0", "train.eps=1", from,
                         "dist.tp_size=2"};
    mt_train_config a, b;
    tl_tiny_config(&a, "released-one", 5, one);
    tl_tiny_config(&b, "released-tp2", 6, two);
    mt_train_options o = {0};
    train_grid_or_fail(&a, 1, 1, &o);
    train_grid_or_fail(&b, 1, 2, &o);
    char pa[1200], pb[1200];
    checkpoint_file(pa, sizeof pa, &a, 3, "model.safetensors");
    checkpoint_file(pb, sizeof pb, &b, 3, "model.safetensors");
    const double dl = tl_loss_difference(&a, &b, 3), dpar = tl_model_difference(pa, pb);
    printf("released weights, tp 2 vs 1 rank: losses %.2e, parameters after 3 steps %.2e relative\n", dl, dpar);
    assert_true(dl < 1e-6);
    assert_true(dpar < 1e-7);
}

/* The gradient all-reduce in buckets during the backward gives the bits of
 * one all-reduce after it, and most buckets do start during the backward. */
static void buckets_overlap_the_backward(void **state)
{
    (void)state;
    const char *after[] = {"train.steps=3", "log.eval_every=0", "data.batch_size=16", "dist.bucket_mb=0"};
    const char *during[] = {"train.steps=3", "log.eval_every=0", "data.batch_size=16", "dist.bucket_mb=0.02"};
    mt_train_config a, b;
    tl_tiny_config(&a, "buckets-after", 4, after);
    tl_tiny_config(&b, "buckets-during", 4, during);
    tl_rank_run runs[TL_MAX_RANKS];
    mt_train_options o = {0};
    assert_true(train_ranks(&a, 2, &o, runs));
    assert_int_equal(runs[0].res.buckets, 0);
    assert_true(train_ranks(&b, 2, &o, runs));
    printf("buckets: %d of %d started during the backward\n", runs[0].res.buckets_in_backward, runs[0].res.buckets);
    assert_true(runs[0].res.buckets >= 4);
    assert_true(runs[0].res.buckets_in_backward >= runs[0].res.buckets / 2);
    char pa[1200], pb[1200];
    checkpoint_file(pa, sizeof pa, &a, 3, "model.safetensors");
    checkpoint_file(pb, sizeof pb, &b, 3, "model.safetensors");
    assert_true(tl_same_file(pa, pb));
}

static void zero1_is_bitwise_plain_dp(void **state)
{
    (void)state;
    const char *plain[] = {"train.steps=4", "log.eval_every=0", "data.batch_size=16", "dist.zero=0"};
    const char *zero[] = {"train.steps=4", "log.eval_every=0", "data.batch_size=16", "dist.zero=1"};
    mt_train_config a, b;
    tl_tiny_config(&a, "dp-plain", 4, plain);
    tl_tiny_config(&b, "dp-zero", 4, zero);
    mt_train_options o = {0};
    train_ranks_or_fail(&a, 2, &o);
    train_ranks_or_fail(&b, 2, &o);
    static const char *files[] = {"model.safetensors", "optimizer.safetensors"};
    for (int i = 0; i < 2; i++) {
        char pa[1200], pb[1200];
        checkpoint_file(pa, sizeof pa, &a, 4, files[i]);
        checkpoint_file(pb, sizeof pb, &b, 4, files[i]);
        if (!tl_same_file(pa, pb))
            fail_msg("%s differs between ZeRO-1 and plain data parallelism", files[i]);
    }
}

static void sharded_resume_is_bitwise_exact(void **state)
{
    (void)state;
    const char *sets[] = {"train.steps=8", "log.checkpoint_every=4", "log.eval_every=0", "log.keep_last=0",
                          "data.batch_size=16", "dist.zero=1", "train.warmup_steps=3", "dist.tp_size=2"};
    mt_train_config whole, parts;
    tl_tiny_config(&whole, "dp-whole", 8, sets);
    tl_tiny_config(&parts, "dp-parts", 8, sets);
    mt_train_options o = {0};
    train_grid_or_fail(&whole, 2, 2, &o);
    o.stop_at = 3;
    train_grid_or_fail(&parts, 2, 2, &o);
    o = (mt_train_options){.resume = "auto"};
    train_grid_or_fail(&parts, 2, 2, &o);
    static const char *files[] = {"model.safetensors", "optimizer.safetensors", "trainer.json"};
    for (int i = 0; i < 3; i++) {
        char pa[1200], pb[1200];
        checkpoint_file(pa, sizeof pa, &whole, 8, files[i]);
        checkpoint_file(pb, sizeof pb, &parts, 8, files[i]);
        if (!tl_same_file(pa, pb))
            fail_msg("%s differs between the whole 2 x 2 run and the resumed one", files[i]);
    }
}

/* A 2-rank checkpoint resumed on one rank (with the same global batch)
 * carries the data position over: it ends where the uninterrupted 2-rank
 * run does, within fp32 rounding of the sums' order. A position that does
 * not split over the new count is refused, saying why. */
static void resume_on_another_rank_count(void **state)
{
    (void)state;
    const char *two[] = {"train.steps=6", "log.checkpoint_every=3", "log.eval_every=0", "log.keep_last=0",
                         "data.batch_size=16", "dist.zero=1"};
    const char *one[] = {"train.steps=6", "log.checkpoint_every=3", "log.eval_every=0", "log.keep_last=0",
                         "data.batch_size=32"};
    mt_train_config whole, parts, rest;
    tl_tiny_config(&whole, "reshard-whole", 6, two);
    tl_tiny_config(&parts, "reshard-parts", 6, two);
    tl_tiny_config(&rest, "reshard-parts", 5, one); /* the same run directory */
    mt_train_options o = {0};
    train_ranks_or_fail(&whole, 2, &o);
    o.stop_at = 3;
    train_ranks_or_fail(&parts, 2, &o);
    o = (mt_train_options){.resume = "auto"};
    train_ranks_or_fail(&rest, 1, &o);
    char pa[1200], pb[1200];
    checkpoint_file(pa, sizeof pa, &whole, 6, "model.safetensors");
    checkpoint_file(pb, sizeof pb, &rest, 6, "model.safetensors");
    const double d = tl_model_difference(pa, pb);
    printf("2 ranks resumed on 1: parameters after 6 steps %.2e relative to the 2-rank run\n", d);
    assert_true(d < 1e-6);

    const char *odd[] = {"train.steps=1", "log.eval_every=0", "data.batch_size=3"};
    mt_train_config three;
    tl_tiny_config(&three, "reshard-odd", 3, odd);
    train_ranks_or_fail(&three, 2, &(mt_train_options){0}); /* 2 x 3 samples visited */
    tl_rank_run runs[TL_MAX_RANKS];
    o = (mt_train_options){.resume = "auto"};
    assert_false(train_ranks(&three, 4, &o, runs));
    printf("resume on 4 ranks: %s\n", runs[0].err);
    assert_non_null(strstr(runs[0].err, "the 6 samples its ranks visited do not split over 4 ranks"));
}

static void tp_size_must_match_the_group(void **state)
{
    (void)state;
    const char *sets[] = {"train.steps=1", "log.eval_every=0", "dist.tp_size=2"};
    mt_train_config c;
    tl_tiny_config(&c, "tp-mismatch", 3, sets);
    tl_rank_run runs[TL_MAX_RANKS];
    mt_train_options o = {0};
    assert_false(train_ranks(&c, 1, &o, runs));
    assert_non_null(strstr(runs[0].err, "tp_size = 2 but the run's tensor-parallel group has 1 ranks"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(dp2_matches_one),
        cmocka_unit_test(tp2_replicated_bc_matches_one),
        cmocka_unit_test(tp2_split_bc_matches_one),
        cmocka_unit_test(dp2_tp2_matches_one),
        cmocka_unit_test(tp2_evaluation_matches_one),
        cmocka_unit_test(tp2_from_released_weights),
        cmocka_unit_test(buckets_overlap_the_backward),
        cmocka_unit_test(zero1_is_bitwise_plain_dp),
        cmocka_unit_test(sharded_resume_is_bitwise_exact),
        cmocka_unit_test(resume_on_another_rank_count),
        cmocka_unit_test(tp_size_must_match_the_group),
    };
    return cmocka_run_group_tests(tests, tl_temp_dir_setup, tl_temp_dir_teardown);
}
