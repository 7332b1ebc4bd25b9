/* The CPU communicator (threads as ranks): every collective against a serial
 * computation in rank order, bit for bit, in f32, bf16 and f64; mismatched
 * calls and a missing rank are errors within the timeout, not hangs; and
 * data parallelism on it: two ranks, each on half of every global batch with
 * its gradients all-reduced, train a Mamba-2 LM to the same parameters as one
 * rank on the whole batch, and ZeRO-1 to the same bits as plain data
 * parallelism. */
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <cmocka.h>

#include "dist/comm.h"
#include "dist/zero.h"
#include "layers/model.h"
#include "optim/adamw.h"
#include "testlib.h"

enum { WORLD = 3, COUNT = 1001 };

/* What one rank thread runs and reports. */
typedef struct rank_job {
    mt_comm *comm;
    mt_dtype dt;
    void *a, *b;   /* the rank's inputs / outputs */
    bool ok[5];
    char err[256];
    double seconds;
} rank_job;

static void fill(void *buf, size_t n, mt_dtype dt, unsigned seed)
{
    mt_tensor t;
    mt_tensor_init(&t, dt, MT_CPU, 1, (int64_t[]){(int64_t)n});
    t.data = buf;
    /* A hash of (seed, i), not rand(): ranks fill their buffers concurrently. */
    for (size_t i = 0; i < n; i++) {
        uint32_t h = (uint32_t)(seed * 2654435761u) ^ (uint32_t)(i * 40503u + 12345u);
        h ^= h >> 15;
        h *= 2246822519u;
        h ^= h >> 13;
        mt_set(&t, (int64_t)i, (h / 4294967296.0 - 0.5) * 8.0);
    }
}

static double get(const void *buf, size_t i, mt_dtype dt)
{
    mt_tensor t;
    mt_tensor_init(&t, dt, MT_CPU, 1, (int64_t[]){(int64_t)i + 1});
    t.data = (void *)buf;
    return mt_get(&t, (int64_t)i);
}

/* a (COUNT): all-reduced in place; b (WORLD * COUNT): the all-gather of the
 * reduce-scatter of another buffer, i.e. that buffer all-reduced; then a
 * broadcast from rank 1 and a barrier. */
static void *collectives(void *arg)
{
    rank_job *j = arg;
    mt_comm *c = j->comm;
    const size_t es = mt_dtype_size(j->dt);
    char *scatter_in = malloc(WORLD * COUNT * es), *scatter_out = malloc(COUNT * es);
    char *gather_out = malloc(WORLD * COUNT * es), bcast[64];
    fill(scatter_in, WORLD * COUNT, j->dt, 100 + c->rank);
    snprintf(bcast, sizeof bcast, "rank %d says hello", c->rank);
    j->ok[0] = c->all_reduce(c, j->a, COUNT, j->dt, j->err, sizeof j->err);
    j->ok[1] = c->reduce_scatter(c, scatter_in, scatter_out, COUNT, j->dt, j->err, sizeof j->err);
    j->ok[2] = c->all_gather(c, scatter_out, gather_out, COUNT, j->dt, j->err, sizeof j->err);
    j->ok[3] = c->broadcast(c, bcast, sizeof bcast, 1, j->err, sizeof j->err);
    j->ok[4] = c->barrier(c, j->err, sizeof j->err) && strcmp(bcast, "rank 1 says hello") == 0;
    j->b = gather_out;
    free(scatter_in);
    free(scatter_out);
    return NULL;
}

