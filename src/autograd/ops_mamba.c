/* The Mamba-2 ops: causal conv1d, the SSD scan, the gated output norm. */
#include <math.h>

#include "autograd/op_checks.h"
#include "autograd/ops.h"

/* ---- causal conv1d + SiLU ---- */

/* A conv state: contiguous (batch, channels, width - 1) in acc. */
static bool check_conv_state(mt_ctx *c, const char *op, const mt_tensor *t, int64_t batch, int64_t channels,
                             int64_t width, mt_dtype acc)
{
    char s[96];
    if (!op_check_float(c, op, "init_state", t))
        return false;
    if (t->ndim == 3 && t->shape[0] == batch && t->shape[1] == channels && t->shape[2] == width - 1 &&
        t->dtype == acc && mt_is_contiguous(t))
        return true;
    mt_op_error(c, "%s: init_state %s must be contiguous (%lld, %lld, %lld) %s", op, mt_shape_str(t, s, sizeof s),
                (long long)batch, (long long)channels, (long long)(width - 1), mt_dtype_name(acc));
    return false;
}

static void conv1d_backward(mt_ctx *c, mt_node *n)
{
    mt_tensor *x = n->in[0], *w = n->in[1], *b = n->in[2], *state = n->in[3];
    c->be->conv1d_bwd(c->be, op_scratch(c), op_grad_if_needed(c, x), op_grad_if_needed(c, w),
                      op_grad_if_needed(c, b), op_grad_if_needed(c, state), n->out[0]->grad, x, w, b, state,
                      n->in[4]);
}

static void conv1d_recompute(mt_ctx *c, mt_node *n)
{
    c->be->conv1d_fwd(c->be, n->out[0], n->in[0], n->in[1], n->in[2], n->in[3], n->in[4]);
}

mt_tensor *mt_conv1d_silu(mt_ctx *c, mt_tensor *x, mt_tensor *weight, mt_tensor *bias, mt_tensor *init_state,
                          mt_tensor *seq_idx)
{
    const char *op = "mt_conv1d_silu";
    char s[96], t[96];
    if (!op_check_float(c, op, "x", x) || !op_check_float(c, op, "weight", weight))
        return NULL;
    mt_dtype acc = mt_accum_dtype(x->dtype);
    int64_t channels = mt_cols(x), width = weight->shape[weight->ndim - 1];
    if (x->ndim != 3)
        return mt_op_error(c, "%s: x %s must be (batch, seqlen, channels)", op, mt_shape_str(x, s, sizeof s));
    bool weight_ok = (weight->ndim == 2 || (weight->ndim == 3 && weight->shape[1] == 1)) &&
                     weight->shape[0] == channels && width >= 1 && width <= 4 && weight->dtype == acc &&
                     mt_is_contiguous(weight);
    if (!weight_ok)
        return mt_op_error(c, "%s: weight %s must be contiguous (%lld, 1, W) or (%lld, W) %s with W <= 4 for x %s",
                           op, mt_shape_str(weight, s, sizeof s), (long long)channels, (long long)channels,
                           mt_dtype_name(acc), mt_shape_str(x, t, sizeof t));
    if (bias && !op_check_vector(c, op, "bias", bias, channels, acc))
        return NULL;
    int64_t batch = x->shape[0], seqlen = x->shape[1];
    if (init_state && !check_conv_state(c, op, init_state, batch, channels, width, acc))
        return NULL;
    if (seq_idx && (!op_check_ids(c, op, "seq_idx", seq_idx) || seq_idx->ndim != 2 ||
                    seq_idx->shape[0] != batch || seq_idx->shape[1] != seqlen))
        return mt_op_error(c, "%s: seq_idx %s must be (%lld, %lld) i32", op, mt_shape_str(seq_idx, s, sizeof s),
                           (long long)batch, (long long)seqlen);
    mt_tensor *in[] = {x, weight, bias, init_state, seq_idx};
    mt_tensor *out = mt_ctx_transient(c, x->dtype, 3, x->shape, 5, in);
    c->be->conv1d_fwd(c->be, out, x, weight, bias, init_state, seq_idx);
    mt_tape_set_recompute(c, mt_tape_record(c, op, conv1d_backward, 5, in, 1, &out), conv1d_recompute);
    return out;
}

