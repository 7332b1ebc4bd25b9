/* The block interface: what the model needs of each kind of layer, so that
 * a kind (Mamba-2, Mamba-1; attention, gated MLP and Mamba-3 later) is a
 * file of its own and the model holds a kind per layer, with no branch on
 * the kind anywhere else. A kind's parameters are a struct of its own
 * (mt_mamba2, mt_mamba1) that the model allocates with `size` bytes.
 * The tensor-parallel layout still lives in dist/tp.c. */
#ifndef MT_BLOCK_H
#define MT_BLOCK_H

#include "autograd/ops.h"
#include "core/params.h"
#include "dist/tp.h"
#include "layers/config.h"

#define MT_BLOCK_MAX_STATE 2 /* recurrent state tensors per layer */

/* What a block's forward takes beside its input. */
typedef struct mt_block_io {
    /* (B, L) i32 or NULL: the document boundaries (a kind may ignore them,
     * as Mamba-1 does like the reference's). */
    mt_tensor *seq_idx;
    /* The recurrent state to continue from (NULL: the start), and where the
     * state after the input goes (NULL: not wanted); only for kinds with
     * n_state > 0. */
    mt_tensor *const *state_in;
    mt_tensor **state_out;
    /* Only forward ops read the output, before the next transient is made
     * (the model's next norm): it may be unkept (mt_linear_unkept). */
    bool output_unread;
} mt_block_io;

typedef struct mt_block_kind {
    const char *name; /* as config.json names the layer: "Mamba2", "Mamba1" */
    size_t size;      /* bytes of the kind's parameter struct */
    /* Declares the parameters under prefix ("backbone.layers.N.mixer"):
     * the whole block, or tp's rank's slice when tp has size > 1 (tp then
     * outlives the block). */
    void (*declare)(void *block, mt_params *p, const mt_model_config *cfg, const char *prefix, const mt_tp *tp);
    /* The reference's initialization of every parameter but the residual
     * projection, from seeds mt_init_seed(seed, (*k)++) in declaration
     * order (layers/init.h); *k also counts the residual projection. */
    void (*init)(mt_backend *be, void *block, const mt_model_config *cfg, const mt_tp *tp, uint64_t seed, int *k);
    /* The model's last init pass: the projection onto the residual stream
     * (out_proj) drawn with PyTorch's Linear default times scale (1 /
     * sqrt(n_layer)) from seed, whole, a TP rank keeping its slice. */
    void (*init_residual)(mt_backend *be, void *block, const mt_model_config *cfg, const mt_tp *tp, uint64_t seed,
                          double scale);
    /* The recurrent state, for generation: n_state tensors per layer in the
     * accumulation dtype (0: the kind has no recurrent step yet), tensor i
     * of a batch shaped by state_shape (returns its ndim). */
    int n_state;
    int (*state_shape)(const mt_model_config *cfg, int64_t batch, int i, int64_t *shape);
    /* u (B, L, d_model) in the compute dtype -> (B, L, d_model), as io
     * says: prefill is a whole prompt with state_out, a decode step one
     * token (L = 1) with both states. */
    mt_tensor *(*forward)(mt_ctx *c, const void *block, const mt_model_config *cfg, mt_tensor *u,
                          const mt_block_io *io);
} mt_block_kind;

extern const mt_block_kind mt_block_mamba2, mt_block_mamba1;

/* The kind of layer a config names. */
const mt_block_kind *mt_block_kind_of(mt_layer_kind layer);

#endif
