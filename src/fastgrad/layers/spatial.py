"""Image- and sequence-shaped helper layers: ZeroPadding1D / 2D, Cropping1D / 2D,
UpSampling1D / 2D (nearest) (Keras 3's keras.layers.reshaping) and SpatialDropout1D /
2D (keras.layers.regularization).

channels_last only; they compute through ops.pad2d_* / crop2d_* /
upsample_nearest2d_* / spatial_dropout_* (backend/numpy_conv.py). The 1-D layers
hand those ops (batch, 1, steps, channels) views and lower to the 2-D layers'
compiled-plan kinds at height 1.
"""
from __future__ import annotations

from typing import Any

import numbers

import numpy as np

from .base import Layer
from .convolutional import _int_tuple, _check_data_format
from .dropout import Dropout

__all__ = ["ZeroPadding1D", "ZeroPadding2D", "Cropping1D", "Cropping2D", "UpSampling1D", "UpSampling2D",
           "SpatialDropout1D", "SpatialDropout2D"]


def _pads_2d(value, what):
    """Keras's int | (sym_h, sym_w) | ((top, bottom), (left, right)) -> (t, b, l, r)."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        v = int(value)
        out = (v, v, v, v)
    elif isinstance(value, (tuple, list)) and len(value) == 2:
        if all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in value):
            out = (int(value[0]),) * 2 + (int(value[1]),) * 2
        else:
            out = _int_tuple(value[0], 2, what, True) + _int_tuple(value[1], 2, what, True)
    else:
        raise ValueError(f"{what} must be an int, a tuple of 2 ints or a tuple of 2 tuples of 2 ints, "
                         f"got {value!r}")
    if any(v < 0 for v in out):
        raise ValueError(f"{what} must be non-negative, got {value!r}")
    return out


def _pads_1d(value, what):
    """Keras's int | (left, right) -> (left, right)."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        value = (int(value),) * 2
    return _int_tuple(value, 2, what, True)


def _check_rank3(layer, input_shape):
    if len(input_shape) != 3:
        raise ValueError(f"{type(layer).__name__} {layer.name}: expects per-sample input of rank 3 "
                         f"(height, width, channels) (batch axis excluded), got shape {tuple(input_shape)}")


def _check_rank2(layer, input_shape):
    if len(input_shape) != 2:
        raise ValueError(f"{type(layer).__name__} {layer.name}: expects per-sample input of rank 2 "
                         f"(steps, channels) (batch axis excluded), got shape {tuple(input_shape)}")


class ZeroPadding2D(Layer):
    """Pad an image with zeros (``keras.layers.ZeroPadding2D``).

    The input has shape (batch, height, width, channels).

    Parameters
    ----------
    padding : int, tuple of 2 int or tuple of 2 tuples of 2 int, default (1, 1)
        An int: the same on all sides; ``(sym_h, sym_w)``: symmetric rows and
        columns; ``((top, bottom), (left, right))``: each side.
    data_format : {"channels_last"}, optional
        Only "channels_last" (the default) is supported.
    name : str, optional
        Layer name.
    **kwargs
        Base layer arguments (``name``, ``input_shape``, ``trainable``, ...;
        see ``Layer``).

    Raises
    ------
    ValueError
        For negative or malformed padding, or an unknown data format.
    """

    def __init__(self, padding: Any = (1, 1), data_format: str | None = None,
                 name: str | None = None, **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)
        _check_data_format(type(self).__name__, self.name, data_format)
        self.padding = _pads_2d(padding, f"ZeroPadding2D {self.name}: padding")

    def compute_output_shape(self, input_shape):
        _check_rank3(self, input_shape)
        t, b, l, r = self.padding
        return (input_shape[0] + t + b, input_shape[1] + l + r, input_shape[2])

    def forward(self, x, training, ws):
        y = ws.buf("y", (x.shape[0],) + self.output_shape, x.dtype)
        return self.ops.pad2d_forward(x, self.padding, y)

    def backward(self, dy, ws, need_dx=True):
        if not need_dx:
            return None
        dx = ws.buf("dx", (dy.shape[0],) + self.input_shape, dy.dtype)
        return self.ops.pad2d_backward(dy, self.padding, dx)

    def lower(self, ctx):
        """A node of the compiled plan (csrc/step/layer_pad2d.c): top / left padding.

        Parameters
        ----------
        ctx : LowerContext
            The lowering context (offsets, thread settings, refusal helper).

        Returns
        -------
        dict
            The node description: ``kind`` and the fields of ``desc.c``.
        """
        return dict(kind="pad2d", pt=self.padding[0], pl=self.padding[2])

    def get_config(self):
        cfg = super().get_config()
        t, b, l, r = self.padding
        cfg.update(padding=[[t, b], [l, r]], data_format="channels_last")
        return cfg

    def describe(self):
        d = super().describe()
        d.update(padding=self.padding)
        return d


