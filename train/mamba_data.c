/* mamba-data: writes token shards without dependencies: byte-level text and
 * the synthetic tasks of src/data/synthetic.h; and tokenizes text with a
 * Hugging Face tokenizer.json (src/text/tokenizer.h), or decodes ids.
 * Exit codes: 0 done, 1 the shard could not be made or the text not
 * tokenized (unreadable input, unwritable output, a tokenizer it cannot
 * read), 2 bad usage. */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "data/shard.h"
#include "data/synthetic.h"
#include "io/file_io.h"
#include "text/tokenizer.h"

#define EXIT_USAGE 2
#define MAX_INPUTS 4096

static const char usage_synopsis[] =
    "usage:\n"
    "  mamba-data text --input FILE [--input FILE ...] --out PATH [--doc-sep blank-line|file]\n"
    "  mamba-data selective-copy --out PATH --examples N --seq-len L [--vocab V] [--memorize K] [--seed S]\n"
    "  mamba-data induction --out PATH --examples N --seq-len L [--vocab V] [--seed S]\n"
    "  mamba-data tokenize --tokenizer JSON (--text TEXT | --input FILE [--input FILE ...]) [--special-as-text]\n"
    "  mamba-data tokenize --tokenizer JSON --decode --ids ID,ID,...\n";

static const char usage_details[] =
    "\n"
    "text            byte-level shard (vocab 257, EOS 256, tokenizer \"bytes\"); every document\n"
    "                is followed by EOS. --doc-sep file (default): each input file is one\n"
    "                document; blank-line: paragraphs separated by blank lines are documents.\n"
    "selective-copy  N examples of seq-len + 1 tokens: K data tokens scattered among noise,\n"
    "                a copy marker, then the K data tokens in order (scored by /loss_mask).\n"
    "                Defaults: --vocab 16 (3 special ids + 13 data tokens), --memorize 16.\n"
    "induction       N examples of seq-len + 1 tokens: random tokens with a trigger once\n"
    "                followed by X, ending with the trigger and X (X scored). Default --vocab 16.\n"
    "                Both synthetic tasks: one document per example, --seed 0 by default;\n"
    "                example i depends only on (seed, i).\n"
    "tokenize        encodes with a Hugging Face tokenizer.json of the byte-level BPE kind\n"
    "                (GPT-NeoX's, GPT-2's) and prints the ids, space separated, one line for\n"
    "                --text or for each --input, as tokenizers' encode(text,\n"
    "                add_special_tokens=False). Special tokens in the text (<|endoftext|>)\n"
    "                are recognized, unless --special-as-text. --decode prints the text of\n"
    "                --ids (separated by commas or spaces), then a newline.\n"
    "\n"
    "Flags take their value as the next argument or after '=' (--seq-len=256).\n"
    "Exit codes: 0 done, 1 the shard could not be made or the text not tokenized, 2 bad usage.\n";

typedef struct cli {
    const char *command, *out;
    const char *inputs[MAX_INPUTS];
    int n_inputs;
    mt_doc_sep doc_sep;
    int64_t examples;
    mt_synth_config synth;
    const char *tokenizer, *text, *ids; /* tokenize */
    bool decode, special_as_text;
} cli;

/* Prints the complaint and the synopsis to stderr and exits with the usage code. */
#if defined(__GNUC__)
__attribute__((noreturn, format(printf, 1, 2)))
#endif
static void usage_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "mamba-data: ");
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n%s(mamba-data --help says more)\n", usage_synopsis);
    exit(EXIT_USAGE);
}

/* The whole of s as an integer in [lo, hi]; a usage error naming flag otherwise. */
static int64_t parse_int(const char *flag, const char *s, int64_t lo, int64_t hi)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < lo || v > hi)
        usage_error("%s %s: expected an integer in [%lld, %lld]", flag, s, (long long)lo, (long long)hi);
    return v;
}

