/* The selective scan (Mamba-1) on CUDA, forward and backward: the sequential
 * recurrence of backend.h run by one thread per (b, d) channel, walking time
 * in order with the channel's N states in registers. It is the first, plain
 * version (correct before fast): fp32 throughout, no tensor cores, no
 * parallelism along time.
 *
 * Layout of the work: block (x, b) holds up to SCAN_THREADS channels of one
 * group g of batch row b, x = g * cblocks + cb, cb the block's slice of the
 * group's P = D/G channels. Since a block never straddles groups, every
 * thread of it reads the same Bm_t, Cm_t row slice (a broadcast load), and
 * the block's sum over its channels of dBm, dCm belongs to one group.
 * Threads past the end of the group (when P is not a multiple of the block)
 * run a copy of the group's last channel so that they take part in the
 * block's reductions and barriers; they contribute zeros and write nothing
 * but their own scratch slot.
 *
 * The backward recomputes every state (the forward keeps nothing): a first
 * pass stores the state entering each chunk of SCAN_CHUNK steps, then the
 * chunks are walked in reverse; each reruns its steps from its entry state
 * into a (SCAN_CHUNK, N) buffer per thread and runs the adjoint recurrence
 * back through them. Scratch is O(B * D * N * (L / SCAN_CHUNK + SCAN_CHUNK)).
 *
 * Determinism: nothing uses float atomics. du, ddelta, dz have one owner
 * thread per element. dBm, dCm: per step, a warp butterfly over the warp's
 * channels, then the warps in order through shared memory, give one partial
 * per (channel block, b, t, g, n); scan_bc_finish_kernel adds the group's
 * blocks in order. dA_log, dD_skip, ddelta_bias: each thread sums its channel
 * over time, and colsum_finish_kernel adds the batch rows in order. */
#include <type_traits>

#include "kernels/cuda/cuda_common.cuh"

#define SCAN_THREADS 128 /* channels per block at most */
#define SCAN_CHUNK 64    /* time steps whose states the backward holds at once */
#define SCAN_MAX_STATE 64

/* The inputs, as every kernel reads them. Rows of (B, L, .) tensors are
 * b * L + t, each tensor with its own row stride. */
template <typename T> struct ScanArgs {
    const T *u, *delta, *Bm, *Cm, *z;              /* z may be NULL */
    const float *A_log, *D_skip, *delta_bias;      /* (D, N), (D), (D); the last two may be NULL */
    int64_t urs, drs, brs, crs, zrs;               /* row strides */
    int64_t batch, L, D, G, N, P, cblocks;         /* P = D / G channels per group, cblocks blocks per group */
    bool delta_softplus;
};

/* What the backward reads and writes, and its scratch. A gradient or partial
 * pointer is NULL when that gradient is not needed; dy and the two state
 * buffers never are. */
template <typename T> struct ScanGrads {
    T *du, *ddelta, *dz;
    const T *dy;
    int64_t du_rs, ddelta_rs, dz_rs, dy_rs;
    float *dB_part, *dC_part;   /* (cblocks, B * L, G * N): one per channel block */
    float *dA_part;             /* (B, D, N), already times dA/dA_log */
    float *dD_part, *dbias_part; /* (B, D) */
    float *chunk_start;         /* (nchunks, N, slots): the state entering each chunk */
    float *chunk_states;        /* (SCAN_CHUNK, N, slots): h_t of the chunk being walked back */
    int64_t slots;              /* threads in the grid: one scratch column each */
};

/* One channel's inputs at one time step. */
struct ScanStep {
    float u, dlt;      /* the input and the step dlt_t */
    float ddlt_ddelta; /* d dlt_t / d delta_t: sigmoid(delta + bias) with softplus, else 1 */
};

static __device__ __forceinline__ float scan_sigmoid(float x)
{
    return 1.0f / (1.0f + expf(-x));
}

/* The block's group g and the thread's channel d (a copy of the group's last
 * channel when the thread is past the group's end: active is then false). */
template <typename T>
static __device__ __forceinline__ void scan_channel(const ScanArgs<T> &a, int64_t &g, int64_t &d, bool &active)
{
    g = blockIdx.x / a.cblocks;
    int64_t in_group = (blockIdx.x % a.cblocks) * (int64_t)blockDim.x + threadIdx.x;
    active = in_group < a.P;
    d = g * a.P + (active ? in_group : a.P - 1);
}

