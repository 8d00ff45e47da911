"""Activation layers (Keras 3): ReLU, LeakyReLU, ELU, PReLU, Softmax.

Each acts element-wise on inputs of any rank (Softmax along its axis) and
computes only through ``self.ops`` (the Layer protocol of layers/base.py)::

    ReLU       ops.activation("relu" | "relu6" | "leaky_relu" | "relu_general")
               — Keras's relu(x, negative_slope, max_value, threshold); the
               plain cases run the plain kernels, the rest the general one
    LeakyReLU  ops.activation("leaky_relu", negative_slope=...)
    ELU        ops.activation("elu", alpha=...)
    PReLU      ops.prelu / ops.backprop_prelu with a trainable alpha of shape
               input_shape with the shared axes set to 1 (Keras layout); its
               gradient is summed over the batch and the shared axes
    Softmax    ops.softmax_along / ops.backprop_softmax_along (any axis or
               tuple of axes; the last axis runs the row softmax kernel)

Forward keeps what its backward reads (fastgrad.activations.backward_needs_input:
the input x or the output y) in the workspace; results live in workspace
buffers, so a steady-state step allocates nothing.
"""
from __future__ import annotations

from typing import Any

import numbers
import warnings

import numpy as np

from .. import activations as _activations
from .. import initializers as _initializers
from .. import regularizers as _regularizers
from .base import Layer, ParamSpec

__all__ = ["ReLU", "LeakyReLU", "ELU", "PReLU", "Softmax"]


