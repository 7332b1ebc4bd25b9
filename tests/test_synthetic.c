/* The synthetic tasks and byte-level text: examples are deterministic, well
 * formed and answered by their masked tokens; text splits into documents and
 * round-trips; shards written from them read back the same. */
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "data/shard.h"
#include "data/synthetic.h"

static const mt_synth_config copy_cfg = {MT_TASK_SELECTIVE_COPY, 16, 64, 8, 7};
static const mt_synth_config induction_cfg = {MT_TASK_INDUCTION, 16, 64, 0, 7};

/* Example index of c into fresh heap buffers. */
static void make_example(const mt_synth_config *c, uint64_t index, int32_t **tokens, uint8_t **mask)
{
    *tokens = malloc((size_t)(c->seq_len + 1) * sizeof **tokens);
    *mask = malloc((size_t)(c->seq_len + 1));
    assert_non_null(*tokens);
    assert_non_null(*mask);
    mt_synth_example(c, index, *tokens, *mask);
}

static void test_examples_are_deterministic(void **state)
{
    (void)state;
    const mt_synth_config *cfgs[] = {&copy_cfg, &induction_cfg};
    for (int k = 0; k < 2; k++) {
        const mt_synth_config *c = cfgs[k];
        size_t n = (size_t)(c->seq_len + 1);
        int32_t *a, *b, *other;
        uint8_t *ma, *mb, *mother;
        make_example(c, 5, &a, &ma);
        make_example(c, 5, &b, &mb);
        make_example(c, 6, &other, &mother);
        assert_memory_equal(a, b, n * sizeof *a);
        assert_memory_equal(ma, mb, n);
        assert_memory_not_equal(a, other, n * sizeof *a);
        mt_synth_config reseeded = *c;
        reseeded.seed = 8;
        mt_synth_example(&reseeded, 5, b, mb);
        assert_memory_not_equal(a, b, n * sizeof *a);
        free(a), free(b), free(other), free(ma), free(mb), free(mother);
    }
}

/* Checks one selective-copying example against the layout of synthetic.h,
 * reading the data tokens out of its input part. */
static void check_selective_copy(const mt_synth_config *c, const int32_t *t, const uint8_t *mask)
{
    int64_t n = c->seq_len + 1, k = c->n_memorize, context = n - k - 1, found = 0;
    int32_t *data = malloc((size_t)k * sizeof *data);
    assert_non_null(data);
    for (int64_t i = 0; i < n; i++) {
        assert_true(t[i] >= 0 && t[i] < c->vocab_size);
        assert_int_not_equal(t[i], MT_SYNTH_EOS);
        assert_int_equal(mask[i], i >= context + 1);
    }
    for (int64_t i = 0; i < context; i++) {
        assert_int_not_equal(t[i], MT_COPY_MARKER);
        if (t[i] != MT_COPY_NOISE) {
            assert_true(found < k);
            data[found++] = t[i];
        }
    }
    assert_int_equal(found, k);
    assert_int_equal(t[context], MT_COPY_MARKER);
    assert_memory_equal(t + context + 1, data, (size_t)k * sizeof *data);
    free(data);
}

/* Checks one induction example: the trigger once in the body, followed by
 * the answer X; the example ends with the trigger and X. */
static int64_t check_induction(const mt_synth_config *c, const int32_t *t, const uint8_t *mask)
{
    int64_t n = c->seq_len + 1, first = -1;
    for (int64_t i = 0; i < n; i++) {
        assert_true(t[i] >= 0 && t[i] < c->vocab_size);
        assert_int_not_equal(t[i], MT_SYNTH_EOS);
        assert_int_equal(mask[i], i == n - 1);
        if (t[i] == MT_INDUCTION_TRIGGER && first < 0)
            first = i;
        if (t[i] == MT_INDUCTION_TRIGGER)
            assert_true(i == first || i == n - 2);
    }
    assert_true(first >= 0 && first + 1 < n - 2);
    assert_int_equal(t[n - 2], MT_INDUCTION_TRIGGER);
    assert_true(t[n - 1] >= MT_INDUCTION_FIRST_DATA);
    assert_int_equal(t[n - 1], t[first + 1]);
    return first;
}

