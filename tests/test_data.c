/* Token shards and the data loader: writer/reader round trips, the loader's
 * order (deterministic, every sample once per epoch across ranks, the
 * validation split), exact resume from a cursor, seq_idx at document
 * boundaries, and a clear error for each kind of bad input, made here as
 * deliberately broken files. */
#include <hdf5.h>
#include <jansson.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "testlib.h"

#include "data/loader.h"
#include "data/shard.h"

static char err[512];

/* token t of a synthetic stream, below vocab */
static int32_t token_at(int64_t t, int64_t vocab)
{
    return (int32_t)((t * 7919 + 13) % vocab);
}

/* Writes a shard of n tokens with documents starting at docs[0..nd). */
static void write_shard(const char *path, int64_t n, int64_t vocab, const int64_t *docs, int nd, int64_t chunk,
                        bool compress)
{
    mt_shard_writer *w = mt_shard_writer_open(path, vocab, 0, "test", false, err, sizeof err);
    assert_non_null(w);
    int d = 0;
    for (int64_t t = 0; t < n; t++) {
        int32_t id = token_at(t, vocab);
        bool start = d < nd && docs[d] == t;
        d += start;
        assert_true(mt_shard_writer_append(w, &id, NULL, 1, start, err, sizeof err));
    }
    assert_true(mt_shard_writer_close(w, chunk, compress, err, sizeof err));
}

/* ------------------------------------------------------------------------ */

static void round_trip(int64_t vocab, int64_t chunk, bool compress)
{
    const char *p = tl_temp_path("round.h5");
    const int64_t n = 5000, docs[] = {0, 17, 1000, 4999};
    write_shard(p, n, vocab, docs, 4, chunk, compress);
    mt_shard *s = mt_shard_open(p, err, sizeof err);
    assert_non_null(s);
    const mt_shard_info *in = mt_shard_get_info(s);
    assert_int_equal(in->n_tokens, n);
    assert_int_equal(in->vocab_size, vocab);
    assert_int_equal(in->token_bytes, vocab > 65536 ? 4 : 2);
    assert_int_equal(in->n_docs, 4);
    assert_string_equal(in->tokenizer, "test");
    for (int d = 0; d < 4; d++)
        assert_int_equal(mt_shard_doc_offsets(s)[d], docs[d]);
    int32_t *buf = malloc(n * sizeof *buf);
    assert_true(mt_shard_read_tokens(s, 0, n, buf, err, sizeof err));
    for (int64_t t = 0; t < n; t++)
        assert_int_equal(buf[t], token_at(t, vocab));
    assert_true(mt_shard_read_tokens(s, 1234, 100, buf, err, sizeof err));
    for (int64_t t = 0; t < 100; t++)
        assert_int_equal(buf[t], token_at(1234 + t, vocab));
    assert_false(mt_shard_read_tokens(s, n - 10, 11, buf, err, sizeof err));
    free(buf);
    mt_shard_close(s);
}

static void shard_round_trip(void **state)
{
    (void)state;
    round_trip(1000, 0, false);
    round_trip(70000, 0, false);    /* uint32 ids */
    round_trip(1000, 256, true);    /* chunked, deflated */
    round_trip(70000, 333, true);
}

/* ------------------------------------------------------------------------ */

enum { L = 7, VOCAB = 500 };

static mt_loader_config loader_config(const char *const *paths, int n_paths)
{
    return (mt_loader_config){.paths = paths, .n_paths = n_paths, .seq_len = L, .batch_size = 3, .seed = 42,
                              .shuffle = true, .rank = 0, .world = 1, .vocab_size = VOCAB};
}

/* Two shards: 50 and 37 samples of L + 1 tokens (plus a few unused tokens). */
static const char *const *two_shards(void)
{
    static const char *paths[2];
    paths[0] = tl_temp_path("a.h5");
    paths[1] = tl_temp_path("b.h5");
    write_shard(paths[0], 50 * (L + 1) + 3, VOCAB, NULL, 0, 0, false);
    write_shard(paths[1], 37 * (L + 1), VOCAB, NULL, 0, 64, true);
    return paths;
}

