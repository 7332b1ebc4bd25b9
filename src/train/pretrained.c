#include "train/pretrained.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/device.h"
#include "core/error.h"
#include "io/file_io.h"
#include "io/json_file.h"
#include "io/safetensors.h"
#include "io/torch_checkpoint.h"
#include "layers/config_json.h"

#define PATH_LEN 4096
#define MAX_SHARDS 256

static bool exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

/* A chunk_size the kernels do not tile with is replaced by the nearest one
 * they do (config_json.h): said once, by the lead process. */
static void note_chunk_size(const char *path, const json_t *j, const mt_model_config *cfg)
{
    const json_t *given = json_object_get(j, "chunk_size");
    if (!given)
        given = json_object_get(json_object_get(j, "ssm_cfg"), "chunk_size");
    const char *rank = getenv("RANK");
    if (json_is_integer(given) && json_integer_value(given) != cfg->chunk_size && (!rank || !strcmp(rank, "0")))
        printf("%s: chunk_size %lld is outside the SSD kernels' [%d, %d]: running with %d (a tiling choice: the "
               "same model)\n", path, (long long)json_integer_value(given), MT_CHUNK_SIZE_MIN, MT_CHUNK_SIZE_MAX,
               cfg->chunk_size);
}

bool mt_pretrained_config(const char *dir, mt_model_config *cfg, char *err, size_t errlen)
{
    char path[PATH_LEN], why[512];
    if (!mt_path_join(path, sizeof path, dir, "config.json", err, errlen))
        return false;
    json_t *j = mt_json_load_file(path, 0, err, errlen);
    if (!j)
        return false;
    bool ok = mt_model_config_from_any_json(j, cfg, why, sizeof why);
    if (ok)
        note_chunk_size(path, j, cfg);
    json_decref(j);
    return ok || mt_errorf(err, errlen, "%s: %s", path, why);
}

/* ------------------------------------------------------------------------ */
/* The weight files of a directory behind one lookup by key. */

typedef struct weights {
    mt_st_file *shards[MAX_SHARDS]; /* safetensors: one file, or the index's shards */
    int nshards;
    mt_torch_file *torch; /* or pytorch_model.bin */
} weights;

/* One tensor as found: its file's path, dtype and shape. */
typedef struct found {
    const mt_st_tensor *st;
    const mt_st_file *st_file;
    const mt_torch_tensor *pt;
    mt_st_dtype dtype;
    int ndim;
    const int64_t *shape;
} found;

static bool lookup(const weights *w, const char *key, found *out)
{
    memset(out, 0, sizeof *out);
    if (w->torch) {
        if (!(out->pt = mt_torch_find(w->torch, key)))
            return false;
        out->dtype = out->pt->dtype;
        out->ndim = out->pt->ndim;
        out->shape = out->pt->shape;
        return true;
    }
    for (int i = 0; i < w->nshards; i++)
        if ((out->st = mt_safetensors_find(w->shards[i], key))) {
            out->st_file = w->shards[i];
            out->dtype = out->st->dtype;
            out->ndim = out->st->ndim;
            out->shape = out->st->shape;
            return true;
        }
    return false;
}

static const char *weights_path(const weights *w)
{
    return w->torch ? mt_torch_path(w->torch) : mt_safetensors_path(w->shards[0]);
}

static int weights_count(const weights *w)
{
    if (w->torch)
        return mt_torch_count(w->torch);
    int n = 0;
    for (int i = 0; i < w->nshards; i++)
        n += mt_safetensors_count(w->shards[i]);
    return n;
}

static const char *weights_name(const weights *w, int k)
{
    if (w->torch)
        return mt_torch_at(w->torch, k)->name;
    for (int i = 0; i < w->nshards; k -= mt_safetensors_count(w->shards[i]), i++)
        if (k < mt_safetensors_count(w->shards[i]))
            return mt_safetensors_at(w->shards[i], k)->name;
    return NULL;
}

static void weights_close(weights *w)
{
    for (int i = 0; i < w->nshards; i++)
        mt_safetensors_close(w->shards[i]);
    mt_torch_close(w->torch);
    memset(w, 0, sizeof *w);
}

