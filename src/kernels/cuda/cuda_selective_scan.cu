/* The selective scan (Mamba-1) on CUDA, forward and backward: the recurrence
 * of backend.h, parallel along time as well as over channels.
 *
 * Layout of the work: block (x, b) owns SCAN_CT channels of one group g of
 * batch row b (x = g * cblocks + cb) and walks time in tiles of SCAN_TILE
 * steps. Its SCAN_SEGS warps split a tile into segments of SCAN_K steps:
 * thread (c, s) = (lane, warp) holds channel c's steps of segment s in
 * registers. Lanes past the end of the group run a copy of its last channel
 * so that they take part in barriers and shuffles; they add zeros to every
 * sum and write nothing.
 *
 * Per state index n (a loop: nothing is sized by N in registers), with
 * decay_t = exp(dlt_t A[n]) and the input term dlt_t Bm_t[n] u_t, the
 * recurrence h_t = decay_t h_{t-1} + dlt_t Bm_t[n] u_t is linear, so each
 * segment is summarised by (product of its decays, its end state from zero);
 * the warps of a tile combine those summaries in segment order through
 * shared memory, starting from the state carried in from the previous tile.
 * The backward runs the adjoint lambda_t = gate_t Cm_t[n] + decay_{t+1}
 * lambda_{t+1} the same way, tiles in reverse, with summaries
 * (product of decays, decay_0 times the segment's first lambda from zero).
 * One exp per (t, n) per pass.
 *
 * When a backward will run, the forward also stores the state entering each
 * tile, (B, tiles, N, D) f32, i.e. O(B D N L / SCAN_TILE) memory (the op's
 * checkpoint), and the backward walks the tiles in reverse from those states.
 *
 * Determinism: nothing uses float atomics. du, ddelta, dz have one owner
 * thread per element. dBm, dCm: a fixed shuffle tree sums the block's
 * channels per (t, n) into one partial per channel block, and
 * scan_bc_finish_kernel adds the group's blocks in order. dA_log, dD_skip,
 * ddelta_bias: each thread sums its slots over time in shared memory, the
 * block adds its segments in order, and colsum_finish_kernel adds the batch
 * rows in order. */
#include "kernels/cuda/cuda_common.cuh"

#define SCAN_CT 32                      /* channels per block: one warp's lanes */
#define SCAN_SEGS 8                     /* warps per block, each a segment of a tile */
#define SCAN_K 8                        /* steps per segment, held in registers */
#define SCAN_TILE (SCAN_SEGS * SCAN_K)  /* steps per tile */
#define SCAN_THREADS (SCAN_CT * SCAN_SEGS)
#define SCAN_MAX_STATE 64

static_assert(SCAN_CT == 32 && SCAN_K == 8, "scan_reduce8 sums 8 values over the 32 lanes");

/* The inputs, as every kernel reads them. Rows of (B, L, .) tensors are
 * b * L + t, each tensor with its own row stride. */
template <typename T> struct ScanArgs {
    const T *u, *delta, *Bm, *Cm, *z;         /* z may be NULL */
    const float *A_log, *D_skip, *delta_bias; /* (D, N), (D), (D); the last two may be NULL */
    int64_t urs, drs, brs, crs, zrs;          /* row strides */
    int64_t batch, L, D, G, N, P, cblocks;    /* P = D / G channels per group, cblocks blocks per group */
    int64_t tiles;                            /* ceil(L / SCAN_TILE) */
    bool delta_softplus;
};

/* What the backward reads and writes. A gradient or partial pointer is NULL
 * when that gradient is not needed; dy and tile_states never are. */
template <typename T> struct ScanGrads {
    T *du, *ddelta, *dz;
    const T *dy;
    int64_t du_rs, ddelta_rs, dz_rs, dy_rs;
    float *dB_part, *dC_part;    /* (cblocks, G * N, B * L): one per channel block */
    float *dA_part;              /* (B, D, N), already times dA/dA_log */
    float *dD_part, *dbias_part; /* (B, D) */
    const float *tile_states;    /* (B, tiles, N, D): the state entering each tile */
};

/* The thread's place: lane c, segment s, group g, channel d (a copy of the
 * group's last channel when the lane is past the group's end: active false). */
struct ScanPlace {
    int c, s;
    int64_t b, g, d;
    bool active;
};

template <typename T> static __device__ __forceinline__ ScanPlace scan_place(const ScanArgs<T> &a)
{
    ScanPlace p;
    p.c = threadIdx.x % SCAN_CT;
    p.s = threadIdx.x / SCAN_CT;
    p.b = blockIdx.y;
    p.g = blockIdx.x / a.cblocks;
    const int64_t in_group = (blockIdx.x % a.cblocks) * SCAN_CT + p.c;
    p.active = in_group < a.P;
    p.d = p.g * a.P + (p.active ? in_group : a.P - 1);
    return p;
}

