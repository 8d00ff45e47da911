# cython: language_level=3
"""fastgrad._native.rnn — thin bindings of csrc/rnn (fg_rnn.h).

Each wrapper checks dtypes, contiguity and shapes against (n, T, u), releases
the GIL, runs the whole sequence in one C call and turns the status into an
exception. Buffers (outputs and scratch) come from the caller
(fastgrad.backend.native_rnn)."""

include "_common.pxi"

cimport numpy as cnp
from libc.stdint cimport int64_t, uint8_t

cnp.import_array()

cdef extern from "rnn/fg_rnn.h" nogil:
    int64_t fg_rnn_scratch(int cell, int64_t n, int64_t T, int64_t u)
    int fg_simple_rnn_forward(float *hs, const float *xw, const float *rk, const float *h0, const uint8_t *mask,
                              const float *rmask, int64_t n, int64_t T, int64_t u, int reverse, int act,
                              float *scratch, int nthreads)
    int fg_simple_rnn_backward(float *dxw, float *drk, float *dh0, const float *dhs, const float *dhT,
                               const float *rk, const float *h0, const float *hs, const uint8_t *mask,
                               const float *rmask, int64_t n, int64_t T, int64_t u, int reverse, int act,
                               float *scratch, int nthreads)
    int fg_lstm_forward(float *hs, float *cs, float *gates, const float *xw, const float *rk, const float *h0,
                        const float *c0, const uint8_t *mask, const float *rmask, int64_t n, int64_t T, int64_t u,
                        int reverse, int act, int rec_act, float *scratch, int nthreads)
    int fg_lstm_backward(float *dxw, float *drk, float *dh0, float *dc0, const float *dhs, const float *dhT,
                         const float *dcT, const float *rk, const float *h0, const float *c0, const float *hs,
                         const float *cs, const float *gates, const uint8_t *mask, const float *rmask, int64_t n,
                         int64_t T, int64_t u, int reverse, int act, int rec_act, float *scratch, int nthreads)
    int fg_gru_forward(float *hs, float *gates, const float *xw, const float *rk, const float *brec,
                       const float *h0, const uint8_t *mask, const float *rmask, int64_t n, int64_t T, int64_t u,
                       int reverse, int act, int rec_act, float *scratch, int nthreads)
    int fg_embedding_backward(float *dtable, const int64_t *ids, const float *dy, int64_t npos, int64_t V,
                              int64_t D)
    int fg_gru_backward(float *dxw, float *drk, float *dbrec, float *dh0, const float *dhs, const float *dhT,
                        const float *rk, const float *h0, const float *hs, const float *gates,
                        const uint8_t *mask, const float *rmask, int64_t n, int64_t T, int64_t u, int reverse,
                        int act, int rec_act, float *scratch, int nthreads)


cdef float *_f(object a, str op, str name, tuple shape, bint optional=False) except? NULL:
    """Data pointer of a C-contiguous float32 array of `shape` (NULL for None when optional)."""
    if a is None:
        if optional:
            return NULL
        raise ValueError(f"{op}: {name} is required")
    cdef cnp.ndarray arr = <cnp.ndarray?>a
    if cnp.PyArray_TYPE(arr) != cnp.NPY_FLOAT32 or not cnp.PyArray_IS_C_CONTIGUOUS(arr):
        raise TypeError(f"{op}: {name} must be a C-contiguous float32 array, got dtype={a.dtype}")
    if tuple(a.shape) != shape:
        raise ValueError(f"{op}: {name} has shape {tuple(a.shape)}, expected {shape}")
    return <float *>cnp.PyArray_DATA(arr)


cdef const uint8_t *_m(object a, str op, tuple shape) except? NULL:
    if a is None:
        return NULL
    cdef cnp.ndarray arr = <cnp.ndarray?>a
    if cnp.PyArray_TYPE(arr) != cnp.NPY_UINT8 or not cnp.PyArray_IS_C_CONTIGUOUS(arr):
        raise TypeError(f"{op}: mask must be a C-contiguous uint8 array")
    if tuple(a.shape) != shape:
        raise ValueError(f"{op}: mask has shape {tuple(a.shape)}, expected {shape}")
    return <const uint8_t *>cnp.PyArray_DATA(arr)


def scratch_size(int cell, int64_t n, int64_t T, int64_t u):
    """Floats of scratch the forward / backward of `cell` (1, 3, 4 gates) need."""
    return fg_rnn_scratch(cell, n, T, u)


def simple_rnn_forward(hs, xw, rk, h0, mask, bint reverse, rmask, int act, scratch, int nthreads):
    op = "simple_rnn_forward"
    cdef int64_t n = hs.shape[0], T = hs.shape[1], u = hs.shape[2]
    cdef float *p_hs = _f(hs, op, "hs", (n, T, u))
    cdef const float *p_xw = _f(xw, op, "xw", (n, T, u))
    cdef const float *p_rk = _f(rk, op, "recurrent_kernel", (u, u))
    cdef const float *p_h0 = _f(h0, op, "h0", (n, u))
    cdef const uint8_t *p_m = _m(mask, op, (n, T))
    cdef const float *p_rm = _f(rmask, op, "rmask", (n, u), True)
    cdef float *p_s = _f(scratch, op, "scratch", (fg_rnn_scratch(1, n, T, u),))
    cdef int st
    with nogil:
        st = fg_simple_rnn_forward(p_hs, p_xw, p_rk, p_h0, p_m, p_rm, n, T, u, reverse, act, p_s, nthreads)
    check_status(st, op, f"n={n}, T={T}, units={u}")


