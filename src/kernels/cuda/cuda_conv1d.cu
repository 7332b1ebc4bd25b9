/* Causal depthwise conv1d over time with bias and fused SiLU (channels last),
 * and its backward. x, out, dx, dout are (B, L, C) in T (f32 or bf16), each
 * with its own row stride (rows = B * L); weight (C, W) f32 with W <= 4, bias
 * (C) f32, init_state (B, C, W-1) f32, seq_idx (B, L) i32, all contiguous.
 *
 * Layout of the work: a block is CONV_TX x CONV_FWD_TY (forward) or
 * CONV_TX x CONV_BWD_TY (backward) threads. threadIdx.x runs
 * along channels (a warp covers CONV_TX * V consecutive channels, V = 1, 2 or
 * 4 loaded as one vector when alignment allows), threadIdx.y along time:
 * thread (x, y) of block (bx, by, b) owns channels c0 .. c0+V-1 and the time
 * sub-tile [ts0, ts0 + TS) of sequence b, walking it in order and keeping the
 * last W-1 inputs (and their seq_idx) in registers. Loads are issued
 * CONV_*_CHUNK time steps at a time so several are in flight per thread.
 *
 * Masking: every tap reads the value held for its time t' together with the
 * document id held for t'. Times t' < 0 hold init_state (or 0) with the id
 * seq_idx[b, 0], so "a tap from another document reads 0" and "a tap at
 * t' < 0 reads init_state only while seq_idx[b, t] == seq_idx[b, 0]" are the
 * one test (id(t') == id(t)). A masked tap is replaced by 0 (a select, not a
 * multiply, so a NaN in another document never leaks in).
 *
 * Determinism of the backward: dx and dinit_state have one owner thread per
 * element (dinit_state only the thread whose sub-tile starts at t = 0), which
 * sums the W contributions in a fixed order. dweight and dbias: each thread
 * sums its sub-tile in time order; the block adds its CONV_BWD_TY threads' sums
 * in y order through shared memory into one partial row (one per (b, by));
 * colsum_finish_kernel adds the B * gridDim.y partial rows in index order. */
#include <type_traits>

#include "kernels/cuda/cuda_vector.cuh"

#define CONV_TX 32     /* threads along channels: one warp */
#define CONV_FWD_TY 8  /* time sub-tiles per block, forward */
#define CONV_BWD_TY 4  /* time sub-tiles per block, backward (more registers per thread) */
#define CONV_FWD_TS 16 /* time steps per thread, forward */
#define CONV_BWD_TS 32 /* time steps per thread, backward (must be >= W-1) */
#define CONV_FWD_CHUNK 8 /* time steps whose loads are issued together, forward */
#define CONV_BWD_CHUNK 4 /* the same, backward (two loads per step) */

/* Length of the history arrays: the W-1 inputs before the current one (one
 * unused slot when W == 1, so the arrays stay declarable). */
template <int W> constexpr int conv1d_hist_len = W > 1 ? W - 1 : 1;

/* The thread's starting state: its weights wk[k][v] = weight[c0 + v, k], bias
 * bs[v] (0 when bias is NULL) and the history before ts0: h[j] and hs[j] get
 * the input and document id of time ts0 - (W-1) + j, j < W-1. Negative times
 * read init_state (0 when NULL) with the id seq_idx[b, 0]. sq is seq_idx's
 * row b (NULL: one document). */
template <typename T, int V, int W>
static __device__ __forceinline__ void conv1d_start(float (&wk)[W][V], float (&bs)[V],
                                                    float (&h)[conv1d_hist_len<W>][V], int (&hs)[conv1d_hist_len<W>],
                                                    const float *w, const float *bias, const T *x, const float *init,
                                                    const int32_t *sq, int64_t b, int64_t L, int64_t C, int64_t c0,
                                                    int64_t xrs, int64_t ts0)
{
#pragma unroll
    for (int v = 0; v < V; v++) {
#pragma unroll
        for (int k = 0; k < W; k++)
            wk[k][v] = w[(c0 + v) * W + k];
        bs[v] = bias ? bias[c0 + v] : 0.0f;
    }
    const int s0 = sq ? sq[0] : 0;
#pragma unroll
    for (int j = 0; j < W - 1; j++) {
        int64_t tp = ts0 - (W - 1) + j;
        if (tp >= 0) {
            vec_load<T, V>(h[j], x + (b * L + tp) * xrs + c0);
            hs[j] = sq ? sq[tp] : 0;
        } else {
#pragma unroll
            for (int v = 0; v < V; v++)
                h[j][v] = init ? init[(b * C + c0 + v) * (W - 1) + (tp + W - 1)] : 0.0f;
            hs[j] = s0;
        }
    }
}

