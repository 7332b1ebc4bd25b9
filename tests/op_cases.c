/* Every op, as a case the gradient check and the backend comparison run. */
#include <math.h>

#include "autograd/ops_tp.h"
#include "testlib.h"

static int run_embedding(mt_ctx *c, mt_tensor **in, mt_tensor **out)
{
    out[0] = mt_embedding(c, in[0], in[1]);
    return 1;
}

/* The ids drawn uniformly in [0, V) remapped so that a few ids dominate, as
 * in Zipfian text or a tiny synthetic vocabulary: 55% of positions get id V/3
 * and 25% get V/2 (runs of thousands in the large case, across many of the
 * CUDA backward's segments), the ids in the lowest and highest tenth keep
 * their value (singletons and short runs, some crossing segment boundaries). */
static int run_embedding_skewed(mt_ctx *c, mt_tensor **in, mt_tensor **out)
{
    int64_t V = in[0]->shape[0];
    mt_tensor *host = tl_to_device(in[1], MT_CPU), *ids = mt_ctx_tensor(c, MT_I32, in[1]->ndim, in[1]->shape);
    for (int64_t e = 0; e < mt_numel(host); e++) {
        int64_t u = (int64_t)mt_get(host, e);
        if (10 * u >= V && 10 * u < 9 * V)
            mt_set(host, e, (double)(20 * u < 13 * V ? V / 3 : V / 2));
    }
    mt_tensor_copy(ids, host);
    mt_tensor_free(host);
    out[0] = mt_embedding(c, in[0], ids);
    return 1;
}

/* weight (V, D) as the middle slice of a vocab-parallel table of 3V rows
 * (rows [V, 2V)): the drawn ids in [0, V) moved to slice e % 3, so that a
 * third of them are its rows and the others look up zeros. */
static int run_embedding_slice(mt_ctx *c, mt_tensor **in, mt_tensor **out)
{
    int64_t V = in[0]->shape[0];
    mt_tensor *host = tl_to_device(in[1], MT_CPU), *ids = mt_ctx_tensor(c, MT_I32, in[1]->ndim, in[1]->shape);
    for (int64_t e = 0; e < mt_numel(host); e++)
        mt_set(host, e, mt_get(host, e) + (double)(e % 3 * V));
    mt_tensor_copy(ids, host);
    mt_tensor_free(host);
    out[0] = mt_embedding_slice(c, in[0], ids, V, 3 * V);
    return 1;
}

static int run_linear(mt_ctx *c, mt_tensor **in, mt_tensor **out)
{
    out[0] = mt_linear(c, in[0], in[1], in[2]);
    return 1;
}

static int run_linear_nobias(mt_ctx *c, mt_tensor **in, mt_tensor **out)
{
    out[0] = mt_linear(c, in[0], in[1], NULL);
    return 1;
}

/* x is a column view of a wider tensor, as the Mamba blocks feed projections. */
static int run_linear_view(mt_ctx *c, mt_tensor **in, mt_tensor **out)
{
    int64_t k = in[1]->shape[1];
    out[0] = mt_linear(c, mt_ctx_view_cols(c, in[0], 2, k), in[1], NULL);
    return 1;
}

static int run_add(mt_ctx *c, mt_tensor **in, mt_tensor **out)
{
    out[0] = mt_add(c, in[0], in[1]);
    return 1;
}

static int run_mul(mt_ctx *c, mt_tensor **in, mt_tensor **out)
{
    out[0] = mt_mul(c, in[0], in[1]);
    return 1;
}

/* The same tensor on both sides: its gradient accumulates from two uses. */
static int run_mul_self(mt_ctx *c, mt_tensor **in, mt_tensor **out)
{
    out[0] = mt_mul(c, in[0], in[0]);
    return 1;
}

static int run_silu(mt_ctx *c, mt_tensor **in, mt_tensor **out)
{
    out[0] = mt_silu(c, in[0]);
    return 1;
}

static int run_softplus(mt_ctx *c, mt_tensor **in, mt_tensor **out)
{
    out[0] = mt_softplus(c, in[0]);
    return 1;
}

static int run_rmsnorm_residual(mt_ctx *c, mt_tensor **in, mt_tensor **out)
{
    out[0] = mt_rmsnorm(c, in[0], in[1], in[2], 1e-5, &out[1]);
    return 2;
}

static int run_rmsnorm(mt_ctx *c, mt_tensor **in, mt_tensor **out)
{
    out[0] = mt_rmsnorm(c, in[0], NULL, in[1], 1e-5, &out[1]);
    return 2;
}

