/* layer_pool2d.c — MaxPooling2D / AveragePooling2D (and the 1-D layers as
 * h = 1): windows (kh, kw), strides, top / left padding from lower(); op 1 =
 * max, 2 = average. The kernels are the convolution family's direct ones
 * (csrc/conv), as ConvMixin calls them: windows never read padding, the max
 * backward recomputes each window's first maximum from x and y, so nothing is
 * kept between forward and backward. */
#include "step_internal.h"

#include "conv/fg_conv.h"

enum { POOL_MAX = 1, POOL_AVG = 2 };

static int pool_shape(const fg_node_desc *d, const fg_shape *in, int64_t rows, fg_conv_shape *s) {
    if (in->rank != d->out.rank || (in->rank != 3 && in->rank != 2)) return 0;
    const int r3 = in->rank == 3;
    s->n = rows;
    s->h = r3 ? in->dim[0] : 1;
    s->w = in->dim[r3 ? 1 : 0];
    s->c = in->dim[r3 ? 2 : 1];
    s->oh = r3 ? d->out.dim[0] : 1;
    s->ow = d->out.dim[r3 ? 1 : 0];
    s->f = d->out.dim[r3 ? 2 : 1];
    s->kh = d->kh, s->kw = d->kw, s->sh = d->sh, s->sw = d->sw, s->dh = 1, s->dw = 1;
    s->pt = d->pt, s->pl = d->pl, s->groups = 1;
    if (!r3 && (s->kh != 1 || s->sh != 1 || s->pt != 0)) return 0;
    return 1;
}

static int pool_check(const fg_node_desc *d, const fg_shape *const *in, int n_in, int64_t n_params) {
    (void)n_params;
    fg_conv_shape s = {0};
    if (n_in != 1 || (d->op != POOL_MAX && d->op != POOL_AVG) || d->act != FG_ACT_LINEAR) return FG_ERR_ARG;
    if (!pool_shape(d, in[0], 1, &s) || fg_conv2d_check(&s) != FG_OK || s.f != s.c) return FG_ERR_ARG;
    /* every window overlaps the input (what the kernels accept) */
    if (s.pt >= s.kh || s.pl >= s.kw || (s.oh - 1) * s.sh - s.pt >= s.h || (s.ow - 1) * s.sw - s.pl >= s.w)
        return FG_ERR_ARG;
    return FG_OK;
}

static int pool_forward(const fg_node_io *io, float *y, const float *const *x, int training, uint64_t *stream) {
    (void)training, (void)stream;
    fg_conv_shape s = {0};
    pool_shape(io->d, io->in_shape[0], io->rows, &s);
    return io->d->op == POOL_MAX ? fg_maxpool2d_forward(y, x[0], &s, io->nt) : fg_avgpool2d_forward(y, x[0], &s, io->nt);
}

static int pool_backward(const fg_node_io *io, float *const *dx, float *dy, const float *const *x, const float *y,
                         float *const *gp) {
    (void)gp;
    if (!dx[0]) return FG_OK;
    fg_conv_shape s = {0};
    pool_shape(io->d, io->in_shape[0], io->rows, &s);
    return io->d->op == POOL_MAX ? fg_maxpool2d_backward(dx[0], dy, x[0], y, &s, io->nt)
                                 : fg_avgpool2d_backward(dx[0], dy, &s, io->nt);
}

const fg_layer_ops fg_layer_pool2d_ops = {
    .name = "pool2d",
    .check = pool_check,
    .forward = pool_forward,
    .backward = pool_backward,
};
