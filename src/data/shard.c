#include "data/shard.h"

#include <errno.h>
#include <fcntl.h>
#include <hdf5.h>
#include <libgen.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/error.h"

/* The serial HDF5 library keeps global state without locks of its own. */
static pthread_mutex_t hdf5_lock = PTHREAD_MUTEX_INITIALIZER;

static void hdf5_enter(void)
{
    pthread_mutex_lock(&hdf5_lock);
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL); /* our messages replace HDF5's error stack dumps */
}

static void hdf5_leave(void)
{
    pthread_mutex_unlock(&hdf5_lock);
}

struct mt_shard {
    char *path;
    hid_t file, tokens, mask;
    mt_shard_info info;
    uint64_t *doc_offsets;
};

const mt_shard_info *mt_shard_get_info(const mt_shard *s)
{
    return &s->info;
}

const char *mt_shard_path(const mt_shard *s)
{
    return s->path;
}

const uint64_t *mt_shard_doc_offsets(const mt_shard *s)
{
    return s->doc_offsets;
}

static void shard_free(mt_shard *s)
{
    if (s->mask >= 0)
        H5Dclose(s->mask);
    if (s->tokens >= 0)
        H5Dclose(s->tokens);
    if (s->file >= 0)
        H5Fclose(s->file);
    free(s->doc_offsets);
    free(s->path);
    free(s);
}

void mt_shard_close(mt_shard *s)
{
    if (!s)
        return;
    hdf5_enter();
    shard_free(s);
    hdf5_leave();
}

/* The HDF5 format signature, the first 8 bytes of the superblock. */
static const unsigned char hdf5_signature[8] = {0x89, 'H', 'D', 'F', '\r', '\n', 0x1a, '\n'};

/* Bytes of the superblock that starts with head (its first 16 bytes), per the
 * HDF5 file format specification: fixed fields and 4 addresses, plus the root
 * group's symbol table entry in versions 0 and 1 and a checksum in 2 and 3.
 * 16 for a version this code does not know, which HDF5 then judges itself. */
static int64_t superblock_size(const unsigned char *head)
{
    const int version = head[8];
    if (version == 0 || version == 1) {
        const int64_t address = head[13]; /* "size of offsets" */
        return (version == 0 ? 48 : 52) + 6 * address;
    }
    if (version == 2 || version == 3)
        return 16 + 4 * (int64_t)head[9];
    return 16;
}

/* Checks what can be checked before HDF5 reads the file, which it is not
 * hardened to do for arbitrary bytes: a regular file that carries the HDF5
 * signature at offset 0, or at 512, 1024, 2048, ... after a user block, and
 * holds the whole superblock. */
static bool check_hdf5_file(const char *path, char *err, size_t errlen)
{
    struct stat st;
    if (stat(path, &st) != 0)
        return mt_errorf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
    if (S_ISDIR(st.st_mode))
        return mt_errorf(err, errlen, "%s: a directory, not a shard file", path);
    if (!S_ISREG(st.st_mode))
        return mt_errorf(err, errlen, "%s: not a regular file", path);
    if (st.st_size == 0)
        return mt_errorf(err, errlen, "%s: empty (0 bytes), not a shard", path);
    FILE *f = fopen(path, "rb");
    if (!f)
        return mt_errorf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
    unsigned char head[16];
    size_t got = 0;
    int64_t at = -1;
    for (int64_t off = 0; at < 0 && off + (int64_t)sizeof hdf5_signature <= st.st_size; off = off ? 2 * off : 512) {
        if (fseeko(f, (off_t)off, SEEK_SET) != 0)
            break;
        got = fread(head, 1, sizeof head, f);
        if (got >= sizeof hdf5_signature && memcmp(head, hdf5_signature, sizeof hdf5_signature) == 0)
            at = off;
    }
    const bool read_failed = ferror(f) != 0;
    fclose(f);
    if (read_failed)
        return mt_errorf(err, errlen, "%s: read error", path);
    if (at < 0)
        return mt_errorf(err, errlen, "%s: not an HDF5 file (no HDF5 signature at offset 0, 512, 1024, ...)", path);
    const int64_t need = at + (got == sizeof head ? superblock_size(head) : (int64_t)sizeof head);
    if (st.st_size < need)
        return mt_errorf(err, errlen, "%s: truncated: its %lld bytes end inside the HDF5 superblock", path,
                         (long long)st.st_size);
    return true;
}

