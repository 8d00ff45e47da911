/* layer_batchnorm.c — BatchNormalization over the last axis, per feature:
 * samples of any rank (..., c) are (rows * positions, c), as the Python
 * layer's view of them (a conv net's channels).
 *
 * Training (and trainable): batch statistics (fg_batchnorm_forward; mean and
 * rstd kept in the workspace for the backward) and the moving statistics
 * updated; otherwise (inference, or frozen as in Keras) y = x * scale + shift
 * with scale / shift computed into the workspace from the moving statistics,
 * and the backward is dx = dy * scale. The per-feature loops here follow the
 * Python layer operation by operation in float32 (the library is compiled
 * without FP contraction), so the state and outputs are its bits.
 * Parameter arrays: [0] gamma, [1] beta, each optional.
 *
 * act FG_ACT_RELU: the plan fused a ReLU layer that alone reads this node's
 * output (engine/compiled.py); y = relu(batch norm), and the backward takes
 * the gradient of that y: relu's backward (dy * (y > 0)) then the batch
 * norm's, in the kernel's passes (fg_batchnorm_*_act) or here in inference
 * mode — bitwise the two nodes in sequence. */
#include "step_internal.h"

#include "kernels/fg_activation.h"
#include "kernels/fg_norm.h"

#include <math.h>

static int bn_check(const fg_node_desc *d, const fg_shape *const *in, int n_in, int64_t n_params) {
    if (n_in != 1 || !fg_shape_equal(in[0], &d->out)) return FG_ERR_ARG;
    int64_t c = d->out.dim[d->out.rank - 1];
    if (!(d->eps > 0.0f) || (d->act != FG_ACT_LINEAR && d->act != FG_ACT_RELU) || d->act_has_param)
        return FG_ERR_ARG;
    if (d->w_off >= 0 && !fg_range_ok(d->w_off, c, n_params)) return FG_ERR_ARG;
    if (d->b_off >= 0 && !fg_range_ok(d->b_off, c, n_params)) return FG_ERR_ARG;
    if (!d->moving_mean || !d->moving_var || d->moving_len != c) return FG_ERR_ARG;
    if (!(d->bn_momentum >= 0.0f && d->bn_momentum <= 1.0f)) return FG_ERR_ARG;
    return FG_OK;
}

static int bn_params(const fg_node_desc *d, const fg_shape *const *in, int n_in, fg_param_array *p) {
    (void)in, (void)n_in;
    int64_t c = d->out.dim[d->out.rank - 1];
    p[0] = (fg_param_array){d->w_off, d->w_off >= 0 ? c : 0, d->l1_w, d->l2_w};
    p[1] = (fg_param_array){d->b_off, d->b_off >= 0 ? c : 0, d->l1_b, d->l2_b};
    return 2;
}

static int64_t bn_workspace(const fg_node_desc *d, const fg_shape *const *in, int n_in, int64_t rows) {
    (void)in, (void)n_in, (void)rows;
    return 2 * d->out.dim[d->out.rank - 1] * (int64_t)sizeof(float);
}

static int bn_dx_inplace(const fg_node_desc *d) {
    (void)d;
    return 1;
}

static int bn_forward(const fg_node_io *io, float *y, const float *const *x, int training, uint64_t *stream) {
    (void)stream;
    const fg_node_desc *d = io->d;
    const int64_t c = d->out.dim[d->out.rank - 1], rows = io->rows * (io->out_size / c);
    const float *gamma = d->w_off >= 0 ? io->params + d->w_off : NULL;
    const float *beta = d->b_off >= 0 ? io->params + d->b_off : NULL;
    float *mm = d->moving_mean, *mv = d->moving_var, *st = (float *)io->ws;
    const float mom = d->bn_momentum, rest = d->bn_rest, eps = d->eps;
    if (training && d->trainable) {
        float *mean = st, *rstd = st + c;
        FG_TRY(fg_batchnorm_forward_act(y, mean, rstd, x[0], gamma, beta, rows, c, eps, d->act, io->nt));
        for (int64_t j = 0; j < c; j++) {
            float t = mean[j] * rest;
            mm[j] = mm[j] * mom + t;
            float v = rstd[j] * rstd[j];
            v = 1.0f / v - eps; /* the batch variance, recovered from rstd = 1/sqrt(var + eps) */
            v = v < 0.0f ? 0.0f : v;
            v = v * rest;
            mv[j] = mv[j] * mom + v;
        }
        return FG_OK;
    }
    float *scale = st, *shift = st + c;
    for (int64_t j = 0; j < c; j++) {
        float sc = sqrtf(mv[j] + eps);
        sc = (gamma ? gamma[j] : 1.0f) / sc;
        scale[j] = sc;
        shift[j] = (beta ? beta[j] : 0.0f) - mm[j] * sc;
    }
    const int relu = d->act == FG_ACT_RELU;
    for (int64_t i = 0; i < rows; i++) {
        const float *xr = x[0] + i * c;
        float *yr = y + i * c;
        if (relu) /* fg_act_forward's relu: max(0, z), NaN and -0 pass */
            for (int64_t j = 0; j < c; j++) {
                float z = xr[j] * scale[j] + shift[j];
                yr[j] = 0.0f > z ? 0.0f : z;
            }
        else
            for (int64_t j = 0; j < c; j++) yr[j] = xr[j] * scale[j] + shift[j];
    }
    return FG_OK;
}

static int bn_backward(const fg_node_io *io, float *const *dx, float *dy, const float *const *x, const float *y,
                       float *const *gp) {
    const fg_node_desc *d = io->d;
    const int64_t c = d->out.dim[d->out.rank - 1], rows = io->rows * (io->out_size / c);
    const float *st = (const float *)io->ws;
    if (!d->trainable) { /* inference-mode forward: dx = dy * scale */
        if (!dx[0]) return FG_OK;
        if (d->act == FG_ACT_RELU) FG_TRY(fg_act_backward(dy, dy, y, rows * c, FG_ACT_RELU, io->nt));
        for (int64_t i = 0; i < rows; i++)
            for (int64_t j = 0; j < c; j++) dx[0][i * c + j] = dy[i * c + j] * st[j];
        return FG_OK;
    }
    const float *gamma = d->w_off >= 0 ? io->params + d->w_off : NULL;
    const float *beta = d->b_off >= 0 ? io->params + d->b_off : NULL;
    float *out = dx[0] ? dx[0] : dy;
    return fg_batchnorm_backward_act(out, gp[0], gp[1], dy, x[0], gamma, beta, st, st + c, rows, c, d->act,
                                     io->nt);
}

const fg_layer_ops fg_layer_batchnorm_ops = {
    .name = "batchnorm",
    .check = bn_check,
    .params = bn_params,
    .workspace = bn_workspace,
    .dx_inplace = bn_dx_inplace,
    .forward = bn_forward,
    .backward = bn_backward,
};
