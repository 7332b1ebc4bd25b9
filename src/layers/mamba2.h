/* The Mamba-2 mixer block: in_proj -> [z | xBC | dt]; causal conv1d + SiLU
 * over xBC -> [x | B | C]; the SSD scan; the gated RMSNorm with z; out_proj.
 * Under tensor parallelism (dist/tp.h) a rank holds its heads' slice. */
#ifndef MT_MAMBA2_H
#define MT_MAMBA2_H

#include "autograd/ops.h"
#include "core/params.h"
#include "dist/tp.h"
#include "layers/block.h"
#include "layers/config.h"

typedef struct mt_mamba2 {
    mt_tensor *in_proj;  /* (in_proj_dim, d_model) */
    mt_tensor *conv_w;   /* (conv_dim, 1, d_conv) */
    mt_tensor *conv_b;   /* (conv_dim) */
    mt_tensor *dt_bias;  /* (nheads) */
    mt_tensor *A_log;    /* (nheads) */
    mt_tensor *D;        /* (nheads) */
    mt_tensor *norm_w;   /* (d_inner) */
    mt_tensor *out_proj; /* (d_model, d_inner) */
    const mt_tp *tp;     /* the TP group (size > 1) whose rank holds this slice; NULL: the whole block */
} mt_mamba2;

/* Declares the block's parameters under prefix (e.g. "backbone.layers.3.mixer"). */
void mt_mamba2_declare(mt_mamba2 *m, mt_params *p, const mt_model_config *cfg, const char *prefix);

/* The same names with rank tp->rank's local shapes (the shapes above with
 * d_inner, nheads, conv_dim and in_proj_dim of mt_tp_dims_of), flagged
 * MT_PARAM_TP_SHARDED, and MT_PARAM_TP_PARTIAL_GRAD over the B and C rows of
 * in_proj and conv1d when those are replicated. tp (size > 1, passed
 * mt_tp_check) is kept for the forward and must outlive the block. */
void mt_mamba2_declare_tp(mt_mamba2 *m, mt_params *p, const mt_model_config *cfg, const char *prefix,
                          const mt_tp *tp);

/* u (B, L, d_model) in the compute dtype -> (B, L, d_model). Weights used by
 * GEMMs are cast to u's dtype; the rest stay in the accumulation dtype.
 * seq_idx (B, L) i32 or NULL. cfg is the full model's. On a TP rank, u and
 * the result are replicated over the group (the block all-reduces inside,
 * every rank calling it alike). */
mt_tensor *mt_mamba2_forward(mt_ctx *c, const mt_mamba2 *m, const mt_model_config *cfg, mt_tensor *u,
                             mt_tensor *seq_idx);

/* mt_mamba2_forward as io says (layers/block.h): continuing from the
 * recurrent state io->state_in (the conv state (B, conv_dim, d_conv-1) and
 * the SSM state (B, H, P, N) in the accumulation dtype; NULL: the start)
 * and, when io->state_out is not NULL, giving the state after u in
 * state_out[0..1] (step tensors of c); u of one step (L = 1) is one decode
 * step. No state on a TP rank yet. */
mt_tensor *mt_mamba2_forward_io(mt_ctx *c, const mt_mamba2 *m, const mt_model_config *cfg, mt_tensor *u,
                                const mt_block_io *io);

#endif
