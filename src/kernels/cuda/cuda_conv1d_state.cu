/* The conv1d state after a sequence (backend.h conv1d_final_state_*): the
 * last W-1 inputs of init_state ++ x, and its backward, which scatters the
 * gradient back to them. One thread per state element (b, c, k), k fastest;
 * a gather of B * C * (W-1) values, far below any floor that matters next to
 * the conv itself. Every element has one writer: deterministic. */
#include "kernels/cuda/cuda_common.cuh"

template <typename T>
__global__ void conv1d_final_state_fwd_kernel(float *final, const T *x, const float *init, int64_t B, int64_t L,
                                              int64_t C, int K, int64_t xrs)
{
    const int64_t n = B * C * K;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t k = i % K, c = (i / K) % C, b = i / (K * C), u = L + k;
        float v = 0.0f;
        if (u >= K)
            v = load_f<T>(x, (b * L + u - K) * xrs + c);
        else if (init)
            v = init[(b * C + c) * K + u];
        final[i] = v;
    }
}

template <typename T>
__global__ void conv1d_final_state_bwd_kernel(T *dx, float *dinit, const float *dfinal, int64_t B, int64_t L,
                                              int64_t C, int K, int64_t dxrs)
{
    const int64_t n = B * C * K;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t k = i % K, c = (i / K) % C, b = i / (K * C), u = L + k;
        if (u >= K) {
            if (dx)
                accum_f<T>(dx, (b * L + u - K) * dxrs + c, dfinal[i]);
        } else if (dinit) {
            dinit[(b * C + c) * K + u] += dfinal[i];
        }
    }
}

static void final_state_check(const char *op, const mt_tensor *final, const mt_tensor *x, const mt_tensor *init)
{
    char s[96], t[96];
    require_dtype(final, MT_F32, op, "final");
    if (init)
        require_dtype(init, MT_F32, op, "init_state");
    if (x->ndim != 3 || final->ndim != 3 || final->shape[0] != x->shape[0] || final->shape[1] != x->shape[2] ||
        !mt_is_contiguous(final) || (init && !mt_same_shape(init, final)))
        mt_fatal("%s: final state %s must be contiguous (batch, channels, W-1) for x %s", op,
                 mt_shape_str(final, s, sizeof s), mt_shape_str(x, t, sizeof t));
}

void cuda_conv1d_final_state_fwd(mt_backend *be, mt_tensor *final, const mt_tensor *x, const mt_tensor *init_state)
{
    const char *op = "conv1d_final_state_fwd";
    final_state_check(op, final, x, init_state);
    const int64_t B = x->shape[0], L = x->shape[1], C = x->shape[2], K = final->shape[2];
    const int64_t n = B * C * K;
    if (n == 0)
        return;
    dispatch_float(x->dtype, op, [&](auto tag) {
        using T = typename decltype(tag)::type;
        conv1d_final_state_fwd_kernel<T><<<grid_for(n, MT_CUDA_THREADS), MT_CUDA_THREADS, 0, cuda_stream(be)>>>(
            (float *)final->data, (const T *)x->data, init_state ? (const float *)init_state->data : NULL, B, L, C,
            (int)K, mt_row_stride(x));
        LAUNCH_CHECK(op);
    });
}

void cuda_conv1d_final_state_bwd(mt_backend *be, mt_tensor *dx, mt_tensor *dinit_state, const mt_tensor *dfinal,
                                 const mt_tensor *x)
{
    const char *op = "conv1d_final_state_bwd";
    final_state_check(op, dfinal, x, dinit_state);
    const int64_t B = x->shape[0], L = x->shape[1], C = x->shape[2], K = dfinal->shape[2];
    const int64_t n = B * C * K;
    if (n == 0 || (!dx && !dinit_state))
        return;
    dispatch_float(x->dtype, op, [&](auto tag) {
        using T = typename decltype(tag)::type;
        conv1d_final_state_bwd_kernel<T><<<grid_for(n, MT_CUDA_THREADS), MT_CUDA_THREADS, 0, cuda_stream(be)>>>(
            dx ? (T *)dx->data : NULL, dinit_state ? (float *)dinit_state->data : NULL,
            (const float *)dfinal->data, B, L, C, (int)K, dx ? mt_row_stride(dx) : 0);
        LAUNCH_CHECK(op);
    });
}
