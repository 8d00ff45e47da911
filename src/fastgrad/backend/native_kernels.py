"""KernelsMixin: NumpyOps methods backed by csrc/kernels (module _native.kernels).

Each override takes the C path only for what the kernels handle — float32,
C-contiguous arrays (and the same 2-D views NumpyOps uses) — and otherwise
returns `super().<op>(...)`, i.e. NumpyOps, which also produces every error
message for bad arguments. Signatures are NumpyOps' exactly
(tests/test_ops_interface.py). The thread count is resolved per call by
`fastgrad._threads.get_num_threads()` and passed down; kernels never read
global state.

Numerics (details in csrc/kernels/*.h): element-wise functions are within
~2 ULP of the correctly rounded float32 result; reductions and loss sums run in
a fixed order, bitwise identical for any thread count; optimizer updates use
NumpyOps' float32 operation order.
"""
from __future__ import annotations

from typing import Any

import math

import numpy as np

from .. import _native
from .._threads import get_num_threads
from .numpy_ops import ACTIVATIONS as _CODES

_K = _native.module("kernels")

_F32 = np.dtype(np.float32)
_I64 = np.dtype(np.int64)
_U8 = np.dtype(np.uint8)
_BOOL = np.dtype(np.bool_)
_U64_MASK = 0xFFFFFFFFFFFFFFFF

_RELU, _SIGMOID, _TANH, _GELU, _GELU_TANH = (_CODES[n] for n in ("relu", "sigmoid", "tanh", "gelu", "gelu_tanh"))


def _ok(a: Any) -> bool:
    """float32, C-contiguous, non-empty ndarray (the C path)."""
    return type(a) is np.ndarray and a.dtype == _F32 and a.flags.c_contiguous and a.size > 0


def _finite(v: Any) -> bool:
    """A finite real parameter (else NumpyOps runs, and raises what it must)."""
    try:
        return math.isfinite(v)
    except TypeError:
        return False


def _relu_params_ok(negative_slope: Any, max_value: Any, threshold: Any) -> bool:
    return _finite(negative_slope) and _finite(threshold) and (
        max_value is None or (isinstance(max_value, (int, float, np.floating, np.integer)) and bool(max_value >= 0)))


def _ok_out(out: Any, like: Any) -> bool:
    return out is None or (type(out) is np.ndarray and out.dtype == _F32 and out.flags.c_contiguous
                           and out.flags.writeable and out.shape == like.shape)


def _new(x, out):
    return np.empty(x.shape, dtype=_F32) if out is None else out


def _as2d(a):
    """NumpyOps' _as_2d: (rows, rest)."""
    return a if a.ndim == 2 else a.reshape(a.shape[0], -1)


def _weights(sample_weight, rows):
    """float32 contiguous (rows,) weights, or False when NumpyOps must handle them."""
    if sample_weight is None:
        return None
    sw = sample_weight
    if not (type(sw) is np.ndarray and sw.dtype == _F32 and sw.flags.c_contiguous):
        try:
            sw = np.ascontiguousarray(np.asarray(sample_weight, dtype=_F32).reshape(-1))
        except (TypeError, ValueError):
            return False
    return sw if sw.size == rows else False


