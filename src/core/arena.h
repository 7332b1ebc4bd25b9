/* The step arena: a bump allocator for activations and temporaries on one
 * device, reset after each step. When a step outgrows it, the overflow comes
 * from extra blocks and the next reset replaces everything with one block of
 * the peak size, so after the first step no allocation happens in the loop. */
#ifndef MT_ARENA_H
#define MT_ARENA_H

#include <stddef.h>

#include "core/tensor.h"

#define MT_ARENA_ALIGN 256

typedef struct mt_arena_block {
    char *base;
    size_t size, used;
    struct mt_arena_block *next;
} mt_arena_block;

typedef struct mt_arena {
    mt_device device;
    const char *name;
    mt_arena_block *head;   /* the block allocations come from now */
    size_t in_use;          /* bytes handed out since the last reset */
    size_t peak;            /* highest in_use ever seen */
    size_t device_allocs;   /* how many times device memory was allocated */
} mt_arena;

void mt_arena_init(mt_arena *a, mt_device dev, size_t initial_bytes, const char *name);
void mt_arena_release(mt_arena *a);
void *mt_arena_alloc(mt_arena *a, size_t bytes);
void mt_arena_reset(mt_arena *a);

/* Fills the current block with 0xff bytes (NaN in f32 and bf16), so a test
 * can tell whether a kernel wrote every element of its output. */
void mt_arena_poison(mt_arena *a);

#endif
