"""The compiled executor: a model graph trained / run in ONE C call per
chunk of batches (csrc/step, binding fastgrad._native.step).

The Python Step (engine/step.py) is the reference executor; this module runs
the same graph inside C and gives its bits. Each layer describes itself for
C through its public `lower(ctx)` (kind name, activation, parameter offsets,
hyper-parameters, as plain values; `LowerContext` below is all a layer may
ask); this module adds the graph layout (each node's input slots and
per-sample output shape, the output slots), one (loss, weight) per output
and the optimizer, and hands the description to `step.Net`. The losses, the
optimizer and the accuracy metric describe themselves the same way:
`loss.lower(ctx, on_logits)` (its C loss code), `optimizer.lower(ctx)` (kind,
hyper-parameters, slot arrays s1/s2/s3), `metric.lower(ctx, loss_code,
out_act)` ((accuracy code, threshold) or None: updated in Python). This
module reads no private fields of layers, losses, optimizers or metrics,
switches on none of their types and imports none of their modules: an object
without `lower()`, a configuration without a C path (lower() raises
ctx.unsupported), or a description C refuses (the message names the layer)
makes the model fall back to the Python Step, with the reason.

    compile_plan(model) -> CompiledPlan | None
        Layers with a C path: those whose lower() returns a kind of the C
        layer table (step.LAYER_KINDS): Dense, Activation, Flatten, Reshape,
        Identity, Dropout, LayerNormalization over the whole sample,
        BatchNormalization of 2-D input (its moving statistics are handed
        over as arrays and updated in C), the element-wise merges of inputs of
        one shape, Concatenate, the conv / pooling / image layers and their
        1-D counterparts (Conv1D/2D, DepthwiseConv1D/2D, SeparableConv1D/2D,
        Conv1D/2DTranspose, pooling, global pooling, ZeroPadding1D/2D,
        Cropping1D/2D, UpSampling1D/2D, SpatialDropout1D/2D). One accuracy
        metric of a single-output model runs in C; other metrics are updated
        in Python from the outputs the C step copies out per call
        (`py_metrics`, see CompiledPlan._py_metrics).
        None when something has no C path, when the active backend is not
        "native", or when the step module is not built;
        `unsupported_reason(model)` says why.
    train_plan(model) / inference_plan(model)
        the cached plan of a model, rebuilt only when what it points at
        changed (flat buffers, optimizer slots, graph, losses, fusion, frozen
        layers, metrics); cheap enough to call per fit / predict_on_batch.

A plan holds pointers into the model's flat parameter / gradient buffers and
the optimizer's slot arrays (ParamStore never reallocates them; the plan key
includes their identities, so a rebuilt model or reset optimizer re-plans).

Training: `CompiledPlan.train(data, perm, start, n_batches, batch_size)` is the
executor interface the model's one fit loop drives (engine.step.Step has the
same): batches are gathered inside C from the caller's arrays by the epoch's
permutation (no dataset copy, no fancy indexing per batch). The learning
rate is evaluated per step in Python (schedules) and passed as an array;
optimizer.iterations and the Dropout stream offsets are advanced afterwards
by the number of steps actually run.

Inference (`predict_list`): <= 64 rows are computed into buffers
preallocated with the plan and returned as fresh arrays, so a single-row
call costs one shape check, one C call and one small allocation; more rows
run in one call (C splits them into fixed 256-row chunks, in parallel over
chunks).
"""
from __future__ import annotations

import contextlib
import math
import os
import threading

import numpy as np

from .. import _config
from .. import _native

__all__ = ["CompiledPlan", "compile_plan", "unsupported_reason", "train_plan", "inference_plan",
           "enabled", "NoCPath", "LowerContext"]

