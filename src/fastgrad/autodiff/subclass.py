"""Subclassed models and eager model calls on a GradientTape.

A subclassed model (``class M(fg.Model)`` with layers in ``__init__`` and a
``call``) becomes a one-node graph: Input -> ``ModelCall``, a traced layer
whose call is the model's and whose sub-layers are the model's layer
attributes. fit / evaluate / predict / save then run it like any graph
model (on the Python executor).

``model(x, training=...)`` while a tape records runs the model's graph
through the Python executor's forward (the same float operations as fit)
and records one tape node per output whose backward is the executor's
backward into the flat gradient buffer; the gradients of
``model.trainable_weights`` are copies of their ranges of that buffer.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..engine.step import Step
from ..layers.base import Layer
from .core import Tensor, TracingError, Variable, record_on_tapes, _recording
from . import traced


class ModelCall(Layer):
    """The traced node of a subclassed model (its call, its layer attributes)."""

    _fg_model: Any        # set through __dict__ (attribute tracking skips it)

    def __init__(self, model):
        super().__init__(name=model.name)
        self.__dict__["_fg_model"] = model
        self.__dict__["_fg_internal"] = set(model.__dict__) | {"_fg_call_layer"}

    def call(self, inputs, training=None, mask=None):   # pragma: no cover - replaced below
        return self._fg_model.call(inputs)

    def _fg_owner(self):
        return self._fg_model

    def _fg_call_fn(self):
        return self._fg_model.call


def owner_items(layer):
    owner = layer._fg_owner()
    internal = layer.__dict__.get("_fg_internal", ())
    return [(k, v) for k, v in list(owner.__dict__.items()) if k not in internal]


# ---------------------------------------------------------------------------- variables
def entry_variable(e):
    layer, name = e.layer, e.spec.name
    while "/" in name and "_fg_subs" in layer.__dict__:
        subname, rest = name.split("/", 1)
        sub = next((l for l in layer.__dict__["_fg_subs"] if l.name == subname), None)
        if sub is None:
            break
        layer, name = sub, rest
    return traced.layer_variable(layer, name)


def store_variables(store):
    """The trainable entries' Variables (cached per store and trainable flags)."""
    flags = tuple(l.trainable for l in store.layers)
    c = store.__dict__.get("_fg_vars")
    if c is not None and c[0] == flags:
        return list(c[1])
    out = []
    for e in store.entries:
        if e.layer.trainable:
            v = entry_variable(e)
            v.__dict__["_fg_store"] = store
            out.append(v)
    store.__dict__["_fg_vars"] = (flags, tuple(out), tuple(v._key for v in out))
    return out


# ---------------------------------------------------------------------------- tape calls
class TapeStep(Step):
    """The Python executor with every output live (a tape may differentiate any);
    with input_grads, the gradients of the model inputs are computed too."""

    def __init__(self, model, input_grads=False):
        super().__init__(model)
        g = self.graph
        self.input_grads = input_grads
        if input_grads:
            self.need = list(self.need)
            for i in range(g.n_inputs):
                self.need[i] = True
            for n in self.nodes:
                if any(self.need[s] for s in n.in_slots):
                    self.need[n.out_slot] = True
            self.need_dx = [any(self.need[s] for s in n.in_slots) for n in self.nodes]
        self.loss_index = list(range(len(g.output_slots)))
        n_slots = len(g.slot_shapes)
        live = [False] * n_slots
        for s in g.output_slots:
            live[s] = True
        for n in reversed(self.nodes):
            if live[n.out_slot]:
                for s in n.in_slots:
                    live[s] = True
        self.run_backward = [live[n.out_slot] and self.need[n.out_slot] for n in self.nodes]
        ran = {id(n.layer) for n, r in zip(self.nodes, self.run_backward) if r}
        self.dead = [e for e in self.store.entries if id(e.layer) not in ran]


def _tape_step(model, input_grads=False):
    key = "_fg_tape_step_dx" if input_grads else "_fg_tape_step"
    st = model.__dict__.get(key)
    if st is None or st.graph is not model._graph or st.store is not model._store:
        st = model.__dict__[key] = TapeStep(model, input_grads)
    return st


def _unsplit(model):
    """Layers emitting logits for a fused loss (another fit) emit their activation again."""
    from .. import models as _models
    changed = False
    for layer in model._graph.layers:
        if getattr(layer, "_fused_activation", None) is not None:
            layer.merge_output_activation()
            changed = True
    if changed:
        _models._FUSION_EPOCH[0] += 1


def _raw(x):
    if isinstance(x, Variable):
        return x.value
    if isinstance(x, Tensor):
        return x.view(np.ndarray)
    if isinstance(x, (list, tuple)):
        return type(x)(_raw(e) for e in x)
    if isinstance(x, dict):
        return {k: _raw(v) for k, v in x.items()}
    return x


def _flat(x):
    if isinstance(x, (list, tuple)):
        return [e for t in x for e in _flat(t)]
    if isinstance(x, dict):
        return [e for t in x.values() for e in _flat(t)]
    return [x]