/* 2^x by the hardware's approximation (relative error about 2^-22). */
static __device__ __forceinline__ float scan_exp2(float x)
{
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}

/* Row of step ts + k of batch row b, clamped into the sequence: loads of
 * steps past L stay in bounds and are issued together with the others (the
 * values are then dropped), so a thread's loads are all in flight at once. */
template <typename T>
static __device__ __forceinline__ int64_t scan_row(const ScanArgs<T> &a, const ScanPlace &p, int64_t ts, int k)
{
    return p.b * a.L + min(ts + k, a.L - 1);
}

/* SCAN_K values of a (B, L, D) tensor x (row stride rs) at the thread's
 * steps and channel; 0 past L. */
template <typename T, typename A>
static __device__ __forceinline__ void scan_load8(const A &a, const ScanPlace &p, int64_t ts, const T *x, int64_t rs,
                                                  float (&v)[SCAN_K])
{
    T raw[SCAN_K];
#pragma unroll
    for (int k = 0; k < SCAN_K; k++)
        raw[k] = x[scan_row(a, p, ts, k) * rs + p.d];
#pragma unroll
    for (int k = 0; k < SCAN_K; k++)
        v[k] = ts + k < a.L ? to_f<T>(raw[k]) : 0.0f;
}

/* The thread's SCAN_K steps of u, dlt = softplus(delta + bias) (or
 * delta + bias) and d dlt / d delta. Steps past L get zeros: dlt = 0 makes
 * them leave the state unchanged (decay 1, no input). */
template <typename T>
static __device__ __forceinline__ void scan_load_steps(const ScanArgs<T> &a, const ScanPlace &p, int64_t ts,
                                                       float bias, float (&u)[SCAN_K], float (&dlt)[SCAN_K],
                                                       float (&ddlt_ddelta)[SCAN_K])
{
    float v[SCAN_K];
    scan_load8(a, p, ts, a.delta, a.drs, v);
    scan_load8(a, p, ts, a.u, a.urs, u);
#pragma unroll
    for (int k = 0; k < SCAN_K; k++) {
        const bool valid = ts + k < a.L;
        const float x = v[k] + bias;
        dlt[k] = !valid ? 0.0f : a.delta_softplus ? fmaxf(x, 0.0f) + log1pf(__expf(-fabsf(x))) : x;
        ddlt_ddelta[k] = !valid ? 0.0f : a.delta_softplus ? 1.0f / (1.0f + __expf(-x)) : 1.0f;
    }
}

/* Row stride of the shared Bm, Cm tiles: SCAN_TILE steps of one state n,
 * padded (a multiple of 4 for vector reads, off the bank of the next n). */
#define SCAN_TILE_LD (SCAN_TILE + 4)

/* Bm and Cm of the tile's steps into shared memory, (N, SCAN_TILE_LD) f32
 * each, time fastest; zeros past L. */
template <typename T>
static __device__ __forceinline__ void scan_load_bc(const ScanArgs<T> &a, int64_t b, int64_t g, int64_t t0, float *Bs,
                                                    float *Cs)
{
    const int N = (int)a.N, total = SCAN_TILE * N;
    for (int base = 0; base < total; base += 4 * (int)blockDim.x) {
        T rb[4], rc[4];
#pragma unroll
        for (int q = 0; q < 4; q++) {
            const int i = min(base + q * (int)blockDim.x + (int)threadIdx.x, total - 1), tt = i / N, n = i - tt * N;
            const int64_t r = b * a.L + min(t0 + tt, a.L - 1);
            rb[q] = a.Bm[r * a.brs + g * N + n];
            rc[q] = a.Cm[r * a.crs + g * N + n];
        }
#pragma unroll
        for (int q = 0; q < 4; q++) {
            const int i = base + q * (int)blockDim.x + (int)threadIdx.x, tt = i / N, n = i - tt * N;
            if (i >= total)
                break;
            const bool valid = t0 + tt < a.L;
            Bs[n * SCAN_TILE_LD + tt] = valid ? to_f<T>(rb[q]) : 0.0f;
            Cs[n * SCAN_TILE_LD + tt] = valid ? to_f<T>(rc[q]) : 0.0f;
        }
    }
}

/* The thread's SCAN_K values of row n of a shared tile, two vector reads
 * (every lane of a warp reads the same address: a broadcast). */
