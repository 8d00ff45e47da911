"""AttnMixin: the attention ops of NumpyOps (backend/numpy_attention.py)
backed by csrc/attn (module fastgrad._native.attn).

bmm, attention_softmax(_backward) and the flash pair run in C for float32
C-contiguous arrays; the binding answers NotImplemented otherwise and NumPy
runs (and raises the errors). attention_forward / attention_backward are
NumpyOps' compositions, so they run on these C pieces (and on the C dropout)
without code of their own. Signatures are NumpyOps' exactly."""
from __future__ import annotations

import math

import numpy as np

from .. import _native
from .._threads import get_num_threads

_A = _native.module("attn")


def _scale(scale, q):
    return 1.0 / math.sqrt(q.shape[-1]) if scale is None and q.shape[-1] else (
        1.0 if scale is None else scale)


class AttnMixin:
    """C batched GEMM, fused masked softmax and blocked attention (float32)."""

    def bmm(self, a, b, out=None, trans_a=False, trans_b=False, alpha=1.0, beta=0.0):
        if out is None and isinstance(a, np.ndarray) and isinstance(b, np.ndarray) \
                and a.dtype == np.float32 and b.dtype == np.float32 and a.ndim == 3 and b.ndim == 3:
            M = a.shape[2] if trans_a else a.shape[1]
            N = b.shape[1] if trans_b else b.shape[2]
            out = np.empty((a.shape[0], M, N), np.float32)
            beta = 0.0
        r = _A.bmm_op(a, b, out, trans_a, trans_b, alpha, beta, get_num_threads())
        if r is NotImplemented:
            return super().bmm(a, b, out=out, trans_a=trans_a, trans_b=trans_b, alpha=alpha,
                               beta=beta)
        return r

    def attention_softmax(self, s, out=None, scale=1.0, key_valid=None, query_valid=None, mask=None,
                          causal=False):
        o = np.empty_like(s) if out is None and isinstance(s, np.ndarray) else out
        r = _A.softmax_op(s, o, scale, key_valid, query_valid, mask, causal, get_num_threads())
        if r is NotImplemented:
            return super().attention_softmax(s, out, scale, key_valid, query_valid, mask, causal)
        return r

    def attention_softmax_backward(self, dp, p, out=None, scale=1.0):
        o = np.empty_like(dp) if out is None and isinstance(dp, np.ndarray) else out
        r = _A.softmax_backward_op(dp, p, o, scale, get_num_threads())
        if r is NotImplemented:
            return super().attention_softmax_backward(dp, p, out, scale)
        return r

    def flash_attention_forward(self, q, k, v, out=None, lse=None, scale=None, key_valid=None,
                                query_valid=None, causal=False, block=128):
        if block == 128 and isinstance(q, np.ndarray) and q.ndim == 4 and isinstance(v, np.ndarray) \
                and v.ndim == 4:
            o = np.empty(q.shape[:3] + v.shape[3:], np.float32) if out is None else out
            l = np.empty(q.shape[:3], np.float32) if lse is None else lse
            r = _A.flash_forward_op(q, k, v, o, l, _scale(scale, q), key_valid, query_valid,
                                    causal, get_num_threads())
            if r is not NotImplemented:
                return r
        return super().flash_attention_forward(q, k, v, out, lse, scale, key_valid, query_valid,
                                               causal, block)

    def flash_attention_backward(self, dout, q, k, v, out, lse, scale=None, key_valid=None,
                                 query_valid=None, causal=False, dq=None, dk=None, dv=None,
                                 block=128):
        if block == 128 and isinstance(q, np.ndarray) and isinstance(k, np.ndarray) \
                and isinstance(v, np.ndarray):
            a = np.empty_like(q) if dq is None else dq
            b = np.empty_like(k) if dk is None else dk
            c = np.empty_like(v) if dv is None else dv
            r = _A.flash_backward_op(dout, q, k, v, out, lse, _scale(scale, q), key_valid,
                                     query_valid, causal, a, b, c, get_num_threads())
            if r is not NotImplemented:
                return r
        return super().flash_attention_backward(dout, q, k, v, out, lse, scale, key_valid,
                                                query_valid, causal, dq, dk, dv, block)
