#include "autograd/recompute.h"

#include <stdlib.h>

#include "core/error.h"

static mt_ctx *recompute_ctx(mt_ctx *c)
{
    if (!c->recompute) {
        c->recompute = malloc(sizeof *c->recompute);
        if (!c->recompute)
            mt_fatal("out of host memory making the recompute context");
        mt_ctx_init(c->recompute, c->be, 0);
        c->recompute->abort_on_error = c->abort_on_error;
    }
    return c->recompute;
}

/* x as an input of the recompute context: the same data, a fresh gradient. */
static mt_tensor *as_input(mt_ctx *sub, const mt_tensor *x)
{
    mt_tensor *h = mt_arena_alloc(&sub->headers, sizeof *h);
    *h = *x;
    h->grad = NULL;
    h->base = NULL;
    h->owns_data = false;
    h->requires_grad = true;
    return h;
}

static void recompute_bwd(mt_ctx *c, mt_node *n)
{
    mt_ctx *sub = recompute_ctx(c);
    mt_tensor *x = n->in[0], *out = n->out[0];
    mt_tensor *xs = as_input(sub, x);
    sub->grad_enabled = true;
    mt_tensor *again = n->attr.block.fn(sub, n->attr.block.arg, xs, n->in[1]);
    if (!again) {
        mt_op_error(c, "recompute: the block failed when run again: %s", mt_ctx_error(sub));
        return;
    }
    mt_backward_seeded(sub, 1, &again, &out->grad);
    if (xs->grad && x->requires_grad)
        c->be->axpy(c->be, mt_grad_of(c, x), xs->grad, 1.0);
    mt_ctx_end_step(sub);
}

mt_tensor *mt_recompute_block(mt_ctx *c, mt_block_fn fn, void *arg, mt_tensor *x, mt_tensor *aux)
{
    if (!x)
        return NULL;
    if (!c->grad_enabled || !x->requires_grad || !mt_is_contiguous(x)) /* nothing to save, or a view */
        return fn(c, arg, x, aux);
    mt_ctx *sub = recompute_ctx(c);
    sub->grad_enabled = false;
    mt_tensor *y = fn(sub, arg, x, aux);
    if (!y) {
        mt_op_error(c, "recompute: %s", mt_ctx_error(sub));
        mt_ctx_end_step(sub);
        return NULL;
    }
    mt_tensor *out = mt_ctx_tensor(c, y->dtype, y->ndim, y->shape);
    mt_tensor_copy(out, y);
    mt_ctx_end_step(sub);
    mt_tensor *in[2] = {x, aux};
    mt_node *n = mt_tape_record(c, "recompute", recompute_bwd, 2, in, 1, &out);
    if (n) {
        n->attr.block.fn = fn;
        n->attr.block.arg = arg;
    }
    return out;
}
