/* Linear layer through OpenBLAS: dgemm for f64, sgemm for f32 and bf16.
 * f32 tensors are used in place (BLAS's leading dimension is the row stride,
 * so column views need no copy); bf16 ones are widened to f32 copies and
 * results rounded back once. The bias column sum is a double loop. */
#include <cblas.h>
#include <limits.h>
#include <stdbool.h>

#include "kernels/cpu/cpu_internal.h"

/* A matrix as BLAS sees it. */
typedef struct {
    mt_dtype dtype; /* MT_F64 or MT_F32 */
    void *data;
    int64_t rows, cols, ld;
} blas_mat;

/* BLAS wants a leading dimension of at least max(cols, 1), even where the
 * stride of a lone row is moot. */
static int64_t blas_ld(int64_t row_stride, int64_t cols)
{
    int64_t ld = row_stride > cols ? row_stride : cols;
    return ld > 1 ? ld : 1;
}

/* t as a BLAS matrix; a bf16 t becomes an f32 copy, filled from t when load. */
static blas_mat blas_open(mt_arena *scratch, const mt_tensor *t, bool load)
{
    blas_mat m = {.rows = mt_rows(t), .cols = mt_cols(t)};
    if (t->dtype != MT_BF16) {
        m.dtype = t->dtype;
        m.data = t->data;
        m.ld = blas_ld(mt_row_stride(t), m.cols);
        return m;
    }
    m.dtype = MT_F32;
    m.ld = blas_ld(m.cols, m.cols);
    m.data = cpu_temp_alloc(scratch, (size_t)(m.rows * m.cols) * sizeof(float));
    if (load)
        for (int64_t r = 0; r < m.rows; r++)
            for (int64_t c = 0; c < m.cols; c++)
                ((float *)m.data)[r * m.ld + c] = (float)cpu_load(MT_BF16, cpu_row(t, r), c);
    return m;
}

/* Releases m; when store, first rounds a bf16 t's f32 copy back into t. */
static void blas_close(mt_arena *scratch, const mt_tensor *t, blas_mat m, bool store)
{
    if (t->dtype != MT_BF16)
        return;
    if (store)
        for (int64_t r = 0; r < m.rows; r++)
            for (int64_t c = 0; c < m.cols; c++)
                cpu_store(MT_BF16, cpu_row(t, r), c, ((float *)m.data)[r * m.ld + c]);
    cpu_temp_free(scratch, m.data);
}

/* c (m, n) = op(a) . op(b) + beta * c, where op transposes when asked. */
static void blas_gemm(bool trans_a, bool trans_b, blas_mat a, blas_mat b, double beta, blas_mat c)
{
    int64_t m = c.rows, n = c.cols, k = trans_a ? a.rows : a.cols;
    if (m == 0 || n == 0)
        return;
    if (m > INT_MAX || n > INT_MAX || k > INT_MAX || a.ld > INT_MAX || b.ld > INT_MAX || c.ld > INT_MAX)
        mt_fatal("linear: a (%lld x %lld) by (%lld x %lld) product exceeds BLAS's int sizes", (long long)m,
                 (long long)k, (long long)k, (long long)n);
    enum CBLAS_TRANSPOSE ta = trans_a ? CblasTrans : CblasNoTrans, tb = trans_b ? CblasTrans : CblasNoTrans;
    if (c.dtype == MT_F64)
        cblas_dgemm(CblasRowMajor, ta, tb, (int)m, (int)n, (int)k, 1.0, a.data, (int)a.ld, b.data, (int)b.ld,
                    beta, c.data, (int)c.ld);
    else
        cblas_sgemm(CblasRowMajor, ta, tb, (int)m, (int)n, (int)k, 1.0f, a.data, (int)a.ld, b.data, (int)b.ld,
                    (float)beta, c.data, (int)c.ld);
}

/* y (M, N) = x (M, K) . w (N, K)^T + b (N). The bias is written into y's
 * buffer first and the product added onto it, so y is rounded only once. */
void mt_cpu_linear_fwd(mt_backend *be, mt_tensor *y, const mt_tensor *x, const mt_tensor *w, const mt_tensor *b)
{
    (void)be;
    blas_mat xm = blas_open(NULL, x, true), wm = blas_open(NULL, w, true), ym = blas_open(NULL, y, false);
    if (b)
        for (int64_t r = 0; r < ym.rows; r++) {
            void *row = (char *)ym.data + (size_t)(r * ym.ld) * mt_dtype_size(ym.dtype);
            for (int64_t c = 0; c < ym.cols; c++)
                cpu_store(ym.dtype, row, c, cpu_load(b->dtype, b->data, c));
        }
    blas_gemm(false, true, xm, wm, b ? 1.0 : 0.0, ym);
    blas_close(NULL, y, ym, true);
    blas_close(NULL, w, wm, false);
    blas_close(NULL, x, xm, false);
}

/* db (N) += sum over the M rows of dy (M, N), in row order, in double. */
static void bias_grad(mt_arena *scratch, mt_tensor *db, const mt_tensor *dy)
{
    int64_t rows = mt_rows(dy), cols = mt_cols(dy);
    double *sum = cpu_temp_alloc(scratch, (size_t)cols * sizeof *sum);
    for (int64_t c = 0; c < cols; c++)
        sum[c] = cpu_load(db->dtype, db->data, c);
    for (int64_t r = 0; r < rows; r++) {
        const void *row = cpu_row(dy, r);
        for (int64_t c = 0; c < cols; c++)
            sum[c] += cpu_load(dy->dtype, row, c);
    }
    for (int64_t c = 0; c < cols; c++)
        cpu_store(db->dtype, db->data, c, sum[c]);
    cpu_temp_free(scratch, sum);
}

/* dx (M, K) += dy (M, N) . w (N, K);  dw (N, K) += dy^T . x (M, K);  db (N) += column sums of dy. */
void mt_cpu_linear_bwd(mt_backend *be, mt_arena *scratch, mt_tensor *dx, mt_tensor *dw, mt_tensor *db,
                       const mt_tensor *dy, const mt_tensor *x, const mt_tensor *w)
{
    (void)be;
    if (dx || dw) {
        blas_mat dym = blas_open(scratch, dy, true);
        if (dx) {
            blas_mat wm = blas_open(scratch, w, true), dxm = blas_open(scratch, dx, true);
            blas_gemm(false, false, dym, wm, 1.0, dxm);
            blas_close(scratch, dx, dxm, true);
            blas_close(scratch, w, wm, false);
        }
        if (dw) {
            blas_mat xm = blas_open(scratch, x, true), dwm = blas_open(scratch, dw, true);
            blas_gemm(true, false, dym, xm, 1.0, dwm);
            blas_close(scratch, dw, dwm, true);
            blas_close(scratch, x, xm, false);
        }
        blas_close(scratch, dy, dym, false);
    }
    if (db)
        bias_grad(scratch, db, dy);
}
