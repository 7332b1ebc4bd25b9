/* Fused residual add + RMSNorm over the last dim D, and its backward.
 * x, y, dx, dy are in T (f32 or bf16); residual, residual_out, weight, rstd
 * and their gradients are f32. One block per row (grid-stride over rows),
 * fp32 sums through the fixed-order block_sum of cuda_common.cuh. */
#include "kernels/cuda/cuda_common.cuh"

/* Most blocks the backward uses: each owns a row of dweight partials. */
#define RMS_BWD_MAX_BLOCKS 512

/* Per row n of x (rows, D):
 *   r = x + residual (residual may be NULL), written to residual_out if given
 *   rstd[n] = 1 / sqrt(mean(r^2) + eps)   (if rstd is given)
 *   y = r * rstd * weight
 * Block per row, threads stride the columns. Each thread reads back only the
 * elements it wrote, so residual_out may alias residual. */
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
    /* At most 128 threads a row: each holds several columns, whose loads are
     * in flight together (512 threads were 20% slower at D = 1024). */
    int threads = row_threads(D, 128);
    unsigned blocks = (unsigned)(rows < (int64_t)INT32_MAX ? rows : INT32_MAX);
    dispatch_float(x->dtype, op, [&](auto tag) {
        using T = typename decltype(tag)::type;
        rmsnorm_fwd_kernel<T><<<blocks, threads, 0, cuda_stream(be)>>>(
            (T *)y->data, residual_out ? (float *)residual_out->data : NULL, rstd ? (float *)rstd->data : NULL,
            (const T *)x->data, residual ? (const float *)residual->data : NULL, (const float *)weight->data, rows, D,
            mt_row_stride(y), residual_out ? mt_row_stride(residual_out) : 0, mt_row_stride(x),
            residual ? mt_row_stride(residual) : 0, (float)eps);
        LAUNCH_CHECK(op);
    });
}

/* Per row n, with r = residual_out[n], s = rstd[n], m = mean(w * dy * r):
 *   dr = s * (w * dy - r * s^2 * m)     (0 when dy is NULL)
 *   g  = dresidual_out + dr             (dresidual_out may be NULL)
 *   dx += g (T), dresidual += g (f32), each if given
 *   partial[block, :] += dy * r * s     (if partial is given)
 * Block per row, grid-stride over rows with a fixed grid G: block b handles
 * rows b, b + G, ... in order and thread t owns columns t, t + blockDim, ...
 * of partial row b (zeroed first), so every partial is a fixed-order sum;
 * colsum_finish_kernel then adds the G partials in block order. */
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
    if (!need_g) {
        dx = NULL;
        dresidual = NULL;
    }

    int threads = row_threads(D, 512);
    int64_t G = rows < RMS_BWD_MAX_BLOCKS ? rows : RMS_BWD_MAX_BLOCKS;
    float *partial = dweight ? (float *)mt_arena_alloc(scratch, (size_t)(G * D) * sizeof(float)) : NULL;
    cudaStream_t stream = cuda_stream(be);
    /* x's dtype: dx's, or dy's (the pair shares it); f32 when neither is given. */
    mt_dtype dt = dx ? dx->dtype : dy ? dy->dtype : MT_F32;
    dispatch_float(dt, op, [&](auto tag) {
        using T = typename decltype(tag)::type;
        rmsnorm_bwd_kernel<T><<<(unsigned)G, threads, 0, stream>>>(
            dx ? (T *)dx->data : NULL, dresidual ? (float *)dresidual->data : NULL, partial,
            dy ? (const T *)dy->data : NULL, dresidual_out ? (const float *)dresidual_out->data : NULL,
            (const float *)residual_out->data, (const float *)rstd->data, (const float *)weight->data, rows, D,
            dx ? mt_row_stride(dx) : 0, dresidual ? mt_row_stride(dresidual) : 0, dy ? mt_row_stride(dy) : 0,
            dresidual_out ? mt_row_stride(dresidual_out) : 0, mt_row_stride(residual_out));
        LAUNCH_CHECK(op);
    });
    if (dweight) {
        colsum_finish_kernel<float><<<grid_for(D, MT_CUDA_THREADS), MT_CUDA_THREADS, 0, stream>>>(
            (float *)dweight->data, partial, (int)G, D);
        LAUNCH_CHECK("rmsnorm_bwd (dweight)");
    }
}
