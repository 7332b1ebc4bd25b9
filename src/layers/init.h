/* The reference's initialization, the pieces every block kind draws with.
 * Each random parameter draws from its own seed, mt_init_seed(seed, k), k
 * counting the model's parameters in declaration order. Under tensor
 * parallelism a rank draws a parameter whole and keeps its slice, so the
 * group's ranks together hold exactly the single-rank initialization. */
#ifndef MT_LAYERS_INIT_H
#define MT_LAYERS_INIT_H

#include "dist/tp.h"
#include "kernels/backend.h"
#include "layers/config.h"

/* The seed of parameter k of a model initialized from seed. */
uint64_t mt_init_seed(uint64_t seed, int k);

void mt_init_constant(mt_tensor *t, double v);
/* softplus^-1(dt), dt = exp(U(log dt_min, log dt_max)) floored at dt_init_floor. */
void mt_init_dt_bias(mt_tensor *t, const mt_model_config *cfg, uint64_t seed);
/* log(U(A_init_min, A_init_max)). */
void mt_init_A_log(mt_tensor *t, const mt_model_config *cfg, uint64_t seed);
/* PyTorch's Linear default, U(+-scale / sqrt(fan_in)), fan_in the last dim. */
void mt_init_linear(mt_backend *be, mt_tensor *w, uint64_t seed, double scale);

/* local = tp's rank's slice of full, a parameter of the same name (dist/tp.h). */
void mt_init_keep_slice(const mt_model_config *cfg, const mt_tp *tp, mt_tensor *local, const mt_tensor *full);

/* A full-shape temporary on local's device and in its dtype, named as local. */
mt_tensor *mt_init_full_like(const mt_tensor *local, int ndim, const int64_t *shape);

#endif
