/* fg_reduce.h — reductions and in-place rescaling used around the optimizer
 * step. Every reduction runs in a fixed order that depends only on the sizes:
 * bitwise identical results for any thread count and any ISA path. */
#ifndef FG_REDUCE_H
#define FG_REDUCE_H
#include "fg_common.h"
#ifdef __cplusplus
extern "C" {
#endif

/* x: (rows, cols); out[j] = sum_i x[i, j] in row order (float accumulation, like
 * numpy's x.sum(axis=0)); threads split the columns (bias gradients) */
int fg_sum_rows(float *out, const float *x, int64_t rows, int64_t cols, int nthreads);
/* out = sum_i x[i]^2 in double (global L2 norm squared) */
int fg_sumsq(double *out, const float *x, int64_t n, int nthreads);
/* *ok = 1 if none of x[n] is NaN or +-inf, else 0 (input validation inside
 * compiled paths: a bit test per float, no floating-point operation) */
int fg_all_finite(int *ok, const float *x, int64_t n, int nthreads);
/* x[n] *= s (clip by norm) */
int fg_scale(float *x, int64_t n, float s, int nthreads);
/* x[n] = min(max(x, lo), hi); NaN stays NaN */
int fg_clip_value(float *x, int64_t n, float lo, float hi, int nthreads);

#ifdef __cplusplus
}
#endif
#endif
