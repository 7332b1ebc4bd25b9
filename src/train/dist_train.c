#include "train/dist_train.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/device.h"
#include "core/error.h"
#include "dist/tp.h"
#include "dist/zero.h"

void mt_dist_init(mt_dist *d, mt_comm *dp, mt_comm *tp, bool zero, size_t bucket_bytes, mt_params *p)
{
    const bool several = mt_group_size(dp) > 1;
    /* No overlap beside tensor parallelism: its collectives run during the
     * backward on the other communicator, and NCCL kernels of two
     * communicators that run at once can wait on each other across ranks. */
    *d = (mt_dist){.dp = dp,
                   .tp = tp,
                   .zero = zero && several,
                   .overlap = !zero && several && bucket_bytes > 0 && mt_group_size(tp) == 1};
    if (d->zero)
        mt_zero1_init(&d->z, dp, p);
    if (d->overlap)
        mt_buckets_init(&d->buckets, dp, p, bucket_bytes);
}

void mt_dist_release(mt_dist *d, const mt_params *p)
{
    if (d->zero)
        mt_zero1_release(&d->z, p);
    if (d->overlap)
        mt_buckets_release(&d->buckets);
}

void mt_dist_before_last_backward(mt_dist *d, mt_ctx *c)
{
    if (d->overlap)
        mt_buckets_arm(&d->buckets, c);
}

bool mt_dist_after_last_backward(mt_dist *d, mt_ctx *c, char *err, size_t errlen)
{
    return !d->overlap || mt_buckets_finish(&d->buckets, c, err, errlen);
}

bool mt_group_sum(mt_comm *c, double *v, size_t n, char *err, size_t errlen)
{
    return !c || c->world == 1 || c->all_reduce(c, v, n, MT_F64, err, errlen);
}

bool mt_dist_sum(const mt_dist *d, double *v, size_t n, char *err, size_t errlen)
{
    return mt_group_sum(d->tp, v, n, err, errlen) && mt_group_sum(d->dp, v, n, err, errlen);
}

bool mt_dist_barrier(const mt_dist *d, char *err, size_t errlen)
{
    return (!d->tp || d->tp->barrier(d->tp, err, errlen)) && (!d->dp || d->dp->barrier(d->dp, err, errlen));
}

/* Under tensor parallelism: the partial gradients summed over tp, then
 * over dp, and the norm from this rank's owned elements, the sharded ones'
 * squares summed over tp and the replicated ones' counted once. */
static bool reduce_grads_tp(const mt_dist *d, mt_backend *be, mt_params *p, double *norm, char *err, size_t errlen)
{
    const bool zero = d->zero;
    if (!mt_tp_reduce_partial_grads(d->tp, p, err, errlen) ||
        (mt_group_size(d->dp) > 1 && !d->overlap &&
         !(zero ? mt_zero1_reduce_scatter(&d->z, p, err, errlen)
                : d->dp->all_reduce(d->dp, p->grads, p->flat_size, p->dtype, err, errlen))))
        return false;
    /* The owned elements: the ZeRO-1 shard and tail, or all of them. */
    const size_t all_begin[2] = {0, p->flat_size}, all_count[2] = {p->flat_size, 0};
    const size_t *begin = zero ? d->z.begin : all_begin, *count = zero ? d->z.count : all_count;
    double own[2] = {0, 0}, tail[2] = {0, 0};
    mt_tp_grad_sumsq(be, p, begin[0], begin[0] + count[0], own);
    if (zero && !d->dp->all_reduce(d->dp, own, 2, MT_F64, err, errlen))
        return false;
    mt_tp_grad_sumsq(be, p, begin[1], begin[1] + count[1], tail);
    double sharded = own[0] + tail[0];
    if (!d->tp->all_reduce(d->tp, &sharded, 1, MT_F64, err, errlen))
        return false;
    *norm = sqrt(sharded + own[1] + tail[1]);
    return true;
}

