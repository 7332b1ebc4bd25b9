/* mamba-train: trains a Mamba or Mamba-2 language model from an INI config,
 * exports a checkpoint as a released model, evaluates one on token shards,
 * and plots runs' metrics.
 *
 *   mamba-train --config configs/NAME.ini [--set section.key=value ...]
 *               [--resume [DIR|auto] | --overwrite] [--out DIR] [--gpus N]
 *   mamba-train export --checkpoint DIR --format reference|hf --out DIR
 *   mamba-train plot RUN_DIR... --out FILE.svg
 *   mamba-train eval --model DIR --data SHARDS [--seq-len N] [--batch-size B] [--batches N]
 *                    [--loss-on all|answers] [--device auto|cpu|cuda] [--precision bf16|fp32]
 *   mamba-train generate --model DIR [--tokenizer F] (--prompt TEXT | --prompt-ids 1,2,3 | --prompt-file F |
 *                    --prompts-file F)
 *                    [--max-new-tokens N] [--temperature T] [--top-k K] [--top-p P] [--min-p M]
 *                    [--repetition-penalty R] [--seed S] [--batch N] [--eos-id ID] [--device ...]
 *   mamba-train --help
 *
 * The config is checked whole before any work starts; the effective one is
 * printed and saved as OUT/config.ini. Started by a launcher (RANK,
 * WORLD_SIZE, ...: train/launch.h), it runs as that rank; --gpus N starts N
 * ranks on this machine itself. Exit status: 0 done, 1 an error, 2 a bad
 * command line or config, 3 a rank the NCCL watchdog ended, 4
 * (MT_EXIT_STOPPED_BY_SIGNAL) stopped by SIGTERM or SIGINT after its
 * checkpoint. */
#include <stdio.h>
#include <string.h>

#include <stdlib.h>
#include <unistd.h>

#include "dist/rendezvous.h"
#include "train/evaluate.h"
#include "train/export.h"
#include "train/launch.h"
#include "train/plot.h"
#include "train/train_config.h"
#include "train/trainer.h"

int generate_main(int argc, char **argv); /* generate_cmd.c */

