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

void mt_cpu_embedding_fwd(mt_backend *be, mt_tensor *out, const mt_tensor *weight, const mt_tensor *ids,
                          int64_t first_id, int64_t vocab);
void mt_cpu_embedding_bwd(mt_backend *be, mt_arena *scratch, mt_tensor *dweight, const mt_tensor *dout,
                          const mt_tensor *ids, int64_t first_id, int64_t vocab);

void mt_cpu_linear_fwd(mt_backend *be, mt_tensor *y, const mt_tensor *x, const mt_tensor *w, const mt_tensor *b);
void mt_cpu_linear_bwd(mt_backend *be, mt_arena *scratch, mt_tensor *dx, mt_tensor *dw, mt_tensor *db,
                       const mt_tensor *dy, const mt_tensor *x, const mt_tensor *w);

void mt_cpu_add_fwd(mt_backend *be, mt_tensor *out, const mt_tensor *a, const mt_tensor *b);
void mt_cpu_mul_fwd(mt_backend *be, mt_tensor *out, const mt_tensor *a, const mt_tensor *b);
void mt_cpu_add_bwd(mt_backend *be, mt_tensor *da, mt_tensor *db, const mt_tensor *dout);
void mt_cpu_mul_bwd(mt_backend *be, mt_tensor *da, mt_tensor *db, const mt_tensor *dout, const mt_tensor *a,
                    const mt_tensor *b);
void mt_cpu_silu_fwd(mt_backend *be, mt_tensor *y, const mt_tensor *x);
void mt_cpu_silu_bwd(mt_backend *be, mt_tensor *dx, const mt_tensor *dy, const mt_tensor *x);
void mt_cpu_softplus_fwd(mt_backend *be, mt_tensor *y, const mt_tensor *x);
void mt_cpu_softplus_bwd(mt_backend *be, mt_tensor *dx, const mt_tensor *dy, const mt_tensor *x);
void mt_cpu_cast_fwd(mt_backend *be, mt_tensor *out, const mt_tensor *x);
void mt_cpu_cast_bwd(mt_backend *be, mt_tensor *dx, const mt_tensor *dout);
void mt_cpu_axpy(mt_backend *be, mt_tensor *y, const mt_tensor *x, double alpha);

void mt_cpu_adamw_step(mt_backend *be, mt_tensor *values, const mt_tensor *grads, mt_tensor *m, mt_tensor *v,
                       const uint8_t *decay, double lr, double beta1, double beta2, double eps,
                       double weight_decay, double bias_correction1, double bias_correction2, double grad_scale);
double mt_cpu_sumsq(mt_backend *be, const mt_tensor *x);
void mt_cpu_sumsq_ranges(mt_backend *be, const mt_tensor *x, int n, const size_t *begin, const size_t *count,
                         double *out);

void mt_cpu_rmsnorm_fwd(mt_backend *be, mt_tensor *y, mt_tensor *residual_out, mt_tensor *rstd,
                        const mt_tensor *x, const mt_tensor *residual, const mt_tensor *weight, double eps);
void mt_cpu_rmsnorm_apply(mt_backend *be, mt_tensor *y, const mt_tensor *residual_out, const mt_tensor *rstd,
                          const mt_tensor *weight);
void mt_cpu_rmsnorm_bwd(mt_backend *be, mt_arena *scratch, mt_tensor *dx, mt_tensor *dresidual,
                        mt_tensor *dweight, const mt_tensor *dy, const mt_tensor *dresidual_out,
                        const mt_tensor *residual_out, const mt_tensor *rstd, const mt_tensor *weight);

void mt_cpu_cross_entropy_stats(mt_backend *be, mt_tensor *stats, const mt_tensor *logits, const mt_tensor *targets,
                                int64_t first_col, int ignore_index);
void mt_cpu_cross_entropy_combine(mt_backend *be, mt_arena *scratch, mt_tensor *loss, mt_tensor *lse,
                                  const mt_tensor *stats, const mt_tensor *targets, int64_t vocab, int ignore_index);
void mt_cpu_cross_entropy_bwd(mt_backend *be, mt_arena *scratch, mt_tensor *dlogits, const mt_tensor *dloss,
                              const mt_tensor *logits, const mt_tensor *lse, const mt_tensor *targets,
                              int64_t first_col, int64_t vocab, int ignore_index);

void mt_cpu_conv1d_fwd(mt_backend *be, mt_tensor *out, const mt_tensor *x, const mt_tensor *weight,
                       const mt_tensor *bias, const mt_tensor *init_state, const mt_tensor *seq_idx);
