/* The Mamba-1 mixer block: in_proj -> [x | z]; causal conv1d + SiLU over x;
 * x_proj -> [dt_low | B | C]; delta = dt_proj.weight dt_low; the selective
 * scan (softplus(delta + dt_proj.bias), gated by SiLU(z)); out_proj. */
#ifndef MT_MAMBA1_H
#define MT_MAMBA1_H

#include "autograd/ops.h"
#include "core/params.h"
#include "layers/config.h"

typedef struct mt_mamba1 {
    mt_tensor *in_proj;  /* (2 d_inner, d_model) */
    mt_tensor *conv_w;   /* (d_inner, 1, d_conv) */
    mt_tensor *conv_b;   /* (d_inner), NULL without conv_bias */
    mt_tensor *x_proj;   /* (R + 2 d_state, d_inner) */
    mt_tensor *dt_proj;  /* (d_inner, R) */
    mt_tensor *dt_bias;  /* dt_proj.bias (d_inner): added inside the scan */
    mt_tensor *A_log;    /* (d_inner, d_state) */
    mt_tensor *D;        /* (d_inner) */
    mt_tensor *out_proj; /* (d_model, d_inner) */
} mt_mamba1;

/* Declares the block's parameters under prefix (e.g. "backbone.layers.3.mixer"). */
void mt_mamba1_declare(mt_mamba1 *m, mt_params *p, const mt_model_config *cfg, const char *prefix);

/* u (B, L, d_model) in the compute dtype -> (B, L, d_model). Weights used by
 * GEMMs are cast to u's dtype; the rest stay in the accumulation dtype. The
 * scan carries its state across the whole row: like the reference's Mamba-1,
 * this block does not reset at document boundaries. */
mt_tensor *mt_mamba1_forward(mt_ctx *c, const mt_mamba1 *m, const mt_model_config *cfg, mt_tensor *u);

#endif
