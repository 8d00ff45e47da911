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

    def __init__(self, reduction="sum_over_batch_size", name=None, dtype=None):
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
    """mean(|y_pred - y_true|) over the last axis."""
    _op, _code = "mean_absolute_error", "mae"


class MeanAbsolutePercentageError(_OpLoss):
    """100 * mean(|(y_true - y_pred) / max(|y_true|, 1e-7)|) over the last axis."""
    _op, _code = "mean_absolute_percentage_error", "mape"


class MeanSquaredLogarithmicError(_OpLoss):
    """mean((log(max(y_pred, 1e-7) + 1) - log(max(y_true, 1e-7) + 1))^2) over the last axis."""
    _op, _code = "mean_squared_logarithmic_error", "msle"


class Huber(_OpLoss):
    """mean over the last axis of 0.5 e^2 where |e| <= delta, else delta |e| - 0.5 delta^2
    (e = y_pred - y_true; Keras default delta=1.0)."""
    _op, _code = "huber", "huber"

    def __init__(self, delta=1.0, reduction="sum_over_batch_size", name="huber_loss", dtype=None):
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
    """mean(log(cosh(y_pred - y_true))) over the last axis."""
    _op, _code = "log_cosh", "log_cosh"



class KLDivergence(_OpLoss):
    """sum(t log(t / p)) over the last axis, t and p clipped to [1e-7, 1]."""
    _op, _code = "kl_divergence", "kld"



class Poisson(_OpLoss):
    """mean(y_pred - y_true log(y_pred + 1e-7)) over the last axis."""
    _op, _code = "poisson", "poisson"



class Hinge(_OpLoss):
    """mean(max(1 - y_true y_pred, 0)) over the last axis; y_true all in {0, 1} (over the
    batch) is first mapped to -1 / 1, as Keras does."""
    _op, _code = "hinge", "hinge"



class SquaredHinge(_OpLoss):
    """mean(max(1 - y_true y_pred, 0)^2) over the last axis ({0, 1} labels mapped to -1 / 1)."""
    _op, _code = "squared_hinge", "squared_hinge"



class CategoricalHinge(_OpLoss):
    """max(max((1 - y_true) y_pred) - sum(y_true y_pred) + 1, 0) over the last axis."""
    _op, _code = "categorical_hinge", "categorical_hinge"



class CosineSimilarity(_OpLoss):
    """-sum(l2_normalize(y_true) * l2_normalize(y_pred)) along `axis` (Keras: the
    normalisation's inverse norm is capped at 1 / 1e-7). Only axis=-1 (the last axis)."""
    _op, _code = "cosine_similarity", "cosine_similarity"

    def __init__(self, axis=-1, reduction="sum_over_batch_size", name="cosine_similarity", dtype=None):
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


def mean_absolute_error(y_true, y_pred):
    """Per-sample values (Keras's function form): mean |y_pred - y_true| over the last axis."""
    return MeanAbsoluteError(reduction=None)(y_true, y_pred)


def mean_absolute_percentage_error(y_true, y_pred):
    return MeanAbsolutePercentageError(reduction=None)(y_true, y_pred)


def mean_squared_logarithmic_error(y_true, y_pred):
    return MeanSquaredLogarithmicError(reduction=None)(y_true, y_pred)


def huber(y_true, y_pred, delta=1.0):
    return Huber(delta=delta, reduction=None)(y_true, y_pred)


def log_cosh(y_true, y_pred):
    return LogCosh(reduction=None)(y_true, y_pred)


def kl_divergence(y_true, y_pred):
    return KLDivergence(reduction=None)(y_true, y_pred)


def poisson(y_true, y_pred):
    return Poisson(reduction=None)(y_true, y_pred)


def hinge(y_true, y_pred):
    return Hinge(reduction=None)(y_true, y_pred)


def squared_hinge(y_true, y_pred):
    return SquaredHinge(reduction=None)(y_true, y_pred)


def categorical_hinge(y_true, y_pred):
    return CategoricalHinge(reduction=None)(y_true, y_pred)


def cosine_similarity(y_true, y_pred, axis=-1):
    return CosineSimilarity(axis=axis, reduction=None)(y_true, y_pred)


mae, mape, msle, kld, logcosh = (mean_absolute_error, mean_absolute_percentage_error,
                                 mean_squared_logarithmic_error, kl_divergence, log_cosh)
