#include "layers/mamba2.h"

#include <math.h>
#include <stdio.h>

#include "autograd/ops_tp.h"
#include "layers/block.h"
#include "layers/init.h"

static mt_tensor *declare(mt_params *p, const char *prefix, const char *name, int ndim, const int64_t *shape,
                          unsigned flags)
{
    char full[MT_PARAM_NAME_MAX];
    snprintf(full, sizeof full, "%s.%s", prefix, name);
    return mt_params_add(p, full, ndim, shape, flags);
}

/* Declares the parameters with the sizes of d (a TP rank's, or the whole
 * block's), each also flagged `extra`. */
static void declare_dims(mt_mamba2 *m, mt_params *p, const mt_model_config *cfg, const char *prefix,
                         const mt_tp_dims *d, unsigned extra)
{
    int64_t h = d->nheads, conv = d->d_inner + 2 * d->bc, in = d->d_inner + conv + d->nheads;
    m->in_proj = declare(p, prefix, "in_proj.weight", 2, (int64_t[]){in, cfg->d_model}, extra);
    m->conv_w = declare(p, prefix, "conv1d.weight", 3, (int64_t[]){conv, 1, cfg->d_conv}, extra);
    m->conv_b = declare(p, prefix, "conv1d.bias", 1, &conv, MT_PARAM_NO_DECAY | extra);
    m->dt_bias = declare(p, prefix, "dt_bias", 1, &h, MT_PARAM_NO_DECAY | MT_PARAM_NO_REINIT | extra);
    m->A_log = declare(p, prefix, "A_log", 1, &h, MT_PARAM_NO_DECAY | MT_PARAM_NO_REINIT | extra);
    m->D = declare(p, prefix, "D", 1, &h, MT_PARAM_NO_DECAY | extra);
    m->norm_w = declare(p, prefix, "norm.weight", 1, (int64_t[]){d->d_inner}, MT_PARAM_NO_DECAY | extra);
    m->out_proj = declare(p, prefix, "out_proj.weight", 2, (int64_t[]){cfg->d_model, d->d_inner}, extra);
}

void mt_mamba2_declare(mt_mamba2 *m, mt_params *p, const mt_model_config *cfg, const char *prefix)
{
    mt_tp_dims whole = mt_tp_dims_of(cfg, 1, 0);
    declare_dims(m, p, cfg, prefix, &whole, 0);
    m->tp = NULL;
}

void mt_mamba2_declare_tp(mt_mamba2 *m, mt_params *p, const mt_model_config *cfg, const char *prefix,
                          const mt_tp *tp)
{
    mt_tp_dims d = mt_tp_dims_of(cfg, tp->size, tp->rank);
    declare_dims(m, p, cfg, prefix, &d, MT_PARAM_TP_SHARDED);
    m->tp = tp;
    /* Replicated B and C rows (in_proj, conv1d): partial gradients. */
    mt_tensor *all[] = {m->in_proj, m->conv_w, m->conv_b};
    for (int i = 0; i < 3; i++) {
        mt_tp_layout l;
        if (mt_tp_layout_of(cfg, tp->size, tp->rank, all[i]->name, &l) && l.partial_count) {
            mt_param *q = mt_params_find(p, all[i]->name);
            q->flags |= MT_PARAM_TP_PARTIAL_GRAD;
            q->partial_begin = (size_t)l.partial_begin;
            q->partial_count = (size_t)l.partial_count;
        }
    }
}

/* A GEMM weight in the dtype of the activations it multiplies. */
static mt_tensor *weight_as(mt_ctx *c, mt_tensor *w, mt_dtype dt)
{
    return w->dtype == dt ? w : mt_cast(c, w, dt);
}

mt_tensor *mt_mamba2_forward(mt_ctx *c, const mt_mamba2 *m, const mt_model_config *cfg, mt_tensor *u,
                             mt_tensor *seq_idx)
{
    return mt_mamba2_forward_io(c, m, cfg, u, &(mt_block_io){.seq_idx = seq_idx});
}

