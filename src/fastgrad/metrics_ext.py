"""Metrics matching the further Keras losses (Keras 3 names): streaming
weighted means of the per-sample values of backend/numpy_lossopt.py's
`loss_values` (float64). Re-exported by fastgrad.metrics. Keras's
CosineSimilarity metric is the similarity itself (+sum of the normalised
products), the negative of the loss."""
from __future__ import annotations

from typing import Any

import numpy as np

from .metrics import Metric

__all__ = ["MeanAbsolutePercentageError", "MeanSquaredLogarithmicError", "LogCoshError",
           "KLDivergence", "Poisson", "Hinge", "SquaredHinge", "CategoricalHinge", "CosineSimilarity"]

_OPS = None


def _ops() -> Any:
    global _OPS
    if _OPS is None:
        from .backend.numpy_ops import NumpyOps
        _OPS = NumpyOps()
    return _OPS


class _LossMetric(Metric):
    _loss: str | None = None
    _sign = 1.0

    def _values(self, y_true: Any, y_pred: Any) -> np.ndarray:
        p = np.asarray(y_pred, dtype=np.float64)
        if p.ndim == 1:
            p = p.reshape(-1, 1)
        t = np.asarray(y_true, dtype=np.float64).reshape(p.shape)
        v = _ops().loss_values(self._loss, p, t)
        return self._sign * v.reshape(p.shape[0], -1).mean(axis=1)


class MeanAbsolutePercentageError(_LossMetric):
    """Running mean of the per-sample mean absolute percentage error.

    The per-sample values are those of the loss of the same name
    (``fastgrad.losses``).

    Parameters
    ----------
    name : str or None, default None
        Name in logs (None: "mean_absolute_percentage_error").
    dtype : None
        Accepted for Keras compatibility; results are float64.
    """

    _default_name, _loss = "mean_absolute_percentage_error", "mean_absolute_percentage_error"


class MeanSquaredLogarithmicError(_LossMetric):
    """Running mean of the per-sample mean squared logarithmic error.

    The per-sample values are those of the loss of the same name
    (``fastgrad.losses``).

    Parameters
    ----------
    name : str or None, default None
        Name in logs (None: "mean_squared_logarithmic_error").
    dtype : None
        Accepted for Keras compatibility; results are float64.
    """

    _default_name, _loss = "mean_squared_logarithmic_error", "mean_squared_logarithmic_error"


class LogCoshError(_LossMetric):
    """Running mean of the per-sample log-cosh error.

    The per-sample values are those of the loss of the same name
    (``fastgrad.losses``).

    Parameters
    ----------
    name : str or None, default None
        Name in logs (None: "logcosh").
    dtype : None
        Accepted for Keras compatibility; results are float64.
    """

    _default_name, _loss = "logcosh", "log_cosh"


class KLDivergence(_LossMetric):
    """Running mean of the per-sample Kullback-Leibler divergence.

    The per-sample values are those of the loss of the same name
    (``fastgrad.losses``).

    Parameters
    ----------
    name : str or None, default None
        Name in logs (None: "kl_divergence").
    dtype : None
        Accepted for Keras compatibility; results are float64.
    """

    _default_name, _loss = "kl_divergence", "kl_divergence"


class Poisson(_LossMetric):
    """Running mean of the per-sample Poisson loss.

    The per-sample values are those of the loss of the same name
    (``fastgrad.losses``).

    Parameters
    ----------
    name : str or None, default None
        Name in logs (None: "poisson").
    dtype : None
        Accepted for Keras compatibility; results are float64.
    """

    _default_name, _loss = "poisson", "poisson"


class Hinge(_LossMetric):
    """Running mean of the per-sample hinge loss.

    The per-sample values are those of the loss of the same name
    (``fastgrad.losses``).

    Parameters
    ----------
    name : str or None, default None
        Name in logs (None: "hinge").
    dtype : None
        Accepted for Keras compatibility; results are float64.
    """

    _default_name, _loss = "hinge", "hinge"


class SquaredHinge(_LossMetric):
    """Running mean of the per-sample squared hinge loss.

    The per-sample values are those of the loss of the same name
    (``fastgrad.losses``).

    Parameters
    ----------
    name : str or None, default None
        Name in logs (None: "squared_hinge").
    dtype : None
        Accepted for Keras compatibility; results are float64.
    """

    _default_name, _loss = "squared_hinge", "squared_hinge"


class CategoricalHinge(_LossMetric):
    """Running mean of the per-sample categorical hinge loss.

    The per-sample values are those of the loss of the same name
    (``fastgrad.losses``).

    Parameters
    ----------
    name : str or None, default None
        Name in logs (None: "categorical_hinge").
    dtype : None
        Accepted for Keras compatibility; results are float64.
    """

    _default_name, _loss = "categorical_hinge", "categorical_hinge"


class CosineSimilarity(_LossMetric):
    """Running mean of the per-sample cosine similarity (higher is better).

    Parameters
    ----------
    name : str or None, default None
        Name in logs (None: "cosine_similarity").
    dtype : None
        Accepted for Keras compatibility; results are float64.
    axis : int, default -1
        Only -1 (the last axis).

    Raises
    ------
    ValueError
        If `axis` is not -1.
    """

    _default_name, _loss, _sign = "cosine_similarity", "cosine_similarity", -1.0

    def __init__(self, name: str | None = None, dtype: Any = None, axis: int = -1) -> None:
        if axis != -1:
            raise ValueError(f"CosineSimilarity: only axis=-1 (the last axis) is supported, got {axis!r}")
        self.axis = -1
        super().__init__(name=name, dtype=dtype)


CLASSES = {c.__name__: c for c in (MeanAbsolutePercentageError, MeanSquaredLogarithmicError,
                                   LogCoshError, KLDivergence, Poisson, Hinge, SquaredHinge,
                                   CategoricalHinge, CosineSimilarity)}
NAMES = {"mape": MeanAbsolutePercentageError,
         "mean_absolute_percentage_error": MeanAbsolutePercentageError,
         "msle": MeanSquaredLogarithmicError,
         "mean_squared_logarithmic_error": MeanSquaredLogarithmicError,
         "logcosh": LogCoshError, "log_cosh": LogCoshError, "logcosh_error": LogCoshError,
         "kl_divergence": KLDivergence, "kld": KLDivergence, "poisson": Poisson, "hinge": Hinge,
         "squared_hinge": SquaredHinge, "categorical_hinge": CategoricalHinge,
         "cosine_similarity": CosineSimilarity}
