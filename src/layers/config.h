/* The model configuration, its fields named as the reference's config.json
 * (and ssm_cfg) so that a released checkpoint's config maps one to one. */
#ifndef MT_CONFIG_H
#define MT_CONFIG_H

#include <stdbool.h>
#include <stddef.h>

typedef struct mt_model_config {
    int d_model, n_layer, vocab_size, pad_vocab_size_multiple;
    int d_state, d_conv, expand, headdim, ngroups, chunk_size;
    bool rms_norm, residual_in_fp32, tie_embeddings;
    double norm_eps;
    double dt_min, dt_max, dt_init_floor; /* the dt init range */
    double dt_limit_min, dt_limit_max;    /* the clamp in the forward: 0 and INFINITY for none */
    double A_init_min, A_init_max;        /* A_init_range */

    /* Derived by mt_model_config_finalize. */
    int d_inner, nheads, conv_dim, in_proj_dim, vocab_padded;
} mt_model_config;

/* The reference Mamba-2 defaults (mamba2-130m sizes). */
void mt_model_config_defaults(mt_model_config *cfg);

/* Validates and fills the derived fields. On a bad value returns false with a
 * message naming the field in err. */
bool mt_model_config_finalize(mt_model_config *cfg, char *err, size_t n);

#endif