void mt_cpu_conv1d_bwd(mt_backend *be, mt_arena *scratch, mt_tensor *dx, mt_tensor *dweight, mt_tensor *dbias,
                       mt_tensor *dinit_state, const mt_tensor *dout, const mt_tensor *x, const mt_tensor *weight,
                       const mt_tensor *bias, const mt_tensor *init_state, const mt_tensor *seq_idx);
void mt_cpu_conv1d_final_state_fwd(mt_backend *be, mt_tensor *final, const mt_tensor *x, const mt_tensor *init_state);
void mt_cpu_conv1d_final_state_bwd(mt_backend *be, mt_tensor *dx, mt_tensor *dinit_state, const mt_tensor *dfinal,
                                   const mt_tensor *x);

void mt_cpu_ssd_fwd(mt_backend *be, mt_arena *scratch, mt_tensor *y, mt_tensor *final_state, const mt_tensor *x,
                    const mt_tensor *dt, const mt_tensor *A_log, const mt_tensor *Bm, const mt_tensor *Cm,
                    const mt_tensor *D, const mt_tensor *z, const mt_tensor *dt_bias, const mt_tensor *init_state,
                    const mt_tensor *seq_idx, int headdim, int ngroups, double dt_min, double dt_max,
                    int chunk_size);
void mt_cpu_ssd_bwd(mt_backend *be, mt_arena *scratch, mt_tensor *dx, mt_tensor *ddt, mt_tensor *dA_log,
                    mt_tensor *dBm, mt_tensor *dCm, mt_tensor *dD, mt_tensor *dz, mt_tensor *ddt_bias,
                    mt_tensor *dinit_state, const mt_tensor *dy, const mt_tensor *dfinal_state, const mt_tensor *x,
                    const mt_tensor *dt, const mt_tensor *A_log, const mt_tensor *Bm, const mt_tensor *Cm,
                    const mt_tensor *D, const mt_tensor *z, const mt_tensor *dt_bias, const mt_tensor *init_state,
                    const mt_tensor *seq_idx, int headdim, int ngroups, double dt_min, double dt_max,
                    int chunk_size);

void mt_cpu_selective_scan_fwd(mt_backend *be, mt_arena *scratch, mt_tensor *y, mt_tensor *checkpoint,
                               const mt_tensor *u, const mt_tensor *delta, const mt_tensor *A_log,
                               const mt_tensor *Bm, const mt_tensor *Cm, const mt_tensor *D_skip,
                               const mt_tensor *z, const mt_tensor *delta_bias, int ngroups, bool delta_softplus);
void mt_cpu_selective_scan_bwd(mt_backend *be, mt_arena *scratch, mt_tensor *du, mt_tensor *ddelta,
                               mt_tensor *dA_log, mt_tensor *dBm, mt_tensor *dCm, mt_tensor *dD_skip,
                               mt_tensor *dz, mt_tensor *ddelta_bias, const mt_tensor *dy,
                               const mt_tensor *checkpoint, const mt_tensor *u,
                               const mt_tensor *delta, const mt_tensor *A_log, const mt_tensor *Bm,
                               const mt_tensor *Cm, const mt_tensor *D_skip, const mt_tensor *z,
                               const mt_tensor *delta_bias, int ngroups, bool delta_softplus);

void mt_cpu_gated_rmsnorm_fwd(mt_backend *be, mt_tensor *out, mt_tensor *rstd, const mt_tensor *y,
                              const mt_tensor *z, const mt_tensor *weight, int ngroups, double eps);
void mt_cpu_gated_rmsnorm_bwd(mt_backend *be, mt_arena *scratch, mt_tensor *dy, mt_tensor *dz, mt_tensor *dweight,
                              const mt_tensor *dout, const mt_tensor *y, const mt_tensor *z,
                              const mt_tensor *weight, const mt_tensor *rstd, int ngroups);
void mt_cpu_gated_rmsnorm_sums(mt_backend *be, mt_tensor *sums, const mt_tensor *y, const mt_tensor *z,
                               const mt_tensor *weight, const mt_tensor *dout, int ngroups);
void mt_cpu_gated_rmsnorm_fwd_sums(mt_backend *be, mt_tensor *out, mt_tensor *rstd, const mt_tensor *y,
                                   const mt_tensor *z, const mt_tensor *weight, const mt_tensor *sumsq, int ngroups,
                                   int64_t group_cols, double eps);
void mt_cpu_gated_rmsnorm_bwd_sums(mt_backend *be, mt_arena *scratch, mt_tensor *dy, mt_tensor *dz,
                                   mt_tensor *dweight, const mt_tensor *dout, const mt_tensor *y, const mt_tensor *z,
                                   const mt_tensor *weight, const mt_tensor *rstd, const mt_tensor *wdu, int ngroups,
                                   int64_t group_cols);

#endif
