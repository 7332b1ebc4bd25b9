#include "testlib_train.h"

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
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
