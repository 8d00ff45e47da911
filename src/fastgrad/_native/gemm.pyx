# cython: language_level=3
"""fastgrad._native.gemm — thin bindings of csrc/gemm (packed SGEMM and the
fused dense forward).

Each wrapper checks what the C code assumes — float32, 2-D, unit stride in
the last axis (a leading-dimension view such as ``big[:, 3:10]`` is fine),
compatible shapes, a writeable output that does not overlap an input — then
releases the GIL for the C call and turns its status into an exception.
Arguments tagged IN are read, OUT written (the caller allocates them).
"""

cimport numpy as cnp
from libc.stdint cimport int64_t, intptr_t

include "_common.pxi"
include "_act.pxi"

cnp.import_array()

cdef extern from "gemm/fg_gemm.h" nogil:
    int fg_gemm(float *C, int64_t ldc, const float *A, int64_t lda, const float *B, int64_t ldb,
                int64_t M, int64_t N, int64_t K, int trans_a, int trans_b, float alpha, float beta,
                int nthreads)
    int fg_dense_forward(float *Y, int64_t ldy, float *Z, int64_t ldz, const float *X, int64_t ldx,
                         const float *W, int64_t ldw, const float *b, int64_t M, int64_t N, int64_t K,
                         int act, int nthreads)
    void fg_gemm_tile(int *mr, int *nr, int *mc, int *kc, int *nc)
    double fg_gemm_peak_gflops(int nthreads)
    ctypedef struct fg_gemm_packed:
        pass
    int fg_gemm_packb(fg_gemm_packed **out, const float *B, int64_t ldb, int64_t N, int64_t K, int trans_b,
                      int nthreads)
    void fg_gemm_packed_free(fg_gemm_packed *pk)
    int fg_gemm_prepacked(float *C, int64_t ldc, const float *A, int64_t lda, int trans_a,
                          const fg_gemm_packed *B, int64_t M, float alpha, float beta, int nthreads)
    int fg_dense_forward_prepacked(float *Y, int64_t ldy, float *Z, int64_t ldz, const float *X, int64_t ldx,
                                   const fg_gemm_packed *W, const float *b, int64_t M, int act, int nthreads)
    void fg_gemm_set_share(int mode)

cdef extern from "gemm/gemm_internal.h" nogil:
    int fg_gemm_path(float *C, int64_t ldc, const float *A, int64_t lda, const float *B, int64_t ldb,
                     int64_t M, int64_t N, int64_t K, int trans_a, int trans_b, float alpha, float beta,
                     int nthreads, int path)



cdef inline str _shape(cnp.ndarray x):
    return str(tuple(x.shape[i] for i in range(x.ndim)))


cdef int64_t _ld(str op, str name, object obj, bint writeable) except -1:
    """Leading dimension (floats) of a float32 matrix view with unit stride in
    its last axis; raises TypeError/ValueError naming the op otherwise."""
    if not cnp.PyArray_Check(obj):
        raise TypeError(f"{op}: {name} must be a numpy.ndarray, got {type(obj).__name__}")
    cdef cnp.ndarray x = <cnp.ndarray>obj
    if cnp.PyArray_TYPE(x) != cnp.NPY_FLOAT32:
        raise TypeError(f"{op}: {name} must be float32, got {(<object>x).dtype}")
    if cnp.PyArray_NDIM(x) != 2:
        raise ValueError(f"{op}: {name} must be 2-D, got shape {_shape(x)}")
    if writeable and not cnp.PyArray_ISWRITEABLE(x):
        raise ValueError(f"{op}: {name} is read-only")
    cdef cnp.npy_intp rows = cnp.PyArray_DIM(x, 0), cols = cnp.PyArray_DIM(x, 1)
    cdef cnp.npy_intp s0 = cnp.PyArray_STRIDE(x, 0), s1 = cnp.PyArray_STRIDE(x, 1)
    if rows == 0 or cols == 0:
        return cols if cols > 0 else 1  # empty: never addressed
    if (<intptr_t>cnp.PyArray_DATA(x)) % 4 != 0:
        raise ValueError(f"{op}: {name} is not 4-byte aligned")
    if cols > 1 and s1 != 4:
        raise ValueError(f"{op}: {name} {_shape(x)} needs unit stride in its last axis "
                         f"(got strides {(<object>x).strides}); pass a C-contiguous array or a row view")
    if rows <= 1:
        return cols if cols > 0 else 1
    if s0 % 4 != 0 or s0 < cols * 4:
        raise ValueError(f"{op}: {name} {_shape(x)} has row stride {s0} bytes; need a multiple "
                         f"of 4 and at least {cols * 4}")
    return s0 // 4


