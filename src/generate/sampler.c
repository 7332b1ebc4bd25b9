#include "generate/sampler.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "core/error.h"
#include "core/rng.h"

mt_sampling mt_sampling_greedy(void)
{
    return (mt_sampling){.temperature = 0, .top_k = 1, .top_p = 0, .min_p = 0, .repetition_penalty = 1, .seed = 0};
}

bool mt_sampling_check(const mt_sampling *s, char *err, size_t errlen)
{
    if (!(s->temperature >= 0) || !isfinite(s->temperature))
        snprintf(err, errlen, "temperature %g must be finite and >= 0", s->temperature);
    else if (s->top_k < 0)
        snprintf(err, errlen, "top-k %d must be >= 0 (0 keeps every token)", s->top_k);
    else if (!(s->top_p >= 0 && s->top_p <= 1))
        snprintf(err, errlen, "top-p %g must be in [0, 1]", s->top_p);
    else if (!(s->min_p >= 0 && s->min_p < 1))
        snprintf(err, errlen, "min-p %g must be in [0, 1)", s->min_p);
    else if (!(s->repetition_penalty > 0) || !isfinite(s->repetition_penalty))
        snprintf(err, errlen, "repetition penalty %g must be finite and > 0", s->repetition_penalty);
    else
        return true;
    return false;
}

void mt_sample_work_init(mt_sample_work *w, int64_t vocab)
{
    w->vocab = vocab;
    w->logit = malloc((size_t)vocab * sizeof *w->logit);
    w->prob = malloc((size_t)vocab * sizeof *w->prob);
    w->seen = malloc((size_t)vocab);
    w->cand = malloc((size_t)vocab * sizeof *w->cand);
    if (!w->logit || !w->prob || !w->seen || !w->cand)
        mt_fatal("sampler: out of host memory for a vocabulary of %lld", (long long)vocab);
}

void mt_sample_work_release(mt_sample_work *w)
{
    free(w->logit);
    free(w->prob);
    free(w->seen);
    free(w->cand);
    *w = (mt_sample_work){0};
}

/* Highest logit first, then the lower id. */
static int by_logit(const void *a, const void *b)
{
    const mt_sample_cand *x = a, *y = b;
    if (x->logit != y->logit)
        return x->logit > y->logit ? -1 : 1;
    return (x->id > y->id) - (x->id < y->id);
}

int64_t mt_sample(const mt_sampling *s, const float *logits, int64_t vocab, const int32_t *prev, int64_t n_prev,
                  uint64_t draw, mt_sample_work *w)
{
    if (vocab > w->vocab)
        mt_fatal("sampler: a vocabulary of %lld in work sized for %lld", (long long)vocab, (long long)w->vocab);
    double *z = w->logit;
    for (int64_t v = 0; v < vocab; v++)
        z[v] = isnan(logits[v]) ? -INFINITY : logits[v];
    if (s->repetition_penalty != 1) /* once per distinct token, however often it occurred */
        for (int64_t v = 0; v < vocab; v++)
            w->seen[v] = 0;
    for (int64_t i = 0; s->repetition_penalty != 1 && i < n_prev; i++) {
        int64_t t = prev[i];
        if (t < 0 || t >= vocab || w->seen[t])
            continue;
        w->seen[t] = 1;
        z[t] = z[t] < 0 ? z[t] * s->repetition_penalty : z[t] / s->repetition_penalty;
    }
    int64_t best = 0;
    for (int64_t v = 1; v < vocab; v++)
        if (z[v] > z[best])
            best = v;
    if (s->temperature == 0 || s->top_k == 1 || z[best] == -INFINITY)
        return best;

    /* Candidates, most likely first: the top k (all when k is 0). */
    mt_sample_cand *cand = w->cand;
    int64_t n = 0;
    for (int64_t v = 0; v < vocab; v++)
        if (z[v] > -INFINITY)
            cand[n++] = (mt_sample_cand){z[v], (int32_t)v};
    qsort(cand, (size_t)n, sizeof *cand, by_logit);
    if (s->top_k > 0 && s->top_k < n)
        n = s->top_k;
    /* Softmax over the candidates at the temperature. */
    double *p = w->prob, zmax = cand[0].logit / s->temperature, sum = 0;
    for (int64_t i = 0; i < n; i++)
        sum += p[i] = exp(cand[i].logit / s->temperature - zmax);
    for (int64_t i = 0; i < n; i++)
        p[i] /= sum;
    /* top-p: in ascending order of probability, drop the tokens whose
     * cumulative probability is at most 1 - top_p. */
    if (s->top_p > 0 && s->top_p < 1) {
        double cum = 0;
        int64_t keep = n;
        for (int64_t i = n - 1; i >= 0; i--) {
            cum += p[i];
            if (cum <= 1 - s->top_p)
                keep = i;
            else
                break;
        }
        n = keep > 0 ? keep : 1;
    }
    /* min-p: drop the tokens less likely than min_p times the most likely. */
    if (s->min_p > 0)
        while (n > 1 && p[n - 1] < s->min_p * p[0])
            n--;
    sum = 0;
    for (int64_t i = 0; i < n; i++)
        sum += p[i];
    const double u = mt_rng_uniform(s->seed, draw, 0, 1) * sum;
    double cum = 0;
    for (int64_t i = 0; i < n; i++) {
        cum += p[i];
        if (u < cum)
            return cand[i].id;
    }
    return cand[n - 1].id;
}
