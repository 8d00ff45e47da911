/* loss.c — fused losses from logits / predictions, with gradients.
 * Compiled once per instruction set (fg_vmath.h).
 *
 * Layouts, chosen by the number of columns (classes / outputs) alone:
 *   many columns   one row at a time, a few passes over its (L1-resident)
 *                  values: max, exp + sum (exp stored in the gradient buffer),
 *                  scale;
 *   <= 32 classes  (softmax-CE) rows across the vector lanes: a block of VL
 *                  rows is transposed into a small stack tile, so max / exp /
 *                  sums need no horizontal reductions and no masked lanes;
 *   few outputs    (BCE, MSE) flat element streams / plain per-row loops.
 * The loss sum runs over row chunks whose size depends only on `rows`; chunk
 * partials are added in chunk order, so loss_sum does not depend on the
 * thread count (each row's value does not depend on which rows share a
 * vector or a thread).
 *
 * Accuracy of the cross-entropy when the prediction is confident: with
 * m = max_j x_j, the row's sum of exp(x_j - m) is k + rest, where k counts the
 * entries equal to m (each contributes exactly 1) and `rest` sums the others.
 * log-sum-exp - x_label = (m - x_label) + log1p((k - 1) + rest), computed in
 * double, keeps full relative precision for losses far below float epsilon. */
#include "fg_loss.h"
#include "fg_vmath.h"

/* an exp per element: serial below ~16K elements (see activation.c) */
#define GRAIN_LOSS ((int64_t)1 << 13)
#define GRAIN_MSE ((int64_t)1 << 16)
#define LOSS_MIN_CHUNK 16 /* rows: a whole AVX-512 vector of rows for the row-per-lane paths */

static float row_max(const float *x, int64_t cols) {
    V m = v_set1(-INFINITY);
    int64_t j = 0;
    for (; j + VL <= cols; j += VL) m = v_max(m, v_load(x + j));
    float mx = v_hmax(m);
    for (; j < cols; j++) mx = x[j] > mx ? x[j] : mx;
    return mx;
}

/* e[j] = exp(x[j] - mx) stored into e (if not NULL); returns rest = sum of e over
 * entries below mx, *k = number of entries equal to mx */
static double row_exp(float *e, const float *x, int64_t cols, float mx, int64_t *k) {
    V vm = v_set1(mx), acc = v_zero(), ties = v_zero();
    const V one = v_set1(1.0f);
    double total = 0.0;
    int64_t j = 0;
    for (; j + VL <= cols; j += VL) {
        V xv = v_load(x + j);
        V ev = v_exp(v_sub(xv, vm));
        if (e) v_store(e + j, ev);
        M eq = v_eq(xv, vm);
        acc = v_add(acc, v_sel(eq, ev, v_zero()));
        ties = v_add(ties, v_sel(eq, v_zero(), one));
        if ((j + VL) % FG_SUM_BLOCK == 0) {
            total += (double)v_hsum(acc);
            acc = v_zero();
        }
    }
    if (j < cols) {
        int64_t r = cols - j;
        V xv = v_loadn(x + j, r);
        V ev = v_exp(v_sub(xv, vm));
        if (e) v_storen(e + j, ev, r);
        M in = v_firstn(r);
        M eq = v_eq(xv, vm);
        acc = v_add(acc, v_sel(in, v_zero(), v_sel(eq, ev, v_zero())));
        ties = v_add(ties, v_sel(in, v_zero(), v_sel(eq, v_zero(), one)));
    }
    *k = (int64_t)v_hsum(ties); /* exact: counts stay far below 2^24 per lane */
    return total + (double)v_hsum(acc);
}

/* first index of the maximum (numpy argmax), NaN-free rows */
static int64_t row_argmax(const float *x, int64_t cols, float mx) {
    for (int64_t j = 0; j < cols; j++)
        if (x[j] == mx) return j;
    return 0;
}

/* g[j] = c * e[j] / s  (in place over e) */
static void row_scale(float *g, int64_t cols, float c_over_s) {
    V vc = v_set1(c_over_s);
    int64_t j = 0;
    for (; j + VL <= cols; j += VL) v_store(g + j, v_mul(v_load(g + j), vc));
    if (j < cols) v_storen(g + j, v_mul(v_loadn(g + j, cols - j), vc), cols - j);
}

typedef struct {
    double *loss_sum;
    float *dlogits;
    int64_t *correct;
    const float *logits, *target, *sw;
    const int64_t *labels;
    int64_t rows, cols, chunk;
    float grad_scale, eps;
    double partial[FG_MAX_CHUNKS];
    int64_t partial_correct[FG_MAX_CHUNKS];
} loss_job;

static double fold(const double *p, int64_t n) {
    double s = 0.0;
    for (int64_t c = 0; c < n; c++) s += p[c];
    return s;
}

