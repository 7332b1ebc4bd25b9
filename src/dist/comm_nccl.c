/* The NCCL communicator: one process per GPU. Collectives run on the comm's
 * own stream, ordered after the work the backend's stream had queued when
 * they were called and before the work it queues afterwards (two events),
 * so the host never waits for them. Buffers are device memory; a host
 * buffer (a scalar such as a gradient norm) is staged through a device
 * buffer and the call then waits for the result.
 *
 * A rank that dies or stops calling leaves NCCL kernels spinning on the
 * other GPUs, and their host threads stuck in the next synchronization. A
 * watchdog thread per communicator therefore polls NCCL's asynchronous
 * error and the completion of every collective in flight; an error, or a
 * collective not finished within the timeout, aborts the communicator and
 * ends the process with a message naming the rank and the collective; a
 * guard thread does the same for the setup calls (init, split), which wait
 * for every rank. */
#include <cuda_runtime.h>
#include <nccl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/error.h"
#include "dist/comm.h"
#include "dist/comm_nccl.h"

_Static_assert(sizeof(ncclUniqueId) == MT_NCCL_ID_BYTES, "MT_NCCL_ID_BYTES is not NCCL's id size");

enum { IN_FLIGHT = 64 }; /* collectives tracked at once; a 65th waits for the oldest */

typedef struct pending {
    cudaEvent_t done;
    double issued_s;
    const char *what;
    size_t count;
} pending;

typedef struct nccl_state {
    ncclComm_t comm;
    int device;
    cudaStream_t compute; /* the backend's stream, borrowed */
    cudaStream_t stream;  /* the comm's own */
    cudaEvent_t ready;
    double timeout_s;
    void *staging; /* device copy of host buffers */
    size_t staging_bytes;

    pthread_t watchdog;
    pthread_mutex_t lock;
    pthread_cond_t freed;
    pending ring[IN_FLIGHT];
    int head, n_pending; /* oldest in flight, and how many */
    bool stop;
} nccl_state;

static bool cuda_ok(cudaError_t e, const char *what, char *err, size_t errlen)
{
    return e == cudaSuccess || mt_errorf(err, errlen, "NCCL communicator: %s: %s", what, cudaGetErrorString(e));
}

static bool nccl_ok(ncclResult_t r, nccl_state *s, const char *what, char *err, size_t errlen)
{
    if (r == ncclSuccess)
        return true;
    const char *last = s && s->comm ? ncclGetLastError(s->comm) : ncclGetLastError(NULL);
    return mt_errorf(err, errlen, "NCCL communicator: %s: %s%s%s", what, ncclGetErrorString(r),
                     last && *last ? ": " : "", last ? last : "");
}

static bool nccl_type(mt_dtype dt, ncclDataType_t *t, char *err, size_t errlen)
{
    switch (dt) {
    case MT_F32: *t = ncclFloat32; return true;
    case MT_BF16: *t = ncclBfloat16; return true;
    case MT_F64: *t = ncclFloat64; return true;
    default: return mt_errorf(err, errlen, "NCCL communicator: dtype %s is not f32, bf16 or f64", mt_dtype_name(dt));
    }
}

/* Ends the process: the main thread may be blocked inside CUDA for good. */
#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
static void die(const mt_comm *c, const char *fmt, ...)
{
    nccl_state *s = c->state;
    fprintf(stderr, "rank %d of %d: NCCL communicator: ", c->rank, c->world);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "; aborting the communicator and exiting\n");
    fflush(stderr);
    fflush(stdout);
    ncclCommAbort(s->comm);
    _exit(MT_NCCL_EXIT_WATCHDOG);
}

