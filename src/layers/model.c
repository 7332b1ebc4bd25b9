#include "layers/model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "autograd/ops_tp.h"
#include "autograd/recompute.h"
#include "core/device.h"
#include "core/error.h"
#include "core/rng.h"

void mt_model_build(mt_model *m, const mt_model_config *cfg, mt_device dev, mt_dtype param_dtype)
{
    mt_model_build_tp(m, cfg, dev, param_dtype, NULL);
}

/* Under TP the mixers are split by heads and the embedding and lm_head by
 * vocabulary rows; the block norms and norm_f are replicated (their
 * gradients agree on every rank). */
void mt_model_build_tp(mt_model *m, const mt_model_config *cfg, mt_device dev, mt_dtype param_dtype,
                       const mt_tp *tp)
{
    char err[256];
    bool split = tp && tp->size > 1;
    if (split && !mt_tp_check(cfg, tp->size, err, sizeof err))
        mt_fatal("%s", err);
    if (split && (tp->rank < 0 || tp->rank >= tp->size || !tp->comm || tp->comm->world != tp->size))
        mt_fatal("tensor parallel rank %d of %d needs a communicator of that many ranks", tp->rank, tp->size);
    m->tp = split ? *tp : (mt_tp){.size = 1};
    m->cfg = *cfg;
    m->recompute_blocks = false;
    mt_params_init(&m->params, dev, param_dtype);
    mt_params *p = &m->params;
    int64_t d = cfg->d_model, v = cfg->vocab_padded / m->tp.size;
    unsigned vocab_flags = split ? MT_PARAM_TP_SHARDED : 0;
    m->embedding = mt_params_add(p, "backbone.embedding.weight", 2, (int64_t[]){v, d}, vocab_flags);
    m->layers = calloc((size_t)cfg->n_layer, sizeof *m->layers);
    if (!m->layers)
        mt_fatal("out of host memory for %d layers", cfg->n_layer);
    for (int i = 0; i < cfg->n_layer; i++) {
        char name[MT_PARAM_NAME_MAX];
        snprintf(name, sizeof name, "backbone.layers.%d.norm.weight", i);
        m->layers[i].norm_w = mt_params_add(p, name, 1, &d, MT_PARAM_NO_DECAY);
        m->layers[i].cfg = &m->cfg;
        snprintf(name, sizeof name, "backbone.layers.%d.mixer", i);
        if (cfg->layer == MT_LAYER_MAMBA1)
            mt_mamba1_declare(&m->layers[i].mamba1, p, cfg, name);
        else if (split)
            mt_mamba2_declare_tp(&m->layers[i].mixer, p, cfg, name, &m->tp);
        else
            mt_mamba2_declare(&m->layers[i].mixer, p, cfg, name);
    }
    m->norm_f = mt_params_add(p, "backbone.norm_f.weight", 1, &d, MT_PARAM_NO_DECAY);
    m->lm_head = cfg->tie_embeddings ? m->embedding
                                     : mt_params_add(p, "lm_head.weight", 2, (int64_t[]){v, d}, vocab_flags);
    mt_params_alloc(p);
}

void mt_model_release(mt_model *m)
{
    mt_params_release(&m->params);
    free(m->layers);
    m->layers = NULL;
}

/* ---- initialization ----
 * As the reference builds its modules and then applies _init_weights:
 * - Linear weights (in_proj, x_proj, out_proj): PyTorch's default, U(+-1/sqrt(fan_in));
 * - conv1d weight and bias: PyTorch's default, U(+-1/sqrt(d_conv)) (fan_in = 1 * d_conv);
 * - Mamba-2's dt_bias and Mamba-1's dt_proj.bias = softplus^-1(dt),
 *   dt = exp(U(log dt_min, log dt_max)) floored at dt_init_floor;
 * - Mamba-2: A_log = log(U(A_init_range)); Mamba-1: A_log[d, n] = log(n + 1)
 *   (S4D-real) and dt_proj.weight ~ U(+-dt_scale / sqrt(dt_rank));
 * - D = 1; every norm weight = 1;
 * then the model-wide pass, which skips MT_PARAM_NO_REINIT parameters:
 * - embedding ~ N(0, 0.02);
 * - out_proj re-drawn with the Linear default and divided by sqrt(n_layer)
 *   (one residual per layer: no MLP).
 * Each random parameter draws from its own seed, param_seed(seed, k), k
 * counting the parameters in order. A TP rank draws each mixer parameter
 * whole (on its device, one at a time) and keeps its slice, so the group's
 * ranks together hold exactly the single-rank initialization. */

