/* A run's checkpoints (whole state, gathered from the ranks), its resume
 * (on the same or another number of ranks) and its start from released
 * weights. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

bool mt_run_resume(mt_run *r, const char *resume, char *err, size_t errlen)
{
    char dir[1024];
    if (strcmp(resume, "auto") == 0) {
        char why[512];
        if (!mt_checkpoint_latest(r->cfg->log.out_dir, dir, sizeof dir, why, sizeof why)) {
            if (r->lead)
                printf("resume auto: no checkpoint in %s (%s): starting fresh\n", r->cfg->log.out_dir, why);
            return true;
        }
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

