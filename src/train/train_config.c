#include "train/train_config.h"

#include <errno.h>
#include <ini.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "core/device.h"
#include "core/error.h"
#include "train/pretrained.h"

/* K_BOUND is a double that may be inf (no bound); K_DOUBLE must be finite. */
typedef enum { K_INT, K_I64, K_DOUBLE, K_BOUND, K_BOOL, K_STR, K_WORD } key_type;

/* One configuration key: where it lives in mt_train_config and what it
 * means. K_WORD keys take one of the `choices` (separated by '|') and hold
 * its index, an enum of train_config.h. */
typedef struct config_key {
    const char *section, *name;
    key_type type;
    size_t offset;
    const char *choices;
    const char *help;
} config_key;

#define AT(field) offsetof(mt_train_config, field)

static const config_key KEYS[] = {
    {"model", "init_from", K_STR, AT(init_from), NULL,
     "start from a released model directory (config.json + weights); its config.json sets every other [model] key"},
    {"model", "layer", K_WORD, AT(model.layer), "mamba2|mamba1", "mixer block: mamba2 (SSD) or mamba1 (selective scan)"},
    {"model", "d_model", K_INT, AT(model.d_model), NULL, "model width"},
    {"model", "n_layer", K_INT, AT(model.n_layer), NULL, "number of blocks"},
    {"model", "vocab_size", K_INT, AT(model.vocab_size), NULL, "vocabulary size (the shards' vocab_size)"},
    {"model", "pad_vocab_size_multiple", K_INT, AT(model.pad_vocab_size_multiple), NULL,
     "embedding rows rounded up to a multiple of this"},
    {"model", "d_state", K_INT, AT(model.d_state), NULL, "SSM state size N"},
    {"model", "d_conv", K_INT, AT(model.d_conv), NULL, "causal conv width"},
    {"model", "expand", K_INT, AT(model.expand), NULL, "d_inner = expand * d_model"},
    {"model", "conv_bias", K_BOOL, AT(model.conv_bias), NULL, "the conv has a bias (false: mamba1 only)"},
    {"model", "headdim", K_INT, AT(model.headdim), NULL, "SSD head dimension P"},
    {"model", "ngroups", K_INT, AT(model.ngroups), NULL, "B/C groups"},
    {"model", "chunk_size", K_INT, AT(model.chunk_size), NULL, "SSD chunk length"},
    {"model", "rms_norm", K_BOOL, AT(model.rms_norm), NULL, "RMSNorm (the only norm built)"},
    {"model", "residual_in_fp32", K_BOOL, AT(model.residual_in_fp32), NULL, "residual stream in fp32"},
    {"model", "tie_embeddings", K_BOOL, AT(model.tie_embeddings), NULL, "lm_head shares the embedding"},
    {"model", "norm_eps", K_DOUBLE, AT(model.norm_eps), NULL, "RMSNorm epsilon"},
    {"model", "dt_min", K_DOUBLE, AT(model.dt_min), NULL, "dt init range, low"},
    {"model", "dt_max", K_DOUBLE, AT(model.dt_max), NULL, "dt init range, high"},
    {"model", "dt_init_floor", K_DOUBLE, AT(model.dt_init_floor), NULL, "dt init floor"},
    {"model", "dt_limit_min", K_DOUBLE, AT(model.dt_limit_min), NULL, "dt clamp in the forward, low"},
    {"model", "dt_limit_max", K_BOUND, AT(model.dt_limit_max), NULL, "dt clamp in the forward, high (inf: none)"},
    {"model", "A_init_min", K_DOUBLE, AT(model.A_init_min), NULL, "A init range, low"},
    {"model", "A_init_max", K_DOUBLE, AT(model.A_init_max), NULL, "A init range, high"},
    {"model", "dt_rank", K_INT, AT(model.dt_rank), NULL, "mamba1: rank of dt_proj (0: auto, ceil(d_model / 16))"},
    {"model", "dt_scale", K_DOUBLE, AT(model.dt_scale), NULL, "mamba1: dt_proj.weight init U(+-dt_scale / sqrt(rank))"},

    {"data", "train", K_STR, AT(data.train), NULL, "training shards: files or globs, space or comma separated"},
    {"data", "val", K_STR, AT(data.val), NULL, "validation shards (empty: hold out val_fraction of train)"},
    {"data", "val_fraction", K_DOUBLE, AT(data.val_fraction), NULL, "share of the samples held out"},
    {"data", "seq_len", K_INT, AT(data.seq_len), NULL, "tokens per sample (inputs)"},
    {"data", "batch_size", K_INT, AT(data.batch_size), NULL, "samples per micro-batch"},
    {"data", "prefetch", K_INT, AT(data.prefetch), NULL, "batches the loader prepares ahead"},
    {"data", "shuffle", K_BOOL, AT(data.shuffle), NULL, "visit training samples in a shuffled order"},
    {"data", "loss_on", K_WORD, AT(data.loss_on), "all|answers", "targets in the loss: all, or the answer mask"},
    {"data", "synthetic", K_WORD, AT(data.synthetic), "none|induction|selective-copy",
     "generate a synthetic task's shards into out_dir/data instead of reading data.train"},
    {"data", "synthetic_examples", K_I64, AT(data.synthetic_examples), NULL, "examples to generate"},
    {"data", "synthetic_memorize", K_INT, AT(data.synthetic_memorize), NULL, "selective-copy: tokens to copy"},

    {"train", "steps", K_I64, AT(train.steps), NULL, "optimizer steps"},
    {"train", "micro_batches", K_INT, AT(train.micro_batches), NULL, "gradient accumulation per step"},
    {"train", "lr", K_DOUBLE, AT(train.lr), NULL, "peak learning rate"},
    {"train", "min_lr_ratio", K_DOUBLE, AT(train.min_lr_ratio), NULL, "final lr as a share of the peak"},
    {"train", "warmup_steps", K_I64, AT(train.warmup_steps), NULL, "linear warmup"},
    {"train", "schedule", K_WORD, AT(train.schedule), "cosine|wsd|constant", "lr schedule after warmup"},
    {"train", "decay_steps", K_I64, AT(train.decay_steps), NULL, "wsd: length of the final decay"},
    {"train", "weight_decay", K_DOUBLE, AT(train.weight_decay), NULL, "AdamW decoupled weight decay"},
    {"train", "beta1", K_DOUBLE, AT(train.beta1), NULL, "AdamW beta1"},
    {"train", "beta2", K_DOUBLE, AT(train.beta2), NULL, "AdamW beta2"},
    {"train", "eps", K_DOUBLE, AT(train.eps), NULL, "AdamW epsilon"},
    {"train", "grad_clip", K_DOUBLE, AT(train.grad_clip), NULL, "global grad-norm clip (0: none)"},
    {"train", "decay_embedding", K_BOOL, AT(train.decay_embedding), NULL, "weight-decay the embedding"},
    {"train", "precision", K_WORD, AT(train.precision), "bf16|fp32", "activations and GEMM operands on the GPU"},
    {"train", "device", K_WORD, AT(train.device), "auto|cpu|cuda", "auto: CUDA when a GPU is present"},
    {"train", "recompute", K_WORD, AT(train.recompute), "none|block", "activation checkpointing"},
    {"train", "seed", K_I64, AT(train.seed), NULL, "init and data order seed"},
    {"train", "max_bad_steps", K_INT, AT(train.max_bad_steps), NULL,
     "stop after this many NaN/Inf steps in a row"},

    {"dist", "tp_size", K_INT, AT(dist.tp_size), NULL,
     "tensor-parallel ranks per model (mamba2; heads split); the data-parallel size is world / tp_size"},
    {"dist", "zero", K_INT, AT(dist.zero), NULL,
     "0: gradients all-reduced, AdamW on every rank; 1: ZeRO-1, each data-parallel rank updates its shard"},
    {"dist", "bucket_mb", K_DOUBLE, AT(dist.bucket_mb), NULL,
     "data parallel (zero = 0, tp_size = 1): gradients all-reduced in buckets of this many MiB during the "
     "backward (0: one all-reduce after it)"},
    {"dist", "timeout_s", K_DOUBLE, AT(dist.timeout_s), NULL,
     "seconds a rank waits for the others (rendezvous, any collective) before the run fails"},

    {"log", "out_dir", K_STR, AT(log.out_dir), NULL, "run directory: config, metrics.jsonl, checkpoints"},
    {"log", "log_every", K_I64, AT(log.log_every), NULL, "console progress line every N steps"},
    {"log", "eval_every", K_I64, AT(log.eval_every), NULL, "validation every N steps (0: never)"},
    {"log", "eval_batches", K_I64, AT(log.eval_batches), NULL, "validation micro-batches per eval"},
    {"log", "checkpoint_every", K_I64, AT(log.checkpoint_every), NULL, "checkpoint every N steps (0: end only)"},
    {"log", "keep_last", K_INT, AT(log.keep_last), NULL, "checkpoints kept (0: all)"},
    {"log", "profile_step", K_I64, AT(log.profile_step), NULL, "print a per-op time profile of this step (0: never)"},
    {"log", "sample_every", K_I64, AT(log.sample_every), NULL,
     "print a greedy continuation of sample_prompt every N steps (0: never)"},
    {"log", "sample_prompt", K_STR, AT(log.sample_prompt), NULL,
     "the prompt of the samples: text with log.tokenizer, else token ids separated by commas"},
    {"log", "sample_tokens", K_I64, AT(log.sample_tokens), NULL, "new tokens a sample"},
    {"log", "tokenizer", K_STR, AT(log.tokenizer), NULL,
     "tokenizer.json that encodes sample_prompt and decodes the samples (empty: token ids)"},
};

