"""NumpyOps — the complete pure-NumPy implementation of every fastgrad op.

It is three things at once: the reference the C kernels are tested against,
the fallback for inputs the C does not take (float64, odd layouts), and the
baseline the benchmarks compare with. So it is written to be both honest and
fast: `out=` everywhere, in-place ufuncs, reused scratch buffers instead of
temporaries, numerically stable formulas.

Conventions shared with NativeOps (same names, same signatures; a test checks):
- Activations are `op(x, out=None, **params) -> out`; their derivatives are
  `backprop_op(dy, ref, out=None, **params) -> dx` where `ref` is the forward
  INPUT x for the activations in BACKWARD_NEEDS_INPUT (gelu, gelu_tanh,
  leaky_relu, elu, selu, silu, softplus, softsign, mish, hard_silu,
  relu_general) and the forward OUTPUT y for the others (linear, relu,
  sigmoid, tanh, hard_sigmoid, exponential, relu6, softmax, log_softmax).
  Parameters: leaky_relu(negative_slope=0.2), elu(alpha=1.0),
  relu_general(negative_slope=0.0, max_value=None, threshold=0.0) (Keras's
  relu with arguments). Formulas are Keras 3's (see csrc/fg_common.h).
- Matrices are row-major; a Dense kernel W is (in, out) as in Keras.
- Losses return `(loss, grad)`: loss is the mean over rows of the per-sample
  loss (per-sample = mean over the last axis for MSE/BCE, sum over classes for
  cross-entropies), weighted by `sample_weight` when given, i.e. Keras's
  "sum_over_batch_size": sum_i w_i l_i / rows. grad is d loss / d input.
- Optimizer updates work in place on flat buffers and follow Keras 3; each
  docstring states the update, where eps sits and the bias correction.
  `weight_decay` with `decoupled=False` adds wd*p to the gradient (L2, like
  torch.optim); with `decoupled=True` it first does p -= lr*wd*p (Keras's
  `weight_decay`, AdamW).
"""
from __future__ import annotations

from typing import Any

import math

import numpy as np

from . import contracts as _c
from .numpy_quant import QuantNumpyOps
from .numpy_lossopt import LossOptNumpyOps
from .numpy_rnn import RnnNumpyOps
from .numpy_attention import AttentionNumpyOps
from .numpy_conv import ConvNumpyOps
from .numpy_gru_v1 import GruV1NumpyOps

#: activation names understood by `activation`, the Dense layer and the
#: fused dense kernel; the integer codes mirror FG_ACT_* in csrc/fg_common.h
#: (NumpyOps never imports native code; tests/test_activations_ext.py checks
#: this table against the header and fastgrad._native.kernels.ACTIVATIONS).
#: softmax / log_softmax are row-wise, not element-wise (codes of csrc/step).
ACTIVATIONS = {"linear": 0, "relu": 1, "sigmoid": 2, "tanh": 3, "gelu": 4, "gelu_tanh": 5,
               "leaky_relu": 6, "elu": 7, "selu": 8, "silu": 9, "softplus": 10, "softsign": 11,
               "hard_sigmoid": 12, "mish": 13, "exponential": 14, "relu6": 15, "hard_silu": 16,
               "relu_general": 17,
               "softmax": 100, "log_softmax": 101}

#: activations whose backward reads the forward INPUT x (the others read the
#: output y); mirrors fg_act_backward_needs_input() in csrc/fg_common.h (tested)
BACKWARD_NEEDS_INPUT = frozenset({"gelu", "gelu_tanh", "leaky_relu", "elu", "selu", "silu", "softplus",
                                  "softsign", "mish", "hard_silu", "relu_general"})

#: the parameters each parametrised activation takes, with their by-name defaults
ACTIVATION_PARAMS = {"leaky_relu": {"negative_slope": 0.2}, "elu": {"alpha": 1.0},
                     "relu_general": {"negative_slope": 0.0, "max_value": None, "threshold": 0.0}}

#: SELU's constants (Keras 3)
SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946

_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_INV_SQRT_2 = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_GELU_C = 0.044715

# constants of the dropout hash (splitmix64 finaliser), shared with
# csrc/kernels: element i of a call with (seed, offset) is kept iff
# (mix(seed + (offset + i + 1) * GOLDEN) >> 40) >= floor(rate * 2**24)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def _float_dtype(*arrays):
    for a in arrays:
        if a is not None and a.dtype not in (np.float32, np.float64):
            raise TypeError(f"expected float32 or float64 arrays, got {a.dtype}")


def _as_2d(a):
    return a.reshape(a.shape[0], -1) if a.ndim != 2 else a


def _last_rows(a):
    """(rows, last axis) view of `a`: softmax-like ops act along the last axis
    whatever the rank (Keras's softmax(x, axis=-1))."""
    if a.ndim == 2:
        return a
    n = a.shape[-1] if a.ndim else 1
    return a.reshape(int(np.prod(a.shape[:-1], dtype=np.int64)) if a.ndim else 1, n)


def _erf64(x):
    """Exact erf for float64 arrays (math.erf per element; reference quality)."""
    return _VERF(x).astype(np.float64) if x.size else np.empty_like(x)


def _erfc64(x):
    return _VERFC(x).astype(np.float64) if x.size else np.empty_like(x)


_VERF = np.frompyfunc(math.erf, 1, 1)
_VERFC = np.frompyfunc(math.erfc, 1, 1)


def _erfc32(z):
    """erfc for float32 work: Chebyshev-fitted form, fractional error < 1.2e-7
    everywhere (Numerical Recipes' erfcc), computed in float64 then rounded."""
    z = np.asarray(z, dtype=np.float64)
    a = np.abs(z)
    t = 1.0 / (1.0 + 0.5 * a)
    p = 0.17087277
    for c in (-0.82215223, 1.48851587, -1.13520398, 0.27886807, -0.18628806,
              0.09678418, 0.37409196, 1.00002368, -1.26551223):
        p = c + t * p
    r = t * np.exp(-a * a + p)
    return np.where(z >= 0, r, 2.0 - r)


def _f64(x):
    """x as float64 (a copy for float32): the compound activations (silu,
    softplus, mish) are evaluated in float64 and rounded once, like the C."""
    return x if x.dtype == np.float64 else x.astype(np.float64)


def _silu64(x):
    """x / (1 + exp(-x)), float64 (exp may overflow to inf: the quotient is then
    the -0 the result underflows to anyway); -inf -> -0."""
    with np.errstate(over="ignore", invalid="ignore"):
        y = x / (1.0 + np.exp(-x))
    y[np.isneginf(x)] = -0.0
    return y


def _softplus64(x):
    """max(x, 0) + log1p(exp(-|x|)), float64."""
    with np.errstate(invalid="ignore"):
        return np.maximum(x, 0.0) + np.log1p(np.exp(-np.abs(x)))


def _mish_t64(xc):
    """tanh(softplus(xc)) = n / (n + 2), n = e (e + 2), e = exp(xc) (xc <= 20)."""
    e = np.exp(xc)
    n = e * (e + 2.0)
    return n / (n + 2.0)


#: x clamped to [_MISH_LO, 20] inside mish's ratio: above 20 it is 1 in double,
#: below -1e300 exp is 0 (and +-inf stay out of inf * 0)
_MISH_LO = -1e300


def _mish64(x):
    with np.errstate(invalid="ignore"):
        y = x * _mish_t64(np.clip(x, _MISH_LO, 20.0))
    y[np.isneginf(x)] = -0.0
    return y


def _dmish64(x):
    """d/dx x tanh(softplus(x)) = t + x (1 - t^2) sigmoid(x), on x clamped to [-1e300, 20]."""
    xc = np.clip(x, _MISH_LO, 20.0)
    e = np.exp(xc)
    n = e * (e + 2.0)
    n2 = n + 2.0
    g = 4.0 * (n + 1.0) * e / (n2 * n2 * (1.0 + e))
    return n / n2 + xc * g


def _relu_general_check(negative_slope, max_value, threshold):
    if not np.isfinite(negative_slope) or not np.isfinite(threshold):
        raise ValueError(f"relu: negative_slope and threshold must be finite, got {negative_slope!r}, "
                         f"{threshold!r}")
    if max_value is not None and not (max_value >= 0):
        raise ValueError(f"relu: max_value must be None or >= 0, got {max_value!r}")


def _check_params(name, params):
    allowed = ACTIVATION_PARAMS.get(name, {})
    bad = sorted(set(params) - set(allowed))
    if bad:
        raise TypeError(f"activation {name!r} takes no parameter(s) {', '.join(bad)}"
                        + (f"; it takes {', '.join(allowed)}" if allowed else ""))


def _exact_alias(a: Any, b: Any) -> bool:
    return (a.__array_interface__["data"][0] == b.__array_interface__["data"][0]
            and a.shape == b.shape and a.strides == b.strides and a.dtype == b.dtype)


def _no_partial_overlap(out, a, name_out, name_a, same_ok=True):
    """ValueError when out and a share memory other than as the very same
    array (same_ok) -- the bounds test the C bindings use (may_share_memory)."""
    if (isinstance(a, np.ndarray) and out.size and a.size and np.may_share_memory(out, a)
            and not (same_ok and _exact_alias(out, a))):
        raise ValueError(f"{name_out} {out.shape} overlaps {name_a} {a.shape}"
                         + (" (only exact in-place use is allowed)" if same_ok else ""))


