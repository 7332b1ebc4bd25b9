/* mamba-train generate: text (or ids) from a checkpoint or a released model
 * directory, streamed as it is chosen.
 *
 *   mamba-train generate --model DIR [--tokenizer tokenizer.json]
 *       (--prompt TEXT | --prompt-ids 1,2,3 | --prompt-file F | --prompts-file F) [--max-new-tokens N]
 *       [--temperature T] [--top-k K] [--top-p P] [--min-p M] [--repetition-penalty R]
 *       [--seed S] [--batch N] [--eos-id ID] [--device auto|cpu|cuda] [--precision bf16|fp32]
 *
 * The defaults are the reference's generate's: greedy (top-k 1), no
 * penalty. With a tokenizer the first row is printed as text as it grows
 * and the end of text token stops a row; --batch N runs N copies of the
 * prompt (different draws when sampling); --prompts-file runs one prompt a
 * line in one batch (text, or ids without a tokenizer), of any lengths. It
 * ends with the prefill time, the time per decoded token and the tokens/s. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "generate/generate.h"
#include "io/file_io.h"
#include "text/tokenizer.h"
#include "train/evaluate.h"
#include "train/pretrained.h"

int generate_main(int argc, char **argv);

typedef struct stream {
    const mt_tokenizer *tok;
    int32_t *ids; /* row 0's new tokens */
    int64_t n;
    size_t printed; /* bytes of their text already written */
} stream;

static void on_token(void *user, int64_t row, int32_t token)
{
    stream *s = user;
    if (row != 0)
        return;
    s->ids[s->n++] = token;
    if (!s->tok) {
        printf("%s%d", s->n > 1 ? " " : "", token);
        fflush(stdout);
        return;
    }
    char err[256];
    size_t len;
    char *text = mt_tokenizer_decode(s->tok, s->ids, s->n, &len, err, sizeof err);
    if (text && len > s->printed) { /* a partial UTF-8 character shows as U+FFFD until it is whole */
        fwrite(text + s->printed, 1, len - s->printed, stdout);
        fflush(stdout);
        s->printed = len;
    }
    free(text);
}

static bool number(const char *flag, const char *v, double lo, double hi, double *out)
{
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (errno || *end || end == v || !(x >= lo && x <= hi)) {
        fprintf(stderr, "mamba-train generate: %s \"%s\" is not a number in [%g, %g]\n", flag, v, lo, hi);
        return false;
    }
    *out = x;
    return true;
}

/* The prompts of a file, one a line (blank lines skipped): each encoded
 * with tok, or read as ids without one, packed into rows (*batch, *width)
 * with each row's length in *lens (both malloc'ed). */
static bool read_prompts(const char *path, const mt_tokenizer *tok, int32_t **rows, int64_t **lens, int64_t *batch,
                         int64_t *width, char *err, size_t errlen)
{
    char *text = mt_read_file(path, (size_t)64 << 20, NULL, err, errlen);
    if (!text)
        return false;
    int64_t cap = 16, n = 0;
    int32_t **ids = malloc((size_t)cap * sizeof *ids);
    int64_t *len = malloc((size_t)cap * sizeof *len);
    bool ok = ids && len;
    *width = 0;
    for (char *line = text, *next; ok && line && *line; line = next) {
        next = strchr(line, '\n');
        if (next)
            *next++ = '\0';
        if (line[strspn(line, " \t\r")] == '\0')
            continue;
        if (n == cap) {
            cap *= 2;
            ids = realloc(ids, (size_t)cap * sizeof *ids);
            len = realloc(len, (size_t)cap * sizeof *len);
            if (!(ok = ids && len))
                break;
        }
        ids[n] = NULL;
        if (tok)
            ok = mt_tokenizer_encode(tok, line, strlen(line), false, &ids[n], &len[n], err, errlen);
        else if (!(ok = mt_parse_token_ids(line, &ids[n], &len[n])))
            snprintf(err, errlen, "%s: line %lld is not a list of token ids (give --tokenizer for text)", path,
                     (long long)n + 1);
        if (ok && len[n] == 0) {
            snprintf(err, errlen, "%s: the prompt of line %lld has no tokens", path, (long long)n + 1);
            ok = false;
        }
        if (!ok) {
            free(ids[n]);
            break;
        }
        if (len[n] > *width)
            *width = len[n];
        n++;
    }
    if (ok && n == 0) {
        snprintf(err, errlen, "%s: no prompts", path);
        ok = false;
    }
    if (ok) {
        *rows = calloc((size_t)(n * *width), sizeof **rows);
        if (!(ok = *rows != NULL))
            snprintf(err, errlen, "out of host memory for %lld prompts", (long long)n);
        for (int64_t b = 0; ok && b < n; b++)
            memcpy(*rows + b * *width, ids[b], (size_t)len[b] * sizeof **rows);
    }
    for (int64_t b = 0; ids && b < n; b++)
        free(ids[b]);
    free(ids);
    free(text);
    if (!ok) {
        free(len);
        if (!err[0])
            snprintf(err, errlen, "out of host memory reading %s", path);
        return false;
    }
    *lens = len;
    *batch = n;
    return true;
}

