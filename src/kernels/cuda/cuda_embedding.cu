/* Embedding lookup and its deterministic scatter-add backward. */
#include <cub/device/device_radix_sort.cuh>

#include "kernels/cuda/cuda_common.cuh"

/* out (N, D) [n, d] = weight (V, D) [ids[n], d]. ids (N) i32, contiguous.
 * Grid-stride over N * D elements; row strides ors, wrs. An id outside
 * [0, V) gives a NaN row rather than a read out of bounds, so the loss shows it. */
template <typename T>
__global__ void embedding_fwd_kernel(T *out, const T *weight, const int32_t *ids, int64_t N, int64_t D, int64_t V,
                                     int64_t ors, int64_t wrs)
{
    int64_t total = N * D;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
        int64_t n = i / D, d = i - n * D;
        int64_t id = ids[n];
        out[n * ors + d] = id >= 0 && id < V ? weight[id * wrs + d] : from_f<T>(__int_as_float(0x7fc00000));
    }
}

void cuda_embedding_fwd(mt_backend *be, mt_tensor *out, const mt_tensor *weight, const mt_tensor *ids)
{
    const char *op = "embedding_fwd";
    require_dtype(ids, MT_I32, op, "ids");
    int64_t N = mt_rows(out), D = mt_cols(out);
    if (N * D == 0)
        return;
    dispatch_float(out->dtype, op, [&](auto tag) {
        using T = typename decltype(tag)::type;
        embedding_fwd_kernel<T><<<grid_for(N * D, MT_CUDA_THREADS), MT_CUDA_THREADS, 0, cuda_stream(be)>>>(
            (T *)out->data, (const T *)weight->data, (const int32_t *)ids->data, N, D, mt_rows(weight), mt_row_stride(out),
            mt_row_stride(weight));
        LAUNCH_CHECK(op);
    });
}

/* Sort keys and values for the backward: keys[n] = ids[n] (as unsigned),
 * vals[n] = n. Grid-stride over N. */
__global__ void embedding_keys_kernel(uint32_t *keys, int32_t *vals, const int32_t *ids, int64_t N)
{
    for (int64_t n = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; n < N; n += (int64_t)gridDim.x * blockDim.x) {
        keys[n] = (uint32_t)ids[n];
        vals[n] = (int32_t)n;
    }
}

/* dweight (V, D) [id, :] += sum of dout (N, D) [n, :] over the positions n
 * with ids[n] == id. skeys/spos are the (id, position) pairs stably sorted by
 * id, so each id's positions are one run, ascending. One block per sorted
 * index s (grid-stride); only the block at the start of a run works: it sums
 * the run's rows in ascending position order in fp32, each thread owning
 * columns d = tid, tid + blockDim, ..., and adds once into dweight[id].
 * Runs are disjoint, so no two blocks touch the same row of dweight. */
template <typename T>
__global__ void embedding_bwd_kernel(T *dweight, const T *dout, const uint32_t *skeys, const int32_t *spos,
                                     int64_t N, int64_t D, int64_t V, int64_t wrs, int64_t drs)
{
    for (int64_t s = blockIdx.x; s < N; s += gridDim.x) {
        uint32_t id = skeys[s];
        if ((s > 0 && skeys[s - 1] == id) || id >= (uint32_t)V)
            continue; /* not the start of a run (its first block does it), or an id out of range */
        int64_t end = s + 1;
        while (end < N && skeys[end] == id)
            end++;
        for (int64_t d = threadIdx.x; d < D; d += blockDim.x) {
            float acc = 0.0f;
            for (int64_t j = s; j < end; j++)
                acc += load_f<T>(dout, (int64_t)spos[j] * drs + d);
            accum_f<T>(dweight, (int64_t)id * wrs + d, acc);
        }
    }
}

void cuda_embedding_bwd(mt_backend *be, mt_arena *scratch, mt_tensor *dweight, const mt_tensor *dout,
                        const mt_tensor *ids)
{
    const char *op = "embedding_bwd";
    if (!dweight)
        return;
    require_dtype(ids, MT_I32, op, "ids");
    int64_t N = mt_rows(dout), D = mt_cols(dout), V = mt_rows(dweight);
    if (N == 0 || D == 0)
        return;
    if (N > INT32_MAX)
        mt_fatal("%s: %lld ids: at most %d are supported", op, (long long)N, INT32_MAX);
    cudaStream_t stream = cuda_stream(be);

    uint32_t *keys = (uint32_t *)mt_arena_alloc(scratch, (size_t)N * sizeof(uint32_t));
    uint32_t *skeys = (uint32_t *)mt_arena_alloc(scratch, (size_t)N * sizeof(uint32_t));
    int32_t *vals = (int32_t *)mt_arena_alloc(scratch, (size_t)N * sizeof(int32_t));
    int32_t *svals = (int32_t *)mt_arena_alloc(scratch, (size_t)N * sizeof(int32_t));

    embedding_keys_kernel<<<grid_for(N, MT_CUDA_THREADS), MT_CUDA_THREADS, 0, stream>>>(
        keys, vals, (const int32_t *)ids->data, N);
    LAUNCH_CHECK("embedding_bwd (sort keys)");

    /* Only the bits that ids in [0, V) use take part in the sort. LSD radix
     * sort is stable: equal ids keep ascending positions. */
    int end_bit = 1;
    while (end_bit < 32 && ((uint64_t)1 << end_bit) < (uint64_t)V)
        end_bit++;
    size_t temp_bytes = 0;
    CUDA_CHECK(cub::DeviceRadixSort::SortPairs(NULL, temp_bytes, keys, skeys, vals, svals, (int)N, 0, end_bit,
                                               stream));
    void *temp = mt_arena_alloc(scratch, temp_bytes);
    CUDA_CHECK(cub::DeviceRadixSort::SortPairs(temp, temp_bytes, keys, skeys, vals, svals, (int)N, 0, end_bit,
                                               stream));
    LAUNCH_CHECK("embedding_bwd (radix sort)");

    int threads = row_threads(D, MT_CUDA_THREADS);
    unsigned blocks = (unsigned)(N < (int64_t)INT32_MAX ? N : INT32_MAX);
    dispatch_float(dweight->dtype, op, [&](auto tag) {
        using T = typename decltype(tag)::type;
        embedding_bwd_kernel<T><<<blocks, threads, 0, stream>>>((T *)dweight->data, (const T *)dout->data, skeys,
                                                                svals, N, D, V, mt_row_stride(dweight),
                                                                mt_row_stride(dout));
        LAUNCH_CHECK(op);
    });
}
