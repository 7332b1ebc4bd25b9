/* ZeRO-1 data parallelism: each rank owns one shard of the flat parameter
 * buffers' optimizer update and keeps the Adam moments of that shard only.
 * Per step the gradients are reduce-scattered (each rank gets the sum over
 * ranks of its shard), each rank runs AdamW on its shard, and the updated
 * values are all-gathered. The buffers split into `world` equal shards of
 * whole MT_PARAM_ALIGN blocks; the tail that does not divide (under
 * world * MT_PARAM_ALIGN elements) is all-reduced and updated by every rank
 * alike. With the communicator's rank-order sums the result is bit for bit
 * the plain data-parallel step (all-reduce, then AdamW everywhere). */
#ifndef MT_ZERO_H
#define MT_ZERO_H

#include <stdbool.h>
#include <stddef.h>

#include "dist/comm.h"
#include "kernels/backend.h"
#include "optim/adamw.h"

typedef struct mt_zero1 {
    mt_comm *comm;    /* the data-parallel group, borrowed */
    size_t begin[2];  /* the owned elements of the flat buffers: the shard, then the tail */
    size_t count[2];
    void *m, *v;      /* their Adam moments: count[0] + count[1] elements, shard first */
} mt_zero1;

/* Takes over p's optimizer state: its moments of the owned elements move
 * into z, and p's whole moment buffers are freed (NULL: a checkpoint needs
 * mt_zero1_gather_moments first, a resume mt_zero1_whole_moments). */
void mt_zero1_init(mt_zero1 *z, mt_comm *c, mt_params *p);
void mt_zero1_release(mt_zero1 *z, const mt_params *p);

/* Reduces the gradients over the ranks: this rank's shard and the tail hold
 * the sums afterwards (the rest of its gradient buffer is stale). */
bool mt_zero1_reduce_scatter(const mt_zero1 *z, mt_params *p, char *err, size_t errlen);

/* mt_zero1_reduce_scatter, and *norm, the L2 norm of the summed gradient
 * (shard norms added in rank order, then the tail's). */
bool mt_zero1_reduce_grads(const mt_zero1 *z, mt_backend *be, mt_params *p, double *norm, char *err,
                           size_t errlen);

/* AdamW on this rank's shard and the tail, then the all-gather that gives
 * every rank every updated value. grad_scale as in mt_adamw_step (e.g.
 * clipping / (accumulation * world)). */
bool mt_zero1_step(const mt_zero1 *z, mt_adamw *o, mt_backend *be, mt_params *p, double lr, double grad_scale,
                   char *err, size_t errlen);

/* Allocates p's whole moment buffers (zeroed), for a checkpoint to load
 * into; mt_zero1_keep_own then takes the owned part and frees them. */
void mt_zero1_whole_moments(mt_params *p);
void mt_zero1_keep_own(const mt_zero1 *z, mt_params *p);

/* p's whole moment buffers allocated and filled from every rank's shards
 * (for a checkpoint that any world size can load); free them with
 * mt_zero1_drop_whole. */
bool mt_zero1_gather_moments(const mt_zero1 *z, mt_params *p, char *err, size_t errlen);
void mt_zero1_drop_whole(mt_params *p);

#endif