/* Loads time t + i (step i of the chunk starting at t) of sequence b: the
 * input xt, its document id st and, WITH_DOUT (the backward), the output
 * gradient gt. When !valid the slot is zeros: the steps of a chunk past the
 * sub-tile still pass through registers. All loads sit under one branch so
 * that they are issued together. */
template <typename T, int V, bool WITH_DOUT>
static __device__ __forceinline__ void conv1d_load_step(float (&xt)[V], float (*gt)[V], int &st, const T *x,
                                                        const T *dout, const int32_t *sq, int64_t b, int64_t L,
                                                        int64_t c0, int64_t xrs, int64_t dors, int64_t t, int i,
                                                        bool valid)
{
    st = 0;
#pragma unroll
    for (int v = 0; v < V; v++) {
        xt[v] = 0.0f;
        if constexpr (WITH_DOUT)
            (*gt)[v] = 0.0f;
    }
    if (valid) {
        vec_load<T, V>(xt, x + (b * L + t + i) * xrs + c0);
        if constexpr (WITH_DOUT)
            vec_load<T, V>(*gt, dout + (b * L + t + i) * dors + c0);
        st = sq ? sq[t + i] : 0;
    }
}

/* The W taps of the output whose own input is xt, of document st: tap[k]
 * (k < W-1) is the history h[k] when it belongs to document st and 0
 * otherwise (a select, not a multiply, so a NaN in another document never
 * leaks in); tap[W-1] = xt. kept[k] says whether tap k was kept. */
template <int V, int W>
static __device__ __forceinline__ void conv1d_taps(float (&tap)[W][V], bool (&kept)[W],
                                                   const float (&h)[conv1d_hist_len<W>][V],
                                                   const int (&hs)[conv1d_hist_len<W>], const float (&xt)[V], int st)
{
#pragma unroll
    for (int k = 0; k < W - 1; k++) {
        kept[k] = hs[k] == st;
#pragma unroll
        for (int v = 0; v < V; v++)
            tap[k][v] = kept[k] ? h[k][v] : 0.0f;
    }
    kept[W - 1] = true;
#pragma unroll
    for (int v = 0; v < V; v++)
        tap[W - 1][v] = xt[v];
}

/* The pre-activation a[v] = bias + sum_k w[k] tap[k], summed in k order. */
template <int V, int W>
static __device__ __forceinline__ void conv1d_preact(float (&a)[V], const float (&wk)[W][V], const float (&bs)[V],
                                                     const float (&tap)[W][V])
{
#pragma unroll
    for (int v = 0; v < V; v++) {
        a[v] = bs[v];
#pragma unroll
        for (int k = 0; k < W; k++)
            a[v] += wk[k][v] * tap[k][v];
    }
}

/* Moves the history on by one step: drops the oldest input and appends xt
 * of document st. */
template <int V, int W>
static __device__ __forceinline__ void conv1d_push(float (&h)[conv1d_hist_len<W>][V], int (&hs)[conv1d_hist_len<W>],
                                                   const float (&xt)[V], int st)
{
    constexpr int WH = conv1d_hist_len<W>;
#pragma unroll
    for (int j = 0; j + 1 < W - 1; j++) {
        hs[j] = hs[j + 1];
#pragma unroll
        for (int v = 0; v < V; v++)
            h[j][v] = h[j + 1][v];
    }
    if (W > 1) {
        hs[WH - 1] = st;
#pragma unroll
        for (int v = 0; v < V; v++)
            h[WH - 1][v] = xt[v];
    }
}

