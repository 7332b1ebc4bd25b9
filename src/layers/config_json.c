#include "layers/config_json.h"

#include <limits.h>
#include <math.h>
#include <stddef.h>
#include <string.h>

#include "core/error.h"
#include "io/json_file.h"

/* The reference has no norm epsilon setting: its RMSNorms use this one. */
#define REFERENCE_NORM_EPS 1e-5

typedef enum { FIELD_INT, FIELD_BOOL, FIELD_DOUBLE } field_kind;

typedef struct field {
    const char *name;
    field_kind kind;
    size_t offset; /* into mt_model_config */
} field;

#define FIELD(kind, name) {#name, kind, offsetof(mt_model_config, name)}

static const field top_fields[] = {
    FIELD(FIELD_INT, d_model),          FIELD(FIELD_INT, n_layer),           FIELD(FIELD_INT, vocab_size),
    FIELD(FIELD_INT, pad_vocab_size_multiple), FIELD(FIELD_BOOL, rms_norm), FIELD(FIELD_BOOL, residual_in_fp32),
    FIELD(FIELD_BOOL, tie_embeddings),
};

/* ssm_cfg keys of the Mamba2 block, and of the Mamba1 block (which takes
 * dt_rank too, read on its own: "auto" or an integer). */
static const field mamba2_fields[] = {
    FIELD(FIELD_INT, d_state),     FIELD(FIELD_INT, d_conv),    FIELD(FIELD_INT, expand),
    FIELD(FIELD_INT, headdim),     FIELD(FIELD_INT, ngroups),   FIELD(FIELD_INT, chunk_size),
    FIELD(FIELD_DOUBLE, dt_min),   FIELD(FIELD_DOUBLE, dt_max), FIELD(FIELD_DOUBLE, dt_init_floor),
};

static const field mamba1_fields[] = {
    FIELD(FIELD_INT, d_state),     FIELD(FIELD_INT, d_conv),    FIELD(FIELD_INT, expand),
    FIELD(FIELD_DOUBLE, dt_min),   FIELD(FIELD_DOUBLE, dt_max), FIELD(FIELD_DOUBLE, dt_init_floor),
    FIELD(FIELD_DOUBLE, dt_scale), FIELD(FIELD_BOOL, conv_bias),
};

#define N_TOP (int)(sizeof top_fields / sizeof top_fields[0])
#define N_MAMBA2 (int)(sizeof mamba2_fields / sizeof mamba2_fields[0])
#define N_MAMBA1 (int)(sizeof mamba1_fields / sizeof mamba1_fields[0])

static json_t *field_to_json(const mt_model_config *c, const field *f)
{
    const char *p = (const char *)c + f->offset;
    switch (f->kind) {
    case FIELD_INT: return json_integer(*(const int *)p);
    case FIELD_BOOL: return json_boolean(*(const bool *)p);
    case FIELD_DOUBLE: return json_real(*(const double *)p);
    }
    return NULL;
}

static void set_fields(json_t *obj, const mt_model_config *c, const field *fields, int n)
{
    for (int i = 0; i < n; i++)
        json_object_set_new(obj, fields[i].name, field_to_json(c, &fields[i]));
}

/* The Mamba1 block's ssm_cfg. */
static json_t *mamba1_to_json(const mt_model_config *c)
{
    json_t *ssm = json_object();
    json_object_set_new(ssm, "layer", json_string("Mamba1"));
    set_fields(ssm, c, mamba1_fields, N_MAMBA1);
    json_object_set_new(ssm, "dt_rank", c->dt_rank ? json_integer(c->dt_rank) : json_string("auto"));
    return ssm;
}

