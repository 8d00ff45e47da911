"""Weight regularizers (Keras semantics): L1, L2, L1L2.

The penalty (l1 sum|w| + l2 sum w^2) is added to the reported loss, and its
gradient is added into the parameter's gradient view before the optimizer
step.  `add_gradient` works in place with a caller-provided scratch array so
a training step allocates nothing.
"""
from __future__ import annotations

import math

import numpy as np

__all__ = ["Regularizer", "L1", "L2", "L1L2", "get", "serialize", "deserialize"]


def _check(v, what):
    v = float(v)
    if not (math.isfinite(v) and v >= 0):
        raise ValueError(f"{what} must be a finite non-negative number, got {v}")
    return v


class Regularizer:
    """penalty = l1 * sum(|w|) + l2 * sum(w^2)."""

    def __init__(self, l1=0.0, l2=0.0):
        self.l1 = _check(l1, f"{type(self).__name__}: l1")
        self.l2 = _check(l2, f"{type(self).__name__}: l2")

    def __call__(self, w) -> float:
        w = np.asarray(w)
        total = 0.0
        if self.l1:
            total += self.l1 * float(np.abs(w).sum(dtype=np.float64))
        if self.l2:
            total += self.l2 * float(np.square(w, dtype=np.float64).sum())
        return total

    def penalty(self, ops, w, scratch) -> float:
        """Same value as __call__, using `scratch` (same shape) instead of temporaries."""
        total = 0.0
        if self.l2:
            n = ops.global_norm(w)
            total += self.l2 * n * n
        if self.l1:
            np.abs(w, out=scratch)
            total += self.l1 * float(scratch.sum(dtype=np.float64))
        return total

    def add_gradient(self, w, g, scratch) -> None:
        """g += d penalty / d w, in place (scratch: same shape as w)."""
        if self.l2:
            np.multiply(w, np.float32(2.0 * self.l2), out=scratch)
            g += scratch
        if self.l1:
            np.sign(w, out=scratch)
            scratch *= np.float32(self.l1)
            g += scratch

    def get_config(self) -> dict:
        return {"l1": self.l1, "l2": self.l2}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        return f"{type(self).__name__}({self.get_config()})"


class L1(Regularizer):
    def __init__(self, l1=0.01):
        super().__init__(l1=l1)

    def get_config(self):
        return {"l1": self.l1}


class L2(Regularizer):
    def __init__(self, l2=0.01):
        super().__init__(l2=l2)

    def get_config(self):
        return {"l2": self.l2}


class L1L2(Regularizer):
    def __init__(self, l1=0.0, l2=0.0):
        super().__init__(l1=l1, l2=l2)


_CLASSES = {"Regularizer": Regularizer, "L1": L1, "L2": L2, "L1L2": L1L2}
_NAMES = {"l1": L1, "l2": L2, "l1_l2": L1L2, "l1l2": L1L2}


def get(identifier, where: str = "regularizer"):
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


def serialize(reg):
    if reg is None:
        return None
    return {"class_name": type(reg).__name__, "config": reg.get_config()}


def deserialize(d):
    if d is None:
        return None
    cls = _CLASSES.get(d.get("class_name"))
    if cls is None:
        raise ValueError(f"unknown regularizer class {d.get('class_name')!r}")
    return cls.from_config(d.get("config", {}))
