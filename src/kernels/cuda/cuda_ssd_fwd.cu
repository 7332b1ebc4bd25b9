/* The SSD (Mamba-2) scan on CUDA: the forward, and the kernels the backward
 * shares with it (delta/cumsum, C.B, the chunk scan). cuda_ssd_state.cu has
 * the chunk states with their passing, cuda_ssd_bwd.cu and
 * cuda_ssd_bwd_bc.cu the rest of the backward.
 *
 * Per (b, h), with A = -exp(A_log[h]) and delta_t = clamp(softplus(dt + dt_bias)),
 * time is cut into chunks of Q = chunk_size steps (the last one may be short:
 * every tile masks the steps past L). Inside chunk c, s_i = sum_{k <= i}
 * delta_k * A (fp32, inclusive), and with document restarts (seq_idx) rl_i is
 * the last restart at or before i inside the chunk (-1: none):
 *   chunk state  S_c = sum_j w_j delta_j x_j B_j^T,  w_j = exp(s_last - s_j) [j >= rl_last]
 *   passing      H_{c+1} = g_c H_c + S_c,  g_c = exp(s_last) [rl_last < 0],  H_0 = init_state
 *   output       y_i = e_i C_i H_c^T + sum_{rl_i <= j <= i} (C_i . B_j) exp(s_i - s_j) delta_j x_j + D x_i,
 *                e_i = exp(s_i) [rl_i < 0];  y_i *= silu(z_i) when z is given.
 *
 * Kernels (grid; block; shared memory). Two paths: tensor cores (bf16 inputs,
 * headdim <= 128, d_state <= 256; bf16 mma.sync m16n8k16 from ldmatrix, fp32
 * accumulation, headdim padded to PP = 32/64/128, d_state to NP = a multiple of
 * 64, time in 64-row tiles, any chunk 1..256 and any L by masking) and fp32
 * FMA (f32 inputs, where bf16 products would miss the 1e-4 tolerance, and any
 * other shape). MT_SSD_NO_TC set in the environment forces the FMA path.
 *   ssd_cumsum_kernel      (nc, H, B); Q rounded up to 32 threads; 2 KB.
 *       delta, s, and the chunk-state scales w delta and e (f32 scratch (B, H, L));
 *       restarts rl (B, L) when seq_idx is given.
 *   ssd_state_tc_kernel, ssd_state_fma_kernel (cuda_ssd_state.cu): the chunk
 *       states H_c (B, H, nc+1, P, N): bf16 hi + lo on tensor cores (which read
 *       them with cp.async), f32 on the FMA path; in reverse mode (the backward)
 *       their gradients (bf16 on tensor cores, where every product rounds them).
 *   ssd_cb_tc_kernel       (ndt^2, nc, B*G), ndt = Q/64; 128; two 64 x (NP+8) bf16 tiles.
 *       C_i . B_j (fp32) per chunk and group, tiles j <= i, into (B, G, nc, Q, Q) scratch:
 *       computed once for all heads of a group.
 *   ssd_scan_tc_kernel     (Q/64, nc, B*H); 128; C_i 64 x (NP+8), H_c PP x (NP+8) bf16,
 *       both reused for the x_j tiles, double-buffered by cp.async (38 KB at the
 *       reference shape; backward mode 74 KB). One block owns 64 rows of a chunk:
 *       y = e (C_i H_c^T) by mma (with z, the own rows' z tile then lands in
 *       C_i's space while the j-tiles are worked, for the epilogue), then
 *       per j-tile <= i the CB tile read from scratch, masked and scaled by
 *       exp(s_i - s_j) delta_j in registers (one exp per row and column off the
 *       diagonal), reused as the A operand of y += (.) x_j (flash-attention style).
 *       Backward mode: dz, and <du_i, inter-chunk y_i> for the cumsum gradient (cuda_ssd_bwd.cu).
 *   ssd_scan_fma_kernel    (Q/16, nc, B*H); 256; 16 x Q f32. The same, CB through shared memory.
 *
 * Cost at the reference shape (batch 8, seqlen 2048, 32 heads of 64, 1 group,
 * d_state 128, chunk 256, bf16):
 *   FLOPs (2 per multiply-add; causal halves counted once): chunk states 8.6 G,
 *   inter-chunk output C H^T 8.6 G, intra-chunk (CB) x 8.6 G, CB per group 0.5 G:
 *   26.3 GFLOP forward minimum (these kernels run about 27).
 *   Backward minimum about 62 GFLOP more (states recomputed, the state
 *   gradients, and dx, dB, dC, ddt each one product of that size); these
 *   kernels run about 100 (the pair products du_i . x_j are formed three
 *   times, and the products feeding ds carry hi + lo bf16 halves).
 *   Bytes that must move: x 67.1 MB, dt 1.0 MB, Bm + Cm 8.4 MB read, y 67.1 MB
 *   written: 143.7 MB forward (0.048 ms at 3.0 TB/s; z adds 67.1 MB).
 *   Forward + backward: 364 MB (0.12 ms) plus the chunk states
 *   (B, H, nc, P, N): 67 MB (hi + lo) each time they are written or read. */