/* A 1-D dataset's length; false unless it is 1-D with a length that fits
 * int64 (a crafted file can claim up to 2^64 - 1). */
static bool dataset_length(hid_t ds, int64_t *n)
{
    *n = 0;
    hid_t space = H5Dget_space(ds);
    if (space < 0)
        return false;
    hsize_t dims[1];
    bool ok = H5Sget_simple_extent_ndims(space) == 1 && H5Sget_simple_extent_dims(space, dims, NULL) == 1 &&
              dims[0] <= (hsize_t)INT64_MAX;
    H5Sclose(space);
    if (ok)
        *n = (int64_t)dims[0];
    return ok;
}

/* An unsigned integer dataset's element size in bytes; 0 for any other type. */
static size_t unsigned_int_size(hid_t ds)
{
    hid_t type = H5Dget_type(ds);
    if (type < 0)
        return 0;
    size_t size = 0;
    if (H5Tget_class(type) == H5T_INTEGER && H5Tget_sign(type) == H5T_SGN_NONE)
        size = H5Tget_size(type);
    H5Tclose(type);
    return size;
}

/* Opens root attribute name when it holds exactly one value of class cls,
 * its type in *type; -1 otherwise. H5Aread writes every element, so an
 * array attribute would overrun a buffer sized for one. */
static hid_t open_single_attr(hid_t file, const char *name, H5T_class_t cls, hid_t *type)
{
    *type = -1;
    if (H5Aexists(file, name) <= 0)
        return -1;
    hid_t attr = H5Aopen(file, name, H5P_DEFAULT);
    if (attr < 0)
        return -1;
    hid_t space = H5Aget_space(attr);
    const bool single = space >= 0 && H5Sget_simple_extent_npoints(space) == 1;
    if (space >= 0)
        H5Sclose(space);
    if (single)
        *type = H5Aget_type(attr);
    if (*type >= 0 && H5Tget_class(*type) == cls)
        return attr;
    if (*type >= 0)
        H5Tclose(*type);
    *type = -1;
    H5Aclose(attr);
    return -1;
}

static bool read_int_attr(hid_t file, const char *name, int64_t *v)
{
    hid_t type, attr = open_single_attr(file, name, H5T_INTEGER, &type);
    if (attr < 0)
        return false;
    bool ok = H5Aread(attr, H5T_NATIVE_INT64, v) >= 0;
    H5Tclose(type);
    H5Aclose(attr);
    return ok;
}

/* Fixed-length strings longer than this are not names or hashes. */
#define MAX_STRING_ATTR 65536

/* A string attribute, fixed-length or variable-length, into out. */
static bool read_string_attr(hid_t file, const char *name, char *out, size_t outlen)
{
    hid_t type, attr = open_single_attr(file, name, H5T_STRING, &type);
    if (attr < 0)
        return false;
    const H5T_cset_t cset = H5Tget_cset(type); /* UTF-8 as h5py writes it, or ASCII */
    hid_t mem = cset == H5T_CSET_ERROR ? -1 : H5Tcopy(H5T_C_S1);
    bool ok = false;
    if (mem >= 0 && H5Tset_cset(mem, cset) >= 0) {
        const htri_t variable = H5Tis_variable_str(type);
        if (variable > 0) {
            char *s = NULL;
            if (H5Tset_size(mem, H5T_VARIABLE) >= 0 && H5Aread(attr, mem, &s) >= 0 && s) {
                snprintf(out, outlen, "%s", s);
                ok = true;
            }
            H5free_memory(s);
        } else if (variable == 0) {
            const size_t size = H5Tget_size(type);
            char *buf = size > 0 && size <= MAX_STRING_ATTR ? calloc(size + 1, 1) : NULL;
            if (buf && H5Tset_size(mem, size + 1) >= 0 && H5Aread(attr, mem, buf) >= 0) {
                snprintf(out, outlen, "%s", buf);
                ok = true;
            }
            free(buf);
        }
    }
    if (mem >= 0)
        H5Tclose(mem);
    H5Tclose(type);
    H5Aclose(attr);
    return ok;
}

