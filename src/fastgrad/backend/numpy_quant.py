"""QuantNumpyOps — int8 quantization ops in NumPy: the reference (twin) the C
kernels of csrc/quant are tested against, bit for bit, and the fallback.

Conventions (csrc/quant/fg_quant.h states the same):
- quantize: q = clip(rint(x / scale) + zero_point, lo, hi) in float32 with
  np.rint (round half to even); u8: [0, 255], s8: [-128, 127]. Without a
  scale, per row ("dynamic"): u8 asymmetric (range widened to include 0,
  scale = (hi - lo) / 255, zero point = clip(rint(-lo / scale), 0, 255)),
  s8 symmetric (scale = max|x| / 127, zero point 0); a zero scale becomes 1.
- dequantize: (float32(q - zero_point)) * scale.
- qgemm: u8 (M, K) x s8 (K, N) -> the exact int32 product (K <= 65536, so no
  sum can overflow); with the activations' zero point za it is
  sum (a - za) b = a b - za colsum(b). Epilogues (float32, this order):
    float:  y = float32(d) * (a_scale * b_scale) [+ bias] [relu]
    uint8:  y = float32(d) * mult [+ bias / out_scale], mult = (a_scale *
            b_scale) / out_scale; q = clip(rint(y) + out_zp, relu ? out_zp : 0, 255)
"""
from __future__ import annotations

import numpy as np

MAX_K = 65536
_LIMITS = {"uint8": (0, 255), "int8": (-128, 127)}


class QPackedWeights:
    """An int8 (K, N) weight matrix prepared once for qgemm: the matrix, its
    column sums (for the activations' zero point) and, under the native
    backend, the panel layout the C kernels read (`packed`)."""

    __slots__ = ("b", "colsum", "packed", "K", "N")

    def __init__(self, b, colsum, packed=None):
        self.b = b
        self.colsum = colsum
        self.packed = packed
        self.K, self.N = b.shape

    @property
    def shape(self):
        return (self.K, self.N)

    @property
    def dtype(self):
        return np.dtype(np.int8)

    def __repr__(self):
        return f"QPackedWeights(shape={self.shape}, native={'yes' if self.packed is not None else 'no'})"


def _dtype_name(dtype):
    name = np.dtype(dtype).name
    if name not in _LIMITS:
        raise ValueError(f"quantize: dtype must be uint8 or int8, got {name}")
    return name


def _row_param(op, name, v, rows, dtype):
    """A scale / zero point given as one value or one per row -> 1-D array."""
    arr = np.ascontiguousarray(np.asarray(v, dtype=dtype).reshape(-1))
    if arr.size not in (1, rows):
        raise ValueError(f"{op}: {name} must be one value or one per row ({rows}), got {arr.size} values")
    return arr


def _check_scale(op, scale):
    if not np.all(np.isfinite(scale)) or np.any(scale <= 0):
        raise ValueError(f"{op}: scale must be finite and > 0, got {scale[(~np.isfinite(scale)) | (scale <= 0)][:4]}")