def simple_rnn_backward(dxw, drk, dh0, dhs, dhT, rk, h0, hs, mask, bint reverse, rmask, int act, scratch,
                        int nthreads):
    op = "simple_rnn_backward"
    cdef int64_t n = hs.shape[0], T = hs.shape[1], u = hs.shape[2]
    cdef float *p_dxw = _f(dxw, op, "dxw", (n, T, u))
    cdef float *p_drk = _f(drk, op, "drk", (u, u))
    cdef float *p_dh0 = _f(dh0, op, "dh0", (n, u))
    cdef const float *p_dhs = _f(dhs, op, "dhs", (n, T, u))
    cdef const float *p_dhT = _f(dhT, op, "dhT", (n, u), True)
    cdef const float *p_rk = _f(rk, op, "recurrent_kernel", (u, u))
    cdef const float *p_h0 = _f(h0, op, "h0", (n, u))
    cdef const float *p_hs = _f(hs, op, "hs", (n, T, u))
    cdef const uint8_t *p_m = _m(mask, op, (n, T))
    cdef const float *p_rm = _f(rmask, op, "rmask", (n, u), True)
    cdef float *p_s = _f(scratch, op, "scratch", (fg_rnn_scratch(1, n, T, u),))
    cdef int st
    with nogil:
        st = fg_simple_rnn_backward(p_dxw, p_drk, p_dh0, p_dhs, p_dhT, p_rk, p_h0, p_hs, p_m, p_rm, n, T, u,
                                    reverse, act, p_s, nthreads)
    check_status(st, op, f"n={n}, T={T}, units={u}")


def lstm_forward(hs, cs, gates, xw, rk, h0, c0, mask, bint reverse, rmask, int act, int rec_act, scratch,
                 int nthreads):
    op = "lstm_forward"
    cdef int64_t n = hs.shape[0], T = hs.shape[1], u = hs.shape[2]
    cdef float *p_hs = _f(hs, op, "hs", (n, T, u))
    cdef float *p_cs = _f(cs, op, "cs", (n, T, u))
    cdef float *p_g = _f(gates, op, "gates", (n, T, 4 * u))
    cdef const float *p_xw = _f(xw, op, "xw", (n, T, 4 * u))
    cdef const float *p_rk = _f(rk, op, "recurrent_kernel", (u, 4 * u))
    cdef const float *p_h0 = _f(h0, op, "h0", (n, u))
    cdef const float *p_c0 = _f(c0, op, "c0", (n, u))
    cdef const uint8_t *p_m = _m(mask, op, (n, T))
    cdef const float *p_rm = _f(rmask, op, "rmask", (n, u), True)
    cdef float *p_s = _f(scratch, op, "scratch", (fg_rnn_scratch(4, n, T, u),))
    cdef int st
    with nogil:
        st = fg_lstm_forward(p_hs, p_cs, p_g, p_xw, p_rk, p_h0, p_c0, p_m, p_rm, n, T, u, reverse, act, rec_act,
                             p_s, nthreads)
    check_status(st, op, f"n={n}, T={T}, units={u}")


def lstm_backward(dxw, drk, dh0, dc0, dhs, dhT, dcT, rk, h0, c0, hs, cs, gates, mask, bint reverse, rmask,
                  int act, int rec_act, scratch, int nthreads):
    op = "lstm_backward"
    cdef int64_t n = hs.shape[0], T = hs.shape[1], u = hs.shape[2]
    cdef float *p_dxw = _f(dxw, op, "dxw", (n, T, 4 * u))
    cdef float *p_drk = _f(drk, op, "drk", (u, 4 * u))
    cdef float *p_dh0 = _f(dh0, op, "dh0", (n, u))
    cdef float *p_dc0 = _f(dc0, op, "dc0", (n, u))
    cdef const float *p_dhs = _f(dhs, op, "dhs", (n, T, u))
    cdef const float *p_dhT = _f(dhT, op, "dhT", (n, u), True)
    cdef const float *p_dcT = _f(dcT, op, "dcT", (n, u), True)
    cdef const float *p_rk = _f(rk, op, "recurrent_kernel", (u, 4 * u))
    cdef const float *p_h0 = _f(h0, op, "h0", (n, u))
    cdef const float *p_c0 = _f(c0, op, "c0", (n, u))
    cdef const float *p_hs = _f(hs, op, "hs", (n, T, u))
    cdef const float *p_cs = _f(cs, op, "cs", (n, T, u))
    cdef const float *p_g = _f(gates, op, "gates", (n, T, 4 * u))
    cdef const uint8_t *p_m = _m(mask, op, (n, T))
    cdef const float *p_rm = _f(rmask, op, "rmask", (n, u), True)
    cdef float *p_s = _f(scratch, op, "scratch", (fg_rnn_scratch(4, n, T, u),))
    cdef int st
    with nogil:
        st = fg_lstm_backward(p_dxw, p_drk, p_dh0, p_dc0, p_dhs, p_dhT, p_dcT, p_rk, p_h0, p_c0, p_hs, p_cs,
                              p_g, p_m, p_rm, n, T, u, reverse, act, rec_act, p_s, nthreads)
    check_status(st, op, f"n={n}, T={T}, units={u}")


