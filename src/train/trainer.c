#include "train/trainer.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "autograd/ops.h"
#include "autograd/profile.h"
#include "core/clock.h"
#include "core/device.h"
#include "core/error.h"
#include "data/loader.h"
#include "data/synthetic.h"
#include "dist/tp.h"
#include "layers/model.h"
#include "optim/adamw.h"
#include "optim/schedule.h"
#include "train/checkpoint.h"
#include "train/dist_train.h"
#include "train/evaluate.h"
#include "train/plot.h"
#include "train/run.h"
#include "train/sample.h"

enum { IGNORE_TARGET = -100 };

/* The dense bf16 GEMM rate measured on an H100 (shared/reference/peer-baseline.md):
 * MFU = 6 N tokens/s over it, as the reference's figures are. */
#define GEMM_PEAK_FLOPS 798e12

static volatile sig_atomic_t stop_requested;

static void on_stop_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
}

/* A run's signals. SIGINT and SIGTERM ask for a stop after the step; the
 * handler stays installed (no SA_RESETHAND, unlike signal()), so a second
 * one while the checkpoint is written changes nothing. SIGXFSZ is ignored:
 * a write past the file-size limit then fails with a message naming the
 * file, and the previous checkpoint stays, instead of the process dying
 * mid-save. The ranks of one process (threads, in the tests) share them:
 * the first to start installs them, the last to end restores the old ones. */
static const int run_signals[3] = {SIGINT, SIGTERM, SIGXFSZ};
static struct sigaction saved_actions[3];
static int signal_users;
static pthread_mutex_t signals_lock = PTHREAD_MUTEX_INITIALIZER;

static void restore_signals_locked(int n)
{
    for (int i = 0; i < n; i++)
        if (sigaction(run_signals[i], &saved_actions[i], NULL) != 0)
            fprintf(stderr, "mamba-train: warning: cannot restore the handler of signal %d: %s\n", run_signals[i],
                    strerror(errno));
}

static bool catch_signals(char *err, size_t errlen)
{
    bool ok = true;
    pthread_mutex_lock(&signals_lock);
    if (signal_users == 0) {
        stop_requested = 0;
        struct sigaction stop = {.sa_handler = on_stop_signal, .sa_flags = SA_RESTART};
        struct sigaction ignore = {.sa_handler = SIG_IGN};
        sigemptyset(&stop.sa_mask);
        sigemptyset(&ignore.sa_mask);
        for (int i = 0; ok && i < 3; i++) {
            if (sigaction(run_signals[i], run_signals[i] == SIGXFSZ ? &ignore : &stop, &saved_actions[i]) != 0) {
                ok = mt_errorf(err, errlen, "cannot set the handler of signal %d: %s", run_signals[i],
                               strerror(errno));
                restore_signals_locked(i);
            }
        }
    }
    signal_users += ok;
    pthread_mutex_unlock(&signals_lock);
    return ok;
}

static void restore_signals(void)
{
    pthread_mutex_lock(&signals_lock);
    if (--signal_users == 0)
        restore_signals_locked(3);
    pthread_mutex_unlock(&signals_lock);
}

/* mkdir -p */
static bool make_dirs(const char *path, char *err, size_t errlen)
{
    char buf[1024];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1;; p++) {
        bool end = *p == '\0';
        if (*p == '/' || end) {
            *p = '\0';
            if (mkdir(buf, 0777) != 0 && errno != EEXIST)
                return mt_errorf(err, errlen, "%s: cannot create the directory: %s", buf, strerror(errno));
            if (end)
                break;
            *p = '/';
        }
    }
    return true;
}


/* Generates the synthetic task's shards (train and a separate val) into
 * out_dir/data; a later run (or a resume) reuses them while they were made
 * with the same parameters, and remakes them otherwise. */
