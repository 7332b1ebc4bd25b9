/* Shared pieces of the CUDA backend: error checks, the backend state, typed
 * load/store helpers for f32 and bf16, dtype dispatch, fixed-order block
 * reductions and launch-size helpers.
 *
 * Every kernel of the backend computes in fp32 and is deterministic: all
 * reductions run in an order fixed by the shapes alone (warp butterflies,
 * shared-memory trees, per-block partials summed by a second kernel in index
 * order); nothing uses float atomics. */
#ifndef MT_CUDA_COMMON_CUH
#define MT_CUDA_COMMON_CUH

#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <stdint.h>

extern "C" {
#include "core/arena.h"
#include "core/tensor.h"
#include "kernels/backend.h"
}
#include "core/error.h" /* has its own extern "C" guards */

/* ------------------------------------------------------------------------ */
/* Error checks: every failure is fatal and names the file, line and call.   */

#define CUDA_CHECK(call)                                                                                  \
    do {                                                                                                  \
        cudaError_t err_ = (call);                                                                        \
        if (err_ != cudaSuccess)                                                                          \
            mt_fatal_at(__FILE__, __LINE__, "CUDA call %s failed: %s (%s)", #call, cudaGetErrorString(err_), \
                        cudaGetErrorName(err_));                                                          \
    } while (0)

#define CUBLAS_CHECK(call)                                                                                \
    do {                                                                                                  \
        cublasStatus_t st_ = (call);                                                                      \
        if (st_ != CUBLAS_STATUS_SUCCESS)                                                                 \
            mt_fatal_at(__FILE__, __LINE__, "cuBLASLt call %s failed: %s (%s)", #call,                   \
                        cublasLtGetStatusString(st_), cublasLtGetStatusName(st_));                        \
    } while (0)

/* After every kernel launch: a bad configuration or an earlier asynchronous
 * fault surfaces here, named by the op. */
#define LAUNCH_CHECK(op)                                                                                  \
    do {                                                                                                  \
        cudaError_t err_ = cudaGetLastError();                                                            \
        if (err_ != cudaSuccess)                                                                          \
            mt_fatal_at(__FILE__, __LINE__, "%s: kernel launch failed: %s (%s)", (op),                    \
                        cudaGetErrorString(err_), cudaGetErrorName(err_));                                \
    } while (0)

/* ------------------------------------------------------------------------ */
/* Backend state (be->state).                                                */

/* Blocks of a two-pass device reduction (sumsq): their partials and the
 * result live in the backend's reduce buffer, made once with the backend. */
#define MT_CUDA_REDUCE_BLOCKS 1024

struct mt_cuda_state {
    int device;
    cudaStream_t stream;      /* blocking: ordered with the legacy default stream */
    cudaStream_t side;        /* for independent kernels of one op beside the stream (cuda_fork) */
    cudaEvent_t fork, join;
    cublasLtHandle_t lt;
    void *workspace;          /* cuBLASLt workspace */
    size_t workspace_bytes;
    double *reduce;           /* MT_CUDA_REDUCE_BLOCKS + 1 doubles */
};

static inline mt_cuda_state *cuda_state(mt_backend *be)
{
    return (mt_cuda_state *)be->state;
}

static inline cudaStream_t cuda_stream(mt_backend *be)
{
    return cuda_state(be)->stream;
}

/* Independent kernels of one op may run beside each other: cuda_fork
 * returns the side stream, ordered after everything queued on the stream so
 * far; cuda_join orders the stream after everything queued on the side
 * stream. An op that forks joins before it returns, so to every other op
 * there is one stream. */
static inline cudaStream_t cuda_fork(mt_backend *be)
{
    mt_cuda_state *s = cuda_state(be);
    CUDA_CHECK(cudaEventRecord(s->fork, s->stream));
    CUDA_CHECK(cudaStreamWaitEvent(s->side, s->fork, 0));
    return s->side;
}

static inline void cuda_join(mt_backend *be)
{
    mt_cuda_state *s = cuda_state(be);
    CUDA_CHECK(cudaEventRecord(s->join, s->side));
    CUDA_CHECK(cudaStreamWaitEvent(s->stream, s->join, 0));
}

/* ------------------------------------------------------------------------ */
/* Typed loads and stores: storage in T, arithmetic in float.                */

