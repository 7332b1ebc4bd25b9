/* The SSD scan's chunk states and their passing, on CUDA (the forward, and
 * in reverse mode the state gradients of the backward). Per (b, h) the
 * state walks the chunks in order:
 *   forward  states[c] = H entering chunk c, H <- g_c H + sum_t (w_t delta_t x_t) B_t^T,
 *            states[nc] = final_state;
 *   reverse  dstates[c] = dH leaving chunk c, slp = g_c <dH, H entering c> (slp_pass)
 *            or <dH, H leaving c>, dH <- g_c dH + sum_t (e_t du_t) C_t^T from dfinal_state;
 *            dinit += dH entering chunk 0.
 * The scales w_t delta_t and e_t come from the cumsum kernel (a.wsc, a.esc).
 *
 * Tensor cores, in two kernels: every chunk's own term at once, then the
 * walk over the chunks, element by element (the walk is a few flops per
 * element and chunk; done inside the product kernel it left each block 32
 * tiles in series and the GPU a quarter full).
 *   ssd_chunk_state_tc_kernel (NP/64, nc, B*H); 128; two buffers of the
 *     64-step tile of x (du hi and lo in reverse) 64 x (PP+8) and of B (C)
 *     64 x 72 bf16 (37 KB forward, 55 KB reverse at PP 64). A block owns rows
 *     p < PP and columns ns*64 + [0, 64) of one chunk's term
 *     sum_t (scale_t a_t) b_t^T in mma accumulators (warps tile it WM x WN),
 *     fp32 into a.sloc (B, H, nc, P, N); the next tile's copies (cp.async) fly
 *     while the current one is scaled in shared memory and multiplied.
 *     Floors at the reference shape: 8.6 GFLOP (12 us); x read once per
 *     64-column slice (2 x 67 MB) and the term written (67 MB): 47 us.
 *   ssd_state_pass_kernel (P*N/512, H, B); 256; two elements a thread. H_c
 *     stored as bf16 hi, and lo where the backward recomputes it (its
 *     precision-critical products use both), dH rounded to bf16 (all its
 *     products use); the slp partials per block. Reads the terms (67 MB),
 *     writes the states (34 MB forward, 67 MB backward): 24-31 us.
 * ssd_state_fma_kernel (P*N/256, H, B); 256; a thread per state element, fp32. */
#include "kernels/cuda/cuda_ssd.cuh"

template <int PP, bool REV> static size_t ssd_state_tc_smem()
{
    return (size_t)(2 * (REV ? 2 : 1) * SSD_TT * (PP + 8) + 2 * SSD_TT * (SSD_TT + 8)) * sizeof(bf16) +
           (2 * SSD_TT) * sizeof(float);
}