/* ---- the conv1d state after a sequence ---- */

static void conv1d_final_state_backward(mt_ctx *c, mt_node *n)
{
    c->be->conv1d_final_state_bwd(c->be, op_grad_if_needed(c, n->in[0]), op_grad_if_needed(c, n->in[1]),
                                  n->out[0]->grad, n->in[0]);
}

mt_tensor *mt_conv1d_final_state(mt_ctx *c, mt_tensor *x, mt_tensor *init_state, int width)
{
    const char *op = "mt_conv1d_final_state";
    char s[96];
    if (!op_check_float(c, op, "x", x))
        return NULL;
    if (x->ndim != 3 || width < 2 || width > 4)
        return mt_op_error(c, "%s: x %s must be (batch, seqlen, channels) and the width %d in [2, 4]", op,
                           mt_shape_str(x, s, sizeof s), width);
    mt_dtype acc = mt_accum_dtype(x->dtype);
    int64_t shape[3] = {x->shape[0], mt_cols(x), width - 1};
    if (init_state && !check_conv_state(c, op, init_state, shape[0], shape[1], width, acc))
        return NULL;
    mt_tensor *out = mt_ctx_tensor(c, acc, 3, shape);
    c->be->conv1d_final_state_fwd(c->be, out, x, init_state);
    mt_tape_record(c, op, conv1d_final_state_backward, 2, (mt_tensor *[]){x, init_state}, 1, &out);
    return out;
}

/* ---- SSD scan ---- */

enum { SSD_X, SSD_DT, SSD_A_LOG, SSD_B, SSD_C, SSD_D, SSD_Z, SSD_DT_BIAS, SSD_INIT, SSD_SEQ_IDX, SSD_N_IN };

static mt_ssd_inputs ssd_inputs(mt_tensor *const *in, const mt_ssd_config *cfg)
{
    return (mt_ssd_inputs){.x = in[SSD_X], .dt = in[SSD_DT], .A_log = in[SSD_A_LOG], .Bm = in[SSD_B],
                           .Cm = in[SSD_C], .D = in[SSD_D], .z = in[SSD_Z], .dt_bias = in[SSD_DT_BIAS],
                           .init_state = in[SSD_INIT], .seq_idx = in[SSD_SEQ_IDX], .cfg = *cfg};
}

static void ssd_backward(mt_ctx *c, mt_node *n)
{
    mt_tensor **in = n->in;
    const mt_ssd_grads grads = {
        .dx = op_grad_if_needed(c, in[SSD_X]), .ddt = op_grad_if_needed(c, in[SSD_DT]),
        .dA_log = op_grad_if_needed(c, in[SSD_A_LOG]), .dBm = op_grad_if_needed(c, in[SSD_B]),
        .dCm = op_grad_if_needed(c, in[SSD_C]), .dD = op_grad_if_needed(c, in[SSD_D]),
        .dz = op_grad_if_needed(c, in[SSD_Z]), .ddt_bias = op_grad_if_needed(c, in[SSD_DT_BIAS]),
        .dinit_state = op_grad_if_needed(c, in[SSD_INIT])};
    const mt_ssd_inputs inputs = ssd_inputs(in, &n->attr.ssd);
    c->be->ssd_bwd(c->be, op_scratch(c), &grads, n->out[0]->grad, n->n_out > 1 ? n->out[1]->grad : NULL, &inputs);
}

