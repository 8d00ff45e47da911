"""Flat parameter / gradient buffers and the views layers hold into them.

`ParamStore(layers)` lays out every trainable parameter of every layer end to
end in ONE contiguous float32 array (`params`), with gradients in a twin
array (`grads`) at the same offsets; each layer is bound to views into both.
Non-trainable state (BatchNorm moving statistics) lives in one small array
per entry (`state`), outside the trainable buffer.  The optimizer runs one
update call over the flat buffers; `segments` lists the trainable ranges when
some layers are frozen (trainable=False).

Alignment: both buffers start on a 64-byte boundary and every parameter
array starts at a multiple of 16 floats (the gaps are zeros that stay zero:
their gradient is always 0). A weight matrix that starts mid cache line makes
every vector load of its rows straddle two lines; the single-row dense
forward of predict_on_batch (1x784 . 784x128) took 6.4 us instead of 3.6.
"""
from __future__ import annotations

import numpy as np


#: parameter arrays start at multiples of this many floats (64 bytes)
ALIGN_FLOATS = 16


def _align_up(n: int) -> int:
    return -(-n // ALIGN_FLOATS) * ALIGN_FLOATS


def aligned_zeros(n: int, dtype=np.float32) -> np.ndarray:
    """A zero-filled 1-D array whose data starts on a 64-byte boundary."""
    item = np.dtype(dtype).itemsize
    raw = np.zeros(n + 64 // item, dtype=dtype)
    start = (-(raw.ctypes.data // item)) % (64 // item)
    return raw[start:start + n]


class ParamEntry:
    __slots__ = ("layer", "spec", "offset", "size", "param", "grad")

    def __init__(self, layer, spec, offset, size):
        self.layer, self.spec, self.offset, self.size = layer, spec, offset, size
        self.param = self.grad = None


class ParamStore:
    """The model's memory for parameters, gradients and layer state.

    Layers already bound to another model's store keep their weights: when
    every layer of the new model lives in ONE existing store (a sub-model such
    as ``fg.Model(model.input, model.get_layer("hidden").output)``), the new
    store is a view of that one (same flat buffers, so the weights are
    shared; `segments` limits the optimizer to its own arrays); otherwise a
    fresh buffer is laid out and already-bound layers' values are copied in
    by `initialize()` (a new model over trained layers starts from them)."""

    def __new__(cls, layers, fresh=False):
        layers = list(layers)
        if not fresh and layers:
            stores = {id(getattr(l, "_param_store", None)): getattr(l, "_param_store", None)
                      for l in layers}
            if len(stores) == 1:
                parent = next(iter(stores.values()))
                if parent is not None and set(map(id, layers)) < set(map(id, parent.layers)):
                    view = object.__new__(SubParamStore)
                    view._init_view(parent, layers)
                    return view
        return object.__new__(cls)

    def __init__(self, layers, fresh=False):
        self.layers = list(layers)
        self.parent = None
        self._previous = {id(l): [np.array(w, copy=True) for w in l.weights]
                          for l in self.layers if getattr(l, "_param_store", None) is not None}
        self.entries = []
        self.state_entries = []       # (layer, spec, array)
        off = 0
        for layer in self.layers:
            for spec in layer.param_specs():
                size = int(np.prod(spec.shape))
                off = _align_up(off)
                self.entries.append(ParamEntry(layer, spec, off, size))
                off += size
        self.size = _align_up(off)
        self.params = aligned_zeros(self.size)
        self.grads = aligned_zeros(self.size)
        for e in self.entries:
            e.param = self.params[e.offset:e.offset + e.size].reshape(e.spec.shape)
            e.grad = self.grads[e.offset:e.offset + e.size].reshape(e.spec.shape)
        for layer in self.layers:
            p, g, s = {}, {}, {}
            layer.offsets = {}
            for e in self.entries:
                if e.layer is layer:
                    p[e.spec.name] = e.param
                    g[e.spec.name] = e.grad
                    layer.offsets[e.spec.name] = e.offset
            for spec in layer.state_specs():
                arr = np.zeros(spec.shape, dtype=np.float32)
                s[spec.name] = arr
                self.state_entries.append((layer, spec, arr))
            layer.bind(p, g, s)
            layer._param_store = self
        self.refresh_trainable()

    def initialize(self) -> None:
        """Fill every parameter / state array from its initializer, in layer
        order; layers that had weights before (another model's) keep them."""
        for layer in self.layers:
            prev = self._previous.get(id(layer))
            if prev is not None and [w.shape for w in prev] == [w.shape for w in layer.weights]:
                for dst, src in zip(layer.weights, prev):
                    dst[...] = src
                continue
            for e in self.entries:
                if e.layer is layer:
                    e.param[...] = _init(e.spec, layer)
            for lay, spec, arr in self.state_entries:
                if lay is layer:
                    arr[...] = _init(spec, layer)
        self._previous = {}

    def refresh_trainable(self) -> None:
        """Recompute the trainable segments / views (after layer.trainable changes)."""
        self.trainable_flags = tuple(l.trainable for l in self.layers)
        segs = []
        for e in self.entries:
            if not e.layer.trainable or e.size == 0:
                continue
            end = _align_up(e.offset + e.size)     # the zero padding goes with its entry
            if segs and segs[-1][1] == e.offset:
                segs[-1][1] = end
            else:
                segs.append([e.offset, end])
        segs = tuple((s, t) for s, t in segs)
        self.all_trainable = segs == ((0, self.size),) or self.size == 0
        self.segments = None if self.all_trainable else segs
        self.frozen = [e for e in self.entries if not e.layer.trainable]
        self.trainable_grad_views = [e.grad for e in self.entries if e.layer.trainable]
        self.regularized = [(e.spec.regularizer, e.param, e.grad) for e in self.entries
                            if e.spec.regularizer is not None and e.layer.trainable]
        self._scratch = (np.empty(max([e.size for e in self.entries if e.spec.regularizer is not None],
                                      default=0), dtype=np.float32))

    def regularization_penalty(self, ops) -> float:
        total = 0.0
        for reg, p, _ in self.regularized:
            total += reg.penalty(ops, p, self._scratch[:p.size].reshape(p.shape))
        return total

    def add_regularization_gradients(self) -> None:
        for reg, p, g in self.regularized:
            reg.add_gradient(p, g, self._scratch[:p.size].reshape(p.shape))

    def zero_frozen_grads(self) -> None:
        for e in self.frozen:
            e.grad[...] = 0.0

    # ---------------------------------------------------------------- weights (Keras order)
    def weight_arrays(self) -> list:
        """The live arrays in Keras order: per layer its params, then its state."""
        out = []
        for layer in self.layers:
            out.extend(e.param for e in self.entries if e.layer is layer)
            out.extend(arr for lay, _, arr in self.state_entries if lay is layer)
        return out

    def weight_names(self) -> list:
        out = []
        for layer in self.layers:
            out.extend(f"{layer.name}/{e.spec.name}" for e in self.entries if e.layer is layer)
            out.extend(f"{layer.name}/{spec.name}" for lay, spec, _ in self.state_entries
                       if lay is layer)
        return out


def _init(spec, layer):
    try:
        v = spec.initializer(tuple(spec.shape))
    except TypeError:
        v = spec.initializer(tuple(spec.shape), np.float32)
    v = np.asarray(v, dtype=np.float32)
    if v.shape != tuple(spec.shape):
        raise ValueError(f"{layer.name}: initializer of {spec.name!r} returned shape {v.shape}, "
                         f"expected {tuple(spec.shape)}")
    return v


class SubParamStore(ParamStore):
    """A view of a parent store for a model over a subset of its layers: the
    same flat buffers and state arrays (weights shared), its own entries;
    the optimizer updates only its segments."""

    def __init__(self, layers, fresh=False):
        pass                                   # set up by _init_view (from __new__)

    def _init_view(self, parent, layers):
        order = {id(l): i for i, l in enumerate(layers)}
        self.layers = list(layers)
        self.parent = parent
        self._previous = {}
        self.entries = [e for e in parent.entries if id(e.layer) in order]
        self.state_entries = [t for t in parent.state_entries if id(t[0]) in order]
        self.size = parent.size
        self.params = parent.params
        self.grads = parent.grads
        self.refresh_trainable()

    def initialize(self) -> None:
        """Nothing to do: the weights are the parent model's."""

    def refresh_trainable(self) -> None:
        super().refresh_trainable()
        if self.all_trainable and len(self.entries) != len(self.parent.entries):
            segs = []
            for e in self.entries:
                if e.layer.trainable and e.size:
                    end = _align_up(e.offset + e.size)
                    if segs and segs[-1][1] == e.offset:
                        segs[-1][1] = end
                    else:
                        segs.append([e.offset, end])
            self.all_trainable = False
            self.segments = tuple((a, b) for a, b in segs)
        if not self.all_trainable and self.segments == ():
            self.segments = ()
