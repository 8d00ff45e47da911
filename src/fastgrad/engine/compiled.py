"""The compiled executor: a whole Sequential trained / run in ONE C call per
chunk of batches (csrc/step, binding fastgrad._native.step).

The Python Step (engine/step.py) is the reference executor; this module runs
the same description — the layers' describe(), the loss, the fused output
activation, the optimizer — inside C:

    compile_plan(model) -> CompiledPlan | None
        Layers with a C path: Dense, Activation, Flatten, Dropout,
        LayerNormalization over the whole sample, BatchNormalization of 2-D
        input (its moving statistics are passed as pointers and updated in C).
        One accuracy metric runs in C; other metrics are updated in Python
        from the last-layer outputs the C step copies out per call
        (`py_metrics`, see CompiledPlan._py_metrics).
        None when some layer / loss / optimizer / metric has no C path, when
        the active backend is not "native", or when the step module is not
        built; `unsupported_reason(model)` says why. Models fall back to the
        Python path, with the same results.
    train_plan(model) / inference_plan(model)
        the cached plan of a model, rebuilt only when what it points at
        changed (flat buffers, optimizer slots, loss, fusion, frozen layers,
        metrics); cheap enough to call per fit / predict_on_batch.

A plan holds pointers into the model's flat parameter / gradient buffers and
the optimizer's slot arrays (ParamStore never reallocates them; the plan key
includes their identities, so a rebuilt model or reset optimizer re-plans).

Training (`fit_epoch`, `train_batch`): the shuffle permutation comes from the
library RNG exactly as engine.data.Batches draws it, so both executors see
the same batches; batches are gathered inside C from the caller's arrays (no
dataset copy, no fancy indexing per batch). With per-batch callbacks each C
call runs one batch (callbacks see every batch, KeyboardInterrupt leaves the
parameters of the last completed step); without them a whole epoch is one
call. The learning rate is evaluated per step in Python (schedules) and
passed as an array; optimizer.iterations and the Dropout stream offsets are
advanced afterwards by the number of steps actually run.

Inference (`predict`, `predict_rows`): predict runs all rows in one call (C
splits them into fixed 256-row chunks, in parallel over chunks);
predict_rows for <= 64 rows computes into a buffer preallocated with the plan
and returns a copy (a fresh array the caller owns), so a single-row call
costs one shape check, one C call and one small allocation.
"""
from __future__ import annotations

import contextlib
import math
import os
import threading
import time

import numpy as np

from .. import _config
from .. import _native

__all__ = ["CompiledPlan", "compile_plan", "unsupported_reason", "train_plan", "inference_plan",
           "enabled"]

# ---- codes shared with csrc/step/fg_step.h
_LAYER_DENSE, _LAYER_ACTIVATION, _LAYER_DROPOUT, _LAYER_LAYERNORM, _LAYER_BATCHNORM = 1, 2, 3, 4, 5
_ACT = {"linear": 0, "relu": 1, "sigmoid": 2, "tanh": 3, "gelu": 4, "gelu_tanh": 5,
        "softmax": 100, "log_softmax": 101}
_ACT_NONE = -1
_LOSS_SPARSE, _LOSS_DENSE_CE, _LOSS_BCE, _LOSS_MSE = 1, 2, 3, 4
_OPT_SGD, _OPT_ADAM, _OPT_RMSPROP, _OPT_ADAGRAD = 1, 2, 3, 4
_ACC_NONE, _ACC_SPARSE, _ACC_CATEGORICAL, _ACC_BINARY = 0, 1, 2, 3
_TARGET_INT32, _TARGET_INT64, _TARGET_FLOAT32 = 1, 2, 3
_ERR_NONFINITE = 4
_SMALL_ROWS = 64
#: seconds of training per C call when only the progress bar listens to batches
_PROGBAR_CHUNK_S = 0.05

#: switch for tests / benchmarks (also FASTGRAD_COMPILED=0 in the environment)
enabled = os.environ.get("FASTGRAD_COMPILED", "1").strip().lower() not in ("0", "false", "no", "off")
#: let a training chunk run on one thread instead of get_num_threads() when that is faster
#: right now (probed every 64 batches; the results are the same bits either way, see
#: csrc/step/step.c "thread policy"); also FASTGRAD_ADAPTIVE_THREADS=0
adaptive_threads = os.environ.get("FASTGRAD_ADAPTIVE_THREADS", "1").strip().lower() not in (
    "0", "false", "no", "off")