#include <stdlib.h>

#include "kernels/cuda/cuda_ssd.cuh"

/* ------------------------------------------------------------------------ */
/* delta, s, restarts and the chunk-state scales w delta, e. Block (c, h, b);
 * thread t owns step t0 + t. */

template <typename T> __global__ void ssd_cumsum_kernel(SsdArgs a)
{
    __shared__ float shf[SSD_QMAX];
    __shared__ int shi[SSD_QMAX];
    __shared__ float s_last;
    __shared__ int rl_last;
    const int c = blockIdx.x, h = blockIdx.y, b = blockIdx.z, t = threadIdx.x;
    const int t0 = c * a.Q, clen = min(a.Q, a.L - t0);
    const float A = -expf(a.A_log[h]);
    float d = 0.0f;
    if (t < clen)
        d = ssd_delta(load_f<T>((const T *)a.dt, ((int64_t)b * a.L + t0 + t) * a.dtrs + h), a.dt_bias[h], a.dt_min,
                      a.dt_max, nullptr);
    float s = ssd_block_scan(d * A, shf, false);
    const int64_t o = ((int64_t)b * a.H + h) * a.L + t0 + t;
    if (t < clen) {
        a.dtv[o] = d;
        a.cs[o] = s;
    }
    int r = -1; /* every head's block finds the restarts (its scales need them); head 0 stores them */
    if (a.rl) {
        const int tg = t0 + t;
        if (t < clen && tg > 0 && a.seq[b * a.seqrs + tg] != a.seq[b * a.seqrs + tg - 1])
            r = t;
        r = ssd_block_scan_max(r, shi);
        if (h == 0 && t < clen)
            a.rl[(int64_t)b * a.L + tg] = r;
    }
    if (t == clen - 1) {
        s_last = s;
        rl_last = r;
    }
    __syncthreads();
    if (t < clen) {
        a.wsc[o] = t >= rl_last ? expf(s_last - s) * d : 0.0f;
        a.esc[o] = r < 0 ? expf(s) : 0.0f;
    }
}

/* ------------------------------------------------------------------------ */
/* C_i . B_j for every chunk and group, fp32 from bf16 mma: block (it*ndt +
 * jt, c, b*G + g) computes the 64 x 64 tile jt <= it. The chunk scans of
 * every head of the group read it. */
__global__ void __launch_bounds__(128) ssd_cb_tc_kernel(SsdArgs a)
{
    extern __shared__ __align__(16) unsigned char smem[];
    const int NP = a.NP, LDC = NP + 8, ndt = (a.Q + SSD_TT - 1) / SSD_TT;
    bf16 *sC = (bf16 *)smem, *sB = sC + SSD_TT * LDC;
    const int it = blockIdx.x / ndt, jt = blockIdx.x % ndt, c = blockIdx.y, g = blockIdx.z % a.G,
              b = blockIdx.z / a.G;
    const int N = a.N, L = a.L, Q = a.Q;
    const int t0 = c * Q, clen = min(Q, L - t0), i0 = it * SSD_TT, j0 = jt * SSD_TT;
    if (jt > it || i0 >= clen)
        return;
    const int ni = min(SSD_TT, clen - i0), nj = min(SSD_TT, clen - j0);
    ssd_fill(sC, LDC, SSD_TT, NP, [&](int r, int col, float v[8]) {
        const int64_t row = (int64_t)b * L + t0 + i0 + r;
        ssd_ld8((const bf16 *)a.Cm + row * a.crs + (int64_t)g * N + col, r < ni ? N - col : 0, v);
    });
    ssd_fill(sB, LDC, SSD_TT, NP, [&](int r, int col, float v[8]) {
        const int64_t row = (int64_t)b * L + t0 + j0 + r;
        ssd_ld8((const bf16 *)a.Bm + row * a.brs + (int64_t)g * N + col, r < nj ? N - col : 0, v);
    });
    __syncthreads();
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, gq = lane >> 2, tq = lane & 3;
    float acc[8][4];
    ssd_zero(acc);
    ssd_warp_gemm<8, false, false>(acc, sC, LDC, warp * 16, sB, LDC, 0, NP);
    float *out = a.cb + (((int64_t)b * a.G + g) * a.nc + c) * Q * Q;
#pragma unroll
    for (int nf = 0; nf < 8; nf++)
#pragma unroll
        for (int k = 0; k < 4; k++) {
            const int r = warp * 16 + gq + (k >> 1) * 8, col = nf * 8 + tq * 2 + (k & 1);
            if (r < ni && col < nj)
                out[(int64_t)(i0 + r) * Q + j0 + col] = acc[nf][k];
        }
}

