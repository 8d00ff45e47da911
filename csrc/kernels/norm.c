/* norm.c — LayerNorm (statistics per row) and training-mode BatchNorm
 * (statistics per column), forward and backward. Compiled once per
 * instruction set; plain C loops the compiler vectorises for each copy.
 *
 * Sums are accumulated in double: along a row in 16 independent lanes
 * (element j goes to lane j % 16, lanes combined in a fixed tree), down the
 * columns in row order with one accumulator per column (tiles of CTILE
 * columns). Neither order depends
 * on the thread count: LayerNorm rows are owned by one thread each, BatchNorm
 * (and the LayerNorm parameter gradients) split the columns in blocks of 16.
 * With -ffp-contract=off every ISA copy performs the same IEEE operations, so
 * the results are also the same on every ISA. */
#include "fg_norm.h"
#include "fg_vmath.h"

/* below ~32K floats (128 KiB) a second thread costs more than it saves */
#define GRAIN_NORM ((int64_t)1 << 15)
/* BatchNorm / gradient column tile: 256 double accumulators (2 KiB) per sum */
#define CTILE 256

/* ------------------------------------------------------------------ helpers */

/* sum of x[0:n] in double, 16 lanes, fixed tree */
static double row_sum(const float *FG_RESTRICT x, int64_t n) {
    double acc[16] = {0};
    int64_t j = 0;
    for (; j + 16 <= n; j += 16)
        for (int l = 0; l < 16; l++) acc[l] += (double)x[j + l];
    for (int l = 0; j < n; j++, l++) acc[l] += (double)x[j];
    for (int l = 0; l < 8; l++) acc[l] += acc[l + 8];
    for (int l = 0; l < 4; l++) acc[l] += acc[l + 4];
    for (int l = 0; l < 2; l++) acc[l] += acc[l + 2];
    return acc[0] + acc[1];
}

/* sum of (x - m)^2 (difference in float, square in double), 16 lanes */
static double row_ssd(const float *FG_RESTRICT x, float m, int64_t n) {
    double acc[16] = {0};
    int64_t j = 0;
    for (; j + 16 <= n; j += 16)
        for (int l = 0; l < 16; l++) {
            double d = (double)(x[j + l] - m);
            acc[l] += d * d;
        }
    for (int l = 0; j < n; j++, l++) {
        double d = (double)(x[j] - m);
        acc[l] += d * d;
    }
    for (int l = 0; l < 8; l++) acc[l] += acc[l + 8];
    for (int l = 0; l < 4; l++) acc[l] += acc[l + 4];
    for (int l = 0; l < 2; l++) acc[l] += acc[l + 2];
    return acc[0] + acc[1];
}

/* y = ((x - m) * r) * gamma + beta over n elements (NumpyOps' float order) */
static void normalize_row(float *FG_RESTRICT y, const float *FG_RESTRICT x, float m, float r,
                          const float *FG_RESTRICT gamma, const float *FG_RESTRICT beta, int64_t n) {
    if (gamma && beta)
        for (int64_t j = 0; j < n; j++) y[j] = ((x[j] - m) * r) * gamma[j] + beta[j];
    else if (gamma)
        for (int64_t j = 0; j < n; j++) y[j] = ((x[j] - m) * r) * gamma[j];
    else if (beta)
        for (int64_t j = 0; j < n; j++) y[j] = ((x[j] - m) * r) + beta[j];
    else
        for (int64_t j = 0; j < n; j++) y[j] = (x[j] - m) * r;
}

/* ---------------------------------------------------------------- LayerNorm */

