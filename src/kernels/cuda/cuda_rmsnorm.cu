/* Fused residual add + RMSNorm over the last dim D, and its backward.
 * x, y, dx, dy are in T (f32 or bf16); residual, residual_out, weight, rstd
 * and their gradients are f32. Sums are fp32 in a fixed order.
 *
 * Both directions are memory bound, so each moves every tensor once. The
 * fast paths (D a multiple of 8 up to RMS_MAX_COLS, every row 16-byte
 * aligned) give a row to one warp: lane l holds the 8-column vectors l,
 * l + 32, ... of the row in registers (16-byte loads: one for 8 bf16, two
 * for 8 f32), so the row is read once, its sum is a warp butterfly, and its
 * outputs are written from the registers. Other shapes and views take the
 * general kernels: a block per row, threads striding the columns.
 *
 * Cost at the benchmark shape (16384 rows x 1024, bf16, H200 ~4.3 TB/s):
 *   forward  reads x 34 MB + residual 67 MB, writes residual_out 67 MB +
 *            y 34 MB: 201 MB, floor 47 us;
 *   the backward's recompute of y (rmsnorm_apply) reads residual_out and
 *            writes y: 101 MB, floor 23 us;
 *   backward reads dy 34 + dresidual_out 67 + r 67 MB, adds into dx 34 and
 *            dresidual 67 MB (read and written): 369 MB, floor 86 us; its
 *            dweight partials are RMS_BWD_BLOCKS rows of D f32 (1 MB). */
#include <type_traits>

#include "kernels/cuda/cuda_vector.cuh"

/* Columns of a fast-path vector; the widest fast-path row. */
#define RMS_VEC 8
#define RMS_MAX_COLS 2048
/* Fast forward: warps (rows in flight) per block. */
#define RMS_FWD_WARPS 4
/* Fast backward: warps per block and the most blocks, two per SM of an
 * H200 (a constant, so the partial rows depend on the shapes alone). */
#define RMS_BWD_WARPS 8
#define RMS_BWD_BLOCKS 264
/* General backward: the most blocks, each owning a row of dweight partials. */
#define RMS_BWD_MAX_BLOCKS 512

/* ------------------------------------------------------------------------ */
/* Fast paths: a warp per row, the row in registers.                          */

/* 8 columns from p (16-byte aligned, global or shared) into floats, and
 * back: 16 bytes a load or store. */
template <typename T> static __device__ __forceinline__ void load8(float (&o)[RMS_VEC], const T *p)
{
    if constexpr (sizeof(T) == 2) {
        vec_load<T, RMS_VEC>(o, p);
    } else {
        const float4 a = *reinterpret_cast<const float4 *>(p), b = *reinterpret_cast<const float4 *>(p + 4);
        o[0] = a.x;
        o[1] = a.y;
        o[2] = a.z;
        o[3] = a.w;
        o[4] = b.x;
        o[5] = b.y;
        o[6] = b.z;
        o[7] = b.w;
    }
}

template <typename T> static __device__ __forceinline__ void store8(T *p, const float (&o)[RMS_VEC])
{
    if constexpr (sizeof(T) == 2) {
        vec_store<T, RMS_VEC>(p, o);
    } else {
        *reinterpret_cast<float4 *>(p) = make_float4(o[0], o[1], o[2], o[3]);
        *reinterpret_cast<float4 *>(p + 4) = make_float4(o[4], o[5], o[6], o[7]);
    }
}

/* Per row n of x (rows, D), as rmsnorm_fwd_kernel below: r = x + residual
 * into residual_out, rstd[n], y = r * rstd * weight; any of residual,
 * residual_out, rstd may be NULL. For D <= NV * 256 (D a multiple of 8,
 * rows 16-byte aligned). Grid ceil(rows / RMS_FWD_WARPS) blocks (capped,
 * then grid-stride) of RMS_FWD_WARPS warps, a warp per row; lane l holds
 * vectors j * 32 + l, j < NV. Each lane writes only the columns it has read,
 * so residual_out may alias residual. Bytes at the benchmark shape: 201 MB
 * (floor 47 us), 134 MB without residual_out (31 us). */