#: switch for tests / benchmarks (also FASTGRAD_COMPILED=0 in the environment)
enabled = os.environ.get("FASTGRAD_COMPILED", "1").strip().lower() not in ("0", "false", "no", "off")
#: let a training chunk run on one thread instead of get_num_threads() when that is faster
#: right now (the results are the same bits either way, see csrc/step/policy.c);
#: also FASTGRAD_ADAPTIVE_THREADS=0
adaptive_threads = os.environ.get("FASTGRAD_ADAPTIVE_THREADS", "1").strip().lower() not in (
    "0", "false", "no", "off")
#: fold a plain ReLU into the BatchNormalization whose output only it reads (one
#: pass over the activations less in forward and backward; the same bits, see
#: _fuse_norm_relu); also FASTGRAD_FUSE_BN_RELU=0
fuse_bn_relu = os.environ.get("FASTGRAD_FUSE_BN_RELU", "1").strip().lower() not in (
    "0", "false", "no", "off")


class NoCPath(Exception):
    """A model, layer or configuration the compiled plan cannot run (the model
    then runs on the Python step; the message is unsupported_reason())."""


def _step_module():
    return _native.module("step")


# ====================================================================== lowering
class LowerContext:
    """What a layer's `lower(ctx)` may ask while it describes itself for C.

    ctx.training          True when lowering for training (False: inference only)
    ctx.unsupported       the exception to raise for a configuration without a C
                          path: `raise ctx.unsupported(f"layer {name}: ...")`
    ctx.act(name)         the C code of activation `name` (raises if it has none)
    ctx.out_act(name)     the code of a fused output activation (None -> none)
    ctx.regularizer(reg)  (l1, l2) of a built-in regularizer ((0, 0) for None)
    ctx.trainable(layer)  False when the layer is frozen in the model's store
    ctx.stream(layer)     the index of the layer's dropout stream position (one per
                          layer, shared by its nodes); the plan syncs it through
                          get_rng_state / set_rng_state
    ctx.merge_op(kind)    the C code of an element-wise merge ("add", ...)

    and what a loss, an optimizer or a metric may ask (codes from the C headers):
    ctx.loss_code(name)       step.LOSSES[name] ("mse", "sparse_softmax_xent", ...)
    ctx.optimizer_code(name)  step.OPTIMIZERS[name] ("sgd", "adam", ...)
    ctx.accuracy_code(name)   step.ACCURACY[name] ("sparse", "categorical", "binary")
    ctx.n_params          the length of the flat parameter buffer (the optimizer
                          builds its slot arrays for it)
    """

    unsupported = NoCPath

    def __init__(self, mod, training, frozen=(), n_params=0):
        self._mod = mod
        self.training = bool(training)
        self._frozen = frozen
        self.n_params = int(n_params)
        self.stream_layers = []

    def _code(self, table, what, name):
        code = getattr(self._mod, table).get(name)
        if code is None:
            raise NoCPath(f"{what} {name!r} has no C path")
        return code

    def loss_code(self, name):
        return self._code("LOSSES", "C loss", name)

    def optimizer_code(self, name):
        return self._code("OPTIMIZERS", "C optimizer", name)

    def accuracy_code(self, name):
        return self._code("ACCURACY", "C accuracy", name)

    def act(self, name):
        code = self._mod.ACTIVATIONS.get(name)
        if code is None:
            raise NoCPath(f"activation {name!r} has no C path")
        return code

    def out_act(self, name):
        if name is None:
            return self._mod.ACT_NONE
        if name not in ("softmax", "sigmoid"):
            raise NoCPath(f"fused output activation {name!r} has no C path")
        return self._mod.ACTIVATIONS[name]

    def regularizer(self, reg):
        if reg is None:
            return 0.0, 0.0
        from .. import regularizers as R
        if type(reg) not in (R.Regularizer, R.L1, R.L2, R.L1L2):
            raise NoCPath(f"regularizer {type(reg).__name__} has no C path")
        return float(reg.l1), float(reg.l2)

    def trainable(self, layer):
        return id(layer) not in self._frozen

    def stream(self, layer):
        for i, l in enumerate(self.stream_layers):
            if l is layer:
                return i
        self.stream_layers.append(layer)
        return len(self.stream_layers) - 1

    def merge_op(self, kind):
        code = self._mod.MERGE_OPS.get(kind)
        if code is None:
            raise NoCPath(f"merge {kind!r} has no C path")
        return code


