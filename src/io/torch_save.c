#include "io/torch_save.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zip.h>

#include "core/error.h"
#include "io/file_io.h"

/* A growing byte buffer for the pickle. */
typedef struct pickle {
    unsigned char *data;
    size_t len, cap;
} pickle;

static void put(pickle *p, const void *bytes, size_t n)
{
    if (p->len + n > p->cap) {
        size_t cap = p->cap ? 2 * p->cap : 4096;
        while (cap < p->len + n)
            cap *= 2;
        unsigned char *d = realloc(p->data, cap);
        if (!d)
            mt_fatal("out of host memory writing a pickle of %zu bytes", cap);
        p->data = d;
        p->cap = cap;
    }
    memcpy(p->data + p->len, bytes, n);
    p->len += n;
}

static void op(pickle *p, char c)
{
    put(p, &c, 1);
}

/* Little-endian integers of the pickle's opcodes. */
static void le(pickle *p, uint64_t v, int bytes)
{
    for (int i = 0; i < bytes; i++)
        op(p, (char)(v >> (8 * i)));
}

static void put_int(pickle *p, int64_t v)
{
    if (v >= 0 && v < 256) {
        op(p, 'K'); /* BININT1 */
        le(p, (uint64_t)v, 1);
    } else if (v >= 0 && v < 65536) {
        op(p, 'M'); /* BININT2 */
        le(p, (uint64_t)v, 2);
    } else if (v >= INT32_MIN && v <= INT32_MAX) {
        op(p, 'J'); /* BININT */
        le(p, (uint64_t)(uint32_t)(int32_t)v, 4);
    } else {
        op(p, (char)0x8a); /* LONG1: 8 bytes, two's complement */
        le(p, 8, 1);
        le(p, (uint64_t)v, 8);
    }
}

static void put_str(pickle *p, const char *s)
{
    op(p, 'X'); /* BINUNICODE */
    le(p, strlen(s), 4);
    put(p, s, strlen(s));
}

static void put_global(pickle *p, const char *module, const char *name)
{
    op(p, 'c'); /* GLOBAL module\nname\n */
    put(p, module, strlen(module));
    op(p, '\n');
    put(p, name, strlen(name));
    op(p, '\n');
}

static void put_shape_tuple(pickle *p, int ndim, const int64_t *v)
{
    op(p, '('); /* MARK */
    for (int d = 0; d < ndim; d++)
        put_int(p, v[d]);
    op(p, 't'); /* TUPLE */
}

static const char *storage_type(mt_st_dtype dt)
{
    switch (dt) {
    case MT_ST_F32: return "FloatStorage";
    case MT_ST_F16: return "HalfStorage";
    case MT_ST_BF16: return "BFloat16Storage";
    case MT_ST_F64: return "DoubleStorage";
    case MT_ST_I64: return "LongStorage";
    case MT_ST_I32: return "IntStorage";
    default: return NULL;
    }
}

/* _rebuild_tensor_v2(persistent storage, 0, shape, contiguous strides, False, OrderedDict()). */
static void put_tensor(pickle *p, const mt_st_entry *e, int storage_key, int64_t numel)
{
    char key[32];
    int64_t stride[MT_ST_MAX_DIMS];
    for (int d = e->ndim - 1, s = 1; d >= 0; d--) {
        stride[d] = s;
        s *= (int)e->shape[d];
    }
    snprintf(key, sizeof key, "%d", storage_key);
    put_global(p, "torch._utils", "_rebuild_tensor_v2");
    op(p, '(');
    op(p, '(');
    put_str(p, "storage");
    put_global(p, "torch", storage_type(e->dtype));
    put_str(p, key);
    put_str(p, "cpu");
    put_int(p, numel);
    op(p, 't');
    op(p, 'Q'); /* BINPERSID */
    put_int(p, 0);
    put_shape_tuple(p, e->ndim, e->shape);
    put_shape_tuple(p, e->ndim, stride);
    op(p, (char)0x89); /* NEWFALSE: requires_grad */
    put_global(p, "collections", "OrderedDict");
    op(p, ')'); /* EMPTY_TUPLE */
    op(p, 'R'); /* REDUCE: no backward hooks */
    op(p, 't');
    op(p, 'R');
}

