# cython: language_level=3
"""fastgrad._native.quant — thin bindings of csrc/quant (int8 quantize /
dequantize, weight packing, the u8 x s8 -> s32 GEMM with its fused epilogue).

The wrappers take C-contiguous arrays of the exact dtypes (the Python layer,
fastgrad.backend.native_quant, converts and validates shapes and values and
names the op in its errors); they release the GIL for the C call and turn
the status into an exception.
"""

cimport numpy as cnp
from libc.stdint cimport int64_t, int32_t, int8_t, uint8_t

include "_common.pxi"

cnp.import_array()

cdef extern from "quant/fg_quant.h" nogil:
    enum:
        FG_QGEMM_MAX_K
        FG_QPANEL
        FG_QISA_COUNT
        FG_QOUT_S32
        FG_QOUT_F32
        FG_QOUT_U8
    ctypedef struct fg_qgemm_args:
        void *out
        int64_t ldo
        int out_kind
        const uint8_t *A
        int64_t lda
        const int8_t *Bp
        const int32_t *colsum
        int64_t M, N, K
        const int32_t *a_zp
        int64_t a_zp_stride
        const float *a_scale
        int64_t a_scale_stride
        const float *b_scale
        const float *mult
        const float *bias
        int32_t out_zp
        int relu
        const float *Af
        int64_t ldaf
        float *q_scale
        int32_t *q_zp
        int af_given
    int fg_quant_isa_supported(int q)
    int fg_quant_isa_set(int q)
    int fg_quant_isa_active()
    const char *fg_quant_isa_name(int q)
    int64_t fg_qpack_bytes(int64_t K, int64_t N)
    int fg_qpack_b(int8_t *packed, int32_t *colsum, const int8_t *B, int64_t ldb, int64_t K, int64_t N)
    int fg_qgemm(const fg_qgemm_args *args, int nthreads)
    int fg_quantize_rows_u8(uint8_t *q, int64_t ldq, float *scale, int32_t *zp, const float *x, int64_t ldx,
                            int64_t M, int64_t N, int nthreads)
    int fg_quantize_rows_s8(int8_t *q, int64_t ldq, float *scale, const float *x, int64_t ldx,
                            int64_t M, int64_t N, int nthreads)
    int fg_quantize(void *q, int64_t ldq, int is_s8, const float *x, int64_t ldx, int64_t M, int64_t N,
                    const float *scale, int64_t scale_stride, const int32_t *zp, int64_t zp_stride, int nthreads)
    int fg_dequantize(float *y, int64_t ldy, const void *q, int64_t ldq, int is_s8, int64_t M, int64_t N,
                      const float *scale, int64_t scale_stride, const int32_t *zp, int64_t zp_stride,
                      int nthreads)

MAX_K = FG_QGEMM_MAX_K
PANEL = FG_QPANEL
OUT_S32 = FG_QOUT_S32
OUT_F32 = FG_QOUT_F32
OUT_U8 = FG_QOUT_U8
QISA_NAMES = tuple(fg_quant_isa_name(i).decode() for i in range(FG_QISA_COUNT))


def qisa_supported():
    """The int8 paths this CPU and build can run (baseline, avx2, avxvnni, avx512vnni)."""
    return [n for i, n in enumerate(QISA_NAMES) if fg_quant_isa_supported(i)]


def qisa_active():
    return fg_quant_isa_name(fg_quant_isa_active()).decode()


def set_qisa(name):
    """Force the int8 path (None or 'auto': follow the global instruction set)."""
    if name is None or name == "auto":
        fg_quant_isa_set(-1)
        return
    if name not in QISA_NAMES:
        raise ValueError(f"unknown int8 path {name!r}; expected one of {QISA_NAMES} or 'auto'")
    if fg_quant_isa_set(QISA_NAMES.index(name)) != FG_OK:
        raise ValueError(f"int8 path {name!r} is not available on this CPU/build; "
                         f"available: {', '.join(qisa_supported())}")


cdef cnp.ndarray _chk(str op, str name, object a, int typenum, int ndim):
    if not cnp.PyArray_Check(a):
        raise TypeError(f"{op}: {name} must be a numpy.ndarray, got {type(a).__name__}")
    cdef cnp.ndarray x = <cnp.ndarray>a
    if cnp.PyArray_TYPE(x) != typenum:
        raise TypeError(f"{op}: {name} has dtype {a.dtype}")
    if ndim >= 0 and cnp.PyArray_NDIM(x) != ndim:
        raise ValueError(f"{op}: {name} must be {ndim}-D, got shape {a.shape}")
    if not cnp.PyArray_IS_C_CONTIGUOUS(x):
        raise ValueError(f"{op}: {name} must be C-contiguous")
    return x


