/* dispatch.c — the exported entry points of the kernels family. Compiled
 * once (no ISA flags): each forwards to the copy (_baseline/_avx2/_avx512)
 * selected by fg_isa_active(). */
#include "fg_activation.h"
#include "fg_loss.h"
#include "fg_norm.h"
#include "fg_optim.h"
#include "fg_random.h"
#include "fg_reduce.h"

FG_DECLARE_ISA(int, fg_act_forward_p, (float *, const float *, int64_t, int, const fg_act_param *, int))
FG_DECLARE_ISA(int, fg_act_backward_p, (float *, const float *, const float *, int64_t, int, const fg_act_param *,
                                        int))
FG_DECLARE_ISA(int, fg_exp, (float *, const float *, int64_t, int))
FG_DECLARE_ISA(int, fg_log, (float *, const float *, int64_t, int))
FG_DECLARE_ISA(int, fg_softmax_forward, (float *, const float *, int64_t, int64_t, int, int))
FG_DECLARE_ISA(int, fg_softmax_backward, (float *, const float *, const float *, int64_t, int64_t, int, int))
FG_DECLARE_ISA(int, fg_sparse_softmax_xent, (double *, float *, int64_t *, const float *, const int64_t *,
                                             const float *, int64_t, int64_t, float, int))
FG_DECLARE_ISA(int, fg_softmax_xent, (double *, float *, const float *, const float *, const float *, int64_t,
                                      int64_t, float, int))
FG_DECLARE_ISA(int, fg_sigmoid_bce, (double *, float *, const float *, const float *, const float *, int64_t,
                                     int64_t, float, int))
FG_DECLARE_ISA(int, fg_mse, (double *, float *, const float *, const float *, const float *, int64_t, int64_t,
                             float, int))
FG_DECLARE_ISA(int, fg_bce_prob, (double *, float *, const float *, const float *, const float *, int64_t, int64_t,
                                  float, float, int))
FG_DECLARE_ISA(int, fg_cce_prob, (double *, float *, const float *, const float *, const float *, int64_t, int64_t,
                                  float, float, int))
FG_DECLARE_ISA(int, fg_sum_rows, (float *, const float *, int64_t, int64_t, int))
FG_DECLARE_ISA(int, fg_sumsq, (double *, const float *, int64_t, int))
FG_DECLARE_ISA(int, fg_all_finite, (int *, const float *, int64_t, int))
FG_DECLARE_ISA(int, fg_scale, (float *, int64_t, float, int))
FG_DECLARE_ISA(int, fg_clip_value, (float *, int64_t, float, float, int))
FG_DECLARE_ISA(int, fg_sgd_update, (float *, float *, const float *, int64_t, float, float, int, float, int, int))
FG_DECLARE_ISA(int, fg_adagrad_update, (float *, float *, const float *, int64_t, float, float, float, int, int))
FG_DECLARE_ISA(int, fg_rmsprop_update, (float *, float *, float *, float *, const float *, int64_t, float, float,
                                        float, float, int, float, int, int))
FG_DECLARE_ISA(int, fg_adam_update, (float *, float *, float *, const float *, int64_t, float, float, float, float,
                                     int64_t, float, int, int))
FG_DECLARE_ISA(int, fg_dropout_forward, (float *, uint8_t *, const float *, int64_t, float, uint64_t, uint64_t, int))
FG_DECLARE_ISA(int, fg_dropout_backward, (float *, const float *, const uint8_t *, int64_t, float, int))
FG_DECLARE_ISA(int, fg_layernorm_forward, (float *, float *, float *, const float *, const float *, const float *,
                                           int64_t, int64_t, float, int))
FG_DECLARE_ISA(int, fg_layernorm_backward, (float *, float *, float *, const float *, const float *, const float *,
                                            const float *, const float *, int64_t, int64_t, int))
FG_DECLARE_ISA(int, fg_batchnorm_forward_act, (float *, float *, float *, const float *, const float *,
                                               const float *, int64_t, int64_t, float, int, int))
FG_DECLARE_ISA(int, fg_batchnorm_backward_act, (float *, float *, float *, const float *, const float *,
                                                const float *, const float *, const float *, const float *, int64_t,
                                                int64_t, int, int))

