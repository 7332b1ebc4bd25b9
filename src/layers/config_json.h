/* The model config as the reference's config.json (MambaConfig, with the
 * block's arguments under ssm_cfg), so that a checkpoint's config.json loads
 * in the reference and a released model's config.json loads here; and as
 * HF transformers' config.json. */
#ifndef MT_CONFIG_JSON_H
#define MT_CONFIG_JSON_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "layers/config.h"

/* A new JSON object (the caller json_decref's it); ssm_cfg holds the
 * arguments of the block c->layer names (ssm_cfg.layer "Mamba1" or
 * "Mamba2"), Mamba1's dt_rank as "auto" when c->dt_rank is 0. Settings the
 * reference cannot express are written only when they differ from what it
 * assumes: norm_epsilon (fixed at 1e-5 there) and dt_limit (default (0, inf);
 * an infinite upper bound is Infinity, as Python's json writes it: write
 * the object with mt_json_dumps, io/json_file.h). Non-finite numbers read
 * as io/json_file.h holds them. */
json_t *mt_model_config_to_json(const mt_model_config *c);

/* Reads j over the defaults of the block ssm_cfg.layer names ("Mamba1" when
 * absent, as in the reference, also when ssm_cfg is), then validates with
 * mt_model_config_finalize; a chunk_size outside the kernels' range becomes
 * the nearest inside (mt_model_config_nearest_chunk). d_model, n_layer and vocab_size are required. An
 * unknown key (a key of the other block included), a wrong type or a
 * setting this implementation lacks (MLP blocks, attention layers,
 * D_has_hdim, ...) is an error naming the field. */
bool mt_model_config_from_json(const json_t *j, mt_model_config *c, char *err, size_t errlen);

/* HF transformers' scheme (config_hf.c): MambaConfig (model_type "mamba") or
 * Mamba2Config ("mamba2"), chunk_size as above. vocab_size there is the embedding's row count,
 * already padded. Settings this implementation lacks (use_bias,
 * norm_before_gate, another hidden_act, ...) are errors naming the key;
 * transformers' own keys (token ids, output flags) are passed over. */
bool mt_model_config_from_hf_json(const json_t *j, mt_model_config *c, char *err, size_t errlen);

/* Either scheme: transformers' when the object has model_type. */
bool mt_model_config_from_any_json(const json_t *j, mt_model_config *c, char *err, size_t errlen);

/* A new JSON object in transformers' scheme, vocab_size the padded one;
 * time_step_limit always, as transformers writes it ([0.0, Infinity] for
 * none: write it with mt_json_dumps). */
json_t *mt_model_config_to_hf_json(const mt_model_config *c);

#endif
