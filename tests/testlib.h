/* Shared test machinery: the table of op cases, random inputs, the f64
 * gradient check against central finite differences, and the comparison of a
 * backend against the CPU reference. */
#ifndef MT_TESTLIB_H
#define MT_TESTLIB_H

#include "autograd/ops.h"

/* Exit code that ctest reports as SKIPPED (SKIP_RETURN_CODE in tests/CMakeLists.txt). */
#define TL_SKIP 77

typedef enum {
    TL_FLOAT,   /* the op's dtype */
    TL_ACCUM,   /* the accumulation dtype of the op's dtype (norm weights, residual stream) */
    TL_IDS,     /* i32 in [0, limit) */
    TL_TARGETS, /* like TL_IDS, with every fifth row set to TL_IGNORE */
    TL_SEQ_IDX, /* (B, L) document ids: a boundary at L/3 in every row, another at 2L/3 in odd rows */
} tl_kind;

#define TL_IGNORE (-100)

typedef struct tl_input {
    const char *name;
    tl_kind kind;
    int ndim;
    int64_t small[MT_MAX_DIMS]; /* for gradient checks */
    int64_t large[MT_MAX_DIMS]; /* for backend comparisons: several blocks, odd sizes */
    double lo, hi;              /* float range */
    int limit_in, limit_dim;    /* ids: the limit is dim limit_dim of input limit_in */
} tl_input;

typedef struct tl_case {
    const char *name;
    int n_in;
    tl_input in[MT_NODE_MAX_IN];
    /* Runs the op on in[]; writes outputs to out[] and returns how many. */
    int (*run)(mt_ctx *c, mt_tensor **in, mt_tensor **out);
    double f32_bound; /* CUDA vs CPU bound in f32 when not the default 1e-5 (chunked scans reorder sums) */
    bool cpu_only;    /* no CUDA kernel yet: the CUDA comparison reports the case skipped */
} tl_case;

extern const tl_case tl_cases[];
extern const int tl_n_cases;

/* Inputs of case k on the CPU in dtype dt, drawn from seed. */
void tl_make_inputs(const tl_case *k, bool large, mt_dtype dt, uint64_t seed, mt_tensor **in);
void tl_free_all(int n, mt_tensor **t);

/* A heap copy of t on dev. */
mt_tensor *tl_to_device(const mt_tensor *t, mt_device dev);

/* ||a - ref|| / ||ref|| computed in double on host copies (any devices).
 * NaN anywhere in a gives +inf. */
double tl_rel_err(const mt_tensor *a, const mt_tensor *ref);
bool tl_has_nan(const mt_tensor *t);

/* Runs a computation on ctx c; writes its outputs to out[] and returns how many. */
typedef int (*tl_run_fn)(mt_ctx *c, void *arg, mt_tensor **out);

/* Largest relative error, over the n f64 CPU tensors wrt (inputs or
 * parameters, requires_grad set), of the seeded backward of run against
 * central differences; at most max_elems elements of each are checked
 * (evenly spaced). Prints each tensor's error. */
double tl_gradcheck_fn(const char *name, tl_run_fn run, void *arg, int n, mt_tensor **wrt, const char **names,
                       uint64_t seed, int64_t max_elems);

/* Largest relative error over every input gradient of case k, analytic
 * (backward of the f64 CPU op) against central differences. Prints each. */
double tl_gradcheck(const tl_case *k, uint64_t seed);

typedef struct tl_compare {
    double out_err;    /* max over outputs of ||be - cpu|| / ||cpu|| */
    double grad_err;   /* max over input gradients */
    bool all_written;  /* no output element left poisoned */
    bool deterministic;/* a second run gave the same bits, outputs and gradients */
} tl_compare;

/* Runs case k forward and backward on backend be and on the CPU from the same
 * inputs in dtype dt. */
tl_compare tl_compare_backend(mt_backend *be, const tl_case *k, mt_dtype dt, uint64_t seed);

/* The CUDA backend of device 0. Where no GPU is present, prints SKIPPED and
 * exits with TL_SKIP; where one is present but the backend fails, exits 1. */
mt_backend *tl_cuda_backend_or_exit(void);