/* Chunk scan, tensor cores. Block (it, c, b*H + h) owns rows i0 = 64*it ..
 * of chunk c; warp w owns 16 of them and all PP columns. Forward: writes y.
 * Backward mode (BWD) writes, instead of y, dz += dy * u * silu'(z) (u = y
 * before the gate; without z the intra-chunk part is skipped) and rowds_i =
 * <du_i, inter-chunk y_i> (du = dy * silu(z)), one piece of the cumsum
 * gradient; the pair terms' sums come from ssd_dx_tc_kernel. */

template <int PP> static size_t ssd_scan_tc_smem(int NP, bool bwd)
{
    const int ct = SSD_TT * (NP + 8) > SSD_TT * (PP + 8) ? SSD_TT * (NP + 8) : SSD_TT * (PP + 8);
    const int ht = (bwd ? 2 : 1) * PP * (NP + 8), hx = ht > SSD_TT * (PP + 8) ? ht : SSD_TT * (PP + 8);
    return (size_t)(ct + hx + 2 * SSD_TT * (PP + 8)) * sizeof(bf16) +
           3 * SSD_QMAX * sizeof(float) + 2 * SSD_TT * sizeof(float) + (bwd ? 4 * (PP > SSD_TT ? PP : SSD_TT) * sizeof(float) : 0);
}

