/* fg_optim.h — fused single-pass optimizer updates over one flat buffer
 * (param, grad and every state array have n float32 elements, updated in place).
 * Conventions follow Keras 3:
 *   weight decay, before the update: decoupled == 0: g += wd*p (L2, torch-style);
 *                                    decoupled != 0: p *= (1 - lr*wd) (AdamW style).
 *   SGD      momentum == 0: p -= lr*g; else v = momentum*v - lr*g;
 *            p += v, or with nesterov p += momentum*v - lr*g. (velocity NULL iff momentum == 0)
 *   Adagrad  acc += g^2; p -= lr*g/sqrt(acc + eps)  (eps inside the sqrt; acc initialised by
 *            the caller, Keras initial_accumulator_value = 0.1)
 *   RMSprop  ms = rho*ms + (1-rho)*g^2; centered: mg = rho*mg + (1-rho)*g, denom = ms - mg^2 + eps,
 *            else denom = ms + eps; inc = lr*g/sqrt(denom); momentum > 0: mom = momentum*mom + inc,
 *            p -= mom; else p -= inc.  (mom NULL iff momentum == 0, mg NULL iff !centered)
 *   Adam     m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g^2; alpha = lr*sqrt(1-b2^t)/(1-b1^t)
 *            (double, once per call); p -= alpha*m/(sqrt(v) + eps) (Keras "epsilon hat");
 *            step t starts at 1.
 * Element-wise, so results do not depend on the thread count. The float32
 * operations follow NumpyOps' order (e.g. p -= (g / sqrt(acc + eps)) * lr), so
 * the two backends agree to the rounding of the scalar constants. */
#ifndef FG_OPTIM_H
#define FG_OPTIM_H
#include "fg_common.h"
#ifdef __cplusplus
extern "C" {
#endif

int fg_sgd_update(float *param, float *velocity, const float *grad, int64_t n, float lr, float momentum,
                  int nesterov, float weight_decay, int decoupled, int nthreads);
int fg_adagrad_update(float *param, float *accum, const float *grad, int64_t n, float lr, float eps,
                      float weight_decay, int decoupled, int nthreads);
int fg_rmsprop_update(float *param, float *ms, float *mom, float *mg, const float *grad, int64_t n, float lr,
                      float rho, float momentum, float eps, int centered, float weight_decay, int decoupled,
                      int nthreads);
int fg_adam_update(float *param, float *m, float *v, const float *grad, int64_t n, float lr, float beta1,
                   float beta2, float eps, int64_t step, float weight_decay, int decoupled, int nthreads);

#ifdef __cplusplus
}
#endif
#endif