/* The seed: any unsigned 64-bit integer. */
static uint64_t parse_seed(const char *s)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || s[0] == '-')
        usage_error("--seed %s: expected an integer in [0, 2^64)", s);
    return v;
}

static const char *const text_flags[] = {"--out", "--input", "--doc-sep", NULL};
static const char *const copy_flags[] = {"--out", "--examples", "--seq-len", "--vocab", "--memorize", "--seed", NULL};
static const char *const induction_flags[] = {"--out", "--examples", "--seq-len", "--vocab", "--seed", NULL};
static const char *const tokenize_flags[] = {"--tokenizer", "--text",           "--input", "--ids",
                                             "--decode",    "--special-as-text", NULL};
/* Flags that take no value. */
static const char *const switch_flags[] = {"--decode", "--special-as-text", NULL};

static bool in_list(const char *const *list, const char *flag)
{
    for (; *list; list++)
        if (strcmp(*list, flag) == 0)
            return true;
    return false;
}

/* Exits with a usage error unless flag is one of the command's. */
static void check_flag(const char *command, const char *flag)
{
    const char *const *mine = strcmp(command, "text") == 0             ? text_flags
                              : strcmp(command, "selective-copy") == 0 ? copy_flags
                              : strcmp(command, "tokenize") == 0       ? tokenize_flags
                                                                       : induction_flags;
    if (in_list(mine, flag))
        return;
    if (in_list(text_flags, flag) || in_list(copy_flags, flag) || in_list(tokenize_flags, flag))
        usage_error("flag %s does not apply to %s", flag, command);
    usage_error("unknown flag %s", flag);
}

/* The full usage on stdout, then exits: asking for help is no error. */
static void print_help(void)
{
    fputs(usage_synopsis, stdout);
    fputs(usage_details, stdout);
    exit(0);
}

