/* Linear layer: y = x w^T + b through cuBLASLt, and its backward (two more
 * cuBLASLt matmuls accumulating with beta = 1, and a deterministic column
 * sum for the bias gradient).
 *
 * Row-major math through column-major views: a row-major (R, C) matrix with
 * row stride ld is the column-major (C, R) matrix with leading dimension ld.
 *   y (M, N) = x (M, K) w (N, K)^T:  y^T (N x M) = op_T(w^T: K x N) . x^T (K x M)
 *   dx (M, K) += dy (M, N) w (N, K):  dx^T (K x M) = w^T (K x N) . dy^T (N x M)
 *   dw (N, K) += dy^T x:              dw^T (K x N) = x^T (K x M) . op_T(dy^T: N x M)
 * Arithmetic is fp32 (CUBLAS_COMPUTE_32F, never TF32) on f32 or bf16 operands.
 * cuBLASLt is deterministic for a given algorithm on a given device, and the
 * algorithm is the first heuristic answer for the shapes and alignments. */
#include <stdio.h>

#include "kernels/cuda/cuda_common.cuh"

static cudaDataType_t cuda_dtype(mt_dtype dt, const char *op)
{
    switch (dt) {
    case MT_F32: return CUDA_R_32F;
    case MT_BF16: return CUDA_R_16BF;
    default: mt_fatal("%s: dtype %s is not supported on CUDA (f32 and bf16 are)", op, mt_dtype_name(dt));
    }
}

/* The largest power of two (up to 256) dividing the address. */
static uint32_t ptr_alignment(const void *p)
{
    uintptr_t a = (uintptr_t)p;
    uint32_t al = 1;
    while (al < 256 && (a & (uintptr_t)(2 * al - 1)) == 0)
        al *= 2;
    return al;
}

/* D (m x n, column-major, ld ldd) = alpha op(A) op(B) + beta D, with
 * op(A) m x k and op(B) k x n; A is stored (transa ? k x m : m x k), B is
 * stored (transb ? n x k : k x n). With bias (length m, dtype bias_dt) the
 * BIAS epilogue adds it to every column. Returns false when cuBLASLt offers
 * no algorithm (the caller decides); fatal on any other failure. */
static bool lt_matmul(mt_backend *be, const char *op, cudaDataType_t dt, bool transa, bool transb, int64_t m,
                      int64_t n, int64_t k, const void *A, int64_t lda, const void *B, int64_t ldb, void *D,
                      int64_t ldd, float beta, const void *bias, cudaDataType_t bias_dt)
{
    mt_cuda_state *s = cuda_state(be);
    cublasLtMatmulDesc_t desc = NULL;
    cublasLtMatrixLayout_t la = NULL, lb = NULL, ld = NULL;
    cublasLtMatmulPreference_t pref = NULL;
    cublasOperation_t ta = transa ? CUBLAS_OP_T : CUBLAS_OP_N, tb = transb ? CUBLAS_OP_T : CUBLAS_OP_N;

    CUBLAS_CHECK(cublasLtMatmulDescCreate(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta));
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb));
    if (bias) {
        cublasLtEpilogue_t epi = CUBLASLT_EPILOGUE_BIAS;
        int32_t bdt = (int32_t)bias_dt;
        CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi));
        CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias));
        CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bdt, sizeof bdt));
    }
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&la, dt, transa ? k : m, transa ? m : k, lda));
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&lb, dt, transb ? n : k, transb ? k : n, ldb));
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&ld, dt, m, n, ldd));

    CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
    uint64_t ws = s->workspace_bytes;
    uint32_t al_a = ptr_alignment(A), al_b = ptr_alignment(B), al_d = ptr_alignment(D);
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws));
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &al_a,
                                                      sizeof al_a));
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &al_b,
                                                      sizeof al_b));
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &al_d,
                                                      sizeof al_d));
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &al_d,
                                                      sizeof al_d));

    /* Prefer split-K reductions kept in fp32 (or none): INPLACE and
     * OUTPUT_TYPE would add the K-slices in bf16. Fall back to any scheme. */
    cublasLtMatmulHeuristicResult_t heur;
    int found = 0;
    uint32_t masks[2] = {CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE, CUBLASLT_REDUCTION_SCHEME_MASK};
    for (int i = 0; i < 2 && found == 0; i++) {
        CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK,
                                                          &masks[i], sizeof masks[i]));
        cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(s->lt, desc, la, lb, ld, ld, pref, 1, &heur, &found);
        if (st == CUBLAS_STATUS_NOT_SUPPORTED)
            found = 0;
        else if (st != CUBLAS_STATUS_SUCCESS)
            mt_fatal("%s: cublasLtMatmulAlgoGetHeuristic failed: %s", op, cublasLtGetStatusString(st));
    }
    if (found > 0) {
        float alpha = 1.0f;
        CUBLAS_CHECK(cublasLtMatmul(s->lt, desc, &alpha, A, la, B, lb, &beta, D, ld, D, ld, &heur.algo, s->workspace,
                                    s->workspace_bytes, s->stream));
    }
    CUBLAS_CHECK(cublasLtMatmulPreferenceDestroy(pref));
    CUBLAS_CHECK(cublasLtMatrixLayoutDestroy(ld));
    CUBLAS_CHECK(cublasLtMatrixLayoutDestroy(lb));
    CUBLAS_CHECK(cublasLtMatrixLayoutDestroy(la));
    CUBLAS_CHECK(cublasLtMatmulDescDestroy(desc));
    return found > 0;
}

