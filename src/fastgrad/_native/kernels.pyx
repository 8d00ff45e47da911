# cython: language_level=3
"""fastgrad._native.kernels — thin bindings of csrc/kernels.

Each wrapper checks dtype, contiguity, sizes and overlap (cheaply: these run
once or more per training step on small arrays), releases the GIL, calls the C
kernel and turns its status into an exception. Outputs are always passed in
(allocation is the caller's: fastgrad.backend.native_kernels). Element-wise
kernels accept out is x (in place); any other overlap is refused.
"""

include "_common.pxi"
include "_act.pxi"

cimport numpy as cnp
from libc.stdint cimport int64_t, uint64_t, uint8_t

cnp.import_array()

cdef extern from "kernels/fg_activation.h" nogil:
    int fg_act_forward(float *y, const float *x, int64_t n, int act, int nthreads)
    int fg_act_backward(float *dx, const float *dy, const float *ref, int64_t n, int act, int nthreads)
    int fg_act_forward_p(float *y, const float *x, int64_t n, int act, const fg_act_param *p, int nthreads)
    int fg_act_backward_p(float *dx, const float *dy, const float *ref, int64_t n, int act,
                          const fg_act_param *p, int nthreads)
    int fg_exp(float *y, const float *x, int64_t n, int nthreads)
    int fg_log(float *y, const float *x, int64_t n, int nthreads)
    int fg_softmax_forward(float *y, const float *x, int64_t rows, int64_t cols, int log, int nthreads)
    int fg_softmax_backward(float *dx, const float *dy, const float *y, int64_t rows, int64_t cols, int log,
                            int nthreads)

cdef extern from "kernels/fg_loss.h" nogil:
    int fg_sparse_softmax_xent(double *loss_sum, float *dlogits, int64_t *correct, const float *logits,
                               const int64_t *labels, const float *sample_weight, int64_t rows, int64_t cols,
                               float grad_scale, int nthreads)
    int fg_softmax_xent(double *loss_sum, float *dlogits, const float *logits, const float *target,
                        const float *sample_weight, int64_t rows, int64_t cols, float grad_scale, int nthreads)
    int fg_sigmoid_bce(double *loss_sum, float *dlogits, const float *logits, const float *target,
                       const float *sample_weight, int64_t rows, int64_t cols, float grad_scale, int nthreads)
    int fg_mse(double *loss_sum, float *dpred, const float *pred, const float *target, const float *sample_weight,
               int64_t rows, int64_t cols, float grad_scale, int nthreads)
    int fg_bce_prob(double *loss_sum, float *dprob, const float *prob, const float *target,
                    const float *sample_weight, int64_t rows, int64_t cols, float eps, float grad_scale,
                    int nthreads)
    int fg_cce_prob(double *loss_sum, float *dprob, const float *prob, const float *target,
                    const float *sample_weight, int64_t rows, int64_t cols, float eps, float grad_scale,
                    int nthreads)

cdef extern from "kernels/fg_reduce.h" nogil:
    int fg_sum_rows(float *out, const float *x, int64_t rows, int64_t cols, int nthreads)
    int fg_sumsq(double *out, const float *x, int64_t n, int nthreads)
    int fg_all_finite(int *ok, const float *x, int64_t n, int nthreads)
    int fg_scale(float *x, int64_t n, float s, int nthreads)
    int fg_clip_value(float *x, int64_t n, float lo, float hi, int nthreads)

cdef extern from "kernels/fg_optim.h" nogil:
    int fg_sgd_update(float *param, float *velocity, const float *grad, int64_t n, float lr, float momentum,
                      int nesterov, float weight_decay, int decoupled, int nthreads)
    int fg_adagrad_update(float *param, float *accum, const float *grad, int64_t n, float lr, float eps,
                          float weight_decay, int decoupled, int nthreads)
    int fg_rmsprop_update(float *param, float *ms, float *mom, float *mg, const float *grad, int64_t n, float lr,
                          float rho, float momentum, float eps, int centered, float weight_decay, int decoupled,
                          int nthreads)
    int fg_adam_update(float *param, float *m, float *v, const float *grad, int64_t n, float lr, float beta1,
                       float beta2, float eps, int64_t step, float weight_decay, int decoupled, int nthreads)

cdef extern from "kernels/fg_norm.h" nogil:
    int fg_layernorm_forward(float *y, float *mean, float *rstd, const float *x, const float *gamma,
                             const float *beta, int64_t rows, int64_t cols, float eps, int nthreads)
    int fg_layernorm_backward(float *dx, float *dgamma, float *dbeta, const float *dy, const float *x,
                              const float *gamma, const float *mean, const float *rstd, int64_t rows, int64_t cols,
                              int nthreads)
    int fg_batchnorm_forward(float *y, float *mean, float *rstd, const float *x, const float *gamma,
                             const float *beta, int64_t rows, int64_t cols, float eps, int nthreads)
    int fg_batchnorm_backward(float *dx, float *dgamma, float *dbeta, const float *dy, const float *x,
                              const float *gamma, const float *mean, const float *rstd, int64_t rows, int64_t cols,
                              int nthreads)

