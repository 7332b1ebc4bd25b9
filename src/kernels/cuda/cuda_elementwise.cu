/* Elementwise ops over (rows, cols) matrices with per-tensor row strides:
 * add, mul, silu, softplus, cast, forward and backward. Every kernel is a
 * grid-stride loop over rows * cols (int64 indices) with one thread per
 * element, so each output element is written by exactly one thread: no
 * reduction, nothing order-dependent. Gradients are read-modify-written by
 * the thread that owns the element, in program order, so da and db may even
 * be the same tensor (out = a + a). */
#include "kernels/cuda/cuda_vector.cuh"

/* Row-major geometry of one launch: rows x cols, and each operand's stride. */
struct ew_shape {
    int64_t rows, cols;
};

#define EW_LOOP(shape)                                                                                      \
    for (int64_t i_ = blockIdx.x * (int64_t)blockDim.x + threadIdx.x, n_ = (shape).rows * (shape).cols;   \
         i_ < n_; i_ += (int64_t)gridDim.x * blockDim.x)

#define EW_RC(shape)                                                                                        \
    int64_t r = i_ / (shape).cols;                                                                          \
    int64_t c = i_ - r * (shape).cols

static ew_shape ew_shape_of(const mt_tensor *t)
{
    ew_shape s = {mt_rows(t), mt_cols(t)};
    return s;
}

static inline bool ew_empty(ew_shape s)
{
    return s.rows * s.cols == 0;
}

#define EW_GRID(s) grid_for((s).rows * (s).cols, MT_CUDA_THREADS), MT_CUDA_THREADS, 0, cuda_stream(be)
#define RS(t) ((t) ? mt_row_stride(t) : 0)
#define PTR(T, t) ((t) ? (T *)(t)->data : (T *)NULL)

/* ---- add / mul ---------------------------------------------------------- */

/* out = a + b (mul = 0) or a * b (mul = 1); all (rows, cols) in T. */
template <typename T>
__global__ void binary_fwd_kernel(T *out, const T *a, const T *b, ew_shape s, int64_t ors, int64_t ars, int64_t brs,
                                  int mul)
{
    EW_LOOP(s) {
        EW_RC(s);
        float x = load_f<T>(a, r * ars + c), y = load_f<T>(b, r * brs + c);
        store_f<T>(out, r * ors + c, mul ? x * y : x + y);
    }
}

/* add: da += dout, db += dout. mul: da += dout * b, db += dout * a.
 * da, db may be NULL; a, b are read only for mul. All (rows, cols) in T. */
template <typename T>
__global__ void binary_bwd_kernel(T *da, T *db, const T *dout, const T *a, const T *b, ew_shape s, int64_t dars,
                                  int64_t dbrs, int64_t dors, int64_t ars, int64_t brs, int mul)
{
    EW_LOOP(s) {
        EW_RC(s);
        float g = load_f<T>(dout, r * dors + c);
        if (da)
            accum_f<T>(da, r * dars + c, mul ? g * load_f<T>(b, r * brs + c) : g);
        if (db)
            accum_f<T>(db, r * dbrs + c, mul ? g * load_f<T>(a, r * ars + c) : g);
    }
}

static void binary_fwd(mt_backend *be, const char *op, mt_tensor *out, const mt_tensor *a, const mt_tensor *b, int mul)
{
    ew_shape s = ew_shape_of(out);
    if (ew_empty(s))
        return;
    dispatch_float(out->dtype, op, [&](auto tag) {
        using T = typename decltype(tag)::type;
        binary_fwd_kernel<T><<<EW_GRID(s)>>>((T *)out->data, (const T *)a->data, (const T *)b->data, s,
                                             mt_row_stride(out), mt_row_stride(a), mt_row_stride(b), mul);
        LAUNCH_CHECK(op);
    });
}

static void binary_bwd(mt_backend *be, const char *op, mt_tensor *da, mt_tensor *db, const mt_tensor *dout,
                       const mt_tensor *a, const mt_tensor *b, int mul)
{
    ew_shape s = ew_shape_of(dout);
    if ((!da && !db) || ew_empty(s))
        return;
    dispatch_float(dout->dtype, op, [&](auto tag) {
        using T = typename decltype(tag)::type;
        binary_bwd_kernel<T><<<EW_GRID(s)>>>(PTR(T, da), PTR(T, db), (const T *)dout->data, PTR(const T, a),
                                             PTR(const T, b), s, RS(da), RS(db), mt_row_stride(dout), RS(a), RS(b),
                                             mul);
        LAUNCH_CHECK(op);
    });
}