static void ln_forward_rows(float *y, float *mean, float *rstd, const float *x, const float *gamma,
                            const float *beta, int64_t cols, float eps, int64_t r0, int64_t r1) {
    for (int64_t i = r0; i < r1; i++) {
        const float *xi = x + i * cols;
        double mu = row_sum(xi, cols) / (double)cols;
        float muf = (float)mu;
        double var = row_ssd(xi, muf, cols) / (double)cols;
        double rs = 1.0 / sqrt(var + (double)eps);
        float rsf = (float)rs;
        if (mean) mean[i] = muf;
        if (rstd) rstd[i] = rsf;
        normalize_row(y + i * cols, xi, muf, rsf, gamma, beta, cols);
    }
}

/* x, y: (rows, cols); gamma, beta: (cols,) or NULL; mean, rstd: (rows,) or NULL */
int FG_ISA_FN(fg_layernorm_forward)(float *y, float *mean, float *rstd, const float *x, const float *gamma,
                                    const float *beta, int64_t rows, int64_t cols, float eps, int nthreads) {
    if (rows < 0 || cols < 0) return FG_ERR_ARG;
    if (rows == 0) return FG_OK;
    if (cols == 0) { /* mean of nothing: NaN, like NumPy */
        for (int64_t i = 0; i < rows; i++) {
            if (mean) mean[i] = NAN;
            if (rstd) rstd[i] = NAN;
        }
        return FG_OK;
    }
    int nt = fg_threads_for(rows * cols, GRAIN_NORM, nthreads);
    if (nt > rows) nt = (int)rows;
#define BODY_(lo, hi) ln_forward_rows(y, mean, rstd, x, gamma, beta, cols, eps, lo, hi)
    FG_PARALLEL_RANGE(rows, 1, nt, BODY_);
#undef BODY_
    return FG_OK;
}

/* dx rows r0..r1: per row sums of g and g xhat in double, then
 * dx = rstd ((g - mean(g)) - xhat mean(g xhat)) in float. When dgamma / dbeta
 * are given (single-threaded call only) the same pass also adds this row's
 * dy xhat / dy to them (float, row order: the bits of ln_param_grads). */
static void ln_backward_rows(float *dx, float *FG_RESTRICT dgamma, float *FG_RESTRICT dbeta, const float *dy,
                             const float *x, const float *gamma, const float *mean, const float *rstd, int64_t cols,
                             int64_t r0, int64_t r1) {
    for (int64_t i = r0; i < r1; i++) {
        const float *d = dy + i * cols;
        const float *FG_RESTRICT xi = x + i * cols;
        float *o = dx + i * cols; /* may be d: each element is read before it is written */
        const float m = mean[i], r = rstd[i];
        double sg[16] = {0}, sgx[16] = {0};
        int64_t j = 0;
        for (; j + 16 <= cols; j += 16)
            for (int l = 0; l < 16; l++) {
                float g = gamma ? d[j + l] * gamma[j + l] : d[j + l];
                float xh = (xi[j + l] - m) * r;
                sg[l] += (double)g;
                sgx[l] += (double)(g * xh);
            }
        for (int l = 0; j < cols; j++, l++) {
            float g = gamma ? d[j] * gamma[j] : d[j];
            float xh = (xi[j] - m) * r;
            sg[l] += (double)g;
            sgx[l] += (double)(g * xh);
        }
        for (int l = 0; l < 8; l++) { sg[l] += sg[l + 8]; sgx[l] += sgx[l + 8]; }
        for (int l = 0; l < 4; l++) { sg[l] += sg[l + 4]; sgx[l] += sgx[l + 4]; }
        for (int l = 0; l < 2; l++) { sg[l] += sg[l + 2]; sgx[l] += sgx[l + 2]; }
        const float mg = (float)((sg[0] + sg[1]) / (double)cols);
        const float mgx = (float)((sgx[0] + sgx[1]) / (double)cols);
        if (dgamma && dbeta)
            for (j = 0; j < cols; j++) {
                float dj = d[j];
                float xh = (xi[j] - m) * r;
                dgamma[j] += dj * xh;
                dbeta[j] += dj;
                o[j] = r * ((dj * gamma[j] - mg) - xh * mgx);
            }
        else if (dbeta && gamma)
            for (j = 0; j < cols; j++) {
                float dj = d[j];
                float xh = (xi[j] - m) * r;
                dbeta[j] += dj;
                o[j] = r * ((dj * gamma[j] - mg) - xh * mgx);
            }
        else if (dbeta)
            for (j = 0; j < cols; j++) {
                float dj = d[j];
                float xh = (xi[j] - m) * r;
                dbeta[j] += dj;
                o[j] = r * ((dj - mg) - xh * mgx);
            }
        else if (dgamma)
            for (j = 0; j < cols; j++) {
                float dj = d[j];
                float xh = (xi[j] - m) * r;
                dgamma[j] += dj * xh;
                o[j] = r * ((dj * gamma[j] - mg) - xh * mgx);
            }
        else if (gamma)
            for (j = 0; j < cols; j++) {
                float xh = (xi[j] - m) * r;
                o[j] = r * ((d[j] * gamma[j] - mg) - xh * mgx);
            }
        else
            for (j = 0; j < cols; j++) {
                float xh = (xi[j] - m) * r;
                o[j] = r * ((d[j] - mg) - xh * mgx);
            }
    }
}

