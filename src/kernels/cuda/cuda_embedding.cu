/* Embedding lookup, of the whole table or one rank's row slice, and its
 * deterministic scatter-add backward. */
#include <type_traits>

#include <cub/device/device_radix_sort.cuh>

#include "kernels/cuda/cuda_vector.cuh"

#define EMB_SEG 64   /* sorted indices per segment of the backward: the most rows one block sums */
#define EMB_UNROLL 4 /* rows whose loads a thread issues before adding them (memory parallelism) */

template <typename F> static void emb_dispatch_vec(int V, F f)
{
    switch (V) {
    case 4: f(std::integral_constant<int, 4>{}); break;
    case 2: f(std::integral_constant<int, 2>{}); break;
    default: f(std::integral_constant<int, 1>{}); break;
    }
}

/* out (N, D) [n, :] = weight (V, D) [ids[n] - first_id, :] for an id in the
 * slice [first_id, first_id + V) of a table of `vocab` rows, zeros for
 * another id in [0, vocab) (another rank's row: the all-reduce adds it). ids
 * (N) i32, contiguous. Block (tx, ty): each of its ty rows of threads copies
 * one token row at a time (grid-stride over N), thread x owning the VEC-wide
 * column vectors x, x + tx, ...; row strides ors, wrs. An id outside
 * [0, vocab) gives a NaN row rather than a read out of bounds, so the loss
 * shows it. */
template <typename T, int VEC>
__global__ void embedding_fwd_kernel(T *out, const T *weight, const int32_t *ids, int64_t N, int64_t D, int64_t V,
                                     int64_t first_id, int64_t vocab, int64_t ors, int64_t wrs)
{
    for (int64_t n = blockIdx.x * (int64_t)blockDim.y + threadIdx.y; n < N; n += (int64_t)gridDim.x * blockDim.y) {
        int64_t id = ids[n], row = id - first_id;
        bool valid = id >= 0 && id < vocab, mine = valid && row >= 0 && row < V;
        for (int64_t c = threadIdx.x * (int64_t)VEC; c < D; c += (int64_t)blockDim.x * VEC) {
            float v[VEC];
            if (mine) {
                vec_load<T, VEC>(v, weight + row * wrs + c);
            } else {
#pragma unroll
                for (int i = 0; i < VEC; i++)
                    v[i] = valid ? 0.0f : __int_as_float(0x7fc00000);
            }
            vec_store<T, VEC>(out + n * ors + c, v);
        }
    }
}

void cuda_embedding_fwd(mt_backend *be, mt_tensor *out, const mt_tensor *weight, const mt_tensor *ids,
                        int64_t first_id, int64_t vocab)
{
    const char *op = "embedding_fwd";
    require_dtype(ids, MT_I32, op, "ids");
    int64_t N = mt_rows(out), D = mt_cols(out);
    if (N * D == 0)
        return;
    int VEC = vec_pick_width(D, out, weight);
    int tx = row_threads((D + VEC - 1) / VEC, MT_CUDA_THREADS);
    dim3 block(tx, MT_CUDA_THREADS / tx);
    unsigned grid = grid_for(N, (int)block.y);
    dispatch_float(out->dtype, op, [&](auto tag) {
        using T = typename decltype(tag)::type;
        emb_dispatch_vec(VEC, [&](auto vc) {
            constexpr int VV = decltype(vc)::value;
            embedding_fwd_kernel<T, VV><<<grid, block, 0, cuda_stream(be)>>>(
                (T *)out->data, (const T *)weight->data, (const int32_t *)ids->data, N, D, mt_rows(weight),
                first_id, vocab, mt_row_stride(out), mt_row_stride(weight));
            LAUNCH_CHECK(op);
        });
    });
}

/* Sort keys and values for the backward: keys[n] = ids[n] - first_id (as
 * unsigned), the row of dweight (V, D), for an id of [0, vocab) in the slice
 * [first_id, first_id + V); else `invalid` (> every row), so that the ids
 * that add nothing sort to the end as one run and never split a row's run;
 * vals[n] = n. Grid-stride over N. */
__global__ void embedding_keys_kernel(uint32_t *keys, int32_t *vals, const int32_t *ids, int64_t N, int64_t V,
                                      int64_t first_id, int64_t vocab, uint32_t invalid)
{
    for (int64_t n = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; n < N; n += (int64_t)gridDim.x * blockDim.x) {
        int64_t id = ids[n], row = id - first_id;
        keys[n] = id >= 0 && id < vocab && row >= 0 && row < V ? (uint32_t)row : invalid;
        vals[n] = (int32_t)n;
    }
}

/* Flags of a sorted index in its segment: the last index of its run there (a
 * piece end) and, for a key in [0, V), where the piece's sum goes. */
