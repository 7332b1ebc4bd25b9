#include "data/loader.h"

#include <glob.h>
#include <inttypes.h>
#include <jansson.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/device.h"
#include "core/error.h"
#include "data/shard.h"

/* ------------------------------------------------------------------------ */
/* The order: a keyed Feistel bijection on [0, 2^bits), walked until it lands
 * in [0, n) (cycle walking keeps it a bijection of [0, n)). Any position is
 * computed on its own, so a cursor needs no stored permutation. */

static uint64_t mix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

int64_t mt_sample_permute(uint64_t seed, int64_t epoch, int64_t n, int64_t p)
{
    if (n <= 1)
        return p;
    int half = 1;
    while (((uint64_t)1 << (2 * half)) < (uint64_t)n)
        half++;
    const uint64_t mask = ((uint64_t)1 << half) - 1, key = mix64(seed ^ mix64((uint64_t)epoch + 1));
    uint64_t x = (uint64_t)p;
    do {
        uint64_t l = x >> half, r = x & mask;
        for (int round = 0; round < 4; round++) {
            uint64_t f = mix64(r ^ mix64(key + (uint64_t)round)) & mask;
            uint64_t t = l ^ f;
            l = r;
            r = t;
        }
        x = (l << half) | r;
    } while (x >= (uint64_t)n);
    return (int64_t)x;
}

/* ------------------------------------------------------------------------ */

enum { MAX_ERR = 512 };

typedef struct slot {
    mt_batch batch;
    bool pinned;
} slot;

struct mt_loader {
    mt_loader_config cfg;
    mt_shard **shards;
    int n_shards;
    int64_t *first_sample; /* n_shards + 1 prefix sums of samples per shard */
    int64_t set_base, set_size, rank_samples;
    int32_t *scratch;      /* seq_len + 1 tokens (worker) */
    uint8_t *scratch_mask;
    /* prefetch ring: the worker fills slots[produced % nslots]; the user holds the last handed one */
    slot *slots;
    int nslots;
    int64_t produced, handed;
    mt_loader_cursor worker_at, next_cursor;
    bool stop, failed;
    char worker_err[MAX_ERR];
    pthread_t thread;
    bool running;
    pthread_mutex_t mu;
    pthread_cond_t cv;
};

int64_t mt_loader_set_size(const mt_loader *ld)
{
    return ld->set_size;
}

int64_t mt_loader_rank_samples(const mt_loader *ld)
{
    return ld->rank_samples;
}

mt_loader_cursor mt_loader_tell(const mt_loader *ld)
{
    return ld->next_cursor;
}

/* The global number of the sample at the cursor, and the cursor after it. */
static int64_t cursor_sample(const mt_loader *ld, mt_loader_cursor *c)
{
    const mt_loader_config *cfg = &ld->cfg;
    if (c->index >= ld->rank_samples) {
        c->epoch++;
        c->index = 0;
    }
    int64_t p = (int64_t)cfg->rank + c->index * cfg->world;
    int64_t k = cfg->shuffle ? mt_sample_permute(c->seed, c->epoch, ld->set_size, p) : p;
    c->index++;
    return ld->set_base + k;
}