/* dgamma / dbeta for columns c0..c1 (multi-threaded calls): float sums over all
 * rows in row order starting from 0, the same operations as the fused pass */
static void ln_param_grads(float *FG_RESTRICT dgamma, float *FG_RESTRICT dbeta, const float *FG_RESTRICT dy,
                           const float *FG_RESTRICT x, const float *FG_RESTRICT mean, const float *FG_RESTRICT rstd,
                           int64_t rows, int64_t cols, int64_t c0, int64_t c1) {
    for (int64_t t0 = c0; t0 < c1; t0 += CTILE) {
        const int64_t w = t0 + CTILE < c1 ? CTILE : c1 - t0;
        float *FG_RESTRICT ag = dgamma ? dgamma + t0 : NULL;
        float *FG_RESTRICT ab = dbeta ? dbeta + t0 : NULL;
        if (ag) memset(ag, 0, (size_t)w * sizeof(float));
        if (ab) memset(ab, 0, (size_t)w * sizeof(float));
        for (int64_t i = 0; i < rows; i++) {
            const float *FG_RESTRICT d = dy + i * cols + t0;
            const float *FG_RESTRICT xi = x + i * cols + t0;
            const float m = mean[i], r = rstd[i];
            if (ag)
                for (int64_t j = 0; j < w; j++) ag[j] += d[j] * ((xi[j] - m) * r);
            if (ab)
                for (int64_t j = 0; j < w; j++) ab[j] += d[j];
        }
    }
}

/* dy, x, dx: (rows, cols); gamma, dgamma, dbeta: (cols,) or NULL; mean, rstd: (rows,) */
int FG_ISA_FN(fg_layernorm_backward)(float *dx, float *dgamma, float *dbeta, const float *dy, const float *x,
                                     const float *gamma, const float *mean, const float *rstd, int64_t rows,
                                     int64_t cols, int nthreads) {
    if (rows < 0 || cols < 0) return FG_ERR_ARG;
    if (!gamma) dgamma = NULL;
    if (cols == 0) return FG_OK;
    if (dgamma) memset(dgamma, 0, (size_t)cols * sizeof(float));
    if (dbeta) memset(dbeta, 0, (size_t)cols * sizeof(float));
    if (rows == 0) return FG_OK;
    const int nt0 = fg_threads_for(rows * cols, GRAIN_NORM, nthreads);
    if (nt0 <= 1) { /* one pass over dy and x: dx and the parameter gradients */
        unsigned fs = fg_fpstate_enter();
        ln_backward_rows(dx, dgamma, dbeta, dy, x, gamma, mean, rstd, cols, 0, rows);
        fg_fpstate_leave(fs);
        return FG_OK;
    }
    /* threads: parameter gradients split by columns first (they read dy, which
     * dx may overwrite), then dx split by rows */
    if (dgamma || dbeta) {
        const int64_t nb = (cols + 15) / 16;
        int nt = nt0 > nb ? (int)nb : nt0;
#define BODY_(lo, hi) \
    ln_param_grads(dgamma, dbeta, dy, x, mean, rstd, rows, cols, (lo) * 16, (hi) * 16 < cols ? (hi) * 16 : cols)
        FG_PARALLEL_RANGE(nb, 1, nt, BODY_);
#undef BODY_
    }
    int nt = nt0 > rows ? (int)rows : nt0;
#define BODY_(lo, hi) ln_backward_rows(dx, NULL, NULL, dy, x, gamma, mean, rstd, cols, lo, hi)
    FG_PARALLEL_RANGE(rows, 1, nt, BODY_);
#undef BODY_
    return FG_OK;
}