cdef extern from "kernels/fg_random.h" nogil:
    int fg_dropout_forward(float *y, uint8_t *mask, const float *x, int64_t n, float rate, uint64_t seed,
                           uint64_t offset, int nthreads)
    int fg_dropout_backward(float *dx, const float *dy, const uint8_t *mask, int64_t n, float rate, int nthreads)

# activation codes: ACTIVATIONS, ACT_COUNT and act_backward_needs_input come
# from csrc/fg_common.h through _act.pxi


# ---- validation helpers ----------------------------------------------------

cdef inline int _f32(cnp.ndarray a, str op, str name, bint writable=False) except -1:
    if cnp.PyArray_TYPE(a) != cnp.NPY_FLOAT32 or not cnp.PyArray_IS_C_CONTIGUOUS(a):
        raise TypeError(f"{op}: {name} must be a C-contiguous float32 array, got dtype={a.dtype}, "
                        f"shape={_shp(a)}, C-contiguous={bool((<object>a).flags.c_contiguous)}")
    if writable and not cnp.PyArray_ISWRITEABLE(a):
        raise ValueError(f"{op}: {name} is read-only")
    return 0

cdef inline object _shp(cnp.ndarray a):
    return (<object>a).shape

cdef inline float *_fp(cnp.ndarray a) noexcept:
    return <float *>cnp.PyArray_DATA(a)

cdef inline int _same_size(cnp.ndarray a, cnp.ndarray b, str op, str na, str nb) except -1:
    if cnp.PyArray_SIZE(a) != cnp.PyArray_SIZE(b):
        raise ValueError(f"{op}: {na} {_shp(a)} and {nb} {_shp(b)} differ in size")
    return 0

cdef inline int _same_shape(cnp.ndarray a, cnp.ndarray b, str op, str na, str nb) except -1:
    cdef int nd = cnp.PyArray_NDIM(a)
    cdef int i
    if nd != cnp.PyArray_NDIM(b):
        raise ValueError(f"{op}: {na} {_shp(a)} and {nb} {_shp(b)} must have the same shape")
    for i in range(nd):
        if cnp.PyArray_DIMS(a)[i] != cnp.PyArray_DIMS(b)[i]:
            raise ValueError(f"{op}: {na} {_shp(a)} and {nb} {_shp(b)} must have the same shape")
    return 0

cdef inline int _no_overlap(cnp.ndarray out, cnp.ndarray a, str op, str no, str na, bint same_ok) except -1:
    """Refuse partial overlap of out with input a; exact aliasing only where same_ok."""
    cdef char *o0 = <char *>cnp.PyArray_DATA(out)
    cdef char *a0 = <char *>cnp.PyArray_DATA(a)
    cdef char *o1 = o0 + cnp.PyArray_NBYTES(out)
    cdef char *a1 = a0 + cnp.PyArray_NBYTES(a)
    if o0 == o1 or a0 == a1:  # an empty array overlaps nothing
        return 0
    if o0 < a1 and a0 < o1:
        if same_ok and o0 == a0 and o1 == a1:
            return 0
        raise ValueError(f"{op}: {no} {_shp(out)} overlaps {na} {_shp(a)}"
                         + ("" if not same_ok else " (only exact in-place use is allowed)"))
    return 0

cdef inline int64_t _cols(cnp.ndarray a) noexcept:
    cdef int nd = cnp.PyArray_NDIM(a)
    return cnp.PyArray_DIMS(a)[nd - 1] if nd > 0 else 1

cdef inline int64_t _rows(cnp.ndarray a) noexcept:
    cdef int64_t c = _cols(a)
    return cnp.PyArray_SIZE(a) // c if c > 0 else 0


# ---- element-wise --------------------------------------------------------

cdef int _act_param(fg_act_param *p, object negative_slope, object alpha, object max_value,
                    object threshold) except -1:
    """Fill p from the keyword parameters; 1 if any was given, else 0 (NULL: defaults)."""
    if negative_slope is None and alpha is None and max_value is None and threshold is None:
        return 0
    if negative_slope is not None and alpha is not None:
        raise ValueError("give negative_slope or alpha, not both")
    p.alpha = <float>(negative_slope if negative_slope is not None else (alpha if alpha is not None else 0.0))
    p.max_value = <float>(max_value if max_value is not None else float("inf"))
    p.threshold = <float>(threshold if threshold is not None else 0.0)
    return 1


