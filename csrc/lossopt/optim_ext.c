/* optim_ext.c — Nadam, Adamax, Adadelta, Ftrl, Lion and Adam with amsgrad over one
 * flat buffer (formulas in fg_lossopt.h). Compiled once per instruction set;
 * plain loops the compiler vectorises (sqrt / divide / max are IEEE-exact), no
 * contraction, so every ISA copy and the NumPy twin (backend/numpy_lossopt.py)
 * do the same float32 operations in the same order. Scalars (bias corrections,
 * Nadam's momentum products) are computed once per call in double. */
#include "fg_lossopt.h"
#include "kernels/fg_vmath.h"

#include <float.h>
#include <math.h>

#define TINY0(x) ((x) > -FLT_MIN && (x) < FLT_MIN ? 0.0f : (x))
#define GRAIN_OPTX ((int64_t)1 << 14)

typedef struct {
    float lr, b1, omb1, b2, omb2, rho, omr, eps, keep, wd;
    float c_m, c_g, bc2, bc1, alpha;
    float l1, l2x2, shr2, lrp, inv_lr;
    int decoupled, sqrt_pow, unit_pow;
} kargs;

/* weight decay before the update (fg_optim.h's rule) */
#define DECAY(pi, gi, k)                               \
    do {                                               \
        if ((k)->wd != 0.0f) {                         \
            if ((k)->decoupled) pi = pi * (k)->keep;   \
            else gi = gi + (k)->wd * pi;               \
        }                                              \
    } while (0)

static void nadam_range(float *FG_RESTRICT p, float *FG_RESTRICT m, float *FG_RESTRICT v,
                        const float *FG_RESTRICT g, const kargs *k, int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; i++) {
        float pi = p[i], gi = g[i];
        DECAY(pi, gi, k);
        float mi = k->b1 * m[i] + k->omb1 * gi;
        float vi = k->b2 * v[i] + k->omb2 * (gi * gi);
        mi = TINY0(mi);
        vi = TINY0(vi);
        m[i] = mi;
        v[i] = vi;
        float mh = k->c_m * mi + k->c_g * gi;
        float vh = vi / k->bc2;
        p[i] = pi - (mh * k->lr) / (sqrtf(vh) + k->eps);
    }
}

static void adamax_range(float *FG_RESTRICT p, float *FG_RESTRICT m, float *FG_RESTRICT u,
                         const float *FG_RESTRICT g, const kargs *k, int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; i++) {
        float pi = p[i], gi = g[i];
        DECAY(pi, gi, k);
        float mi = k->b1 * m[i] + k->omb1 * gi;
        float ub = k->b2 * u[i], ag = fabsf(gi);
        float ui = ub > ag ? ub : ag;
        mi = TINY0(mi);
        ui = TINY0(ui);
        m[i] = mi;
        u[i] = ui;
        p[i] = pi - (k->lr * mi) / (k->bc1 * (ui + k->eps));
    }
}

static void adadelta_range(float *FG_RESTRICT p, float *FG_RESTRICT ag, float *FG_RESTRICT ad,
                           const float *FG_RESTRICT g, const kargs *k, int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; i++) {
        float pi = p[i], gi = g[i];
        DECAY(pi, gi, k);
        float a = k->rho * ag[i] + k->omr * (gi * gi);
        a = TINY0(a);
        ag[i] = a;
        float d = -((sqrtf(ad[i] + k->eps) * gi) / sqrtf(a + k->eps));
        float b = k->rho * ad[i] + k->omr * (d * d);
        b = TINY0(b);
        ad[i] = b;
        p[i] = pi + k->lr * d;
    }
}

static inline float ftrl_pow(float x, const kargs *k) {
    if (k->sqrt_pow) return sqrtf(x);
    if (k->unit_pow) return 1.0f;
    return powf(x, k->lrp);
}

static void ftrl_range(float *FG_RESTRICT p, float *FG_RESTRICT acc, float *FG_RESTRICT lin,
                       const float *FG_RESTRICT g, const kargs *k, int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; i++) {
        float pi = p[i], gi = g[i];
        DECAY(pi, gi, k);
        float gs = gi + k->shr2 * pi;
        float a0 = acc[i];
        float na = a0 + gi * gi;
        float pn = ftrl_pow(na, k), po = ftrl_pow(a0, k);
        float li = lin[i] + (gs - ((pn - po) / k->lr) * pi);
        lin[i] = li;
        float q = pn / k->lr + k->l2x2;
        float lc = li < -k->l1 ? -k->l1 : (li > k->l1 ? k->l1 : li);
        p[i] = (lc - li) / q;
        acc[i] = na;
    }
}

static void lion_range(float *FG_RESTRICT p, float *FG_RESTRICT m, const float *FG_RESTRICT g, const kargs *k,
                       int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; i++) {
        float pi = p[i], gi = g[i];
        DECAY(pi, gi, k);
        float c = k->b1 * m[i] + k->omb1 * gi;
        float s = c > 0.0f ? 1.0f : (c < 0.0f ? -1.0f : 0.0f);
        p[i] = pi - k->lr * s;
        float mi = k->b2 * m[i] + k->omb2 * gi;
        m[i] = TINY0(mi);
    }
}

