#include "testlib.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/device.h"
#include "layers/model.h"
#include "optim/sgd.h"
#include "core/error.h"
#include "core/rng.h"
#include "io/file_io.h"
#include "io/safetensors.h"
#include "train/pretrained.h"

static mt_dtype input_dtype(tl_kind kind, mt_dtype dt)
{
    switch (kind) {
    case TL_FLOAT: return dt;
    case TL_ACCUM: return mt_accum_dtype(dt);
    default: return MT_I32;
    }
}

void tl_make_inputs(const tl_case *k, bool large, mt_dtype dt, uint64_t seed, mt_tensor **in)
{
    for (int i = 0; i < k->n_in; i++) {
        const tl_input *d = &k->in[i];
        mt_tensor *t = mt_tensor_new(MT_CPU, input_dtype(d->kind, dt), d->ndim, large ? d->large : d->small);
        t->name = d->name;
        uint64_t s = seed * 131 + (uint64_t)i;
        int64_t n = mt_numel(t);
        if (d->kind == TL_SEQ_IDX) {
            int64_t len = t->shape[1];
            for (int64_t e = 0; e < n; e++) {
                int64_t b = e / len, pos = e % len;
                mt_set(t, e, (double)((pos >= len / 3) + (pos >= 2 * len / 3 && b % 2 == 1)));
            }
        } else if (d->kind == TL_IDS || d->kind == TL_TARGETS) {
            const tl_input *lim = &k->in[d->limit_in];
            int64_t limit = (large ? lim->large : lim->small)[d->limit_dim];
            for (int64_t e = 0; e < n; e++) {
                int64_t id = (int64_t)floor(mt_rng_uniform(s, (uint64_t)e, 0, (double)limit));
                mt_set(t, e, d->kind == TL_TARGETS && e % 5 == 2 ? TL_IGNORE : (double)id);
            }
        } else {
            for (int64_t e = 0; e < n; e++)
                mt_set(t, e, mt_rng_uniform(s, (uint64_t)e, d->lo, d->hi));
        }
        in[i] = t;
    }
}

void tl_free_all(int n, mt_tensor **t)
{
    for (int i = 0; i < n; i++)
        mt_tensor_free(t[i]);
}

mt_tensor *tl_to_device(const mt_tensor *t, mt_device dev)
{
    mt_tensor *copy = mt_tensor_new(dev, t->dtype, t->ndim, t->shape);
    mt_tensor_copy(copy, t);
    return copy;
}

double tl_rel_err(const mt_tensor *a, const mt_tensor *ref)
{
    mt_tensor *ha = tl_to_device(a, MT_CPU), *hr = tl_to_device(ref, MT_CPU);
    double diff = 0, norm = 0;
    bool nan = false;
    for (int64_t i = 0; i < mt_numel(ha); i++) {
        double x = mt_get(ha, i), r = mt_get(hr, i);
        nan |= isnan(x) || isnan(r);
        diff += (x - r) * (x - r);
        norm += r * r;
    }
    mt_tensor_free(ha);
    mt_tensor_free(hr);
    if (nan)
        return INFINITY;
    return norm > 0 ? sqrt(diff / norm) : sqrt(diff);
}

bool tl_has_nan(const mt_tensor *t)
{
    mt_tensor *h = tl_to_device(t, MT_CPU);
    bool nan = false;
    for (int64_t i = 0; i < mt_numel(h) && !nan; i++)
        nan = isnan(mt_get(h, i));
    mt_tensor_free(h);
    return nan;
}

static bool is_float_input(const tl_case *k, int i)
{
    return k->in[i].kind == TL_FLOAT || k->in[i].kind == TL_ACCUM;
}

static void require_outputs(mt_ctx *c, const tl_case *k, int n_out, mt_tensor **out)
{
    for (int j = 0; j < n_out; j++)
        if (!out[j])
            mt_fatal("case %s: output %d is NULL: %s", k->name, j, mt_ctx_error(c) ? mt_ctx_error(c) : "?");
}

