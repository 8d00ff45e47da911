"""Embedding and Masking (Keras 3 semantics), the two layers that make masks.

Embedding(input_dim, output_dim, mask_zero=False): integer token ids of any
per-sample shape -> their rows of the `embeddings` table (input_dim,
output_dim). Ids reach the layer as integers (eager calls) or as exact float32
values (a model input that feeds only Embeddings accepts integer arrays and
carries them as float32, see engine/data.as_ids); either way they are checked
to be integers in [0, input_dim) with an error naming the layer and the first
offending id. With mask_zero=True the output carries the mask `ids != 0`.

Masking(mask_value=0.0): a time step whose features all equal mask_value is
masked (mask = any(x != mask_value, axis=-1)) and its output zeroed, as Keras.

Mask mechanics: docs/sequence.md, "Masks" (and layers/base.py).
"""
from __future__ import annotations

from typing import Any

import numbers

import numpy as np

from .. import initializers as _initializers
from .. import regularizers as _regularizers
from ..engine.graph import is_symbolic
from .base import Layer, ParamSpec, symbolic_mask

__all__ = ["Embedding", "Masking"]


class Embedding(Layer):
    """Turn integer ids into dense vectors.

    The output shape is ``input_shape + (output_dim,)``; ids must lie in
    ``[0, input_dim)``.

    Parameters
    ----------
    input_dim : int
        Size of the vocabulary (largest id + 1).
    output_dim : int
        Dimension of the vectors.
    embeddings_initializer : str, dict or callable, default "uniform"
        Initializer of the embedding matrix.
    embeddings_regularizer : str, dict or Regularizer, optional
        Penalty on the embedding matrix.
    embeddings_constraint : None
        Not supported; must be None.
    mask_zero : bool, default False
        Treat id 0 as padding: the output carries a mask that is False there
        (``input_dim`` must then count the padding id).
    weights : ndarray or list of one ndarray, optional
        Initial embedding matrix of shape ``(input_dim, output_dim)``.
    lora_rank : None
        Not supported; must be None.
    input_length : int, optional
        Keras 2 argument; accepted and unused.
    name : str, optional
        Layer name.
    **kwargs
        Base layer arguments (``name``, ``input_shape``, ``trainable``, ...;
        see ``Layer``).

    Raises
    ------
    ValueError
        For non-positive dimensions, a constraint or ``lora_rank``, or ids out of
        range at run time.
    TypeError
        At run time, for ids that are not integers.
    """

    _takes_ids = True

    def __init__(self, input_dim: Any, output_dim: Any, embeddings_initializer: Any = "uniform",
                 embeddings_regularizer: Any = None, embeddings_constraint: Any = None,
                 mask_zero: bool = False, weights: Any = None, lora_rank: Any = None,
                 input_length: Any = None, name: str | None = None, **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)
        c = f"Embedding {self.name}"
        for what, v in (("input_dim", input_dim), ("output_dim", output_dim)):
            if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v <= 0:
                raise ValueError(f"{c}: {what} must be a positive integer, got {v!r}")
        if embeddings_constraint is not None:
            raise ValueError(f"{c}: embeddings_constraint is not supported")
        if lora_rank is not None:
            raise ValueError(f"{c}: lora_rank is not supported")
        self.input_dim = int(input_dim)
        self.output_dim = int(output_dim)
        self.mask_zero = bool(mask_zero)
        self.input_length = input_length      # Keras 2 argument: accepted, unused
        self.embeddings_initializer = _initializers.get(embeddings_initializer,
                                                        f"{c}: embeddings_initializer")
        self.embeddings_regularizer = _regularizers.get(embeddings_regularizer,
                                                        f"{c}: embeddings_regularizer")
        self._initial_weights = weights

    def compute_output_shape(self, input_shape):
        return tuple(input_shape) + (self.output_dim,)

    def param_specs(self):
        init = self.embeddings_initializer
        if self._initial_weights is not None:
            w = np.asarray(self._initial_weights[0] if isinstance(self._initial_weights, (list, tuple))
                           else self._initial_weights, dtype=np.float32)
            if w.shape != (self.input_dim, self.output_dim):
                raise ValueError(f"Embedding {self.name}: weights of shape {w.shape}, expected "
                                 f"{(self.input_dim, self.output_dim)}")
            init = lambda shape, dtype=None, _w=w: _w.copy()   # noqa: E731
        return [ParamSpec("embeddings", (self.input_dim, self.output_dim), init,
                          self.embeddings_regularizer)]

    @property
    def embeddings(self):
        """The embedding matrix, shape ``(input_dim, output_dim)``."""
        return self.params["embeddings"]

    # ------------------------------------------------------------------ ids
    def _eager_inputs(self, inputs):
        a = np.asarray(inputs)
        if a.dtype.kind not in "iu":
            raise TypeError(f"Embedding layer {self.name!r}: token ids must be integers, got an "
                            f"array of dtype {a.dtype}")
        return np.ascontiguousarray(a, dtype=np.int64)

    def _ids(self, x):
        """x (integers, or exact float32 ids from a model input) -> checked intp ids."""
        if x.dtype.kind == "f":
            ids = x.astype(np.intp)
            bad = ids != x
            if bad.any():
                pos = tuple(int(i) for i in np.argwhere(bad)[0])
                raise ValueError(f"Embedding layer {self.name!r}: token ids must be integers, got "
                                 f"{x[pos]!r} at index {pos}")
        elif x.dtype.kind in "iu":
            ids = x.astype(np.intp, copy=False)
        else:
            raise TypeError(f"Embedding layer {self.name!r}: token ids must be integers, got dtype "
                            f"{x.dtype}")
        if ids.size:
            lo, hi = int(ids.min()), int(ids.max())
            if lo < 0 or hi >= self.input_dim:
                bad = (ids < 0) | (ids >= self.input_dim)
                pos = tuple(int(i) for i in np.argwhere(bad)[0])
                raise ValueError(f"Embedding layer {self.name!r}: token id {int(ids[pos])} at index "
                                 f"{pos} is outside [0, input_dim={self.input_dim})"
                                 + (" (negative ids are not allowed)" if ids[pos] < 0 else ""))
        return ids

    # ------------------------------------------------------------------ compute
    def compute_mask(self, inputs, mask=None):
        if not self.mask_zero:
            return None
        if is_symbolic(inputs):
            return symbolic_mask(inputs, inputs.shape)
        return np.asarray(inputs) != 0

    def forward(self, x, training, ws):
        ids = self._ids(x)
        table = self.params["embeddings"]
        y = ws.buf("y", ids.shape + (self.output_dim,), table.dtype)
        self.ops.embedding_forward(ids, table, y)
        ws.ids = ids
        ws.xshape = x.shape
        return y

    def backward(self, dy, ws, need_dx=True):
        g = self.grads.get("embeddings")
        if g is not None:
            self.ops.embedding_backward(ws.ids, dy, g)
        if not need_dx:
            return None
        return ws.zeros("dx", ws.xshape, dy.dtype)     # ids carry no gradient

    def get_config(self):
        cfg = super().get_config()
        cfg.update(input_dim=self.input_dim, output_dim=self.output_dim, mask_zero=self.mask_zero,
                   embeddings_initializer=_initializers.serialize(self.embeddings_initializer),
                   embeddings_regularizer=_regularizers.serialize(self.embeddings_regularizer))
        return cfg

    def describe(self):
        d = super().describe()
        d.update(input_dim=self.input_dim, output_dim=self.output_dim, mask_zero=self.mask_zero)
        return d


