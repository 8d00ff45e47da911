/* layer_layernorm.c — LayerNormalization over all of each sample's features:
 * y = (x - mean) * rstd * gamma + beta per row (fg_layernorm_* kernels).
 * Workspace: the row statistics, mean [0, ws_rows) and rstd [ws_rows, 2 ws_rows),
 * kept from a training forward to the backward. Parameter arrays: [0] gamma
 * (scale), [1] beta (center), each optional. A frozen layer's backward still
 * gives dx (the parameter gradients are not asked for). */
#include "step_internal.h"

#include "kernels/fg_norm.h"

static int ln_check(const fg_node_desc *d, const fg_shape *const *in, int n_in, int64_t n_params) {
    if (n_in != 1 || !fg_shape_equal(in[0], &d->out)) return FG_ERR_ARG;
    int64_t c = fg_shape_size(&d->out);
    if (!(d->eps > 0.0f) || d->act != FG_ACT_LINEAR) return FG_ERR_ARG;
    if (d->w_off >= 0 && !fg_range_ok(d->w_off, c, n_params)) return FG_ERR_ARG;
    if (d->b_off >= 0 && !fg_range_ok(d->b_off, c, n_params)) return FG_ERR_ARG;
    return FG_OK;
}

static int ln_params(const fg_node_desc *d, const fg_shape *const *in, int n_in, fg_param_array *p) {
    (void)in, (void)n_in;
    int64_t c = fg_shape_size(&d->out);
    p[0] = (fg_param_array){d->w_off, d->w_off >= 0 ? c : 0, d->l1_w, d->l2_w};
    p[1] = (fg_param_array){d->b_off, d->b_off >= 0 ? c : 0, d->l1_b, d->l2_b};
    return 2;
}

static int64_t ln_workspace(const fg_node_desc *d, const fg_shape *const *in, int n_in, int64_t rows) {
    (void)d, (void)in, (void)n_in;
    return 2 * rows * (int64_t)sizeof(float);
}

static int ln_dx_inplace(const fg_node_desc *d) {
    (void)d;
    return 1;
}

static int ln_forward(const fg_node_io *io, float *y, const float *const *x, int training, uint64_t *stream) {
    (void)stream;
    const fg_node_desc *d = io->d;
    const float *g = d->w_off >= 0 ? io->params + d->w_off : NULL;
    const float *b = d->b_off >= 0 ? io->params + d->b_off : NULL;
    float *st = (float *)io->ws;
    float *mean = training ? st : NULL, *rstd = training ? st + io->ws_rows : NULL;
    return fg_layernorm_forward(y, mean, rstd, x[0], g, b, io->rows, io->out_size, d->eps, io->nt);
}

static int ln_backward(const fg_node_io *io, float *const *dx, float *dy, const float *const *x, const float *y,
                       float *const *gp) {
    (void)y;
    const fg_node_desc *d = io->d;
    const float *g = d->w_off >= 0 ? io->params + d->w_off : NULL;
    const float *st = (const float *)io->ws;
    float *out = dx[0] ? dx[0] : dy; /* dx unwanted: dy is free to take it */
    return fg_layernorm_backward(out, gp[0], gp[1], dy, x[0], g, st, st + io->ws_rows, io->rows, io->out_size,
                                 io->nt);
}

const fg_layer_ops fg_layer_layernorm_ops = {
    .name = "layernorm",
    .check = ln_check,
    .params = ln_params,
    .workspace = ln_workspace,
    .dx_inplace = ln_dx_inplace,
    .forward = ln_forward,
    .backward = ln_backward,
};
