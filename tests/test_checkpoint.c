/* Checkpoint storage: safetensors round trips and a header read by the
 * format's rules alone, a clear error naming the file for each kind of bad
 * file (made here by hand), checkpoint save/load bitwise round trips, damage
 * caught by the manifest, key and shape errors, pruning, recovery from an
 * interrupted save, and the model config's JSON form. */
#include <jansson.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "testlib.h"

#include "core/params.h"
#include "io/json_file.h"
#include "io/safetensors.h"
#include "layers/config_json.h"
#include "train/checkpoint.h"

static char err[1024];

static bool exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

static void write_bytes(const char *path, const void *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
}

/* A file of 8-byte length, the given header, then data_bytes zero bytes. */
static void write_raw(const char *path, const char *header, uint64_t claimed_len, size_t data_bytes)
{
    size_t hl = strlen(header);
    unsigned char *buf = calloc(8 + hl + data_bytes, 1);
    for (int b = 0; b < 8; b++)
        buf[b] = (unsigned char)(claimed_len >> (8 * b));
    memcpy(buf + 8, header, hl);
    write_bytes(path, buf, 8 + hl + data_bytes);
    free(buf);
}

/* ------------------------------------------------------------------------ */

static void safetensors_round_trip(void **state)
{
    (void)state;
    float f32[6] = {1.5f, -2.0f, 3.25f, 0.0f, -0.0f, 1e30f};
    uint16_t bf16[4] = {0x3f80, 0xbf80, 0x7f80, 0x0001};
    double f64[3] = {3.141592653589793, -1e-300, 42.0};
    int32_t i32[2] = {-7, 2147483647};
    const int64_t s_f32[2] = {2, 3}, s_bf16[3] = {1, 2, 2}, s_f64[1] = {3}, s_i32[1] = {2};
    const mt_st_entry entries[] = {
        {"w.f32", MT_ST_F32, 2, s_f32, f32}, {"b.bf16", MT_ST_BF16, 3, s_bf16, bf16},
        {"scalar.f64", MT_ST_F64, 1, s_f64, f64}, {"ids", MT_ST_I32, 1, s_i32, i32},
        {"empty", MT_ST_F32, 0, NULL, f32}, /* a 0-d tensor: one element */
    };
    json_t *meta = json_pack("{s:s, s:s}", "format", "pt", "note", "hello");
    const char *p = tl_temp_path("rt.safetensors");
    assert_true(mt_safetensors_write(p, entries, 5, meta, err, sizeof err));
    json_decref(meta);

    mt_st_file *f = mt_safetensors_open(p, err, sizeof err);
    if (!f)
        fail_msg("%s", err);
    assert_int_equal(mt_safetensors_count(f), 5);
    for (int i = 0; i < 5; i++) /* file order is write order */
        assert_string_equal(mt_safetensors_at(f, i)->name, entries[i].name);
    assert_string_equal(json_string_value(json_object_get(mt_safetensors_metadata(f), "note")), "hello");
    const mt_st_tensor *t = mt_safetensors_find(f, "b.bf16");
    assert_non_null(t);
    assert_int_equal(t->dtype, MT_ST_BF16);
    assert_int_equal(t->ndim, 3);
    assert_int_equal(t->shape[2], 2);
    uint16_t got_bf16[4];
    assert_true(mt_safetensors_read(f, t, got_bf16, sizeof got_bf16, err, sizeof err));
    assert_memory_equal(got_bf16, bf16, sizeof bf16);
    float got_f32[6];
    assert_true(mt_safetensors_read(f, mt_safetensors_find(f, "w.f32"), got_f32, sizeof got_f32, err, sizeof err));
    assert_memory_equal(got_f32, f32, sizeof f32);
    double got_f64[3];
    assert_true(mt_safetensors_read(f, mt_safetensors_find(f, "scalar.f64"), got_f64, sizeof got_f64, err, sizeof err));
    assert_memory_equal(got_f64, f64, sizeof f64);
    int32_t got_i32[2];
    assert_true(mt_safetensors_read(f, mt_safetensors_find(f, "ids"), got_i32, sizeof got_i32, err, sizeof err));
    assert_memory_equal(got_i32, i32, sizeof i32);
    assert_int_equal(mt_safetensors_find(f, "empty")->end - mt_safetensors_find(f, "empty")->begin, 4);
    assert_null(mt_safetensors_find(f, "nope"));
    assert_false(mt_safetensors_read(f, t, got_bf16, 2, err, sizeof err));
    tl_expect_error(err, p, "b.bf16");
    mt_safetensors_close(f);

    /* The file by the format's rules alone: little-endian length, a JSON
     * object, the data after it at the stated offsets. */
    FILE *fp = fopen(p, "rb");
    unsigned char len_le[8];
    assert_int_equal(fread(len_le, 1, 8, fp), 8);
    uint64_t n = 0;
    for (int b = 0; b < 8; b++)
        n |= (uint64_t)len_le[b] << (8 * b);
    assert_int_equal(n % 8, 0);
    char *header = calloc(n + 1, 1);
    assert_int_equal(fread(header, 1, n, fp), n);
    fclose(fp);
    json_t *j = json_loads(header, 0, NULL);
    assert_non_null(j);
    json_t *w = json_object_get(j, "w.f32");
    assert_string_equal(json_string_value(json_object_get(w, "dtype")), "F32");
    assert_int_equal(json_integer_value(json_array_get(json_object_get(w, "shape"), 1)), 3);
    assert_int_equal(json_integer_value(json_array_get(json_object_get(w, "data_offsets"), 0)), 0);
    assert_int_equal(json_integer_value(json_array_get(json_object_get(w, "data_offsets"), 1)), 24);
    json_t *b = json_object_get(j, "b.bf16");
    assert_int_equal(json_integer_value(json_array_get(json_object_get(b, "data_offsets"), 0)), 24);
    assert_string_equal(json_string_value(json_object_get(json_object_get(j, "__metadata__"), "format")), "pt");
    json_decref(j);
    free(header);
}

