/* Checkpoints (DESIGN.md section 8). A checkpoint is a directory
 * out_dir/step_NNNNNN holding
 *   model.safetensors      fp32 masters, one tensor per parameter, key = its name
 *   optimizer.safetensors  "<name>.exp_avg" (Adam m) and "<name>.exp_avg_sq" (v)
 *   trainer.json           the trainer's state, as the trainer gives it
 *   config.json            the model config in the reference's field names
 *   manifest.json          every other file with its size and CRC-32
 * It is written into step_NNNNNN.tmp, every file fsync'ed, then renamed into
 * place, so a crash leaves either the whole checkpoint or none; the manifest
 * catches a file damaged later. A checkpoint that does not verify is never
 * deleted: pruning leaves it, and a save of its step moves it aside to
 * step_NNNNNN.damaged (or .damaged.N). Every listing of out_dir first puts
 * back a step_NNNNNN.old that is the only copy left by a replacement
 * interrupted between its two renames. */
#ifndef MT_CHECKPOINT_H
#define MT_CHECKPOINT_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/params.h"

/* Saves p (values, and Adam m/v when with_optimizer) from its device, with
 * trainer_state and model_config (JSON objects), as out_dir/step_NNNNNN
 * (created when missing; a valid checkpoint of the same step is replaced, a
 * damaged one moved aside). Then keeps only the newest keep_last valid
 * checkpoints (keep_last <= 0: all) and removes leftovers of interrupted
 * saves. The checkpoint's path goes to path_out (may be NULL). */
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

/* What mt_checkpoint_latest found in out_dir. */
typedef enum mt_checkpoint_found {
    MT_CHECKPOINT_VALID,     /* path names the newest valid checkpoint */
    MT_CHECKPOINT_NONE,      /* no checkpoint directory at all (or no out_dir) */
    MT_CHECKPOINT_DAMAGED,   /* checkpoints, and none verifies: err names each and why */
    MT_CHECKPOINT_UNREADABLE /* out_dir cannot be listed: err says why */
} mt_checkpoint_found;

/* The newest out_dir/step_* whose manifest verifies, into path. Newer
 * damaged ones are skipped with a warning on stderr naming them and why. */
mt_checkpoint_found mt_checkpoint_latest(const char *out_dir, char *path, size_t len, char *err, size_t errlen);

/* How many checkpoint directories (step_NNNNNN, valid or not) out_dir
 * holds, 0 when it does not exist; -1 with a message when it cannot be
 * listed. */
int mt_checkpoint_count(const char *out_dir, char *err, size_t errlen);

/* Deletes every checkpoint of out_dir that verifies (*deleted: how many),
 * for a fresh run over an old one; damaged ones stay, with a warning. */
bool mt_checkpoint_delete_valid(const char *out_dir, int *deleted, char *err, size_t errlen);

#endif