/* Random seeds for backward, shaped like the outputs, on the CPU. */
static void make_seeds(int n_out, mt_tensor **out, uint64_t seed, mt_tensor **seeds)
{
    for (int j = 0; j < n_out; j++) {
        seeds[j] = mt_tensor_new(MT_CPU, out[j]->dtype, out[j]->ndim, out[j]->shape);
        for (int64_t e = 0; e < mt_numel(seeds[j]); e++)
            mt_set(seeds[j], e, mt_rng_uniform(seed * 7 + 1000 + (uint64_t)j, (uint64_t)e, -1, 1));
    }
}

/* sum_j <out_j, seed_j>: the scalar whose gradient the seeded backward computes. */
static double objective(mt_ctx *c, tl_run_fn run, void *arg, const char *name, mt_tensor **seeds)
{
    mt_tensor *out[MT_NODE_MAX_OUT];
    int n_out = run(c, arg, out);
    for (int j = 0; j < n_out; j++)
        if (!out[j])
            mt_fatal("%s: output %d is NULL: %s", name, j, mt_ctx_error(c) ? mt_ctx_error(c) : "?");
    double sum = 0;
    for (int j = 0; j < n_out; j++)
        for (int64_t e = 0; e < mt_numel(out[j]); e++)
            sum += mt_get(out[j], e) * mt_get(seeds[j], e);
    mt_ctx_end_step(c);
    return sum;
}

/* Takes t's gradient out after a backward: a copy, leaving t with none (a
 * parameter's gradient buffer is zeroed instead, as it persists). */
static mt_tensor *take_grad(mt_ctx *c, mt_tensor *t)
{
    if (!t->grad)
        return NULL;
    mt_tensor *g = tl_to_device(t->grad, MT_CPU);
    if (t->is_param)
        mt_device_zero(t->device, t->grad->data, mt_nbytes(t->grad));
    else
        t->grad = NULL;
    (void)c;
    return g;
}

/* d objective / d wrt[e] by the fourth-order central difference
 * (f(x-2h) - 8 f(x-h) + 8 f(x+h) - f(x+2h)) / 12h: its truncation error is
 * O(h^4), so h can be large enough that rounding in the objective stays far
 * below small gradients. h scales with |x|, the scale on which functions of
 * x (a norm of small embeddings, softplus of a bias) change. */
static double central_difference(mt_ctx *c, tl_run_fn run, void *arg, const char *name, mt_tensor **seeds,
                                 mt_tensor *t, int64_t e)
{
    const double steps[4] = {-2, -1, 1, 2}, weights[4] = {1, -8, 8, -1};
    double x0 = mt_get(t, e), h = 1e-3 * fmax(fabs(x0), 1e-2), sum = 0;
    for (int k = 0; k < 4; k++) {
        mt_set(t, e, x0 + steps[k] * h);
        sum += weights[k] * objective(c, run, arg, name, seeds);
    }
    mt_set(t, e, x0);
    return sum / (12 * h);
}

double tl_gradcheck_fn(const char *name, tl_run_fn run, void *arg, int n, mt_tensor **wrt, const char **names,
                       uint64_t seed, int64_t max_elems)
{
    mt_backend *cpu = mt_backend_cpu_create();
    mt_ctx c;
    mt_ctx_init(&c, cpu, 1 << 20);
    mt_tensor *out[MT_NODE_MAX_OUT], *seeds[MT_NODE_MAX_OUT];
    mt_tensor **analytic = calloc((size_t)n, sizeof *analytic);
    int n_out = run(&c, arg, out);
    for (int j = 0; j < n_out; j++)
        if (!out[j])
            mt_fatal("%s: output %d is NULL: %s", name, j, mt_ctx_error(&c) ? mt_ctx_error(&c) : "?");
    make_seeds(n_out, out, seed, seeds);
    mt_backward_seeded(&c, n_out, out, seeds);
    for (int i = 0; i < n; i++)
        if (!(analytic[i] = take_grad(&c, wrt[i])))
            mt_fatal("%s: backward produced no gradient for %s", name, names[i]);
    mt_ctx_end_step(&c);

    c.grad_enabled = false;
    double worst = 0;
    for (int i = 0; i < n; i++) {
        int64_t numel = mt_numel(wrt[i]), step = numel > max_elems ? (numel + max_elems - 1) / max_elems : 1;
        double diff = 0, norm = 0;
        for (int64_t e = (int64_t)(seed % (uint64_t)step); e < numel; e += step) {
            double numeric = central_difference(&c, run, arg, name, seeds, wrt[i], e);
            double a = mt_get(analytic[i], e);
            diff += (a - numeric) * (a - numeric);
            norm += numeric * numeric;
        }
        double err = norm > 0 ? sqrt(diff / norm) : sqrt(diff);
        printf("gradcheck %-18s d/d%-40s rel err %.3e\n", name, names[i], err);
        if (!(err <= worst))
            worst = err;
        mt_tensor_free(analytic[i]);
    }
    free(analytic);
    tl_free_all(n_out, seeds);
    mt_ctx_release(&c);
    cpu->destroy(cpu);
    return worst;
}

