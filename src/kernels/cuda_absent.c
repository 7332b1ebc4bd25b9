/* The CUDA backend in a build configured with MT_CUDA=OFF. */
#include <stdio.h>

#include "kernels/backend.h"

mt_backend *mt_backend_cuda_create(int device_index, char *why, size_t n)
{
    (void)device_index;
    snprintf(why, n, "this build has no CUDA backend (configured with MT_CUDA=OFF)");
    return NULL;
}
