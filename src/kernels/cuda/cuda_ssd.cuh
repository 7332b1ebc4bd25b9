/* Shared pieces of the SSD (Mamba-2) scan kernels: the argument block every
 * kernel takes, scalar helpers (softplus, the dt clamp, silu), fixed-order
 * block scans, bf16 tensor-core helpers (ldmatrix, mma.sync m16n8k16) and
 * shared-memory tile loaders (plain and cp.async), and the launchers the
 * SSD files share. See cuda_ssd_fwd.cu for the algorithm and the kernel map. */
#ifndef MT_CUDA_SSD_CUH
#define MT_CUDA_SSD_CUH

#include <type_traits>

#include "kernels/cuda/cuda_common.cuh"

typedef __nv_bfloat16 bf16;

/* Rows of the tensor-core tiles (time steps per tile) and of the FMA tiles. */
#define SSD_TT 64
#define SSD_FT 16
/* Largest chunk: the per-chunk scalar arrays in shared memory hold this many. */
#define SSD_QMAX 256

/* Everything a kernel may need; passed by value. T-typed tensors are void *
 * (the kernels are templated on T). Row strides are in elements. */
struct SsdArgs {
    int Bz, L, H, P, G, N, Q, nc, Hg; /* Hg = H / G heads per group */
    int NP;                           /* N rounded up to 64 (tensor-core path) */
    int NS, HS;                       /* tensor-core path: N slices of 64 (state kernels), head splits (dB, dC) */
    int NSC;                          /* tensor-core path: column slices of the dB, dC kernels */
    const void *x, *dt, *Bm, *Cm, *z, *dy;
    int64_t xrs, dtrs, brs, crs, zrs, dyrs;
    const float *A_log, *dt_bias, *D;
    int d_per_channel;
    const float *init, *dfinal;
    const int *seq;
    int64_t seqrs;
    float dt_min, dt_max;
    /* scratch (f32 unless said) */
    float *dtv, *cs; /* (Bz, H, L): delta and its per-chunk inclusive cumsum times A */
    float *wsc, *esc; /* (Bz, H, L): chunk-state scales w_t delta_t and e_t (see cuda_ssd_fwd.cu) */
    int *rl;         /* (Bz, L): last restart position inside the chunk at or before t, -1 if none; NULL: none */
    float *states;   /* FMA path: (Bz, H, nc + 1, P, N): state entering chunk c; c = nc is the final state */
    bf16 *sth, *stl; /* tensor-core path: the states entering chunks c < nc as bf16 hi + lo (Bz, H, nc + 1, P, N); stl NULL in the forward */
    float *sloc;     /* tensor-core path: (Bz, H, nc, P, N) each chunk's own term of the states or their gradients */
    float *cb;       /* tensor-core path: (Bz, G, nc, Q, Q) C_i . B_j per chunk (tiles j-tile <= i-tile) */
    float *dstates;  /* FMA path: (Bz, H, nc, P, N): gradient of the state leaving chunk c */
    bf16 *dsth;      /* tensor-core path: the same rounded to bf16, as its products use it */
    float *slp;      /* (Bz, H, nc, nslp): per chunk, partials of <dS_c, H_{c+1}> (slp_pass 0) or g_c <dS_c, H_c> (1) */
    int nslp, slp_pass;
    /* The gradient of the cumsum s_i (see cuda_ssd_bwd.cu) from (Bz, H, L) arrays:
     * ds_i = rowds_i - cold_i + [i = chunk end] (sum of slp + sum over the chunk of sst). */
    float *rowds;    /* sum_j M_ij + <du_i, inter-chunk y_i>  (= <du_i, y_i - D x_i>); tensor cores: the second term */
    float *ddd;      /* d loss / d delta_j through delta_j x_j: <x_j, G_j> */
    float *sst;      /* tensor-core path: delta_j <x_j, G_j^state>; NULL: cold = delta ddd */
    float *rowMp;    /* tensor-core path: (Bz*H, nc, ndt, Q): per column tile, sum over its columns j of M_ij */
    float *colM;     /* tensor-core path: (Bz, H, L): sum_i M_ij */
    float *du;          /* FMA path: (Bz*L, H*P) dy * silu(z) */
    const bf16 *duh, *dul; /* tensor-core path: dy * silu(z) = duh + dul (row stride durs): dy and NULL */
    int64_t durs;          /* when z is NULL; both NULL when dy is */
    float *dBp, *dCp;   /* (HS, Bz*L, G*N) partial dBm, dCm */
    float *dDp;         /* (nparts, H*P) partial dD */
    int ndt;            /* row tiles per chunk of the backward kernels (dD and colM partials per chunk) */
    /* outputs */
    void *y;
    int64_t yrs;
    float *final_state;
    void *dx, *dz;
    int64_t dxrs, dzrs;
    float *dinit;
};