/* Reads global sample g into row b of a batch: inputs, targets, loss mask, seq_idx. */
static bool read_sample(mt_loader *ld, int64_t g, mt_batch *bt, int b, char *err, size_t errlen)
{
    int lo = 0, hi = ld->n_shards - 1;
    while (lo < hi) { /* the shard whose samples contain g */
        int mid = (lo + hi + 1) / 2;
        if (ld->first_sample[mid] <= g)
            lo = mid;
        else
            hi = mid - 1;
    }
    mt_shard *s = ld->shards[lo];
    const int L = ld->cfg.seq_len;
    const int64_t start = (g - ld->first_sample[lo]) * (L + 1);
    if (!mt_shard_read_tokens(s, start, L + 1, ld->scratch, err, errlen) ||
        !mt_shard_read_loss_mask(s, start, L + 1, ld->scratch_mask, err, errlen))
        return false;
    int32_t *in = bt->inputs + (int64_t)b * L, *tg = bt->targets + (int64_t)b * L, *sq = bt->seq_idx + (int64_t)b * L;
    memcpy(in, ld->scratch, (size_t)L * sizeof(int32_t));
    memcpy(tg, ld->scratch + 1, (size_t)L * sizeof(int32_t));
    memcpy(bt->loss_mask + (int64_t)b * L, ld->scratch_mask + 1, (size_t)L);
    bt->sample_ids[b] = g;

    /* seq_idx[t]: document starts in (start, start + t] */
    const uint64_t *docs = mt_shard_doc_offsets(s);
    const int64_t nd = mt_shard_get_info(s)->n_docs;
    int64_t d = 0, dhi = nd;
    while (d < dhi) { /* d: the first document starting after `start` */
        int64_t mid = (d + dhi) / 2;
        if (docs[mid] <= (uint64_t)start)
            d = mid + 1;
        else
            dhi = mid;
    }
    int32_t idx = 0;
    for (int t = 0; t < L; t++) {
        if (d < nd && docs[d] == (uint64_t)(start + t)) {
            idx++;
            d++;
        }
        sq[t] = idx;
    }
    return true;
}

static bool build_batch(mt_loader *ld, mt_loader_cursor *c, mt_batch *bt, char *err, size_t errlen)
{
    bt->start = *c;
    for (int b = 0; b < ld->cfg.batch_size; b++)
        if (!read_sample(ld, cursor_sample(ld, c), bt, b, err, errlen))
            return false;
    if (c->index >= ld->rank_samples) { /* name the next batch by where it starts */
        c->epoch++;
        c->index = 0;
    }
    bt->end = *c;
    return true;
}

static void *worker_main(void *arg)
{
    mt_loader *ld = arg;
    char err[MAX_ERR];
    pthread_mutex_lock(&ld->mu);
    for (;;) {
        while (!ld->stop && ld->produced - ld->handed + (ld->handed > 0) >= ld->nslots)
            pthread_cond_wait(&ld->cv, &ld->mu);
        if (ld->stop)
            break;
        slot *sl = &ld->slots[ld->produced % ld->nslots];
        mt_loader_cursor c = ld->worker_at;
        pthread_mutex_unlock(&ld->mu);
        bool ok = build_batch(ld, &c, &sl->batch, err, sizeof err);
        pthread_mutex_lock(&ld->mu);
        if (!ok) {
            ld->failed = true;
            snprintf(ld->worker_err, sizeof ld->worker_err, "%s", err);
            pthread_cond_broadcast(&ld->cv);
            break;
        }
        ld->worker_at = c;
        ld->produced++;
        pthread_cond_broadcast(&ld->cv);
    }
    pthread_mutex_unlock(&ld->mu);
    return NULL;
}

static void worker_stop(mt_loader *ld)
{
    if (!ld->running)
        return;
    pthread_mutex_lock(&ld->mu);
    ld->stop = true;
    pthread_cond_broadcast(&ld->cv);
    pthread_mutex_unlock(&ld->mu);
    pthread_join(ld->thread, NULL);
    ld->running = false;
}

static bool worker_start(mt_loader *ld, mt_loader_cursor c, char *err, size_t errlen)
{
    ld->produced = ld->handed = 0;
    ld->worker_at = ld->next_cursor = c;
    ld->stop = ld->failed = false;
    if (pthread_create(&ld->thread, NULL, worker_main, ld) != 0)
        return mt_errorf(err, errlen, "data loader: cannot start its prefetch thread");
    ld->running = true;
    return true;
}

const mt_batch *mt_loader_next(mt_loader *ld, char *err, size_t errlen)
{
    pthread_mutex_lock(&ld->mu);
    while (ld->produced == ld->handed && !ld->failed)
        pthread_cond_wait(&ld->cv, &ld->mu);
    if (ld->produced == ld->handed) {
        mt_errorf(err, errlen, "%s", ld->worker_err);
        pthread_mutex_unlock(&ld->mu);
        return NULL;
    }
    const mt_batch *bt = &ld->slots[ld->handed % ld->nslots].batch;
    ld->handed++;
    ld->next_cursor = bt->end;
    pthread_cond_broadcast(&ld->cv); /* the slot handed out before this one is free again */
    pthread_mutex_unlock(&ld->mu);
    return bt;
}