#define EMB_PIECE_END 1
#define EMB_TO_WEIGHT 2 /* the run lies wholly in the segment: into dweight */
#define EMB_TO_FIRST 4  /* the run began in an earlier segment: first_part */
#define EMB_TO_LAST 8   /* the run starts here and goes on: last_part */

/* Pass 1 of dweight (V, D) [key, :] += the rows of dout (N, D) at the
 * positions with that key. skeys/spos (N): the (key, position) pairs stably
 * sorted by key, so each key's positions are one ascending run, cut into nseg
 * segments of EMB_SEG; one block per segment j (grid-stride), thread x owning
 * the VEC-wide column vectors x, x + blockDim, .... The block sums each piece
 * (a run's part in the segment) in sorted order in fp32: a whole run goes into
 * dweight (no other block sees it), the first piece of a run begun earlier to
 * first_part (nseg, D) row j, the last piece of a run that goes on to
 * last_part row j. */
template <typename T, int VEC>
__global__ void embedding_bwd_segment_kernel(T *dweight, float *first_part, float *last_part, const T *dout,
                                             const uint32_t *skeys, const int32_t *spos, int64_t N, int64_t D,
                                             int64_t V, int64_t wrs, int64_t drs)
{
    __shared__ uint32_t key[EMB_SEG];
    __shared__ int32_t pos[EMB_SEG];
    __shared__ uint8_t flags[EMB_SEG];
    int64_t nseg = (N + EMB_SEG - 1) / EMB_SEG;
    for (int64_t j = blockIdx.x; j < nseg; j += gridDim.x) {
        int64_t b = j * EMB_SEG;
        int n = (int)(N - b < EMB_SEG ? N - b : EMB_SEG);
        __syncthreads(); /* the previous segment's readers are done with the shared arrays */
        for (int i = threadIdx.x; i < n; i += blockDim.x) {
            int64_t s = b + i;
            uint32_t id = skeys[s];
            bool run_end = s == N - 1 || skeys[s + 1] != id;
            bool starts_here = skeys[b] != id || b == 0 || skeys[b - 1] != id;
            int f = run_end || i == n - 1 ? EMB_PIECE_END : 0;
            if (f && id < V)
                f |= !starts_here ? EMB_TO_FIRST : run_end ? EMB_TO_WEIGHT : EMB_TO_LAST;
            key[i] = id;
            pos[i] = spos[s];
            flags[i] = (uint8_t)f;
        }
        __syncthreads();
        /* Flags are the block's, so every thread takes the same branches. */
        for (int64_t c = threadIdx.x * (int64_t)VEC; c < D; c += (int64_t)blockDim.x * VEC) {
            float acc[VEC] = {};
            for (int i0 = 0; i0 < n; i0 += EMB_UNROLL) {
                /* Rows of distinct pieces are distinct rows of dweight, so the
                 * rows this group adds into can be read before it writes any. */
                float r[EMB_UNROLL][VEC], w[EMB_UNROLL][VEC];
#pragma unroll
                for (int u = 0; u < EMB_UNROLL; u++) {
                    int i = i0 + u;
                    if (i < n)
                        vec_load<T, VEC>(r[u], dout + (int64_t)pos[i] * drs + c);
                    if (i < n && (flags[i] & EMB_TO_WEIGHT))
                        vec_load<T, VEC>(w[u], dweight + (int64_t)key[i] * wrs + c);
                }
#pragma unroll
                for (int u = 0; u < EMB_UNROLL; u++) {
                    int i = i0 + u;
                    if (i >= n)
                        break;
#pragma unroll
                    for (int v = 0; v < VEC; v++)
                        acc[v] += r[u][v];
                    int f = flags[i];
                    if (!(f & EMB_PIECE_END))
                        continue;
                    if (f & EMB_TO_WEIGHT) {
#pragma unroll
                        for (int v = 0; v < VEC; v++)
                            w[u][v] += acc[v];
                        vec_store<T, VEC>(dweight + (int64_t)key[i] * wrs + c, w[u]);
                    } else if (f & (EMB_TO_FIRST | EMB_TO_LAST)) {
                        vec_store<float, VEC>((f & EMB_TO_LAST ? last_part : first_part) + j * D + c, acc);
                    }
#pragma unroll
                    for (int v = 0; v < VEC; v++)
                        acc[v] = 0.0f;
                }
            }
        }
    }
}

/* Pass 2, the runs across segments: segment j (one block each, grid-stride,
 * columns as in pass 1) owns the run of its last index when that run starts in
 * j and goes on past it, covering the first index of segments j + 1 .. k_end,
 * whose pieces of it are in first_part. The block adds last_part row j and
 * those rows in segment order in fp32, then once into dweight (V, D) [id];
 * each run has one owner, so no two blocks touch a row. */
