#include "optim/adamw.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/device.h"
#include "core/error.h"

/* The (tied) embedding has its own weight-decay switch: recipes differ on
 * whether to decay it. */
#define EMBEDDING_PARAM "backbone.embedding.weight"

void mt_adamw_init(mt_adamw *o, const mt_params *p, const mt_adamw_config *cfg)
{
    if (!(cfg->beta1 >= 0 && cfg->beta1 < 1) || !(cfg->beta2 >= 0 && cfg->beta2 < 1))
        mt_fatal("adamw: betas (%g, %g) must lie in [0, 1)", cfg->beta1, cfg->beta2);
    memset(o, 0, sizeof *o);
    o->cfg = *cfg;
    o->device = p->device;
    /* Built on the host slice by slice; calloc leaves the padding between
     * slices at 0. */
    uint8_t *mask = calloc(p->flat_size ? p->flat_size : 1, 1);
    if (!mask)
        mt_fatal("adamw: out of host memory for the %zu-byte decay mask", p->flat_size);
    for (int i = 0; i < p->n; i++) {
        const mt_param *q = p->items[i];
        bool decayed = !(q->flags & MT_PARAM_NO_DECAY) &&
                       (cfg->decay_embedding || strcmp(q->name, EMBEDDING_PARAM) != 0);
        memset(mask + q->offset, decayed, (size_t)mt_numel(&q->value));
    }
    o->decay = mt_device_alloc(p->device, p->flat_size, "adamw decay mask");
    mt_device_copy(p->device, o->decay, MT_CPU, mask, p->flat_size);
    free(mask);
}

void mt_adamw_release(mt_adamw *o)
{
    mt_device_free(o->device, o->decay);
    memset(o, 0, sizeof *o);
}

/* count elements of one of p's flat buffers (or moments), from data, as a
 * 1-D tensor. */
static mt_tensor flat(const mt_params *p, void *data, size_t count)
{
    mt_tensor t;
    mt_tensor_init(&t, p->dtype, p->device, 1, (int64_t[]){(int64_t)count});
    t.data = data;
    return t;
}

void mt_adamw_step_ranges(mt_adamw *o, mt_backend *be, mt_params *p, double lr, double grad_scale, int n,
                          const size_t *begin, const size_t *count, void *const *m, void *const *v)
{
    if (be->device != p->device || o->device != p->device)
        mt_fatal("adamw: backend %s, decay mask on %s, parameters on %s", be->name, mt_device_name(o->device),
                 mt_device_name(p->device));
    if (!p->allocated)
        mt_fatal("adamw: step on a parameter store that was never allocated");
    o->step++;
    double bias_correction1 = 1.0 - pow(o->cfg.beta1, (double)o->step);
    double bias_correction2 = 1.0 - pow(o->cfg.beta2, (double)o->step);
    for (int i = 0; i < n; i++) {
        if (begin[i] % MT_PARAM_ALIGN != 0 || begin[i] > p->flat_size || count[i] > p->flat_size - begin[i])
            mt_fatal("adamw: elements [%zu, %zu) are not an aligned range of the %zu-element store", begin[i],
                     begin[i] + count[i], p->flat_size);
        if (count[i] == 0)
            continue;
        const size_t off = begin[i] * mt_dtype_size(p->dtype);
        mt_tensor values = flat(p, (char *)p->values + off, count[i]);
        mt_tensor grads = flat(p, (char *)p->grads + off, count[i]);
        mt_tensor mi = flat(p, m[i], count[i]), vi = flat(p, v[i], count[i]);
        be->adamw_step(be, &values, &grads, &mi, &vi, o->decay + begin[i], lr, o->cfg.beta1, o->cfg.beta2,
                       o->cfg.eps, o->cfg.weight_decay, bias_correction1, bias_correction2, grad_scale);
    }
}

void mt_adamw_step(mt_adamw *o, mt_backend *be, mt_params *p, double lr, double grad_scale)
{
    const size_t begin = 0, count = p->flat_size;
    void *m = p->adam_m, *v = p->adam_v;
    mt_adamw_step_ranges(o, be, p, lr, grad_scale, 1, &begin, &count, &m, &v);
}

double mt_grad_norm(mt_backend *be, const mt_params *p)
{
    mt_tensor grads = mt_params_flat_grads(p);
    return sqrt(be->sumsq(be, &grads));
}

double mt_clip_scale(double norm, double max_norm)
{
    if (max_norm <= 0 || norm <= max_norm)
        return 1.0;
    return max_norm / norm;
}