/* A[n] = -exp(A_log[d, n]); 0 in the padding n >= N. */
template <typename T, int NMAX>
static __device__ __forceinline__ void scan_load_A(const ScanArgs<T> &a, int64_t d, float (&A)[NMAX])
{
#pragma unroll
    for (int n = 0; n < NMAX; n++)
        A[n] = n < a.N ? -expf(a.A_log[d * a.N + n]) : 0.0f;
}

/* Step r (= b * L + t) of channel d, with bias = delta_bias[d] (or 0). */
template <typename T>
static __device__ __forceinline__ ScanStep scan_load_step(const ScanArgs<T> &a, int64_t r, int64_t d, float bias)
{
    ScanStep s;
    float v = load_f<T>(a.delta, r * a.drs + d) + bias;
    s.dlt = a.delta_softplus ? fmaxf(v, 0.0f) + log1pf(expf(-fabsf(v))) : v;
    s.ddlt_ddelta = a.delta_softplus ? scan_sigmoid(v) : 1.0f;
    s.u = load_f<T>(a.u, r * a.urs + d);
    return s;
}

/* h = exp(dlt A) h + dlt Bm_t u at step r of channel d in group g; returns the step. */
template <typename T, int NMAX>
static __device__ __forceinline__ ScanStep scan_advance(const ScanArgs<T> &a, int64_t r, int64_t d, int64_t g,
                                                        float bias, const float (&A)[NMAX], float (&h)[NMAX])
{
    ScanStep s = scan_load_step(a, r, d, bias);
    const T *Brow = a.Bm + r * a.brs + g * a.N;
#pragma unroll
    for (int n = 0; n < NMAX; n++)
        if (n < a.N)
            h[n] = expf(s.dlt * A[n]) * h[n] + s.dlt * load_f<T>(Brow, n) * s.u;
    return s;
}

/* y (B, L, D) in T, row stride yrs: per channel, h_t = exp(dlt_t A) h_{t-1} +
 * dlt_t Bm_t u_t from h_{-1} = 0, y_t = (Cm_t . h_t + D_skip u_t) * silu(z_t).
 * Grid (G * cblocks, B), block up to SCAN_THREADS channels; N <= NMAX. */
template <typename T, int NMAX>
__global__ void __launch_bounds__(SCAN_THREADS) selective_scan_fwd_kernel(T *y, int64_t yrs, ScanArgs<T> a)
{
    int64_t g, d;
    bool active;
    scan_channel(a, g, d, active);
    if (!active)
        return; /* no barriers here: idle threads may leave */
    const int64_t b = blockIdx.y;
    float A[NMAX], h[NMAX];
    scan_load_A(a, d, A);
#pragma unroll
    for (int n = 0; n < NMAX; n++)
        h[n] = 0.0f;
    const float D_skip = a.D_skip ? a.D_skip[d] : 0.0f, bias = a.delta_bias ? a.delta_bias[d] : 0.0f;
    for (int64_t t = 0; t < a.L; t++) {
        const int64_t r = b * a.L + t;
        ScanStep s = scan_advance(a, r, d, g, bias, A, h);
        const T *Crow = a.Cm + r * a.crs + g * a.N;
        float out = D_skip * s.u;
#pragma unroll
        for (int n = 0; n < NMAX; n++)
            if (n < a.N)
                out += load_f<T>(Crow, n) * h[n];
        if (a.z) {
            float zv = load_f<T>(a.z, r * a.zrs + d);
            out *= zv * scan_sigmoid(zv);
        }
        store_f<T>(y, r * yrs + d, out);
    }
}

/* The backward, per channel, with gate = dy_t * silu(z_t) (dy_t without z)
 * and lambda = dLoss/dh_t, walking t = L-1 .. 0 (as the CPU reference):
 *   dz_t += dy_t (Cm_t . h_t + D_skip u_t) silu'(z_t);  lambda += gate Cm_t
 *   dCm_t[n] += gate h_t[n];  dBm_t[n] += dlt lambda[n] u_t  (summed over the group)
 *   du_t += D_skip gate + dlt sum_n lambda[n] Bm_t[n]
 *   ddlt = sum_n lambda[n] (Bm_t[n] u_t + A[n] decay[n] h_{t-1}[n]),  decay = exp(dlt A)
 *   ddelta_t += ddlt ddlt_ddelta;  dA[n] += lambda[n] dlt decay[n] h_{t-1}[n]
 *   lambda *= decay
 * with dD_skip, ddelta_bias and dA_log (dA times A) summed over time into
 * per-(b, d) partials. Grid and block as the forward; N <= NMAX. */