/* t must be (batch, seqlen, cols) in dtype dt. */
static bool check_btc(mt_ctx *c, const char *op, const char *name, const mt_tensor *t, const mt_tensor *x,
                      int64_t cols, mt_dtype dt)
{
    char s[96];
    if (!op_check_float(c, op, name, t))
        return false;
    if (t->ndim != 3 || t->shape[0] != x->shape[0] || t->shape[1] != x->shape[1] || t->shape[2] != cols ||
        t->dtype != dt) {
        mt_op_error(c, "%s: %s %s must be (%lld, %lld, %lld) %s", op, name, mt_shape_str(t, s, sizeof s),
                    (long long)x->shape[0], (long long)x->shape[1], (long long)cols, mt_dtype_name(dt));
        return false;
    }
    return true;
}

mt_tensor *mt_ssd(mt_ctx *c, mt_tensor *x, mt_tensor *dt, mt_tensor *A_log, mt_tensor *Bm, mt_tensor *Cm,
                  mt_tensor *D, mt_tensor *z, mt_tensor *dt_bias, mt_tensor *init_state, mt_tensor *seq_idx,
                  const mt_ssd_config *cfg, mt_tensor **final_state)
{
    const char *op = "mt_ssd";
    char s[96];
    if (final_state)
        *final_state = NULL;
    if (!op_check_float(c, op, "x", x))
        return NULL;
    if (x->ndim != 3)
        return mt_op_error(c, "%s: x %s must be (batch, seqlen, nheads * headdim)", op, mt_shape_str(x, s, sizeof s));
    int64_t P = cfg->headdim, G = cfg->ngroups, HP = mt_cols(x);
    if (P < 1 || HP % P != 0)
        return mt_op_error(c, "%s: x %s: last dim is not a multiple of headdim %lld", op,
                           mt_shape_str(x, s, sizeof s), (long long)P);
    int64_t H = HP / P;
    if (G < 1 || H % G != 0)
        return mt_op_error(c, "%s: ngroups %lld does not divide nheads %lld", op, (long long)G, (long long)H);
    if (cfg->chunk_size < 16 || cfg->chunk_size > 256)
        return mt_op_error(c, "%s: chunk_size %d is outside [16, 256]", op, cfg->chunk_size);
    if (!(cfg->dt_min >= 0) || !(cfg->dt_max > cfg->dt_min))
        return mt_op_error(c, "%s: dt limits [%g, %g] are not an interval in [0, inf]", op, cfg->dt_min,
                           cfg->dt_max);
    mt_dtype acc = mt_accum_dtype(x->dtype);
    if (!Bm || Bm->ndim != 3 || mt_cols(Bm) % G != 0)
        return mt_op_error(c, "%s: Bm %s must be (batch, seqlen, ngroups * d_state) with ngroups %lld", op,
                           Bm ? mt_shape_str(Bm, s, sizeof s) : "NULL", (long long)G);
    int64_t GN = mt_cols(Bm);
    if (!check_btc(c, op, "dt", dt, x, H, x->dtype) || !check_btc(c, op, "Bm", Bm, x, GN, x->dtype) ||
        !check_btc(c, op, "Cm", Cm, x, GN, x->dtype) || (z && !check_btc(c, op, "z", z, x, HP, x->dtype)))
        return NULL;
    if (!op_check_vector(c, op, "A_log", A_log, H, acc) || !op_check_vector(c, op, "dt_bias", dt_bias, H, acc))
        return NULL;
    if (D && !op_check_vector(c, op, "D", D, mt_numel(D) == HP ? HP : H, acc))
        return NULL;
    if (init_state) {
        if (!op_check_float(c, op, "init_state", init_state))
            return NULL;
        int64_t want[4] = {x->shape[0], H, P, GN / G};
        bool ok = init_state->ndim == 4 && init_state->dtype == acc && mt_is_contiguous(init_state);
        for (int i = 0; ok && i < 4; i++)
            ok = init_state->shape[i] == want[i];
        if (!ok)
            return mt_op_error(c, "%s: init_state %s must be contiguous (%lld, %lld, %lld, %lld) %s", op,
                               mt_shape_str(init_state, s, sizeof s), (long long)want[0], (long long)want[1],
                               (long long)want[2], (long long)want[3], mt_dtype_name(acc));
    }
    if (seq_idx && (!op_check_ids(c, op, "seq_idx", seq_idx) || seq_idx->ndim != 2 ||
                    seq_idx->shape[0] != x->shape[0] || seq_idx->shape[1] != x->shape[1]))
        return mt_op_error(c, "%s: seq_idx %s must be (%lld, %lld) i32", op, mt_shape_str(seq_idx, s, sizeof s),
                           (long long)x->shape[0], (long long)x->shape[1]);

    mt_tensor *y = mt_ctx_tensor(c, x->dtype, 3, x->shape);
    mt_tensor *last = NULL;
    if (final_state)
        last = mt_ctx_tensor(c, acc, 4, (int64_t[]){x->shape[0], H, P, GN / G});
    mt_tensor *in[SSD_N_IN] = {x, dt, A_log, Bm, Cm, D, z, dt_bias, init_state, seq_idx};
    const mt_ssd_inputs inputs = ssd_inputs(in, cfg);
    c->be->ssd_fwd(c->be, op_scratch(c), y, last, &inputs);
    mt_node *n = mt_tape_record(c, op, ssd_backward, SSD_N_IN, in, last ? 2 : 1, (mt_tensor *[]){y, last});
    if (n)
        n->attr.ssd = *cfg;
    if (final_state)
        *final_state = last;
    return y;
}