class Cropping2D(Layer):
    """Crop rows and columns off an image (``keras.layers.Cropping2D``).

    Parameters
    ----------
    cropping : int, tuple of 2 int or tuple of 2 tuples of 2 int, default ((0, 0), (0, 0))
        What to remove, in the forms ``ZeroPadding2D`` takes its padding.
    data_format : {"channels_last"}, optional
        Only "channels_last" (the default) is supported.
    name : str, optional
        Layer name.
    **kwargs
        Base layer arguments (``name``, ``input_shape``, ``trainable``, ...;
        see ``Layer``).

    Raises
    ------
    ValueError
        For negative or malformed cropping, an unknown data format, or
        cropping that leaves nothing.
    """

    def __init__(self, cropping: Any = ((0, 0), (0, 0)), data_format: str | None = None,
                 name: str | None = None, **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)
        _check_data_format(type(self).__name__, self.name, data_format)
        self.cropping = _pads_2d(cropping, f"Cropping2D {self.name}: cropping")

    def compute_output_shape(self, input_shape):
        _check_rank3(self, input_shape)
        t, b, l, r = self.cropping
        h, w = input_shape[0] - t - b, input_shape[1] - l - r
        if h < 1 or w < 1:
            raise ValueError(f"Cropping2D {self.name}: cropping {((t, b), (l, r))} leaves nothing of input "
                             f"shape {tuple(input_shape)}")
        return (h, w, input_shape[2])

    def forward(self, x, training, ws):
        y = ws.buf("y", (x.shape[0],) + self.output_shape, x.dtype)
        return self.ops.crop2d_forward(x, self.cropping, y)

    def backward(self, dy, ws, need_dx=True):
        if not need_dx:
            return None
        dx = ws.buf("dx", (dy.shape[0],) + self.input_shape, dy.dtype)
        return self.ops.crop2d_backward(dy, self.cropping, dx)

    def lower(self, ctx):
        """A node of the compiled plan (csrc/step/layer_pad2d.c): a crop is a negative pad.

        Parameters
        ----------
        ctx : LowerContext
            The lowering context (offsets, thread settings, refusal helper).

        Returns
        -------
        dict
            The node description: ``kind`` and the fields of ``desc.c``.
        """
        return dict(kind="pad2d", pt=-self.cropping[0], pl=-self.cropping[2])

    def get_config(self):
        cfg = super().get_config()
        t, b, l, r = self.cropping
        cfg.update(cropping=[[t, b], [l, r]], data_format="channels_last")
        return cfg

    def describe(self):
        d = super().describe()
        d.update(cropping=self.cropping)
        return d