static bool synthetic_shards(const mt_train_config *cfg, bool write, char *train_path, char *val_path, size_t len,
                             char *err, size_t errlen)
{
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/data", cfg->log.out_dir);
    if (!make_dirs(dir, err, errlen))
        return false;
    mt_synth_config sc = {.task = cfg->data.synthetic == MT_SYNTHETIC_INDUCTION ? MT_TASK_INDUCTION
                                                                               : MT_TASK_SELECTIVE_COPY,
                          .vocab_size = cfg->model.vocab_size,
                          .seq_len = cfg->data.seq_len,
                          .n_memorize = cfg->data.synthetic_memorize,
                          .seed = (uint64_t)cfg->train.seed};
    snprintf(train_path, len, "%.900s/%s-train.h5", dir, mt_synth_task_name(sc.task));
    snprintf(val_path, len, "%.900s/%s-val.h5", dir, mt_synth_task_name(sc.task));
    if (!mt_synth_validate(&sc, err, errlen))
        return false;
    if (!write)
        return true;
    if (!mt_synth_ensure_shard(&sc, cfg->data.synthetic_examples, train_path, err, errlen))
        return false;
    sc.seed += 0x9e3779b97f4a7c15ull; /* validation examples differ from the training ones */
    int64_t n_val = cfg->data.synthetic_examples / 10 > 1 ? cfg->data.synthetic_examples / 10 : 2;
    return mt_synth_ensure_shard(&sc, n_val, val_path, err, errlen);
}

bool mt_run_all_ok(mt_run *r, bool ok, const char *what, char *err, size_t errlen)
{
    double failed = !ok;
    char why[512];
    if (!mt_dist_sum(&r->dist, &failed, 1, why, sizeof why))
        return ok ? mt_errorf(err, errlen, "%s", why) : false;
    if (ok && failed > 0)
        return mt_errorf(err, errlen, "%s failed on another rank (its message says why)", what);
    return ok;
}

static bool open_data(mt_run *r, char *err, size_t errlen)
{
    const mt_train_config *cfg = r->cfg;
    char train_list[1100], val_list[1100]; /* the loaders read the paths only while opening */
    const char *train_paths[MT_MAX_SHARD_PATHS], *val_paths[MT_MAX_SHARD_PATHS];
    int n_train, n_val;
    bool separate_val;
    if (cfg->data.synthetic != MT_SYNTHETIC_NONE) {
        /* The lead rank generates; the others wait for the files. */
        if (!mt_run_all_ok(r, synthetic_shards(cfg, r->lead, train_list, val_list, sizeof train_list, err, errlen),
                    "generating the synthetic shards", err, errlen))
            return false;
        train_paths[0] = train_list;
        val_paths[0] = val_list;
        n_train = n_val = 1;
        separate_val = true;
    } else {
        snprintf(train_list, sizeof train_list, "%s", cfg->data.train);
        snprintf(val_list, sizeof val_list, "%s", cfg->data.val);
        n_train = mt_split_paths(train_list, train_paths);
        n_val = mt_split_paths(val_list, val_paths);
        separate_val = n_val > 0;
    }
    mt_loader_config lc = {.paths = train_paths, .n_paths = n_train, .seq_len = cfg->data.seq_len,
                           .batch_size = cfg->data.batch_size, .seed = (uint64_t)cfg->train.seed,
                           .shuffle = cfg->data.shuffle, .rank = r->dp_rank, .world = r->dp_size,
                           .vocab_size = cfg->model.vocab_size,
                           .val_fraction = separate_val ? 0.0 : cfg->data.val_fraction,
                           .prefetch = cfg->data.prefetch};
    if (!(r->train = mt_loader_open(&lc, err, errlen)))
        return false;
    if (separate_val) {
        lc.paths = val_paths;
        lc.n_paths = n_val;
    } else {
        lc.validation = true;
    }
    lc.shuffle = false;
    if (cfg->log.eval_every > 0 && (separate_val || cfg->data.val_fraction > 0) &&
        !(r->val = mt_loader_open(&lc, err, errlen)))
        return false;
    return true;
}

/* Copies a micro-batch to the device; targets outside the answer mask are
 * ignored when the loss is on answers only. */