/* ------------------------------------------------------------------------ */
/* Scalars. */

__device__ __forceinline__ float ssd_softplus(float v) { return fmaxf(v, 0.0f) + log1pf(expf(-fabsf(v))); }
__device__ __forceinline__ float ssd_sigmoid(float v) { return 1.0f / (1.0f + expf(-v)); }
__device__ __forceinline__ float ssd_silu(float v) { return v * ssd_sigmoid(v); }
__device__ __forceinline__ float ssd_dsilu(float v)
{
    float s = ssd_sigmoid(v);
    return s * (1.0f + v * (1.0f - s));
}

/* delta = clamp(softplus(raw + bias), lo, hi); *dvd = d delta / d raw. */
__device__ __forceinline__ float ssd_delta(float raw, float bias, float lo, float hi, float *dvd)
{
    float v = raw + bias, sp = ssd_softplus(v);
    float d = fminf(fmaxf(sp, lo), hi);
    if (dvd)
        *dvd = (sp < lo || sp > hi) ? 0.0f : ssd_sigmoid(v);
    return d;
}

__device__ __forceinline__ int ssd_rl(const SsdArgs &a, int b, int t)
{
    return a.rl ? a.rl[(int64_t)b * a.L + t] : -1;
}

/* Inclusive scan over the block (blockDim.x <= SSD_QMAX, a multiple of 32) in
 * a fixed order (Hillis-Steele); reverse scans from the last thread down.
 * Every thread must call it. */
__device__ __forceinline__ float ssd_block_scan(float v, float *sh, bool reverse)
{
    int n = blockDim.x, i = reverse ? n - 1 - threadIdx.x : threadIdx.x;
    __syncthreads();
    sh[i] = v;
    __syncthreads();
    for (int off = 1; off < n; off <<= 1) {
        float t = i >= off ? sh[i - off] : 0.0f;
        __syncthreads();
        sh[i] += t;
        __syncthreads();
    }
    return sh[i];
}

__device__ __forceinline__ int ssd_block_scan_max(int v, int *sh)
{
    int n = blockDim.x, i = threadIdx.x;
    __syncthreads();
    sh[i] = v;
    __syncthreads();
    for (int off = 1; off < n; off <<= 1) {
        int t = i >= off ? sh[i - off] : -1;
        __syncthreads();
        sh[i] = max(sh[i], t);
        __syncthreads();
    }
    return sh[i];
}

/* ------------------------------------------------------------------------ */
/* Tensor cores: bf16 mma.sync m16n8k16 with fp32 accumulation. Fragments are
 * loaded with ldmatrix from shared tiles whose row length (ld, in elements)
 * is the tile width plus 8: 16-byte aligned rows, and eight consecutive rows
 * fall in distinct banks.
 * Naming: A is M x K, B is K x N; a tile "[m][k]" has k contiguous. */

__device__ __forceinline__ uint32_t ssd_smem_u32(const void *p)
{
    return (uint32_t)__cvta_generic_to_shared(p);
}

__device__ __forceinline__ void ssd_ldsm4(uint32_t r[4], const bf16 *p)
{
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(ssd_smem_u32(p)));
}

__device__ __forceinline__ void ssd_ldsm4t(uint32_t r[4], const bf16 *p)
{
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(ssd_smem_u32(p)));
}