/* Few classes (cols <= SMALL_COLS, e.g. the 10-class head): a row-per-lane
 * layout instead of a row-per-vector one. A block of VL rows is transposed into
 * tmp[cols][VL]; max, exp, sums, first argmax and log1p then run across rows
 * with no horizontal reductions and no masked-off lanes, and the gradient is
 * transposed back. Same formulas as the row path (loss in float here, summed
 * in double in row order). */
#define SMALL_COLS 32

static double sparse_rows_small(loss_job *J, int64_t r0, int64_t r1, int64_t *ncorrect) {
    const int64_t cols = J->cols;
    float tmp[SMALL_COLS][VL];
    float lane_loss[VL], lane_s[VL], lane_cw[VL], lane_fix[VL], lane_ismax[VL], lane_arg[VL], xl[VL];
    const VI idx = vi_iota_mul((int)cols);
    double acc = 0.0;
    for (int64_t rb = r0; rb < r1; rb += VL) {
        const int64_t nb = r1 - rb < VL ? r1 - rb : VL;
        const float *xb = J->logits + rb * cols;
        for (int64_t l = 0; l < VL; l++) xl[l] = l < nb ? xb[l * cols + J->labels[rb + l]] : 0.0f;
        /* columns gathered across the rows (vector stores into the tile: scalar
         * stores followed by vector loads would stall store forwarding) */
        V m = v_set1(-INFINITY);
        for (int64_t j = 0; j < cols; j++) {
            V cj = v_gathern(xb + j, idx, nb);
            v_store(tmp[j], cj);
            m = v_max(m, cj);
        }
        V rest = v_zero(), k = v_zero(), arg = v_zero();
        M found = v_lt(m, m); /* all false */
        const V one = v_set1(1.0f);
        for (int64_t j = 0; j < cols; j++) {
            V cj = v_load(tmp[j]);
            V e = v_exp(v_sub(cj, m));
            v_store(tmp[j], e);
            M eq = v_eq(cj, m);
            rest = v_add(rest, v_sel(eq, e, v_zero()));
            k = v_add(k, v_sel(eq, v_zero(), one));
            arg = v_sel(m_andnot(found, eq), arg, v_set1((float)j)); /* first maximum */
            found = m_or(found, eq);
        }
        V lsum = v_add(v_sub(k, one), rest);
        V xlv = v_load(xl);
        V loss = v_add(v_sub(m, xlv), v_log1p(lsum));
        V wv = J->sw ? v_loadn(J->sw + rb, nb) : one;
        V cw = v_mul(v_set1(J->grad_scale), wv);
        V s = v_div(cw, v_add(one, lsum)); /* gradient scale: cw / sum_j e_j */
        /* label entry: p - 1 = -lsum / (1 + lsum) when the label holds the max
         * (no cancellation), else p - 1 computed plainly */
        v_store(lane_loss, loss);
        v_store(lane_s, s);
        v_store(lane_cw, cw);
        v_store(lane_fix, v_sub(v_zero(), v_mul(lsum, s)));
        v_store(lane_ismax, v_sel(v_eq(xlv, m), v_zero(), one));
        v_store(lane_arg, arg);
        for (int64_t l = 0; l < nb; l++) {
            const int64_t r = rb + l, lab = J->labels[r];
            const float w = J->sw ? J->sw[r] : 1.0f;
            acc += (double)w * (double)lane_loss[l];
            *ncorrect += (int64_t)lane_arg[l] == lab;
            if (J->dlogits) {
                float *g = J->dlogits + r * cols;
                const float sl = lane_s[l];
                for (int64_t j = 0; j < cols; j++) g[j] = tmp[j][l] * sl;
                if (lane_ismax[l] != 0.0f) g[lab] = lane_fix[l];
                else g[lab] -= lane_cw[l];
            }
        }
    }
    return acc;
}

static void sparse_chunks(loss_job *J, int64_t c0, int64_t c1) {
    const int64_t cols = J->cols;
    for (int64_t c = c0; c < c1; c++) {
        int64_t r0 = c * J->chunk, r1 = r0 + J->chunk < J->rows ? r0 + J->chunk : J->rows;
        double acc = 0.0;
        int64_t ncorrect = 0;
        if (cols <= SMALL_COLS && VL > 1) {
            J->partial[c] = sparse_rows_small(J, r0, r1, &ncorrect);
            J->partial_correct[c] = ncorrect;
            continue;
        }
        for (int64_t r = r0; r < r1; r++) {
            const float *x = J->logits + r * cols;
            float *g = J->dlogits ? J->dlogits + r * cols : NULL;
            const int64_t lab = J->labels[r];
            const float xl = x[lab];
            float mx = row_max(x, cols);
            if (J->correct) ncorrect += row_argmax(x, cols, mx) == lab;
            int64_t k;
            double rest = row_exp(g, x, cols, mx, &k);
            double lsum = (double)(k - 1) + rest;
            double loss = ((double)mx - (double)xl) + log1p(lsum);
            float w = J->sw ? J->sw[r] : 1.0f;
            acc += (double)w * loss;
            if (g) {
                float cw = J->grad_scale * w;
                row_scale(g, cols, (float)((double)cw / (1.0 + lsum)));
                /* p_label - 1 without cancellation when the label holds the max:
                 * e_label = 1, so p - 1 = -lsum / (1 + lsum) */
                if (xl == mx) g[lab] = (float)(-(double)cw * lsum / (1.0 + lsum));
                else g[lab] -= cw;
            }
        }
        J->partial[c] = acc;
        J->partial_correct[c] = ncorrect;
    }
}

