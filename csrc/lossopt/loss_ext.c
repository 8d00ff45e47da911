/* loss_ext.c — the element-wise / row-wise Keras losses of fg_lossopt.h, fused
 * with their gradient. Compiled once per instruction set; scalar per-element
 * code (libm calls, no contraction), so every ISA copy gives the same bits.
 * Each row's value is summed in double in column order; rows are cut into
 * chunks that depend only on `rows`, chunk partials are added in chunk order,
 * so loss_sum does not depend on the thread count. */
#include "fg_lossopt.h"
#include "kernels/fg_vmath.h"

#include <math.h>

#define EPS_K 1e-7f   /* Keras's backend.epsilon() */
#define GRAIN_PLOSS ((int64_t)1 << 13)
#define PLOSS_MIN_CHUNK 16

typedef struct {
    const float *pred, *target, *sw;
    float *dpred;
    int64_t rows, cols, chunk;
    int kind, binary;
    float param, grad_scale;
    double partial[FG_MAX_CHUNKS];
} ploss_job;

static inline float sgnf(float x) { return x > 0.0f ? 1.0f : (x < 0.0f ? -1.0f : 0.0f); }

/* one row: returns its value (sum over the row of the per-element values, or the
 * row-wise loss), writes c * d value / d p into g when g != NULL */
static double row_loss(const ploss_job *J, const float *p, const float *t, float *g, float c) {
    const int64_t n = J->cols;
    double s = 0.0;
    switch (J->kind) {
    case FG_PLOSS_MAE:
        for (int64_t j = 0; j < n; j++) {
            float d = p[j] - t[j];
            s += (double)fabsf(d);
            if (g) g[j] = c * sgnf(d);
        }
        return s;
    case FG_PLOSS_MAPE:
        for (int64_t j = 0; j < n; j++) {
            float at = fabsf(t[j]);
            float den = at > EPS_K ? at : EPS_K;
            float q = (t[j] - p[j]) / den;
            s += (double)fabsf(q);
            if (g) g[j] = c * ((100.0f * sgnf(p[j] - t[j])) / den);
        }
        return 100.0 * s;
    case FG_PLOSS_MSLE:
        for (int64_t j = 0; j < n; j++) {
            float pc = p[j] > EPS_K ? p[j] : EPS_K, tc = t[j] > EPS_K ? t[j] : EPS_K;
            float a = logf(pc + 1.0f), b = logf(tc + 1.0f);
            float d = a - b;
            s += (double)(d * d);
            if (g) g[j] = p[j] >= EPS_K ? c * ((2.0f * d) / (pc + 1.0f)) : 0.0f;
        }
        return s;
    case FG_PLOSS_HUBER: {
        const float delta = J->param, hd2 = 0.5f * (delta * delta);
        for (int64_t j = 0; j < n; j++) {
            float e = p[j] - t[j], a = fabsf(e);
            int in = a <= delta;
            s += (double)(in ? 0.5f * (e * e) : delta * a - hd2);
            if (g) g[j] = c * (in ? e : delta * sgnf(e));
        }
        return s;
    }
    case FG_PLOSS_LOGCOSH:
        for (int64_t j = 0; j < n; j++) {
            float x = p[j] - t[j];
            double ax = fabs((double)x);
            s += ax + log1p(exp(-2.0 * ax)) - 0.69314718055994530942;
            if (g) g[j] = c * tanhf(x);
        }
        return s;
    case FG_PLOSS_POISSON:
        for (int64_t j = 0; j < n; j++) {
            float pe = p[j] + EPS_K;
            s += (double)(p[j] - t[j] * logf(pe));
            if (g) g[j] = c * (1.0f - t[j] / pe);
        }
        return s;
    case FG_PLOSS_HINGE:
    case FG_PLOSS_SQHINGE: {
        const int sq = J->kind == FG_PLOSS_SQHINGE;
        for (int64_t j = 0; j < n; j++) {
            float tt = J->binary ? 2.0f * t[j] - 1.0f : t[j];
            float z = 1.0f - tt * p[j];
            float h = z > 0.0f ? z : 0.0f;
            s += (double)(sq ? h * h : h);
            if (g) g[j] = sq ? c * (-2.0f * tt * h) : (z > 0.0f ? c * -tt : 0.0f);
        }
        return s;
    }
    case FG_PLOSS_KLD:
        for (int64_t j = 0; j < n; j++) {
            float tc = t[j] < EPS_K ? EPS_K : (t[j] > 1.0f ? 1.0f : t[j]);
            float pc = p[j] < EPS_K ? EPS_K : (p[j] > 1.0f ? 1.0f : p[j]);
            s += (double)(tc * logf(tc / pc));
            if (g) g[j] = (p[j] >= EPS_K && p[j] <= 1.0f) ? c * -(tc / pc) : 0.0f;
        }
        return s;
    case FG_PLOSS_CATHINGE: {
        double pos = 0.0;
        float neg = -INFINITY;
        int64_t jm = 0;
        for (int64_t j = 0; j < n; j++) {
            pos += (double)t[j] * (double)p[j];
            float v = (1.0f - t[j]) * p[j];
            if (v > neg) { neg = v; jm = j; }
        }
        double l = (double)neg - pos + 1.0;
        if (l < 0.0) l = 0.0;
        if (g) {
            if (l > 0.0) {
                for (int64_t j = 0; j < n; j++) g[j] = c * -t[j];
                g[jm] = g[jm] + c * (1.0f - t[jm]);
            } else {
                for (int64_t j = 0; j < n; j++) g[j] = 0.0f;
            }
        }
        return l;
    }
    case FG_PLOSS_COSINE: {
        double pp = 0.0, tt = 0.0, tp = 0.0;
        for (int64_t j = 0; j < n; j++) {
            pp += (double)p[j] * (double)p[j];
            tt += (double)t[j] * (double)t[j];
            tp += (double)t[j] * (double)p[j];
        }
        double rp = pp > 0.0 ? 1.0 / sqrt(pp) : 1e7, rt = tt > 0.0 ? 1.0 / sqrt(tt) : 1e7;
        int clamped = rp >= 1e7;
        if (rp > 1e7) rp = 1e7;
        if (rt > 1e7) rt = 1e7;
        double cos = tp * rp * rt;
        if (g) {
            /* d/dp_j of -(t.p) rt rp = -rt rp (t_j - (t.p) rp^2 p_j); rp is constant when clamped */
            double a = -(double)c * rt * rp, b = clamped ? 0.0 : tp * rp * rp;
            for (int64_t j = 0; j < n; j++) g[j] = (float)(a * ((double)t[j] - b * (double)p[j]));
        }
        return -cos;
    }
    default:
        return 0.0;
    }
}