template <int PP, bool BWD> __global__ void __launch_bounds__(128, PP >= 128 ? 1 : BWD ? 3 : 4) ssd_scan_tc_kernel(SsdArgs a)
{
    extern __shared__ __align__(16) unsigned char smem[];
    constexpr int NFP = PP / 8, LDX = PP + 8;
    const int NP = a.NP, LDC = NP + 8;
    /* The j-tiles of x alternate between sX0 and sX1 (cp.async, double-buffered). */
    const int ct = SSD_TT * LDC > SSD_TT * LDX ? SSD_TT * LDC : SSD_TT * LDX;
    const int ht = (BWD ? 2 : 1) * PP * LDC, hx = ht > SSD_TT * LDX ? ht : SSD_TT * LDX;
    bf16 *sC = (bf16 *)smem, *sH = sC + ct;
    bf16 *sHl = sH + PP * LDC;                  /* BWD only: H split in hi (sH) + lo */
    bf16 *sDU = sH + hx, *sDUl = sDU + SSD_TT * LDX; /* BWD only: du split in hi + lo */
    /* The forward's x tiles have their own buffers (in du's place), so the
     * first flies with C_i and H_c; the backward's reuse C_i's and H_c's. */
    bf16 *sX0 = BWD ? sC : sDU, *sX1 = BWD ? sH : sDUl;
    bf16 *sZ = sC; /* forward with z: the z tile of the own rows, once C_i has been read */
    float *s_s = (float *)(sDU + 2 * SSD_TT * LDX), *s_d = s_s + SSD_QMAX;
    int *s_rl = (int *)(s_d + SSD_QMAX);
    float *s_rf = (float *)(s_rl + SSD_QMAX), *s_cf = s_rf + SSD_TT; /* off-diagonal tiles' exp factors */
    float *sred = s_cf + SSD_TT;                                        /* BWD only: 4 x max(64, PP) */

    const int it = blockIdx.x, c = blockIdx.y, H = a.H, h = blockIdx.z % H, b = blockIdx.z / H, g = h / a.Hg;
    const int P = a.P, N = a.N, L = a.L;
    const int64_t bh = (int64_t)b * H + h;
    const int t0 = c * a.Q, clen = min(a.Q, L - t0), i0 = it * SSD_TT;
    if (i0 >= clen)
        return;
    const int ni = min(SSD_TT, clen - i0), npos = i0 + ni;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, gq = lane >> 2, tq = lane & 3;

    auto x_tile = [&](int jt) { /* x_j of tile jt into sX0 or sX1, asynchronously */
        const int64_t first = (int64_t)b * L + t0 + jt * SSD_TT;
        ssd_cp_tile((jt & 1) ? sX1 : sX0, LDX, SSD_TT, PP, min(SSD_TT, clen - jt * SSD_TT), P, (const bf16 *)a.x,
                    [&](int r) { return (const bf16 *)a.x + (first + r) * a.xrs + (int64_t)h * P; });
        ssd_cp_commit();
    };
    const int64_t rows_i = (int64_t)b * L + t0 + i0, hoff = (bh * (a.nc + 1) + c) * (int64_t)P * N;
    ssd_cp_tile(sC, LDC, SSD_TT, NP, ni, N, (const bf16 *)a.x,
                [&](int r) { return (const bf16 *)a.Cm + (rows_i + r) * a.crs + (int64_t)g * N; });
    ssd_cp_tile(sH, LDC, PP, NP, P, N, (const bf16 *)a.x, [&](int r) { return a.sth + hoff + (int64_t)r * N; });
    if (BWD) { /* the backward's <du, inter-chunk y> feeds ds, where bf16 H costs too much: hi + lo */
        ssd_cp_tile(sHl, LDC, PP, NP, P, N, (const bf16 *)a.x, [&](int r) { return a.stl + hoff + (int64_t)r * N; });
        ssd_cp_tile(sDU, LDX, SSD_TT, PP, a.duh ? ni : 0, P, (const bf16 *)a.x,
                    [&](int r) { return a.duh + (rows_i + r) * a.durs + (int64_t)h * P; });
        if (a.dul) /* without z, du = dy is exact in bf16 */
            ssd_cp_tile(sDUl, LDX, SSD_TT, PP, ni, P, (const bf16 *)a.x,
                        [&](int r) { return a.dul + (rows_i + r) * a.durs + (int64_t)h * P; });
    }
    ssd_cp_commit();
    if (!BWD)
        x_tile(0);
    for (int t = threadIdx.x; t < npos; t += blockDim.x) {
        s_s[t] = a.cs[bh * L + t0 + t];
        s_d[t] = a.dtv[bh * L + t0 + t];
        s_rl[t] = ssd_rl(a, b, t0 + t);
    }
    ssd_cp_wait<BWD ? 0 : 1>(); /* C_i, H_c (and du); the forward's first x tile may be in flight */
    __syncthreads();

    float y[NFP][4];
    ssd_zero(y);
    ssd_warp_gemm<NFP, false, false>(y, sC, LDC, warp * 16, sH, LDC, 0, NP);
    if (BWD)
        ssd_warp_gemm<NFP, false, false>(y, sC, LDC, warp * 16, sHl, LDC, 0, NP);
    const int r0 = warp * 16 + gq, r1 = r0 + 8; /* this thread's rows (tile-local) */
    const int i_0 = i0 + r0, i_1 = i0 + r1;     /* chunk-local */
    {
        float e0 = (r0 < ni && s_rl[i_0] < 0) ? expf(s_s[i_0]) : 0.0f;
        float e1 = (r1 < ni && s_rl[i_1] < 0) ? expf(s_s[i_1]) : 0.0f;
#pragma unroll
        for (int nf = 0; nf < NFP; nf++) {
            y[nf][0] *= e0;
            y[nf][1] *= e0;
            y[nf][2] *= e1;
            y[nf][3] *= e1;
        }
    }
    /* BWD: the row sums start with <du_i, inter-chunk y_i>, du = hi + lo in fp32. */
    float rd0 = 0.0f, rd1 = 0.0f;
    if (BWD && a.duh) {
#pragma unroll
        for (int nf = 0; nf < NFP; nf++)
#pragma unroll
            for (int k = 0; k < 4; k++) {
                const int r = (k < 2) ? r0 : r1, p = nf * 8 + tq * 2 + (k & 1);
                if (r >= ni || p >= P)
                    continue;
                const float du = __bfloat162float(sDU[r * LDX + p]) + (a.dul ? __bfloat162float(sDUl[r * LDX + p]) : 0.0f);
                if (k < 2)
                    rd0 += du * y[nf][k];
                else
                    rd1 += du * y[nf][k];
            }
    }
    const float *cbc = a.cb + (((int64_t)b * a.G + g) * a.nc + c) * a.Q * a.Q;

    /* The backward needs the intra-chunk y only for dz (the pair terms of
     * ds come from the dx kernel). */
    const int jt_end = BWD && !a.z ? -1 : it;
    for (int jt = 0; jt <= jt_end; jt++) {
        const int j0 = jt * SSD_TT, nj = min(SSD_TT, clen - j0);
        const bool off = jt < it; /* the j-tile is whole and before every row */
        bf16 *sX = (jt & 1) ? sX1 : sX0;
        __syncthreads(); /* the buffers refilled next are no longer read (C_i and H_c, or two tiles back) */
        if (BWD && jt == 0)
            x_tile(0);
        if (!BWD && jt == 0 && a.z) /* z of the own rows for the epilogue, into C_i's space (read) */
            ssd_cp_tile(sZ, LDX, SSD_TT, PP, ni, P, (const bf16 *)a.x,
                        [&](int r) { return (const bf16 *)a.z + (rows_i + r) * a.zrs + (int64_t)h * P; });
        if (jt < it)
            x_tile(jt + 1);
        else
            ssd_cp_commit();
        if (off && threadIdx.x < SSD_TT) { /* exp(s_i - s_j) = exp(s_i - s_ref) exp(s_ref - s_j), both <= 1 */
            const int t = threadIdx.x;
            const float sref = s_s[j0 + SSD_TT - 1];
            s_rf[t] = t < ni ? expf(s_s[i0 + t] - sref) : 0.0f;
            s_cf[t] = expf(sref - s_s[j0 + t]) * s_d[j0 + t];
        }
        ssd_cp_wait<1>(); /* tile jt has landed; jt + 1 may be in flight */
        __syncthreads();
        float cb[8][4];
        ssd_decayed_cb<false>(cb, cbc, a.Q, i0, ni, j0, nj, r0, off, s_s, s_d, s_rl, s_rf, s_cf);
        uint32_t af[4][4]; /* y += (masked, scaled CB) x_j */
        ssd_acc_to_a(cb, af);
        ssd_warp_gemm_ra<NFP, true>(y, af, sX, LDX, 0);
    }

    /* Epilogue: x of this tile's own rows (the last j-tile is it). The
     * columns p, p + 1 of a row are one thread's pair (k, k + 1): one 4-byte
     * load each of z (and dy) and one store of y (P is a multiple of 8, rows
     * aligned). With z the backward also forms dD's partial sum_i du_i x_i
     * here, from du = dy silu(z) in fp32 (the products elsewhere use its
     * bf16 hi + lo). */
    const bf16 *sX = (it & 1) ? sX1 : sX0;
    if (!BWD && a.z) {
        ssd_cp_wait<0>();
        __syncthreads();
    }
    const bool gate_bwd = BWD && a.z && a.dy, want_dz = gate_bwd && a.dz, want_dd = gate_bwd && a.dDp;
    float dsum[NFP][2];
#pragma unroll
    for (int nf = 0; nf < NFP; nf++) {
        dsum[nf][0] = 0.0f;
        dsum[nf][1] = 0.0f;
    }
#pragma unroll
    for (int nf = 0; nf < NFP; nf++)
#pragma unroll
        for (int k = 0; k < 4; k += 2) {
            const int r = (k < 2) ? r0 : r1, p = nf * 8 + tq * 2;
            if (r >= ni || p >= P)
                continue;
            const int64_t row = (int64_t)b * L + t0 + i0 + r, col = (int64_t)h * P + p;
            const float2 xv = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162 *>(sX + r * LDX + p));
            const float D0 = a.D ? a.D[a.d_per_channel ? h * P + p : h] : 0.0f;
            const float D1 = a.D ? a.D[a.d_per_channel ? h * P + p + 1 : h] : 0.0f;
            const float u0 = y[nf][k] + D0 * xv.x, u1 = y[nf][k + 1] + D1 * xv.y;
            if (!BWD) {
                float2 out = make_float2(u0, u1);
                if (a.z) {
                    const float2 zv = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162 *>(sZ + r * LDX + p));
                    out.x *= ssd_silu(zv.x);
                    out.y *= ssd_silu(zv.y);
                }
                *reinterpret_cast<__nv_bfloat162 *>((bf16 *)a.y + row * a.yrs + col) = __floats2bfloat162_rn(out.x, out.y);
            } else if (gate_bwd) {
                const float2 dyv = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162 *>((const bf16 *)a.dy + row * a.dyrs + col));
                const float2 zv = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162 *>((const bf16 *)a.z + row * a.zrs + col));
                if (want_dz) {
                    __nv_bfloat162 *dz = reinterpret_cast<__nv_bfloat162 *>((bf16 *)a.dz + row * a.dzrs + col);
                    const float2 old = __bfloat1622float2(*dz);
                    *dz = __floats2bfloat162_rn(old.x + dyv.x * u0 * ssd_dsilu(zv.x), old.y + dyv.y * u1 * ssd_dsilu(zv.y));
                }
                dsum[nf][0] += dyv.x * ssd_silu(zv.x) * xv.x;
                dsum[nf][1] += dyv.y * ssd_silu(zv.y) * xv.y;
            }
        }
    if (want_dd)
        ssd_dd_partial<NFP, PP>(a, dsum, sred, ((int64_t)b * a.nc + c) * a.ndt + it, h);
    if (BWD) {
        rd0 += __shfl_xor_sync(0xffffffffu, rd0, 1);
        rd0 += __shfl_xor_sync(0xffffffffu, rd0, 2);
        rd1 += __shfl_xor_sync(0xffffffffu, rd1, 1);
        rd1 += __shfl_xor_sync(0xffffffffu, rd1, 2);
        if (tq == 0) {
            if (r0 < ni)
                a.rowds[bh * L + t0 + i_0] = rd0;
            if (r1 < ni)
                a.rowds[bh * L + t0 + i_1] = rd1;
        }
    }
}