def act_forward(cnp.ndarray x not None, cnp.ndarray out not None, int act, int nthreads, *,
                negative_slope=None, alpha=None, max_value=None, threshold=None):
    """out = act(x) (act: an FG_ACT_* code, see ACTIVATIONS); out may be x.
    Parameters (leaky_relu: negative_slope; elu: alpha; relu_general:
    negative_slope, max_value, threshold); none given = the by-name defaults."""
    _f32(x, "act_forward", "x"); _f32(out, "act_forward", "out", True)
    _same_size(x, out, "act_forward", "x", "out")
    _no_overlap(out, x, "act_forward", "out", "x", True)
    cdef fg_act_param prm
    cdef fg_act_param *pp = &prm if _act_param(&prm, negative_slope, alpha, max_value, threshold) else NULL
    cdef int st
    cdef float *y = _fp(out)
    cdef float *xp = _fp(x)
    cdef int64_t n = cnp.PyArray_SIZE(x)
    with nogil:
        st = fg_act_forward_p(y, xp, n, act, pp, nthreads)
    if st != FG_OK:
        check_status(st, "act_forward", _act_detail(act, pp, (<object>x).shape))
    return out

cdef str _act_detail(int act, fg_act_param *pp, object shape):
    d = f"act={act}, shape={shape}"
    if not fg_act_valid(act):
        d = f"unknown activation code {act}, expected 0..{FG_ACT_COUNT - 1}; shape={shape}"
    elif pp != NULL:
        d += f", negative_slope/alpha={pp.alpha}, max_value={pp.max_value}, threshold={pp.threshold}"
    return d

def act_backward(cnp.ndarray dy not None, cnp.ndarray ref not None, cnp.ndarray out not None, int act,
                 int nthreads, *, negative_slope=None, alpha=None, max_value=None, threshold=None):
    """out = dy * act'(.) from ref: the forward input x where
    act_backward_needs_input(act), else the forward output y; out may be dy."""
    _f32(dy, "act_backward", "dy"); _f32(ref, "act_backward", "ref"); _f32(out, "act_backward", "out", True)
    _same_size(dy, ref, "act_backward", "dy", "ref"); _same_size(dy, out, "act_backward", "dy", "out")
    _no_overlap(out, dy, "act_backward", "out", "dy", True)
    _no_overlap(out, ref, "act_backward", "out", "ref", True)
    cdef fg_act_param prm
    cdef fg_act_param *pp = &prm if _act_param(&prm, negative_slope, alpha, max_value, threshold) else NULL
    cdef int st
    cdef float *o = _fp(out)
    cdef float *d = _fp(dy)
    cdef float *r = _fp(ref)
    cdef int64_t n = cnp.PyArray_SIZE(dy)
    with nogil:
        st = fg_act_backward_p(o, d, r, n, act, pp, nthreads)
    if st != FG_OK:
        check_status(st, "act_backward", _act_detail(act, pp, (<object>dy).shape))
    return out

def exp(cnp.ndarray x not None, cnp.ndarray out not None, int nthreads):
    _f32(x, "exp", "x"); _f32(out, "exp", "out", True)
    _same_size(x, out, "exp", "x", "out"); _no_overlap(out, x, "exp", "out", "x", True)
    cdef int st
    cdef float *y = _fp(out)
    cdef float *xp = _fp(x)
    cdef int64_t n = cnp.PyArray_SIZE(x)
    with nogil:
        st = fg_exp(y, xp, n, nthreads)
    if st != FG_OK:
        check_status(st, "exp", f"shape={_shp(x)}")
    return out

def log(cnp.ndarray x not None, cnp.ndarray out not None, int nthreads):
    _f32(x, "log", "x"); _f32(out, "log", "out", True)
    _same_size(x, out, "log", "x", "out"); _no_overlap(out, x, "log", "out", "x", True)
    cdef int st
    cdef float *y = _fp(out)
    cdef float *xp = _fp(x)
    cdef int64_t n = cnp.PyArray_SIZE(x)
    with nogil:
        st = fg_log(y, xp, n, nthreads)
    if st != FG_OK:
        check_status(st, "log", f"shape={_shp(x)}")
    return out

def softmax_forward(cnp.ndarray x not None, cnp.ndarray out not None, bint log, int nthreads):
    """softmax / log_softmax along the last axis; out may be x."""
    cdef str op = "log_softmax" if log else "softmax"
    _f32(x, op, "x"); _f32(out, op, "out", True)
    _same_shape(x, out, op, "x", "out"); _no_overlap(out, x, op, "out", "x", True)
    cdef int st
    cdef float *y = _fp(out)
    cdef float *xp = _fp(x)
    cdef int64_t rows = _rows(x), cols = _cols(x)
    with nogil:
        st = fg_softmax_forward(y, xp, rows, cols, log, nthreads)
    if st != FG_OK:
        check_status(st, op, f"shape={_shp(x)}")
    return out

