"""Merge layers (Keras 3's keras.layers.merging): Add, Subtract, Multiply,
Average, Maximum, Minimum, Concatenate and Dot.

They are multi-input layers (``_multi_input = True``, protocol in
layers/base.py and the graph contract): ``build`` / ``compute_output_shape``
take a LIST of per-sample shapes, ``forward`` a list of arrays, and
``backward`` returns one dx per input.  The dx arrays never alias each other:
at most one of them is ``dy`` itself (an input whose shape is the output's,
for the element-wise merges), the others are workspace arrays — the executor
sums fan-out gradients and layers may overwrite their dy in place.

Shapes follow Keras: an element-wise merge takes at least one input (Keras 3
accepts a list of one; Subtract and Dot take exactly two); per-sample shapes
are aligned on the right (an input of lower rank is read as if expanded right
after the batch axis) and must match or be 1 where they differ; an input's
gradient is summed over the axes it was broadcast along.  Maximum / Minimum
send the gradient, on ties, to the FIRST input holding the extreme (the
pairwise left-to-right fold of TensorFlow's maximum gradient; torch would
split it evenly).  Concatenate's and Dot's axes count the batch axis, as in
Keras (axis 1 is the first per-sample axis); the batch axis itself is
refused.  All compute goes through the ops pairs merge_forward/backward,
concat_forward/backward, dot_forward/backward and l2_normalize_forward/backward.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .base import Layer, _as_shape

__all__ = ["add", "subtract", "multiply", "average", "maximum", "minimum", "concatenate",
           "dot", "Merge", "Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum",
           "Concatenate", "Dot"]

#: keras.backend.epsilon(): the clamp of Dot(normalize=True)'s inverse norm
_EPSILON = 1e-7


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


class Merge(Layer):
    """Base class of the merge layers.

    Builds from a list of shapes, checks the inputs, and runs the element-wise
    merges named by ``_kind`` (an ``ops.merge_forward`` kind).

    Parameters
    ----------
    name, input_shape, input_dim, trainable, dtype, batch_input_shape, activity_regularizer : optional
        Base layer arguments (see ``Layer``).
    **kwargs
        Any other keyword argument is an error.
    """

    _multi_input = True
    _kind: Any = None     # merge_forward kind of the element-wise merges
    _n_inputs: Any = None  # exact number of inputs, or None for "at least one"

    # ------------------------------------------------------------------ shapes
    def _what(self) -> str:
        return f"{type(self).__name__} layer {self.name!r}"

    def _shapes(self, input_shapes: Any) -> list:
        """Validate a list of per-sample shapes; return it as a list of tuples."""
        if (not isinstance(input_shapes, (list, tuple))
                or not all(isinstance(s, (list, tuple)) for s in input_shapes)):
            raise ValueError(f"{self._what()} should be called on a list of inputs; got input "
                             f"shape {input_shapes!r} (not a list of shapes)")
        if len(input_shapes) < 1:
            raise ValueError(f"{self._what()} should be called on a list of at least 1 input; "
                             "got 0 inputs")
        if self._n_inputs is not None and len(input_shapes) != self._n_inputs:
            raise ValueError(f"{self._what()} should be called on exactly {self._n_inputs} "
                             f"inputs; got {len(input_shapes)} with shapes "
                             f"{[tuple(s) for s in input_shapes]}")
        return [_as_shape(s, f"{self._what()}: input shape {i}")
                for i, s in enumerate(input_shapes)]

    def compute_output_shape(self, input_shapes: Any) -> tuple:
        """The element-wise merge's shape: right-aligned, dims equal or 1."""
        shapes = self._shapes(input_shapes)
        out = shapes[0]
        for i, s in enumerate(shapes[1:], 1):
            a, b = (out, s) if len(out) >= len(s) else (s, out)
            b = (1,) * (len(a) - len(b)) + b
            merged = []
            for u, v in zip(a, b):
                if u != v and u != 1 and v != 1:
                    raise ValueError(
                        f"{self._what()}: input {i} of shape {s} cannot be merged with shape "
                        f"{out} (the merge of inputs 0..{i - 1}); per-sample shapes (batch axis "
                        f"excluded) must match, or be 1 where they differ. Input shapes: {shapes}")
                merged.append(max(u, v))
            out = tuple(merged)
        return out

    def build(self, input_shapes: Any) -> tuple:
        shapes = self._shapes(input_shapes)
        out = tuple(self.compute_output_shape(shapes))
        self.input_shape = shapes
        self.output_shape = out
        self.built = True
        return out

    def _check_inputs(self, xs: Any) -> int:
        """The batch size of the list `xs`, after checking it against the build."""
        if not isinstance(xs, (list, tuple)) or len(xs) != len(self.input_shape):
            got = f"{len(xs)} inputs" if isinstance(xs, (list, tuple)) else type(xs).__name__
            raise ValueError(f"{self._what()} expects a list of {len(self.input_shape)} arrays, "
                             f"got {got}")
        n = xs[0].shape[0] if xs[0].ndim else -1
        if any(x.shape != (n,) + s for x, s in zip(xs, self.input_shape)):
            raise ValueError(f"{self._what()} was built for per-sample shapes {self.input_shape} "
                             f"with one batch size; got arrays of shapes {[x.shape for x in xs]}")
        return n

    # ------------------------------------------------------------------ compute
    def forward(self, xs, training, ws):
        n = self._check_inputs(xs)
        y = ws.buf("y", (n,) + self.output_shape, xs[0].dtype)
        self.ops.merge_forward(self._kind, xs, y)
        ws.xs = xs
        ws.y = y
        return y

    def backward(self, dy, ws, need_dx=True):
        xs = ws.xs
        if not need_dx:
            return [None] * len(xs)
        # dy itself serves the first input of the output's shape (no buffer, no copy)
        alias = next((i for i, s in enumerate(self.input_shape) if s == self.output_shape), None)
        dxs = [dy if i == alias else ws.buf(f"dx{i}", x.shape, x.dtype)
               for i, x in enumerate(xs)]
        self.ops.merge_backward(self._kind, dy, xs, ws.y, dxs)
        return dxs

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
        if self._kind is None:
            raise ctx.unsupported(f"{self._what()} has no C path")
        if any(tuple(s) != tuple(self.output_shape) for s in self.input_shape):
            raise ctx.unsupported(f"{self._what()}: a merge that broadcasts (input shapes "
                                  f"{self.input_shape}) has no C path")
        return dict(kind="merge", op=ctx.merge_op(self._kind))


