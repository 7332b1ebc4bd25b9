#include "train/checkpoint.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/device.h"
#include "core/error.h"
#include "io/file_io.h"
#include "io/json_file.h"
#include "io/safetensors.h"

#define PATH_LEN 4096
#define KEY_LEN (MT_PARAM_NAME_MAX + 16)
#define MANIFEST "manifest.json"
#define MODEL_FILE "model.safetensors"
#define OPTIMIZER_FILE "optimizer.safetensors"
#define TRAINER_FILE "trainer.json"
#define CONFIG_FILE "config.json"
#define MANIFEST_FORMAT "mamba-train checkpoint"
#define MANIFEST_VERSION 1

static const char *const adam_suffixes[2] = {".exp_avg", ".exp_avg_sq"};

static bool verify_manifest(const char *dir, bool check_crc, char *err, size_t errlen);

/* A checkpoint directory's step: the name must be exactly as step_dir
 * writes it ("step_" and 6 or more digits); -1 otherwise. */
static int64_t parse_step(const char *name)
{
    if (strncmp(name, "step_", 5) != 0 || name[5] == '\0')
        return -1;
    int64_t step = 0;
    for (const char *c = name + 5; *c; c++) {
        if (*c < '0' || *c > '9' || step > (INT64_MAX - 9) / 10)
            return -1;
        step = step * 10 + (*c - '0');
    }
    char canonical[32];
    snprintf(canonical, sizeof canonical, "step_%06" PRId64, step);
    return strcmp(canonical, name) == 0 ? step : -1;
}

/* Leftovers of an interrupted save: step_*.tmp (never renamed) and step_*.old
 * (a replaced checkpoint not yet deleted, its replacement in place: see
 * restore_interrupted). */
static bool is_leftover(const char *name)
{
    size_t n = strlen(name);
    return strncmp(name, "step_", 5) == 0 && n > 9 &&
           (strcmp(name + n - 4, ".tmp") == 0 || strcmp(name + n - 4, ".old") == 0);
}

/* Whether path exists; one that cannot be checked counts as taken, so it is
 * left alone. */
static bool path_taken(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0 || errno != ENOENT;
}

/* Removes a file or a directory tree. */
static bool remove_tree(const char *path)
{
    struct stat st;
    if (lstat(path, &st) != 0)
        return errno == ENOENT;
    if (!S_ISDIR(st.st_mode))
        return unlink(path) == 0;
    DIR *d = opendir(path);
    if (!d)
        return false;
    bool ok = true;
    struct dirent *e;
    char child[PATH_LEN];
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        ok = mt_path_join(child, sizeof child, path, e->d_name, NULL, 0) && remove_tree(child) && ok;
    }
    closedir(d);
    return rmdir(path) == 0 && ok;
}

/* A step_NNNNNN.old without its step_NNNNNN is the only copy of a
 * checkpoint whose replacement stopped between the save's two renames: it
 * is renamed back. Another rank listing at the same time may do it first. */
static bool restore_interrupted(const char *out_dir, char *err, size_t errlen)
{
    DIR *d = opendir(out_dir);
    if (!d)
        return errno == ENOENT ||
               mt_errorf(err, errlen, "%s: cannot list the checkpoint directory: %s", out_dir, strerror(errno));
    bool ok = true;
    struct dirent *e;
    char name[PATH_LEN], old[PATH_LEN], final[PATH_LEN];
    while (ok && (e = readdir(d)) != NULL) {
        const size_t n = strlen(e->d_name);
        if (n <= 4 || n >= sizeof name || strcmp(e->d_name + n - 4, ".old") != 0)
            continue;
        memcpy(name, e->d_name, n - 4);
        name[n - 4] = '\0';
        if (parse_step(name) < 0 || !mt_path_join(old, sizeof old, out_dir, e->d_name, NULL, 0) ||
            !mt_path_join(final, sizeof final, out_dir, name, NULL, 0) || path_taken(final))
            continue;
        if (rename(old, final) == 0)
            fprintf(stderr, "mamba-train: warning: %s was the only copy of a checkpoint whose replacement was "
                    "interrupted: restored as %s\n", old, final);
        else if (!(errno == ENOENT && path_taken(final)))
            ok = mt_errorf(err, errlen, "%s: cannot restore this only copy of an interrupted save's checkpoint to %s: "
                           "%s", old, final, strerror(errno));
    }
    closedir(d);
    return ok;
}