bool mt_shard_uint_attr(mt_shard *s, const char *name, uint64_t *value, bool *present, char *err, size_t errlen)
{
    hdf5_enter();
    const htri_t exists = H5Aexists(s->file, name);
    hid_t type = -1, attr = exists > 0 ? open_single_attr(s->file, name, H5T_INTEGER, &type) : -1;
    bool ok = attr >= 0 && H5Tget_sign(type) == H5T_SGN_NONE && H5Aread(attr, H5T_NATIVE_UINT64, value) >= 0;
    if (attr >= 0) {
        H5Tclose(type);
        H5Aclose(attr);
    }
    hdf5_leave();
    *present = exists > 0;
    if (exists < 0)
        return mt_errorf(err, errlen, "%s: cannot look up attribute %s (corrupt file?)", s->path, name);
    if (exists > 0 && !ok)
        return mt_errorf(err, errlen, "%s: attribute %s is not one unsigned integer", s->path, name);
    return true;
}

/* Reads count elements of a 1-D dataset from start, as mem_type, into buf. */
static bool read_range(hid_t ds, hid_t mem_type, int64_t start, int64_t count, void *buf)
{
    if (count == 0)
        return true;
    hid_t fspace = H5Dget_space(ds);
    hsize_t off[1] = {(hsize_t)start}, cnt[1] = {(hsize_t)count};
    hid_t mspace = H5Screate_simple(1, cnt, NULL);
    bool ok = fspace >= 0 && mspace >= 0 && H5Sselect_hyperslab(fspace, H5S_SELECT_SET, off, NULL, cnt, NULL) >= 0 &&
              H5Dread(ds, mem_type, mspace, fspace, H5P_DEFAULT, buf) >= 0;
    if (mspace >= 0)
        H5Sclose(mspace);
    if (fspace >= 0)
        H5Sclose(fspace);
    return ok;
}

