/* The restricted pickle interpreter behind io/torch_checkpoint.h (internal:
 * only torch_checkpoint.c and its tests use it). It reads the pickle of a
 * state dict as torch.save writes it (protocol 2, or 2 to 5 from other
 * picklers) and builds nothing but plain data: None, bools, ints, floats,
 * strings, tuples, dicts, storage references and tensor descriptions. The
 * only callables are collections.OrderedDict and torch._utils'
 * _rebuild_tensor_v2 / _rebuild_tensor, interpreted here, never imported. */
#ifndef MT_TORCH_PICKLE_H
#define MT_TORCH_PICKLE_H

#include <stdbool.h>
#include <stddef.h>

#include "io/torch_checkpoint.h"

/* A state dict's pickle is about 100 bytes per tensor; a larger data.pkl is
 * refused before it is read, which also bounds the interpreter's memory
 * (every object costs at least one byte of pickle). */
#define MT_TORCH_MAX_PICKLE_BYTES (16u << 20)

/* Interprets a pickled state dict of len bytes. On success *tensors is a
 * malloc'd array of *n tensors in the dict's order (name and storage strings
 * malloc'd too; free with mt_torch_free_tensors), each with sizes, strides
 * and offset checked against its storage's element count (the storages'
 * bytes are the caller's to check). Otherwise false with a message that
 * starts with `what` (e.g. "FILE: data.pkl") and names the opcode, global,
 * key or byte position at fault. */
bool mt_torch_unpickle(const unsigned char *data, size_t len, const char *what, mt_torch_tensor **tensors, int *n,
                       char *err, size_t errlen);
void mt_torch_free_tensors(mt_torch_tensor *tensors, int n);

#endif
