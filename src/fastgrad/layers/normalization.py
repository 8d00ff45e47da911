"""BatchNormalization and LayerNormalization (Keras semantics).

Both reduce to the 2-D kernels of the Ops contract::

    ops.batchnorm_forward / _backward   normalise (rows, C) over axis 0
    ops.layernorm_forward / _backward   normalise (rows, D) over axis 1

BatchNormalization on the last axis reshapes (batch, ..., C) to (rows, C) as a
view; another axis is moved last through a workspace copy. LayerNormalization
normalises over trailing axes: (batch, ..., D1, D2) -> (rows, D1*D2), a view.

BatchNormalization keeps moving_mean / moving_variance as non-trainable state
(model-owned arrays, saved with the weights): in training mode each step
normalises with the batch statistics and updates
``moving = moving * momentum + batch_stat * (1 - momentum)`` (biased variance);
in inference mode (training=False, or the layer frozen with trainable=False, as
in Keras) it applies ``y = x * gamma / sqrt(moving_var + eps) + (beta - moving_mean * that)``.
gamma and beta live in the model's flat trainable buffer; when center/scale is
off the kernels get constant zeros/ones and the gradient lands in scratch.
"""
from __future__ import annotations

from typing import Any

import numbers

import numpy as np

from .. import initializers as _initializers
from .. import regularizers as _regularizers
from .base import Layer, ParamSpec, StateSpec

__all__ = ["BatchNormalization", "LayerNormalization"]


def _check_eps(cls, name, epsilon):
    if isinstance(epsilon, bool) or not isinstance(epsilon, numbers.Real) or not (float(epsilon) > 0.0) \
            or not np.isfinite(float(epsilon)):
        raise ValueError(f"{cls} {name}: epsilon must be a finite number > 0, got {epsilon!r}")
    return float(epsilon)