template <typename T, int NV>
__global__ void __launch_bounds__(RMS_FWD_WARPS * 32)
    rmsnorm_fwd_warp_kernel(T *y, float *res_out, float *rstd, const T *x, const float *res, const float *w,
                            int64_t rows, int D, int64_t yrs, int64_t rors, int64_t xrs, int64_t rrs, float eps)
{
    const int lane = threadIdx.x & 31;
    const int64_t warps = (int64_t)gridDim.x * RMS_FWD_WARPS;
    for (int64_t n = (int64_t)blockIdx.x * RMS_FWD_WARPS + (threadIdx.x >> 5); n < rows; n += warps) {
        float r[NV][RMS_VEC];
        float ss = 0.0f;
#pragma unroll
        for (int j = 0; j < NV; j++) {
            const int col = (j * 32 + lane) * RMS_VEC;
            if (col < D) {
                load8<T>(r[j], x + n * xrs + col);
                if (res) {
                    float q[RMS_VEC];
                    load8<float>(q, res + n * rrs + col);
#pragma unroll
                    for (int i = 0; i < RMS_VEC; i++)
                        r[j][i] += q[i];
                }
#pragma unroll
                for (int i = 0; i < RMS_VEC; i++)
                    ss += r[j][i] * r[j][i];
            }
        }
        ss = warp_sum(ss);
        const float rs = 1.0f / sqrtf(ss / (float)D + eps);
        if (rstd && lane == 0)
            rstd[n] = rs;
#pragma unroll
        for (int j = 0; j < NV; j++) {
            const int col = (j * 32 + lane) * RMS_VEC;
            if (col < D) {
                if (res_out)
                    store8<float>(res_out + n * rors + col, r[j]);
                float wv[RMS_VEC], o[RMS_VEC];
                load8<float>(wv, w + col);
#pragma unroll
                for (int i = 0; i < RMS_VEC; i++)
                    o[i] = r[j][i] * rs * wv[i];
                store8<T>(y + n * yrs + col, o);
            }
        }
    }
}

/* Per row n, as rmsnorm_bwd_kernel below: g = dresidual_out + dr into dx
 * and dresidual (added), dy * r * s into partial row blockIdx.x (written).
 * For D <= NV * 256 (D a multiple of 8, rows 16-byte aligned). Grid
 * min(ceil(rows / RMS_BWD_WARPS), RMS_BWD_BLOCKS) blocks of RMS_BWD_WARPS
 * warps, a warp per row: warp k of block b takes rows b * RMS_BWD_WARPS + k
 * + i * (all warps), i = 0, 1, ... in order, lane l holding vectors j * 32 +
 * l of r and dy in registers between the row's sum and its outputs. Each
 * warp keeps its dweight sums in its own row of shared memory, each column
 * owned by one lane; at the end the block adds its warps' rows in warp order
 * into its partial row, and colsum_finish_kernel adds those in block order:
 * few partial rows, every sum in a fixed order. A lane loads each vector of
 * dx and dresidual before it stores it, as the general kernel does. Bytes
 * at the benchmark shape: 369 MB (floor 86 us). */
