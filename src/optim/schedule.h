/* Learning-rate schedules, as a function of the step (0-based: the rate for
 * the update that makes step + 1).
 *   cosine: linear warmup from 0 over warmup_steps, then cosine from peak_lr
 *           down to min_ratio * peak_lr at total_steps, flat after.
 *   wsd:    warmup-stable-decay: linear warmup, peak_lr until total_steps -
 *           decay_steps, then linear down to min_ratio * peak_lr at total_steps.
 *   constant: linear warmup, then peak_lr.
 *
 * Exactly, with W = warmup_steps, T = total_steps, min = min_ratio * peak_lr:
 *   warmup (every kind), step < W:  peak_lr * (step + 1) / W
 *     so the first update already moves (peak_lr / W) and step W - 1 runs at
 *     peak_lr; W <= 0 means no warmup.
 *   cosine, step >= W:  min + (peak_lr - min) * 0.5 * (1 + cos(pi * progress)),
 *     progress = (step - W) / (T - W) clamped to [0, 1] (1 when T <= W):
 *     peak_lr at step W, min at step T and after.
 *   wsd, step >= W:  with D = decay_steps and S = T - D,
 *     peak_lr for step < S, then peak_lr + (min - peak_lr) * (step - S) / D,
 *     min from step T on (D <= 0: a drop to min at T). Warmup wins where it
 *     overlaps the decay. */
#ifndef MT_SCHEDULE_H
#define MT_SCHEDULE_H

#include <stdint.h>

typedef enum { MT_SCHEDULE_COSINE, MT_SCHEDULE_WSD, MT_SCHEDULE_CONSTANT } mt_schedule_kind;

typedef struct mt_lr_schedule {
    mt_schedule_kind kind;
    double peak_lr, min_ratio;
    int64_t warmup_steps, total_steps, decay_steps;
} mt_lr_schedule;

double mt_lr_at(const mt_lr_schedule *s, int64_t step);

#endif