/* Trains a built, initialized model with plain SGD (lr) on the CPU for
 * `steps` on a fixed sequence in which each token is followed by
 * (3 token + 2) mod vocab_size (batch rows start at different tokens), and
 * prints and returns the loss at the first step (*first) and the last. */
struct mt_model;
double tl_train_sequence_lm(mt_backend *be, struct mt_model *m, const char *label, int steps, double *first);

/* Gradient check of every parameter of an f64 model through the mean
 * cross-entropy of its logits on a fixed (batch, seqlen) token pattern (one
 * target ignored); returns the largest relative error. */
double tl_gradcheck_lm(struct mt_model *m, const char *name, int batch, int seqlen);

/* A scratch directory for a test program: cmocka group fixtures that make it
 * (mkdtemp under /tmp) and remove it with everything in it, and its path. */
int tl_temp_dir_setup(void **state);
int tl_temp_dir_teardown(void **state);
const char *tl_temp_dir(void);

/* tl_temp_dir()/name, in one of 8 rotating buffers (valid until 8 more calls). */
const char *tl_temp_path(const char *name);

/* A whole text file, NUL-terminated (the caller frees); fails the current
 * test when it cannot be read. */
char *tl_read_text(const char *path);

/* Fails the current test unless err says phrase1 and (when not NULL) phrase2. */
void tl_expect_error(const char *err, const char *phrase1, const char *phrase2);

/* tl_compare_backend, failing the current cmocka test unless every output
 * was written, bits repeat, and outputs and gradients are within bound.
 * Prints one line: case, dtype, errors. */
void tl_assert_backend_matches(mt_backend *be, const tl_case *k, mt_dtype dt, double bound);

/* Tensor name of a safetensors file (I32 or F32) as a new CPU tensor of that
 * dtype; fails the current test when it is missing or unreadable. */
struct mt_st_file;
mt_tensor *tl_read_st(const struct mt_st_file *f, const char *name);

/* The tiny released-model fixture tests/fixtures/<kind>-tiny-<scheme>
 * (scheme hf or ref) built on dev with dt parameters and loaded into m;
 * returns its expected values (<kind>-tiny-expected.safetensors: tokens,
 * logits, loss, gradients). Fails the current test on an error. */
struct mt_st_file *tl_load_fixture(struct mt_model *m, const char *kind, const char *scheme, mt_device dev,
                                   mt_dtype dt);

/* The next-token targets of ids (B, L) i32: (B * L) i32, row b's step t the
 * token at t + 1, each row's last step TL_IGNORE. */
mt_tensor *tl_next_token_targets(const mt_tensor *ids);

/* The cross-entropy of logits (N, V) split into `slices` equal column
 * slices, as the ranks of a vocab-parallel model compute it, on one ctx:
 * every slice's row statistics into one (slices, N, 3) tensor, then each
 * slice's loss (into losses[k]: each is the whole loss). Returns their sum,
 * whose backward gives every slice's logits their gradient, once. Targets
 * equal to TL_IGNORE are skipped. */
mt_tensor *tl_sliced_cross_entropy(mt_ctx *c, mt_tensor *logits, mt_tensor *targets, int slices, double *losses);

/* The loss of mt_linear(x, w) against targets through mt_cross_entropy or,
 * in_place, mt_cross_entropy_in_place, on be from host inputs; with, on the
 * host, the gradients of x and w and the logits' gradient (in place: the
 * logits' storage after the backward). */
typedef struct tl_ce_grads {
    mt_tensor *loss, *dx, *dw, *dlogits;
} tl_ce_grads;
tl_ce_grads tl_cross_entropy_grads(mt_backend *be, const mt_tensor *x_h, const mt_tensor *w_h,
                                   const mt_tensor *targets_h, bool in_place);
void tl_ce_grads_free(tl_ce_grads *g);

/* The in-place cross-entropy on be in dtype dt gives the bits of the one
 * that adds into a fresh gradient: loss, dx, dw, and the logits' storage
 * holding their gradient (ignored rows included). Fails the test otherwise. */
void tl_assert_in_place_cross_entropy_exact(mt_backend *be, mt_dtype dt);

#endif
