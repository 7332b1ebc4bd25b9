/* The CUDA backend: creation (device, stream, cuBLASLt handle, workspace),
 * destroy, synchronize, the Philox fills, and the vtable. The ops live in
 * one file per family (cuda_embedding.cu, cuda_linear.cu, ...). */
#include <stdio.h>
#include <stdlib.h>

#include "kernels/cuda/cuda_common.cuh"

#include "core/rng.h" /* header-only; MT_HOSTDEV makes it usable in kernels */

#define MT_CUDA_WORKSPACE_BYTES ((size_t)32 << 20)

/* ------------------------------------------------------------------------ */
/* Fills. Element with logical row-major index i = r * cols + c gets Philox
 * counter i, exactly as the CPU backend: the value is computed in double by
 * the shared core/rng.h code, then stored through float (and bf16 rounding).
 * t: (rows, cols) with row stride rs. Grid-stride over rows * cols. */

template <typename T>
__global__ void fill_uniform_kernel(T *t, int64_t rows, int64_t cols, int64_t rs, uint64_t seed, double lo,
                                    double hi)
{
    int64_t n = rows * cols;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        int64_t r = i / cols, c = i - r * cols;
        t[r * rs + c] = from_f<T>((float)mt_rng_uniform(seed, (uint64_t)i, lo, hi));
    }
}

template <typename T>
__global__ void fill_normal_kernel(T *t, int64_t rows, int64_t cols, int64_t rs, uint64_t seed, double mean,
                                   double std)
{
    int64_t n = rows * cols;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        int64_t r = i / cols, c = i - r * cols;
        t[r * rs + c] = from_f<T>((float)mt_rng_normal(seed, (uint64_t)i, mean, std));
    }
}

static void cuda_fill_uniform(mt_backend *be, mt_tensor *t, uint64_t seed, double lo, double hi)
{
    int64_t rows = mt_rows(t), cols = mt_cols(t), rs = mt_row_stride(t);
    if (rows * cols == 0)
        return;
    dispatch_float(t->dtype, "fill_uniform", [&](auto tag) {
        using T = typename decltype(tag)::type;
        fill_uniform_kernel<T><<<grid_for(rows * cols, MT_CUDA_THREADS), MT_CUDA_THREADS, 0, cuda_stream(be)>>>(
            (T *)t->data, rows, cols, rs, seed, lo, hi);
        LAUNCH_CHECK("fill_uniform");
    });
}

static void cuda_fill_normal(mt_backend *be, mt_tensor *t, uint64_t seed, double mean, double std)
{
    int64_t rows = mt_rows(t), cols = mt_cols(t), rs = mt_row_stride(t);
    if (rows * cols == 0)
        return;
    dispatch_float(t->dtype, "fill_normal", [&](auto tag) {
        using T = typename decltype(tag)::type;
        fill_normal_kernel<T><<<grid_for(rows * cols, MT_CUDA_THREADS), MT_CUDA_THREADS, 0, cuda_stream(be)>>>(
            (T *)t->data, rows, cols, rs, seed, mean, std);
        LAUNCH_CHECK("fill_normal");
    });
}

/* ------------------------------------------------------------------------ */
/* Lifetime. */

static void cuda_synchronize(mt_backend *be)
{
    CUDA_CHECK(cudaStreamSynchronize(cuda_stream(be)));
    CUDA_CHECK(cudaGetLastError());
}

static void cuda_destroy(mt_backend *be)
{
    if (!be)
        return;
    mt_cuda_state *s = cuda_state(be);
    if (s) {
        CUDA_CHECK(cudaSetDevice(s->device));
        CUDA_CHECK(cudaStreamSynchronize(s->stream));
        CUDA_CHECK(cudaFree(s->workspace));
        CUDA_CHECK(cudaFree(s->reduce));
        CUBLAS_CHECK(cublasLtDestroy(s->lt));
        CUDA_CHECK(cudaEventDestroy(s->fork));
        CUDA_CHECK(cudaEventDestroy(s->join));
        CUDA_CHECK(cudaStreamDestroy(s->side));
        CUDA_CHECK(cudaStreamDestroy(s->stream));
        free(s);
    }
    free(be);
}

/* Writes "what: <cuda error>" into why and clears the sticky error. */
static void set_why_cuda(char *why, size_t n, const char *what, cudaError_t err)
{
    if (why && n)
        snprintf(why, n, "%s: %s (%s)", what, cudaGetErrorString(err), cudaGetErrorName(err));
    cudaGetLastError();
}

extern "C" void *mt_backend_cuda_stream(mt_backend *be)
{
    return cuda_stream(be);
}

extern "C" int mt_backend_cuda_device(mt_backend *be)
{
    return cuda_state(be)->device;
}

