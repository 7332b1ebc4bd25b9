/* The selective scan (Mamba-1) run as the plain sequential recurrence of
 * backend.h, and its backward as the adjoint recurrence run back in time.
 * This is the ground truth a CUDA kernel will be checked against, so it
 * favours the obvious loop over speed.
 *
 * Batch row b, time t is row b * L + t of every (B, L, .) tensor; channel d
 * is column d of u, delta, z, y and reads columns [g*N, (g+1)*N) of Bm and
 * Cm, g = d / (D/G). A channel's state is N doubles, one per state n.
 * OpenMP tasks take their temporaries from the heap: the arena is not
 * thread-safe. */
#include <string.h>

#include "kernels/cpu/cpu_internal.h"

typedef struct {
    const mt_tensor *u, *delta, *A_log, *Bm, *Cm, *D_skip, *z, *delta_bias;
    int64_t batch, seqlen, channels, ngroups, dstate;
    bool delta_softplus;
} scan_args;

/* The gradients the backward accumulates into per (b, t, d) (any NULL), and dy. */
typedef struct {
    mt_tensor *du, *ddelta, *dz;
    const mt_tensor *dy;
} scan_grads;

/* One channel's inputs at one time step, in double. */
typedef struct {
    double u, dlt;       /* the input and the step dlt_t */
    double ddlt_ddelta;  /* d dlt_t / d delta_t: sigmoid(delta + bias) with softplus, else 1 */
    double *B, *C;       /* (N), (N): arrays the caller owns */
    double *decay;       /* (N): exp(dlt_t A[n]), an array the caller owns */
} scan_step;

static scan_args scan_open(const mt_tensor *u, const mt_tensor *delta, const mt_tensor *A_log, const mt_tensor *Bm,
                           const mt_tensor *Cm, const mt_tensor *D_skip, const mt_tensor *z,
                           const mt_tensor *delta_bias, int ngroups, bool delta_softplus)
{
    return (scan_args){.u = u, .delta = delta, .A_log = A_log, .Bm = Bm, .Cm = Cm, .D_skip = D_skip, .z = z,
                       .delta_bias = delta_bias, .batch = u->shape[0], .seqlen = u->shape[1],
                       .channels = mt_cols(u), .ngroups = ngroups, .dstate = mt_cols(Bm) / ngroups,
                       .delta_softplus = delta_softplus};
}

/* D_skip[d], or 0 when it is NULL. */
static double scan_D(const scan_args *a, int64_t d)
{
    return a->D_skip ? cpu_load(a->D_skip->dtype, a->D_skip->data, d) : 0.0;
}

/* A[n] = -exp(A_log[d, n]) for channel d. */
static void scan_load_A(const scan_args *a, int64_t d, double *A)
{
    for (int64_t n = 0; n < a->dstate; n++)
        A[n] = -exp(cpu_load(a->A_log->dtype, a->A_log->data, d * a->dstate + n));
}

/* Fills s with step t of channel d in batch row b. */
static void scan_load_step(const scan_args *a, int64_t b, int64_t t, int64_t d, const double *A, scan_step *s)
{
    int64_t r = b * a->seqlen + t, N = a->dstate, g = d / (a->channels / a->ngroups);
    double v = cpu_load(a->delta->dtype, cpu_row(a->delta, r), d);
    if (a->delta_bias)
        v += cpu_load(a->delta_bias->dtype, a->delta_bias->data, d);
    s->dlt = a->delta_softplus ? cpu_softplus(v) : v;
    s->ddlt_ddelta = a->delta_softplus ? cpu_sigmoid(v) : 1.0;
    s->u = cpu_load(a->u->dtype, cpu_row(a->u, r), d);
    const void *br = cpu_row(a->Bm, r), *cr = cpu_row(a->Cm, r);
    for (int64_t n = 0; n < N; n++) {
        s->B[n] = cpu_load(a->Bm->dtype, br, g * N + n);
        s->C[n] = cpu_load(a->Cm->dtype, cr, g * N + n);
        s->decay[n] = exp(s->dlt * A[n]);
    }
}

/* h = decay * prev + dlt * B * u; prev NULL reads as 0. h may be prev. */
static void scan_advance(const scan_args *a, const scan_step *s, const double *prev, double *h)
{
    for (int64_t n = 0; n < a->dstate; n++)
        h[n] = (prev ? s->decay[n] * prev[n] : 0.0) + s->dlt * s->B[n] * s->u;
}

/* The output before the gate: sum_n C[n] h[n] + D_skip[d] u. */
static double scan_output(const scan_args *a, const scan_step *s, int64_t d, const double *h)
{
    double out = scan_D(a, d) * s->u;
    for (int64_t n = 0; n < a->dstate; n++)
        out += s->C[n] * h[n];
    return out;
}