/* Everything mt_shard_open checks after the file is open. */
static bool shard_validate(mt_shard *s, char *err, size_t errlen)
{
    const char *p = s->path;
    mt_shard_info *in = &s->info;
    if (H5Lexists(s->file, "tokens", H5P_DEFAULT) <= 0)
        return mt_errorf(err, errlen, "%s: no /tokens dataset", p);
    s->tokens = H5Dopen2(s->file, "tokens", H5P_DEFAULT);
    if (s->tokens < 0)
        return mt_errorf(err, errlen, "%s: /tokens cannot be opened (corrupt file?)", p);
    /* Samples are read in random order, a few KB each. Plain chunks are best
     * read straight from the file (no cache); compressed ones must be
     * inflated whole, so keep many of them. */
    hid_t dcpl = H5Dget_create_plist(s->tokens);
    const bool filtered = dcpl >= 0 && H5Pget_layout(dcpl) == H5D_CHUNKED && H5Pget_nfilters(dcpl) > 0;
    if (dcpl >= 0)
        H5Pclose(dcpl);
    hid_t dapl = H5Pcreate(H5P_DATASET_ACCESS);
    if (dapl < 0 || H5Pset_chunk_cache(dapl, filtered ? 1031 : 0, filtered ? (size_t)64 << 20 : 0, 1.0) < 0) {
        if (dapl >= 0)
            H5Pclose(dapl);
        return mt_errorf(err, errlen, "%s: HDF5 cannot set up a chunk cache for /tokens", p);
    }
    H5Dclose(s->tokens);
    s->tokens = H5Dopen2(s->file, "tokens", dapl);
    H5Pclose(dapl);
    if (s->tokens < 0)
        return mt_errorf(err, errlen, "%s: /tokens cannot be opened (corrupt file?)", p);
    if (!dataset_length(s->tokens, &in->n_tokens))
        return mt_errorf(err, errlen, "%s: /tokens must be 1-D", p);
    in->token_bytes = (int)unsigned_int_size(s->tokens);
    if (in->token_bytes != 2 && in->token_bytes != 4)
        return mt_errorf(err, errlen, "%s: /tokens must hold uint16 or uint32 ids", p);

    int64_t version = 0;
    if (!read_int_attr(s->file, "format_version", &version))
        return mt_errorf(err, errlen, "%s: no integer attribute format_version", p);
    if (version != MT_SHARD_FORMAT_VERSION)
        return mt_errorf(err, errlen, "%s: format_version %lld, this build reads %d", p, (long long)version,
                    MT_SHARD_FORMAT_VERSION);
    if (!read_int_attr(s->file, "vocab_size", &in->vocab_size) || in->vocab_size < 1)
        return mt_errorf(err, errlen, "%s: no positive integer attribute vocab_size", p);
    if (in->vocab_size > MT_SHARD_MAX_VOCAB)
        return mt_errorf(err, errlen, "%s: vocab_size %lld is above 2^31: token ids are read as int32", p,
                         (long long)in->vocab_size);
    if (in->token_bytes == 2 && in->vocab_size > 65536)
        return mt_errorf(err, errlen, "%s: vocab_size %lld does not fit the uint16 /tokens", p, (long long)in->vocab_size);
    if (!read_int_attr(s->file, "eos_id", &in->eos_id) || in->eos_id < 0 || in->eos_id >= in->vocab_size)
        return mt_errorf(err, errlen, "%s: attribute eos_id missing or outside [0, vocab_size)", p);
    if (!read_string_attr(s->file, "tokenizer", in->tokenizer, sizeof in->tokenizer))
        return mt_errorf(err, errlen, "%s: no string attribute tokenizer", p);

    if (H5Lexists(s->file, "doc_offsets", H5P_DEFAULT) > 0) {
        hid_t ds = H5Dopen2(s->file, "doc_offsets", H5P_DEFAULT);
        bool ok = ds >= 0 && dataset_length(ds, &in->n_docs) && unsigned_int_size(ds) == 8;
        /* Offsets are distinct and below n_tokens, so there are at most
         * n_tokens of them: a longer claim is refused before it sizes an
         * allocation. */
        const bool too_many = ok && in->n_docs > in->n_tokens;
        size_t bytes = 0;
        const bool fits = ok && !too_many &&
                          !__builtin_mul_overflow((size_t)(in->n_docs > 0 ? in->n_docs : 1), sizeof(uint64_t), &bytes);
        if (fits)
            s->doc_offsets = malloc(bytes);
        const bool read = s->doc_offsets && read_range(ds, H5T_NATIVE_UINT64, 0, in->n_docs, s->doc_offsets);
        if (ds >= 0)
            H5Dclose(ds);
        if (!ok)
            return mt_errorf(err, errlen, "%s: /doc_offsets must be a 1-D uint64 dataset", p);
        if (too_many)
            return mt_errorf(err, errlen, "%s: /doc_offsets has %lld entries, more than the %lld tokens", p,
                             (long long)in->n_docs, (long long)in->n_tokens);
        if (!s->doc_offsets)
            return mt_errorf(err, errlen, "%s: out of memory for the %lld entries of /doc_offsets", p,
                             (long long)in->n_docs);
        if (!read)
            return mt_errorf(err, errlen, "%s: reading /doc_offsets failed (corrupt data?)", p);
        for (int64_t d = 0; d < in->n_docs; d++) {
            uint64_t o = s->doc_offsets[d];
            if ((d == 0 && o != 0) || (d > 0 && o <= s->doc_offsets[d - 1]) || o >= (uint64_t)in->n_tokens)
                return mt_errorf(err, errlen, "%s: /doc_offsets[%lld] = %llu: offsets must start at 0, ascend and "
                            "stay below the %lld tokens", p, (long long)d, (unsigned long long)o,
                            (long long)in->n_tokens);
        }
    }
    if (H5Lexists(s->file, "loss_mask", H5P_DEFAULT) > 0) {
        int64_t n = 0;
        s->mask = H5Dopen2(s->file, "loss_mask", H5P_DEFAULT);
        if (s->mask < 0 || !dataset_length(s->mask, &n) || unsigned_int_size(s->mask) != 1 || n != in->n_tokens)
            return mt_errorf(err, errlen, "%s: /loss_mask must be a 1-D uint8 dataset as long as /tokens", p);
        in->has_loss_mask = true;
    }
    return true;
}

mt_shard *mt_shard_open(const char *path, char *err, size_t errlen)
{
    if (!check_hdf5_file(path, err, errlen))
        return NULL;
    mt_shard *s = calloc(1, sizeof *s);
    if (!s || !(s->path = strdup(path))) {
        free(s);
        mt_errorf(err, errlen, "%s: out of memory", path);
        return NULL;
    }
    s->file = s->tokens = s->mask = -1;
    hdf5_enter();
    s->file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    bool ok = s->file >= 0 ? shard_validate(s, err, errlen)
                           : mt_errorf(err, errlen, "%s: HDF5 cannot open it: truncated or corrupt", path);
    if (!ok)
        shard_free(s);
    hdf5_leave();
    return ok ? s : NULL;
}

