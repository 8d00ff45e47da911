"""Losses (Keras names and semantics), each computed by one fused ops call.

A loss reports the mean over the batch of the per-sample loss (weighted by
sample_weight when given: sum_i w_i l_i / rows, Keras "sum_over_batch_size")
and the gradient of that mean with respect to the model output.

Cross-entropies on probabilities (from_logits=False) declare the output
activation they can absorb (`fusable_activation`: softmax or sigmoid).  When
the model ends in that activation, the model strips it from the last layer
and the loss runs the numerically stable kernel on the logits
(ops.sparse_softmax_crossentropy / softmax_crossentropy /
binary_crossentropy_from_logits); predict() still returns probabilities.

`target_kind` tells the data validation what y must look like: "sparse"
(integer class ids) or "dense" (float array shaped like the output).

The compiled plan (engine/compiled.py) asks a loss for its C code through the
public `lower(ctx, on_logits)`; the base class has no C path (it raises
`ctx.unsupported`), so a user-defined loss runs on the Python step, as does a
subclass of a built-in loss that replaces its `compute`.
"""
from __future__ import annotations

from typing import Any, Callable

from numpy.typing import ArrayLike

import numpy as np

__all__ = ["Loss", "LossFunctionWrapper", "MeanSquaredError", "BinaryCrossentropy", "CategoricalCrossentropy",
           "SparseCategoricalCrossentropy", "get", "serialize", "deserialize",
           "mean_squared_error", "binary_crossentropy", "categorical_crossentropy",
           "sparse_categorical_crossentropy", "LABEL_DTYPE", "REDUCTIONS"]

#: dtype of integer labels handed to the sparse kernels
LABEL_DTYPE = np.int32

#: Keras 3's reductions ("auto" is read as "sum_over_batch_size")
REDUCTIONS = ("sum_over_batch_size", "sum", None, "none", "mean", "mean_with_sample_weight", "auto")


