/* optim.c — fused single-pass optimizer updates (conventions in fg_optim.h).
 * Compiled once per instruction set; plain C loops the compiler vectorises
 * (sqrt and division are IEEE-exact vector instructions). With
 * -ffp-contract=off each element sees exactly the float32 operations written
 * here, in this order, on every ISA. One loop per variant keeps the branches
 * out of the inner loops. Each pass reads the state once and writes it once. */
#include "fg_optim.h"
#include "fg_vmath.h"

#include <float.h>

/* Decaying optimizer state (momentum, Adam's m and v, RMSprop's averages) that
 * falls below the smallest normal float (1.2e-38) is stored as 0.
 * Why: a unit whose gradient stays 0 (a dead ReLU) has its state multiplied
 * by beta every step; under IEEE gradual underflow it ends in the denormal
 * range and stays there (0.9 x the smallest denormal rounds back to it), and
 * every x86 operation on a denormal takes a microcode assist: Adam over
 * 101,770 such parameters measured 5.4 ms per step instead of 0.23 ms, so
 * epochs slowed 2x within a few epochs of a real run. The update such a state
 * would make is below lr * 1e-30, under the float32 resolution of any
 * parameter above ~1e-23. NumpyOps applies the same rule, so the backends
 * agree bitwise; it does not depend on fg.set_flush_denormal. */
#define FG_TINY_TO_ZERO(x) ((x) > -FLT_MIN && (x) < FLT_MIN ? 0.0f : (x))

/* Grain sizes. SGD is memory-bound like relu (serial below 128K elements).
 * Adam / RMSprop / Adagrad are bound by the vector sqrt + divide while the
 * state fits in cache: ~0.5 ns per element on one core here (Adam over the
 * 101,770 parameters of a 784-128-10 MLP: ~50 us), so a second thread pays off
 * from ~32K elements (16K each = ~8 us of work against ~2 us of fork/join on
 * an idle machine). */
#define GRAIN_OPT ((int64_t)1 << 14)
#define GRAIN_SGD ((int64_t)1 << 16)

typedef struct {
    float lr, momentum, wd, keep, eps, rho, one_m_rho, b1, one_m_b1, b2, one_m_b2, alpha;
    int nesterov, decoupled, centered;
} opt_args;

/* g with coupled weight decay, p with decoupled decay, applied before the update */
#define FG_DECAY(p, g, a)                           \
    do {                                            \
        if ((a)->decoupled) p = p * (a)->keep;      \
        else g = g + (a)->wd * p;                   \
    } while (0)

static void sgd_range(float *FG_RESTRICT p, float *FG_RESTRICT vel, const float *FG_RESTRICT g,
                      const opt_args *a, int64_t lo, int64_t hi) {
    const float lr = a->lr, mu = a->momentum;
    const int decay = a->wd != 0.0f;
    if (vel == NULL) {
        if (!decay)
            for (int64_t i = lo; i < hi; i++) p[i] = p[i] - lr * g[i];
        else
            for (int64_t i = lo; i < hi; i++) {
                float pi = p[i], gi = g[i];
                FG_DECAY(pi, gi, a);
                p[i] = pi - lr * gi;
            }
    } else if (!a->nesterov) {
        for (int64_t i = lo; i < hi; i++) {
            float pi = p[i], gi = g[i];
            if (decay) FG_DECAY(pi, gi, a);
            float v = mu * vel[i] - lr * gi;
            v = FG_TINY_TO_ZERO(v);
            vel[i] = v;
            p[i] = pi + v;
        }
    } else {
        for (int64_t i = lo; i < hi; i++) {
            float pi = p[i], gi = g[i];
            if (decay) FG_DECAY(pi, gi, a);
            float v = mu * vel[i] - lr * gi;
            v = FG_TINY_TO_ZERO(v);
            vel[i] = v;
            p[i] = (pi - lr * gi) + mu * v;
        }
    }
}

static int check_common(int64_t n, const float *p, const float *g) {
    if (n < 0 || (n > 0 && (p == NULL || g == NULL))) return FG_ERR_ARG;
    return FG_OK;
}