/* The sample ids of the next k samples (batch by batch). */
static void take(mt_loader *ld, int k, int64_t *ids)
{
    for (int got = 0; got < k;) {
        const mt_batch *bt = mt_loader_next(ld, err, sizeof err);
        assert_non_null(bt);
        for (int b = 0; b < bt->batch_size && got < k; b++)
            ids[got++] = bt->sample_ids[b];
    }
}

static void loader_order(void **state)
{
    (void)state;
    const char *const *paths = two_shards();
    mt_loader_config c = loader_config(paths, 2);
    enum { N = 87 };
    int64_t a[2 * N], b[2 * N], other[N];
    mt_loader *ld = mt_loader_open(&c, err, sizeof err);
    assert_non_null(ld);
    assert_int_equal(mt_loader_set_size(ld), N);
    take(ld, 2 * N, a);
    mt_loader_close(ld);
    ld = mt_loader_open(&c, err, sizeof err);
    take(ld, 2 * N, b);
    mt_loader_close(ld);
    assert_memory_equal(a, b, sizeof a); /* same seed, same order */

    for (int e = 0; e < 2; e++) { /* each epoch visits every sample once */
        int seen[N] = {0};
        for (int i = 0; i < N; i++)
            seen[a[e * N + i]]++;
        for (int i = 0; i < N; i++)
            assert_int_equal(seen[i], 1);
    }
    assert_true(memcmp(a, a + N, N * sizeof *a) != 0); /* epochs differ */
    c.seed = 43;
    ld = mt_loader_open(&c, err, sizeof err);
    take(ld, N, other);
    mt_loader_close(ld);
    assert_true(memcmp(a, other, sizeof other) != 0);
}

static void loader_ranks_cover_epoch(void **state)
{
    (void)state;
    const char *const *paths = two_shards();
    enum { N = 87, W = 4 };
    int seen[N] = {0};
    for (int r = 0; r < W; r++) {
        mt_loader_config c = loader_config(paths, 2);
        c.rank = r;
        c.world = W;
        mt_loader *ld = mt_loader_open(&c, err, sizeof err);
        assert_non_null(ld);
        int64_t k = mt_loader_rank_samples(ld), ids[N];
        take(ld, (int)k, ids);
        for (int64_t i = 0; i < k; i++)
            seen[ids[i]]++;
        mt_loader_close(ld);
    }
    for (int i = 0; i < N; i++)
        assert_int_equal(seen[i], 1);
}

static void loader_validation_split(void **state)
{
    (void)state;
    const char *const *paths = two_shards();
    mt_loader_config c = loader_config(paths, 2);
    c.val_fraction = 0.2;
    mt_loader *train = mt_loader_open(&c, err, sizeof err);
    c.validation = true;
    c.shuffle = false;
    mt_loader *val = mt_loader_open(&c, err, sizeof err);
    assert_non_null(train);
    assert_non_null(val);
    const int64_t nt = mt_loader_set_size(train), nv = mt_loader_set_size(val);
    assert_int_equal(nt + nv, 87);
    assert_int_equal(nv, 17);
    int64_t ids[87];
    take(train, (int)nt, ids);
    take(val, (int)nv, ids + nt);
    int seen[87] = {0};
    for (int i = 0; i < 87; i++)
        seen[ids[i]]++;
    for (int i = 0; i < 87; i++)
        assert_int_equal(seen[i], 1);
    for (int64_t i = 0; i < nv; i++)
        assert_int_equal(ids[nt + i], nt + i); /* unshuffled, in order */
    mt_loader_close(train);
    mt_loader_close(val);
}

static void loader_resume(void **state)
{
    (void)state;
    const char *const *paths = two_shards();
    mt_loader_config c = loader_config(paths, 2);
    c.world = 2;
    c.rank = 1;
    mt_loader *ld = mt_loader_open(&c, err, sizeof err);
    assert_non_null(ld);
    for (int i = 0; i < 13; i++) /* into the second epoch (43 samples per rank, 3 per batch) */
        assert_non_null(mt_loader_next(ld, err, sizeof err));
    mt_loader_cursor at = mt_loader_tell(ld);
    assert_int_equal(at.epoch, 0);
    enum { K = 20, BL = 3 * L };
    int32_t in[K][BL], tg[K][BL];
    for (int i = 0; i < K; i++) {
        const mt_batch *bt = mt_loader_next(ld, err, sizeof err);
        memcpy(in[i], bt->inputs, sizeof in[i]);
        memcpy(tg[i], bt->targets, sizeof tg[i]);
    }
    assert_true(mt_loader_tell(ld).epoch >= 1);
    mt_loader_close(ld);

    ld = mt_loader_open(&c, err, sizeof err); /* a fresh run, as after a restart */
    assert_true(mt_loader_seek(ld, at, err, sizeof err));
    for (int i = 0; i < K; i++) {
        const mt_batch *bt = mt_loader_next(ld, err, sizeof err);
        assert_non_null(bt);
        assert_memory_equal(in[i], bt->inputs, sizeof in[i]);
        assert_memory_equal(tg[i], bt->targets, sizeof tg[i]);
    }
    at.seed = 7;
    assert_false(mt_loader_seek(ld, at, err, sizeof err));
    mt_loader_close(ld);
}

