#include "io/safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/error.h"
#include "io/file_io.h"

/* The reference implementation refuses headers above 100 MB; so do we, so
 * that a corrupt length cannot make us allocate gigabytes. */
#define MAX_HEADER_BYTES 100000000ull
#define METADATA_KEY "__metadata__"

static const struct {
    const char *name;
    size_t size;
} dtype_table[MT_ST_N_DTYPES] = {
    [MT_ST_BOOL] = {"BOOL", 1},       [MT_ST_U8] = {"U8", 1},     [MT_ST_I8] = {"I8", 1},
    [MT_ST_F8_E5M2] = {"F8_E5M2", 1}, [MT_ST_F8_E4M3] = {"F8_E4M3", 1},
    [MT_ST_I16] = {"I16", 2},         [MT_ST_U16] = {"U16", 2},   [MT_ST_F16] = {"F16", 2},
    [MT_ST_BF16] = {"BF16", 2},       [MT_ST_I32] = {"I32", 4},   [MT_ST_U32] = {"U32", 4},
    [MT_ST_F32] = {"F32", 4},         [MT_ST_I64] = {"I64", 8},   [MT_ST_U64] = {"U64", 8},
    [MT_ST_F64] = {"F64", 8},
};

const char *mt_st_dtype_name(mt_st_dtype dt)
{
    return dt >= 0 && dt < MT_ST_N_DTYPES ? dtype_table[dt].name : "?";
}

size_t mt_st_dtype_size(mt_st_dtype dt)
{
    return dt >= 0 && dt < MT_ST_N_DTYPES ? dtype_table[dt].size : 0;
}

bool mt_st_dtype_from_name(const char *name, mt_st_dtype *dt)
{
    for (int i = 0; i < MT_ST_N_DTYPES; i++)
        if (strcmp(dtype_table[i].name, name) == 0) {
            *dt = (mt_st_dtype)i;
            return true;
        }
    return false;
}

/* numel * dtype size, false on overflow or a negative dim. */
static bool tensor_bytes(mt_st_dtype dt, int ndim, const int64_t *shape, uint64_t *bytes)
{
    uint64_t n = mt_st_dtype_size(dt);
    for (int d = 0; d < ndim; d++) {
        if (shape[d] < 0 || (shape[d] > 0 && n > UINT64_MAX / (uint64_t)shape[d]))
            return false;
        n *= (uint64_t)shape[d];
    }
    *bytes = n;
    return true;
}

/* ------------------------------------------------------------------------ */
/* Writer */

/* The header JSON, padded with spaces to a multiple of 8 bytes so that the
 * data starts aligned (as the reference writer does). Sets *header_len. */
static char *build_header(const char *path, const mt_st_entry *entries, int n, const json_t *metadata,
                          size_t *header_len, char *err, size_t errlen)
{
    json_t *root = json_object();
    uint64_t offset = 0;
    bool ok = root != NULL;
    if (ok && metadata) {
        const char *key;
        json_t *v;
        json_object_foreach((json_t *)metadata, key, v)
            if (!json_is_string(v)) {
                ok = mt_errorf(err, errlen, "%s: __metadata__ value of \"%s\" is not a string", path, key);
                break;
            }
        ok = ok && json_object_set_new(root, METADATA_KEY, json_deep_copy(metadata)) == 0;
    }
    for (int i = 0; ok && i < n; i++) {
        const mt_st_entry *e = &entries[i];
        uint64_t bytes;
        if (strcmp(e->name, METADATA_KEY) == 0 || json_object_get(root, e->name)) {
            ok = mt_errorf(err, errlen, "%s: tensor name \"%s\" is reserved or repeated", path, e->name);
            break;
        }
        if (e->dtype < 0 || e->dtype >= MT_ST_N_DTYPES || e->ndim < 0 || e->ndim > MT_ST_MAX_DIMS ||
            !tensor_bytes(e->dtype, e->ndim, e->shape, &bytes)) {
            ok = mt_errorf(err, errlen, "%s: tensor \"%s\": bad dtype or shape", path, e->name);
            break;
        }
        json_t *shape = json_array();
        for (int d = 0; d < e->ndim; d++)
            json_array_append_new(shape, json_integer(e->shape[d]));
        json_t *t = json_pack("{s:s, s:o, s:[I,I]}", "dtype", mt_st_dtype_name(e->dtype), "shape", shape,
                              "data_offsets", (json_int_t)offset, (json_int_t)(offset + bytes));
        ok = t && json_object_set_new(root, e->name, t) == 0;
        offset += bytes;
    }
    char *json = NULL, *header = NULL;
    if (ok)
        json = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    if (ok && json) {
        size_t len = strlen(json), padded = (len + 7) / 8 * 8;
        header = malloc(padded);
        if (header) {
            memcpy(header, json, len);
            memset(header + len, ' ', padded - len);
            *header_len = padded;
        }
    }
    free(json);
    if (ok && !header)
        mt_errorf(err, errlen, "%s: out of memory building the header", path);
    return header;
}