template <typename T, int NMAX>
__global__ void __launch_bounds__(SCAN_THREADS) selective_scan_bwd_kernel(ScanArgs<T> a, ScanGrads<T> gr)
{
    __shared__ float warp_sums[2][NMAX][SCAN_THREADS / 32]; /* [dB or dC][n][warp] */
    int64_t g, d;
    bool active;
    scan_channel(a, g, d, active);
    const int64_t b = blockIdx.y, N = a.N, L = a.L, S = gr.slots;
    const int64_t slot = ((int64_t)blockIdx.y * gridDim.x + blockIdx.x) * blockDim.x + threadIdx.x;
    const int64_t nchunks = (L + SCAN_CHUNK - 1) / SCAN_CHUNK, rows = a.batch * L, GN = a.G * N;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    const bool reduce_bc = gr.dB_part || gr.dC_part;
    float A[NMAX], h[NMAX];
    scan_load_A(a, d, A);
    const float D_skip = a.D_skip ? a.D_skip[d] : 0.0f, bias = a.delta_bias ? a.delta_bias[d] : 0.0f;

    /* Pass 1: the state entering each chunk, h_{c * SCAN_CHUNK - 1}. */
#pragma unroll
    for (int n = 0; n < NMAX; n++)
        h[n] = 0.0f;
    for (int64_t c = 0; c < nchunks; c++) {
        float *start = gr.chunk_start + c * N * S + slot;
#pragma unroll
        for (int n = 0; n < NMAX; n++)
            if (n < N)
                start[n * S] = h[n];
        const int64_t t_end = min(L, (c + 1) * SCAN_CHUNK);
        for (int64_t t = c * SCAN_CHUNK; t < t_end; t++)
            scan_advance(a, b * L + t, d, g, bias, A, h);
    }

    /* Pass 2: the chunks in reverse, each recomputed then walked back. */
    float lambda[NMAX], dA[NMAX], dD_sum = 0.0f, dbias_sum = 0.0f;
#pragma unroll
    for (int n = 0; n < NMAX; n++)
        lambda[n] = dA[n] = 0.0f;
    for (int64_t c = nchunks - 1; c >= 0; c--) {
        const int64_t t0 = c * SCAN_CHUNK, len = min((int64_t)SCAN_CHUNK, L - t0);
        const float *start = gr.chunk_start + c * N * S + slot;
#pragma unroll
        for (int n = 0; n < NMAX; n++)
            h[n] = n < N ? start[n * S] : 0.0f;
        for (int64_t s = 0; s < len; s++) {
            scan_advance(a, b * L + t0 + s, d, g, bias, A, h);
#pragma unroll
            for (int n = 0; n < NMAX; n++)
                if (n < N)
                    gr.chunk_states[(s * N + n) * S + slot] = h[n];
        }

        for (int64_t s = len - 1; s >= 0; s--) {
            const int64_t r = b * L + t0 + s;
            const ScanStep st = scan_load_step(a, r, d, bias);
            const float *h_t = gr.chunk_states + s * N * S + slot;
            const float *prev = s > 0 ? gr.chunk_states + (s - 1) * N * S + slot : start; /* h_{t-1} */
            const T *Brow = a.Bm + r * a.brs + g * N, *Crow = a.Cm + r * a.crs + g * N;

            const float dy = load_f<T>(gr.dy, r * gr.dy_rs + d);
            float gate = dy;
            if (a.z) {
                const float zv = load_f<T>(a.z, r * a.zrs + d), sz = scan_sigmoid(zv);
                gate = dy * zv * sz;
                if (gr.dz && active) {
                    float out = D_skip * st.u;
                    for (int n = 0; n < N; n++)
                        out += load_f<T>(Crow, n) * h_t[n * S];
                    accum_f<T>(gr.dz, r * gr.dz_rs + d, dy * out * sz * (1.0f + zv * (1.0f - sz)));
                }
            }
            dD_sum += gate * st.u;
            float du = D_skip * gate, ddlt = 0.0f;
#pragma unroll
            for (int n = 0; n < NMAX; n++) {
                if (n >= N)
                    continue;
                const float Bn = load_f<T>(Brow, n), Cn = load_f<T>(Crow, n);
                const float pn = prev[n * S], decay = expf(st.dlt * A[n]);
                lambda[n] += gate * Cn;
                du += st.dlt * lambda[n] * Bn;
                ddlt += lambda[n] * (Bn * st.u + A[n] * decay * pn);
                dA[n] += lambda[n] * st.dlt * decay * pn;
                if (reduce_bc) {
                    /* Idle threads add zeros (a select: their copy of a channel must not count). */
                    const float sb = warp_sum(active ? st.dlt * lambda[n] * st.u : 0.0f);
                    const float sc = warp_sum(active ? gate * h_t[n * S] : 0.0f);
                    if (lane == 0) {
                        warp_sums[0][n][warp] = sb;
                        warp_sums[1][n][warp] = sc;
                    }
                }
                lambda[n] *= decay; /* through h_t = decay h_{t-1} + ... */
            }
            const float ddelta = ddlt * st.ddlt_ddelta;
            dbias_sum += ddelta;
            if (active && gr.du)
                accum_f<T>(gr.du, r * gr.du_rs + d, du);
            if (active && gr.ddelta)
                accum_f<T>(gr.ddelta, r * gr.ddelta_rs + d, ddelta);

            if (reduce_bc) {
                __syncthreads();
                for (int i = threadIdx.x; i < 2 * N; i += blockDim.x) {
                    const int which = i / (int)N, n = i % (int)N;
                    float sum = 0.0f;
                    for (int w = 0; w < nwarps; w++)
                        sum += warp_sums[which][n][w];
                    float *part = which ? gr.dC_part : gr.dB_part;
                    if (part)
                        part[((blockIdx.x % a.cblocks) * rows + r) * GN + g * N + n] = sum;
                }
                __syncthreads(); /* the readers are done before the next step writes */
            }
        }
    }

    if (!active)
        return;
    if (gr.dA_part) {
#pragma unroll
        for (int n = 0; n < NMAX; n++)
            if (n < N)
                gr.dA_part[(b * a.D + d) * N + n] = dA[n] * A[n]; /* dA/dA_log = -exp(A_log) = A */
    }
    if (gr.dD_part)
        gr.dD_part[b * a.D + d] = dD_sum;
    if (gr.dbias_part)
        gr.dbias_part[b * a.D + d] = dbias_sum;
}

