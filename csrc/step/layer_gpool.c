/* layer_gpool.c — GlobalAveragePooling2D / GlobalMaxPooling2D (op 2 = average,
 * 1 = max): (..., c) -> (c) or the keepdims shape (1, 1, c), over every
 * position of the sample, with the convolution family's kernels (the ones
 * ConvMixin calls). */
#include "step_internal.h"

#include "conv/fg_conv.h"

static int gpool_check(const fg_node_desc *d, const fg_shape *const *in, int n_in, int64_t n_params) {
    (void)n_params;
    if (n_in != 1 || (d->op != 1 && d->op != 2) || d->act != FG_ACT_LINEAR || in[0]->rank < 2) return FG_ERR_ARG;
    const int64_t c = in[0]->dim[in[0]->rank - 1];
    if (fg_shape_size(&d->out) != c || d->out.dim[d->out.rank - 1] != c) return FG_ERR_ARG;
    return FG_OK;
}

static int gpool_forward(const fg_node_io *io, float *y, const float *const *x, int training, uint64_t *stream) {
    (void)training, (void)stream;
    const int64_t c = io->out_size, l = io->in_size[0] / c;
    return io->d->op == 1 ? fg_global_maxpool_forward(y, x[0], io->rows, l, c, io->nt)
                          : fg_global_avgpool_forward(y, x[0], io->rows, l, c, io->nt);
}

static int gpool_backward(const fg_node_io *io, float *const *dx, float *dy, const float *const *x, const float *y,
                          float *const *gp) {
    (void)gp;
    if (!dx[0]) return FG_OK;
    const int64_t c = io->out_size, l = io->in_size[0] / c;
    return io->d->op == 1 ? fg_global_maxpool_backward(dx[0], dy, x[0], y, io->rows, l, c, io->nt)
                          : fg_global_avgpool_backward(dx[0], dy, io->rows, l, c, io->nt);
}

const fg_layer_ops fg_layer_gpool_ops = {
    .name = "gpool",
    .check = gpool_check,
    .forward = gpool_forward,
    .backward = gpool_backward,
};
