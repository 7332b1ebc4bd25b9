/* The rendezvous under mpirun, in a build with MPI (MT_HAVE_MPI): the rank,
 * world and local rank come from MPI, rank 0's blob is broadcast, and the
 * configuration hashes are gathered and compared. mpirun itself ends every
 * rank when one dies, so there is no timeout here. Without MPI in the build
 * mt_mpi_launched is false and nothing else is called. */
#ifndef MT_RENDEZVOUS_MPI_H
#define MT_RENDEZVOUS_MPI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* true for MPI_SUCCESS, else false with MPI's message for rc after what in
 * err (MPI builds only). */
bool mt_mpi_ok(int rc, const char *what, char *err, size_t errlen);

/* Whether this build has MPI and the process was started by mpirun. */
bool mt_mpi_launched(void);

/* MPI_Init, and this process's place in MPI_COMM_WORLD. */
bool mt_mpi_init(int *rank, int *world, int *local_rank, char *err, size_t errlen);

/* Rank 0's blob (n bytes) to every rank, and the hashes compared: false on
 * every rank, naming the first rank whose hash differs from rank 0's. */
bool mt_mpi_exchange(uint64_t config_hash, void *blob, size_t n, char *err, size_t errlen);

/* MPI_Finalize when every rank succeeded; else MPI_Abort, which ends the
 * ranks still waiting in a collective for this one. */
void mt_mpi_finalize(bool ok);

#endif