class QuantNumpyOps:
    """quantize, dequantize, qpack, qgemm (NumPy; the C kernels' twin)."""

    # ---------------------------------------------------------------- quantize
    def quantize(self, x, dtype="uint8", scale=None, zero_point=None, out=None):
        """(q, scale, zero_point) of a float array (1-D: one row; 2-D: rows).

        scale None: per-row dynamic quantization (u8 asymmetric, s8
        symmetric). Else scale (and zero_point, default 0) is one value or one
        per row. NaN (and, for dynamic, inf) raises ValueError."""
        name = _dtype_name(dtype)
        x = np.asarray(x)
        if x.dtype not in (np.float32, np.float64):
            raise TypeError(f"quantize: x must be float32 or float64, got {x.dtype}")
        if x.ndim not in (1, 2):
            raise ValueError(f"quantize: x must be 1-D or 2-D, got shape {x.shape}")
        x2 = np.ascontiguousarray(x.reshape(1, -1) if x.ndim == 1 else x, dtype=np.float32)
        M = x2.shape[0]
        q = np.empty(x2.shape, dtype=name) if out is None else out.reshape(x2.shape)
        if q.dtype != np.dtype(name) or q.shape != x2.shape:
            raise ValueError(f"quantize: out must be {name} {x2.shape}, got {out.dtype} {out.shape}")
        if scale is None:
            if zero_point is not None:
                raise ValueError("quantize: zero_point given without scale")
            s = np.empty(M, np.float32)
            zp = np.zeros(M, np.int32)
            self._quantize_rows(x2, q, s, zp, name == "int8")
        else:
            s = _row_param("quantize", "scale", scale, M, np.float32)
            _check_scale("quantize", s)
            zp = _row_param("quantize", "zero_point", 0 if zero_point is None else zero_point, M, np.int32)
            lo, hi = _LIMITS[name]
            if np.any((zp < lo) | (zp > hi)):
                raise ValueError(f"quantize: zero_point must lie in [{lo}, {hi}] for {name}, got {zp[:4]}")
            self._quantize_given(x2, q, s, zp, name == "int8")
        if x.ndim == 1:
            return q.reshape(-1), s[0], zp[0]
        return q, s, zp

    def _quantize_rows(self, x, q, s, zp, is_s8):
        if not np.all(np.isfinite(x)):
            raise ValueError(f"quantize: x {x.shape} contains NaN or inf (dynamic quantization needs finite values)")
        with np.errstate(all="ignore"):
            if is_s8:
                amax = np.abs(x).max(axis=1) if x.shape[1] else np.zeros(x.shape[0], np.float32)
                s[:] = amax / np.float32(127)
                s[s == 0] = 1
                q[:] = np.clip(np.rint(x / s[:, None]), -128, 127)
                zp[:] = 0
            else:
                mn = np.minimum(x.min(axis=1), 0) if x.shape[1] else np.zeros(x.shape[0], np.float32)
                mx = np.maximum(x.max(axis=1), 0) if x.shape[1] else np.zeros(x.shape[0], np.float32)
                s[:] = (mx - mn) / np.float32(255)
                s[s == 0] = 1
                zpf = np.rint(np.clip(-mn / s, np.float32(0), np.float32(255)))
                zp[:] = zpf.astype(np.int32)
                q[:] = np.clip(np.rint(x / s[:, None]) + zpf[:, None], 0, 255)

    def _quantize_given(self, x, q, s, zp, is_s8):
        if np.isnan(x).any():
            raise ValueError(f"quantize: x {x.shape} contains NaN")
        lo, hi = (-128, 127) if is_s8 else (0, 255)
        with np.errstate(all="ignore"):
            v = np.rint(x / s[:, None]) + zp.astype(np.float32)[:, None]
            q[:] = np.clip(v, lo, hi)

    def dequantize(self, q, scale, zero_point=0, out=None):
        """float32 (q - zero_point) * scale; scale / zero_point one value or one per row."""
        q = np.asarray(q)
        if q.dtype not in (np.uint8, np.int8):
            raise TypeError(f"dequantize: q must be uint8 or int8, got {q.dtype}")
        if q.ndim not in (1, 2):
            raise ValueError(f"dequantize: q must be 1-D or 2-D, got shape {q.shape}")
        q2 = np.ascontiguousarray(q.reshape(1, -1) if q.ndim == 1 else q)
        M = q2.shape[0]
        s = _row_param("dequantize", "scale", scale, M, np.float32)
        _check_scale("dequantize", s)
        zp = _row_param("dequantize", "zero_point", zero_point, M, np.int32)
        y = np.empty(q2.shape, np.float32) if out is None else out.reshape(q2.shape)
        if y.dtype != np.float32 or y.shape != q2.shape:
            raise ValueError(f"dequantize: out must be float32 {q2.shape}")
        self._dequantize(q2, y, s, zp)
        return y.reshape(q.shape)

    def _dequantize(self, q, y, s, zp):
        y[:] = (q.astype(np.int32) - zp[:, None]).astype(np.float32) * s[:, None]

    # ---------------------------------------------------------------- qgemm
    def qpack(self, b):
        """Prepare an int8 (K, N) weight matrix once for qgemm."""
        b = np.asarray(b)
        if b.dtype != np.int8 or b.ndim != 2:
            raise TypeError(f"qpack: b must be a 2-D int8 array, got {b.dtype} {b.shape}")
        if b.shape[0] > MAX_K:
            raise ValueError(f"qpack: K = {b.shape[0]} exceeds the int32-exact limit {MAX_K}")
        b = np.ascontiguousarray(b)
        return QPackedWeights(b, b.sum(axis=0, dtype=np.int64).astype(np.int32), self._qpack_native(b))

    def _qpack_native(self, b):
        return None

    def qgemm(self, a, b, out=None, a_zero_point=None, a_scale=None, b_scale=None, bias=None,
              activation="linear", out_scale=None, out_zero_point=0):
        """u8 (M, K) x s8 (K, N) with an exact int32 sum.

        qgemm(a, b): the int32 product. a_zero_point (one or per row): the
        product of (a - za). a_scale (one or per row) and b_scale (one or per
        column): float32 output, dequantized, + bias, activation "linear" or
        "relu". With out_scale too (a_scale one value): uint8 output
        requantized to (out_scale, out_zero_point), bias and relu fused.
        b: an int8 array or qpack(b)'s result (packed once).
        A float32 a is quantized per row (dynamic u8, as quantize(a)) inside
        the call (b_scale needed; float output, bias and relu as above): the
        same bits as quantize then qgemm, one pass fewer."""
        a = np.asarray(a)
        if a.dtype in (np.float32, np.float64) and a.ndim == 2:
            return self._qgemm_float_a(a, b, out, a_zero_point, a_scale, b_scale, bias, activation, out_scale)
        if a.dtype != np.uint8 or a.ndim != 2:
            raise TypeError(f"qgemm: a must be a 2-D uint8 array, got {a.dtype} {a.shape}")
        if not isinstance(b, QPackedWeights):
            b = self.qpack(b)
        M, K = a.shape
        if K != b.K:
            raise ValueError(f"qgemm: shapes do not match: a {a.shape} @ b {b.shape}")
        N = b.N
        if activation not in ("linear", "relu"):
            raise ValueError(f"qgemm: fused activation must be 'linear' or 'relu', got {activation!r}")
        relu = activation == "relu"
        za = None if a_zero_point is None else _row_param("qgemm", "a_zero_point", a_zero_point, M, np.int32)
        if za is not None and np.any((za < 0) | (za > 255)):
            raise ValueError(f"qgemm: a_zero_point must lie in [0, 255], got {za[:4]}")
        if a_scale is None:
            if b_scale is not None or out_scale is not None or bias is not None or relu:
                raise ValueError("qgemm: b_scale, bias, activation and out_scale need a_scale")
            kind, sa, sb, mult, bq = 0, None, None, None, None
        else:
            sa = _row_param("qgemm", "a_scale", a_scale, M, np.float32)
            _check_scale("qgemm", sa)
            if b_scale is None:
                raise ValueError("qgemm: a_scale given without b_scale")
            sb = np.ascontiguousarray(np.broadcast_to(np.asarray(b_scale, np.float32).reshape(-1), (N,))) \
                if np.size(b_scale) in (1, N) else None
            if sb is None:
                raise ValueError(f"qgemm: b_scale must be one value or one per column ({N}), got {np.size(b_scale)}")
            _check_scale("qgemm", sb)
            bq = None
            if bias is not None:
                bq = np.ascontiguousarray(np.asarray(bias, np.float32).reshape(-1))
                if bq.size != N:
                    raise ValueError(f"qgemm: bias must have {N} values, got {bq.size}")
                if not np.all(np.isfinite(bq)):
                    raise ValueError("qgemm: bias contains NaN or inf")
            if out_scale is None:
                kind, mult = 1, None
            else:
                if sa.size != 1:
                    raise ValueError("qgemm: a uint8 output (out_scale) needs one a_scale for all rows")
                so = np.float32(out_scale)
                if not (np.isfinite(so) and so > 0):
                    raise ValueError(f"qgemm: out_scale must be finite and > 0, got {out_scale}")
                if not 0 <= int(out_zero_point) <= 255:
                    raise ValueError(f"qgemm: out_zero_point must lie in [0, 255], got {out_zero_point}")
                kind, mult = 2, requant_multiplier(sa[0], sb, so)
                if bq is not None:
                    bq = (bq / so).astype(np.float32)
        odt = (np.int32, np.float32, np.uint8)[kind]
        if out is None:
            out = np.empty((M, N), odt)
        elif out.dtype != odt or out.shape != (M, N) or not out.flags.c_contiguous:
            raise ValueError(f"qgemm: out must be a C-contiguous {np.dtype(odt).name} {(M, N)} array, "
                             f"got {out.dtype} {out.shape}")
        a = np.ascontiguousarray(a)
        self._qgemm(a, b, out, kind, za, sa, sb, mult, bq, int(out_zero_point), relu)
        return out

    def _qgemm_float_a(self, a, b, out, a_zero_point, a_scale, b_scale, bias, activation, out_scale):
        if a_zero_point is not None or a_scale is not None or out_scale is not None:
            raise ValueError("qgemm: a float a is quantized per row inside the call; a_zero_point, a_scale "
                             "and out_scale do not apply")
        if b_scale is None:
            raise ValueError("qgemm: a float a needs b_scale (the output is dequantized to float)")
        if not isinstance(b, QPackedWeights):
            b = self.qpack(b)
        M, K = a.shape
        if K != b.K:
            raise ValueError(f"qgemm: shapes do not match: a {a.shape} @ b {b.shape}")
        if activation not in ("linear", "relu"):
            raise ValueError(f"qgemm: fused activation must be 'linear' or 'relu', got {activation!r}")
        N = b.N
        if np.size(b_scale) not in (1, N):
            raise ValueError(f"qgemm: b_scale must be one value or one per column ({N}), got {np.size(b_scale)}")
        sb = np.ascontiguousarray(np.broadcast_to(np.asarray(b_scale, np.float32).reshape(-1), (N,)))
        _check_scale("qgemm", sb)
        bq = None
        if bias is not None:
            bq = np.ascontiguousarray(np.asarray(bias, np.float32).reshape(-1))
            if bq.size != N or not np.all(np.isfinite(bq)):
                raise ValueError(f"qgemm: bias must hold {N} finite values")
        if out is None:
            out = np.empty((M, N), np.float32)
        elif out.dtype != np.float32 or out.shape != (M, N) or not out.flags.c_contiguous:
            raise ValueError(f"qgemm: out must be a C-contiguous float32 {(M, N)} array, got {out.dtype} {out.shape}")
        x = np.ascontiguousarray(a, np.float32)
        self._qgemm_dyn(x, b, out, np.empty(M, np.float32), np.empty(M, np.int32), sb, bq, activation == "relu")
        return out

    def _qgemm_dyn(self, x, b, out, sa, za, sb, bias, relu):
        """quantize rows of float x (u8, dynamic; sa / za written), then the float epilogue."""
        q = np.empty(x.shape, np.uint8)
        self._quantize_rows(x, q, sa, za, False)
        self._qgemm(q, b, out, 1, za, sa, sb, None, bias, 0, relu)

    def _qgemm_given(self, x, b, out, kind, za, sa, sb, mult, bias, zo, relu):
        """quantize float x with the given (one) scale / zero point, then _qgemm."""
        q = np.empty(x.shape, np.uint8)
        self._quantize_given(x, q, sa, za if za is not None else np.zeros(1, np.int32), False)
        self._qgemm(q, b, out, kind, za, sa, sb, mult, bias, zo, relu)

    def _qgemm(self, a, b, out, kind, za, sa, sb, mult, bias, zo, relu):
        # float64 products and sums of integers below 2^53 are exact in any order
        acc = (a.astype(np.float64) @ b.b.astype(np.float64)).astype(np.int64)
        if za is not None:
            acc -= za.astype(np.int64)[:, None] * b.colsum.astype(np.int64)[None, :]
        if kind == 0:
            out[:] = acc.astype(np.int32)
            return
        d = acc.astype(np.float32)
        if kind == 1:
            y = d * (sa[:, None] * sb[None, :])
            if bias is not None:
                y = y + bias
            if relu:
                y = np.where(y > 0, y, np.float32(0))
            out[:] = y
            return
        y = d * mult
        if bias is not None:
            y = y + bias
        q = np.rint(y) + np.float32(zo)
        out[:] = np.clip(q, zo if relu else 0, 255)


def requant_multiplier(a_scale, b_scale, out_scale):
    """float32 (a_scale * b_scale) / out_scale per column (the u8 epilogue's factor)."""
    return ((np.float32(a_scale) * np.asarray(b_scale, np.float32)) / np.float32(out_scale)).astype(np.float32)
