/* PyTorch checkpoints (io/torch_checkpoint.h): the fixtures' pytorch_model.bin
 * (torch.save) against their model.safetensors bit for bit, strided views
 * read back row-major, and a clear error, never a crash, for each kind of bad
 * file. The small archives are made here with libzip around pickles
 * assembled by hand, one opcode per helper call. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zip.h>
#include <cmocka.h>

#include "testlib.h"

#include "io/safetensors.h"
#include "io/torch_checkpoint.h"

static char err[1024];

/* ------------------------------------------------------------------------ */
/* A pickle assembler */

typedef struct pk {
    unsigned char b[4096];
    size_t n;
} pk;

static void emit(pk *p, const void *bytes, size_t n)
{
    assert_true(p->n + n <= sizeof p->b);
    memcpy(p->b + p->n, bytes, n);
    p->n += n;
}

static void op(pk *p, unsigned char c)
{
    emit(p, &c, 1);
}

static void le32(pk *p, uint32_t v)
{
    unsigned char b[4] = {(unsigned char)v, (unsigned char)(v >> 8), (unsigned char)(v >> 16), (unsigned char)(v >> 24)};
    emit(p, b, 4);
}

static void binunicode(pk *p, const char *s) /* X, 4-byte length, UTF-8 */
{
    op(p, 'X');
    le32(p, (uint32_t)strlen(s));
    emit(p, s, strlen(s));
}

static void binint(pk *p, int32_t v) /* J, signed 4 bytes */
{
    op(p, 'J');
    le32(p, (uint32_t)v);
}

static void global(pk *p, const char *module, const char *name) /* c module\nname\n */
{
    op(p, 'c');
    emit(p, module, strlen(module));
    op(p, '\n');
    emit(p, name, strlen(name));
    op(p, '\n');
}

static void ordered_dict(pk *p) /* collections.OrderedDict() */
{
    global(p, "collections", "OrderedDict");
    op(p, ')'); /* EMPTY_TUPLE */
    op(p, 'R'); /* REDUCE */
}

/* Pushes _rebuild_tensor_v2(('storage', torch.FloatStorage, key, 'cpu',
 * numel), offset, size, stride, False, OrderedDict()), as torch.save does. */
static void tensor(pk *p, const char *key, int numel, int offset, int ndim, const int *size, const int *stride)
{
    global(p, "torch._utils", "_rebuild_tensor_v2");
    op(p, '('); /* MARK: the arguments */
    op(p, '('); /* MARK: the persistent id */
    binunicode(p, "storage");
    global(p, "torch", "FloatStorage");
    binunicode(p, key);
    binunicode(p, "cpu");
    binint(p, numel);
    op(p, 't'); /* TUPLE */
    op(p, 'Q'); /* BINPERSID: the storage */
    binint(p, offset);
    op(p, '(');
    for (int d = 0; d < ndim; d++)
        binint(p, size[d]);
    op(p, 't');
    op(p, '(');
    for (int d = 0; d < ndim; d++)
        binint(p, stride[d]);
    op(p, 't');
    op(p, 0x89); /* NEWFALSE: requires_grad */
    ordered_dict(p); /* backward_hooks */
    op(p, 't');  /* TUPLE: the arguments */
    op(p, 'R');  /* REDUCE */
}

/* {name: tensor(...)}: a one-tensor state dict, ended with STOP. */
static void one_tensor(pk *p, const char *name, int numel, int ndim, const int *size, const int *stride)
{
    op(p, 0x80); /* PROTO 2 */
    op(p, 2);
    op(p, '}'); /* EMPTY_DICT */
    binunicode(p, name);
    tensor(p, "0", numel, 0, ndim, size, stride);
    op(p, 's'); /* SETITEM */
    op(p, '.'); /* STOP */
}

/* ------------------------------------------------------------------------ */
/* Archives */

/* Writes archive/data.pkl = the pickle, archive/byteorder (unless NULL) and
 * archive/data/0 = storage0 (unless NULL), deflated (libzip's default) or
 * stored (as torch.save writes them). Returns the path. */
