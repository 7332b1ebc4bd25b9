/* Shared by the CPU kernels: typed element access, temporaries, and the
 * kernel declarations the vtable in cpu_backend.c points at.
 *
 * Every kernel loads elements into double, computes in double and rounds once
 * when it stores: f32 by a plain cast, bf16 through f32 with round to nearest
 * even (as mt_set does and as the GPU does). */
#ifndef MT_CPU_INTERNAL_H
#define MT_CPU_INTERNAL_H

#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "core/arena.h"
#include "core/error.h"
#include "core/tensor.h"
#include "kernels/backend.h"

/* Element i of a contiguous run of dt values starting at p (a row, or a whole
 * contiguous tensor). */
static inline double cpu_load(mt_dtype dt, const void *p, int64_t i)
{
    switch (dt) {
    case MT_F32: return ((const float *)p)[i];
    case MT_BF16: return mt_bf16_to_f32(((const uint16_t *)p)[i]);
    case MT_F64: return ((const double *)p)[i];
    case MT_I32: return ((const int32_t *)p)[i];
    }
    return 0;
}

static inline void cpu_store(mt_dtype dt, void *p, int64_t i, double v)
{
    switch (dt) {
    case MT_F32: ((float *)p)[i] = (float)v; break;
    case MT_BF16: ((uint16_t *)p)[i] = mt_f32_to_bf16((float)v); break;
    case MT_F64: ((double *)p)[i] = v; break;
    case MT_I32: ((int32_t *)p)[i] = (int32_t)v; break;
    }
}

/* p[i] += v, rounded once into dt. */
static inline void cpu_accumulate(mt_dtype dt, void *p, int64_t i, double v)
{
    cpu_store(dt, p, i, cpu_load(dt, p, i) + v);
}

/* The first element of row r of a row-major tensor. */
static inline void *cpu_row(const mt_tensor *t, int64_t r)
{
    return (char *)t->data + (size_t)(r * mt_row_stride(t)) * mt_dtype_size(t->dtype);
}

/* Element i of a contiguous i32 tensor (ids, targets). */
static inline int32_t cpu_index(const mt_tensor *t, int64_t i)
{
    return ((const int32_t *)t->data)[i];
}

/* 1 / (1 + exp(-x)) without overflowing exp for large |x|. */
static inline double cpu_sigmoid(double x)
{
    if (x >= 0)
        return 1.0 / (1.0 + exp(-x));
    double e = exp(x);
    return e / (1.0 + e);
}

/* x * sigmoid(x), and its derivative sigmoid(x) * (1 + x * (1 - sigmoid(x))). */
static inline double cpu_silu(double x)
{
    return x * cpu_sigmoid(x);
}

static inline double cpu_silu_grad(double x)
{
    double s = cpu_sigmoid(x);
    return s * (1.0 + x * (1.0 - s));
}

/* log(1 + exp(x)) as max(x, 0) + log1p(exp(-|x|)), so exp never overflows. */
static inline double cpu_softplus(double x)
{
    return fmax(x, 0.0) + log1p(exp(-fabs(x)));
}

/* Kernel temporaries come from the scratch arena when the caller passes one and
 * from the heap otherwise (forward kernels get no arena). */
static inline void *cpu_temp_alloc(mt_arena *scratch, size_t bytes)
{
    if (scratch)
        return mt_arena_alloc(scratch, bytes);
    void *p = malloc(bytes ? bytes : 1);
    if (!p)
        mt_fatal("cpu backend: out of host memory for %zu bytes of temporaries", bytes);
    return p;
}

static inline void cpu_temp_free(mt_arena *scratch, void *p)
{
    if (!scratch)
        free(p);
}

/* Each kernel is declared through its op's type in backend.h, so the
 * compiler checks its definition against the op's one signature. */
mt_embedding_fwd_fn mt_cpu_embedding_fwd;
mt_embedding_bwd_fn mt_cpu_embedding_bwd;

mt_linear_fwd_fn mt_cpu_linear_fwd;
mt_linear_bwd_fn mt_cpu_linear_bwd;

mt_add_fwd_fn mt_cpu_add_fwd;
mt_mul_fwd_fn mt_cpu_mul_fwd;
mt_add_bwd_fn mt_cpu_add_bwd;
mt_mul_bwd_fn mt_cpu_mul_bwd;
mt_silu_fwd_fn mt_cpu_silu_fwd;
mt_silu_bwd_fn mt_cpu_silu_bwd;
mt_softplus_fwd_fn mt_cpu_softplus_fwd;
mt_softplus_bwd_fn mt_cpu_softplus_bwd;
mt_cast_fwd_fn mt_cpu_cast_fwd;
mt_cast_bwd_fn mt_cpu_cast_bwd;
mt_axpy_fn mt_cpu_axpy;

mt_adamw_step_fn mt_cpu_adamw_step;
mt_sumsq_fn mt_cpu_sumsq;
mt_sumsq_ranges_fn mt_cpu_sumsq_ranges;

mt_rmsnorm_fwd_fn mt_cpu_rmsnorm_fwd;
mt_rmsnorm_apply_fn mt_cpu_rmsnorm_apply;
mt_rmsnorm_bwd_fn mt_cpu_rmsnorm_bwd;

mt_cross_entropy_stats_fn mt_cpu_cross_entropy_stats;
mt_cross_entropy_combine_fn mt_cpu_cross_entropy_combine;
mt_cross_entropy_bwd_fn mt_cpu_cross_entropy_bwd;

mt_conv1d_fwd_fn mt_cpu_conv1d_fwd;
mt_conv1d_bwd_fn mt_cpu_conv1d_bwd;
mt_conv1d_final_state_fwd_fn mt_cpu_conv1d_final_state_fwd;
mt_conv1d_final_state_bwd_fn mt_cpu_conv1d_final_state_bwd;

mt_ssd_fwd_fn mt_cpu_ssd_fwd;
mt_ssd_bwd_fn mt_cpu_ssd_bwd;

mt_selective_scan_fwd_fn mt_cpu_selective_scan_fwd;
mt_selective_scan_bwd_fn mt_cpu_selective_scan_bwd;

mt_gated_rmsnorm_fwd_fn mt_cpu_gated_rmsnorm_fwd;
mt_gated_rmsnorm_bwd_fn mt_cpu_gated_rmsnorm_bwd;
mt_gated_rmsnorm_sums_fn mt_cpu_gated_rmsnorm_sums;
mt_gated_rmsnorm_fwd_sums_fn mt_cpu_gated_rmsnorm_fwd_sums;
mt_gated_rmsnorm_bwd_sums_fn mt_cpu_gated_rmsnorm_bwd_sums;

#endif
