/* Launch by environment: the variables torchrun-style launchers and mpirun
 * set are read (and bad ones named), and ranks (threads here, on localhost)
 * meet over TCP: every rank gets rank 0's blob; a configuration that differs
 * and a rank that never comes are errors on every rank within the timeout. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "dist/rendezvous.h"

static void clear_env(void)
{
    static const char *const names[] = {"RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT",
                                        "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        unsetenv(names[i]);
}

static void test_environment(void **state)
{
    (void)state;
    char err[256];
    mt_rendezvous r;
    clear_env();
    assert_true(mt_rendezvous_from_env(&r, err, sizeof err));
    assert_int_equal(r.world, 1);
    setenv("WORLD_SIZE", "4", 1);
    setenv("RANK", "2", 1);
    setenv("LOCAL_RANK", "0", 1);
    setenv("MASTER_ADDR", "node-a", 1);
    setenv("MASTER_PORT", "29500", 1);
    assert_true(mt_rendezvous_from_env(&r, err, sizeof err));
    assert_int_equal(r.rank, 2);
    assert_int_equal(r.world, 4);
    assert_int_equal(r.local_rank, 0);
    assert_string_equal(r.addr, "node-a");
    assert_int_equal(r.port, 29500);
    struct { const char *name, *value, *want; } bad[] = {
        {"RANK", "two", "RANK=\"two\" is not a non-negative integer"},
        {"RANK", "4", "RANK (or OMPI_COMM_WORLD_RANK) must be set in [0, 4)"},
        {"MASTER_PORT", "70000", "MASTER_PORT must be a TCP port"},
        {"MASTER_ADDR", "", "MASTER_ADDR must name rank 0's host"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        const char *old = getenv(bad[i].name);
        char keep[64];
        snprintf(keep, sizeof keep, "%s", old ? old : "");
        setenv(bad[i].name, bad[i].value, 1);
        assert_false(mt_rendezvous_from_env(&r, err, sizeof err));
        printf("  %s=%s: %s\n", bad[i].name, bad[i].value, err);
        assert_non_null(strstr(err, bad[i].want));
        setenv(bad[i].name, keep, 1);
    }
    /* mpirun's variables when the launcher's are absent. */
    clear_env();
    setenv("OMPI_COMM_WORLD_SIZE", "2", 1);
    setenv("OMPI_COMM_WORLD_RANK", "1", 1);
    setenv("OMPI_COMM_WORLD_LOCAL_RANK", "1", 1);
    setenv("MASTER_ADDR", "127.0.0.1", 1);
    setenv("MASTER_PORT", "29501", 1);
    assert_true(mt_rendezvous_from_env(&r, err, sizeof err));
    assert_int_equal(r.rank, 1);
    assert_int_equal(r.world, 2);
    assert_int_equal(r.local_rank, 1);
    clear_env();
}

typedef struct job {
    mt_rendezvous r;
    uint64_t hash;
    double timeout;
    char blob[128];
    bool ok;
    char err[256];
    double seconds;
} job;

static void *meet(void *arg)
{
    job *j = arg;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    j->ok = mt_rendezvous_exchange(&j->r, j->hash, j->blob, sizeof j->blob, j->timeout, j->err, sizeof j->err);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    j->seconds = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    return NULL;
}

/* world ranks of which the first `present` run; rank differ (if >= 0) has
 * another configuration hash. */
static void run(int world, int present, int differ, double timeout, job *jobs)
{
    const int port = mt_rendezvous_free_port();
    pthread_t th[8];
    for (int i = 0; i < present; i++) {
        jobs[i] = (job){.r = {.rank = i, .world = world, .local_rank = i, .port = port},
                        .hash = i == differ ? 99 : 42, .timeout = timeout};
        snprintf(jobs[i].r.addr, sizeof jobs[i].r.addr, "localhost");
        if (i == 0)
            snprintf(jobs[i].blob, sizeof jobs[i].blob, "the communicator's id, from rank 0");
        pthread_create(&th[i], NULL, meet, &jobs[i]);
    }
    for (int i = 0; i < present; i++)
        pthread_join(th[i], NULL);
}

static void test_exchange(void **state)
{
    (void)state;
    job jobs[8];
    run(4, 4, -1, 10.0, jobs);
    for (int i = 0; i < 4; i++) {
        if (!jobs[i].ok)
            fail_msg("rank %d: %s", i, jobs[i].err);
        assert_string_equal(jobs[i].blob, "the communicator's id, from rank 0");
    }
    printf("rendezvous: 4 ranks got rank 0's blob in %.3f s\n", jobs[0].seconds);

    run(3, 3, 2, 10.0, jobs);
    for (int i = 0; i < 3; i++) {
        printf("  another config on rank 2, rank %d: %s\n", i, jobs[i].err);
        assert_false(jobs[i].ok);
        assert_non_null(strstr(jobs[i].err, "rank 2 runs another configuration than rank 0"));
    }

    run(3, 2, -1, 0.5, jobs);
    for (int i = 0; i < 2; i++) {
        printf("  rank 2 missing, rank %d after %.2f s: %s\n", i, jobs[i].seconds, jobs[i].err);
        assert_false(jobs[i].ok);
        assert_true(jobs[i].seconds < 5.0);
    }
    assert_non_null(strstr(jobs[0].err, "2 of 3 ranks reached rank 0"));
    assert_non_null(strstr(jobs[1].err, "rank 0 gave up"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_environment),
        cmocka_unit_test(test_exchange),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
