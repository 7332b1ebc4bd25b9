/* Tensor parallelism for Mamba-2 on the CPU communicator (threads as ranks),
 * in f64: a tiny LM split over 2 or 4 ranks, with B and C split by groups
 * (ngroups a multiple of the TP size: the gated norm local) or replicated
 * (ngroups 1 or 2 under TP 4: the norm's statistics summed over the ranks),
 * gives the single-rank model's logits and loss, its gradients (every rank's
 * local gradients, unsliced) and, over 3 clipped AdamW steps, its
 * parameters, also with the ranks' blocks recomputed in the backward
 * (activation checkpointing runs the collectives again) and with an lm_head
 * of its own. The embedding and lm_head are vocab-parallel: each rank's
 * logits are its columns of the single-rank ones. Also: each rank's init is
 * its slice of the single-rank init, slicing round-trips exactly, bad
 * settings are named, and a failed collective inside an op is an op error
 * carrying the comm's message. */
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "autograd/ops_tp.h"
#include "dist/tp.h"
#include "layers/model.h"
#include "optim/adamw.h"
#include "testlib.h"

enum { BATCH = 2, SEQ = 24, STEPS = 3, MAX_TP = 4 };

#define SEED 11
#define MAX_NORM 1.0 /* clipping active: the first steps' norms are above it */
/* Bounds in f64: the TP model sums the same terms in another order (the
 * out_proj and in_proj products split over ranks, then added). */
#define LOGITS_BOUND 1e-12
#define GRAD_BOUND 1e-10
#define PARAM_BOUND 1e-10

/* What a run varies: the groups of B and C, activation checkpointing of
 * every block, an lm_head of its own (else tied to the embedding). */
typedef struct tp_variant {
    int ngroups;
    bool recompute, untied;
} tp_variant;

static void tiny_config(mt_model_config *cfg, tp_variant v)
{
    mt_model_config_defaults(cfg);
    cfg->d_model = 32;
    cfg->n_layer = 2;
    cfg->vocab_size = 40;
    cfg->d_state = 8;
    cfg->headdim = 8; /* d_inner 64: 8 heads */
    cfg->ngroups = v.ngroups;
    cfg->tie_embeddings = !v.untied;
    cfg->chunk_size = 16;
    char err[256];
    if (!mt_model_config_finalize(cfg, err, sizeof err))
        fail_msg("%s", err);
}

/* One rank (or the single-rank model: comm NULL, size 1) and what it saw. */
typedef struct tp_job {
    tp_variant v;
    int size, rank;
    mt_comm *comm;
    mt_model m;
    void *init_values;       /* flat values after mt_model_init */
    void *grads0;            /* flat gradients of step 0, partial ones reduced */
    mt_tensor *logits0;      /* step 0 logits, host copy */
    double losses[STEPS], norms[STEPS];
    bool ok;
    char err[256];
} tp_job;

static void *copy_flat(const mt_params *p, const void *buf)
{
    size_t bytes = p->flat_size * mt_dtype_size(p->dtype);
    void *c = malloc(bytes);
    memcpy(c, buf, bytes);
    return c;
}

/* Builds, initializes and trains the job's model for STEPS AdamW steps on
 * one fixed batch, as a trainer would: backward, partial gradients reduced
 * over the TP group, the global norm, a clipped step. */