static __device__ __forceinline__ void scan_read8(const float *tile, int n, int s, float (&v)[SCAN_K])
{
    const float4 *q = (const float4 *)(tile + n * SCAN_TILE_LD + s * SCAN_K);
    const float4 x = q[0], y = q[1];
    v[0] = x.x; v[1] = x.y; v[2] = x.z; v[3] = x.w;
    v[4] = y.x; v[5] = y.y; v[6] = y.z; v[7] = y.w;
}

/* A[n] log2(e) = -exp(A_log[d, n]) log2(e) for the block's channels,
 * As (N, SCAN_CT): the decay exp(dlt A) is then one exp2 of dlt times it. */
template <typename T> static __device__ __forceinline__ void scan_load_A(const ScanArgs<T> &a, float *As)
{
    const int64_t g = blockIdx.x / a.cblocks;
    for (int i = threadIdx.x; i < a.N * SCAN_CT; i += blockDim.x) {
        const int n = i / SCAN_CT, c = i % SCAN_CT;
        const int64_t in_group = min((blockIdx.x % a.cblocks) * SCAN_CT + c, a.P - 1);
        As[i] = -expf(a.A_log[(g * a.P + in_group) * a.N + n]) * 1.4426950408889634f;
    }
}

/* Every lane gets the sum over the 32 lanes of v[(lane >> 2) & 7]: three
 * halving exchanges (each lane keeps half of its values, adds its partner's
 * copy of them) then two butterflies, in a fixed order. */
static __device__ __forceinline__ float scan_reduce8(float (&v)[SCAN_K])
{
    const int lane = threadIdx.x & 31;
    bool hi = lane & 16;
#pragma unroll
    for (int j = 0; j < 4; j++) {
        const float send = hi ? v[j] : v[j + 4], keep = hi ? v[j + 4] : v[j];
        v[j] = keep + __shfl_xor_sync(0xffffffffu, send, 16);
    }
    hi = lane & 8;
#pragma unroll
    for (int j = 0; j < 2; j++) {
        const float send = hi ? v[j] : v[j + 2], keep = hi ? v[j + 2] : v[j];
        v[j] = keep + __shfl_xor_sync(0xffffffffu, send, 8);
    }
    hi = lane & 4;
    float x = (hi ? v[1] : v[0]) + __shfl_xor_sync(0xffffffffu, hi ? v[0] : v[1], 4);
    x += __shfl_xor_sync(0xffffffffu, x, 2);
    x += __shfl_xor_sync(0xffffffffu, x, 1);
    return x;
}

/* Shared memory of the forward, in floats. */
static size_t scan_fwd_smem(int64_t N)
{
    return sizeof(float) * (size_t)(3 * N * SCAN_CT + 2 * SCAN_TILE_LD * N + 4 * SCAN_SEGS * SCAN_CT);
}

/* The forward recurrence: y (B, L, D) in T (row stride yrs), per channel
 * h_t = exp(dlt_t A) h_{t-1} + dlt_t Bm_t u_t from h_{-1} = 0 and
 * y_t = (Cm_t . h_t + D_skip u_t) * silu(z_t). When tile_states is not NULL
 * it also receives the state entering each tile, (B, tiles, N, D) f32, for
 * the backward. Grid (G * cblocks, B), block SCAN_THREADS, dynamic shared
 * memory scan_fwd_smem(N).
 *
 * Per n, a segment's summary is (exp(A sum of its dlt), its end state from
 * zero); the thread keeps its decays and inputs dlt Bm u in registers
 * between the summary and the second walk from the true entry state. */
