/* The tokenizer (src/text/tokenizer.h) on a tokenizer.json written here by
 * hand: encoding and decoding worked out on paper, and an error naming the
 * file and the key for each kind of file it refuses. The comparison with the
 * tokenizers package on trained tokenizers is tests/test_tokenizer.py. */
#include <jansson.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "testlib.h"

#include "text/tokenizer.h"

static char err[1024];

/* Byte-level BPE with five merges: "\u0120" is GPT-2's stand-in for the
 * space byte, "\u00c3\u00a9" the two bytes of 'é' (C3 A9). */
static const char base_json[] =
    "{\"version\": \"1.0\", \"truncation\": null, \"padding\": null,"
    " \"added_tokens\": [{\"id\": 0, \"content\": \"<|endoftext|>\", \"single_word\": false, \"lstrip\": false,"
    "   \"rstrip\": false, \"normalized\": false, \"special\": true}],"
    " \"normalizer\": {\"type\": \"NFC\"},"
    " \"pre_tokenizer\": {\"type\": \"ByteLevel\", \"add_prefix_space\": false, \"trim_offsets\": true,"
    "   \"use_regex\": true},"
    " \"post_processor\": {\"type\": \"ByteLevel\", \"trim_offsets\": true},"
    " \"decoder\": {\"type\": \"ByteLevel\"},"
    " \"model\": {\"type\": \"BPE\", \"dropout\": null, \"unk_token\": null, \"fuse_unk\": false,"
    "   \"vocab\": {\"<|endoftext|>\": 0, \"a\": 1, \"b\": 2, \"ab\": 3, \"\\u0120\": 4, \"\\u0120ab\": 5,"
    "     \"\\u00c3\": 6, \"\\u00a9\": 7, \"\\u00c3\\u00a9\": 8, \"c\": 9, \"abc\": 10},"
    "   \"merges\": [\"a b\", [\"\\u0120\", \"ab\"], \"\\u00c3 \\u00a9\", [\"ab\", \"c\"]]}}";

/* base_json with value (JSON text; NULL removes the key) at key of object
 * path ("" for the top level, "model" for the model), written to name. */
static const char *write_variant(const char *name, const char *object, const char *key, const char *value)
{
    json_error_t je;
    json_t *root = json_loads(base_json, 0, &je);
    assert_non_null(root);
    json_t *target = object[0] ? json_object_get(root, object) : root;
    if (value) {
        json_t *v = json_loads(value, JSON_DECODE_ANY, &je);
        assert_non_null(v);
        assert_int_equal(json_object_set_new(target, key, v), 0);
    } else {
        assert_int_equal(json_object_del(target, key), 0);
    }
    const char *path = tl_temp_path(name);
    assert_int_equal(json_dump_file(root, path, 0), 0);
    json_decref(root);
    return path;
}

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fputs(text, f) >= 0, 1);
    assert_int_equal(fclose(f), 0);
}

static void expect_ids(const mt_tokenizer *t, const char *text, bool special_as_text, const int32_t *want, int n)
{
    int32_t *ids;
    int64_t got;
    assert_true(mt_tokenizer_encode(t, text, strlen(text), special_as_text, &ids, &got, err, sizeof err));
    assert_int_equal(got, n);
    for (int i = 0; i < n; i++)
        assert_int_equal(ids[i], want[i]);
    free(ids);
}

static void expect_text(const mt_tokenizer *t, const int32_t *ids, int n, const char *want)
{
    size_t len;
    char *text = mt_tokenizer_decode(t, ids, n, &len, err, sizeof err);
    assert_non_null(text);
    assert_int_equal(len, strlen(want));
    assert_string_equal(text, want);
    free(text);
}

