/* Plain SGD over the flat parameter buffer: values -= lr * grads. */
#ifndef MT_SGD_H
#define MT_SGD_H

#include "core/params.h"
#include "kernels/backend.h"

void mt_sgd_step(mt_backend *be, mt_params *p, double lr);

#endif