/* Per (b, d), with A[n] = -exp(A_log[d, n]) and h (N) starting at 0:
 *   h = exp(dlt_t A) h + dlt_t Bm_t u_t;  y_t = (Cm_t . h + D_skip u_t) * silu(z_t)
 * Shapes as in backend.h: u, delta, z, y (B, L, D); Bm, Cm (B, L, G*N);
 * A_log (D, N); D_skip, delta_bias (D). (b, d) pairs write disjoint outputs
 * and run in parallel. */
void mt_cpu_selective_scan_fwd(mt_backend *be, mt_arena *scratch, mt_tensor *y, mt_tensor *checkpoint,
                               const mt_tensor *u, const mt_tensor *delta, const mt_tensor *A_log,
                               const mt_tensor *Bm, const mt_tensor *Cm, const mt_tensor *D_skip,
                               const mt_tensor *z, const mt_tensor *delta_bias, int ngroups, bool delta_softplus)
{
    (void)be;
    (void)scratch;
    (void)checkpoint; /* the CPU keeps none: its backward reruns the recurrence */
    scan_args a = scan_open(u, delta, A_log, Bm, Cm, D_skip, z, delta_bias, ngroups, delta_softplus);
    int64_t D = a.channels, N = a.dstate;
#pragma omp parallel for
    for (int64_t bd = 0; bd < a.batch * D; bd++) {
        int64_t b = bd / D, d = bd % D;
        double *h = cpu_temp_alloc(NULL, (size_t)(5 * N) * sizeof *h);
        double *A = h + N;
        scan_step s = {.B = A + N, .C = A + 2 * N, .decay = A + 3 * N};
        scan_load_A(&a, d, A);
        for (int64_t t = 0; t < a.seqlen; t++) {
            int64_t r = b * a.seqlen + t;
            scan_load_step(&a, b, t, d, A, &s);
            scan_advance(&a, &s, t ? h : NULL, h);
            double out = scan_output(&a, &s, d, h);
            if (z)
                out *= cpu_silu(cpu_load(z->dtype, cpu_row(z, r), d));
            cpu_store(y->dtype, cpu_row(y, r), d, out);
        }
        cpu_temp_free(NULL, h);
    }
}

/* One step of the adjoint for channel d at time t. lambda (N) holds dLoss/dh_t
 * from later steps on entry and dLoss/dh_{t-1} on return. h is h_t, prev the
 * h_{t-1} the recurrence read (NULL at t = 0). With g = dy_t * silu(z_t)
 * (dy_t without z), the gradient of the pre-gate output:
 *   dz_t += dy_t * (Cm_t . h + D_skip u_t) * silu'(z_t);  lambda += g Cm_t
 *   dC[n] += g h[n];  *dD += g u_t
 *   du_t += D_skip g + dlt sum_n lambda[n] Bm_t[n];  dB[n] += dlt lambda[n] u_t
 *   ddlt = sum_n lambda[n] (A[n] decay[n] prev[n] + Bm_t[n] u_t)
 *   dA[n] += lambda[n] dlt decay[n] prev[n];  ddelta_t += ddlt * ddlt_ddelta, as does *ddelta_bias */
static void scan_backstep(const scan_args *a, const scan_grads *gr, const scan_step *s, int64_t b, int64_t t,
                          int64_t d, const double *A, const double *h, const double *prev, double *lambda,
                          double *dB, double *dC, double *dA, double *dD, double *ddelta_bias)
{
    int64_t r = b * a->seqlen + t, N = a->dstate;
    double dy = gr->dy ? cpu_load(gr->dy->dtype, cpu_row(gr->dy, r), d) : 0.0, g = dy;
    if (a->z) {
        double zv = cpu_load(a->z->dtype, cpu_row(a->z, r), d);
        g = dy * cpu_silu(zv);
        if (gr->dz)
            cpu_accumulate(gr->dz->dtype, cpu_row(gr->dz, r), d, dy * scan_output(a, s, d, h) * cpu_silu_grad(zv));
    }
    *dD += g * s->u;
    double du = scan_D(a, d) * g, ddlt = 0.0;
    for (int64_t n = 0; n < N; n++) {
        lambda[n] += g * s->C[n];
        dC[n] += g * h[n];
        dB[n] += s->dlt * lambda[n] * s->u;
        du += s->dlt * lambda[n] * s->B[n];
        ddlt += lambda[n] * s->B[n] * s->u;
        if (prev) {
            ddlt += lambda[n] * A[n] * s->decay[n] * prev[n];
            dA[n] += lambda[n] * s->dlt * s->decay[n] * prev[n];
        }
        /* Through h_t = decay * h_{t-1} + ... */
        lambda[n] *= s->decay[n];
    }
    double ddelta = ddlt * s->ddlt_ddelta;
    *ddelta_bias += ddelta;
    if (gr->du)
        cpu_accumulate(gr->du->dtype, cpu_row(gr->du, r), d, du);
    if (gr->ddelta)
        cpu_accumulate(gr->ddelta->dtype, cpu_row(gr->ddelta, r), d, ddelta);
}

