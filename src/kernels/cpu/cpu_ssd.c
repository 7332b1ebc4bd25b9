/* The SSD (Mamba-2) scan run as the plain sequential recurrence of backend.h,
 * and its backward as the adjoint recurrence run back in time. This is the
 * ground truth the chunked CUDA kernels are checked against, so it favours the
 * obvious loop over speed, and chunk_size does not enter.
 *
 * Batch row b, time t is row b * L + t of every (B, L, .) tensor; head h owns
 * columns [h*P, (h+1)*P) of x, z, y and reads columns [g*N, (g+1)*N) of Bm
 * and Cm, g = h / (H/G). States are P x N, row p, column n at p * N + n.
 * OpenMP tasks take their temporaries from the heap: the arena is not
 * thread-safe. */
#include <stdbool.h>
#include <string.h>

#include "kernels/cpu/cpu_internal.h"

typedef struct {
    const mt_tensor *x, *dt, *A_log, *Bm, *Cm, *D, *z, *dt_bias, *init_state, *seq_idx;
    int64_t batch, seqlen, nheads, headdim, ngroups, dstate;
    double dt_min, dt_max;
} ssd_args;

/* The gradients ssd_bwd accumulates into (any NULL) and the ones it is given. */
typedef struct {
    mt_tensor *dx, *ddt, *dz;
    const mt_tensor *dy;
} ssd_grads;

/* One head's inputs at one time step, in double. */
typedef struct {
    double *x, *B, *C;        /* (P), (N), (N): arrays the caller owns */
    double delta, ddelta_ddt; /* the clamped step, and its derivative in the raw dt */
    double decay;             /* exp(delta * A) */
    bool restart;             /* a new document starts here: S_{t-1} reads as 0 */
} ssd_step;

static ssd_args ssd_open(const mt_ssd_inputs *in)
{
    const int headdim = in->cfg.headdim, ngroups = in->cfg.ngroups;
    return (ssd_args){.x = in->x, .dt = in->dt, .A_log = in->A_log, .Bm = in->Bm, .Cm = in->Cm, .D = in->D,
                      .z = in->z, .dt_bias = in->dt_bias, .init_state = in->init_state, .seq_idx = in->seq_idx,
                      .batch = in->x->shape[0], .seqlen = in->x->shape[1], .nheads = mt_cols(in->x) / headdim,
                      .headdim = headdim, .ngroups = ngroups, .dstate = mt_cols(in->Bm) / ngroups,
                      .dt_min = in->cfg.dt_min, .dt_max = in->cfg.dt_max};
}

/* D for channel p of head h: D holds one value per head (H) or per channel
 * (H*P), told apart by its size; NULL reads as 0. */
static double ssd_D(const ssd_args *a, int64_t h, int64_t p)
{
    if (!a->D)
        return 0.0;
    int64_t i = mt_numel(a->D) == a->nheads * a->headdim ? h * a->headdim + p : h;
    return cpu_load(a->D->dtype, a->D->data, i);
}

/* S (P x N) = state[b, h] of a (B, H, P, N) tensor, or 0 when it is NULL. */
static void ssd_load_state(const ssd_args *a, const mt_tensor *state, int64_t b, int64_t h, double *S)
{
    int64_t size = a->headdim * a->dstate, base = (b * a->nheads + h) * size;
    for (int64_t i = 0; i < size; i++)
        S[i] = state ? cpu_load(state->dtype, state->data, base + i) : 0.0;
}

/* Fills s with step t of head h in batch row b (A = -exp(A_log[h])):
 *   delta = clamp(softplus(dt + dt_bias), dt_min, dt_max); its derivative in
 *   dt is sigmoid(dt + dt_bias) where the clamp left the value unchanged, else 0. */
static void ssd_load_step(const ssd_args *a, int64_t b, int64_t t, int64_t h, double A, ssd_step *s)
{
    int64_t r = b * a->seqlen + t, P = a->headdim, N = a->dstate, g = h / (a->nheads / a->ngroups);
    double v = cpu_load(a->dt->dtype, cpu_row(a->dt, r), h) + cpu_load(a->dt_bias->dtype, a->dt_bias->data, h);
    double sp = cpu_softplus(v);
    s->delta = fmin(fmax(sp, a->dt_min), a->dt_max);
    s->ddelta_ddt = s->delta == sp ? cpu_sigmoid(v) : 0.0;
    s->decay = exp(s->delta * A);
    const int32_t *seq = a->seq_idx ? (const int32_t *)a->seq_idx->data : NULL;
    s->restart = seq && t > 0 && seq[r] != seq[r - 1];
    const void *xr = cpu_row(a->x, r), *br = cpu_row(a->Bm, r), *cr = cpu_row(a->Cm, r);
    for (int64_t p = 0; p < P; p++)
        s->x[p] = cpu_load(a->x->dtype, xr, h * P + p);
    for (int64_t n = 0; n < N; n++) {
        s->B[n] = cpu_load(a->Bm->dtype, br, g * N + n);
        s->C[n] = cpu_load(a->Cm->dtype, cr, g * N + n);
    }
}