/* x and residual as the same column views of wider tensors: rows a stride
 * apart that still allows CUDA's 16-byte loads (8 columns in, a row of a
 * multiple of 8). */
static int run_rmsnorm_residual_view(mt_ctx *c, mt_tensor **in, mt_tensor **out)
{
    int64_t d = in[2]->shape[0];
    out[0] = mt_rmsnorm(c, mt_ctx_view_cols(c, in[0], 8, d), mt_ctx_view_cols(c, in[1], 8, d), in[2], 1e-5,
                        &out[1]);
    return 2;
}

/* x a column view one column in: its rows are not 16-byte aligned. */
/* y's buffer taken over by a second norm, so that the backward of the
 * product, which reads y, recomputes it from the kept r and rstd. */
static int run_rmsnorm_recomputed(mt_ctx *c, mt_tensor **in, mt_tensor **out)
{
    mt_tensor *r, *r2;
    mt_tensor *y = mt_rmsnorm(c, in[0], in[1], in[2], 1e-5, &r);
    mt_tensor *t = mt_mul(c, y, in[3]);
    out[0] = mt_rmsnorm(c, t, NULL, in[2], 1e-5, &r2);
    return 1;
}

static int run_rmsnorm_unaligned(mt_ctx *c, mt_tensor **in, mt_tensor **out)
{
    out[0] = mt_rmsnorm(c, mt_ctx_view_cols(c, in[0], 1, in[1]->shape[0]), NULL, in[1], 1e-5, &out[1]);
    return 2;
}

static int run_cross_entropy(mt_ctx *c, mt_tensor **in, mt_tensor **out)
{
    out[0] = mt_cross_entropy(c, in[0], in[1], TL_IGNORE);
    return 1;
}

/* A round trip through the other float dtype and back, so that both cast
 * directions and their backward run. */
static int run_cast(mt_ctx *c, mt_tensor **in, mt_tensor **out)
{
    mt_dtype other = in[0]->dtype == MT_BF16 ? MT_F32 : in[0]->dtype == MT_F32 ? MT_BF16 : MT_F64;
    mt_tensor *y = mt_cast(c, in[0], other);
    out[0] = y;
    out[1] = mt_cast(c, y, in[0]->dtype);
    return 2;
}

static int run_conv1d(mt_ctx *c, mt_tensor **in, mt_tensor **out)
{
    out[0] = mt_conv1d_silu(c, in[0], in[1], in[2], NULL, NULL);
    return 1;
}

static int run_conv1d_state(mt_ctx *c, mt_tensor **in, mt_tensor **out)
{
    out[0] = mt_conv1d_silu(c, in[0], in[1], in[2], in[3], in[4]);
    return 1;
}

/* Width 2, no bias, x a column view (as the block feeds xBC). */
/* A sequence longer than the state: init_state is not read (and not given). */
static int run_conv1d_final_state(mt_ctx *c, mt_tensor **in, mt_tensor **out)
{
    out[0] = mt_conv1d_final_state(c, in[0], NULL, 4);
    return 1;
}

/* A sequence shorter than the state: part of the state comes from init_state. */
static int run_conv1d_final_state_short(mt_ctx *c, mt_tensor **in, mt_tensor **out)
{
    out[0] = mt_conv1d_final_state(c, mt_ctx_view_cols(c, in[0], 1, in[1]->shape[1]), in[1], 4);
    return 1;
}

static int run_conv1d_view(mt_ctx *c, mt_tensor **in, mt_tensor **out)
{
    out[0] = mt_conv1d_silu(c, mt_ctx_view_cols(c, in[0], 2, in[1]->shape[0]), in[1], NULL, NULL, NULL);
    return 1;
}

/* x a column view at an offset of 8 elements, with rows a multiple of 8
 * apart, as the Mamba-2 block's xBC: the 16-byte vector path on strided rows. */
static int run_conv1d_view_aligned(mt_ctx *c, mt_tensor **in, mt_tensor **out)
{
    out[0] = mt_conv1d_silu(c, mt_ctx_view_cols(c, in[0], 8, in[1]->shape[0]), in[1], NULL, NULL, NULL);
    return 1;
}

/* seq_idx redrawn with many documents: row b starts at id b and a new
 * document begins wherever a hash of (b, t) is 0 mod 5, so that documents
 * of one or two steps (shorter than the kernel) occur and boundaries land
 * everywhere in the CUDA kernels' time sub-tiles and load chunks. */