cdef void *_ptr(object a):
    if a is None:
        return NULL
    return cnp.PyArray_DATA(<cnp.ndarray>a)


def pack_b(b):
    """(packed int8 1-D, colsum int32 (N,)) of a C-contiguous int8 (K, N) matrix."""
    cdef cnp.ndarray B = _chk("qpack", "b", b, cnp.NPY_INT8, 2)
    cdef int64_t K = B.shape[0], N = B.shape[1]
    if K > FG_QGEMM_MAX_K:
        raise ValueError(f"qpack: K = {K} exceeds the int32-exact limit {FG_QGEMM_MAX_K}")
    import numpy as np
    packed = np.empty(fg_qpack_bytes(K, N), dtype=np.int8)
    colsum = np.empty(N, dtype=np.int32)
    cdef int st
    cdef int8_t *pp = <int8_t *>_ptr(packed)
    cdef int32_t *pc = <int32_t *>_ptr(colsum)
    cdef const int8_t *pb = <const int8_t *>_ptr(B)
    with nogil:
        st = fg_qpack_b(pp, pc, pb, N if N > 0 else 1, K, N)
    check_status(st, "qpack", f"b {(K, N)}")
    return packed, colsum


def qgemm(a, packed, colsum, int64_t K, int64_t N, out, int out_kind, a_zp=None, a_scale=None, b_scale=None,
          mult=None, bias=None, int out_zp=0, bint relu=False, int nthreads=1):
    """out (M, N) from a (M, K) u8 and the packed weights; see fg_quant.h.
    A float32 a is quantized inside the call with the given a_scale / a_zp."""
    cdef bint af = cnp.PyArray_Check(a) and cnp.PyArray_TYPE(<cnp.ndarray>a) == cnp.NPY_FLOAT32
    cdef cnp.ndarray A = _chk("qgemm", "a", a, cnp.NPY_FLOAT32 if af else cnp.NPY_UINT8, 2)
    if af and a_scale is None:
        raise ValueError("qgemm: a float a with given quantization needs a_scale")
    cdef int otype = cnp.NPY_INT32 if out_kind == FG_QOUT_S32 else (
        cnp.NPY_FLOAT32 if out_kind == FG_QOUT_F32 else cnp.NPY_UINT8)
    cdef cnp.ndarray O = _chk("qgemm", "out", out, otype, 2)
    _chk("qgemm", "packed", packed, cnp.NPY_INT8, 1)
    _chk("qgemm", "colsum", colsum, cnp.NPY_INT32, 1)
    cdef int64_t M = A.shape[0]
    if A.shape[1] != K or O.shape[0] != M or O.shape[1] != N or colsum.shape[0] != N \
            or packed.shape[0] < fg_qpack_bytes(K, N):
        raise ValueError(f"qgemm: shapes do not match: a {a.shape}, packed weights {(K, N)}, out {out.shape}")
    if a_zp is not None:
        _chk("qgemm", "a_zero_point", a_zp, cnp.NPY_INT32, 1)
        if a_zp.shape[0] not in (1, M):
            raise ValueError(f"qgemm: a_zero_point has {a_zp.shape[0]} values for {M} rows")
    if a_scale is not None:
        _chk("qgemm", "a_scale", a_scale, cnp.NPY_FLOAT32, 1)
        if a_scale.shape[0] not in (1, M):
            raise ValueError(f"qgemm: a_scale has {a_scale.shape[0]} values for {M} rows")
    for nm, v in (("b_scale", b_scale), ("mult", mult), ("bias", bias)):
        if v is not None:
            _chk("qgemm", nm, v, cnp.NPY_FLOAT32, 1)
            if v.shape[0] != N:
                raise ValueError(f"qgemm: {nm} has {v.shape[0]} values for {N} columns")
    cdef fg_qgemm_args args
    args.out = _ptr(O)
    args.ldo = N
    args.out_kind = out_kind
    if af:
        args.A = NULL
    else:
        args.A = <const uint8_t *>_ptr(A)
    args.lda = K
    args.Bp = <const int8_t *>_ptr(packed)
    args.colsum = <const int32_t *>_ptr(colsum)
    args.M = M
    args.N = N
    args.K = K
    args.a_zp = <const int32_t *>_ptr(a_zp)
    args.a_zp_stride = 1 if (a_zp is not None and a_zp.shape[0] == M and M > 1) else 0
    args.a_scale = <const float *>_ptr(a_scale)
    args.a_scale_stride = 1 if (a_scale is not None and a_scale.shape[0] == M and M > 1) else 0
    args.b_scale = <const float *>_ptr(b_scale)
    args.mult = <const float *>_ptr(mult)
    args.bias = <const float *>_ptr(bias)
    args.out_zp = out_zp
    args.relu = 1 if relu else 0
    args.Af = <const float *>_ptr(A) if af else NULL
    args.ldaf = K
    args.q_scale = NULL
    args.q_zp = NULL
    args.af_given = 1 if af else 0
    cdef int st
    with nogil:
        st = fg_qgemm(&args, nthreads)
    check_status(st, "qgemm", f"a {(M, K)}, b {(K, N)}" + (": NaN in the input" if af else ""))
    return out