/* Input time tp has all its dx contributions g: they go into dx when tp is in
 * the thread's sub-tile [ts0, ts1), into dinit_state[b, c, tp + W-1] when tp
 * is negative, and nowhere otherwise (another thread owns tp). */
template <typename T, int V, int W>
static __device__ __forceinline__ void conv1d_flush_input(T *dx, float *dinit, const float (&g)[V], int64_t tp,
                                                          int64_t ts0, int64_t ts1, int64_t b, int64_t L, int64_t C,
                                                          int64_t c0, int64_t dxrs)
{
    if (tp >= ts0 && tp < ts1) {
        if (dx)
            vec_accum<T, V>(dx + (b * L + tp) * dxrs + c0, g);
    } else if (tp < 0 && dinit) {
#pragma unroll
        for (int v = 0; v < V; v++)
            dinit[(b * C + c0 + v) * (W - 1) + (tp + W - 1)] += g[v];
    }
}

/* dx at input time tp when the thread owns it (tp in [ts0, ts1)), else
 * zeros: loaded with the chunk's other loads, so that the flush of tp need
 * not wait for it. */
template <typename T, int V>
static __device__ __forceinline__ void conv1d_load_dx(float (&o)[V], const T *dx, int64_t tp, int64_t ts0,
                                                      int64_t ts1, int64_t b, int64_t L, int64_t c0, int64_t dxrs)
{
#pragma unroll
    for (int v = 0; v < V; v++)
        o[v] = 0.0f;
    if (dx && tp >= ts0 && tp < ts1)
        vec_load<T, V>(o, dx + (b * L + tp) * dxrs + c0);
}

/* conv1d_flush_input with dx at tp already loaded (conv1d_load_dx): dx = old + g. */
template <typename T, int V, int W>
static __device__ __forceinline__ void conv1d_flush_loaded(T *dx, float *dinit, const float (&g)[V],
                                                           const float (&old)[V], int64_t tp, int64_t ts0,
                                                           int64_t ts1, int64_t b, int64_t L, int64_t C, int64_t c0,
                                                           int64_t dxrs)
{
    if (tp >= ts0 && tp < ts1) {
        if (dx) {
            float sum[V];
#pragma unroll
            for (int v = 0; v < V; v++)
                sum[v] = old[v] + g[v];
            vec_store<T, V>(dx + (b * L + tp) * dxrs + c0, sum);
        }
    } else if (tp < 0 && dinit) {
#pragma unroll
        for (int v = 0; v < V; v++)
            dinit[(b * C + c0 + v) * (W - 1) + (tp + W - 1)] += g[v];
    }
}

/* out[b, t, c] = silu(bias[c] + sum_k weight[c, k] * tap_k), tap_k the
 * (masked) input at t - (W-1) + k. Grid (ceil(C / (CONV_TX*V)),
 * ceil(L / (CONV_FWD_TY*CONV_FWD_TS)), B), block (CONV_TX, CONV_FWD_TY). */