def gru_forward(hs, gates, xw, rk, brec, h0, mask, bint reverse, rmask, int act, int rec_act, scratch,
                int nthreads):
    op = "gru_forward"
    cdef int64_t n = hs.shape[0], T = hs.shape[1], u = hs.shape[2]
    cdef float *p_hs = _f(hs, op, "hs", (n, T, u))
    cdef float *p_g = _f(gates, op, "gates", (n, T, 4 * u))
    cdef const float *p_xw = _f(xw, op, "xw", (n, T, 3 * u))
    cdef const float *p_rk = _f(rk, op, "recurrent_kernel", (u, 3 * u))
    cdef const float *p_b = _f(brec, op, "recurrent bias", (3 * u,), True)
    cdef const float *p_h0 = _f(h0, op, "h0", (n, u))
    cdef const uint8_t *p_m = _m(mask, op, (n, T))
    cdef const float *p_rm = _f(rmask, op, "rmask", (n, u), True)
    cdef float *p_s = _f(scratch, op, "scratch", (fg_rnn_scratch(3, n, T, u),))
    cdef int st
    with nogil:
        st = fg_gru_forward(p_hs, p_g, p_xw, p_rk, p_b, p_h0, p_m, p_rm, n, T, u, reverse, act, rec_act, p_s,
                            nthreads)
    check_status(st, op, f"n={n}, T={T}, units={u}")


def gru_backward(dxw, drk, dbrec, dh0, dhs, dhT, rk, h0, hs, gates, mask, bint reverse, rmask, int act,
                 int rec_act, scratch, int nthreads):
    op = "gru_backward"
    cdef int64_t n = hs.shape[0], T = hs.shape[1], u = hs.shape[2]
    cdef float *p_dxw = _f(dxw, op, "dxw", (n, T, 3 * u))
    cdef float *p_drk = _f(drk, op, "drk", (u, 3 * u))
    cdef float *p_db = _f(dbrec, op, "dbrec", (3 * u,), True)
    cdef float *p_dh0 = _f(dh0, op, "dh0", (n, u))
    cdef const float *p_dhs = _f(dhs, op, "dhs", (n, T, u))
    cdef const float *p_dhT = _f(dhT, op, "dhT", (n, u), True)
    cdef const float *p_rk = _f(rk, op, "recurrent_kernel", (u, 3 * u))
    cdef const float *p_h0 = _f(h0, op, "h0", (n, u))
    cdef const float *p_hs = _f(hs, op, "hs", (n, T, u))
    cdef const float *p_g = _f(gates, op, "gates", (n, T, 4 * u))
    cdef const uint8_t *p_m = _m(mask, op, (n, T))
    cdef const float *p_rm = _f(rmask, op, "rmask", (n, u), True)
    cdef float *p_s = _f(scratch, op, "scratch", (fg_rnn_scratch(3, n, T, u),))
    cdef int st
    with nogil:
        st = fg_gru_backward(p_dxw, p_drk, p_db, p_dh0, p_dhs, p_dhT, p_rk, p_h0, p_hs, p_g, p_m, p_rm, n, T, u,
                             reverse, act, rec_act, p_s, nthreads)
    check_status(st, op, f"n={n}, T={T}, units={u}")


def embedding_backward(dtable, ids, dy):
    """dtable = 0; dtable[ids[p]] += dy[p] in order (ids int64 C-contiguous, any shape)."""
    op = "embedding_backward"
    cdef int64_t V = dtable.shape[0], D = dtable.shape[1]
    cdef int64_t npos = ids.size
    cdef float *p_t = _f(dtable, op, "dtable", (V, D))
    cdef const float *p_dy = _f(dy, op, "dy", tuple(ids.shape) + (D,))
    cdef cnp.ndarray ia = <cnp.ndarray?>ids
    if cnp.PyArray_TYPE(ia) != cnp.NPY_INT64 or not cnp.PyArray_IS_C_CONTIGUOUS(ia):
        raise TypeError(f"{op}: ids must be a C-contiguous int64 array")
    cdef const int64_t *p_i = <const int64_t *>cnp.PyArray_DATA(ia)
    cdef int st
    with nogil:
        st = fg_embedding_backward(p_t, p_i, p_dy, npos, V, D)
    check_status(st, op, f"ids outside [0, {V})" if st != 0 else "")
