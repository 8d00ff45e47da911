# cython: language_level=3
"""fastgrad._native.lossopt — thin bindings of csrc/lossopt (the Keras losses
beyond the cross-entropies / MSE, and Nadam / Adamax / Adadelta / Ftrl / Lion /
Adam-amsgrad). Each wrapper checks dtype, contiguity, sizes and overlap,
releases the GIL, calls C and turns its status into an exception."""

include "_common.pxi"

cimport numpy as cnp
from libc.stdint cimport int64_t
from libc.string cimport memset

cnp.import_array()

cdef extern from "lossopt/fg_lossopt.h" nogil:
    enum:
        FG_PLOSS_MAE
        FG_PLOSS_MAPE
        FG_PLOSS_MSLE
        FG_PLOSS_HUBER
        FG_PLOSS_LOGCOSH
        FG_PLOSS_POISSON
        FG_PLOSS_HINGE
        FG_PLOSS_SQHINGE
        FG_PLOSS_KLD
        FG_PLOSS_CATHINGE
        FG_PLOSS_COSINE
        FG_OPTX_NADAM
        FG_OPTX_ADAMAX
        FG_OPTX_ADADELTA
        FG_OPTX_FTRL
        FG_OPTX_LION
        FG_OPTX_AMSGRAD
    int fg_ploss_rowwise(int kind)
    int fg_pointwise_loss(double *loss_sum, float *dpred, const float *pred, const float *target,
                          const float *sample_weight, int64_t rows, int64_t cols, int kind, float param,
                          float grad_scale, int nthreads)
    ctypedef struct fg_optx_args:
        int kind
        int decoupled
        int64_t step
        float lr, beta1, beta2, rho, eps, weight_decay
        float lr_power, l1, l2, l2_shrinkage, beta
    int fg_optx_update(float *param, float *s1, float *s2, float *s3, const float *grad, int64_t n,
                       const fg_optx_args *args, int nthreads)

#: loss kind codes (the C enum), by NumpyOps' loss names
LOSS_KINDS = {"mean_absolute_error": FG_PLOSS_MAE, "mean_absolute_percentage_error": FG_PLOSS_MAPE,
              "mean_squared_logarithmic_error": FG_PLOSS_MSLE, "huber": FG_PLOSS_HUBER,
              "log_cosh": FG_PLOSS_LOGCOSH, "poisson": FG_PLOSS_POISSON, "hinge": FG_PLOSS_HINGE,
              "squared_hinge": FG_PLOSS_SQHINGE, "kl_divergence": FG_PLOSS_KLD,
              "categorical_hinge": FG_PLOSS_CATHINGE, "cosine_similarity": FG_PLOSS_COSINE}
#: optimizer kind codes
OPT_KINDS = {"nadam": FG_OPTX_NADAM, "adamax": FG_OPTX_ADAMAX, "adadelta": FG_OPTX_ADADELTA,
             "ftrl": FG_OPTX_FTRL, "lion": FG_OPTX_LION, "adam_amsgrad": FG_OPTX_AMSGRAD}


def rowwise(int kind):
    """True when the loss of `kind` is a row-wise sum (KLD, categorical hinge, cosine)."""
    return bool(fg_ploss_rowwise(kind))


cdef inline object _shp(cnp.ndarray a):
    return (<object>a).shape

cdef int _f32(cnp.ndarray a, str op, str name, bint writable=False) except -1:
    if cnp.PyArray_TYPE(a) != cnp.NPY_FLOAT32 or not cnp.PyArray_IS_C_CONTIGUOUS(a):
        raise TypeError(f"{op}: {name} must be a C-contiguous float32 array, got dtype={a.dtype}, "
                        f"shape={_shp(a)}")
    if writable and not cnp.PyArray_ISWRITEABLE(a):
        raise ValueError(f"{op}: {name} is read-only")
    return 0

cdef int _overlap(cnp.ndarray a, cnp.ndarray b, str op, str na, str nb) except -1:
    cdef char *a0 = <char *>cnp.PyArray_DATA(a)
    cdef char *b0 = <char *>cnp.PyArray_DATA(b)
    cdef char *a1 = a0 + cnp.PyArray_NBYTES(a)
    cdef char *b1 = b0 + cnp.PyArray_NBYTES(b)
    if a0 != a1 and b0 != b1 and a0 < b1 and b0 < a1:
        raise ValueError(f"{op}: {na} {_shp(a)} overlaps {nb} {_shp(b)}")
    return 0


