#include "optim/sgd.h"

void mt_sgd_step(mt_backend *be, mt_params *p, double lr)
{
    mt_tensor values = mt_params_flat_values(p), grads = mt_params_flat_grads(p);
    be->axpy(be, &values, &grads, -lr);
}