static void cursor_json_round_trip(void **state)
{
    (void)state;
    mt_loader_cursor c = {UINT64_MAX - 5, 3, 12345}, back;
    json_t *j = mt_loader_cursor_to_json(c);
    char *text = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    j = json_loads(text, 0, NULL);
    free(text);
    assert_true(mt_loader_cursor_from_json(j, &back, err, sizeof err));
    json_decref(j);
    assert_true(back.seed == c.seed && back.epoch == c.epoch && back.index == c.index);
    j = json_pack("{s:s, s:I, s:I}", "seed", "12x", "epoch", (json_int_t)0, "index", (json_int_t)0);
    assert_false(mt_loader_cursor_from_json(j, &back, err, sizeof err));
    json_decref(j);
    j = json_pack("{s:I}", "epoch", (json_int_t)0);
    assert_false(mt_loader_cursor_from_json(j, &back, err, sizeof err));
    json_decref(j);
}

/* Samples are 8 tokens; documents start at 0, 3, 8 (a sample boundary), 12,
 * 13 and 30, so the document from 13 spans samples 1, 2 and 3. */
static void loader_seq_idx(void **state)
{
    (void)state;
    const char *p = tl_temp_path("docs.h5");
    const int64_t docs[] = {0, 3, 8, 12, 13, 30};
    write_shard(p, 5 * (L + 1), VOCAB, docs, 6, 0, false);
    const char *paths[] = {p};
    mt_loader_config c = loader_config(paths, 1);
    c.shuffle = false;
    c.batch_size = 5;
    mt_loader *ld = mt_loader_open(&c, err, sizeof err);
    assert_non_null(ld);
    const mt_batch *bt = mt_loader_next(ld, err, sizeof err);
    assert_non_null(bt);
    static const int32_t want[5][L] = {
        {0, 0, 0, 1, 1, 1, 1}, /* tokens 0..6: a start at 3 */
        {0, 0, 0, 0, 1, 2, 2}, /* tokens 8..14: starts at 12, 13 */
        {0, 0, 0, 0, 0, 0, 0}, /* tokens 16..22: inside the document from 13 */
        {0, 0, 0, 0, 0, 0, 1}, /* tokens 24..30: a start at 30 */
        {0, 0, 0, 0, 0, 0, 0},
    };
    for (int b = 0; b < 5; b++)
        for (int t = 0; t < L; t++) {
            assert_int_equal(bt->seq_idx[b * L + t], want[b][t]);
            assert_int_equal(bt->inputs[b * L + t], token_at(b * (L + 1) + t, VOCAB));
            assert_int_equal(bt->targets[b * L + t], token_at(b * (L + 1) + t + 1, VOCAB));
            assert_int_equal(bt->loss_mask[b * L + t], 1);
        }
    mt_loader_close(ld);
}

static void permutation_is_bijection(void **state)
{
    (void)state;
    for (int64_t n = 1; n < 300; n += 37) {
        int *seen = calloc((size_t)n, sizeof *seen);
        for (int64_t p = 0; p < n; p++) {
            int64_t k = mt_sample_permute(9, 3, n, p);
            assert_true(k >= 0 && k < n);
            seen[k]++;
        }
        for (int64_t k = 0; k < n; k++)
            assert_int_equal(seen[k], 1);
        free(seen);
    }
}

/* ------------------------------------------------------------------------ */
/* Bad input, each with its message. */

/* A new HDF5 file (file creation properties fcpl) with one dataset `name`
 * of type file_type and ndims dims, written from data (mem_type). */