static int by_step_descending(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x < y) - (x > y);
}

/* The steps of out_dir's checkpoint directories, newest first (*steps is
 * malloc'ed; none when out_dir does not exist). With remove_leftovers set,
 * also deletes the leftovers of interrupted saves. */
static bool list_steps(const char *out_dir, bool remove_leftovers, int64_t **steps, int *n, char *err,
                       size_t errlen)
{
    *steps = NULL;
    *n = 0;
    if (!restore_interrupted(out_dir, err, errlen))
        return false;
    DIR *d = opendir(out_dir);
    if (!d)
        return errno == ENOENT ||
               mt_errorf(err, errlen, "%s: cannot list the checkpoint directory: %s", out_dir, strerror(errno));
    int cap = 0;
    bool ok = true;
    struct dirent *e;
    char path[PATH_LEN];
    while (ok && (e = readdir(d)) != NULL) {
        int64_t step = parse_step(e->d_name);
        if (step >= 0 && mt_path_join(path, sizeof path, out_dir, e->d_name, NULL, 0)) {
            struct stat st;
            if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode))
                continue;
            if (*n == cap) {
                cap = cap ? 2 * cap : 16;
                int64_t *grown = realloc(*steps, (size_t)cap * sizeof *grown);
                if (!grown) {
                    ok = mt_errorf(err, errlen, "%s: out of memory listing checkpoints", out_dir);
                    break;
                }
                *steps = grown;
            }
            (*steps)[(*n)++] = step;
        } else if (remove_leftovers && is_leftover(e->d_name) &&
                   mt_path_join(path, sizeof path, out_dir, e->d_name, NULL, 0) &&
                   !remove_tree(path)) {
            ok = mt_errorf(err, errlen, "%s: cannot remove the leftover of an interrupted save: %s", path,
                           strerror(errno));
        }
    }
    closedir(d);
    if (!ok) {
        free(*steps);
        *steps = NULL;
        *n = 0;
        return false;
    }
    if (*n > 0) /* qsort's base must not be NULL, even for no elements */
        qsort(*steps, (size_t)*n, sizeof **steps, by_step_descending);
    return true;
}

static void step_dir(char *out, const char *out_dir, int64_t step)
{
    snprintf(out, PATH_LEN, "%s/step_%06" PRId64, out_dir, step);
}

/* ------------------------------------------------------------------------ */
/* Save */

static mt_st_dtype st_dtype(mt_dtype dt)
{
    return dt == MT_F64 ? MT_ST_F64 : dt == MT_BF16 ? MT_ST_BF16 : dt == MT_I32 ? MT_ST_I32 : MT_ST_F32;
}

/* A flat buffer of p as host memory: the buffer itself on the CPU, else a
 * malloc'ed copy (*copied set). */
static const char *host_view(const mt_params *p, const void *flat, bool *copied)
{
    *copied = p->device != MT_CPU;
    if (!*copied)
        return flat;
    size_t bytes = p->flat_size * mt_dtype_size(p->dtype);
    void *host = malloc(bytes ? bytes : 1);
    if (!host)
        mt_fatal("out of host memory copying %zu bytes of parameters for a checkpoint", bytes);
    mt_device_copy(MT_CPU, host, p->device, flat, bytes);
    return host;
}

/* Writes the parameters' slices of the flat buffers bufs[0..nbuf) as one
 * safetensors file; buffer b's tensors are named "<param><suffixes[b]>". */
static bool write_params(const char *path, const mt_params *p, void *const *bufs, const char *const *suffixes,
                         int nbuf, char *err, size_t errlen)
{
    const size_t esize = mt_dtype_size(p->dtype);
    const int n = p->n * nbuf;
    mt_st_entry *entries = calloc((size_t)(n ? n : 1), sizeof *entries);
    char(*names)[KEY_LEN] = calloc((size_t)(n ? n : 1), KEY_LEN);
    const char *host[2] = {0};
    bool copied[2] = {0};
    bool ok = entries && names;
    if (!ok)
        mt_errorf(err, errlen, "%s: out of memory", path);
    for (int b = 0; ok && b < nbuf; b++)
        host[b] = host_view(p, bufs[b], &copied[b]);
    for (int i = 0; ok && i < p->n; i++) {
        const mt_param *q = p->items[i];
        for (int b = 0; b < nbuf; b++) {
            int k = i * nbuf + b;
            snprintf(names[k], KEY_LEN, "%s%s", q->name, suffixes[b]);
            entries[k] = (mt_st_entry){names[k], st_dtype(p->dtype), q->value.ndim, q->value.shape,
                                       host[b] + q->offset * esize};
        }
    }
    json_t *meta = json_pack("{s:s}", "format", "pt"); /* what HF transformers looks for */
    ok = ok && mt_safetensors_write(path, entries, n, meta, err, errlen);
    json_decref(meta);
    for (int b = 0; b < nbuf; b++)
        if (copied[b])
            free((void *)host[b]);
    free(entries);
    free(names);
    return ok;
}

