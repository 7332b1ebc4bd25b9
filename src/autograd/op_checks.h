/* Validation shared by the op wrappers: each check returns false after
 * reporting through mt_op_error, naming the op, the input and its shape. */
#ifndef MT_OP_CHECKS_H
#define MT_OP_CHECKS_H

#include "autograd/tape.h"

/* Present, on the ctx's device, row-major. */
bool op_check_tensor(mt_ctx *c, const char *op, const char *name, const mt_tensor *t);
/* op_check_tensor and a float dtype the device supports. */
bool op_check_float(mt_ctx *c, const char *op, const char *name, const mt_tensor *t);
/* op_check_tensor, contiguous i32. */
bool op_check_ids(mt_ctx *c, const char *op, const char *name, const mt_tensor *t);
bool op_check_same(mt_ctx *c, const char *op, const char *an, const mt_tensor *a, const char *bn,
                   const mt_tensor *b);
/* A (len) vector of dtype dt. */
bool op_check_vector(mt_ctx *c, const char *op, const char *name, const mt_tensor *t, int64_t len, mt_dtype dt);

/* shape (MT_MAX_DIMS) = x's shape with the last dim replaced by cols. */
void op_shape_with_cols(const mt_tensor *x, int64_t cols, int64_t *shape);
/* t's gradient when t takes part in backward, else NULL. */
mt_tensor *op_grad_if_needed(mt_ctx *c, mt_tensor *t);

/* logits (N, V) float and targets (N) i32, for a cross-entropy. */
bool op_check_cross_entropy(mt_ctx *c, const char *op, const mt_tensor *logits, const mt_tensor *targets);

/* The scratch arena for one kernel call, emptied: what the previous call
 * left there is dead, since kernels run in stream order. */
mt_arena *op_scratch(mt_ctx *c);

#endif