static int run_conv1d_docs(mt_ctx *c, mt_tensor **in, mt_tensor **out)
{
    const int64_t B = in[4]->shape[0], L = in[4]->shape[1];
    mt_tensor *host = mt_tensor_new(MT_CPU, MT_I32, 2, in[4]->shape), *ids = mt_ctx_tensor(c, MT_I32, 2, in[4]->shape);
    for (int64_t b = 0; b < B; b++) {
        int64_t id = b;
        for (int64_t t = 0; t < L; t++) {
            if (t > 0 && ((uint32_t)t * 2654435761u + (uint32_t)b * 40503u) % 5 == 0)
                id++;
            mt_set(host, b * L + t, (double)id);
        }
    }
    mt_tensor_copy(ids, host);
    mt_tensor_free(host);
    out[0] = mt_conv1d_silu(c, in[0], in[1], in[2], in[3], ids);
    return 1;
}

/* x, Bm, Cm as column views of one xBC tensor, as the Mamba-2 block does; D
 * per channel, so its size gives nheads * headdim. */
static int run_ssd(mt_ctx *c, mt_tensor **in, mt_tensor **out)
{
    int64_t hp = mt_numel(in[3]), n = (mt_cols(in[0]) - hp) / 2;
    mt_ssd_config cfg = {.headdim = (int)(hp / in[1]->shape[2]), .ngroups = 1, .chunk_size = 64,
                         .dt_min = 0, .dt_max = INFINITY};
    mt_tensor *x = mt_ctx_view_cols(c, in[0], 0, hp), *bm = mt_ctx_view_cols(c, in[0], hp, n),
              *cm = mt_ctx_view_cols(c, in[0], hp + n, n);
    out[0] = mt_ssd(c, x, in[1], in[2], bm, cm, in[3], NULL, in[4], NULL, NULL, &cfg, NULL);
    return 1;
}

/* Every option: z gating, D per head, 2 groups, the dt clamp, an initial
 * state, the final state as a second output, document boundaries. */
static int run_ssd_full(mt_ctx *c, mt_tensor **in, mt_tensor **out)
{
    mt_ssd_config cfg = {.headdim = (int)in[8]->shape[2], .ngroups = 2, .chunk_size = 64, .dt_min = 0.01,
                         .dt_max = 0.1};
    out[0] = mt_ssd(c, in[0], in[1], in[2], in[3], in[4], in[5], in[6], in[7], in[8], in[9], &cfg, &out[1]);
    return 2;
}

static int run_gated_rmsnorm(mt_ctx *c, mt_tensor **in, mt_tensor **out)
{
    out[0] = mt_gated_rmsnorm(c, in[0], in[1], in[2], 1, 1e-5);
    return 1;
}

static int run_gated_rmsnorm_groups(mt_ctx *c, mt_tensor **in, mt_tensor **out)
{
    out[0] = mt_gated_rmsnorm(c, in[0], in[1], in[2], 2, 1e-5);
    return 1;
}

/* As the Mamba-2 block feeds the norm: z a column view (from column 8) of
 * a wider tensor. y * z, recorded after the norm, gives both gradients
 * values before the norm's backward adds to them. */
static int run_gated_rmsnorm_view(mt_ctx *c, mt_tensor **in, mt_tensor **out)
{
    mt_tensor *z = mt_ctx_view_cols(c, in[1], 8, mt_cols(in[0]));
    out[0] = mt_gated_rmsnorm(c, in[0], z, in[2], 1, 1e-5);
    out[1] = mt_mul(c, in[0], z);
    return 2;
}

/* A tensor-parallel rank's columns of norm group 1 of 2, the group having
 * twice these columns: the other rank's half counts as zeros (no comm), so
 * the kernels' given-sums path runs with group_cols != E and a strided
 * (R, 2) sums buffer. */
static int run_gated_rmsnorm_tp(mt_ctx *c, mt_tensor **in, mt_tensor **out)
{
    out[0] = mt_gated_rmsnorm_tp(c, in[0], in[1], in[2], 1, 2, 2 * mt_cols(in[0]), 1e-5, NULL);
    return 1;
}

/* One norm group over three ranks' columns (ngroups 1, tensor parallel size 3). */
static int run_gated_rmsnorm_tp_one_group(mt_ctx *c, mt_tensor **in, mt_tensor **out)
{
    out[0] = mt_gated_rmsnorm_tp(c, in[0], in[1], in[2], 0, 1, 3 * mt_cols(in[0]), 1e-5, NULL);
    return 1;
}

/* in[0..2] u, delta, A_log; in[3] x_proj's output (B, L, R + 2 G N) of which
 * Bm and Cm are the last 2 G N columns as column views, as the Mamba-1 block
 * splits [dt_low, Bm, Cm]; in[4..6] D, z, delta_bias. */