template <typename T>
__global__ void __launch_bounds__(SCAN_THREADS, 3) selective_scan_fwd_kernel(T *y, int64_t yrs, float *tile_states,
                                                                          ScanArgs<T> a)
{
    extern __shared__ float smem[];
    const int N = (int)a.N, SC = SCAN_SEGS * SCAN_CT;
    float *As = smem, *carry = As + N * SCAN_CT; /* carry: [tile parity][n][lane] */
    float *Bs = carry + 2 * N * SCAN_CT, *Cs = Bs + SCAN_TILE_LD * N;
    float *aggP = Cs + SCAN_TILE_LD * N, *aggH = aggP + 2 * SC; /* [n parity][segment][lane] */
    const ScanPlace p = scan_place(a);
    const int slot = p.s * SCAN_CT + p.c;
    scan_load_A(a, As);
    for (int i = threadIdx.x; i < 2 * N * SCAN_CT; i += blockDim.x)
        carry[i] = 0.0f;
    const float D_skip = a.D_skip ? a.D_skip[p.d] : 0.0f, bias = a.delta_bias ? a.delta_bias[p.d] : 0.0f;

    for (int64_t j = 0; j < a.tiles; j++) {
        const int64_t t0 = j * SCAN_TILE, ts = t0 + p.s * SCAN_K;
        const float *carry_in = carry + (j & 1) * N * SCAN_CT;
        float *carry_out = carry + ((j + 1) & 1) * N * SCAN_CT;
        __syncthreads(); /* the previous tile is done with Bs, Cs; its carry is visible */
        scan_load_bc(a, p.b, p.g, t0, Bs, Cs);
        if (tile_states && p.s == 0 && p.active)
            for (int n = 0; n < N; n++)
                tile_states[((p.b * a.tiles + j) * N + n) * a.D + p.d] = carry_in[n * SCAN_CT + p.c];
        float u[SCAN_K], dlt[SCAN_K], out[SCAN_K], dlt_u[SCAN_K], unused[SCAN_K], zv[SCAN_K], dlt_sum = 0.0f;
        scan_load_steps(a, p, ts, bias, u, dlt, unused);
        if (a.z)
            scan_load8(a, p, ts, a.z, a.zrs, zv);
#pragma unroll
        for (int k = 0; k < SCAN_K; k++) {
            out[k] = D_skip * u[k];
            dlt_u[k] = dlt[k] * u[k];
            dlt_sum += dlt[k];
        }
        __syncthreads();

        for (int n = 0; n < N; n++) {
            const float An = As[n * SCAN_CT + p.c], entry = carry_in[n * SCAN_CT + p.c];
            float Bk[SCAN_K], decay[SCAN_K], input[SCAN_K], h = 0.0f;
            scan_read8(Bs, n, p.s, Bk);
#pragma unroll
            for (int k = 0; k < SCAN_K; k++) {
                decay[k] = scan_exp2(dlt[k] * An);
                input[k] = Bk[k] * dlt_u[k];
                h = fmaf(decay[k], h, input[k]);
            }
            const int par = (n & 1) * SC;
            aggP[par + slot] = scan_exp2(dlt_sum * An);
            aggH[par + slot] = h;
            __syncthreads();
            h = entry;
            for (int q = 0; q < p.s; q++)
                h = fmaf(aggP[par + q * SCAN_CT + p.c], h, aggH[par + q * SCAN_CT + p.c]);
            float Ck[SCAN_K];
            scan_read8(Cs, n, p.s, Ck);
#pragma unroll
            for (int k = 0; k < SCAN_K; k++) {
                h = fmaf(decay[k], h, input[k]);
                out[k] = fmaf(Ck[k], h, out[k]);
            }
            if (p.s == SCAN_SEGS - 1)
                carry_out[n * SCAN_CT + p.c] = h;
        }

        if (p.active) {
#pragma unroll
            for (int k = 0; k < SCAN_K; k++) {
                if (ts + k >= a.L)
                    break;
                const int64_t r = p.b * a.L + ts + k;
                const float o = a.z ? out[k] * zv[k] / (1.0f + __expf(-zv[k])) : out[k];
                store_f<T>(y, r * yrs + p.d, o);
            }
        }
    }
}

/* Shared memory of the backward, in floats. */
static size_t scan_bwd_smem(int64_t N)
{
    return sizeof(float) * (size_t)(4 * N * SCAN_CT + 2 * SCAN_TILE_LD * N + 6 * SCAN_SEGS * SCAN_CT +
                                    N * SCAN_SEGS * SCAN_CT + 2 * SCAN_SEGS * SCAN_CT);
}

/* The backward, per channel, with gate_t = dy_t * silu(z_t) (dy_t without z)
 * and lambda_t = dLoss/dh_t = gate_t Cm_t + decay_{t+1} lambda_{t+1}:
 *   dz_t += dy_t (Cm_t . h_t + D_skip u_t) silu'(z_t)
 *   dCm_t[n] += gate_t h_t[n];  dBm_t[n] += dlt_t lambda_t[n] u_t  (summed over the group)
 *   du_t += D_skip gate_t + dlt_t S_t,  S_t = sum_n lambda_t[n] Bm_t[n]
 *   ddelta_t += ddlt_ddelta_t (u_t S_t + sum_n A[n] lambda_t[n] decay_t[n] h_{t-1}[n])
 *   dA[n] += sum_t dlt_t lambda_t[n] decay_t[n] h_{t-1}[n]
 * with dD_skip, ddelta_bias and dA_log (dA times A) summed over time into
 * per-(b, d) partials. Reads the tile entry states of the forward rerun.
 * Grid and block as the forward, dynamic shared memory scan_bwd_smem(N). */
