#include "train/dist_train.h"

#include "dist/zero.h"

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

bool mt_dist_reduce_grads(const mt_dist *d, mt_backend *be, mt_params *p, double *norm, char *err, size_t errlen)
{
    if (mt_group_size(d->dp) > 1) {
        if (d->zero)
            return mt_zero1_reduce_grads(d->dp, be, p, norm, err, errlen);
        if (!d->dp->all_reduce(d->dp, p->grads, p->flat_size, p->dtype, err, errlen))
            return false;
    }
    *norm = mt_grad_norm(be, p);
    return true;
}

bool mt_dist_adamw_step(const mt_dist *d, mt_adamw *o, mt_backend *be, mt_params *p, double lr, double grad_scale,
                        char *err, size_t errlen)
{
    if (d->zero && mt_group_size(d->dp) > 1)
        return mt_zero1_step(d->dp, o, be, p, lr, grad_scale, err, errlen);
    mt_adamw_step(o, be, p, lr, grad_scale);
    return true;
}

bool mt_dist_gather_state(const mt_dist *d, mt_params *p, char *err, size_t errlen)
{
    return !d->zero || mt_group_size(d->dp) == 1 || mt_zero1_gather_moments(d->dp, p, err, errlen);
}
