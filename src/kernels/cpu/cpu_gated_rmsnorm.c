/* Mamba-2's gated output norm (norm_before_gate = false: gate, then RMSNorm
 * over groups of columns), and its backward; also split in phases for a
 * tensor-parallel rank whose groups span ranks (the group sums given). */
#include "kernels/cpu/cpu_internal.h"

/* u = y * silu(z), element c of a row of y and z. */
static double gated_input(const mt_tensor *y, const void *yr, const mt_tensor *z, const void *zr, int64_t c)
{
    return cpu_load(y->dtype, yr, c) * cpu_silu(cpu_load(z->dtype, zr, c));
}

/* Element (r, g) of a (R, G) tensor whose rows may be row_stride apart. */
static double load_rg(const mt_tensor *t, int64_t r, int64_t g)
{
    return cpu_load(t->dtype, cpu_row(t, r), g);
}

/* Per row r and group g (columns [c0, c0 + group)): the sum of u^2, or with
 * dout the sum of weight * dout * u. */
static double group_sum(const mt_tensor *y, const mt_tensor *z, const mt_tensor *weight, const mt_tensor *dout,
                        int64_t r, int64_t c0, int64_t group)
{
    const void *yr = cpu_row(y, r), *zr = cpu_row(z, r), *dor = dout ? cpu_row(dout, r) : NULL;
    double s = 0.0;
    for (int64_t c = c0; c < c0 + group; c++) {
        double u = gated_input(y, yr, z, zr, c);
        s += dout ? cpu_load(weight->dtype, weight->data, c) * cpu_load(dout->dtype, dor, c) * u : u * u;
    }
    return s;
}

/* Per row of y, z (R, E) and each group of E/G columns:
 *   u = y * silu(z);  rstd (R, G) = 1 / sqrt(ss / n + eps)
 *   out (R, E) = u * rstd * weight (E)
 * with ss the group's sum of u^2 and n = E/G, or, given sumsq, ss = sumsq
 * (R, G) and n = group_cols. out is computed with rstd as stored, the value
 * the backward will see. Rows are independent and run in parallel. */
static void grms_fwd(mt_tensor *out, mt_tensor *rstd, const mt_tensor *y, const mt_tensor *z,
                     const mt_tensor *weight, const mt_tensor *sumsq, int ngroups, int64_t group_cols, double eps)
{
    int64_t rows = mt_rows(y), group = mt_cols(y) / ngroups;
#pragma omp parallel for
    for (int64_t r = 0; r < rows; r++) {
        const void *yr = cpu_row(y, r), *zr = cpu_row(z, r);
        void *o = cpu_row(out, r);
        for (int64_t g = 0; g < ngroups; g++) {
            int64_t c0 = g * group;
            double sum_sq = sumsq ? load_rg(sumsq, r, g) : group_sum(y, z, weight, NULL, r, c0, group);
            cpu_store(rstd->dtype, rstd->data, r * ngroups + g, 1.0 / sqrt(sum_sq / (double)group_cols + eps));
            double s = cpu_load(rstd->dtype, rstd->data, r * ngroups + g);
            for (int64_t c = c0; c < c0 + group; c++)
                cpu_store(out->dtype, o, c,
                          gated_input(y, yr, z, zr, c) * s * cpu_load(weight->dtype, weight->data, c));
        }
    }
}

void mt_cpu_gated_rmsnorm_fwd(mt_backend *be, mt_tensor *out, mt_tensor *rstd, const mt_tensor *y,
                              const mt_tensor *z, const mt_tensor *weight, int ngroups, double eps)
{
    (void)be;
    grms_fwd(out, rstd, y, z, weight, NULL, ngroups, mt_cols(y) / ngroups, eps);
}

void mt_cpu_gated_rmsnorm_fwd_sums(mt_backend *be, mt_tensor *out, mt_tensor *rstd, const mt_tensor *y,
                                   const mt_tensor *z, const mt_tensor *weight, const mt_tensor *sumsq, int ngroups,
                                   int64_t group_cols, double eps)
{
    (void)be;
    grms_fwd(out, rstd, y, z, weight, sumsq, ngroups, group_cols, eps);
}

/* sums (R, G) = per row and group the sum of u^2 (dout NULL) or of
 * weight * dout * u. Rows run in parallel. */
void mt_cpu_gated_rmsnorm_sums(mt_backend *be, mt_tensor *sums, const mt_tensor *y, const mt_tensor *z,
                               const mt_tensor *weight, const mt_tensor *dout, int ngroups)
{
    (void)be;
    int64_t rows = mt_rows(y), group = mt_cols(y) / ngroups;
#pragma omp parallel for
    for (int64_t r = 0; r < rows; r++)
        for (int64_t g = 0; g < ngroups; g++)
            cpu_store(sums->dtype, cpu_row(sums, r), g, group_sum(y, z, weight, dout, r, g * group, group));
}

/* Per row and group, with u = y * silu(z), s = rstd and wd = weight * dout:
 *   du = s * (wd - u * s^2 * m),  m = the group mean of wd * u: its sum over
 *        the E/G columns / (E/G), or, given wdu (R, G), wdu / group_cols
 *   dy += du * silu(z);  dz += du * y * silu'(z)
 *   dweight (E) += sum over rows of dout * u * s
 * Any of dy, dz, dweight may be NULL. Rows run in parallel for dy and dz;
 * dweight sums rows in order into a double buffer and is rounded once. */
static void grms_bwd(mt_arena *scratch, mt_tensor *dy, mt_tensor *dz, mt_tensor *dweight, const mt_tensor *dout,
                     const mt_tensor *y, const mt_tensor *z, const mt_tensor *weight, const mt_tensor *rstd,
                     const mt_tensor *wdu, int ngroups, int64_t group_cols)
{
    int64_t rows = mt_rows(y), cols = mt_cols(y), group = cols / ngroups;
    if (dy || dz) {
#pragma omp parallel for
        for (int64_t r = 0; r < rows; r++) {
            const void *yr = cpu_row(y, r), *zr = cpu_row(z, r), *dor = cpu_row(dout, r);
            void *dyr = dy ? cpu_row(dy, r) : NULL, *dzr = dz ? cpu_row(dz, r) : NULL;
            for (int64_t g = 0; g < ngroups; g++) {
                int64_t c0 = g * group;
                double s = cpu_load(rstd->dtype, rstd->data, r * ngroups + g);
                double mean_wd_u =
                    (wdu ? load_rg(wdu, r, g) : group_sum(y, z, weight, dout, r, c0, group)) / (double)group_cols;
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

void mt_cpu_gated_rmsnorm_bwd(mt_backend *be, mt_arena *scratch, mt_tensor *dy, mt_tensor *dz, mt_tensor *dweight,
                              const mt_tensor *dout, const mt_tensor *y, const mt_tensor *z,
                              const mt_tensor *weight, const mt_tensor *rstd, int ngroups)
{
    (void)be;
    grms_bwd(scratch, dy, dz, dweight, dout, y, z, weight, rstd, NULL, ngroups, mt_cols(y) / ngroups);
}

void mt_cpu_gated_rmsnorm_bwd_sums(mt_backend *be, mt_arena *scratch, mt_tensor *dy, mt_tensor *dz,
                                   mt_tensor *dweight, const mt_tensor *dout, const mt_tensor *y, const mt_tensor *z,
                                   const mt_tensor *weight, const mt_tensor *rstd, const mt_tensor *wdu, int ngroups,
                                   int64_t group_cols)
{
    (void)be;
    grms_bwd(scratch, dy, dz, dweight, dout, y, z, weight, rstd, wdu, ngroups, group_cols);
}
