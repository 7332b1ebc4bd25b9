/* The MPI communicator (comm_mpi.c): CPU ranks started by mpirun. */
#ifndef MT_COMM_MPI_H
#define MT_COMM_MPI_H

#include "dist/comm.h"

/* The ranks of MPI_COMM_WORLD (MPI initialized by the rendezvous) that pass
 * the same color, ranked by key (every rank calls this). NULL with a
 * message in a build without MPI. */
mt_comm *mt_comm_mpi_split(int color, int key, char *err, size_t errlen);

#endif