void cuda_add_fwd(mt_backend *be, mt_tensor *out, const mt_tensor *a, const mt_tensor *b)
{
    binary_fwd(be, "add_fwd", out, a, b, 0);
}

void cuda_mul_fwd(mt_backend *be, mt_tensor *out, const mt_tensor *a, const mt_tensor *b)
{
    binary_fwd(be, "mul_fwd", out, a, b, 1);
}

void cuda_add_bwd(mt_backend *be, mt_tensor *da, mt_tensor *db, const mt_tensor *dout)
{
    binary_bwd(be, "add_bwd", da, db, dout, NULL, NULL, 0);
}

void cuda_mul_bwd(mt_backend *be, mt_tensor *da, mt_tensor *db, const mt_tensor *dout, const mt_tensor *a,
                  const mt_tensor *b)
{
    binary_bwd(be, "mul_bwd", da, db, dout, a, b, 1);
}

/* ---- silu / softplus ---------------------------------------------------- */

enum { UN_SILU = 0, UN_SOFTPLUS = 1 };

/* silu: y = x * sigmoid(x). softplus: y = max(x, 0) + log1p(exp(-|x|)).
 * x, y (rows, cols) in T. */
template <typename T>
__global__ void unary_fwd_kernel(T *y, const T *x, ew_shape s, int64_t yrs, int64_t xrs, int kind)
{
    EW_LOOP(s) {
        EW_RC(s);
        float v = load_f<T>(x, r * xrs + c);
        float out = kind == UN_SILU ? v * sigmoid_f(v) : fmaxf(v, 0.0f) + log1pf(expf(-fabsf(v)));
        store_f<T>(y, r * yrs + c, out);
    }
}

/* silu: dx += dy * sig * (1 + x * (1 - sig)). softplus: dx += dy * sig,
 * sig = sigmoid(x). dx, dy, x (rows, cols) in T. */
template <typename T>
__global__ void unary_bwd_kernel(T *dx, const T *dy, const T *x, ew_shape s, int64_t dxrs, int64_t dyrs, int64_t xrs,
                                 int kind)
{
    EW_LOOP(s) {
        EW_RC(s);
        float v = load_f<T>(x, r * xrs + c), g = load_f<T>(dy, r * dyrs + c);
        float sig = sigmoid_f(v);
        float d = kind == UN_SILU ? g * sig * (1.0f + v * (1.0f - sig)) : g * sig;
        accum_f<T>(dx, r * dxrs + c, d);
    }
}

static void unary_fwd(mt_backend *be, const char *op, mt_tensor *y, const mt_tensor *x, int kind)
{
    ew_shape s = ew_shape_of(y);
    if (ew_empty(s))
        return;
    dispatch_float(y->dtype, op, [&](auto tag) {
        using T = typename decltype(tag)::type;
        unary_fwd_kernel<T><<<EW_GRID(s)>>>((T *)y->data, (const T *)x->data, s, mt_row_stride(y), mt_row_stride(x),
                                            kind);
        LAUNCH_CHECK(op);
    });
}

static void unary_bwd(mt_backend *be, const char *op, mt_tensor *dx, const mt_tensor *dy, const mt_tensor *x,
                      int kind)
{
    ew_shape s = ew_shape_of(x);
    if (!dx || ew_empty(s))
        return;
    dispatch_float(x->dtype, op, [&](auto tag) {
        using T = typename decltype(tag)::type;
        unary_bwd_kernel<T><<<EW_GRID(s)>>>((T *)dx->data, (const T *)dy->data, (const T *)x->data, s,
                                            mt_row_stride(dx), mt_row_stride(dy), mt_row_stride(x), kind);
        LAUNCH_CHECK(op);
    });
}

void cuda_silu_fwd(mt_backend *be, mt_tensor *y, const mt_tensor *x)
{
    unary_fwd(be, "silu_fwd", y, x, UN_SILU);
}

void cuda_silu_bwd(mt_backend *be, mt_tensor *dx, const mt_tensor *dy, const mt_tensor *x)
{
    unary_bwd(be, "silu_bwd", dx, dy, x, UN_SILU);
}

