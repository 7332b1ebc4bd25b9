#include "data/synthetic.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/rng.h"
#include "core/error.h"
#include "data/shard.h"
#include "io/file_io.h"

/* Limits that keep every position and id draw within 32 bits. */
#define MAX_SEQ_LEN ((int64_t)1 << 30)
#define MAX_VOCAB ((int64_t)INT32_MAX)

const char *mt_synth_task_name(mt_synth_task task)
{
    return task == MT_TASK_SELECTIVE_COPY ? "selective-copy" : "induction";
}

bool mt_synth_validate(const mt_synth_config *c, char *err, size_t errlen)
{
    const char *name = mt_synth_task_name(c->task);
    if (c->task != MT_TASK_SELECTIVE_COPY && c->task != MT_TASK_INDUCTION)
        return mt_errorf(err, errlen, "unknown synthetic task %d", (int)c->task);
    int64_t first_data = c->task == MT_TASK_SELECTIVE_COPY ? MT_COPY_FIRST_DATA : MT_INDUCTION_FIRST_DATA;
    /* One data token would make every answer the same. */
    if (c->vocab_size < first_data + 2 || c->vocab_size > MAX_VOCAB)
        return mt_errorf(err, errlen, "%s: vocab size %lld must be in [%lld, %lld] (%lld special ids plus at least 2 data "
                    "tokens)", name, (long long)c->vocab_size, (long long)(first_data + 2), (long long)MAX_VOCAB,
                    (long long)first_data);
    if (c->seq_len < 1 || c->seq_len > MAX_SEQ_LEN)
        return mt_errorf(err, errlen, "%s: seq_len %lld must be in [1, %lld]", name, (long long)c->seq_len,
                    (long long)MAX_SEQ_LEN);
    if (c->task == MT_TASK_SELECTIVE_COPY) {
        if (c->n_memorize < 1)
            return mt_errorf(err, errlen, "%s: memorize %lld must be at least 1", name, (long long)c->n_memorize);
        /* seq_len + 1 = (seq_len - K) context + marker + K answers, and the context holds the K data tokens. */
        if (c->seq_len < 2 * c->n_memorize)
            return mt_errorf(err, errlen, "%s: seq_len %lld is too short to memorize %lld tokens: it needs at least 2 x "
                        "memorize = %lld", name, (long long)c->seq_len, (long long)c->n_memorize,
                        (long long)(2 * c->n_memorize));
    } else if (c->seq_len < 3) {
        /* The shortest example: trigger X trigger X. */
        return mt_errorf(err, errlen, "%s: seq_len %lld is too short: it needs at least 3", name, (long long)c->seq_len);
    }
    return true;
}

/* The random words of one example: a Philox stream under a key drawn from
 * (seed, index), so examples are independent of one another. */
typedef struct example_rng {
    uint64_t key, ctr;
    uint32_t block[4];
    int used;
} example_rng;

static example_rng example_rng_init(uint64_t seed, uint64_t index)
{
    uint32_t k[4];
    mt_philox4x32(seed, index, k);
    example_rng r = {.key = (uint64_t)k[0] | (uint64_t)k[1] << 32, .ctr = 0, .used = 4};
    return r;
}

static uint32_t rng_u32(example_rng *r)
{
    if (r->used == 4) {
        mt_philox4x32(r->key, r->ctr++, r->block);
        r->used = 0;
    }
    return r->block[r->used++];
}

/* Uniform in [0, n) for 0 < n < 2^32, exactly: multiply-shift, rejecting the
 * few low products that would favour some values (Lemire). */
static uint32_t rng_below(example_rng *r, uint32_t n)
{
    uint64_t m = (uint64_t)rng_u32(r) * n;
    if ((uint32_t)m < n) {
        uint32_t threshold = (uint32_t)(-n) % n;
        while ((uint32_t)m < threshold)
            m = (uint64_t)rng_u32(r) * n;
    }
    return (uint32_t)(m >> 32);
}

