/* What the layer benchmarks (bench_mamba1, bench_mamba2) share: the median
 * time of a forward (and backward) and random bf16 inputs on the GPU. */
#ifndef MT_BENCH_LAYER_H
#define MT_BENCH_LAYER_H

#include <stdbool.h>

#include "autograd/tape.h"
#include "core/params.h"

/* One forward of what is timed, on c; NULL after an op error. */
typedef mt_tensor *(*bench_run_fn)(mt_ctx *c, const void *arg);

typedef struct bench_case {
    const char *name;     /* the program, for messages */
    bench_run_fn run;
    const void *arg;
    mt_tensor *seed;      /* the output's upstream gradient, for the backward */
    mt_tensor **inputs;   /* whose gradients are dropped between runs */
    int n_inputs;
    mt_params *params;    /* zeroed between runs */
} bench_case;

/* The median milliseconds of BENCH_REPS runs after BENCH_WARMUP: the
 * forward, and with backward the backward from seed too. Each run ends the
 * ctx's step. */
float bench_time_ms(mt_ctx *c, const bench_case *k, bool backward);

/* A (b, l, cols) bf16 tensor on the GPU, uniform in [lo, hi) from seed. */
mt_tensor *bench_random_bf16(mt_backend *be, int64_t b, int64_t l, int64_t cols, uint64_t seed, double lo,
                             double hi);

#endif