template <typename T> __device__ __forceinline__ float to_f(T v);
template <> __device__ __forceinline__ float to_f<float>(float v) { return v; }
template <> __device__ __forceinline__ float to_f<__nv_bfloat16>(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T> __device__ __forceinline__ T from_f(float v);
template <> __device__ __forceinline__ float from_f<float>(float v) { return v; }
/* Round to nearest even, as mt_f32_to_bf16 on the host. */
template <> __device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }

template <typename T> __device__ __forceinline__ float load_f(const T *p, int64_t i) { return to_f<T>(p[i]); }
template <typename T> __device__ __forceinline__ void store_f(T *p, int64_t i, float v) { p[i] = from_f<T>(v); }
/* p[i] += v, rounding once into T. */
template <typename T> __device__ __forceinline__ void accum_f(T *p, int64_t i, float v)
{
    p[i] = from_f<T>(to_f<T>(p[i]) + v);
}

/* ------------------------------------------------------------------------ */
/* Dtype dispatch on the host: f(type_tag<T>{}) for T = float or bf16.
 * Usage: dispatch_float(t->dtype, "op", [&](auto tag) { using T = typename
 * decltype(tag)::type; kernel<T><<<...>>>(...); }); */

template <typename T> struct type_tag { using type = T; };

template <typename F> static inline void dispatch_float(mt_dtype dt, const char *op, F f)
{
    switch (dt) {
    case MT_F32: f(type_tag<float>{}); break;
    case MT_BF16: f(type_tag<__nv_bfloat16>{}); break;
    default: mt_fatal("%s: dtype %s is not supported on CUDA (f32 and bf16 are)", op, mt_dtype_name(dt));
    }
}

/* Fatal unless t has dtype dt. */
static inline void require_dtype(const mt_tensor *t, mt_dtype dt, const char *op, const char *what)
{
    char s[96];
    if (t->dtype != dt)
        mt_fatal("%s: %s %s must be %s on CUDA", op, what, mt_shape_str(t, s, sizeof s), mt_dtype_name(dt));
}

/* ------------------------------------------------------------------------ */
/* Launch sizes. Grid-stride loops take any element count; the grid is capped
 * by a constant (never by the device), so results never depend on it. */

#define MT_CUDA_THREADS 256
#define MT_CUDA_MAX_BLOCKS (1 << 16)

static inline unsigned grid_for(int64_t n, int threads)
{
    int64_t b = (n + threads - 1) / threads;
    if (b < 1)
        b = 1;
    if (b > MT_CUDA_MAX_BLOCKS)
        b = MT_CUDA_MAX_BLOCKS;
    return (unsigned)b;
}

/* Threads for a block that walks one row of `cols` elements: a multiple of
 * 32 (the reductions below need whole warps) from 32 to max_threads. */
static inline int row_threads(int64_t cols, int max_threads)
{
    int64_t t = (cols + 31) / 32 * 32;
    if (t < 32)
        t = 32;
    if (t > max_threads)
        t = max_threads;
    return (int)t;
}

/* ------------------------------------------------------------------------ */
/* Fixed-order reductions. A xor butterfly leaves the same bits in every lane
 * (each step adds the same two partial sums, only swapped), and the block
 * versions combine warp results in warp order. blockDim.x must be a multiple
 * of 32 and at most 1024. Every thread of the block must call them. */

__device__ __forceinline__ float warp_sum(float v)
{
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v)
{
    for (int o = 16; o > 0; o >>= 1)
        v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

/* Sum of v over the block, returned to every thread. */
__device__ __forceinline__ float block_sum(float v)
{
    __shared__ float shm_sum[32];
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    v = warp_sum(v);
    __syncthreads(); /* an earlier call's readers are done with shm_sum */
    if (lane == 0)
        shm_sum[warp] = v;
    __syncthreads();
    return warp_sum(lane < nwarps ? shm_sum[lane] : 0.0f);
}

/* Max of v over the block, returned to every thread. */
__device__ __forceinline__ float block_max(float v)
{
    __shared__ float shm_max[32];
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0)
        shm_max[warp] = v;
    __syncthreads();
    return warp_max(lane < nwarps ? shm_max[lane] : -INFINITY);
}

/* Second stage of a deterministic column sum: out[c] += sum over p < nparts
 * of partial[p * cols + c], in double (a long fp32 chain would cost these
 * small sums more than their partials' rounding). partial is (nparts, cols)
 * fp32; out is (cols) in TO. A block takes 32 columns at a time (grid-stride);
 * its warp w sums the w-th of nwarps equal runs of p in order, and warp 0
 * adds the runs in order: the order depends only on the shapes and the
 * block size. Spreading p over the warps is what makes it fast: the partial
 * rows are many (hundreds to thousands) and the columns few. */
