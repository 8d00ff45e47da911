# cython: language_level=3
"""fastgrad._native.attn — thin bindings of csrc/attn (batched GEMM, fused
masked softmax, blocked attention).

Every *_op function answers NotImplemented when the C path does not apply
(a dtype other than float32, non-contiguous arrays, overlapping outputs) so
the mixin (backend/native_attn.py) falls back to NumPy, which also produces
the error messages; shapes are checked here before any C call."""

cimport numpy as cnp
from libc.stdint cimport int64_t, uint8_t, intptr_t

include "_common.pxi"

cnp.import_array()

import numpy as np

cdef extern from "attn/fg_attn.h" nogil:
    int fg_bmm(float *C, int64_t sc, int64_t ldc, const float *A, int64_t sa, int64_t lda,
               const float *B, int64_t sb, int64_t ldb, int64_t G, int64_t M, int64_t N, int64_t K,
               int trans_a, int trans_b, float alpha, float beta, int nthreads)
    int fg_attn_softmax_forward(float *P, const float *S, int64_t B, int64_t H, int64_t Tq,
                                int64_t Tk, float scale, const uint8_t *key_valid,
                                const uint8_t *query_valid, const uint8_t *mask, int causal,
                                int nthreads)
    int fg_attn_softmax_backward(float *dS, const float *dP, const float *P, int64_t rows,
                                 int64_t Tk, float scale, int nthreads)
    int fg_flash_forward(float *O, float *lse, const float *Q, const float *K, const float *V,
                         int64_t B, int64_t H, int64_t Tq, int64_t Tk, int64_t D, int64_t Dv,
                         float scale, const uint8_t *key_valid, const uint8_t *query_valid,
                         int causal, int nthreads)
    int fg_flash_backward(float *dQ, float *dK, float *dV, const float *dO, const float *Q,
                          const float *K, const float *V, const float *O, const float *lse,
                          int64_t B, int64_t H, int64_t Tq, int64_t Tk, int64_t D, int64_t Dv,
                          float scale, const uint8_t *key_valid, const uint8_t *query_valid,
                          int causal, int nthreads)


cdef inline bint _f32c(object a):
    return (isinstance(a, np.ndarray) and (<cnp.ndarray>a).dtype == np.float32
            and cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray>a))


cdef inline bint _w(object a):
    return _f32c(a) and cnp.PyArray_ISWRITEABLE(<cnp.ndarray>a)


cdef inline float *_fp(object a):
    return <float *>cnp.PyArray_DATA(<cnp.ndarray>a)


cdef object _u8(object m, tuple shape):
    """A C-contiguous uint8 0/1 copy of a mask (or None)."""
    if m is None:
        return None
    a = np.asarray(m)
    if a.shape != shape:
        return NotImplemented
    if a.dtype == np.uint8 and a.flags.c_contiguous:
        return a
    return np.ascontiguousarray(a != 0, dtype=np.uint8)


cdef inline const uint8_t *_up(object a):
    if a is None:
        return NULL
    return <const uint8_t *>cnp.PyArray_DATA(<cnp.ndarray>a)


cdef bint _shares(a, b):
    return a is not None and b is not None and np.shares_memory(a, b)


def bmm_op(a, b, out, bint trans_a, bint trans_b, float alpha, float beta, int nthreads):
    """out[g] = alpha op(a[g]) op(b[g]) + beta out[g]; NotImplemented when not float32 3-D
    C-contiguous, or out is None / overlaps."""
    if out is None or not (_f32c(a) and _f32c(b) and _w(out)):
        return NotImplemented
    if a.ndim != 3 or b.ndim != 3 or out.ndim != 3:
        return NotImplemented
    cdef int64_t G = a.shape[0]
    cdef int64_t M = a.shape[2] if trans_a else a.shape[1]
    cdef int64_t K = a.shape[1] if trans_a else a.shape[2]
    cdef int64_t K2 = b.shape[2] if trans_b else b.shape[1]
    cdef int64_t N = b.shape[1] if trans_b else b.shape[2]
    if b.shape[0] != G or K2 != K or out.shape != (G, M, N):
        return NotImplemented
    if _shares(out, a) or _shares(out, b):
        return NotImplemented
    cdef int64_t lda = a.shape[2] if a.shape[2] > 0 else 1
    cdef int64_t ldb = b.shape[2] if b.shape[2] > 0 else 1
    cdef int64_t ldc = N if N > 0 else 1
    cdef int64_t sa = a.shape[1] * a.shape[2], sb = b.shape[1] * b.shape[2], sc = M * N
    cdef float *pc = _fp(out)
    cdef const float *pa = _fp(a)
    cdef const float *pb = _fp(b)
    cdef int st
    with nogil:
        st = fg_bmm(pc, sc, ldc, pa, sa, lda, pb, sb, ldb, G, M, N, K, trans_a, trans_b, alpha,
                    beta, nthreads)
    check_status(st, "bmm", f"a {a.shape}, b {b.shape}, out {out.shape}")
    return out