static int64_t n_chunks(int64_t rows, int64_t *chunk) {
    int64_t cs = (rows + FG_MAX_CHUNKS - 1) / FG_MAX_CHUNKS;
    if (cs < LOSS_MIN_CHUNK) cs = LOSS_MIN_CHUNK;
    *chunk = cs;
    return (rows + cs - 1) / cs;
}

#define RUN_CHUNKS(J, FN, grain, nthreads)                                      \
    do {                                                                        \
        int64_t nch_ = n_chunks((J)->rows, &(J)->chunk);                        \
        int nt = fg_threads_for((J)->rows * (J)->cols, grain, nthreads);        \
        if (nt > nch_) nt = (int)nch_;                                          \
        FG_PARALLEL_RANGE(nch_, 1, nt, FN);                                     \
        *(J)->loss_sum = fold((J)->partial, nch_);                              \
        if ((J)->correct) {                                                     \
            int64_t s_ = 0;                                                     \
            for (int64_t c_ = 0; c_ < nch_; c_++) s_ += (J)->partial_correct[c_]; \
            *(J)->correct = s_;                                                 \
        }                                                                       \
    } while (0)

/* logits, dlogits: (rows, cols); labels, sample_weight: (rows,) */
int FG_ISA_FN(fg_sparse_softmax_xent)(double *loss_sum, float *dlogits, int64_t *correct, const float *logits,
                                      const int64_t *labels, const float *sample_weight, int64_t rows, int64_t cols,
                                      float grad_scale, int nthreads) {
    if (rows < 0 || cols < 0 || loss_sum == NULL) return FG_ERR_ARG;
    *loss_sum = 0.0;
    if (correct) *correct = 0;
    if (rows == 0) return FG_OK;
    if (cols == 0) return FG_ERR_LABEL;
    for (int64_t r = 0; r < rows; r++)
        if (labels[r] < 0 || labels[r] >= cols) return FG_ERR_LABEL;
    loss_job J;
    J.loss_sum = loss_sum; J.dlogits = dlogits; J.correct = correct; J.logits = logits; J.target = NULL;
    J.sw = sample_weight; J.labels = labels; J.rows = rows; J.cols = cols; J.grad_scale = grad_scale;
#define BODY_(c0, c1) sparse_chunks(&J, c0, c1)
    RUN_CHUNKS(&J, BODY_, GRAIN_LOSS, nthreads);
#undef BODY_
    return FG_OK;
}

/* dense targets, few classes: the row-per-lane layout of sparse_rows_small */
static double dense_rows_small(loss_job *J, int64_t r0, int64_t r1) {
    const int64_t cols = J->cols;
    float tx[SMALL_COLS][VL], tt[SMALL_COLS][VL];
    float lane_loss[VL], lane_a[VL];
    const VI idx = vi_iota_mul((int)cols);
    double acc = 0.0;
    const V one = v_set1(1.0f);
    for (int64_t rb = r0; rb < r1; rb += VL) {
        const int64_t nb = r1 - rb < VL ? r1 - rb : VL;
        const float *xb = J->logits + rb * cols, *tb = J->target + rb * cols;
        V m = v_set1(-INFINITY);
        for (int64_t j = 0; j < cols; j++) {
            V cj = v_gathern(xb + j, idx, nb);
            v_store(tx[j], cj);
            v_store(tt[j], v_gathern(tb + j, idx, nb));
            m = v_max(m, cj);
        }
        V rest = v_zero(), k = v_zero(), td = v_zero(), ts = v_zero();
        for (int64_t j = 0; j < cols; j++) {
            V xj = v_load(tx[j]), tj = v_load(tt[j]);
            td = v_fma(tj, v_sub(m, xj), td); /* sum_j t_j (m - x_j) */
            ts = v_add(ts, tj);
            V e = v_exp(v_sub(xj, m));
            v_store(tx[j], e);
            M eq = v_eq(xj, m);
            rest = v_add(rest, v_sel(eq, e, v_zero()));
            k = v_add(k, v_sel(eq, v_zero(), one));
        }
        V lsum = v_add(v_sub(k, one), rest);
        v_store(lane_loss, v_fma(ts, v_log1p(lsum), td));
        v_store(lane_a, v_div(ts, v_add(one, lsum))); /* sum(t) / sum_j e_j */
        for (int64_t l = 0; l < nb; l++) {
            const int64_t r = rb + l;
            const float w = J->sw ? J->sw[r] : 1.0f;
            acc += (double)w * (double)lane_loss[l];
            if (J->dlogits) { /* g = cw * (softmax * sum(t) - t) */
                float *g = J->dlogits + r * cols;
                const float cw = J->grad_scale * w, a = cw * lane_a[l];
                for (int64_t j = 0; j < cols; j++) g[j] = tx[j][l] * a - cw * tt[j][l];
            }
        }
    }
    return acc;
}