static void test_selective_copy_answers_are_the_data_tokens_in_order(void **state)
{
    (void)state;
    /* Edge sizes too: a context with no noise at all (seq_len = 2K), K = 1. */
    const mt_synth_config cfgs[] = {copy_cfg, {MT_TASK_SELECTIVE_COPY, 5, 16, 8, 1},
                                    {MT_TASK_SELECTIVE_COPY, 40, 9, 1, 2}, {MT_TASK_SELECTIVE_COPY, 16, 4096, 16, 3}};
    for (size_t k = 0; k < sizeof cfgs / sizeof cfgs[0]; k++) {
        char err[256];
        assert_true(mt_synth_validate(&cfgs[k], err, sizeof err));
        int64_t seen[64] = {0};
        for (uint64_t i = 0; i < 200; i++) {
            int32_t *t;
            uint8_t *mask;
            make_example(&cfgs[k], i, &t, &mask);
            check_selective_copy(&cfgs[k], t, mask);
            for (int64_t j = cfgs[k].seq_len + 1 - cfgs[k].n_memorize; j <= cfgs[k].seq_len; j++)
                seen[t[j]]++;
            free(t), free(mask);
        }
        for (int64_t v = MT_COPY_FIRST_DATA; v < cfgs[k].vocab_size; v++)
            assert_true(seen[v] > 0); /* every data id is drawn */
    }
}

static void test_induction_answer_follows_the_first_trigger(void **state)
{
    (void)state;
    const mt_synth_config cfgs[] = {induction_cfg, {MT_TASK_INDUCTION, 4, 3, 0, 1}, {MT_TASK_INDUCTION, 30, 5, 0, 2}};
    for (size_t k = 0; k < sizeof cfgs / sizeof cfgs[0]; k++) {
        int64_t n = cfgs[k].seq_len + 1, seen[64] = {0};
        bool first_at_start = false, first_at_end = false;
        for (uint64_t i = 0; i < 400; i++) {
            int32_t *t;
            uint8_t *mask;
            make_example(&cfgs[k], i, &t, &mask);
            int64_t first = check_induction(&cfgs[k], t, mask);
            first_at_start |= first == 0;
            first_at_end |= first == n - 4;
            seen[t[n - 1]]++;
            free(t), free(mask);
        }
        assert_true(first_at_start && first_at_end); /* the trigger reaches both ends of its range */
        for (int64_t v = MT_INDUCTION_FIRST_DATA; v < cfgs[k].vocab_size; v++)
            assert_true(seen[v] > 0);
    }
}

static void test_validation_names_the_problem(void **state)
{
    (void)state;
    char err[256];
    mt_synth_config c = copy_cfg;
    c.seq_len = 15;
    assert_false(mt_synth_validate(&c, err, sizeof err));
    assert_non_null(strstr(err, "too short to memorize 8"));
    c = copy_cfg;
    c.vocab_size = 4;
    assert_false(mt_synth_validate(&c, err, sizeof err));
    assert_non_null(strstr(err, "vocab size 4"));
    c = copy_cfg;
    c.n_memorize = 0;
    assert_false(mt_synth_validate(&c, err, sizeof err));
    assert_non_null(strstr(err, "memorize"));
    c = induction_cfg;
    c.seq_len = 2;
    assert_false(mt_synth_validate(&c, err, sizeof err));
    assert_non_null(strstr(err, "seq_len 2"));
    c = induction_cfg;
    c.vocab_size = 3;
    assert_false(mt_synth_validate(&c, err, sizeof err));
    assert_non_null(strstr(err, "induction"));
}

