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

/* x (..., K), w (N, K), b (N) or NULL -> (..., N). x and w share a dtype. */
mt_tensor *mt_linear(mt_ctx *c, mt_tensor *x, mt_tensor *w, mt_tensor *b);

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

/* x converted to dtype (f32, bf16, or f64 on the CPU). */
mt_tensor *mt_cast(mt_ctx *c, mt_tensor *x, mt_dtype dtype);

#endif