bool mt_safetensors_write(const char *path, const mt_st_entry *entries, int n, const json_t *metadata, char *err,
                          size_t errlen)
{
    size_t header_len = 0;
    char *header = build_header(path, entries, n, metadata, &header_len, err, errlen);
    if (!header)
        return false;
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) {
        free(header);
        return mt_errorf(err, errlen, "%s: cannot create: %s", path, strerror(errno));
    }
    unsigned char len_le[8];
    for (int b = 0; b < 8; b++)
        len_le[b] = (unsigned char)((uint64_t)header_len >> (8 * b));
    bool ok = mt_write_all(fd, len_le, 8) && mt_write_all(fd, header, header_len);
    for (int i = 0; ok && i < n; i++) {
        uint64_t bytes = 0;
        tensor_bytes(entries[i].dtype, entries[i].ndim, entries[i].shape, &bytes); /* checked in build_header */
        ok = mt_write_all(fd, entries[i].host_data, (size_t)bytes);
    }
    const char *what = ok ? "fsync" : "write";
    ok = ok && fsync(fd) == 0;
    int e = errno;
    if (close(fd) != 0 && ok) {
        what = "close";
        e = errno;
        ok = false;
    }
    free(header);
    if (!ok) {
        unlink(path);
        return mt_errorf(err, errlen, "%s: %s failed: %s", path, what, strerror(e));
    }
    return true;
}

/* ------------------------------------------------------------------------ */
/* Reader */

struct mt_st_file {
    char *path;
    int fd;
    mt_st_tensor *tensors;
    int n;
    json_t *metadata;
};

const char *mt_safetensors_path(const mt_st_file *f)
{
    return f->path;
}

int mt_safetensors_count(const mt_st_file *f)
{
    return f->n;
}

const mt_st_tensor *mt_safetensors_at(const mt_st_file *f, int i)
{
    return i >= 0 && i < f->n ? &f->tensors[i] : NULL;
}

const json_t *mt_safetensors_metadata(const mt_st_file *f)
{
    return f->metadata;
}

const mt_st_tensor *mt_safetensors_find(const mt_st_file *f, const char *name)
{
    for (int i = 0; i < f->n; i++)
        if (strcmp(f->tensors[i].name, name) == 0)
            return &f->tensors[i];
    return NULL;
}

void mt_safetensors_close(mt_st_file *f)
{
    if (!f)
        return;
    for (int i = 0; i < f->n; i++)
        free(f->tensors[i].name);
    free(f->tensors);
    json_decref(f->metadata);
    if (f->fd >= 0)
        close(f->fd);
    free(f->path);
    free(f);
}

/* pread until n bytes are in or the file ends; false on error or short file. */
static bool pread_all(int fd, void *buf, size_t n, uint64_t offset)
{
    char *p = buf;
    while (n > 0) {
        ssize_t r = pread(fd, p, n, (off_t)offset);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return false;
        p += r;
        n -= (size_t)r;
        offset += (uint64_t)r;
    }
    return true;
}

