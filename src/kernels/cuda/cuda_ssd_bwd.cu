/* The SSD (Mamba-2) scan's backward on CUDA. It recomputes delta, the
 * cumsums, the chunk states and C.B (the forward keeps nothing), then, with
 * du = dy * silu(z) and dS_c the gradient of the state leaving chunk c:
 *
 *   state gradients (cuda_ssd_fwd.cu, reverse mode): dS_c by dH <- g_c dH +
 *     sum_i (e_i du_i) C_i^T from dfinal_state; dinit_state; g_c <dS_c, H_c>.
 *   with the pair terms M_ij = (C_i . B_j) exp(s_i - s_j) delta_j (du_i . x_j), j <= i:
 *   chunk scan in backward mode (cuda_ssd_fwd.cu): dz, and
 *     rowds_i = <du_i, inter-chunk y_i> + sum_j M_ij (the FMA path; on tensor
 *     cores the scan writes the first term and the dx kernel the sums of M).
 *   ssd_dx_tc_kernel / ssd_db_fma_kernel: per step j of head h
 *     G_j = w_j dS_c B_j + sum_{i >= j} (C_i . B_j) exp(s_i - s_j) du_i   (P)
 *     dx_j += delta_j G_j + D du_j;  ddd_j = <x_j, G_j>;  sst_j = delta_j <x_j, w_j dS_c B_j>;  dD;
 *     on tensor cores also colM_j = sum_i M_ij and, per j-tile, rowMp_i = sum_j M_ij.
 *   dCm_i = sum over the group's heads of e_i du_i H_c + sum_{j <= i} exp(s_i - s_j) delta_j (du_i . x_j) B_j,
 *   dBm_j = sum over heads of w_j delta_j x_j dS_c + sum_{i >= j} exp(s_i - s_j) delta_j (du_i . x_j) C_i:
 *     ssd_dbc_tc_kernel (cuda_ssd_bwd_bc.cu) or ssd_dc_fma_kernel, ssd_db_fma_kernel.
 *   ssd_finalize_kernel: the gradient of the cumsum s_t,
 *     ds_t = rowds_t - cold_t + [t = chunk end] (g_c <dS_c, H_c> + sum_j sst_j),
 *     rowds_t adds the rowMp of its j-tiles, cold_t = colM_t + sst_t (tensor cores; the FMA path uses the equal
 *     delta_t ddt_t with <dS_c, H_{c+1}> at the end); da = reverse cumsum of ds;
 *     d delta = ddd + A da; ddt = d delta softplus' (0 where the clamp holds);
 *     dA = sum da delta; partials per chunk.
 *   Fixed-order finishes: dBm/dCm over head splits, dA_log, ddt_bias, dD.
 *
 * Precision: ds is a difference of large terms. The row and column sums of M
 * use the very same fp32 M values (so the diagonal, in both, cancels
 * exactly), and du, H and the masked CB in the products that feed ds are
 * split into hi + lo bf16 halves (two or three mma). Without that, bf16
 * rounding put dA_log and ddt_bias 1e-2 to 3e-1 off the double reference.
 *
 * Kernels (grid; block; shared memory), tensor-core path (bf16, P <= 128, N <= 256):
 *   ssd_dx_tc_kernel  (Q/64, nc, B*H); 128; B_j 64 x 72 and dS_c PP x 72 (64-column
 *       slices of N), x_j, du_i hi and lo 64 x (PP+8) bf16 (51 KB at the reference
 *       shape: four blocks per SM), du double-buffered by cp.async (the second
 *       buffer in B_j's and dS_c's space). CB read from scratch.
 *   ssd_dbc_tc_kernel runs on the backend's side stream beside the chunk scan
 *   and dx, joined before the finish.
 *   du = dy * silu(z) is computed once (ssd_du_split_kernel) as bf16 hi + lo;
 *   without z, du is dy itself.
 * fp32 FMA path: ssd_dc_fma_kernel, ssd_db_fma_kernel (dx too), 16-row tiles,
 * products through shared memory, du precomputed by ssd_du_kernel.
 * Nothing uses float atomics; every sum has an order fixed by the shapes. */
#include "kernels/cuda/cuda_ssd.cuh"

/* ------------------------------------------------------------------------ */
/* Tensor-core dx, ddd, sst, dD partials. Block (jt, c, b*H + h) owns 64 rows
 * j of one head: G = w (B_j dS^T) + sum_{i >= j} (CB^T masked exp(s_i - s_j)) du_i,
 * CB read from a.cb. */

/* Elements of the 64-column slices of B_j and dS_c, whose space the second
 * du buffer reuses. */
template <int PP> __host__ __device__ constexpr int ssd_dx_state_elems()
{
    return (SSD_TT + PP) * (SSD_TT + 8) > 2 * SSD_TT * (PP + 8) ? (SSD_TT + PP) * (SSD_TT + 8) : 2 * SSD_TT * (PP + 8);
}

/* Per warp a row of partial sums: the pair terms' 64 columns, or dD's PP. */
template <int PP> __host__ __device__ constexpr int ssd_dx_red()
{
    return PP > SSD_TT ? PP : SSD_TT;
}

template <int PP> static size_t ssd_dx_tc_smem()
{
    return (size_t)(ssd_dx_state_elems<PP>() + 3 * SSD_TT * (PP + 8)) * sizeof(bf16) +
           3 * SSD_QMAX * sizeof(float) + 4 * ssd_dx_red<PP>() * sizeof(float) + 2 * SSD_TT * sizeof(float);
}