static const char *make_archive(const char *file, const pk *p, const char *byteorder, const void *storage0,
                                size_t storage0_bytes, bool stored)
{
    const char *path = tl_temp_path(file);
    int code = 0;
    zip_t *z = zip_open(path, ZIP_CREATE | ZIP_TRUNCATE, &code);
    assert_non_null(z);
    const struct {
        const char *name;
        const void *data;
        size_t len;
    } m[] = {
        {"archive/data.pkl", p->b, p->n},
        {"archive/byteorder", byteorder, byteorder ? strlen(byteorder) : 0},
        {"archive/data/0", storage0, storage0_bytes},
    };
    for (size_t i = 0; i < sizeof m / sizeof m[0]; i++) {
        if (!m[i].data)
            continue;
        zip_source_t *s = zip_source_buffer(z, m[i].data, m[i].len, 0);
        assert_non_null(s);
        zip_int64_t idx = zip_file_add(z, m[i].name, s, 0);
        assert_true(idx >= 0);
        if (stored)
            assert_int_equal(zip_set_file_compression(z, (zip_uint64_t)idx, ZIP_CM_STORE, 0), 0);
    }
    assert_int_equal(zip_close(z), 0);
    return path;
}

static void write_bytes(const char *path, const void *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
}

static void *read_file(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    assert_int_equal(fseek(f, 0, SEEK_END), 0);
    long len = ftell(f);
    assert_true(len > 0);
    rewind(f);
    void *data = malloc((size_t)len);
    assert_non_null(data);
    assert_int_equal(fread(data, 1, (size_t)len, f), (size_t)len);
    fclose(f);
    *n = (size_t)len;
    return data;
}

/* Opening path fails with an error naming it and saying phrase1 and phrase2. */
static void expect_open_error(const char *path, const char *phrase1, const char *phrase2)
{
    err[0] = '\0';
    mt_torch_file *f = mt_torch_open(path, err, sizeof err);
    if (f) {
        mt_torch_close(f);
        fail_msg("%s opened; expected an error saying \"%s\"", path, phrase1);
    }
    tl_expect_error(err, path, phrase1);
    if (phrase2)
        tl_expect_error(err, phrase2, NULL);
    printf("  ok: %s\n", err);
}

/* ------------------------------------------------------------------------ */
/* The fixtures: the same weights as safetensors and as torch.save. */

static void *read_torch(const mt_torch_file *f, const mt_torch_tensor *t, size_t *bytes)
{
    size_t n = mt_st_dtype_size(t->dtype);
    for (int d = 0; d < t->ndim; d++)
        n *= (size_t)t->shape[d];
    void *data = malloc(n ? n : 1);
    assert_non_null(data);
    if (!mt_torch_read(f, t, data, n, err, sizeof err))
        fail_msg("%s", err);
    *bytes = n;
    return data;
}