static void test_collectives_match_serial_sums(void **state)
{
    (void)state;
    const mt_dtype dts[] = {MT_F32, MT_BF16, MT_F64};
    for (int d = 0; d < 3; d++) {
        const mt_dtype dt = dts[d];
        const size_t es = mt_dtype_size(dt);
        mt_comm *comms[WORLD];
        mt_comm_cpu_group(WORLD, 10.0, comms);
        rank_job jobs[WORLD];
        pthread_t th[WORLD];
        for (int r = 0; r < WORLD; r++) {
            jobs[r] = (rank_job){.comm = comms[r], .dt = dt, .a = malloc(COUNT * es)};
            fill(jobs[r].a, COUNT, dt, 1 + r);
            pthread_create(&th[r], NULL, collectives, &jobs[r]);
        }
        for (int r = 0; r < WORLD; r++)
            pthread_join(th[r], NULL);
        /* The serial reference: sums in rank order, accumulated as the communicator does. */
        char *in[WORLD], *scat[WORLD];
        for (int r = 0; r < WORLD; r++) {
            in[r] = malloc(COUNT * es);
            fill(in[r], COUNT, dt, 1 + r);
            scat[r] = malloc(WORLD * COUNT * es);
            fill(scat[r], WORLD * COUNT, dt, 100 + r);
        }
        mt_tensor ref;
        mt_tensor_init(&ref, dt, MT_CPU, 1, (int64_t[]){WORLD * COUNT});
        ref.data = malloc(WORLD * COUNT * es);
        for (size_t i = 0; i < (size_t)WORLD * COUNT; i++) {
            double s = 0;
            float sf = 0;
            for (int r = 0; r < WORLD; r++) {
                s += get(scat[r], i, dt);
                sf += (float)get(scat[r], i, dt);
            }
            mt_set(&ref, (int64_t)i, dt == MT_F64 ? s : sf);
        }
        for (int r = 0; r < WORLD; r++) {
            for (int k = 0; k < 5; k++)
                if (!jobs[r].ok[k])
                    fail_msg("rank %d, collective %d: %s", r, k, jobs[r].err);
            for (size_t i = 0; i < COUNT; i++) {
                double s = 0;
                float sf = 0;
                for (int q = 0; q < WORLD; q++) {
                    s += get(in[q], i, dt);
                    sf += (float)get(in[q], i, dt);
                }
                mt_tensor one;
                mt_tensor_init(&one, dt, MT_CPU, 1, (int64_t[]){1});
                char cell[8];
                one.data = cell;
                mt_set(&one, 0, dt == MT_F64 ? s : sf);
                assert_memory_equal((char *)jobs[r].a + i * es, cell, es);
            }
            /* all_gather of the reduce_scatter slices is the whole reduced buffer. */
            assert_memory_equal(jobs[r].b, ref.data, WORLD * COUNT * es);
        }
        printf("collectives over %d ranks in %s: all_reduce, reduce_scatter, all_gather, broadcast match the serial "
               "sums bit for bit\n", WORLD, mt_dtype_name(dt));
        for (int r = 0; r < WORLD; r++) {
            free(jobs[r].a);
            free(jobs[r].b);
            free(in[r]);
            free(scat[r]);
            comms[r]->destroy(comms[r]);
        }
        free(ref.data);
    }
}

/* Rank 0 all-reduces 10 elements, rank 1 20: both fail naming the mismatch;
 * with the group failed, the next collective fails at once. */
static void *mismatched(void *arg)
{
    rank_job *j = arg;
    float buf[20] = {0};
    j->ok[0] = j->comm->all_reduce(j->comm, buf, j->comm->rank == 0 ? 10 : 20, MT_F32, j->err, sizeof j->err);
    return NULL;
}

/* Only rank 0 calls: it fails after the timeout. */
static void *lonely(void *arg)
{
    rank_job *j = arg;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    if (j->comm->rank == 0)
        j->ok[0] = j->comm->barrier(j->comm, j->err, sizeof j->err);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    j->seconds = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    return NULL;
}

static void run_group(int world, double timeout, void *(*fn)(void *), rank_job *jobs)
{
    mt_comm *comms[WORLD];
    mt_comm_cpu_group(world, timeout, comms);
    pthread_t th[WORLD];
    for (int r = 0; r < world; r++) {
        jobs[r] = (rank_job){.comm = comms[r]};
        pthread_create(&th[r], NULL, fn, &jobs[r]);
    }
    for (int r = 0; r < world; r++)
        pthread_join(th[r], NULL);
    for (int r = 0; r < world; r++)
        comms[r]->destroy(comms[r]);
}

static void test_failures_are_errors_not_hangs(void **state)
{
    (void)state;
    rank_job jobs[WORLD];
    run_group(2, 10.0, mismatched, jobs);
    for (int r = 0; r < 2; r++) {
        printf("  mismatched, rank %d: %s\n", r, jobs[r].err);
        assert_false(jobs[r].ok[0]);
        assert_non_null(strstr(jobs[r].err, "with count"));
    }
    run_group(2, 0.3, lonely, jobs);
    printf("  missing rank: %s (after %.2f s)\n", jobs[0].err, jobs[0].seconds);
    assert_false(jobs[0].ok[0]);
    assert_non_null(strstr(jobs[0].err, "1 of 2 ranks did not arrive within 0.3 s"));
    assert_true(jobs[0].seconds >= 0.25 && jobs[0].seconds < 5.0);
}

