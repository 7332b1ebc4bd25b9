/* Cross-entropy with a fused softmax over logits (N, V) in T, targets (N)
 * i32, lse (N) f32, loss (1) f32, and its backward. Rows whose target is
 * ignore_index contribute nothing; count (the rows that are not ignored) is
 * computed on the device in both passes, so nothing waits on the host.
 * All sums are fixed-order (block_sum, then single-block reductions). */
#include "kernels/cuda/cuda_common.cuh"

#define CE_REDUCE_THREADS 1024

/* Per row n (block per row, grid-stride over rows), two passes over the row:
 *   mx = max_v logits[n, v];  lse[n] = mx + log(sum_v exp(logits[n, v] - mx))
 *   row_loss[n] = lse[n] - logits[n, t_n]
 * Ignored rows get lse = 0 and row_loss = 0. A target outside [0, V) that is
 * not ignore_index gives row_loss = NaN, so the loss shows it. */
template <typename T>
__global__ void ce_fwd_rows_kernel(float *lse, float *row_loss, const T *logits, const int32_t *targets, int64_t N,
                                   int64_t V, int64_t rs, int ignore_index)
{
    for (int64_t n = blockIdx.x; n < N; n += gridDim.x) {
        int t = targets[n];
        if (t == ignore_index) { /* uniform over the block: no block_sum skipped by some threads only */
            if (threadIdx.x == 0) {
                lse[n] = 0.0f;
                row_loss[n] = 0.0f;
            }
            continue;
        }
        const T *row = logits + n * rs;
        float mx = -INFINITY;
        for (int64_t v = threadIdx.x; v < V; v += blockDim.x)
            mx = fmaxf(mx, load_f<T>(row, v));
        mx = block_max(mx);
        float s = 0.0f;
        for (int64_t v = threadIdx.x; v < V; v += blockDim.x)
            s += expf(load_f<T>(row, v) - mx);
        s = block_sum(s);
        if (threadIdx.x == 0) {
            float l = mx + logf(s);
            lse[n] = l;
            row_loss[n] = (t >= 0 && (int64_t)t < V) ? l - load_f<T>(row, t) : NAN;
        }
    }
}

/* One block of CE_REDUCE_THREADS: count = rows with targets[n] != ignore_index,
 * and (if row_loss is given) loss[0] = sum(row_loss) / count, or 0 when
 * count = 0. Thread t sums rows t, t + blockDim, ... in order, then the
 * block combines in fixed order. count goes to *count_out if given. */
__global__ void ce_reduce_kernel(float *loss, int *count_out, const float *row_loss, const int32_t *targets, int64_t N,
                                 int ignore_index)
{
    __shared__ long long shm_cnt[CE_REDUCE_THREADS];
    float s = 0.0f;
    long long cnt = 0;
    for (int64_t n = threadIdx.x; n < N; n += blockDim.x) {
        if (targets[n] != ignore_index)
            cnt++;
        if (row_loss)
            s += row_loss[n];
    }
    s = block_sum(s);
    shm_cnt[threadIdx.x] = cnt;
    __syncthreads();
    for (int half = blockDim.x / 2; half > 0; half >>= 1) { /* integer: exact in any order */
        if (threadIdx.x < half)
            shm_cnt[threadIdx.x] += shm_cnt[threadIdx.x + half];
        __syncthreads();
    }
    if (threadIdx.x == 0) {
        long long total = shm_cnt[0];
        if (count_out)
            *count_out = (int)total;
        if (loss)
            loss[0] = total > 0 ? s / (float)total : 0.0f;
    }
}