template <typename T, int NV>
__global__ void __launch_bounds__(RMS_BWD_WARPS * 32, NV <= 4 ? 2 : 1)
    rmsnorm_bwd_warp_kernel(T *dx, float *dres, float *partial, const T *dy, const float *dres_out, const float *r,
                            const float *rstd, const float *w, int64_t rows, int D, int64_t dxrs, int64_t drrs,
                            int64_t dyrs, int64_t dors, int64_t rrs)
{
    extern __shared__ __align__(16) float dw_sums[]; /* RMS_BWD_WARPS x D when partial is given */
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    float *sums = dw_sums + (int64_t)warp * D;
    if (partial) {
        const float zero[RMS_VEC] = {};
#pragma unroll
        for (int j = 0; j < NV; j++) {
            const int col = (j * 32 + lane) * RMS_VEC;
            if (col < D)
                store8<float>(sums + col, zero);
        }
    }
    const int64_t warps = (int64_t)gridDim.x * RMS_BWD_WARPS;
    for (int64_t n = (int64_t)blockIdx.x * RMS_BWD_WARPS + warp; n < rows; n += warps) {
        const float s = rstd[n];
        float rv[NV][RMS_VEC], gy[NV][RMS_VEC];
        float m = 0.0f;
        if (dy) {
            float acc = 0.0f;
#pragma unroll
            for (int j = 0; j < NV; j++) {
                const int col = (j * 32 + lane) * RMS_VEC;
                if (col < D) {
                    float wv[RMS_VEC];
                    load8<float>(rv[j], r + n * rrs + col);
                    load8<T>(gy[j], dy + n * dyrs + col);
                    load8<float>(wv, w + col);
#pragma unroll
                    for (int i = 0; i < RMS_VEC; i++)
                        acc += wv[i] * gy[j][i] * rv[j][i];
                }
            }
            m = warp_sum(acc) / (float)D;
        }
#pragma unroll
        for (int j = 0; j < NV; j++) {
            const int col = (j * 32 + lane) * RMS_VEC;
            if (col >= D)
                continue;
            /* Every load of the vector first, so that its adds wait for one
             * round trip. */
            float g[RMS_VEC] = {}, old_dx[RMS_VEC], old_dres[RMS_VEC];
            if (dres_out)
                load8<float>(g, dres_out + n * dors + col);
            if (dx)
                load8<T>(old_dx, dx + n * dxrs + col);
            if (dres)
                load8<float>(old_dres, dres + n * drrs + col);
            if (dy) {
                float wv[RMS_VEC];
                load8<float>(wv, w + col);
#pragma unroll
                for (int i = 0; i < RMS_VEC; i++)
                    g[i] += s * (wv[i] * gy[j][i] - rv[j][i] * s * s * m);
                if (partial) {
                    float sv[RMS_VEC];
                    load8<float>(sv, sums + col);
#pragma unroll
                    for (int i = 0; i < RMS_VEC; i++)
                        sv[i] += gy[j][i] * rv[j][i] * s;
                    store8<float>(sums + col, sv);
                }
            }
            if (dx) {
#pragma unroll
                for (int i = 0; i < RMS_VEC; i++)
                    old_dx[i] += g[i];
                store8<T>(dx + n * dxrs + col, old_dx);
            }
            if (dres) {
#pragma unroll
                for (int i = 0; i < RMS_VEC; i++)
                    old_dres[i] += g[i];
                store8<float>(dres + n * drrs + col, old_dres);
            }
        }
    }
    if (partial) {
        __syncthreads();
        for (int c = threadIdx.x; c < D; c += blockDim.x) {
            float sum = 0.0f;
            for (int k = 0; k < RMS_BWD_WARPS; k++)
                sum += dw_sums[k * D + c];
            partial[(int64_t)blockIdx.x * D + c] = sum;
        }
    }
}

/* ------------------------------------------------------------------------ */
/* The backward's recompute of y from the stored r and rstd.                  */

/* y[n, d] = r[n, d] * rstd[n] * w[d], the product (r * rstd) * w in f32 that
 * both forward kernels form: y gets their bits. V columns a thread (8: D a
 * multiple of 8, rows 16-byte aligned; else 1), grid-stride over the rows'
 * vectors. Reads r 67 MB and writes y 34 MB at the benchmark shape (floor
 * 23 us), against 134 MB for running the forward again from x and the
 * residual. */