def _graph_nodes(model):
    """(input shapes, [(layer, in_slots, out_shape)], output slots) of the model's graph
    (engine/graph.py; a Sequential's is a chain)."""
    g = model._graph
    shapes = g.slot_shapes
    nodes = [(n.layer, n.in_slots, shapes[n.out_slot]) for n in g.nodes]
    return [tuple(shapes[i]) for i in range(g.n_inputs)], nodes, list(g.output_slots)


def _lower_graph(model, ctx):
    """The step.Net graph description: layers lowered node by node."""
    mod = _step_module()
    inputs, nodes, outputs = _graph_nodes(model)
    descs = []
    for layer, in_slots, shape in nodes:
        lower = getattr(layer, "lower", None)
        if lower is None:
            raise NoCPath(f"layer {layer.name} ({type(layer).__name__}) has no C path")
        if ctx.training and getattr(layer, "activity_regularizer", None) is not None:
            raise NoCPath(f"layer {layer.name} ({type(layer).__name__}) has an activity_regularizer "
                          "(no C path; it trains on the Python step)")
        d = dict(lower(ctx))
        kind = mod.LAYER_KINDS.get(d.pop("kind"))
        if kind is None:
            raise NoCPath(f"layer {layer.name} ({type(layer).__name__}) lowers to a kind "
                          "the C plan does not have")
        d.update(kind=kind, inputs=list(in_slots), shape=tuple(int(v) for v in shape), name=layer.name)
        descs.append(d)
    graph = dict(inputs=inputs, nodes=descs, outputs=outputs, n_streams=len(ctx.stream_layers))
    if fuse_bn_relu:
        _fuse_norm_relu(mod, graph)
    return graph, ctx.stream_layers


def _fuse_norm_relu(mod, graph):
    """Batch norm -> ReLU: when a batchnorm node's output is read by exactly one
    node, an activation node computing the plain relu (no parameters: Keras's
    ReLU() / Activation("relu"), not max_value / slopes / thresholds), and is
    not a model output, the batchnorm node applies the relu (its act; forward
    and backward in the same passes, csrc/step/layer_batchnorm.c) and the
    activation node becomes linear: a pass-through alias, which does no work in
    forward and hands its dy on in place in backward. Works on the node
    descriptions only (kind and activation codes of the C plan), in place."""
    nodes = graph["nodes"]
    n_in = len(graph["inputs"])
    kinds, acts = mod.LAYER_KINDS, mod.ACTIVATIONS
    bn, act_kind = kinds.get("batchnorm"), kinds.get("activation")
    linear, relu = acts["linear"], acts["relu"]
    readers = {}
    for j, d in enumerate(nodes):
        for s in d["inputs"]:
            readers.setdefault(s, []).append(j)
    outputs = set(graph["outputs"])
    for i, d in enumerate(nodes):
        s = n_in + i
        if d["kind"] != bn or d.get("act", linear) != linear or s in outputs or len(readers.get(s, ())) != 1:
            continue
        r = nodes[readers[s][0]]
        if (r["kind"] != act_kind or r.get("act") != relu or r.get("act_has_param")
                or r.get("out_act", mod.ACT_NONE) != mod.ACT_NONE or len(r["inputs"]) != 1):
            continue
        d["act"] = relu
        r["act"] = linear


def _lower_of(obj, what):
    lower = getattr(obj, "lower", None)
    if lower is None:
        raise NoCPath(f"{what} {getattr(obj, 'name', '?')} ({type(obj).__name__}) has no C path")
    return lower


