/* layer_conv2dt.c — Conv2DTranspose: y = act(conv^T(x, W) + b), channels_last.
 *
 * Per-sample shapes (h, w, c) -> (oh, ow, f), or for Conv1DTranspose (l, c)
 * -> (ol, f) run as h = 1 (kh = sh = dh = 1, pt = 0); W is (kh, kw, f, c) in Keras
 * layout, which is the kernel of the conv (oh, ow, f) -> (h, w, c) this layer
 * transposes (window kh kw sh sw dh dw, top / left padding pt pl from the
 * layer's lower(); the bottom / right follow from the shapes and may be
 * negative with output_padding). So, as ConvMixin.conv2d_transpose_* runs it:
 * forward z = that conv's data gradient of x, then z += b and y = act(z) (the
 * workspace keeps z when the activation's backward reads its input);
 * backward dz = act'(dy) in place over dy, dW = the conv's filter gradient
 * with roles swapped (output gradient x, input dz), db = column sums of dz,
 * dx = the conv's forward of dz — the same kernels in the same order, so the
 * bits are the Python path's. Parameter arrays: [0] kernel, [1] bias. */
#include "step_internal.h"

#include "conv/fg_conv.h"
#include "kernels/fg_activation.h"
#include "kernels/fg_reduce.h"

/* the conv being transposed, for `rows` samples */
static int t_shape(const fg_node_desc *d, const fg_shape *in, int64_t rows, fg_conv_shape *s) {
    int64_t h, w, c, oh, ow, f;
    if (in->rank != d->out.rank || !fg_shape_hwc(in, &h, &w, &c) || !fg_shape_hwc(&d->out, &oh, &ow, &f)) return 0;
    if (in->rank == 2 && (d->kh != 1 || d->sh != 1 || d->dh != 1 || d->pt != 0)) return 0;
    /* the transposed conv maps the output (oh, ow, f) back to the input (h, w, c) */
    *s = (fg_conv_shape){.n = rows, .h = oh, .w = ow, .c = f, .kh = d->kh, .kw = d->kw, .f = c, .oh = h, .ow = w,
                         .sh = d->sh, .sw = d->sw, .dh = d->dh, .dw = d->dw, .pt = d->pt, .pl = d->pl, .groups = 1};
    return 1;
}

static int64_t t_kernel_count(const fg_conv_shape *s) { return s->kh * s->kw * s->c * s->f; }

static int t_check(const fg_node_desc *d, const fg_shape *const *in, int n_in, int64_t n_params) {
    fg_conv_shape s = {0};
    if (n_in != 1 || !t_shape(d, in[0], 1, &s) || fg_conv2d_check(&s) != FG_OK) return FG_ERR_ARG;
    /* the output is the transposed conv's: out = (in - 1) s + (k - 1) d + 1 - top - bottom on
       each axis, with a bottom / right above -max(s, d) (output_padding < max(strides,
       dilation)), so the last window starts inside the output */
    const int64_t pb = (s.oh - 1) * s.sh + (s.kh - 1) * s.dh + 1 - s.pt - s.h;
    const int64_t pr = (s.ow - 1) * s.sw + (s.kw - 1) * s.dw + 1 - s.pl - s.w;
    if (pb <= -(s.sh > s.dh ? s.sh : s.dh) || pr <= -(s.sw > s.dw ? s.sw : s.dw)) return FG_ERR_ARG;
    if ((s.oh - 1) * s.sh - s.pt >= s.h || (s.ow - 1) * s.sw - s.pl >= s.w) return FG_ERR_ARG;
    if (!fg_act_valid(d->act) || d->act_has_param) return FG_ERR_ARG;
    if (d->w_off < 0 || !fg_range_ok(d->w_off, t_kernel_count(&s), n_params)) return FG_ERR_ARG;
    if (d->b_off >= 0 && !fg_range_ok(d->b_off, s.c, n_params)) return FG_ERR_ARG;
    return FG_OK;
}

static int t_params(const fg_node_desc *d, const fg_shape *const *in, int n_in, fg_param_array *p) {
    (void)n_in;
    fg_conv_shape s = {0};
    t_shape(d, in[0], 1, &s);
    p[0] = (fg_param_array){d->w_off, t_kernel_count(&s), d->l1_w, d->l2_w};
    p[1] = (fg_param_array){d->b_off, d->b_off >= 0 ? s.c : 0, d->l1_b, d->l2_b};
    return 2;
}

static int64_t t_workspace(const fg_node_desc *d, const fg_shape *const *in, int n_in, int64_t rows) {
    (void)in, (void)n_in;
    return fg_act_backward_needs_input(d->act) ? rows * fg_shape_size(&d->out) * (int64_t)sizeof(float) : 0;
}

static int t_forward(const fg_node_io *io, float *y, const float *const *x, int training, uint64_t *stream) {
    (void)stream;
    const fg_node_desc *d = io->d;
    fg_conv_shape s = {0};
    t_shape(d, io->in_shape[0], io->rows, &s);
    float *z = (training && fg_act_backward_needs_input(d->act)) ? (float *)io->ws : y;
    FG_TRY(fg_conv2d_backward_data(z, x[0], io->params + d->w_off, &s, io->nt));
    if (d->b_off >= 0) {
        const float *b = io->params + d->b_off;
        const int64_t pix = s.n * s.h * s.w;
        for (int64_t i = 0; i < pix; i++)
            for (int64_t k = 0; k < s.c; k++) z[i * s.c + k] += b[k];
    }
    if (d->act != FG_ACT_LINEAR || z != y) FG_TRY(fg_act_forward(y, z, io->rows * io->out_size, d->act, io->nt));
    return FG_OK;
}

static int t_backward(const fg_node_io *io, float *const *dx, float *dy, const float *const *x, const float *y,
                      float *const *gp) {
    const fg_node_desc *d = io->d;
    fg_conv_shape s = {0};
    t_shape(d, io->in_shape[0], io->rows, &s);
    if (d->act != FG_ACT_LINEAR) {
        const float *ref = fg_act_backward_needs_input(d->act) ? (const float *)io->ws : y;
        FG_TRY(fg_act_backward(dy, dy, ref, io->rows * io->out_size, d->act, io->nt));
    }
    if (gp[0]) FG_TRY(fg_conv2d_backward_filter(gp[0], x[0], dy, &s, io->nt));
    if (gp[1]) FG_TRY(fg_sum_rows(gp[1], dy, s.n * s.h * s.w, s.c, io->nt));
    if (dx[0]) FG_TRY(fg_conv2d_forward(dx[0], NULL, dy, io->params + d->w_off, NULL, &s, FG_ACT_LINEAR, io->nt));
    return FG_OK;
}

const fg_layer_ops fg_layer_conv2dt_ops = {
    .name = "conv2dt",
    .check = t_check,
    .params = t_params,
    .workspace = t_workspace,
    .forward = t_forward,
    .backward = t_backward,
};