def softmax_op(s, out, float scale, key_valid, query_valid, mask, bint causal, int nthreads):
    if not (_f32c(s) and _w(out)) or s.ndim != 4 or out.shape != s.shape:
        return NotImplemented
    if out is not s and _shares(out, s):
        return NotImplemented
    cdef int64_t B = s.shape[0], H = s.shape[1], Tq = s.shape[2], Tk = s.shape[3]
    kv = _u8(key_valid, (B, Tk))
    qv = _u8(query_valid, (B, Tq))
    if mask is not None and np.shape(mask) == (Tq, Tk):
        mask = np.broadcast_to(np.asarray(mask), (B, Tq, Tk))
    am = _u8(mask, (B, Tq, Tk))
    if kv is NotImplemented or qv is NotImplemented or am is NotImplemented:
        return NotImplemented
    cdef const uint8_t *pk = _up(kv)
    cdef const uint8_t *pq = _up(qv)
    cdef const uint8_t *pm = _up(am)
    cdef float *po = _fp(out)
    cdef const float *ps = _fp(s)
    cdef int st
    with nogil:
        st = fg_attn_softmax_forward(po, ps, B, H, Tq, Tk, scale, pk, pq, pm, causal, nthreads)
    check_status(st, "attention_softmax", f"scores {s.shape}")
    return out


def softmax_backward_op(dp, p, out, float scale, int nthreads):
    if not (_f32c(dp) and _f32c(p) and _w(out)) or dp.shape != p.shape or out.shape != p.shape \
            or dp.ndim < 1:
        return NotImplemented
    if _shares(out, p) or (out is not dp and _shares(out, dp)):
        return NotImplemented
    cdef int64_t Tk = p.shape[p.ndim - 1]
    cdef int64_t rows = p.size // Tk if Tk > 0 else 0
    cdef float *po = _fp(out)
    cdef const float *pdp = _fp(dp)
    cdef const float *pp = _fp(p)
    cdef int st
    with nogil:
        st = fg_attn_softmax_backward(po, pdp, pp, rows, Tk, scale, nthreads)
    check_status(st, "attention_softmax_backward", f"p {p.shape}")
    return out


cdef bint _qkv_ok(q, k, v):
    if not (_f32c(q) and _f32c(k) and _f32c(v)) or q.ndim != 4 or k.ndim != 4 or v.ndim != 4:
        return False
    return (k.shape[:2] == q.shape[:2] and v.shape[:3] == k.shape[:3] and k.shape[3] == q.shape[3])


def flash_forward_op(q, k, v, out, lse, float scale, key_valid, query_valid, bint causal,
                     int nthreads):
    if not _qkv_ok(q, k, v) or out is None or lse is None or not (_w(out) and _w(lse)):
        return NotImplemented
    cdef int64_t B = q.shape[0], H = q.shape[1], Tq = q.shape[2], D = q.shape[3]
    cdef int64_t Tk = k.shape[2], Dv = v.shape[3]
    if out.shape != (B, H, Tq, Dv) or lse.shape != (B, H, Tq):
        return NotImplemented
    for x in (q, k, v):
        if _shares(out, x) or _shares(lse, x):
            return NotImplemented
    kv = _u8(key_valid, (B, Tk))
    qv = _u8(query_valid, (B, Tq))
    if kv is NotImplemented or qv is NotImplemented:
        return NotImplemented
    cdef const uint8_t *pk = _up(kv)
    cdef const uint8_t *pq = _up(qv)
    cdef float *po = _fp(out)
    cdef float *pl = _fp(lse)
    cdef const float *Q = _fp(q)
    cdef const float *K = _fp(k)
    cdef const float *V = _fp(v)
    cdef int st
    with nogil:
        st = fg_flash_forward(po, pl, Q, K, V, B, H, Tq, Tk, D, Dv, scale, pk, pq, causal, nthreads)
    check_status(st, "flash_attention_forward", f"q {q.shape}, k {k.shape}, v {v.shape}")
    return out


def flash_backward_op(dout, q, k, v, out, lse, float scale, key_valid, query_valid, bint causal,
                      dq, dk, dv, int nthreads):
    if not _qkv_ok(q, k, v) or not (_f32c(dout) and _f32c(out) and _f32c(lse)):
        return NotImplemented
    if dq is None or dk is None or dv is None or not (_w(dq) and _w(dk) and _w(dv)):
        return NotImplemented
    cdef int64_t B = q.shape[0], H = q.shape[1], Tq = q.shape[2], D = q.shape[3]
    cdef int64_t Tk = k.shape[2], Dv = v.shape[3]
    if (dout.shape != (B, H, Tq, Dv) or out.shape != dout.shape or lse.shape != (B, H, Tq)
            or dq.shape != q.shape or dk.shape != k.shape or dv.shape != v.shape):
        return NotImplemented
    for o in (dq, dk, dv):
        for x in (q, k, v, dout, out, lse):
            if _shares(o, x):
                return NotImplemented
    if _shares(dq, dk) or _shares(dq, dv) or _shares(dk, dv):
        return NotImplemented
    kv = _u8(key_valid, (B, Tk))
    qv = _u8(query_valid, (B, Tq))
    if kv is NotImplemented or qv is NotImplemented:
        return NotImplemented
    cdef const uint8_t *pk = _up(kv)
    cdef const uint8_t *pq = _up(qv)
    cdef float *pdq = _fp(dq)
    cdef float *pdk = _fp(dk)
    cdef float *pdv = _fp(dv)
    cdef const float *pdo = _fp(dout)
    cdef const float *Q = _fp(q)
    cdef const float *K = _fp(k)
    cdef const float *V = _fp(v)
    cdef const float *O = _fp(out)
    cdef const float *L = _fp(lse)
    cdef int st
    with nogil:
        st = fg_flash_backward(pdq, pdk, pdv, pdo, Q, K, V, O, L, B, H, Tq, Tk, D, Dv, scale, pk,
                               pq, causal, nthreads)
    check_status(st, "flash_attention_backward", f"q {q.shape}, k {k.shape}, v {v.shape}")
    return dq, dk, dv