static void *tp_train(void *arg)
{
    tp_job *j = arg;
    mt_model_config cfg;
    tiny_config(&cfg, j->v);
    mt_backend *cpu = mt_backend_cpu_create();
    mt_tp tp = {.comm = j->comm, .rank = j->rank, .size = j->size};
    mt_model_build_tp(&j->m, &cfg, MT_CPU, MT_F64, &tp);
    j->m.recompute_blocks = j->v.recompute;
    mt_model_init(&j->m, cpu, SEED);
    j->init_values = copy_flat(&j->m.params, j->m.params.values);
    mt_adamw opt;
    mt_adamw_config oc = {0.9, 0.95, 1e-8, 0.1, false};
    mt_adamw_init(&opt, &j->m.params, &oc);
    mt_tensor *ids = mt_tensor_new(MT_CPU, MT_I32, 2, (int64_t[]){BATCH, SEQ});
    for (int i = 0; i < BATCH * SEQ; i++)
        mt_set(ids, i, (7 * i + (i * i) % 13) % 40);
    mt_tensor *targets = tl_next_token_targets(ids);
    mt_ctx c;
    mt_ctx_init(&c, cpu, 0);
    j->ok = true;
    for (int s = 0; j->ok && s < STEPS; s++) {
        mt_tensor *logits = mt_model_logits(&c, &j->m, ids, NULL, MT_F64);
        mt_tensor *loss = mt_model_loss(&c, &j->m, logits, targets, TL_IGNORE);
        j->losses[s] = mt_get(loss, 0);
        if (s == 0)
            j->logits0 = tl_to_device(logits, MT_CPU);
        mt_backward(&c, loss);
        mt_ctx_end_step(&c);
        j->ok = mt_tp_reduce_partial_grads(j->comm, &j->m.params, j->err, sizeof j->err) &&
                mt_tp_grad_norm(j->comm, cpu, &j->m.params, &j->norms[s], j->err, sizeof j->err);
        if (s == 0)
            j->grads0 = copy_flat(&j->m.params, j->m.params.grads);
        mt_adamw_step(&opt, cpu, &j->m.params, 1e-2, mt_clip_scale(j->norms[s], MAX_NORM));
        mt_params_zero_grad(&j->m.params);
    }
    mt_ctx_release(&c);
    mt_tensor_free(ids);
    mt_tensor_free(targets);
    mt_adamw_release(&opt);
    cpu->destroy(cpu);
    return NULL;
}

static void job_release(tp_job *j)
{
    mt_model_release(&j->m);
    free(j->init_values);
    free(j->grads0);
    mt_tensor_free(j->logits0);
}

/* Runs `size` ranks as threads; fails the test if any rank failed. */
static void run_ranks(tp_variant v, int size, tp_job *jobs, mt_comm **comms)
{
    mt_comm_cpu_group(size, 60.0, comms);
    pthread_t th[MAX_TP];
    for (int r = 0; r < size; r++) {
        jobs[r] = (tp_job){.v = v, .size = size, .rank = r, .comm = comms[r]};
        pthread_create(&th[r], NULL, tp_train, &jobs[r]);
    }
    for (int r = 0; r < size; r++)
        pthread_join(th[r], NULL);
    for (int r = 0; r < size; r++)
        if (!jobs[r].ok)
            fail_msg("rank %d of %d: %s", r, size, jobs[r].err);
}

/* Every rank's flat buffer (picked by which) unsliced into its own
 * NaN-filled full buffer; returns the largest |rank - single| over every
 * element of every parameter, relative to the parameter's largest single
 * value, and fails unless every element was written by some rank. */
static double unsliced_err(const mt_model_config *cfg, const tp_job *single, const void *single_buf,
                           const tp_job *ranks, int size, void *(*which)(const tp_job *))
{
    const mt_params *full = &single->m.params;
    double *got[MAX_TP];
    char err[256];
    for (int r = 0; r < size; r++) {
        got[r] = malloc(full->flat_size * sizeof(double));
        for (size_t i = 0; i < full->flat_size; i++)
            got[r][i] = NAN;
        if (!mt_tp_unslice(cfg, size, r, &ranks[r].m.params, which(&ranks[r]), full, got[r], err, sizeof err))
            fail_msg("%s", err);
    }
    const double *ref = single_buf;
    double worst = 0;
    for (int k = 0; k < full->n; k++) {
        const mt_param *q = full->items[k];
        size_t n = (size_t)mt_numel(&q->value);
        double scale = 0;
        for (size_t i = 0; i < n; i++)
            scale = fmax(scale, fabs(ref[q->offset + i]));
        for (size_t i = 0; i < n; i++) {
            bool written = false;
            for (int r = 0; r < size; r++) {
                double v = got[r][q->offset + i];
                if (isnan(v))
                    continue;
                written = true;
                worst = fmax(worst, fabs(v - ref[q->offset + i]) / (scale > 0 ? scale : 1));
            }
            if (!written)
                fail_msg("%s element %zu: no rank holds it", q->name, i);
        }
    }
    for (int r = 0; r < size; r++)
        free(got[r]);
    return worst;
}

