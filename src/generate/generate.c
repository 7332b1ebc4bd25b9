#include "generate/generate.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/device.h"
#include "core/error.h"

/* Columns [from, from + len) of batch host rows of stride ids, packed in
 * `packed` (batch * len), into dst (batch, len) on its device. */
static void ids_to(mt_tensor *dst, int32_t *packed, const int32_t *host, int64_t batch, int64_t len, int64_t stride,
                   int64_t from)
{
    for (int64_t b = 0; b < batch; b++)
        memcpy(packed + b * len, host + b * stride + from, (size_t)len * sizeof(int32_t));
    mt_device_copy(dst->device, dst->data, MT_CPU, packed, (size_t)(batch * len) * sizeof(int32_t));
}

bool mt_generate(mt_backend *be, mt_model *m, const int32_t *prompt, int64_t batch, int64_t prompt_len,
                 const mt_generate_config *cfg, int32_t *out, mt_generate_result *res, char *err, size_t errlen)
{
    *res = (mt_generate_result){0};
    if (batch < 1 || prompt_len < 1 || cfg->max_new_tokens < 0) {
        snprintf(err, errlen, "generation: %lld prompts of %lld tokens, %lld new tokens: each must be positive",
                 (long long)batch, (long long)prompt_len, (long long)cfg->max_new_tokens);
        return false;
    }
    if (!mt_sampling_check(&cfg->sampling, err, errlen))
        return false;
    const int64_t vocab = m->cfg.vocab_size, padded = m->cfg.vocab_padded, width = prompt_len + cfg->max_new_tokens;
    for (int64_t i = 0; i < batch * prompt_len; i++)
        if (prompt[i] < 0 || prompt[i] >= vocab) {
            snprintf(err, errlen, "generation: prompt token %d at %lld is outside the vocabulary of %lld", prompt[i],
                     (long long)i, (long long)vocab);
            return false;
        }
    mt_model_state st;
    if (!mt_model_state_init(&st, m, batch, cfg->compute, err, errlen))
        return false;
    for (int64_t b = 0; b < batch; b++)
        memcpy(out + b * width, prompt + b * prompt_len, (size_t)prompt_len * sizeof(int32_t));
    mt_ctx c;
    mt_ctx_init(&c, be, 0);
    c.grad_enabled = false;
    c.abort_on_error = false;
    mt_sample_work w;
    mt_sample_work_init(&w, vocab);
    float *row = malloc((size_t)vocab * sizeof *row);
    bool *done = calloc((size_t)batch, sizeof *done);
    int32_t *packed = malloc((size_t)(batch * prompt_len) * sizeof *packed);
    if (!row || !done || !packed)
        mt_fatal("generation: out of host memory for %lld rows", (long long)batch);

    /* Made once: the prompts' ids, each step's, one logits row on the host. */
    const mt_device dev = m->embedding->device;
    mt_tensor *prompt_ids = mt_tensor_new(dev, MT_I32, 2, (int64_t[]){batch, prompt_len});
    mt_tensor *step_ids = mt_tensor_new(dev, MT_I32, 2, (int64_t[]){batch, 1});
    mt_tensor *host_row = mt_tensor_new(MT_CPU, cfg->compute, 1, (int64_t[]){vocab});
    const size_t es = mt_dtype_size(cfg->compute);

    double t0 = mt_clock_s(), t1 = t0;
    ids_to(prompt_ids, packed, prompt, batch, prompt_len, prompt_len, 0);
    mt_tensor *logits = mt_model_advance(&c, m, prompt_ids, &st, cfg->compute);
    int64_t len = prompt_len, last = prompt_len - 1; /* the row of each sequence's newest position */
    bool ok = logits != NULL;
    for (int64_t n = 0; ok && n < cfg->max_new_tokens; n++) {
        const int64_t rows_per = logits->shape[0] / batch;
        bool all_done = true;
        for (int64_t b = 0; b < batch; b++) {
            int32_t *seq = out + b * width;
            if (done[b]) {
                seq[len] = cfg->eos_id;
                continue;
            }
            mt_device_copy(MT_CPU, host_row->data, dev, (char *)logits->data + (b * rows_per + last) * padded * es,
                           (size_t)vocab * es);
            for (int64_t v = 0; v < vocab; v++)
                row[v] = (float)mt_get(host_row, v);
            seq[len] = (int32_t)mt_sample(&cfg->sampling, row, vocab, seq, len, (uint64_t)(n * batch + b), &w);
            if (cfg->on_token)
                cfg->on_token(cfg->user, b, seq[len]);
            done[b] = seq[len] == cfg->eos_id;
            all_done &= done[b];
        }
        len++;
        res->new_tokens = n + 1;
        if (n == 0)
            t1 = mt_clock_s();
        mt_ctx_end_step(&c);
        if (all_done || n + 1 == cfg->max_new_tokens)
            break;
        ids_to(step_ids, packed, out, batch, 1, width, len - 1);
        logits = mt_model_advance(&c, m, step_ids, &st, cfg->compute);
        last = 0;
        ok = logits != NULL;
    }
    be->synchronize(be);
    double t2 = mt_clock_s();
    res->prefill_ms = 1e3 * ((res->new_tokens ? t1 : t2) - t0);
    res->decode_ms = res->new_tokens ? 1e3 * (t2 - t1) : 0;
    for (int64_t b = 0; b < batch; b++) /* rows that stopped early, padded to the end */
        for (int64_t i = len; i < width; i++)
            out[b * width + i] = cfg->eos_id;
    if (!ok)
        snprintf(err, errlen, "generation: %s", mt_ctx_error(&c) ? mt_ctx_error(&c) : "the forward failed");
    mt_tensor_free(prompt_ids);
    mt_tensor_free(step_ids);
    mt_tensor_free(host_row);
    free(row);
    free(done);
    free(packed);
    mt_sample_work_release(&w);
    mt_ctx_release(&c);
    mt_model_state_release(&st);
    return ok;
}
