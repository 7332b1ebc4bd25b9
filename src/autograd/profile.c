#include "autograd/profile.h"

#include <stdlib.h>
#include <string.h>

#include "autograd/tape.h"
#include "core/clock.h"

void mt_profile_start(mt_ctx *c, mt_profile *p)
{
    memset(p, 0, sizeof *p);
    c->be->synchronize(c->be);
    p->mark = mt_clock_s();
}

void mt_profile_lap(mt_ctx *c, const char *phase, const char *name)
{
    mt_profile *p = c->profile;
    if (!p)
        return;
    c->be->synchronize(c->be);
    const double t = mt_clock_s();
    int i = 0;
    while (i < p->n && !(strcmp(p->entries[i].phase, phase) == 0 && strcmp(p->entries[i].name, name) == 0))
        i++;
    if (i == p->n) {
        if (p->n == MT_PROFILE_MAX)
            i = p->n - 1; /* the last slot gathers whatever does not fit */
        else
            p->entries[p->n++] = (mt_profile_entry){.phase = phase, .name = name};
    }
    p->entries[i].seconds += t - p->mark;
    p->entries[i].calls++;
    p->mark = t;
}

static int by_time_desc(const void *a, const void *b)
{
    const double x = ((const mt_profile_entry *)a)->seconds, y = ((const mt_profile_entry *)b)->seconds;
    return (x < y) - (x > y);
}

void mt_profile_print(const mt_profile *p, FILE *f)
{
    mt_profile_entry sorted[MT_PROFILE_MAX];
    double total = 0;
    for (int i = 0; i < p->n; i++) {
        sorted[i] = p->entries[i];
        total += sorted[i].seconds;
    }
    qsort(sorted, (size_t)p->n, sizeof *sorted, by_time_desc);
    fprintf(f, "profile of one step (synchronized after every op): %.2f ms\n", 1e3 * total);
    fprintf(f, "  %-5s %-28s %6s %10s %6s\n", "phase", "op", "calls", "ms", "share");
    for (int i = 0; i < p->n; i++)
        fprintf(f, "  %-5s %-28s %6ld %10.3f %5.1f%%\n", sorted[i].phase, sorted[i].name, sorted[i].calls,
                1e3 * sorted[i].seconds, total > 0 ? 100 * sorted[i].seconds / total : 0.0);
}