/* The Mamba2 block's ssm_cfg. */
static json_t *mamba2_to_json(const mt_model_config *c)
{
    json_t *ssm = json_object();
    json_object_set_new(ssm, "layer", json_string("Mamba2"));
    set_fields(ssm, c, mamba2_fields, N_MAMBA2);
    /* The reference clamps dt whenever dt_limit is given at all (its check
     * compares against a tuple, and JSON gives a list), so the default is
     * left out. */
    if (c->dt_limit_min != 0.0 || !isinf(c->dt_limit_max))
        json_object_set_new(ssm, "dt_limit", json_pack("[f,o]", c->dt_limit_min, mt_json_real(c->dt_limit_max)));
    json_object_set_new(ssm, "A_init_range", json_pack("[f,f]", c->A_init_min, c->A_init_max));
    return ssm;
}

json_t *mt_model_config_to_json(const mt_model_config *c)
{
    json_t *ssm = c->layer == MT_LAYER_MAMBA1 ? mamba1_to_json(c) : mamba2_to_json(c);

    /* In MambaConfig's order, with the settings of what this implementation
     * builds: no MLP, no attention layers. */
    json_t *j = json_object();
    json_object_set_new(j, "d_model", json_integer(c->d_model));
    json_object_set_new(j, "d_intermediate", json_integer(0));
    json_object_set_new(j, "n_layer", json_integer(c->n_layer));
    json_object_set_new(j, "vocab_size", json_integer(c->vocab_size));
    json_object_set_new(j, "ssm_cfg", ssm);
    json_object_set_new(j, "attn_layer_idx", json_array());
    json_object_set_new(j, "attn_cfg", json_object());
    json_object_set_new(j, "rms_norm", json_boolean(c->rms_norm));
    json_object_set_new(j, "residual_in_fp32", json_boolean(c->residual_in_fp32));
    json_object_set_new(j, "fused_add_norm", json_true());
    json_object_set_new(j, "pad_vocab_size_multiple", json_integer(c->pad_vocab_size_multiple));
    json_object_set_new(j, "tie_embeddings", json_boolean(c->tie_embeddings));
    if (c->norm_eps != REFERENCE_NORM_EPS)
        json_object_set_new(j, "norm_epsilon", json_real(c->norm_eps));
    return j;
}

/* ------------------------------------------------------------------------ */

/* Reads v into the field f of c; prefix ("" or "ssm_cfg.") for messages. */
static bool read_field(const json_t *v, const field *f, mt_model_config *c, const char *prefix, char *err,
                       size_t errlen)
{
    char *p = (char *)c + f->offset;
    switch (f->kind) {
    case FIELD_INT:
        if (!json_is_integer(v) || json_integer_value(v) < INT_MIN || json_integer_value(v) > INT_MAX)
            return mt_errorf(err, errlen, "%s%s: must be an integer", prefix, f->name);
        *(int *)p = (int)json_integer_value(v);
        return true;
    case FIELD_BOOL:
        if (!json_is_boolean(v))
            return mt_errorf(err, errlen, "%s%s: must be true or false", prefix, f->name);
        *(bool *)p = json_is_true(v);
        return true;
    case FIELD_DOUBLE:
        if (!mt_json_number(v, (double *)p) || !isfinite(*(double *)p))
            return mt_errorf(err, errlen, "%s%s: must be a finite number", prefix, f->name);
        return true;
    }
    return false;
}

/* The field of fields[0..n) called key, or NULL. */
static const field *find_field(const field *fields, int n, const char *key)
{
    for (int i = 0; i < n; i++)
        if (strcmp(fields[i].name, key) == 0)
            return &fields[i];
    return NULL;
}

static const char *layer_name(mt_layer_kind layer)
{
    return layer == MT_LAYER_MAMBA1 ? "Mamba1" : "Mamba2";
}

/* ssm_cfg keys of the reference's blocks that this implementation builds in
 * one way only: accepted when they say that way. */
