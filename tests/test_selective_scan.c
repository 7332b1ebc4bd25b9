/* The CPU selective scan against the recurrence written out directly, and the
 * op's errors: a backend without the kernel, a misshapen input. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <math.h>
#include <string.h>

#include "core/rng.h"
#include "testlib.h"

enum { BATCH = 2, SEQLEN = 9, CHANNELS = 4, DSTATE = 3, DT_RANK = 2 };

/* The scan's inputs in f64 on the CPU; Bm and Cm are column views of xdbl
 * (B, L, R + 2 G N), as the Mamba-1 block splits x_proj's output. */
typedef struct {
    mt_tensor *u, *delta, *A_log, *xdbl, *D, *z, *delta_bias;
    mt_tensor Bm, Cm;
    int ngroups;
} scan_inputs;

static mt_tensor *random_tensor(int ndim, const int64_t *shape, uint64_t seed, double lo, double hi)
{
    mt_tensor *t = mt_tensor_new(MT_CPU, MT_F64, ndim, shape);
    for (int64_t e = 0; e < mt_numel(t); e++)
        mt_set(t, e, mt_rng_uniform(seed, (uint64_t)e, lo, hi));
    return t;
}

/* Without softplus, delta and delta_bias are drawn positive: they are the step. */
static scan_inputs make_inputs(int ngroups, bool softplus)
{
    int64_t gn = (int64_t)ngroups * DSTATE, btd[3] = {BATCH, SEQLEN, CHANNELS};
    scan_inputs s = {.ngroups = ngroups};
    s.u = random_tensor(3, btd, 1, -1, 1);
    s.delta = softplus ? random_tensor(3, btd, 2, -2, 1) : random_tensor(3, btd, 2, 0.01, 0.5);
    s.A_log = random_tensor(2, (int64_t[]){CHANNELS, DSTATE}, 3, 0, 2.77);
    s.xdbl = random_tensor(3, (int64_t[]){BATCH, SEQLEN, DT_RANK + 2 * gn}, 4, -1, 1);
    s.D = random_tensor(1, (int64_t[]){CHANNELS}, 5, 0.5, 1.5);
    s.z = random_tensor(3, btd, 6, -2, 2);
    s.delta_bias = softplus ? random_tensor(1, (int64_t[]){CHANNELS}, 7, -4, -1)
                            : random_tensor(1, (int64_t[]){CHANNELS}, 7, 0, 0.1);
    s.Bm = mt_view_cols(s.xdbl, DT_RANK, gn);
    s.Cm = mt_view_cols(s.xdbl, DT_RANK + gn, gn);
    return s;
}

static void free_inputs(scan_inputs *s)
{
    mt_tensor *all[] = {s->u, s->delta, s->A_log, s->xdbl, s->D, s->z, s->delta_bias};
    tl_free_all(7, all);
}

/* y[b, t, d] by the recurrence of ops.h, one channel and state at a time.
 * Optional inputs are used when their flags say so. */
static double naive_scan(const scan_inputs *s, bool gate, bool skip, bool bias, bool softplus, int64_t b,
                         int64_t t_out, int64_t d)
{
    int64_t gn = (int64_t)s->ngroups * DSTATE, width = DT_RANK + 2 * gn;
    int64_t g = d / (CHANNELS / s->ngroups);
    double y = 0;
    for (int64_t n = 0; n < DSTATE; n++) {
        double A = -exp(mt_get(s->A_log, d * DSTATE + n)), h = 0;
        for (int64_t t = 0; t <= t_out; t++) {
            int64_t r = b * SEQLEN + t;
            double v = mt_get(s->delta, r * CHANNELS + d) + (bias ? mt_get(s->delta_bias, d) : 0);
            double dlt = softplus ? log1p(exp(v)) : v;
            double Bv = mt_get(s->xdbl, r * width + DT_RANK + g * DSTATE + n);
            h = exp(dlt * A) * h + dlt * Bv * mt_get(s->u, r * CHANNELS + d);
            if (t == t_out)
                y += mt_get(s->xdbl, r * width + DT_RANK + gn + g * DSTATE + n) * h;
        }
    }
    int64_t i = (b * SEQLEN + t_out) * CHANNELS + d;
    if (skip)
        y += mt_get(s->D, d) * mt_get(s->u, i);
    if (gate) {
        double z = mt_get(s->z, i);
        y *= z / (1 + exp(-z));
    }
    return y;
}

