/* Cross-entropy with a fused softmax, in two steps so that the vocabulary may
 * be split over ranks: the row statistics of each rank's columns (logits
 * (N, V) in T, targets (N) i32, stats (N, 3) f32), then their combination
 * into lse (N) f32 and loss (1) f32; and the backward. Rows whose target is
 * ignore_index contribute nothing; count (the rows that are not ignored) is
 * computed on the device in both passes, so nothing waits on the host.
 * All sums are fixed-order (butterflies, warp order, rank order,
 * single-block reductions).
 *
 * The row kernels are bound by memory (a 50k-column row of bf16 is 100 KB):
 * they move CE_VEC elements per load (16 bytes of bf16 where the row's
 * alignment allows) and the statistics take one pass, an online maximum
 * with the sum of exponentials rescaled as the maximum grows. */
#include <type_traits>

#include "kernels/cuda/cuda_vector.cuh"

#define CE_REDUCE_THREADS 1024
#define CE_ROW_THREADS 512

/* (m, s) and (m2, s2), each a maximum and a sum of exp(x - maximum), as one
 * pair over both sets. Commutative bit for bit (max and + are), so a xor
 * butterfly leaves the same pair in every lane. An empty set is (-inf, 0). */
static __device__ __forceinline__ void ce_merge(float &m, float &s, float m2, float s2)
{
    float M = fmaxf(m, m2);
    s = M == -INFINITY ? 0.0f : s * expf(m - M) + s2 * expf(m2 - M);
    m = M;
}

/* The (max, sum) pair over the block, returned to every thread. */
static __device__ __forceinline__ void ce_block_merge(float &m, float &s)
{
    __shared__ float shm_m[32], shm_s[32];
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    for (int o = 16; o > 0; o >>= 1)
        ce_merge(m, s, __shfl_xor_sync(0xffffffffu, m, o), __shfl_xor_sync(0xffffffffu, s, o));
    __syncthreads(); /* the previous row's readers are done with shm */
    if (lane == 0) {
        shm_m[warp] = m;
        shm_s[warp] = s;
    }
    __syncthreads();
    m = lane < nwarps ? shm_m[lane] : -INFINITY;
    s = lane < nwarps ? shm_s[lane] : 0.0f;
    for (int o = 16; o > 0; o >>= 1)
        ce_merge(m, s, __shfl_xor_sync(0xffffffffu, m, o), __shfl_xor_sync(0xffffffffu, s, o));
}

/* f(integral_constant<VEC>) for the widest of 16 bytes, 8, ... 1 element
 * that divides the columns and that every tensor's alignment allows. */
template <typename F> static void ce_dispatch_vec(int64_t cols, size_t es, const mt_tensor *a, const mt_tensor *b,
                                                  F f)
{
    int vec = (int)(16 / es);
    while (vec > 1 && !(cols % vec == 0 && vec_ok(a, vec) && vec_ok(b, vec)))
        vec /= 2;
    switch (vec) {
    case 8: f(std::integral_constant<int, 8>{}); break;
    case 4: f(std::integral_constant<int, 4>{}); break;
    case 2: f(std::integral_constant<int, 2>{}); break;
    default: f(std::integral_constant<int, 1>{}); break;
    }
}

/* Per row n of logits (N, V), columns [first_col, first_col + V) of the
 * vocabulary (block per row, grid-stride over rows; thread x takes the
 * VEC-wide column vectors x, x + blockDim, ... in order), one pass:
 *   stats[n] = (m, s, x): m = max_v logits[n, v], s = sum_v exp(logits[n, v] - m),
 *   x = logits[n, t_n - first_col] when that column is here, else 0.
 * Ignored rows get (0, 0, 0); a row of -inf (or V = 0) gets s = 0, which the
 * combine skips. */