class Add(Merge):
    """Add the inputs element-wise (``keras.layers.Add``).

    Called on a list of tensors of the same shape. The layer takes the
    base layer arguments only.

    Parameters
    ----------
    name, input_shape, input_dim, trainable, dtype, batch_input_shape, activity_regularizer : optional
        Base layer arguments (see ``Layer``).
    **kwargs
        Any other keyword argument is an error.
    """
    _kind = "add"


class Subtract(Merge):
    """Subtract the second input from the first (``keras.layers.Subtract``).

    It takes exactly two inputs.

    Called on a list of tensors of the same shape. The layer takes the
    base layer arguments only.

    Parameters
    ----------
    name, input_shape, input_dim, trainable, dtype, batch_input_shape, activity_regularizer : optional
        Base layer arguments (see ``Layer``).
    **kwargs
        Any other keyword argument is an error.
    """
    _kind = "subtract"
    _n_inputs = 2


class Multiply(Merge):
    """Multiply the inputs element-wise (``keras.layers.Multiply``).

    Called on a list of tensors of the same shape. The layer takes the
    base layer arguments only.

    Parameters
    ----------
    name, input_shape, input_dim, trainable, dtype, batch_input_shape, activity_regularizer : optional
        Base layer arguments (see ``Layer``).
    **kwargs
        Any other keyword argument is an error.
    """
    _kind = "multiply"


class Average(Merge):
    """Average the inputs element-wise (``keras.layers.Average``).

    Called on a list of tensors of the same shape. The layer takes the
    base layer arguments only.

    Parameters
    ----------
    name, input_shape, input_dim, trainable, dtype, batch_input_shape, activity_regularizer : optional
        Base layer arguments (see ``Layer``).
    **kwargs
        Any other keyword argument is an error.
    """
    _kind = "average"


