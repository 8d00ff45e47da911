"""Metrics (Keras names and semantics): streaming objects with
`update_state(y_true, y_pred, sample_weight=None)`, `result()`,
`reset_state()` and `name`.

During fit/evaluate the model feeds each batch's labels and output once.  When
the model's output activation was fused into the loss, the output is logits;
the model then calls `update_state_logits(y_true, logits, activation, ...)`:
the accuracy metrics decide on logits directly (argmax and the sign are
unchanged by softmax / sigmoid), the others get probabilities.

Logs use the name the user wrote ("mae" stays "mae").
"accuracy" / "acc" resolve to Binary-, Categorical- or
SparseCategoricalAccuracy from the loss and the shapes, as Keras does.

The compiled plan (engine/compiled.py) asks the model's one metric for a C
path through the public `lower(ctx, loss_code, out_act)`: the accuracies
return (ctx.accuracy_code(kind), threshold) where C computes them as they
do; the base class returns None and the metric is updated in Python from the
outputs the plan captures (so does a subclass that replaces the update).
"""
from __future__ import annotations

import numpy as np

__all__ = ["Metric", "Mean", "BinaryAccuracy", "CategoricalAccuracy", "SparseCategoricalAccuracy",
           "TopKCategoricalAccuracy", "SparseTopKCategoricalAccuracy", "MeanAbsoluteError",
           "MeanSquaredError", "Precision", "Recall", "AUC", "MeanMetricWrapper", "get", "resolve"]


def _w(sample_weight, n):
    if sample_weight is None:
        return None
    sw = np.asarray(sample_weight, dtype=np.float64).reshape(-1)
    if sw.shape[0] != n:
        raise ValueError(f"metric: sample_weight has {sw.shape[0]} entries for {n} samples")
    return sw


class Metric:
    """Base: a weighted running mean of per-sample values (`_values`)."""

    _default_name = "metric"

    def __init__(self, name=None, dtype=None):
        self.name = name or self._default_name
        self.reset_state()

    def reset_state(self):
        self.total = 0.0
        self.count = 0.0

    def _values(self, y_true, y_pred):
        if type(self).call is not Metric.call:
            from .autodiff.losses import metric_values
            return metric_values(self, y_true, y_pred)
        raise NotImplementedError

    def call(self, y_true, y_pred):
        """Per-sample values written with fg.math (a subclass that defines it is a
        weighted running mean of them)."""
        raise NotImplementedError(f"{type(self).__name__}.call")

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_pred = np.asarray(y_pred)
        v = self._values(np.asarray(y_true), y_pred)
        sw = _w(sample_weight, v.shape[0])
        if sw is None:
            self.total += float(v.sum(dtype=np.float64))
            self.count += v.shape[0]
        else:
            self.total += float(np.dot(v.astype(np.float64), sw))
            self.count += float(sw.sum())

    def update_state_logits(self, y_true, logits, activation, sample_weight=None, ops=None):
        """Update from logits whose output activation (softmax/sigmoid) was fused away."""
        if ops is None:
            from . import _config
            ops = _config.get_ops()
        self.update_state(y_true, ops.activation(activation, logits), sample_weight)

    def result(self) -> float:
        return self.total / self.count if self.count else 0.0

    # ------------------------------------------------------------------ compiled plan
    def lower(self, ctx, loss_code, out_act):
        """(ctx.accuracy_code(kind), threshold) when the compiled plan computes this
        metric in C for a model whose one loss has C code `loss_code` and whose fused
        output activation is `out_act` (None: none); None: updated in Python."""
        return None

    def _updates_as(self, cls):
        """True when this metric updates as `cls` does (not replaced by a subclass)."""
        t = type(self)
        return all(getattr(t, m) is getattr(cls, m)
                   for m in ("update_state", "update_state_logits", "_values"))

    def get_config(self):
        return {"name": self.name}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        return f"{type(self).__name__}(name={self.name!r})"


class Mean(Metric):
    """Weighted mean of the values given to update_state(values, sample_weight=None)."""

    _default_name = "mean"

    def update_state(self, values, sample_weight=None):
        v = np.asarray(values, dtype=np.float64).reshape(-1)
        sw = _w(sample_weight, v.shape[0])
        if sw is None:
            self.total += float(v.sum())
            self.count += v.shape[0]
        else:
            self.total += float(np.dot(v, sw))
            self.count += float(sw.sum())

    def add(self, value: float, weight: float = 1.0):
        """Fast path for one scalar (the training loop's loss tracker)."""
        self.total += value * weight
        self.count += weight


