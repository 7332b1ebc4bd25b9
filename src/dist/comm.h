/* The communicator: the collectives data and tensor parallelism need, over
 * flat buffers of one dtype, behind one interface. Implementations: the
 * in-process CPU communicator here (threads as ranks, so every parallel code
 * path runs in CI without GPUs) and NCCL (one process per GPU).
 *
 * Every collective is called by every rank of the group with matching
 * arguments, and sums in a fixed order (ranks 0, 1, ..., W-1), so all ranks
 * get the same bits and a run repeats bit for bit. Reductions accumulate in
 * fp32 for f32 and bf16 buffers, in double for f64. A failure (a rank that
 * never arrives within the timeout, a mismatched call) is an error on every
 * rank that notices it, never a hang. */
#ifndef MT_COMM_H
#define MT_COMM_H

#include <stdbool.h>
#include <stddef.h>

#include "core/tensor.h"

typedef struct mt_comm mt_comm;

struct mt_comm {
    int rank, world;
    void *state; /* implementation-private */

    /* buf (count) += the other ranks' buf, in place. */
    bool (*all_reduce)(mt_comm *c, void *buf, size_t count, mt_dtype dt, char *err, size_t errlen);
    /* recv (count) = slice `rank` of the sum over ranks of send (world * count). */
    bool (*reduce_scatter)(mt_comm *c, const void *send, void *recv, size_t count, mt_dtype dt, char *err,
                           size_t errlen);
    /* recv (world * count) = every rank's send (count), in rank order. */
    bool (*all_gather)(mt_comm *c, const void *send, void *recv, size_t count, mt_dtype dt, char *err,
                       size_t errlen);
    /* buf (bytes) = root's buf. */
    bool (*broadcast)(mt_comm *c, void *buf, size_t bytes, int root, char *err, size_t errlen);
    bool (*barrier)(mt_comm *c, char *err, size_t errlen);
    void (*destroy)(mt_comm *c);
};

/* A group of `world` CPU ranks sharing this process: comms[r] is rank r's
 * communicator, to be used by one thread each. Buffers may be host memory
 * or, for ranks that share one GPU in a test, device memory (copied
 * through the host: slow, and synchronizing). A rank waits at most
 * timeout_s for the others at any collective. Destroy every comm (the
 * group's memory goes with the last). */
void mt_comm_cpu_group(int world, double timeout_s, mt_comm **comms);

#endif
