/* The safetensors format: 8 bytes little-endian header length N, N bytes of
 * JSON header {"name": {"dtype", "shape", "data_offsets": [begin, end]}, ...,
 * "__metadata__": {string: string}}, then the data, offsets relative to its
 * start. The format of HF transformers and the reference's exports, so that
 * checkpoints load there and released weights load here.
 *
 * The reader validates the whole header on open; a tensor's bytes are then
 * read on demand with pread, so a file of many GB is never held in memory. */
#ifndef MT_SAFETENSORS_H
#define MT_SAFETENSORS_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MT_ST_MAX_DIMS 8

typedef enum {
    MT_ST_BOOL, MT_ST_U8, MT_ST_I8, MT_ST_F8_E5M2, MT_ST_F8_E4M3,
    MT_ST_I16, MT_ST_U16, MT_ST_F16, MT_ST_BF16,
    MT_ST_I32, MT_ST_U32, MT_ST_F32,
    MT_ST_I64, MT_ST_U64, MT_ST_F64,
    MT_ST_N_DTYPES
} mt_st_dtype;

/* "F32", "BF16", ... as the format spells them. */
const char *mt_st_dtype_name(mt_st_dtype dt);
size_t mt_st_dtype_size(mt_st_dtype dt);
/* false when name is no dtype of the format */
bool mt_st_dtype_from_name(const char *name, mt_st_dtype *dt);

/* One tensor to write: host_data holds numel * dtype size bytes, row-major. */
typedef struct mt_st_entry {
    const char *name;
    mt_st_dtype dtype;
    int ndim;
    const int64_t *shape;
    const void *host_data;
} mt_st_entry;

/* Writes the tensors in the given order, metadata (an object of strings, or
 * NULL) as __metadata__, and fsyncs the file. Names must be unique and not
 * "__metadata__". On failure the partial file is removed. Making the file
 * appear atomically (temp name, rename) is the caller's part. */
bool mt_safetensors_write(const char *path, const mt_st_entry *entries, int n, const json_t *metadata, char *err,
                          size_t errlen);

/* A tensor as the header describes it; begin and end are absolute file
 * offsets of its bytes. */
typedef struct mt_st_tensor {
    char *name;
    mt_st_dtype dtype;
    int ndim;
    int64_t shape[MT_ST_MAX_DIMS];
    uint64_t begin, end;
} mt_st_tensor;

typedef struct mt_st_file mt_st_file;

/* Opens and validates: header length within the file, JSON valid, every
 * dtype known, byte size = numel * dtype size, offsets inside the data area
 * without overlaps or holes. NULL with a message naming the file (and the
 * key) otherwise. */
mt_st_file *mt_safetensors_open(const char *path, char *err, size_t errlen);
void mt_safetensors_close(mt_st_file *f);

const char *mt_safetensors_path(const mt_st_file *f);
/* The tensors in file order. */
int mt_safetensors_count(const mt_st_file *f);
const mt_st_tensor *mt_safetensors_at(const mt_st_file *f, int i);
/* NULL when the file has no tensor of that name. */
const mt_st_tensor *mt_safetensors_find(const mt_st_file *f, const char *name);
/* __metadata__, or NULL when the file has none; owned by f. */
const json_t *mt_safetensors_metadata(const mt_st_file *f);

/* Reads t's bytes into dst, which holds dst_bytes (must equal t's size). */
bool mt_safetensors_read(const mt_st_file *f, const mt_st_tensor *t, void *dst, size_t dst_bytes, char *err,
                         size_t errlen);

#endif
