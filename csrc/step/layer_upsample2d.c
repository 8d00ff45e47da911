/* layer_upsample2d.c — UpSampling2D (nearest): each pixel repeated sh x sw
 * times, channels_last, (h, w, c) -> (h sh, w sw, c). Backward: each input
 * pixel's gradient is the sum of its sh x sw copies, taken in row-major (a, b)
 * order starting from the first copy — the order
 * ConvNumpyOps.upsample_nearest2d_backward sums them in, so the bits are the
 * Python path's. UpSampling1D runs here at h = 1: per-sample (l, c), sh = 1. */
#include "step_internal.h"

#include <string.h>

static int up_check(const fg_node_desc *d, const fg_shape *const *in, int n_in, int64_t n_params) {
    (void)n_params;
    int64_t h, w, c, oh, ow, oc;
    if (n_in != 1 || in[0]->rank != d->out.rank || d->act != FG_ACT_LINEAR) return FG_ERR_ARG;
    if (!fg_shape_hwc(in[0], &h, &w, &c) || !fg_shape_hwc(&d->out, &oh, &ow, &oc)) return FG_ERR_ARG;
    if (d->sh < 1 || d->sw < 1 || (in[0]->rank == 2 && d->sh != 1)) return FG_ERR_ARG;
    if (oh != h * d->sh || ow != w * d->sw || oc != c) return FG_ERR_ARG;
    return FG_OK;
}

static int up_forward(const fg_node_io *io, float *y, const float *const *x, int training, uint64_t *stream) {
    (void)training, (void)stream;
    const fg_node_desc *d = io->d;
    int64_t h, w, c;
    fg_shape_hwc(io->in_shape[0], &h, &w, &c);
    const int64_t ow = w * d->sw;
    for (int64_t r = 0; r < io->rows * h; r++) {       /* (sample, input row) */
        const float *xr = x[0] + r * w * c;
        float *yr = y + r * d->sh * ow * c;            /* its first output row */
        for (int64_t j = 0; j < w; j++)
            for (int64_t b = 0; b < d->sw; b++) memcpy(yr + (j * d->sw + b) * c, xr + j * c, (size_t)c * sizeof(float));
        for (int64_t a = 1; a < d->sh; a++) memcpy(yr + a * ow * c, yr, (size_t)(ow * c) * sizeof(float));
    }
    return FG_OK;
}

static int up_backward(const fg_node_io *io, float *const *dx, float *dy, const float *const *x, const float *y,
                       float *const *gp) {
    (void)x, (void)y, (void)gp;
    if (!dx[0]) return FG_OK;
    const fg_node_desc *d = io->d;
    int64_t h, w, c;
    fg_shape_hwc(io->in_shape[0], &h, &w, &c);
    const int64_t ow = w * d->sw;
    for (int64_t r = 0; r < io->rows * h; r++) {
        const float *dyr = dy + r * d->sh * ow * c;
        float *dxr = dx[0] + r * w * c;
        for (int64_t j = 0; j < w; j++) {
            float *o = dxr + j * c;
            const float *first = dyr + j * d->sw * c;
            for (int64_t k = 0; k < c; k++) o[k] = first[k];
            for (int64_t a = 0; a < d->sh; a++)
                for (int64_t b = 0; b < d->sw; b++) {
                    if (a == 0 && b == 0) continue;
                    const float *g = dyr + (a * ow + j * d->sw + b) * c;
                    for (int64_t k = 0; k < c; k++) o[k] += g[k];
                }
        }
    }
    return FG_OK;
}

const fg_layer_ops fg_layer_upsample2d_ops = {
    .name = "upsample2d",
    .check = up_check,
    .forward = up_forward,
    .backward = up_backward,
};