static void *watchdog_main(void *arg)
{
    mt_comm *c = arg;
    nccl_state *s = c->state;
    cudaSetDevice(s->device);
    const struct timespec tick = {0, 20 * 1000 * 1000};
    for (;;) {
        pthread_mutex_lock(&s->lock);
        if (s->stop) {
            pthread_mutex_unlock(&s->lock);
            return NULL;
        }
        ncclResult_t async = ncclSuccess;
        ncclCommGetAsyncError(s->comm, &async);
        if (async != ncclSuccess && async != ncclInProgress)
            die(c, "%s failed asynchronously: %s (%s)", s->n_pending ? s->ring[s->head].what : "a collective",
                ncclGetErrorString(async), ncclGetLastError(s->comm));
        while (s->n_pending) {
            pending *p = &s->ring[s->head];
            cudaError_t q = cudaEventQuery(p->done);
            if (q == cudaErrorNotReady) {
                if (mt_clock_s() - p->issued_s > s->timeout_s)
                    die(c, "%s of %zu elements did not complete within %g s: another rank is gone or stuck", p->what,
                        p->count, s->timeout_s);
                break;
            }
            if (q != cudaSuccess)
                die(c, "%s of %zu elements: %s", p->what, p->count, cudaGetErrorString(q));
            s->head = (s->head + 1) % IN_FLIGHT;
            s->n_pending--;
            pthread_cond_broadcast(&s->freed);
        }
        pthread_mutex_unlock(&s->lock);
        nanosleep(&tick, NULL);
    }
}

/* Orders the comm's stream after the compute stream's queued work. */
static bool begin(nccl_state *s, char *err, size_t errlen)
{
    return cuda_ok(cudaEventRecord(s->ready, s->compute), "cudaEventRecord", err, errlen) &&
           cuda_ok(cudaStreamWaitEvent(s->stream, s->ready, 0), "cudaStreamWaitEvent", err, errlen);
}

/* Records the collective for the watchdog and orders the compute stream
 * after it. */
static bool end(nccl_state *s, const char *what, size_t count, char *err, size_t errlen)
{
    pthread_mutex_lock(&s->lock);
    while (s->n_pending == IN_FLIGHT)
        pthread_cond_wait(&s->freed, &s->lock);
    pending *p = &s->ring[(s->head + s->n_pending) % IN_FLIGHT];
    p->issued_s = mt_clock_s();
    p->what = what;
    p->count = count;
    bool ok = cuda_ok(cudaEventRecord(p->done, s->stream), "cudaEventRecord", err, errlen) &&
              cuda_ok(cudaStreamWaitEvent(s->compute, p->done, 0), "cudaStreamWaitEvent", err, errlen);
    if (ok)
        s->n_pending++;
    pthread_mutex_unlock(&s->lock);
    return ok;
}

static bool is_host(const void *p)
{
    struct cudaPointerAttributes a;
    if (cudaPointerGetAttributes(&a, p) != cudaSuccess) {
        cudaGetLastError(); /* clear the error of a plain host pointer on older runtimes */
        return true;
    }
    return a.type == cudaMemoryTypeUnregistered || a.type == cudaMemoryTypeHost;
}

static bool staging(nccl_state *s, size_t bytes, char *err, size_t errlen)
{
    if (bytes <= s->staging_bytes)
        return true;
    if (s->staging && !cuda_ok(cudaFree(s->staging), "cudaFree", err, errlen))
        return false;
    s->staging = NULL;
    s->staging_bytes = 0;
    if (!cuda_ok(cudaMalloc(&s->staging, bytes), "cudaMalloc of the staging buffer", err, errlen))
        return false;
    s->staging_bytes = bytes;
    return true;
}

/* Waits for the comm's stream, polling so that a stuck peer is a timeout. */
static bool wait_stream(mt_comm *c, const char *what, char *err, size_t errlen)
{
    nccl_state *s = c->state;
    const double t0 = mt_clock_s();
    const struct timespec tick = {0, 100 * 1000};
    for (;;) {
        cudaError_t q = cudaStreamQuery(s->stream);
        if (q == cudaSuccess)
            return true;
        if (q != cudaErrorNotReady)
            return cuda_ok(q, what, err, errlen);
        if (mt_clock_s() - t0 > s->timeout_s)
            return mt_errorf(err, errlen, "NCCL communicator: %s did not complete within %g s", what, s->timeout_s);
        nanosleep(&tick, NULL);
    }
}