static void test_bytes_round_trip(void **state)
{
    (void)state;
    uint8_t text[300], back[301];
    int32_t tokens[301];
    for (int i = 0; i < 300; i++)
        text[i] = (uint8_t)(i * 7 + 3);
    mt_bytes_to_tokens(text, 300, tokens);
    for (int i = 0; i < 300; i++)
        assert_int_equal(tokens[i], text[i]);
    tokens[300] = MT_BYTES_EOS;
    assert_int_equal(mt_tokens_to_bytes(tokens, 301, back), 300);
    assert_memory_equal(back, text, 300);
    tokens[10] = MT_BYTES_VOCAB;
    assert_int_equal(mt_tokens_to_bytes(tokens, 301, back), -1);
    tokens[10] = -1;
    assert_int_equal(mt_tokens_to_bytes(tokens, 301, back), -1);
}

typedef struct doc_list {
    int n;
    char docs[8][64];
} doc_list;

static bool collect_document(const uint8_t *doc, int64_t len, void *arg)
{
    doc_list *l = arg;
    assert_true(l->n < 8 && len < 64);
    memcpy(l->docs[l->n], doc, (size_t)len);
    l->docs[l->n++][len] = '\0';
    return true;
}

static void test_text_splits_into_documents(void **state)
{
    (void)state;
    const char *text = "\n \nfirst line\nsecond\n\n\t\r\n\nthird\n   \nlast, no newline";
    doc_list l = {0};
    assert_true(mt_text_documents((const uint8_t *)text, (int64_t)strlen(text), MT_DOC_PER_PARAGRAPH,
                                  collect_document, &l));
    assert_int_equal(l.n, 3);
    assert_string_equal(l.docs[0], "first line\nsecond\n");
    assert_string_equal(l.docs[1], "third\n");
    assert_string_equal(l.docs[2], "last, no newline");

    doc_list whole = {0}, blank = {0};
    assert_true(mt_text_documents((const uint8_t *)text, (int64_t)strlen(text), MT_DOC_PER_FILE, collect_document,
                                  &whole));
    assert_int_equal(whole.n, 1);
    assert_string_equal(whole.docs[0], text);
    assert_true(mt_text_documents((const uint8_t *)"\n \n\n", 4, MT_DOC_PER_PARAGRAPH, collect_document, &blank));
    assert_true(mt_text_documents((const uint8_t *)"", 0, MT_DOC_PER_FILE, collect_document, &blank));
    assert_int_equal(blank.n, 0);
}

/* A fresh directory for the shard tests, and the files they use in it. */
static char tmp_dir[64];
enum {
    COPY_H5, INDUCTION_H5, TEXT_H5, A_TXT, B_TXT, EMPTY_TXT, ENSURE_H5, ENSURE_INDUCTION_H5, OLD_VERSION_H5,
    FOREIGN_TXT, FOREIGN_H5, STDOUT_TXT, N_FILES,
    MISSING_TXT = N_FILES, NO_DIR_H5, FOREIGN_DIR, N_PATHS
};
static const char *const file_names[N_PATHS] = {
    "copy.h5", "induction.h5", "text.h5", "a.txt", "b.txt", "empty.txt", "ensure.h5", "ensure-induction.h5",
    "old-version.h5", "foreign.txt", "foreign.h5", "stdout.txt", "no-such-input.txt", "no-such-dir/copy.h5",
    "foreign-dir.h5"};
static char paths[N_PATHS][128];

static int make_tmp_dir(void **state)
{
    (void)state;
    const char *base = getenv("TMPDIR");
    snprintf(tmp_dir, sizeof tmp_dir, "%s/mt_synthetic_XXXXXX", base && strlen(base) < 40 ? base : "/tmp");
    if (!mkdtemp(tmp_dir))
        return -1;
    for (int i = 0; i < N_PATHS; i++)
        snprintf(paths[i], sizeof paths[i], "%s/%s", tmp_dir, file_names[i]);
    return 0;
}

static int remove_tmp_dir(void **state)
{
    (void)state;
    for (int i = 0; i < N_FILES; i++)
        unlink(paths[i]);
    return rmdir(tmp_dir);
}

