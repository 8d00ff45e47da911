/* fg_activation.h — element-wise activations, exp/log, row-wise softmax.
 *
 * Accuracy (float32 sweeps against float64 in tests/test_kernels.py and
 * tests/test_activations_ext.py): the transcendental activations are within
 * ~2-3 ULP of the correctly rounded result (see fg_vmath.h and fg_act_vec.h);
 * the relu family and hard_sigmoid / hard_silu are exact sequences of float
 * operations, bitwise equal to NumpyOps' float32.
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

/* y[n] = act(x[n]), act one of FG_ACT_* (fg_common.h), with the parameters
 * the activation takes when given by name (fg_act_forward_p with p == NULL) */
int fg_act_forward(float *y, const float *x, int64_t n, int act, int nthreads);
/* dx[n] = dy[n] * act'(.); `ref` is the forward INPUT x where
 * fg_act_backward_needs_input(act) (gelu, gelu_tanh, leaky_relu, elu, selu,
 * silu, softplus, softsign, mish, hard_silu, relu_general), else the forward
 * OUTPUT y (linear, relu, sigmoid, tanh, hard_sigmoid, exponential, relu6) */
int fg_act_backward(float *dx, const float *dy, const float *ref, int64_t n, int act, int nthreads);
/* The same with parameters (fg_act_param in fg_common.h; NULL = the defaults:
 * leaky_relu slope 0.2, elu alpha 1, relu_general = plain relu). Only
 * leaky_relu, elu and relu_general read them. FG_ERR_ARG for an unknown code,
 * n < 0, or unusable parameters (non-finite slope/alpha/threshold, max_value
 * NaN or < 0). */
int fg_act_forward_p(float *y, const float *x, int64_t n, int act, const fg_act_param *p, int nthreads);
int fg_act_backward_p(float *dx, const float *dy, const float *ref, int64_t n, int act, const fg_act_param *p,
                      int nthreads);
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