/* ---------------------------------------------------------------- BatchNorm */

/* columns c0..c1 (tiles of CTILE): statistics down the rows in one pass, then y.
 * One read of x for the statistics (memory-bound for large batches): sums of
 * d = x - k and d^2 in double with the shift k = x[0, j] (the "shifted data"
 * variance): d is exact in double and var = (S2 - S1^2 / n) / n only loses
 * 2 log2(|k - mean| / std) of double's 53 bits, so it stays more accurate than
 * float32 unless the first row is ~1e4 standard deviations off the mean.
 * relu: y = max(0, z) of the normalised z, as fg_act_forward's relu computes it
 * (0 > z ? 0 : z: NaN and -0 pass), in the same pass. */
FG_VINLINE void bn_forward_tile(float *y, float *mean, float *rstd, const float *x, const float *gamma,
                                const float *beta, int64_t rows, int64_t cols, float eps, int relu, int64_t t0,
                                int64_t w) {
    double s1[CTILE], s2[CTILE], k[CTILE];
    float mf[CTILE], rf[CTILE], gf[CTILE], bf[CTILE];
    const double n = (double)rows;
    {
        for (int64_t j = 0; j < w; j++) {
            k[j] = (double)x[t0 + j];
            s1[j] = s2[j] = 0.0;
        }
        for (int64_t i = 1; i < rows; i++) {
            const float *FG_RESTRICT xi = x + i * cols + t0;
            for (int64_t j = 0; j < w; j++) {
                double d = (double)xi[j] - k[j];
                s1[j] += d;
                s2[j] += d * d;
            }
        }
        for (int64_t j = 0; j < w; j++) {
            double var = (s2[j] - s1[j] * (s1[j] / n)) / n;
            var = var < 0.0 ? 0.0 : var; /* rounding below 0; NaN stays NaN */
            mf[j] = (float)(k[j] + s1[j] / n);
            rf[j] = (float)(1.0 / sqrt(var + (double)eps));
        }
        if (mean) memcpy(mean + t0, mf, (size_t)w * sizeof(float));
        if (rstd) memcpy(rstd + t0, rf, (size_t)w * sizeof(float));
        const float *g = gamma ? gamma + t0 : NULL;
        const float *b = beta ? beta + t0 : NULL;
        if (relu) { /* gamma 1 / beta 0 would change -0 and NaN payloads: keep the four forms */
            for (int64_t j = 0; j < w; j++) {
                gf[j] = g ? g[j] : 1.0f;
                bf[j] = b ? b[j] : 0.0f;
            }
            for (int64_t i = 0; i < rows; i++) {
                const float *FG_RESTRICT xi = x + i * cols + t0;
                float *FG_RESTRICT yi = y + i * cols + t0;
                if (g && b)
                    for (int64_t j = 0; j < w; j++) {
                        float z = ((xi[j] - mf[j]) * rf[j]) * gf[j] + bf[j];
                        yi[j] = 0.0f > z ? 0.0f : z;
                    }
                else if (g)
                    for (int64_t j = 0; j < w; j++) {
                        float z = ((xi[j] - mf[j]) * rf[j]) * gf[j];
                        yi[j] = 0.0f > z ? 0.0f : z;
                    }
                else if (b)
                    for (int64_t j = 0; j < w; j++) {
                        float z = ((xi[j] - mf[j]) * rf[j]) + bf[j];
                        yi[j] = 0.0f > z ? 0.0f : z;
                    }
                else
                    for (int64_t j = 0; j < w; j++) {
                        float z = (xi[j] - mf[j]) * rf[j];
                        yi[j] = 0.0f > z ? 0.0f : z;
                    }
            }
            return;
        }
        for (int64_t i = 0; i < rows; i++) {
            const float *FG_RESTRICT xi = x + i * cols + t0;
            float *FG_RESTRICT yi = y + i * cols + t0;
            if (g && b)
                for (int64_t j = 0; j < w; j++) yi[j] = ((xi[j] - mf[j]) * rf[j]) * g[j] + b[j];
            else if (g)
                for (int64_t j = 0; j < w; j++) yi[j] = ((xi[j] - mf[j]) * rf[j]) * g[j];
            else if (b)
                for (int64_t j = 0; j < w; j++) yi[j] = ((xi[j] - mf[j]) * rf[j]) + b[j];
            else
                for (int64_t j = 0; j < w; j++) yi[j] = (xi[j] - mf[j]) * rf[j];
        }
    }
}

