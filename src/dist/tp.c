#include "dist/tp.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/device.h"
#include "core/error.h"

bool mt_tp_check(const mt_model_config *cfg, int tp_size, char *err, size_t errlen)
{
    if (tp_size < 1)
        return mt_errorf(err, errlen, "tensor parallel size %d must be at least 1", tp_size);
    if (tp_size == 1)
        return true;
    if (cfg->layer != MT_LAYER_MAMBA2)
        return mt_errorf(err, errlen, "tensor parallel size %d needs the Mamba-2 block, but the layer is Mamba1",
                         tp_size);
    if (cfg->nheads % tp_size != 0)
        return mt_errorf(err, errlen, "nheads %d is not divisible by the tensor parallel size %d", cfg->nheads,
                         tp_size);
    if (cfg->ngroups % tp_size != 0 && tp_size % cfg->ngroups != 0)
        return mt_errorf(err, errlen,
                         "ngroups %d must be divisible by the tensor parallel size %d (B and C split by groups) "
                         "or divide it (B and C replicated, each rank's heads in one group)",
                         cfg->ngroups, tp_size);
    if (cfg->vocab_padded % tp_size != 0)
        return mt_errorf(err, errlen,
                         "the padded vocabulary %d (vocab_size %d rounded up to pad_vocab_size_multiple %d) is not "
                         "divisible by the tensor parallel size %d: the embedding and lm_head are split by rows",
                         cfg->vocab_padded, cfg->vocab_size, cfg->pad_vocab_size_multiple, tp_size);
    return true;
}

mt_tp_dims mt_tp_dims_of(const mt_model_config *cfg, int size, int rank)
{
    mt_tp_dims d = {.d_inner = cfg->d_inner / size, .nheads = cfg->nheads / size};
    d.bc_sharded = cfg->ngroups % size == 0;
    d.groups = d.bc_sharded ? cfg->ngroups / size : cfg->ngroups;
    d.bc = (int64_t)d.groups * cfg->d_state;
    d.head_group = d.bc_sharded ? 0 : rank * cfg->ngroups / size;
    return d;
}

/* The part of name after ".mixer." for a mixer parameter, else NULL. */
static const char *mixer_key(const char *name)
{
    const char *m = strstr(name, ".mixer.");
    return m && strncmp(name, "backbone.layers.", 16) == 0 ? m + 7 : NULL;
}

static void add_segment(mt_tp_layout *l, int64_t local, int64_t full, int64_t len)
{
    l->local[l->n] = local;
    l->full[l->n] = full;
    l->len[l->n] = len;
    l->n++;
}

/* The [x | B | C] channels of the conv (unit elements per channel), or of
 * in_proj's rows after z (shifted by `at` locally and `full_at` in full). */
static void xbc_segments(mt_tp_layout *l, const mt_model_config *cfg, const mt_tp_dims *d, int rank, int64_t at,
                         int64_t full_at, int64_t unit)
{
    int64_t di = cfg->d_inner, gn = (int64_t)cfg->ngroups * cfg->d_state;
    int64_t bc_off = d->bc_sharded ? rank * d->bc : 0;
    add_segment(l, at * unit, (full_at + rank * d->d_inner) * unit, d->d_inner * unit);
    add_segment(l, (at + d->d_inner) * unit, (full_at + di + bc_off) * unit, d->bc * unit);
    add_segment(l, (at + d->d_inner + d->bc) * unit, (full_at + di + gn + bc_off) * unit, d->bc * unit);
    if (!d->bc_sharded) {
        l->partial_begin = (at + d->d_inner) * unit;
        l->partial_count = 2 * d->bc * unit;
    }
}