template <typename TO>
__global__ void __launch_bounds__(1024) colsum_finish_kernel(TO *out, const float *partial, int nparts, int64_t cols)
{
    __shared__ double runs[32][33];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    const int per = (nparts + nwarps - 1) / nwarps, p0 = min(nparts, warp * per), p1 = min(nparts, p0 + per);
    for (int64_t c0 = blockIdx.x * 32LL; c0 < cols; c0 += gridDim.x * 32LL) {
        const int64_t c = c0 + lane;
        double s = 0.0;
        if (c < cols)
            for (int p = p0; p < p1; p++)
                s += partial[(int64_t)p * cols + c];
        __syncthreads(); /* the previous tile's runs have been read */
        runs[warp][lane] = s;
        __syncthreads();
        if (warp == 0 && c < cols) {
            double t = 0.0;
            for (int w = 0; w < nwarps; w++)
                t += runs[w][lane];
            accum_f<TO>(out, c, (float)t);
        }
    }
}

/* Launches colsum_finish_kernel: 256 threads, a block per 32 columns. */
template <typename TO>
static inline void colsum_finish(TO *out, const float *partial, int nparts, int64_t cols, cudaStream_t st)
{
    const int64_t tiles = (cols + 31) / 32;
    colsum_finish_kernel<TO><<<(unsigned)(tiles < 4096 ? tiles : 4096), 256, 0, st>>>(out, partial, nparts, cols);
}

/* ------------------------------------------------------------------------ */
/* The ops, one file per family; cuda_backend.cu puts them in the vtable.    */

/* Each is declared through its op's type in backend.h. They keep C++
 * linkage, like their definitions: a definition whose parameters differ
 * from the type is another overload, and the link fails. */
mt_embedding_fwd_fn cuda_embedding_fwd;
mt_embedding_bwd_fn cuda_embedding_bwd;
mt_linear_fwd_fn cuda_linear_fwd;
mt_linear_bwd_fn cuda_linear_bwd;
mt_add_fwd_fn cuda_add_fwd;
mt_mul_fwd_fn cuda_mul_fwd;
mt_add_bwd_fn cuda_add_bwd;
mt_mul_bwd_fn cuda_mul_bwd;
mt_silu_fwd_fn cuda_silu_fwd;
mt_silu_bwd_fn cuda_silu_bwd;
mt_softplus_fwd_fn cuda_softplus_fwd;
mt_softplus_bwd_fn cuda_softplus_bwd;
mt_cast_fwd_fn cuda_cast_fwd;
mt_cast_bwd_fn cuda_cast_bwd;
mt_axpy_fn cuda_axpy;
mt_adamw_step_fn cuda_adamw_step;
mt_sumsq_fn cuda_sumsq;
mt_sumsq_ranges_fn cuda_sumsq_ranges;
mt_rmsnorm_fwd_fn cuda_rmsnorm_fwd;
mt_rmsnorm_apply_fn cuda_rmsnorm_apply;
mt_rmsnorm_bwd_fn cuda_rmsnorm_bwd;
mt_cross_entropy_stats_fn cuda_cross_entropy_stats;
mt_cross_entropy_combine_fn cuda_cross_entropy_combine;
mt_cross_entropy_bwd_fn cuda_cross_entropy_bwd;
mt_conv1d_fwd_fn cuda_conv1d_fwd;
mt_conv1d_bwd_fn cuda_conv1d_bwd;
mt_conv1d_final_state_fwd_fn cuda_conv1d_final_state_fwd;
mt_conv1d_final_state_bwd_fn cuda_conv1d_final_state_bwd;
mt_gated_rmsnorm_fwd_fn cuda_gated_rmsnorm_fwd;
mt_gated_rmsnorm_bwd_fn cuda_gated_rmsnorm_bwd;
mt_gated_rmsnorm_sums_fn cuda_gated_rmsnorm_sums;
mt_gated_rmsnorm_fwd_sums_fn cuda_gated_rmsnorm_fwd_sums;
mt_gated_rmsnorm_bwd_sums_fn cuda_gated_rmsnorm_bwd_sums;
mt_ssd_fwd_fn cuda_ssd_fwd;
mt_ssd_bwd_fn cuda_ssd_bwd;
mt_selective_scan_fwd_fn cuda_selective_scan_fwd;
mt_selective_scan_checkpoint_fn cuda_selective_scan_checkpoint;
mt_selective_scan_bwd_fn cuda_selective_scan_bwd;

#endif