template <typename T, int VEC>
__global__ void embedding_bwd_carry_kernel(T *dweight, const float *first_part, const float *last_part,
                                           const uint32_t *skeys, int64_t N, int64_t D, int64_t V, int64_t wrs)
{
    int64_t nseg = (N + EMB_SEG - 1) / EMB_SEG;
    for (int64_t j = blockIdx.x; j < nseg; j += gridDim.x) {
        int64_t b = j * EMB_SEG, e = b + EMB_SEG;
        if (e >= N)
            continue; /* the last segment: nothing goes on past it */
        uint32_t id = skeys[e - 1];
        if (skeys[e] != id || (b > 0 && skeys[b - 1] == id) || id >= V)
            continue; /* not a run that starts here and goes on (or the invalid key) */
        /* Keys are sorted, so the segments starting inside the run are the
         * consecutive ones whose first key is id: count them, blockDim at a time. */
        int64_t k_end = j;
        for (;;) {
            int64_t k = k_end + 1 + threadIdx.x;
            int found = __syncthreads_count(k < nseg && skeys[k * EMB_SEG] == id);
            k_end += found;
            if (found < (int)blockDim.x)
                break;
        }
        for (int64_t c = threadIdx.x * (int64_t)VEC; c < D; c += (int64_t)blockDim.x * VEC) {
            float acc[VEC], r[VEC];
            vec_load<float, VEC>(acc, last_part + j * D + c);
#pragma unroll 16 /* independent loads in flight: one id's run can span every segment */
            for (int64_t k = j + 1; k <= k_end; k++) {
                vec_load<float, VEC>(r, first_part + k * D + c);
#pragma unroll
                for (int v = 0; v < VEC; v++)
                    acc[v] += r[v];
            }
            vec_accum<T, VEC>(dweight + (int64_t)id * wrs + c, acc);
        }
    }
}

void cuda_embedding_bwd(mt_backend *be, mt_arena *scratch, mt_tensor *dweight, const mt_tensor *dout,
                        const mt_tensor *ids, int64_t first_id, int64_t vocab)
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

    uint32_t invalid = (uint32_t)(V < (int64_t)UINT32_MAX ? V : (int64_t)UINT32_MAX);
    embedding_keys_kernel<<<grid_for(N, MT_CUDA_THREADS), MT_CUDA_THREADS, 0, stream>>>(
        keys, vals, (const int32_t *)ids->data, N, V, first_id, vocab, invalid);
    LAUNCH_CHECK("embedding_bwd (sort keys)");

    /* Only the bits that keys in [0, invalid] use take part in the sort. LSD
     * radix sort is stable: equal keys keep ascending positions. */
    int end_bit = 1;
    while (end_bit < 32 && ((uint64_t)1 << end_bit) <= (uint64_t)invalid)
        end_bit++;
    size_t temp_bytes = 0;
    CUDA_CHECK(cub::DeviceRadixSort::SortPairs(NULL, temp_bytes, keys, skeys, vals, svals, (int)N, 0, end_bit,
                                               stream));
    void *temp = mt_arena_alloc(scratch, temp_bytes);
    CUDA_CHECK(cub::DeviceRadixSort::SortPairs(temp, temp_bytes, keys, skeys, vals, svals, (int)N, 0, end_bit,
                                               stream));
    LAUNCH_CHECK("embedding_bwd (radix sort)");

    int64_t nseg = (N + EMB_SEG - 1) / EMB_SEG;
    float *first_part = (float *)mt_arena_alloc(scratch, (size_t)(nseg * D) * sizeof(float));
    float *last_part = (float *)mt_arena_alloc(scratch, (size_t)(nseg * D) * sizeof(float));
    int VEC = vec_pick_width(D, dweight, dout);
    int threads = row_threads((D + VEC - 1) / VEC, MT_CUDA_THREADS);
    unsigned blocks = (unsigned)(nseg < MT_CUDA_MAX_BLOCKS ? nseg : MT_CUDA_MAX_BLOCKS);
    dispatch_float(dweight->dtype, op, [&](auto tag) {
        using T = typename decltype(tag)::type;
        emb_dispatch_vec(VEC, [&](auto vc) {
            constexpr int VV = decltype(vc)::value;
            embedding_bwd_segment_kernel<T, VV><<<blocks, threads, 0, stream>>>(
                (T *)dweight->data, first_part, last_part, (const T *)dout->data, skeys, svals, N, D, V,
                mt_row_stride(dweight), mt_row_stride(dout));
            LAUNCH_CHECK("embedding_bwd (segments)");
            embedding_bwd_carry_kernel<T, VV><<<blocks, threads, 0, stream>>>(
                (T *)dweight->data, first_part, last_part, skeys, N, D, V, mt_row_stride(dweight));
            LAUNCH_CHECK("embedding_bwd (runs across segments)");
        });
    });
}