cdef inline bint _overlap(cnp.ndarray a, int64_t lda, cnp.ndarray b, int64_t ldb):
    """Do the memory extents of two matrix views intersect?"""
    cdef cnp.npy_intp ra = cnp.PyArray_DIM(a, 0), ca = cnp.PyArray_DIM(a, 1)
    cdef cnp.npy_intp rb = cnp.PyArray_DIM(b, 0), cb = cnp.PyArray_DIM(b, 1)
    if ra == 0 or ca == 0 or rb == 0 or cb == 0:
        return False
    cdef intptr_t a0 = <intptr_t>cnp.PyArray_DATA(a)
    cdef intptr_t b0 = <intptr_t>cnp.PyArray_DATA(b)
    cdef intptr_t a1 = a0 + ((ra - 1) * lda + ca) * 4
    cdef intptr_t b1 = b0 + ((rb - 1) * ldb + cb) * 4
    return a0 < b1 and b0 < a1


def gemm(a, b, out, bint trans_a=False, bint trans_b=False, float alpha=1.0, float beta=0.0,
         int nthreads=1, int _path=0):
    """out = alpha * op(a) @ op(b) + beta * out   (IN a, b; INOUT out)

    op(x) is x.T when the trans flag is set. With beta == 0, out is not read.
    `_path` is a test hook: 0 chooses by shape, 1 forces the packed driver,
    2 the unpacked one. Returns out."""
    cdef int64_t lda = _ld("gemm", "a", a, False)
    cdef int64_t ldb = _ld("gemm", "b", b, False)
    cdef int64_t ldc = _ld("gemm", "out", out, True)
    cdef cnp.ndarray A = <cnp.ndarray>a, B = <cnp.ndarray>b, C = <cnp.ndarray>out
    cdef int64_t M, K, K2, N
    if trans_a:
        K = cnp.PyArray_DIM(A, 0); M = cnp.PyArray_DIM(A, 1)
    else:
        M = cnp.PyArray_DIM(A, 0); K = cnp.PyArray_DIM(A, 1)
    if trans_b:
        N = cnp.PyArray_DIM(B, 0); K2 = cnp.PyArray_DIM(B, 1)
    else:
        K2 = cnp.PyArray_DIM(B, 0); N = cnp.PyArray_DIM(B, 1)
    if K != K2 or cnp.PyArray_DIM(C, 0) != M or cnp.PyArray_DIM(C, 1) != N:
        raise ValueError(
            f"gemm: shapes do not match: op(a) is {(M, K)} (a {_shape(A)}, trans_a={bool(trans_a)}), "
            f"op(b) is {(K2, N)} (b {_shape(B)}, trans_b={bool(trans_b)}), out is {_shape(C)}; "
            f"need op(a) (M, K) @ op(b) (K, N) -> out (M, N)")
    if _overlap(C, ldc, A, lda) or _overlap(C, ldc, B, ldb):
        raise ValueError(f"gemm: out {_shape(C)} overlaps an input (a {_shape(A)}, b {_shape(B)}); "
                         "pass a separate output array")
    cdef float *pc = <float *>cnp.PyArray_DATA(C)
    cdef const float *pa = <const float *>cnp.PyArray_DATA(A)
    cdef const float *pb = <const float *>cnp.PyArray_DATA(B)
    cdef int status
    with nogil:
        status = fg_gemm_path(pc, ldc, pa, lda, pb, ldb, M, N, K, trans_a, trans_b, alpha, beta,
                              nthreads, _path)
    if status != FG_OK:
        check_status(status, "gemm", f"op(a) {(M, K)}, op(b) {(K, N)}, out {_shape(C)}")
    return out