typedef struct case_arg {
    const tl_case *k;
    mt_tensor **in;
} case_arg;

static int run_case(mt_ctx *c, void *arg, mt_tensor **out)
{
    case_arg *a = arg;
    return a->k->run(c, a->in, out);
}

double tl_gradcheck(const tl_case *k, uint64_t seed)
{
    mt_tensor *in[MT_NODE_MAX_IN], *wrt[MT_NODE_MAX_IN];
    const char *names[MT_NODE_MAX_IN];
    int n = 0;
    tl_make_inputs(k, false, MT_F64, seed, in);
    for (int i = 0; i < k->n_in; i++) {
        in[i]->requires_grad = is_float_input(k, i);
        if (in[i]->requires_grad) {
            wrt[n] = in[i];
            names[n++] = k->in[i].name;
        }
    }
    case_arg arg = {k, in};
    double worst = tl_gradcheck_fn(k->name, run_case, &arg, n, wrt, names, seed, INT64_MAX);
    tl_free_all(k->n_in, in);
    return worst;
}

/* One forward and seeded backward of case k on ctx c; inputs already on c's
 * device. Host copies of outputs go to out_h, of input gradients to grad_h. */
static int run_once(mt_ctx *c, const tl_case *k, mt_tensor **in, mt_tensor **seeds_h, mt_tensor **out_h,
                    mt_tensor **grad_h, bool poison)
{
    mt_tensor *out[MT_NODE_MAX_OUT], *seeds[MT_NODE_MAX_OUT];
    if (poison)
        mt_arena_poison(&c->arena);
    int n_out = k->run(c, in, out);
    require_outputs(c, k, n_out, out);
    for (int j = 0; j < n_out; j++) {
        out_h[j] = tl_to_device(out[j], MT_CPU);
        seeds[j] = tl_to_device(seeds_h[j], c->device);
    }
    mt_backward_seeded(c, n_out, out, seeds);
    for (int i = 0; i < k->n_in; i++) {
        grad_h[i] = in[i]->grad ? tl_to_device(in[i]->grad, MT_CPU) : NULL;
        in[i]->grad = NULL;
    }
    tl_free_all(n_out, seeds);
    mt_ctx_end_step(c);
    return n_out;
}

static bool same_bits(const mt_tensor *a, const mt_tensor *b)
{
    if (!a || !b)
        return a == b;
    return mt_nbytes(a) == mt_nbytes(b) && memcmp(a->data, b->data, mt_nbytes(a)) == 0;
}

