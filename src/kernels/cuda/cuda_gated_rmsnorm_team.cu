/* Gated RMSNorm's team path: the forward, the backward and the group sums
 * of cuda_gated_rmsnorm.cu (the op, its shapes and the general path are
 * described there), for the shapes it takes. It holds each (row, group) in
 * registers, so every input is read once and the sigmoid computed once: a
 * team of tw warps owns a group, each thread nv 16-byte vectors of it, and
 * the group sum is a warp butterfly plus, for tw > 1, one barrier. It needs
 * gs a multiple of the vector (8 bf16 or 4 f32), 16-byte aligned data and
 * row strides, a group that fits the team, and G dividing a block's teams;
 * elsewhere the launchers here launch nothing and the general path runs.
 * A thread keeps its columns' running dweight sums in registers over its
 * rows, and a block adds its teams' sums in team order into one partial row.
 * Cost at the benchmark shape (R = 16384, E = 2048, G = 1, bf16; H200
 * ~4.3 TB/s), where this path runs: the forward moves 201 MB (floor ~47 us),
 * the sums 134 MB (~31 us; 201 MB, ~47 us, with dout), the backward 470 MB
 * (~109 us) plus 264 partial dweight rows (2.2 MB). */
#include <type_traits>

#include "kernels/cuda/cuda_gated_rmsnorm.cuh"
#include "kernels/cuda/cuda_vector.cuh"

#define GRMS_TEAM_THREADS 256
#define GRMS_TEAM_WARPS (GRMS_TEAM_THREADS / 32)
/* The most 16-byte vectors of each tensor a thread holds per row, so that
 * two blocks of 256 threads fit in an SM's registers without spills: the
 * forward 8 (u for 64 bf16 columns: a warp holds 2048), the sums 4, the
 * backward (five tensors, the running dweight sums, the weights) 8 columns'
 * worth (one bf16 or two f32 vectors). */
#define GRMS_FWD_VECS 8
#define GRMS_SUMS_VECS 4
#define GRMS_BWD_COLS 8
/* Backward: at most this many blocks, each one partial dweight row (a
 * constant, not the device's: about two blocks per SM of an H200). */
#define GRMS_BWD_BLOCKS 264

/* N consecutive weights from a 16-byte aligned address. */
template <int N> static __device__ __forceinline__ void grms_load_weight(float (&o)[N], const float *w)
{
#pragma unroll
    for (int q = 0; q < N / 4; q++) {
        const float4 v = __ldg(reinterpret_cast<const float4 *>(w) + q);
        o[4 * q] = v.x;
        o[4 * q + 1] = v.y;
        o[4 * q + 2] = v.z;
        o[4 * q + 3] = v.w;
    }
}

/* Where the calling thread sits: its team of tw warps (team_threads = 32 tw
 * threads) in the block, the group g the team owns, and its row slot. A
 * block holds GRMS_TEAM_WARPS / tw teams, G of them (one per group) per
 * slot, so a block covers whole rows; slots are numbered block by block. */
struct grms_team_pos {
    int team_threads, lane, team, g, slots_per_block;
    int64_t slot, nslots;
};

static __device__ __forceinline__ grms_team_pos grms_team_pos_of(int tw, int G)
{
    grms_team_pos p;
    p.team_threads = tw * 32;
    p.team = (int)threadIdx.x / p.team_threads;
    p.lane = (int)threadIdx.x % p.team_threads;
    p.g = p.team % G;
    p.slots_per_block = GRMS_TEAM_WARPS / tw / G;
    p.slot = (int64_t)blockIdx.x * p.slots_per_block + p.team / G;
    p.nslots = (int64_t)gridDim.x * p.slots_per_block;
    return p;
}

/* Sum of v over the calling thread's team, returned to each of its threads:
 * a warp butterfly, then for tw > 1 the team's warps in warp order through
 * shm[parity]. parity alternates between calls, so one barrier per call
 * suffices: a buffer is written again only after the next call's barrier,
 * which every reader of its last use has passed. Every thread of the block
 * must call it (tw is the same for the whole block). */