bool mt_shard_read_tokens(mt_shard *s, int64_t start, int64_t count, int32_t *out, char *err, size_t errlen)
{
    const mt_shard_info *in = &s->info;
    if (start < 0 || count < 0 || count > in->n_tokens - start)
        return mt_errorf(err, errlen, "%s: %lld tokens from offset %lld are outside its %lld tokens", s->path,
                         (long long)count, (long long)start, (long long)in->n_tokens);
    hdf5_enter();
    /* uint16 ids land in the upper half of out and widen in place, front to back. */
    uint16_t *narrow = (uint16_t *)out + count;
    bool ok = in->token_bytes == 2 ? read_range(s->tokens, H5T_NATIVE_UINT16, start, count, narrow)
                                   : read_range(s->tokens, H5T_NATIVE_UINT32, start, count, out);
    hdf5_leave();
    if (!ok)
        return mt_errorf(err, errlen, "%s: reading tokens [%lld, %lld) failed (corrupt data?)", s->path, (long long)start,
                    (long long)(start + count));
    for (int64_t i = 0; i < count; i++) {
        uint32_t id = in->token_bytes == 2 ? narrow[i] : ((const uint32_t *)out)[i];
        if (id >= in->vocab_size)
            return mt_errorf(err, errlen, "%s: token id %u at offset %lld is not below vocab_size %lld", s->path, id,
                        (long long)(start + i), (long long)in->vocab_size);
        out[i] = (int32_t)id;
    }
    return true;
}

bool mt_shard_read_loss_mask(mt_shard *s, int64_t start, int64_t count, uint8_t *out, char *err, size_t errlen)
{
    if (start < 0 || count < 0 || count > s->info.n_tokens - start)
        return mt_errorf(err, errlen, "%s: a loss mask of %lld tokens from offset %lld is outside its %lld tokens",
                         s->path, (long long)count, (long long)start, (long long)s->info.n_tokens);
    if (!s->info.has_loss_mask) {
        memset(out, 1, (size_t)count);
        return true;
    }
    hdf5_enter();
    bool ok = read_range(s->mask, H5T_NATIVE_UINT8, start, count, out);
    hdf5_leave();
    return ok ? true : mt_errorf(err, errlen, "%s: reading /loss_mask failed (corrupt data?)", s->path);
}

/* ------------------------------------------------------------------------ */
/* Writing. */

typedef struct extra_attr {
    char name[64];
    uint64_t value;
} extra_attr;

struct mt_shard_writer {
    char *path;
    int64_t vocab_size, eos_id;
    char tokenizer[256];
    extra_attr extra[MT_SHARD_MAX_EXTRA_ATTRS];
    int n_extra;
    bool with_mask;
    uint32_t *tokens;
    uint8_t *mask;
    uint64_t *docs;
    int64_t n, cap, mask_cap, n_docs, docs_cap;
};

mt_shard_writer *mt_shard_writer_open(const char *path, int64_t vocab_size, int64_t eos_id, const char *tokenizer,
                                      bool with_loss_mask, char *err, size_t errlen)
{
    if (vocab_size < 1 || vocab_size > MT_SHARD_MAX_VOCAB || eos_id < 0 || eos_id >= vocab_size) {
        mt_errorf(err, errlen, "%s: vocab_size %lld / eos_id %lld: need 0 <= eos_id < vocab_size <= 2^31", path,
             (long long)vocab_size, (long long)eos_id);
        return NULL;
    }
    mt_shard_writer *w = calloc(1, sizeof *w);
    if (!w || !(w->path = strdup(path))) {
        free(w);
        mt_errorf(err, errlen, "%s: out of memory", path);
        return NULL;
    }
    w->vocab_size = vocab_size;
    w->eos_id = eos_id;
    w->with_mask = with_loss_mask;
    snprintf(w->tokenizer, sizeof w->tokenizer, "%s", tokenizer ? tokenizer : "");
    return w;
}

int64_t mt_shard_writer_count(const mt_shard_writer *w)
{
    return w->n;
}

