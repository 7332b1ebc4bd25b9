/* A training run's state, shared by the loop (trainer.c) and its
 * checkpoints, resume and released weights (run_checkpoint.c). Internal to
 * src/train. */
#ifndef MT_RUN_H
#define MT_RUN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "data/loader.h"
#include "layers/model.h"
#include "optim/adamw.h"
#include "optim/schedule.h"
#include "train/dist_train.h"
#include "train/trainer.h"

/* Everything a run holds. */
typedef struct mt_run {
    const mt_train_config *cfg;
    mt_backend *be;
    bool own_backend;
    mt_dist dist;
    bool lead; /* logs, writes metrics and checkpoints */
    int dp_rank, dp_size, tp_size;
    mt_device dev;
    mt_dtype compute;
    mt_model model;
    mt_adamw opt;
    mt_lr_schedule sched;
    mt_loader *train, *val;
    mt_tensor *ids, *targets, *seq_idx; /* device copies of a micro-batch */
    int32_t *host_targets;
    FILE *metrics;
    int64_t step, tokens;
    int bad_steps;
    int32_t *sample_ids; /* log.sample_prompt's ids (the lead rank's; NULL without samples) */
    int64_t sample_len;
    struct mt_tokenizer *sample_tok; /* log.tokenizer, NULL without one */
} mt_run;

/* Whether ok holds on every rank. A rank where it does not has its own
 * message in err already; the others are told which step failed elsewhere. */
bool mt_run_all_ok(mt_run *r, bool ok, const char *what, char *err, size_t errlen);

/* A checkpoint of the run at its step: every rank takes part, the lead
 * rank writes (its path into res->checkpoint). */
bool mt_run_save_checkpoint(mt_run *r, mt_train_result *res, char *err, size_t errlen);

/* Continues from resume: a checkpoint directory, or "auto" (the newest
 * valid one in out_dir; none at all: a fresh start; only damaged ones:
 * refused, naming each and why). */
bool mt_run_resume(mt_run *r, const char *resume, char *err, size_t errlen);

/* Checks that a fresh run may write into out_dir: one that holds
 * checkpoints is refused, unless overwrite (then the valid ones are
 * deleted, the damaged ones left). Run by the lead rank. */
bool mt_run_claim_out_dir(const mt_run *r, bool overwrite, char *err, size_t errlen);

/* Opens metrics.jsonl for appending at the run's step, after dropping the
 * rows of later steps (an interrupted run's, logged after its last
 * checkpoint). Run by the lead rank. */
bool mt_run_open_metrics(mt_run *r, char *err, size_t errlen);

/* The released weights of model.init_from into the model (nothing
 * re-initialized). */
bool mt_run_load_released(mt_run *r, char *err, size_t errlen);

#endif
