#include "core/pool.h"

#include <stdlib.h>

#include "core/arena.h"
#include "core/device.h"
#include "core/error.h"

void mt_pool_init(mt_pool *p, mt_device dev, const char *name)
{
    *p = (mt_pool){.device = dev, .name = name};
}

void mt_pool_release(mt_pool *p)
{
    for (int i = 0; i < p->n; i++)
        mt_device_free(p->device, p->bufs[i].ptr);
    free(p->bufs);
    *p = (mt_pool){.device = p->device, .name = p->name};
}

/* Frees the cached buffers (not the live ones): the device is short of memory. */
static void drop_cached(mt_pool *p)
{
    int kept = 0;
    for (int i = 0; i < p->n; i++) {
        if (p->bufs[i].live) {
            p->bufs[kept++] = p->bufs[i];
            continue;
        }
        mt_device_free(p->device, p->bufs[i].ptr);
        p->held -= p->bufs[i].bytes;
    }
    p->n = kept;
}

void *mt_pool_alloc(mt_pool *p, size_t bytes)
{
    size_t need = (bytes + MT_ARENA_ALIGN - 1) / MT_ARENA_ALIGN * MT_ARENA_ALIGN;
    if (need == 0)
        need = MT_ARENA_ALIGN;
    mt_pool_buf *b = NULL;
    for (int i = 0; i < p->n && !b; i++)
        if (!p->bufs[i].live && p->bufs[i].bytes == need)
            b = &p->bufs[i];
    if (!b) {
        void *ptr = mt_device_try_alloc(p->device, need);
        if (!ptr) {
            drop_cached(p);
            ptr = mt_device_try_alloc(p->device, need);
        }
        if (!ptr)
            mt_fatal("%s: out of %s memory for %zu bytes (%zu bytes in use)", p->name,
                     p->device == MT_CUDA ? "GPU" : "host", need, p->in_use);
        if (p->n == p->cap) {
            p->cap = p->cap ? 2 * p->cap : 64;
            p->bufs = realloc(p->bufs, (size_t)p->cap * sizeof *p->bufs);
            if (!p->bufs)
                mt_fatal("%s: out of host memory for %d buffers", p->name, p->cap);
        }
        b = &p->bufs[p->n++];
        *b = (mt_pool_buf){.ptr = ptr, .bytes = need};
        p->held += need;
        p->device_allocs++;
    }
    b->live = true;
    p->in_use += need;
    if (p->in_use > p->peak)
        p->peak = p->in_use;
    return b->ptr;
}

void mt_pool_free(mt_pool *p, void *ptr)
{
    for (int i = 0; i < p->n; i++)
        if (p->bufs[i].ptr == ptr && p->bufs[i].live) {
            p->bufs[i].live = false;
            p->in_use -= p->bufs[i].bytes;
            return;
        }
    mt_fatal("%s: %p was not handed out by this pool", p->name, ptr);
}

void mt_pool_free_all(mt_pool *p)
{
    for (int i = 0; i < p->n; i++)
        p->bufs[i].live = false;
    p->in_use = 0;
}
