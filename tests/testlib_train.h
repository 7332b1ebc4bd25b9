/* Helpers of the tests that run the trainer: a tiny run's config, and
 * comparisons of checkpoint files. */
#ifndef MT_TESTLIB_TRAIN_H
#define MT_TESTLIB_TRAIN_H

#include <stdbool.h>

#include "train/trainer.h"

enum { TL_MAX_RANKS = 4 };

/* One rank's run in tl_train_grid. */
typedef struct tl_rank_run {
    const mt_train_config *cfg;
    mt_train_options opt;
    mt_train_result res;
    bool ok;
    char err[1024];
} tl_rank_run;

/* configs/tiny.ini with the run directory tl_temp_dir()/run and the
 * overrides ("section.key=value"), finalized; fails the test on an error. */
void tl_tiny_config(mt_train_config *c, const char *run, int n_sets, const char *const *sets);

/* Whether two files have the same bytes (false when either is missing). */
bool tl_same_file(const char *a, const char *b);

/* The relative L2 difference of two model.safetensors (f32), all tensors
 * as one vector; fails the test when their keys differ. */
double tl_model_difference(const char *a_path, const char *b_path);

/* Runs cfg on dp x tp ranks, threads of this process on CPU communicators
 * (rank d * tp + t has tp rank t and dp rank d, as the launcher splits
 * them), each with base's options and, when gpu, its own CUDA backend on
 * device 0. runs[] gets every rank's result and error; true when every
 * rank succeeded. */
bool tl_train_grid(const mt_train_config *cfg, int dp, int tp, const mt_train_options *base, bool gpu,
                   tl_rank_run *runs);

/* tl_train_grid, failing the test with the first failing rank's error. */
void tl_train_grid_or_fail(const mt_train_config *cfg, int dp, int tp, const mt_train_options *base, bool gpu);

/* The step losses of a run's metrics.jsonl, in order; returns how many (at most max). */
int tl_read_losses(const char *out_dir, double *loss, int max);

/* The largest relative difference of the step losses of two runs, which
 * must both have n steps. */
double tl_loss_difference(const mt_train_config *a, const mt_train_config *b, int n);

#endif