static int64_t numel_of(const mt_st_entry *e)
{
    int64_t n = 1;
    for (int d = 0; d < e->ndim; d++)
        n *= e->shape[d];
    return n;
}

/* Adds name with bytes (not copied: they must live until zip_close). */
static bool add_stored(zip_t *z, const char *name, const void *bytes, size_t n, char *err, size_t errlen)
{
    zip_source_t *src = zip_source_buffer(z, bytes, n, 0);
    zip_int64_t idx = src ? zip_file_add(z, name, src, ZIP_FL_OVERWRITE | ZIP_FL_ENC_UTF_8) : -1;
    if (idx < 0) {
        if (src)
            zip_source_free(src);
        return mt_errorf(err, errlen, "adding %s: %s", name, zip_strerror(z));
    }
    /* torch.load reads stored entries in place. */
    if (zip_set_file_compression(z, (zip_uint64_t)idx, ZIP_CM_STORE, 0) != 0)
        return mt_errorf(err, errlen, "storing %s: %s", name, zip_strerror(z));
    return true;
}

bool mt_torch_save(const char *path, const char *archive, const mt_st_entry *entries, const int *same_as, int n,
                   char *err, size_t errlen)
{
    char why[512];
    for (int i = 0; i < n; i++) {
        if (!storage_type(entries[i].dtype))
            return mt_errorf(err, errlen, "%s: \"%s\": dtype %s has no torch storage type here", path,
                             entries[i].name, mt_st_dtype_name(entries[i].dtype));
        const int s = same_as ? same_as[i] : -1;
        if (s >= i ||
            (s >= 0 && (entries[s].dtype != entries[i].dtype || numel_of(&entries[s]) != numel_of(&entries[i]))))
            return mt_errorf(err, errlen, "%s: \"%s\" cannot share the storage of entry %d", path, entries[i].name, s);
    }
    pickle p = {0};
    op(&p, (char)0x80); /* PROTO 2 */
    le(&p, 2, 1);
    op(&p, '}'); /* EMPTY_DICT */
    op(&p, '(');
    int *key = malloc((size_t)(n > 0 ? n : 1) * sizeof *key), keys = 0;
    if (!key)
        mt_fatal("out of host memory");
    for (int i = 0; i < n; i++) {
        key[i] = same_as && same_as[i] >= 0 ? key[same_as[i]] : keys++;
        put_str(&p, entries[i].name);
        put_tensor(&p, &entries[i], key[i], numel_of(&entries[i]));
    }
    op(&p, 'u'); /* SETITEMS */
    op(&p, '.'); /* STOP */

    int zerr = 0;
    zip_t *z = zip_open(path, ZIP_CREATE | ZIP_TRUNCATE, &zerr);
    bool ok = z != NULL;
    if (!ok) {
        zip_error_t ze;
        zip_error_init_with_code(&ze, zerr);
        mt_errorf(err, errlen, "%s: cannot create: %s", path, zip_error_strerror(&ze));
        zip_error_fini(&ze);
    }
    char name[600];
    static const char version[] = "3\n", byteorder[] = "little";
    snprintf(name, sizeof name, "%s/data.pkl", archive);
    ok = ok && add_stored(z, name, p.data, p.len, why, sizeof why);
    snprintf(name, sizeof name, "%s/byteorder", archive);
    ok = ok && add_stored(z, name, byteorder, strlen(byteorder), why, sizeof why);
    snprintf(name, sizeof name, "%s/version", archive);
    ok = ok && add_stored(z, name, version, strlen(version), why, sizeof why);
    for (int i = 0; ok && i < n; i++) {
        if (same_as && same_as[i] >= 0)
            continue;
        snprintf(name, sizeof name, "%s/data/%d", archive, key[i]);
        const size_t bytes = (size_t)numel_of(&entries[i]) * mt_st_dtype_size(entries[i].dtype);
        ok = add_stored(z, name, entries[i].host_data, bytes, why, sizeof why);
    }
    if (z && !ok) {
        zip_discard(z);
        mt_errorf(err, errlen, "%s: %s", path, why);
    } else if (z && zip_close(z) != 0) {
        ok = mt_errorf(err, errlen, "%s: writing: %s", path, zip_strerror(z));
        zip_discard(z);
    }
    ok = ok && mt_fsync_path(path, err, errlen);
    if (!ok)
        unlink(path);
    free(key);
    free(p.data);
    return ok;
}
