/* Activation checkpointing: a block whose internal activations are not kept
 * for the backward but recomputed there.
 *
 * mt_recompute_block runs fn(c, arg, x, aux) on a second context without
 * recording it, copies the block's output into the step arena, and drops
 * everything else the block made. Its tape node, walked by mt_backward, runs
 * fn again with recording on that second context, backpropagates the
 * output's gradient through it (parameter gradients land in the parameter
 * store as usual) and adds x's gradient to x's. The recomputation uses the
 * same kernels on the same inputs, so losses and gradients equal those of
 * the plain block (bitwise where x feeds only the block and the kernels are
 * deterministic). aux (e.g. seq_idx) takes no gradient. */
#ifndef MT_RECOMPUTE_H
#define MT_RECOMPUTE_H

#include "autograd/tape.h"

typedef mt_tensor *(*mt_block_fn)(mt_ctx *c, void *arg, mt_tensor *x, mt_tensor *aux);

mt_tensor *mt_recompute_block(mt_ctx *c, mt_block_fn fn, void *arg, mt_tensor *x, mt_tensor *aux);

#endif
