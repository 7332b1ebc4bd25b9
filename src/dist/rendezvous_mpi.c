#include "dist/rendezvous_mpi.h"

#include <stdlib.h>

#include "core/error.h"

#ifdef MT_HAVE_MPI
#include <mpi.h>

bool mt_mpi_launched(void)
{
    /* OpenMPI's mpirun, or a PMI/PMIx launcher (MPICH's, Slurm's srun). */
    return getenv("OMPI_COMM_WORLD_SIZE") || getenv("PMI_SIZE") || getenv("PMIX_RANK");
}

bool mt_mpi_ok(int rc, const char *what, char *err, size_t errlen)
{
    if (rc == MPI_SUCCESS)
        return true;
    char msg[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(rc, msg, &len);
    return mt_errorf(err, errlen, "MPI: %s: %s", what, msg);
}

bool mt_mpi_init(int *rank, int *world, int *local_rank, char *err, size_t errlen)
{
    MPI_Comm node;
    return mt_mpi_ok(MPI_Init(NULL, NULL), "MPI_Init", err, errlen) &&
           mt_mpi_ok(MPI_Comm_rank(MPI_COMM_WORLD, rank), "MPI_Comm_rank", err, errlen) &&
           mt_mpi_ok(MPI_Comm_size(MPI_COMM_WORLD, world), "MPI_Comm_size", err, errlen) &&
           mt_mpi_ok(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, *rank, MPI_INFO_NULL, &node),
                  "MPI_Comm_split_type", err, errlen) &&
           mt_mpi_ok(MPI_Comm_rank(node, local_rank), "MPI_Comm_rank", err, errlen) &&
           mt_mpi_ok(MPI_Comm_free(&node), "MPI_Comm_free", err, errlen);
}

bool mt_mpi_exchange(uint64_t config_hash, void *blob, size_t n, char *err, size_t errlen)
{
    int world;
    if (!mt_mpi_ok(MPI_Comm_size(MPI_COMM_WORLD, &world), "MPI_Comm_size", err, errlen))
        return false;
    uint64_t *hashes = calloc((size_t)world, sizeof *hashes);
    if (!hashes)
        mt_fatal("MPI: out of host memory for %d hashes", world);
    bool ok = mt_mpi_ok(MPI_Allgather(&config_hash, 1, MPI_UINT64_T, hashes, 1, MPI_UINT64_T, MPI_COMM_WORLD),
                     "MPI_Allgather of the config hashes", err, errlen) &&
              mt_mpi_ok(MPI_Bcast(blob, (int)n, MPI_BYTE, 0, MPI_COMM_WORLD), "MPI_Bcast", err, errlen);
    for (int r = 1; ok && r < world; r++)
        if (hashes[r] != hashes[0])
            ok = mt_errorf(err, errlen, "rendezvous (MPI): rank %d runs another configuration than rank 0", r);
    free(hashes);
    return ok;
}

void mt_mpi_finalize(bool ok)
{
    int done = 0;
    MPI_Finalized(&done);
    if (done)
        return;
    if (!ok)
        MPI_Abort(MPI_COMM_WORLD, 1);
    MPI_Finalize();
}

#else

bool mt_mpi_launched(void)
{
    return false;
}

bool mt_mpi_init(int *rank, int *world, int *local_rank, char *err, size_t errlen)
{
    (void)rank, (void)world, (void)local_rank;
    return mt_errorf(err, errlen, "this build has no MPI");
}

bool mt_mpi_exchange(uint64_t config_hash, void *blob, size_t n, char *err, size_t errlen)
{
    (void)config_hash, (void)blob, (void)n;
    return mt_errorf(err, errlen, "this build has no MPI");
}

void mt_mpi_finalize(bool ok)
{
    (void)ok;
}

#endif