def dense_forward(x, w, b, int act, out, preact=None, int nthreads=1):
    """out = act(x @ w + b); preact (if given) = x @ w + b   (IN x, w, b; OUT out, preact)

    x: (M, K), w: (K, N) (Keras layout: in x out), b: (N,) float32 or None,
    act: an FG_ACT_* code (see ACTIVATIONS). Returns out."""
    cdef int64_t ldx = _ld("dense_forward", "x", x, False)
    cdef int64_t ldw = _ld("dense_forward", "w", w, False)
    cdef int64_t ldy = _ld("dense_forward", "out", out, True)
    cdef int64_t ldz = 0
    cdef cnp.ndarray X = <cnp.ndarray>x, W = <cnp.ndarray>w, Y = <cnp.ndarray>out
    cdef cnp.ndarray Z = None, Bv = None
    cdef int64_t M = cnp.PyArray_DIM(X, 0), K = cnp.PyArray_DIM(X, 1), N = cnp.PyArray_DIM(W, 1)
    if not fg_act_valid(act):
        raise ValueError(f"dense_forward: unknown activation code {act}; expected 0..{FG_ACT_COUNT - 1} "
                         f"{ACTIVATIONS}")
    if cnp.PyArray_DIM(W, 0) != K or cnp.PyArray_DIM(Y, 0) != M or cnp.PyArray_DIM(Y, 1) != N:
        raise ValueError(f"dense_forward: shapes do not match: x {_shape(X)} @ w {_shape(W)} -> "
                         f"out {_shape(Y)}; need x (M, K), w (K, N), out (M, N)")
    if _overlap(Y, ldy, X, ldx) or _overlap(Y, ldy, W, ldw):
        raise ValueError(f"dense_forward: out {_shape(Y)} overlaps an input (x {_shape(X)}, "
                         f"w {_shape(W)}); pass a separate output array")
    cdef float *pz = NULL
    if preact is not None:
        ldz = _ld("dense_forward", "preact", preact, True)
        Z = <cnp.ndarray>preact
        if cnp.PyArray_DIM(Z, 0) != M or cnp.PyArray_DIM(Z, 1) != N:
            raise ValueError(f"dense_forward: preact has shape {_shape(Z)}, expected {(M, N)}")
        if _overlap(Z, ldz, X, ldx) or _overlap(Z, ldz, W, ldw):
            raise ValueError(f"dense_forward: preact {_shape(Z)} overlaps an input")
        if _overlap(Z, ldz, Y, ldy):
            if cnp.PyArray_DATA(Z) == cnp.PyArray_DATA(Y) and ldz == ldy and act == 0:
                pz = NULL  # same array and linear: one store is enough
            else:
                raise ValueError(f"dense_forward: preact {_shape(Z)} overlaps out {_shape(Y)}")
        else:
            pz = <float *>cnp.PyArray_DATA(Z)
    cdef const float *pb = NULL
    if b is not None:
        if not cnp.PyArray_Check(b):
            raise TypeError(f"dense_forward: b must be a numpy.ndarray or None, got {type(b).__name__}")
        Bv = <cnp.ndarray>b
        if cnp.PyArray_TYPE(Bv) != cnp.NPY_FLOAT32:
            raise TypeError(f"dense_forward: b must be float32, got {(<object>Bv).dtype}")
        if cnp.PyArray_NDIM(Bv) != 1 or cnp.PyArray_DIM(Bv, 0) != N:
            raise ValueError(f"dense_forward: b has shape {_shape(Bv)}, expected {(N,)}")
        if N > 1 and cnp.PyArray_STRIDE(Bv, 0) != 4:
            raise ValueError("dense_forward: b must be contiguous")
        if N > 0:
            if (<intptr_t>cnp.PyArray_DATA(Bv)) % 4 != 0:
                raise ValueError("dense_forward: b is not 4-byte aligned")
            pb = <const float *>cnp.PyArray_DATA(Bv)
    cdef float *py = <float *>cnp.PyArray_DATA(Y)
    cdef const float *px = <const float *>cnp.PyArray_DATA(X)
    cdef const float *pw = <const float *>cnp.PyArray_DATA(W)
    cdef int status
    with nogil:
        status = fg_dense_forward(py, ldy, pz, ldz, px, ldx, pw, ldw, pb, M, N, K, act, nthreads)
    if status != FG_OK:
        check_status(status, "dense_forward", f"x {_shape(X)}, w {_shape(W)}, out {_shape(Y)}")
    return out