static void dense_chunks(loss_job *J, int64_t c0, int64_t c1) {
    const int64_t cols = J->cols;
    for (int64_t c = c0; c < c1; c++) {
        int64_t r0 = c * J->chunk, r1 = r0 + J->chunk < J->rows ? r0 + J->chunk : J->rows;
        double acc = 0.0;
        if (cols <= SMALL_COLS && VL > 1) {
            J->partial[c] = dense_rows_small(J, r0, r1);
            continue;
        }
        for (int64_t r = r0; r < r1; r++) {
            const float *x = J->logits + r * cols, *t = J->target + r * cols;
            float *g = J->dlogits ? J->dlogits + r * cols : NULL;
            float mx = row_max(x, cols);
            /* sum_j t_j (m - x_j) and sum_j t_j, both read before g (which may alias x) is written */
            V tdv = v_zero(), tsv = v_zero(), vm = v_set1(mx);
            double td = 0.0, ts = 0.0;
            int64_t j = 0;
            for (; j + VL <= cols; j += VL) {
                V tv = v_load(t + j);
                tdv = v_fma(tv, v_sub(vm, v_load(x + j)), tdv);
                tsv = v_add(tsv, tv);
                if ((j + VL) % FG_SUM_BLOCK == 0) {
                    td += (double)v_hsum(tdv);
                    ts += (double)v_hsum(tsv);
                    tdv = tsv = v_zero();
                }
            }
            if (j < cols) {
                V tv = v_loadn(t + j, cols - j);
                V d = v_sel(v_firstn(cols - j), v_zero(), v_sub(vm, v_loadn(x + j, cols - j)));
                tdv = v_fma(tv, d, tdv);
                tsv = v_add(tsv, tv);
            }
            td += (double)v_hsum(tdv);
            ts += (double)v_hsum(tsv);
            int64_t k;
            double rest = row_exp(g, x, cols, mx, &k);
            double lsum = (double)(k - 1) + rest;
            double loss = td + ts * log1p(lsum);
            float w = J->sw ? J->sw[r] : 1.0f;
            acc += (double)w * loss;
            if (g) { /* g = cw * (softmax * sum(t) - t) */
                float cw = J->grad_scale * w;
                V a = v_set1((float)((double)cw * ts / (1.0 + lsum))), vc = v_set1(cw);
                for (j = 0; j + VL <= cols; j += VL)
                    v_store(g + j, v_fnma(vc, v_load(t + j), v_mul(v_load(g + j), a)));
                if (j < cols) {
                    int64_t q = cols - j;
                    v_storen(g + j, v_fnma(vc, v_loadn(t + j, q), v_mul(v_loadn(g + j, q), a)), q);
                }
            }
        }
        J->partial[c] = acc;
    }
}

/* logits, target, dlogits: (rows, cols); sample_weight: (rows,) */
int FG_ISA_FN(fg_softmax_xent)(double *loss_sum, float *dlogits, const float *logits, const float *target,
                               const float *sample_weight, int64_t rows, int64_t cols, float grad_scale,
                               int nthreads) {
    if (rows < 0 || cols < 0 || loss_sum == NULL) return FG_ERR_ARG;
    *loss_sum = 0.0;
    if (rows == 0 || cols == 0) return FG_OK;
    loss_job J;
    J.loss_sum = loss_sum; J.dlogits = dlogits; J.correct = NULL; J.logits = logits; J.target = target;
    J.sw = sample_weight; J.labels = NULL; J.rows = rows; J.cols = cols; J.grad_scale = grad_scale;
#define BODY_(c0, c1) dense_chunks(&J, c0, c1)
    RUN_CHUNKS(&J, BODY_, GRAIN_LOSS, nthreads);
#undef BODY_
    return FG_OK;
}

/* log1p(e) for e in [0, 1]: log(u) * e / (u - 1) with u = 1 + e (exact correction
 * of the rounding of u), e itself where u rounds to 1 */
FG_VINLINE V v_log1p01(V e) {
    V u = v_add(v_set1(1.0f), e);
    V d = v_sub(u, v_set1(1.0f));
    V r = v_mul(v_log(u), v_div(e, d));
    return v_sel(v_eq(d, v_zero()), r, e);
}

/* one output per row (binary classification head): rows across the lanes;
 * the same per-element formulas and the same row-order sum as the row path */
