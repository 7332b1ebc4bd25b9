/* The MPI communicator: CPU ranks that are processes started by mpirun,
 * over host buffers. MPI sums in its own order but gives every rank the
 * same result; bf16 buffers are summed in fp32 and rounded once, as the
 * other communicators do. MPI has no timeouts: mpirun ends the job when a
 * rank dies. Absent (creating one is an error) in a build without MPI. */
#include "dist/comm_mpi.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "dist/rendezvous_mpi.h"

#ifdef MT_HAVE_MPI
#include <mpi.h>

typedef struct mpi_state {
    MPI_Comm comm;
} mpi_state;

static MPI_Comm comm_of(const mt_comm *c)
{
    return ((const mpi_state *)c->state)->comm;
}

static bool count_ok(size_t count, char *err, size_t errlen)
{
    return count <= (size_t)INT32_MAX ||
           mt_errorf(err, errlen, "MPI communicator: %zu elements are more than one MPI call takes", count);
}

/* f32 or f64 as an MPI type; bf16 goes through f32 copies. */
static MPI_Datatype mpi_type(mt_dtype dt)
{
    return dt == MT_F64 ? MPI_DOUBLE : MPI_FLOAT;
}

/* An f32 copy of n bf16 values (uninitialized when bf16 is NULL). */
static float *f32_copy(const uint16_t *bf16, size_t n)
{
    float *f = malloc(n ? n * sizeof *f : 1);
    if (!f)
        mt_fatal("MPI communicator: out of host memory for %zu elements", n);
    for (size_t i = 0; bf16 && i < n; i++)
        f[i] = mt_bf16_to_f32(bf16[i]);
    return f;
}

/* n f32 values rounded into bf16 (to nearest even, as the cast op does). */
static void to_bf16(uint16_t *out, const float *in, size_t n)
{
    for (size_t i = 0; i < n; i++)
        out[i] = mt_f32_to_bf16(in[i]);
}

static bool float_dtype(mt_dtype dt, char *err, size_t errlen)
{
    return dt == MT_F32 || dt == MT_BF16 || dt == MT_F64 ||
           mt_errorf(err, errlen, "MPI communicator: dtype %s is not f32, bf16 or f64", mt_dtype_name(dt));
}

static bool mpi_all_reduce(mt_comm *c, void *buf, size_t count, mt_dtype dt, char *err, size_t errlen)
{
    if (!float_dtype(dt, err, errlen) || !count_ok(count, err, errlen))
        return false;
    if (dt != MT_BF16)
        return mt_mpi_ok(MPI_Allreduce(MPI_IN_PLACE, buf, (int)count, mpi_type(dt), MPI_SUM, comm_of(c)),
                      "MPI_Allreduce", err, errlen);
    float *f = f32_copy(buf, count);
    bool ok = mt_mpi_ok(MPI_Allreduce(MPI_IN_PLACE, f, (int)count, MPI_FLOAT, MPI_SUM, comm_of(c)), "MPI_Allreduce",
                     err, errlen);
    if (ok)
        to_bf16(buf, f, count);
    free(f);
    return ok;
}

static bool mpi_reduce_scatter(mt_comm *c, const void *send, void *recv, size_t count, mt_dtype dt, char *err,
                               size_t errlen)
{
    const size_t all = count * (size_t)c->world;
    if (!float_dtype(dt, err, errlen) || !count_ok(all, err, errlen))
        return false;
    if (dt != MT_BF16) /* a copy of send: recv may lie inside it (ZeRO-1 reduces in place) */
    {
        void *in = malloc(all * mt_dtype_size(dt) + 1);
        if (!in)
            mt_fatal("MPI communicator: out of host memory for %zu elements", all);
        memcpy(in, send, all * mt_dtype_size(dt));
        bool ok = mt_mpi_ok(MPI_Reduce_scatter_block(in, recv, (int)count, mpi_type(dt), MPI_SUM, comm_of(c)),
                         "MPI_Reduce_scatter_block", err, errlen);
        free(in);
        return ok;
    }
    float *in = f32_copy(send, all), *out = f32_copy(NULL, count);
    bool ok = mt_mpi_ok(MPI_Reduce_scatter_block(in, out, (int)count, MPI_FLOAT, MPI_SUM, comm_of(c)),
                     "MPI_Reduce_scatter_block", err, errlen);
    if (ok)
        to_bf16(recv, out, count);
    free(in);
    free(out);
    return ok;
}

static bool mpi_all_gather(mt_comm *c, const void *send, void *recv, size_t count, mt_dtype dt, char *err,
                           size_t errlen)
{
    const size_t bytes = count * mt_dtype_size(dt);
    if (!count_ok(bytes * (size_t)c->world, err, errlen))
        return false;
    const bool in_place = (const char *)send == (char *)recv + (size_t)c->rank * bytes;
    return mt_mpi_ok(MPI_Allgather(in_place ? MPI_IN_PLACE : send, (int)bytes, MPI_BYTE, recv, (int)bytes, MPI_BYTE,
                                comm_of(c)),
                  "MPI_Allgather", err, errlen);
}

static bool mpi_broadcast(mt_comm *c, void *buf, size_t bytes, int root, char *err, size_t errlen)
{
    if (root < 0 || root >= c->world)
        return mt_errorf(err, errlen, "MPI communicator: broadcast root %d of %d ranks", root, c->world);
    return count_ok(bytes, err, errlen) &&
           mt_mpi_ok(MPI_Bcast(buf, (int)bytes, MPI_BYTE, root, comm_of(c)), "MPI_Bcast", err, errlen);
}

static bool mpi_barrier(mt_comm *c, char *err, size_t errlen)
{
    return mt_mpi_ok(MPI_Barrier(comm_of(c)), "MPI_Barrier", err, errlen);
}

static void mpi_destroy(mt_comm *c)
{
    mpi_state *s = c->state;
    MPI_Comm_free(&s->comm);
    free(s);
    free(c);
}

/* A communicator around comm (owned). */
static mt_comm *wrap(MPI_Comm comm, char *err, size_t errlen)
{
    int rank, world;
    if (!mt_mpi_ok(MPI_Comm_rank(comm, &rank), "MPI_Comm_rank", err, errlen) ||
        !mt_mpi_ok(MPI_Comm_size(comm, &world), "MPI_Comm_size", err, errlen))
        return NULL;
    mpi_state *s = calloc(1, sizeof *s);
    mt_comm *c = calloc(1, sizeof *c);
    if (!s || !c)
        mt_fatal("MPI communicator: out of host memory");
    s->comm = comm;
    *c = (mt_comm){.rank = rank, .world = world, .state = s, .all_reduce = mpi_all_reduce,
                   .reduce_scatter = mpi_reduce_scatter, .all_gather = mpi_all_gather, .broadcast = mpi_broadcast,
                   .barrier = mpi_barrier, .destroy = mpi_destroy};
    return c;
}

mt_comm *mt_comm_mpi_split(int color, int key, char *err, size_t errlen)
{
    MPI_Comm comm;
    if (!mt_mpi_ok(MPI_Comm_split(MPI_COMM_WORLD, color, key, &comm), "MPI_Comm_split", err, errlen))
        return NULL;
    return wrap(comm, err, errlen);
}

#else

mt_comm *mt_comm_mpi_split(int color, int key, char *err, size_t errlen)
{
    (void)color, (void)key;
    mt_errorf(err, errlen, "this build has no MPI (Debian: libopenmpi-dev)");
    return NULL;
}

#endif
