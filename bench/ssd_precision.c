/* Our CUDA SSD scan on inputs from a file, for bench/ssd_precision.py,
 * which measures its error and the reference's against a float64 oracle on
 * the same inputs.
 *
 *   ssd_precision IN.safetensors OUT.safetensors
 *
 * IN holds x (B, L, H*P), dt (B, L, H), Bm and Cm (B, L, G*N), dy (B, L, H*P)
 * and optionally z (B, L, H*P), all bf16; A_log, dt_bias, D (H) f32; its
 * metadata gives headdim, ngroups and chunk_size. OUT receives y and the
 * gradients of every input under dy (dx, ddt, dBm, dCm, dz, dA_log,
 * ddt_bias, dD), all f32. */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/ops.h"
#include "core/device.h"
#include "core/error.h"
#include "io/safetensors.h"

enum { N_IN = 10 };
static const char *const in_names[N_IN] = {"x", "dt", "Bm", "Cm", "dy", "z", "A_log", "dt_bias", "D", NULL};

static int meta_int(const mt_st_file *f, const char *key)
{
    const json_t *meta = mt_safetensors_metadata(f);
    const char *s = meta ? json_string_value(json_object_get(meta, key)) : NULL;
    char *end;
    long v = s ? strtol(s, &end, 10) : 0;
    if (!s || *end || v < 1 || v > 1 << 20)
        mt_fatal("ssd_precision: %s: metadata \"%s\" is missing or not a positive integer",
                 mt_safetensors_path(f), key);
    return (int)v;
}

/* The file's tensor `name` on the GPU (NULL when absent and optional). */
static mt_tensor *load(const mt_st_file *f, const char *name, bool optional)
{
    char err[512];
    const mt_st_tensor *t = mt_safetensors_find(f, name);
    if (!t) {
        if (optional)
            return NULL;
        mt_fatal("ssd_precision: %s: no tensor \"%s\"", mt_safetensors_path(f), name);
    }
    mt_dtype dt;
    if (t->dtype == MT_ST_BF16)
        dt = MT_BF16;
    else if (t->dtype == MT_ST_F32)
        dt = MT_F32;
    else
        mt_fatal("ssd_precision: %s: \"%s\" is %s, not BF16 or F32", mt_safetensors_path(f), name,
                 mt_st_dtype_name(t->dtype));
    mt_tensor *host = mt_tensor_new(MT_CPU, dt, t->ndim, t->shape);
    if (!mt_safetensors_read(f, t, host->data, mt_nbytes(host), err, sizeof err))
        mt_fatal("ssd_precision: %s", err);
    mt_tensor *dev = mt_tensor_new(MT_CUDA, dt, t->ndim, t->shape);
    mt_tensor_copy(dev, host);
    mt_tensor_free(host);
    return dev;
}

/* t as f32 on the host, for the output file. */
static float *to_host_f32(const mt_tensor *t)
{
    mt_tensor *host = mt_tensor_new(MT_CPU, t->dtype, t->ndim, t->shape);
    mt_tensor_copy(host, t);
    int64_t n = mt_numel(t);
    float *out = malloc((size_t)n * sizeof(float));
    if (!out)
        mt_fatal("ssd_precision: out of host memory");
    for (int64_t i = 0; i < n; i++)
        out[i] = (float)mt_get(host, i);
    mt_tensor_free(host);
    return out;
}

int main(int argc, char **argv)
{
    char err[512];
    if (argc != 3) {
        fprintf(stderr, "usage: ssd_precision IN.safetensors OUT.safetensors\n");
        return 2;
    }
    if (mt_cuda_device_count() == 0) {
        printf("ssd_precision: no CUDA device present\n");
        return 77;
    }
    mt_backend *be = mt_backend_cuda_create(0, err, sizeof err);
    if (!be)
        mt_fatal("ssd_precision: %s", err);
    mt_st_file *f = mt_safetensors_open(argv[1], err, sizeof err);
    if (!f)
        mt_fatal("ssd_precision: %s", err);
    mt_tensor *in[N_IN] = {0};
    for (int i = 0; in_names[i]; i++)
        in[i] = load(f, in_names[i], strcmp(in_names[i], "z") == 0);
    mt_ssd_config sc = {meta_int(f, "headdim"), meta_int(f, "ngroups"), meta_int(f, "chunk_size"), 0, INFINITY};
    mt_safetensors_close(f);
    mt_tensor *x = in[0], *dt = in[1], *bm = in[2], *cm = in[3], *dy = in[4], *z = in[5];
    mt_tensor *A_log = in[6], *dt_bias = in[7], *D = in[8];
    mt_tensor *leaves[] = {x, dt, bm, cm, z, A_log, dt_bias, D};
    const char *grad_names[] = {"dx", "ddt", "dBm", "dCm", "dz", "dA_log", "ddt_bias", "dD"};
    for (int i = 0; i < 8; i++)
        if (leaves[i])
            leaves[i]->requires_grad = true;

    mt_ctx c;
    mt_ctx_init(&c, be, (size_t)8 << 30);
    c.grad_enabled = true;
    mt_tensor *y = mt_ssd(&c, x, dt, A_log, bm, cm, D, z, dt_bias, NULL, NULL, &sc, NULL);
    if (!y)
        mt_fatal("ssd_precision: %s", mt_ctx_error(&c));
    float *host[9];
    mt_st_entry entries[9];
    int n = 0;
    host[n] = to_host_f32(y);
    entries[n++] = (mt_st_entry){"y", MT_ST_F32, y->ndim, y->shape, host[0]};
    mt_backward_seeded(&c, 1, &y, &dy);
    if (mt_ctx_error(&c))
        mt_fatal("ssd_precision: %s", mt_ctx_error(&c));
    for (int i = 0; i < 8; i++) {
        if (!leaves[i])
            continue;
        if (!leaves[i]->grad)
            mt_fatal("ssd_precision: no gradient reached %s", grad_names[i]);
        host[n] = to_host_f32(leaves[i]->grad);
        entries[n] = (mt_st_entry){grad_names[i], MT_ST_F32, leaves[i]->ndim, leaves[i]->shape, host[n]};
        n++;
    }
    if (!mt_safetensors_write(argv[2], entries, n, NULL, err, sizeof err))
        mt_fatal("ssd_precision: %s", err);
    for (int i = 0; i < n; i++)
        free(host[i]);
    mt_ctx_release(&c);
    for (int i = 0; i < N_IN; i++)
        if (in[i])
            mt_tensor_free(in[i]);
    be->destroy(be);
    return 0;
}
