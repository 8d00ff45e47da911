"""GemmMixin: NumpyOps' GEMM and dense-layer methods backed by csrc/gemm
(module fastgrad._native.gemm).

The C path takes float32 2-D arrays whose last axis has unit stride (C-
contiguous arrays, or row views into larger ones: the C code takes leading
dimensions), a float32 (N,) bias, and outputs of the right shape. Anything
else — other dtypes, transposed or strided views, bad shapes — goes to
`super()`, i.e. NumpyOps, which also produces every error message. The thread
count is resolved per call (`fastgrad._config.get_num_threads()`) and passed
down. Signatures are NumpyOps' exactly (tests/test_ops_interface.py).

Data flow of a dense layer:
  forward   y = act(x @ w + b)  one fused C call (bias and activation applied
            in the GEMM's final store); softmax/log_softmax are not fused: the
            linear part is, then the row-wise kernel runs in place.
  backward  dz = act'(.) * dy, dw = x^T @ dz, db = column sums of dz,
            dx = dz @ w^T: the transposes are GEMM flags, never copies.
"""
from __future__ import annotations

import numpy as np

from .. import _native
from .._config import get_num_threads

_G = _native.module("gemm")
_F32 = np.dtype(np.float32)
_ndarray = np.ndarray
#: activations fused into the GEMM epilogue (codes = FG_ACT_* in csrc/fg_common.h)
_FUSED = {"linear": 0, "relu": 1, "sigmoid": 2, "tanh": 3, "gelu": 4, "gelu_tanh": 5}
_ROWWISE = ("softmax", "log_softmax")


def _mat(a) -> bool:
    """float32 2-D ndarray the C code can address: unit stride in the last
    axis and a row stride that is a whole number of floats >= the row."""
    if type(a) is not _ndarray or a.dtype != _F32 or a.ndim != 2:
        return False
    if a.flags.c_contiguous:
        return True
    s0, s1 = a.strides
    r, c = a.shape
    return (s1 == 4 or c <= 1) and (r <= 1 or (s0 % 4 == 0 and s0 >= 4 * c))


def _out_ok(out, shape) -> bool:
    return out is None or (_mat(out) and out.shape == shape and out.flags.writeable)


class GemmMixin:
    """gemm, dense_forward, dense_backward in C (float32)."""

    def gemm(self, a, b, out=None, trans_a=False, trans_b=False, alpha=1.0, beta=0.0):
        if _mat(a) and _mat(b):
            m = a.shape[1] if trans_a else a.shape[0]
            k = a.shape[0] if trans_a else a.shape[1]
            kb, n = (b.shape[1], b.shape[0]) if trans_b else b.shape
            if k == kb and _out_ok(out, (m, n)):
                if out is None:
                    out = np.empty((m, n), dtype=_F32)
                    beta = 0.0
                return _G.gemm(a, b, out, trans_a, trans_b, alpha, beta, get_num_threads())
        return super().gemm(a, b, out=out, trans_a=trans_a, trans_b=trans_b, alpha=alpha, beta=beta)

    def dense_forward(self, x, w, b=None, activation="linear", out=None, preact=None):
        code = _FUSED.get(activation)
        rowwise = code is None and activation in _ROWWISE
        if (code is not None or rowwise) and _mat(x) and _mat(w) and x.shape[1] == w.shape[0]:
            shape = (x.shape[0], w.shape[1])
            if (_out_ok(out, shape) and _out_ok(preact, shape)
                    and (b is None or (type(b) is _ndarray and b.dtype == _F32 and b.shape == (shape[1],)
                                       and b.flags.c_contiguous))):
                if out is None:
                    out = np.empty(shape, dtype=_F32)
                _G.dense_forward(x, w, b, 0 if rowwise else code, out, preact, get_num_threads())
                if rowwise:
                    getattr(self, activation)(out, out=out)
                return out
        return super().dense_forward(x, w, b=b, activation=activation, out=out, preact=preact)

    def dense_backward(self, dy, x, w, y, activation="linear", preact=None, dx=None, dw=None, db=None,
                       need_dx=True):
        if activation == "linear":
            dz = dy
        else:
            dz = self.backprop_activation(activation, dy, y, preact,
                                          out=self._scratch(dy.shape, dy.dtype, "dz"))
        dw = self.gemm(x, dz, out=dw, trans_a=True)          # (in, out) = x^T dz
        db = None if db is False else self.sum_rows(dz, out=db)
        dx = self.gemm(dz, w, out=dx, trans_b=True) if need_dx else None  # (rows, in) = dz w^T
        return dx, dw, db
