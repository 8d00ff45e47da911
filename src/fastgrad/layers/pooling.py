"""Pooling layers (Keras 3's keras.layers.pooling): MaxPooling1D/2D,
AveragePooling1D/2D, GlobalAveragePooling1D/2D, GlobalMaxPooling1D/2D.

channels_last only. `strides` defaults to `pool_size`; padding "valid" or
"same" (Keras/TF: output ceil(n / stride), the odd pixel of padding at the
end; padding is never read — max ignores it, the average divides by the
number of real elements in the window). Global pooling takes `keepdims`.
The 1-D global pools take a `mask` (batch, steps) through `set_mask` /
the graph's mask mechanism: masked steps are excluded (an all-masked sample
gives 0).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .base import Layer
from .convolutional import _int_tuple, _check_data_format, _check_padding, spatial_pads

__all__ = ["MaxPooling1D", "MaxPooling2D", "AveragePooling1D", "AveragePooling2D",
           "GlobalAveragePooling1D", "GlobalAveragePooling2D", "GlobalMaxPooling1D", "GlobalMaxPooling2D",
           "MaxPool1D", "MaxPool2D", "AvgPool1D", "AvgPool2D", "GlobalAvgPool1D", "GlobalAvgPool2D",
           "GlobalMaxPool1D", "GlobalMaxPool2D"]


class _Pooling(Layer):
    rank = 2
    kind = "max"

    def __init__(self, pool_size: Any = 2, strides: Any = None, padding: Any = "valid",
                 data_format: str | None = None, name: str | None = None, **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)
        c = type(self).__name__
        self.pool_size = _int_tuple(pool_size, self.rank, f"{c} {self.name}: pool_size")
        self.strides = self.pool_size if strides is None else \
            _int_tuple(strides, self.rank, f"{c} {self.name}: strides")
        self.padding = _check_padding(c, self.name, padding)
        _check_data_format(c, self.name, data_format)
        self._pads: Any = None

    def compute_output_shape(self, input_shape):
        c = type(self).__name__
        if len(input_shape) != self.rank + 1:
            want = "(steps, channels)" if self.rank == 1 else "(height, width, channels)"
            raise ValueError(f"{c} {self.name}: expects per-sample input of rank {self.rank + 1} {want} "
                             f"(batch axis excluded), got shape {tuple(input_shape)}")
        pads, out = spatial_pads(c, self.name, self.padding, input_shape[:-1], self.pool_size, self.strides,
                                 (1,) * self.rank)
        self._pads = tuple(p for pair in pads for p in pair)
        return out + (input_shape[-1],)

    def forward(self, x, training, ws):
        y = ws.buf("y", (x.shape[0],) + self.output_shape, x.dtype)
        ops = self.ops
        if self.rank == 2:
            f = ops.max_pool2d_forward if self.kind == "max" else ops.avg_pool2d_forward
            f(x, self.pool_size, self.strides, self._pads, y)
        else:
            f = ops.max_pool1d_forward if self.kind == "max" else ops.avg_pool1d_forward
            f(x, self.pool_size[0], self.strides[0], self._pads, y)
        ws.x, ws.y = x, y
        return y

    def backward(self, dy, ws, need_dx=True):
        if not need_dx:
            return None
        x = ws.x
        dx = ws.buf("dx", x.shape, x.dtype)
        ops = self.ops
        if self.rank == 2:
            if self.kind == "max":
                ops.max_pool2d_backward(dy, x, ws.y, self.pool_size, self.strides, self._pads, dx)
            else:
                ops.avg_pool2d_backward(dy, x.shape[1:3], self.pool_size, self.strides, self._pads, dx)
        else:
            if self.kind == "max":
                ops.max_pool1d_backward(dy, x, ws.y, self.pool_size[0], self.strides[0], self._pads, dx)
            else:
                ops.avg_pool1d_backward(dy, x.shape[1], self.pool_size[0], self.strides[0], self._pads, dx)
        return dx

    def get_config(self):
        cfg = super().get_config()
        one = self.rank == 1
        cfg.update(pool_size=self.pool_size[0] if one else list(self.pool_size),
                   strides=self.strides[0] if one else list(self.strides), padding=self.padding,
                   data_format="channels_last")
        return cfg

    def describe(self):
        d = super().describe()
        d.update(pool_size=self.pool_size, strides=self.strides, padding=self.padding, pads=self._pads)
        return d


    def lower(self, ctx):
        """This layer as a node of the compiled plan (csrc/step/layer_pool2d.c; op 1 max,
        2 average; 1-D layers run as height 1)."""
        op = 1 if self.kind == "max" else 2
        if self.rank == 1:
            return dict(kind="pool2d", op=op, kh=1, kw=self.pool_size[0], sh=1, sw=self.strides[0], pt=0,
                        pl=int(self._pads[0]))
        return dict(kind="pool2d", op=op, kh=self.pool_size[0], kw=self.pool_size[1], sh=self.strides[0],
                    sw=self.strides[1], pt=int(self._pads[0]), pl=int(self._pads[2]))


class MaxPooling2D(_Pooling):
    """Maximum over pooling windows (``keras.layers.MaxPooling2D``).

    The input has shape (batch, height, width, channels) (channels_last).

    Parameters
    ----------
    pool_size : int or tuple of 2 int, default (2, 2)
        Size of the pooling window.
    strides : int or tuple of 2 int, optional
        Step of the window (default: ``pool_size``).
    padding : {"valid", "same"}, default "valid"
        "valid": windows inside the input only; "same": output size
        ceil(n / stride), as Keras pads.
    data_format : {"channels_last"}, optional
        Only "channels_last" (the default) is supported.
    **kwargs
        Base layer arguments (``name``, ``input_shape``, ``trainable``, ...;
        see ``Layer``).

    Raises
    ------
    ValueError
        For non-positive sizes, an unknown padding or data format, or (at
        build) an input of the wrong rank.
    """
    rank, kind = 2, "max"

    def __init__(self, pool_size: Any = (2, 2), strides: Any = None, padding: Any = "valid",
                 data_format: str | None = None, **kwargs: Any) -> None:
        super().__init__(pool_size, strides, padding, data_format, **kwargs)


class AveragePooling2D(_Pooling):
    """Average over pooling windows (``keras.layers.AveragePooling2D``).

    The input has shape (batch, height, width, channels) (channels_last).

    Parameters
    ----------
    pool_size : int or tuple of 2 int, default (2, 2)
        Size of the pooling window.
    strides : int or tuple of 2 int, optional
        Step of the window (default: ``pool_size``).
    padding : {"valid", "same"}, default "valid"
        "valid": windows inside the input only; "same": output size
        ceil(n / stride), as Keras pads.
    data_format : {"channels_last"}, optional
        Only "channels_last" (the default) is supported.
    **kwargs
        Base layer arguments (``name``, ``input_shape``, ``trainable``, ...;
        see ``Layer``).

    Raises
    ------
    ValueError
        For non-positive sizes, an unknown padding or data format, or (at
        build) an input of the wrong rank.
    """
    rank, kind = 2, "avg"

    def __init__(self, pool_size: Any = (2, 2), strides: Any = None, padding: Any = "valid",
                 data_format: str | None = None, **kwargs: Any) -> None:
        super().__init__(pool_size, strides, padding, data_format, **kwargs)


class MaxPooling1D(_Pooling):
    """Maximum over pooling windows (``keras.layers.MaxPooling1D``).

    The input has shape (batch, steps, channels) (channels_last).

    Parameters
    ----------
    pool_size : int or tuple of 1 int, default 2
        Size of the pooling window.
    strides : int or tuple of 1 int, optional
        Step of the window (default: ``pool_size``).
    padding : {"valid", "same"}, default "valid"
        "valid": windows inside the input only; "same": output size
        ceil(n / stride), as Keras pads.
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
        For non-positive sizes, an unknown padding or data format, or (at
        build) an input of the wrong rank.
    """
    rank, kind = 1, "max"


class AveragePooling1D(_Pooling):
    """Average over pooling windows (``keras.layers.AveragePooling1D``).

    The input has shape (batch, steps, channels) (channels_last).

    Parameters
    ----------
    pool_size : int or tuple of 1 int, default 2
        Size of the pooling window.
    strides : int or tuple of 1 int, optional
        Step of the window (default: ``pool_size``).
    padding : {"valid", "same"}, default "valid"
        "valid": windows inside the input only; "same": output size
        ceil(n / stride), as Keras pads.
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
        For non-positive sizes, an unknown padding or data format, or (at
        build) an input of the wrong rank.
    """
    rank, kind = 1, "avg"


class _GlobalPooling(Layer):
    rank = 2
    kind = "avg"

    def __init__(self, data_format: str | None = None, keepdims: bool = False,
                 name: str | None = None, **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)
        _check_data_format(type(self).__name__, self.name, data_format)
        self.keepdims = bool(keepdims)
        self._mask: Any = None

    def compute_output_shape(self, input_shape):
        if len(input_shape) != self.rank + 1:
            want = "(steps, channels)" if self.rank == 1 else "(height, width, channels)"
            raise ValueError(f"{type(self).__name__} {self.name}: expects per-sample input of rank "
                             f"{self.rank + 1} {want} (batch axis excluded), got shape {tuple(input_shape)}")
        c = input_shape[-1]
        return (1,) * self.rank + (c,) if self.keepdims else (c,)

    def _take_mask(self, ws, x):
        return None

    def forward(self, x, training, ws):
        n, c = x.shape[0], x.shape[-1]
        mask = self._take_mask(ws, x)
        y = ws.buf("y", (n, c), x.dtype)
        if self.kind == "avg":
            self.ops.global_avg_pool_forward(x, y, mask)
        else:
            self.ops.global_max_pool_forward(x, y, mask)
        ws.x, ws.y, ws.mask = x, y, mask
        return y.reshape((n,) + self.output_shape)

    def backward(self, dy, ws, need_dx=True):
        if not need_dx:
            return None
        x = ws.x
        dx = ws.buf("dx", x.shape, x.dtype)
        d2 = dy.reshape(x.shape[0], x.shape[-1])
        if self.kind == "avg":
            self.ops.global_avg_pool_backward(d2, x.shape, dx, ws.mask)
        else:
            self.ops.global_max_pool_backward(d2, x, ws.y, dx, ws.mask)
        return dx

    def get_config(self):
        cfg = super().get_config()
        cfg.update(data_format="channels_last", keepdims=self.keepdims)
        return cfg

    def describe(self):
        d = super().describe()
        d.update(keepdims=self.keepdims)
        return d


    def lower(self, ctx):
        """This layer as a node of the compiled plan (csrc/step/layer_gpool.c; op 1 max, 2 average)."""
        return dict(kind="gpool", op=1 if self.kind == "max" else 2)


class _MaskedGlobalPooling1D(_GlobalPooling):
    """1-D global pooling that honours a (batch, steps) mask: masked steps are
    excluded (an all-masked sample gives 0). The mask comes the way
    /work/notes/mask_contract.md (branch rnn) says: `forward(..., mask=)` from the
    executors and eager calls; before that mechanism is merged, from
    `set_mask(mask)` or an eager `layer(x, mask=m)`. No mask goes on (Keras)."""

    rank = 1
    supports_masking = True

    def set_mask(self, mask):
        """The (batch, steps) mask forward uses when none is passed (None: no mask)."""
        self._mask = None if mask is None else np.asarray(mask).astype(bool)

    def compute_mask(self, inputs, mask=None):
        """The output has no steps axis, so no mask goes on (Keras)."""
        return None

    def forward(self, x, training, ws, mask=None):
        m = self._mask if mask is None else np.asarray(mask).astype(bool, copy=False)
        if m is not None and m.shape != x.shape[:2]:
            raise ValueError(f"{type(self).__name__} {self.name}: mask of shape {m.shape} does not match input "
                             f"{x.shape} (expected (batch, steps) = {x.shape[:2]})")
        ws.mask_in = m
        return super().forward(x, training, ws)

    def _take_mask(self, ws, x):
        return ws.mask_in

    def lower(self, ctx):
        """The gpool kind over the steps when no mask is set (a graph carrying masks never
        reaches the plan: engine/compiled.py refuses it as a whole)."""
        if self._mask is not None:
            raise ctx.unsupported(f"layer {self.name}: masked 1-D global pooling has no C path")
        return super().lower(ctx)

    def __call__(self, inputs, training=False, mask=None, **kwargs):
        from ..engine import graph as _graph
        if mask is None or hasattr(Layer, "_forward_takes_mask") or _graph.is_symbolic(inputs):
            if mask is not None:           # the base class's mask mechanism (branch rnn)
                kwargs["mask"] = mask
            return super().__call__(inputs, training=training, **kwargs)
        self.set_mask(mask)
        try:
            return super().__call__(inputs, training=training, **kwargs)
        finally:
            self._mask = None


class GlobalAveragePooling2D(_GlobalPooling):
    """Average over the height and width (``keras.layers.GlobalAveragePooling2D``).

    Parameters
    ----------
    data_format : {"channels_last"}, optional
        Only "channels_last" (the default) is supported.
    keepdims : bool, default False
        Keep the pooled axes with length one.
    name : str, optional
        Layer name.
    **kwargs
        Base layer arguments (``name``, ``input_shape``, ``trainable``, ...;
        see ``Layer``).

    Raises
    ------
    ValueError
        For an unknown data format or (at build) an input of the wrong rank.
    """
    rank, kind = 2, "avg"


class GlobalMaxPooling2D(_GlobalPooling):
    """Maximum over the height and width (``keras.layers.GlobalMaxPooling2D``).

    Parameters
    ----------
    data_format : {"channels_last"}, optional
        Only "channels_last" (the default) is supported.
    keepdims : bool, default False
        Keep the pooled axes with length one.
    name : str, optional
        Layer name.
    **kwargs
        Base layer arguments (``name``, ``input_shape``, ``trainable``, ...;
        see ``Layer``).

    Raises
    ------
    ValueError
        For an unknown data format or (at build) an input of the wrong rank.
    """
    rank, kind = 2, "max"


class GlobalAveragePooling1D(_MaskedGlobalPooling1D):
    """Average over the steps (``keras.layers.GlobalAveragePooling1D``).

    Masked steps (``Embedding(mask_zero=True)``, ``Masking``) are excluded;
    an all-masked sample gives 0.

    Parameters
    ----------
    data_format : {"channels_last"}, optional
        Only "channels_last" (the default) is supported.
    keepdims : bool, default False
        Keep the pooled axes with length one.
    name : str, optional
        Layer name.
    **kwargs
        Base layer arguments (``name``, ``input_shape``, ``trainable``, ...;
        see ``Layer``).

    Raises
    ------
    ValueError
        For an unknown data format or (at build) an input of the wrong rank.
    """
    kind = "avg"


class GlobalMaxPooling1D(_MaskedGlobalPooling1D):
    """Maximum over the steps (``keras.layers.GlobalMaxPooling1D``).

    Masked steps (``Embedding(mask_zero=True)``, ``Masking``) are excluded;
    an all-masked sample gives 0.

    Parameters
    ----------
    data_format : {"channels_last"}, optional
        Only "channels_last" (the default) is supported.
    keepdims : bool, default False
        Keep the pooled axes with length one.
    name : str, optional
        Layer name.
    **kwargs
        Base layer arguments (``name``, ``input_shape``, ``trainable``, ...;
        see ``Layer``).

    Raises
    ------
    ValueError
        For an unknown data format or (at build) an input of the wrong rank.
    """
    kind = "max"


MaxPool1D, MaxPool2D = MaxPooling1D, MaxPooling2D
AvgPool1D, AvgPool2D = AveragePooling1D, AveragePooling2D
GlobalAvgPool1D, GlobalAvgPool2D = GlobalAveragePooling1D, GlobalAveragePooling2D
GlobalMaxPool1D, GlobalMaxPool2D = GlobalMaxPooling1D, GlobalMaxPooling2D