class Loss:
    """Base class of the losses.

    A built-in loss implements :meth:`compute` (value and gradient in one
    fused ops call); a user loss implements :meth:`call` with ``fastgrad.math``
    and gets its gradient derived (docs/autodiff.md).

    Parameters
    ----------
    name : str or None, default None
        Name in logs (None: the Keras function name, e.g. "mean_squared_error").
    reduction : str or None, default "sum_over_batch_size"
        How per-sample values are reduced: one of :data:`REDUCTIONS`
        ("auto" is "sum_over_batch_size"; None or "none" keeps one value per sample).
    dtype : None
        Accepted for Keras compatibility; fastgrad computes in the output's dtype.

    Raises
    ------
    ValueError
        If `reduction` is not one of :data:`REDUCTIONS`.

    Examples
    --------
    >>> import fastgrad as fg
    >>> float(fg.losses.MeanSquaredError()([[0.0, 1.0]], [[1.0, 1.0]]))
    0.5
    """

    target_kind = "dense"
    fusable_activation = None   # output activation this loss can take over
    from_logits = False

    def __init__(self, name: str | None = None, reduction: str | None = "sum_over_batch_size",
                 dtype: Any = None) -> None:
        if reduction not in REDUCTIONS:
            raise ValueError(f"{type(self).__name__}: reduction must be one of "
                             f"{', '.join(repr(r) for r in REDUCTIONS)}, got {reduction!r}")
        custom = type(self).call is not Loss.call
        # "auto" is "sum_over_batch_size"; a loss written with call spells None "none"
        self.reduction = ("sum_over_batch_size" if reduction == "auto" else
                          "none" if reduction is None and custom else reduction)
        self.name = name or _DEFAULT_NAMES.get(type(self).__name__, _snake(type(self).__name__))

    def call(self, y_true: Any, y_pred: Any) -> Any:
        """Per-sample loss values, written with ``fastgrad.math`` (Keras's ``Loss.call``).

        A subclass that defines it gets its gradient derived (docs/autodiff.md).

        Parameters
        ----------
        y_true : tensor or array_like
            Targets.
        y_pred : tensor or array_like
            Model outputs.

        Returns
        -------
        tensor
            One value per sample.
        """
        raise NotImplementedError(f"{type(self).__name__}.call")

    # ------------------------------------------------------------------ reduction
    def _reduction_factor(self, out, sample_weight):
        """What turns the "sum_over_batch_size" value (and gradient) the kernels give
        into this loss's reduction: 1; the number of per-sample values for "sum" and
        None / "none" (training takes the gradient of the sum, as Keras's tape does
        for a vector loss); that number / sum(sample_weight) for
        "mean_with_sample_weight" ("mean" is "sum_over_batch_size" in Keras 3)."""
        r = self.reduction
        if r in ("sum_over_batch_size", "mean"):
            return 1.0
        # per-sample values: one per row of the last axis (a sparse target: per row)
        if self.target_kind == "sparse" or out.ndim == 1:
            n = out.shape[0]
        else:
            n = out.size // out.shape[-1]
        if r == "mean_with_sample_weight":
            if sample_weight is None:
                return 1.0
            sw = float(np.sum(sample_weight, dtype=np.float64))
            return float(n) / sw if sw != 0.0 else 0.0
        return float(n)

    def _reduce(self, out, sample_weight, result):
        """Apply the reduction to a kernel's (loss, grad) (grad scaled in place)."""
        f = self._reduction_factor(out, sample_weight)
        if f == 1.0:
            return result
        loss, g = result
        g *= g.dtype.type(f)
        return loss * f, g

    def _lower_reduction(self, ctx):
        if self.reduction not in ("sum_over_batch_size", "mean"):
            raise ctx.unsupported(f"loss {self.name}: reduction={self.reduction!r} runs on the "
                                  "Python step")

    def compute(self, ops: Any, out: np.ndarray, target: np.ndarray, sample_weight: np.ndarray | None,
                grad_out: np.ndarray, logits: bool) -> tuple[float, np.ndarray]:
        """Loss value and its gradient with respect to the model output, in one call.

        Parameters
        ----------
        ops : Ops
            The backend that computes (``fastgrad.get_ops()``).
        out : numpy.ndarray
            Model output, ``(batch, ...)``: logits when `logits` is True.
        target : numpy.ndarray
            Targets (integer ids of dtype :data:`LABEL_DTYPE` for a sparse loss).
        sample_weight : numpy.ndarray or None
            One weight per sample.
        grad_out : numpy.ndarray
            Written with the gradient, shaped like `out`.
        logits : bool
            Whether `out` holds logits (the model fused its output activation
            into this loss).

        Returns
        -------
        tuple of (float, numpy.ndarray)
            The reduced loss and `grad_out`.
        """
        if type(self).call is not Loss.call:
            from .autodiff.losses import derived_compute
            return derived_compute(self, ops, out, target, sample_weight, grad_out, logits)
        raise NotImplementedError

    def __call__(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> Any:
        """Evaluate the loss eagerly (Keras style).

        Parameters
        ----------
        y_true : array_like
            Targets.
        y_pred : array_like or tensor
            Predictions, ``(batch, ...)``.
        sample_weight : array_like or None, default None
            One weight per sample.

        Returns
        -------
        float or numpy.ndarray or tensor
            The reduced loss; per-sample values for ``reduction=None``; a
            differentiable tensor on a ``GradientTape`` or for a loss written with
            :meth:`call`.
        """
        from .autodiff import losses as _adl
        from .autodiff.core import _recording
        if type(self).call is not Loss.call or _recording() or _adl._is_tensor(y_pred):
            return _adl.loss_call(self, y_true, y_pred, sample_weight)
        from . import _config
        ops = _config.get_ops()
        pred = np.asarray(y_pred)
        if pred.dtype not in (np.float32, np.float64):
            pred = pred.astype(np.float32)
        pred = np.ascontiguousarray(pred)
        if pred.ndim == 1:
            pred = pred.reshape(-1, 1)
        target = np.asarray(y_true)
        if self.target_kind == "sparse":
            target = np.ascontiguousarray(target.reshape(-1).astype(LABEL_DTYPE))
        else:
            target = np.ascontiguousarray(target, dtype=pred.dtype).reshape(pred.shape)
        sw = None if sample_weight is None else np.ascontiguousarray(sample_weight,
                                                                     dtype=pred.dtype).reshape(-1)
        if self.reduction in (None, "none"):
            return self.values(ops, pred, target, sw)
        loss, _ = self.compute(ops, pred, target, sw, np.empty_like(pred), self.from_logits)
        return loss

    def values(self, ops: Any, pred: np.ndarray, target: np.ndarray,
               sample_weight: np.ndarray | None = None) -> np.ndarray:
        """Per-sample loss values (Keras's ``reduction=None``).

        Parameters
        ----------
        ops : Ops
            The backend that computes (``fastgrad.get_ops()``).
        pred : numpy.ndarray
            Predictions, ``(batch, ...)``.
        target : numpy.ndarray
            Targets.
        sample_weight : numpy.ndarray or None, default None
            One weight per sample, multiplied in.

        Returns
        -------
        numpy.ndarray
            float64 values, one per sample (the last axis reduced).
        """
        v = self._values(ops, pred, target)
        if sample_weight is not None:
            w = np.asarray(sample_weight, dtype=np.float64).reshape(-1)
            v = v * w.reshape((-1,) + (1,) * (v.ndim - 1))
        return v

    def _values(self, ops, pred, target):
        raise NotImplementedError(f"{type(self).__name__}: per-sample values (reduction=None) "
                                  "are not implemented")

    def get_config(self) -> dict:
        """The constructor arguments as a dict (Keras config).

        Returns
        -------
        dict
            Keyword arguments that rebuild this loss.
        """
        return {"name": self.name, "reduction": self.reduction}

    @classmethod
    def from_config(cls, config: dict) -> Loss:
        """Build a loss from :meth:`get_config`'s output.

        Parameters
        ----------
        config : dict
            Constructor keyword arguments.

        Returns
        -------
        Loss
            The new loss.
        """
        return cls(**config)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.get_config()})"


    # ------------------------------------------------------------------ compiled plan
    def lower(self, ctx: Any, on_logits: bool) -> Any:
        """The C loss code of this loss for the compiled training plan.

        The base class has no C path: it raises ``ctx.unsupported`` and the
        model trains on the Python step.

        Parameters
        ----------
        ctx : LowerContext
            The compiled plan's context (engine/compiled.py); ``ctx.loss_code(name)``
            gives a code.
        on_logits : bool
            The model fused its output activation into this loss, so the
            output the C step hands it is logits.

        Returns
        -------
        object
            The loss code (with its parameters, for a parametrised loss).
        """
        raise ctx.unsupported(f"loss {self.name} ({type(self).__name__}) has no C path")

    def _lower_code(self, ctx, rule_of, on_logits, logits_name, probs_name=None):
        """ctx.loss_code of the C loss that computes `rule_of.compute` on logits
        (`logits_name`) or probabilities (`probs_name`, None: no C path); a subclass
        that replaces `compute` has no C path."""
        cls = type(self)
        self._lower_reduction(ctx)
        logits = bool(on_logits) or bool(self.from_logits)
        name = logits_name if logits else probs_name
        if cls.compute is not rule_of.compute or name is None:
            raise ctx.unsupported(f"loss {self.name} ({cls.__name__}, on "
                                  f"{'logits' if logits else 'probabilities'}) has no fused C path")
        return ctx.loss_code(name)


