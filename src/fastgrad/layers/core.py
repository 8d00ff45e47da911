"""Core layers: Dense, Activation, Flatten, InputLayer.

All compute goes through ``self.ops``; arrays come from the per-batch-size
workspace (see layers/base.py for the protocol).  Dense runs the fused
``ops.dense_forward`` (GEMM + bias + activation in one call) and
``ops.dense_backward`` (activation backward, dW, db, dX).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .. import activations as _activations
from .. import initializers as _initializers
from .. import regularizers as _regularizers
from .base import Layer, ParamSpec, _as_shape

__all__ = ["Dense", "Activation", "Flatten", "InputLayer", "Input"]

#: output activations a cross-entropy loss can absorb (fused, stable kernels)
_FUSABLE = ("softmax", "sigmoid")
#: activations whose backward needs the pre-activation (forward input): the
#: rule of fg_act_backward_needs_input() in csrc/fg_common.h, one source
_NEEDS_PREACT = frozenset(n for n in _activations.ACTIVATION_NAMES if _activations.backward_needs_input(n))


class _FusableOutput:
    """Output-activation fusion (Layer protocol) for layers that end in an
    activation held in `self._run_act`: hand a softmax/sigmoid to the fused
    loss kernel and run linear, or take it back."""

    _run_act: str
    _fused_activation: Any

    def split_output_activation(self):
        if self._run_act in _FUSABLE:
            self._fused_activation = self._run_act
            self._run_act = "linear"
            return self._fused_activation
        return None

    def merge_output_activation(self):
        if self._fused_activation is not None:
            self._run_act = self._fused_activation
        self._fused_activation = None


class Dense(_FusableOutput, Layer):
    """Densely connected layer: ``activation(inputs @ kernel + bias)``.

    The kernel has shape ``(input_features, units)`` as in Keras. Inputs of
    rank above two act on the last axis: ``(..., features)`` becomes
    ``(..., units)``. The matrix product, bias and activation run as one fused
    backend kernel.

    Parameters
    ----------
    units : int
        Dimensionality of the output space (positive).
    activation : str or None, default None
        Activation name (``fastgrad.activations``); None means linear.
    use_bias : bool, default True
        Whether to add a bias vector.
    kernel_initializer : str, dict or callable, default "glorot_uniform"
        Initializer of the kernel.
    bias_initializer : str, dict or callable, default "zeros"
        Initializer of the bias.
    kernel_regularizer : str, dict or Regularizer, optional
        Penalty on the kernel, added to the loss.
    bias_regularizer : str, dict or Regularizer, optional
        Penalty on the bias.
    input_dim : int, optional
        Shorthand for ``input_shape=(input_dim,)``.
    input_shape : tuple of int, optional
        Per-sample input shape, for the first layer of a ``Sequential``.
    name : str, optional
        Layer name.
    **kwargs
        Base layer arguments (``name``, ``input_shape``, ``trainable``, ...;
        see ``Layer``).

    Raises
    ------
    ValueError
        When ``units`` is not a positive integer, or the activation,
        initializers or regularizers are unknown.

    Examples
    --------
    >>> import numpy as np
    >>> import fastgrad as fg
    >>> layer = fg.layers.Dense(3, activation="relu")
    >>> y = layer(np.ones((2, 4), dtype=np.float32))
    >>> y.shape
    (2, 3)
    >>> [w.shape for w in layer.get_weights()]
    [(4, 3), (3,)]
    """

    def __init__(self, units: int, activation: str | None = None, use_bias: bool = True,
                 kernel_initializer: Any = "glorot_uniform", bias_initializer: Any = "zeros",
                 kernel_regularizer: Any = None, bias_regularizer: Any = None,
                 input_dim: int | None = None, input_shape: Any = None, name: str | None = None,
                 **kwargs: Any) -> None:
        super().__init__(name=name, input_shape=input_shape, input_dim=input_dim, **kwargs)
        if isinstance(units, bool) or not isinstance(units, (int, np.integer)) or units <= 0:
            raise ValueError(f"Dense {self.name}: units must be a positive integer, got {units!r}")
        self.units = int(units)
        self.activation = _activations.get(activation, f"Dense {self.name}: activation")
        self.use_bias = bool(use_bias)
        self.kernel_initializer = _initializers.get(kernel_initializer,
                                                    f"Dense {self.name}: kernel_initializer")
        self.bias_initializer = _initializers.get(bias_initializer,
                                                  f"Dense {self.name}: bias_initializer")
        self.kernel_regularizer = _regularizers.get(kernel_regularizer,
                                                    f"Dense {self.name}: kernel_regularizer")
        self.bias_regularizer = _regularizers.get(bias_regularizer,
                                                  f"Dense {self.name}: bias_regularizer")
        self._run_act = self.activation     # what forward applies (linear when fused)

    supports_masking = True

    def compute_output_shape(self, input_shape):
        # any rank, acting on the last axis (Keras): (..., features) -> (..., units)
        if len(input_shape) < 1:
            raise ValueError(f"Dense {self.name}: expects per-sample input of shape (..., features), "
                             f"got {tuple(input_shape)}")
        return tuple(input_shape[:-1]) + (self.units,)

    def param_specs(self):
        specs = [ParamSpec("kernel", (self.input_shape[-1], self.units), self.kernel_initializer,
                           self.kernel_regularizer)]
        if self.use_bias:
            specs.append(ParamSpec("bias", (self.units,), self.bias_initializer,
                                   self.bias_regularizer))
        return specs

    def bind(self, params, grads, state):
        super().bind(params, grads, state)
        self._w = params["kernel"]
        self._b = params.get("bias")
        self._gw = grads["kernel"]
        self._gb = grads["bias"] if self.use_bias else False

    @property
    def kernel(self) -> Any:
        """The kernel array, shape ``(input_features, units)`` (a view into the model's buffer)."""
        return self.params["kernel"]

    @property
    def bias(self) -> Any:
        """The bias array of shape ``(units,)``, or None without bias."""
        return self.params.get("bias")

    def forward(self, x, training, ws):
        # rank > 2: the leading axes are rows of one 2-D product (views, no copy)
        shape = x.shape[:-1] + (self.units,)
        if x.ndim != 2:
            x = x.reshape(-1, x.shape[-1])
        n = x.shape[0]
        act = self._run_act
        dt = x.dtype        # float32 in models; float64 for gradient checks
        y = ws.buf("y", (n, self.units), dt)
        z = ws.buf("z", (n, self.units), dt) if (training and act in _NEEDS_PREACT) else None
        self.ops.dense_forward(x, self._w, self._b, act, y, z)
        ws.x = x
        ws.y = y
        ws.z = z
        return y if len(shape) == 2 else y.reshape(shape)

    def backward(self, dy, ws, need_dx=True):
        x = ws.x
        shape = dy.shape[:-1] + (x.shape[-1],)
        if dy.ndim != 2:
            dy = dy.reshape(-1, self.units)
        dx = ws.buf("dx", x.shape, x.dtype) if need_dx else None
        self.ops.dense_backward(dy, x, self._w, ws.y, self._run_act, ws.z, dx, self._gw, self._gb,
                                need_dx)
        if dx is not None and len(shape) != 2:
            dx = dx.reshape(shape)
        return dx

    def get_config(self):
        cfg = super().get_config()
        cfg.update(units=self.units, activation=self.activation, use_bias=self.use_bias,
                   kernel_initializer=_initializers.serialize(self.kernel_initializer),
                   bias_initializer=_initializers.serialize(self.bias_initializer),
                   kernel_regularizer=_regularizers.serialize(self.kernel_regularizer),
                   bias_regularizer=_regularizers.serialize(self.bias_regularizer))
        return cfg

    def describe(self):
        d = super().describe()
        d.update(units=self.units, activation=self.activation, use_bias=self.use_bias,
                 run_activation=self._run_act, fused_activation=self._fused_activation,
                 regularizers={"kernel": _regularizers.serialize(self.kernel_regularizer),
                               "bias": _regularizers.serialize(self.bias_regularizer)})
        return d

    def lower(self, ctx: Any) -> dict:
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
        trainable = ctx.trainable(self)
        l1w, l2w = ctx.regularizer(self.kernel_regularizer)
        l1b, l2b = ctx.regularizer(self.bias_regularizer if self.use_bias else None)
        if not trainable:
            l1w = l2w = l1b = l2b = 0.0
        return dict(kind="dense", act=ctx.act(self._run_act), out_act=ctx.out_act(self._fused_activation),
                    trainable=trainable, w_off=int(self.offsets["kernel"]),
                    b_off=int(self.offsets["bias"]) if self.use_bias else -1,
                    l1_w=l1w, l2_w=l2w, l1_b=l1b, l2_b=l2b)


class Activation(_FusableOutput, Layer):
    """Apply an activation function to the input.

    Parameters
    ----------
    activation : str
        Activation name (``fastgrad.activations``), e.g. ``"relu"``.
    name : str, optional
        Layer name.
    **kwargs
        Base layer arguments (``name``, ``input_shape``, ``trainable``, ...;
        see ``Layer``).

    Raises
    ------
    ValueError
        For an unknown activation.
    """

    supports_masking = True

    def __init__(self, activation: str, name: str | None = None, **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)
        self.activation = _activations.get(activation, f"Activation {self.name}")
        self._run_act = self.activation

    def forward(self, x, training, ws):
        act = self._run_act
        ws.x = x
        if act == "linear":
            ws.y = x
            return x
        y = ws.buf("y", x.shape, x.dtype)
        self.ops.activation(act, x, y)
        ws.y = y
        return y

    def backward(self, dy, ws, need_dx=True):
        if not need_dx:
            return None
        act = self._run_act
        if act == "linear":
            return dy
        dx = ws.buf("dx", dy.shape, dy.dtype)
        self.ops.backprop_activation(act, dy, ws.y, ws.x, dx)
        return dx

    def get_config(self):
        cfg = super().get_config()
        cfg["activation"] = self.activation
        return cfg

    def describe(self):
        d = super().describe()
        d.update(activation=self.activation, run_activation=self._run_act,
                 fused_activation=self._fused_activation)
        return d

    def lower(self, ctx: Any) -> dict:
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
        return dict(kind="activation", act=ctx.act(self._run_act),
                    out_act=ctx.out_act(self._fused_activation))


class SameDataLayer(Layer):
    """Base class of the layers that give the same data another per-sample shape.

    Flatten and Reshape: a view both ways, and the compiled plan's "reshape"
    kind.

    Parameters
    ----------
    name, input_shape, input_dim, trainable, dtype, batch_input_shape, activity_regularizer : optional
        Base layer arguments (see ``Layer``).
    **kwargs
        Any other keyword argument is an error.
    """

    def forward(self, x, training, ws):
        return x.reshape((x.shape[0],) + self.output_shape)

    def backward(self, dy, ws, need_dx=True):
        if not need_dx:
            return None
        return dy.reshape((dy.shape[0],) + self.input_shape)

    def lower(self, ctx: Any) -> dict:
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
        return dict(kind="reshape")


class Flatten(SameDataLayer):
    """Flatten the per-sample axes: ``(batch, d1, d2, ...)`` becomes ``(batch, d1 * d2 * ...)``.

    The output is a view of the input (no copy).

    Parameters
    ----------
    name, input_shape, input_dim, trainable, dtype, batch_input_shape, activity_regularizer : optional
        Base layer arguments (see ``Layer``).
    **kwargs
        Any other keyword argument is an error.
    """

    def compute_output_shape(self, input_shape):
        return (int(np.prod(input_shape)),)


class InputLayer(Layer):
    """The entry of a model: declares the per-sample input shape.

    It holds the symbolic tensor ``output`` that ``fg.Input`` returns. A
    ``Sequential`` keeps the shape and drops the layer from ``model.layers``
    (as Keras does); a functional model lists it. Usually made by ``fg.Input``.

    Parameters
    ----------
    input_shape : tuple of int, optional
        Per-sample input shape (no batch axis).
    shape : tuple of int, optional
        Same as ``input_shape`` (Keras 3 name); give one of the two.
    name : str, optional
        Layer name (default ``input_layer``, made unique).
    batch_size : int, optional
        Fixed batch size, if any.
    **kwargs
        ``batch_shape`` / ``batch_input_shape`` (shape with the batch axis),
        ``dtype`` (float32, or an integer type for token ids) and the base
        layer arguments.

    Raises
    ------
    ValueError
        When no shape is given, both ``shape`` and ``input_shape`` are, a
        dimension is None, or the batch size or dtype is invalid.
    """

    _is_input_layer = True

    def __init__(self, input_shape: Any = None, shape: Any = None, name: str | None = None,
                 batch_size: int | None = None, **kwargs: Any) -> None:
        if shape is not None:
            if input_shape is not None:
                raise ValueError("InputLayer: give shape or input_shape, not both")
            input_shape = shape
        if input_shape is None and kwargs.get("batch_input_shape") is None \
                and kwargs.get("batch_shape") is None:
            raise ValueError("InputLayer: shape is required")
        bshape = kwargs.pop("batch_shape", None)
        if bshape is not None:
            kwargs["batch_input_shape"] = bshape
        if input_shape is not None and isinstance(input_shape, (list, tuple)) \
                and any(s is None for s in input_shape):
            raise ValueError(f"InputLayer: shape {tuple(input_shape)} has an unknown (None) "
                             "dimension; fastgrad needs every per-sample dimension")
        if batch_size is not None and (isinstance(batch_size, bool) or
                                       not isinstance(batch_size, (int, np.integer))
                                       or batch_size < 1):
            raise ValueError(f"InputLayer: batch_size must be a positive integer, got "
                             f"{batch_size!r}")
        dtype = kwargs.pop("dtype", None)
        int_dtype = None
        if dtype is not None:
            try:
                dt = np.dtype(dtype)
            except TypeError:
                raise ValueError(f"InputLayer: unknown dtype {dtype!r}") from None
            if dt.kind in "iu":
                # integer inputs (token ids for an Embedding, as Keras writes them); data
                # for other consumers is cast to float32 as Keras's layers cast it
                int_dtype = dt.name
            elif dt != np.float32:
                raise ValueError(f"InputLayer: dtype {dt.name} is not supported; fastgrad "
                                 "computes in float32 (integer dtypes are accepted for ids)")
        super().__init__(name=name or _unique_input_name(), input_shape=input_shape, **kwargs)
        self.int_dtype = int_dtype
        self.batch_size = None if batch_size is None else int(batch_size)
        from ..engine.graph import Node
        out = self.build(self._declared_input_shape)
        Node(self, [], False, out, self.batch_size)

    def forward(self, x, training, ws):
        return x

    def backward(self, dy, ws, need_dx=True):
        return dy if need_dx else None

    def get_config(self):
        cfg = super().get_config()
        if self.batch_size is not None:
            cfg["batch_size"] = self.batch_size
        if getattr(self, "int_dtype", None):
            cfg["dtype"] = self.int_dtype
        return cfg


def _unique_input_name():
    from .base import _unique_name
    return _unique_name("input_layer")


def Input(shape: Any = None, batch_size: int | None = None, name: str | None = None,
          dtype: Any = None, batch_shape: Any = None, **kwargs: Any) -> Any:
    """Create a symbolic input tensor (the start of a functional model).

    Layers called on it build a model graph; ``fg.Model(inputs, outputs)``
    turns the graph into a model. It can also start a ``Sequential``.

    Parameters
    ----------
    shape : int or tuple of int, optional
        Per-sample shape (no batch axis).
    batch_size : int, optional
        Fixed batch size, if any.
    name : str, optional
        Name of the input layer.
    dtype : str, optional
        ``"float32"`` (default) or an integer type for token ids.
    batch_shape : tuple, optional
        Shape with the batch axis first (instead of ``shape``).
    **kwargs
        Passed to ``InputLayer``.

    Returns
    -------
    SymbolicTensor
        The input tensor, of shape ``(batch_size, *shape)``.

    Raises
    ------
    ValueError
        When neither ``shape`` nor ``batch_shape`` is given.
    TypeError
        When ``shape`` is not a tuple of integers.

    Examples
    --------
    >>> import fastgrad as fg
    >>> x = fg.Input(shape=(4,))
    >>> x.shape
    (None, 4)
    """
    if shape is None and batch_shape is None:
        raise ValueError("Input: shape is required, e.g. fg.Input(shape=(784,))")
    if batch_shape is not None:
        batch_shape = tuple(batch_shape)
        if shape is None:
            shape = batch_shape[1:]
        if batch_size is None and batch_shape[0] is not None:
            batch_size = batch_shape[0]
    if isinstance(shape, (int, np.integer)):
        shape = (int(shape),)
    if not isinstance(shape, (tuple, list)):
        raise TypeError(f"Input: shape must be a tuple of integers, got {shape!r}")
    layer = InputLayer(input_shape=_as_shape(tuple(shape), "Input: shape") if
                       not any(s is None for s in shape) else tuple(shape),
                       name=name, batch_size=batch_size, dtype=dtype, **kwargs)
    return layer.output