static void fixture_matches(const char *kind)
{
    char bin[1024], st[1024];
    snprintf(bin, sizeof bin, "%s/tests/fixtures/%s-tiny-ref/pytorch_model.bin", MT_SOURCE_DIR, kind);
    snprintf(st, sizeof st, "%s/tests/fixtures/%s-tiny-hf/model.safetensors", MT_SOURCE_DIR, kind);
    mt_torch_file *tf = mt_torch_open(bin, err, sizeof err);
    if (!tf)
        fail_msg("%s", err);
    mt_st_file *sf = mt_safetensors_open(st, err, sizeof err);
    if (!sf)
        fail_msg("%s", err);
    assert_string_equal(mt_torch_path(tf), bin);
    /* the .bin has the tied lm_head.weight besides the same tensors */
    assert_int_equal(mt_torch_count(tf), mt_safetensors_count(sf) + 1);
    assert_string_equal(mt_torch_at(tf, 0)->name, "backbone.embedding.weight"); /* the dict's order */
    assert_null(mt_torch_at(tf, mt_torch_count(tf)));
    assert_null(mt_torch_find(tf, "backbone.embeddings.weight"));
    for (int i = 0; i < mt_safetensors_count(sf); i++) {
        const mt_st_tensor *s = mt_safetensors_at(sf, i);
        char name[512];
        if (strncmp(s->name, "backbone.embeddings.", 20) == 0)
            snprintf(name, sizeof name, "backbone.embedding.%s", s->name + 20);
        else
            snprintf(name, sizeof name, "%s", s->name);
        const mt_torch_tensor *t = mt_torch_find(tf, name);
        if (!t)
            fail_msg("%s: no tensor %s", bin, name);
        assert_int_equal(t->dtype, s->dtype);
        assert_int_equal(t->ndim, s->ndim);
        for (int d = 0; d < t->ndim; d++)
            assert_int_equal(t->shape[d], s->shape[d]);
        size_t tb, sb = s->end - s->begin;
        void *td = read_torch(tf, t, &tb), *sd = malloc(sb ? sb : 1);
        assert_non_null(sd);
        if (!mt_safetensors_read(sf, s, sd, sb, err, sizeof err))
            fail_msg("%s", err);
        assert_int_equal(tb, sb);
        if (memcmp(td, sd, sb) != 0)
            fail_msg("%s: %s differs from the safetensors copy", bin, name);
        free(td);
        free(sd);
    }
    /* tied: the embedding's storage, and the same values */
    const mt_torch_tensor *lm = mt_torch_find(tf, "lm_head.weight"),
                          *emb = mt_torch_find(tf, "backbone.embedding.weight");
    assert_non_null(lm);
    assert_non_null(emb);
    assert_string_equal(lm->storage, emb->storage);
    size_t lb, eb;
    void *ld = read_torch(tf, lm, &lb), *ed = read_torch(tf, emb, &eb);
    assert_int_equal(lb, eb);
    assert_memory_equal(ld, ed, lb);
    free(ld);
    free(ed);
    /* a wrong buffer size is refused */
    float one;
    assert_false(mt_torch_read(tf, emb, &one, sizeof one, err, sizeof err));
    tl_expect_error(err, "backbone.embedding.weight", "buffer");
    printf("%s: %d tensors equal to %s\n", bin, mt_torch_count(tf), st);
    mt_safetensors_close(sf);
    mt_torch_close(tf);
}

static void fixtures_match_safetensors(void **state)
{
    (void)state;
    fixture_matches("mamba");
    fixture_matches("mamba2");
}

/* ------------------------------------------------------------------------ */
/* Strided views, an OrderedDict with BUILD state, a tie and a skipped value. */

static void strided_views_read_row_major(void **state)
{
    (void)state;
    float storage[12]; /* a 3 x 4 matrix M[i][j] = 4i + j */
    for (int i = 0; i < 12; i++)
        storage[i] = (float)i;
    pk p = {.n = 0};
    op(&p, 0x80); /* PROTO 2 */
    op(&p, 2);
    ordered_dict(&p); /* the state dict, as Module.state_dict() returns it */
    op(&p, 'q');      /* BINPUT 0 */
    op(&p, 0);
    op(&p, '('); /* MARK: the items */
    binunicode(&p, "transposed"); /* M^T: size (4, 3), stride (1, 4) */
    tensor(&p, "0", 12, 0, 2, (const int[]){4, 3}, (const int[]){1, 4});
    op(&p, 'q'); /* BINPUT 1 */
    op(&p, 1);
    binunicode(&p, "row"); /* M[1]: contiguous from offset 4 */
    tensor(&p, "0", 12, 4, 1, (const int[]){4}, (const int[]){1});
    binunicode(&p, "cube"); /* offset + 6i + j + 2k */
    tensor(&p, "0", 12, 0, 3, (const int[]){2, 2, 2}, (const int[]){6, 1, 2});
    binunicode(&p, "scalar"); /* M[1][1], 0 dims */
    tensor(&p, "0", 12, 5, 0, NULL, NULL);
    binunicode(&p, "tied"); /* the transposed tensor again */
    op(&p, 'h');            /* BINGET 1 */
    op(&p, 1);
    binunicode(&p, "version"); /* not a tensor: skipped */
    binint(&p, 2);
    op(&p, 'u'); /* SETITEMS */
    op(&p, '}'); /* EMPTY_DICT: the BUILD state {'_metadata': OrderedDict()} */
    binunicode(&p, "_metadata");
    ordered_dict(&p);
    op(&p, 's'); /* SETITEM */
    op(&p, 'b'); /* BUILD */
    op(&p, '.'); /* STOP */

    static const struct {
        const char *name;
        int n;
        float v[12];
    } want[] = {
        {"transposed", 12, {0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11}},
        {"row", 4, {4, 5, 6, 7}},
        {"cube", 8, {0, 2, 1, 3, 6, 8, 7, 9}},
        {"scalar", 1, {5}},
        {"tied", 12, {0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11}},
    };
    for (int stored = 0; stored < 2; stored++) { /* deflated entries read through, stored ones seek */
        const char *path = make_archive(stored ? "views-stored.pt" : "views.pt", &p, "little", storage,
                                        sizeof storage, stored);
        mt_torch_file *f = mt_torch_open(path, err, sizeof err);
        if (!f)
            fail_msg("%s", err);
        assert_int_equal(mt_torch_count(f), 5);
        assert_null(mt_torch_find(f, "version"));
        for (int i = 0; i < 5; i++) {
            const mt_torch_tensor *t = mt_torch_at(f, i);
            assert_string_equal(t->name, want[i].name);
            assert_int_equal(t->dtype, MT_ST_F32);
            float got[12];
            if (!mt_torch_read(f, t, got, (size_t)want[i].n * sizeof(float), err, sizeof err))
                fail_msg("%s", err);
            assert_memory_equal(got, want[i].v, (size_t)want[i].n * sizeof(float));
        }
        mt_torch_close(f);
    }
}

