/* The SSD scan and one Mamba-2 layer on the GPU at the reference's benchmark
 * size: batch 8, seqlen 2048, d_model 1024 (expand 2: 32 heads of 64),
 * d_state 128, ngroups 1, chunk 256, bf16 activations, fp32 parameters.
 *
 * FLOPs of the chunked SSD forward, per (batch, chunk of Q): C.B^T 2Q^2N per
 * group; per head the masked intra-chunk product 2Q^2P, the chunk state 2QNP
 * and the inter-chunk output 2QNP. Backward counts twice the forward. The
 * layer adds its two GEMMs (2 * tokens * d_model * (in_proj_dim + d_inner)).
 *
 * Prints ms, TFLOP/s and the step memory; bench/compare_reference.sh times
 * the reference beside it in the same run. */
#include <math.h>
#include <stdio.h>

#include "core/device.h"
#include "core/error.h"
#include "layers/model.h"

#include "bench_layer.h"

typedef struct bench {
    mt_model *m;
    mt_tensor *u, *x, *dt, *bm, *cm, *z;
    mt_tensor *seed_ssd, *seed_layer; /* upstream gradients of the two outputs */
    bool layer, gate;
} bench;

static mt_tensor *run(mt_ctx *c, const void *arg)
{
    const bench *b = arg;
    const mt_model_config *cfg = &b->m->cfg;
    mt_mamba2 *mix = (mt_mamba2 *)b->m->layers[0].block;
    if (b->layer)
        return mt_mamba2_forward(c, mix, cfg, b->u, NULL);
    mt_ssd_config sc = {cfg->headdim, cfg->ngroups, cfg->chunk_size, 0, INFINITY};
    return mt_ssd(c, b->x, b->dt, mix->A_log, b->bm, b->cm, mix->D, b->gate ? b->z : NULL, mix->dt_bias, NULL,
                  NULL, &sc, NULL);
}

int main(void)
{
    char why[256];
    if (mt_cuda_device_count() == 0) {
        printf("bench_mamba2: no CUDA device present\n");
        return 77;
    }
    mt_backend *be = mt_backend_cuda_create(0, why, sizeof why);
    if (!be)
        mt_fatal("bench_mamba2: %s", why);
    mt_model_config cfg;
    mt_model_config_defaults(&cfg);
    cfg.d_model = 1024;
    cfg.n_layer = 1;
    cfg.vocab_size = 16;
    if (!mt_model_config_finalize(&cfg, why, sizeof why))
        mt_fatal("bench_mamba2: %s", why);
    mt_model m;
    mt_model_build(&m, &cfg, MT_CUDA, MT_F32);
    mt_model_init(&m, be, 1);

    const int64_t B = 8, L = 2048, H = cfg.nheads, P = cfg.headdim, N = cfg.d_state, Q = cfg.chunk_size;
    const int64_t HP = H * P, GN = cfg.ngroups * N;
    bench b = {.m = &m};
    b.u = bench_random_bf16(be, B, L, cfg.d_model, 1, -1, 1);
    b.u->requires_grad = true;
    b.x = bench_random_bf16(be, B, L, HP, 2, -1, 1);
    b.dt = bench_random_bf16(be, B, L, H, 3, -4, 1);
    b.bm = bench_random_bf16(be, B, L, GN, 4, -1, 1);
    b.cm = bench_random_bf16(be, B, L, GN, 5, -1, 1);
    b.z = bench_random_bf16(be, B, L, HP, 6, -2, 2);
    mt_tensor *differentiable[] = {b.x, b.dt, b.bm, b.cm, b.z};
    for (int i = 0; i < 5; i++)
        differentiable[i]->requires_grad = true;
    b.seed_ssd = bench_random_bf16(be, B, L, HP, 7, -1, 1);
    b.seed_layer = bench_random_bf16(be, B, L, cfg.d_model, 8, -1, 1);

    double chunks = (double)B * (double)((L + Q - 1) / Q);
    double ssd_flops = chunks * (2.0 * Q * Q * N * cfg.ngroups + H * (2.0 * Q * Q * P + 4.0 * Q * N * P));
    double gemm_flops = 2.0 * B * L * cfg.d_model * (double)(cfg.in_proj_dim + cfg.d_inner);

    mt_ctx c;
    mt_ctx_init(&c, be, (size_t)4 << 30);
    struct { const char *name; bool layer, gate; double flops; } rows[] = {
        {"ssd", false, false, ssd_flops},
        {"ssd_z", false, true, ssd_flops},
        {"mamba2_layer", true, false, ssd_flops + gemm_flops},
    };
    mt_tensor *inputs[] = {b.u, b.x, b.dt, b.bm, b.cm, b.z};
    bench_case k = {"bench_mamba2", run, &b, NULL, inputs, 6, &m.params};
    for (int r = 0; r < 3; r++) {
        b.layer = rows[r].layer;
        b.gate = rows[r].gate;
        k.seed = b.layer ? b.seed_layer : b.seed_ssd;
        float fwd = bench_time_ms(&c, &k, false), both = bench_time_ms(&c, &k, true);
        printf("bench %-13s fwd %7.3f ms (%6.1f TFLOP/s)  fwd+bwd %7.3f ms (%6.1f TFLOP/s)  step memory %.0f MiB\n",
               rows[r].name, fwd, rows[r].flops / (fwd * 1e-3) / 1e12, both, 3 * rows[r].flops / (both * 1e-3) / 1e12,
               mt_ctx_memory_of(&c).total / 1048576.0);
    }
    printf("tokens per step %lld, SSD forward %.2f GFLOP\n", (long long)(B * L), ssd_flops / 1e9);
    mt_ctx_release(&c);
    mt_tensor *all[] = {b.u, b.x, b.dt, b.bm, b.cm, b.z, b.seed_ssd, b.seed_layer};
    for (int i = 0; i < 8; i++)
        mt_tensor_free(all[i]);
    mt_model_release(&m);
    be->destroy(be);
    return 0;
}
