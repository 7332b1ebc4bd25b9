/* A run's checkpoints (whole state, gathered from the ranks), its resume
 * (on the same or another number of ranks), its metrics log from the step
 * it starts at, and its start from released weights. */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/error.h"
#include "dist/tp.h"
#include "layers/config_json.h"
#include "train/checkpoint.h"
#include "train/pretrained.h"
#include "train/run.h"

/* The trainer's state with every data-parallel rank's loader cursor
 * ("loader" is rank 0's, "loaders" all of them in rank order); NULL when
 * gathering the cursors fails. */
static json_t *trainer_state(mt_run *r, char *err, size_t errlen)
{
    /* Gathered as a sum: each rank fills its own (epoch, index) slot. */
    const mt_loader_cursor mine = mt_loader_tell(r->train);
    double *slots = calloc(2 * (size_t)r->dp_size, sizeof *slots);
    if (!slots)
        mt_fatal("out of host memory for %d loader cursors", r->dp_size);
    slots[2 * r->dp_rank] = (double)mine.epoch;
    slots[2 * r->dp_rank + 1] = (double)mine.index;
    if (!mt_group_sum(r->dist.dp, slots, 2 * (size_t)r->dp_size, err, errlen)) {
        free(slots);
        return NULL;
    }
    json_t *loaders = json_array();
    for (int i = 0; i < r->dp_size; i++)
        json_array_append_new(loaders, mt_loader_cursor_to_json((mt_loader_cursor){
                                           mine.seed, (int64_t)slots[2 * i], (int64_t)slots[2 * i + 1]}));
    free(slots);
    return json_pack("{s:I, s:I, s:I, s:i, s:O, s:i, s:o}", "step", (json_int_t)r->step, "tokens",
                     (json_int_t)r->tokens, "adam_step", (json_int_t)r->opt.step, "bad_steps", r->bad_steps,
                     "loader", json_array_get(loaders, 0), "dp_size", r->dp_size, "loaders", loaders);
}

/* Under tensor parallelism, the whole model's store in the single-rank
 * layout on the host: what checkpoints and released weights hold. */
static void build_full_model(const mt_run *r, mt_model *full)
{
    mt_model_build(full, &r->cfg->model, MT_CPU, MT_F32);
}

/* Every rank takes part (the optimizer state, the tensor-parallel slices
 * and the cursors are gathered); the lead rank writes. */
bool mt_run_save_checkpoint(mt_run *r, mt_train_result *res, char *err, size_t errlen)
{
    mt_model full = {0};
    const mt_params *store = &r->model.params;
    bool ok = mt_dist_gather_state(&r->dist, &r->model.params, err, errlen);
    if (ok && r->tp_size > 1 && r->dp_rank == 0) { /* one tp group gathers for the lead */
        if (r->lead)
            build_full_model(r, &full);
        ok = mt_tp_gather_store(r->dist.tp, &r->model, r->lead ? &full.params : NULL, err, errlen);
        store = &full.params;
    }
    json_t *state = ok ? trainer_state(r, err, errlen) : NULL;
    ok = state != NULL;
    if (ok && r->lead) {
        json_t *model_cfg = mt_model_config_to_json(&r->model.cfg);
        ok = mt_checkpoint_save(r->cfg->log.out_dir, r->step, store, true, state, model_cfg, r->cfg->log.keep_last,
                                res->checkpoint, sizeof res->checkpoint, err, errlen);
        json_decref(model_cfg);
        if (ok)
            printf("checkpoint: %s\n", res->checkpoint);
    }
    json_decref(state);
    if (full.layers)
        mt_model_release(&full);
    mt_dist_shard_state(&r->dist, &r->model.params, false);
    return mt_run_all_ok(r, ok, "writing the checkpoint", err, errlen);
}

/* A checkpoint's store into the model: whole, or this rank's slice of it. */
static bool load_checkpoint(mt_run *r, const char *dir, json_t **state, char *err, size_t errlen)
{
    mt_dist_whole_state(&r->dist, &r->model.params);
    bool ok;
    if (r->tp_size == 1) {
        ok = mt_checkpoint_load(dir, &r->model.params, true, state, err, errlen);
    } else {
        mt_model full;
        build_full_model(r, &full);
        ok = mt_checkpoint_load(dir, &full.params, true, state, err, errlen) &&
             mt_tp_scatter_store(&r->model, &full.params, true, err, errlen);
        mt_model_release(&full);
    }
    mt_dist_shard_state(&r->dist, &r->model.params, true);
    return ok;
}

/* Released weights (model.init_from) into the model: whole, or this rank's
 * slice of them. Nothing is re-initialized. */
bool mt_run_load_released(mt_run *r, char *err, size_t errlen)
{
    if (r->tp_size == 1)
        return mt_pretrained_load(r->cfg->init_from, &r->model, err, errlen);
    mt_model full;
    build_full_model(r, &full);
    bool ok = mt_pretrained_load(r->cfg->init_from, &full, err, errlen) &&
              mt_tp_scatter_store(&r->model, &full.params, false, err, errlen);
    mt_model_release(&full);
    return ok;
}

