#include "autograd/tape.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/profile.h"
#include "core/device.h"
#include "core/error.h"

void mt_ctx_init(mt_ctx *c, mt_backend *be, size_t arena_bytes)
{
    memset(c, 0, sizeof *c);
    c->be = be;
    c->device = be->device;
    mt_arena_init(&c->arena, be->device, arena_bytes, "step arena");
    mt_pool_init(&c->grads, be->device, "gradient pool");
    mt_arena_init(&c->scratch, be->device, 0, "kernel scratch");
    mt_arena_init(&c->headers, MT_CPU, 64 * 1024, "tensor headers");
    c->grad_enabled = true;
    c->abort_on_error = true;
}

void mt_ctx_release(mt_ctx *c)
{
    if (c->recompute) {
        mt_ctx_release(c->recompute);
        free(c->recompute);
    }
    for (int i = 0; i < c->transient.n_slots; i++)
        mt_device_free(c->device, c->transient.slot[i].data);
    free(c->transient.made);
    mt_arena_release(&c->arena);
    mt_pool_release(&c->grads);
    mt_arena_release(&c->scratch);
    mt_arena_release(&c->headers);
    free(c->nodes);
    memset(c, 0, sizeof *c);
}

void mt_ctx_end_step(mt_ctx *c)
{
    c->n_nodes = 0;
    for (int i = 0; i < c->transient.n_slots; i++)
        c->transient.slot[i].owner = NULL;
    c->transient.n_made = 0;
    mt_arena_reset(&c->arena);
    mt_pool_free_all(&c->grads);
    mt_arena_reset(&c->scratch);
    mt_arena_reset(&c->headers);
}

mt_ctx_memory mt_ctx_memory_of(const mt_ctx *c)
{
    mt_ctx_memory m = {c->arena.peak, c->grads.held, c->scratch.peak, 0};
    for (int i = 0; i < c->transient.n_slots; i++)
        m.activations += c->transient.slot[i].bytes;
    if (c->recompute) {
        mt_ctx_memory r = mt_ctx_memory_of(c->recompute);
        m.activations += r.activations;
        m.gradients += r.gradients;
        m.scratch += r.scratch;
    }
    m.total = m.activations + m.gradients + m.scratch;
    return m;
}

const char *mt_ctx_error(const mt_ctx *c)
{
    return c->error[0] ? c->error : NULL;
}

void mt_ctx_clear_error(mt_ctx *c)
{
    c->error[0] = 0;
}

mt_tensor *mt_op_error(mt_ctx *c, const char *fmt, ...)
{
    if (!c->error[0]) { /* keep the first error: later ones are its consequences */
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(c->error, sizeof c->error, fmt, ap);
        va_end(ap);
    }
    if (c->abort_on_error) {
        fprintf(stderr, "mamba-train: %s\n", c->error);
        exit(1);
    }
    return NULL;
}

static mt_tensor *new_header(mt_ctx *c)
{
    mt_tensor *t = mt_arena_alloc(&c->headers, sizeof *t);
    memset(t, 0, sizeof *t);
    return t;
}

mt_tensor *mt_ctx_tensor(mt_ctx *c, mt_dtype dt, int ndim, const int64_t *shape)
{
    mt_tensor *t = new_header(c);
    mt_tensor_init(t, dt, c->device, ndim, shape);
    t->data = mt_arena_alloc(&c->arena, mt_nbytes(t));
    return t;
}

static const mt_tensor *root_of(const mt_tensor *t)
{
    while (t->base)
        t = t->base;
    return t;
}

/* The transient buffer t's values are in, or -1. */
static int slot_of(const mt_ctx *c, const mt_tensor *t)
{
    const char *p = t->data;
    for (int i = 0; i < c->transient.n_slots; i++)
        if (p >= c->transient.slot[i].data && p < c->transient.slot[i].data + c->transient.slot[i].bytes)
            return i;
    return -1;
}