static void safetensors_bad_files(void **state)
{
    (void)state;
    const char *p = tl_temp_path("bad.safetensors");
    const char *ok_header = "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}";

    write_raw(p, ok_header, strlen(ok_header), 8);
    mt_st_file *f = mt_safetensors_open(p, err, sizeof err);
    if (!f)
        fail_msg("the well-formed file should open: %s", err);
    mt_safetensors_close(f);

    write_raw(p, ok_header, strlen(ok_header), 5); /* data cut short */
    assert_null(mt_safetensors_open(p, err, sizeof err));
    tl_expect_error(err, p, "truncated");

    write_bytes(p, "\x10\x00\x00", 3); /* not even the length */
    assert_null(mt_safetensors_open(p, err, sizeof err));
    tl_expect_error(err, p, "truncated");

    write_raw(p, ok_header, 1000, 8); /* length past the end */
    assert_null(mt_safetensors_open(p, err, sizeof err));
    tl_expect_error(err, p, "header length 1000");

    write_raw(p, ok_header, (uint64_t)1 << 40, 8);
    assert_null(mt_safetensors_open(p, err, sizeof err));
    tl_expect_error(err, p, "header length");

    const char *bad_json = "{\"a\":{\"dtype\":\"F32\",";
    write_raw(p, bad_json, strlen(bad_json), 8);
    assert_null(mt_safetensors_open(p, err, sizeof err));
    tl_expect_error(err, p, "JSON");

    const char *overlap = "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                          "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}";
    write_raw(p, overlap, strlen(overlap), 8);
    assert_null(mt_safetensors_open(p, err, sizeof err));
    tl_expect_error(err, p, "overlap");

    const char *unknown = "{\"a\":{\"dtype\":\"F33\",\"shape\":[2],\"data_offsets\":[0,8]}}";
    write_raw(p, unknown, strlen(unknown), 8);
    assert_null(mt_safetensors_open(p, err, sizeof err));
    tl_expect_error(err, p, "unknown dtype \"F33\"");
    tl_expect_error(err, "\"a\"", NULL);

    const char *wrong_size = "{\"a\":{\"dtype\":\"F64\",\"shape\":[2],\"data_offsets\":[0,8]}}";
    write_raw(p, wrong_size, strlen(wrong_size), 8);
    assert_null(mt_safetensors_open(p, err, sizeof err));
    tl_expect_error(err, p, "need 16");

    assert_null(mt_safetensors_open(tl_temp_path("absent.safetensors"), err, sizeof err));
    tl_expect_error(err, "absent.safetensors", NULL);
}