static __device__ __forceinline__ float grms_team_sum(float v, int tw, float (&shm)[2][GRMS_TEAM_WARPS], int parity)
{
    v = warp_sum(v);
    if (tw == 1)
        return v;
    const int warp = (int)threadIdx.x >> 5, first = warp / tw * tw;
    if ((threadIdx.x & 31) == 0)
        shm[parity][warp] = v;
    __syncthreads();
    float s = 0.0f;
    for (int i = 0; i < tw; i++)
        s += shm[parity][first + i];
    return s;
}

/* The team path's forward: per (row r, group g), u = y * silu(z), rstd[r, g]
 * = 1 / sqrt(ss / ncols + eps), out = u * rstd * weight, with ss the group's
 * sum of u^2 or, when ss_in is given (the same for the whole grid),
 * ss_in[r, g]. u stays in registers between the sum and the output.
 * Grid: a slot per row (R / slots per block blocks, capped by
 * MT_CUDA_MAX_BLOCKS), each slot walking rows slot, slot + nslots, ...
 * Block: GRMS_TEAM_THREADS. At the benchmark shape a warp owns a row (nv =
 * 8), no barrier at all; it moves 201 MB, floor ~47 us. */
template <typename T, int NV>
__global__ void __launch_bounds__(GRMS_TEAM_THREADS, 2)
    grms_fwd_team_kernel(T *__restrict__ out, float *__restrict__ rstd, const T *__restrict__ y,
                         const T *__restrict__ z, const float *__restrict__ w, const float *__restrict__ ss_in,
                         int64_t R, int G, int64_t gs, int tw, int64_t ors, int64_t rsrs, int64_t yrs, int64_t zrs,
                         int64_t ssrs, float ncols, float eps)
{
    constexpr int V = 16 / sizeof(T);
    __shared__ float shm[2][GRMS_TEAM_WARPS];
    const grms_team_pos p = grms_team_pos_of(tw, G);
    const int64_t col0 = (int64_t)p.g * gs;
    int parity = 0;
    for (int64_t r0 = 0; r0 < R; r0 += p.nslots) { /* the same trip count in the whole block */
        const int64_t r = r0 + p.slot;
        const bool on = r < R;
        vec_raw<T, V> yr[NV], zr[NV];
#pragma unroll
        for (int i = 0; i < NV; i++) {
            const int64_t c = ((int64_t)i * p.team_threads + p.lane) * V;
            yr[i] = zr[i] = {}; /* u = 0 past the group: the sum stays exact */
            if (on && c < gs) {
                vec_ldg_raw<T, V>(yr[i], y + r * yrs + col0 + c);
                vec_ldg_raw<T, V>(zr[i], z + r * zrs + col0 + c);
            }
        }
        float u[NV][V], acc = 0.0f;
#pragma unroll
        for (int i = 0; i < NV; i++) {
            float yv[V], zv[V];
            vec_unpack<T, V>(yv, yr[i]);
            vec_unpack<T, V>(zv, zr[i]);
#pragma unroll
            for (int v = 0; v < V; v++) {
                u[i][v] = yv[v] * (zv[v] * sigmoid_fast(zv[v]));
                acc += u[i][v] * u[i][v];
            }
        }
        float ss;
        if (ss_in) {
            ss = on ? ss_in[r * ssrs + p.g] : 0.0f;
        } else {
            ss = grms_team_sum(acc, tw, shm, parity);
            parity ^= 1;
        }
        if (!on)
            continue;
        const float rs = 1.0f / sqrtf(ss / ncols + eps);
        if (p.lane == 0 && rstd)
            rstd[r * rsrs + p.g] = rs;
#pragma unroll
        for (int i = 0; i < NV; i++) {
            const int64_t c = ((int64_t)i * p.team_threads + p.lane) * V;
            if (c < gs) {
                float wv[V], o[V];
                grms_load_weight<V>(wv, w + col0 + c);
#pragma unroll
                for (int v = 0; v < V; v++)
                    o[v] = u[i][v] * rs * wv[v];
                vec_store<T, V>(out + r * ors + col0 + c, o);
            }
        }
    }
}

/* The team path's sums: per (row r, group g), sums[r, g] = the group's sum
 * of u^2, or, when dout is given (the same for the whole grid), of w * dout
 * * u. Grid and block as the forward's. Moves y, z (and dout): 134 (201) MB
 * at the benchmark shape, floor ~31 (47) us. */