/* Element i of a per-parameter stream: seeds differ per parameter. */
static uint64_t param_seed(uint64_t seed, int index)
{
    return seed * 1000003u + (uint64_t)index;
}

static void fill_host(mt_tensor *t, const double *values)
{
    mt_tensor *h = mt_tensor_new(MT_CPU, t->dtype, t->ndim, t->shape);
    for (int64_t i = 0; i < mt_numel(h); i++)
        mt_set(h, i, values[i]);
    mt_tensor_copy(t, h);
    mt_tensor_free(h);
}

static void fill_constant(mt_tensor *t, double v)
{
    int64_t n = mt_numel(t);
    double *vals = malloc((size_t)n * sizeof *vals);
    if (!vals)
        mt_fatal("out of host memory initializing %s", t->name);
    for (int64_t i = 0; i < n; i++)
        vals[i] = v;
    fill_host(t, vals);
    free(vals);
}

static void init_dt_bias(mt_tensor *t, const mt_model_config *cfg, uint64_t seed)
{
    int64_t n = mt_numel(t);
    double vals[n];
    for (int64_t i = 0; i < n; i++) {
        double dt = exp(mt_rng_uniform(seed, (uint64_t)i, log(cfg->dt_min), log(cfg->dt_max)));
        if (dt < cfg->dt_init_floor)
            dt = cfg->dt_init_floor;
        vals[i] = dt + log(-expm1(-dt)); /* softplus^-1 */
    }
    fill_host(t, vals);
}

static void init_A_log(mt_tensor *t, const mt_model_config *cfg, uint64_t seed)
{
    int64_t n = mt_numel(t);
    double vals[n];
    for (int64_t i = 0; i < n; i++)
        vals[i] = log(mt_rng_uniform(seed, (uint64_t)i, cfg->A_init_min, cfg->A_init_max));
    fill_host(t, vals);
}

static void init_linear_default(mt_backend *be, mt_tensor *w, uint64_t seed, double scale)
{
    double bound = 1.0 / sqrt((double)w->shape[w->ndim - 1]) * scale;
    be->fill_uniform(be, w, seed, -bound, bound);
}

static void init_mamba2(mt_backend *be, mt_mamba2 *x, const mt_model_config *cfg, uint64_t seed, int *k)
{
    init_linear_default(be, x->in_proj, param_seed(seed, (*k)++), 1.0);
    double conv_bound = 1.0 / sqrt((double)cfg->d_conv);
    be->fill_uniform(be, x->conv_w, param_seed(seed, (*k)++), -conv_bound, conv_bound);
    be->fill_uniform(be, x->conv_b, param_seed(seed, (*k)++), -conv_bound, conv_bound);
    init_dt_bias(x->dt_bias, cfg, param_seed(seed, (*k)++));
    init_A_log(x->A_log, cfg, param_seed(seed, (*k)++));
    fill_constant(x->D, 1.0);
    fill_constant(x->norm_w, 1.0);
    (*k)++; /* out_proj: drawn by the model-wide pass */
}

/* A_log (d_inner, d_state) = log(n + 1) in every row: A = -(1, 2, ..., d_state). */
static void init_A_log_s4d_real(mt_tensor *t)
{
    int64_t rows = t->shape[0], n = t->shape[1];
    double *vals = malloc((size_t)(rows * n) * sizeof *vals);
    if (!vals)
        mt_fatal("out of host memory initializing %s", t->name);
    for (int64_t i = 0; i < rows * n; i++)
        vals[i] = log((double)(i % n + 1));
    fill_host(t, vals);
    free(vals);
}

