#include "autograd/ops.h"

#include "autograd/op_checks.h"

/* ---- embedding ---- */

static void embedding_backward(mt_ctx *c, mt_node *n)
{
    mt_tensor *dweight = op_grad_if_needed(c, n->in[0]);
    if (dweight)
        c->be->embedding_bwd(c->be, op_scratch(c), dweight, n->out[0]->grad, n->in[1], n->attr.embedding.first_id,
                             n->attr.embedding.vocab);
}

mt_tensor *mt_embedding_slice(mt_ctx *c, mt_tensor *weight, mt_tensor *ids, int64_t first_id, int64_t vocab)
{
    const char *op = "mt_embedding";
    char s[96];
    if (!op_check_float(c, op, "weight", weight) || !op_check_ids(c, op, "ids", ids))
        return NULL;
    if (weight->ndim != 2)
        return mt_op_error(c, "%s: weight %s must be (vocab, dim)", op, mt_shape_str(weight, s, sizeof s));
    if (first_id < 0 || first_id + weight->shape[0] > vocab || vocab > INT32_MAX)
        return mt_op_error(c, "%s: weight %s as rows from %lld does not fit a table of %lld rows", op,
                           mt_shape_str(weight, s, sizeof s), (long long)first_id, (long long)vocab);
    if (ids->ndim >= MT_MAX_DIMS)
        return mt_op_error(c, "%s: ids %s have too many dims for an added embedding dim", op,
                           mt_shape_str(ids, s, sizeof s));
    int64_t shape[MT_MAX_DIMS];
    for (int i = 0; i < ids->ndim; i++)
        shape[i] = ids->shape[i];
    shape[ids->ndim] = weight->shape[1];
    mt_tensor *out = mt_ctx_tensor(c, weight->dtype, ids->ndim + 1, shape);
    c->be->embedding_fwd(c->be, out, weight, ids, first_id, vocab);
    mt_node *n = mt_tape_record(c, op, embedding_backward, 2, (mt_tensor *[]){weight, ids}, 1, &out);
    if (n) {
        n->attr.embedding.first_id = (int)first_id;
        n->attr.embedding.vocab = (int)vocab;
    }
    return out;
}

mt_tensor *mt_embedding(mt_ctx *c, mt_tensor *weight, mt_tensor *ids)
{
    return mt_embedding_slice(c, weight, ids, 0, weight && weight->ndim == 2 ? weight->shape[0] : 0);
}

/* ---- linear ---- */

static void linear_backward(mt_ctx *c, mt_node *n)
{
    mt_tensor *x = n->in[0], *w = n->in[1], *b = n->in[2];
    c->be->linear_bwd(c->be, op_scratch(c), op_grad_if_needed(c, x), op_grad_if_needed(c, w), op_grad_if_needed(c, b),
                      n->out[0]->grad, x, w);
}

/* kept false: y in a transient buffer, with nothing to recompute it. */
static mt_tensor *linear(mt_ctx *c, mt_tensor *x, mt_tensor *w, mt_tensor *b, bool kept)
{
    const char *op = "mt_linear";
    char s[96], t[96];
    if (!op_check_float(c, op, "x", x) || !op_check_float(c, op, "w", w))
        return NULL;
    if (w->ndim != 2 || w->shape[1] != mt_cols(x) || w->dtype != x->dtype)
        return mt_op_error(c, "%s: x %s and w %s: w must be (out_features, %lld) of x's dtype", op,
                           mt_shape_str(x, s, sizeof s), mt_shape_str(w, t, sizeof t), (long long)mt_cols(x));
    if (b && !op_check_vector(c, op, "b", b, w->shape[0], x->dtype))
        return NULL;
    mt_tensor *in[] = {x, w, b};
    int64_t shape[MT_MAX_DIMS];
    op_shape_with_cols(x, w->shape[0], shape);
    mt_tensor *y = kept ? mt_ctx_tensor(c, x->dtype, x->ndim, shape)
                        : mt_ctx_transient(c, x->dtype, x->ndim, shape, 3, in);
    c->be->linear_fwd(c->be, y, x, w, b);
    mt_tape_record(c, op, linear_backward, 3, in, 1, &y);
    return y;
}

mt_tensor *mt_linear(mt_ctx *c, mt_tensor *x, mt_tensor *w, mt_tensor *b)
{
    return linear(c, x, w, b, true);
}

mt_tensor *mt_linear_unkept(mt_ctx *c, mt_tensor *x, mt_tensor *w, mt_tensor *b)
{
    return linear(c, x, w, b, false);
}

/* ---- elementwise ---- */

static void add_backward(mt_ctx *c, mt_node *n)
{
    c->be->add_bwd(c->be, op_grad_if_needed(c, n->in[0]), op_grad_if_needed(c, n->in[1]), n->out[0]->grad);
}

static void mul_backward(mt_ctx *c, mt_node *n)
{
    c->be->mul_bwd(c->be, op_grad_if_needed(c, n->in[0]), op_grad_if_needed(c, n->in[1]), n->out[0]->grad,
                   n->in[0], n->in[1]);
}