/* param, velocity, grad: (n,) */
int FG_ISA_FN(fg_sgd_update)(float *param, float *velocity, const float *grad, int64_t n, float lr, float momentum,
                             int nesterov, float weight_decay, int decoupled, int nthreads) {
    if (check_common(n, param, grad) != FG_OK) return FG_ERR_ARG;
    if ((momentum != 0.0f) != (velocity != NULL)) return FG_ERR_ARG;
    if (n == 0) return FG_OK;
    opt_args a = {0};
    a.lr = lr; a.momentum = momentum; a.nesterov = nesterov; a.wd = weight_decay; a.decoupled = decoupled;
    a.keep = (float)(1.0 - (double)lr * (double)weight_decay);
    int nt = fg_threads_for(n, GRAIN_SGD, nthreads);
#define BODY_(lo, hi) sgd_range(param, velocity, grad, &a, lo, hi)
    FG_PARALLEL_RANGE(n, 16, nt, BODY_);
#undef BODY_
    return FG_OK;
}

static void adagrad_range(float *FG_RESTRICT p, float *FG_RESTRICT acc, const float *FG_RESTRICT g,
                          const opt_args *a, int64_t lo, int64_t hi) {
    const float lr = a->lr, eps = a->eps;
    const int decay = a->wd != 0.0f;
    for (int64_t i = lo; i < hi; i++) {
        float pi = p[i], gi = g[i];
        if (decay) FG_DECAY(pi, gi, a);
        float s = acc[i] + gi * gi;
        acc[i] = s;
        p[i] = pi - (gi / sqrtf(s + eps)) * lr;
    }
}

/* param, accum, grad: (n,) */
int FG_ISA_FN(fg_adagrad_update)(float *param, float *accum, const float *grad, int64_t n, float lr, float eps,
                                 float weight_decay, int decoupled, int nthreads) {
    if (check_common(n, param, grad) != FG_OK || (n > 0 && accum == NULL)) return FG_ERR_ARG;
    if (n == 0) return FG_OK;
    opt_args a = {0};
    a.lr = lr; a.eps = eps; a.wd = weight_decay; a.decoupled = decoupled; a.keep = (float)(1.0 - (double)lr * (double)weight_decay);
    int nt = fg_threads_for(n, GRAIN_OPT, nthreads);
#define BODY_(lo, hi) adagrad_range(param, accum, grad, &a, lo, hi)
    FG_PARALLEL_RANGE(n, 16, nt, BODY_);
#undef BODY_
    return FG_OK;
}

static void rmsprop_range(float *FG_RESTRICT p, float *FG_RESTRICT ms, float *FG_RESTRICT mom,
                          float *FG_RESTRICT mg, const float *FG_RESTRICT g, const opt_args *a, int64_t lo,
                          int64_t hi) {
    const float lr = a->lr, rho = a->rho, omr = a->one_m_rho, eps = a->eps, mu = a->momentum;
    const int decay = a->wd != 0.0f;
    for (int64_t i = lo; i < hi; i++) {
        float pi = p[i], gi = g[i];
        if (decay) FG_DECAY(pi, gi, a);
        float s = rho * ms[i] + omr * (gi * gi);
        s = FG_TINY_TO_ZERO(s);
        ms[i] = s;
        float denom;
        if (mg) {
            float mgi = rho * mg[i] + omr * gi;
            mgi = FG_TINY_TO_ZERO(mgi);
            mg[i] = mgi;
            denom = s - mgi * mgi + eps;
        } else {
            denom = s + eps;
        }
        float inc = (gi / sqrtf(denom)) * lr;
        if (mom) {
            float mi = mu * mom[i] + inc;
            mi = FG_TINY_TO_ZERO(mi);
            mom[i] = mi;
            p[i] = pi - mi;
        } else {
            p[i] = pi - inc;
        }
    }
}