static bool write_json(const char *path, const json_t *j, char *err, size_t errlen)
{
    char *text = mt_json_dumps(j, JSON_INDENT(2) | JSON_REAL_PRECISION(17));
    if (!text)
        return mt_errorf(err, errlen, "%s: cannot encode the JSON (not an object?)", path);
    size_t n = strlen(text);
    text[n] = '\n'; /* replaces the terminator: the file ends with a newline */
    bool ok = mt_write_file_synced(path, text, n + 1, err, errlen);
    free(text);
    return ok;
}

/* manifest.json in dir: size and CRC-32 of each of the files. */
static bool write_manifest(const char *dir, int64_t step, const char *const *files, int nfiles, char *err,
                           size_t errlen)
{
    json_t *list = json_object();
    json_t *manifest = json_pack("{s:s, s:i, s:I, s:o}", "format", MANIFEST_FORMAT, "version", MANIFEST_VERSION,
                                 "step", (json_int_t)step, "files", list);
    bool ok = manifest != NULL;
    char path[PATH_LEN];
    for (int i = 0; ok && i < nfiles; i++) {
        uint64_t size;
        uint32_t crc;
        ok = mt_path_join(path, sizeof path, dir, files[i], err, errlen) &&
             mt_file_crc32(path, &size, &crc, err, errlen) &&
             json_object_set_new(list, files[i], json_pack("{s:I, s:I}", "size", (json_int_t)size, "crc32",
                                                           (json_int_t)crc)) == 0;
    }
    ok = ok && mt_path_join(path, sizeof path, dir, MANIFEST, err, errlen) && write_json(path, manifest, err, errlen);
    json_decref(manifest);
    return ok;
}

/* Every file of a checkpoint into dir (which exists and is empty). */
static bool write_checkpoint_files(const char *dir, int64_t step, const mt_params *p, bool with_optimizer,
                                   const json_t *trainer_state, const json_t *model_config, char *err, size_t errlen)
{
    const char *files[4] = {MODEL_FILE, TRAINER_FILE, CONFIG_FILE, OPTIMIZER_FILE};
    char path[PATH_LEN];
    void *values[1] = {p->values}, *moments[2] = {p->adam_m, p->adam_v};
    const char *no_suffix[1] = {""};
    bool ok = mt_path_join(path, sizeof path, dir, MODEL_FILE, err, errlen) &&
              write_params(path, p, values, no_suffix, 1, err, errlen);
    if (ok && with_optimizer)
        ok = mt_path_join(path, sizeof path, dir, OPTIMIZER_FILE, err, errlen) &&
             write_params(path, p, moments, adam_suffixes, 2, err, errlen);
    ok = ok && mt_path_join(path, sizeof path, dir, TRAINER_FILE, err, errlen) &&
         write_json(path, trainer_state, err, errlen);
    ok = ok && mt_path_join(path, sizeof path, dir, CONFIG_FILE, err, errlen) &&
         write_json(path, model_config, err, errlen);
    ok = ok && write_manifest(dir, step, files, with_optimizer ? 4 : 3, err, errlen);
    return ok && mt_fsync_path(dir, err, errlen);
}

/* Deletes the valid checkpoints of out_dir but the newest keep (*deleted:
 * how many). known_valid is a step that verifies by construction (the one
 * just written; -1: none). A damaged checkpoint is neither counted nor
 * deleted: nothing here could read it, so nothing here decides that it is
 * worthless (a warning). Damage here is what the manifest and the file
 * sizes show: a CRC pass would read every old checkpoint at every save. */