/* The shards an index names (each once, in order of first mention). */
static bool open_index(weights *w, const char *dir, const char *index_path, char *err, size_t errlen)
{
    json_t *j = mt_json_load_file(index_path, 0, err, errlen);
    if (!j)
        return false;
    json_t *map = json_object_get(j, "weight_map");
    bool ok = json_is_object(map) || mt_errorf(err, errlen, "%s: no \"weight_map\" object", index_path);
    const char *key;
    json_t *v;
    json_object_foreach(map, key, v)
    {
        if (!ok)
            break;
        if (!json_is_string(v) || strchr(json_string_value(v), '/')) {
            ok = mt_errorf(err, errlen, "%s: weight_map[\"%s\"]: must be a file name in the directory", index_path,
                           key);
            break;
        }
        char path[PATH_LEN];
        bool seen = false;
        if (!mt_path_join(path, sizeof path, dir, json_string_value(v), err, errlen)) {
            ok = false;
            break;
        }
        for (int i = 0; i < w->nshards && !seen; i++)
            seen = strcmp(mt_safetensors_path(w->shards[i]), path) == 0;
        if (seen)
            continue;
        if (w->nshards == MAX_SHARDS) {
            ok = mt_errorf(err, errlen, "%s: more than %d shards", index_path, MAX_SHARDS);
            break;
        }
        if (!(w->shards[w->nshards] = mt_safetensors_open(path, err, errlen)))
            ok = false;
        else
            w->nshards++;
    }
    /* Every key the index promises is in the shard it names. */
    json_object_foreach(map, key, v)
    {
        if (!ok)
            break;
        found f;
        char path[PATH_LEN];
        snprintf(path, sizeof path, "%s/%s", dir, json_string_value(v));
        if (!lookup(w, key, &f) || strcmp(mt_safetensors_path(f.st_file), path) != 0)
            ok = mt_errorf(err, errlen, "%s: \"%s\" is not in %s, as its weight_map says", index_path, key,
                           json_string_value(v));
    }
    json_decref(j);
    return ok && (w->nshards > 0 || mt_errorf(err, errlen, "%s: the weight_map names no shard", index_path));
}

static bool weights_open(weights *w, const char *dir, char *err, size_t errlen)
{
    memset(w, 0, sizeof *w);
    char single[PATH_LEN], index[PATH_LEN], torch[PATH_LEN];
    if (!mt_path_join(single, sizeof single, dir, "model.safetensors", err, errlen) ||
        !mt_path_join(index, sizeof index, dir, "model.safetensors.index.json", err, errlen) ||
        !mt_path_join(torch, sizeof torch, dir, "pytorch_model.bin", err, errlen))
        return false;
    bool ok;
    if (exists(single))
        ok = (w->shards[0] = mt_safetensors_open(single, err, errlen)) && (w->nshards = 1);
    else if (exists(index))
        ok = open_index(w, dir, index, err, errlen);
    else if (exists(torch))
        ok = (w->torch = mt_torch_open(torch, err, errlen)) != NULL;
    else
        ok = mt_errorf(err, errlen, "%s: no model.safetensors, model.safetensors.index.json or pytorch_model.bin",
                       dir);
    if (!ok)
        weights_close(w);
    return ok;
}

/* ------------------------------------------------------------------------ */
/* Reading a tensor as doubles, whatever its float dtype. */

static double half_to_double(uint16_t h)
{
    const int sign = h >> 15, exp = (h >> 10) & 0x1f, frac = h & 0x3ff;
    double v = exp == 0 ? ldexp(frac, -24) : exp == 31 ? (frac ? NAN : INFINITY) : ldexp(frac | 0x400, exp - 25);
    return sign ? -v : v;
}

static bool read_as_double(const weights *w, const found *f, const char *key, double *out, int64_t numel, char *err,
                           size_t errlen)
{
    const size_t esize = mt_st_dtype_size(f->dtype), bytes = (size_t)numel * esize;
    unsigned char *raw = malloc(bytes ? bytes : 1);
    if (!raw)
        mt_fatal("out of host memory reading %zu bytes of \"%s\"", bytes, key);
    bool ok = f->pt ? mt_torch_read(w->torch, f->pt, raw, bytes, err, errlen)
                    : mt_safetensors_read(f->st_file, f->st, raw, bytes, err, errlen);
    for (int64_t i = 0; ok && i < numel; i++) {
        const unsigned char *p = raw + (size_t)i * esize;
        uint16_t u16;
        uint32_t u32;
        float f32;
        switch (f->dtype) {
        case MT_ST_F64: memcpy(&out[i], p, 8); break;
        case MT_ST_F32: memcpy(&f32, p, 4); out[i] = f32; break;
        case MT_ST_BF16:
            memcpy(&u16, p, 2);
            u32 = (uint32_t)u16 << 16;
            memcpy(&f32, &u32, 4);
            out[i] = f32;
            break;
        case MT_ST_F16: memcpy(&u16, p, 2); out[i] = half_to_double(u16); break;
        default:
            ok = mt_errorf(err, errlen, "%s: \"%s\": dtype %s is not a float dtype", weights_path(w), key,
                           mt_st_dtype_name(f->dtype));
        }
    }
    free(raw);
    return ok;
}

/* The file's key for parameter name: itself, or transformers' spelling. */
static bool find_param_key(const weights *w, const char *name, found *f, const char **key)
{
    static const char *const hf_names[][2] = {{"backbone.embedding.weight", "backbone.embeddings.weight"}};
    *key = name;
    if (lookup(w, name, f))
        return true;
    for (size_t i = 0; i < sizeof hf_names / sizeof hf_names[0]; i++)
        if (strcmp(name, hf_names[i][0]) == 0 && lookup(w, hf_names[i][1], f)) {
            *key = hf_names[i][1];
            return true;
        }
    return false;
}

/* q's values from the file into host (q's numel doubles): same shape, or
 * the embedding with fewer rows (zero padding rows). */