/* ------------------------------------------------------------------------ */

/* A small store: the names and shapes of a tiny model, values (and moments)
 * from seed. With extra set, one more parameter; with wide set, "b" wider. */
static void make_params(mt_params *p, uint64_t seed, bool extra, bool wide)
{
    mt_params_init(p, MT_CPU, MT_F32);
    mt_params_add(p, "embedding.weight", 2, (int64_t[]){5, 3}, 0);
    mt_params_add(p, "layers.0.mixer.A_log", 1, (int64_t[]){2}, MT_PARAM_NO_DECAY);
    mt_params_add(p, "b", 2, (int64_t[]){wide ? 5 : 4, 3}, 0);
    if (extra)
        mt_params_add(p, "extra", 1, (int64_t[]){7}, 0);
    mt_params_alloc(p);
    float *bufs[3] = {p->values, p->adam_m, p->adam_v};
    for (int b = 0; b < 3; b++)
        for (size_t i = 0; i < p->flat_size; i++)
            bufs[b][i] = seed ? (float)((i * 2654435761u + seed * 97 + (uint64_t)b * 13) % 1000) / 7.0f - 50.0f : 0;
}

/* Every parameter's values and moments bitwise equal. */
static void assert_params_equal(const mt_params *a, const mt_params *b)
{
    assert_int_equal(a->n, b->n);
    for (int i = 0; i < a->n; i++) {
        const mt_param *qa = a->items[i], *qb = mt_params_find(b, qa->name);
        assert_non_null(qb);
        size_t bytes = mt_nbytes(&qa->value);
        assert_memory_equal((float *)a->values + qa->offset, (float *)b->values + qb->offset, bytes);
        assert_memory_equal((float *)a->adam_m + qa->offset, (float *)b->adam_m + qb->offset, bytes);
        assert_memory_equal((float *)a->adam_v + qa->offset, (float *)b->adam_v + qb->offset, bytes);
    }
}

static json_t *trainer_json(int64_t step)
{
    return json_pack("{s:I, s:I, s:s}", "step", (json_int_t)step, "tokens_seen", (json_int_t)step * 4096, "rng",
                     "0123456789abcdef");
}

static void save(const char *out, int64_t step, const mt_params *p, int keep_last)
{
    json_t *tr = trainer_json(step), *cfg = json_pack("{s:i}", "d_model", 8);
    char path[512];
    if (!mt_checkpoint_save(out, step, p, true, tr, cfg, keep_last, path, sizeof path, err, sizeof err))
        fail_msg("save of step %lld failed: %s", (long long)step, err);
    json_decref(tr);
    json_decref(cfg);
}

