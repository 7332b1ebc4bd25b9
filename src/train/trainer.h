/* The training run: data (shards, or a synthetic task generated into the run
 * directory), the model, AdamW with a schedule and clipping, the step loop
 * with gradient accumulation, a NaN/Inf guard, console progress and
 * metrics.jsonl, periodic evaluation, and checkpoints with exact resume.
 * SIGINT and SIGTERM end the run after the current step with a checkpoint
 * (a repeated signal does not cut it short). No checkpoint is written while
 * non-finite steps are pending.
 *
 * Run by several ranks (one call each, with their groups in the options),
 * every rank reads its own part of each global batch, the gradients are
 * summed over the data-parallel ranks, and only the lead rank logs and
 * writes. A checkpoint holds the whole model and optimizer state (ZeRO-1
 * shards and tensor-parallel slices gathered first) and every data-parallel
 * rank's loader cursor: it resumes on any number of ranks (the data
 * position reshards unless the ranks stopped at different places, at an
 * epoch boundary, or their samples do not split over the new count), and
 * loads anywhere as a model (export, init). */
#ifndef MT_TRAINER_H
#define MT_TRAINER_H

#include <stdbool.h>
#include <stddef.h>

#include "dist/comm.h"
#include "kernels/backend.h"
#include "train/train_config.h"

typedef struct mt_train_result {
    int64_t steps_done;
    double last_loss;          /* mean training loss of the last step */
    double eval_loss;          /* the last evaluation (NAN when none ran) */
    double eval_accuracy;      /* share of scored targets predicted (answers only); NAN when none */
    int64_t skipped_steps;     /* updates skipped for a non-finite loss or gradient */
    double state_bytes;        /* parameters, gradients and AdamW moments (flat buffers) */
    double step_bytes;         /* the step's device memory at its peak (mt_ctx_memory_of, summed) */
    int buckets;               /* data-parallel gradient buckets (0: no bucketed all-reduce) */
    int buckets_in_backward;   /* of those, started during the last step's backward */
    char checkpoint[1024];     /* the last checkpoint written, or empty */
    bool stopped_by_signal;    /* SIGINT or SIGTERM (to any rank) stopped it before train.steps */
} mt_train_result;

/* The exit status of a mamba-train run that SIGTERM or SIGINT stopped after
 * its checkpoint (free beside 1: error, 2: usage or config, 3: the NCCL
 * watchdog); --resume auto continues it. */
#define MT_EXIT_STOPPED_BY_SIGNAL 4

typedef struct mt_train_options {
    const char *resume;     /* NULL (fresh), "auto" (the newest valid checkpoint in out_dir; fresh when it
                               holds none, refused when they are all damaged) or a checkpoint directory */
    bool overwrite;         /* a fresh run may start in an out_dir that holds checkpoints: it deletes the
                               valid ones (a damaged one stays, moved aside when a save needs its name) */
    int64_t stop_at;        /* > 0: stop after this step with a checkpoint, as on a signal */
    int64_t nan_grad_at;    /* > 0: the gradients of this step are made NaN (tests the guard) */
    int64_t nan_grad_steps; /* with nan_grad_at: that many steps from it in a row (0 counts as 1) */
    mt_backend *backend;    /* NULL: made from train.device; else borrowed (a launched rank's GPU) */
    mt_comm *dp, *tp;       /* this rank's data- and tensor-parallel groups (dist_train.h); NULL: one rank.
                               The tp group's size must be dist.tp_size. */
} mt_train_options;

/* Runs cfg (finalized). False with a message in err when the run cannot go on. */
bool mt_train(const mt_train_config *cfg, const mt_train_options *opt, mt_train_result *result, char *err,
              size_t errlen);

#endif
