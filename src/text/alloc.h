/* Allocation in the tokenizer: as elsewhere here, running out of host
 * memory is fatal (core/error.h), so callers need no failure paths. */
#ifndef MT_TEXT_ALLOC_H
#define MT_TEXT_ALLOC_H

#include <stdlib.h>
#include <string.h>

#include "core/error.h"

static inline void *mt_text_realloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (!q)
        mt_fatal("out of host memory (%zu bytes) in the tokenizer", n);
    return q;
}

/* s[0, n) as a NUL-terminated copy. */
static inline char *mt_text_strndup(const char *s, size_t n)
{
    char *d = mt_text_realloc(NULL, n + 1);
    memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

static inline char *mt_text_strdup(const char *s)
{
    return mt_text_strndup(s, strlen(s));
}

#endif