static void checkpoint_round_trip(void **state)
{
    (void)state;
    const char *out = tl_temp_path("run-rt");
    mt_params a, b;
    make_params(&a, 1, false, false);
    json_t *tr = trainer_json(120), *cfg = json_pack("{s:i}", "d_model", 8);
    char path[512];
    assert_true(mt_checkpoint_save(out, 120, &a, true, tr, cfg, 0, path, sizeof path, err, sizeof err));
    assert_string_equal(path, tl_temp_path("run-rt/step_000120"));
    const char *files[] = {"model.safetensors", "optimizer.safetensors", "trainer.json", "config.json",
                           "manifest.json"};
    for (int i = 0; i < 5; i++) {
        char f[600];
        snprintf(f, sizeof f, "%s/%s", path, files[i]);
        assert_true(exists(f));
    }

    make_params(&b, 0, false, false);
    json_t *got = NULL;
    if (!mt_checkpoint_load(path, &b, true, &got, err, sizeof err))
        fail_msg("%s", err);
    assert_params_equal(&a, &b);
    assert_true(json_equal(got, tr));
    json_decref(got);

    /* Saving the same step again replaces it safely. */
    assert_true(mt_checkpoint_save(out, 120, &a, false, tr, cfg, 0, path, sizeof path, err, sizeof err));
    assert_false(exists(tl_temp_path("run-rt/step_000120.old")));
    assert_false(exists(tl_temp_path("run-rt/step_000120/optimizer.safetensors")));
    assert_false(mt_checkpoint_load(path, &b, true, NULL, err, sizeof err));
    tl_expect_error(err, "optimizer.safetensors", NULL);
    assert_true(mt_checkpoint_load(path, &b, false, NULL, err, sizeof err));

    /* An unwritable out_dir is named. */
    assert_false(mt_checkpoint_save(tl_temp_path("no/such/dir"), 1, &a, true, tr, cfg, 0, NULL, 0, err, sizeof err));
    tl_expect_error(err, tl_temp_path("no/such/dir"), NULL);
    json_decref(tr);
    json_decref(cfg);
    mt_params_release(&a);
    mt_params_release(&b);
}

static void flip_byte(const char *path, long at)
{
    FILE *f = fopen(path, "r+b");
    assert_non_null(f);
    assert_int_equal(fseek(f, at, SEEK_END), 0);
    int c = fgetc(f);
    assert_int_equal(fseek(f, at, SEEK_END), 0);
    fputc(c ^ 0x01, f);
    assert_int_equal(fclose(f), 0);
}

static void checkpoint_damage_detected(void **state)
{
    (void)state;
    const char *out = tl_temp_path("run-crc");
    mt_params a, b;
    make_params(&a, 2, false, false);
    make_params(&b, 0, false, false);
    save(out, 10, &a, 0);
    save(out, 20, &a, 0);
    const char *model20 = tl_temp_path("run-crc/step_000020/model.safetensors");
    flip_byte(model20, -3); /* in the data: the safetensors header still parses */

    assert_false(mt_checkpoint_load(tl_temp_path("run-crc/step_000020"), &b, true, NULL, err, sizeof err));
    tl_expect_error(err, model20, "CRC-32");
    char path[512];
    assert_int_equal(mt_checkpoint_latest(out, path, sizeof path, err, sizeof err), MT_CHECKPOINT_VALID);
    assert_string_equal(path, tl_temp_path("run-crc/step_000010"));

    /* A truncated file is caught by its size. With every checkpoint damaged
     * the answer is not "none": each is named with why. */
    const char *optimizer10 = tl_temp_path("run-crc/step_000010/optimizer.safetensors");
    assert_int_equal(truncate(optimizer10, 100), 0);
    assert_int_equal(mt_checkpoint_latest(out, path, sizeof path, err, sizeof err), MT_CHECKPOINT_DAMAGED);
    tl_expect_error(err, out, "none of its 2 checkpoints verifies");
    tl_expect_error(err, model20, "CRC-32");
    tl_expect_error(err, optimizer10, "truncated");
    assert_int_equal(mt_checkpoint_count(out, err, sizeof err), 2);

    /* No checkpoint at all, or no directory: none. */
    assert_int_equal(mt_checkpoint_latest(tl_temp_path("nowhere"), path, sizeof path, err, sizeof err),
                     MT_CHECKPOINT_NONE);
    tl_expect_error(err, "nowhere", "no checkpoint");
    assert_int_equal(mkdir(tl_temp_path("run-empty"), 0755), 0);
    assert_int_equal(mt_checkpoint_latest(tl_temp_path("run-empty"), path, sizeof path, err, sizeof err),
                     MT_CHECKPOINT_NONE);
    assert_int_equal(mt_checkpoint_count(tl_temp_path("nowhere"), err, sizeof err), 0);
    mt_params_release(&a);
    mt_params_release(&b);
}