template <typename T, int NV>
__global__ void __launch_bounds__(GRMS_TEAM_THREADS, 2)
    grms_sums_team_kernel(float *__restrict__ sums, const T *__restrict__ dout, const T *__restrict__ y,
                          const T *__restrict__ z, const float *__restrict__ w, int64_t R, int G, int64_t gs, int tw,
                          int64_t srs, int64_t dors, int64_t yrs, int64_t zrs)
{
    constexpr int V = 16 / sizeof(T);
    __shared__ float shm[2][GRMS_TEAM_WARPS];
    const grms_team_pos p = grms_team_pos_of(tw, G);
    const int64_t col0 = (int64_t)p.g * gs;
    int parity = 0;
    for (int64_t r0 = 0; r0 < R; r0 += p.nslots, parity ^= 1) { /* the same trip count in the whole block */
        const int64_t r = r0 + p.slot;
        const bool on = r < R;
        vec_raw<T, V> gr[NV], yr[NV], zr[NV];
#pragma unroll
        for (int i = 0; i < NV; i++) {
            const int64_t c = ((int64_t)i * p.team_threads + p.lane) * V;
            gr[i] = yr[i] = zr[i] = {};
            if (on && c < gs) {
                vec_ldg_raw<T, V>(yr[i], y + r * yrs + col0 + c);
                vec_ldg_raw<T, V>(zr[i], z + r * zrs + col0 + c);
                if (dout)
                    vec_ldg_raw<T, V>(gr[i], dout + r * dors + col0 + c);
            }
        }
        float acc = 0.0f;
#pragma unroll
        for (int i = 0; i < NV; i++) {
            const int64_t c = ((int64_t)i * p.team_threads + p.lane) * V;
            float yv[V], zv[V], gv[V], wv[V] = {};
            vec_unpack<T, V>(yv, yr[i]);
            vec_unpack<T, V>(zv, zr[i]);
            vec_unpack<T, V>(gv, gr[i]);
            if (dout && c < gs)
                grms_load_weight<V>(wv, w + col0 + c);
#pragma unroll
            for (int v = 0; v < V; v++) {
                const float u = yv[v] * (zv[v] * sigmoid_fast(zv[v]));
                acc += dout ? wv[v] * gv[v] * u : u * u;
            }
        }
        acc = grms_team_sum(acc, tw, shm, parity);
        if (on && p.lane == 0)
            sums[r * srs + p.g] = acc;
    }
}

/* The team path's backward: per (row r, group g), with sg = sigmoid(z),
 * u = y * z * sg, s = rstd[r, g], m = the group's sum of w * dout * u (or
 * wdu[r, g] when wdu is given, the same for the whole grid) / ncols:
 *   du = s * (w * dout - u * s^2 * m)
 *   dy += du * z * sg;  dz += du * y * sg * (1 + z * (1 - sg))
 *   partial[blockIdx.x, col] += dout * u * s   (when partial is given)
 * dy and dz (either may be NULL) are loaded with the inputs, so the row's
 * loads all wait together; sg and the team's weights stay in registers.
 * Grid: at most GRMS_BWD_BLOCKS blocks, each slot walking every nslots-th
 * row. Block: GRMS_TEAM_THREADS. At the benchmark shape the team is the
 * whole block (8 warps, nv = 1), 62 or 63 rows each; it moves 470 MB, floor
 * ~109 us. */
