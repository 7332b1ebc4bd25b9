/* PyTorch's checkpoint format (torch.save since 1.6), as the released
 * state-spaces models ship it (pytorch_model.bin): a zip archive whose
 * ARCHIVE/data.pkl is a pickled state dict and whose ARCHIVE/data/KEY entries
 * are the raw little-endian storages the tensors view.
 *
 * The pickle is read by a restricted interpreter that knows only the opcodes
 * and globals a plain state dict uses (dict / collections.OrderedDict, the
 * torch._utils tensor-rebuild helpers, the torch.*Storage types) and rejects
 * anything else with an error naming the opcode or global: nothing named in
 * the file is ever imported or executed. Tensors may view a storage with an
 * offset and any strides (a tied weight is the same storage twice); reading
 * one gives its elements row-major. */
#ifndef MT_TORCH_CHECKPOINT_H
#define MT_TORCH_CHECKPOINT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "io/safetensors.h" /* mt_st_dtype, MT_ST_MAX_DIMS */

/* One tensor of the state dict. */
typedef struct mt_torch_tensor {
    char *name;        /* the state dict's key */
    mt_st_dtype dtype; /* from the storage type: FloatStorage F32, HalfStorage F16, BFloat16Storage BF16, ... */
    int ndim;
    int64_t shape[MT_ST_MAX_DIMS];
    int64_t stride[MT_ST_MAX_DIMS]; /* in elements */
    int64_t offset;                 /* storage offset, in elements */
    char *storage;                  /* the storage's key: its bytes are ARCHIVE/data/<storage> */
    int64_t storage_numel;          /* elements in that storage */
} mt_torch_tensor;

typedef struct mt_torch_file mt_torch_file;

/* Opens the archive and interprets data.pkl. Checks that every tensor's
 * elements lie inside its storage and that each storage entry has the size
 * its type and element count give. NULL with a message naming the file (and
 * the key, opcode or global) otherwise: not a zip, a truncated archive, a
 * disallowed opcode or global, a big-endian byteorder, ... */
mt_torch_file *mt_torch_open(const char *path, char *err, size_t errlen);
void mt_torch_close(mt_torch_file *f);

const char *mt_torch_path(const mt_torch_file *f);
/* The tensors in the order of the state dict. */
int mt_torch_count(const mt_torch_file *f);
const mt_torch_tensor *mt_torch_at(const mt_torch_file *f, int i);
/* NULL when the state dict has no such key. */
const mt_torch_tensor *mt_torch_find(const mt_torch_file *f, const char *name);

/* Copies t's elements, row-major, in t's dtype, into dst of dst_bytes (must
 * equal numel * dtype size). */
bool mt_torch_read(const mt_torch_file *f, const mt_torch_tensor *t, void *dst, size_t dst_bytes, char *err,
                   size_t errlen);

#endif
