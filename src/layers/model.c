#include "layers/model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "autograd/ops_tp.h"
#include "autograd/recompute.h"
#include "core/device.h"
#include "core/error.h"
#include "layers/init.h"

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
        mt_model_layer *l = &m->layers[i];
        l->cfg = &m->cfg;
        l->kind = mt_block_kind_of(cfg->layer);
        l->block = calloc(1, l->kind->size);
        if (!l->block)
            mt_fatal("out of host memory for layer %d", i);
        snprintf(name, sizeof name, "backbone.layers.%d.mixer", i);
        l->kind->declare(l->block, p, cfg, name, &m->tp);
    }
    m->norm_f = mt_params_add(p, "backbone.norm_f.weight", 1, &d, MT_PARAM_NO_DECAY);
    m->lm_head = cfg->tie_embeddings ? m->embedding
                                     : mt_params_add(p, "lm_head.weight", 2, (int64_t[]){v, d}, vocab_flags);
    mt_params_alloc(p);
}

void mt_model_release(mt_model *m)
{
    mt_params_release(&m->params);
    for (int i = 0; m->layers && i < m->cfg.n_layer; i++)
        free(m->layers[i].block);
    free(m->layers);
    m->layers = NULL;
}

/* ---- initialization ----
 * As the reference builds its modules and then applies _init_weights: each
 * block kind draws its own parameters as its module does (its file),
 * every norm weight is 1, an untied lm_head gets the Linear default; then
 * the model-wide pass, which skips MT_PARAM_NO_REINIT parameters:
 * - embedding ~ N(0, 0.02);
 * - each block's residual projection (out_proj) re-drawn with the Linear
 *   default and divided by sqrt(n_layer) (one residual per layer: no MLP).
 * Parameter k draws from mt_init_seed(seed, k) (layers/init.h). */

/* The embedding (N(0, 0.02)) or an untied lm_head (the Linear default)
 * drawn whole, then this rank's vocabulary rows kept. */
static void init_vocab_rows(mt_backend *be, const mt_model *m, mt_tensor *local, uint64_t seed, bool embedding)
{
    mt_tensor *full = mt_init_full_like(local, 2, (int64_t[]){m->cfg.vocab_padded, m->cfg.d_model});
    if (embedding)
        be->fill_normal(be, full, seed, 0.0, 0.02);
    else
        mt_init_linear(be, full, seed, 1.0);
    mt_init_keep_slice(&m->cfg, &m->tp, local, full);
    mt_tensor_free(full);
}

void mt_model_init(mt_model *m, mt_backend *be, uint64_t seed)
{
    const mt_model_config *cfg = &m->cfg;
    int k = 0;
    for (int i = 0; i < cfg->n_layer; i++) {
        mt_model_layer *l = &m->layers[i];
        mt_init_constant(l->norm_w, 1.0);
        l->kind->init(be, l->block, cfg, &m->tp, seed, &k);
    }
    mt_init_constant(m->norm_f, 1.0);
    const bool vocab_split = m->tp.size > 1;
    if (m->lm_head != m->embedding && vocab_split)
        init_vocab_rows(be, m, m->lm_head, mt_init_seed(seed, k++), false);
    else if (m->lm_head != m->embedding)
        mt_init_linear(be, m->lm_head, mt_init_seed(seed, k++), 1.0);

    /* The model-wide pass. */
    if (vocab_split)
        init_vocab_rows(be, m, m->embedding, mt_init_seed(seed, k++), true);
    else
        be->fill_normal(be, m->embedding, mt_init_seed(seed, k++), 0.0, 0.02);
    double prenorm_scale = 1.0 / sqrt((double)cfg->n_layer);
    for (int i = 0; i < cfg->n_layer; i++) {
        mt_model_layer *l = &m->layers[i];
        l->kind->init_residual(be, l->block, cfg, &m->tp, mt_init_seed(seed, k++), prenorm_scale);
    }
}

/* One layer's mixer (arg: the layer), as the forward and activation
 * checkpointing run it. Its output is read only by the next norm's forward
 * (or copied out by the checkpointing), so it is not kept. */
static mt_tensor *run_mixer(mt_ctx *c, void *arg, mt_tensor *x, mt_tensor *seq_idx)
{
    mt_model_layer *l = arg;
    return l->kind->forward(c, l->block, l->cfg, x, &(mt_block_io){.seq_idx = seq_idx, .output_unread = true});
}

/* mt_model_logits, or with st the generation's forward continuing from st
 * (and advancing it). */
