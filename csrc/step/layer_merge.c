/* layer_merge.c — element-wise merges of n same-shape inputs (Keras Add,
 * Subtract, Multiply, Average, Maximum, Minimum; broadcasting is left to the
 * Python path).
 *
 * Forward, per element, folded left to right as NumpyOps.merge_forward does:
 *   add   y = ((x0 + x1) + x2) ...      subtract  y = x0 - x1
 *   mul   y = ((x0 * x1) * x2) ...      average   y = (x0 + x1 + ...) / n
 *   max   y = max(max(x0, x1), x2) ...  (NaN propagates; min likewise)
 * Backward (NumpyOps.merge_backward):
 *   add dx_i = dy;  subtract dx_0 = dy, dx_1 = -dy;  average dx_i = dy / n;
 *   mul dx_i = ((dy * x_j0) * x_j1) ... over j != i ascending;
 *   max / min dx_i = dy where x_i == y and no earlier x_j == y, else 0.
 * Every element is computed independently with float32 operations in that
 * order (no contraction), so the bits equal NumPy's for any thread count.
 * dx[0] may be dy: it is written last. */
#include "step_internal.h"

#include <math.h>
#include <string.h>
#if FG_HAVE_OPENMP
#include <omp.h>
#endif

/* elements per thread before a second one helps (memory bound) */
#define MERGE_GRAIN ((int64_t)1 << 15)

/* BODY over [lo, hi) of cnt elements, split over nt threads (each element has one owner) */
#if FG_HAVE_OPENMP
#define MERGE_RANGES(cnt, nt, BODY)                                           \
    do {                                                                      \
        if ((nt) <= 1) {                                                      \
            int64_t lo = 0, hi = (cnt);                                       \
            BODY;                                                             \
        } else {                                                              \
            _Pragma("omp parallel num_threads(nt)") {                        \
                int t_ = omp_get_thread_num(), T_ = omp_get_num_threads();    \
                int64_t lo = (cnt) * t_ / T_, hi = (cnt) * (t_ + 1) / T_;     \
                BODY;                                                         \
            }                                                                 \
        }                                                                     \
    } while (0)
#else
#define MERGE_RANGES(cnt, nt, BODY)                                           \
    do {                                                                      \
        int64_t lo = 0, hi = (cnt);                                           \
        (void)(nt);                                                           \
        BODY;                                                                 \
    } while (0)
#endif

/* as np.maximum / np.minimum: the first operand when it wins, ties, or is NaN */
static inline float max_np(float a, float b) { return (a >= b || a != a) ? a : b; }
static inline float min_np(float a, float b) { return (a <= b || a != a) ? a : b; }

/* y = a (op) b over [lo, hi); a may be y. One pass of the left fold. */
static void fold_range(float *y, const float *a, const float *b, int op, int64_t lo, int64_t hi) {
    switch (op) {
    case FG_MERGE_ADD:
    case FG_MERGE_AVERAGE:
        for (int64_t e = lo; e < hi; e++) y[e] = a[e] + b[e];
        break;
    case FG_MERGE_SUBTRACT:
        for (int64_t e = lo; e < hi; e++) y[e] = a[e] - b[e];
        break;
    case FG_MERGE_MULTIPLY:
        for (int64_t e = lo; e < hi; e++) y[e] = a[e] * b[e];
        break;
    case FG_MERGE_MAXIMUM:
        for (int64_t e = lo; e < hi; e++) y[e] = max_np(a[e], b[e]);
        break;
    default:
        for (int64_t e = lo; e < hi; e++) y[e] = min_np(a[e], b[e]);
        break;
    }
}

static void merge_fwd_range(float *y, const float *const *x, int n, int op, int64_t lo, int64_t hi) {
    if (n == 1) {
        memcpy(y + lo, x[0] + lo, (size_t)(hi - lo) * sizeof(float));
        return;
    }
    fold_range(y, x[0], x[1], op, lo, hi);
    for (int j = 2; j < n; j++) fold_range(y, y, x[j], op, lo, hi);
    if (op == FG_MERGE_AVERAGE) {
        const float fn = (float)n;
        for (int64_t e = lo; e < hi; e++) y[e] = y[e] / fn;
    }
}