static void *grads0_of(const tp_job *j)
{
    return j->grads0;
}

static void *values_of(const tp_job *j)
{
    return j->m.params.values;
}

/* Rank r's init equals its slice of the single-rank init bit for bit, and
 * the slices of every rank unslice back to the single-rank buffer exactly. */
static void check_init_and_round_trip(const mt_model_config *cfg, const tp_job *single, const tp_job *ranks,
                                      int size)
{
    const mt_params *full = &single->m.params;
    char err[256];
    double *back = malloc(full->flat_size * sizeof(double));
    for (size_t i = 0; i < full->flat_size; i++)
        back[i] = NAN;
    for (int r = 0; r < size; r++) {
        const mt_params *local = &ranks[r].m.params;
        double *slice = calloc(local->flat_size, sizeof(double));
        if (!mt_tp_slice(cfg, size, r, full, single->init_values, local, slice, err, sizeof err))
            fail_msg("%s", err);
        assert_memory_equal(slice, ranks[r].init_values, local->flat_size * sizeof(double));
        if (!mt_tp_unslice(cfg, size, r, local, slice, full, back, err, sizeof err))
            fail_msg("%s", err);
        free(slice);
    }
    for (int k = 0; k < full->n; k++) {
        const mt_param *q = full->items[k];
        assert_memory_equal(back + q->offset, (const double *)single->init_values + q->offset,
                            (size_t)mt_numel(&q->value) * sizeof(double));
    }
    free(back);
}

/* The flags a trainer relies on: sharded mixer and vocabulary parameters,
 * partial gradients exactly on the replicated B and C rows, nothing else
 * flagged. */
static void check_flags(const tp_job *rank0, bool bc_replicated)
{
    int sharded = 0, partial = 0;
    const mt_params *p = &rank0->m.params;
    for (int k = 0; k < p->n; k++) {
        const mt_param *q = p->items[k];
        bool split = strstr(q->name, ".mixer.") || strcmp(q->name, "backbone.embedding.weight") == 0 ||
                     strcmp(q->name, "lm_head.weight") == 0;
        assert_true(split == ((q->flags & MT_PARAM_TP_SHARDED) != 0));
        sharded += split;
        if (q->flags & MT_PARAM_TP_PARTIAL_GRAD) {
            partial++;
            assert_true(strstr(q->name, "in_proj") || strstr(q->name, "conv1d"));
        }
    }
    assert_int_equal(sharded, 2 * 8 + (rank0->v.untied ? 2 : 1));
    assert_int_equal(partial, bc_replicated ? 2 * 3 : 0);
}

/* Columns [first, first + n) of the host matrix t, as a new host tensor. */
static mt_tensor *columns(const mt_tensor *t, int64_t first, int64_t n)
{
    int64_t rows = mt_rows(t), cols = mt_cols(t);
    mt_tensor *out = mt_tensor_new(MT_CPU, t->dtype, 2, (int64_t[]){rows, n});
    for (int64_t i = 0; i < rows; i++)
        for (int64_t j = 0; j < n; j++)
            mt_set(out, i * n + j, mt_get(t, i * cols + first + j));
    return out;
}

