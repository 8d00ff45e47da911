/* fg_norm.h — layer normalisation (per row) and training-mode batch
 * normalisation (per column) over a row-major (rows, cols) float32 matrix.
 *
 * Statistics are accumulated in double in a fixed order that depends only on
 * the sizes (never on the thread count) and rounded once to float: LayerNorm
 * (rows in cache) takes two passes, mean = sum(x) / n, var = sum((x -
 * (float)mean)^2) / n; BatchNorm (memory-bound for large batches) one pass
 * over x with the variance of x - x[0, j] (shifted data: accurate to well
 * beyond float32 unless row 0 is ~1e4 standard deviations off the mean).
 * Both biased; rstd = 1 / sqrt(var + eps). The normalisation itself is done in float in
 * NumpyOps' order: y = ((x - mean) * rstd) * gamma + beta. Every output has
 * one owner (rows for LayerNorm, column blocks for BatchNorm and for the
 * LayerNorm parameter gradients), so results are bitwise identical for any
 * thread count (the one float accumulation, LayerNorm's dgamma / dbeta, runs
 * in row order on every path). gamma / beta may be NULL (1 / 0); mean / rstd may be NULL in
 * the forward (not stored). In the backward, dgamma / dbeta may be NULL (not
 * computed); dgamma is also left alone when gamma is NULL. y may be x and dx
 * may be dy (exact in-place use). */
#ifndef FG_NORM_H
#define FG_NORM_H
#include "fg_common.h"
#ifdef __cplusplus
extern "C" {
#endif

/* x, y: (rows, cols); gamma, beta: (cols,); mean, rstd: (rows,) */
int fg_layernorm_forward(float *y, float *mean, float *rstd, const float *x, const float *gamma,
                         const float *beta, int64_t rows, int64_t cols, float eps, int nthreads);
/* dy, x, dx: (rows, cols); gamma, dgamma, dbeta: (cols,); mean, rstd: (rows,).
 * xhat = (x - mean) rstd; g = dy gamma; dx = rstd (g - mean_j(g) - xhat mean_j(g xhat));
 * dgamma = sum_i dy xhat, dbeta = sum_i dy (float, row order, like NumPy's sum(axis=0):
 * one pass over dy and x on one thread, a separate column-split pass on several) */
int fg_layernorm_backward(float *dx, float *dgamma, float *dbeta, const float *dy, const float *x,
                          const float *gamma, const float *mean, const float *rstd, int64_t rows, int64_t cols,
                          int nthreads);
/* x, y: (rows, cols); gamma, beta, mean, rstd: (cols,); statistics over the rows */
int fg_batchnorm_forward(float *y, float *mean, float *rstd, const float *x, const float *gamma,
                         const float *beta, int64_t rows, int64_t cols, float eps, int nthreads);
/* dy, x, dx: (rows, cols); gamma, mean, rstd, dgamma, dbeta: (cols,).
 * dx = rstd (g - mean_i(g) - xhat mean_i(g xhat)); dgamma = sum_i dy xhat; dbeta = sum_i dy */
int fg_batchnorm_backward(float *dx, float *dgamma, float *dbeta, const float *dy, const float *x,
                          const float *gamma, const float *mean, const float *rstd, int64_t rows, int64_t cols,
                          int nthreads);
/* BatchNorm followed by an activation act, FG_ACT_LINEAR (the functions above) or
 * FG_ACT_RELU (anything else: FG_ERR_ARG), in the same passes over memory:
 * y = relu(normalised x), bitwise fg_act_forward(FG_ACT_RELU) of the forward
 * above; the backward takes dy of y, applies relu's backward (dy * (y > 0), the
 * mask recomputed from x, gamma, beta, mean, rstd instead of read from y) and
 * then the backward above, bitwise the two calls in sequence. beta: the
 * forward's (read only for relu). */
int fg_batchnorm_forward_act(float *y, float *mean, float *rstd, const float *x, const float *gamma,
                             const float *beta, int64_t rows, int64_t cols, float eps, int act, int nthreads);
int fg_batchnorm_backward_act(float *dx, float *dgamma, float *dbeta, const float *dy, const float *x,
                              const float *gamma, const float *beta, const float *mean, const float *rstd,
                              int64_t rows, int64_t cols, int act, int nthreads);

#ifdef __cplusplus
}
#endif
#endif
