/* The model config as HF transformers' MambaConfig / Mamba2Config write it
 * (config.json with model_type "mamba" or "mamba2"), read and written. */
#include <limits.h>
#include <math.h>
#include <string.h>

#include "core/error.h"
#include "io/json_file.h"
#include "layers/config_json.h"

/* A key of transformers' config and where it goes; the kind of its value. */
typedef enum { HF_INT, HF_BOOL, HF_DOUBLE } hf_kind;

typedef struct hf_field {
    const char *name;
    hf_kind kind;
    size_t offset; /* into mt_model_config */
    int layers;    /* 1: Mamba-1 configs, 2: Mamba-2 configs, 3: both */
} hf_field;

#define HF(kind, key, field, layers) {key, kind, offsetof(mt_model_config, field), layers}

static const hf_field hf_fields[] = {
    HF(HF_INT, "hidden_size", d_model, 3),           HF(HF_INT, "num_hidden_layers", n_layer, 3),
    HF(HF_INT, "vocab_size", vocab_size, 3),         HF(HF_INT, "state_size", d_state, 3),
    HF(HF_INT, "conv_kernel", d_conv, 3),            HF(HF_INT, "expand", expand, 3),
    HF(HF_BOOL, "residual_in_fp32", residual_in_fp32, 3), HF(HF_BOOL, "tie_word_embeddings", tie_embeddings, 3),
    HF(HF_BOOL, "use_conv_bias", conv_bias, 3),      HF(HF_DOUBLE, "layer_norm_epsilon", norm_eps, 3),
    HF(HF_DOUBLE, "time_step_min", dt_min, 3),       HF(HF_DOUBLE, "time_step_max", dt_max, 3),
    HF(HF_DOUBLE, "time_step_floor", dt_init_floor, 3), HF(HF_DOUBLE, "time_step_scale", dt_scale, 1),
    HF(HF_INT, "head_dim", headdim, 2),              HF(HF_INT, "n_groups", ngroups, 2),
    HF(HF_INT, "chunk_size", chunk_size, 2),         HF(HF_BOOL, "rms_norm", rms_norm, 2),
};

#define N_HF (int)(sizeof hf_fields / sizeof hf_fields[0])

static bool read_hf_field(const json_t *v, const hf_field *f, mt_model_config *c, char *err, size_t errlen)
{
    char *p = (char *)c + f->offset;
    switch (f->kind) {
    case HF_INT:
        if (!json_is_integer(v) || json_integer_value(v) < INT_MIN || json_integer_value(v) > INT_MAX)
            return mt_errorf(err, errlen, "%s: must be an integer", f->name);
        *(int *)p = (int)json_integer_value(v);
        return true;
    case HF_BOOL:
        if (!json_is_boolean(v))
            return mt_errorf(err, errlen, "%s: must be true or false", f->name);
        *(bool *)p = json_is_true(v);
        return true;
    case HF_DOUBLE:
        if (!mt_json_number(v, (double *)p) || !isfinite(*(double *)p))
            return mt_errorf(err, errlen, "%s: must be a finite number", f->name);
        return true;
    }
    return false;
}

/* Settings this implementation builds one way only, with the value it needs. */
static bool check_fixed(const json_t *j, bool mamba2, char *err, size_t errlen)
{
    json_t *v;
    if ((v = json_object_get(j, "use_bias")) && !json_is_false(v))
        return mt_errorf(err, errlen, "use_bias: biases in in_proj and out_proj are not supported (must be false)");
    if ((v = json_object_get(j, "hidden_act")) && !(json_is_string(v) && strcmp(json_string_value(v), "silu") == 0))
        return mt_errorf(err, errlen, "hidden_act: only \"silu\" is supported");
    if (mamba2 && (v = json_object_get(j, "norm_before_gate")) && !json_is_false(v))
        return mt_errorf(err, errlen, "norm_before_gate: only false is supported");
    if (!mamba2 && (v = json_object_get(j, "time_step_init_scheme")) &&
        !(json_is_string(v) && strcmp(json_string_value(v), "random") == 0))
        return mt_errorf(err, errlen, "time_step_init_scheme: only \"random\" is supported");
    return true;
}

/* Mamba-1's time_step_rank ("auto" or an integer) and intermediate_size
 * (expand * hidden_size), Mamba-2's num_heads (its inner width over
 * head_dim) and time_step_limit ([low, high], high possibly absent or
 * infinite: the default (0, inf) is commonly left out of config.json). */