static void batch_to_device(mt_run *r, const mt_batch *bt)
{
    const int64_t n = (int64_t)bt->batch_size * bt->seq_len;
    const bool answers = r->cfg->data.loss_on == MT_LOSS_ON_ANSWERS;
    for (int64_t i = 0; i < n; i++)
        r->host_targets[i] = (!answers || bt->loss_mask[i]) ? bt->targets[i] : IGNORE_TARGET;
    mt_device_copy(r->dev, r->ids->data, MT_CPU, bt->inputs, (size_t)n * sizeof(int32_t));
    mt_device_copy(r->dev, r->targets->data, MT_CPU, r->host_targets, (size_t)n * sizeof(int32_t));
    mt_device_copy(r->dev, r->seq_idx->data, MT_CPU, bt->seq_idx, (size_t)n * sizeof(int32_t));
}

/* The next micro-batch of ld on the device, its logits and its loss (NULL
 * on a loader error). */
static mt_tensor *batch_loss(mt_run *r, mt_ctx *c, mt_loader *ld, mt_tensor **logits, char *err, size_t errlen)
{
    const mt_batch *bt = mt_loader_next(ld, err, errlen);
    if (!bt)
        return NULL;
    batch_to_device(r, bt);
    mt_profile_lap(c, "step", "next batch to the device");
    *logits = mt_model_logits(c, &r->model, r->ids, r->seq_idx, r->compute);
    return mt_model_loss(c, &r->model, *logits, r->targets, IGNORE_TARGET);
}

/* Mean loss over the validation batches, and the share of scored targets
 * whose argmax is right (when the loss is on answers). */
static bool evaluate(mt_run *r, mt_ctx *c, double *loss_out, double *acc_out, char *err, size_t errlen)
{
    const mt_train_config *cfg = r->cfg;
    if (!mt_loader_seek(r->val, (mt_loader_cursor){(uint64_t)cfg->train.seed, 0, 0}, err, errlen))
        return false;
    const bool answers = cfg->data.loss_on == MT_LOSS_ON_ANSWERS;
    const int64_t n = (int64_t)cfg->data.batch_size * cfg->data.seq_len;
    double loss_sum = 0;
    int64_t right = 0, scored = 0, batches = 0;
    bool saved = c->grad_enabled, ok = true;
    int64_t *best = answers ? malloc((size_t)n * sizeof *best) : NULL;
    if (answers && !best)
        mt_fatal("evaluation: out of host memory for %lld predictions", (long long)n);
    c->grad_enabled = false;
    for (int64_t b = 0; ok && b < cfg->log.eval_batches; b++) {
        mt_tensor *logits, *loss = batch_loss(r, c, r->val, &logits, err, errlen);
        if (!(ok = loss != NULL))
            break;
        loss_sum += mt_device_scalar(loss);
        batches++;
        if (answers && !(ok = mt_model_argmax(&r->model, logits, best, err, errlen)))
            break;
        for (int64_t i = 0; answers && i < n; i++) {
            if (r->host_targets[i] == IGNORE_TARGET)
                continue;
            right += best[i] == r->host_targets[i];
            scored++;
        }
        mt_ctx_end_step(c);
    }
    c->grad_enabled = saved;
    free(best);
    /* Each data-parallel rank evaluated its own part of the validation set. */
    double sums[4] = {loss_sum, (double)batches, (double)right, (double)scored};
    ok = mt_run_all_ok(r, ok, "evaluation", err, errlen) && mt_group_sum(r->dist.dp, sums, 4, err, errlen);
    *loss_out = sums[1] > 0 ? sums[0] / sums[1] : NAN;
    *acc_out = sums[3] > 0 ? sums[2] / sums[3] : NAN;
    return ok;
}

/* One optimizer step: micro-batches forward and backward, the gradients
 * summed over the data-parallel ranks, then the guarded update. *loss_out is
 * the mean loss over the global batch; *norm_out the gradient norm before
 * clipping. */