static hid_t create_raw(const char *path, hid_t fcpl, const char *name, hid_t file_type, int ndims, const hsize_t *dims,
                        const void *data, hid_t mem_type)
{
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, fcpl, H5P_DEFAULT);
    assert_true(f >= 0);
    hid_t sp = H5Screate_simple(ndims, dims, NULL);
    hid_t ds = H5Dcreate2(f, name, file_type, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    assert_true(H5Dwrite(ds, mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) >= 0);
    H5Dclose(ds);
    H5Sclose(sp);
    return f;
}

/* An int64 root attribute of n values: a scalar when n is 0. */
static void add_int_attr(hid_t f, const char *name, const int64_t *values, int n)
{
    hsize_t dims[1] = {(hsize_t)n};
    hid_t sp = n == 0 ? H5Screate(H5S_SCALAR) : H5Screate_simple(1, dims, NULL);
    hid_t a = H5Acreate2(f, name, H5T_STD_I64LE, sp, H5P_DEFAULT, H5P_DEFAULT);
    assert_true(H5Awrite(a, H5T_NATIVE_INT64, values) >= 0);
    H5Aclose(a);
    H5Sclose(sp);
}

/* A variable-length UTF-8 string root attribute of n values, as h5py writes
 * str: a scalar when n is 0. */
static void add_string_attr(hid_t f, const char *name, const char *const *values, int n)
{
    hsize_t dims[1] = {(hsize_t)n};
    hid_t sp = n == 0 ? H5Screate(H5S_SCALAR) : H5Screate_simple(1, dims, NULL);
    hid_t st = H5Tcopy(H5T_C_S1);
    H5Tset_size(st, H5T_VARIABLE);
    H5Tset_cset(st, H5T_CSET_UTF8);
    hid_t a = H5Acreate2(f, name, st, sp, H5P_DEFAULT, H5P_DEFAULT);
    assert_true(H5Awrite(a, st, values) >= 0);
    H5Aclose(a);
    H5Tclose(st);
    H5Sclose(sp);
}

/* The root attributes of a valid shard, with vocab_size as given. */
static void add_shard_attrs(hid_t f, int64_t vocab)
{
    const int64_t version = 1, eos = 0;
    const char *tokenizer = "test";
    add_int_attr(f, "format_version", &version, 0);
    add_int_attr(f, "vocab_size", &vocab, 0);
    add_int_attr(f, "eos_id", &eos, 0);
    add_string_attr(f, "tokenizer", &tokenizer, 0);
}

/* An HDF5 file with one dataset `name` of type file_type, ndims dims, and
 * the attributes a valid shard has (vocab_size as given). */
static void write_raw(const char *path, const char *name, hid_t file_type, int ndims, const hsize_t *dims,
                      const void *data, hid_t mem_type, int64_t vocab)
{
    hid_t f = create_raw(path, H5P_DEFAULT, name, file_type, ndims, dims, data, mem_type);
    add_shard_attrs(f, vocab);
    H5Fclose(f);
}

/* A chunked 1-D dataset that claims n elements and stores none: a file of a
 * few KB can claim lengths no memory holds. */
