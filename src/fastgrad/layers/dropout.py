"""Dropout: inverted dropout driven by a counter-based random stream.

`ops.dropout(x, rate, seed, offset)` keeps element i iff hash(seed, offset + i)
clears `rate` and scales kept values by 1 / (1 - rate). The mask is therefore a
pure function of (seed, offset, i): the same on every backend and thread count,
and reproducible without any generator state beyond two integers. The layer
owns its stream: `seed` (from the constructor, or drawn from the library
generator when the model builds it) and `offset`, which advances by the number
of elements after every training forward so successive batches get fresh
masks. Saving a model stores (seed, offset) so a resumed run continues the
same stream (see fastgrad.saving).

In inference (training=False) or with rate 0 the layer is the identity and
costs nothing (no copy).
"""
from __future__ import annotations

from typing import Any

import numbers

import numpy as np

from .base import Layer

__all__ = ["Dropout"]


class Dropout(Layer):
    """Randomly zero a fraction of the inputs during training.

    The kept values are scaled by ``1 / (1 - rate)`` (inverted dropout), so
    inference (``training=False``) is the identity. The mask comes from a
    counter-based random stream: the same on every backend and thread count.

    Parameters
    ----------
    rate : float
        Fraction of the inputs to drop, in ``[0, 1)``.
    noise_shape : None
        Not supported; must be None.
    seed : int, optional
        Seed of the mask stream (default: drawn from the library's generator
        when the model is built).
    name : str, optional
        Layer name.
    **kwargs
        Base layer arguments (``name``, ``input_shape``, ``trainable``, ...;
        see ``Layer``).

    Raises
    ------
    ValueError
        For a rate outside ``[0, 1)``, a ``noise_shape`` or an invalid seed.
    """

    supports_masking = True

    def __init__(self, rate: Any, noise_shape: Any = None, seed: Any = None,
                 name: str | None = None, **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)
        if isinstance(rate, bool) or not isinstance(rate, numbers.Real) or not (0.0 <= float(rate) < 1.0):
            raise ValueError(f"Dropout {self.name}: rate must be a number in [0, 1), got {rate!r}")
        if noise_shape is not None:
            raise ValueError(f"Dropout {self.name}: noise_shape is not supported (got {noise_shape!r}); "
                             "the mask is drawn per element")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)
                                 or not 0 <= int(seed) < 2**63):
            raise ValueError(f"Dropout {self.name}: seed must be None or an integer in [0, 2**63), got {seed!r}")
        self.rate = float(rate)
        self.seed = None if seed is None else int(seed)
        self._stream_seed = self.seed    # the seed actually used (drawn at build when seed=None)
        self._offset = 0                 # elements consumed from the stream so far

    # ------------------------------------------------------------------ rng stream
    def reset_rng(self, seed: int) -> None:
        """Called by the model at build: start a fresh stream (the constructor's
        seed wins over the model-provided one, so Dropout(seed=s) is reproducible alone)."""
        self._stream_seed = self.seed if self.seed is not None else int(seed)
        self._offset = 0

    def get_rng_state(self) -> dict:
        """Return the position of the mask stream, for an exact resume after save and load.

        Returns
        -------
        dict
            ``{"seed": int or None, "offset": int}``.
        """
        return {"seed": self._stream_seed, "offset": self._offset}

    def set_rng_state(self, state: dict) -> None:
        """Restore the position of the mask stream.

        Parameters
        ----------
        state : dict
            The output of ``get_rng_state``.

        Raises
        ------
        ValueError
            For an invalid seed or offset.
        """
        seed, offset = state.get("seed"), state.get("offset", 0)
        if seed is not None and (not isinstance(seed, numbers.Integral) or not 0 <= int(seed) < 2**63):
            raise ValueError(f"Dropout {self.name}: invalid saved rng seed {seed!r}")
        if not isinstance(offset, numbers.Integral) or int(offset) < 0:
            raise ValueError(f"Dropout {self.name}: invalid saved rng offset {offset!r}")
        self._stream_seed = None if seed is None else int(seed)
        self._offset = int(offset)

    def _ensure_seed(self):
        if self._stream_seed is None:
            from .. import _config
            self._stream_seed = _config.next_seed()
        return self._stream_seed

    # ------------------------------------------------------------------ compute
    def forward(self, x, training, ws):
        if not training or self.rate == 0.0:
            ws.active = False
            return x
        seed = self._stream_seed if self._stream_seed is not None else self._ensure_seed()
        y = ws.buf("y", x.shape, x.dtype)
        mask = ws.buf("mask", x.shape, np.uint8)
        self.ops.dropout(x, self.rate, seed, self._offset, y, mask)
        self._offset += x.size
        ws.active = True
        ws.mask = mask
        return y

    def backward(self, dy, ws, need_dx=True):
        if not need_dx:
            return None
        if not getattr(ws, "active", False):
            return dy
        dx = ws.buf("dx", dy.shape, dy.dtype)
        self.ops.backprop_dropout(dy, ws.mask, self.rate, dx)
        return dx

    # ------------------------------------------------------------------ config
    def get_config(self):
        cfg = super().get_config()
        cfg.update(rate=self.rate, seed=self.seed)
        return cfg

    def describe(self):
        d = super().describe()
        d.update(rate=self.rate, seed=self._stream_seed, offset=self._offset)
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
        seed = self._stream_seed
        if ctx.training and self.rate > 0 and seed is None:
            seed = self._ensure_seed()
        return dict(kind="dropout", rate=self.rate, seed=int(seed or 0),
                    stream=ctx.stream(self) if self.rate > 0 else -1)
