#include "train/evaluate.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/ops.h"
#include "core/device.h"
#include "core/error.h"
#include "data/loader.h"
#include "kernels/backend.h"
#include "layers/model.h"
#include "train/pretrained.h"

enum { IGNORE_TARGET = -100 };

int mt_split_paths(char *list, const char **paths)
{
    int n = 0;
    char *save = NULL;
    for (char *tok = strtok_r(list, " ,\t", &save); tok && n < MT_MAX_SHARD_PATHS; tok = strtok_r(NULL, " ,\t", &save))
        paths[n++] = tok;
    return n;
}

/* Everything one evaluation holds, released by release(). */
typedef struct eval_state {
    mt_backend *be;
    mt_device dev;
    mt_dtype compute;
    mt_model model;
    bool model_built;
    mt_loader *loader;
    mt_tensor *ids, *seq_idx, *targets;
    int32_t *host_targets;
    int64_t *best;
} eval_state;

static void release(eval_state *s)
{
    mt_loader_close(s->loader);
    if (s->ids) {
        mt_tensor_free(s->ids);
        mt_tensor_free(s->seq_idx);
        mt_tensor_free(s->targets);
    }
    free(s->host_targets);
    free(s->best);
    if (s->model_built)
        mt_model_release(&s->model);
    if (s->be)
        s->be->destroy(s->be);
}

bool mt_open_run_backend(mt_device_choice device, mt_precision precision, mt_backend **be, mt_device *dev,
                         mt_dtype *compute, char *err, size_t errlen)
{
    const bool use_cuda = device == MT_DEVICE_CUDA || (device == MT_DEVICE_AUTO && mt_cuda_device_count() > 0);
    if (!use_cuda) {
        *be = mt_backend_cpu_create();
        *dev = MT_CPU;
        *compute = MT_F32; /* the CPU backend is the fp32 reference, as in training */
        return true;
    }
    char why[256];
    if (!(*be = mt_backend_cuda_create(0, why, sizeof why)))
        return mt_errorf(err, errlen, "--device %s: no CUDA backend: %s", device == MT_DEVICE_CUDA ? "cuda" : "auto",
                         why);
    *dev = MT_CUDA;
    *compute = precision == MT_PRECISION_BF16 ? MT_BF16 : MT_F32;
    return true;
}

/* The model with its weights, the loader over the shards in order, and the
 * batch buffers. */
static bool setup(eval_state *s, const mt_eval_config *cfg, char *err, size_t errlen)
{
    if (cfg->seq_len <= 0 || cfg->batch_size <= 0)
        return mt_errorf(err, errlen, "--seq-len (%d) and --batch-size (%d) must be positive", cfg->seq_len,
                         cfg->batch_size);
    mt_model_config mc;
    if (!mt_pretrained_config(cfg->model_dir, &mc, err, errlen) || !mt_open_run_backend(cfg->device, cfg->precision, &s->be, &s->dev, &s->compute, err, errlen))
        return false;
    mt_model_build(&s->model, &mc, s->dev, MT_F32);
    s->model_built = true;
    if (!mt_pretrained_load(cfg->model_dir, &s->model, err, errlen))
        return false;

    char list[4096]; /* the loader reads the paths only while opening */
    const char *paths[MT_MAX_SHARD_PATHS];
    if (snprintf(list, sizeof list, "%s", cfg->data) >= (int)sizeof list)
        return mt_errorf(err, errlen, "--data: the list of shards is longer than %zu characters", sizeof list - 1);
    const int n_paths = mt_split_paths(list, paths);
    if (n_paths == 0)
        return mt_errorf(err, errlen, "--data: no shard given");
    /* The loader refuses shards made for another vocabulary, and token ids
     * outside it while reading. */
    const mt_loader_config lc = {.paths = paths, .n_paths = n_paths, .seq_len = cfg->seq_len,
                                 .batch_size = cfg->batch_size, .rank = 0, .world = 1,
                                 .vocab_size = mc.vocab_size};
    if (!(s->loader = mt_loader_open(&lc, err, errlen)))
        return false;

    const int64_t shape[2] = {cfg->batch_size, cfg->seq_len}, flat[1] = {shape[0] * shape[1]};
    s->ids = mt_tensor_new(s->dev, MT_I32, 2, shape);
    s->seq_idx = mt_tensor_new(s->dev, MT_I32, 2, shape);
    s->targets = mt_tensor_new(s->dev, MT_I32, 1, flat);
    s->host_targets = malloc((size_t)flat[0] * sizeof *s->host_targets);
    s->best = malloc((size_t)flat[0] * sizeof *s->best);
    if (!s->host_targets || !s->best)
        return mt_errorf(err, errlen, "out of host memory for a batch of %lld tokens", (long long)flat[0]);
    return true;
}