static bool train_step(mt_run *r, mt_ctx *c, double lr, bool poison, double *loss_out, double *norm_out, bool *skipped,
                       char *err, size_t errlen)
{
    const mt_train_config *cfg = r->cfg;
    double loss_sum = 0;
    for (int micro = 0; micro < cfg->train.micro_batches; micro++) {
        mt_tensor *logits, *loss = batch_loss(r, c, r->train, &logits, err, errlen);
        if (!loss)
            return false;
        loss_sum += mt_device_scalar(loss);
        const bool last = micro == cfg->train.micro_batches - 1;
        if (last)
            mt_dist_before_last_backward(&r->dist, c);
        mt_backward(c, loss);
        if (last && !mt_dist_after_last_backward(&r->dist, c, err, errlen))
            return false;
        mt_ctx_end_step(c);
        r->tokens += (int64_t)cfg->data.batch_size * cfg->data.seq_len * r->dp_size;
    }
    if (poison) /* 0xff bytes are NaN in f32 */
        mt_device_fill_bytes(r->dev, r->model.params.grads, 0xff,
                             r->model.params.flat_size * mt_dtype_size(r->model.params.dtype));
    mt_profile_lap(c, "step", "end of micro-batches");
    /* Each rank's loss and gradients are means over its own batches: the
     * global ones are the sums over ranks divided by dp * micro_batches. */
    const double batches = (double)cfg->train.micro_batches * r->dp_size;
    double loss = loss_sum, norm;
    if (!mt_group_sum(r->dist.dp, &loss, 1, err, errlen) ||
        !mt_dist_reduce_grads(&r->dist, r->be, &r->model.params, &norm, err, errlen))
        return false;
    loss /= batches;
    norm /= batches;
    mt_profile_lap(c, "step", "gradient reduction and norm");
    *loss_out = loss;
    *norm_out = norm;
    *skipped = !isfinite(loss) || !isfinite(norm);
    if (!*skipped && !mt_dist_adamw_step(&r->dist, &r->opt, r->be, &r->model.params, lr,
                                         mt_clip_scale(norm, cfg->train.grad_clip) / batches, err, errlen))
        return false;
    mt_profile_lap(c, "step", "AdamW");
    mt_params_zero_grad(&r->model.params);
    mt_profile_lap(c, "step", "zero gradients");
    return true;
}

/* A JSON number, or null for NaN and infinities (which JSON cannot hold). */
static json_t *number(double v)
{
    return isfinite(v) ? json_real(v) : json_null();
}

static void write_metrics(mt_run *r, json_t *j)
{
    json_dumpf(j, r->metrics, JSON_COMPACT);
    fputc('\n', r->metrics);
    fflush(r->metrics);
    json_decref(j);
}

/* The whole model's parameter count from this rank's store: a tensor-
 * parallel rank holds 1/tp of each sharded parameter (but its replicated
 * rows). */
static double model_params(const mt_run *r)
{
    double sharded = 0, whole = 0;
    for (int i = 0; i < r->model.params.n; i++) {
        const mt_param *q = r->model.params.items[i];
        const double n = (double)mt_numel(&q->value);
        const double replicated = q->flags & MT_PARAM_TP_PARTIAL_GRAD ? (double)q->partial_count : 0;
        if (q->flags & MT_PARAM_TP_SHARDED) {
            sharded += n - replicated;
            whole += replicated;
        } else {
            whole += n;
        }
    }
    return sharded * r->tp_size + whole;
}