template <typename T, int NV>
__global__ void __launch_bounds__(GRMS_TEAM_THREADS, 2)
    grms_bwd_team_kernel(T *dy, T *dz, float *partial, const T *__restrict__ dout, const T *__restrict__ y,
                         const T *__restrict__ z, const float *__restrict__ w, const float *__restrict__ rstd,
                         const float *__restrict__ wdu, int64_t R, int G, int64_t gs, int tw, int64_t dyrs,
                         int64_t dzrs, int64_t dors, int64_t yrs, int64_t zrs, int64_t rsrs, int64_t wdurs,
                         float ncols)
{
    constexpr int V = 16 / sizeof(T);
    __shared__ float shm[2][GRMS_TEAM_WARPS];
    const grms_team_pos p = grms_team_pos_of(tw, G);
    const int64_t col0 = (int64_t)p.g * gs;
    const bool need_du = dy || dz;
    float wv[NV][V], part[NV][V];
#pragma unroll
    for (int i = 0; i < NV; i++) {
        const int64_t c = ((int64_t)i * p.team_threads + p.lane) * V;
#pragma unroll
        for (int v = 0; v < V; v++)
            wv[i][v] = part[i][v] = 0.0f;
        if (c < gs)
            grms_load_weight<V>(wv[i], w + col0 + c);
    }
    int parity = 0;
    for (int64_t r0 = 0; r0 < R; r0 += p.nslots) { /* the same trip count in the whole block */
        const int64_t r = r0 + p.slot;
        const bool on = r < R;
        vec_raw<T, V> gr[NV], yr[NV], zr[NV], dyr[NV], dzr[NV];
#pragma unroll
        for (int i = 0; i < NV; i++) {
            const int64_t c = ((int64_t)i * p.team_threads + p.lane) * V;
            gr[i] = yr[i] = zr[i] = dyr[i] = dzr[i] = {};
            if (on && c < gs) {
                vec_ldg_raw<T, V>(gr[i], dout + r * dors + col0 + c);
                vec_ldg_raw<T, V>(yr[i], y + r * yrs + col0 + c);
                vec_ldg_raw<T, V>(zr[i], z + r * zrs + col0 + c);
                if (dy)
                    vec_load_raw<T, V>(dyr[i], dy + r * dyrs + col0 + c);
                if (dz)
                    vec_load_raw<T, V>(dzr[i], dz + r * dzrs + col0 + c);
            }
        }
        const float rs = on ? rstd[r * rsrs + p.g] : 0.0f;
        float sg[NV][V], acc = 0.0f;
#pragma unroll
        for (int i = 0; i < NV; i++) {
            float gv[V], yv[V], zv[V];
            vec_unpack<T, V>(gv, gr[i]);
            vec_unpack<T, V>(yv, yr[i]);
            vec_unpack<T, V>(zv, zr[i]);
#pragma unroll
            for (int v = 0; v < V; v++) {
                sg[i][v] = sigmoid_fast(zv[v]);
                acc += wv[i][v] * gv[v] * (yv[v] * (zv[v] * sg[i][v]));
            }
        }
        float m = 0.0f;
        if (need_du && wdu) {
            m = on ? wdu[r * wdurs + p.g] / ncols : 0.0f;
        } else if (need_du) {
            m = grms_team_sum(acc, tw, shm, parity) / ncols;
            parity ^= 1;
        }
        if (!on)
            continue;
#pragma unroll
        for (int i = 0; i < NV; i++) {
            const int64_t c = ((int64_t)i * p.team_threads + p.lane) * V;
            float gv[V], yv[V], zv[V], ddy[V], ddz[V];
            vec_unpack<T, V>(gv, gr[i]);
            vec_unpack<T, V>(yv, yr[i]);
            vec_unpack<T, V>(zv, zr[i]);
            vec_unpack<T, V>(ddy, dyr[i]);
            vec_unpack<T, V>(ddz, dzr[i]);
#pragma unroll
            for (int v = 0; v < V; v++) {
                const float sz = zv[v] * sg[i][v]; /* silu(z) */
                const float u = yv[v] * sz;
                const float du = rs * (wv[i][v] * gv[v] - u * rs * rs * m);
                ddy[v] += du * sz;
                ddz[v] += du * yv[v] * sg[i][v] * (1.0f + zv[v] * (1.0f - sg[i][v]));
                part[i][v] += gv[v] * u * rs;
            }
            if (c < gs) {
                if (dy)
                    vec_store<T, V>(dy + r * dyrs + col0 + c, ddy);
                if (dz)
                    vec_store<T, V>(dz + r * dzrs + col0 + c, ddz);
            }
        }
    }
    if (!partial)
        return;
    /* The block's slots add their sums into its partial row in slot order,
     * one slot at a time; the barrier also makes the previous slot's global
     * writes visible. */
    float *row = partial + (int64_t)blockIdx.x * G * gs + col0;
    for (int k = 0; k < p.slots_per_block; k++) {
        if (k > 0)
            __syncthreads();
        if (p.team / G != k)
            continue;
#pragma unroll
        for (int i = 0; i < NV; i++) {
            const int64_t c = ((int64_t)i * p.team_threads + p.lane) * V;
            if (c >= gs)
                continue;
#pragma unroll
            for (int q = 0; q < V / 4; q++) {
                float4 *dst = reinterpret_cast<float4 *>(row + c) + q;
                float4 s = make_float4(part[i][4 * q], part[i][4 * q + 1], part[i][4 * q + 2], part[i][4 * q + 3]);
                if (k > 0) {
                    const float4 prev = *dst;
                    s = make_float4(prev.x + s.x, prev.y + s.y, prev.z + s.z, prev.w + s.w);
                }
                *dst = s;
            }
        }
    }
}

