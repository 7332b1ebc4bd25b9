/* Differentiable ops. Each computes on its inputs' device through the ctx's
 * backend, allocates its outputs in the step arena, and records a tape node
 * when an input requires grad. On invalid input (shapes, dtypes, devices) the
 * op reports through mt_op_error, naming the op and the shapes, and returns
 * NULL; an op given a NULL input returns NULL, so a chain of ops fails once. */
#ifndef MT_OPS_H
#define MT_OPS_H

#include "autograd/tape.h"

/* weight (V, D), ids i32 of any shape S -> (S..., D). */
mt_tensor *mt_embedding(mt_ctx *c, mt_tensor *weight, mt_tensor *ids);

/* mt_embedding of one slice of a table of `vocab` rows, weight (V, D)
 * holding rows [first_id, first_id + V) (a rank's of a vocab-parallel
 * embedding): ids of other rows give zero rows and no gradient. */
mt_tensor *mt_embedding_slice(mt_ctx *c, mt_tensor *weight, mt_tensor *ids, int64_t first_id, int64_t vocab);

/* x (..., K), w (N, K), b (N) or NULL -> (..., N). x and w share a dtype. */
mt_tensor *mt_linear(mt_ctx *c, mt_tensor *x, mt_tensor *w, mt_tensor *b);

/* mt_linear whose output is not kept for the backward: for an output that
 * only forward ops read before the next transient takes its buffer (a
 * block's output, read by the next norm). A backward that reads it is a
 * fatal error. */
mt_tensor *mt_linear_unkept(mt_ctx *c, mt_tensor *x, mt_tensor *w, mt_tensor *b);

/* Elementwise over equal shapes and dtypes. */
mt_tensor *mt_add(mt_ctx *c, mt_tensor *a, mt_tensor *b);
mt_tensor *mt_mul(mt_ctx *c, mt_tensor *a, mt_tensor *b);
mt_tensor *mt_silu(mt_ctx *c, mt_tensor *x);
mt_tensor *mt_softplus(mt_ctx *c, mt_tensor *x);

/* Prenorm residual block entry: r = x + residual (residual may be NULL),
 * returns RMSNorm(r) * weight in x's dtype and sets *residual_out = r, kept in
 * the accumulation dtype (f32, or f64 for f64). x (..., D), weight (D). */
mt_tensor *mt_rmsnorm(mt_ctx *c, mt_tensor *x, mt_tensor *residual, mt_tensor *weight, double eps,
                      mt_tensor **residual_out);

/* Mean cross-entropy of logits (N, V) against targets (N) i32, skipping
 * targets equal to ignore_index. A 1-element tensor in the accumulation dtype. */
mt_tensor *mt_cross_entropy(mt_ctx *c, mt_tensor *logits, mt_tensor *targets, int ignore_index);

/* mt_cross_entropy whose backward writes the logits' gradient over the
 * logits (mt_grad_in_place): for logits that are an op's output which no
 * other op reads, as a model's are. No buffer the size of the logits is
 * needed for their gradient, and the logits' values are gone after the
 * backward (read them before it). */
mt_tensor *mt_cross_entropy_in_place(mt_ctx *c, mt_tensor *logits, mt_tensor *targets, int ignore_index);

/* The same loss when logits (N, V) are columns [first_col, first_col + V)
 * of a vocabulary of `vocab` split into column slices (one per rank), given
 * stats (S, N, 3): every slice's row statistics in order (the backend's
 * cross_entropy_stats of each, gathered). The gradient goes to this slice's
 * logits only, in place when in_place (as mt_cross_entropy_in_place).
 * autograd/ops_tp.h gathers the stats over a TP group. */
mt_tensor *mt_cross_entropy_of_slice(mt_ctx *c, mt_tensor *logits, mt_tensor *targets, mt_tensor *stats,
                                     int64_t first_col, int64_t vocab, int ignore_index, bool in_place);

