/* The in-process CPU communicator: ranks are threads of one process that
 * meet at a generation-counted barrier. Each collective publishes every
 * rank's buffer pointer, meets, lets each rank compute its own share of the
 * result reading the others' buffers in rank order, and meets again before
 * anyone reuses a buffer. GPU buffers (ranks sharing one GPU in a test) go
 * through host copies. */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/device.h"
#include "core/error.h"
#include "dist/comm.h"

typedef struct group {
    int world;
    double timeout_s;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int arrived;
    uint64_t generation;
    bool failed;         /* a rank timed out: every later collective fails */
    int users;           /* ranks not yet destroyed */
    const void **sends;  /* per rank: the buffer it reads from */
    void **recvs;        /* per rank: the buffer it writes to */
    size_t *counts;      /* per rank: its count (checked equal) */
    int *kinds;          /* per rank: the collective it called (checked equal) */
} group;

typedef struct rank_state {
    group *g;
} rank_state;

/* Waits until all ranks arrive; false (on every rank that notices) after
 * the timeout or when another rank has failed. */
static bool meet(group *g, char *err, size_t errlen)
{
    pthread_mutex_lock(&g->lock);
    if (g->failed) {
        pthread_mutex_unlock(&g->lock);
        return mt_errorf(err, errlen, "CPU communicator: another rank failed");
    }
    const uint64_t gen = g->generation;
    if (++g->arrived == g->world) {
        g->arrived = 0;
        g->generation++;
        pthread_cond_broadcast(&g->cond);
        pthread_mutex_unlock(&g->lock);
        return true;
    }
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    const double end = (double)until.tv_sec + 1e-9 * (double)until.tv_nsec + g->timeout_s;
    until.tv_sec = (time_t)end;
    until.tv_nsec = (long)((end - (double)until.tv_sec) * 1e9);
    int rc = 0;
    while (g->generation == gen && !g->failed && rc != ETIMEDOUT)
        rc = pthread_cond_timedwait(&g->cond, &g->lock, &until);
    const bool ok = g->generation != gen, other_failed = !ok && g->failed;
    const int missing = g->world - g->arrived;
    if (!ok && !g->failed) {
        g->failed = true;
        pthread_cond_broadcast(&g->cond);
    }
    pthread_mutex_unlock(&g->lock);
    if (other_failed)
        return mt_errorf(err, errlen, "CPU communicator: another rank failed");
    return ok || mt_errorf(err, errlen, "CPU communicator: %d of %d ranks did not arrive within %g s", missing,
                           g->world, g->timeout_s);
}

enum { K_ALL_REDUCE = 1, K_REDUCE_SCATTER, K_ALL_GATHER, K_BROADCAST, K_BARRIER };

/* Publishes this rank's buffers and meets; checks that every rank called
 * the same collective with the same count. */
static bool publish(mt_comm *c, int kind, const void *send, void *recv, size_t count, char *err, size_t errlen)
{
    group *g = ((rank_state *)c->state)->g;
    g->sends[c->rank] = send;
    g->recvs[c->rank] = recv;
    g->counts[c->rank] = count;
    g->kinds[c->rank] = kind;
    if (!meet(g, err, errlen))
        return false;
    for (int r = 0; r < g->world; r++)
        if (g->kinds[r] != kind || g->counts[r] != count)
            return mt_errorf(err, errlen, "CPU communicator: rank %d called collective %d with count %zu, rank %d "
                             "collective %d with count %zu", r, g->kinds[r], g->counts[r], c->rank, kind, count);
    return true;
}

static double load(const void *p, size_t i, mt_dtype dt)
{
    switch (dt) {
    case MT_F64: return ((const double *)p)[i];
    case MT_F32: return ((const float *)p)[i];
    case MT_BF16: return mt_bf16_to_f32(((const uint16_t *)p)[i]);
    default: return 0;
    }
}

/* Rounds to nearest even into bf16, as the cast op does. */
static void store(void *p, size_t i, mt_dtype dt, double v)
{
    switch (dt) {
    case MT_F64: ((double *)p)[i] = v; break;
    case MT_F32: ((float *)p)[i] = (float)v; break;
    case MT_BF16: ((uint16_t *)p)[i] = mt_f32_to_bf16((float)v); break;
    default: break;
    }
}

