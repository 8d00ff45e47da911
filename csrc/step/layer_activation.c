/* layer_activation.c — Activation: y = act(x), element-wise (FG_ACT_*, with
 * its parameters when the node has them: LeakyReLU / ELU / ReLU layers) or a
 * softmax / log-softmax over the last axis. Linear passes its input on.
 * Backward: element-wise ones in place over dy (reading the forward output,
 * or the input where fg_act_backward_needs_input says so); softmax into a
 * separate dx. */
#include "step_internal.h"

#include "kernels/fg_activation.h"

#include <math.h>
#include <string.h>

static const fg_act_param *param_of(const fg_node_desc *d) { return d->act_has_param ? &d->act_param : NULL; }

static int act_check(const fg_node_desc *d, const fg_shape *const *in, int n_in, int64_t n_params) {
    (void)n_params;
    if (n_in != 1 || !fg_shape_equal(in[0], &d->out) || !fg_step_act_valid(d->act)) return FG_ERR_ARG;
    if (d->act_has_param) { /* what fg_act_forward_p accepts */
        const fg_act_param *p = &d->act_param;
        if (fg_step_is_softmax(d->act) || !isfinite(p->alpha) || !isfinite(p->threshold) ||
            !(p->max_value >= 0.0f))
            return FG_ERR_ARG;
    }
    return FG_OK;
}

static int act_passthrough(const fg_node_desc *d, int training) {
    (void)training;
    return d->act == FG_ACT_LINEAR;
}

static int act_dx_inplace(const fg_node_desc *d) { return !fg_step_is_softmax(d->act); }

/* softmax rows: every position of the leading axes is a row of the last axis */
static int64_t last_dim(const fg_node_desc *d) { return d->out.dim[d->out.rank - 1]; }

static int act_forward(const fg_node_io *io, float *y, const float *const *x, int training, uint64_t *stream) {
    (void)training, (void)stream;
    const fg_node_desc *d = io->d;
    const int64_t cnt = io->rows * io->out_size;
    if (d->act == FG_ACT_LINEAR) {
        if (y != x[0]) memcpy(y, x[0], (size_t)cnt * sizeof(float));
        return FG_OK;
    }
    if (fg_step_is_softmax(d->act)) {
        int64_t c = last_dim(d);
        return fg_softmax_forward(y, x[0], cnt / c, c, d->act == FG_ACT_LOG_SOFTMAX, io->nt);
    }
    return fg_act_forward_p(y, x[0], cnt, d->act, param_of(d), io->nt);
}

static int act_backward(const fg_node_io *io, float *const *dx, float *dy, const float *const *x, const float *y,
                        float *const *gp) {
    (void)gp;
    const fg_node_desc *d = io->d;
    const int64_t cnt = io->rows * io->out_size;
    if (!dx[0]) return FG_OK;
    if (fg_step_is_softmax(d->act)) {
        int64_t c = last_dim(d);
        return fg_softmax_backward(dx[0], dy, y, cnt / c, c, d->act == FG_ACT_LOG_SOFTMAX, io->nt);
    }
    if (d->act == FG_ACT_LINEAR) {
        if (dx[0] != dy) memcpy(dx[0], dy, (size_t)cnt * sizeof(float));
        return FG_OK;
    }
    const float *ref = fg_step_act_needs_input(d->act) ? x[0] : y;
    return fg_act_backward_p(dx[0], dy, ref, cnt, d->act, param_of(d), io->nt);
}

const fg_layer_ops fg_layer_activation_ops = {
    .name = "activation",
    .check = act_check,
    .passthrough = act_passthrough,
    .dx_inplace = act_dx_inplace,
    .forward = act_forward,
    .backward = act_backward,
};