tl_compare tl_compare_backend(mt_backend *be, const tl_case *k, mt_dtype dt, uint64_t seed)
{
    tl_compare r = {.all_written = true, .deterministic = true};
    mt_backend *cpu = mt_backend_cpu_create();
    mt_ctx cc, bc;
    mt_ctx_init(&cc, cpu, 64 << 20);
    mt_ctx_init(&bc, be, 64 << 20);
    mt_tensor *in[MT_NODE_MAX_IN], *din[MT_NODE_MAX_IN], *seeds[MT_NODE_MAX_OUT], *probe[MT_NODE_MAX_OUT];
    mt_tensor *ref_out[MT_NODE_MAX_OUT], *ref_grad[MT_NODE_MAX_IN];
    mt_tensor *out1[MT_NODE_MAX_OUT], *grad1[MT_NODE_MAX_IN], *out2[MT_NODE_MAX_OUT], *grad2[MT_NODE_MAX_IN];
    tl_make_inputs(k, true, dt, seed, in);
    for (int i = 0; i < k->n_in; i++) {
        in[i]->requires_grad = is_float_input(k, i);
        din[i] = tl_to_device(in[i], be->device);
        din[i]->requires_grad = in[i]->requires_grad;
    }
    /* The seeds need the outputs' shapes: learn them from a no-grad CPU run. */
    cc.grad_enabled = false;
    int n_out = k->run(&cc, in, probe);
    require_outputs(&cc, k, n_out, probe);
    make_seeds(n_out, probe, seed, seeds);
    mt_ctx_end_step(&cc);
    cc.grad_enabled = true;

    run_once(&cc, k, in, seeds, ref_out, ref_grad, false);
    run_once(&bc, k, din, seeds, out1, grad1, true);
    run_once(&bc, k, din, seeds, out2, grad2, true);
    for (int j = 0; j < n_out; j++) {
        r.all_written &= !tl_has_nan(out1[j]);
        double e = tl_rel_err(out1[j], ref_out[j]);
        if (!(e <= r.out_err))
            r.out_err = e;
        r.deterministic &= same_bits(out1[j], out2[j]);
    }
    for (int i = 0; i < k->n_in; i++) {
        if (!ref_grad[i] || !grad1[i]) {
            if (ref_grad[i] != grad1[i])
                r.grad_err = INFINITY;
            continue;
        }
        double e = tl_rel_err(grad1[i], ref_grad[i]);
        if (!(e <= r.grad_err))
            r.grad_err = e;
        r.deterministic &= same_bits(grad1[i], grad2[i]);
    }
    tl_free_all(n_out, seeds);
    tl_free_all(n_out, ref_out);
    tl_free_all(n_out, out1);
    tl_free_all(n_out, out2);
    tl_free_all(k->n_in, ref_grad);
    tl_free_all(k->n_in, grad1);
    tl_free_all(k->n_in, grad2);
    tl_free_all(k->n_in, din);
    tl_free_all(k->n_in, in);
    mt_ctx_release(&bc);
    mt_ctx_release(&cc);
    cpu->destroy(cpu);
    return r;
}

void tl_assert_backend_matches(mt_backend *be, const tl_case *k, mt_dtype dt, double bound)
{
    tl_compare r = tl_compare_backend(be, k, dt, 42);
    printf("equiv %-18s %-4s out %.2e grad %.2e written %s deterministic %s\n", k->name, mt_dtype_name(dt),
           r.out_err, r.grad_err, r.all_written ? "yes" : "NO", r.deterministic ? "yes" : "NO");
    if (!r.all_written)
        fail_msg("%s %s: an output element was never written", k->name, mt_dtype_name(dt));
    if (!(r.out_err <= bound) || !(r.grad_err <= bound))
        fail_msg("%s %s: relative error out %.3e grad %.3e exceeds %.0e", k->name, mt_dtype_name(dt), r.out_err,
                 r.grad_err, bound);
    if (!r.deterministic)
        fail_msg("%s %s: two runs gave different bits", k->name, mt_dtype_name(dt));
}

mt_backend *tl_cuda_backend_or_exit(void)
{
    char why[256];
    if (mt_cuda_device_count() == 0) {
        printf("SKIPPED: no CUDA device present\n");
        exit(TL_SKIP);
    }
    mt_backend *be = mt_backend_cuda_create(0, why, sizeof why);
    if (!be) {
        printf("a CUDA device is present but the backend failed: %s\n", why);
        exit(1);
    }
    return be;
}

static char temp_dir[64];

int tl_temp_dir_setup(void **state)
{
    (void)state;
    snprintf(temp_dir, sizeof temp_dir, "/tmp/mt-test-XXXXXX");
    return mkdtemp(temp_dir) ? 0 : -1;
}

int tl_temp_dir_teardown(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", temp_dir);
    return system(cmd) == 0 ? 0 : -1;
}