mt_tensor *mt_mamba2_forward_io(mt_ctx *c, const mt_mamba2 *m, const mt_model_config *cfg, mt_tensor *u,
                                const mt_block_io *io)
{
    mt_tensor *seq_idx = io->seq_idx, *const *state_in = io->state_in, **state_out = io->state_out;
    if (!u)
        return NULL;
    if (m->tp && (state_in || state_out))
        return mt_op_error(c, "mt_mamba2_forward_io: a tensor-parallel block has no recurrent state yet");
    const mt_tp *tp = m->tp;
    mt_tp_dims d = tp ? mt_tp_dims_of(cfg, tp->size, tp->rank) : mt_tp_dims_of(cfg, 1, 0);
    int64_t di = d.d_inner, bc = d.bc, conv_dim = di + 2 * bc;
    if (tp)
        u = mt_tp_copy_to(c, u, tp->comm);
    mt_tensor *zxbcdt = u ? mt_linear(c, u, weight_as(c, m->in_proj, u->dtype), NULL) : NULL;
    if (!zxbcdt)
        return NULL;
    mt_tensor *z = mt_ctx_view_cols(c, zxbcdt, 0, di);
    mt_tensor *xbc = mt_ctx_view_cols(c, zxbcdt, di, conv_dim);
    mt_tensor *dt = mt_ctx_view_cols(c, zxbcdt, di + conv_dim, d.nheads);
    mt_tensor *conv_in = state_in ? state_in[0] : NULL;
    if (state_out && !(state_out[0] = mt_conv1d_final_state(c, xbc, conv_in, cfg->d_conv)))
        return NULL;
    xbc = mt_conv1d_silu(c, xbc, m->conv_w, m->conv_b, conv_in, seq_idx);
    if (!xbc)
        return NULL;
    /* With B and C replicated, every head of this rank reads group head_group. */
    int64_t b0 = d.bc_sharded ? 0 : (int64_t)d.head_group * cfg->d_state, bw = d.bc_sharded ? bc : cfg->d_state;
    mt_tensor *x = mt_ctx_view_cols(c, xbc, 0, di);
    mt_tensor *bm = mt_ctx_view_cols(c, xbc, di + b0, bw);
    mt_tensor *cm = mt_ctx_view_cols(c, xbc, di + bc + b0, bw);
    mt_ssd_config ssd = {.headdim = cfg->headdim,
                         .ngroups = d.bc_sharded ? d.groups : 1,
                         .chunk_size = cfg->chunk_size,
                         .dt_min = cfg->dt_limit_min,
                         .dt_max = cfg->dt_limit_max};
    mt_tensor *y = mt_ssd(c, x, dt, m->A_log, bm, cm, m->D, NULL, m->dt_bias, state_in ? state_in[1] : NULL, seq_idx,
                          &ssd, state_out ? &state_out[1] : NULL);
    /* Norm groups of d_inner / ngroups columns: within this rank when B and
     * C are split by groups, else spread over the ranks of head_group. */
    if (d.bc_sharded)
        y = mt_gated_rmsnorm(c, y, z, m->norm_w, d.groups, cfg->norm_eps);
    else
        y = mt_gated_rmsnorm_tp(c, y, z, m->norm_w, d.head_group, cfg->ngroups, cfg->d_inner / cfg->ngroups,
                                cfg->norm_eps, tp->comm);
    mt_tensor *w = y ? weight_as(c, m->out_proj, u->dtype) : NULL;
    if (!tp)
        return w ? (io->output_unread ? mt_linear_unkept : mt_linear)(c, y, w, NULL) : NULL;
    /* The partial sum is read only by the reduce, which copies it. */
    mt_tensor *out = w ? mt_linear_unkept(c, y, w, NULL) : NULL;
    return out ? mt_tp_reduce_from(c, out, tp->comm) : NULL;
}

/* ---- the block interface ---- */

static void declare_block(void *block, mt_params *p, const mt_model_config *cfg, const char *prefix, const mt_tp *tp)
{
    if (tp && tp->size > 1)
        mt_mamba2_declare_tp(block, p, cfg, prefix, tp);
    else
        mt_mamba2_declare(block, p, cfg, prefix);
}

/* The reference's Mamba2 module init: in_proj and conv1d PyTorch's
 * defaults (conv fan_in = d_conv), dt_bias = softplus^-1(dt), A_log =
 * log(U(A_init_range)), D and the norm 1; out_proj is the model's. */
