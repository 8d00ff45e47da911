/* layer_conv2d.c — Conv2D / Conv1D: y = act(conv(x, W) + b), channels_last.
 *
 * Per-sample shapes: (h, w, c) -> (oh, ow, f), or for Conv1D (l, c) ->
 * (ol, f) run as h = 1. The window (kh, kw, sh, sw, dh, dw, pt, pl) and
 * groups come from the layer's lower(); W is (kh, kw, c / groups, f) in
 * Keras layout. The maths is the convolution family's (csrc/conv): the
 * forward is one implicit GEMM per group with bias + activation fused; the
 * workspace keeps the pre-activation z when the activation's backward reads
 * its input. Backward, as ConvMixin.conv2d_backward does it: dz = act'(dy)
 * (in place over dy), dW = the filter gradient, db = column sums of dz over
 * (rows oh ow, f), dx = the data gradient — the same kernels in the same
 * order, so the bits are the Python path's. Parameter arrays: [0] kernel,
 * [1] bias. */
#include "step_internal.h"

#include "conv/fg_conv.h"
#include "kernels/fg_activation.h"
#include "kernels/fg_reduce.h"

/* the fg_conv_shape of `rows` samples; 0 if the shapes do not fit */
static int conv_shape(const fg_node_desc *d, const fg_shape *in, int64_t rows, fg_conv_shape *s) {
    if (in->rank != d->out.rank || (in->rank != 3 && in->rank != 2)) return 0;
    const int r3 = in->rank == 3;
    s->n = rows;
    s->h = r3 ? in->dim[0] : 1;
    s->w = in->dim[r3 ? 1 : 0];
    s->c = in->dim[r3 ? 2 : 1];
    s->oh = r3 ? d->out.dim[0] : 1;
    s->ow = d->out.dim[r3 ? 1 : 0];
    s->f = d->out.dim[r3 ? 2 : 1];
    s->kh = d->kh, s->kw = d->kw, s->sh = d->sh, s->sw = d->sw, s->dh = d->dh, s->dw = d->dw;
    s->pt = d->pt, s->pl = d->pl, s->groups = d->groups;
    if (!r3 && (s->kh != 1 || s->sh != 1 || s->dh != 1 || s->pt != 0)) return 0;
    return 1;
}

static int64_t kernel_count(const fg_conv_shape *s) { return s->kh * s->kw * (s->c / s->groups) * s->f; }

static int conv_check(const fg_node_desc *d, const fg_shape *const *in, int n_in, int64_t n_params) {
    fg_conv_shape s = {0};
    if (n_in != 1 || !conv_shape(d, in[0], 1, &s) || fg_conv2d_check(&s) != FG_OK) return FG_ERR_ARG;
    if (!fg_act_valid(d->act) || d->act_has_param) return FG_ERR_ARG; /* element-wise, by name */
    if (d->w_off < 0 || !fg_range_ok(d->w_off, kernel_count(&s), n_params)) return FG_ERR_ARG;
    if (d->b_off >= 0 && !fg_range_ok(d->b_off, s.f, n_params)) return FG_ERR_ARG;
    return FG_OK;
}

static int conv_params(const fg_node_desc *d, const fg_shape *const *in, int n_in, fg_param_array *p) {
    (void)n_in;
    fg_conv_shape s = {0};
    conv_shape(d, in[0], 1, &s);
    p[0] = (fg_param_array){d->w_off, kernel_count(&s), d->l1_w, d->l2_w};
    p[1] = (fg_param_array){d->b_off, d->b_off >= 0 ? s.f : 0, d->l1_b, d->l2_b};
    return 2;
}

static int64_t conv_workspace(const fg_node_desc *d, const fg_shape *const *in, int n_in, int64_t rows) {
    (void)in, (void)n_in;
    return fg_act_backward_needs_input(d->act) ? rows * fg_shape_size(&d->out) * (int64_t)sizeof(float) : 0;
}

static int conv_forward(const fg_node_io *io, float *y, const float *const *x, int training, uint64_t *stream) {
    (void)stream;
    const fg_node_desc *d = io->d;
    fg_conv_shape s = {0};
    conv_shape(d, io->in_shape[0], io->rows, &s);
    const float *W = io->params + d->w_off;
    const float *b = d->b_off >= 0 ? io->params + d->b_off : NULL;
    float *z = (training && fg_act_backward_needs_input(d->act)) ? (float *)io->ws : NULL;
    return fg_conv2d_forward(y, z, x[0], W, b, &s, d->act, io->nt);
}

static int conv_backward(const fg_node_io *io, float *const *dx, float *dy, const float *const *x, const float *y,
                         float *const *gp) {
    const fg_node_desc *d = io->d;
    fg_conv_shape s = {0};
    conv_shape(d, io->in_shape[0], io->rows, &s);
    float *dz = dy;
    if (d->act != FG_ACT_LINEAR) {
        const float *ref = fg_act_backward_needs_input(d->act) ? (const float *)io->ws : y;
        FG_TRY(fg_act_backward(dz, dy, ref, io->rows * io->out_size, d->act, io->nt));
    }
    if (gp[0]) FG_TRY(fg_conv2d_backward_filter(gp[0], dz, x[0], &s, io->nt));
    if (gp[1]) FG_TRY(fg_sum_rows(gp[1], dz, s.n * s.oh * s.ow, s.f, io->nt));
    if (dx[0]) FG_TRY(fg_conv2d_backward_data(dx[0], dz, io->params + d->w_off, &s, io->nt));
    return FG_OK;
}

const fg_layer_ops fg_layer_conv2d_ops = {
    .name = "conv2d",
    .check = conv_check,
    .params = conv_params,
    .workspace = conv_workspace,
    .forward = conv_forward,
    .backward = conv_backward,
};