static void encode_and_decode(void **state)
{
    (void)state;
    const char *path = write_variant("base.json", "", "version", "\"1.0\"");
    mt_tokenizer *t = mt_tokenizer_load(path, err, sizeof err);
    assert_non_null(t);
    assert_int_equal(mt_tokenizer_vocab_size(t), 11);
    assert_int_equal(mt_tokenizer_token_id(t, "<|endoftext|>"), 0);
    assert_int_equal(mt_tokenizer_token_id(t, "ab"), 3);
    assert_int_equal(mt_tokenizer_token_id(t, "<|padding|>"), -1);

    /* "ab", " ab" (one pre-token: the GPT-2 regex keeps the space), " é"
     * written decomposed (NFC composes it; the space has no merge with it),
     * the special token, then "abc" by rank: a+b first, then ab+c. */
    expect_ids(t, "ab ab e\xcc\x81<|endoftext|>abc", false, (const int32_t[]){3, 5, 4, 8, 0, 10}, 6);
    /* As text the special token is characters that are not in the
     * vocabulary, which BPE without unk_token drops. */
    expect_ids(t, "ab<|endoftext|>", true, (const int32_t[]){3}, 1);
    expect_ids(t, "ab<|endoftext|>", false, (const int32_t[]){3, 0}, 2);
    expect_ids(t, "", false, NULL, 0);
    expect_text(t, (const int32_t[]){3, 5, 4, 8, 0, 10}, 6, "ab ab \xc3\xa9<|endoftext|>abc");
    /* A lone C3 byte is not UTF-8: one U+FFFD, as String::from_utf8_lossy has it. */
    expect_text(t, (const int32_t[]){1, 6, 2}, 3, "a\xef\xbf\xbd" "b");
    expect_text(t, NULL, 0, "");
    mt_tokenizer_free(t);
}

static void encode_and_decode_errors(void **state)
{
    (void)state;
    const char *path = write_variant("unk.json", "model", "unk_token", "\"<unk>\"");
    mt_tokenizer *t = mt_tokenizer_load(path, err, sizeof err);
    assert_non_null(t);
    int32_t *ids;
    int64_t n;
    assert_false(mt_tokenizer_encode(t, "a\xc3(", 3, false, &ids, &n, err, sizeof err));
    tl_expect_error(err, "not valid UTF-8", "byte 1 of 3");
    assert_null(ids);
    assert_false(mt_tokenizer_encode(t, "az", 2, false, &ids, &n, err, sizeof err));
    tl_expect_error(err, path, "model.unk_token \"<unk>\" is needed for \"z\" but is not in model.vocab");
    size_t len;
    assert_null(mt_tokenizer_decode(t, (const int32_t[]){1, 11}, 2, &len, err, sizeof err));
    tl_expect_error(err, path, "id 11 (ids[1]) is not a token (vocab_size 11)");
    assert_null(mt_tokenizer_decode(t, (const int32_t[]){-1}, 1, &len, err, sizeof err));
    tl_expect_error(err, "id -1 (ids[0]) is not a token", NULL);
    mt_tokenizer_free(t);
}

/* A file that cannot be a tokenizer, and the words its error must have. */
typedef struct bad_case {
    const char *object, *key, *value, *says;
} bad_case;

