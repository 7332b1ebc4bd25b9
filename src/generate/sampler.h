/* Choosing the next token from a position's logits, as the reference's
 * generate does: the repetition penalty, then greedy or a draw from the
 * candidates left by top-k, temperature, top-p and min-p, in that order.
 *
 * A draw is reproducible: its uniform number is Philox element `draw` of
 * the seed (core/rng.h), so the same seed and counter pick the same token
 * on any machine. Ties between equal logits go to the lower token id. */
#ifndef MT_SAMPLER_H
#define MT_SAMPLER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct mt_sampling {
    double temperature;        /* logits divided by it; 0 picks the most likely token (greedy) */
    int top_k;                 /* keep the k most likely; 0 keeps all, 1 is greedy */
    double top_p;              /* keep the most likely tokens holding top_p of the probability; 0 or 1: off */
    double min_p;              /* keep tokens at least min_p times as likely as the most likely candidate; 0: off */
    double repetition_penalty; /* on tokens already in the sequence: positive logits divided by it, negative
                                  ones multiplied; 1: off */
    uint64_t seed;
} mt_sampling;

/* Greedy, no penalty, seed 0. */
mt_sampling mt_sampling_greedy(void);

/* false with a message naming the setting when one is out of range. */
bool mt_sampling_check(const mt_sampling *s, char *err, size_t errlen);

/* A candidate token: its (penalized) logit and id. */
typedef struct mt_sample_cand {
    double logit;
    int32_t id;
} mt_sample_cand;

/* Scratch for vocab-sized work, reused across calls. */
typedef struct mt_sample_work {
    int64_t vocab;
    double *logit, *prob;
    unsigned char *seen;
    mt_sample_cand *cand;
} mt_sample_work;

void mt_sample_work_init(mt_sample_work *w, int64_t vocab);
void mt_sample_work_release(mt_sample_work *w);

/* The next token of one sequence from logits (vocab) at its last position.
 * prev holds its n_prev tokens so far (prompt and generated), for the
 * repetition penalty; draw is the counter of this draw (for example
 * step * batch + row). Non-finite logits never win a draw; when every
 * logit is -inf or NaN the result is token 0. */
int64_t mt_sample(const mt_sampling *s, const float *logits, int64_t vocab, const int32_t *prev, int64_t n_prev,
                  uint64_t draw, mt_sample_work *w);

#endif
