/* Gated RMSNorm (Mamba-2's output norm, norm_before_gate = false) and its
 * backward; also in phases for a tensor-parallel rank whose groups span
 * ranks: the per-row group sums (R, G) f32, summed over the ranks by the
 * caller, are taken instead of computed, over group_cols columns in all.
 * y, z, out, dy, dz, dout are (R, E) in T (f32 or bf16), each with its own
 * row stride; weight (E) f32; rstd (R, G) f32; G groups of gs = E/G columns
 * per row.
 *
 * Two paths. This file holds the host launchers and the general path; each
 * launcher tries the team path first (cuda_gated_rmsnorm_team.cu: each
 * (row, group) in registers, 16-byte vectors), which runs at the benchmark
 * shape. Cost there (R = 16384 = batch 8 x 2048 tokens, E = 2048, G = 1,
 * bf16; H200 ~4.3 TB/s): the forward moves y, z, out = 201 MB (floor
 * ~47 us); the backward reads dout, y, z and reads and writes dy, dz (it
 * adds to them) = 470 MB (floor ~109 us), plus 264 partial dweight rows
 * (2.2 MB) that colsum_finish_kernel adds.
 *
 * The general path takes any width, alignment and group count. A block is
 * (tx, ty) threads with tx a multiple of 32 and tx * ty <= GRMS_THREADS.
 * Each of its ty "sub-rows" of tx threads (whole warps) handles one (row,
 * group) pair at a time, thread x owning the V-wide column vectors x,
 * x + tx, ... of the group (V = 1, 2 or 4 when alignment allows). Sub-row s
 * (global index blockIdx.x * ty + threadIdx.y, s < S = nslots * G) owns
 * group g = s % G of rows slot, slot + nslots, ... where slot = s / G.
 * Group sums go through grms_subrow_sum: per-thread sums in column order, a
 * warp butterfly, then the sub-row's warps in warp order. It reads each
 * group twice (the second time from L1/L2).
 *
 * Determinism of dweight: on the general path, sub-row (slot, g) adds its
 * rows, in order, into columns [g*gs, (g+1)*gs) of partial row slot (nslots
 * x E fp32 scratch; each element owned by one thread, which zeroes it
 * first). The sub-row's running sums live in shared memory while it works
 * through its rows and go to the partial row once at the end, when they
 * fit. On the team path a thread keeps its columns' running sums in
 * registers over its rows, and a block adds its teams' sums in team order
 * into one partial row. colsum_finish_kernel then adds the partial rows in
 * index order. Every count involved depends only on the shapes. */
#include <type_traits>

#include "kernels/cuda/cuda_gated_rmsnorm.cuh"
#include "kernels/cuda/cuda_vector.cuh"

#define GRMS_THREADS 256
/* Backward: about this many threads in all (a constant, not the device's). */
#define GRMS_BWD_TARGET_THREADS (1 << 18)
/* Backward: the most shared memory a block's running dweight sums take
 * (the default limit; beyond it they stay in the partial rows). */
#define GRMS_BWD_SHARED_BYTES (48 << 10)

/* Sum of v over the calling thread's sub-row (threadIdx.y), returned to each
 * of its threads. blockDim.x is a multiple of 32; every thread of the block
 * must call it. */
static __device__ __forceinline__ float grms_subrow_sum(float v)
{
    __shared__ float shm[GRMS_THREADS / 32];
    const int nw = blockDim.x >> 5;
    const int warp = (threadIdx.y * blockDim.x + threadIdx.x) >> 5;
    v = warp_sum(v);
    __syncthreads(); /* an earlier call's readers are done with shm */
    if ((threadIdx.x & 31) == 0)
        shm[warp] = v;
    __syncthreads();
    float s = 0.0f;
    for (int i = 0; i < nw; i++)
        s += shm[threadIdx.y * nw + i];
    return s;
}

/* The calling thread's part of a (row r, group) sum over its V-wide column
 * vectors of the group's gs columns from col0: of u^2, or, when dout is
 * given, of w * dout * u (u = y * silu(z)), in column order. */