/* Chunk scan, fp32 FMA. Block (rt, c, b*H + h) owns 16 rows; the masked,
 * scaled CB (16 x chunk) goes through shared memory; warp w then owns rows
 * w, w + 8 and its lanes stride the P columns. The backward mode reads du
 * from a.du. */
template <typename T, bool BWD> __global__ void __launch_bounds__(256) ssd_scan_fma_kernel(SsdArgs a)
{
    __shared__ float sCB[SSD_FT * SSD_QMAX];
    __shared__ float s_s[SSD_QMAX], s_d[SSD_QMAX];
    __shared__ int s_rl[SSD_QMAX];
    const int rt = blockIdx.x, c = blockIdx.y, H = a.H, h = blockIdx.z % H, b = blockIdx.z / H, g = h / a.Hg;
    const int P = a.P, N = a.N, L = a.L, HP = H * P;
    const int64_t bh = (int64_t)b * H + h;
    const int t0 = c * a.Q, clen = min(a.Q, L - t0), i0 = rt * SSD_FT;
    if (i0 >= clen)
        return;
    const int ni = min(SSD_FT, clen - i0), npos = i0 + ni;
    const T *xs = (const T *)a.x, *bs = (const T *)a.Bm, *cm = (const T *)a.Cm;
    for (int t = threadIdx.x; t < npos; t += blockDim.x) {
        s_s[t] = a.cs[bh * L + t0 + t];
        s_d[t] = a.dtv[bh * L + t0 + t];
        s_rl[t] = ssd_rl(a, b, t0 + t);
    }
    __syncthreads();
    for (int idx = threadIdx.x; idx < SSD_FT * npos; idx += blockDim.x) {
        const int r = idx / npos, j = idx - r * npos, i = i0 + r;
        float v = 0.0f;
        if (r < ni && j <= i && j >= s_rl[i]) {
            const int64_t ri = (int64_t)b * L + t0 + i, rj = (int64_t)b * L + t0 + j;
            float dot = 0.0f;
            for (int n = 0; n < N; n++)
                dot += load_f<T>(cm, ri * a.crs + (int64_t)g * N + n) * load_f<T>(bs, rj * a.brs + (int64_t)g * N + n);
            v = dot * expf(s_s[i] - s_s[j]) * s_d[j];
        }
        sCB[r * SSD_QMAX + j] = v;
    }
    __syncthreads();
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const float *Hc = a.states + (bh * (a.nc + 1) + c) * (int64_t)P * N;
    for (int r = warp; r < ni; r += blockDim.x >> 5) {
        const int i = i0 + r;
        const int64_t row = (int64_t)b * L + t0 + i;
        const float e = s_rl[i] < 0 ? expf(s_s[i]) : 0.0f;
        float rd = 0.0f;
        for (int p = lane; p < P; p += 32) {
            float yv = 0.0f;
            for (int n = 0; n < N; n++)
                yv += load_f<T>(cm, row * a.crs + (int64_t)g * N + n) * Hc[(int64_t)p * N + n];
            yv *= e;
            for (int j = 0; j <= i; j++)
                yv += sCB[r * SSD_QMAX + j] * load_f<T>(xs, ((int64_t)b * L + t0 + j) * a.xrs + (int64_t)h * P + p);
            const int64_t col = (int64_t)h * P + p;
            const float xv = load_f<T>(xs, row * a.xrs + col);
            const float Dv = a.D ? a.D[a.d_per_channel ? h * P + p : h] : 0.0f;
            const float u = yv + Dv * xv;
            if (!BWD) {
                float out = a.z ? u * ssd_silu(load_f<T>((const T *)a.z, row * a.zrs + col)) : u;
                store_f<T>((T *)a.y, row * a.yrs + col, out);
            } else {
                rd += a.du[row * HP + col] * yv;
                if (a.z && a.dz && a.dy) {
                    const float zv = load_f<T>((const T *)a.z, row * a.zrs + col);
                    const float dyv = load_f<T>((const T *)a.dy, row * a.dyrs + col);
                    accum_f<T>((T *)a.dz, row * a.dzrs + col, dyv * u * ssd_dsilu(zv));
                }
            }
        }
        if (BWD) {
            rd = warp_sum(rd);
            if (lane == 0)
                a.rowds[bh * L + t0 + i] = rd;
        }
    }
}

