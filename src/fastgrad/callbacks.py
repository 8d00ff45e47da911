"""Callbacks: code that runs at fixed points of fit / evaluate / predict (Keras API).

The training loop (fastgrad.engine) owns one `CallbackList` per call and fires
its hooks in Keras's order::

    on_train_begin
      on_epoch_begin(e)
        on_train_batch_begin(b) / on_train_batch_end(b, logs)     per batch
        on_test_begin / on_test_batch_* / on_test_end              validation
      on_epoch_end(e, logs)        logs: loss, metrics, val_*  (callbacks may add keys)
    on_train_end

`logs` values are Python floats (running means over the epoch so far in batch
hooks, epoch means at epoch end). Callbacks reach the model through
`self.model` (`stop_training`, `optimizer.learning_rate`, `get_weights`,
`set_weights`, `save`) and the loop's settings through `self.params`
(`epochs`, `steps`, `verbose`, and where the engine provides them
`do_validation` and `metrics` — the names that will appear in epoch logs).

Per-step cost matters (a batch can take microseconds): CallbackList calls a
batch hook only on the callbacks that override it, so an unused hook costs one
empty loop.
"""
from __future__ import annotations

import collections
import csv
import inspect
import math
import numbers
import os
import sys
import warnings

from typing import Any, Callable, Iterable, Sequence

import numpy as np

from .utils.progbar import Progbar

__all__ = [
    "Callback", "CallbackList", "History", "EarlyStopping", "ModelCheckpoint", "ReduceLROnPlateau",
    "LearningRateScheduler", "CSVLogger", "TerminateOnNaN", "LambdaCallback", "ProgbarLogger",
]


def _print(msg: str) -> None:
    sys.stdout.write(msg + "\n")
    sys.stdout.flush()


class Callback:
    """Base class of the callbacks: override the hooks you need.

    The training loop sets ``self.model`` and ``self.params`` before
    ``on_train_begin``. The class attribute ``rank_zero_only`` makes the
    callback run on rank 0 only under ``fastgrad.distribution.DataParallel``
    (True for the writers: ProgbarLogger, ModelCheckpoint, CSVLogger; set it
    on your own writers).

    Examples
    --------
    >>> import fastgrad as fg
    >>> class PrintLoss(fg.callbacks.Callback):
    ...     def on_epoch_end(self, epoch, logs=None):
    ...         print(epoch, logs["loss"])
    """

    rank_zero_only = False

    def __init__(self) -> None:
        self.model: Any = None
        self.params: dict = {}

    def set_params(self, params: dict | None) -> None:
        """Receive the loop's settings (epochs, steps, verbose, ...) as ``self.params``.

        Parameters
        ----------
        params : dict or None
            The settings.
        """
        self.params = dict(params) if params else {}

    def set_model(self, model: Any) -> None:
        """Receive the model being trained, evaluated or run as ``self.model``.

        Parameters
        ----------
        model : Model
            The model.
        """
        self.model = model

    # batch hooks; on_batch_* are the Keras-2 names of the training ones
    def on_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        """Called before a training batch (Keras 2 name of :meth:`on_train_batch_begin`).

        Parameters
        ----------
        batch : int
            Index of the batch in the epoch (or in the call).
        logs : dict or None, default None
            Unused; empty.
        """
        pass

    def on_batch_end(self, batch: int, logs: dict | None = None) -> None:
        """Called after a training batch (Keras 2 name of :meth:`on_train_batch_end`).

        Parameters
        ----------
        batch : int
            Index of the batch in the epoch (or in the call).
        logs : dict or None, default None
            Running means of the loss and metrics over the epoch so far.
        """
        pass

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        """Called before a training batch; calls :meth:`on_batch_begin` by default.

        Parameters
        ----------
        batch : int
            Index of the batch in the epoch (or in the call).
        logs : dict or None, default None
            Unused; empty.
        """
        self.on_batch_begin(batch, logs=logs)

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        """Called after a training batch; calls :meth:`on_batch_end` by default.

        Parameters
        ----------
        batch : int
            Index of the batch in the epoch (or in the call).
        logs : dict or None, default None
            Running means of the loss and metrics over the epoch so far.
        """
        self.on_batch_end(batch, logs=logs)

    def on_test_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        """Called before an evaluation batch.

        Parameters
        ----------
        batch : int
            Index of the batch in the epoch (or in the call).
        logs : dict or None, default None
            Unused; empty.
        """
        pass

    def on_test_batch_end(self, batch: int, logs: dict | None = None) -> None:
        """Called after an evaluation batch.

        Parameters
        ----------
        batch : int
            Index of the batch in the epoch (or in the call).
        logs : dict or None, default None
            Running means of the loss and metrics so far.
        """
        pass

    def on_predict_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        """Called before a prediction batch.

        Parameters
        ----------
        batch : int
            Index of the batch in the epoch (or in the call).
        logs : dict or None, default None
            Unused; empty.
        """
        pass

    def on_predict_batch_end(self, batch: int, logs: dict | None = None) -> None:
        """Called after a prediction batch.

        Parameters
        ----------
        batch : int
            Index of the batch in the epoch (or in the call).
        logs : dict or None, default None
            The batch's ``{"outputs": ...}``.
        """
        pass

    # epoch / run hooks
    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        """Called at the start of an epoch.

        Parameters
        ----------
        epoch : int
            Index of the epoch (0-based).
        logs : dict or None, default None
            Unused; empty.
        """
        pass

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        """Called at the end of an epoch.

        Parameters
        ----------
        epoch : int
            Index of the epoch (0-based).
        logs : dict or None, default None
            Epoch means of the loss and metrics, and the ``val_`` ones; callbacks may add keys.
        """
        pass

    def on_train_begin(self, logs: dict | None = None) -> None:
        """Called at the start of ``fit``.

        Parameters
        ----------
        logs : dict or None, default None
            Unused; empty.
        """
        pass

    def on_train_end(self, logs: dict | None = None) -> None:
        """Called at the end of ``fit``.

        Parameters
        ----------
        logs : dict or None, default None
            The last epoch's logs.
        """
        pass

    def on_test_begin(self, logs: dict | None = None) -> None:
        """Called at the start of ``evaluate`` (and of each validation pass).

        Parameters
        ----------
        logs : dict or None, default None
            Unused; empty.
        """
        pass

    def on_test_end(self, logs: dict | None = None) -> None:
        """Called at the end of ``evaluate`` (and of each validation pass).

        Parameters
        ----------
        logs : dict or None, default None
            The evaluation's results.
        """
        pass

    def on_predict_begin(self, logs: dict | None = None) -> None:
        """Called at the start of ``predict``.

        Parameters
        ----------
        logs : dict or None, default None
            Unused; empty.
        """
        pass

    def on_predict_end(self, logs: dict | None = None) -> None:
        """Called at the end of ``predict``.

        Parameters
        ----------
        logs : dict or None, default None
            Unused; empty.
        """
        pass