template <int PP> __global__ void __launch_bounds__(128, PP >= 128 ? 1 : 4) ssd_dx_tc_kernel(SsdArgs a)
{
    extern __shared__ __align__(16) unsigned char smem[];
    constexpr int NFP = PP / 8, LDX = PP + 8;
    constexpr int LDC = SSD_TT + 8; /* B_j and dS_c go through in 64-column slices of N */
    bf16 *sBj = (bf16 *)smem, *sDS = sBj + SSD_TT * LDC, *sX = sBj + ssd_dx_state_elems<PP>();
    /* du_i = hi + lo, tile by tile alternating between two buffers; the
     * second reuses B_j's and dS_c's space once the state product is done. */
    bf16 *sDU0 = sX + SSD_TT * LDX, *sDUl0 = sDU0 + SSD_TT * LDX, *sDU1 = sBj, *sDUl1 = sBj + SSD_TT * LDX;
    float *s_s = (float *)(sDUl0 + SSD_TT * LDX), *s_d = s_s + SSD_QMAX;
    int *s_rl = (int *)(s_d + SSD_QMAX);
    float *sred = (float *)(s_rl + SSD_QMAX), *s_rf = sred + 4 * ssd_dx_red<PP>(), *s_cf = s_rf + SSD_TT;

    const int jt = blockIdx.x, c = blockIdx.y, H = a.H, h = blockIdx.z % H, b = blockIdx.z / H, g = h / a.Hg;
    const int P = a.P, N = a.N, L = a.L, Q = a.Q;
    const int t0 = c * Q, clen = min(Q, L - t0), j0 = jt * SSD_TT;
    if (j0 >= clen)
        return;
    const int nj = min(SSD_TT, clen - j0), nit = (clen + SSD_TT - 1) / SSD_TT;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, gq = lane >> 2, tq = lane & 3;
    const int64_t bh = (int64_t)b * H + h, PN = (int64_t)P * N;

    auto du_tile = [&](int it) { /* du_i of tile it into buffer (it - jt) & 1, asynchronously */
        const int i0 = it * SSD_TT, buf = (it - jt) & 1, nrows = a.duh ? min(SSD_TT, clen - i0) : 0;
        const int64_t first = (int64_t)b * L + t0 + i0;
        ssd_cp_tile(buf ? sDU1 : sDU0, LDX, SSD_TT, PP, nrows, P, (const bf16 *)a.x,
                    [&](int r) { return a.duh + (first + r) * a.durs + (int64_t)h * P; });
        if (a.dul)
            ssd_cp_tile(buf ? sDUl1 : sDUl0, LDX, SSD_TT, PP, nrows, P, (const bf16 *)a.x,
                        [&](int r) { return a.dul + (first + r) * a.durs + (int64_t)h * P; });
        ssd_cp_commit();
    };
    du_tile(jt);
    for (int t = threadIdx.x; t < clen; t += blockDim.x) {
        s_s[t] = a.cs[bh * L + t0 + t];
        s_d[t] = a.dtv[bh * L + t0 + t];
        s_rl[t] = ssd_rl(a, b, t0 + t);
    }
    ssd_fill(sX, LDX, SSD_TT, PP, [&](int r, int col, float v[8]) {
        const int64_t row = (int64_t)b * L + t0 + j0 + r;
        ssd_ld8((const bf16 *)a.x + row * a.xrs + (int64_t)h * P + col, r < nj ? P - col : 0, v);
    });
    __syncthreads();
    const float s_last = s_s[clen - 1];
    const int rl_last = s_rl[clen - 1];
    const int r0 = warp * 16 + gq, r1 = r0 + 8, j_0 = j0 + r0, j_1 = j0 + r1;
    const float sj0 = r0 < nj ? s_s[j_0] : 0.0f, sj1 = r1 < nj ? s_s[j_1] : 0.0f;
    const float dj0 = r0 < nj ? s_d[j_0] : 0.0f, dj1 = r1 < nj ? s_d[j_1] : 0.0f;

    float G[NFP][4];
    ssd_zero(G);
    const bf16 *dS = a.dsth + (bh * a.nc + c) * PN;
    for (int n0 = 0; n0 < a.NP; n0 += SSD_TT) {
        if (n0 > 0)
            __syncthreads();
        const int64_t rows_j = (int64_t)b * L + t0 + j0;
        ssd_cp_tile(sBj, LDC, SSD_TT, SSD_TT, nj, N - n0, (const bf16 *)a.x,
                    [&](int r) { return (const bf16 *)a.Bm + (rows_j + r) * a.brs + (int64_t)g * N + n0; });
        ssd_cp_tile(sDS, LDC, PP, SSD_TT, P, N - n0, (const bf16 *)a.x,
                    [&](int r) { return dS + (int64_t)r * N + n0; });
        ssd_cp_commit();
        ssd_cp_wait<0>();
        __syncthreads();
        ssd_warp_gemm<NFP, false, false>(G, sBj, LDC, warp * 16, sDS, LDC, 0, SSD_TT);
    }
    {
        const float w0 = (r0 < nj && j_0 >= rl_last) ? expf(s_last - sj0) : 0.0f;
        const float w1 = (r1 < nj && j_1 >= rl_last) ? expf(s_last - sj1) : 0.0f;
        float st0 = 0.0f, st1 = 0.0f; /* delta_j <x_j, G_j^state> */
#pragma unroll
        for (int nf = 0; nf < NFP; nf++) {
            G[nf][0] *= w0;
            G[nf][1] *= w0;
            G[nf][2] *= w1;
            G[nf][3] *= w1;
#pragma unroll
            for (int k = 0; k < 2; k++) {
                const int p = nf * 8 + tq * 2 + k;
                st0 += __bfloat162float(sX[r0 * LDX + p]) * G[nf][k];
                st1 += __bfloat162float(sX[r1 * LDX + p]) * G[nf][2 + k];
            }
        }
        st0 += __shfl_xor_sync(0xffffffffu, st0, 1);
        st0 += __shfl_xor_sync(0xffffffffu, st0, 2);
        st1 += __shfl_xor_sync(0xffffffffu, st1, 1);
        st1 += __shfl_xor_sync(0xffffffffu, st1, 2);
        if (tq == 0) {
            if (r0 < nj)
                a.sst[bh * L + t0 + j_0] = dj0 * st0;
            if (r1 < nj)
                a.sst[bh * L + t0 + j_1] = dj1 * st1;
        }
    }

    const float *cbc = a.cb + (((int64_t)b * a.G + g) * a.nc + c) * Q * Q;
    float cold0 = 0.0f, cold1 = 0.0f; /* sum over i of M_ij for the rows j_0, j_1 */
    for (int it = jt; it < nit; it++) {
        const int i0 = it * SSD_TT, ni = min(SSD_TT, clen - i0), buf = (it - jt) & 1;
        __syncthreads(); /* the buffer refilled next is no longer read (B_j and dS_c, or du two tiles back) */
        if (it + 1 < nit)
            du_tile(it + 1);
        else
            ssd_cp_commit();
        const bool off = it > jt; /* exp(s_i - s_j) = exp(s_i - s_ref) exp(s_ref - s_j), s_ref = s at the j-tile's end */
        if (off && threadIdx.x < SSD_TT) {
            const int t = threadIdx.x;
            const float sref = s_s[j0 + SSD_TT - 1];
            s_rf[t] = expf(sref - s_s[j0 + t]);
            s_cf[t] = t < ni ? expf(s_s[i0 + t] - sref) : 0.0f;
        }
        ssd_cp_wait<1>(); /* tile it has landed; it + 1 may be in flight */
        __syncthreads();
        float cbt[8][4];
        ssd_decayed_cb<true>(cbt, cbc, Q, j0, nj, i0, ni, r0, off, s_s, nullptr, s_rl, s_rf, s_cf);
        { /* M_ij = cbt_ji delta_j (du_i . x_j): its sums over i and over j come from the same fp32 values */
            float ux[8][4];
            ssd_zero(ux);
            ssd_warp_gemm<8, false, false>(ux, sX, LDX, warp * 16, buf ? sDU1 : sDU0, LDX, 0, PP);
            if (a.dul)
                ssd_warp_gemm<8, false, false>(ux, sX, LDX, warp * 16, buf ? sDUl1 : sDUl0, LDX, 0, PP);
#pragma unroll
            for (int nf = 0; nf < 8; nf++)
#pragma unroll
                for (int k = 0; k < 2; k++) {
                    const float m0 = cbt[nf][k] * dj0 * ux[nf][k], m1 = cbt[nf][2 + k] * dj1 * ux[nf][2 + k];
                    cold0 += m0;
                    cold1 += m1;
                    const float v = ssd_sum_warp_rows(m0 + m1);
                    if (gq == 0)
                        sred[warp * SSD_TT + nf * 8 + tq * 2 + k] = v;
                }
            __syncthreads();
            if (threadIdx.x < ni)
                a.rowMp[((bh * a.nc + c) * a.ndt + jt) * Q + i0 + threadIdx.x] =
                    (sred[threadIdx.x] + sred[SSD_TT + threadIdx.x]) +
                    (sred[2 * SSD_TT + threadIdx.x] + sred[3 * SSD_TT + threadIdx.x]);
        }
        /* G += cbt du with both split in hi + lo (the lo x lo product dropped) */
        uint32_t af[4][4];
        ssd_acc_to_a(cbt, af);
        ssd_warp_gemm_ra<NFP, true>(G, af, buf ? sDU1 : sDU0, LDX, 0);
        if (a.dul)
            ssd_warp_gemm_ra<NFP, true>(G, af, buf ? sDUl1 : sDUl0, LDX, 0);
#pragma unroll
        for (int nf = 0; nf < 8; nf++)
#pragma unroll
            for (int k = 0; k < 4; k++)
                cbt[nf][k] -= ssd_bf16_round(cbt[nf][k]);
        ssd_acc_to_a(cbt, af);
        ssd_warp_gemm_ra<NFP, true>(G, af, buf ? sDU1 : sDU0, LDX, 0);
    }

    /* dx, ddd, dD partials */
    float dd0 = 0.0f, dd1 = 0.0f, dsum[NFP][2];
#pragma unroll
    for (int nf = 0; nf < NFP; nf++) {
        dsum[nf][0] = 0.0f;
        dsum[nf][1] = 0.0f;
    }
    auto pair = [](const bf16 *p) { return __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162 *>(p)); };
