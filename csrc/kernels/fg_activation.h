/* fg_activation.h — element-wise activations, exp/log, row-wise softmax.
 *
 * All arrays are contiguous float32. Element-wise kernels may run in place
 * (output pointer equal to an input pointer); partial overlap is not allowed.
 * `nthreads` is the caller's thread budget (small inputs stay serial).
 * Results are bitwise identical for any thread count. */
#ifndef FG_ACTIVATION_H
#define FG_ACTIVATION_H
#include "fg_common.h"
#ifdef __cplusplus
extern "C" {
#endif

/* y[n] = act(x[n]), act in FG_ACT_* (linear, relu, sigmoid, tanh, gelu (exact erf), gelu_tanh) */
int fg_act_forward(float *y, const float *x, int64_t n, int act, int nthreads);
/* dx[n] = dy[n] * act'(.); `ref` is the forward OUTPUT y for linear/relu/sigmoid/tanh and
 * the forward INPUT x for gelu/gelu_tanh */
int fg_act_backward(float *dx, const float *dy, const float *ref, int64_t n, int act, int nthreads);
/* y[n] = exp(x[n]) ; y[n] = log(x[n]) */
int fg_exp(float *y, const float *x, int64_t n, int nthreads);
int fg_log(float *y, const float *x, int64_t n, int nthreads);
/* x, y: (rows, cols); softmax (log == 0) or log_softmax (log != 0) along each row, max subtracted */
int fg_softmax_forward(float *y, const float *x, int64_t rows, int64_t cols, int log, int nthreads);
/* dx from dy and the forward output y: softmax dx = y*(dy - sum(dy*y)); log_softmax dx = dy - exp(y)*sum(dy) */
int fg_softmax_backward(float *dx, const float *dy, const float *y, int64_t rows, int64_t cols, int log,
                        int nthreads);

#ifdef __cplusplus
}
#endif
#endif