def softmax_backward(cnp.ndarray dy not None, cnp.ndarray y not None, cnp.ndarray out not None, bint log,
                     int nthreads):
    cdef str op = "backprop_log_softmax" if log else "backprop_softmax"
    _f32(dy, op, "dy"); _f32(y, op, "y"); _f32(out, op, "out", True)
    _same_shape(dy, y, op, "dy", "y"); _same_shape(dy, out, op, "dy", "out")
    # a row's sum is taken before the row is written, so out may be dy (or y) exactly
    _no_overlap(out, dy, op, "out", "dy", True); _no_overlap(out, y, op, "out", "y", True)
    cdef int st
    cdef float *o = _fp(out)
    cdef float *d = _fp(dy)
    cdef float *yp = _fp(y)
    cdef int64_t rows = _rows(dy), cols = _cols(dy)
    with nogil:
        st = fg_softmax_backward(o, d, yp, rows, cols, log, nthreads)
    if st != FG_OK:
        check_status(st, op, f"shape={_shp(dy)}")
    return out


# ---- losses ------------------------------------------------------------------

cdef inline const float *_sw(object sample_weight, int64_t rows, str op) except? NULL:
    if sample_weight is None:
        return NULL
    cdef cnp.ndarray w = <cnp.ndarray?>sample_weight
    _f32(w, op, "sample_weight")
    if cnp.PyArray_SIZE(w) != rows:
        raise ValueError(f"{op}: sample_weight {_shp(w)} needs one weight per row ({rows} rows)")
    return <const float *>cnp.PyArray_DATA(w)

cdef inline float *_grad(object grad, cnp.ndarray like, str op, str name) except? NULL:
    if grad is None:
        return NULL
    cdef cnp.ndarray g = <cnp.ndarray?>grad
    _f32(g, op, name, True)
    _same_shape(g, like, op, name, "input")
    _no_overlap(g, like, op, name, "input", True)
    return <float *>cnp.PyArray_DATA(g)

def sparse_softmax_xent(cnp.ndarray logits not None, cnp.ndarray labels not None, sample_weight, dlogits,
                        float grad_scale, int nthreads, bint want_correct=False):
    """Fused softmax + cross-entropy from logits (rows, cols) and int64 labels (rows,).
    Returns (sum_i w_i * loss_i, number of rows whose argmax == label, or None).
    dlogits (or None) receives grad_scale * w_i * (softmax - onehot); it may be logits itself."""
    cdef str op = "sparse_softmax_crossentropy"
    _f32(logits, op, "logits")
    if cnp.PyArray_NDIM(logits) != 2:
        raise ValueError(f"{op}: logits must be 2-D (rows, classes), got shape {_shp(logits)}")
    cdef int64_t rows = cnp.PyArray_DIMS(logits)[0], cols = cnp.PyArray_DIMS(logits)[1]
    if cnp.PyArray_TYPE(labels) != cnp.NPY_INT64 or not cnp.PyArray_IS_C_CONTIGUOUS(labels):
        raise TypeError(f"{op}: labels must be a C-contiguous int64 array, got {labels.dtype}")
    if cnp.PyArray_SIZE(labels) != rows:
        raise ValueError(f"{op}: labels {_shp(labels)} needs one label per row of logits {_shp(logits)}")
    cdef const float *w = _sw(sample_weight, rows, op)
    cdef float *g = _grad(dlogits, logits, op, "dlogits")
    cdef double loss = 0.0
    cdef int64_t correct = 0
    cdef int64_t *cp = &correct if want_correct else NULL
    cdef const float *x = _fp(logits)
    cdef const int64_t *lab = <const int64_t *>cnp.PyArray_DATA(labels)
    cdef int st
    with nogil:
        st = fg_sparse_softmax_xent(&loss, g, cp, x, lab, w, rows, cols, grad_scale, nthreads)
    if st != FG_OK:
        check_status(st, op, f"logits {_shp(logits)}, labels {_shp(labels)}, classes={cols}")
    return loss, (correct if want_correct else None)

cdef inline int _dense_args(cnp.ndarray a, cnp.ndarray t, str op, str na, int64_t *rows, int64_t *cols) except -1:
    _f32(a, op, na); _f32(t, op, "target")
    _same_shape(a, t, op, na, "target")
    cols[0] = _cols(a)
    rows[0] = _rows(a)
    return 0

def softmax_xent(cnp.ndarray logits not None, cnp.ndarray target not None, sample_weight, dlogits,
                 float grad_scale, int nthreads):
    """Fused softmax + cross-entropy with dense (one-hot / probability) targets; returns sum_i w_i loss_i."""
    cdef str op = "softmax_crossentropy"
    cdef int64_t rows, cols
    _dense_args(logits, target, op, "logits", &rows, &cols)
    cdef const float *w = _sw(sample_weight, rows, op)
    cdef float *g = _grad(dlogits, logits, op, "dlogits")
    if g != NULL:
        _no_overlap(<cnp.ndarray>dlogits, target, op, "dlogits", "target", False)
    cdef double loss = 0.0
    cdef const float *x = _fp(logits)
    cdef const float *t = _fp(target)
    cdef int st
    with nogil:
        st = fg_softmax_xent(&loss, g, x, t, w, rows, cols, grad_scale, nthreads)
    if st != FG_OK:
        check_status(st, op, f"logits {_shp(logits)}")
    return loss

