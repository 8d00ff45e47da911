"""Convolution layers (Keras 3's keras.layers.convolutional): Conv1D, Conv2D,
DepthwiseConv1D / 2D, SeparableConv1D / 2D, Conv1DTranspose / Conv2DTranspose.

channels_last only. Weight layouts and get_weights() order are Keras's:
Conv kernel ``(*kernel_size, in_channels / groups, filters)`` then bias (filters,);
DepthwiseConv2D kernel (kh, kw, in_channels, depth_multiplier) then bias
(in_channels * depth_multiplier,); SeparableConv2D depthwise_kernel
(kh, kw, in, M), pointwise_kernel (1, 1, in * M, filters), bias;
Conv2DTranspose kernel (kh, kw, filters, in_channels) then bias. The 1-D layers
drop the kh axis: (k, ...).

``padding="same"`` is Keras's (TF's) rule: output ceil(n / stride), the odd pixel
of padding at the bottom / right (``backend.numpy_conv.same_pads``); Conv1D also
takes "causal" (all padding on the left). The layers compute the explicit pads
and call the NumpyOps / NativeOps conv ops (docs/conv.md), which fuse bias and
activation as Dense does. A 1-D layer is its 2-D twin at height 1: it hands the
2-D ops (batch, 1, steps, channels) views of its arrays and lowers to the same
compiled-plan kind with kh = sh = dh = 1 and no top padding.
"""
from __future__ import annotations

from typing import Any

import numbers

import numpy as np

from .. import activations as _activations
from .. import initializers as _initializers
from .. import regularizers as _regularizers
from ..backend.numpy_conv import same_pads, conv_out_size
from .base import Layer, ParamSpec
from .core import _FusableOutput, _NEEDS_PREACT

__all__ = ["Conv1D", "Conv2D", "DepthwiseConv1D", "DepthwiseConv2D", "SeparableConv1D", "SeparableConv2D",
           "Conv1DTranspose", "Conv2DTranspose", "Convolution1D", "Convolution2D", "SeparableConvolution1D",
           "Convolution1DTranspose", "Convolution2DTranspose"]


def _int_tuple(value, n, what, allow_zero=False):
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        value = (int(value),) * n
    try:
        value = tuple(value)
    except TypeError:
        raise ValueError(f"{what} must be an integer or a tuple of {n} integers, got {value!r}") from None
    if len(value) != n or not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in value):
        raise ValueError(f"{what} must be an integer or a tuple of {n} integers, got {value!r}")
    value = tuple(int(v) for v in value)
    if any(v < (0 if allow_zero else 1) for v in value):
        raise ValueError(f"{what} must be {'non-negative' if allow_zero else 'positive'}, got {value}")
    return value


def _check_data_format(cls, name, data_format):
    if data_format not in (None, "channels_last"):
        raise ValueError(f"{cls} {name}: only data_format='channels_last' is supported, got {data_format!r} "
                         "(transpose NCHW input to NHWC, e.g. with Permute, first)")


def _check_padding(cls, name, padding, allowed=("valid", "same")):
    p = padding.lower() if isinstance(padding, str) else padding
    if p not in allowed:
        raise ValueError(f"{cls} {name}: padding must be one of {', '.join(allowed)}, got {padding!r}")
    return p


def _element_wise_activation(cls, name, activation):
    act = _activations.get(activation, f"{cls} {name}: activation")
    if act in ("softmax", "log_softmax"):
        raise ValueError(f"{cls} {name}: activation {act!r} is not element-wise; put a Softmax / Activation "
                         "layer after the convolution")
    return act


def spatial_pads(cls, name, padding, in_spatial, kernel, strides, dilation):
    """Compute the explicit padding and the output size of a convolution or pooling window.

    The first argument, ``cls``, is the layer's class name; with ``name`` it
    labels the error messages.

    Parameters
    ----------
    name : str
        Layer name, for error messages.
    padding : {"valid", "same", "causal"}
        The padding mode.
    in_spatial : tuple of int
        Input spatial shape.
    kernel : tuple of int
        Window size per spatial axis.
    strides : tuple of int
        Stride per spatial axis.
    dilation : tuple of int
        Dilation per spatial axis.

    Returns
    -------
    tuple
        ``(pads, out)``: the ``(lo, hi)`` padding of each axis and the output
        spatial shape.

    Raises
    ------
    ValueError
        When the window does not fit the (padded) input.
    """
    pads, out = [], []
    for n, k, s, d in zip(in_spatial, kernel, strides, dilation):
        if padding == "same":
            lo, hi = same_pads(n, k, s, d)
        elif padding == "causal":
            lo, hi = d * (k - 1), 0
        else:
            lo, hi = 0, 0
        o = conv_out_size(n, k, s, d, lo, hi)
        if o < 1:
            keff = tuple((kk - 1) * dd + 1 for kk, dd in zip(kernel, dilation))
            raise ValueError(f"{cls} {name}: kernel {tuple(kernel)} (dilated to {keff}) is larger than the "
                             f"padded input {tuple(in_spatial)} with padding={padding!r}")
        pads.append((lo, hi))
        out.append(o)
    return pads, tuple(out)


def _rank_error(cls, name, rank, input_shape):
    want = "(steps, channels)" if rank == 1 else "(height, width, channels)"
    return ValueError(f"{cls} {name}: expects per-sample input of rank {rank + 1} {want} "
                      f"(batch axis excluded), got shape {tuple(input_shape)}")


class _HeightOne:
    """Run a 1-D layer (``rank = 1``) on the 2-D ops: (batch, steps, channels) arrays
    become (batch, 1, steps, channels) views and kernels (k, ...) become (1, k, ...)
    views, so the maths, the kernels and the bits are the 2-D layer's at height 1.
    A 2-D layer's arrays pass unchanged."""

    rank = 2
    strides: tuple
    dilation_rate: tuple
    _pads: Any

    def _img(self, a):
        return a if self.rank == 2 or a is None or a is False else a[:, None]

    def _ker(self, w):
        return w if self.rank == 2 or w is None or w is False else w[None]

    def _window(self):
        """(strides, pads, dilation) of the 2-D op."""
        if self.rank == 2:
            return self.strides, self._pads, self.dilation_rate
        return (1, self.strides[0]), (0, 0) + tuple(self._pads), (1, self.dilation_rate[0])


def _lower_window_2d(layer):
    """The C window fields (kernel, strides, dilation, top / left pads); a 1-D layer
    runs as height 1."""
    if getattr(layer, "rank", 2) == 1:
        return dict(kh=1, kw=layer.kernel_size[0], sh=1, sw=layer.strides[0], dh=1, dw=layer.dilation_rate[0],
                    pt=0, pl=int(layer._pads[0]))
    return dict(kh=layer.kernel_size[0], kw=layer.kernel_size[1], sh=layer.strides[0], sw=layer.strides[1],
                dh=layer.dilation_rate[0], dw=layer.dilation_rate[1], pt=int(layer._pads[0]),
                pl=int(layer._pads[2]))


def _lower_common(layer, ctx, arrays):
    """act / out_act / trainable and, per (field suffix, regularizer) of `arrays`, the
    l1_<suffix> / l2_<suffix> fields (zero when frozen: the Python step skips frozen layers)."""
    trainable = ctx.trainable(layer)
    d = dict(act=ctx.act(layer._run_act), out_act=ctx.out_act(layer._fused_activation), trainable=trainable)
    for suffix, reg in arrays:
        l1, l2 = ctx.regularizer(reg)
        d["l1_" + suffix], d["l2_" + suffix] = (l1, l2) if trainable else (0.0, 0.0)
    return d