def _number(cls, name, what, value, *, allow_none=False, minimum=None):
    """A finite real number (or None when allowed); ValueError naming the layer."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(float(value)):
        raise ValueError(f"{cls} {name}: {what} must be a finite number"
                         f"{' or None' if allow_none else ''}, got {value!r}")
    value = float(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{cls} {name}: {what} cannot be negative, got {value!r}")
    return value


class _ElementwiseActivation(Layer):
    """A layer applying one ops activation (`self._op`: canonical name and
    its parameters) element-wise."""

    _op: tuple = ("linear", {})

    def forward(self, x, training, ws):
        name, params = self._op
        y = ws.buf("y", x.shape, x.dtype)
        self.ops.activation(name, x, y, **params)
        ws.x = x
        ws.y = y
        return y

    def backward(self, dy, ws, need_dx=True):
        if not need_dx:
            return None
        name, params = self._op
        dx = ws.buf("dx", dy.shape, dy.dtype)
        self.ops.backprop_activation(name, dy, ws.y, ws.x, dx, **params)
        return dx

    def describe(self):
        d = super().describe()
        name, params = self._op
        d.update(activation=name, activation_params=dict(params))
        return d

    def lower(self, ctx):
        """This layer as a node of the compiled plan (engine/compiled.py LowerContext):
        the activation's code and, when it has any, its parameters as the kernels take
        them (slope or alpha, max_value (inf: none), threshold)."""
        name, params = self._op
        d = dict(kind="activation", act=ctx.act(name))
        if params:
            slope = params.get("negative_slope", params.get("alpha", 0.0))
            top = params.get("max_value")
            d.update(act_has_param=1, act_alpha=float(slope),
                     act_max_value=float("inf") if top is None else float(top),
                     act_threshold=float(params.get("threshold", 0.0)))
        return d


class ReLU(_ElementwiseActivation):
    """Rectified linear unit with Keras's options.

    ``f(x) = max_value`` for ``x >= max_value``, ``f(x) = x`` for
    ``threshold <= x < max_value`` and ``f(x) = negative_slope * (x - threshold)``
    otherwise, exactly Keras 3's ``relu(x, negative_slope, max_value, threshold)``.

    Parameters
    ----------
    max_value : float, optional
        Upper saturation value, >= 0 (None: no limit).
    negative_slope : float, default 0.0
        Slope below the threshold, >= 0.
    threshold : float, default 0.0
        Threshold of the activation.
    name : str, optional
        Layer name.
    **kwargs
        Base layer arguments (``name``, ``input_shape``, ``trainable``, ...;
        see ``Layer``).

    Raises
    ------
    ValueError
        For a negative or non-finite argument.
    """

    def __init__(self, max_value: Any = None, negative_slope: Any = 0.0, threshold: Any = 0.0,
                 name: str | None = None, **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)
        self.max_value = _number("ReLU", self.name, "max_value", max_value, allow_none=True, minimum=0.0)
        if negative_slope is None:
            raise ValueError(f"ReLU {self.name}: negative_slope cannot be None")
        self.negative_slope = _number("ReLU", self.name, "negative_slope", negative_slope, minimum=0.0)
        if threshold is None:
            raise ValueError(f"ReLU {self.name}: threshold cannot be None")
        self.threshold = _number("ReLU", self.name, "threshold", threshold)
        self._op = _activations.relu_variant(self.negative_slope, self.max_value, self.threshold)

    def get_config(self):
        cfg = super().get_config()
        cfg.update(max_value=self.max_value, negative_slope=self.negative_slope, threshold=self.threshold)
        return cfg


class LeakyReLU(_ElementwiseActivation):
    """Leaky rectified linear unit: ``x`` for ``x >= 0``, else ``negative_slope * x``.

    Parameters
    ----------
    negative_slope : float, default 0.3
        Slope for negative inputs (Keras 2's ``alpha`` is accepted, with a
        DeprecationWarning).
    name : str, optional
        Layer name.
    **kwargs
        Base layer arguments (``name``, ``input_shape``, ``trainable``, ...;
        see ``Layer``).

    Raises
    ------
    ValueError
        For a negative or non-finite slope.
    """

    def __init__(self, negative_slope: Any = 0.3, name: str | None = None, **kwargs: Any) -> None:
        if "alpha" in kwargs:  # Keras 3 accepts the Keras 2 name, with a warning
            negative_slope = kwargs.pop("alpha")
            warnings.warn("LeakyReLU: argument `alpha` is deprecated; use `negative_slope`",
                          DeprecationWarning, stacklevel=2)
        super().__init__(name=name, **kwargs)
        if negative_slope is None:
            raise ValueError(f"LeakyReLU {self.name}: negative_slope cannot be None")
        self.negative_slope = _number("LeakyReLU", self.name, "negative_slope", negative_slope, minimum=0.0)
        self._op = ("leaky_relu", {"negative_slope": self.negative_slope})

    def get_config(self):
        cfg = super().get_config()
        cfg["negative_slope"] = self.negative_slope
        return cfg


class ELU(_ElementwiseActivation):
    """Exponential linear unit: ``x`` for ``x > 0``, else ``alpha * (exp(x) - 1)``.

    Parameters
    ----------
    alpha : float, default 1.0
        Scale of the negative part.
    name : str, optional
        Layer name.
    **kwargs
        Base layer arguments (``name``, ``input_shape``, ``trainable``, ...;
        see ``Layer``).

    Raises
    ------
    ValueError
        For a non-finite alpha.
    """

    def __init__(self, alpha: Any = 1.0, name: str | None = None, **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)
        self.alpha = _number("ELU", self.name, "alpha", alpha)
        self._op = ("elu", {"alpha": self.alpha})

    def get_config(self):
        cfg = super().get_config()
        cfg["alpha"] = self.alpha
        return cfg


class PReLU(Layer):
    """Parametric ReLU: ``x`` for ``x > 0``, else ``alpha * x`` with a trainable ``alpha``.

    ``alpha`` has the per-sample input shape, with size 1 along
    ``shared_axes``.

    Parameters
    ----------
    alpha_initializer : str, dict or callable, default "Zeros"
        Initializer of ``alpha``.
    alpha_regularizer : str, dict or Regularizer, optional
        Penalty on ``alpha``.
    alpha_constraint : None
        Not supported; must be None.
    shared_axes : int or list of int, optional
        Axes of the full input (batch = 0) along which ``alpha`` is shared, as
        in Keras: ``shared_axes=[1, 2]`` shares it across height and width of a
        ``(batch, h, w, c)`` input.
    name : str, optional
        Layer name.
    **kwargs
        Base layer arguments (``name``, ``input_shape``, ``trainable``, ...;
        see ``Layer``).

    Raises
    ------
    ValueError
        For a constraint, invalid shared axes, initializer or regularizer.
    """

    def __init__(self, alpha_initializer: Any = "Zeros", alpha_regularizer: Any = None,
                 alpha_constraint: Any = None, shared_axes: Any = None, name: str | None = None,
                 **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)
        c = f"PReLU {self.name}"
        self.alpha_initializer = _initializers.get(alpha_initializer, f"{c}: alpha_initializer")
        self.alpha_regularizer = _regularizers.get(alpha_regularizer, f"{c}: alpha_regularizer")
        if alpha_constraint is not None:
            raise ValueError(f"{c}: alpha_constraint is not supported (fastgrad has no weight constraints); "
                             f"got {alpha_constraint!r}")
        self.alpha_constraint = None
        if shared_axes is None:
            self.shared_axes = None
        else:
            axes = list(shared_axes) if isinstance(shared_axes, (list, tuple)) else [shared_axes]
            for a in axes:
                if isinstance(a, bool) or not isinstance(a, numbers.Integral):
                    raise ValueError(f"{c}: shared_axes must be integers (axes of the input, batch = 0), "
                                     f"got {shared_axes!r}")
            self.shared_axes = [int(a) for a in axes]
        self._param_shape: Any = None

    def compute_output_shape(self, input_shape):
        nd = len(input_shape) + 1
        shape = list(input_shape)
        for a in self.shared_axes or ():
            ax = a + nd if a < 0 else a
            if not 1 <= ax < nd:
                raise ValueError(f"PReLU {self.name}: shared axis {a} is out of range for input of shape "
                                 f"(batch, {', '.join(map(str, input_shape))}) (axis 0 is the batch)")
            shape[ax - 1] = 1
        self._param_shape = tuple(shape)
        return tuple(input_shape)

    def param_specs(self):
        return [ParamSpec("alpha", self._param_shape, self.alpha_initializer, self.alpha_regularizer)]

    def bind(self, params, grads, state):
        super().bind(params, grads, state)
        self._alpha = params["alpha"]
        self._dalpha = grads["alpha"]

    @property
    def alpha(self):
        """The trainable slope array (a view into the model's buffer)."""
        return self.params["alpha"]

    def forward(self, x, training, ws):
        y = ws.buf("y", x.shape, x.dtype)
        self.ops.prelu(x, self._alpha, out=y)
        ws.x = x
        return y

    def backward(self, dy, ws, need_dx=True):
        dx = ws.buf("dx", dy.shape, dy.dtype) if need_dx else None
        dx, _ = self.ops.backprop_prelu(dy, ws.x, self._alpha, dx=dx, dalpha=self._dalpha, need_dx=need_dx)
        return dx

    def get_config(self):
        cfg = super().get_config()
        cfg.update(alpha_initializer=_initializers.serialize(self.alpha_initializer),
                   alpha_regularizer=_regularizers.serialize(self.alpha_regularizer),
                   alpha_constraint=None,
                   shared_axes=None if self.shared_axes is None else list(self.shared_axes))
        return cfg

    def describe(self):
        d = super().describe()
        d.update(shared_axes=self.shared_axes,
                 regularizers={"alpha": _regularizers.serialize(self.alpha_regularizer)})
        return d


class Softmax(Layer):
    """Softmax along one or more axes.

    As the last layer of a model whose loss is a cross-entropy on
    probabilities, a Softmax over the features of a 2-D output hands its
    activation to the fused, stable loss (like
    ``Dense(..., activation="softmax")``).

    Parameters
    ----------
    axis : int or list of int, default -1
        Axes of the full input (batch = 0; negative counts from the end).
    name : str, optional
        Layer name.
    **kwargs
        Base layer arguments (``name``, ``input_shape``, ``trainable``, ...;
        see ``Layer``).

    Raises
    ------
    ValueError
        When ``axis`` is not an integer or a list of integers.
    """

    def __init__(self, axis: Any = -1, name: str | None = None, **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)
        axes = list(axis) if isinstance(axis, (list, tuple)) else [axis]
        if not axes or any(isinstance(a, bool) or not isinstance(a, numbers.Integral) for a in axes):
            raise ValueError(f"Softmax {self.name}: axis must be an integer or a list of integers, got {axis!r}")
        self.axis = [int(a) for a in axis] if isinstance(axis, (list, tuple)) else int(axis)
        self._axes: Any = None  # resolved axes of the full (batch, ...) input
        self._fused = False

    def compute_output_shape(self, input_shape):
        nd = len(input_shape) + 1
        axes = self.axis if isinstance(self.axis, list) else [self.axis]
        resolved = []
        for a in axes:
            ax = a + nd if a < 0 else a
            if not 1 <= ax < nd:
                raise ValueError(f"Softmax {self.name}: axis {a} is out of range for input of shape "
                                 f"(batch, {', '.join(map(str, input_shape))}) (axis 0 is the batch)")
            resolved.append(ax)
        self._axes = tuple(sorted(set(resolved)))
        return tuple(input_shape)

    # ------------------------------------------------------------------ fusion
    @property
    def _run_act(self):
        """"softmax" while this layer is a row softmax a loss may absorb (2-D
        input, feature axis), else a name no loss fuses."""
        if self._fused:
            return "linear"
        if self.built and len(self.input_shape) == 1 and self._axes == (1,):
            return "softmax"
        return "softmax_along"

    def split_output_activation(self):
        if self._run_act == "softmax":
            self._fused = True
            self._fused_activation = "softmax"
            return "softmax"
        return None

    def merge_output_activation(self):
        self._fused = False
        self._fused_activation = None

    # ------------------------------------------------------------------ compute
    def forward(self, x, training, ws):
        if self._fused:  # the loss applies the softmax to these logits
            ws.y = None
            return x
        y = ws.buf("y", x.shape, x.dtype)
        self.ops.softmax_along(x, self._axes, out=y)
        ws.y = y
        return y

    def backward(self, dy, ws, need_dx=True):
        if not need_dx:
            return None
        if self._fused:
            return dy
        dx = ws.buf("dx", dy.shape, dy.dtype)
        self.ops.backprop_softmax_along(dy, ws.y, self._axes, out=dx)
        return dx

    def get_config(self):
        cfg = super().get_config()
        cfg["axis"] = list(self.axis) if isinstance(self.axis, list) else self.axis
        return cfg

    def describe(self):
        d = super().describe()
        d.update(axis=self.axis, run_activation=self._run_act, fused_activation=self._fused_activation)
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
        if self._fused:
            return dict(kind="activation", act=ctx.act("linear"), out_act=ctx.out_act(self._fused_activation))
        if self._axes != (len(self.input_shape),):
            raise ctx.unsupported(f"layer {self.name}: Softmax over axes {self._axes} of input "
                                  f"(batch, {', '.join(map(str, self.input_shape))}) has no C path "
                                  "(the last axis only)")
        return dict(kind="activation", act=ctx.act("softmax"))