def _rows2d(a):
    return a.reshape(a.shape[0], -1) if a.ndim != 2 else a


class BinaryAccuracy(Metric):
    _default_name = "binary_accuracy"

    def __init__(self, name=None, dtype=None, threshold=0.5):
        self.threshold = float(threshold)
        super().__init__(name, dtype)

    def _hits(self, y_true, p, thr):
        p = _rows2d(p)
        t = y_true.reshape(p.shape) if y_true.size == p.size else _rows2d(y_true)
        return p, (p > thr) == (t > 0.5)

    def update_state(self, y_true, y_pred, sample_weight=None):
        p, hit = self._hits(np.asarray(y_true), np.asarray(y_pred), self.threshold)
        self._add(p, hit, sample_weight)

    def update_state_logits(self, y_true, logits, activation, sample_weight=None, ops=None):
        if activation == "sigmoid" and self.threshold == 0.5:
            # sigmoid(x) > 0.5  <=>  x > 0
            p, hit = self._hits(y_true, logits, 0.0)
            return self._add(p, hit, sample_weight)
        return super().update_state_logits(y_true, logits, activation, sample_weight, ops)

    def _add(self, p, hit, sample_weight):
        rows, cols = p.shape
        if sample_weight is None:       # per step hot path: one count, no temporaries of floats
            self.total += np.count_nonzero(hit) / cols
            self.count += rows
        else:
            sw = _w(sample_weight, rows)
            self.total += float(np.dot(hit.sum(axis=1) / cols, sw))
            self.count += float(sw.sum())

    def lower(self, ctx, loss_code, out_act):
        if not self._updates_as(BinaryAccuracy) or loss_code == ctx.loss_code("sparse_softmax_xent"):
            return None
        if out_act is None:
            return ctx.accuracy_code("binary"), float(self.threshold)
        if out_act == "sigmoid" and self.threshold == 0.5:
            # sigmoid(x) > 0.5  <=>  x > 0 (as update_state_logits does)
            return ctx.accuracy_code("binary"), 0.0
        return None

    def get_config(self):
        return {"name": self.name, "threshold": self.threshold}


def _add_hits(metric, hit, sample_weight):
    if sample_weight is None:
        metric.total += np.count_nonzero(hit)
        metric.count += hit.shape[0]
    else:
        sw = _w(sample_weight, hit.shape[0])
        metric.total += float(np.dot(hit, sw))
        metric.count += float(sw.sum())


class SparseCategoricalAccuracy(Metric):
    _default_name = "sparse_categorical_accuracy"

    def _values(self, y_true, y_pred):
        p = _rows2d(y_pred)
        return (np.argmax(p, axis=1) == y_true.reshape(-1)).astype(np.float64)

    def update_state(self, y_true, y_pred, sample_weight=None):
        p = _rows2d(np.asarray(y_pred))
        _add_hits(self, np.argmax(p, axis=1) == np.asarray(y_true).reshape(-1), sample_weight)

    def update_state_logits(self, y_true, logits, activation, sample_weight=None, ops=None):
        self.update_state(y_true, logits, sample_weight)   # argmax is unchanged by softmax

    def lower(self, ctx, loss_code, out_act):
        if self._updates_as(SparseCategoricalAccuracy) and \
                loss_code == ctx.loss_code("sparse_softmax_xent"):
            return ctx.accuracy_code("sparse"), 0.5
        return None


class CategoricalAccuracy(Metric):
    _default_name = "categorical_accuracy"

    def _values(self, y_true, y_pred):
        p = _rows2d(y_pred)
        return (np.argmax(p, axis=1) == np.argmax(_rows2d(y_true), axis=1)).astype(np.float64)

    def update_state(self, y_true, y_pred, sample_weight=None):
        p = _rows2d(np.asarray(y_pred))
        _add_hits(self, np.argmax(p, axis=1) == np.argmax(_rows2d(np.asarray(y_true)), axis=1),
                  sample_weight)

    def update_state_logits(self, y_true, logits, activation, sample_weight=None, ops=None):
        self.update_state(y_true, logits, sample_weight)

    def lower(self, ctx, loss_code, out_act):
        if self._updates_as(CategoricalAccuracy) and \
                loss_code != ctx.loss_code("sparse_softmax_xent"):
            return ctx.accuracy_code("categorical"), 0.5
        return None