_HOOKS = ("on_batch_begin", "on_batch_end", "on_train_batch_begin", "on_train_batch_end",
          "on_test_batch_begin", "on_test_batch_end", "on_predict_batch_begin", "on_predict_batch_end",
          "on_epoch_begin", "on_epoch_end", "on_train_begin", "on_train_end", "on_test_begin",
          "on_test_end", "on_predict_begin", "on_predict_end")

# a training-batch hook is live if the callback overrides it or its Keras-2 alias
_BATCH_HOOKS = {
    "on_train_batch_begin": ("on_train_batch_begin", "on_batch_begin"),
    "on_train_batch_end": ("on_train_batch_end", "on_batch_end"),
    "on_test_batch_begin": ("on_test_batch_begin",),
    "on_test_batch_end": ("on_test_batch_end",),
    "on_predict_batch_begin": ("on_predict_batch_begin",),
    "on_predict_batch_end": ("on_predict_batch_end",),
}


def _overrides(cb: Any, name: str) -> bool:
    attr = getattr(cb, name, None)
    if attr is None:
        return False
    func = getattr(attr, "__func__", None)
    if func is None:          # an instance attribute (LambdaCallback) or a plain callable
        return True
    return func is not getattr(Callback, name)


class CallbackList(Callback):
    """A list of callbacks fired together (what the training loop talks to).

    A batch hook is called only on the callbacks that override it, so an
    unused hook costs one empty loop per batch.

    Parameters
    ----------
    callbacks : Callback, iterable of Callback or None, default None
        The callbacks.
    add_history : bool, default False
        Append a :class:`History` unless `callbacks` holds one.
    add_progbar : bool, default False
        Put a :class:`ProgbarLogger` first unless `callbacks` holds one.
    model : Model or None, default None
        Handed to every callback (:meth:`set_model`).
    **params
        The loop's settings (verbose, epochs, steps, ...), handed to every
        callback (:meth:`set_params`).
    """

    def __init__(self, callbacks: Callback | Iterable[Callback] | None = None, add_history: bool = False,
                 add_progbar: bool = False, model: Any = None, **params: Any) -> None:
        super().__init__()
        if callbacks is None:
            callbacks = []
        elif isinstance(callbacks, Callback):
            callbacks = [callbacks]
        self.callbacks = list(callbacks)
        for cb in self.callbacks:
            if not isinstance(cb, Callback):
                raise TypeError(f"callbacks: expected fastgrad.callbacks.Callback instances, got {cb!r} "
                                f"({type(cb).__name__})")
        self._history = next((cb for cb in self.callbacks if isinstance(cb, History)), None)
        self._progbar = next((cb for cb in self.callbacks if isinstance(cb, ProgbarLogger)), None)
        if self._progbar is None and add_progbar:
            # first, as in Keras 2: the epoch's bar line is complete before other
            # callbacks print their messages ("Epoch 5: ReduceLROnPlateau reducing ...")
            self._progbar = ProgbarLogger()
            self.callbacks.insert(0, self._progbar)
        if self._history is None and add_history:
            self._history = History()
            self.callbacks.append(self._history)
        self._refresh()
        if model is not None:
            self.set_model(model)
        if params:
            self.set_params(params)

    @property
    def history(self):
        return self._history

    def _refresh(self):
        self._live = {hook: [getattr(cb, hook) for cb in self.callbacks
                             if any(_overrides(cb, n) for n in names)]
                      for hook, names in _BATCH_HOOKS.items()}

    def append(self, callback: Callback) -> None:
        """Add a callback (it gets the list's model and params).

        Parameters
        ----------
        callback : Callback
            The callback.

        Raises
        ------
        TypeError
            If `callback` is not a Callback.
        """
        if not isinstance(callback, Callback):
            raise TypeError(f"CallbackList.append: expected a Callback, got {callback!r}")
        self.callbacks.append(callback)
        if self.model is not None:
            callback.set_model(self.model)
        if self.params:
            callback.set_params(self.params)
        self._refresh()

    def set_params(self, params):
        super().set_params(params)
        for cb in self.callbacks:
            cb.set_params(self.params)

    def set_model(self, model):
        super().set_model(model)
        for cb in self.callbacks:
            cb.set_model(model)

    def has_batch_hooks(self, mode: str = "train") -> bool:
        """Whether any callback listens to the batch hooks of a mode.

        The loop skips building batch logs when none does.

        Parameters
        ----------
        mode : {"train", "test", "predict"}, default "train"
            Which batch hooks.

        Returns
        -------
        bool
            True if a callback overrides one of them.
        """
        return bool(self._live[f"on_{mode}_batch_begin"] or self._live[f"on_{mode}_batch_end"])

    def __iter__(self):
        return iter(self.callbacks)

    def __len__(self):
        return len(self.callbacks)

    # batch hooks: only the live ones
    def on_batch_begin(self, batch, logs=None):
        self.on_train_batch_begin(batch, logs)

    def on_batch_end(self, batch, logs=None):
        self.on_train_batch_end(batch, logs)

    def on_train_batch_begin(self, batch, logs=None):
        for f in self._live["on_train_batch_begin"]:
            f(batch, logs)

    def on_train_batch_end(self, batch, logs=None):
        for f in self._live["on_train_batch_end"]:
            f(batch, logs)

    def on_test_batch_begin(self, batch, logs=None):
        for f in self._live["on_test_batch_begin"]:
            f(batch, logs)

    def on_test_batch_end(self, batch, logs=None):
        for f in self._live["on_test_batch_end"]:
            f(batch, logs)

    def on_predict_batch_begin(self, batch, logs=None):
        for f in self._live["on_predict_batch_begin"]:
            f(batch, logs)

    def on_predict_batch_end(self, batch, logs=None):
        for f in self._live["on_predict_batch_end"]:
            f(batch, logs)

    # epoch / run hooks: logs is a dict the callbacks may add to (learning_rate)
    def _all(self, hook, *args):
        for cb in self.callbacks:
            getattr(cb, hook)(*args)

    def on_epoch_begin(self, epoch, logs=None):
        self._all("on_epoch_begin", epoch, logs if logs is not None else {})

    def on_epoch_end(self, epoch, logs=None):
        self._all("on_epoch_end", epoch, logs if logs is not None else {})

    def on_train_begin(self, logs=None):
        self._refresh()
        self._all("on_train_begin", logs)

    def on_train_end(self, logs=None):
        self._all("on_train_end", logs)

    def on_test_begin(self, logs=None):
        self._refresh()
        self._all("on_test_begin", logs)

    def on_test_end(self, logs=None):
        self._all("on_test_end", logs)

    def on_predict_begin(self, logs=None):
        self._refresh()
        self._all("on_predict_begin", logs)

    def on_predict_end(self, logs=None):
        self._all("on_predict_end", logs)


