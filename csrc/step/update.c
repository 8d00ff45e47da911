/* update.c — after the backward: regularizer penalty and gradients, gradient
 * clipping, and the optimizer kernel over the flat buffers.
 *
 * The net's parameter arrays (each shared layer's once, in node order; frozen
 * ones skipped as the Python path skips them) drive the per-array work; the
 * global clip and the update of a model without frozen arrays run over the
 * whole flat buffer in one call. The reductions here (penalty) are serial and
 * in a fixed order, and the float loops are compiled without contraction, so
 * they give the NumPy path's bits. */
#include "step_internal.h"

#include "kernels/fg_optim.h"
#include "kernels/fg_reduce.h"
#include "lossopt/fg_lossopt.h"

#include <math.h>

/* l1 sum|w| + l2 sum w^2 (double, serial); with g != NULL also g += 2 l2 w, then
 * g += l1 sign(w) (the Python path's order) */
static double regularize(const float *w, float *g, int64_t cnt, float l1, float l2) {
    double s1 = 0.0, s2 = 0.0;
    const float c2 = 2.0f * l2;
    for (int64_t i = 0; i < cnt; i++) {
        double v = (double)w[i];
        s1 += fabs(v);
        s2 += v * v;
    }
    if (g) {
        if (l2 != 0.0f)
            for (int64_t i = 0; i < cnt; i++) g[i] += w[i] * c2;
        if (l1 != 0.0f)
            for (int64_t i = 0; i < cnt; i++) {
                float sg = w[i] > 0.0f ? 1.0f : (w[i] < 0.0f ? -1.0f : 0.0f);
                g[i] += sg * l1;
            }
    }
    return (double)l1 * s1 + (double)l2 * s2;
}

double fg_net_regularize(fg_net *n, int add_grad) {
    double pen = 0.0;
    for (int a = 0; a < n->n_arrays; a++) {
        const fg_param_array *p = &n->arrays[a];
        if (!n->array_trainable[a] || (p->l1 == 0.0f && p->l2 == 0.0f)) continue;
        pen += regularize(n->params + p->off, add_grad ? n->grads + p->off : NULL, p->count, p->l1, p->l2);
    }
    return pen;
}

static int clip_norm(float *g, int64_t cnt, float max_norm, int nt) {
    double ss;
    FG_TRY(fg_sumsq(&ss, g, cnt, nt));
    double norm = sqrt(ss);
    if (norm > (double)max_norm) return fg_scale(g, cnt, (float)((double)max_norm / norm), nt);
    return FG_OK;
}

int fg_net_clip(fg_net *n, int nt) {
    const fg_optim_desc *o = &n->opt;
    if (o->clipnorm > 0.0f)
        for (int a = 0; a < n->n_arrays; a++)
            if (n->array_trainable[a])
                FG_TRY(clip_norm(n->grads + n->arrays[a].off, n->arrays[a].count, o->clipnorm, nt));
    if (o->global_clipnorm > 0.0f) FG_TRY(clip_norm(n->grads, n->n_params, o->global_clipnorm, nt));
    if (o->clipvalue > 0.0f) FG_TRY(fg_clip_value(n->grads, n->n_params, -o->clipvalue, o->clipvalue, nt));
    return FG_OK;
}

/* optimizer kernel over [lo, lo + cnt) of the flat buffers */
static int update_range(fg_net *n, int64_t lo, int64_t cnt, float lr, int64_t step, int nt) {
    const fg_optim_desc *o = &n->opt;
    float *p = n->params + lo, *g = n->grads + lo;
    float *s1 = o->s1 ? o->s1 + lo : NULL, *s2 = o->s2 ? o->s2 + lo : NULL, *s3 = o->s3 ? o->s3 + lo : NULL;
    switch (o->kind) {
    case FG_OPT_SGD:
        return fg_sgd_update(p, o->momentum != 0.0f ? s1 : NULL, g, cnt, lr, o->momentum, o->nesterov,
                             o->weight_decay, o->decoupled, nt);
    case FG_OPT_ADAM:
        return fg_adam_update(p, s1, s2, g, cnt, lr, o->beta1, o->beta2, o->eps, step, o->weight_decay,
                              o->decoupled, nt);
    case FG_OPT_RMSPROP:
        return fg_rmsprop_update(p, s1, o->momentum != 0.0f ? s2 : NULL, o->centered ? s3 : NULL, g, cnt, lr,
                                 o->rho, o->momentum, o->eps, o->centered, o->weight_decay, o->decoupled, nt);
    case FG_OPT_ADAGRAD:
        return fg_adagrad_update(p, s1, g, cnt, lr, o->eps, o->weight_decay, o->decoupled, nt);
    default:
        break;
    }
    if (o->kind >= FG_OPT_NADAM && o->kind <= FG_OPT_AMSGRAD) {
        fg_optx_args x = {0};
        x.kind = o->kind - FG_OPT_NADAM + FG_OPTX_NADAM;
        x.decoupled = o->decoupled; x.step = step; x.lr = lr;
        x.beta1 = o->beta1; x.beta2 = o->beta2; x.rho = o->rho; x.eps = o->eps; x.weight_decay = o->weight_decay;
        x.lr_power = o->lr_power; x.l1 = o->l1; x.l2 = o->l2; x.l2_shrinkage = o->l2_shrinkage; x.beta = o->beta;
        return fg_optx_update(p, s1, s2, s3, g, cnt, &x, nt);
    }
    return FG_ERR_ARG;
}

int fg_net_update(fg_net *n, float lr, int64_t step, int nt) {
    if (n->all_trainable) return update_range(n, 0, n->n_params, lr, step, nt);
    for (int a = 0; a < n->n_arrays; a++)
        if (n->array_trainable[a]) FG_TRY(update_range(n, n->arrays[a].off, n->arrays[a].count, lr, step, nt));
    return FG_OK;
}