#pragma unroll
    for (int nf = 0; nf < NFP; nf++)
#pragma unroll
        for (int k = 0; k < 4; k += 2) { /* columns p, p + 1 of row r: one 4-byte load or store each */
            const int r = k < 2 ? r0 : r1, p = nf * 8 + tq * 2;
            const float2 xv = pair(sX + r * LDX + p);
            const float dj = k < 2 ? dj0 : dj1;
            (k < 2 ? dd0 : dd1) += xv.x * G[nf][k] + xv.y * G[nf][k + 1];
            if (r < nj && p < P) {
                const int64_t row = (int64_t)b * L + t0 + j0 + r, col = (int64_t)h * P + p;
                float2 du = make_float2(0.0f, 0.0f);
                if (a.duh) {
                    du = pair(a.duh + row * a.durs + col);
                    if (a.dul) {
                        const float2 lo = pair(a.dul + row * a.durs + col);
                        du.x += lo.x;
                        du.y += lo.y;
                    }
                }
                const float D0 = a.D ? a.D[a.d_per_channel ? h * P + p : h] : 0.0f;
                const float D1 = a.D ? a.D[a.d_per_channel ? h * P + p + 1 : h] : 0.0f;
                if (a.dx) {
                    __nv_bfloat162 *d = reinterpret_cast<__nv_bfloat162 *>((bf16 *)a.dx + row * a.dxrs + col);
                    const float2 old = __bfloat1622float2(*d);
                    *d = __floats2bfloat162_rn(old.x + dj * G[nf][k] + D0 * du.x, old.y + dj * G[nf][k + 1] + D1 * du.y);
                }
                if (!a.z) { /* with z the chunk scan adds dD from the exact du */
                    dsum[nf][0] += du.x * xv.x;
                    dsum[nf][1] += du.y * xv.y;
                }
            }
        }
    dd0 += __shfl_xor_sync(0xffffffffu, dd0, 1);
    dd0 += __shfl_xor_sync(0xffffffffu, dd0, 2);
    dd1 += __shfl_xor_sync(0xffffffffu, dd1, 1);
    dd1 += __shfl_xor_sync(0xffffffffu, dd1, 2);
    cold0 += __shfl_xor_sync(0xffffffffu, cold0, 1);
    cold0 += __shfl_xor_sync(0xffffffffu, cold0, 2);
    cold1 += __shfl_xor_sync(0xffffffffu, cold1, 1);
    cold1 += __shfl_xor_sync(0xffffffffu, cold1, 2);
    if (tq == 0) {
        if (r0 < nj) {
            a.ddd[bh * L + t0 + j_0] = dd0;
            a.colM[bh * L + t0 + j_0] = cold0;
        }
        if (r1 < nj) {
            a.ddd[bh * L + t0 + j_1] = dd1;
            a.colM[bh * L + t0 + j_1] = cold1;
        }
    }
    if (a.dDp && !a.z) {
        __syncthreads(); /* the last pair terms' sums have been read from sred */
        ssd_dd_partial<NFP, PP>(a, dsum, sred, ((int64_t)b * a.nc + c) * a.ndt + jt, h);
    }
}

