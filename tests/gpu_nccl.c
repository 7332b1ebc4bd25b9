/* The NCCL communicator on two GPUs (one where only one is present), as
 * processes that meet through the env rendezvous: all-reduce, reduce-scatter, all-gather and broadcast of
 * random device buffers against the sums computed on the host (f32 exact:
 * two addends; bf16 within its rounding), host buffers staged through the
 * GPU, a split into one-rank groups, and a barrier. Then a rank whose peer
 * never starts: its ncclCommInitRank must end the process with the setup
 * guard's message within the timeout, not hang (one GPU is enough); and a
 * rank that stops calling after setup: the other's collective must end its
 * process with the watchdog's message within the timeout (two GPUs only).
 *
 * The program starts itself once per rank and scenario (fresh processes:
 * CUDA does not survive a fork). Exits 77 (SKIPPED) without a GPU. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/device.h"
#include "dist/comm_nccl.h"
#include "dist/rendezvous.h"
#include "kernels/backend.h"
#include "testlib.h"

enum { MAX_WORLD = 2, COUNT = 4099, TIMEOUT_S = 4 };

#define CHECK(cond, ...)                                                                                        \
    do {                                                                                                        \
        if (!(cond)) {                                                                                          \
            fprintf(stderr, "rank %d: ", rank);                                                                 \
            fprintf(stderr, __VA_ARGS__);                                                                       \
            fprintf(stderr, "\n");                                                                              \
            exit(1);                                                                                            \
        }                                                                                                       \
    } while (0)

/* Rank r's value at element i, the same on every rank. */
static float value(int r, size_t i)
{
    return (float)sin(0.37 * (double)i + 1.3 * r) * (1.0f + (float)r);
}

static double rel_err(const float *a, const float *ref, size_t n)
{
    double d = 0, s = 0;
    for (size_t i = 0; i < n; i++) {
        d += ((double)a[i] - ref[i]) * ((double)a[i] - ref[i]);
        s += (double)ref[i] * ref[i];
    }
    return sqrt(d / s);
}

/* buf (n floats) on the device as dtype dt, from host floats. */
static void *to_device(const float *host, size_t n, mt_dtype dt)
{
    mt_tensor h;
    mt_tensor_init(&h, dt, MT_CPU, 1, (int64_t[]){(int64_t)n});
    h.data = malloc(n * mt_dtype_size(dt));
    for (size_t i = 0; i < n; i++)
        mt_set(&h, (int64_t)i, host[i]);
    void *d = mt_device_alloc(MT_CUDA, n * mt_dtype_size(dt), "test buffer");
    mt_device_copy(MT_CUDA, d, MT_CPU, h.data, n * mt_dtype_size(dt));
    free(h.data);
    return d;
}

static void to_host(float *out, const void *dev, size_t n, mt_dtype dt)
{
    mt_tensor h;
    mt_tensor_init(&h, dt, MT_CPU, 1, (int64_t[]){(int64_t)n});
    h.data = malloc(n * mt_dtype_size(dt));
    mt_device_copy(MT_CPU, h.data, MT_CUDA, dev, n * mt_dtype_size(dt));
    for (size_t i = 0; i < n; i++)
        out[i] = (float)mt_get(&h, (int64_t)i);
    free(h.data);
}