static void usage(FILE *f)
{
    fputs("usage: mamba-train --config FILE.ini [--set section.key=value ...] [--resume [DIR|auto] | --overwrite]\n"
          "                   [--out DIR] [--gpus N]\n"
          "       mamba-train export --checkpoint DIR --format reference|hf --out DIR\n"
          "       mamba-train plot RUN_DIR... --out FILE.svg\n"
          "       mamba-train eval --model DIR --data SHARDS [--seq-len N] [--batch-size B] [--batches N]\n"
          "                        [--loss-on all|answers] [--device auto|cpu|cuda] [--precision bf16|fp32]\n"
          "       mamba-train generate --model DIR [--tokenizer F] (--prompt TEXT | --prompt-ids 1,2,3 |\n"
          "                        --prompt-file F | --prompts-file F) [--max-new-tokens N] [--temperature T]\n"
          "                        [--top-k K] [--top-p P] [--min-p M] [--repetition-penalty R] [--seed S]\n"
          "                        [--batch N] [--eos-id ID] [--device auto|cpu|cuda] [--precision bf16|fp32]\n"
          "       mamba-train --help\n"
          "  --config   the run's INI file (sections model, data, train, log)\n"
          "  --set      override one key after the file (repeatable)\n"
          "  --resume   continue from a checkpoint directory, or auto: the newest valid one in out_dir (none\n"
          "             there: a fresh start; only damaged ones: refused)\n"
          "  --overwrite start afresh in an out_dir that holds checkpoints (without it that is refused): its\n"
          "             valid checkpoints are deleted; damaged ones stay (moved aside to step_N.damaged when\n"
          "             a save needs the name), and the earlier run's rows leave metrics.jsonl\n"
          "  --out      the run directory (log.out_dir)\n"
          "  --gpus     run N ranks on this machine's first N GPUs (data parallel, or dist.tp_size per model);\n"
          "             other launchers (torchrun-style, Slurm, mpirun) set RANK, WORLD_SIZE, LOCAL_RANK,\n"
          "             MASTER_ADDR and MASTER_PORT instead\n"
          "  export     write a checkpoint (or any model directory) as a released model: config.json with\n"
          "             pytorch_model.bin (the reference package) or model.safetensors (HF transformers)\n"
          "  plot       draw the metrics.jsonl of one or more run directories as one SVG (loss with the\n"
          "             evaluations, learning rate, gradient norm, tokens/s against step), the runs overlaid;\n"
          "             a run writes its own as RUN_DIR/metrics.svg\n"
          "  eval       score a checkpoint (or any model directory) on HDF5 token shards (space or comma\n"
          "             separated, globs), in order: every whole batch, or the first --batches; prints the\n"
          "             mean loss, perplexity and, with --loss-on answers, the answer accuracy (defaults:\n"
          "             --seq-len 2048, --batch-size 8, --loss-on all, --device auto, bf16 on CUDA, fp32 on the CPU)\n"
          "  generate   continue a prompt with a checkpoint (or any model directory), streaming the first row\n"
          "             (text with --tokenizer, else ids); greedy unless sampling options say otherwise\n"
          "             (defaults: --max-new-tokens 64, --top-k 1, --temperature 1; the tokenizer's\n"
          "             <|endoftext|> stops a row); --prompts-file: one prompt a line, of any lengths, in\n"
          "             one batch; ends with the prefill ms, ms per token and tokens/s\n"
          "exit status: 0 done; 1 an error; 2 a bad command line or config; 3 a rank ended by the NCCL watchdog\n"
          "(a dead rank or a timeout); 4 stopped by SIGTERM or SIGINT after writing its checkpoint (continue\n"
          "with --resume auto)\n",
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

/* A positive int from a flag's value, or 0. */
static long positive(const char *flag, const char *value)
{
    char *end;
    long n = strtol(value, &end, 10);
    if (*end || end == value || n < 1 || n > 1000000000L) {
        fprintf(stderr, "mamba-train eval: %s \"%s\" is not a positive number\n", flag, value);
        return 0;
    }
    return n;
}

static void eval_progress(void *user, int64_t done, int64_t total, double running_loss)
{
    (void)user;
    /* One line rewritten in place on a terminal; every tenth batch and the last otherwise. */
    const bool tty = isatty(STDERR_FILENO);
    if (tty || done % 10 == 0 || done == total)
        fprintf(stderr, "%seval: batch %lld/%lld, running loss %.4f%s", tty ? "\r" : "", (long long)done,
                (long long)total, running_loss, tty && done < total ? "" : "\n");
}

static int eval_main(int argc, char **argv)
{
    mt_eval_config cfg = {.seq_len = 2048, .batch_size = 8, .loss_on = MT_LOSS_ON_ALL, .device = MT_DEVICE_AUTO,
                          .precision = MT_PRECISION_BF16, .progress = eval_progress};
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        long n = 1;
        if (!strcmp(a, "--model") && v) {
            cfg.model_dir = v;
        } else if (!strcmp(a, "--data") && v) {
            cfg.data = v;
        } else if (!strcmp(a, "--seq-len") && v) {
            cfg.seq_len = (int)(n = positive(a, v));
        } else if (!strcmp(a, "--batch-size") && v) {
            cfg.batch_size = (int)(n = positive(a, v));
        } else if (!strcmp(a, "--batches") && v) {
            cfg.max_batches = n = positive(a, v);
        } else if (!strcmp(a, "--loss-on") && v && (!strcmp(v, "all") || !strcmp(v, "answers"))) {
            cfg.loss_on = !strcmp(v, "all") ? MT_LOSS_ON_ALL : MT_LOSS_ON_ANSWERS;
        } else if (!strcmp(a, "--device") && v && (!strcmp(v, "auto") || !strcmp(v, "cpu") || !strcmp(v, "cuda"))) {
            cfg.device = !strcmp(v, "auto") ? MT_DEVICE_AUTO : !strcmp(v, "cpu") ? MT_DEVICE_CPU : MT_DEVICE_CUDA;
        } else if (!strcmp(a, "--precision") && v && (!strcmp(v, "bf16") || !strcmp(v, "fp32"))) {
            cfg.precision = !strcmp(v, "bf16") ? MT_PRECISION_BF16 : MT_PRECISION_FP32;
        } else {
            fprintf(stderr, "mamba-train eval: unknown, incomplete or invalid argument \"%s\"\n", a);
            usage(stderr);
            return 2;
        }
        if (n == 0)
            return 2;
        i++;
    }
    if (!cfg.model_dir || !cfg.data) {
        fprintf(stderr, "mamba-train eval: --model and --data are required\n");
        usage(stderr);
        return 2;
    }
    char err[1024];
    mt_eval_result res;
    if (!mt_evaluate(&cfg, &res, err, sizeof err)) {
        fprintf(stderr, "mamba-train eval: %s\n", err);
        return 1;
    }
    printf("eval %s: %lld batches of %d x %d tokens on %s, loss %.6f, perplexity %.4f", cfg.model_dir,
           (long long)res.batches, cfg.batch_size, cfg.seq_len, res.cuda ? "the GPU" : "the CPU", res.loss,
           res.perplexity);
    if (res.accuracy == res.accuracy)
        printf(", answer accuracy %.4f (%lld answers)", res.accuracy, (long long)res.scored);
    printf("\n");
    return 0;
}

static int plot_main(int argc, char **argv)
{
    const char *out = NULL;
    const char **dirs = calloc((size_t)argc, sizeof *dirs);
    if (!dirs) {
        fprintf(stderr, "mamba-train plot: out of memory\n");
        return 1;
    }
    int n_dirs = 0;
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--out") && i + 1 < argc) {
            out = argv[++i];
        } else if (!strncmp(argv[i], "--", 2)) {
            fprintf(stderr, "mamba-train plot: unknown or incomplete argument \"%s\"\n", argv[i]);
            usage(stderr);
            free(dirs);
            return 2;
        } else {
            dirs[n_dirs++] = argv[i];
        }
    }
    if (!out || n_dirs == 0) {
        fprintf(stderr, "mamba-train plot: one or more run directories and --out are required\n");
        usage(stderr);
        free(dirs);
        return 2;
    }
    char err[1024];
    const bool ok = mt_plot_runs(dirs, n_dirs, out, err, sizeof err);
    free(dirs);
    if (!ok) {
        fprintf(stderr, "mamba-train plot: %s\n", err);
        return 1;
    }
    printf("wrote %s (%d run%s)\n", out, n_dirs, n_dirs > 1 ? "s" : "");
    return 0;
}

