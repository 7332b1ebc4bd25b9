#include "layers/config.h"

#include <math.h>
#include <stdio.h>

void mt_model_config_defaults(mt_model_config *cfg)
{
    *cfg = (mt_model_config){
        .d_model = 768,
        .n_layer = 24,
        .vocab_size = 50277,
        .pad_vocab_size_multiple = 8,
        .d_state = 128,
        .d_conv = 4,
        .expand = 2,
        .headdim = 64,
        .ngroups = 1,
        .chunk_size = 256,
        .rms_norm = true,
        .residual_in_fp32 = true,
        .tie_embeddings = true,
        .conv_bias = true,
        .norm_eps = 1e-5,
        .dt_min = 0.001,
        .dt_max = 0.1,
        .dt_init_floor = 1e-4,
        .dt_limit_min = 0.0,
        .dt_limit_max = INFINITY,
        .A_init_min = 1.0,
        .A_init_max = 16.0,
        .dt_rank = 0,
        .dt_scale = 1.0,
    };
}

void mt_model_config_use_mamba1(mt_model_config *cfg)
{
    cfg->layer = MT_LAYER_MAMBA1;
    cfg->d_state = 16;
}

#define REQUIRE(cond, ...)                                                                                      \
    do {                                                                                                        \
        if (!(cond)) {                                                                                          \
            snprintf(err, n, __VA_ARGS__);                                                                      \
            return false;                                                                                       \
        }                                                                                                       \
    } while (0)

static bool finalize_mamba2(mt_model_config *cfg, char *err, size_t n)
{
    REQUIRE(cfg->headdim > 0, "headdim must be positive, got %d", cfg->headdim);
    REQUIRE(cfg->chunk_size >= 16 && cfg->chunk_size <= 256, "chunk_size must be in [16, 256], got %d",
            cfg->chunk_size);
    REQUIRE(cfg->conv_bias, "conv_bias = false is only built for the Mamba-1 block");
    REQUIRE(cfg->dt_limit_min >= 0 && cfg->dt_limit_max > cfg->dt_limit_min,
            "dt_limit must be an interval in [0, inf], got (%g, %g)", cfg->dt_limit_min, cfg->dt_limit_max);
    REQUIRE(cfg->A_init_min > 0 && cfg->A_init_max >= cfg->A_init_min,
            "A_init_range must satisfy 0 < min <= max, got (%g, %g)", cfg->A_init_min, cfg->A_init_max);
    REQUIRE(cfg->d_inner % cfg->headdim == 0, "headdim %d does not divide d_inner = expand * d_model = %d",
            cfg->headdim, cfg->d_inner);
    cfg->nheads = cfg->d_inner / cfg->headdim;
    REQUIRE(cfg->ngroups > 0 && cfg->nheads % cfg->ngroups == 0, "ngroups %d does not divide nheads %d",
            cfg->ngroups, cfg->nheads);
    cfg->conv_dim = cfg->d_inner + 2 * cfg->ngroups * cfg->d_state;
    cfg->in_proj_dim = 2 * cfg->d_inner + 2 * cfg->ngroups * cfg->d_state + cfg->nheads;
    cfg->dt_proj_rank = cfg->x_proj_dim = 0;
    return true;
}

static bool finalize_mamba1(mt_model_config *cfg, char *err, size_t n)
{
    REQUIRE(cfg->dt_rank >= 0, "dt_rank must be positive, or 0 for \"auto\" (ceil(d_model / 16)), got %d",
            cfg->dt_rank);
    REQUIRE(cfg->dt_scale > 0 && isfinite(cfg->dt_scale), "dt_scale must be positive, got %g", cfg->dt_scale);
    cfg->dt_proj_rank = cfg->dt_rank ? cfg->dt_rank : (cfg->d_model + 15) / 16;
    cfg->x_proj_dim = cfg->dt_proj_rank + 2 * cfg->d_state;
    cfg->conv_dim = cfg->d_inner;
    cfg->in_proj_dim = 2 * cfg->d_inner;
    cfg->nheads = 0;
    return true;
}

bool mt_model_config_finalize(mt_model_config *cfg, char *err, size_t n)
{
    REQUIRE(cfg->d_model > 0, "d_model must be positive, got %d", cfg->d_model);
    REQUIRE(cfg->n_layer > 0, "n_layer must be positive, got %d", cfg->n_layer);
    REQUIRE(cfg->vocab_size > 0, "vocab_size must be positive, got %d", cfg->vocab_size);
    REQUIRE(cfg->pad_vocab_size_multiple > 0, "pad_vocab_size_multiple must be positive, got %d",
            cfg->pad_vocab_size_multiple);
    REQUIRE(cfg->d_state > 0 && cfg->d_state <= 256, "d_state must be in [1, 256], got %d", cfg->d_state);
    REQUIRE(cfg->d_conv >= 1 && cfg->d_conv <= 4, "d_conv must be in [1, 4], got %d", cfg->d_conv);
    REQUIRE(cfg->expand > 0, "expand must be positive, got %d", cfg->expand);
    REQUIRE(cfg->rms_norm, "rms_norm = false (LayerNorm) is not supported");
    REQUIRE(cfg->residual_in_fp32, "residual_in_fp32 = false is not supported: the residual stream is fp32");
    REQUIRE(cfg->norm_eps > 0, "norm_eps must be positive, got %g", cfg->norm_eps);
    REQUIRE(cfg->dt_min > 0 && cfg->dt_max >= cfg->dt_min, "dt_min and dt_max must satisfy 0 < dt_min <= dt_max");
    REQUIRE(cfg->dt_init_floor >= 0, "dt_init_floor must not be negative");
    cfg->d_inner = cfg->expand * cfg->d_model;
    int m = cfg->pad_vocab_size_multiple;
    cfg->vocab_padded = (cfg->vocab_size + m - 1) / m * m;
    if (cfg->layer == MT_LAYER_MAMBA1)
        return finalize_mamba1(cfg, err, n);
    REQUIRE(cfg->layer == MT_LAYER_MAMBA2, "layer must be Mamba1 or Mamba2, got %d", (int)cfg->layer);
    return finalize_mamba2(cfg, err, n);
}