const char *tl_temp_dir(void)
{
    return temp_dir;
}

const char *tl_temp_path(const char *name)
{
    static char buf[8][512];
    static int k;
    char *p = buf[k++ % 8];
    snprintf(p, sizeof buf[0], "%s/%s", tl_temp_dir(), name);
    return p;
}

char *tl_read_text(const char *path)
{
    char err[1200];
    size_t len;
    char *text = mt_read_file(path, 0, &len, err, sizeof err);
    if (!text)
        fail_msg("%s", err);
    return text;
}

void tl_expect_error(const char *err, const char *phrase1, const char *phrase2)
{
    if (!strstr(err, phrase1) || (phrase2 && !strstr(err, phrase2)))
        fail_msg("error \"%s\" should say \"%s\"%s%s%s", err, phrase1, phrase2 ? " and \"" : "",
                 phrase2 ? phrase2 : "", phrase2 ? "\"" : "");
}

double tl_train_sequence_lm(mt_backend *be, mt_model *m, const char *label, int steps, double *first)
{
    enum { B = 4, L = 24 };
    const int vocab = m->cfg.vocab_size;
    mt_tensor *ids = mt_tensor_new(MT_CPU, MT_I32, 2, (int64_t[]){B, L});
    mt_tensor *targets = mt_tensor_new(MT_CPU, MT_I32, 1, (int64_t[]){B * L});
    for (int b = 0; b < B; b++) {
        int tok = b;
        for (int t = 0; t < L; t++) {
            mt_set(ids, b * L + t, tok);
            tok = (3 * tok + 2) % vocab;
            mt_set(targets, b * L + t, tok);
        }
    }
    mt_ctx c;
    mt_ctx_init(&c, be, 0);
    double last = 0;
    for (int step = 0; step < steps; step++) {
        mt_tensor *loss = mt_cross_entropy(&c, mt_model_logits(&c, m, ids, NULL, MT_F32), targets, TL_IGNORE);
        last = mt_get(loss, 0);
        if (step == 0)
            *first = last;
        mt_backward(&c, loss);
        mt_sgd_step(be, &m->params, 0.5);
        mt_params_zero_grad(&m->params);
        mt_ctx_end_step(&c);
    }
    printf("%s: loss %.4f at step 0, %.4f after %d SGD steps (log vocab %.4f)\n", label, *first, last, steps,
           log(vocab));
    mt_ctx_release(&c);
    mt_tensor_free(ids);
    mt_tensor_free(targets);
    return last;
}

typedef struct lm_loss_arg {
    mt_model *m;
    mt_tensor *ids, *targets;
} lm_loss_arg;

static int run_lm_loss(mt_ctx *c, void *arg, mt_tensor **out)
{
    lm_loss_arg *a = arg;
    out[0] = mt_cross_entropy(c, mt_model_logits(c, a->m, a->ids, NULL, MT_F64), a->targets, TL_IGNORE);
    return 1;
}

double tl_gradcheck_lm(mt_model *m, const char *name, int batch, int seqlen)
{
    const int n = batch * seqlen, vocab = m->cfg.vocab_size;
    mt_tensor *ids = mt_tensor_new(MT_CPU, MT_I32, 2, (int64_t[]){batch, seqlen});
    mt_tensor *targets = mt_tensor_new(MT_CPU, MT_I32, 1, (int64_t[]){n});
    for (int i = 0; i < n; i++) {
        mt_set(ids, i, (i * 7 + 3) % vocab);
        mt_set(targets, i, i == 4 ? TL_IGNORE : (i * 5 + 1) % vocab);
    }
    lm_loss_arg arg = {m, ids, targets};
    mt_tensor **wrt = malloc((size_t)m->params.n * sizeof *wrt);
    const char **names = malloc((size_t)m->params.n * sizeof *names);
    for (int i = 0; i < m->params.n; i++) {
        wrt[i] = &m->params.items[i]->value;
        names[i] = m->params.items[i]->name;
    }
    double e = tl_gradcheck_fn(name, run_lm_loss, &arg, m->params.n, wrt, names, 4, 24);
    free(wrt);
    free(names);
    mt_tensor_free(ids);
    mt_tensor_free(targets);
    return e;
}