def sigmoid_bce(cnp.ndarray logits not None, cnp.ndarray target not None, sample_weight, dlogits,
                float grad_scale, int nthreads):
    """Sigmoid + binary cross-entropy from logits, summed over the last axis; returns sum_i w_i loss_i."""
    cdef str op = "binary_crossentropy_from_logits"
    cdef int64_t rows, cols
    _dense_args(logits, target, op, "logits", &rows, &cols)
    cdef const float *w = _sw(sample_weight, rows, op)
    cdef float *g = _grad(dlogits, logits, op, "dlogits")
    if g != NULL:
        _no_overlap(<cnp.ndarray>dlogits, target, op, "dlogits", "target", True)
    cdef double loss = 0.0
    cdef const float *x = _fp(logits)
    cdef const float *t = _fp(target)
    cdef int st
    with nogil:
        st = fg_sigmoid_bce(&loss, g, x, t, w, rows, cols, grad_scale, nthreads)
    if st != FG_OK:
        check_status(st, op, f"logits {_shp(logits)}")
    return loss

def mse(cnp.ndarray pred not None, cnp.ndarray target not None, sample_weight, dpred, float grad_scale,
        int nthreads):
    """sum_i w_i sum_j (p - t)^2; dpred (or None) = grad_scale * w_i * 2 (p - t)."""
    cdef str op = "mse"
    cdef int64_t rows, cols
    _dense_args(pred, target, op, "pred", &rows, &cols)
    cdef const float *w = _sw(sample_weight, rows, op)
    cdef float *g = _grad(dpred, pred, op, "dpred")
    if g != NULL:
        _no_overlap(<cnp.ndarray>dpred, target, op, "dpred", "target", True)
    cdef double loss = 0.0
    cdef const float *p = _fp(pred)
    cdef const float *t = _fp(target)
    cdef int st
    with nogil:
        st = fg_mse(&loss, g, p, t, w, rows, cols, grad_scale, nthreads)
    if st != FG_OK:
        check_status(st, op, f"pred {_shp(pred)}")
    return loss


def bce_prob(cnp.ndarray prob not None, cnp.ndarray target not None, sample_weight, dprob, float eps,
             float grad_scale, int nthreads):
    """Binary cross-entropy from probabilities clipped to [eps, 1 - eps], summed over the last
    axis; returns sum_i w_i loss_i. dprob (or None): gradient w.r.t. prob, 0 outside the clip."""
    cdef str op = "binary_crossentropy"
    cdef int64_t rows, cols
    _dense_args(prob, target, op, "prob", &rows, &cols)
    cdef const float *w = _sw(sample_weight, rows, op)
    cdef float *g = _grad(dprob, prob, op, "dprob")
    if g != NULL:
        _no_overlap(<cnp.ndarray>dprob, target, op, "dprob", "target", True)
    cdef double loss = 0.0
    cdef const float *p = _fp(prob)
    cdef const float *t = _fp(target)
    cdef int st
    with nogil:
        st = fg_bce_prob(&loss, g, p, t, w, rows, cols, eps, grad_scale, nthreads)
    if st != FG_OK:
        check_status(st, op, f"prob {_shp(prob)}, eps={eps}")
    return loss

def cce_prob(cnp.ndarray prob not None, cnp.ndarray target not None, sample_weight, dprob, float eps,
             float grad_scale, int nthreads):
    """Categorical cross-entropy from probabilities (rows renormalised, clipped to [eps, 1 - eps]);
    returns sum_i w_i loss_i. dprob (or None): gradient w.r.t. the raw prob."""
    cdef str op = "categorical_crossentropy"
    cdef int64_t rows, cols
    _dense_args(prob, target, op, "prob", &rows, &cols)
    cdef const float *w = _sw(sample_weight, rows, op)
    cdef float *g = _grad(dprob, prob, op, "dprob")
    if g != NULL:  # the gradient pass re-reads prob and target after the sums: no aliasing at all
        _no_overlap(<cnp.ndarray>dprob, prob, op, "dprob", "prob", False)
        _no_overlap(<cnp.ndarray>dprob, target, op, "dprob", "target", False)
    cdef double loss = 0.0
    cdef const float *p = _fp(prob)
    cdef const float *t = _fp(target)
    cdef int st
    with nogil:
        st = fg_cce_prob(&loss, g, p, t, w, rows, cols, eps, grad_scale, nthreads)
    if st != FG_OK:
        check_status(st, op, f"prob {_shp(prob)}, eps={eps}")
    return loss


# ---- reductions --------------------------------------------------------------

def sum_rows(cnp.ndarray x not None, cnp.ndarray out not None, int nthreads):
    """out[j] = sum_i x[i, j] over the leading axes (x viewed as (size/cols, cols))."""
    _f32(x, "sum_rows", "x"); _f32(out, "sum_rows", "out", True)
    cdef int64_t cols = _cols(x), rows = _rows(x)
    if cnp.PyArray_SIZE(out) != cols:
        raise ValueError(f"sum_rows: out {_shp(out)} must have {cols} elements for x {_shp(x)}")
    _no_overlap(out, x, "sum_rows", "out", "x", False)
    cdef int st
    cdef float *o = _fp(out)
    cdef const float *xp = _fp(x)
    with nogil:
        st = fg_sum_rows(o, xp, rows, cols, nthreads)
    if st != FG_OK:
        check_status(st, "sum_rows", f"x {_shp(x)}")
    return out