/* ------------------------------------------------------------------------ */
/* du = dy * silu(z) as bf16 hi + lo (B*L, H*P), computed once for the
 * tensor-core kernels, which read it many times. */
__global__ void ssd_du_split_kernel(SsdArgs a, bf16 *hi, bf16 *lo)
{
    const int64_t HP = (int64_t)a.H * a.P, n = (int64_t)a.Bz * a.L * HP;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t r = i / HP, col = i - r * HP;
        const float v = load_f<bf16>((const bf16 *)a.dy, r * a.dyrs + col) *
                        ssd_silu(load_f<bf16>((const bf16 *)a.z, r * a.zrs + col));
        const bf16 h = __float2bfloat16_rn(v);
        hi[i] = h;
        lo[i] = __float2bfloat16_rn(v - __bfloat162float(h));
    }
}

/* ------------------------------------------------------------------------ */
/* fp32 FMA path. du (B*L, H*P) is precomputed into a.du (NULL: dy is zero). */

template <typename T> __global__ void ssd_du_kernel(SsdArgs a)
{
    const int64_t HP = (int64_t)a.H * a.P, n = (int64_t)a.Bz * a.L * HP;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t r = i / HP, col = i - r * HP;
        float v = load_f<T>((const T *)a.dy, r * a.dyrs + col);
        if (a.z)
            v *= ssd_silu(load_f<T>((const T *)a.z, r * a.zrs + col));
        a.du[i] = v;
    }
}

static size_t ssd_dc_fma_smem(int N)
{
    return (size_t)(SSD_FT * SSD_QMAX + SSD_FT * N + 3 * SSD_QMAX) * sizeof(float);
}

/* Block (rt, c, b*G + g) owns 16 rows i of dCm; loops the group's heads. */
template <typename T> __global__ void __launch_bounds__(256) ssd_dc_fma_kernel(SsdArgs a)
{
    extern __shared__ float fsm[];
    const int N = a.N, P = a.P, L = a.L, H = a.H, HP = H * P;
    float *sdcb = fsm, *sdC = sdcb + SSD_FT * SSD_QMAX, *s_s = sdC + SSD_FT * N, *s_d = s_s + SSD_QMAX;
    int *s_rl = (int *)(s_d + SSD_QMAX);
    const int rt = blockIdx.x, c = blockIdx.y, g = blockIdx.z % a.G, b = blockIdx.z / a.G;
    const int t0 = c * a.Q, clen = min(a.Q, L - t0), i0 = rt * SSD_FT;
    if (i0 >= clen)
        return;
    const int ni = min(SSD_FT, clen - i0), npos = i0 + ni;
    const T *xs = (const T *)a.x, *bs = (const T *)a.Bm;
    const int64_t PN = (int64_t)P * N;
    auto du = [&](int64_t row, int64_t col) { return a.du ? a.du[row * HP + col] : 0.0f; };
    for (int t = threadIdx.x; t < npos; t += blockDim.x)
        s_rl[t] = ssd_rl(a, b, t0 + t);
    for (int idx = threadIdx.x; idx < SSD_FT * N; idx += blockDim.x)
        sdC[idx] = 0.0f;
    for (int h = g * a.Hg; h < (g + 1) * a.Hg; h++) {
        const int64_t bh = (int64_t)b * H + h;
        __syncthreads();
        for (int t = threadIdx.x; t < npos; t += blockDim.x) {
            s_s[t] = a.cs[bh * L + t0 + t];
            s_d[t] = a.dtv[bh * L + t0 + t];
        }
        __syncthreads();
        for (int idx = threadIdx.x; idx < SSD_FT * npos; idx += blockDim.x) {
            const int r = idx / npos, j = idx - r * npos, i = i0 + r;
            float v = 0.0f;
            if (r < ni && j <= i && j >= s_rl[i]) {
                const int64_t ri = (int64_t)b * L + t0 + i, rj = (int64_t)b * L + t0 + j;
                float dot = 0.0f;
                for (int p = 0; p < P; p++)
                    dot += du(ri, (int64_t)h * P + p) * load_f<T>(xs, rj * a.xrs + (int64_t)h * P + p);
                v = dot * expf(s_s[i] - s_s[j]) * s_d[j];
            }
            sdcb[r * SSD_QMAX + j] = v;
        }
        __syncthreads();
        const float *Hc = a.states + (bh * (a.nc + 1) + c) * PN;
        for (int idx = threadIdx.x; idx < ni * N; idx += blockDim.x) {
            const int r = idx / N, n = idx - r * N, i = i0 + r;
            const int64_t ri = (int64_t)b * L + t0 + i;
            const float e = s_rl[i] < 0 ? expf(s_s[i]) : 0.0f;
            float acc = 0.0f;
            for (int p = 0; p < P; p++)
                acc += du(ri, (int64_t)h * P + p) * Hc[(int64_t)p * N + n];
            acc *= e;
            for (int j = 0; j <= i; j++)
                acc += sdcb[r * SSD_QMAX + j] * load_f<T>(bs, ((int64_t)b * L + t0 + j) * a.brs + (int64_t)g * N + n);
            sdC[idx] += acc;
        }
    }
    __syncthreads();
    const int64_t GN = (int64_t)a.G * N;
    for (int idx = threadIdx.x; idx < ni * N; idx += blockDim.x) {
        const int r = idx / N, n = idx - r * N;
        a.dCp[((int64_t)b * L + t0 + i0 + r) * GN + (int64_t)g * N + n] = sdC[idx];
    }
}

