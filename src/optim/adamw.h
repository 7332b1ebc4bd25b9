/* AdamW over the flat parameter store (core/params.h): one fused pass
 * updates every fp32 master value and its moments, with the decoupled weight
 * decay off where a parameter is marked MT_PARAM_NO_DECAY (and, unless
 * decay_embedding is set, on the embedding). The gradient is multiplied by
 * grad_scale inside the pass: global-norm clipping and 1/accumulation
 * without another sweep over the gradients.
 *
 * Per element, with t the step after increment, g = grad_scale * grad:
 *   m = beta1 m + (1 - beta1) g;  v = beta2 v + (1 - beta2) g^2
 *   value -= lr * (m / (1 - beta1^t)) / (sqrt(v / (1 - beta2^t)) + eps)
 *   value -= lr * weight_decay * value_before        (decayed parameters only)
 * i.e. the decay uses the value before this step's Adam update, as PyTorch's
 * AdamW does (it scales value by 1 - lr * wd first).
 *
 * The store must be f32 (training) or f64 (gradient checks, CPU only): the
 * update itself is computed in double on the CPU and in fp32 on CUDA, and
 * CUDA refuses anything but f32 masters. */
#ifndef MT_ADAMW_H
#define MT_ADAMW_H

#include <stdbool.h>

#include "core/params.h"
#include "kernels/backend.h"

typedef struct mt_adamw_config {
    double beta1, beta2, eps, weight_decay;
    bool decay_embedding; /* weight-decay the (tied) embedding too */
} mt_adamw_config;

typedef struct mt_adamw {
    mt_adamw_config cfg;
    int64_t step;        /* updates done so far */
    uint8_t *decay;      /* flat_size bytes on the parameters' device: 1 where weight decay applies,
                            0 elsewhere (padding included); a raw buffer as tensors have no u8 dtype */
    mt_device device;    /* the parameters' device, where decay lives */
} mt_adamw;

/* Builds the decay mask from the parameters' flags and names (the embedding
 * is "backbone.embedding.weight"); the moments are the store's adam_m and
 * adam_v (zeroed by mt_params_alloc). Fatal on betas outside [0, 1). */
void mt_adamw_init(mt_adamw *o, const mt_params *p, const mt_adamw_config *cfg);
void mt_adamw_release(mt_adamw *o);

/* One update at learning rate lr: step += 1, then one backend adamw_step over
 * the flat buffers with bias corrections 1 - beta^step computed in double.
 * be must be on the parameters' device. */
void mt_adamw_step(mt_adamw *o, mt_backend *be, mt_params *p, double lr, double grad_scale);

/* The same step (one step += 1) over n ranges of the flat buffers only,
 * range i being elements [begin[i], begin[i] + count[i]), each begin a
 * multiple of MT_PARAM_ALIGN, with that range's Adam moments at m[i] and
 * v[i] (count[i] elements each, on the store's device): a ZeRO-1 rank's
 * shards, whose moments it keeps apart. */
void mt_adamw_step_ranges(mt_adamw *o, mt_backend *be, mt_params *p, double lr, double grad_scale, int n,
                          const size_t *begin, const size_t *count, void *const *m, void *const *v);

/* The L2 norm of every gradient in the store, summed in a fixed order (the
 * backend's sumsq over the flat gradient buffer, whose padding is zero).
 * Synchronizes with the device to return it. */
double mt_grad_norm(mt_backend *be, const mt_params *p);

/* The factor that brings a gradient of norm `norm` down to max_norm:
 * max_norm / norm when norm > max_norm > 0, else 1 (within the bound, or
 * max_norm <= 0: no clipping). A NaN norm gives NaN: the caller checks the
 * norm is finite before stepping. */
double mt_clip_scale(double norm, double max_norm);

#endif
