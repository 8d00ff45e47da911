/* activation.c — element-wise activations (forward and backward), exp, log
 * and row-wise softmax / log_softmax. Compiled once per instruction set
 * (see fg_vmath.h); the exported names carry the ISA suffix and
 * dispatch.c picks one at run time.
 *
 * Element-wise kernels may run in place (y == x, dx == dy): every element is
 * read before the same element is written, and threads own disjoint ranges.
 * Results are position-independent (the tail goes through the same vector
 * code with masked loads), so they are bitwise identical for any thread
 * count.
 */
#include "fg_activation.h"
#include "fg_act_vec.h" /* act_fwd_* (shared with the GEMM epilogue); includes fg_vmath.h */

/* Grain sizes: a kernel uses a second thread only from 2 * grain elements.
 * Measured on the 2-core dev box (best of 400, loaded machine), 1 vs 2 threads:
 *   relu   64K: 8.5 us serial (team wake + join ~3 us: marginal)  128K: 18 -> 11 us
 *   tanh   16K: 9.2 -> 6.2 us   32K: 18 -> 11 us
 *   (the division-free tanh, AVX-512: 16K 6.7 -> 5.2 us, 32K 12.6 -> 7.6 us: still pays)
 * so memory-bound passes go parallel from 128K elements, exp-bound ones from 16K. */
#define GRAIN_MEM FG_ACT_GRAIN_MEM
#define GRAIN_TRANS FG_ACT_GRAIN_TRANS

/* y[lo:hi] = FN(x[lo:hi]); `stream`: non-temporal stores after an aligned head.
 * FN is a macro of one vector that may read the call's parameters `vp_`. */
#define DEFINE_UNARY_RANGE(NAME, FN)                                                    \
    static void NAME(float *y, const float *x, int64_t lo, int64_t hi, int stream,      \
                     const fg_act_param *p) {                                           \
        const fg_act_vp vp_ = fg_act_vparams(p);                                        \
        (void)vp_;                                                                      \
        int64_t i = lo;                                                                 \
        if (stream) {                                                                   \
            int64_t h = v_align_head(y + i);                                            \
            if (h > hi - i) h = hi - i;                                                 \
            if (h > 0) v_storen(y + i, FN(v_loadn(x + i, h)), h);                       \
            for (i += h; i + VL <= hi; i += VL) v_stream(y + i, FN(v_load(x + i)));     \
            v_sfence();                                                                 \
        } else {                                                                        \
            for (; i + VL <= hi; i += VL) v_store(y + i, FN(v_load(x + i)));            \
        }                                                                               \
        if (i < hi) v_storen(y + i, FN(v_loadn(x + i, hi - i)), hi - i);                \
    }

DEFINE_UNARY_RANGE(range_relu, FG_F_RELU)
DEFINE_UNARY_RANGE(range_sigmoid, FG_F_SIGMOID)

/* tanh: as DEFINE_UNARY_RANGE, plus, on the streaming path (arrays far larger
 * than the caches), a software prefetch of x 4 KiB ahead, one per 64-byte line.
 * tanh is compute-heavy enough that the hardware prefetcher alone leaves the
 * loads poorly overlapped with the arithmetic: 16M floats on one thread,
 * best of 10 (loaded dev box), AVX-512 8.0-8.3 -> 7.5-7.6 ms, AVX2 13.0-14.4 ->
 * 11.3-12.3 ms. Prefetches past the end of x are harmless (no faults). */
