#include "dist/zero.h"

#include <math.h>

#include "core/device.h"
#include "core/error.h"

static mt_tensor view(const mt_params *p, void *base, size_t begin, size_t count)
{
    mt_tensor t;
    mt_tensor_init(&t, p->dtype, p->device, 1, (int64_t[]){(int64_t)count});
    t.data = (char *)base + begin * mt_dtype_size(p->dtype);
    return t;
}

/* Where range i's moments lie in z's compact buffers (in elements). */
static size_t compact_at(const mt_zero1 *z, int i)
{
    return i == 0 ? 0 : z->count[0];
}

/* Copies the owned ranges between p's whole moment buffers and z's. */
static void copy_owned(const mt_zero1 *z, mt_params *p, bool to_whole)
{
    const size_t es = mt_dtype_size(p->dtype);
    void *whole[2] = {p->adam_m, p->adam_v}, *own[2] = {z->m, z->v};
    for (int b = 0; b < 2; b++)
        for (int i = 0; i < 2; i++) {
            char *w = (char *)whole[b] + z->begin[i] * es, *o = (char *)own[b] + compact_at(z, i) * es;
            if (to_whole)
                mt_device_copy(p->device, w, p->device, o, z->count[i] * es);
            else
                mt_device_copy(p->device, o, p->device, w, z->count[i] * es);
        }
}

void mt_zero1_init(mt_zero1 *z, mt_comm *c, mt_params *p)
{
    const size_t shard = p->flat_size / ((size_t)c->world * MT_PARAM_ALIGN) * MT_PARAM_ALIGN;
    *z = (mt_zero1){.comm = c,
                    .begin = {shard * (size_t)c->rank, shard * (size_t)c->world},
                    .count = {shard, p->flat_size - shard * (size_t)c->world}};
    const size_t bytes = (z->count[0] + z->count[1]) * mt_dtype_size(p->dtype);
    z->m = mt_device_alloc(p->device, bytes, "ZeRO-1 first moments");
    z->v = mt_device_alloc(p->device, bytes, "ZeRO-1 second moments");
    mt_zero1_keep_own(z, p);
}

void mt_zero1_release(mt_zero1 *z, const mt_params *p)
{
    mt_device_free(p->device, z->m);
    mt_device_free(p->device, z->v);
    *z = (mt_zero1){0};
}

bool mt_zero1_reduce_scatter(const mt_zero1 *z, mt_params *p, char *err, size_t errlen)
{
    mt_comm *c = z->comm;
    const size_t es = mt_dtype_size(p->dtype);
    return (!z->count[0] ||
            c->reduce_scatter(c, p->grads, (char *)p->grads + z->begin[0] * es, z->count[0], p->dtype, err, errlen)) &&
           (!z->count[1] ||
            c->all_reduce(c, (char *)p->grads + z->begin[1] * es, z->count[1], p->dtype, err, errlen));
}

bool mt_zero1_reduce_grads(const mt_zero1 *z, mt_backend *be, mt_params *p, double *norm, char *err,
                           size_t errlen)
{
    if (!mt_zero1_reduce_scatter(z, p, err, errlen))
        return false;
    mt_tensor own = view(p, p->grads, z->begin[0], z->count[0]), rest = view(p, p->grads, z->begin[1], z->count[1]);
    double sq = z->count[0] ? be->sumsq(be, &own) : 0.0;
    if (!z->comm->all_reduce(z->comm, &sq, 1, MT_F64, err, errlen))
        return false;
    if (z->count[1])
        sq += be->sumsq(be, &rest); /* the same on every rank: added once, after the shards */
    *norm = sqrt(sq);
    return true;
}

bool mt_zero1_step(const mt_zero1 *z, mt_adamw *o, mt_backend *be, mt_params *p, double lr, double grad_scale,
                   char *err, size_t errlen)
{
    const size_t es = mt_dtype_size(p->dtype);
    void *m[2] = {z->m, (char *)z->m + compact_at(z, 1) * es}, *v[2] = {z->v, (char *)z->v + compact_at(z, 1) * es};
    mt_adamw_step_ranges(o, be, p, lr, grad_scale, 2, z->begin, z->count, m, v);
    mt_comm *c = z->comm;
    return !z->count[0] ||
           c->all_gather(c, (char *)p->values + z->begin[0] * es, p->values, z->count[0], p->dtype, err, errlen);
}

void mt_zero1_whole_moments(mt_params *p)
{
    const size_t bytes = p->flat_size * mt_dtype_size(p->dtype);
    if (!p->adam_m) {
        p->adam_m = mt_device_alloc(p->device, bytes, "optimizer first moments");
        p->adam_v = mt_device_alloc(p->device, bytes, "optimizer second moments");
    }
    mt_device_zero(p->device, p->adam_m, bytes);
    mt_device_zero(p->device, p->adam_v, bytes);
}

void mt_zero1_keep_own(const mt_zero1 *z, mt_params *p)
{
    copy_owned(z, p, false);
    mt_zero1_drop_whole(p);
}

bool mt_zero1_gather_moments(const mt_zero1 *z, mt_params *p, char *err, size_t errlen)
{
    mt_zero1_whole_moments(p);
    copy_owned(z, p, true);
    const size_t at = z->begin[0] * mt_dtype_size(p->dtype);
    mt_comm *c = z->comm;
    return !z->count[0] ||
           (c->all_gather(c, (char *)p->adam_m + at, p->adam_m, z->count[0], p->dtype, err, errlen) &&
            c->all_gather(c, (char *)p->adam_v + at, p->adam_v, z->count[0], p->dtype, err, errlen));
}

void mt_zero1_drop_whole(mt_params *p)
{
    mt_device_free(p->device, p->adam_m);
    mt_device_free(p->device, p->adam_v);
    p->adam_m = p->adam_v = NULL;
}
