#include "io/torch_checkpoint.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zip.h>

#include "core/error.h"
#include "io/torch_pickle.h"

/* The archive stays open for reads; a libzip archive is not thread-safe, so
 * neither is reading two tensors of one file at the same time. */
struct mt_torch_file {
    char *path;
    zip_t *zip;
    mt_torch_tensor *tensors;
    int n;
    zip_uint64_t *entry; /* per tensor: the archive index of its storage's entry */
};

const char *mt_torch_path(const mt_torch_file *f)
{
    return f->path;
}

int mt_torch_count(const mt_torch_file *f)
{
    return f->n;
}

const mt_torch_tensor *mt_torch_at(const mt_torch_file *f, int i)
{
    return i >= 0 && i < f->n ? &f->tensors[i] : NULL;
}

const mt_torch_tensor *mt_torch_find(const mt_torch_file *f, const char *name)
{
    for (int i = 0; i < f->n; i++)
        if (strcmp(f->tensors[i].name, name) == 0)
            return &f->tensors[i];
    return NULL;
}

void mt_torch_close(mt_torch_file *f)
{
    if (!f)
        return;
    mt_torch_free_tensors(f->tensors, f->n);
    free(f->entry);
    if (f->zip)
        zip_discard(f->zip); /* read-only: nothing to write back */
    free(f->path);
    free(f);
}

/* The index of the entry ARCHIVE/rest, or -1 (also when out of memory). */
static zip_int64_t locate(zip_t *z, const char *archive, const char *rest)
{
    size_t n = strlen(archive) + strlen(rest) + 2;
    char *name = malloc(n);
    if (!name)
        return -1;
    snprintf(name, n, "%s/%s", archive, rest);
    zip_int64_t i = zip_name_locate(z, name, ZIP_FL_ENC_RAW);
    free(name);
    return i;
}

/* Reads n bytes of entry idx from byte `skip` into dst. A read of the whole
 * entry also reads past its end, which makes libzip check the CRC and shows
 * an entry longer than its directory record says. `what` names the entry. */
static bool read_entry(zip_t *z, zip_uint64_t idx, const char *what, uint64_t skip, void *dst, uint64_t n,
                       char *err, size_t errlen)
{
    zip_stat_t st;
    if (zip_stat_index(z, idx, ZIP_FL_ENC_RAW, &st) != 0 || !(st.valid & ZIP_STAT_SIZE))
        return mt_errorf(err, errlen, "%s: cannot stat: %s", what, zip_strerror(z));
    const bool whole = skip == 0 && n == st.size;
    zip_file_t *zf = zip_fopen_index(z, idx, 0);
    if (!zf)
        return mt_errorf(err, errlen, "%s: cannot open: %s", what, zip_strerror(z));
    /* Stored entries (torch.save's) seek; a failed seek leaves the file in
     * error, so it is reopened and the bytes are read and dropped instead,
     * as they must be for a deflated entry. */
    bool stored = (st.valid & ZIP_STAT_COMP_METHOD) && st.comp_method == ZIP_CM_STORE;
    if (skip > 0 && (!stored || zip_fseek(zf, (zip_int64_t)skip, SEEK_SET) != 0)) {
        if (stored) {
            zip_fclose(zf);
            if (!(zf = zip_fopen_index(z, idx, 0)))
                return mt_errorf(err, errlen, "%s: cannot open: %s", what, zip_strerror(z));
        }
        unsigned char scratch[65536];
        for (uint64_t left = skip; left > 0;) {
            zip_int64_t r = zip_fread(zf, scratch, left < sizeof scratch ? left : sizeof scratch);
            if (r <= 0) {
                bool ok = mt_errorf(err, errlen, "%s: %s", what, r < 0 ? zip_file_strerror(zf) : "ends early");
                zip_fclose(zf);
                return ok;
            }
            left -= (uint64_t)r;
        }
    }
    uint64_t got = 0;
    zip_int64_t r = 1;
    while (got < n && (r = zip_fread(zf, (char *)dst + got, n - got)) > 0)
        got += (uint64_t)r;
    char extra;
    if (got == n && whole)
        r = zip_fread(zf, &extra, 1);
    bool ok = true;
    if (got < n || (whole && r != 0))
        ok = mt_errorf(err, errlen, "%s: %s", what,
                       r < 0 ? zip_file_strerror(zf) : r == 0 ? "ends early" : "longer than its directory record");
    zip_fclose(zf);
    return ok;
}