def tile():
    """(MR, NR, MC, KC, NC) of the active instruction set's GEMM driver."""
    cdef int mr, nr, mc, kc, nc
    fg_gemm_tile(&mr, &nr, &mc, &kc, &nc)
    return (mr, nr, mc, kc, nc)


def set_share(int mode):
    """Threads share one packed B panel: 1 always (rows split), -1 never, 0 by
    shape (default; FASTGRAD_GEMM_SHARE=1/0 at first use). Same bits either
    way — for tests and benchmarks."""
    fg_gemm_set_share(mode)


cdef class PackedB:
    """op(b) packed once for the active ISA's GEMM driver (fg_gemm_packb);
    keeps b alive (the unpacked paths read it). b must not change while
    this object is used."""
    cdef fg_gemm_packed *pk
    cdef readonly object b
    cdef readonly bint trans_b
    cdef readonly int64_t n, k

    def __cinit__(self, b, bint trans_b=False, int nthreads=1):
        self.pk = NULL
        cdef int64_t ldb = _ld("gemm_packb", "b", b, False)
        cdef cnp.ndarray B = <cnp.ndarray>b
        if trans_b:
            self.n = cnp.PyArray_DIM(B, 0); self.k = cnp.PyArray_DIM(B, 1)
        else:
            self.k = cnp.PyArray_DIM(B, 0); self.n = cnp.PyArray_DIM(B, 1)
        self.b = b
        self.trans_b = trans_b
        cdef const float *pb = <const float *>cnp.PyArray_DATA(B)
        cdef int status
        with nogil:
            status = fg_gemm_packb(&self.pk, pb, ldb, self.n, self.k, trans_b, nthreads)
        if status != FG_OK:
            check_status(status, "gemm_packb", f"b {_shape(B)}, trans_b={bool(trans_b)}")

    def __dealloc__(self):
        fg_gemm_packed_free(self.pk)
        self.pk = NULL


def gemm_prepacked(a, PackedB packed, out, bint trans_a=False, float alpha=1.0, float beta=0.0,
                   int nthreads=1):
    """out = alpha op(a) @ op(b) + beta out with op(b) pre-packed (PackedB)."""
    cdef int64_t lda = _ld("gemm_prepacked", "a", a, False)
    cdef int64_t ldc = _ld("gemm_prepacked", "out", out, True)
    cdef cnp.ndarray A = <cnp.ndarray>a, C = <cnp.ndarray>out
    cdef int64_t M, K
    if trans_a:
        K = cnp.PyArray_DIM(A, 0); M = cnp.PyArray_DIM(A, 1)
    else:
        M = cnp.PyArray_DIM(A, 0); K = cnp.PyArray_DIM(A, 1)
    if K != packed.k or cnp.PyArray_DIM(C, 0) != M or cnp.PyArray_DIM(C, 1) != packed.n:
        raise ValueError(f"gemm_prepacked: shapes do not match: op(a) is {(M, K)}, op(b) is "
                         f"{(packed.k, packed.n)}, out is {_shape(C)}")
    if _overlap(C, ldc, A, lda):
        raise ValueError("gemm_prepacked: out overlaps a")
    cdef float *pc = <float *>cnp.PyArray_DATA(C)
    cdef const float *pa = <const float *>cnp.PyArray_DATA(A)
    cdef int status
    with nogil:
        status = fg_gemm_prepacked(pc, ldc, pa, lda, trans_a, packed.pk, M, alpha, beta, nthreads)
    if status != FG_OK:
        check_status(status, "gemm_prepacked", f"op(a) {(M, K)}, out {_shape(C)}")
    return out


