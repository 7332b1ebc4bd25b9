#include "generate/generate.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/device.h"
#include "core/error.h"

bool mt_parse_token_ids(const char *list, int32_t **ids, int64_t *n)
{
    *n = 0;
    *ids = malloc((strlen(list) / 2 + 1) * sizeof **ids); /* an id and a separator take 2 characters at least */
    if (!*ids)
        mt_fatal("out of host memory for the token ids \"%.40s\"", list);
    bool ok = true;
    for (const char *p = list + strspn(list, ", \t"); ok && *p; p += strspn(p, ", \t")) {
        char *end;
        errno = 0;
        const long long v = strtoll(p, &end, 10);
        ok = end != p && !errno && *p != '-' && *p != '+' && v <= INT32_MAX && (!*end || strchr(", \t", *end));
        if (ok)
            (*ids)[(*n)++] = (int32_t)v;
        p = end;
    }
    ok &= *n > 0;
    if (!ok) {
        free(*ids);
        *ids = NULL;
        *n = 0;
    }
    return ok;
}

/* Columns [from, from + len) of batch host rows of stride ids, packed in
 * `packed` (batch * len), into dst (batch, len) on its device. */
static void ids_to(mt_tensor *dst, int32_t *packed, const int32_t *host, int64_t batch, int64_t len, int64_t stride,
                   int64_t from)
{
    for (int64_t b = 0; b < batch; b++)
        memcpy(packed + b * len, host + b * stride + from, (size_t)len * sizeof(int32_t));
    mt_device_copy(dst->device, dst->data, MT_CPU, packed, (size_t)(batch * len) * sizeof(int32_t));
}

/* What choosing a token needs: the sampler's scratch, one logits row on the
 * host, and the rows being written (out, rows width apart, cur[b] tokens in
 * row b so far, done[b] once it chose eos_id). */
typedef struct chooser {
    const mt_generate_config *cfg;
    mt_sample_work w;
    float *row;
    mt_tensor *host_row;
    int64_t vocab, padded, width;
    size_t es;
    mt_device dev;
    int32_t *out;
    int64_t *cur;
    bool *done;
} chooser;

/* Row b's next token, the draw-th of the run, from row `row` of logits (on
 * the model's device), appended to it; true when the row has stopped. */
static bool choose(chooser *ch, const mt_tensor *logits, int64_t row, int64_t b, uint64_t draw)
{
    mt_device_copy(MT_CPU, ch->host_row->data, ch->dev, (const char *)logits->data + row * ch->padded * ch->es,
                   (size_t)ch->vocab * ch->es);
    for (int64_t v = 0; v < ch->vocab; v++)
        ch->row[v] = (float)mt_get(ch->host_row, v);
    int32_t *seq = ch->out + b * ch->width;
    const int64_t len = ch->cur[b]++;
    seq[len] = (int32_t)mt_sample(&ch->cfg->sampling, ch->row, ch->vocab, seq, len, draw, &ch->w);
    if (ch->cfg->on_token)
        ch->cfg->on_token(ch->cfg->user, b, seq[len]);
    return ch->done[b] = seq[len] == ch->cfg->eos_id;
}

/* Row b of every tensor of dst (a batch's state) from the batch-1 state src. */
static void state_row_from(mt_model_state *dst, int64_t b, const mt_model_state *src)
{
    for (int i = 0; i < dst->n_layer; i++)
        for (int k = 0; k < MT_BLOCK_MAX_STATE && dst->t[i][k]; k++) {
            const size_t bytes = mt_nbytes(src->t[i][k]);
            mt_device_copy(dst->t[i][k]->device, (char *)dst->t[i][k]->data + (size_t)b * bytes, src->t[i][k]->device,
                           src->t[i][k]->data, bytes);
        }
}

/* The prompts through the model into st, and each row's first new token:
 * together when they have one length, else one at a time (a batch-1 state,
 * copied into row b of st). */
static bool prefill(mt_ctx *c, mt_model *m, const int32_t *prompt, int64_t batch, int64_t prompt_len, bool ragged,
                    mt_model_state *st, chooser *ch, bool *all_done, char *err, size_t errlen)
{
    const mt_generate_config *cfg = ch->cfg;
    const bool choosing = cfg->max_new_tokens > 0;
    *all_done = true;
    if (!ragged) {
        const int64_t n = ch->cur[0];
        mt_tensor *ids = mt_tensor_new(ch->dev, MT_I32, 2, (int64_t[]){batch, n});
        int32_t *packed = malloc((size_t)(batch * n) * sizeof *packed);
        if (!packed)
            mt_fatal("generation: out of host memory for %lld prompts", (long long)batch);
        ids_to(ids, packed, prompt, batch, n, prompt_len, 0);
        free(packed);
        const mt_tensor *logits = mt_model_advance(c, m, ids, st, cfg->compute);
        for (int64_t b = 0; logits && choosing && b < batch; b++)
            *all_done &= choose(ch, logits, b * n + n - 1, b, (uint64_t)b);
        mt_tensor_free(ids);
        mt_ctx_end_step(c);
        return logits != NULL;
    }
    mt_model_state one;
    if (!mt_model_state_init(&one, m, 1, cfg->compute, err, errlen))
        return false;
    bool ok = true;
    for (int64_t b = 0; ok && b < batch; b++) {
        const int64_t n = ch->cur[b];
        mt_tensor *ids = mt_tensor_new(ch->dev, MT_I32, 2, (int64_t[]){1, n});
        mt_device_copy(ch->dev, ids->data, MT_CPU, prompt + b * prompt_len, (size_t)n * sizeof(int32_t));
        if (b > 0)
            mt_model_state_zero(&one);
        const mt_tensor *logits = mt_model_advance(c, m, ids, &one, cfg->compute);
        if ((ok = logits != NULL)) {
            if (choosing)
                *all_done &= choose(ch, logits, n - 1, b, (uint64_t)b);
            state_row_from(st, b, &one);
        }
        mt_tensor_free(ids);
        mt_ctx_end_step(c);
    }
    mt_model_state_release(&one);
    return ok;
}