static void write_text_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(text, 1, strlen(text), f), strlen(text));
    assert_int_equal(fclose(f), 0);
}

static void test_synthetic_shards_read_back(void **state)
{
    (void)state;
    char err[512];
    const mt_synth_config cfgs[] = {copy_cfg, induction_cfg};
    const char *shard_paths[] = {paths[COPY_H5], paths[INDUCTION_H5]};
    const int64_t n_examples = 37;
    for (int k = 0; k < 2; k++) {
        const mt_synth_config *c = &cfgs[k];
        int64_t n = c->seq_len + 1;
        if (!mt_synth_write_shard(c, n_examples, shard_paths[k], err, sizeof err))
            fail_msg("%s", err);
        mt_shard *s = mt_shard_open(shard_paths[k], err, sizeof err);
        if (!s)
            fail_msg("%s", err);
        const mt_shard_info *in = mt_shard_get_info(s);
        assert_int_equal(in->n_tokens, n_examples * n);
        assert_int_equal(in->vocab_size, c->vocab_size);
        assert_int_equal(in->eos_id, MT_SYNTH_EOS);
        assert_int_equal(in->n_docs, n_examples);
        assert_true(in->has_loss_mask);
        assert_string_equal(in->tokenizer, mt_synth_task_name(c->task));
        int32_t *want, *got = malloc((size_t)n * sizeof *got);
        uint8_t *want_mask, *got_mask = malloc((size_t)n);
        assert_non_null(got);
        assert_non_null(got_mask);
        for (int64_t i = 0; i < n_examples; i++) {
            assert_int_equal(mt_shard_doc_offsets(s)[i], (uint64_t)(i * n));
            make_example(c, (uint64_t)i, &want, &want_mask);
            if (!mt_shard_read_tokens(s, i * n, n, got, err, sizeof err) ||
                !mt_shard_read_loss_mask(s, i * n, n, got_mask, err, sizeof err))
                fail_msg("%s", err);
            assert_memory_equal(got, want, (size_t)n * sizeof *got);
            assert_memory_equal(got_mask, want_mask, (size_t)n);
            free(want), free(want_mask);
        }
        free(got), free(got_mask);
        mt_shard_close(s);
    }
}

static void test_text_shard_reads_back(void **state)
{
    (void)state;
    char err[512];
    const char *a = "one\ntwo\n\nthree\n", *b = "\xff\x01 raw \x80";
    write_text_file(paths[A_TXT], a);
    write_text_file(paths[B_TXT], b);
    const char *inputs[] = {paths[A_TXT], paths[B_TXT]};
    const char *paragraphs[] = {"one\ntwo\n", "three\n", b};
    for (int sep = 0; sep < 2; sep++) {
        if (!mt_text_write_shard(inputs, 2, sep ? MT_DOC_PER_PARAGRAPH : MT_DOC_PER_FILE, paths[TEXT_H5], err,
                                 sizeof err))
            fail_msg("%s", err);
        mt_shard *s = mt_shard_open(paths[TEXT_H5], err, sizeof err);
        if (!s)
            fail_msg("%s", err);
        const mt_shard_info *in = mt_shard_get_info(s);
        assert_int_equal(in->vocab_size, MT_BYTES_VOCAB);
        assert_int_equal(in->eos_id, MT_BYTES_EOS);
        assert_string_equal(in->tokenizer, "bytes");
        assert_false(in->has_loss_mask);
        int32_t tokens[64];
        uint8_t bytes[64];
        assert_true(in->n_tokens < 64);
        if (!mt_shard_read_tokens(s, 0, in->n_tokens, tokens, err, sizeof err))
            fail_msg("%s", err);
        /* Documents: the files whole, or their paragraphs; each ends with EOS. */
        const char *files[] = {a, b};
        const char *const *expect = sep ? paragraphs : files;
        int n_docs = sep ? 3 : 2;
        assert_int_equal(in->n_docs, n_docs);
        for (int d = 0; d < n_docs; d++) {
            int64_t start = (int64_t)mt_shard_doc_offsets(s)[d];
            int64_t end = d + 1 < n_docs ? (int64_t)mt_shard_doc_offsets(s)[d + 1] : in->n_tokens;
            assert_int_equal(tokens[end - 1], MT_BYTES_EOS);
            int64_t len = mt_tokens_to_bytes(tokens + start, end - start, bytes);
            assert_int_equal(len, (int64_t)strlen(expect[d]));
            assert_memory_equal(bytes, expect[d], (size_t)len);
        }
        mt_shard_close(s);
    }
}

