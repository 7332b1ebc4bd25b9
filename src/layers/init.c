#include "layers/init.h"

#include <math.h>
#include <stdlib.h>

#include "core/error.h"
#include "core/rng.h"

uint64_t mt_init_seed(uint64_t seed, int k)
{
    return seed * 1000003u + (uint64_t)k;
}

static void fill_host(mt_tensor *t, const double *values)
{
    mt_tensor *h = mt_tensor_new(MT_CPU, t->dtype, t->ndim, t->shape);
    for (int64_t i = 0; i < mt_numel(h); i++)
        mt_set(h, i, values[i]);
    mt_tensor_copy(t, h);
    mt_tensor_free(h);
}

static double *host_values(const mt_tensor *t)
{
    double *v = malloc((size_t)mt_numel(t) * sizeof *v);
    if (!v)
        mt_fatal("out of host memory initializing %s", t->name);
    return v;
}

void mt_init_constant(mt_tensor *t, double v)
{
    double *vals = host_values(t);
    for (int64_t i = 0; i < mt_numel(t); i++)
        vals[i] = v;
    fill_host(t, vals);
    free(vals);
}

void mt_init_dt_bias(mt_tensor *t, const mt_model_config *cfg, uint64_t seed)
{
    double *vals = host_values(t);
    for (int64_t i = 0; i < mt_numel(t); i++) {
        double dt = exp(mt_rng_uniform(seed, (uint64_t)i, log(cfg->dt_min), log(cfg->dt_max)));
        if (dt < cfg->dt_init_floor)
            dt = cfg->dt_init_floor;
        vals[i] = dt + log(-expm1(-dt)); /* softplus^-1 */
    }
    fill_host(t, vals);
    free(vals);
}

void mt_init_A_log(mt_tensor *t, const mt_model_config *cfg, uint64_t seed)
{
    double *vals = host_values(t);
    for (int64_t i = 0; i < mt_numel(t); i++)
        vals[i] = log(mt_rng_uniform(seed, (uint64_t)i, cfg->A_init_min, cfg->A_init_max));
    fill_host(t, vals);
    free(vals);
}

void mt_init_linear(mt_backend *be, mt_tensor *w, uint64_t seed, double scale)
{
    double bound = 1.0 / sqrt((double)w->shape[w->ndim - 1]) * scale;
    be->fill_uniform(be, w, seed, -bound, bound);
}

void mt_init_keep_slice(const mt_model_config *cfg, const mt_tp *tp, mt_tensor *local, const mt_tensor *full)
{
    mt_tp_layout l;
    if (!mt_tp_layout_of(cfg, tp->size, tp->rank, local->name, &l))
        mt_fatal("%s is not a tensor-parallel parameter", local->name);
    mt_tp_copy_param(&l, local->device, local->data, full->data, mt_dtype_size(local->dtype), false);
}

mt_tensor *mt_init_full_like(const mt_tensor *local, int ndim, const int64_t *shape)
{
    mt_tensor *t = mt_tensor_new(local->device, local->dtype, ndim, shape);
    t->name = local->name;
    return t;
}