bool mt_loader_seek(mt_loader *ld, mt_loader_cursor c, char *err, size_t errlen)
{
    if (c.seed != ld->cfg.seed)
        return mt_errorf(err, errlen, "data loader: the cursor's seed %llu differs from the configured seed %llu",
                    (unsigned long long)c.seed, (unsigned long long)ld->cfg.seed);
    if (c.epoch < 0 || c.index < 0 || c.index > ld->rank_samples)
        return mt_errorf(err, errlen, "data loader: cursor (epoch %lld, index %lld) is outside the %lld samples per epoch",
                    (long long)c.epoch, (long long)c.index, (long long)ld->rank_samples);
    worker_stop(ld);
    return worker_start(ld, c, err, errlen);
}

struct json_t *mt_loader_cursor_to_json(mt_loader_cursor c)
{
    char seed[32];
    snprintf(seed, sizeof seed, "%" PRIu64, c.seed);
    return json_pack("{s:s, s:I, s:I}", "seed", seed, "epoch", (json_int_t)c.epoch, "index", (json_int_t)c.index);
}

bool mt_loader_cursor_from_json(const struct json_t *j, mt_loader_cursor *c, char *err, size_t errlen)
{
    const char *seed = NULL;
    json_int_t epoch = -1, index = -1;
    json_error_t je;
    if (json_unpack_ex((json_t *)j, &je, JSON_STRICT, "{s:s, s:I, s:I}", "seed", &seed, "epoch", &epoch, "index",
                       &index) != 0)
        return mt_errorf(err, errlen, "data loader cursor: %s", je.text);
    char *end = NULL;
    unsigned long long v = strtoull(seed, &end, 10);
    if (!*seed || *end || epoch < 0 || index < 0)
        return mt_errorf(err, errlen, "data loader cursor: seed \"%s\", epoch %lld, index %lld are not valid", seed,
                    (long long)epoch, (long long)index);
    *c = (mt_loader_cursor){(uint64_t)v, (int64_t)epoch, (int64_t)index};
    return true;
}

/* ------------------------------------------------------------------------ */
/* Opening. */

static bool add_shard(mt_loader *ld, const char *path, char *err, size_t errlen)
{
    mt_shard *s = mt_shard_open(path, err, errlen);
    if (!s)
        return false;
    mt_shard **grown = realloc(ld->shards, (size_t)(ld->n_shards + 1) * sizeof *grown);
    if (!grown) {
        mt_shard_close(s);
        return mt_errorf(err, errlen, "%s: out of memory", path);
    }
    ld->shards = grown;
    ld->shards[ld->n_shards++] = s;
    const mt_shard_info *in = mt_shard_get_info(s);
    if (ld->cfg.vocab_size > 0 && in->vocab_size != ld->cfg.vocab_size)
        return mt_errorf(err, errlen, "%s: vocab_size %lld, but the model's vocab_size is %lld", path,
                    (long long)in->vocab_size, (long long)ld->cfg.vocab_size);
    if (in->n_tokens < ld->cfg.seq_len + 1)
        return mt_errorf(err, errlen, "%s: %lld tokens, shorter than one sample of seq_len + 1 = %d", path,
                    (long long)in->n_tokens, ld->cfg.seq_len + 1);
    return true;
}

/* Opens every shard the paths name (glob patterns expanded, sorted). */
static bool open_shards(mt_loader *ld, char *err, size_t errlen)
{
    for (int i = 0; i < ld->cfg.n_paths; i++) {
        const char *p = ld->cfg.paths[i];
        if (!strpbrk(p, "*?[")) {
            if (!add_shard(ld, p, err, errlen))
                return false;
            continue;
        }
        glob_t g;
        int rc = glob(p, GLOB_ERR, NULL, &g);
        if (rc != 0) {
            if (rc != GLOB_NOMATCH)
                globfree(&g);
            return mt_errorf(err, errlen, "%s: the pattern matches no readable files", p);
        }
        bool ok = true;
        for (size_t k = 0; ok && k < g.gl_pathc; k++)
            ok = add_shard(ld, g.gl_pathv[k], err, errlen);
        globfree(&g);
        if (!ok)
            return false;
    }
    return ld->n_shards > 0 ? true : mt_errorf(err, errlen, "data loader: no shard files given");
}