static mt_tensor *binary(mt_ctx *c, const char *op, mt_tensor *a, mt_tensor *b,
                         void (*fwd)(mt_backend *, mt_tensor *, const mt_tensor *, const mt_tensor *),
                         mt_backward_fn bwd)
{
    if (!op_check_float(c, op, "a", a) || !op_check_float(c, op, "b", b) || !op_check_same(c, op, "a", a, "b", b))
        return NULL;
    mt_tensor *out = mt_ctx_tensor(c, a->dtype, a->ndim, a->shape);
    fwd(c->be, out, a, b);
    mt_tape_record(c, op, bwd, 2, (mt_tensor *[]){a, b}, 1, &out);
    return out;
}

mt_tensor *mt_add(mt_ctx *c, mt_tensor *a, mt_tensor *b)
{
    return binary(c, "mt_add", a, b, c->be->add_fwd, add_backward);
}

mt_tensor *mt_mul(mt_ctx *c, mt_tensor *a, mt_tensor *b)
{
    return binary(c, "mt_mul", a, b, c->be->mul_fwd, mul_backward);
}

static void silu_backward(mt_ctx *c, mt_node *n)
{
    c->be->silu_bwd(c->be, mt_grad_of(c, n->in[0]), n->out[0]->grad, n->in[0]);
}

static void softplus_backward(mt_ctx *c, mt_node *n)
{
    c->be->softplus_bwd(c->be, mt_grad_of(c, n->in[0]), n->out[0]->grad, n->in[0]);
}

static mt_tensor *unary(mt_ctx *c, const char *op, mt_tensor *x,
                        void (*fwd)(mt_backend *, mt_tensor *, const mt_tensor *), mt_backward_fn bwd)
{
    if (!op_check_float(c, op, "x", x))
        return NULL;
    mt_tensor *y = mt_ctx_tensor(c, x->dtype, x->ndim, x->shape);
    fwd(c->be, y, x);
    mt_tape_record(c, op, bwd, 1, &x, 1, &y);
    return y;
}

mt_tensor *mt_silu(mt_ctx *c, mt_tensor *x)
{
    return unary(c, "mt_silu", x, c->be->silu_fwd, silu_backward);
}

mt_tensor *mt_softplus(mt_ctx *c, mt_tensor *x)
{
    return unary(c, "mt_softplus", x, c->be->softplus_fwd, softplus_backward);
}

/* ---- rmsnorm with fused residual add ---- */

static void rmsnorm_backward(mt_ctx *c, mt_node *n)
{
    mt_tensor *x = n->in[0], *residual = n->in[1], *weight = n->in[2];
    c->be->rmsnorm_bwd(c->be, op_scratch(c), op_grad_if_needed(c, x), op_grad_if_needed(c, residual),
                       op_grad_if_needed(c, weight), n->out[0]->grad, n->out[1]->grad, n->out[1], n->saved[0],
                       weight);
}

/* y from the kept r and rstd, the same bits: x and the residual are not read
 * again, so x may be a block's unkept output. */
static void rmsnorm_recompute(mt_ctx *c, mt_node *n)
{
    c->be->rmsnorm_apply(c->be, n->out[0], n->out[1], n->saved[0], n->in[2]);
}

mt_tensor *mt_rmsnorm(mt_ctx *c, mt_tensor *x, mt_tensor *residual, mt_tensor *weight, double eps,
                      mt_tensor **residual_out)
{
    const char *op = "mt_rmsnorm";
    char s[96], t[96];
    *residual_out = NULL;
    if (!op_check_float(c, op, "x", x))
        return NULL;
    mt_dtype acc = mt_accum_dtype(x->dtype);
    int64_t d = mt_cols(x);
    if (!op_check_vector(c, op, "weight", weight, d, acc))
        return NULL;
    if (residual) {
        if (!op_check_float(c, op, "residual", residual))
            return NULL;
        if (!mt_same_shape(x, residual) || residual->dtype != acc)
            return mt_op_error(c, "%s: residual %s must have x's shape %s in %s", op,
                               mt_shape_str(residual, s, sizeof s), mt_shape_str(x, t, sizeof t),
                               mt_dtype_name(acc));
    }
    if (!(eps > 0))
        return mt_op_error(c, "%s: eps must be positive, got %g", op, eps);
    /* y is transient; the recompute writes it alone again, bit for bit. */
    mt_tensor *in[] = {x, residual, weight};
    mt_tensor *y = mt_ctx_transient(c, x->dtype, x->ndim, x->shape, 3, in);
    mt_tensor *r = mt_ctx_tensor(c, acc, x->ndim, x->shape);
    mt_tensor *rstd = mt_ctx_tensor(c, acc, 1, (int64_t[]){mt_rows(x)});
    c->be->rmsnorm_fwd(c->be, y, r, rstd, x, residual, weight, eps);
    mt_node *n = mt_tape_record(c, op, rmsnorm_backward, 3, in, 2, (mt_tensor *[]){y, r});
    if (n) {
        n->saved[0] = rstd;
        n->unread_in = 1u << 0 | 1u << 1; /* the backward reads r, rstd and the weight */
    }
    mt_tape_set_recompute(c, n, rmsnorm_recompute);
    *residual_out = r;
    return y;
}

