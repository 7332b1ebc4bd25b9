/* The training run's configuration: an INI file (sections model, data,
 * train, dist, log) parsed with inih into one typed struct, then `--set
 * section.key=value` overrides, then validation. Every key has a default
 * (mt_train_config_defaults); an unknown key or a bad value is an error that
 * names the file, the line and the key. mt_train_config_write prints the
 * effective configuration in the same INI form, so a run's saved config.ini
 * reproduces it. */
#ifndef MT_TRAIN_CONFIG_H
#define MT_TRAIN_CONFIG_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "layers/config.h"
#include "optim/schedule.h"

#define MT_CONFIG_STR 512

/* The keys that take one of a few words hold them as enums, in the order
 * of their words in --help (model.layer is mt_layer_kind, train.schedule
 * mt_schedule_kind). */
typedef enum { MT_LOSS_ON_ALL, MT_LOSS_ON_ANSWERS } mt_loss_on;
typedef enum { MT_SYNTHETIC_NONE, MT_SYNTHETIC_INDUCTION, MT_SYNTHETIC_SELECTIVE_COPY } mt_synthetic;
typedef enum { MT_PRECISION_BF16, MT_PRECISION_FP32 } mt_precision;
typedef enum { MT_DEVICE_AUTO, MT_DEVICE_CPU, MT_DEVICE_CUDA } mt_device_choice;
typedef enum { MT_RECOMPUTE_NONE, MT_RECOMPUTE_BLOCK } mt_recompute;

typedef struct mt_train_config {
    char init_from[MT_CONFIG_STR]; /* model.init_from: a released model directory, or empty */
    mt_model_config model;

    struct {
        char train[MT_CONFIG_STR]; /* shard files or globs, separated by spaces or commas */
        char val[MT_CONFIG_STR];   /* separate validation shards; empty: hold out val_fraction */
        double val_fraction;
        int seq_len, batch_size, prefetch;
        bool shuffle;
        mt_loss_on loss_on;     /* all | answers (the shards' /loss_mask) */
        mt_synthetic synthetic; /* none | induction | selective-copy: generate the data */
        int64_t synthetic_examples;
        int synthetic_memorize;
    } data;

    struct {
        int64_t steps;
        int micro_batches;
        double lr, min_lr_ratio;
        int64_t warmup_steps, decay_steps;
        mt_schedule_kind schedule; /* cosine | wsd | constant */
        double weight_decay, beta1, beta2, eps, grad_clip;
        bool decay_embedding;
        mt_precision precision; /* bf16 | fp32 */
        mt_device_choice device; /* auto | cpu | cuda */
        mt_recompute recompute; /* none | block */
        int64_t seed;
        int max_bad_steps;
    } train;

    struct {
        int tp_size;      /* ranks sharing one model (tensor parallel) */
        int zero;         /* 0 or 1 (ZeRO-1) */
        double bucket_mb; /* gradient all-reduce buckets overlapping the backward; 0: none */
        double timeout_s; /* rendezvous and collectives */
    } dist;

    struct {
        char out_dir[MT_CONFIG_STR];
        int64_t log_every, eval_every, eval_batches, checkpoint_every, profile_step;
        int keep_last;
        int64_t sample_every, sample_tokens; /* a greedy continuation of sample_prompt every N steps (0: never) */
        char sample_prompt[MT_CONFIG_STR];   /* text with tokenizer, else token ids separated by commas */
        char tokenizer[MT_CONFIG_STR];       /* tokenizer.json for sample_prompt and the sample; empty: ids */
    } log;
} mt_train_config;

void mt_train_config_defaults(mt_train_config *c);

/* Reads an INI file over the current values. */
bool mt_train_config_load(mt_train_config *c, const char *path, char *err, size_t errlen);

/* One override, "section.key=value". */
bool mt_train_config_set(mt_train_config *c, const char *assignment, char *err, size_t errlen);

/* Checks the values together and finalizes the model config. */
bool mt_train_config_finalize(mt_train_config *c, char *err, size_t errlen);

/* The word that the value of key ("section.name" of a word key, e.g.
 * "train.device") stands for, into word (len bytes), for messages; "?"
 * for another key. */
const char *mt_train_config_word(const mt_train_config *c, const char *key, char *word, size_t len);

/* Every key with its current value, as INI. */
void mt_train_config_write(FILE *f, const mt_train_config *c);

/* Every key with its default and what it means, for --help. */
void mt_train_config_help(FILE *f);

#endif