mt_tensor *tl_read_st(const mt_st_file *f, const char *name)
{
    const mt_st_tensor *t = mt_safetensors_find(f, name);
    if (!t || (t->dtype != MT_ST_I32 && t->dtype != MT_ST_F32))
        fail_msg("%s: no I32 or F32 tensor \"%s\"", mt_safetensors_path(f), name);
    char err[512];
    mt_tensor *out = mt_tensor_new(MT_CPU, t->dtype == MT_ST_I32 ? MT_I32 : MT_F32, t->ndim, t->shape);
    if (!mt_safetensors_read(f, t, out->data, mt_nbytes(out), err, sizeof err))
        fail_msg("%s", err);
    return out;
}

mt_tensor *tl_next_token_targets(const mt_tensor *ids)
{
    const int64_t B = ids->shape[0], L = ids->shape[1];
    mt_tensor *targets = mt_tensor_new(MT_CPU, MT_I32, 1, (int64_t[]){B * L});
    for (int64_t b = 0; b < B; b++)
        for (int64_t t = 0; t < L; t++)
            mt_set(targets, b * L + t, t + 1 < L ? mt_get(ids, b * L + t + 1) : TL_IGNORE);
    return targets;
}

mt_tensor *tl_sliced_cross_entropy(mt_ctx *c, mt_tensor *logits, mt_tensor *targets, int slices, double *losses)
{
    const int64_t n = mt_rows(logits), cols = mt_cols(logits) / slices;
    const mt_dtype acc = mt_accum_dtype(logits->dtype);
    mt_tensor *stats = mt_ctx_tensor(c, acc, 3, (int64_t[]){slices, n, 3}), *sum = NULL;
    for (int k = 0; k < slices; k++) {
        mt_tensor slot;
        mt_tensor_init(&slot, acc, c->device, 2, (int64_t[]){n, 3});
        slot.data = (char *)stats->data + (size_t)(k * n * 3) * mt_dtype_size(acc);
        c->be->cross_entropy_stats(c->be, &slot, mt_ctx_view_cols(c, logits, k * cols, cols), targets, k * cols,
                                   TL_IGNORE);
    }
    for (int k = 0; k < slices; k++) {
        mt_tensor *view = mt_ctx_view_cols(c, logits, k * cols, cols);
        mt_tensor *loss =
            mt_cross_entropy_of_slice(c, view, targets, stats, k * cols, slices * cols, TL_IGNORE, false);
        mt_tensor *host = tl_to_device(loss, MT_CPU);
        losses[k] = mt_get(host, 0);
        mt_tensor_free(host);
        sum = sum ? mt_add(c, sum, loss) : loss;
    }
    return sum;
}

/* The logits' gradient, copied to the host once the cross-entropy node
 * (index `node`) has run: later, when the linear has run, it is gone. */
typedef struct logits_tap {
    int node;
    mt_tensor *logits, *grad;
} logits_tap;

static void copy_logits_grad(mt_ctx *c, int index, void *arg)
{
    logits_tap *t = arg;
    if (index == t->node)
        t->grad = tl_to_device(mt_grad_of(c, t->logits), MT_CPU);
}

tl_ce_grads tl_cross_entropy_grads(mt_backend *be, const mt_tensor *x_h, const mt_tensor *w_h,
                                   const mt_tensor *targets_h, bool in_place)
{
    mt_ctx c;
    mt_ctx_init(&c, be, 0);
    mt_tensor *x = tl_to_device(x_h, be->device), *w = tl_to_device(w_h, be->device);
    mt_tensor *targets = tl_to_device(targets_h, be->device);
    x->requires_grad = w->requires_grad = true;
    mt_tensor *logits = mt_linear(&c, x, w, NULL);
    mt_tensor *loss = in_place ? mt_cross_entropy_in_place(&c, logits, targets, TL_IGNORE)
                               : mt_cross_entropy(&c, logits, targets, TL_IGNORE);
    logits_tap tap = {c.n_nodes - 1, logits, NULL};
    if (!in_place) {
        c.after_node = copy_logits_grad;
        c.after_node_arg = &tap;
    }
    mt_backward(&c, loss);
    tl_ce_grads r = {tl_to_device(loss, MT_CPU), tl_to_device(mt_grad_of(&c, x), MT_CPU),
                     tl_to_device(mt_grad_of(&c, w), MT_CPU), in_place ? tl_to_device(logits, MT_CPU) : tap.grad};
    mt_ctx_release(&c);
    mt_tensor_free(x);
    mt_tensor_free(w);
    mt_tensor_free(targets);
    return r;
}