class BatchNormalization(Layer):
    """Normalize features with batch statistics (training) or moving statistics (inference).

    In training, each feature along ``axis`` is normalized with the batch mean
    and variance, and the moving statistics are updated as
    ``moving = moving * momentum + batch * (1 - momentum)``. In inference the
    moving statistics are used. A learnable scale ``gamma`` and offset ``beta``
    follow.

    Parameters
    ----------
    axis : int, default -1
        The feature (channel) axis of the full input; other axes are reduced.
    momentum : float, default 0.99
        Momentum of the moving statistics, in ``[0, 1]``.
    epsilon : float, default 1e-3
        Added to the variance, a finite number > 0.
    center : bool, default True
        Learn an offset ``beta``.
    scale : bool, default True
        Learn a scale ``gamma``.
    beta_initializer : str, dict or callable, default "zeros"
        Initializer of ``beta``.
    gamma_initializer : str, dict or callable, default "ones"
        Initializer of ``gamma``.
    moving_mean_initializer : str, dict or callable, default "zeros"
        Initializer of the moving mean.
    moving_variance_initializer : str, dict or callable, default "ones"
        Initializer of the moving variance.
    beta_regularizer : str, dict or Regularizer, optional
        Penalty on ``beta``.
    gamma_regularizer : str, dict or Regularizer, optional
        Penalty on ``gamma``.
    name : str, optional
        Layer name.
    **kwargs
        Base layer arguments (``name``, ``input_shape``, ``trainable``, ...;
        see ``Layer``).

    Raises
    ------
    ValueError
        For an invalid axis, momentum, epsilon, initializer or regularizer.
    """

    supports_masking = True

    def __init__(self, axis: Any = -1, momentum: Any = 0.99, epsilon: Any = 1e-3,
                 center: bool = True, scale: bool = True, beta_initializer: Any = "zeros",
                 gamma_initializer: Any = "ones", moving_mean_initializer: Any = "zeros",
                 moving_variance_initializer: Any = "ones", beta_regularizer: Any = None,
                 gamma_regularizer: Any = None, name: str | None = None, **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)
        c = f"BatchNormalization {self.name}"
        if isinstance(axis, bool) or not isinstance(axis, numbers.Integral):
            raise ValueError(f"{c}: axis must be an integer, got {axis!r}")
        if isinstance(momentum, bool) or not isinstance(momentum, numbers.Real) or not 0.0 <= float(momentum) <= 1.0:
            raise ValueError(f"{c}: momentum must be a number in [0, 1], got {momentum!r}")
        self.axis = int(axis)
        self.momentum = float(momentum)
        self.epsilon = _check_eps("BatchNormalization", self.name, epsilon)
        self.center = bool(center)
        self.scale = bool(scale)
        self.beta_initializer = _initializers.get(beta_initializer, f"{c}: beta_initializer")
        self.gamma_initializer = _initializers.get(gamma_initializer, f"{c}: gamma_initializer")
        self.moving_mean_initializer = _initializers.get(moving_mean_initializer,
                                                         f"{c}: moving_mean_initializer")
        self.moving_variance_initializer = _initializers.get(moving_variance_initializer,
                                                             f"{c}: moving_variance_initializer")
        self.beta_regularizer = _regularizers.get(beta_regularizer, f"{c}: beta_regularizer")
        self.gamma_regularizer = _regularizers.get(gamma_regularizer, f"{c}: gamma_regularizer")
        self._ax: Any = None   # axis index in the full (batch, ...) shape
        self._c: Any = None    # number of features

    def compute_output_shape(self, input_shape):
        nd = len(input_shape) + 1
        ax = self.axis + nd if self.axis < 0 else self.axis
        if not 1 <= ax < nd:
            raise ValueError(f"BatchNormalization {self.name}: axis={self.axis} is out of range for input "
                             f"of shape (batch, {', '.join(map(str, input_shape))}) (axis 0 is the batch)")
        self._ax = ax
        self._c = int(input_shape[ax - 1])
        return tuple(input_shape)

    def param_specs(self):
        specs = []
        if self.scale:
            specs.append(ParamSpec("gamma", (self._c,), self.gamma_initializer, self.gamma_regularizer))
        if self.center:
            specs.append(ParamSpec("beta", (self._c,), self.beta_initializer, self.beta_regularizer))
        return specs

    def state_specs(self):
        return [StateSpec("moving_mean", (self._c,), self.moving_mean_initializer),
                StateSpec("moving_variance", (self._c,), self.moving_variance_initializer)]

    def bind(self, params, grads, state):
        super().bind(params, grads, state)
        c = self._c
        self._gamma = params["gamma"] if self.scale else np.ones(c, np.float32)
        self._beta = params["beta"] if self.center else np.zeros(c, np.float32)
        self._dgamma = grads["gamma"] if self.scale else np.empty(c, np.float32)
        self._dbeta = grads["beta"] if self.center else np.empty(c, np.float32)
        self._last = self._ax == len(self.input_shape)

    # ------------------------------------------------------------------ helpers
    def _to_2d(self, a, ws, name):
        """(batch, ...) -> (rows, C): a view when the axis is last, else a workspace copy."""
        if self._last:
            return a.reshape(-1, self._c)
        moved = np.moveaxis(a, self._ax, -1)
        t = ws.buf(name, moved.shape, a.dtype)
        np.copyto(t, moved)
        return t.reshape(-1, self._c)

    def _from_2d(self, a2, ws, name, shape):
        if self._last:
            return a2.reshape(shape)
        out = ws.buf(name, shape, a2.dtype)
        dst = np.moveaxis(out, self._ax, -1)
        np.copyto(dst, a2.reshape(dst.shape))
        return out

    def _bcast(self, v):
        """A (C,) vector shaped to broadcast against (batch, ...) along the feature axis."""
        shape = [1] * (len(self.input_shape) + 1)
        shape[self._ax] = self._c
        return v.reshape(shape)

    # ------------------------------------------------------------------ compute
    def forward(self, x, training, ws):
        ws.x = x
        if training and self.trainable:
            return self._forward_train(x, ws)
        return self._forward_infer(x, ws)

    def _forward_train(self, x, ws):
        c = self._c
        x2 = self._to_2d(x, ws, "xt")
        if self._last:
            y2 = ws.buf("y", x.shape, x.dtype).reshape(-1, c)
        else:
            y2 = ws.buf("y2", x2.shape, x.dtype)
        mean = ws.buf("mean", (c,), x.dtype)
        rstd = ws.buf("rstd", (c,), x.dtype)
        self.ops.batchnorm_forward(x2, self._gamma, self._beta, self.epsilon, y2, mean, rstd)
        # moving statistics; batch variance recovered from rstd = 1/sqrt(var + eps)
        tmp = ws.buf("tmp", (c,))
        mm, mv = self.state["moving_mean"], self.state["moving_variance"]
        mom, rest = np.float32(self.momentum), np.float32(1.0 - self.momentum)
        np.multiply(mean, rest, out=tmp)
        mm *= mom
        mm += tmp
        np.multiply(rstd, rstd, out=tmp)
        np.reciprocal(tmp, out=tmp)
        tmp -= np.float32(self.epsilon)
        np.maximum(tmp, 0.0, out=tmp)
        tmp *= rest
        mv *= mom
        mv += tmp
        ws.mode = "train"
        ws.x2, ws.mean, ws.rstd = x2, mean, rstd
        return self._from_2d(y2, ws, "y", x.shape)

    def _forward_infer(self, x, ws):
        c = self._c
        scale = ws.buf("scale", (c,), x.dtype)
        shift = ws.buf("shift", (c,), x.dtype)
        mm, mv = self.state["moving_mean"], self.state["moving_variance"]
        np.add(mv, np.float32(self.epsilon), out=scale)
        np.sqrt(scale, out=scale)
        np.divide(self._gamma, scale, out=scale)
        np.multiply(mm, scale, out=shift)
        np.subtract(self._beta, shift, out=shift)
        y = ws.buf("y", x.shape, x.dtype)
        np.multiply(x, self._bcast(scale), out=y)
        y += self._bcast(shift)
        ws.mode = "infer"
        ws.scale = scale
        return y

    def backward(self, dy, ws, need_dx=True):
        if ws.mode == "infer":
            return self._backward_infer(dy, ws, need_dx)
        dy2 = self._to_2d(dy, ws, "dyt")
        if self._last:
            dx2 = ws.buf("dx", dy.shape, dy.dtype).reshape(-1, self._c)
        else:
            dx2 = ws.buf("dx2", dy2.shape, dy.dtype)
        self.ops.batchnorm_backward(dy2, ws.x2, self._gamma, ws.mean, ws.rstd, dx2, self._dgamma, self._dbeta)
        if not need_dx:
            return None
        return self._from_2d(dx2, ws, "dx", dy.shape)

    def _backward_infer(self, dy, ws, need_dx):
        # frozen / inference-mode backward: y = x * scale + shift with constant statistics
        red = tuple(i for i in range(dy.ndim) if i != self._ax)
        mm, mv = self.state["moving_mean"], self.state["moving_variance"]
        inv = 1.0 / np.sqrt(mv + np.float32(self.epsilon))
        xhat = (ws.x - self._bcast(mm)) * self._bcast(inv)
        self._dgamma[...] = np.sum(dy * xhat, axis=red)
        self._dbeta[...] = np.sum(dy, axis=red)
        if not need_dx:
            return None
        dx = ws.buf("dx", dy.shape, dy.dtype)
        np.multiply(dy, self._bcast(ws.scale), out=dx)
        return dx

    # ------------------------------------------------------------------ config
    def get_config(self):
        cfg = super().get_config()
        cfg.update(axis=self.axis, momentum=self.momentum, epsilon=self.epsilon, center=self.center,
                   scale=self.scale,
                   beta_initializer=_initializers.serialize(self.beta_initializer),
                   gamma_initializer=_initializers.serialize(self.gamma_initializer),
                   moving_mean_initializer=_initializers.serialize(self.moving_mean_initializer),
                   moving_variance_initializer=_initializers.serialize(self.moving_variance_initializer),
                   beta_regularizer=_regularizers.serialize(self.beta_regularizer),
                   gamma_regularizer=_regularizers.serialize(self.gamma_regularizer))
        return cfg

    def describe(self):
        d = super().describe()
        d.update(axis=self._ax, features=self._c, momentum=self.momentum, epsilon=self.epsilon,
                 center=self.center, scale=self.scale)
        return d

    def lower(self, ctx):
        """Describe this layer as a node of the compiled C plan.

        Parameters
        ----------
        ctx : LowerContext
            Codes from the C headers, regularizer coefficients and trainability
            (``engine.compiled.LowerContext``).

        Returns
        -------
        dict
            The plan node: kind name, activation codes, parameter offsets in the
            flat buffer and hyper-parameters.
        """
        if not self._last:
            raise ctx.unsupported(f"layer {self.name}: BatchNormalization of a feature axis of "
                                  f"{self.input_shape} has no C path (only the last axis)")
        return dict(_lower_norm(self, ctx), kind="batchnorm",
                    bn_momentum=float(np.float32(self.momentum)),
                    bn_rest=float(np.float32(1.0 - self.momentum)),
                    moving_mean=self.state["moving_mean"], moving_var=self.state["moving_variance"])