static void check_tp(tp_variant v, int size)
{
    mt_model_config cfg;
    tiny_config(&cfg, v);
    tp_job single = {.v = v, .size = 1};
    tp_train(&single);
    assert_true(single.ok);
    tp_job ranks[MAX_TP];
    mt_comm *comms[MAX_TP];
    run_ranks(v, size, ranks, comms);
    bool replicated = v.ngroups % size != 0;
    check_flags(&ranks[0], replicated);
    check_init_and_round_trip(&cfg, &single, ranks, size);

    double logit_err = 0, loss_err = 0, norm_err = 0;
    for (int r = 0; r < size; r++) {
        int64_t cols = mt_cols(ranks[r].logits0); /* rank r's vocabulary columns */
        mt_tensor *ref = columns(single.logits0, r * cols, cols);
        logit_err = fmax(logit_err, tl_rel_err(ranks[r].logits0, ref));
        mt_tensor_free(ref);
        for (int s = 0; s < STEPS; s++) {
            loss_err = fmax(loss_err, fabs(ranks[r].losses[s] - single.losses[s]) / single.losses[s]);
            norm_err = fmax(norm_err, fabs(ranks[r].norms[s] - single.norms[s]) / single.norms[s]);
        }
    }
    double grad_err = unsliced_err(&cfg, &single, single.grads0, ranks, size, grads0_of);
    double param_err = unsliced_err(&cfg, &single, single.m.params.values, ranks, size, values_of);
    printf("TP %d%s%s, ngroups %d (B/C %s, norm %s): logits rel err %.1e, losses %.1e, grad norms %.1e "
           "(%.3f %.3f %.3f), step-0 gradients unsliced %.1e, parameters after %d clipped AdamW steps %.1e\n",
           size, v.recompute ? " with recompute" : "", v.untied ? " untied lm_head" : "", v.ngroups,
           replicated ? "replicated" : "sharded", replicated ? "across ranks" : "local", logit_err, loss_err, norm_err,
           single.norms[0], single.norms[1], single.norms[2], grad_err, STEPS, param_err);
    assert_true(single.norms[0] > MAX_NORM); /* the clipping path runs */
    assert_true(logit_err < LOGITS_BOUND);
    assert_true(loss_err < LOGITS_BOUND);
    assert_true(norm_err < LOGITS_BOUND);
    assert_true(grad_err < GRAD_BOUND);
    assert_true(param_err < PARAM_BOUND);
    /* The parameters moved: a step that did nothing would also "match". */
    double moved = 0;
    for (size_t i = 0; i < single.m.params.flat_size; i++)
        moved = fmax(moved, fabs(((double *)single.m.params.values)[i] - ((double *)single.init_values)[i]));
    assert_true(moved > 1e-3);

    job_release(&single);
    for (int r = 0; r < size; r++) {
        job_release(&ranks[r]);
        comms[r]->destroy(comms[r]);
    }
}

static void test_tp2_bc_replicated_norm_across_ranks(void **state)
{
    (void)state;
    check_tp((tp_variant){.ngroups = 1}, 2);
}

static void test_tp2_bc_sharded_norm_local(void **state)
{
    (void)state;
    check_tp((tp_variant){.ngroups = 2}, 2);
}

static void test_tp4_bc_replicated(void **state)
{
    (void)state;
    check_tp((tp_variant){.ngroups = 1}, 4);
}

/* ngroups 2 over 4 ranks: B and C replicated, ranks 0-1 read group 0 and
 * ranks 2-3 group 1; the norm sums each group over its two ranks. */
static void test_tp4_two_groups_replicated(void **state)
{
    (void)state;
    check_tp((tp_variant){.ngroups = 2}, 4);
}

static void test_tp2_recompute(void **state)
{
    (void)state;
    check_tp((tp_variant){.ngroups = 1, .recompute = true}, 2);
}

/* The lm_head a parameter of its own: split by rows like the embedding. */
static void test_tp2_untied_lm_head(void **state)
{
    (void)state;
    check_tp((tp_variant){.ngroups = 1, .untied = true}, 2);
}

static void expect_check_error(const mt_model_config *cfg, int tp, const char *needle)
{
    char err[256] = "";
    assert_false(mt_tp_check(cfg, tp, err, sizeof err));
    printf("  tp %d: %s\n", tp, err);
    assert_non_null(strstr(err, needle));
}