/* An all-reduce (root < 0) or a broadcast from root of a host buffer of
 * bytes: through the staging buffer, and waited for. The collective is
 * recorded for the watchdog, since the copy back may block this thread
 * until it is done. */
static bool on_host(mt_comm *c, void *buf, size_t count, ncclDataType_t t, size_t bytes, int root, char *err,
                    size_t errlen)
{
    nccl_state *s = c->state;
    const char *what = root < 0 ? "all-reduce of a host buffer" : "broadcast of a host buffer";
    if (!staging(s, bytes, err, errlen) ||
        !cuda_ok(cudaMemcpyAsync(s->staging, buf, bytes, cudaMemcpyHostToDevice, s->stream), "copy to the GPU", err,
                 errlen))
        return false;
    ncclResult_t r = root < 0 ? ncclAllReduce(s->staging, s->staging, count, t, ncclSum, s->comm, s->stream)
                              : ncclBroadcast(s->staging, s->staging, bytes, ncclUint8, root, s->comm, s->stream);
    return nccl_ok(r, s, root < 0 ? "ncclAllReduce" : "ncclBroadcast", err, errlen) &&
           end(s, what, count, err, errlen) &&
           cuda_ok(cudaMemcpyAsync(buf, s->staging, bytes, cudaMemcpyDeviceToHost, s->stream), "copy to the host",
                   err, errlen) &&
           wait_stream(c, what, err, errlen);
}

static bool nccl_all_reduce(mt_comm *c, void *buf, size_t count, mt_dtype dt, char *err, size_t errlen)
{
    nccl_state *s = c->state;
    ncclDataType_t t = ncclFloat32;
    if (!nccl_type(dt, &t, err, errlen) || !begin(s, err, errlen))
        return false;
    if (is_host(buf))
        return on_host(c, buf, count, t, count * mt_dtype_size(dt), -1, err, errlen);
    return nccl_ok(ncclAllReduce(buf, buf, count, t, ncclSum, s->comm, s->stream), s, "ncclAllReduce", err, errlen) &&
           end(s, "all-reduce", count, err, errlen);
}

static bool nccl_reduce_scatter(mt_comm *c, const void *send, void *recv, size_t count, mt_dtype dt, char *err,
                                size_t errlen)
{
    nccl_state *s = c->state;
    ncclDataType_t t = ncclFloat32;
    return nccl_type(dt, &t, err, errlen) && begin(s, err, errlen) &&
           nccl_ok(ncclReduceScatter(send, recv, count, t, ncclSum, s->comm, s->stream), s, "ncclReduceScatter", err,
                   errlen) &&
           end(s, "reduce-scatter", count, err, errlen);
}

static bool nccl_all_gather(mt_comm *c, const void *send, void *recv, size_t count, mt_dtype dt, char *err,
                            size_t errlen)
{
    nccl_state *s = c->state;
    ncclDataType_t t = ncclFloat32;
    return nccl_type(dt, &t, err, errlen) && begin(s, err, errlen) &&
           nccl_ok(ncclAllGather(send, recv, count, t, s->comm, s->stream), s, "ncclAllGather", err, errlen) &&
           end(s, "all-gather", count, err, errlen);
}

static bool nccl_broadcast(mt_comm *c, void *buf, size_t bytes, int root, char *err, size_t errlen)
{
    nccl_state *s = c->state;
    if (root < 0 || root >= c->world)
        return mt_errorf(err, errlen, "NCCL communicator: broadcast root %d of %d ranks", root, c->world);
    if (!begin(s, err, errlen))
        return false;
    if (is_host(buf))
        return on_host(c, buf, bytes, ncclUint8, bytes, root, err, errlen);
    return nccl_ok(ncclBroadcast(buf, buf, bytes, ncclUint8, root, s->comm, s->stream), s, "ncclBroadcast", err,
                   errlen) &&
           end(s, "broadcast", bytes, err, errlen);
}

