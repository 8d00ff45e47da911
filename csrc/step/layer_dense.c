/* layer_dense.c — Dense: y = act(x W + b).
 *
 * x is (rows, in), W (in, out) in Keras layout, b (out,). The forward is one
 * fused GEMM + bias + activation (csrc/gemm); the workspace keeps the
 * pre-activation z = x W + b when the backward needs it (gelu reads z,
 * softmax is applied over z as a separate row kernel, whose backward then
 * reuses the buffer for dz). Backward: dz = act'(dy) (in place over dy, or
 * into the workspace for softmax), dW = x^T dz, db = column sums of dz,
 * dx = dz W^T. Parameter arrays: [0] kernel, [1] bias. */
#include "step_internal.h"

#include "gemm/fg_gemm.h"
#include "kernels/fg_activation.h"
#include "kernels/fg_reduce.h"

static int keeps_pre(int act) { return fg_step_is_softmax(act) || fg_step_act_needs_input(act); }

/* Input of rank > 1 (per sample): Dense acts on the last axis (Keras), so the leading
 * axes are rows: (rows, t..., in) -> (rows * t..., in), one product. */
static int64_t dense_units(const fg_node_desc *d) { return d->out.dim[d->out.rank - 1]; }

static int dense_check(const fg_node_desc *d, const fg_shape *const *in, int n_in, int64_t n_params) {
    if (n_in != 1 || in[0]->rank < 1 || d->out.rank != in[0]->rank) return FG_ERR_ARG;
    for (int i = 0; i + 1 < d->out.rank; i++)
        if (in[0]->dim[i] != d->out.dim[i]) return FG_ERR_ARG;
    int64_t k = in[0]->dim[in[0]->rank - 1], n = dense_units(d);
    if (!fg_step_act_valid(d->act) || d->act_has_param) return FG_ERR_ARG; /* the epilogue: by name */
    if (d->w_off < 0 || !fg_range_ok(d->w_off, k * n, n_params)) return FG_ERR_ARG;
    if (d->b_off >= 0 && !fg_range_ok(d->b_off, n, n_params)) return FG_ERR_ARG;
    return FG_OK;
}

static int dense_params(const fg_node_desc *d, const fg_shape *const *in, int n_in, fg_param_array *p) {
    (void)n_in;
    int64_t n = dense_units(d);
    p[0] = (fg_param_array){d->w_off, in[0]->dim[in[0]->rank - 1] * n, d->l1_w, d->l2_w};
    p[1] = (fg_param_array){d->b_off, d->b_off >= 0 ? n : 0, d->l1_b, d->l2_b};
    return 2;
}

static int64_t dense_workspace(const fg_node_desc *d, const fg_shape *const *in, int n_in, int64_t rows) {
    (void)in, (void)n_in;
    return keeps_pre(d->act) ? rows * fg_shape_size(&d->out) * (int64_t)sizeof(float) : 0;
}

static int dense_forward(const fg_node_io *io, float *y, const float *const *x, int training, uint64_t *stream) {
    (void)stream;
    const fg_node_desc *d = io->d;
    const int64_t n = dense_units(d), t = io->out_size / n;
    const int64_t k = io->in_size[0] / t, rows = io->rows * t;
    const float *W = io->params + d->w_off;
    const float *b = d->b_off >= 0 ? io->params + d->b_off : NULL;
    float *pre = (float *)io->ws;
    const fg_gemm_packed *pw = training ? NULL : (const fg_gemm_packed *)io->packed;
    if (fg_step_is_softmax(d->act)) {
        if (pw)
            FG_TRY(fg_dense_forward_prepacked(pre, n, NULL, 0, x[0], k, pw, b, rows, FG_ACT_LINEAR, io->nt));
        else
            FG_TRY(fg_dense_forward(pre, n, NULL, 0, x[0], k, W, n, b, rows, n, k, FG_ACT_LINEAR, io->nt));
        return fg_softmax_forward(y, pre, rows, n, d->act == FG_ACT_LOG_SOFTMAX, io->nt);
    }
    if (pw) return fg_dense_forward_prepacked(y, n, NULL, 0, x[0], k, pw, b, rows, d->act, io->nt);
    float *z = (training && fg_step_act_needs_input(d->act)) ? pre : NULL;
    return fg_dense_forward(y, n, z, n, x[0], k, W, n, b, rows, n, k, d->act, io->nt);
}

/* Inference: the kernel packed once per predict call (fg_gemm_packb), shared
 * read-only by every chunk and thread; same bits as packing per product. */
static int dense_infer_pack(const fg_node_io *io, void **state) {
    const fg_node_desc *d = io->d;
    const int64_t n = dense_units(d), t = io->out_size / n;
    const int64_t k = io->in_size[0] / t;
    fg_gemm_packed *pk = NULL;
    FG_TRY(fg_gemm_packb(&pk, io->params + d->w_off, n, n, k, 0, io->nt));
    *state = pk;
    return FG_OK;
}

static void dense_infer_free(void *state) { fg_gemm_packed_free((fg_gemm_packed *)state); }

static int dense_backward(const fg_node_io *io, float *const *dx, float *dy, const float *const *x, const float *y,
                          float *const *gp) {
    const fg_node_desc *d = io->d;
    const int64_t n = dense_units(d), t = io->out_size / n;
    const int64_t k = io->in_size[0] / t, rows = io->rows * t;
    float *dz = dy;
    if (fg_step_is_softmax(d->act)) {
        dz = (float *)io->ws; /* z is not needed by the softmax backward */
        FG_TRY(fg_softmax_backward(dz, dy, y, rows, n, d->act == FG_ACT_LOG_SOFTMAX, io->nt));
    } else if (d->act != FG_ACT_LINEAR) {
        const float *ref = fg_step_act_needs_input(d->act) ? (const float *)io->ws : y;
        FG_TRY(fg_act_backward(dz, dy, ref, rows * n, d->act, io->nt));
    }
    if (gp[0]) FG_TRY(fg_gemm(gp[0], n, x[0], k, dz, n, k, n, rows, 1, 0, 1.0f, 0.0f, io->nt));
    if (gp[1]) FG_TRY(fg_sum_rows(gp[1], dz, rows, n, io->nt));
    if (dx[0])
        FG_TRY(fg_gemm(dx[0], k, dz, n, io->params + d->w_off, n, rows, k, n, 0, 1, 1.0f, 0.0f, io->nt));
    return FG_OK;
}

const fg_layer_ops fg_layer_dense_ops = {
    .name = "dense",
    .check = dense_check,
    .params = dense_params,
    .workspace = dense_workspace,
    .forward = dense_forward,
    .backward = dense_backward,
    .infer_pack = dense_infer_pack,
    .infer_free = dense_infer_free,
};