/* S = decay * prev + delta * x outer B; prev NULL reads as 0. S may be prev. */
static void ssd_advance(const ssd_args *a, const ssd_step *s, const double *prev, double *S)
{
    int64_t P = a->headdim, N = a->dstate;
    for (int64_t p = 0; p < P; p++)
        for (int64_t n = 0; n < N; n++)
            S[p * N + n] = (prev ? s->decay * prev[p * N + n] : 0.0) + s->delta * s->x[p] * s->B[n];
}

/* Per (b, h) with A = -exp(A_log[h]) and S (P x N) starting at init_state[b, h] or 0:
 *   S = exp(delta_t A) S + delta_t x_t outer Bm_t  (S reset to 0 first where seq_idx changes at t)
 *   y_t = (S Cm_t + D x_t) * silu(z_t)  (no gate without z)
 *   final_state[b, h] = S after the last step (when final_state is given)
 * Shapes as in backend.h: x, y (B, L, H*P); dt (B, L, H); Bm, Cm (B, L, G*N);
 * z (B, L, H*P) or NULL; A_log, dt_bias (H); D (H), (H*P) or NULL; init_state,
 * final_state (B, H, P, N). (b, h) pairs write disjoint outputs and run in parallel. */
void mt_cpu_ssd_fwd(mt_backend *be, mt_arena *scratch, mt_tensor *y, mt_tensor *final_state, const mt_ssd_inputs *in)
{
    (void)be;
    (void)scratch;
    const ssd_args a = ssd_open(in); /* chunk_size is the CUDA kernels' tile: not used here */
    const mt_tensor *A_log = in->A_log, *z = in->z;
    int64_t H = a.nheads, P = a.headdim, N = a.dstate;
#pragma omp parallel for
    for (int64_t bh = 0; bh < a.batch * H; bh++) {
        int64_t b = bh / H, h = bh % H;
        double *S = cpu_temp_alloc(NULL, (size_t)(P * N + P + 2 * N) * sizeof *S);
        ssd_step s = {.x = S + P * N, .B = S + P * N + P, .C = S + P * N + P + N};
        double A = -exp(cpu_load(A_log->dtype, A_log->data, h));
        ssd_load_state(&a, in->init_state, b, h, S);
        for (int64_t t = 0; t < a.seqlen; t++) {
            int64_t r = b * a.seqlen + t;
            ssd_load_step(&a, b, t, h, A, &s);
            ssd_advance(&a, &s, s.restart ? NULL : S, S);
            void *yr = cpu_row(y, r);
            const void *zr = z ? cpu_row(z, r) : NULL;
            for (int64_t p = 0; p < P; p++) {
                double out = ssd_D(&a, h, p) * s.x[p];
                for (int64_t n = 0; n < N; n++)
                    out += S[p * N + n] * s.C[n];
                if (z)
                    out *= cpu_silu(cpu_load(z->dtype, zr, h * P + p));
                cpu_store(y->dtype, yr, h * P + p, out);
            }
        }
        for (int64_t i = 0; final_state && i < P * N; i++)
            cpu_store(final_state->dtype, final_state->data, bh * P * N + i, S[i]);
        cpu_temp_free(NULL, S);
    }
}

/* One step of the adjoint for head h at time t. lambda (P x N) holds dLoss/dS_t
 * from later steps on entry and dLoss/dS_{t-1} on return. S is S_t, prev the
 * S_{t-1} the recurrence read (NULL at a restart). With g = dy_t * silu(z_t)
 * (dy_t without z), the gradient of the pre-gate output:
 *   dz_t += dy_t * (S Cm_t + D x_t) * silu'(z_t);  lambda += g outer Cm_t
 *   dC[n] += sum_p g[p] S[p, n];  dDp[p] += g[p] x_t[p]
 *   dx_t[p] += D g[p] + delta sum_n lambda[p, n] Bm_t[n];  dB[n] += delta sum_p lambda[p, n] x_t[p]
 *   ddelta = A decay sum(lambda . prev) + sum_{p,n} lambda[p, n] x_t[p] Bm_t[n]
 *   *dA += delta decay sum(lambda . prev);  ddt_t += ddelta * ddelta_ddt, as does *ddt_bias
 * gy (P) is scratch for g. */
