#include "dist/buckets.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"

static void *alloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size);
    if (!p)
        mt_fatal("gradient buckets: out of host memory");
    return p;
}

static const mt_tensor **sort_base; /* qsort has no context argument; set only inside init */

static int by_address(const void *a, const void *b)
{
    uintptr_t x = (uintptr_t)sort_base[*(const int *)a], y = (uintptr_t)sort_base[*(const int *)b];
    return x < y ? -1 : x > y;
}

void mt_buckets_init(mt_buckets *b, mt_comm *dp, mt_params *p, size_t bucket_bytes)
{
    *b = (mt_buckets){.comm = dp, .p = p};
    const size_t es = mt_dtype_size(p->dtype), per = bucket_bytes / es ? bucket_bytes / es : 1;
    b->begin = alloc((size_t)p->n, sizeof *b->begin);
    b->count = alloc((size_t)p->n, sizeof *b->count);
    b->first = alloc((size_t)p->n, sizeof *b->first);
    b->end = alloc((size_t)p->n, sizeof *b->end);
    b->ready_at = alloc((size_t)p->n, sizeof *b->ready_at);
    for (int i = 0; i < p->n;) {
        const int k = b->n++;
        b->first[k] = i;
        b->begin[k] = i == 0 ? 0 : p->items[i]->offset;
        do
            i++;
        while (i < p->n && p->items[i]->offset - b->begin[k] < per);
        b->end[k] = i;
        b->count[k] = (i < p->n ? p->items[i]->offset : p->flat_size) - b->begin[k];
    }
    for (int i = 1; i < p->n; i++)
        if (p->items[i]->offset <= p->items[i - 1]->offset)
            mt_fatal("gradient buckets: parameter %s is not after %s in the flat buffer", p->items[i]->name,
                     p->items[i - 1]->name);
    const mt_tensor **values = alloc((size_t)p->n, sizeof *values);
    int *order = alloc((size_t)p->n, sizeof *order);
    for (int i = 0; i < p->n; i++) {
        values[i] = &p->items[i]->value;
        order[i] = i;
    }
    sort_base = values;
    qsort(order, (size_t)p->n, sizeof *order, by_address);
    sort_base = NULL;
    b->by_address = alloc((size_t)p->n, sizeof *b->by_address);
    b->param_of = order;
    for (int i = 0; i < p->n; i++)
        b->by_address[i] = values[order[i]];
    free(values);
}

void mt_buckets_release(mt_buckets *b)
{
    free(b->begin);
    free(b->count);
    free(b->first);
    free(b->end);
    free(b->ready_at);
    free(b->by_address);
    free(b->param_of);
    *b = (mt_buckets){0};
}

/* The parameter whose value tensor t is, or -1. */
static int param_index(const mt_buckets *b, const mt_tensor *t)
{
    int lo = 0, hi = b->p->n - 1;
    while (lo <= hi) {
        const int mid = (lo + hi) / 2;
        if (b->by_address[mid] == t)
            return b->param_of[mid];
        if ((uintptr_t)b->by_address[mid] < (uintptr_t)t)
            lo = mid + 1;
        else
            hi = mid - 1;
    }
    return -1;
}

static void start(mt_buckets *b, int k)
{
    if (b->failed)
        return;
    const size_t es = mt_dtype_size(b->p->dtype);
    if (!b->comm->all_reduce(b->comm, (char *)b->p->grads + b->begin[k] * es, b->count[k], b->p->dtype, b->err,
                             sizeof b->err))
        b->failed = true;
}

/* After node `index`: every bucket from the last down whose earliest
 * reader is at or after it. */
static void after_node(mt_ctx *c, int index, void *arg)
{
    (void)c;
    mt_buckets *b = arg;
    while (b->started < b->n) {
        const int k = b->n - 1 - b->started;
        if (b->ready_at[k] < 0 || b->ready_at[k] < index)
            break;
        start(b, k);
        b->started++;
        b->started_in_backward++;
    }
}

void mt_buckets_arm(mt_buckets *b, mt_ctx *c)
{
    const int np = b->p->n;
    int *first_use = alloc((size_t)np, sizeof *first_use);
    for (int i = 0; i < np; i++)
        first_use[i] = -1;
    for (int i = c->n_nodes - 1; i >= 0; i--) /* down to the earliest reader */
        for (int k = 0; k < c->nodes[i].n_in; k++) {
            const int q = c->nodes[i].in[k] ? param_index(b, c->nodes[i].in[k]) : -1;
            if (q >= 0)
                first_use[q] = i;
        }
    for (int k = 0; k < b->n; k++) {
        int at = INT32_MAX;
        for (int q = b->first[k]; q < b->end[k] && at >= 0; q++)
            at = first_use[q] < 0 ? -1 : (first_use[q] < at ? first_use[q] : at);
        b->ready_at[k] = at;
    }
    free(first_use);
    b->started = b->started_in_backward = 0;
    c->after_node = after_node;
    c->after_node_arg = b;
}

bool mt_buckets_finish(mt_buckets *b, mt_ctx *c, char *err, size_t errlen)
{
    c->after_node = NULL;
    c->after_node_arg = NULL;
    while (b->started < b->n) {
        start(b, b->n - 1 - b->started);
        b->started++;
    }
    const bool ok = !b->failed;
    b->failed = false;
    return ok || mt_errorf(err, errlen, "%s", b->err);
}