void cuda_softplus_fwd(mt_backend *be, mt_tensor *y, const mt_tensor *x)
{
    unary_fwd(be, "softplus_fwd", y, x, UN_SOFTPLUS);
}

void cuda_softplus_bwd(mt_backend *be, mt_tensor *dx, const mt_tensor *dy, const mt_tensor *x)
{
    unary_bwd(be, "softplus_bwd", dx, dy, x, UN_SOFTPLUS);
}

/* ---- cast --------------------------------------------------------------- */

/* out = x converted from TI to TO (bf16 rounds to nearest even; same dtype is
 * a copy), or with accum = 1: out += x. out, x (rows, cols). */
template <typename TO, typename TI>
__global__ void cast_kernel(TO *out, const TI *x, ew_shape s, int64_t ors, int64_t xrs, int accum)
{
    EW_LOOP(s) {
        EW_RC(s);
        float v = load_f<TI>(x, r * xrs + c);
        if (accum)
            accum_f<TO>(out, r * ors + c, v);
        else
            store_f<TO>(out, r * ors + c, v);
    }
}

/* cast_kernel for contiguous out and x of n elements, V at a time (n a
 * multiple of V, both aligned to V): the weights cast every step, where the
 * scalar form spent its time on index arithmetic. */
template <typename TO, typename TI, int V>
__global__ void cast_flat_kernel(TO *out, const TI *x, int64_t n, int accum)
{
    for (int64_t i = (blockIdx.x * (int64_t)blockDim.x + threadIdx.x) * V; i < n;
         i += (int64_t)gridDim.x * blockDim.x * V) {
        float v[V];
        vec_load<TI, V>(v, x + i);
        if (accum)
            vec_accum<TO, V>(out + i, v);
        else
            vec_store<TO, V>(out + i, v);
    }
}

static void cast(mt_backend *be, const char *op, mt_tensor *out, const mt_tensor *x, int accum)
{
    ew_shape s = ew_shape_of(x);
    if (ew_empty(s))
        return;
    const int64_t n = s.rows * s.cols;
    const bool flat = mt_is_contiguous(out) && mt_is_contiguous(x) && n % 4 == 0 && vec_ok(out, 4) && vec_ok(x, 4);
    dispatch_float(out->dtype, op, [&](auto to) {
        using TO = typename decltype(to)::type;
        dispatch_float(x->dtype, op, [&](auto ti) {
            using TI = typename decltype(ti)::type;
            if (flat)
                cast_flat_kernel<TO, TI, 4><<<grid_for(n / 4, MT_CUDA_THREADS), MT_CUDA_THREADS, 0, cuda_stream(be)>>>(
                    (TO *)out->data, (const TI *)x->data, n, accum);
            else
                cast_kernel<TO, TI><<<EW_GRID(s)>>>((TO *)out->data, (const TI *)x->data, s, mt_row_stride(out),
                                                    mt_row_stride(x), accum);
            LAUNCH_CHECK(op);
        });
    });
}

void cuda_cast_fwd(mt_backend *be, mt_tensor *out, const mt_tensor *x)
{
    cast(be, "cast_fwd", out, x, 0);
}

void cuda_cast_bwd(mt_backend *be, mt_tensor *dx, const mt_tensor *dout)
{
    if (dx)
        cast(be, "cast_bwd", dx, dout, 1);
}

/* ---- axpy ---------------------------------------------------------------- */

/* y (n) += alpha * x (n), contiguous, in T. */
template <typename T>
__global__ void axpy_kernel(T *y, const T *x, int64_t n, float alpha)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        store_f<T>(y, i, load_f<T>(y, i) + alpha * load_f<T>(x, i));
}

void cuda_axpy(mt_backend *be, mt_tensor *y, const mt_tensor *x, double alpha)
{
    int64_t n = mt_numel(y);
    if (n == 0)
        return;
    dispatch_float(y->dtype, "axpy", [&](auto tag) {
        using T = typename decltype(tag)::type;
        axpy_kernel<T><<<grid_for(n, MT_CUDA_THREADS), MT_CUDA_THREADS, 0, cuda_stream(be)>>>(
            (T *)y->data, (const T *)x->data, n, (float)alpha);
        LAUNCH_CHECK("axpy");
    });
}