class LossFunctionWrapper(Loss):
    """A plain loss function as a :class:`Loss` (what ``compile(loss=fn)`` makes).

    Parameters
    ----------
    fn : callable
        ``fn(y_true, y_pred, **kwargs)`` returning per-sample losses, written
        with ``fastgrad.math``; its gradient is derived.
    name : str or None, default None
        Name in logs (None: the function's name).
    reduction : str or None, default "sum_over_batch_size"
        How per-sample values are reduced (one of :data:`REDUCTIONS`).
    **kwargs
        Further keyword arguments passed to `fn`.

    Raises
    ------
    TypeError
        If `fn` is not callable.
    """

    def __init__(self, fn: Callable, name: str | None = None,
                 reduction: str | None = "sum_over_batch_size", **kwargs: Any) -> None:
        if not callable(fn):
            raise TypeError(f"LossFunctionWrapper: expected a function, got {fn!r}")
        self.fn = fn
        self.fn_kwargs = kwargs
        super().__init__(name=name or getattr(fn, "__name__", "loss"), reduction=reduction)

    def call(self, y_true: Any, y_pred: Any) -> Any:
        return self.fn(y_true, y_pred, **self.fn_kwargs)

    def get_config(self):
        return {"name": self.name, "reduction": self.reduction,
                "fn": getattr(self.fn, "__name__", repr(self.fn))}

    @classmethod
    def from_config(cls, config):
        cfg = dict(config)
        fn = cfg.pop("fn", None)
        if not callable(fn):
            raise ValueError(f"LossFunctionWrapper: the function {fn!r} is not known; pass it as "
                             "custom_objects / compile it again")
        return cls(fn, **cfg)