static void init_whole(mt_backend *be, mt_mamba2 *x, const mt_model_config *cfg, uint64_t seed, int *k)
{
    mt_init_linear(be, x->in_proj, mt_init_seed(seed, (*k)++), 1.0);
    double conv_bound = 1.0 / sqrt((double)cfg->d_conv);
    be->fill_uniform(be, x->conv_w, mt_init_seed(seed, (*k)++), -conv_bound, conv_bound);
    be->fill_uniform(be, x->conv_b, mt_init_seed(seed, (*k)++), -conv_bound, conv_bound);
    mt_init_dt_bias(x->dt_bias, cfg, mt_init_seed(seed, (*k)++));
    mt_init_A_log(x->A_log, cfg, mt_init_seed(seed, (*k)++));
    mt_init_constant(x->D, 1.0);
    mt_init_constant(x->norm_w, 1.0);
    (*k)++; /* out_proj: drawn by the model's last pass */
}

/* A TP rank: the whole block's init into temporaries (out_proj aside),
 * keeping this rank's slices. */
static void init_block(mt_backend *be, void *block, const mt_model_config *cfg, const mt_tp *tp, uint64_t seed,
                       int *k)
{
    mt_mamba2 *x = block;
    if (!tp || tp->size <= 1) {
        init_whole(be, x, cfg, seed, k);
        return;
    }
    int64_t h = cfg->nheads, conv = cfg->conv_dim, di = cfg->d_inner;
    mt_tensor *const l[] = {x->in_proj, x->conv_w, x->conv_b, x->dt_bias, x->A_log, x->D, x->norm_w};
    mt_mamba2 f = {
        .in_proj = mt_init_full_like(x->in_proj, 2, (int64_t[]){cfg->in_proj_dim, cfg->d_model}),
        .conv_w = mt_init_full_like(x->conv_w, 3, (int64_t[]){conv, 1, cfg->d_conv}),
        .conv_b = mt_init_full_like(x->conv_b, 1, &conv),
        .dt_bias = mt_init_full_like(x->dt_bias, 1, &h),
        .A_log = mt_init_full_like(x->A_log, 1, &h),
        .D = mt_init_full_like(x->D, 1, &h),
        .norm_w = mt_init_full_like(x->norm_w, 1, &di),
    };
    init_whole(be, &f, cfg, seed, k);
    mt_tensor *const t[] = {f.in_proj, f.conv_w, f.conv_b, f.dt_bias, f.A_log, f.D, f.norm_w};
    for (int i = 0; i < 7; i++) {
        mt_init_keep_slice(cfg, tp, l[i], t[i]);
        mt_tensor_free(t[i]);
    }
}

static void init_residual(mt_backend *be, void *block, const mt_model_config *cfg, const mt_tp *tp, uint64_t seed,
                          double scale)
{
    mt_mamba2 *x = block;
    if (!tp || tp->size <= 1) {
        mt_init_linear(be, x->out_proj, seed, scale);
        return;
    }
    mt_tensor *full = mt_init_full_like(x->out_proj, 2, (int64_t[]){cfg->d_model, cfg->d_inner});
    mt_init_linear(be, full, seed, scale);
    mt_init_keep_slice(cfg, tp, x->out_proj, full);
    mt_tensor_free(full);
}

/* The conv state (B, conv_dim, d_conv - 1) and the SSM state (B, H, P, N). */
static int state_shape(const mt_model_config *cfg, int64_t batch, int i, int64_t *shape)
{
    if (i == 0) {
        shape[0] = batch, shape[1] = cfg->conv_dim, shape[2] = cfg->d_conv - 1;
        return 3;
    }
    shape[0] = batch, shape[1] = cfg->nheads, shape[2] = cfg->headdim, shape[3] = cfg->d_state;
    return 4;
}

static mt_tensor *forward_block(mt_ctx *c, const void *block, const mt_model_config *cfg, mt_tensor *u,
                                const mt_block_io *io)
{
    return mt_mamba2_forward_io(c, block, cfg, u, io);
}

const mt_block_kind mt_block_mamba2 = {
    .name = "Mamba2",
    .size = sizeof(mt_mamba2),
    .declare = declare_block,
    .init = init_block,
    .init_residual = init_residual,
    .n_state = 2,
    .state_shape = state_shape,
    .forward = forward_block,
};
