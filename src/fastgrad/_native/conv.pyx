# cython: language_level=3
"""fastgrad._native.conv — thin bindings of csrc/conv (implicit-GEMM
convolution, depthwise convolution, pooling).

Every array is float32 and C-contiguous with exactly the number of elements
the shape tuple implies (the mixin, backend/native_conv.py, hands over only
such arrays and computes the shapes). The shape tuple is
(n, h, w, c, kh, kw, f, oh, ow, sh, sw, dh, dw, pt, pl, groups).
Each wrapper releases the GIL for the C call and turns its status into an
exception naming the op and the shape.
"""

cimport numpy as cnp
from libc.stdint cimport int64_t

include "_common.pxi"
include "_act.pxi"

cnp.import_array()

cdef extern from "conv/fg_conv.h" nogil:
    ctypedef struct fg_conv_shape:
        int64_t n, h, w, c
        int64_t kh, kw, f
        int64_t oh, ow
        int64_t sh, sw
        int64_t dh, dw
        int64_t pt, pl
        int64_t groups
    int fg_conv2d_check(const fg_conv_shape *s)
    int fg_conv2d_forward(float *y, float *z, const float *x, const float *w, const float *b,
                          const fg_conv_shape *s, int act, int nthreads)
    int fg_conv2d_backward_data(float *dx, const float *dz, const float *w, const fg_conv_shape *s, int nthreads)
    int fg_conv2d_backward_filter(float *dw, const float *dz, const float *x, const fg_conv_shape *s, int nthreads)
    int fg_depthwise2d_forward(float *y, float *z, const float *x, const float *w, const float *b,
                               const fg_conv_shape *s, int act, int nthreads)
    int fg_depthwise2d_backward_data(float *dx, const float *dz, const float *w, const fg_conv_shape *s,
                                     int nthreads)
    int fg_depthwise2d_backward_filter(float *dw, const float *dz, const float *x, const fg_conv_shape *s,
                                       int nthreads)
    int fg_maxpool2d_forward(float *y, const float *x, const fg_conv_shape *s, int nthreads)
    int fg_maxpool2d_backward(float *dx, const float *dy, const float *x, const float *y,
                              const fg_conv_shape *s, int nthreads)
    int fg_avgpool2d_forward(float *y, const float *x, const fg_conv_shape *s, int nthreads)
    int fg_avgpool2d_backward(float *dx, const float *dy, const fg_conv_shape *s, int nthreads)
    int fg_global_avgpool_forward(float *y, const float *x, int64_t n, int64_t l, int64_t c, int nthreads)
    int fg_global_avgpool_backward(float *dx, const float *dy, int64_t n, int64_t l, int64_t c, int nthreads)
    int fg_global_maxpool_forward(float *y, const float *x, int64_t n, int64_t l, int64_t c, int nthreads)
    int fg_global_maxpool_backward(float *dx, const float *dy, const float *x, const float *y, int64_t n,
                                   int64_t l, int64_t c, int nthreads)


cdef float *_f32(str op, str name, object a, int64_t size, bint writeable, bint optional=False) except? NULL:
    """Data pointer of a float32 C-contiguous array of `size` elements (None -> NULL when optional)."""
    if a is None:
        if optional:
            return NULL
        raise ValueError(f"{op}: {name} is required")
    if not cnp.PyArray_Check(a):
        raise TypeError(f"{op}: {name} must be a numpy.ndarray, got {type(a).__name__}")
    cdef cnp.ndarray x = <cnp.ndarray>a
    if cnp.PyArray_TYPE(x) != cnp.NPY_FLOAT32 or not cnp.PyArray_IS_C_CONTIGUOUS(x):
        raise ValueError(f"{op}: {name} must be a float32 C-contiguous array")
    if cnp.PyArray_SIZE(x) != size:
        raise ValueError(f"{op}: {name} has {cnp.PyArray_SIZE(x)} elements (shape {a.shape}), expected {size}")
    if writeable and not cnp.PyArray_ISWRITEABLE(x):
        raise ValueError(f"{op}: {name} is read-only")
    return <float *>cnp.PyArray_DATA(x)


cdef int _shape(fg_conv_shape *s, object t, str op) except -1:
    if len(t) != 16:
        raise ValueError(f"{op}: shape tuple needs 16 entries, got {len(t)}")
    s.n, s.h, s.w, s.c, s.kh, s.kw, s.f, s.oh, s.ow, s.sh, s.sw, s.dh, s.dw, s.pt, s.pl, s.groups = \
        [int(v) for v in t]
    if fg_conv2d_check(s) != FG_OK:
        raise ValueError(f"{op}: inconsistent convolution shape {tuple(t)} "
                         "(n, h, w, c, kh, kw, f, oh, ow, sh, sw, dh, dw, pt, pl, groups)")
    return 0


def check_shape(tuple t):
    """True if fg_conv2d_check accepts the shape tuple."""
    cdef fg_conv_shape s
    s.n, s.h, s.w, s.c, s.kh, s.kw, s.f, s.oh, s.ow, s.sh, s.sw, s.dh, s.dw, s.pt, s.pl, s.groups = \
        [int(v) for v in t]
    return fg_conv2d_check(&s) == FG_OK


