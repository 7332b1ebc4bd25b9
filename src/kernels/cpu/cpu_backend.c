/* The CPU backend: the reference every other backend is tested against.
 * Arithmetic is in double, loops run in a fixed order, and OpenMP only ever
 * splits work by output rows, so results do not depend on the thread count. */
#include <stdlib.h>

#include "core/rng.h"
#include "kernels/cpu/cpu_internal.h"

static void cpu_destroy(mt_backend *be)
{
    free(be);
}

/* CPU kernels finish before they return. */
static void cpu_synchronize(mt_backend *be)
{
    (void)be;
}

/* t[i] = uniform [lo, hi) from Philox counter i, i the row-major logical index. */
static void cpu_fill_uniform(mt_backend *be, mt_tensor *t, uint64_t seed, double lo, double hi)
{
    (void)be;
    int64_t rows = mt_rows(t), cols = mt_cols(t);
#pragma omp parallel for
    for (int64_t r = 0; r < rows; r++) {
        void *row = cpu_row(t, r);
        for (int64_t c = 0; c < cols; c++)
            cpu_store(t->dtype, row, c, mt_rng_uniform(seed, (uint64_t)(r * cols + c), lo, hi));
    }
}

/* t[i] = normal(mean, std) from Philox counter i, i the row-major logical index. */
static void cpu_fill_normal(mt_backend *be, mt_tensor *t, uint64_t seed, double mean, double std)
{
    (void)be;
    int64_t rows = mt_rows(t), cols = mt_cols(t);
#pragma omp parallel for
    for (int64_t r = 0; r < rows; r++) {
        void *row = cpu_row(t, r);
        for (int64_t c = 0; c < cols; c++)
            cpu_store(t->dtype, row, c, mt_rng_normal(seed, (uint64_t)(r * cols + c), mean, std));
    }
}

mt_backend *mt_backend_cpu_create(void)
{
    mt_backend *be = calloc(1, sizeof *be);
    if (!be)
        mt_fatal("out of host memory for the CPU backend");
    *be = (mt_backend){
        .name = "cpu",
        .device = MT_CPU,
        .destroy = cpu_destroy,
        .synchronize = cpu_synchronize,
        .fill_uniform = cpu_fill_uniform,
        .fill_normal = cpu_fill_normal,
        .embedding_fwd = mt_cpu_embedding_fwd,
        .embedding_bwd = mt_cpu_embedding_bwd,
        .linear_fwd = mt_cpu_linear_fwd,
        .linear_bwd = mt_cpu_linear_bwd,
        .add_fwd = mt_cpu_add_fwd,
        .mul_fwd = mt_cpu_mul_fwd,
        .add_bwd = mt_cpu_add_bwd,
        .mul_bwd = mt_cpu_mul_bwd,
        .silu_fwd = mt_cpu_silu_fwd,
        .silu_bwd = mt_cpu_silu_bwd,
        .softplus_fwd = mt_cpu_softplus_fwd,
        .softplus_bwd = mt_cpu_softplus_bwd,
        .rmsnorm_fwd = mt_cpu_rmsnorm_fwd,
        .rmsnorm_apply = mt_cpu_rmsnorm_apply,
        .rmsnorm_bwd = mt_cpu_rmsnorm_bwd,
        .cross_entropy_stats = mt_cpu_cross_entropy_stats,
        .cross_entropy_combine = mt_cpu_cross_entropy_combine,
        .cross_entropy_bwd = mt_cpu_cross_entropy_bwd,
        .cast_fwd = mt_cpu_cast_fwd,
        .cast_bwd = mt_cpu_cast_bwd,
        .conv1d_fwd = mt_cpu_conv1d_fwd,
        .conv1d_bwd = mt_cpu_conv1d_bwd,
        .conv1d_final_state_fwd = mt_cpu_conv1d_final_state_fwd,
        .conv1d_final_state_bwd = mt_cpu_conv1d_final_state_bwd,
        .ssd_fwd = mt_cpu_ssd_fwd,
        .ssd_bwd = mt_cpu_ssd_bwd,
        .selective_scan_fwd = mt_cpu_selective_scan_fwd,
        .selective_scan_bwd = mt_cpu_selective_scan_bwd,
        .gated_rmsnorm_fwd = mt_cpu_gated_rmsnorm_fwd,
        .gated_rmsnorm_bwd = mt_cpu_gated_rmsnorm_bwd,
        .gated_rmsnorm_sums = mt_cpu_gated_rmsnorm_sums,
        .gated_rmsnorm_fwd_sums = mt_cpu_gated_rmsnorm_fwd_sums,
        .gated_rmsnorm_bwd_sums = mt_cpu_gated_rmsnorm_bwd_sums,
        .axpy = mt_cpu_axpy,
        .adamw_step = mt_cpu_adamw_step,
        .sumsq = mt_cpu_sumsq,
        .sumsq_ranges = mt_cpu_sumsq_ranges,
    };
    return be;
}