template <typename T, int V>
__global__ void rmsnorm_apply_kernel(T *y, const float *r, const float *rstd, const float *w, int64_t rows,
                                     int64_t D, int64_t yrs, int64_t rrs)
{
    const int64_t vecs = D / V, total = rows * vecs;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t n = i / vecs, col = (i - n * vecs) * V;
        const float s = rstd[n];
        if constexpr (V == RMS_VEC) {
            float rv[RMS_VEC], wv[RMS_VEC], o[RMS_VEC];
            load8<float>(rv, r + n * rrs + col);
            load8<float>(wv, w + col);
#pragma unroll
            for (int k = 0; k < RMS_VEC; k++)
                o[k] = rv[k] * s * wv[k];
            store8<T>(y + n * yrs + col, o);
        } else {
            store_f<T>(y, n * yrs + col, r[n * rrs + col] * s * w[col]);
        }
    }
}

/* ------------------------------------------------------------------------ */
/* General kernels: any D, any row strides.                                   */

/* Per row n of x (rows, D):
 *   r = x + residual (residual may be NULL), written to residual_out if given
 *   rstd[n] = 1 / sqrt(mean(r^2) + eps)   (if rstd is given)
 *   y = r * rstd * weight
 * Block per row (up to 128 threads), grid-stride over rows, threads striding
 * the columns. Each thread reads back only the elements it wrote, so
 * residual_out may alias residual. For shapes the fast path refuses; not run
 * at the benchmark shape. */
template <typename T>
__global__ void rmsnorm_fwd_kernel(T *y, float *res_out, float *rstd, const T *x, const float *res, const float *w,
                                   int64_t rows, int64_t D, int64_t yrs, int64_t rors, int64_t xrs, int64_t rrs,
                                   float eps)
{
    for (int64_t n = blockIdx.x; n < rows; n += gridDim.x) {
        float ss = 0.0f;
        for (int64_t d = threadIdx.x; d < D; d += blockDim.x) {
            float r = load_f<T>(x, n * xrs + d) + (res ? res[n * rrs + d] : 0.0f);
            if (res_out)
                res_out[n * rors + d] = r;
            ss += r * r;
        }
        ss = block_sum(ss);
        float rs = 1.0f / sqrtf(ss / (float)D + eps);
        if (rstd && threadIdx.x == 0)
            rstd[n] = rs;
        for (int64_t d = threadIdx.x; d < D; d += blockDim.x) {
            float r = res_out ? res_out[n * rors + d] : load_f<T>(x, n * xrs + d) + (res ? res[n * rrs + d] : 0.0f);
            store_f<T>(y, n * yrs + d, r * rs * w[d]);
        }
    }
}

/* Per row n, with r = residual_out[n], s = rstd[n], m = mean(w * dy * r):
 *   dr = s * (w * dy - r * s^2 * m)     (0 when dy is NULL)
 *   g  = dresidual_out + dr             (dresidual_out may be NULL)
 *   dx += g (T), dresidual += g (f32), each if given
 *   partial[block, :] += dy * r * s     (if partial is given)
 * Block per row (up to 512 threads), grid-stride over rows with a fixed grid
 * G: block b handles rows b, b + G, ... in order and thread t owns columns
 * t, t + blockDim, ... of partial row b (zeroed first), so every partial is
 * a fixed-order sum; colsum_finish_kernel then adds the G partials in block
 * order. For shapes the fast path refuses; not run at the benchmark shape. */
