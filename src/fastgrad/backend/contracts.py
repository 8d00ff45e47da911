"""Argument contracts the two backends share.

NativeOps takes the C path only for float32 C-contiguous arrays and falls
back to NumpyOps otherwise, so the backends can disagree only where the C
path runs: there the Cython bindings check their arguments, and NumpyOps
must refuse the same calls with the same exception types. The checks that
are not about memory layout live here, once, and both backends call them
before anything else (tests/test_backend_agreement.py draws calls of every
op and compares outcomes)."""
from __future__ import annotations

import math
import numbers

import numpy as np

#: the largest optimizer step count accepted (the C kernels take an int64;
#: beta ** step is 0 long before)
MAX_STEP = 2**62


def _real(op, name, v):
    if isinstance(v, bool) or not isinstance(v, (numbers.Real, np.floating, np.integer)):
        raise TypeError(f"{op}: {name} must be a real number, got {v!r}")
    return float(v)


def finite(op, name, v, lo=None, hi=None, lo_open=False, hi_open=False):
    """A finite real in [lo, hi] (open ends where asked); ValueError naming it."""
    f = _real(op, name, v)
    bad = not math.isfinite(f)
    if lo is not None and (f < lo or (lo_open and f == lo)):
        bad = True
    if hi is not None and (f > hi or (hi_open and f == hi)):
        bad = True
    if bad:
        rng = ("" if lo is None and hi is None else
               f" in {'(' if lo_open else '['}{lo if lo is not None else '-inf'}, "
               f"{hi if hi is not None else 'inf'}{')' if hi_open else ']'}")
        raise ValueError(f"{op}: {name} must be a finite number{rng}, got {v!r}")
    return f


def step_count(op, step):
    """An integer optimizer step in [1, MAX_STEP] (bool and floats refused)."""
    if isinstance(step, bool) or not isinstance(step, (numbers.Integral, np.integer)):
        raise TypeError(f"{op}: step must be an integer, got {step!r}")
    if not 1 <= int(step) <= MAX_STEP:
        raise ValueError(f"{op}: step must be in [1, 2**62], got {step}")
    return int(step)


def update_arrays(op, param, grad, **states):
    """param / grad / optimizer states: float arrays of one dtype and shape,
    writeable where written, no two sharing memory."""
    if not isinstance(param, np.ndarray) or param.dtype.kind != "f":
        raise TypeError(f"{op}: param must be a float numpy array, got "
                        f"{getattr(param, 'dtype', type(param).__name__)}")
    if not isinstance(grad, np.ndarray) or grad.dtype != param.dtype:
        raise TypeError(f"{op}: grad must be a numpy array of param's dtype {param.dtype}, got "
                        f"{getattr(grad, 'dtype', type(grad).__name__)}")
    if grad.shape != param.shape:
        raise ValueError(f"{op}: grad {grad.shape} and param {param.shape} must have the same shape")
    if not param.flags.writeable:
        raise ValueError(f"{op}: param is read-only")
    named = [("param", param), ("grad", grad)]
    for name, s in states.items():
        if s is None:
            continue
        if not isinstance(s, np.ndarray) or s.dtype != param.dtype:
            raise TypeError(f"{op}: {name} must be a numpy array of param's dtype {param.dtype}, "
                            f"got {getattr(s, 'dtype', type(s).__name__)}")
        if s.shape != param.shape:
            raise ValueError(f"{op}: {name} {s.shape} and param {param.shape} must have the same "
                             "shape")
        if not s.flags.writeable:
            raise ValueError(f"{op}: {name} is read-only")
        named.append((name, s))
    if param.size:
        for i in range(len(named)):
            for j in range(i):
                if np.may_share_memory(named[i][1], named[j][1]):
                    raise ValueError(f"{op}: {named[i][0]} {named[i][1].shape} overlaps "
                                     f"{named[j][0]} {named[j][1].shape}")


def decay(op, lr, weight_decay):
    finite(op, "lr", lr)
    finite(op, "weight_decay", weight_decay, lo=0.0)