template <typename T, int V>
static __device__ __forceinline__ float grms_thread_sum(const T *dout, const T *y, const T *z, const float *w,
                                                        int64_t r, int64_t col0, int64_t gs, int64_t dors,
                                                        int64_t yrs, int64_t zrs)
{
    float acc = 0.0f;
    for (int64_t c = (int64_t)threadIdx.x * V; c < gs; c += (int64_t)blockDim.x * V) {
        float yv[V], zv[V], gv[V];
        vec_load<T, V>(yv, y + r * yrs + col0 + c);
        vec_load<T, V>(zv, z + r * zrs + col0 + c);
        if (dout)
            vec_load<T, V>(gv, dout + r * dors + col0 + c);
#pragma unroll
        for (int v = 0; v < V; v++) {
            const float u = yv[v] * (zv[v] * sigmoid_f(zv[v]));
            acc += dout ? w[col0 + c + v] * gv[v] * u : u * u;
        }
    }
    return acc;
}

/* Per (row r, group g): u = y * silu(z), rstd[r, g] = 1 / sqrt(ss / ncols +
 * eps), out = u * rstd * weight, with ss the group's sum of u^2 (ncols = gs)
 * or, when ss_in is given (the same for the whole grid), ss_in[r, g]. The
 * second pass reloads y and z (the group was just read, so from L1/L2) and
 * recomputes u bit for bit. General path: grid of sub-rows over all R * G
 * (row, group) pairs, block grms_block; at the benchmark shape the team
 * path runs instead. */
template <typename T, int V>
__global__ void __launch_bounds__(GRMS_THREADS, 4)
    grms_fwd_kernel(T *__restrict__ out, float *__restrict__ rstd, const T *__restrict__ y, const T *__restrict__ z,
                    const float *__restrict__ w, const float *__restrict__ ss_in, int64_t R, int G, int64_t gs,
                    int64_t nslots, int64_t ors, int64_t rsrs, int64_t yrs, int64_t zrs, int64_t ssrs, float ncols,
                    float eps)
{
    const int64_t s = (int64_t)blockIdx.x * blockDim.y + threadIdx.y;
    const bool active = s < nslots * G;
    const int g = (int)(s % G);
    const int64_t slot = s / G;
    const int64_t col0 = (int64_t)g * gs;
    for (int64_t r0 = 0; r0 < R; r0 += nslots) { /* the same trip count in the whole block */
        const int64_t r = r0 + slot;
        const bool on = active && r < R;
        float ss = 0.0f;
        if (ss_in) {
            if (on)
                ss = ss_in[r * ssrs + g];
        } else {
            if (on)
                ss = grms_thread_sum<T, V>(NULL, y, z, w, r, col0, gs, 0, yrs, zrs);
            ss = grms_subrow_sum(ss);
        }
        if (on) {
            const float rs = 1.0f / sqrtf(ss / ncols + eps);
            if (threadIdx.x == 0 && rstd)
                rstd[r * rsrs + g] = rs;
            for (int64_t c = (int64_t)threadIdx.x * V; c < gs; c += (int64_t)blockDim.x * V) {
                float yv[V], zv[V], o[V];
                vec_load<T, V>(yv, y + r * yrs + col0 + c);
                vec_load<T, V>(zv, z + r * zrs + col0 + c);
#pragma unroll
                for (int v = 0; v < V; v++) {
                    const float u = yv[v] * (zv[v] * sigmoid_f(zv[v]));
                    o[v] = u * rs * w[col0 + c + v];
                }
                vec_store<T, V>(out + r * ors + col0 + c, o);
            }
        }
    }
}

/* Per (row r, group g), with sg = sigmoid(z), u = y * z * sg, s = rstd[r, g],
 * m = the group's sum of w * dout * u (or wdu[r, g] when wdu is given, the
 * same for the whole grid) / ncols:
 *   du = s * (w * dout - u * s^2 * m)
 *   dy += du * z * sg;  dz += du * y * sg * (1 + z * (1 - sg))
 *   partial[slot, col] += dout * u * s
 * need_du says whether dy or dz is given (uniform, so the sum is skipped
 * by the whole block together). General path: grid of sub-rows over
 * nslots * G, block grms_block, about GRMS_BWD_TARGET_THREADS threads; at
 * the benchmark shape the team path runs instead. */