enum { N_KEYS = sizeof KEYS / sizeof KEYS[0] };

void mt_train_config_defaults(mt_train_config *c)
{
    memset(c, 0, sizeof *c); /* the words' defaults are their first choices */
    mt_model_config_defaults(&c->model);
    c->data.val_fraction = 0.01;
    c->data.seq_len = 2048;
    c->data.batch_size = 8;
    c->data.prefetch = 2;
    c->data.shuffle = true;
    c->data.synthetic_examples = 20000;
    c->data.synthetic_memorize = 16;
    c->train.steps = 1000;
    c->train.micro_batches = 1;
    c->train.lr = 6e-4;
    c->train.min_lr_ratio = 0.1;
    c->train.warmup_steps = 100;
    c->train.weight_decay = 0.1;
    c->train.beta1 = 0.9;
    c->train.beta2 = 0.95;
    c->train.eps = 1e-8;
    c->train.grad_clip = 1.0;
    c->train.seed = 1234;
    c->train.max_bad_steps = 5;
    c->dist.tp_size = 1;
    c->dist.timeout_s = 300;
    c->dist.bucket_mb = 25;
    snprintf(c->log.out_dir, MT_CONFIG_STR, "runs/default");
    c->log.log_every = 10;
    c->log.eval_every = 200;
    c->log.eval_batches = 20;
    c->log.checkpoint_every = 500;
    c->log.keep_last = 3;
    c->log.sample_tokens = 32;
}