/* out[r, c] += sum over cb = 0..cblocks-1, in that order, of part[cb, r, c].
 * part (cblocks, rows, cols) f32; out (rows, cols) in T, row stride ors.
 * Grid-stride over rows * cols. */
template <typename T>
__global__ void scan_bc_finish_kernel(T *out, int64_t ors, const float *part, int64_t cblocks, int64_t rows,
                                      int64_t cols)
{
    const int64_t n = rows * cols;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t r = i / cols, c = i - r * cols;
        float sum = 0.0f;
        for (int64_t cb = 0; cb < cblocks; cb++)
            sum += part[cb * n + i];
        accum_f<T>(out, r * ors + c, sum);
    }
}

/* ------------------------------------------------------------------------ */
/* Host side. */

/* f(std::integral_constant<int, NMAX>) with NMAX the smallest of 16, 32, 64
 * that holds N. */
template <typename F> static void scan_dispatch_state(int64_t N, const char *op, F f)
{
    if (N <= 16)
        f(std::integral_constant<int, 16>{});
    else if (N <= 32)
        f(std::integral_constant<int, 32>{});
    else if (N <= SCAN_MAX_STATE)
        f(std::integral_constant<int, SCAN_MAX_STATE>{});
    else
        mt_fatal("%s: d_state %lld is not supported on CUDA (at most %d)", op, (long long)N, SCAN_MAX_STATE);
}

