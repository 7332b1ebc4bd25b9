#include "core/device.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/error.h"

#ifdef MT_HAVE_CUDA
#include <cuda_runtime_api.h>

#define CUDA_CHECK(call, what)                                                                  \
    do {                                                                                        \
        cudaError_t err_ = (call);                                                              \
        if (err_ != cudaSuccess)                                                                \
            mt_fatal("%s: %s failed: %s", (what), #call, cudaGetErrorString(err_));             \
    } while (0)

static enum cudaMemcpyKind copy_kind(mt_device dst, mt_device src)
{
    if (dst == MT_CUDA)
        return src == MT_CUDA ? cudaMemcpyDeviceToDevice : cudaMemcpyHostToDevice;
    return src == MT_CUDA ? cudaMemcpyDeviceToHost : cudaMemcpyHostToHost;
}
#endif

int mt_cuda_device_count(void)
{
#ifdef MT_HAVE_CUDA
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        cudaGetLastError(); /* no driver or no device: clear the sticky error */
        return 0;
    }
    return n;
#else
    return 0;
#endif
}

double mt_device_memory_bytes(mt_device dev)
{
    if (dev == MT_CPU) {
        const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
        return pages > 0 && page > 0 ? (double)pages * (double)page : 0;
    }
#ifdef MT_HAVE_CUDA
    struct cudaDeviceProp prop;
    if (mt_cuda_device_count() > 0 && cudaGetDeviceProperties(&prop, 0) == cudaSuccess)
        return (double)prop.totalGlobalMem;
    cudaGetLastError();
#endif
    return 0;
}

void *mt_device_try_alloc(mt_device dev, size_t bytes)
{
    void *p = NULL;
    if (bytes == 0)
        bytes = 1;
    if (dev == MT_CPU)
        return posix_memalign(&p, 64, bytes) == 0 ? p : NULL;
#ifdef MT_HAVE_CUDA
    if (cudaMalloc(&p, bytes) != cudaSuccess) {
        cudaGetLastError(); /* an out-of-memory error is not sticky: clear it */
        return NULL;
    }
    return p;
#else
    return NULL;
#endif
}

void *mt_device_alloc(mt_device dev, size_t bytes, const char *what)
{
#ifndef MT_HAVE_CUDA
    if (dev == MT_CUDA)
        mt_fatal("%s: this build has no CUDA (configured with MT_CUDA=OFF)", what);
#endif
    void *p = mt_device_try_alloc(dev, bytes);
    if (!p)
        mt_fatal("%s: out of %s memory allocating %zu bytes", what, dev == MT_CPU ? "host" : "GPU", bytes);
    return p;
}

void mt_device_free(mt_device dev, void *p)
{
    if (!p)
        return;
    if (dev == MT_CPU) {
        free(p);
        return;
    }
#ifdef MT_HAVE_CUDA
    CUDA_CHECK(cudaFree(p), "freeing device memory");
#endif
}

void mt_device_fill_bytes(mt_device dev, void *p, int byte, size_t bytes)
{
    if (dev == MT_CPU) {
        memset(p, byte, bytes);
        return;
    }
#ifdef MT_HAVE_CUDA
    CUDA_CHECK(cudaMemset(p, byte, bytes), "setting device memory");
#endif
}

void mt_device_zero(mt_device dev, void *p, size_t bytes)
{
    mt_device_fill_bytes(dev, p, 0, bytes);
}

void mt_device_copy(mt_device dst_dev, void *dst, mt_device src_dev, const void *src, size_t bytes)
{
    if (dst_dev == MT_CPU && src_dev == MT_CPU) {
        memmove(dst, src, bytes);
        return;
    }
#ifdef MT_HAVE_CUDA
    CUDA_CHECK(cudaMemcpy(dst, src, bytes, copy_kind(dst_dev, src_dev)), "copying between devices");
#else
    mt_fatal("copying to or from a CUDA device: this build has no CUDA");
#endif
}

double mt_device_scalar(const mt_tensor *t)
{
    if (t->device == MT_CPU)
        return mt_get(t, 0);
    double buf; /* room for any dtype's one element */
    mt_tensor h;
    mt_tensor_init(&h, t->dtype, MT_CPU, 1, (int64_t[]){1});
    h.data = &buf;
    mt_device_copy(MT_CPU, h.data, t->device, t->data, mt_dtype_size(t->dtype));
    return mt_get(&h, 0);
}

mt_device mt_device_of(const void *p)
{
#ifdef MT_HAVE_CUDA
    struct cudaPointerAttributes a;
    if (cudaPointerGetAttributes(&a, p) != cudaSuccess) {
        cudaGetLastError(); /* a plain host pointer on an older runtime */
        return MT_CPU;
    }
    return a.type == cudaMemoryTypeDevice || a.type == cudaMemoryTypeManaged ? MT_CUDA : MT_CPU;
#else
    (void)p;
    return MT_CPU;
#endif
}

void *mt_host_alloc(size_t bytes, bool *pinned, const char *what)
{
    *pinned = false;
#ifdef MT_HAVE_CUDA
    if (mt_cuda_device_count() > 0) {
        void *p = NULL;
        CUDA_CHECK(cudaHostAlloc(&p, bytes ? bytes : 1, cudaHostAllocDefault), what);
        *pinned = true;
        return p;
    }
#endif
    return mt_device_alloc(MT_CPU, bytes, what);
}

void mt_host_free(void *p, bool pinned)
{
#ifdef MT_HAVE_CUDA
    if (pinned) {
        CUDA_CHECK(cudaFreeHost(p), "mt_host_free");
        return;
    }
#endif
    (void)pinned;
    free(p);
}