/* This rank's loader cursor from a checkpoint written by saved_dp data-
 * parallel ranks (cursors: their cursors, or NULL with cursor rank 0's).
 * On the same rank count each rank takes its own. On another count the
 * data position reshards when every rank stopped at the same place in its
 * stream (epoch e, index i): the ranks together had then visited positions
 * [0, i * saved_dp) of epoch e's order, which this run's ranks reach at
 * index i * saved_dp / dp when that divides. */
static bool resume_cursor(const mt_run *r, const char *dir, int saved_dp, json_t *cursor, json_t *cursors,
                          mt_loader_cursor *out, char *err, size_t errlen)
{
    if (saved_dp == r->dp_size) {
        if (cursors && !(cursor = json_array_get(cursors, (size_t)r->dp_rank)))
            return mt_errorf(err, errlen, "%s/trainer.json: no loader cursor for rank %d", dir, r->dp_rank);
        return mt_loader_cursor_from_json(cursor, out, err, errlen);
    }
    mt_loader_cursor first, each;
    bool same = cursors ? json_array_size(cursors) == (size_t)saved_dp : saved_dp == 1;
    same = same && mt_loader_cursor_from_json(cursors ? json_array_get(cursors, 0) : cursor, &first, err, errlen);
    for (int i = 1; same && i < saved_dp; i++)
        same = mt_loader_cursor_from_json(json_array_get(cursors, (size_t)i), &each, err, errlen) &&
               each.seed == first.seed && each.epoch == first.epoch && each.index == first.index;
    const int64_t visited = same ? first.index * saved_dp : -1;
    char why[160];
    if (!same)
        snprintf(why, sizeof why, "its ranks stopped at different places in the data (at an epoch boundary)");
    else
        snprintf(why, sizeof why, "the %lld samples its ranks visited do not split over %d ranks", (long long)visited,
                 r->dp_size);
    if (!same || visited % r->dp_size != 0)
        return mt_errorf(err, errlen, "%s was written by a run of %d data-parallel ranks and this run has %d: %s, so "
                         "the data position cannot be carried over (resume on %d ranks, or start a new run from its "
                         "weights with model.init_from = %s)", dir, saved_dp, r->dp_size, why, saved_dp, dir);
    *out = (mt_loader_cursor){first.seed, first.epoch, visited / r->dp_size};
    if (r->lead)
        printf("resume: the data position of %d data-parallel ranks carried over to %d (epoch %lld, %lld samples "
               "visited)\n", saved_dp, r->dp_size, (long long)first.epoch, (long long)visited);
    return true;
}

bool mt_run_claim_out_dir(const mt_run *r, bool overwrite, char *err, size_t errlen)
{
    const char *out_dir = r->cfg->log.out_dir;
    const int n = mt_checkpoint_count(out_dir, err, errlen);
    if (n <= 0)
        return n == 0;
    if (!overwrite)
        return mt_errorf(err, errlen, "%s already holds %d checkpoint%s (step_NNNNNN): continue that run with "
                         "--resume auto (or --resume DIR), choose another log.out_dir, or start afresh there with "
                         "--overwrite", out_dir, n, n > 1 ? "s" : "");
    int deleted;
    if (!mt_checkpoint_delete_valid(out_dir, &deleted, err, errlen))
        return false;
    printf("--overwrite: %d of the %d checkpoints in %s deleted (damaged ones stay)\n", deleted, n, out_dir);
    return true;
}

/* The checkpoint that "auto" resumes from, into dir; *fresh when out_dir
 * holds none at all. Damaged ones only are refused: starting fresh would
 * overwrite them. */
static bool auto_checkpoint(const mt_run *r, char *dir, size_t len, bool *fresh, char *err, size_t errlen)
{
    char why[1536];
    *fresh = false;
    switch (mt_checkpoint_latest(r->cfg->log.out_dir, dir, len, why, sizeof why)) {
    case MT_CHECKPOINT_VALID:
        return true;
    case MT_CHECKPOINT_NONE:
        *fresh = true;
        if (r->lead)
            printf("resume auto: no checkpoint in %s: starting fresh\n", r->cfg->log.out_dir);
        return true;
    case MT_CHECKPOINT_DAMAGED:
        return mt_errorf(err, errlen, "resume auto: nothing to resume from, and nothing is overwritten (move the "
                         "damaged checkpoints away, or start afresh beside them with --overwrite and no --resume): "
                         "%s", why);
    default:
        return mt_errorf(err, errlen, "resume auto: %s", why);
    }
}