def model_tape_call(model, inputs, training):
    from .. import _config
    from ..engine.workspace import Workspace
    what = f"{model.name}(...)"
    model._ensure_built_for(_raw(inputs), what)
    model._finish_build()
    xs = model._prepare_xs(_raw(inputs), what, finite=False)
    _unsplit(model)
    in_list = _flat(inputs)
    from .core import is_watched
    want_dx = _recording() and any(is_watched(x) for x in in_list)
    st = _tape_step(model, want_dx)
    flags = tuple(l.trainable for l in model._store.layers)
    if flags != model._store.trainable_flags:
        model._store.refresh_trainable()
    st.set_ops(_config.get_ops())
    # workspaces: reused from a free list per batch size (a set is back on it once
    # its backward ran), so a steady tape loop allocates no layer buffers
    n = xs[0].shape[0]
    free = st.__dict__.setdefault("_free", {}).setdefault(n, [])
    wss = free.pop() if free else [Workspace() for _ in range(len(st.nodes) + 1)]
    outs = [np.array(o, copy=True) for o in st.forward(xs, bool(training), wss)]
    st.drop_refs()
    if not _recording():
        free.append(wss)
        return model._shape_outputs(outs)
    store = model._store
    ents = [e for e in store.entries if e.layer.trainable]
    variables = store_variables(store)
    k_out = len(outs)
    n_in = len(xs)
    res = []
    for k, o in enumerate(outs):
        t = o.view(Tensor)

        def back(g, k=k):
            gs: list = [None] * k_out
            gs[k] = np.array(g, dtype=np.float32, copy=True)
            st.set_ops(_config.get_ops())
            st.backward(gs, wss)
            dxs: list = [None] * len(in_list)
            if want_dx and len(in_list) == n_in:
                dxs = [None if st._grads[i] is None else np.array(st._grads[i], copy=True)
                       for i in range(n_in)]
            st.drop_refs()
            if k_out == 1 and len(free) < 4:
                free.append(wss)
            return dxs + [np.array(e.grad, copy=True) for e in ents]
        record_on_tapes(in_list + variables, t, back)
        res.append(t)
    return model._shape_outputs(res)


def model_in_trace(model, inputs, training):
    raise TracingError(f"model {model.name!r} is called inside a traced call(); call its "
                       "layers instead, or build a functional model around it")


# ---------------------------------------------------------------------------- apply_gradients
def apply_gradients(opt, grads_and_vars):
    """optimizer.apply_gradients(zip(grads, variables)) (Keras): one fused
    optimizer call over the model's flat buffers when the variables are a
    model's trainable weights, else over a flat copy of the variables."""
    from .. import _config
    from ..engine.params import aligned_zeros, _align_up
    pairs = [(g, v) for g, v in grads_and_vars]
    for g, v in pairs:
        if not isinstance(v, Variable):
            raise TypeError(f"apply_gradients: expected (gradient, fg.Variable) pairs, got a "
                            f"{type(v).__name__} as variable")
    pairs = [(g, v) for g, v in pairs if g is not None]
    if not pairs:
        raise ValueError("apply_gradients: no gradients (every gradient is None)")
    ops = _config.get_ops()
    for g, v in pairs:
        if np.shape(g) != v.shape and np.size(g) != v.size:
            raise ValueError(f"apply_gradients: gradient of shape {np.shape(g)} for variable "
                             f"{v.name!r} of shape {v.shape}")
    stores = {id(v.__dict__.get("_fg_store")) for _, v in pairs}
    store = pairs[0][1].__dict__.get("_fg_store")
    if store is not None and len(stores) == 1:
        flags = tuple(l.trainable for l in store.layers)
        if flags != store.trainable_flags:
            store.refresh_trainable()
        store_variables(store)
        if tuple(v._key for _, v in pairs) == store.__dict__["_fg_vars"][2]:
            ents = [e for e in store.entries if e.layer.trainable]
            for (g, v), e in zip(pairs, ents):
                np.copyto(e.grad, np.reshape(np.asarray(g, dtype=np.float32), e.grad.shape))
            opt.apply_gradients(ops, store.params, store.grads, store.trainable_grad_views,
                                store.segments)
            return opt.iterations
    # any other set of variables: gather into one flat buffer, update, scatter back
    key = tuple(v._key for _, v in pairs)
    lay = opt.__dict__.get("_fg_layout")
    if lay is None or lay[0] != key:
        offs, off = [], 0
        for _, v in pairs:
            off = _align_up(off)
            offs.append(off)
            off += v.size
        n = _align_up(off)
        lay = (key, offs, aligned_zeros(n), aligned_zeros(n))
        opt.__dict__["_fg_layout"] = lay
        opt.build(n)
    _, offs, P, G = lay
    for (g, v), o in zip(pairs, offs):
        P[o:o + v.size] = np.asarray(v.value, dtype=np.float32).reshape(-1)
        G[o:o + v.size] = np.asarray(g, dtype=np.float32).reshape(-1)
    opt.apply_gradients(ops, P, G, [G[o:o + v.size] for (_, v), o in zip(pairs, offs)], None)
    for (g, v), o in zip(pairs, offs):
        v.value[...] = P[o:o + v.size].reshape(v.shape)
    return opt.iterations


# ---------------------------------------------------------------------------- penalties
def regularization_losses(entries):
    """The regularization penalties of `entries` (store entries with a
    regularizer) as differentiable scalars: l1 * sum|w| + l2 * sum w^2 of each
    weight's Variable (Keras's model.losses / layer.losses)."""
    from .. import math as M
    out = []
    for e in entries:
        reg = e.spec.regularizer
        if reg is None or not e.layer.trainable:
            continue
        v = entry_variable(e)
        terms = []
        l1, l2 = getattr(reg, "l1", 0.0), getattr(reg, "l2", 0.0)
        if l1:
            terms.append(M.multiply(float(l1), M.sum(M.abs(v))))
        if l2:
            terms.append(M.multiply(float(l2), M.sum(M.square(v))))
        if terms:
            out.append(terms[0] if len(terms) == 1 else M.add(terms[0], terms[1]))
    return out
