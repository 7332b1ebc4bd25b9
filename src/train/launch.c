#include "train/launch.h"

#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/error.h"
#include "core/device.h"
#include "dist/comm_mpi.h"
#include "dist/comm_nccl.h"
#include "dist/rendezvous.h"
#include "train/dist_train.h"

/* FNV-1a of the effective configuration as mt_train_config_write prints it. */
static uint64_t config_hash(const mt_train_config *cfg)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (!f)
        mt_fatal("out of host memory hashing the configuration");
    mt_train_config_write(f, cfg);
    fclose(f);
    uint64_t h = 14695981039346656037ull;
    for (size_t i = 0; i < len; i++)
        h = (h ^ (uint8_t)text[i]) * 1099511628211ull;
    free(text);
    return h;
}

/* The world communicator from the NCCL id as this rank's tp or dp group,
 * or split into both (world then kept beside them). */
static bool make_groups(const mt_rendezvous *rv, const mt_train_config *cfg, const uint8_t *id, mt_backend *be,
                        mt_comm **world, mt_comm **dp, mt_comm **tp, char *err, size_t errlen)
{
    const int tp_size = cfg->dist.tp_size;
    *world = mt_comm_nccl_create(id, rv->rank, rv->world, mt_backend_cuda_device(be), mt_backend_cuda_stream(be),
                                 cfg->dist.timeout_s, err, errlen);
    if (!*world)
        return false;
    if (tp_size == 1 || tp_size == rv->world) { /* one kind of group: the world is it */
        *(tp_size == 1 ? dp : tp) = *world;
        *world = NULL;
        return true;
    }
    const int tp_rank = rv->rank % tp_size, dp_rank = rv->rank / tp_size;
    return (*tp = mt_comm_nccl_split(*world, dp_rank, tp_rank, err, errlen)) &&
           (*dp = mt_comm_nccl_split(*world, tp_rank, dp_rank, err, errlen));
}

/* CPU ranks under mpirun: the groups are MPI communicators. */
static bool train_on_cpu(const mt_rendezvous *rv, const mt_train_config *cfg, const mt_train_options *opt,
                         mt_train_result *res, char *err, size_t errlen)
{
    if (!rv->mpi)
        return mt_errorf(err, errlen, "a run of %d ranks on the CPU needs mpirun in a build with MPI (the CPU "
                         "ranks talk through MPI; NCCL needs a GPU per rank)", rv->world);
    const int tp_size = cfg->dist.tp_size, tp_rank = rv->rank % tp_size, dp_rank = rv->rank / tp_size;
    if (!mt_rendezvous_exchange(rv, config_hash(cfg), NULL, 0, cfg->dist.timeout_s, err, errlen))
        return false;
    mt_comm *tp = NULL, *dp = NULL;
    bool ok = (tp_size == 1 || (tp = mt_comm_mpi_split(dp_rank, tp_rank, err, errlen))) &&
              (rv->world == tp_size || (dp = mt_comm_mpi_split(tp_rank, dp_rank, err, errlen)));
    if (ok) {
        mt_train_options o = *opt;
        o.dp = dp;
        o.tp = tp;
        ok = mt_train(cfg, &o, res, err, errlen);
    }
    if (tp)
        tp->destroy(tp);
    if (dp)
        dp->destroy(dp);
    return ok;
}