static void log_step(mt_run *r, double loss, double lr, double norm, double dt, double rate, bool skipped)
{
    const mt_train_config *cfg = r->cfg;
    if (!r->lead)
        return;
    const double gpus = (double)r->dp_size * r->tp_size;
    const double mfu = r->dev == MT_CUDA ? 6.0 * model_params(r) * rate / (GEMM_PEAK_FLOPS * gpus) : NAN;
    write_metrics(r, json_pack("{s:I, s:o, s:o, s:o, s:I, s:o, s:o, s:o, s:b}", "step", (json_int_t)r->step, "loss",
                               number(loss), "lr", number(lr), "grad_norm", number(norm), "tokens",
                               (json_int_t)r->tokens, "tokens_per_s", number(rate), "step_s", number(dt), "mfu",
                               number(mfu), "skipped", skipped));
    if (r->step % cfg->log.log_every == 0 || r->step == cfg->train.steps || skipped) {
        double eta = (double)(cfg->train.steps - r->step) * dt;
        printf("step %6lld/%lld  loss %.4f  lr %.3e  grad norm %.3f  %.0f tok/s", (long long)r->step,
               (long long)cfg->train.steps, loss, lr, norm, rate);
        if (isfinite(mfu))
            printf("  MFU %.1f%%", 100 * mfu);
        printf("  ETA %.0f s%s\n", eta, skipped ? "  (skipped: non-finite loss or gradient)" : "");
        fflush(stdout);
    }
}

static void log_eval(mt_run *r, double loss, double acc)
{
    if (!r->lead)
        return;
    write_metrics(r, json_pack("{s:I, s:o, s:o, s:o}", "step", (json_int_t)r->step, "eval_loss", number(loss),
                               "eval_ppl", number(exp(loss)), "eval_accuracy", number(acc)));
    printf("eval   %6lld  loss %.4f  ppl %.2f", (long long)r->step, loss, exp(loss));
    if (isfinite(acc))
        printf("  accuracy %.3f", acc);
    printf("\n");
}

/* RUN_DIR/metrics.svg from metrics.jsonl, by the lead rank. A plot that
 * cannot be written is a warning: it must never fail the run. */
static void plot_metrics(const mt_run *r)
{
    if (!r->lead)
        return;
    const char *dir = r->cfg->log.out_dir;
    char path[1100], why[1024];
    snprintf(path, sizeof path, "%s/metrics.svg", dir);
    if (!mt_plot_runs(&dir, 1, path, why, sizeof why))
        fprintf(stderr, "mamba-train: warning: no plot of the metrics: %s\n", why);
}

/* config.ini, written by the lead rank. */
static bool write_config(const mt_run *r, char *err, size_t errlen)
{
    char path[1100];
    snprintf(path, sizeof path, "%s/config.ini", r->cfg->log.out_dir);
    FILE *f = fopen(path, "w");
    if (!f)
        return mt_errorf(err, errlen, "%s: cannot write: %s", path, strerror(errno));
    mt_train_config_write(f, r->cfg);
    if (fclose(f) != 0)
        return mt_errorf(err, errlen, "%s: cannot write: %s", path, strerror(errno));
    return true;
}

