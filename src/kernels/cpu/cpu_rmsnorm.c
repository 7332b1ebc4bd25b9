/* Fused residual add + RMSNorm over the last dim, and its backward. */
#include "kernels/cpu/cpu_internal.h"

/* v rounded to dt, as storing it into a dt tensor and loading it back would. */
static double round_to(mt_dtype dt, double v)
{
    switch (dt) {
    case MT_F32: return (float)v;
    case MT_BF16: return mt_bf16_to_f32(mt_f32_to_bf16((float)v));
    default: return v;
    }
}

/* Per row of x (R, D): r = x + residual (R, D) (or r = x when residual is NULL)
 * into residual_out (R, D); rstd (R) = 1 / sqrt(mean(r^2) + eps);
 * y (R, D) = r * rstd * weight (D).
 * y is computed from r and rstd as stored, the values the backward will see;
 * without residual_out or rstd, from them rounded as they would be stored
 * (the accumulation dtype), so that y has the same bits either way. */
void mt_cpu_rmsnorm_fwd(mt_backend *be, mt_tensor *y, mt_tensor *residual_out, mt_tensor *rstd,
                        const mt_tensor *x, const mt_tensor *residual, const mt_tensor *weight, double eps)
{
    (void)be;
    int64_t rows = mt_rows(x), dim = mt_cols(x);
    const mt_dtype rdt = residual_out ? residual_out->dtype : mt_accum_dtype(x->dtype);
    const mt_dtype sdt = rstd ? rstd->dtype : mt_accum_dtype(x->dtype);
#pragma omp parallel for
    for (int64_t n = 0; n < rows; n++) {
        const void *xr = cpu_row(x, n), *res = residual ? cpu_row(residual, n) : NULL;
        void *rr = residual_out ? cpu_row(residual_out, n) : NULL, *yr = cpu_row(y, n);
        double sum_sq = 0.0;
        for (int64_t d = 0; d < dim; d++) {
            double r = round_to(rdt, cpu_load(x->dtype, xr, d) + (res ? cpu_load(residual->dtype, res, d) : 0.0));
            if (rr)
                cpu_store(rdt, rr, d, r);
            sum_sq += r * r;
        }
        double s = round_to(sdt, 1.0 / sqrt(sum_sq / (double)dim + eps));
        if (rstd)
            cpu_store(sdt, rstd->data, n, s);
        for (int64_t d = 0; d < dim; d++) {
            /* Read back from residual_out, which may alias residual. */
            double r = rr ? cpu_load(rdt, rr, d)
                          : round_to(rdt, cpu_load(x->dtype, xr, d) + (res ? cpu_load(residual->dtype, res, d) : 0.0));
            cpu_store(y->dtype, yr, d, r * s * cpu_load(weight->dtype, weight->data, d));
        }
    }
}

/* Per row: y (R, D) = r * s * weight from r = residual_out (R, D) and
 * s = rstd (R), the product mt_cpu_rmsnorm_fwd forms from the same values. */
void mt_cpu_rmsnorm_apply(mt_backend *be, mt_tensor *y, const mt_tensor *residual_out, const mt_tensor *rstd,
                          const mt_tensor *weight)
{
    (void)be;
    int64_t rows = mt_rows(residual_out), dim = mt_cols(residual_out);
#pragma omp parallel for
    for (int64_t n = 0; n < rows; n++) {
        const void *rr = cpu_row(residual_out, n);
        void *yr = cpu_row(y, n);
        double s = cpu_load(rstd->dtype, rstd->data, n);
        for (int64_t d = 0; d < dim; d++) {
            double r = cpu_load(residual_out->dtype, rr, d);
            cpu_store(y->dtype, yr, d, r * s * cpu_load(weight->dtype, weight->data, d));
        }
    }
}

/* Per row, from r = residual_out (R, D) and s = rstd (R):
 *   g = dresidual_out + s * (weight*dy - r * s^2 * mean(weight*dy*r))
 *   dx += g;  dresidual += g;  dweight (D) += sum over rows of dy * r * s.
 * dy or dresidual_out NULL reads as zero; dx, dresidual, dweight NULL are skipped.
 * dweight sums rows in order into a double buffer and is rounded once. */
void mt_cpu_rmsnorm_bwd(mt_backend *be, mt_arena *scratch, mt_tensor *dx, mt_tensor *dresidual,
                        mt_tensor *dweight, const mt_tensor *dy, const mt_tensor *dresidual_out,
                        const mt_tensor *residual_out, const mt_tensor *rstd, const mt_tensor *weight)
{
    (void)be;
    int64_t rows = mt_rows(residual_out), dim = mt_cols(residual_out);
    const mt_dtype rdt = residual_out->dtype;
    if (dx || dresidual) {
#pragma omp parallel for
        for (int64_t n = 0; n < rows; n++) {
            const void *rr = cpu_row(residual_out, n), *dyr = dy ? cpu_row(dy, n) : NULL;
            const void *dro = dresidual_out ? cpu_row(dresidual_out, n) : NULL;
            void *dxr = dx ? cpu_row(dx, n) : NULL, *drr = dresidual ? cpu_row(dresidual, n) : NULL;
            double s = cpu_load(rstd->dtype, rstd->data, n), mean_wdy_r = 0.0;
            if (dy) {
                for (int64_t d = 0; d < dim; d++)
                    mean_wdy_r += cpu_load(weight->dtype, weight->data, d) * cpu_load(dy->dtype, dyr, d) *
                                  cpu_load(rdt, rr, d);
                mean_wdy_r /= (double)dim;
            }
            for (int64_t d = 0; d < dim; d++) {
                double g = dro ? cpu_load(dresidual_out->dtype, dro, d) : 0.0;
                if (dy) {
                    double wdy = cpu_load(weight->dtype, weight->data, d) * cpu_load(dy->dtype, dyr, d);
                    g += s * (wdy - cpu_load(rdt, rr, d) * s * s * mean_wdy_r);
                }
                if (dx)
                    cpu_accumulate(dx->dtype, dxr, d, g);
                if (dresidual)
                    cpu_accumulate(dresidual->dtype, drr, d, g);
            }
        }
    }
    if (dweight && dy) {
        double *sum = cpu_temp_alloc(scratch, (size_t)dim * sizeof *sum);
        for (int64_t d = 0; d < dim; d++)
            sum[d] = cpu_load(dweight->dtype, dweight->data, d);
        for (int64_t n = 0; n < rows; n++) {
            const void *rr = cpu_row(residual_out, n), *dyr = cpu_row(dy, n);
            double s = cpu_load(rstd->dtype, rstd->data, n);
            for (int64_t d = 0; d < dim; d++)
                sum[d] += cpu_load(dy->dtype, dyr, d) * cpu_load(rdt, rr, d) * s;
        }
        for (int64_t d = 0; d < dim; d++)
            cpu_store(dweight->dtype, dweight->data, d, sum[d]);
        cpu_temp_free(scratch, sum);
    }
}
