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

from typing import Any, Callable, Sequence

import numpy as np
from numpy.typing import ArrayLike

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
    """Base class of the metrics: a weighted running mean of per-sample values.

    A subclass either computes its per-sample values in NumPy (built-ins) or
    defines :meth:`call` with ``fastgrad.math``.

    Parameters
    ----------
    name : str or None, default None
        Name in logs (None: the Keras name, e.g. "metric").
    dtype : None
        Accepted for Keras compatibility; results are float64.

    Examples
    --------
    >>> import fastgrad as fg
    >>> m = fg.metrics.BinaryAccuracy()
    >>> m.update_state([1, 0, 1], [0.9, 0.2, 0.4])
    >>> print(round(float(m.result()), 4))
    0.6667
    """

    _default_name = "metric"

    def __init__(self, name: str | None = None, dtype: Any = None) -> None:
        self.name = name or self._default_name
        self.reset_state()

    def reset_state(self) -> None:
        """Forget every update (called at the start of each epoch)."""
        self.total = 0.0
        self.count = 0.0

    def _values(self, y_true, y_pred):
        if type(self).call is not Metric.call:
            from .autodiff.losses import metric_values
            return metric_values(self, y_true, y_pred)
        raise NotImplementedError

    def call(self, y_true: Any, y_pred: Any) -> Any:
        """Per-sample values, written with ``fastgrad.math``.

        A subclass that defines it is the weighted running mean of them.

        Parameters
        ----------
        y_true : array_like
            Targets of the batch.
        y_pred : array_like
            Model outputs of the batch, ``(batch, ...)``.

        Returns
        -------
        tensor
            One value per sample.
        """
        raise NotImplementedError(f"{type(self).__name__}.call")

    def update_state(self, y_true: ArrayLike, y_pred: ArrayLike, sample_weight: ArrayLike | None = None) -> None:
        """Add a batch to the running state.

        Parameters
        ----------
        y_true : array_like
            Targets of the batch.
        y_pred : array_like
            Model outputs of the batch, ``(batch, ...)``.
        sample_weight : array_like or None, default None
            One weight per sample.

        Raises
        ------
        ValueError
            If `sample_weight` does not have one entry per sample.
        """
        y_pred = np.asarray(y_pred)
        v = self._values(np.asarray(y_true), y_pred)
        sw = _w(sample_weight, v.shape[0])
        if sw is None:
            self.total += float(v.sum(dtype=np.float64))
            self.count += v.shape[0]
        else:
            self.total += float(np.dot(v.astype(np.float64), sw))
            self.count += float(sw.sum())

    def update_state_logits(self, y_true: ArrayLike, logits: np.ndarray, activation: str,
                            sample_weight: ArrayLike | None = None, ops: Any = None) -> None:
        """Add a batch given as logits whose output activation was fused into the loss.

        The accuracies decide on the logits directly; the base class applies
        the activation and calls :meth:`update_state`.

        Parameters
        ----------
        y_true : array_like
            Targets of the batch.
        logits : numpy.ndarray
            Model outputs before `activation`.
        activation : str
            The fused activation ("softmax" or "sigmoid").
        sample_weight : array_like or None, default None
            One weight per sample.
        ops : Ops or None, default None
            Backend that applies the activation (None: the active one).
        """
        if ops is None:
            from . import _config
            ops = _config.get_ops()
        self.update_state(y_true, ops.activation(activation, logits), sample_weight)

    def result(self) -> Any:
        """The metric's current value.

        Returns
        -------
        float
            The weighted mean so far (0.0 before any update).
        """
        return self.total / self.count if self.count else 0.0

    # ------------------------------------------------------------------ compiled plan
    def lower(self, ctx: Any, loss_code: Any, out_act: str | None) -> Any:
        """How the compiled training plan computes this metric in C, if it can.

        Parameters
        ----------
        ctx : LowerContext
            The compiled plan's context (engine/compiled.py).
        loss_code : object
            The C code of the model's one loss.
        out_act : str or None
            The output activation fused into the loss (None: none).

        Returns
        -------
        tuple or None
            ``(ctx.accuracy_code(kind), threshold)``; None when the metric is
            updated in Python from the outputs the plan captures (the base class).
        """
        return None

    def _updates_as(self, cls: type) -> bool:
        """True when this metric updates as `cls` does (not replaced by a subclass)."""
        t = type(self)
        return all(getattr(t, m) is getattr(cls, m)
                   for m in ("update_state", "update_state_logits", "_values"))

    def get_config(self) -> dict:
        """The constructor arguments as a dict (Keras config).

        Returns
        -------
        dict
            Keyword arguments that rebuild this metric.
        """
        return {"name": self.name}

    @classmethod
    def from_config(cls, config: dict) -> Metric:
        """Build a metric from :meth:`get_config`'s output.

        Parameters
        ----------
        config : dict
            Constructor keyword arguments.

        Returns
        -------
        Metric
            The new metric.
        """
        return cls(**config)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


