/* Causal depthwise conv1d over time with bias and fused SiLU (channels last),
 * and its backward. x, out, dx, dout are (B, L, C) in T (f32 or bf16), each
 * with its own row stride (rows = B * L); weight (C, W) f32 with W <= 4, bias
 * (C) f32, init_state (B, C, W-1) f32, seq_idx (B, L) i32, all contiguous.
 *
 * Both passes are memory bound: a few flops per element against 2 bytes
 * (bf16) of every stream. At the benchmark shape (B = 8, L = 2048, C = 2304
 * in bf16, x a column view of the input projection) the forward moves x in
 * and out: 151 MB, 35 us at 4.3 TB/s. The backward moves x and dout in and
 * dx in and out (dx accumulates): 302 MB, 70 us.
 *
 * Layout of the work: a block is CONV_TX x CONV_TY = 256 threads. threadIdx.x
 * runs along channels (a thread owns V consecutive channels moved as one
 * vector of up to 16 bytes: V = 8 in bf16 and 4 in f32 when alignment
 * allows, else 4, 2 or 1), threadIdx.y along time: thread (x, y) of block
 * (bx, by, b) owns the time sub-tile [ts0, ts0 + steps) of sequence b, walking
 * it in order and keeping the last W-1 inputs (and their seq_idx) in
 * registers. steps (8 to 64) is picked on the host from the shape alone: as
 * long as the grid still fills the GPU, so that the W-1 rows each sub-tile
 * re-reads before it (and the backward after it) stay a small fraction. The
 * loads of a chunk of time steps are issued together into raw registers, so
 * that several are in flight per thread.
 *
 * Masking: every tap reads the value held for its time t' together with the
 * document id held for t'. Times t' < 0 hold init_state (or 0) with the id
 * seq_idx[b, 0], so "a tap from another document reads 0" and "a tap at
 * t' < 0 reads init_state only while seq_idx[b, t] == seq_idx[b, 0]" are the
 * one test (id(t') == id(t)). A masked tap is replaced by 0 (a select, not a
 * multiply, so a NaN in another document never leaks in). The test is the
 * same for every lane of a warp (they share t), so a step whose taps are all
 * kept, nearly every step, takes a branch without the selects.
 *
 * Determinism of the backward: dx and dinit_state have one owner thread per
 * element (dinit_state only the thread whose sub-tile starts at t = 0), which
 * sums the W contributions in a fixed order. dweight and dbias: each thread
 * sums its sub-tile in time order; the block adds its CONV_TY threads' sums
 * in y order through shared memory into one partial row (one per (b, by));
 * colsum_finish_kernel adds the partial rows in a fixed order. */
#include <type_traits>

#include "kernels/cuda/cuda_vector.cuh"

#define CONV_TX 32 /* threads along channels: one warp */
#define CONV_TY 8  /* time sub-tiles per block */
#define CONV_THREADS (CONV_TX * CONV_TY)
#define CONV_VEC_BYTES 16 /* the widest vector a thread moves */
#define CONV_BWD_CHUNK 4  /* time steps whose loads (three per step) are issued together, backward */
#define CONV_MAX_STEPS 64 /* longest time sub-tile of a thread */
#define CONV_MIN_STEPS 8  /* shortest; the backward needs >= W-1 */
/* Sub-tiles shrink until the grid has this many blocks: 4 per SM of an
 * H200. A constant, not the device's SM count, so that the backward's
 * partial rows, and hence its bits, are the same on every GPU. */
#define CONV_TARGET_BLOCKS 528

/* Time steps whose loads are issued together, forward: 8, but 6 for the
 * 8-wide bf16 width-4 kernel, whose weights, bias and history (64 floats)
 * leave room under its 128 registers for 6 loads of 16 bytes only. */
template <typename T, int V, int W> constexpr int conv1d_fwd_chunk = sizeof(T) == 2 && V == 8 && W == 4 ? 6 : 8;

/* Length of the history arrays: the W-1 inputs before the current one (one
 * unused slot when W == 1, so the arrays stay declarable). */
template <int W> constexpr int conv1d_hist_len = W > 1 ? W - 1 : 1;

/* The thread's starting state: its weights wk[k][v] = weight[c0 + v, k], bias
 * bs[v] (0 when bias is NULL) and the history before ts0: h[j] and hs[j] get
 * the input and document id of time ts0 - (W-1) + j, j < W-1. Negative times
 * read init_state (0 when NULL) with the id seq_idx[b, 0]. sq is seq_idx's
 * row b (NULL: one document), xb is x's row (b, 0) at channel c0. */
