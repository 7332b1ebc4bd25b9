/* Causal depthwise conv1d over time with bias and fused SiLU (Mamba-2's conv
 * over xBC), channels last, and its backward. */
#include <stdbool.h>

#include "kernels/cpu/cpu_internal.h"

/* The conv's inputs and sizes, shared by the forward and the backward. */
typedef struct {
    const mt_tensor *x, *weight, *bias, *init_state, *seq_idx;
    int64_t batch, seqlen, channels, width;
} conv_args;

static conv_args conv_open(const mt_tensor *x, const mt_tensor *weight, const mt_tensor *bias,
                           const mt_tensor *init_state, const mt_tensor *seq_idx)
{
    return (conv_args){.x = x, .weight = weight, .bias = bias, .init_state = init_state, .seq_idx = seq_idx,
                       .batch = x->shape[0], .seqlen = x->shape[1], .channels = mt_cols(x),
                       .width = weight->shape[weight->ndim - 1]};
}

/* Whether the tap at time tp (< t) reads anything for output time t of batch
 * row b: nothing crosses a document boundary, and a tap before the sequence
 * reads init_state only while t is still in the first document. */
static bool tap_live(const conv_args *a, int64_t b, int64_t t, int64_t tp)
{
    if (tp < 0 && !a->init_state)
        return false;
    if (!a->seq_idx)
        return true;
    const int32_t *seq = (const int32_t *)a->seq_idx->data + b * a->seqlen;
    return seq[tp < 0 ? 0 : tp] == seq[t];
}

/* What a live tap reads: x[b, tp, c], or init_state[b, c, tp + W - 1] for tp < 0. */
static double tap_value(const conv_args *a, int64_t b, int64_t tp, int64_t c)
{
    if (tp >= 0)
        return cpu_load(a->x->dtype, cpu_row(a->x, b * a->seqlen + tp), c);
    return cpu_load(a->init_state->dtype, a->init_state->data,
                    (b * a->channels + c) * (a->width - 1) + tp + a->width - 1);
}

static double conv_weight(const conv_args *a, int64_t c, int64_t k)
{
    return cpu_load(a->weight->dtype, a->weight->data, c * a->width + k);
}

/* The pre-activation bias[c] + sum_k weight[c, k] * tap k at time t - (W-1) + k. */
static double conv_preact(const conv_args *a, int64_t b, int64_t t, int64_t c)
{
    double u = a->bias ? cpu_load(a->bias->dtype, a->bias->data, c) : 0.0;
    for (int64_t k = 0; k < a->width; k++) {
        int64_t tp = t - (a->width - 1) + k;
        if (tap_live(a, b, t, tp))
            u += conv_weight(a, c, k) * tap_value(a, b, tp, c);
    }
    return u;
}

/* out (B, L, C) = silu(bias (C) + sum_{k<W} weight (C, W) [c, k] * x (B, L, C) [b, t - (W-1) + k, c]),
 * taps before t = 0 reading init_state (B, C, W-1) or 0, taps across a
 * seq_idx (B, L) document boundary reading 0 (backend.h has the exact rule).
 * weight is read as C x W contiguous, so (C, 1, W) works as well. Rows of
 * out are independent and run in parallel. */
void mt_cpu_conv1d_fwd(mt_backend *be, mt_tensor *out, const mt_tensor *x, const mt_tensor *weight,
                       const mt_tensor *bias, const mt_tensor *init_state, const mt_tensor *seq_idx)
{
    (void)be;
    conv_args a = conv_open(x, weight, bias, init_state, seq_idx);
#pragma omp parallel for
    for (int64_t r = 0; r < a.batch * a.seqlen; r++) {
        int64_t b = r / a.seqlen, t = r % a.seqlen;
        void *o = cpu_row(out, r);
        for (int64_t c = 0; c < a.channels; c++)
            cpu_store(out->dtype, o, c, cpu_silu(conv_preact(&a, b, t, c)));
    }
}

/* With g = dout (B, L, C) * silu'(u), u the pre-activation recomputed from x:
 *   dx[b, s, c] += sum over live taps (t, k) reading x[b, s, c] of g[b, t, c] * weight[c, k]
 *   dinit_state[b, c, j] += the same over live taps reading init_state[b, c, j]
 *   dweight[c, k] += sum over (b, t) of g[b, t, c] * tap k;  dbias[c] += sum over (b, t) of g
 * Any gradient may be NULL. g is kept in double for all (b, t, c); dx gathers
 * per row and the per-channel sums run over (b, t) in order, each output
 * written by one thread, so the result does not depend on the thread count. */