def _snake(name):
    from .layers.base import _snake as s
    return s(name)


class MeanSquaredError(Loss):
    """Mean squared error, ``mean((y_pred - y_true)**2)`` over the last axis.

    Parameters
    ----------
    name : str or None, default None
        Name in logs (None: the Keras function name, e.g. "mean_squared_error").
    reduction : str or None, default "sum_over_batch_size"
        How per-sample values are reduced: one of :data:`REDUCTIONS`
        ("auto" is "sum_over_batch_size"; None or "none" keeps one value per sample).
    dtype : None
        Accepted for Keras compatibility.
    """

    def compute(self, ops, out, target, sample_weight, grad_out, logits):
        return self._reduce(out, sample_weight, ops.mse(out, target, sample_weight, grad_out))

    def _values(self, ops, pred, target):
        d = pred.astype(np.float64) - target.astype(np.float64)
        return np.mean(d * d, axis=-1)

    def lower(self, ctx, on_logits):
        return self._lower_code(ctx, MeanSquaredError, on_logits, "mse", "mse")


class _CrossEntropy(Loss):
    _fuse: str

    def __init__(self, from_logits: bool = False, name: str | None = None,
                 reduction: str | None = "sum_over_batch_size") -> None:
        super().__init__(name=name, reduction=reduction)
        self.from_logits = bool(from_logits)

    @property
    def fusable_activation(self):
        return None if self.from_logits else self._fuse

    def get_config(self):
        return {**super().get_config(), "from_logits": self.from_logits}


class BinaryCrossentropy(_CrossEntropy):
    """Binary cross-entropy between targets in [0, 1] and predicted probabilities (or logits).

    Parameters
    ----------
    from_logits : bool, default False
        Whether predictions are logits; with probabilities, a model that ends in
        the matching activation hands this loss its logits instead (stable kernel).
    name : str or None, default None
        Name in logs (None: the Keras function name, e.g. "mean_squared_error").
    reduction : str or None, default "sum_over_batch_size"
        How per-sample values are reduced: one of :data:`REDUCTIONS`
        ("auto" is "sum_over_batch_size"; None or "none" keeps one value per sample).
    """

    _fuse = "sigmoid"

    def compute(self, ops, out, target, sample_weight, grad_out, logits):
        if logits:
            r = ops.binary_crossentropy_from_logits(out, target, sample_weight, grad_out)
        else:
            r = ops.binary_crossentropy(out, target, sample_weight, grad_out)
        return self._reduce(out, sample_weight, r)

    def _values(self, ops, pred, target):
        x, z = pred.astype(np.float64), target.astype(np.float64)
        if self.from_logits:
            e = np.maximum(x, 0) - x * z + np.log1p(np.exp(-np.abs(x)))
        else:
            p = np.clip(x, 1e-7, 1 - 1e-7)
            e = -(z * np.log(p) + (1 - z) * np.log1p(-p))
        return e.mean(axis=-1)

    def lower(self, ctx, on_logits):
        return self._lower_code(ctx, BinaryCrossentropy, on_logits, "sigmoid_bce")


class CategoricalCrossentropy(_CrossEntropy):
    """Cross-entropy between one-hot (or soft) targets and predicted class probabilities.

    Parameters
    ----------
    from_logits : bool, default False
        Whether predictions are logits; with probabilities, a model that ends in
        the matching activation hands this loss its logits instead (stable kernel).
    name : str or None, default None
        Name in logs (None: the Keras function name, e.g. "mean_squared_error").
    reduction : str or None, default "sum_over_batch_size"
        How per-sample values are reduced: one of :data:`REDUCTIONS`
        ("auto" is "sum_over_batch_size"; None or "none" keeps one value per sample).
    """

    _fuse = "softmax"

    def compute(self, ops, out, target, sample_weight, grad_out, logits):
        if logits:
            r = ops.softmax_crossentropy(out, target, sample_weight, grad_out)
        else:
            r = ops.categorical_crossentropy(out, target, sample_weight, grad_out)
        return self._reduce(out, sample_weight, r)

    def _values(self, ops, pred, target):
        return -(target.astype(np.float64) * _log_probs(pred, self.from_logits)).sum(axis=-1)

    def lower(self, ctx, on_logits):
        return self._lower_code(ctx, CategoricalCrossentropy, on_logits, "softmax_xent")


