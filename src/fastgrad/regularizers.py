"""Weight regularizers (Keras semantics): L1, L2, L1L2.

The penalty (l1 sum|w| + l2 sum w^2) is added to the reported loss, and its
gradient is added into the parameter's gradient view before the optimizer
step.  `add_gradient` works in place with a caller-provided scratch array so
a training step allocates nothing.
"""
from __future__ import annotations

import math

from typing import Any

import numpy as np
from numpy.typing import ArrayLike

__all__ = ["Regularizer", "L1", "L2", "L1L2", "get", "serialize", "deserialize"]


def _check(v: float, what: str) -> float:
    v = float(v)
    if not (math.isfinite(v) and v >= 0):
        raise ValueError(f"{what} must be a finite non-negative number, got {v}")
    return v


class Regularizer:
    """Weight penalty ``l1 * sum(abs(w)) + l2 * sum(w**2)``.

    Parameters
    ----------
    l1 : float, default 0.0
        Factor of the L1 term (finite, >= 0).
    l2 : float, default 0.0
        Factor of the L2 term (finite, >= 0).

    Raises
    ------
    ValueError
        If a factor is negative or not finite.

    Examples
    --------
    >>> import fastgrad as fg
    >>> fg.regularizers.L1L2(l1=0.5, l2=0.25)([1.0, -2.0])
    2.75
    """

    def __init__(self, l1: float = 0.0, l2: float = 0.0) -> None:
        self.l1 = _check(l1, f"{type(self).__name__}: l1")
        self.l2 = _check(l2, f"{type(self).__name__}: l2")

    def __call__(self, w: ArrayLike) -> float:
        """The penalty of a weight array, accumulated in float64.

        Parameters
        ----------
        w : array_like
            The weights.

        Returns
        -------
        float
            The penalty.
        """
        w = np.asarray(w)
        total = 0.0
        if self.l1:
            total += self.l1 * float(np.abs(w).sum(dtype=np.float64))
        if self.l2:
            total += self.l2 * float(np.square(w, dtype=np.float64).sum())
        return total

    def penalty(self, ops: Any, w: np.ndarray, scratch: np.ndarray) -> float:
        """The penalty of `w`, computed without temporaries (a training step's path).

        Parameters
        ----------
        ops : Ops
            The backend whose ``global_norm`` computes the L2 term.
        w : numpy.ndarray
            The weights.
        scratch : numpy.ndarray
            Work array of the shape and dtype of `w`; overwritten.

        Returns
        -------
        float
            The same value as calling the regularizer on `w`.
        """
        total = 0.0
        if self.l2:
            n = ops.global_norm(w)
            total += self.l2 * n * n
        if self.l1:
            np.abs(w, out=scratch)
            total += self.l1 * float(scratch.sum(dtype=np.float64))
        return total

    def add_gradient(self, w: np.ndarray, g: np.ndarray, scratch: np.ndarray) -> None:
        """Add the penalty's gradient with respect to `w` into `g`, in place.

        Parameters
        ----------
        w : numpy.ndarray
            The weights.
        g : numpy.ndarray
            Gradient of `w`, updated in place.
        scratch : numpy.ndarray
            Work array of the shape and dtype of `w`; overwritten.
        """
        if self.l2:
            np.multiply(w, np.float32(2.0 * self.l2), out=scratch)
            g += scratch
        if self.l1:
            np.sign(w, out=scratch)
            scratch *= np.float32(self.l1)
            g += scratch

    def get_config(self) -> dict:
        """The constructor arguments as a dict (Keras config).

        Returns
        -------
        dict
            Keyword arguments that rebuild this regularizer.
        """
        return {"l1": self.l1, "l2": self.l2}

    @classmethod
    def from_config(cls, config: dict) -> Regularizer:
        """Build a regularizer from :meth:`get_config`'s output.

        Parameters
        ----------
        config : dict
            Constructor keyword arguments.

        Returns
        -------
        Regularizer
            The new regularizer.
        """
        return cls(**config)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.get_config()})"


class L1(Regularizer):
    """L1 weight penalty ``l1 * sum(abs(w))``.

    Parameters
    ----------
    l1 : float, default 0.01
        Factor of the penalty (finite, >= 0).
    """

    def __init__(self, l1: float = 0.01) -> None:
        super().__init__(l1=l1)

    def get_config(self) -> dict:
        return {"l1": self.l1}


class L2(Regularizer):
    """L2 weight penalty ``l2 * sum(w**2)``.

    Parameters
    ----------
    l2 : float, default 0.01
        Factor of the penalty (finite, >= 0).
    """

    def __init__(self, l2: float = 0.01) -> None:
        super().__init__(l2=l2)

    def get_config(self) -> dict:
        return {"l2": self.l2}


class L1L2(Regularizer):
    """Sum of an L1 and an L2 weight penalty.

    Parameters
    ----------
    l1 : float, default 0.0
        Factor of the L1 term (finite, >= 0).
    l2 : float, default 0.0
        Factor of the L2 term (finite, >= 0).
    """

    def __init__(self, l1: float = 0.0, l2: float = 0.0) -> None:
        super().__init__(l1=l1, l2=l2)


_CLASSES: dict[str, type[Regularizer]] = {"Regularizer": Regularizer, "L1": L1, "L2": L2, "L1L2": L1L2}
_NAMES: dict[str, type[Regularizer]] = {"l1": L1, "l2": L2, "l1_l2": L1L2, "l1l2": L1L2}


def get(identifier: str | dict | Regularizer | None, where: str = "regularizer") -> Regularizer | None:
    """The regularizer a user passes as ``kernel_regularizer=`` and the like.

    Parameters
    ----------
    identifier : str, dict, Regularizer or None
        A name ("l1", "l2", "l1_l2" or a class name), a serialized config, a
        regularizer (returned as is) or None.
    where : str, default "regularizer"
        What to name in an error message.

    Returns
    -------
    Regularizer or None
        The regularizer (None for None).

    Raises
    ------
    ValueError
        If the name is unknown.
    TypeError
        If `identifier` has another type.
    """
    if identifier is None or isinstance(identifier, Regularizer):
        return identifier
    if isinstance(identifier, str):
        cls = _NAMES.get(identifier.strip().lower()) or _CLASSES.get(identifier)
        if cls is None:
            raise ValueError(f"{where}: unknown regularizer {identifier!r}; expected one of "
                             f"{', '.join(sorted(_NAMES))}")
        return cls()
    if isinstance(identifier, dict):
        return deserialize(identifier)
    raise TypeError(f"{where}: expected a regularizer name or object, got {identifier!r}")


def serialize(reg: Regularizer | None) -> dict | None:
    """A regularizer as a Keras-style ``{"class_name", "config"}`` dict.

    Parameters
    ----------
    reg : Regularizer or None
        The regularizer.

    Returns
    -------
    dict or None
        Its serialized form (None for None).
    """
    if reg is None:
        return None
    return {"class_name": type(reg).__name__, "config": reg.get_config()}


def deserialize(d: dict | None) -> Regularizer | None:
    """Rebuild a regularizer from :func:`serialize`'s output.

    Parameters
    ----------
    d : dict or None
        A ``{"class_name", "config"}`` dict.

    Returns
    -------
    Regularizer or None
        The regularizer (None for None).

    Raises
    ------
    ValueError
        If the class name is unknown.
    """
    if d is None:
        return None
    cls = _CLASSES.get(str(d.get("class_name")))
    if cls is None:
        raise ValueError(f"unknown regularizer class {d.get('class_name')!r}")
    return cls.from_config(d.get("config", {}))
