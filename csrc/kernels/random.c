/* random.c — inverted dropout with the counter-based stream of fg_random.h.
 * Compiled once per instruction set; plain 64-bit integer arithmetic the
 * compiler vectorises where the ISA has the multiplies, so every ISA and every
 * thread count gives the same mask (it depends only on seed and offset + i). */
#include "fg_random.h"
#include "fg_vmath.h"

/* the forward is bound by the 64-bit hash (~0.4 ns per element with AVX-512,
 * ~1 ns with AVX2 on the dev box), like an exp: parallel from 16K elements;
 * the backward is a memory-bound pass (128K, as relu) */
#define GRAIN_DROP ((int64_t)1 << 13)
#define GRAIN_DROP_BWD ((int64_t)1 << 16)

/* top 24 bits of splitmix64's output function of z: its last step
 * z ^ (z >> 31) leaves bits 40..63 untouched, so it is skipped */
static inline uint64_t mix64_top24(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z >> 40;
}

#define GOLDEN 0x9E3779B97F4A7C15ull

/* elements [lo, hi): keep iff (mix64(seed + (offset + i + 1) * GOLDEN) >> 40) >= thresh;
 * y = x * (keep ? scale : 0), the same float operation as NumpyOps (x * keep * scale) */
static void dropout_range(float *y, uint8_t *mask, const float *x, int64_t lo, int64_t hi, uint64_t seed,
                          uint64_t offset, uint64_t thresh, float scale) {
    uint64_t z = seed + (offset + (uint64_t)lo + 1u) * GOLDEN; /* Weyl counter, one GOLDEN per element */
    const int64_t w = hi - lo;
    float *yy = y + lo;
    const float *xx = x + lo;
    if (mask) {
        uint8_t *FG_RESTRICT mm = mask + lo;
        for (int64_t i = 0; i < w; i++, z += GOLDEN) {
            int keep = mix64_top24(z) >= thresh;
            mm[i] = (uint8_t)keep;
            yy[i] = xx[i] * (keep ? scale : 0.0f);
        }
    } else {
        for (int64_t i = 0; i < w; i++, z += GOLDEN) yy[i] = xx[i] * (mix64_top24(z) >= thresh ? scale : 0.0f);
    }
}

/* y, x: (n,), mask: (n,) bytes or NULL */
int FG_ISA_FN(fg_dropout_forward)(float *y, uint8_t *mask, const float *x, int64_t n, float rate, uint64_t seed,
                                  uint64_t offset, int nthreads) {
    if (n < 0 || !(rate == rate)) return FG_ERR_ARG;
    if (n == 0) return FG_OK;
    int nt = fg_threads_for(n, GRAIN_DROP, nthreads);
    if (rate >= 1.0f) { /* drop everything */
        memset(y, 0, (size_t)n * sizeof(float));
        if (mask) memset(mask, 0, (size_t)n);
        return FG_OK;
    }
    if (rate <= 0.0f) {
        if (y != x) memmove(y, x, (size_t)n * sizeof(float));
        if (mask) memset(mask, 1, (size_t)n);
        return FG_OK;
    }
    uint64_t thresh = (uint64_t)floor((double)rate * 16777216.0);
    float scale = (float)(1.0 / (1.0 - (double)rate));
#define BODY_(lo, hi) dropout_range(y, mask, x, lo, hi, seed, offset, thresh, scale)
    FG_PARALLEL_RANGE(n, 64, nt, BODY_);
#undef BODY_
    return FG_OK;
}

static void dropout_bwd_range(float *dx, const float *dy, const uint8_t *FG_RESTRICT mask, float scale, int64_t lo,
                              int64_t hi) {
    for (int64_t i = lo; i < hi; i++) dx[i] = dy[i] * (mask[i] ? scale : 0.0f);
}

/* dx, dy: (n,), mask: (n,) bytes */
int FG_ISA_FN(fg_dropout_backward)(float *dx, const float *dy, const uint8_t *mask, int64_t n, float rate,
                                   int nthreads) {
    if (n < 0 || !(rate == rate)) return FG_ERR_ARG;
    if (n == 0) return FG_OK;
    if (rate >= 1.0f) {
        memset(dx, 0, (size_t)n * sizeof(float));
        return FG_OK;
    }
    float scale = (float)(1.0 / (1.0 - (double)rate));
    int nt = fg_threads_for(n, GRAIN_DROP_BWD, nthreads);
#define BODY_(lo, hi) dropout_bwd_range(dx, dy, mask, scale, lo, hi)
    FG_PARALLEL_RANGE(n, 64, nt, BODY_);
#undef BODY_
    return FG_OK;
}