template <typename T>
__global__ void rmsnorm_bwd_kernel(T *dx, float *dres, float *partial, const T *dy, const float *dres_out,
                                   const float *r, const float *rstd, const float *w, int64_t rows, int64_t D,
                                   int64_t dxrs, int64_t drrs, int64_t dyrs, int64_t dors, int64_t rrs)
{
    float *part = partial ? partial + (int64_t)blockIdx.x * D : NULL;
    if (part)
        for (int64_t d = threadIdx.x; d < D; d += blockDim.x)
            part[d] = 0.0f;
    for (int64_t n = blockIdx.x; n < rows; n += gridDim.x) {
        float s = rstd[n];
        float m = 0.0f;
        if (dy) {
            float acc = 0.0f;
            for (int64_t d = threadIdx.x; d < D; d += blockDim.x)
                acc += w[d] * load_f<T>(dy, n * dyrs + d) * r[n * rrs + d];
            m = block_sum(acc) / (float)D;
        }
        for (int64_t d = threadIdx.x; d < D; d += blockDim.x) {
            /* Every load first (dx and dres too), so that the adds wait for
             * one round trip, not three. */
            const float rv = r[n * rrs + d];
            float g = dres_out ? dres_out[n * dors + d] : 0.0f;
            const float gy = dy ? load_f<T>(dy, n * dyrs + d) : 0.0f;
            const float old_dx = dx ? load_f<T>(dx, n * dxrs + d) : 0.0f;
            const float old_dres = dres ? dres[n * drrs + d] : 0.0f;
            if (dy) {
                g += s * (w[d] * gy - rv * s * s * m);
                if (part)
                    part[d] += gy * rv * s;
            }
            if (dx)
                store_f<T>(dx, n * dxrs + d, old_dx + g);
            if (dres)
                dres[n * drrs + d] = old_dres + g;
        }
    }
}

/* ------------------------------------------------------------------------ */
/* Host side.                                                                 */

/* Whether t (may be NULL) allows 16-byte access at every 8th column of its
 * rows: data 16-byte aligned, row stride a multiple of 16 bytes. */
static bool rows_aligned16(const mt_tensor *t)
{
    return vec_ok(t, t ? 16 / (int)mt_dtype_size(t->dtype) : 1);
}

/* The fast path's vectors a lane (1, 2, 4 or 8, the fewest that hold a row),
 * or 0 when D or a tensor's alignment rules the fast path out. */
template <typename... Ts> static int rms_warp_vectors(int64_t D, const Ts *...ts)
{
    if (D % RMS_VEC != 0 || D > RMS_MAX_COLS || !(rows_aligned16(ts) && ...))
        return 0;
    int nv = 1;
    while (nv * 32 * RMS_VEC < D)
        nv *= 2;
    return nv;
}

/* f(std::integral_constant<int, nv>{}) for nv = 1, 2, 4 or 8. */
template <typename F> static void dispatch_vectors(int nv, F f)
{
    switch (nv) {
    case 1: f(std::integral_constant<int, 1>{}); break;
    case 2: f(std::integral_constant<int, 2>{}); break;
    case 4: f(std::integral_constant<int, 4>{}); break;
    default: f(std::integral_constant<int, 8>{}); break;
    }
}