static bool check_config(const mt_loader_config *c, char *err, size_t errlen)
{
    if (c->seq_len < 1 || c->batch_size < 1)
        return mt_errorf(err, errlen, "data loader: seq_len %d and batch_size %d must be positive", c->seq_len,
                    c->batch_size);
    if (c->seq_len == INT_MAX) /* a sample is seq_len + 1 tokens, counted in int */
        return mt_errorf(err, errlen, "data loader: seq_len %d must be below %d", c->seq_len, INT_MAX);
    if (c->world < 1 || c->rank < 0 || c->rank >= c->world)
        return mt_errorf(err, errlen, "data loader: rank %d is not in [0, world %d)", c->rank, c->world);
    if (!(c->val_fraction >= 0.0 && c->val_fraction < 1.0))
        return mt_errorf(err, errlen, "data loader: val_fraction %g is not in [0, 1)", c->val_fraction);
    if (c->prefetch < 0)
        return mt_errorf(err, errlen, "data loader: prefetch %d is negative", c->prefetch);
    return true;
}

static bool alloc_slots(mt_loader *ld, char *err, size_t errlen)
{
    const int B = ld->cfg.batch_size, L = ld->cfg.seq_len;
    /* A batch is 3 int32 and 1 byte per token, and one int64 per sample. */
    size_t n, bytes, ids;
    if (__builtin_mul_overflow((size_t)B, (size_t)L, &n) || __builtin_mul_overflow(n, 3 * sizeof(int32_t) + 1, &bytes) ||
        __builtin_mul_overflow((size_t)B, sizeof(int64_t), &ids) || __builtin_add_overflow(bytes, ids, &bytes))
        return mt_errorf(err, errlen, "data loader: a batch of %d x %d tokens is too large to allocate", B, L);
    ld->nslots = (ld->cfg.prefetch ? ld->cfg.prefetch : 2) + 1;
    ld->slots = calloc((size_t)ld->nslots, sizeof *ld->slots);
    ld->scratch = malloc(((size_t)L + 1) * sizeof(int32_t));
    ld->scratch_mask = malloc((size_t)L + 1);
    if (!ld->slots || !ld->scratch || !ld->scratch_mask)
        return mt_errorf(err, errlen, "data loader: out of memory");
    for (int i = 0; i < ld->nslots; i++) {
        mt_batch *bt = &ld->slots[i].batch;
        char *p = mt_host_alloc(bytes, &ld->slots[i].pinned, "data loader batch");
        bt->batch_size = B;
        bt->seq_len = L;
        bt->sample_ids = (int64_t *)p;
        bt->inputs = (int32_t *)(p + (size_t)B * sizeof(int64_t));
        bt->targets = bt->inputs + n;
        bt->seq_idx = bt->targets + n;
        bt->loss_mask = (uint8_t *)(bt->seq_idx + n);
    }
    return true;
}

/* "a.h5 holds" or "a.h5 and 3 more shards hold", for messages about all of them. */
static void shards_hold(const mt_loader *ld, char *out, size_t len)
{
    const char *first = mt_shard_path(ld->shards[0]);
    if (ld->n_shards == 1)
        snprintf(out, len, "%s holds", first);
    else
        snprintf(out, len, "%s and %d more shard%s hold", first, ld->n_shards - 1, ld->n_shards > 2 ? "s" : "");
}

/* Numbers the samples of the shards and splits them into the training and
 * the validation set; fails when this rank's set would be empty, saying why. */