static void init_mamba1(mt_backend *be, mt_mamba1 *x, const mt_model_config *cfg, uint64_t seed, int *k)
{
    init_linear_default(be, x->in_proj, param_seed(seed, (*k)++), 1.0);
    double conv_bound = 1.0 / sqrt((double)cfg->d_conv);
    be->fill_uniform(be, x->conv_w, param_seed(seed, (*k)++), -conv_bound, conv_bound);
    if (x->conv_b)
        be->fill_uniform(be, x->conv_b, param_seed(seed, *k), -conv_bound, conv_bound);
    (*k)++; /* counted with or without the bias: the draws after it stay the same */
    init_linear_default(be, x->x_proj, param_seed(seed, (*k)++), 1.0);
    double dt_bound = cfg->dt_scale / sqrt((double)cfg->dt_proj_rank);
    be->fill_uniform(be, x->dt_proj, param_seed(seed, (*k)++), -dt_bound, dt_bound);
    init_dt_bias(x->dt_bias, cfg, param_seed(seed, (*k)++));
    init_A_log_s4d_real(x->A_log);
    fill_constant(x->D, 1.0);
    (*k)++; /* out_proj: drawn by the model-wide pass */
}

/* Full-shape temporaries on the parameters' device for a TP rank's mixer
 * parameters but out_proj, named as the rank's (whose slices they fill). */
static mt_mamba2 full_mamba2(const mt_mamba2 *local, const mt_model_config *cfg)
{
    mt_device dev = local->in_proj->device;
    mt_dtype dt = local->in_proj->dtype;
    int64_t h = cfg->nheads, conv = cfg->conv_dim, di = cfg->d_inner;
    mt_mamba2 f = {
        .in_proj = mt_tensor_new(dev, dt, 2, (int64_t[]){cfg->in_proj_dim, cfg->d_model}),
        .conv_w = mt_tensor_new(dev, dt, 3, (int64_t[]){conv, 1, cfg->d_conv}),
        .conv_b = mt_tensor_new(dev, dt, 1, &conv),
        .dt_bias = mt_tensor_new(dev, dt, 1, &h),
        .A_log = mt_tensor_new(dev, dt, 1, &h),
        .D = mt_tensor_new(dev, dt, 1, &h),
        .norm_w = mt_tensor_new(dev, dt, 1, &di),
    };
    mt_tensor *const l[] = {local->in_proj, local->conv_w, local->conv_b, local->dt_bias,
                            local->A_log, local->D, local->norm_w};
    mt_tensor *const t[] = {f.in_proj, f.conv_w, f.conv_b, f.dt_bias, f.A_log, f.D, f.norm_w};
    for (int i = 0; i < 7; i++)
        t[i]->name = l[i]->name;
    return f;
}

/* local = the rank's slice of full (a parameter of the same name). */
static void keep_slice(const mt_model *m, mt_tensor *local, mt_tensor *full)
{
    mt_tp_layout l;
    if (!mt_tp_layout_of(&m->cfg, m->tp.size, m->tp.rank, local->name, &l))
        mt_fatal("%s is not a tensor-parallel parameter", local->name);
    mt_tp_copy_param(&l, local->device, local->data, full->data, mt_dtype_size(local->dtype), false);
}

/* init_mamba2 of the whole block into temporaries, keeping this rank's
 * slices; out_proj, drawn by the model-wide pass, is left alone. */
static void init_mamba2_tp(mt_backend *be, const mt_model *m, mt_mamba2 *x, uint64_t seed, int *k)
{
    mt_mamba2 f = full_mamba2(x, &m->cfg);
    init_mamba2(be, &f, &m->cfg, seed, k);
    mt_tensor *const l[] = {x->in_proj, x->conv_w, x->conv_b, x->dt_bias, x->A_log, x->D, x->norm_w};
    mt_tensor *const t[] = {f.in_proj, f.conv_w, f.conv_b, f.dt_bias, f.A_log, f.D, f.norm_w};
    for (int i = 0; i < 7; i++)
        keep_slice(m, l[i], t[i]);
    for (int i = 0; i < 7; i++)
        mt_tensor_free(t[i]);
}