class Masking(Layer):
    """Mask the time steps whose features all equal ``mask_value``.

    The masked steps are also zeroed in the output; the mask is passed on to
    the layers that consume masks (recurrent layers, attention, pooling).

    Parameters
    ----------
    mask_value : float, default 0.0
        The value that marks a padded step.
    name : str, optional
        Layer name.
    **kwargs
        Base layer arguments (``name``, ``input_shape``, ``trainable``, ...;
        see ``Layer``).

    Raises
    ------
    ValueError
        When ``mask_value`` is not a number.
    """

    supports_masking = True

    def __init__(self, mask_value: Any = 0.0, name: str | None = None, **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)
        if isinstance(mask_value, bool) or not isinstance(mask_value, numbers.Real):
            raise ValueError(f"Masking {self.name}: mask_value must be a number, got {mask_value!r}")
        self.mask_value = float(mask_value)

    def compute_output_shape(self, input_shape):
        if len(input_shape) < 1:
            raise ValueError(f"Masking {self.name}: needs per-sample input of shape (..., features)")
        return tuple(input_shape)

    def compute_mask(self, inputs, mask=None):
        if is_symbolic(inputs):
            return symbolic_mask(inputs, inputs.shape[:-1])
        return np.any(inputs != inputs.dtype.type(self.mask_value), axis=-1)

    def forward(self, x, training, ws):
        keep = np.any(x != x.dtype.type(self.mask_value), axis=-1)
        y = ws.buf("y", x.shape, x.dtype)
        np.multiply(x, keep[..., None], out=y)
        ws.keep = keep
        return y

    def backward(self, dy, ws, need_dx=True):
        if not need_dx:
            return None
        dx = ws.buf("dx", dy.shape, dy.dtype)
        np.multiply(dy, ws.keep[..., None], out=dx)
        return dx

    def get_config(self):
        cfg = super().get_config()
        cfg["mask_value"] = self.mask_value
        return cfg