/* gradient of input i over [lo, hi) (not add, nor subtract's first input: those copy dy) */
static void merge_bwd_range(float *dx, const float *dy, const float *const *x, const float *y, int n, int i, int op,
                            int64_t lo, int64_t hi) {
    switch (op) {
    case FG_MERGE_SUBTRACT:
        for (int64_t e = lo; e < hi; e++) dx[e] = -dy[e];
        break;
    case FG_MERGE_AVERAGE: {
        const float fn = (float)n;
        for (int64_t e = lo; e < hi; e++) dx[e] = dy[e] / fn;
        break;
    }
    case FG_MERGE_MULTIPLY: {
        const float *src = dy;
        for (int j = 0; j < n; j++) {
            if (j == i) continue;
            fold_range(dx, src, x[j], FG_MERGE_MULTIPLY, lo, hi);
            src = dx;
        }
        if (src == dy && dx != dy) memcpy(dx + lo, dy + lo, (size_t)(hi - lo) * sizeof(float));
        break;
    }
    default: /* maximum / minimum: dy goes to the first input holding the extreme */
        for (int64_t e = lo; e < hi; e++) {
            const float v = y[e];
            int hit = x[i][e] == v;
            for (int j = 0; j < i && hit; j++) hit = x[j][e] != v;
            dx[e] = hit ? dy[e] : 0.0f;
        }
        break;
    }
}

static int merge_check(const fg_node_desc *d, const fg_shape *const *in, int n_in, int64_t n_params) {
    (void)n_params;
    if (n_in < 1 || d->op < FG_MERGE_ADD || d->op >= FG_MERGE_COUNT) return FG_ERR_ARG;
    if (d->op == FG_MERGE_SUBTRACT && n_in != 2) return FG_ERR_ARG;
    for (int j = 0; j < n_in; j++)
        if (!fg_shape_equal(in[j], &d->out)) return FG_ERR_ARG;
    return FG_OK;
}

static int merge_dx_inplace(const fg_node_desc *d) {
    (void)d;
    return 1;
}

static int merge_forward(const fg_node_io *io, float *y, const float *const *x, int training, uint64_t *stream) {
    (void)training, (void)stream;
    const int64_t cnt = io->rows * io->out_size;
    const int n = io->n_in, op = io->d->op;
    const int nt = fg_threads_for(cnt, MERGE_GRAIN, io->nt);
    MERGE_RANGES(cnt, nt, merge_fwd_range(y, x, n, op, lo, hi));
    return FG_OK;
}

static int merge_backward(const fg_node_io *io, float *const *dx, float *dy, const float *const *x, const float *y,
                          float *const *gp) {
    (void)gp;
    const int64_t cnt = io->rows * io->out_size;
    const int n = io->n_in, op = io->d->op;
    const int nt = fg_threads_for(cnt, MERGE_GRAIN, io->nt);
    for (int i = n - 1; i >= 0; i--) { /* dx[0] may be dy: written last */
        if (!dx[i]) continue;
        if (op == FG_MERGE_ADD || (op == FG_MERGE_SUBTRACT && i == 0)) {
            if (dx[i] != dy) memcpy(dx[i], dy, (size_t)cnt * sizeof(float));
            continue;
        }
        float *d = dx[i];
        MERGE_RANGES(cnt, nt, merge_bwd_range(d, dy, x, y, n, i, op, lo, hi));
    }
    return FG_OK;
}

const fg_layer_ops fg_layer_merge_ops = {
    .name = "merge",
    .check = merge_check,
    .dx_inplace = merge_dx_inplace,
    .forward = merge_forward,
    .backward = merge_backward,
};
