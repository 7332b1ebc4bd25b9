/* Vector access for memory-bound kernels: V consecutive elements of T (float
 * or bf16; up to 16 bytes: V <= 4 in f32, V <= 8 in bf16) moved as one load
 * or store, converted to and from float registers. */
#ifndef MT_CUDA_VECTOR_CUH
#define MT_CUDA_VECTOR_CUH

#include "kernels/cuda/cuda_common.cuh"

/* V consecutive elements of T move as one load or store of V * sizeof(T)
 * bytes (2, 4, 8 or 16), their bits packed into 32-bit words by hand. The
 * 8- and 16-byte stores go through __stwb (st.global.wb, the default cache
 * policy) because the compiler otherwise splits them into per-element stores. */
static __device__ __forceinline__ unsigned vec_bits(float v) { return __float_as_uint(v); }
static __device__ __forceinline__ unsigned vec_bits(__nv_bfloat16 v) { return __bfloat16_as_ushort(v); }
template <typename T> static __device__ __forceinline__ T vec_from_bits(unsigned u);
template <> __device__ __forceinline__ float vec_from_bits<float>(unsigned u) { return __uint_as_float(u); }
template <> __device__ __forceinline__ __nv_bfloat16 vec_from_bits<__nv_bfloat16>(unsigned u)
{
    return __ushort_as_bfloat16((unsigned short)u);
}

/* The raw bits of V elements of T, as loaded: a kernel can issue several
 * loads into these and convert each to floats only when it uses it, so that
 * the loads in flight hold half the registers in bf16. */
template <typename T, int V> struct vec_raw {
    static constexpr int BYTES = (int)sizeof(T) * V, NW = BYTES < 4 ? 1 : BYTES / 4;
    unsigned w[NW];
};

template <typename T, int V> static __device__ __forceinline__ void vec_load_raw(vec_raw<T, V> &r, const T *p)
{
    constexpr int BYTES = vec_raw<T, V>::BYTES;
    if constexpr (BYTES == 2) {
        r.w[0] = *reinterpret_cast<const unsigned short *>(p);
    } else if constexpr (BYTES == 4) {
        r.w[0] = *reinterpret_cast<const unsigned *>(p);
    } else if constexpr (BYTES == 8) {
        uint2 u = *reinterpret_cast<const uint2 *>(p);
        r.w[0] = u.x;
        r.w[1] = u.y;
    } else {
        uint4 u = *reinterpret_cast<const uint4 *>(p);
        r.w[0] = u.x;
        r.w[1] = u.y;
        r.w[2] = u.z;
        r.w[3] = u.w;
    }
}

/* The same load through the read-only data cache (ld.global.nc), for
 * inputs that nothing writes while the kernel runs. */
template <typename T, int V> static __device__ __forceinline__ void vec_ldg_raw(vec_raw<T, V> &r, const T *p)
{
    constexpr int BYTES = vec_raw<T, V>::BYTES;
    if constexpr (BYTES == 2) {
        r.w[0] = __ldg(reinterpret_cast<const unsigned short *>(p));
    } else if constexpr (BYTES == 4) {
        r.w[0] = __ldg(reinterpret_cast<const unsigned *>(p));
    } else if constexpr (BYTES == 8) {
        uint2 u = __ldg(reinterpret_cast<const uint2 *>(p));
        r.w[0] = u.x;
        r.w[1] = u.y;
    } else {
        uint4 u = __ldg(reinterpret_cast<const uint4 *>(p));
        r.w[0] = u.x;
        r.w[1] = u.y;
        r.w[2] = u.z;
        r.w[3] = u.w;
    }
}

template <typename T, int V> static __device__ __forceinline__ void vec_unpack(float (&o)[V], const vec_raw<T, V> &r)
{
    constexpr int PER = 4 / (int)sizeof(T);
#pragma unroll
    for (int i = 0; i < V; i++) {
        unsigned u = r.w[i / PER] >> (8 * (int)sizeof(T) * (i % PER));
        o[i] = to_f<T>(vec_from_bits<T>(sizeof(T) == 4 ? u : (u & 0xffffu)));
    }
}

template <typename T, int V> static __device__ __forceinline__ void vec_load(float (&o)[V], const T *p)
{
    vec_raw<T, V> r;
    vec_load_raw<T, V>(r, p);
    vec_unpack<T, V>(o, r);
}

template <typename T, int V> static __device__ __forceinline__ void vec_store(T *p, const float (&o)[V])
{
    constexpr int BYTES = (int)sizeof(T) * V, NW = BYTES < 4 ? 1 : BYTES / 4, PER = 4 / (int)sizeof(T);
    unsigned w[NW];
#pragma unroll
    for (int i = 0; i < NW; i++)
        w[i] = 0u;
#pragma unroll
    for (int i = 0; i < V; i++)
        w[i / PER] |= vec_bits(from_f<T>(o[i])) << (8 * (int)sizeof(T) * (i % PER));
    if constexpr (BYTES == 2)
        *reinterpret_cast<unsigned short *>(p) = (unsigned short)w[0];
    else if constexpr (BYTES == 4)
        *reinterpret_cast<unsigned *>(p) = w[0];
    else if constexpr (BYTES == 8)
        __stwb(reinterpret_cast<uint2 *>(p), make_uint2(w[0], w[1]));
    else
        __stwb(reinterpret_cast<uint4 *>(p), make_uint4(w[0], w[1], w[2], w[3]));
}

/* p[0..V) += a, rounding once into T. */
template <typename T, int V> static __device__ __forceinline__ void vec_accum(T *p, const float (&a)[V])
{
    float o[V];
    vec_load<T, V>(o, p);
#pragma unroll
    for (int i = 0; i < V; i++)
        o[i] += a[i];
    vec_store<T, V>(p, o);
}

static __device__ __forceinline__ float sigmoid_f(float v)
{
    return 1.0f / (1.0f + expf(-v));
}

/* The same through the hardware exp2 (__expf) and a reciprocal, for the
 * memory-bound kernels where the IEEE expf and division cost more than the
 * rest: about 1e-7 relative at the magnitudes activations have, far below
 * bf16 rounding and the f32 tests' bound of 1e-5. For v < -87, 1 + exp(-v)
 * is inf and the reciprocal 0, the right limit. */
static __device__ __forceinline__ float sigmoid_fast(float v)
{
    return __frcp_rn(1.0f + __expf(-v));
}


/* Whether t (may be NULL) allows V-wide access at columns that are multiples
 * of V: data aligned to V elements and a row stride a multiple of V. */
static inline bool vec_ok(const mt_tensor *t, int V)
{
    if (!t)
        return true;
    size_t bytes = (size_t)V * mt_dtype_size(t->dtype);
    return (uintptr_t)t->data % bytes == 0 && mt_row_stride(t) % V == 0;
}

/* The widest V in {max_v, max_v / 2, ..., 1} (max_v a power of two)
 * dividing cols that every tensor given allows. */
template <typename... Ts> static int vec_pick_width_upto(int max_v, int64_t cols, const Ts *...ts)
{
    for (int V = max_v; V > 1; V /= 2)
        if (cols % V == 0 && (vec_ok(ts, V) && ...))
            return V;
    return 1;
}

/* The widest V in {4, 2, 1} dividing cols that every tensor given allows. */
template <typename... Ts> static int vec_pick_width(int64_t cols, const Ts *...ts)
{
    return vec_pick_width_upto(4, cols, ts...);
}

#endif