template <typename T, int VEC>
__global__ void __launch_bounds__(CE_ROW_THREADS)
    ce_stats_kernel(float *stats, const T *logits, const int32_t *targets, int64_t N, int64_t V, int64_t rs,
                    int64_t first_col, int ignore_index)
{
    for (int64_t n = blockIdx.x; n < N; n += gridDim.x) {
        float *st = stats + 3 * n;
        int t = targets[n];
        if (t == ignore_index) { /* uniform over the block: no reduction skipped by some threads only */
            if (threadIdx.x == 0)
                st[0] = st[1] = st[2] = 0.0f;
            continue;
        }
        const T *row = logits + n * rs;
        float m = -INFINITY, s = 0.0f;
#pragma unroll 4
        for (int64_t v = threadIdx.x * (int64_t)VEC; v < V; v += (int64_t)blockDim.x * VEC) {
            float x[VEC];
            vec_load<T, VEC>(x, row + v);
            float vm = x[0];
#pragma unroll
            for (int i = 1; i < VEC; i++)
                vm = fmaxf(vm, x[i]);
            float M = fmaxf(m, vm), add = 0.0f;
            if (M != -INFINITY) {
#pragma unroll
                for (int i = 0; i < VEC; i++)
                    add += expf(x[i] - M);
            }
            s = M == -INFINITY ? 0.0f : s * expf(m - M) + add;
            m = M;
        }
        ce_block_merge(m, s);
        if (threadIdx.x == 0) {
            int64_t c = (int64_t)t - first_col;
            st[0] = m;
            st[1] = s;
            st[2] = c >= 0 && c < V ? load_f<T>(row, c) : 0.0f;
        }
    }
}

/* Per row n (thread per row, grid-stride over rows) of stats (S, N, 3), the
 * (m, s, x) of S column slices in rank order, summing in rank order:
 *   M = max_r m_r;  lse[n] = M + log(sum_r s_r exp(m_r - M));  row_loss[n] = lse[n] - sum_r x_r
 * A slice with s_r = 0 (no finite logit) is skipped, so no -inf - -inf
 * arises. For S = 1 these are the bits of a single pass, mx + log(s) (s *
 * exp(0) = s). Ignored rows get lse = 0 and row_loss = 0. A target outside
 * [0, vocab) that is not ignore_index gives row_loss = NaN, so the loss shows it. */
