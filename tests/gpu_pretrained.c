/* Released weights on the GPU: the transformers fixtures (tests/fixtures,
 * fp32 logits, loss and gradients of HF transformers' plain PyTorch Mamba and
 * Mamba-2) loaded into a CUDA model with fp32 masters and run in bf16, as
 * training runs them: logits, loss and gradients within bf16 bounds of the
 * reference's. Exits 77 (SKIPPED) where no GPU is present. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "io/safetensors.h"
#include "layers/model.h"
#include "testlib.h"

#define BF16_BOUND 1e-2 /* logits and loss, relative, as the other bf16 comparisons */
/* Gradients pass back through every layer's bf16 activations (the reference
 * is fp32 throughout): twice the per-op bound. Measured on an H100: 1.2e-2
 * (Mamba-2), 9.0e-3 (Mamba-1). */
#define BF16_GRAD_BOUND 2e-2

static mt_backend *gpu;

static void check_kind(const char *kind)
{
    mt_model m;
    mt_st_file *ef = tl_load_fixture(&m, kind, "hf", MT_CUDA, MT_F32);
    mt_tensor *tokens = tl_read_st(ef, "tokens"), *ref_logits = tl_read_st(ef, "logits");
    mt_tensor *ref_loss = tl_read_st(ef, "loss");
    mt_tensor *targets = tl_next_token_targets(tokens);
    mt_tensor *ids_d = tl_to_device(tokens, MT_CUDA), *targets_d = tl_to_device(targets, MT_CUDA);

    mt_ctx c;
    mt_ctx_init(&c, gpu, 0);
    mt_tensor *logits = mt_model_logits(&c, &m, ids_d, NULL, MT_BF16);
    mt_tensor *loss = mt_cross_entropy(&c, logits, targets_d, TL_IGNORE);
    mt_backward(&c, loss);
    const double logit_err = tl_rel_err(logits, ref_logits);
    mt_tensor *loss_h = tl_to_device(loss, MT_CPU);
    const double loss_err = fabs(mt_get(loss_h, 0) - mt_get(ref_loss, 0)) / mt_get(ref_loss, 0);
    double grad_err = 0;
    for (int i = 0; i < mt_safetensors_count(ef); i++) {
        const char *name = mt_safetensors_at(ef, i)->name;
        if (strncmp(name, "grad.", 5) != 0)
            continue;
        mt_param *q = mt_params_find(&m.params, name + 5);
        assert_non_null(q);
        mt_tensor *ref = tl_read_st(ef, name);
        const double e = tl_rel_err(&q->grad, ref);
        printf("  %s bf16 %s: rel err %.2e\n", kind, name, e);
        grad_err = fmax(grad_err, e);
        mt_tensor_free(ref);
    }
    printf("equiv pretrained %-6s bf16 logits %.2e loss %.2e grads %.2e (fp32 masters, bf16 compute, against "
           "transformers' fp32)\n", kind, logit_err, loss_err, grad_err);
    assert_true(logit_err <= BF16_BOUND);
    assert_true(loss_err <= BF16_BOUND);
    assert_true(grad_err <= BF16_GRAD_BOUND);

    mt_ctx_release(&c);
    mt_tensor *all[] = {tokens, ref_logits, ref_loss, targets, ids_d, targets_d, loss_h};
    for (int i = 0; i < 7; i++)
        mt_tensor_free(all[i]);
    mt_safetensors_close(ef);
    mt_model_release(&m);
}

static void mamba2_fixture_in_bf16(void **state)
{
    (void)state;
    check_kind("mamba2");
}

/* The dt clamp on the GPU against transformers' (a limit that binds). */
static void mamba2_dt_limit_fixture_in_bf16(void **state)
{
    (void)state;
    check_kind("mamba2-limit");
}

static void mamba1_fixture_in_bf16(void **state)
{
    (void)state;
    check_kind("mamba");
}

int main(void)
{
    gpu = tl_cuda_backend_or_exit();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(mamba2_fixture_in_bf16),
        cmocka_unit_test(mamba2_dt_limit_fixture_in_bf16),
        cmocka_unit_test(mamba1_fixture_in_bf16),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    gpu->destroy(gpu);
    return failed;
}
