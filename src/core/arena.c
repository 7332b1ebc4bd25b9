#include "core/arena.h"

#include <stdlib.h>

#include "core/device.h"
#include "core/error.h"

static mt_arena_block *block_new(mt_arena *a, size_t size)
{
    mt_arena_block *b = calloc(1, sizeof *b);
    if (!b)
        mt_fatal("arena %s: out of host memory", a->name);
    b->base = mt_device_alloc(a->device, size, a->name);
    b->size = size;
    a->device_allocs++;
    return b;
}

static void blocks_free(mt_arena *a)
{
    for (mt_arena_block *b = a->head, *next; b; b = next) {
        next = b->next;
        mt_device_free(a->device, b->base);
        free(b);
    }
    a->head = NULL;
}

void mt_arena_init(mt_arena *a, mt_device dev, size_t initial_bytes, const char *name)
{
    *a = (mt_arena){.device = dev, .name = name};
    if (initial_bytes)
        a->head = block_new(a, initial_bytes);
}

void mt_arena_release(mt_arena *a)
{
    blocks_free(a);
}

void *mt_arena_alloc(mt_arena *a, size_t bytes)
{
    size_t need = (bytes + MT_ARENA_ALIGN - 1) / MT_ARENA_ALIGN * MT_ARENA_ALIGN;
    if (need == 0)
        need = MT_ARENA_ALIGN;
    if (!a->head || a->head->used + need > a->head->size) {
        size_t size = a->head ? a->head->size * 2 : (size_t)1 << 20;
        while (size < need)
            size *= 2;
        mt_arena_block *b = block_new(a, size);
        b->next = a->head;
        a->head = b;
    }
    void *p = a->head->base + a->head->used;
    a->head->used += need;
    a->in_use += need;
    if (a->in_use > a->peak)
        a->peak = a->in_use;
    return p;
}

void mt_arena_reset(mt_arena *a)
{
    if (a->head && a->head->next) {
        /* The step outgrew one block: from now on one block holds the peak. */
        blocks_free(a);
        a->head = block_new(a, a->peak);
    }
    if (a->head)
        a->head->used = 0;
    a->in_use = 0;
}

void mt_arena_poison(mt_arena *a)
{
    if (a->head)
        mt_device_fill_bytes(a->device, a->head->base, 0xff, a->head->size);
}