class ZeroPadding1D(Layer):
    """Pad a sequence with zeros along the steps axis (``keras.layers.ZeroPadding1D``).

    The input has shape (batch, steps, channels).

    Parameters
    ----------
    padding : int or tuple of 2 int, default 1
        An int: that many zero steps at both ends; ``(left, right)``: at the
        start and at the end.
    data_format : {"channels_last"}, optional
        Only "channels_last" (the default) is supported.
    name : str, optional
        Layer name.
    **kwargs
        Base layer arguments (``name``, ``input_shape``, ``trainable``, ...;
        see ``Layer``).

    Raises
    ------
    ValueError
        For negative or malformed padding, an unknown data format, or (at
        build) an input of the wrong rank.

    Examples
    --------
    >>> import numpy as np
    >>> import fastgrad as fg
    >>> fg.layers.ZeroPadding1D((1, 2))(np.ones((1, 3, 2), dtype=np.float32))[0, :, 0]
    array([0., 1., 1., 1., 0., 0.], dtype=float32)
    """

    def __init__(self, padding: Any = 1, data_format: str | None = None,
                 name: str | None = None, **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)
        _check_data_format(type(self).__name__, self.name, data_format)
        self.padding = _pads_1d(padding, f"ZeroPadding1D {self.name}: padding")

    def _pads4(self):
        return (0, 0) + self.padding

    def compute_output_shape(self, input_shape):
        _check_rank2(self, input_shape)
        return (input_shape[0] + self.padding[0] + self.padding[1], input_shape[1])

    def forward(self, x, training, ws):
        y = ws.buf("y", (x.shape[0],) + self.output_shape, x.dtype)
        self.ops.pad2d_forward(x[:, None], self._pads4(), y[:, None])
        return y

    def backward(self, dy, ws, need_dx=True):
        if not need_dx:
            return None
        dx = ws.buf("dx", (dy.shape[0],) + self.input_shape, dy.dtype)
        self.ops.pad2d_backward(dy[:, None], self._pads4(), dx[:, None])
        return dx

    def lower(self, ctx):
        """A node of the compiled plan (csrc/step/layer_pad2d.c at height 1): the left padding.

        Parameters
        ----------
        ctx : LowerContext
            The lowering context (offsets, thread settings, refusal helper).

        Returns
        -------
        dict
            The node description: ``kind`` and the fields of ``desc.c``.
        """
        return dict(kind="pad2d", pt=0, pl=self.padding[0])

    def get_config(self):
        cfg = super().get_config()
        cfg.update(padding=list(self.padding), data_format="channels_last")
        return cfg

    def describe(self):
        d = super().describe()
        d.update(padding=self.padding)
        return d


class Cropping1D(Layer):
    """Crop steps off both ends of a sequence (``keras.layers.Cropping1D``).

    The input has shape (batch, steps, channels).

    Parameters
    ----------
    cropping : int or tuple of 2 int, default (1, 1)
        An int: that many steps off both ends; ``(left, right)``: off the start
        and off the end.
    name : str, optional
        Layer name.
    **kwargs
        Base layer arguments (``name``, ``input_shape``, ``trainable``, ...;
        see ``Layer``).

    Raises
    ------
    ValueError
        For negative or malformed cropping, or (at build) an input of the
        wrong rank or cropping that leaves nothing.

    Examples
    --------
    >>> import numpy as np
    >>> import fastgrad as fg
    >>> x = np.arange(6, dtype=np.float32).reshape(1, 6, 1)
    >>> fg.layers.Cropping1D((1, 2))(x)[0, :, 0]
    array([1., 2., 3.], dtype=float32)
    """

    def __init__(self, cropping: Any = (1, 1), name: str | None = None, **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)
        self.cropping = _pads_1d(cropping, f"Cropping1D {self.name}: cropping")

    def _crops4(self):
        return (0, 0) + self.cropping

    def compute_output_shape(self, input_shape):
        _check_rank2(self, input_shape)
        n = input_shape[0] - self.cropping[0] - self.cropping[1]
        if n < 1:
            raise ValueError(f"Cropping1D {self.name}: cropping {self.cropping} leaves nothing of input shape "
                             f"{tuple(input_shape)}")
        return (n, input_shape[1])

    def forward(self, x, training, ws):
        y = ws.buf("y", (x.shape[0],) + self.output_shape, x.dtype)
        self.ops.crop2d_forward(x[:, None], self._crops4(), y[:, None])
        return y

    def backward(self, dy, ws, need_dx=True):
        if not need_dx:
            return None
        dx = ws.buf("dx", (dy.shape[0],) + self.input_shape, dy.dtype)
        self.ops.crop2d_backward(dy[:, None], self._crops4(), dx[:, None])
        return dx

    def lower(self, ctx):
        """A node of the compiled plan (csrc/step/layer_pad2d.c at height 1): a negative pad.

        Parameters
        ----------
        ctx : LowerContext
            The lowering context (offsets, thread settings, refusal helper).

        Returns
        -------
        dict
            The node description: ``kind`` and the fields of ``desc.c``.
        """
        return dict(kind="pad2d", pt=0, pl=-self.cropping[0])

    def get_config(self):
        cfg = super().get_config()
        cfg.update(cropping=list(self.cropping))
        return cfg

    def describe(self):
        d = super().describe()
        d.update(cropping=self.cropping)
        return d