static bool delete_valid_beyond(const char *out_dir, int keep, int64_t known_valid, int *deleted, char *err,
                                size_t errlen)
{
    int64_t *steps;
    int n;
    *deleted = 0;
    if (!list_steps(out_dir, false, &steps, &n, err, errlen))
        return false;
    char path[PATH_LEN], why[1024];
    int kept = 0;
    bool ok = true;
    for (int i = 0; i < n; i++) {
        step_dir(path, out_dir, steps[i]);
        if (steps[i] != known_valid && !verify_manifest(path, false, why, sizeof why))
            fprintf(stderr, "mamba-train: warning: the damaged checkpoint %s is left in place, not counted among "
                    "the kept ones: %s\n", path, why);
        else if (kept < keep)
            kept++;
        else if (remove_tree(path))
            ++*deleted;
        else
            ok = mt_errorf(err, errlen, "%s: cannot delete the checkpoint: %s", path, strerror(errno));
    }
    free(steps);
    return ok;
}

/* keep_last after a save of step saved. A checkpoint that cannot be deleted
 * costs disk space, not the save: it is a warning. */
static void prune(const char *out_dir, int64_t saved, int keep_last)
{
    char err[PATH_LEN + 256];
    int deleted;
    if (!delete_valid_beyond(out_dir, keep_last, saved, &deleted, err, sizeof err))
        fprintf(stderr, "mamba-train: warning: old checkpoints not pruned: %s\n", err);
}

bool mt_checkpoint_delete_valid(const char *out_dir, int *deleted, char *err, size_t errlen)
{
    return delete_valid_beyond(out_dir, 0, -1, deleted, err, errlen);
}

/* Moves the damaged checkpoint dir to dir.damaged (or dir.damaged.N, the
 * first free one), a name no save deletes. */
static bool move_damaged_aside(const char *dir, const char *why, char *err, size_t errlen)
{
    char aside[PATH_LEN];
    for (int i = 0; i < 1000; i++) {
        if (i == 0)
            snprintf(aside, sizeof aside, "%s.damaged", dir);
        else
            snprintf(aside, sizeof aside, "%s.damaged.%d", dir, i);
        if (path_taken(aside))
            continue;
        if (rename(dir, aside) != 0)
            return mt_errorf(err, errlen, "%s: cannot move the damaged checkpoint aside to %s: %s", dir, aside,
                             strerror(errno));
        fprintf(stderr, "mamba-train: warning: %s does not verify (%s): moved aside to %s\n", dir, why, aside);
        return true;
    }
    return mt_errorf(err, errlen, "%s: damaged, and %s.damaged to .damaged.999 are all taken", dir, dir);
}

/* Frees the name final for a new checkpoint: a valid checkpoint there is
 * moved to old (*replacing: deleted once the new one is in place), a damaged
 * one moved aside for good. */
static bool free_the_name(const char *final, const char *old, bool *replacing, char *err, size_t errlen)
{
    *replacing = false;
    if (!path_taken(final))
        return true;
    char why[1024];
    if (!mt_checkpoint_verify(final, why, sizeof why))
        return move_damaged_aside(final, why, err, errlen);
    if (rename(final, old) != 0)
        return mt_errorf(err, errlen, "%s: cannot move the existing checkpoint aside to %s: %s", final, old,
                         strerror(errno));
    *replacing = true;
    return true;
}