#define TANH_PF_AHEAD 1024 /* floats */
static void range_tanh(float *y, const float *x, int64_t lo, int64_t hi, int stream, const fg_act_param *p) {
    (void)p;
    int64_t i = lo;
    if (stream) {
        int64_t h = v_align_head(y + i);
        if (h > hi - i) h = hi - i;
        if (h > 0) v_storen(y + i, act_fwd_tanh(v_loadn(x + i, h)), h);
        for (i += h; i + 16 <= hi; i += 16) { /* 16 floats = one cache line of x */
#if defined(__GNUC__)
            __builtin_prefetch(x + i + TANH_PF_AHEAD, 0, 3);
#endif
            for (int k = 0; k < 16; k += VL) v_stream(y + i + k, act_fwd_tanh(v_load(x + i + k)));
        }
        for (; i + VL <= hi; i += VL) v_stream(y + i, act_fwd_tanh(v_load(x + i)));
        v_sfence();
    } else {
        for (; i + VL <= hi; i += VL) v_store(y + i, act_fwd_tanh(v_load(x + i)));
    }
    if (i < hi) v_storen(y + i, act_fwd_tanh(v_loadn(x + i, hi - i)), hi - i);
}
DEFINE_UNARY_RANGE(range_gelu, FG_F_GELU)
DEFINE_UNARY_RANGE(range_gelu_tanh, FG_F_GELU_TANH)
DEFINE_UNARY_RANGE(range_leaky_relu, FG_F_LEAKY_RELU)
DEFINE_UNARY_RANGE(range_elu, FG_F_ELU)
DEFINE_UNARY_RANGE(range_selu, FG_F_SELU)
DEFINE_UNARY_RANGE(range_silu, FG_F_SILU)
DEFINE_UNARY_RANGE(range_softplus, FG_F_SOFTPLUS)
DEFINE_UNARY_RANGE(range_softsign, FG_F_SOFTSIGN)
DEFINE_UNARY_RANGE(range_hard_sigmoid, FG_F_HARD_SIGMOID)
DEFINE_UNARY_RANGE(range_mish, FG_F_MISH)
DEFINE_UNARY_RANGE(range_exp, FG_F_EXPONENTIAL)
DEFINE_UNARY_RANGE(range_relu6, FG_F_RELU6)
DEFINE_UNARY_RANGE(range_hard_silu, FG_F_HARD_SILU)
DEFINE_UNARY_RANGE(range_relu_general, FG_F_RELU_GENERAL)
#define FG_F_LOG_(v) act_fwd_log(v)
DEFINE_UNARY_RANGE(range_log, FG_F_LOG_)

static void range_copy(float *y, const float *x, int64_t lo, int64_t hi, int stream, const fg_act_param *p) {
    (void)stream;
    (void)p;
    if (y != x) memcpy(y + lo, x + lo, (size_t)(hi - lo) * sizeof(float));
}

typedef void (*unary_range_fn)(float *, const float *, int64_t, int64_t, int, const fg_act_param *);

static int run_unary(unary_range_fn fn, float *y, const float *x, int64_t n, const fg_act_param *p,
                     int64_t grain, int nthreads) {
    if (n < 0) return FG_ERR_ARG;
    if (n == 0) return FG_OK;
    int nt = fg_threads_for(n, grain, nthreads);
    const int stream = n >= FG_NT_MIN && y != x;
#define BODY_(lo, hi) fn(y, x, lo, hi, stream, p)
    FG_PARALLEL_RANGE(n, 16, nt, BODY_);
#undef BODY_
    return FG_OK;
}

static unary_range_fn forward_range(int act) {
    switch (act) {
    case FG_ACT_LINEAR: return range_copy;
    case FG_ACT_RELU: return range_relu;
    case FG_ACT_SIGMOID: return range_sigmoid;
    case FG_ACT_TANH: return range_tanh;
    case FG_ACT_GELU: return range_gelu;
    case FG_ACT_GELU_TANH: return range_gelu_tanh;
    case FG_ACT_LEAKY_RELU: return range_leaky_relu;
    case FG_ACT_ELU: return range_elu;
    case FG_ACT_SELU: return range_selu;
    case FG_ACT_SILU: return range_silu;
    case FG_ACT_SOFTPLUS: return range_softplus;
    case FG_ACT_SOFTSIGN: return range_softsign;
    case FG_ACT_HARD_SIGMOID: return range_hard_sigmoid;
    case FG_ACT_MISH: return range_mish;
    case FG_ACT_EXPONENTIAL: return range_exp;
    case FG_ACT_RELU6: return range_relu6;
    case FG_ACT_HARD_SILU: return range_hard_silu;
    case FG_ACT_RELU_GENERAL: return range_relu_general;
    default: return NULL;
    }
}

/* y[n] = act(x[n]) with parameters p (NULL: the defaults) */
int FG_ISA_FN(fg_act_forward_p)(float *y, const float *x, int64_t n, int act, const fg_act_param *p,
                                int nthreads) {
    unary_range_fn fn = forward_range(act);
    if (!fn || !fg_act_param_ok(act, p)) return FG_ERR_ARG;
    const fg_act_param q = p ? *p : fg_act_param_default(act);
    return run_unary(fn, y, x, n, &q, fg_act_fwd_grain(act), nthreads);
}