/* The archive name: the first path component of the one ARCHIVE/data.pkl.
 * torch names it after the file (older versions: "archive"). */
static bool find_archive(mt_torch_file *f, char **archive, zip_uint64_t *pkl, char *err, size_t errlen)
{
    zip_int64_t n = zip_get_num_entries(f->zip, 0);
    *archive = NULL;
    for (zip_int64_t i = 0; i < n; i++) {
        const char *name = zip_get_name(f->zip, (zip_uint64_t)i, ZIP_FL_ENC_RAW);
        const char *slash = name ? strchr(name, '/') : NULL;
        if (!slash || slash == name || strcmp(slash, "/data.pkl") != 0)
            continue;
        if (*archive) {
            free(*archive);
            *archive = NULL;
            return mt_errorf(err, errlen, "%s: more than one data.pkl in the archive (%s, ...)", f->path, name);
        }
        *archive = malloc((size_t)(slash - name) + 1);
        if (!*archive)
            return mt_errorf(err, errlen, "%s: out of memory", f->path);
        memcpy(*archive, name, (size_t)(slash - name));
        (*archive)[slash - name] = '\0';
        *pkl = (zip_uint64_t)i;
    }
    return *archive ||
           mt_errorf(err, errlen, "%s: a zip archive without ARCHIVE/data.pkl: not a PyTorch checkpoint", f->path);
}

/* Storages hold the saving machine's byte order; torch writes it in
 * ARCHIVE/byteorder (absent in files from before it did: little-endian). */
static bool check_byteorder(mt_torch_file *f, const char *archive, char *err, size_t errlen)
{
    zip_int64_t i = locate(f->zip, archive, "byteorder");
    if (i < 0)
        return true;
    char what[64], order[17] = {0};
    zip_stat_t st;
    snprintf(what, sizeof what, "%s/byteorder", archive);
    if (zip_stat_index(f->zip, (zip_uint64_t)i, 0, &st) != 0 || !(st.valid & ZIP_STAT_SIZE) || st.size > 16)
        return mt_errorf(err, errlen, "%s: %s is not \"little\" or \"big\"", f->path, what);
    if (!read_entry(f->zip, (zip_uint64_t)i, what, 0, order, st.size, err, errlen))
        return false;
    if (strcmp(order, "big") == 0)
        return mt_errorf(err, errlen, "%s: the storages are big-endian (byteorder \"big\"), which is not read: "
                         "save the checkpoint on a little-endian machine", f->path);
    return strcmp(order, "little") == 0 ||
           mt_errorf(err, errlen, "%s: byteorder is \"%s\", not \"little\" or \"big\"", f->path, order);
}

