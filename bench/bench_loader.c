/* Data loader throughput: writes a shard of 64 M tokens (uint16) to a
 * temporary directory, then reads it through the loader as training does
 * (seq_len 2048, batch 8, shuffled samples, prefetch thread) and prints the
 * tokens per second the consumer sees, from a contiguous shard, a chunked
 * one and a chunked, deflate-compressed one. The file sits in the page cache
 * after writing, so this measures the loader, not the disk.
 *
 *   bench_loader [DIR]     (default /tmp)
 *
 * The bar: 50 M tokens/s per process, so the loader never bounds a GPU step
 * (a mamba2-370m step on one H100 consumes about 0.05 M tokens/ms). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "data/loader.h"
#include "data/shard.h"

enum { SEQ_LEN = 2048, BATCH = 8, BATCHES = 2000 };
static const int64_t TOKENS = (int64_t)64 << 20;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void die(const char *err)
{
    fprintf(stderr, "bench_loader: %s\n", err);
    exit(1);
}

static void write_shard(const char *path, int64_t chunk, bool compress)
{
    char err[512];
    mt_shard_writer *w = mt_shard_writer_open(path, 50277, 0, "bench", false, err, sizeof err);
    if (!w)
        die(err);
    enum { PIECE = 1 << 16 };
    int32_t *piece = malloc(PIECE * sizeof *piece);
    uint64_t x = 88172645463325252ull;
    for (int64_t done = 0; done < TOKENS; done += PIECE) {
        for (int i = 0; i < PIECE; i++) { /* xorshift: ids spread over the vocabulary */
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            piece[i] = (int32_t)(x % 50277);
        }
        if (!mt_shard_writer_append(w, piece, NULL, PIECE, done % (1 << 20) == 0, err, sizeof err))
            die(err);
    }
    free(piece);
    if (!mt_shard_writer_close(w, chunk, compress, err, sizeof err))
        die(err);
}

static void measure(const char *label, const char *path)
{
    char err[512];
    const char *paths[] = {path};
    mt_loader_config cfg = {.paths = paths, .n_paths = 1, .seq_len = SEQ_LEN, .batch_size = BATCH, .seed = 1,
                            .shuffle = true, .rank = 0, .world = 1, .vocab_size = 50277, .prefetch = 4};
    mt_loader *ld = mt_loader_open(&cfg, err, sizeof err);
    if (!ld)
        die(err);
    for (int i = 0; i < 50; i++) /* warm the page cache and the chunk cache */
        if (!mt_loader_next(ld, err, sizeof err))
            die(err);
    int64_t checksum = 0;
    double t0 = now_s();
    for (int i = 0; i < BATCHES; i++) {
        const mt_batch *bt = mt_loader_next(ld, err, sizeof err);
        if (!bt)
            die(err);
        checksum += bt->inputs[i % (BATCH * SEQ_LEN)];
    }
    double s = now_s() - t0, tokens = (double)BATCHES * BATCH * SEQ_LEN;
    printf("bench loader %-22s %.1f M tokens/s (%d batches of %d x %d in %.3f s; checksum %lld)\n", label,
           tokens / s * 1e-6, BATCHES, BATCH, SEQ_LEN, s, (long long)checksum);
    mt_loader_close(ld);
}

int main(int argc, char **argv)
{
    const char *dir = argc > 1 ? argv[1] : "/tmp";
    static const struct {
        const char *label;
        int64_t chunk;
        bool compress;
    } kinds[] = {{"contiguous", 0, false}, {"chunked (1 M tokens)", 1 << 20, false},
                 {"chunked+deflate (64 K)", 1 << 16, true}};
    for (int k = 0; k < 3; k++) {
        char path[512];
        snprintf(path, sizeof path, "%s/mt-bench-loader-%d-%d.h5", dir, (int)getpid(), k);
        write_shard(path, kinds[k].chunk, kinds[k].compress);
        measure(kinds[k].label, path);
        unlink(path);
    }
    return 0;
}