/* The model-wide pass's out_proj draw (scale as there), whole, then sliced. */
static void init_out_proj_tp(mt_backend *be, const mt_model *m, mt_tensor *local, uint64_t seed, double scale)
{
    mt_tensor *full =
        mt_tensor_new(local->device, local->dtype, 2, (int64_t[]){m->cfg.d_model, m->cfg.d_inner});
    full->name = local->name;
    init_linear_default(be, full, seed, scale);
    keep_slice(m, local, full);
    mt_tensor_free(full);
}

/* The embedding (N(0, 0.02)) or an untied lm_head (the Linear default)
 * drawn whole, then this rank's vocabulary rows kept. */
static void init_vocab_rows(mt_backend *be, const mt_model *m, mt_tensor *local, uint64_t seed, bool embedding)
{
    mt_tensor *full =
        mt_tensor_new(local->device, local->dtype, 2, (int64_t[]){m->cfg.vocab_padded, m->cfg.d_model});
    full->name = local->name;
    if (embedding)
        be->fill_normal(be, full, seed, 0.0, 0.02);
    else
        init_linear_default(be, full, seed, 1.0);
    keep_slice(m, local, full);
    mt_tensor_free(full);
}

static mt_tensor *out_proj_of(mt_model_layer *l)
{
    return l->cfg->layer == MT_LAYER_MAMBA1 ? l->mamba1.out_proj : l->mixer.out_proj;
}

void mt_model_init(mt_model *m, mt_backend *be, uint64_t seed)
{
    const mt_model_config *cfg = &m->cfg;
    int k = 0;
    for (int i = 0; i < cfg->n_layer; i++) {
        mt_model_layer *l = &m->layers[i];
        fill_constant(l->norm_w, 1.0);
        if (cfg->layer == MT_LAYER_MAMBA1)
            init_mamba1(be, &l->mamba1, cfg, seed, &k);
        else if (l->mixer.tp)
            init_mamba2_tp(be, m, &l->mixer, seed, &k);
        else
            init_mamba2(be, &l->mixer, cfg, seed, &k);
    }
    fill_constant(m->norm_f, 1.0);
    const bool vocab_split = m->tp.size > 1;
    if (m->lm_head != m->embedding && vocab_split)
        init_vocab_rows(be, m, m->lm_head, param_seed(seed, k++), false);
    else if (m->lm_head != m->embedding)
        init_linear_default(be, m->lm_head, param_seed(seed, k++), 1.0);

    /* The model-wide pass. */
    if (vocab_split)
        init_vocab_rows(be, m, m->embedding, param_seed(seed, k++), true);
    else
        be->fill_normal(be, m->embedding, param_seed(seed, k++), 0.0, 0.02);
    double prenorm_scale = 1.0 / sqrt((double)cfg->n_layer);
    for (int i = 0; i < cfg->n_layer; i++) {
        if (cfg->layer == MT_LAYER_MAMBA2 && m->layers[i].mixer.tp)
            init_out_proj_tp(be, m, m->layers[i].mixer.out_proj, param_seed(seed, k++), prenorm_scale);
        else
            init_linear_default(be, out_proj_of(&m->layers[i]), param_seed(seed, k++), prenorm_scale);
    }
}

/* One layer's mixer (arg: the layer), as the forward and activation
 * checkpointing run it. The Mamba-1 block has no document boundaries. */
static mt_tensor *run_mixer(mt_ctx *c, void *arg, mt_tensor *x, mt_tensor *seq_idx)
{
    mt_model_layer *l = arg;
    if (l->cfg->layer == MT_LAYER_MAMBA1)
        return mt_mamba1_forward(c, &l->mamba1, l->cfg, x);
    return mt_mamba2_forward(c, &l->mixer, l->cfg, x, seq_idx);
}