static size_t ssd_db_fma_smem(int N)
{
    return (size_t)(3 * SSD_FT * SSD_QMAX + SSD_FT * N + 3 * SSD_QMAX) * sizeof(float);
}

/* Block (jt, c, b*G + g) owns 16 rows j: dBm over the group's heads, and per
 * head G, dx, ddd and the dD partial. */
template <typename T> __global__ void __launch_bounds__(256) ssd_db_fma_kernel(SsdArgs a)
{
    extern __shared__ float fsm[];
    const int N = a.N, P = a.P, L = a.L, H = a.H, HP = H * P;
    float *scbt = fsm, *stmp = scbt + SSD_FT * SSD_QMAX, *sux = stmp + SSD_FT * SSD_QMAX;
    float *sdB = sux + SSD_FT * SSD_QMAX, *s_s = sdB + SSD_FT * N, *s_d = s_s + SSD_QMAX;
    int *s_rl = (int *)(s_d + SSD_QMAX);
    const int jt = blockIdx.x, c = blockIdx.y, g = blockIdx.z % a.G, b = blockIdx.z / a.G;
    const int t0 = c * a.Q, clen = min(a.Q, L - t0), j0 = jt * SSD_FT;
    if (j0 >= clen)
        return;
    const int nj = min(SSD_FT, clen - j0);
    const T *xs = (const T *)a.x, *bs = (const T *)a.Bm, *cm = (const T *)a.Cm;
    const int64_t PN = (int64_t)P * N;
    auto du = [&](int64_t row, int64_t col) { return a.du ? a.du[row * HP + col] : 0.0f; };
    for (int t = threadIdx.x; t < clen; t += blockDim.x)
        s_rl[t] = ssd_rl(a, b, t0 + t);
    for (int idx = threadIdx.x; idx < SSD_FT * N; idx += blockDim.x)
        sdB[idx] = 0.0f;
    for (int idx = threadIdx.x; idx < SSD_FT * clen; idx += blockDim.x) {
        const int r = idx / clen, i = idx - r * clen, j = j0 + r;
        float v = 0.0f;
        if (r < nj && i >= j) {
            const int64_t ri = (int64_t)b * L + t0 + i, rj = (int64_t)b * L + t0 + j;
            for (int n = 0; n < N; n++)
                v += load_f<T>(bs, rj * a.brs + (int64_t)g * N + n) * load_f<T>(cm, ri * a.crs + (int64_t)g * N + n);
        }
        scbt[r * SSD_QMAX + i] = v;
    }
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    for (int h = g * a.Hg; h < (g + 1) * a.Hg; h++) {
        const int64_t bh = (int64_t)b * H + h;
        __syncthreads();
        for (int t = threadIdx.x; t < clen; t += blockDim.x) {
            s_s[t] = a.cs[bh * L + t0 + t];
            s_d[t] = a.dtv[bh * L + t0 + t];
        }
        __syncthreads();
        const float s_last = s_s[clen - 1];
        const int rl_last = s_rl[clen - 1];
        for (int idx = threadIdx.x; idx < SSD_FT * clen; idx += blockDim.x) {
            const int r = idx / clen, i = idx - r * clen, j = j0 + r;
            const bool ok = r < nj && i >= j && j >= s_rl[i];
            float lv = ok ? expf(s_s[i] - s_s[j]) : 0.0f, ux = 0.0f;
            if (ok) {
                const int64_t ri = (int64_t)b * L + t0 + i, rj = (int64_t)b * L + t0 + j;
                for (int p = 0; p < P; p++)
                    ux += du(ri, (int64_t)h * P + p) * load_f<T>(xs, rj * a.xrs + (int64_t)h * P + p);
            }
            stmp[r * SSD_QMAX + i] = ok ? scbt[r * SSD_QMAX + i] * lv : 0.0f;
            sux[r * SSD_QMAX + i] = ok ? lv * s_d[j] * ux : 0.0f;
        }
        __syncthreads();
        const float *dS = a.dstates + (bh * a.nc + c) * PN;
        for (int r = warp; r < nj; r += blockDim.x >> 5) {
            const int j = j0 + r;
            const int64_t rj = (int64_t)b * L + t0 + j;
            const float wj = j >= rl_last ? expf(s_last - s_s[j]) : 0.0f, dj = s_d[j];
            float dd = 0.0f;
            for (int p = lane; p < P; p += 32) {
                float Gv = 0.0f;
                for (int n = 0; n < N; n++)
                    Gv += load_f<T>(bs, rj * a.brs + (int64_t)g * N + n) * dS[(int64_t)p * N + n];
                Gv *= wj;
                for (int i = j; i < clen; i++)
                    Gv += stmp[r * SSD_QMAX + i] * du((int64_t)b * L + t0 + i, (int64_t)h * P + p);
                const int64_t col = (int64_t)h * P + p;
                const float xv = load_f<T>(xs, rj * a.xrs + col);
                const float Dv = a.D ? a.D[a.d_per_channel ? h * P + p : h] : 0.0f;
                if (a.dx)
                    accum_f<T>((T *)a.dx, rj * a.dxrs + col, dj * Gv + Dv * du(rj, col));
                dd += xv * Gv;
            }
            dd = warp_sum(dd);
            if (lane == 0)
                a.ddd[bh * L + t0 + j] = dd;
        }
        if (a.dBp)
            for (int idx = threadIdx.x; idx < nj * N; idx += blockDim.x) {
                const int r = idx / N, n = idx - r * N, j = j0 + r;
                const int64_t rj = (int64_t)b * L + t0 + j;
                const float wj = j >= rl_last ? expf(s_last - s_s[j]) : 0.0f;
                float acc = 0.0f;
                for (int p = 0; p < P; p++)
                    acc += load_f<T>(xs, rj * a.xrs + (int64_t)h * P + p) * dS[(int64_t)p * N + n];
                acc *= wj * s_d[j];
                for (int i = j; i < clen; i++)
                    acc += sux[r * SSD_QMAX + i] * load_f<T>(cm, ((int64_t)b * L + t0 + i) * a.crs + (int64_t)g * N + n);
                sdB[idx] += acc;
            }
        if (a.dDp) {
            const int64_t part = ((int64_t)b * a.nc + c) * a.ndt + jt;
            for (int p = threadIdx.x; p < P; p += blockDim.x) {
                float s = 0.0f;
                for (int r = 0; r < nj; r++) {
                    const int64_t rj = (int64_t)b * L + t0 + j0 + r, col = (int64_t)h * P + p;
                    s += du(rj, col) * load_f<T>(xs, rj * a.xrs + col);
                }
                a.dDp[part * HP + (int64_t)h * P + p] = s;
            }
        }
    }
    if (!a.dBp)
        return;
    __syncthreads();
    const int64_t GN = (int64_t)a.G * N;
    for (int idx = threadIdx.x; idx < nj * N; idx += blockDim.x) {
        const int r = idx / N, n = idx - r * N;
        a.dBp[((int64_t)b * L + t0 + j0 + r) * GN + (int64_t)g * N + n] = sdB[idx];
    }
}

