#include "testlib_train.h"

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

#include "io/safetensors.h"
#include "testlib.h"

void tl_tiny_config(mt_train_config *c, const char *run, int n_sets, const char *const *sets)
{
    char err[1024], path[512];
    mt_train_config_defaults(c);
    snprintf(path, sizeof path, "%s/configs/tiny.ini", MT_SOURCE_DIR);
    if (!mt_train_config_load(c, path, err, sizeof err))
        fail_msg("%s", err);
    snprintf(c->log.out_dir, sizeof c->log.out_dir, "%s/%s", tl_temp_dir(), run);
    for (int i = 0; i < n_sets; i++)
        if (!mt_train_config_set(c, sets[i], err, sizeof err))
            fail_msg("%s", err);
    if (!mt_train_config_finalize(c, err, sizeof err))
        fail_msg("%s", err);
}

bool tl_same_file(const char *a, const char *b)
{
    FILE *fa = fopen(a, "rb"), *fb = fopen(b, "rb");
    bool same = fa && fb;
    while (same) {
        int ca = fgetc(fa), cb = fgetc(fb);
        same = ca == cb;
        if (ca == EOF || cb == EOF)
            break;
    }
    if (fa)
        fclose(fa);
    if (fb)
        fclose(fb);
    return same;
}

double tl_model_difference(const char *a_path, const char *b_path)
{
    char err[1024];
    mt_st_file *a = mt_safetensors_open(a_path, err, sizeof err);
    if (!a)
        fail_msg("%s", err);
    mt_st_file *b = mt_safetensors_open(b_path, err, sizeof err);
    if (!b)
        fail_msg("%s", err);
    assert_int_equal(mt_safetensors_count(a), mt_safetensors_count(b));
    double diff = 0, norm = 0;
    for (int i = 0; i < mt_safetensors_count(a); i++) {
        const mt_st_tensor *ta = mt_safetensors_at(a, i), *tb = mt_safetensors_find(b, ta->name);
        if (!tb)
            fail_msg("%s has no tensor %s", b_path, ta->name);
        size_t bytes = ta->end - ta->begin;
        float *x = malloc(bytes), *y = malloc(bytes);
        assert_true(mt_safetensors_read(a, ta, x, bytes, err, sizeof err));
        assert_true(mt_safetensors_read(b, tb, y, bytes, err, sizeof err));
        for (size_t k = 0; k < bytes / sizeof(float); k++) {
            diff += ((double)x[k] - y[k]) * ((double)x[k] - y[k]);
            norm += (double)x[k] * x[k];
        }
        free(x);
        free(y);
    }
    mt_safetensors_close(a);
    mt_safetensors_close(b);
    return sqrt(diff / norm);
}

static void *run_rank(void *arg)
{
    tl_rank_run *r = arg;
    r->ok = mt_train(r->cfg, &r->opt, &r->res, r->err, sizeof r->err);
    return NULL;
}

bool tl_train_grid(const mt_train_config *cfg, int dp, int tp, const mt_train_options *base, bool gpu,
                   tl_rank_run *runs)
{
    const int world = dp * tp;
    assert_true(world <= TL_MAX_RANKS);
    mt_comm *dp_comms[TL_MAX_RANKS] = {0}, *tp_comms[TL_MAX_RANKS] = {0}, *group[TL_MAX_RANKS];
    for (int t = 0; dp > 1 && t < tp; t++) {
        mt_comm_cpu_group(dp, 120.0, group);
        for (int d = 0; d < dp; d++)
            dp_comms[d * tp + t] = group[d];
    }
    for (int d = 0; tp > 1 && d < dp; d++) {
        mt_comm_cpu_group(tp, 120.0, group);
        for (int t = 0; t < tp; t++)
            tp_comms[d * tp + t] = group[t];
    }
    mt_backend *be[TL_MAX_RANKS] = {0};
    pthread_t th[TL_MAX_RANKS];
    for (int r = 0; r < world; r++) {
        char why[256];
        if (gpu && !(be[r] = mt_backend_cuda_create(0, why, sizeof why)))
            fail_msg("rank %d: %s", r, why);
        runs[r] = (tl_rank_run){.cfg = cfg, .opt = *base};
        runs[r].opt.dp = dp_comms[r];
        runs[r].opt.tp = tp_comms[r];
        runs[r].opt.backend = be[r];
        pthread_create(&th[r], NULL, run_rank, &runs[r]);
    }
    bool ok = true;
    for (int r = 0; r < world; r++) {
        pthread_join(th[r], NULL);
        ok = ok && runs[r].ok;
    }
    for (int r = 0; r < world; r++) {
        if (dp_comms[r])
            dp_comms[r]->destroy(dp_comms[r]);
        if (tp_comms[r])
            tp_comms[r]->destroy(tp_comms[r]);
        if (be[r])
            be[r]->destroy(be[r]);
    }
    return ok;
}

void tl_train_grid_or_fail(const mt_train_config *cfg, int dp, int tp, const mt_train_options *base, bool gpu)
{
    tl_rank_run runs[TL_MAX_RANKS];
    if (!tl_train_grid(cfg, dp, tp, base, gpu, runs))
        for (int r = 0; r < dp * tp; r++)
            if (!runs[r].ok)
                fail_msg("rank %d of dp %d x tp %d: %s", r, dp, tp, runs[r].err);
}

int tl_read_losses(const char *out_dir, double *loss, int max)
{
    char path[1100], line[4096];
    snprintf(path, sizeof path, "%s/metrics.jsonl", out_dir);
    FILE *f = fopen(path, "r");
    if (!f)
        fail_msg("%s: cannot read", path);
    int n = 0;
    while (n < max && fgets(line, sizeof line, f)) {
        const char *p = strstr(line, "\"loss\":");
        if (p && strstr(line, "\"grad_norm\""))
            loss[n++] = strtod(p + 7, NULL);
    }
    fclose(f);
    return n;
}

double tl_loss_difference(const mt_train_config *a, const mt_train_config *b, int n)
{
    double la[64], lb[64];
    assert_true(n <= 64);
    assert_int_equal(tl_read_losses(a->log.out_dir, la, 64), n);
    assert_int_equal(tl_read_losses(b->log.out_dir, lb, 64), n);
    double worst = 0;
    for (int i = 0; i < n; i++)
        worst = fmax(worst, fabs(la[i] - lb[i]) / fabs(la[i]));
    return worst;
}