class UpSampling2D(Layer):
    """Repeat the rows and columns of an image (``keras.layers.UpSampling2D``).

    Parameters
    ----------
    size : int or tuple of 2 int, default (2, 2)
        Repetitions of rows and columns.
    data_format : {"channels_last"}, optional
        Only "channels_last" (the default) is supported.
    interpolation : {"nearest"}, default "nearest"
        Only nearest-neighbour upsampling is supported.
    name : str, optional
        Layer name.
    **kwargs
        Base layer arguments (``name``, ``input_shape``, ``trainable``, ...;
        see ``Layer``).

    Raises
    ------
    ValueError
        For non-positive sizes, an unknown data format or interpolation.
    """

    def __init__(self, size: Any = (2, 2), data_format: str | None = None,
                 interpolation: str = "nearest", name: str | None = None, **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)
        _check_data_format(type(self).__name__, self.name, data_format)
        self.size = _int_tuple(size, 2, f"UpSampling2D {self.name}: size")
        if interpolation != "nearest":
            raise ValueError(f"UpSampling2D {self.name}: only interpolation='nearest' is supported, "
                             f"got {interpolation!r}")
        self.interpolation = interpolation

    def compute_output_shape(self, input_shape):
        _check_rank3(self, input_shape)
        return (input_shape[0] * self.size[0], input_shape[1] * self.size[1], input_shape[2])

    def forward(self, x, training, ws):
        y = ws.buf("y", (x.shape[0],) + self.output_shape, x.dtype)
        return self.ops.upsample_nearest2d_forward(x, self.size, y)

    def backward(self, dy, ws, need_dx=True):
        if not need_dx:
            return None
        dx = ws.buf("dx", (dy.shape[0],) + self.input_shape, dy.dtype)
        return self.ops.upsample_nearest2d_backward(dy, self.size, dx)

    def lower(self, ctx):
        """A node of the compiled plan (csrc/step/layer_upsample2d.c): the repeat factors.

        Parameters
        ----------
        ctx : LowerContext
            The lowering context (offsets, thread settings, refusal helper).

        Returns
        -------
        dict
            The node description: ``kind`` and the fields of ``desc.c``.
        """
        return dict(kind="upsample2d", sh=self.size[0], sw=self.size[1])

    def get_config(self):
        cfg = super().get_config()
        cfg.update(size=list(self.size), data_format="channels_last", interpolation=self.interpolation)
        return cfg

    def describe(self):
        d = super().describe()
        d.update(size=self.size, interpolation=self.interpolation)
        return d


class UpSampling1D(Layer):
    """Repeat each step of a sequence (``keras.layers.UpSampling1D``).

    The input has shape (batch, steps, channels); the output (batch,
    steps * size, channels).

    Parameters
    ----------
    size : int, default 2
        Repetitions of each step.
    name : str, optional
        Layer name.
    **kwargs
        Base layer arguments (``name``, ``input_shape``, ``trainable``, ...;
        see ``Layer``).

    Raises
    ------
    ValueError
        For a size that is not a positive integer, or (at build) an input of
        the wrong rank.

    Examples
    --------
    >>> import numpy as np
    >>> import fastgrad as fg
    >>> x = np.array([[[1.0], [2.0]]], dtype=np.float32)
    >>> fg.layers.UpSampling1D(3)(x)[0, :, 0]
    array([1., 1., 1., 2., 2., 2.], dtype=float32)
    """

    def __init__(self, size: Any = 2, name: str | None = None, **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)
        self.size = _int_tuple(size, 1, f"UpSampling1D {self.name}: size")[0]

    def compute_output_shape(self, input_shape):
        _check_rank2(self, input_shape)
        return (input_shape[0] * self.size, input_shape[1])

    def forward(self, x, training, ws):
        y = ws.buf("y", (x.shape[0],) + self.output_shape, x.dtype)
        self.ops.upsample_nearest2d_forward(x[:, None], (1, self.size), y[:, None])
        return y

    def backward(self, dy, ws, need_dx=True):
        if not need_dx:
            return None
        dx = ws.buf("dx", (dy.shape[0],) + self.input_shape, dy.dtype)
        self.ops.upsample_nearest2d_backward(dy[:, None], (1, self.size), dx[:, None])
        return dx

    def lower(self, ctx):
        """A node of the compiled plan (csrc/step/layer_upsample2d.c at height 1).

        Parameters
        ----------
        ctx : LowerContext
            The lowering context (offsets, thread settings, refusal helper).

        Returns
        -------
        dict
            The node description: ``kind`` and the fields of ``desc.c``.
        """
        return dict(kind="upsample2d", sh=1, sw=self.size)

    def get_config(self):
        cfg = super().get_config()
        cfg.update(size=self.size)
        return cfg

    def describe(self):
        d = super().describe()
        d.update(size=self.size)
        return d


