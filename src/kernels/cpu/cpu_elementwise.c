/* Elementwise ops over tensors of equal shape: add, mul, silu, softplus, cast,
 * and axpy for the optimizer. Each walks rows (each with its own row stride,
 * so column views work) and columns; rows are independent, so OpenMP splits
 * them across threads. */
#include "kernels/cpu/cpu_internal.h"

static double add_values(double a, double b)
{
    return a + b;
}

static double mul_values(double a, double b)
{
    return a * b;
}

/* out (R, C) = op(a, b) elementwise. */
static void binary_fwd(mt_tensor *out, const mt_tensor *a, const mt_tensor *b, double (*op)(double, double))
{
    int64_t rows = mt_rows(out), cols = mt_cols(out);
#pragma omp parallel for
    for (int64_t r = 0; r < rows; r++) {
        void *o = cpu_row(out, r);
        const void *ar = cpu_row(a, r), *br = cpu_row(b, r);
        for (int64_t c = 0; c < cols; c++)
            cpu_store(out->dtype, o, c, op(cpu_load(a->dtype, ar, c), cpu_load(b->dtype, br, c)));
    }
}

/* da += dout * b; db += dout * a, where a missing factor (a or b NULL, the
 * add) counts as 1. da, db may be NULL. */
static void binary_bwd(mt_tensor *da, mt_tensor *db, const mt_tensor *dout, const mt_tensor *a, const mt_tensor *b)
{
    int64_t rows = mt_rows(dout), cols = mt_cols(dout);
#pragma omp parallel for
    for (int64_t r = 0; r < rows; r++) {
        const void *g = cpu_row(dout, r);
        const void *ar = a ? cpu_row(a, r) : NULL, *br = b ? cpu_row(b, r) : NULL;
        void *dar = da ? cpu_row(da, r) : NULL, *dbr = db ? cpu_row(db, r) : NULL;
        for (int64_t c = 0; c < cols; c++) {
            double grad = cpu_load(dout->dtype, g, c);
            if (da)
                cpu_accumulate(da->dtype, dar, c, b ? grad * cpu_load(b->dtype, br, c) : grad);
            if (db)
                cpu_accumulate(db->dtype, dbr, c, a ? grad * cpu_load(a->dtype, ar, c) : grad);
        }
    }
}

/* out = a + b */
void mt_cpu_add_fwd(mt_backend *be, mt_tensor *out, const mt_tensor *a, const mt_tensor *b)
{
    (void)be;
    binary_fwd(out, a, b, add_values);
}

/* out = a * b */
void mt_cpu_mul_fwd(mt_backend *be, mt_tensor *out, const mt_tensor *a, const mt_tensor *b)
{
    (void)be;
    binary_fwd(out, a, b, mul_values);
}

/* da += dout; db += dout (either may be NULL) */
void mt_cpu_add_bwd(mt_backend *be, mt_tensor *da, mt_tensor *db, const mt_tensor *dout)
{
    (void)be;
    binary_bwd(da, db, dout, NULL, NULL);
}

/* da += dout * b; db += dout * a (either may be NULL) */
void mt_cpu_mul_bwd(mt_backend *be, mt_tensor *da, mt_tensor *db, const mt_tensor *dout, const mt_tensor *a,
                    const mt_tensor *b)
{
    (void)be;
    binary_bwd(da, db, dout, a, b);
}

/* y (R, C) = f(x) elementwise. */
static void unary_fwd(mt_tensor *y, const mt_tensor *x, double (*f)(double))
{
    int64_t rows = mt_rows(y), cols = mt_cols(y);
#pragma omp parallel for
    for (int64_t r = 0; r < rows; r++) {
        void *yr = cpu_row(y, r);
        const void *xr = cpu_row(x, r);
        for (int64_t c = 0; c < cols; c++)
            cpu_store(y->dtype, yr, c, f(cpu_load(x->dtype, xr, c)));
    }
}

/* dx (R, C) += dy * f'(x) elementwise. */
static void unary_bwd(mt_tensor *dx, const mt_tensor *dy, const mt_tensor *x, double (*df)(double))
{
    int64_t rows = mt_rows(dx), cols = mt_cols(dx);
#pragma omp parallel for
    for (int64_t r = 0; r < rows; r++) {
        void *dxr = cpu_row(dx, r);
        const void *dyr = cpu_row(dy, r), *xr = cpu_row(x, r);
        for (int64_t c = 0; c < cols; c++)
            cpu_accumulate(dx->dtype, dxr, c, cpu_load(dy->dtype, dyr, c) * df(cpu_load(x->dtype, xr, c)));
    }
}

/* y = x * sigmoid(x) */
void mt_cpu_silu_fwd(mt_backend *be, mt_tensor *y, const mt_tensor *x)
{
    (void)be;
    unary_fwd(y, x, cpu_silu);
}

/* dx += dy * s * (1 + x * (1 - s)), s = sigmoid(x) */
void mt_cpu_silu_bwd(mt_backend *be, mt_tensor *dx, const mt_tensor *dy, const mt_tensor *x)
{
    (void)be;
    unary_bwd(dx, dy, x, cpu_silu_grad);
}

/* y = log(1 + exp(x)) */
void mt_cpu_softplus_fwd(mt_backend *be, mt_tensor *y, const mt_tensor *x)
{
    (void)be;
    unary_fwd(y, x, cpu_softplus);
}

/* dx += dy * sigmoid(x) */
void mt_cpu_softplus_bwd(mt_backend *be, mt_tensor *dx, const mt_tensor *dy, const mt_tensor *x)
{
    (void)be;
    unary_bwd(dx, dy, x, cpu_sigmoid);
}

/* The value itself: the cast's forward only changes the dtype, in the store. */
static double identity(double x)
{
    return x;
}

/* out = x converted to out's dtype */
void mt_cpu_cast_fwd(mt_backend *be, mt_tensor *out, const mt_tensor *x)
{
    (void)be;
    unary_fwd(out, x, identity);
}

/* dx += dout, converted to dx's dtype */
void mt_cpu_cast_bwd(mt_backend *be, mt_tensor *dx, const mt_tensor *dout)
{
    (void)be;
    binary_bwd(dx, NULL, dout, NULL, NULL);
}

/* y += alpha * x over contiguous tensors of equal size (the SGD update of the
 * flat parameter buffer) */
void mt_cpu_axpy(mt_backend *be, mt_tensor *y, const mt_tensor *x, double alpha)
{
    (void)be;
    int64_t n = mt_numel(y);
#pragma omp parallel for
    for (int64_t i = 0; i < n; i++)
        cpu_accumulate(y->dtype, y->data, i, alpha * cpu_load(x->dtype, x->data, i));
}