/* A one-element all-reduce, waited for: every rank has reached this point
 * and all earlier collectives are done. */
static bool nccl_barrier(mt_comm *c, char *err, size_t errlen)
{
    float one = 1;
    return nccl_all_reduce(c, &one, 1, MT_F32, err, errlen) && wait_stream(c, "barrier", err, errlen);
}

static void nccl_destroy(mt_comm *c)
{
    nccl_state *s = c->state;
    pthread_mutex_lock(&s->lock);
    s->stop = true;
    pthread_mutex_unlock(&s->lock);
    pthread_join(s->watchdog, NULL);
    cudaStreamSynchronize(s->stream);
    ncclCommDestroy(s->comm);
    for (int i = 0; i < IN_FLIGHT; i++)
        cudaEventDestroy(s->ring[i].done);
    cudaEventDestroy(s->ready);
    cudaStreamDestroy(s->stream);
    cudaFree(s->staging);
    pthread_mutex_destroy(&s->lock);
    pthread_cond_destroy(&s->freed);
    free(s);
    free(c);
}

bool mt_comm_nccl_unique_id(void *id, size_t n, char *err, size_t errlen)
{
    if (n != sizeof(ncclUniqueId))
        return mt_errorf(err, errlen, "NCCL unique id: %zu bytes given, NCCL's is %zu", n, sizeof(ncclUniqueId));
    ncclUniqueId u;
    if (!nccl_ok(ncclGetUniqueId(&u), NULL, "ncclGetUniqueId", err, errlen))
        return false;
    memcpy(id, &u, sizeof u);
    return true;
}

/* A blocking NCCL setup call (ncclCommInitRank, ncclCommSplit) waits for
 * every rank of the group; a rank that died after the rendezvous would
 * leave it waiting for ever. A guard thread ends the process, as the
 * watchdog does, when the call has not returned within the timeout. */
typedef struct setup_guard {
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t returned_cv;
    bool returned;
    double timeout_s;
    const char *what;
    int rank, world;
} setup_guard;

static void *setup_guard_main(void *arg)
{
    setup_guard *g = arg;
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += (time_t)g->timeout_s;
    deadline.tv_nsec += (long)((g->timeout_s - (double)(time_t)g->timeout_s) * 1e9);
    if (deadline.tv_nsec >= 1000000000L) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&g->lock);
    while (!g->returned && pthread_cond_timedwait(&g->returned_cv, &g->lock, &deadline) == 0)
        ;
    if (!g->returned) {
        fprintf(stderr,
                "rank %d of %d: NCCL communicator: %s did not return within %g s (dist.timeout_s): another rank "
                "never joined; exiting\n",
                g->rank, g->world, g->what, g->timeout_s);
        fflush(stderr);
        fflush(stdout);
        _exit(MT_NCCL_EXIT_WATCHDOG);
    }
    pthread_mutex_unlock(&g->lock);
    return NULL;
}

static void setup_guard_start(setup_guard *g, const char *what, int rank, int world, double timeout_s)
{
    *g = (setup_guard){.timeout_s = timeout_s, .what = what, .rank = rank, .world = world};
    pthread_mutex_init(&g->lock, NULL);
    pthread_cond_init(&g->returned_cv, NULL);
    if (pthread_create(&g->thread, NULL, setup_guard_main, g) != 0)
        mt_fatal("NCCL communicator: cannot start the guard thread of %s", what);
}

