/* layer_dropout.c — Dropout: inverted dropout from the counter-based stream
 * (seed, position): element i of a training forward is kept iff
 * hash(seed, position + i) clears `rate`; the stream position then advances by
 * the elements drawn (nodes of one shared layer share a stream). Outside
 * training, or with rate 0, the input passes on. The workspace holds the
 * keep flags (one byte per element) for the backward, which runs in place. */
#include "step_internal.h"

#include "kernels/fg_random.h"

#include <string.h>

static int drop_check(const fg_node_desc *d, const fg_shape *const *in, int n_in, int64_t n_params) {
    (void)n_params;
    if (n_in != 1 || !fg_shape_equal(in[0], &d->out)) return FG_ERR_ARG;
    if (!(d->rate >= 0.0f && d->rate < 1.0f)) return FG_ERR_ARG;
    if (d->rate > 0.0f && d->stream < 0) return FG_ERR_ARG;
    return FG_OK;
}

static int drop_passthrough(const fg_node_desc *d, int training) { return !training || d->rate <= 0.0f; }

static int drop_dx_inplace(const fg_node_desc *d) {
    (void)d;
    return 1;
}

static int64_t drop_workspace(const fg_node_desc *d, const fg_shape *const *in, int n_in, int64_t rows) {
    (void)in, (void)n_in;
    return d->rate > 0.0f ? rows * fg_shape_size(&d->out) : 0;
}

static int drop_forward(const fg_node_io *io, float *y, const float *const *x, int training, uint64_t *stream) {
    const int64_t cnt = io->rows * io->out_size;
    if (!training || io->d->rate <= 0.0f) {
        if (y != x[0]) memcpy(y, x[0], (size_t)cnt * sizeof(float));
        return FG_OK;
    }
    uint64_t pos = stream ? *stream : 0;
    FG_TRY(fg_dropout_forward(y, (uint8_t *)io->ws, x[0], cnt, io->d->rate, io->d->seed, pos, io->nt));
    if (stream) *stream = pos + (uint64_t)cnt;
    return FG_OK;
}

static int drop_backward(const fg_node_io *io, float *const *dx, float *dy, const float *const *x, const float *y,
                         float *const *gp) {
    (void)x, (void)y, (void)gp;
    const int64_t cnt = io->rows * io->out_size;
    if (!dx[0]) return FG_OK;
    if (io->d->rate <= 0.0f) {
        if (dx[0] != dy) memcpy(dx[0], dy, (size_t)cnt * sizeof(float));
        return FG_OK;
    }
    return fg_dropout_backward(dx[0], dy, (const uint8_t *)io->ws, cnt, io->d->rate, io->nt);
}

const fg_layer_ops fg_layer_dropout_ops = {
    .name = "dropout",
    .check = drop_check,
    .workspace = drop_workspace,
    .passthrough = drop_passthrough,
    .dx_inplace = drop_dx_inplace,
    .forward = drop_forward,
    .backward = drop_backward,
};
