/* The CUDA backend and the NCCL communicator in a build configured with
 * MT_CUDA=OFF: creating either is an error. */
#include <stdio.h>

#include "core/error.h"
#include "dist/comm_nccl.h"
#include "kernels/backend.h"

static const char no_cuda[] = "this build has no CUDA (configured with MT_CUDA=OFF)";

mt_backend *mt_backend_cuda_create(int device_index, char *why, size_t n)
{
    (void)device_index;
    snprintf(why, n, "%s", no_cuda);
    return NULL;
}

void *mt_backend_cuda_stream(mt_backend *be)
{
    (void)be;
    return NULL;
}

int mt_backend_cuda_device(mt_backend *be)
{
    (void)be;
    return -1;
}

bool mt_comm_nccl_unique_id(void *id, size_t n, char *err, size_t errlen)
{
    (void)id;
    (void)n;
    return mt_errorf(err, errlen, "NCCL: %s", no_cuda);
}

mt_comm *mt_comm_nccl_create(const void *id, int rank, int world, int device, void *compute_stream, double timeout_s,
                             char *err, size_t errlen)
{
    (void)id, (void)rank, (void)world, (void)device, (void)compute_stream, (void)timeout_s;
    mt_errorf(err, errlen, "NCCL: %s", no_cuda);
    return NULL;
}

mt_comm *mt_comm_nccl_split(mt_comm *parent, int color, int key, char *err, size_t errlen)
{
    (void)parent, (void)color, (void)key;
    mt_errorf(err, errlen, "NCCL: %s", no_cuda);
    return NULL;
}