static void add_unallocated(hid_t f, const char *name, hid_t type, hsize_t n)
{
    hsize_t dims[1] = {n}, chunk[1] = {1024};
    hid_t sp = H5Screate_simple(1, dims, NULL), dcpl = H5Pcreate(H5P_DATASET_CREATE);
    assert_true(H5Pset_chunk(dcpl, 1, chunk) >= 0);
    hid_t ds = H5Dcreate2(f, name, type, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    assert_true(ds >= 0);
    H5Dclose(ds);
    H5Pclose(dcpl);
    H5Sclose(sp);
}

static void expect_open_error(const char *path, const char *phrase)
{
    mt_shard *s = mt_shard_open(path, err, sizeof err);
    assert_null(s);
    tl_expect_error(err, path, phrase);
}

static void bad_inputs(void **state)
{
    (void)state;
    expect_open_error(tl_temp_path("absent.h5"), "cannot open");

    const char *text = tl_temp_path("text.h5");
    FILE *f = fopen(text, "w");
    fputs("not a shard\n", f);
    fclose(f);
    expect_open_error(text, "not an HDF5 file");

    const char *cut = tl_temp_path("cut.h5");
    write_shard(cut, 20000, VOCAB, NULL, 0, 0, false);
    assert_int_equal(truncate(cut, 20000), 0);
    expect_open_error(cut, "truncated");

    uint16_t ids[64];
    for (int i = 0; i < 64; i++)
        ids[i] = (uint16_t)i;
    hsize_t n1[1] = {64}, n2[2] = {8, 8};
    const char *notok = tl_temp_path("notokens.h5");
    write_raw(notok, "ids", H5T_STD_U16LE, 1, n1, ids, H5T_NATIVE_UINT16, VOCAB);
    expect_open_error(notok, "no /tokens");

    float fl[64] = {0};
    const char *fty = tl_temp_path("float.h5");
    write_raw(fty, "tokens", H5T_IEEE_F32LE, 1, n1, fl, H5T_NATIVE_FLOAT, VOCAB);
    expect_open_error(fty, "uint16 or uint32");

    const char *rank2 = tl_temp_path("rank2.h5");
    write_raw(rank2, "tokens", H5T_STD_U16LE, 2, n2, ids, H5T_NATIVE_UINT16, VOCAB);
    expect_open_error(rank2, "1-D");

    const char *big = tl_temp_path("bigid.h5"); /* ids up to 63 with vocab_size 40 */
    write_raw(big, "tokens", H5T_STD_U16LE, 1, n1, ids, H5T_NATIVE_UINT16, 40);
    mt_shard *s = mt_shard_open(big, err, sizeof err);
    assert_non_null(s);
    assert_string_equal(mt_shard_get_info(s)->tokenizer, "test");
    int32_t out[64];
    assert_false(mt_shard_read_tokens(s, 0, 64, out, err, sizeof err));
    tl_expect_error(err, big, "offset 40");
    mt_shard_close(s);

    const char *const *paths = two_shards();
    mt_loader_config c = loader_config(paths, 2);
    c.vocab_size = 512;
    assert_null(mt_loader_open(&c, err, sizeof err));
    tl_expect_error(err, paths[0], "the model's vocab_size is 512");

    const char *tiny = tl_temp_path("tiny.h5");
    write_shard(tiny, L, VOCAB, NULL, 0, 0, false);
    const char *tp[] = {tiny};
    c = loader_config(tp, 1);
    assert_null(mt_loader_open(&c, err, sizeof err));
    tl_expect_error(err, tiny, "shorter than one sample");

    const char *pattern = tl_temp_path("nothing-*.h5");
    const char *pp[] = {pattern};
    c = loader_config(pp, 1);
    assert_null(mt_loader_open(&c, err, sizeof err));
    tl_expect_error(err, pattern, "matches no");

    const char *bp[] = {big}; /* the loader finds bad ids as it reads */
    c = loader_config(bp, 1);
    c.vocab_size = 0;
    c.shuffle = false;
    c.batch_size = 1;
    mt_loader *ld = mt_loader_open(&c, err, sizeof err);
    assert_non_null(ld);
    for (int i = 0; i < 5; i++) /* samples 0..4 hold ids below 40 */
        assert_non_null(mt_loader_next(ld, err, sizeof err));
    assert_null(mt_loader_next(ld, err, sizeof err));
    tl_expect_error(err, big, "offset 40");
    mt_loader_close(ld);

    assert_null(mt_shard_writer_open(tl_temp_path("x.h5"), 10, 10, "t", false, err, sizeof err));
    mt_shard_writer *w = mt_shard_writer_open(tl_temp_path("no-such-dir/x.h5"), 10, 0, "t", false, err, sizeof err);
    int32_t one = 1;
    assert_true(mt_shard_writer_append(w, &one, NULL, 1, true, err, sizeof err));
    assert_false(mt_shard_writer_close(w, 0, false, err, sizeof err));
    tl_expect_error(err, "no-such-dir", "cannot write");
}

/* The first n bytes of data, as a file. */
static void write_bytes(const char *path, const void *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
}

/* Files that are not shards get a one-line error naming them before HDF5
 * reads them; a shard after a user block (superblock at 1024) still opens. */
static void non_hdf5_files(void **state)
{
    (void)state;
    const char *empty = tl_temp_path("empty.h5");
    write_bytes(empty, "", 0);
    expect_open_error(empty, "empty");

    const char *dir = tl_temp_path("dir.h5");
    assert_int_equal(mkdir(dir, 0700), 0);
    expect_open_error(dir, "a directory");

    const char *text = tl_temp_path("short.h5");
    write_bytes(text, "hi\n", 3);
    expect_open_error(text, "not an HDF5 file");

    /* Truncated copies of a valid shard: in the signature, in the
     * superblock, just past it, in the middle, one byte short. */
    const char *whole = tl_temp_path("whole.h5");
    write_shard(whole, 5000, VOCAB, NULL, 0, 0, false);
    FILE *f = fopen(whole, "rb");
    assert_non_null(f);
    static unsigned char bytes[1 << 16];
    const size_t size = fread(bytes, 1, sizeof bytes, f);
    fclose(f);
    assert_true(size > 1000 && size < sizeof bytes);
    const size_t cuts[] = {4, 8, 30, 95, 120, size / 2, size - 1};
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        char name[32];
        snprintf(name, sizeof name, "cut-%zu.h5", cuts[i]);
        const char *cut = tl_temp_path(name);
        write_bytes(cut, bytes, cuts[i]);
        expect_open_error(cut, cuts[i] < 8 ? "not an HDF5 file" : "truncated");
    }

    uint16_t ids[64];
    for (int i = 0; i < 64; i++)
        ids[i] = (uint16_t)i;
    hsize_t n1[1] = {64};
    const char *after_block = tl_temp_path("user-block.h5");
    hid_t fcpl = H5Pcreate(H5P_FILE_CREATE);
    assert_true(H5Pset_userblock(fcpl, 1024) >= 0);
    hid_t file = create_raw(after_block, fcpl, "tokens", H5T_STD_U16LE, 1, n1, ids, H5T_NATIVE_UINT16);
    add_shard_attrs(file, VOCAB);
    H5Fclose(file);
    H5Pclose(fcpl);
    mt_shard *s = mt_shard_open(after_block, err, sizeof err);
    if (!s)
        fail_msg("%s", err);
    assert_int_equal(mt_shard_get_info(s)->n_tokens, 64);
    mt_shard_close(s);
}