int generate_main(int argc, char **argv)
{
    const char *model_dir = NULL, *tok_path = NULL, *text = NULL, *ids_text = NULL, *file = NULL, *prompts = NULL;
    double max_new = 64, batch = 1, seed = 0, eos = -2;
    mt_sampling sampling = mt_sampling_greedy();
    sampling.temperature = 1; /* with top-k 1, greedy: the reference's defaults */
    mt_device_choice device = MT_DEVICE_AUTO;
    mt_precision precision = MT_PRECISION_BF16;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        double k;
        bool ok = v != NULL;
        if (!v)
            ;
        else if (!strcmp(a, "--model"))
            model_dir = v;
        else if (!strcmp(a, "--tokenizer"))
            tok_path = v;
        else if (!strcmp(a, "--prompt"))
            text = v;
        else if (!strcmp(a, "--prompt-ids"))
            ids_text = v;
        else if (!strcmp(a, "--prompt-file"))
            file = v;
        else if (!strcmp(a, "--prompts-file"))
            prompts = v;
        else if (!strcmp(a, "--max-new-tokens"))
            ok = number(a, v, 1, 1e7, &max_new);
        else if (!strcmp(a, "--batch"))
            ok = number(a, v, 1, 65536, &batch);
        else if (!strcmp(a, "--seed"))
            ok = number(a, v, 0, 9.0e15, &seed);
        else if (!strcmp(a, "--eos-id"))
            ok = number(a, v, -1, INT32_MAX, &eos);
        else if (!strcmp(a, "--temperature"))
            ok = number(a, v, 0, 1e6, &sampling.temperature);
        else if (!strcmp(a, "--top-k") && (ok = number(a, v, 0, INT32_MAX, &k)))
            sampling.top_k = (int)k;
        else if (!strcmp(a, "--top-p"))
            ok = number(a, v, 0, 1, &sampling.top_p);
        else if (!strcmp(a, "--min-p"))
            ok = number(a, v, 0, 0.999999, &sampling.min_p);
        else if (!strcmp(a, "--repetition-penalty"))
            ok = number(a, v, 1e-6, 1e6, &sampling.repetition_penalty);
        else if (!strcmp(a, "--device") && (!strcmp(v, "auto") || !strcmp(v, "cpu") || !strcmp(v, "cuda")))
            device = !strcmp(v, "auto") ? MT_DEVICE_AUTO : !strcmp(v, "cpu") ? MT_DEVICE_CPU : MT_DEVICE_CUDA;
        else if (!strcmp(a, "--precision") && (!strcmp(v, "bf16") || !strcmp(v, "fp32")))
            precision = !strcmp(v, "bf16") ? MT_PRECISION_BF16 : MT_PRECISION_FP32;
        else
            ok = false;
        if (!ok) {
            fprintf(stderr, "mamba-train generate: unknown, incomplete or invalid argument \"%s\"\n", a);
            return 2;
        }
        i++;
    }
    if (!model_dir || (!!text + !!ids_text + !!file + !!prompts) != 1) {
        fprintf(stderr, "mamba-train generate: --model and one of --prompt, --prompt-ids, --prompt-file, "
                        "--prompts-file are required\n");
        return 2;
    }
    if (prompts && batch != 1) {
        fprintf(stderr, "mamba-train generate: --prompts-file makes its own batch (one prompt a line): no --batch\n");
        return 2;
    }
    if ((text || file) && !tok_path) {
        fprintf(stderr, "mamba-train generate: a text prompt needs --tokenizer tokenizer.json\n");
        return 2;
    }
    sampling.seed = (uint64_t)seed;

    char err[1024] = "";
    int status = 1;
    mt_tokenizer *tok = NULL;
    mt_backend *be = NULL;
    mt_model m;
    bool built = false;
    int32_t *prompt = NULL, *rows = NULL, *out = NULL;
    int64_t *lens = NULL;
    char *file_text = NULL;
    int64_t n = 0, B = (int64_t)batch, tokens = 0;
    stream st = {0};
    if (tok_path && !(tok = mt_tokenizer_load(tok_path, err, sizeof err)))
        goto fail;
    if (prompts) {
        if (!read_prompts(prompts, tok, &rows, &lens, &B, &n, err, sizeof err))
            goto fail;
        for (int64_t b = 0; b < B; b++)
            tokens += lens[b];
    } else {
        if (file && !(file_text = mt_read_file(file, (size_t)64 << 20, NULL, err, sizeof err)))
            goto fail;
        if (file)
            text = file_text;
        if (text && !mt_tokenizer_encode(tok, text, strlen(text), false, &prompt, &n, err, sizeof err))
            goto fail;
        if (ids_text && !mt_parse_token_ids(ids_text, &prompt, &n)) {
            fprintf(stderr, "mamba-train generate: --prompt-ids \"%s\": not a list of token ids\n", ids_text);
            status = 2;
            goto done;
        }
        if (n == 0) {
            snprintf(err, sizeof err, "the prompt has no tokens");
            goto fail;
        }
        if (!(rows = malloc((size_t)(B * n) * sizeof *rows))) {
            snprintf(err, sizeof err, "out of host memory for %lld prompts", (long long)B);
            goto fail;
        }
        for (int64_t b = 0; b < B; b++)
            memcpy(rows + b * n, prompt, (size_t)n * sizeof *rows);
        tokens = B * n;
    }
    mt_model_config mc;
    mt_device dev;
    mt_dtype compute;
    if (!mt_pretrained_config(model_dir, &mc, err, sizeof err) ||
        !mt_open_run_backend(device, precision, &be, &dev, &compute, err, sizeof err))
        goto fail;
    mt_model_build(&m, &mc, dev, MT_F32);
    built = true;
    if (!mt_pretrained_load(model_dir, &m, err, sizeof err))
        goto fail;
    const int64_t N = (int64_t)max_new, W = n + N;
    out = malloc((size_t)(B * W) * sizeof *out);
    st.ids = malloc((size_t)N * sizeof *st.ids);
    if (!out || !st.ids) {
        snprintf(err, sizeof err, "out of host memory for %lld rows of %lld tokens", (long long)B, (long long)W);
        goto fail;
    }
    st.tok = tok;
    if (eos == -2) /* the tokenizer's end of text, when it has one */
        eos = tok ? mt_tokenizer_token_id(tok, "<|endoftext|>") : -1;
    mt_generate_config gc = {.sampling = sampling, .max_new_tokens = N, .eos_id = (int32_t)eos, .compute = compute,
                             .on_token = on_token, .user = &st};
    mt_generate_result res;
    if (!mt_generate(be, &m, rows, B, n, lens, &gc, out, &res, err, sizeof err))
        goto fail;
    printf("\n");
    for (int64_t b = 1; b < B; b++) { /* the other rows, once done */
        const int64_t nb = lens ? lens[b] : n;
        printf("row %lld:", (long long)b);
        for (int64_t i = nb; i < nb + res.new_tokens; i++)
            printf(" %d", out[b * W + i]);
        printf("\n");
    }
    const int64_t steps = res.new_tokens > 1 ? res.new_tokens - 1 : 0;
    printf("generated %lld new tokens a row (batch %lld) on %s: prefill %.1f ms (%lld tokens), %.2f ms per decoded "
           "token, %.0f new tokens/s\n",
           (long long)res.new_tokens, (long long)B, dev == MT_CUDA ? "the GPU" : "the CPU", res.prefill_ms,
           (long long)tokens, steps ? res.decode_ms / (double)steps : 0.0,
           steps ? (double)(steps * B) / (res.decode_ms * 1e-3) : 0.0);
    status = 0;
    goto done;
fail:
    fprintf(stderr, "mamba-train generate: %s\n", err);
done:
    free(prompt);
    free(rows);
    free(lens);
    free(out);
    free(st.ids);
    free(file_text);
    if (built)
        mt_model_release(&m);
    if (be)
        be->destroy(be);
    mt_tokenizer_free(tok);
    return status;
}