def dense_forward_prepacked(x, PackedB w, b, int act, out, int nthreads=1):
    """out = act(x @ w + b) with w (K, N) pre-packed (PackedB, trans_b False)."""
    cdef int64_t ldx = _ld("dense_forward_prepacked", "x", x, False)
    cdef int64_t ldy = _ld("dense_forward_prepacked", "out", out, True)
    cdef cnp.ndarray X = <cnp.ndarray>x, Y = <cnp.ndarray>out, Bv
    if w.trans_b:
        raise ValueError("dense_forward_prepacked: w must be packed with trans_b=False")
    if (cnp.PyArray_DIM(X, 1) != w.k or cnp.PyArray_DIM(Y, 0) != cnp.PyArray_DIM(X, 0)
            or cnp.PyArray_DIM(Y, 1) != w.n):
        raise ValueError(f"dense_forward_prepacked: x {_shape(X)} @ w {(w.k, w.n)} -> out {_shape(Y)}")
    cdef const float *pb = NULL
    if b is not None:
        Bv = <cnp.ndarray>b
        if cnp.PyArray_TYPE(Bv) != cnp.NPY_FLOAT32 or cnp.PyArray_NDIM(Bv) != 1 or cnp.PyArray_DIM(Bv, 0) != w.n:
            raise ValueError(f"dense_forward_prepacked: b must be float32 of shape {(w.n,)}")
        if not cnp.PyArray_IS_C_CONTIGUOUS(Bv):
            raise ValueError("dense_forward_prepacked: b must be contiguous")
        pb = <const float *>cnp.PyArray_DATA(Bv)
    cdef float *py = <float *>cnp.PyArray_DATA(Y)
    cdef const float *px = <const float *>cnp.PyArray_DATA(X)
    cdef int64_t M = cnp.PyArray_DIM(X, 0)
    cdef int status
    with nogil:
        status = fg_dense_forward_prepacked(py, ldy, NULL, 0, px, ldx, w.pk, pb, M, act, nthreads)
    if status != FG_OK:
        check_status(status, "dense_forward_prepacked", f"x {_shape(X)}, out {_shape(Y)}")
    return out


_peak_cache = {}


def peak_gflops(int nthreads=1, bint refresh=False):
    """The machine's fp32 FMA peak in GFLOP/s for `nthreads` threads together,
    on the active instruction set (FASTGRAD_ISA): measured once per process
    and thread count (independent vector FMA chains, best of 3 runs of
    >= 10 ms of each thread's CPU time; csrc/gemm/gemm_peak.c), then cached;
    more threads than processors count as the processors. FASTGRAD_PEAK_GFLOPS,
    if set, is returned instead (the figure for the thread count the caller
    runs, e.g. the benchmarks' 2 threads) and nothing is measured."""
    import os
    if nthreads < 1:
        raise ValueError(f"peak_gflops: nthreads must be >= 1, got {nthreads}")
    env = os.environ.get("FASTGRAD_PEAK_GFLOPS")
    if env:
        try:
            v = float(env)
        except ValueError:
            raise ValueError(f"FASTGRAD_PEAK_GFLOPS must be a number (GFLOP/s), got {env!r}")
        if not v > 0:
            raise ValueError(f"FASTGRAD_PEAK_GFLOPS must be positive, got {env!r}")
        return v
    key = (nthreads, fg_isa_active())
    if not refresh and key in _peak_cache:
        return _peak_cache[key]
    cdef double g
    with nogil:
        g = fg_gemm_peak_gflops(nthreads)
    _peak_cache[key] = g
    return g