static double bce_rows_col1(loss_job *J, int64_t r0, int64_t r1) {
    float lane_l[VL];
    double acc = 0.0;
    const V one = v_set1(1.0f), gs = v_set1(J->grad_scale);
    for (int64_t r = r0; r < r1; r += VL) {
        const int64_t q = r1 - r < VL ? r1 - r : VL;
        V xv = q == VL ? v_load(J->logits + r) : v_loadn(J->logits + r, q);
        V zv = q == VL ? v_load(J->target + r) : v_loadn(J->target + r, q);
        V wv = J->sw ? (q == VL ? v_load(J->sw + r) : v_loadn(J->sw + r, q)) : one;
        V e = v_exp(v_sub(v_zero(), v_abs(xv)));
        v_store(lane_l, v_add(v_fnma(xv, zv, v_max(xv, v_zero())), v_log1p01(e)));
        for (int64_t k = 0; k < q; k++) acc += (double)(J->sw ? J->sw[r + k] : 1.0f) * (double)lane_l[k];
        if (J->dlogits) {
            V d = v_add(one, e);
            M pos = v_ge(xv, v_zero());
            V s = v_div(v_sel(pos, e, one), d);
            V c = v_div(v_sel(pos, one, e), d);
            V gv = v_mul(v_mul(gs, wv), v_fnma(c, zv, v_fnma(s, zv, s)));
            if (q == VL) v_store(J->dlogits + r, gv);
            else v_storen(J->dlogits + r, gv, q);
        }
    }
    return acc;
}

/* few outputs per row (2 <= cols < 64, multi-label heads): groups of rows are
 * processed as one flat vector stream (no per-row vector set-up, reductions or
 * masked lanes); per-element losses go to a stack buffer and are summed per
 * row in order, in double; the gradient pass stores sigmoid(x) - z and each
 * row is then scaled by grad_scale * w_i, as in the row path */
#define BCE_FLAT_MAX_COLS 64
#define BCE_FLAT_BUF 512
static double bce_rows_flat(loss_job *J, int64_t r0, int64_t r1) {
    const int64_t cols = J->cols;
    const int64_t group = BCE_FLAT_BUF / cols; /* rows per group, >= 8 */
    float lbuf[BCE_FLAT_BUF + VL];
    double acc = 0.0;
    const V one = v_set1(1.0f);
    for (int64_t ra = r0; ra < r1; ra += group) {
        const int64_t rb = ra + group < r1 ? ra + group : r1;
        const int64_t e0 = ra * cols, ne = (rb - ra) * cols;
        const float *x = J->logits + e0, *z = J->target + e0;
        float *g = J->dlogits ? J->dlogits + e0 : NULL;
        for (int64_t i = 0; i < ne; i += VL) {
            const int64_t q = ne - i < VL ? ne - i : VL;
            V xv = q == VL ? v_load(x + i) : v_loadn(x + i, q);
            V zv = q == VL ? v_load(z + i) : v_loadn(z + i, q);
            V e = v_exp(v_sub(v_zero(), v_abs(xv)));
            v_store(lbuf + i, v_add(v_fnma(xv, zv, v_max(xv, v_zero())), v_log1p01(e)));
            if (g) {
                V d = v_add(one, e);
                M pos = v_ge(xv, v_zero());
                V s = v_div(v_sel(pos, e, one), d);
                V c = v_div(v_sel(pos, one, e), d);
                V gv = v_fnma(c, zv, v_fnma(s, zv, s));
                if (q == VL) v_store(g + i, gv);
                else v_storen(g + i, gv, q);
            }
        }
        for (int64_t r = ra; r < rb; r++) {
            const float w = J->sw ? J->sw[r] : 1.0f;
            const float *lr = lbuf + (r - ra) * cols;
            double s = 0.0;
            for (int64_t j = 0; j < cols; j++) s += (double)lr[j];
            acc += (double)w * s;
            if (g) {
                float *gr = g + (r - ra) * cols;
                const float cw = J->grad_scale * w;
                for (int64_t j = 0; j < cols; j++) gr[j] = cw * gr[j];
            }
        }
    }
    return acc;
}