static void ssd_backstep(const ssd_args *a, const ssd_grads *gr, const ssd_step *s, int64_t b, int64_t t,
                         int64_t h, double A, const double *S, const double *prev, double *lambda, double *gy,
                         double *dB, double *dC, double *dDp, double *dA, double *ddt_bias)
{
    int64_t r = b * a->seqlen + t, P = a->headdim, N = a->dstate;
    const void *dyr = gr->dy ? cpu_row(gr->dy, r) : NULL, *zr = a->z ? cpu_row(a->z, r) : NULL;
    void *dxr = gr->dx ? cpu_row(gr->dx, r) : NULL, *dzr = gr->dz ? cpu_row(gr->dz, r) : NULL;
    for (int64_t p = 0; p < P; p++) {
        double dyp = dyr ? cpu_load(gr->dy->dtype, dyr, h * P + p) : 0.0;
        gy[p] = dyp;
        if (zr) {
            double zp = cpu_load(a->z->dtype, zr, h * P + p), ypre = ssd_D(a, h, p) * s->x[p];
            for (int64_t n = 0; n < N; n++)
                ypre += S[p * N + n] * s->C[n];
            gy[p] = dyp * cpu_silu(zp);
            if (dzr)
                cpu_accumulate(gr->dz->dtype, dzr, h * P + p, dyp * ypre * cpu_silu_grad(zp));
        }
        dDp[p] += gy[p] * s->x[p];
    }
    double lambda_prev = 0.0, lambda_xb = 0.0;
    for (int64_t p = 0; p < P; p++) {
        double lambda_b = 0.0;
        for (int64_t n = 0; n < N; n++) {
            double *l = &lambda[p * N + n];
            *l += gy[p] * s->C[n];
            dC[n] += gy[p] * S[p * N + n];
            dB[n] += s->delta * *l * s->x[p];
            lambda_b += *l * s->B[n];
            lambda_xb += *l * s->x[p] * s->B[n];
            if (prev)
                lambda_prev += *l * prev[p * N + n];
        }
        if (dxr)
            cpu_accumulate(gr->dx->dtype, dxr, h * P + p, ssd_D(a, h, p) * gy[p] + s->delta * lambda_b);
    }
    double ddt = (A * s->decay * lambda_prev + lambda_xb) * s->ddelta_ddt;
    *dA += s->delta * s->decay * lambda_prev;
    *ddt_bias += ddt;
    if (gr->ddt)
        cpu_accumulate(gr->ddt->dtype, cpu_row(gr->ddt, r), h, ddt);
    /* Through S_t = decay * S_{t-1} + ...; nothing flows back across a restart. */
    for (int64_t i = 0; i < P * N; i++)
        lambda[i] = s->restart ? 0.0 : s->decay * lambda[i];
}

/* Given dy (B, L, H*P) and dfinal_state (B, H, P, N) (either NULL: zero),
 * accumulates dx, ddt, dz (per (b, t, h), disjoint across heads), dBm, dCm
 * (summed over the heads of a group), dA_log, ddt_bias, dD (summed over b and
 * t) and dinit_state; any may be NULL. Tasks are (b, g) pairs: each reruns
 * the forward of its heads keeping every S_t (L * P * N doubles), then walks
 * back in time with ssd_backstep, heads in order, summing dBm and dCm in
 * double before adding them once. Per-(b, h) sums of dA_log, ddt_bias and dD
 * are added over b serially at the end, so no sum depends on the thread count. */