bool mt_dist_reduce_grads(const mt_dist *d, mt_backend *be, mt_params *p, double *norm, char *err, size_t errlen)
{
    if (mt_group_size(d->tp) > 1)
        return reduce_grads_tp(d, be, p, norm, err, errlen);
    if (mt_group_size(d->dp) > 1 && !d->overlap) {
        if (d->zero)
            return mt_zero1_reduce_grads(&d->z, be, p, norm, err, errlen);
        if (!d->dp->all_reduce(d->dp, p->grads, p->flat_size, p->dtype, err, errlen))
            return false;
    }
    *norm = mt_grad_norm(be, p);
    return true;
}

bool mt_dist_adamw_step(const mt_dist *d, mt_adamw *o, mt_backend *be, mt_params *p, double lr, double grad_scale,
                        char *err, size_t errlen)
{
    if (d->zero)
        return mt_zero1_step(&d->z, o, be, p, lr, grad_scale, err, errlen);
    mt_adamw_step(o, be, p, lr, grad_scale);
    return true;
}

bool mt_dist_gather_state(const mt_dist *d, mt_params *p, char *err, size_t errlen)
{
    return !d->zero || mt_zero1_gather_moments(&d->z, p, err, errlen);
}

void mt_dist_whole_state(const mt_dist *d, mt_params *p)
{
    if (d->zero)
        mt_zero1_whole_moments(p);
}

void mt_dist_shard_state(const mt_dist *d, mt_params *p, bool keep_loaded)
{
    if (!d->zero)
        return;
    if (keep_loaded)
        mt_zero1_keep_own(&d->z, p);
    else
        mt_zero1_drop_whole(p);
}

/* The flat buffers of a store that a checkpoint holds. */
static void store_buffers(const mt_params *p, void *out[3])
{
    out[0] = p->values;
    out[1] = p->adam_m;
    out[2] = p->adam_v;
}

bool mt_tp_gather_store(mt_comm *tp, const mt_model *local, mt_params *full, char *err, size_t errlen)
{
    const mt_params *p = &local->params;
    const int size = tp->world;
    const size_t es = mt_dtype_size(p->dtype), bytes = p->flat_size * es;
    void *gathered = mt_device_alloc(p->device, (size_t)size * bytes, "tensor-parallel checkpoint gather");
    char *host = full ? malloc((size_t)size * bytes) : NULL;
    if (full && !host)
        mt_fatal("out of host memory gathering %d tensor-parallel slices of %zu bytes", size, bytes);
    void *src[3], *dst[3] = {NULL, NULL, NULL};
    store_buffers(p, src);
    if (full)
        store_buffers(full, dst);
    bool ok = true;
    for (int b = 0; ok && b < 3; b++) {
        ok = tp->all_gather(tp, src[b], gathered, p->flat_size, p->dtype, err, errlen);
        if (!ok || !full)
            continue;
        mt_device_copy(MT_CPU, host, p->device, gathered, (size_t)size * bytes);
        for (int r = 0; ok && r < size; r++)
            ok = mt_tp_unslice(&local->cfg, size, r, p, host + (size_t)r * bytes, full, dst[b], err, errlen);
    }
    mt_device_free(p->device, gathered);
    free(host);
    return ok;
}

bool mt_tp_scatter_store(const mt_model *local, const mt_params *full, bool with_moments, char *err,
                         size_t errlen)
{
    const mt_params *p = &local->params;
    const size_t bytes = p->flat_size * mt_dtype_size(p->dtype);
    char *host = malloc(bytes);
    if (!host)
        mt_fatal("out of host memory for a tensor-parallel slice of %zu bytes", bytes);
    void *src[3], *dst[3];
    store_buffers(full, src);
    store_buffers(p, dst);
    bool ok = true;
    for (int b = 0; ok && b < (with_moments ? 3 : 1); b++) {
        memset(host, 0, bytes); /* the padding between slices */
        ok = mt_tp_slice(&local->cfg, local->tp.size, local->tp.rank, full, src[b], p, host, err, errlen);
        if (ok)
            mt_device_copy(p->device, dst[b], MT_CPU, host, bytes);
    }
    free(host);
    return ok;
}
