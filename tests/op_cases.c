/* Every op, as a case the gradient check and the backend comparison run. */
#include "testlib.h"

static int run_embedding(mt_ctx *c, mt_tensor **in, mt_tensor **out)
{
    out[0] = mt_embedding(c, in[0], in[1]);
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

#define X(...) {__VA_ARGS__}
#define FLOAT_IN(n, k, nd, s, l, a, b) {.name = n, .kind = k, .ndim = nd, .small = s, .large = l, .lo = a, .hi = b}
#define IDS_IN(n, k, nd, s, l, li, ld) \
    {.name = n, .kind = k, .ndim = nd, .small = s, .large = l, .limit_in = li, .limit_dim = ld}

const tl_case tl_cases[] = {
    {"embedding", 2,
     {FLOAT_IN("weight", TL_FLOAT, 2, X(11, 6), X(1000, 96), -1, 1),
      IDS_IN("ids", TL_IDS, 2, X(2, 5), X(4, 333), 0, 0)},
     run_embedding},
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
    {"cross_entropy", 2,
     {FLOAT_IN("logits", TL_FLOAT, 2, X(6, 10), X(257, 5003), -4, 4),
      IDS_IN("targets", TL_TARGETS, 1, X(6), X(257), 0, 1)},
     run_cross_entropy},
    {"cast", 1, {FLOAT_IN("x", TL_FLOAT, 2, X(3, 5), X(77, 1001), -3, 3)}, run_cast},
};

const int tl_n_cases = sizeof tl_cases / sizeof tl_cases[0];