static const config_key *find_key(const char *section, const char *name)
{
    for (int i = 0; i < N_KEYS; i++)
        if (strcmp(KEYS[i].section, section) == 0 && strcmp(KEYS[i].name, name) == 0)
            return &KEYS[i];
    return NULL;
}

/* The index of v among choices (separated by '|'), or -1. */
static int word_index(const char *choices, const char *v)
{
    size_t n = strlen(v);
    int i = 0;
    for (const char *p = choices; *p; i++) {
        const char *bar = strchr(p, '|');
        size_t len = bar ? (size_t)(bar - p) : strlen(p);
        if (len == n && strncmp(p, v, n) == 0)
            return i;
        p += len + (bar ? 1 : 0);
    }
    return -1;
}

/* Choice i of choices into out (len bytes). */
static const char *word_at(const char *choices, int i, char *out, size_t len)
{
    const char *p = choices;
    for (; i > 0 && p; i--)
        if ((p = strchr(p, '|')))
            p++;
    if (!p)
        return "?";
    const char *bar = strchr(p, '|');
    snprintf(out, len, "%.*s", (int)(bar ? (size_t)(bar - p) : strlen(p)), p);
    return out;
}

/* Stores value into the key's field; false with the reason in err. */
static bool set_value(mt_train_config *c, const config_key *k, const char *value, char *err, size_t errlen)
{
    char *field = (char *)c + k->offset, *end = NULL;
    errno = 0;
    switch (k->type) {
    case K_INT:
    case K_I64: {
        long long v = strtoll(value, &end, 10);
        if (!*value || *end || errno || (k->type == K_INT && (v < -2147483647LL || v > 2147483647LL)))
            return mt_errorf(err, errlen, "\"%s\" is not an integer", value);
        if (k->type == K_INT)
            *(int *)field = (int)v;
        else
            *(int64_t *)field = (int64_t)v;
        return true;
    }
    case K_DOUBLE:
    case K_BOUND: {
        double v = strtod(value, &end);
        if (!*value || *end || isnan(v))
            return mt_errorf(err, errlen, "\"%s\" is not a number", value);
        if (isinf(v) && k->type != K_BOUND)
            return mt_errorf(err, errlen, "\"%s\" is not a finite number", value);
        *(double *)field = v;
        return true;
    }
    case K_BOOL:
        if (!strcasecmp(value, "true") || !strcmp(value, "1") || !strcasecmp(value, "yes"))
            *(bool *)field = true;
        else if (!strcasecmp(value, "false") || !strcmp(value, "0") || !strcasecmp(value, "no"))
            *(bool *)field = false;
        else
            return mt_errorf(err, errlen, "\"%s\" is not true or false", value);
        return true;
    case K_STR:
        if (strlen(value) >= MT_CONFIG_STR)
            return mt_errorf(err, errlen, "longer than %d characters", MT_CONFIG_STR - 1);
        snprintf(field, MT_CONFIG_STR, "%s", value);
        return true;
    case K_WORD: {
        const int i = word_index(k->choices, value);
        if (i < 0)
            return mt_errorf(err, errlen, "\"%s\" is not one of %s", value, k->choices);
        *(int *)field = i;
        return true;
    }
    }
    return false;
}

