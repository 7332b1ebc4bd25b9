#include "dist/zero.h"

#include <math.h>

#include "core/error.h"

/* Elements per shard, and where the tail begins. */
static void split(const mt_params *p, int world, size_t *shard, size_t *tail)
{
    *shard = p->flat_size / ((size_t)world * MT_PARAM_ALIGN) * MT_PARAM_ALIGN;
    *tail = *shard * (size_t)world;
}

void mt_zero1_ranges(const mt_params *p, int world, int rank, size_t begin[2], size_t count[2])
{
    size_t shard, tail;
    split(p, world, &shard, &tail);
    begin[0] = shard * (size_t)rank;
    count[0] = shard;
    begin[1] = tail;
    count[1] = p->flat_size - tail;
}

static mt_tensor view(const mt_params *p, void *base, size_t begin, size_t count)
{
    mt_tensor t;
    mt_tensor_init(&t, p->dtype, p->device, 1, (int64_t[]){(int64_t)count});
    t.data = (char *)base + begin * mt_dtype_size(p->dtype);
    return t;
}

bool mt_zero1_reduce_scatter(mt_comm *c, mt_params *p, char *err, size_t errlen)
{
    size_t shard, tail;
    split(p, c->world, &shard, &tail);
    const size_t mine = shard * (size_t)c->rank, es = mt_dtype_size(p->dtype);
    return (!shard || c->reduce_scatter(c, p->grads, (char *)p->grads + mine * es, shard, p->dtype, err, errlen)) &&
           (tail == p->flat_size ||
            c->all_reduce(c, (char *)p->grads + tail * es, p->flat_size - tail, p->dtype, err, errlen));
}

bool mt_zero1_reduce_grads(mt_comm *c, mt_backend *be, mt_params *p, double *norm, char *err, size_t errlen)
{
    size_t shard, tail;
    split(p, c->world, &shard, &tail);
    const size_t mine = shard * (size_t)c->rank;
    if (!mt_zero1_reduce_scatter(c, p, err, errlen))
        return false;
    mt_tensor own = view(p, p->grads, mine, shard), rest = view(p, p->grads, tail, p->flat_size - tail);
    double sq = shard ? be->sumsq(be, &own) : 0.0;
    if (!c->all_reduce(c, &sq, 1, MT_F64, err, errlen))
        return false;
    if (tail < p->flat_size)
        sq += be->sumsq(be, &rest); /* the same on every rank: added once, after the shards */
    *norm = sqrt(sq);
    return true;
}

bool mt_zero1_step(mt_comm *c, mt_adamw *o, mt_backend *be, mt_params *p, double lr, double grad_scale, char *err,
                   size_t errlen)
{
    size_t shard, tail;
    split(p, c->world, &shard, &tail);
    const size_t begin[2] = {shard * (size_t)c->rank, tail}, count[2] = {shard, p->flat_size - tail};
    mt_adamw_step_ranges(o, be, p, lr, grad_scale, 2, begin, count);
    const size_t es = mt_dtype_size(p->dtype);
    return !shard || c->all_gather(c, (char *)p->values + begin[0] * es, p->values, shard, p->dtype, err, errlen);
}

bool mt_zero1_gather_moments(mt_comm *c, mt_params *p, char *err, size_t errlen)
{
    size_t shard, tail;
    split(p, c->world, &shard, &tail);
    const size_t mine = shard * (size_t)c->rank * mt_dtype_size(p->dtype);
    return !shard || (c->all_gather(c, (char *)p->adam_m + mine, p->adam_m, shard, p->dtype, err, errlen) &&
                      c->all_gather(c, (char *)p->adam_v + mine, p->adam_v, shard, p->dtype, err, errlen));
}