/* ------------------------------------------------------------------------ */
/* Launchers. */

/* Rows of 8-element groups that start on 16 bytes: what ssd_ld8 needs. */
static bool ssd_rows_aligned(const void *p, int64_t row_stride)
{
    return !p || (((uintptr_t)p & 15) == 0 && row_stride % 8 == 0);
}

/* Rows whose column pairs (even columns) start on 4 bytes: the bf16x2
 * loads and stores of y, dx and dz. */
static bool ssd_pairs_aligned(const void *p, int64_t row_stride)
{
    return !p || (((uintptr_t)p & 3) == 0 && row_stride % 2 == 0);
}

bool ssd_use_tc(const SsdArgs &a, mt_dtype dt)
{
    static int no_tc = -1;
    if (no_tc < 0)
        no_tc = getenv("MT_SSD_NO_TC") != NULL;
    const bool aligned = a.P % 8 == 0 && a.N % 8 == 0 && ssd_rows_aligned(a.x, a.xrs) &&
                         ssd_rows_aligned(a.Bm, a.brs) && ssd_rows_aligned(a.Cm, a.crs) &&
                         ssd_rows_aligned(a.z, a.zrs) && ssd_rows_aligned(a.dy, a.dyrs) &&
                         ssd_pairs_aligned(a.y, a.yrs) && ssd_pairs_aligned(a.dx, a.dxrs) &&
                         ssd_pairs_aligned(a.dz, a.dzrs);
    return dt == MT_BF16 && a.P <= 128 && a.N <= 256 && aligned && !no_tc;
}