/* One header entry into t, its offsets made absolute (data_start added). */
static bool parse_entry(const char *path, const char *key, json_t *v, uint64_t data_start, mt_st_tensor *t,
                        char *err, size_t errlen)
{
    json_t *dtype = json_object_get(v, "dtype"), *shape = json_object_get(v, "shape");
    json_t *offs = json_object_get(v, "data_offsets");
    if (!json_is_object(v) || !json_is_string(dtype) || !json_is_array(shape) || !json_is_array(offs) ||
        json_array_size(offs) != 2)
        return mt_errorf(err, errlen, "%s: tensor \"%s\": needs dtype (string), shape (array) and data_offsets "
                         "([begin, end])", path, key);
    if (!mt_st_dtype_from_name(json_string_value(dtype), &t->dtype))
        return mt_errorf(err, errlen, "%s: tensor \"%s\": unknown dtype \"%s\"", path, key, json_string_value(dtype));
    if (json_array_size(shape) > MT_ST_MAX_DIMS)
        return mt_errorf(err, errlen, "%s: tensor \"%s\": %zu dims, at most %d are read", path, key,
                         json_array_size(shape), MT_ST_MAX_DIMS);
    t->ndim = (int)json_array_size(shape);
    for (int d = 0; d < t->ndim; d++) {
        json_t *s = json_array_get(shape, (size_t)d);
        if (!json_is_integer(s) || json_integer_value(s) < 0)
            return mt_errorf(err, errlen, "%s: tensor \"%s\": shape[%d] is not a non-negative integer", path, key, d);
        t->shape[d] = json_integer_value(s);
    }
    json_t *b = json_array_get(offs, 0), *e = json_array_get(offs, 1);
    if (!json_is_integer(b) || !json_is_integer(e) || json_integer_value(b) < 0 ||
        json_integer_value(e) < json_integer_value(b))
        return mt_errorf(err, errlen, "%s: tensor \"%s\": data_offsets must be integers 0 <= begin <= end", path, key);
    uint64_t begin = (uint64_t)json_integer_value(b), end = (uint64_t)json_integer_value(e), bytes = 0;
    if (!tensor_bytes(t->dtype, t->ndim, t->shape, &bytes) || bytes != end - begin)
        return mt_errorf(err, errlen, "%s: tensor \"%s\": data_offsets span %llu bytes, its dtype and shape "
                         "need %llu", path, key, (unsigned long long)(end - begin), (unsigned long long)bytes);
    t->begin = data_start + begin;
    t->end = data_start + end;
    return true;
}

static int by_begin(const void *a, const void *b)
{
    const mt_st_tensor *x = a, *y = b;
    return x->begin < y->begin ? -1 : x->begin > y->begin ? 1 : (x->end > y->end) - (x->end < y->end);
}