template <int PP, bool REV> __global__ void __launch_bounds__(128) ssd_chunk_state_tc_kernel(SsdArgs a)
{
    constexpr int WM = PP >= 64 ? 4 : 2, WN = 4 / WM, MF = PP / 16 / WM, NF = 8 / WN;
    constexpr int LDA = PP + 8, LDB = SSD_TT + 8, AE = SSD_TT * LDA, BE = SSD_TT * LDB;
    extern __shared__ __align__(16) unsigned char smem[];
    /* buffer k: sA + k*AE (x, or du hi), sL + k*AE (du lo, reverse), sB + k*BE */
    bf16 *sA = (bf16 *)smem, *sL = sA + 2 * AE, *sB = sL + (REV ? 2 * AE : 0);
    float *s_sc = (float *)(sB + 2 * BE);
    const int ns = blockIdx.x, c = blockIdx.y, h = blockIdx.z % a.H, b = blockIdx.z / a.H, g = h / a.Hg;
    const int P = a.P, N = a.N, L = a.L;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, wm = warp % WM, wn = warp / WM;
    const int gq = lane >> 2, tq = lane & 3;
    const int mb = wm * MF * 16, nb = ns * SSD_TT + wn * NF * 8;
    const int64_t bh = (int64_t)b * a.H + h, PN = (int64_t)P * N;
    const float *scale = REV ? a.esc : a.wsc;
    const bf16 *asrc = REV ? a.duh : (const bf16 *)a.x, *bsrc = REV ? (const bf16 *)a.Cm : (const bf16 *)a.Bm;
    const int64_t ars = REV ? a.durs : a.xrs, brs = REV ? a.crs : a.brs;
    const bool lo = REV && a.dul;
    const int t0 = c * a.Q, clen = min(a.Q, L - t0);

    float sc_next = 0.0f; /* threads < 64: the scale of their row of the tile in flight */
    auto issue = [&](int tt, int buf) { /* the tile of steps t0 + tt + [0, 64) into buffer buf */
        const int nrow = min(SSD_TT, clen - tt);
        const int64_t first = (int64_t)b * L + t0 + tt;
        ssd_cp_tile(sA + buf * AE, LDA, SSD_TT, PP, asrc ? nrow : 0, P, (const bf16 *)a.x,
                    [&](int r) { return asrc + (first + r) * ars + (int64_t)h * P; });
        if (lo)
            ssd_cp_tile(sL + buf * AE, LDA, SSD_TT, PP, nrow, P, (const bf16 *)a.x,
                        [&](int r) { return a.dul + (first + r) * a.durs + (int64_t)h * P; });
        ssd_cp_tile(sB + buf * BE, LDB, SSD_TT, SSD_TT, nrow, N - ns * SSD_TT, (const bf16 *)a.x,
                    [&](int r) { return bsrc + (first + r) * brs + (int64_t)g * N + ns * SSD_TT; });
        ssd_cp_commit();
        if (threadIdx.x < SSD_TT)
            sc_next = threadIdx.x < nrow ? __ldg(scale + bh * L + t0 + tt + threadIdx.x) : 0.0f;
    };

    float acc[MF][NF][4];
#pragma unroll
    for (int mf = 0; mf < MF; mf++)
#pragma unroll
        for (int nf = 0; nf < NF; nf++)
#pragma unroll
            for (int k = 0; k < 4; k++)
                acc[mf][nf][k] = 0.0f;
    issue(0, 0);
    for (int tt = 0, step = 0; tt < clen; tt += SSD_TT, step++) {
        const int buf = step & 1;
        if (threadIdx.x < SSD_TT)
            s_sc[buf * SSD_TT + threadIdx.x] = sc_next;
        __syncthreads(); /* the other buffer is no longer read */
        if (tt + SSD_TT < clen)
            issue(tt + SSD_TT, buf ^ 1);
        else
            ssd_cp_commit();
        ssd_cp_wait<1>(); /* this tile has landed; the next may be in flight */
        __syncthreads();
        bf16 *tA = sA + buf * AE;
        for (int idx = threadIdx.x; idx < SSD_TT * (PP / 8); idx += blockDim.x) { /* rows times their scale */
            const int r = idx / (PP / 8), col = (idx - r * (PP / 8)) * 8;
            float v[8];
            ssd_ld8s(tA + r * LDA + col, v);
            if (lo) {
                float l[8];
                ssd_ld8s(sL + buf * AE + r * LDA + col, l);
#pragma unroll
                for (int k = 0; k < 8; k++)
                    v[k] += l[k];
            }
            const float sc = s_sc[buf * SSD_TT + r];
#pragma unroll
            for (int k = 0; k < 8; k++)
                v[k] *= sc;
            ssd_st8(tA + r * LDA + col, v);
        }
        __syncthreads();
        const bf16 *tB = sB + buf * BE;
#pragma unroll
        for (int k0 = 0; k0 < SSD_TT; k0 += 16) {
            uint32_t af[MF][4];
#pragma unroll
            for (int mf = 0; mf < MF; mf++)
                ssd_frag_a<true>(af[mf], tA, LDA, mb + mf * 16, k0);
#pragma unroll
            for (int nf = 0; nf < NF; nf += 2) {
                uint32_t bfr[4];
                ssd_frag_b2<true>(bfr, tB, LDB, wn * NF * 8 + nf * 8, k0);
#pragma unroll
                for (int mf = 0; mf < MF; mf++) {
                    ssd_mma(acc[mf][nf], af[mf], bfr[0], bfr[1]);
                    ssd_mma(acc[mf][nf + 1], af[mf], bfr[2], bfr[3]);
                }
            }
        }
    }
    float *out = a.sloc + (bh * a.nc + c) * PN;
#pragma unroll
    for (int mf = 0; mf < MF; mf++)
#pragma unroll
        for (int nf = 0; nf < NF; nf++)
#pragma unroll
            for (int k = 0; k < 4; k += 2) { /* columns n, n + 1 (N is even): one 8-byte store */
                const int p = mb + mf * 16 + gq + (k >> 1) * 8, n = nb + nf * 8 + tq * 2;
                if (p < P && n < N)
                    *reinterpret_cast<float2 *>(out + (int64_t)p * N + n) = make_float2(acc[mf][nf][k], acc[mf][nf][k + 1]);
            }
}