template <typename T, int V>
__global__ void __launch_bounds__(GRMS_THREADS, 4)
    grms_bwd_kernel(T *dy, T *dz, float *partial, const T *dout, const T *y, const T *z, const float *w,
                    const float *rstd, const float *wdu, int64_t R, int G, int64_t gs, int64_t nslots, int64_t dyrs,
                    int64_t dzrs, int64_t dors, int64_t yrs, int64_t zrs, int64_t rsrs, int64_t wdurs, float ncols,
                    bool shared_sums)
{
    extern __shared__ float sums_smem[]; /* blockDim.y * gs floats when shared_sums */
    const int64_t s = (int64_t)blockIdx.x * blockDim.y + threadIdx.y;
    const bool active = s < nslots * G;
    const int g = (int)(s % G);
    const int64_t slot = s / G;
    const int64_t col0 = (int64_t)g * gs;
    const int64_t E = (int64_t)G * gs;
    const bool need_du = dy || dz;
    float *out_part = partial && active ? partial + slot * E + col0 : NULL;
    float *part = out_part && shared_sums ? sums_smem + (int64_t)threadIdx.y * gs : out_part;
    if (part)
        for (int64_t c = (int64_t)threadIdx.x * V; c < gs; c += (int64_t)blockDim.x * V)
#pragma unroll
            for (int v = 0; v < V; v++)
                part[c + v] = 0.0f;

    for (int64_t r0 = 0; r0 < R; r0 += nslots) { /* the same trip count in the whole block */
        const int64_t r = r0 + slot;
        const bool on = active && r < R;
        const float rs = on ? rstd[r * rsrs + g] : 0.0f;
        float m = 0.0f;
        if (need_du && wdu) {
            m = on ? wdu[r * wdurs + g] / ncols : 0.0f;
        } else if (need_du) {
            const float acc = on ? grms_thread_sum<T, V>(dout, y, z, w, r, col0, gs, dors, yrs, zrs) : 0.0f;
            m = grms_subrow_sum(acc) / ncols;
        }
        if (!on)
            continue;
        for (int64_t c = (int64_t)threadIdx.x * V; c < gs; c += (int64_t)blockDim.x * V) {
            /* dy and dz are loaded with the inputs (not after the math), so
             * their adds do not wait for loads of their own. */
            float gv[V], yv[V], zv[V], ddy[V] = {}, ddz[V] = {};
            vec_load<T, V>(gv, dout + r * dors + col0 + c);
            vec_load<T, V>(yv, y + r * yrs + col0 + c);
            vec_load<T, V>(zv, z + r * zrs + col0 + c);
            if (dy)
                vec_load<T, V>(ddy, dy + r * dyrs + col0 + c);
            if (dz)
                vec_load<T, V>(ddz, dz + r * dzrs + col0 + c);
#pragma unroll
            for (int v = 0; v < V; v++) {
                const float sg = sigmoid_f(zv[v]);
                const float sz = zv[v] * sg; /* silu(z) */
                const float u = yv[v] * sz;
                const float du = rs * (w[col0 + c + v] * gv[v] - u * rs * rs * m);
                ddy[v] += du * sz;
                ddz[v] += du * yv[v] * sg * (1.0f + zv[v] * (1.0f - sg));
                if (part)
                    part[c + v] += gv[v] * u * rs;
            }
            if (dy)
                vec_store<T, V>(dy + r * dyrs + col0 + c, ddy);
            if (dz)
                vec_store<T, V>(dz + r * dzrs + col0 + c, ddz);
        }
    }
    if (part && part != out_part) /* each thread moves the sums it owns */
        for (int64_t c = (int64_t)threadIdx.x * V; c < gs; c += (int64_t)blockDim.x * V)
#pragma unroll
            for (int v = 0; v < V; v++)
                out_part[c + v] = part[c + v];
}

/* Per (row r, group g): sums[r, g] = the group's sum of u^2, or, when dout
 * is given (the same for the whole grid), of w * dout * u. General path:
 * grid and block as the forward's. */
