/* Writes a state dict in PyTorch's checkpoint format (torch.save since 1.6:
 * a zip archive of ARCHIVE/data.pkl, a protocol-2 pickle of {name: tensor},
 * and ARCHIVE/data/<k>, one raw little-endian storage per tensor), so that
 * torch.load and the reference package's from_pretrained read our exports.
 * The pickle names only the globals a plain state dict uses
 * (torch._utils._rebuild_tensor_v2, collections.OrderedDict, the storage
 * types), which torch.load's weights_only mode accepts. */
#ifndef MT_TORCH_SAVE_H
#define MT_TORCH_SAVE_H

#include <stdbool.h>
#include <stddef.h>

#include "io/safetensors.h" /* mt_st_entry */

/* Writes the entries (row-major host data) under ARCHIVE/ in path, which is
 * fsync'd; entries[i] with same_as[i] >= 0 (same_as may be NULL) shares the
 * storage of entries[same_as[i]], an earlier entry of the same dtype and
 * size: a tied weight. On failure the partial file is removed. */
bool mt_torch_save(const char *path, const char *archive, const mt_st_entry *entries, const int *same_as, int n,
                   char *err, size_t errlen);

#endif
