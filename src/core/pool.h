/* The gradient pool: device buffers that are handed out and given back in
 * any order during a step, cached by size. A training step asks for the same
 * sizes in the same order every time, so after the first step every request
 * is met from the cache and no device allocation happens in the loop.
 *
 * The backward gives an activation's gradient back as soon as the op that
 * made the activation has run its own backward (autograd/tape.c), so only
 * the gradients of the layers the backward is working on are alive at once,
 * where a bump arena would hold every activation gradient of the step.
 * Buffers are reused in host order; on one stream that is the order of the
 * kernels that use them (a CUDA op that also uses the side stream joins it
 * before returning), so a buffer given back is not written again before its
 * last reader has run. */
#ifndef MT_POOL_H
#define MT_POOL_H

#include <stdbool.h>
#include <stddef.h>

#include "core/tensor.h"

typedef struct mt_pool_buf {
    void *ptr;
    size_t bytes;
    bool live; /* handed out */
} mt_pool_buf;

typedef struct mt_pool {
    mt_device device;
    const char *name;
    mt_pool_buf *bufs; /* every buffer the pool holds, live or cached */
    int n, cap;
    size_t in_use, peak; /* bytes handed out now, and the most at any time */
    size_t held;         /* bytes the pool holds on the device */
    size_t device_allocs;
} mt_pool;

void mt_pool_init(mt_pool *p, mt_device dev, const char *name);
/* Frees every buffer, live ones included. */
void mt_pool_release(mt_pool *p);

/* A buffer of at least `bytes` (contents undefined): a cached one of exactly
 * the rounded size, else a new one (cached buffers are freed first when the
 * device is short of memory). */
void *mt_pool_alloc(mt_pool *p, size_t bytes);
/* Gives back a buffer from mt_pool_alloc; fatal for any other pointer. */
void mt_pool_free(mt_pool *p, void *ptr);
/* Gives back every live buffer (the end of a step). */
void mt_pool_free_all(mt_pool *p);

#endif
