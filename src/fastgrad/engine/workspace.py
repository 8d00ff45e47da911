"""Per-layer scratch memory, allocated once per batch size and reused.

The model keeps one `Workspace` per (layer, batch size).  A layer asks for the
arrays it needs with ``ws.buf(name, shape)``: the first step with a given
batch size allocates, every later step gets the same array back (one dict
lookup), so a steady-state training step allocates nothing.  Anything else a
layer wants to remember between forward and backward (the input array, a
flag) goes into plain attributes: ``ws.x = x``.
"""
from __future__ import annotations

from typing import Any

import numpy as np

_F32 = np.dtype(np.float32)


class Workspace:
    """Named arrays of one layer for one batch size, plus free attributes."""

    def __init__(self):
        self._bufs = {}

    def buf(self, name: str, shape: Any, dtype: Any = _F32) -> np.ndarray:
        """Array `name` of `shape`/`dtype`, allocated on first request only.

        A request with a different shape or dtype under the same name
        reallocates (layers use distinct names for distinct shapes)."""
        a = self._bufs.get(name)
        if a is not None and a.shape == shape and a.dtype is dtype:
            return a                          # the per-step path: no allocation
        return self._alloc(name, shape, dtype, np.empty)

    def zeros(self, name: str, shape: Any, dtype: Any = _F32) -> np.ndarray:
        """Like buf(), but zero-filled when (re)allocated."""
        a = self._bufs.get(name)
        if a is not None and a.shape == shape and a.dtype is dtype:
            return a
        return self._alloc(name, shape, dtype, np.zeros)

    def _alloc(self, name, shape, dtype, make):
        dt = np.dtype(dtype)
        shape = tuple(shape) if not isinstance(shape, (int, np.integer)) else (int(shape),)
        a = self._bufs.get(name)
        if a is not None and a.shape == shape and a.dtype == dt:
            return a                          # same array, dtype given as a type object
        a = make(shape, dtype=dt)
        self._bufs[name] = a
        return a

    def drop_refs(self) -> None:
        """Forget the free attributes (saved inputs such as ``ws.x``), keeping the
        arrays: a finished fit/predict must not keep the caller's data alive."""
        bufs = self._bufs
        self.__dict__.clear()
        self._bufs = bufs

    def nbytes(self) -> int:
        return sum(a.nbytes for a in self._bufs.values())


class WorkspaceCache:
    """One list of per-layer Workspaces per batch size.

    A handful at most: the training batch, the last partial batch, the
    evaluation batch.

    Parameters
    ----------
    n_layers : int
        Workspaces per list (one per graph node).
    max_sizes : int, default 8
        Batch sizes kept; the oldest is dropped beyond it.
    """

    def __init__(self, n_layers: int, max_sizes: int = 8):
        self.n_layers = n_layers
        self.max_sizes = max_sizes
        self._by_batch: dict = {}

    def get(self, batch: int) -> list:
        wss = self._by_batch.get(batch)
        if wss is None:
            if len(self._by_batch) >= self.max_sizes:
                # keep memory bounded for callers that use many batch sizes
                self._by_batch.pop(next(iter(self._by_batch)))
            wss = [Workspace() for _ in range(self.n_layers + 1)]  # +1: the model's own (loss, targets)
            self._by_batch[batch] = wss
        return wss

    def drop_refs(self) -> None:
        for wss in self._by_batch.values():
            for ws in wss:
                ws.drop_refs()

    def clear(self) -> None:
        self._by_batch.clear()
