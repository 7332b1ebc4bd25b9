#include "train/export.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/device.h"
#include "core/error.h"
#include "io/file_io.h"
#include "io/json_file.h"
#include "io/safetensors.h"
#include "io/torch_save.h"
#include "layers/config_json.h"
#include "train/pretrained.h"

#define PATH_LEN 4096

/* Writes text to dir/name through a temp file and a rename. */
static bool write_text(const char *dir, const char *name, const char *text, char *err, size_t errlen)
{
    char path[PATH_LEN], tmp[PATH_LEN + 8];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    if (!mt_write_file_synced(tmp, text, strlen(text), err, errlen))
        return false;
    if (rename(tmp, path) != 0)
        return mt_errorf(err, errlen, "%s: cannot rename into place: %s", path, strerror(errno));
    return true;
}

static bool write_config(const mt_model_config *cfg, bool hf, const char *out_dir, char *err, size_t errlen)
{
    json_t *j = hf ? mt_model_config_to_hf_json(cfg) : mt_model_config_to_json(cfg);
    char *text = mt_json_dumps(j, JSON_INDENT(2));
    json_decref(j);
    if (!text)
        mt_fatal("out of host memory writing config.json");
    bool ok = write_text(out_dir, "config.json", text, err, errlen);
    free(text);
    return ok;
}

bool mt_export(const char *src_dir, const char *format, const char *out_dir, char *err, size_t errlen)
{
    const bool hf = strcmp(format, "hf") == 0;
    if (!hf && strcmp(format, "reference") != 0)
        return mt_errorf(err, errlen, "export format \"%s\": must be reference or hf", format);
    mt_model_config cfg;
    if (!mt_pretrained_config(src_dir, &cfg, err, errlen))
        return false;
    if (mkdir(out_dir, 0755) != 0 && errno != EEXIST)
        return mt_errorf(err, errlen, "%s: cannot create: %s", out_dir, strerror(errno));
    mt_model m;
    mt_model_build(&m, &cfg, MT_CPU, MT_F32);
    bool ok = mt_pretrained_load(src_dir, &m, err, errlen);

    /* The parameters in declaration order, then the reference's tied head. */
    const mt_params *p = &m.params;
    mt_st_entry *entries = calloc((size_t)p->n + 1, sizeof *entries);
    int *same_as = calloc((size_t)p->n + 1, sizeof *same_as);
    char (*names)[MT_PARAM_NAME_MAX + 8] = calloc((size_t)p->n + 1, sizeof *names);
    if (!entries || !same_as || !names)
        mt_fatal("out of host memory exporting %s", src_dir);
    int n = 0, embedding = -1;
    for (int i = 0; i < p->n; i++, n++) {
        const mt_param *q = p->items[i];
        const bool is_embedding = &q->value == m.embedding;
        snprintf(names[n], sizeof names[n], "%s",
                 hf && is_embedding ? "backbone.embeddings.weight" : q->name);
        entries[n] = (mt_st_entry){names[n], MT_ST_F32, q->value.ndim, q->value.shape, q->value.data};
        same_as[n] = -1;
        if (is_embedding)
            embedding = n;
    }
    if (!hf && cfg.tie_embeddings) {
        snprintf(names[n], sizeof names[n], "lm_head.weight");
        entries[n] = entries[embedding];
        entries[n].name = names[n];
        same_as[n++] = embedding;
    }

    char path[PATH_LEN], tmp[PATH_LEN + 8];
    snprintf(path, sizeof path, "%s/%s", out_dir, hf ? "model.safetensors" : "pytorch_model.bin");
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    ok = ok && (hf ? mt_safetensors_write(tmp, entries, n, NULL, err, errlen)
                   : mt_torch_save(tmp, "pytorch_model", entries, same_as, n, err, errlen));
    if (ok && rename(tmp, path) != 0)
        ok = mt_errorf(err, errlen, "%s: cannot rename into place: %s", path, strerror(errno));
    ok = ok && write_config(&cfg, hf, out_dir, err, errlen) && mt_fsync_path(out_dir, err, errlen);
    free(names);
    free(same_as);
    free(entries);
    mt_model_release(&m);
    return ok;
}