/* y[n] = exp(x[n]) */
int FG_ISA_FN(fg_exp)(float *y, const float *x, int64_t n, int nthreads) {
    const fg_act_param q = fg_act_param_default(FG_ACT_EXPONENTIAL);
    return run_unary(range_exp, y, x, n, &q, GRAIN_TRANS, nthreads);
}

/* y[n] = log(x[n]) */
int FG_ISA_FN(fg_log)(float *y, const float *x, int64_t n, int nthreads) {
    const fg_act_param q = fg_act_param_default(FG_ACT_LINEAR);
    return run_unary(range_log, y, x, n, &q, GRAIN_TRANS, nthreads);
}

/* ---- backward ---------------------------------------------------------- */

/* The backward of every FG_ACT_* as a macro of (dy, ref) vectors (the bodies
 * are in fg_act_vec.h; parameters from vp_). */
#define FG_B_RELU(d, r) act_bwd_relu(d, r)
#define FG_B_SIGMOID(d, r) act_bwd_sigmoid(d, r)
#define FG_B_TANH(d, r) act_bwd_tanh(d, r)
#define FG_B_GELU(d, r) act_bwd_gelu(d, r)
#define FG_B_GELU_TANH(d, r) act_bwd_gelu_tanh(d, r)
#define FG_B_LEAKY_RELU(d, r) act_bwd_leaky_relu(d, r, vp_.alpha)
#define FG_B_ELU(d, r) act_bwd_elu(d, r, vp_.alpha)
#define FG_B_SELU(d, r) act_bwd_selu(d, r)
#define FG_B_SILU(d, r) act_bwd_silu(d, r)
#define FG_B_SOFTPLUS(d, r) act_bwd_softplus(d, r)
#define FG_B_SOFTSIGN(d, r) act_bwd_softsign(d, r)
#define FG_B_HARD_SIGMOID(d, r) act_bwd_hard_sigmoid(d, r)
#define FG_B_MISH(d, r) act_bwd_mish(d, r)
#define FG_B_EXPONENTIAL(d, r) act_bwd_exponential(d, r)
#define FG_B_RELU6(d, r) act_bwd_relu6(d, r)
#define FG_B_HARD_SILU(d, r) act_bwd_hard_silu(d, r)
#define FG_B_RELU_GENERAL(d, r) act_bwd_relu_general(d, r, &vp_)

#define DEFINE_BINARY_RANGE(NAME, FN)                                                                  \
    static void NAME(float *dx, const float *dy, const float *r, int64_t lo, int64_t hi, int stream,   \
                     const fg_act_param *p) {                                                          \
        const fg_act_vp vp_ = fg_act_vparams(p);                                                       \
        (void)vp_;                                                                                     \
        int64_t i = lo;                                                                                \
        if (stream) {                                                                                  \
            int64_t h = v_align_head(dx + i);                                                          \
            if (h > hi - i) h = hi - i;                                                                \
            if (h > 0) v_storen(dx + i, FN(v_loadn(dy + i, h), v_loadn(r + i, h)), h);                 \
            for (i += h; i + VL <= hi; i += VL) v_stream(dx + i, FN(v_load(dy + i), v_load(r + i)));   \
            v_sfence();                                                                                \
        } else {                                                                                       \
            for (; i + VL <= hi; i += VL) v_store(dx + i, FN(v_load(dy + i), v_load(r + i)));          \
        }                                                                                              \
        if (i < hi) {                                                                                  \
            int64_t k = hi - i;                                                                        \
            v_storen(dx + i, FN(v_loadn(dy + i, k), v_loadn(r + i, k)), k);                            \
        }                                                                                              \
    }