void ssd_launch_cumsum(const SsdArgs &a, mt_dtype dt, cudaStream_t st)
{
    dim3 grid(a.nc, a.H, a.Bz);
    int threads = (a.Q + 31) / 32 * 32;
    dispatch_float(dt, "ssd", [&](auto tag) {
        using T = typename decltype(tag)::type;
        ssd_cumsum_kernel<T><<<grid, threads, 0, st>>>(a);
        LAUNCH_CHECK("ssd (cumsum)");
    });
}

void ssd_launch_cb(SsdArgs &a, mt_arena *scratch, cudaStream_t st)
{
    const int ndt = (a.Q + SSD_TT - 1) / SSD_TT;
    a.cb = (float *)mt_arena_alloc(scratch, (size_t)a.Bz * a.G * a.nc * a.Q * a.Q * sizeof(float));
    size_t bytes = (size_t)2 * SSD_TT * (a.NP + 8) * sizeof(bf16);
    static int allowed = 0;
    ssd_allow_smem(ssd_cb_tc_kernel, bytes, &allowed);
    ssd_cb_tc_kernel<<<dim3(ndt * ndt, a.nc, a.Bz * a.G), 128, bytes, st>>>(a);
    LAUNCH_CHECK("ssd (C.B)");
}

void ssd_launch_scan(const SsdArgs &a, mt_dtype dt, bool tc, bool bwd, cudaStream_t st)
{
    if (tc) {
        dim3 grid((a.Q + SSD_TT - 1) / SSD_TT, a.nc, a.Bz * a.H);
        ssd_dispatch_pp(a.P, [&](auto pp) {
            constexpr int PP = decltype(pp)::value;
            size_t bytes = ssd_scan_tc_smem<PP>(a.NP, bwd);
            if (bwd) {
                static int allowed = 0;
                ssd_allow_smem(ssd_scan_tc_kernel<PP, true>, bytes, &allowed);
                ssd_scan_tc_kernel<PP, true><<<grid, 128, bytes, st>>>(a);
            } else {
                static int allowed = 0;
                ssd_allow_smem(ssd_scan_tc_kernel<PP, false>, bytes, &allowed);
                ssd_scan_tc_kernel<PP, false><<<grid, 128, bytes, st>>>(a);
            }
            LAUNCH_CHECK("ssd (chunk scan)");
        });
        return;
    }
    dim3 grid((a.Q + SSD_FT - 1) / SSD_FT, a.nc, a.Bz * a.H);
    dispatch_float(dt, "ssd", [&](auto tag) {
        using T = typename decltype(tag)::type;
        if (bwd)
            ssd_scan_fma_kernel<T, true><<<grid, 256, 0, st>>>(a);
        else
            ssd_scan_fma_kernel<T, false><<<grid, 256, 0, st>>>(a);
        LAUNCH_CHECK("ssd (chunk scan)");
    });
}