bool mt_checkpoint_save(const char *out_dir, int64_t step, const mt_params *p, bool with_optimizer,
                        const json_t *trainer_state, const json_t *model_config, int keep_last, char *path_out,
                        size_t path_len, char *err, size_t errlen)
{
    if (step < 0)
        return mt_errorf(err, errlen, "%s: checkpoint step %" PRId64 " is negative", out_dir, step);
    if (!p->allocated)
        return mt_errorf(err, errlen, "%s: the parameter store is not allocated", out_dir);
    if (!json_is_object(trainer_state) || !json_is_object(model_config))
        return mt_errorf(err, errlen, "%s: trainer state and model config must be JSON objects", out_dir);
    if (mkdir(out_dir, 0755) != 0 && errno != EEXIST)
        return mt_errorf(err, errlen, "%s: cannot create the checkpoint directory: %s", out_dir, strerror(errno));
    if (access(out_dir, W_OK | X_OK) != 0)
        return mt_errorf(err, errlen, "%s: the checkpoint directory is not writable: %s", out_dir, strerror(errno));

    int64_t *steps;
    int n;
    if (!list_steps(out_dir, true, &steps, &n, err, errlen))
        return false;
    free(steps);

    char final[PATH_LEN], tmp[PATH_LEN], old[PATH_LEN];
    step_dir(final, out_dir, step);
    if (strlen(final) + sizeof ".damaged.999" > PATH_LEN)
        return mt_errorf(err, errlen, "%s: path too long", final);
    snprintf(tmp, PATH_LEN, "%s.tmp", final);
    snprintf(old, PATH_LEN, "%s.old", final);
    if (mkdir(tmp, 0755) != 0)
        return mt_errorf(err, errlen, "%s: cannot create: %s", tmp, strerror(errno));
    bool replacing;
    if (!write_checkpoint_files(tmp, step, p, with_optimizer, trainer_state, model_config, err, errlen) ||
        !free_the_name(final, old, &replacing, err, errlen)) {
        remove_tree(tmp);
        return false;
    }
    if (rename(tmp, final) != 0) {
        mt_errorf(err, errlen, "%s: cannot rename to %s: %s", tmp, final, strerror(errno));
        if (replacing && rename(old, final) != 0)
            fprintf(stderr, "mamba-train: warning: the previous checkpoint %s is left at %s\n", final, old);
        remove_tree(tmp);
        return false;
    }
    if (!mt_fsync_path(out_dir, err, errlen))
        return false;
    if (replacing && !remove_tree(old))
        fprintf(stderr, "mamba-train: warning: cannot delete the replaced checkpoint %s: %s\n", old, strerror(errno));
    if (keep_last > 0)
        prune(out_dir, step, keep_last);
    if (path_out)
        snprintf(path_out, path_len, "%s", final);
    return true;
}

/* ------------------------------------------------------------------------ */
/* Verify and load */

static json_t *read_json_object(const char *path, char *err, size_t errlen)
{
    json_error_t jerr;
    json_t *j = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
    if (!json_is_object(j)) {
        mt_errorf(err, errlen, "%s: %s", path, j ? "not a JSON object" : jerr.text);
        json_decref(j);
        return NULL;
    }
    return j;
}

static bool file_size(const char *path, uint64_t *size, char *err, size_t errlen)
{
    struct stat st;
    if (stat(path, &st) != 0)
        return mt_errorf(err, errlen, "%s: %s", path, strerror(errno));
    *size = (uint64_t)st.st_size;
    return true;
}

/* Checks dir's manifest and the size of every file it lists, and with
 * check_crc their CRC-32 too (which reads every byte). */
static bool verify_manifest(const char *dir, bool check_crc, char *err, size_t errlen)
{
    char path[PATH_LEN];
    if (!mt_path_join(path, sizeof path, dir, MANIFEST, err, errlen))
        return false;
    json_t *manifest = read_json_object(path, err, errlen);
    if (!manifest)
        return false;
    json_t *files = json_object_get(manifest, "files");
    bool ok = json_is_object(files) && json_object_get(files, MODEL_FILE);
    if (!ok)
        mt_errorf(err, errlen, "%s: no \"files\" object listing " MODEL_FILE, path);
    const char *name;
    json_t *entry;
    json_object_foreach(files, name, entry)
    {
        if (!ok)
            break;
        json_t *size = json_object_get(entry, "size"), *crc = json_object_get(entry, "crc32");
        if (strchr(name, '/') || !json_is_integer(size) || !json_is_integer(crc)) {
            ok = mt_errorf(err, errlen, "%s: entry \"%s\" needs a plain file name, an integer size and crc32", path,
                           name);
            break;
        }
        char file[PATH_LEN];
        uint64_t got_size;
        uint32_t got_crc;
        ok = mt_path_join(file, sizeof file, dir, name, err, errlen) &&
             (check_crc ? mt_file_crc32(file, &got_size, &got_crc, err, errlen)
                        : file_size(file, &got_size, err, errlen));
        if (ok && got_size != (uint64_t)json_integer_value(size))
            ok = mt_errorf(err, errlen, "%s: %" PRIu64 " bytes, the manifest says %" JSON_INTEGER_FORMAT
                           " (truncated or damaged)", file, got_size, json_integer_value(size));
        if (ok && check_crc && got_crc != (uint64_t)json_integer_value(crc))
            ok = mt_errorf(err, errlen, "%s: CRC-32 %08" PRIx32 ", the manifest says %08" PRIx64 " (damaged)", file,
                           got_crc, (uint64_t)json_integer_value(crc));
    }
    json_decref(manifest);
    return ok;
}