void mt_cpu_ssd_bwd(mt_backend *be, mt_arena *scratch, const mt_ssd_grads *grads, const mt_tensor *dy,
                    const mt_tensor *dfinal_state, const mt_ssd_inputs *in)
{
    (void)be;
    if (!dy && !dfinal_state)
        return; /* every gradient is zero */
    const ssd_args a = ssd_open(in);
    const mt_tensor *A_log = in->A_log;
    mt_tensor *dA_log = grads->dA_log, *dBm = grads->dBm, *dCm = grads->dCm, *dD = grads->dD,
              *ddt_bias = grads->ddt_bias, *dinit_state = grads->dinit_state;
    ssd_grads gr = {.dx = grads->dx, .ddt = grads->ddt, .dz = grads->dz, .dy = dy};
    int64_t H = a.nheads, P = a.headdim, N = a.dstate, L = a.seqlen, G = a.ngroups, BH = a.batch * H;
    double *partial = cpu_temp_alloc(scratch, (size_t)(BH * (2 + P)) * sizeof *partial);
    double *dA_log_part = partial, *ddt_bias_part = partial + BH, *dD_part = partial + 2 * BH;
#pragma omp parallel for
    for (int64_t bg = 0; bg < a.batch * G; bg++) {
        int64_t b = bg / G, g = bg % G, heads = H / G;
        double *states = cpu_temp_alloc(NULL, (size_t)((L + 2) * P * N + 2 * L * N + 2 * P + 2 * N) * sizeof *states);
        double *init = states + L * P * N, *lambda = init + P * N, *dBg = lambda + P * N, *dCg = dBg + L * N;
        double *gy = dCg + L * N;
        ssd_step s = {.x = gy + P, .B = gy + 2 * P, .C = gy + 2 * P + N};
        memset(dBg, 0, (size_t)(2 * L * N) * sizeof *dBg);
        for (int64_t h = g * heads; h < (g + 1) * heads; h++) {
            int64_t bh = b * H + h;
            double A = -exp(cpu_load(A_log->dtype, A_log->data, h)), dA = 0.0;
            ssd_load_state(&a, in->init_state, b, h, init);
            for (int64_t t = 0; t < L; t++) {
                ssd_load_step(&a, b, t, h, A, &s);
                ssd_advance(&a, &s, s.restart ? NULL : (t ? states + (t - 1) * P * N : init), states + t * P * N);
            }
            ssd_load_state(&a, dfinal_state, b, h, lambda);
            ddt_bias_part[bh] = 0.0;
            memset(dD_part + bh * P, 0, (size_t)P * sizeof *dD_part);
            for (int64_t t = L - 1; t >= 0; t--) {
                ssd_load_step(&a, b, t, h, A, &s);
                const double *prev = s.restart ? NULL : (t ? states + (t - 1) * P * N : init);
                ssd_backstep(&a, &gr, &s, b, t, h, A, states + t * P * N, prev, lambda, gy, dBg + t * N,
                             dCg + t * N, dD_part + bh * P, &dA, &ddt_bias_part[bh]);
            }
            /* lambda is now dLoss/dS_{-1}, the initial state's gradient. */
            for (int64_t i = 0; dinit_state && i < P * N; i++)
                cpu_accumulate(dinit_state->dtype, dinit_state->data, bh * P * N + i, lambda[i]);
            dA_log_part[bh] = dA * A; /* dA/dA_log = -exp(A_log) = A */
        }
        for (int64_t t = 0; t < L; t++)
            for (int64_t n = 0; n < N; n++) {
                if (dBm)
                    cpu_accumulate(dBm->dtype, cpu_row(dBm, b * L + t), g * N + n, dBg[t * N + n]);
                if (dCm)
                    cpu_accumulate(dCm->dtype, cpu_row(dCm, b * L + t), g * N + n, dCg[t * N + n]);
            }
        cpu_temp_free(NULL, states);
    }

    bool d_per_channel = dD && mt_numel(dD) == H * P;
    for (int64_t h = 0; h < H; h++) {
        double sum_A = 0.0, sum_bias = 0.0, sum_D_head = 0.0;
        for (int64_t b = 0; b < a.batch; b++) {
            sum_A += dA_log_part[b * H + h];
            sum_bias += ddt_bias_part[b * H + h];
        }
        if (dA_log)
            cpu_accumulate(dA_log->dtype, dA_log->data, h, sum_A);
        if (ddt_bias)
            cpu_accumulate(ddt_bias->dtype, ddt_bias->data, h, sum_bias);
        for (int64_t p = 0; dD && p < P; p++) {
            double sum_D = 0.0;
            for (int64_t b = 0; b < a.batch; b++)
                sum_D += dD_part[(b * H + h) * P + p];
            if (d_per_channel)
                cpu_accumulate(dD->dtype, dD->data, h * P + p, sum_D);
            sum_D_head += sum_D;
        }
        if (dD && !d_per_channel)
            cpu_accumulate(dD->dtype, dD->data, h, sum_D_head);
    }
    cpu_temp_free(scratch, partial);
}