mt_tensor *mt_model_logits(mt_ctx *c, mt_model *m, mt_tensor *ids, mt_tensor *seq_idx, mt_dtype compute)
{
    const mt_model_config *cfg = &m->cfg;
    char s[96];
    if (!ids || ids->ndim != 2)
        return mt_op_error(c, "mt_model_logits: ids %s must be (batch, seqlen) i32",
                           ids ? mt_shape_str(ids, s, sizeof s) : "NULL");
    /* In the accumulation dtype, like the residual. */
    mt_tensor *h = m->tp.size > 1 ? mt_tp_embedding(c, m->embedding, ids, m->tp.comm)
                                  : mt_embedding(c, m->embedding, ids);
    mt_tensor *residual = NULL;
    for (int i = 0; i < cfg->n_layer && h; i++) {
        mt_tensor *x = mt_rmsnorm(c, h, residual, m->layers[i].norm_w, cfg->norm_eps, &residual);
        if (x && x->dtype != compute)
            x = mt_cast(c, x, compute);
        h = m->recompute_blocks ? mt_recompute_block(c, run_mixer, &m->layers[i], x, seq_idx)
                                : run_mixer(c, &m->layers[i], x, seq_idx);
    }
    mt_tensor *out = mt_rmsnorm(c, h, residual, m->norm_f, cfg->norm_eps, &residual);
    if (out && out->dtype != compute)
        out = mt_cast(c, out, compute);
    if (out && m->tp.size > 1) /* each rank's vocabulary rows add their part of out's gradient */
        out = mt_tp_copy_to(c, out, m->tp.comm);
    mt_tensor *head = m->lm_head->dtype == compute ? m->lm_head : mt_cast(c, m->lm_head, compute);
    mt_tensor *logits = mt_linear(c, out, head, NULL);
    int64_t rows = ids->shape[0] * ids->shape[1];
    return logits ? mt_ctx_reshape(c, logits, 2, (int64_t[]){rows, m->lm_head->shape[0]}) : NULL;
}

mt_tensor *mt_model_loss(mt_ctx *c, const mt_model *m, mt_tensor *logits, mt_tensor *targets, int ignore_index)
{
    if (m->tp.size > 1)
        return mt_cross_entropy_tp(c, logits, targets, ignore_index, m->tp.comm, true);
    return mt_cross_entropy_in_place(c, logits, targets, ignore_index);
}

bool mt_model_argmax(const mt_model *m, const mt_tensor *logits, int64_t *best, char *err, size_t errlen)
{
    const int64_t rows = mt_rows(logits), cols = mt_cols(logits), ranks = m->tp.size;
    mt_tensor *host = mt_tensor_new(MT_CPU, logits->dtype, 2, (int64_t[]){rows, cols});
    mt_device_copy(MT_CPU, host->data, logits->device, logits->data, mt_nbytes(host));
    /* Each rank's (value, id) per row in its slot, zeros in the others', so
     * that a sum over the group is every rank's exactly. */
    double *cand = calloc((size_t)(ranks * rows * 2), sizeof *cand);
    if (!cand)
        mt_fatal("argmax: out of host memory for %lld rows", (long long)rows);
    const int64_t first = m->tp.size > 1 ? m->tp.rank * cols : 0, mine = m->tp.size > 1 ? m->tp.rank : 0;
    for (int64_t i = 0; i < rows; i++) {
        int64_t b = 0;
        for (int64_t v = 1; v < cols; v++)
            if (mt_get(host, i * cols + v) > mt_get(host, i * cols + b))
                b = v;
        cand[(mine * rows + i) * 2] = mt_get(host, i * cols + b);
        cand[(mine * rows + i) * 2 + 1] = (double)(first + b);
    }
    mt_tensor_free(host);
    bool ok = ranks == 1 || m->tp.comm->all_reduce(m->tp.comm, cand, (size_t)(ranks * rows * 2), MT_F64, err, errlen);
    for (int64_t i = 0; ok && i < rows; i++) {
        int64_t b = 0; /* ranks in order: a tie goes to the lowest id */
        for (int64_t r = 1; r < ranks; r++)
            if (cand[(r * rows + i) * 2] > cand[(b * rows + i) * 2])
                b = r;
        best[i] = (int64_t)cand[(b * rows + i) * 2 + 1];
    }
    free(cand);
    return ok;
}