__device__ __forceinline__ void ssd_mma(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1)
{
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

/* A fragment, rows m0..m0+15, k0..k0+15. TR false: tile [m][k]; true: [k][m]. */
template <bool TR> __device__ __forceinline__ void ssd_frag_a(uint32_t a[4], const bf16 *s, int ld, int m0, int k0)
{
    int l = threadIdx.x & 31;
    if (!TR)
        ssd_ldsm4(a, s + (m0 + (l & 15)) * ld + k0 + (l >> 4) * 8);
    else
        ssd_ldsm4t(a, s + (k0 + (l & 7) + ((l >> 4) << 3)) * ld + m0 + ((l >> 3) & 1) * 8);
}

/* B fragments of two n-tiles n0..n0+7 (b[0], b[1]) and n0+8..n0+15 (b[2],
 * b[3]), k0..k0+15. TR false: tile [n][k]; true: [k][n]. */
template <bool TR> __device__ __forceinline__ void ssd_frag_b2(uint32_t b[4], const bf16 *s, int ld, int n0, int k0)
{
    int l = threadIdx.x & 31;
    if (!TR)
        ssd_ldsm4(b, s + (n0 + (l & 7) + ((l >> 4) << 3)) * ld + k0 + ((l >> 3) & 1) * 8);
    else
        ssd_ldsm4t(b, s + (k0 + (l & 7) + ((l >> 3) & 1) * 8) * ld + n0 + (l >> 4) * 8);
}

/* acc (16 x NF*8) += A (16 x K) . B (K x NF*8), both from shared memory. */
template <int NF, bool ATR, bool BTR>
__device__ __forceinline__ void ssd_warp_gemm(float (*acc)[4], const bf16 *sA, int lda, int m0, const bf16 *sB, int ldb,
                                              int n0, int K)
{
    for (int k0 = 0; k0 < K; k0 += 16) {
        uint32_t a[4];
        ssd_frag_a<ATR>(a, sA, lda, m0, k0);
        if constexpr (NF <= 8) { /* all B fragments first, then the mma: loads overlap */
            uint32_t b[NF / 2][4];
#pragma unroll
            for (int np = 0; np < NF / 2; np++)
                ssd_frag_b2<BTR>(b[np], sB, ldb, n0 + np * 16, k0);
#pragma unroll
            for (int np = 0; np < NF / 2; np++) {
                ssd_mma(acc[2 * np], a, b[np][0], b[np][1]);
                ssd_mma(acc[2 * np + 1], a, b[np][2], b[np][3]);
            }
        } else {
#pragma unroll
            for (int nf = 0; nf < NF; nf += 2) {
                uint32_t b[4];
                ssd_frag_b2<BTR>(b, sB, ldb, n0 + nf * 8, k0);
                ssd_mma(acc[nf], a, b[0], b[1]);
                ssd_mma(acc[nf + 1], a, b[2], b[3]);
            }
        }
    }
}

/* acc (16 x NF*8) += A (16 x 64, register fragments) . B (64 x NF*8, shared). */
template <int NF, bool BTR>
__device__ __forceinline__ void ssd_warp_gemm_ra(float (*acc)[4], const uint32_t (*af)[4], const bf16 *sB, int ldb, int n0)
{
#pragma unroll
    for (int kk = 0; kk < 4; kk++) {
#pragma unroll
        for (int nf = 0; nf < NF; nf += 2) {
            uint32_t b[4];
            ssd_frag_b2<BTR>(b, sB, ldb, n0 + nf * 8, kk * 16);
            ssd_mma(acc[nf], af[kk], b[0], b[1]);
            ssd_mma(acc[nf + 1], af[kk], b[2], b[3]);
        }
    }
}

__device__ __forceinline__ uint32_t ssd_pack2(float lo, float hi)
{
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<uint32_t *>(&v);
}

/* A 16 x 64 accumulator (8 n-tiles) as the A operand (4 k-steps) of the next mma. */
__device__ __forceinline__ void ssd_acc_to_a(const float (*acc)[4], uint32_t (*af)[4])
{
#pragma unroll
    for (int kk = 0; kk < 4; kk++) {
        af[kk][0] = ssd_pack2(acc[2 * kk][0], acc[2 * kk][1]);
        af[kk][1] = ssd_pack2(acc[2 * kk][2], acc[2 * kk][3]);
        af[kk][2] = ssd_pack2(acc[2 * kk + 1][0], acc[2 * kk + 1][1]);
        af[kk][3] = ssd_pack2(acc[2 * kk + 1][2], acc[2 * kk + 1][3]);
    }
}

/* The thread's part (mma accumulator layout: rows r0 and r0 + 8 of the
 * block's 64 own rows, columns nf*8 + 2*tq + {0, 1}) of the masked, decayed
 * C.B tile. Own rows are i and other columns j (TRANS false: the chunk scan)
 * or own rows j and other columns i (TRANS true: dx); the value is
 *   CB_ij exp(s_i - s_j) [delta_j]  on rl_i <= j <= i, else 0.
 * Off the diagonal (off) the factor is s_rf[own row] * s_cf[other column]
 * (delta folded in by the caller); on it, exp(s_i - s_j), times delta_j
 * from s_d unless s_d is NULL. cbc: the chunk's (Q, Q) C.B scratch. An
 * off-diagonal j-tile is whole (64 columns before every own row). */
template <bool TRANS>
__device__ __forceinline__ void ssd_decayed_cb(float (*out)[4], const float *cbc, int Q, int own0, int nown,
                                               int other0, int nother, int r0, bool off, const float *s_s,
                                               const float *s_d, const int *s_rl, const float *s_rf, const float *s_cf)
{
    const int tq = threadIdx.x & 3;
    bool ov[2];
    int o[2], own_rl[2];
    float own_s[2], own_d[2], rf[2];
#pragma unroll
    for (int rr = 0; rr < 2; rr++) {
        const int r = r0 + 8 * rr;
        ov[rr] = r < nown;
        o[rr] = own0 + r;
        own_rl[rr] = ov[rr] ? s_rl[o[rr]] : 0;
        own_s[rr] = ov[rr] ? s_s[o[rr]] : 0.0f;
        own_d[rr] = (s_d && ov[rr]) ? s_d[o[rr]] : 0.0f;
        rf[rr] = off ? s_rf[r] : 0.0f;
    }
    if (!TRANS && off && (Q & 1) == 0) { /* own row i, columns j, j + 1: one 8-byte load (Q even) */
#pragma unroll
        for (int nf = 0; nf < 8; nf++) {
            const int ql = nf * 8 + tq * 2, j = other0 + ql;
            const float cf0 = s_cf[ql], cf1 = s_cf[ql + 1];
#pragma unroll
            for (int rr = 0; rr < 2; rr++) {
                const float2 v = ov[rr] ? __ldg(reinterpret_cast<const float2 *>(cbc + (int64_t)o[rr] * Q + j))
                                        : make_float2(0.0f, 0.0f);
                out[nf][2 * rr] = (ov[rr] && j >= own_rl[rr]) ? v.x * (rf[rr] * cf0) : 0.0f;
                out[nf][2 * rr + 1] = (ov[rr] && j + 1 >= own_rl[rr]) ? v.y * (rf[rr] * cf1) : 0.0f;
            }
        }
        return;
    }
    if (off) {
#pragma unroll
        for (int nf = 0; nf < 8; nf++)
#pragma unroll
            for (int k = 0; k < 2; k++) {
                const int ql = nf * 8 + tq * 2 + k, q = other0 + ql;
                const bool qv = ql < nother;
                const int q_rl = qv ? s_rl[q] : 0;
                const float cf = s_cf[ql];
#pragma unroll
                for (int rr = 0; rr < 2; rr++) {
                    const int i = TRANS ? q : o[rr], j = TRANS ? o[rr] : q, rl_i = TRANS ? q_rl : own_rl[rr];
                    out[nf][k + 2 * rr] =
                        (ov[rr] && qv && j >= rl_i) ? __ldg(cbc + (int64_t)i * Q + j) * (rf[rr] * cf) : 0.0f;
                }
            }
        return;
    }
#pragma unroll
    for (int nf = 0; nf < 8; nf++)
#pragma unroll
        for (int k = 0; k < 2; k++) {
            const int ql = nf * 8 + tq * 2 + k, q = other0 + ql;
            const bool qv = ql < nother;
            const int q_rl = qv ? s_rl[q] : 0;
            const float q_s = qv ? s_s[q] : 0.0f, q_d = (s_d && qv) ? s_d[q] : 0.0f;
#pragma unroll
            for (int rr = 0; rr < 2; rr++) {
                const int i = TRANS ? q : o[rr], j = TRANS ? o[rr] : q, rl_i = TRANS ? q_rl : own_rl[rr];
                float v = 0.0f;
                if (ov[rr] && qv && j <= i && j >= rl_i) {
                    v = __ldg(cbc + (int64_t)i * Q + j) * expf(TRANS ? q_s - own_s[rr] : own_s[rr] - q_s);
                    if (s_d)
                        v *= TRANS ? own_d[rr] : q_d;
                }
                out[nf][k + 2 * rr] = v;
            }
        }
}

/* A zeroed mma accumulator: NF fragments of 8 columns, 4 values a thread. */
template <int NF> __device__ __forceinline__ void ssd_zero(float (&acc)[NF][4])
{
#pragma unroll
    for (int nf = 0; nf < NF; nf++)
#pragma unroll
        for (int k = 0; k < 4; k++)
            acc[nf][k] = 0.0f;
}

/* The sum of v over a warp's 8 row groups (lanes of one tq): one column of
 * its 16 rows, in a fixed order. */
__device__ __forceinline__ float ssd_sum_warp_rows(float v)
{
    v += __shfl_xor_sync(0xffffffffu, v, 4);
    v += __shfl_xor_sync(0xffffffffu, v, 8);
    return v + __shfl_xor_sync(0xffffffffu, v, 16);
}

/* dD's partial of one 64-row tile: dsum[nf][k] is the thread's sum over its
 * rows of du x at column nf*8 + 2*tq + k; the warp's 16 rows are summed by
 * shuffles, the 4 warps in a fixed order through sred (4 * PP floats), into
 * a.dDp[part] for head h. Every thread must call it. */
template <int NFP, int PP>
__device__ __forceinline__ void ssd_dd_partial(const SsdArgs &a, const float (*dsum)[2], float *sred, int64_t part,
                                               int h)
{
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, gq = lane >> 2, tq = lane & 3;
#pragma unroll
    for (int nf = 0; nf < NFP; nf++)
#pragma unroll
        for (int k = 0; k < 2; k++) {
            const float v = ssd_sum_warp_rows(dsum[nf][k]);
            if (gq == 0)
                sred[warp * PP + nf * 8 + tq * 2 + k] = v;
        }
    __syncthreads();
    const int H = a.H, P = a.P;
    for (int p = threadIdx.x; p < P; p += blockDim.x)
        a.dDp[part * H * P + (int64_t)h * P + p] = (sred[p] + sred[PP + p]) + (sred[2 * PP + p] + sred[3 * PP + p]);
}

/* ------------------------------------------------------------------------ */
/* Global loads of 8 consecutive values as float, and shared-tile fills. The
 * tensor-core path only runs where every row is 16-byte aligned and P, N are
 * multiples of 8 (ssd_use_tc), so a group of 8 values is either wholly
 * valid or wholly past the edge: one predicated vector load, no branches,
 * which lets a fill issue several loads before it waits on any. */

__device__ __forceinline__ void ssd_ld8(const bf16 *p, int nvalid, float v[8])
{
    const uint4 u = nvalid > 0 ? __ldg(reinterpret_cast<const uint4 *>(p)) : make_uint4(0, 0, 0, 0);
    const __nv_bfloat162 *h2 = reinterpret_cast<const __nv_bfloat162 *>(&u);
#pragma unroll
    for (int k = 0; k < 4; k++) {
        float2 f = __bfloat1622float2(h2[k]);
        v[2 * k] = f.x;
        v[2 * k + 1] = f.y;
    }
}

__device__ __forceinline__ void ssd_ld8(const float *p, int nvalid, float v[8])
{
    const float4 z = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    const float4 a = nvalid > 0 ? __ldg(reinterpret_cast<const float4 *>(p)) : z;
    const float4 b = nvalid > 0 ? __ldg(reinterpret_cast<const float4 *>(p) + 1) : z;
    v[0] = a.x; v[1] = a.y; v[2] = a.z; v[3] = a.w;
    v[4] = b.x; v[5] = b.y; v[6] = b.z; v[7] = b.w;
}

/* 8 bf16 values from shared memory as float. */
__device__ __forceinline__ void ssd_ld8s(const bf16 *s, float v[8])
{
    const uint4 u = *reinterpret_cast<const uint4 *>(s);
    const __nv_bfloat162 *h2 = reinterpret_cast<const __nv_bfloat162 *>(&u);
#pragma unroll
    for (int k = 0; k < 4; k++) {
        float2 f = __bfloat1622float2(h2[k]);
        v[2 * k] = f.x;
        v[2 * k + 1] = f.y;
    }
}

__device__ __forceinline__ void ssd_st8(bf16 *s, const float v[8])
{
    uint4 u;
    u.x = ssd_pack2(v[0], v[1]);
    u.y = ssd_pack2(v[2], v[3]);
    u.z = ssd_pack2(v[4], v[5]);
    u.w = ssd_pack2(v[6], v[7]);
    *reinterpret_cast<uint4 *>(s) = u;
}

/* Loads per thread a fill has in flight before its first shared store. */
#define SSD_FILL_BATCH 4

/* Fills a shared bf16 tile of R rows x C columns (C a multiple of 8, row
 * length ld) with f(r, c, v): the 8 values of columns c..c+7 of row r. The
 * values of SSD_FILL_BATCH groups are gathered before any is stored, so
 * their global loads overlap. */
template <typename F> __device__ __forceinline__ void ssd_fill(bf16 *s, int ld, int R, int C, F f)
{
    const int cg = C >> 3, n = R * cg;
    for (int base = threadIdx.x; base < n; base += SSD_FILL_BATCH * blockDim.x) {
        float v[SSD_FILL_BATCH][8];
#pragma unroll
        for (int u = 0; u < SSD_FILL_BATCH; u++) {
            const int idx = min(base + u * (int)blockDim.x, n - 1), r = idx / cg;
            f(r, (idx - r * cg) << 3, v[u]);
        }
#pragma unroll
        for (int u = 0; u < SSD_FILL_BATCH; u++) {
            const int idx = base + u * blockDim.x, r = idx / cg, c = (idx - r * cg) << 3;
            if (idx >= n)
                break;
            ssd_st8(s + r * ld + c, v[u]);
        }
    }
}

/* Asynchronous copies (cp.async, 16 bytes, L2 only) of bf16 tiles into
 * shared memory, for tiles used as stored: a block issues the next tile's
 * copy, then computes on the current one while it lands. */
__device__ __forceinline__ void ssd_cp16(bf16 *dst, const bf16 *src, bool valid)
{
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(ssd_smem_u32(dst)), "l"(src),
                 "r"(valid ? 16 : 0));
}