template <typename T, int V>
__global__ void __launch_bounds__(GRMS_THREADS, 4)
    grms_sums_kernel(float *__restrict__ sums, const T *__restrict__ dout, const T *__restrict__ y,
                     const T *__restrict__ z, const float *__restrict__ w, int64_t R, int G, int64_t gs,
                     int64_t nslots, int64_t srs, int64_t dors, int64_t yrs, int64_t zrs)
{
    const int64_t s = (int64_t)blockIdx.x * blockDim.y + threadIdx.y;
    const bool active = s < nslots * G;
    const int g = (int)(s % G);
    const int64_t slot = s / G;
    const int64_t col0 = (int64_t)g * gs;
    for (int64_t r0 = 0; r0 < R; r0 += nslots) { /* the same trip count in the whole block */
        const int64_t r = r0 + slot;
        const bool on = active && r < R;
        float acc = on ? grms_thread_sum<T, V>(dout, y, z, w, r, col0, gs, dors, yrs, zrs) : 0.0f;
        acc = grms_subrow_sum(acc);
        if (on && threadIdx.x == 0)
            sums[r * srs + g] = acc;
    }
}

/* ------------------------------------------------------------------------ */
/* Host side. */

template <typename F> static void grms_dispatch_vec(int V, F f)
{
    switch (V) {
    case 4: f(std::integral_constant<int, 4>{}); break;
    case 2: f(std::integral_constant<int, 2>{}); break;
    default: f(std::integral_constant<int, 1>{}); break;
    }
}

/* Block shape for groups of gs columns read V at a time. */
static dim3 grms_block(int64_t gs, int V)
{
    int tx = row_threads((gs + V - 1) / V, GRMS_THREADS);
    return dim3((unsigned)tx, (unsigned)(GRMS_THREADS / tx));
}

static unsigned grms_grid(const char *op, int64_t subrows, dim3 block)
{
    int64_t n = (subrows + block.y - 1) / block.y;
    if (n > (int64_t)INT32_MAX)
        mt_fatal("%s: %lld row groups are too many for one launch", op, (long long)subrows);
    return (unsigned)n;
}

static void grms_check(const char *op, const mt_tensor *y, const mt_tensor *weight, int ngroups)
{
    char s[96];
    require_dtype(weight, MT_F32, op, "weight");
    int64_t E = mt_cols(y);
    if (ngroups < 1 || E % ngroups != 0)
        mt_fatal("%s: ngroups %d does not divide the last dim of y %s", op, ngroups, mt_shape_str(y, s, sizeof s));
    if (mt_numel(weight) != E)
        mt_fatal("%s: weight %s must have %lld elements", op, mt_shape_str(weight, s, sizeof s), (long long)E);
}

/* Fatal unless the group sums t (R, G) are f32 with G columns. */
static void grms_check_sums(const char *op, const char *what, const mt_tensor *t, const mt_tensor *y, int ngroups)
{
    char s[96];
    require_dtype(t, MT_F32, op, what);
    if (mt_rows(t) != mt_rows(y) || mt_cols(t) != ngroups)
        mt_fatal("%s: %s %s must be (%lld, %d)", op, what, mt_shape_str(t, s, sizeof s), (long long)mt_rows(y),
                 ngroups);
}

/* The launch of a kernel with one (row, group) per sub-row over y (R, E) in
 * G groups of gs columns read V at a time. */
typedef struct grms_shape {
    int64_t R, gs;
    int G, V;
    dim3 block;
    unsigned grid;
} grms_shape;

static grms_shape grms_shape_of(const char *op, const mt_tensor *y, int ngroups, int V)
{
    grms_shape s = {mt_rows(y), mt_cols(y) / ngroups, ngroups, V, grms_block(mt_cols(y) / ngroups, V), 0};
    s.grid = grms_grid(op, s.R * s.G, s.block);
    return s;
}

/* The forward, with the group sums of squares over ncols columns taken
 * from sumsq when given, else computed over the E/G local columns. */
