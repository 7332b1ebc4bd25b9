/* Raw memory on a device: allocation, zeroing and copies between devices.
 * Every failure is fatal with a message naming what was being done. */
#ifndef MT_DEVICE_H
#define MT_DEVICE_H

#include <stdbool.h>
#include <stddef.h>

#include "core/tensor.h"

/* How many CUDA devices are present; 0 in a build without CUDA. */
int mt_cuda_device_count(void);

/* The memory of a device in bytes: the host's physical memory, or the first
 * GPU's; 0 when it cannot be told (no GPU). */
double mt_device_memory_bytes(mt_device dev);

void *mt_device_alloc(mt_device dev, size_t bytes, const char *what);
/* mt_device_alloc that returns NULL when the memory is not there. */
void *mt_device_try_alloc(mt_device dev, size_t bytes);
void mt_device_free(mt_device dev, void *p);
void mt_device_zero(mt_device dev, void *p, size_t bytes);
void mt_device_fill_bytes(mt_device dev, void *p, int byte, size_t bytes);
void mt_device_copy(mt_device dst_dev, void *dst, mt_device src_dev, const void *src, size_t bytes);

/* The value of a one-element tensor on any device, as a double (copied
 * back without an allocation). */
double mt_device_scalar(const mt_tensor *t);

/* Where p points: MT_CUDA for device memory, else MT_CPU (always MT_CPU in
 * a build without CUDA). */
mt_device mt_device_of(const void *p);

/* Host memory that copies to a GPU asynchronously: page-locked where a CUDA
 * device is present (*pinned set), plain aligned memory otherwise. */
void *mt_host_alloc(size_t bytes, bool *pinned, const char *what);
void mt_host_free(void *p, bool pinned);

#endif