typedef struct ini_state {
    mt_train_config *c;
    const char *path;
    bool seen[N_KEYS]; /* set in this file: a second setting is warned about */
    char msg[512];
    bool failed;
} ini_state;

static int ini_entry(void *user, const char *section, const char *name, const char *value)
{
    ini_state *s = user;
    if (s->failed)
        return 0;
    const config_key *k = find_key(section, name);
    char why[400];
    if (!k) {
        snprintf(s->msg, sizeof s->msg, "[%s] %s: no such key (see --help)", section, name);
    } else if (!set_value(s->c, k, value, why, sizeof why)) {
        snprintf(s->msg, sizeof s->msg, "[%s] %s: %s", section, name, why);
    } else {
        if (s->seen[k - KEYS])
            fprintf(stderr, "mamba-train: warning: %s: [%s] %s is set more than once; the last value (%s) is used\n",
                    s->path, section, name, value);
        s->seen[k - KEYS] = true;
        return 1;
    }
    s->failed = true;
    return 0;
}

bool mt_train_config_load(mt_train_config *c, const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return mt_errorf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
    /* A directory opens, and reads as an empty config. */
    struct stat st;
    const bool stated = fstat(fileno(f), &st) == 0;
    if (!stated || !S_ISREG(st.st_mode)) {
        const int e = errno;
        fclose(f);
        return mt_errorf(err, errlen, "%s: not a config file (%s)", path,
                         !stated ? strerror(e) : S_ISDIR(st.st_mode) ? "a directory" : "not a regular file");
    }
    ini_state s = {.c = c, .path = path};
    int rc = ini_parse_file(f, ini_entry, &s);
    const bool read_error = ferror(f);
    fclose(f);
    if (read_error)
        return mt_errorf(err, errlen, "%s: cannot read", path);
    if (rc == -2)
        return mt_errorf(err, errlen, "%s: out of memory while parsing", path);
    if (rc > 0)
        return mt_errorf(err, errlen, "%s:%d: %s", path, rc, s.failed ? s.msg : "not a valid INI line");
    return true;
}

bool mt_train_config_set(mt_train_config *c, const char *assignment, char *err, size_t errlen)
{
    const char *dot = strchr(assignment, '.'), *eq = strchr(assignment, '=');
    if (!dot || !eq || dot > eq)
        return mt_errorf(err, errlen, "--set %s: expected section.key=value", assignment);
    char section[64], name[64];
    snprintf(section, sizeof section, "%.*s", (int)(dot - assignment), assignment);
    snprintf(name, sizeof name, "%.*s", (int)(eq - dot - 1), dot + 1);
    const config_key *k = find_key(section, name);
    if (!k)
        return mt_errorf(err, errlen, "--set %s: no such key %s.%s (see --help)", assignment, section, name);
    char why[400];
    if (!set_value(c, k, eq + 1, why, sizeof why))
        return mt_errorf(err, errlen, "--set %s.%s: %s", section, name, why);
    return true;
}

