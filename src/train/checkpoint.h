/* Checkpoints (DESIGN.md section 8). A checkpoint is a directory
 * out_dir/step_NNNNNN holding
 *   model.safetensors      fp32 masters, one tensor per parameter, key = its name
 *   optimizer.safetensors  "<name>.exp_avg" (Adam m) and "<name>.exp_avg_sq" (v)
 *   trainer.json           the trainer's state, as the trainer gives it
 *   config.json            the model config in the reference's field names
 *   manifest.json          every other file with its size and CRC-32
 * It is written into step_NNNNNN.tmp, every file fsync'ed, then renamed into
 * place, so a crash leaves either the whole checkpoint or none; the manifest
 * catches a file damaged later. */
#ifndef MT_CHECKPOINT_H
#define MT_CHECKPOINT_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/params.h"

/* Saves p (values, and Adam m/v when with_optimizer) from its device, with
 * trainer_state and model_config (JSON objects), as out_dir/step_NNNNNN
 * (created when missing; a checkpoint of the same step is replaced). Then
 * keeps only the newest keep_last checkpoints (keep_last <= 0: all) and
 * removes leftovers of interrupted saves. The checkpoint's path goes to
 * path_out (may be NULL). */
bool mt_checkpoint_save(const char *out_dir, int64_t step, const mt_params *p, bool with_optimizer,
                        const json_t *trainer_state, const json_t *model_config, int keep_last, char *path_out,
                        size_t path_len, char *err, size_t errlen);

/* Verifies dir's manifest, then loads every parameter (and m/v when
 * with_optimizer) by name into p's device buffers. Every key and shape is
 * checked before p is touched: a missing key, an extra key or a shape
 * mismatch is an error naming the key. *trainer_state (when not NULL) gets
 * the parsed trainer.json, which the caller json_decref's. */
bool mt_checkpoint_load(const char *dir, mt_params *p, bool with_optimizer, json_t **trainer_state, char *err,
                        size_t errlen);

/* Checks that every file of dir's manifest is present with its size and CRC-32. */
bool mt_checkpoint_verify(const char *dir, char *err, size_t errlen);

/* The newest out_dir/step_* whose manifest verifies, into path. A newer
 * damaged one is skipped with a warning on stderr naming it and why. */
bool mt_checkpoint_latest(const char *out_dir, char *path, size_t len, char *err, size_t errlen);

#endif