/* The walk over the chunks from the terms in a.sloc; thread e owns state
 * elements 2e, 2e + 1 of (b, h). */
template <bool REV> __global__ void __launch_bounds__(256) ssd_state_pass_kernel(SsdArgs a)
{
    const int h = blockIdx.y, b = blockIdx.z, nc = a.nc;
    const int64_t bh = (int64_t)b * a.H + h, PN = (int64_t)a.P * a.N;
    const int64_t e = 2 * ((int64_t)blockIdx.x * blockDim.x + threadIdx.x);
    const bool act = e < PN;
    const float *src0 = REV ? a.dfinal : a.init;
    float2 v = (act && src0) ? make_float2(src0[bh * PN + e], src0[bh * PN + e + 1]) : make_float2(0.0f, 0.0f);
    const int64_t sto = bh * (nc + 1) * PN; /* this (b, h)'s states in a.sth, a.stl */
    for (int ci = 0; ci < nc; ci++) {
        const int c = REV ? nc - 1 - ci : ci, last = min(c * a.Q + a.Q, a.L) - 1;
        const float gc = ssd_rl(a, b, last) < 0 ? expf(a.cs[bh * a.L + last]) : 0.0f;
        const int64_t se = sto + (int64_t)c * PN + e;
        if (REV) {
            float dot = 0.0f;
            if (act) {
                *reinterpret_cast<__nv_bfloat162 *>(a.dsth + (bh * nc + c) * PN + e) = __floats2bfloat162_rn(v.x, v.y);
                const float2 h2 = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162 *>(a.sth + se));
                const float2 l2 = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162 *>(a.stl + se));
                dot = v.x * (h2.x + l2.x) + v.y * (h2.y + l2.y);
            }
            dot = block_sum(dot);
            if (threadIdx.x == 0)
                a.slp[(bh * nc + c) * a.nslp + blockIdx.x] = dot * (a.slp_pass ? gc : 1.0f);
        } else if (act) {
            const __nv_bfloat162 hi = __floats2bfloat162_rn(v.x, v.y);
            const float2 hf = __bfloat1622float2(hi);
            *reinterpret_cast<__nv_bfloat162 *>(a.sth + se) = hi;
            if (a.stl)
                *reinterpret_cast<__nv_bfloat162 *>(a.stl + se) = __floats2bfloat162_rn(v.x - hf.x, v.y - hf.y);
        }
        if (act) {
            const float2 t = *reinterpret_cast<const float2 *>(a.sloc + (bh * nc + c) * PN + e);
            v.x = gc * v.x + t.x;
            v.y = gc * v.y + t.y;
        }
    }
    if (!act)
        return;
    if (!REV) { /* scalar accesses: these tensors may be views at any offset */
        if (a.final_state) {
            a.final_state[bh * PN + e] = v.x;
            a.final_state[bh * PN + e + 1] = v.y;
        }
    } else if (a.dinit) {
        a.dinit[bh * PN + e] += v.x;
        a.dinit[bh * PN + e + 1] += v.y;
    }
}

/* Chunk states with one thread per state element (p, n), fp32 FMA. The reverse
 * mode reads du from a.du. */