template <typename T, int V, int W>
__global__ void __launch_bounds__(CONV_TX *CONV_FWD_TY, 2)
    conv1d_fwd_kernel(T *__restrict__ out, const T *__restrict__ x, const float *__restrict__ w,
                      const float *__restrict__ bias, const float *__restrict__ init, const int32_t *__restrict__ seq,
                      int64_t L, int64_t C, int64_t ors, int64_t xrs)
{
    constexpr int WH = conv1d_hist_len<W>;
    const int64_t c0 = ((int64_t)blockIdx.x * CONV_TX + threadIdx.x) * V;
    const int64_t b = blockIdx.z;
    const int64_t ts0 = ((int64_t)blockIdx.y * CONV_FWD_TY + threadIdx.y) * CONV_FWD_TS;
    if (c0 >= C || ts0 >= L)
        return;
    const int64_t ts1 = ts0 + CONV_FWD_TS < L ? ts0 + CONV_FWD_TS : L;

    const int32_t *sq = seq ? seq + b * L : NULL;
    float wk[W][V], bs[V], h[WH][V];
    int hs[WH];
    conv1d_start<T, V, W>(wk, bs, h, hs, w, bias, x, init, sq, b, L, C, c0, xrs, ts0);

    for (int64_t t = ts0; t < ts1; t += CONV_FWD_CHUNK) {
        float xc[CONV_FWD_CHUNK][V];
        int sc[CONV_FWD_CHUNK];
#pragma unroll
        for (int i = 0; i < CONV_FWD_CHUNK; i++)
            conv1d_load_step<T, V, false>(xc[i], NULL, sc[i], x, NULL, sq, b, L, c0, xrs, 0, t, i, t + i < ts1);
#pragma unroll
        for (int i = 0; i < CONV_FWD_CHUNK; i++) {
            if (t + i < ts1) {
                float tap[W][V], a[V];
                bool kept[W];
                conv1d_taps<V, W>(tap, kept, h, hs, xc[i], sc[i]);
                conv1d_preact<V, W>(a, wk, bs, tap);
#pragma unroll
                for (int v = 0; v < V; v++)
                    a[v] = a[v] * sigmoid_f(a[v]);
                vec_store<T, V>(out + (b * L + t + i) * ors + c0, a);
                conv1d_push<V, W>(h, hs, xc[i], sc[i]);
            }
        }
    }
}

/* Sum over the block's CONV_BWD_TY time sub-tiles (in y order) of one row of
 * the shared reduction buffer, at channel cc of the block. */
template <int W, int CB>
static __device__ __forceinline__ float conv1d_block_sum(const float (&red)[CONV_BWD_TY][W + 1][CB], int row, int cc)
{
    float s = 0.0f;
    for (int y = 0; y < CONV_BWD_TY; y++)
        s += red[y][row][cc];
    return s;
}

/* Backward. Per output t of the thread's sub-tile [ts0, ts1), with
 * a = bias + sum_k w[k] tap_k and s = sigmoid(a):
 *   da = dout * s * (1 + a * (1 - s))
 *   gb += da, gw[k] += da * tap_k                  (then the partials)
 * and for dx the thread walks on to tend = min(ts1 + W-1, L) (only da is
 * needed there): pend[j] collects dx for input time t - (W-1) + j; after
 * output t, input time t - (W-1) has all its W contributions (outputs
 * t-(W-1) .. t) and is flushed (its dx loaded with the chunk's x and dout,
 * so that the thread does not wait for a load at every step): into dx when
 * inside [ts0, ts1), into
 * dinit_state[b, c, t] when negative (only possible when ts0 == 0, where
 * every output from 0 on has been seen). Partials: pw (P, C*W) and pb (P, C)
 * with P = B * gridDim.y, row b * gridDim.y + blockIdx.y, every element
 * written (no zeroing needed). */
