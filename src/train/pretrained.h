/* Released weights: a model directory as the reference package and HF
 * transformers publish them, config.json (either scheme, layers/config_json.h)
 * and the weights in model.safetensors, a sharded model.safetensors with its
 * model.safetensors.index.json, or pytorch_model.bin (io/torch_checkpoint.h).
 *
 * Keys of both schemes map onto the model's parameters: the reference's
 * names are this implementation's, and transformers' differ only in
 * backbone.embeddings.weight. A tied lm_head.weight in the file must equal
 * the embedding. Values of any float dtype become the model's parameter
 * dtype; an embedding with fewer rows than the model's padded vocabulary is
 * padded with zero rows. */
#ifndef MT_PRETRAINED_H
#define MT_PRETRAINED_H

#include <stdbool.h>
#include <stddef.h>

#include "layers/model.h"

/* dir's config.json as a finalized model config. */
bool mt_pretrained_config(const char *dir, mt_model_config *cfg, char *err, size_t errlen);

/* Overwrites every parameter of m (built, allocated) with dir's weights.
 * A missing or unexpected key, or a shape other than the model's, is an
 * error naming the file, the key and both shapes; m is then partly
 * overwritten and should not be used. */
bool mt_pretrained_load(const char *dir, mt_model *m, char *err, size_t errlen);

#endif