class _SpatialDropout(Dropout):
    """Shared machinery of SpatialDropout1D / SpatialDropout2D (``rank``): the ops
    take any (batch, ..., channels) input."""

    rank = 2

    def compute_output_shape(self, input_shape):
        (_check_rank2 if self.rank == 1 else _check_rank3)(self, input_shape)
        return tuple(input_shape)

    def forward(self, x, training, ws):
        if not training or self.rate == 0.0:
            ws.active = False
            return x
        seed = self._stream_seed if self._stream_seed is not None else self._ensure_seed()
        y = ws.buf("y", x.shape, x.dtype)
        mask = ws.buf("mask", (x.shape[0], x.shape[-1]), np.uint8)
        self.ops.spatial_dropout_forward(x, self.rate, seed, self._offset, y, mask)
        self._offset += x.shape[0] * x.shape[-1]
        ws.active = True
        ws.mask = mask
        return y

    def backward(self, dy, ws, need_dx=True):
        if not need_dx:
            return None
        if not getattr(ws, "active", False):
            return dy
        dx = ws.buf("dx", dy.shape, dy.dtype)
        self.ops.spatial_dropout_backward(dy, ws.mask, self.rate, dx)
        return dx

    def lower(self, ctx):
        """A node of the compiled plan (csrc/step/layer_sdropout.c): Dropout's fields, the
        stream drawn over (sample, channel).

        Parameters
        ----------
        ctx : LowerContext
            The lowering context (offsets, thread settings, refusal helper).

        Returns
        -------
        dict
            The node description: ``kind`` and the fields of ``desc.c``.
        """
        return dict(super().lower(ctx), kind="sdropout")


class SpatialDropout2D(_SpatialDropout):
    """Drop whole channels during training (``keras.layers.SpatialDropout2D``).

    One keep flag per (sample, channel), drawn from the Dropout stream over an
    (N, C) index space; kept channels are scaled by ``1 / (1 - rate)``.

    Parameters
    ----------
    rate : float
        Fraction of the channels to drop, in ``[0, 1)``.
    data_format : {"channels_last"}, optional
        Only "channels_last" (the default) is supported.
    seed : int, optional
        Seed of the mask stream.
    name : str, optional
        Layer name.
    **kwargs
        Base layer arguments (``name``, ``input_shape``, ``trainable``, ...;
        see ``Layer``).

    Raises
    ------
    ValueError
        For a rate outside ``[0, 1)``, an invalid seed or an unknown data format.
    """

    rank = 2

    def __init__(self, rate: Any, data_format: str | None = None, seed: Any = None,
                 name: str | None = None, **kwargs: Any) -> None:
        super().__init__(rate, seed=seed, name=name, **kwargs)
        _check_data_format(type(self).__name__, self.name, data_format)

    def get_config(self):
        cfg = super().get_config()
        cfg["data_format"] = "channels_last"
        return cfg


class SpatialDropout1D(_SpatialDropout):
    """Drop whole channels of a sequence during training (``keras.layers.SpatialDropout1D``).

    The input has shape (batch, steps, channels). One keep flag per (sample,
    channel), drawn from the Dropout stream over an (N, C) index space; kept
    channels are scaled by ``1 / (1 - rate)``.

    Parameters
    ----------
    rate : float
        Fraction of the channels to drop, in ``[0, 1)``.
    seed : int, optional
        Seed of the mask stream.
    name : str, optional
        Layer name.
    **kwargs
        Base layer arguments (``name``, ``input_shape``, ``trainable``, ...;
        see ``Layer``).

    Raises
    ------
    ValueError
        For a rate outside ``[0, 1)``, an invalid seed, or (at build) an input
        of the wrong rank.
    """

    rank = 1

    def __init__(self, rate: Any, seed: Any = None, name: str | None = None, **kwargs: Any) -> None:
        super().__init__(rate, seed=seed, name=name, **kwargs)
