/* Optimizer kernels over the flat parameter buffers (f32 masters): the fused
 * AdamW update, one launch for every parameter, and the deterministic sum of
 * squares behind the global gradient norm. */
#include "kernels/cuda/cuda_vector.cuh"

/* Whether p allows `bytes`-wide loads and stores (the flat buffers do:
 * cudaMalloc'd; a view into them may not). */
static inline bool aligned_to(const void *p, size_t bytes)
{
    return (uintptr_t)p % bytes == 0;
}

/* ---- AdamW --------------------------------------------------------------- */

/* The scalars of one update, each computed in double on the host and rounded
 * once to fp32 (1 - beta too: 1 - (float)0.9 would be off by 2e-7). */
struct adamw_args {
    float lr, beta1, one_minus_beta1, beta2, one_minus_beta2, eps, lr_wd, bias_correction1, bias_correction2,
        grad_scale;
};

/* V decay flags starting at element i: one 4-byte load when V == 4 (the
 * caller checked the alignment), byte loads otherwise. */
template <int V> static __device__ __forceinline__ void load_decay(bool (&o)[V], const uint8_t *decay, int64_t i)
{
    if constexpr (V == 4) {
        uchar4 d = *reinterpret_cast<const uchar4 *>(decay + i);
        o[0] = d.x;
        o[1] = d.y;
        o[2] = d.z;
        o[3] = d.w;
    } else {
#pragma unroll
        for (int k = 0; k < V; k++)
            o[k] = decay[i + k];
    }
}

/* AdamW on V consecutive elements at i, in fp32 registers:
 * g = grad_scale * grad; m, v move towards g, g^2; value takes the
 * bias-corrected Adam step and, where decay is set, loses lr * wd times its
 * value before the step. */
template <int V>
static __device__ __forceinline__ void adamw_elements(float *values, const float *grads, float *m, float *v,
                                                      const uint8_t *decay, int64_t i, const adamw_args &a)
{
    float p[V], g[V], mi[V], vi[V];
    bool d[V];
    vec_load<float, V>(p, values + i);
    vec_load<float, V>(g, grads + i);
    vec_load<float, V>(mi, m + i);
    vec_load<float, V>(vi, v + i);
    load_decay<V>(d, decay, i);
#pragma unroll
    for (int k = 0; k < V; k++) {
        float gk = a.grad_scale * g[k];
        mi[k] = a.beta1 * mi[k] + a.one_minus_beta1 * gk;
        vi[k] = a.beta2 * vi[k] + a.one_minus_beta2 * gk * gk;
        float adam = (mi[k] / a.bias_correction1) / (sqrtf(vi[k] / a.bias_correction2) + a.eps);
        float before = p[k];
        p[k] = before - a.lr * adam;
        if (d[k])
            p[k] -= a.lr_wd * before;
    }
    vec_store<float, V>(values + i, p);
    vec_store<float, V>(m + i, mi);
    vec_store<float, V>(v + i, vi);
}

/* AdamW over n elements: a grid-stride loop over groups of V (V-aligned
 * pointers), then the n % V elements past the last group, one per thread. */
template <int V>
__global__ void adamw_kernel(float *values, const float *grads, float *m, float *v, const uint8_t *decay, int64_t n,
                             adamw_args a)
{
    int64_t tid = blockIdx.x * (int64_t)blockDim.x + threadIdx.x, nthreads = (int64_t)gridDim.x * blockDim.x;
    int64_t groups = n / V;
    for (int64_t gi = tid; gi < groups; gi += nthreads)
        adamw_elements<V>(values, grads, m, v, decay, gi * V, a);
    if (tid < n - groups * V)
        adamw_elements<1>(values, grads, m, v, decay, groups * V + tid, a);
}

void cuda_adamw_step(mt_backend *be, mt_tensor *values, const mt_tensor *grads, mt_tensor *m, mt_tensor *v,
                     const uint8_t *decay, double lr, double beta1, double beta2, double eps, double weight_decay,
                     double bias_correction1, double bias_correction2, double grad_scale)
{
    require_dtype(values, MT_F32, "adamw_step", "values");
    require_dtype(grads, MT_F32, "adamw_step", "grads");
    require_dtype(m, MT_F32, "adamw_step", "m");
    require_dtype(v, MT_F32, "adamw_step", "v");
    int64_t n = mt_numel(values);
    if (n == 0)
        return;
    adamw_args a = {(float)lr,
                    (float)beta1,
                    (float)(1.0 - beta1),
                    (float)beta2,
                    (float)(1.0 - beta2),
                    (float)eps,
                    (float)(lr * weight_decay),
                    (float)bias_correction1,
                    (float)bias_correction2,
                    (float)grad_scale};
    bool vec4 = aligned_to(values->data, 16) && aligned_to(grads->data, 16) && aligned_to(m->data, 16) &&
                aligned_to(v->data, 16) && aligned_to(decay, 4);
    float *val = (float *)values->data, *mom1 = (float *)m->data, *mom2 = (float *)v->data;
    const float *grad = (const float *)grads->data;
    if (vec4)
        adamw_kernel<4><<<grid_for(n / 4 + 1, MT_CUDA_THREADS), MT_CUDA_THREADS, 0, cuda_stream(be)>>>(
            val, grad, mom1, mom2, decay, n, a);
    else
        adamw_kernel<1><<<grid_for(n, MT_CUDA_THREADS), MT_CUDA_THREADS, 0, cuda_stream(be)>>>(
            val, grad, mom1, mom2, decay, n, a);
    LAUNCH_CHECK("adamw_step");
}