static bool float_dtype(mt_dtype dt, char *err, size_t errlen)
{
    return dt == MT_F32 || dt == MT_BF16 || dt == MT_F64 ||
           mt_errorf(err, errlen, "CPU communicator: dtype %s is not f32, bf16 or f64", mt_dtype_name(dt));
}

/* out[i] = sum over ranks r in order of bufs[r][base + i], i in [0, n):
 * accumulated in fp32 for f32/bf16, double for f64. */
static void sum_range(const group *g, const void *const *bufs, size_t base, size_t n, mt_dtype dt, void *out,
                      size_t out_base)
{
    for (size_t i = 0; i < n; i++) {
        if (dt == MT_F64) {
            double s = 0;
            for (int r = 0; r < g->world; r++)
                s += load(bufs[r], base + i, dt);
            store(out, out_base + i, dt, s);
        } else {
            float s = 0;
            for (int r = 0; r < g->world; r++)
                s += (float)load(bufs[r], base + i, dt);
            store(out, out_base + i, dt, s);
        }
    }
}

/* A host copy of a buffer that may live on the GPU: its host address, and
 * where the result goes back (NULL: nothing to copy back). */
typedef struct staged {
    void *host, *device;
    size_t bytes;
} staged;

static staged stage(const void *p, size_t bytes, bool copy_in)
{
    if (mt_device_of(p) == MT_CPU)
        return (staged){.host = (void *)p};
    staged s = {.host = mt_device_alloc(MT_CPU, bytes, "CPU communicator staging"), .device = (void *)p,
                .bytes = bytes};
    if (copy_in)
        mt_device_copy(MT_CPU, s.host, MT_CUDA, p, bytes);
    return s;
}

/* Copies the result back (when it should) and frees the host copy. */
static void unstage(staged *s, bool copy_out)
{
    if (!s->device)
        return;
    if (copy_out)
        mt_device_copy(MT_CUDA, s->device, MT_CPU, s->host, s->bytes);
    mt_device_free(MT_CPU, s->host);
}

static bool host_all_reduce(mt_comm *c, void *buf, size_t count, mt_dtype dt, char *err, size_t errlen)
{
    group *g = ((rank_state *)c->state)->g;
    if (!float_dtype(dt, err, errlen))
        return false;
    /* Each rank sums its slice of the buffers into a private copy, then,
     * after everyone has read every input, writes the copy into all ranks. */
    const size_t per = (count + (size_t)g->world - 1) / (size_t)g->world, lo = per * (size_t)c->rank;
    const size_t n = lo < count ? (count - lo < per ? count - lo : per) : 0;
    void *mine = malloc(n * mt_dtype_size(dt) + 1);
    if (!mine)
        mt_fatal("CPU communicator: out of host memory");
    bool ok = publish(c, K_ALL_REDUCE, buf, buf, count, err, errlen);
    if (ok)
        sum_range(g, (const void *const *)g->recvs, lo, n, dt, mine, 0);
    ok = ok && meet(g, err, errlen);
    if (ok)
        for (int r = 0; r < g->world; r++)
            memcpy((char *)g->recvs[r] + lo * mt_dtype_size(dt), mine, n * mt_dtype_size(dt));
    ok = ok && meet(g, err, errlen);
    free(mine);
    return ok;
}

static bool host_reduce_scatter(mt_comm *c, const void *send, void *recv, size_t count, mt_dtype dt, char *err,
                                size_t errlen)
{
    group *g = ((rank_state *)c->state)->g;
    if (!float_dtype(dt, err, errlen) || !publish(c, K_REDUCE_SCATTER, send, recv, count, err, errlen))
        return false;
    sum_range(g, g->sends, count * (size_t)c->rank, count, dt, recv, 0);
    return meet(g, err, errlen);
}

static bool host_all_gather(mt_comm *c, const void *send, void *recv, size_t count, mt_dtype dt, char *err,
                            size_t errlen)
{
    group *g = ((rank_state *)c->state)->g;
    if (!publish(c, K_ALL_GATHER, send, recv, count, err, errlen))
        return false;
    const size_t bytes = count * mt_dtype_size(dt);
    for (int r = 0; r < g->world; r++)
        if ((char *)recv + (size_t)r * bytes != g->sends[r]) /* in place: already there */
            memcpy((char *)recv + (size_t)r * bytes, g->sends[r], bytes);
    return meet(g, err, errlen);
}

