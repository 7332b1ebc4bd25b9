/* The model config as the reference's config.json (MambaConfig, with the
 * block's arguments under ssm_cfg), so that a checkpoint's config.json loads
 * in the reference and a released model's config.json loads here. */
#ifndef MT_CONFIG_JSON_H
#define MT_CONFIG_JSON_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "layers/config.h"

/* A new JSON object (the caller json_decref's it). Settings the reference
 * cannot express are written only when they differ from what it assumes:
 * norm_epsilon (fixed at 1e-5 there) and dt_limit (default (0, inf); an
 * infinite upper bound is written as null). */
json_t *mt_model_config_to_json(const mt_model_config *c);

/* Reads j over the defaults of a Mamba-2 block, then validates with
 * mt_model_config_finalize. d_model, n_layer and vocab_size are required;
 * ssm_cfg.layer must be "Mamba2". An unknown key, a wrong type or a
 * setting this implementation lacks (MLP blocks, attention layers,
 * D_has_hdim, ...) is an error naming the field. */
bool mt_model_config_from_json(const json_t *j, mt_model_config *c, char *err, size_t errlen);

#endif
