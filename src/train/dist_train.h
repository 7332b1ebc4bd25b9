/* The trainer's parallel parts: the ranks it runs with, and the gradient
 * reduction and update for data parallelism (plain or ZeRO-1). A rank
 * belongs to one data-parallel group (ranks that see different data and
 * hold the same model) and one tensor-parallel group (ranks that share one
 * model's heads and see the same data); either may be a group of one
 * (NULL). world = dp * tp; the lead rank (rank 0 of both) logs and writes
 * checkpoints. */
#ifndef MT_DIST_TRAIN_H
#define MT_DIST_TRAIN_H

#include <stdbool.h>
#include <stddef.h>

#include "dist/buckets.h"
#include "dist/comm.h"
#include "dist/zero.h"
#include "kernels/backend.h"
#include "layers/model.h"
#include "optim/adamw.h"

typedef struct mt_dist {
    mt_comm *dp, *tp; /* borrowed; NULL: a group of one */
    bool zero;        /* ZeRO-1 over dp (more than one dp rank): z holds this rank's moments */
    mt_zero1 z;
    bool overlap;     /* plain data parallelism with buckets: the all-reduce runs during the backward */
    mt_buckets buckets;
} mt_dist;

static inline int mt_group_rank(const mt_comm *c)
{
    return c ? c->rank : 0;
}

static inline int mt_group_size(const mt_comm *c)
{
    return c ? c->world : 1;
}

static inline bool mt_dist_lead(const mt_dist *d)
{
    return mt_group_rank(d->dp) == 0 && mt_group_rank(d->tp) == 0;
}

/* With several dp ranks: ZeRO-1 when asked for (the optimizer moments of
 * p become this rank's shard's, mt_zero1_init), else, for bucket_bytes >
 * 0 and no tensor parallelism, the all-reduce in buckets during the
 * backward (dist/buckets.h). */
void mt_dist_init(mt_dist *d, mt_comm *dp, mt_comm *tp, bool zero, size_t bucket_bytes, mt_params *p);
void mt_dist_release(mt_dist *d, const mt_params *p);

/* v (n host doubles) summed over group c in place (nothing for NULL). */
bool mt_group_sum(mt_comm *c, double *v, size_t n, char *err, size_t errlen);

/* Host doubles summed over every rank (the tp group, then the dp group). */
bool mt_dist_sum(const mt_dist *d, double *v, size_t n, char *err, size_t errlen);

/* Waits for every rank: the tp group, then the dp group, so that no rank
 * passes before the lead rank arrives. */
bool mt_dist_barrier(const mt_dist *d, char *err, size_t errlen);

/* Around the step's last backward on c: the bucketed all-reduce hooked in,
 * and finished (a no-op without overlap). */
void mt_dist_before_last_backward(mt_dist *d, mt_ctx *c);
bool mt_dist_after_last_backward(mt_dist *d, mt_ctx *c, char *err, size_t errlen);

/* After the micro-batches: the tensor-parallel partial gradients summed
 * over the tp group, the gradients summed over the dp ranks (an all-reduce,
 * or ZeRO-1's reduce-scatter) and *norm, the L2 norm of the whole model's
 * summed gradient (the same on every rank). */
bool mt_dist_reduce_grads(const mt_dist *d, mt_backend *be, mt_params *p, double *norm, char *err,
                          size_t errlen);

/* The AdamW update of the summed gradients times grad_scale: the whole
 * store, or under ZeRO-1 this rank's shard and then the all-gather. */
bool mt_dist_adamw_step(const mt_dist *d, mt_adamw *o, mt_backend *be, mt_params *p, double lr, double grad_scale,
                        char *err, size_t errlen);

/* Makes every rank's optimizer state whole in p before a checkpoint is
 * written or read (ZeRO-1: whole moment buffers, gathered from the shards
 * for writing; nothing otherwise), and afterwards goes back to the shards
 * (after reading: each rank keeps its part). */
bool mt_dist_gather_state(const mt_dist *d, mt_params *p, char *err, size_t errlen);
void mt_dist_whole_state(const mt_dist *d, mt_params *p);
void mt_dist_shard_state(const mt_dist *d, mt_params *p, bool keep_loaded);

/* Tensor parallelism: the whole model's store (values and moments) in full,
 * a host store of the single-rank layout, from the slices of the tp group
 * (every rank of it takes part; full may be NULL on ranks that do not
 * write). */
bool mt_tp_gather_store(mt_comm *tp, const mt_model *local, mt_params *full, char *err, size_t errlen);

/* Tensor parallelism: this rank's slice of full (a host store of the
 * single-rank layout; moments too when with_moments) into its model. */
bool mt_tp_scatter_store(const mt_model *local, const mt_params *full, bool with_moments, char *err,
                         size_t errlen);

#endif
