/* The tensor-parallel boundary ops, the vocab-parallel embedding and
 * cross-entropy, and the gated norm across ranks. */
#include "autograd/ops_tp.h"

#include "autograd/op_checks.h"
#include "autograd/ops.h"
#include "core/device.h"

/* buf (numel of t, contiguous) summed over comm in place; false after an op
 * error naming op and the communicator's message. */
static bool all_reduce(mt_ctx *c, const char *op, mt_comm *comm, mt_tensor *t)
{
    char err[256];
    if (comm->all_reduce(comm, t->data, (size_t)mt_numel(t), t->dtype, err, sizeof err))
        return true;
    mt_op_error(c, "%s: all-reduce of %lld elements over the TP group failed: %s", op, (long long)mt_numel(t), err);
    return false;
}

static bool check_contiguous(mt_ctx *c, const char *op, const mt_tensor *x)
{
    char s[96];
    if (!op_check_float(c, op, "x", x))
        return false;
    if (!mt_is_contiguous(x)) {
        mt_op_error(c, "%s: x %s must be contiguous", op, mt_shape_str(x, s, sizeof s));
        return false;
    }
    return true;
}

/* ---- copy to the TP region ---- */

static void copy_to_backward(mt_ctx *c, mt_node *n)
{
    /* The alias's gradient is this node's alone: reduced in place. */
    mt_tensor *dout = n->out[0]->grad;
    if (all_reduce(c, "mt_tp_copy_to (backward)", n->attr.tp_copy_to.comm, dout) && n->in[0]->requires_grad)
        c->be->add_bwd(c->be, mt_grad_of(c, n->in[0]), NULL, dout);
}

mt_tensor *mt_tp_copy_to(mt_ctx *c, mt_tensor *x, mt_comm *comm)
{
    const char *op = "mt_tp_copy_to";
    if (!check_contiguous(c, op, x))
        return NULL;
    /* A second header on x's data: its own gradient, which the backward
     * reduces before adding it to x's. */
    mt_tensor *out = mt_arena_alloc(&c->headers, sizeof *out);
    mt_tensor_init(out, x->dtype, x->device, x->ndim, x->shape);
    out->data = x->data;
    mt_tape_alias_transient(c, out, x);
    mt_node *n = mt_tape_record(c, op, copy_to_backward, 1, &x, 1, &out);
    if (n)
        n->attr.tp_copy_to.comm = comm;
    return out;
}

/* ---- reduce from the TP region ---- */

static void reduce_from_backward(mt_ctx *c, mt_node *n)
{
    c->be->add_bwd(c->be, mt_grad_of(c, n->in[0]), NULL, n->out[0]->grad);
}

mt_tensor *mt_tp_reduce_from(mt_ctx *c, mt_tensor *x, mt_comm *comm)
{
    const char *op = "mt_tp_reduce_from";
    if (!check_contiguous(c, op, x))
        return NULL;
    mt_tensor *out = mt_ctx_tensor(c, x->dtype, x->ndim, x->shape);
    mt_device_copy(c->device, out->data, c->device, x->data, mt_nbytes(x));
    if (!all_reduce(c, op, comm, out))
        return NULL;
    mt_node *n = mt_tape_record(c, op, reduce_from_backward, 1, &x, 1, &out);
    if (n)
        n->unread_in = 1u << 0; /* the backward passes the gradient on */
    return out;
}

/* ---- vocab-parallel embedding and cross-entropy ---- */

mt_tensor *mt_tp_embedding(mt_ctx *c, mt_tensor *weight, mt_tensor *ids, mt_comm *comm)
{
    if (!weight || weight->ndim != 2)
        return mt_embedding(c, weight, ids); /* its error */
    int64_t rows = weight->shape[0];
    mt_tensor *mine = mt_embedding_slice(c, weight, ids, comm->rank * rows, comm->world * rows);
    return mine ? mt_tp_reduce_from(c, mine, comm) : NULL;
}

mt_tensor *mt_cross_entropy_tp(mt_ctx *c, mt_tensor *logits, mt_tensor *targets, int ignore_index, mt_comm *comm,
                               bool in_place)
{
    const char *op = "mt_cross_entropy_tp";
    char err[256];
    if (!op_check_cross_entropy(c, op, logits, targets))
        return NULL;
    int64_t rows = logits->shape[0], cols = logits->shape[1];
    mt_dtype acc = mt_accum_dtype(logits->dtype);
    mt_tensor *mine = mt_ctx_tensor(c, acc, 3, (int64_t[]){1, rows, 3});
    mt_tensor *all = mt_ctx_tensor(c, acc, 3, (int64_t[]){comm->world, rows, 3});
    c->be->cross_entropy_stats(c->be, mine, logits, targets, comm->rank * cols, ignore_index);
    if (!comm->all_gather(comm, mine->data, all->data, (size_t)mt_numel(mine), acc, err, sizeof err))
        return mt_op_error(c, "%s: all-gather of the row statistics over the TP group failed: %s", op, err);
    return mt_cross_entropy_of_slice(c, logits, targets, all, comm->rank * cols, comm->world * cols, ignore_index,
                                     in_place);
}