template <typename T, int V, int W>
static __device__ __forceinline__ void conv1d_start(float (&wk)[W][V], float (&bs)[V],
                                                    float (&h)[conv1d_hist_len<W>][V], int (&hs)[conv1d_hist_len<W>],
                                                    const float *w, const float *bias, const T *xb, const float *init,
                                                    const int32_t *sq, int64_t b, int64_t C, int64_t c0, int64_t xrs,
                                                    int64_t ts0)
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
            vec_load<T, V>(h[j], xb + tp * xrs);
            hs[j] = sq ? sq[tp] : 0;
        } else {
#pragma unroll
            for (int v = 0; v < V; v++)
                h[j][v] = init ? init[(b * C + c0 + v) * (W - 1) + (tp + W - 1)] : 0.0f;
            hs[j] = s0;
        }
    }
}

/* r = the V elements at row t of rows (row stride rs) when valid, else
 * zeros. The address is formed only when valid (t may be negative). */
template <typename T, int V>
static __device__ __forceinline__ void conv1d_load_if(vec_raw<T, V> &r, const T *rows, int64_t t, int64_t rs,
                                                      bool valid)
{
#pragma unroll
    for (int i = 0; i < vec_raw<T, V>::NW; i++)
        r.w[i] = 0u;
    if (valid)
        vec_load_raw<T, V>(r, rows + t * rs);
}

/* Whether every history tap of an output of document st is kept. */
template <int W> static __device__ __forceinline__ bool conv1d_all_kept(const int (&hs)[conv1d_hist_len<W>], int st)
{
    bool all = true;
#pragma unroll
    for (int k = 0; k < W - 1; k++)
        all = all && hs[k] == st;
    return all;
}

/* The W taps of the output whose own input is xt, of document st: tap[k]
 * (k < W-1) is the history h[k], replaced by 0 when MASKED and h[k] belongs
 * to another document; tap[W-1] = xt. kept[k] says whether tap k was kept.
 * Without MASKED (all taps known kept) this is only renaming. */