class _Unsupported(Exception):
    pass


def _only_progbar(cbs):
    """True when the progress bar is the only callback with train-batch hooks."""
    try:
        pb = cbs._progbar
        live = cbs._live["on_train_batch_begin"] + cbs._live["on_train_batch_end"]
    except (AttributeError, KeyError, TypeError):
        return False
    return pb is not None and bool(live) and all(getattr(f, "__self__", None) is pb for f in live)


def _step_module():
    return _native.module("step")


# ====================================================================== analysis
def _regularizer_coeffs(reg):
    """(l1, l2) of a built-in regularizer, None for none; unknown classes -> unsupported."""
    if reg is None:
        return 0.0, 0.0
    from .. import regularizers as R
    if type(reg) not in (R.Regularizer, R.L1, R.L2, R.L1L2):
        raise _Unsupported(f"regularizer {type(reg).__name__} has no C path")
    return float(reg.l1), float(reg.l2)


def _norm_desc(kind, layer, d, width, trainable, **extra):
    """C description of a LayerNormalization / BatchNormalization layer: gamma
    and beta offsets (-1 when scale / center is off) and their regularizers
    (none when frozen, as the Python path skips frozen layers)."""
    p = d["params"]
    l1w, l2w = _regularizer_coeffs(layer.gamma_regularizer if layer.scale and trainable else None)
    l1b, l2b = _regularizer_coeffs(layer.beta_regularizer if layer.center and trainable else None)
    return dict(kind=kind, act=0, out_act=_ACT_NONE, trainable=trainable, **{"in": width}, out=width,
                w_off=int(p["gamma"]["offset"]) if layer.scale else -1,
                b_off=int(p["beta"]["offset"]) if layer.center else -1,
                l1_w=l1w, l2_w=l2w, l1_b=l1b, l2_b=l2b, eps=float(np.float32(layer.epsilon)), **extra)


def _describe_layers(model, training):
    """C layer descriptions (Flatten dropped: a contiguous reshape is free)."""
    from ..layers.core import Activation, Dense, Flatten
    from ..layers.dropout import Dropout
    from ..layers.normalization import BatchNormalization, LayerNormalization
    store = model._store
    frozen = {id(e.layer) for e in store.frozen}
    descs, dropouts = [], []
    width = int(np.prod(model._input_shape))
    for layer in model.layers:
        t = type(layer)
        d = layer.describe()
        if t is Flatten:
            continue
        if t is Dense:
            kernel = d["params"]["kernel"]
            bias = d["params"].get("bias")
            trainable = id(layer) not in frozen
            l1w, l2w = _regularizer_coeffs(layer.kernel_regularizer)
            l1b, l2b = _regularizer_coeffs(layer.bias_regularizer if layer.use_bias else None)
            if not trainable:
                l1w = l2w = l1b = l2b = 0.0
            act = d["run_activation"]
            if act not in _ACT:
                raise _Unsupported(f"activation {act!r} of {layer.name}")
            descs.append(dict(kind=_LAYER_DENSE, act=_ACT[act], out_act=_ACT_NONE,
                              trainable=trainable, **{"in": width}, out=int(layer.units),
                              w_off=int(kernel["offset"]),
                              b_off=int(bias["offset"]) if bias is not None else -1,
                              l1_w=l1w, l2_w=l2w, l1_b=l1b, l2_b=l2b))
            width = int(layer.units)
        elif t is Activation:
            act = d["run_activation"]
            if act not in _ACT:
                raise _Unsupported(f"activation {act!r} of {layer.name}")
            descs.append(dict(kind=_LAYER_ACTIVATION, act=_ACT[act], out_act=_ACT_NONE,
                              **{"in": width}, out=width))
        elif t is Dropout:
            seed = layer.get_rng_state()["seed"]
            if training and layer.rate > 0 and seed is None:
                seed = layer._ensure_seed()
            descs.append(dict(kind=_LAYER_DROPOUT, act=0, out_act=_ACT_NONE, **{"in": width},
                              out=width, rate=float(layer.rate), seed=int(seed or 0)))
            if layer.rate > 0:
                dropouts.append((len(descs) - 1, layer))
        elif t is LayerNormalization:
            if layer._d != width:
                raise _Unsupported(f"layer {layer.name}: LayerNormalization over part of each sample "
                                   f"({layer._norm_shape}) has no C path")
            descs.append(_norm_desc(_LAYER_LAYERNORM, layer, d, width, id(layer) not in frozen))
        elif t is BatchNormalization:
            if not layer._last or layer._c != width:
                raise _Unsupported(f"layer {layer.name}: BatchNormalization of a feature axis of "
                                   f"{layer.input_shape} has no C path (only 2-D input)")
            descs.append(_norm_desc(_LAYER_BATCHNORM, layer, d, width, id(layer) not in frozen,
                                    bn_momentum=float(np.float32(layer.momentum)),
                                    bn_rest=float(np.float32(1.0 - layer.momentum)),
                                    moving_mean=layer.state["moving_mean"],
                                    moving_var=layer.state["moving_variance"]))
        else:
            raise _Unsupported(f"layer {layer.name} ({t.__name__}) has no C path")
        if int(np.prod(layer.output_shape)) != width:
            raise _Unsupported(f"layer {layer.name}: unexpected output shape {layer.output_shape}")
    if not descs:
        raise _Unsupported("no layer with a C path")
    out_act = model._output_activation
    if out_act is not None:
        if model._fused_layer is not model.layers[-1] or out_act not in ("softmax", "sigmoid"):
            raise _Unsupported(f"fused output activation {out_act!r} not on the last layer")
        descs[-1]["out_act"] = _ACT[out_act]
    return descs, dropouts