template <typename T, int V, int W>
__global__ void __launch_bounds__(CONV_TX *CONV_BWD_TY, 4)
    conv1d_bwd_kernel(T *dx, float *dinit, float *pw, float *pb, const T *dout, const T *x, const float *w,
                      const float *bias, const float *init, const int32_t *seq, int64_t L, int64_t C, int64_t dxrs,
                      int64_t dors, int64_t xrs)
{
    constexpr int WH = conv1d_hist_len<W>;
    constexpr int CB = CONV_TX * V; /* channels per block */
    __shared__ float red[CONV_BWD_TY][W + 1][CB];

    const int lane = threadIdx.x, ty = threadIdx.y;
    const int64_t c0 = ((int64_t)blockIdx.x * CONV_TX + lane) * V;
    const int64_t b = blockIdx.z;
    const int64_t ts0 = ((int64_t)blockIdx.y * CONV_BWD_TY + ty) * CONV_BWD_TS;

    float gw[W][V] = {}, gb[V] = {};

    if (c0 < C && ts0 < L) {
        const int64_t ts1 = ts0 + CONV_BWD_TS < L ? ts0 + CONV_BWD_TS : L;
        const int64_t tend = dx ? (ts1 + (W - 1) < L ? ts1 + (W - 1) : L) : ts1;
        const int32_t *sq = seq ? seq + b * L : NULL;
        float wk[W][V], bs[V], h[WH][V];
        int hs[WH];
        conv1d_start<T, V, W>(wk, bs, h, hs, w, bias, x, init, sq, b, L, C, c0, xrs, ts0);
        float pend[W][V] = {};

        for (int64_t t = ts0; t < tend; t += CONV_BWD_CHUNK) {
            float xc[CONV_BWD_CHUNK][V], gc[CONV_BWD_CHUNK][V], dxc[CONV_BWD_CHUNK][V];
            int sc[CONV_BWD_CHUNK];
#pragma unroll
            for (int i = 0; i < CONV_BWD_CHUNK; i++) {
                conv1d_load_step<T, V, true>(xc[i], &gc[i], sc[i], x, dout, sq, b, L, c0, xrs, dors, t, i,
                                             t + i < tend);
                conv1d_load_dx<T, V>(dxc[i], dx, t + i - (W - 1), ts0, t + i < tend ? ts1 : ts0, b, L, c0, dxrs);
            }
#pragma unroll
            for (int i = 0; i < CONV_BWD_CHUNK; i++) {
                const int64_t tt = t + i;
                if (tt < tend) {
                    float tap[W][V], a[V], da[V];
                    bool kept[W];
                    conv1d_taps<V, W>(tap, kept, h, hs, xc[i], sc[i]);
                    conv1d_preact<V, W>(a, wk, bs, tap);
#pragma unroll
                    for (int v = 0; v < V; v++) {
                        const float s = sigmoid_f(a[v]);
                        da[v] = gc[i][v] * s * (1.0f + a[v] * (1.0f - s));
                    }
                    if (tt < ts1) {
#pragma unroll
                        for (int v = 0; v < V; v++) {
                            gb[v] += da[v];
#pragma unroll
                            for (int k = 0; k < W; k++)
                                gw[k][v] += da[v] * tap[k][v];
                        }
                    }
#pragma unroll
                    for (int k = 0; k < W; k++)
                        if (kept[k])
#pragma unroll
                            for (int v = 0; v < V; v++)
                                pend[k][v] += wk[k][v] * da[v];
                    /* input time tt - (W-1) is complete */
                    conv1d_flush_loaded<T, V, W>(dx, dinit, pend[0], dxc[i], tt - (W - 1), ts0, ts1, b, L, C, c0,
                                                 dxrs);
#pragma unroll
                    for (int k = 0; k + 1 < W; k++)
#pragma unroll
                        for (int v = 0; v < V; v++)
                            pend[k][v] = pend[k + 1][v];
#pragma unroll
                    for (int v = 0; v < V; v++)
                        pend[W - 1][v] = 0.0f;
                    conv1d_push<V, W>(h, hs, xc[i], sc[i]);
                }
            }
        }
        /* Input times tend - (W-1) + j (j < W-1) are still pending. Those
         * inside [ts0, ts1) or negative are complete only when tend == L (no
         * later outputs exist); otherwise they are >= ts1 and not ours. */
#pragma unroll
        for (int j = 0; j < W - 1; j++)
            conv1d_flush_input<T, V, W>(dx, dinit, pend[j], tend - (W - 1) + j, ts0, ts1, b, L, C, c0, dxrs);
    }

    if (pw || pb) {
        /* Every thread of the block reaches here (no early return above). */
#pragma unroll
        for (int v = 0; v < V; v++) {
#pragma unroll
            for (int k = 0; k < W; k++)
                red[ty][k][lane * V + v] = gw[k][v];
            red[ty][W][lane * V + v] = gb[v];
        }
        __syncthreads();
        const int tid = ty * CONV_TX + lane;
        const int64_t cbase = (int64_t)blockIdx.x * CB;
        const int64_t p = b * gridDim.y + blockIdx.y;
        if (pw)
            for (int i = tid; i < CB * W; i += CONV_TX * CONV_BWD_TY) {
                const int cc = i / W, k = i - cc * W;
                if (cbase + cc < C)
                    pw[p * C * W + (cbase + cc) * W + k] = conv1d_block_sum<W, CB>(red, k, cc);
            }
        if (pb)
            for (int cc = tid; cc < CB; cc += CONV_TX * CONV_BWD_TY)
                if (cbase + cc < C)
                    pb[p * C + cbase + cc] = conv1d_block_sum<W, CB>(red, W, cc);
    }
}