/* Everything mt_safetensors_open checks after the file is open. */
static bool parse_file(mt_st_file *f, char *err, size_t errlen)
{
    const char *p = f->path;
    struct stat st;
    if (fstat(f->fd, &st) != 0)
        return mt_errorf(err, errlen, "%s: cannot stat: %s", p, strerror(errno));
    const uint64_t file_size = (uint64_t)st.st_size;
    unsigned char len_le[8];
    if (file_size < 8 || !pread_all(f->fd, len_le, 8, 0))
        return mt_errorf(err, errlen, "%s: truncated: %llu bytes, shorter than the 8-byte header length", p,
                         (unsigned long long)file_size);
    uint64_t header_len = 0;
    for (int b = 0; b < 8; b++)
        header_len |= (uint64_t)len_le[b] << (8 * b);
    if (header_len < 2 || header_len > MAX_HEADER_BYTES)
        return mt_errorf(err, errlen, "%s: header length %llu is not in [2, %llu] (not a safetensors file?)", p,
                         (unsigned long long)header_len, MAX_HEADER_BYTES);
    if (header_len > file_size - 8)
        return mt_errorf(err, errlen, "%s: truncated: header length %llu, but only %llu bytes follow it", p,
                         (unsigned long long)header_len, (unsigned long long)(file_size - 8));
    char *header = malloc(header_len);
    if (!header)
        return mt_errorf(err, errlen, "%s: out of memory for a %llu-byte header", p, (unsigned long long)header_len);
    if (!pread_all(f->fd, header, header_len, 8)) {
        free(header);
        return mt_errorf(err, errlen, "%s: cannot read the header: %s", p, strerror(errno));
    }
    json_error_t jerr;
    json_t *root = header[0] == '{' ? json_loadb(header, header_len, JSON_REJECT_DUPLICATES, &jerr) : NULL;
    free(header);
    if (!json_is_object(root)) {
        json_decref(root);
        return mt_errorf(err, errlen, "%s: the header is not a JSON object%s%s", p, root ? "" : ": ",
                         root ? "" : jerr.text);
    }
    const uint64_t data_start = 8 + header_len, data_size = file_size - data_start;
    f->tensors = calloc(json_object_size(root) + 1, sizeof *f->tensors);
    bool ok = f->tensors != NULL;
    if (!ok)
        mt_errorf(err, errlen, "%s: out of memory", p);
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v)
    {
        if (!ok)
            break;
        if (strcmp(key, METADATA_KEY) == 0) {
            const char *mk;
            json_t *mv;
            ok = json_is_object(v);
            json_object_foreach(v, mk, mv) ok = ok && json_is_string(mv);
            if (!ok)
                mt_errorf(err, errlen, "%s: __metadata__ must be an object of strings", p);
            else
                f->metadata = json_incref(v);
            continue;
        }
        mt_st_tensor *t = &f->tensors[f->n];
        ok = parse_entry(p, key, v, data_start, t, err, errlen) && (t->name = strdup(key)) != NULL;
        if (ok)
            f->n++;
    }
    json_decref(root);
    if (!ok)
        return false;

    /* In file order, the tensors must tile the data area: no overlaps, no
     * holes, nothing past its end (a truncated file ends too early). */
    qsort(f->tensors, (size_t)f->n, sizeof *f->tensors, by_begin);
    uint64_t expect = data_start;
    for (int i = 0; i < f->n; i++) {
        const mt_st_tensor *t = &f->tensors[i];
        if (t->begin < expect)
            return mt_errorf(err, errlen, "%s: tensor \"%s\": data_offsets [%llu, %llu] overlap \"%s\"", p, t->name,
                             (unsigned long long)(t->begin - data_start), (unsigned long long)(t->end - data_start),
                             f->tensors[i - 1].name);
        if (t->begin > expect)
            return mt_errorf(err, errlen, "%s: tensor \"%s\": a hole of %llu bytes before its data", p, t->name,
                             (unsigned long long)(t->begin - expect));
        if (t->end > file_size)
            return mt_errorf(err, errlen, "%s: truncated: tensor \"%s\" ends at data offset %llu, the data area "
                             "has %llu bytes", p, t->name, (unsigned long long)(t->end - data_start),
                             (unsigned long long)data_size);
        expect = t->end;
    }
    if (expect != file_size)
        return mt_errorf(err, errlen, "%s: %llu bytes after the last tensor's data", p,
                         (unsigned long long)(file_size - expect));
    return true;
}

mt_st_file *mt_safetensors_open(const char *path, char *err, size_t errlen)
{
    mt_st_file *f = calloc(1, sizeof *f);
    if (!f || !(f->path = strdup(path))) {
        free(f);
        mt_errorf(err, errlen, "%s: out of memory", path);
        return NULL;
    }
    f->fd = open(path, O_RDONLY);
    if (f->fd < 0) {
        mt_errorf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        mt_safetensors_close(f);
        return NULL;
    }
    if (!parse_file(f, err, errlen)) {
        mt_safetensors_close(f);
        return NULL;
    }
    return f;
}

bool mt_safetensors_read(const mt_st_file *f, const mt_st_tensor *t, void *dst, size_t dst_bytes, char *err,
                         size_t errlen)
{
    if (dst_bytes != t->end - t->begin)
        return mt_errorf(err, errlen, "%s: tensor \"%s\" has %llu bytes, the buffer %zu", f->path, t->name,
                         (unsigned long long)(t->end - t->begin), dst_bytes);
    if (!pread_all(f->fd, dst, dst_bytes, t->begin))
        return mt_errorf(err, errlen, "%s: tensor \"%s\": read failed (file changed since it was opened?)", f->path,
                         t->name);
    return true;
}
