/* The selective scan and one Mamba-1 layer on the GPU at the reference's
 * benchmark size: batch 8, seqlen 2048, d_model 768 (expand 2: d_inner 1536),
 * d_state 16, bf16 activations, fp32 parameters; the scan with D, z,
 * delta_bias and softplus, B and C shared by all channels (one group).
 *
 * The scan is bound by memory. Its byte floor: the forward reads u, delta, z
 * and writes y (4 * B*L*D bf16; B and C are 2 * B*L*N, small); the backward
 * reads u, delta, z, dy and writes du, ddelta, dz (7 * B*L*D). GB/s below is
 * that floor over the time taken.
 *
 * Prints ms, GB/s and the step memory; the reference's speed counts only
 * when measured in the same run. */
#include <stdio.h>

#include "core/device.h"
#include "core/error.h"
#include "layers/model.h"

#include "bench_layer.h"

typedef struct bench {
    mt_model *m;
    mt_tensor *u, *x, *delta, *bm, *cm, *z;
    mt_tensor *seed_scan, *seed_layer; /* upstream gradients of the two outputs */
    bool layer;
} bench;

static mt_tensor *run(mt_ctx *c, const void *arg)
{
    const bench *b = arg;
    const mt_model_config *cfg = &b->m->cfg;
    const mt_mamba1 *mix = (mt_mamba1 *)b->m->layers[0].block;
    if (b->layer)
        return mt_mamba1_forward(c, mix, cfg, b->u);
    mt_scan_config sc = {1, true};
    return mt_selective_scan(c, b->x, b->delta, mix->A_log, b->bm, b->cm, mix->D, b->z, mix->dt_bias, &sc);
}

int main(void)
{
    char why[256];
    if (mt_cuda_device_count() == 0) {
        printf("bench_mamba1: no CUDA device present\n");
        return 77;
    }
    mt_backend *be = mt_backend_cuda_create(0, why, sizeof why);
    if (!be)
        mt_fatal("bench_mamba1: %s", why);
    mt_model_config cfg;
    mt_model_config_defaults(&cfg);
    mt_model_config_use_mamba1(&cfg);
    cfg.d_model = 768;
    cfg.n_layer = 1;
    cfg.vocab_size = 16;
    if (!mt_model_config_finalize(&cfg, why, sizeof why))
        mt_fatal("bench_mamba1: %s", why);
    mt_model m;
    mt_model_build(&m, &cfg, MT_CUDA, MT_F32);
    mt_model_init(&m, be, 1);

    const int64_t B = 8, L = 2048, D = cfg.d_inner, N = cfg.d_state;
    bench b = {.m = &m};
    b.u = bench_random_bf16(be, B, L, cfg.d_model, 1, -1, 1);
    b.u->requires_grad = true;
    b.x = bench_random_bf16(be, B, L, D, 2, -1, 1);
    b.delta = bench_random_bf16(be, B, L, D, 3, -4, 1);
    b.bm = bench_random_bf16(be, B, L, N, 4, -1, 1);
    b.cm = bench_random_bf16(be, B, L, N, 5, -1, 1);
    b.z = bench_random_bf16(be, B, L, D, 6, -2, 2);
    mt_tensor *differentiable[] = {b.x, b.delta, b.bm, b.cm, b.z};
    for (int i = 0; i < 5; i++)
        differentiable[i]->requires_grad = true;
    b.seed_scan = bench_random_bf16(be, B, L, D, 7, -1, 1);
    b.seed_layer = bench_random_bf16(be, B, L, cfg.d_model, 8, -1, 1);

    const double act = 2.0 * B * L * D, bc = 2.0 * 2.0 * B * L * N;
    const double fwd_bytes = 4 * act + bc, both_bytes = fwd_bytes + 7 * act + 2 * bc;

    mt_ctx c;
    mt_ctx_init(&c, be, (size_t)4 << 30);
    mt_tensor *inputs[] = {b.u, b.x, b.delta, b.bm, b.cm, b.z};
    bench_case k = {"bench_mamba1", run, &b, b.seed_scan, inputs, 6, &m.params};
    b.layer = false;
    float fwd = bench_time_ms(&c, &k, false), both = bench_time_ms(&c, &k, true);
    printf("bench selective_scan fwd %7.3f ms (%6.1f GB/s of a %.0f MB floor)  "
           "fwd+bwd %7.3f ms (%6.1f GB/s of a %.0f MB floor)  step memory %.0f MiB\n",
           fwd, fwd_bytes / (fwd * 1e-3) / 1e9, fwd_bytes / 1e6, both, both_bytes / (both * 1e-3) / 1e9,
           both_bytes / 1e6, mt_ctx_memory_of(&c).total / 1048576.0);
    b.layer = true;
    k.seed = b.seed_layer;
    fwd = bench_time_ms(&c, &k, false);
    both = bench_time_ms(&c, &k, true);
    printf("bench mamba1_layer   fwd %7.3f ms  fwd+bwd %7.3f ms  (%.0f tokens/s fwd+bwd)  step memory %.0f MiB\n",
           fwd, both, B * L / (both * 1e-3), mt_ctx_memory_of(&c).total / 1048576.0);
    printf("tokens per step %lld, d_inner %lld, d_state %lld\n", (long long)(B * L), (long long)D, (long long)N);
    mt_ctx_release(&c);
    mt_tensor *all[] = {b.u, b.x, b.delta, b.bm, b.cm, b.z, b.seed_scan, b.seed_layer};
    for (int i = 0; i < 8; i++)
        mt_tensor_free(all[i]);
    mt_model_release(&m);
    be->destroy(be);
    return 0;
}