static bool read_pickle(mt_torch_file *f, const char *archive, zip_uint64_t pkl, char *err, size_t errlen)
{
    zip_stat_t st;
    if (zip_stat_index(f->zip, pkl, 0, &st) != 0 || !(st.valid & ZIP_STAT_SIZE))
        return mt_errorf(err, errlen, "%s: cannot stat data.pkl: %s", f->path, zip_strerror(f->zip));
    if (st.size > MT_TORCH_MAX_PICKLE_BYTES)
        return mt_errorf(err, errlen, "%s: data.pkl has %llu bytes, more than a state dict's pickle (at most %u)",
                         f->path, (unsigned long long)st.size, MT_TORCH_MAX_PICKLE_BYTES);
    size_t whatlen = strlen(f->path) + strlen(archive) + 16;
    char *what = malloc(whatlen);
    unsigned char *data = malloc(st.size ? st.size : 1);
    bool ok = what && data;
    if (!ok)
        mt_errorf(err, errlen, "%s: out of memory", f->path);
    if (ok) {
        snprintf(what, whatlen, "%s: data.pkl", f->path);
        ok = read_entry(f->zip, pkl, what, 0, data, st.size, err, errlen) &&
             mt_torch_unpickle(data, st.size, what, &f->tensors, &f->n, err, errlen);
    }
    free(data);
    free(what);
    return ok;
}

/* Every tensor's storage entry exists and has numel * dtype size bytes. */
static bool check_storages(mt_torch_file *f, const char *archive, char *err, size_t errlen)
{
    size_t len = strlen(archive) + 6;
    char *dir = malloc(len); /* ARCHIVE/data */
    f->entry = calloc(f->n ? (size_t)f->n : 1, sizeof *f->entry);
    bool ok = dir && f->entry;
    if (!ok)
        mt_errorf(err, errlen, "%s: out of memory", f->path);
    else
        snprintf(dir, len, "%s/data", archive);
    for (int i = 0; ok && i < f->n; i++) {
        const mt_torch_tensor *t = &f->tensors[i];
        const uint64_t es = mt_st_dtype_size(t->dtype);
        zip_int64_t idx = locate(f->zip, dir, t->storage);
        zip_stat_t st;
        if (idx < 0)
            ok = mt_errorf(err, errlen, "%s: tensor \"%s\": its storage entry %s/%s is missing", f->path, t->name,
                           dir, t->storage);
        else if (zip_stat_index(f->zip, (zip_uint64_t)idx, 0, &st) != 0 || !(st.valid & ZIP_STAT_SIZE))
            ok = mt_errorf(err, errlen, "%s: %s/%s: cannot stat: %s", f->path, dir, t->storage, zip_strerror(f->zip));
        else if ((uint64_t)t->storage_numel > UINT64_MAX / es || st.size != (uint64_t)t->storage_numel * es)
            ok = mt_errorf(err, errlen, "%s: tensor \"%s\": storage entry %s/%s has %llu bytes, its %lld %s "
                           "elements need %llu", f->path, t->name, dir, t->storage, (unsigned long long)st.size,
                           (long long)t->storage_numel, mt_st_dtype_name(t->dtype),
                           (unsigned long long)((uint64_t)t->storage_numel * es));
        else
            f->entry[i] = (zip_uint64_t)idx;
    }
    free(dir);
    return ok;
}

mt_torch_file *mt_torch_open(const char *path, char *err, size_t errlen)
{
    mt_torch_file *f = calloc(1, sizeof *f);
    if (!f || !(f->path = strdup(path))) {
        free(f);
        mt_errorf(err, errlen, "%s: out of memory", path);
        return NULL;
    }
    int code = 0;
    f->zip = zip_open(path, ZIP_RDONLY, &code);
    if (!f->zip) {
        zip_error_t ze;
        zip_error_init_with_code(&ze, code);
        if (code == ZIP_ER_NOENT || code == ZIP_ER_OPEN || code == ZIP_ER_READ)
            mt_errorf(err, errlen, "%s: cannot open: %s", path, zip_error_strerror(&ze));
        else
            mt_errorf(err, errlen, "%s: not a readable zip archive (%s): a truncated file, a torch.save file from "
                      "before PyTorch 1.6, or not a PyTorch checkpoint", path, zip_error_strerror(&ze));
        zip_error_fini(&ze);
        mt_torch_close(f);
        return NULL;
    }
    char *archive = NULL;
    zip_uint64_t pkl = 0;
    bool ok = find_archive(f, &archive, &pkl, err, errlen) && check_byteorder(f, archive, err, errlen) &&
              read_pickle(f, archive, pkl, err, errlen) && check_storages(f, archive, err, errlen);
    free(archive);
    if (!ok) {
        mt_torch_close(f);
        return NULL;
    }
    return f;
}

