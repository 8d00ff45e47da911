"""GemmMixin: NumpyOps' GEMM and dense-layer methods backed by csrc/gemm
(module fastgrad._native.gemm).

The C path takes float32 2-D arrays whose last axis has unit stride (C-
contiguous arrays, or row views into larger ones: the C code takes leading
dimensions), a float32 (N,) bias, and outputs of the right shape that do not
overlap an input. Anything else — other dtypes, transposed or strided views,
bad shapes — goes to `super()`, i.e. NumpyOps, which also produces every
error message. The thread
count is resolved per call (`fastgrad._threads.get_num_threads()`) and passed
down. Signatures are NumpyOps' exactly (tests/test_ops_interface.py).

Data flow of a dense layer:
  forward   y = act(x @ w + b)  one fused C call (bias and activation applied
            in the GEMM's final store); softmax/log_softmax are not fused: the
            linear part is, then the row-wise kernel runs in place.
  backward  dz = act'(.) * dy, dw = x^T @ dz, db = column sums of dz,
            dx = dz @ w^T: the transposes are GEMM flags, never copies.
"""
from __future__ import annotations

from .. import _native
from .._threads import get_num_threads

_G = _native.module("gemm")
#: activations fused into the GEMM epilogue: every element-wise FG_ACT_* code
#: (csrc/fg_common.h, read by the binding), with its by-name parameters
_FUSED = dict(_G.ACTIVATIONS)
_ROWWISE = ("softmax", "log_softmax")


class GemmMixin:
    """gemm, dense_forward, dense_backward in C (float32).

    The binding's *_op entry points check applicability in C and answer
    NotImplemented when the C path does not apply; then NumpyOps runs (and
    raises the errors). Per-call overhead ~1 us."""

    def gemm(self, a, b, out=None, trans_a=False, trans_b=False, alpha=1.0, beta=0.0):
        r = _G.gemm_op(a, b, out, trans_a, trans_b, alpha, beta, get_num_threads())
        if r is NotImplemented:
            return super().gemm(a, b, out=out, trans_a=trans_a, trans_b=trans_b, alpha=alpha, beta=beta)
        return r

    def dense_forward(self, x, w, b=None, activation="linear", out=None, preact=None):
        code = _FUSED.get(activation)
        if code is None:
            if activation not in _ROWWISE:
                return super().dense_forward(x, w, b=b, activation=activation, out=out, preact=preact)
            r = _G.dense_op(x, w, b, 0, out, preact, get_num_threads())
            if r is NotImplemented:
                return super().dense_forward(x, w, b=b, activation=activation, out=out, preact=preact)
            return getattr(self, activation)(r, out=r)  # softmax rows in place
        r = _G.dense_op(x, w, b, code, out, preact, get_num_threads())
        if r is NotImplemented:
            return super().dense_forward(x, w, b=b, activation=activation, out=out, preact=preact)
        return r

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
