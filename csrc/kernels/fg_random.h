/* fg_random.h — inverted dropout with a counter-based random stream.
 *
 * Element i has global index k = offset + i. It is kept iff
 *   (mix64(seed + (k + 1) * 0x9E3779B97F4A7C15) >> 40) >= floor(rate * 2^24)
 * (uint64 arithmetic modulo 2^64; the threshold computed in double), where mix64
 * is splitmix64's output function: z = (z ^ z>>30) * 0xBF58476D1CE4E5B9;
 * z = (z ^ z>>27) * 0x94D049BB133111EB; return z ^ z>>31 — i.e. u is the top 24
 * bits of the (k+1)-th output of a splitmix64 generator seeded with `seed`.
 * y = x * (keep ? scale : 0) with scale = (float)(1 / (1 - rate)), exactly the
 * float operations of NumpyOps.dropout (x * keep * scale). rate >= 1 zeroes y.
 * So the mask depends only on (seed, offset + i): reproducible for any thread
 * count and any ISA, and the NumPy backend computes the same stream. */
#ifndef FG_RANDOM_H
#define FG_RANDOM_H
#include "fg_common.h"
#ifdef __cplusplus
extern "C" {
#endif

/* y, x: n floats; mask: n bytes (1 = kept) or NULL. y may equal x. */
int fg_dropout_forward(float *y, uint8_t *mask, const float *x, int64_t n, float rate, uint64_t seed,
                       uint64_t offset, int nthreads);
/* dx = dy * (mask ? scale : 0) */
int fg_dropout_backward(float *dx, const float *dy, const uint8_t *mask, int64_t n, float rate, int nthreads);

#ifdef __cplusplus
}
#endif
#endif