/* Tiles of CTILE columns; a tile of exactly 32 (a conv net's channels on one
 * thread) or 16 (32 channels split between two threads) runs a copy of the
 * body specialised to that width, whose accumulators stay in registers (the
 * generic copy keeps them in memory, one load and store per row). The same
 * operations either way, so the same bits. The 16 copy, measured on Zen 4
 * (2 threads, quiet; the CIFAR-shaped net's epoch, whose two 32-channel
 * BatchNorms each thread takes 16 columns of): AVX2 path 0.93-0.96 ->
 * 0.82 s per 1,024 samples, AVX-512 path 0.765 -> 0.725-0.736 s. */
static void bn_forward_cols(float *y, float *mean, float *rstd, const float *x, const float *gamma,
                            const float *beta, int64_t rows, int64_t cols, float eps, int relu, int64_t c0,
                            int64_t c1) {
    for (int64_t t0 = c0; t0 < c1; t0 += CTILE) {
        const int64_t w = t0 + CTILE < c1 ? CTILE : c1 - t0;
        if (w == 32)
            bn_forward_tile(y, mean, rstd, x, gamma, beta, rows, cols, eps, relu, t0, 32);
        else if (w == 16)
            bn_forward_tile(y, mean, rstd, x, gamma, beta, rows, cols, eps, relu, t0, 16);
        else
            bn_forward_tile(y, mean, rstd, x, gamma, beta, rows, cols, eps, relu, t0, w);
    }
}

/* x, y: (rows, cols); gamma, beta: (cols,) or NULL; mean, rstd: (cols,) or NULL;
 * act: FG_ACT_LINEAR or FG_ACT_RELU (applied to the normalised output) */
int FG_ISA_FN(fg_batchnorm_forward_act)(float *y, float *mean, float *rstd, const float *x, const float *gamma,
                                        const float *beta, int64_t rows, int64_t cols, float eps, int act,
                                        int nthreads) {
    if (rows < 0 || cols < 0 || (act != FG_ACT_LINEAR && act != FG_ACT_RELU)) return FG_ERR_ARG;
    if (cols == 0) return FG_OK;
    if (rows == 0) { /* mean over no rows: NaN, like NumPy */
        for (int64_t j = 0; j < cols; j++) {
            if (mean) mean[j] = NAN;
            if (rstd) rstd[j] = NAN;
        }
        return FG_OK;
    }
    const int relu = act == FG_ACT_RELU;
    const int64_t nb = (cols + 15) / 16;
    int nt = fg_threads_for(rows * cols, GRAIN_NORM, nthreads);
    if (nt > nb) nt = (int)nb;
#define BODY_(lo, hi)                                                               \
    bn_forward_cols(y, mean, rstd, x, gamma, beta, rows, cols, eps, relu, (lo) * 16, \
                    (hi) * 16 < cols ? (hi) * 16 : cols)
    FG_PARALLEL_RANGE(nb, 1, nt, BODY_);
#undef BODY_
    return FG_OK;
}