static void grms_fwd(mt_backend *be, const char *op, mt_tensor *out, mt_tensor *rstd, const mt_tensor *y,
                     const mt_tensor *z, const mt_tensor *weight, const mt_tensor *sumsq, int ngroups, double ncols,
                     double eps)
{
    grms_check(op, y, weight, ngroups);
    if (rstd)
        require_dtype(rstd, MT_F32, op, "rstd");
    if (sumsq)
        grms_check_sums(op, "sumsq", sumsq, y, ngroups);
    if (mt_rows(y) == 0 || mt_cols(y) == 0)
        return;
    if (grms_fwd_team(be, op, out, rstd, y, z, weight, sumsq, ngroups, ncols, eps))
        return;
    const grms_shape s = grms_shape_of(op, y, ngroups, vec_pick_width(mt_cols(y) / ngroups, y, z, out));
    dispatch_float(y->dtype, op, [&](auto tag) {
        using T = typename decltype(tag)::type;
        grms_dispatch_vec(s.V, [&](auto vc) {
            constexpr int VV = decltype(vc)::value;
            grms_fwd_kernel<T, VV><<<s.grid, s.block, 0, cuda_stream(be)>>>(
                (T *)out->data, rstd ? (float *)rstd->data : NULL, (const T *)y->data, (const T *)z->data,
                (const float *)weight->data, sumsq ? (const float *)sumsq->data : NULL, s.R, s.G, s.gs, s.R,
                mt_row_stride(out), rstd ? mt_row_stride(rstd) : 0, mt_row_stride(y), mt_row_stride(z),
                sumsq ? mt_row_stride(sumsq) : 0, (float)ncols, (float)eps);
            LAUNCH_CHECK(op);
        });
    });
}

void cuda_gated_rmsnorm_fwd(mt_backend *be, mt_tensor *out, mt_tensor *rstd, const mt_tensor *y, const mt_tensor *z,
                            const mt_tensor *weight, int ngroups, double eps)
{
    int64_t gs = ngroups > 0 ? mt_cols(y) / ngroups : 0;
    grms_fwd(be, "gated_rmsnorm_fwd", out, rstd, y, z, weight, NULL, ngroups, (double)gs, eps);
}

void cuda_gated_rmsnorm_fwd_sums(mt_backend *be, mt_tensor *out, mt_tensor *rstd, const mt_tensor *y,
                                 const mt_tensor *z, const mt_tensor *weight, const mt_tensor *sumsq, int ngroups,
                                 int64_t group_cols, double eps)
{
    grms_fwd(be, "gated_rmsnorm_fwd_sums", out, rstd, y, z, weight, sumsq, ngroups, (double)group_cols, eps);
}

void cuda_gated_rmsnorm_sums(mt_backend *be, mt_tensor *sums, const mt_tensor *y, const mt_tensor *z,
                             const mt_tensor *weight, const mt_tensor *dout, int ngroups)
{
    const char *op = "gated_rmsnorm_sums";
    grms_check(op, y, weight, ngroups);
    grms_check_sums(op, "sums", sums, y, ngroups);
    if (mt_rows(y) == 0 || mt_cols(y) == 0)
        return;
    if (grms_sums_team(be, op, sums, y, z, weight, dout, ngroups))
        return;
    const grms_shape s = grms_shape_of(op, y, ngroups, vec_pick_width(mt_cols(y) / ngroups, y, z, dout));
    dispatch_float(y->dtype, op, [&](auto tag) {
        using T = typename decltype(tag)::type;
        grms_dispatch_vec(s.V, [&](auto vc) {
            constexpr int VV = decltype(vc)::value;
            grms_sums_kernel<T, VV><<<s.grid, s.block, 0, cuda_stream(be)>>>(
                (float *)sums->data, dout ? (const T *)dout->data : NULL, (const T *)y->data, (const T *)z->data,
                (const float *)weight->data, s.R, s.G, s.gs, s.R, mt_row_stride(sums), dout ? mt_row_stride(dout) : 0,
                mt_row_stride(y), mt_row_stride(z));
            LAUNCH_CHECK(op);
        });
    });
}

