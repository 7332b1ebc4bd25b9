/* Philox4x32-10 counter-based random numbers: element i of a fill with seed s
 * depends only on (s, i), so a fill is reproducible and needs no state. The
 * same code runs on the host and in CUDA kernels. */
#ifndef MT_RNG_H
#define MT_RNG_H

#include <math.h>
#include <stdint.h>

#ifdef __CUDACC__
#define MT_HOSTDEV __host__ __device__ __forceinline__
#else
#define MT_HOSTDEV static inline
#endif

MT_HOSTDEV uint32_t mt_mulhilo32(uint32_t a, uint32_t b, uint32_t *hi)
{
    uint64_t p = (uint64_t)a * b;
    *hi = (uint32_t)(p >> 32);
    return (uint32_t)p;
}

/* Four 32-bit random words for counter ctr under key seed. */
MT_HOSTDEV void mt_philox4x32(uint64_t seed, uint64_t ctr, uint32_t out[4])
{
    uint32_t c0 = (uint32_t)ctr, c1 = (uint32_t)(ctr >> 32), c2 = 0, c3 = 0;
    uint32_t k0 = (uint32_t)seed, k1 = (uint32_t)(seed >> 32);
    for (int round = 0; round < 10; round++) {
        uint32_t hi0, hi1;
        uint32_t lo0 = mt_mulhilo32(0xD2511F53u, c0, &hi0);
        uint32_t lo1 = mt_mulhilo32(0xCD9E8D57u, c2, &hi1);
        uint32_t n0 = hi1 ^ c1 ^ k0, n2 = hi0 ^ c3 ^ k1;
        c0 = n0; c1 = lo1; c2 = n2; c3 = lo0;
        k0 += 0x9E3779B9u;
        k1 += 0xBB67AE85u;
    }
    out[0] = c0; out[1] = c1; out[2] = c2; out[3] = c3;
}

/* Uniform in (0, 1): never exactly 0, so log() of it is finite. */
MT_HOSTDEV double mt_u32_to_unit(uint32_t x)
{
    return ((double)x + 0.5) * (1.0 / 4294967296.0);
}

/* Element i of a uniform [lo, hi) fill. */
MT_HOSTDEV double mt_rng_uniform(uint64_t seed, uint64_t i, double lo, double hi)
{
    uint32_t r[4];
    mt_philox4x32(seed, i, r);
    return lo + (hi - lo) * mt_u32_to_unit(r[0]);
}

/* Element i of a normal(mean, std) fill (Box-Muller on one Philox block). */
MT_HOSTDEV double mt_rng_normal(uint64_t seed, uint64_t i, double mean, double std)
{
    uint32_t r[4];
    mt_philox4x32(seed, i, r);
    double u1 = mt_u32_to_unit(r[0]), u2 = mt_u32_to_unit(r[1]);
    return mean + std * sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

#endif