static void bce_chunks(loss_job *J, int64_t c0, int64_t c1) {
    const int64_t cols = J->cols;
    for (int64_t c = c0; c < c1; c++) {
        int64_t r0 = c * J->chunk, r1 = r0 + J->chunk < J->rows ? r0 + J->chunk : J->rows;
        double acc = 0.0;
        if (cols == 1) {
            J->partial[c] = bce_rows_col1(J, r0, r1);
            continue;
        }
        if (cols < BCE_FLAT_MAX_COLS && VL > 1) {
            J->partial[c] = bce_rows_flat(J, r0, r1);
            continue;
        }
        for (int64_t r = r0; r < r1; r++) {
            const float *x = J->logits + r * cols, *z = J->target + r * cols;
            float *g = J->dlogits ? J->dlogits + r * cols : NULL;
            float w = J->sw ? J->sw[r] : 1.0f;
            V vc = v_set1(J->grad_scale * w), lacc = v_zero();
            const V one = v_set1(1.0f);
            double ltot = 0.0;
            for (int64_t j = 0; j < cols; j += VL) {
                int64_t q = cols - j < VL ? cols - j : VL;
                V xv = q == VL ? v_load(x + j) : v_loadn(x + j, q);
                V zv = q == VL ? v_load(z + j) : v_loadn(z + j, q);
                V e = v_exp(v_sub(v_zero(), v_abs(xv)));
                /* max(x,0) - x z + log1p(e) */
                V l = v_add(v_fnma(xv, zv, v_max(xv, v_zero())), v_log1p01(e));
                if (q < VL) l = v_sel(v_firstn(q), v_zero(), l);
                lacc = v_add(lacc, l);
                if ((j + VL) % FG_SUM_BLOCK == 0) {
                    ltot += (double)v_hsum(lacc);
                    lacc = v_zero();
                }
                if (g) {
                    /* sigmoid(x) - z as s (1 - z) - c z with c = 1 - s computed directly:
                     * no cancellation for hard labels (z = 1: -c; z = 0: s) */
                    V d = v_add(one, e);
                    M pos = v_ge(xv, v_zero());
                    V s = v_div(v_sel(pos, e, one), d);
                    V c = v_div(v_sel(pos, one, e), d);
                    V gv = v_mul(vc, v_fnma(c, zv, v_fnma(s, zv, s)));
                    if (q == VL) v_store(g + j, gv);
                    else v_storen(g + j, gv, q);
                }
            }
            acc += (double)w * (ltot + (double)v_hsum(lacc));
        }
        J->partial[c] = acc;
    }
}

/* logits, target, dlogits: (rows, cols); sample_weight: (rows,) */
int FG_ISA_FN(fg_sigmoid_bce)(double *loss_sum, float *dlogits, const float *logits, const float *target,
                              const float *sample_weight, int64_t rows, int64_t cols, float grad_scale,
                              int nthreads) {
    if (rows < 0 || cols < 0 || loss_sum == NULL) return FG_ERR_ARG;
    *loss_sum = 0.0;
    if (rows == 0 || cols == 0) return FG_OK;
    loss_job J;
    J.loss_sum = loss_sum; J.dlogits = dlogits; J.correct = NULL; J.logits = logits; J.target = target;
    J.sw = sample_weight; J.labels = NULL; J.rows = rows; J.cols = cols; J.grad_scale = grad_scale;
#define BODY_(c0, c1) bce_chunks(&J, c0, c1)
    RUN_CHUNKS(&J, BODY_, GRAIN_LOSS, nthreads);
#undef BODY_
    return FG_OK;
}

static void bce_prob_chunks(loss_job *J, int64_t c0, int64_t c1) {
    const int64_t cols = J->cols;
    const V lo = v_set1(J->eps), hi = v_set1((float)(1.0 - (double)J->eps)), one = v_set1(1.0f);
    for (int64_t c = c0; c < c1; c++) {
        int64_t r0 = c * J->chunk, r1 = r0 + J->chunk < J->rows ? r0 + J->chunk : J->rows;
        double acc = 0.0;
        for (int64_t r = r0; r < r1; r++) {
            const float *p = J->logits + r * cols, *t = J->target + r * cols;
            float *g = J->dlogits ? J->dlogits + r * cols : NULL;
            float w = J->sw ? J->sw[r] : 1.0f;
            V vc = v_set1(J->grad_scale * w), lacc = v_zero();
            double ltot = 0.0;
            for (int64_t j = 0; j < cols; j += VL) {
                int64_t q = cols - j < VL ? cols - j : VL;
                V pv = q == VL ? v_load(p + j) : v_loadn(p + j, q);
                V tv = q == VL ? v_load(t + j) : v_loadn(t + j, q);
                V qv = v_min(v_max(pv, lo), hi);
                V omt = v_sub(one, tv);
                /* -(t log q + (1 - t) log1p(-q)) */
                V l = v_sub(v_zero(), v_fma(tv, v_log(qv), v_mul(omt, v_log1p(v_sub(v_zero(), qv)))));
                if (q < VL) l = v_sel(v_firstn(q), v_zero(), l);
                lacc = v_add(lacc, l);
                if ((j + VL) % FG_SUM_BLOCK == 0) {
                    ltot += (double)v_hsum(lacc);
                    lacc = v_zero();
                }
                if (g) {
                    V gg = v_sub(v_div(omt, v_sub(one, qv)), v_div(tv, qv));
                    M inside = v_le(lo, pv);
                    gg = v_sel(inside, v_zero(), gg);
                    gg = v_sel(v_le(pv, hi), v_zero(), gg);
                    gg = v_mul(vc, gg);
                    if (q == VL) v_store(g + j, gg);
                    else v_storen(g + j, gg, q);
                }
            }
            acc += (double)w * (ltot + (double)v_hsum(lacc));
        }
        J->partial[c] = acc;
    }
}

