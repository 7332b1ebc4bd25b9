#include "optim/schedule.h"

#include <math.h>

#include "core/error.h"

/* math.h defines M_PI only as an extension, off in this C11 build. */
#define PI 3.14159265358979323846

/* The fraction of the way from a to b that x is, clamped to [0, 1]; a step
 * at b when the span is empty. */
static double fraction(int64_t x, int64_t a, int64_t b)
{
    if (b <= a)
        return x >= b ? 1.0 : 0.0;
    double f = (double)(x - a) / (double)(b - a);
    return f < 0 ? 0 : f > 1 ? 1 : f;
}

double mt_lr_at(const mt_lr_schedule *s, int64_t step)
{
    if (step < s->warmup_steps)
        return s->peak_lr * (double)(step + 1) / (double)s->warmup_steps;
    double min_lr = s->min_ratio * s->peak_lr;
    switch (s->kind) {
    case MT_SCHEDULE_COSINE: {
        double progress = fraction(step, s->warmup_steps, s->total_steps);
        return min_lr + (s->peak_lr - min_lr) * 0.5 * (1.0 + cos(PI * progress));
    }
    case MT_SCHEDULE_WSD:
        return s->peak_lr + (min_lr - s->peak_lr) * fraction(step, s->total_steps - s->decay_steps, s->total_steps);
    case MT_SCHEDULE_CONSTANT:
        return s->peak_lr;
    }
    mt_fatal("learning-rate schedule of unknown kind %d", (int)s->kind);
}