/* ------------------------------------------------------------------------ */
/* Host side. */

/* f(integral_constant<nv>) for nv a power of two up to MAX. */
template <int MAX, typename F> static void grms_dispatch_vecs(int nv, F f)
{
    if constexpr (MAX > 1) {
        if (nv > MAX / 2)
            f(std::integral_constant<int, MAX>{});
        else
            grms_dispatch_vecs<MAX / 2>(nv, f);
    } else {
        f(std::integral_constant<int, 1>{});
    }
}

/* The team path's shape over y (R, E) in G groups: tw warps per (row,
 * group) holding nv 16-byte vectors per thread (the fewest warps, then the
 * fewest vectors, that hold a group), slots_per_block row slots per block.
 * tw = 0 where the path does not apply: a dtype without 16-byte vectors of
 * whole elements, gs not a multiple of the vector, a group wider than a
 * block's threads of max_vecs vectors, G not dividing the block's teams, or
 * any tensor given (y, z, the outputs) or weight not 16-byte aligned in its
 * data or row stride. */
typedef struct grms_team {
    int tw, nv, slots_per_block;
} grms_team;

template <typename... Ts>
static grms_team grms_team_of(const mt_tensor *y, const mt_tensor *weight, int ngroups, int max_vecs, const Ts *...ts)
{
    grms_team t = {0, 0, 0};
    const int64_t E = mt_cols(y), gs = E / ngroups;
    const int V = 16 / (int)mt_dtype_size(y->dtype);
    if ((y->dtype != MT_F32 && y->dtype != MT_BF16) || gs % V != 0 || (uintptr_t)weight->data % 16 != 0)
        return t;
    if (!vec_ok(y, V) || !(vec_ok(ts, V) && ...))
        return t;
    const int64_t nvec = gs / V;
    for (int tw = 1; tw <= GRMS_TEAM_WARPS; tw *= 2) {
        if (nvec > (int64_t)tw * 32 * max_vecs)
            continue;
        if ((GRMS_TEAM_WARPS / tw) % ngroups != 0)
            return t;
        int nv = 1;
        while ((int64_t)tw * 32 * nv < nvec)
            nv *= 2;
        t.tw = tw;
        t.nv = nv;
        t.slots_per_block = GRMS_TEAM_WARPS / tw / ngroups;
        return t;
    }
    return t;
}

bool grms_fwd_team(mt_backend *be, const char *op, mt_tensor *out, mt_tensor *rstd, const mt_tensor *y,
                   const mt_tensor *z, const mt_tensor *weight, const mt_tensor *sumsq, int ngroups, double ncols,
                   double eps)
{
    const grms_team t = grms_team_of(y, weight, ngroups, GRMS_FWD_VECS, z, out);
    if (!t.tw)
        return false;
    const int64_t R = mt_rows(y), gs = mt_cols(y) / ngroups;
    const unsigned grid = grid_for(R, t.slots_per_block);
    dispatch_float(y->dtype, op, [&](auto tag) {
        using T = typename decltype(tag)::type;
        grms_dispatch_vecs<GRMS_FWD_VECS>(t.nv, [&](auto nc) {
            constexpr int NV = decltype(nc)::value;
            grms_fwd_team_kernel<T, NV><<<grid, GRMS_TEAM_THREADS, 0, cuda_stream(be)>>>(
                (T *)out->data, rstd ? (float *)rstd->data : NULL, (const T *)y->data, (const T *)z->data,
                (const float *)weight->data, sumsq ? (const float *)sumsq->data : NULL, R, ngroups, gs, t.tw,
                mt_row_stride(out), rstd ? mt_row_stride(rstd) : 0, mt_row_stride(y), mt_row_stride(z),
                sumsq ? mt_row_stride(sumsq) : 0, (float)ncols, (float)eps);
            LAUNCH_CHECK(op);
        });
    });
    return true;
}