/* A shard of 64 uint16 ids whose vocab_size and tokenizer attributes hold
 * n_vocab and n_tokenizer values (0: one scalar, as they should). */
static void write_attr_shapes(const char *path, const int64_t *vocab, int n_vocab, const char *const *tokenizer,
                              int n_tokenizer)
{
    uint16_t ids[64] = {0};
    hsize_t n1[1] = {64};
    const int64_t version = 1, eos = 0;
    hid_t f = create_raw(path, H5P_DEFAULT, "tokens", H5T_STD_U16LE, 1, n1, ids, H5T_NATIVE_UINT16);
    add_int_attr(f, "format_version", &version, 0);
    add_int_attr(f, "vocab_size", vocab, n_vocab);
    add_int_attr(f, "eos_id", &eos, 0);
    add_string_attr(f, "tokenizer", tokenizer, n_tokenizer);
    H5Fclose(f);
}

/* Sizes and values from a file that would overrun buffers or overflow
 * arithmetic are refused with a message naming the file. */
static void hostile_sizes(void **state)
{
    (void)state;
    const int64_t vocabs[4] = {VOCAB, VOCAB, VOCAB, VOCAB};
    const char *names[3] = {"a", "b", "c"};
    const char *vocab_array = tl_temp_path("vocab-array.h5");
    write_attr_shapes(vocab_array, vocabs, 4, names, 0);
    expect_open_error(vocab_array, "vocab_size");
    const char *tokenizer_array = tl_temp_path("tokenizer-array.h5");
    write_attr_shapes(tokenizer_array, vocabs, 0, names, 3);
    expect_open_error(tokenizer_array, "tokenizer");

    uint32_t ids[64];
    for (int i = 0; i < 64; i++)
        ids[i] = (uint32_t)i;
    hsize_t n1[1] = {64};
    const char *vocab_2_32 = tl_temp_path("vocab-2-32.h5"); /* ids handed out as int32 cannot reach it */
    write_raw(vocab_2_32, "tokens", H5T_STD_U32LE, 1, n1, ids, H5T_NATIVE_UINT32, (int64_t)1 << 32);
    expect_open_error(vocab_2_32, "above 2^31");

    /* 2^61 + 1 offsets: their byte count wraps to 8 in 64 bits. */
    const char *many_docs = tl_temp_path("many-docs.h5");
    hid_t f = create_raw(many_docs, H5P_DEFAULT, "tokens", H5T_STD_U32LE, 1, n1, ids, H5T_NATIVE_UINT32);
    add_shard_attrs(f, VOCAB);
    add_unallocated(f, "doc_offsets", H5T_STD_U64LE, ((hsize_t)1 << 61) + 1);
    H5Fclose(f);
    expect_open_error(many_docs, "more than the 64 tokens");

    const char *small = tl_temp_path("small.h5");
    write_raw(small, "tokens", H5T_STD_U32LE, 1, n1, ids, H5T_NATIVE_UINT32, VOCAB);
    mt_shard *s = mt_shard_open(small, err, sizeof err);
    assert_non_null(s);
    int32_t out[16];
    uint8_t mask[16];
    assert_false(mt_shard_read_tokens(s, INT64_MAX - 5, 10, out, err, sizeof err));
    tl_expect_error(err, small, "outside");
    assert_false(mt_shard_read_loss_mask(s, INT64_MAX - 5, 10, mask, err, sizeof err));
    tl_expect_error(err, small, "outside");
    mt_shard_close(s);

    /* 2^62 tokens a shard: 2^61 samples of 2 tokens, 2^63 in four. */
    const char *huge = tl_temp_path("huge.h5");
    f = H5Fcreate(huge, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    add_unallocated(f, "tokens", H5T_STD_U16LE, (hsize_t)1 << 62);
    add_shard_attrs(f, VOCAB);
    H5Fclose(f);
    const char *four[] = {huge, huge, huge, huge};
    mt_loader_config c = loader_config(four, 4);
    c.seq_len = 1;
    assert_null(mt_loader_open(&c, err, sizeof err));
    tl_expect_error(err, huge, "more than 2^63 samples");

    c = loader_config(four, 1); /* 13 bytes a token in 2^61 tokens wraps */
    c.seq_len = 1 << 30;
    c.batch_size = INT_MAX;
    assert_null(mt_loader_open(&c, err, sizeof err));
    tl_expect_error(err, "data loader", "too large to allocate");
    c.seq_len = INT_MAX;
    assert_null(mt_loader_open(&c, err, sizeof err));
    tl_expect_error(err, "data loader", "seq_len 2147483647 must be below");
}

/* When validation takes every sample, or leaves a rank none, the message
 * says so and what to change. */
static void loader_empty_split(void **state)
{
    (void)state;
    const char *one = tl_temp_path("one-sample.h5");
    write_shard(one, L + 1, VOCAB, NULL, 0, 0, false);
    const char *op[] = {one};
    mt_loader_config c = loader_config(op, 1);
    c.val_fraction = 0.01;
    assert_null(mt_loader_open(&c, err, sizeof err));
    tl_expect_error(err, one, "holds 1 sample of seq_len + 1 = 8 tokens");
    tl_expect_error(err, "sends 1 to validation, leaving 0 for training", "more data, a shorter seq_len");
    tl_expect_error(err, "data.val_fraction = 0", "separate data.val shards");

    const char *const *paths = two_shards();
    c = loader_config(paths, 2);
    c.val_fraction = 0.01;
    c.validation = true;
    c.world = 2;
    c.rank = 1;
    assert_null(mt_loader_open(&c, err, sizeof err));
    tl_expect_error(err, paths[0], "and 1 more shard hold 87 samples");
    tl_expect_error(err, "sends 1 to validation, fewer than the 2 data-parallel ranks", "raise data.val_fraction");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(shard_round_trip),    cmocka_unit_test(permutation_is_bijection),
        cmocka_unit_test(loader_order),        cmocka_unit_test(loader_ranks_cover_epoch),
        cmocka_unit_test(loader_validation_split), cmocka_unit_test(loader_resume),
        cmocka_unit_test(cursor_json_round_trip),
        cmocka_unit_test(loader_seq_idx),      cmocka_unit_test(bad_inputs),
        cmocka_unit_test(non_hdf5_files),      cmocka_unit_test(hostile_sizes),
        cmocka_unit_test(loader_empty_split),
    };
    return cmocka_run_group_tests(tests, tl_temp_dir_setup, tl_temp_dir_teardown);
}