static bool host_broadcast(mt_comm *c, void *buf, size_t bytes, int root, char *err, size_t errlen)
{
    group *g = ((rank_state *)c->state)->g;
    if (root < 0 || root >= g->world)
        return mt_errorf(err, errlen, "CPU communicator: broadcast root %d of %d ranks", root, g->world);
    if (!publish(c, K_BROADCAST, buf, buf, bytes, err, errlen))
        return false;
    if (c->rank != root)
        memcpy(buf, g->sends[root], bytes);
    return meet(g, err, errlen);
}

static bool cpu_all_reduce(mt_comm *c, void *buf, size_t count, mt_dtype dt, char *err, size_t errlen)
{
    staged b = stage(buf, count * mt_dtype_size(dt), true);
    bool ok = host_all_reduce(c, b.host, count, dt, err, errlen);
    unstage(&b, ok);
    return ok;
}

static bool cpu_reduce_scatter(mt_comm *c, const void *send, void *recv, size_t count, mt_dtype dt, char *err,
                               size_t errlen)
{
    const size_t bytes = count * mt_dtype_size(dt);
    staged s = stage(send, (size_t)c->world * bytes, true), r = stage(recv, bytes, false);
    bool ok = host_reduce_scatter(c, s.host, r.host, count, dt, err, errlen);
    unstage(&s, false);
    unstage(&r, ok);
    return ok;
}

static bool cpu_all_gather(mt_comm *c, const void *send, void *recv, size_t count, mt_dtype dt, char *err,
                           size_t errlen)
{
    const size_t bytes = count * mt_dtype_size(dt);
    staged s = stage(send, bytes, true), r = stage(recv, (size_t)c->world * bytes, false);
    bool ok = host_all_gather(c, s.host, r.host, count, dt, err, errlen);
    unstage(&s, false);
    unstage(&r, ok);
    return ok;
}

static bool cpu_broadcast(mt_comm *c, void *buf, size_t bytes, int root, char *err, size_t errlen)
{
    staged b = stage(buf, bytes, true);
    bool ok = host_broadcast(c, b.host, bytes, root, err, errlen);
    unstage(&b, ok);
    return ok;
}

static bool cpu_barrier(mt_comm *c, char *err, size_t errlen)
{
    return publish(c, K_BARRIER, NULL, NULL, 0, err, errlen);
}

static void cpu_destroy(mt_comm *c)
{
    group *g = ((rank_state *)c->state)->g;
    pthread_mutex_lock(&g->lock);
    const bool last = --g->users == 0;
    pthread_mutex_unlock(&g->lock);
    if (last) {
        pthread_mutex_destroy(&g->lock);
        pthread_cond_destroy(&g->cond);
        free(g->sends);
        free(g->recvs);
        free(g->counts);
        free(g->kinds);
        free(g);
    }
    free(c->state);
    free(c);
}

void mt_comm_cpu_group(int world, double timeout_s, mt_comm **comms)
{
    if (world < 1)
        mt_fatal("CPU communicator: world size %d", world);
    group *g = calloc(1, sizeof *g);
    if (!g)
        mt_fatal("CPU communicator: out of host memory");
    g->world = world;
    g->timeout_s = timeout_s;
    g->users = world;
    pthread_mutex_init(&g->lock, NULL);
    pthread_cond_init(&g->cond, NULL);
    g->sends = calloc((size_t)world, sizeof *g->sends);
    g->recvs = calloc((size_t)world, sizeof *g->recvs);
    g->counts = calloc((size_t)world, sizeof *g->counts);
    g->kinds = calloc((size_t)world, sizeof *g->kinds);
    if (!g->sends || !g->recvs || !g->counts || !g->kinds)
        mt_fatal("CPU communicator: out of host memory");
    for (int r = 0; r < world; r++) {
        mt_comm *c = calloc(1, sizeof *c);
        rank_state *s = calloc(1, sizeof *s);
        if (!c || !s)
            mt_fatal("CPU communicator: out of host memory");
        s->g = g;
        *c = (mt_comm){.rank = r, .world = world, .state = s, .all_reduce = cpu_all_reduce,
                       .reduce_scatter = cpu_reduce_scatter, .all_gather = cpu_all_gather,
                       .broadcast = cpu_broadcast, .barrier = cpu_barrier, .destroy = cpu_destroy};
        comms[r] = c;
    }
}