def _loss_code(model):
    from .. import losses as L
    loss = model.loss
    logits = model._output_activation is not None or bool(getattr(loss, "from_logits", False))
    t = type(loss)
    if t is L.MeanSquaredError:
        return _LOSS_MSE
    if t is L.SparseCategoricalCrossentropy and logits:
        return _LOSS_SPARSE
    if t is L.CategoricalCrossentropy and logits:
        return _LOSS_DENSE_CE
    if t is L.BinaryCrossentropy and logits:
        return _LOSS_BCE
    raise _Unsupported(f"loss {loss.name} ({t.__name__}, on "
                       f"{'logits' if logits else 'probabilities'}) has no fused C path")


def _optimizer_desc(opt, n):
    from ..optimizers import optimizers as O
    t = type(opt)
    if not opt.built or opt._n != n:
        opt.build(n)
    s = opt.slots
    d = dict(decoupled=True, weight_decay=float(opt.weight_decay or 0.0),
             clipnorm=opt.clipnorm or 0.0, global_clipnorm=opt.global_clipnorm or 0.0,
             clipvalue=opt.clipvalue or 0.0)
    if t is O.SGD:
        d.update(kind=_OPT_SGD, momentum=float(opt.momentum), nesterov=opt.nesterov,
                 s1=s.get("momentum"))
    elif t in (O.Adam, O.AdamW):
        d.update(kind=_OPT_ADAM, beta1=float(opt.beta_1), beta2=float(opt.beta_2),
                 eps=float(opt.epsilon), s1=s["m"], s2=s["v"])
    elif t is O.RMSprop:
        d.update(kind=_OPT_RMSPROP, rho=float(opt.rho), momentum=float(opt.momentum),
                 eps=float(opt.epsilon), centered=opt.centered, s1=s["velocity"],
                 s2=s.get("momentum"), s3=s.get("average_gradient"))
    elif t is O.Adagrad:
        d.update(kind=_OPT_ADAGRAD, eps=float(opt.epsilon), s1=s["accumulator"])
    else:
        raise _Unsupported(f"optimizer {t.__name__} has no C path")
    for k in ("s1", "s2", "s3"):
        a = d.get(k)
        if a is not None and not (a.dtype == np.float32 and a.flags.c_contiguous and a.size == n):
            raise _Unsupported(f"optimizer slot array {k} is not a flat float32 buffer")
    return d


#: floats of last-layer output a capturing C call may write (64 MiB); longer
#: chunks are split (see CompiledPlan._chunk)
_CAPTURE_FLOATS = 1 << 24