template <typename T>
__global__ void __launch_bounds__(SCAN_THREADS, 3) selective_scan_bwd_kernel(ScanArgs<T> a, ScanGrads<T> gr)
{
    extern __shared__ float smem[];
    const int N = (int)a.N, SC = SCAN_SEGS * SCAN_CT;
    const int64_t rows = a.batch * a.L, GN = a.G * a.N;
    float *As = smem, *lcarry = As + N * SCAN_CT; /* lcarry: [tile parity][n][lane] */
    float *Bs = lcarry + 2 * N * SCAN_CT, *Cs = Bs + SCAN_TILE_LD * N;
    float *aggP = Cs + SCAN_TILE_LD * N, *aggH = aggP + 2 * SC, *aggL = aggH + 2 * SC; /* [n parity][segment][lane] */
    float *dAs = aggL + 2 * SC, *dDs = dAs + N * SC, *dbs = dDs + SC;                 /* per-thread sums over time */
    float *entries = dbs + SC;                                                        /* (N, lane): the tile's entry state */
    const ScanPlace p = scan_place(a);
    const int slot = p.s * SCAN_CT + p.c, lane = threadIdx.x & 31;
    scan_load_A(a, As);
    for (int i = threadIdx.x; i < 2 * N * SCAN_CT; i += blockDim.x)
        lcarry[i] = 0.0f; /* both parities: the first tile walked may be odd */
    for (int n = 0; n < N; n++)
        dAs[n * SC + slot] = 0.0f;
    float dD_sum = 0.0f, dbias_sum = 0.0f;
    const float D_skip = a.D_skip ? a.D_skip[p.d] : 0.0f, bias = a.delta_bias ? a.delta_bias[p.d] : 0.0f;
    const bool want_dz = a.z && gr.dz;
    const int64_t cb = blockIdx.x % a.cblocks;

    for (int64_t j = a.tiles - 1; j >= 0; j--) {
        const int64_t t0 = j * SCAN_TILE, ts = t0 + p.s * SCAN_K;
        const float *lcarry_in = lcarry + (j & 1) * N * SCAN_CT;
        float *lcarry_out = lcarry + ((j + 1) & 1) * N * SCAN_CT;
        __syncthreads(); /* the previous tile is done with Bs, Cs; its lambda carry is visible */
        scan_load_bc(a, p.b, p.g, t0, Bs, Cs);
        float u[SCAN_K], dlt[SCAN_K], gate[SCAN_K], dz_dy[SCAN_K], dlt_u[SCAN_K], S[SCAN_K], ddlt[SCAN_K], yk[SCAN_K];
        float dlt_sum = 0.0f;
        {
        float dd[SCAN_K], dy[SCAN_K], zv[SCAN_K];
        scan_load_steps(a, p, ts, bias, u, dlt, dd);
        scan_load8(a, p, ts, gr.dy, gr.dy_rs, dy);
        if (a.z)
            scan_load8(a, p, ts, a.z, a.zrs, zv);
        for (int i = threadIdx.x; i < N * SCAN_CT; i += blockDim.x) {
            const int n = i / SCAN_CT, c = i % SCAN_CT;
            const int64_t d = p.g * a.P + min(cb * SCAN_CT + c, a.P - 1);
            entries[i] = gr.tile_states[((p.b * a.tiles + j) * N + n) * a.D + d];
        }
#pragma unroll
        for (int k = 0; k < SCAN_K; k++) {
            const float sz = a.z ? 1.0f / (1.0f + __expf(-zv[k])) : 1.0f;
            gate[k] = a.z ? dy[k] * zv[k] * sz : dy[k];
            dz_dy[k] = want_dz ? dy[k] * sz * (1.0f + zv[k] * (1.0f - sz)) : 0.0f; /* dy silu'(z) */
            dlt_u[k] = dlt[k] * u[k];
            dlt_sum += dlt[k];
            S[k] = ddlt[k] = 0.0f;
            yk[k] = D_skip * u[k];
            dD_sum += gate[k] * u[k];
        }
        }
        __syncthreads();

        for (int n = 0; n < N; n++) {
            const float An = As[n * SCAN_CT + p.c], mu_in = lcarry_in[n * SCAN_CT + p.c];
            const float entry = entries[n * SCAN_CT + p.c];
            float Bk[SCAN_K], Ck[SCAN_K], decay[SCAN_K], h = 0.0f, l = 0.0f;
            scan_read8(Bs, n, p.s, Bk);
            scan_read8(Cs, n, p.s, Ck);
#pragma unroll
            for (int k = 0; k < SCAN_K; k++) {
                decay[k] = scan_exp2(dlt[k] * An);
                h = fmaf(decay[k], h, Bk[k] * dlt_u[k]);
            }
#pragma unroll
            for (int k = SCAN_K - 1; k >= 0; k--)
                l = decay[k] * fmaf(gate[k], Ck[k], l);
            const int par = (n & 1) * SC;
            const float prod = scan_exp2(dlt_sum * An);
            aggP[par + slot] = prod;
            aggH[par + slot] = h;
            aggL[par + slot] = l;
            __syncthreads();

            float hs[SCAN_K], seg_entry = entry, mu = mu_in;
            for (int q = 0; q < p.s; q++)
                seg_entry = fmaf(aggP[par + q * SCAN_CT + p.c], seg_entry, aggH[par + q * SCAN_CT + p.c]);
            for (int q = SCAN_SEGS - 1; q > p.s; q--)
                mu = fmaf(aggP[par + q * SCAN_CT + p.c], mu, aggL[par + q * SCAN_CT + p.c]);
            if (p.s == 0)
                lcarry_out[n * SCAN_CT + p.c] = fmaf(prod, mu, l);
            h = seg_entry;
            float dC[SCAN_K];
#pragma unroll
            for (int k = 0; k < SCAN_K; k++) {
                h = fmaf(decay[k], h, Bk[k] * dlt_u[k]);
                hs[k] = h;
                dC[k] = p.active ? gate[k] * h : 0.0f;
                if (want_dz)
                    yk[k] = fmaf(Ck[k], h, yk[k]);
            }
            const float sc = gr.dC_part ? scan_reduce8(dC) : 0.0f;
            float dB[SCAN_K], dA = 0.0f;
#pragma unroll
            for (int k = SCAN_K - 1; k >= 0; k--) {
                const float lam = fmaf(gate[k], Ck[k], mu), prev = k > 0 ? hs[k - 1] : seg_entry;
                const float e = lam * decay[k] * prev;
                dB[k] = p.active ? lam * dlt_u[k] : 0.0f;
                S[k] = fmaf(lam, Bk[k], S[k]);
                ddlt[k] = fmaf(An, e, ddlt[k]);
                dA = fmaf(dlt[k], e, dA);
                mu = decay[k] * lam;
            }
            dAs[n * SC + slot] += dA;
            const float sb = gr.dB_part ? scan_reduce8(dB) : 0.0f;
            const int64_t t = ts + ((lane >> 2) & 7);
            if ((lane & 3) == 0 && t < a.L) {
                const int64_t at = (cb * GN + p.g * a.N + n) * rows + p.b * a.L + t;
                if (gr.dB_part)
                    gr.dB_part[at] = sb;
                if (gr.dC_part)
                    gr.dC_part[at] = sc;
            }
        }

        /* The gradients of this tile's steps, added to what the tensors hold
         * (old values loaded together first). ddlt holds sum_n A[n] log2(e)
         * lambda decay h_{t-1}: back to the natural log. */
        float du_old[SCAN_K], ddelta_old[SCAN_K], dz_old[SCAN_K], unused[SCAN_K], dd[SCAN_K];
        scan_load_steps(a, p, ts, bias, unused, dlt, dd); /* d dlt / d delta again, with the old gradients */
        if (gr.du)
            scan_load8(a, p, ts, (const T *)gr.du, gr.du_rs, du_old);
        if (gr.ddelta)
            scan_load8(a, p, ts, (const T *)gr.ddelta, gr.ddelta_rs, ddelta_old);
        if (want_dz)
            scan_load8(a, p, ts, (const T *)gr.dz, gr.dz_rs, dz_old);
#pragma unroll
        for (int k = 0; k < SCAN_K; k++) {
            if (ts + k >= a.L)
                break;
            const int64_t r = p.b * a.L + ts + k;
            const float ddelta = (u[k] * S[k] + ddlt[k] * 0.6931471805599453f) * dd[k];
            dbias_sum += ddelta;
            if (!p.active)
                continue;
            if (gr.du)
                store_f<T>(gr.du, r * gr.du_rs + p.d, du_old[k] + fmaf(dlt[k], S[k], D_skip * gate[k]));
            if (gr.ddelta)
                store_f<T>(gr.ddelta, r * gr.ddelta_rs + p.d, ddelta_old[k] + ddelta);
            if (want_dz)
                store_f<T>(gr.dz, r * gr.dz_rs + p.d, dz_old[k] + dz_dy[k] * yk[k]);
        }
    }

    dDs[slot] = dD_sum;
    dbs[slot] = dbias_sum;
    __syncthreads();
    if (p.s != 0 || !p.active)
        return;
    float sD = 0.0f, sb = 0.0f;
    for (int q = 0; q < SCAN_SEGS; q++) {
        sD += dDs[q * SCAN_CT + p.c];
        sb += dbs[q * SCAN_CT + p.c];
    }
    if (gr.dD_part)
        gr.dD_part[p.b * a.D + p.d] = sD;
    if (gr.dbias_part)
        gr.dbias_part[p.b * a.D + p.d] = sb;
    if (gr.dA_part)
        for (int n = 0; n < N; n++) {
            float s = 0.0f;
            for (int q = 0; q < SCAN_SEGS; q++)
                s += dAs[n * SC + q * SCAN_CT + p.c];
            /* dA/dA_log = A = As / log2(e) */
            gr.dA_part[(p.b * a.D + p.d) * N + n] = s * As[n * SCAN_CT + p.c] * 0.6931471805599453f;
        }
}