def sumsq(cnp.ndarray x not None, int nthreads):
    """sum of squares in double, fixed order (same bits for any thread count / ISA)."""
    _f32(x, "sumsq", "x")
    cdef double s = 0.0
    cdef const float *xp = _fp(x)
    cdef int64_t n = cnp.PyArray_SIZE(x)
    cdef int st
    with nogil:
        st = fg_sumsq(&s, xp, n, nthreads)
    if st != FG_OK:
        check_status(st, "sumsq", f"x {_shp(x)}")
    return s

def all_finite(cnp.ndarray x not None, int nthreads):
    """True when no element of x is NaN or +-inf."""
    _f32(x, "all_finite", "x")
    cdef int ok = 1
    cdef const float *xp = _fp(x)
    cdef int64_t n = cnp.PyArray_SIZE(x)
    cdef int st
    with nogil:
        st = fg_all_finite(&ok, xp, n, nthreads)
    if st != FG_OK:
        check_status(st, "all_finite", f"x {_shp(x)}")
    return ok != 0

def scale(cnp.ndarray x not None, float s, int nthreads):
    """x *= s in place."""
    _f32(x, "scale", "x", True)
    cdef float *xp = _fp(x)
    cdef int64_t n = cnp.PyArray_SIZE(x)
    cdef int st
    with nogil:
        st = fg_scale(xp, n, s, nthreads)
    if st != FG_OK:
        check_status(st, "scale", f"x {_shp(x)}")
    return x

def clip_value(cnp.ndarray x not None, float lo, float hi, int nthreads):
    """x = min(max(x, lo), hi) in place."""
    _f32(x, "clip_by_value", "x", True)
    cdef float *xp = _fp(x)
    cdef int64_t n = cnp.PyArray_SIZE(x)
    cdef int st
    with nogil:
        st = fg_clip_value(xp, n, lo, hi, nthreads)
    if st != FG_OK:
        check_status(st, "clip_by_value", f"x {_shp(x)}, lo={lo}, hi={hi}")
    return x


# ---- optimizers --------------------------------------------------------------

cdef inline float *_state(object a, cnp.ndarray param, str op, str name) except? NULL:
    if a is None:
        return NULL
    cdef cnp.ndarray s = <cnp.ndarray?>a
    _f32(s, op, name, True)
    _same_size(s, param, op, name, "param")
    _no_overlap(s, param, op, name, "param", False)
    return <float *>cnp.PyArray_DATA(s)

cdef inline int _param_grad(cnp.ndarray param, cnp.ndarray grad, str op) except -1:
    _f32(param, op, "param", True); _f32(grad, op, "grad")
    _same_size(param, grad, op, "param", "grad")
    _no_overlap(param, grad, op, "param", "grad", False)
    return 0

def sgd_update(cnp.ndarray param not None, cnp.ndarray grad not None, velocity, float lr, float momentum,
               bint nesterov, float weight_decay, bint decoupled, int nthreads):
    cdef str op = "sgd_update"
    _param_grad(param, grad, op)
    if (momentum != 0.0) != (velocity is not None):
        raise ValueError(f"{op}: velocity must be given iff momentum != 0 (momentum={momentum})")
    cdef float *v = _state(velocity, param, op, "velocity")
    cdef float *p = _fp(param)
    cdef const float *g = _fp(grad)
    cdef int64_t n = cnp.PyArray_SIZE(param)
    cdef int st
    with nogil:
        st = fg_sgd_update(p, v, g, n, lr, momentum, nesterov, weight_decay, decoupled, nthreads)
    if st != FG_OK:
        check_status(st, op, f"param {_shp(param)}")

def adagrad_update(cnp.ndarray param not None, cnp.ndarray grad not None, cnp.ndarray accum not None, float lr,
                   float eps, float weight_decay, bint decoupled, int nthreads):
    cdef str op = "adagrad_update"
    _param_grad(param, grad, op)
    cdef float *a = _state(accum, param, op, "accum")
    cdef float *p = _fp(param)
    cdef const float *g = _fp(grad)
    cdef int64_t n = cnp.PyArray_SIZE(param)
    cdef int st
    with nogil:
        st = fg_adagrad_update(p, a, g, n, lr, eps, weight_decay, decoupled, nthreads)
    if st != FG_OK:
        check_status(st, op, f"param {_shp(param)}")

