"""NumpyOps — the complete pure-NumPy implementation of every fastgrad op.

It is three things at once: the reference the C kernels are tested against,
the fallback for inputs the C does not take (float64, odd layouts), and the
baseline the benchmarks compare with. So it is written to be both honest and
fast: `out=` everywhere, in-place ufuncs, reused scratch buffers instead of
temporaries, numerically stable formulas.

Conventions shared with NativeOps (same names, same signatures; a test checks):
- Activations are `op(x, out=None) -> out`; their derivatives are
  `backprop_op(dy, ref, out=None) -> dx` where `ref` is the forward OUTPUT y
  for relu/sigmoid/tanh/softmax/log_softmax/linear and the forward INPUT x for
  gelu/gelu_tanh.
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

import math

import numpy as np

#: activation names understood by `activation`, the Dense layer and the
#: fused dense kernel; the integer codes match FG_ACT_* in csrc/fg_common.h
ACTIVATIONS = {"linear": 0, "relu": 1, "sigmoid": 2, "tanh": 3, "gelu": 4, "gelu_tanh": 5,
               "softmax": 100, "log_softmax": 101}

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


class NumpyOps:
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
        if out is None:
            return np.empty(like.shape, dtype=dtype or like.dtype)
        if out.shape != like.shape:
            raise ValueError(f"out has shape {out.shape}, expected {like.shape}")
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

    def exp(self, x, out=None):
        return np.exp(x, out=self._out(out, x))

    def log(self, x, out=None):
        return np.log(x, out=self._out(out, x))

    def softmax(self, x, out=None):
        """Row-wise softmax over the last axis, max subtracted."""
        out = self._out(out, x)
        x2, o2 = _as_2d(x), _as_2d(out)
        mx = np.max(x2, axis=1, keepdims=True)
        np.subtract(x2, mx, out=o2)
        np.exp(o2, out=o2)
        o2 /= np.sum(o2, axis=1, keepdims=True)
        return out

    def log_softmax(self, x, out=None):
        """Row-wise log-softmax: x - max - log(sum(exp(x - max)))."""
        out = self._out(out, x)
        x2, o2 = _as_2d(x), _as_2d(out)
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

    def backprop_softmax(self, dy, y, out=None):
        """dx = y * (dy - sum(dy * y)) row-wise (y: the forward output)."""
        out = self._out(out, dy)
        d2, y2, o2 = _as_2d(dy), _as_2d(y), _as_2d(out)
        s = np.einsum("ij,ij->i", d2, y2)[:, None]
        np.subtract(d2, s, out=o2)
        o2 *= y2
        return out

    def backprop_log_softmax(self, dy, y, out=None):
        """dx = dy - exp(y) * sum(dy) row-wise (y: the forward output)."""
        out = self._out(out, dy)
        d2, y2, o2 = _as_2d(dy), _as_2d(y), _as_2d(out)
        s = np.sum(d2, axis=1, keepdims=True)
        np.exp(y2, out=o2)
        o2 *= -s
        o2 += d2
        return out

    def activation(self, name, x, out=None):
        """Apply the activation called `name` (see ACTIVATIONS)."""
        if name not in ACTIVATIONS:
            raise ValueError(f"unknown activation {name!r}; expected one of {sorted(ACTIVATIONS)}")
        return getattr(self, name)(x, out=out)

    def backprop_activation(self, name, dy, y, x, out=None):
        """Backward of activation `name`; y is its output, x its input."""
        if name not in ACTIVATIONS:
            raise ValueError(f"unknown activation {name!r}; expected one of {sorted(ACTIVATIONS)}")
        ref = x if name in ("gelu", "gelu_tanh") else y
        return getattr(self, "backprop_" + name)(dy, ref, out=out)

    # ------------------------------------------------------------ dense layer
    def dense_forward(self, x, w, b=None, activation="linear", out=None, preact=None):
        """y = act(x @ w + b); w is (in, out). If `preact` is given, x @ w + b
        is stored there too (the gelu backward needs it)."""
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
        q = p2 / s
        qc = np.clip(q, eps, 1.0 - eps)
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
        if step < 1:
            raise ValueError(f"adam_update: step must be >= 1, got {step}")
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
