/* layer_reshape.c — Reshape / Flatten: the same row-major data under another
 * per-sample shape, so the output is the input and the gradient is dy. */
#include "step_internal.h"

#include <string.h>

static int reshape_check(const fg_node_desc *d, const fg_shape *const *in, int n_in, int64_t n_params) {
    (void)n_params;
    if (n_in != 1 || fg_shape_size(in[0]) != fg_shape_size(&d->out)) return FG_ERR_ARG;
    return FG_OK;
}

static int reshape_passthrough(const fg_node_desc *d, int training) {
    (void)d, (void)training;
    return 1;
}

static int reshape_dx_inplace(const fg_node_desc *d) {
    (void)d;
    return 1;
}

static int reshape_forward(const fg_node_io *io, float *y, const float *const *x, int training, uint64_t *stream) {
    (void)training, (void)stream;
    if (y != x[0]) memcpy(y, x[0], (size_t)(io->rows * io->out_size) * sizeof(float));
    return FG_OK;
}

static int reshape_backward(const fg_node_io *io, float *const *dx, float *dy, const float *const *x,
                            const float *y, float *const *gp) {
    (void)x, (void)y, (void)gp;
    if (dx[0] && dx[0] != dy) memcpy(dx[0], dy, (size_t)(io->rows * io->out_size) * sizeof(float));
    return FG_OK;
}

const fg_layer_ops fg_layer_reshape_ops = {
    .name = "reshape",
    .check = reshape_check,
    .passthrough = reshape_passthrough,
    .dx_inplace = reshape_dx_inplace,
    .forward = reshape_forward,
    .backward = reshape_backward,
};
