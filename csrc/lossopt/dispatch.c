/* dispatch.c — exported entry points of the lossopt family: each forwards to the
 * ISA copy selected by fg_isa_active(). Compiled once. */
#include "fg_lossopt.h"

FG_DECLARE_ISA(int, fg_pointwise_loss, (double *, float *, const float *, const float *, const float *, int64_t,
                                        int64_t, int, float, float, int))
FG_DECLARE_ISA(int, fg_optx_update, (float *, float *, float *, float *, const float *, int64_t,
                                     const fg_optx_args *, int))

int fg_pointwise_loss(double *loss_sum, float *dpred, const float *pred, const float *target,
                      const float *sample_weight, int64_t rows, int64_t cols, int kind, float param,
                      float grad_scale, int nthreads) {
    return FG_DISPATCH(fg_pointwise_loss)(loss_sum, dpred, pred, target, sample_weight, rows, cols, kind, param,
                                          grad_scale, nthreads);
}

int fg_optx_update(float *param, float *s1, float *s2, float *s3, const float *grad, int64_t n,
                   const fg_optx_args *args, int nthreads) {
    return FG_DISPATCH(fg_optx_update)(param, s1, s2, s3, grad, n, args, nthreads);
}