void mt_selective_copy_example(const mt_synth_config *c, uint64_t index, int32_t *tokens, uint8_t *mask)
{
    example_rng r = example_rng_init(c->seed, index);
    const int64_t n = c->seq_len + 1, k = c->n_memorize, context = n - k - 1;
    const uint32_t n_data = (uint32_t)(c->vocab_size - MT_COPY_FIRST_DATA);
    for (int64_t i = 0; i < context; i++)
        tokens[i] = MT_COPY_NOISE;
    /* Floyd's sampling of k distinct positions in [0, context), marked
     * with the copy marker until they get their data tokens. */
    for (int64_t j = context - k; j < context; j++) {
        int64_t t = rng_below(&r, (uint32_t)(j + 1));
        tokens[tokens[t] == MT_COPY_NOISE ? t : j] = MT_COPY_MARKER;
    }
    int64_t answer = context + 1;
    for (int64_t i = 0; i < context; i++) {
        if (tokens[i] == MT_COPY_MARKER) {
            tokens[i] = MT_COPY_FIRST_DATA + (int32_t)rng_below(&r, n_data);
            tokens[answer++] = tokens[i];
        }
    }
    tokens[context] = MT_COPY_MARKER;
    memset(mask, 0, (size_t)(context + 1));
    memset(mask + context + 1, 1, (size_t)k);
}

void mt_induction_example(const mt_synth_config *c, uint64_t index, int32_t *tokens, uint8_t *mask)
{
    example_rng r = example_rng_init(c->seed, index);
    const int64_t n = c->seq_len + 1;
    const uint32_t n_data = (uint32_t)(c->vocab_size - MT_INDUCTION_FIRST_DATA);
    for (int64_t i = 0; i < n - 2; i++)
        tokens[i] = MT_INDUCTION_FIRST_DATA + (int32_t)rng_below(&r, n_data);
    /* p <= n - 4 keeps X at p + 1 clear of the final trigger at n - 2. */
    int64_t p = rng_below(&r, (uint32_t)(n - 3));
    tokens[p] = MT_INDUCTION_TRIGGER;
    tokens[n - 2] = MT_INDUCTION_TRIGGER;
    tokens[n - 1] = tokens[p + 1];
    memset(mask, 0, (size_t)(n - 1));
    mask[n - 1] = 1;
}

void mt_synth_example(const mt_synth_config *c, uint64_t index, int32_t *tokens, uint8_t *mask)
{
    if (c->task == MT_TASK_SELECTIVE_COPY)
        mt_selective_copy_example(c, index, tokens, mask);
    else
        mt_induction_example(c, index, tokens, mask);
}

/* The generator's parameters as its shards record them, in attributes named
 * recorded_attr (docs/data-format.md); the task and the vocabulary size are
 * the shard's tokenizer and vocab_size. */
enum { REC_VERSION, REC_SEQ_LEN, REC_MEMORIZE, REC_SEED, REC_EXAMPLES, N_RECORDED };
static const char *const recorded_attr[N_RECORDED] = {"synthetic_version", "synthetic_seq_len", "synthetic_memorize",
                                                      "synthetic_seed", "synthetic_examples"};
static const char *const recorded_label[N_RECORDED] = {"generator version", "seq_len", "memorize", "seed",
                                                       "examples"};

/* The values a shard of n_examples examples of c records. Induction does not
 * use n_memorize, so it records 0 and a change of it remakes nothing. */
static void recorded_values(const mt_synth_config *c, int64_t n_examples, uint64_t v[N_RECORDED])
{
    v[REC_VERSION] = MT_SYNTH_GENERATOR_VERSION;
    v[REC_SEQ_LEN] = (uint64_t)c->seq_len;
    v[REC_MEMORIZE] = c->task == MT_TASK_SELECTIVE_COPY ? (uint64_t)c->n_memorize : 0;
    v[REC_SEED] = c->seed;
    v[REC_EXAMPLES] = (uint64_t)n_examples;
}

