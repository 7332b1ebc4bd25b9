/* The SSD backward's dBm and dCm on tensor cores: one kernel, two mirror
 * modes. With own rows o (i for dCm, j for dBm) and, per block, a range of
 * the group's heads:
 *   dCm_i = sum_h (e_i du_i) H_c  +  sum_{j <= i} (sum_h p_ij (du_i . x_j)) B_j
 *   dBm_j = sum_h (w_j delta_j x_j) dS_c  +  sum_{i >= j} (sum_h p_ij (du_i . x_j)) C_i
 * with p_ij = exp(s_i - s_j) delta_j on rl_i <= j <= i (0 elsewhere). The
 * head sum of the 64 x 64 pair products is taken in registers before the one
 * mma with B_j or C_i.
 *
 * ssd_dbc_tc_kernel (Q/64, nc, B*G*HS*NSC); 128; the own-row state tile, two
 * buffers each of own and other 64 x (PP+8) tiles (cp.async, double-buffered
 * over the (other tile, head) steps; the state tile's space is the second own
 * buffer), the state PP x (NC+8) and B_j or C_i 64 x (NC+8) bf16 (72 KB at the
 * reference shape). Block (ot, c, ((b*G + g)*HS + hs)*NSC + ns) owns 64 rows
 * and NC columns of N; HS head splits give about 1024 blocks, their partials
 * summed in order by ssd_bc_finish_kernel (cuda_ssd_bwd.cu). */
#include "kernels/cuda/cuda_ssd.cuh"

template <int PP, int NC> static size_t ssd_dbc_tc_smem()
{
    return (size_t)(4 * SSD_TT * (PP + 8) + PP * (NC + 8) + SSD_TT * (NC + 8)) * sizeof(bf16) +
           3 * SSD_QMAX * sizeof(float) + 2 * SSD_TT * sizeof(float);
}

/* Three blocks an SM where the tiles allow (their 72 KB each fit): the
 * register cap that asks for is what held occupancy to two before. */
