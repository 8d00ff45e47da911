/* loss.c — the fused loss of each model output on this batch, its gradient,
 * and the accuracy computed beside it.
 *
 * Output k's loss is its fused kernel's (csrc/kernels/fg_loss.h) on the
 * output as it stands (logits when a cross-entropy took over the activation),
 * reported as Keras "sum_over_batch_size"; the gradient of that mean lands in
 * the output's buffer and is then scaled by float32(weight_k) when the weight
 * is not 1. total = sum_k weight_k * loss_k in double, k in order, from 0.0
 * (the Python executor's order, so the same bits). */
#include "step_internal.h"

#include "kernels/fg_loss.h"
#include "kernels/fg_reduce.h"
#include "lossopt/fg_lossopt.h"

static int output_loss(const fg_net *n, int k, int64_t rows, float *dlog, double *loss, int nt) {
    const fg_output *o = &n->outs[k];
    const float *logits = n->val[o->slot];
    const float *sw = n->bsw[k];
    const int64_t c = o->size;
    double s = 0.0;
    switch (o->loss.kind) {
    case FG_LOSS_SPARSE_SOFTMAX_XENT:
        FG_TRY(fg_sparse_softmax_xent(&s, dlog, NULL, logits, n->blbl[k], sw, rows, c, (float)(1.0 / (double)rows),
                                      nt));
        *loss = s / (double)rows;
        return FG_OK;
    case FG_LOSS_SOFTMAX_XENT:
        FG_TRY(fg_softmax_xent(&s, dlog, logits, n->btgt[k], sw, rows, c, (float)(1.0 / (double)rows), nt));
        *loss = s / (double)rows;
        return FG_OK;
    case FG_LOSS_SIGMOID_BCE: {
        double rc = (double)rows * (double)c;
        FG_TRY(fg_sigmoid_bce(&s, dlog, logits, n->btgt[k], sw, rows, c, (float)(1.0 / rc), nt));
        *loss = s / rc;
        return FG_OK;
    }
    case FG_LOSS_MSE: {
        double rc = (double)rows * (double)c;
        FG_TRY(fg_mse(&s, dlog, logits, n->btgt[k], sw, rows, c, (float)(1.0 / rc), nt));
        *loss = s / rc;
        return FG_OK;
    }
    default:
        break;
    }
    if (o->loss.kind >= FG_LOSS_MAE && o->loss.kind <= FG_LOSS_COSINE) {
        /* csrc/lossopt: the Python loss's call (losses.py) with the same sizes and scale */
        const int kind = o->loss.kind - FG_LOSS_MAE + FG_PLOSS_MAE;
        double div = fg_ploss_rowwise(kind) ? (double)rows : (double)rows * (double)c;
        FG_TRY(fg_pointwise_loss(&s, dlog, logits, n->btgt[k], sw, rows, c, kind, o->loss.param,
                                 (float)(1.0 / div), nt));
        *loss = s / div;
        return FG_OK;
    }
    return FG_ERR_ARG;
}

int fg_losses_forward(fg_net *n, int64_t rows, int train, double *total, double *per_output, int nt) {
    double t = 0.0;
    for (int k = 0; k < n->n_outputs; k++) {
        fg_output *o = &n->outs[k];
        double l = 0.0;
        per_output[k] = 0.0;
        if (o->loss.kind == FG_LOSS_NONE) continue;
        float *g = train ? o->g : NULL;
        FG_TRY(output_loss(n, k, rows, g, &l, nt));
        const double w = o->loss.weight;
        if (g && w != 1.0) FG_TRY(fg_scale(g, rows * o->size, (float)w, nt));
        /* the gradient-only step of data-parallel training: this shard's share of the
         * global batch (rows / global rows), so that the ranks' gradients simply add up */
        if (g && train == 2 && n->grad_scale != 1.0f) FG_TRY(fg_scale(g, rows * o->size, n->grad_scale, nt));
        t += w * l;
        per_output[k] = l;
    }
    *total = t;
    return FG_OK;
}

/* first index of the maximum of a row (NaN never wins, like a > comparison) */
static int64_t row_argmax(const float *r, int64_t c) {
    int64_t best = 0;
    for (int64_t j = 1; j < c; j++)
        if (r[j] > r[best]) best = j;
    return best;
}

void fg_accuracy(const fg_net *n, int64_t rows, double *acc, double *wsum) {
    const fg_output *o = &n->outs[0];
    const int64_t c = o->size;
    const float *out = n->val[o->slot];
    const float *sw = n->acc_unweighted ? NULL : n->bsw[0];
    const int64_t *lbl = n->blbl[0];
    const float *tgt = n->btgt[0];
    double a = 0.0, w = 0.0;
    for (int64_t i = 0; i < rows; i++) {
        const float *r = out + i * c;
        double v = 0.0, wi = sw ? (double)sw[i] : 1.0;
        switch (n->acc_kind) {
        case FG_ACC_SPARSE:
            v = row_argmax(r, c) == lbl[i];
            break;
        case FG_ACC_CATEGORICAL:
            v = row_argmax(r, c) == row_argmax(tgt + i * c, c);
            break;
        case FG_ACC_BINARY: {
            int64_t hits = 0;
            const float *t = tgt + i * c;
            for (int64_t j = 0; j < c; j++) hits += (r[j] > n->acc_thr) == (t[j] > 0.5f);
            v = (double)hits / (double)c;
            break;
        }
        default:
            break;
        }
        a += v * wi;
        w += wi;
    }
    *acc = a;
    *wsum = w;
}