bool mt_shard_writer_add_uint_attr(mt_shard_writer *w, const char *name, uint64_t value, char *err, size_t errlen)
{
    static const char *const format_names[] = {"format_version", "vocab_size", "eos_id", "tokenizer"};
    for (size_t i = 0; i < sizeof format_names / sizeof format_names[0]; i++)
        if (strcmp(name, format_names[i]) == 0)
            return mt_errorf(err, errlen, "%s: attribute %s belongs to the shard format", w->path, name);
    for (int i = 0; i < w->n_extra; i++)
        if (strcmp(name, w->extra[i].name) == 0)
            return mt_errorf(err, errlen, "%s: attribute %s is already recorded", w->path, name);
    if (w->n_extra == MT_SHARD_MAX_EXTRA_ATTRS || !*name || strlen(name) >= sizeof w->extra[0].name)
        return mt_errorf(err, errlen, "%s: attribute %s: at most %d extra attributes, with names of 1 to %zu bytes",
                         w->path, name, MT_SHARD_MAX_EXTRA_ATTRS, sizeof w->extra[0].name - 1);
    extra_attr *a = &w->extra[w->n_extra++];
    snprintf(a->name, sizeof a->name, "%s", name);
    a->value = value;
    return true;
}

static bool grow(void **p, int64_t *cap, int64_t need, size_t elem)
{
    if (need <= *cap)
        return true;
    int64_t c = *cap ? *cap : 4096;
    while (c < need)
        c *= 2;
    void *q = realloc(*p, (size_t)c * elem);
    if (!q)
        return false;
    *p = q;
    *cap = c;
    return true;
}

bool mt_shard_writer_append(mt_shard_writer *w, const int32_t *tokens, const uint8_t *mask, int64_t n,
                            bool doc_start, char *err, size_t errlen)
{
    if (!grow((void **)&w->tokens, &w->cap, w->n + n, sizeof *w->tokens) ||
        (w->with_mask && !grow((void **)&w->mask, &w->mask_cap, w->n + n, 1)) ||
        (doc_start && !grow((void **)&w->docs, &w->docs_cap, w->n_docs + 1, sizeof *w->docs)))
        return mt_errorf(err, errlen, "%s: out of memory gathering %lld tokens", w->path, (long long)(w->n + n));
    for (int64_t i = 0; i < n; i++) {
        if (tokens[i] < 0 || tokens[i] >= w->vocab_size)
            return mt_errorf(err, errlen, "%s: token id %d at offset %lld is outside [0, %lld)", w->path, tokens[i],
                        (long long)(w->n + i), (long long)w->vocab_size);
        w->tokens[w->n + i] = (uint32_t)tokens[i];
        if (w->with_mask)
            w->mask[w->n + i] = mask ? mask[i] : 0;
    }
    if (doc_start)
        w->docs[w->n_docs++] = (uint64_t)w->n;
    w->n += n;
    return true;
}

void mt_shard_writer_abort(mt_shard_writer *w)
{
    if (!w)
        return;
    free(w->tokens);
    free(w->mask);
    free(w->docs);
    free(w->path);
    free(w);
}

/* A 1-D dataset of n elements of file_type from buf (mem_type); chunked
 * (and deflated) when chunk > 0. */