static bool setup(mt_run *r, const mt_train_config *cfg, const mt_train_options *opt, char *err, size_t errlen)
{
    r->cfg = cfg;
    r->dist = (mt_dist){.dp = opt->dp, .tp = opt->tp}; /* ZeRO-1 state once the model is built */
    r->lead = mt_dist_lead(&r->dist);
    r->dp_rank = mt_group_rank(opt->dp);
    r->dp_size = mt_group_size(opt->dp);
    r->tp_size = mt_group_size(opt->tp);
    if (r->tp_size != cfg->dist.tp_size)
        return mt_errorf(err, errlen, "[dist] tp_size = %d but the run's tensor-parallel group has %d ranks "
                         "(start a multiple of %d ranks: --gpus N, or a launcher)", cfg->dist.tp_size, r->tp_size,
                         cfg->dist.tp_size);
    char why[256];
    if (!mt_tp_check(&cfg->model, r->tp_size, why, sizeof why))
        return mt_errorf(err, errlen, "[dist] tp_size: %s", why);
    /* Before anything is written there: a fresh run must not mix with (or,
     * through keep_last, delete) another run's checkpoints. */
    if (!opt->resume && !mt_run_all_ok(r, !r->lead || mt_run_claim_out_dir(r, opt->overwrite, err, errlen),
                                       "checking the run directory", err, errlen))
        return false;
    const bool use_cuda = cfg->train.device == MT_DEVICE_CUDA ||
                          (cfg->train.device == MT_DEVICE_AUTO && mt_cuda_device_count() > 0);
    const mt_dtype gpu_compute = cfg->train.precision == MT_PRECISION_BF16 ? MT_BF16 : MT_F32;
    if (opt->backend) {
        r->be = opt->backend;
        r->dev = r->be->device;
        r->compute = r->dev == MT_CUDA ? gpu_compute : MT_F32;
    } else if (use_cuda) {
        r->own_backend = true;
        r->be = mt_backend_cuda_create(0, why, sizeof why);
        if (!r->be) {
            char word[16];
            return mt_errorf(err, errlen, "[train] device = %s: no CUDA backend: %s",
                             mt_train_config_word(cfg, "train.device", word, sizeof word), why);
        }
        r->dev = MT_CUDA;
        r->compute = gpu_compute;
    } else {
        r->own_backend = true;
        r->be = mt_backend_cpu_create();
        r->dev = MT_CPU;
        r->compute = MT_F32; /* the CPU backend is the fp32 reference */
    }
    if (!make_dirs(cfg->log.out_dir, err, errlen) || !open_data(r, err, errlen))
        return false;
    if (r->lead && !write_config(r, err, errlen))
        return false;

    const mt_tp tp = {opt->tp, mt_group_rank(opt->tp), r->tp_size};
    mt_model_build_tp(&r->model, &cfg->model, r->dev, MT_F32, &tp);
    r->model.recompute_blocks = cfg->train.recompute == MT_RECOMPUTE_BLOCK;
    if (cfg->init_from[0]) {
        if (!mt_run_load_released(r, err, errlen))
            return false;
    } else {
        mt_model_init(&r->model, r->be, (uint64_t)cfg->train.seed); /* a tp rank: its slice of the whole init */
    }
    mt_adamw_config oc = {cfg->train.beta1, cfg->train.beta2, cfg->train.eps, cfg->train.weight_decay,
                          cfg->train.decay_embedding};
    mt_adamw_init(&r->opt, &r->model.params, &oc);
    mt_dist_init(&r->dist, opt->dp, opt->tp, cfg->dist.zero == 1, (size_t)(cfg->dist.bucket_mb * (1 << 20)),
                 &r->model.params);
    r->sched = (mt_lr_schedule){.kind = cfg->train.schedule,
                                .peak_lr = cfg->train.lr,
                                .min_ratio = cfg->train.min_lr_ratio,
                                .warmup_steps = cfg->train.warmup_steps,
                                .total_steps = cfg->train.steps,
                                .decay_steps = cfg->train.decay_steps};
    const int64_t shape[2] = {cfg->data.batch_size, cfg->data.seq_len}, flat[1] = {shape[0] * shape[1]};
    r->ids = mt_tensor_new(r->dev, MT_I32, 2, shape);
    r->seq_idx = mt_tensor_new(r->dev, MT_I32, 2, shape);
    r->targets = mt_tensor_new(r->dev, MT_I32, 1, flat);
    r->host_targets = malloc((size_t)flat[0] * sizeof(int32_t));
    return r->host_targets ? true : mt_errorf(err, errlen, "out of memory");
}

static void teardown(mt_run *r)
{
    if (r->metrics)
        fclose(r->metrics);
    mt_loader_close(r->train);
    mt_loader_close(r->val);
    if (r->ids) {
        mt_tensor_free(r->ids);
        mt_tensor_free(r->seq_idx);
        mt_tensor_free(r->targets);
        mt_adamw_release(&r->opt);
        mt_dist_release(&r->dist, &r->model.params);
        mt_model_release(&r->model);
    }
    free(r->host_targets);
    mt_run_sample_release(r);
    if (r->be && r->own_backend)
        r->be->destroy(r->be);
}

/* Whether step (1-based) gets NaN gradients: opt->nan_grad_at and the
 * nan_grad_steps - 1 after it. */