template <bool MASKED, int V, int W>
static __device__ __forceinline__ void conv1d_taps(float (&tap)[W][V], bool (&kept)[W],
                                                   const float (&h)[conv1d_hist_len<W>][V],
                                                   const int (&hs)[conv1d_hist_len<W>], const float (&xt)[V], int st)
{
#pragma unroll
    for (int k = 0; k < W - 1; k++) {
        kept[k] = !MASKED || hs[k] == st;
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

/* One forward output: o[v] = silu(preact) from the taps. */
template <bool MASKED, typename T, int V, int W>
static __device__ __forceinline__ void conv1d_fwd_step(T *o, const float (&wk)[W][V], const float (&bs)[V],
                                                       const float (&h)[conv1d_hist_len<W>][V],
                                                       const int (&hs)[conv1d_hist_len<W>], const float (&xt)[V],
                                                       int st)
{
    float tap[W][V], a[V];
    bool kept[W];
    conv1d_taps<MASKED, V, W>(tap, kept, h, hs, xt, st);
    conv1d_preact<V, W>(a, wk, bs, tap);
#pragma unroll
    for (int v = 0; v < V; v++)
        a[v] = a[v] * sigmoid_fast(a[v]);
    vec_store<T, V>(o, a);
}

/* out[b, t, c] = silu(bias[c] + sum_k weight[c, k] * tap_k), tap_k the
 * (masked) input at t - (W-1) + k. Grid (ceil(C / (CONV_TX*V)),
 * ceil(L / (CONV_TY*steps)), B), block (CONV_TX, CONV_TY). Each thread issues
 * conv1d_fwd_chunk loads at a time; at two blocks per SM (128 registers)
 * that keeps 48 KB in flight per SM (6 loads of 16 bytes per thread). Floor
 * at the benchmark shape: 151 MB, 35 us (V = 8, steps = 32: 576 blocks; the
 * 3 rows re-read per 32 hit L2). */
template <typename T, int V, int W>
__global__ void __launch_bounds__(CONV_THREADS, 2)
    conv1d_fwd_kernel(T *__restrict__ out, const T *__restrict__ x, const float *__restrict__ w,
                      const float *__restrict__ bias, const float *__restrict__ init, const int32_t *__restrict__ seq,
                      int64_t L, int64_t C, int64_t ors, int64_t xrs, int steps)
{
    constexpr int WH = conv1d_hist_len<W>, CHUNK = conv1d_fwd_chunk<T, V, W>;
    const int64_t c0 = ((int64_t)blockIdx.x * CONV_TX + threadIdx.x) * V;
    const int64_t b = blockIdx.z;
    const int64_t ts0 = ((int64_t)blockIdx.y * CONV_TY + threadIdx.y) * steps;
    if (c0 >= C || ts0 >= L)
        return;
    const int64_t ts1 = ts0 + steps < L ? ts0 + steps : L;

    const int32_t *sq = seq ? seq + b * L : NULL;
    const T *xb = x + b * L * xrs + c0;
    T *ob = out + b * L * ors + c0;
    float wk[W][V], bs[V], h[WH][V];
    int hs[WH];
    conv1d_start<T, V, W>(wk, bs, h, hs, w, bias, xb, init, sq, b, C, c0, xrs, ts0);

    /* Row pointers walk on by one row stride per step (rather than
     * t * stride products, which the compiler would keep in registers). */
    const T *xp = xb + ts0 * xrs;
    T *op = ob + ts0 * ors;
    const int32_t *sr = sq ? sq + ts0 : NULL;
    const int n1 = (int)(ts1 - ts0);
    for (int r0 = 0; r0 < n1; r0 += CHUNK) {
        vec_raw<T, V> xr[CHUNK];
        int sc[CHUNK];
#pragma unroll
        for (int i = 0; i < CHUNK; i++) {
            conv1d_load_if<T, V>(xr[i], xp, 0, 0, r0 + i < n1);
            sc[i] = sr && r0 + i < n1 ? sr[r0 + i] : 0;
            xp += xrs;
        }
#pragma unroll
        for (int i = 0; i < CHUNK; i++) {
            if (r0 + i < n1) {
                float xt[V];
                vec_unpack<T, V>(xt, xr[i]);
                if (conv1d_all_kept<W>(hs, sc[i]))
                    conv1d_fwd_step<false, T, V, W>(op, wk, bs, h, hs, xt, sc[i]);
                else
                    conv1d_fwd_step<true, T, V, W>(op, wk, bs, h, hs, xt, sc[i]);
                conv1d_push<V, W>(h, hs, xt, sc[i]);
            }
            op += ors;
        }
    }
}

/* One backward step at output time t, with a = bias + sum_k w[k] tap_k and
 * s = sigmoid(a):
 *   da = dout * s * (1 + a * (1 - s))
 *   gb += da, gw[k] += da * tap_k        (only when t is in the sub-tile)
 *   pend[k] += w[k] * da for every kept tap k (input time t - (W-1) + k). */
template <bool MASKED, int V, int W>
static __device__ __forceinline__ void conv1d_bwd_step(float (&gw)[W][V], float (&gb)[V], float (&pend)[W][V],
                                                       const float (&wk)[W][V], const float (&bs)[V],
                                                       const float (&h)[conv1d_hist_len<W>][V],
                                                       const int (&hs)[conv1d_hist_len<W>], const float (&xt)[V],
                                                       const float (&gt)[V], int st, bool in_tile)
{
    float tap[W][V], a[V], da[V];
    bool kept[W];
    conv1d_taps<MASKED, V, W>(tap, kept, h, hs, xt, st);
    conv1d_preact<V, W>(a, wk, bs, tap);
#pragma unroll
    for (int v = 0; v < V; v++) {
        const float s = sigmoid_fast(a[v]);
        da[v] = gt[v] * s * (1.0f + a[v] * (1.0f - s));
    }
    if (in_tile) {
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
}

/* dinit_state[b, c0 + v, tp + W-1] += g[v]: input time tp < 0 has all its
 * contributions g. */
template <int W, int V>
static __device__ __forceinline__ void conv1d_add_dinit(float *dinit, const float (&g)[V], int64_t tp, int64_t b,
                                                        int64_t C, int64_t c0)
{
#pragma unroll
    for (int v = 0; v < V; v++)
        dinit[(b * C + c0 + v) * (W - 1) + (tp + W - 1)] += g[v];
}

/* Sum over the block's CONV_TY time sub-tiles (in y order) of one row of
 * the shared reduction buffer, at channel cc of the block. */
template <int W, int CB>
static __device__ __forceinline__ float conv1d_block_sum(const float (&red)[CONV_TY][W + 1][CB], int row, int cc)
{
    float s = 0.0f;
#pragma unroll
    for (int y = 0; y < CONV_TY; y++)
        s += red[y][row][cc];
    return s;
}

/* Backward. Each thread runs conv1d_bwd_step over its outputs [ts0, ts1) and,
 * for dx, on to tend = min(ts1 + W-1, L) (there only da is needed): pend[j]
 * collects dx for input time t - (W-1) + j; after output t, input time
 * t - (W-1) has all its W contributions (outputs t-(W-1) .. t) and is flushed:
 * into dx (whose old value was loaded with the chunk's x and dout, so that
 * the thread never waits on a lone load) when inside [ts0, ts1), into
 * dinit_state when negative (only when ts0 == 0, where every output from 0 on
 * has been seen). Partials: part holds P = B * gridDim.y rows of dweight
 * sums (C*W, index c*W + k), then P rows of dbias sums (C); row
 * b * gridDim.y + blockIdx.y of each is the block's, every element written
 * (no zeroing needed); NULL when neither is wanted.
 * Grid (ceil(C / (CONV_TX*V)), ceil(L / (CONV_TY*steps)), B), block
 * (CONV_TX, CONV_TY). One block per SM: the weights, bias, history, partial
 * sums and pending dx of 8 channels take 128 of the 255 registers, and the
 * loads of CONV_BWD_CHUNK steps (3 x 16 bytes each) most of the rest, 48 KB
 * in flight per SM. Floor at the benchmark shape: 302 MB, 70 us (V = 8,
 * steps = 32: 576 blocks, 64 partial rows of 46 KB). */
template <typename T, int V, int W>
__global__ void __launch_bounds__(CONV_THREADS, 1)
    conv1d_bwd_kernel(T *__restrict__ dx, float *__restrict__ dinit, float *__restrict__ part,
                      const T *__restrict__ dout, const T *__restrict__ x, const float *__restrict__ w,
                      const float *__restrict__ bias, const float *__restrict__ init, const int32_t *__restrict__ seq,
                      int64_t L, int64_t C, int64_t dxrs, int64_t dors, int64_t xrs, int steps)
{
    constexpr int WH = conv1d_hist_len<W>;
    constexpr int CB = CONV_TX * V; /* channels per block */
    __shared__ float red[CONV_TY][W + 1][CB];

    const int lane = threadIdx.x, ty = threadIdx.y;
    const int64_t c0 = ((int64_t)blockIdx.x * CONV_TX + lane) * V;
    const int64_t b = blockIdx.z;
    const int64_t ts0 = ((int64_t)blockIdx.y * CONV_TY + ty) * steps;

    float gw[W][V] = {}, gb[V] = {};

    if (c0 < C && ts0 < L) {
        const int64_t ts1 = ts0 + steps < L ? ts0 + steps : L;
        const int64_t tend = dx ? (ts1 + (W - 1) < L ? ts1 + (W - 1) : L) : ts1;
        const int32_t *sq = seq ? seq + b * L : NULL;
        const T *xb = x + b * L * xrs + c0;
        float wk[W][V], bs[V], h[WH][V];
        int hs[WH];
        conv1d_start<T, V, W>(wk, bs, h, hs, w, bias, xb, init, sq, b, C, c0, xrs, ts0);
        float pend[W][V] = {};

        /* Row pointers at output time tt, walking on by one row stride per
         * step; dx is read and written at input time tt - (W-1). Without dx,
         * dp is NULL and dxrs 0, so it stays NULL. */
        const T *xp = xb + ts0 * xrs, *gp = dout + (b * L + ts0) * dors + c0;
        T *dp = dx ? dx + (b * L + ts0) * dxrs + c0 : NULL;
        const int64_t dx_lag = (W - 1) * dxrs;
        /* Time relative to ts0 in 32 bits (sub-tiles are short): outputs
         * r < n1 are the sub-tile's, r < nend are walked. */
        const int32_t *sr = sq ? sq + ts0 : NULL;
        const int n1 = (int)(ts1 - ts0), nend = (int)(tend - ts0);
        /* Negative input times (rp < 0 with ts0 == 0) are this thread's only
         * when its sub-tile starts the sequence; elsewhere rp < 0 is the
         * previous sub-tile's. */
        float *dinit0 = ts0 == 0 ? dinit : NULL;
        for (int r0 = 0; r0 < nend; r0 += CONV_BWD_CHUNK) {
            vec_raw<T, V> xr[CONV_BWD_CHUNK], gr[CONV_BWD_CHUNK], dr[CONV_BWD_CHUNK];
            int sc[CONV_BWD_CHUNK];
            const T *dq = dp;
#pragma unroll
            for (int i = 0; i < CONV_BWD_CHUNK; i++) {
                const int r = r0 + i, rp = r - (W - 1);
                conv1d_load_if<T, V>(xr[i], xp, 0, 0, r < nend);
                conv1d_load_if<T, V>(gr[i], gp, 0, 0, r < nend);
                conv1d_load_if<T, V>(dr[i], dq, -1, dx_lag, dq && r < nend && rp >= 0 && rp < n1);
                sc[i] = sr && r < nend ? sr[r] : 0;
                xp += xrs;
                gp += dors;
                dq += dxrs;
            }
#pragma unroll
            for (int i = 0; i < CONV_BWD_CHUNK; i++) {
                const int r = r0 + i, rp = r - (W - 1);
                if (r < nend) {
                    float xt[V], gt[V];
                    vec_unpack<T, V>(xt, xr[i]);
                    vec_unpack<T, V>(gt, gr[i]);
                    if (conv1d_all_kept<W>(hs, sc[i]))
                        conv1d_bwd_step<false, V, W>(gw, gb, pend, wk, bs, h, hs, xt, gt, sc[i], r < n1);
                    else
                        conv1d_bwd_step<true, V, W>(gw, gb, pend, wk, bs, h, hs, xt, gt, sc[i], r < n1);
                    /* input time ts0 + rp is complete */
                    if (rp >= 0 && rp < n1) {
                        if (dp) {
                            float sum[V];
                            vec_unpack<T, V>(sum, dr[i]);
#pragma unroll
                            for (int v = 0; v < V; v++)
                                sum[v] += pend[0][v];
                            vec_store<T, V>(dp - dx_lag, sum);
                        }
                    } else if (rp < 0 && dinit0) {
                        conv1d_add_dinit<W, V>(dinit0, pend[0], rp, b, C, c0);
                    }
#pragma unroll
                    for (int k = 0; k + 1 < W; k++)
#pragma unroll
                        for (int v = 0; v < V; v++)
                            pend[k][v] = pend[k + 1][v];
#pragma unroll
                    for (int v = 0; v < V; v++)
                        pend[W - 1][v] = 0.0f;
                    conv1d_push<V, W>(h, hs, xt, sc[i]);
                }
                dp += dxrs;
            }
        }
        /* Input times tend - (W-1) + j (j < W-1) are still pending. Those
         * inside [ts0, ts1) or negative are complete only when tend == L (no
         * later outputs exist); otherwise they are >= ts1 and not ours. */
#pragma unroll
        for (int j = 0; j < W - 1; j++) {
            const int64_t tp = tend - (W - 1) + j;
            if (tp >= ts0 && tp < ts1) {
                if (dx)
                    vec_accum<T, V>(dx + (b * L + tp) * dxrs + c0, pend[j]);
            } else if (tp < 0 && dinit) {
                conv1d_add_dinit<W, V>(dinit, pend[j], tp, b, C, c0);
            }
        }
    }

    if (part) {
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
        const int64_t prow = b * gridDim.y + blockIdx.y, P = (int64_t)gridDim.z * gridDim.y;
        float *row_w = part + prow * C * W, *row_b = part + P * C * W + prow * C;
        for (int i = tid; i < CB * W; i += CONV_THREADS) {
            const int cc = i / W, k = i - cc * W;
            if (cbase + cc < C)
                row_w[(cbase + cc) * W + k] = conv1d_block_sum<W, CB>(red, k, cc);
        }
        for (int cc = tid; cc < CB; cc += CONV_THREADS)
            if (cbase + cc < C)
                row_b[cbase + cc] = conv1d_block_sum<W, CB>(red, W, cc);
    }
}

/* ------------------------------------------------------------------------ */
/* Host side. */

/* f(integral_constant<V>, integral_constant<W>) for runtime V in {1, 2, 4, 8}
 * (V * sizeof(T) <= CONV_VEC_BYTES, which the host's pick ensures) and W in
 * {1, 2, 3, 4}. */
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

template <typename T, typename F> static void conv1d_dispatch(int V, int W, F f)
{
    switch (V) {
    case 8:
        if constexpr (sizeof(T) * 8 <= CONV_VEC_BYTES)
            conv1d_dispatch_w<8>(W, f);
        else
            mt_fatal("conv1d: vector width 8 is too wide for this dtype");
        break;
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

/* The grid for vector width V, with the time sub-tile *steps picked from the
 * shape alone (never the device, so the backward's partial rows and hence
 * its bits do not depend on it): the longest power of two from
 * CONV_MAX_STEPS down to CONV_MIN_STEPS whose grid still has
 * CONV_TARGET_BLOCKS blocks. */
static dim3 conv1d_grid(const char *op, int64_t B, int64_t L, int64_t C, int V, int *steps)
{
    const int64_t col_blocks = (C + CONV_TX * V - 1) / (CONV_TX * V);
    int ts = CONV_MAX_STEPS;
    while (ts > CONV_MIN_STEPS && col_blocks * B * ((L + CONV_TY * ts - 1) / (CONV_TY * ts)) < CONV_TARGET_BLOCKS)
        ts /= 2;
    *steps = ts;
    const int64_t time_blocks = (L + CONV_TY * ts - 1) / (CONV_TY * ts);
    if (time_blocks > 65535 || B > 65535)
        mt_fatal("%s: grid (%lld, %lld, %lld) is too large (batch or seqlen too long)", op, (long long)col_blocks,
                 (long long)time_blocks, (long long)B);
    return dim3((unsigned)col_blocks, (unsigned)time_blocks, (unsigned)B);
}

void cuda_conv1d_fwd(mt_backend *be, mt_tensor *out, const mt_tensor *x, const mt_tensor *weight,
                     const mt_tensor *bias, const mt_tensor *init_state, const mt_tensor *seq_idx)
{
    const char *op = "conv1d_fwd";
    int W = conv1d_check(op, x, weight, bias, init_state, seq_idx);
    int64_t B = x->shape[0], L = x->shape[1], C = x->shape[2];
    if (B == 0 || L == 0 || C == 0)
        return;
    dispatch_float(x->dtype, op, [&](auto tag) {
        using T = typename decltype(tag)::type;
        const int V = vec_pick_width_upto(CONV_VEC_BYTES / (int)sizeof(T), C, x, out);
        int steps;
        const dim3 grid = conv1d_grid(op, B, L, C, V, &steps);
        conv1d_dispatch<T>(V, W, [&](auto vc, auto wc) {
            constexpr int VV = decltype(vc)::value, WW = decltype(wc)::value;
            conv1d_fwd_kernel<T, VV, WW><<<grid, dim3(CONV_TX, CONV_TY), 0, cuda_stream(be)>>>(
                (T *)out->data, (const T *)x->data, (const float *)weight->data,
                bias ? (const float *)bias->data : NULL, init_state ? (const float *)init_state->data : NULL,
                seq_idx ? (const int32_t *)seq_idx->data : NULL, L, C, mt_row_stride(out), mt_row_stride(x), steps);
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
    cudaStream_t stream = cuda_stream(be);
    dispatch_float(x->dtype, op, [&](auto tag) {
        using T = typename decltype(tag)::type;
        const int V = vec_pick_width_upto(CONV_VEC_BYTES / (int)sizeof(T), C, x, dout, dx);
        int steps;
        const dim3 grid = conv1d_grid(op, B, L, C, V, &steps);
        const int64_t P = B * (int64_t)grid.y; /* partial rows, one per (b, time block) */
        float *part = dweight || dbias ? (float *)mt_arena_alloc(scratch, (size_t)(P * C * (W + 1)) * sizeof(float))
                                       : NULL;
        conv1d_dispatch<T>(V, W, [&](auto vc, auto wc) {
            constexpr int VV = decltype(vc)::value, WW = decltype(wc)::value;
            conv1d_bwd_kernel<T, VV, WW><<<grid, dim3(CONV_TX, CONV_TY), 0, stream>>>(
                dx ? (T *)dx->data : NULL, dinit_state ? (float *)dinit_state->data : NULL, part,
                (const T *)dout->data, (const T *)x->data, (const float *)weight->data,
                bias ? (const float *)bias->data : NULL, init_state ? (const float *)init_state->data : NULL,
                seq_idx ? (const int32_t *)seq_idx->data : NULL, L, C, dx ? mt_row_stride(dx) : 0,
                mt_row_stride(dout), mt_row_stride(x), steps);
            LAUNCH_CHECK(op);
        });
        if (dweight) {
            colsum_finish<float>((float *)dweight->data, part, (int)P, C * W, stream);
            LAUNCH_CHECK("conv1d_bwd (dweight)");
        }
        if (dbias) {
            colsum_finish<float>((float *)dbias->data, part + P * C * W, (int)P, C, stream);
            LAUNCH_CHECK("conv1d_bwd (dbias)");
        }
    });
}