static int run_scan_from_xdbl(mt_ctx *c, mt_tensor **in, mt_tensor **out, int ngroups, bool delta_softplus)
{
    int64_t gn = ngroups * in[2]->shape[1], dt_rank = mt_cols(in[3]) - 2 * gn;
    mt_tensor *bm = mt_ctx_view_cols(c, in[3], dt_rank, gn), *cm = mt_ctx_view_cols(c, in[3], dt_rank + gn, gn);
    mt_scan_config cfg = {.ngroups = ngroups, .delta_softplus = delta_softplus};
    out[0] = mt_selective_scan(c, in[0], in[1], in[2], bm, cm, in[4], in[5], in[6], &cfg);
    return 1;
}

/* As the Mamba-1 block runs it: z gate, D, delta_bias under softplus, 1 group. */
static int run_selective_scan(mt_ctx *c, mt_tensor **in, mt_tensor **out)
{
    return run_scan_from_xdbl(c, in, out, 1, true);
}

/* No softplus (delta is the step itself, plus the bias), 2 groups. */
static int run_selective_scan_linear_delta(mt_ctx *c, mt_tensor **in, mt_tensor **out)
{
    return run_scan_from_xdbl(c, in, out, 2, false);
}

/* Every option off: no z, no D, no delta_bias; 2 groups, Bm and Cm contiguous;
 * on the GPU 40 channels per group (a partly idle channel block) and d_state 32. */
static int run_selective_scan_bare(mt_ctx *c, mt_tensor **in, mt_tensor **out)
{
    mt_scan_config cfg = {.ngroups = 2, .delta_softplus = true};
    out[0] = mt_selective_scan(c, in[0], in[1], in[2], in[3], in[4], NULL, NULL, NULL, &cfg);
    return 1;
}

#define X(...) {__VA_ARGS__}
#define FLOAT_IN(n, k, nd, s, l, a, b) {.name = n, .kind = k, .ndim = nd, .small = s, .large = l, .lo = a, .hi = b}
#define IDS_IN(n, k, nd, s, l, li, ld) \
    {.name = n, .kind = k, .ndim = nd, .small = s, .large = l, .limit_in = li, .limit_dim = ld}