static bool read_derived(const json_t *j, mt_model_config *c, char *err, size_t errlen)
{
    json_t *v;
    if (c->layer == MT_LAYER_MAMBA1) {
        if ((v = json_object_get(j, "time_step_rank"))) {
            if (json_is_string(v) && strcmp(json_string_value(v), "auto") == 0)
                c->dt_rank = 0;
            else if (json_is_integer(v) && json_integer_value(v) >= 1 && json_integer_value(v) <= INT_MAX)
                c->dt_rank = (int)json_integer_value(v);
            else
                return mt_errorf(err, errlen, "time_step_rank: must be \"auto\" or a positive integer");
        }
        if ((v = json_object_get(j, "intermediate_size")) &&
            !(json_is_integer(v) && json_integer_value(v) == (json_int_t)c->expand * c->d_model))
            return mt_errorf(err, errlen, "intermediate_size: must be expand * hidden_size (%d)",
                             c->expand * c->d_model);
        return true;
    }
    if ((v = json_object_get(j, "num_heads")) &&
        !(json_is_integer(v) && c->headdim > 0 &&
          json_integer_value(v) * c->headdim == (json_int_t)c->expand * c->d_model))
        return mt_errorf(err, errlen, "num_heads: num_heads * head_dim must be expand * hidden_size (%d)",
                         c->expand * c->d_model);
    if ((v = json_object_get(j, "time_step_limit")) &&
        !mt_json_interval(v, "time_step_limit", true, &c->dt_limit_min, &c->dt_limit_max, err, errlen))
        return false;
    return true;
}

bool mt_model_config_from_hf_json(const json_t *j, mt_model_config *c, char *err, size_t errlen)
{
    if (!json_is_object(j))
        return mt_errorf(err, errlen, "the model config must be a JSON object");
    json_t *type = json_object_get(j, "model_type");
    const char *name = json_is_string(type) ? json_string_value(type) : "";
    const bool mamba2 = strcmp(name, "mamba2") == 0;
    if (!mamba2 && strcmp(name, "mamba") != 0)
        return mt_errorf(err, errlen, "model_type: \"%s\" is not a Mamba model (\"mamba\" or \"mamba2\")", name);
    static const char *const required[] = {"hidden_size", "num_hidden_layers", "vocab_size"};
    for (int i = 0; i < 3; i++)
        if (!json_object_get(j, required[i]))
            return mt_errorf(err, errlen, "%s: missing", required[i]);
    mt_model_config cfg;
    mt_model_config_defaults(&cfg);
    if (!mamba2)
        mt_model_config_use_mamba1(&cfg);
    /* transformers' vocab_size is the embedding's row count: already padded. */
    cfg.pad_vocab_size_multiple = 1;
    cfg.norm_eps = 1e-5;
    /* Other keys are transformers' own (token ids, output flags, versions):
     * they do not change the model, so they are passed over. */
    for (int i = 0; i < N_HF; i++) {
        json_t *v = json_object_get(j, hf_fields[i].name);
        if (v && (hf_fields[i].layers & (mamba2 ? 2 : 1)) && !read_hf_field(v, &hf_fields[i], &cfg, err, errlen))
            return false;
    }
    if (!check_fixed(j, mamba2, err, errlen) || !read_derived(j, &cfg, err, errlen))
        return false;
    mt_model_config_nearest_chunk(&cfg);
    if (!mt_model_config_finalize(&cfg, err, errlen))
        return false;
    *c = cfg;
    return true;
}

bool mt_model_config_from_any_json(const json_t *j, mt_model_config *c, char *err, size_t errlen)
{
    if (json_is_object(j) && json_object_get(j, "model_type"))
        return mt_model_config_from_hf_json(j, c, err, errlen);
    return mt_model_config_from_json(j, c, err, errlen);
}

json_t *mt_model_config_to_hf_json(const mt_model_config *c)
{
    const bool mamba2 = c->layer == MT_LAYER_MAMBA2;
    json_t *j = json_object();
    json_object_set_new(j, "model_type", json_string(mamba2 ? "mamba2" : "mamba"));
    json_object_set_new(j, "architectures", json_pack("[s]", mamba2 ? "Mamba2ForCausalLM" : "MambaForCausalLM"));
    json_object_set_new(j, "vocab_size", json_integer(c->vocab_padded));
    for (int i = 0; i < N_HF; i++) {
        const hf_field *f = &hf_fields[i];
        if (!(f->layers & (mamba2 ? 2 : 1)) || strcmp(f->name, "vocab_size") == 0)
            continue;
        const char *p = (const char *)c + f->offset;
        json_object_set_new(j, f->name, f->kind == HF_INT    ? json_integer(*(const int *)p)
                                        : f->kind == HF_BOOL ? json_boolean(*(const bool *)p)
                                                             : json_real(*(const double *)p));
    }
    json_object_set_new(j, "use_bias", json_false());
    json_object_set_new(j, "hidden_act", json_string("silu"));
    if (mamba2) {
        json_object_set_new(j, "num_heads", json_integer(c->nheads));
        json_object_set_new(j, "norm_before_gate", json_false());
        json_object_set_new(j, "time_step_limit", json_pack("[f,o]", c->dt_limit_min, mt_json_real(c->dt_limit_max)));
    } else {
        json_object_set_new(j, "intermediate_size", json_integer(c->d_inner));
        json_object_set_new(j, "time_step_rank", json_integer(c->dt_proj_rank));
        json_object_set_new(j, "time_step_init_scheme", json_string("random"));
    }
    return j;
}
