#include "train/sample.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "generate/generate.h"
#include "text/tokenizer.h"

bool mt_run_sample_setup(mt_run *r, char *err, size_t errlen)
{
    const mt_train_config *cfg = r->cfg;
    if (cfg->log.sample_every == 0 || !r->lead)
        return true;
    char why[512];
    if (cfg->log.tokenizer[0]) {
        if (!(r->sample_tok = mt_tokenizer_load(cfg->log.tokenizer, why, sizeof why)))
            return mt_errorf(err, errlen, "[log] tokenizer = %s: %s", cfg->log.tokenizer, why);
        if (!mt_tokenizer_encode(r->sample_tok, cfg->log.sample_prompt, strlen(cfg->log.sample_prompt), false,
                                 &r->sample_ids, &r->sample_len, why, sizeof why))
            return mt_errorf(err, errlen, "[log] sample_prompt: %s", why);
        if (r->sample_len == 0)
            return mt_errorf(err, errlen, "[log] sample_prompt \"%s\" has no tokens", cfg->log.sample_prompt);
    } else if (!mt_parse_token_ids(cfg->log.sample_prompt, &r->sample_ids, &r->sample_len)) {
        return mt_errorf(err, errlen, "[log] sample_prompt \"%s\" is not a list of token ids "
                         "(set log.tokenizer for a text prompt)", cfg->log.sample_prompt);
    }
    for (int64_t i = 0; i < r->sample_len; i++)
        if (r->sample_ids[i] >= r->model.cfg.vocab_size)
            return mt_errorf(err, errlen, "[log] sample_prompt: token %d is outside the vocabulary of %lld",
                             r->sample_ids[i], (long long)r->model.cfg.vocab_size);
    mt_model_state probe; /* a layer without a recurrent step is named before the first step */
    if (!mt_model_state_init(&probe, &r->model, 1, r->compute, why, sizeof why))
        return mt_errorf(err, errlen, "[log] sample_every: %s", why);
    mt_model_state_release(&probe);
    return true;
}

/* ids[0, n) as text, or as ids when there is no tokenizer. */
static bool print_tokens(FILE *f, const mt_tokenizer *tok, const int32_t *ids, int64_t n, char *err, size_t errlen)
{
    if (!tok) {
        for (int64_t i = 0; i < n; i++)
            fprintf(f, "%s%d", i ? " " : "", ids[i]);
        return true;
    }
    size_t len;
    char *text = mt_tokenizer_decode(tok, ids, n, &len, err, errlen);
    if (!text)
        return false;
    fwrite(text, 1, len, f);
    free(text);
    return true;
}

bool mt_run_sample(mt_run *r, char *err, size_t errlen)
{
    const mt_train_config *cfg = r->cfg;
    const int64_t n = r->sample_len, width = n + cfg->log.sample_tokens;
    int32_t *out = malloc((size_t)width * sizeof *out);
    if (!out)
        mt_fatal("out of host memory for a sample of %lld tokens", (long long)width);
    const mt_generate_config gc = {.sampling = mt_sampling_greedy(),
                                   .max_new_tokens = cfg->log.sample_tokens,
                                   .eos_id = -1,
                                   .compute = r->compute};
    mt_generate_result res;
    char why[512];
    bool ok = mt_generate(r->be, &r->model, r->sample_ids, 1, n, NULL, &gc, out, &res, why, sizeof why);
    if (!ok)
        mt_errorf(err, errlen, "sample at step %lld: %s", (long long)r->step, why);
    if (ok) {
        printf("sample %6lld  ", (long long)r->step);
        ok = print_tokens(stdout, r->sample_tok, out, n, why, sizeof why);
        printf(" |");
        ok = ok && print_tokens(stdout, r->sample_tok, out + n, width - n, why, sizeof why);
        printf("\n");
        fflush(stdout);
        if (!ok)
            mt_errorf(err, errlen, "sample at step %lld: %s", (long long)r->step, why);
    }
    free(out);
    return ok;
}

void mt_run_sample_release(mt_run *r)
{
    free(r->sample_ids);
    mt_tokenizer_free(r->sample_tok);
    r->sample_ids = NULL;
    r->sample_tok = NULL;
}