static void collectives(mt_comm *c, mt_backend *be, mt_dtype dt, double bound)
{
    const int rank = c->rank, world = c->world;
    const size_t n_all = (size_t)world * COUNT;
    char err[512];
    float *mine = malloc(n_all * sizeof *mine), *sum = malloc(n_all * sizeof *sum);
    float *got = malloc(n_all * sizeof *got);
    for (size_t i = 0; i < n_all; i++) {
        mine[i] = value(rank, i);
        sum[i] = 0;
        for (int r = 0; r < world; r++)
            sum[i] += value(r, i);
    }
    void *buf = to_device(mine, COUNT, dt);
    CHECK(c->all_reduce(c, buf, COUNT, dt, err, sizeof err), "%s", err);
    be->synchronize(be);
    to_host(got, buf, COUNT, dt);
    const double e_ar = rel_err(got, sum, COUNT);

    void *send = to_device(mine, n_all, dt), *recv = mt_device_alloc(MT_CUDA, COUNT * mt_dtype_size(dt), "");
    mt_device_fill_bytes(MT_CUDA, recv, 0xff, COUNT * mt_dtype_size(dt));
    CHECK(c->reduce_scatter(c, send, recv, COUNT, dt, err, sizeof err), "%s", err);
    be->synchronize(be);
    to_host(got, recv, COUNT, dt);
    const double e_rs = rel_err(got, sum + (size_t)rank * COUNT, COUNT);

    void *gathered = mt_device_alloc(MT_CUDA, n_all * mt_dtype_size(dt), "");
    void *part = to_device(mine, COUNT, dt);
    CHECK(c->all_gather(c, part, gathered, COUNT, dt, err, sizeof err), "%s", err);
    be->synchronize(be);
    to_host(got, gathered, n_all, dt);
    float *expect = malloc(n_all * sizeof *expect), *round = malloc(COUNT * sizeof *round);
    for (int r = 0; r < world; r++)
        for (size_t i = 0; i < COUNT; i++)
            expect[(size_t)r * COUNT + i] = value(r, i);
    double e_ag = 0; /* against the values as stored in dt */
    for (int r = 0; r < world; r++) {
        void *d = to_device(expect + (size_t)r * COUNT, COUNT, dt);
        to_host(round, d, COUNT, dt);
        mt_device_free(MT_CUDA, d);
        e_ag = fmax(e_ag, rel_err(got + (size_t)r * COUNT, round, COUNT));
    }
    printf("rank %d %s: all-reduce %.2e, reduce-scatter %.2e, all-gather %.2e (bound %.0e)\n", rank,
           mt_dtype_name(dt), e_ar, e_rs, e_ag, bound);
    CHECK(e_ar <= bound && e_rs <= bound && e_ag == 0, "a collective is off in %s", mt_dtype_name(dt));
    mt_device_free(MT_CUDA, buf);
    mt_device_free(MT_CUDA, send);
    mt_device_free(MT_CUDA, recv);
    mt_device_free(MT_CUDA, gathered);
    mt_device_free(MT_CUDA, part);
    free(mine);
    free(sum);
    free(got);
    free(expect);
    free(round);
}

static int rank_main(const char *scenario)
{
    char err[512];
    mt_rendezvous rv;
    int rank = -1;
    CHECK(mt_rendezvous_from_env(&rv, err, sizeof err), "%s", err);
    rank = rv.rank;
    char why[256];
    mt_backend *be = mt_backend_cuda_create(rv.local_rank, why, sizeof why);
    CHECK(be, "%s", why);
    uint8_t id[MT_NCCL_ID_BYTES] = {0};
    CHECK(rank != 0 || mt_comm_nccl_unique_id(id, sizeof id, err, sizeof err), "%s", err);
    if (!strcmp(scenario, "alone")) { /* rank 0 of 2, whose peer never starts */
        const double t0 = mt_clock_s();
        mt_comm *c = mt_comm_nccl_create(id, 0, 2, rv.local_rank, mt_backend_cuda_stream(be), TIMEOUT_S, err,
                                         sizeof err);
        fprintf(stderr, "rank 0: ncclCommInitRank without its peer returned after %.1f s: %s\n", mt_clock_s() - t0,
                c ? "a communicator" : err);
        return 1;
    }
    CHECK(mt_rendezvous_exchange(&rv, 42, id, sizeof id, 60, err, sizeof err), "%s", err);
    mt_comm *c = mt_comm_nccl_create(id, rank, rv.world, rv.local_rank, mt_backend_cuda_stream(be), TIMEOUT_S, err,
                                     sizeof err);
    CHECK(c, "%s", err);
    if (!strcmp(scenario, "dead")) {
        if (rank == 1)
            _exit(0); /* never calls the collective */
        float x = 1;
        const double t0 = mt_clock_s();
        void *d = to_device(&x, 1, MT_F32);
        c->all_reduce(c, d, 1, MT_F32, err, sizeof err);
        be->synchronize(be); /* blocks until the watchdog ends the process */
        fprintf(stderr, "rank 0: the collective without a peer returned after %.1f s\n", mt_clock_s() - t0);
        return 1;
    }
    collectives(c, be, MT_F32, 0.0);
    collectives(c, be, MT_BF16, 8e-3);
    double host[3] = {rank + 0.5, 1e300 * (rank ? -1 : 1), 1.0 / 3.0}; /* staged through the GPU */
    CHECK(c->all_reduce(c, host, 3, MT_F64, err, sizeof err), "%s", err);
    const double expect[2][3] = {{0.5, 1e300, 1.0 / 3.0}, {2.0, 0.0, 2.0 / 3.0}};
    const double *e = expect[rv.world - 1];
    CHECK(host[0] == e[0] && host[1] == e[1] && host[2] == e[2], "host all-reduce gave %g %g %g", host[0], host[1],
          host[2]);
    char msg[32], want[32];
    const int root = rv.world - 1;
    snprintf(msg, sizeof msg, "from rank %d", rank);
    snprintf(want, sizeof want, "from rank %d", root);
    CHECK(c->broadcast(c, msg, sizeof msg, root, err, sizeof err) && !strcmp(msg, want), "broadcast: %s", msg);
    mt_comm *alone = mt_comm_nccl_split(c, rank, 0, err, sizeof err);
    CHECK(alone && alone->world == 1 && alone->rank == 0, "split: %s", err);
    double one = 7;
    CHECK(alone->all_reduce(alone, &one, 1, MT_F64, err, sizeof err) && one == 7, "one-rank all-reduce");
    CHECK(c->barrier(c, err, sizeof err), "%s", err);
    alone->destroy(alone);
    c->destroy(c);
    be->destroy(be);
    printf("rank %d: ok\n", rank);
    return 0;
}