const tl_case tl_cases[] = {
    {"embedding", 2,
     {FLOAT_IN("weight", TL_FLOAT, 2, X(11, 6), X(1000, 96), -1, 1),
      IDS_IN("ids", TL_IDS, 2, X(2, 5), X(4, 333), 0, 0)},
     run_embedding},
    {"embedding_skewed", 2,
     {FLOAT_IN("weight", TL_FLOAT, 2, X(11, 6), X(4000, 130), -1, 1),
      IDS_IN("ids", TL_IDS, 2, X(2, 5), X(4, 1111), 0, 0)},
     run_embedding_skewed},
    {"embedding_slice", 2,
     {FLOAT_IN("weight", TL_FLOAT, 2, X(11, 6), X(1000, 96), -1, 1),
      IDS_IN("ids", TL_IDS, 2, X(2, 7), X(4, 777), 0, 0)},
     run_embedding_slice},
    {"linear", 3,
     {FLOAT_IN("x", TL_FLOAT, 3, X(2, 3, 5), X(3, 67, 96), -1, 1),
      FLOAT_IN("w", TL_FLOAT, 2, X(4, 5), X(80, 96), -1, 1),
      FLOAT_IN("b", TL_FLOAT, 1, X(4), X(80), -1, 1)},
     run_linear},
    {"linear_nobias", 2,
     {FLOAT_IN("x", TL_FLOAT, 2, X(7, 5), X(130, 64), -1, 1), FLOAT_IN("w", TL_FLOAT, 2, X(3, 5), X(48, 64), -1, 1)},
     run_linear_nobias},
    {"linear_view", 2,
     {FLOAT_IN("x", TL_FLOAT, 2, X(6, 9), X(100, 72), -1, 1), FLOAT_IN("w", TL_FLOAT, 2, X(4, 5), X(40, 64), -1, 1)},
     run_linear_view},
    {"add", 2,
     {FLOAT_IN("a", TL_FLOAT, 2, X(3, 7), X(97, 301), -2, 2), FLOAT_IN("b", TL_FLOAT, 2, X(3, 7), X(97, 301), -2, 2)},
     run_add},
    {"mul", 2,
     {FLOAT_IN("a", TL_FLOAT, 2, X(3, 7), X(97, 301), -2, 2), FLOAT_IN("b", TL_FLOAT, 2, X(3, 7), X(97, 301), -2, 2)},
     run_mul},
    {"mul_self", 1, {FLOAT_IN("a", TL_FLOAT, 2, X(3, 7), X(97, 301), -2, 2)}, run_mul_self},
    {"silu", 1, {FLOAT_IN("x", TL_FLOAT, 2, X(4, 9), X(129, 257), -6, 6)}, run_silu},
    {"softplus", 1, {FLOAT_IN("x", TL_FLOAT, 2, X(4, 9), X(129, 257), -25, 25)}, run_softplus},
    {"rmsnorm_residual", 3,
     {FLOAT_IN("x", TL_FLOAT, 3, X(3, 4, 8), X(3, 100, 1000), -2, 2),
      FLOAT_IN("residual", TL_ACCUM, 3, X(3, 4, 8), X(3, 100, 1000), -2, 2),
      FLOAT_IN("weight", TL_ACCUM, 1, X(8), X(1000), 0.5, 1.5)},
     run_rmsnorm_residual},
    {"rmsnorm", 2,
     {FLOAT_IN("x", TL_FLOAT, 2, X(5, 6), X(257, 768), -2, 2), FLOAT_IN("weight", TL_ACCUM, 1, X(6), X(768), 0.5, 1.5)},
     run_rmsnorm},
    /* Wide rows: more columns than a block has threads, several times over. */
    {"rmsnorm_wide", 2,
     {FLOAT_IN("x", TL_FLOAT, 2, X(3, 8), X(5, 13000), -2, 2),
      FLOAT_IN("weight", TL_ACCUM, 1, X(8), X(13000), 0.5, 1.5)},
     run_rmsnorm},
    /* CUDA's warp-a-row paths: a strided view of rows of exactly 1024
     * (each lane's every vector in use); more rows than the backward's
     * warps (each walks several, adding its dweight sums); rows of 2048
     * (the widest, its dweight sums beyond the default shared memory). */
    {"rmsnorm_residual_view", 3,
     {FLOAT_IN("x", TL_FLOAT, 3, X(2, 3, 16), X(3, 300, 1032), -2, 2),
      FLOAT_IN("residual", TL_ACCUM, 3, X(2, 3, 16), X(3, 300, 1032), -2, 2),
      FLOAT_IN("weight", TL_ACCUM, 1, X(8), X(1024), 0.5, 1.5)},
     run_rmsnorm_residual_view},
    {"rmsnorm_many_rows", 3,
     {FLOAT_IN("x", TL_FLOAT, 2, X(7, 8), X(5000, 256), -2, 2),
      FLOAT_IN("residual", TL_ACCUM, 2, X(7, 8), X(5000, 256), -2, 2),
      FLOAT_IN("weight", TL_ACCUM, 1, X(8), X(256), 0.5, 1.5)},
     run_rmsnorm_residual},
    {"rmsnorm_2048", 3,
     {FLOAT_IN("x", TL_FLOAT, 2, X(4, 16), X(300, 2048), -2, 2),
      FLOAT_IN("residual", TL_ACCUM, 2, X(4, 16), X(300, 2048), -2, 2),
      FLOAT_IN("weight", TL_ACCUM, 1, X(16), X(2048), 0.5, 1.5)},
     run_rmsnorm_residual},
    /* Unaligned rows: CUDA's general kernels. */
    {"rmsnorm_unaligned", 2,
     {FLOAT_IN("x", TL_FLOAT, 2, X(5, 9), X(257, 770), -2, 2), FLOAT_IN("weight", TL_ACCUM, 1, X(8), X(768), 0.5, 1.5)},
     run_rmsnorm_unaligned},
    /* Rows of a multiple of 8 (the recompute's vector path), and not. */
    {"rmsnorm_recomputed", 4,
     {FLOAT_IN("x", TL_FLOAT, 3, X(2, 3, 16), X(3, 100, 1024), -2, 2),
      FLOAT_IN("residual", TL_ACCUM, 3, X(2, 3, 16), X(3, 100, 1024), -2, 2),
      FLOAT_IN("weight", TL_ACCUM, 1, X(16), X(1024), 0.5, 1.5),
      FLOAT_IN("b", TL_FLOAT, 3, X(2, 3, 16), X(3, 100, 1024), -2, 2)},
     run_rmsnorm_recomputed},
    {"rmsnorm_recomputed_odd", 4,
     {FLOAT_IN("x", TL_FLOAT, 2, X(5, 9), X(200, 770), -2, 2),
      FLOAT_IN("residual", TL_ACCUM, 2, X(5, 9), X(200, 770), -2, 2),
      FLOAT_IN("weight", TL_ACCUM, 1, X(9), X(770), 0.5, 1.5),
      FLOAT_IN("b", TL_FLOAT, 2, X(5, 9), X(200, 770), -2, 2)},
     run_rmsnorm_recomputed},
    {"cross_entropy", 2,
     {FLOAT_IN("logits", TL_FLOAT, 2, X(6, 10), X(257, 5003), -4, 4),
      IDS_IN("targets", TL_TARGETS, 1, X(6), X(257), 0, 1)},
     run_cross_entropy},
    /* Rows whose length and alignment allow the widest vector loads. */
    {"cross_entropy_aligned", 2,
     {FLOAT_IN("logits", TL_FLOAT, 2, X(5, 16), X(300, 8192), -6, 6),
      IDS_IN("targets", TL_TARGETS, 1, X(5), X(300), 0, 1)},
     run_cross_entropy},
    {"cast", 1, {FLOAT_IN("x", TL_FLOAT, 2, X(3, 5), X(77, 1001), -3, 3)}, run_cast},
    /* Contiguous, a multiple of 4 elements: the vector path (the weights' casts). */
    {"cast_aligned", 1, {FLOAT_IN("x", TL_FLOAT, 2, X(4, 8), X(96, 1024), -3, 3)}, run_cast},
    {"conv1d", 3,
     {FLOAT_IN("x", TL_FLOAT, 3, X(2, 7, 5), X(2, 300, 130), -1, 1),
      FLOAT_IN("weight", TL_ACCUM, 3, X(5, 1, 4), X(130, 1, 4), -0.5, 0.5),
      FLOAT_IN("bias", TL_ACCUM, 1, X(5), X(130), -0.5, 0.5)},
     run_conv1d},
    {"conv1d_state", 5,
     {FLOAT_IN("x", TL_FLOAT, 3, X(2, 7, 5), X(3, 200, 70), -1, 1),
      FLOAT_IN("weight", TL_ACCUM, 3, X(5, 1, 4), X(70, 1, 4), -0.5, 0.5),
      FLOAT_IN("bias", TL_ACCUM, 1, X(5), X(70), -0.5, 0.5),
      FLOAT_IN("init_state", TL_ACCUM, 3, X(2, 5, 3), X(3, 70, 3), -1, 1),
      {.name = "seq_idx", .kind = TL_SEQ_IDX, .ndim = 2, .small = X(2, 7), .large = X(3, 200)}},
     run_conv1d_state},
    {"conv1d_final_state", 1, {FLOAT_IN("x", TL_FLOAT, 3, X(2, 7, 5), X(3, 200, 70), -1, 1)}, run_conv1d_final_state},
    {"conv1d_final_state_short", 2,
     {FLOAT_IN("x", TL_FLOAT, 3, X(2, 2, 7), X(3, 2, 90), -1, 1),
      FLOAT_IN("init_state", TL_ACCUM, 3, X(2, 5, 3), X(3, 70, 3), -1, 1)},
     run_conv1d_final_state_short},
    {"conv1d_view", 2,
     {FLOAT_IN("xbc", TL_FLOAT, 3, X(2, 7, 9), X(2, 150, 100), -1, 1),
      FLOAT_IN("weight", TL_ACCUM, 2, X(5, 2), X(80, 2), -0.5, 0.5)},
     run_conv1d_view},
    /* Channels a multiple of 8 (the 16-byte vector path), width 3, many short
     * documents, an initial state, a length no tile divides. */
    {"conv1d_docs", 5,
     {FLOAT_IN("x", TL_FLOAT, 3, X(2, 9, 16), X(2, 333, 256), -1, 1),
      FLOAT_IN("weight", TL_ACCUM, 3, X(16, 1, 3), X(256, 1, 3), -0.5, 0.5),
      FLOAT_IN("bias", TL_ACCUM, 1, X(16), X(256), -0.5, 0.5),
      FLOAT_IN("init_state", TL_ACCUM, 3, X(2, 16, 2), X(2, 256, 2), -1, 1),
      {.name = "seq_idx", .kind = TL_SEQ_IDX, .ndim = 2, .small = X(2, 9), .large = X(2, 333)}},
     run_conv1d_docs},
    {"conv1d_view_aligned", 2,
     {FLOAT_IN("xbc", TL_FLOAT, 3, X(2, 7, 24), X(2, 150, 272), -1, 1),
      FLOAT_IN("weight", TL_ACCUM, 2, X(8, 4), X(256, 4), -0.5, 0.5)},
     run_conv1d_view_aligned},
    /* An odd channel count: one channel per thread, with documents and a state. */
    {"conv1d_odd", 5,
     {FLOAT_IN("x", TL_FLOAT, 3, X(2, 7, 3), X(3, 190, 37), -1, 1),
      FLOAT_IN("weight", TL_ACCUM, 3, X(3, 1, 4), X(37, 1, 4), -0.5, 0.5),
      FLOAT_IN("bias", TL_ACCUM, 1, X(3), X(37), -0.5, 0.5),
      FLOAT_IN("init_state", TL_ACCUM, 3, X(2, 3, 3), X(3, 37, 3), -1, 1),
      {.name = "seq_idx", .kind = TL_SEQ_IDX, .ndim = 2, .small = X(2, 7), .large = X(3, 190)}},
     run_conv1d_state},
    /* Width 1: no history at all. */
    {"conv1d_w1", 3,
     {FLOAT_IN("x", TL_FLOAT, 3, X(2, 6, 4), X(2, 100, 64), -1, 1),
      FLOAT_IN("weight", TL_ACCUM, 3, X(4, 1, 1), X(64, 1, 1), -0.5, 0.5),
      FLOAT_IN("bias", TL_ACCUM, 1, X(4), X(64), -0.5, 0.5)},
     run_conv1d},
    {"ssd", 5,
     {FLOAT_IN("xbc", TL_FLOAT, 3, X(2, 9, 14), X(2, 300, 160), -1, 1),
      FLOAT_IN("dt", TL_FLOAT, 3, X(2, 9, 2), X(2, 300, 4), -3, 1),
      FLOAT_IN("A_log", TL_ACCUM, 1, X(2), X(4), 0, 2.77),
      FLOAT_IN("D", TL_ACCUM, 1, X(8), X(128), 0.5, 1.5),
      FLOAT_IN("dt_bias", TL_ACCUM, 1, X(2), X(4), -5, -2)},
     run_ssd, 1e-4},
    {"ssd_full", 10,
     {FLOAT_IN("x", TL_FLOAT, 3, X(2, 10, 16), X(2, 300, 256), -1, 1),
      FLOAT_IN("dt", TL_FLOAT, 3, X(2, 10, 4), X(2, 300, 8), -3, 1),
      FLOAT_IN("A_log", TL_ACCUM, 1, X(4), X(8), 0, 2.77),
      FLOAT_IN("Bm", TL_FLOAT, 3, X(2, 10, 6), X(2, 300, 32), -1, 1),
      FLOAT_IN("Cm", TL_FLOAT, 3, X(2, 10, 6), X(2, 300, 32), -1, 1),
      FLOAT_IN("D", TL_ACCUM, 1, X(4), X(8), 0.5, 1.5),
      FLOAT_IN("z", TL_FLOAT, 3, X(2, 10, 16), X(2, 300, 256), -2, 2),
      FLOAT_IN("dt_bias", TL_ACCUM, 1, X(4), X(8), -5, -2),
      FLOAT_IN("init_state", TL_ACCUM, 4, X(2, 4, 4, 3), X(2, 8, 32, 16), -1, 1),
      {.name = "seq_idx", .kind = TL_SEQ_IDX, .ndim = 2, .small = X(2, 10), .large = X(2, 300)}},
     run_ssd_full, 1e-4},
    {"gated_rmsnorm", 3,
     {FLOAT_IN("y", TL_FLOAT, 3, X(3, 5, 8), X(4, 100, 512), -2, 2),
      FLOAT_IN("z", TL_FLOAT, 3, X(3, 5, 8), X(4, 100, 512), -2, 2),
      FLOAT_IN("weight", TL_ACCUM, 1, X(8), X(512), 0.5, 1.5)},
     run_gated_rmsnorm},
    {"gated_rmsnorm_groups", 3,
     {FLOAT_IN("y", TL_FLOAT, 2, X(6, 8), X(300, 768), -2, 2),
      FLOAT_IN("z", TL_FLOAT, 2, X(6, 8), X(300, 768), -2, 2),
      FLOAT_IN("weight", TL_ACCUM, 1, X(8), X(768), 0.5, 1.5)},
     run_gated_rmsnorm_groups},
    /* Rows too wide for the backward's running dweight sums in shared
     * memory (13000 f32 columns > 48 KiB): they stay in the partial rows. */
    {"gated_rmsnorm_wide", 3,
     {FLOAT_IN("y", TL_FLOAT, 3, X(2, 3, 8), X(2, 5, 13000), -2, 2),
      FLOAT_IN("z", TL_FLOAT, 3, X(2, 3, 8), X(2, 5, 13000), -2, 2),
      FLOAT_IN("weight", TL_ACCUM, 1, X(8), X(13000), 0.5, 1.5)},
     run_gated_rmsnorm},
    /* Rows of 2048 (the 370m model's), z a view: the widest vectors, a warp
     * per row in the forward and a block per row walking 3 or 4 rows in the
     * backward (f32 and bf16). */
    {"gated_rmsnorm_view", 3,
     {FLOAT_IN("y", TL_FLOAT, 3, X(2, 3, 8), X(2, 400, 2048), -2, 2),
      FLOAT_IN("z", TL_FLOAT, 3, X(2, 3, 16), X(2, 400, 2056), -2, 2),
      FLOAT_IN("weight", TL_ACCUM, 1, X(8), X(2048), 0.5, 1.5)},
     run_gated_rmsnorm_view},
    /* Enough rows that each of the backward's row slots walks 4 or 5 of
     * them, two groups a row, four slots a block. */
    {"gated_rmsnorm_groups_rows", 3,
     {FLOAT_IN("y", TL_FLOAT, 2, X(6, 8), X(4400, 512), -2, 2),
      FLOAT_IN("z", TL_FLOAT, 2, X(6, 8), X(4400, 512), -2, 2),
      FLOAT_IN("weight", TL_ACCUM, 1, X(8), X(512), 0.5, 1.5)},
     run_gated_rmsnorm_groups},
    {"gated_rmsnorm_tp", 3,
     {FLOAT_IN("y", TL_FLOAT, 3, X(3, 5, 8), X(3, 101, 384), -2, 2),
      FLOAT_IN("z", TL_FLOAT, 3, X(3, 5, 8), X(3, 101, 384), -2, 2),
      FLOAT_IN("weight", TL_ACCUM, 1, X(8), X(384), 0.5, 1.5)},
     run_gated_rmsnorm_tp},
    {"gated_rmsnorm_tp_one_group", 3,
     {FLOAT_IN("y", TL_FLOAT, 2, X(6, 7), X(257, 510), -2, 2),
      FLOAT_IN("z", TL_FLOAT, 2, X(6, 7), X(257, 510), -2, 2),
      FLOAT_IN("weight", TL_ACCUM, 1, X(7), X(510), 0.5, 1.5)},
     run_gated_rmsnorm_tp_one_group},
    {"selective_scan", 7,
     {FLOAT_IN("u", TL_FLOAT, 3, X(2, 32, 4), X(2, 300, 96), -1, 1),
      FLOAT_IN("delta", TL_FLOAT, 3, X(2, 32, 4), X(2, 300, 96), -1, 1),
      FLOAT_IN("A_log", TL_ACCUM, 2, X(4, 3), X(96, 16), 0, 2.77),
      FLOAT_IN("xdbl", TL_FLOAT, 3, X(2, 32, 8), X(2, 300, 38), -1, 1),
      FLOAT_IN("D", TL_ACCUM, 1, X(4), X(96), 0.5, 1.5),
      FLOAT_IN("z", TL_FLOAT, 3, X(2, 32, 4), X(2, 300, 96), -2, 2),
      FLOAT_IN("delta_bias", TL_ACCUM, 1, X(4), X(96), -4, -1)},
     run_selective_scan},
    {"selective_scan_linear_delta", 7,
     {FLOAT_IN("u", TL_FLOAT, 3, X(2, 16, 6), X(2, 200, 64), -1, 1),
      FLOAT_IN("delta", TL_FLOAT, 3, X(2, 16, 6), X(2, 200, 64), 0.01, 0.3),
      FLOAT_IN("A_log", TL_ACCUM, 2, X(6, 2), X(64, 8), 0, 2.77),
      FLOAT_IN("xdbl", TL_FLOAT, 3, X(2, 16, 9), X(2, 200, 36), -1, 1),
      FLOAT_IN("D", TL_ACCUM, 1, X(6), X(64), 0.5, 1.5),
      FLOAT_IN("z", TL_FLOAT, 3, X(2, 16, 6), X(2, 200, 64), -2, 2),
      FLOAT_IN("delta_bias", TL_ACCUM, 1, X(6), X(64), 0, 0.1)},
     run_selective_scan_linear_delta},
    {"selective_scan_bare", 5,
     {FLOAT_IN("u", TL_FLOAT, 3, X(2, 20, 4), X(3, 257, 80), -1, 1),
      FLOAT_IN("delta", TL_FLOAT, 3, X(2, 20, 4), X(3, 257, 80), -3, 0),
      FLOAT_IN("A_log", TL_ACCUM, 2, X(4, 2), X(80, 32), 0, 2.77),
      FLOAT_IN("Bm", TL_FLOAT, 3, X(2, 20, 4), X(3, 257, 64), -1, 1),
      FLOAT_IN("Cm", TL_FLOAT, 3, X(2, 20, 4), X(3, 257, 64), -1, 1)},
     run_selective_scan_bare},
};

const int tl_n_cases = sizeof tl_cases / sizeof tl_cases[0];