bool mt_launch_rank(const mt_rendezvous *rv, const mt_train_config *cfg, const mt_train_options *opt,
                    mt_train_result *res, char *err, size_t errlen)
{
    if (rv->world == 1)
        return mt_train(cfg, opt, res, err, errlen);
    if (rv->world % cfg->dist.tp_size != 0)
        return mt_errorf(err, errlen, "[dist] tp_size = %d does not divide the %d ranks", cfg->dist.tp_size,
                         rv->world);
    if (cfg->train.device == MT_DEVICE_CPU || (cfg->train.device == MT_DEVICE_AUTO && mt_cuda_device_count() == 0))
        return train_on_cpu(rv, cfg, opt, res, err, errlen);
    /* The ranks meet before taking a GPU: another configuration is named
     * first, and no rank holds a GPU while waiting for a late one. */
    uint8_t id[MT_NCCL_ID_BYTES] = {0};
    if ((rv->rank == 0 && !mt_comm_nccl_unique_id(id, sizeof id, err, errlen)) ||
        !mt_rendezvous_exchange(rv, config_hash(cfg), id, sizeof id, cfg->dist.timeout_s, err, errlen))
        return false;
    char why[256];
    mt_backend *be = mt_backend_cuda_create(rv->local_rank, why, sizeof why);
    if (!be)
        return mt_errorf(err, errlen, "rank %d: GPU %d (LOCAL_RANK): %s", rv->rank, rv->local_rank, why);
    mt_comm *world = NULL, *dp = NULL, *tp = NULL;
    bool ok = make_groups(rv, cfg, id, be, &world, &dp, &tp, err, errlen);
    if (ok) {
        mt_train_options o = *opt;
        o.backend = be;
        o.dp = dp;
        o.tp = tp;
        ok = mt_train(cfg, &o, res, err, errlen);
    }
    mt_comm *comms[3] = {tp, dp, world};
    for (int i = 0; i < 3; i++)
        if (comms[i])
            comms[i]->destroy(comms[i]);
    be->destroy(be);
    return ok;
}

/* ---- --gpus N ---- */

static volatile sig_atomic_t forwarded_signal;

static void on_signal(int sig)
{
    forwarded_signal = sig;
}

static void signal_all(const pid_t *pids, int n, int sig)
{
    for (int i = 0; i < n; i++)
        if (pids[i] > 0)
            kill(pids[i], sig);
}

int mt_launch_local(int n, char **argv)
{
    const int port = mt_rendezvous_free_port();
    if (port < 0) {
        fprintf(stderr, "mamba-train --gpus %d: no free TCP port for the rendezvous: %s\n", n, strerror(errno));
        return 1;
    }
    pid_t *pids = calloc((size_t)n, sizeof *pids);
    if (!pids)
        mt_fatal("out of host memory for %d ranks", n);
    fflush(stdout);
    fflush(stderr);
    for (int i = 0; i < n; i++) {
        pids[i] = fork();
        if (pids[i] < 0) {
            fprintf(stderr, "mamba-train --gpus %d: cannot start rank %d: %s\n", n, i, strerror(errno));
            signal_all(pids, i, SIGKILL);
            free(pids);
            return 1;
        }
        if (pids[i] == 0) {
            mt_rendezvous_set_local_env(i, n, port);
            execv("/proc/self/exe", argv);
            fprintf(stderr, "mamba-train --gpus %d: rank %d: cannot run /proc/self/exe: %s\n", n, i, strerror(errno));
            _exit(127);
        }
    }
    struct sigaction sa = {.sa_handler = on_signal}, old_int, old_term;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
    int status = 0, running = n;
    bool stopped = false; /* a rank stopped on a signal after the checkpoint: not a failure */
    double kill_at = 0;   /* when set: the ranks left get SIGKILL then */
    while (running > 0) {
        if (forwarded_signal) {
            signal_all(pids, n, forwarded_signal);
            forwarded_signal = 0;
        }
        int st;
        pid_t done = waitpid(-1, &st, WNOHANG);
        if (done <= 0) {
            if (kill_at > 0 && mt_clock_s() > kill_at) {
                signal_all(pids, n, SIGKILL);
                kill_at = 0;
            }
            nanosleep(&(struct timespec){0, 50 * 1000 * 1000}, NULL);
            continue;
        }
        running--;
        for (int i = 0; i < n; i++) {
            if (pids[i] != done)
                continue;
            pids[i] = 0;
            const int code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
            stopped = stopped || code == MT_EXIT_STOPPED_BY_SIGNAL;
            if (code != 0 && code != MT_EXIT_STOPPED_BY_SIGNAL && status == 0) {
                /* The others would wait for it until their timeout. */
                fprintf(stderr, "mamba-train --gpus %d: rank %d exited with status %d: stopping the other ranks\n",
                        n, i, code);
                status = code;
                signal_all(pids, n, SIGTERM);
                kill_at = mt_clock_s() + 10.0;
            }
        }
    }
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    free(pids);
    return status != 0 ? status : stopped ? MT_EXIT_STOPPED_BY_SIGNAL : 0;
}