bool mt_checkpoint_verify(const char *dir, char *err, size_t errlen)
{
    return verify_manifest(dir, true, err, errlen);
}

/* Every "<param><suffix>" in f with p's dtype and shape, and no other key. */
static bool check_keys(const mt_st_file *f, const mt_params *p, const char *const *suffixes, int nsuf, char *err,
                       size_t errlen)
{
    const char *path = mt_safetensors_path(f);
    char key[KEY_LEN], a[128], b[128];
    for (int i = 0; i < p->n; i++) {
        const mt_param *q = p->items[i];
        for (int s = 0; s < nsuf; s++) {
            snprintf(key, sizeof key, "%s%s", q->name, suffixes[s]);
            const mt_st_tensor *t = mt_safetensors_find(f, key);
            if (!t)
                return mt_errorf(err, errlen, "%s: missing key \"%s\"", path, key);
            if (t->dtype != st_dtype(p->dtype))
                return mt_errorf(err, errlen, "%s: key \"%s\": dtype %s, the model's parameters are %s", path, key,
                                 mt_st_dtype_name(t->dtype), mt_st_dtype_name(st_dtype(p->dtype)));
            bool same = t->ndim == q->value.ndim;
            for (int d = 0; same && d < t->ndim; d++)
                same = t->shape[d] == q->value.shape[d];
            if (!same) {
                mt_dims_str(t->ndim, t->shape, a, sizeof a);
                mt_dims_str(q->value.ndim, q->value.shape, b, sizeof b);
                return mt_errorf(err, errlen, "%s: key \"%s\": checkpoint shape %s, model shape %s", path, key, a, b);
            }
        }
    }
    /* Names are unique in both, so any count beyond p->n * nsuf is an extra key. */
    for (int i = 0; i < mt_safetensors_count(f); i++) {
        const char *name = mt_safetensors_at(f, i)->name;
        bool known = false;
        for (int s = 0; !known && s < nsuf; s++) {
            size_t n = strlen(name), m = strlen(suffixes[s]);
            if (n > m && n - m < MT_PARAM_NAME_MAX && strcmp(name + n - m, suffixes[s]) == 0) {
                char param[MT_PARAM_NAME_MAX];
                memcpy(param, name, n - m);
                param[n - m] = '\0';
                known = mt_params_find(p, param) != NULL;
            }
        }
        if (!known)
            return mt_errorf(err, errlen, "%s: unexpected key \"%s\" (no such parameter in the model)", path, name);
    }
    return true;
}

/* The index of the first NaN or infinity of n values of dtype dt, or -1. */
static int64_t first_nonfinite(const void *values, mt_dtype dt, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        if (!isfinite(dt == MT_F64 ? ((const double *)values)[i] : (double)((const float *)values)[i]))
            return i;
    return -1;
}

/* Reads each "<param><suffixes[b]>" of f into p's flat buffer bufs[b],
 * refusing a non-finite value (a store the trainer never writes). */
static bool read_params(const mt_st_file *f, const mt_params *p, void *const *bufs, const char *const *suffixes,
                        int nbuf, char *err, size_t errlen)
{
    const size_t esize = mt_dtype_size(p->dtype);
    size_t largest = 0;
    for (int i = 0; i < p->n; i++)
        if (mt_nbytes(&p->items[i]->value) > largest)
            largest = mt_nbytes(&p->items[i]->value);
    /* Tensors are read straight into CPU buffers, through one staging buffer
     * into device ones. */
    char *staging = NULL;
    if (p->device != MT_CPU && !(staging = malloc(largest ? largest : 1)))
        mt_fatal("out of host memory for a %zu-byte checkpoint staging buffer", largest);
    bool ok = true;
    char key[KEY_LEN];
    for (int i = 0; ok && i < p->n; i++) {
        const mt_param *q = p->items[i];
        size_t bytes = mt_nbytes(&q->value);
        for (int b = 0; ok && b < nbuf; b++) {
            snprintf(key, sizeof key, "%s%s", q->name, suffixes[b]);
            char *dst = (char *)bufs[b] + q->offset * esize;
            ok = mt_safetensors_read(f, mt_safetensors_find(f, key), staging ? staging : dst, bytes, err, errlen);
            const int64_t bad = ok ? first_nonfinite(staging ? staging : dst, p->dtype, mt_numel(&q->value)) : -1;
            if (bad >= 0)
                ok = mt_errorf(err, errlen, "%s: \"%s\" holds a NaN or an infinity at element %lld",
                               mt_safetensors_path(f), key, (long long)bad);
            if (ok && staging)
                mt_device_copy(p->device, dst, MT_CPU, staging, bytes);
        }
    }
    free(staging);
    return ok;
}

