/* Launch by environment: a rank learns its place from the variables that
 * torchrun-style launchers and Slurm scripts set (RANK, WORLD_SIZE,
 * LOCAL_RANK, MASTER_ADDR, MASTER_PORT; under mpirun, OpenMPI's
 * OMPI_COMM_WORLD_RANK / _SIZE / _LOCAL_RANK), and the ranks meet once over
 * TCP at MASTER_ADDR:MASTER_PORT: rank 0 hands every other rank a blob (the
 * NCCL unique id) and checks that all ranks run the same configuration (a
 * hash each sends). Every wait is bounded by a timeout: a rank that never
 * comes is an error, not a hang. Under mpirun in a build with MPI, and
 * without MASTER_ADDR, MPI gives the ranks and carries the exchange
 * instead (rendezvous_mpi.h). */
#ifndef MT_RENDEZVOUS_H
#define MT_RENDEZVOUS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct mt_rendezvous {
    int rank, world, local_rank;
    char addr[256]; /* MASTER_ADDR: a host name or address of rank 0 */
    int port;       /* MASTER_PORT */
    bool mpi;       /* the ranks came from MPI, which carries the exchange */
} mt_rendezvous;

/* Reads the environment. False when a variable is missing or malformed
 * (naming it); a world of 1 needs only WORLD_SIZE=1 or nothing at all. */
bool mt_rendezvous_from_env(mt_rendezvous *r, char *err, size_t errlen);

/* Rank 0: accepts world - 1 connections, receives each rank's config_hash,
 * sends blob (n bytes) and whether all hashes equal its own. Other ranks:
 * connect to addr:port (retrying until the timeout), send config_hash,
 * receive blob into the buffer of n bytes. False on every rank when a rank
 * does not arrive within timeout_s or the hashes differ (naming the rank). */
bool mt_rendezvous_exchange(const mt_rendezvous *r, uint64_t config_hash, void *blob, size_t n, double timeout_s,
                            char *err, size_t errlen);

/* A TCP port on the loopback interface that was free a moment ago (for
 * ranks started on this machine), or -1. */
int mt_rendezvous_free_port(void);

/* Sets the launcher variables (RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR
 * 127.0.0.1, MASTER_PORT) of rank `rank` of `world` ranks on this host, in
 * a child about to exec that rank. */
void mt_rendezvous_set_local_env(int rank, int world, int port);

/* Ends what the rendezvous started (MPI), after the last collective; ok
 * false (this rank failed) ends the other ranks too. */
void mt_rendezvous_finish(const mt_rendezvous *r, bool ok);

#endif
