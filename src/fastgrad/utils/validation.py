"""Argument checks shared by the public constructors (optimizers, schedules):
one wording for every "bad hyper-parameter" error."""
from __future__ import annotations

from typing import Any

import math
import numbers


def check_number(owner: str, name: str, value: Any, *, lo: float | None = None, lo_open: bool = False,
                 hi: float | None = None, hi_open: bool = False, allow_none: bool = False) -> Any:
    """Validate a real, finite hyper-parameter of `owner` and return it as a
    float (None passes through when allow_none). Bounds are inclusive unless
    lo_open/hi_open. Raises TypeError for non-numbers, ValueError otherwise."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{owner}: {name} must be a real number, got {value!r} "
                        f"({type(value).__name__})")
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{owner}: {name} must be finite, got {value!r}")
    if lo is not None and (v <= lo if lo_open else v < lo):
        raise ValueError(f"{owner}: {name} must be {'>' if lo_open else '>='} {lo}, got {value!r}")
    if hi is not None and (v >= hi if hi_open else v > hi):
        raise ValueError(f"{owner}: {name} must be {'<' if hi_open else '<='} {hi}, got {value!r}")
    return v
