/* layer_depthwise2d.c — DepthwiseConv2D: y = act(depthwise(x, W) + b),
 * channels_last, input channel c convolved with `multiplier` filters of its
 * own (output channel c * multiplier + m).
 *
 * Per-sample shapes (h, w, c) -> (oh, ow, c * multiplier), or for
 * DepthwiseConv1D (l, c) -> (ol, c * multiplier) run as h = 1 (kh = sh = dh =
 * 1, pt = 0); W is (kh, kw, c,
 * multiplier) in Keras layout; the window (kh, kw, sh, sw, dh, dw, pt, pl) comes
 * from the layer's lower(). The maths is the convolution family's direct
 * depthwise kernels (csrc/conv), called as ConvMixin.depthwise_conv2d_* calls
 * them: forward with bias + activation fused (the workspace keeps the
 * pre-activation when the activation's backward reads its input); backward
 * dz = act'(dy) in place over dy, dW = the depthwise filter gradient, db =
 * column sums of dz, dx = the depthwise data gradient, in that order.
 * Parameter arrays: [0] kernel, [1] bias. */
#include "step_internal.h"

#include "conv/fg_conv.h"
#include "kernels/fg_activation.h"
#include "kernels/fg_reduce.h"

static int dw_shape(const fg_node_desc *d, const fg_shape *in, int64_t rows, fg_conv_shape *s) {
    if (in->rank != d->out.rank || d->multiplier < 1) return 0;
    if (!fg_shape_hwc(in, &s->h, &s->w, &s->c) || !fg_shape_hwc(&d->out, &s->oh, &s->ow, &s->f)) return 0;
    if (in->rank == 2 && (d->kh != 1 || d->sh != 1 || d->dh != 1 || d->pt != 0)) return 0;
    s->n = rows;
    s->kh = d->kh, s->kw = d->kw, s->sh = d->sh, s->sw = d->sw, s->dh = d->dh, s->dw = d->dw;
    s->pt = d->pt, s->pl = d->pl, s->groups = s->c;
    return s->f == s->c * d->multiplier;
}

static int dw_check(const fg_node_desc *d, const fg_shape *const *in, int n_in, int64_t n_params) {
    fg_conv_shape s = {0};
    if (n_in != 1 || !dw_shape(d, in[0], 1, &s) || fg_conv2d_check(&s) != FG_OK) return FG_ERR_ARG;
    if (!fg_act_valid(d->act) || d->act_has_param) return FG_ERR_ARG;
    if (d->w_off < 0 || !fg_range_ok(d->w_off, s.kh * s.kw * s.f, n_params)) return FG_ERR_ARG;
    if (d->b_off >= 0 && !fg_range_ok(d->b_off, s.f, n_params)) return FG_ERR_ARG;
    return FG_OK;
}

static int dw_params(const fg_node_desc *d, const fg_shape *const *in, int n_in, fg_param_array *p) {
    (void)n_in;
    fg_conv_shape s = {0};
    dw_shape(d, in[0], 1, &s);
    p[0] = (fg_param_array){d->w_off, s.kh * s.kw * s.f, d->l1_w, d->l2_w};
    p[1] = (fg_param_array){d->b_off, d->b_off >= 0 ? s.f : 0, d->l1_b, d->l2_b};
    return 2;
}

static int64_t dw_workspace(const fg_node_desc *d, const fg_shape *const *in, int n_in, int64_t rows) {
    (void)in, (void)n_in;
    return fg_act_backward_needs_input(d->act) ? rows * fg_shape_size(&d->out) * (int64_t)sizeof(float) : 0;
}

static int dw_forward(const fg_node_io *io, float *y, const float *const *x, int training, uint64_t *stream) {
    (void)stream;
    const fg_node_desc *d = io->d;
    fg_conv_shape s = {0};
    dw_shape(d, io->in_shape[0], io->rows, &s);
    const float *b = d->b_off >= 0 ? io->params + d->b_off : NULL;
    float *z = (training && fg_act_backward_needs_input(d->act)) ? (float *)io->ws : NULL;
    return fg_depthwise2d_forward(y, z, x[0], io->params + d->w_off, b, &s, d->act, io->nt);
}

static int dw_backward(const fg_node_io *io, float *const *dx, float *dy, const float *const *x, const float *y,
                       float *const *gp) {
    const fg_node_desc *d = io->d;
    fg_conv_shape s = {0};
    dw_shape(d, io->in_shape[0], io->rows, &s);
    if (d->act != FG_ACT_LINEAR) {
        const float *ref = fg_act_backward_needs_input(d->act) ? (const float *)io->ws : y;
        FG_TRY(fg_act_backward(dy, dy, ref, io->rows * io->out_size, d->act, io->nt));
    }
    if (gp[0]) FG_TRY(fg_depthwise2d_backward_filter(gp[0], dy, x[0], &s, io->nt));
    if (gp[1]) FG_TRY(fg_sum_rows(gp[1], dy, s.n * s.oh * s.ow, s.f, io->nt));
    if (dx[0]) FG_TRY(fg_depthwise2d_backward_data(dx[0], dy, io->params + d->w_off, &s, io->nt));
    return FG_OK;
}

const fg_layer_ops fg_layer_depthwise2d_ops = {
    .name = "depthwise2d",
    .check = dw_check,
    .params = dw_params,
    .workspace = dw_workspace,
    .forward = dw_forward,
    .backward = dw_backward,
};