/* ------------------------------------------------------------------------ */
/* Bad files */

static void bad_archives(void **state)
{
    (void)state;
    char bin[1024];
    snprintf(bin, sizeof bin, "%s/tests/fixtures/mamba-tiny-ref/pytorch_model.bin", MT_SOURCE_DIR);
    size_t n;
    unsigned char *bytes = read_file(bin, &n);
    const char *path = tl_temp_path("truncated.bin");
    write_bytes(path, bytes, n / 2);
    expect_open_error(path, "not a readable zip archive", "truncated");
    write_bytes(path, bytes, n - 10); /* only the end-of-directory record cut */
    expect_open_error(path, "not a readable zip archive", NULL);
    free(bytes);

    path = tl_temp_path("text.bin");
    write_bytes(path, "not a checkpoint\n", 17);
    expect_open_error(path, "not a readable zip archive", NULL);
    expect_open_error(tl_temp_path("missing.bin"), "cannot open", NULL);

    float storage[6] = {0};
    const int size[2] = {2, 3}, stride[2] = {3, 1};
    pk p = {.n = 0};
    one_tensor(&p, "w", 6, 2, size, stride);
    path = make_archive("bigendian.pt", &p, "big", storage, sizeof storage, false);
    expect_open_error(path, "big-endian", NULL);
    path = make_archive("noorder.pt", &p, NULL, storage, sizeof storage, false); /* absent: little */
    mt_torch_file *f = mt_torch_open(path, err, sizeof err);
    if (!f)
        fail_msg("%s", err);
    mt_torch_close(f);
    path = make_archive("short-storage.pt", &p, "little", storage, 20, false);
    expect_open_error(path, "\"w\"", "has 20 bytes, its 6 F32 elements need 24");
    path = make_archive("no-storage.pt", &p, "little", NULL, 0, false);
    expect_open_error(path, "archive/data/0 is missing", NULL);

    /* a (2, 3) tensor over a storage of 4 elements */
    p.n = 0;
    one_tensor(&p, "w", 4, 2, size, stride);
    path = make_archive("past-end.pt", &p, "little", storage, 4 * sizeof(float), false);
    expect_open_error(path, "tensor \"w\" runs past its storage", "reaches element 5");

    /* a negative stride */
    p.n = 0;
    one_tensor(&p, "w", 6, 2, size, (const int[]){-3, 1});
    path = make_archive("negative.pt", &p, "little", storage, sizeof storage, false);
    expect_open_error(path, "negative size or stride", NULL);
}

/* Pickles that must be refused at the opcode or global, before anything of
 * theirs could run. */