/* out[r, c] += sum over cb = 0..cblocks-1, in that order, of part[cb, c, r].
 * part (cblocks, cols, rows) f32; out (rows, cols) in T, row stride ors.
 * Grid-stride over cols * rows, rows fastest (coalesced partial reads). */
template <typename T>
__global__ void scan_bc_finish_kernel(T *out, int64_t ors, const float *part, int64_t cblocks, int64_t rows,
                                      int64_t cols)
{
    const int64_t n = rows * cols;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t c = i / rows, r = i - c * rows;
        float sum = 0.0f;
        for (int64_t cb = 0; cb < cblocks; cb++)
            sum += part[cb * n + i];
        accum_f<T>(out, r * ors + c, sum);
    }
}

/* ------------------------------------------------------------------------ */
/* Host side. */

/* Raises a kernel's dynamic shared memory limit when it needs more than the default. */
template <typename K> static void scan_allow_smem(K kernel, size_t bytes)
{
    if (bytes > 48 * 1024)
        CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
}

/* Checks the f32 parameters and fills the kernel arguments and grid. */
template <typename T>
static ScanArgs<T> scan_setup(const char *op, dim3 &grid, const mt_tensor *u, const mt_tensor *delta,
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
    a.tiles = (a.L + SCAN_TILE - 1) / SCAN_TILE;
    a.delta_softplus = delta_softplus;
    if (a.N > SCAN_MAX_STATE)
        mt_fatal("%s: d_state %lld is not supported on CUDA (at most %d)", op, (long long)a.N, SCAN_MAX_STATE);
    a.cblocks = (a.P + SCAN_CT - 1) / SCAN_CT;
    grid = dim3((unsigned)(ngroups * a.cblocks), (unsigned)a.batch);
    if (a.batch > 65535)
        mt_fatal("%s: batch %lld is too large for the grid (at most 65535)", op, (long long)a.batch);
    return a;
}

