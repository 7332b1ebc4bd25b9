/* Generation: prefill the prompts on the parallel path, then one decode
 * step per new token through each layer's recurrent state
 * (mt_model_advance), the sampler choosing each row's next token. The
 * logits of the last position come to the host for the sampler. */
#ifndef MT_GENERATE_H
#define MT_GENERATE_H

#include "generate/sampler.h"
#include "layers/model.h"

typedef struct mt_generate_config {
    mt_sampling sampling;
    int64_t max_new_tokens;
    int32_t eos_id;   /* a row stops after it; -1: none */
    mt_dtype compute; /* the forward's dtype (bf16 or f32 on CUDA, f32 or f64 on the CPU) */
    /* Called with each new token of each row as it is chosen (NULL: none). */
    void (*on_token)(void *user, int64_t row, int32_t token);
    void *user;
} mt_generate_config;

typedef struct mt_generate_result {
    int64_t new_tokens; /* per row, the longest row's */
    double prefill_ms;  /* the prompts' forward and the first choice */
    double decode_ms;   /* every decode step after it */
} mt_generate_result;

/* Generates after batch prompts (host i32, row-major, rows prompt_len
 * apart): row b's are its first lens[b] tokens (1 <= lens[b] <= prompt_len;
 * lens NULL: all prompt_len). Prompts of one length are prefilled together;
 * otherwise each is prefilled alone and their states are stacked for the
 * decode steps, so that no row sees another's padding. out (batch,
 * prompt_len + max_new_tokens) host receives each prompt and its new tokens;
 * the rest of a row (after a stop at eos_id, or a shorter prompt's) holds
 * eos_id. False with err on bad arguments or a model without a recurrent
 * step. */
bool mt_generate(mt_backend *be, mt_model *m, const int32_t *prompt, int64_t batch, int64_t prompt_len,
                 const int64_t *lens, const mt_generate_config *cfg, int32_t *out, mt_generate_result *res, char *err,
                 size_t errlen);

/* Token ids written out, "1,2,3" or "1 2 3" (commas, spaces or both), into
 * *ids (malloc'ed, *n of them). False on anything else or no id at all
 * (*ids then freed and NULL). */
bool mt_parse_token_ids(const char *list, int32_t **ids, int64_t *n);

#endif
