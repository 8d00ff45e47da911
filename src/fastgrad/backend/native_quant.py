"""QuantMixin: NumpyOps' int8 ops (backend/numpy_quant.py) backed by
csrc/quant (module fastgrad._native.quant).

The public methods (quantize, dequantize, qpack, qgemm) are QuantNumpyOps'
own: they validate and convert, then call the private cores, which this mixin
replaces with the C kernels (same integers and floats, bit for bit; tested).
"""
from __future__ import annotations

import numpy as np

from .. import _native
from .._threads import get_num_threads

_Q = _native.module("quant")


class QuantMixin:
    """C kernels for the int8 cores."""

    def _quantize_rows(self, x, q, s, zp, is_s8):
        try:
            _Q.quantize_rows(x, q, s, zp, is_s8, get_num_threads())
        except ValueError as exc:
            raise ValueError(f"quantize: x {x.shape} contains NaN or inf (dynamic quantization needs "
                             f"finite values)") from exc

    def _quantize_given(self, x, q, s, zp, is_s8):
        try:
            _Q.quantize_given(x, q, s, zp, is_s8, get_num_threads())
        except ValueError as exc:
            raise ValueError(f"quantize: x {x.shape} contains NaN") from exc

    def _dequantize(self, q, y, s, zp):
        _Q.dequantize(q, y, s, zp, q.dtype == np.int8, get_num_threads())

    def _qpack_native(self, b):
        return _Q.pack_b(b)[0]

    def _qgemm(self, a, b, out, kind, za, sa, sb, mult, bias, zo, relu):
        packed = b.packed
        if packed is None:  # packed under the NumPy backend: pack now (kept)
            packed = b.packed = _Q.pack_b(b.b)[0]
        _Q.qgemm(a, packed, b.colsum, b.K, b.N, out, kind, za, sa, sb, mult, bias, zo, relu,
                 get_num_threads())

    def _qgemm_dyn(self, x, b, out, sa, za, sb, bias, relu):
        packed = b.packed
        if packed is None:
            packed = b.packed = _Q.pack_b(b.b)[0]
        try:
            _Q.qgemm_dynamic(x, packed, b.colsum, b.K, b.N, out, 1, sa, za, sb, bias, relu, get_num_threads())
        except ValueError as exc:
            raise ValueError(f"qgemm: a {x.shape} contains NaN or inf (dynamic quantization needs finite "
                             "values)") from exc

    def _qgemm_given(self, x, b, out, kind, za, sa, sb, mult, bias, zo, relu):
        packed = b.packed
        if packed is None:
            packed = b.packed = _Q.pack_b(b.b)[0]
        try:
            _Q.qgemm(x, packed, b.colsum, b.K, b.N, out, kind, za, sa, sb, mult, bias, zo, relu,
                     get_num_threads())
        except ValueError as exc:
            raise ValueError(f"quantize: x {x.shape} contains NaN") from exc
