"""LossOptMixin: LossOptNumpyOps methods backed by csrc/lossopt (module
_native.lossopt). The C path takes float32 C-contiguous arrays; anything else
(and every bad argument's error message) goes to NumpyOps. Signatures are
NumpyOps' exactly."""
from __future__ import annotations

import numpy as np

from .. import _native
from .._threads import get_num_threads

_L = _native.module("lossopt")
_F32 = np.dtype(np.float32)


def _ok(*arrays):
    return all(type(a) is np.ndarray and a.dtype == _F32 and a.flags.c_contiguous for a in arrays)


def _writable(*arrays):
    return _ok(*arrays) and all(a.flags.writeable for a in arrays)


class LossOptMixin:
    """The losses and optimizer updates of csrc/lossopt on the C path."""

    def _ploss(self, name, pred, target, sample_weight, grad_out, param=0.0):
        if not (_ok(pred, target) and pred.shape == target.shape and pred.size
                and (grad_out is None or (_writable(grad_out) and grad_out.shape == pred.shape))
                and (name != "huber" or param > 0)):
            return super()._ploss(name, pred, target, sample_weight, grad_out, param)
        p2, t2, w, rows, cols, div = self._ploss_layout(name, pred, target, sample_weight)
        if w is not None:
            w = np.ascontiguousarray(w, dtype=_F32)
        g = np.empty(pred.shape, dtype=_F32) if grad_out is None else grad_out
        s = _L.pointwise_loss(name, _L.LOSS_KINDS[name], p2, t2, w, g.reshape(rows, cols), rows, cols,
                              float(param), 1.0 / div, get_num_threads())
        return s / div, g

    def _optx(self, op, kind, param, grad, slots, lr, step, weight_decay, decoupled, **hp):
        _L.optx_update(op, kind, param, grad, slots, lr, int(step), weight_decay, decoupled,
                       get_num_threads(), **hp)
        return param

    def nadam_update(self, param, grad, m, v, *, lr, beta1=0.9, beta2=0.999, eps=1e-7, step,
                     weight_decay=0.0, decoupled=False):
        self._optx_check("nadam_update", param, grad, dict(m=m, v=v), lr, weight_decay, step,
            beta1=beta1, beta2=beta2, eps=eps)
        if step >= 1 and _ok(grad) and _writable(param, m, v):
            return self._optx("nadam_update", "nadam", param, grad, [m, v], lr, step, weight_decay,
                              decoupled, beta1=beta1, beta2=beta2, eps=eps)
        return super().nadam_update(param, grad, m, v, lr=lr, beta1=beta1, beta2=beta2, eps=eps,
                                    step=step, weight_decay=weight_decay, decoupled=decoupled)

    def adamax_update(self, param, grad, m, u, *, lr, beta1=0.9, beta2=0.999, eps=1e-7, step,
                      weight_decay=0.0, decoupled=False):
        self._optx_check("adamax_update", param, grad, dict(m=m, u=u), lr, weight_decay, step,
            beta1=beta1, beta2=beta2, eps=eps)
        if step >= 1 and _ok(grad) and _writable(param, m, u):
            return self._optx("adamax_update", "adamax", param, grad, [m, u], lr, step, weight_decay,
                              decoupled, beta1=beta1, beta2=beta2, eps=eps)
        return super().adamax_update(param, grad, m, u, lr=lr, beta1=beta1, beta2=beta2, eps=eps,
                                     step=step, weight_decay=weight_decay, decoupled=decoupled)

    def adadelta_update(self, param, grad, acc_grad, acc_delta, *, lr, rho=0.95, eps=1e-7,
                        weight_decay=0.0, decoupled=False):
        self._optx_check("adadelta_update", param, grad, dict(acc_grad=acc_grad,
            acc_delta=acc_delta), lr, weight_decay, rho=rho, eps=eps)
        if _ok(grad) and _writable(param, acc_grad, acc_delta):
            return self._optx("adadelta_update", "adadelta", param, grad, [acc_grad, acc_delta], lr, 1,
                              weight_decay, decoupled, rho=rho, eps=eps)
        return super().adadelta_update(param, grad, acc_grad, acc_delta, lr=lr, rho=rho, eps=eps,
                                       weight_decay=weight_decay, decoupled=decoupled)

    def ftrl_update(self, param, grad, accum, linear, *, lr, lr_power=-0.5, l1=0.0, l2=0.0,
                    l2_shrinkage=0.0, beta=0.0, weight_decay=0.0, decoupled=False):
        self._optx_check("ftrl_update", param, grad, dict(accum=accum, linear=linear), lr,
            weight_decay, lr_power=lr_power, l1=l1, l2=l2, l2_shrinkage=l2_shrinkage, beta=beta)
        if (lr > 0 and lr_power <= 0 and min(l1, l2, l2_shrinkage, beta) >= 0 and _ok(grad)
                and _writable(param, accum, linear)):
            return self._optx("ftrl_update", "ftrl", param, grad, [accum, linear], lr, 1, weight_decay,
                              decoupled, lr_power=lr_power, l1=l1, l2=l2, l2_shrinkage=l2_shrinkage,
                              beta=beta)
        return super().ftrl_update(param, grad, accum, linear, lr=lr, lr_power=lr_power, l1=l1, l2=l2,
                                   l2_shrinkage=l2_shrinkage, beta=beta, weight_decay=weight_decay,
                                   decoupled=decoupled)

    def lion_update(self, param, grad, m, *, lr, beta1=0.9, beta2=0.99, weight_decay=0.0,
                    decoupled=False):
        self._optx_check("lion_update", param, grad, dict(m=m), lr, weight_decay, beta1=beta1,
            beta2=beta2)
        if _ok(grad) and _writable(param, m):
            return self._optx("lion_update", "lion", param, grad, [m], lr, 1, weight_decay, decoupled,
                              beta1=beta1, beta2=beta2)
        return super().lion_update(param, grad, m, lr=lr, beta1=beta1, beta2=beta2,
                                   weight_decay=weight_decay, decoupled=decoupled)

    def adam_amsgrad_update(self, param, grad, m, v, vhat, *, lr, beta1=0.9, beta2=0.999, eps=1e-7,
                            step, weight_decay=0.0, decoupled=False):
        self._optx_check("adam_amsgrad_update", param, grad, dict(m=m, v=v, vhat=vhat), lr,
            weight_decay, step, beta1=beta1, beta2=beta2, eps=eps)
        if step >= 1 and _ok(grad) and _writable(param, m, v, vhat):
            return self._optx("adam_amsgrad_update", "adam_amsgrad", param, grad, [m, v, vhat], lr,
                              step, weight_decay, decoupled, beta1=beta1, beta2=beta2, eps=eps)
        return super().adam_amsgrad_update(param, grad, m, v, vhat, lr=lr, beta1=beta1, beta2=beta2,
                                           eps=eps, step=step, weight_decay=weight_decay,
                                           decoupled=decoupled)