static bool poisoned(const mt_train_options *opt, int64_t step)
{
    const int64_t n = opt->nan_grad_steps > 1 ? opt->nan_grad_steps : 1;
    return opt->nan_grad_at > 0 && step >= opt->nan_grad_at && step < opt->nan_grad_at + n;
}

/* One step, timed and logged (its profile when it is log.profile_step);
 * counts a skipped update in r->bad_steps. */
static bool timed_step(mt_run *r, mt_ctx *c, const mt_train_options *opt, mt_train_result *res, char *err,
                       size_t errlen)
{
    const mt_train_config *cfg = r->cfg;
    const double lr = mt_lr_at(&r->sched, r->step), t0 = mt_clock_s();
    double loss, norm;
    bool skipped;
    mt_profile prof;
    if (r->step + 1 == cfg->log.profile_step) {
        c->profile = &prof;
        mt_profile_start(c, &prof);
    }
    if (!train_step(r, c, lr, poisoned(opt, r->step + 1), &loss, &norm, &skipped, err, errlen)) {
        c->profile = NULL; /* prof ends with this call */
        return false;
    }
    r->be->synchronize(r->be);
    const double dt = mt_clock_s() - t0;
    if (c->profile) {
        if (r->lead)
            mt_profile_print(&prof, stdout);
        c->profile = NULL;
    }
    const double rate = (double)cfg->train.micro_batches * cfg->data.batch_size * cfg->data.seq_len * r->dp_size / dt;
    r->step++;
    r->bad_steps = skipped ? r->bad_steps + 1 : 0;
    res->skipped_steps += skipped;
    res->last_loss = loss;
    log_step(r, loss, lr, norm, dt, rate, skipped);
    return true;
}

/* The error that ends a run after max_bad_steps non-finite steps in a row,
 * naming the checkpoint to go back to (read by the lead rank, which
 * writes them). */
static bool non_finite_stop(const mt_run *r, char *err, size_t errlen)
{
    char last[1024], why[1536];
    const int bad = r->bad_steps;
    const long long step = (long long)r->step;
    if (!r->lead)
        return mt_errorf(err, errlen, "%d non-finite steps in a row (to step %lld): stopping (rank 0 names the last "
                         "good checkpoint)", bad, step);
    if (mt_checkpoint_latest(r->cfg->log.out_dir, last, sizeof last, why, sizeof why) == MT_CHECKPOINT_VALID)
        return mt_errorf(err, errlen, "%d non-finite steps in a row (to step %lld): stopping; the last good "
                         "checkpoint is %s", bad, step, last);
    return mt_errorf(err, errlen, "%d non-finite steps in a row (to step %lld): stopping; there is no good "
                     "checkpoint to go back to (%s)", bad, step, why);
}

/* The checkpoint due after the step (periodic, the last, or at a stop), and
 * whether the run stops here: a signal to any rank stops them all, as
 * opt->stop_at does. None is written while non-finite steps are pending:
 * it would hold the state of a streak that may end the run, and its
 * pruning would delete good checkpoints from before it. */
static bool end_step(mt_run *r, const mt_train_options *opt, mt_train_result *res, bool *stop, char *err,
                     size_t errlen)
{
    const mt_train_config *cfg = r->cfg;
    double signalled = stop_requested;
    if (!mt_dist_sum(&r->dist, &signalled, 1, err, errlen))
        return false;
    const bool last = r->step == cfg->train.steps;
    *stop = !last && (signalled > 0 || r->step == opt->stop_at);
    res->stopped_by_signal = *stop && signalled > 0;
    const bool due = (cfg->log.checkpoint_every > 0 && r->step % cfg->log.checkpoint_every == 0) || last || *stop;
    const long long step = (long long)r->step;
    bool ok = true;
    if (due && r->bad_steps > 0) {
        if (r->lead)
            printf("checkpoint at step %lld skipped: %d non-finite step%s in a row\n", step, r->bad_steps,
                   r->bad_steps > 1 ? "s" : "");
    } else if (due) {
        ok = mt_run_save_checkpoint(r, res, err, errlen);
    }
    if (*stop && r->lead)
        printf("stopping at step %lld%s%s\n", step, signalled > 0 ? " on a signal" : "",
               r->bad_steps > 0 ? ", without a checkpoint of it (--resume auto goes back to the last good one)" : "");
    return ok;
}