int main(int argc, char **argv)
{
    if (argc > 1 && !strcmp(argv[1], "export"))
        return export_main(argc, argv);
    if (argc > 1 && !strcmp(argv[1], "plot"))
        return plot_main(argc, argv);
    if (argc > 1 && !strcmp(argv[1], "eval"))
        return eval_main(argc, argv);
    if (argc > 1 && !strcmp(argv[1], "generate"))
        return generate_main(argc, argv);
    const char *config = NULL, *resume = NULL, *out = NULL;
    const char *sets[256];
    int n_sets = 0, gpus = 1;
    bool overwrite = false;
    if (argc > 600) {
        fprintf(stderr, "mamba-train: %d arguments are too many\n", argc);
        return 2;
    }
    char *rank_argv[601]; /* argv without --gpus N, for the ranks */
    int rank_argc = 0;
    rank_argv[rank_argc++] = argv[0];
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const int first = i;
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
        } else if (!strcmp(a, "--overwrite")) {
            overwrite = true;
        } else if (!strcmp(a, "--resume")) {
            resume = (i + 1 < argc && strncmp(argv[i + 1], "--", 2) != 0) ? argv[++i] : "auto";
        } else if (!strcmp(a, "--gpus") && i + 1 < argc) {
            char *end;
            long n = strtol(argv[++i], &end, 10);
            if (*end || n < 1 || n > 1024) {
                fprintf(stderr, "mamba-train: --gpus \"%s\" is not a number of GPUs\n", argv[i]);
                return 2;
            }
            gpus = (int)n;
            continue;
        } else {
            fprintf(stderr, "mamba-train: unknown or incomplete argument \"%s\"\n", a);
            usage(stderr);
            return 2;
        }
        for (int k = first; k <= i; k++)
            rank_argv[rank_argc++] = argv[k];
    }
    rank_argv[rank_argc] = NULL;
    if (resume && overwrite) {
        fprintf(stderr, "mamba-train: --resume continues a run and --overwrite starts afresh: give one of them\n");
        return 2;
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
    mt_rendezvous rv;
    if (!mt_rendezvous_from_env(&rv, err, sizeof err)) {
        fprintf(stderr, "mamba-train: %s\n", err);
        return 2;
    }
    if (gpus > 1) {
        if (rv.world > 1) {
            fprintf(stderr, "mamba-train: --gpus %d under a launcher (WORLD_SIZE=%d): use one or the other\n", gpus,
                    rv.world);
            return 2;
        }
        return mt_launch_local(gpus, rank_argv);
    }
    if (rv.rank == 0) {
        printf("# mamba-train: effective config (%s)\n", config);
        mt_train_config_write(stdout, &cfg);
        printf("\n");
    }
    mt_train_result res;
    mt_train_options opt = {.resume = resume, .overwrite = overwrite};
    ok = mt_launch_rank(&rv, &cfg, &opt, &res, err, sizeof err);
    if (!ok)
        fprintf(stderr, "mamba-train: %s\n", err);
    fflush(stderr);
    mt_rendezvous_finish(&rv, ok);
    if (!ok)
        return 1;
    const int status = res.stopped_by_signal ? MT_EXIT_STOPPED_BY_SIGNAL : 0;
    if (rv.rank != 0)
        return status;
    printf("%s: %lld steps, last loss %.4f", res.stopped_by_signal ? "stopped on a signal" : "done",
           (long long)res.steps_done, res.last_loss);
    if (res.eval_loss == res.eval_loss)
        printf(", eval loss %.4f", res.eval_loss);
    if (res.eval_accuracy == res.eval_accuracy)
        printf(", eval accuracy %.3f", res.eval_accuracy);
    printf("%s\n", res.stopped_by_signal ? " (continue with --resume auto)" : "");
    return status;
}
