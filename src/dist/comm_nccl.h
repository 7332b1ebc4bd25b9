/* The NCCL communicator (comm_nccl.c): one process per GPU. Absent from a
 * build without CUDA, where creating one is an error. */
#ifndef MT_COMM_NCCL_H
#define MT_COMM_NCCL_H

#include <stdbool.h>
#include <stddef.h>

#include "dist/comm.h"

#define MT_NCCL_ID_BYTES 128     /* sizeof(ncclUniqueId) */
#define MT_NCCL_EXIT_WATCHDOG 3 /* the exit status of a process the watchdog ends */

/* Rank 0 makes the id (MT_NCCL_ID_BYTES) that every rank then passes to
 * mt_comm_nccl_create; the launcher hands it over (rendezvous or MPI). */
bool mt_comm_nccl_unique_id(void *id, size_t n, char *err, size_t errlen);

/* This process's rank of world on CUDA device `device`. compute_stream is
 * the backend's stream (mt_backend_cuda_stream): collectives are ordered
 * with the work queued on it. Every rank not having joined within
 * timeout_s, a collective not done within it, or an asynchronous NCCL
 * error, ends the process with a message (exit MT_NCCL_EXIT_WATCHDOG). */
mt_comm *mt_comm_nccl_create(const void *id, int rank, int world, int device, void *compute_stream, double timeout_s,
                             char *err, size_t errlen);

/* The ranks of parent that pass the same color form a new communicator,
 * ranked by key (every rank of parent calls this, within parent's timeout). */
mt_comm *mt_comm_nccl_split(mt_comm *parent, int color, int key, char *err, size_t errlen);

#endif
