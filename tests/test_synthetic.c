/* The synthetic tasks and byte-level text: examples are deterministic, well
 * formed and answered by their masked tokens; text splits into documents and
 * round-trips; shards written from them read back the same. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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
enum { COPY_H5, INDUCTION_H5, TEXT_H5, A_TXT, B_TXT, EMPTY_TXT, N_FILES, MISSING_TXT = N_FILES, NO_DIR_H5, N_PATHS };
static const char *const file_names[N_PATHS] = {"copy.h5", "induction.h5", "text.h5", "a.txt", "b.txt",
                                                "empty.txt", "no-such-input.txt", "no-such-dir/copy.h5"};
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
    };
    return cmocka_run_group_tests(tests, make_tmp_dir, remove_tmp_dir);
}