# --------------------------------------------------------------------- History
class History(Callback):
    """Record the epoch logs; ``fit`` returns it.

    ``history.history["loss"]`` is the list of per-epoch training losses,
    ``history.epoch`` the epoch indices.
    """

    def __init__(self) -> None:
        super().__init__()
        self.history: dict[str, list] = {}
        self.epoch: list[int] = []

    def on_train_begin(self, logs=None):
        self.epoch = []

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        self.epoch.append(epoch)
        for k, v in logs.items():
            self.history.setdefault(k, []).append(v)
        if self.model is not None:
            try:
                self.model.history = self
            except AttributeError:
                pass

    def plot(self, path: str | os.PathLike | None = None, metrics: str | Sequence[str] | None = None,
             title: str | None = None) -> Any:
        """Plot the loss and each metric per epoch, one panel per metric.

        Training curves are solid, validation curves dashed. Needs matplotlib
        (``pip install fastgrad[plot]``).

        Parameters
        ----------
        path : str, path-like or None, default None
            Save the figure there (PNG, PDF or SVG by the extension).
        metrics : str, sequence of str or None, default None
            Which logged names to plot (None: all; a ``val_`` curve goes in its
            training metric's panel).
        title : str or None, default None
            Figure title.

        Returns
        -------
        matplotlib.figure.Figure
            The figure.

        Raises
        ------
        ImportError
            If matplotlib is not installed.
        """
        try:
            import matplotlib
            from matplotlib.figure import Figure
        except ImportError:
            raise ImportError("History.plot needs matplotlib, which is not installed: "
                              "pip install matplotlib (or fastgrad[plot])") from None
        del matplotlib
        if metrics is None:
            metrics = [k for k in self.history if not k.startswith("val_")]
            # metrics that only appear as val_* (validation_freq) still get a panel
            metrics += [k[4:] for k in self.history if k.startswith("val_") and k[4:] not in metrics]
            metrics = ["loss"] + [m for m in metrics if m != "loss"] if "loss" in metrics else metrics
        elif isinstance(metrics, str):
            metrics = [metrics]
        missing = [m for m in metrics if m not in self.history and "val_" + m not in self.history]
        if missing:
            raise ValueError(f"History.plot: no recorded values for {missing}; recorded: {sorted(self.history)}")
        if not metrics:
            raise ValueError("History.plot: nothing recorded yet (fit for at least one epoch)")
        n = len(metrics)
        if path is not None:
            fig = Figure(figsize=(5.0 * n, 3.6))
        else:
            import matplotlib.pyplot as plt
            fig = plt.figure(figsize=(5.0 * n, 3.6))
        axes = fig.subplots(1, n, squeeze=False)[0]
        epochs = np.asarray(self.epoch if self.epoch else range(len(next(iter(self.history.values())))))
        for ax, m in zip(axes, metrics):
            pair = m in self.history and ("val_" + m) in self.history
            for key, style, label in ((m, "-", "training"), ("val_" + m, "--", "validation")):
                vals = self.history.get(key)
                if not vals:
                    continue
                ep = epochs[-len(vals):] + 1 if len(vals) <= len(epochs) else np.arange(1, len(vals) + 1)
                ax.plot(ep, np.asarray(vals, dtype=np.float64), style, marker="o", markersize=3,
                        label=label if pair else None)
            ax.set_xlabel("epoch")
            ax.set_title(m)
            ax.grid(True, alpha=0.3)
            if m in ("learning_rate", "lr"):
                ax.set_yscale("log")
            if pair:
                ax.legend()
        if title:
            fig.suptitle(title)
        fig.tight_layout()
        if path is not None:
            from matplotlib.backends.backend_agg import FigureCanvasAgg
            FigureCanvasAgg(fig)
            fig.savefig(os.fspath(path), dpi=100)
        return fig


# --------------------------------------------------------------------- monitors
_MIN_HINTS = ("loss", "error", "mae", "mse", "rmse", "crossentropy", "hinge", "divergence", "logcosh",
              "poisson", "mean_absolute", "mean_squared")
