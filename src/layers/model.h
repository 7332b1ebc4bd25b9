/* The Mamba language model: embedding, n_layer prenorm residual blocks
 * (fused add + RMSNorm, residual stream in the accumulation dtype), the final
 * norm, and the lm_head (tied to the embedding unless tie_embeddings is off).
 * Each layer's mixer is a block of its kind (layers/block.h; today every
 * layer has the kind cfg.layer names).
 * Parameter names are the reference checkpoint's keys. A tensor-parallel
 * rank's model (mt_model_build_tp) holds its slice of every Mamba-2 mixer
 * and of the vocabulary rows, and the norms whole (dist/tp.h). */
#ifndef MT_MODEL_H
#define MT_MODEL_H

#include "core/params.h"
#include "layers/block.h"
#include "layers/config.h"
#include "layers/mamba1.h"
#include "layers/mamba2.h"

typedef struct mt_model_layer {
    mt_tensor *norm_w;          /* backbone.layers.N.norm.weight (d_model) */
    const mt_block_kind *kind;  /* this layer's block kind (layers/block.h) */
    void *block;                /* its parameters, backbone.layers.N.mixer.* (an mt_mamba2, mt_mamba1, ...) */
    const mt_model_config *cfg; /* the model's, for a mixer run again by activation checkpointing */
} mt_model_layer;

typedef struct mt_model {
    mt_model_config cfg;
    mt_params params;
    mt_tensor *embedding; /* (vocab_padded, d_model); a TP rank's: (vocab_padded / tp.size, d_model) */
    mt_tensor *norm_f;    /* (d_model) */
    mt_tensor *lm_head;   /* the embedding when tied, else its own, shaped alike */
    mt_model_layer *layers;
    bool recompute_blocks; /* activation checkpointing: each mixer's activations recomputed in backward */
    mt_tp tp;              /* the TP group this rank's model is a slice for; size 1: the whole model */
} mt_model;

/* Declares and allocates every parameter (values zero until mt_model_init).
 * param_dtype is f32 for training, f64 for gradient checks. cfg must have
 * passed mt_model_config_finalize. */
void mt_model_build(mt_model *m, const mt_model_config *cfg, mt_device dev, mt_dtype param_dtype);

/* mt_model_build for rank tp->rank of a TP group of tp->size (NULL or size
 * 1: mt_model_build). Fatal unless cfg passes mt_tp_check. The group's
 * ranks must run every forward and backward together. */
void mt_model_build_tp(mt_model *m, const mt_model_config *cfg, mt_device dev, mt_dtype param_dtype,
                       const mt_tp *tp);
void mt_model_release(mt_model *m);

/* The reference initialization, reproducible from seed (see model.c). A TP
 * rank gets exactly its slice of the whole model's initialization. */
void mt_model_init(mt_model *m, mt_backend *be, uint64_t seed);

/* ids (B, L) i32 -> logits (B*L, vocab_padded) in the compute dtype (f32 or
 * bf16; f64 for gradient checks); a TP rank's are its columns of them,
 * (B*L, vocab_padded / tp.size) from column rank * vocab_padded / tp.size.
 * seq_idx (B, L) i32 or NULL: Mamba-2 blocks reset their state at its
 * document boundaries, Mamba-1 blocks (like the reference's) do not. */
mt_tensor *mt_model_logits(mt_ctx *c, mt_model *m, mt_tensor *ids, mt_tensor *seq_idx, mt_dtype compute);

/* The recurrent state of every layer for a batch of sequences, for
 * generation: t[layer][i] holds state tensor i of that layer's kind
 * (layers/block.h), heap tensors on the model's device. */
typedef struct mt_model_state {
    int64_t batch;
    int n_layer;
    mt_tensor *(*t)[MT_BLOCK_MAX_STATE];
} mt_model_state;

/* The state at the start (zeros), in the accumulation dtype of compute
 * (f32; f64 for f64). False with err when a layer's kind has no recurrent
 * step yet (Mamba-1) or m is a tensor-parallel rank's. */
bool mt_model_state_init(mt_model_state *s, const mt_model *m, int64_t batch, mt_dtype compute, char *err,
                         size_t errlen);
void mt_model_state_release(mt_model_state *s);
/* Back to the start: every state tensor zero. */
void mt_model_state_zero(mt_model_state *s);

/* Generation's forward: ids (B, L) i32, B the state's batch, continuing
 * from s: the logits (B*L, vocab_padded) that mt_model_logits gives those
 * positions after everything s has seen, with s advanced past ids. Prefill
 * is a whole prompt, a decode step one token (L = 1). Records no tape. */
mt_tensor *mt_model_advance(mt_ctx *c, mt_model *m, mt_tensor *ids, mt_model_state *s, mt_dtype compute);

/* The mean cross-entropy of mt_model_logits' logits against targets (B*L)
 * i32 over the whole vocabulary (under TP, combined over the group: the
 * same on every rank). The backward writes the logits' gradient over the
 * logits (mt_cross_entropy_in_place): read the logits before it. */
mt_tensor *mt_model_loss(mt_ctx *c, const mt_model *m, mt_tensor *logits, mt_tensor *targets, int ignore_index);

/* best (rows) = each row's most likely token over the whole vocabulary,
 * the lowest id among equals, from mt_model_logits' logits (under TP every
 * rank of the group calls it and gets the same). False, with err, when the
 * group's all-reduce fails. */
bool mt_model_argmax(const mt_model *m, const mt_tensor *logits, int64_t *best, char *err, size_t errlen);

#endif