void ssd_setup(SsdArgs &a, mt_arena *scratch, const mt_ssd_inputs *in, const char *op)
{
    const mt_tensor *x = in->x, *dt = in->dt, *A_log = in->A_log, *Bm = in->Bm, *Cm = in->Cm, *D = in->D,
                    *z = in->z, *dt_bias = in->dt_bias, *init_state = in->init_state, *seq_idx = in->seq_idx;
    const int headdim = in->cfg.headdim, ngroups = in->cfg.ngroups, chunk_size = in->cfg.chunk_size;
    const double dt_min = in->cfg.dt_min, dt_max = in->cfg.dt_max;
    require_dtype(A_log, MT_F32, op, "A_log");
    require_dtype(dt_bias, MT_F32, op, "dt_bias");
    if (D)
        require_dtype(D, MT_F32, op, "D");
    if (init_state)
        require_dtype(init_state, MT_F32, op, "init_state");
    if (seq_idx)
        require_dtype(seq_idx, MT_I32, op, "seq_idx");
    if (chunk_size < 1 || chunk_size > SSD_QMAX)
        mt_fatal("%s: chunk_size %d is outside [1, %d] on CUDA", op, chunk_size, SSD_QMAX);
    a = SsdArgs{};
    a.Bz = (int)x->shape[0];
    a.L = (int)x->shape[1];
    a.P = headdim;
    a.H = (int)(mt_cols(x) / headdim);
    a.G = ngroups;
    a.Hg = a.H / a.G;
    a.N = (int)(mt_cols(Bm) / ngroups);
    a.Q = chunk_size;
    a.nc = (a.L + a.Q - 1) / a.Q;
    a.NP = (a.N + 63) / 64 * 64;
    a.NS = a.NP / 64;
    a.HS = 1;
    a.x = x->data;
    a.xrs = mt_row_stride(x);
    a.dt = dt->data;
    a.dtrs = mt_row_stride(dt);
    a.Bm = Bm->data;
    a.brs = mt_row_stride(Bm);
    a.Cm = Cm->data;
    a.crs = mt_row_stride(Cm);
    a.z = z ? z->data : NULL;
    a.zrs = z ? mt_row_stride(z) : 0;
    a.A_log = (const float *)A_log->data;
    a.dt_bias = (const float *)dt_bias->data;
    a.D = D ? (const float *)D->data : NULL;
    a.d_per_channel = D && mt_numel(D) == (int64_t)a.H * a.P && a.P > 1;
    a.init = init_state ? (const float *)init_state->data : NULL;
    a.seq = seq_idx ? (const int *)seq_idx->data : NULL;
    a.seqrs = seq_idx ? mt_row_stride(seq_idx) : 0;
    a.dt_min = (float)dt_min;
    a.dt_max = (float)dt_max;
    if ((int64_t)a.Bz * a.L == 0)
        return;
    size_t BHL = (size_t)a.Bz * a.H * a.L;
    a.dtv = (float *)mt_arena_alloc(scratch, BHL * sizeof(float));
    a.cs = (float *)mt_arena_alloc(scratch, BHL * sizeof(float));
    a.wsc = (float *)mt_arena_alloc(scratch, BHL * sizeof(float));
    a.esc = (float *)mt_arena_alloc(scratch, BHL * sizeof(float));
    a.rl = seq_idx ? (int *)mt_arena_alloc(scratch, (size_t)a.Bz * a.L * sizeof(int)) : NULL;
}

void ssd_alloc_states(SsdArgs &a, mt_arena *scratch, bool tc, bool with_lo)
{
    const size_t n = (size_t)a.Bz * a.H * (a.nc + 1) * a.P * a.N;
    if (tc) {
        a.sth = (bf16 *)mt_arena_alloc(scratch, n * sizeof(bf16));
        a.stl = with_lo ? (bf16 *)mt_arena_alloc(scratch, n * sizeof(bf16)) : NULL;
        a.sloc = (float *)mt_arena_alloc(scratch, (size_t)a.Bz * a.H * a.nc * a.P * a.N * sizeof(float));
    } else {
        a.states = (float *)mt_arena_alloc(scratch, n * sizeof(float));
    }
}

void cuda_ssd_fwd(mt_backend *be, mt_arena *scratch, mt_tensor *y, mt_tensor *final_state, const mt_ssd_inputs *in)
{
    const char *op = "ssd_fwd";
    const mt_tensor *x = in->x, *init_state = in->init_state;
    if (final_state)
        require_dtype(final_state, MT_F32, op, "final_state");
    SsdArgs a;
    ssd_setup(a, scratch, in, op);
    cudaStream_t st = cuda_stream(be);
    if (a.Bz == 0)
        return;
    if (a.L == 0) { /* no steps: the final state is the initial one */
        if (final_state) {
            size_t bytes = mt_nbytes(final_state);
            if (init_state)
                CUDA_CHECK(cudaMemcpyAsync(final_state->data, init_state->data, bytes, cudaMemcpyDeviceToDevice, st));
            else
                CUDA_CHECK(cudaMemsetAsync(final_state->data, 0, bytes, st));
        }
        return;
    }
    a.y = y->data;
    a.yrs = mt_row_stride(y);
    a.final_state = final_state ? (float *)final_state->data : NULL;
    const bool tc = ssd_use_tc(a, x->dtype);
    ssd_alloc_states(a, scratch, tc, false); /* the forward's products use H's hi alone */
    ssd_launch_cumsum(a, x->dtype, st);
    ssd_launch_states(a, x->dtype, tc, false, st);
    if (tc)
        ssd_launch_cb(a, scratch, st);
    ssd_launch_scan(a, x->dtype, tc, false, st);
}