/* Runs both ranks of a scenario; their exit codes in codes[], and the
 * seconds until the last ended. */
static double run_scenario(const char *self, const char *scenario, int world, int *codes)
{
    const int port = mt_rendezvous_free_port();
    if (port < 0)
        exit(1);
    pid_t pids[MAX_WORLD];
    const double t0 = mt_clock_s();
    fflush(stdout);
    for (int r = 0; r < world; r++) {
        if ((pids[r] = fork()) == 0) {
            mt_rendezvous_set_local_env(r, world, port);
            execl(self, self, "--rank", scenario, (char *)NULL);
            _exit(127);
        }
    }
    for (int r = 0; r < world; r++) {
        int st;
        waitpid(pids[r], &st, 0);
        codes[r] = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    }
    return mt_clock_s() - t0;
}

int main(int argc, char **argv)
{
    if (argc == 3 && !strcmp(argv[1], "--rank"))
        return rank_main(argv[2]);
    const int gpus = mt_cuda_device_count(); /* the ranks are fresh processes: exec, not fork alone */
    if (gpus == 0) {
        printf("SKIPPED: no CUDA device present\n");
        return TL_SKIP;
    }
    const int world = gpus < MAX_WORLD ? gpus : MAX_WORLD;
    int codes[MAX_WORLD] = {0};
    run_scenario(argv[0], "collectives", world, codes);
    if (codes[0] || codes[1]) {
        printf("FAILED: collectives on %d rank(s): the ranks exited with %d and %d\n", world, codes[0], codes[1]);
        return 1;
    }
    double seconds = run_scenario(argv[0], "alone", 1, codes);
    printf("rank 0 of 2 whose peer never starts: exited with %d after %.1f s in ncclCommInitRank (timeout %d s)\n",
           codes[0], seconds, TIMEOUT_S);
    if (codes[0] != MT_NCCL_EXIT_WATCHDOG || seconds > TIMEOUT_S + 20) {
        printf("FAILED: expected exit %d from the setup guard within %d s\n", MT_NCCL_EXIT_WATCHDOG, TIMEOUT_S + 20);
        return 1;
    }
    if (world < 2) {
        printf("one GPU: the collectives ran on one rank; a rank dying after setup needs two GPUs (not checked)\n");
        printf("gpu_nccl: all passed\n");
        return 0;
    }
    seconds = run_scenario(argv[0], "dead", world, codes);
    printf("a rank that never comes: rank 0 exited with %d after %.1f s (timeout %d s)\n", codes[0], seconds,
           TIMEOUT_S);
    if (codes[0] != MT_NCCL_EXIT_WATCHDOG || seconds > 3 * TIMEOUT_S + 10) {
        printf("FAILED: expected exit %d from the watchdog within %d s\n", MT_NCCL_EXIT_WATCHDOG, 3 * TIMEOUT_S + 10);
        return 1;
    }
    printf("gpu_nccl: all passed\n");
    return 0;
}