/* Checks the f32 parameters and fills the kernel arguments and launch shape. */
template <typename T>
static ScanArgs<T> scan_setup(const char *op, dim3 &grid, int &threads, const mt_tensor *u, const mt_tensor *delta,
                              const mt_tensor *A_log, const mt_tensor *Bm, const mt_tensor *Cm,
                              const mt_tensor *D_skip, const mt_tensor *z, const mt_tensor *delta_bias, int ngroups,
                              bool delta_softplus)
{
    require_dtype(A_log, MT_F32, op, "A_log");
    if (D_skip)
        require_dtype(D_skip, MT_F32, op, "D_skip");
    if (delta_bias)
        require_dtype(delta_bias, MT_F32, op, "delta_bias");
    ScanArgs<T> a;
    a.u = (const T *)u->data;
    a.delta = (const T *)delta->data;
    a.Bm = (const T *)Bm->data;
    a.Cm = (const T *)Cm->data;
    a.z = z ? (const T *)z->data : NULL;
    a.A_log = (const float *)A_log->data;
    a.D_skip = D_skip ? (const float *)D_skip->data : NULL;
    a.delta_bias = delta_bias ? (const float *)delta_bias->data : NULL;
    a.urs = mt_row_stride(u);
    a.drs = mt_row_stride(delta);
    a.brs = mt_row_stride(Bm);
    a.crs = mt_row_stride(Cm);
    a.zrs = z ? mt_row_stride(z) : 0;
    a.batch = u->shape[0];
    a.L = u->shape[1];
    a.D = u->shape[2];
    a.G = ngroups;
    a.N = mt_cols(Bm) / ngroups;
    a.P = a.D / ngroups;
    a.delta_softplus = delta_softplus;
    threads = row_threads(a.P, SCAN_THREADS);
    a.cblocks = (a.P + threads - 1) / threads;
    grid = dim3((unsigned)(ngroups * a.cblocks), (unsigned)a.batch);
    if (a.batch > 65535)
        mt_fatal("%s: batch %lld is too large for the grid (at most 65535)", op, (long long)a.batch);
    return a;
}

void cuda_selective_scan_fwd(mt_backend *be, mt_arena *scratch, mt_tensor *y, const mt_tensor *u,
                             const mt_tensor *delta, const mt_tensor *A_log, const mt_tensor *Bm, const mt_tensor *Cm,
                             const mt_tensor *D_skip, const mt_tensor *z, const mt_tensor *delta_bias, int ngroups,
                             bool delta_softplus)
{
    (void)scratch; /* the forward keeps nothing: the backward recomputes the states */
    const char *op = "selective_scan_fwd";
    if (mt_numel(u) == 0)
        return;
    dispatch_float(u->dtype, op, [&](auto tag) {
        using T = typename decltype(tag)::type;
        dim3 grid;
        int threads;
        ScanArgs<T> a = scan_setup<T>(op, grid, threads, u, delta, A_log, Bm, Cm, D_skip, z, delta_bias, ngroups,
                                      delta_softplus);
        scan_dispatch_state(a.N, op, [&](auto nc) {
            constexpr int NMAX = decltype(nc)::value;
            selective_scan_fwd_kernel<T, NMAX>
                <<<grid, threads, 0, cuda_stream(be)>>>((T *)y->data, mt_row_stride(y), a);
            LAUNCH_CHECK(op);
        });
    });
}