/* The checkpoint is the state entering each tile, (B, tiles, N, D) f32. */
int64_t cuda_selective_scan_checkpoint(mt_backend *be, int64_t batch, int64_t seqlen, int64_t channels,
                                       int64_t d_state)
{
    (void)be;
    return batch * ((seqlen + SCAN_TILE - 1) / SCAN_TILE) * d_state * channels;
}

void cuda_selective_scan_fwd(mt_backend *be, mt_arena *scratch, mt_tensor *y, mt_tensor *checkpoint,
                             const mt_tensor *u, const mt_tensor *delta, const mt_tensor *A_log, const mt_tensor *Bm,
                             const mt_tensor *Cm, const mt_tensor *D_skip, const mt_tensor *z,
                             const mt_tensor *delta_bias, int ngroups, bool delta_softplus)
{
    (void)scratch;
    const char *op = "selective_scan_fwd";
    if (mt_numel(u) == 0)
        return;
    dispatch_float(u->dtype, op, [&](auto tag) {
        using T = typename decltype(tag)::type;
        dim3 grid;
        ScanArgs<T> a = scan_setup<T>(op, grid, u, delta, A_log, Bm, Cm, D_skip, z, delta_bias, ngroups,
                                      delta_softplus);
        if (checkpoint)
            require_dtype(checkpoint, MT_F32, op, "checkpoint");
        if (checkpoint && mt_numel(checkpoint) != a.batch * a.tiles * a.N * a.D)
            mt_fatal("%s: the checkpoint has %lld elements, not %lld", op, (long long)mt_numel(checkpoint),
                     (long long)(a.batch * a.tiles * a.N * a.D));
        const size_t smem = scan_fwd_smem(a.N);
        scan_allow_smem(selective_scan_fwd_kernel<T>, smem);
        selective_scan_fwd_kernel<T><<<grid, SCAN_THREADS, smem, cuda_stream(be)>>>(
            (T *)y->data, mt_row_stride(y), checkpoint ? (float *)checkpoint->data : NULL, a);
        LAUNCH_CHECK(op);
    });
}