static bool read_fixed_ssm_key(const char *key, const json_t *v, mt_layer_kind layer, char *err, size_t errlen)
{
    static const struct {
        const char *name;
        mt_layer_kind layer;
        bool value;
    } fixed_bools[] = {{"D_has_hdim", MT_LAYER_MAMBA2, false}, {"rmsnorm", MT_LAYER_MAMBA2, true},
                       {"norm_before_gate", MT_LAYER_MAMBA2, false}, {"bias", MT_LAYER_MAMBA2, false},
                       {"conv_bias", MT_LAYER_MAMBA2, true},        {"bias", MT_LAYER_MAMBA1, false}};
    for (size_t i = 0; i < sizeof fixed_bools / sizeof fixed_bools[0]; i++)
        if (fixed_bools[i].layer == layer && strcmp(key, fixed_bools[i].name) == 0) {
            if (!json_is_boolean(v) || json_is_true(v) != fixed_bools[i].value)
                return mt_errorf(err, errlen, "ssm_cfg.%s: only %s is supported", key,
                                 fixed_bools[i].value ? "true" : "false");
            return true;
        }
    /* A kernel choice of the reference, same numbers. */
    if (strcmp(key, layer == MT_LAYER_MAMBA1 ? "use_fast_path" : "use_mem_eff_path") == 0) {
        if (!json_is_boolean(v))
            return mt_errorf(err, errlen, "ssm_cfg.%s: must be true or false", key);
        return true;
    }
    if (layer == MT_LAYER_MAMBA2 && strcmp(key, "conv_init") == 0) {
        if (!json_is_null(v))
            return mt_errorf(err, errlen, "ssm_cfg.conv_init: only null (the default conv init) is supported");
        return true;
    }
    if (layer == MT_LAYER_MAMBA1 && strcmp(key, "dt_init") == 0) {
        if (!json_is_string(v) || strcmp(json_string_value(v), "random") != 0)
            return mt_errorf(err, errlen, "ssm_cfg.dt_init: only \"random\" is supported");
        return true;
    }
    return mt_errorf(err, errlen, "ssm_cfg.%s: unknown key for the %s block", key, layer_name(layer));
}

/* Mamba1's dt_rank: "auto" (0 here) or a positive integer. */
static bool read_dt_rank(const json_t *v, mt_model_config *c, char *err, size_t errlen)
{
    if (json_is_string(v) && strcmp(json_string_value(v), "auto") == 0) {
        c->dt_rank = 0;
        return true;
    }
    if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > INT_MAX)
        return mt_errorf(err, errlen, "ssm_cfg.dt_rank: must be \"auto\" or a positive integer");
    c->dt_rank = (int)json_integer_value(v);
    return true;
}

/* ssm (NULL: the reference's default {}) over c; the block is ssm.layer. */
static bool read_ssm_cfg(const json_t *ssm, mt_model_config *c, char *err, size_t errlen)
{
    if (ssm && !json_is_object(ssm))
        return mt_errorf(err, errlen, "ssm_cfg: must be an object");
    json_t *layer = json_object_get(ssm, "layer");
    /* The reference builds a Mamba-1 block when layer is absent. */
    const char *name = json_is_string(layer) ? json_string_value(layer) : layer ? "(not a string)" : "Mamba1";
    if (strcmp(name, "Mamba1") == 0)
        mt_model_config_use_mamba1(c);
    else if (strcmp(name, "Mamba2") == 0)
        c->layer = MT_LAYER_MAMBA2;
    else
        return mt_errorf(err, errlen, "ssm_cfg.layer: \"%s\" is not supported (\"Mamba1\" or \"Mamba2\")", name);
    const bool mamba1 = c->layer == MT_LAYER_MAMBA1;
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)ssm, key, v)
    {
        const field *f = mamba1 ? find_field(mamba1_fields, N_MAMBA1, key) : find_field(mamba2_fields, N_MAMBA2, key);
        bool ok;
        if (strcmp(key, "layer") == 0 || (!mamba1 && strcmp(key, "d_ssm") == 0))
            ok = true; /* layer read above, d_ssm checked below */
        else if (f)
            ok = read_field(v, f, c, "ssm_cfg.", err, errlen);
        else if (mamba1 && strcmp(key, "dt_rank") == 0)
            ok = read_dt_rank(v, c, err, errlen);
        else if (!mamba1 && strcmp(key, "dt_limit") == 0)
            ok = mt_json_interval(v, "ssm_cfg.dt_limit", true, &c->dt_limit_min, &c->dt_limit_max, err, errlen);
        else if (!mamba1 && strcmp(key, "A_init_range") == 0)
            ok = mt_json_interval(v, "ssm_cfg.A_init_range", false, &c->A_init_min, &c->A_init_max, err,
                                       errlen);
        else
            ok = read_fixed_ssm_key(key, v, c->layer, err, errlen);
        if (!ok)
            return false;
    }
    /* The Mamba2 block's inner width, which the reference derives when null. */
    json_t *d_ssm = json_object_get(ssm, "d_ssm");
    if (d_ssm && !json_is_null(d_ssm) &&
        !(json_is_integer(d_ssm) && json_integer_value(d_ssm) == (json_int_t)c->expand * c->d_model))
        return mt_errorf(err, errlen, "ssm_cfg.d_ssm: only null or expand * d_model is supported");
    return true;
}

