/* Helpers of the tests that run the trainer: a tiny run's config, and
 * comparisons of checkpoint files. */
#ifndef MT_TESTLIB_TRAIN_H
#define MT_TESTLIB_TRAIN_H

#include <stdbool.h>

#include "train/train_config.h"

/* configs/tiny.ini with the run directory tl_temp_dir()/run and the
 * overrides ("section.key=value"), finalized; fails the test on an error. */
void tl_tiny_config(mt_train_config *c, const char *run, int n_sets, const char *const *sets);

/* Whether two files have the same bytes (false when either is missing). */
bool tl_same_file(const char *a, const char *b);

/* The relative L2 difference of two model.safetensors (f32), all tensors
 * as one vector; fails the test when their keys differ. */
double tl_model_difference(const char *a_path, const char *b_path);

#endif
