#include "layers/config.h"

#include <limits.h>
#include <math.h>
#include <stdint.h>
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

void mt_model_config_nearest_chunk(mt_model_config *cfg)
{
    if (cfg->chunk_size < MT_CHUNK_SIZE_MIN)
        cfg->chunk_size = MT_CHUNK_SIZE_MIN;
    if (cfg->chunk_size > MT_CHUNK_SIZE_MAX)
        cfg->chunk_size = MT_CHUNK_SIZE_MAX;
}

#define REQUIRE(cond, ...)                                                                                      \
    do {                                                                                                        \
        if (!(cond)) {                                                                                          \
            snprintf(err, n, __VA_ARGS__);                                                                      \
            return false;                                                                                       \
        }                                                                                                       \
    } while (0)

/* A derived width as an int: computed in 64 bits by the caller, it must fit
 * the int fields (and the 32-bit column counts of the kernels). */
static bool fits_int(int64_t v, int *out, const char *what, char *err, size_t n)
{
    REQUIRE(v > 0 && v <= INT_MAX, "%s = %lld is out of range (at most %d)", what, (long long)v, INT_MAX);
    *out = (int)v;
    return true;
}

static bool finalize_mamba2(mt_model_config *cfg, char *err, size_t n)
{
    REQUIRE(cfg->headdim > 0, "headdim must be positive, got %d", cfg->headdim);
    REQUIRE(cfg->chunk_size >= MT_CHUNK_SIZE_MIN && cfg->chunk_size <= MT_CHUNK_SIZE_MAX,
            "chunk_size must be in [%d, %d], got %d", MT_CHUNK_SIZE_MIN, MT_CHUNK_SIZE_MAX, cfg->chunk_size);
    REQUIRE(cfg->conv_bias, "conv_bias = false is only built for the Mamba-1 block");
    REQUIRE(cfg->dt_limit_min >= 0 && cfg->dt_limit_max > cfg->dt_limit_min,
            "dt_limit must be an interval in [0, inf], got (%g, %g)", cfg->dt_limit_min, cfg->dt_limit_max);
    REQUIRE(cfg->A_init_min > 0 && cfg->A_init_max >= cfg->A_init_min && isfinite(cfg->A_init_max),
            "A_init_range must satisfy 0 < min <= max, got (%g, %g)", cfg->A_init_min, cfg->A_init_max);
    REQUIRE(cfg->d_inner % cfg->headdim == 0, "headdim %d does not divide d_inner = expand * d_model = %d",
            cfg->headdim, cfg->d_inner);
    cfg->nheads = cfg->d_inner / cfg->headdim;
    REQUIRE(cfg->ngroups > 0 && cfg->nheads % cfg->ngroups == 0, "ngroups %d does not divide nheads %d",
            cfg->ngroups, cfg->nheads);
    const int64_t bc = 2 * (int64_t)cfg->ngroups * cfg->d_state;
    if (!fits_int(cfg->d_inner + bc, &cfg->conv_dim, "conv_dim (d_inner + 2 ngroups d_state)", err, n) ||
        !fits_int((int64_t)cfg->d_inner + cfg->conv_dim + cfg->nheads, &cfg->in_proj_dim,
                  "in_proj rows (2 d_inner + 2 ngroups d_state + nheads)", err, n))
        return false;
    cfg->dt_proj_rank = cfg->x_proj_dim = 0;
    return true;
}