static bool in_transient(const mt_ctx *c, const mt_tensor *t)
{
    return slot_of(c, t) >= 0;
}

/* What root t (the root of a transient) holds the values of: itself, or
 * the transient it aliases. */
static const mt_tensor *values_of(const mt_ctx *c, const mt_tensor *t)
{
    for (int i = c->transient.n_made - 1; i >= 0; i--)
        if (c->transient.made[i].t == t && c->transient.made[i].of)
            return c->transient.made[i].of;
    return t;
}

/* t's values are its own: not transient, or its buffer's owner's. */
static bool resident(const mt_ctx *c, const mt_tensor *t)
{
    int s = slot_of(c, t);
    return s < 0 || c->transient.slot[s].owner == root_of(t) || c->transient.slot[s].owner == values_of(c, root_of(t));
}

mt_tensor *mt_ctx_transient(mt_ctx *c, mt_dtype dt, int ndim, const int64_t *shape, int n_in, mt_tensor **in)
{
    bool records = false;
    for (int i = 0; i < n_in; i++)
        records |= in[i] && in[i]->requires_grad;
    mt_tensor *t = new_header(c);
    mt_tensor_init(t, dt, c->device, ndim, shape);
    const size_t bytes = mt_nbytes(t);
    const bool wanted = records && c->grad_enabled && !c->keep_transients && bytes > 0;
    /* Not a buffer an input is in: the op reads it while writing here. */
    unsigned holds_input = 0;
    for (int i = 0; i < n_in; i++) {
        const int s = in[i] ? slot_of(c, in[i]) : -1;
        if (s >= 0)
            holds_input |= 1u << s;
    }
    int best = -1;
    for (int i = 0; wanted && i < c->transient.n_slots; i++)
        if (!(holds_input >> i & 1) && c->transient.slot[i].bytes >= bytes &&
            (best < 0 || c->transient.slot[i].bytes < c->transient.slot[best].bytes))
            best = i;
    if (best < 0 && wanted && c->transient.n_slots < MT_TRANSIENT_SLOTS) {
        best = c->transient.n_slots++;
        c->transient.slot[best].data = mt_device_alloc(c->device, bytes, "transient activations");
        c->transient.slot[best].bytes = bytes;
    }
    if (best < 0) {
        t->data = mt_arena_alloc(&c->arena, bytes);
        return t;
    }
    c->transient.slot[best].owner = t;
    t->data = c->transient.slot[best].data;
    return t;
}

static void add_made(mt_ctx *c, const mt_tensor *t, const mt_tensor *of, int node)
{
    if (c->transient.n_made == c->transient.cap_made) {
        int cap = c->transient.cap_made ? 2 * c->transient.cap_made : 64;
        void *made = realloc(c->transient.made, (size_t)cap * sizeof *c->transient.made);
        if (!made)
            mt_fatal("out of host memory listing %d transient activations", cap);
        c->transient.made = made;
        c->transient.cap_made = cap;
    }
    c->transient.made[c->transient.n_made].t = t;
    c->transient.made[c->transient.n_made].of = of;
    c->transient.made[c->transient.n_made++].node = node;
}

void mt_tape_set_recompute(mt_ctx *c, mt_node *n, mt_backward_fn recompute)
{
    mt_tensor *out = n ? n->out[0] : NULL;
    if (!out || !in_transient(c, out))
        return;
    n->recompute = recompute;
    add_made(c, out, NULL, (int)(n - c->nodes));
}

void mt_tape_alias_transient(mt_ctx *c, mt_tensor *alias, const mt_tensor *x)
{
    if (in_transient(c, x))
        add_made(c, alias, values_of(c, root_of(x)), -1);
}

/* Makes t's values present when it is an evicted transient: runs the node
 * that made it again. */
