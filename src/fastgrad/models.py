"""Sequential: the Keras-style model (compile / fit / evaluate / predict).

How a model holds its memory (see engine/ and layers/base.py):
- build(input_shape) chains the layers' shapes, then a ParamStore lays every
  trainable parameter end to end in ONE float32 buffer (gradients in a twin
  buffer) and binds each layer to views into them;
- compile() resolves the loss, optimizer and metrics, and when the loss is a
  cross-entropy on probabilities and the last layer ends in the matching
  softmax / sigmoid, moves that activation into the loss (the last layer
  emits logits, the loss runs the fused stable kernel, predict re-applies it);
- fit/evaluate/predict validate and convert the data ONCE per call
  (engine/data.py), then run engine/step.py's Step per batch: workspaces per
  batch size are allocated on the first batch and reused, so a steady-state
  step allocates no arrays.

Input conversion: float64 (or float16) and non-contiguous x are converted to
C-contiguous float32 once per call, as Keras does; integer / bool / complex /
object x raise TypeError (cast explicitly).
"""
from __future__ import annotations

import functools
import math
import numbers
import time

import numpy as np

from . import _config
from . import losses as _losses
from . import metrics as _metrics
from . import optimizers as _optimizers
from .engine import data as _data
from .engine.params import ParamStore
from .engine.step import NonFiniteLossError, Step
from .layers.base import Layer
from .layers.core import InputLayer

_F32 = np.dtype(np.float32)

__all__ = ["Sequential", "Model", "load_model", "NotCompiledError"]


class _CompiledHook:
    """engine.compiled, imported only once the native backend is in use (so the
    NumPy backend never loads the extension modules); kept once imported, as
    inference_plan is on predict_on_batch's per-call path."""

    _mod = None

    @classmethod
    def _module(cls):
        if cls._mod is None:
            from .engine import compiled
            cls._mod = compiled
        return cls._mod

    def train_plan(self, model):
        if _config.get_backend() != "native":
            return None
        return self._module().train_plan(model)

    def inference_plan(self, model):
        backend = _config.get_backend()
        if backend != "native":
            return None
        return self._module().inference_plan(model, backend)


_compiled = _CompiledHook()


def _blas_limited(method):
    """Run `method` under _config.blas_thread_limit() (NumPy backend only)."""
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with _config.blas_thread_limit():
            return method(self, *args, **kwargs)
    return wrapper


class NotCompiledError(RuntimeError, ValueError):
    """fit/evaluate/train_on_batch before compile()."""


def _unique_model_name(base="sequential", _counts={}):
    n = _counts.get(base, 0)
    _counts[base] = n + 1
    return base if n == 0 else f"{base}_{n}"