class SparseCategoricalCrossentropy(_CrossEntropy):
    """Cross-entropy between integer class ids and predicted class probabilities.

    Parameters
    ----------
    from_logits : bool, default False
        Whether predictions are logits; with probabilities, a model that ends in
        the matching activation hands this loss its logits instead (stable kernel).
    name : str or None, default None
        Name in logs (None: the Keras function name, e.g. "mean_squared_error").
    reduction : str or None, default "sum_over_batch_size"
        How per-sample values are reduced: one of :data:`REDUCTIONS`
        ("auto" is "sum_over_batch_size"; None or "none" keeps one value per sample).
    """

    _fuse = "softmax"
    target_kind = "sparse"

    def compute(self, ops, out, target, sample_weight, grad_out, logits):
        if logits:
            return self._reduce(out, sample_weight,
                                ops.sparse_softmax_crossentropy(out, target, sample_weight, grad_out))
        # probabilities without a softmax to absorb: one-hot the labels (rare path)
        onehot = np.zeros(out.shape, dtype=out.dtype)
        onehot[np.arange(out.shape[0]), target] = 1
        return self._reduce(out, sample_weight,
                            ops.categorical_crossentropy(out, onehot, sample_weight, grad_out))

    def _values(self, ops, pred, target):
        lp = _log_probs(pred, self.from_logits)
        return -lp[np.arange(lp.shape[0]), np.asarray(target).reshape(-1)]

    def lower(self, ctx, on_logits):
        return self._lower_code(ctx, SparseCategoricalCrossentropy, on_logits,
                                "sparse_softmax_xent")


def _log_probs(pred, from_logits):
    """float64 log-probabilities of rows of logits or (renormalised, clipped) probabilities."""
    x = pred.astype(np.float64)
    if from_logits:
        m = x.max(axis=-1, keepdims=True)
        return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))
    q = x / x.sum(axis=-1, keepdims=True)
    return np.log(np.clip(q, 1e-7, 1 - 1e-7))


_DEFAULT_NAMES = {"MeanSquaredError": "mean_squared_error",
                  "BinaryCrossentropy": "binary_crossentropy",
                  "CategoricalCrossentropy": "categorical_crossentropy",
                  "SparseCategoricalCrossentropy": "sparse_categorical_crossentropy"}
_CLASSES: dict[str, Any] = {"MeanSquaredError": MeanSquaredError, "BinaryCrossentropy": BinaryCrossentropy,
            "CategoricalCrossentropy": CategoricalCrossentropy,
            "SparseCategoricalCrossentropy": SparseCategoricalCrossentropy}
_NAMES: dict[str, Any] = {"mse": MeanSquaredError, "mean_squared_error": MeanSquaredError,
          "meansquarederror": MeanSquaredError,
          "binary_crossentropy": BinaryCrossentropy, "bce": BinaryCrossentropy,
          "binarycrossentropy": BinaryCrossentropy,
          "categorical_crossentropy": CategoricalCrossentropy,
          "categoricalcrossentropy": CategoricalCrossentropy,
          "sparse_categorical_crossentropy": SparseCategoricalCrossentropy,
          "sparsecategoricalcrossentropy": SparseCategoricalCrossentropy}


def get(identifier: str | dict | Loss | type, where: str = "loss") -> Loss:
    """The loss a user passes to ``compile(loss=...)``.

    Parameters
    ----------
    identifier : str, dict, Loss or Loss subclass
        A name or alias ("mse", "sparse_categorical_crossentropy", ...) or class
        name, a serialized config, a loss (returned as is) or a Loss subclass
        (instantiated with its defaults).
    where : str, default "loss"
        What to name in an error message.

    Returns
    -------
    Loss
        The loss.

    Raises
    ------
    ValueError
        If the name is unknown.
    TypeError
        If `identifier` has another type.
    """
    if isinstance(identifier, Loss):
        return identifier
    if isinstance(identifier, type) and issubclass(identifier, Loss):
        return identifier()
    if isinstance(identifier, str):
        cls = _NAMES.get(identifier.strip().lower()) or _CLASSES.get(identifier)
        if cls is None:
            raise ValueError(f"{where}: unknown loss {identifier!r}; expected one of "
                             f"{', '.join(sorted(set(_NAMES) - {'meansquarederror', 'binarycrossentropy', 'categoricalcrossentropy', 'sparsecategoricalcrossentropy'}))}"
                             " or a fastgrad.losses.Loss")
        return cls()
    if isinstance(identifier, dict):
        return deserialize(identifier)
    if identifier is None:
        raise ValueError(f"{where}: a loss is required")
    if callable(identifier) and not isinstance(identifier, type):
        # a plain function of (y_true, y_pred) written with fg.math: gradient derived
        return LossFunctionWrapper(identifier)
    raise TypeError(f"{where}: expected a loss name or a fastgrad.losses.Loss, got {identifier!r}")