static void bad_pickles(void **state)
{
    (void)state;
    float storage[6] = {0};
    pk p = {.n = 0};
    /* os.system('echo pwned') */
    op(&p, 0x80); /* PROTO 2 */
    op(&p, 2);
    global(&p, "os", "system");
    binunicode(&p, "echo pwned");
    op(&p, 0x85); /* TUPLE1 */
    op(&p, 'R');  /* REDUCE */
    op(&p, '.');  /* STOP */
    const char *path = make_archive("os-system.pt", &p, "little", storage, sizeof storage, false);
    expect_open_error(path, "data.pkl: global os.system is not allowed in a state dict", NULL);

    /* builtins.eval through protocol 4's STACK_GLOBAL */
    p.n = 0;
    op(&p, 0x80); /* PROTO 4 */
    op(&p, 4);
    op(&p, 0x8c); /* SHORT_BINUNICODE 'builtins' */
    op(&p, 8);
    emit(&p, "builtins", 8);
    op(&p, 0x8c); /* SHORT_BINUNICODE 'eval' */
    op(&p, 4);
    emit(&p, "eval", 4);
    op(&p, 0x93); /* STACK_GLOBAL */
    op(&p, '.');
    path = make_archive("eval.pt", &p, "little", storage, sizeof storage, false);
    expect_open_error(path, "global builtins.eval is not allowed", NULL);

    /* INST, which imports and calls a class: a disallowed opcode */
    p.n = 0;
    op(&p, 0x80);
    op(&p, 2);
    op(&p, '(');
    emit(&p, "isubprocess\nPopen\n", 18); /* INST subprocess Popen */
    op(&p, '.');
    path = make_archive("inst.pt", &p, "little", storage, sizeof storage, false);
    expect_open_error(path, "opcode INST (0x69) is not allowed in a state dict", NULL);

    /* an unknown opcode byte */
    p.n = 0;
    op(&p, 0x80);
    op(&p, 2);
    op(&p, 0xff);
    path = make_archive("unknown.pt", &p, "little", storage, sizeof storage, false);
    expect_open_error(path, "unknown opcode 0xff", NULL);

    /* a string whose length runs past the pickle's end */
    p.n = 0;
    op(&p, 0x80);
    op(&p, 2);
    op(&p, 'X');
    le32(&p, 1000);
    emit(&p, "abc", 3);
    path = make_archive("short-string.pt", &p, "little", storage, sizeof storage, false);
    expect_open_error(path, "truncated: BINUNICODE needs 1000 more bytes", NULL);

    /* no STOP */
    p.n = 0;
    op(&p, 0x80);
    op(&p, 2);
    op(&p, '}');
    path = make_archive("no-stop.pt", &p, "little", storage, sizeof storage, false);
    expect_open_error(path, "ends without STOP", NULL);

    /* BINGET of a memo entry never set */
    p.n = 0;
    op(&p, 0x80);
    op(&p, 2);
    op(&p, 'h');
    op(&p, 7);
    op(&p, '.');
    path = make_archive("memo.pt", &p, "little", storage, sizeof storage, false);
    expect_open_error(path, "memo index 7 was never set", NULL);

    /* a wrapped state dict: {'model': {'w': tensor}} */
    p.n = 0;
    op(&p, 0x80);
    op(&p, 2);
    op(&p, '}');
    binunicode(&p, "model");
    op(&p, '}');
    binunicode(&p, "w");
    tensor(&p, "0", 6, 0, 1, (const int[]){6}, (const int[]){1});
    op(&p, 's'); /* SETITEM w */
    op(&p, 's'); /* SETITEM model */
    op(&p, '.');
    path = make_archive("wrapped.pt", &p, "little", storage, sizeof storage, false);
    expect_open_error(path, "\"model\" holds a dict of tensors", NULL);

    /* not a dict at all: a bare tensor */
    p.n = 0;
    op(&p, 0x80);
    op(&p, 2);
    tensor(&p, "0", 6, 0, 1, (const int[]){6}, (const int[]){1});
    op(&p, '.');
    path = make_archive("bare.pt", &p, "little", storage, sizeof storage, false);
    expect_open_error(path, "holds a tensor, not a state dict", NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(fixtures_match_safetensors),
        cmocka_unit_test(strided_views_read_row_major),
        cmocka_unit_test(bad_archives),
        cmocka_unit_test(bad_pickles),
    };
    return cmocka_run_group_tests(tests, tl_temp_dir_setup, tl_temp_dir_teardown);
}