__device__ __forceinline__ void ssd_cp_commit() { asm volatile("cp.async.commit_group;\n" ::); }

/* Waits until at most PENDING of this thread's committed groups are in flight. */
template <int PENDING> __device__ __forceinline__ void ssd_cp_wait()
{
    asm volatile("cp.async.wait_group %0;\n" ::"n"(PENDING));
}

/* Copies R rows x C columns (C a multiple of 8, row length ld) into s:
 * row(r) is the global address of row r's first column, nrows and ncols
 * the valid extent; the rest is zero-filled. base: any valid global address. */
template <typename F>
__device__ __forceinline__ void ssd_cp_tile(bf16 *s, int ld, int R, int C, int nrows, int ncols, const bf16 *base,
                                            F row)
{
    const int cg = C >> 3;
    for (int idx = threadIdx.x; idx < R * cg; idx += blockDim.x) {
        const int r = idx / cg, c = (idx - r * cg) << 3;
        const bool valid = r < nrows && c < ncols;
        ssd_cp16(s + r * ld + c, valid ? row(r) + c : base, valid);
    }
}

__device__ __forceinline__ float ssd_bf16_round(float v) { return __bfloat162float(__float2bfloat16_rn(v)); }

/* du = dy * silu(z) for 8 columns: hi + lo from the backward's du arrays
 * (0 when dy is NULL). */