static void checkpoint_key_errors(void **state)
{
    (void)state;
    const char *out = tl_temp_path("run-keys");
    mt_params a, wide, extra, fewer;
    make_params(&a, 3, true, false);
    save(out, 1, &a, 0);
    const char *ck = tl_temp_path("run-keys/step_000001");

    make_params(&wide, 0, true, true);
    assert_false(mt_checkpoint_load(ck, &wide, false, NULL, err, sizeof err));
    tl_expect_error(err, "\"b\"", "checkpoint shape (4, 3), model shape (5, 3)");
    tl_expect_error(err, "model.safetensors", NULL);

    /* The checkpoint lacks nothing the smaller model has, but holds "extra". */
    make_params(&fewer, 0, false, false);
    assert_false(mt_checkpoint_load(ck, &fewer, false, NULL, err, sizeof err));
    tl_expect_error(err, "unexpected key \"extra\"", NULL);
    for (size_t i = 0; i < fewer.flat_size; i++) /* nothing loaded before the keys were checked */
        assert_true(((float *)fewer.values)[i] == 0.0f);

    /* A model with a parameter the checkpoint lacks. */
    mt_params_release(&a);
    make_params(&a, 3, false, false);
    save(out, 2, &a, 0);
    make_params(&extra, 0, true, false);
    assert_false(mt_checkpoint_load(tl_temp_path("run-keys/step_000002"), &extra, true, NULL, err, sizeof err));
    tl_expect_error(err, "missing key \"extra\"", NULL);

    /* A NaN in a moment (a store the trainer never saves) is named. */
    const mt_param *b = mt_params_find(&a, "b");
    ((float *)a.adam_v)[b->offset + 5] = NAN;
    save(out, 3, &a, 0);
    mt_params_release(&fewer);
    make_params(&fewer, 0, false, false);
    assert_false(mt_checkpoint_load(tl_temp_path("run-keys/step_000003"), &fewer, true, NULL, err, sizeof err));
    tl_expect_error(err, "\"b.exp_avg_sq\" holds a NaN or an infinity at element 5", "optimizer.safetensors");
    mt_params_release(&a);
    mt_params_release(&wide);
    mt_params_release(&extra);
    mt_params_release(&fewer);
}

static void checkpoint_keep_last_and_crash(void **state)
{
    (void)state;
    char out[512]; /* tl_temp_path reuses its buffers */
    snprintf(out, sizeof out, "%s", tl_temp_path("run-keep"));
    mt_params a;
    make_params(&a, 4, false, false);
    for (int64_t s = 100; s <= 500; s += 100)
        save(out, s, &a, 2);
    assert_false(exists(tl_temp_path("run-keep/step_000300")));
    assert_true(exists(tl_temp_path("run-keep/step_000400")));
    assert_true(exists(tl_temp_path("run-keep/step_000500")));

    /* A save that died mid-way: a newer .tmp with partial files. */
    const char *crashed = tl_temp_path("run-keep/step_000600.tmp");
    assert_int_equal(mkdir(crashed, 0755), 0);
    write_bytes(tl_temp_path("run-keep/step_000600.tmp/model.safetensors"), "\x08\x00", 2);
    char path[512];
    assert_int_equal(mt_checkpoint_latest(out, path, sizeof path, err, sizeof err), MT_CHECKPOINT_VALID);
    assert_string_equal(path, tl_temp_path("run-keep/step_000500"));
    save(out, 700, &a, 0);
    assert_false(exists(crashed));
    assert_true(exists(tl_temp_path("run-keep/step_000400"))); /* keep_last 0 keeps all */
    assert_int_equal(mt_checkpoint_latest(out, path, sizeof path, err, sizeof err), MT_CHECKPOINT_VALID);
    assert_string_equal(path, tl_temp_path("run-keep/step_000700"));

    /* A replacement that died between its two renames left step_000700.old
     * as the only copy: a listing puts it back, and so does a save. */
    assert_int_equal(rename(path, tl_temp_path("run-keep/step_000700.old")), 0);
    assert_int_equal(mt_checkpoint_latest(out, path, sizeof path, err, sizeof err), MT_CHECKPOINT_VALID);
    assert_string_equal(path, tl_temp_path("run-keep/step_000700"));
    assert_false(exists(tl_temp_path("run-keep/step_000700.old")));
    assert_int_equal(rename(path, tl_temp_path("run-keep/step_000700.old")), 0);
    save(out, 800, &a, 0);
    assert_false(exists(tl_temp_path("run-keep/step_000700.old")));
    assert_true(mt_checkpoint_verify(tl_temp_path("run-keep/step_000700"), err, sizeof err));
    mt_params_release(&a);
}