_MAX_HINTS = ("acc", "auc", "precision", "recall", "f1", "fbeta", "top_k", "iou", "r2", "r_squared")


def _auto_mode(monitor, model):
    """"min"/"max" for a monitored log name, or None if it cannot be told."""
    name = monitor[4:] if monitor.startswith("val_") else monitor
    if name == "loss" or name.endswith("loss"):
        return "min"
    for m in (getattr(model, "metrics", None) or ()):
        if getattr(m, "name", None) == name:
            d = getattr(m, "_direction", None) or getattr(m, "direction", None)
            if d in ("up", "max"):
                return "max"
            if d in ("down", "min"):
                return "min"
    low = name.lower()
    if any(h in low for h in _MIN_HINTS):
        return "min"
    if any(h in low for h in _MAX_HINTS):
        return "max"
    return None


_ALWAYS_LOGGED = {"learning_rate", "lr"}


def _expected_log_names(cb):
    """The epoch-log names this fit can produce, or None when the loop did not say."""
    params = cb.params or {}
    names = params.get("metrics")
    if names:
        return set(names) | _ALWAYS_LOGGED
    base = getattr(cb.model, "metrics_names", None)
    do_val = params.get("do_validation")
    if not base or do_val is None:
        return None
    base = list(base)
    return set(base) | ({"val_" + n for n in base} if do_val else set()) | _ALWAYS_LOGGED


def _check_monitor(cb, what):
    """Raise at train begin if `cb.monitor` can never appear in this fit's logs."""
    names = _expected_log_names(cb)
    if names is None or cb.monitor in names:
        return
    hint = ""
    if cb.monitor.startswith("val_") and cb.monitor[4:] in names:
        hint = " (it is a validation metric: pass validation_data= or validation_split= to fit)"
    raise ValueError(f"{what}: monitor={cb.monitor!r} will never be logged by this fit{hint}; "
                     f"available: {sorted(n for n in names if n not in _ALWAYS_LOGGED)}")


def _check_mode(what, mode):
    if mode not in ("auto", "min", "max"):
        raise ValueError(f"{what}: mode must be 'auto', 'min' or 'max', got {mode!r}")


def _scalar(value):
    """A monitored log value as a float, or None if it is not a scalar number."""
    if isinstance(value, numbers.Real):
        return float(value)
    arr = np.asarray(value)
    if arr.ndim == 0 and arr.dtype.kind in "fiub":
        return float(arr)
    return None


class _MonitorMixin:
    def _resolve_mode(self, what):
        mode = self.mode
        if mode == "auto":
            mode = _auto_mode(self.monitor, self.model)
            if mode is None:
                raise ValueError(f"{what}: cannot tell whether monitor={self.monitor!r} should be minimised "
                                 "or maximised; pass mode='min' or mode='max'")
        return mode

    def _get_monitor_value(self, logs, what):
        logs = logs or {}
        value = logs.get(self.monitor)
        if value is None:
            if not self._warned_missing:
                self._warned_missing = True
                warnings.warn(f"{what} conditioned on metric {self.monitor!r} which is not available. "
                              f"Available metrics are: {', '.join(logs)}", RuntimeWarning, stacklevel=3)
            return None
        return _scalar(value)


# --------------------------------------------------------------------- EarlyStopping
class EarlyStopping(_MonitorMixin, Callback):
    """Stop training when a monitored value has stopped improving (Keras semantics).

    After training, ``stopped_epoch`` and ``best_epoch`` are 0-based epoch indices.

    Parameters
    ----------
    monitor : str, default "val_loss"
        The epoch-log name to watch.
    min_delta : float, default 0
        Least change that counts as an improvement.
    patience : int, default 0
        Epochs without improvement before stopping.
    verbose : int, default 0
        1 prints a message when the callback acts.
    mode : {"auto", "min", "max"}, default "auto"
        Whether lower or higher is better ("auto": told from the name).
    baseline : float or None, default None
        A value the monitor must beat; training stops if it does not within `patience`.
    restore_best_weights : bool, default False
        Put back the weights of the best epoch when stopping.
    start_from_epoch : int, default 0
        Epochs to wait before watching.

    Raises
    ------
    ValueError
        If an argument is out of range; at train begin, if `monitor` is never logged.
    """

    def __init__(self, monitor: str = "val_loss", min_delta: float = 0, patience: int = 0, verbose: int = 0,
                 mode: str = "auto", baseline: float | None = None, restore_best_weights: bool = False,
                 start_from_epoch: int = 0) -> None:
        super().__init__()
        if not isinstance(monitor, str) or not monitor:
            raise ValueError(f"EarlyStopping: monitor must be a log name such as 'val_loss', got {monitor!r}")
        _check_mode("EarlyStopping", mode)
        if isinstance(patience, bool) or not isinstance(patience, numbers.Integral) or patience < 0:
            raise ValueError(f"EarlyStopping: patience must be an integer >= 0, got {patience!r}")
        if isinstance(start_from_epoch, bool) or not isinstance(start_from_epoch, numbers.Integral) \
                or start_from_epoch < 0:
            raise ValueError(f"EarlyStopping: start_from_epoch must be an integer >= 0, got {start_from_epoch!r}")
        if not isinstance(min_delta, numbers.Real) or not math.isfinite(min_delta):
            raise ValueError(f"EarlyStopping: min_delta must be a finite number, got {min_delta!r}")
        if baseline is not None and (not isinstance(baseline, numbers.Real) or math.isnan(baseline)):
            raise ValueError(f"EarlyStopping: baseline must be a number or None, got {baseline!r}")
        self.monitor = monitor
        self.min_delta = abs(float(min_delta))
        self.patience = int(patience)
        self.verbose = verbose
        self.mode = mode
        self.baseline = None if baseline is None else float(baseline)
        self.restore_best_weights = bool(restore_best_weights)
        self.start_from_epoch = int(start_from_epoch)
        self._reset()

    def _reset(self):
        self.wait = 0
        self.stopped_epoch = 0
        self.best = None
        self.best_weights = None
        self.best_epoch = 0
        self._sign = None
        self._warned_missing = False

    def on_train_begin(self, logs=None):
        self._reset()
        _check_monitor(self, "EarlyStopping")
        self._sign = 1.0 if self._resolve_mode("EarlyStopping") == "max" else -1.0

    def _is_improvement(self, value, reference):
        if reference is None:
            return True
        # max: value - min_delta > reference;  min: value + min_delta < reference
        return self._sign * (value - reference) > self.min_delta

    def on_epoch_end(self, epoch, logs=None):
        if self._sign is None:
            self._sign = 1.0 if self._resolve_mode("EarlyStopping") == "max" else -1.0
        current = self._get_monitor_value(logs, "Early stopping")
        if current is None or epoch < self.start_from_epoch:
            return
        if self.restore_best_weights and self.best_weights is None:
            self.best_weights = self.model.get_weights()
            self.best_epoch = epoch
        self.wait += 1
        if self._is_improvement(current, self.best):
            self.best = current
            self.best_epoch = epoch
            if self.restore_best_weights:
                self.best_weights = self.model.get_weights()
            # restart patience only when both the previous best and the baseline are beaten
            if self.baseline is None or self._is_improvement(current, self.baseline):
                self.wait = 0
            return
        if self.wait >= self.patience and epoch > 0:
            self.stopped_epoch = epoch
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self.stopped_epoch > 0 and self.verbose > 0:
            _print(f"Epoch {self.stopped_epoch + 1}: early stopping")
        if self.restore_best_weights and self.best_weights is not None:
            if self.verbose > 0:
                _print(f"Restoring model weights from the end of the best epoch: {self.best_epoch + 1}.")
            self.model.set_weights(self.best_weights)