__device__ __forceinline__ void ssd_du8(const SsdArgs &a, int64_t row, int col, int nvalid, float v[8])
{
    const int64_t off = row * a.durs + col;
    ssd_ld8(a.duh + (a.duh ? off : 0), a.duh ? nvalid : 0, v);
    if (a.dul) {
        float lo[8];
        ssd_ld8(a.dul + off, nvalid, lo);
#pragma unroll
        for (int k = 0; k < 8; k++)
            v[k] += lo[k];
    }
}

/* ------------------------------------------------------------------------ */
/* Launch helpers. */

/* Calls f with the headdim padded to a tile width (32, 64 or 128) as a constant. */
template <typename F> static void ssd_dispatch_pp(int P, F f)
{
    if (P <= 32)
        f(std::integral_constant<int, 32>{});
    else if (P <= 64)
        f(std::integral_constant<int, 64>{});
    else
        f(std::integral_constant<int, 128>{});
}

/* Raises a kernel's dynamic shared memory limit once per size seen. */
template <typename K> static void ssd_allow_smem(K kernel, size_t bytes, int *allowed)
{
    if (bytes > 48 * 1024 && (int)bytes > *allowed) {
        CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
        *allowed = (int)bytes;
    }
}

/* Launchers shared by the forward and the backward. */