static bool count_samples(mt_loader *ld, char *err, size_t errlen)
{
    const mt_loader_config *cfg = &ld->cfg;
    ld->first_sample = malloc((size_t)(ld->n_shards + 1) * sizeof(int64_t));
    if (!ld->first_sample)
        return mt_errorf(err, errlen, "data loader: out of memory");
    char shards[600];
    shards_hold(ld, shards, sizeof shards);
    ld->first_sample[0] = 0;
    for (int i = 0; i < ld->n_shards; i++) {
        const int64_t samples = mt_shard_get_info(ld->shards[i])->n_tokens / (cfg->seq_len + 1);
        /* Lengths come from the files, which can claim up to 2^63 - 1 tokens each. */
        if (__builtin_add_overflow(ld->first_sample[i], samples, &ld->first_sample[i + 1]))
            return mt_errorf(err, errlen, "data loader: %s more than 2^63 samples in all", shards);
    }
    const int64_t total = ld->first_sample[ld->n_shards];
    int64_t n_val = (int64_t)(cfg->val_fraction * (double)total);
    if (cfg->val_fraction > 0 && n_val == 0)
        n_val = 1;
    ld->set_base = cfg->validation ? total - n_val : 0;
    ld->set_size = cfg->validation ? n_val : total - n_val;
    ld->rank_samples = (ld->set_size - cfg->rank + cfg->world - 1) / cfg->world;
    if (ld->rank_samples >= 1)
        return true;
    char ranks[64] = "";
    if (cfg->world > 1)
        snprintf(ranks, sizeof ranks, ", fewer than the %d data-parallel ranks", cfg->world);
    const char *plural = total == 1 ? "" : "s";
    if (cfg->validation)
        return mt_errorf(err, errlen, "data loader: %s %lld sample%s of seq_len + 1 = %d tokens and val_fraction %g "
                         "sends %lld to validation%s: raise data.val_fraction or give separate data.val shards", shards,
                         (long long)total, plural, cfg->seq_len + 1, cfg->val_fraction, (long long)n_val, ranks);
    if (n_val > 0)
        return mt_errorf(err, errlen, "data loader: %s %lld sample%s of seq_len + 1 = %d tokens and val_fraction %g "
                         "sends %lld to validation, leaving %lld for training%s: use more data, a shorter seq_len, "
                         "data.val_fraction = 0 or separate data.val shards", shards, (long long)total, plural,
                         cfg->seq_len + 1, cfg->val_fraction, (long long)n_val, (long long)ld->set_size, ranks);
    return mt_errorf(err, errlen, "data loader: %s %lld sample%s of seq_len + 1 = %d tokens%s: use more data or a "
                     "shorter seq_len", shards, (long long)total, plural, cfg->seq_len + 1, ranks);
}

mt_loader *mt_loader_open(const mt_loader_config *cfg, char *err, size_t errlen)
{
    if (!check_config(cfg, err, errlen))
        return NULL;
    mt_loader *ld = calloc(1, sizeof *ld);
    if (!ld) {
        mt_errorf(err, errlen, "data loader: out of memory");
        return NULL;
    }
    ld->cfg = *cfg;
    pthread_mutex_init(&ld->mu, NULL);
    pthread_cond_init(&ld->cv, NULL);
    bool ok = open_shards(ld, err, errlen);
    ld->cfg.paths = NULL; /* the caller's strings are not kept: the shards are open */
    ld->cfg.n_paths = 0;
    ok = ok && count_samples(ld, err, errlen) && alloc_slots(ld, err, errlen) &&
         worker_start(ld, (mt_loader_cursor){cfg->seed, 0, 0}, err, errlen);
    if (!ok) {
        mt_loader_close(ld);
        return NULL;
    }
    return ld;
}

void mt_loader_close(mt_loader *ld)
{
    if (!ld)
        return;
    worker_stop(ld);
    for (int i = 0; ld->slots && i < ld->nslots; i++)
        if (ld->slots[i].batch.sample_ids)
            mt_host_free(ld->slots[i].batch.sample_ids, ld->slots[i].pinned);
    for (int i = 0; i < ld->n_shards; i++)
        mt_shard_close(ld->shards[i]);
    free(ld->slots);
    free(ld->shards);
    free(ld->first_sample);
    free(ld->scratch);
    free(ld->scratch_mask);
    pthread_mutex_destroy(&ld->mu);
    pthread_cond_destroy(&ld->cv);
    free(ld);
}