def _accuracy_spec(model, loss_code):
    """(kind, threshold, weighted) for Net.set_accuracy: weighted when the metric
    came from compile(weighted_metrics=), unweighted from compile(metrics=).
    None when the metrics need the Python path: then the plan captures the
    last-layer outputs and updates them in Python (CompiledPlan._py_metrics)."""
    from .. import metrics as M
    ms = list(model.metrics)
    if not ms:
        return _ACC_NONE, 0.5, True
    if len(ms) > 1:
        return None
    m = ms[0]
    flags = getattr(model, "_metric_weighted", ())
    weighted = bool(flags[0]) if len(flags) == 1 else False
    t = type(m)
    out_act = model._output_activation
    if t is M.SparseCategoricalAccuracy and loss_code == _LOSS_SPARSE:
        return _ACC_SPARSE, 0.5, weighted
    if t is M.CategoricalAccuracy and loss_code != _LOSS_SPARSE:
        return _ACC_CATEGORICAL, 0.5, weighted
    if t is M.BinaryAccuracy and loss_code != _LOSS_SPARSE:
        if out_act is None:
            return _ACC_BINARY, float(m.threshold), weighted
        if out_act == "sigmoid" and m.threshold == 0.5:
            # sigmoid(x) > 0.5  <=>  x > 0 (as the metric does)
            return _ACC_BINARY, 0.0, weighted
    return None


def _analyse(model, training):
    if not enabled:
        raise _Unsupported("compiled execution is disabled (fastgrad.engine.compiled.enabled)")
    if _step_module() is None:
        raise _Unsupported(f"the step extension is not built ({_native.import_error('step')})")
    if _config.get_backend() != "native":
        raise _Unsupported(f"the active backend is {_config.get_backend()!r}, not 'native'")
    if not getattr(model, "built", False) or model._store is None:
        raise _Unsupported("the model is not built")
    if getattr(model, "_seq_layers", None) is None:
        raise _Unsupported("graph models run on the Python executor")
    if getattr(model._store, "parent", None) is not None:
        raise _Unsupported("a sub-model sharing another model's buffers")
    descs, dropouts = _describe_layers(model, training)
    if training and not any(d["kind"] == _LAYER_DENSE or d.get("w_off", -1) >= 0 or d.get("b_off", -1) >= 0
                            for d in descs):
        raise _Unsupported("no layer with trainable parameters")
    spec = dict(descs=descs, dropouts=dropouts, in_features=int(np.prod(model._input_shape)))
    if training:
        if not model.compiled:
            raise _Unsupported("the model is not compiled")
        if not model._metrics_resolved:
            model._resolve_metrics()
        spec["loss"] = _loss_code(model)
        spec["opt"] = _optimizer_desc(model.optimizer, model._store.size)
        spec["acc"] = _accuracy_spec(model, spec["loss"])
    return spec


def unsupported_reason(model, training=True):
    """Why `model` cannot run compiled (None if it can)."""
    try:
        _analyse(model, training)
    except _Unsupported as exc:
        return str(exc)
    return None