static void test_shard_errors_name_the_file(void **state)
{
    (void)state;
    char err[512];
    const char *missing[] = {paths[MISSING_TXT]};
    assert_false(mt_text_write_shard(missing, 1, MT_DOC_PER_FILE, paths[TEXT_H5], err, sizeof err));
    assert_non_null(strstr(err, "no-such-input.txt: cannot open"));

    write_text_file(paths[EMPTY_TXT], "\n\n  \n");
    const char *blank[] = {paths[EMPTY_TXT]};
    assert_false(mt_text_write_shard(blank, 1, MT_DOC_PER_PARAGRAPH, paths[TEXT_H5], err, sizeof err));
    assert_non_null(strstr(err, "empty.txt: no text"));

    assert_false(mt_synth_write_shard(&copy_cfg, 3, paths[NO_DIR_H5], err, sizeof err));
    assert_non_null(strstr(err, "no-such-dir/copy.h5"));
    assert_false(mt_synth_write_shard(&copy_cfg, 0, paths[COPY_H5], err, sizeof err));
    assert_non_null(strstr(err, "examples"));
}

static uint64_t recorded(mt_shard *s, const char *name)
{
    char err[512];
    uint64_t v = 0;
    bool present = false;
    if (!mt_shard_uint_attr(s, name, &v, &present, err, sizeof err))
        fail_msg("%s", err);
    if (!present)
        fail_msg("no attribute %s", name);
    return v;
}

static void test_shards_record_generator_parameters(void **state)
{
    (void)state;
    char err[512];
    mt_synth_config copy = copy_cfg, induction = induction_cfg;
    copy.seed = 0x9e3779b97f4a7c15ull + 7; /* above 2^63, as the trainer's validation seeds are */
    induction.n_memorize = 5;              /* unused by induction: recorded as 0 */
    if (!mt_synth_write_shard(&copy, 37, paths[COPY_H5], err, sizeof err) ||
        !mt_synth_write_shard(&induction, 12, paths[INDUCTION_H5], err, sizeof err))
        fail_msg("%s", err);
    mt_shard *s = mt_shard_open(paths[COPY_H5], err, sizeof err);
    assert_non_null(s);
    assert_int_equal(recorded(s, "synthetic_version"), MT_SYNTH_GENERATOR_VERSION);
    assert_int_equal(recorded(s, "synthetic_seq_len"), 64);
    assert_int_equal(recorded(s, "synthetic_memorize"), 8);
    assert_true(recorded(s, "synthetic_seed") == copy.seed);
    assert_int_equal(recorded(s, "synthetic_examples"), 37);
    mt_shard_close(s);
    s = mt_shard_open(paths[INDUCTION_H5], err, sizeof err);
    assert_non_null(s);
    assert_int_equal(recorded(s, "synthetic_memorize"), 0);
    assert_int_equal(recorded(s, "synthetic_examples"), 12);
    uint64_t v = 1;
    bool present = true;
    assert_true(mt_shard_uint_attr(s, "no_such_attribute", &v, &present, err, sizeof err));
    assert_false(present);
    assert_false(mt_shard_uint_attr(s, "tokenizer", &v, &present, err, sizeof err)); /* a string */
    assert_non_null(strstr(err, "tokenizer is not one unsigned integer"));
    mt_shard_close(s);
}