class Maximum(Merge):
    """Take the element-wise maximum of the inputs (``keras.layers.Maximum``).

    On ties the gradient goes to the first input holding the maximum.

    Called on a list of tensors of the same shape. The layer takes the
    base layer arguments only.

    Parameters
    ----------
    name, input_shape, input_dim, trainable, dtype, batch_input_shape, activity_regularizer : optional
        Base layer arguments (see ``Layer``).
    **kwargs
        Any other keyword argument is an error.
    """
    _kind = "maximum"


class Minimum(Merge):
    """Take the element-wise minimum of the inputs (``keras.layers.Minimum``).

    On ties the gradient goes to the first input holding the minimum.

    Called on a list of tensors of the same shape. The layer takes the
    base layer arguments only.

    Parameters
    ----------
    name, input_shape, input_dim, trainable, dtype, batch_input_shape, activity_regularizer : optional
        Base layer arguments (see ``Layer``).
    **kwargs
        Any other keyword argument is an error.
    """
    _kind = "minimum"


class Concatenate(Merge):
    """Join the inputs along an axis (``keras.layers.Concatenate``).

    Parameters
    ----------
    axis : int, default -1
        The axis, counting the batch axis: -1 is the last, 1 the first
        per-sample axis; the batch axis (0) is refused. The other dimensions
        must match exactly.
    **kwargs
        Base layer arguments (``name``, ``input_shape``, ``trainable``, ...;
        see ``Layer``).

    Raises
    ------
    TypeError
        When ``axis`` is not an integer.
    """

    def __init__(self, axis: Any = -1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not _is_int(axis):
            raise TypeError(f"{self._what()}: axis must be an integer, got {axis!r}")
        if axis == 0:
            raise ValueError(f"{self._what()}: axis=0 is the batch axis; Concatenate joins "
                             "along a per-sample axis (1, 2, ... or negative)")
        self.axis = int(axis)

    def _full_axis(self, rank: int) -> int:
        """self.axis as a non-negative axis of the (batch, ...) arrays."""
        full = rank + 1
        if not -full <= self.axis < full or self.axis % full == 0:
            raise ValueError(f"{self._what()}: axis {self.axis} is not a per-sample axis of "
                             f"inputs of rank {full} (batch axis included)")
        return self.axis % full

    def compute_output_shape(self, input_shapes):
        shapes = self._shapes(input_shapes)
        rank = len(shapes[0])
        if rank == 0 or any(len(s) != rank for s in shapes):
            raise ValueError(f"{self._what()} requires inputs of one rank >= 1 with matching "
                             f"shapes except for the concatenation axis; got per-sample shapes "
                             f"{shapes} (batch axis excluded)")
        k = self._full_axis(rank) - 1
        if any(s[:k] + s[k + 1:] != shapes[0][:k] + shapes[0][k + 1:] for s in shapes):
            raise ValueError(f"{self._what()} requires inputs with matching shapes except for "
                             f"the concatenation axis {self.axis}; got per-sample shapes "
                             f"{shapes} (batch axis excluded)")
        out = list(shapes[0])
        out[k] = sum(s[k] for s in shapes)
        return tuple(out)

    def forward(self, xs, training, ws):
        n = self._check_inputs(xs)
        y = ws.buf("y", (n,) + self.output_shape, xs[0].dtype)
        self.ops.concat_forward(xs, self._full_axis(len(self.output_shape)), y)
        ws.xs = xs
        return y

    def backward(self, dy, ws, need_dx=True):
        xs = ws.xs
        if not need_dx:
            return [None] * len(xs)
        axis = self._full_axis(len(self.output_shape))
        dxs = [ws.buf(f"dx{i}", x.shape, x.dtype) for i, x in enumerate(xs)]
        self.ops.concat_backward(dy, axis, [s[axis - 1] for s in self.input_shape], dxs)
        return dxs

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
        return dict(kind="concat", axis=self._full_axis(len(self.output_shape)) - 1)

    def get_config(self):
        cfg = super().get_config()
        cfg["axis"] = self.axis
        return cfg

    def describe(self):
        d = super().describe()
        d["axis"] = self._full_axis(len(self.output_shape)) if self.built else self.axis
        return d


class Dot(Merge):
    """Batch dot product of two inputs (``keras.layers.Dot``).

    Contracts axis ``axes[0]`` of the first input with axis ``axes[1]`` of the
    second. The output holds the first input's free axes, then the second's;
    ``(1,)`` when none is left.

    Parameters
    ----------
    axes : int or tuple of two int
        The contracted axes (an int: the same axis of both). Axes count the
        batch axis, which cannot be contracted.
    normalize : bool, default False
        L2-normalize each input along its dot axis first (the inverse norm
        clamped at ``1 / epsilon``, as ``keras.ops.normalize``), so the output
        is the cosine similarity.
    **kwargs
        Base layer arguments (``name``, ``input_shape``, ``trainable``, ...;
        see ``Layer``).

    Raises
    ------
    TypeError
        When ``axes`` is not an int or a list of two ints.
    ValueError
        When ``axes`` has the wrong length or non-integer entries.
    """

    _n_inputs = 2

    def __init__(self, axes: Any, normalize: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not _is_int(axes):
            if not isinstance(axes, (list, tuple)):
                raise TypeError(f"{self._what()}: axes must be an int or a list of two ints, "
                                f"got {axes!r}")
            if len(axes) != 2:
                raise ValueError(f"{self._what()}: axes must contain two elements, got {axes!r}")
            if not all(_is_int(a) for a in axes):
                raise ValueError(f"{self._what()}: axes must be integers, got {axes!r}")
            axes = (int(axes[0]), int(axes[1]))
        else:
            axes = int(axes)
        self.axes = axes
        self.normalize = bool(normalize)

    def _full_axes(self, shapes: Any) -> tuple:
        """The two contracted axes as non-negative axes of the (batch, ...) arrays."""
        pair = (self.axes, self.axes) if _is_int(self.axes) else self.axes
        out = []
        for a, s in zip(pair, shapes):
            full = len(s) + 1
            if not -full <= a < full or a % full == 0:
                raise ValueError(f"{self._what()}: axes {self.axes} do not name a per-sample "
                                 f"axis of both inputs (per-sample shapes {shapes}; axes count "
                                 "the batch axis, which cannot be contracted)")
            out.append(a % full)
        return tuple(out)

    def compute_output_shape(self, input_shapes):
        shapes = self._shapes(input_shapes)
        s1, s2 = shapes
        a0, a1 = self._full_axes(shapes)
        if s1[a0 - 1] != s2[a1 - 1]:
            raise ValueError(f"{self._what()}: incompatible input shapes: dim {s1[a0 - 1]} at "
                             f"axis {a0} of {s1} != dim {s2[a1 - 1]} at axis {a1} of {s2} "
                             "(per-sample shapes; axes count the batch axis)")
        rest = s1[:a0 - 1] + s1[a0:] + s2[:a1 - 1] + s2[a1:]
        return rest or (1,)

    def forward(self, xs, training, ws):
        n = self._check_inputs(xs)
        axes = self._full_axes(self.input_shape)
        ops = self.ops
        us = list(xs)
        if self.normalize:
            invs = []
            for i, (x, a) in enumerate(zip(xs, axes)):
                u = ws.buf(f"u{i}", x.shape, x.dtype)
                inv = ws.buf(f"inv{i}", x.shape[:a] + (1,) + x.shape[a + 1:], x.dtype)
                ops.l2_normalize_forward(x, a, _EPSILON, u, inv)
                us[i] = u
                invs.append(inv)
            ws.invs = invs
        y = ws.buf("y", (n,) + self.output_shape, xs[0].dtype)
        ops.dot_forward(us[0], us[1], axes, y)
        ws.us = us
        return y

    def backward(self, dy, ws, need_dx=True):
        if not need_dx:
            return [None, None]
        u1, u2 = ws.us
        axes = self._full_axes(self.input_shape)
        dx1 = ws.buf("dx0", u1.shape, u1.dtype)
        dx2 = ws.buf("dx1", u2.shape, u2.dtype)
        self.ops.dot_backward(dy, u1, u2, axes, dx1, dx2)
        if self.normalize:
            for dx, u, inv, a in zip((dx1, dx2), ws.us, ws.invs, axes):
                self.ops.l2_normalize_backward(dx, u, inv, a, _EPSILON, dx)
        return [dx1, dx2]

    def get_config(self):
        cfg = super().get_config()
        cfg.update(axes=self.axes if _is_int(self.axes) else list(self.axes),
                   normalize=self.normalize)
        return cfg

    def describe(self):
        d = super().describe()
        d.update(axes=self._full_axes(self.input_shape) if self.built else self.axes,
                 normalize=self.normalize)
        return d


# ---------------------------------------------------------------------------- functional forms
# keras.layers.add(inputs, **kwargs) etc.: make the layer and call it at once.
def add(inputs: Any, **kwargs: Any) -> Any:
    """Apply a ``Add`` layer to a list of tensors (functional shortcut).

    Parameters
    ----------
    inputs : list of tensors
        The inputs.
    **kwargs
        Arguments of the ``Add`` layer.

    Returns
    -------
    ndarray or SymbolicTensor
        The merged tensor.
    """
    return Add(**kwargs)(inputs)


def subtract(inputs: Any, **kwargs: Any) -> Any:
    """Apply a ``Subtract`` layer to a list of tensors (functional shortcut).

    Parameters
    ----------
    inputs : list of tensors
        The inputs.
    **kwargs
        Arguments of the ``Subtract`` layer.

    Returns
    -------
    ndarray or SymbolicTensor
        The merged tensor.
    """
    return Subtract(**kwargs)(inputs)


def multiply(inputs: Any, **kwargs: Any) -> Any:
    """Apply a ``Multiply`` layer to a list of tensors (functional shortcut).

    Parameters
    ----------
    inputs : list of tensors
        The inputs.
    **kwargs
        Arguments of the ``Multiply`` layer.

    Returns
    -------
    ndarray or SymbolicTensor
        The merged tensor.
    """
    return Multiply(**kwargs)(inputs)


def average(inputs: Any, **kwargs: Any) -> Any:
    """Apply a ``Average`` layer to a list of tensors (functional shortcut).

    Parameters
    ----------
    inputs : list of tensors
        The inputs.
    **kwargs
        Arguments of the ``Average`` layer.

    Returns
    -------
    ndarray or SymbolicTensor
        The merged tensor.
    """
    return Average(**kwargs)(inputs)


def maximum(inputs: Any, **kwargs: Any) -> Any:
    """Apply a ``Maximum`` layer to a list of tensors (functional shortcut).

    Parameters
    ----------
    inputs : list of tensors
        The inputs.
    **kwargs
        Arguments of the ``Maximum`` layer.

    Returns
    -------
    ndarray or SymbolicTensor
        The merged tensor.
    """
    return Maximum(**kwargs)(inputs)


def minimum(inputs: Any, **kwargs: Any) -> Any:
    """Apply a ``Minimum`` layer to a list of tensors (functional shortcut).

    Parameters
    ----------
    inputs : list of tensors
        The inputs.
    **kwargs
        Arguments of the ``Minimum`` layer.

    Returns
    -------
    ndarray or SymbolicTensor
        The merged tensor.
    """
    return Minimum(**kwargs)(inputs)


def concatenate(inputs: Any, axis: int = -1, **kwargs: Any) -> Any:
    """Apply a ``Concatenate`` layer to a list of tensors (functional shortcut).

    Parameters
    ----------
    inputs : list of tensors
        The inputs.
    axis : int, default -1
        The axis to join along (counting the batch axis).
    **kwargs
        Arguments of the ``Concatenate`` layer.

    Returns
    -------
    ndarray or SymbolicTensor
        The joined tensor.
    """
    return Concatenate(axis=axis, **kwargs)(inputs)


def dot(inputs: Any, axes: Any = -1, normalize: bool = False, **kwargs: Any) -> Any:
    """Apply a ``Dot`` layer to two tensors (functional shortcut).

    Parameters
    ----------
    inputs : list of two tensors
        The inputs.
    axes : int or tuple of two int, default -1
        The contracted axes (counting the batch axis).
    normalize : bool, default False
        Compute the cosine similarity.
    **kwargs
        Arguments of the ``Dot`` layer.

    Returns
    -------
    ndarray or SymbolicTensor
        The dot product.
    """
    return Dot(axes=axes, normalize=normalize, **kwargs)(inputs)