static void check_against_naive(int ngroups, bool options, bool softplus)
{
    mt_backend *cpu = mt_backend_cpu_create();
    mt_ctx c;
    mt_ctx_init(&c, cpu, 1 << 20);
    scan_inputs s = make_inputs(ngroups, softplus);
    mt_scan_config cfg = {.ngroups = ngroups, .delta_softplus = softplus};
    mt_tensor *y = mt_selective_scan(&c, s.u, s.delta, s.A_log, &s.Bm, &s.Cm, options ? s.D : NULL,
                                     options ? s.z : NULL, options ? s.delta_bias : NULL, &cfg);
    assert_non_null(y);
    double worst = 0;
    for (int64_t b = 0; b < BATCH; b++)
        for (int64_t t = 0; t < SEQLEN; t++)
            for (int64_t d = 0; d < CHANNELS; d++) {
                double want = naive_scan(&s, options, options, options, softplus, b, t, d);
                worst = fmax(worst, fabs(mt_get(y, (b * SEQLEN + t) * CHANNELS + d) - want));
            }
    if (!(worst <= 1e-12))
        fail_msg("groups %d options %d softplus %d: max |y - naive| %.3e exceeds 1e-12", ngroups, options,
                 softplus, worst);
    free_inputs(&s);
    mt_ctx_release(&c);
    cpu->destroy(cpu);
}

/* z, D, delta_bias under softplus, one group: the block's own configuration. */
static void test_forward_matches_recurrence(void **state)
{
    (void)state;
    check_against_naive(1, true, true);
}

static void test_forward_two_groups_no_options(void **state)
{
    (void)state;
    check_against_naive(2, false, true);
}

static void test_forward_without_softplus(void **state)
{
    (void)state;
    check_against_naive(2, true, false);
}

/* A backend without the kernel gets an op error
 * naming the op, not a crash; so does an input of the wrong shape, named. */
static void test_errors_name_the_op(void **state)
{
    (void)state;
    mt_backend *cpu = mt_backend_cpu_create(), no_scan = *cpu;
    no_scan.selective_scan_fwd = NULL;
    no_scan.selective_scan_bwd = NULL;
    mt_ctx c;
    mt_ctx_init(&c, &no_scan, 1 << 16);
    c.abort_on_error = false;
    scan_inputs s = make_inputs(1, true);
    mt_scan_config cfg = {.ngroups = 1, .delta_softplus = true};
    assert_null(mt_selective_scan(&c, s.u, s.delta, s.A_log, &s.Bm, &s.Cm, s.D, s.z, s.delta_bias, &cfg));
    assert_non_null(strstr(mt_ctx_error(&c), "mt_selective_scan"));
    assert_non_null(strstr(mt_ctx_error(&c), "has no selective scan kernel"));
    mt_ctx_release(&c);

    mt_ctx_init(&c, cpu, 1 << 16);
    c.abort_on_error = false;
    mt_tensor narrow = mt_view_cols(s.xdbl, DT_RANK, DSTATE - 1);
    assert_null(mt_selective_scan(&c, s.u, s.delta, s.A_log, &s.Bm, &narrow, s.D, s.z, s.delta_bias, &cfg));
    assert_non_null(strstr(mt_ctx_error(&c), "mt_selective_scan: Cm"));
    mt_ctx_clear_error(&c);
    cfg.ngroups = 3;
    assert_null(mt_selective_scan(&c, s.u, s.delta, s.A_log, &s.Bm, &s.Cm, s.D, s.z, s.delta_bias, &cfg));
    assert_non_null(strstr(mt_ctx_error(&c), "ngroups 3"));
    mt_ctx_release(&c);
    free_inputs(&s);
    cpu->destroy(cpu);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_forward_matches_recurrence),
        cmocka_unit_test(test_forward_two_groups_no_options),
        cmocka_unit_test(test_forward_without_softplus),
        cmocka_unit_test(test_errors_name_the_op),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