# --------------------------------------------------------------------- ModelCheckpoint
class ModelCheckpoint(_MonitorMixin, Callback):
    """Save the model, or only its weights, after each epoch or every few batches.

    Parameters
    ----------
    filepath : str or path-like
        Where to save; may hold format fields filled from the epoch (1-based)
        and the logs, e.g. ``"ckpt-{epoch:02d}-{val_loss:.2f}.fgm"``.
    monitor : str, default "val_loss"
        The epoch-log name to watch.
    verbose : int, default 0
        1 prints a message when the callback acts.
    save_best_only : bool, default False
        Write only a model that improves `monitor`.
    save_weights_only : bool, default False
        Save the weights only (``model.save_weights``) instead of the model.
    mode : {"auto", "min", "max"}, default "auto"
        Whether lower or higher is better ("auto": told from the name).
    save_freq : "epoch" or int, default "epoch"
        Save after every epoch, or after every so many batches.
    initial_value_threshold : float or None, default None
        With `save_best_only`, a value the first saved model must beat.

    Raises
    ------
    TypeError
        If `filepath` is not a path.
    ValueError
        If `mode` or `save_freq` is invalid.
    """

    rank_zero_only = True

    def __init__(self, filepath: str | os.PathLike, monitor: str = "val_loss", verbose: int = 0,
                 save_best_only: bool = False, save_weights_only: bool = False, mode: str = "auto",
                 save_freq: str | int = "epoch", initial_value_threshold: float | None = None) -> None:
        super().__init__()
        if not isinstance(filepath, (str, os.PathLike)):
            raise TypeError(f"ModelCheckpoint: filepath must be a path, got {filepath!r}")
        _check_mode("ModelCheckpoint", mode)
        if save_freq != "epoch" and (isinstance(save_freq, bool) or not isinstance(save_freq, numbers.Integral)
                                     or save_freq <= 0):
            raise ValueError(f"ModelCheckpoint: save_freq must be 'epoch' or a positive integer number of "
                             f"batches, got {save_freq!r}")
        self.filepath = os.fspath(filepath)
        self.monitor = monitor
        self.verbose = verbose
        self.save_best_only = bool(save_best_only)
        self.save_weights_only = bool(save_weights_only)
        self.mode = mode
        self.save_freq = save_freq
        self.initial_value_threshold = initial_value_threshold
        self.best = None
        self._sign = None
        self._batches_seen = 0
        self._current_epoch = 0
        self._warned_missing = False

    def on_train_begin(self, logs=None):
        self._batches_seen = 0
        self._warned_missing = False
        if self.save_best_only:
            _check_monitor(self, "ModelCheckpoint")
            self._sign = 1.0 if self._resolve_mode("ModelCheckpoint") == "max" else -1.0
            if self.best is None and self.initial_value_threshold is not None:
                self.best = float(self.initial_value_threshold)

    def on_epoch_begin(self, epoch, logs=None):
        self._current_epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.save_freq == "epoch":
            return
        self._batches_seen += 1
        if self._batches_seen % self.save_freq == 0:
            self._save(self._current_epoch, batch, logs or {})

    def on_epoch_end(self, epoch, logs=None):
        if self.save_freq == "epoch":
            self._save(epoch, None, logs or {})

    def _file_path(self, epoch, batch, logs):
        fields = dict(logs)
        fields["epoch"] = epoch + 1
        if batch is not None:
            fields["batch"] = batch + 1
        try:
            return self.filepath.format(**fields)
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f'ModelCheckpoint: failed to format filepath "{self.filepath}" with '
                             f"epoch and logs {sorted(logs)}: {exc!r}") from None

    def _write(self, path):
        d = os.path.dirname(path)
        if d:
            os.makedirs(d, exist_ok=True)
        if self.save_weights_only:
            if hasattr(self.model, "save_weights"):
                self.model.save_weights(path)
            else:
                from .saving import save_weights
                save_weights(self.model, path)
        elif hasattr(self.model, "save"):
            self.model.save(path)
        else:
            from .saving import save_model
            save_model(self.model, path)

    def _save(self, epoch, batch, logs):
        path = self._file_path(epoch, batch, logs)
        if not self.save_best_only:
            if self.verbose > 0:
                _print(f"\nEpoch {epoch + 1}: saving model to {path}")
            self._write(path)
            return
        if self._sign is None:
            self._sign = 1.0 if self._resolve_mode("ModelCheckpoint") == "max" else -1.0
        current = logs.get(self.monitor)
        current = None if current is None else _scalar(current)
        if current is None:
            if not self._warned_missing:
                self._warned_missing = True
                warnings.warn(f"ModelCheckpoint can save the best model only with {self.monitor!r} available, "
                              f"skipping; available: {sorted(logs)}", RuntimeWarning, stacklevel=2)
            return
        if self.best is None or self._sign * (current - self.best) > 0:
            if self.verbose > 0:
                prev = "inf" if self.best is None else f"{self.best:.5f}"
                _print(f"\nEpoch {epoch + 1}: {self.monitor} improved from {prev} to {current:.5f}, "
                       f"saving model to {path}")
            self.best = current
            self._write(path)
        elif self.verbose > 0:
            _print(f"\nEpoch {epoch + 1}: {self.monitor} did not improve from {self.best:.5f}")


