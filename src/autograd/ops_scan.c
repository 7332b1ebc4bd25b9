/* The Mamba-1 op: the selective scan. */
#include "autograd/op_checks.h"
#include "autograd/ops.h"

enum { SCAN_U, SCAN_DELTA, SCAN_A_LOG, SCAN_B, SCAN_C, SCAN_D, SCAN_Z, SCAN_DELTA_BIAS, SCAN_N_IN };

static void selective_scan_backward(mt_ctx *c, mt_node *n)
{
    mt_tensor **in = n->in, *dgrad[SCAN_N_IN];
    for (int i = 0; i < SCAN_N_IN; i++)
        dgrad[i] = op_grad_if_needed(c, in[i]);
    c->be->selective_scan_bwd(c->be, op_scratch(c), dgrad[SCAN_U], dgrad[SCAN_DELTA], dgrad[SCAN_A_LOG],
                              dgrad[SCAN_B], dgrad[SCAN_C], dgrad[SCAN_D], dgrad[SCAN_Z], dgrad[SCAN_DELTA_BIAS],
                              n->out[0]->grad, n->saved[0], in[SCAN_U], in[SCAN_DELTA], in[SCAN_A_LOG],
                              in[SCAN_B], in[SCAN_C], in[SCAN_D], in[SCAN_Z], in[SCAN_DELTA_BIAS],
                              n->attr.scan.ngroups, n->attr.scan.delta_softplus);
}

/* t must be (batch, seqlen, cols) of u in dtype dt. */
static bool check_like_u(mt_ctx *c, const char *op, const char *name, const mt_tensor *t, const mt_tensor *u,
                         int64_t cols, mt_dtype dt)
{
    char s[96];
    if (!op_check_float(c, op, name, t))
        return false;
    if (t->ndim != 3 || t->shape[0] != u->shape[0] || t->shape[1] != u->shape[1] || t->shape[2] != cols ||
        t->dtype != dt) {
        mt_op_error(c, "%s: %s %s must be (%lld, %lld, %lld) %s", op, name, mt_shape_str(t, s, sizeof s),
                    (long long)u->shape[0], (long long)u->shape[1], (long long)cols, mt_dtype_name(dt));
        return false;
    }
    return true;
}

mt_tensor *mt_selective_scan(mt_ctx *c, mt_tensor *u, mt_tensor *delta, mt_tensor *A_log, mt_tensor *Bm,
                             mt_tensor *Cm, mt_tensor *D, mt_tensor *z, mt_tensor *delta_bias,
                             const mt_scan_config *cfg)
{
    const char *op = "mt_selective_scan";
    char s[96];
    if (!op_check_float(c, op, "u", u))
        return NULL;
    if (!c->be->selective_scan_fwd || !c->be->selective_scan_bwd)
        return mt_op_error(c, "%s: the %s backend has no selective scan kernel",
                           op, c->be->name);
    if (u->ndim != 3)
        return mt_op_error(c, "%s: u %s must be (batch, seqlen, channels)", op, mt_shape_str(u, s, sizeof s));
    int64_t channels = mt_cols(u), G = cfg->ngroups;
    if (G < 1 || channels % G != 0)
        return mt_op_error(c, "%s: ngroups %lld does not divide the channels %lld of u", op, (long long)G,
                           (long long)channels);
    mt_dtype acc = mt_accum_dtype(u->dtype);
    if (!op_check_float(c, op, "Bm", Bm))
        return NULL;
    if (Bm->ndim != 3 || mt_cols(Bm) % G != 0 || mt_cols(Bm) == 0)
        return mt_op_error(c, "%s: Bm %s must be (batch, seqlen, ngroups * d_state) with ngroups %lld", op,
                           mt_shape_str(Bm, s, sizeof s), (long long)G);
    int64_t GN = mt_cols(Bm), N = GN / G;
    if (!check_like_u(c, op, "delta", delta, u, channels, u->dtype) ||
        !check_like_u(c, op, "Bm", Bm, u, GN, u->dtype) || !check_like_u(c, op, "Cm", Cm, u, GN, u->dtype) ||
        (z && !check_like_u(c, op, "z", z, u, channels, u->dtype)))
        return NULL;
    if (!op_check_float(c, op, "A_log", A_log))
        return NULL;
    if (A_log->ndim != 2 || A_log->shape[0] != channels || A_log->shape[1] != N || A_log->dtype != acc ||
        !mt_is_contiguous(A_log))
        return mt_op_error(c, "%s: A_log %s must be contiguous (%lld, %lld) %s", op, mt_shape_str(A_log, s, sizeof s),
                           (long long)channels, (long long)N, mt_dtype_name(acc));
    if ((D && !op_check_vector(c, op, "D", D, channels, acc)) ||
        (delta_bias && !op_check_vector(c, op, "delta_bias", delta_bias, channels, acc)))
        return NULL;

    mt_tensor *y = mt_ctx_tensor(c, u->dtype, 3, u->shape), *in[SCAN_N_IN] = {u, delta, A_log, Bm, Cm, D, z, delta_bias};
    /* Where the backend can leave states for the backward and a backward will run. */
    mt_tensor *checkpoint = NULL;
    bool needs_grad = false;
    for (int i = 0; i < SCAN_N_IN; i++)
        needs_grad |= in[i] && in[i]->requires_grad;
    if (c->grad_enabled && needs_grad && c->be->selective_scan_checkpoint) {
        int64_t size = c->be->selective_scan_checkpoint(c->be, u->shape[0], u->shape[1], channels, N);
        if (size > 0)
            checkpoint = mt_ctx_tensor(c, MT_F32, 1, &size);
    }
    c->be->selective_scan_fwd(c->be, op_scratch(c), y, checkpoint, u, delta, A_log, Bm, Cm, D, z, delta_bias,
                              cfg->ngroups, cfg->delta_softplus);
    mt_node *n = mt_tape_record(c, op, selective_scan_backward, SCAN_N_IN, in, 1, &y);
    if (n) {
        n->attr.scan.ngroups = cfg->ngroups;
        n->attr.scan.delta_softplus = cfg->delta_softplus;
        n->saved[0] = checkpoint;
    }
    return y;
}