def rmsprop_update(cnp.ndarray param not None, cnp.ndarray grad not None, cnp.ndarray ms not None, mom, mg,
                   float lr, float rho, float momentum, float eps, bint centered, float weight_decay,
                   bint decoupled, int nthreads):
    cdef str op = "rmsprop_update"
    _param_grad(param, grad, op)
    if (momentum != 0.0) != (mom is not None):
        raise ValueError(f"{op}: mom must be given iff momentum != 0 (momentum={momentum})")
    if centered != (mg is not None):
        raise ValueError(f"{op}: mg must be given iff centered")
    cdef float *s = _state(ms, param, op, "ms")
    cdef float *mo = _state(mom, param, op, "mom")
    cdef float *mgp = _state(mg, param, op, "mg")
    cdef float *p = _fp(param)
    cdef const float *g = _fp(grad)
    cdef int64_t n = cnp.PyArray_SIZE(param)
    cdef int st
    with nogil:
        st = fg_rmsprop_update(p, s, mo, mgp, g, n, lr, rho, momentum, eps, centered, weight_decay, decoupled,
                               nthreads)
    if st != FG_OK:
        check_status(st, op, f"param {_shp(param)}")

def adam_update(cnp.ndarray param not None, cnp.ndarray grad not None, cnp.ndarray m not None,
                cnp.ndarray v not None, float lr, float beta1, float beta2, float eps, int64_t step,
                float weight_decay, bint decoupled, int nthreads):
    cdef str op = "adam_update"
    _param_grad(param, grad, op)
    if step < 1:
        raise ValueError(f"{op}: step must be >= 1 (got {step})")
    cdef float *mp = _state(m, param, op, "m")
    cdef float *vp = _state(v, param, op, "v")
    _no_overlap(m, v, op, "m", "v", False)
    cdef float *p = _fp(param)
    cdef const float *g = _fp(grad)
    cdef int64_t n = cnp.PyArray_SIZE(param)
    cdef int st
    with nogil:
        st = fg_adam_update(p, mp, vp, g, n, lr, beta1, beta2, eps, step, weight_decay, decoupled, nthreads)
    if st != FG_OK:
        check_status(st, op, f"param {_shp(param)}")


# ---- dropout -----------------------------------------------------------------

def dropout_forward(cnp.ndarray x not None, cnp.ndarray out not None, mask, float rate, uint64_t seed,
                    uint64_t offset, int nthreads):
    """out = x * keep / (1 - rate); mask (uint8, or None) receives keep."""
    cdef str op = "dropout"
    _f32(x, op, "x"); _f32(out, op, "out", True)
    _same_size(x, out, op, "x", "out"); _no_overlap(out, x, op, "out", "x", True)
    cdef uint8_t *mp = NULL
    cdef cnp.ndarray ma
    if mask is not None:
        ma = <cnp.ndarray?>mask
        if cnp.PyArray_TYPE(ma) != cnp.NPY_UINT8 or not cnp.PyArray_IS_C_CONTIGUOUS(ma) \
                or not cnp.PyArray_ISWRITEABLE(ma):
            raise TypeError(f"{op}: mask must be a writable C-contiguous uint8 array, got {ma.dtype}")
        _same_size(x, ma, op, "x", "mask")
        mp = <uint8_t *>cnp.PyArray_DATA(ma)
    if not (0.0 <= rate <= 1.0):
        raise ValueError(f"{op}: rate must be in [0, 1], got {rate}")
    cdef float *y = _fp(out)
    cdef const float *xp = _fp(x)
    cdef int64_t n = cnp.PyArray_SIZE(x)
    cdef int st
    with nogil:
        st = fg_dropout_forward(y, mp, xp, n, rate, seed, offset, nthreads)
    if st != FG_OK:
        check_status(st, op, f"x {_shp(x)}, rate={rate}")
    return out

def dropout_backward(cnp.ndarray dy not None, cnp.ndarray mask not None, cnp.ndarray out not None, float rate,
                     int nthreads):
    cdef str op = "backprop_dropout"
    _f32(dy, op, "dy"); _f32(out, op, "out", True)
    if cnp.PyArray_TYPE(mask) != cnp.NPY_UINT8 or not cnp.PyArray_IS_C_CONTIGUOUS(mask):
        raise TypeError(f"{op}: mask must be a C-contiguous uint8 array, got {mask.dtype}")
    _same_size(dy, out, op, "dy", "out"); _same_size(dy, mask, op, "dy", "mask")
    _no_overlap(out, dy, op, "out", "dy", True)
    cdef float *o = _fp(out)
    cdef const float *d = _fp(dy)
    cdef const uint8_t *mp = <const uint8_t *>cnp.PyArray_DATA(mask)
    cdef int64_t n = cnp.PyArray_SIZE(dy)
    cdef int st
    with nogil:
        st = fg_dropout_backward(o, d, mp, n, rate, nthreads)
    if st != FG_OK:
        check_status(st, op, f"dy {_shp(dy)}, rate={rate}")
    return out


# ---- normalisation -------------------------------------------------------------
# x is viewed as (shape[0], size / shape[0]) like NumpyOps' _as_2d. LayerNorm
# statistics are per row (mean/rstd: rows elements), BatchNorm per column (cols).