static bool load_param(const weights *w, const mt_model *m, const mt_param *q, double *host, const char **key,
                       char *err, size_t errlen)
{
    found f;
    char a[96], b[96];
    if (!find_param_key(w, q->name, &f, key))
        return mt_errorf(err, errlen, "%s: missing key \"%s\" (shape %s)", weights_path(w), q->name,
                         mt_dims_str(q->value.ndim, q->value.shape, a, sizeof a));
    const bool embedding = &q->value == m->embedding || &q->value == m->lm_head;
    bool same = f.ndim == q->value.ndim;
    for (int d = 0; same && d < f.ndim; d++)
        same = f.shape[d] == q->value.shape[d] || (embedding && d == 0 && f.shape[0] <= q->value.shape[0]);
    if (!same) {
        return mt_errorf(err, errlen, "%s: key \"%s\": shape %s in the file, %s in the model", weights_path(w), *key,
                         mt_dims_str(f.ndim, f.shape, a, sizeof a),
                         mt_dims_str(q->value.ndim, q->value.shape, b, sizeof b));
    }
    int64_t numel = 1;
    for (int d = 0; d < f.ndim; d++)
        numel *= f.shape[d];
    memset(host, 0, (size_t)mt_numel(&q->value) * sizeof *host);
    if (!read_as_double(w, &f, *key, host, numel, err, errlen))
        return false;
    /* Training from a NaN would only skip steps until the run stops. */
    for (int64_t i = 0; i < numel; i++)
        if (!isfinite(host[i]))
            return mt_errorf(err, errlen, "%s: \"%s\" holds %s at element %lld: refusing non-finite weights",
                             weights_path(w), *key, isnan(host[i]) ? "NaN" : "an infinity", (long long)i);
    return true;
}

/* A tied model's file may hold lm_head.weight too (the reference's
 * state_dict has it): it must be the embedding. */
static bool check_tied_head(const weights *w, const mt_model *m, const double *embedding, char *err, size_t errlen)
{
    found f;
    if (!m->cfg.tie_embeddings || !lookup(w, "lm_head.weight", &f))
        return true;
    const int64_t numel = (int64_t)f.shape[0] * (f.ndim == 2 ? f.shape[1] : 0);
    if (f.ndim != 2 || f.shape[1] != m->cfg.d_model || f.shape[0] > m->embedding->shape[0])
        return mt_errorf(err, errlen, "%s: lm_head.weight: not the shape of the tied embedding", weights_path(w));
    double *head = malloc((size_t)(numel ? numel : 1) * sizeof *head);
    if (!head)
        mt_fatal("out of host memory reading lm_head.weight");
    bool ok = read_as_double(w, &f, "lm_head.weight", head, numel, err, errlen);
    for (int64_t i = 0; ok && i < numel; i++)
        if (head[i] != embedding[i])
            ok = mt_errorf(err, errlen, "%s: lm_head.weight differs from the embedding, but config.json ties them",
                           weights_path(w));
    free(head);
    return ok;
}

bool mt_pretrained_load(const char *dir, mt_model *m, char *err, size_t errlen)
{
    const mt_params *p = &m->params;
    if (!p->allocated)
        return mt_errorf(err, errlen, "%s: the model's parameters are not allocated", dir);
    weights w;
    if (!weights_open(&w, dir, err, errlen))
        return false;
    size_t largest = 0;
    for (int i = 0; i < p->n; i++)
        if ((size_t)mt_numel(&p->items[i]->value) > largest)
            largest = (size_t)mt_numel(&p->items[i]->value);
    double *host = malloc((largest ? largest : 1) * sizeof *host);
    void *cast = malloc((largest ? largest : 1) * mt_dtype_size(p->dtype));
    if (!host || !cast)
        mt_fatal("out of host memory for a %zu-element staging buffer", largest);
    const char **used = calloc((size_t)p->n, sizeof *used);
    bool ok = used != NULL || mt_errorf(err, errlen, "out of host memory");
    for (int i = 0; ok && i < p->n; i++) {
        const mt_param *q = p->items[i];
        const int64_t n = mt_numel(&q->value);
        ok = load_param(&w, m, q, host, &used[i], err, errlen) &&
             (&q->value != m->embedding || check_tied_head(&w, m, host, err, errlen));
        if (!ok)
            break;
        if (p->dtype == MT_F64) {
            mt_device_copy(p->device, q->value.data, MT_CPU, host, (size_t)n * sizeof(double));
        } else {
            for (int64_t k = 0; k < n; k++)
                ((float *)cast)[k] = (float)host[k];
            mt_device_copy(p->device, q->value.data, MT_CPU, cast, (size_t)n * sizeof(float));
        }
    }
    /* Every key of the file went somewhere. */
    for (int k = 0; ok && k < weights_count(&w); k++) {
        const char *name = weights_name(&w, k);
        bool known = m->cfg.tie_embeddings && strcmp(name, "lm_head.weight") == 0;
        for (int i = 0; !known && i < p->n; i++)
            known = strcmp(used[i], name) == 0;
        if (!known)
            ok = mt_errorf(err, errlen, "%s: unexpected key \"%s\" (no such parameter in the model)", weights_path(&w),
                           name);
    }
    free(used);
    free(cast);
    free(host);
    weights_close(&w);
    return ok;
}
