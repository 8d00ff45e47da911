/* layer_sdropout.c — SpatialDropout2D: one keep flag per (sample, channel),
 * drawn from the Dropout stream over the (rows, c) index space: flag (n, c) is
 * element n c + c of hash(seed, position + i) clearing `rate` (the same hash as
 * the dropout kind and NumpyOps.spatial_dropout_forward), and the stream
 * position then advances by rows c. The per-(sample, channel) factor s =
 * keep ? (float)(1 / (1 - rate)) : 0 is made by the dropout kernel itself (run
 * over ones), so y = x s and dx = dy s are exactly NumPy's x * scale products.
 * The workspace keeps s (rows x c floats) for the backward, which may run in
 * place. Outside training, or with rate 0, the input passes on. */
#include "step_internal.h"

#include "kernels/fg_random.h"

#include <string.h>

static int sd_check(const fg_node_desc *d, const fg_shape *const *in, int n_in, int64_t n_params) {
    (void)n_params;
    if (n_in != 1 || in[0]->rank < 2 || !fg_shape_equal(in[0], &d->out) || d->act != FG_ACT_LINEAR)
        return FG_ERR_ARG;
    if (!(d->rate >= 0.0f && d->rate < 1.0f)) return FG_ERR_ARG;
    if (d->rate > 0.0f && d->stream < 0) return FG_ERR_ARG;
    return FG_OK;
}

static int sd_passthrough(const fg_node_desc *d, int training) { return !training || d->rate <= 0.0f; }

static int sd_dx_inplace(const fg_node_desc *d) {
    (void)d;
    return 1;
}

static int64_t channels(const fg_shape *s) { return s->dim[s->rank - 1]; }

static int64_t sd_workspace(const fg_node_desc *d, const fg_shape *const *in, int n_in, int64_t rows) {
    (void)in, (void)n_in;
    return d->rate > 0.0f ? rows * channels(&d->out) * (int64_t)sizeof(float) : 0;
}

/* out[n, p, c] = in[n, p, c] * s[n, c] over rows samples of l positions */
static void scale_channels(float *out, const float *in, const float *s, int64_t rows, int64_t l, int64_t c) {
    for (int64_t n = 0; n < rows; n++) {
        const float *sn = s + n * c;
        for (int64_t p = 0; p < l; p++) {
            const int64_t o = (n * l + p) * c;
            for (int64_t k = 0; k < c; k++) out[o + k] = in[o + k] * sn[k];
        }
    }
}

static int sd_forward(const fg_node_io *io, float *y, const float *const *x, int training, uint64_t *stream) {
    const int64_t c = channels(&io->d->out), l = io->out_size / c;
    if (!training || io->d->rate <= 0.0f) {
        if (y != x[0]) memcpy(y, x[0], (size_t)(io->rows * io->out_size) * sizeof(float));
        return FG_OK;
    }
    float *s = (float *)io->ws;
    const int64_t cnt = io->rows * c;
    for (int64_t i = 0; i < cnt; i++) s[i] = 1.0f;
    uint64_t pos = stream ? *stream : 0;
    FG_TRY(fg_dropout_forward(s, NULL, s, cnt, io->d->rate, io->d->seed, pos, io->nt));
    if (stream) *stream = pos + (uint64_t)cnt;
    scale_channels(y, x[0], s, io->rows, l, c);
    return FG_OK;
}

static int sd_backward(const fg_node_io *io, float *const *dx, float *dy, const float *const *x, const float *y,
                       float *const *gp) {
    (void)x, (void)y, (void)gp;
    if (!dx[0]) return FG_OK;
    const int64_t c = channels(&io->d->out), l = io->out_size / c;
    if (io->d->rate <= 0.0f) {
        if (dx[0] != dy) memcpy(dx[0], dy, (size_t)(io->rows * io->out_size) * sizeof(float));
        return FG_OK;
    }
    scale_channels(dx[0], dy, (const float *)io->ws, io->rows, l, c);
    return FG_OK;
}

const fg_layer_ops fg_layer_sdropout_ops = {
    .name = "sdropout",
    .check = sd_check,
    .workspace = sd_workspace,
    .passthrough = sd_passthrough,
    .dx_inplace = sd_dx_inplace,
    .forward = sd_forward,
    .backward = sd_backward,
};