/* The run's memory (and the gradient buckets under data parallelism) into
 * res, printed by the lead rank. */
static void report_memory(const mt_run *r, const mt_ctx *c, mt_train_result *res)
{
    const double flat = (double)r->model.params.flat_size, es = (double)mt_dtype_size(r->model.params.dtype);
    const double moments = r->dist.zero ? (double)(r->dist.z.count[0] + r->dist.z.count[1]) : flat;
    res->state_bytes = (2.0 * flat + 2.0 * moments) * es; /* values, gradients, this rank's Adam moments */
    const mt_ctx_memory mem = mt_ctx_memory_of(c);
    res->step_bytes = (double)mem.total;
    if (r->dist.overlap) {
        res->buckets = r->dist.buckets.n;
        res->buckets_in_backward = r->dist.buckets.started_in_backward;
        if (r->lead)
            printf("data parallel: %d of %d gradient buckets all-reduced during the last backward\n",
                   res->buckets_in_backward, res->buckets);
    }
    if (r->lead)
        printf("memory on %s: parameters, gradients and AdamW moments %.1f MiB; step memory %.1f MiB "
               "(activations %.1f, their gradients %.1f, kernel scratch %.1f)\n",
               r->dev == MT_CUDA ? "the GPU" : "the host", res->state_bytes / (1 << 20), res->step_bytes / (1 << 20),
               (double)mem.activations / (1 << 20), (double)mem.gradients / (1 << 20),
               (double)mem.scratch / (1 << 20));
}

bool mt_train(const mt_train_config *cfg, const mt_train_options *opt, mt_train_result *res, char *err,
              size_t errlen)
{
    *res = (mt_train_result){.last_loss = NAN, .eval_loss = NAN, .eval_accuracy = NAN};
    if (!catch_signals(err, errlen))
        return false;
    mt_run r = {0};
    bool ok = setup(&r, cfg, opt, err, errlen) && (!opt->resume || mt_run_resume(&r, opt->resume, err, errlen)) &&
              mt_run_all_ok(&r, !r.lead || mt_run_open_metrics(&r, err, errlen), "opening metrics.jsonl", err, errlen) &&
              mt_run_all_ok(&r, mt_run_sample_setup(&r, err, errlen), "reading the sample prompt", err, errlen);
    if (!ok) {
        restore_signals();
        teardown(&r);
        return false;
    }
    mt_ctx c;
    mt_ctx_init(&c, r.be, 0);
    const int64_t first_step = r.step;
    while (ok && r.step < cfg->train.steps) {
        if (!(ok = timed_step(&r, &c, opt, res, err, errlen)))
            break;
        if (r.bad_steps >= cfg->train.max_bad_steps) {
            ok = non_finite_stop(&r, err, errlen);
            break;
        }
        if (r.val && cfg->log.eval_every > 0 && (r.step % cfg->log.eval_every == 0 || r.step == cfg->train.steps)) {
            if (!(ok = evaluate(&r, &c, &res->eval_loss, &res->eval_accuracy, err, errlen)))
                break;
            log_eval(&r, res->eval_loss, res->eval_accuracy);
            plot_metrics(&r);
        }
        if (cfg->log.sample_every > 0 && r.step % cfg->log.sample_every == 0 &&
            !(ok = mt_run_all_ok(&r, !r.lead || mt_run_sample(&r, err, errlen), "printing a sample", err, errlen)))
            break;
        bool stop;
        if (!(ok = end_step(&r, opt, res, &stop, err, errlen)) || stop)
            break;
    }
    res->steps_done = r.step - first_step;
    plot_metrics(&r); /* a failed run's curve too: it shows how it went wrong */
    report_memory(&r, &c, res);
    restore_signals();
    mt_ctx_release(&c);
    teardown(&r);
    return ok;
}