/* A checkpoint that does not verify is never deleted: keep_last counts the
 * valid ones only and leaves it, a save of its step moves it aside (to a
 * new name each time), and deleting the valid ones leaves it too. */
static void checkpoint_damaged_ones_are_kept(void **state)
{
    (void)state;
    char out[512]; /* tl_temp_path reuses its buffers */
    snprintf(out, sizeof out, "%s", tl_temp_path("run-damaged"));
    mt_params a;
    make_params(&a, 5, false, false);
    for (int64_t s = 100; s <= 300; s += 100)
        save(out, s, &a, 0);
    char model200[512];
    snprintf(model200, sizeof model200, "%s", tl_temp_path("run-damaged/step_000200/model.safetensors"));
    assert_int_equal(truncate(model200, 10), 0);
    save(out, 400, &a, 2);
    assert_true(exists(model200));
    assert_false(exists(tl_temp_path("run-damaged/step_000100")));
    assert_true(exists(tl_temp_path("run-damaged/step_000300")));
    assert_true(exists(tl_temp_path("run-damaged/step_000400")));

    save(out, 200, &a, 0); /* as a run resumed from step 100 would */
    assert_true(mt_checkpoint_verify(tl_temp_path("run-damaged/step_000200"), err, sizeof err));
    assert_true(exists(tl_temp_path("run-damaged/step_000200.damaged/model.safetensors")));
    assert_int_equal(truncate(model200, 10), 0);
    save(out, 200, &a, 0);
    assert_true(exists(tl_temp_path("run-damaged/step_000200.damaged.1/model.safetensors")));
    assert_true(exists(tl_temp_path("run-damaged/step_000200.damaged")));

    assert_int_equal(truncate(tl_temp_path("run-damaged/step_000300/trainer.json"), 1), 0);
    int deleted;
    assert_true(mt_checkpoint_delete_valid(out, &deleted, err, sizeof err));
    assert_int_equal(deleted, 2);
    assert_true(exists(tl_temp_path("run-damaged/step_000300")));
    assert_false(exists(tl_temp_path("run-damaged/step_000200")));
    assert_false(exists(tl_temp_path("run-damaged/step_000400")));
    assert_int_equal(mt_checkpoint_count(out, err, sizeof err), 1);
    mt_params_release(&a);
}

/* ------------------------------------------------------------------------ */

