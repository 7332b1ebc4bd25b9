#include "layers/mamba2.h"

#include <stdio.h>

static mt_tensor *declare(mt_params *p, const char *prefix, const char *name, int ndim, const int64_t *shape,
                          unsigned flags)
{
    char full[MT_PARAM_NAME_MAX];
    snprintf(full, sizeof full, "%s.%s", prefix, name);
    return mt_params_add(p, full, ndim, shape, flags);
}

void mt_mamba2_declare(mt_mamba2 *m, mt_params *p, const mt_model_config *cfg, const char *prefix)
{
    int64_t h = cfg->nheads;
    m->in_proj = declare(p, prefix, "in_proj.weight", 2, (int64_t[]){cfg->in_proj_dim, cfg->d_model}, 0);
    m->conv_w = declare(p, prefix, "conv1d.weight", 3, (int64_t[]){cfg->conv_dim, 1, cfg->d_conv}, 0);
    m->conv_b = declare(p, prefix, "conv1d.bias", 1, (int64_t[]){cfg->conv_dim}, MT_PARAM_NO_DECAY);
    m->dt_bias = declare(p, prefix, "dt_bias", 1, &h, MT_PARAM_NO_DECAY | MT_PARAM_NO_REINIT);
    m->A_log = declare(p, prefix, "A_log", 1, &h, MT_PARAM_NO_DECAY | MT_PARAM_NO_REINIT);
    m->D = declare(p, prefix, "D", 1, &h, MT_PARAM_NO_DECAY);
    m->norm_w = declare(p, prefix, "norm.weight", 1, (int64_t[]){cfg->d_inner}, MT_PARAM_NO_DECAY);
    m->out_proj = declare(p, prefix, "out_proj.weight", 2, (int64_t[]){cfg->d_model, cfg->d_inner}, 0);
}

/* A GEMM weight in the dtype of the activations it multiplies. */
static mt_tensor *weight_as(mt_ctx *c, mt_tensor *w, mt_dtype dt)
{
    return w->dtype == dt ? w : mt_cast(c, w, dt);
}

mt_tensor *mt_mamba2_forward(mt_ctx *c, const mt_mamba2 *m, const mt_model_config *cfg, mt_tensor *u,
                             mt_tensor *seq_idx)
{
    if (!u)
        return NULL;
    int64_t di = cfg->d_inner, gn = (int64_t)cfg->ngroups * cfg->d_state;
    mt_tensor *zxbcdt = mt_linear(c, u, weight_as(c, m->in_proj, u->dtype), NULL);
    if (!zxbcdt)
        return NULL;
    mt_tensor *z = mt_ctx_view_cols(c, zxbcdt, 0, di);
    mt_tensor *xbc = mt_ctx_view_cols(c, zxbcdt, di, cfg->conv_dim);
    mt_tensor *dt = mt_ctx_view_cols(c, zxbcdt, di + cfg->conv_dim, cfg->nheads);
    xbc = mt_conv1d_silu(c, xbc, m->conv_w, m->conv_b, NULL, seq_idx);
    if (!xbc)
        return NULL;
    mt_tensor *x = mt_ctx_view_cols(c, xbc, 0, di);
    mt_tensor *bm = mt_ctx_view_cols(c, xbc, di, gn);
    mt_tensor *cm = mt_ctx_view_cols(c, xbc, di + gn, gn);
    mt_ssd_config ssd = {.headdim = cfg->headdim,
                         .ngroups = cfg->ngroups,
                         .chunk_size = cfg->chunk_size,
                         .dt_min = cfg->dt_limit_min,
                         .dt_max = cfg->dt_limit_max};
    mt_tensor *y = mt_ssd(c, x, dt, m->A_log, bm, cm, m->D, NULL, m->dt_bias, NULL, seq_idx, &ssd, NULL);
    y = mt_gated_rmsnorm(c, y, z, m->norm_w, cfg->ngroups, cfg->norm_eps);
    return y ? mt_linear(c, y, weight_as(c, m->out_proj, u->dtype), NULL) : NULL;
}
