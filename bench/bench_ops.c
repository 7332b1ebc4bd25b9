/* Times each op forward and forward+backward on the GPU at the sizes of a
 * mamba2-370m training step (batch 8, seqlen 2048, d_model 1024, vocab 50288),
 * bf16 activations. Prints ms, achieved TFLOP/s (GEMMs) or GB/s (the rest)
 * against the floor counted below, one line per op, as
 *   bench <name> <dtype> fwd_ms <x> fwdbwd_ms <y> <unit> <rate>
 * so scripts/gpu-check.sh can put the reference's timings beside them. */
#include <cuda_runtime_api.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/ops.h"
#include "core/device.h"
#include "core/error.h"

enum { WARMUP = 3, REPS = 20 };

typedef struct bench_case {
    const char *name;
    mt_dtype dtype;
    int n_in;
    int ndim[3];
    int64_t shape[3][3];
    int ids_in;       /* index of an i32 input, or -1 */
    int64_t id_limit;
    double flops;     /* forward; backward counts 2x */
    double bytes_fwd; /* the fewest bytes forward must move */
    double bytes_bwd;
    mt_tensor *(*run)(mt_ctx *c, mt_tensor **in);
} bench_case;

static mt_tensor *run_linear(mt_ctx *c, mt_tensor **in) { return mt_linear(c, in[0], in[1], NULL); }
static mt_tensor *run_embedding(mt_ctx *c, mt_tensor **in) { return mt_embedding(c, in[0], in[1]); }
static mt_tensor *run_silu(mt_ctx *c, mt_tensor **in) { return mt_silu(c, in[0]); }
static mt_tensor *run_mul(mt_ctx *c, mt_tensor **in) { return mt_mul(c, in[0], in[1]); }
static mt_tensor *run_cross_entropy(mt_ctx *c, mt_tensor **in) { return mt_cross_entropy(c, in[0], in[1], -100); }
static mt_tensor *run_rmsnorm(mt_ctx *c, mt_tensor **in)
{
    mt_tensor *r;
    return mt_rmsnorm(c, in[0], in[1], in[2], 1e-5, &r);
}

static float median(float *v, int n)
{
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && v[j] < v[j - 1]; j--) {
            float t = v[j]; v[j] = v[j - 1]; v[j - 1] = t;
        }
    return v[n / 2];
}

static void check(cudaError_t e, const char *what)
{
    if (e != cudaSuccess)
        mt_fatal("bench: %s: %s", what, cudaGetErrorString(e));
}

/* Median ms of REPS runs of forward (and backward when with_backward). */
static float time_case(mt_ctx *c, const bench_case *b, mt_tensor **in, mt_tensor *seed, bool with_backward)
{
    cudaEvent_t start, stop;
    float ms[REPS];
    check(cudaEventCreate(&start), "cudaEventCreate");
    check(cudaEventCreate(&stop), "cudaEventCreate");
    c->grad_enabled = with_backward;
    for (int r = -WARMUP; r < REPS; r++) {
        check(cudaEventRecord(start, 0), "cudaEventRecord");
        mt_tensor *out = b->run(c, in);
        if (with_backward)
            mt_backward_seeded(c, 1, &out, &seed);
        check(cudaEventRecord(stop, 0), "cudaEventRecord");
        check(cudaEventSynchronize(stop), "cudaEventSynchronize");
        if (r >= 0)
            check(cudaEventElapsedTime(&ms[r], start, stop), "cudaEventElapsedTime");
        for (int i = 0; i < b->n_in; i++)
            in[i]->grad = NULL;
        mt_ctx_end_step(c);
    }
    cudaEventDestroy(start);
    cudaEventDestroy(stop);
    return median(ms, REPS);
}