class KernelsMixin:
    """Activations, losses, reductions, optimizer updates and dropout in C."""

    # ------------------------------------------------------------ activations
    def _act(self, code, x, out):
        out = _new(x, out)
        _K.act_forward(x, out, code, get_num_threads())
        return out

    def relu(self, x, out=None):
        if _ok(x) and _ok_out(out, x):
            return self._act(_RELU, x, out)
        return super().relu(x, out=out)

    def sigmoid(self, x, out=None):
        if _ok(x) and _ok_out(out, x):
            return self._act(_SIGMOID, x, out)
        return super().sigmoid(x, out=out)

    def tanh(self, x, out=None):
        if _ok(x) and _ok_out(out, x):
            return self._act(_TANH, x, out)
        return super().tanh(x, out=out)

    def gelu(self, x, out=None):
        if _ok(x) and _ok_out(out, x):
            return self._act(_GELU, x, out)
        return super().gelu(x, out=out)

    def gelu_tanh(self, x, out=None):
        if _ok(x) and _ok_out(out, x):
            return self._act(_GELU_TANH, x, out)
        return super().gelu_tanh(x, out=out)

    def leaky_relu(self, x, out=None, negative_slope=0.2):
        if _ok(x) and _ok_out(out, x) and _finite(negative_slope):
            out = _new(x, out)
            _K.act_forward(x, out, _CODES["leaky_relu"], get_num_threads(), negative_slope=negative_slope)
            return out
        return super().leaky_relu(x, out=out, negative_slope=negative_slope)

    def elu(self, x, out=None, alpha=1.0):
        if _ok(x) and _ok_out(out, x) and _finite(alpha):
            out = _new(x, out)
            _K.act_forward(x, out, _CODES["elu"], get_num_threads(), alpha=alpha)
            return out
        return super().elu(x, out=out, alpha=alpha)

    def selu(self, x, out=None):
        if _ok(x) and _ok_out(out, x):
            return self._act(_CODES["selu"], x, out)
        return super().selu(x, out=out)

    def silu(self, x, out=None):
        if _ok(x) and _ok_out(out, x):
            return self._act(_CODES["silu"], x, out)
        return super().silu(x, out=out)

    def softplus(self, x, out=None):
        if _ok(x) and _ok_out(out, x):
            return self._act(_CODES["softplus"], x, out)
        return super().softplus(x, out=out)

    def softsign(self, x, out=None):
        if _ok(x) and _ok_out(out, x):
            return self._act(_CODES["softsign"], x, out)
        return super().softsign(x, out=out)

    def hard_sigmoid(self, x, out=None):
        if _ok(x) and _ok_out(out, x):
            return self._act(_CODES["hard_sigmoid"], x, out)
        return super().hard_sigmoid(x, out=out)

    def hard_silu(self, x, out=None):
        if _ok(x) and _ok_out(out, x):
            return self._act(_CODES["hard_silu"], x, out)
        return super().hard_silu(x, out=out)

    def mish(self, x, out=None):
        if _ok(x) and _ok_out(out, x):
            return self._act(_CODES["mish"], x, out)
        return super().mish(x, out=out)

    def exponential(self, x, out=None):
        if _ok(x) and _ok_out(out, x):
            return self._act(_CODES["exponential"], x, out)
        return super().exponential(x, out=out)

    def relu6(self, x, out=None):
        if _ok(x) and _ok_out(out, x):
            return self._act(_CODES["relu6"], x, out)
        return super().relu6(x, out=out)

    def relu_general(self, x, out=None, negative_slope=0.0, max_value=None, threshold=0.0):
        if _ok(x) and _ok_out(out, x) and _relu_params_ok(negative_slope, max_value, threshold):
            out = _new(x, out)
            _K.act_forward(x, out, _CODES["relu_general"], get_num_threads(), negative_slope=negative_slope,
                           max_value=max_value, threshold=threshold)
            return out
        return super().relu_general(x, out=out, negative_slope=negative_slope, max_value=max_value,
                                    threshold=threshold)

    def exp(self, x, out=None):
        if _ok(x) and _ok_out(out, x):
            out = _new(x, out)
            return _K.exp(x, out, get_num_threads())
        return super().exp(x, out=out)

    def log(self, x, out=None):
        if _ok(x) and _ok_out(out, x):
            out = _new(x, out)
            return _K.log(x, out, get_num_threads())
        return super().log(x, out=out)

    def softmax(self, x, out=None):
        if _ok(x) and x.ndim >= 2 and x.size and _ok_out(out, x):
            out = _new(x, out)      # rows over the last axis, any rank (as NumpyOps)
            n = x.shape[-1]
            _K.softmax_forward(x.reshape(-1, n), out.reshape(-1, n), False, get_num_threads())
            return out
        return super().softmax(x, out=out)

    def log_softmax(self, x, out=None):
        if _ok(x) and x.ndim >= 2 and x.size and _ok_out(out, x):
            out = _new(x, out)      # rows over the last axis, any rank (as NumpyOps)
            n = x.shape[-1]
            _K.softmax_forward(x.reshape(-1, n), out.reshape(-1, n), True, get_num_threads())
            return out
        return super().log_softmax(x, out=out)

    def _bwd(self, code, dy, ref, out):
        out = _new(dy, out)
        _K.act_backward(dy, ref, out, code, get_num_threads())
        return out

    def backprop_relu(self, dy, y, out=None):
        if _ok(dy) and _ok(y) and y.shape == dy.shape and _ok_out(out, dy):
            return self._bwd(_RELU, dy, y, out)
        return super().backprop_relu(dy, y, out=out)

    def backprop_sigmoid(self, dy, y, out=None):
        if _ok(dy) and _ok(y) and y.shape == dy.shape and _ok_out(out, dy):
            return self._bwd(_SIGMOID, dy, y, out)
        return super().backprop_sigmoid(dy, y, out=out)

    def backprop_tanh(self, dy, y, out=None):
        if _ok(dy) and _ok(y) and y.shape == dy.shape and _ok_out(out, dy):
            return self._bwd(_TANH, dy, y, out)
        return super().backprop_tanh(dy, y, out=out)

    def backprop_gelu(self, dy, x, out=None):
        if _ok(dy) and _ok(x) and x.shape == dy.shape and _ok_out(out, dy):
            return self._bwd(_GELU, dy, x, out)
        return super().backprop_gelu(dy, x, out=out)

    def backprop_gelu_tanh(self, dy, x, out=None):
        if _ok(dy) and _ok(x) and x.shape == dy.shape and _ok_out(out, dy):
            return self._bwd(_GELU_TANH, dy, x, out)
        return super().backprop_gelu_tanh(dy, x, out=out)

    def _bwd_ok(self, dy, ref, out):
        return _ok(dy) and _ok(ref) and ref.shape == dy.shape and _ok_out(out, dy)

    def backprop_leaky_relu(self, dy, x, out=None, negative_slope=0.2):
        if self._bwd_ok(dy, x, out) and _finite(negative_slope):
            out = _new(dy, out)
            _K.act_backward(dy, x, out, _CODES["leaky_relu"], get_num_threads(), negative_slope=negative_slope)
            return out
        return super().backprop_leaky_relu(dy, x, out=out, negative_slope=negative_slope)

    def backprop_elu(self, dy, x, out=None, alpha=1.0):
        if self._bwd_ok(dy, x, out) and _finite(alpha):
            out = _new(dy, out)
            _K.act_backward(dy, x, out, _CODES["elu"], get_num_threads(), alpha=alpha)
            return out
        return super().backprop_elu(dy, x, out=out, alpha=alpha)

    def backprop_selu(self, dy, x, out=None):
        if self._bwd_ok(dy, x, out):
            return self._bwd(_CODES["selu"], dy, x, out)
        return super().backprop_selu(dy, x, out=out)

    def backprop_silu(self, dy, x, out=None):
        if self._bwd_ok(dy, x, out):
            return self._bwd(_CODES["silu"], dy, x, out)
        return super().backprop_silu(dy, x, out=out)

    def backprop_softplus(self, dy, x, out=None):
        if self._bwd_ok(dy, x, out):
            return self._bwd(_CODES["softplus"], dy, x, out)
        return super().backprop_softplus(dy, x, out=out)

    def backprop_softsign(self, dy, x, out=None):
        if self._bwd_ok(dy, x, out):
            return self._bwd(_CODES["softsign"], dy, x, out)
        return super().backprop_softsign(dy, x, out=out)

    def backprop_hard_sigmoid(self, dy, y, out=None):
        if self._bwd_ok(dy, y, out):
            return self._bwd(_CODES["hard_sigmoid"], dy, y, out)
        return super().backprop_hard_sigmoid(dy, y, out=out)

    def backprop_hard_silu(self, dy, x, out=None):
        if self._bwd_ok(dy, x, out):
            return self._bwd(_CODES["hard_silu"], dy, x, out)
        return super().backprop_hard_silu(dy, x, out=out)

    def backprop_mish(self, dy, x, out=None):
        if self._bwd_ok(dy, x, out):
            return self._bwd(_CODES["mish"], dy, x, out)
        return super().backprop_mish(dy, x, out=out)

    def backprop_exponential(self, dy, y, out=None):
        if self._bwd_ok(dy, y, out):
            return self._bwd(_CODES["exponential"], dy, y, out)
        return super().backprop_exponential(dy, y, out=out)

    def backprop_relu6(self, dy, y, out=None):
        if self._bwd_ok(dy, y, out):
            return self._bwd(_CODES["relu6"], dy, y, out)
        return super().backprop_relu6(dy, y, out=out)

    def backprop_relu_general(self, dy, x, out=None, negative_slope=0.0, max_value=None, threshold=0.0):
        if self._bwd_ok(dy, x, out) and _relu_params_ok(negative_slope, max_value, threshold):
            out = _new(dy, out)
            _K.act_backward(dy, x, out, _CODES["relu_general"], get_num_threads(),
                            negative_slope=negative_slope, max_value=max_value, threshold=threshold)
            return out
        return super().backprop_relu_general(dy, x, out=out, negative_slope=negative_slope,
                                             max_value=max_value, threshold=threshold)

    def backprop_softmax(self, dy, y, out=None):
        if _ok(dy) and _ok(y) and dy.ndim >= 2 and dy.size and y.shape == dy.shape and _ok_out(out, dy):
            out = _new(dy, out)
            n = dy.shape[-1]
            _K.softmax_backward(dy.reshape(-1, n), y.reshape(-1, n), out.reshape(-1, n), False,
                                get_num_threads())
            return out
        return super().backprop_softmax(dy, y, out=out)

    def backprop_log_softmax(self, dy, y, out=None):
        if _ok(dy) and _ok(y) and dy.ndim >= 2 and dy.size and y.shape == dy.shape and _ok_out(out, dy):
            out = _new(dy, out)
            n = dy.shape[-1]
            _K.softmax_backward(dy.reshape(-1, n), y.reshape(-1, n), out.reshape(-1, n), True,
                                get_num_threads())
            return out
        return super().backprop_log_softmax(dy, y, out=out)

    # ------------------------------------------------------------ losses
    def _pair(self, pred, target, grad_out, sample_weight):
        """(pred2d, target2d, grad, grad2d, weights, rows, cols) for the C path, or None."""
        if not (_ok(pred) and _ok(target) and pred.shape == target.shape and pred.ndim >= 1
                and _ok_out(grad_out, pred)):
            return None
        rows = pred.shape[0]
        sw = _weights(sample_weight, rows)
        if sw is False:
            return None
        g = _new(pred, grad_out)
        return _as2d(pred), _as2d(target), g, _as2d(g), sw, rows, pred.size // rows

    def mse(self, pred, target, sample_weight=None, grad_out=None):
        a = self._pair(pred, target, grad_out, sample_weight)
        if a is None:
            return super().mse(pred, target, sample_weight=sample_weight, grad_out=grad_out)
        p2, t2, g, g2, sw, rows, cols = a
        n = rows * cols
        s = _K.mse(p2, t2, sw, g2, 1.0 / n, get_num_threads())
        return s / n, g

    def binary_crossentropy(self, prob, target, sample_weight=None, grad_out=None, eps=1e-7):
        a = self._pair(prob, target, grad_out, sample_weight) if 0.0 <= eps < 0.5 else None
        if a is None:
            return super().binary_crossentropy(prob, target, sample_weight=sample_weight, grad_out=grad_out,
                                               eps=eps)
        p2, t2, g, g2, sw, rows, cols = a
        n = rows * cols
        s = _K.bce_prob(p2, t2, sw, g2, eps, 1.0 / n, get_num_threads())
        return s / n, g

    def categorical_crossentropy(self, prob, target, sample_weight=None, grad_out=None, eps=1e-7):
        a = None
        if 0.0 <= eps < 0.5 and (grad_out is None or not (np.shares_memory(grad_out, prob)
                                                          or np.shares_memory(grad_out, target))):
            a = self._pair(prob, target, grad_out, sample_weight)
        if a is None:
            return super().categorical_crossentropy(prob, target, sample_weight=sample_weight, grad_out=grad_out,
                                                    eps=eps)
        p2, t2, g, g2, sw, rows, cols = a
        s = _K.cce_prob(p2, t2, sw, g2, eps, 1.0 / rows, get_num_threads())
        return s / rows, g

    def binary_crossentropy_from_logits(self, logits, target, sample_weight=None, grad_out=None):
        a = self._pair(logits, target, grad_out, sample_weight)
        if a is None:
            return super().binary_crossentropy_from_logits(logits, target, sample_weight=sample_weight,
                                                           grad_out=grad_out)
        x2, t2, g, g2, sw, rows, cols = a
        n = rows * cols
        s = _K.sigmoid_bce(x2, t2, sw, g2, 1.0 / n, get_num_threads())
        return s / n, g

    def softmax_crossentropy(self, logits, target, sample_weight=None, grad_out=None):
        a = self._pair(logits, target, grad_out, sample_weight)
        if a is None:
            return super().softmax_crossentropy(logits, target, sample_weight=sample_weight, grad_out=grad_out)
        x2, t2, g, g2, sw, rows, cols = a
        s = _K.softmax_xent(x2, t2, sw, g2, 1.0 / rows, get_num_threads())
        return s / rows, g

    def sparse_softmax_crossentropy(self, logits, labels, sample_weight=None, grad_out=None):
        if _ok(logits) and logits.ndim == 2 and _ok_out(grad_out, logits):
            lab = labels
            if not (type(lab) is np.ndarray and lab.dtype == _I64 and lab.flags.c_contiguous):
                lab = np.asarray(labels)
                lab = np.ascontiguousarray(lab.reshape(-1), dtype=_I64) if lab.dtype.kind in "iu" else None
            rows = logits.shape[0]
            sw = _weights(sample_weight, rows)
            if lab is not None and lab.size == rows and sw is not False:
                g = _new(logits, grad_out)
                s, _ = _K.sparse_softmax_xent(logits, lab, sw, g, 1.0 / rows, get_num_threads())
                return s / rows, g
        return super().sparse_softmax_crossentropy(logits, labels, sample_weight=sample_weight,
                                                   grad_out=grad_out)

    # ------------------------------------------------------------ reductions
    def sum_rows(self, x, out=None):
        if (type(x) is np.ndarray and x.dtype == _F32 and x.flags.c_contiguous and x.ndim == 2
                and (out is None or (type(out) is np.ndarray and out.dtype == _F32 and out.flags.c_contiguous
                                     and out.flags.writeable and out.shape == (x.shape[1],)))):
            if out is None:
                out = np.empty(x.shape[1], dtype=_F32)
            return _K.sum_rows(x, out, get_num_threads())
        return super().sum_rows(x, out=out)

    def all_finite(self, x):
        if type(x) is np.ndarray and x.dtype == _F32 and x.flags.c_contiguous:
            return _K.all_finite(x, get_num_threads())
        return super().all_finite(x)

    def global_norm(self, x):
        if type(x) is np.ndarray and x.dtype == _F32 and x.flags.c_contiguous:
            return math.sqrt(_K.sumsq(x, get_num_threads()))
        return super().global_norm(x)

    def clip_by_norm(self, x, max_norm):
        if _ok(x) and x.flags.writeable and max_norm > 0:
            n = math.sqrt(_K.sumsq(x, get_num_threads()))
            if n > max_norm:
                _K.scale(x, float(np.float32(max_norm / n)), get_num_threads())
            return n
        return super().clip_by_norm(x, max_norm)

    def clip_by_value(self, x, lo, hi):
        if _ok(x) and x.flags.writeable and lo <= hi:
            _K.clip_value(x, lo, hi, get_num_threads())
            return x
        return super().clip_by_value(x, lo, hi)

    # ------------------------------------------------------------ optimizers
    @staticmethod
    def _states_ok(param, grad, *states):
        if not (_ok(param) and _ok(grad) and param.flags.writeable and grad.size == param.size):
            return False
        for s in states:
            if s is not None and not (_ok(s) and s.flags.writeable and s.size == param.size):
                return False
        return True

    def sgd_update(self, param, grad, *, lr, momentum=0.0, velocity=None, nesterov=False,
                   weight_decay=0.0, decoupled=False):
        self._check_sgd(param, grad, velocity, lr, momentum, weight_decay)
        vel = velocity if momentum != 0.0 else None
        if (momentum == 0.0 or velocity is not None) and self._states_ok(param, grad, vel):
            _K.sgd_update(param, grad, vel, lr, momentum, nesterov, weight_decay, decoupled, get_num_threads())
            return param
        return super().sgd_update(param, grad, lr=lr, momentum=momentum, velocity=velocity, nesterov=nesterov,
                                  weight_decay=weight_decay, decoupled=decoupled)

    def adagrad_update(self, param, grad, accum, *, lr, eps=1e-7, weight_decay=0.0, decoupled=False):
        self._check_adagrad(param, grad, accum, lr, eps, weight_decay)
        if self._states_ok(param, grad, accum) and accum is not None:
            _K.adagrad_update(param, grad, accum, lr, eps, weight_decay, decoupled, get_num_threads())
            return param
        return super().adagrad_update(param, grad, accum, lr=lr, eps=eps, weight_decay=weight_decay,
                                      decoupled=decoupled)

    def rmsprop_update(self, param, grad, ms, *, lr, rho=0.9, eps=1e-7, momentum=0.0, mom=None,
                       centered=False, mg=None, weight_decay=0.0, decoupled=False):
        self._check_rmsprop(param, grad, ms, mom, mg, lr, rho, eps, momentum, centered, weight_decay)
        mo = mom if momentum else None
        mgu = mg if centered else None
        if ((not momentum or mom is not None) and (not centered or mg is not None) and ms is not None
                and self._states_ok(param, grad, ms, mo, mgu)):
            _K.rmsprop_update(param, grad, ms, mo, mgu, lr, rho, momentum, eps, bool(centered), weight_decay,
                              decoupled, get_num_threads())
            return param
        return super().rmsprop_update(param, grad, ms, lr=lr, rho=rho, eps=eps, momentum=momentum, mom=mom,
                                      centered=centered, mg=mg, weight_decay=weight_decay, decoupled=decoupled)

    def adam_update(self, param, grad, m, v, *, lr, beta1=0.9, beta2=0.999, eps=1e-7, step,
                    weight_decay=0.0, decoupled=False):
        step = self._check_adam(param, grad, m, v, lr, beta1, beta2, eps, step, weight_decay)
        if m is not None and v is not None and self._states_ok(param, grad, m, v):
            _K.adam_update(param, grad, m, v, lr, beta1, beta2, eps, int(step), weight_decay, decoupled,
                           get_num_threads())
            return param
        return super().adam_update(param, grad, m, v, lr=lr, beta1=beta1, beta2=beta2, eps=eps, step=step,
                                   weight_decay=weight_decay, decoupled=decoupled)

    # ------------------------------------------------------------ dropout
    def dropout(self, x, rate, seed, offset=0, out=None, mask=None):
        if _ok(x) and _ok_out(out, x) and 0.0 <= rate < 1.0 and offset >= 0:
            m = mask
            if m is not None:
                if (type(m) is np.ndarray and m.dtype in (_U8, _BOOL) and m.flags.c_contiguous
                        and m.flags.writeable and m.size == x.size):
                    m = m.view(_U8)
                else:
                    m = False
            if m is not False:
                out = _new(x, out)
                return _K.dropout_forward(x, out, m, rate, int(seed) & _U64_MASK, int(offset) & _U64_MASK,
                                          get_num_threads())
        return super().dropout(x, rate, seed, offset=offset, out=out, mask=mask)

    def backprop_dropout(self, dy, mask, rate, out=None):
        if (_ok(dy) and _ok_out(out, dy) and type(mask) is np.ndarray and mask.dtype in (_U8, _BOOL)
                and mask.flags.c_contiguous and mask.size == dy.size and 0.0 <= rate < 1.0):
            out = _new(dy, out)
            return _K.dropout_backward(dy, mask.view(_U8), out, rate, get_num_threads())
        return super().backprop_dropout(dy, mask, rate, out=out)

    # ------------------------------------------------------------ normalisation
    # NumpyOps views x as (shape[0], size / shape[0]); LayerNorm statistics are
    # per row, BatchNorm statistics per column. mean / rstd buffers that are not
    # float32 (e.g. float64) receive the float32 statistics the C computes.
    # Fast path (what the layers do: float32 buffers for every output): the
    # binding validates everything itself, so try it first and take the
    # careful path (temporaries for float64 statistics, NumpyOps for the rest)
    # only when it refuses. Validation happens before any output is written.
    @staticmethod
    def _native_norm_forward(x, gamma, beta, eps, out, mean, rstd, batch):
        """The C forward (batch=False: LayerNorm, True: BatchNorm), or None when
        NumpyOps must do it."""
        if type(x) is np.ndarray and out is not None:
            try:
                return _K.norm_forward(x, gamma, beta, eps, out, mean, rstd, batch, get_num_threads())
            except (TypeError, ValueError):
                pass
        return _norm_forward(x, gamma, beta, eps, out, mean, rstd, batch)

    @staticmethod
    def _native_norm_backward(dy, x, gamma, mean, rstd, dx, dgamma, dbeta, batch):
        """The C backward, or None when NumpyOps must do it."""
        if (type(dy) is np.ndarray and dx is not None and dbeta is not None
                and (gamma is None or dgamma is not None)):
            try:
                _K.norm_backward(dy, x, gamma, mean, rstd, dx, dgamma, dbeta, batch, get_num_threads())
                return dx, dgamma, dbeta
            except (TypeError, ValueError):
                pass
        return _norm_backward(dy, x, gamma, mean, rstd, dx, dgamma, dbeta, batch)

    def layernorm_forward(self, x, gamma, beta, eps, out=None, mean=None, rstd=None):
        y = self._native_norm_forward(x, gamma, beta, eps, out, mean, rstd, False)
        if y is not None:
            return y
        return super().layernorm_forward(x, gamma, beta, eps, out=out, mean=mean, rstd=rstd)

    def layernorm_backward(self, dy, x, gamma, mean, rstd, dx=None, dgamma=None, dbeta=None):
        r = self._native_norm_backward(dy, x, gamma, mean, rstd, dx, dgamma, dbeta, False)
        if r is not None:
            return r
        return super().layernorm_backward(dy, x, gamma, mean, rstd, dx=dx, dgamma=dgamma, dbeta=dbeta)

    def batchnorm_forward(self, x, gamma, beta, eps, out=None, mean=None, rstd=None):
        y = self._native_norm_forward(x, gamma, beta, eps, out, mean, rstd, True)
        if y is not None:
            return y
        return super().batchnorm_forward(x, gamma, beta, eps, out=out, mean=mean, rstd=rstd)

    def batchnorm_backward(self, dy, x, gamma, mean, rstd, dx=None, dgamma=None, dbeta=None):
        r = self._native_norm_backward(dy, x, gamma, mean, rstd, dx, dgamma, dbeta, True)
        if r is not None:
            return r
        return super().batchnorm_backward(dy, x, gamma, mean, rstd, dx=dx, dgamma=dgamma, dbeta=dbeta)