/* ------------------------------------------------------------------------ */
/* Host side. */

/* f(integral_constant<V>, integral_constant<W>) for runtime V in {1, 2, 4}
 * and W in {1, 2, 3, 4}. */
template <int V, typename F> static void conv1d_dispatch_w(int W, F f)
{
    switch (W) {
    case 1: f(std::integral_constant<int, V>{}, std::integral_constant<int, 1>{}); break;
    case 2: f(std::integral_constant<int, V>{}, std::integral_constant<int, 2>{}); break;
    case 3: f(std::integral_constant<int, V>{}, std::integral_constant<int, 3>{}); break;
    case 4: f(std::integral_constant<int, V>{}, std::integral_constant<int, 4>{}); break;
    default: mt_fatal("conv1d: kernel width %d is not supported (1 to 4)", W);
    }
}

template <typename F> static void conv1d_dispatch(int V, int W, F f)
{
    switch (V) {
    case 4: conv1d_dispatch_w<4>(W, f); break;
    case 2: conv1d_dispatch_w<2>(W, f); break;
    default: conv1d_dispatch_w<1>(W, f); break;
    }
}

/* Checks shared by forward and backward; returns W. */
static int conv1d_check(const char *op, const mt_tensor *x, const mt_tensor *weight, const mt_tensor *bias,
                        const mt_tensor *init_state, const mt_tensor *seq_idx)
{
    char s[96];
    require_dtype(weight, MT_F32, op, "weight");
    if (bias)
        require_dtype(bias, MT_F32, op, "bias");
    if (init_state)
        require_dtype(init_state, MT_F32, op, "init_state");
    if (seq_idx)
        require_dtype(seq_idx, MT_I32, op, "seq_idx");
    if (x->ndim != 3)
        mt_fatal("%s: x %s must be (batch, seqlen, channels)", op, mt_shape_str(x, s, sizeof s));
    int64_t W = weight->shape[weight->ndim - 1];
    if (W < 1 || W > 4 || mt_numel(weight) != x->shape[2] * W || !mt_is_contiguous(weight))
        mt_fatal("%s: weight %s must be contiguous (C, W) with W <= 4", op, mt_shape_str(weight, s, sizeof s));
    return (int)W;
}

static void conv1d_grid_check(const char *op, dim3 grid)
{
    if (grid.y > 65535u || grid.z > 65535u)
        mt_fatal("%s: grid (%u, %u, %u) is too large (batch or seqlen too long)", op, grid.x, grid.y, grid.z);
}

void cuda_conv1d_fwd(mt_backend *be, mt_tensor *out, const mt_tensor *x, const mt_tensor *weight,
                     const mt_tensor *bias, const mt_tensor *init_state, const mt_tensor *seq_idx)
{
    const char *op = "conv1d_fwd";
    int W = conv1d_check(op, x, weight, bias, init_state, seq_idx);
    int64_t B = x->shape[0], L = x->shape[1], C = x->shape[2];
    if (B == 0 || L == 0 || C == 0)
        return;
    int V = vec_pick_width(C, x, out);
    dim3 block(CONV_TX, CONV_FWD_TY);
    dim3 grid((unsigned)((C + CONV_TX * V - 1) / (CONV_TX * V)),
              (unsigned)((L + CONV_FWD_TY * CONV_FWD_TS - 1) / (CONV_FWD_TY * CONV_FWD_TS)), (unsigned)B);
    conv1d_grid_check(op, grid);
    dispatch_float(x->dtype, op, [&](auto tag) {
        using T = typename decltype(tag)::type;
        conv1d_dispatch(V, W, [&](auto vc, auto wc) {
            constexpr int VV = decltype(vc)::value, WW = decltype(wc)::value;
            conv1d_fwd_kernel<T, VV, WW><<<grid, block, 0, cuda_stream(be)>>>(
                (T *)out->data, (const T *)x->data, (const float *)weight->data,
                bias ? (const float *)bias->data : NULL, init_state ? (const float *)init_state->data : NULL,
                seq_idx ? (const int32_t *)seq_idx->data : NULL, L, C, mt_row_stride(out), mt_row_stride(x));
            LAUNCH_CHECK(op);
        });
    });
}