/* mt_synth_ensure_shard with stdout going to a file; what it printed goes to printed. */
static bool ensure_printing(const mt_synth_config *c, int64_t n_examples, const char *path, char *printed,
                            size_t printed_len, char *err, size_t errlen)
{
    fflush(stdout);
    int saved = dup(STDOUT_FILENO), fd = open(paths[STDOUT_TXT], O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(saved >= 0 && fd >= 0);
    assert_true(dup2(fd, STDOUT_FILENO) >= 0);
    close(fd);
    bool ok = mt_synth_ensure_shard(c, n_examples, path, err, errlen);
    fflush(stdout);
    assert_true(dup2(saved, STDOUT_FILENO) >= 0);
    close(saved);
    FILE *f = fopen(paths[STDOUT_TXT], "r");
    assert_non_null(f);
    printed[fread(printed, 1, printed_len - 1, f)] = '\0';
    fclose(f);
    return ok;
}

/* The inode of path: a shard written anew (to a temp file, renamed) has another. */
static ino_t inode_of(const char *path)
{
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    return st.st_ino;
}

/* Ensures the shard of c; fails unless it prints exactly want (a line
 * without the path and newline, or "" for nothing). */
static void ensure_expecting(const mt_synth_config *c, int64_t n_examples, const char *path, const char *want)
{
    char err[512], printed[1024], line[1024] = "";
    if (!ensure_printing(c, n_examples, path, printed, sizeof printed, err, sizeof err))
        fail_msg("%s", err);
    if (*want)
        snprintf(line, sizeof line, "%s: %s\n", path, want);
    assert_string_equal(printed, line);
}

static void test_ensure_shard_remakes_stale_data(void **state)
{
    (void)state;
    char err[512], tmp[160];
    const char *path = paths[ENSURE_H5];
    mt_synth_config c = copy_cfg;
    ensure_expecting(&c, 37, path, ""); /* missing: written */
    ino_t first = inode_of(path);
    ensure_expecting(&c, 37, path, ""); /* the same parameters: kept */
    assert_true(inode_of(path) == first);

    c.seq_len = 32;
    ensure_expecting(&c, 37, path, "made with seq_len 64, this run asks 32: regenerating");
    assert_true(inode_of(path) != first);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    assert_int_equal(access(tmp, F_OK), -1); /* nothing left beside it */
    mt_shard *s = mt_shard_open(path, err, sizeof err);
    assert_non_null(s);
    assert_int_equal(mt_shard_get_info(s)->n_tokens, 37 * 33);
    int32_t got[33], *want;
    uint8_t *want_mask;
    make_example(&c, 36, &want, &want_mask);
    assert_true(mt_shard_read_tokens(s, 36 * 33, 33, got, err, sizeof err));
    assert_memory_equal(got, want, sizeof got);
    free(want), free(want_mask);
    mt_shard_close(s);

    c.n_memorize = 4;
    ensure_expecting(&c, 50, path, "made with memorize 8 and examples 37, this run asks 4 and 50: regenerating");
    c.seed = 9;
    c.vocab_size = 20;
    ensure_expecting(&c, 50, path, "made with vocab_size 16 and seed 7, this run asks 20 and 9: regenerating");
    ensure_expecting(&c, 50, path, "");

    /* Induction does not use n_memorize: changing it keeps the shard. */
    mt_synth_config ind = induction_cfg;
    ensure_expecting(&ind, 10, paths[ENSURE_INDUCTION_H5], "");
    first = inode_of(paths[ENSURE_INDUCTION_H5]);
    ind.n_memorize = 3;
    ensure_expecting(&ind, 10, paths[ENSURE_INDUCTION_H5], "");
    assert_true(inode_of(paths[ENSURE_INDUCTION_H5]) == first);

    /* Another generator version made other examples from the same parameters. */
    mt_shard_writer *w = mt_shard_writer_open(paths[OLD_VERSION_H5], 16, MT_SYNTH_EOS, "selective-copy", true, err,
                                              sizeof err);
    const int32_t one_token = 5;
    assert_non_null(w);
    assert_true(mt_shard_writer_add_uint_attr(w, "synthetic_version", 0, err, sizeof err));
    assert_false(mt_shard_writer_add_uint_attr(w, "synthetic_version", 0, err, sizeof err));
    assert_false(mt_shard_writer_add_uint_attr(w, "vocab_size", 0, err, sizeof err));
    assert_true(mt_shard_writer_append(w, &one_token, NULL, 1, true, err, sizeof err));
    assert_true(mt_shard_writer_close(w, 0, false, err, sizeof err));
    ensure_expecting(&copy_cfg, 5, paths[OLD_VERSION_H5], "made with generator version 0, this run asks 1: regenerating");
}

/* Files in the way that are not synthetic shards are left as they are. */
static void test_ensure_shard_leaves_other_files(void **state)
{
    (void)state;
    char err[512], printed[256];
    write_text_file(paths[FOREIGN_TXT], "my notes\n");
    assert_false(ensure_printing(&copy_cfg, 5, paths[FOREIGN_TXT], printed, sizeof printed, err, sizeof err));
    assert_non_null(strstr(err, "foreign.txt: not an HDF5 file"));
    assert_non_null(strstr(err, "move it away"));
    FILE *f = fopen(paths[FOREIGN_TXT], "r");
    char text[32] = "";
    assert_non_null(fgets(text, sizeof text, f));
    fclose(f);
    assert_string_equal(text, "my notes\n");

    write_text_file(paths[A_TXT], "some text\n");
    const char *inputs[] = {paths[A_TXT]};
    if (!mt_text_write_shard(inputs, 1, MT_DOC_PER_FILE, paths[FOREIGN_H5], err, sizeof err))
        fail_msg("%s", err);
    ino_t before = inode_of(paths[FOREIGN_H5]);
    assert_false(ensure_printing(&copy_cfg, 5, paths[FOREIGN_H5], printed, sizeof printed, err, sizeof err));
    assert_non_null(strstr(err, "foreign.h5: not a synthetic shard"));
    assert_non_null(strstr(err, "no attribute synthetic_version"));
    assert_non_null(strstr(err, "move it away"));
    assert_true(inode_of(paths[FOREIGN_H5]) == before);

    assert_int_equal(mkdir(paths[FOREIGN_DIR], 0700), 0);
    assert_false(ensure_printing(&copy_cfg, 5, paths[FOREIGN_DIR], printed, sizeof printed, err, sizeof err));
    assert_non_null(strstr(err, "foreign-dir.h5: a directory"));
    assert_non_null(strstr(err, "move it away"));
    assert_int_equal(rmdir(paths[FOREIGN_DIR]), 0);
    assert_string_equal(printed, "");

    mt_synth_config bad = copy_cfg;
    bad.seq_len = 3;
    assert_false(mt_synth_ensure_shard(&bad, 5, paths[ENSURE_H5], err, sizeof err));
    assert_non_null(strstr(err, "too short to memorize"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_examples_are_deterministic),
        cmocka_unit_test(test_selective_copy_answers_are_the_data_tokens_in_order),
        cmocka_unit_test(test_induction_answer_follows_the_first_trigger),
        cmocka_unit_test(test_validation_names_the_problem),
        cmocka_unit_test(test_bytes_round_trip),
        cmocka_unit_test(test_text_splits_into_documents),
        cmocka_unit_test(test_synthetic_shards_read_back),
        cmocka_unit_test(test_text_shard_reads_back),
        cmocka_unit_test(test_shard_errors_name_the_file),
        cmocka_unit_test(test_shards_record_generator_parameters),
        cmocka_unit_test(test_ensure_shard_remakes_stale_data),
        cmocka_unit_test(test_ensure_shard_leaves_other_files),
    };
    return cmocka_run_group_tests(tests, make_tmp_dir, remove_tmp_dir);
}