class Sequential:
    """A linear stack of layers.

    >>> model = fg.Sequential([fg.layers.Dense(128, activation="relu", input_shape=(784,)),
    ...                        fg.layers.Dense(10, activation="softmax")])
    >>> model.compile(optimizer="adam", loss="sparse_categorical_crossentropy",
    ...               metrics=["accuracy"])
    >>> history = model.fit(x, y, epochs=5, batch_size=128, validation_split=0.1)
    """

    def __init__(self, layers=None, name=None):
        if name is not None and not isinstance(name, str):
            raise TypeError(f"Sequential: name must be a string, got {name!r}")
        self.name = name or _unique_model_name()
        self.layers: list = []
        self._input_shape = None
        self.built = False
        self.compiled = False
        self.optimizer = None
        self.loss = None
        self.metrics: list = []
        self._metric_specs: list = []
        self._metric_weighted: list = []      # per metric: honours sample/class weights
        self._compile_metrics: list = []
        self._compile_weighted_metrics: list = []
        self._metrics_resolved = False
        self._output_activation = None
        self._fused_layer = None
        self._store = None
        self._step = None
        self.stop_training = False
        self.history = None
        if layers is not None:
            if isinstance(layers, Layer):
                layers = [layers]
            for layer in layers:
                self.add(layer)

    # ================================================================== structure
    def add(self, layer) -> None:
        """Append a layer (an InputLayer only declares the input shape)."""
        if not isinstance(layer, Layer):
            raise TypeError(f"Sequential.add: expected a fastgrad Layer, got {layer!r}")
        if isinstance(layer, InputLayer):
            if self.layers:
                raise ValueError("Sequential.add: an InputLayer must come first")
            self._input_shape = layer._declared_input_shape
            return
        if any(l is layer for l in self.layers):
            raise ValueError(f"Sequential.add: layer {layer.name!r} is already in the model")
        if any(l.name == layer.name for l in self.layers):
            raise ValueError(f"Sequential.add: a layer named {layer.name!r} is already in the model")
        if not self.layers and self._input_shape is None:
            self._input_shape = layer._declared_input_shape
        self.layers.append(layer)
        self._invalidate()
        if self._input_shape is not None:
            self.build(self._input_shape)

    def get_layer(self, name=None, index=None):
        """A layer by name or by index (Keras API)."""
        if (name is None) == (index is None):
            raise ValueError("get_layer: give exactly one of name or index")
        if index is not None:
            if not isinstance(index, (int, np.integer)) or not -len(self.layers) <= index < len(self.layers):
                raise ValueError(f"get_layer: index {index!r} out of range for "
                                 f"{len(self.layers)} layers")
            return self.layers[index]
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise ValueError(f"get_layer: no layer named {name!r}; layers: "
                         f"{', '.join(l.name for l in self.layers)}")

    def pop(self):
        if not self.layers:
            raise ValueError("Sequential.pop: the model has no layers")
        layer = self.layers.pop()
        self._invalidate()
        if self.layers and self._input_shape is not None:
            self.build(self._input_shape)
        return layer

    def _invalidate(self):
        if self._fused_layer is not None:
            self._fused_layer.merge_output_activation()
        self._fused_layer = None
        self._output_activation = None
        self.built = False
        self._store = None
        self._step = None

    def build(self, input_shape=None) -> None:
        """Build every layer for per-sample `input_shape` (no batch axis; a
        leading None is dropped) and allocate + initialise the flat buffers."""
        if input_shape is None:
            input_shape = self._input_shape
        if input_shape is None:
            raise ValueError(f"{self.name}: cannot build without an input shape; give the first "
                             "layer input_shape=... or call fit/predict on data")
        shape = tuple(input_shape)
        if shape and shape[0] is None:
            shape = shape[1:]
        if not self.layers:
            raise ValueError(f"{self.name}: the model has no layers")
        old = self.get_weights() if self.built else None
        s = shape
        for layer in self.layers:
            s = layer.build(s)
        self._input_shape = shape
        self._store = ParamStore(self.layers)
        self._store.initialize()
        for layer in self.layers:
            layer.reset_rng(_config.next_seed())
        self.built = True
        if old is not None and [w.shape for w in old] == [w.shape for w in self.get_weights()]:
            self.set_weights(old)
        if self.compiled:
            self._setup_loss_fusion()
            self.optimizer.build(self._store.size)
        self._step = None

    @property
    def input_shape(self):
        return None if self._input_shape is None else (None,) + tuple(self._input_shape)

    @property
    def output_shape(self):
        if not self.built:
            return None
        return (None,) + tuple(self.layers[-1].output_shape)

    # ================================================================== compile
    def compile(self, optimizer="rmsprop", loss=None, metrics=None, loss_weights=None,
                weighted_metrics=None, run_eagerly=None, steps_per_execution=1, jit_compile=None,
                **kwargs):
        """Configure training: optimizer (name or object), loss (name or object),
        metrics (names or objects; "accuracy" is resolved from the loss).
        As in Keras 3, `metrics` are unweighted (sample_weight / class_weight
        do not affect them) and `weighted_metrics` use the sample weights; the
        loss is always weighted.  A weighted metric whose name collides with an
        unweighted one is logged as "weighted_<name>"."""
        if kwargs:
            raise TypeError(f"compile: unexpected keyword argument(s) {', '.join(sorted(kwargs))}")
        if loss_weights is not None:
            raise ValueError("compile: loss_weights needs several outputs; Sequential has one")
        opt = _optimizers.get(optimizer, "compile: optimizer")
        loss_obj = _losses.get(loss, "compile: loss")
        if metrics is None:
            metrics = []
        elif isinstance(metrics, (str, _metrics.Metric)):
            metrics = [metrics]
        if weighted_metrics is None:
            weighted_metrics = []
        elif isinstance(weighted_metrics, (str, _metrics.Metric)):
            weighted_metrics = [weighted_metrics]
        plain, weighted = list(metrics), list(weighted_metrics)
        metrics = plain + weighted
        for m in metrics:       # fail now on unknown names
            if not (isinstance(m, str) and m.strip().lower() in ("accuracy", "acc")):
                _metrics.get(m, "compile: metrics")
        if self._fused_layer is not None:
            self._fused_layer.merge_output_activation()
            self._fused_layer = None
            self._output_activation = None
        self.optimizer = opt
        self.loss = loss_obj
        self._metric_specs = metrics
        self._metric_weighted = [False] * len(plain) + [True] * len(weighted)
        self._compile_metrics, self._compile_weighted_metrics = plain, weighted
        self.metrics = []
        self._metrics_resolved = False
        self.compiled = True
        if self.built:
            self._setup_loss_fusion()
            self.optimizer.build(self._store.size)
        self._step = None

    def _setup_loss_fusion(self):
        if self._fused_layer is not None:
            self._fused_layer.merge_output_activation()
            self._fused_layer = None
        self._output_activation = None
        act = self.loss.fusable_activation
        if act is None or not self.layers:
            return
        last = self.layers[-1]
        if getattr(last, "_run_act", None) == act:
            removed = last.split_output_activation()
            if removed is not None:
                self._fused_layer = last
                self._output_activation = removed

    def _resolve_metrics(self):
        if self._metrics_resolved:
            return
        y_sparse = self.loss.target_kind == "sparse"
        out_shape = self.layers[-1].output_shape
        self.metrics = [_metrics.resolve(m, self.loss, out_shape, y_sparse)
                        for m in self._metric_specs]
        plain_names = {m.name for m, w in zip(self.metrics, self._metric_weighted) if not w}
        for m, w in zip(self.metrics, self._metric_weighted):
            if w and m.name in plain_names:
                m.name = "weighted_" + m.name     # Keras's name for a colliding weighted metric
        names = [m.name for m in self.metrics]
        if len(set(names)) != len(names):
            raise ValueError(f"compile: metric names must be unique, got {names}")
        self._metrics_resolved = True

    @property
    def metrics_names(self) -> list:
        return ["loss"] + [m.name for m in self.metrics]

    # ================================================================== plumbing
    def _require_compiled(self, what):
        if not self.compiled:
            raise NotCompiledError(f"{what}: the model must be compiled first — call "
                                   "model.compile(optimizer=..., loss=...)")

    def _prepare_x(self, x, what, build=True, finite=True):
        if not self.layers:
            raise ValueError(f"{what}: the model has no layers")
        if not self.built:
            xa = _data.as_x(x, what)
            self._infer_output_shape(xa.shape[1:])   # shape errors before anything is built
            if build:
                self.build(xa.shape[1:])
            return xa
        return _data.as_x(x, what, self._input_shape, self.layers[0].name, finite)

    def _plan_predict(self, plan, x, what, call):
        """Run `call(xa)` on the compiled inference plan, which checks the rows
        for NaN/inf in C as it reads them (no separate scan here); when it
        reports one, the Python check names the first bad element."""
        if (type(x) is np.ndarray and x.dtype == _F32 and x.flags.c_contiguous
                and x.shape[1:] == self._input_shape and x.shape[0]):
            xa = x                         # as_x's own fast case, without two calls
        else:
            xa = self._prepare_x(x, what, finite=False)
        try:
            return call(xa)
        except ValueError:                # FG_ERR_NONFINITE, or another refusal
            _data.raise_if_nonfinite(xa, x, what)
            raise

    def _infer_output_shape(self, input_shape):
        s = tuple(input_shape)
        for layer in self.layers:
            s = tuple(layer.compute_output_shape(s))
        return s

    def _output_shape_for(self, xa):
        if self.built:
            return self.layers[-1].output_shape
        return self._infer_output_shape(xa.shape[1:])

    def _get_step(self):
        flags = tuple(l.trainable for l in self.layers)
        if flags != self._store.trainable_flags:
            self._store.refresh_trainable()
        st = self._step
        if st is None:
            st = self._step = Step(self)
        st.set_ops(_config.get_ops())
        return st

    def _prepare_xy(self, x, y, sample_weight, class_weight, what, build=True):
        """Validate and convert (x, y, weights); an unbuilt model is built only
        once everything passed (a bad y leaves it untouched)."""
        xa = self._prepare_x(x, what, build=False)
        n = xa.shape[0]
        out_shape = self._output_shape_for(xa)
        ya = _data.as_y(y, self.loss, out_shape, n, what)
        sw = _data.as_sample_weight(sample_weight, n, what)
        cw = _data.class_weight_to_sample_weight(class_weight, ya, self.loss, out_shape, what)
        if build and not self.built:
            self.build(xa.shape[1:])
        return xa, ya, _data.combine_weights(sw, cw)

    def _release(self):
        """Drop workspace references to the caller's arrays after a call."""
        st = self._step
        if st is not None:
            st.cache.drop_refs()

    def _logs(self, loss_mean, prefix=""):
        logs = {prefix + "loss": loss_mean}
        for m in self.metrics:
            r = m.result()
            if type(r) is not float:
                r = float(r) if np.ndim(r) == 0 else r
            logs[prefix + m.name] = r
        return logs

    # ================================================================== fit
    @_blas_limited
    def fit(self, x=None, y=None, batch_size=32, epochs=1, verbose=1, callbacks=None,
            validation_split=0.0, validation_data=None, shuffle=True, class_weight=None,
            sample_weight=None, initial_epoch=0, steps_per_epoch=None, validation_steps=None,
            validation_batch_size=None, validation_freq=1):
        """Train for `epochs` epochs; returns the History (history.history holds
        per-epoch lists of "loss", the metrics and their "val_" versions).

        The data is validated and converted once (see module docstring); the
        loss becoming NaN/inf raises NonFiniteLossError (a FloatingPointError)
        naming the epoch and batch, with the parameters of the last good step."""
        what = "fit"
        self._require_compiled(what)
        batch_size = _data.check_batch_size(batch_size, what)
        if isinstance(epochs, bool) or not isinstance(epochs, (numbers.Integral, np.integer)) \
                or epochs < 0:
            raise ValueError(f"fit: epochs must be a non-negative integer, got {epochs!r}")
        if isinstance(initial_epoch, bool) or not isinstance(initial_epoch, (numbers.Integral,
                                                                              np.integer)) \
                or initial_epoch < 0:
            raise ValueError(f"fit: initial_epoch must be a non-negative integer, got "
                             f"{initial_epoch!r}")
        if verbose == "auto":
            verbose = 1
        if verbose not in (0, 1, 2):
            raise ValueError(f"fit: verbose must be 0, 1, 2 or 'auto', got {verbose!r}")
        if not isinstance(validation_split, numbers.Real) or not 0.0 <= validation_split < 1.0:
            raise ValueError(f"fit: validation_split must be in [0, 1), got {validation_split!r}")
        if steps_per_epoch is not None or validation_steps is not None:
            raise ValueError("fit: steps_per_epoch/validation_steps need a dataset generator; "
                             "fastgrad fits in-memory arrays (leave them None)")
        if shuffle not in (True, False, "batch"):
            raise ValueError(f"fit: shuffle must be True or False, got {shuffle!r}")
        val_freq = validation_freq
        if isinstance(val_freq, bool) or not (
                (isinstance(val_freq, (numbers.Integral, np.integer)) and val_freq >= 1)
                or (hasattr(val_freq, "__contains__") and not isinstance(val_freq, str))):
            raise ValueError(f"fit: validation_freq must be a positive integer or a list of "
                             f"epochs, got {validation_freq!r}")

        xa, ya, sw = self._prepare_xy(x, y, sample_weight, class_weight, what, build=False)
        n = xa.shape[0]
        val = None
        if validation_data is not None:
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) not in (2, 3):
                raise ValueError("fit: validation_data must be a tuple (x_val, y_val) or "
                                 "(x_val, y_val, sample_weight_val)")
            vx, vy = validation_data[0], validation_data[1]
            vsw = validation_data[2] if len(validation_data) == 3 else None
            val = self._prepare_xy(vx, vy, vsw, None, "fit: validation_data", build=False)
            if val[0].shape[1:] != xa.shape[1:]:
                raise ValueError(f"fit: validation_data x has per-sample shape "
                                 f"{val[0].shape[1:]}, training x has {xa.shape[1:]}")
        elif validation_split:
            split_at = int(math.floor(n * (1.0 - validation_split)))
            if split_at == 0 or split_at == n:
                raise ValueError(f"fit: validation_split={validation_split} leaves "
                                 f"{split_at} training and {n - split_at} validation samples "
                                 f"out of {n}")
            val = (xa[split_at:], ya[split_at:], None if sw is None else sw[split_at:])
            xa, ya = xa[:split_at], ya[:split_at]
            sw = None if sw is None else sw[:split_at]
            n = split_at
        val_bs = _data.check_batch_size(validation_batch_size, what, batch_size)
        if not self.built:
            self.build(xa.shape[1:])

        self._resolve_metrics()
        step = self._get_step()
        self.optimizer.build(self._store.size)
        batches = _data.Batches(n, batch_size)
        from .callbacks import CallbackList
        cbs = CallbackList(callbacks, add_history=True, add_progbar=verbose != 0, model=self,
                           verbose=verbose, epochs=epochs, steps=batches.steps,
                           do_validation=val is not None,
                           metrics=self.metrics_names + ([f"val_{k}" for k in self.metrics_names]
                                                         if val is not None else []))
        self.history = cbs.history
        batch_hooks = cbs.has_batch_hooks("train")
        metrics = self.metrics
        mws = step.cache.get(batch_size)[-1]  # gather buffers live in the model workspace
        self.stop_training = False
        cbs.on_train_begin()
        epoch_logs = {}
        train_batch = step.train_batch
        for epoch in range(initial_epoch, epochs):
            for m in metrics:
                m.reset_state()
            total = 0.0
            seen = 0
            cbs.on_epoch_begin(epoch)
            plan = _compiled.train_plan(self)
            if plan is not None:
                # the compiled executor: the same step in C, one call per epoch
                # (per batch when callbacks listen to batches)
                total, seen = plan.fit_epoch(epoch, xa, ya, sw, batch_size, bool(shuffle), cbs,
                                             batch_hooks)
                batches_iter = ()
            else:
                batches_iter = batches.epoch(bool(shuffle))
            for b, (s, e, idx) in enumerate(batches_iter):
                if batch_hooks:
                    cbs.on_train_batch_begin(b)
                bx = _data.take(xa, idx, s, e, mws, "xb")
                by = _data.take(ya, idx, s, e, mws, "yb")
                bw = _data.take(sw, idx, s, e, mws, "swb")
                try:
                    loss = train_batch(bx, by, bw, metrics)
                except NonFiniteLossError as exc:
                    raise NonFiniteLossError(
                        f"fit: {exc} at epoch {epoch + 1}, batch {b} (samples {s}..{e - 1}); "
                        "training stopped before applying that step, so the model keeps the "
                        "parameters of the last good step — lower the learning rate, add "
                        "clipnorm, or check the data") from None
                rows = e - s
                total += loss * rows
                seen += rows
                if batch_hooks:
                    cbs.on_train_batch_end(b, self._logs(total / seen))
                if self.stop_training:
                    break
            epoch_logs = self._logs(total / max(seen, 1))
            if val is not None and self._due(epoch, val_freq):
                vlogs = self._evaluate_arrays(step, *val, val_bs, cbs)
                epoch_logs.update({"val_" + k: v for k, v in vlogs.items()})
            cbs.on_epoch_end(epoch, epoch_logs)
            if self.stop_training:
                break
        cbs.on_train_end(epoch_logs)
        self._release()
        return self.history if self.history is not None else cbs.history

    @staticmethod
    def _due(epoch, freq):
        if isinstance(freq, (numbers.Integral, np.integer)):
            return (epoch + 1) % int(freq) == 0
        return (epoch + 1) in freq

    # ================================================================== evaluate
    def _evaluate_arrays(self, step, xa, ya, sw, batch_size, cbs):
        """Loss/metrics over arrays already validated; fires test hooks on cbs."""
        plan = _compiled.train_plan(self)
        if plan is not None:
            return plan.evaluate_arrays(xa, ya, sw, batch_size, cbs)
        metrics = self.metrics
        for m in metrics:
            m.reset_state()
        n = xa.shape[0]
        hooks = cbs is not None and cbs.has_batch_hooks("test")
        if cbs is not None:
            cbs.on_test_begin()
        total = 0.0
        test_batch = step.test_batch
        for b, s in enumerate(range(0, n, batch_size)):
            e = min(s + batch_size, n)
            if hooks:
                cbs.on_test_batch_begin(b)
            loss = test_batch(xa[s:e], ya[s:e], None if sw is None else sw[s:e], metrics)
            total += loss * (e - s)
            if hooks:
                cbs.on_test_batch_end(b, self._logs(total / e))
        logs = self._logs(total / n)
        if cbs is not None:
            cbs.on_test_end(logs)
        return logs

    @_blas_limited
    def evaluate(self, x=None, y=None, batch_size=32, verbose="auto", sample_weight=None,
                 steps=None, callbacks=None, return_dict=False):
        """Loss (plus metrics) over (x, y): a float when there are no metrics,
        else [loss, *metrics] (or a dict with return_dict=True).  verbose:
        "auto"/1 a progress bar (as Keras), 0 silent."""
        what = "evaluate"
        self._require_compiled(what)
        if verbose == "auto":
            verbose = 1
        if verbose not in (0, 1, 2):
            raise ValueError(f"evaluate: verbose must be 0, 1, 2 or 'auto', got {verbose!r}")
        batch_size = _data.check_batch_size(batch_size, what)
        if steps is not None:
            raise ValueError("evaluate: steps needs a dataset generator; leave it None")
        xa, ya, sw = self._prepare_xy(x, y, sample_weight, None, what)
        self._resolve_metrics()
        step = self._get_step()
        cbs = None
        if callbacks is not None or verbose:
            from .callbacks import CallbackList
            cbs = CallbackList(callbacks, add_progbar=bool(verbose), model=self,
                               verbose=verbose, epochs=1,
                               steps=(xa.shape[0] + batch_size - 1) // batch_size)
        logs = self._evaluate_arrays(step, xa, ya, sw, batch_size, cbs)
        self._release()
        if return_dict:
            return logs
        vals = list(logs.values())
        return vals[0] if len(vals) == 1 else vals

    # ================================================================== predict
    def _default_predict_batch(self, n):
        widest = max([int(np.prod(l.output_shape)) for l in self.layers] +
                     [int(np.prod(self._input_shape))])
        return int(max(32, min(1024, (1 << 22) // max(widest, 1), n)))

    def predict(self, x, batch_size=None, verbose=0, steps=None, callbacks=None):
        """Model outputs for x (probabilities for a softmax/sigmoid model), as a
        new float32 array.  batch_size None picks a large batch (<= 1024 rows)."""
        what = "predict"
        if callbacks is None and not verbose and self.built:
            plan = _compiled.inference_plan(self)
            if plan is not None:
                if batch_size is not None:
                    _data.check_batch_size(batch_size, what, 1)
                return self._plan_predict(plan, x, what, plan.predict_rows)
        xa = self._prepare_x(x, what)
        n = xa.shape[0]
        batch_size = _data.check_batch_size(batch_size, what, self._default_predict_batch(n))
        step = self._get_step_for_predict()
        out = np.empty((n,) + tuple(self.layers[-1].output_shape), dtype=np.float32)
        if callbacks is None and not verbose:
            plan = _compiled.inference_plan(self)
            if plan is not None:
                plan.predict(xa, out)      # first call of an unbuilt model: x fully checked above
                return out
        cbs = None
        if callbacks is not None or verbose:
            from .callbacks import CallbackList
            cbs = CallbackList(callbacks, add_progbar=bool(verbose), model=self, verbose=verbose,
                               epochs=1, steps=(n + batch_size - 1) // batch_size)
            cbs.on_predict_begin()
        for b, s in enumerate(range(0, n, batch_size)):
            e = min(s + batch_size, n)
            if cbs is not None:
                cbs.on_predict_batch_begin(b)
            step.predict_batch(xa[s:e], out[s:e])
            if cbs is not None:
                cbs.on_predict_batch_end(b, {"outputs": out[s:e]})
        if cbs is not None:
            cbs.on_predict_end()
        self._release()
        return out

    def _get_step_for_predict(self):
        if not self.compiled:
            # inference without compile: no loss/optimizer, no fusion
            st = self._step
            if st is None or st.optimizer is not None:
                st = self._step = _InferenceStep(self)
            st.set_ops(_config.get_ops())
            return st
        return self._get_step()

    def predict_on_batch(self, x):
        """Outputs for one batch (no batching loop): a new array."""
        plan = _compiled.inference_plan(self) if self.built else None
        if plan is not None:
            return self._plan_predict(plan, x, "predict_on_batch", plan.predict_rows)
        xa = self._prepare_x(x, "predict_on_batch")
        return np.array(self._get_step_for_predict().predict_batch(xa), copy=True)

    def __call__(self, x, training=False):
        return self.predict_on_batch(x)

    # ================================================================== *_on_batch
    def train_on_batch(self, x, y=None, sample_weight=None, class_weight=None, return_dict=False):
        """One optimizer step on (x, y); returns the batch loss (and metrics)."""
        what = "train_on_batch"
        self._require_compiled(what)
        xa, ya, sw = self._prepare_xy(x, y, sample_weight, class_weight, what)
        self._resolve_metrics()
        step = self._get_step()
        self.optimizer.build(self._store.size)
        for m in self.metrics:
            m.reset_state()
        plan = _compiled.train_plan(self)
        try:
            if plan is not None:
                loss = plan.train_batch(xa, ya, sw)
            else:
                loss = step.train_batch(xa, ya, sw, self.metrics)
        except NonFiniteLossError as exc:
            raise NonFiniteLossError(f"train_on_batch: {exc}; the step was not applied") from None
        self._release()
        return self._batch_result(loss, return_dict)

    def test_on_batch(self, x, y=None, sample_weight=None, return_dict=False):
        what = "test_on_batch"
        self._require_compiled(what)
        xa, ya, sw = self._prepare_xy(x, y, sample_weight, None, what)
        self._resolve_metrics()
        step = self._get_step()
        for m in self.metrics:
            m.reset_state()
        loss = step.test_batch(xa, ya, sw, self.metrics)
        self._release()
        return self._batch_result(loss, return_dict)

    def _batch_result(self, loss, return_dict):
        logs = self._logs(loss)
        if return_dict:
            return logs
        vals = list(logs.values())
        return vals[0] if len(vals) == 1 else vals

    # ================================================================== weights
    def _require_built(self, what):
        if not self.built:
            raise ValueError(f"{what}: the model is not built yet; give the first layer "
                             "input_shape=... or call build()/fit() first")

    @property
    def weights(self) -> list:
        """The live weight arrays (views into the flat buffer), Keras order."""
        return self._store.weight_arrays() if self.built else []

    def get_weights(self) -> list:
        """Copies of all weights: per layer kernel, bias (BN: gamma, beta,
        moving_mean, moving_variance)."""
        return [np.array(w, copy=True) for w in self.weights]

    def set_weights(self, weights) -> None:
        """Set all weights (same order / shapes as get_weights); validated
        completely before anything is written."""
        self._require_built("set_weights")
        cur = self._store.weight_arrays()
        names = self._store.weight_names()
        weights = list(weights)
        if len(weights) != len(cur):
            raise ValueError(f"set_weights: expected {len(cur)} arrays ({', '.join(names)}), "
                             f"got {len(weights)}")
        conv = []
        for name, w, c in zip(names, weights, cur):
            a = np.asarray(w)
            if a.shape != c.shape:
                raise ValueError(f"set_weights: {name} has shape {c.shape}, got {a.shape}")
            if a.dtype.kind not in "fiu":
                raise TypeError(f"set_weights: {name} has unsupported dtype {a.dtype}")
            a = a.astype(np.float32)
            if not np.isfinite(a).all():
                raise ValueError(f"set_weights: {name} contains NaN or inf")
            conv.append(a)
        for a, c in zip(conv, cur):
            c[...] = a

    def count_params(self) -> int:
        self._require_built("count_params")
        return int(sum(w.size for w in self.weights))

    @property
    def trainable_weights(self):
        if not self.built:
            return []
        return [e.param for e in self._store.entries if e.layer.trainable]

    @property
    def non_trainable_weights(self):
        if not self.built:
            return []
        return ([e.param for e in self._store.entries if not e.layer.trainable] +
                [a for _, _, a in self._store.state_entries])

    @property
    def flat_params(self) -> np.ndarray:
        """The single float32 buffer holding every trainable parameter."""
        self._require_built("flat_params")
        return self._store.params

    @property
    def flat_grads(self) -> np.ndarray:
        self._require_built("flat_grads")
        return self._store.grads

    def refresh_trainable(self) -> None:
        """Call after changing a layer's `trainable` flag between fits."""
        if self.built:
            self._store.refresh_trainable()

    # ================================================================== info
    def summary(self, print_fn=None) -> None:
        print_fn = print_fn or print
        rows = [("Layer (type)", "Output Shape", "Param #")]
        for layer in self.layers:
            shape = (None,) + tuple(layer.output_shape) if layer.built else "?"
            rows.append((f"{layer.name} ({type(layer).__name__})", str(shape),
                         str(layer.count_params()) if layer.built else "?"))
        w = [max(len(r[i]) for r in rows) + 2 for i in range(3)]
        line = "=" * sum(w)
        print_fn(f'Model: "{self.name}"')
        print_fn(line)
        for i, r in enumerate(rows):
            print_fn(r[0].ljust(w[0]) + r[1].ljust(w[1]) + r[2].rjust(w[2]))
            print_fn(line if i == 0 else "-" * sum(w) if i < len(rows) - 1 else line)
        if self.built:
            total = self.count_params()
            trainable = sum(w.size for w in self.trainable_weights)
            print_fn(f"Total params: {total:,}")
            print_fn(f"Trainable params: {trainable:,}")
            print_fn(f"Non-trainable params: {total - trainable:,}")

    def get_config(self) -> dict:
        return {"name": self.name,
                "input_shape": None if self._input_shape is None else list(self._input_shape),
                "layers": [{"class_name": type(l).__name__, "config": l.get_config()}
                           for l in self.layers]}

    @classmethod
    def from_config(cls, config: dict):
        from . import layers as _layers
        model = cls(name=config.get("name"))
        shape = config.get("input_shape")
        if shape is not None:
            model._input_shape = tuple(shape)
        for d in config.get("layers", []):
            model.add(_layers.deserialize(d))
        if not model.built and model._input_shape is not None and model.layers:
            model.build(model._input_shape)
        return model

    def get_compile_config(self):
        if not self.compiled:
            return None
        def ser(specs):
            return [m if isinstance(m, str) else
                    {"class_name": type(m).__name__, "config": m.get_config()} for m in specs]
        return {"optimizer": _optimizers.serialize(self.optimizer),
                "loss": _losses.serialize(self.loss),
                "metrics": ser(self._compile_metrics),
                "weighted_metrics": ser(self._compile_weighted_metrics)}

    def compile_from_config(self, config):
        def deser(specs):
            out = []
            for m in specs or []:
                if isinstance(m, dict):
                    out.append(_metrics._CLASSES[m["class_name"]].from_config(m["config"]))
                else:
                    out.append(m)
            return out
        self.compile(optimizer=_optimizers.deserialize(config["optimizer"]),
                     loss=_losses.deserialize(config["loss"]),
                     metrics=deser(config.get("metrics")),
                     weighted_metrics=deser(config.get("weighted_metrics")))

    def describe(self) -> dict:
        """The model as plain data (for a compiled executor): layers with their
        parameter offsets in the flat buffer, the loss and the fused output
        activation."""
        self._require_built("describe")
        return {"name": self.name,
                "input_shape": tuple(self._input_shape),
                "n_params": int(self._store.size),
                "layers": [l.describe() for l in self.layers],
                "loss": None if self.loss is None else _losses.serialize(self.loss),
                "loss_on_logits": bool(self._step.logits) if self._step is not None else
                (self._output_activation is not None or
                 bool(getattr(self.loss, "from_logits", False))),
                "output_activation": self._output_activation,
                "optimizer": None if self.optimizer is None else
                _optimizers.serialize(self.optimizer)}

    # ================================================================== saving (saving.py)
    def save(self, filepath, *args, **kwargs):
        from . import saving
        return saving.save_model(self, filepath, *args, **kwargs)

    def save_weights(self, filepath, *args, **kwargs):
        from . import saving
        return saving.save_weights(self, filepath, *args, **kwargs)

    def load_weights(self, filepath, *args, **kwargs):
        from . import saving
        return saving.load_weights(self, filepath, *args, **kwargs)

    def __repr__(self):
        return f"<Sequential name={self.name!r} layers={len(self.layers)}>"


class _InferenceStep(Step):
    """Forward-only step for models that were never compiled."""

    def __init__(self, model):
        self.model = model
        self.layers = list(model.layers)
        self.store = model._store
        self.loss = None
        self.optimizer = None
        self.out_act = None
        self.logits = False
        from .engine.workspace import WorkspaceCache
        self.cache = WorkspaceCache(len(self.layers))
        self.first_param_layer = 0


Model = Sequential


def load_model(filepath, *args, **kwargs):
    """Load a model saved with model.save() (see fastgrad.saving)."""
    from . import saving
    return saving.load_model(filepath, *args, **kwargs)
