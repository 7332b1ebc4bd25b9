/* Mamba-2's gated output norm (norm_before_gate = false: gate, then RMSNorm
 * over groups of columns), and its backward. */
#include "kernels/cpu/cpu_internal.h"

/* u = y * silu(z), element c of a row of y and z. */
static double gated_input(const mt_tensor *y, const void *yr, const mt_tensor *z, const void *zr, int64_t c)
{
    return cpu_load(y->dtype, yr, c) * cpu_silu(cpu_load(z->dtype, zr, c));
}

/* Per row of y, z (R, E) and each group of E/G columns:
 *   u = y * silu(z);  rstd (R, G) = 1 / sqrt(mean over the group of u^2 + eps)
 *   out (R, E) = u * rstd * weight (E)
 * out is computed with rstd as stored, the value the backward will see. Rows
 * are independent and run in parallel. */
void mt_cpu_gated_rmsnorm_fwd(mt_backend *be, mt_tensor *out, mt_tensor *rstd, const mt_tensor *y,
                              const mt_tensor *z, const mt_tensor *weight, int ngroups, double eps)
{
    (void)be;
    int64_t rows = mt_rows(y), group = mt_cols(y) / ngroups;
#pragma omp parallel for
    for (int64_t r = 0; r < rows; r++) {
        const void *yr = cpu_row(y, r), *zr = cpu_row(z, r);
        void *o = cpu_row(out, r);
        for (int64_t g = 0; g < ngroups; g++) {
            int64_t c0 = g * group;
            double sum_sq = 0.0;
            for (int64_t c = c0; c < c0 + group; c++) {
                double u = gated_input(y, yr, z, zr, c);
                sum_sq += u * u;
            }
            cpu_store(rstd->dtype, rstd->data, r * ngroups + g, 1.0 / sqrt(sum_sq / (double)group + eps));
            double s = cpu_load(rstd->dtype, rstd->data, r * ngroups + g);
            for (int64_t c = c0; c < c0 + group; c++)
                cpu_store(out->dtype, o, c,
                          gated_input(y, yr, z, zr, c) * s * cpu_load(weight->dtype, weight->data, c));
        }
    }
}

/* Per row and group, with u = y * silu(z), s = rstd and wd = weight * dout:
 *   du = s * (wd - u * s^2 * mean over the group of wd * u)
 *   dy += du * silu(z);  dz += du * y * silu'(z)
 *   dweight (E) += sum over rows of dout * u * s
 * Any of dy, dz, dweight may be NULL. Rows run in parallel for dy and dz;
 * dweight sums rows in order into a double buffer and is rounded once. */
void mt_cpu_gated_rmsnorm_bwd(mt_backend *be, mt_arena *scratch, mt_tensor *dy, mt_tensor *dz, mt_tensor *dweight,
                              const mt_tensor *dout, const mt_tensor *y, const mt_tensor *z,
                              const mt_tensor *weight, const mt_tensor *rstd, int ngroups)
{
    (void)be;
    int64_t rows = mt_rows(y), cols = mt_cols(y), group = cols / ngroups;
    if (dy || dz) {
#pragma omp parallel for
        for (int64_t r = 0; r < rows; r++) {
            const void *yr = cpu_row(y, r), *zr = cpu_row(z, r), *dor = cpu_row(dout, r);
            void *dyr = dy ? cpu_row(dy, r) : NULL, *dzr = dz ? cpu_row(dz, r) : NULL;
            for (int64_t g = 0; g < ngroups; g++) {
                int64_t c0 = g * group;
                double s = cpu_load(rstd->dtype, rstd->data, r * ngroups + g), mean_wd_u = 0.0;
                for (int64_t c = c0; c < c0 + group; c++)
                    mean_wd_u += cpu_load(weight->dtype, weight->data, c) * cpu_load(dout->dtype, dor, c) *
                                 gated_input(y, yr, z, zr, c);
                mean_wd_u /= (double)group;
                for (int64_t c = c0; c < c0 + group; c++) {
                    double yv = cpu_load(y->dtype, yr, c), zv = cpu_load(z->dtype, zr, c);
                    double wd = cpu_load(weight->dtype, weight->data, c) * cpu_load(dout->dtype, dor, c);
                    double du = s * (wd - yv * cpu_silu(zv) * s * s * mean_wd_u);
                    if (dy)
                        cpu_accumulate(dy->dtype, dyr, c, du * cpu_silu(zv));
                    if (dz)
                        cpu_accumulate(dz->dtype, dzr, c, du * yv * cpu_silu_grad(zv));
                }
            }
        }
    }
    if (dweight) {
        double *sum = cpu_temp_alloc(scratch, (size_t)cols * sizeof *sum);
        for (int64_t c = 0; c < cols; c++)
            sum[c] = 0.0;
        for (int64_t r = 0; r < rows; r++) {
            const void *yr = cpu_row(y, r), *zr = cpu_row(z, r), *dor = cpu_row(dout, r);
            for (int64_t c = 0; c < cols; c++)
                sum[c] += cpu_load(dout->dtype, dor, c) * gated_input(y, yr, z, zr, c) *
                          cpu_load(rstd->dtype, rstd->data, r * ngroups + c / group);
        }
        for (int64_t c = 0; c < cols; c++)
            cpu_accumulate(dweight->dtype, dweight->data, c, sum[c]);
        cpu_temp_free(scratch, sum);
    }
}