def _losses(ctx, model):
    """One (code, weight[, param]) per output (LOSSES["none"] for an output without a loss)."""
    acts = list(model._output_activations) or [None] * len(model._losses)
    none = ctx.loss_code("none")
    out = []
    for loss, w, act in zip(model._losses, model._loss_weights, acts):
        if loss is None:
            out.append((none, 1.0))
            continue
        code = _lower_of(loss, "loss")(ctx, act is not None)
        # a loss with a hyper-parameter (Huber's delta) lowers to (code, param)
        if isinstance(code, tuple):
            out.append((int(code[0]), float(w), float(code[1])))
        else:
            out.append((int(code), float(w)))
    return out


def _optimizer_desc(ctx, opt):
    d = dict(_lower_of(opt, "optimizer")(ctx))
    n = ctx.n_params
    for k in ("s1", "s2", "s3"):
        a = d.get(k)
        if a is not None and not (a.dtype == np.float32 and a.flags.c_contiguous and a.size == n):
            raise NoCPath(f"optimizer slot array {k} is not a flat float32 buffer")
    return d


#: floats of output a capturing C call may write (64 MiB); longer chunks are
#: split (see CompiledPlan._chunk)
_CAPTURE_FLOATS = 1 << 24


def _accuracy_spec(ctx, model, losses):
    """(kind, threshold, weighted) for Net.set_accuracy: weighted when the metric
    came from compile(weighted_metrics=), unweighted from compile(metrics=).
    None when the metrics need the Python path: then the plan captures the
    outputs and updates them in Python (CompiledPlan._py_metrics)."""
    ms = list(model.metrics)
    if not ms:
        return ctx.accuracy_code("none"), 0.5, True
    if len(ms) > 1 or len(losses) != 1 or losses[0][0] == ctx.loss_code("none"):
        return None
    lower = getattr(ms[0], "lower", None)
    spec = lower(ctx, losses[0][0], model._output_activation) if lower is not None else None
    if spec is None:
        return None
    code, threshold = spec
    flags = getattr(model, "_metric_weighted", ())
    weighted = bool(flags[0]) if len(flags) == 1 else False
    return code, float(threshold), weighted


def _analyse(model, training):
    if not enabled:
        raise NoCPath("compiled execution is disabled (fastgrad.engine.compiled.enabled)")
    mod = _step_module()
    if mod is None:
        raise NoCPath(f"the step extension is not built ({_native.import_error('step')})")
    if _config.get_backend() != "native":
        raise NoCPath(f"the active backend is {_config.get_backend()!r}, not 'native'")
    if not getattr(model, "built", False) or model._store is None:
        raise NoCPath("the model is not built")
    if getattr(model._graph, "has_masks", False):
        raise NoCPath("the model carries masks (Embedding(mask_zero=True) / Masking); the "
                      "compiled plan has no masks")
    store = model._store
    ctx = LowerContext(mod, training, {id(e.layer) for e in store.frozen}, store.size)
    graph, streams = _lower_graph(model, ctx)
    spec = dict(graph=graph, streams=streams)
    if training:
        if not model.compiled:
            raise NoCPath("the model is not compiled")
        if not model._store.size:
            raise NoCPath("no layer with trainable parameters")
        if not model._metrics_resolved:
            model._resolve_metrics()
        spec["losses"] = _losses(ctx, model)
        spec["opt"] = _optimizer_desc(ctx, model.optimizer)
        # weights in another model's buffers (a sub-model's view store): the update
        # runs over this model's arrays only, as the Python step's segments do
        spec["opt"]["own_arrays_only"] = getattr(store, "parent", None) is not None
        spec["acc"] = _accuracy_spec(ctx, model, spec["losses"])
    return spec


def unsupported_reason(model, training=True):
    """Why `model` cannot run compiled (None if it can)."""
    try:
        spec = _analyse(model, training)
        _make_net(model, spec, training)
    except NoCPath as exc:
        return str(exc)
    return None