/* Checks c and that n_examples examples of it fit in a shard. */
static bool check_request(const mt_synth_config *c, int64_t n_examples, const char *path, char *err, size_t errlen)
{
    if (!mt_synth_validate(c, err, errlen))
        return false;
    const int64_t n = c->seq_len + 1;
    if (n_examples < 1 || n_examples > INT64_MAX / n)
        return mt_errorf(err, errlen, "%s: %lld examples of %lld tokens: need at least 1, and fewer than 2^63 tokens",
                    path, (long long)n_examples, (long long)n);
    return true;
}

bool mt_synth_write_shard(const mt_synth_config *c, int64_t n_examples, const char *path, char *err, size_t errlen)
{
    if (!check_request(c, n_examples, path, err, errlen))
        return false;
    const int64_t n = c->seq_len + 1;
    int32_t *tokens = malloc((size_t)n * sizeof *tokens);
    uint8_t *mask = malloc((size_t)n);
    mt_shard_writer *w = NULL;
    bool ok = tokens && mask;
    if (!ok)
        mt_errorf(err, errlen, "%s: out of memory for an example of %lld tokens", path, (long long)n);
    if (ok) {
        w = mt_shard_writer_open(path, c->vocab_size, MT_SYNTH_EOS, mt_synth_task_name(c->task), true, err, errlen);
        ok = w != NULL;
    }
    uint64_t recorded[N_RECORDED];
    recorded_values(c, n_examples, recorded);
    for (int k = 0; ok && k < N_RECORDED; k++)
        ok = mt_shard_writer_add_uint_attr(w, recorded_attr[k], recorded[k], err, errlen);
    for (int64_t i = 0; ok && i < n_examples; i++) {
        mt_synth_example(c, (uint64_t)i, tokens, mask);
        ok = mt_shard_writer_append(w, tokens, mask, n, true, err, errlen);
    }
    if (ok) {
        ok = mt_shard_writer_close(w, 0, false, err, errlen);
        w = NULL;
    }
    mt_shard_writer_abort(w);
    free(tokens);
    free(mask);
    return ok;
}

/* What a shard was made with against what this run asks, one parameter each. */
enum { MAX_DIFFERENCES = N_RECORDED + 2 };
typedef char difference_text[320]; /* room for a label and a tokenizer name */
typedef struct differences {
    int n;
    difference_text was[MAX_DIFFERENCES], now[MAX_DIFFERENCES];
} differences;

static void add_difference(differences *d, const char *label, const char *was, const char *now)
{
    snprintf(d->was[d->n], sizeof d->was[0], "%s %s", label, was);
    snprintf(d->now[d->n], sizeof d->now[0], "%s", now);
    d->n++;
}

static void add_number_difference(differences *d, const char *label, uint64_t was, bool recorded, uint64_t now)
{
    char was_text[24], now_text[24];
    if (recorded)
        snprintf(was_text, sizeof was_text, "%llu", (unsigned long long)was);
    else
        snprintf(was_text, sizeof was_text, "(not recorded)");
    snprintf(now_text, sizeof now_text, "%llu", (unsigned long long)now);
    add_difference(d, label, was_text, now_text);
}

/* items[0..n) appended to out as "a", "a and b", "a, b and c". */
static void append_joined(char *out, size_t len, const difference_text *items, int n)
{
    for (int i = 0; i < n; i++) {
        size_t used = strlen(out);
        snprintf(out + used, len - used, "%s%s", i == 0 ? "" : i == n - 1 ? " and " : ", ", items[i]);
    }
}

/* Compares the recorded parameters of the open synthetic shard s with the
 * request; what differs goes into d. */