class NumpyOps(QuantNumpyOps, LossOptNumpyOps, RnnNumpyOps, AttentionNumpyOps, ConvNumpyOps,
               GruV1NumpyOps):
    """Pure-NumPy kernels (float32 and float64). See the module docstring."""

    name = "numpy"

    def __init__(self):
        self._scratch_bufs = {}

    # ------------------------------------------------------------ helpers
    def _scratch(self, shape, dtype, slot=0):
        """A reusable buffer (grow-only per slot and dtype): no per-call allocation."""
        shape = tuple(shape) if not isinstance(shape, int) else (shape,)
        n = int(np.prod(shape))
        key = (slot, np.dtype(dtype).str)
        buf = self._scratch_bufs.get(key)
        if buf is None or buf.size < n:
            buf = np.empty(max(n, 1), dtype=dtype)
            self._scratch_bufs[key] = buf
        return buf[:n].reshape(shape)

    @staticmethod
    def _out(out, like, dtype=None):
        """`out` checked against the input `like` (the argument contract both
        backends share, tests/test_backend_agreement.py): an ndarray of like's
        shape and dtype, writeable, and either exactly like (in place) or
        disjoint from it — a partial overlap is refused, as the C kernels do."""
        if out is None:
            return np.empty(like.shape, dtype=dtype or like.dtype)
        if not isinstance(out, np.ndarray):
            raise TypeError(f"out must be a numpy array, got {type(out).__name__}")
        if out.shape != like.shape:
            raise ValueError(f"out has shape {out.shape}, expected {like.shape}")
        want = np.dtype(dtype or like.dtype)
        if out.dtype != want:
            raise TypeError(f"out has dtype {out.dtype}, expected {want}")
        if not out.flags.writeable:
            raise ValueError("out is read-only")
        _no_partial_overlap(out, like, "out", "the input")
        return out

    # ------------------------------------------------------------ GEMM
    def gemm(self, a, b, out=None, trans_a=False, trans_b=False, alpha=1.0, beta=0.0):
        """out = alpha * op(a) @ op(b) + beta * out, op(m) = m.T if trans_m.
        out is allocated when None (beta is then ignored); beta == 0 means out
        is not read, so NaN in it does not propagate."""
        if a.ndim != 2 or b.ndim != 2:
            raise ValueError(f"gemm: expected 2-D a and b, got shapes {a.shape} and {b.shape}")
        _float_dtype(a, b)
        A = a.T if trans_a else a
        B = b.T if trans_b else b
        if A.shape[1] != B.shape[0]:
            raise ValueError(f"gemm: inner dimensions differ: op(a) is {A.shape}, op(b) is {B.shape}")
        shape = (A.shape[0], B.shape[1])
        dtype = np.result_type(a, b)
        if out is None:
            out = np.empty(shape, dtype=dtype)
            beta = 0.0
        elif out.shape != shape:
            raise ValueError(f"gemm: out has shape {out.shape}, expected {shape}")
        elif np.shares_memory(out, a) or np.shares_memory(out, b):
            raise ValueError("gemm: out must not overlap a or b")
        if beta == 0.0:
            np.matmul(A, B, out=out)
            if alpha != 1.0:
                out *= alpha
        else:
            prod = np.matmul(A, B, out=self._scratch(shape, out.dtype, slot="gemm"))
            if alpha != 1.0:
                prod *= alpha
            if beta != 1.0:
                out *= beta
            out += prod
        return out

    # ------------------------------------------------------------ activations
    def linear(self, x, out=None):
        out = self._out(out, x)
        if out is not x:
            np.copyto(out, x)
        return out

    def relu(self, x, out=None):
        return np.maximum(x, 0, out=self._out(out, x))

    def sigmoid(self, x, out=None):
        """1 / (1 + exp(-x)), evaluated as exp(-|x|) based branches so it never
        overflows and keeps full relative precision for very negative x."""
        out = self._out(out, x)
        neg = np.less(x, 0, out=self._scratch(x.shape, np.bool_, "sig_neg"))  # before out may alias x
        e = np.abs(x, out=self._scratch(x.shape, x.dtype, "sig"))
        np.negative(e, out=e)
        np.exp(e, out=e)                     # e = exp(-|x|) in (0, 1]
        np.add(e, 1.0, out=out)
        np.reciprocal(out, out=out)          # 1 / (1 + e): sigmoid(|x|)
        np.multiply(out, e, out=out, where=neg)   # e / (1 + e) for x < 0
        return out

    def tanh(self, x, out=None):
        return np.tanh(x, out=self._out(out, x))

    def gelu(self, x, out=None):
        """Exact GELU: x * Phi(x) = 0.5 x erfc(-x / sqrt 2)."""
        out = self._out(out, x)
        neginf = np.isneginf(x)
        if x.dtype == np.float64:
            phi = 0.5 * _erfc64(-x * _INV_SQRT_2)
        else:
            phi = 0.5 * _erfc32(-x.astype(np.float64) * _INV_SQRT_2)
        with np.errstate(invalid="ignore"):
            np.multiply(x, phi, out=out, casting="same_kind")
        np.copyto(out, 0.0, where=neginf)   # limit at -inf is 0, not -inf * 0
        return out

    def gelu_tanh(self, x, out=None):
        """GELU, tanh approximation: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))."""
        out = self._out(out, x)
        u = self._scratch(x.shape, x.dtype, "gelu")
        np.multiply(x, x, out=u)
        u *= _GELU_C
        u += 1.0
        u *= x
        u *= _SQRT_2_OVER_PI
        np.tanh(u, out=u)
        u += 1.0
        u *= 0.5
        np.multiply(x, u, out=out)
        return out

    def leaky_relu(self, x, out=None, negative_slope=0.2):
        """x >= 0 ? x : negative_slope * x (Keras: 0.2 by name)."""
        out = self._out(out, x)
        s = x.dtype.type(negative_slope)
        neg = np.less(x, 0, out=self._scratch(x.shape, np.bool_, "lr_m"))
        np.logical_or(neg, np.isnan(x), out=neg)       # NaN lanes take the product (NaN)
        if out is not x:
            np.copyto(out, x)
        np.multiply(out, s, out=out, where=neg)
        return out

    def elu(self, x, out=None, alpha=1.0):
        """x > 0 ? x : alpha * (exp(x) - 1); float32 input is evaluated in
        float64 (alpha rounded to float32 first, as the C takes it) and rounded once."""
        out = self._out(out, x)
        xd = _f64(x)
        t = np.expm1(np.minimum(xd, 0.0))
        t *= float(x.dtype.type(alpha))
        np.copyto(out, np.where(xd > 0, xd, t), casting="same_kind")
        return out

    def selu(self, x, out=None):
        """scale * elu(x, alpha), Keras constants; float32 input: the products
        scale * x and (scale * alpha) * expm1(x) with the constants rounded to
        float32 (as the C), evaluated in float64 and rounded once."""
        out = self._out(out, x)
        dt = x.dtype.type
        xd = _f64(x)
        t = np.expm1(np.minimum(xd, 0.0))
        t *= float(dt(SELU_SCALE * SELU_ALPHA))
        np.copyto(out, np.where(xd > 0, xd * float(dt(SELU_SCALE)), t), casting="same_kind")
        return out

    def silu(self, x, out=None):
        """x * sigmoid(x) (Keras alias: swish), in float64, rounded once."""
        out = self._out(out, x)
        np.copyto(out, _silu64(_f64(x)), casting="same_kind")
        return out

    def softplus(self, x, out=None):
        """log(1 + exp(x)) = max(x, 0) + log1p(exp(-|x|)), in float64, rounded once."""
        out = self._out(out, x)
        np.copyto(out, _softplus64(_f64(x)), casting="same_kind")
        return out

    def softsign(self, x, out=None):
        """x / (1 + |x|); the limits +-1 at +-inf."""
        out = self._out(out, x)
        t = np.abs(x, out=self._scratch(x.shape, x.dtype, "ssign"))
        inf = np.isinf(x)
        sign = np.sign(x) if inf.any() else None
        t += 1.0
        with np.errstate(invalid="ignore"):
            np.divide(x, t, out=out)
        if sign is not None:
            np.copyto(out, sign, where=inf)
        return out

    def hard_sigmoid(self, x, out=None):
        """relu6(x + 3) / 6 (Keras 3; exact near -3)."""
        out = self._out(out, x)
        np.add(x, x.dtype.type(3.0), out=out)
        np.clip(out, 0, 6, out=out)
        out /= x.dtype.type(6.0)
        return out

    def hard_silu(self, x, out=None):
        """x * hard_sigmoid(x) (Keras alias: hard_swish); 0 at -inf."""
        out = self._out(out, x)
        hs = self.hard_sigmoid(x, out=self._scratch(x.shape, x.dtype, "hsilu"))
        neginf = np.isneginf(x)
        with np.errstate(invalid="ignore"):
            np.multiply(x, hs, out=out)
        np.copyto(out, -0.0, where=neginf)
        return out

    def mish(self, x, out=None):
        """x * tanh(softplus(x)), in float64, rounded once; 0 at -inf."""
        out = self._out(out, x)
        np.copyto(out, _mish64(_f64(x)), casting="same_kind")
        return out

    def exponential(self, x, out=None):
        """exp(x)."""
        return np.exp(x, out=self._out(out, x))

    def relu6(self, x, out=None):
        """min(max(x, 0), 6)."""
        return np.clip(x, 0, 6, out=self._out(out, x))

    def relu_general(self, x, out=None, negative_slope=0.0, max_value=None, threshold=0.0):
        """Keras relu(x, negative_slope, max_value, threshold):
        a = x > threshold ? x : 0; a = clip(a, 0, max_value) if max_value is
        given; y = a - negative_slope * max(threshold - x, 0). NaN propagates.
        The same float operations as the C kernel (bitwise equal)."""
        _relu_general_check(negative_slope, max_value, threshold)
        out = self._out(out, x)
        dt = x.dtype.type
        s, t = dt(negative_slope), dt(threshold)
        nan = np.isnan(x)
        neg = None
        if s != 0:
            neg = np.subtract(t, x, out=self._scratch(x.shape, x.dtype, "rg"))
            np.maximum(neg, 0, out=neg)
            neg *= s
        keep = np.greater(x, t, out=self._scratch(x.shape, np.bool_, "rg_m"))
        if out is not x:
            np.copyto(out, x)
        np.copyto(out, 0, where=~keep)
        if max_value is not None and max_value != np.inf:
            np.clip(out, 0, dt(max_value), out=out)
        if neg is not None:
            out -= neg
        np.copyto(out, np.nan, where=nan)
        return out

    def exp(self, x, out=None):
        return np.exp(x, out=self._out(out, x))

    def log(self, x, out=None):
        return np.log(x, out=self._out(out, x))

    def softmax(self, x, out=None):
        """Softmax over the last axis (any rank), max subtracted."""
        out = self._out(out, x)
        x2, o2 = _last_rows(x), _last_rows(out)
        mx = np.max(x2, axis=1, keepdims=True)
        np.subtract(x2, mx, out=o2)
        np.exp(o2, out=o2)
        o2 /= np.sum(o2, axis=1, keepdims=True)
        return out

    def log_softmax(self, x, out=None):
        """Row-wise log-softmax: x - max - log(sum(exp(x - max)))."""
        out = self._out(out, x)
        x2, o2 = _last_rows(x), _last_rows(out)
        mx = np.max(x2, axis=1, keepdims=True)
        np.subtract(x2, mx, out=o2)
        e = np.exp(o2, out=self._scratch(o2.shape, o2.dtype, "lsm"))
        o2 -= np.log(np.sum(e, axis=1, keepdims=True))
        return out

    def backprop_linear(self, dy, y, out=None):
        return self.linear(dy, out=out)

    def backprop_relu(self, dy, y, out=None):
        """dx = dy where y > 0 else 0 (y: the forward output)."""
        out = self._out(out, dy)
        np.multiply(dy, y > 0, out=out)
        return out

    def backprop_sigmoid(self, dy, y, out=None):
        """dx = dy * y * (1 - y) (y: the forward output)."""
        out = self._out(out, dy)
        t = np.subtract(1.0, y, out=self._scratch(y.shape, y.dtype, "bsig"))
        t *= y
        np.multiply(dy, t, out=out)
        return out

    def backprop_tanh(self, dy, y, out=None):
        """dx = dy * (1 - y^2) (y: the forward output)."""
        out = self._out(out, dy)
        t = np.multiply(y, y, out=self._scratch(y.shape, y.dtype, "btanh"))
        np.subtract(1.0, t, out=t)
        np.multiply(dy, t, out=out)
        return out

    def backprop_gelu(self, dy, x, out=None):
        """dx = dy * (Phi(x) + x phi(x)) (x: the forward input)."""
        out = self._out(out, dy)
        xd = x.astype(np.float64)
        phi_cdf = 0.5 * (_erfc64(-xd * _INV_SQRT_2) if x.dtype == np.float64 else _erfc32(-xd * _INV_SQRT_2))
        d = phi_cdf + xd * np.exp(-0.5 * xd * xd) * _INV_SQRT_2PI
        np.multiply(dy, d, out=out, casting="same_kind")
        return out

    def backprop_gelu_tanh(self, dy, x, out=None):
        """Derivative of the tanh-approximated GELU (x: the forward input)."""
        out = self._out(out, dy)
        x2 = x * x
        t = np.tanh(_SQRT_2_OVER_PI * x * (1.0 + _GELU_C * x2))
        d = 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * _SQRT_2_OVER_PI * (1.0 + 3.0 * _GELU_C * x2)
        np.multiply(dy, d, out=out, casting="same_kind")
        return out

    def backprop_leaky_relu(self, dy, x, out=None, negative_slope=0.2):
        """dx = dy * (x >= 0 ? 1 : negative_slope) (x: the forward input)."""
        out = self._out(out, dy)
        d = np.where(x >= 0, dy.dtype.type(1.0), dy.dtype.type(negative_slope))
        np.multiply(dy, d, out=out)
        return out

    def backprop_elu(self, dy, x, out=None, alpha=1.0):
        """dx = dy * (x > 0 ? 1 : alpha * exp(x)) (x: the forward input)."""
        out = self._out(out, dy)
        d = np.exp(np.minimum(x, 0))
        d *= x.dtype.type(alpha)
        d[x > 0] = 1.0
        np.multiply(dy, d, out=out, casting="same_kind")
        return out

    def backprop_selu(self, dy, x, out=None):
        """dx = dy * (x > 0 ? scale : scale * alpha * exp(x)) (x: the forward input)."""
        out = self._out(out, dy)
        dt = x.dtype.type
        d = np.exp(np.minimum(x, 0))
        d *= dt(SELU_SCALE * SELU_ALPHA)
        d[x > 0] = dt(SELU_SCALE)
        np.multiply(dy, d, out=out, casting="same_kind")
        return out

    def backprop_silu(self, dy, x, out=None):
        """dx = dy * s (1 + x (1 - s)), s = sigmoid(x), in float64 (x: the
        forward input; +-inf clamped to +-1e300 in the product: limits 1 / 0)."""
        out = self._out(out, dy)
        xd = _f64(x)
        s = self.sigmoid(xd)
        d = s * (1.0 + np.clip(xd, -1e300, 1e300) * (1.0 - s))
        np.multiply(dy, d, out=out, casting="same_kind")
        return out

    def backprop_softplus(self, dy, x, out=None):
        """dx = dy * sigmoid(x) (x: the forward input)."""
        out = self._out(out, dy)
        s = self.sigmoid(x, out=self._scratch(x.shape, x.dtype, "bsp"))
        np.multiply(dy, s, out=out)
        return out

    def backprop_softsign(self, dy, x, out=None):
        """dx = dy / (1 + |x|)^2 (x: the forward input)."""
        out = self._out(out, dy)
        t = np.abs(x, out=self._scratch(x.shape, x.dtype, "bss"))
        t += 1.0
        with np.errstate(over="ignore"):
            t *= t
        np.divide(dy, t, out=out)
        return out

    def backprop_hard_sigmoid(self, dy, y, out=None):
        """dx = (dy * (0 < y < 1)) / 6 (y: the forward output)."""
        out = self._out(out, dy)
        m = (y > 0) & (y < 1)
        np.multiply(dy, m, out=out)
        out /= dy.dtype.type(6.0)
        return out

    def backprop_hard_silu(self, dy, x, out=None):
        """dx = dy * (x <= -3 ? 0 : x >= 3 ? 1 : (2x + 3) / 6) (x: the forward input)."""
        out = self._out(out, dy)
        dt = x.dtype.type
        d = np.add(x, x)
        d += dt(3.0)
        d /= dt(6.0)
        d[x <= -3] = 0.0
        d[x >= 3] = 1.0
        np.multiply(dy, d, out=out)
        return out

    def backprop_mish(self, dy, x, out=None):
        """dx = dy * (t + x (1 - t^2) sigmoid(x)), t = tanh(softplus(x)), in
        float64 (x: the forward input)."""
        out = self._out(out, dy)
        xd = _f64(x)
        d = _dmish64(xd)
        d[np.isnan(xd)] = np.nan
        np.multiply(dy, d, out=out, casting="same_kind")
        return out

    def backprop_exponential(self, dy, y, out=None):
        """dx = dy * y (y: the forward output)."""
        out = self._out(out, dy)
        np.multiply(dy, y, out=out)
        return out

    def backprop_relu6(self, dy, y, out=None):
        """dx = dy * (0 < y < 6) (y: the forward output)."""
        out = self._out(out, dy)
        np.multiply(dy, (y > 0) & (y < 6), out=out)
        return out

    def backprop_relu_general(self, dy, x, out=None, negative_slope=0.0, max_value=None, threshold=0.0):
        """dx = dy * (x > threshold ? (1, or 0 < x < max_value with one)
        : (x < threshold ? negative_slope : 0)) (x: the forward input)."""
        _relu_general_check(negative_slope, max_value, threshold)
        out = self._out(out, dy)
        dt = dy.dtype.type
        t = x.dtype.type(threshold)
        if max_value is not None and max_value != np.inf:
            pos = ((x > 0) & (x < x.dtype.type(max_value))).astype(dy.dtype)
        else:
            pos = dt(1.0)
        d = np.where(x > t, pos, np.where(x < t, dt(negative_slope), dt(0.0)))
        np.multiply(dy, d, out=out, casting="same_kind")
        return out

    def backprop_softmax(self, dy, y, out=None):
        """dx = y * (dy - sum(dy * y)) row-wise (y: the forward output)."""
        out = self._out(out, dy)
        d2, y2, o2 = _last_rows(dy), _last_rows(y), _last_rows(out)
        s = np.einsum("ij,ij->i", d2, y2)[:, None]
        np.subtract(d2, s, out=o2)
        o2 *= y2
        return out

    def backprop_log_softmax(self, dy, y, out=None):
        """dx = dy - exp(y) * sum(dy) row-wise (y: the forward output)."""
        out = self._out(out, dy)
        d2, y2, o2 = _last_rows(dy), _last_rows(y), _last_rows(out)
        s = np.sum(d2, axis=1, keepdims=True)
        np.exp(y2, out=o2)
        o2 *= -s
        o2 += d2
        return out

    def activation(self, name, x, out=None, **params):
        """Apply the activation called `name` (see ACTIVATIONS); `params` are
        the activation's parameters (ACTIVATION_PARAMS), e.g. negative_slope."""
        if name not in ACTIVATIONS:
            raise ValueError(f"unknown activation {name!r}; expected one of {sorted(ACTIVATIONS)}")
        if params:
            _check_params(name, params)
        return getattr(self, name)(x, out=out, **params)

    def backprop_activation(self, name, dy, y, x, out=None, **params):
        """Backward of activation `name`; y is its output, x its input (the
        one the backward reads: x for BACKWARD_NEEDS_INPUT, else y)."""
        if name not in ACTIVATIONS:
            raise ValueError(f"unknown activation {name!r}; expected one of {sorted(ACTIVATIONS)}")
        if params:
            _check_params(name, params)
        ref = x if name in BACKWARD_NEEDS_INPUT else y
        if ref is None:
            raise ValueError(f"backprop_activation: {name!r} needs the forward "
                             f"{'input x' if name in BACKWARD_NEEDS_INPUT else 'output y'}, got None")
        return getattr(self, "backprop_" + name)(dy, ref, out=out, **params)

    def softmax_along(self, x, axis=-1, out=None):
        """Softmax over `axis` (an int or a tuple of ints, any rank; Keras's
        softmax(x, axis)). Runs the row softmax on a (rows, n) layout: a view
        when the axes are the trailing ones of a C-contiguous x, else a moved
        copy."""
        out = self._out(out, x)
        x2, perm = self._axes_last(x, axis, "softmax_along", "sm_x")
        if perm is None:
            self.softmax(x2, out=out.reshape(x2.shape))
            return out
        o2 = self.softmax(x2, out=self._scratch(x2.shape, x.dtype, "sm_y"))
        np.copyto(out, np.moveaxis(o2.reshape([x.shape[i] for i in perm]), range(x.ndim), perm))
        return out

    def backprop_softmax_along(self, dy, y, axis=-1, out=None):
        """dx = y * (dy - sum(dy * y over axis)) (y: the forward output)."""
        out = self._out(out, dy)
        d2, perm = self._axes_last(dy, axis, "backprop_softmax_along", "smb_d")
        y2, _ = self._axes_last(y, axis, "backprop_softmax_along", "smb_y")
        if perm is None:
            self.backprop_softmax(d2, y2, out=out.reshape(d2.shape))
            return out
        o2 = self.backprop_softmax(d2, y2, out=self._scratch(d2.shape, dy.dtype, "smb_o"))
        np.copyto(out, np.moveaxis(o2.reshape([dy.shape[i] for i in perm]), range(dy.ndim), perm))
        return out

    def _axes_last(self, a, axis, op, slot):
        """(a as (rows, n) with the `axis` axes last, perm) — perm None when that
        is a view of a (trailing axes, C-contiguous); else a scratch copy laid
        out in the order perm."""
        nd = a.ndim
        axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
        try:
            axes = sorted({int(ax) + nd if int(ax) < 0 else int(ax) for ax in axes})
        except (TypeError, ValueError):
            raise TypeError(f"{op}: axis must be an int or a tuple of ints, got {axis!r}") from None
        if not axes or axes[0] < 0 or axes[-1] >= nd:
            raise ValueError(f"{op}: axis {axis!r} is out of range for an array of shape {a.shape}")
        n = int(np.prod([a.shape[i] for i in axes]))
        rows = a.size // n if n else 0
        if axes == list(range(nd - len(axes), nd)) and a.flags.c_contiguous:
            return a.reshape(rows, n), None
        perm = [i for i in range(nd) if i not in axes] + axes
        buf = self._scratch((rows, n), a.dtype, slot)
        np.copyto(buf.reshape([a.shape[i] for i in perm]), a.transpose(perm))
        return buf, perm

    def prelu(self, x, alpha, out=None):
        """Parametric ReLU (Keras PReLU): x > 0 ? x : alpha * x, alpha broadcast
        against x's trailing axes (shape input_shape with shared axes 1)."""
        out = self._out(out, x)
        neg = np.less_equal(x, 0, out=self._scratch(x.shape, np.bool_, "prelu_m"))
        if out is not x:
            np.copyto(out, x)
        np.multiply(out, alpha, out=out, where=neg)
        return out

    def backprop_prelu(self, dy, x, alpha, dx=None, dalpha=None, need_dx=True):
        """Backward of prelu (x: the forward input): dx = dy * (x > 0 ? 1 : alpha);
        dalpha = the sum of dy * min(x, 0) over every axis alpha is broadcast
        along (the leading batch axes and alpha's size-1 axes). dalpha (alpha's
        shape) is overwritten. Returns (dx or None, dalpha)."""
        if alpha.ndim > dy.ndim or dy.shape != x.shape:
            raise ValueError(f"backprop_prelu: dy {dy.shape}, x {x.shape} and alpha {alpha.shape} do not match")
        lead = dy.ndim - alpha.ndim
        red = tuple(range(lead)) + tuple(lead + i for i, s in enumerate(alpha.shape)
                                         if s == 1 and dy.shape[lead + i] != 1)
        if dalpha is None:
            dalpha = np.empty(alpha.shape, dtype=dy.dtype)
        t = np.minimum(x, 0, out=self._scratch(x.shape, x.dtype, "bprelu"))
        t *= dy
        dalpha[...] = np.sum(t, axis=red, keepdims=True).reshape(alpha.shape)
        if not need_dx:
            return None, dalpha
        dx = self._out(dx, dy)
        pos = np.greater(x, 0, out=self._scratch(x.shape, np.bool_, "bprelu_m"))
        np.multiply(dy, alpha, out=dx)
        np.copyto(dx, dy, where=pos)
        return dx, dalpha

    # ------------------------------------------------------------ dense layer
    def dense_forward(self, x, w, b=None, activation="linear", out=None, preact=None):
        """y = act(x @ w + b); w is (in, out). If `preact` is given, x @ w + b
        is stored there too (the backward of the activations in BACKWARD_NEEDS_INPUT reads it)."""
        if activation not in ACTIVATIONS:
            raise ValueError(f"dense_forward: unknown activation {activation!r}")
        if x.ndim != 2 or w.ndim != 2 or x.shape[1] != w.shape[0]:
            raise ValueError(f"dense_forward: x {x.shape} and w {w.shape} do not chain (x @ w)")
        if b is not None and b.shape != (w.shape[1],):
            raise ValueError(f"dense_forward: bias has shape {b.shape}, expected ({w.shape[1]},)")
        shape = (x.shape[0], w.shape[1])
        if out is None:
            out = np.empty(shape, dtype=np.result_type(x, w))
        z = preact if preact is not None else out
        np.matmul(x, w, out=z)
        if b is not None:
            z += b
        if activation != "linear" or z is not out:
            self.activation(activation, z, out=out)
        return out

    def dense_backward(self, dy, x, w, y, activation="linear", preact=None, dx=None, dw=None, db=None,
                       need_dx=True):
        """Backward of dense_forward. dz = act'(.) * dy; dw = x.T @ dz;
        db = column sums of dz; dx = dz @ w.T. dw/db are overwritten.
        Returns (dx or None, dw, db or None); pass db=False for no bias."""
        if activation in ("linear",):
            dz = dy
        else:
            dz = self.backprop_activation(activation, dy, y, preact,
                                          out=self._scratch(dy.shape, dy.dtype, "dz"))
        dw = self.gemm(x, dz, out=dw, trans_a=True)
        if db is not False:
            db = self.sum_rows(dz, out=db)
        else:
            db = None
        if need_dx:
            dx = self.gemm(dz, w, out=dx, trans_b=True)
        else:
            dx = None
        return dx, dw, db

    # ------------------------------------------------------------ losses
    @staticmethod
    def _rows_weight(pred, sample_weight, op):
        rows = pred.shape[0] if pred.ndim else 1
        if sample_weight is None:
            return rows, None
        sw = np.asarray(sample_weight, dtype=pred.dtype).reshape(-1)
        if sw.shape[0] != rows:
            raise ValueError(f"{op}: sample_weight has {sw.shape[0]} entries for {rows} rows")
        return rows, sw

    def _check_pair(self, pred, target, op):
        if pred.shape != target.shape:
            raise ValueError(f"{op}: prediction shape {pred.shape} and target shape {target.shape} differ")
        if pred.ndim == 0 or pred.shape[0] == 0:
            raise ValueError(f"{op}: empty prediction {pred.shape}")

    def mse(self, pred, target, sample_weight=None, grad_out=None):
        """Mean squared error: l_i = mean_j (p - t)^2; grad = 2 w_i (p - t) / (rows cols)."""
        self._check_pair(pred, target, "mse")
        rows, sw = self._rows_weight(pred, sample_weight, "mse")
        p2 = _as_2d(pred)
        cols = p2.shape[1]
        g = self._out(grad_out, pred)
        g2 = _as_2d(g)
        np.subtract(p2, _as_2d(target), out=g2)
        per = np.einsum("ij,ij->i", g2, g2, dtype=np.float64) / cols
        if sw is not None:
            per *= sw
            g2 *= sw[:, None]
        g2 *= 2.0 / (rows * cols)
        return float(per.sum() / rows), g

    def binary_crossentropy(self, prob, target, sample_weight=None, grad_out=None, eps=1e-7):
        """BCE from probabilities clipped to [eps, 1 - eps] (Keras); the clip
        has zero gradient outside that range. l_i = mean_j of
        -(t log p + (1 - t) log(1 - p))."""
        self._check_pair(prob, target, "binary_crossentropy")
        rows, sw = self._rows_weight(prob, sample_weight, "binary_crossentropy")
        p2, t2 = _as_2d(prob), _as_2d(target)
        cols = p2.shape[1]
        p = np.clip(p2, eps, 1.0 - eps)
        per_el = -(t2 * np.log(p) + (1.0 - t2) * np.log1p(-p))
        per = per_el.mean(axis=1, dtype=np.float64)
        g = self._out(grad_out, prob)
        g2 = _as_2d(g)
        gg = (-(t2 / p) + (1.0 - t2) / (1.0 - p)) * ((p2 >= eps) & (p2 <= 1.0 - eps))
        if sw is not None:
            per *= sw
            gg *= sw[:, None]
        np.multiply(gg, 1.0 / (rows * cols), out=g2, casting="same_kind")
        return float(per.sum() / rows), g

    def binary_crossentropy_from_logits(self, logits, target, sample_weight=None, grad_out=None):
        """Sigmoid + BCE from logits, stable form:
        l = max(x, 0) - x z + log1p(exp(-|x|)); grad = w (sigmoid(x) - z) / (rows cols)."""
        self._check_pair(logits, target, "binary_crossentropy_from_logits")
        rows, sw = self._rows_weight(logits, sample_weight, "binary_crossentropy_from_logits")
        x2, z2 = _as_2d(logits), _as_2d(target)
        cols = x2.shape[1]
        per_el = np.maximum(x2, 0) - x2 * z2 + np.log1p(np.exp(-np.abs(x2)))
        per = per_el.mean(axis=1, dtype=np.float64)
        g = self._out(grad_out, logits)
        g2 = _as_2d(g)
        self.sigmoid(x2, out=g2)
        g2 -= z2
        if sw is not None:
            per *= sw
            g2 *= sw[:, None]
        g2 *= 1.0 / (rows * cols)
        return float(per.sum() / rows), g

    def categorical_crossentropy(self, prob, target, sample_weight=None, grad_out=None, eps=1e-7):
        """CE from probabilities (Keras): rows renormalised to sum 1, clipped to
        [eps, 1 - eps]; l_i = -sum_k t_k log q_k. grad is w.r.t. the raw prob."""
        self._check_pair(prob, target, "categorical_crossentropy")
        rows, sw = self._rows_weight(prob, sample_weight, "categorical_crossentropy")
        p2, t2 = _as_2d(prob), _as_2d(target)
        s = p2.sum(axis=1, keepdims=True)
        with np.errstate(divide="ignore", invalid="ignore"):
            q = p2 / s
        # NaN (a row summing to 0, or NaN in it) stays NaN through the clip, as in the C kernel
        qc = np.where(np.isnan(q), q, np.clip(q, eps, 1.0 - eps))
        per = -(t2 * np.log(qc)).sum(axis=1, dtype=np.float64)
        gq = -(t2 / qc) * ((q >= eps) & (q <= 1.0 - eps))
        gp = (gq - (gq * q).sum(axis=1, keepdims=True)) / s
        if sw is not None:
            per *= sw
            gp *= sw[:, None]
        g = self._out(grad_out, prob)
        np.multiply(gp, 1.0 / rows, out=_as_2d(g), casting="same_kind")
        return float(per.sum() / rows), g

    def softmax_crossentropy(self, logits, target, sample_weight=None, grad_out=None):
        """Fused softmax + CE from logits with dense (one-hot or soft) targets:
        l_i = sum(t) lse(x) - sum_k t_k x_k; grad = w (softmax(x) sum(t) - t) / rows."""
        self._check_pair(logits, target, "softmax_crossentropy")
        rows, sw = self._rows_weight(logits, sample_weight, "softmax_crossentropy")
        x2, t2 = _as_2d(logits), _as_2d(target)
        g = self._out(grad_out, logits)
        g2 = _as_2d(g)
        mx = x2.max(axis=1, keepdims=True)
        np.subtract(x2, mx, out=g2)
        np.exp(g2, out=g2)
        se = g2.sum(axis=1, keepdims=True)
        lse = (np.log(se) + mx).astype(np.float64)[:, 0]
        tsum = t2.sum(axis=1, dtype=np.float64)
        per = lse * tsum - np.einsum("ij,ij->i", t2, x2, dtype=np.float64)
        g2 /= se
        g2 *= tsum[:, None].astype(g2.dtype)
        g2 -= t2
        if sw is not None:
            per *= sw
            g2 *= sw[:, None]
        g2 *= 1.0 / rows
        return float(per.sum() / rows), g

    def sparse_softmax_crossentropy(self, logits, labels, sample_weight=None, grad_out=None):
        """Fused softmax + CE from logits with integer labels:
        l_i = lse(x_i) - x_i[y_i]; grad = w (softmax(x) - onehot(y)) / rows."""
        if logits.ndim != 2:
            raise ValueError(f"sparse_softmax_crossentropy: logits must be 2-D, got {logits.shape}")
        labels = np.asarray(labels).reshape(-1)
        if labels.dtype.kind not in "iu":
            raise TypeError(f"sparse_softmax_crossentropy: labels must be integers, got {labels.dtype}")
        rows, cols = logits.shape
        if labels.shape[0] != rows:
            raise ValueError(f"sparse_softmax_crossentropy: {labels.shape[0]} labels for {rows} rows of logits")
        if rows == 0:
            raise ValueError("sparse_softmax_crossentropy: empty logits")
        lo, hi = labels.min(), labels.max()
        if lo < 0 or hi >= cols:
            bad = lo if lo < 0 else hi
            raise ValueError(f"sparse_softmax_crossentropy: label {bad} outside [0, {cols})")
        rows, sw = self._rows_weight(logits, sample_weight, "sparse_softmax_crossentropy")
        g = self._out(grad_out, logits)
        mx = logits.max(axis=1, keepdims=True)
        np.subtract(logits, mx, out=g)
        np.exp(g, out=g)
        se = g.sum(axis=1, keepdims=True)
        r = np.arange(rows)
        per = (np.log(se[:, 0]) + mx[:, 0] - logits[r, labels]).astype(np.float64)
        g /= se
        g[r, labels] -= 1.0
        if sw is not None:
            per *= sw
            g *= sw[:, None]
        g *= 1.0 / rows
        return float(per.sum() / rows), g

    # ------------------------------------------------------------ reductions
    def sum_rows(self, x, out=None):
        """Column sums of a 2-D array (bias gradients): out[j] = sum_i x[i, j]."""
        if out is None:
            return x.sum(axis=0)
        return np.sum(x, axis=0, out=out)

    def argmax_rows(self, x):
        return np.argmax(x, axis=1)

    def all_finite(self, x):
        """True when no element of x is NaN or +-inf (input validation)."""
        flat = x.reshape(-1)
        if flat.size > 4096 and flat.dtype == np.float32:
            # one BLAS dot of x with itself propagates NaN/inf (~1.5 ms for
            # 10000 x 784); only a non-finite result (NaN/inf, or finite
            # values whose squares overflow) needs the element-wise test
            with np.errstate(over="ignore", invalid="ignore"):
                if np.isfinite(np.dot(flat, flat)):
                    return True
        return bool(np.isfinite(flat).all())

    def global_norm(self, x):
        """L2 norm of a (flat) buffer, accumulated in float64."""
        flat = x.reshape(-1)
        total = 0.0
        step = 1 << 20
        for i in range(0, flat.size, step):
            c = flat[i:i + step].astype(np.float64)
            total += float(np.dot(c, c))
        return math.sqrt(total)

    def clip_by_norm(self, x, max_norm):
        """Scale x in place so its L2 norm is at most max_norm; return the norm before."""
        if max_norm <= 0:
            raise ValueError(f"clip_by_norm: max_norm must be > 0, got {max_norm}")
        n = self.global_norm(x)
        if n > max_norm:
            x *= x.dtype.type(max_norm / n)
        return n

    def clip_by_value(self, x, lo, hi):
        """Clamp x in place to [lo, hi]."""
        if lo > hi:
            raise ValueError(f"clip_by_value: lo {lo} > hi {hi}")
        np.clip(x, lo, hi, out=x)
        return x

    # ------------------------------------------------------------ optimizers
    # argument contracts, shared with NativeOps (which calls them before choosing
    # the C path): the same calls are refused with the same exceptions
    @staticmethod
    def _check_sgd(param, grad, velocity, lr, momentum, weight_decay):
        op = "sgd_update"
        _c.update_arrays(op, param, grad, velocity=velocity if momentum != 0.0 else None)
        _c.decay(op, lr, weight_decay)
        _c.finite(op, "momentum", momentum, lo=0.0)

    @staticmethod
    def _check_adagrad(param, grad, accum, lr, eps, weight_decay):
        op = "adagrad_update"
        _c.update_arrays(op, param, grad, accum=accum)
        _c.decay(op, lr, weight_decay)
        _c.finite(op, "eps", eps, lo=0.0)

    @staticmethod
    def _check_rmsprop(param, grad, ms, mom, mg, lr, rho, eps, momentum, centered, weight_decay):
        op = "rmsprop_update"
        _c.update_arrays(op, param, grad, ms=ms, mom=mom if momentum else None,
                         mg=mg if centered else None)
        _c.decay(op, lr, weight_decay)
        _c.finite(op, "rho", rho, lo=0.0, hi=1.0)
        _c.finite(op, "eps", eps, lo=0.0)
        _c.finite(op, "momentum", momentum, lo=0.0)

    @staticmethod
    def _check_adam(param, grad, m, v, lr, beta1, beta2, eps, step, weight_decay):
        op = "adam_update"
        _c.update_arrays(op, param, grad, m=m, v=v)
        _c.decay(op, lr, weight_decay)
        _c.finite(op, "beta1", beta1, lo=0.0, hi=1.0, hi_open=True)
        _c.finite(op, "beta2", beta2, lo=0.0, hi=1.0, hi_open=True)
        _c.finite(op, "eps", eps, lo=0.0)
        return _c.step_count(op, step)

    def _tiny_to_zero(self, state, slot):
        """Decaying optimizer state below the dtype's smallest normal is stored
        as 0 (the C kernels' rule, see csrc/kernels/optim.c: a dead unit's state
        would otherwise sit in the denormal range, where x86 arithmetic is
        ~20x slower; the update it would make is below lr * 1e-30)."""
        t = self._scratch(state.shape, state.dtype, slot)
        np.abs(state, out=t)
        np.copyto(state, 0, where=t < np.finfo(state.dtype).tiny)

    def _decay(self, param, grad, lr, weight_decay, decoupled, slot):
        """Apply weight decay; returns the gradient to use."""
        if not weight_decay:
            return grad
        if decoupled:
            param *= param.dtype.type(1.0 - lr * weight_decay)
            return grad
        g = self._scratch(grad.shape, grad.dtype, slot)
        np.multiply(param, weight_decay, out=g)
        g += grad
        return g

    def sgd_update(self, param, grad, *, lr, momentum=0.0, velocity=None, nesterov=False,
                   weight_decay=0.0, decoupled=False):
        """SGD (Keras): momentum == 0: p -= lr g. Else v = momentum v - lr g;
        p += v, or with nesterov p += momentum v - lr g."""
        self._check_sgd(param, grad, velocity, lr, momentum, weight_decay)
        g = self._decay(param, grad, lr, weight_decay, decoupled, "sgd_g")
        if momentum == 0.0:
            t = np.multiply(g, lr, out=self._scratch(g.shape, g.dtype, "sgd_t"))
            param -= t
            return param
        if velocity is None:
            raise ValueError("sgd_update: momentum > 0 needs a velocity buffer")
        t = np.multiply(g, lr, out=self._scratch(g.shape, g.dtype, "sgd_t"))
        velocity *= momentum
        velocity -= t
        self._tiny_to_zero(velocity, "opt_tiny")
        if nesterov:
            param -= t
            t2 = np.multiply(velocity, momentum, out=t)
            param += t2
        else:
            param += velocity
        return param

    def adagrad_update(self, param, grad, accum, *, lr, eps=1e-7, weight_decay=0.0, decoupled=False):
        """Adagrad (Keras): acc += g^2; p -= lr g / sqrt(acc + eps) (eps inside
        the sqrt; the caller initialises acc, Keras uses 0.1)."""
        self._check_adagrad(param, grad, accum, lr, eps, weight_decay)
        g = self._decay(param, grad, lr, weight_decay, decoupled, "ada_g")
        t = self._scratch(g.shape, g.dtype, "ada_t")
        np.multiply(g, g, out=t)
        accum += t
        np.add(accum, eps, out=t)
        np.sqrt(t, out=t)
        np.divide(g, t, out=t)
        t *= lr
        param -= t
        return param

    def rmsprop_update(self, param, grad, ms, *, lr, rho=0.9, eps=1e-7, momentum=0.0, mom=None,
                       centered=False, mg=None, weight_decay=0.0, decoupled=False):
        """RMSprop (Keras): ms = rho ms + (1 - rho) g^2; centered: mg = rho mg +
        (1 - rho) g, denom = ms - mg^2 + eps, else denom = ms + eps (eps inside
        the sqrt); inc = lr g / sqrt(denom); momentum > 0: mom = momentum mom + inc,
        p -= mom; else p -= inc."""
        self._check_rmsprop(param, grad, ms, mom, mg, lr, rho, eps, momentum, centered, weight_decay)
        g = self._decay(param, grad, lr, weight_decay, decoupled, "rms_g")
        t = self._scratch(g.shape, g.dtype, "rms_t")
        np.multiply(g, g, out=t)
        t *= 1.0 - rho
        ms *= rho
        ms += t
        self._tiny_to_zero(ms, "opt_tiny")
        if centered:
            if mg is None:
                raise ValueError("rmsprop_update: centered=True needs an mg buffer")
            mg *= rho
            np.multiply(g, 1.0 - rho, out=t)
            mg += t
            self._tiny_to_zero(mg, "opt_tiny")
            np.multiply(mg, mg, out=t)
            np.subtract(ms, t, out=t)
            t += eps
        else:
            np.add(ms, eps, out=t)
        np.sqrt(t, out=t)
        np.divide(g, t, out=t)
        t *= lr
        if momentum:
            if mom is None:
                raise ValueError("rmsprop_update: momentum > 0 needs a mom buffer")
            mom *= momentum
            mom += t
            self._tiny_to_zero(mom, "opt_tiny")
            param -= mom
        else:
            param -= t
        return param

    def adam_update(self, param, grad, m, v, *, lr, beta1=0.9, beta2=0.999, eps=1e-7, step,
                    weight_decay=0.0, decoupled=False):
        """Adam (Keras): m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2;
        alpha = lr sqrt(1 - b2^t) / (1 - b1^t) (bias correction, computed once
        in double); p -= alpha m / (sqrt(v) + eps) — eps is added to the
        uncorrected sqrt(v) ("epsilon hat"). step t counts from 1.
        decoupled=True with weight_decay gives AdamW (p -= lr wd p first)."""
        step = self._check_adam(param, grad, m, v, lr, beta1, beta2, eps, step, weight_decay)
        g = self._decay(param, grad, lr, weight_decay, decoupled, "adam_g")
        alpha = lr * math.sqrt(1.0 - beta2 ** step) / (1.0 - beta1 ** step)
        t = self._scratch(g.shape, g.dtype, "adam_t")
        m *= beta1
        np.multiply(g, 1.0 - beta1, out=t)
        m += t
        v *= beta2
        np.multiply(g, g, out=t)
        t *= 1.0 - beta2
        v += t
        self._tiny_to_zero(m, "opt_tiny")
        self._tiny_to_zero(v, "opt_tiny")
        np.sqrt(v, out=t)
        t += eps
        np.divide(m, t, out=t)
        t *= alpha
        param -= t
        return param

    # ------------------------------------------------------------ dropout
    @staticmethod
    def _dropout_keep(n, rate, seed, offset):
        idx = np.arange(1, n + 1, dtype=np.uint64)
        idx += np.uint64(offset)
        with np.errstate(over="ignore"):
            z = idx * _GOLDEN
            z += np.uint64(seed & 0xFFFFFFFFFFFFFFFF)
            z ^= z >> np.uint64(30)
            z *= _MIX1
            z ^= z >> np.uint64(27)
            z *= _MIX2
            z ^= z >> np.uint64(31)
        thr = np.uint64(int(rate * (1 << 24)))
        return (z >> np.uint64(40)) >= thr

    def dropout(self, x, rate, seed, offset=0, out=None, mask=None):
        """Inverted dropout: element i is kept iff hash(seed, offset + i) clears
        `rate` (a counter-based splitmix64 hash, so the mask depends only on
        (seed, offset, i), not on threads); y = x keep / (1 - rate). `mask`
        (uint8, same shape) receives the keep flags for the backward."""
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"dropout: rate must be in [0, 1), got {rate}")
        rate = float(np.float32(rate))   # the C kernel receives a float32 rate: same threshold and scale
        out = self._out(out, x)
        keep = self._dropout_keep(x.size, rate, int(seed), int(offset)).reshape(x.shape)
        if mask is not None:
            mask[...] = keep
        scale = x.dtype.type(1.0 / (1.0 - rate))
        np.multiply(x, keep, out=out)
        out *= scale
        return out

    def backprop_dropout(self, dy, mask, rate, out=None):
        """dx = dy keep / (1 - rate)."""
        rate = float(np.float32(rate))
        out = self._out(out, dy)
        np.multiply(dy, mask, out=out, casting="unsafe")
        out *= dy.dtype.type(1.0 / (1.0 - rate))
        return out

    # ------------------------------------------------------------ normalisation
    def layernorm_forward(self, x, gamma, beta, eps, out=None, mean=None, rstd=None):
        """Normalise each row over the last axis: (x - mean) rstd gamma + beta,
        rstd = 1 / sqrt(var + eps) (biased variance). mean/rstd (one per row)
        are stored when given, for the backward."""
        out = self._out(out, x)
        x2, o2 = _as_2d(x), _as_2d(out)
        mu = x2.mean(axis=1, dtype=np.float64)
        var = np.square(x2 - mu[:, None].astype(x.dtype)).mean(axis=1, dtype=np.float64)
        rs = 1.0 / np.sqrt(var + eps)
        if mean is not None:
            mean[...] = mu
        if rstd is not None:
            rstd[...] = rs
        np.subtract(x2, mu[:, None].astype(x.dtype), out=o2)
        o2 *= rs[:, None].astype(x.dtype)
        if gamma is not None:
            o2 *= gamma
        if beta is not None:
            o2 += beta
        return out

    def layernorm_backward(self, dy, x, gamma, mean, rstd, dx=None, dgamma=None, dbeta=None):
        """Backward of layernorm_forward: xhat = (x - mean) rstd, g = dy gamma,
        dx = rstd (g - mean(g) - xhat mean(g xhat)); dgamma = sum_rows(dy xhat);
        dbeta = sum_rows(dy). Returns (dx, dgamma, dbeta)."""
        d2, x2 = _as_2d(dy), _as_2d(x)
        dt = x.dtype
        xhat = (x2 - np.asarray(mean, dtype=dt)[:, None]) * np.asarray(rstd, dtype=dt)[:, None]
        g = d2 * gamma if gamma is not None else d2.copy()
        mg = g.mean(axis=1, keepdims=True)
        mgx = (g * xhat).mean(axis=1, keepdims=True)
        dx = self._out(dx, dy)
        np.multiply(np.asarray(rstd, dtype=dt)[:, None], g - mg - xhat * mgx, out=_as_2d(dx))
        if gamma is not None:
            dg = (d2 * xhat).sum(axis=0)
            dgamma = dg if dgamma is None else np.copyto(dgamma, dg) or dgamma
        dbeta = d2.sum(axis=0) if dbeta is None else np.sum(d2, axis=0, out=dbeta)
        return dx, dgamma, dbeta

    def batchnorm_forward(self, x, gamma, beta, eps, out=None, mean=None, rstd=None):
        """Training-mode batch normalisation over axis 0 with batch statistics
        (biased variance): (x - mean) rstd gamma + beta; mean/rstd per feature
        are stored when given."""
        out = self._out(out, x)
        x2, o2 = _as_2d(x), _as_2d(out)
        mu = x2.mean(axis=0, dtype=np.float64)
        var = np.square(x2 - mu.astype(x.dtype)).mean(axis=0, dtype=np.float64)
        rs = 1.0 / np.sqrt(var + eps)
        if mean is not None:
            mean[...] = mu
        if rstd is not None:
            rstd[...] = rs
        np.subtract(x2, mu.astype(x.dtype), out=o2)
        o2 *= rs.astype(x.dtype)
        if gamma is not None:
            o2 *= gamma
        if beta is not None:
            o2 += beta
        return out

    def batchnorm_backward(self, dy, x, gamma, mean, rstd, dx=None, dgamma=None, dbeta=None):
        """Backward of batchnorm_forward (batch statistics): xhat = (x - mean) rstd,
        g = dy gamma, dx = rstd (g - mean_0(g) - xhat mean_0(g xhat)).
        Returns (dx, dgamma, dbeta)."""
        d2, x2 = _as_2d(dy), _as_2d(x)
        dt = x.dtype
        rs = np.asarray(rstd, dtype=dt)
        xhat = (x2 - np.asarray(mean, dtype=dt)) * rs
        g = d2 * gamma if gamma is not None else d2.copy()
        mg = g.mean(axis=0)
        mgx = (g * xhat).mean(axis=0)
        dx = self._out(dx, dy)
        np.multiply(rs, g - mg - xhat * mgx, out=_as_2d(dx))
        if gamma is not None:
            dg = (d2 * xhat).sum(axis=0)
            dgamma = dg if dgamma is None else np.copyto(dgamma, dg) or dgamma
        dbeta = d2.sum(axis=0) if dbeta is None else np.sum(d2, axis=0, out=dbeta)
        return dx, dgamma, dbeta

    # ------------------------------------------------------------ merging and reshaping
    # Arrays are passed whole, so every axis argument here counts the batch
    # axis (axis 0, never merged, concatenated or contracted); the layers
    # translate Keras's arguments. Element-wise merges follow Keras's Merge:
    # an input of lower rank is read as if expanded at axis 1 until all ranks
    # match, then per-sample dims of 1 broadcast. Gradients of broadcast inputs
    # are summed over the broadcast axes. `dxs` lists take None for a gradient
    # that is not wanted.
    def _merge_shape(self, xs, op):
        """The output shape of an element-wise merge of `xs` (full shapes)."""
        if not isinstance(xs, (list, tuple)) or not xs:
            raise ValueError(f"{op}: expected a non-empty list of arrays, got {xs!r}")
        _float_dtype(*xs)
        shapes = [x.shape for x in xs]
        if any(x.ndim < 1 for x in xs) or len({s[0] for s in shapes}) != 1:
            raise ValueError(f"{op}: inputs need one shared batch axis; got shapes {shapes}")
        nd = max(len(s) for s in shapes)
        out = [shapes[0][0]] + [1] * (nd - 1)
        for s in shapes:
            s = (1,) * (nd - len(s)) + s[1:]
            for k in range(1, nd):
                a, b = out[k], s[k - 1]
                if a != b and a != 1 and b != 1:
                    raise ValueError(f"{op}: shapes {shapes} do not broadcast (after the batch "
                                     "axis, dims must match or be 1)")
                out[k] = max(a, b)
        return tuple(out)

    @staticmethod
    def _expand_rank(a, ndim):
        """View of `a` (batch, ...) with axes of 1 inserted after the batch axis up to ndim."""
        if a.ndim == ndim:
            return a
        return a.reshape(a.shape[:1] + (1,) * (ndim - a.ndim) + a.shape[1:])

    @staticmethod
    def _check_out_list(outs, likes, op, name, avoid=()):
        """outs[i] (None = skip) must have likes[i]'s shape and overlap no array in
        avoid nor another entry of outs."""
        if not isinstance(outs, (list, tuple)) or len(outs) != len(likes):
            raise ValueError(f"{op}: {name} must be a list of {len(likes)} arrays or None")
        seen = []
        for i, (o, shape) in enumerate(zip(outs, likes)):
            if o is None:
                continue
            if o.shape != tuple(shape):
                raise ValueError(f"{op}: {name}[{i}] has shape {o.shape}, expected {tuple(shape)}")
            if any(np.shares_memory(o, a) for a in list(avoid) + seen):
                raise ValueError(f"{op}: {name}[{i}] overlaps an input or another entry of {name}")
            seen.append(o)

    def merge_forward(self, kind, xs, out=None):
        """Element-wise merge of the arrays `xs` (Keras's merge layers), folded
        left to right: add = x0 + x1 + ...; subtract = x0 - x1 (two inputs);
        multiply = x0 x1 ...; average = (x0 + x1 + ...) / len(xs);
        maximum / minimum = the element-wise extreme (NaN propagates).
        out: (batch, *broadcast shape), not overlapping any input."""
        if kind not in MERGE_KINDS:
            raise ValueError(f"merge_forward: unknown kind {kind!r}; expected one of {MERGE_KINDS}")
        shape = self._merge_shape(xs, "merge_forward")
        if kind == "subtract" and len(xs) != 2:
            raise ValueError(f"merge_forward: subtract takes exactly 2 inputs, got {len(xs)}")
        if out is None:
            out = np.empty(shape, dtype=np.result_type(*xs))
        elif out.shape != shape:
            raise ValueError(f"merge_forward: out has shape {out.shape}, expected {shape} "
                             f"for inputs {[x.shape for x in xs]}")
        elif any(np.shares_memory(out, x) for x in xs):
            raise ValueError("merge_forward: out must not overlap an input")
        nd = len(shape)
        xe = [self._expand_rank(x, nd) for x in xs]
        if len(xe) == 1:
            np.copyto(out, xe[0])
            return out
        fn = _MERGE_UFUNC[kind]
        fn(xe[0], xe[1], out=out)
        for x in xe[2:]:
            fn(out, x, out=out)
        if kind == "average":
            np.divide(out, out.dtype.type(len(xs)), out=out)
        return out

    def merge_backward(self, kind, dy, xs, y, dxs):
        """Gradients of merge_forward into dxs[i] (xs[i]'s shape; None = skip),
        each summed over the axes xs[i] was broadcast along:
        add: dy; subtract: dy and -dy; average: dy / len(xs);
        multiply: dy times the product of the other inputs;
        maximum / minimum: dy where xs[i] holds the output y and no earlier
        input does — on ties the whole gradient goes to the FIRST input holding
        the extreme (as TensorFlow's pairwise fold does); where y is NaN no
        input gets a gradient. y is needed for maximum / minimum only.
        One entry of dxs may be `dy` itself when that input has dy's shape
        (it is written last); the others must overlap neither dy, the inputs
        nor each other. Returns dxs."""
        if kind not in MERGE_KINDS:
            raise ValueError(f"merge_backward: unknown kind {kind!r}; expected one of {MERGE_KINDS}")
        shape = self._merge_shape(xs, "merge_backward")
        if dy.shape != shape:
            raise ValueError(f"merge_backward: dy has shape {dy.shape}, expected {shape} "
                             f"for inputs {[x.shape for x in xs]}")
        if kind in ("maximum", "minimum") and (y is None or y.shape != shape):
            raise ValueError(f"merge_backward: {kind} needs the forward output y of shape {shape}")
        if not isinstance(dxs, (list, tuple)) or len(dxs) != len(xs):
            raise ValueError(f"merge_backward: dxs must be a list of {len(xs)} arrays or None")
        alias = [i for i, d in enumerate(dxs) if d is dy]
        if len(alias) > 1 or (alias and xs[alias[0]].shape != shape):
            raise ValueError("merge_backward: only one entry of dxs, of dy's shape, may be dy")
        self._check_out_list([None if d is dy else d for d in dxs], [x.shape for x in xs],
                             "merge_backward", "dxs", avoid=[dy] + list(xs))
        nd = len(shape)
        xe = [self._expand_rank(x, nd) for x in xs]
        order = [i for i, d in enumerate(dxs) if d is not None and d is not dy] + alias
        for i in order:
            dxe = self._expand_rank(dxs[i], nd)
            red = tuple(k for k in range(1, nd) if dxe.shape[k] != shape[k])
            if kind == "add" or (kind == "subtract" and i == 0):
                if red:
                    np.sum(dy, axis=red, keepdims=True, out=dxe)
                elif dxe is not dy:
                    np.copyto(dxe, dy)
                continue
            g = self._scratch(shape, dy.dtype, "merge_g") if red else dxe
            if kind == "subtract":
                np.negative(dy, out=g)
            elif kind == "average":
                np.divide(dy, dy.dtype.type(len(xs)), out=g)
            elif kind == "multiply":
                src = dy
                for j in range(len(xs)):
                    if j != i:
                        np.multiply(src, xe[j], out=g)
                        src = g
                if src is dy and g is not dy:      # a single input: d(x0)/d(x0) = 1
                    np.copyto(g, dy)
            else:
                # mask = (x_i == y) and no earlier x_j == y
                mask = self._scratch(shape, np.bool_, "merge_mask")
                other = self._scratch(shape, np.bool_, "merge_mask2")
                np.equal(xe[i], y, out=mask)
                for j in range(i):
                    np.not_equal(xe[j], y, out=other)
                    mask &= other
                if g is not dy:
                    np.copyto(g, dy)
                np.logical_not(mask, out=mask)
                np.copyto(g, 0, where=mask)
            if red:
                np.sum(g, axis=red, keepdims=True, out=dxe)
        return dxs

    @staticmethod
    def _concat_axis(axis, ndim, op):
        if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)) \
                or not -ndim <= axis < ndim:
            raise ValueError(f"{op}: axis {axis!r} is out of range for arrays of rank {ndim}")
        axis = int(axis) % ndim
        if axis == 0:
            raise ValueError(f"{op}: axis 0 is the batch axis; it cannot be concatenated")
        return axis

    def concat_forward(self, xs, axis, out=None):
        """out = the arrays xs joined along `axis` (1 <= axis < ndim, or negative);
        every other dim must match. out must not overlap an input."""
        if not isinstance(xs, (list, tuple)) or not xs:
            raise ValueError(f"concat_forward: expected a non-empty list of arrays, got {xs!r}")
        _float_dtype(*xs)
        nd = xs[0].ndim
        axis = self._concat_axis(axis, nd, "concat_forward")
        shapes = [x.shape for x in xs]
        if any(len(s) != nd or s[:axis] + s[axis + 1:] != shapes[0][:axis] + shapes[0][axis + 1:]
               for s in shapes):
            raise ValueError(f"concat_forward: shapes {shapes} differ outside axis {axis}")
        shape = shapes[0][:axis] + (sum(s[axis] for s in shapes),) + shapes[0][axis + 1:]
        if out is None:
            out = np.empty(shape, dtype=np.result_type(*xs))
        elif out.shape != shape:
            raise ValueError(f"concat_forward: out has shape {out.shape}, expected {shape}")
        elif any(np.shares_memory(out, x) for x in xs):
            raise ValueError("concat_forward: out must not overlap an input")
        np.concatenate(xs, axis=axis, out=out)
        return out

    def concat_backward(self, dy, axis, sizes, dxs):
        """dxs[i] = the slice of dy along `axis` that input i filled; `sizes` are
        the inputs' lengths along axis. None entries are skipped. Returns dxs."""
        axis = self._concat_axis(axis, dy.ndim, "concat_backward")
        sizes = [int(s) for s in sizes]
        if sum(sizes) != dy.shape[axis] or any(s < 0 for s in sizes):
            raise ValueError(f"concat_backward: sizes {sizes} do not add up to dy's "
                             f"{dy.shape[axis]} along axis {axis} (dy {dy.shape})")
        likes = [dy.shape[:axis] + (s,) + dy.shape[axis + 1:] for s in sizes]
        self._check_out_list(dxs, likes, "concat_backward", "dxs", avoid=[dy])
        lead = (slice(None),) * axis
        start = 0
        for dx, s in zip(dxs, sizes):
            if dx is not None:
                np.copyto(dx, dy[lead + (slice(start, start + s),)])
            start += s
        return dxs

    @staticmethod
    def _dot_axes(x1, x2, axes, op):
        _float_dtype(x1, x2)
        try:
            a0, a1 = (int(a) for a in axes)
        except (TypeError, ValueError):
            raise ValueError(f"{op}: axes must be a pair of integers, got {axes!r}") from None
        if x1.ndim < 2 or x2.ndim < 2 or x1.shape[0] != x2.shape[0]:
            raise ValueError(f"{op}: needs two (batch, ...) arrays with one batch size; got "
                             f"shapes {x1.shape} and {x2.shape}")
        if not (-x1.ndim <= a0 < x1.ndim and -x2.ndim <= a1 < x2.ndim):
            raise ValueError(f"{op}: axes {tuple(axes)} out of range for shapes {x1.shape} and {x2.shape}")
        a0, a1 = a0 % x1.ndim, a1 % x2.ndim
        if 0 in (a0, a1):
            raise ValueError(f"{op}: cannot contract the batch axis (axes {tuple(axes)})")
        if x1.shape[a0] != x2.shape[a1]:
            raise ValueError(f"{op}: contracted dims differ: x1 {x1.shape} axis {a0} vs "
                             f"x2 {x2.shape} axis {a1}")
        n, k = x1.shape[0], x1.shape[a0]
        rest1 = x1.shape[1:a0] + x1.shape[a0 + 1:]
        rest2 = x2.shape[1:a1] + x2.shape[a1 + 1:]
        p, q = int(np.prod(rest1)), int(np.prod(rest2))
        return a0, a1, n, k, p, q, (n,) + ((rest1 + rest2) or (1,))

    def dot_forward(self, x1, x2, axes, out=None):
        """Batch dot product (keras.layers.Dot): for each sample b,
        out[b, i..., j...] = sum_k x1[b, ..k..] x2[b, ..k..], contracting axis
        axes[0] of x1 with axes[1] of x2; the free axes of x1 come first, then
        those of x2; a sample with no free axis gives shape (batch, 1)."""
        a0, a1, n, k, p, q, shape = self._dot_axes(x1, x2, axes, "dot_forward")
        if out is None:
            out = np.empty(shape, dtype=np.result_type(x1, x2))
        elif out.shape != shape:
            raise ValueError(f"dot_forward: out has shape {out.shape}, expected {shape}")
        elif np.shares_memory(out, x1) or np.shares_memory(out, x2):
            raise ValueError("dot_forward: out must not overlap x1 or x2")
        A = np.moveaxis(x1, a0, -1).reshape(n, p, k)
        B = np.moveaxis(x2, a1, 1).reshape(n, k, q)
        self._bmm_into(A, B, out, "dot_out")
        return out

    def _bmm_into(self, a, b, out, slot):
        """out (any strides; its C-order elements are the product's) = a @ b, batched."""
        n, p, q = a.shape[0], a.shape[1], b.shape[2]
        if out.flags.c_contiguous:
            np.matmul(a, b, out=out.reshape(n, p, q))
        else:
            t = self._scratch((n, p, q), out.dtype, slot)
            np.matmul(a, b, out=t)
            np.copyto(out, t.reshape(out.shape))

    def dot_backward(self, dy, x1, x2, axes, dx1=None, dx2=None):
        """Gradients of dot_forward: dx1 = dy . x2 over x2's free axes, dx2 =
        x1 . dy over x1's free axes, each in its input's layout. None = not
        computed. Returns (dx1, dx2)."""
        a0, a1, n, k, p, q, shape = self._dot_axes(x1, x2, axes, "dot_backward")
        if dy.shape != shape:
            raise ValueError(f"dot_backward: dy has shape {dy.shape}, expected {shape}")
        self._check_out_list([dx1, dx2], [x1.shape, x2.shape], "dot_backward", "dx",
                             avoid=[dy, x1, x2])
        D = dy.reshape(n, p, q)
        if dx1 is not None:                                  # (n, p, q) @ (n, q, k)
            B = np.moveaxis(x2, a1, 1).reshape(n, k, q)
            d1 = np.moveaxis(dx1, a0, -1)                    # the product's layout in dx1
            self._bmm_into(D, B.transpose(0, 2, 1), d1, "dot_d1")
        if dx2 is not None:                                  # (n, k, p) @ (n, p, q)
            A = np.moveaxis(x1, a0, -1).reshape(n, p, k)
            d2 = np.moveaxis(dx2, a1, 1)
            self._bmm_into(A.transpose(0, 2, 1), D, d2, "dot_d2")
        return dx1, dx2

    def l2_normalize_forward(self, x, axis, eps, out=None, inv_norm=None):
        """out = x * min(1 / sqrt(sum(x^2, axis)), 1 / eps), Keras's
        ops.normalize(order=2) (eps = backend.epsilon() = 1e-7 there). inv_norm
        (x's shape with 1 at `axis`) receives the clamped inverse norm for the
        backward. Returns out."""
        _float_dtype(x)
        axis = int(axis) % x.ndim
        out = self._out(out, x)
        kshape = x.shape[:axis] + (1,) + x.shape[axis + 1:]
        if inv_norm is None:
            inv_norm = np.empty(kshape, dtype=x.dtype)
        elif inv_norm.shape != kshape:
            raise ValueError(f"l2_normalize_forward: inv_norm has shape {inv_norm.shape}, "
                             f"expected {kshape}")
        sq = self._scratch(x.shape, x.dtype, "l2n")
        np.square(x, out=sq)
        np.sum(sq, axis=axis, keepdims=True, out=inv_norm)
        with np.errstate(divide="ignore"):
            np.sqrt(inv_norm, out=inv_norm)
            np.divide(x.dtype.type(1), inv_norm, out=inv_norm)
        np.minimum(inv_norm, x.dtype.type(1.0 / eps), out=inv_norm)
        np.multiply(x, inv_norm, out=out)
        return out

    def l2_normalize_backward(self, dy, y, inv_norm, axis, eps, out=None):
        """Gradient of l2_normalize_forward from its output y and inv_norm:
        dx = r (dy - y sum(dy y, axis)) where the norm was not clamped, and
        dx = r dy where it was (r = inv_norm, clamped at 1 / eps). `out` may be
        dy itself. Returns out."""
        _float_dtype(dy, y)
        if dy.shape != y.shape:
            raise ValueError(f"l2_normalize_backward: dy {dy.shape} and y {y.shape} differ")
        axis = int(axis) % y.ndim
        kshape = y.shape[:axis] + (1,) + y.shape[axis + 1:]
        if inv_norm.shape != kshape:
            raise ValueError(f"l2_normalize_backward: inv_norm has shape {inv_norm.shape}, "
                             f"expected {kshape}")
        out = self._out(out, dy)
        t = self._scratch(y.shape, dy.dtype, "l2n")
        s = self._scratch(kshape, dy.dtype, "l2n_s")
        np.multiply(dy, y, out=t)
        np.sum(t, axis=axis, keepdims=True, out=s)
        s[inv_norm >= inv_norm.dtype.type(1.0 / eps)] = 0          # clamped: r is a constant
        np.multiply(y, s, out=t)
        np.subtract(dy, t, out=out)
        np.multiply(out, inv_norm, out=out)
        return out

    def permute_forward(self, x, axes, out=None):
        """out = x transposed by the full permutation `axes` (axes[0] == 0: the
        batch axis stays first), copied contiguous."""
        axes = self._permutation(axes, x.ndim, "permute_forward")
        shape = tuple(x.shape[a] for a in axes)
        if out is None:
            out = np.empty(shape, dtype=x.dtype)
        elif out.shape != shape:
            raise ValueError(f"permute_forward: out has shape {out.shape}, expected {shape}")
        np.copyto(out, x.transpose(axes))
        return out

    def permute_backward(self, dy, axes, out=None):
        """Gradient of permute_forward: dy transposed back by the inverse permutation."""
        axes = self._permutation(axes, dy.ndim, "permute_backward")
        inv = tuple(int(a) for a in np.argsort(axes))
        shape = tuple(dy.shape[a] for a in inv)
        if out is None:
            out = np.empty(shape, dtype=dy.dtype)
        elif out.shape != shape:
            raise ValueError(f"permute_backward: out has shape {out.shape}, expected {shape}")
        np.copyto(out, dy.transpose(inv))
        return out

    @staticmethod
    def _permutation(axes, ndim, op):
        axes = tuple(int(a) for a in axes)
        if sorted(axes) != list(range(ndim)) or axes[0] != 0:
            raise ValueError(f"{op}: axes {axes} is not a permutation of 0..{ndim - 1} "
                             "keeping the batch axis 0 first")
        return axes

    def repeat_vector_forward(self, x, out):
        """out[b, r, :] = x[b, :] for every r: x (batch, f), out (batch, n, f)."""
        if x.ndim != 2 or out.ndim != 3 or out.shape[::2] != x.shape:
            raise ValueError(f"repeat_vector_forward: x {x.shape} and out {out.shape} do not "
                             "match (batch, f) -> (batch, n, f)")
        np.copyto(out, x[:, None, :])
        return out

    def repeat_vector_backward(self, dy, out=None):
        """Gradient of repeat_vector_forward: out = dy summed over axis 1."""
        if dy.ndim != 3:
            raise ValueError(f"repeat_vector_backward: dy must be (batch, n, f), got {dy.shape}")
        shape = (dy.shape[0], dy.shape[2])
        if out is None:
            out = np.empty(shape, dtype=dy.dtype)
        elif out.shape != shape:
            raise ValueError(f"repeat_vector_backward: out has shape {out.shape}, expected {shape}")
        np.sum(dy, axis=1, out=out)
        return out


#: element-wise merge kinds of merge_forward / merge_backward (Keras's merge layers)
MERGE_KINDS = ("add", "subtract", "multiply", "average", "maximum", "minimum")
_MERGE_UFUNC = {"add": np.add, "subtract": np.subtract, "multiply": np.multiply,
                "average": np.add, "maximum": np.maximum, "minimum": np.minimum}