class SparseTopKCategoricalAccuracy(Metric):
    _default_name = "sparse_top_k_categorical_accuracy"

    def __init__(self, k=5, name=None, dtype=None):
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"{type(self).__name__}: k must be a positive integer, got {k!r}")
        self.k = int(k)
        super().__init__(name, dtype)

    def _labels(self, y_true, p):
        return y_true.reshape(-1).astype(np.int64)

    def _values(self, y_true, y_pred):
        p = _rows2d(y_pred)
        lab = self._labels(y_true, p)
        score = p[np.arange(p.shape[0]), lab]
        higher = (p > score[:, None]).sum(axis=1)
        return (higher < self.k).astype(np.float64)

    def update_state_logits(self, y_true, logits, activation, sample_weight=None, ops=None):
        self.update_state(y_true, logits, sample_weight)   # ranks are unchanged by softmax

    def get_config(self):
        return {"name": self.name, "k": self.k}


class TopKCategoricalAccuracy(SparseTopKCategoricalAccuracy):
    _default_name = "top_k_categorical_accuracy"

    def _labels(self, y_true, p):
        return np.argmax(_rows2d(y_true), axis=1)


class MeanAbsoluteError(Metric):
    _default_name = "mean_absolute_error"

    def _values(self, y_true, y_pred):
        p = _rows2d(y_pred).astype(np.float64)
        return np.abs(p - y_true.reshape(p.shape)).mean(axis=1)


class MeanSquaredError(Metric):
    _default_name = "mean_squared_error"

    def _values(self, y_true, y_pred):
        p = _rows2d(y_pred).astype(np.float64)
        return np.square(p - y_true.reshape(p.shape)).mean(axis=1)


class _Confusion(Metric):
    """tp/fp/tn/fn counts at fixed thresholds (binary, element-wise)."""

    def __init__(self, thresholds=None, name=None, dtype=None):
        if thresholds is None:
            thresholds = [0.5]
        self.thresholds = np.atleast_1d(np.asarray(thresholds, dtype=np.float64))
        super().__init__(name, dtype)

    def reset_state(self):
        n = len(self.thresholds)
        self.tp = np.zeros(n)
        self.fp = np.zeros(n)
        self.tn = np.zeros(n)
        self.fn = np.zeros(n)

    def update_state(self, y_true, y_pred, sample_weight=None):
        p = np.asarray(y_pred, dtype=np.float64)
        rows = p.shape[0] if p.ndim else 1
        p = p.reshape(rows, -1)
        t = np.asarray(y_true).reshape(p.shape) > 0.5
        sw = _w(sample_weight, rows)
        w = np.ones(p.shape) if sw is None else np.repeat(sw, p.shape[1]).reshape(p.shape)
        p, t, w = p.reshape(-1), t.reshape(-1), w.reshape(-1)
        # counts of samples with p > thr for every threshold, via one sort
        order = np.argsort(self.thresholds, kind="stable")
        ts = self.thresholds[order]
        k = np.searchsorted(ts, p, side="left")        # p > ts[j]  <=>  j < k
        pos_hist = np.bincount(k, weights=w * t, minlength=len(ts) + 1)
        neg_hist = np.bincount(k, weights=w * ~t, minlength=len(ts) + 1)
        pos_above = np.cumsum(pos_hist[::-1])[::-1][1:]    # sum over k > j
        neg_above = np.cumsum(neg_hist[::-1])[::-1][1:]
        tp = np.empty_like(pos_above); tp[order] = pos_above
        fp = np.empty_like(neg_above); fp[order] = neg_above
        P, N = float((w * t).sum()), float((w * ~t).sum())
        self.tp += tp
        self.fp += fp
        self.fn += P - tp
        self.tn += N - fp

    def get_config(self):
        return {"name": self.name, "thresholds": self.thresholds.tolist()}


class Precision(_Confusion):
    _default_name = "precision"

    def result(self):
        d = self.tp + self.fp
        r = np.where(d > 0, self.tp / np.maximum(d, 1e-300), 0.0)
        return float(r[0]) if r.size == 1 else r


class Recall(_Confusion):
    _default_name = "recall"

    def result(self):
        d = self.tp + self.fn
        r = np.where(d > 0, self.tp / np.maximum(d, 1e-300), 0.0)
        return float(r[0]) if r.size == 1 else r