# ---------------------------------------------------------------- NativeOps entry points
# The Ops layer calls these per training step: they check applicability with
# the C API only and return NotImplemented when the C path does not apply
# (other dtype, layout or shapes, overlapping output), so NativeOps falls back
# to NumpyOps, which also produces the error messages.

cdef inline int64_t _ld_or_neg(object obj, bint writeable):
    """Leading dimension of a usable float32 matrix, or -1."""
    if not cnp.PyArray_Check(obj):
        return -1
    cdef cnp.ndarray x = <cnp.ndarray>obj
    if cnp.PyArray_TYPE(x) != cnp.NPY_FLOAT32 or cnp.PyArray_NDIM(x) != 2:
        return -1
    if not cnp.PyArray_ISNOTSWAPPED(x):
        return -1
    if writeable and not cnp.PyArray_ISWRITEABLE(x):
        return -1
    cdef cnp.npy_intp rows = cnp.PyArray_DIM(x, 0), cols = cnp.PyArray_DIM(x, 1)
    cdef cnp.npy_intp s0 = cnp.PyArray_STRIDE(x, 0), s1 = cnp.PyArray_STRIDE(x, 1)
    if rows == 0 or cols == 0:
        return cols if cols > 0 else 1
    if (<intptr_t>cnp.PyArray_DATA(x)) % 4 != 0 or (cols > 1 and s1 != 4):
        return -1
    if rows <= 1:
        return cols
    if s0 % 4 != 0 or s0 < cols * 4:
        return -1
    return s0 // 4


def gemm_op(a, b, out, bint trans_a, bint trans_b, float alpha, float beta, int nthreads):
    """out = alpha op(a) op(b) + beta out, allocating out (beta ignored) when
    None; NotImplemented when the C path does not apply."""
    cdef int64_t lda = _ld_or_neg(a, False), ldb = _ld_or_neg(b, False), ldc
    if lda < 0 or ldb < 0:
        return NotImplemented
    cdef cnp.ndarray A = <cnp.ndarray>a, B = <cnp.ndarray>b, C
    cdef int64_t M, K, K2, N
    if trans_a:
        K = cnp.PyArray_DIM(A, 0); M = cnp.PyArray_DIM(A, 1)
    else:
        M = cnp.PyArray_DIM(A, 0); K = cnp.PyArray_DIM(A, 1)
    if trans_b:
        N = cnp.PyArray_DIM(B, 0); K2 = cnp.PyArray_DIM(B, 1)
    else:
        K2 = cnp.PyArray_DIM(B, 0); N = cnp.PyArray_DIM(B, 1)
    if K != K2:
        return NotImplemented
    cdef cnp.npy_intp dims[2]
    if out is None:
        dims[0] = M; dims[1] = N
        out = cnp.PyArray_EMPTY(2, dims, cnp.NPY_FLOAT32, 0)
        beta = 0.0
        ldc = N if N > 0 else 1
        C = <cnp.ndarray>out
    else:
        ldc = _ld_or_neg(out, True)
        if ldc < 0:
            return NotImplemented
        C = <cnp.ndarray>out
        if cnp.PyArray_DIM(C, 0) != M or cnp.PyArray_DIM(C, 1) != N:
            return NotImplemented
        if _overlap(C, ldc, A, lda) or _overlap(C, ldc, B, ldb):
            return NotImplemented
    cdef float *pc = <float *>cnp.PyArray_DATA(C)
    cdef const float *pa = <const float *>cnp.PyArray_DATA(A)
    cdef const float *pb = <const float *>cnp.PyArray_DATA(B)
    cdef int status
    with nogil:
        status = fg_gemm(pc, ldc, pa, lda, pb, ldb, M, N, K, trans_a, trans_b, alpha, beta, nthreads)
    if status != FG_OK:
        check_status(status, "gemm", f"op(a) {(M, K)}, op(b) {(K, N)}, out {_shape(C)}")
    return out