void mt_cpu_conv1d_bwd(mt_backend *be, mt_arena *scratch, mt_tensor *dx, mt_tensor *dweight, mt_tensor *dbias,
                       mt_tensor *dinit_state, const mt_tensor *dout, const mt_tensor *x, const mt_tensor *weight,
                       const mt_tensor *bias, const mt_tensor *init_state, const mt_tensor *seq_idx)
{
    (void)be;
    conv_args a = conv_open(x, weight, bias, init_state, seq_idx);
    int64_t rows = a.batch * a.seqlen, C = a.channels, W = a.width, L = a.seqlen;
    if (!dx && !dweight && !dbias && !dinit_state)
        return;
    double *g = cpu_temp_alloc(scratch, (size_t)(rows * C) * sizeof *g);
#pragma omp parallel for
    for (int64_t r = 0; r < rows; r++) {
        const void *dr = cpu_row(dout, r);
        for (int64_t c = 0; c < C; c++)
            g[r * C + c] = cpu_load(dout->dtype, dr, c) * cpu_silu_grad(conv_preact(&a, r / L, r % L, c));
    }

    if (dx) {
#pragma omp parallel for
        for (int64_t r = 0; r < rows; r++) {
            int64_t b = r / L, s = r % L;
            void *dxr = cpu_row(dx, r);
            for (int64_t c = 0; c < C; c++) {
                double sum = 0.0;
                /* Output time t reads x at s through tap k = s - t + W - 1. */
                for (int64_t k = 0; k < W; k++) {
                    int64_t t = s + (W - 1) - k;
                    if (t < L && tap_live(&a, b, t, s))
                        sum += g[(b * L + t) * C + c] * conv_weight(&a, c, k);
                }
                cpu_accumulate(dx->dtype, dxr, c, sum);
            }
        }
    }

    if (dweight || dbias || dinit_state) {
#pragma omp parallel for
        for (int64_t c = 0; c < C; c++) {
            double db = 0.0, dw[4] = {0.0, 0.0, 0.0, 0.0};
            for (int64_t b = 0; b < a.batch; b++)
                for (int64_t t = 0; t < L; t++) {
                    double gv = g[(b * L + t) * C + c];
                    db += gv;
                    for (int64_t k = 0; k < W; k++) {
                        int64_t tp = t - (W - 1) + k;
                        if (tap_live(&a, b, t, tp))
                            dw[k] += gv * tap_value(&a, b, tp, c);
                    }
                }
            if (dbias)
                cpu_accumulate(dbias->dtype, dbias->data, c, db);
            for (int64_t k = 0; dweight && k < W; k++)
                cpu_accumulate(dweight->dtype, dweight->data, c * W + k, dw[k]);
            /* init_state[b, c, j] sits at time j - (W-1), read by output time t through tap k = j - t. */
            for (int64_t b = 0; dinit_state && b < a.batch; b++)
                for (int64_t j = 0; j < W - 1; j++) {
                    double sum = 0.0;
                    for (int64_t t = 0; t <= j && t < L; t++)
                        if (tap_live(&a, b, t, j - (W - 1)))
                            sum += g[(b * L + t) * C + c] * conv_weight(&a, c, j - t);
                    cpu_accumulate(dinit_state->dtype, dinit_state->data, (b * C + c) * (W - 1) + j, sum);
                }
        }
    }
    cpu_temp_free(scratch, g);
}

/* The conv state after x (backend.h): final[b, c, k] = s[b, L + k, c] with
 * s = init_state ++ x over time; u < K = W-1 indexes init_state. */
void mt_cpu_conv1d_final_state_fwd(mt_backend *be, mt_tensor *final, const mt_tensor *x, const mt_tensor *init_state)
{
    (void)be;
    const int64_t B = x->shape[0], L = x->shape[1], C = mt_cols(x), K = final->shape[2];
    for (int64_t b = 0; b < B; b++)
        for (int64_t c = 0; c < C; c++)
            for (int64_t k = 0; k < K; k++) {
                const int64_t u = L + k;
                double v = 0.0;
                if (u >= K)
                    v = cpu_load(x->dtype, cpu_row(x, b * L + u - K), c);
                else if (init_state)
                    v = cpu_load(init_state->dtype, init_state->data, (b * C + c) * K + u);
                cpu_store(final->dtype, final->data, (b * C + c) * K + k, v);
            }
}

void mt_cpu_conv1d_final_state_bwd(mt_backend *be, mt_tensor *dx, mt_tensor *dinit_state, const mt_tensor *dfinal,
                                   const mt_tensor *x)
{
    (void)be;
    const int64_t B = dfinal->shape[0], C = dfinal->shape[1], K = dfinal->shape[2], L = x->shape[1];
    for (int64_t b = 0; b < B; b++)
        for (int64_t c = 0; c < C; c++)
            for (int64_t k = 0; k < K; k++) {
                const double g = cpu_load(dfinal->dtype, dfinal->data, (b * C + c) * K + k);
                if (L + k >= K) {
                    if (dx)
                        cpu_accumulate(dx->dtype, cpu_row(dx, b * L + L + k - K), c, g);
                } else if (dinit_state) {
                    cpu_accumulate(dinit_state->dtype, dinit_state->data, (b * C + c) * K + L + k, g);
                }
            }
}