/* The general path's backward launch; returns its partial dweight rows. */
static int64_t grms_bwd_general(mt_backend *be, const char *op, mt_arena *scratch, float **partial, mt_tensor *dy,
                                mt_tensor *dz, bool need_dweight, const mt_tensor *dout, const mt_tensor *y,
                                const mt_tensor *z, const mt_tensor *weight, const mt_tensor *rstd,
                                const mt_tensor *wdu, int ngroups, double ncols)
{
    int64_t R = mt_rows(y), E = mt_cols(y);
    int G = ngroups;
    int64_t gs = E / G;
    int V = vec_pick_width(gs, y, z, dout, dy, dz);
    dim3 block = grms_block(gs, V);
    /* Slots: about GRMS_BWD_TARGET_THREADS threads in all, at most R. */
    int64_t subrows_target = GRMS_BWD_TARGET_THREADS / (int64_t)block.x;
    int64_t nslots = (subrows_target + G - 1) / G;
    if (nslots > R)
        nslots = R;
    if (nslots < 1)
        nslots = 1;
    unsigned grid = grms_grid(op, nslots * G, block);
    *partial = need_dweight ? (float *)mt_arena_alloc(scratch, (size_t)(nslots * E) * sizeof(float)) : NULL;
    const size_t smem = need_dweight ? (size_t)block.y * (size_t)gs * sizeof(float) : 0;
    const bool shared_sums = need_dweight && smem <= GRMS_BWD_SHARED_BYTES;
    dispatch_float(y->dtype, op, [&](auto tag) {
        using T = typename decltype(tag)::type;
        grms_dispatch_vec(V, [&](auto vc) {
            constexpr int VV = decltype(vc)::value;
            grms_bwd_kernel<T, VV><<<grid, block, shared_sums ? smem : 0, cuda_stream(be)>>>(
                dy ? (T *)dy->data : NULL, dz ? (T *)dz->data : NULL, *partial, (const T *)dout->data,
                (const T *)y->data, (const T *)z->data, (const float *)weight->data, (const float *)rstd->data,
                wdu ? (const float *)wdu->data : NULL, R, G, gs, nslots, dy ? mt_row_stride(dy) : 0,
                dz ? mt_row_stride(dz) : 0, mt_row_stride(dout), mt_row_stride(y), mt_row_stride(z),
                mt_row_stride(rstd), wdu ? mt_row_stride(wdu) : 0, (float)ncols, shared_sums);
            LAUNCH_CHECK(op);
        });
    });
    return nslots;
}

/* The backward, with the group sums of w * dout * u over ncols columns
 * taken from wdu when given, else computed over the E/G local columns. */
static void grms_bwd(mt_backend *be, const char *op, mt_arena *scratch, mt_tensor *dy, mt_tensor *dz,
                     mt_tensor *dweight, const mt_tensor *dout, const mt_tensor *y, const mt_tensor *z,
                     const mt_tensor *weight, const mt_tensor *rstd, const mt_tensor *wdu, int ngroups, double ncols)
{
    grms_check(op, y, weight, ngroups);
    require_dtype(rstd, MT_F32, op, "rstd");
    if (dweight)
        require_dtype(dweight, MT_F32, op, "dweight");
    if (wdu)
        grms_check_sums(op, "wdu", wdu, y, ngroups);
    int64_t R = mt_rows(y), E = mt_cols(y);
    if (!dout || R == 0 || E == 0)
        return; /* every gradient += 0 */
    if (!dy && !dz && !dweight)
        return;
    float *partial = NULL;
    int64_t nparts = grms_bwd_team(be, op, scratch, &partial, dy, dz, dweight != NULL, dout, y, z, weight, rstd,
                                   wdu, ngroups, ncols);
    if (nparts == 0)
        nparts = grms_bwd_general(be, op, scratch, &partial, dy, dz, dweight != NULL, dout, y, z, weight, rstd,
                                  wdu, ngroups, ncols);
    if (dweight) {
        colsum_finish<float>((float *)dweight->data, partial, (int)nparts, E, cuda_stream(be));
        LAUNCH_CHECK(op);
    }
}

void cuda_gated_rmsnorm_bwd(mt_backend *be, mt_arena *scratch, mt_tensor *dy, mt_tensor *dz, mt_tensor *dweight,
                            const mt_tensor *dout, const mt_tensor *y, const mt_tensor *z, const mt_tensor *weight,
                            const mt_tensor *rstd, int ngroups)
{
    int64_t gs = ngroups > 0 ? mt_cols(y) / ngroups : 0;
    grms_bwd(be, "gated_rmsnorm_bwd", scratch, dy, dz, dweight, dout, y, z, weight, rstd, NULL, ngroups, (double)gs);
}

void cuda_gated_rmsnorm_bwd_sums(mt_backend *be, mt_arena *scratch, mt_tensor *dy, mt_tensor *dz,
                                 mt_tensor *dweight, const mt_tensor *dout, const mt_tensor *y, const mt_tensor *z,
                                 const mt_tensor *weight, const mt_tensor *rstd, const mt_tensor *wdu, int ngroups,
                                 int64_t group_cols)
{
    grms_bwd(be, "gated_rmsnorm_bwd_sums", scratch, dy, dz, dweight, dout, y, z, weight, rstd, wdu, ngroups,
             (double)group_cols);
}
