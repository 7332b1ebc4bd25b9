#include "bench_layer.h"

#include <cuda_runtime_api.h>

#include "core/error.h"

enum { BENCH_WARMUP = 3, BENCH_REPS = 20 };

static void check(const char *name, cudaError_t e, const char *what)
{
    if (e != cudaSuccess)
        mt_fatal("%s: %s: %s", name, what, cudaGetErrorString(e));
}

float bench_time_ms(mt_ctx *c, const bench_case *k, bool backward)
{
    cudaEvent_t start, stop;
    float ms[BENCH_REPS];
    check(k->name, cudaEventCreate(&start), "cudaEventCreate");
    check(k->name, cudaEventCreate(&stop), "cudaEventCreate");
    c->grad_enabled = backward;
    for (int r = -BENCH_WARMUP; r < BENCH_REPS; r++) {
        check(k->name, cudaEventRecord(start, 0), "cudaEventRecord");
        mt_tensor *y = k->run(c, k->arg);
        if (!y)
            mt_fatal("%s: %s", k->name, mt_ctx_error(c));
        if (backward)
            mt_backward_seeded(c, 1, &y, (mt_tensor **)&k->seed);
        check(k->name, cudaEventRecord(stop, 0), "cudaEventRecord");
        check(k->name, cudaEventSynchronize(stop), "cudaEventSynchronize");
        if (r >= 0)
            check(k->name, cudaEventElapsedTime(&ms[r], start, stop), "cudaEventElapsedTime");
        for (int i = 0; i < k->n_inputs; i++)
            k->inputs[i]->grad = NULL;
        mt_params_zero_grad(k->params);
        mt_ctx_end_step(c);
    }
    for (int i = 1; i < BENCH_REPS; i++)
        for (int j = i; j > 0 && ms[j] < ms[j - 1]; j--) {
            float t = ms[j];
            ms[j] = ms[j - 1];
            ms[j - 1] = t;
        }
    cudaEventDestroy(start);
    cudaEventDestroy(stop);
    return ms[BENCH_REPS / 2];
}

mt_tensor *bench_random_bf16(mt_backend *be, int64_t b, int64_t l, int64_t cols, uint64_t seed, double lo,
                             double hi)
{
    mt_tensor *t = mt_tensor_new(MT_CUDA, MT_BF16, 3, (int64_t[]){b, l, cols});
    be->fill_uniform(be, t, seed, lo, hi);
    return t;
}
