"""Reshaping layers (Keras 3's keras.layers.reshaping): Reshape, Permute,
RepeatVector and Identity.  Flatten lives in layers/core.py.

Shapes are per sample (no batch axis), as everywhere in the Layer protocol.
Reshape and Identity move no data (a view of / the input itself); Permute and
RepeatVector compute through ops.permute_* and ops.repeat_vector_*.  Like the
merge layers, they build themselves when called eagerly on an array
(`Reshape((2, 3))(x)`).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .base import Layer
from .core import SameDataLayer

__all__ = ["Reshape", "Permute", "RepeatVector", "Identity"]


def _int_tuple(value, what):
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        value = (value,)
    try:
        out = tuple(value)
    except TypeError:
        raise TypeError(f"{what}: expected a tuple of integers, got {value!r}") from None
    if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in out):
        raise TypeError(f"{what}: expected a tuple of integers, got {value!r}")
    return tuple(int(v) for v in out)


class Reshape(SameDataLayer):
    """Reshape the per-sample axes (``keras.layers.Reshape``).

    ``(batch, *input_shape)`` becomes ``(batch, *target_shape)``; the output is
    a view of the input (no copy).

    Parameters
    ----------
    target_shape : tuple of int
        The per-sample output shape; one entry may be -1 (inferred).
    **kwargs
        Base layer arguments (``name``, ``input_shape``, ``trainable``, ...;
        see ``Layer``).

    Raises
    ------
    ValueError
        For more than one -1, or a target shape whose size does not match the
        input's.
    TypeError
        When ``target_shape`` is not a tuple of integers.
    """

    def __init__(self, target_shape: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        target = _int_tuple(target_shape, f"Reshape layer {self.name!r}: target_shape")
        if target.count(-1) > 1:
            raise ValueError(f"Reshape layer {self.name!r}: target_shape must not contain more "
                             f"than one -1; got {target}")
        if any(d <= 0 and d != -1 for d in target):
            raise ValueError(f"Reshape layer {self.name!r}: target_shape entries must be positive "
                             f"(or one -1); got {target}")
        self.target_shape = target

    def compute_output_shape(self, input_shape):
        size = int(np.prod(input_shape))
        known = int(np.prod([d for d in self.target_shape if d != -1]))
        if -1 in self.target_shape:
            ok = size % known == 0
            out = tuple(size // known if d == -1 else d for d in self.target_shape)
        else:
            ok = size == known
            out = self.target_shape
        if not ok:
            raise ValueError(f"Reshape layer {self.name!r}: cannot reshape per-sample input of "
                             f"shape {tuple(input_shape)} ({size} values) into target_shape "
                             f"{self.target_shape}")
        return out

    def get_config(self):
        cfg = super().get_config()
        cfg["target_shape"] = list(self.target_shape)
        return cfg

    def describe(self):
        d = super().describe()
        d["target_shape"] = self.target_shape
        return d


class Permute(Layer):
    """Permute the per-sample axes (``keras.layers.Permute``).

    Parameters
    ----------
    dims : tuple of int
        The new order of the per-sample axes, 1-based: ``Permute((2, 1))`` turns
        ``(batch, a, b)`` into ``(batch, b, a)``.
    **kwargs
        Base layer arguments (``name``, ``input_shape``, ``trainable``, ...;
        see ``Layer``).

    Raises
    ------
    ValueError
        When ``dims`` is not a permutation of ``1..n``, or does not fit the input.
    TypeError
        When ``dims`` is not a tuple of integers.
    """

    def __init__(self, dims: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        dims = _int_tuple(dims, f"Permute layer {self.name!r}: dims")
        if sorted(dims) != list(range(1, len(dims) + 1)):
            raise ValueError(f"Permute layer {self.name!r}: invalid permutation dims={dims}; the "
                             "indices must be consecutive and start from 1 (the batch axis 0 "
                             "stays in place)")
        self.dims = dims
        self._perm = (0,) + dims

    def compute_output_shape(self, input_shape):
        if len(input_shape) != len(self.dims):
            raise ValueError(f"Permute layer {self.name!r}: dims={self.dims} needs per-sample "
                             f"input of rank {len(self.dims)}, got shape {tuple(input_shape)}")
        return tuple(input_shape[d - 1] for d in self.dims)

    def forward(self, x, training, ws):
        y = ws.buf("y", (x.shape[0],) + self.output_shape, x.dtype)
        self.ops.permute_forward(x, self._perm, y)
        return y

    def backward(self, dy, ws, need_dx=True):
        if not need_dx:
            return None
        dx = ws.buf("dx", (dy.shape[0],) + self.input_shape, dy.dtype)
        self.ops.permute_backward(dy, self._perm, dx)
        return dx

    def get_config(self):
        cfg = super().get_config()
        cfg["dims"] = list(self.dims)
        return cfg

    def describe(self):
        d = super().describe()
        d["dims"] = self.dims
        return d


class RepeatVector(Layer):
    """Repeat a vector ``n`` times: ``(batch, features)`` becomes ``(batch, n, features)``.

    Parameters
    ----------
    n : int
        Number of repetitions (positive).
    **kwargs
        Base layer arguments (``name``, ``input_shape``, ``trainable``, ...;
        see ``Layer``).

    Raises
    ------
    ValueError
        When ``n`` is not a positive integer, or the input is not 1-D per sample.
    """

    def __init__(self, n: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n <= 0:
            raise ValueError(f"RepeatVector layer {self.name!r}: n must be a positive integer, "
                             f"got {n!r}")
        self.n = int(n)

    def compute_output_shape(self, input_shape):
        if len(input_shape) != 1:
            raise ValueError(f"RepeatVector layer {self.name!r}: expects per-sample input of "
                             f"shape (features,), got {tuple(input_shape)}")
        return (self.n, input_shape[0])

    def forward(self, x, training, ws):
        y = ws.buf("y", (x.shape[0],) + self.output_shape, x.dtype)
        self.ops.repeat_vector_forward(x, y)
        return y

    def backward(self, dy, ws, need_dx=True):
        if not need_dx:
            return None
        dx = ws.buf("dx", (dy.shape[0],) + self.input_shape, dy.dtype)
        self.ops.repeat_vector_backward(dy, dx)
        return dx

    def get_config(self):
        cfg = super().get_config()
        cfg["n"] = self.n
        return cfg

    def describe(self):
        d = super().describe()
        d["n"] = self.n
        return d


class Identity(Layer):
    """Return the input unchanged (``keras.layers.Identity``).

    Parameters
    ----------
    name, input_shape, input_dim, trainable, dtype, batch_input_shape, activity_regularizer : optional
        Base layer arguments (see ``Layer``).
    **kwargs
        Any other keyword argument is an error.
    """

    def forward(self, x, training, ws):
        return x

    def backward(self, dy, ws, need_dx=True):
        return dy if need_dx else None

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
        return dict(kind="reshape")