# --------------------------------------------------------------------- learning rate
def _get_lr(model, what):
    opt = getattr(model, "optimizer", None)
    if opt is None or not hasattr(opt, "learning_rate"):
        raise ValueError(f"{what}: the model has no optimizer with a learning_rate (compile it first)")
    lr = opt.learning_rate
    if callable(lr):
        raise TypeError(f"{what}: the optimizer's learning_rate is a schedule ({type(lr).__name__}); "
                        f"{what} needs a float learning rate it can set")
    return float(lr)


def _set_lr(model, value):
    model.optimizer.learning_rate = float(value)


def _lr_for_logs(model):
    opt = getattr(model, "optimizer", None)
    lr = getattr(opt, "learning_rate", None)
    if lr is None:
        return None
    if callable(lr):
        return float(lr(int(getattr(opt, "iterations", 0))))
    return float(lr)


class ReduceLROnPlateau(_MonitorMixin, Callback):
    """Reduce the learning rate when a monitored value has stopped improving.

    Adds "learning_rate" to the epoch logs.

    Parameters
    ----------
    monitor : str, default "val_loss"
        The epoch-log name to watch.
    factor : float, default 0.1
        Multiplier of the learning rate at each reduction (< 1).
    patience : int, default 10
        Epochs without improvement before a reduction.
    verbose : int, default 0
        1 prints a message when the callback acts.
    mode : {"auto", "min", "max"}, default "auto"
        Whether lower or higher is better ("auto": told from the name).
    min_delta : float, default 1e-4
        Least change that counts as an improvement.
    cooldown : int, default 0
        Epochs to wait after a reduction before watching again.
    min_lr : float, default 0.0
        Lower bound of the learning rate.
    **kwargs
        ``epsilon``, the Keras 2 name of `min_delta`.

    Raises
    ------
    ValueError
        If an argument is out of range.
    """

    def __init__(self, monitor: str = "val_loss", factor: float = 0.1, patience: int = 10, verbose: int = 0,
                 mode: str = "auto", min_delta: float = 1e-4, cooldown: int = 0, min_lr: float = 0.0,
                 **kwargs: Any) -> None:
        super().__init__()
        if "epsilon" in kwargs:  # Keras-1 name of min_delta
            min_delta = kwargs.pop("epsilon")
        if kwargs:
            raise TypeError(f"ReduceLROnPlateau: unexpected keyword argument(s) {sorted(kwargs)}")
        if not isinstance(factor, numbers.Real) or not (0.0 < factor < 1.0):
            raise ValueError(f"ReduceLROnPlateau: factor must be in (0, 1), got {factor!r}")
        if isinstance(patience, bool) or not isinstance(patience, numbers.Integral) or patience < 0:
            raise ValueError(f"ReduceLROnPlateau: patience must be an integer >= 0, got {patience!r}")
        if isinstance(cooldown, bool) or not isinstance(cooldown, numbers.Integral) or cooldown < 0:
            raise ValueError(f"ReduceLROnPlateau: cooldown must be an integer >= 0, got {cooldown!r}")
        if not isinstance(min_lr, numbers.Real) or not (min_lr >= 0.0) or not math.isfinite(min_lr):
            raise ValueError(f"ReduceLROnPlateau: min_lr must be a finite number >= 0, got {min_lr!r}")
        if not isinstance(min_delta, numbers.Real) or not math.isfinite(min_delta):
            raise ValueError(f"ReduceLROnPlateau: min_delta must be a finite number, got {min_delta!r}")
        _check_mode("ReduceLROnPlateau", mode)
        self.monitor = monitor
        self.factor = float(factor)
        self.patience = int(patience)
        self.verbose = verbose
        self.mode = mode
        self.min_delta = abs(float(min_delta))
        self.cooldown = int(cooldown)
        self.min_lr = float(min_lr)
        self._reset()

    def _reset(self):
        self.wait = 0
        self.cooldown_counter = 0
        self.best = None
        self._sign = None
        self._warned_missing = False

    def in_cooldown(self) -> bool:
        """Whether the callback is waiting after a reduction.

        Returns
        -------
        bool
            True during the cooldown.
        """
        return self.cooldown_counter > 0

    def on_train_begin(self, logs=None):
        self._reset()
        _check_monitor(self, "ReduceLROnPlateau")
        self._sign = 1.0 if self._resolve_mode("ReduceLROnPlateau") == "max" else -1.0
        _get_lr(self.model, "ReduceLROnPlateau")

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        if self._sign is None:
            self._sign = 1.0 if self._resolve_mode("ReduceLROnPlateau") == "max" else -1.0
        lr = _get_lr(self.model, "ReduceLROnPlateau")
        logs["learning_rate"] = lr
        current = self._get_monitor_value(logs, "Learning rate reduction")
        if current is None:
            return
        if self.in_cooldown():
            self.cooldown_counter -= 1
            self.wait = 0
        if self.best is None or self._sign * (current - self.best) > self.min_delta:
            self.best = current
            self.wait = 0
        elif not self.in_cooldown():
            self.wait += 1
            if self.wait >= self.patience:
                # compare in float32 like Keras: a rate already at min_lr (as stored) stays put
                if np.float32(lr) > np.float32(self.min_lr):
                    new_lr = max(lr * self.factor, self.min_lr)
                    _set_lr(self.model, new_lr)
                    if self.verbose > 0:
                        _print(f"\nEpoch {epoch + 1}: ReduceLROnPlateau reducing learning rate to {new_lr}.")
                    self.cooldown_counter = self.cooldown
                    self.wait = 0