#define CHECK(cond, ...)                                                                                        \
    do {                                                                                                        \
        if (!(cond))                                                                                            \
            return mt_errorf(err, errlen, __VA_ARGS__);                                                         \
    } while (0)

/* The device a run of c trains on, as the trainer picks it. */
static mt_device run_device(const mt_train_config *c)
{
    if (c->train.device == MT_DEVICE_CPU)
        return MT_CPU;
    return c->train.device == MT_DEVICE_CUDA || mt_cuda_device_count() > 0 ? MT_CUDA : MT_CPU;
}

static double gib(double bytes)
{
    return bytes / (1024.0 * 1024.0 * 1024.0);
}

/* Refuses a model whose parameters, or whose step's logits and block
 * inputs, cannot fit the device at all: lower bounds (fp32 values and
 * gradients; logits and one activation per block in the compute dtype), so
 * that nothing is allocated for a run that could never start. */
static bool check_fits(const mt_train_config *c, char *err, size_t errlen)
{
    const mt_model_config *m = &c->model;
    const mt_device dev = run_device(c);
    const double memory = mt_device_memory_bytes(dev);
    if (memory <= 0)
        return true; /* no GPU to ask: the backend says so when the run starts */
    const char *where = dev == MT_CUDA ? "the GPU" : "this machine";
    int64_t count;
    char why[256];
    if (!mt_model_config_param_count(m, &count, why, sizeof why))
        return mt_errorf(err, errlen, "[model] %s", why);
    const double tp = c->dist.tp_size, state = (double)count * 8 / tp;
    if (state > memory)
        return mt_errorf(err, errlen, "[model] d_model %d, n_layer %d, expand %d, vocab_size %d: %.3g parameters need "
                         "at least %.3g bytes a rank (fp32 values and gradients), more than the %.1f GiB of %s",
                         m->d_model, m->n_layer, m->expand, m->vocab_size, (double)count, state, gib(memory), where);
    const double elem = dev == MT_CUDA && c->train.precision == MT_PRECISION_BF16 ? 2 : 4;
    const double tokens = (double)c->data.batch_size * c->data.seq_len;
    const double step = tokens * elem * ((double)m->vocab_padded / tp + (double)m->n_layer * m->d_model);
    if (state + step > memory)
        return mt_errorf(err, errlen, "[data] batch_size %d x seq_len %d with model.vocab_size %d, model.n_layer %d "
                         "and model.d_model %d: the step needs at least %.3g bytes a rank for its logits and block "
                         "inputs beside %.3g for the parameters, more than the %.1f GiB of %s", c->data.batch_size,
                         c->data.seq_len, m->vocab_size, m->n_layer, m->d_model, step, state, gib(memory), where);
    return true;
}

