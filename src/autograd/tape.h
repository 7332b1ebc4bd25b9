/* The execution context and the tape.
 *
 * An mt_ctx owns a backend, the step arena (activations), the gradient pool
 * (activation gradients), the scratch arena (kernel temporaries) and the
 * tape. Ops (ops.h) compute on the ctx's device and, when an input requires
 * grad and grad mode is on, append a node. mt_backward walks the nodes in
 * reverse; once a node's backward has run, the gradients of its outputs are
 * spent and go back to the pool, so the backward holds only the gradients
 * of the ops it is between. mt_ctx_end_step drops the tape and resets the
 * arenas; parameter gradients live in the parameter store and persist until
 * zeroed there.
 *
 * Op errors (wrong shapes, dtypes, devices) are reported through the ctx:
 * by default the message is printed and the program exits; with
 * abort_on_error false the op returns NULL and mt_ctx_error says why. */
#ifndef MT_TAPE_H
#define MT_TAPE_H

#include <stdbool.h>

#include "core/arena.h"
#include "core/pool.h"
#include "core/tensor.h"
#include "kernels/backend.h"

#define MT_NODE_MAX_IN 10
#define MT_NODE_MAX_OUT 2
#define MT_NODE_MAX_SAVED 2
#define MT_TRANSIENT_SLOTS 4

struct mt_ctx;
struct mt_comm;
struct mt_node;
typedef void (*mt_backward_fn)(struct mt_ctx *c, struct mt_node *n);

typedef struct mt_node {
    const char *op;
    mt_backward_fn backward;
    mt_backward_fn recompute; /* set when out[0] is transient: rewrites it from the node's inputs */
    mt_tensor *in[MT_NODE_MAX_IN];
    mt_tensor *out[MT_NODE_MAX_OUT];
    mt_tensor *saved[MT_NODE_MAX_SAVED];
    int n_in, n_out;
    /* Bit k set: neither the backward nor the recompute reads in[k]'s
     * values, so in[k] may be a transient that a later op took over. */
    unsigned unread_in;
    /* The op's attributes, under the op's name. */
    union {
        struct { int first_id, vocab; } embedding; /* ids are i32, so are the table's rows */
        struct { int ignore_index, first_col, vocab; bool in_place; } cross_entropy;
        mt_ssd_config ssd;
        struct { int ngroups; bool delta_softplus; } scan;
        struct { int ngroups; double eps; } gated_rmsnorm;
        struct { int group, ngroups; int64_t group_cols; struct mt_comm *comm; } gated_rmsnorm_tp;
        struct { struct mt_comm *comm; } tp_copy_to;
        struct { /* a recomputed block: its function (autograd/recompute.h) and argument */
            mt_tensor *(*fn)(struct mt_ctx *c, void *arg, mt_tensor *x, mt_tensor *aux);
            void *arg;
        } block;
    } attr;
} mt_node;

typedef struct mt_ctx {
    mt_backend *be;
    mt_device device;
    mt_arena arena;      /* step memory on the device: activations */
    mt_pool grads;       /* activation gradients, handed back during the backward */
    mt_arena scratch;    /* kernel temporaries: one kernel call's (op_scratch) */
    mt_arena headers;    /* step memory on the host: tensor headers */
    mt_node *nodes;      /* the tape, in execution order */
    int n_nodes, cap_nodes;
    bool grad_enabled;
    bool abort_on_error;
    char error[512];
    struct mt_ctx *recompute; /* where recomputed blocks run (autograd/recompute.h); made on first use */
    /* Transient outputs (mt_ctx_transient): a few device buffers, each held
     * by the newest transient placed in it; the backward recomputes an
     * evicted one before a node that reads it. */
    struct {
        struct { char *data; size_t bytes; const mt_tensor *owner; } slot[MT_TRANSIENT_SLOTS];
        int n_slots;
        struct { const mt_tensor *t, *of; int node; } *made; /* this step's transients: their nodes, or what they alias */
        int n_made, cap_made;
    } transient;
    bool keep_transients; /* transients are ordinary step tensors (for equivalence tests) */
    struct mt_profile *profile; /* when set, ops are timed into it (autograd/profile.h); borrowed */
    /* When set, called after the backward of each tape node with its index
     * (decreasing): every node from there on is done, so the gradients
     * only those nodes write are final (the data-parallel overlap). */
    void (*after_node)(struct mt_ctx *c, int index, void *arg);
    void *after_node_arg;
} mt_ctx;