/* Reads the command line into c; usage errors exit. */
static void parse_args(int argc, char **argv, cli *c)
{
    if (argc < 2)
        usage_error("no command given");
    if (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "help") == 0)
        print_help();
    c->command = argv[1];
    if (strcmp(c->command, "text") != 0 && strcmp(c->command, "selective-copy") != 0 &&
        strcmp(c->command, "induction") != 0 && strcmp(c->command, "tokenize") != 0)
        usage_error("unknown command '%s'", c->command);
    c->synth.task = strcmp(c->command, "selective-copy") == 0 ? MT_TASK_SELECTIVE_COPY : MT_TASK_INDUCTION;
    c->synth.vocab_size = 16;
    c->synth.n_memorize = 16;
    c->doc_sep = MT_DOC_PER_FILE;
    c->examples = -1;
    c->synth.seq_len = -1;
    for (int i = 2; i < argc; i++) {
        char flag[64];
        const char *arg = argv[i], *eq = strchr(arg, '='), *value;
        if (strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0)
            print_help();
        if (strncmp(arg, "--", 2) != 0)
            usage_error("unexpected argument '%s'", arg);
        size_t len = eq ? (size_t)(eq - arg) : strlen(arg);
        if (len >= sizeof flag)
            usage_error("unknown flag '%s'", arg);
        memcpy(flag, arg, len);
        flag[len] = '\0';
        check_flag(c->command, flag);
        if (in_list(switch_flags, flag)) {
            if (eq)
                usage_error("flag %s takes no value", flag);
            if (strcmp(flag, "--decode") == 0)
                c->decode = true;
            else
                c->special_as_text = true;
            continue;
        }
        if (eq)
            value = eq + 1;
        else if (i + 1 < argc)
            value = argv[++i];
        else
            usage_error("flag %s needs a value", flag);
        if (strcmp(flag, "--out") == 0)
            c->out = value;
        else if (strcmp(flag, "--tokenizer") == 0)
            c->tokenizer = value;
        else if (strcmp(flag, "--text") == 0) {
            if (c->text)
                usage_error("--text is given twice");
            c->text = value;
        } else if (strcmp(flag, "--ids") == 0)
            c->ids = value;
        else if (strcmp(flag, "--input") == 0) {
            if (c->n_inputs == MAX_INPUTS)
                usage_error("more than %d --input files", MAX_INPUTS);
            c->inputs[c->n_inputs++] = value;
        } else if (strcmp(flag, "--doc-sep") == 0) {
            if (strcmp(value, "file") == 0)
                c->doc_sep = MT_DOC_PER_FILE;
            else if (strcmp(value, "blank-line") == 0)
                c->doc_sep = MT_DOC_PER_PARAGRAPH;
            else
                usage_error("--doc-sep %s: expected blank-line or file", value);
        } else if (strcmp(flag, "--examples") == 0)
            c->examples = parse_int(flag, value, 1, INT64_MAX);
        else if (strcmp(flag, "--seq-len") == 0)
            c->synth.seq_len = parse_int(flag, value, 1, INT64_MAX);
        else if (strcmp(flag, "--vocab") == 0)
            c->synth.vocab_size = parse_int(flag, value, 1, INT64_MAX);
        else if (strcmp(flag, "--memorize") == 0)
            c->synth.n_memorize = parse_int(flag, value, 1, INT64_MAX);
        else
            c->synth.seed = parse_seed(value);
    }
    if (strcmp(c->command, "tokenize") == 0) {
        if (!c->tokenizer)
            usage_error("--tokenizer JSON is required");
        if (c->decode && (!c->ids || c->text || c->n_inputs > 0 || c->special_as_text))
            usage_error("--decode takes --ids ID,ID,... (and no --text, --input or --special-as-text)");
        if (!c->decode && (c->ids || (c->text != NULL) == (c->n_inputs > 0)))
            usage_error("tokenize takes --text TEXT or --input FILE (or --decode --ids ID,ID,...)");
        return;
    }
    if (!c->out)
        usage_error("--out PATH is required");
    if (strcmp(c->command, "text") == 0) {
        if (c->n_inputs == 0)
            usage_error("--input FILE is required");
        return;
    }
    if (c->examples < 0)
        usage_error("--examples N is required");
    if (c->synth.seq_len < 0)
        usage_error("--seq-len L is required");
    char err[512];
    if (!mt_synth_validate(&c->synth, err, sizeof err))
        usage_error("%s", err);
}

/* Fails early, before any work, when the shard could not be put at path:
 * its directory must exist and be writable, and path must not be a directory. */
static bool check_output_path(const char *path)
{
    struct stat st;
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
        fprintf(stderr, "mamba-data: --out %s: is a directory\n", path);
        return false;
    }
    char dir[PATH_MAX];
    const char *slash = strrchr(path, '/');
    if (!slash)
        snprintf(dir, sizeof dir, ".");
    else if (slash == path)
        snprintf(dir, sizeof dir, "/");
    else
        snprintf(dir, sizeof dir, "%.*s", (int)(slash - path), path);
    if (access(dir, W_OK | X_OK) != 0) {
        fprintf(stderr, "mamba-data: --out %s: cannot write in directory %s: %s\n", path, dir, strerror(errno));
        return false;
    }
    return true;
}

/* The ids of s, separated by commas or white space (malloc'ed); a usage
 * error on anything else. */
static int32_t *parse_ids(const char *s, int64_t *n)
{
    /* Ids are one digit or more with a separator between: at most (length + 1) / 2. */
    int32_t *ids = malloc((strlen(s) / 2 + 1) * sizeof *ids);
    if (!ids) {
        fprintf(stderr, "mamba-data: out of memory for --ids\n");
        exit(1);
    }
    *n = 0;
    for (const char *p = s;;) {
        while (*p == ',' || isspace((unsigned char)*p))
            p++;
        if (*p == '\0')
            return ids;
        char *end;
        errno = 0;
        const long long v = strtoll(p, &end, 10);
        const bool separated = *end == '\0' || *end == ',' || isspace((unsigned char)*end);
        if (errno != 0 || end == p || v < 0 || v > INT32_MAX || !separated) {
            const int len = (int)strcspn(p, ", \t\n");
            free(ids);
            usage_error("--ids: '%.*s' is not a token id (an integer in [0, 2^31))", len, p);
        }
        ids[(*n)++] = (int32_t)v;
        p = end;
    }
}