/* relu backward folded into the batch-norm backward: dy * (z > 0 ? 1 : 0),
 * the same float product as fg_act_backward's relu (on y = relu(z): y > 0
 * exactly when z > 0), with z the forward's normalised value recomputed from
 * x by the forward's own operations (so y need not be read) */
#define BN_RELU_MASK_(z) ((z) > 0.0f ? 1.0f : 0.0f)

/* columns c0..c1: sums of dy and dy xhat down the rows (double, row order),
 * then dx = rstd ((g - mean(g)) - xhat mean(g xhat)) with g = dy gamma.
 * relu: dy is first masked as above (the mask recomputed in both passes) */
FG_VINLINE void bn_backward_tile(float *dx, float *dgamma, float *dbeta, const float *dy, const float *x,
                                 const float *gamma, const float *beta, const float *mean, const float *rstd,
                                 int64_t rows, int64_t cols, int relu, int64_t t0, int64_t w) {
    double sd[CTILE], sdx[CTILE];
    float mg[CTILE], mgx[CTILE], gm[CTILE], bt[CTILE];
    {
        const float *FG_RESTRICT m = mean + t0;
        const float *FG_RESTRICT r = rstd + t0;
        for (int64_t j = 0; j < w; j++) {
            sd[j] = sdx[j] = 0.0;
            gm[j] = gamma ? gamma[t0 + j] : 1.0f;
            bt[j] = beta ? beta[t0 + j] : 0.0f;
        }
        /* the mask only asks z > 0: xh * 1 + 0 > 0 exactly when xh > 0 (-0, NaN: no),
         * so absent gamma / beta (1 / 0) need no forms of their own here */
#define BN_Z_(xh) ((xh) * gm[j] + bt[j])
        if (relu) {
            for (int64_t i = 0; i < rows; i++) {
                const float *FG_RESTRICT d = dy + i * cols + t0;
                const float *FG_RESTRICT xi = x + i * cols + t0;
                for (int64_t j = 0; j < w; j++) {
                    float xh = (xi[j] - m[j]) * r[j];
                    float dm = d[j] * BN_RELU_MASK_(BN_Z_(xh));
                    sd[j] += (double)dm;
                    sdx[j] += (double)(dm * xh);
                }
            }
        } else {
            for (int64_t i = 0; i < rows; i++) {
                const float *FG_RESTRICT d = dy + i * cols + t0;
                const float *FG_RESTRICT xi = x + i * cols + t0;
                for (int64_t j = 0; j < w; j++) {
                    sd[j] += (double)d[j];
                    sdx[j] += (double)(d[j] * ((xi[j] - m[j]) * r[j]));
                }
            }
        }
        for (int64_t j = 0; j < w; j++) {
            /* g = dy gamma is linear in dy: its sums are gamma times those of dy */
            mg[j] = (float)((double)gm[j] * sd[j] / (double)rows);
            mgx[j] = (float)((double)gm[j] * sdx[j] / (double)rows);
        }
        if (dgamma)
            for (int64_t j = 0; j < w; j++) dgamma[t0 + j] = (float)sdx[j];
        if (dbeta)
            for (int64_t j = 0; j < w; j++) dbeta[t0 + j] = (float)sd[j];
        for (int64_t i = 0; i < rows; i++) {
            const float *FG_RESTRICT d = dy + i * cols + t0;
            const float *FG_RESTRICT xi = x + i * cols + t0;
            float *o = dx + i * cols + t0; /* may be d */
            if (relu && gamma)
                for (int64_t j = 0; j < w; j++) {
                    float xh = (xi[j] - m[j]) * r[j];
                    float dm = d[j] * BN_RELU_MASK_(BN_Z_(xh));
                    o[j] = r[j] * ((dm * gm[j] - mg[j]) - xh * mgx[j]);
                }
            else if (relu)
                for (int64_t j = 0; j < w; j++) {
                    float xh = (xi[j] - m[j]) * r[j];
                    float dm = d[j] * BN_RELU_MASK_(BN_Z_(xh));
                    o[j] = r[j] * ((dm - mg[j]) - xh * mgx[j]);
                }
            else if (gamma)
                for (int64_t j = 0; j < w; j++) {
                    float xh = (xi[j] - m[j]) * r[j];
                    o[j] = r[j] * ((d[j] * gm[j] - mg[j]) - xh * mgx[j]);
                }
            else
                for (int64_t j = 0; j < w; j++) {
                    float xh = (xi[j] - m[j]) * r[j];
                    o[j] = r[j] * ((d[j] - mg[j]) - xh * mgx[j]);
                }
        }
#undef BN_Z_
    }
}