template <int PP, int NC, bool DB>
__global__ void __launch_bounds__(128, PP >= 128 ? 1 : 3) ssd_dbc_tc_kernel(SsdArgs a)
{
    extern __shared__ __align__(16) unsigned char smem[];
    constexpr int NFN = NC / 8, LDX = PP + 8, LDN = NC + 8;
    bf16 *sA = (bf16 *)smem, *sOwn0 = sA + SSD_TT * LDX, *sOther0 = sOwn0 + SSD_TT * LDX;
    bf16 *sOther1 = sOther0 + SSD_TT * LDX, *sS = sOther1 + SSD_TT * LDX, *sM = sS + PP * LDN;
    auto own_buf = [&](int k) { return (k & 1) ? sA : sOwn0; };
    auto other_buf = [&](int k) { return (k & 1) ? sOther1 : sOther0; };
    float *s_s = (float *)(sM + SSD_TT * LDN), *s_d = s_s + SSD_QMAX;
    int *s_rl = (int *)(s_d + SSD_QMAX);
    float *s_rf = (float *)(s_rl + SSD_QMAX), *s_cf = s_rf + SSD_TT; /* off-diagonal factors of own rows, other columns */

    const int ot = blockIdx.x, c = blockIdx.y;
    int zz = blockIdx.z;
    const int ns = zz % a.NSC;
    zz /= a.NSC;
    const int hs = zz % a.HS;
    zz /= a.HS;
    const int g = zz % a.G, b = zz / a.G;
    const int P = a.P, N = a.N, L = a.L, H = a.H;
    const int t0 = c * a.Q, clen = min(a.Q, L - t0), o0 = ot * SSD_TT, n0 = ns * NC;
    if (o0 >= clen)
        return;
    const int no = min(SSD_TT, clen - o0), ntiles = (clen + SSD_TT - 1) / SSD_TT;
    const int h_begin = g * a.Hg + hs * a.Hg / a.HS, h_end = g * a.Hg + (hs + 1) * a.Hg / a.HS;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, gq = lane >> 2, tq = lane & 3;
    const int64_t PN = (int64_t)P * N, row0 = (int64_t)b * L + t0;
    /* The other tiles: j <= i for dCm, i >= j for dBm. */
    const int qt_first = DB ? ot : 0, qt_end = DB ? ntiles : ot + 1, nh = h_end - h_begin;
    const int nsteps = (qt_end - qt_first) * nh;
    const bf16 *own_src = DB ? (const bf16 *)a.x : a.duh, *other_src = DB ? a.duh : (const bf16 *)a.x;
    const int64_t own_rs = DB ? a.xrs : a.durs, other_rs = DB ? a.durs : a.xrs;

    for (int t = threadIdx.x; t < clen; t += blockDim.x)
        s_rl[t] = ssd_rl(a, b, t0 + t);
    float out[NFN][4];
    ssd_zero(out);
    const int r0 = warp * 16 + gq, r1 = r0 + 8;
    auto step_tiles = [&](int k) { /* own and other tiles of step k = (other tile, head) into buffer k & 1 */
        const int q0 = (qt_first + k / nh) * SSD_TT, h = h_begin + k % nh, nq = min(SSD_TT, clen - q0);
        ssd_cp_tile(own_buf(k), LDX, SSD_TT, PP, own_src ? no : 0, P, (const bf16 *)a.x,
                    [&](int r) { return own_src + (row0 + o0 + r) * own_rs + (int64_t)h * P; });
        ssd_cp_tile(other_buf(k), LDX, SSD_TT, PP, other_src ? nq : 0, P, (const bf16 *)a.x,
                    [&](int r) { return other_src + (row0 + q0 + r) * other_rs + (int64_t)h * P; });
        ssd_cp_commit();
    };
    step_tiles(0);

    /* state part, head by head: (e du) H_c for dCm, (w delta x) dS_c for dBm */
    for (int h = h_begin; h < h_end; h++) {
        const int64_t bh = (int64_t)b * H + h;
        __syncthreads();
        const bf16 *S = DB ? a.dsth + (bh * a.nc + c) * PN : a.sth + (bh * (a.nc + 1) + c) * PN;
        ssd_cp_tile(sS, LDN, PP, NC, P, N - n0, (const bf16 *)a.x, [&](int r) { return S + (int64_t)r * N + n0; });
        ssd_cp_commit();
        const float *scale = DB ? a.wsc : a.esc;
        ssd_fill(sA, LDX, SSD_TT, PP, [&](int r, int col, float v[8]) {
            const bool ok = r < no;
            const int t = t0 + o0 + (ok ? r : 0), nvalid = ok ? P - col : 0;
            if (DB)
                ssd_ld8((const bf16 *)a.x + ((int64_t)b * L + t) * a.xrs + (int64_t)h * P + col, nvalid, v);
            else
                ssd_du8(a, (int64_t)b * L + t, h * P + col, nvalid, v);
            const float sc = ok ? scale[bh * L + t] : 0.0f;
#pragma unroll
            for (int k = 0; k < 8; k++)
                v[k] *= sc;
        });
        ssd_cp_wait<0>();
        __syncthreads();
        ssd_warp_gemm<NFN, false, true>(out, sA, LDX, warp * 16, sS, LDN, 0, PP);
    }

    /* pair part, other tile by other tile */
    for (int qt = qt_first; qt < qt_end; qt++) {
        const int q0 = qt * SSD_TT, nq = min(SSD_TT, clen - q0);
        const int i0 = DB ? q0 : o0, j0 = DB ? o0 : q0;
        const bool off = qt != ot; /* the j-tile is whole and before every row i */
        float acc[8][4];
        ssd_zero(acc);
        for (int h = h_begin; h < h_end; h++) {
            const int64_t bh = (int64_t)b * H + h;
            const int step = (qt - qt_first) * nh + h - h_begin;
            __syncthreads(); /* the buffers refilled next are no longer read (sM, sA, or two steps back) */
            if (h == h_begin) { /* B_j for dCm, C_i for dBm, landing with this step's tiles */
                const bf16 *m = DB ? (const bf16 *)a.Cm : (const bf16 *)a.Bm;
                const int64_t mrs = DB ? a.crs : a.brs;
                ssd_cp_tile(sM, LDN, SSD_TT, NC, nq, N - n0, (const bf16 *)a.x,
                            [&](int r) { return m + (row0 + q0 + r) * mrs + (int64_t)g * N + n0; });
                ssd_cp_commit();
            }
            if (step + 1 < nsteps)
                step_tiles(step + 1);
            else
                ssd_cp_commit();
            if (off) { /* p_ij = exp(s_i - s_ref) (exp(s_ref - s_j) delta_j), s_ref at the j-tile's end */
                if (threadIdx.x < SSD_TT) {
                    const int t = threadIdx.x;
                    const float sref = a.cs[bh * L + t0 + j0 + SSD_TT - 1];
                    const int ni = DB ? nq : no;
                    const float fi = t < ni ? expf(a.cs[bh * L + t0 + i0 + t] - sref) : 0.0f;
                    const float fj = expf(sref - a.cs[bh * L + t0 + j0 + t]) * a.dtv[bh * L + t0 + j0 + t];
                    s_rf[t] = DB ? fj : fi;
                    s_cf[t] = DB ? fi : fj;
                }
            } else {
                for (int t = threadIdx.x; t < clen; t += blockDim.x) {
                    s_s[t] = a.cs[bh * L + t0 + t];
                    s_d[t] = a.dtv[bh * L + t0 + t];
                }
            }
            ssd_cp_wait<1>(); /* this step's tiles have landed; the next step's may be in flight */
            __syncthreads();
            float ux[8][4];
            ssd_zero(ux);
            ssd_warp_gemm<8, false, false>(ux, own_buf(step), LDX, warp * 16, other_buf(step), LDX, 0, PP);
            /* Branch-free masks: every shared load below is unconditional
             * (index 0 stands in for a position past the tile). */
            const int ol[2] = {r0 < no ? o0 + r0 : 0, r1 < no ? o0 + r1 : 0};
            const int orl[2] = {s_rl[ol[0]], s_rl[ol[1]]};
            if (off) {
                const float rf[2] = {s_rf[r0], s_rf[r1]};
#pragma unroll
                for (int nf = 0; nf < 8; nf++)
#pragma unroll
                    for (int k = 0; k < 4; k++) {
                        const int rr = k >> 1, r = rr ? r1 : r0, ql = nf * 8 + tq * 2 + (k & 1);
                        const int q = ql < nq ? q0 + ql : 0;
                        const int j = DB ? o0 + r : q, rl_i = DB ? s_rl[q] : orl[rr];
                        const bool ok = r < no && ql < nq && j >= rl_i;
                        acc[nf][k] += ok ? ux[nf][k] * (rf[rr] * s_cf[ql]) : 0.0f;
                    }
            } else {
                const float os[2] = {s_s[ol[0]], s_s[ol[1]]}, od[2] = {s_d[ol[0]], s_d[ol[1]]};
#pragma unroll
                for (int nf = 0; nf < 8; nf++)
#pragma unroll
                    for (int k = 0; k < 4; k++) {
                        const int rr = k >> 1, r = rr ? r1 : r0, ql = nf * 8 + tq * 2 + (k & 1);
                        const int q = ql < nq ? q0 + ql : 0;
                        const int i = DB ? q : o0 + r, j = DB ? o0 + r : q;
                        const int rl_i = DB ? s_rl[q] : orl[rr];
                        const float si = DB ? s_s[q] : os[rr], sj = DB ? os[rr] : s_s[q];
                        const float dj = DB ? od[rr] : s_d[q];
                        const bool ok = r < no && ql < nq && j <= i && j >= rl_i;
                        acc[nf][k] += ok ? ux[nf][k] * expf(si - sj) * dj : 0.0f;
                    }
            }
        }
        uint32_t af[4][4];
        ssd_acc_to_a(acc, af);
        ssd_warp_gemm_ra<NFN, true>(out, af, sM, LDN, 0);
    }
    const int64_t GN = (int64_t)a.G * N, rows = (int64_t)a.Bz * L;
    float *part = DB ? a.dBp : a.dCp;
#pragma unroll
    for (int nf = 0; nf < NFN; nf++)
#pragma unroll
        for (int k = 0; k < 4; k++) {
            const int r = k < 2 ? r0 : r1, n = n0 + nf * 8 + tq * 2 + (k & 1);
            if (r < no && n < N)
                part[((int64_t)hs * rows + row0 + o0 + r) * GN + (int64_t)g * N + n] = out[nf][k];
        }
}