static void config_json_round_trip(void **state)
{
    (void)state;
    mt_model_config c, back;
    mt_model_config_defaults(&c);
    c.d_model = 256;
    c.n_layer = 3;
    c.vocab_size = 1000;
    c.d_state = 64;
    c.headdim = 32;
    c.ngroups = 2;
    c.chunk_size = 64;
    c.dt_min = 0.0013;
    c.dt_max = 0.123456789012345;
    c.A_init_min = 0.5;
    c.norm_eps = 1e-6;
    c.dt_limit_min = 0.001;
    assert_true(mt_model_config_finalize(&c, err, sizeof err));
    json_t *j = mt_model_config_to_json(&c);
    assert_string_equal(json_string_value(json_object_get(json_object_get(j, "ssm_cfg"), "layer")), "Mamba2");
    assert_int_equal(json_integer_value(json_object_get(j, "d_intermediate")), 0);
    /* An infinite bound is held as io/json_file.h's "Infinity". */
    double hi = 0;
    assert_true(mt_json_number(json_array_get(json_object_get(json_object_get(j, "ssm_cfg"), "dt_limit"), 1), &hi));
    assert_true(isinf(hi));
    /* Through text, as it goes through config.json. */
    char *text = json_dumps(j, JSON_REAL_PRECISION(17));
    json_t *parsed = json_loads(text, 0, NULL);
    assert_true(mt_model_config_from_json(parsed, &back, err, sizeof err));
    assert_memory_equal(&back, &c, sizeof c);
    free(text);
    json_decref(parsed);
    json_decref(j);

    /* Defaults leave out what the reference cannot say. */
    mt_model_config_defaults(&c);
    assert_true(mt_model_config_finalize(&c, err, sizeof err));
    j = mt_model_config_to_json(&c);
    assert_null(json_object_get(j, "norm_epsilon"));
    assert_null(json_object_get(json_object_get(j, "ssm_cfg"), "dt_limit"));
    assert_true(mt_model_config_from_json(j, &back, err, sizeof err));
    assert_memory_equal(&back, &c, sizeof c);
    json_decref(j);

    /* A released model's config.json. */
    json_t *released = json_loads("{\"d_model\": 768, \"d_intermediate\": 0, \"n_layer\": 24, \"vocab_size\": 50277,"
                                  " \"ssm_cfg\": {\"layer\": \"Mamba2\"}, \"attn_layer_idx\": [], \"attn_cfg\": {},"
                                  " \"rms_norm\": true, \"residual_in_fp32\": true, \"fused_add_norm\": true,"
                                  " \"pad_vocab_size_multiple\": 16, \"tie_embeddings\": true}", 0, NULL);
    assert_true(mt_model_config_from_json(released, &back, err, sizeof err));
    assert_int_equal(back.vocab_padded, 50288);
    assert_int_equal(back.nheads, 24);

    const struct {
        const char *set, *path, *value, *says;
    } bad[] = {
        {"ssm_cfg", "layer", "\"Mamba3\"", "ssm_cfg.layer"},
        {"ssm_cfg", "d_state", "\"64\"", "ssm_cfg.d_state"},
        {"ssm_cfg", "dt_limit", "[0.1]", "ssm_cfg.dt_limit"},
        {"ssm_cfg", "D_has_hdim", "true", "ssm_cfg.D_has_hdim"},
        {"ssm_cfg", "mystery", "1", "ssm_cfg.mystery"},
        {NULL, "rms_norm", "1", "rms_norm"},
        {NULL, "d_model", "7.5", "d_model"},
        {NULL, "d_intermediate", "3072", "d_intermediate"},
        {NULL, "attn_layer_idx", "[3]", "attn_layer_idx"},
        {NULL, "colour", "\"blue\"", "colour"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        json_t *k = json_deep_copy(released);
        json_t *target = bad[i].set ? json_object_get(k, bad[i].set) : k;
        json_object_set_new(target, bad[i].path, json_loads(bad[i].value, JSON_DECODE_ANY, NULL));
        assert_false(mt_model_config_from_json(k, &back, err, sizeof err));
        tl_expect_error(err, bad[i].says, NULL);
        json_decref(k);
    }
    /* Without ssm_cfg the reference builds Mamba-1 blocks. */
    json_object_del(released, "ssm_cfg");
    assert_true(mt_model_config_from_json(released, &back, err, sizeof err));
    assert_int_equal(back.layer, MT_LAYER_MAMBA1);
    json_decref(released);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(safetensors_round_trip),    cmocka_unit_test(safetensors_bad_files),
        cmocka_unit_test(checkpoint_round_trip),     cmocka_unit_test(checkpoint_damage_detected),
        cmocka_unit_test(checkpoint_key_errors),     cmocka_unit_test(checkpoint_keep_last_and_crash),
        cmocka_unit_test(checkpoint_damaged_ones_are_kept), cmocka_unit_test(config_json_round_trip),
    };
    return cmocka_run_group_tests(tests, tl_temp_dir_setup, tl_temp_dir_teardown);
}