/* Blocks per (b, h) of the tensor-core state passing (256 threads, two
 * elements each): the backward's slp partials per chunk. */
static inline int ssd_pass_blocks(const SsdArgs &a) { return (int)(((int64_t)a.P * a.N / 2 + 255) / 256); }

/* Tensor-core path: bf16 inputs, headdim <= 128, d_state <= 256, both
 * multiples of 8, rows 16-byte aligned (dy too once it is set). */
bool ssd_use_tc(const SsdArgs &a, mt_dtype dt);
/* delta, cumsum, restarts. */
void ssd_launch_cumsum(const SsdArgs &a, mt_dtype dt, cudaStream_t st);
/* Chunk states and their passing (reverse: the state gradients), in cuda_ssd_state.cu. */
void ssd_launch_states(const SsdArgs &a, mt_dtype dt, bool tc, bool reverse, cudaStream_t st);
/* Tensor-core path: a.cb (allocated here from scratch). */
void ssd_launch_cb(SsdArgs &a, mt_arena *scratch, cudaStream_t st);
/* Chunk scan: y; in backward mode rowds and dz. */
void ssd_launch_scan(const SsdArgs &a, mt_dtype dt, bool tc, bool bwd, cudaStream_t st);
/* Fills the dims, inputs and forward scratch of a from the tensors. */
void ssd_setup(SsdArgs &a, mt_arena *scratch, const mt_ssd_inputs *in, const char *op);
/* The chunk states' scratch: f32 (FMA path) or bf16 hi (+ lo when with_lo)
 * on tensor cores, and their per-chunk terms (a.sloc). */
void ssd_alloc_states(SsdArgs &a, mt_arena *scratch, bool tc, bool with_lo);
/* Tensor-core dBm (db) or dCm partials, in cuda_ssd_bwd_bc.cu. */
void ssd_launch_dbc_tc(const SsdArgs &a, bool db, cudaStream_t st);

#endif