/* param, ms, mom, mg, grad: (n,) */
int FG_ISA_FN(fg_rmsprop_update)(float *param, float *ms, float *mom, float *mg, const float *grad, int64_t n,
                                 float lr, float rho, float momentum, float eps, int centered, float weight_decay,
                                 int decoupled, int nthreads) {
    if (check_common(n, param, grad) != FG_OK || (n > 0 && ms == NULL)) return FG_ERR_ARG;
    if ((momentum != 0.0f) != (mom != NULL) || (centered != 0) != (mg != NULL)) return FG_ERR_ARG;
    if (n == 0) return FG_OK;
    opt_args a = {0};
    a.lr = lr; a.rho = rho; a.one_m_rho = (float)(1.0 - (double)rho); a.momentum = momentum; a.eps = eps;
    a.centered = centered; a.wd = weight_decay; a.decoupled = decoupled; a.keep = (float)(1.0 - (double)lr * (double)weight_decay);
    int nt = fg_threads_for(n, GRAIN_OPT, nthreads);
    /* four specialised loops: the NULL tests are loop-invariant */
#define BODY_(lo, hi)                                                                     \
    do {                                                                                  \
        if (mom && mg) rmsprop_range(param, ms, mom, mg, grad, &a, lo, hi);               \
        else if (mom) rmsprop_range(param, ms, mom, NULL, grad, &a, lo, hi);              \
        else if (mg) rmsprop_range(param, ms, NULL, mg, grad, &a, lo, hi);                \
        else rmsprop_range(param, ms, NULL, NULL, grad, &a, lo, hi);                      \
    } while (0)
    FG_PARALLEL_RANGE(n, 16, nt, BODY_);
#undef BODY_
    return FG_OK;
}

static void adam_range(float *FG_RESTRICT p, float *FG_RESTRICT m, float *FG_RESTRICT v,
                       const float *FG_RESTRICT g, const opt_args *a, int64_t lo, int64_t hi) {
    const float b1 = a->b1, omb1 = a->one_m_b1, b2 = a->b2, omb2 = a->one_m_b2, alpha = a->alpha, eps = a->eps;
    if (a->wd == 0.0f) {
        for (int64_t i = lo; i < hi; i++) {
            float gi = g[i];
            float mi = b1 * m[i] + omb1 * gi;
            float vi = b2 * v[i] + omb2 * (gi * gi);
            mi = FG_TINY_TO_ZERO(mi);
            vi = FG_TINY_TO_ZERO(vi);
            m[i] = mi;
            v[i] = vi;
            p[i] = p[i] - (mi / (sqrtf(vi) + eps)) * alpha;
        }
    } else {
        for (int64_t i = lo; i < hi; i++) {
            float pi = p[i], gi = g[i];
            FG_DECAY(pi, gi, a);
            float mi = b1 * m[i] + omb1 * gi;
            float vi = b2 * v[i] + omb2 * (gi * gi);
            mi = FG_TINY_TO_ZERO(mi);
            vi = FG_TINY_TO_ZERO(vi);
            m[i] = mi;
            v[i] = vi;
            p[i] = pi - (mi / (sqrtf(vi) + eps)) * alpha;
        }
    }
}

/* param, m, v, grad: (n,) */
int FG_ISA_FN(fg_adam_update)(float *param, float *m, float *v, const float *grad, int64_t n, float lr, float beta1,
                              float beta2, float eps, int64_t step, float weight_decay, int decoupled,
                              int nthreads) {
    if (check_common(n, param, grad) != FG_OK || (n > 0 && (m == NULL || v == NULL)) || step < 1)
        return FG_ERR_ARG;
    if (n == 0) return FG_OK;
    opt_args a = {0};
    double t = (double)step;
    double bc1 = 1.0 - pow((double)beta1, t), bc2 = 1.0 - pow((double)beta2, t);
    a.alpha = (float)((double)lr * sqrt(bc2) / bc1);
    a.b1 = beta1; a.one_m_b1 = (float)(1.0 - (double)beta1); a.b2 = beta2; a.one_m_b2 = (float)(1.0 - (double)beta2); a.eps = eps;
    a.lr = lr; a.wd = weight_decay; a.decoupled = decoupled; a.keep = (float)(1.0 - (double)lr * (double)weight_decay);
    int nt = fg_threads_for(n, GRAIN_OPT, nthreads);
#define BODY_(lo, hi) adam_range(param, m, v, grad, &a, lo, hi)
    FG_PARALLEL_RANGE(n, 16, nt, BODY_);
#undef BODY_
    return FG_OK;
}