/* ---- gated RMSNorm ---- */

static void gated_rmsnorm_backward(mt_ctx *c, mt_node *n)
{
    mt_tensor *y = n->in[0], *z = n->in[1], *w = n->in[2];
    c->be->gated_rmsnorm_bwd(c->be, op_scratch(c), op_grad_if_needed(c, y), op_grad_if_needed(c, z),
                             op_grad_if_needed(c, w), n->out[0]->grad, y, z, w, n->saved[0],
                             n->attr.gated_rmsnorm.ngroups);
}

static void gated_rmsnorm_recompute(mt_ctx *c, mt_node *n)
{
    c->be->gated_rmsnorm_fwd(c->be, n->out[0], n->saved[0], n->in[0], n->in[1], n->in[2],
                             n->attr.gated_rmsnorm.ngroups, n->attr.gated_rmsnorm.eps);
}

mt_tensor *mt_gated_rmsnorm(mt_ctx *c, mt_tensor *y, mt_tensor *z, mt_tensor *weight, int ngroups, double eps)
{
    const char *op = "mt_gated_rmsnorm";
    if (!op_check_float(c, op, "y", y) || !op_check_float(c, op, "z", z) || !op_check_same(c, op, "y", y, "z", z))
        return NULL;
    int64_t e = mt_cols(y);
    if (!op_check_vector(c, op, "weight", weight, e, mt_accum_dtype(y->dtype)))
        return NULL;
    if (ngroups < 1 || e % ngroups != 0)
        return mt_op_error(c, "%s: ngroups %d does not divide the last dim %lld", op, ngroups, (long long)e);
    if (!(eps > 0))
        return mt_op_error(c, "%s: eps must be positive, got %g", op, eps);
    mt_tensor *in[] = {y, z, weight};
    mt_tensor *out = mt_ctx_transient(c, y->dtype, y->ndim, y->shape, 3, in);
    mt_tensor *rstd = mt_ctx_tensor(c, mt_accum_dtype(y->dtype), 2, (int64_t[]){mt_rows(y), ngroups});
    c->be->gated_rmsnorm_fwd(c->be, out, rstd, y, z, weight, ngroups, eps);
    mt_node *n = mt_tape_record(c, op, gated_rmsnorm_backward, 3, in, 1, &out);
    if (n) {
        n->saved[0] = rstd;
        n->attr.gated_rmsnorm.ngroups = ngroups;
        n->attr.gated_rmsnorm.eps = eps;
    }
    mt_tape_set_recompute(c, n, gated_rmsnorm_recompute);
    return out;
}