/* ------------------------------------------------------------------------ */
/* Data parallelism on the CPU communicator. */

enum { GLOBAL_BATCH = 4, SEQ = 20, STEPS = 3 };

typedef struct dp_job {
    mt_comm *comm;   /* NULL: one rank on the whole batch */
    bool zero;       /* ZeRO-1 instead of all-reduce and a full AdamW step */
    int first, rows; /* this rank's rows of every global batch */
    mt_model m;
    double losses[STEPS], norms[STEPS]; /* mean loss, norm of the summed gradient */
    char err[256];
    bool ok;
} dp_job;

static void dp_config(mt_model_config *cfg)
{
    mt_model_config_defaults(cfg);
    cfg->d_model = 32;
    cfg->n_layer = 2;
    cfg->vocab_size = 40;
    cfg->d_state = 16;
    cfg->headdim = 16;
    cfg->chunk_size = 16;
    char err[256];
    if (!mt_model_config_finalize(cfg, err, sizeof err))
        fail_msg("%s", err);
}

/* Global batch row b at step s: a token sequence of its own. */
static int token(int step, int b, int t)
{
    return (7 * step + 13 * b + 5 * t + (t * t) % 11) % 40;
}

static void *dp_train(void *arg)
{
    dp_job *j = arg;
    mt_model_config cfg;
    dp_config(&cfg);
    mt_backend *cpu = mt_backend_cpu_create();
    mt_model_build(&j->m, &cfg, MT_CPU, MT_F32);
    mt_model_init(&j->m, cpu, 7);
    mt_adamw opt;
    mt_adamw_config oc = {0.9, 0.95, 1e-8, 0.1, false};
    mt_adamw_init(&opt, &j->m.params, &oc);
    mt_zero1 z;
    if (j->zero)
        mt_zero1_init(&z, j->comm, &j->m.params);
    mt_tensor *ids = mt_tensor_new(MT_CPU, MT_I32, 2, (int64_t[]){j->rows, SEQ});
    mt_tensor *targets = mt_tensor_new(MT_CPU, MT_I32, 1, (int64_t[]){j->rows * SEQ});
    mt_ctx c;
    mt_ctx_init(&c, cpu, 0);
    const int world = j->comm ? j->comm->world : 1;
    j->ok = true;
    for (int s = 0; j->ok && s < STEPS; s++) {
        for (int b = 0; b < j->rows; b++)
            for (int t = 0; t < SEQ; t++) {
                mt_set(ids, b * SEQ + t, token(s, j->first + b, t));
                mt_set(targets, b * SEQ + t, token(s, j->first + b, t + 1));
            }
        mt_tensor *loss = mt_cross_entropy(&c, mt_model_logits(&c, &j->m, ids, NULL, MT_F32), targets, TL_IGNORE);
        float l = (float)mt_get(loss, 0);
        mt_backward(&c, loss);
        mt_ctx_end_step(&c);
        /* Each rank's loss is the mean over its rows; equal row counts make
         * the mean of the rank means the global mean, so the summed
         * gradients are scaled by 1 / world inside the AdamW pass. */
        double norm;
        if (j->comm)
            j->ok = j->comm->all_reduce(j->comm, &l, 1, MT_F32, j->err, sizeof j->err) &&
                    (j->zero ? mt_zero1_reduce_grads(&z, cpu, &j->m.params, &norm, j->err, sizeof j->err)
                             : j->comm->all_reduce(j->comm, j->m.params.grads, j->m.params.flat_size, MT_F32,
                                                   j->err, sizeof j->err));
        j->losses[s] = l / world;
        j->norms[s] = j->zero ? norm : mt_grad_norm(cpu, &j->m.params);
        if (j->zero)
            j->ok = j->ok && mt_zero1_step(&z, &opt, cpu, &j->m.params, 1e-2, 1.0 / world, j->err, sizeof j->err);
        else
            mt_adamw_step(&opt, cpu, &j->m.params, 1e-2, 1.0 / world);
        mt_params_zero_grad(&j->m.params);
    }
    if (j->zero) {
        /* Each rank holds only its shard's moments; gathered, they are plain
         * data parallelism's. */
        j->ok = j->ok && mt_zero1_gather_moments(&z, &j->m.params, j->err, sizeof j->err);
        mt_zero1_release(&z, &j->m.params);
    }
    mt_ctx_release(&c);
    mt_tensor_free(ids);
    mt_tensor_free(targets);
    mt_adamw_release(&opt);
    cpu->destroy(cpu);
    return NULL;
}