/* ---- gated RMSNorm across ranks ---- */

/* A zeroed (rows, ngroups) buffer in the accumulation dtype and, in *col,
 * its column `group` (rows, 1), where this rank's sums go. */
static mt_tensor *group_sums(mt_ctx *c, const mt_tensor *y, int group, int ngroups, mt_tensor *col)
{
    mt_tensor *sums = mt_ctx_tensor(c, mt_accum_dtype(y->dtype), 2, (int64_t[]){mt_rows(y), ngroups});
    mt_device_zero(c->device, sums->data, mt_nbytes(sums));
    *col = mt_view_cols(sums, group, 1);
    return sums;
}

/* Sums the group statistics over the ranks; a lone rank (no comm) has them all. */
static bool reduce_sums(mt_ctx *c, const char *op, mt_comm *comm, mt_tensor *sums)
{
    return !comm || all_reduce(c, op, comm, sums);
}

static void gated_rmsnorm_tp_backward(mt_ctx *c, mt_node *n)
{
    const char *op = "mt_gated_rmsnorm_tp (backward)";
    mt_tensor *y = n->in[0], *z = n->in[1], *w = n->in[2], *dout = n->out[0]->grad, col;
    mt_tensor *sums = group_sums(c, y, n->attr.gated_rmsnorm_tp.group, n->attr.gated_rmsnorm_tp.ngroups, &col);
    c->be->gated_rmsnorm_sums(c->be, &col, y, z, w, dout, 1);
    /* Every rank reduces, whatever its inputs need: the collective must match. */
    if (!reduce_sums(c, op, n->attr.gated_rmsnorm_tp.comm, sums))
        return;
    c->be->gated_rmsnorm_bwd_sums(c->be, op_scratch(c), op_grad_if_needed(c, y), op_grad_if_needed(c, z),
                                  op_grad_if_needed(c, w), dout, y, z, w, n->saved[0], &col, 1,
                                  n->attr.gated_rmsnorm_tp.group_cols);
}

mt_tensor *mt_gated_rmsnorm_tp(mt_ctx *c, mt_tensor *y, mt_tensor *z, mt_tensor *weight, int group, int ngroups,
                               int64_t group_cols, double eps, mt_comm *comm)
{
    const char *op = "mt_gated_rmsnorm_tp";
    if (!op_check_float(c, op, "y", y) || !op_check_float(c, op, "z", z) || !op_check_same(c, op, "y", y, "z", z))
        return NULL;
    int64_t e = mt_cols(y);
    if (!op_check_vector(c, op, "weight", weight, e, mt_accum_dtype(y->dtype)))
        return NULL;
    if (ngroups < 1 || group < 0 || group >= ngroups)
        return mt_op_error(c, "%s: group %d is not one of ngroups %d", op, group, ngroups);
    if (group_cols < e)
        return mt_op_error(c, "%s: group_cols %lld is fewer than this rank's %lld columns", op,
                           (long long)group_cols, (long long)e);
    if (!(eps > 0))
        return mt_op_error(c, "%s: eps must be positive, got %g", op, eps);
    mt_tensor col, *sums = group_sums(c, y, group, ngroups, &col);
    c->be->gated_rmsnorm_sums(c->be, &col, y, z, weight, NULL, 1);
    if (!reduce_sums(c, op, comm, sums))
        return NULL;
    mt_tensor *out = mt_ctx_tensor(c, y->dtype, y->ndim, y->shape);
    mt_tensor *rstd = mt_ctx_tensor(c, mt_accum_dtype(y->dtype), 2, (int64_t[]){mt_rows(y), 1});
    c->be->gated_rmsnorm_fwd_sums(c->be, out, rstd, y, z, weight, &col, 1, group_cols, eps);
    mt_node *n = mt_tape_record(c, op, gated_rmsnorm_tp_backward, 3, (mt_tensor *[]){y, z, weight}, 1, &out);
    if (n) {
        n->saved[0] = rstd;
        n->attr.gated_rmsnorm_tp.group = group;
        n->attr.gated_rmsnorm_tp.ngroups = ngroups;
        n->attr.gated_rmsnorm_tp.group_cols = group_cols;
        n->attr.gated_rmsnorm_tp.comm = comm;
    }
    return out;
}
