/* The ops at the boundaries of a tensor-parallel (TP) region, as in
 * Megatron-LM: a block whose weights are split over the ranks of a TP group
 * starts from a replicated activation and ends in a sum over the ranks.
 * The communicator goes in the tape node, so the backward runs the matching
 * collective; every rank of the group must run the same ops in the same
 * order. A failed collective is an op error carrying the communicator's
 * message. Buffers handed to the communicator live on the ctx's device (the
 * NCCL communicator orders itself after the backend's stream). */
#ifndef MT_OPS_TP_H
#define MT_OPS_TP_H

#include "autograd/tape.h"
#include "dist/comm.h"

/* Entry of a TP region: forward identity (x itself, contiguous, seen as a new
 * tensor), backward the gradient all-reduced (summed) over comm: each rank's
 * column-parallel projection contributes its part of x's gradient. */
mt_tensor *mt_tp_copy_to(mt_ctx *c, mt_tensor *x, mt_comm *comm);

/* Exit of a TP region: forward x (contiguous) all-reduced over comm into a
 * new tensor (the row-parallel projection's partial outputs summed),
 * backward identity. */
mt_tensor *mt_tp_reduce_from(mt_ctx *c, mt_tensor *x, mt_comm *comm);

/* A vocab-parallel embedding: weight (V, D) is this rank's slice of a
 * table of V * comm->world rows, rows [rank * V, (rank + 1) * V); ids (any
 * shape S) -> (S..., D), every rank's lookups summed over comm (an id's row
 * comes from the rank that holds it, the others add zeros, so the sum is
 * exact). The backward needs no collective: the output's gradient is the
 * same on every rank, and each scatters it into its own rows. */
mt_tensor *mt_tp_embedding(mt_ctx *c, mt_tensor *weight, mt_tensor *ids, mt_comm *comm);

/* The vocab-parallel cross-entropy: logits (N, V) are this rank's columns
 * [rank * V, (rank + 1) * V) of a vocabulary of V * comm->world; targets (N)
 * index the whole vocabulary. Each rank's row statistics (max, sum of
 * exponentials, its target logit) are gathered over comm and combined in
 * rank order, so every rank gets the same loss and the same lse; the
 * backward is local (this rank's columns of softmax - onehot), written over
 * the logits when in_place (as mt_cross_entropy_in_place). */
mt_tensor *mt_cross_entropy_tp(mt_ctx *c, mt_tensor *logits, mt_tensor *targets, int ignore_index, mt_comm *comm,
                               bool in_place);

/* Mamba-2's gated norm, RMSNorm(y * SiLU(z)) * weight, on a TP rank whose
 * columns y, z (..., E) all lie in norm group `group` of the full model's
 * ngroups, a group of group_cols (>= E) columns spread over several ranks.
 * The group's per-row statistics are summed over comm: the forward's sum of
 * u^2 and the backward's sum of weight * dout * u (u = y * SiLU(z)), each as
 * an (rows, ngroups) buffer in the accumulation dtype holding this rank's
 * sums in column `group` and zeros elsewhere, so ranks of different groups
 * share one all-reduce. weight (E) in the accumulation dtype. comm NULL: no
 * other rank holds columns of the group (they count as zeros), the form the
 * kernel tests use. */
mt_tensor *mt_gated_rmsnorm_tp(mt_ctx *c, mt_tensor *y, mt_tensor *z, mt_tensor *weight, int group, int ngroups,
                               int64_t group_cols, double eps, mt_comm *comm);

#endif
