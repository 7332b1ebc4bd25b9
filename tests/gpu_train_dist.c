/* The trainer's parallel paths on the GPU: ranks are threads of this
 * process that share one GPU, each with its own CUDA backend (stream,
 * cuBLASLt handle), meeting through the CPU communicator (device buffers
 * staged through the host). Data parallel (2 ranks, plain and ZeRO-1),
 * tensor parallel (2 ranks; ngroups 1: B and C replicated, the gated norm
 * summed across ranks) and both (2 x 2) train a small Mamba-2 for 6 steps
 * and are compared with one rank on the same global batch: losses and the
 * checkpointed parameters, in fp32 (the bound is fp32 rounding of sums in
 * another order) and in bf16 (where the split GEMMs and the bf16
 * all-reduce of the out_proj partial sums round differently). NCCL itself
 * needs one GPU per rank: gpu_nccl and bench/multi_gpu.sh cover it. Exits 77
 * (SKIPPED) without a GPU. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "core/device.h"
#include "testlib.h"
#include "testlib_train.h"
#include "train/trainer.h"

enum { STEPS = 6 };

/* A small Mamba-2 (16 heads of 32, ngroups 1, 2 layers) on selective
 * copying, global batch 16 of 256 tokens, in precision, on dp x tp ranks. */
static void small_config(mt_train_config *c, const char *run, const char *precision, int dp, int tp, int zero)
{
    char batch[64], tp_set[64], zero_set[64], prec[64];
    snprintf(batch, sizeof batch, "data.batch_size=%d", 16 / dp);
    snprintf(tp_set, sizeof tp_set, "dist.tp_size=%d", tp);
    snprintf(zero_set, sizeof zero_set, "dist.zero=%d", zero);
    snprintf(prec, sizeof prec, "train.precision=%s", precision);
    const char *sets[] = {"model.d_model=256", "model.headdim=32", "model.d_state=64", "model.chunk_size=64",
                          "data.seq_len=256", "data.synthetic_examples=2000", "train.steps=6", "log.eval_every=0",
                          "train.device=cuda", "train.eps=1", "train.grad_clip=0", batch, tp_set, zero_set, prec};
    tl_tiny_config(c, run, 15, sets);
}

static void compare(const char *precision, int dp, int tp, int zero, double loss_bound, double param_bound)
{
    char one_name[64], grid_name[64];
    snprintf(one_name, sizeof one_name, "one-%s", precision);
    snprintf(grid_name, sizeof grid_name, "grid-%s-%d-%d-%d", precision, dp, tp, zero);
    mt_train_config one, grid;
    small_config(&one, one_name, precision, 1, 1, 0);
    small_config(&grid, grid_name, precision, dp, tp, zero);
    char pa[1200], pb[1200];
    snprintf(pa, sizeof pa, "%s/step_%06d/model.safetensors", one.log.out_dir, STEPS);
    snprintf(pb, sizeof pb, "%s/step_%06d/model.safetensors", grid.log.out_dir, STEPS);
    if (access(pa, F_OK) != 0) /* the single-rank run, once per precision */
        tl_train_grid_or_fail(&one, 1, 1, &(mt_train_options){0}, true);
    tl_train_grid_or_fail(&grid, dp, tp, &(mt_train_options){0}, true);
    double la[STEPS];
    assert_int_equal(tl_read_losses(one.log.out_dir, la, STEPS), STEPS);
    const double worst = tl_loss_difference(&one, &grid, STEPS), d = tl_model_difference(pa, pb);
    printf("equiv gpu %s dp %d x tp %d%s vs 1 rank: losses %.2e (%.3f -> %.3f), parameters after %d steps %.2e "
           "(bounds %.0e, %.0e)\n",
           precision, dp, tp, zero ? " ZeRO-1" : "", worst, la[0], la[STEPS - 1], STEPS, d, loss_bound, param_bound);
    assert_true(worst < loss_bound);
    assert_true(d < param_bound);
}

static void fp32_dp2(void **state)
{
    (void)state;
    compare("fp32", 2, 1, 0, 1e-6, 1e-7);
}

static void fp32_dp2_zero1(void **state)
{
    (void)state;
    compare("fp32", 2, 1, 1, 1e-6, 1e-7);
}

static void fp32_tp2(void **state)
{
    (void)state;
    compare("fp32", 1, 2, 0, 1e-6, 1e-7);
}

static void fp32_dp2_tp2(void **state)
{
    (void)state;
    compare("fp32", 2, 2, 1, 1e-6, 1e-7);
}

static void bf16_dp2(void **state)
{
    (void)state;
    compare("bf16", 2, 1, 0, 2e-3, 1e-5);
}

static void bf16_tp2(void **state)
{
    (void)state;
    compare("bf16", 1, 2, 0, 2e-3, 1e-5);
}

int main(void)
{
    if (mt_cuda_device_count() == 0) {
        printf("SKIPPED: no CUDA device present\n");
        return TL_SKIP;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(fp32_dp2),  cmocka_unit_test(fp32_dp2_zero1), cmocka_unit_test(fp32_tp2),
        cmocka_unit_test(fp32_dp2_tp2), cmocka_unit_test(bf16_dp2),     cmocka_unit_test(bf16_tp2),
    };
    return cmocka_run_group_tests(tests, tl_temp_dir_setup, tl_temp_dir_teardown);
}