def quantize_rows(x, q, scale, zp, bint is_s8, int nthreads=1):
    """Dynamic per-row quantization into q; writes scale (and zp for u8)."""
    cdef cnp.ndarray X = _chk("quantize", "x", x, cnp.NPY_FLOAT32, 2)
    cdef cnp.ndarray Q = _chk("quantize", "out", q, cnp.NPY_INT8 if is_s8 else cnp.NPY_UINT8, 2)
    _chk("quantize", "scale", scale, cnp.NPY_FLOAT32, 1)
    cdef int64_t M = X.shape[0], N = X.shape[1]
    if Q.shape[0] != M or Q.shape[1] != N or scale.shape[0] != M or (not is_s8 and zp.shape[0] != M):
        raise ValueError(f"quantize: shapes do not match: x {x.shape}, out {q.shape}")
    cdef int st
    cdef void *pq = _ptr(Q)
    cdef float *ps = <float *>_ptr(scale)
    cdef int32_t *pz = NULL
    if not is_s8:
        _chk("quantize", "zero_point", zp, cnp.NPY_INT32, 1)
        pz = <int32_t *>_ptr(zp)
    cdef const float *px = <const float *>_ptr(X)
    cdef int64_t ld = N if N > 0 else 1
    with nogil:
        if is_s8:
            st = fg_quantize_rows_s8(<int8_t *>pq, ld, ps, px, ld, M, N, nthreads)
        else:
            st = fg_quantize_rows_u8(<uint8_t *>pq, ld, ps, pz, px, ld, M, N, nthreads)
    check_status(st, "quantize", f"x {x.shape}: NaN or inf in the input")
    return q


def quantize_given(x, q, scale, zp, bint is_s8, int nthreads=1):
    """q = clip(rint(x / scale) + zp); scale / zp: 1 value or one per row."""
    cdef cnp.ndarray X = _chk("quantize", "x", x, cnp.NPY_FLOAT32, 2)
    cdef cnp.ndarray Q = _chk("quantize", "out", q, cnp.NPY_INT8 if is_s8 else cnp.NPY_UINT8, 2)
    _chk("quantize", "scale", scale, cnp.NPY_FLOAT32, 1)
    _chk("quantize", "zero_point", zp, cnp.NPY_INT32, 1)
    cdef int64_t M = X.shape[0], N = X.shape[1]
    if Q.shape[0] != M or Q.shape[1] != N:
        raise ValueError(f"quantize: shapes do not match: x {x.shape}, out {q.shape}")
    cdef int64_t ss = 1 if (scale.shape[0] == M and M > 1) else 0
    cdef int64_t zs = 1 if (zp.shape[0] == M and M > 1) else 0
    cdef int st
    cdef void *pq = _ptr(Q)
    cdef const float *ps = <const float *>_ptr(scale)
    cdef const int32_t *pz = <const int32_t *>_ptr(zp)
    cdef const float *px = <const float *>_ptr(X)
    cdef int64_t ld = N if N > 0 else 1
    with nogil:
        st = fg_quantize(pq, ld, is_s8, px, ld, M, N, ps, ss, pz, zs, nthreads)
    check_status(st, "quantize", f"x {x.shape}: NaN in the input")
    return q


