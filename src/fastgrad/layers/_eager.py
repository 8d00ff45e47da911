"""Eager calls on arrays for layers that build themselves from their input.

`Layer.__call__` (layers/base.py) runs a BUILT single-input layer on an
array.  The merge and reshaping layers are also called unbuilt, as in Keras
(`Add()([a, b])`, `Reshape((2, 3))(x)`), so `EagerCall.__call__` builds them
from the per-sample shapes first.  It handles single- and multi-input layers
(`_multi_input`) in one method, meant to be folded into `Layer.__call__` once
that also handles symbolic tensors; anything that is not an array (or a list
of arrays for a multi-input layer) goes to `super().__call__`.
"""
from __future__ import annotations

import numbers

import numpy as np

__all__ = ["EagerCall"]


def _is_array_like(x) -> bool:
    return (isinstance(x, (np.ndarray, np.generic, numbers.Number, list, tuple))
            or hasattr(x, "__array__") or hasattr(x, "__array_interface__"))


class EagerCall:
    """Mixin (before Layer in the bases): eager `layer(array)` / `layer([arrays])`."""

    def __call__(self, inputs, training: bool = False):
        multi = getattr(self, "_multi_input", False)
        if multi:
            if isinstance(inputs, np.ndarray):
                raise ValueError(f"{type(self).__name__} layer {self.name!r} should be called on a "
                                 f"list of inputs; got one array of shape {inputs.shape}")
            if not isinstance(inputs, (list, tuple)) or not all(map(_is_array_like, inputs)):
                return super().__call__(inputs, training)
            xs = list(inputs)
        elif _is_array_like(inputs):
            xs = [inputs]
        else:
            return super().__call__(inputs, training)
        from ..engine.workspace import Workspace
        xs = [np.ascontiguousarray(x, dtype=np.float32) for x in xs]
        if any(x.ndim < 1 for x in xs):
            raise ValueError(f"{type(self).__name__} layer {self.name!r}: inputs need a batch "
                             f"axis; got shapes {[x.shape for x in xs]}")
        shapes = [x.shape[1:] for x in xs]
        shape = shapes if multi else shapes[0]
        if not self.built:
            self.build(shape)
        elif (list(shape) if multi else shape) != self.input_shape:
            raise ValueError(f"{type(self).__name__} layer {self.name!r} was built for input "
                             f"shape {self.input_shape}, called on {shape} (batch axis excluded)")
        y = self.forward(xs if multi else xs[0], training, Workspace())
        return np.array(y, copy=True)
