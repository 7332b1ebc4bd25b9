/* Evaluation of a saved model: a checkpoint's step_NNNNNN or a released
 * model directory (train/pretrained.h) scored on token shards, in order
 * (no shuffle, one rank), the way the trainer scores its validation set:
 * the loss is the mean of the per-batch mean losses, the accuracy the share
 * of answer targets whose argmax is right. Errors name the file. */
#ifndef MT_EVALUATE_H
#define MT_EVALUATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kernels/backend.h"
#include "train/train_config.h"

enum { MT_MAX_SHARD_PATHS = 64 };

/* Splits a list of paths (spaces, commas or tabs) in place into paths[]
 * (at most MT_MAX_SHARD_PATHS); returns how many. */
int mt_split_paths(char *list, const char **paths);

typedef struct mt_eval_config {
    const char *model_dir;
    const char *data;     /* shard paths or globs, space or comma separated */
    int seq_len, batch_size;
    int64_t max_batches;  /* 0: every whole batch of the shards */
    mt_loss_on loss_on;
    mt_device_choice device;
    mt_precision precision; /* on CUDA; the CPU computes in fp32 */
    /* Called after each batch (NULL: silent). */
    void (*progress)(void *user, int64_t done, int64_t total, double running_loss);
    void *user;
} mt_eval_config;

typedef struct mt_eval_result {
    int64_t batches;  /* evaluated */
    int64_t samples;  /* in the shards */
    double loss;      /* mean of the per-batch mean losses */
    double perplexity;
    double accuracy;  /* with loss_on answers; NAN otherwise */
    int64_t scored;   /* answer targets counted in the accuracy */
    bool cuda;        /* where it ran */
} mt_eval_result;

bool mt_evaluate(const mt_eval_config *cfg, mt_eval_result *res, char *err, size_t errlen);

/* The backend a command (eval, generate) runs on: CUDA for device cuda, or
 * auto with a GPU present, else the CPU; *compute is bf16 or fp32 by
 * precision on CUDA, fp32 on the CPU. */
bool mt_open_run_backend(mt_device_choice device, mt_precision precision, mt_backend **be, mt_device *dev,
                         mt_dtype *compute, char *err, size_t errlen);

#endif