static void test_check_names_the_setting(void **state)
{
    (void)state;
    mt_model_config cfg;
    char err[256];
    tiny_config(&cfg, (tp_variant){.ngroups = 1});
    assert_true(mt_tp_check(&cfg, 1, err, sizeof err));
    assert_true(mt_tp_check(&cfg, 8, err, sizeof err));
    expect_check_error(&cfg, 3, "nheads 8");
    cfg.vocab_size = 36; /* padded to 40 by 8: fine for 8 ranks; by 4: 36, not */
    cfg.pad_vocab_size_multiple = 4;
    if (!mt_model_config_finalize(&cfg, err, sizeof err))
        fail_msg("%s", err);
    expect_check_error(&cfg, 8, "padded vocabulary 36");
    expect_check_error(&cfg, 0, "size 0");
    mt_model_config_defaults(&cfg);
    cfg.d_model = 48; /* d_inner 96: 12 heads of 8 */
    cfg.headdim = 8;
    cfg.ngroups = 3;
    if (!mt_model_config_finalize(&cfg, err, sizeof err))
        fail_msg("%s", err);
    assert_true(mt_tp_check(&cfg, 3, err, sizeof err));
    expect_check_error(&cfg, 2, "ngroups 3");
    mt_model_config_defaults(&cfg);
    mt_model_config_use_mamba1(&cfg);
    if (!mt_model_config_finalize(&cfg, err, sizeof err))
        fail_msg("%s", err);
    expect_check_error(&cfg, 2, "Mamba1");
}

/* Rank 1 never joins: rank 0's reduce from the TP region and its gated norm
 * across ranks return NULL with an op error quoting the communicator. */
static void test_comm_failure_is_an_op_error(void **state)
{
    (void)state;
    mt_comm *comms[2];
    mt_comm_cpu_group(2, 0.2, comms);
    mt_backend *cpu = mt_backend_cpu_create();
    mt_ctx c;
    mt_ctx_init(&c, cpu, 0);
    c.abort_on_error = false;
    mt_tensor *x = mt_ctx_tensor(&c, MT_F64, 2, (int64_t[]){3, 4}), *w = mt_ctx_tensor(&c, MT_F64, 1, (int64_t[]){4});
    for (int i = 0; i < 12; i++)
        ((double *)x->data)[i] = 0.1 * i;
    for (int i = 0; i < 4; i++)
        ((double *)w->data)[i] = 1.0;
    assert_null(mt_tp_reduce_from(&c, x, comms[0]));
    printf("  %s\n", mt_ctx_error(&c));
    assert_non_null(strstr(mt_ctx_error(&c), "mt_tp_reduce_from"));
    assert_non_null(strstr(mt_ctx_error(&c), "did not arrive"));
    mt_ctx_clear_error(&c);
    assert_null(mt_gated_rmsnorm_tp(&c, x, x, w, 0, 1, 8, 1e-5, comms[0]));
    printf("  %s\n", mt_ctx_error(&c));
    assert_non_null(strstr(mt_ctx_error(&c), "mt_gated_rmsnorm_tp"));
    mt_ctx_clear_error(&c);
    mt_tensor *targets = mt_ctx_tensor(&c, MT_I32, 1, (int64_t[]){3});
    for (int i = 0; i < 3; i++)
        ((int32_t *)targets->data)[i] = i;
    assert_null(mt_cross_entropy_tp(&c, x, targets, TL_IGNORE, comms[0], false));
    printf("  %s\n", mt_ctx_error(&c));
    assert_non_null(strstr(mt_ctx_error(&c), "mt_cross_entropy_tp"));
    assert_non_null(strstr(mt_ctx_error(&c), "all-gather"));
    mt_ctx_release(&c);
    cpu->destroy(cpu);
    for (int r = 0; r < 2; r++)
        comms[r]->destroy(comms[r]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tp2_bc_replicated_norm_across_ranks),
        cmocka_unit_test(test_tp2_bc_sharded_norm_local),
        cmocka_unit_test(test_tp4_bc_replicated),
        cmocka_unit_test(test_tp4_two_groups_replicated),
        cmocka_unit_test(test_tp2_recompute),
        cmocka_unit_test(test_tp2_untied_lm_head),
        cmocka_unit_test(test_check_names_the_setting),
        cmocka_unit_test(test_comm_failure_is_an_op_error),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
