#include "layers/mamba1.h"

#include <math.h>
#include <stdio.h>

#include "core/error.h"
#include "layers/block.h"
#include "layers/init.h"

static mt_tensor *declare(mt_params *p, const char *prefix, const char *name, int ndim, const int64_t *shape,
                          unsigned flags)
{
    char full[MT_PARAM_NAME_MAX];
    snprintf(full, sizeof full, "%s.%s", prefix, name);
    return mt_params_add(p, full, ndim, shape, flags);
}

void mt_mamba1_declare(mt_mamba1 *m, mt_params *p, const mt_model_config *cfg, const char *prefix)
{
    int64_t di = cfg->d_inner, r = cfg->dt_proj_rank;
    m->in_proj = declare(p, prefix, "in_proj.weight", 2, (int64_t[]){cfg->in_proj_dim, cfg->d_model}, 0);
    m->conv_w = declare(p, prefix, "conv1d.weight", 3, (int64_t[]){di, 1, cfg->d_conv}, 0);
    m->conv_b = cfg->conv_bias ? declare(p, prefix, "conv1d.bias", 1, &di, MT_PARAM_NO_DECAY) : NULL;
    m->x_proj = declare(p, prefix, "x_proj.weight", 2, (int64_t[]){cfg->x_proj_dim, di}, 0);
    m->dt_proj = declare(p, prefix, "dt_proj.weight", 2, (int64_t[]){di, r}, 0);
    m->dt_bias = declare(p, prefix, "dt_proj.bias", 1, &di, MT_PARAM_NO_DECAY | MT_PARAM_NO_REINIT);
    m->A_log = declare(p, prefix, "A_log", 2, (int64_t[]){di, cfg->d_state}, MT_PARAM_NO_DECAY);
    m->D = declare(p, prefix, "D", 1, &di, MT_PARAM_NO_DECAY);
    m->out_proj = declare(p, prefix, "out_proj.weight", 2, (int64_t[]){cfg->d_model, di}, 0);
}

/* A GEMM weight in the dtype of the activations it multiplies. */
static mt_tensor *weight_as(mt_ctx *c, mt_tensor *w, mt_dtype dt)
{
    return w->dtype == dt ? w : mt_cast(c, w, dt);
}

/* output_unread: the output may be unkept (layers/block.h). */
static mt_tensor *forward(mt_ctx *c, const mt_mamba1 *m, const mt_model_config *cfg, mt_tensor *u,
                          bool output_unread)
{
    if (!u)
        return NULL;
    int64_t di = cfg->d_inner, r = cfg->dt_proj_rank, n = cfg->d_state;
    mt_tensor *xz = mt_linear(c, u, weight_as(c, m->in_proj, u->dtype), NULL);
    if (!xz)
        return NULL;
    mt_tensor *x = mt_ctx_view_cols(c, xz, 0, di);
    mt_tensor *z = mt_ctx_view_cols(c, xz, di, di);
    x = mt_conv1d_silu(c, x, m->conv_w, m->conv_b, NULL, NULL);
    mt_tensor *dbc = x ? mt_linear(c, x, weight_as(c, m->x_proj, u->dtype), NULL) : NULL;
    if (!dbc)
        return NULL;
    mt_tensor *dt_low = mt_ctx_view_cols(c, dbc, 0, r);
    mt_tensor *bm = mt_ctx_view_cols(c, dbc, r, n);
    mt_tensor *cm = mt_ctx_view_cols(c, dbc, r + n, n);
    /* dt_proj's bias is not added here: the scan adds it before the softplus. */
    mt_tensor *delta = mt_linear(c, dt_low, weight_as(c, m->dt_proj, u->dtype), NULL);
    mt_scan_config scan = {.ngroups = 1, .delta_softplus = true};
    mt_tensor *y = mt_selective_scan(c, x, delta, m->A_log, bm, cm, m->D, z, m->dt_bias, &scan);
    mt_tensor *w = y ? weight_as(c, m->out_proj, u->dtype) : NULL;
    return w ? (output_unread ? mt_linear_unkept : mt_linear)(c, y, w, NULL) : NULL;
}