static mt_tensor *logits_of(mt_ctx *c, mt_model *m, mt_tensor *ids, mt_tensor *seq_idx, mt_dtype compute,
                            mt_model_state *st)
{
    const mt_model_config *cfg = &m->cfg;
    char s[96];
    if (!ids || ids->ndim != 2)
        return mt_op_error(c, "mt_model_logits: ids %s must be (batch, seqlen) i32",
                           ids ? mt_shape_str(ids, s, sizeof s) : "NULL");
    if (st && ids->shape[0] != st->batch)
        return mt_op_error(c, "mt_model_advance: ids %s for a state of batch %lld", mt_shape_str(ids, s, sizeof s),
                           (long long)st->batch);
    /* In the accumulation dtype, like the residual. */
    mt_tensor *h = m->tp.size > 1 ? mt_tp_embedding(c, m->embedding, ids, m->tp.comm)
                                  : mt_embedding(c, m->embedding, ids);
    mt_tensor *residual = NULL;
    for (int i = 0; i < cfg->n_layer && h; i++) {
        mt_tensor *x = mt_rmsnorm(c, h, residual, m->layers[i].norm_w, cfg->norm_eps, &residual);
        if (x && x->dtype != compute)
            x = mt_cast(c, x, compute);
        mt_model_layer *l = &m->layers[i];
        if (st) {
            mt_tensor *after[MT_BLOCK_MAX_STATE] = {0};
            h = l->kind->forward(c, l->block, cfg, x, &(mt_block_io){.state_in = st->t[i], .state_out = after});
            for (int k = 0; h && k < l->kind->n_state; k++)
                mt_tensor_copy(st->t[i][k], after[k]);
        } else {
            h = m->recompute_blocks ? mt_recompute_block(c, run_mixer, l, x, seq_idx) : run_mixer(c, l, x, seq_idx);
        }
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

mt_tensor *mt_model_logits(mt_ctx *c, mt_model *m, mt_tensor *ids, mt_tensor *seq_idx, mt_dtype compute)
{
    return logits_of(c, m, ids, seq_idx, compute, NULL);
}

bool mt_model_state_init(mt_model_state *s, const mt_model *m, int64_t batch, mt_dtype compute, char *err,
                         size_t errlen)
{
    *s = (mt_model_state){.batch = batch, .n_layer = m->cfg.n_layer};
    if (m->tp.size > 1) {
        snprintf(err, errlen, "generation: a tensor-parallel model has no recurrent state yet");
        return false;
    }
    for (int i = 0; i < m->cfg.n_layer; i++)
        if (m->layers[i].kind->n_state == 0) {
            snprintf(err, errlen, "generation: layer %d (%s) has no recurrent step yet", i, m->layers[i].kind->name);
            return false;
        }
    s->t = calloc(m->cfg.n_layer > 0 ? (size_t)m->cfg.n_layer : 1, sizeof *s->t);
    if (!s->t)
        mt_fatal("out of host memory for the state of %d layers", m->cfg.n_layer);
    for (int i = 0; i < m->cfg.n_layer; i++) {
        const mt_block_kind *kind = m->layers[i].kind;
        for (int k = 0; k < kind->n_state; k++) {
            int64_t shape[MT_MAX_DIMS];
            int ndim = kind->state_shape(&m->cfg, batch, k, shape);
            mt_tensor *t = mt_tensor_new(m->embedding->device, mt_accum_dtype(compute), ndim, shape);
            mt_device_zero(t->device, t->data, mt_nbytes(t));
            s->t[i][k] = t;
        }
    }
    return true;
}

void mt_model_state_zero(mt_model_state *s)
{
    for (int i = 0; i < s->n_layer; i++)
        for (int k = 0; k < MT_BLOCK_MAX_STATE && s->t[i][k]; k++)
            mt_device_zero(s->t[i][k]->device, s->t[i][k]->data, mt_nbytes(s->t[i][k]));
}

void mt_model_state_release(mt_model_state *s)
{
    for (int i = 0; s->t && i < s->n_layer; i++)
        for (int k = 0; k < MT_BLOCK_MAX_STATE; k++)
            if (s->t[i][k])
                mt_tensor_free(s->t[i][k]);
    free(s->t);
    *s = (mt_model_state){0};
}

mt_tensor *mt_model_advance(mt_ctx *c, mt_model *m, mt_tensor *ids, mt_model_state *s, mt_dtype compute)
{
    bool grad = c->grad_enabled;
    c->grad_enabled = false;
    mt_tensor *logits = logits_of(c, m, ids, NULL, compute, s);
    c->grad_enabled = grad;
    return logits;
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
