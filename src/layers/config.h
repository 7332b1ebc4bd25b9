/* The model configuration, its fields named as the reference's config.json
 * (and ssm_cfg) so that a released checkpoint's config maps one to one. */
#ifndef MT_CONFIG_H
#define MT_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The SSD kernels' chunk lengths. */
#define MT_CHUNK_SIZE_MIN 16
#define MT_CHUNK_SIZE_MAX 256

/* ssm_cfg.layer: which mixer block every layer is. */
typedef enum mt_layer_kind { MT_LAYER_MAMBA2, MT_LAYER_MAMBA1 } mt_layer_kind;

typedef struct mt_model_config {
    mt_layer_kind layer;
    int d_model, n_layer, vocab_size, pad_vocab_size_multiple;
    int d_state, d_conv, expand;
    bool rms_norm, residual_in_fp32, tie_embeddings, conv_bias;
    double norm_eps;
    double dt_min, dt_max, dt_init_floor; /* the dt init range */

    /* Mamba-2 only. */
    double dt_limit_min, dt_limit_max; /* the clamp in the forward: 0 and INFINITY for none */
    double A_init_min, A_init_max;     /* A_init_range */
    int headdim, ngroups, chunk_size;

    /* Mamba-1 only. */
    int dt_rank;     /* R, the width of the low-rank dt projection; 0 is "auto": ceil(d_model / 16) */
    double dt_scale; /* dt_proj.weight is drawn from U(+-dt_scale / sqrt(R)) */

    /* Derived by mt_model_config_finalize. conv_dim and in_proj_dim are the
     * conv's channels and in_proj's rows of either block; nheads is Mamba-2's
     * and dt_proj_rank (R resolved) and x_proj_dim (R + 2 d_state) Mamba-1's,
     * 0 for the other block. */
    int d_inner, nheads, conv_dim, in_proj_dim, vocab_padded;
    int dt_proj_rank, x_proj_dim;
} mt_model_config;

/* The reference Mamba-2 defaults (mamba2-130m sizes). */
void mt_model_config_defaults(mt_model_config *cfg);

/* Switches cfg to the Mamba-1 block with the reference Mamba-1 block's own
 * defaults where they differ from Mamba-2's (d_state 16). */
void mt_model_config_use_mamba1(mt_model_config *cfg);

/* Validates and fills the derived fields. On a bad value returns false with a
 * message naming the field in err. */
bool mt_model_config_finalize(mt_model_config *cfg, char *err, size_t n);

/* chunk_size is how the SSD kernels tile the sequence, not part of the
 * weights: a released model's value outside [MT_CHUNK_SIZE_MIN,
 * MT_CHUNK_SIZE_MAX] becomes the nearest one inside (the same model). */
void mt_model_config_nearest_chunk(mt_model_config *cfg);

/* The model's parameter count (a finalized cfg, tp_size 1), in checked
 * 64-bit arithmetic: false with the sizes named in err when it overflows. */
bool mt_model_config_param_count(const mt_model_config *cfg, int64_t *count, char *err, size_t n);

#endif