static void setup_guard_end(setup_guard *g)
{
    pthread_mutex_lock(&g->lock);
    g->returned = true;
    pthread_cond_signal(&g->returned_cv);
    pthread_mutex_unlock(&g->lock);
    pthread_join(g->thread, NULL);
    pthread_mutex_destroy(&g->lock);
    pthread_cond_destroy(&g->returned_cv);
}

/* The comm around an initialized ncclComm_t: stream, events, watchdog. */
static mt_comm *wrap(ncclComm_t comm, int rank, int world, int device, void *compute_stream, double timeout_s,
                     char *err, size_t errlen)
{
    nccl_state *s = calloc(1, sizeof *s);
    mt_comm *c = calloc(1, sizeof *c);
    if (!s || !c)
        mt_fatal("NCCL communicator: out of host memory");
    s->comm = comm;
    s->device = device;
    s->compute = (cudaStream_t)compute_stream;
    s->timeout_s = timeout_s;
    bool ok = cuda_ok(cudaStreamCreateWithFlags(&s->stream, cudaStreamNonBlocking), "cudaStreamCreate", err, errlen) &&
              cuda_ok(cudaEventCreateWithFlags(&s->ready, cudaEventDisableTiming), "cudaEventCreate", err, errlen);
    for (int i = 0; ok && i < IN_FLIGHT; i++)
        ok = cuda_ok(cudaEventCreateWithFlags(&s->ring[i].done, cudaEventDisableTiming), "cudaEventCreate", err,
                     errlen);
    if (!ok) {
        ncclCommDestroy(comm);
        free(s);
        free(c);
        return NULL;
    }
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->freed, NULL);
    *c = (mt_comm){.rank = rank, .world = world, .state = s, .all_reduce = nccl_all_reduce,
                   .reduce_scatter = nccl_reduce_scatter, .all_gather = nccl_all_gather, .broadcast = nccl_broadcast,
                   .barrier = nccl_barrier, .destroy = nccl_destroy};
    if (pthread_create(&s->watchdog, NULL, watchdog_main, c) != 0)
        mt_fatal("NCCL communicator: cannot start the watchdog thread");
    return c;
}

mt_comm *mt_comm_nccl_create(const void *id, int rank, int world, int device, void *compute_stream, double timeout_s,
                             char *err, size_t errlen)
{
    ncclUniqueId u;
    memcpy(&u, id, sizeof u);
    ncclComm_t comm;
    if (!cuda_ok(cudaSetDevice(device), "cudaSetDevice", err, errlen))
        return NULL;
    setup_guard g;
    setup_guard_start(&g, "ncclCommInitRank", rank, world, timeout_s);
    ncclResult_t r = ncclCommInitRank(&comm, world, u, rank);
    setup_guard_end(&g);
    if (!nccl_ok(r, NULL, "ncclCommInitRank", err, errlen))
        return NULL;
    return wrap(comm, rank, world, device, compute_stream, timeout_s, err, errlen);
}

mt_comm *mt_comm_nccl_split(mt_comm *parent, int color, int key, char *err, size_t errlen)
{
    nccl_state *p = parent->state;
    ncclComm_t comm;
    int rank, world;
    if (!cuda_ok(cudaStreamSynchronize(p->stream), "cudaStreamSynchronize", err, errlen))
        return NULL;
    setup_guard g;
    setup_guard_start(&g, "ncclCommSplit", parent->rank, parent->world, p->timeout_s);
    ncclResult_t r = ncclCommSplit(p->comm, color, key, &comm, NULL);
    setup_guard_end(&g);
    if (!nccl_ok(r, p, "ncclCommSplit", err, errlen) ||
        !nccl_ok(ncclCommUserRank(comm, &rank), p, "ncclCommUserRank", err, errlen) ||
        !nccl_ok(ncclCommCount(comm, &world), p, "ncclCommCount", err, errlen))
        return NULL;
    return wrap(comm, rank, world, p->device, p->compute, p->timeout_s, err, errlen);
}