void cuda_conv1d_bwd(mt_backend *be, mt_arena *scratch, mt_tensor *dx, mt_tensor *dweight, mt_tensor *dbias,
                     mt_tensor *dinit_state, const mt_tensor *dout, const mt_tensor *x, const mt_tensor *weight,
                     const mt_tensor *bias, const mt_tensor *init_state, const mt_tensor *seq_idx)
{
    const char *op = "conv1d_bwd";
    int W = conv1d_check(op, x, weight, bias, init_state, seq_idx);
    int64_t B = x->shape[0], L = x->shape[1], C = x->shape[2];
    if (dweight)
        require_dtype(dweight, MT_F32, op, "dweight");
    if (dbias)
        require_dtype(dbias, MT_F32, op, "dbias");
    if (dinit_state)
        require_dtype(dinit_state, MT_F32, op, "dinit_state");
    if (!init_state || W == 1)
        dinit_state = NULL; /* nothing read it (or it is empty) */
    if (!dout || B == 0 || L == 0 || C == 0)
        return; /* every gradient += 0 */
    if (!dx && !dweight && !dbias && !dinit_state)
        return;
    int V = vec_pick_width(C, x, dout, dx);
    dim3 block(CONV_TX, CONV_BWD_TY);
    dim3 grid((unsigned)((C + CONV_TX * V - 1) / (CONV_TX * V)),
              (unsigned)((L + CONV_BWD_TY * CONV_BWD_TS - 1) / (CONV_BWD_TY * CONV_BWD_TS)), (unsigned)B);
    conv1d_grid_check(op, grid);
    int64_t P = B * (int64_t)grid.y; /* partial rows, one per (b, time block) */
    float *pw = dweight ? (float *)mt_arena_alloc(scratch, (size_t)(P * C * W) * sizeof(float)) : NULL;
    float *pb = dbias ? (float *)mt_arena_alloc(scratch, (size_t)(P * C) * sizeof(float)) : NULL;
    cudaStream_t stream = cuda_stream(be);
    dispatch_float(x->dtype, op, [&](auto tag) {
        using T = typename decltype(tag)::type;
        conv1d_dispatch(V, W, [&](auto vc, auto wc) {
            constexpr int VV = decltype(vc)::value, WW = decltype(wc)::value;
            conv1d_bwd_kernel<T, VV, WW><<<grid, block, 0, stream>>>(
                dx ? (T *)dx->data : NULL, dinit_state ? (float *)dinit_state->data : NULL, pw, pb,
                (const T *)dout->data, (const T *)x->data, (const float *)weight->data,
                bias ? (const float *)bias->data : NULL, init_state ? (const float *)init_state->data : NULL,
                seq_idx ? (const int32_t *)seq_idx->data : NULL, L, C, dx ? mt_row_stride(dx) : 0,
                mt_row_stride(dout), mt_row_stride(x));
            LAUNCH_CHECK(op);
        });
    });
    if (dweight) {
        colsum_finish_kernel<float><<<grid_for(C * W, MT_CUDA_THREADS), MT_CUDA_THREADS, 0, stream>>>(
            (float *)dweight->data, pw, (int)P, C * W);
        LAUNCH_CHECK("conv1d_bwd (dweight)");
    }
    if (dbias) {
        colsum_finish_kernel<float><<<grid_for(C, MT_CUDA_THREADS), MT_CUDA_THREADS, 0, stream>>>(
            (float *)dbias->data, pb, (int)P, C);
        LAUNCH_CHECK("conv1d_bwd (dbias)");
    }
}
