"""LossOptNumpyOps — NumPy reference of the further Keras 3 losses and optimizers
(the C twins are csrc/lossopt, formulas in csrc/lossopt/fg_lossopt.h).

Losses follow NumpyOps' convention: `op(pred, target, sample_weight=None,
grad_out=None, ...) -> (loss, grad)`, loss = Keras "sum_over_batch_size" of the
per-sample losses (sum_i w_i l_i / number of per-sample values), grad = d loss /
d pred. Per-sample values are Keras's:
- mean over the last axis of an element-wise value (mean_absolute_error,
  mean_absolute_percentage_error, mean_squared_logarithmic_error, huber,
  log_cosh, poisson, hinge, squared_hinge): computed, like the MSE, over the
  (rows, rest) view, which gives the same mean for any rank;
- a row-wise value over the last axis (kl_divergence, categorical_hinge,
  cosine_similarity): per-sample values have shape pred.shape[:-1], the sample
  weight of row i applies to all of its values.
`loss_values(name, pred, target, **params)` returns the per-sample values
(float64, shape (batch,) or pred.shape[:-1]) for reduction=None.
Values are computed in float64, gradients rounded to the input dtype, so the C
kernels agree to float32 rounding (not bitwise).

Optimizer updates work in place on flat float32 buffers and do the C kernels'
float32 operations in the same order with the same float32 constants (the
scalars the C side takes as float are rounded to float32 first), so NumPy and
C give the same bits (Ftrl with learning_rate_power other than -0.5 / 0 calls
pow, whose last bit may differ between libm and NumPy).
"""
from __future__ import annotations

import math

import numpy as np

from . import contracts as _c

#: losses whose per-sample value is a row-wise sum over the last axis
ROWWISE_LOSSES = frozenset({"kl_divergence", "categorical_hinge", "cosine_similarity"})
_EPS = 1e-7   # Keras backend.epsilon()


def _f32(x):
    """x rounded to float32, as a Python float (the value the C kernel sees)."""
    return float(np.float32(x))


def _tiny0(a):
    np.copyto(a, 0, where=np.abs(a) < np.finfo(a.dtype).tiny)


#: Nadam: steps whose momentum-schedule factor differs from beta1 in double (see nadam_uprod in
#: csrc/lossopt/optim_ext.c)
_NADAM_EXACT_STEPS = 1000