class AUC(_Confusion):
    """ROC AUC from `num_thresholds` evenly spaced thresholds (Keras's default
    200, trapezoidal rule)."""

    _default_name = "auc"

    def __init__(self, num_thresholds=200, name=None, dtype=None):
        if num_thresholds < 2:
            raise ValueError(f"AUC: num_thresholds must be > 1, got {num_thresholds}")
        self.num_thresholds = int(num_thresholds)
        eps = 1e-7
        thr = [(i + 1) / (num_thresholds - 1) for i in range(num_thresholds - 2)]
        super().__init__(thresholds=[0.0 - eps] + thr + [1.0 + eps], name=name, dtype=dtype)

    def result(self):
        tpr = self.tp / np.maximum(self.tp + self.fn, 1e-300)
        fpr = self.fp / np.maximum(self.fp + self.tn, 1e-300)
        return float(np.sum((fpr[:-1] - fpr[1:]) * (tpr[:-1] + tpr[1:]) / 2.0))

    def get_config(self):
        return {"name": self.name, "num_thresholds": self.num_thresholds}


_CLASSES: dict[str, type] = {c.__name__: c for c in (Mean, BinaryAccuracy, CategoricalAccuracy,
                                     SparseCategoricalAccuracy, TopKCategoricalAccuracy,
                                     SparseTopKCategoricalAccuracy, MeanAbsoluteError,
                                     MeanSquaredError, Precision, Recall, AUC)}
_NAMES: dict[str, type] = {"binary_accuracy": BinaryAccuracy, "categorical_accuracy": CategoricalAccuracy,
          "sparse_categorical_accuracy": SparseCategoricalAccuracy,
          "top_k_categorical_accuracy": TopKCategoricalAccuracy,
          "sparse_top_k_categorical_accuracy": SparseTopKCategoricalAccuracy,
          "mae": MeanAbsoluteError, "mean_absolute_error": MeanAbsoluteError,
          "mse": MeanSquaredError, "mean_squared_error": MeanSquaredError,
          "precision": Precision, "recall": Recall, "auc": AUC}


def get(identifier, where: str = "metrics"):
    """A Metric from a name or a Metric ("accuracy" needs `resolve`)."""
    if isinstance(identifier, Metric):
        return identifier
    if isinstance(identifier, type) and issubclass(identifier, Metric):
        return identifier()
    if isinstance(identifier, str):
        cls = _NAMES.get(identifier.strip().lower()) or _CLASSES.get(identifier)
        if cls is None:
            raise ValueError(f"{where}: unknown metric {identifier!r}; expected 'accuracy'/'acc' "
                             f"or one of {', '.join(sorted(_NAMES))}")
        return cls()
    if callable(identifier) and not isinstance(identifier, type):
        return MeanMetricWrapper(identifier)
    raise TypeError(f"{where}: expected a metric name or a fastgrad.metrics.Metric, "
                    f"got {identifier!r}")


class MeanMetricWrapper(Metric):
    """A plain function ``fn(y_true, y_pred) -> per-sample values`` as a metric
    (the weighted mean of its values; what compile(metrics=[fn]) makes)."""

    def __init__(self, fn, name=None, dtype=None, **kwargs):
        self.fn = fn
        self.fn_kwargs = kwargs
        super().__init__(name=name or getattr(fn, "__name__", "metric"))

    def call(self, y_true, y_pred):
        return self.fn(y_true, y_pred, **self.fn_kwargs)

    def get_config(self):
        return {"name": self.name, "fn": getattr(self.fn, "__name__", repr(self.fn))}


def resolve(identifier, loss, output_shape, y_sparse: bool):
    """Like get(), but maps "accuracy"/"acc" as Keras does: binary when the output
    has one unit or the loss is binary cross-entropy, sparse when the labels are
    class ids, categorical otherwise.  The metric keeps the user's name."""
    if isinstance(identifier, str) and identifier.strip().lower() in ("accuracy", "acc"):
        from . import losses as _losses
        name = identifier.strip()
        if isinstance(loss, _losses.BinaryCrossentropy) or tuple(output_shape)[-1:] == (1,):
            return BinaryAccuracy(name=name)
        if y_sparse:
            return SparseCategoricalAccuracy(name=name)
        return CategoricalAccuracy(name=name)
    m = get(identifier)
    if isinstance(identifier, str):
        m.name = identifier.strip()     # logs use the name the user wrote, as in Keras
    return m


# the metrics of the further Keras losses (MAPE, MSLE, LogCoshError, ...) live in metrics_ext
from . import metrics_ext as _ext  # noqa: E402
from .metrics_ext import *  # noqa: E402,F401,F403

__all__ += _ext.__all__
_CLASSES.update(_ext.CLASSES)
_NAMES.update(_ext.NAMES)