static void find_differences(mt_shard *s, const mt_synth_config *c, int64_t n_examples, differences *d)
{
    const mt_shard_info *in = mt_shard_get_info(s);
    uint64_t want[N_RECORDED];
    recorded_values(c, n_examples, want);
    const char *task = mt_synth_task_name(c->task);
    if (strcmp(in->tokenizer, task) != 0)
        add_difference(d, "task", in->tokenizer, task);
    if (in->vocab_size != c->vocab_size)
        add_number_difference(d, "vocab_size", (uint64_t)in->vocab_size, true, (uint64_t)c->vocab_size);
    for (int k = REC_SEQ_LEN; k < N_RECORDED; k++) {
        uint64_t got = 0;
        bool present = false;
        char ignored[256]; /* an unreadable value counts as not recorded: the shard is remade either way */
        bool ok = mt_shard_uint_attr(s, recorded_attr[k], &got, &present, ignored, sizeof ignored) && present;
        if (!ok || got != want[k])
            add_number_difference(d, recorded_label[k], got, ok, want[k]);
    }
    /* The same parameters over other contents: a shard edited since. */
    const int64_t tokens = n_examples * (c->seq_len + 1);
    if (d->n == 0 && (in->n_tokens != tokens || !in->has_loss_mask))
        add_number_difference(d, "tokens", (uint64_t)in->n_tokens, true, (uint64_t)tokens);
}

/* Whether the existing file at path holds the requested shard: 1 when it is
 * a synthetic shard made with other parameters (said in `differs`), 0 when
 * with these, -1 when it is not a synthetic shard (err says so). */
static int compare_shard(const mt_synth_config *c, int64_t n_examples, const char *path, char *differs,
                         size_t differs_len, char *err, size_t errlen)
{
    static const char move_away[] = "it is where the synthetic shard goes: move it away (it is not deleted)";
    char why[512];
    mt_shard *s = mt_shard_open(path, why, sizeof why);
    if (!s) {
        mt_errorf(err, errlen, "%s; %s", why, move_away);
        return -1;
    }
    uint64_t version = 0;
    bool present = false;
    if (!mt_shard_uint_attr(s, recorded_attr[REC_VERSION], &version, &present, why, sizeof why) || !present) {
        mt_errorf(err, errlen, "%s: not a synthetic shard of this generator (%s, as in shards generated before "
                  "their parameters were recorded); %s", path, present ? why : "no attribute synthetic_version",
                  move_away);
        mt_shard_close(s);
        return -1;
    }
    differences d = {0};
    if (version != MT_SYNTH_GENERATOR_VERSION)
        add_number_difference(&d, recorded_label[REC_VERSION], version, true, MT_SYNTH_GENERATOR_VERSION);
    else
        find_differences(s, c, n_examples, &d);
    mt_shard_close(s);
    if (d.n == 0)
        return 0;
    snprintf(differs, differs_len, "made with ");
    append_joined(differs, differs_len, d.was, d.n);
    snprintf(differs + strlen(differs), differs_len - strlen(differs), ", this run asks ");
    append_joined(differs, differs_len, d.now, d.n);
    return 1;
}

bool mt_synth_ensure_shard(const mt_synth_config *c, int64_t n_examples, const char *path, char *err, size_t errlen)
{
    if (!check_request(c, n_examples, path, err, errlen))
        return false;
    struct stat st;
    if (stat(path, &st) != 0) {
        if (errno != ENOENT)
            return mt_errorf(err, errlen, "%s: cannot look for the synthetic shard: %s", path, strerror(errno));
        return mt_synth_write_shard(c, n_examples, path, err, errlen);
    }
    char differs[1024];
    const int verdict = compare_shard(c, n_examples, path, differs, sizeof differs, err, errlen);
    if (verdict <= 0)
        return verdict == 0;
    printf("%s: %s: regenerating\n", path, differs);
    fflush(stdout);
    return mt_synth_write_shard(c, n_examples, path, err, errlen);
}

void mt_bytes_to_tokens(const uint8_t *bytes, int64_t n, int32_t *tokens)
{
    for (int64_t i = 0; i < n; i++)
        tokens[i] = bytes[i];
}