def serialize(loss: Loss) -> dict:
    """A loss as a Keras-style ``{"class_name", "config"}`` dict.

    Parameters
    ----------
    loss : Loss
        The loss.

    Returns
    -------
    dict
        Its serialized form.
    """
    return {"class_name": type(loss).__name__, "config": loss.get_config()}


def deserialize(d: dict) -> Loss:
    """Rebuild a loss from :func:`serialize`'s output.

    Parameters
    ----------
    d : dict
        A ``{"class_name", "config"}`` dict.

    Returns
    -------
    Loss
        The loss.

    Raises
    ------
    ValueError
        If the class name is unknown.
    """
    cls = _CLASSES.get(str(d.get("class_name")))
    if cls is None:
        raise ValueError(f"unknown loss class {d.get('class_name')!r}")
    return cls.from_config(d.get("config", {}))


def mean_squared_error(y_true: ArrayLike, y_pred: ArrayLike) -> Any:
    """Mean squared error of a batch (``MeanSquaredError()(y_true, y_pred)``).

    Parameters
    ----------
    y_true : array_like
        Targets, shaped like `y_pred`.
    y_pred : array_like
        Predictions, ``(batch, ...)``.

    Returns
    -------
    float
        The mean over the batch.
    """
    return MeanSquaredError()(y_true, y_pred)


def binary_crossentropy(y_true: ArrayLike, y_pred: ArrayLike, from_logits: bool = False) -> Any:
    """Binary cross-entropy of a batch (``BinaryCrossentropy(from_logits)(y_true, y_pred)``).

    Parameters
    ----------
    y_true : array_like
        Targets in [0, 1], shaped like `y_pred`.
    y_pred : array_like
        Predictions, ``(batch, ...)``.
    from_logits : bool, default False
        Whether `y_pred` holds logits.

    Returns
    -------
    float
        The mean over the batch.
    """
    return BinaryCrossentropy(from_logits=from_logits)(y_true, y_pred)


def categorical_crossentropy(y_true: ArrayLike, y_pred: ArrayLike, from_logits: bool = False) -> Any:
    """Categorical cross-entropy of a batch (one-hot or soft targets).

    Parameters
    ----------
    y_true : array_like
        Targets, one-hot or soft, shaped like `y_pred`.
    y_pred : array_like
        Predictions, ``(batch, ...)``.
    from_logits : bool, default False
        Whether `y_pred` holds logits.

    Returns
    -------
    float
        The mean over the batch.
    """
    return CategoricalCrossentropy(from_logits=from_logits)(y_true, y_pred)


def sparse_categorical_crossentropy(y_true: ArrayLike, y_pred: ArrayLike, from_logits: bool = False) -> Any:
    """Sparse categorical cross-entropy of a batch (integer class ids as targets).

    Parameters
    ----------
    y_true : array_like
        Targets: integer class ids, ``(batch,)``.
    y_pred : array_like
        Predictions, ``(batch, ...)``.
    from_logits : bool, default False
        Whether `y_pred` holds logits.

    Returns
    -------
    float
        The mean over the batch.
    """
    return SparseCategoricalCrossentropy(from_logits=from_logits)(y_true, y_pred)


mse = mean_squared_error


# the further Keras losses (Huber, LogCosh, KLDivergence, ...) live in losses_ext
from . import losses_ext as _ext  # noqa: E402
from .losses_ext import *  # noqa: E402,F401,F403

__all__ += _ext.__all__
_CLASSES.update(_ext.CLASSES)
_NAMES.update(_ext.NAMES)
_DEFAULT_NAMES.update(_ext.DEFAULT_NAMES)
