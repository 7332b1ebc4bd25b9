/* Export: a model directory (a checkpoint's step_NNNNNN, or any directory
 * train/pretrained.h reads) written as a released model that the reference
 * package and HF transformers load:
 *   "reference": config.json in the reference's scheme and pytorch_model.bin
 *                (torch.save format) with its key names, the tied
 *                lm_head.weight included as its state_dict has it;
 *   "hf":        config.json in transformers' scheme and model.safetensors
 *                with its key names (backbone.embeddings.weight).
 * Weights are written in f32. Each file goes to a temp name, is fsync'd and
 * renamed into out_dir (created when missing). */
#ifndef MT_EXPORT_H
#define MT_EXPORT_H

#include <stdbool.h>
#include <stddef.h>

bool mt_export(const char *src_dir, const char *format, const char *out_dir, char *err, size_t errlen);

#endif