class LossOptNumpyOps:
    """Mixin of NumpyOps: the losses and optimizer updates of csrc/lossopt."""

    # ------------------------------------------------------------ losses
    def _ploss_layout(self, name, pred, target, sample_weight):
        """(p2, t2, w, rows, cols, div): the 2-D views the kernel runs over, the row
        weights (or None), and the divisor of sum_i w_i v_i giving the loss."""
        if pred.dtype not in (np.float32, np.float64):
            raise TypeError(f"{name}: expected float32 or float64 predictions, got {pred.dtype}")
        if pred.shape != target.shape:
            raise ValueError(f"{name}: prediction shape {pred.shape} and target shape {target.shape} differ")
        if pred.ndim == 0 or pred.shape[0] == 0 or pred.size == 0:
            raise ValueError(f"{name}: empty prediction {pred.shape}")
        batch = pred.shape[0]
        if name in ROWWISE_LOSSES:
            cols = pred.shape[-1] if pred.ndim > 1 else 1
            rows = pred.size // cols
            div = rows
        else:
            rows, cols = batch, pred.size // batch
            div = rows * cols
        w = None
        if sample_weight is not None:
            w = np.asarray(sample_weight, dtype=pred.dtype).reshape(-1)
            if w.shape[0] != batch:
                raise ValueError(f"{name}: sample_weight has {w.shape[0]} entries for {batch} rows")
            if rows != batch:
                w = np.repeat(w, rows // batch)
        p2 = np.ascontiguousarray(pred).reshape(rows, cols)
        t2 = np.ascontiguousarray(target, dtype=pred.dtype).reshape(rows, cols)
        return p2, t2, w, rows, cols, div

    @staticmethod
    def _ploss_rows(name, p2, t2, param, want_grad):
        """(v, d): per-row values v (float64, (rows,): the row's sum for the
        element-wise losses, the row's loss for the row-wise ones) and d = dv/dp
        (float64, (rows, cols)) or None."""
        p = p2.astype(np.float64)
        t = t2.astype(np.float64)
        d = None
        if name == "mean_absolute_error":
            e = p - t
            v = np.abs(e).sum(axis=1)
            if want_grad:
                d = np.sign(e)
        elif name == "mean_absolute_percentage_error":
            den = np.maximum(np.abs(t), _EPS)
            v = 100.0 * np.abs((t - p) / den).sum(axis=1)
            if want_grad:
                d = 100.0 * np.sign(p - t) / den
        elif name == "mean_squared_logarithmic_error":
            pc = np.maximum(p, _EPS)
            a = np.log(pc + 1.0) - np.log(np.maximum(t, _EPS) + 1.0)
            v = (a * a).sum(axis=1)
            if want_grad:
                d = np.where(p >= _EPS, 2.0 * a / (pc + 1.0), 0.0)
        elif name == "huber":
            delta = float(param)
            e = p - t
            a = np.abs(e)
            inside = a <= delta
            v = np.where(inside, 0.5 * e * e, delta * a - 0.5 * delta * delta).sum(axis=1)
            if want_grad:
                d = np.where(inside, e, delta * np.sign(e))
        elif name == "log_cosh":
            x = p - t
            ax = np.abs(x)
            v = (ax + np.log1p(np.exp(-2.0 * ax)) - math.log(2.0)).sum(axis=1)
            if want_grad:
                d = np.tanh(x)
        elif name == "poisson":
            v = (p - t * np.log(p + _EPS)).sum(axis=1)
            if want_grad:
                d = 1.0 - t / (p + _EPS)
        elif name in ("hinge", "squared_hinge"):
            tt = 2.0 * t - 1.0 if np.all((t == 0.0) | (t == 1.0)) else t
            z = 1.0 - tt * p
            h = np.maximum(z, 0.0)
            if name == "hinge":
                v = h.sum(axis=1)
                if want_grad:
                    d = np.where(z > 0.0, -tt, 0.0)
            else:
                v = (h * h).sum(axis=1)
                if want_grad:
                    d = -2.0 * tt * h
        elif name == "kl_divergence":
            tc = np.clip(t, _EPS, 1.0)
            pc = np.clip(p, _EPS, 1.0)
            v = (tc * np.log(tc / pc)).sum(axis=1)
            if want_grad:
                d = np.where((p >= _EPS) & (p <= 1.0), -tc / pc, 0.0)
        elif name == "categorical_hinge":
            pos = (t * p).sum(axis=1)
            q = (1.0 - t) * p
            jm = np.argmax(q, axis=1)
            r = np.arange(p.shape[0])
            neg = q[r, jm]
            v = np.maximum(neg - pos + 1.0, 0.0)
            if want_grad:
                d = -t.copy()
                d[r, jm] += 1.0 - t[r, jm]
                d *= (v > 0.0)[:, None]
        elif name == "cosine_similarity":
            pp = (p * p).sum(axis=1)
            ss = (t * t).sum(axis=1)
            with np.errstate(divide="ignore"):
                rp = np.where(pp > 0.0, 1.0 / np.sqrt(pp), 1e7)
                rt = np.where(ss > 0.0, 1.0 / np.sqrt(ss), 1e7)
            clamped = rp >= 1e7
            rp = np.minimum(rp, 1e7)
            rt = np.minimum(rt, 1e7)
            tp = (t * p).sum(axis=1)
            v = -tp * rp * rt
            if want_grad:
                b = np.where(clamped, 0.0, tp * rp * rp)
                d = -(rt * rp)[:, None] * (t - b[:, None] * p)
        else:
            raise ValueError(f"unknown loss {name!r}")
        return v, d

    def _ploss(self, name, pred, target, sample_weight, grad_out, param=0.0):
        if name == "huber" and not param > 0:
            raise ValueError(f"huber: delta must be > 0, got {param}")
        p2, t2, w, rows, cols, div = self._ploss_layout(name, pred, target, sample_weight)
        v, d = self._ploss_rows(name, p2, t2, param, True)
        scale = np.full(rows, 1.0 / div) if w is None else w.astype(np.float64) / div
        if w is not None:
            v = v * w
        g = self._out(grad_out, pred)
        np.multiply(d, scale[:, None], out=g.reshape(rows, cols), casting="same_kind")
        return float(v.sum() / div), g

    def loss_values(self, name, pred, target, **params):
        """Per-sample values of loss `name` (float64): shape (batch,) for the
        element-wise losses (mean over the other axes), pred.shape[:-1] for the
        row-wise ones (Keras's reduction=None)."""
        p2, t2, _, rows, cols, _ = self._ploss_layout(name, pred, target, None)
        v, _ = self._ploss_rows(name, p2, t2, params.get("delta", 0.0), False)
        if name in ROWWISE_LOSSES:
            return v.reshape(pred.shape[:-1] if pred.ndim > 1 else pred.shape)
        return v / cols

    def mean_absolute_error(self, pred, target, sample_weight=None, grad_out=None):
        """l_i = mean |p - t|; grad sign(p - t) (0 at 0)."""
        return self._ploss("mean_absolute_error", pred, target, sample_weight, grad_out)

    def mean_absolute_percentage_error(self, pred, target, sample_weight=None, grad_out=None):
        """l_i = 100 mean |(t - p) / max(|t|, 1e-7)|."""
        return self._ploss("mean_absolute_percentage_error", pred, target, sample_weight, grad_out)

    def mean_squared_logarithmic_error(self, pred, target, sample_weight=None, grad_out=None):
        """l_i = mean (log(max(p, eps) + 1) - log(max(t, eps) + 1))^2; no gradient where p < eps."""
        return self._ploss("mean_squared_logarithmic_error", pred, target, sample_weight, grad_out)

    def huber(self, pred, target, sample_weight=None, grad_out=None, delta=1.0):
        """l_i = mean of 0.5 e^2 (|e| <= delta) or delta |e| - 0.5 delta^2, e = p - t."""
        return self._ploss("huber", pred, target, sample_weight, grad_out, delta)

    def log_cosh(self, pred, target, sample_weight=None, grad_out=None):
        """l_i = mean log(cosh(p - t)) (Keras: x + softplus(-2x) - log 2); grad tanh(p - t)."""
        return self._ploss("log_cosh", pred, target, sample_weight, grad_out)

    def poisson(self, pred, target, sample_weight=None, grad_out=None):
        """l_i = mean (p - t log(p + 1e-7))."""
        return self._ploss("poisson", pred, target, sample_weight, grad_out)

    def hinge(self, pred, target, sample_weight=None, grad_out=None):
        """l_i = mean max(1 - t p, 0); targets all in {0, 1} are first mapped to 2t - 1."""
        return self._ploss("hinge", pred, target, sample_weight, grad_out)

    def squared_hinge(self, pred, target, sample_weight=None, grad_out=None):
        """l_i = mean max(1 - t p, 0)^2 (targets in {0, 1} mapped to -1 / 1)."""
        return self._ploss("squared_hinge", pred, target, sample_weight, grad_out)

    def kl_divergence(self, pred, target, sample_weight=None, grad_out=None):
        """l = sum over the last axis of t log(t / p), both clipped to [1e-7, 1]."""
        return self._ploss("kl_divergence", pred, target, sample_weight, grad_out)

    def categorical_hinge(self, pred, target, sample_weight=None, grad_out=None):
        """l = max(max_j (1 - t_j) p_j - sum_j t_j p_j + 1, 0) over the last axis."""
        return self._ploss("categorical_hinge", pred, target, sample_weight, grad_out)

    def cosine_similarity(self, pred, target, sample_weight=None, grad_out=None):
        """l = -sum_j t_j p_j r(t) r(p) over the last axis, r(x) = min(1 / ||x||, 1e7)."""
        return self._ploss("cosine_similarity", pred, target, sample_weight, grad_out)

    # ------------------------------------------------------------ optimizers
    #: hyper-parameter ranges (lo, hi, hi_open) of each update, checked by both
    #: backends before anything is written (backend/contracts.py)
    _OPTX_RANGES = {
        "nadam_update": dict(beta1=(0.0, 1.0, True), beta2=(0.0, 1.0, True), eps=(0.0, None, False)),
        "adamax_update": dict(beta1=(0.0, 1.0, True), beta2=(0.0, 1.0, True), eps=(0.0, None, False)),
        "adam_amsgrad_update": dict(beta1=(0.0, 1.0, True), beta2=(0.0, 1.0, True),
                                    eps=(0.0, None, False)),
        "adadelta_update": dict(rho=(0.0, 1.0, False), eps=(0.0, None, False)),
        "ftrl_update": dict(lr_power=(None, 0.0, False), l1=(0.0, None, False), l2=(0.0, None, False),
                            l2_shrinkage=(0.0, None, False), beta=(0.0, None, False)),
        "lion_update": dict(beta1=(0.0, 1.0, False), beta2=(0.0, 1.0, False)),
    }

    @classmethod
    def _optx_check(cls, op, param, grad, states, lr, weight_decay, step=None, **hyper):
        """The shared argument contract of the csrc/lossopt updates: arrays of
        one dtype and shape without overlap, finite hyper-parameters in range,
        an integer step in [1, 2**62] where the update counts steps. Returns
        the step as an int (or None)."""
        _c.update_arrays(op, param, grad, **states)
        _c.decay(op, lr, weight_decay)
        if op == "ftrl_update":
            _c.finite(op, "lr", lr, lo=0.0, lo_open=True)
        for name, value in hyper.items():
            lo, hi, hi_open = cls._OPTX_RANGES[op][name]
            _c.finite(op, name, value, lo=lo, hi=hi, hi_open=hi_open)
        return None if step is None else _c.step_count(op, step)

    @staticmethod
    def _optx_decay(param, grad, lr, wd, decoupled):
        """Weight decay as the C kernels do it; returns the gradient to use."""
        if not wd:
            return grad
        if decoupled:
            param *= np.float32(1.0 - _f32(lr) * _f32(wd))
            return grad
        return grad + np.float32(wd) * param

    def nadam_update(self, param, grad, m, v, *, lr, beta1=0.9, beta2=0.999, eps=1e-7, step,
                     weight_decay=0.0, decoupled=False):
        """Nadam (Keras 3): m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2;
        u_t = b1 (1 - 0.5 * 0.96^t), u_prod_t = prod_{s<=t} u_s;
        m_hat = u_{t+1} m / (1 - u_prod_t u_{t+1}) + (1 - u_t) g / (1 - u_prod_t);
        v_hat = v / (1 - b2^t); p -= (m_hat lr) / (sqrt(v_hat) + eps). t counts from 1."""
        step = self._optx_check("nadam_update", param, grad, dict(m=m, v=v), lr, weight_decay, step,
            beta1=beta1, beta2=beta2, eps=eps)
        if step < 1:
            raise ValueError(f"nadam_update: step must be >= 1, got {step}")
        b1, b2, t = _f32(beta1), _f32(beta2), float(step)
        g = self._optx_decay(param, grad, lr, weight_decay, decoupled)
        ut = b1 * (1.0 - 0.5 * math.pow(0.96, t))
        ut1 = b1 * (1.0 - 0.5 * math.pow(0.96, t + 1.0))
        up = 1.0  # csrc/lossopt/optim_ext.c nadam_uprod: exact head, then b1^(t - 1000)
        head = min(step, _NADAM_EXACT_STEPS)
        for s in range(1, head + 1):
            up *= b1 * (1.0 - 0.5 * math.pow(0.96, float(s)))
        if step > head:
            up *= math.pow(b1, float(step - head))
        c_m = ut1 / (1.0 - up * ut1)
        c_g = (1.0 - ut) / (1.0 - up)
        bc2 = 1.0 - math.pow(b2, t)
        mi = np.float32(b1) * m + np.float32(1.0 - b1) * g
        vi = np.float32(b2) * v + np.float32(1.0 - b2) * (g * g)
        _tiny0(mi)
        _tiny0(vi)
        m[...] = mi
        v[...] = vi
        mh = np.float32(c_m) * mi + np.float32(c_g) * g
        vh = vi / np.float32(bc2)
        param -= (mh * np.float32(lr)) / (np.sqrt(vh) + np.float32(eps))
        return param

    def adamax_update(self, param, grad, m, u, *, lr, beta1=0.9, beta2=0.999, eps=1e-7, step,
                      weight_decay=0.0, decoupled=False):
        """Adamax (Keras 3): m = b1 m + (1 - b1) g; u = max(b2 u, |g|);
        p -= (lr m) / ((1 - b1^t) (u + eps))."""
        step = self._optx_check("adamax_update", param, grad, dict(m=m, u=u), lr, weight_decay,
            step, beta1=beta1, beta2=beta2, eps=eps)
        if step < 1:
            raise ValueError(f"adamax_update: step must be >= 1, got {step}")
        b1, b2 = _f32(beta1), _f32(beta2)
        g = self._optx_decay(param, grad, lr, weight_decay, decoupled)
        mi = np.float32(b1) * m + np.float32(1.0 - b1) * g
        ui = np.maximum(np.float32(b2) * u, np.abs(g))
        _tiny0(mi)
        _tiny0(ui)
        m[...] = mi
        u[...] = ui
        bc1 = np.float32(1.0 - math.pow(b1, float(step)))
        param -= (np.float32(lr) * mi) / (bc1 * (ui + np.float32(eps)))
        return param

    def adadelta_update(self, param, grad, acc_grad, acc_delta, *, lr, rho=0.95, eps=1e-7,
                        weight_decay=0.0, decoupled=False):
        """Adadelta (Keras 3): a = rho a + (1 - rho) g^2;
        d = -(sqrt(acc_delta + eps) g) / sqrt(a + eps);
        acc_delta = rho acc_delta + (1 - rho) d^2; p += lr d."""
        self._optx_check("adadelta_update", param, grad, dict(acc_grad=acc_grad,
            acc_delta=acc_delta), lr, weight_decay, rho=rho, eps=eps)
        r = _f32(rho)
        g = self._optx_decay(param, grad, lr, weight_decay, decoupled)
        e = np.float32(eps)
        a = np.float32(r) * acc_grad + np.float32(1.0 - r) * (g * g)
        _tiny0(a)
        acc_grad[...] = a
        d = -((np.sqrt(acc_delta + e) * g) / np.sqrt(a + e))
        b = np.float32(r) * acc_delta + np.float32(1.0 - r) * (d * d)
        _tiny0(b)
        acc_delta[...] = b
        param += np.float32(lr) * d
        return param

    def ftrl_update(self, param, grad, accum, linear, *, lr, lr_power=-0.5, l1=0.0, l2=0.0,
                    l2_shrinkage=0.0, beta=0.0, weight_decay=0.0, decoupled=False):
        """Ftrl (Keras 3): gs = g + 2 l2_shrinkage p; na = acc + g^2;
        linear += gs - ((na^-lr_power - acc^-lr_power) / lr) p;
        q = na^-lr_power / lr + 2 (l2 + beta / (2 lr)); p = (clip(linear, -l1, l1) - linear) / q;
        acc = na. The caller initialises acc (initial_accumulator_value)."""
        self._optx_check("ftrl_update", param, grad, dict(accum=accum, linear=linear), lr,
            weight_decay, lr_power=lr_power, l1=l1, l2=l2, l2_shrinkage=l2_shrinkage, beta=beta)
        lr = _f32(lr)
        if not lr > 0:
            raise ValueError(f"ftrl_update: learning_rate must be > 0, got {lr}")
        if lr_power > 0 or l1 < 0 or l2 < 0 or l2_shrinkage < 0 or beta < 0:
            raise ValueError(f"ftrl_update: need learning_rate_power <= 0 and l1, l2, l2_shrinkage, "
                             f"beta >= 0 (got {lr_power}, {l1}, {l2}, {l2_shrinkage}, {beta})")
        lrp = _f32(lr_power)
        g = self._optx_decay(param, grad, lr, weight_decay, decoupled)
        l1f = np.float32(l1)
        l2x2 = np.float32(2.0 * (_f32(l2) + _f32(beta) / (2.0 * lr)))
        gs = g + np.float32(2.0 * _f32(l2_shrinkage)) * param
        a0 = accum.copy()
        na = a0 + g * g

        def pw(x):
            if lrp == -0.5:
                return np.sqrt(x)
            if lrp == 0.0:
                return np.ones_like(x)
            return np.power(x, np.float32(-lrp))

        pn, po = pw(na), pw(a0)
        li = linear + (gs - ((pn - po) / np.float32(lr)) * param)
        linear[...] = li
        q = pn / np.float32(lr) + l2x2
        param[...] = (np.clip(li, -l1f, l1f) - li) / q
        accum[...] = na
        return param

    def lion_update(self, param, grad, m, *, lr, beta1=0.9, beta2=0.99, weight_decay=0.0,
                    decoupled=False):
        """Lion (Keras 3): p -= lr sign(b1 m + (1 - b1) g); m = b2 m + (1 - b2) g."""
        self._optx_check("lion_update", param, grad, dict(m=m), lr, weight_decay, beta1=beta1,
            beta2=beta2)
        b1, b2 = _f32(beta1), _f32(beta2)
        g = self._optx_decay(param, grad, lr, weight_decay, decoupled)
        c = np.float32(b1) * m + np.float32(1.0 - b1) * g
        param -= np.float32(lr) * np.sign(c)
        mi = np.float32(b2) * m + np.float32(1.0 - b2) * g
        _tiny0(mi)
        m[...] = mi
        return param

    def adam_amsgrad_update(self, param, grad, m, v, vhat, *, lr, beta1=0.9, beta2=0.999, eps=1e-7,
                            step, weight_decay=0.0, decoupled=False):
        """Adam with amsgrad (Keras 3): Adam's m, v; vhat = max(vhat, v);
        p -= alpha m / (sqrt(vhat) + eps), alpha = lr sqrt(1 - b2^t) / (1 - b1^t)."""
        step = self._optx_check("adam_amsgrad_update", param, grad, dict(m=m, v=v, vhat=vhat), lr,
            weight_decay, step, beta1=beta1, beta2=beta2, eps=eps)
        if step < 1:
            raise ValueError(f"adam_amsgrad_update: step must be >= 1, got {step}")
        b1, b2, t = _f32(beta1), _f32(beta2), float(step)
        g = self._optx_decay(param, grad, lr, weight_decay, decoupled)
        alpha = _f32(lr) * math.sqrt(1.0 - math.pow(b2, t)) / (1.0 - math.pow(b1, t))
        mi = np.float32(b1) * m + np.float32(1.0 - b1) * g
        vi = np.float32(b2) * v + np.float32(1.0 - b2) * (g * g)
        _tiny0(mi)
        _tiny0(vi)
        m[...] = mi
        v[...] = vi
        np.maximum(vhat, vi, out=vhat)
        param -= (mi / (np.sqrt(vhat) + np.float32(eps))) * np.float32(alpha)
        return param
