/* fg_lossopt.h — Keras 3 losses and optimizers beyond those of csrc/kernels.
 *
 * Losses: fg_pointwise_loss(loss_sum, dpred, pred, target, sw, rows, cols, kind, param,
 * grad_scale, nthreads) over (rows, cols) float32 arrays (sw: (rows,) or NULL):
 *   *loss_sum = sum_i w_i * v_i (double, rows in a fixed chunk order) where v_i is the
 *   row's SUM of the per-element values below (the caller divides by rows * cols for
 *   the "mean over the last axis" losses, by rows for the row-wise ones);
 *   dpred (or NULL) = grad_scale * w_i * d v_i / d pred.
 *   MAE      |p - t|
 *   MAPE     100 |(t - p) / max(|t|, 1e-7)|
 *   MSLE     (log(max(p, 1e-7) + 1) - log(max(t, 1e-7) + 1))^2
 *   HUBER    e = p - t: |e| <= delta ? 0.5 e^2 : delta |e| - 0.5 delta^2   (param = delta)
 *   LOGCOSH  x + softplus(-2x) - log 2, x = p - t (value in double; grad tanh(x))
 *   POISSON  p - t log(p + 1e-7)
 *   HINGE    max(1 - t p, 0), SQHINGE max(1 - t p, 0)^2; t in {0, 1} over the WHOLE call
 *            is first mapped to 2t - 1 (Keras's convert_binary_labels_to_hinge)
 *   KLD      t' log(t' / p'), t' = clip(t, 1e-7, 1), p' = clip(p, 1e-7, 1) (row-wise sum;
 *            no gradient where p is outside [1e-7, 1])
 *   CATHINGE max(max_j (1 - t_j) p_j - sum_j t_j p_j + 1, 0)                (row-wise)
 *   COSINE   -sum_j t_j p_j * r(t) r(p), r(x) = min(1/||x||, 1e7)           (row-wise)
 * Optimizers: fg_optx_update over one flat buffer (n floats, updated in place; state
 * arrays s1/s2/s3 as listed), Keras 3's update formulas, decay first as in fg_optim.h:
 *   NADAM    s1 m, s2 v;  u_t = b1 (1 - 0.5 * 0.96^t), u_prod_t = prod_{s<=t} u_s (double)
 *            m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
 *            m_hat = c_m m + c_g g, c_m = u_{t+1} / (1 - u_prod_t u_{t+1}),
 *            c_g = (1 - u_t) / (1 - u_prod_t); v_hat = v / (1 - b2^t);
 *            p -= (m_hat lr) / (sqrt(v_hat) + eps)
 *   ADAMAX   s1 m, s2 u;  m = b1 m + (1-b1) g; u = max(b2 u, |g|);
 *            p -= (lr m) / ((1 - b1^t) (u + eps))
 *   ADADELTA s1 acc_g, s2 acc_dx;  acc_g = rho acc_g + (1-rho) g^2;
 *            d = -(sqrt(acc_dx + eps) g) / sqrt(acc_g + eps); acc_dx = rho acc_dx + (1-rho) d^2;
 *            p += lr d
 *   FTRL     s1 accumulator (initialised by the caller), s2 linear;
 *            gs = g + (2 l2_shrinkage) p; na = acc + g^2;
 *            linear += gs - ((na^-lr_power - acc^-lr_power) / lr) p;
 *            q = na^-lr_power / lr + 2 (l2 + beta / (2 lr)); p = (clip(linear, -l1, l1) - linear) / q;
 *            acc = na   (x^0.5 is sqrt; lr > 0)
 *   LION     s1 m;  c = b1 m + (1-b1) g; p -= lr sign(c); m = b2 m + (1-b2) g
 *   AMSGRAD  s1 m, s2 v, s3 v_hat: Adam (fg_optim.h) with v_hat = max(v_hat, v) in the
 *            denominator
 * Decaying state below FLT_MIN is stored as 0 (csrc/kernels/optim.c's rule). Element-wise:
 * the same bits for any thread count. */
#ifndef FG_LOSSOPT_H
#define FG_LOSSOPT_H
#include "fg_common.h"
#ifdef __cplusplus
extern "C" {
#endif

enum {
    FG_PLOSS_MAE = 1,
    FG_PLOSS_MAPE = 2,
    FG_PLOSS_MSLE = 3,
    FG_PLOSS_HUBER = 4,
    FG_PLOSS_LOGCOSH = 5,
    FG_PLOSS_POISSON = 6,
    FG_PLOSS_HINGE = 7,
    FG_PLOSS_SQHINGE = 8,
    FG_PLOSS_KLD = 9,
    FG_PLOSS_CATHINGE = 10,
    FG_PLOSS_COSINE = 11,
    FG_PLOSS_COUNT = 12
};
/* 1: the loss of `kind` is the row's sum (KLD, CATHINGE, COSINE); 0: mean over the row */
static inline int fg_ploss_rowwise(int kind) {
    return kind == FG_PLOSS_KLD || kind == FG_PLOSS_CATHINGE || kind == FG_PLOSS_COSINE;
}

int fg_pointwise_loss(double *loss_sum, float *dpred, const float *pred, const float *target,
                      const float *sample_weight, int64_t rows, int64_t cols, int kind, float param,
                      float grad_scale, int nthreads);

enum {
    FG_OPTX_NADAM = 1,
    FG_OPTX_ADAMAX = 2,
    FG_OPTX_ADADELTA = 3,
    FG_OPTX_FTRL = 4,
    FG_OPTX_LION = 5,
    FG_OPTX_AMSGRAD = 6,
    FG_OPTX_COUNT = 7
};

typedef struct fg_optx_args {
    int kind;            /* FG_OPTX_* */
    int decoupled;       /* weight decay: 1 p *= 1 - lr wd (Keras), 0 g += wd p */
    int64_t step;        /* t, from 1 */
    float lr, beta1, beta2, rho, eps, weight_decay;
    float lr_power, l1, l2, l2_shrinkage, beta; /* Ftrl */
} fg_optx_args;

int fg_optx_update(float *param, float *s1, float *s2, float *s3, const float *grad, int64_t n,
                   const fg_optx_args *args, int nthreads);

#ifdef __cplusplus
}
#endif
#endif