/* tiles as in the forward (width 32 specialised) */
static void bn_backward_cols(float *dx, float *dgamma, float *dbeta, const float *dy, const float *x,
                             const float *gamma, const float *beta, const float *mean, const float *rstd,
                             int64_t rows, int64_t cols, int relu, int64_t c0, int64_t c1) {
    for (int64_t t0 = c0; t0 < c1; t0 += CTILE) {
        const int64_t w = t0 + CTILE < c1 ? CTILE : c1 - t0;
        if (w == 32)
            bn_backward_tile(dx, dgamma, dbeta, dy, x, gamma, beta, mean, rstd, rows, cols, relu, t0, 32);
        else if (w == 16)
            bn_backward_tile(dx, dgamma, dbeta, dy, x, gamma, beta, mean, rstd, rows, cols, relu, t0, 16);
        else
            bn_backward_tile(dx, dgamma, dbeta, dy, x, gamma, beta, mean, rstd, rows, cols, relu, t0, w);
    }
}

/* dy, x, dx: (rows, cols); gamma, beta, dgamma, dbeta: (cols,) or NULL; mean, rstd: (cols,);
 * act: the forward's (FG_ACT_LINEAR or FG_ACT_RELU; beta is read only for relu) */
int FG_ISA_FN(fg_batchnorm_backward_act)(float *dx, float *dgamma, float *dbeta, const float *dy, const float *x,
                                         const float *gamma, const float *beta, const float *mean,
                                         const float *rstd, int64_t rows, int64_t cols, int act, int nthreads) {
    if (rows < 0 || cols < 0 || (act != FG_ACT_LINEAR && act != FG_ACT_RELU)) return FG_ERR_ARG;
    if (!gamma) dgamma = NULL;
    if (cols == 0) return FG_OK;
    if (rows == 0) {
        if (dgamma) memset(dgamma, 0, (size_t)cols * sizeof(float));
        if (dbeta) memset(dbeta, 0, (size_t)cols * sizeof(float));
        return FG_OK;
    }
    const int relu = act == FG_ACT_RELU;
    const int64_t nb = (cols + 15) / 16;
    int nt = fg_threads_for(rows * cols, GRAIN_NORM, nthreads);
    if (nt > nb) nt = (int)nb;
#define BODY_(lo, hi)                                                                                  \
    bn_backward_cols(dx, dgamma, dbeta, dy, x, gamma, beta, mean, rstd, rows, cols, relu, (lo) * 16, \
                     (hi) * 16 < cols ? (hi) * 16 : cols)
    FG_PARALLEL_RANGE(nb, 1, nt, BODY_);
#undef BODY_
    return FG_OK;
}
