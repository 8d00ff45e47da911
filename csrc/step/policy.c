/* policy.c — the thread policy of training.
 *
 * Every kernel gives the same bits for any thread count, so a step may run on
 * whichever count is faster *now*. On a quiet machine that is nthreads; on a
 * shared, oversubscribed one (CI, two cores and several busy processes) every
 * OpenMP fork/join waits for a descheduled worker and one thread can be many
 * times faster. So at the start of every period the step times PROBE batches
 * on nthreads and PROBE on one thread (fastest seconds per row of each) and
 * runs the rest of the period on the winner; the period doubles (PERIOD ..
 * PERIOD_MAX batches) while the winner stays the same, and a batch three
 * times slower than the probe said starts a new probe at once (the load
 * changed). Only wall-clock speed depends on this, never the results. */
#include "step_internal.h"

#include <math.h>
#if !defined(_WIN32)
#include <time.h>
#endif

#define PROBE 2
#define PERIOD 64
#define PERIOD_MAX 256

double fg_policy_now(void) {
#if defined(_WIN32)
    return 0.0;
#else
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
#endif
}

void fg_policy_reset(fg_policy *p, int adaptive) {
    p->adaptive = adaptive != 0;
    p->batch = 0;
    p->period = PERIOD;
    p->single = 0;
    p->chosen = 0.0;
    p->best[0] = p->best[1] = INFINITY;
}

int fg_policy_pick(fg_policy *p, int nt, int *probe) {
    *probe = -1;
#if defined(_WIN32)
    return nt;
#else
    if (nt <= 1 || !p->adaptive) return nt;
    if (p->period <= 0) p->period = PERIOD;
    if (p->batch >= p->period) p->batch = 0; /* a new probe */
    int64_t k = p->batch;
    if (k == 0) p->best[0] = p->best[1] = INFINITY;
    if (k < 2 * PROBE) {
        *probe = k < PROBE ? 0 : 1;
        return *probe ? 1 : nt;
    }
    if (k == 2 * PROBE) {
        int single = p->best[1] < p->best[0];
        if (single == p->single)
            p->period = p->period * 2 < PERIOD_MAX ? p->period * 2 : PERIOD_MAX;
        else
            p->period = PERIOD;
        p->single = single;
        p->chosen = p->best[single];
    }
    return p->single ? 1 : nt;
#endif
}

void fg_policy_record(fg_policy *p, int probe, double seconds, int64_t rows) {
    double per = seconds / (double)rows;
    if (probe >= 0) {
        if (per < p->best[probe]) p->best[probe] = per;
    } else if (p->adaptive && p->batch > 2 * PROBE && per > 3.0 * p->chosen) {
        p->batch = p->period; /* much slower than measured: probe again next batch */
        return;
    }
    p->batch++;
}