/* be is borrowed, not owned. */
void mt_ctx_init(mt_ctx *c, mt_backend *be, size_t arena_bytes);
void mt_ctx_release(mt_ctx *c);

/* Drops the tape and resets the step arena: every tensor made by an op since
 * the last call is gone. */
void mt_ctx_end_step(mt_ctx *c);

/* The device memory a ctx holds for its steps, recompute context included:
 * the step arena's peak (activations), the gradient pool's buffers and the
 * scratch arena's peak. */
typedef struct mt_ctx_memory {
    size_t activations, gradients, scratch, total;
} mt_ctx_memory;
mt_ctx_memory mt_ctx_memory_of(const mt_ctx *c);

/* The first op error since the last clear, or NULL. */
const char *mt_ctx_error(const mt_ctx *c);
void mt_ctx_clear_error(mt_ctx *c);

/* A contiguous tensor in the step arena (contents undefined). */
mt_tensor *mt_ctx_tensor(mt_ctx *c, mt_dtype dt, int ndim, const int64_t *shape);

/* An op's output that the backward recomputes instead of keeping, for ops
 * whose output is cheap to make again and large (conv1d, the norms), or
 * that no backward reads (a block's output, which only the next norm's
 * forward reads). It lives in one of the ctx's transient buffers (the
 * smallest that holds it and none of the op's inputs; a new one when none
 * does), which the next transient placed there takes over: read it before
 * that. The op then records its node and calls mt_tape_set_recompute (an
 * output with no recompute must never be read by a backward: that is a
 * fatal error). It is an ordinary step tensor when the op will not record
 * (grad off, or no input in[0..n_in) requires grad), when keep_transients
 * is set, or when every buffer is in use and none fits. */
mt_tensor *mt_ctx_transient(mt_ctx *c, mt_dtype dt, int ndim, const int64_t *shape, int n_in, mt_tensor **in);

/* A column view of t in [start, start + len) of its last dim: no copy, and its
 * gradient is the same columns of t's gradient. */
mt_tensor *mt_ctx_view_cols(mt_ctx *c, mt_tensor *t, int64_t start, int64_t len);

/* t (contiguous) seen with another shape of the same size: no copy, and its
 * gradient is t's gradient seen the same way. NULL after an op error. */
mt_tensor *mt_ctx_reshape(mt_ctx *c, mt_tensor *t, int ndim, const int64_t *shape);

/* t's gradient, allocated and zeroed on first use. It has t's strides. The
 * gradient of an op's output is gone once that op's backward has run (read
 * gradients of leaves: inputs and parameters). */
mt_tensor *mt_grad_of(mt_ctx *c, mt_tensor *t);

/* t's gradient stored over t's own values (and over its base's, for a
 * view), for an op's output that no op reads in the backward: no buffer of
 * its size is needed, and its values are gone once the gradient is written.
 * NULL when t (or its base) already has a gradient, which the caller must
 * then add to (mt_grad_of). */
mt_tensor *mt_grad_in_place(mt_ctx *c, mt_tensor *t);

/* Seeds d(loss) = 1 for a one-element loss and runs the tape backward; the
 * tape is consumed (the step's tensors stay until mt_ctx_end_step). */
void mt_backward(mt_ctx *c, mt_tensor *loss);

/* Seeds the gradients of n outputs with seeds (same shapes, any device) and
 * runs the tape backward. For gradient checks of ops with non-scalar outputs. */
void mt_backward_seeded(mt_ctx *c, int n, mt_tensor **outs, mt_tensor **seeds);

/* For op implementations (ops.c): record a node when any input requires grad. */
mt_node *mt_tape_record(mt_ctx *c, const char *op, mt_backward_fn fn, int n_in, mt_tensor **in, int n_out,
                        mt_tensor **out);

/* For op implementations: marks node n (the one the op just recorded, or
 * NULL when it recorded none) as the maker of its transient out[0];
 * recompute(c, n) must write out[0] again from in[] and saved[], none of
 * them transient, exactly as the op did. No-op when out[0] is not transient. */
void mt_tape_set_recompute(mt_ctx *c, mt_node *n, mt_backward_fn recompute);

/* For op implementations: alias (a second header on x's data, not a view)
 * holds x's values; when x is transient, so is alias, with x. */
void mt_tape_alias_transient(mt_ctx *c, mt_tensor *alias, const mt_tensor *x);

/* For op implementations: report an op error (see above) and return NULL. */
#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
mt_tensor *mt_op_error(mt_ctx *c, const char *fmt, ...);

#endif