/* Given dy (B, L, D) (NULL: zero), accumulates du, ddelta, dz (per (b, t, d),
 * disjoint across channels), dBm, dCm (summed over the channels of a group),
 * dA_log, dD_skip, ddelta_bias (summed over b and t); any may be NULL. Tasks
 * are (b, g) pairs: each reruns the forward of its channels keeping every h_t
 * (L * N doubles), then walks back in time with scan_backstep, channels in
 * order, summing dBm and dCm in double before adding them once. Per-(b, d)
 * sums of dA_log, dD_skip and ddelta_bias are added over b serially at the
 * end, so no sum depends on the thread count. */
void mt_cpu_selective_scan_bwd(mt_backend *be, mt_arena *scratch, mt_tensor *du, mt_tensor *ddelta,
                               mt_tensor *dA_log, mt_tensor *dBm, mt_tensor *dCm, mt_tensor *dD_skip,
                               mt_tensor *dz, mt_tensor *ddelta_bias, const mt_tensor *dy,
                               const mt_tensor *checkpoint, const mt_tensor *u,
                               const mt_tensor *delta, const mt_tensor *A_log, const mt_tensor *Bm,
                               const mt_tensor *Cm, const mt_tensor *D_skip, const mt_tensor *z,
                               const mt_tensor *delta_bias, int ngroups, bool delta_softplus)
{
    (void)be;
    (void)checkpoint;
    if (!dy)
        return; /* every gradient is zero */
    scan_args a = scan_open(u, delta, A_log, Bm, Cm, D_skip, z, delta_bias, ngroups, delta_softplus);
    scan_grads gr = {.du = du, .ddelta = ddelta, .dz = dz, .dy = dy};
    int64_t D = a.channels, N = a.dstate, L = a.seqlen, G = a.ngroups, BD = a.batch * D;
    double *partial = cpu_temp_alloc(scratch, (size_t)(BD * (N + 2)) * sizeof *partial);
    double *dA_log_part = partial, *dD_part = partial + BD * N, *dbias_part = dD_part + BD;
#pragma omp parallel for
    for (int64_t bg = 0; bg < a.batch * G; bg++) {
        int64_t b = bg / G, g = bg % G, channels = D / G;
        double *states = cpu_temp_alloc(NULL, (size_t)(L * N + 2 * L * N + 5 * N) * sizeof *states);
        double *dBg = states + L * N, *dCg = dBg + L * N, *lambda = dCg + L * N, *A = lambda + N;
        scan_step s = {.B = A + N, .C = A + 2 * N, .decay = A + 3 * N};
        memset(dBg, 0, (size_t)(2 * L * N) * sizeof *dBg);
        for (int64_t d = g * channels; d < (g + 1) * channels; d++) {
            int64_t bd = b * D + d;
            double *dA = dA_log_part + bd * N;
            scan_load_A(&a, d, A);
            for (int64_t t = 0; t < L; t++) {
                scan_load_step(&a, b, t, d, A, &s);
                scan_advance(&a, &s, t ? states + (t - 1) * N : NULL, states + t * N);
            }
            memset(lambda, 0, (size_t)N * sizeof *lambda);
            memset(dA, 0, (size_t)N * sizeof *dA);
            dD_part[bd] = dbias_part[bd] = 0.0;
            for (int64_t t = L - 1; t >= 0; t--) {
                scan_load_step(&a, b, t, d, A, &s);
                scan_backstep(&a, &gr, &s, b, t, d, A, states + t * N, t ? states + (t - 1) * N : NULL, lambda,
                              dBg + t * N, dCg + t * N, dA, &dD_part[bd], &dbias_part[bd]);
            }
            for (int64_t n = 0; n < N; n++)
                dA[n] *= A[n]; /* dA/dA_log = -exp(A_log) = A */
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

    for (int64_t d = 0; d < D; d++) {
        for (int64_t n = 0; dA_log && n < N; n++) {
            double sum = 0.0;
            for (int64_t b = 0; b < a.batch; b++)
                sum += dA_log_part[(b * D + d) * N + n];
            cpu_accumulate(dA_log->dtype, dA_log->data, d * N + n, sum);
        }
        double sum_D = 0.0, sum_bias = 0.0;
        for (int64_t b = 0; b < a.batch; b++) {
            sum_D += dD_part[b * D + d];
            sum_bias += dbias_part[b * D + d];
        }
        if (dD_skip)
            cpu_accumulate(dD_skip->dtype, dD_skip->data, d, sum_D);
        if (ddelta_bias)
            cpu_accumulate(ddelta_bias->dtype, ddelta_bias->data, d, sum_bias);
    }
    cpu_temp_free(scratch, partial);
}