bool mt_train_config_finalize(mt_train_config *c, char *err, size_t errlen)
{
    char why[400];
    if (c->init_from[0]) {
        if (!mt_pretrained_config(c->init_from, &c->model, why, sizeof why))
            return mt_errorf(err, errlen, "[model] init_from: %s", why);
    }
    if (!mt_model_config_finalize(&c->model, why, sizeof why))
        return mt_errorf(err, errlen, "[model] %s", why);
    const bool synthetic = c->data.synthetic != MT_SYNTHETIC_NONE;
    CHECK(synthetic || c->data.train[0], "[data] train: no training shards given (or set data.synthetic)");
    CHECK(c->data.val_fraction >= 0 && c->data.val_fraction < 1, "[data] val_fraction %g is not in [0, 1)",
          c->data.val_fraction);
    CHECK(c->data.seq_len >= 1 && c->data.batch_size >= 1, "[data] seq_len and batch_size must be positive");
    CHECK(c->data.prefetch >= 1, "[data] prefetch must be at least 1");
    CHECK(!synthetic || c->data.synthetic_examples >= 2, "[data] synthetic_examples must be at least 2");
    CHECK(c->train.steps >= 1 && c->train.micro_batches >= 1, "[train] steps and micro_batches must be positive");
    CHECK(c->train.lr > 0 && c->train.min_lr_ratio >= 0 && c->train.min_lr_ratio <= 1,
          "[train] lr must be positive and min_lr_ratio in [0, 1]");
    CHECK(c->train.warmup_steps >= 0 && c->train.decay_steps >= 0, "[train] warmup_steps, decay_steps negative");
    CHECK(c->train.schedule != MT_SCHEDULE_WSD || c->train.decay_steps >= 1,
          "[train] schedule = wsd needs decay_steps >= 1");
    CHECK(c->train.beta1 >= 0 && c->train.beta1 < 1 && c->train.beta2 >= 0 && c->train.beta2 < 1 && c->train.eps > 0,
          "[train] beta1, beta2 must be in [0, 1) and eps positive");
    CHECK(c->train.weight_decay >= 0 && c->train.grad_clip >= 0, "[train] weight_decay, grad_clip negative");
    CHECK(c->train.max_bad_steps >= 1, "[train] max_bad_steps must be at least 1");
    CHECK(c->dist.tp_size >= 1, "[dist] tp_size must be at least 1");
    CHECK(c->dist.zero == 0 || c->dist.zero == 1, "[dist] zero must be 0 or 1 (ZeRO-1), got %d", c->dist.zero);
    CHECK(c->dist.timeout_s > 0, "[dist] timeout_s must be positive");
    CHECK(c->dist.bucket_mb >= 0, "[dist] bucket_mb must not be negative");
    CHECK(c->log.out_dir[0], "[log] out_dir is empty");
    CHECK(c->log.log_every >= 1 && c->log.eval_every >= 0 && c->log.eval_batches >= 1 &&
              c->log.checkpoint_every >= 0 && c->log.keep_last >= 0 && c->log.profile_step >= 0,
          "[log] log_every, eval_batches must be positive; eval_every, checkpoint_every, keep_last, profile_step "
          "not negative");
    CHECK(c->log.sample_every >= 0 && c->log.sample_tokens >= 1,
          "[log] sample_every must not be negative and sample_tokens must be positive");
    CHECK(c->log.sample_every == 0 || c->log.sample_prompt[0], "[log] sample_every = %lld needs a sample_prompt",
          (long long)c->log.sample_every);
    CHECK(c->log.sample_every == 0 || c->dist.tp_size == 1,
          "[log] sample_every needs dist.tp_size = 1 (a sample runs on one rank's whole model)");
    return check_fits(c, err, errlen);
}

static void write_value(FILE *f, const mt_train_config *c, const config_key *k)
{
    const char *field = (const char *)c + k->offset;
    switch (k->type) {
    case K_INT:
        fprintf(f, "%d", *(const int *)field);
        break;
    case K_I64:
        fprintf(f, "%lld", (long long)*(const int64_t *)field);
        break;
    case K_DOUBLE:
    case K_BOUND:
        fprintf(f, "%.17g", *(const double *)field);
        break;
    case K_BOOL:
        fputs(*(const bool *)field ? "true" : "false", f);
        break;
    case K_STR:
        fputs(field, f);
        break;
    case K_WORD: {
        char word[64];
        fputs(word_at(k->choices, *(const int *)field, word, sizeof word), f);
        break;
    }
    }
}

const char *mt_train_config_word(const mt_train_config *c, const char *key, char *word, size_t len)
{
    const char *dot = strchr(key, '.');
    char section[32];
    snprintf(section, sizeof section, "%.*s", dot ? (int)(dot - key) : 0, key);
    const config_key *k = dot ? find_key(section, dot + 1) : NULL;
    if (!k || k->type != K_WORD)
        return "?";
    return word_at(k->choices, *(const int *)((const char *)c + k->offset), word, len);
}

void mt_train_config_write(FILE *f, const mt_train_config *c)
{
    const char *section = "";
    for (int i = 0; i < N_KEYS; i++) {
        if (strcmp(KEYS[i].section, section) != 0) {
            section = KEYS[i].section;
            fprintf(f, "%s[%s]\n", i ? "\n" : "", section);
        }
        fprintf(f, "%s = ", KEYS[i].name);
        write_value(f, c, &KEYS[i]);
        fputc('\n', f);
    }
}

void mt_train_config_help(FILE *f)
{
    mt_train_config d;
    mt_train_config_defaults(&d);
    const char *section = "";
    for (int i = 0; i < N_KEYS; i++) {
        if (strcmp(KEYS[i].section, section) != 0) {
            section = KEYS[i].section;
            fprintf(f, "\n[%s]\n", section);
        }
        fprintf(f, "  %-24s = ", KEYS[i].name);
        write_value(f, &d, &KEYS[i]);
        fprintf(f, "\n      %s%s%s\n", KEYS[i].help, KEYS[i].choices ? "; one of " : "",
                KEYS[i].choices ? KEYS[i].choices : "");
    }
}
