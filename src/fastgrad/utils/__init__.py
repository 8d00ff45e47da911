"""fastgrad.utils — small helpers around training: the progress bar, label
encoding, seeding, drawing a model's graph (Keras names)."""
from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, DTypeLike

from .progbar import Progbar, format_duration, format_value
from .plot import model_to_dot, plot_model
from ..engine.adapters import PyDataset

Sequence = PyDataset        # the Keras 2 name

__all__ = ["Progbar", "to_categorical", "set_random_seed", "format_duration", "format_value",
           "plot_model", "model_to_dot", "PyDataset", "Sequence"]


def to_categorical(y: ArrayLike, num_classes: int | None = None, dtype: DTypeLike = "float32") -> np.ndarray:
    """One-hot encode integer labels (Keras's ``to_categorical``).

    Parameters
    ----------
    y : array_like
        Integer class ids (floats with integer values are accepted); a
        trailing axis of size 1 is dropped first, as in Keras.
    num_classes : int or None, default None
        Number of classes (None: ``max(y) + 1``).
    dtype : dtype, default "float32"
        Result dtype.

    Returns
    -------
    numpy.ndarray
        Shape ``y.shape + (num_classes,)``.

    Raises
    ------
    TypeError
        If the labels are not integers.
    ValueError
        If a label is negative or not below `num_classes`.

    Examples
    --------
    >>> import fastgrad as fg
    >>> fg.utils.to_categorical([0, 2], num_classes=3).tolist()
    [[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]
    """
    y = np.asarray(y)
    if y.dtype.kind not in "iub":
        if y.dtype.kind == "f" and y.size and np.all(np.isfinite(y)) and np.all(y == np.round(y)):
            y = y.astype(np.int64)
        else:
            raise TypeError(f"to_categorical: labels must be integers, got dtype {y.dtype}")
    if y.ndim > 1 and y.shape[-1] == 1:
        y = y.reshape(y.shape[:-1])
    flat = y.reshape(-1).astype(np.int64)
    if flat.size and flat.min() < 0:
        raise ValueError(f"to_categorical: labels must be >= 0, got min {flat.min()}")
    if num_classes is None:
        num_classes = int(flat.max()) + 1 if flat.size else 0
    elif flat.size and flat.max() >= num_classes:
        raise ValueError(f"to_categorical: label {flat.max()} is out of range for num_classes={num_classes}")
    out = np.zeros((flat.size, int(num_classes)), dtype=dtype)
    out[np.arange(flat.size), flat] = 1
    return out.reshape(y.shape + (int(num_classes),))


def set_random_seed(seed: int) -> None:
    """Seed fastgrad's generator (Keras's name for ``fastgrad.set_seed``).

    Parameters
    ----------
    seed : int
        A non-negative integer.
    """
    from .. import _config
    _config.set_seed(seed)