/* Two ranks on halves of every global batch, with or without ZeRO-1. */
static void run_two_ranks(bool zero, dp_job *ranks, mt_comm **comms)
{
    mt_comm_cpu_group(2, 60.0, comms);
    pthread_t th[2];
    for (int r = 0; r < 2; r++) {
        ranks[r] = (dp_job){.comm = comms[r], .zero = zero, .first = r * GLOBAL_BATCH / 2, .rows = GLOBAL_BATCH / 2};
        pthread_create(&th[r], NULL, dp_train, &ranks[r]);
    }
    for (int r = 0; r < 2; r++)
        pthread_join(th[r], NULL);
    for (int r = 0; r < 2; r++)
        if (!ranks[r].ok)
            fail_msg("rank %d: %s", r, ranks[r].err);
}

static void test_data_parallel_matches_one_rank(void **state)
{
    (void)state;
    dp_job one = {.first = 0, .rows = GLOBAL_BATCH}, ranks[2], zero[2];
    dp_train(&one);
    mt_comm *comms[2], *zero_comms[2];
    run_two_ranks(false, ranks, comms);
    run_two_ranks(true, zero, zero_comms);
    /* The ranks agree bit for bit: they apply the same reduced gradients. */
    assert_memory_equal(ranks[0].m.params.values, ranks[1].m.params.values,
                        ranks[0].m.params.flat_size * sizeof(float));
    double num = 0, den = 0, loss_err = 0;
    const float *a = one.m.params.values, *b = ranks[0].m.params.values;
    for (size_t i = 0; i < one.m.params.flat_size; i++) {
        num += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
        den += (double)a[i] * a[i];
    }
    for (int s = 0; s < STEPS; s++)
        loss_err = fmax(loss_err, fabs(one.losses[s] - ranks[0].losses[s]) / one.losses[s]);
    printf("data parallel, 2 ranks vs 1 on a global batch of %d: losses %.6f %.6f %.6f vs %.6f %.6f %.6f "
           "(max rel diff %.1e); parameters after %d AdamW steps rel diff %.1e\n", GLOBAL_BATCH, ranks[0].losses[0],
           ranks[0].losses[1], ranks[0].losses[2], one.losses[0], one.losses[1], one.losses[2], loss_err, STEPS,
           sqrt(num / den));
    /* fp32 rounding: the two halves' gradients are summed in another order
     * than the whole batch's. */
    assert_true(loss_err < 1e-5);
    assert_true(sqrt(num / den) < 1e-5);
    /* ZeRO-1 reduces in the same rank order and updates each element once:
     * the same bits as plain data parallelism, on both ranks. */
    for (int r = 0; r < 2; r++) {
        assert_memory_equal(zero[r].m.params.values, ranks[0].m.params.values,
                            ranks[0].m.params.flat_size * sizeof(float));
        assert_memory_equal(zero[r].m.params.adam_m, ranks[0].m.params.adam_m,
                            ranks[0].m.params.flat_size * sizeof(float));
        assert_memory_equal(zero[r].m.params.adam_v, ranks[0].m.params.adam_v,
                            ranks[0].m.params.flat_size * sizeof(float));
    }
    /* Its gradient norm adds the shards' sums of squares in another order. */
    for (int st = 0; st < STEPS; st++)
        assert_true(fabs(zero[0].norms[st] - ranks[0].norms[st]) <= 1e-12 * ranks[0].norms[st]);
    printf("ZeRO-1 over 2 ranks: parameters bit for bit those of plain data parallelism (%zu elements, shards of "
           "%zu and a tail of %zu)\n", ranks[0].m.params.flat_size,
           ranks[0].m.params.flat_size / (2 * MT_PARAM_ALIGN) * MT_PARAM_ALIGN,
           ranks[0].m.params.flat_size % (2 * MT_PARAM_ALIGN));
    mt_model_release(&one.m);
    for (int r = 0; r < 2; r++) {
        mt_model_release(&ranks[r].m);
        mt_model_release(&zero[r].m);
        comms[r]->destroy(comms[r]);
        zero_comms[r]->destroy(zero_comms[r]);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_collectives_match_serial_sums),
        cmocka_unit_test(test_failures_are_errors_not_hangs),
        cmocka_unit_test(test_data_parallel_matches_one_rank),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