bool grms_sums_team(mt_backend *be, const char *op, mt_tensor *sums, const mt_tensor *y, const mt_tensor *z,
                    const mt_tensor *weight, const mt_tensor *dout, int ngroups)
{
    const grms_team t = grms_team_of(y, weight, ngroups, GRMS_SUMS_VECS, z, dout);
    if (!t.tw)
        return false;
    const int64_t R = mt_rows(y), gs = mt_cols(y) / ngroups;
    const unsigned grid = grid_for(R, t.slots_per_block);
    dispatch_float(y->dtype, op, [&](auto tag) {
        using T = typename decltype(tag)::type;
        grms_dispatch_vecs<GRMS_SUMS_VECS>(t.nv, [&](auto nc) {
            constexpr int NV = decltype(nc)::value;
            grms_sums_team_kernel<T, NV><<<grid, GRMS_TEAM_THREADS, 0, cuda_stream(be)>>>(
                (float *)sums->data, dout ? (const T *)dout->data : NULL, (const T *)y->data, (const T *)z->data,
                (const float *)weight->data, R, ngroups, gs, t.tw, mt_row_stride(sums), dout ? mt_row_stride(dout) : 0,
                mt_row_stride(y), mt_row_stride(z));
            LAUNCH_CHECK(op);
        });
    });
    return true;
}

int64_t grms_bwd_team(mt_backend *be, const char *op, mt_arena *scratch, float **partial, mt_tensor *dy, mt_tensor *dz,
                      bool need_dweight, const mt_tensor *dout, const mt_tensor *y, const mt_tensor *z,
                      const mt_tensor *weight, const mt_tensor *rstd, const mt_tensor *wdu, int ngroups,
                      double ncols)
{
    const int max_vecs = GRMS_BWD_COLS / (16 / (int)mt_dtype_size(y->dtype));
    const grms_team t = grms_team_of(y, weight, ngroups, max_vecs, z, dout, dy, dz);
    if (!t.tw)
        return 0;
    const int64_t R = mt_rows(y), E = mt_cols(y), gs = E / ngroups;
    int64_t blocks = (R + t.slots_per_block - 1) / t.slots_per_block;
    if (blocks > GRMS_BWD_BLOCKS)
        blocks = GRMS_BWD_BLOCKS;
    *partial = need_dweight ? (float *)mt_arena_alloc(scratch, (size_t)(blocks * E) * sizeof(float)) : NULL;
    dispatch_float(y->dtype, op, [&](auto tag) {
        using T = typename decltype(tag)::type;
        grms_dispatch_vecs<GRMS_BWD_COLS / (16 / sizeof(T))>(t.nv, [&](auto nc) {
            constexpr int NV = decltype(nc)::value;
            grms_bwd_team_kernel<T, NV><<<(unsigned)blocks, GRMS_TEAM_THREADS, 0, cuda_stream(be)>>>(
                dy ? (T *)dy->data : NULL, dz ? (T *)dz->data : NULL, *partial, (const T *)dout->data,
                (const T *)y->data, (const T *)z->data, (const float *)weight->data, (const float *)rstd->data,
                wdu ? (const float *)wdu->data : NULL, R, ngroups, gs, t.tw, dy ? mt_row_stride(dy) : 0,
                dz ? mt_row_stride(dz) : 0, mt_row_stride(dout), mt_row_stride(y), mt_row_stride(z),
                mt_row_stride(rstd), wdu ? mt_row_stride(wdu) : 0, (float)ncols);
            LAUNCH_CHECK(op);
        });
    });
    return blocks;
}