/* prob, target, dprob: (rows, cols); sample_weight: (rows,) */
int FG_ISA_FN(fg_bce_prob)(double *loss_sum, float *dprob, const float *prob, const float *target,
                           const float *sample_weight, int64_t rows, int64_t cols, float eps, float grad_scale,
                           int nthreads) {
    if (rows < 0 || cols < 0 || loss_sum == NULL || !(eps >= 0.0f && eps < 0.5f)) return FG_ERR_ARG;
    *loss_sum = 0.0;
    if (rows == 0 || cols == 0) return FG_OK;
    loss_job J;
    J.loss_sum = loss_sum; J.dlogits = dprob; J.correct = NULL; J.logits = prob; J.target = target;
    J.sw = sample_weight; J.labels = NULL; J.rows = rows; J.cols = cols; J.grad_scale = grad_scale; J.eps = eps;
#define BODY_(c0, c1) bce_prob_chunks(&J, c0, c1)
    RUN_CHUNKS(&J, BODY_, GRAIN_LOSS, nthreads);
#undef BODY_
    return FG_OK;
}

static void cce_prob_chunks(loss_job *J, int64_t c0, int64_t c1) {
    const int64_t cols = J->cols;
    const V lo = v_set1(J->eps), hi = v_set1((float)(1.0 - (double)J->eps));
    for (int64_t c = c0; c < c1; c++) {
        int64_t r0 = c * J->chunk, r1 = r0 + J->chunk < J->rows ? r0 + J->chunk : J->rows;
        double acc = 0.0;
        for (int64_t r = r0; r < r1; r++) {
            const float *p = J->logits + r * cols, *t = J->target + r * cols;
            float *g = J->dlogits ? J->dlogits + r * cols : NULL;
            float w = J->sw ? J->sw[r] : 1.0f;
            /* pass 1: s = sum_j p */
            V sv = v_zero();
            double stot = 0.0;
            int64_t j = 0;
            for (; j + VL <= cols; j += VL) {
                sv = v_add(sv, v_load(p + j));
                if ((j + VL) % FG_SUM_BLOCK == 0) { stot += (double)v_hsum(sv); sv = v_zero(); }
            }
            if (j < cols) sv = v_add(sv, v_loadn(p + j, cols - j));
            const float s = (float)(stot + (double)v_hsum(sv));
            const V vs = v_set1(s);
            /* pass 2: loss and sum_j gq q (gq = -(t / qc) inside the clip) */
            V lv = v_zero(), gqv = v_zero();
            double ltot = 0.0, gqtot = 0.0;
            for (j = 0; j < cols; j += VL) {
                int64_t q = cols - j < VL ? cols - j : VL;
                V pv = q == VL ? v_load(p + j) : v_loadn(p + j, q);
                V tv = q == VL ? v_load(t + j) : v_loadn(t + j, q);
                V qv = v_div(pv, vs);
                V qc = v_sel(v_le(qv, qv), qv, v_min(v_max(qv, lo), hi)); /* NaN stays NaN */
                V l = v_mul(tv, v_log(qc));
                if (q < VL) l = v_sel(v_firstn(q), v_zero(), l);
                lv = v_sub(lv, l);
                V gq = v_sub(v_zero(), v_div(tv, qc));
                gq = v_sel(v_le(lo, qv), v_zero(), gq);
                gq = v_sel(v_le(qv, hi), v_zero(), gq);
                gqv = v_fma(gq, qv, gqv); /* tail lanes: t = 0 -> gq = -0 */
                if ((j + VL) % FG_SUM_BLOCK == 0) {
                    ltot += (double)v_hsum(lv);
                    gqtot += (double)v_hsum(gqv);
                    lv = gqv = v_zero();
                }
            }
            acc += (double)w * (ltot + (double)v_hsum(lv));
            if (g) { /* pass 3: dprob = c (gq - S) / s */
                const V S = v_set1((float)(gqtot + (double)v_hsum(gqv)));
                const V cs = v_set1(J->grad_scale * w);
                for (j = 0; j < cols; j += VL) {
                    int64_t q = cols - j < VL ? cols - j : VL;
                    V pv = q == VL ? v_load(p + j) : v_loadn(p + j, q);
                    V tv = q == VL ? v_load(t + j) : v_loadn(t + j, q);
                    V qv = v_div(pv, vs);
                    V qc = v_sel(v_le(qv, qv), qv, v_min(v_max(qv, lo), hi)); /* NaN stays NaN */
                    V gq = v_sub(v_zero(), v_div(tv, qc));
                    gq = v_sel(v_le(lo, qv), v_zero(), gq);
                    gq = v_sel(v_le(qv, hi), v_zero(), gq);
                    V gv = v_mul(cs, v_div(v_sub(gq, S), vs));
                    if (q == VL) v_store(g + j, gv);
                    else v_storen(g + j, gv, q);
                }
            }
        }
        J->partial[c] = acc;
    }
}