def conv2d_forward(y, z, x, w, b, tuple shape, int act, int nthreads, bint depthwise=False):
    """y = act(conv(x, w) + b); z (or None) = conv + b."""
    cdef fg_conv_shape s
    op = "depthwise_conv2d_forward" if depthwise else "conv2d_forward"
    _shape(&s, shape, op)
    cdef float *py = _f32(op, "out", y, s.n * s.oh * s.ow * s.f, True)
    cdef float *pz = _f32(op, "preact", z, s.n * s.oh * s.ow * s.f, True, True)
    cdef float *px = _f32(op, "x", x, s.n * s.h * s.w * s.c, False)
    cdef float *pw = _f32(op, "w", w, s.kh * s.kw * (s.c // s.groups) * s.f, False)
    cdef float *pb = _f32(op, "b", b, s.f, False, True)
    cdef int st
    with nogil:
        if depthwise:
            st = fg_depthwise2d_forward(py, pz, px, pw, pb, &s, act, nthreads)
        else:
            st = fg_conv2d_forward(py, pz, px, pw, pb, &s, act, nthreads)
    check_status(st, op, f"shape {shape}, activation code {act}")
    return y


def conv2d_backward_data(dx, dz, w, tuple shape, int nthreads, bint depthwise=False):
    cdef fg_conv_shape s
    op = "depthwise_conv2d_backward" if depthwise else "conv2d_backward"
    _shape(&s, shape, op)
    cdef float *pdx = _f32(op, "dx", dx, s.n * s.h * s.w * s.c, True)
    cdef float *pdz = _f32(op, "dz", dz, s.n * s.oh * s.ow * s.f, False)
    cdef float *pw = _f32(op, "w", w, s.kh * s.kw * (s.c // s.groups) * s.f, False)
    cdef int st
    with nogil:
        if depthwise:
            st = fg_depthwise2d_backward_data(pdx, pdz, pw, &s, nthreads)
        else:
            st = fg_conv2d_backward_data(pdx, pdz, pw, &s, nthreads)
    check_status(st, op, f"shape {shape}")
    return dx


def conv2d_backward_filter(dw, dz, x, tuple shape, int nthreads, bint depthwise=False):
    cdef fg_conv_shape s
    op = "depthwise_conv2d_backward" if depthwise else "conv2d_backward"
    _shape(&s, shape, op)
    cdef float *pdw = _f32(op, "dw", dw, s.kh * s.kw * (s.c // s.groups) * s.f, True)
    cdef float *pdz = _f32(op, "dz", dz, s.n * s.oh * s.ow * s.f, False)
    cdef float *px = _f32(op, "x", x, s.n * s.h * s.w * s.c, False)
    cdef int st
    with nogil:
        if depthwise:
            st = fg_depthwise2d_backward_filter(pdw, pdz, px, &s, nthreads)
        else:
            st = fg_conv2d_backward_filter(pdw, pdz, px, &s, nthreads)
    check_status(st, op, f"shape {shape}")
    return dw


def pool2d_forward(y, x, tuple shape, bint is_max, int nthreads):
    cdef fg_conv_shape s
    op = "max_pool2d_forward" if is_max else "avg_pool2d_forward"
    _shape(&s, shape, op)
    cdef float *py = _f32(op, "out", y, s.n * s.oh * s.ow * s.c, True)
    cdef float *px = _f32(op, "x", x, s.n * s.h * s.w * s.c, False)
    cdef int st
    with nogil:
        if is_max:
            st = fg_maxpool2d_forward(py, px, &s, nthreads)
        else:
            st = fg_avgpool2d_forward(py, px, &s, nthreads)
    check_status(st, op, f"shape {shape}")
    return y


def pool2d_backward(dx, dy, x, y, tuple shape, bint is_max, int nthreads):
    cdef fg_conv_shape s
    op = "max_pool2d_backward" if is_max else "avg_pool2d_backward"
    _shape(&s, shape, op)
    cdef float *pdx = _f32(op, "dx", dx, s.n * s.h * s.w * s.c, True)
    cdef float *pdy = _f32(op, "dy", dy, s.n * s.oh * s.ow * s.c, False)
    cdef float *px = _f32(op, "x", x, s.n * s.h * s.w * s.c, False, not is_max)
    cdef float *py = _f32(op, "y", y, s.n * s.oh * s.ow * s.c, False, not is_max)
    cdef int st
    with nogil:
        if is_max:
            st = fg_maxpool2d_backward(pdx, pdy, px, py, &s, nthreads)
        else:
            st = fg_avgpool2d_backward(pdx, pdy, &s, nthreads)
    check_status(st, op, f"shape {shape}")
    return dx


def global_pool_forward(y, x, int64_t n, int64_t l, int64_t c, bint is_max, int nthreads):
    op = "global_max_pool_forward" if is_max else "global_avg_pool_forward"
    cdef float *py = _f32(op, "out", y, n * c, True)
    cdef float *px = _f32(op, "x", x, n * l * c, False)
    cdef int st
    with nogil:
        if is_max:
            st = fg_global_maxpool_forward(py, px, n, l, c, nthreads)
        else:
            st = fg_global_avgpool_forward(py, px, n, l, c, nthreads)
    check_status(st, op, f"n={n}, l={l}, c={c}")
    return y


def global_pool_backward(dx, dy, x, y, int64_t n, int64_t l, int64_t c, bint is_max, int nthreads):
    op = "global_max_pool_backward" if is_max else "global_avg_pool_backward"
    cdef float *pdx = _f32(op, "dx", dx, n * l * c, True)
    cdef float *pdy = _f32(op, "dy", dy, n * c, False)
    cdef float *px = _f32(op, "x", x, n * l * c, False, not is_max)
    cdef float *py = _f32(op, "y", y, n * c, False, not is_max)
    cdef int st
    with nogil:
        if is_max:
            st = fg_global_maxpool_backward(pdx, pdy, px, py, n, l, c, nthreads)
        else:
            st = fg_global_avgpool_backward(pdx, pdy, n, l, c, nthreads)
    check_status(st, op, f"n={n}, l={l}, c={c}")
    return dx