void cuda_selective_scan_bwd(mt_backend *be, mt_arena *scratch, mt_tensor *du, mt_tensor *ddelta,
                             mt_tensor *dA_log, mt_tensor *dBm, mt_tensor *dCm, mt_tensor *dD_skip, mt_tensor *dz,
                             mt_tensor *ddelta_bias, const mt_tensor *dy, const mt_tensor *u,
                             const mt_tensor *delta, const mt_tensor *A_log, const mt_tensor *Bm,
                             const mt_tensor *Cm, const mt_tensor *D_skip, const mt_tensor *z,
                             const mt_tensor *delta_bias, int ngroups, bool delta_softplus)
{
    const char *op = "selective_scan_bwd";
    if (dA_log)
        require_dtype(dA_log, MT_F32, op, "dA_log");
    if (dD_skip)
        require_dtype(dD_skip, MT_F32, op, "dD_skip");
    if (ddelta_bias)
        require_dtype(ddelta_bias, MT_F32, op, "ddelta_bias");
    if (!z)
        dz = NULL;
    if (!dy || mt_numel(u) == 0)
        return; /* every gradient += 0 */
    if (!du && !ddelta && !dA_log && !dBm && !dCm && !dD_skip && !dz && !ddelta_bias)
        return;
    cudaStream_t stream = cuda_stream(be);
    dispatch_float(u->dtype, op, [&](auto tag) {
        using T = typename decltype(tag)::type;
        dim3 grid;
        int threads;
        ScanArgs<T> a = scan_setup<T>(op, grid, threads, u, delta, A_log, Bm, Cm, D_skip, z, delta_bias, ngroups,
                                      delta_softplus);
        const int64_t rows = a.batch * a.L, GN = mt_cols(Bm), nchunks = (a.L + SCAN_CHUNK - 1) / SCAN_CHUNK;
        const int64_t chunk_len = a.L < SCAN_CHUNK ? a.L : SCAN_CHUNK;
        ScanGrads<T> gr;
        gr.du = du ? (T *)du->data : NULL;
        gr.ddelta = ddelta ? (T *)ddelta->data : NULL;
        gr.dz = dz ? (T *)dz->data : NULL;
        gr.dy = (const T *)dy->data;
        gr.du_rs = du ? mt_row_stride(du) : 0;
        gr.ddelta_rs = ddelta ? mt_row_stride(ddelta) : 0;
        gr.dz_rs = dz ? mt_row_stride(dz) : 0;
        gr.dy_rs = mt_row_stride(dy);
        gr.slots = (int64_t)grid.x * grid.y * threads;
        gr.chunk_start = (float *)mt_arena_alloc(scratch, (size_t)(nchunks * a.N * gr.slots) * sizeof(float));
        gr.chunk_states = (float *)mt_arena_alloc(scratch, (size_t)(chunk_len * a.N * gr.slots) * sizeof(float));
        const size_t bc_bytes = (size_t)(a.cblocks * rows * GN) * sizeof(float);
        gr.dB_part = dBm ? (float *)mt_arena_alloc(scratch, bc_bytes) : NULL;
        gr.dC_part = dCm ? (float *)mt_arena_alloc(scratch, bc_bytes) : NULL;
        const int64_t BD = a.batch * a.D;
        gr.dA_part = dA_log ? (float *)mt_arena_alloc(scratch, (size_t)(BD * a.N) * sizeof(float)) : NULL;
        gr.dD_part = dD_skip ? (float *)mt_arena_alloc(scratch, (size_t)BD * sizeof(float)) : NULL;
        gr.dbias_part = ddelta_bias ? (float *)mt_arena_alloc(scratch, (size_t)BD * sizeof(float)) : NULL;

        scan_dispatch_state(a.N, op, [&](auto nc) {
            constexpr int NMAX = decltype(nc)::value;
            selective_scan_bwd_kernel<T, NMAX><<<grid, threads, 0, stream>>>(a, gr);
            LAUNCH_CHECK(op);
        });
        if (dBm) {
            scan_bc_finish_kernel<T><<<grid_for(rows * GN, MT_CUDA_THREADS), MT_CUDA_THREADS, 0, stream>>>(
                (T *)dBm->data, mt_row_stride(dBm), gr.dB_part, a.cblocks, rows, GN);
            LAUNCH_CHECK("selective_scan_bwd (dBm finish)");
        }
        if (dCm) {
            scan_bc_finish_kernel<T><<<grid_for(rows * GN, MT_CUDA_THREADS), MT_CUDA_THREADS, 0, stream>>>(
                (T *)dCm->data, mt_row_stride(dCm), gr.dC_part, a.cblocks, rows, GN);
            LAUNCH_CHECK("selective_scan_bwd (dCm finish)");
        }
        /* (B, D, N) and (B, D) partials: sum over b in order. */
        const float *parts[3] = {gr.dA_part, gr.dD_part, gr.dbias_part};
        mt_tensor *outs[3] = {dA_log, dD_skip, ddelta_bias};
        const int64_t cols[3] = {a.D * a.N, a.D, a.D};
        for (int i = 0; i < 3; i++) {
            if (!outs[i])
                continue;
            colsum_finish_kernel<float><<<grid_for(cols[i], MT_CUDA_THREADS), MT_CUDA_THREADS, 0, stream>>>(
                (float *)outs[i]->data, parts[i], (int)a.batch, cols[i]);
            LAUNCH_CHECK("selective_scan_bwd (parameter finish)");
        }
    });
}