/* Top-level keys of MambaConfig for what this implementation lacks. */
static bool read_reference_key(const char *key, const json_t *v, char *err, size_t errlen)
{
    if (strcmp(key, "d_intermediate") == 0) {
        if (!json_is_integer(v) || json_integer_value(v) != 0)
            return mt_errorf(err, errlen, "d_intermediate: MLP blocks are not supported (must be 0)");
        return true;
    }
    if (strcmp(key, "attn_layer_idx") == 0) {
        if (!json_is_array(v) || json_array_size(v) != 0)
            return mt_errorf(err, errlen, "attn_layer_idx: attention layers are not supported (must be [])");
        return true;
    }
    if (strcmp(key, "attn_cfg") == 0) { /* unused without attention layers */
        if (!json_is_object(v))
            return mt_errorf(err, errlen, "attn_cfg: must be an object");
        return true;
    }
    if (strcmp(key, "fused_add_norm") == 0) { /* a kernel choice of the reference, same numbers */
        if (!json_is_boolean(v))
            return mt_errorf(err, errlen, "fused_add_norm: must be true or false");
        return true;
    }
    return mt_errorf(err, errlen, "%s: unknown key", key);
}

bool mt_model_config_from_json(const json_t *j, mt_model_config *c, char *err, size_t errlen)
{
    if (!json_is_object(j))
        return mt_errorf(err, errlen, "the model config must be a JSON object");
    static const char *const required[] = {"d_model", "n_layer", "vocab_size"};
    for (int i = 0; i < 3; i++)
        if (!json_object_get(j, required[i]))
            return mt_errorf(err, errlen, "%s: missing", required[i]);
    mt_model_config cfg;
    mt_model_config_defaults(&cfg);
    cfg.norm_eps = REFERENCE_NORM_EPS;
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)j, key, v)
    {
        const field *f = find_field(top_fields, N_TOP, key);
        if (f && !read_field(v, f, &cfg, "", err, errlen))
            return false;
        if (strcmp(key, "norm_epsilon") == 0) {
            if (!mt_json_number(v, &cfg.norm_eps) || !isfinite(cfg.norm_eps))
                return mt_errorf(err, errlen, "norm_epsilon: must be a finite number");
        } else if (!f && strcmp(key, "ssm_cfg") != 0 && !read_reference_key(key, v, err, errlen)) {
            return false;
        }
    }
    /* After the top level, which d_ssm is checked against. */
    if (!read_ssm_cfg(json_object_get(j, "ssm_cfg"), &cfg, err, errlen))
        return false;
    mt_model_config_nearest_chunk(&cfg);
    if (!mt_model_config_finalize(&cfg, err, errlen))
        return false;
    *c = cfg;
    return true;
}