class Mean(Metric):
    """Weighted mean of the values given to ``update_state(values, sample_weight=None)``.

    Parameters
    ----------
    name : str or None, default None
        Name in logs (None: the Keras name, e.g. "mean").
    dtype : None
        Accepted for Keras compatibility; results are float64.
    """

    _default_name = "mean"

    def update_state(self, values: ArrayLike, sample_weight: ArrayLike | None = None) -> None:  # type: ignore[override]
        v = np.asarray(values, dtype=np.float64).reshape(-1)
        sw = _w(sample_weight, v.shape[0])
        if sw is None:
            self.total += float(v.sum())
            self.count += v.shape[0]
        else:
            self.total += float(np.dot(v, sw))
            self.count += float(sw.sum())

    def add(self, value: float, weight: float = 1.0) -> None:
        """Add one weighted scalar (the training loop's fast path for the loss).

        Parameters
        ----------
        value : float
            The value.
        weight : float, default 1.0
            Its weight.
        """
        self.total += value * weight
        self.count += weight


def _rows2d(a):
    return a.reshape(a.shape[0], -1) if a.ndim != 2 else a


class BinaryAccuracy(Metric):
    """How often a thresholded prediction equals a binary target.

    Parameters
    ----------
    name : str or None, default None
        Name in logs (None: the Keras name, e.g. "binary_accuracy").
    dtype : None
        Accepted for Keras compatibility; results are float64.
    threshold : float, default 0.5
        A prediction above it counts as 1.
    """

    _default_name = "binary_accuracy"

    def __init__(self, name: str | None = None, dtype: Any = None, threshold: float = 0.5) -> None:
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
    """How often the argmax of the prediction equals an integer class id.

    Parameters
    ----------
    name : str or None, default None
        Name in logs (None: the Keras name, e.g. "sparse_categorical_accuracy").
    dtype : None
        Accepted for Keras compatibility; results are float64.
    """

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
    """How often the argmax of the prediction equals the argmax of a one-hot target.

    Parameters
    ----------
    name : str or None, default None
        Name in logs (None: the Keras name, e.g. "categorical_accuracy").
    dtype : None
        Accepted for Keras compatibility; results are float64.
    """

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
    """How often an integer class id is among the `k` highest predictions.

    Parameters
    ----------
    k : int, default 5
        How many of the highest predictions count.
    name : str or None, default None
        Name in logs (None: the Keras name, e.g. "sparse_top_k_categorical_accuracy").
    dtype : None
        Accepted for Keras compatibility; results are float64.

    Raises
    ------
    ValueError
        If `k` is not a positive integer.
    """

    _default_name = "sparse_top_k_categorical_accuracy"

    def __init__(self, k: int = 5, name: str | None = None, dtype: Any = None) -> None:
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
    """How often the one-hot target's class is among the `k` highest predictions.

    Parameters
    ----------
    k : int, default 5
        How many of the highest predictions count.
    name : str or None, default None
        Name in logs (None: the Keras name, e.g. "top_k_categorical_accuracy").
    dtype : None
        Accepted for Keras compatibility; results are float64.
    """

    _default_name = "top_k_categorical_accuracy"

    def _labels(self, y_true, p):
        return np.argmax(_rows2d(y_true), axis=1)


class MeanAbsoluteError(Metric):
    """Running mean of the per-sample mean absolute error.

    Parameters
    ----------
    name : str or None, default None
        Name in logs (None: the Keras name, e.g. "mean_absolute_error").
    dtype : None
        Accepted for Keras compatibility; results are float64.
    """

    _default_name = "mean_absolute_error"

    def _values(self, y_true, y_pred):
        p = _rows2d(y_pred).astype(np.float64)
        return np.abs(p - y_true.reshape(p.shape)).mean(axis=1)


class MeanSquaredError(Metric):
    """Running mean of the per-sample mean squared error.

    Parameters
    ----------
    name : str or None, default None
        Name in logs (None: the Keras name, e.g. "mean_squared_error").
    dtype : None
        Accepted for Keras compatibility; results are float64.
    """

    _default_name = "mean_squared_error"

    def _values(self, y_true, y_pred):
        p = _rows2d(y_pred).astype(np.float64)
        return np.square(p - y_true.reshape(p.shape)).mean(axis=1)