mt_tensor *mt_mamba1_forward(mt_ctx *c, const mt_mamba1 *m, const mt_model_config *cfg, mt_tensor *u)
{
    return forward(c, m, cfg, u, false);
}

/* ---- the block interface ---- */

static void declare_block(void *block, mt_params *p, const mt_model_config *cfg, const char *prefix, const mt_tp *tp)
{
    if (tp && tp->size > 1)
        mt_fatal("%s: the Mamba-1 block has no tensor-parallel layout", prefix);
    mt_mamba1_declare(block, p, cfg, prefix);
}

/* A_log (d_inner, d_state) = log(n + 1) in every row: A = -(1, 2, ..., d_state). */
static void init_A_log_s4d_real(mt_tensor *t)
{
    int64_t rows = t->shape[0], n = t->shape[1];
    mt_tensor *h = mt_tensor_new(MT_CPU, t->dtype, 2, t->shape);
    for (int64_t i = 0; i < rows * n; i++)
        mt_set(h, i, log((double)(i % n + 1)));
    mt_tensor_copy(t, h);
    mt_tensor_free(h);
}

/* The reference's Mamba module init: in_proj, x_proj and conv1d PyTorch's
 * defaults, dt_proj.weight U(+-dt_scale / sqrt(dt_rank)), its bias
 * softplus^-1(dt), A_log S4D-real, D 1; out_proj is the model's. */
static void init_block(mt_backend *be, void *block, const mt_model_config *cfg, const mt_tp *tp, uint64_t seed,
                       int *k)
{
    (void)tp;
    mt_mamba1 *x = block;
    mt_init_linear(be, x->in_proj, mt_init_seed(seed, (*k)++), 1.0);
    double conv_bound = 1.0 / sqrt((double)cfg->d_conv);
    be->fill_uniform(be, x->conv_w, mt_init_seed(seed, (*k)++), -conv_bound, conv_bound);
    if (x->conv_b)
        be->fill_uniform(be, x->conv_b, mt_init_seed(seed, *k), -conv_bound, conv_bound);
    (*k)++; /* counted with or without the bias: the draws after it stay the same */
    mt_init_linear(be, x->x_proj, mt_init_seed(seed, (*k)++), 1.0);
    double dt_bound = cfg->dt_scale / sqrt((double)cfg->dt_proj_rank);
    be->fill_uniform(be, x->dt_proj, mt_init_seed(seed, (*k)++), -dt_bound, dt_bound);
    mt_init_dt_bias(x->dt_bias, cfg, mt_init_seed(seed, (*k)++));
    init_A_log_s4d_real(x->A_log);
    mt_init_constant(x->D, 1.0);
    (*k)++; /* out_proj: drawn by the model's last pass */
}

static void init_residual(mt_backend *be, void *block, const mt_model_config *cfg, const mt_tp *tp, uint64_t seed,
                          double scale)
{
    (void)cfg;
    (void)tp;
    mt_init_linear(be, ((mt_mamba1 *)block)->out_proj, seed, scale);
}

static mt_tensor *forward_block(mt_ctx *c, const void *block, const mt_model_config *cfg, mt_tensor *u,
                                const mt_block_io *io)
{
    /* io->seq_idx is not read: like the reference's Mamba-1, no resets at
     * document boundaries. */
    if (io->state_in || io->state_out)
        return mt_op_error(c, "the Mamba-1 block has no recurrent state yet");
    return forward(c, block, cfg, u, io->output_unread);
}

const mt_block_kind mt_block_mamba1 = {
    .name = "Mamba1",
    .size = sizeof(mt_mamba1),
    .declare = declare_block,
    .init = init_block,
    .init_residual = init_residual,
    .forward = forward_block,
};
