/* The samples a training run prints (log.sample_every): the prompt is read
 * once at the start, then every N steps the lead rank prints a greedy
 * continuation of it from the model as it is, so that a run shows what it
 * has learned, not only its loss. */
#ifndef MT_TRAIN_SAMPLE_H
#define MT_TRAIN_SAMPLE_H

#include <stdbool.h>
#include <stddef.h>

#include "train/run.h"

/* Reads log.sample_prompt (through log.tokenizer when it is set) and checks
 * that every layer has a recurrent step. Does nothing when log.sample_every
 * is 0 or on a rank that does not lead. */
bool mt_run_sample_setup(mt_run *r, char *err, size_t errlen);

/* Prints "sample STEP  PROMPT|CONTINUATION" (text, or ids without a
 * tokenizer). */
bool mt_run_sample(mt_run *r, char *err, size_t errlen);

void mt_run_sample_release(mt_run *r);

#endif
