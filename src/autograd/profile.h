/* A per-op time profile of one training step.
 *
 * With c->profile set, the ctx synchronizes the device after each recorded
 * forward op and after each node's backward, and charges the time since the
 * previous lap to that op. Synchronizing costs a few microseconds per op, so
 * a profiled step runs slower than an unprofiled one; the shares are what
 * the table is for. */
#ifndef MT_PROFILE_H
#define MT_PROFILE_H

#include <stdio.h>

#define MT_PROFILE_MAX 96

struct mt_ctx;

typedef struct {
    const char *phase; /* "fwd", "bwd" or "step" */
    const char *name;  /* an op name or a step part; string constants */
    double seconds;
    long calls;
} mt_profile_entry;

typedef struct mt_profile {
    mt_profile_entry entries[MT_PROFILE_MAX];
    int n;
    double mark; /* seconds on the monotonic clock at the last lap */
} mt_profile;

/* Synchronizes and starts the clock. */
void mt_profile_start(struct mt_ctx *c, mt_profile *p);

/* Synchronizes and charges the time since the last lap to (phase, name).
 * Does nothing when c has no profile. */
void mt_profile_lap(struct mt_ctx *c, const char *phase, const char *name);

/* The entries by time, largest first, with their share of the total. */
void mt_profile_print(const mt_profile *p, FILE *f);

#endif
