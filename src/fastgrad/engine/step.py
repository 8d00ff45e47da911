"""The Python training / inference step of a Sequential model.

One `Step` object is made per (model build, compile): it holds the resolved
pieces a batch needs so the per-batch work is straight-line code — layer
forwards through pre-bound workspaces, one fused loss kernel, layer backwards
into the flat gradient buffer, regularisation, one optimizer call:

    forward (ops.dense_forward ...) -> loss (fused, on logits when the output
    activation was absorbed) -> NaN check -> backward (ops.dense_backward ...)
    -> regulariser gradients -> optimizer.apply_gradients (clip + one update)

The same sequence is what `Sequential.describe()` hands to a compiled
executor (issue #5); this module is the reference executor.
"""
from __future__ import annotations

import math

import numpy as np

from .workspace import WorkspaceCache


class NonFiniteLossError(FloatingPointError, ValueError):
    """The loss became NaN or inf; the step that produced it was not applied."""


class Step:
    def __init__(self, model):
        self.model = model
        self.layers = list(model.layers)
        self.store = model._store
        self.loss = model.loss
        self.optimizer = model.optimizer
        self.out_act = model._output_activation         # fused activation name or None
        self.logits = self.out_act is not None or bool(getattr(self.loss, "from_logits", False))
        self.cache = WorkspaceCache(len(self.layers))
        # backward stops at the first layer that has parameters: nothing below needs dx
        first = len(self.layers)
        for i, layer in enumerate(self.layers):
            if layer.param_specs():
                first = i
                break
        self.first_param_layer = first

    def set_ops(self, ops):
        self.ops = ops
        for layer in self.layers:
            layer._ops = ops

    # ------------------------------------------------------------------ pieces
    def forward(self, x, training, wss):
        h = x
        for layer, ws in zip(self.layers, wss):
            h = layer.forward(h, training, ws)
        return h

    def loss_and_grad(self, out, y, sw, mws):
        g = mws.buf("dout", out.shape)
        loss, g = self.loss.compute(self.ops, out, y, sw, g, self.logits)
        return loss, g

    def backward(self, g):
        layers, wss = self.layers, self._wss
        first = self.first_param_layer
        dy = g
        for i in range(len(layers) - 1, first - 1, -1):
            dy = layers[i].backward(dy, wss[i], i > first)

    # ------------------------------------------------------------------ steps
    def train_batch(self, x, y, sw, metrics):
        """One optimizer step on a batch; returns the loss (incl. regularisation)."""
        wss = self._wss = self.cache.get(x.shape[0])
        out = self.forward(x, True, wss)
        loss, g = self.loss_and_grad(out, y, sw, wss[-1])
        store = self.store
        if store.regularized:
            loss += store.regularization_penalty(self.ops)
        if not math.isfinite(loss):
            raise NonFiniteLossError(f"loss is {loss}")
        self.backward(g)
        if store.frozen:
            store.zero_frozen_grads()
        if store.regularized:
            store.add_regularization_gradients()
        self.optimizer.apply_gradients(self.ops, store.params, store.grads,
                                       store.trainable_grad_views, store.segments)
        if metrics:
            self.update_metrics(metrics, y, out, sw)
        return loss

    def test_batch(self, x, y, sw, metrics):
        wss = self.cache.get(x.shape[0])
        out = self.forward(x, False, wss)
        loss, _ = self.loss_and_grad(out, y, sw, wss[-1])
        if self.store.regularized:
            loss += self.store.regularization_penalty(self.ops)
        if metrics:
            self.update_metrics(metrics, y, out, sw)
        return loss

    def predict_batch(self, x, out=None):
        """Model output (probabilities when the output activation was fused) for x;
        written into `out` when given, else a workspace array."""
        wss = self.cache.get(x.shape[0])
        h = self.forward(x, False, wss)
        if self.out_act is not None:
            return self.ops.activation(self.out_act, h, out if out is not None else
                                       wss[-1].buf("probs", h.shape))
        if out is not None:
            np.copyto(out, h)
            return out
        return h

    def update_metrics(self, metrics, y, out, sw):
        """Metrics from compile(metrics=) ignore the sample weights; those from
        compile(weighted_metrics=) use them (Keras 3)."""
        act = self.out_act
        flags = getattr(self.model, "_metric_weighted", ())
        if len(flags) != len(metrics):
            flags = (False,) * len(metrics)
        for m, weighted in zip(metrics, flags):
            w = sw if weighted else None
            if act is None:
                m.update_state(y, out, w)
            else:
                m.update_state_logits(y, out, act, w, self.ops)