def pointwise_loss(str op, int kind, cnp.ndarray pred not None, cnp.ndarray target not None, sample_weight,
                   dpred, int64_t rows, int64_t cols, float param, float grad_scale, int nthreads):
    """sum_i w_i v_i over (rows, cols) views of pred / target (see fg_lossopt.h); dpred (or None)
    receives grad_scale * w_i * d v_i / d pred."""
    _f32(pred, op, "pred"); _f32(target, op, "target")
    if cnp.PyArray_SIZE(pred) != rows * cols or cnp.PyArray_SIZE(target) != rows * cols:
        raise ValueError(f"{op}: pred {_shp(pred)} / target {_shp(target)} are not {rows} x {cols}")
    cdef const float *w = NULL
    cdef cnp.ndarray sw
    if sample_weight is not None:
        sw = <cnp.ndarray?>sample_weight
        _f32(sw, op, "sample_weight")
        if cnp.PyArray_SIZE(sw) != rows:
            raise ValueError(f"{op}: sample_weight {_shp(sw)} needs one weight per row ({rows} rows)")
        w = <const float *>cnp.PyArray_DATA(sw)
    cdef float *g = NULL
    cdef cnp.ndarray ga
    if dpred is not None:
        ga = <cnp.ndarray?>dpred
        _f32(ga, op, "dpred", True)
        if cnp.PyArray_SIZE(ga) != rows * cols:
            raise ValueError(f"{op}: dpred {_shp(ga)} is not {rows} x {cols}")
        _overlap(ga, target, op, "dpred", "target")
        _overlap(ga, pred, op, "dpred", "pred")
        g = <float *>cnp.PyArray_DATA(ga)
    cdef double loss = 0.0
    cdef const float *p = <const float *>cnp.PyArray_DATA(pred)
    cdef const float *t = <const float *>cnp.PyArray_DATA(target)
    cdef int st
    with nogil:
        st = fg_pointwise_loss(&loss, g, p, t, w, rows, cols, kind, param, grad_scale, nthreads)
    if st != FG_OK:
        check_status(st, op, f"pred {_shp(pred)}, kind={kind}, param={param}")
    return loss


def optx_update(str op, str kind, cnp.ndarray param not None, cnp.ndarray grad not None, slots,
                float lr, int64_t step, float weight_decay, bint decoupled, int nthreads, *,
                float beta1=0.9, float beta2=0.999, float rho=0.95, float eps=1e-7, float lr_power=-0.5,
                float l1=0.0, float l2=0.0, float l2_shrinkage=0.0, float beta=0.0):
    """One fused update of `kind` (OPT_KINDS) over flat param / grad; slots: a list of
    1-3 state arrays (s1, s2, s3 of fg_lossopt.h)."""
    cdef int code = OPT_KINDS[kind]
    _f32(param, op, "param", True); _f32(grad, op, "grad")
    cdef int64_t n = cnp.PyArray_SIZE(param)
    if cnp.PyArray_SIZE(grad) != n:
        raise ValueError(f"{op}: param {_shp(param)} and grad {_shp(grad)} differ in size")
    _overlap(param, grad, op, "param", "grad")
    cdef float *s[3]
    s[0] = NULL; s[1] = NULL; s[2] = NULL
    cdef cnp.ndarray a
    cdef int i
    for i, obj in enumerate(slots):
        if i >= 3:
            raise ValueError(f"{op}: at most 3 state arrays")
        a = <cnp.ndarray?>obj
        _f32(a, op, f"state {i}", True)
        if cnp.PyArray_SIZE(a) != n:
            raise ValueError(f"{op}: state {i} {_shp(a)} and param {_shp(param)} differ in size")
        _overlap(a, param, op, f"state {i}", "param")
        _overlap(a, grad, op, f"state {i}", "grad")
        s[i] = <float *>cnp.PyArray_DATA(a)
    if step < 1:
        raise ValueError(f"{op}: step must be >= 1 (got {step})")
    cdef fg_optx_args args
    memset(&args, 0, sizeof(args))
    args.kind = code; args.decoupled = 1 if decoupled else 0; args.step = step
    args.lr = lr; args.beta1 = beta1; args.beta2 = beta2; args.rho = rho; args.eps = eps
    args.weight_decay = weight_decay; args.lr_power = lr_power; args.l1 = l1; args.l2 = l2
    args.l2_shrinkage = l2_shrinkage; args.beta = beta
    cdef float *pp = <float *>cnp.PyArray_DATA(param)
    cdef const float *gp = <const float *>cnp.PyArray_DATA(grad)
    cdef int st
    with nogil:
        st = fg_optx_update(pp, s[0], s[1], s[2], gp, n, &args, nthreads)
    if st != FG_OK:
        check_status(st, op, f"param {_shp(param)}, lr={lr}, step={step}, slots={len(slots)}")