DEFINE_BINARY_RANGE(brange_relu, FG_B_RELU)
DEFINE_BINARY_RANGE(brange_sigmoid, FG_B_SIGMOID)
DEFINE_BINARY_RANGE(brange_tanh, FG_B_TANH)
DEFINE_BINARY_RANGE(brange_gelu, FG_B_GELU)
DEFINE_BINARY_RANGE(brange_gelu_tanh, FG_B_GELU_TANH)
DEFINE_BINARY_RANGE(brange_leaky_relu, FG_B_LEAKY_RELU)
DEFINE_BINARY_RANGE(brange_elu, FG_B_ELU)
DEFINE_BINARY_RANGE(brange_selu, FG_B_SELU)
DEFINE_BINARY_RANGE(brange_silu, FG_B_SILU)
DEFINE_BINARY_RANGE(brange_softplus, FG_B_SOFTPLUS)
DEFINE_BINARY_RANGE(brange_softsign, FG_B_SOFTSIGN)
DEFINE_BINARY_RANGE(brange_hard_sigmoid, FG_B_HARD_SIGMOID)
DEFINE_BINARY_RANGE(brange_mish, FG_B_MISH)
DEFINE_BINARY_RANGE(brange_exponential, FG_B_EXPONENTIAL)
DEFINE_BINARY_RANGE(brange_relu6, FG_B_RELU6)
DEFINE_BINARY_RANGE(brange_hard_silu, FG_B_HARD_SILU)
DEFINE_BINARY_RANGE(brange_relu_general, FG_B_RELU_GENERAL)

static void brange_linear(float *dx, const float *dy, const float *r, int64_t lo, int64_t hi, int stream,
                          const fg_act_param *p) {
    (void)r;
    (void)stream;
    (void)p;
    if (dx != dy) memcpy(dx + lo, dy + lo, (size_t)(hi - lo) * sizeof(float));
}

typedef void (*binary_range_fn)(float *, const float *, const float *, int64_t, int64_t, int, const fg_act_param *);

static int run_binary(binary_range_fn fn, float *dx, const float *dy, const float *r, int64_t n,
                      const fg_act_param *p, int64_t grain, int nthreads) {
    if (n < 0) return FG_ERR_ARG;
    if (n == 0) return FG_OK;
    int nt = fg_threads_for(n, grain, nthreads);
    const int stream = n >= FG_NT_MIN && dx != dy && dx != r;
#define BODY_(lo, hi) fn(dx, dy, r, lo, hi, stream, p)
    FG_PARALLEL_RANGE(n, 16, nt, BODY_);
#undef BODY_
    return FG_OK;
}

static binary_range_fn backward_range(int act) {
    switch (act) {
    case FG_ACT_LINEAR: return brange_linear;
    case FG_ACT_RELU: return brange_relu;
    case FG_ACT_SIGMOID: return brange_sigmoid;
    case FG_ACT_TANH: return brange_tanh;
    case FG_ACT_GELU: return brange_gelu;
    case FG_ACT_GELU_TANH: return brange_gelu_tanh;
    case FG_ACT_LEAKY_RELU: return brange_leaky_relu;
    case FG_ACT_ELU: return brange_elu;
    case FG_ACT_SELU: return brange_selu;
    case FG_ACT_SILU: return brange_silu;
    case FG_ACT_SOFTPLUS: return brange_softplus;
    case FG_ACT_SOFTSIGN: return brange_softsign;
    case FG_ACT_HARD_SIGMOID: return brange_hard_sigmoid;
    case FG_ACT_MISH: return brange_mish;
    case FG_ACT_EXPONENTIAL: return brange_exponential;
    case FG_ACT_RELU6: return brange_relu6;
    case FG_ACT_HARD_SILU: return brange_hard_silu;
    case FG_ACT_RELU_GENERAL: return brange_relu_general;
    default: return NULL;
    }
}

/* The backward's grain: the relu family and the plain products are memory-bound */
static int64_t act_bwd_grain(int act) {
    switch (act) {
    case FG_ACT_LINEAR:
    case FG_ACT_RELU:
    case FG_ACT_SIGMOID:
    case FG_ACT_TANH:
    case FG_ACT_LEAKY_RELU:
    case FG_ACT_RELU6:
    case FG_ACT_RELU_GENERAL:
    case FG_ACT_HARD_SIGMOID:
    case FG_ACT_HARD_SILU:
    case FG_ACT_EXPONENTIAL:
    case FG_ACT_SOFTSIGN: return GRAIN_MEM;
    default: return GRAIN_TRANS;
    }
}