void ssd_launch_dbc_tc(const SsdArgs &a, bool db, cudaStream_t st)
{
    ssd_dispatch_pp(a.P, [&](auto pp) {
        constexpr int PP = decltype(pp)::value;
        auto launch = [&](auto nc_, auto db_) {
            constexpr int NC = decltype(nc_)::value;
            constexpr bool DB = decltype(db_)::value;
            static int allowed = 0;
            const size_t bytes = ssd_dbc_tc_smem<PP, NC>();
            ssd_allow_smem(ssd_dbc_tc_kernel<PP, NC, DB>, bytes, &allowed);
            dim3 grid((a.Q + SSD_TT - 1) / SSD_TT, a.nc, a.Bz * a.G * a.HS * a.NSC);
            ssd_dbc_tc_kernel<PP, NC, DB><<<grid, 128, bytes, st>>>(a);
            LAUNCH_CHECK(DB ? "ssd_bwd (dBm)" : "ssd_bwd (dCm)");
        };
        auto by_nc = [&](auto db_) {
            if (a.NP / a.NSC == 128)
                launch(std::integral_constant<int, 128>{}, db_);
            else
                launch(std::integral_constant<int, 64>{}, db_);
        };
        if (db)
            by_nc(std::true_type{});
        else
            by_nc(std::false_type{});
    });
}
