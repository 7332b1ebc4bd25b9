/* The parameter store: every parameter's values, gradients and optimizer
 * state live in flat buffers (one per kind), each parameter a slice at the same
 * offset in all of them. Stable addresses and one buffer per kind let one
 * kernel launch update everything and one collective reduce every gradient.
 *
 * Use: mt_params_add for each parameter (shapes only), then mt_params_alloc
 * once; the tensors returned by mt_params_add are valid from then on. */
#ifndef MT_PARAMS_H
#define MT_PARAMS_H

#include "core/tensor.h"

enum {
    MT_PARAM_NO_DECAY = 1 << 0,  /* no weight decay: norms, biases, A_log, D, dt_bias */
    MT_PARAM_NO_REINIT = 1 << 1, /* keeps its own init through the model-wide init (dt_bias) */
    /* Tensor parallelism (dist/tp.h): a rank holds its own slice of the
     * parameter, so its gradient norm adds over the ranks. */
    MT_PARAM_TP_SHARDED = 1 << 2,
    /* Elements [partial_begin, partial_begin + partial_count) are replicated
     * on every rank of the TP group, but each rank's gradient of them is only
     * its heads' part: the gradients are summed over the group. */
    MT_PARAM_TP_PARTIAL_GRAD = 1 << 3,
};

#define MT_PARAM_NAME_MAX 128
#define MT_PARAM_ALIGN 64 /* elements: slices start 256-byte aligned in f32 */

typedef struct mt_param {
    char name[MT_PARAM_NAME_MAX];
    unsigned flags;
    size_t offset; /* in elements, into each flat buffer */
    size_t partial_begin, partial_count; /* MT_PARAM_TP_PARTIAL_GRAD: the elements, within the parameter */
    mt_tensor value;
    mt_tensor grad;
} mt_param;

typedef struct mt_params {
    mt_device device;
    mt_dtype dtype; /* f32 masters; f64 for gradient checks on the CPU */
    mt_param **items;
    int n, cap;
    size_t numel;     /* elements in all parameters */
    size_t flat_size; /* elements in each flat buffer, alignment padding included */
    void *values, *grads, *adam_m, *adam_v;
    bool allocated;
} mt_params;

void mt_params_init(mt_params *p, mt_device dev, mt_dtype dtype);
void mt_params_release(mt_params *p);

/* Declares a parameter; fatal on a duplicate name or after mt_params_alloc. */
mt_tensor *mt_params_add(mt_params *p, const char *name, int ndim, const int64_t *shape, unsigned flags);

/* Allocates the flat buffers, zeroes gradients and optimizer state. */
void mt_params_alloc(mt_params *p);

mt_param *mt_params_find(const mt_params *p, const char *name);
void mt_params_zero_grad(mt_params *p);

/* The whole flat value or gradient buffer as one 1-D tensor. */
mt_tensor mt_params_flat_values(const mt_params *p);
mt_tensor mt_params_flat_grads(const mt_params *p);

#endif
