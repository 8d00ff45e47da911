/* fg_loss.h — fused losses with their gradients, from logits / predictions.
 *
 * Shapes: logits/pred/target/dlogits are (rows, cols) row-major float32;
 * labels (rows,) int64; sample_weight (rows,) float32 or NULL (weight 1).
 * loss_sum (double) = sum_i w_i * l_i, taken in a fixed order (row chunks whose
 * size depends only on rows, partials added in chunk order), so it is bitwise
 * identical for any thread count. Gradients: grad_scale * w_i * dl_i/dlogits;
 * the gradient pointer may be NULL to compute the loss only. The gradient may
 * alias the logits (computed in place). */
#ifndef FG_LOSS_H
#define FG_LOSS_H
#include "fg_common.h"
#ifdef __cplusplus
extern "C" {
#endif

/* l_i = logsumexp(x_i) - x_i[label_i]; dlogits = grad_scale*w_i*(softmax(x_i) - onehot(label_i));
 * correct (may be NULL) = number of rows whose first argmax equals the label;
 * FG_ERR_LABEL on a label outside [0, cols) */
int fg_sparse_softmax_xent(double *loss_sum, float *dlogits, int64_t *correct, const float *logits,
                           const int64_t *labels, const float *sample_weight, int64_t rows, int64_t cols,
                           float grad_scale, int nthreads);
/* dense targets (one-hot or probability rows): l_i = sum_j t_ij (logsumexp(x_i) - x_ij);
 * dlogits = grad_scale*w_i*(softmax(x_i)*sum_j t_ij - t_i) */
int fg_softmax_xent(double *loss_sum, float *dlogits, const float *logits, const float *target,
                    const float *sample_weight, int64_t rows, int64_t cols, float grad_scale, int nthreads);
/* sigmoid + binary cross-entropy from logits, summed over cols:
 * l_ij = max(x,0) - x*z + log1p(exp(-|x|)); dlogits = grad_scale*w_i*(sigmoid(x) - z) */
int fg_sigmoid_bce(double *loss_sum, float *dlogits, const float *logits, const float *target,
                   const float *sample_weight, int64_t rows, int64_t cols, float grad_scale, int nthreads);
/* loss_sum = sum_i w_i sum_j (p-t)^2 (exact squares of the float32 differences, double
 * accumulation in an order fixed by cols alone — sequential below 16 columns, 16 lanes
 * combined in a fixed tree above — so the same bits on every ISA);
 * dpred = grad_scale * w_i * 2 (p - t) */
int fg_mse(double *loss_sum, float *dpred, const float *pred, const float *target, const float *sample_weight,
           int64_t rows, int64_t cols, float grad_scale, int nthreads);

/* binary cross-entropy from probabilities (Keras): q = clip(p, eps, 1 - eps),
 * l_ij = -(t log q + (1 - t) log1p(-q)) summed over cols;
 * dprob = grad_scale * w_i * (-(t/q) + (1-t)/(1-q)) where eps <= p <= 1 - eps, else 0 */
int fg_bce_prob(double *loss_sum, float *dprob, const float *prob, const float *target,
                const float *sample_weight, int64_t rows, int64_t cols, float eps, float grad_scale,
                int nthreads);
/* categorical cross-entropy from probabilities (Keras): s_i = sum_j p_ij, q = p / s,
 * qc = clip(q, eps, 1 - eps), l_i = -sum_j t log qc; gradient w.r.t. the raw p:
 * gq = -(t / qc) where eps <= q <= 1 - eps else 0; dprob = grad_scale * w_i * (gq - sum_j gq q) / s */
int fg_cce_prob(double *loss_sum, float *dprob, const float *prob, const float *target,
                const float *sample_weight, int64_t rows, int64_t cols, float eps, float grad_scale,
                int nthreads);

#ifdef __cplusplus
}
#endif
#endif