/* x converted to dtype (f32, bf16, or f64 on the CPU). */
mt_tensor *mt_cast(mt_ctx *c, mt_tensor *x, mt_dtype dtype);

/* ---- Mamba-2 (ops_mamba.c); the exact math is in kernels/backend.h ---- */

/* Causal depthwise conv1d + bias + SiLU over x (B, L, C) (a column view is
 * fine); weight (C, 1, W) or (C, W) with W <= 4, bias (C) or NULL, both in the
 * accumulation dtype; init_state (B, C, W-1) and seq_idx (B, L) i32 optional. */
mt_tensor *mt_conv1d_silu(mt_ctx *c, mt_tensor *x, mt_tensor *weight, mt_tensor *bias, mt_tensor *init_state,
                          mt_tensor *seq_idx);

/* The state a causal conv1d of `width` taps carries past x (B, L, C), for
 * the steps that follow: the last width-1 inputs of init_state (B, C,
 * width-1) (zeros when NULL) followed by x, as (B, C, width-1) in the
 * accumulation dtype: what mt_conv1d_silu of the next steps takes as its
 * init_state. */
mt_tensor *mt_conv1d_final_state(mt_ctx *c, mt_tensor *x, mt_tensor *init_state, int width);

/* The SSD scan: x (B, L, H*P), dt (B, L, H), Bm and Cm (B, L, G*N) in the op
 * dtype (column views are fine); A_log and dt_bias (H), D (H) or (H*P) or
 * NULL in the accumulation dtype; z (B, L, H*P) or NULL; init_state
 * (B, H, P, N) or NULL; seq_idx (B, L) i32 or NULL. Returns y (B, L, H*P);
 * when final_state is not NULL it receives the last state (B, H, P, N). */
mt_tensor *mt_ssd(mt_ctx *c, mt_tensor *x, mt_tensor *dt, mt_tensor *A_log, mt_tensor *Bm, mt_tensor *Cm,
                  mt_tensor *D, mt_tensor *z, mt_tensor *dt_bias, mt_tensor *init_state, mt_tensor *seq_idx,
                  const mt_ssd_config *cfg, mt_tensor **final_state);

typedef struct mt_scan_config {
    int ngroups;         /* G: groups of B/C, dividing the channels D */
    bool delta_softplus; /* delta = softplus(delta + delta_bias) inside the scan */
} mt_scan_config;

/* Mamba-1's selective scan, the sequential recurrence per channel d and
 * state n (accumulation in fp32 or better):
 *   dlt_t = softplus(delta_t + delta_bias) (or delta_t + delta_bias without softplus)
 *   h_t = exp(dlt_t A) h_{t-1} + dlt_t Bm_t u_t,  A = -exp(A_log),  h_{-1} = 0
 *   y_t = (Cm_t . h_t + D u_t) * SiLU(z_t)        (no gate when z is NULL)
 * u, delta (B, L, D) and Bm, Cm (B, L, G*N) in the op dtype (column views are
 * fine), channel d reading group d / (D/G) of Bm, Cm; z (B, L, D) or NULL;
 * A_log (D, N) contiguous, D (D) or NULL, delta_bias (D) or NULL in the
 * accumulation dtype. Returns y (B, L, D). A backend without the scan
 * kernels gives an op error. */
mt_tensor *mt_selective_scan(mt_ctx *c, mt_tensor *u, mt_tensor *delta, mt_tensor *A_log, mt_tensor *Bm,
                             mt_tensor *Cm, mt_tensor *D, mt_tensor *z, mt_tensor *delta_bias,
                             const mt_scan_config *cfg);

/* Mamba-2's gated output norm: RMSNorm(y * SiLU(z)) * weight over ngroups
 * groups of the last dim. y, z (..., E); weight (E) in the accumulation dtype. */
mt_tensor *mt_gated_rmsnorm(mt_ctx *c, mt_tensor *y, mt_tensor *z, mt_tensor *weight, int ngroups, double eps);

#endif