bool mt_tp_layout_of(const mt_model_config *cfg, int size, int rank, const char *name, mt_tp_layout *l)
{
    if (size <= 1 || cfg->layer != MT_LAYER_MAMBA2)
        return false;
    if (strcmp(name, "backbone.embedding.weight") == 0 || strcmp(name, "lm_head.weight") == 0) {
        int64_t rows = (int64_t)(cfg->vocab_padded / size) * cfg->d_model; /* its vocabulary rows, as one run */
        *l = (mt_tp_layout){.rows = 1, .local_row = rows, .full_row = rows * size};
        add_segment(l, 0, rank * rows, rows);
        return true;
    }
    const char *key = mixer_key(name);
    if (!key)
        return false;
    mt_tp_dims d = mt_tp_dims_of(cfg, size, rank);
    int64_t di = cfg->d_inner, gn = (int64_t)cfg->ngroups * cfg->d_state, D = cfg->d_model, W = cfg->d_conv;
    int64_t conv_l = d.d_inner + 2 * d.bc, in_l = d.d_inner + conv_l + d.nheads;
    *l = (mt_tp_layout){.rows = 1};
    if (strcmp(key, "in_proj.weight") == 0) {
        add_segment(l, 0, rank * d.d_inner * D, d.d_inner * D); /* z */
        xbc_segments(l, cfg, &d, rank, d.d_inner, di, D);
        add_segment(l, (d.d_inner + conv_l) * D, (2 * di + 2 * gn + rank * d.nheads) * D, d.nheads * D); /* dt */
        l->local_row = in_l * D;
        l->full_row = (int64_t)cfg->in_proj_dim * D;
    } else if (strcmp(key, "conv1d.weight") == 0 || strcmp(key, "conv1d.bias") == 0) {
        int64_t unit = strcmp(key, "conv1d.weight") == 0 ? W : 1;
        xbc_segments(l, cfg, &d, rank, 0, 0, unit);
        l->local_row = conv_l * unit;
        l->full_row = (int64_t)cfg->conv_dim * unit;
    } else if (strcmp(key, "dt_bias") == 0 || strcmp(key, "A_log") == 0 || strcmp(key, "D") == 0) {
        add_segment(l, 0, rank * d.nheads, d.nheads);
        l->local_row = d.nheads;
        l->full_row = cfg->nheads;
    } else if (strcmp(key, "norm.weight") == 0) {
        add_segment(l, 0, rank * d.d_inner, d.d_inner);
        l->local_row = d.d_inner;
        l->full_row = di;
    } else if (strcmp(key, "out_proj.weight") == 0) {
        add_segment(l, 0, rank * d.d_inner, d.d_inner); /* its input columns, in every row */
        l->rows = D;
        l->local_row = d.d_inner;
        l->full_row = di;
    } else {
        return false;
    }
    return true;
}

void mt_tp_copy_param(const mt_tp_layout *l, mt_device dev, void *local, void *full, size_t es, bool to_full)
{
    for (int64_t r = 0; r < l->rows; r++)
        for (int i = 0; i < l->n; i++) {
            char *lp = (char *)local + (size_t)(r * l->local_row + l->local[i]) * es;
            char *fp = (char *)full + (size_t)(r * l->full_row + l->full[i]) * es;
            size_t bytes = (size_t)l->len[i] * es;
            if (to_full)
                mt_device_copy(dev, fp, dev, lp, bytes);
            else
                mt_device_copy(dev, lp, dev, fp, bytes);
        }
}

/* Slice (to_full false) or unslice every parameter of local. */
static bool map_params(const mt_model_config *cfg, int size, int rank, const mt_params *full, char *full_buf,
                       const mt_params *local, char *local_buf, bool to_full, char *err, size_t errlen)
{
    if (full->dtype != local->dtype)
        return mt_errorf(err, errlen, "TP slicing: the full store is %s, the local one %s",
                         mt_dtype_name(full->dtype), mt_dtype_name(local->dtype));
    if (size < 1 || rank < 0 || rank >= size)
        return mt_errorf(err, errlen, "TP slicing: rank %d is not in a group of %d", rank, size);
    const size_t es = mt_dtype_size(full->dtype);
    for (int i = 0; i < local->n; i++) {
        const mt_param *q = local->items[i], *f = mt_params_find(full, q->name);
        if (!f)
            return mt_errorf(err, errlen, "TP slicing: parameter %s is not in the full model", q->name);
        int64_t ln = mt_numel(&q->value), fn = mt_numel(&f->value);
        char *lp = local_buf + q->offset * es, *fp = full_buf + f->offset * es;
        mt_tp_layout l;
        if (!mt_tp_layout_of(cfg, size, rank, q->name, &l)) {
            if (ln != fn)
                return mt_errorf(err, errlen, "TP slicing: replicated parameter %s has %lld elements, the full %lld",
                                 q->name, (long long)ln, (long long)fn);
            mt_tp_copy_param(&(mt_tp_layout){.n = 1, .len = {ln}, .rows = 1}, MT_CPU, lp, fp, es, to_full);
            continue;
        }
        if (ln != l.rows * l.local_row || fn != l.rows * l.full_row)
            return mt_errorf(err, errlen,
                             "TP slicing: %s has %lld elements and %lld in the full model; rank %d of %d of this "
                             "config needs %lld and %lld",
                             q->name, (long long)ln, (long long)fn, rank, size, (long long)(l.rows * l.local_row),
                             (long long)(l.rows * l.full_row));
        mt_tp_copy_param(&l, MT_CPU, lp, fp, es, to_full);
    }
    return true;
}