/* ---- cross-entropy ---- */

static void cross_entropy_backward(mt_ctx *c, mt_node *n)
{
    mt_tensor *logits = n->in[0];
    mt_tensor *dlogits = n->attr.cross_entropy.in_place ? mt_grad_in_place(c, logits) : NULL;
    if (!dlogits) /* not asked for, or another op's part is there to add to */
        dlogits = mt_grad_of(c, logits);
    c->be->cross_entropy_bwd(c->be, op_scratch(c), dlogits, n->out[0]->grad, logits, n->saved[0], n->in[1],
                             n->attr.cross_entropy.first_col, n->attr.cross_entropy.vocab,
                             n->attr.cross_entropy.ignore_index);
}

mt_tensor *mt_cross_entropy_of_slice(mt_ctx *c, mt_tensor *logits, mt_tensor *targets, mt_tensor *stats,
                                     int64_t first_col, int64_t vocab, int ignore_index, bool in_place)
{
    const char *op = "mt_cross_entropy";
    char s[96];
    if (!op_check_cross_entropy(c, op, logits, targets) || !op_check_tensor(c, op, "stats", stats))
        return NULL;
    mt_dtype acc = mt_accum_dtype(logits->dtype);
    int64_t rows = logits->shape[0];
    if (stats->dtype != acc || !mt_is_contiguous(stats) || stats->ndim != 3 || stats->shape[1] != rows ||
        stats->shape[2] != 3)
        return mt_op_error(c, "%s: stats %s must be contiguous (slices, %lld, 3) in %s", op,
                           mt_shape_str(stats, s, sizeof s), (long long)rows, mt_dtype_name(acc));
    if (first_col < 0 || first_col + logits->shape[1] > vocab || vocab > INT32_MAX)
        return mt_op_error(c, "%s: %lld logit columns from %lld do not fit a vocabulary of %lld", op,
                           (long long)logits->shape[1], (long long)first_col, (long long)vocab);
    mt_tensor *loss = mt_ctx_tensor(c, acc, 1, (int64_t[]){1});
    mt_tensor *lse = mt_ctx_tensor(c, acc, 1, &rows);
    c->be->cross_entropy_combine(c->be, op_scratch(c), loss, lse, stats, targets, vocab, ignore_index);
    mt_node *n = mt_tape_record(c, op, cross_entropy_backward, 2, (mt_tensor *[]){logits, targets}, 1, &loss);
    if (n) {
        n->saved[0] = lse;
        n->attr.cross_entropy.ignore_index = ignore_index;
        n->attr.cross_entropy.first_col = (int)first_col; /* targets are i32, so is the vocabulary */
        n->attr.cross_entropy.vocab = (int)vocab;
        n->attr.cross_entropy.in_place = in_place;
    }
    return loss;
}

/* The loss over the whole vocabulary: one slice. */
static mt_tensor *cross_entropy(mt_ctx *c, mt_tensor *logits, mt_tensor *targets, int ignore_index, bool in_place)
{
    if (!op_check_cross_entropy(c, "mt_cross_entropy", logits, targets))
        return NULL;
    mt_tensor *stats = mt_ctx_tensor(c, mt_accum_dtype(logits->dtype), 3, (int64_t[]){1, logits->shape[0], 3});
    c->be->cross_entropy_stats(c->be, stats, logits, targets, 0, ignore_index);
    return mt_cross_entropy_of_slice(c, logits, targets, stats, 0, logits->shape[1], ignore_index, in_place);
}

mt_tensor *mt_cross_entropy(mt_ctx *c, mt_tensor *logits, mt_tensor *targets, int ignore_index)
{
    return cross_entropy(c, logits, targets, ignore_index, false);
}

mt_tensor *mt_cross_entropy_in_place(mt_ctx *c, mt_tensor *logits, mt_tensor *targets, int ignore_index)
{
    return cross_entropy(c, logits, targets, ignore_index, true);
}

/* ---- cast ---- */

static void cast_backward(mt_ctx *c, mt_node *n)
{
    c->be->cast_bwd(c->be, mt_grad_of(c, n->in[0]), n->out[0]->grad);
}

mt_tensor *mt_cast(mt_ctx *c, mt_tensor *x, mt_dtype dtype)
{
    const char *op = "mt_cast";
    char s[96];
    if (!op_check_float(c, op, "x", x))
        return NULL;
    if (!mt_dtype_is_float(dtype) || (dtype == MT_F64 && c->device != MT_CPU))
        return mt_op_error(c, "%s: cannot cast %s to %s on %s", op, mt_shape_str(x, s, sizeof s),
                           mt_dtype_name(dtype), mt_device_name(c->device));
    mt_tensor *y = mt_ctx_tensor(c, dtype, x->ndim, x->shape);
    c->be->cast_fwd(c->be, y, x);
    mt_tape_record(c, op, cast_backward, 1, &x, 1, &y);
    return y;
}