void tl_ce_grads_free(tl_ce_grads *g)
{
    mt_tensor_free(g->loss);
    mt_tensor_free(g->dx);
    mt_tensor_free(g->dw);
    mt_tensor_free(g->dlogits);
}

void tl_assert_in_place_cross_entropy_exact(mt_backend *be, mt_dtype dt)
{
    enum { N = 67, K = 24, V = 1000 };
    mt_backend *cpu = mt_backend_cpu_create();
    mt_tensor *x = mt_tensor_new(MT_CPU, dt, 2, (int64_t[]){N, K});
    mt_tensor *w = mt_tensor_new(MT_CPU, dt, 2, (int64_t[]){V, K});
    mt_tensor *targets = mt_tensor_new(MT_CPU, MT_I32, 1, (int64_t[]){N});
    cpu->fill_normal(cpu, x, 31, 0.0, 1.0);
    cpu->fill_normal(cpu, w, 32, 0.0, 0.5);
    for (int n = 0; n < N; n++)
        mt_set(targets, n, n % 9 == 4 ? TL_IGNORE : (n * 37) % V);
    tl_ce_grads a = tl_cross_entropy_grads(be, x, w, targets, false);
    tl_ce_grads b = tl_cross_entropy_grads(be, x, w, targets, true);
    printf("cross-entropy in place (%s, %s): loss %.9g, dx %s, dw %s, logits now the gradient %s\n", be->name,
           mt_dtype_name(dt), mt_get(b.loss, 0), tl_rel_err(b.dx, a.dx) == 0 ? "same bits" : "differ",
           tl_rel_err(b.dw, a.dw) == 0 ? "same bits" : "differ", tl_rel_err(b.dlogits, a.dlogits) == 0 ? "yes" : "no");
    assert_true(mt_get(a.loss, 0) == mt_get(b.loss, 0));
    assert_memory_equal(a.dx->data, b.dx->data, mt_nbytes(a.dx));
    assert_memory_equal(a.dw->data, b.dw->data, mt_nbytes(a.dw));
    assert_memory_equal(a.dlogits->data, b.dlogits->data, mt_nbytes(a.dlogits));
    double norm = 0; /* a gradient of zeros would match trivially */
    for (int64_t i = 0; i < mt_numel(a.dx); i++)
        norm += mt_get(a.dx, i) * mt_get(a.dx, i);
    assert_true(norm > 0);
    tl_ce_grads_free(&a);
    tl_ce_grads_free(&b);
    mt_tensor_free(x);
    mt_tensor_free(w);
    mt_tensor_free(targets);
    cpu->destroy(cpu);
}

mt_st_file *tl_load_fixture(mt_model *m, const char *kind, const char *scheme, mt_device dev, mt_dtype dt)
{
    char dir[512], path[512], err[512];
    snprintf(dir, sizeof dir, "%s/tests/fixtures/%s-tiny-%s", MT_SOURCE_DIR, kind, scheme);
    snprintf(path, sizeof path, "%s/tests/fixtures/%s-tiny-expected.safetensors", MT_SOURCE_DIR, kind);
    mt_model_config cfg;
    if (!mt_pretrained_config(dir, &cfg, err, sizeof err))
        fail_msg("%s", err);
    mt_model_build(m, &cfg, dev, dt);
    if (!mt_pretrained_load(dir, m, err, sizeof err))
        fail_msg("%s", err);
    mt_st_file *expected = mt_safetensors_open(path, err, sizeof err);
    if (!expected)
        fail_msg("%s", err);
    return expected;
}