def dequantize(q, y, scale, zp, bint is_s8, int nthreads=1):
    cdef cnp.ndarray Q = _chk("dequantize", "q", q, cnp.NPY_INT8 if is_s8 else cnp.NPY_UINT8, 2)
    cdef cnp.ndarray Y = _chk("dequantize", "out", y, cnp.NPY_FLOAT32, 2)
    _chk("dequantize", "scale", scale, cnp.NPY_FLOAT32, 1)
    _chk("dequantize", "zero_point", zp, cnp.NPY_INT32, 1)
    cdef int64_t M = Q.shape[0], N = Q.shape[1]
    if Y.shape[0] != M or Y.shape[1] != N:
        raise ValueError(f"dequantize: shapes do not match: q {q.shape}, out {y.shape}")
    cdef int64_t ss = 1 if (scale.shape[0] == M and M > 1) else 0
    cdef int64_t zs = 1 if (zp.shape[0] == M and M > 1) else 0
    cdef int st
    cdef const void *pq = _ptr(Q)
    cdef float *py = <float *>_ptr(Y)
    cdef const float *ps = <const float *>_ptr(scale)
    cdef const int32_t *pz = <const int32_t *>_ptr(zp)
    cdef int64_t ld = N if N > 0 else 1
    with nogil:
        st = fg_dequantize(py, ld, pq, ld, is_s8, M, N, ps, ss, pz, zs, nthreads)
    check_status(st, "dequantize", f"q {q.shape}")
    return y


def qgemm_dynamic(x, packed, colsum, int64_t K, int64_t N, out, int out_kind, q_scale, q_zp, b_scale=None,
                  bias=None, bint relu=False, int nthreads=1):
    """out (M, N) from float x (M, K), each row quantized to u8 (dynamic, per
    row; scale / zero point written to q_scale / q_zp) inside the call."""
    cdef cnp.ndarray X = _chk("qgemm", "a", x, cnp.NPY_FLOAT32, 2)
    cdef int otype = cnp.NPY_INT32 if out_kind == FG_QOUT_S32 else cnp.NPY_FLOAT32
    cdef cnp.ndarray O = _chk("qgemm", "out", out, otype, 2)
    _chk("qgemm", "packed", packed, cnp.NPY_INT8, 1)
    _chk("qgemm", "colsum", colsum, cnp.NPY_INT32, 1)
    _chk("qgemm", "scale", q_scale, cnp.NPY_FLOAT32, 1)
    _chk("qgemm", "zero_point", q_zp, cnp.NPY_INT32, 1)
    cdef int64_t M = X.shape[0]
    if X.shape[1] != K or O.shape[0] != M or O.shape[1] != N or colsum.shape[0] != N \
            or packed.shape[0] < fg_qpack_bytes(K, N) or q_scale.shape[0] != M or q_zp.shape[0] != M:
        raise ValueError(f"qgemm: shapes do not match: a {x.shape}, packed weights {(K, N)}, out {out.shape}")
    for nm, v in (("b_scale", b_scale), ("bias", bias)):
        if v is not None:
            _chk("qgemm", nm, v, cnp.NPY_FLOAT32, 1)
            if v.shape[0] != N:
                raise ValueError(f"qgemm: {nm} has {v.shape[0]} values for {N} columns")
    cdef fg_qgemm_args args
    args.out = _ptr(O)
    args.ldo = N
    args.out_kind = out_kind
    args.A = NULL
    args.lda = K
    args.Bp = <const int8_t *>_ptr(packed)
    args.colsum = <const int32_t *>_ptr(colsum)
    args.M = M
    args.N = N
    args.K = K
    args.a_zp = NULL
    args.a_zp_stride = 0
    args.a_scale = NULL
    args.a_scale_stride = 0
    args.b_scale = <const float *>_ptr(b_scale)
    args.mult = NULL
    args.bias = <const float *>_ptr(bias)
    args.out_zp = 0
    args.relu = 1 if relu else 0
    args.Af = <const float *>_ptr(X)
    args.ldaf = K
    args.q_scale = <float *>_ptr(q_scale)
    args.q_zp = <int32_t *>_ptr(q_zp)
    args.af_given = 0
    cdef int st
    with nogil:
        st = fg_qgemm(&args, nthreads)
    check_status(st, "qgemm", f"a {x.shape}: NaN or inf in the input (dynamic quantization needs finite values)")
    return out