void cuda_cross_entropy_fwd(mt_backend *be, mt_arena *scratch, mt_tensor *loss, mt_tensor *lse,
                            const mt_tensor *logits, const mt_tensor *targets, int ignore_index)
{
    const char *op = "cross_entropy_fwd";
    require_dtype(loss, MT_F32, op, "loss");
    require_dtype(lse, MT_F32, op, "lse");
    require_dtype(targets, MT_I32, op, "targets");
    int64_t N = mt_rows(logits), V = mt_cols(logits);
    cudaStream_t stream = cuda_stream(be);
    float *row_loss = (float *)mt_arena_alloc(scratch, (size_t)(N > 0 ? N : 1) * sizeof(float));
    if (N > 0) {
        int threads = row_threads(V, 1024);
        unsigned blocks = (unsigned)(N < (int64_t)INT32_MAX ? N : INT32_MAX);
        dispatch_float(logits->dtype, op, [&](auto tag) {
            using T = typename decltype(tag)::type;
            ce_fwd_rows_kernel<T><<<blocks, threads, 0, stream>>>((float *)lse->data, row_loss,
                                                                  (const T *)logits->data,
                                                                  (const int32_t *)targets->data, N, V,
                                                                  mt_row_stride(logits), ignore_index);
            LAUNCH_CHECK(op);
        });
    }
    ce_reduce_kernel<<<1, CE_REDUCE_THREADS, 0, stream>>>((float *)loss->data, NULL, row_loss,
                                                          (const int32_t *)targets->data, N, ignore_index);
    LAUNCH_CHECK("cross_entropy_fwd (loss)");
}

/* Per row n not ignored (block per row, grid-stride over rows):
 *   dlogits[n, v] += dloss * (exp(logits[n, v] - lse[n]) - [v == t_n]) / count
 * count comes from ce_reduce_kernel (it is > 0 whenever a row is not ignored). */
template <typename T>
__global__ void ce_bwd_kernel(T *dlogits, const float *dloss, const int *count, const T *logits, const float *lse,
                              const int32_t *targets, int64_t N, int64_t V, int64_t drs, int64_t lrs, int ignore_index)
{
    float g = dloss[0];
    float cnt = (float)*count;
    for (int64_t n = blockIdx.x; n < N; n += gridDim.x) {
        int t = targets[n];
        if (t == ignore_index)
            continue;
        float l = lse[n];
        const T *row = logits + n * lrs;
        for (int64_t v = threadIdx.x; v < V; v += blockDim.x) {
            float p = expf(load_f<T>(row, v) - l);
            accum_f<T>(dlogits, n * drs + v, g * (p - (v == t ? 1.0f : 0.0f)) / cnt);
        }
    }
}

void cuda_cross_entropy_bwd(mt_backend *be, mt_arena *scratch, mt_tensor *dlogits, const mt_tensor *dloss,
                            const mt_tensor *logits, const mt_tensor *lse, const mt_tensor *targets,
                            int ignore_index)
{
    const char *op = "cross_entropy_bwd";
    if (!dlogits)
        return;
    require_dtype(dloss, MT_F32, op, "dloss");
    require_dtype(lse, MT_F32, op, "lse");
    require_dtype(targets, MT_I32, op, "targets");
    int64_t N = mt_rows(logits), V = mt_cols(logits);
    if (N == 0 || V == 0)
        return;
    cudaStream_t stream = cuda_stream(be);
    int *count = (int *)mt_arena_alloc(scratch, sizeof(int));
    ce_reduce_kernel<<<1, CE_REDUCE_THREADS, 0, stream>>>(NULL, count, NULL, (const int32_t *)targets->data, N,
                                                          ignore_index);
    LAUNCH_CHECK("cross_entropy_bwd (count)");
    int threads = row_threads(V, 1024);
    unsigned blocks = (unsigned)(N < (int64_t)INT32_MAX ? N : INT32_MAX);
    dispatch_float(dlogits->dtype, op, [&](auto tag) {
        using T = typename decltype(tag)::type;
        ce_bwd_kernel<T><<<blocks, threads, 0, stream>>>((T *)dlogits->data, (const float *)dloss->data, count,
                                                         (const T *)logits->data, (const float *)lse->data,
                                                         (const int32_t *)targets->data, N, V,
                                                         mt_row_stride(dlogits), mt_row_stride(logits), ignore_index);
        LAUNCH_CHECK(op);
    });
}
