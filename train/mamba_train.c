/* mamba-train: trains a Mamba or Mamba-2 language model from an INI config,
 * and exports a checkpoint as a released model.
 *
 *   mamba-train --config configs/NAME.ini [--set section.key=value ...]
 *               [--resume [DIR|auto]] [--out DIR]
 *   mamba-train export --checkpoint DIR --format reference|hf --out DIR
 *   mamba-train --help
 *
 * The config is checked whole before any work starts; the effective one is
 * printed and saved as OUT/config.ini. */
#include <stdio.h>
#include <string.h>

#include "train/export.h"
#include "train/train_config.h"
#include "train/trainer.h"

static void usage(FILE *f)
{
    fputs("usage: mamba-train --config FILE.ini [--set section.key=value ...] [--resume [DIR|auto]] [--out DIR]\n"
          "       mamba-train export --checkpoint DIR --format reference|hf --out DIR\n"
          "       mamba-train --help\n"
          "  --config   the run's INI file (sections model, data, train, log)\n"
          "  --set      override one key after the file (repeatable)\n"
          "  --resume   continue from a checkpoint directory, or auto: the newest valid one in out_dir\n"
          "  --out      the run directory (log.out_dir)\n"
          "  export     write a checkpoint (or any model directory) as a released model: config.json with\n"
          "             pytorch_model.bin (the reference package) or model.safetensors (HF transformers)\n",
          f);
}

static int export_main(int argc, char **argv)
{
    const char *checkpoint = NULL, *format = NULL, *out = NULL;
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--checkpoint") && i + 1 < argc) {
            checkpoint = argv[++i];
        } else if (!strcmp(argv[i], "--format") && i + 1 < argc) {
            format = argv[++i];
        } else if (!strcmp(argv[i], "--out") && i + 1 < argc) {
            out = argv[++i];
        } else {
            fprintf(stderr, "mamba-train export: unknown or incomplete argument \"%s\"\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    if (!checkpoint || !format || !out) {
        fprintf(stderr, "mamba-train export: --checkpoint, --format and --out are required\n");
        usage(stderr);
        return 2;
    }
    char err[1024];
    if (!mt_export(checkpoint, format, out, err, sizeof err)) {
        fprintf(stderr, "mamba-train export: %s\n", err);
        return 1;
    }
    printf("exported %s as %s to %s\n", checkpoint, format, out);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc > 1 && !strcmp(argv[1], "export"))
        return export_main(argc, argv);
    const char *config = NULL, *resume = NULL, *out = NULL;
    const char *sets[256];
    int n_sets = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            printf("\nkeys, with their defaults:\n");
            mt_train_config_help(stdout);
            return 0;
        } else if (!strcmp(a, "--config") && i + 1 < argc) {
            config = argv[++i];
        } else if (!strcmp(a, "--set") && i + 1 < argc && n_sets < 256) {
            sets[n_sets++] = argv[++i];
        } else if (!strcmp(a, "--out") && i + 1 < argc) {
            out = argv[++i];
        } else if (!strcmp(a, "--resume")) {
            resume = (i + 1 < argc && strncmp(argv[i + 1], "--", 2) != 0) ? argv[++i] : "auto";
        } else {
            fprintf(stderr, "mamba-train: unknown or incomplete argument \"%s\"\n", a);
            usage(stderr);
            return 2;
        }
    }
    if (!config) {
        fprintf(stderr, "mamba-train: --config is required (configs/tiny.ini trains a small model on the CPU)\n");
        usage(stderr);
        return 2;
    }
    mt_train_config cfg;
    mt_train_config_defaults(&cfg);
    char err[1024];
    bool ok = mt_train_config_load(&cfg, config, err, sizeof err);
    for (int i = 0; ok && i < n_sets; i++)
        ok = mt_train_config_set(&cfg, sets[i], err, sizeof err);
    if (ok && out)
        snprintf(cfg.log.out_dir, sizeof cfg.log.out_dir, "%s", out);
    ok = ok && mt_train_config_finalize(&cfg, err, sizeof err);
    if (!ok) {
        fprintf(stderr, "mamba-train: %s\n", err);
        return 2;
    }
    printf("# mamba-train: effective config (%s)\n", config);
    mt_train_config_write(stdout, &cfg);
    printf("\n");
    mt_train_result res;
    mt_train_options opt = {.resume = resume};
    if (!mt_train(&cfg, &opt, &res, err, sizeof err)) {
        fprintf(stderr, "mamba-train: %s\n", err);
        return 1;
    }
    printf("done: %lld steps, last loss %.4f", (long long)res.steps_done, res.last_loss);
    if (res.eval_loss == res.eval_loss)
        printf(", eval loss %.4f", res.eval_loss);
    if (res.eval_accuracy == res.eval_accuracy)
        printf(", eval accuracy %.3f", res.eval_accuracy);
    printf("\n");
    return 0;
}