def dense_op(x, w, b, int act, out, preact, int nthreads):
    """out = act(x w + b) (preact = x w + b when given), allocating out when
    None; NotImplemented when the C path does not apply."""
    cdef int64_t ldx = _ld_or_neg(x, False), ldw = _ld_or_neg(w, False), ldy, ldz = 0
    if ldx < 0 or ldw < 0 or not fg_act_valid(act):
        return NotImplemented
    cdef cnp.ndarray X = <cnp.ndarray>x, W = <cnp.ndarray>w, Y, Z, Bv
    cdef int64_t M = cnp.PyArray_DIM(X, 0), K = cnp.PyArray_DIM(X, 1), N = cnp.PyArray_DIM(W, 1)
    if cnp.PyArray_DIM(W, 0) != K:
        return NotImplemented
    cdef const float *pb = NULL
    if b is not None:
        if not cnp.PyArray_Check(b):
            return NotImplemented
        Bv = <cnp.ndarray>b
        if (cnp.PyArray_TYPE(Bv) != cnp.NPY_FLOAT32 or cnp.PyArray_NDIM(Bv) != 1
                or cnp.PyArray_DIM(Bv, 0) != N or not cnp.PyArray_ISNOTSWAPPED(Bv)
                or (N > 1 and cnp.PyArray_STRIDE(Bv, 0) != 4) or (<intptr_t>cnp.PyArray_DATA(Bv)) % 4 != 0):
            return NotImplemented
        pb = <const float *>cnp.PyArray_DATA(Bv)
    cdef cnp.npy_intp dims[2]
    if out is None:
        dims[0] = M; dims[1] = N
        out = cnp.PyArray_EMPTY(2, dims, cnp.NPY_FLOAT32, 0)
        ldy = N if N > 0 else 1
        Y = <cnp.ndarray>out
    else:
        ldy = _ld_or_neg(out, True)
        if ldy < 0:
            return NotImplemented
        Y = <cnp.ndarray>out
        if cnp.PyArray_DIM(Y, 0) != M or cnp.PyArray_DIM(Y, 1) != N:
            return NotImplemented
        if _overlap(Y, ldy, X, ldx) or _overlap(Y, ldy, W, ldw):
            return NotImplemented
    cdef float *pz = NULL
    if preact is not None:
        ldz = _ld_or_neg(preact, True)
        if ldz < 0:
            return NotImplemented
        Z = <cnp.ndarray>preact
        if cnp.PyArray_DIM(Z, 0) != M or cnp.PyArray_DIM(Z, 1) != N:
            return NotImplemented
        if _overlap(Z, ldz, X, ldx) or _overlap(Z, ldz, W, ldw):
            return NotImplemented
        if _overlap(Z, ldz, Y, ldy):
            if not (cnp.PyArray_DATA(Z) == cnp.PyArray_DATA(Y) and ldz == ldy and act == 0):
                return NotImplemented
        else:
            pz = <float *>cnp.PyArray_DATA(Z)
    cdef float *py = <float *>cnp.PyArray_DATA(Y)
    cdef const float *px = <const float *>cnp.PyArray_DATA(X)
    cdef const float *pw = <const float *>cnp.PyArray_DATA(W)
    cdef int status
    with nogil:
        status = fg_dense_forward(py, ldy, pz, ldz, px, ldx, pw, ldw, pb, M, N, K, act, nthreads)
    if status != FG_OK:
        check_status(status, "dense_forward", f"x {_shape(X)}, w {_shape(W)}, out {_shape(Y)}")
    return out
