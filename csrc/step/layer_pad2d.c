/* layer_pad2d.c — ZeroPadding2D and Cropping2D: y[oy, ox] = x[oy - pt, ox - pl]
 * where that is inside x, else 0, channels_last. pt / pl > 0 pad the top / left
 * with zeros, < 0 crop (Cropping2D lowers pt = -top, pl = -left); the bottom /
 * right follow from the output shape, so one kind serves both layers (and a
 * mix). Backward is the same move the other way (dx[iy, ix] = dy[iy + pt,
 * ix + pl], zero where that falls outside dy). Only copies and zeros, as
 * pad2d_* / crop2d_* do in NumPy: the same bits. ZeroPadding1D / Cropping1D
 * run here at h = 1: per-sample (l, c), pt = 0. */
#include "step_internal.h"

#include <string.h>

/* dst (n, dh, dw, c)[i, j] = src (n, sh, sw, c)[i - t, j - l] or 0 */
static void shift2d(float *dst, const float *src, int64_t n, int64_t dh, int64_t dw, int64_t sh, int64_t sw,
                    int64_t c, int64_t t, int64_t l, int nt) {
    (void)nt;
    const int64_t j0 = l > 0 ? l : 0, j1 = sw + l < dw ? sw + l : dw; /* columns copied: [j0, j1) */
    for (int64_t r = 0; r < n * dh; r++) {
        const int64_t b = r / dh, i = r % dh, si = i - t;
        float *drow = dst + r * dw * c;
        if (si < 0 || si >= sh || j1 <= j0) {
            memset(drow, 0, (size_t)(dw * c) * sizeof(float));
            continue;
        }
        if (j0 > 0) memset(drow, 0, (size_t)(j0 * c) * sizeof(float));
        memcpy(drow + j0 * c, src + ((b * sh + si) * sw + (j0 - l)) * c, (size_t)((j1 - j0) * c) * sizeof(float));
        if (j1 < dw) memset(drow + j1 * c, 0, (size_t)((dw - j1) * c) * sizeof(float));
    }
}

static int pad_check(const fg_node_desc *d, const fg_shape *const *in, int n_in, int64_t n_params) {
    (void)n_params;
    int64_t xd[3], od[3];
    if (n_in != 1 || in[0]->rank != d->out.rank || d->act != FG_ACT_LINEAR) return FG_ERR_ARG;
    if (!fg_shape_hwc(in[0], &xd[0], &xd[1], &xd[2]) || !fg_shape_hwc(&d->out, &od[0], &od[1], &od[2]))
        return FG_ERR_ARG;
    if (od[2] != xd[2] || (in[0]->rank == 2 && d->pt != 0)) return FG_ERR_ARG;
    /* some of the input reaches the output on each axis (a crop leaves something) */
    for (int a = 0; a < 2; a++) {
        const int64_t p = a ? d->pl : d->pt, o = od[a], lo = p > 0 ? p : 0;
        const int64_t hi = xd[a] + p < o ? xd[a] + p : o;
        if (lo >= hi) return FG_ERR_ARG;
    }
    return FG_OK;
}

static int pad_forward(const fg_node_io *io, float *y, const float *const *x, int training, uint64_t *stream) {
    (void)training, (void)stream;
    int64_t h, w, c, oh, ow, oc;
    fg_shape_hwc(io->in_shape[0], &h, &w, &c);
    fg_shape_hwc(&io->d->out, &oh, &ow, &oc);
    shift2d(y, x[0], io->rows, oh, ow, h, w, c, io->d->pt, io->d->pl, io->nt);
    return FG_OK;
}

static int pad_backward(const fg_node_io *io, float *const *dx, float *dy, const float *const *x, const float *y,
                        float *const *gp) {
    (void)x, (void)y, (void)gp;
    if (!dx[0]) return FG_OK;
    int64_t h, w, c, oh, ow, oc;
    fg_shape_hwc(io->in_shape[0], &h, &w, &c);
    fg_shape_hwc(&io->d->out, &oh, &ow, &oc);
    shift2d(dx[0], dy, io->rows, h, w, oh, ow, c, -io->d->pt, -io->d->pl, io->nt);
    return FG_OK;
}

const fg_layer_ops fg_layer_pad2d_ops = {
    .name = "pad2d",
    .check = pad_check,
    .forward = pad_forward,
    .backward = pad_backward,
};
