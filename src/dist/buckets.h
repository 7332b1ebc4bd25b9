/* Data-parallel gradient all-reduce in buckets, overlapped with the
 * backward. The flat gradient buffer is cut at parameter boundaries into
 * buckets of about bucket_bytes. Before the step's last backward the tape
 * tells, per bucket, the earliest node that reads one of its parameters:
 * once the backward has passed that node, every gradient in the bucket is
 * final, and its all-reduce starts (on the communicator's stream, while the
 * backward goes on). Buckets start from the end of the buffer, in the same
 * order on every rank (the ranks' tapes are alike). Parameters that no node
 * of the tape reads (a recomputed block's) keep their bucket to the end.
 * The sums are the plain all-reduce's, bit for bit. */
#ifndef MT_BUCKETS_H
#define MT_BUCKETS_H

#include <stdbool.h>
#include <stddef.h>

#include "autograd/tape.h"
#include "core/params.h"
#include "dist/comm.h"

typedef struct mt_buckets {
    mt_comm *comm; /* the data-parallel group, borrowed */
    mt_params *p;
    int n;
    size_t *begin, *count; /* each bucket's elements of the flat buffers; together all of them */
    int *first, *end;      /* each bucket's parameters, p->items[first .. end) */
    const mt_tensor **by_address; /* the parameters' value tensors, sorted by address */
    int *param_of;                /* p->items index of by_address[i] */
    int *ready_at; /* this step: the tape index after which the bucket is final; -1: after the backward */
    int started;   /* buckets started this step, from the last */
    int started_in_backward;
    bool failed;
    char err[512];
} mt_buckets;

void mt_buckets_init(mt_buckets *b, mt_comm *dp, mt_params *p, size_t bucket_bytes);
void mt_buckets_release(mt_buckets *b);

/* Before the step's last backward on c: reads c's tape and hooks c's
 * backward (c->after_node) to start each bucket when it is final. */
void mt_buckets_arm(mt_buckets *b, mt_ctx *c);

/* After that backward: starts the buckets left, unhooks c. False (with the
 * first failure's message) when a collective failed. */
bool mt_buckets_finish(mt_buckets *b, mt_ctx *c, char *err, size_t errlen);

#endif
