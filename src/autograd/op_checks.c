/* Validation shared by the op wrappers. */
#include "autograd/op_checks.h"

bool op_check_tensor(mt_ctx *c, const char *op, const char *name, const mt_tensor *t)
{
    char s[96];
    if (!t) {
        mt_op_error(c, "%s: input %s is NULL%s", op, name, mt_ctx_error(c) ? " (an earlier op failed)" : "");
        return false;
    }
    if (t->device != c->device) {
        mt_op_error(c, "%s: %s %s is not on the context's device (%s)", op, name, mt_shape_str(t, s, sizeof s),
                    mt_device_name(c->device));
        return false;
    }
    if (!mt_is_row_major(t)) {
        mt_op_error(c, "%s: %s %s is not row-major (its last dim must be contiguous)", op, name,
                    mt_shape_str(t, s, sizeof s));
        return false;
    }
    return true;
}

bool op_check_float(mt_ctx *c, const char *op, const char *name, const mt_tensor *t)
{
    char s[96];
    if (!op_check_tensor(c, op, name, t))
        return false;
    if (!mt_dtype_is_float(t->dtype) || (t->dtype == MT_F64 && t->device != MT_CPU)) {
        mt_op_error(c, "%s: %s %s: dtype must be f32 or bf16%s", op, name, mt_shape_str(t, s, sizeof s),
                    t->device == MT_CPU ? " or f64" : "");
        return false;
    }
    return true;
}

bool op_check_ids(mt_ctx *c, const char *op, const char *name, const mt_tensor *t)
{
    char s[96];
    if (!op_check_tensor(c, op, name, t))
        return false;
    if (t->dtype != MT_I32 || !mt_is_contiguous(t)) {
        mt_op_error(c, "%s: %s %s must be contiguous i32", op, name, mt_shape_str(t, s, sizeof s));
        return false;
    }
    return true;
}

bool op_check_same(mt_ctx *c, const char *op, const char *an, const mt_tensor *a, const char *bn,
                       const mt_tensor *b)
{
    char s[96], t[96];
    if (!mt_same_shape(a, b) || a->dtype != b->dtype) {
        mt_op_error(c, "%s: %s %s and %s %s must have the same shape and dtype", op, an,
                    mt_shape_str(a, s, sizeof s), bn, mt_shape_str(b, t, sizeof t));
        return false;
    }
    return true;
}

bool op_check_vector(mt_ctx *c, const char *op, const char *name, const mt_tensor *t, int64_t len,
                         mt_dtype dt)
{
    char s[96];
    if (!op_check_tensor(c, op, name, t))
        return false;
    if (t->ndim != 1 || t->shape[0] != len || t->dtype != dt) {
        mt_op_error(c, "%s: %s %s must be (%lld) %s", op, name, mt_shape_str(t, s, sizeof s), (long long)len,
                    mt_dtype_name(dt));
        return false;
    }
    return true;
}

void op_shape_with_cols(const mt_tensor *x, int64_t cols, int64_t *shape)
{
    for (int i = 0; i < x->ndim; i++)
        shape[i] = x->shape[i];
    shape[x->ndim - 1] = cols;
}

mt_tensor *op_grad_if_needed(mt_ctx *c, mt_tensor *t)
{
    return t && t->requires_grad ? mt_grad_of(c, t) : NULL;
}

bool op_check_cross_entropy(mt_ctx *c, const char *op, const mt_tensor *logits, const mt_tensor *targets)
{
    char s[96], t[96];
    if (!op_check_float(c, op, "logits", logits) || !op_check_ids(c, op, "targets", targets))
        return false;
    if (logits->ndim != 2 || targets->ndim != 1 || targets->shape[0] != logits->shape[0]) {
        mt_op_error(c, "%s: logits %s must be (N, vocab) and targets %s (N)", op, mt_shape_str(logits, s, sizeof s),
                    mt_shape_str(targets, t, sizeof t));
        return false;
    }
    return true;
}

mt_arena *op_scratch(mt_ctx *c)
{
    mt_arena_reset(&c->scratch);
    return &c->scratch;
}