class LayerNormalization(Layer):
    """Normalize each sample over its trailing axes.

    ``y = (x - mean) / sqrt(var + epsilon) * gamma + beta``, with the statistics
    of each sample; the same in training and inference.

    Parameters
    ----------
    axis : int or list of int, default -1
        Axes to normalize over (axes of the full input).
    epsilon : float, default 1e-3
        Added to the variance, a finite number > 0.
    center : bool, default True
        Learn an offset ``beta``.
    scale : bool, default True
        Learn a scale ``gamma``.
    rms_scaling : bool, default False
        Not supported; must be False.
    beta_initializer : str, dict or callable, default "zeros"
        Initializer of ``beta``.
    gamma_initializer : str, dict or callable, default "ones"
        Initializer of ``gamma``.
    beta_regularizer : str, dict or Regularizer, optional
        Penalty on ``beta``.
    gamma_regularizer : str, dict or Regularizer, optional
        Penalty on ``gamma``.
    name : str, optional
        Layer name.
    **kwargs
        Base layer arguments (``name``, ``input_shape``, ``trainable``, ...;
        see ``Layer``).

    Raises
    ------
    ValueError
        For an invalid axis or epsilon, or ``rms_scaling=True``.
    """

    supports_masking = True

    def __init__(self, axis: Any = -1, epsilon: Any = 1e-3, center: bool = True,
                 scale: bool = True, rms_scaling: bool = False, beta_initializer: Any = "zeros",
                 gamma_initializer: Any = "ones", beta_regularizer: Any = None,
                 gamma_regularizer: Any = None, name: str | None = None, **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)
        c = f"LayerNormalization {self.name}"
        if isinstance(axis, numbers.Integral) and not isinstance(axis, bool):
            axes = [int(axis)]
        elif isinstance(axis, (list, tuple)) and axis and all(
                isinstance(a, numbers.Integral) and not isinstance(a, bool) for a in axis):
            axes = [int(a) for a in axis]
        else:
            raise ValueError(f"{c}: axis must be an integer or a non-empty list of integers, got {axis!r}")
        if rms_scaling:
            raise ValueError(f"{c}: rms_scaling=True is not supported")
        self.axis = axes[0] if isinstance(axis, numbers.Integral) else list(axes)
        self._axes = axes
        self.epsilon = _check_eps("LayerNormalization", self.name, epsilon)
        self.center = bool(center)
        self.scale = bool(scale)
        self.beta_initializer = _initializers.get(beta_initializer, f"{c}: beta_initializer")
        self.gamma_initializer = _initializers.get(gamma_initializer, f"{c}: gamma_initializer")
        self.beta_regularizer = _regularizers.get(beta_regularizer, f"{c}: beta_regularizer")
        self.gamma_regularizer = _regularizers.get(gamma_regularizer, f"{c}: gamma_regularizer")
        self._norm_shape: Any = None

    def compute_output_shape(self, input_shape):
        nd = len(input_shape) + 1
        axes = sorted({a + nd if a < 0 else a for a in self._axes})
        if axes[0] < 1 or axes[-1] >= nd:
            raise ValueError(f"LayerNormalization {self.name}: axis={self.axis} is out of range for input "
                             f"of shape (batch, {', '.join(map(str, input_shape))}) (axis 0 is the batch)")
        if axes != list(range(axes[0], nd)):
            raise ValueError(f"LayerNormalization {self.name}: axis={self.axis} must be the trailing axes of "
                             f"the input (batch, {', '.join(map(str, input_shape))}); other layouts are not "
                             "supported")
        self._norm_shape = tuple(int(s) for s in input_shape[axes[0] - 1:])
        self._d = int(np.prod(self._norm_shape))
        return tuple(input_shape)

    def param_specs(self):
        specs = []
        if self.scale:
            specs.append(ParamSpec("gamma", self._norm_shape, self.gamma_initializer, self.gamma_regularizer))
        if self.center:
            specs.append(ParamSpec("beta", self._norm_shape, self.beta_initializer, self.beta_regularizer))
        return specs

    def bind(self, params, grads, state):
        super().bind(params, grads, state)
        d = self._d
        self._gamma = params["gamma"].reshape(d) if self.scale else np.ones(d, np.float32)
        self._beta = params["beta"].reshape(d) if self.center else np.zeros(d, np.float32)
        self._dgamma = grads["gamma"].reshape(d) if self.scale else np.empty(d, np.float32)
        self._dbeta = grads["beta"].reshape(d) if self.center else np.empty(d, np.float32)

    def forward(self, x, training, ws):
        x2 = x.reshape(-1, self._d)
        y = ws.buf("y", x.shape, x.dtype)
        mean = ws.buf("mean", (x2.shape[0],), x.dtype)
        rstd = ws.buf("rstd", (x2.shape[0],), x.dtype)
        self.ops.layernorm_forward(x2, self._gamma, self._beta, self.epsilon, y.reshape(x2.shape), mean, rstd)
        ws.x2, ws.mean, ws.rstd = x2, mean, rstd
        return y

    def backward(self, dy, ws, need_dx=True):
        dy2 = dy.reshape(-1, self._d)
        dx = ws.buf("dx", dy.shape, dy.dtype)
        self.ops.layernorm_backward(dy2, ws.x2, self._gamma, ws.mean, ws.rstd, dx.reshape(dy2.shape),
                                    self._dgamma, self._dbeta)
        return dx if need_dx else None

    def get_config(self):
        cfg = super().get_config()
        cfg.update(axis=self.axis, epsilon=self.epsilon, center=self.center, scale=self.scale,
                   beta_initializer=_initializers.serialize(self.beta_initializer),
                   gamma_initializer=_initializers.serialize(self.gamma_initializer),
                   beta_regularizer=_regularizers.serialize(self.beta_regularizer),
                   gamma_regularizer=_regularizers.serialize(self.gamma_regularizer))
        return cfg

    def describe(self):
        d = super().describe()
        d.update(axis=self.axis, normalized_shape=self._norm_shape, epsilon=self.epsilon,
                 center=self.center, scale=self.scale)
        return d

    def lower(self, ctx):
        """Describe this layer as a node of the compiled C plan.

        Parameters
        ----------
        ctx : LowerContext
            Codes from the C headers, regularizer coefficients and trainability
            (``engine.compiled.LowerContext``).

        Returns
        -------
        dict
            The plan node: kind name, activation codes, parameter offsets in the
            flat buffer and hyper-parameters.
        """
        if self._d != int(np.prod(self.input_shape)):
            raise ctx.unsupported(f"layer {self.name}: LayerNormalization over part of each sample "
                                  f"({self._norm_shape}) has no C path")
        return dict(_lower_norm(self, ctx), kind="layernorm")


def _lower_norm(layer, ctx):
    """What both normalisations hand the compiled plan: gamma / beta offsets (-1 when
    scale / center is off), their regularizers (none when frozen), epsilon."""
    trainable = ctx.trainable(layer)
    l1w, l2w = ctx.regularizer(layer.gamma_regularizer if layer.scale and trainable else None)
    l1b, l2b = ctx.regularizer(layer.beta_regularizer if layer.center and trainable else None)
    return dict(act=ctx.act("linear"), trainable=trainable,
                w_off=int(layer.offsets["gamma"]) if layer.scale else -1,
                b_off=int(layer.offsets["beta"]) if layer.center else -1,
                l1_w=l1w, l2_w=l2w, l1_b=l1b, l2_b=l2b, eps=float(np.float32(layer.epsilon)))