class LearningRateScheduler(Callback):
    """Set the learning rate at the start of each epoch from a function.

    Adds "learning_rate" to the epoch logs.

    Parameters
    ----------
    schedule : callable
        ``schedule(epoch, lr) -> new lr`` (epoch 0-based); a one-argument
        ``schedule(epoch)`` is accepted too.
    verbose : int, default 0
        1 prints a message when the callback acts.

    Raises
    ------
    TypeError
        If `schedule` is not callable.
    """

    def __init__(self, schedule: Callable, verbose: int = 0) -> None:
        super().__init__()
        if not callable(schedule):
            raise TypeError("LearningRateScheduler: schedule must be callable (epoch, lr) -> lr, "
                            f"got {schedule!r}")
        self.schedule = schedule
        self.verbose = verbose
        self._nargs = self._count_args(schedule)

    @staticmethod
    def _count_args(fn):
        try:
            sig = inspect.signature(fn)
        except (TypeError, ValueError):
            return 2
        params = [p for p in sig.parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        if any(p.kind == p.VAR_POSITIONAL for p in sig.parameters.values()):
            return 2
        required = [p for p in params if p.default is p.empty]
        if len(params) >= 2:
            return 2
        if len(required) <= 1 and params:
            return 1
        raise TypeError(f"LearningRateScheduler: schedule must take (epoch, lr) or (epoch), got signature {sig}")

    def on_epoch_begin(self, epoch, logs=None):
        lr = _get_lr(self.model, "LearningRateScheduler")
        new_lr = self.schedule(epoch, lr) if self._nargs == 2 else self.schedule(epoch)
        value = _scalar(new_lr)
        if value is None or isinstance(new_lr, bool):
            raise ValueError(f"LearningRateScheduler: the schedule must return a float, got {new_lr!r} "
                             f"at epoch {epoch}")
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"LearningRateScheduler: the schedule returned an invalid learning rate "
                             f"{value!r} at epoch {epoch}")
        _set_lr(self.model, value)
        if self.verbose > 0:
            _print(f"\nEpoch {epoch + 1}: LearningRateScheduler setting learning rate to {value}.")

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = _get_lr(self.model, "LearningRateScheduler")


# --------------------------------------------------------------------- CSVLogger
class CSVLogger(Callback):
    """Stream epoch results to a CSV file.

    A header ``epoch,<sorted log keys>`` and one row per epoch.

    Parameters
    ----------
    filename : str or path-like
        The file.
    separator : str, default ","
        Field separator.
    append : bool, default False
        Continue an existing file (no second header).

    Raises
    ------
    TypeError
        If `filename` is not a path.
    """

    rank_zero_only = True

    def __init__(self, filename: str | os.PathLike, separator: str = ",", append: bool = False) -> None:
        super().__init__()
        if not isinstance(filename, (str, os.PathLike)):
            raise TypeError(f"CSVLogger: filename must be a path, got {filename!r}")
        if not isinstance(separator, str) or len(separator) != 1:
            raise ValueError(f"CSVLogger: separator must be a single character, got {separator!r}")
        self.filename = os.fspath(filename)
        self.sep = separator
        self.append = bool(append)
        self.keys = None
        self.writer = None
        self.csv_file = None
        self.append_header = True

    def on_train_begin(self, logs=None):
        if self.append:
            if os.path.exists(self.filename):
                with open(self.filename, "r", newline="") as f:
                    self.append_header = not bool(f.readline())
            mode = "a"
        else:
            self.append_header = True
            mode = "w"
        self.csv_file = open(self.filename, mode, newline="")
        self.writer = None
        self.keys = None

    @staticmethod
    def _cell(v):
        if isinstance(v, str):
            return v
        if isinstance(v, np.ndarray) and v.ndim == 0:
            return v.item()
        if isinstance(v, collections.abc.Iterable):
            return "[" + ", ".join(map(str, v)) + "]"
        return v

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.csv_file is None:       # used outside fit: open lazily
            self.on_train_begin()
        if self.keys is None:
            self.keys = sorted(logs)
            # with validation_freq > 1 the first epoch has no val_* keys yet
            do_val = (self.params or {}).get("do_validation", None)
            if do_val and not any(k.startswith("val_") for k in self.keys):
                self.keys += ["val_" + k for k in self.keys if k not in _ALWAYS_LOGGED]
        if self.writer is None:
            self.writer = csv.writer(self.csv_file, delimiter=self.sep, lineterminator="\n")
            if self.append_header:
                self.writer.writerow(["epoch"] + self.keys)
        self.writer.writerow([epoch] + [self._cell(logs.get(k, "NA")) for k in self.keys])
        self.csv_file.flush()

    def on_train_end(self, logs=None):
        if self.csv_file is not None:
            self.csv_file.close()
        self.csv_file = None
        self.writer = None


# --------------------------------------------------------------------- TerminateOnNaN
class TerminateOnNaN(Callback):
    """Stop training as soon as a batch reports a NaN or infinite loss."""

    def on_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is None:
            return
        value = _scalar(loss)
        if value is not None and not math.isfinite(value):
            _print(f"Batch {batch}: Invalid loss, terminating training")
            self.model.stop_training = True


