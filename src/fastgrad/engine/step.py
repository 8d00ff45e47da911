"""The Python executor: a model graph run node by node through `ops`.

One `Step` is made per (model build, compile). It holds what a batch needs so
the per-batch work is straight-line code:

    forward   nodes in graph order, each through its layer and its own
              workspace (a shared layer has one workspace per call)
    loss      per output: the fused loss kernel (on logits when the output
              activation was absorbed), weighted by the loss weight
    NaN check
    backward  nodes in reverse order; a slot's gradient contributions are
              summed in a fixed order, a shared layer's parameter gradients
              too (docs/architecture.md, "Two executors, one set of numbers")
    -> regulariser gradients -> optimizer.apply_gradients (clip + one update)

It implements the executor interface the model's fit/evaluate/predict loop
drives (`train`, `evaluate`, `predict`, `max_batches_per_call`); the
compiled plan (engine/compiled.py) implements the same one in C and gives
the same bits.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from .data import take
from .workspace import WorkspaceCache


class NonFiniteLossError(FloatingPointError, ValueError):
    """The loss became NaN or inf; the step that produced it was not applied.

    Parameters
    ----------
    msg : str, default ""
        The message.
    batch : int or None, default None
        Index of the bad batch within the epoch (when known); kept as ``batch``.
    loss : float or None, default None
        The loss value; kept as ``loss``.
    """

    def __init__(self, msg: str = "", batch: int | None = None, loss: float | None = None) -> None:
        super().__init__(msg)
        self.batch = batch
        self.loss = loss


class NonFiniteParametersError(NonFiniteLossError):
    """An optimizer update made weights NaN or inf although the loss it
    followed was finite (an overflow such as SGD with lr=1e30). Unlike a
    non-finite loss, whose step is never applied, the overflowing update was:
    the model holds the non-finite weights (the message says where)."""


class Step:
    """One model's training step on the Python path, and its evaluate / predict loops.

    Forward through the graph, the fused loss, backward, one optimizer call
    over the flat buffers (docs/architecture.md).

    Parameters
    ----------
    model : Model
        A built model (compiled, for training).
    """

    def __init__(self, model: Any) -> None:
        self.model = model
        g = self.graph = model._graph
        self.nodes = list(g.nodes)
        self.layers = list(g.layers)
        self.store = model._store
        self.training = bool(model.compiled)
        k = len(g.output_slots)
        self.n_out = k
        if model.compiled:
            self.losses = list(model._losses)
            self.loss_weights = list(model._loss_weights)
            self.optimizer = model.optimizer
            acts = list(model._output_activations) or [None] * k
        else:
            self.losses = [None] * k
            self.loss_weights = [1.0] * k
            self.optimizer = None
            acts = [None] * k
        self.out_acts = acts
        self.logits = [a is not None or bool(getattr(l, "from_logits", False))
                       for a, l in zip(acts, self.losses)]
        self.loss_index = [i for i, l in enumerate(self.losses) if l is not None]
        self.cache = WorkspaceCache(len(self.nodes))
        self.need = g.needs_grad()
        n_slots = len(g.slot_shapes)
        self._vals = [None] * n_slots
        self._grads = [None] * n_slots
        self._masks = [None] * n_slots      # per slot: its boolean mask (graphs with masks)
        # slots that receive a gradient: backward from the outputs that have a loss
        live = [False] * n_slots
        for i in self.loss_index:
            live[g.output_slots[i]] = True
        # activity regularizers (Keras: regularizer(output) / batch size added to the loss)
        self.act_reg = {n.index: n.layer.activity_regularizer for n in self.nodes
                        if getattr(n.layer, "activity_regularizer", None) is not None}
        self._act_pen = 0.0
        self._act_grads: dict = {}
        if self.training:
            for n in self.nodes:
                if n.index in self.act_reg:
                    live[n.out_slot] = True
        for n in reversed(self.nodes):
            if live[n.out_slot]:
                for s in n.in_slots:
                    live[s] = True
        run = [live[n.out_slot] and self.need[n.out_slot] for n in self.nodes]
        self.run_backward = run
        self.need_dx = [any(self.need[s] for s in n.in_slots) for n in self.nodes]
        ran = {id(n.layer) for n, r in zip(self.nodes, run) if r}
        # layers with parameters that no loss reaches: their gradient is zero
        self.dead = [e for e in self.store.entries if id(e.layer) not in ran]
        self.shared_entries = {lid: [e for e in self.store.entries if id(e.layer) == lid]
                               for lid in g.shared}

    def drop_refs(self):
        """Forget every reference to the caller's arrays (after a call)."""
        self.cache.drop_refs()
        for lst in (self._vals, self._grads, self._masks):
            for i in range(len(lst)):
                lst[i] = None

    def set_ops(self, ops):
        self.ops = ops
        for layer in self.layers:
            layer._ops = ops

    # ------------------------------------------------------------------ pieces
    def forward(self, xs, training, wss):
        self._act_pen = 0.0
        vals = self._vals
        for i, x in enumerate(xs):
            vals[i] = x
        if self.graph.has_masks:
            return self._forward_masked(xs, training, wss)
        for n in self.nodes:
            ws = wss[n.index]
            if n.multi:
                y = n.layer.forward([vals[s] for s in n.in_slots], training, ws)
            else:
                y = n.layer.forward(vals[n.in_slots[0]], training, ws)
            vals[n.out_slot] = y
            if self.act_reg and n.index in self.act_reg:
                self._activity(n, y, training, ws)
        return [vals[s] for s in self.graph.output_slots]

    def _activity(self, n, y, training, ws):
        """Add node n's activity penalty reg(y) / batch to self._act_pen; in training
        keep its gradient (float32, scaled by 1 / batch) for backward."""
        reg = self.act_reg[n.index]
        batch = y.shape[0] if y.ndim else 1
        self._act_pen += reg(y) / batch
        if training:
            g = ws.buf("act_reg_grad", y.shape)
            g[...] = 0.0
            reg.add_gradient(y, g, ws.buf("act_reg_scratch", y.shape))
            g *= np.float32(1.0 / batch)
            self._act_grads[n.index] = g

    def _forward_masked(self, xs, training, wss):
        """forward() of a graph that carries masks (docs/sequence.md, "Masks"): a node
        whose layer's forward takes `mask` gets its input's mask (a list for multi-input
        layers); a node whose output carries a mask computes it with compute_mask from
        its inputs and input mask, before its forward runs (a layer may overwrite
        nothing it reads, so the order only matters for clarity)."""
        vals = self._vals
        masks = self._masks
        for i, x in enumerate(xs):
            vals[i] = x
            masks[i] = None
        for n in self.nodes:
            ws = wss[n.index]
            ms = [None if s is None else masks[s] for s in n.mask_slots]
            if n.multi:
                x = [vals[s] for s in n.in_slots]
                m = ms
            else:
                x = vals[n.in_slots[0]]
                m = ms[0]
            masks[n.out_slot] = n.layer.compute_mask(x, m) if n.out_mask else None
            if n.layer._forward_takes_mask:
                y = n.layer.forward(x, training, ws, mask=m)
            else:
                y = n.layer.forward(x, training, ws)
            vals[n.out_slot] = y
        return [vals[s] for s in self.graph.output_slots]

    def losses_and_grads(self, outs, ys, sws, mws):
        """(total weighted loss, per-output losses, per-output gradients)."""
        total = 0.0
        per = [0.0] * self.n_out
        gs = [None] * self.n_out
        for k in self.loss_index:
            out = outs[k]
            g = mws.buf(f"dout{k}", out.shape)
            lk, g = self.losses[k].compute(self.ops, out, ys[k], sws[k], g, self.logits[k])
            w = self.loss_weights[k]
            if w != 1.0:
                np.multiply(g, np.float32(w), out=g)
            total += w * lk
            per[k] = lk
            gs[k] = g
        return total, per, gs

    def _add_grad(self, slot, d, mws):
        grads = self._grads
        cur = grads[slot]
        if cur is None:
            grads[slot] = d
            return
        acc = mws.buf(f"gacc{slot}", cur.shape, cur.dtype)
        np.add(cur, d, out=acc)
        grads[slot] = acc

    def backward(self, gs, wss):
        grads = self._grads
        for i in range(len(grads)):
            grads[i] = None
        mws = wss[-1]
        out_slots = self.graph.output_slots
        for k in self.loss_index:
            self._add_grad(out_slots[k], gs[k], mws)
        done = set()
        shared = self.shared_entries
        for n in reversed(self.nodes):
            if not self.run_backward[n.index]:
                continue
            if self.act_reg and n.index in self.act_reg:
                self._add_grad(n.out_slot, self._act_grads[n.index], mws)
            dy = grads[n.out_slot]
            if dy is None:
                continue
            layer = n.layer
            lid = id(layer)
            ws = wss[n.index]
            need_dx = self.need_dx[n.index]
            if lid in shared and lid in done:
                saved = []
                for j, e in enumerate(shared[lid]):
                    buf = mws.buf(f"gsave{n.index}_{j}", e.grad.shape, e.grad.dtype)
                    np.copyto(buf, e.grad)
                    saved.append(buf)
                dx = layer.backward(dy, ws, need_dx)
                for e, sv in zip(shared[lid], saved):
                    np.add(e.grad, sv, out=e.grad)
            else:
                dx = layer.backward(dy, ws, need_dx)
            done.add(lid)
            if not need_dx:
                continue
            if n.multi:
                for s, d in zip(n.in_slots, dx):
                    if d is not None and self.need[s]:
                        self._add_grad(s, d, mws)
            elif self.need[n.in_slots[0]]:
                self._add_grad(n.in_slots[0], dx, mws)
        for e in self.dead:
            e.grad[...] = 0.0

    # ------------------------------------------------------------------ steps
    def train_batch(self, xs, ys, sws, metrics=True):
        """One optimizer step on a batch; returns (total loss incl. regularisation,
        per-output losses)."""
        wss = self.cache.get(xs[0].shape[0])
        outs = self.forward(xs, True, wss)
        loss, per, gs = self.losses_and_grads(outs, ys, sws, wss[-1])
        store = self.store
        if store.regularized:
            loss += store.regularization_penalty(self.ops)
        if self.act_reg:
            loss += self._act_pen
        if not math.isfinite(loss):
            raise NonFiniteLossError(f"loss is {loss}", loss=loss)
        self.backward(gs, wss)
        if store.frozen:
            store.zero_frozen_grads()
        if store.regularized:
            store.add_regularization_gradients()
        self.optimizer.apply_gradients(self.ops, store.params, store.grads,
                                       store.trainable_grad_views, store.segments)
        if metrics and self.model.metrics:
            self.model._update_metrics(outs, ys, sws)
        return loss, per

    # the step split between gradient and update (fastgrad.distribution reduces the
    # gradients across processes in between); together they are train_batch
    def grad_step(self, data, perm, rows, scale=1.0):
        """Forward, loss and backward of the batch perm[0:rows] (frozen gradients zeroed;
        no regularizer gradients, clipping or update), the loss gradients scaled by
        float32 `scale` after the loss weights (this shard's share of the global batch,
        as fg_net_train_grad does); updates the metrics. Returns
        (non-finite, statistics row [total loss, rows, per-output losses...])."""
        wss = self.cache.get(rows)
        xs, ys, sws = self._gather(data, perm, 0, rows, wss[-1])
        outs = self.forward(xs, True, wss)
        loss, per, gs = self.losses_and_grads(outs, ys, sws, wss[-1])
        store = self.store
        if store.regularized:
            loss += store.regularization_penalty(self.ops)
        stats = self._stats(1)
        self._stats_row(stats, 0, loss, per, rows)
        if not math.isfinite(loss):
            return True, stats[0]
        if scale != 1.0:
            s = np.float32(scale)
            for g in gs:
                if g is not None:
                    np.multiply(g, s, out=g)
        self.backward(gs, wss)
        if store.frozen:
            store.zero_frozen_grads()
        if self.model.metrics:
            self.model._update_metrics(outs, ys, sws)
        return False, stats[0]

    def apply_update(self):
        """Regularizer gradients, clipping and the optimizer update on the gradients
        grad_step left (after their reduction)."""
        store = self.store
        if store.regularized:
            store.add_regularization_gradients()
        self.optimizer.apply_gradients(self.ops, store.params, store.grads,
                                       store.trainable_grad_views, store.segments)

    def test_batch(self, xs, ys, sws, metrics=True):
        wss = self.cache.get(xs[0].shape[0])
        outs = self.forward(xs, False, wss)
        loss, per, _ = self.losses_and_grads(outs, ys, sws, wss[-1])
        if self.store.regularized:
            loss += self.store.regularization_penalty(self.ops)
        if self.act_reg:
            loss += self._act_pen
        if metrics and self.model.metrics:
            self.model._update_metrics(outs, ys, sws)
        return loss, per

    # ------------------------------------------------------------------ executor interface
    def max_batches_per_call(self, batch_size):
        return 1 << 30

    def _gather(self, data, perm, s, e, mws):
        idx = None if perm is None else perm[s:e]
        xs = [take(x, idx, s, e, mws, f"x{i}") for i, x in enumerate(data.xs)]
        ys = [take(y, idx, s, e, mws, f"y{i}") for i, y in enumerate(data.ys)]
        sws = [take(w, idx, s, e, mws, f"w{i}") for i, w in enumerate(data.sws)]
        return xs, ys, sws

    def _stats_row(self, stats, b, total, per, rows):
        stats[b, 0] = total
        stats[b, 1] = rows
        j = 2
        for k in self.loss_index if self.n_out > 1 else ():
            stats[b, j] = per[k]
            j += 1

    def _stats(self, nb):
        width = 2 + (len(self.loss_index) if self.n_out > 1 else 0)
        return np.zeros((nb, width))

    def train(self, data, perm, start, nb, bs):
        """Batches start .. start+nb-1 of the epoch's permutation (None: in order)."""
        n = data.n
        stats = self._stats(nb)
        for b in range(nb):
            s = (start + b) * bs
            e = min(s + bs, n)
            wss = self.cache.get(e - s)
            xs, ys, sws = self._gather(data, perm, s, e, wss[-1])
            try:
                total, per = self.train_batch(xs, ys, sws)
            except NonFiniteLossError as exc:
                exc.batch = start + b
                exc.done_stats = stats[:b]
                raise
            self._stats_row(stats, b, total, per, e - s)
        return stats

    def evaluate(self, data, start, nb, bs):
        n = data.n
        stats = self._stats(nb)
        for b in range(nb):
            s = (start + b) * bs
            e = min(s + bs, n)
            xs = [x[s:e] for x in data.xs]
            ys = [None if y is None else y[s:e] for y in data.ys]
            sws = [None if w is None else w[s:e] for w in data.sws]
            total, per = self.test_batch(xs, ys, sws)
            self._stats_row(stats, b, total, per, e - s)
        return stats

    def predict(self, xs, outs):
        """outs[k][...] = output k for the rows of xs (probabilities where the
        output activation was fused into the loss)."""
        wss = self.cache.get(xs[0].shape[0])
        hs = self.forward(xs, False, wss)
        for h, out, act in zip(hs, outs, self.out_acts):
            if act is not None:
                self.ops.activation(act, h, out)
            else:
                np.copyto(out, h)
        return outs
