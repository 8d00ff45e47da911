"""The further Keras 3 losses, by class and function name: MeanAbsoluteError,
MeanAbsolutePercentageError, MeanSquaredLogarithmicError, Huber, LogCosh,
KLDivergence, Poisson, Hinge, SquaredHinge, CategoricalHinge, CosineSimilarity.

Each computes through one ops call (NumpyOps: backend/numpy_lossopt.py; C:
csrc/lossopt) and lowers to its C loss code of the compiled plan, so a model
with one of them trains on the C path with the Python path's bits. Formulas,
defaults and names are Keras 3's (see docs/losses_optimizers.md); reductions as
fastgrad.losses.Loss has them. Re-exported by fastgrad.losses.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from .losses import Loss

__all__ = ["MeanAbsoluteError", "MeanAbsolutePercentageError", "MeanSquaredLogarithmicError",
           "Huber", "LogCosh", "KLDivergence", "Poisson", "Hinge", "SquaredHinge",
           "CategoricalHinge", "CosineSimilarity",
           "mean_absolute_error", "mean_absolute_percentage_error",
           "mean_squared_logarithmic_error", "huber", "log_cosh", "logcosh", "kl_divergence",
           "kld", "poisson", "hinge", "squared_hinge", "categorical_hinge", "cosine_similarity",
           "mae", "mape", "msle"]


class _OpLoss(Loss):
    """A loss computed by ops.<_op>(out, target, sample_weight, grad_out, **params),
    lowered to the C loss code `_code`."""

    _op: str | None = None
    _code: str | None = None

    def __init__(self, reduction: str | None = "sum_over_batch_size", name: str | None = None,
                 dtype: Any = None) -> None:
        super().__init__(name=name or self._op, reduction=reduction)

    def _params(self):
        return {}

    def compute(self, ops, out, target, sample_weight, grad_out, logits):
        r = getattr(ops, self._op)(out, target, sample_weight, grad_out, **self._params())
        return self._reduce(out, sample_weight, r)

    def _values(self, ops, pred, target):
        return ops.loss_values(self._op, pred, target, **self._params())

    def lower(self, ctx, on_logits):
        cls = type(self)
        self._lower_reduction(ctx)
        # a subclass that replaces the computation (compute, or a Keras-style call if the
        # base class has one) has no C path
        if (cls.compute is not _OpLoss.compute
                or getattr(cls, "call", None) is not getattr(Loss, "call", None)):
            raise ctx.unsupported(f"loss {self.name} ({cls.__name__}) replaces its computation: "
                                  "no C path")
        return ctx.loss_code(self._code)


class MeanAbsoluteError(_OpLoss):
    """Mean absolute error, ``mean(abs(y_pred - y_true))`` over the last axis.

    Parameters
    ----------
    reduction : str or None, default "sum_over_batch_size"
        How per-sample values are reduced (one of ``fastgrad.losses.REDUCTIONS``).
    name : str or None, default None
        Name in logs (None: the Keras function name).
    dtype : None
        Accepted for Keras compatibility; fastgrad computes in the output's dtype.
    """

    _op, _code = "mean_absolute_error", "mae"


class MeanAbsolutePercentageError(_OpLoss):
    """Mean absolute percentage error over the last axis.

    ``100 * mean(abs((y_true - y_pred) / max(abs(y_true), 1e-7)))``.

    Parameters
    ----------
    reduction : str or None, default "sum_over_batch_size"
        How per-sample values are reduced (one of ``fastgrad.losses.REDUCTIONS``).
    name : str or None, default None
        Name in logs (None: the Keras function name).
    dtype : None
        Accepted for Keras compatibility; fastgrad computes in the output's dtype.
    """

    _op, _code = "mean_absolute_percentage_error", "mape"


class MeanSquaredLogarithmicError(_OpLoss):
    """Mean squared logarithmic error over the last axis.

    ``mean((log1p(max(y_pred, 1e-7)) - log1p(max(y_true, 1e-7)))**2)``.

    Parameters
    ----------
    reduction : str or None, default "sum_over_batch_size"
        How per-sample values are reduced (one of ``fastgrad.losses.REDUCTIONS``).
    name : str or None, default None
        Name in logs (None: the Keras function name).
    dtype : None
        Accepted for Keras compatibility; fastgrad computes in the output's dtype.
    """

    _op, _code = "mean_squared_logarithmic_error", "msle"


class Huber(_OpLoss):
    """Huber loss: quadratic for small errors, linear for large ones.

    The mean over the last axis of ``0.5 * e**2`` where ``abs(e) <= delta``,
    else ``delta * abs(e) - 0.5 * delta**2``, with ``e = y_pred - y_true``.

    Parameters
    ----------
    delta : float, default 1.0
        Where the quadratic part ends (finite, > 0).
    reduction : str or None, default "sum_over_batch_size"
        How per-sample values are reduced (one of ``fastgrad.losses.REDUCTIONS``).
    name : str or None, default "huber_loss"
        Name in logs.
    dtype : None
        Accepted for Keras compatibility; fastgrad computes in the output's dtype.

    Raises
    ------
    ValueError
        If `delta` is not a finite positive number.
    """
    _op, _code = "huber", "huber"

    def __init__(self, delta: float = 1.0, reduction: str | None = "sum_over_batch_size",
                 name: str = "huber_loss", dtype: Any = None) -> None:
        super().__init__(reduction=reduction, name=name)
        try:
            d = float(delta)
        except (TypeError, ValueError):
            raise TypeError(f"Huber: delta must be a number, got {delta!r}") from None
        if not d > 0 or d != d or d == float("inf"):
            raise ValueError(f"Huber: delta must be a finite number > 0, got {delta!r}")
        self.delta = d

    def _params(self):
        return {"delta": self.delta}

    def lower(self, ctx, on_logits):
        return (super().lower(ctx, on_logits), self.delta)

    def get_config(self):
        return {**super().get_config(), "delta": self.delta}


class LogCosh(_OpLoss):
    """Log-cosh loss, ``mean(log(cosh(y_pred - y_true)))`` over the last axis.

    Parameters
    ----------
    reduction : str or None, default "sum_over_batch_size"
        How per-sample values are reduced (one of ``fastgrad.losses.REDUCTIONS``).
    name : str or None, default None
        Name in logs (None: the Keras function name).
    dtype : None
        Accepted for Keras compatibility; fastgrad computes in the output's dtype.
    """

    _op, _code = "log_cosh", "log_cosh"



class KLDivergence(_OpLoss):
    """Kullback-Leibler divergence, ``sum(t * log(t / p))`` over the last axis.

    `t` and `p` are clipped to ``[1e-7, 1]`` first.

    Parameters
    ----------
    reduction : str or None, default "sum_over_batch_size"
        How per-sample values are reduced (one of ``fastgrad.losses.REDUCTIONS``).
    name : str or None, default None
        Name in logs (None: the Keras function name).
    dtype : None
        Accepted for Keras compatibility; fastgrad computes in the output's dtype.
    """

    _op, _code = "kl_divergence", "kld"



class Poisson(_OpLoss):
    """Poisson loss, ``mean(y_pred - y_true * log(y_pred + 1e-7))`` over the last axis.

    Parameters
    ----------
    reduction : str or None, default "sum_over_batch_size"
        How per-sample values are reduced (one of ``fastgrad.losses.REDUCTIONS``).
    name : str or None, default None
        Name in logs (None: the Keras function name).
    dtype : None
        Accepted for Keras compatibility; fastgrad computes in the output's dtype.
    """

    _op, _code = "poisson", "poisson"



class Hinge(_OpLoss):
    """Hinge loss, ``mean(max(1 - y_true * y_pred, 0))`` over the last axis.

    Labels that are all in {0, 1} (over the batch) are first mapped to -1 / 1, as Keras does.

    Parameters
    ----------
    reduction : str or None, default "sum_over_batch_size"
        How per-sample values are reduced (one of ``fastgrad.losses.REDUCTIONS``).
    name : str or None, default None
        Name in logs (None: the Keras function name).
    dtype : None
        Accepted for Keras compatibility; fastgrad computes in the output's dtype.
    """

    _op, _code = "hinge", "hinge"



class SquaredHinge(_OpLoss):
    """Squared hinge loss, ``mean(max(1 - y_true * y_pred, 0)**2)`` over the last axis.

    Labels that are all in {0, 1} are first mapped to -1 / 1.

    Parameters
    ----------
    reduction : str or None, default "sum_over_batch_size"
        How per-sample values are reduced (one of ``fastgrad.losses.REDUCTIONS``).
    name : str or None, default None
        Name in logs (None: the Keras function name).
    dtype : None
        Accepted for Keras compatibility; fastgrad computes in the output's dtype.
    """

    _op, _code = "squared_hinge", "squared_hinge"



class CategoricalHinge(_OpLoss):
    """Categorical hinge loss over the last axis.

    ``max(max((1 - y_true) * y_pred) - sum(y_true * y_pred) + 1, 0)``.

    Parameters
    ----------
    reduction : str or None, default "sum_over_batch_size"
        How per-sample values are reduced (one of ``fastgrad.losses.REDUCTIONS``).
    name : str or None, default None
        Name in logs (None: the Keras function name).
    dtype : None
        Accepted for Keras compatibility; fastgrad computes in the output's dtype.
    """

    _op, _code = "categorical_hinge", "categorical_hinge"



class CosineSimilarity(_OpLoss):
    """Negative cosine similarity, ``-sum(l2_normalize(y_true) * l2_normalize(y_pred))``.

    As in Keras, the normalisation's inverse norm is capped at ``1 / 1e-7``.

    Parameters
    ----------
    axis : int, default -1
        The axis along which the similarity is taken; only -1 (the last axis).
    reduction : str or None, default "sum_over_batch_size"
        How per-sample values are reduced (one of ``fastgrad.losses.REDUCTIONS``).
    name : str or None, default "cosine_similarity"
        Name in logs.
    dtype : None
        Accepted for Keras compatibility; fastgrad computes in the output's dtype.

    Raises
    ------
    ValueError
        If `axis` is not -1.
    """
    _op, _code = "cosine_similarity", "cosine_similarity"

    def __init__(self, axis: int = -1, reduction: str | None = "sum_over_batch_size",
                 name: str = "cosine_similarity", dtype: Any = None) -> None:
        super().__init__(reduction=reduction, name=name)
        if axis != -1:
            raise ValueError(f"CosineSimilarity: only axis=-1 (the last axis) is supported, got {axis!r}")
        self.axis = -1

    def get_config(self):
        return {**super().get_config(), "axis": self.axis}


CLASSES = {c.__name__: c for c in (MeanAbsoluteError, MeanAbsolutePercentageError,
                                   MeanSquaredLogarithmicError, Huber, LogCosh, KLDivergence, Poisson,
                                   Hinge, SquaredHinge, CategoricalHinge, CosineSimilarity)}
NAMES = {"mae": MeanAbsoluteError, "mean_absolute_error": MeanAbsoluteError,
         "meanabsoluteerror": MeanAbsoluteError,
         "mape": MeanAbsolutePercentageError, "mean_absolute_percentage_error": MeanAbsolutePercentageError,
         "meanabsolutepercentageerror": MeanAbsolutePercentageError,
         "msle": MeanSquaredLogarithmicError, "mean_squared_logarithmic_error": MeanSquaredLogarithmicError,
         "meansquaredlogarithmicerror": MeanSquaredLogarithmicError,
         "huber": Huber, "huber_loss": Huber,
         "log_cosh": LogCosh, "logcosh": LogCosh,
         "kl_divergence": KLDivergence, "kld": KLDivergence, "kullback_leibler_divergence": KLDivergence,
         "kldivergence": KLDivergence,
         "poisson": Poisson, "hinge": Hinge, "squared_hinge": SquaredHinge, "squaredhinge": SquaredHinge,
         "categorical_hinge": CategoricalHinge, "categoricalhinge": CategoricalHinge,
         "cosine_similarity": CosineSimilarity, "cosinesimilarity": CosineSimilarity}
DEFAULT_NAMES = {"MeanAbsoluteError": "mean_absolute_error",
                 "MeanAbsolutePercentageError": "mean_absolute_percentage_error",
                 "MeanSquaredLogarithmicError": "mean_squared_logarithmic_error"}


def mean_absolute_error(y_true: ArrayLike, y_pred: ArrayLike) -> Any:
    """Mean absolute error per sample (Keras's function form of :class:`MeanAbsoluteError`).

    Parameters
    ----------
    y_true : array_like
        Targets, shaped like `y_pred`.
    y_pred : array_like
        Predictions, ``(batch, ...)``.

    Returns
    -------
    numpy.ndarray
        One float64 value per sample (the last axis reduced).
    """
    return MeanAbsoluteError(reduction=None)(y_true, y_pred)


def mean_absolute_percentage_error(y_true: ArrayLike, y_pred: ArrayLike) -> Any:
    """Mean absolute percentage error per sample (Keras's function form of :class:`MeanAbsolutePercentageError`).

    Parameters
    ----------
    y_true : array_like
        Targets, shaped like `y_pred`.
    y_pred : array_like
        Predictions, ``(batch, ...)``.

    Returns
    -------
    numpy.ndarray
        One float64 value per sample (the last axis reduced).
    """
    return MeanAbsolutePercentageError(reduction=None)(y_true, y_pred)


def mean_squared_logarithmic_error(y_true: ArrayLike, y_pred: ArrayLike) -> Any:
    """Mean squared logarithmic error per sample (Keras's function form of :class:`MeanSquaredLogarithmicError`).

    Parameters
    ----------
    y_true : array_like
        Targets, shaped like `y_pred`.
    y_pred : array_like
        Predictions, ``(batch, ...)``.

    Returns
    -------
    numpy.ndarray
        One float64 value per sample (the last axis reduced).
    """
    return MeanSquaredLogarithmicError(reduction=None)(y_true, y_pred)


def huber(y_true: ArrayLike, y_pred: ArrayLike, delta: float = 1.0) -> Any:
    """Huber loss per sample (Keras's function form of :class:`Huber`).

    Parameters
    ----------
    y_true : array_like
        Targets, shaped like `y_pred`.
    y_pred : array_like
        Predictions, ``(batch, ...)``.
    delta : float, default 1.0
        Where the quadratic part ends.

    Returns
    -------
    numpy.ndarray
        One float64 value per sample (the last axis reduced).
    """
    return Huber(delta=delta, reduction=None)(y_true, y_pred)


def log_cosh(y_true: ArrayLike, y_pred: ArrayLike) -> Any:
    """Log-cosh loss per sample (Keras's function form of :class:`LogCosh`).

    Parameters
    ----------
    y_true : array_like
        Targets, shaped like `y_pred`.
    y_pred : array_like
        Predictions, ``(batch, ...)``.

    Returns
    -------
    numpy.ndarray
        One float64 value per sample (the last axis reduced).
    """
    return LogCosh(reduction=None)(y_true, y_pred)


def kl_divergence(y_true: ArrayLike, y_pred: ArrayLike) -> Any:
    """Kullback-Leibler divergence per sample (Keras's function form of :class:`KLDivergence`).

    Parameters
    ----------
    y_true : array_like
        Targets, shaped like `y_pred`.
    y_pred : array_like
        Predictions, ``(batch, ...)``.

    Returns
    -------
    numpy.ndarray
        One float64 value per sample (the last axis reduced).
    """
    return KLDivergence(reduction=None)(y_true, y_pred)


def poisson(y_true: ArrayLike, y_pred: ArrayLike) -> Any:
    """Poisson loss per sample (Keras's function form of :class:`Poisson`).

    Parameters
    ----------
    y_true : array_like
        Targets, shaped like `y_pred`.
    y_pred : array_like
        Predictions, ``(batch, ...)``.

    Returns
    -------
    numpy.ndarray
        One float64 value per sample (the last axis reduced).
    """
    return Poisson(reduction=None)(y_true, y_pred)


def hinge(y_true: ArrayLike, y_pred: ArrayLike) -> Any:
    """Hinge loss per sample (Keras's function form of :class:`Hinge`).

    Parameters
    ----------
    y_true : array_like
        Targets, shaped like `y_pred`.
    y_pred : array_like
        Predictions, ``(batch, ...)``.

    Returns
    -------
    numpy.ndarray
        One float64 value per sample (the last axis reduced).
    """
    return Hinge(reduction=None)(y_true, y_pred)


def squared_hinge(y_true: ArrayLike, y_pred: ArrayLike) -> Any:
    """Squared hinge loss per sample (Keras's function form of :class:`SquaredHinge`).

    Parameters
    ----------
    y_true : array_like
        Targets, shaped like `y_pred`.
    y_pred : array_like
        Predictions, ``(batch, ...)``.

    Returns
    -------
    numpy.ndarray
        One float64 value per sample (the last axis reduced).
    """
    return SquaredHinge(reduction=None)(y_true, y_pred)


def categorical_hinge(y_true: ArrayLike, y_pred: ArrayLike) -> Any:
    """Categorical hinge loss per sample (Keras's function form of :class:`CategoricalHinge`).

    Parameters
    ----------
    y_true : array_like
        Targets, shaped like `y_pred`.
    y_pred : array_like
        Predictions, ``(batch, ...)``.

    Returns
    -------
    numpy.ndarray
        One float64 value per sample (the last axis reduced).
    """
    return CategoricalHinge(reduction=None)(y_true, y_pred)


def cosine_similarity(y_true: ArrayLike, y_pred: ArrayLike, axis: int = -1) -> Any:
    """Negative cosine similarity per sample (Keras's function form of :class:`CosineSimilarity`).

    Parameters
    ----------
    y_true : array_like
        Targets, shaped like `y_pred`.
    y_pred : array_like
        Predictions, ``(batch, ...)``.
    axis : int, default -1
        Only -1 (the last axis).

    Returns
    -------
    numpy.ndarray
        One float64 value per sample (the last axis reduced).
    """
    return CosineSimilarity(axis=axis, reduction=None)(y_true, y_pred)


mae, mape, msle, kld, logcosh = (mean_absolute_error, mean_absolute_percentage_error,
                                 mean_squared_logarithmic_error, kl_divergence, log_cosh)