/* ------------------------------------------------------------------------ */
/* ds -> da -> d delta -> ddt; per-chunk partials of ddt_bias and dA_log.
 * Block (c, h, b); thread t owns step t0 + t. */
template <typename T>
__global__ void ssd_finalize_kernel(SsdArgs a, T *ddt, int64_t ddtrs, float *pdt, float *pA)
{
    __shared__ float shf[SSD_QMAX];
    const int c = blockIdx.x, h = blockIdx.y, b = blockIdx.z, t = threadIdx.x;
    const int L = a.L, t0 = c * a.Q, clen = min(a.Q, L - t0);
    const int64_t bh = (int64_t)b * a.H + h, o = bh * L + t0 + t;
    const float A = -expf(a.A_log[h]);
    float sl = 0.0f;
    for (int k = 0; k < a.nslp; k++)
        sl += a.slp[(bh * a.nc + c) * a.nslp + k];
    const bool valid = t < clen;
    float dlt = 0.0f, dd = 0.0f, rowds = 0.0f, cold = 0.0f, st = 0.0f;
    if (valid) {
        dlt = a.dtv[o];
        dd = a.ddd[o];
        rowds = a.rowds[o];
        if (a.sst) { /* tensor cores: the pair terms' sums and the state part apart */
            for (int k = 0; k <= t / SSD_TT; k++)
                rowds += a.rowMp[((bh * a.nc + c) * a.ndt + k) * a.Q + t];
            st = a.sst[o];
            cold = a.colM[o] + st;
        } else {
            cold = dlt * dd;
        }
    }
    if (a.sst) /* the chunk end gets g_c <dS_c, H_c> + sum_j delta_j <x_j, G_j^state> */
        sl += block_sum(st);
    const float ds = valid ? rowds - cold + (t == clen - 1 ? sl : 0.0f) : 0.0f;
    const float da = ssd_block_scan(ds, shf, true);
    float dv = 0.0f;
    if (valid) {
        const int64_t row = (int64_t)b * L + t0 + t;
        float dvd;
        ssd_delta(load_f<T>((const T *)a.dt, row * a.dtrs + h), a.dt_bias[h], a.dt_min, a.dt_max, &dvd);
        dv = (dd + da * A) * dvd;
        if (ddt)
            accum_f<T>(ddt, row * ddtrs + h, dv);
    }
    const float sdv = block_sum(dv), sda = block_sum(valid ? da * dlt : 0.0f);
    if (t == 0) {
        const int64_t part = (int64_t)b * a.nc + c;
        pdt[part * a.H + h] = sdv;
        pA[part * a.H + h] = sda * A;
    }
}

/* out[r, c] += sum over s < HS of part[s, r, c], in that order. */
template <typename T>
__global__ void ssd_bc_finish_kernel(T *out, int64_t ors, const float *part, int HS, int64_t rows, int64_t cols)
{
    const int64_t n = rows * cols;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t r = i / cols, c = i - r * cols;
        float s = 0.0f;
        for (int k = 0; k < HS; k++)
            s += part[(int64_t)k * n + i];
        accum_f<T>(out, r * ors + c, s);
    }
}

/* dD (H) += sum over p of dDc[h*P + p] (the partials already summed over
 * their parts by colsum_finish): block h, one warp, in a fixed order. */
__global__ void ssd_dD_head_kernel(float *dD, const float *dDc, int P)
{
    const int h = blockIdx.x, lane = threadIdx.x;
    double s = 0.0;
    for (int p = lane; p < P; p += 32)
        s += dDc[(int64_t)h * P + p];
    for (int off = 16; off > 0; off >>= 1)
        s += __shfl_xor_sync(0xffffffffu, s, off);
    if (lane == 0)
        dD[h] += (float)s;
}

__global__ void ssd_add_kernel(float *y, const float *x, int64_t n)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        y[i] += x[i];
}

