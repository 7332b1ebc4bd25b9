/* ZeRO-1 data parallelism: each rank owns one shard of the flat parameter
 * buffers' optimizer update. Per step the gradients are reduce-scattered
 * (each rank gets the sum over ranks of its shard), each rank runs AdamW on
 * its shard, and the updated values are all-gathered. The buffers split into
 * `world` equal shards of whole MT_PARAM_ALIGN blocks; the tail that does
 * not divide (under world * MT_PARAM_ALIGN elements) is all-reduced and
 * updated by every rank alike. With the communicator's rank-order sums the
 * result is bit for bit the plain data-parallel step (all-reduce, then
 * AdamW everywhere). */
#ifndef MT_ZERO_H
#define MT_ZERO_H

#include <stdbool.h>
#include <stddef.h>

#include "dist/comm.h"
#include "kernels/backend.h"
#include "optim/adamw.h"

/* The elements this rank owns: its shard (begin[0], count[0]) and the tail
 * (begin[1], count[1]), which every rank owns. */
void mt_zero1_ranges(const mt_params *p, int world, int rank, size_t begin[2], size_t count[2]);

/* Reduces the gradients over the ranks: this rank's shard and the tail hold
 * the sums afterwards (the rest of its gradient buffer is stale). */
bool mt_zero1_reduce_scatter(mt_comm *c, mt_params *p, char *err, size_t errlen);

/* mt_zero1_reduce_scatter, and *norm, the L2 norm of the summed gradient
 * (shard norms added in rank order, then the tail's). */
bool mt_zero1_reduce_grads(mt_comm *c, mt_backend *be, mt_params *p, double *norm, char *err, size_t errlen);

/* AdamW on this rank's shard and the tail, then the all-gather that gives
 * every rank every updated value. grad_scale as in mt_adamw_step (e.g.
 * clipping / (accumulation * world)). */
bool mt_zero1_step(mt_comm *c, mt_adamw *o, mt_backend *be, mt_params *p, double lr, double grad_scale, char *err,
                   size_t errlen);

/* Every rank's shard of the Adam moments all-gathered, so that every rank
 * holds them whole (for a checkpoint that any world size can resume). */
bool mt_zero1_gather_moments(mt_comm *c, mt_params *p, char *err, size_t errlen);

#endif