class _BaseConv(_FusableOutput, Layer):
    """Shared machinery of Conv1D / Conv2D: arguments, validation, weights, config."""

    rank = 2
    _paddings: tuple = ("valid", "same")

    def __init__(self, filters: Any, kernel_size: Any, strides: Any = 1, padding: Any = "valid",
                 data_format: str | None = None, dilation_rate: Any = 1, groups: Any = 1,
                 activation: str | None = None, use_bias: bool = True,
                 kernel_initializer: Any = "glorot_uniform", bias_initializer: Any = "zeros",
                 kernel_regularizer: Any = None, bias_regularizer: Any = None,
                 activity_regularizer: Any = None, kernel_constraint: Any = None,
                 bias_constraint: Any = None, name: str | None = None, **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)
        c, r = type(self).__name__, self.rank
        if isinstance(filters, bool) or not isinstance(filters, numbers.Integral) or filters <= 0:
            raise ValueError(f"{c} {self.name}: filters must be a positive integer, got {filters!r}")
        self.filters = int(filters)
        self.kernel_size = _int_tuple(kernel_size, r, f"{c} {self.name}: kernel_size")
        self.strides = _int_tuple(strides, r, f"{c} {self.name}: strides")
        self.dilation_rate = _int_tuple(dilation_rate, r, f"{c} {self.name}: dilation_rate")
        self.padding = _check_padding(c, self.name, padding, self._paddings)
        _check_data_format(c, self.name, data_format)
        if isinstance(groups, bool) or not isinstance(groups, numbers.Integral) or groups <= 0:
            raise ValueError(f"{c} {self.name}: groups must be a positive integer, got {groups!r}")
        self.groups = int(groups)
        if self.filters % self.groups:
            raise ValueError(f"{c} {self.name}: filters={self.filters} is not divisible by groups={self.groups}")
        for what, v in (("activity_regularizer", activity_regularizer), ("kernel_constraint", kernel_constraint),
                        ("bias_constraint", bias_constraint)):
            if v is not None:
                raise ValueError(f"{c} {self.name}: {what} is not supported (got {v!r})")
        self.activation = _element_wise_activation(c, self.name, activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = _initializers.get(kernel_initializer, f"{c} {self.name}: kernel_initializer")
        self.bias_initializer = _initializers.get(bias_initializer, f"{c} {self.name}: bias_initializer")
        self.kernel_regularizer = _regularizers.get(kernel_regularizer, f"{c} {self.name}: kernel_regularizer")
        self.bias_regularizer = _regularizers.get(bias_regularizer, f"{c} {self.name}: bias_regularizer")
        self._run_act = self.activation
        self._pads: Any = None

    # ------------------------------------------------------------------ shapes
    def _check_input(self, input_shape):
        c = type(self).__name__
        if len(input_shape) != self.rank + 1:
            want = "(steps, channels)" if self.rank == 1 else "(height, width, channels)"
            raise ValueError(f"{c} {self.name}: expects per-sample input of rank {self.rank + 1} {want} "
                             f"(batch axis excluded), got shape {tuple(input_shape)}")
        return input_shape[:-1], input_shape[-1]

    def compute_output_shape(self, input_shape):
        c = type(self).__name__
        spatial, ch = self._check_input(input_shape)
        if ch % self.groups:
            raise ValueError(f"{c} {self.name}: input channels {ch} (input shape {tuple(input_shape)}) are not "
                             f"divisible by groups={self.groups}")
        pads, out = spatial_pads(c, self.name, self.padding, spatial, self.kernel_size, self.strides,
                                 self.dilation_rate)
        self._pads = tuple(p for pair in pads for p in pair)
        return out + (self.filters,)

    def param_specs(self):
        ch = self.input_shape[-1]
        specs = [ParamSpec("kernel", self.kernel_size + (ch // self.groups, self.filters),
                           self.kernel_initializer, self.kernel_regularizer)]
        if self.use_bias:
            specs.append(ParamSpec("bias", (self.filters,), self.bias_initializer, self.bias_regularizer))
        return specs

    def bind(self, params, grads, state):
        super().bind(params, grads, state)
        self._w = params["kernel"]
        self._b = params.get("bias")
        self._gw = grads["kernel"]
        self._gb = grads["bias"] if self.use_bias else False

    @property
    def kernel(self):
        """The kernel array, shape ``(*kernel_size, in_channels // groups, filters)``."""
        return self.params["kernel"]

    @property
    def bias(self):
        """The bias array of shape ``(filters,)``, or None without bias."""
        return self.params.get("bias")

    # ------------------------------------------------------------------ compute
    def _fwd(self, x, w, b, act, y, z):
        raise NotImplementedError

    def _bwd(self, dy, x, w, y, act, z, dx, dw, db, need_dx):
        raise NotImplementedError

    def forward(self, x, training, ws):
        n = x.shape[0]
        act = self._run_act
        y = ws.buf("y", (n,) + self.output_shape, x.dtype)
        z = ws.buf("z", y.shape, x.dtype) if (training and act in _NEEDS_PREACT) else None
        self._fwd(x, self._w, self._b, act, y, z)
        ws.x, ws.y, ws.z = x, y, z
        return y

    def backward(self, dy, ws, need_dx=True):
        x = ws.x
        dx = ws.buf("dx", x.shape, x.dtype) if need_dx else None
        self._bwd(dy, x, self._w, ws.y, self._run_act, ws.z, dx, self._gw, self._gb, need_dx)
        return dx

    # ------------------------------------------------------------------ config
    def get_config(self):
        cfg = super().get_config()
        cfg.update(filters=self.filters, kernel_size=list(self.kernel_size), strides=list(self.strides),
                   padding=self.padding, data_format="channels_last", dilation_rate=list(self.dilation_rate),
                   groups=self.groups, activation=self.activation, use_bias=self.use_bias,
                   kernel_initializer=_initializers.serialize(self.kernel_initializer),
                   bias_initializer=_initializers.serialize(self.bias_initializer),
                   kernel_regularizer=_regularizers.serialize(self.kernel_regularizer),
                   bias_regularizer=_regularizers.serialize(self.bias_regularizer))
        return cfg

    def describe(self):
        d = super().describe()
        d.update(filters=self.filters, kernel_size=self.kernel_size, strides=self.strides,
                 padding=self.padding, pads=self._pads, dilation_rate=self.dilation_rate, groups=self.groups,
                 activation=self.activation, use_bias=self.use_bias, run_activation=self._run_act,
                 fused_activation=self._fused_activation,
                 regularizers={"kernel": _regularizers.serialize(self.kernel_regularizer),
                               "bias": _regularizers.serialize(self.bias_regularizer)})
        return d


    def _lower_window(self):
        """The C window fields: 1-D layers run as height 1."""
        if self.rank == 1:
            return dict(kh=1, kw=self.kernel_size[0], sh=1, sw=self.strides[0], dh=1, dw=self.dilation_rate[0],
                        pt=0, pl=int(self._pads[0]))
        return dict(kh=self.kernel_size[0], kw=self.kernel_size[1], sh=self.strides[0], sw=self.strides[1],
                    dh=self.dilation_rate[0], dw=self.dilation_rate[1], pt=int(self._pads[0]),
                    pl=int(self._pads[2]))

    def lower(self, ctx):
        """This layer as a node of the compiled plan (csrc/step/layer_conv2d.c): the
        window, groups, activation, kernel / bias offsets and regularizers (none when
        frozen: the Python step skips frozen layers).

        Parameters
        ----------
        ctx : LowerContext
            The lowering context (offsets, thread settings, refusal helper).

        Returns
        -------
        dict
            The node description: ``kind`` and the fields of ``desc.c``.
        """
        trainable = ctx.trainable(self)
        l1w, l2w = ctx.regularizer(self.kernel_regularizer)
        l1b, l2b = ctx.regularizer(self.bias_regularizer if self.use_bias else None)
        if not trainable:
            l1w = l2w = l1b = l2b = 0.0
        return dict(kind="conv2d", act=ctx.act(self._run_act), out_act=ctx.out_act(self._fused_activation),
                    trainable=trainable, w_off=int(self.offsets["kernel"]),
                    b_off=int(self.offsets["bias"]) if self.use_bias else -1,
                    l1_w=l1w, l2_w=l2w, l1_b=l1b, l2_b=l2b, groups=self.groups, **self._lower_window())


class Conv2D(_BaseConv):
    """2-D convolution layer (``keras.layers.Conv2D``).

    The input has shape (batch, height, width, channels) (channels_last). The kernel has shape
    ``(*kernel_size, in_channels // groups, filters)`` and the bias
    ``(filters,)``, as in Keras; the bias and activation are fused into the
    convolution kernel.

    Parameters
    ----------
    filters : int
        Number of output channels.
    kernel_size : int or tuple of 2 int
        Size of the convolution window.
    strides : int or tuple of 2 int, default 1
        Step of the window along each spatial axis.
    padding : {"valid", "same"}, default "valid"
        "valid": no padding; "same": output size ceil(n / stride), the odd pixel
        of padding at the bottom / right (Keras's rule).
    data_format : {"channels_last"}, optional
        Only "channels_last" (the default) is supported.
    dilation_rate : int or tuple of 2 int, default 1
        Spacing between kernel elements.
    groups : int, default 1
        Number of channel groups; input channels and filters must both be
        divisible by it.
    activation : str or None, default None
        Element-wise activation applied to the output (None: linear).
    use_bias : bool, default True
        Whether to add a bias.
    kernel_initializer : str, dict or callable, default "glorot_uniform"
        Initializer of the kernel.
    bias_initializer : str, dict or callable, default "zeros"
        Initializer of the bias.
    kernel_regularizer : str, dict or Regularizer, optional
        Penalty on the kernel, added to the loss.
    bias_regularizer : str, dict or Regularizer, optional
        Penalty on the bias, added to the loss.
    activity_regularizer : None
        Not supported; must be None.
    kernel_constraint : None
        Not supported; must be None.
    bias_constraint : None
        Not supported; must be None.
    name : str, optional
        Layer name.
    **kwargs
        Base layer arguments (``name``, ``input_shape``, ``trainable``, ...;
        see ``Layer``).

    Raises
    ------
    ValueError
        For non-positive sizes, an unknown padding or data format, a
        non-element-wise activation, constraints or an activity regularizer,
        or (at build) an input of the wrong rank.

    Examples
    --------
    >>> import numpy as np
    >>> import fastgrad as fg
    >>> conv = fg.layers.Conv2D(8, 3, padding="same", activation="relu")
    >>> conv(np.zeros((2, 16, 16, 3), dtype=np.float32)).shape
    (2, 16, 16, 8)
    >>> [w.shape for w in conv.get_weights()]
    [(3, 3, 3, 8), (8,)]
    >>> fg.layers.Conv2D(4, (3, 3), strides=2)(np.zeros((1, 9, 9, 1), dtype=np.float32)).shape
    (1, 4, 4, 4)
    """

    rank = 2

    def _fwd(self, x, w, b, act, y, z):
        self.ops.conv2d_forward(x, w, b, self.strides, self._pads, self.dilation_rate, self.groups, act, y, z)

    def _bwd(self, dy, x, w, y, act, z, dx, dw, db, need_dx):
        self.ops.conv2d_backward(dy, x, w, y, self.strides, self._pads, self.dilation_rate, self.groups, act, z,
                                 dx, dw, db, need_dx)


class Conv1D(_BaseConv):
    """1-D convolution layer (``keras.layers.Conv1D``).

    The input has shape (batch, steps, channels) (channels_last). The kernel has shape
    ``(*kernel_size, in_channels // groups, filters)`` and the bias
    ``(filters,)``, as in Keras; the bias and activation are fused into the
    convolution kernel.

    Parameters
    ----------
    filters : int
        Number of output channels.
    kernel_size : int or tuple of 1 int
        Size of the convolution window.
    strides : int or tuple of 1 int, default 1
        Step of the window along each spatial axis.
    padding : {"valid", "same", "causal"}, default "valid"
        "valid": no padding; "same": output size ceil(n / stride), the odd pixel
        of padding at the bottom / right (Keras's rule); "causal": all padding
        on the left (output t sees inputs up to t).
    data_format : {"channels_last"}, optional
        Only "channels_last" (the default) is supported.
    dilation_rate : int or tuple of 1 int, default 1
        Spacing between kernel elements.
    groups : int, default 1
        Number of channel groups; input channels and filters must both be
        divisible by it.
    activation : str or None, default None
        Element-wise activation applied to the output (None: linear).
    use_bias : bool, default True
        Whether to add a bias.
    kernel_initializer : str, dict or callable, default "glorot_uniform"
        Initializer of the kernel.
    bias_initializer : str, dict or callable, default "zeros"
        Initializer of the bias.
    kernel_regularizer : str, dict or Regularizer, optional
        Penalty on the kernel, added to the loss.
    bias_regularizer : str, dict or Regularizer, optional
        Penalty on the bias, added to the loss.
    activity_regularizer : None
        Not supported; must be None.
    kernel_constraint : None
        Not supported; must be None.
    bias_constraint : None
        Not supported; must be None.
    name : str, optional
        Layer name.
    **kwargs
        Base layer arguments (``name``, ``input_shape``, ``trainable``, ...;
        see ``Layer``).

    Raises
    ------
    ValueError
        For non-positive sizes, an unknown padding or data format, a
        non-element-wise activation, constraints or an activity regularizer,
        or (at build) an input of the wrong rank.
    """

    rank = 1
    _paddings = ("valid", "same", "causal")

    def _fwd(self, x, w, b, act, y, z):
        self.ops.conv1d_forward(x, w, b, self.strides[0], self._pads, self.dilation_rate[0], self.groups, act,
                                y, z)

    def _bwd(self, dy, x, w, y, act, z, dx, dw, db, need_dx):
        self.ops.conv1d_backward(dy, x, w, y, self.strides[0], self._pads, self.dilation_rate[0], self.groups,
                                 act, z, dx, dw, db, need_dx)


Convolution1D = Conv1D
Convolution2D = Conv2D


class _DepthwiseConv(_HeightOne, _FusableOutput, Layer):
    """Shared machinery of DepthwiseConv1D / DepthwiseConv2D (``rank``)."""

    def __init__(self, kernel_size: Any, strides: Any = (1, 1), padding: Any = "valid",
                 depth_multiplier: Any = 1, data_format: str | None = None,
                 dilation_rate: Any = (1, 1), activation: str | None = None, use_bias: bool = True,
                 depthwise_initializer: Any = "glorot_uniform", bias_initializer: Any = "zeros",
                 depthwise_regularizer: Any = None, bias_regularizer: Any = None,
                 activity_regularizer: Any = None, depthwise_constraint: Any = None,
                 bias_constraint: Any = None, name: str | None = None, **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)
        c = type(self).__name__
        r = self.rank
        self.kernel_size = _int_tuple(kernel_size, r, f"{c} {self.name}: kernel_size")
        self.strides = _int_tuple(strides, r, f"{c} {self.name}: strides")
        self.dilation_rate = _int_tuple(dilation_rate, r, f"{c} {self.name}: dilation_rate")
        self.padding = _check_padding(c, self.name, padding)
        _check_data_format(c, self.name, data_format)
        if isinstance(depth_multiplier, bool) or not isinstance(depth_multiplier, numbers.Integral) \
                or depth_multiplier <= 0:
            raise ValueError(f"{c} {self.name}: depth_multiplier must be a positive integer, "
                             f"got {depth_multiplier!r}")
        for what, v in (("activity_regularizer", activity_regularizer),
                        ("depthwise_constraint", depthwise_constraint), ("bias_constraint", bias_constraint)):
            if v is not None:
                raise ValueError(f"{c} {self.name}: {what} is not supported (got {v!r})")
        self.depth_multiplier = int(depth_multiplier)
        self.activation = _element_wise_activation(c, self.name, activation)
        self.use_bias = bool(use_bias)
        self.depthwise_initializer = _initializers.get(depthwise_initializer,
                                                       f"{c} {self.name}: depthwise_initializer")
        self.bias_initializer = _initializers.get(bias_initializer, f"{c} {self.name}: bias_initializer")
        self.depthwise_regularizer = _regularizers.get(depthwise_regularizer,
                                                       f"{c} {self.name}: depthwise_regularizer")
        self.bias_regularizer = _regularizers.get(bias_regularizer, f"{c} {self.name}: bias_regularizer")
        self._run_act = self.activation
        self._pads: Any = None

    def compute_output_shape(self, input_shape):
        c = type(self).__name__
        if len(input_shape) != self.rank + 1:
            raise _rank_error(c, self.name, self.rank, input_shape)
        pads, out = spatial_pads(c, self.name, self.padding, input_shape[:-1], self.kernel_size, self.strides,
                                 self.dilation_rate)
        self._pads = tuple(p for pair in pads for p in pair)
        return out + (input_shape[-1] * self.depth_multiplier,)

    def param_specs(self):
        ch = self.input_shape[-1]
        specs = [ParamSpec("kernel", self.kernel_size + (ch, self.depth_multiplier), self.depthwise_initializer,
                           self.depthwise_regularizer)]
        if self.use_bias:
            specs.append(ParamSpec("bias", (ch * self.depth_multiplier,), self.bias_initializer,
                                   self.bias_regularizer))
        return specs

    def bind(self, params, grads, state):
        super().bind(params, grads, state)
        self._w = params["kernel"]
        self._b = params.get("bias")
        self._gw = grads["kernel"]
        self._gb = grads["bias"] if self.use_bias else False

    @property
    def kernel(self):
        """The depthwise kernel, shape ``(*kernel_size, in_channels, depth_multiplier)``."""
        return self.params["kernel"]

    depthwise_kernel = kernel

    @property
    def bias(self):
        """The bias array, or None without bias."""
        return self.params.get("bias")

    def forward(self, x, training, ws):
        act = self._run_act
        y = ws.buf("y", (x.shape[0],) + self.output_shape, x.dtype)
        z = ws.buf("z", y.shape, x.dtype) if (training and act in _NEEDS_PREACT) else None
        s, p, d = self._window()
        self.ops.depthwise_conv2d_forward(self._img(x), self._ker(self._w), self._b, s, p, d, act, self._img(y),
                                          self._img(z))
        ws.x, ws.y, ws.z = x, y, z
        return y

    def backward(self, dy, ws, need_dx=True):
        x = ws.x
        dx = ws.buf("dx", x.shape, x.dtype) if need_dx else None
        s, p, d = self._window()
        img = self._img
        self.ops.depthwise_conv2d_backward(img(dy), img(x), self._ker(self._w), img(ws.y), s, p, d, self._run_act,
                                           img(ws.z), img(dx), self._ker(self._gw), self._gb, need_dx)
        return dx

    def lower(self, ctx):
        """This layer as a node of the compiled plan (csrc/step/layer_depthwise2d.c; 1-D: height 1).

        Parameters
        ----------
        ctx : LowerContext
            The lowering context (offsets, thread settings, refusal helper).

        Returns
        -------
        dict
            The node description: ``kind`` and the fields of ``desc.c``.
        """
        d = _lower_common(self, ctx, (("w", self.depthwise_regularizer),
                                      ("b", self.bias_regularizer if self.use_bias else None)))
        return dict(kind="depthwise2d", w_off=int(self.offsets["kernel"]),
                    b_off=int(self.offsets["bias"]) if self.use_bias else -1, multiplier=self.depth_multiplier,
                    **d, **_lower_window_2d(self))

    def get_config(self):
        cfg = super().get_config()
        cfg.update(kernel_size=list(self.kernel_size), strides=list(self.strides), padding=self.padding,
                   depth_multiplier=self.depth_multiplier, data_format="channels_last",
                   dilation_rate=list(self.dilation_rate), activation=self.activation, use_bias=self.use_bias,
                   depthwise_initializer=_initializers.serialize(self.depthwise_initializer),
                   bias_initializer=_initializers.serialize(self.bias_initializer),
                   depthwise_regularizer=_regularizers.serialize(self.depthwise_regularizer),
                   bias_regularizer=_regularizers.serialize(self.bias_regularizer))
        return cfg

    def describe(self):
        d = super().describe()
        d.update(kernel_size=self.kernel_size, strides=self.strides, padding=self.padding, pads=self._pads,
                 depth_multiplier=self.depth_multiplier, dilation_rate=self.dilation_rate,
                 activation=self.activation, use_bias=self.use_bias, run_activation=self._run_act,
                 fused_activation=self._fused_activation)
        return d


class DepthwiseConv2D(_DepthwiseConv):
    """Depthwise 2-D convolution layer (``keras.layers.DepthwiseConv2D``).

    Each input channel is convolved with ``depth_multiplier`` filters of its
    own; output channel ``c * depth_multiplier + m``. The kernel has shape
    ``(kh, kw, in_channels, depth_multiplier)``, the bias
    ``(in_channels * depth_multiplier,)``.

    Parameters
    ----------
    kernel_size : int or tuple of 2 int
        Size of the convolution window.
    strides : int or tuple of 2 int, default (1, 1)
        Step of the window along each spatial axis.
    padding : {"valid", "same"}, default "valid"
        "valid": no padding; "same": output size ceil(n / stride), the odd pixel
        of padding at the bottom / right (Keras's rule).
    depth_multiplier : int, default 1
        Number of filters per input channel.
    data_format : {"channels_last"}, optional
        Only "channels_last" (the default) is supported.
    dilation_rate : int or tuple of 2 int, default (1, 1)
        Spacing between kernel elements.
    activation : str or None, default None
        Element-wise activation applied to the output (None: linear).
    use_bias : bool, default True
        Whether to add a bias.
    depthwise_initializer : str, dict or callable, default "glorot_uniform"
        Initializer of the depthwise kernel.
    bias_initializer : str, dict or callable, default "zeros"
        Initializer of the bias.
    depthwise_regularizer : str, dict or Regularizer, optional
        Penalty on the depthwise kernel, added to the loss.
    bias_regularizer : str, dict or Regularizer, optional
        Penalty on the bias, added to the loss.
    activity_regularizer : None
        Not supported; must be None.
    depthwise_constraint : None
        Not supported; must be None.
    bias_constraint : None
        Not supported; must be None.
    name : str, optional
        Layer name.
    **kwargs
        Base layer arguments (``name``, ``input_shape``, ``trainable``, ...;
        see ``Layer``).

    Raises
    ------
    ValueError
        For non-positive sizes, an unknown padding or data format, a
        non-element-wise activation, constraints or an activity regularizer,
        or (at build) an input of the wrong rank.
    """

    rank = 2


class DepthwiseConv1D(_DepthwiseConv):
    """Depthwise 1-D convolution layer (``keras.layers.DepthwiseConv1D``).

    Each input channel is convolved with ``depth_multiplier`` filters of its
    own; output channel ``c * depth_multiplier + m``. The input has shape
    (batch, steps, channels); the kernel has shape
    ``(kernel_size, in_channels, depth_multiplier)``, the bias
    ``(in_channels * depth_multiplier,)``.

    Parameters
    ----------
    kernel_size : int or tuple of 1 int
        Size of the convolution window.
    strides : int or tuple of 1 int, default 1
        Step of the window.
    padding : {"valid", "same"}, default "valid"
        "valid": no padding; "same": output length ceil(steps / stride), the
        odd step of padding at the end (Keras's rule).
    depth_multiplier : int, default 1
        Number of filters per input channel.
    data_format : {"channels_last"}, optional
        Only "channels_last" (the default) is supported.
    dilation_rate : int or tuple of 1 int, default 1
        Spacing between kernel elements.
    activation : str or None, default None
        Element-wise activation applied to the output (None: linear).
    use_bias : bool, default True
        Whether to add a bias.
    depthwise_initializer : str, dict or callable, default "glorot_uniform"
        Initializer of the depthwise kernel.
    bias_initializer : str, dict or callable, default "zeros"
        Initializer of the bias.
    depthwise_regularizer : str, dict or Regularizer, optional
        Penalty on the depthwise kernel, added to the loss.
    bias_regularizer : str, dict or Regularizer, optional
        Penalty on the bias, added to the loss.
    activity_regularizer : None
        Not supported; must be None.
    depthwise_constraint : None
        Not supported; must be None.
    bias_constraint : None
        Not supported; must be None.
    name : str, optional
        Layer name.
    **kwargs
        Base layer arguments (``name``, ``input_shape``, ``trainable``, ...;
        see ``Layer``).

    Raises
    ------
    ValueError
        For non-positive sizes, an unknown padding or data format, a
        non-element-wise activation, constraints or an activity regularizer,
        or (at build) an input of the wrong rank or a kernel longer than the
        padded input.

    Examples
    --------
    >>> import numpy as np
    >>> import fastgrad as fg
    >>> layer = fg.layers.DepthwiseConv1D(3, depth_multiplier=2)
    >>> layer(np.zeros((4, 10, 3), dtype=np.float32)).shape
    (4, 8, 6)
    >>> [w.shape for w in layer.get_weights()]
    [(3, 3, 2), (6,)]
    """

    rank = 1

    def __init__(self, kernel_size: Any, strides: Any = 1, padding: Any = "valid",
                 depth_multiplier: Any = 1, data_format: str | None = None,
                 dilation_rate: Any = 1, activation: str | None = None, use_bias: bool = True,
                 depthwise_initializer: Any = "glorot_uniform", bias_initializer: Any = "zeros",
                 depthwise_regularizer: Any = None, bias_regularizer: Any = None,
                 activity_regularizer: Any = None, depthwise_constraint: Any = None,
                 bias_constraint: Any = None, name: str | None = None, **kwargs: Any) -> None:
        super().__init__(kernel_size=kernel_size, strides=strides, padding=padding,
                         depth_multiplier=depth_multiplier, data_format=data_format, dilation_rate=dilation_rate,
                         activation=activation, use_bias=use_bias, depthwise_initializer=depthwise_initializer,
                         bias_initializer=bias_initializer, depthwise_regularizer=depthwise_regularizer,
                         bias_regularizer=bias_regularizer, activity_regularizer=activity_regularizer,
                         depthwise_constraint=depthwise_constraint, bias_constraint=bias_constraint, name=name,
                         **kwargs)


class _SeparableConv(_HeightOne, _FusableOutput, Layer):
    """Shared machinery of SeparableConv1D / SeparableConv2D (``rank``)."""

    def __init__(self, filters: Any, kernel_size: Any, strides: Any = (1, 1),
                 padding: Any = "valid", data_format: str | None = None,
                 dilation_rate: Any = (1, 1), depth_multiplier: Any = 1,
                 activation: str | None = None, use_bias: bool = True,
                 depthwise_initializer: Any = "glorot_uniform",
                 pointwise_initializer: Any = "glorot_uniform", bias_initializer: Any = "zeros",
                 depthwise_regularizer: Any = None, pointwise_regularizer: Any = None,
                 bias_regularizer: Any = None, activity_regularizer: Any = None,
                 depthwise_constraint: Any = None, pointwise_constraint: Any = None,
                 bias_constraint: Any = None, name: str | None = None, **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)
        c = type(self).__name__
        if isinstance(filters, bool) or not isinstance(filters, numbers.Integral) or filters <= 0:
            raise ValueError(f"{c} {self.name}: filters must be a positive integer, got {filters!r}")
        self.filters = int(filters)
        nd = self.rank
        self.kernel_size = _int_tuple(kernel_size, nd, f"{c} {self.name}: kernel_size")
        self.strides = _int_tuple(strides, nd, f"{c} {self.name}: strides")
        self.dilation_rate = _int_tuple(dilation_rate, nd, f"{c} {self.name}: dilation_rate")
        self.padding = _check_padding(c, self.name, padding)
        _check_data_format(c, self.name, data_format)
        if isinstance(depth_multiplier, bool) or not isinstance(depth_multiplier, numbers.Integral) \
                or depth_multiplier <= 0:
            raise ValueError(f"{c} {self.name}: depth_multiplier must be a positive integer, "
                             f"got {depth_multiplier!r}")
        for what, v in (("activity_regularizer", activity_regularizer),
                        ("depthwise_constraint", depthwise_constraint),
                        ("pointwise_constraint", pointwise_constraint), ("bias_constraint", bias_constraint)):
            if v is not None:
                raise ValueError(f"{c} {self.name}: {what} is not supported (got {v!r})")
        self.depth_multiplier = int(depth_multiplier)
        self.activation = _element_wise_activation(c, self.name, activation)
        self.use_bias = bool(use_bias)
        g, r = _initializers.get, _regularizers.get
        self.depthwise_initializer = g(depthwise_initializer, f"{c} {self.name}: depthwise_initializer")
        self.pointwise_initializer = g(pointwise_initializer, f"{c} {self.name}: pointwise_initializer")
        self.bias_initializer = g(bias_initializer, f"{c} {self.name}: bias_initializer")
        self.depthwise_regularizer = r(depthwise_regularizer, f"{c} {self.name}: depthwise_regularizer")
        self.pointwise_regularizer = r(pointwise_regularizer, f"{c} {self.name}: pointwise_regularizer")
        self.bias_regularizer = r(bias_regularizer, f"{c} {self.name}: bias_regularizer")
        self._run_act = self.activation
        self._pads: Any = None

    def compute_output_shape(self, input_shape):
        c = type(self).__name__
        if len(input_shape) != self.rank + 1:
            raise _rank_error(c, self.name, self.rank, input_shape)
        pads, out = spatial_pads(c, self.name, self.padding, input_shape[:-1], self.kernel_size, self.strides,
                                 self.dilation_rate)
        self._pads = tuple(p for pair in pads for p in pair)
        self._mid = out + (input_shape[-1] * self.depth_multiplier,)
        return out + (self.filters,)

    def param_specs(self):
        ch = self.input_shape[-1]
        m = ch * self.depth_multiplier
        specs = [ParamSpec("depthwise_kernel", self.kernel_size + (ch, self.depth_multiplier),
                           self.depthwise_initializer, self.depthwise_regularizer),
                 ParamSpec("pointwise_kernel", (1,) * self.rank + (m, self.filters), self.pointwise_initializer,
                           self.pointwise_regularizer)]
        if self.use_bias:
            specs.append(ParamSpec("bias", (self.filters,), self.bias_initializer, self.bias_regularizer))
        return specs

    def bind(self, params, grads, state):
        super().bind(params, grads, state)
        self._dw, self._pw, self._b = params["depthwise_kernel"], params["pointwise_kernel"], params.get("bias")
        self._gdw, self._gpw = grads["depthwise_kernel"], grads["pointwise_kernel"]
        self._gb = grads["bias"] if self.use_bias else False

    @property
    def depthwise_kernel(self):
        """The depthwise kernel, shape ``(*kernel_size, in_channels, depth_multiplier)``."""
        return self.params["depthwise_kernel"]

    @property
    def pointwise_kernel(self):
        """The pointwise kernel, shape ``(1, [1,] in_channels * depth_multiplier, filters)``."""
        return self.params["pointwise_kernel"]

    @property
    def bias(self):
        """The bias array of shape ``(filters,)``, or None without bias."""
        return self.params.get("bias")

    def forward(self, x, training, ws):
        n = x.shape[0]
        act = self._run_act
        img, ker = self._img, self._ker
        s, p, d = self._window()
        t = ws.buf("t", (n,) + self._mid, x.dtype)
        self.ops.depthwise_conv2d_forward(img(x), ker(self._dw), None, s, p, d, "linear", img(t))
        y = ws.buf("y", (n,) + self.output_shape, x.dtype)
        z = ws.buf("z", y.shape, x.dtype) if (training and act in _NEEDS_PREACT) else None
        self.ops.conv2d_forward(img(t), ker(self._pw), self._b, (1, 1), (0, 0, 0, 0), (1, 1), 1, act, img(y),
                                img(z))
        ws.x, ws.t, ws.y, ws.z = x, t, y, z
        return y

    def backward(self, dy, ws, need_dx=True):
        x, t = ws.x, ws.t
        img, ker = self._img, self._ker
        s, p, d = self._window()
        dt = ws.buf("dt", t.shape, t.dtype)
        self.ops.conv2d_backward(img(dy), img(t), ker(self._pw), img(ws.y), (1, 1), (0, 0, 0, 0), (1, 1), 1,
                                 self._run_act, img(ws.z), img(dt), ker(self._gpw), self._gb, True)
        dx = ws.buf("dx", x.shape, x.dtype) if need_dx else None
        self.ops.depthwise_conv2d_backward(img(dt), img(x), ker(self._dw), img(t), s, p, d, "linear", None,
                                           img(dx), ker(self._gdw), False, need_dx)
        return dx

    def lower(self, ctx):
        """This layer as a node of the compiled plan (csrc/step/layer_sepconv2d.c; 1-D: height
        1): the depthwise kernel (w), the pointwise kernel (w2) and the bias (b).

        Parameters
        ----------
        ctx : LowerContext
            The lowering context (offsets, thread settings, refusal helper).

        Returns
        -------
        dict
            The node description: ``kind`` and the fields of ``desc.c``.
        """
        d = _lower_common(self, ctx, (("w", self.depthwise_regularizer), ("w2", self.pointwise_regularizer),
                                      ("b", self.bias_regularizer if self.use_bias else None)))
        return dict(kind="sepconv2d", w_off=int(self.offsets["depthwise_kernel"]),
                    w2_off=int(self.offsets["pointwise_kernel"]),
                    b_off=int(self.offsets["bias"]) if self.use_bias else -1, multiplier=self.depth_multiplier,
                    **d, **_lower_window_2d(self))

    def get_config(self):
        cfg = super().get_config()
        s = _initializers.serialize
        rs = _regularizers.serialize
        cfg.update(filters=self.filters, kernel_size=list(self.kernel_size), strides=list(self.strides),
                   padding=self.padding, data_format="channels_last", dilation_rate=list(self.dilation_rate),
                   depth_multiplier=self.depth_multiplier, activation=self.activation, use_bias=self.use_bias,
                   depthwise_initializer=s(self.depthwise_initializer),
                   pointwise_initializer=s(self.pointwise_initializer), bias_initializer=s(self.bias_initializer),
                   depthwise_regularizer=rs(self.depthwise_regularizer),
                   pointwise_regularizer=rs(self.pointwise_regularizer), bias_regularizer=rs(self.bias_regularizer))
        return cfg

    def describe(self):
        d = super().describe()
        d.update(filters=self.filters, kernel_size=self.kernel_size, strides=self.strides, padding=self.padding,
                 pads=self._pads, dilation_rate=self.dilation_rate, depth_multiplier=self.depth_multiplier,
                 activation=self.activation, use_bias=self.use_bias, run_activation=self._run_act,
                 fused_activation=self._fused_activation)
        return d


class SeparableConv2D(_SeparableConv):
    """Depthwise then pointwise (1x1) convolution (``keras.layers.SeparableConv2D``).

    Weights: ``depthwise_kernel`` (kh, kw, in_channels, depth_multiplier),
    ``pointwise_kernel`` (1, 1, in_channels * depth_multiplier, filters) and
    bias (filters,).

    Parameters
    ----------
    filters : int
        Number of output channels.
    kernel_size : int or tuple of 2 int
        Size of the depthwise window.
    strides : int or tuple of 2 int, default (1, 1)
        Step of the window along each spatial axis.
    padding : {"valid", "same"}, default "valid"
        "valid": no padding; "same": output size ceil(n / stride), the odd pixel
        of padding at the bottom / right (Keras's rule).
    data_format : {"channels_last"}, optional
        Only "channels_last" (the default) is supported.
    dilation_rate : int or tuple of 2 int, default (1, 1)
        Spacing between kernel elements.
    depth_multiplier : int, default 1
        Number of depthwise filters per input channel.
    activation : str or None, default None
        Element-wise activation applied to the output (None: linear).
    use_bias : bool, default True
        Whether to add a bias.
    depthwise_initializer : str, dict or callable, default "glorot_uniform"
        Initializer of the depthwise kernel.
    pointwise_initializer : str, dict or callable, default "glorot_uniform"
        Initializer of the pointwise kernel.
    bias_initializer : str, dict or callable, default "zeros"
        Initializer of the bias.
    depthwise_regularizer : str, dict or Regularizer, optional
        Penalty on the depthwise kernel, added to the loss.
    pointwise_regularizer : str, dict or Regularizer, optional
        Penalty on the pointwise kernel, added to the loss.
    bias_regularizer : str, dict or Regularizer, optional
        Penalty on the bias, added to the loss.
    activity_regularizer : None
        Not supported; must be None.
    depthwise_constraint : None
        Not supported; must be None.
    pointwise_constraint : None
        Not supported; must be None.
    bias_constraint : None
        Not supported; must be None.
    name : str, optional
        Layer name.
    **kwargs
        Base layer arguments (``name``, ``input_shape``, ``trainable``, ...;
        see ``Layer``).

    Raises
    ------
    ValueError
        For non-positive sizes, an unknown padding or data format, a
        non-element-wise activation, constraints or an activity regularizer,
        or (at build) an input of the wrong rank.
    """

    rank = 2


class SeparableConv1D(_SeparableConv):
    """Depthwise then pointwise 1-D convolution (``keras.layers.SeparableConv1D``).

    The input has shape (batch, steps, channels). Weights:
    ``depthwise_kernel`` (kernel_size, in_channels, depth_multiplier),
    ``pointwise_kernel`` (1, in_channels * depth_multiplier, filters) and bias
    (filters,), in that order.

    Parameters
    ----------
    filters : int
        Number of output channels.
    kernel_size : int or tuple of 1 int
        Size of the depthwise window.
    strides : int or tuple of 1 int, default 1
        Step of the window.
    padding : {"valid", "same"}, default "valid"
        "valid": no padding; "same": output length ceil(steps / stride), the
        odd step of padding at the end (Keras's rule).
    data_format : {"channels_last"}, optional
        Only "channels_last" (the default) is supported.
    dilation_rate : int or tuple of 1 int, default 1
        Spacing between kernel elements.
    depth_multiplier : int, default 1
        Number of depthwise filters per input channel.
    activation : str or None, default None
        Element-wise activation applied to the output (None: linear).
    use_bias : bool, default True
        Whether to add a bias.
    depthwise_initializer : str, dict or callable, default "glorot_uniform"
        Initializer of the depthwise kernel.
    pointwise_initializer : str, dict or callable, default "glorot_uniform"
        Initializer of the pointwise kernel.
    bias_initializer : str, dict or callable, default "zeros"
        Initializer of the bias.
    depthwise_regularizer : str, dict or Regularizer, optional
        Penalty on the depthwise kernel, added to the loss.
    pointwise_regularizer : str, dict or Regularizer, optional
        Penalty on the pointwise kernel, added to the loss.
    bias_regularizer : str, dict or Regularizer, optional
        Penalty on the bias, added to the loss.
    activity_regularizer : None
        Not supported; must be None.
    depthwise_constraint : None
        Not supported; must be None.
    pointwise_constraint : None
        Not supported; must be None.
    bias_constraint : None
        Not supported; must be None.
    name : str, optional
        Layer name.
    **kwargs
        Base layer arguments (``name``, ``input_shape``, ``trainable``, ...;
        see ``Layer``).

    Raises
    ------
    ValueError
        For non-positive sizes, an unknown padding or data format, a
        non-element-wise activation, constraints or an activity regularizer,
        or (at build) an input of the wrong rank or a kernel longer than the
        padded input.

    Examples
    --------
    >>> import numpy as np
    >>> import fastgrad as fg
    >>> layer = fg.layers.SeparableConv1D(4, 3, padding="same", depth_multiplier=2)
    >>> layer(np.zeros((2, 9, 3), dtype=np.float32)).shape
    (2, 9, 4)
    >>> [w.shape for w in layer.get_weights()]
    [(3, 3, 2), (1, 6, 4), (4,)]
    """

    rank = 1

    def __init__(self, filters: Any, kernel_size: Any, strides: Any = 1,
                 padding: Any = "valid", data_format: str | None = None,
                 dilation_rate: Any = 1, depth_multiplier: Any = 1,
                 activation: str | None = None, use_bias: bool = True,
                 depthwise_initializer: Any = "glorot_uniform",
                 pointwise_initializer: Any = "glorot_uniform", bias_initializer: Any = "zeros",
                 depthwise_regularizer: Any = None, pointwise_regularizer: Any = None,
                 bias_regularizer: Any = None, activity_regularizer: Any = None,
                 depthwise_constraint: Any = None, pointwise_constraint: Any = None,
                 bias_constraint: Any = None, name: str | None = None, **kwargs: Any) -> None:
        super().__init__(filters=filters, kernel_size=kernel_size, strides=strides, padding=padding,
                         data_format=data_format, dilation_rate=dilation_rate, depth_multiplier=depth_multiplier,
                         activation=activation, use_bias=use_bias, depthwise_initializer=depthwise_initializer,
                         pointwise_initializer=pointwise_initializer, bias_initializer=bias_initializer,
                         depthwise_regularizer=depthwise_regularizer, pointwise_regularizer=pointwise_regularizer,
                         bias_regularizer=bias_regularizer, activity_regularizer=activity_regularizer,
                         depthwise_constraint=depthwise_constraint, pointwise_constraint=pointwise_constraint,
                         bias_constraint=bias_constraint, name=name, **kwargs)


SeparableConvolution1D = SeparableConv1D


def transpose_geometry(n, k, s, d, padding, output_padding):
    """Compute Keras's Conv2DTranspose output length and the explicit padding of one axis.

    Parameters
    ----------
    n : int
        Input length.
    k : int
        Kernel size.
    s : int
        Stride.
    d : int
        Dilation.
    padding : {"valid", "same"}
        The padding mode.
    output_padding : int or None
        Extra length at the end (None: Keras's default).

    Returns
    -------
    tuple of int
        ``(out, top, bottom)``: the output length and the explicit padding of
        the ``conv2d_transpose`` op (TF's rule; ``bottom`` may be negative).
    """
    keff = (k - 1) * d + 1
    if output_padding is None:
        out = n * s + max(keff - s, 0) if padding == "valid" else n * s
    else:
        pad = keff // 2 if padding == "same" else 0
        out = (n - 1) * s + keff - 2 * pad + output_padding
    total = (n - 1) * s + keff - out
    top = max(total, 0) // 2 if padding == "same" else 0
    return out, top, total - top


class _ConvTranspose(_HeightOne, _FusableOutput, Layer):
    """Shared machinery of Conv1DTranspose / Conv2DTranspose (``rank``)."""

    def __init__(self, filters: Any, kernel_size: Any, strides: Any = (1, 1),
                 padding: Any = "valid", output_padding: Any = None,
                 data_format: str | None = None, dilation_rate: Any = (1, 1),
                 activation: str | None = None, use_bias: bool = True,
                 kernel_initializer: Any = "glorot_uniform", bias_initializer: Any = "zeros",
                 kernel_regularizer: Any = None, bias_regularizer: Any = None,
                 activity_regularizer: Any = None, kernel_constraint: Any = None,
                 bias_constraint: Any = None, name: str | None = None, **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)
        c = type(self).__name__
        if isinstance(filters, bool) or not isinstance(filters, numbers.Integral) or filters <= 0:
            raise ValueError(f"{c} {self.name}: filters must be a positive integer, got {filters!r}")
        self.filters = int(filters)
        r = self.rank
        self.kernel_size = _int_tuple(kernel_size, r, f"{c} {self.name}: kernel_size")
        self.strides = _int_tuple(strides, r, f"{c} {self.name}: strides")
        self.dilation_rate = _int_tuple(dilation_rate, r, f"{c} {self.name}: dilation_rate")
        self.padding = _check_padding(c, self.name, padding)
        _check_data_format(c, self.name, data_format)
        if output_padding is not None:
            output_padding = _int_tuple(output_padding, r, f"{c} {self.name}: output_padding", allow_zero=True)
            for op, s, d in zip(output_padding, self.strides, self.dilation_rate):
                if op >= max(s, d):
                    raise ValueError(f"{c} {self.name}: output_padding {output_padding} must be smaller than "
                                     f"the strides {self.strides} (or the dilation rate)")
        self.output_padding = output_padding
        for what, v in (("activity_regularizer", activity_regularizer), ("kernel_constraint", kernel_constraint),
                        ("bias_constraint", bias_constraint)):
            if v is not None:
                raise ValueError(f"{c} {self.name}: {what} is not supported (got {v!r})")
        self.activation = _element_wise_activation(c, self.name, activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = _initializers.get(kernel_initializer, f"{c} {self.name}: kernel_initializer")
        self.bias_initializer = _initializers.get(bias_initializer, f"{c} {self.name}: bias_initializer")
        self.kernel_regularizer = _regularizers.get(kernel_regularizer, f"{c} {self.name}: kernel_regularizer")
        self.bias_regularizer = _regularizers.get(bias_regularizer, f"{c} {self.name}: bias_regularizer")
        self._run_act = self.activation
        self._pads: Any = None

    def compute_output_shape(self, input_shape):
        c = type(self).__name__
        if len(input_shape) != self.rank + 1:
            raise _rank_error(c, self.name, self.rank, input_shape)
        out, pads = [], []
        for i in range(self.rank):
            o, lo, hi = transpose_geometry(input_shape[i], self.kernel_size[i], self.strides[i],
                                           self.dilation_rate[i], self.padding,
                                           None if self.output_padding is None else self.output_padding[i])
            if o < 1:
                raise ValueError(f"{c} {self.name}: no output for input {tuple(input_shape)} with kernel "
                                 f"{self.kernel_size} and padding {self.padding!r}")
            out.append(o)
            pads += [lo, hi]
        self._pads = tuple(pads)
        return tuple(out) + (self.filters,)

    def param_specs(self):
        specs = [ParamSpec("kernel", self.kernel_size + (self.filters, self.input_shape[-1]),
                           self.kernel_initializer, self.kernel_regularizer)]
        if self.use_bias:
            specs.append(ParamSpec("bias", (self.filters,), self.bias_initializer, self.bias_regularizer))
        return specs

    def bind(self, params, grads, state):
        super().bind(params, grads, state)
        self._w = params["kernel"]
        self._b = params.get("bias")
        self._gw = grads["kernel"]
        self._gb = grads["bias"] if self.use_bias else False

    @property
    def kernel(self):
        """The kernel array, shape ``(*kernel_size, filters, in_channels)``."""
        return self.params["kernel"]

    @property
    def bias(self):
        """The bias array of shape ``(filters,)``, or None without bias."""
        return self.params.get("bias")

    def forward(self, x, training, ws):
        act = self._run_act
        y = ws.buf("y", (x.shape[0],) + self.output_shape, x.dtype)
        z = ws.buf("z", y.shape, x.dtype) if (training and act in _NEEDS_PREACT) else None
        s, p, d = self._window()
        self.ops.conv2d_transpose_forward(self._img(x), self._ker(self._w), self._b, s, p, d, act, self._img(y),
                                          self._img(z))
        ws.x, ws.y, ws.z = x, y, z
        return y

    def backward(self, dy, ws, need_dx=True):
        x = ws.x
        dx = ws.buf("dx", x.shape, x.dtype) if need_dx else None
        s, p, d = self._window()
        img = self._img
        self.ops.conv2d_transpose_backward(img(dy), img(x), self._ker(self._w), img(ws.y), s, p, d, self._run_act,
                                           img(ws.z), img(dx), self._ker(self._gw), self._gb, need_dx)
        return dx

    def lower(self, ctx):
        """This layer as a node of the compiled plan (csrc/step/layer_conv2dt.c; 1-D: height 1):
        the window of the conv it transposes (top / left pads; the bottom / right follow from
        the shapes).

        Parameters
        ----------
        ctx : LowerContext
            The lowering context (offsets, thread settings, refusal helper).

        Returns
        -------
        dict
            The node description: ``kind`` and the fields of ``desc.c``.
        """
        d = _lower_common(self, ctx, (("w", self.kernel_regularizer),
                                      ("b", self.bias_regularizer if self.use_bias else None)))
        return dict(kind="conv2dt", w_off=int(self.offsets["kernel"]),
                    b_off=int(self.offsets["bias"]) if self.use_bias else -1, **d, **_lower_window_2d(self))

    def get_config(self):
        cfg = super().get_config()
        cfg.update(filters=self.filters, kernel_size=list(self.kernel_size), strides=list(self.strides),
                   padding=self.padding,
                   output_padding=None if self.output_padding is None else list(self.output_padding),
                   data_format="channels_last", dilation_rate=list(self.dilation_rate),
                   activation=self.activation, use_bias=self.use_bias,
                   kernel_initializer=_initializers.serialize(self.kernel_initializer),
                   bias_initializer=_initializers.serialize(self.bias_initializer),
                   kernel_regularizer=_regularizers.serialize(self.kernel_regularizer),
                   bias_regularizer=_regularizers.serialize(self.bias_regularizer))
        return cfg

    def describe(self):
        d = super().describe()
        d.update(filters=self.filters, kernel_size=self.kernel_size, strides=self.strides, padding=self.padding,
                 output_padding=self.output_padding, pads=self._pads, dilation_rate=self.dilation_rate,
                 activation=self.activation, use_bias=self.use_bias, run_activation=self._run_act,
                 fused_activation=self._fused_activation)
        return d


class Conv2DTranspose(_ConvTranspose):
    """Transposed 2-D convolution layer (``keras.layers.Conv2DTranspose``).

    The gradient of a ``Conv2D`` with respect to its input, used to upsample.
    The kernel has shape ``(kh, kw, filters, in_channels)`` and the bias
    ``(filters,)``; output sizes follow Keras's rule.

    Parameters
    ----------
    filters : int
        Number of output channels.
    kernel_size : int or tuple of 2 int
        Size of the convolution window.
    strides : int or tuple of 2 int, default (1, 1)
        Step of the window along each spatial axis.
    padding : {"valid", "same"}, default "valid"
        "valid": no padding; "same": output size ceil(n / stride), the odd pixel
        of padding at the bottom / right (Keras's rule).
    output_padding : int or tuple of 2 int, optional
        Extra rows / columns on the bottom / right of the output; each must be
        smaller than the stride (or the dilation rate).
    data_format : {"channels_last"}, optional
        Only "channels_last" (the default) is supported.
    dilation_rate : int or tuple of 2 int, default (1, 1)
        Spacing between kernel elements.
    activation : str or None, default None
        Element-wise activation applied to the output (None: linear).
    use_bias : bool, default True
        Whether to add a bias.
    kernel_initializer : str, dict or callable, default "glorot_uniform"
        Initializer of the kernel.
    bias_initializer : str, dict or callable, default "zeros"
        Initializer of the bias.
    kernel_regularizer : str, dict or Regularizer, optional
        Penalty on the kernel, added to the loss.
    bias_regularizer : str, dict or Regularizer, optional
        Penalty on the bias, added to the loss.
    activity_regularizer : None
        Not supported; must be None.
    kernel_constraint : None
        Not supported; must be None.
    bias_constraint : None
        Not supported; must be None.
    name : str, optional
        Layer name.
    **kwargs
        Base layer arguments (``name``, ``input_shape``, ``trainable``, ...;
        see ``Layer``).

    Raises
    ------
    ValueError
        For non-positive sizes, an unknown padding or data format, a
        non-element-wise activation, constraints or an activity regularizer,
        or (at build) an input of the wrong rank.
    """

    rank = 2


class Conv1DTranspose(_ConvTranspose):
    """Transposed 1-D convolution layer (``keras.layers.Conv1DTranspose``).

    The gradient of a ``Conv1D`` with respect to its input, used to upsample
    sequences. The input has shape (batch, steps, channels); the kernel has
    shape ``(kernel_size, filters, in_channels)`` and the bias ``(filters,)``;
    the output length follows Keras's rule (valid: ``steps * stride +
    max(k_eff - stride, 0)``, same: ``steps * stride``).

    Parameters
    ----------
    filters : int
        Number of output channels.
    kernel_size : int or tuple of 1 int
        Size of the convolution window.
    strides : int or tuple of 1 int, default 1
        Step of the window.
    padding : {"valid", "same"}, default "valid"
        "valid": no padding; "same": output length steps * stride.
    output_padding : int or tuple of 1 int, optional
        Extra steps at the end of the output; must be smaller than the stride
        (or the dilation rate).
    data_format : {"channels_last"}, optional
        Only "channels_last" (the default) is supported.
    dilation_rate : int or tuple of 1 int, default 1
        Spacing between kernel elements.
    activation : str or None, default None
        Element-wise activation applied to the output (None: linear).
    use_bias : bool, default True
        Whether to add a bias.
    kernel_initializer : str, dict or callable, default "glorot_uniform"
        Initializer of the kernel.
    bias_initializer : str, dict or callable, default "zeros"
        Initializer of the bias.
    kernel_regularizer : str, dict or Regularizer, optional
        Penalty on the kernel, added to the loss.
    bias_regularizer : str, dict or Regularizer, optional
        Penalty on the bias, added to the loss.
    activity_regularizer : None
        Not supported; must be None.
    kernel_constraint : None
        Not supported; must be None.
    bias_constraint : None
        Not supported; must be None.
    name : str, optional
        Layer name.
    **kwargs
        Base layer arguments (``name``, ``input_shape``, ``trainable``, ...;
        see ``Layer``).

    Raises
    ------
    ValueError
        For non-positive sizes, an unknown padding or data format, an
        output_padding not below the stride, a non-element-wise activation,
        constraints or an activity regularizer, or (at build) an input of the
        wrong rank.

    Examples
    --------
    >>> import numpy as np
    >>> import fastgrad as fg
    >>> layer = fg.layers.Conv1DTranspose(4, 3, strides=2, padding="same")
    >>> layer(np.zeros((2, 5, 3), dtype=np.float32)).shape
    (2, 10, 4)
    >>> [w.shape for w in layer.get_weights()]
    [(3, 4, 3), (4,)]
    """

    rank = 1

    def __init__(self, filters: Any, kernel_size: Any, strides: Any = 1,
                 padding: Any = "valid", output_padding: Any = None,
                 data_format: str | None = None, dilation_rate: Any = 1,
                 activation: str | None = None, use_bias: bool = True,
                 kernel_initializer: Any = "glorot_uniform", bias_initializer: Any = "zeros",
                 kernel_regularizer: Any = None, bias_regularizer: Any = None,
                 activity_regularizer: Any = None, kernel_constraint: Any = None,
                 bias_constraint: Any = None, name: str | None = None, **kwargs: Any) -> None:
        super().__init__(filters=filters, kernel_size=kernel_size, strides=strides, padding=padding,
                         output_padding=output_padding, data_format=data_format, dilation_rate=dilation_rate,
                         activation=activation, use_bias=use_bias, kernel_initializer=kernel_initializer,
                         bias_initializer=bias_initializer, kernel_regularizer=kernel_regularizer,
                         bias_regularizer=bias_regularizer, activity_regularizer=activity_regularizer,
                         kernel_constraint=kernel_constraint, bias_constraint=bias_constraint, name=name,
                         **kwargs)


Convolution1DTranspose = Conv1DTranspose
Convolution2DTranspose = Conv2DTranspose