/* dx[n] = dy[n] * act'(.) from ref[n] (x or y: fg_act_backward_needs_input) */
int FG_ISA_FN(fg_act_backward_p)(float *dx, const float *dy, const float *ref, int64_t n, int act,
                                 const fg_act_param *p, int nthreads) {
    binary_range_fn fn = backward_range(act);
    if (!fn || !fg_act_param_ok(act, p)) return FG_ERR_ARG;
    const fg_act_param q = p ? *p : fg_act_param_default(act);
    return run_binary(fn, dx, dy, ref, n, &q, act_bwd_grain(act), nthreads);
}

/* ---- softmax over rows ------------------------------------------------- */

static float row_max(const float *x, int64_t cols) {
    V m = v_set1(-INFINITY);
    int64_t j = 0;
    for (; j + VL <= cols; j += VL) m = v_max(m, v_load(x + j));
    float mx = v_hmax(m);
    for (; j < cols; j++) mx = x[j] > mx ? x[j] : mx;
    return mx;
}

/* y[j] = exp(x[j] - mx) (y may be NULL); returns sum_j exp(x[j] - mx), float
 * lanes flushed into a double every FG_SUM_BLOCK columns (relative error
 * ~1e-7 for any row length) */
static float row_exp_sum(float *y, const float *x, int64_t cols, float mx) {
    V vm = v_set1(mx), acc = v_zero();
    double total = 0.0;
    int64_t j = 0, next_flush = FG_SUM_BLOCK;
    for (; j + VL <= cols; j += VL) {
        V e = v_exp(v_sub(v_load(x + j), vm));
        if (y) v_store(y + j, e);
        acc = v_add(acc, e);
        if (j + VL >= next_flush) {
            total += (double)v_hsum(acc);
            acc = v_zero();
            next_flush += FG_SUM_BLOCK;
        }
    }
    if (j < cols) {
        V e = v_exp(v_sub(v_loadn(x + j, cols - j), vm));
        e = v_sel(v_firstn(cols - j), v_zero(), e);
        if (y) v_storen(y + j, e, cols - j);
        acc = v_add(acc, e);
    }
    return (float)(total + (double)v_hsum(acc));
}

/* Few columns (<= 32, e.g. a 10-class output): rows across the lanes. A block
 * of VL rows is transposed into tmp[cols][VL], reduced without horizontal
 * operations, and transposed back. Each row's result does not depend on which
 * rows share its vector, so any row partition gives the same bits. */
#define SMALL_COLS 32

static void softmax_rows_small(float *y, const float *x, int64_t r0, int64_t r1, int64_t cols, int log) {
    float tmp[SMALL_COLS][VL];
    const VI idx = vi_iota_mul((int)cols);
    for (int64_t rb = r0; rb < r1; rb += VL) {
        const int64_t nb = r1 - rb < VL ? r1 - rb : VL;
        V m = v_set1(-INFINITY);
        for (int64_t j = 0; j < cols; j++) { /* gathered columns, vector stores into the tile */
            V cj = v_gathern(x + rb * cols + j, idx, nb);
            v_store(tmp[j], cj);
            m = v_max(m, cj);
        }
        V s = v_zero();
        for (int64_t j = 0; j < cols; j++) {
            V d = v_sub(v_load(tmp[j]), m);
            V e = v_exp(d);
            s = v_add(s, e);
            v_store(tmp[j], log ? d : e);
        }
        if (log) {
            V ls = v_log(s);
            for (int64_t j = 0; j < cols; j++) v_store(tmp[j], v_sub(v_load(tmp[j]), ls));
        } else {
            for (int64_t j = 0; j < cols; j++) v_store(tmp[j], v_div(v_load(tmp[j]), s));
        }
        for (int64_t l = 0; l < nb; l++)
            for (int64_t j = 0; j < cols; j++) y[(rb + l) * cols + j] = tmp[j][l];
    }
}

static void softmax_rows(float *y, const float *x, int64_t r0, int64_t r1, int64_t cols, int log) {
    if (cols <= SMALL_COLS && VL > 1) {
        softmax_rows_small(y, x, r0, r1, cols, log);
        return;
    }
    for (int64_t r = r0; r < r1; r++) {
        const float *xr = x + r * cols;
        float *yr = y + r * cols;
        float mx = row_max(xr, cols);
        float s = row_exp_sum(log ? NULL : yr, xr, cols, mx); /* log: y may alias x, keep x */
        int64_t j = 0;
        if (log) {
            V vm = v_set1(mx), ls = v_set1(logf(s));
            for (; j + VL <= cols; j += VL) v_store(yr + j, v_sub(v_sub(v_load(xr + j), vm), ls));
            if (j < cols) v_storen(yr + j, v_sub(v_sub(v_loadn(xr + j, cols - j), vm), ls), cols - j);
        } else {
            V vs = v_set1(s);
            for (; j + VL <= cols; j += VL) v_store(yr + j, v_div(v_load(yr + j), vs));
            if (j < cols) v_storen(yr + j, v_div(v_loadn(yr + j, cols - j), vs), cols - j);
        }
    }
}