int main(void)
{
    char why[256];
    if (mt_cuda_device_count() == 0) {
        printf("bench_ops: no CUDA device present\n");
        return 77;
    }
    mt_backend *be = mt_backend_cuda_create(0, why, sizeof why);
    if (!be)
        mt_fatal("bench_ops: %s", why);
    const int64_t T = 8 * 2048, D = 1024, V = 50288, IN = 2 * 2048 + 2 * 128 + 32;
    const double bf = 2; /* bytes of a bf16 */
    bench_case cases[] = {
        {"linear_in_proj", MT_BF16, 2, {2, 2}, {{T, D}, {IN, D}}, -1, 0, 2.0 * T * D * IN, 0, 0, run_linear},
        {"linear_in_proj", MT_F32, 2, {2, 2}, {{T, D}, {IN, D}}, -1, 0, 2.0 * T * D * IN, 0, 0, run_linear},
        {"lm_head", MT_BF16, 2, {2, 2}, {{T, D}, {V, D}}, -1, 0, 2.0 * T * D * V, 0, 0, run_linear},
        {"embedding", MT_BF16, 2, {2, 1}, {{V, D}, {T}}, 1, V, 0, bf * 2 * T * D, bf * 2 * T * D, run_embedding},
        {"rmsnorm_residual", MT_BF16, 3, {2, 2, 1}, {{T, D}, {T, D}, {D}}, -1, 0, 0,
         T * D * (bf + 4 + bf + 4), T * D * (bf + 4 + bf + 4), run_rmsnorm},
        {"silu", MT_BF16, 1, {2}, {{T, 2 * D}}, -1, 0, 0, bf * 2 * T * 2 * D, bf * 3 * T * 2 * D, run_silu},
        {"mul", MT_BF16, 2, {2, 2}, {{T, 2 * D}, {T, 2 * D}}, -1, 0, 0, bf * 3 * T * 2 * D,
         bf * 5 * T * 2 * D, run_mul},
        {"cross_entropy", MT_BF16, 2, {2, 1}, {{T, V}, {T}}, 1, V, 0, bf * T * V, 2 * bf * T * V, run_cross_entropy},
    };
    mt_ctx c;
    mt_ctx_init(&c, be, (size_t)8 << 30);
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        const bench_case *b = &cases[k];
        mt_tensor *in[3];
        for (int i = 0; i < b->n_in; i++) {
            bool ids = i == b->ids_in;
            bool accum = b->run == run_rmsnorm && i > 0;
            mt_dtype dt = ids ? MT_I32 : accum ? MT_F32 : b->dtype;
            in[i] = mt_tensor_new(MT_CUDA, dt, b->ndim[i], b->shape[i]);
            if (ids) {
                mt_tensor *h = mt_tensor_new(MT_CPU, MT_I32, b->ndim[i], b->shape[i]);
                for (int64_t e = 0; e < mt_numel(h); e++)
                    ((int32_t *)h->data)[e] = (int32_t)((e * 2654435761u) % (uint64_t)b->id_limit);
                mt_tensor_copy(in[i], h);
                mt_tensor_free(h);
            } else {
                be->fill_uniform(be, in[i], 100 + k * 10 + i, accum && i == 2 ? 0.5 : -1, 1);
                in[i]->requires_grad = true;
            }
        }
        c.grad_enabled = false;
        mt_tensor *probe = b->run(&c, in);
        mt_tensor *seed = mt_tensor_new(MT_CUDA, probe->dtype, probe->ndim, probe->shape);
        be->fill_uniform(be, seed, 7, -1, 1);
        mt_ctx_end_step(&c);

        float fwd = time_case(&c, b, in, seed, false);
        float both = time_case(&c, b, in, seed, true);
        if (b->flops > 0)
            printf("bench %-16s %-4s fwd_ms %8.3f fwdbwd_ms %8.3f TFLOP/s %7.1f\n", b->name,
                   mt_dtype_name(b->dtype), fwd, both, 3 * b->flops / (both * 1e-3) / 1e12);
        else
            printf("bench %-16s %-4s fwd_ms %8.3f fwdbwd_ms %8.3f GB/s    %7.1f\n", b->name,
                   mt_dtype_name(b->dtype), fwd, both, (b->bytes_fwd + b->bytes_bwd) / (both * 1e-3) / 1e9);
        mt_tensor_free(seed);
        for (int i = 0; i < b->n_in; i++)
            mt_tensor_free(in[i]);
    }
    printf("bench step memory %.1f MiB\n", mt_ctx_memory_of(&c).total / 1048576.0);
    mt_ctx_release(&c);
    be->destroy(be);
    return 0;
}
