#include "core/params.h"

#include <stdlib.h>
#include <string.h>

#include "core/device.h"
#include "core/error.h"

void mt_params_init(mt_params *p, mt_device dev, mt_dtype dtype)
{
    memset(p, 0, sizeof *p);
    p->device = dev;
    p->dtype = dtype;
}

void mt_params_release(mt_params *p)
{
    for (int i = 0; i < p->n; i++)
        free(p->items[i]);
    free(p->items);
    mt_device_free(p->device, p->values);
    mt_device_free(p->device, p->grads);
    mt_device_free(p->device, p->adam_m);
    mt_device_free(p->device, p->adam_v);
    memset(p, 0, sizeof *p);
}

mt_param *mt_params_find(const mt_params *p, const char *name)
{
    for (int i = 0; i < p->n; i++)
        if (strcmp(p->items[i]->name, name) == 0)
            return p->items[i];
    return NULL;
}

mt_tensor *mt_params_add(mt_params *p, const char *name, int ndim, const int64_t *shape, unsigned flags)
{
    if (p->allocated)
        mt_fatal("parameter %s added after the store was allocated", name);
    if (strlen(name) >= MT_PARAM_NAME_MAX)
        mt_fatal("parameter name %s is longer than %d characters", name, MT_PARAM_NAME_MAX - 1);
    if (mt_params_find(p, name))
        mt_fatal("parameter %s declared twice", name);
    if (p->n == p->cap) {
        int cap = p->cap ? 2 * p->cap : 64;
        mt_param **items = realloc(p->items, (size_t)cap * sizeof *items);
        if (!items)
            mt_fatal("out of host memory declaring parameter %s", name);
        p->items = items;
        p->cap = cap;
    }
    mt_param *q = calloc(1, sizeof *q);
    if (!q)
        mt_fatal("out of host memory declaring parameter %s", name);
    strcpy(q->name, name);
    q->flags = flags;
    mt_tensor_init(&q->value, p->dtype, p->device, ndim, shape);
    mt_tensor_init(&q->grad, p->dtype, p->device, ndim, shape);
    q->value.name = q->grad.name = q->name;
    q->value.requires_grad = true;
    q->value.is_param = true;
    q->value.grad = &q->grad;
    q->offset = p->flat_size;
    size_t numel = (size_t)mt_numel(&q->value);
    p->numel += numel;
    p->flat_size += (numel + MT_PARAM_ALIGN - 1) / MT_PARAM_ALIGN * MT_PARAM_ALIGN;
    p->items[p->n++] = q;
    return &q->value;
}

static void *flat_alloc(mt_params *p, const char *what, bool zero)
{
    size_t bytes = p->flat_size * mt_dtype_size(p->dtype);
    void *buf = mt_device_alloc(p->device, bytes, what);
    if (zero)
        mt_device_zero(p->device, buf, bytes);
    return buf;
}

void mt_params_alloc(mt_params *p)
{
    if (p->allocated)
        mt_fatal("parameter store allocated twice");
    p->values = flat_alloc(p, "parameter values", true);
    p->grads = flat_alloc(p, "parameter gradients", true);
    p->adam_m = flat_alloc(p, "optimizer first moments", true);
    p->adam_v = flat_alloc(p, "optimizer second moments", true);
    size_t es = mt_dtype_size(p->dtype);
    for (int i = 0; i < p->n; i++) {
        mt_param *q = p->items[i];
        q->value.data = (char *)p->values + q->offset * es;
        q->grad.data = (char *)p->grads + q->offset * es;
    }
    p->allocated = true;
}

void mt_params_zero_grad(mt_params *p)
{
    mt_device_zero(p->device, p->grads, p->flat_size * mt_dtype_size(p->dtype));
}

static mt_tensor flat_tensor(const mt_params *p, void *data)
{
    mt_tensor t;
    mt_tensor_init(&t, p->dtype, p->device, 1, (int64_t[]){(int64_t)p->flat_size});
    t.data = data;
    return t;
}

mt_tensor mt_params_flat_values(const mt_params *p)
{
    return flat_tensor(p, p->values);
}

mt_tensor mt_params_flat_grads(const mt_params *p)
{
    return flat_tensor(p, p->grads);
}