static void make_resident(mt_ctx *c, const mt_tensor *t)
{
    if (!t || resident(c, t))
        return;
    const mt_tensor *root = values_of(c, root_of(t));
    for (int i = c->transient.n_made - 1; i >= 0; i--)
        if (c->transient.made[i].t == root && !c->transient.made[i].of) {
            mt_node *maker = &c->nodes[c->transient.made[i].node];
            maker->recompute(c, maker);
            c->transient.slot[slot_of(c, root)].owner = root;
            mt_profile_lap(c, "bwd", "recompute");
            return;
        }
    mt_fatal("a transient activation (%s) was read in the backward but no node made it", root->name ? root->name : "?");
}

mt_tensor *mt_ctx_view_cols(mt_ctx *c, mt_tensor *t, int64_t start, int64_t len)
{
    mt_tensor *v = new_header(c);
    *v = mt_view_cols(t, start, len);
    v->requires_grad = t->requires_grad && c->grad_enabled;
    v->base = t;
    return v;
}

mt_tensor *mt_ctx_reshape(mt_ctx *c, mt_tensor *t, int ndim, const int64_t *shape)
{
    char s[96];
    if (!t)
        return NULL;
    mt_tensor *v = new_header(c);
    mt_tensor_init(v, t->dtype, t->device, ndim, shape);
    if (!mt_is_contiguous(t) || mt_numel(v) != mt_numel(t))
        return mt_op_error(c, "mt_ctx_reshape: %s is not contiguous or has another size than the new shape",
                           mt_shape_str(t, s, sizeof s));
    v->data = t->data;
    v->requires_grad = t->requires_grad && c->grad_enabled;
    v->base = t;
    return v;
}

mt_tensor *mt_grad_of(mt_ctx *c, mt_tensor *t)
{
    if (t->grad)
        return t->grad;
    if (t->base) {
        /* A gradient has its tensor's strides, so the view's offset into its
         * base is also its gradient's offset into the base's gradient. */
        mt_tensor *base_grad = mt_grad_of(c, t->base);
        mt_tensor *g = new_header(c);
        *g = *t;
        g->data = (char *)base_grad->data + ((char *)t->data - (char *)t->base->data);
        g->grad = NULL;
        g->base = NULL;
        g->requires_grad = false;
        t->grad = g;
        return g;
    }
    mt_tensor *g = new_header(c);
    mt_tensor_init(g, t->dtype, c->device, t->ndim, t->shape);
    g->data = mt_pool_alloc(&c->grads, mt_nbytes(g));
    mt_device_zero(c->device, g->data, mt_nbytes(g));
    t->grad = g;
    return g;
}

mt_tensor *mt_grad_in_place(mt_ctx *c, mt_tensor *t)
{
    mt_tensor *root = t;
    while (root->base)
        root = root->base;
    if (t->grad || root->grad || in_transient(c, root)) /* a transient's storage is not its own */
        return NULL;
    mt_tensor *g = new_header(c);
    *g = *root;
    g->grad = NULL;
    g->base = NULL;
    g->requires_grad = false;
    root->grad = g;
    return mt_grad_of(c, t); /* a view's: the same offset into root's values */
}

mt_node *mt_tape_record(mt_ctx *c, const char *op, mt_backward_fn fn, int n_in, mt_tensor **in, int n_out,
                        mt_tensor **out)
{
    mt_profile_lap(c, "fwd", op); /* ops record after their kernels ran */
    bool any = false;
    for (int i = 0; i < n_in; i++) {
        any |= in[i] && in[i]->requires_grad;
        if (in[i] && !resident(c, in[i]) && !c->error[0])
            mt_op_error(c, "%s: input %d is a transient activation that a later op has taken over (read it "
                        "before the next op that makes one)", op, i);
    }
    if (!c->grad_enabled || !any)
        return NULL;
    if (c->n_nodes == c->cap_nodes) {
        int cap = c->cap_nodes ? 2 * c->cap_nodes : 256;
        mt_node *nodes = realloc(c->nodes, (size_t)cap * sizeof *nodes);
        if (!nodes)
            mt_fatal("out of host memory growing the tape to %d nodes", cap);
        c->nodes = nodes;
        c->cap_nodes = cap;
    }
    mt_node *n = &c->nodes[c->n_nodes++];
    memset(n, 0, sizeof *n);
    n->op = op;
    n->backward = fn;
    n->n_in = n_in;
    n->n_out = n_out;
    for (int i = 0; i < n_in; i++)
        n->in[i] = in[i];
    for (int i = 0; i < n_out; i++) {
        n->out[i] = out[i];
        out[i]->requires_grad = true;
    }
    return n;
}