# ====================================================================== plan
class CompiledPlan:
    """A model compiled to one C executor (see the module docstring)."""

    def __init__(self, model, spec, training):
        self.model = model
        self.store = model._store
        self.training = training
        self.spec = spec
        self.dropouts = spec["dropouts"]
        mod = _step_module()
        if training:
            opt = spec["opt"]
            self.net = mod.Net(spec["descs"], spec["in_features"], self.store.params,
                               self.store.grads, spec["loss"], opt)
            self.loss_code = spec["loss"]
            self.py_metrics = spec["acc"] is None
            if not self.py_metrics:
                self.net.set_accuracy(*spec["acc"])
            self.net.set_adaptive_threads(adaptive_threads)
        else:
            self.net = mod.Net(spec["descs"], spec["in_features"], self.store.params, None, 0, None)
            self.loss_code = 0
            self.py_metrics = False
        self.out_shape = tuple(model.layers[-1].output_shape)
        self.in_shape = tuple(model._input_shape)
        self._drop_offsets = (np.zeros(len(spec["descs"]), dtype=np.uint64)
                              if self.dropouts else None)
        self._stats = np.empty((1, 4), dtype=np.float64)
        self._lr = np.empty(1, dtype=np.float32)
        self._outs = np.empty((0, int(np.prod(self.out_shape))), dtype=np.float32)
        # one C call at a time per plan (its workspaces are shared): concurrent
        # Python threads queue here instead of getting the C side's "busy" error
        self._lock = threading.Lock()

    # -------------------------------------------------------------- helpers
    def _targets(self, y):
        if self.loss_code == _LOSS_SPARSE:
            if y.dtype == np.int32:
                return y, _TARGET_INT32
            if y.dtype == np.int64:
                return y, _TARGET_INT64
            return np.ascontiguousarray(y, dtype=np.int64), _TARGET_INT64
        return np.ascontiguousarray(y, dtype=np.float32), _TARGET_FLOAT32

    def _buffers(self, n):
        if self._stats.shape[0] < n:
            self._stats = np.empty((n, 4), dtype=np.float64)
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
        for i, layer in self.dropouts:
            do[i] = layer.get_rng_state()["offset"]

    def _sync_dropout_out(self):
        do = self._drop_offsets
        for i, layer in self.dropouts:
            st = layer.get_rng_state()
            layer.set_rng_state({"seed": st["seed"], "offset": int(do[i])})

    def _chunk(self, bs):
        """Batches per C call at most: unbounded, unless outputs are captured."""
        if not self.py_metrics:
            return 1 << 62
        return max(1, _CAPTURE_FLOATS // max(1, bs * self._outs.shape[1]))

    def _capture_buffer(self, xa, start, nb, bs):
        """The output-capture buffer for batches start .. start+nb-1, or None
        when the metrics run in C."""
        if not self.py_metrics:
            return None
        rows = min((start + nb) * bs, xa.shape[0]) - start * bs
        if self._outs.shape[0] < rows:
            self._outs = np.empty((rows, self._outs.shape[1]), dtype=np.float32)
        return self._outs

    @contextlib.contextmanager
    def _call(self, cap):
        """One C call: the plan's lock, with the output capture set to `cap`
        for the duration (when given)."""
        with self._lock:
            if cap is not None:
                self.net.capture_outputs(cap)
            try:
                yield
            finally:
                if cap is not None:
                    self.net.capture_outputs(None)

    def _py_metrics(self, ya, sw, perm, start, done, bs):
        """Metrics without a C path, from the captured outputs of batches
        start .. start+done-1, exactly as the Python Step updates them (one
        update over the chunk's rows: every metric here is a sum over samples)."""
        if not done:
            return
        n = ya.shape[0]
        p0, p1 = start * bs, min((start + done) * bs, n)
        idx = perm[p0:p1] if perm is not None else slice(p0, p1)
        self.model._update_metrics([self._outs[:p1 - p0]], [ya[idx]],
                                   [sw[idx] if sw is not None else None])

    def _run(self, xa, ya, y_kind, sw, perm, start, nb, bs):
        """nb training steps from batch `start`; returns (status, n_done, stats)."""
        stats, lr = self._buffers(nb)
        self._fill_lr(lr, nb)
        if self.dropouts:
            self._sync_dropout_in()
        cap = self._capture_buffer(xa, start, nb, bs)
        with self._call(cap):
            st, done = self.net.train_chunk(xa, ya, y_kind, sw, perm, start, nb, bs, lr[:nb],
                                            self.model.optimizer.iterations, self._drop_offsets,
                                            stats, _config.get_num_threads())
        if cap is not None:
            self._py_metrics(ya, sw, perm, start, done, bs)
        self.model.optimizer.iterations += done
        if self.dropouts:
            self._sync_dropout_out()
        if st != 0 and st != _ERR_NONFINITE:
            _step_module().check(st, "fit (compiled step)",
                                 f"batch {start + done} of size {bs}, {xa.shape[0]} samples")
        return st, done, stats

    def _metrics_add(self, stats, k0, k1):
        ms = self.model.metrics
        if not ms or self.py_metrics:
            return
        m = ms[0]
        for k in range(k0, k1):
            m.total += float(stats[k, 1])
            m.count += float(stats[k, 2])

    # -------------------------------------------------------------- training
    def fit_epoch(self, epoch, xa, ya, sw, batch_size, shuffle, cbs, batch_hooks):
        """One epoch of Sequential.fit; returns (loss total, samples seen) exactly as the
        Python loop accumulates them (total = sum of batch mean loss * rows)."""
        from .step import NonFiniteLossError
        model = self.model
        n = xa.shape[0]
        steps = (n + batch_size - 1) // batch_size
        perm = _config.rng().permutation(n) if shuffle else None
        if perm is not None and perm.dtype != np.int64:
            perm = perm.astype(np.int64)
        ya, y_kind = self._targets(ya)
        total, seen = 0.0, 0
        b = 0
        # Batch callbacks see every batch, one C call each -- unless the only
        # listener is the progress bar, which draws at most every 0.25 s: then
        # chunks of ~_PROGBAR_CHUNK_S run per call and the bar hears of the
        # last batch of each chunk (what it would draw anyway).
        progbar_only = batch_hooks and _only_progbar(cbs)
        per_call = min(steps, self._chunk(batch_size)) if not batch_hooks else 1
        while b < steps:
            nb = min(per_call, steps - b)
            if batch_hooks:
                cbs.on_train_batch_begin(b)
            t0 = time.perf_counter() if progbar_only else 0.0
            st, done, stats = self._run(xa, ya, y_kind, sw, perm, b, nb, batch_size)
            for k in range(done):
                rows = int(stats[k, 3])
                total += float(stats[k, 0]) * rows
                seen += rows
            self._metrics_add(stats, 0, done)
            if st == _ERR_NONFINITE:
                bad = b + done
                s = bad * batch_size
                e = min(s + batch_size, n)
                raise NonFiniteLossError(
                    f"fit: loss is {stats[done, 0]} at epoch {epoch + 1}, batch {bad} (samples "
                    f"{s}..{e - 1}); training stopped before applying that step, so the model keeps "
                    "the parameters of the last good step — lower the learning rate, add "
                    "clipnorm, or check the data")
            b += done
            if batch_hooks:
                cbs.on_train_batch_end(b - 1, model._logs(total / seen))
                if model.stop_training:
                    break
                if progbar_only:
                    per_batch = (time.perf_counter() - t0) / max(done, 1)
                    per_call = max(1, min(4096, self._chunk(batch_size),
                                          int(_PROGBAR_CHUNK_S / max(per_batch, 1e-7))))
        return total, seen

    def train_chunk(self, x, y, perm, start_batch, n_batches, batch_size, sample_weight=None):
        """Run batches start_batch .. start_batch+n_batches-1 of `perm` (int64 row order, or
        None for in order) over validated arrays (x float32 C-contiguous, y as engine.data
        makes it). The learning rate per step comes from the optimizer (schedules
        evaluated per step); optimizer.iterations and dropout streams advance.
        Returns (loss_sum, accuracy_sum, n_seen): sum over batches of (batch mean loss x
        rows), of the accuracy metric's hits (weighted if it is a weighted metric), and rows. Raises
        NonFiniteLossError (the bad step not applied) like fit."""
        from .step import NonFiniteLossError
        if perm is not None:
            perm = np.ascontiguousarray(perm, dtype=np.int64)
        ya, y_kind = self._targets(y)
        st, done, stats = self._run(x, ya, y_kind, sample_weight, perm, start_batch, n_batches,
                                    batch_size)
        loss_sum = float(np.dot(stats[:done, 0], stats[:done, 3]))
        acc = float(stats[:done, 1].sum())
        seen = int(stats[:done, 3].sum())
        if st == _ERR_NONFINITE:
            raise NonFiniteLossError(f"loss is {stats[done, 0]} at batch {start_batch + done}")
        return loss_sum, acc, seen

    def train_batch(self, xa, ya, sw):
        """One step on the whole (x, y) (Sequential.train_on_batch); returns the loss."""
        from .step import NonFiniteLossError
        ya, y_kind = self._targets(ya)
        n = xa.shape[0]
        st, done, stats = self._run(xa, ya, y_kind, sw, None, 0, 1, n)
        if st == _ERR_NONFINITE:
            raise NonFiniteLossError(f"loss is {stats[0, 0]}")
        self._metrics_add(stats, 0, 1)
        return float(stats[0, 0])

    def evaluate_arrays(self, xa, ya, sw, batch_size, cbs):
        """Sequential._evaluate_arrays on the compiled path; returns the logs dict."""
        model = self.model
        for m in model.metrics:
            m.reset_state()
        n = xa.shape[0]
        steps = (n + batch_size - 1) // batch_size
        hooks = cbs is not None and cbs.has_batch_hooks("test")
        if cbs is not None:
            cbs.on_test_begin()
        ya, y_kind = self._targets(ya)
        total = 0.0
        per_call = 1 if hooks else min(steps, self._chunk(batch_size))
        b = 0
        while b < steps:
            nb = min(per_call, steps - b)
            if hooks:
                cbs.on_test_batch_begin(b)
            stats, _ = self._buffers(nb)
            cap = self._capture_buffer(xa, b, nb, batch_size)
            with self._call(cap):
                st, done = self.net.evaluate(xa, ya, y_kind, sw, None, b, nb, batch_size, stats,
                                             _config.get_num_threads())
            if cap is not None:
                self._py_metrics(ya, sw, None, b, done, batch_size)
            for k in range(done):
                total += float(stats[k, 0]) * int(stats[k, 3])
            self._metrics_add(stats, 0, done)
            b += done
            if hooks:
                cbs.on_test_batch_end(b - 1, model._logs(total / min(b * batch_size, n)))
        logs = model._logs(total / n)
        if cbs is not None:
            cbs.on_test_end(logs)
        return logs

    # -------------------------------------------------------------- executor interface
    def max_batches_per_call(self, batch_size):
        return self._chunk(batch_size)

    def train(self, data, perm, start, nb, bs):
        """Executor interface (see models.Model.fit): batches start .. start+nb-1."""
        from .step import NonFiniteLossError
        ya, y_kind = self._targets(data.ys[0])
        st, done, stats = self._run(data.xs[0], ya, y_kind, data.sws[0], perm, start, nb, bs)
        self._metrics_add(stats, 0, done)
        out = np.empty((done, 2))
        out[:, 0] = stats[:done, 0]
        out[:, 1] = stats[:done, 3]
        if st == _ERR_NONFINITE:
            exc = NonFiniteLossError(f"loss is {stats[done, 0]}", batch=start + done,
                                     loss=float(stats[done, 0]))
            exc.done_stats = out
            raise exc
        return out

    def evaluate(self, data, start, nb, bs):
        xa = data.xs[0]
        ya, y_kind = self._targets(data.ys[0])
        sw = data.sws[0]
        stats, _ = self._buffers(nb)
        cap = self._capture_buffer(xa, start, nb, bs)
        with self._call(cap):
            st, done = self.net.evaluate(xa, ya, y_kind, sw, None, start, nb, bs, stats,
                                         _config.get_num_threads())
        if cap is not None:
            self._py_metrics(ya, sw, None, start, done, bs)
        self._metrics_add(stats, 0, done)
        if st != 0:
            _step_module().check(st, "evaluate (compiled step)")
        out = np.empty((done, 2))
        out[:, 0] = stats[:done, 0]
        out[:, 1] = stats[:done, 3]
        return out

    def predict_list(self, xs):
        return [self.predict_rows(xs[0])]

    # -------------------------------------------------------------- inference
    def predict(self, xa, out):
        """out[...] = model(xa) for all rows in one call (xa float32 C-contiguous)."""
        with self._lock:
            return self.net.predict(xa, out, _config.get_num_threads())

    def predict_small(self, xa):
        """Alias of predict_rows (a fresh array; <= 64 rows use the preallocated buffer)."""
        return self.predict_rows(xa)

    def predict_rows(self, xa):
        """A new array with model(xa); <= 64 rows go through the preallocated buffer."""
        n = xa.shape[0]
        if n <= _SMALL_ROWS:
            with self._lock:
                res = self.net.predict_small(xa, _config.get_num_threads())
        else:
            res = np.empty((n,) + self.out_shape, dtype=np.float32)
            with self._lock:
                self.net.predict(xa, res, _config.get_num_threads())
        if len(self.out_shape) != 1:
            res = res.reshape((n,) + self.out_shape)
        return res


def compile_plan(model, training=True):
    """A fresh CompiledPlan for `model`, or None (see unsupported_reason)."""
    try:
        spec = _analyse(model, training)
    except _Unsupported:
        return None
    return CompiledPlan(model, spec, training)


# ====================================================================== caching
def _train_key(model):
    opt = model.optimizer
    store = model._store
    return (store, store.segments, model.loss, model._output_activation, opt,
            tuple(id(a) for a in opt.slots.values()), opt._n,
            tuple(sorted((k, v) for k, v in vars(opt).items()
                         if isinstance(v, (int, float, bool)) and not k.startswith("_")
                         and k != "iterations")),
            tuple(model.metrics), tuple(getattr(model, "_metric_weighted", ())),
            _config.get_backend(), enabled, adaptive_threads,
            tuple(getattr(l, "rate", None) for l in model.layers))


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
    act = model._output_activation
    if cached is not None and cached[0] is store and cached[1] == act and cached[2] == backend:
        return cached[3]
    plan = compile_plan(model, training=False)
    model.__dict__["_fg_infer_plan"] = (store, act, backend, plan)
    return plan