static void no_algorithm(const char *op, const char *what, const mt_tensor *a, const mt_tensor *b,
                         const mt_tensor *c)
{
    char sa[96], sb[96], sc[96];
    mt_fatal("%s: cuBLASLt found no algorithm for %s with %s, %s -> %s", op, what, mt_shape_str(a, sa, sizeof sa),
             mt_shape_str(b, sb, sizeof sb), mt_shape_str(c, sc, sizeof sc));
}

/* y (M, N) [m, n] = (beta ? y[m, n] : 0) + b[n]: the bias when the epilogue
 * could not take it (beta = 1 after the matmul, 0 when K = 0 and there was
 * none). Grid-stride over M * N; b (N) contiguous, in TB. */
template <typename T, typename TB>
__global__ void bias_add_kernel(T *y, const TB *b, int64_t M, int64_t N, int64_t yrs, int beta)
{
    int64_t total = M * N;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
        int64_t m = i / N, n = i - m * N;
        float v = beta ? load_f<T>(y, m * yrs + n) : 0.0f;
        store_f<T>(y, m * yrs + n, v + (b ? load_f<TB>(b, n) : 0.0f));
    }
}

static void bias_add(mt_backend *be, mt_tensor *y, const mt_tensor *b, int beta)
{
    int64_t M = mt_rows(y), N = mt_cols(y);
    mt_dtype bdt = b ? b->dtype : y->dtype;
    dispatch_float(y->dtype, "linear_fwd (bias)", [&](auto ty) {
        using T = typename decltype(ty)::type;
        dispatch_float(bdt, "linear_fwd (bias)", [&](auto tb) {
            using TB = typename decltype(tb)::type;
            bias_add_kernel<T, TB><<<grid_for(M * N, MT_CUDA_THREADS), MT_CUDA_THREADS, 0, cuda_stream(be)>>>(
                (T *)y->data, b ? (const TB *)b->data : (const TB *)NULL, M, N, mt_row_stride(y), beta);
            LAUNCH_CHECK("linear_fwd (bias)");
        });
    });
}

void cuda_linear_fwd(mt_backend *be, mt_tensor *y, const mt_tensor *x, const mt_tensor *w, const mt_tensor *b)
{
    const char *op = "linear_fwd";
    int64_t M = mt_rows(x), K = mt_cols(x), N = mt_rows(w);
    if (M == 0 || N == 0)
        return;
    if (K == 0) { /* an empty sum: y = b, or 0 */
        bias_add(be, y, b, 0);
        return;
    }
    cudaDataType_t dt = cuda_dtype(x->dtype, op);
    /* The epilogue takes a bias of y's dtype on a 16-byte boundary; any other
     * bias is added by bias_add_kernel after the matmul. */
    bool epi = b && b->dtype == y->dtype && ptr_alignment(b->data) >= 16;
    bool ok = lt_matmul(be, op, dt, true, false, N, M, K, w->data, mt_row_stride(w), x->data, mt_row_stride(x),
                        y->data, mt_row_stride(y), 0.0f, epi ? b->data : NULL, dt);
    if (!ok && epi) {
        epi = false;
        ok = lt_matmul(be, op, dt, true, false, N, M, K, w->data, mt_row_stride(w), x->data, mt_row_stride(x),
                       y->data, mt_row_stride(y), 0.0f, NULL, dt);
    }
    if (!ok)
        no_algorithm(op, "y = x w^T", x, w, y);
    if (b && !epi)
        bias_add(be, y, b, 1);
}