static const bad_case bad_cases[] = {
    {"model", "type", "\"WordPiece\"", "model.type: WordPiece is not supported (only BPE)"},
    {"", "normalizer", "{\"type\": \"Lowercase\"}", "normalizer.type: Lowercase is not supported"},
    {"", "normalizer", "{\"type\": \"Sequence\", \"normalizers\": [{\"type\": \"NFC\"}, {\"type\": \"Strip\"}]}",
     "normalizer.normalizers[1].type: Strip is not supported"},
    {"", "normalizer", "\"NFC\"", "normalizer: expected null or an object"},
    {"", "pre_tokenizer", "{\"type\": \"Whitespace\"}", "pre_tokenizer.type: Whitespace is not supported"},
    {"", "pre_tokenizer",
     "{\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": \"Split\", \"pattern\": {\"Regex\": \"(\"},"
     " \"behavior\": \"Isolated\", \"invert\": false}]}",
     "pre_tokenizer.pretokenizers[0].pattern.Regex: cannot compile the regex /(/"},
    {"", "pre_tokenizer", "{\"type\": \"Split\", \"pattern\": {\"Regex\": \"a\"}, \"behavior\": \"Bogus\"}",
     "pre_tokenizer.behavior: expected Removed, Isolated"},
    {"", "pre_tokenizer", "{\"type\": \"Split\", \"pattern\": \"a\", \"behavior\": \"Isolated\"}",
     "pre_tokenizer.pattern: expected {\"Regex\""},
    {"", "decoder", "{\"type\": \"WordPiece\"}", "decoder.type: WordPiece is not supported"},
    {"", "truncation", "{\"max_length\": 8}", "truncation: not supported"},
    {"", "padding", "{}", "padding: not supported"},
    {"", "version", "\"2.0\"", "version: only \"1.0\" is known"},
    {"", "model", NULL, "model: expected an object"},
    {"model", "dropout", "0.1", "model.dropout: BPE dropout"},
    {"model", "fuse_unk", "1", "model.fuse_unk: expected true, false or null"},
    {"model", "unk_token", "7", "model.unk_token: expected a string or null"},
    {"model", "merges", NULL, "a BPE model needs both \"vocab\" and \"merges\""},
    {"model", "merges", "[\"a b c\"]", "model.merges[0]: \"a b c\" is not two tokens separated by one space"},
    {"model", "merges", "[\"a b\", [\"a\"]]", "model.merges[1]: expected \"a b\" or [\"a\", \"b\"]"},
    {"model", "merges", "[\"a x\"]", "model.merges[0]: token \"x\" is not in model.vocab"},
    {"model", "merges", "[\"b a\"]", "model.merges[0]: token \"ba\" is not in model.vocab"},
    {"model", "vocab", "{\"a\": 1, \"b\": 1}", "model.vocab: id 1 is given to both"},
    {"model", "vocab", "{\"a\": -1}", "model.vocab[\"a\"]: expected an id in [0, 2^31 - 1)"},
    {"model", "vocab", "[\"a\"]", "model.vocab: expected an object"},
    {"", "added_tokens", "[{\"content\": 5}]", "added_tokens[0].content: expected a string"},
    {"", "added_tokens", "[{\"content\": \"x\", \"special\": \"yes\"}]", "added_tokens[0].special: expected true"},
    {"", "added_tokens", "{}", "added_tokens: expected an array"},
};

static void load_errors(void **state)
{
    (void)state;
    const char *missing = tl_temp_path("no-such-tokenizer.json");
    assert_null(mt_tokenizer_load(missing, err, sizeof err));
    tl_expect_error(err, missing, "cannot open");
    const char *not_json = tl_temp_path("not-json.json");
    write_text(not_json, "{\"model\": \n oops");
    assert_null(mt_tokenizer_load(not_json, err, sizeof err));
    tl_expect_error(err, not_json, "line 2");
    const char *array = tl_temp_path("array.json");
    write_text(array, "[1, 2]");
    assert_null(mt_tokenizer_load(array, err, sizeof err));
    tl_expect_error(err, array, "expected a JSON object");
    for (size_t i = 0; i < sizeof bad_cases / sizeof bad_cases[0]; i++) {
        const bad_case *c = &bad_cases[i];
        char name[64];
        snprintf(name, sizeof name, "bad%02zu.json", i);
        const char *path = write_variant(name, c->object, c->key, c->value);
        mt_tokenizer *t = mt_tokenizer_load(path, err, sizeof err);
        if (t)
            fail_msg("%s (%s.%s = %s) loaded", path, c->object, c->key, c->value ? c->value : "(none)");
        tl_expect_error(err, path, c->says);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(encode_and_decode),
        cmocka_unit_test(encode_and_decode_errors),
        cmocka_unit_test(load_errors),
    };
    return cmocka_run_group_tests(tests, tl_temp_dir_setup, tl_temp_dir_teardown);
}