/* Walks the tape in reverse, then drops it: a later backward in the same step
 * covers only the ops recorded after this one. */
static void run_backward(mt_ctx *c)
{
    mt_profile_lap(c, "step", "between forward and backward");
    for (int i = c->n_nodes - 1; i >= 0; i--) {
        mt_node *n = &c->nodes[i];
        bool any = false;
        for (int k = 0; k < n->n_out; k++)
            any |= n->out[k]->grad != NULL;
        if (any) {
            for (int k = 0; k < n->n_in; k++)
                if (!(n->unread_in >> k & 1))
                    make_resident(c, n->in[k]);
            for (int k = 0; k < MT_NODE_MAX_SAVED; k++)
                make_resident(c, n->saved[k]);
            for (int k = 0; k < n->n_in; k++)
                if (n->in[k] && !(n->unread_in >> k & 1) && !resident(c, n->in[k]))
                    mt_fatal("%s reads two transient activations of one buffer; its backward needs both at once",
                             n->op);
            n->backward(c, n);
            mt_profile_lap(c, "bwd", n->op);
        }
        if (c->after_node)
            c->after_node(c, i, c->after_node_arg);
        /* Every op that read these outputs came later on the tape, so their
         * gradients are complete and now spent. A view's gradient is a view
         * of its base's, which goes with the base; a gradient in place
         * (mt_grad_in_place) is the output's own storage, not the pool's. */
        for (int k = 0; k < n->n_out; k++) {
            mt_tensor *o = n->out[k];
            if (o->grad && !o->base) {
                if (o->grad->data != o->data)
                    mt_pool_free(&c->grads, o->grad->data);
                o->grad = NULL;
            }
        }
    }
    c->n_nodes = 0;
}

void mt_backward_seeded(mt_ctx *c, int n, mt_tensor **outs, mt_tensor **seeds)
{
    char a[96], b[96];
    for (int i = 0; i < n; i++) {
        if (!mt_same_shape(outs[i], seeds[i]) || outs[i]->dtype != seeds[i]->dtype)
            mt_fatal("mt_backward_seeded: seed %s does not match output %s", mt_shape_str(seeds[i], a, sizeof a),
                     mt_shape_str(outs[i], b, sizeof b));
        mt_tensor *g = mt_grad_of(c, outs[i]);
        mt_tensor_copy(g, seeds[i]);
    }
    run_backward(c);
}

void mt_backward(mt_ctx *c, mt_tensor *loss)
{
    char s[96];
    if (mt_numel(loss) != 1)
        mt_fatal("mt_backward: the loss %s has more than one element", mt_shape_str(loss, s, sizeof s));
    mt_tensor one;
    mt_tensor_init(&one, loss->dtype, MT_CPU, loss->ndim, loss->shape);
    double v64 = 1.0;
    float v32 = 1.0f;
    one.data = loss->dtype == MT_F64 ? (void *)&v64 : (void *)&v32;
    if (loss->dtype != MT_F64 && loss->dtype != MT_F32)
        mt_fatal("mt_backward: the loss must be f32 or f64, not %s", mt_dtype_name(loss->dtype));
    mt_tensor *g = mt_grad_of(c, loss);
    mt_tensor_copy(g, &one);
    run_backward(c);
}