cdef inline int64_t _lead(cnp.ndarray a) noexcept:
    return cnp.PyArray_DIMS(a)[0] if cnp.PyArray_NDIM(a) > 0 else 1

cdef inline float *_vec(object a, int64_t n, str op, str name, bint writable, list others) except? NULL:
    """optional float32 contiguous vector of n elements (NULL for None), overlapping none of others"""
    if a is None:
        return NULL
    cdef cnp.ndarray v = <cnp.ndarray?>a
    _f32(v, op, name, writable)
    if cnp.PyArray_SIZE(v) != n:
        raise ValueError(f"{op}: {name} {_shp(v)} must have {n} elements")
    cdef cnp.ndarray o
    if writable:
        for o in others:
            _no_overlap(v, o, op, name, "another argument", False)
    return <float *>cnp.PyArray_DATA(v)

cdef inline int _norm_io(cnp.ndarray x, cnp.ndarray out, str op, str nx, str no, int64_t *rows,
                         int64_t *cols) except -1:
    _f32(x, op, nx); _f32(out, op, no, True)
    _same_shape(out, x, op, no, nx)
    if cnp.PyArray_NDIM(x) == 0:
        raise ValueError(f"{op}: {nx} must have at least one dimension, got shape {_shp(x)}")
    rows[0] = _lead(x)
    cols[0] = cnp.PyArray_SIZE(x) // rows[0] if rows[0] > 0 else 0
    return 0

def norm_forward(cnp.ndarray x not None, gamma, beta, float eps, cnp.ndarray out not None, mean, rstd,
                 bint batch, int nthreads):
    """out = ((x - mean) rstd) gamma + beta with statistics per row (LayerNorm,
    batch=False) or per column over the rows (training-mode BatchNorm, batch=True);
    mean/rstd (float32 or None) receive the statistics. out may be x."""
    cdef str op = "batchnorm_forward" if batch else "layernorm_forward"
    cdef int64_t rows, cols
    _norm_io(x, out, op, "x", "out", &rows, &cols)
    _no_overlap(out, x, op, "out", "x", True)
    cdef int64_t nstat = cols if batch else rows
    cdef const float *g = _vec(gamma, cols, op, "gamma", False, None)
    cdef const float *b = _vec(beta, cols, op, "beta", False, None)
    cdef list ins = [x, out] + [a for a in (gamma, beta) if a is not None]
    cdef float *mp = _vec(mean, nstat, op, "mean", True, ins)
    cdef float *rp = _vec(rstd, nstat, op, "rstd", True, ins + ([mean] if mean is not None else []))
    cdef float *y = _fp(out)
    cdef const float *xp = _fp(x)
    cdef int st
    with nogil:
        if batch:
            st = fg_batchnorm_forward(y, mp, rp, xp, g, b, rows, cols, eps, nthreads)
        else:
            st = fg_layernorm_forward(y, mp, rp, xp, g, b, rows, cols, eps, nthreads)
    if st != FG_OK:
        check_status(st, op, f"x {_shp(x)}")
    return out

def norm_backward(cnp.ndarray dy not None, cnp.ndarray x not None, gamma, cnp.ndarray mean not None,
                  cnp.ndarray rstd not None, cnp.ndarray dx not None, dgamma, dbeta, bint batch, int nthreads):
    """Backward of norm_forward: dx (may be dy), dgamma (ignored when gamma is
    None) and dbeta (None: not computed) are overwritten. mean/rstd float32."""
    cdef str op = "batchnorm_backward" if batch else "layernorm_backward"
    cdef int64_t rows, cols
    _norm_io(dy, dx, op, "dy", "dx", &rows, &cols)
    _f32(x, op, "x")
    _same_shape(x, dy, op, "x", "dy")
    _no_overlap(dx, dy, op, "dx", "dy", True)
    _no_overlap(dx, x, op, "dx", "x", False)
    cdef int64_t nstat = cols if batch else rows
    cdef const float *g = _vec(gamma, cols, op, "gamma", False, None)
    cdef const float *mp = _vec(mean, nstat, op, "mean", False, None)
    cdef const float *rp = _vec(rstd, nstat, op, "rstd", False, None)
    cdef list ins = [dy, x, dx, mean, rstd] + ([gamma] if gamma is not None else [])
    cdef float *dg = _vec(dgamma, cols, op, "dgamma", True, ins) if gamma is not None else NULL
    cdef float *db = _vec(dbeta, cols, op, "dbeta", True, ins + ([dgamma] if dg != NULL else []))
    cdef float *o = _fp(dx)
    cdef const float *d = _fp(dy)
    cdef const float *xp = _fp(x)
    cdef int st
    with nogil:
        if batch:
            st = fg_batchnorm_backward(o, dg, db, d, xp, g, mp, rp, rows, cols, nthreads)
        else:
            st = fg_layernorm_backward(o, dg, db, d, xp, g, mp, rp, rows, cols, nthreads)
    if st != FG_OK:
        check_status(st, op, f"dy {_shp(dy)}")
    return dx