def _vec_ok(a: Any, n: Any) -> bool:
    """float32 C-contiguous (n,) vector (gamma / beta / parameter gradients)."""
    return (type(a) is np.ndarray and a.dtype == _F32 and a.flags.c_contiguous and a.ndim == 1
            and a.shape[0] == n)


def _stat_out(a, n):
    """(buffer for C, array to copy into afterwards) or None when NumpyOps must handle it."""
    if a is None:
        return None, None
    if type(a) is not np.ndarray or not a.flags.writeable or a.size != n:
        return None
    if a.dtype == _F32 and a.flags.c_contiguous:
        return a, None
    if a.dtype.kind != "f":
        return None
    return np.empty(n, dtype=_F32), a


def _stat_in(a, n):
    """float32 contiguous (n,) statistics (NumpyOps casts them to x's dtype too), or None."""
    if type(a) is np.ndarray and a.dtype == _F32 and a.flags.c_contiguous and a.size == n:
        return a
    try:
        a = np.asarray(a, dtype=_F32)
    except (TypeError, ValueError):
        return None
    return np.ascontiguousarray(a).reshape(-1) if a.size == n else None


def _norm_forward(x, gamma, beta, eps, out, mean, rstd, batch):
    if not (_ok(x) and x.ndim >= 1 and _ok_out(out, x)):
        return None
    rows = x.shape[0]
    cols = x.size // rows
    if (gamma is not None and not _vec_ok(gamma, cols)) or (beta is not None and not _vec_ok(beta, cols)):
        return None
    nstat = cols if batch else rows
    m = _stat_out(mean, nstat)
    r = _stat_out(rstd, nstat)
    if m is None or r is None:
        return None
    out = _new(x, out)
    _K.norm_forward(x, gamma, beta, eps, out, m[0], r[0], batch, get_num_threads())
    if m[1] is not None:
        m[1][...] = m[0].reshape(m[1].shape)
    if r[1] is not None:
        r[1][...] = r[0].reshape(r[1].shape)
    return out


def _norm_backward(dy, x, gamma, mean, rstd, dx, dgamma, dbeta, batch):
    if not (_ok(dy) and dy.ndim >= 1 and _ok(x) and x.shape == dy.shape and _ok_out(dx, dy)):
        return None
    rows = dy.shape[0]
    cols = dy.size // rows
    nstat = cols if batch else rows
    if gamma is not None and not _vec_ok(gamma, cols):
        return None
    if gamma is not None and dgamma is not None and not (_vec_ok(dgamma, cols) and dgamma.flags.writeable):
        return None
    if dbeta is not None and not (_vec_ok(dbeta, cols) and dbeta.flags.writeable):
        return None
    mean = _stat_in(mean, nstat)
    rstd = _stat_in(rstd, nstat)
    if mean is None or rstd is None:
        return None
    dx = _new(dy, dx)
    if gamma is not None and dgamma is None:
        dgamma = np.empty(cols, dtype=_F32)
    if dbeta is None:
        dbeta = np.empty(cols, dtype=_F32)
    _K.norm_backward(dy, x, gamma, mean, rstd, dx, dgamma if gamma is not None else None, dbeta, batch,
                     get_num_threads())
    return dx, dgamma, dbeta
