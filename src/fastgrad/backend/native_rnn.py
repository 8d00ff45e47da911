"""RnnMixin: the recurrences of backend/numpy_rnn.py on csrc/rnn (module _native.rnn).

Each override takes the C path for float32 C-contiguous arrays of the
documented shapes (masks as uint8 views of bool arrays, no copy when already
contiguous) and otherwise returns NumpyOps' result. The whole sequence runs in
one C call; scratch memory is kept per (cell, n, T, u) and reused. Signatures
are NumpyOps' exactly.
"""
from __future__ import annotations

import numpy as np

from .. import _native
from .._threads import get_num_threads
from .numpy_ops import ACTIVATIONS as _CODES

_R = _native.module("rnn")
_F32 = np.dtype(np.float32)
_C_ACTS = ("linear", "relu", "sigmoid", "tanh")


def _ok(*arrs):
    for a in arrs:
        if a is not None and not (type(a) is np.ndarray and a.dtype == _F32 and a.flags.c_contiguous):
            return False
    return True


def _mask(mask):
    if mask is None:
        return None
    m = np.ascontiguousarray(mask)
    if m.dtype == np.bool_:
        return m.view(np.uint8)
    return (m != 0).view(np.uint8)


class RnnMixin:
    """NativeOps' sequence-layer ops (module docstring)."""

    def _rnn_scratch(self, cell, n, T, u):
        cache = self.__dict__.setdefault("_rnn_scratch_bufs", {})
        key = (cell, n, T, u)
        buf = cache.get(key)
        if buf is None:
            if len(cache) > 8:
                cache.clear()
            buf = np.empty(_R.scratch_size(cell, n, T, u), _F32)
            cache[key] = buf
        return buf

    def embedding_backward(self, ids, dy, dtable):
        if not (_ok(dy, dtable) and dtable.ndim == 2 and dy.shape == ids.shape + (dtable.shape[1],)):
            return super().embedding_backward(ids, dy, dtable)
        _R.embedding_backward(dtable, np.ascontiguousarray(ids, dtype=np.int64), dy)
        return dtable

    def simple_rnn_forward(self, xw, rk, h0, mask, reverse, rmask, act, hs):
        if not (_ok(xw, rk, h0, rmask, hs) and act in _C_ACTS):
            return super().simple_rnn_forward(xw, rk, h0, mask, reverse, rmask, act, hs)
        n, T, u = hs.shape
        _R.simple_rnn_forward(hs, xw, rk, h0, _mask(mask), bool(reverse), rmask, _CODES[act],
                              self._rnn_scratch(1, n, T, u), get_num_threads())
        return hs

    def simple_rnn_backward(self, dhs, dhT, xw, rk, h0, hs, mask, reverse, rmask, act, dxw, drk, dh0):
        if not (_ok(dhs, dhT, rk, h0, hs, rmask, dxw, drk, dh0) and act in _C_ACTS):
            return super().simple_rnn_backward(dhs, dhT, xw, rk, h0, hs, mask, reverse, rmask, act,
                                               dxw, drk, dh0)
        n, T, u = hs.shape
        _R.simple_rnn_backward(dxw, drk, dh0, dhs, dhT, rk, h0, hs, _mask(mask), bool(reverse), rmask,
                               _CODES[act], self._rnn_scratch(1, n, T, u), get_num_threads())
        return dxw

    def lstm_forward(self, xw, rk, h0, c0, mask, reverse, rmask, act, rec_act, hs, cs, gates):
        if not (_ok(xw, rk, h0, c0, rmask, hs, cs, gates) and act in _C_ACTS and rec_act in _C_ACTS):
            return super().lstm_forward(xw, rk, h0, c0, mask, reverse, rmask, act, rec_act, hs, cs, gates)
        n, T, u = hs.shape
        _R.lstm_forward(hs, cs, gates, xw, rk, h0, c0, _mask(mask), bool(reverse), rmask, _CODES[act],
                        _CODES[rec_act], self._rnn_scratch(4, n, T, u), get_num_threads())
        return hs

    def lstm_backward(self, dhs, dhT, dcT, xw, rk, h0, c0, hs, cs, gates, mask, reverse, rmask, act,
                      rec_act, dxw, drk, dh0, dc0):
        if not (_ok(dhs, dhT, dcT, rk, h0, c0, hs, cs, gates, rmask, dxw, drk, dh0, dc0)
                and act in _C_ACTS and rec_act in _C_ACTS):
            return super().lstm_backward(dhs, dhT, dcT, xw, rk, h0, c0, hs, cs, gates, mask, reverse,
                                         rmask, act, rec_act, dxw, drk, dh0, dc0)
        n, T, u = hs.shape
        _R.lstm_backward(dxw, drk, dh0, dc0, dhs, dhT, dcT, rk, h0, c0, hs, cs, gates, _mask(mask),
                         bool(reverse), rmask, _CODES[act], _CODES[rec_act],
                         self._rnn_scratch(4, n, T, u), get_num_threads())
        return dxw

    def gru_forward(self, xw, rk, brec, h0, mask, reverse, rmask, act, rec_act, hs, gates):
        if not (_ok(xw, rk, brec, h0, rmask, hs, gates) and act in _C_ACTS and rec_act in _C_ACTS):
            return super().gru_forward(xw, rk, brec, h0, mask, reverse, rmask, act, rec_act, hs, gates)
        n, T, u = hs.shape
        _R.gru_forward(hs, gates, xw, rk, brec, h0, _mask(mask), bool(reverse), rmask, _CODES[act],
                       _CODES[rec_act], self._rnn_scratch(3, n, T, u), get_num_threads())
        return hs

    def gru_backward(self, dhs, dhT, xw, rk, brec, h0, hs, gates, mask, reverse, rmask, act, rec_act,
                     dxw, drk, dbrec, dh0):
        if not (_ok(dhs, dhT, rk, h0, hs, gates, rmask, dxw, drk, dbrec, dh0)
                and act in _C_ACTS and rec_act in _C_ACTS):
            return super().gru_backward(dhs, dhT, xw, rk, brec, h0, hs, gates, mask, reverse, rmask, act,
                                        rec_act, dxw, drk, dbrec, dh0)
        n, T, u = hs.shape
        _R.gru_backward(dxw, drk, dbrec, dh0, dhs, dhT, rk, h0, hs, gates, _mask(mask), bool(reverse),
                        rmask, _CODES[act], _CODES[rec_act], self._rnn_scratch(3, n, T, u),
                        get_num_threads())
        return dxw