/* Bias gradient, stage 1: partial (P, N) [p, n] = sum of dy (M, N) [m, n] over
 * the rows m of chunk p (rows [p * chunk, (p + 1) * chunk)). Block (32, 8):
 * threadIdx.x picks the column, threadIdx.y strides the chunk's rows; the 8
 * row-partials are then added in threadIdx.y order. Grid (ceil(N / 32), P).
 * P and chunk depend only on M, so the order is fixed. */
template <typename T>
__global__ void colsum_partial_kernel(float *partial, const T *dy, int64_t M, int64_t N, int64_t rs, int64_t chunk)
{
    __shared__ float sh[8][33];
    int64_t n = blockIdx.x * (int64_t)32 + threadIdx.x;
    int64_t r0 = blockIdx.y * chunk, r1 = r0 + chunk < M ? r0 + chunk : M;
    float s = 0.0f;
    if (n < N)
        for (int64_t r = r0 + threadIdx.y; r < r1; r += 8)
            s += load_f<T>(dy, r * rs + n);
    sh[threadIdx.y][threadIdx.x] = s;
    __syncthreads();
    if (threadIdx.y == 0 && n < N) {
        float t = 0.0f;
        for (int j = 0; j < 8; j++)
            t += sh[j][threadIdx.x];
        partial[(int64_t)blockIdx.y * N + n] = t;
    }
}

static void bias_grad(mt_backend *be, mt_arena *scratch, mt_tensor *db, const mt_tensor *dy)
{
    const char *op = "linear_bwd (bias grad)";
    int64_t M = mt_rows(dy), N = mt_cols(dy);
    /* P chunks of at least 64 rows, at most 1024 chunks. */
    int64_t P = (M + 63) / 64;
    if (P > 1024)
        P = 1024;
    if (P < 1)
        P = 1;
    int64_t chunk = (M + P - 1) / P;
    if (chunk < 1)
        chunk = 1;
    float *partial = (float *)mt_arena_alloc(scratch, (size_t)(P * N) * sizeof(float));
    cudaStream_t stream = cuda_stream(be);
    dispatch_float(dy->dtype, op, [&](auto tag) {
        using T = typename decltype(tag)::type;
        dim3 grid((unsigned)((N + 31) / 32), (unsigned)P), block(32, 8);
        colsum_partial_kernel<T><<<grid, block, 0, stream>>>(partial, (const T *)dy->data, M, N, mt_row_stride(dy),
                                                             chunk);
        LAUNCH_CHECK(op);
    });
    dispatch_float(db->dtype, op, [&](auto tag) {
        using TB = typename decltype(tag)::type;
        colsum_finish<TB>((TB *)db->data, partial, (int)P, N, stream);
        LAUNCH_CHECK(op);
    });
}

void cuda_linear_bwd(mt_backend *be, mt_arena *scratch, mt_tensor *dx, mt_tensor *dw, mt_tensor *db,
                     const mt_tensor *dy, const mt_tensor *x, const mt_tensor *w)
{
    const char *op = "linear_bwd";
    int64_t M = mt_rows(x), K = mt_cols(x), N = mt_rows(w);
    if (M == 0 || N == 0)
        return; /* every gradient gets an empty sum */
    cudaDataType_t dt = cuda_dtype(dy->dtype, op);
    if (dx && K > 0) {
        if (!lt_matmul(be, op, dt, false, false, K, M, N, w->data, mt_row_stride(w), dy->data, mt_row_stride(dy),
                       dx->data, mt_row_stride(dx), 1.0f, NULL, dt))
            no_algorithm(op, "dx += dy w", dy, w, dx);
    }
    if (dw && K > 0) {
        if (!lt_matmul(be, op, dt, false, true, K, N, M, x->data, mt_row_stride(x), dy->data, mt_row_stride(dy),
                       dw->data, mt_row_stride(dw), 1.0f, NULL, dt))
            no_algorithm(op, "dw += dy^T x", dy, x, dw);
    }
    if (db)
        bias_grad(be, scratch, db, dy);
}