bool mt_run_resume(mt_run *r, const char *resume, char *err, size_t errlen)
{
    char dir[1024];
    if (strcmp(resume, "auto") == 0) {
        bool fresh;
        if (!auto_checkpoint(r, dir, sizeof dir, &fresh, err, errlen))
            return false;
        if (fresh)
            return true;
    } else {
        snprintf(dir, sizeof dir, "%s", resume);
    }
    json_t *state = NULL;
    if (!load_checkpoint(r, dir, &state, err, errlen))
        return false;
    json_int_t step = 0, tokens = 0, adam_step = 0;
    int bad = 0, dp_size = 1;
    json_t *cursor = NULL, *cursors = NULL;
    json_error_t je;
    bool ok = json_unpack_ex(state, &je, 0, "{s:I, s:I, s:I, s:i, s:o, s?i, s?o}", "step", &step, "tokens", &tokens,
                             "adam_step", &adam_step, "bad_steps", &bad, "loader", &cursor, "dp_size", &dp_size,
                             "loaders", &cursors) == 0;
    mt_loader_cursor c;
    if (!ok)
        mt_errorf(err, errlen, "%s/trainer.json: %s", dir, je.text);
    ok = ok && resume_cursor(r, dir, dp_size, cursor, cursors, &c, err, errlen) &&
         mt_loader_seek(r->train, c, err, errlen);
    json_decref(state);
    if (!ok)
        return false;
    r->step = step;
    r->tokens = tokens;
    r->opt.step = adam_step;
    r->bad_steps = bad;
    if (r->lead)
        printf("resumed from %s at step %lld\n", dir, (long long)step);
    return true;
}

/* Whether the line of metrics.jsonl is a row of a step after step. A line
 * that does not parse (an interrupted write, or not ours) is kept. */
static bool row_after(const char *line, int64_t step)
{
    json_t *row = json_loads(line, 0, NULL);
    json_t *at = json_object_get(row, "step");
    const bool after = json_is_integer(at) && json_integer_value(at) > step;
    json_decref(row);
    return after;
}

/* The lines of in (each ending with a newline) but the rows after step into
 * out; *dropped counts the rows left out, *rewrite whether out differs. */
static bool copy_rows_up_to(FILE *in, FILE *out, int64_t step, int *dropped, bool *rewrite)
{
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    bool ok = true;
    *dropped = 0;
    *rewrite = false;
    while (ok && (n = getline(&line, &cap, in)) > 0) {
        const bool whole = line[n - 1] == '\n';
        if (row_after(line, step)) {
            ++*dropped;
            *rewrite = true;
            continue;
        }
        *rewrite = *rewrite || !whole; /* the next row must not continue a cut one */
        ok = fputs(line, out) >= 0 && (whole || fputc('\n', out) != EOF);
    }
    free(line);
    return ok && !ferror(in);
}

/* Drops the rows of steps after step from metrics.jsonl (those an
 * interrupted run logged after its last checkpoint, which the resumed run
 * logs again): the kept lines go, in order, to a temporary file that is
 * renamed over it. */
static bool drop_rows_after(const char *path, int64_t step, char *err, size_t errlen)
{
    FILE *in = fopen(path, "r");
    if (!in)
        return errno == ENOENT || mt_errorf(err, errlen, "%s: cannot read: %s", path, strerror(errno));
    char tmp[1100 + sizeof ".tmp"];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *out = fopen(tmp, "w");
    if (!out) {
        fclose(in);
        return mt_errorf(err, errlen, "%s: cannot write: %s", tmp, strerror(errno));
    }
    int dropped;
    bool rewrite;
    bool ok = copy_rows_up_to(in, out, step, &dropped, &rewrite) && fflush(out) == 0 && fsync(fileno(out)) == 0;
    int e = errno;
    if (fclose(out) != 0 && ok) {
        ok = false;
        e = errno;
    }
    fclose(in);
    if (!ok) {
        unlink(tmp);
        return mt_errorf(err, errlen, "%s: cannot rewrite it without the rows after step %lld: %s", path,
                         (long long)step, strerror(e));
    }
    if (!rewrite)
        return unlink(tmp) == 0 || mt_errorf(err, errlen, "%s: cannot remove: %s", tmp, strerror(errno));
    if (rename(tmp, path) != 0)
        return mt_errorf(err, errlen, "%s: cannot rename to %s: %s", tmp, path, strerror(errno));
    if (dropped > 0)
        printf("%s: %d rows of steps after %lld dropped (logged by an earlier run after the point this one starts "
               "from)\n", path, dropped, (long long)step);
    return true;
}

bool mt_run_open_metrics(mt_run *r, char *err, size_t errlen)
{
    char path[1100];
    snprintf(path, sizeof path, "%s/metrics.jsonl", r->cfg->log.out_dir);
    if (!drop_rows_after(path, r->step, err, errlen))
        return false;
    if (!(r->metrics = fopen(path, "a")))
        return mt_errorf(err, errlen, "%s: cannot write: %s", path, strerror(errno));
    return true;
}