void cuda_selective_scan_bwd(mt_backend *be, mt_arena *scratch, mt_tensor *du, mt_tensor *ddelta,
                             mt_tensor *dA_log, mt_tensor *dBm, mt_tensor *dCm, mt_tensor *dD_skip, mt_tensor *dz,
                             mt_tensor *ddelta_bias, const mt_tensor *dy, const mt_tensor *checkpoint,
                             const mt_tensor *u, const mt_tensor *delta, const mt_tensor *A_log,
                             const mt_tensor *Bm, const mt_tensor *Cm, const mt_tensor *D_skip, const mt_tensor *z,
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
        ScanArgs<T> a = scan_setup<T>(op, grid, u, delta, A_log, Bm, Cm, D_skip, z, delta_bias, ngroups,
                                      delta_softplus);
        const int64_t rows = a.batch * a.L, GN = mt_cols(Bm), BD = a.batch * a.D;
        if (!checkpoint || mt_numel(checkpoint) != a.batch * a.tiles * a.N * a.D)
            mt_fatal("%s: the forward's checkpoint is missing or has another size than (%lld, %lld, %lld, %lld)", op,
                     (long long)a.batch, (long long)a.tiles, (long long)a.N, (long long)a.D);
        const float *tile_states = (const float *)checkpoint->data;

        ScanGrads<T> gr;
        gr.du = du ? (T *)du->data : NULL;
        gr.ddelta = ddelta ? (T *)ddelta->data : NULL;
        gr.dz = dz ? (T *)dz->data : NULL;
        gr.dy = (const T *)dy->data;
        gr.du_rs = du ? mt_row_stride(du) : 0;
        gr.ddelta_rs = ddelta ? mt_row_stride(ddelta) : 0;
        gr.dz_rs = dz ? mt_row_stride(dz) : 0;
        gr.dy_rs = mt_row_stride(dy);
        gr.tile_states = tile_states;
        const size_t bc_bytes = (size_t)(a.cblocks * GN * rows) * sizeof(float);
        gr.dB_part = dBm ? (float *)mt_arena_alloc(scratch, bc_bytes) : NULL;
        gr.dC_part = dCm ? (float *)mt_arena_alloc(scratch, bc_bytes) : NULL;
        gr.dA_part = dA_log ? (float *)mt_arena_alloc(scratch, (size_t)(BD * a.N) * sizeof(float)) : NULL;
        gr.dD_part = dD_skip ? (float *)mt_arena_alloc(scratch, (size_t)BD * sizeof(float)) : NULL;
        gr.dbias_part = ddelta_bias ? (float *)mt_arena_alloc(scratch, (size_t)BD * sizeof(float)) : NULL;

        const size_t smem = scan_bwd_smem(a.N);
        scan_allow_smem(selective_scan_bwd_kernel<T>, smem);
        selective_scan_bwd_kernel<T><<<grid, SCAN_THREADS, smem, stream>>>(a, gr);
        LAUNCH_CHECK(op);
        mt_tensor *bc_out[2] = {dBm, dCm};
        float *bc_part[2] = {gr.dB_part, gr.dC_part};
        for (int i = 0; i < 2; i++) {
            if (!bc_out[i])
                continue;
            scan_bc_finish_kernel<T><<<grid_for(rows * GN, MT_CUDA_THREADS), MT_CUDA_THREADS, 0, stream>>>(
                (T *)bc_out[i]->data, mt_row_stride(bc_out[i]), bc_part[i], a.cblocks, rows, GN);
            LAUNCH_CHECK("selective_scan_bwd (dBm, dCm finish)");
        }
        /* (B, D, N) and (B, D) partials: sum over b in order. */
        const float *parts[3] = {gr.dA_part, gr.dD_part, gr.dbias_part};
        mt_tensor *outs[3] = {dA_log, dD_skip, ddelta_bias};
        const int64_t cols[3] = {a.D * a.N, a.D, a.D};
        for (int i = 0; i < 3; i++) {
            if (!outs[i])
                continue;
            colsum_finish<float>((float *)outs[i]->data, parts[i], (int)a.batch, cols[i], stream);
            LAUNCH_CHECK("selective_scan_bwd (parameter finish)");
        }
    });
}