void cuda_rmsnorm_fwd(mt_backend *be, mt_tensor *y, mt_tensor *residual_out, mt_tensor *rstd, const mt_tensor *x,
                      const mt_tensor *residual, const mt_tensor *weight, double eps)
{
    const char *op = "rmsnorm_fwd";
    if (residual)
        require_dtype(residual, MT_F32, op, "residual");
    if (residual_out)
        require_dtype(residual_out, MT_F32, op, "residual_out");
    if (rstd)
        require_dtype(rstd, MT_F32, op, "rstd");
    require_dtype(weight, MT_F32, op, "weight");
    int64_t rows = mt_rows(x), D = mt_cols(x);
    if (rows == 0 || D == 0)
        return;
    cudaStream_t stream = cuda_stream(be);
    float *res_out = residual_out ? (float *)residual_out->data : NULL, *rs = rstd ? (float *)rstd->data : NULL;
    const float *res = residual ? (const float *)residual->data : NULL, *w = (const float *)weight->data;
    const int64_t rors = residual_out ? mt_row_stride(residual_out) : 0, rrs = residual ? mt_row_stride(residual) : 0;
    /* Without residual_out (the contract allows it), a step tensor's
     * alignment keeps a call on the path, and so the bits, of one with it. */
    const int nv = rms_warp_vectors(D, y, residual_out, x, residual, weight);
    dispatch_float(x->dtype, op, [&](auto tag) {
        using T = typename decltype(tag)::type;
        if (nv) {
            dispatch_vectors(nv, [&](auto nv_tag) {
                constexpr int NV = decltype(nv_tag)::value;
                const int64_t blocks = (rows + RMS_FWD_WARPS - 1) / RMS_FWD_WARPS;
                rmsnorm_fwd_warp_kernel<T, NV>
                    <<<(unsigned)(blocks < MT_CUDA_MAX_BLOCKS ? blocks : MT_CUDA_MAX_BLOCKS), RMS_FWD_WARPS * 32, 0,
                       stream>>>((T *)y->data, res_out, rs, (const T *)x->data, res, w, rows, (int)D,
                                 mt_row_stride(y), rors, mt_row_stride(x), rrs, (float)eps);
                LAUNCH_CHECK(op);
            });
            return;
        }
        /* At most 128 threads a row: each holds several columns, whose loads
         * are in flight together (512 threads were 20% slower at D = 1024). */
        const int threads = row_threads(D, 128);
        const unsigned blocks = (unsigned)(rows < (int64_t)INT32_MAX ? rows : INT32_MAX);
        rmsnorm_fwd_kernel<T><<<blocks, threads, 0, stream>>>((T *)y->data, res_out, rs, (const T *)x->data, res, w,
                                                              rows, D, mt_row_stride(y), rors, mt_row_stride(x), rrs,
                                                              (float)eps);
        LAUNCH_CHECK(op);
    });
}

void cuda_rmsnorm_apply(mt_backend *be, mt_tensor *y, const mt_tensor *residual_out, const mt_tensor *rstd,
                        const mt_tensor *weight)
{
    const char *op = "rmsnorm_apply";
    require_dtype(residual_out, MT_F32, op, "residual_out");
    require_dtype(rstd, MT_F32, op, "rstd");
    require_dtype(weight, MT_F32, op, "weight");
    const int64_t rows = mt_rows(residual_out), D = mt_cols(residual_out);
    if (rows == 0 || D == 0)
        return;
    const bool vec = D % RMS_VEC == 0 && rows_aligned16(y) && rows_aligned16(residual_out) && rows_aligned16(weight);
    const int64_t total = rows * (vec ? D / RMS_VEC : D), threads = 256;
    const int64_t blocks = (total + threads - 1) / threads;
    const unsigned grid = (unsigned)(blocks < MT_CUDA_MAX_BLOCKS ? blocks : MT_CUDA_MAX_BLOCKS);
    cudaStream_t stream = cuda_stream(be);
    const float *r = (const float *)residual_out->data, *rs = (const float *)rstd->data;
    const float *w = (const float *)weight->data;
    dispatch_float(y->dtype, op, [&](auto tag) {
        using T = typename decltype(tag)::type;
        if (vec)
            rmsnorm_apply_kernel<T, RMS_VEC><<<grid, (unsigned)threads, 0, stream>>>(
                (T *)y->data, r, rs, w, rows, D, mt_row_stride(y), mt_row_stride(residual_out));
        else
            rmsnorm_apply_kernel<T, 1><<<grid, (unsigned)threads, 0, stream>>>(
                (T *)y->data, r, rs, w, rows, D, mt_row_stride(y), mt_row_stride(residual_out));
        LAUNCH_CHECK(op);
    });
}