__global__ void ce_combine_kernel(float *lse, float *row_loss, const float *stats, const int32_t *targets,
                                  int64_t N, int64_t S, int64_t vocab, int ignore_index)
{
    for (int64_t n = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; n < N; n += (int64_t)gridDim.x * blockDim.x) {
        int t = targets[n];
        if (t == ignore_index) {
            lse[n] = 0.0f;
            row_loss[n] = 0.0f;
            continue;
        }
        float M = -INFINITY;
        for (int64_t r = 0; r < S; r++)
            M = fmaxf(M, stats[3 * (r * N + n)]);
        float total = 0.0f, x = 0.0f;
        for (int64_t r = 0; r < S; r++) {
            const float *st = stats + 3 * (r * N + n);
            if (st[1] != 0.0f)
                total += st[1] * expf(st[0] - M);
            x += st[2];
        }
        float l = M + logf(total);
        lse[n] = l;
        row_loss[n] = t >= 0 && (int64_t)t < vocab ? l - x : NAN;
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

void cuda_cross_entropy_stats(mt_backend *be, mt_tensor *stats, const mt_tensor *logits,
                              const mt_tensor *targets, int64_t first_col, int ignore_index)
{
    const char *op = "cross_entropy_stats";
    require_dtype(stats, MT_F32, op, "stats");
    require_dtype(targets, MT_I32, op, "targets");
    int64_t N = mt_rows(logits), V = mt_cols(logits);
    if (N == 0)
        return;
    unsigned blocks = (unsigned)(N < (int64_t)INT32_MAX ? N : INT32_MAX);
    dispatch_float(logits->dtype, op, [&](auto tag) {
        using T = typename decltype(tag)::type;
        ce_dispatch_vec(V, sizeof(T), logits, NULL, [&](auto vc) {
            constexpr int VEC = decltype(vc)::value;
            ce_stats_kernel<T, VEC><<<blocks, row_threads((V + VEC - 1) / VEC, CE_ROW_THREADS), 0, cuda_stream(be)>>>(
                (float *)stats->data, (const T *)logits->data, (const int32_t *)targets->data, N, V,
                mt_row_stride(logits), first_col, ignore_index);
            LAUNCH_CHECK(op);
        });
    });
}

void cuda_cross_entropy_combine(mt_backend *be, mt_arena *scratch, mt_tensor *loss, mt_tensor *lse,
                                const mt_tensor *stats, const mt_tensor *targets, int64_t vocab, int ignore_index)
{
    const char *op = "cross_entropy_combine";
    require_dtype(loss, MT_F32, op, "loss");
    require_dtype(lse, MT_F32, op, "lse");
    require_dtype(stats, MT_F32, op, "stats");
    require_dtype(targets, MT_I32, op, "targets");
    int64_t N = mt_numel(targets), S = N > 0 ? mt_numel(stats) / (3 * N) : 0;
    if (N > 0 && (S < 1 || S * 3 * N != mt_numel(stats)))
        mt_fatal("%s: %lld stats for %lld targets: not (S, N, 3)", op, (long long)mt_numel(stats), (long long)N);
    cudaStream_t stream = cuda_stream(be);
    float *row_loss = (float *)mt_arena_alloc(scratch, (size_t)(N > 0 ? N : 1) * sizeof(float));
    if (N > 0) {
        ce_combine_kernel<<<grid_for(N, MT_CUDA_THREADS), MT_CUDA_THREADS, 0, stream>>>(
            (float *)lse->data, row_loss, (const float *)stats->data, (const int32_t *)targets->data, N, S, vocab,
            ignore_index);
        LAUNCH_CHECK(op);
    }
    ce_reduce_kernel<<<1, CE_REDUCE_THREADS, 0, stream>>>((float *)loss->data, NULL, row_loss,
                                                          (const int32_t *)targets->data, N, ignore_index);
    LAUNCH_CHECK("cross_entropy_combine (loss)");
}

/* Per row n not ignored (block per row, grid-stride over rows; VEC-wide
 * column vectors as in ce_stats_kernel) of logits (N, V), columns
 * [first_col, first_col + V) of the vocabulary:
 *   dlogits[n, v] += dloss * (exp(logits[n, v] - lse[n]) - [v + first_col == t_n]) / count
 * or, IN_PLACE (dlogits is logits), = instead of += and ignored rows 0.
 * count comes from ce_reduce_kernel (it is > 0 whenever a row is not ignored). */
template <typename T, int VEC, bool IN_PLACE>
__global__ void __launch_bounds__(CE_ROW_THREADS)
    ce_bwd_kernel(T *dlogits, const float *dloss, const int *count, const T *logits, const float *lse,
                  const int32_t *targets, int64_t N, int64_t V, int64_t drs, int64_t lrs, int64_t first_col,
                  int ignore_index)
{
    const float scale = *count ? dloss[0] / (float)*count : 0.0f;
    for (int64_t n = blockIdx.x; n < N; n += gridDim.x) {
        int t = targets[n];
        if (t == ignore_index) {
            if (IN_PLACE) {
                const float zero[VEC] = {};
                for (int64_t v = threadIdx.x * (int64_t)VEC; v < V; v += (int64_t)blockDim.x * VEC)
                    vec_store<T, VEC>(dlogits + n * drs + v, zero);
            }
            continue;
        }
        const float l = lse[n];
        const int64_t c = (int64_t)t - first_col; /* the target's column here, if it is one */
        const T *row = logits + n * lrs;
        T *drow = dlogits + n * drs;
#pragma unroll 4
        for (int64_t v = threadIdx.x * (int64_t)VEC; v < V; v += (int64_t)blockDim.x * VEC) {
            float x[VEC], g[VEC];
            vec_load<T, VEC>(x, row + v);
#pragma unroll
            for (int i = 0; i < VEC; i++)
                g[i] = scale * (expf(x[i] - l) - (v + i == c ? 1.0f : 0.0f));
            if (IN_PLACE)
                vec_store<T, VEC>(drow + v, g);
            else
                vec_accum<T, VEC>(drow + v, g);
        }
    }
}

/* vocab is not needed here: a target outside it has already made the loss NaN. */
void cuda_cross_entropy_bwd(mt_backend *be, mt_arena *scratch, mt_tensor *dlogits, const mt_tensor *dloss,
                            const mt_tensor *logits, const mt_tensor *lse, const mt_tensor *targets,
                            int64_t first_col, int64_t vocab, int ignore_index)
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
    unsigned blocks = (unsigned)(N < (int64_t)INT32_MAX ? N : INT32_MAX);
    const bool in_place = dlogits->data == logits->data;
    dispatch_float(dlogits->dtype, op, [&](auto tag) {
        using T = typename decltype(tag)::type;
        ce_dispatch_vec(V, sizeof(T), logits, dlogits, [&](auto vc) {
            constexpr int VEC = decltype(vc)::value;
            auto launch = [&](auto in_place_tag) {
                constexpr bool IP = decltype(in_place_tag)::value;
                ce_bwd_kernel<T, VEC, IP><<<blocks, row_threads((V + VEC - 1) / VEC, CE_ROW_THREADS), 0, stream>>>(
                    (T *)dlogits->data, (const float *)dloss->data, count, (const T *)logits->data,
                    (const float *)lse->data, (const int32_t *)targets->data, N, V, mt_row_stride(dlogits),
                    mt_row_stride(logits), first_col, ignore_index);
            };
            if (in_place)
                launch(std::true_type{});
            else
                launch(std::false_type{});
            LAUNCH_CHECK(op);
        });
    });
}