class _Confusion(Metric):
    """tp/fp/tn/fn counts at fixed thresholds (binary, element-wise)."""

    def __init__(self, thresholds: float | Sequence[float] | None = None, name: str | None = None,
                 dtype: Any = None) -> None:
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
    """Precision, ``tp / (tp + fp)``, of binary predictions (element-wise).

    Parameters
    ----------
    thresholds : float, sequence of float or None, default None
        A prediction above a threshold counts as positive (None: 0.5). With
        several thresholds the result has one value per threshold.
    name : str or None, default None
        Name in logs (None: the Keras name, e.g. "precision").
    dtype : None
        Accepted for Keras compatibility; results are float64.
    """

    _default_name = "precision"

    def result(self):
        d = self.tp + self.fp
        r = np.where(d > 0, self.tp / np.maximum(d, 1e-300), 0.0)
        return float(r[0]) if r.size == 1 else r


class Recall(_Confusion):
    """Recall, ``tp / (tp + fn)``, of binary predictions (element-wise).

    Parameters
    ----------
    thresholds : float, sequence of float or None, default None
        A prediction above a threshold counts as positive (None: 0.5). With
        several thresholds the result has one value per threshold.
    name : str or None, default None
        Name in logs (None: the Keras name, e.g. "recall").
    dtype : None
        Accepted for Keras compatibility; results are float64.
    """

    _default_name = "recall"

    def result(self):
        d = self.tp + self.fn
        r = np.where(d > 0, self.tp / np.maximum(d, 1e-300), 0.0)
        return float(r[0]) if r.size == 1 else r


class AUC(_Confusion):
    """Area under the ROC curve, by the trapezoidal rule over evenly spaced thresholds.

    Parameters
    ----------
    num_thresholds : int, default 200
        How many thresholds (> 1), evenly spaced over [0, 1] (Keras's default).
    name : str or None, default None
        Name in logs (None: the Keras name, e.g. "auc").
    dtype : None
        Accepted for Keras compatibility; results are float64.

    Raises
    ------
    ValueError
        If `num_thresholds` is below 2.
    """

    _default_name = "auc"

    def __init__(self, num_thresholds: int = 200, name: str | None = None, dtype: Any = None) -> None:
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


def get(identifier: str | Metric | type | Callable, where: str = "metrics") -> Metric:
    """The metric a user passes in ``compile(metrics=[...])``.

    "accuracy" needs the loss and shapes: see :func:`resolve`.

    Parameters
    ----------
    identifier : str, Metric, Metric subclass or callable
        A name ("mae", "auc", ...) or class name, a metric (returned as is), a
        Metric subclass (instantiated with its defaults), or a function
        ``fn(y_true, y_pred)`` of per-sample values (wrapped in
        :class:`MeanMetricWrapper`).
    where : str, default "metrics"
        What to name in an error message.

    Returns
    -------
    Metric
        The metric.

    Raises
    ------
    ValueError
        If the name is unknown.
    TypeError
        If `identifier` has another type.
    """
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
    """A plain function of per-sample values as a metric (what ``compile(metrics=[fn])`` makes).

    Parameters
    ----------
    fn : callable
        ``fn(y_true, y_pred, **kwargs)`` returning one value per sample,
        written with ``fastgrad.math``; the metric is their weighted mean.
    name : str or None, default None
        Name in logs (None: the function's name).
    dtype : None
        Accepted for Keras compatibility.
    **kwargs
        Further keyword arguments passed to `fn`.
    """

    def __init__(self, fn: Callable, name: str | None = None, dtype: Any = None, **kwargs: Any) -> None:
        self.fn = fn
        self.fn_kwargs = kwargs
        super().__init__(name=name or getattr(fn, "__name__", "metric"))

    def call(self, y_true: Any, y_pred: Any) -> Any:
        return self.fn(y_true, y_pred, **self.fn_kwargs)

    def get_config(self):
        return {"name": self.name, "fn": getattr(self.fn, "__name__", repr(self.fn))}


def resolve(identifier: str | Metric | type | Callable, loss: Any, output_shape: Sequence[int | None],
            y_sparse: bool) -> Metric:
    """Like :func:`get`, and maps "accuracy" / "acc" to a concrete accuracy as Keras does.

    Binary when the output has one unit or the loss is binary cross-entropy,
    sparse when the labels are class ids, categorical otherwise. A metric
    named by a string keeps the user's spelling as its name (logs show "mae").

    Parameters
    ----------
    identifier : str, Metric, Metric subclass or callable
        What the user wrote.
    loss : Loss
        The model's loss.
    output_shape : sequence of int or None
        The model's output shape.
    y_sparse : bool
        Whether the labels are integer class ids.

    Returns
    -------
    Metric
        The metric.
    """
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
