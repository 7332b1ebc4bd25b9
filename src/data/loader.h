/* The training data loader: samples of seq_len + 1 tokens from token shards
 * (docs/data-format.md), batched, in a shuffled order fixed by (seed,
 * epoch), split across data-parallel ranks, prepared ahead by a background
 * thread into pinned host buffers (plain host memory without a GPU).
 *
 * Order: the samples of all shards are numbered shard by shard; the last
 * val_fraction of them is the validation set, the rest the training set. In
 * epoch e, a set of n samples is visited in the order of a permutation of
 * [0, n) drawn from (seed, e) (identity when shuffle is off); rank r of W
 * takes the positions r, r + W, r + 2W, ... of it. A batch takes the next
 * batch_size samples of the rank's stream and crosses into the next epoch
 * when this one runs out, so inside an epoch no sample is skipped or
 * repeated, and the ranks together visit every sample once.
 *
 * A cursor (seed, epoch, index in the rank's stream) names the next batch;
 * seeking to a saved cursor gives exactly the batches that would have
 * followed it. Errors return NULL/false with a message naming the file. */
#ifndef MT_LOADER_H
#define MT_LOADER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct mt_loader_config {
    const char *const *paths; /* shard files or glob patterns, in order; read only while opening */
    int n_paths;
    int seq_len, batch_size;
    uint64_t seed;
    bool shuffle;
    int rank, world;      /* this rank of world data-parallel ranks */
    int64_t vocab_size;   /* the model's: every shard must declare it (0: not checked) */
    double val_fraction;  /* held out from the end of the samples, in [0, 1) */
    bool validation;      /* read the held-out samples instead of the training ones */
    int prefetch;         /* batches prepared ahead; 0 means 2 */
} mt_loader_config;

typedef struct mt_loader_cursor {
    uint64_t seed;
    int64_t epoch;
    int64_t index; /* position in this rank's stream of the epoch */
} mt_loader_cursor;

typedef struct mt_batch {
    int batch_size, seq_len;
    int32_t *inputs;    /* (batch_size, seq_len) */
    int32_t *targets;   /* (batch_size, seq_len): inputs shifted by one */
    int32_t *seq_idx;   /* (batch_size, seq_len): document index inside each sample, from 0 */
    uint8_t *loss_mask; /* (batch_size, seq_len): 1 where a target counts (all ones without /loss_mask) */
    int64_t *sample_ids; /* (batch_size): global sample numbers, for tests and logs */
    mt_loader_cursor start, end; /* the cursor of this batch and of the one after it */
} mt_batch;

typedef struct mt_loader mt_loader;

mt_loader *mt_loader_open(const mt_loader_config *cfg, char *err, size_t errlen);
void mt_loader_close(mt_loader *ld);

/* The next batch; valid until the next call. NULL on error (a bad token id
 * found while reading, an unreadable range). */
const mt_batch *mt_loader_next(mt_loader *ld, char *err, size_t errlen);

/* The cursor of the batch the next mt_loader_next returns. */
mt_loader_cursor mt_loader_tell(const mt_loader *ld);
/* Continues from a cursor (from mt_loader_tell, maybe in an earlier run). */
bool mt_loader_seek(mt_loader *ld, mt_loader_cursor c, char *err, size_t errlen);

/* The cursor as a JSON object {"seed": "<decimal>", "epoch": n, "index": n}
 * (the seed as a string: JSON numbers lose 64-bit integers), for checkpoints. */
struct json_t;
struct json_t *mt_loader_cursor_to_json(mt_loader_cursor c);
bool mt_loader_cursor_from_json(const struct json_t *j, mt_loader_cursor *c, char *err, size_t errlen);

/* Samples in this loader's set (all ranks), and in this rank's stream per epoch. */
int64_t mt_loader_set_size(const mt_loader *ld);
int64_t mt_loader_rank_samples(const mt_loader *ld);

/* The sample at position p of epoch e's order over a set of n (a bijection
 * of [0, n) for each (seed, e)). */
int64_t mt_sample_permute(uint64_t seed, int64_t epoch, int64_t n, int64_t p);

#endif
