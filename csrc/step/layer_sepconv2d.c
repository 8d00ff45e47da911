/* layer_sepconv2d.c — SeparableConv2D: t = depthwise(x, Wd) (no bias, linear),
 * y = act(conv1x1(t, Wp) + b), channels_last.
 *
 * Per-sample shapes (h, w, c) -> (oh, ow, f) through the middle tensor t of
 * shape (oh, ow, c * multiplier); SeparableConv1D (l, c) -> (ol, f) runs as
 * h = 1 (kh = sh = dh = 1, pt = 0). Wd (kh, kw, c, multiplier) at w_off, Wp
 * (1, 1, c * multiplier, f) at w2_off, b (f) at b_off; the window comes from
 * the layer's lower(). The same kernels in the same order as
 * SeparableConv2D.forward / backward run them through ConvMixin: forward the
 * depthwise forward into t, then the implicit-GEMM conv with bias +
 * activation fused; backward dz = act'(dy) in place over dy, dWp = the filter
 * gradient over t, db = column sums of dz, dt = the data gradient, then
 * dWd = the depthwise filter gradient of dt and dx its data gradient.
 * Workspace (ws_rows rows each): t, dt, and the pre-activation z when the
 * activation's backward reads its input. Parameter arrays: [0] depthwise
 * kernel, [1] pointwise kernel, [2] bias (the layer's weight order). */
#include "step_internal.h"

#include "conv/fg_conv.h"
#include "kernels/fg_activation.h"
#include "kernels/fg_reduce.h"

/* the depthwise step (dws) and the pointwise step (pws) for `rows` samples */
static int sep_shapes(const fg_node_desc *d, const fg_shape *in, int64_t rows, fg_conv_shape *dws,
                      fg_conv_shape *pws) {
    int64_t h, w, c, oh, ow, f;
    if (in->rank != d->out.rank || d->multiplier < 1) return 0;
    if (!fg_shape_hwc(in, &h, &w, &c) || !fg_shape_hwc(&d->out, &oh, &ow, &f)) return 0;
    if (in->rank == 2 && (d->kh != 1 || d->sh != 1 || d->dh != 1 || d->pt != 0)) return 0;
    const int64_t mid = c * d->multiplier;
    *dws = (fg_conv_shape){.n = rows, .h = h, .w = w, .c = c, .kh = d->kh, .kw = d->kw, .f = mid, .oh = oh,
                           .ow = ow, .sh = d->sh, .sw = d->sw, .dh = d->dh, .dw = d->dw, .pt = d->pt, .pl = d->pl,
                           .groups = c};
    *pws = (fg_conv_shape){.n = rows, .h = oh, .w = ow, .c = mid, .kh = 1, .kw = 1, .f = f, .oh = oh, .ow = ow,
                           .sh = 1, .sw = 1, .dh = 1, .dw = 1, .pt = 0, .pl = 0, .groups = 1};
    return 1;
}

static int64_t mid_size(const fg_conv_shape *dws) { return dws->oh * dws->ow * dws->f; }

static int sep_check(const fg_node_desc *d, const fg_shape *const *in, int n_in, int64_t n_params) {
    fg_conv_shape a = {0}, p = {0};
    if (n_in != 1 || !sep_shapes(d, in[0], 1, &a, &p)) return FG_ERR_ARG;
    if (fg_conv2d_check(&a) != FG_OK || fg_conv2d_check(&p) != FG_OK) return FG_ERR_ARG;
    if (!fg_act_valid(d->act) || d->act_has_param) return FG_ERR_ARG;
    if (d->w_off < 0 || !fg_range_ok(d->w_off, a.kh * a.kw * a.f, n_params)) return FG_ERR_ARG;
    if (d->w2_off < 0 || !fg_range_ok(d->w2_off, p.c * p.f, n_params)) return FG_ERR_ARG;
    if (d->b_off >= 0 && !fg_range_ok(d->b_off, p.f, n_params)) return FG_ERR_ARG;
    return FG_OK;
}

static int sep_params(const fg_node_desc *d, const fg_shape *const *in, int n_in, fg_param_array *p) {
    (void)n_in;
    fg_conv_shape a = {0}, q = {0};
    sep_shapes(d, in[0], 1, &a, &q);
    p[0] = (fg_param_array){d->w_off, a.kh * a.kw * a.f, d->l1_w, d->l2_w};
    p[1] = (fg_param_array){d->w2_off, q.c * q.f, d->l1_w2, d->l2_w2};
    p[2] = (fg_param_array){d->b_off, d->b_off >= 0 ? q.f : 0, d->l1_b, d->l2_b};
    return 3;
}

static int64_t sep_workspace(const fg_node_desc *d, const fg_shape *const *in, int n_in, int64_t rows) {
    (void)n_in;
    fg_conv_shape a = {0}, p = {0};
    sep_shapes(d, in[0], rows, &a, &p);
    int64_t floats = 2 * rows * mid_size(&a);
    if (fg_act_backward_needs_input(d->act)) floats += rows * fg_shape_size(&d->out);
    return floats * (int64_t)sizeof(float);
}

static int sep_forward(const fg_node_io *io, float *y, const float *const *x, int training, uint64_t *stream) {
    (void)stream;
    const fg_node_desc *d = io->d;
    fg_conv_shape a = {0}, p = {0};
    sep_shapes(d, io->in_shape[0], io->rows, &a, &p);
    float *t = (float *)io->ws;
    float *z = (training && fg_act_backward_needs_input(d->act)) ? t + 2 * io->ws_rows * mid_size(&a) : NULL;
    const float *b = d->b_off >= 0 ? io->params + d->b_off : NULL;
    FG_TRY(fg_depthwise2d_forward(t, NULL, x[0], io->params + d->w_off, NULL, &a, FG_ACT_LINEAR, io->nt));
    return fg_conv2d_forward(y, z, t, io->params + d->w2_off, b, &p, d->act, io->nt);
}

static int sep_backward(const fg_node_io *io, float *const *dx, float *dy, const float *const *x, const float *y,
                        float *const *gp) {
    const fg_node_desc *d = io->d;
    fg_conv_shape a = {0}, p = {0};
    sep_shapes(d, io->in_shape[0], io->rows, &a, &p);
    const float *t = (const float *)io->ws;
    float *dt = (float *)io->ws + io->ws_rows * mid_size(&a);
    if (d->act != FG_ACT_LINEAR) {
        const float *ref = fg_act_backward_needs_input(d->act) ? t + 2 * io->ws_rows * mid_size(&a) : y;
        FG_TRY(fg_act_backward(dy, dy, ref, io->rows * io->out_size, d->act, io->nt));
    }
    if (gp[1]) FG_TRY(fg_conv2d_backward_filter(gp[1], dy, t, &p, io->nt));
    if (gp[2]) FG_TRY(fg_sum_rows(gp[2], dy, p.n * p.oh * p.ow, p.f, io->nt));
    if (!gp[0] && !dx[0]) return FG_OK;
    FG_TRY(fg_conv2d_backward_data(dt, dy, io->params + d->w2_off, &p, io->nt));
    if (gp[0]) FG_TRY(fg_depthwise2d_backward_filter(gp[0], dt, x[0], &a, io->nt));
    if (dx[0]) FG_TRY(fg_depthwise2d_backward_data(dx[0], dt, io->params + d->w_off, &a, io->nt));
    return FG_OK;
}

const fg_layer_ops fg_layer_sepconv2d_ops = {
    .name = "sepconv2d",
    .check = sep_check,
    .params = sep_params,
    .workspace = sep_workspace,
    .forward = sep_forward,
    .backward = sep_backward,
};