bool mt_tp_slice(const mt_model_config *cfg, int size, int rank, const mt_params *full, const void *full_buf,
                 const mt_params *local, void *local_buf, char *err, size_t errlen)
{
    /* Only local_buf is written (to_full false). */
    return map_params(cfg, size, rank, full, (char *)full_buf, local, local_buf, false, err, errlen);
}

bool mt_tp_unslice(const mt_model_config *cfg, int size, int rank, const mt_params *local, const void *local_buf,
                   const mt_params *full, void *full_buf, char *err, size_t errlen)
{
    /* Only full_buf is written (to_full true). */
    return map_params(cfg, size, rank, full, full_buf, local, (char *)local_buf, true, err, errlen);
}

bool mt_tp_reduce_partial_grads(mt_comm *tp, mt_params *local, char *err, size_t errlen)
{
    if (!tp || tp->world == 1)
        return true;
    const size_t es = mt_dtype_size(local->dtype);
    for (int i = 0; i < local->n; i++) {
        const mt_param *q = local->items[i];
        if ((q->flags & MT_PARAM_TP_PARTIAL_GRAD) && q->partial_count &&
            !tp->all_reduce(tp, (char *)local->grads + (q->offset + q->partial_begin) * es, q->partial_count,
                            local->dtype, err, errlen))
            return false;
    }
    return true;
}

/* Runs of the flat gradient buffer of one kind, sharded or replicated,
 * alignment padding (zero) included, collected and then summed in one
 * backend call (one device wait for all of them). */
typedef struct runs {
    int n, cap;
    size_t *begin, *count;
    int *kind;     /* 0 sharded, 1 replicated */
    size_t lo, hi; /* the range summed */
} runs;

/* Elements [begin, end) of the flat buffer, clipped to the range summed,
 * are of kind: the open run grows, or a new one starts. */
static void run_add(runs *s, int kind, size_t begin, size_t end)
{
    begin = begin < s->lo ? s->lo : begin;
    end = end > s->hi ? s->hi : end;
    if (begin >= end)
        return;
    if (s->n && s->kind[s->n - 1] == kind) {
        s->count[s->n - 1] = end - s->begin[s->n - 1];
        return;
    }
    if (s->n == s->cap) {
        s->cap = s->cap ? 2 * s->cap : 64;
        s->begin = realloc(s->begin, (size_t)s->cap * sizeof *s->begin);
        s->count = realloc(s->count, (size_t)s->cap * sizeof *s->count);
        s->kind = realloc(s->kind, (size_t)s->cap * sizeof *s->kind);
        if (!s->begin || !s->count || !s->kind)
            mt_fatal("tensor parallel gradient norm: out of host memory for %d runs", s->cap);
    }
    s->begin[s->n] = begin;
    s->count[s->n] = end - begin;
    s->kind[s->n++] = kind;
}

void mt_tp_grad_sumsq(mt_backend *be, const mt_params *local, size_t begin, size_t end, double sq[2])
{
    runs s = {.lo = begin, .hi = end};
    for (int i = 0; i < local->n; i++) {
        const mt_param *q = local->items[i];
        int kind = (q->flags & MT_PARAM_TP_SHARDED) ? 0 : 1;
        size_t b = q->offset, n = (size_t)mt_numel(&q->value);
        size_t pb = q->flags & MT_PARAM_TP_PARTIAL_GRAD ? q->partial_begin : n;
        size_t pe = q->flags & MT_PARAM_TP_PARTIAL_GRAD ? q->partial_begin + q->partial_count : n;
        run_add(&s, kind, b, b + pb);
        run_add(&s, 1, b + pb, b + pe);
        run_add(&s, kind, b + pe, b + n);
    }
    double *sums = malloc((size_t)(s.n ? s.n : 1) * sizeof *sums);
    if (!sums)
        mt_fatal("tensor parallel gradient norm: out of host memory for %d runs", s.n);
    mt_tensor flat = mt_params_flat_grads(local);
    be->sumsq_ranges(be, &flat, s.n, s.begin, s.count, sums);
    for (int i = 0; i < s.n; i++) /* in buffer order, as one sum per kind */
        sq[s.kind[i]] += sums[i];
    free(sums);
    free(s.begin);
    free(s.count);
    free(s.kind);
}

bool mt_tp_grad_norm(mt_comm *tp, mt_backend *be, const mt_params *local, double *norm, char *err, size_t errlen)
{
    double sq[2] = {0, 0};
    mt_tp_grad_sumsq(be, local, 0, local->flat_size, sq);
    if (tp && tp->world > 1 && !tp->all_reduce(tp, &sq[0], 1, MT_F64, err, errlen))
        return false;
    *norm = sqrt(sq[0] + sq[1]);
    return true;
}