/* Copies a batch to the device; targets outside the answer mask are
 * ignored when the loss is on answers only (as the trainer does). */
static void batch_to_device(eval_state *s, const mt_batch *bt, bool answers)
{
    const int64_t n = (int64_t)bt->batch_size * bt->seq_len;
    for (int64_t i = 0; i < n; i++)
        s->host_targets[i] = (!answers || bt->loss_mask[i]) ? bt->targets[i] : IGNORE_TARGET;
    mt_device_copy(s->dev, s->ids->data, MT_CPU, bt->inputs, (size_t)n * sizeof(int32_t));
    mt_device_copy(s->dev, s->targets->data, MT_CPU, s->host_targets, (size_t)n * sizeof(int32_t));
    mt_device_copy(s->dev, s->seq_idx->data, MT_CPU, bt->seq_idx, (size_t)n * sizeof(int32_t));
}

/* Scores total batches; the loss is the mean of their mean losses, as the
 * trainer's evaluation averages them. */
static bool run_batches(eval_state *s, const mt_eval_config *cfg, int64_t total, mt_eval_result *res, char *err,
                        size_t errlen)
{
    const bool answers = cfg->loss_on == MT_LOSS_ON_ANSWERS;
    const int64_t n = (int64_t)cfg->batch_size * cfg->seq_len;
    double loss_sum = 0;
    int64_t right = 0;
    bool ok = true;
    mt_ctx c;
    mt_ctx_init(&c, s->be, 0);
    c.grad_enabled = false;
    for (int64_t b = 0; ok && b < total; b++) {
        const mt_batch *bt = mt_loader_next(s->loader, err, errlen);
        if (!(ok = bt != NULL))
            break;
        batch_to_device(s, bt, answers);
        mt_tensor *logits = mt_model_logits(&c, &s->model, s->ids, s->seq_idx, s->compute);
        loss_sum += mt_device_scalar(mt_model_loss(&c, &s->model, logits, s->targets, IGNORE_TARGET));
        res->batches++;
        if (answers && !(ok = mt_model_argmax(&s->model, logits, s->best, err, errlen)))
            break;
        for (int64_t i = 0; answers && i < n; i++) {
            if (s->host_targets[i] == IGNORE_TARGET)
                continue;
            right += s->best[i] == s->host_targets[i];
            res->scored++;
        }
        mt_ctx_end_step(&c);
        if (cfg->progress)
            cfg->progress(cfg->user, res->batches, total, loss_sum / (double)res->batches);
    }
    mt_ctx_release(&c);
    res->loss = res->batches > 0 ? loss_sum / (double)res->batches : NAN;
    res->perplexity = exp(res->loss);
    res->accuracy = res->scored > 0 ? (double)right / (double)res->scored : NAN;
    return ok;
}

bool mt_evaluate(const mt_eval_config *cfg, mt_eval_result *res, char *err, size_t errlen)
{
    *res = (mt_eval_result){.loss = NAN, .perplexity = NAN, .accuracy = NAN};
    eval_state s = {0};
    bool ok = setup(&s, cfg, err, errlen);
    if (ok) {
        res->cuda = s.dev == MT_CUDA;
        res->samples = mt_loader_set_size(s.loader);
        /* Whole batches only: a last partial one would wrap around to the
         * first samples and count them twice. */
        int64_t total = res->samples / cfg->batch_size;
        if (cfg->max_batches > 0 && cfg->max_batches < total)
            total = cfg->max_batches;
        if (total == 0)
            ok = mt_errorf(err, errlen, "%s: %lld samples of %d tokens, fewer than one batch of %d", cfg->data,
                           (long long)res->samples, cfg->seq_len + 1, cfg->batch_size);
        ok = ok && run_batches(&s, cfg, total, res, err, errlen);
    }
    release(&s);
    return ok;
}