/* prob, target, dprob: (rows, cols); sample_weight: (rows,) */
int FG_ISA_FN(fg_cce_prob)(double *loss_sum, float *dprob, const float *prob, const float *target,
                           const float *sample_weight, int64_t rows, int64_t cols, float eps, float grad_scale,
                           int nthreads) {
    if (rows < 0 || cols < 0 || loss_sum == NULL || !(eps >= 0.0f && eps < 0.5f)) return FG_ERR_ARG;
    *loss_sum = 0.0;
    if (rows == 0 || cols == 0) return FG_OK;
    loss_job J;
    J.loss_sum = loss_sum; J.dlogits = dprob; J.correct = NULL; J.logits = prob; J.target = target;
    J.sw = sample_weight; J.labels = NULL; J.rows = rows; J.cols = cols; J.grad_scale = grad_scale; J.eps = eps;
#define BODY_(c0, c1) cce_prob_chunks(&J, c0, c1)
    RUN_CHUNKS(&J, BODY_, GRAIN_LOSS, nthreads);
#undef BODY_
    return FG_OK;
}

/* sum_j (p_j - t_j)^2 over one row in double, 16 lanes (j % 16) combined in a
 * fixed tree: plain C, identical operations on every ISA; writes the gradient */
static double mse_row(float *g, const float *p, const float *FG_RESTRICT t, int64_t cols, /* g may alias p */
                      float c2) {
    double acc[16] = {0};
    int64_t j = 0;
    for (; j + 16 <= cols; j += 16)
        for (int l = 0; l < 16; l++) {
            float d = p[j + l] - t[j + l];
            acc[l] += (double)d * (double)d;
        }
    for (int l = 0; j + l < cols; l++) {
        float d = p[j + l] - t[j + l];
        acc[l] += (double)d * (double)d;
    }
    if (g)
        for (int64_t i = 0; i < cols; i++) g[i] = c2 * (p[i] - t[i]);
    for (int l = 0; l < 8; l++) acc[l] += acc[l + 8];
    for (int l = 0; l < 4; l++) acc[l] += acc[l + 4];
    for (int l = 0; l < 2; l++) acc[l] += acc[l + 2];
    return acc[0] + acc[1];
}

static void mse_chunks(loss_job *J, int64_t c0, int64_t c1) {
    const int64_t cols = J->cols;
    for (int64_t c = c0; c < c1; c++) {
        int64_t r0 = c * J->chunk, r1 = r0 + J->chunk < J->rows ? r0 + J->chunk : J->rows;
        double acc = 0.0;
        if (cols < 16) { /* few outputs per row: a sequential double sum per row, no lane set-up */
            for (int64_t r = r0; r < r1; r++) {
                const float w = J->sw ? J->sw[r] : 1.0f;
                const float c2 = J->grad_scale * w * 2.0f;
                const float *p = J->logits + r * cols, *t = J->target + r * cols;
                float *g = J->dlogits ? J->dlogits + r * cols : NULL;
                double s = 0.0;
                for (int64_t j = 0; j < cols; j++) {
                    float d = p[j] - t[j];
                    if (g) g[j] = c2 * d;
                    s += (double)d * (double)d;
                }
                acc += (double)w * s;
            }
            J->partial[c] = acc;
            continue;
        }
        for (int64_t r = r0; r < r1; r++) {
            float w = J->sw ? J->sw[r] : 1.0f;
            float c2 = J->grad_scale * w * 2.0f;
            double s = mse_row(J->dlogits ? J->dlogits + r * cols : NULL, J->logits + r * cols,
                               J->target + r * cols, cols, c2);
            acc += (double)w * s;
        }
        J->partial[c] = acc;
    }
}

/* pred, target, dpred: (rows, cols); sample_weight: (rows,) */
int FG_ISA_FN(fg_mse)(double *loss_sum, float *dpred, const float *pred, const float *target,
                      const float *sample_weight, int64_t rows, int64_t cols, float grad_scale, int nthreads) {
    if (rows < 0 || cols < 0 || loss_sum == NULL) return FG_ERR_ARG;
    *loss_sum = 0.0;
    if (rows == 0 || cols == 0) return FG_OK;
    loss_job J;
    J.loss_sum = loss_sum; J.dlogits = dpred; J.correct = NULL; J.logits = pred; J.target = target;
    J.sw = sample_weight; J.labels = NULL; J.rows = rows; J.cols = cols; J.grad_scale = grad_scale;
#define BODY_(c0, c1) mse_chunks(&J, c0, c1)
    RUN_CHUNKS(&J, BODY_, GRAIN_MSE, nthreads);
#undef BODY_
    return FG_OK;
}