/* ------------------------------------------------------------------------ */

void cuda_ssd_bwd(mt_backend *be, mt_arena *scratch, const mt_ssd_grads *grads, const mt_tensor *dy,
                  const mt_tensor *dfinal_state, const mt_ssd_inputs *in)
{
    const char *op = "ssd_bwd";
    mt_tensor *dx = grads->dx, *ddt = grads->ddt, *dA_log = grads->dA_log, *dBm = grads->dBm, *dCm = grads->dCm,
              *dD = grads->dD, *dz = grads->dz, *ddt_bias = grads->ddt_bias, *dinit_state = grads->dinit_state;
    const mt_tensor *x = in->x, *z = in->z, *D = in->D;
    if (dA_log)
        require_dtype(dA_log, MT_F32, op, "dA_log");
    if (ddt_bias)
        require_dtype(ddt_bias, MT_F32, op, "ddt_bias");
    if (dD)
        require_dtype(dD, MT_F32, op, "dD");
    if (dinit_state)
        require_dtype(dinit_state, MT_F32, op, "dinit_state");
    if (dfinal_state)
        require_dtype(dfinal_state, MT_F32, op, "dfinal_state");
    SsdArgs a;
    ssd_setup(a, scratch, in, op);
    cudaStream_t st = cuda_stream(be);
    if (a.Bz == 0 || (!dy && !dfinal_state))
        return; /* every gradient is zero */
    if (!z)
        dz = NULL;
    if (!D)
        dD = NULL;
    if (a.L == 0) { /* the final state is the initial one */
        if (dinit_state && dfinal_state) {
            int64_t n = mt_numel(dinit_state);
            ssd_add_kernel<<<grid_for(n, MT_CUDA_THREADS), MT_CUDA_THREADS, 0, st>>>(
                (float *)dinit_state->data, (const float *)dfinal_state->data, n);
            LAUNCH_CHECK("ssd_bwd (dinit_state)");
        }
        return;
    }
    const mt_dtype T_dt = x->dtype;
    a.dy = dy ? dy->data : NULL;
    a.dyrs = dy ? mt_row_stride(dy) : 0;
    a.dx = dx ? dx->data : NULL;
    a.dxrs = dx ? mt_row_stride(dx) : 0;
    a.dz = dz ? dz->data : NULL;
    a.dzrs = dz ? mt_row_stride(dz) : 0;
    const bool tc = ssd_use_tc(a, T_dt);
    a.dfinal = dfinal_state ? (const float *)dfinal_state->data : NULL;
    a.dinit = dinit_state ? (float *)dinit_state->data : NULL;

    const int64_t BHL = (int64_t)a.Bz * a.H * a.L, PN = (int64_t)a.P * a.N, HP = (int64_t)a.H * a.P;
    const int64_t rows = (int64_t)a.Bz * a.L, GN = (int64_t)a.G * a.N;
    a.rowds = (float *)mt_arena_alloc(scratch, BHL * sizeof(float));
    a.ddd = (float *)mt_arena_alloc(scratch, BHL * sizeof(float));
    ssd_alloc_states(a, scratch, tc, true);
    if (tc)
        a.dsth = (bf16 *)mt_arena_alloc(scratch, (size_t)a.Bz * a.H * a.nc * PN * sizeof(bf16));
    else
        a.dstates = (float *)mt_arena_alloc(scratch, (size_t)a.Bz * a.H * a.nc * PN * sizeof(float));
    a.nslp = tc ? ssd_pass_blocks(a) : (int)((PN + 255) / 256); /* blocks per (b, h) of the reverse state walk */
    a.slp_pass = tc;
    a.slp = (float *)mt_arena_alloc(scratch, (size_t)a.Bz * a.H * a.nc * a.nslp * sizeof(float));
    const int tile = tc ? SSD_TT : SSD_FT;
    a.ndt = (a.Q + tile - 1) / tile;
    if (tc) {
        a.NSC = a.NP % 128 == 0 ? a.NP / 128 : a.NP / 64; /* dB, dC column slices of 128 or 64 */
        int64_t blocks = (int64_t)a.ndt * a.nc * a.Bz * a.G * a.NSC;
        int64_t hs = (1024 + blocks - 1) / blocks;
        a.HS = (int)(hs < 1 ? 1 : hs > a.Hg ? a.Hg : hs);
    }
    a.dBp = dBm ? (float *)mt_arena_alloc(scratch, (size_t)a.HS * rows * GN * sizeof(float)) : NULL;
    a.dCp = dCm ? (float *)mt_arena_alloc(scratch, (size_t)a.HS * rows * GN * sizeof(float)) : NULL;
    if (tc) {
        a.sst = (float *)mt_arena_alloc(scratch, BHL * sizeof(float));
        a.rowMp = (float *)mt_arena_alloc(scratch, (size_t)a.Bz * a.H * a.nc * a.ndt * a.Q * sizeof(float));
        a.colM = (float *)mt_arena_alloc(scratch, BHL * sizeof(float));
    }
    const int64_t nparts = (int64_t)a.Bz * a.nc * a.ndt;
    if (dD) {
        a.dDp = (float *)mt_arena_alloc(scratch, (size_t)nparts * HP * sizeof(float));
        CUDA_CHECK(cudaMemsetAsync(a.dDp, 0, (size_t)nparts * HP * sizeof(float), st));
    }
    float *pdt = (float *)mt_arena_alloc(scratch, (size_t)a.Bz * a.nc * a.H * sizeof(float));
    float *pA = (float *)mt_arena_alloc(scratch, (size_t)a.Bz * a.nc * a.H * sizeof(float));

    ssd_launch_cumsum(a, T_dt, st);
    if (tc && dy && z) {
        bf16 *hi = (bf16 *)mt_arena_alloc(scratch, (size_t)rows * HP * sizeof(bf16));
        bf16 *lo = (bf16 *)mt_arena_alloc(scratch, (size_t)rows * HP * sizeof(bf16));
        ssd_du_split_kernel<<<grid_for(rows * HP, MT_CUDA_THREADS), MT_CUDA_THREADS, 0, st>>>(a, hi, lo);
        LAUNCH_CHECK("ssd_bwd (du)");
        a.duh = hi;
        a.dul = lo;
        a.durs = HP;
    } else if (tc && dy) {
        a.duh = (const bf16 *)dy->data;
        a.durs = a.dyrs;
    }
    if (!tc && dy) {
        a.du = (float *)mt_arena_alloc(scratch, (size_t)rows * HP * sizeof(float));
        dispatch_float(T_dt, op, [&](auto tag) {
            using T = typename decltype(tag)::type;
            ssd_du_kernel<T><<<grid_for(rows * HP, MT_CUDA_THREADS), MT_CUDA_THREADS, 0, st>>>(a);
            LAUNCH_CHECK("ssd_bwd (du)");
        });
    }
    ssd_launch_states(a, T_dt, tc, false, st); /* recompute the chunk states */
    ssd_launch_states(a, T_dt, tc, true, st);  /* their gradients */
    if (tc)
        ssd_launch_cb(a, scratch, st);
    /* dB and dC read only what is ready now and write their own partials:
     * they run on the side stream beside the chunk scan and dx, whose
     * blocks fill the SMs their last waves leave. */
    const bool side = tc && (dCm || dBm);
    if (side) {
        cudaStream_t bc_stream = cuda_fork(be);
        if (dCm)
            ssd_launch_dbc_tc(a, false, bc_stream);
        if (dBm)
            ssd_launch_dbc_tc(a, true, bc_stream);
    }
    if (dy)
        ssd_launch_scan(a, T_dt, tc, true, st); /* rowds, dz */
    else
        CUDA_CHECK(cudaMemsetAsync(a.rowds, 0, BHL * sizeof(float), st));

    if (tc) {
        ssd_dispatch_pp(a.P, [&](auto pp) {
            constexpr int PP = decltype(pp)::value;
            static int allowed = 0;
            size_t bytes = ssd_dx_tc_smem<PP>();
            ssd_allow_smem(ssd_dx_tc_kernel<PP>, bytes, &allowed);
            ssd_dx_tc_kernel<PP><<<dim3(a.ndt, a.nc, a.Bz * a.H), 128, bytes, st>>>(a);
            LAUNCH_CHECK("ssd_bwd (dx)");
        });
        if (side)
            cuda_join(be);
    } else {
        dim3 grid(a.ndt, a.nc, a.Bz * a.G);
        dispatch_float(T_dt, op, [&](auto tag) {
            using T = typename decltype(tag)::type;
            if (dCm) {
                static int allowed = 0;
                size_t bytes = ssd_dc_fma_smem(a.N);
                ssd_allow_smem(ssd_dc_fma_kernel<T>, bytes, &allowed);
                ssd_dc_fma_kernel<T><<<grid, 256, bytes, st>>>(a);
                LAUNCH_CHECK("ssd_bwd (dCm)");
            }
            static int allowed = 0;
            size_t bytes = ssd_db_fma_smem(a.N);
            ssd_allow_smem(ssd_db_fma_kernel<T>, bytes, &allowed);
            ssd_db_fma_kernel<T><<<grid, 256, bytes, st>>>(a);
            LAUNCH_CHECK("ssd_bwd (dx, dBm)");
        });
    }

    dispatch_float(T_dt, op, [&](auto tag) {
        using T = typename decltype(tag)::type;
        dim3 grid(a.nc, a.H, a.Bz);
        int threads = (a.Q + 31) / 32 * 32;
        ssd_finalize_kernel<T><<<grid, threads, 0, st>>>(a, ddt ? (T *)ddt->data : NULL, ddt ? mt_row_stride(ddt) : 0,
                                                         pdt, pA);
        LAUNCH_CHECK("ssd_bwd (ddt)");
        unsigned fb = grid_for(rows * GN, MT_CUDA_THREADS);
        if (dBm) {
            ssd_bc_finish_kernel<T><<<fb, MT_CUDA_THREADS, 0, st>>>((T *)dBm->data, mt_row_stride(dBm), a.dBp, a.HS,
                                                                    rows, GN);
            LAUNCH_CHECK("ssd_bwd (dBm finish)");
        }
        if (dCm) {
            ssd_bc_finish_kernel<T><<<fb, MT_CUDA_THREADS, 0, st>>>((T *)dCm->data, mt_row_stride(dCm), a.dCp, a.HS,
                                                                    rows, GN);
            LAUNCH_CHECK("ssd_bwd (dCm finish)");
        }
    });
    const int nchp = a.Bz * a.nc;
    if (ddt_bias) {
        colsum_finish<float>((float *)ddt_bias->data, pdt, nchp, a.H, st);
        LAUNCH_CHECK("ssd_bwd (ddt_bias)");
    }
    if (dA_log) {
        colsum_finish<float>((float *)dA_log->data, pA, nchp, a.H, st);
        LAUNCH_CHECK("ssd_bwd (dA_log)");
    }
    if (dD) {
        if (a.d_per_channel)
            colsum_finish<float>((float *)dD->data, a.dDp, (int)nparts, HP, st);
        else { /* over the parts in parallel first: one block a head was a long serial walk */
            float *dDc = (float *)mt_arena_alloc(scratch, (size_t)HP * sizeof(float));
            CUDA_CHECK(cudaMemsetAsync(dDc, 0, (size_t)HP * sizeof(float), st));
            colsum_finish<float>(dDc, a.dDp, (int)nparts, HP, st);
            LAUNCH_CHECK("ssd_bwd (dD parts)");
            ssd_dD_head_kernel<<<a.H, 32, 0, st>>>((float *)dD->data, dDc, a.P);
        }
        LAUNCH_CHECK("ssd_bwd (dD)");
    }
}