bool mt_checkpoint_load(const char *dir, mt_params *p, bool with_optimizer, json_t **trainer_state, char *err,
                        size_t errlen)
{
    if (!p->allocated)
        return mt_errorf(err, errlen, "%s: the parameter store is not allocated", dir);
    if (!mt_checkpoint_verify(dir, err, errlen))
        return false;
    char model_path[PATH_LEN], opt_path[PATH_LEN], trainer_path[PATH_LEN];
    if (!mt_path_join(model_path, sizeof model_path, dir, MODEL_FILE, err, errlen) ||
        !mt_path_join(opt_path, sizeof opt_path, dir, OPTIMIZER_FILE, err, errlen) ||
        !mt_path_join(trainer_path, sizeof trainer_path, dir, TRAINER_FILE, err, errlen))
        return false;
    json_t *trainer = read_json_object(trainer_path, err, errlen);
    mt_st_file *model = trainer ? mt_safetensors_open(model_path, err, errlen) : NULL;
    mt_st_file *opt = model && with_optimizer ? mt_safetensors_open(opt_path, err, errlen) : NULL;
    const char *no_suffix[1] = {""};
    void *values[1] = {p->values}, *moments[2] = {p->adam_m, p->adam_v};
    bool ok = model && (!with_optimizer || opt) && check_keys(model, p, no_suffix, 1, err, errlen) &&
              (!with_optimizer || check_keys(opt, p, adam_suffixes, 2, err, errlen)) &&
              read_params(model, p, values, no_suffix, 1, err, errlen) &&
              (!with_optimizer || read_params(opt, p, moments, adam_suffixes, 2, err, errlen));
    mt_safetensors_close(opt);
    mt_safetensors_close(model);
    if (ok && trainer_state)
        *trainer_state = trainer;
    else
        json_decref(trainer);
    return ok;
}

/* text after what buf (size bytes) holds, with sep between: as much as fits. */
static void append(char *buf, size_t size, const char *sep, const char *text)
{
    const size_t used = strlen(buf);
    if (used + 1 < size)
        snprintf(buf + used, size - used, "%s%s", used ? sep : "", text);
}

mt_checkpoint_found mt_checkpoint_latest(const char *out_dir, char *path, size_t len, char *err, size_t errlen)
{
    int64_t *steps;
    int n;
    if (!list_steps(out_dir, false, &steps, &n, err, errlen))
        return MT_CHECKPOINT_UNREADABLE;
    char dir[PATH_LEN], why[1024], damaged[2048] = "";
    int skipped = 0;
    bool found = false;
    for (int i = 0; i < n && !found; i++) {
        step_dir(dir, out_dir, steps[i]);
        found = mt_checkpoint_verify(dir, why, sizeof why);
        if (!found) {
            append(damaged, sizeof damaged, "; ", why);
            skipped++;
        }
    }
    free(steps);
    if (n == 0) {
        mt_errorf(err, errlen, "%s: no checkpoint (no step_NNNNNN directory)", out_dir);
        return MT_CHECKPOINT_NONE;
    }
    if (!found) {
        mt_errorf(err, errlen, "%s: none of its %d checkpoints verifies: %s", out_dir, n, damaged);
        return MT_CHECKPOINT_DAMAGED;
    }
    if (skipped > 0)
        fprintf(stderr, "mamba-train: warning: skipping %d damaged checkpoint%s newer than %s: %s\n", skipped,
                skipped > 1 ? "s" : "", dir, damaged);
    snprintf(path, len, "%s", dir);
    return MT_CHECKPOINT_VALID;
}

int mt_checkpoint_count(const char *out_dir, char *err, size_t errlen)
{
    int64_t *steps;
    int n;
    if (!list_steps(out_dir, false, &steps, &n, err, errlen))
        return -1;
    free(steps);
    return n;
}