# --------------------------------------------------------------------- LambdaCallback
class LambdaCallback(Callback):
    """A callback made of plain functions, one per hook.

    Parameters
    ----------
    on_epoch_begin : callable or None, default None
        ``f(epoch, logs)``.
    on_epoch_end : callable or None, default None
        ``f(epoch, logs)``.
    on_train_begin : callable or None, default None
        ``f(logs)``.
    on_train_end : callable or None, default None
        ``f(logs)``.
    on_train_batch_begin : callable or None, default None
        ``f(batch, logs)``.
    on_train_batch_end : callable or None, default None
        ``f(batch, logs)``.
    **kwargs
        Any other hook by name (``on_test_batch_end=f``, ...).

    Raises
    ------
    TypeError
        If a hook name is unknown or a hook is not callable.

    Examples
    --------
    >>> import fastgrad as fg
    >>> cb = fg.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: print(epoch))
    """

    def __init__(self, on_epoch_begin: Callable | None = None, on_epoch_end: Callable | None = None,
                 on_train_begin: Callable | None = None, on_train_end: Callable | None = None,
                 on_train_batch_begin: Callable | None = None, on_train_batch_end: Callable | None = None,
                 **kwargs: Callable) -> None:
        super().__init__()
        given = dict(on_epoch_begin=on_epoch_begin, on_epoch_end=on_epoch_end, on_train_begin=on_train_begin,
                     on_train_end=on_train_end, on_train_batch_begin=on_train_batch_begin,
                     on_train_batch_end=on_train_batch_end)
        for k in kwargs:
            if k not in _HOOKS:
                raise TypeError(f"LambdaCallback: unknown hook {k!r}; expected one of {_HOOKS}")
        given.update(kwargs)
        for k, fn in given.items():
            if fn is None:
                continue
            if not callable(fn):
                raise TypeError(f"LambdaCallback: {k} must be callable, got {fn!r}")
            setattr(self, k, fn)


# --------------------------------------------------------------------- ProgbarLogger
class ProgbarLogger(Callback):
    """Print progress to standard output (what ``fit(verbose=...)`` adds).

    Parameters
    ----------
    count_mode : "steps", default "steps"
        Count batches (the only mode).
    stateful_metrics : iterable of str or None, default None
        Accepted for Keras compatibility (the logs are running means already).
    verbose : {None, 0, 1, 2, "auto"}, default None
        1: a live bar per epoch (steps, elapsed, ETA, running loss and
        metrics); 2: one line per epoch; None: fit's `verbose`.
    interval : float, default 0.25
        Least time between two redraws of the bar, in seconds.

    Raises
    ------
    ValueError
        If `count_mode` or `verbose` is invalid.
    """

    rank_zero_only = True

    def __init__(self, count_mode: str = "steps", stateful_metrics: Iterable[str] | None = None,
                 verbose: int | str | None = None, interval: float = 0.25) -> None:
        super().__init__()
        if count_mode not in ("steps",):
            raise ValueError(f"ProgbarLogger: only count_mode='steps' is supported, got {count_mode!r}")
        if verbose not in (None, 0, 1, 2, "auto"):
            raise ValueError(f"ProgbarLogger: verbose must be 0, 1, 2 or 'auto', got {verbose!r}")
        self._verbose_arg = verbose
        self.verbose = 1 if verbose in (None, "auto") else verbose
        self.interval = float(interval)
        self.epochs = 1
        self.target = None
        self.progbar = None
        self.seen = 0
        self._called_in_fit = False

    def set_params(self, params):
        super().set_params(params)
        if self._verbose_arg is None:
            v = self.params.get("verbose", 1)
            self.verbose = 1 if v == "auto" else int(v)
        self.epochs = self.params.get("epochs", 1) or 1
        self.target = self.params.get("steps")

    def _reset(self):
        self.seen = 0
        self.progbar = None

    def _ensure(self):
        if self.progbar is None:
            self.progbar = Progbar(target=self.target, verbose=self.verbose, interval=self.interval,
                                   stateful_metrics=True, unit_name="step")

    @staticmethod
    def _items(logs):
        if not logs:
            return None
        out = []
        for k, v in logs.items():
            if k in ("batch", "size"):
                continue
            f = _scalar(v)
            if f is not None:
                out.append((k, f))
        return out

    def _update(self, batch, logs):
        pb = self.progbar
        if pb is None:
            self._ensure()
            pb = self.progbar
        self.seen = batch + 1
        # values are running means shown as given, so between draws only the count matters
        if pb.due():
            pb.update(self.seen, self._items(logs), finalize=False)
        else:
            pb.skip(self.seen)

    def _finalize(self, logs):
        self._ensure()
        if self.target is None:
            self.target = self.seen
            self.progbar.target = self.seen
        self.progbar.update(self.seen, self._items(logs), finalize=True)

    def on_train_begin(self, logs=None):
        self._called_in_fit = True

    def on_train_end(self, logs=None):
        self._called_in_fit = False

    def on_epoch_begin(self, epoch, logs=None):
        self._reset()
        self._ensure()
        if self.verbose and self.epochs > 1:
            _print(f"Epoch {epoch + 1}/{self.epochs}")

    def on_train_batch_end(self, batch, logs=None):
        self._update(batch, logs)

    def on_epoch_end(self, epoch, logs=None):
        self._finalize(logs)

    def on_test_begin(self, logs=None):
        if not self._called_in_fit:
            self._reset()
            self._ensure()

    def on_test_batch_end(self, batch, logs=None):
        if not self._called_in_fit:
            self._update(batch, logs)

    def on_test_end(self, logs=None):
        if not self._called_in_fit:
            self._finalize(logs)

    def on_predict_begin(self, logs=None):
        self._reset()
        self._ensure()

    def on_predict_batch_end(self, batch, logs=None):
        self._update(batch, None)

    def on_predict_end(self, logs=None):
        self._finalize(None)