int fg_act_forward(float *y, const float *x, int64_t n, int act, int nthreads) {
    return FG_DISPATCH(fg_act_forward_p)(y, x, n, act, NULL, nthreads);
}
int fg_act_backward(float *dx, const float *dy, const float *ref, int64_t n, int act, int nthreads) {
    return FG_DISPATCH(fg_act_backward_p)(dx, dy, ref, n, act, NULL, nthreads);
}
int fg_act_forward_p(float *y, const float *x, int64_t n, int act, const fg_act_param *p, int nthreads) {
    return FG_DISPATCH(fg_act_forward_p)(y, x, n, act, p, nthreads);
}
int fg_act_backward_p(float *dx, const float *dy, const float *ref, int64_t n, int act, const fg_act_param *p,
                      int nthreads) {
    return FG_DISPATCH(fg_act_backward_p)(dx, dy, ref, n, act, p, nthreads);
}
int fg_exp(float *y, const float *x, int64_t n, int nthreads) { return FG_DISPATCH(fg_exp)(y, x, n, nthreads); }
int fg_log(float *y, const float *x, int64_t n, int nthreads) { return FG_DISPATCH(fg_log)(y, x, n, nthreads); }
int fg_softmax_forward(float *y, const float *x, int64_t rows, int64_t cols, int log, int nthreads) {
    return FG_DISPATCH(fg_softmax_forward)(y, x, rows, cols, log, nthreads);
}
int fg_softmax_backward(float *dx, const float *dy, const float *y, int64_t rows, int64_t cols, int log,
                        int nthreads) {
    return FG_DISPATCH(fg_softmax_backward)(dx, dy, y, rows, cols, log, nthreads);
}
int fg_sparse_softmax_xent(double *loss_sum, float *dlogits, int64_t *correct, const float *logits,
                           const int64_t *labels, const float *sample_weight, int64_t rows, int64_t cols,
                           float grad_scale, int nthreads) {
    return FG_DISPATCH(fg_sparse_softmax_xent)(loss_sum, dlogits, correct, logits, labels, sample_weight, rows, cols,
                                               grad_scale, nthreads);
}
int fg_softmax_xent(double *loss_sum, float *dlogits, const float *logits, const float *target,
                    const float *sample_weight, int64_t rows, int64_t cols, float grad_scale, int nthreads) {
    return FG_DISPATCH(fg_softmax_xent)(loss_sum, dlogits, logits, target, sample_weight, rows, cols, grad_scale,
                                        nthreads);
}
int fg_sigmoid_bce(double *loss_sum, float *dlogits, const float *logits, const float *target,
                   const float *sample_weight, int64_t rows, int64_t cols, float grad_scale, int nthreads) {
    return FG_DISPATCH(fg_sigmoid_bce)(loss_sum, dlogits, logits, target, sample_weight, rows, cols, grad_scale,
                                       nthreads);
}
int fg_mse(double *loss_sum, float *dpred, const float *pred, const float *target, const float *sample_weight,
           int64_t rows, int64_t cols, float grad_scale, int nthreads) {
    return FG_DISPATCH(fg_mse)(loss_sum, dpred, pred, target, sample_weight, rows, cols, grad_scale, nthreads);
}
int fg_bce_prob(double *loss_sum, float *dprob, const float *prob, const float *target, const float *sample_weight,
                int64_t rows, int64_t cols, float eps, float grad_scale, int nthreads) {
    return FG_DISPATCH(fg_bce_prob)(loss_sum, dprob, prob, target, sample_weight, rows, cols, eps, grad_scale,
                                    nthreads);
}
int fg_cce_prob(double *loss_sum, float *dprob, const float *prob, const float *target, const float *sample_weight,
                int64_t rows, int64_t cols, float eps, float grad_scale, int nthreads) {
    return FG_DISPATCH(fg_cce_prob)(loss_sum, dprob, prob, target, sample_weight, rows, cols, eps, grad_scale,
                                    nthreads);
}
int fg_sum_rows(float *out, const float *x, int64_t rows, int64_t cols, int nthreads) {
    return FG_DISPATCH(fg_sum_rows)(out, x, rows, cols, nthreads);
}
int fg_sumsq(double *out, const float *x, int64_t n, int nthreads) {
    return FG_DISPATCH(fg_sumsq)(out, x, n, nthreads);
}
int fg_all_finite(int *ok, const float *x, int64_t n, int nthreads) {
    return FG_DISPATCH(fg_all_finite)(ok, x, n, nthreads);
}
int fg_scale(float *x, int64_t n, float s, int nthreads) { return FG_DISPATCH(fg_scale)(x, n, s, nthreads); }
int fg_clip_value(float *x, int64_t n, float lo, float hi, int nthreads) {
    return FG_DISPATCH(fg_clip_value)(x, n, lo, hi, nthreads);
}
int fg_sgd_update(float *param, float *velocity, const float *grad, int64_t n, float lr, float momentum,
                  int nesterov, float weight_decay, int decoupled, int nthreads) {
    return FG_DISPATCH(fg_sgd_update)(param, velocity, grad, n, lr, momentum, nesterov, weight_decay, decoupled,
                                      nthreads);
}
int fg_adagrad_update(float *param, float *accum, const float *grad, int64_t n, float lr, float eps,
                      float weight_decay, int decoupled, int nthreads) {
    return FG_DISPATCH(fg_adagrad_update)(param, accum, grad, n, lr, eps, weight_decay, decoupled, nthreads);
}
int fg_rmsprop_update(float *param, float *ms, float *mom, float *mg, const float *grad, int64_t n, float lr,
                      float rho, float momentum, float eps, int centered, float weight_decay, int decoupled,
                      int nthreads) {
    return FG_DISPATCH(fg_rmsprop_update)(param, ms, mom, mg, grad, n, lr, rho, momentum, eps, centered,
                                          weight_decay, decoupled, nthreads);
}
int fg_adam_update(float *param, float *m, float *v, const float *grad, int64_t n, float lr, float beta1,
                   float beta2, float eps, int64_t step, float weight_decay, int decoupled, int nthreads) {
    return FG_DISPATCH(fg_adam_update)(param, m, v, grad, n, lr, beta1, beta2, eps, step, weight_decay, decoupled,
                                       nthreads);
}
int fg_dropout_forward(float *y, uint8_t *mask, const float *x, int64_t n, float rate, uint64_t seed,
                       uint64_t offset, int nthreads) {
    return FG_DISPATCH(fg_dropout_forward)(y, mask, x, n, rate, seed, offset, nthreads);
}
int fg_dropout_backward(float *dx, const float *dy, const uint8_t *mask, int64_t n, float rate, int nthreads) {
    return FG_DISPATCH(fg_dropout_backward)(dx, dy, mask, n, rate, nthreads);
}
int fg_layernorm_forward(float *y, float *mean, float *rstd, const float *x, const float *gamma,
                         const float *beta, int64_t rows, int64_t cols, float eps, int nthreads) {
    return FG_DISPATCH(fg_layernorm_forward)(y, mean, rstd, x, gamma, beta, rows, cols, eps, nthreads);
}
int fg_layernorm_backward(float *dx, float *dgamma, float *dbeta, const float *dy, const float *x,
                          const float *gamma, const float *mean, const float *rstd, int64_t rows, int64_t cols,
                          int nthreads) {
    return FG_DISPATCH(fg_layernorm_backward)(dx, dgamma, dbeta, dy, x, gamma, mean, rstd, rows, cols, nthreads);
}
int fg_batchnorm_forward(float *y, float *mean, float *rstd, const float *x, const float *gamma,
                         const float *beta, int64_t rows, int64_t cols, float eps, int nthreads) {
    return FG_DISPATCH(fg_batchnorm_forward_act)(y, mean, rstd, x, gamma, beta, rows, cols, eps, FG_ACT_LINEAR,
                                                 nthreads);
}
int fg_batchnorm_forward_act(float *y, float *mean, float *rstd, const float *x, const float *gamma,
                             const float *beta, int64_t rows, int64_t cols, float eps, int act, int nthreads) {
    return FG_DISPATCH(fg_batchnorm_forward_act)(y, mean, rstd, x, gamma, beta, rows, cols, eps, act, nthreads);
}
int fg_batchnorm_backward(float *dx, float *dgamma, float *dbeta, const float *dy, const float *x,
                          const float *gamma, const float *mean, const float *rstd, int64_t rows, int64_t cols,
                          int nthreads) {
    return FG_DISPATCH(fg_batchnorm_backward_act)(dx, dgamma, dbeta, dy, x, gamma, NULL, mean, rstd, rows, cols,
                                                  FG_ACT_LINEAR, nthreads);
}
int fg_batchnorm_backward_act(float *dx, float *dgamma, float *dbeta, const float *dy, const float *x,
                              const float *gamma, const float *beta, const float *mean, const float *rstd,
                              int64_t rows, int64_t cols, int act, int nthreads) {
    return FG_DISPATCH(fg_batchnorm_backward_act)(dx, dgamma, dbeta, dy, x, gamma, beta, mean, rstd, rows, cols,
                                                  act, nthreads);
}