void cuda_rmsnorm_bwd(mt_backend *be, mt_arena *scratch, mt_tensor *dx, mt_tensor *dresidual, mt_tensor *dweight,
                      const mt_tensor *dy, const mt_tensor *dresidual_out, const mt_tensor *residual_out,
                      const mt_tensor *rstd, const mt_tensor *weight)
{
    const char *op = "rmsnorm_bwd";
    require_dtype(residual_out, MT_F32, op, "residual_out");
    require_dtype(rstd, MT_F32, op, "rstd");
    require_dtype(weight, MT_F32, op, "weight");
    if (dresidual)
        require_dtype(dresidual, MT_F32, op, "dresidual");
    if (dresidual_out)
        require_dtype(dresidual_out, MT_F32, op, "dresidual_out");
    if (dweight)
        require_dtype(dweight, MT_F32, op, "dweight");
    int64_t rows = mt_rows(residual_out), D = mt_cols(residual_out);
    if (rows == 0 || D == 0)
        return;
    if (!dy)
        dweight = NULL; /* dweight += 0 */
    bool need_g = (dx || dresidual) && (dy || dresidual_out);
    if (!need_g && !dweight)
        return;
    if (!need_g) { /* dweight alone: dresidual_out is not read */
        dx = NULL;
        dresidual = NULL;
        dresidual_out = NULL;
    }

    const int nv = rms_warp_vectors(D, dx, dresidual, dy, dresidual_out, residual_out, weight);
    /* Blocks, each with a row of dweight partials: the fast path's warps walk
     * many rows each, so that few partial rows are left to add. */
    const int64_t warp_blocks = (rows + RMS_BWD_WARPS - 1) / RMS_BWD_WARPS;
    const int64_t G = nv ? (warp_blocks < RMS_BWD_BLOCKS ? warp_blocks : RMS_BWD_BLOCKS)
                         : (rows < RMS_BWD_MAX_BLOCKS ? rows : RMS_BWD_MAX_BLOCKS);
    float *partial = dweight ? (float *)mt_arena_alloc(scratch, (size_t)(G * D) * sizeof(float)) : NULL;
    cudaStream_t stream = cuda_stream(be);
    /* x's dtype: dx's, or dy's (the pair shares it); f32 when neither is given. */
    mt_dtype dt = dx ? dx->dtype : dy ? dy->dtype : MT_F32;
    float *dres = dresidual ? (float *)dresidual->data : NULL;
    const float *dres_out = dresidual_out ? (const float *)dresidual_out->data : NULL;
    const float *r = (const float *)residual_out->data, *rs = (const float *)rstd->data;
    const float *w = (const float *)weight->data;
    const int64_t dxrs = dx ? mt_row_stride(dx) : 0, drrs = dresidual ? mt_row_stride(dresidual) : 0;
    const int64_t dyrs = dy ? mt_row_stride(dy) : 0, dors = dresidual_out ? mt_row_stride(dresidual_out) : 0;
    dispatch_float(dt, op, [&](auto tag) {
        using T = typename decltype(tag)::type;
        T *dxp = dx ? (T *)dx->data : NULL;
        const T *dyp = dy ? (const T *)dy->data : NULL;
        if (nv) {
            dispatch_vectors(nv, [&](auto nv_tag) {
                constexpr int NV = decltype(nv_tag)::value;
                auto kernel = rmsnorm_bwd_warp_kernel<T, NV>;
                const size_t smem = partial ? (size_t)RMS_BWD_WARPS * (size_t)D * sizeof(float) : 0;
                if (smem > 48 * 1024)
                    CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
                kernel<<<(unsigned)G, RMS_BWD_WARPS * 32, smem, stream>>>(dxp, dres, partial, dyp, dres_out, r, rs,
                                                                            w, rows, (int)D, dxrs, drrs, dyrs, dors,
                                                                            mt_row_stride(residual_out));
                LAUNCH_CHECK(op);
            });
            return;
        }
        rmsnorm_bwd_kernel<T><<<(unsigned)G, row_threads(D, 512), 0, stream>>>(
            dxp, dres, partial, dyp, dres_out, r, rs, w, rows, D, dxrs, drrs, dyrs, dors,
            mt_row_stride(residual_out));
        LAUNCH_CHECK(op);
    });
    if (dweight) {
        colsum_finish<float>((float *)dweight->data, partial, (int)G, D, stream);
        LAUNCH_CHECK("rmsnorm_bwd (dweight)");
    }
}