/* ------------------------------------------------------------------------ */
/* Reading a tensor */

static int64_t numel_of(const mt_torch_tensor *t)
{
    int64_t n = 1;
    for (int d = 0; d < t->ndim; d++)
        n *= t->shape[d]; /* no overflow: checked on open */
    return n;
}

/* Row-major contiguous from its offset; size-1 dims' strides do not matter. */
static bool contiguous(const mt_torch_tensor *t)
{
    int64_t expect = 1;
    for (int d = t->ndim - 1; d >= 0; d--) {
        if (t->shape[d] != 1 && t->stride[d] != expect)
            return false;
        expect *= t->shape[d];
    }
    return true;
}

/* Copies t's elements row-major from its storage's bytes src to dst: a row
 * (the last dim) at a time, one memcpy when its stride is 1. */
static void gather(const unsigned char *src, unsigned char *dst, const mt_torch_tensor *t, int64_t numel, size_t es)
{
    if (t->ndim == 0) {
        memcpy(dst, src + (size_t)t->offset * es, es);
        return;
    }
    const int last = t->ndim - 1;
    const int64_t cols = t->shape[last], cstride = t->stride[last], rows = numel / cols;
    int64_t idx[MT_ST_MAX_DIMS] = {0};
    for (int64_t r = 0; r < rows; r++) {
        int64_t off = t->offset;
        for (int d = 0; d < last; d++)
            off += idx[d] * t->stride[d];
        if (cstride == 1)
            memcpy(dst, src + (size_t)off * es, (size_t)cols * es);
        else
            for (int64_t j = 0; j < cols; j++)
                memcpy(dst + (size_t)j * es, src + (size_t)(off + j * cstride) * es, es);
        dst += (size_t)cols * es;
        for (int d = last - 1; d >= 0 && ++idx[d] == t->shape[d]; d--)
            idx[d] = 0;
    }
}

bool mt_torch_read(const mt_torch_file *f, const mt_torch_tensor *t, void *dst, size_t dst_bytes, char *err,
                   size_t errlen)
{
    if (t < f->tensors || t >= f->tensors + f->n)
        return mt_errorf(err, errlen, "%s: mt_torch_read: the tensor is not one of this file's", f->path);
    const size_t es = mt_st_dtype_size(t->dtype);
    const int64_t numel = numel_of(t);
    if ((uint64_t)numel > SIZE_MAX / es || dst_bytes != (size_t)numel * es)
        return mt_errorf(err, errlen, "%s: tensor \"%s\" has %lld %s elements, the buffer %zu bytes", f->path,
                         t->name, (long long)numel, mt_st_dtype_name(t->dtype), dst_bytes);
    if (numel == 0)
        return true;
    char what[512];
    snprintf(what, sizeof what, "%s: tensor \"%s\": storage %s", f->path, t->name, t->storage);
    const zip_uint64_t idx = f->entry[t - f->tensors];
    if (contiguous(t)) /* straight into dst, without holding the storage */
        return read_entry(f->zip, idx, what, (uint64_t)t->offset * es, dst, dst_bytes, err, errlen);
    /* A strided view: the whole storage (sized on open), then a gather. */
    const uint64_t bytes = (uint64_t)t->storage_numel * es;
    unsigned char *buf = bytes <= SIZE_MAX ? malloc(bytes) : NULL;
    if (!buf)
        return mt_errorf(err, errlen, "%s: out of memory for %llu bytes", what, (unsigned long long)bytes);
    bool ok = read_entry(f->zip, idx, what, 0, buf, bytes, err, errlen);
    if (ok)
        gather(buf, dst, t, numel, es);
    free(buf);
    return ok;
}