/* Prints the ids of text on one line. */
static bool print_encoded(const mt_tokenizer *t, const char *what, const char *text, size_t len, bool special_as_text)
{
    char err[1024];
    int32_t *ids;
    int64_t n;
    if (!mt_tokenizer_encode(t, text, len, special_as_text, &ids, &n, err, sizeof err)) {
        fprintf(stderr, "mamba-data: %s: %s\n", what, err);
        return false;
    }
    for (int64_t i = 0; i < n; i++)
        printf(i ? " %d" : "%d", ids[i]);
    putchar('\n');
    free(ids);
    return true;
}

/* tokenize: encodes --text or each --input, or decodes --ids. A failed
 * write to stdout shows in ferror at the end. */
static int run_tokenize(const cli *c)
{
    /* --ids first: a usage error exits before anything is allocated. */
    int64_t n = 0;
    int32_t *ids = c->decode ? parse_ids(c->ids, &n) : NULL;
    char err[1024];
    mt_tokenizer *t = mt_tokenizer_load(c->tokenizer, err, sizeof err);
    if (!t) {
        fprintf(stderr, "mamba-data: %s\n", err);
        free(ids);
        return 1;
    }
    bool ok = true;
    if (c->decode) {
        size_t len;
        char *text = mt_tokenizer_decode(t, ids, n, &len, err, sizeof err);
        if (text) {
            fwrite(text, 1, len, stdout);
            putchar('\n');
        } else {
            fprintf(stderr, "mamba-data: --ids: %s\n", err);
            ok = false;
        }
        free(text);
    } else if (c->text) {
        ok = print_encoded(t, "--text", c->text, strlen(c->text), c->special_as_text);
    }
    for (int i = 0; ok && i < c->n_inputs; i++) {
        size_t len;
        char why[1200];
        char *text = mt_read_file(c->inputs[i], 0, &len, why, sizeof why);
        if (!text)
            fprintf(stderr, "mamba-data: --input %s\n", why);
        ok = text && print_encoded(t, c->inputs[i], text, len, c->special_as_text);
        free(text);
    }
    free(ids);
    mt_tokenizer_free(t);
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "mamba-data: cannot write the output: %s\n", strerror(errno));
        return 1;
    }
    return ok ? 0 : 1;
}

int main(int argc, char **argv)
{
    static cli c;
    parse_args(argc, argv, &c);
    if (strcmp(c.command, "tokenize") == 0)
        return run_tokenize(&c);
    if (!check_output_path(c.out))
        return 1;
    char err[1024];
    bool text = strcmp(c.command, "text") == 0;
    bool ok = text ? mt_text_write_shard(c.inputs, c.n_inputs, c.doc_sep, c.out, err, sizeof err)
                   : mt_synth_write_shard(&c.synth, c.examples, c.out, err, sizeof err);
    if (!ok) {
        fprintf(stderr, "mamba-data: %s\n", err);
        return 1;
    }
    /* Reading the shard back checks it and gives the numbers to report. */
    mt_shard *s = mt_shard_open(c.out, err, sizeof err);
    if (!s) {
        fprintf(stderr, "mamba-data: wrote %s but cannot read it back: %s\n", c.out, err);
        return 1;
    }
    const mt_shard_info *in = mt_shard_get_info(s);
    printf("wrote %s: %lld tokens, %lld documents, vocab %lld, eos %lld, tokenizer \"%s\"%s\n", c.out,
           (long long)in->n_tokens, (long long)in->n_docs, (long long)in->vocab_size, (long long)in->eos_id,
           in->tokenizer, in->has_loss_mask ? ", with /loss_mask" : "");
    mt_shard_close(s);
    return 0;
}