extern "C" mt_backend *mt_backend_cuda_create(int device_index, char *why, size_t n)
{
    int count = 0;
    cudaError_t err = cudaGetDeviceCount(&count);
    if (err != cudaSuccess) {
        set_why_cuda(why, n, "cudaGetDeviceCount failed (no driver or no device?)", err);
        return NULL;
    }
    if (count == 0) {
        if (why && n)
            snprintf(why, n, "no CUDA device present");
        return NULL;
    }
    if (device_index < 0 || device_index >= count) {
        if (why && n)
            snprintf(why, n, "CUDA device %d requested but %d device(s) present", device_index, count);
        return NULL;
    }
    if ((err = cudaSetDevice(device_index)) != cudaSuccess) {
        set_why_cuda(why, n, "cudaSetDevice failed", err);
        return NULL;
    }

    mt_cuda_state *s = (mt_cuda_state *)calloc(1, sizeof *s);
    mt_backend *be = (mt_backend *)calloc(1, sizeof *be);
    if (!s || !be) {
        free(s);
        free(be);
        if (why && n)
            snprintf(why, n, "out of host memory creating the CUDA backend");
        return NULL;
    }
    s->device = device_index;
    s->workspace_bytes = MT_CUDA_WORKSPACE_BYTES;

    /* cudaStreamCreate makes a blocking stream: work on it is ordered with the
     * legacy default stream that core/device.c's cudaMemcpy/cudaMemset use. */
    if ((err = cudaStreamCreate(&s->stream)) != cudaSuccess || (err = cudaStreamCreate(&s->side)) != cudaSuccess ||
        (err = cudaEventCreateWithFlags(&s->fork, cudaEventDisableTiming)) != cudaSuccess ||
        (err = cudaEventCreateWithFlags(&s->join, cudaEventDisableTiming)) != cudaSuccess) {
        set_why_cuda(why, n, "cudaStreamCreate or cudaEventCreate failed", err);
        goto fail;
    }
    {
        cublasStatus_t st = cublasLtCreate(&s->lt);
        if (st != CUBLAS_STATUS_SUCCESS) {
            if (why && n)
                snprintf(why, n, "cublasLtCreate failed: %s", cublasLtGetStatusString(st));
            s->lt = NULL;
            goto fail;
        }
    }
    if ((err = cudaMalloc(&s->workspace, s->workspace_bytes)) != cudaSuccess) {
        set_why_cuda(why, n, "cudaMalloc of the 32 MiB cuBLASLt workspace failed", err);
        s->workspace = NULL;
        goto fail;
    }
    if ((err = cudaMalloc((void **)&s->reduce, (MT_CUDA_REDUCE_BLOCKS + 1) * sizeof(double))) != cudaSuccess) {
        set_why_cuda(why, n, "cudaMalloc of the reduction buffer failed", err);
        s->reduce = NULL;
        goto fail;
    }

    be->name = "cuda";
    be->device = MT_CUDA;
    be->state = s;
    be->destroy = cuda_destroy;
    be->synchronize = cuda_synchronize;
    be->fill_uniform = cuda_fill_uniform;
    be->fill_normal = cuda_fill_normal;
    be->embedding_fwd = cuda_embedding_fwd;
    be->embedding_bwd = cuda_embedding_bwd;
    be->linear_fwd = cuda_linear_fwd;
    be->linear_bwd = cuda_linear_bwd;
    be->add_fwd = cuda_add_fwd;
    be->mul_fwd = cuda_mul_fwd;
    be->add_bwd = cuda_add_bwd;
    be->mul_bwd = cuda_mul_bwd;
    be->silu_fwd = cuda_silu_fwd;
    be->silu_bwd = cuda_silu_bwd;
    be->softplus_fwd = cuda_softplus_fwd;
    be->softplus_bwd = cuda_softplus_bwd;
    be->rmsnorm_fwd = cuda_rmsnorm_fwd;
    be->rmsnorm_apply = cuda_rmsnorm_apply;
    be->rmsnorm_bwd = cuda_rmsnorm_bwd;
    be->cross_entropy_stats = cuda_cross_entropy_stats;
    be->cross_entropy_combine = cuda_cross_entropy_combine;
    be->cross_entropy_bwd = cuda_cross_entropy_bwd;
    be->cast_fwd = cuda_cast_fwd;
    be->cast_bwd = cuda_cast_bwd;
    be->conv1d_fwd = cuda_conv1d_fwd;
    be->conv1d_bwd = cuda_conv1d_bwd;
    be->conv1d_final_state_fwd = cuda_conv1d_final_state_fwd;
    be->conv1d_final_state_bwd = cuda_conv1d_final_state_bwd;
    be->gated_rmsnorm_fwd = cuda_gated_rmsnorm_fwd;
    be->gated_rmsnorm_bwd = cuda_gated_rmsnorm_bwd;
    be->gated_rmsnorm_sums = cuda_gated_rmsnorm_sums;
    be->gated_rmsnorm_fwd_sums = cuda_gated_rmsnorm_fwd_sums;
    be->gated_rmsnorm_bwd_sums = cuda_gated_rmsnorm_bwd_sums;
    be->ssd_fwd = cuda_ssd_fwd;
    be->ssd_bwd = cuda_ssd_bwd;
    be->selective_scan_fwd = cuda_selective_scan_fwd;
    be->selective_scan_bwd = cuda_selective_scan_bwd;
    be->selective_scan_checkpoint = cuda_selective_scan_checkpoint;
    be->axpy = cuda_axpy;
    be->adamw_step = cuda_adamw_step;
    be->sumsq = cuda_sumsq;
    be->sumsq_ranges = cuda_sumsq_ranges;
    return be;

fail:
    if (s->workspace)
        cudaFree(s->workspace);
    if (s->reduce)
        cudaFree(s->reduce);
    if (s->lt)
        cublasLtDestroy(s->lt);
    if (s->fork)
        cudaEventDestroy(s->fork);
    if (s->join)
        cudaEventDestroy(s->join);
    if (s->side)
        cudaStreamDestroy(s->side);
    if (s->stream)
        cudaStreamDestroy(s->stream);
    cudaGetLastError();
    free(s);
    free(be);
    return NULL;
}