static void amsgrad_range(float *FG_RESTRICT p, float *FG_RESTRICT m, float *FG_RESTRICT v, float *FG_RESTRICT vh,
                          const float *FG_RESTRICT g, const kargs *k, int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; i++) {
        float pi = p[i], gi = g[i];
        DECAY(pi, gi, k);
        float mi = k->b1 * m[i] + k->omb1 * gi;
        float vi = k->b2 * v[i] + k->omb2 * (gi * gi);
        mi = TINY0(mi);
        vi = TINY0(vi);
        m[i] = mi;
        v[i] = vi;
        float h = vh[i] > vi ? vh[i] : vi;
        vh[i] = h;
        p[i] = pi - (mi / (sqrtf(h) + k->eps)) * k->alpha;
    }
}

/* Nadam's u_prod_t = prod_{s=1..t} b1 (1 - 0.5 * 0.96^s), in double, s ascending
 * up to s = FG_NADAM_EXACT_STEPS; from there on 0.5 * 0.96^s is below half an
 * ulp of 1 and every factor is exactly b1, so the rest is b1^(t - S) by one
 * pow() — O(1) per call however long training runs (numpy_lossopt.py does
 * the same). */
#define FG_NADAM_EXACT_STEPS 1000
static double nadam_uprod(double b1, int64_t t) {
    double u = 1.0;
    int64_t head = t < FG_NADAM_EXACT_STEPS ? t : FG_NADAM_EXACT_STEPS;
    for (int64_t s = 1; s <= head; s++) u *= b1 * (1.0 - 0.5 * pow(0.96, (double)s));
    if (t > head) u *= pow(b1, (double)(t - head));
    return u;
}

int FG_ISA_FN(fg_optx_update)(float *param, float *s1, float *s2, float *s3, const float *grad, int64_t n,
                              const fg_optx_args *a, int nthreads) {
    if (a == NULL || n < 0 || (n > 0 && (param == NULL || grad == NULL))) return FG_ERR_ARG;
    if (a->step < 1 || !(a->lr >= 0.0f)) return FG_ERR_ARG;
    int need = 0;
    switch (a->kind) {
    case FG_OPTX_NADAM: case FG_OPTX_ADAMAX: case FG_OPTX_ADADELTA: case FG_OPTX_FTRL: need = 2; break;
    case FG_OPTX_LION: need = 1; break;
    case FG_OPTX_AMSGRAD: need = 3; break;
    default: return FG_ERR_ARG;
    }
    if (n > 0 && ((need >= 1 && s1 == NULL) || (need >= 2 && s2 == NULL) || (need >= 3 && s3 == NULL)))
        return FG_ERR_ARG;
    if (a->kind == FG_OPTX_FTRL && !(a->lr > 0.0f && a->lr_power <= 0.0f && a->l1 >= 0.0f && a->l2 >= 0.0f &&
                                     a->l2_shrinkage >= 0.0f && a->beta >= 0.0f))
        return FG_ERR_ARG;
    if (n == 0) return FG_OK;
    kargs k;
    memset(&k, 0, sizeof(k));
    const double lr = a->lr, b1 = a->beta1, b2 = a->beta2, t = (double)a->step;
    k.lr = a->lr; k.eps = a->eps; k.wd = a->weight_decay; k.decoupled = a->decoupled;
    k.keep = (float)(1.0 - lr * (double)a->weight_decay);
    k.b1 = a->beta1; k.omb1 = (float)(1.0 - b1); k.b2 = a->beta2; k.omb2 = (float)(1.0 - b2);
    k.rho = a->rho; k.omr = (float)(1.0 - (double)a->rho);
    switch (a->kind) {
    case FG_OPTX_NADAM: {
        double ut = b1 * (1.0 - 0.5 * pow(0.96, t)), ut1 = b1 * (1.0 - 0.5 * pow(0.96, t + 1.0));
        double up = nadam_uprod(b1, a->step), up1 = up * ut1;
        k.c_m = (float)(ut1 / (1.0 - up1));
        k.c_g = (float)((1.0 - ut) / (1.0 - up));
        k.bc2 = (float)(1.0 - pow(b2, t));
        break;
    }
    case FG_OPTX_ADAMAX: k.bc1 = (float)(1.0 - pow(b1, t)); break;
    case FG_OPTX_AMSGRAD: k.alpha = (float)(lr * sqrt(1.0 - pow(b2, t)) / (1.0 - pow(b1, t))); break;
    case FG_OPTX_FTRL:
        k.l1 = a->l1;
        k.l2x2 = (float)(2.0 * ((double)a->l2 + (double)a->beta / (2.0 * lr)));
        k.shr2 = (float)(2.0 * (double)a->l2_shrinkage);
        k.lrp = -a->lr_power;
        k.sqrt_pow = a->lr_power == -0.5f;
        k.unit_pow = a->lr_power == 0.0f;
        break;
    default: break;
    }
    int nt = fg_threads_for(n, GRAIN_OPTX, nthreads);
#define BODY_(lo, hi)                                                                 \
    do {                                                                              \
        switch (a->kind) {                                                            \
        case FG_OPTX_NADAM: nadam_range(param, s1, s2, grad, &k, lo, hi); break;      \
        case FG_OPTX_ADAMAX: adamax_range(param, s1, s2, grad, &k, lo, hi); break;    \
        case FG_OPTX_ADADELTA: adadelta_range(param, s1, s2, grad, &k, lo, hi); break; \
        case FG_OPTX_FTRL: ftrl_range(param, s1, s2, grad, &k, lo, hi); break;        \
        case FG_OPTX_LION: lion_range(param, s1, grad, &k, lo, hi); break;            \
        default: amsgrad_range(param, s1, s2, s3, grad, &k, lo, hi); break;           \
        }                                                                             \
    } while (0)
    FG_PARALLEL_RANGE(n, 16, nt, BODY_);
#undef BODY_
    return FG_OK;
}