static bool write_dataset(hid_t file, const char *name, hid_t file_type, hid_t mem_type, const void *buf, int64_t n,
                          int64_t chunk, bool compress)
{
    hsize_t dims[1] = {(hsize_t)n};
    hid_t space = H5Screate_simple(1, dims, NULL), dcpl = H5Pcreate(H5P_DATASET_CREATE), ds = -1;
    bool ok = space >= 0 && dcpl >= 0;
    if (ok && chunk > 0 && n > 0) {
        hsize_t c[1] = {(hsize_t)(chunk < n ? chunk : n)};
        ok = H5Pset_chunk(dcpl, 1, c) >= 0 && (!compress || H5Pset_deflate(dcpl, 4) >= 0);
    }
    if (ok)
        ds = H5Dcreate2(file, name, file_type, space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    ok = ok && ds >= 0 && (n == 0 || H5Dwrite(ds, mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) >= 0);
    if (ds >= 0)
        ok = H5Dclose(ds) >= 0 && ok;
    if (dcpl >= 0)
        H5Pclose(dcpl);
    if (space >= 0)
        H5Sclose(space);
    return ok;
}

/* A scalar attribute of file_type from *v (mem_type). */
static bool write_scalar_attr(hid_t file, const char *name, hid_t file_type, hid_t mem_type, const void *v)
{
    hid_t space = H5Screate(H5S_SCALAR);
    hid_t attr = space >= 0 ? H5Acreate2(file, name, file_type, space, H5P_DEFAULT, H5P_DEFAULT) : -1;
    bool ok = attr >= 0 && H5Awrite(attr, mem_type, v) >= 0;
    if (attr >= 0)
        ok = H5Aclose(attr) >= 0 && ok;
    if (space >= 0)
        H5Sclose(space);
    return ok;
}

static bool write_int_attr(hid_t file, const char *name, int64_t v)
{
    return write_scalar_attr(file, name, H5T_STD_I64LE, H5T_NATIVE_INT64, &v);
}

static bool write_string_attr(hid_t file, const char *name, const char *v)
{
    hid_t type = H5Tcopy(H5T_C_S1);
    bool ok = type >= 0 && H5Tset_size(type, strlen(v) + 1) >= 0 && write_scalar_attr(file, name, type, type, v);
    if (type >= 0)
        H5Tclose(type);
    return ok;
}

static bool write_hdf5(const mt_shard_writer *w, const char *tmp, int64_t chunk, bool compress)
{
    hid_t file = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (file < 0)
        return false;
    bool wide = w->vocab_size > 65536, ok = true;
    uint16_t *narrow = NULL;
    if (!wide) {
        narrow = malloc((size_t)(w->n > 0 ? w->n : 1) * sizeof *narrow);
        ok = narrow != NULL;
        for (int64_t i = 0; ok && i < w->n; i++)
            narrow[i] = (uint16_t)w->tokens[i];
    }
    ok = ok && (wide ? write_dataset(file, "tokens", H5T_STD_U32LE, H5T_NATIVE_UINT32, w->tokens, w->n, chunk, compress)
                     : write_dataset(file, "tokens", H5T_STD_U16LE, H5T_NATIVE_UINT16, narrow, w->n, chunk, compress));
    free(narrow);
    ok = ok && (w->n_docs == 0 ||
                write_dataset(file, "doc_offsets", H5T_STD_U64LE, H5T_NATIVE_UINT64, w->docs, w->n_docs, 0, false));
    ok = ok && (!w->with_mask ||
                write_dataset(file, "loss_mask", H5T_STD_U8LE, H5T_NATIVE_UINT8, w->mask, w->n, chunk, compress));
    ok = ok && write_int_attr(file, "format_version", MT_SHARD_FORMAT_VERSION) &&
         write_int_attr(file, "vocab_size", w->vocab_size) && write_int_attr(file, "eos_id", w->eos_id) &&
         write_string_attr(file, "tokenizer", w->tokenizer);
    for (int i = 0; ok && i < w->n_extra; i++)
        ok = write_scalar_attr(file, w->extra[i].name, H5T_STD_U64LE, H5T_NATIVE_UINT64, &w->extra[i].value);
    return H5Fclose(file) >= 0 && ok;
}

/* fsync a file or directory by path. */
static bool sync_path(const char *path, int flags)
{
    int fd = open(path, flags);
    if (fd < 0)
        return false;
    bool ok = fsync(fd) == 0;
    close(fd);
    return ok;
}

bool mt_shard_writer_close(mt_shard_writer *w, int64_t chunk, bool compress, char *err, size_t errlen)
{
    size_t len = strlen(w->path) + 5;
    char *tmp = malloc(len), *dir = strdup(w->path);
    bool ok = tmp && dir;
    if (!ok)
        mt_errorf(err, errlen, "%s: out of memory", w->path);
    if (ok) {
        snprintf(tmp, len, "%s.tmp", w->path);
        hdf5_enter();
        ok = write_hdf5(w, tmp, chunk, compress);
        hdf5_leave();
        if (!ok)
            mt_errorf(err, errlen, "%s: cannot write the shard (is the directory writable?)", tmp);
    }
    if (ok && !sync_path(tmp, O_RDONLY))
        ok = mt_errorf(err, errlen, "%s: fsync failed: %s", tmp, strerror(errno));
    if (ok && rename(tmp, w->path) != 0)
        ok = mt_errorf(err, errlen, "%s: cannot rename to %s: %s", tmp, w->path, strerror(errno));
    if (ok)
        sync_path(dirname(dir), O_RDONLY | O_DIRECTORY); /* make the rename itself durable */
    else if (tmp)
        unlink(tmp);
    free(tmp);
    free(dir);
    mt_shard_writer_abort(w);
    return ok;
}