/* ---- sum of squares ------------------------------------------------------- */

/* Blocks of the first pass: a cap fixed here, so the partials (and the order
 * they are summed in) depend on the size alone, never on the device. */

/* Sum of a double over the block in a fixed order (warp butterflies, then the
 * warps in order), returned to every thread; blockDim.x a multiple of 32. */
static __device__ __forceinline__ double block_sum_double(double s)
{
    __shared__ double shm_sumsq[32];
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    for (int o = 16; o > 0; o >>= 1)
        s += __shfl_xor_sync(0xffffffffu, s, o);
    if (lane == 0)
        shm_sumsq[warp] = s;
    __syncthreads();
    s = lane < nwarps ? shm_sumsq[lane] : 0.0;
    for (int o = 16; o > 0; o >>= 1)
        s += __shfl_xor_sync(0xffffffffu, s, o);
    return s;
}

/* First pass: partial[block] = sum of x^2 over the block's grid-stride share
 * of the n elements (groups of V, then the n % V past the last group), each
 * square and sum in double so a norm over billions of elements keeps its
 * digits. */
template <int V> __global__ void sumsq_partial_kernel(double *partial, const float *x, int64_t n)
{
    int64_t tid = blockIdx.x * (int64_t)blockDim.x + threadIdx.x, nthreads = (int64_t)gridDim.x * blockDim.x;
    int64_t groups = n / V;
    double s = 0.0;
    for (int64_t gi = tid; gi < groups; gi += nthreads) {
        float e[V];
        vec_load<float, V>(e, x + gi * V);
#pragma unroll
        for (int k = 0; k < V; k++)
            s += (double)e[k] * e[k];
    }
    if (tid < n - groups * V) {
        double e = x[groups * V + tid];
        s += e * e;
    }
    s = block_sum_double(s);
    if (threadIdx.x == 0)
        partial[blockIdx.x] = s;
}

/* Second pass, one block: *out = the sum of partial[0 .. nparts). */
__global__ void sumsq_finish_kernel(double *out, const double *partial, int nparts)
{
    double s = 0.0;
    for (int i = threadIdx.x; i < nparts; i += blockDim.x)
        s += partial[i];
    s = block_sum_double(s);
    if (threadIdx.x == 0)
        *out = s;
}

/* The sum of squares of the n floats at x into *out (device), through the
 * backend's reduce buffer for the partials; queued, not waited for. */
static void sumsq_queue(mt_backend *be, const float *x, int64_t n, double *out)
{
    cudaStream_t st = cuda_stream(be);
    if (n == 0) {
        CUDA_CHECK(cudaMemsetAsync(out, 0, sizeof *out, st));
        return;
    }
    int V = aligned_to(x, 16) ? 4 : 1;
    int64_t want = (n / V + MT_CUDA_THREADS - 1) / MT_CUDA_THREADS;
    int blocks = (int)(want < 1 ? 1 : want > MT_CUDA_REDUCE_BLOCKS ? MT_CUDA_REDUCE_BLOCKS : want);
    double *buf = cuda_state(be)->reduce;
    if (V == 4)
        sumsq_partial_kernel<4><<<blocks, MT_CUDA_THREADS, 0, st>>>(buf, x, n);
    else
        sumsq_partial_kernel<1><<<blocks, MT_CUDA_THREADS, 0, st>>>(buf, x, n);
    LAUNCH_CHECK("sumsq (partials)");
    sumsq_finish_kernel<<<1, MT_CUDA_REDUCE_BLOCKS, 0, st>>>(out, buf, blocks);
    LAUNCH_CHECK("sumsq (finish)");
}

double cuda_sumsq(mt_backend *be, const mt_tensor *x)
{
    require_dtype(x, MT_F32, "sumsq", "x");
    int64_t n = mt_numel(x);
    if (n == 0)
        return 0.0;
    cudaStream_t st = cuda_stream(be);
    double *result = cuda_state(be)->reduce + MT_CUDA_REDUCE_BLOCKS; /* after the partials */
    sumsq_queue(be, (const float *)x->data, n, result);
    double total = 0.0;
    CUDA_CHECK(cudaMemcpyAsync(&total, result, sizeof total, cudaMemcpyDeviceToHost, st));
    CUDA_CHECK(cudaStreamSynchronize(st));
    return total;
}

void cuda_sumsq_ranges(mt_backend *be, const mt_tensor *x, int n, const size_t *begin, const size_t *count,
                       double *out)
{
    require_dtype(x, MT_F32, "sumsq_ranges", "x");
    if (n <= 0)
        return;
    cudaStream_t st = cuda_stream(be);
    double *results = NULL;
    CUDA_CHECK(cudaMallocAsync((void **)&results, (size_t)n * sizeof *results, st));
    for (int i = 0; i < n; i++)
        sumsq_queue(be, (const float *)x->data + begin[i], (int64_t)count[i], results + i);
    CUDA_CHECK(cudaMemcpyAsync(out, results, (size_t)n * sizeof *out, cudaMemcpyDeviceToHost, st));
    CUDA_CHECK(cudaFreeAsync(results, st));
    CUDA_CHECK(cudaStreamSynchronize(st));
}