def _make_net(model, spec, training):
    """The step.Net of a spec; a description C refuses is a model without a C path
    (the message names the layer)."""
    mod = _step_module()
    store = model._store
    try:
        if training:
            return mod.Net(spec["graph"], store.params, store.grads, spec["losses"], spec["opt"])
        return mod.Net(spec["graph"], store.params, None)
    except ValueError as exc:
        raise NoCPath(f"the C plan refused the model: {exc}") from None


# ====================================================================== plan
class CompiledPlan:
    """A model compiled to one C executor: the executor interface the model's
    fit / evaluate / predict loop drives (`train`, `evaluate`, `predict_list`,
    `max_batches_per_call`), as engine.step.Step implements it in Python."""

    def __init__(self, model, spec, training, net=None):
        self.model = model
        self.store = model._store
        self.training = training
        self.spec = spec
        self.dropouts = spec["streams"]          # layers whose stream positions C advances
        mod = self._mod = _step_module()
        net = self.net = net if net is not None else _make_net(model, spec, training)
        self.n_out = net.n_outputs
        if training:
            none = mod.LOSSES["none"]
            self.loss_codes = [e[0] for e in spec["losses"]]
            self.loss_index = [k for k, c in enumerate(self.loss_codes) if c != none]
            self.py_metrics = spec["acc"] is None
            if not self.py_metrics:
                self.net.set_accuracy(*spec["acc"])
            self.net.set_adaptive_threads(adaptive_threads)
            # outputs the Python metrics read (captured per call)
            self._captured = sorted(set(getattr(model, "_metric_output", ()) or ())) \
                if self.py_metrics else []
        else:
            self.loss_codes, self.loss_index, self.py_metrics, self._captured = [], [], False, []
        self.out_shapes = [tuple(s) for s in net.out_shapes]
        self._flat_out = all(len(s) == 1 for s in self.out_shapes)   # predict_small's shape
        self._small = mod.SMALL_ROWS
        self.out_shape = self.out_shapes[0]
        self.in_shape = tuple(net.in_shapes[0])
        self._width = net.stat_width
        # statistics columns (csrc/step/fg_step.h FG_STAT_*; then one loss per output)
        self._L, self._A, self._W, self._R = mod.STAT_LOSS, mod.STAT_ACC, mod.STAT_WEIGHT, mod.STAT_ROWS
        self._per = [mod.STAT_COUNT + k for k in self.loss_index] if self.n_out > 1 else []
        self._drop_offsets = (np.zeros(len(self.dropouts), dtype=np.uint64)
                              if self.dropouts else None)
        self._stats = np.empty((1, self._width), dtype=np.float64)
        self._lr = np.empty(1, dtype=np.float32)
        self._caps = [np.empty((0, net.out_sizes[k]), dtype=np.float32) for k in range(self.n_out)]
        # one C call at a time per plan (its workspaces are shared): concurrent
        # Python threads queue here instead of getting the C side's "busy" error
        self._lock = threading.Lock()

    # -------------------------------------------------------------- helpers
    def _targets(self, ys):
        """Per output: (targets as C reads them, TARGET_* kind); (None, 0) without a loss.
        engine.data.as_y already makes them int64 labels / float32 C-contiguous, so the
        conversion here copies nothing on the model's path."""
        mod = self._mod
        res, kinds = [], []
        for k, y in enumerate(ys):
            code = self.loss_codes[k]
            if code == mod.LOSSES["none"] or y is None:
                res.append(None)
                kinds.append(0)
                continue
            if code == mod.LOSSES["sparse_softmax_xent"]:
                if y.dtype == np.int32 and y.flags.c_contiguous:
                    res.append(y)
                    kinds.append(mod.TARGET_INT32)
                    continue
                dtype, kind = np.int64, mod.TARGET_INT64
            else:
                dtype, kind = np.float32, mod.TARGET_FLOAT32
            res.append(np.ascontiguousarray(y, dtype=dtype))
            kinds.append(kind)
        return res, kinds

    def _buffers(self, n):
        if self._stats.shape[0] < n:
            self._stats = np.empty((n, self._width), dtype=np.float64)
            self._lr = np.empty(n, dtype=np.float32)
        return self._stats, self._lr

    def _fill_lr(self, lr, n):
        opt = self.model.optimizer
        sched = opt.learning_rate
        it0 = opt.iterations
        if isinstance(sched, float):
            lr[:n] = sched
            return
        for k in range(n):
            v = float(sched(it0 + k))
            if not (math.isfinite(v) and v >= 0):
                raise ValueError(f"{type(opt).__name__}: learning-rate schedule returned {v} at "
                                 f"step {it0 + k}")
            lr[k] = v

    def _sync_dropout_in(self):
        do = self._drop_offsets
        for i, layer in enumerate(self.dropouts):
            do[i] = layer.get_rng_state()["offset"]

    def _sync_dropout_out(self):
        do = self._drop_offsets
        for i, layer in enumerate(self.dropouts):
            st = layer.get_rng_state()
            layer.set_rng_state({"seed": st["seed"], "offset": int(do[i])})

    def max_batches_per_call(self, batch_size):
        """Batches per C call at most: unbounded, unless outputs are captured."""
        if not self._captured:
            return 1 << 62
        width = sum(self.net.out_sizes[k] for k in self._captured)
        return max(1, _CAPTURE_FLOATS // max(1, batch_size * width))

    def _capture_buffers(self, n, start, nb, bs):
        """The output-capture buffers for batches start .. start+nb-1 (one per output,
        None where no metric reads it), or None when the metrics run in C."""
        if not self._captured:
            return None
        rows = min((start + nb) * bs, n) - start * bs
        caps = [None] * self.n_out
        for k in self._captured:
            if self._caps[k].shape[0] < rows:
                self._caps[k] = np.empty((rows, self._caps[k].shape[1]), dtype=np.float32)
            caps[k] = self._caps[k]
        return caps

    @contextlib.contextmanager
    def _call(self, caps):
        """One C call: the plan's lock, with the output capture set for its duration."""
        with self._lock:
            if caps is not None:
                self.net.capture_outputs(caps)
            try:
                yield
            finally:
                if caps is not None:
                    self.net.capture_outputs(None)

    def _py_metrics(self, data, perm, start, done, bs):
        """Metrics without a C path, from the captured outputs of batches
        start .. start+done-1, batch by batch as the Python Step feeds them (so
        their sums round the same way)."""
        n = data.n
        p0 = start * bs
        for b in range(start, start + done):
            s, e = b * bs, min((b + 1) * bs, n)
            idx = perm[s:e] if perm is not None else slice(s, e)
            outs, ys, sws = [], [], []
            for k in range(self.n_out):
                cap = self._caps[k] if k in self._captured else None
                outs.append(cap[s - p0:e - p0] if cap is not None else None)
                ys.append(data.ys[k][idx] if cap is not None and data.ys[k] is not None else None)
                sws.append(data.sws[k][idx] if cap is not None and data.sws[k] is not None else None)
            self.model._update_metrics(outs, ys, sws)

    def _metrics_add(self, stats, done):
        """The accuracy computed in C, into the model's metric."""
        ms = self.model.metrics
        if not ms or self.py_metrics or not done:
            return
        m = ms[0]
        m.total += float(stats[:done, self._A].sum())
        m.count += float(stats[:done, self._W].sum())

    def _result(self, stats, done):
        """The executor's statistics: (done, 2 [+ losses of outputs with a loss when
        there are several outputs]) = [total loss, rows, ...]."""
        out = np.empty((done, 2 + len(self._per)))
        out[:, 0] = stats[:done, self._L]
        out[:, 1] = stats[:done, self._R]
        for j, c in enumerate(self._per):
            out[:, 2 + j] = stats[:done, c]
        return out

    # -------------------------------------------------------------- executor interface
    def train(self, data, perm, start, nb, bs):
        """Training steps on batches start .. start+nb-1 of the epoch's permutation
        (int64, None: in order) of `data` (engine.data.ArrayData). Updates the metrics,
        optimizer.iterations and the dropout streams; returns the statistics.
        A non-finite total loss raises NonFiniteLossError (that batch not applied)."""
        from .step import NonFiniteLossError
        if perm is not None and (perm.dtype != np.int64 or not perm.flags.c_contiguous):
            perm = np.ascontiguousarray(perm, dtype=np.int64)
        ys, kinds = self._targets(data.ys)
        sws = data.sws if any(w is not None for w in data.sws) else None
        stats, lr = self._buffers(nb)
        self._fill_lr(lr, nb)
        if self.dropouts:
            self._sync_dropout_in()
        caps = self._capture_buffers(data.n, start, nb, bs)
        opt = self.model.optimizer
        with self._call(caps):
            st, done = self.net.train_chunk(data.xs, ys, kinds, sws, perm, start, nb, bs, lr[:nb],
                                            opt.iterations, self._drop_offsets, stats,
                                            _config.get_num_threads())
        if caps is not None:
            self._py_metrics(data, perm, start, done, bs)
        opt.iterations += done
        if self.dropouts:
            self._sync_dropout_out()
        self._metrics_add(stats, done)
        out = self._result(stats, done)
        if st == self._mod.ERR_NONFINITE:
            loss = float(stats[done, self._L])
            exc = NonFiniteLossError(f"loss is {loss}", batch=start + done, loss=loss)
            exc.done_stats = out
            raise exc
        if st != 0:
            self._mod.check(st, "fit (compiled step)",
                            f"batch {start + done} of size {bs}, {data.n} samples")
        return out

    # the step split between gradient and update (fastgrad.distribution reduces the
    # gradients across processes in between); together they give train's bits
    def grad_step(self, data, perm, rows, scale=1.0):
        """Forward, loss and backward of the batch perm[0:rows] (int64) in C
        (fg_net_train_grad), the loss gradients scaled by `scale` (this shard's share
        of the global batch); updates the metrics and the dropout streams. Returns
        (non-finite, statistics row [total loss, rows, per-output losses...])."""
        ys, kinds = self._targets(data.ys)
        sws = data.sws if any(w is not None for w in data.sws) else None
        stats, _ = self._buffers(1)
        if self.dropouts:
            self._sync_dropout_in()
        caps = self._capture_buffers(rows, 0, 1, rows)
        with self._call(caps):
            st = self.net.train_grad(data.xs, ys, kinds, sws, perm, 0, rows, scale, self._drop_offsets,
                                     stats, _config.get_num_threads())
        bad = st == self._mod.ERR_NONFINITE
        if not bad:
            if caps is not None:
                self._py_metrics(data, perm, 0, 1, rows)
            if self.dropouts:
                self._sync_dropout_out()
            self._metrics_add(stats, 1)
        return bad, self._result(stats, 1)[0]

    def apply_update(self):
        """Regularizer gradients, clipping and the optimizer kernel in C
        (fg_net_apply_update) on the gradients grad_step left (after their reduction)."""
        opt = self.model.optimizer
        _, lr = self._buffers(1)
        self._fill_lr(lr, 1)
        with self._lock:
            self.net.apply_update(float(lr[0]), opt.iterations + 1, _config.get_num_threads())
        opt.iterations += 1

    def evaluate(self, data, start, nb, bs):
        """Loss / metrics of batches start .. start+nb-1 in order; returns the statistics."""
        ys, kinds = self._targets(data.ys)
        sws = data.sws if any(w is not None for w in data.sws) else None
        stats, _ = self._buffers(nb)
        caps = self._capture_buffers(data.n, start, nb, bs)
        with self._call(caps):
            st, done = self.net.evaluate(data.xs, ys, kinds, sws, None, start, nb, bs, stats,
                                         _config.get_num_threads())
        if caps is not None:
            self._py_metrics(data, None, start, done, bs)
        self._metrics_add(stats, done)
        if st != 0:
            self._mod.check(st, "evaluate (compiled step)",
                            f"batch {start + done} of size {bs}, {data.n} samples")
        return self._result(stats, done)

    def predict_list(self, xs):
        """New arrays with the model's outputs for the rows of xs (one float32
        C-contiguous array per input); <= SMALL_ROWS rows go through preallocated
        buffers, more run in one call (C splits them into 256-row chunks)."""
        n = xs[0].shape[0]
        nt = _config.get_num_threads()
        if n <= self._small:
            with self._lock:
                res = self.net.predict_small(xs, nt)
            if self._flat_out:
                return res
            return [r.reshape((n,) + s) for r, s in zip(res, self.out_shapes)]
        outs = [np.empty((n,) + s, dtype=np.float32) for s in self.out_shapes]
        with self._lock:
            self.net.predict(xs, outs, nt)
        return outs

    # -------------------------------------------------------------- one input / output
    def predict(self, xa, out):
        """out[...] = model(xa) for all rows in one call (xa float32 C-contiguous)."""
        with self._lock:
            self.net.predict([xa], [out], _config.get_num_threads())
        return out

    def predict_rows(self, xa):
        """A new array with model(xa) (one-input one-output models)."""
        return self.predict_list([xa])[0]


def compile_plan(model, training=True):
    """A fresh CompiledPlan for `model`, or None (see unsupported_reason)."""
    try:
        spec = _analyse(model, training)
        net = _make_net(model, spec, training)
    except NoCPath:
        return None
    return CompiledPlan(model, spec, training, net)


# ====================================================================== caching
def _train_key(model):
    opt = model.optimizer
    store = model._store
    return (store, store.segments, model._graph, tuple(model._losses), tuple(model._loss_weights),
            tuple(model._output_activations), opt,
            tuple(id(a) for a in opt.slots.values()), getattr(opt, "num_params", None),
            tuple(sorted((k, v) for k, v in vars(opt).items()
                         if isinstance(v, (int, float, bool)) and not k.startswith("_")
                         and k != "iterations")),
            tuple(model.metrics), tuple(getattr(model, "_metric_weighted", ())),
            tuple(getattr(model, "_metric_output", ())),
            _config.get_backend(), enabled, adaptive_threads,
            tuple(getattr(l, "rate", None) for l in model._graph.layers))


def train_plan(model):
    """The model's cached training plan, re-planned when its key changed; None if unsupported."""
    if not enabled or not getattr(model, "compiled", False) or not getattr(model, "built", False):
        return None
    if not model._metrics_resolved:
        model._resolve_metrics()
    try:
        key = _train_key(model)
    except AttributeError:
        return None
    cached = model.__dict__.get("_fg_train_plan")
    if cached is not None and cached[0] == key:
        return cached[1]
    plan = compile_plan(model, training=True)
    model.__dict__["_fg_train_plan"] = (key, plan)
    return plan


def inference_plan(model, backend=None):
    """The model's cached inference plan (forward only), or None. `backend`:
    the active backend's name when the caller already has it."""
    if not enabled:
        return None
    store = getattr(model, "_store", None)
    if store is None:
        return None
    if backend is None:
        backend = _config.get_backend()
    cached = model.__dict__.get("_fg_infer_plan")
    acts = tuple(model._output_activations)
    if cached is not None and cached[0] is store and cached[1] == acts and cached[2] == backend \
            and cached[3] is model._graph:
        return cached[4]
    plan = compile_plan(model, training=False)
    model.__dict__["_fg_infer_plan"] = (store, acts, backend, model._graph, plan)
    return plan