int64_t mt_tokens_to_bytes(const int32_t *tokens, int64_t n, uint8_t *bytes)
{
    int64_t out = 0;
    for (int64_t i = 0; i < n; i++) {
        if (tokens[i] < 0 || tokens[i] >= MT_BYTES_VOCAB)
            return -1;
        if (tokens[i] != MT_BYTES_EOS)
            bytes[out++] = (uint8_t)tokens[i];
    }
    return out;
}

static bool is_blank_line(const uint8_t *line, int64_t len)
{
    for (int64_t i = 0; i < len; i++)
        if (line[i] != ' ' && line[i] != '\t' && line[i] != '\r' && line[i] != '\n' && line[i] != '\f' &&
            line[i] != '\v')
            return false;
    return true;
}

bool mt_text_documents(const uint8_t *text, int64_t n, mt_doc_sep sep,
                       bool (*emit)(const uint8_t *doc, int64_t len, void *arg), void *arg)
{
    if (sep == MT_DOC_PER_FILE)
        return n == 0 || emit(text, n, arg);
    int64_t doc = -1; /* start of the paragraph being read, -1 between paragraphs */
    for (int64_t i = 0; i < n;) {
        const uint8_t *nl = memchr(text + i, '\n', (size_t)(n - i));
        int64_t end = nl ? nl - text + 1 : n;
        if (is_blank_line(text + i, end - i)) {
            if (doc >= 0 && !emit(text + doc, i - doc, arg))
                return false;
            doc = -1;
        } else if (doc < 0) {
            doc = i;
        }
        i = end;
    }
    return doc < 0 || emit(text + doc, n - doc, arg);
}


typedef struct text_writer {
    mt_shard_writer *w;
    int64_t n_docs;
    char *err;
    size_t errlen;
} text_writer;

/* Appends one document and its EOS, converting a bounded piece at a time so
 * a large document needs no token copy of its own. */
static bool append_document(const uint8_t *doc, int64_t len, void *arg)
{
    text_writer *tw = arg;
    int32_t piece[4096];
    for (int64_t off = 0; off < len; off += 4096) {
        int64_t m = len - off < 4096 ? len - off : 4096;
        mt_bytes_to_tokens(doc + off, m, piece);
        if (!mt_shard_writer_append(tw->w, piece, NULL, m, off == 0, tw->err, tw->errlen))
            return false;
    }
    const int32_t eos = MT_BYTES_EOS;
    tw->n_docs++;
    return mt_shard_writer_append(tw->w, &eos, NULL, 1, false, tw->err, tw->errlen);
}

bool mt_text_write_shard(const char *const *inputs, int n_inputs, mt_doc_sep sep, const char *path, char *err,
                         size_t errlen)
{
    if (n_inputs < 1)
        return mt_errorf(err, errlen, "%s: no input files", path);
    text_writer tw = {.err = err, .errlen = errlen};
    tw.w = mt_shard_writer_open(path, MT_BYTES_VOCAB, MT_BYTES_EOS, "bytes", false, err, errlen);
    bool ok = tw.w != NULL;
    for (int i = 0; ok && i < n_inputs; i++) {
        int64_t docs_before = tw.n_docs;
        size_t n = 0;
        uint8_t *text = (uint8_t *)mt_read_file(inputs[i], 0, &n, err, errlen);
        ok = text && mt_text_documents(text, (int64_t)n, sep, append_document, &tw);
        free(text);
        if (ok && tw.n_docs == docs_before)
            ok = mt_errorf(err, errlen, "%s: no text in it (%s)", inputs[i], n == 0 ? "empty" : "only blank lines");
    }
    if (ok) {
        ok = mt_shard_writer_close(tw.w, 0, false, err, errlen);
        tw.w = NULL;
    }
    mt_shard_writer_abort(tw.w);
    return ok;
}