static bool finalize_mamba1(mt_model_config *cfg, char *err, size_t n)
{
    REQUIRE(cfg->dt_rank >= 0, "dt_rank must be positive, or 0 for \"auto\" (ceil(d_model / 16)), got %d",
            cfg->dt_rank);
    REQUIRE(cfg->dt_scale > 0 && isfinite(cfg->dt_scale), "dt_scale must be positive, got %g", cfg->dt_scale);
    cfg->dt_proj_rank = cfg->dt_rank ? cfg->dt_rank : (int)(((int64_t)cfg->d_model + 15) / 16);
    if (!fits_int((int64_t)cfg->dt_proj_rank + 2 * (int64_t)cfg->d_state, &cfg->x_proj_dim,
                  "x_proj rows (dt_rank + 2 d_state)", err, n) ||
        !fits_int(2 * (int64_t)cfg->d_inner, &cfg->in_proj_dim, "in_proj rows (2 d_inner)", err, n))
        return false;
    cfg->conv_dim = cfg->d_inner;
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
    REQUIRE(cfg->norm_eps > 0 && isfinite(cfg->norm_eps), "norm_eps must be positive, got %g", cfg->norm_eps);
    REQUIRE(cfg->dt_min > 0 && cfg->dt_max >= cfg->dt_min && isfinite(cfg->dt_max),
            "dt_min and dt_max must satisfy 0 < dt_min <= dt_max");
    REQUIRE(cfg->dt_init_floor >= 0 && isfinite(cfg->dt_init_floor), "dt_init_floor must not be negative");
    const int64_t m = cfg->pad_vocab_size_multiple;
    if (!fits_int((int64_t)cfg->expand * cfg->d_model, &cfg->d_inner, "d_inner (expand * d_model)", err, n) ||
        !fits_int(((int64_t)cfg->vocab_size + m - 1) / m * m, &cfg->vocab_padded,
                  "the padded vocabulary (vocab_size rounded up to pad_vocab_size_multiple)", err, n))
        return false;
    bool ok;
    if (cfg->layer == MT_LAYER_MAMBA1) {
        ok = finalize_mamba1(cfg, err, n);
    } else {
        REQUIRE(cfg->layer == MT_LAYER_MAMBA2, "layer must be Mamba1 or Mamba2, got %d", (int)cfg->layer);
        ok = finalize_mamba2(cfg, err, n);
    }
    int64_t count;
    return ok && mt_model_config_param_count(cfg, &count, err, n);
}

/* Checked 64-bit arithmetic for the parameter count. */
static bool add_product(int64_t *sum, int64_t a, int64_t b)
{
    int64_t p;
    return !__builtin_mul_overflow(a, b, &p) && !__builtin_add_overflow(*sum, p, sum);
}

bool mt_model_config_param_count(const mt_model_config *cfg, int64_t *count, char *err, size_t n)
{
    const int64_t d = cfg->d_model, di = cfg->d_inner, w = cfg->d_conv;
    int64_t layer = 0;
    bool ok = add_product(&layer, 1, d); /* the block's norm */
    if (cfg->layer == MT_LAYER_MAMBA1) {
        const int64_t r = cfg->dt_proj_rank;
        ok = ok && add_product(&layer, cfg->in_proj_dim, d) && add_product(&layer, di, w) &&
             add_product(&layer, cfg->conv_bias ? di : 0, 1) && add_product(&layer, cfg->x_proj_dim, di) &&
             add_product(&layer, di, r) && add_product(&layer, di, 1) && add_product(&layer, di, cfg->d_state) &&
             add_product(&layer, di, 1) && add_product(&layer, d, di);
    } else {
        ok = ok && add_product(&layer, cfg->in_proj_dim, d) && add_product(&layer, cfg->conv_dim, w + 1) &&
             add_product(&layer, 3, cfg->nheads) && add_product(&layer, di, 1) && add_product(&layer, d, di);
    }
    int64_t total = 0;
    ok = ok && add_product(&total, layer, cfg->n_layer) && add_product(&total, 1, d) &&
         add_product(&total, cfg->tie_embeddings ? 1 : 2, (int64_t)cfg->vocab_padded * d);
    REQUIRE(ok, "d_model %d, n_layer %d, expand %d, vocab_size %d: the parameter count overflows 64 bits",
            cfg->d_model, cfg->n_layer, cfg->expand, cfg->vocab_size);
    *count = total;
    return true;
}