bool mt_generate(mt_backend *be, mt_model *m, const int32_t *prompt, int64_t batch, int64_t prompt_len,
                 const int64_t *lens, const mt_generate_config *cfg, int32_t *out, mt_generate_result *res, char *err,
                 size_t errlen)
{
    *res = (mt_generate_result){0};
    if (errlen)
        err[0] = '\0';
    if (batch < 1 || prompt_len < 1 || cfg->max_new_tokens < 0) {
        snprintf(err, errlen, "generation: %lld prompts of %lld tokens, %lld new tokens: each must be positive",
                 (long long)batch, (long long)prompt_len, (long long)cfg->max_new_tokens);
        return false;
    }
    if (!mt_sampling_check(&cfg->sampling, err, errlen))
        return false;
    const int64_t vocab = m->cfg.vocab_size, width = prompt_len + cfg->max_new_tokens;
    bool ragged = false;
    for (int64_t b = 0; b < batch; b++) {
        const int64_t n = lens ? lens[b] : prompt_len;
        if (n < 1 || n > prompt_len) {
            snprintf(err, errlen, "generation: prompt %lld has %lld tokens: it needs 1 to %lld", (long long)b,
                     (long long)n, (long long)prompt_len);
            return false;
        }
        ragged |= n != (lens ? lens[0] : prompt_len);
        for (int64_t i = 0; i < n; i++)
            if (prompt[b * prompt_len + i] < 0 || prompt[b * prompt_len + i] >= vocab) {
                snprintf(err, errlen, "generation: prompt %lld: token %d at %lld is outside the vocabulary of %lld",
                         (long long)b, prompt[b * prompt_len + i], (long long)i, (long long)vocab);
                return false;
            }
    }
    mt_model_state st;
    if (!mt_model_state_init(&st, m, batch, cfg->compute, err, errlen))
        return false;
    chooser ch = {.cfg = cfg,
                  .row = malloc((size_t)vocab * sizeof(float)),
                  .vocab = vocab,
                  .padded = m->cfg.vocab_padded,
                  .width = width,
                  .es = mt_dtype_size(cfg->compute),
                  .dev = m->embedding->device,
                  .out = out,
                  .cur = malloc((size_t)batch * sizeof(int64_t)),
                  .done = calloc((size_t)batch, sizeof(bool))};
    int32_t *packed = malloc((size_t)batch * sizeof *packed);
    if (!ch.row || !ch.cur || !ch.done || !packed)
        mt_fatal("generation: out of host memory for %lld rows", (long long)batch);
    mt_sample_work_init(&ch.w, vocab);
    ch.host_row = mt_tensor_new(MT_CPU, cfg->compute, 1, (int64_t[]){vocab});
    for (int64_t b = 0; b < batch; b++) { /* the prompts, then eos_id to the end */
        ch.cur[b] = lens ? lens[b] : prompt_len;
        memcpy(out + b * width, prompt + b * prompt_len, (size_t)ch.cur[b] * sizeof(int32_t));
        for (int64_t i = ch.cur[b]; i < width; i++)
            out[b * width + i] = cfg->eos_id;
    }
    mt_ctx c;
    mt_ctx_init(&c, be, 0);
    c.grad_enabled = false;
    c.abort_on_error = false;
    mt_tensor *step_ids = mt_tensor_new(ch.dev, MT_I32, 2, (int64_t[]){batch, 1});

    double t0 = mt_clock_s();
    bool all_done;
    bool ok = prefill(&c, m, prompt, batch, prompt_len, ragged, &st, &ch, &all_done, err, errlen);
    res->new_tokens = ok && cfg->max_new_tokens > 0;
    double t1 = mt_clock_s();
    for (int64_t n = 1; ok && !all_done && n < cfg->max_new_tokens; n++) {
        for (int64_t b = 0; b < batch; b++) /* each row's newest token (a stopped row's is ignored) */
            packed[b] = out[b * width + ch.cur[b] - 1];
        mt_device_copy(ch.dev, step_ids->data, MT_CPU, packed, (size_t)batch * sizeof *packed);
        const mt_tensor *logits = mt_model_advance(&c, m, step_ids, &st, cfg->compute);
        if (!(ok = logits != NULL))
            break;
        all_done = true;
        for (int64_t b = 0; b < batch; b++)
            if (!ch.done[b])
                all_done &= choose(&ch, logits, b, b, (uint64_t)(n * batch + b));
        res->new_tokens = n + 1;
        mt_ctx_end_step(&c);
    }
    be->synchronize(be);
    double t2 = mt_clock_s();
    res->prefill_ms = 1e3 * (t1 - t0);
    res->decode_ms = 1e3 * (t2 - t1);
    if (!ok && !err[0])
        snprintf(err, errlen, "generation: %s", mt_ctx_error(&c) ? mt_ctx_error(&c) : "the forward failed");
    mt_tensor_free(step_ids);
    mt_tensor_free(ch.host_row);
    free(ch.row);
    free(ch.cur);
    free(ch.done);
    free(packed);
    mt_sample_work_release(&ch.w);
    mt_ctx_release(&c);
    mt_model_state_release(&st);
    return ok;
}