/* x, y: (rows, cols) row-major; y = softmax(x) or log_softmax(x) along cols */
int FG_ISA_FN(fg_softmax_forward)(float *y, const float *x, int64_t rows, int64_t cols, int log, int nthreads) {
    if (rows < 0 || cols < 0) return FG_ERR_ARG;
    if (rows == 0 || cols == 0) return FG_OK;
    int nt = fg_threads_for(rows * cols, GRAIN_TRANS, nthreads);
    if (nt > rows) nt = (int)rows;
#define BODY_(lo, hi) softmax_rows(y, x, lo, hi, cols, log)
    FG_PARALLEL_RANGE(rows, 1, nt, BODY_);
#undef BODY_
    return FG_OK;
}

static void softmax_bwd_rows(float *dx, const float *dy, const float *y, int64_t r0, int64_t r1, int64_t cols,
                             int log) {
    for (int64_t r = r0; r < r1; r++) {
        const float *dyr = dy + r * cols, *yr = y + r * cols;
        float *dxr = dx + r * cols;
        V acc = v_zero();
        double tot = 0.0;
        int64_t j = 0;
        if (log) { /* dx = dy - exp(y) * sum(dy) */
            for (; j + VL <= cols; j += VL) {
                acc = v_add(acc, v_load(dyr + j));
                if ((j + VL) % FG_SUM_BLOCK == 0) { tot += (double)v_hsum(acc); acc = v_zero(); }
            }
            if (j < cols) acc = v_add(acc, v_loadn(dyr + j, cols - j));
            V s = v_set1((float)(tot + (double)v_hsum(acc)));
            for (j = 0; j + VL <= cols; j += VL)
                v_store(dxr + j, v_fnma(v_exp(v_load(yr + j)), s, v_load(dyr + j)));
            if (j < cols) {
                int64_t k = cols - j;
                v_storen(dxr + j, v_fnma(v_exp(v_loadn(yr + j, k)), s, v_loadn(dyr + j, k)), k);
            }
        } else { /* dx = y * (dy - sum(dy * y)) */
            for (; j + VL <= cols; j += VL) {
                acc = v_fma(v_load(dyr + j), v_load(yr + j), acc);
                if ((j + VL) % FG_SUM_BLOCK == 0) { tot += (double)v_hsum(acc); acc = v_zero(); }
            }
            if (j < cols) acc = v_fma(v_loadn(dyr + j, cols - j), v_loadn(yr + j, cols - j), acc);
            V s = v_set1((float)(tot + (double)v_hsum(acc)));
            for (j = 0; j + VL <= cols; j += VL)
                v_store(dxr + j, v_mul(v_load(yr + j), v_sub(v_load(dyr + j), s)));
            if (j < cols) {
                int64_t k = cols - j;
                v_storen(dxr + j, v_mul(v_loadn(yr + j, k), v_sub(v_loadn(dyr + j, k), s)), k);
            }
        }
    }
}

/* dy, y, dx: (rows, cols); y is the forward output */
int FG_ISA_FN(fg_softmax_backward)(float *dx, const float *dy, const float *y, int64_t rows, int64_t cols, int log,
                                   int nthreads) {
    if (rows < 0 || cols < 0) return FG_ERR_ARG;
    if (rows == 0 || cols == 0) return FG_OK;
    int nt = fg_threads_for(rows * cols, log ? GRAIN_TRANS : GRAIN_MEM, nthreads);
    if (nt > rows) nt = (int)rows;
#define BODY_(lo, hi) softmax_bwd_rows(dx, dy, y, lo, hi, cols, log)
    FG_PARALLEL_RANGE(rows, 1, nt, BODY_);
#undef BODY_
    return FG_OK;
}
