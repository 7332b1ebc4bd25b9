/* How mamba-train becomes one rank of a multi-GPU run.
 *
 * A launcher (torchrun-style scripts, Slurm, mpirun, or `--gpus N` below)
 * starts one process per GPU and tells it its place in the environment
 * (dist/rendezvous.h). The process takes GPU LOCAL_RANK, meets the others
 * once over TCP (rank 0 hands out the NCCL id and checks that every rank
 * runs the same effective configuration), builds the NCCL communicator
 * and splits it into its tensor-parallel group (tp_size consecutive ranks)
 * and its data-parallel group (the ranks with its tp rank), then trains.
 * Ranks on the CPU (train.device = cpu, or no GPU) need mpirun in a build
 * with MPI, whose communicator carries their collectives. Without launcher
 * variables it is the single rank. */
#ifndef MT_LAUNCH_H
#define MT_LAUNCH_H

#include <stdbool.h>
#include <stddef.h>

#include "train/trainer.h"

#include "dist/rendezvous.h"

/* Runs cfg as rank rv (from mt_rendezvous_from_env); a world of one is the
 * plain single-process run. */
bool mt_launch_rank(const mt_rendezvous *rv, const mt_train_config *cfg, const mt_train_options *opt,
                    mt_train_result *res, char *err, size_t errlen);

/* --gpus N: runs this program (argv without --gpus N) as N local ranks,
 * each with RANK = LOCAL_RANK = i, WORLD_SIZE = N and rank 0 at 127.0.0.1
 * on a free port, and waits for them. SIGINT and SIGTERM are passed on (the
 * ranks stop together with a checkpoint); when a rank fails, the others
 * are stopped. Returns the exit status: 0, the first failing rank's, or
 * MT_EXIT_STOPPED_BY_SIGNAL when the ranks stopped on a signal after their
 * checkpoint. */
int mt_launch_local(int n, char **argv);

#endif