static void ploss_chunks(ploss_job *J, int64_t c0, int64_t c1) {
    const int64_t cols = J->cols;
    for (int64_t ch = c0; ch < c1; ch++) {
        int64_t r0 = ch * J->chunk, r1 = r0 + J->chunk < J->rows ? r0 + J->chunk : J->rows;
        double acc = 0.0;
        for (int64_t r = r0; r < r1; r++) {
            const float w = J->sw ? J->sw[r] : 1.0f;
            const float c = J->grad_scale * w;
            double v = row_loss(J, J->pred + r * cols, J->target + r * cols, J->dpred ? J->dpred + r * cols : NULL, c);
            acc += (double)w * v;
        }
        J->partial[ch] = acc;
    }
}

/* 1 when every target is 0 or 1 (serial, early exit) */
static int all_binary(const float *t, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        if (!(t[i] == 0.0f || t[i] == 1.0f)) return 0;
    return 1;
}

/* pred, target, dpred: (rows, cols); sample_weight: (rows,) */
int FG_ISA_FN(fg_pointwise_loss)(double *loss_sum, float *dpred, const float *pred, const float *target,
                                 const float *sample_weight, int64_t rows, int64_t cols, int kind, float param,
                                 float grad_scale, int nthreads) {
    if (loss_sum == NULL || rows < 0 || cols < 0 || kind < 1 || kind >= FG_PLOSS_COUNT) return FG_ERR_ARG;
    if (kind == FG_PLOSS_HUBER && !(param > 0.0f)) return FG_ERR_ARG;
    *loss_sum = 0.0;
    if (rows == 0 || cols == 0) return FG_OK;
    if (pred == NULL || target == NULL) return FG_ERR_ARG;
    ploss_job J;
    J.pred = pred; J.target = target; J.sw = sample_weight; J.dpred = dpred;
    J.rows = rows; J.cols = cols; J.kind = kind; J.param = param; J.grad_scale = grad_scale;
    J.binary = (kind == FG_PLOSS_HINGE || kind == FG_PLOSS_SQHINGE) ? all_binary(target, rows * cols) : 0;
    int64_t cs = (rows + FG_MAX_CHUNKS - 1) / FG_MAX_CHUNKS;
    if (cs < PLOSS_MIN_CHUNK) cs = PLOSS_MIN_CHUNK;
    J.chunk = cs;
    int64_t nch = (rows + cs - 1) / cs;
    int nt = fg_threads_for(rows * cols, GRAIN_PLOSS, nthreads);
    if (nt > nch) nt = (int)nch;
#define BODY_(c0, c1) ploss_chunks(&J, c0, c1)
    FG_PARALLEL_RANGE(nch, 1, nt, BODY_);
#undef BODY_
    double s = 0.0;
    for (int64_t c = 0; c < nch; c++) s += J.partial[c];
    *loss_sum = s;
    return FG_OK;
}