template <typename T, bool REV> __global__ void __launch_bounds__(256) ssd_state_fma_kernel(SsdArgs a)
{
    const int h = blockIdx.y, b = blockIdx.z, g = h / a.Hg;
    const int P = a.P, N = a.N, L = a.L, nc = a.nc, HP = a.H * a.P;
    const int64_t bh = (int64_t)b * a.H + h, PN = (int64_t)P * N;
    const int64_t e = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    const bool act = e < PN;
    const int p = act ? (int)(e / N) : 0, n = act ? (int)(e % N) : 0;
    const float *src0 = REV ? a.dfinal : a.init;
    float acc = (act && src0) ? src0[bh * PN + e] : 0.0f;
    float *stb = a.states + bh * (nc + 1) * PN;
    const T *xs = (const T *)a.x, *bs = (const T *)a.Bm, *cm = (const T *)a.Cm;
    for (int step = 0; step < nc; step++) {
        const int c = REV ? nc - 1 - step : step;
        const int t0 = c * a.Q, clen = min(a.Q, L - t0), last = t0 + clen - 1;
        const float s_last = a.cs[bh * L + last];
        const int rl_last = ssd_rl(a, b, last);
        const float gc = rl_last < 0 ? expf(s_last) : 0.0f;
        if (REV) {
            if (act)
                a.dstates[(bh * nc + c) * PN + e] = acc;
            float dot = block_sum(act ? acc * stb[(int64_t)(c + (a.slp_pass ? 0 : 1)) * PN + e] : 0.0f);
            if (threadIdx.x == 0)
                a.slp[(bh * nc + c) * a.nslp + blockIdx.x] = dot * (a.slp_pass ? gc : 1.0f);
        } else if (act) {
            stb[(int64_t)c * PN + e] = acc;
        }
        acc *= gc;
        if (!act)
            continue;
        for (int t = t0; t < t0 + clen; t++) {
            const int64_t row = (int64_t)b * L + t;
            if (!REV) {
                float w = (t - t0 >= rl_last) ? expf(s_last - a.cs[bh * L + t]) * a.dtv[bh * L + t] : 0.0f;
                acc += w * load_f<T>(xs, row * a.xrs + (int64_t)h * P + p) * load_f<T>(bs, row * a.brs + (int64_t)g * N + n);
            } else {
                if (!a.du)
                    break; /* dy is zero */
                float et = ssd_rl(a, b, t) < 0 ? expf(a.cs[bh * L + t]) : 0.0f;
                acc += et * a.du[row * HP + (int64_t)h * P + p] * load_f<T>(cm, row * a.crs + (int64_t)g * N + n);
            }
        }
    }
    if (!act)
        return;
    if (!REV) {
        stb[(int64_t)nc * PN + e] = acc;
        if (a.final_state)
            a.final_state[bh * PN + e] = acc;
    } else if (a.dinit) {
        a.dinit[bh * PN + e] += acc;
    }
}

void ssd_launch_states(const SsdArgs &a, mt_dtype dt, bool tc, bool reverse, cudaStream_t st)
{
    if (tc) {
        ssd_dispatch_pp(a.P, [&](auto pp) {
            constexpr int PP = decltype(pp)::value;
            auto launch = [&](auto rev_) {
                constexpr bool REV = decltype(rev_)::value;
                static int allowed = 0;
                const size_t bytes = ssd_state_tc_smem<PP, REV>();
                ssd_allow_smem(ssd_chunk_state_tc_kernel<PP, REV>, bytes, &allowed);
                ssd_chunk_state_tc_kernel<PP, REV><<<dim3(a.NS, a.nc, a.Bz * a.H), 128, bytes, st>>>(a);
                LAUNCH_CHECK("ssd (chunk states)");
                ssd_state_pass_kernel<REV><<<dim3(ssd_pass_blocks(a), a.H, a.Bz), 256, 0, st>>>(a);
                LAUNCH_CHECK("ssd (state passing)");
            };
            if (reverse)
                launch(std::true_type{});
            else
                launch(std::false_type{});
        });
        return;
    }
    dim3 grid((unsigned)(((int64_t)a.P * a.N + 255) / 256), a.H, a.Bz);
    dispatch_float(dt, "ssd", [&](auto tag) {
        using T = typename decltype(tag)::type;
        if (reverse)
            ssd_state_fma_kernel<T, true><<<grid, 256, 0, st>>>(a);
        else
            ssd_state_fma_kernel<T, false><<<grid, 256, 0, st>>>(a);
        LAUNCH_CHECK("ssd (chunk states)");
    });
}
